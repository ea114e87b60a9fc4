//! A broker: one data directory (`broker-N/` under the cluster's root, or
//! a path of its own) holding a directory per partition it hosts a replica
//! of (`<topic>-<partition>/`, as Kafka names them), the broker's
//! checkpoint files and a `meta.properties` naming its cluster and its id
//! (as Kafka's log directories carry one), so a directory of another
//! broker or cluster is never taken for this one.
//!
//! Each partition directory carries Kafka's `partition.metadata` file with
//! the topic id. A directory is removed only on positive evidence: its name
//! ends in `-delete` (a deletion renamed it), or its topic id is one the
//! metadata log records as deleted. A directory nothing explains (an
//! unknown topic id, a topic or partition the registry does not have) is
//! kept, not opened, and reported; one that sits where a live partition
//! must go is an [`Error::PartitionDirConflict`], never adopted.
//!
//! Deleting a partition renames its directory to
//! `<topic>-<partition>.<id>-delete` (Kafka's `logDeleteDirName`, the topic
//! cut so the name fits in 255 bytes), fsyncs the broker directory, then
//! removes it; a leftover is removed on the next open.
//!
//! Every directory entry the registry or a checkpoint relies on is fsynced
//! before the operation that made it is acknowledged: the broker directory
//! in the root, each new partition directory in the broker directory (and
//! its first files in it), each rename to `-delete`.
//!
//! The broker owns the scheduler that runs every partition log's
//! background work (Kafka's broker scheduler, `background.threads`
//! threads named `logbus-log-N`).
//!
//! ## Locks
//! `checkpoints` is taken before a replica's log lock (a partition's
//! offsets are read and noted under it, so a note never lands after the
//! partition's deletion removed its entry) and held across the writes of
//! the checkpoint files. The recovery points have a lock of their own,
//! the innermost: a log's truncation lowers its entry and rewrites the
//! recovery point file from under the log's lock (see `RecoveryPoints`),
//! and nothing is taken under it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine;
use parking_lot::Mutex;
use uuid::Uuid;

use crate::clock::Clock;
use crate::cluster::metadata::Registry;
use crate::cluster::report::UnknownPartitionDir;
use crate::config::LogConfig;
use crate::error::{CorruptionKind, Error, Result};
use crate::log::REPLICATION_OFFSET_CHECKPOINT;
use crate::log::{CheckpointRead, Log, LogScheduler, OffsetCheckpoint, TruncationHook};
use crate::replica::{
    LeaderAndIsr, PartitionOffsets, ReplicaConfig, ReplicaFetcherManager, ReplicaManager,
    ReplicaRegistry, TopicIdPartition,
};
use crate::storage::{DiskSwitch, FailableStorage, OpenMode, Storage, write_atomic};

const RECOVERY_POINT: &str = "recovery-point-offset-checkpoint";
const LOG_START: &str = "log-start-offset-checkpoint";
const CLEANER: &str = "cleaner-offset-checkpoint";
/// The broker's checkpoint files.
pub(crate) const CHECKPOINT_FILES: [&str; 4] = [
    RECOVERY_POINT,
    LOG_START,
    CLEANER,
    REPLICATION_OFFSET_CHECKPOINT,
];
const PARTITION_METADATA: &str = "partition.metadata";
/// A broker directory's identity file.
const META_PROPERTIES: &str = "meta.properties";
/// Suffix of a directory awaiting removal (Kafka's `DeleteDirSuffix`).
const DELETE_SUFFIX: &str = "-delete";
/// The longest file name most file systems take.
const MAX_FILE_NAME: usize = 255;

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

/// The name a partition directory is renamed to before it is removed:
/// `<topic>-<partition>.<topic id, 32 hex digits>-delete`, as Kafka's
/// `LocalLog.logDeleteDirName` builds it (Kafka uses a random UUID where
/// this uses the topic id, which is as unique for a partition and says
/// whose it was), with the topic cut so the whole name is at most 255
/// bytes: a 249-character topic name would otherwise give 291.
pub(crate) fn delete_dir_name(topic: &str, partition: u32, id: Uuid) -> String {
    let suffix = format!("-{partition}.{}{DELETE_SUFFIX}", id.simple());
    let mut keep = topic.len().min(MAX_FILE_NAME.saturating_sub(suffix.len()));
    while !topic.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}{suffix}", &topic[..keep])
}

/// Splits a partition directory's name, `<topic>-<partition>`.
pub(crate) fn parse_partition_dir(name: &str) -> Option<(&str, u32)> {
    let (topic, partition) = name.rsplit_once('-')?;
    if topic.is_empty() || !partition.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((topic, partition.parse().ok()?))
}

fn conflict(path: &Path, reason: impl Into<String>) -> Error {
    Error::PartitionDirConflict {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads the topic id a partition directory's `partition.metadata` names;
/// `None` without the file.
///
/// # Errors
/// [`Error::Corrupt`] when the file has no valid `topic_id`;
/// [`Error::Io`].
pub(crate) fn dir_topic_id(storage: &dyn Storage, dir: &Path) -> Result<Option<Uuid>> {
    let path = dir.join(PARTITION_METADATA);
    if !storage.exists(&path) {
        return Ok(None);
    }
    let file = storage.open(&path, OpenMode::Existing)?;
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

/// Whether `dir` holds segment files (of any stage: `.log`, `.log.deleted`,
/// `.log.swap`, ...).
fn holds_segments(storage: &dyn Storage, dir: &Path) -> Result<bool> {
    if !storage.exists(dir) {
        return Ok(false);
    }
    Ok(storage.list_dir(dir)?.iter().any(|path| {
        path.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".log") || n.contains(".log."))
    }))
}

/// The partition directories (named `<topic>-<partition>`, holding a
/// `partition.metadata`) in the broker directory `dir`; none if it is
/// missing.
pub(crate) fn held_partition_dirs(storage: &dyn Storage, dir: &Path) -> Result<Vec<PathBuf>> {
    if !storage.exists(dir) {
        return Ok(Vec::new());
    }
    let mut held: Vec<PathBuf> = storage
        .list_dir(dir)?
        .into_iter()
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .and_then(parse_partition_dir)
                .is_some()
                && storage.exists(&path.join(PARTITION_METADATA))
        })
        .collect();
    held.sort();
    Ok(held)
}

