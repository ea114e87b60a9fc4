//! Rebuilding the topic registry (the metadata log) from the partition
//! directories, after the metadata log was lost or damaged.
//!
//! Topic ids live in every partition directory's `partition.metadata` (as
//! in Kafka) and the directory's name gives the topic and partition, so the
//! registry can be rebuilt from the broker directory alone; configs come
//! from whatever prefix of the old metadata log is still readable.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use uuid::Uuid;

use crate::cluster::broker::{
    CHECKPOINT_FILES, create_dir_durably, dir_topic_id, parse_partition_dir, sync_parent,
    topic_id_string,
};
use crate::cluster::coordinator::offsets_topic_config;
use crate::cluster::metadata::{
    METADATA_CHECKPOINT, MetadataLog, MetadataPrefix, MetadataRecord, Registry, read_prefix,
    write_recovery_point,
};
use crate::cluster::offsets::{OFFSETS_PARTITIONS, OFFSETS_TOPIC};
use crate::cluster::{
    BROKER_DIR, Cluster, ClusterConfig, MAX_PARTITIONS_PER_TOPIC, METADATA_DIR, RebuildReport,
    RebuiltTopic, TopicConfig, UnknownPartitionDir, meta_properties, validate_topic_name,
};
use crate::error::{Error, Result};
use crate::log::{CheckpointRead, OffsetCheckpoint};
use crate::replica::LeaderAndIsr;
use crate::storage::Storage;

/// Suffix of the directory a rebuild writes the new log in before it
/// renames it into place.
const REBUILDING: &str = ".rebuilding";
/// Suffix (before a number) of a metadata log moved aside by a rebuild.
const DAMAGED: &str = ".damaged-";

/// A rebuilt partition's record: one replica, on broker 0, leading.
fn partition_record(topic_id: Uuid, partition: u32) -> MetadataRecord {
    LeaderAndIsr::new(vec![0]).record(topic_id, partition)
}

/// One topic as the partition directories show it.
#[derive(Debug)]
struct Found {
    name: String,
    partitions: BTreeSet<u32>,
    /// One of its directories, to name in errors.
    example: PathBuf,
}

