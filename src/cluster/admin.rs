//! Kafka's AdminClient calls for consumer groups, as methods on
//! [`Cluster`]: list and describe groups (with their lag), read, change and
//! reset their committed offsets, delete them; and the partition filters
//! of `kafka-topics --describe` (under-replicated, under or at the minimum
//! ISR, unavailable).
//!
//! Changes to a group's offsets go through the coordinator's
//! `while_empty`, so they are refused while the group has members (whose
//! own commits would overwrite them), as Kafka's `GroupNotEmptyException`;
//! the check and the commit happen under the coordinator's lock, so no
//! member can join in between.

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::{Cluster, GroupState, OffsetAndMetadata};
use crate::error::{Error, Result};
use crate::replica::LeaderAndIsr;
use crate::types::TopicPartition;

/// What [`Cluster::describe_group`] reports: Kafka's
/// `ConsumerGroupDescription`, with the committed offsets and lag that
/// `kafka-consumer-groups --describe` prints.
///
/// ```
/// use std::collections::BTreeMap;
/// use logbus::format::BatchBuilder;
/// use logbus::{
///     Cluster, ClusterConfig, Compression, GroupState, NewTopic, OffsetAndMetadata,
///     TopicPartition,
/// };
/// let dir = tempfile::tempdir()?;
/// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
/// let partition = cluster.create_topic(NewTopic::new("orders", 1))?.partition(0)?;
/// let mut batch = BatchBuilder::new(Compression::None);
/// for i in 0..10 {
///     batch.append(1_700_000_000_000 + i, None, Some(b"order"), &[]);
/// }
/// partition.append(&mut batch.build()?.to_vec())?;
/// let tp = TopicPartition::new("orders", 0);
/// cluster.alter_group_offsets("billing", &BTreeMap::from([(tp, OffsetAndMetadata::new(4))]))?;
///
/// let billing = cluster.describe_group("billing")?;
/// assert_eq!(billing.state, GroupState::Empty); // offsets, no members
/// assert!(billing.members.is_empty());
/// let lag = &billing.offsets[0];
/// assert_eq!((lag.log_end_offset, lag.lag), (10, Some(6)));
/// assert_eq!(cluster.describe_group("nobody")?.state, GroupState::Dead);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupDescription {
    /// The group id.
    pub group_id: String,
    /// The group's state: [`GroupState::Empty`] for a group with committed
    /// offsets but no members, [`GroupState::Dead`] for one with neither.
    pub state: GroupState,
    /// `"consumer"` while the group has members, `""` otherwise.
    pub protocol_type: String,
    /// The assignor the members agreed on; as Kafka reports it, only while
    /// the group is [`GroupState::Stable`].
    pub assignor: Option<String>,
    /// The current generation; 0 for a group without members.
    pub generation: i32,
    /// The members, by member id.
    pub members: Vec<MemberDescription>,
    /// Every partition that is assigned to a member or has a committed
    /// offset, sorted; partitions of topics deleted meanwhile are left out.
    pub offsets: Vec<PartitionLag>,
}

/// One member in a [`GroupDescription`] (Kafka's `MemberDescription`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberDescription {
    /// The id the coordinator gave the member.
    pub member_id: String,
    /// Its `group.instance.id` if it is a static member.
    pub group_instance_id: Option<String>,
    /// Its `client.id`.
    pub client_id: String,
    /// Its partitions; as Kafka reports them, only while the group is
    /// [`GroupState::Stable`] (empty during a rebalance).
    pub assignment: Vec<TopicPartition>,
}

/// A partition's committed offset and lag in a [`GroupDescription`]: a row
/// of `kafka-consumer-groups --describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionLag {
    /// The partition.
    pub partition: TopicPartition,
    /// The group's committed offset, if any.
    pub committed: Option<OffsetAndMetadata>,
    /// The partition's log end offset as consumers see it (the high
    /// watermark).
    pub log_end_offset: u64,
    /// Records the group has yet to consume: `log_end_offset` minus the
    /// committed offset, at least 0; `None` without a committed offset.
    pub lag: Option<u64>,
}

