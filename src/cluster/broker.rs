//! A broker: one data directory (`broker-N/`) holding a directory per
//! partition (`<topic>-<partition>/`, as Kafka names them) and the broker's
//! checkpoint files.
//!
//! Each partition directory carries Kafka's `partition.metadata` file with
//! the topic id, so a directory left behind by a deleted topic is never
//! mistaken for a re-created topic of the same name. Deleting a topic
//! renames its directories to `<topic>-<partition>.<id>-delete` (as Kafka
//! does) before removing them; leftovers are removed on the next open.
//!
//! The broker owns the scheduler that runs every partition log's
//! background work (Kafka's broker scheduler, `background.threads`
//! threads named `logbus-log-N`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use parking_lot::Mutex;
use uuid::Uuid;

use crate::clock::Clock;
use crate::config::LogConfig;
use crate::error::{CorruptionKind, Error, Result};
use crate::log::{CheckpointRead, Log, LogScheduler, OffsetCheckpoint};
use crate::replica::{Replica, ReplicaOffsets};
use crate::storage::{OpenMode, Storage, write_atomic};

const RECOVERY_POINT: &str = "recovery-point-offset-checkpoint";
const LOG_START: &str = "log-start-offset-checkpoint";
const CLEANER: &str = "cleaner-offset-checkpoint";
const PARTITION_METADATA: &str = "partition.metadata";

/// Kafka's textual form of a topic id: URL-safe base64 without padding.
pub(crate) fn topic_id_string(id: Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.as_bytes())
}

fn parse_topic_id(text: &str) -> Option<Uuid> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim())
        .ok()?;
    Uuid::from_slice(&bytes).ok()
}

/// Checkpointed offsets by (topic, partition).
type Offsets = BTreeMap<(String, u32), u64>;

/// The offsets the broker's three checkpoint files hold.
#[derive(Debug, Default)]
struct Checkpoints {
    recovery: Offsets,
    log_start: Offsets,
    cleaner: Offsets,
}

impl Checkpoints {
    fn remove(&mut self, key: &(String, u32)) {
        self.recovery.remove(key);
        self.log_start.remove(key);
        self.cleaner.remove(key);
    }
}

/// One broker's data directory.
#[derive(Debug)]
pub(crate) struct Broker {
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    /// The last known recovery point, log start offset and (for compacted
    /// logs) cleaner checkpoint of each live partition, written to the
    /// checkpoint files.
    checkpoints: Mutex<Checkpoints>,
    /// Runs the partition logs' background work; stopped after they close.
    scheduler: LogScheduler,
}

impl Broker {
    /// Opens the broker directory (creating it), reads its checkpoints,
    /// removes leftovers of deleted topics (`*-delete` directories and
    /// partition directories `live` does not list with the same topic id)
    /// and starts the log scheduler's `background_threads` threads.
    pub(crate) fn open(
        dir: PathBuf,
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        live: &BTreeMap<(String, u32), Uuid>,
        background_threads: usize,
    ) -> Result<Broker> {
        storage.create_dir_all(&dir)?;
        let read = |name: &str, tolerate_damage: bool| -> Result<Offsets> {
            let file = OffsetCheckpoint::with_storage(dir.join(name), storage.clone());
            match file.read() {
                Ok(CheckpointRead::Present(entries)) => Ok(entries),
                Ok(CheckpointRead::Missing) => Ok(Offsets::new()),
                // A lost recovery point only costs a longer scan.
                Err(Error::Corrupt { .. }) if tolerate_damage => Ok(Offsets::new()),
                Err(e) => Err(e),
            }
        };
        let mut checkpoints = Checkpoints {
            recovery: read(RECOVERY_POINT, true)?,
            log_start: read(LOG_START, false)?,
            // A lost cleaner checkpoint only makes the next clean longer.
            cleaner: read(CLEANER, true)?,
        };
        for map in [
            &mut checkpoints.recovery,
            &mut checkpoints.log_start,
            &mut checkpoints.cleaner,
        ] {
            map.retain(|k, _| live.contains_key(k));
        }
        let scheduler = LogScheduler::start(background_threads, clock.clone())?;
        let broker = Broker {
            dir,
            storage,
            clock,
            checkpoints: Mutex::new(checkpoints),
            scheduler,
        };
        broker.remove_leftovers(live)?;
        broker.write_checkpoints()?;
        Ok(broker)
    }

    fn partition_dir(&self, topic: &str, partition: u32) -> PathBuf {
        self.dir.join(format!("{topic}-{partition}"))
    }

