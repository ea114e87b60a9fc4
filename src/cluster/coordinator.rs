//! The group coordinator's offset store: committed offsets kept in memory
//! and persisted as records of `__consumer_offsets` (see [`super::offsets`]).
//!
//! The internal topic is created on the first commit (as Kafka creates it
//! on the first `FindCoordinator`), with 50 partitions; each group's
//! commits go to one partition, one batch per commit call, so a commit of
//! several partitions is applied whole or not at all after a crash. On
//! open, the cluster replays every partition of the topic, skipping (and
//! reporting) records it cannot read. Only the coordinator writes the
//! topic: public appends, record deletions and partition additions are
//! refused.
//!
//! ## Transactional offsets
//! Offsets committed in a transaction (`txn_offset_commit`, Kafka's
//! `TxnOffsetCommit`) are appended at once to the group's partition as a
//! *transactional* batch of the transaction's producer id and epoch
//! (through [`AppendOrigin::Coordinator`]: no sequence checks), so the
//! partition's last stable offset stays below them until the transaction
//! ends. They are held pending, per producer id (Kafka's
//! `pendingTransactionalOffsetCommits`), invisible as committed offsets.
//! When the transaction coordinator writes the COMMIT marker of the
//! transaction to the group's partition, the pending offsets of that
//! producer for the partition's groups become committed (nothing more is
//! written: the records are in the log already); an ABORT marker drops
//! them (Kafka's `handleTxnCompletion`). Each committed offset remembers
//! the offset of the batch that holds it (Kafka's
//! `CommitRecordMetadataAndOffset`): a transaction's offset becomes
//! committed only if no later batch committed that partition in the
//! meantime, so the last commit in log order wins. Removing offsets (a
//! deleted group or topic) removes the pending ones too.
//!
//! Replay follows the same rules with the markers it finds: a
//! transactional record is pending for its producer, a COMMIT marker of
//! the producer applies them, an ABORT drops them; those still pending at
//! the end (a transaction open or prepared at the crash) stay pending, and
//! the transaction coordinator, which replays after the offsets, applies
//! or drops them when it writes the markers of the prepared transaction
//! (or aborts the open one). The cleaner keeps this true: aborted records
//! are removed and never supersede a commit, markers are kept, and the
//! latest record of a key is the last commit in log order. (Kafka's
//! cleaner also removes a COMMIT marker after `delete.retention.ms`; were
//! logbus's to do so, a committed transaction's surviving records would
//! replay as pending, so replay would then have to take records below the
//! last stable offset without a marker as committed.)
//!
//! ## Locks
//! `offsets` is taken after the cluster's topic table (never before it) and
//! held across the append of a commit, so commits of one cluster are
//! applied to the log and to memory in the same order. A transactional
//! commit and the completion of a transaction's offsets run under the
//! transactional id's entry lock of the transaction coordinator, which is
//! taken before any of these; the completion takes `offsets` after its
//! marker is appended (the batch offsets order the commits, not the order
//! in which they reach memory).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::cluster::offsets::{
    MAX_STRING, OFFSETS_PARTITIONS, OFFSETS_TOPIC, OffsetAndMetadata, OffsetsKey, decode_key,
    decode_value, encode_key, encode_value, partition_for_group,
};
use crate::cluster::replay::{Replayed, replay_log};
use crate::cluster::{
    CleanupPolicy, ClusterInner, NewTopic, SkippedRecord, TopicConfig, TopicState,
};
use crate::error::{Error, Result};
use crate::format::BatchBuilder;
use crate::replica::{AppendAcks, AppendOrigin, FetchBound, TopicIdPartition};
use crate::types::{Compression, TopicPartition};

type GroupOffsets = BTreeMap<TopicPartition, OffsetAndMetadata>;

/// An offset in the store and the base offset of the `__consumer_offsets`
/// batch that holds it (Kafka's `CommitRecordMetadataAndOffset`), which
/// orders commits by the log.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    meta: OffsetAndMetadata,
    batch_offset: u64,
}