impl Cluster {
    /// Rebuilds the cluster's topic registry (the metadata log,
    /// `__cluster_metadata-0`) from the partition directories in `dir`,
    /// when [`Cluster::open`] refuses because the metadata log is missing
    /// ([`Error::MetadataMissing`]) or damaged below its recovery point
    /// ([`Error::Corrupt`] naming a file in `__cluster_metadata-0`).
    ///
    /// The cluster must not be open. The procedure:
    ///
    /// 1. Each partition directory `<topic>-<partition>` in `broker-0/`
    ///    with a readable `partition.metadata` is attributed to the topic
    ///    id the file names; directories of one id make one topic, with one
    ///    more partition than its highest directory (a gap is reported and
    ///    recreated empty by the next open). Directories without a readable
    ///    `partition.metadata` or with an invalid name are left alone and
    ///    reported. Two topic ids under one name, or one id under two
    ///    names, refuse the rebuild ([`Error::PartitionDirConflict`]):
    ///    move the wrong directories away and run it again.
    /// 2. The readable prefix of the old metadata log (up to the first
    ///    damaged batch or unreadable record; if the log is missing, of the
    ///    newest copy an earlier rebuild moved aside) supplies each topic's
    ///    configs and, if higher, its partition count. A topic it does not
    ///    cover gets no configs of its own (`__consumer_offsets` gets its
    ///    usual ones). A topic it records as deleted is written as created
    ///    and deleted again, so the next open removes its directories. A
    ///    topic it shows live with no directory left is kept, empty, and
    ///    the broker checkpoints forget the lost partition directories.
    /// 3. The new log is written and fsynced in
    ///    `__cluster_metadata-0.rebuilding`; the old log directory is
    ///    renamed `__cluster_metadata-0.damaged-<n>` (never deleted:
    ///    remove it yourself once the cluster is back), the new one takes
    ///    its place, and the metadata recovery point is rewritten. A rebuild
    ///    interrupted by a crash can be run again.
    ///
    /// Then [`Cluster::open`] works and every partition's records are
    /// there. Committed offsets (in `__consumer_offsets`) come back with
    /// it.
    ///
    /// ```
    /// use logbus::{Cluster, ClusterConfig, Error, NewTopic};
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    /// cluster.create_topic(NewTopic::new("orders", 2))?;
    /// cluster.close()?;
    ///
    /// // The metadata log is lost; the partitions are still there.
    /// std::fs::remove_dir_all(dir.path().join("__cluster_metadata-0"))?;
    /// let refused = Cluster::open(dir.path(), ClusterConfig::default());
    /// assert!(matches!(refused, Err(Error::MetadataMissing { .. })));
    ///
    /// let report = Cluster::rebuild_metadata(dir.path(), ClusterConfig::default())?;
    /// assert_eq!(report.topics.len(), 1);
    /// assert_eq!((report.topics[0].name.as_str(), report.topics[0].partitions), ("orders", 2));
    /// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    /// assert_eq!(cluster.topic("orders")?.partition_count(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::DirectoryLocked`] if a `Cluster` has `dir` open;
    /// [`Error::InvalidArgument`] if `dir` holds no cluster;
    /// [`Error::PartitionDirConflict`] as above (nothing is changed);
    /// [`Error::InvalidConfig`] for an invalid `config`, or one of more
    /// than one broker (only a single-broker cluster's registry can be
    /// rebuilt yet; nothing is changed); [`Error::Io`].
    pub fn rebuild_metadata(dir: impl AsRef<Path>, config: ClusterConfig) -> Result<RebuildReport> {
        let root = dir.as_ref().to_path_buf();
        config.validate()?;
        let storage = config.storage.clone();
        if !storage.exists(&root.join(super::META_PROPERTIES)) {
            return Err(Error::InvalidArgument(format!(
                "{} holds no cluster (no meta.properties)",
                root.display()
            )));
        }
        if config.brokers != 1 {
            return Err(Error::InvalidConfig(format!(
                "brokers={}: rebuild_metadata rebuilds the registry of a single-broker cluster \
                 (from broker-0/); a cluster of several brokers cannot be rebuilt yet",
                config.brokers
            )));
        }
        let _lock = storage.lock_dir(&root)?;
        meta_properties(&*storage, &root)?;
        let metadata_dir = root.join(METADATA_DIR);
        let mut report = RebuildReport::default();

        // What the old log still says; if it is gone or says nothing, what
        // the copy an interrupted earlier rebuild moved aside says.
        let mut prefix = read_prefix(&*storage, &metadata_dir)?;
        if prefix.records == 0
            && let Some((_, aside)) = newest_damaged(&*storage, &root)?
        {
            prefix = read_prefix(&*storage, &aside)?;
        }
        report.old_records_read = prefix.records;

        // What the partition directories say.
        let found = scan_partition_dirs(&*storage, &root.join(BROKER_DIR), &mut report)?;
        let batches = plan(&found, &prefix, &mut report)?;
        // Every batch must replay; a failure here is a bug, before any change.
        let mut check = Registry::default();
        for batch in &batches {
            for record in batch {
                check.apply(record).map_err(Error::Internal)?;
            }
        }

        // A partition whose directory is gone comes back empty: what the
        // broker's checkpoints say of it described the lost directory (a
        // recovery point above an empty log would refuse the next open).
        forget_lost_partitions(&storage, &root.join(BROKER_DIR))?;

        // Write the new log aside, then swap it in.
        let building = root.join(format!("{METADATA_DIR}{REBUILDING}"));
        // A leftover of an interrupted rebuild: ours, never acknowledged.
        storage.remove_dir_all(&building)?;
        create_dir_durably(&*storage, &building)?;
        let (mut log, mut registry) = MetadataLog::open(
            building.clone(),
            None,
            storage.clone(),
            config.clock.clone(),
            None,
        )?;
        for batch in &batches {
            log.commit(&mut registry, batch)?;
        }
        let end = log.log_end_offset();
        log.close()?;
        // The old log goes aside first (durably), so it is never opened
        // without its recovery point; then its recovery point goes, so
        // the new log is never judged by it; then the new log moves in and
        // gets its own. A crash at any step leaves either the new log or
        // no log (the open refuses; run the rebuild again).
        if storage.exists(&metadata_dir) {
            let aside = free_damaged_name(&*storage, &root)?;
            storage.rename(&metadata_dir, &aside)?;
            storage.sync_dir(&root)?;
            report.moved_aside = Some(aside);
        }
        storage.remove_file(&root.join(METADATA_CHECKPOINT))?;
        storage.sync_dir(&root)?;
        storage.rename(&building, &metadata_dir)?;
        sync_parent(&*storage, &metadata_dir)?;
        write_recovery_point(&storage, &root, end)?;
        Ok(report)
    }
}

