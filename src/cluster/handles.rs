//! Public handles: [`NewTopic`], [`Topic`], [`Partition`] and descriptions.

use std::sync::Arc;

use crate::cluster::broker::topic_id_string;
use crate::cluster::{ClusterInner, TopicConfig, TopicState};
use crate::error::{Error, Result};
use crate::log::{
    AppendInfo, CleanReport, LogRead, RecoveryReport, RetentionReport, TimestampOffset,
};
use crate::replica::{
    AppendAcks, AppendOrigin, FetchBound, PartitionOffsets, ReplicaManager, TopicIdPartition,
};

/// A topic to create: its name, partition count and configs.
///
/// ```
/// use std::time::Duration;
/// use logbus::{NewTopic, TopicConfig};
/// let topic = NewTopic::new("orders", 6)
///     .config(TopicConfig::new().retention_time(Some(Duration::from_secs(86_400))));
/// assert_eq!(topic.name(), "orders");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct NewTopic {
    pub(crate) name: String,
    pub(crate) partitions: Option<u32>,
    pub(crate) replication_factor: Option<u16>,
    pub(crate) config: TopicConfig,
}

impl NewTopic {
    /// A topic named `name` with `partitions` partitions and default configs.
    pub fn new(name: impl Into<String>, partitions: u32) -> Self {
        NewTopic {
            name: name.into(),
            partitions: Some(partitions),
            replication_factor: None,
            config: TopicConfig::new(),
        }
    }

    /// A topic with the cluster's default partition count (`num.partitions`).
    pub fn with_default_partitions(name: impl Into<String>) -> Self {
        NewTopic {
            name: name.into(),
            partitions: None,
            replication_factor: None,
            config: TopicConfig::new(),
        }
    }

    /// The number of replicas of each partition (Kafka's
    /// `replicationFactor` of a `NewTopic`), on distinct brokers: 1 to the
    /// cluster's number of brokers, at most
    /// [`MAX_REPLICATION_FACTOR`](crate::MAX_REPLICATION_FACTOR). Without
    /// it the cluster's `default.replication.factor` applies
    /// ([`ClusterConfigBuilder::default_replication_factor`](crate::ClusterConfigBuilder::default_replication_factor)).
    /// [`Cluster::create_topic`](crate::Cluster::create_topic) refuses
    /// another value with
    /// [`Error::InvalidReplicationFactor`](crate::Error::InvalidReplicationFactor).
    ///
    /// Replicas are placed as Kafka places them: partition leaders
    /// round-robin over the brokers, followers spread after them. Followers
    /// copy their leader's log (see
    /// [`PartitionDescription::replica_states`]).
    ///
    /// ```
    /// use logbus::{Cluster, ClusterConfig, NewTopic};
    /// let dir = tempfile::tempdir()?;
    /// let config = ClusterConfig::builder().brokers(3).build()?;
    /// let cluster = Cluster::open(dir.path(), config)?;
    /// let topic = cluster.create_topic(NewTopic::new("orders", 3).replication_factor(2))?;
    /// for p in topic.describe()?.partitions {
    ///     assert_eq!(p.replicas.len(), 2);
    ///     assert_eq!((p.leader, p.leader_epoch), (Some(p.replicas[0]), 0));
    ///     assert_eq!(p.isr, p.replicas);
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn replication_factor(mut self, factor: u16) -> Self {
        self.replication_factor = Some(factor);
        self
    }

    /// The topic's own configs, laid over the cluster's defaults.
    pub fn config(mut self, config: TopicConfig) -> Self {
        self.config = config;
        self
    }

    /// The name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A handle to a topic. Cheap to clone; keeps working until the topic is
/// deleted, after which its calls return
/// [`Error::UnknownTopicOrPartition`](crate::Error::UnknownTopicOrPartition).
#[derive(Debug, Clone)]
pub struct Topic {
    cluster: Arc<ClusterInner>,
    state: Arc<TopicState>,
}

impl Drop for Topic {
    fn drop(&mut self) {
        self.cluster.release_handle();
    }
}

impl Topic {
    pub(crate) fn new(cluster: Arc<ClusterInner>, state: Arc<TopicState>) -> Self {
        Topic { cluster, state }
    }