/// Where [`Cluster::reset_group_offsets`] moves a group's offsets: the
/// `--to-*` options of `kafka-consumer-groups --reset-offsets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OffsetSpec {
    /// The log start offset (`--to-earliest`).
    Earliest,
    /// The high watermark: nothing left to consume (`--to-latest`).
    Latest,
    /// This offset, moved into [log start offset, high watermark] if it is
    /// outside, as Kafka's tool does (`--to-offset`).
    Offset(u64),
    /// The first record whose timestamp is at or after this time (ms since
    /// the Unix epoch), or the high watermark if there is none
    /// (`--to-datetime`).
    Timestamp(i64),
    /// The group's committed offset moved by this many records (negative:
    /// back), then into [log start offset, high watermark]
    /// (`--shift-by`). A partition the group has no committed offset for
    /// is an [`Error::InvalidArgument`].
    ShiftBy(i64),
}

impl Cluster {
    /// Sets committed offsets of consumer group `group` (Kafka's
    /// `alterConsumerGroupOffsets`): the group's consumers resume from them.
    /// The commit is one record batch in `__consumer_offsets` (created on
    /// first use, 50 partitions), so it is applied whole or not at all; it
    /// is as durable as that topic's flush policy (page cache by default).
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use logbus::{Cluster, ClusterConfig, NewTopic, OffsetAndMetadata, TopicPartition};
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    /// cluster.create_topic(NewTopic::new("orders", 2))?;
    /// let tp = TopicPartition::new("orders", 1);
    /// let offsets = BTreeMap::from([(tp.clone(), OffsetAndMetadata::new(42))]);
    /// cluster.alter_group_offsets("billing", &offsets)?;
    /// assert_eq!(cluster.list_group_offsets("billing")?[&tp].offset, 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ReadOnly`](crate::Error::ReadOnly) on a cluster opened with
    /// [`Cluster::open_read_only`](crate::Cluster::open_read_only) (nothing changes);
    /// [`Error::GroupNotEmpty`] while the group has active members (their
    /// positions would overwrite the change); [`Error::InvalidArgument`]
    /// for an empty group id, over-long strings, an offset above
    /// `i64::MAX` (Kafka's offsets are signed 64-bit) or a negative leader
    /// epoch;
    /// [`Error::UnknownTopicOrPartition`] for a partition that does not
    /// exist; nothing is committed then.
    pub fn alter_group_offsets(
        &self,
        group: &str,
        offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>,
    ) -> Result<()> {
        let now = self.inner.clock().now_ms();
        self.inner
            .groups
            .while_empty(group, now, || self.inner.commit_offsets(group, offsets))
    }

    /// Every committed offset of `group` (Kafka's
    /// `listConsumerGroupOffsets`); empty for an unknown group.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty group id.
    pub fn list_group_offsets(
        &self,
        group: &str,
    ) -> Result<BTreeMap<TopicPartition, OffsetAndMetadata>> {
        self.inner.group_offsets(group)
    }

    /// Groups that have members or committed offsets, sorted (Kafka's
    /// `listConsumerGroups`).
    #[must_use]
    pub fn list_groups(&self) -> Vec<String> {
        let now = self.inner.clock().now_ms();
        let mut groups = self.inner.groups();
        groups.extend(self.inner.groups.active_groups(now));
        groups.sort();
        groups.dedup();
        groups
    }