/// Groups the partition directories of `broker_dir` by topic id.
fn scan_partition_dirs(
    storage: &dyn Storage,
    broker_dir: &Path,
    report: &mut RebuildReport,
) -> Result<BTreeMap<Uuid, Found>> {
    let mut found: BTreeMap<Uuid, Found> = BTreeMap::new();
    if !storage.exists(broker_dir) {
        return Ok(found);
    }
    let mut paths = storage.list_dir(broker_dir)?;
    paths.sort();
    for path in paths {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        // `-delete` directories are removed by the next open; checkpoint
        // files and the like are not partitions.
        let Some((topic, partition)) = parse_partition_dir(name) else {
            continue;
        };
        let mut skip = |topic_id: Option<Uuid>, reason: String| {
            report.skipped_dirs.push(UnknownPartitionDir {
                path: path.clone(),
                topic_id: topic_id.map(topic_id_string),
                reason,
            });
        };
        if let Err(e) = validate_topic_name(topic, topic.starts_with("__")) {
            skip(None, format!("{topic:?} is not a valid topic name: {e}"));
            continue;
        }
        if partition >= MAX_PARTITIONS_PER_TOPIC {
            skip(
                None,
                format!(
                    "partition {partition} is above the per-topic limit of \
                     {MAX_PARTITIONS_PER_TOPIC}"
                ),
            );
            continue;
        }
        let id = match dir_topic_id(storage, &path) {
            Ok(Some(id)) => id,
            Ok(None) => {
                skip(None, "it has no partition.metadata".into());
                continue;
            }
            Err(Error::Corrupt { .. }) => {
                skip(None, "its partition.metadata is unreadable".into());
                continue;
            }
            Err(e) => return Err(e),
        };
        let entry = found.entry(id).or_insert_with(|| Found {
            name: topic.to_string(),
            partitions: BTreeSet::new(),
            example: path.clone(),
        });
        if entry.name != topic {
            return Err(Error::PartitionDirConflict {
                path: path.clone(),
                reason: format!(
                    "its topic id {} is also the id of {} (topic {}); one id cannot name two topics",
                    topic_id_string(id),
                    entry.example.display(),
                    entry.name
                ),
            });
        }
        entry.partitions.insert(partition);
    }
    Ok(found)
}