    /// The topic's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// The topic id, in Kafka's form (base64 of a UUID). A re-created topic
    /// of the same name has a new id.
    #[must_use]
    pub fn id(&self) -> String {
        topic_id_string(self.state.id)
    }

    /// The effective configuration as of now: the topic's own configs
    /// over the cluster's defaults. Every handle sees a change made by
    /// [`Cluster::alter_topic_config`](crate::Cluster::alter_topic_config)
    /// as soon as that returns (the value returned here is a copy: it
    /// does not change afterwards).
    #[must_use]
    pub fn config(&self) -> TopicConfig {
        self.state.configs().effective.clone()
    }

    /// Only the configs set for this topic, as of now (see
    /// [`Topic::config`]).
    #[must_use]
    pub fn overrides(&self) -> TopicConfig {
        self.state.configs().overrides.clone()
    }

    /// The number of partitions (it grows with
    /// [`Cluster::create_partitions`](crate::Cluster::create_partitions)).
    #[must_use]
    pub fn partition_count(&self) -> u32 {
        self.state.partition_count()
    }

    /// Whether the topic was deleted.
    #[must_use]
    pub fn is_deleted(&self) -> bool {
        self.state.is_deleted()
    }

    /// A handle to one partition. A partition without a leader (see
    /// [`PartitionDescription::leader`]) still gets one: its calls return
    /// [`Error::LeaderNotAvailable`](crate::Error::LeaderNotAvailable)
    /// (retriable) until a leader is elected, and then work.
    ///
    /// # Errors
    /// [`Error::UnknownTopicOrPartition`](crate::Error::UnknownTopicOrPartition)
    /// if the partition does not exist or the topic was deleted;
    /// [`Error::Closed`](crate::Error::Closed) once the cluster is closed.
    pub fn partition(&self, partition: u32) -> Result<Partition> {
        self.cluster.check_open()?;
        let key = self.state.key(partition)?;
        let recovery = match self.cluster.replicas_for(&key) {
            Ok(leader) => leader.recovery_report(&key)?,
            // A leaderless partition still gets a handle: its calls answer
            // `LeaderNotAvailable` until a leader is elected. The report
            // comes from any broker hosting a replica.
            Err(Error::LeaderNotAvailable { .. }) => self
                .replica_brokers(partition)
                .into_iter()
                .find_map(|b| {
                    let broker = self.cluster.broker(b).ok()?;
                    broker.replicas.recovery_report(&key).ok()
                })
                .unwrap_or_default(),
            Err(e) => return Err(e),
        };
        Ok(Partition {
            cluster: self.cluster.clone(),
            topic: self.state.clone(),
            key,
            recovery,
        })
    }

    /// Handles to every partition, in order.
    ///
    /// # Errors
    /// As [`Topic::partition`].
    pub fn partitions(&self) -> Result<Vec<Partition>> {
        (0..self.partition_count())
            .map(|p| self.partition(p))
            .collect()
    }

    /// The topic's id, configs and partitions with their leaders, replicas
    /// (each one's state), ISR and offsets: Kafka's `kafka-topics
    /// --describe`. A partition without a leader is described too, from the
    /// cluster's metadata and the replicas' own logs.
    ///
    /// # Errors
    /// As [`Topic::partition`].
    pub fn describe(&self) -> Result<TopicDescription> {
        self.cluster.check_open()?;
        let partitions = (0..self.partition_count())
            .map(|p| self.describe_partition(p))
            .collect::<Result<Vec<_>>>()?;
        Ok(TopicDescription {
            name: self.name().to_string(),
            id: self.id(),
            internal: self.state.internal,
            config: self.config(),
            partitions,
        })
    }
}

impl Topic {
    /// The brokers holding a replica of `partition`, from the cluster's
    /// metadata (the routing table).
    fn replica_brokers(&self, partition: u32) -> Vec<u32> {
        self.state
            .assignments
            .read()
            .get(partition as usize)
            .map(|a| a.replicas.clone())
            .unwrap_or_default()
    }