/// Fsyncs the parent of `path`, if it has one.
pub(crate) fn sync_parent(storage: &dyn Storage, path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => storage.sync_dir(parent),
        _ => Ok(()),
    }
}

/// The `key=value` lines of a Java-properties file such as
/// `meta.properties` (keys and values trimmed; the first 64 KiB read, so a
/// huge file costs nothing; comments and other lines ignored; the first
/// occurrence of a key wins).
pub(crate) fn read_properties(
    storage: &dyn Storage,
    path: &Path,
) -> Result<BTreeMap<String, String>> {
    let file = storage.open(path, OpenMode::Existing)?;
    let len = usize::try_from(file.len()?)
        .unwrap_or(usize::MAX)
        .min(64 * 1024);
    let mut bytes = vec![0; len];
    file.read_exact_at(&mut bytes, 0)?;
    let mut properties = BTreeMap::new();
    for (k, v) in String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|l| l.split_once('='))
    {
        properties
            .entry(k.trim().to_string())
            .or_insert_with(|| v.trim().to_string());
    }
    Ok(properties)
}

/// Creates directory `path` if it is missing and, if it was, fsyncs its
/// parent so the new entry survives a power loss.
pub(crate) fn create_dir_durably(storage: &dyn Storage, path: &Path) -> Result<()> {
    if storage.exists(path) {
        return Ok(());
    }
    storage.create_dir_all(path)?;
    sync_parent(storage, path)
}

/// Checkpointed offsets by (topic, partition).
type Offsets = BTreeMap<(String, u32), u64>;

/// The checkpointed offsets a follower's truncation can lower: recovery
/// points (`recovery-point-offset-checkpoint`) and high watermarks
/// (`replication-offset-checkpoint`), apart from the other offsets. A
/// truncation below a log's recovery point lowers both entries and
/// rewrites both files durably *before* the cut, from under the log's
/// lock (the log's truncation hook), so that no open ever finds a
/// recovery point past the log's end (which it refuses as lost flushed
/// data) or a high watermark over records that were cut. Each entry keeps
/// the log's truncation count it was read at: an offset read before a
/// truncation never raises the entry the truncation lowered. The lock is
/// the innermost of the broker's.
#[derive(Debug)]
struct EndOffsets {
    recovery_file: PathBuf,
    hw_file: PathBuf,
    storage: Arc<dyn Storage>,
    state: Mutex<EndOffsetsState>,
}

#[derive(Debug, Default)]
struct EndOffsetsState {
    recovery_points: Offsets,
    high_watermarks: Offsets,
    /// The truncation count each partition's entries were read at.
    truncations: BTreeMap<(String, u32), u64>,
    /// The broker is down: this incarnation writes no more files.
    down: bool,
}

impl EndOffsets {
    /// A partition's checkpointed recovery point and high watermark.
    fn get(&self, key: &(String, u32)) -> (Option<u64>, Option<u64>) {
        let state = self.state.lock();
        (
            state.recovery_points.get(key).copied(),
            state.high_watermarks.get(key).copied(),
        )
    }

    /// Replaces a partition's entries (when its log opens).
    fn set(&self, key: (String, u32), offsets: &PartitionOffsets) {
        let mut state = self.state.lock();
        state.truncations.insert(key.clone(), offsets.truncations);
        state
            .recovery_points
            .insert(key.clone(), offsets.recovery_point);
        state.high_watermarks.insert(key, offsets.high_watermark);
    }

    fn remove(&self, key: &(String, u32)) {
        let mut state = self.state.lock();
        state.recovery_points.remove(key);
        state.high_watermarks.remove(key);
        state.truncations.remove(key);
    }

    /// Moves a partition's entries forward to `offsets`: read at a newer
    /// truncation count they replace them, at the same one the larger
    /// values stay, at an older one (read before a truncation) they are
    /// ignored.
    fn advance(&self, key: (String, u32), offsets: &PartitionOffsets) {
        let mut state = self.state.lock();
        let known = state.truncations.get(&key).copied();
        let same = match known {
            Some(known) if offsets.truncations < known => return,
            Some(known) => known == offsets.truncations,
            None => false,
        };
        let forward = |map: &mut Offsets, value: u64| {
            let old = map.get(&key).copied().filter(|_| same);
            map.insert(key.clone(), old.map_or(value, |o| o.max(value)));
        };
        forward(&mut state.recovery_points, offsets.recovery_point);
        forward(&mut state.high_watermarks, offsets.high_watermark);
        state.truncations.insert(key.clone(), offsets.truncations);
    }

    /// A truncation is about to cut `key`'s log at `floor` or above, after
    /// which its truncation count is `truncations`: both entries drop to at
    /// most `floor` and both files are rewritten durably first.
    fn lower(&self, key: (String, u32), floor: u64, truncations: u64) -> Result<()> {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        if state.down {
            return Ok(());
        }
        for map in [&mut state.recovery_points, &mut state.high_watermarks] {
            let value = map.get(&key).map_or(floor, |&v| v.min(floor));
            map.insert(key.clone(), value);
        }
        state.truncations.insert(key, truncations);
        self.write_locked(state)
    }

    fn write(&self) -> Result<()> {
        let state = self.state.lock();
        if state.down {
            return Ok(());
        }
        self.write_locked(&state)
    }