    /// A group's state, members, and committed offsets with their lag
    /// (Kafka's `describeConsumerGroups` with `listConsumerGroupOffsets`,
    /// as `kafka-consumer-groups --describe` shows them). See
    /// [`GroupDescription`] for an example.
    ///
    /// The state reflects the cluster's clock: members whose session has
    /// timed out are gone. A partition whose leader is moving is asked
    /// again after each metadata change (for up to 60 s of the cluster's
    /// clock), as the consumer's offset lookups do.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty group id; [`Error::Closed`];
    /// [`Error::Io`] or [`Error::Corrupt`] if a partition's offsets cannot
    /// be read.
    pub fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let committed = self.inner.group_offsets(group)?;
        let now = self.inner.clock().now_ms();
        let snapshot = self.inner.groups.snapshot(group, now);
        let state = match &snapshot {
            Some(s) => s.state,
            None if committed.is_empty() => GroupState::Dead,
            None => GroupState::Empty,
        };
        let stable = state == GroupState::Stable;
        let members: Vec<MemberDescription> = snapshot
            .iter()
            .flat_map(|s| &s.members)
            .map(|m| MemberDescription {
                member_id: m.member_id.clone(),
                group_instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                assignment: if stable {
                    m.assignment.clone()
                } else {
                    Vec::new()
                },
            })
            .collect();
        let partitions: BTreeSet<&TopicPartition> = members
            .iter()
            .flat_map(|m| &m.assignment)
            .chain(committed.keys())
            .collect();
        let mut offsets = Vec::with_capacity(partitions.len());
        for tp in partitions {
            // A leader moving meanwhile is waited out, not reported.
            let found = self.inner.retry_while_leader_moves(|| {
                let key = self.inner.partition_key(tp)?;
                self.inner.replicas_for(&key)?.offsets(&key)
            });
            let log_end_offset = match found {
                Ok(o) => o.high_watermark,
                Err(Error::UnknownTopicOrPartition { .. }) => continue,
                Err(e) => return Err(e),
            };
            let committed = committed.get(tp).cloned();
            offsets.push(PartitionLag {
                partition: tp.clone(),
                lag: committed
                    .as_ref()
                    .map(|c| log_end_offset.saturating_sub(c.offset)),
                committed,
                log_end_offset,
            });
        }
        Ok(GroupDescription {
            group_id: group.to_string(),
            state,
            protocol_type: if members.is_empty() { "" } else { "consumer" }.to_string(),
            assignor: snapshot
                .as_ref()
                .filter(|_| stable)
                .and_then(|s| s.protocol.clone()),
            generation: snapshot.as_ref().map_or(0, |s| s.generation),
            members,
            offsets,
        })
    }

    /// Moves `group`'s committed offsets for `partitions` to `to`, as
    /// `kafka-consumer-groups --reset-offsets --execute` does; returns the
    /// new offsets. An empty `partitions` means every partition the group
    /// has a committed offset for. The new offsets are one commit (one
    /// batch in `__consumer_offsets`), with no metadata: all or nothing.
    ///
    /// ```
    /// use logbus::format::BatchBuilder;
    /// use logbus::{Cluster, ClusterConfig, Compression, NewTopic, OffsetSpec, TopicPartition};
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    /// let partition = cluster.create_topic(NewTopic::new("orders", 1))?.partition(0)?;
    /// let mut batch = BatchBuilder::new(Compression::None);
    /// for ts in [1_000, 2_000, 3_000] {
    ///     batch.append(ts, None, Some(b"order"), &[]);
    /// }
    /// partition.append(&mut batch.build()?.to_vec())?;
    /// let tp = TopicPartition::new("orders", 0);
    /// let reset = cluster.reset_group_offsets("billing", &[tp.clone()], OffsetSpec::Latest)?;
    /// assert_eq!(reset[&tp], 3);
    /// // Replay from the first record at or after t = 1 500 ms.
    /// let reset = cluster.reset_group_offsets("billing", &[], OffsetSpec::Timestamp(1_500))?;
    /// assert_eq!(reset[&tp], 1);
    /// assert_eq!(cluster.list_group_offsets("billing")?[&tp].offset, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ReadOnly`](crate::Error::ReadOnly) on a cluster opened with
    /// [`Cluster::open_read_only`](crate::Cluster::open_read_only) (nothing changes);
    /// [`Error::GroupNotEmpty`] while the group has members (they must
    /// leave, or time out, first); [`Error::InvalidArgument`] for an empty
    /// group id, a negative timestamp, or [`OffsetSpec::ShiftBy`] for a
    /// partition without a committed offset;
    /// [`Error::UnknownTopicOrPartition`] for a partition that does not
    /// exist; [`Error::Closed`]. Nothing is committed in any of these cases.
    pub fn reset_group_offsets(
        &self,
        group: &str,
        partitions: &[TopicPartition],
        to: OffsetSpec,
    ) -> Result<BTreeMap<TopicPartition, u64>> {
        self.inner.check_open()?;
        check_reset(group, to)?;
        let now = self.inner.clock().now_ms();
        self.inner.groups.while_empty(group, now, || {
            let reset = self.planned_offsets(group, partitions, to)?;
            let commit = reset
                .iter()
                .map(|(tp, &offset)| (tp.clone(), OffsetAndMetadata::new(offset)))
                .collect();
            self.inner.commit_offsets(group, &commit)?;
            Ok(reset)
        })
    }

    /// The offsets [`Cluster::reset_group_offsets`] would commit now, with
    /// nothing committed: `kafka-consumer-groups --reset-offsets
    /// --dry-run`. It also answers while the group has members (a reset
    /// would then be refused), and on a cluster opened read-only.
    ///
    /// ```
    /// use logbus::{Cluster, ClusterConfig, NewTopic, OffsetSpec, TopicPartition};
    /// use std::collections::BTreeMap;
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    /// let partition = cluster.create_topic(NewTopic::new("orders", 1))?.partition(0)?;
    /// let mut batch = logbus::format::BatchBuilder::new(logbus::Compression::None);
    /// for _ in 0..5 {
    ///     batch.append(0, None, Some(b"order"), &[]);
    /// }
    /// partition.append(&mut batch.build()?.to_vec())?;
    /// let tp = TopicPartition::new("orders", 0);
    /// let commit = BTreeMap::from([(tp.clone(), logbus::OffsetAndMetadata::new(4))]);
    /// cluster.alter_group_offsets("billing", &commit)?;
    /// // Two records back, shown but not committed.
    /// let plan = cluster.reset_group_offsets_dry_run("billing", &[], OffsetSpec::ShiftBy(-2))?;
    /// assert_eq!(plan[&tp], 2);
    /// assert_eq!(cluster.list_group_offsets("billing")?[&tp].offset, 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`Cluster::reset_group_offsets`], but never
    /// [`Error::GroupNotEmpty`] or [`Error::ReadOnly`](crate::Error::ReadOnly).
    pub fn reset_group_offsets_dry_run(
        &self,
        group: &str,
        partitions: &[TopicPartition],
        to: OffsetSpec,
    ) -> Result<BTreeMap<TopicPartition, u64>> {
        self.inner.check_open()?;
        check_reset(group, to)?;
        self.planned_offsets(group, partitions, to)
    }

    /// Where `to` moves each of `partitions` (every partition with a
    /// committed offset if empty).
    fn planned_offsets(
        &self,
        group: &str,
        partitions: &[TopicPartition],
        to: OffsetSpec,
    ) -> Result<BTreeMap<TopicPartition, u64>> {
        let committed = self.inner.group_offsets(group)?;
        let targets: BTreeSet<TopicPartition> = if partitions.is_empty() {
            committed.keys().cloned().collect()
        } else {
            partitions.iter().cloned().collect()
        };
        let mut reset = BTreeMap::new();
        for tp in targets {
            let current = committed.get(&tp).map(|c| c.offset);
            let offset = self.reset_offset(group, &tp, to, current)?;
            reset.insert(tp, offset);
        }
        Ok(reset)
    }

    /// Deletes `group`'s committed offsets (tombstones in
    /// `__consumer_offsets`); returns how many were removed.
    ///
    /// # Errors
    /// [`Error::ReadOnly`](crate::Error::ReadOnly) on a cluster opened with
    /// [`Cluster::open_read_only`](crate::Cluster::open_read_only) (nothing changes);
    /// [`Error::GroupNotEmpty`] while the group has active members;
    /// [`Error::InvalidArgument`] for an empty group id.
    pub fn delete_group(&self, group: &str) -> Result<usize> {
        self.inner.check_open()?;
        let now = self.inner.clock().now_ms();
        self.inner
            .groups
            .delete_if_empty(group, now, || self.inner.delete_offsets(group, None))
    }

    /// Where `to` puts a consumer of `tp` whose group committed `current`,
    /// within [log start, high watermark].
    fn reset_offset(
        &self,
        group: &str,
        tp: &TopicPartition,
        to: OffsetSpec,
        current: Option<u64>,
    ) -> Result<u64> {
        let key = self.inner.partition_key(tp)?;
        let replicas = self.inner.replicas_for(&key)?;
        let offsets = replicas.offsets(&key)?;
        let (start, end) = (offsets.log_start, offsets.high_watermark);
        let offset = match to {
            OffsetSpec::Earliest => start,
            OffsetSpec::Latest => end,
            OffsetSpec::Offset(offset) => offset,
            OffsetSpec::Timestamp(ts) => replicas
                .offset_for_timestamp(&key, ts)?
                .map_or(end, |f| f.offset),
            OffsetSpec::ShiftBy(delta) => {
                let current = current.ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "cannot shift {tp}: group {group} has no committed offset for it"
                    ))
                })?;
                current.saturating_add_signed(delta)
            }
        };
        Ok(offset.max(start).min(end))
    }
}