    /// One partition's description: from its leader's replica manager
    /// (which tracks its followers), or, without a leader, from the
    /// metadata and each replica's own log.
    fn describe_partition(&self, partition: u32) -> Result<PartitionDescription> {
        let key = self.state.key(partition)?;
        let min_isr = self.state.configs().effective.min_insync();
        let offline = |b: u32| self.cluster.is_broker_fenced(b);
        match self.cluster.replicas_for(&key) {
            Ok(leader) => {
                let info = leader.describe(&key)?;
                let log_end = info.offsets.log_end;
                let replica_states = info
                    .replicas
                    .iter()
                    .map(|r| {
                        // The leader is its own reference: no fetch times.
                        let follower = info.leader != Some(r.broker);
                        ReplicaDescription {
                            broker: r.broker,
                            in_sync: info.isr.contains(&r.broker),
                            offline: offline(r.broker),
                            log_end_offset: r.log_end_offset,
                            offset_lag: r.log_end_offset.map(|o| log_end.saturating_sub(o)),
                            last_caught_up_ms: r.last_caught_up_ms.filter(|_| follower),
                            last_fetch_ms: r.last_fetch_ms.filter(|_| follower),
                        }
                    })
                    .collect();
                Ok(PartitionDescription::new(
                    partition,
                    Some(&info.offsets),
                    info.size_bytes,
                    (info.leader, info.leader_epoch, info.isr),
                    replica_states,
                    min_isr,
                    offline,
                ))
            }
            Err(Error::LeaderNotAvailable { .. }) => {
                let roles = self
                    .state
                    .assignments
                    .read()
                    .get(partition as usize)
                    .cloned()
                    .ok_or_else(|| self.state.unknown(Some(partition)))?;
                // Each replica's own view of its log, where its broker answers.
                let own: Vec<(u32, Option<PartitionOffsets>)> = roles
                    .replicas
                    .iter()
                    .map(|&b| {
                        let offsets = self
                            .cluster
                            .broker(b)
                            .ok()
                            .and_then(|broker| broker.replicas.offsets(&key).ok());
                        (b, offsets)
                    })
                    .collect();
                // The offsets reported: the first in-sync replica's (the
                // one a clean election would pick), else any replica's.
                let source = own
                    .iter()
                    .filter(|(b, o)| o.is_some() && roles.isr.contains(b))
                    .chain(own.iter().filter(|(_, o)| o.is_some()))
                    .find_map(|(b, o)| {
                        let size = self.cluster.broker(*b).ok()?.replicas.size_bytes(&key);
                        Some(((*o)?, size.unwrap_or(0)))
                    });
                let (offsets, size_bytes) = source.map_or((None, 0), |(o, s)| (Some(o), s));
                let replica_states = own
                    .iter()
                    .map(|(b, o)| ReplicaDescription {
                        broker: *b,
                        in_sync: roles.isr.contains(b),
                        offline: offline(*b),
                        log_end_offset: o.as_ref().map(|o| o.log_end),
                        offset_lag: None,
                        last_caught_up_ms: None,
                        last_fetch_ms: None,
                    })
                    .collect();
                Ok(PartitionDescription::new(
                    partition,
                    offsets.as_ref(),
                    size_bytes,
                    (None, roles.leader_epoch, roles.isr),
                    replica_states,
                    min_isr,
                    offline,
                ))
            }
            Err(e) => Err(e),
        }
    }
}

/// What [`Cluster::describe_topic`](crate::Cluster::describe_topic) reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicDescription {
    /// The topic's name.
    pub name: String,
    /// The topic id (Kafka's base64 form).
    pub id: String,
    /// Whether it is an internal topic (name starting with `__`).
    pub internal: bool,
    /// The effective configuration.
    pub config: TopicConfig,
    /// Every partition, in order.
    pub partitions: Vec<PartitionDescription>,
}