    fn write_locked(&self, state: &EndOffsetsState) -> Result<()> {
        OffsetCheckpoint::with_storage(self.recovery_file.clone(), self.storage.clone())
            .write(&state.recovery_points)?;
        OffsetCheckpoint::with_storage(self.hw_file.clone(), self.storage.clone())
            .write(&state.high_watermarks)
    }

    fn set_down(&self) {
        self.state.lock().down = true;
    }
}

/// The other offsets the broker's checkpoint files hold.
#[derive(Debug, Default)]
struct Checkpoints {
    log_start: Offsets,
    cleaner: Offsets,
}

impl Checkpoints {
    fn remove(&mut self, key: &(String, u32)) {
        self.log_start.remove(key);
        self.cleaner.remove(key);
    }

    /// Replaces a partition's entries with `offsets` (when its log opens).
    fn set(&mut self, key: (String, u32), offsets: PartitionOffsets) {
        self.log_start.insert(key.clone(), offsets.log_start);
        match offsets.cleaner_checkpoint {
            Some(cleaned) => self.cleaner.insert(key, cleaned),
            None => self.cleaner.remove(&key),
        };
    }

    /// Moves a partition's entries forward to `offsets`. While a log is
    /// open its log start offset and cleaner checkpoint only grow, so an older snapshot noted late (a checkpoint pass that
    /// read the offsets before a `delete_records`) never undoes a newer one.
    fn advance(&mut self, key: (String, u32), offsets: PartitionOffsets) {
        let forward = |map: &mut Offsets, key: (String, u32), value: u64| {
            let entry = map.entry(key).or_insert(value);
            *entry = (*entry).max(value);
        };
        forward(&mut self.log_start, key.clone(), offsets.log_start);
        match offsets.cleaner_checkpoint {
            Some(cleaned) => forward(&mut self.cleaner, key, cleaned),
            None => {
                self.cleaner.remove(&key);
            }
        }
    }
}

/// What the broker's open found in its directory.
#[derive(Debug, Default)]
pub(crate) struct BrokerScan {
    /// Directories removed on positive evidence.
    pub(crate) removed: Vec<PathBuf>,
    /// Partition directories kept without being opened.
    pub(crate) unknown: Vec<UnknownPartitionDir>,
}

/// One broker's data directory.
#[derive(Debug)]
pub(crate) struct Broker {
    id: u32,
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    /// The last known log start offset, high watermark and (for compacted
    /// logs) cleaner checkpoint of each live partition, written to the
    /// checkpoint files.
    checkpoints: Mutex<Checkpoints>,
    /// The last known recovery point and high watermark of each live
    /// partition.
    end_offsets: Arc<EndOffsets>,
    /// Runs the partition logs' background work; stopped after they close.
    scheduler: LogScheduler,
    /// The partitions this broker hosts: every read and write of them
    /// goes through it.
    pub(crate) replicas: Arc<ReplicaManager>,
    /// Its followers' fetchers, once started.
    fetchers: Mutex<Option<Arc<ReplicaFetcherManager>>>,
    /// Set (under `checkpoints`) once the broker stopped or crashed: its
    /// checkpoint files are no longer written by this incarnation (a
    /// restarted one owns them).
    down: AtomicBool,
    /// Fails every I/O of this incarnation through `storage` (its disk
    /// failed: `Cluster::fail_disk`). A restart wraps the storage anew.
    disk: DiskSwitch,
}

/// Whether `registry` places a replica of `topic`'s partition `partition`
/// on broker `broker`.
fn placed_on(registry: &Registry, topic: &str, partition: u32, broker: u32) -> bool {
    registry
        .topics
        .get(topic)
        .and_then(|meta| meta.assignments.get(partition as usize))
        .is_some_and(|a| a.replicas.contains(&broker))
}

/// Checks the `meta.properties` of broker `id`'s directory `dir` against
/// the cluster, or writes it if the directory has none (a new broker, or
/// broker 0 of a cluster from before brokers had the file).
///
/// # Errors
/// [`Error::InvalidConfig`] if the file names another cluster or broker
/// (a broker directory given to the wrong broker or cluster), or is
/// missing although the broker is `registered` (its directory was lost or
/// moved: a registered broker's directory got the file before the
/// registration was written); [`Error::Corrupt`] if it is unreadable;
/// [`Error::Io`].
fn check_identity(
    storage: &dyn Storage,
    dir: &Path,
    cluster_id: &str,
    id: u32,
    registered: bool,
) -> Result<()> {
    let path = dir.join(META_PROPERTIES);
    if !storage.exists(&path) && registered {
        return Err(Error::InvalidConfig(format!(
            "broker {id} of cluster {cluster_id} is registered, but its directory {} has no \
             meta.properties: it is not the broker's directory (was it moved? check \
             ClusterConfigBuilder::broker_dir)",
            dir.display()
        )));
    }
    if !storage.exists(&path) {
        let text = format!("#logbus broker\nversion=1\ncluster.id={cluster_id}\nnode.id={id}\n");
        return write_atomic(storage, &path, text.as_bytes());
    }
    let properties = read_properties(storage, &path)?;
    let field = |key: &str| properties.get(key).cloned();
    let (Some(cluster), Some(node)) = (field("cluster.id"), field("node.id")) else {
        return Err(Error::corrupt(
            path,
            0,
            CorruptionKind::Metadata(
                "a broker's meta.properties needs cluster.id and node.id".into(),
            ),
        ));
    };
    if cluster != cluster_id || node != id.to_string() {
        return Err(Error::InvalidConfig(format!(
            "{} belongs to broker {node} of cluster {cluster}, but was given to broker {id} of \
             cluster {cluster_id}: check ClusterConfigBuilder::broker_dir",
            dir.display()
        )));
    }
    Ok(())
}