/// Offsets by group, then partition.
type StoredOffsets = HashMap<String, BTreeMap<TopicPartition, Stored>>;

/// Committed offsets of every group, and those of open transactions.
#[derive(Debug, Default)]
pub(crate) struct OffsetStore {
    groups: Mutex<Offsets>,
}

/// What the [`OffsetStore`] guards (see the module docs).
#[derive(Debug, Default)]
struct Offsets {
    /// Committed offsets.
    committed: StoredOffsets,
    /// Offsets committed in transactions not ended yet, by producer id
    /// (Kafka's `pendingTransactionalOffsetCommits`).
    pending: HashMap<i64, StoredOffsets>,
}

impl Offsets {
    /// Applies a plain commit (`Some`) or tombstone (`None`) of `group`'s
    /// offset for `tp`. A tombstone also removes the offset from every
    /// pending transaction: the group's or topic's offsets were removed.
    fn apply_plain(&mut self, group: &str, tp: &TopicPartition, stored: Option<Stored>) {
        match stored {
            Some(stored) => {
                self.committed
                    .entry(group.to_string())
                    .or_default()
                    .insert(tp.clone(), stored);
            }
            None => {
                remove_offset(&mut self.committed, group, tp);
                for offsets in self.pending.values_mut() {
                    remove_offset(offsets, group, tp);
                }
                self.pending.retain(|_, offsets| !offsets.is_empty());
            }
        }
    }

    /// Holds (`Some`) or withdraws (`None`) `producer_id`'s pending offset
    /// of `group` for `tp`.
    fn apply_pending(
        &mut self,
        producer_id: i64,
        group: &str,
        tp: &TopicPartition,
        stored: Option<Stored>,
    ) {
        let offsets = self.pending.entry(producer_id).or_default();
        match stored {
            Some(stored) => {
                offsets
                    .entry(group.to_string())
                    .or_default()
                    .insert(tp.clone(), stored);
            }
            None => remove_offset(offsets, group, tp),
        }
        if offsets.is_empty() {
            self.pending.remove(&producer_id);
        }
    }

    /// Ends `producer_id`'s transaction for the groups `in_partition`
    /// accepts (those of the `__consumer_offsets` partition the marker
    /// went to): committed, its pending offsets become committed unless a
    /// later batch committed the same partition; aborted, they are
    /// dropped (Kafka's `completePendingTxnOffsetCommit`).
    fn complete(&mut self, producer_id: i64, commit: bool, in_partition: impl Fn(&str) -> bool) {
        let Some(pending) = self.pending.get_mut(&producer_id) else {
            return;
        };
        let groups: Vec<String> = pending
            .keys()
            .filter(|g| in_partition(g))
            .cloned()
            .collect();
        let mut ended = Vec::with_capacity(groups.len());
        for group in groups {
            if let Some(offsets) = pending.remove(&group) {
                ended.push((group, offsets));
            }
        }
        if pending.is_empty() {
            self.pending.remove(&producer_id);
        }
        if !commit {
            return;
        }
        for (group, offsets) in ended {
            let committed = self.committed.entry(group).or_default();
            for (tp, stored) in offsets {
                match committed.get(&tp) {
                    Some(current) if current.batch_offset > stored.batch_offset => {}
                    _ => {
                        committed.insert(tp, stored);
                    }
                }
            }
        }
    }