/// One partition in a [`TopicDescription`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionDescription {
    /// The partition number.
    pub partition: u32,
    /// The broker leading it; `None` while no replica can lead (every
    /// in-sync replica's broker is down and unclean leader election is not
    /// allowed).
    pub leader: Option<u32>,
    /// The leader's epoch: 0 when the partition is created, bumped by
    /// every leader change.
    pub leader_epoch: i32,
    /// The brokers holding a replica, the preferred leader first (with one
    /// broker: `[0]`).
    pub replicas: Vec<u32>,
    /// The in-sync replicas: those caught up with the leader (at creation,
    /// every replica; with one broker: `[0]`).
    pub isr: Vec<u32>,
    /// Each replica's state, in the order of `replicas`: as the leader
    /// tracks its followers, or, without a leader, as each replica's own
    /// log stands.
    pub replica_states: Vec<ReplicaDescription>,
    /// The ISR is smaller than the replica list: some replica is not caught
    /// up (Kafka's `--under-replicated-partitions`; see
    /// [`Cluster::under_replicated_partitions`](crate::Cluster::under_replicated_partitions)).
    pub under_replicated: bool,
    /// The ISR is smaller than the topic's `min.insync.replicas`, or the
    /// partition has no leader, so `acks=all` produces fail (Kafka's
    /// `--under-min-isr-partitions`).
    pub under_min_isr: bool,
    /// The partition has a leader and its ISR has exactly
    /// `min.insync.replicas` members: one more replica falling behind stops
    /// `acks=all` produces (Kafka's `--at-min-isr-partitions`; a leaderless
    /// partition is [`under_min_isr`](Self::under_min_isr) instead).
    pub at_min_isr: bool,
    /// No live broker leads the partition: it has no leader, or its
    /// leader's broker is fenced (Kafka's `--unavailable-partitions`).
    /// Reads and writes answer
    /// [`Error::LeaderNotAvailable`](crate::Error::LeaderNotAvailable) or
    /// time out until a leader is elected.
    pub unavailable: bool,
    /// The log start offset. Without a leader, this and the other offsets
    /// and the size are the first in-sync replica's own (else any
    /// replica's; 0 if no replica's broker answers).
    pub log_start_offset: u64,
    /// The high watermark: consumers read below it.
    pub high_watermark: u64,
    /// The log end offset.
    pub log_end_offset: u64,
    /// Bytes on disk.
    pub size_bytes: u64,
}

impl PartitionDescription {
    /// Builds a description and works out its flags. `roles` is (leader,
    /// leader epoch, ISR); `offline` tells whether a broker is fenced.
    fn new(
        partition: u32,
        offsets: Option<&PartitionOffsets>,
        size_bytes: u64,
        roles: (Option<u32>, i32, Vec<u32>),
        replica_states: Vec<ReplicaDescription>,
        min_isr: u64,
        offline: impl Fn(u32) -> bool,
    ) -> Self {
        let (leader, leader_epoch, isr) = roles;
        let replicas: Vec<u32> = replica_states.iter().map(|r| r.broker).collect();
        let in_sync = isr.len() as u64;
        PartitionDescription {
            partition,
            leader,
            leader_epoch,
            under_replicated: isr.len() < replicas.len(),
            under_min_isr: leader.is_none() || in_sync < min_isr,
            at_min_isr: leader.is_some() && in_sync == min_isr,
            unavailable: leader.is_none_or(offline),
            replicas,
            isr,
            replica_states,
            log_start_offset: offsets.map_or(0, |o| o.log_start),
            high_watermark: offsets.map_or(0, |o| o.high_watermark),
            log_end_offset: offsets.map_or(0, |o| o.log_end),
            size_bytes,
        }
    }
}