/// Refuses what no reset of `group` can do: an empty group id (checked
/// again by the offset store) or a negative time.
fn check_reset(group: &str, to: OffsetSpec) -> Result<()> {
    if let OffsetSpec::Timestamp(ts) = to
        && ts < 0
    {
        return Err(Error::InvalidArgument(format!(
            "the reset time for group {group} is negative ({ts})"
        )));
    }
    Ok(())
}

/// Kafka's `kafka-topics --describe` filters, as lists of partitions.
impl Cluster {
    /// The partitions whose ISR is smaller than their replica list (some
    /// replica is not caught up with the leader, or its broker is down):
    /// Kafka's `kafka-topics --describe --under-replicated-partitions`.
    /// Every topic, internal ones included, sorted by topic then partition;
    /// read from the cluster's metadata (no partition is asked).
    ///
    /// ```
    /// use logbus::{Cluster, ClusterConfig, NewTopic};
    /// let dir = tempfile::tempdir()?;
    /// let config = ClusterConfig::builder().brokers(3).build()?;
    /// let cluster = Cluster::open(dir.path(), config)?;
    /// cluster.create_topic(NewTopic::new("orders", 3).replication_factor(3))?;
    /// // Every replica of a new partition is in sync.
    /// assert!(cluster.under_replicated_partitions()?.is_empty());
    /// assert!(cluster.under_min_isr_partitions()?.is_empty());
    /// assert!(cluster.unavailable_partitions()?.is_empty());
    /// assert_eq!(cluster.at_min_isr_partitions()?.len(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Closed`] once the cluster is closed.
    pub fn under_replicated_partitions(&self) -> Result<Vec<TopicPartition>> {
        self.partitions_where(|p, _, _| p.isr.len() < p.replicas.len())
    }

