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
//! ## Locks
//! `offsets` is taken after the cluster's topic table (never before it) and
//! held across the append of a commit, so commits of one cluster are
//! applied to the log and to memory in the same order.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::cluster::offsets::{
    MAX_STRING, OFFSETS_PARTITIONS, OFFSETS_TOPIC, OffsetAndMetadata, OffsetsKey, decode_key,
    decode_value, encode_key, encode_value, partition_for_group,
};
use crate::cluster::replay::replay_records;
use crate::cluster::{
    CleanupPolicy, ClusterInner, NewTopic, SkippedRecord, TopicConfig, TopicState,
};
use crate::error::{Error, Result};
use crate::format::BatchBuilder;
use crate::replica::{AppendAcks, AppendOrigin, FetchBound, TopicIdPartition};
use crate::types::{Compression, TopicPartition};

type GroupOffsets = BTreeMap<TopicPartition, OffsetAndMetadata>;

/// Committed offsets of every group.
#[derive(Debug, Default)]
pub(crate) struct OffsetStore {
    groups: Mutex<HashMap<String, GroupOffsets>>,
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

    /// Replays `__consumer_offsets`, if it exists, into the offset store.
    /// A record it cannot read (an unknown key or value version, garbage
    /// appended by other means) is skipped and returned, as Kafka's
    /// coordinator skips what it does not understand, so one bad record
    /// never locks the user out; a damaged batch is still
    /// [`Error::Corrupt`].
    pub(crate) fn load_offsets(&self) -> Result<Vec<SkippedRecord>> {
        let Ok(topic) = self.topic_state(OFFSETS_TOPIC) else {
            return Ok(Vec::new());
        };
        let mut groups = self.offsets.groups.lock();
        let mut skipped = Vec::new();
        for p in 0..topic.partition_count() {
            let key = topic.key(p)?;
            let replicas = self.replicas_for(&key)?;
            let offsets = replicas.offsets(&key)?;
            let mut bad = Vec::new();
            replay_records(
                Path::new(&format!("{OFFSETS_TOPIC}-{p}")),
                offsets.log_start,
                offsets.high_watermark,
                |offset| {
                    let fetched =
                        replicas.fetch(&key, offset, 1 << 20, FetchBound::HighWatermark)?;
                    Ok(fetched.records().clone())
                },
                |_, key, value| apply(&mut groups, key, value),
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
        for (tp, meta) in &stamped {
            builder.append(
                now,
                Some(&encode_key(group, tp)),
                Some(&encode_value(meta)),
                &[],
            );
        }
        let mut groups = self.offsets.groups.lock();
        self.append_offsets_batch(&key, builder)?;
        groups.entry(group.to_string()).or_default().extend(stamped);
        Ok(())
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
    /// partition, through its leader, acknowledged by every in-sync replica.
    fn append_offsets_batch(&self, key: &TopicIdPartition, builder: BatchBuilder) -> Result<()> {
        self.replicas_for(key)?.append(
            key,
            &mut builder.build()?.to_vec(),
            AppendOrigin::Trusted,
            AppendAcks::All,
        )?;
        Ok(())
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

    /// Removes `group`'s committed offsets (all of them, or those of
    /// `only_topic`) by writing tombstones. Returns how many were removed.
    pub(crate) fn delete_offsets(&self, group: &str, only_topic: Option<&str>) -> Result<usize> {
        check_group(group)?;
        let mut groups = self.offsets.groups.lock();
        let doomed: Vec<TopicPartition> = groups
            .get(group)
            .map(|o| {
                o.keys()
                    .filter(|tp| only_topic.is_none_or(|t| tp.topic == t))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
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
        self.append_offsets_batch(&key, builder)?;
        if let Some(offsets) = groups.get_mut(group) {
            for tp in &doomed {
                offsets.remove(tp);
            }
            if offsets.is_empty() {
                groups.remove(group);
            }
        }
        Ok(doomed.len())
    }

    /// Every committed offset of `group`.
    pub(crate) fn group_offsets(&self, group: &str) -> Result<GroupOffsets> {
        check_group(group)?;
        self.check_open()?;
        Ok(self
            .offsets
            .groups
            .lock()
            .get(group)
            .cloned()
            .unwrap_or_default())
    }

    /// Every group with committed offsets, sorted.
    pub(crate) fn groups(&self) -> Vec<String> {
        let mut groups: Vec<String> = self.offsets.groups.lock().keys().cloned().collect();
        groups.sort();
        groups
    }

    /// Groups with committed offsets for `topic`.
    pub(crate) fn groups_with_offsets_for(&self, topic: &str) -> Vec<String> {
        self.offsets
            .groups
            .lock()
            .iter()
            .filter(|(_, o)| o.keys().any(|tp| tp.topic == topic))
            .map(|(g, _)| g.clone())
            .collect()
    }
}

/// Applies one `__consumer_offsets` record to the in-memory state.
fn apply(
    groups: &mut HashMap<String, GroupOffsets>,
    key: Option<&bytes::Bytes>,
    value: Option<&bytes::Bytes>,
) -> std::result::Result<(), String> {
    let key = key.ok_or("a record without a key")?;
    let OffsetsKey::Commit { group, partition } = decode_key(key)? else {
        return Ok(());
    };
    match value {
        Some(value) => {
            let meta = decode_value(value)?;
            groups.entry(group).or_default().insert(partition, meta);
        }
        None => {
            if let Some(offsets) = groups.get_mut(&group) {
                offsets.remove(&partition);
                if offsets.is_empty() {
                    groups.remove(&group);
                }
            }
        }
    }
    Ok(())
}