/// One replica of a partition, in [`PartitionDescription::replica_states`]:
/// what Kafka's admin reports of a replica (`ReplicaState` of
/// `describeMetadataQuorum`, `offsetLag` of `describeLogDirs`, the
/// offline replicas of `describeTopics`).
///
/// ```
/// use logbus::{Cluster, ClusterConfig, NewTopic};
/// let dir = tempfile::tempdir()?;
/// let config = ClusterConfig::builder().brokers(3).build()?;
/// let cluster = Cluster::open(dir.path(), config)?;
/// let topic = cluster.create_topic(NewTopic::new("orders", 1).replication_factor(3))?;
/// let partition = &topic.describe()?.partitions[0];
/// let leader = partition.leader.unwrap();
/// for replica in &partition.replica_states {
///     assert!(replica.in_sync && !replica.offline);
///     if replica.broker == leader {
///         // The leader knows its own log end offset.
///         assert_eq!((replica.log_end_offset, replica.offset_lag), (Some(0), Some(0)));
///     }
/// }
/// assert!(!partition.under_replicated && !partition.unavailable);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicaDescription {
    /// The broker holding the replica.
    pub broker: u32,
    /// Whether it is in the ISR.
    pub in_sync: bool,
    /// Whether its broker is fenced by the controller (stopped, crashed or
    /// cut off from it): Kafka's offline replicas.
    pub offline: bool,
    /// Its log end offset: for a follower, as the leader last learned it
    /// (its last fetch offset; `None` until it fetched from this leader);
    /// for the leader, its own. Without a leader, the replica's own
    /// (`None` if its broker does not answer).
    pub log_end_offset: Option<u64>,
    /// How many offsets it is behind the leader's log end offset
    /// (`None` while its log end offset is unknown, or without a leader).
    pub offset_lag: Option<u64>,
    /// When (cluster clock, ms since the epoch) it was last caught up with
    /// the leader (Kafka's `lastCaughtUpTimestamp`: it fetched up to the
    /// leader's log end offset, or the one the leader had at its previous
    /// fetch); a follower out of the ISR for longer than
    /// `replica.lag.time.max.ms` stays out. `None` if never since this
    /// leader took over, for the leader itself, or without a leader.
    pub last_caught_up_ms: Option<i64>,
    /// When (cluster clock, ms) it last fetched from the leader (Kafka's
    /// `lastFetchTimestamp`); `None` if never, for the leader itself, or
    /// without a leader.
    pub last_fetch_ms: Option<i64>,
}

/// A handle to one partition: its offsets, and low-level append and read
/// of raw record batches. Most code uses a
/// `Producer` and a `Consumer`
/// instead.
///
/// ```
/// use logbus::{Cluster, ClusterConfig, Compression, NewTopic, format::BatchBuilder};
/// let dir = tempfile::tempdir()?;
/// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
/// let partition = cluster.create_topic(NewTopic::new("events", 1))?.partition(0)?;
/// let mut batch = BatchBuilder::new(Compression::None);
/// batch.append(1_700_000_000_000, None, Some(b"hello"), &[]);
/// let info = partition.append(&mut batch.build()?.to_vec())?;
/// assert_eq!((info.first_offset(), partition.high_watermark()?), (0, 1));
/// let read = partition.read(0, 1 << 20)?;
/// assert_eq!(read.batches().count(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Partition {
    cluster: Arc<ClusterInner>,
    topic: Arc<TopicState>,
    /// How the broker's replica manager knows the partition: every call
    /// goes through the manager, so the handle holds no partition state.
    key: TopicIdPartition,
    /// What recovery did when the log was opened (fixed from then on).
    recovery: RecoveryReport,
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.cluster.release_handle();
    }
}

impl Partition {
    /// The replica manager of the partition's leader, for a read: first
    /// the markers of every transaction whose end was answered are
    /// written, so the read sees each commit answered before it.
    fn replicas_to_read(&self) -> Result<Arc<ReplicaManager>> {
        self.cluster.complete_answered_txns();
        self.cluster.replicas_for(&self.key)
    }

    /// The topic's name.
    #[must_use]
    pub fn topic(&self) -> &str {
        &self.topic.name
    }

    /// The partition number.
    #[must_use]
    pub fn partition(&self) -> u32 {
        self.key.partition
    }

    /// The log start offset: the first offset that can be read.
    ///
    /// # Errors
    /// [`Error::UnknownTopicOrPartition`](crate::Error::UnknownTopicOrPartition)
    /// once the topic is deleted, [`Error::Closed`](crate::Error::Closed)
    /// once the cluster is closed; the same for every method here.
    pub fn log_start_offset(&self) -> Result<u64> {
        Ok(self.replicas_to_read()?.offsets(&self.key)?.log_start)
    }