    /// The partitions whose ISR is smaller than their topic's
    /// `min.insync.replicas`, or that have no leader: `acks=all` produces
    /// to them fail with
    /// [`Error::NotEnoughReplicas`](crate::Error::NotEnoughReplicas) (Kafka's
    /// `--under-min-isr-partitions`). Sorted as
    /// [`Cluster::under_replicated_partitions`].
    ///
    /// # Errors
    /// [`Error::Closed`] once the cluster is closed.
    pub fn under_min_isr_partitions(&self) -> Result<Vec<TopicPartition>> {
        self.partitions_where(|p, min_isr, _| p.leader.is_none() || (p.isr.len() as u64) < min_isr)
    }

    /// The partitions with a leader whose ISR has exactly
    /// `min.insync.replicas` members (Kafka's `--at-min-isr-partitions`):
    /// one more replica falling behind stops `acks=all` produces to them.
    /// Sorted as
    /// [`Cluster::under_replicated_partitions`].
    ///
    /// # Errors
    /// [`Error::Closed`] once the cluster is closed.
    pub fn at_min_isr_partitions(&self) -> Result<Vec<TopicPartition>> {
        self.partitions_where(|p, min_isr, _| p.leader.is_some() && p.isr.len() as u64 == min_isr)
    }

    /// The partitions no live broker leads: without a leader (every
    /// in-sync replica's broker is down and unclean election is off), or
    /// led by a fenced broker (Kafka's `--unavailable-partitions`). Their
    /// reads and writes fail with
    /// [`Error::LeaderNotAvailable`](crate::Error::LeaderNotAvailable)
    /// (retriable) until a leader is elected. Sorted as
    /// [`Cluster::under_replicated_partitions`].
    ///
    /// # Errors
    /// [`Error::Closed`] once the cluster is closed.
    pub fn unavailable_partitions(&self) -> Result<Vec<TopicPartition>> {
        self.partitions_where(|p, _, fenced| p.leader.is_none_or(fenced))
    }