/// The batches of the new log: topics the old log records as deleted
/// (created and removed again), then the live ones, each one batch.
fn plan(
    found: &BTreeMap<Uuid, Found>,
    prefix: &MetadataPrefix,
    report: &mut RebuildReport,
) -> Result<Vec<Vec<MetadataRecord>>> {
    let mut removed_batches = Vec::new();
    let mut live_batches = Vec::new();
    let mut live_names: BTreeMap<&str, (Uuid, &Found)> = BTreeMap::new();
    let mut topics = Vec::new();
    for (&id, topic) in found {
        let removed = prefix.registry.removed.contains_key(&id);
        if removed {
            removed_batches.push(vec![
                MetadataRecord::Topic {
                    name: topic.name.clone(),
                    id,
                },
                MetadataRecord::RemoveTopic { topic_id: id },
            ]);
            topics.push(RebuiltTopic {
                name: topic.name.clone(),
                id: topic_id_string(id),
                partitions: 0,
                missing_partitions: Vec::new(),
                config_recovered: false,
                removed: true,
            });
            continue;
        }
        if let Some((other, first)) = live_names.insert(&topic.name, (id, topic)) {
            return Err(Error::PartitionDirConflict {
                path: topic.example.clone(),
                reason: format!(
                    "topic {} has directories of two topic ids, {} (as {}) and {}",
                    topic.name,
                    topic_id_string(other),
                    first.example.display(),
                    topic_id_string(id)
                ),
            });
        }
        let internal = topic.name == OFFSETS_TOPIC;
        let highest = topic.partitions.iter().next_back().map_or(0, |p| p + 1);
        let recorded = prefix.partitions.get(&id).copied().unwrap_or(0);
        let mut count = highest.max(recorded).min(MAX_PARTITIONS_PER_TOPIC);
        if internal {
            // Groups are placed by this count: it never changes.
            count = count.max(OFFSETS_PARTITIONS);
        }
        let recovered = prefix
            .configs
            .get(&id)
            .filter(|c| TopicConfig::from_stored(c).is_ok());
        let config: BTreeMap<String, String> = match recovered {
            Some(config) => config.clone(),
            None if internal => offsets_topic_config()
                .entries()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            None => BTreeMap::new(),
        };
        let mut batch = vec![MetadataRecord::Topic {
            name: topic.name.clone(),
            id,
        }];
        batch.extend((0..count).map(|p| partition_record(id, p)));
        batch.extend(
            config
                .into_iter()
                .map(|(key, value)| MetadataRecord::Config {
                    topic_id: id,
                    key,
                    value: Some(value),
                }),
        );
        live_batches.push(batch);
        topics.push(RebuiltTopic {
            name: topic.name.clone(),
            id: topic_id_string(id),
            partitions: count,
            missing_partitions: (0..count)
                .filter(|p| !topic.partitions.contains(p))
                .collect(),
            config_recovered: recovered.is_some(),
            removed: false,
        });
    }
    // Topics the old log shows live whose directories are all gone: kept,
    // with their configs, their partitions recreated empty (unless a
    // directory of another id now has the name, which wins).
    for meta in prefix.registry.topics.values() {
        if found.contains_key(&meta.id) || live_names.contains_key(meta.name.as_str()) {
            continue;
        }
        let count = meta.partitions.min(MAX_PARTITIONS_PER_TOPIC);
        let mut batch = vec![MetadataRecord::Topic {
            name: meta.name.clone(),
            id: meta.id,
        }];
        batch.extend((0..count).map(|p| partition_record(meta.id, p)));
        let config_recovered = TopicConfig::from_stored(&meta.config).is_ok();
        if config_recovered {
            batch.extend(
                meta.config
                    .iter()
                    .map(|(key, value)| MetadataRecord::Config {
                        topic_id: meta.id,
                        key: key.clone(),
                        value: Some(value.clone()),
                    }),
            );
        }
        live_batches.push(batch);
        topics.push(RebuiltTopic {
            name: meta.name.clone(),
            id: topic_id_string(meta.id),
            partitions: count,
            missing_partitions: (0..count).collect(),
            config_recovered,
            removed: false,
        });
    }
    topics.sort_by(|a, b| (&a.name, a.removed).cmp(&(&b.name, b.removed)));
    report.topics = topics;
    removed_batches.extend(live_batches);
    Ok(removed_batches)
}

/// The metadata log directory an earlier rebuild moved aside last, with
/// its number, if any.
/// Drops the broker checkpoint entries of partitions without a directory.
fn forget_lost_partitions(storage: &Arc<dyn Storage>, broker_dir: &Path) -> Result<()> {
    for name in CHECKPOINT_FILES {
        let file = OffsetCheckpoint::with_storage(broker_dir.join(name), storage.clone());
        // A missing or damaged file is left to the open, which judges it.
        let Ok(CheckpointRead::Present(mut entries)) = file.read() else {
            continue;
        };
        let before = entries.len();
        entries.retain(|(topic, partition), _| {
            storage.exists(&broker_dir.join(format!("{topic}-{partition}")))
        });
        if entries.len() != before {
            file.write(&entries)?;
        }
    }
    Ok(())
}

fn newest_damaged(storage: &dyn Storage, root: &Path) -> Result<Option<(u64, PathBuf)>> {
    let prefix = format!("{METADATA_DIR}{DAMAGED}");
    let newest = storage
        .list_dir(root)?
        .into_iter()
        .filter_map(|path| {
            let n = path
                .file_name()?
                .to_str()?
                .strip_prefix(&prefix)?
                .parse::<u64>()
                .ok()?;
            Some((n, path))
        })
        .max();
    Ok(newest)
}

/// `__cluster_metadata-0.damaged-<n>`, `n` one above the newest such
/// directory (1 for the first).
fn free_damaged_name(storage: &dyn Storage, root: &Path) -> Result<PathBuf> {
    let n = newest_damaged(storage, root)?.map_or(1, |(n, _)| n.saturating_add(1));
    Ok(root.join(format!("{METADATA_DIR}{DAMAGED}{n}")))
}