impl Broker {
    /// Opens broker `id`'s directory (creating it, durably), checks or
    /// writes its `meta.properties`, reads its checkpoints, removes what positive evidence says is left over from
    /// deleted topics (`*-delete` directories, partition directories whose
    /// topic id `registry` records as removed), reports the partition
    /// directories it cannot attribute, and starts the log scheduler's
    /// `background_threads` threads. Its replica manager replicates as
    /// `replication` says, on its clock.
    pub(crate) fn open(
        id: u32,
        dir: PathBuf,
        cluster_id: &str,
        storage: Arc<dyn Storage>,
        registry: &Registry,
        background_threads: usize,
        replication: ReplicaConfig,
    ) -> Result<(Broker, BrokerScan)> {
        let clock = replication.clock.clone();
        // Every file of this incarnation, checkpoints included, goes
        // through the switch `fail_disk` throws.
        let disk = DiskSwitch::default();
        let storage: Arc<dyn Storage> = Arc::new(FailableStorage::new(storage, disk.clone()));
        create_dir_durably(&*storage, &dir)?;
        check_identity(
            &*storage,
            &dir,
            cluster_id,
            id,
            registry.brokers.contains(&id),
        )?;
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
        let mut recovery = read(RECOVERY_POINT, true)?;
        let mut checkpoints = Checkpoints {
            log_start: read(LOG_START, false)?,
            // A lost cleaner checkpoint only makes the next clean longer.
            cleaner: read(CLEANER, true)?,
        };
        // A lost high watermark only hides records until the followers
        // fetch again.
        let mut high_watermarks = read(REPLICATION_OFFSET_CHECKPOINT, true)?;
        let live = |(topic, partition): &(String, u32)| placed_on(registry, topic, *partition, id);
        for map in [
            &mut recovery,
            &mut checkpoints.log_start,
            &mut checkpoints.cleaner,
            &mut high_watermarks,
        ] {
            map.retain(|k, _| live(k));
        }
        let scheduler = LogScheduler::start(background_threads, clock.clone())?;
        let replicas = Arc::new(ReplicaManager::with_config(id, replication));
        replicas.set_disk_switch(disk.clone());
        let end_offsets = Arc::new(EndOffsets {
            recovery_file: dir.join(RECOVERY_POINT),
            hw_file: dir.join(REPLICATION_OFFSET_CHECKPOINT),
            storage: storage.clone(),
            state: Mutex::new(EndOffsetsState {
                recovery_points: recovery,
                high_watermarks,
                ..EndOffsetsState::default()
            }),
        });
        let broker = Broker {
            id,
            dir,
            storage,
            clock,
            checkpoints: Mutex::new(checkpoints),
            end_offsets,
            scheduler,
            replicas,
            fetchers: Mutex::new(None),
            down: AtomicBool::new(false),
            disk,
        };
        let scan = broker.scan(registry)?;
        broker.write_checkpoints()?;
        Ok((broker, scan))
    }