    /// Moves a partition's replicas to the brokers `replicas` (the first
    /// one its preferred leader) while it stays online, as Kafka's
    /// `alterPartitionReassignments`: the new replicas are created empty
    /// and copy the leader's log; once every one of them is in the ISR, the
    /// partition's replicas become exactly `replicas` — a leader not among
    /// them hands over to the first one (leader epoch + 1) — and the
    /// dropped replicas are deleted from their brokers. Returns once the
    /// reassignment started (or, if every target replica is already in the
    /// ISR, completed); [`Cluster::list_partition_reassignments`] shows
    /// those under way. A new reassignment of the same partition replaces
    /// the target.
    ///
    /// The target is persisted (the metadata log's `PartitionChange`
    /// records carry the adding and removing replicas, as KRaft's do): a
    /// cluster closed or crashed in between reopens with the reassignment
    /// under way and completes it by itself once the target replicas
    /// are in sync.
    ///
    /// ```
    /// use logbus::{Cluster, ClusterConfig, NewTopic, TopicPartition};
    /// let dir = tempfile::tempdir()?;
    /// let config = ClusterConfig::builder().brokers(3).build()?;
    /// let cluster = Cluster::open(dir.path(), config)?;
    /// let topic = cluster.create_topic(NewTopic::new("orders", 1).replication_factor(2))?;
    /// let before = topic.describe()?.partitions[0].replicas.clone();
    /// // Drop the preferred leader: the other replica is in sync, so this
    /// // completes at once and leadership moves.
    /// cluster.reassign_partition(&TopicPartition::new("orders", 0), &before[1..])?;
    /// let after = &topic.describe()?.partitions[0];
    /// assert_eq!((after.replicas.clone(), after.leader), (before[1..].to_vec(), Some(before[1])));
    /// assert!(cluster.list_partition_reassignments().is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ReadOnly`](crate::Error::ReadOnly) on a cluster opened with
    /// [`Cluster::open_read_only`](crate::Cluster::open_read_only) (nothing changes);
    /// [`Error::InvalidArgument`] for an empty list, a broker named twice or
    /// not in the cluster, more than
    /// [`MAX_REPLICATION_FACTOR`](crate::MAX_REPLICATION_FACTOR) replicas,
    /// or an added broker that is fenced (nothing changes);
    /// [`Error::LeaderNotAvailable`] while the partition has no leader;
    /// [`Error::UnknownTopicOrPartition`]; [`Error::Closed`];
    /// [`Error::PartitionDirConflict`] if an added broker holds another
    /// topic's directory at the partition's path; [`Error::Io`].
    pub fn reassign_partition(&self, tp: &TopicPartition, replicas: &[u32]) -> Result<()> {
        self.inner.check_writable("reassigning a partition")?;
        self.inner.reassign_partition(tp, replicas.to_vec())
    }

    /// The reassignments under way (Kafka's
    /// `listPartitionReassignments`): each partition's target replicas.
    #[must_use]
    pub fn list_partition_reassignments(&self) -> BTreeMap<TopicPartition, Vec<u32>> {
        self.inner.partition_reassignments()
    }