    /// The high watermark: the offset after the last record consumers may
    /// read. With one broker it equals the log end offset, except on a
    /// topic with `flush.messages=1`, where it is the offset after the
    /// last fsynced record (what has been acknowledged).
    ///
    /// # Errors
    /// As [`Partition::log_start_offset`].
    pub fn high_watermark(&self) -> Result<u64> {
        Ok(self.replicas_to_read()?.offsets(&self.key)?.high_watermark)
    }

    /// The log end offset: the offset the next record gets.
    ///
    /// # Errors
    /// As [`Partition::log_start_offset`].
    pub fn log_end_offset(&self) -> Result<u64> {
        Ok(self.replicas_to_read()?.offsets(&self.key)?.log_end)
    }

    /// Bytes of the partition's segments on disk.
    ///
    /// # Errors
    /// As [`Partition::log_start_offset`].
    pub fn size_bytes(&self) -> Result<u64> {
        self.replicas_to_read()?.size_bytes(&self.key)
    }

    /// What recovery did when this partition's log was opened (with the
    /// cluster, or when the partition was created): torn tail cut,
    /// segments scanned, indexes rebuilt. Also in
    /// [`Cluster::recovery_report`](crate::Cluster::recovery_report).
    #[must_use]
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Appends raw v2 record batches as the leader: offsets are assigned,
    /// see [`Log::append`](crate::Log::append). Acknowledged as `acks=all`:
    /// the call returns once every in-sync replica has the batches (at once
    /// with one replica), and consumers wake when the high watermark
    /// passes them.
    ///
    /// # Errors
    /// [`Error::ReadOnly`](crate::Error::ReadOnly) on a cluster opened with
    /// [`Cluster::open_read_only`](crate::Cluster::open_read_only) (nothing changes);
    /// [`Error::InvalidTopic`](crate::Error::InvalidTopic) for a partition
    /// of an internal topic (`__consumer_offsets`: only the cluster writes
    /// it, as Kafka's broker refuses produce requests to it); as
    /// [`Log::append`](crate::Log::append), plus those of
    /// [`Partition::log_start_offset`]; the retriable
    /// [`Error::NotEnoughReplicas`](crate::Error::NotEnoughReplicas) (nothing
    /// appended), [`Error::NotEnoughReplicasAfterAppend`](crate::Error::NotEnoughReplicasAfterAppend),
    /// [`Error::NotLeaderOrFollower`](crate::Error::NotLeaderOrFollower)
    /// and [`Error::Timeout`](crate::Error::Timeout) while the replicas do
    /// not follow.
    pub fn append(&self, batches: &mut [u8]) -> Result<AppendInfo> {
        self.cluster.check_writable("appending to a partition")?;
        self.topic.refuse_internal("appending to")?;
        // Acknowledged once appended, as `acks=all` is with one broker.
        self.cluster.replicas_for(&self.key)?.append(
            &self.key,
            batches,
            AppendOrigin::Client,
            AppendAcks::All,
        )
    }

    /// Reads whole batches from `offset` (the first may start before it),
    /// up to `max_bytes` but at least one batch, below the high watermark:
    /// only batches that end below it (see
    /// [`Log::read_bounded`](crate::Log::read_bounded)). An offset at or
    /// above the high watermark but within the log reads nothing. (With one
    /// broker the high watermark is the log end offset.)
    ///
    /// # Errors
    /// [`Error::OffsetOutOfRange`](crate::Error::OffsetOutOfRange) outside
    /// `[log start, log end]`, plus those of
    /// [`Partition::log_start_offset`].
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<LogRead> {
        Ok(self
            .replicas_to_read()?
            .fetch(&self.key, offset, max_bytes, FetchBound::HighWatermark)?
            .into_log_read())
    }

    /// The first record with a timestamp `>= timestamp` (Kafka's
    /// `offsetsForTimes`), if any.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a
    /// negative timestamp (as Kafka's consumer refuses it; Kafka's broker
    /// reads -1 and -2 as "latest" and "earliest", which this call does
    /// not); plus those of [`Partition::log_start_offset`].
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<TimestampOffset>> {
        if timestamp < 0 {
            return Err(crate::Error::InvalidArgument(format!(
                "the target time for partition {}-{} is negative ({timestamp})",
                self.topic(),
                self.partition()
            )));
        }
        self.replicas_to_read()?
            .offset_for_timestamp(&self.key, timestamp)
    }