    /// Reads the topic id a partition directory belongs to.
    fn dir_topic_id(&self, dir: &Path) -> Result<Option<Uuid>> {
        let path = dir.join(PARTITION_METADATA);
        if !self.storage.exists(&path) {
            return Ok(None);
        }
        let file = self.storage.open(&path, OpenMode::Existing)?;
        let len = usize::try_from(file.len()?).unwrap_or(usize::MAX).min(4096);
        let mut bytes = vec![0; len];
        file.read_exact_at(&mut bytes, 0)?;
        let text = String::from_utf8_lossy(&bytes);
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("topic_id:"))
            .and_then(parse_topic_id);
        match id {
            Some(id) => Ok(Some(id)),
            None => Err(Error::corrupt(
                path,
                0,
                CorruptionKind::Metadata("partition.metadata has no valid topic_id".into()),
            )),
        }
    }

    fn remove_leftovers(&self, live: &BTreeMap<(String, u32), Uuid>) -> Result<()> {
        let wanted: HashMap<String, Uuid> = live
            .iter()
            .map(|((t, p), id)| (format!("{t}-{p}"), *id))
            .collect();
        for path in self.storage.list_dir(&self.dir)? {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.ends_with("-delete") {
                self.storage.remove_dir_all(&path)?;
                continue;
            }
            // Partition directories are `<topic>-<number>`; anything else
            // (checkpoint files and their temporary copies) is not ours here.
            let is_partition_dir = name
                .rsplit_once('-')
                .is_some_and(|(topic, n)| !topic.is_empty() && n.parse::<u32>().is_ok());
            if !is_partition_dir {
                continue;
            }
            let stale = match wanted.get(name) {
                None => true,
                // A directory without partition.metadata was left by a crash
                // before the file was written; it holds nothing acknowledged
                // for any other topic, so it is adopted.
                Some(expected) => self
                    .dir_topic_id(&path)?
                    .is_some_and(|found| found != *expected),
            };
            if stale {
                self.storage.remove_dir_all(&path)?;
            }
        }
        self.storage.sync_dir(&self.dir)
    }

    /// Opens (creating if needed) the log of one partition.
    pub(crate) fn open_partition(
        &self,
        topic: &Arc<str>,
        topic_id: Uuid,
        partition: u32,
        config: LogConfig,
    ) -> Result<Arc<Replica>> {
        let dir = self.partition_dir(topic, partition);
        let meta = dir.join(PARTITION_METADATA);
        if !self.storage.exists(&meta) {
            self.storage.create_dir_all(&dir)?;
            let text = format!("version: 0\ntopic_id: {}\n", topic_id_string(topic_id));
            write_atomic(&*self.storage, &meta, text.as_bytes())?;
            self.storage.sync_dir(&self.dir)?;
        }
        let key = (topic.to_string(), partition);
        let (recovery, log_start, cleaner) = {
            let checkpoints = self.checkpoints.lock();
            (
                checkpoints.recovery.get(&key).copied(),
                checkpoints.log_start.get(&key).copied(),
                checkpoints.cleaner.get(&key).copied(),
            )
        };
        let mut builder = Log::builder(&dir)
            .config(config)
            .storage(self.storage.clone())
            .clock(self.clock.clone())
            .scheduler(self.scheduler.handle());
        if let Some(point) = recovery {
            builder = builder.recovery_point(point);
        }
        if let Some(start) = log_start {
            builder = builder.log_start_offset(start);
        }
        if let Some(cleaned) = cleaner {
            builder = builder.cleaner_checkpoint(cleaned);
        }
        let log = builder.open()?;
        Ok(Arc::new(Replica::new(topic.clone(), partition, log)))
    }

    /// Removes a deleted topic's partition directory: rename, then remove.
    pub(crate) fn delete_partition(&self, topic: &str, partition: u32, id: Uuid) -> Result<()> {
        {
            let mut checkpoints = self.checkpoints.lock();
            checkpoints.remove(&(topic.to_string(), partition));
        }
        let dir = self.partition_dir(topic, partition);
        if !self.storage.exists(&dir) {
            return Ok(());
        }
        let doomed = self
            .dir
            .join(format!("{topic}-{partition}.{}-delete", id.simple()));
        self.storage.rename(&dir, &doomed)?;
        self.storage.sync_dir(&self.dir)?;
        self.storage.remove_dir_all(&doomed)
    }

    /// Stops and joins the log scheduler's threads; call it once every
    /// partition log is closed.
    pub(crate) fn stop_scheduler(&self) {
        self.scheduler.stop();
    }

    /// Records a partition's offsets for the next checkpoint write.
    pub(crate) fn note_offsets(&self, topic: &str, partition: u32, offsets: ReplicaOffsets) {
        let mut checkpoints = self.checkpoints.lock();
        let key = (topic.to_string(), partition);
        checkpoints
            .recovery
            .insert(key.clone(), offsets.recovery_point);
        checkpoints.log_start.insert(key.clone(), offsets.log_start);
        match offsets.cleaner_checkpoint {
            Some(cleaned) => checkpoints.cleaner.insert(key, cleaned),
            None => checkpoints.cleaner.remove(&key),
        };
    }

    /// Writes the checkpoint files from the noted offsets.
    pub(crate) fn write_checkpoints(&self) -> Result<()> {
        let checkpoints = self.checkpoints.lock();
        for (name, entries) in [
            (RECOVERY_POINT, &checkpoints.recovery),
            (LOG_START, &checkpoints.log_start),
            (CLEANER, &checkpoints.cleaner),
        ] {
            OffsetCheckpoint::with_storage(self.dir.join(name), self.storage.clone())
                .write(entries)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_ids_print_as_kafka_does() {
        let id = Uuid::from_u128(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff);
        let text = topic_id_string(id);
        assert_eq!(text.len(), 22);
        assert_eq!(parse_topic_id(&text), Some(id));
        assert_eq!(parse_topic_id("not base64!"), None);
    }
}