    /// Every partition `keep(state, min.insync.replicas, fenced)` keeps,
    /// from the routing table, sorted by topic and partition.
    fn partitions_where(
        &self,
        keep: impl Fn(&LeaderAndIsr, u64, &dyn Fn(u32) -> bool) -> bool,
    ) -> Result<Vec<TopicPartition>> {
        self.inner.check_open()?;
        // The controller's lock comes before `topics`: read the fenced
        // brokers first, holding neither.
        let fenced: Vec<bool> = (0..self.inner.brokers().len())
            .map(|b| u32::try_from(b).is_ok_and(|b| self.inner.is_broker_fenced(b)))
            .collect();
        let is_fenced = |b: u32| fenced.get(b as usize).copied().unwrap_or(true);
        let mut topics: Vec<_> = self.inner.topics.read().values().cloned().collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        let mut found = Vec::new();
        for topic in topics.iter().filter(|t| !t.is_deleted()) {
            let min_isr = topic.configs().effective.min_insync();
            let count = topic.partition_count() as usize;
            for (p, state) in topic.assignments.read().iter().take(count).enumerate() {
                if keep(state, min_isr, &is_fenced) {
                    let p = u32::try_from(p).expect("fewer partitions than u32::MAX");
                    found.push(TopicPartition::new(topic.name.to_string(), p));
                }
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    //! What needs members: the group coordinator is driven directly here,
    //! as the group consumer will drive it.

    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::cluster::Subscription;
    use crate::cluster::{
        ClusterConfig, JoinRequest, JoinResponse, Joined, NewTopic, SyncResponse,
    };
    use crate::format::BatchBuilder;
    use crate::types::Compression;

    const SESSION: i64 = 10_000;

    fn open(dir: &std::path::Path, clock: &ManualClock) -> Cluster {
        let config = ClusterConfig::builder()
            .clock(std::sync::Arc::new(clock.clone()))
            .build()
            .unwrap();
        Cluster::open(dir, config).unwrap()
    }

    fn tp(p: u32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    /// A topic `t` with 2 partitions holding 10 and 4 records.
    fn topic(cluster: &Cluster) {
        let topic = cluster.create_topic(NewTopic::new("t", 2)).unwrap();
        for (p, count) in [(0, 10), (1, 4)] {
            let mut batch = BatchBuilder::new(Compression::None);
            for i in 0..count {
                batch.append(1_000 + i, None, Some(b"v"), &[]);
            }
            topic
                .partition(p)
                .unwrap()
                .append(&mut batch.build().unwrap().to_vec())
                .unwrap();
        }
    }

    fn join(cluster: &Cluster, group: &str, member_id: Option<&str>) -> JoinResponse {
        let (waker, _) = crossbeam_channel::bounded(1);
        let request = JoinRequest {
            member_id: member_id.map(str::to_string),
            instance_id: None,
            client_id: "worker".into(),
            session_timeout_ms: SESSION,
            rebalance_timeout_ms: 30_000,
            protocols: vec!["range".into()],
            subscription: Subscription::new(["t"]),
            waker,
        };
        let now = cluster.inner.clock().now_ms();
        cluster.inner.groups.join(group, request, now).unwrap()
    }

    fn joined(response: JoinResponse) -> Joined {
        match response {
            JoinResponse::Joined(joined) => joined,
            other => panic!("expected a completed join, got {other:?}"),
        }
    }

    /// One member owning both partitions of `t`, Stable.
    fn lone_member(cluster: &Cluster, group: &str) -> String {
        let joined = joined(join(cluster, group, None));
        let id = joined.member_id;
        let assignment = BTreeMap::from([(id.clone(), vec![tp(0), tp(1)])]);
        let now = cluster.inner.clock().now_ms();
        let synced = cluster
            .inner
            .groups
            .sync(group, &id, joined.generation, Some(assignment), now)
            .unwrap();
        assert_eq!(synced, SyncResponse::Assigned(vec![tp(0), tp(1)]));
        id
    }

    #[test]
    fn offsets_cannot_be_changed_while_the_group_has_members() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000_000);
        let cluster = open(dir.path(), &clock);
        topic(&cluster);
        let committed = BTreeMap::from([(tp(0), OffsetAndMetadata::new(3))]);
        cluster.alter_group_offsets("g", &committed).unwrap();
        let before = cluster.list_group_offsets("g").unwrap();
        let member = lone_member(&cluster, "g");

        let refused = |e: Error| assert!(matches!(e, Error::GroupNotEmpty { .. }), "{e}");
        for to in [
            OffsetSpec::Earliest,
            OffsetSpec::Latest,
            OffsetSpec::Offset(5),
            OffsetSpec::Timestamp(1_004),
        ] {
            refused(cluster.reset_group_offsets("g", &[], to).unwrap_err());
            refused(cluster.reset_group_offsets("g", &[tp(1)], to).unwrap_err());
        }
        let other = BTreeMap::from([(tp(1), OffsetAndMetadata::new(1))]);
        refused(cluster.alter_group_offsets("g", &other).unwrap_err());
        refused(cluster.delete_group("g").unwrap_err());
        assert_eq!(cluster.list_group_offsets("g").unwrap(), before);

        // Its member's commits are the only way in.
        cluster
            .inner
            .commit_offsets_as("g", Some((&member, 1)), &other)
            .unwrap();
        assert_eq!(cluster.list_group_offsets("g").unwrap()[&tp(1)].offset, 1);

        // Once the member's session has timed out, the reset goes through.
        clock.advance_ms(SESSION);
        refused(
            cluster
                .reset_group_offsets("g", &[], OffsetSpec::Latest)
                .unwrap_err(),
        );
        clock.advance_ms(1);
        let reset = cluster
            .reset_group_offsets("g", &[], OffsetSpec::Latest)
            .unwrap();
        assert_eq!(reset, BTreeMap::from([(tp(0), 10), (tp(1), 4)]));
        assert_eq!(
            cluster.describe_group("g").unwrap().state,
            GroupState::Empty
        );
        // And a member that left frees the group at once.
        let again = lone_member(&cluster, "g");
        refused(cluster.delete_group("g").unwrap_err());
        cluster.inner.groups.leave("g", &again, clock.now_ms());
        assert_eq!(cluster.delete_group("g").unwrap(), 2);
        assert_eq!(cluster.describe_group("g").unwrap().state, GroupState::Dead);
    }

    #[test]
    fn a_stable_group_is_described_with_its_members_assignments_and_lag() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000_000);
        let cluster = open(dir.path(), &clock);
        topic(&cluster);
        let member = lone_member(&cluster, "g");
        cluster
            .inner
            .commit_offsets_as(
                "g",
                Some((&member, 1)),
                &BTreeMap::from([(tp(0), OffsetAndMetadata::new(7).with_metadata("m"))]),
            )
            .unwrap();

        let d = cluster.describe_group("g").unwrap();
        assert_eq!(d.group_id, "g");
        assert_eq!(d.state, GroupState::Stable);
        assert_eq!(d.protocol_type, "consumer");
        assert_eq!(d.assignor.as_deref(), Some("range"));
        assert_eq!(d.generation, 1);
        assert_eq!(
            d.members,
            [MemberDescription {
                member_id: member.clone(),
                group_instance_id: None,
                client_id: "worker".into(),
                assignment: vec![tp(0), tp(1)],
            }]
        );
        // t-1 is assigned but has no commit: no lag to report.
        let rows: Vec<(TopicPartition, Option<u64>, u64, Option<u64>)> = d
            .offsets
            .iter()
            .map(|l| {
                let committed = l.committed.as_ref().map(|c| c.offset);
                (l.partition.clone(), committed, l.log_end_offset, l.lag)
            })
            .collect();
        assert_eq!(
            rows,
            [(tp(0), Some(7), 10, Some(3)), (tp(1), None, 4, None)]
        );
        assert_eq!(d.offsets[0].committed.as_ref().unwrap().metadata, "m");
    }