    /// Deletes every record below `offset` by advancing the log start offset
    /// (Kafka's `deleteRecords`); returns the new log start offset. The new
    /// start is checkpointed before this returns, so it survives a restart.
    ///
    /// # Errors
    /// [`Error::ReadOnly`](crate::Error::ReadOnly) on a cluster opened with
    /// [`Cluster::open_read_only`](crate::Cluster::open_read_only) (nothing changes);
    /// [`Error::OffsetOutOfRange`](crate::Error::OffsetOutOfRange) above the
    /// high watermark; [`Error::InvalidTopic`](crate::Error::InvalidTopic)
    /// for an internal topic (as Kafka refuses it); plus those of
    /// [`Partition::log_start_offset`].
    pub fn delete_records(&self, offset: u64) -> Result<u64> {
        self.cluster.check_writable("deleting records")?;
        self.topic.refuse_internal("deleting records of")?;
        let broker = self.cluster.leader_broker(&self.key)?;
        let start = broker.replicas.delete_records(&self.key, offset)?;
        broker.note_partition(&self.key);
        broker.write_checkpoints()?;
        Ok(start)
    }

    /// Enforces the topic's retention on this partition now, as the
    /// background check does every `log.retention.check.interval.ms`:
    /// deletes the oldest sealed segments past `retention.ms` or beyond
    /// `retention.bytes` (under `cleanup.policy` `delete`), and those
    /// wholly below the log start offset. Returns what was deleted. See
    /// [`Log::enforce_retention`](crate::Log::enforce_retention).
    ///
    /// ```
    /// use logbus::{Cluster, ClusterConfig, NewTopic, TopicConfig};
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    /// let config = TopicConfig::new().retention_bytes(Some(1))?;
    /// let partition = cluster
    ///     .create_topic(NewTopic::new("events", 1).config(config))?
    ///     .partition(0)?;
    /// // Only the active segment exists: nothing to delete yet.
    /// assert_eq!(partition.enforce_retention()?.segments, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ReadOnly`](crate::Error::ReadOnly) on a cluster opened with
    /// [`Cluster::open_read_only`](crate::Cluster::open_read_only) (nothing changes);
    /// [`Error::Io`](crate::Error::Io) if renaming a segment's files
    /// fails (which fences the partition), plus those of
    /// [`Partition::log_start_offset`].
    pub fn enforce_retention(&self) -> Result<RetentionReport> {
        self.cluster.check_writable("enforcing retention")?;
        self.cluster
            .replicas_for(&self.key)?
            .enforce_retention(&self.key)
    }

    /// Runs one cleaning pass on this partition now, whatever its dirty
    /// ratio, as the background check does once the ratio reaches
    /// `min.cleanable.dirty.ratio`: keeps the latest record of every key
    /// in the sealed segments. Returns what the pass did. See
    /// [`Log::clean`](crate::Log::clean).
    ///
    /// ```
    /// use logbus::{CleanupPolicy, Cluster, ClusterConfig, NewTopic, TopicConfig};
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    /// let config = TopicConfig::new().cleanup_policy(CleanupPolicy::Compact);
    /// let partition = cluster
    ///     .create_topic(NewTopic::new("state", 1).config(config))?
    ///     .partition(0)?;
    /// // Only the active segment exists: nothing to clean yet.
    /// assert_eq!(partition.clean()?.segments_cleaned, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ReadOnly`](crate::Error::ReadOnly) on a cluster opened with
    /// [`Cluster::open_read_only`](crate::Cluster::open_read_only) (nothing changes);
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) if the topic's
    /// `cleanup.policy` does not include `compact`; as
    /// [`Log::clean`](crate::Log::clean), plus those of
    /// [`Partition::log_start_offset`].
    pub fn clean(&self) -> Result<CleanReport> {
        self.cluster.check_writable("cleaning a partition")?;
        self.cluster.replicas_for(&self.key)?.clean(&self.key)
    }
}

#[cfg(test)]
mod tests;