    /// Sorts the broker directory's entries by the evidence about them.
    fn scan(&self, registry: &Registry) -> Result<BrokerScan> {
        let mut scan = BrokerScan::default();
        let mut paths = self.storage.list_dir(&self.dir)?;
        paths.sort();
        for path in paths {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.ends_with(DELETE_SUFFIX) {
                self.storage.remove_dir_all(&path)?;
                scan.removed.push(path);
                continue;
            }
            // Anything else that is not `<topic>-<number>` (checkpoint
            // files and their temporary copies) is not a partition.
            let Some((topic, partition)) = parse_partition_dir(name) else {
                continue;
            };
            let live_path = placed_on(registry, topic, partition, self.id);
            let mut unknown = |topic_id: Option<Uuid>, reason: String| {
                scan.unknown.push(UnknownPartitionDir {
                    path: path.clone(),
                    topic_id: topic_id.map(topic_id_string),
                    reason,
                });
            };
            match dir_topic_id(&*self.storage, &path) {
                Ok(Some(id)) => {
                    if let Some(meta) = registry.topic_by_id(&id) {
                        if meta.name == topic && live_path {
                            continue;
                        }
                        let reason = if meta.name == topic && partition < meta.partitions {
                            format!(
                                "partition {partition} of live topic {} has no replica on \
                                 broker {}",
                                meta.name, self.id
                            )
                        } else {
                            format!(
                                "its topic id is live topic {}'s, which has partitions 0..{}",
                                meta.name, meta.partitions
                            )
                        };
                        unknown(Some(id), reason);
                    } else if registry.removed.contains_key(&id) {
                        self.storage.remove_dir_all(&path)?;
                        scan.removed.push(path);
                    } else if !live_path {
                        unknown(
                            Some(id),
                            "the metadata log does not know its topic id".into(),
                        );
                    }
                    // A live path with a foreign id: opening the partition
                    // refuses it (`open_partition`).
                }
                // Creation crashed before `partition.metadata` was written:
                // a live partition adopts it (it holds no segments).
                Ok(None) if live_path => {}
                Ok(None) => unknown(None, "it has no partition.metadata".into()),
                Err(Error::Corrupt { .. }) if !live_path => {
                    unknown(None, "its partition.metadata is unreadable".into());
                }
                Err(Error::Corrupt { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if !scan.removed.is_empty() {
            self.storage.sync_dir(&self.dir)?;
        }
        Ok(scan)
    }

    fn partition_dir(&self, topic: &str, partition: u32) -> PathBuf {
        self.dir.join(format!("{topic}-{partition}"))
    }

    /// Makes the path of partition `partition` of topic `id` ready for it,
    /// before the topic (or the partition) is created: a directory left
    /// there by a deleted topic (its id is in `registry.removed`) is
    /// removed; one of the same topic id is kept for adoption; anything
    /// else is an [`Error::PartitionDirConflict`] and nothing changes.
    pub(crate) fn prepare_path(
        &self,
        topic: &str,
        partition: u32,
        id: Uuid,
        registry: &Registry,
    ) -> Result<()> {
        let dir = self.partition_dir(topic, partition);
        if !self.storage.exists(&dir) {
            return Ok(());
        }
        match dir_topic_id(&*self.storage, &dir) {
            Ok(Some(found)) if found == id => Ok(()),
            Ok(Some(found)) if registry.removed.contains_key(&found) => {
                self.remove_dir(&dir, &delete_dir_name(topic, partition, found))
            }
            Ok(Some(found)) => Err(conflict(
                &dir,
                format!(
                    "its partition.metadata names topic id {}, which the metadata log does not \
                     record as deleted",
                    topic_id_string(found)
                ),
            )),
            Ok(None) if holds_segments(&*self.storage, &dir)? => Err(conflict(
                &dir,
                "it holds segment files but no partition.metadata",
            )),
            Ok(None) => Ok(()),
            Err(Error::Corrupt { .. }) => {
                Err(conflict(&dir, "its partition.metadata is unreadable"))
            }
            Err(e) => Err(e),
        }
    }

    /// Opens (creating if needed) the log of one partition and hosts it in
    /// the broker's replica manager, as its leader or a follower as `roles`
    /// says. A new partition's directory entry, its
    /// `partition.metadata` and its first segment files are fsynced before
    /// this returns.
    ///
    /// # Errors
    /// [`Error::PartitionDirConflict`] when the directory belongs to
    /// another topic id, has an unreadable `partition.metadata`, or holds
    /// segments without one; those of [`Log::open`](crate::LogBuilder::open).
    pub(crate) fn open_partition(
        &self,
        topic: &Arc<str>,
        topic_id: Uuid,
        partition: u32,
        config: LogConfig,
        roles: LeaderAndIsr,
        min_insync: usize,
    ) -> Result<()> {
        let dir = self.partition_dir(topic, partition);
        let fresh = match dir_topic_id(&*self.storage, &dir) {
            Ok(Some(found)) if found == topic_id => false,
            Ok(Some(found)) => {
                return Err(conflict(
                    &dir,
                    format!(
                        "its partition.metadata names topic id {}, not {topic}'s id {}",
                        topic_id_string(found),
                        topic_id_string(topic_id)
                    ),
                ));
            }
            Ok(None) => true,
            Err(Error::Corrupt { .. }) => {
                return Err(conflict(&dir, "its partition.metadata is unreadable"));
            }
            Err(e) => return Err(e),
        };
        if fresh {
            if holds_segments(&*self.storage, &dir)? {
                return Err(conflict(
                    &dir,
                    "it holds segment files but no partition.metadata",
                ));
            }
            // The directory's entry first, then the file in it (which
            // `write_atomic` fsyncs with its directory), then the log.
            self.storage.create_dir_all(&dir)?;
            self.storage.sync_dir(&self.dir)?;
            let text = format!("version: 0\ntopic_id: {}\n", topic_id_string(topic_id));
            write_atomic(
                &*self.storage,
                &dir.join(PARTITION_METADATA),
                text.as_bytes(),
            )?;
        }
        let key = (topic.to_string(), partition);
        let (recovery, high_watermark) = self.end_offsets.get(&key);
        let (log_start, cleaner) = {
            let checkpoints = self.checkpoints.lock();
            (
                checkpoints.log_start.get(&key).copied(),
                checkpoints.cleaner.get(&key).copied(),
            )
        };
        let points = self.end_offsets.clone();
        let hook_key = key.clone();
        let mut builder = Log::builder(&dir)
            .config(config)
            .storage(self.storage.clone())
            .clock(self.clock.clone())
            .scheduler(self.scheduler.handle())
            .stats(self.replicas.config().metrics.log())
            .truncation_hook(TruncationHook(Arc::new(move |floor, truncations| {
                points.lower(hook_key.clone(), floor, truncations)
            })));
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
        if fresh {
            // The first segment's files.
            self.storage.sync_dir(&dir)?;
        }
        self.replicas
            .host(topic, topic_id, partition, roles, min_insync, log)?;
        let hosted = TopicIdPartition {
            topic_id,
            topic: topic.clone(),
            partition,
        };
        if let Some(offset) = high_watermark {
            self.replicas.restore_high_watermark(&hosted, offset)?;
        }
        // What the log holds now replaces what the files said: after a
        // power loss the log may end below a checkpointed log start.
        if let Ok(offsets) = self.replicas.offsets(&hosted) {
            self.end_offsets.set(key.clone(), &offsets);
            self.checkpoints.lock().set(key, offsets);
            // When recovery found less than the files promised (a power
            // loss took records below a checkpointed log start), the files
            // must say so before anything is appended: a log start left
            // above the log end would hide the records appended next (and
            // acknowledged) at the next open.
            if log_start.is_some_and(|start| offsets.log_start < start)
                || recovery.is_some_and(|point| offsets.recovery_point < point)
            {
                self.write_checkpoints()?;
            }
        }
        Ok(())
    }

    /// Renames `dir` to `doomed` (in the broker directory), makes the
    /// rename durable, then removes it. A failure after the rename leaves
    /// a `-delete` directory that the next open removes.
    fn remove_dir(&self, dir: &Path, doomed: &str) -> Result<()> {
        let doomed = self.dir.join(doomed);
        self.storage.rename(dir, &doomed)?;
        self.storage.sync_dir(&self.dir)?;
        self.storage.remove_dir_all(&doomed)
    }

    /// Removes a deleted topic's partition directory: rename to
    /// [`delete_dir_name`], fsync, remove.
    pub(crate) fn delete_partition(&self, topic: &str, partition: u32, id: Uuid) -> Result<()> {
        {
            let mut checkpoints = self.checkpoints.lock();
            let key = (topic.to_string(), partition);
            checkpoints.remove(&key);
            self.end_offsets.remove(&key);
        }
        let dir = self.partition_dir(topic, partition);
        if !self.storage.exists(&dir) {
            return Ok(());
        }
        self.remove_dir(&dir, &delete_dir_name(topic, partition, id))
    }

    /// Starts this broker's fetchers (one thread per leader broker it
    /// follows partitions of, and the ISR expiration thread), reaching the
    /// leaders through `registry`.
    ///
    /// # Errors
    /// [`Error::Io`] if a thread cannot be spawned.
    pub(crate) fn start_fetchers(&self, registry: Arc<ReplicaRegistry>) -> Result<()> {
        let fetchers = ReplicaFetcherManager::start(&self.replicas, registry)?;
        *self.fetchers.lock() = Some(fetchers);
        Ok(())
    }

    /// Stops and joins this broker's fetcher threads.
    pub(crate) fn stop_fetchers(&self) {
        if let Some(fetchers) = self.fetchers.lock().take() {
            fetchers.shutdown();
        }
    }

    /// Pauses (or resumes) its followers' fetching (fault injection).
    pub(crate) fn set_fetching_paused(&self, paused: bool) {
        if let Some(fetchers) = &*self.fetchers.lock() {
            fetchers.set_paused(paused);
        }
    }

    /// Takes the broker down (the fault API; call it with no cluster lock
    /// held): its fetcher threads are joined, then its logs are flushed and
    /// closed and its checkpoint files written (`clean`), or dropped as a
    /// crash leaves them (nothing flushed or written); then its log
    /// scheduler stops. The first error is returned; the broker is down
    /// either way.
    pub(crate) fn shut_down(&self, clean: bool) -> Result<()> {
        self.stop_fetchers();
        let mut first_error = None;
        for (topic, partition, closed) in self.replicas.shutdown_broker(clean) {
            match closed {
                Ok(Some(offsets)) => self.note_offsets(&topic, partition, offsets),
                Ok(None) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if clean && let Err(e) = self.write_checkpoints() {
            first_error.get_or_insert(e);
        }
        {
            let _checkpoints = self.checkpoints.lock();
            self.down.store(true, Ordering::Release);
            self.end_offsets.set_down();
        }
        self.stop_scheduler();
        first_error.map_or(Ok(()), Err)
    }

    /// Fails this broker's disk: from now on every I/O of its storage and
    /// of every file it opened fails with `EIO` (maps made before keep
    /// reading). Its logs fence themselves at their first failed write or
    /// fsync; its checkpoint and recovery-point writes fail (a truncation
    /// whose recovery point cannot be lowered durably is refused).
    pub(crate) fn fail_disk(&self) {
        self.disk.fail();
    }

    /// Whether [`Broker::fail_disk`] was called on this incarnation.
    #[cfg(test)]
    pub(crate) fn disk_failed(&self) -> bool {
        self.disk.is_failed()
    }

    /// Stops and joins the log scheduler's threads; call it once every
    /// partition log is closed.
    pub(crate) fn stop_scheduler(&self) {
        self.scheduler.stop();
    }

    /// Records a live partition's current offsets for the next checkpoint
    /// write. They are read under the checkpoint lock, so a partition
    /// deleted meanwhile (its log shut, then its entry removed) is never
    /// noted again; entries only move forward (see `Checkpoints::advance`).
    pub(crate) fn note_partition(&self, key: &TopicIdPartition) {
        let mut checkpoints = self.checkpoints.lock();
        // A partition deleted or closed meanwhile has nothing to note.
        if let Ok(offsets) = self.replicas.offsets(key) {
            let entry = (key.topic.to_string(), key.partition);
            self.end_offsets.advance(entry.clone(), &offsets);
            checkpoints.advance(entry, offsets);
        }
    }

    /// Records a partition's final offsets (from closing it).
    pub(crate) fn note_offsets(&self, topic: &str, partition: u32, offsets: PartitionOffsets) {
        let key = (topic.to_string(), partition);
        let mut checkpoints = self.checkpoints.lock();
        self.end_offsets.advance(key.clone(), &offsets);
        checkpoints.advance(key, offsets);
    }

    /// Writes the checkpoint files from the noted offsets.
    pub(crate) fn write_checkpoints(&self) -> Result<()> {
        let checkpoints = self.checkpoints.lock();
        if self.down.load(Ordering::Acquire) {
            return Ok(());
        }
        self.end_offsets.write()?;
        for (name, entries) in [
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
    use crate::clock::SystemClock;
    use crate::cluster::metadata::MetadataRecord;
    use crate::replica::{AppendAcks, AppendOrigin};
    use crate::storage::StdStorage;

    /// Partition 0 of topic `name` (id `id`).
    fn key(name: &Arc<str>, id: Uuid) -> TopicIdPartition {
        TopicIdPartition {
            topic_id: id,
            topic: name.clone(),
            partition: 0,
        }
    }

    #[test]
    fn topic_ids_print_as_kafka_does() {
        let id = Uuid::from_u128(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff);
        let text = topic_id_string(id);
        assert_eq!(text.len(), 22);
        assert_eq!(parse_topic_id(&text), Some(id));
        assert_eq!(parse_topic_id("not base64!"), None);
    }

    #[test]
    fn delete_dir_names_fit_in_255_bytes_as_kafka_cuts_them() {
        let id = Uuid::from_u128(0xabc);
        assert_eq!(
            delete_dir_name("orders", 3, id),
            format!("orders-3.{}-delete", id.simple())
        );
        let long = "t".repeat(249);
        for partition in [0, 7, 9_999, u32::MAX] {
            let name = delete_dir_name(&long, partition, id);
            assert_eq!(name.len(), 255, "{name}");
            assert!(name.ends_with(&format!("-{partition}.{}-delete", id.simple())));
            assert!(name.starts_with("ttt"));
        }
        // Never a partition directory's name.
        assert_eq!(parse_partition_dir(&delete_dir_name("a-1", 2, id)), None);
    }

    #[test]
    fn partition_dir_names_split_at_the_last_dash() {
        assert_eq!(parse_partition_dir("orders-3"), Some(("orders", 3)));
        assert_eq!(parse_partition_dir("a-b-10"), Some(("a-b", 10)));
        for bad in [
            "orders",
            "-3",
            "orders-",
            "orders-+3",
            "orders-x",
            "t-99999999999",
        ] {
            assert_eq!(parse_partition_dir(bad), None, "{bad}");
        }
    }

    fn registry_with(topic: &str, id: Uuid, partitions: u32) -> Registry {
        let mut registry = Registry::default();
        registry
            .apply(&MetadataRecord::Topic {
                name: topic.into(),
                id,
            })
            .unwrap();
        for partition in 0..partitions {
            registry
                .apply(&MetadataRecord::Partition {
                    topic_id: id,
                    partition,
                    replicas: vec![0],
                    leader: Some(0),
                    leader_epoch: 0,
                    isr: vec![0],
                })
                .unwrap();
        }
        registry
    }

    fn open_broker(dir: &Path, registry: &Registry) -> Broker {
        let storage: Arc<dyn Storage> = Arc::new(StdStorage);
        Broker::open(
            0,
            dir.to_path_buf(),
            "test-cluster",
            storage,
            registry,
            1,
            ReplicaConfig::new(Arc::new(SystemClock)),
        )
        .unwrap()
        .0
    }

    /// Opens partition 0 of `name` (`id`) on the broker as its only
    /// replica, with the default log config.
    fn open_leader(broker: &Broker, name: &Arc<str>, id: Uuid) {
        broker
            .open_partition(
                name,
                id,
                0,
                LogConfig::default(),
                LeaderAndIsr::new(vec![0]),
                1,
            )
            .unwrap();
    }

    fn offsets(log_start: u64, recovery_point: u64) -> PartitionOffsets {
        PartitionOffsets {
            log_start,
            high_watermark: recovery_point,
            log_end: recovery_point,
            recovery_point,
            truncations: 0,
            cleaner_checkpoint: None,
        }
    }

    fn written(dir: &Path, file: &str) -> Offsets {
        match OffsetCheckpoint::new(dir.join(file)).read().unwrap() {
            CheckpointRead::Present(entries) => entries,
            CheckpointRead::Missing => Offsets::new(),
        }
    }

    /// The race the periodic checkpointer had with `delete_records`: it
    /// read a partition's offsets, `delete_records` advanced the log start
    /// and wrote its checkpoint, then the checkpointer noted its older
    /// snapshot and wrote it over the newer one. Replayed here in that
    /// order: the newer log start survives.
    #[test]
    fn an_older_snapshot_noted_late_never_moves_a_checkpoint_back() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open_broker(dir.path(), &Registry::default());
        let stale = offsets(0, 3); // read by the checkpointer first
        broker.note_offsets("t", 0, offsets(5, 10)); // delete_records
        broker.write_checkpoints().unwrap();
        broker.note_offsets("t", 0, stale); // the checkpointer, late
        broker.write_checkpoints().unwrap();
        let key = ("t".to_string(), 0);
        assert_eq!(written(dir.path(), LOG_START)[&key], 5);
        assert_eq!(written(dir.path(), RECOVERY_POINT)[&key], 10);
        broker.stop_scheduler();
    }

    /// A truncation lowers the recovery point and the high watermark and
    /// writes them at once; one read before it (a checkpoint pass racing the
    /// truncation) never raises it again, one read after it does.
    #[test]
    fn a_truncation_lowers_the_end_offsets_and_older_reads_never_raise_them() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open_broker(dir.path(), &Registry::default());
        let key = ("t".to_string(), 0);
        broker.note_offsets("t", 0, offsets(0, 10));
        broker.write_checkpoints().unwrap();
        assert_eq!(written(dir.path(), RECOVERY_POINT)[&key], 10);
        // The truncation step, before a cut at 4: written without waiting
        // for the next checkpoint pass.
        broker.end_offsets.lower(key.clone(), 4, 1).unwrap();
        assert_eq!(written(dir.path(), RECOVERY_POINT)[&key], 4);
        assert_eq!(written(dir.path(), REPLICATION_OFFSET_CHECKPOINT)[&key], 4);
        // A pass that read the log before the truncation.
        broker.note_offsets("t", 0, offsets(0, 10));
        broker.write_checkpoints().unwrap();
        assert_eq!(written(dir.path(), RECOVERY_POINT)[&key], 4);
        assert_eq!(written(dir.path(), REPLICATION_OFFSET_CHECKPOINT)[&key], 4);
        // One that read it after, once new records were flushed.
        let after = PartitionOffsets {
            truncations: 1,
            ..offsets(0, 7)
        };
        broker.note_offsets("t", 0, after);
        broker.write_checkpoints().unwrap();
        assert_eq!(written(dir.path(), RECOVERY_POINT)[&key], 7);
        assert_eq!(written(dir.path(), REPLICATION_OFFSET_CHECKPOINT)[&key], 7);
        broker.stop_scheduler();
    }

    /// A checkpoint pass that reached a partition just as its topic was
    /// deleted notes nothing: offsets are read under the checkpoint lock
    /// from the live log, so a deleted partition's entry never comes back
    /// (where a re-created topic of the same name would inherit it).
    #[test]
    fn a_deleted_partition_is_never_noted_again() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::new_v4();
        let registry = registry_with("t", id, 1);
        let broker = open_broker(dir.path(), &registry);
        let name: Arc<str> = Arc::from("t");
        open_leader(&broker, &name, id);
        let key = key(&name, id);
        broker.note_partition(&key);
        broker.write_checkpoints().unwrap();
        assert_eq!(written(dir.path(), RECOVERY_POINT).len(), 1);
        broker.replicas.delete_topic("t").unwrap();
        broker.delete_partition("t", 0, id).unwrap();
        broker.note_partition(&key);
        broker.write_checkpoints().unwrap();
        assert!(written(dir.path(), RECOVERY_POINT).is_empty());
        assert!(written(dir.path(), LOG_START).is_empty());
        assert!(!dir.path().join("t-0").exists());
        broker.stop_scheduler();
    }

    /// After a power loss a log may end below its checkpointed log start
    /// (records never fsynced are gone, the checkpoint was). What the
    /// opened log holds replaces the file's entry, so the entries (which
    /// then only move forward) never keep the old, larger start that would
    /// hide records appended after the reopen.
    #[test]
    fn opening_a_partition_replaces_its_checkpointed_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::new_v4();
        let registry = registry_with("t", id, 1);
        let key = ("t".to_string(), 0);
        let name: Arc<str> = Arc::from("t");
        let broker = open_broker(dir.path(), &registry);
        open_leader(&broker, &name, id);
        let mut batch = crate::format::BatchBuilder::new(crate::types::Compression::None);
        for _ in 0..3 {
            batch.append(1, None, Some(b"v"), &[]);
        }
        broker
            .replicas
            .append(
                &self::key(&name, id),
                &mut batch.build().unwrap().to_vec(),
                AppendOrigin::Client,
                AppendAcks::All,
            )
            .unwrap();
        broker.replicas.unhost_topic("t").unwrap();
        broker.stop_scheduler();
        drop(broker);
        // A log start checkpointed (by `delete_records`) above records a
        // power loss then took: the log ends at 3 now. (A recovery point
        // above the log end cannot happen that way: it only covers fsynced
        // data, and recovery refuses such a log as corrupt.)
        let stale = Offsets::from([(key.clone(), 50)]);
        OffsetCheckpoint::new(dir.path().join(LOG_START))
            .write(&stale)
            .unwrap();
        let broker = open_broker(dir.path(), &registry);
        open_leader(&broker, &name, id);
        let hosted = self::key(&name, id);
        assert_eq!(broker.replicas.offsets(&hosted).unwrap().log_start, 3);
        broker.note_partition(&hosted);
        broker.write_checkpoints().unwrap();
        assert_eq!(written(dir.path(), LOG_START)[&key], 3);
        assert_eq!(written(dir.path(), RECOVERY_POINT)[&key], 3);
        broker.replicas.unhost_topic("t").unwrap();
        broker.stop_scheduler();
    }

    /// After `fail_disk` every write of the broker fails with `EIO` and
    /// changes nothing on disk: appends (the log fences itself), the
    /// checkpoint files, and the recovery point a truncation must lower
    /// first (so the truncation hook refuses the cut).
    #[test]
    fn a_failed_disk_fails_appends_checkpoints_and_truncations_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::new_v4();
        let registry = registry_with("t", id, 1);
        let key = ("t".to_string(), 0);
        let name: Arc<str> = Arc::from("t");
        let broker = open_broker(dir.path(), &registry);
        open_leader(&broker, &name, id);
        let append = |broker: &Broker| {
            let mut batch = crate::format::BatchBuilder::new(crate::types::Compression::None);
            batch.append(1, None, Some(b"v"), &[]);
            broker.replicas.append(
                &self::key(&name, id),
                &mut batch.build().unwrap().to_vec(),
                AppendOrigin::Client,
                AppendAcks::Leader,
            )
        };
        append(&broker).unwrap();
        append(&broker).unwrap();
        let partition = self::key(&name, id);
        let log = |f: &dyn Fn(&Log) -> Result<u64>| broker.replicas.with_log(&partition, f);
        log(&|l| l.flush().map(|()| l.recovery_point())).unwrap();
        assert_eq!(log(&|l| Ok(l.recovery_point())).unwrap(), 2);
        broker.note_partition(&partition);
        broker.write_checkpoints().unwrap();
        let before = written(dir.path(), RECOVERY_POINT);
        let log_file = dir.path().join("t-0").join("00000000000000000000.log");
        let log_bytes = std::fs::read(&log_file).unwrap();
        assert!(!log_bytes.is_empty());
        assert!(!broker.disk_failed());

        broker.fail_disk();
        assert!(broker.disk_failed());
        let eio = |e: &Error| matches!(e, Error::Io { source, .. } if source.to_string().contains("fail_disk"));
        // A follower's truncation below the recovery point must lower the
        // checkpointed one durably first: that write fails, so the cut is
        // refused and the log keeps its end.
        let e = log(&|l| l.truncate_to(1)).unwrap_err();
        assert!(eio(&e), "{e}");
        assert_eq!(log(&|l| Ok(l.log_end_offset())).unwrap(), 2);
        // Requests caught inside the log are answered as the halted broker
        // answers: retriable, go to the new leader. Underneath, the first
        // append met the EIO and fenced the log.
        for _ in 0..2 {
            let e = append(&broker).unwrap_err();
            assert!(
                matches!(e, Error::NotLeaderOrFollower { .. }) && e.is_retriable(),
                "{e}"
            );
        }
        let fenced = log(&|l| l.flush().map(|()| 0)).unwrap_err();
        assert!(matches!(fenced, Error::Fenced { .. }), "{fenced}");
        let e = broker.write_checkpoints().unwrap_err();
        assert!(eio(&e), "{e}");
        let e = broker.end_offsets.lower(key.clone(), 0, 1).unwrap_err();
        assert!(eio(&e), "{e}");
        // Nothing reached the disk.
        assert_eq!(written(dir.path(), RECOVERY_POINT), before);
        assert_eq!(std::fs::read(&log_file).unwrap(), log_bytes);
        // A crash's shutdown: nothing to write, nothing fails.
        broker.shut_down(false).unwrap();
        assert_eq!(written(dir.path(), RECOVERY_POINT), before);
    }
}