    #[test]
    fn a_rebalancing_group_shows_no_assignments() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000_000);
        let cluster = open(dir.path(), &clock);
        topic(&cluster);
        let first = lone_member(&cluster, "g");
        let JoinResponse::Pending { member_id: second } = join(&cluster, "g", None) else {
            panic!("a second member waits for the first to rejoin");
        };
        let d = cluster.describe_group("g").unwrap();
        assert_eq!(d.state, GroupState::PreparingRebalance);
        assert_eq!((d.generation, d.assignor.as_deref()), (1, None));
        assert_eq!(d.protocol_type, "consumer");
        let mut ids = [first, second];
        ids.sort();
        let members: Vec<(&str, usize)> = d
            .members
            .iter()
            .map(|m| (m.member_id.as_str(), m.assignment.len()))
            .collect();
        assert_eq!(members, [(ids[0].as_str(), 0), (ids[1].as_str(), 0)]);
        assert!(d.offsets.is_empty(), "nothing assigned, nothing committed");
    }

    #[test]
    fn groups_with_members_are_listed_before_they_commit() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000_000);
        let cluster = open(dir.path(), &clock);
        topic(&cluster);
        cluster
            .alter_group_offsets("b", &BTreeMap::from([(tp(0), OffsetAndMetadata::new(1))]))
            .unwrap();
        lone_member(&cluster, "c");
        lone_member(&cluster, "a");
        lone_member(&cluster, "b");
        assert_eq!(cluster.list_groups(), ["a", "b", "c"]);
        // Their members time out: only the group with commits stays.
        clock.advance_ms(SESSION + 1);
        assert_eq!(cluster.list_groups(), ["b"]);
    }
}