    /// `group`'s committed offsets.
    fn group(&self, group: &str) -> GroupOffsets {
        self.committed
            .get(group)
            .map(|o| {
                o.iter()
                    .map(|(tp, s)| (tp.clone(), s.meta.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The partitions `group` has an offset for, committed or pending.
    fn partitions_of(&self, group: &str) -> BTreeSet<TopicPartition> {
        std::iter::once(&self.committed)
            .chain(self.pending.values())
            .filter_map(|offsets| offsets.get(group))
            .flat_map(|o| o.keys().cloned())
            .collect()
    }
}

/// Removes `group`'s offset for `tp` from `offsets`, and the group with
/// its last one.
fn remove_offset(offsets: &mut StoredOffsets, group: &str, tp: &TopicPartition) {
    if let Some(o) = offsets.get_mut(group) {
        o.remove(tp);
        if o.is_empty() {
            offsets.remove(group);
        }
    }
}

/// The configs of `__consumer_offsets` (Kafka's `offsets.topic.*`
/// defaults): compacted, 100 MiB segments.
pub(crate) fn offsets_topic_config() -> TopicConfig {
    TopicConfig::new()
        .cleanup_policy(CleanupPolicy::Compact)
        .segment_bytes(100 * 1024 * 1024)
        .expect("100 MiB is a valid segment.bytes")
}

pub(crate) fn check_group(group: &str) -> Result<()> {
    if group.is_empty() {
        return Err(Error::InvalidArgument("group.id must not be empty".into()));
    }
    if group.len() > MAX_STRING {
        return Err(Error::InvalidArgument(format!(
            "group.id is longer than {MAX_STRING} bytes"
        )));
    }
    Ok(())
}

impl ClusterInner {
    /// The `__consumer_offsets` topic, created on first use with
    /// `offsets.topic.replication.factor` replicas.
    ///
    /// # Errors
    /// The retriable [`Error::CoordinatorNotAvailable`] if it has to be
    /// created while fewer brokers are live than its replication factor
    /// (Kafka's coordinator answers `COORDINATOR_NOT_AVAILABLE` then).
    pub(crate) fn offsets_topic(&self, group: &str) -> Result<Arc<TopicState>> {
        match self.topic_state(OFFSETS_TOPIC) {
            Ok(state) => Ok(state),
            Err(Error::UnknownTopicOrPartition { .. }) => {
                let topic = NewTopic::new(OFFSETS_TOPIC, OFFSETS_PARTITIONS)
                    .replication_factor(self.config.offsets_topic_replication_factor())
                    .config(offsets_topic_config());
                // Another commit may create it first.
                self.create_topic(topic, true, true).map_err(|e| match e {
                    // The factor was checked against the broker count when
                    // the config was built: this is about live brokers.
                    Error::InvalidReplicationFactor { reason, .. } => {
                        Error::CoordinatorNotAvailable {
                            group: group.to_string(),
                            reason: format!("{OFFSETS_TOPIC} cannot be created yet: {reason}"),
                        }
                    }
                    e => e,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The broker leading `group`'s `__consumer_offsets` partition (the
    /// group's coordinator, as FindCoordinator answers), creating the
    /// topic on first use as Kafka does; `None` while the partition has no
    /// leader.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an invalid group id; those of
    /// [`ClusterInner::offsets_topic`].
    #[cfg_attr(
        not(feature = "server"),
        allow(dead_code, reason = "for the wire listener")
    )]
    pub(crate) fn group_coordinator(&self, group: &str) -> Result<Option<u32>> {
        check_group(group)?;
        let topic = self.offsets_topic(group)?;
        Ok(topic.leader(partition_for_group(group, topic.partition_count())))
    }

    /// The broker leading `group`'s `__consumer_offsets` partition, without
    /// creating the topic: `None` if the topic does not exist yet,
    /// `Some(None)` while the partition has no leader.
    #[cfg_attr(
        not(feature = "server"),
        allow(dead_code, reason = "for the wire listener")
    )]
    pub(crate) fn current_group_coordinator(&self, group: &str) -> Option<Option<u32>> {
        let topic = self.topic_state(OFFSETS_TOPIC).ok()?;
        Some(topic.leader(partition_for_group(group, topic.partition_count())))
    }

    /// Replays `__consumer_offsets`, if it exists, into the offset store
    /// (transactional records and markers as the module docs say). A
    /// record it cannot read (an unknown key or value version, garbage
    /// appended by other means) is skipped and returned, as Kafka's
    /// coordinator skips what it does not understand, so one bad record
    /// never locks the user out; a damaged batch is still
    /// [`Error::Corrupt`].
    pub(crate) fn load_offsets(&self) -> Result<Vec<SkippedRecord>> {
        let Ok(topic) = self.topic_state(OFFSETS_TOPIC) else {
            return Ok(Vec::new());
        };
        let count = topic.partition_count();
        let mut groups = self.offsets.groups.lock();
        let mut skipped = Vec::new();
        for p in 0..count {
            let key = topic.key(p)?;
            let replicas = self.replicas_for(&key)?;
            let offsets = replicas.offsets(&key)?;
            let mut bad = Vec::new();
            replay_log(
                Path::new(&format!("{OFFSETS_TOPIC}-{p}")),
                offsets.log_start,
                offsets.high_watermark,
                |offset| {
                    let fetched =
                        replicas.fetch(&key, offset, 1 << 20, FetchBound::HighWatermark)?;
                    Ok(fetched.records().clone())
                },
                |entry| match entry {
                    Replayed::Record {
                        batch_offset,
                        txn_producer,
                        key,
                        value,
                        ..
                    } => apply(&mut groups, batch_offset, txn_producer, key, value),
                    Replayed::Marker {
                        producer_id,
                        commit,
                        ..
                    } => {
                        groups
                            .complete(producer_id, commit, |g| partition_for_group(g, count) == p);
                        Ok(())
                    }
                },
                Some(&mut bad),
            )?;
            skipped.extend(bad.into_iter().map(|(offset, reason)| SkippedRecord {
                partition: TopicPartition::new(OFFSETS_TOPIC, p),
                offset,
                reason,
            }));
        }
        Ok(skipped)
    }

    /// Commits `offsets` for `group`: one batch, appended to the group's
    /// `__consumer_offsets` partition, then applied in memory.
    pub(crate) fn commit_offsets(
        &self,
        group: &str,
        offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>,
    ) -> Result<()> {
        check_group(group)?;
        if offsets.is_empty() {
            return Ok(());
        }
        self.check_commit_offsets(offsets)?;
        let topic = self.offsets_topic(group)?;
        self.append_commit(&topic, group, offsets, None)
    }

    /// Kafka's `TxnOffsetCommit` in the group coordinator: appends
    /// `offsets` of `group` to its `__consumer_offsets` partition as a
    /// transactional batch of `producer_id` at `producer_epoch`, held
    /// pending until the transaction's marker is written there (see
    /// [`ClusterInner::complete_txn_offsets`]). The caller checked the
    /// offsets and that the partition is in the producer's open
    /// transaction.
    pub(crate) fn commit_txn_offsets(
        &self,
        group: &str,
        producer_id: i64,
        producer_epoch: i16,
        offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>,
    ) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let topic = self.topic_state(OFFSETS_TOPIC)?;
        self.append_commit(&topic, group, offsets, Some((producer_id, producer_epoch)))
    }

    /// Appends one batch of `group`'s `offsets` (stamped with the clock's
    /// now) and applies it in memory: committed, or pending for the
    /// producer of `txn`.
    fn append_commit(
        &self,
        topic: &TopicState,
        group: &str,
        offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>,
        txn: Option<(i64, i16)>,
    ) -> Result<()> {
        let key = topic.key(partition_for_group(group, topic.partition_count()))?;
        let now = self.clock().now_ms();
        let stamped: Vec<(TopicPartition, OffsetAndMetadata)> = offsets
            .iter()
            .map(|(tp, meta)| {
                let mut meta = meta.clone();
                meta.commit_timestamp = now;
                (tp.clone(), meta)
            })
            .collect();
        let mut builder = BatchBuilder::new(Compression::None);
        if let Some((producer_id, epoch)) = txn {
            // Kafka's coordinator writes sequence 0 and is not checked
            // for it (`AppendOrigin.COORDINATOR`).
            builder = builder.producer(producer_id, epoch, 0).transactional(true);
        }
        for (tp, meta) in &stamped {
            builder.append(
                now,
                Some(&encode_key(group, tp)),
                Some(&encode_value(meta)),
                &[],
            );
        }
        let origin = if txn.is_some() {
            AppendOrigin::Coordinator
        } else {
            AppendOrigin::TrustedKeyed
        };
        let mut groups = self.offsets.groups.lock();
        let batch_offset = self.append_offsets_batch(&key, builder, origin)?;
        for (tp, meta) in stamped {
            let stored = Some(Stored { meta, batch_offset });
            match txn {
                Some((producer_id, _)) => groups.apply_pending(producer_id, group, &tp, stored),
                None => groups.apply_plain(group, &tp, stored),
            }
        }
        Ok(())
    }

    /// The transaction of `producer_id` ended (`commit` or not) on the
    /// `__consumer_offsets` partition `partition`, whose marker was just
    /// written (Kafka's `scheduleHandleTxnCompletion`): its pending
    /// offsets of that partition's groups become committed, or are
    /// dropped.
    pub(crate) fn complete_txn_offsets(&self, partition: u32, producer_id: i64, commit: bool) {
        let Ok(topic) = self.topic_state(OFFSETS_TOPIC) else {
            return;
        };
        let count = topic.partition_count();
        self.offsets
            .groups
            .lock()
            .complete(producer_id, commit, |g| {
                partition_for_group(g, count) == partition
            });
    }

    /// Checks offsets to commit: their partitions exist, and each offset,
    /// leader epoch and metadata fits Kafka's stored layout.
    pub(crate) fn check_commit_offsets(
        &self,
        offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>,
    ) -> Result<()> {
        for (tp, meta) in offsets {
            self.partition_key(tp)?;
            // Kafka's offsets are signed 64-bit, and so is the stored
            // layout: a larger one would come back negative and be skipped.
            if i64::try_from(meta.offset).is_err() {
                return Err(Error::InvalidArgument(format!(
                    "the committed offset {} for {tp} is above the largest offset {}",
                    meta.offset,
                    i64::MAX
                )));
            }
            // Stored as -1 for "unknown"; a negative epoch would come back
            // as `None`.
            if let Some(epoch) = meta.leader_epoch.filter(|e| *e < 0) {
                return Err(Error::InvalidArgument(format!(
                    "the leader epoch {epoch} committed for {tp} is negative"
                )));
            }
            if meta.metadata.len() > MAX_STRING {
                return Err(Error::InvalidArgument(format!(
                    "offset metadata for {tp} is longer than {MAX_STRING} bytes"
                )));
            }
        }
        Ok(())
    }

    /// Appends a batch of commits or tombstones to a `__consumer_offsets`
    /// partition, through its leader, acknowledged by every in-sync
    /// replica. Returns the batch's base offset.
    fn append_offsets_batch(
        &self,
        key: &TopicIdPartition,
        builder: BatchBuilder,
        origin: AppendOrigin,
    ) -> Result<u64> {
        self.check_writable("writing group offsets")?;
        let info = self.replicas_for(key)?.append(
            key,
            &mut builder.build()?.to_vec(),
            origin,
            AppendAcks::All,
        )?;
        Ok(info.first_offset())
    }

    /// Commits `offsets` for `group` on behalf of `member` (its id and
    /// generation), or as a consumer outside the group's membership
    /// (`None`, allowed only while the group has no members). The
    /// coordinator's checks and the append happen under the group's lock.
    pub(crate) fn commit_offsets_as(
        &self,
        group: &str,
        member: Option<(&str, i32)>,
        offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>,
    ) -> Result<()> {
        check_group(group)?;
        self.check_open()?;
        let now = self.clock().now_ms();
        self.groups
            .commit(group, member, now, || self.commit_offsets(group, offsets))
    }

    /// Removes `group`'s offsets (all of them, or those of `only_topic`),
    /// committed and pending in transactions, by writing tombstones.
    /// Returns how many partitions' offsets were removed.
    pub(crate) fn delete_offsets(&self, group: &str, only_topic: Option<&str>) -> Result<usize> {
        check_group(group)?;
        let mut groups = self.offsets.groups.lock();
        let doomed: Vec<TopicPartition> = groups
            .partitions_of(group)
            .into_iter()
            .filter(|tp| only_topic.is_none_or(|t| tp.topic == t))
            .collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        let topic = self.topic_state(OFFSETS_TOPIC)?;
        let key = topic.key(partition_for_group(group, topic.partition_count()))?;
        let now = self.clock().now_ms();
        let mut builder = BatchBuilder::new(Compression::None);
        for tp in &doomed {
            builder.append(now, Some(&encode_key(group, tp)), None, &[]);
        }
        self.append_offsets_batch(&key, builder, AppendOrigin::TrustedKeyed)?;
        for tp in &doomed {
            groups.apply_plain(group, tp, None);
        }
        Ok(doomed.len())
    }

    /// Every committed offset of `group`.
    pub(crate) fn group_offsets(&self, group: &str) -> Result<GroupOffsets> {
        check_group(group)?;
        self.check_open()?;
        // The offsets of every transaction whose commit was answered.
        self.complete_answered_txns();
        Ok(self.offsets.groups.lock().group(group))
    }

    /// Whether an open transaction holds an offset of `group` for `tp`
    /// not committed yet (Kafka's `hasPendingOffsetCommitsForTopicPartition`,
    /// behind OffsetFetch's `require_stable`).
    #[cfg_attr(
        not(feature = "server"),
        allow(dead_code, reason = "for the wire listener")
    )]
    pub(crate) fn has_pending_offset(&self, group: &str, tp: &TopicPartition) -> bool {
        self.offsets
            .groups
            .lock()
            .pending
            .values()
            .any(|offsets| offsets.get(group).is_some_and(|o| o.contains_key(tp)))
    }

    /// Every group with committed offsets, sorted.
    pub(crate) fn groups(&self) -> Vec<String> {
        let mut groups: Vec<String> = self
            .offsets
            .groups
            .lock()
            .committed
            .keys()
            .cloned()
            .collect();
        groups.sort();
        groups
    }

    /// Groups with offsets for `topic`, committed or pending in a
    /// transaction.
    pub(crate) fn groups_with_offsets_for(&self, topic: &str) -> Vec<String> {
        let groups = self.offsets.groups.lock();
        let mut found: BTreeSet<String> = BTreeSet::new();
        for offsets in std::iter::once(&groups.committed).chain(groups.pending.values()) {
            found.extend(
                offsets
                    .iter()
                    .filter(|(_, o)| o.keys().any(|tp| tp.topic == topic))
                    .map(|(g, _)| g.clone()),
            );
        }
        found.into_iter().collect()
    }
}

/// Applies one `__consumer_offsets` record of the batch at `batch_offset`
/// (transactional for `txn_producer`) to the in-memory state.
fn apply(
    groups: &mut Offsets,
    batch_offset: u64,
    txn_producer: Option<i64>,
    key: Option<&bytes::Bytes>,
    value: Option<&bytes::Bytes>,
) -> std::result::Result<(), String> {
    let key = key.ok_or("a record without a key")?;
    let OffsetsKey::Commit { group, partition } = decode_key(key)? else {
        return Ok(());
    };
    let stored = match value {
        Some(value) => Some(Stored {
            meta: decode_value(value)?,
            batch_offset,
        }),
        None => None,
    };
    match txn_producer {
        Some(producer_id) => groups.apply_pending(producer_id, &group, &partition, stored),
        None => groups.apply_plain(&group, &partition, stored),
    }
    Ok(())
}
