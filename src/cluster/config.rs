//! Cluster-wide settings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::cluster::{
    MAX_BROKERS, MAX_PARTITIONS_PER_CLUSTER, MAX_PARTITIONS_PER_TOPIC, MAX_REPLICATION_FACTOR,
    TopicConfig,
};
use crate::config::{duration, millis};
use crate::error::{Error, Result};
use crate::storage::{StdStorage, Storage};

/// The most `background.threads` a cluster may start: every one starts
/// when the cluster opens, so an absurd count would exhaust the process.
const MAX_BACKGROUND_THREADS: usize = 1024;

/// Settings of a [`Cluster`](crate::Cluster). [`ClusterConfig::default`] is
/// one broker, Kafka's topic defaults, the system clock and the real file
/// system.
///
/// ```
/// use std::time::Duration;
/// use logbus::{ClusterConfig, TopicConfig};
/// let config = ClusterConfig::builder()
///     .topic_defaults(TopicConfig::new().retention_time(Some(Duration::from_secs(3600))))
///     .num_partitions(3)
///     .retention_check_interval(Duration::from_secs(10))
///     .build()?;
/// assert_eq!(config.num_partitions(), 3);
/// assert_eq!(config.retention_check_interval(), Duration::from_secs(10));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub(crate) brokers: u32,
    pub(crate) broker_dirs: BTreeMap<u32, PathBuf>,
    pub(crate) default_replication_factor: u16,
    /// `offsets.topic.replication.factor`; `None`: 3, or every broker if
    /// there are fewer.
    pub(crate) offsets_topic_replication_factor: Option<u16>,
    pub(crate) num_partitions: u32,
    /// `transaction.state.log.replication.factor`; `None`: 3, or every
    /// broker if there are fewer.
    pub(crate) txn_state_replication_factor: Option<u16>,
    /// `transaction.state.log.num.partitions`.
    pub(crate) txn_state_partitions: u32,
    /// `transaction.state.log.min.isr` (capped by the topic's factor).
    pub(crate) txn_state_min_isr: u16,
    /// `transaction.max.timeout.ms`.
    pub(crate) txn_max_timeout_ms: i64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`.
    pub(crate) txn_abort_interval_ms: i64,
    /// `transactional.id.expiration.ms`.
    pub(crate) transactional_id_expiration_ms: i64,
    /// `transaction.remove.expired.transaction.cleanup.interval.ms`.
    pub(crate) txn_remove_expired_interval_ms: i64,
    pub(crate) topic_defaults: TopicConfig,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) storage: Arc<dyn Storage>,
    /// Brokers given a file layer of their own.
    pub(crate) broker_storages: BTreeMap<u32, Arc<dyn Storage>>,
    pub(crate) checkpoint_interval_ms: i64,
    pub(crate) group_min_session_timeout_ms: i64,
    pub(crate) group_max_session_timeout_ms: i64,
    pub(crate) group_initial_rebalance_delay_ms: i64,
    pub(crate) retention_check_interval_ms: i64,
    pub(crate) producer_id_expiration_ms: i64,
    pub(crate) background_threads: usize,
    pub(crate) max_partitions: u32,
    pub(crate) broker_session_timeout_ms: i64,
    pub(crate) broker_heartbeat_interval_ms: i64,
    pub(crate) replica_lag_time_max_ms: i64,
    pub(crate) replica_fetch_wait_max_ms: i64,
    pub(crate) replica_fetch_max_bytes: usize,
    pub(crate) auto_leader_rebalance_enable: bool,
    /// Whether the controller's liveness thread runs (tests that drive
    /// `ClusterInner::liveness_tick` by hand turn it off).
    pub(crate) controller_thread: bool,
    /// Whether followers' fetcher threads run (tests that move the ISR by
    /// hand, or drive fetches step by step, turn them off).
    pub(crate) replica_fetchers: bool,
    /// A known bug injected into every broker's replica manager (the
    /// cluster simulation's self-test).
    #[cfg(test)]
    pub(crate) injected_bug: Option<crate::replica::InjectedBug>,
    /// A transaction marker writer `Cluster::open` installs instead of the
    /// cluster's own, before the coordinator's timer starts (tests that
    /// record or fail markers).
    #[cfg(test)]
    pub(crate) test_markers: Option<TestMarkers>,
}

/// A test's transaction marker writer, carried in the config.
#[cfg(test)]
#[derive(Clone)]
pub(crate) struct TestMarkers(pub(crate) Arc<dyn super::txn_coordinator::MarkerWriter>);

#[cfg(test)]
impl std::fmt::Debug for TestMarkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestMarkers")
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            brokers: 1,
            broker_dirs: BTreeMap::new(),
            broker_storages: BTreeMap::new(),
            default_replication_factor: 1,
            offsets_topic_replication_factor: None,
            num_partitions: 1,
            txn_state_replication_factor: None,
            txn_state_partitions: crate::cluster::txn_log::TXN_PARTITIONS,
            txn_state_min_isr: 2,
            txn_max_timeout_ms: 900_000,
            txn_abort_interval_ms: 10_000,
            transactional_id_expiration_ms: 604_800_000,
            txn_remove_expired_interval_ms: 3_600_000,
            topic_defaults: TopicConfig::new(),
            clock: Arc::new(SystemClock),
            storage: Arc::new(StdStorage),
            checkpoint_interval_ms: 60_000,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_initial_rebalance_delay_ms: 0,
            retention_check_interval_ms: 300_000,
            producer_id_expiration_ms: 86_400_000,
            background_threads: 2,
            max_partitions: MAX_PARTITIONS_PER_CLUSTER,
            broker_session_timeout_ms: 9_000,
            broker_heartbeat_interval_ms: 2_000,
            replica_lag_time_max_ms: 30_000,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_max_bytes: 1024 * 1024,
            auto_leader_rebalance_enable: true,
            controller_thread: true,
            replica_fetchers: true,
            #[cfg(test)]
            injected_bug: None,
            #[cfg(test)]
            test_markers: None,
        }
    }
}

impl ClusterConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> ClusterConfigBuilder {
        ClusterConfigBuilder {
            config: ClusterConfig::default(),
        }
    }

    /// Number of brokers (default 1), with ids `0..brokers`.
    #[must_use]
    pub fn brokers(&self) -> u32 {
        self.brokers
    }

    /// The data directory of broker `id` if it was placed with
    /// [`ClusterConfigBuilder::broker_dir`]; `None` for the default,
    /// `<root>/broker-<id>`.
    #[must_use]
    pub fn broker_dir(&self, id: u32) -> Option<&Path> {
        self.broker_dirs.get(&id).map(PathBuf::as_path)
    }

    /// The replication factor of a topic created without one (Kafka's
    /// `default.replication.factor`, default 1).
    #[must_use]
    pub fn default_replication_factor(&self) -> u16 {
        self.default_replication_factor
    }

    /// The replication factor `__consumer_offsets` is created with
    /// (Kafka's `offsets.topic.replication.factor`): as set, or by default
    /// 3, or the number of brokers if there are fewer.
    #[must_use]
    pub fn offsets_topic_replication_factor(&self) -> u16 {
        self.offsets_topic_replication_factor
            .unwrap_or_else(|| u16::try_from(self.brokers.min(3)).expect("at most 3"))
    }

    /// The replication factor `__transaction_state` is created with
    /// (Kafka's `transaction.state.log.replication.factor`): as set, or by
    /// default 3, or the number of brokers if there are fewer.
    #[must_use]
    pub fn transaction_state_log_replication_factor(&self) -> u16 {
        self.txn_state_replication_factor
            .unwrap_or_else(|| u16::try_from(self.brokers.min(3)).expect("at most 3"))
    }

    /// The `min.insync.replicas` of `__transaction_state` (Kafka's
    /// `transaction.state.log.min.isr`, default 2), capped by its
    /// replication factor.
    #[must_use]
    pub fn transaction_state_log_min_isr(&self) -> u16 {
        self.txn_state_min_isr
            .min(self.transaction_state_log_replication_factor())
    }

    /// Partitions of `__transaction_state` (Kafka's
    /// `transaction.state.log.num.partitions`, default 50).
    #[must_use]
    pub fn transaction_state_log_num_partitions(&self) -> u32 {
        self.txn_state_partitions
    }

    /// The largest `transaction.timeout.ms` a transactional producer may
    /// ask for (Kafka's `transaction.max.timeout.ms`, default 15 minutes).
    #[must_use]
    pub fn transaction_max_timeout(&self) -> Duration {
        duration(self.txn_max_timeout_ms)
    }

    /// How often the transaction coordinator aborts transactions left
    /// open past their timeout (Kafka's
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`,
    /// default 10 seconds).
    #[must_use]
    pub fn transaction_abort_interval(&self) -> Duration {
        duration(self.txn_abort_interval_ms)
    }

    /// How long a transactional id may go without a state change before
    /// the transaction coordinator forgets it (Kafka's broker setting
    /// `transactional.id.expiration.ms`, default 7 days); see
    /// [`ClusterConfigBuilder::transactional_id_expiration`].
    #[must_use]
    pub fn transactional_id_expiration(&self) -> Duration {
        duration(self.transactional_id_expiration_ms)
    }

    /// How often the transaction coordinator removes expired
    /// transactional ids (Kafka's
    /// `transaction.remove.expired.transaction.cleanup.interval.ms`,
    /// default 1 hour).
    #[must_use]
    pub fn transaction_remove_expired_interval(&self) -> Duration {
        duration(self.txn_remove_expired_interval_ms)
    }

    /// Partitions of a topic created without a count (Kafka's
    /// `num.partitions`, default 1).
    #[must_use]
    pub fn num_partitions(&self) -> u32 {
        self.num_partitions
    }

    /// The topic configs every topic starts from (Kafka's broker-level
    /// `log.*` defaults).
    #[must_use]
    pub fn topic_defaults(&self) -> &TopicConfig {
        &self.topic_defaults
    }

    /// How often recovery points and log start offsets are checkpointed
    /// (Kafka's `log.flush.offset.checkpoint.interval.ms`, default 60 s).
    #[must_use]
    pub fn checkpoint_interval(&self) -> Duration {
        duration(self.checkpoint_interval_ms)
    }

    /// The smallest `session.timeout.ms` a consumer may join a group with
    /// (Kafka's `group.min.session.timeout.ms`, default 6 s).
    #[must_use]
    pub fn group_min_session_timeout(&self) -> Duration {
        duration(self.group_min_session_timeout_ms)
    }

    /// The largest `session.timeout.ms` a consumer may join a group with
    /// (Kafka's `group.max.session.timeout.ms`, default 30 minutes).
    #[must_use]
    pub fn group_max_session_timeout(&self) -> Duration {
        duration(self.group_max_session_timeout_ms)
    }

    /// How long the first rebalance of an empty group waits for more
    /// members to join (Kafka's `group.initial.rebalance.delay.ms`). The
    /// default is 0, not Kafka's 3000: members of an embedded group join
    /// within microseconds of each other, and Kafka itself recommends 0 for
    /// tests and development.
    #[must_use]
    pub fn group_initial_rebalance_delay(&self) -> Duration {
        duration(self.group_initial_rebalance_delay_ms)
    }

    /// How often each partition checks retention and, if compacted,
    /// whether to clean (Kafka's `log.retention.check.interval.ms`, default
    /// 5 minutes).
    #[must_use]
    pub fn retention_check_interval(&self) -> Duration {
        duration(self.retention_check_interval_ms)
    }

    /// How long a partition remembers an idempotent producer after its
    /// last write (Kafka's broker setting `producer.id.expiration.ms`,
    /// default 1 day); see [`ClusterConfigBuilder::producer_id_expiration`].
    #[must_use]
    pub fn producer_id_expiration(&self) -> Duration {
        duration(self.producer_id_expiration_ms)
    }

    /// Threads that run the partition logs' background work: flushing
    /// rolled segments, removing deleted ones, the interval flush,
    /// retention and compaction (Kafka's `background.threads`). The default
    /// is 2, not Kafka's 10: an embedded cluster shares its process.
    #[must_use]
    pub fn background_threads(&self) -> usize {
        self.background_threads
    }

    /// The most partitions the cluster may hold, over all topics, internal
    /// ones included (default and maximum
    /// [`MAX_PARTITIONS_PER_CLUSTER`](crate::MAX_PARTITIONS_PER_CLUSTER)).
    #[must_use]
    pub fn max_partitions(&self) -> u32 {
        self.max_partitions
    }

    /// How long the controller waits for a broker's heartbeat before it
    /// fences the broker and moves its leaderships (Kafka's
    /// `broker.session.timeout.ms`, default 9 s).
    #[must_use]
    pub fn broker_session_timeout(&self) -> Duration {
        duration(self.broker_session_timeout_ms)
    }

    /// How often each running broker heartbeats the controller (Kafka's
    /// `broker.heartbeat.interval.ms`, default 2 s).
    #[must_use]
    pub fn broker_heartbeat_interval(&self) -> Duration {
        duration(self.broker_heartbeat_interval_ms)
    }

    /// The replica managers' settings: the `replica.*` keys on the
    /// cluster's clock.
    /// Broker `id`'s file layer.
    pub(crate) fn broker_storage(&self, id: u32) -> Arc<dyn Storage> {
        self.broker_storages
            .get(&id)
            .cloned()
            .unwrap_or_else(|| self.storage.clone())
    }

    pub(crate) fn replica_config(&self) -> crate::replica::ReplicaConfig {
        crate::replica::ReplicaConfig {
            lag_time_max_ms: self.replica_lag_time_max_ms,
            fetch_wait_max_ms: self.replica_fetch_wait_max_ms,
            fetch_max_bytes: self.replica_fetch_max_bytes,
            #[cfg(test)]
            injected_bug: self.injected_bug,
            ..crate::replica::ReplicaConfig::new(self.clock.clone())
        }
    }

    /// How long a follower may go without catching up to its leader's log
    /// end before the leader drops it from the ISR (Kafka's
    /// `replica.lag.time.max.ms`, default 30 s).
    #[must_use]
    pub fn replica_lag_time_max(&self) -> Duration {
        duration(self.replica_lag_time_max_ms)
    }

    /// How long a follower's fetch waits at the leader for new data
    /// (Kafka's `replica.fetch.wait.max.ms`, default 500 ms).
    #[must_use]
    pub fn replica_fetch_wait_max(&self) -> Duration {
        duration(self.replica_fetch_wait_max_ms)
    }

    /// The bytes a follower's fetch asks for per partition (Kafka's
    /// `replica.fetch.max.bytes`, default 1 MiB; a larger first batch is
    /// still returned whole).
    #[must_use]
    pub fn replica_fetch_max_bytes(&self) -> usize {
        self.replica_fetch_max_bytes
    }

    /// Whether a broker that returns takes back the leadership of the
    /// partitions it prefers (it is their first replica) once it is in
    /// their ISR (Kafka's `auto.leader.rebalance.enable`, default true).
    #[must_use]
    pub fn auto_leader_rebalance_enable(&self) -> bool {
        self.auto_leader_rebalance_enable
    }

    /// The clock every timeout and timestamp reads.
    #[must_use]
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
}

/// Builds a [`ClusterConfig`].
#[derive(Debug)]
#[must_use]
pub struct ClusterConfigBuilder {
    config: ClusterConfig,
}

impl ClusterConfigBuilder {
    /// Number of brokers, 1 to [`MAX_BROKERS`](crate::MAX_BROKERS)
    /// (default 1). Broker `id` (`0..brokers`) keeps its partitions in
    /// `<root>/broker-<id>/` unless [`broker_dir`](Self::broker_dir) puts
    /// it elsewhere, and has its own replica manager and log threads
    /// (`background.threads` each).
    ///
    /// A cluster remembers its brokers (the metadata log registers each
    /// one): reopening it with fewer brokers than it had is refused with
    /// [`Error::InvalidConfig`], since their replicas would be missing;
    /// reopening with more adds brokers, which host the replicas of topics
    /// created from then on. Replicas of a partition live on distinct
    /// brokers, so `acks=all` records survive the loss of brokers and
    /// their disks within the limits the README's "Replication" section
    /// states.
    pub fn brokers(mut self, brokers: u32) -> Self {
        self.config.brokers = brokers;
        self
    }

    /// Puts broker `id`'s data directory at `path` instead of
    /// `<root>/broker-<id>` (so brokers can sit on different disks).
    /// `build()` refuses an id not below [`brokers`](Self::brokers) and two
    /// brokers given the same path. The directory is locked while the
    /// cluster is open and holds a `meta.properties` naming the cluster
    /// and the broker, so a reopen that swaps two brokers' paths, or
    /// points a broker at another cluster's directory, is refused.
    pub fn broker_dir(mut self, id: u32, path: impl Into<PathBuf>) -> Self {
        self.config.broker_dirs.insert(id, path.into());
        self
    }

    /// Kafka's `default.replication.factor` (default 1): the replication
    /// factor of a topic created without one
    /// ([`NewTopic::replication_factor`](crate::NewTopic::replication_factor)).
    /// `__consumer_offsets` has its own,
    /// [`offsets_topic_replication_factor`](Self::offsets_topic_replication_factor).
    /// 1 to
    /// [`MAX_REPLICATION_FACTOR`](crate::MAX_REPLICATION_FACTOR), and at
    /// most [`brokers`](Self::brokers).
    pub fn default_replication_factor(mut self, factor: u16) -> Self {
        self.config.default_replication_factor = factor;
        self
    }

    /// Kafka's `offsets.topic.replication.factor`: the replication factor
    /// of the internal `__consumer_offsets` topic, created at the first
    /// offset commit. By default 3, as in Kafka, or the number of brokers
    /// if there are fewer (Kafka would refuse to create the topic on a
    /// smaller cluster; an embedded one-broker cluster must just work). 1
    /// to [`MAX_REPLICATION_FACTOR`](crate::MAX_REPLICATION_FACTOR), and at
    /// most [`brokers`](Self::brokers). An existing `__consumer_offsets`
    /// keeps the factor it was created with.
    ///
    /// If fewer brokers are live than this factor when the topic has to be
    /// created, the commit fails with the retriable
    /// [`Error::CoordinatorNotAvailable`](crate::Error::CoordinatorNotAvailable).
    ///
    /// ```
    /// use logbus::ClusterConfig;
    /// let config = ClusterConfig::builder().brokers(5).build()?;
    /// assert_eq!(config.offsets_topic_replication_factor(), 3);
    /// let config = ClusterConfig::builder().brokers(1).build()?;
    /// assert_eq!(config.offsets_topic_replication_factor(), 1);
    /// let config = ClusterConfig::builder()
    ///     .brokers(5)
    ///     .offsets_topic_replication_factor(5)
    ///     .build()?;
    /// assert_eq!(config.offsets_topic_replication_factor(), 5);
    /// # Ok::<(), logbus::Error>(())
    /// ```
    pub fn offsets_topic_replication_factor(mut self, factor: u16) -> Self {
        self.config.offsets_topic_replication_factor = Some(factor);
        self
    }

    /// Kafka's `transaction.state.log.replication.factor`: the replication
    /// factor of the internal `__transaction_state` topic, created at the
    /// first `init_transactions`. By default 3, or the number of brokers if
    /// there are fewer (as `offsets.topic.replication.factor`). 1 to
    /// [`MAX_REPLICATION_FACTOR`](crate::MAX_REPLICATION_FACTOR), and at
    /// most [`brokers`](Self::brokers). An existing topic keeps the factor
    /// it was created with.
    pub fn transaction_state_log_replication_factor(mut self, factor: u16) -> Self {
        self.config.txn_state_replication_factor = Some(factor);
        self
    }

    /// Kafka's `transaction.state.log.min.isr` (default 2): the
    /// `min.insync.replicas` of `__transaction_state`, capped by its
    /// replication factor. At least 1.
    pub fn transaction_state_log_min_isr(mut self, replicas: u16) -> Self {
        self.config.txn_state_min_isr = replicas;
        self
    }

    /// Kafka's `transaction.state.log.num.partitions` (default 50): the
    /// partition count of `__transaction_state`, fixed when it is created
    /// (transactional ids are placed by it). 1 to
    /// [`MAX_PARTITIONS_PER_TOPIC`](crate::MAX_PARTITIONS_PER_TOPIC).
    pub fn transaction_state_log_num_partitions(mut self, partitions: u32) -> Self {
        self.config.txn_state_partitions = partitions;
        self
    }

    /// Kafka's `transaction.max.timeout.ms` (default 15 minutes): a
    /// producer asking for a longer `transaction.timeout.ms` is refused
    /// with [`Error::InvalidTransactionTimeout`](crate::Error::InvalidTransactionTimeout).
    /// Whole milliseconds, 1 ms to `i32::MAX` ms.
    pub fn transaction_max_timeout(mut self, timeout: Duration) -> Self {
        self.config.txn_max_timeout_ms = millis(timeout);
        self
    }

    /// Kafka's `transaction.abort.timed.out.transaction.cleanup.interval.ms`
    /// (default 10 seconds): how often the transaction coordinator aborts
    /// transactions left open past their `transaction.timeout.ms` (and
    /// retries markers it could not write). Whole milliseconds, at least 1.
    pub fn transaction_abort_interval(mut self, interval: Duration) -> Self {
        self.config.txn_abort_interval_ms = millis(interval);
        self
    }

    /// Kafka's `transactional.id.expiration.ms` (default 7 days): a
    /// transactional id whose state has not changed for this long, with
    /// no transaction open or completing (its state is `Empty`,
    /// `CompleteCommit` or `CompleteAbort`), is removed by the transaction
    /// coordinator at its next removal pass (every
    /// [`transaction_remove_expired_interval`](Self::transaction_remove_expired_interval)):
    /// a tombstone for it is written to `__transaction_state`, and a
    /// reopen no longer knows it. The next `init_transactions` with that
    /// id starts afresh, with a new producer id at epoch 0; a producer
    /// still holding the old producer id is refused with
    /// [`Error::InvalidProducerIdMapping`](crate::Error::InvalidProducerIdMapping).
    /// An open transaction never expires this way (its
    /// `transaction.timeout.ms` aborts it first). Independent of
    /// [`producer_id_expiration`](Self::producer_id_expiration), which
    /// the partitions apply. Whole milliseconds, at least 1.
    ///
    /// ```
    /// use std::time::Duration;
    /// use logbus::ClusterConfig;
    /// let config = ClusterConfig::builder()
    ///     .transactional_id_expiration(Duration::from_secs(24 * 3600))
    ///     .build()?;
    /// assert_eq!(
    ///     config.transactional_id_expiration(),
    ///     Duration::from_secs(24 * 3600)
    /// );
    /// # Ok::<(), logbus::Error>(())
    /// ```
    pub fn transactional_id_expiration(mut self, expiration: Duration) -> Self {
        self.config.transactional_id_expiration_ms = millis(expiration);
        self
    }

    /// Kafka's `transaction.remove.expired.transaction.cleanup.interval.ms`
    /// (default 1 hour): how often the transaction coordinator removes
    /// transactional ids past their
    /// [`transactional_id_expiration`](Self::transactional_id_expiration),
    /// on the cluster's clock; the first removal pass runs one interval
    /// after the cluster opens. Whole milliseconds, at least 1.
    pub fn transaction_remove_expired_interval(mut self, interval: Duration) -> Self {
        self.config.txn_remove_expired_interval_ms = millis(interval);
        self
    }

    /// Kafka's `num.partitions`: partitions of a topic created without a
    /// count.
    pub fn num_partitions(mut self, partitions: u32) -> Self {
        self.config.num_partitions = partitions;
        self
    }

    /// The topic configs every topic starts from; a topic's own configs are
    /// laid over them.
    pub fn topic_defaults(mut self, defaults: TopicConfig) -> Self {
        self.config.topic_defaults = defaults;
        self
    }

    /// The clock (default: [`SystemClock`]). Tests pass a
    /// [`ManualClock`](crate::ManualClock) to drive every timeout by hand.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.config.clock = clock;
        self
    }

    /// Kafka's `log.flush.offset.checkpoint.interval.ms`: how often each
    /// partition's recovery point and log start offset are written to the
    /// broker's checkpoint files (default 60 s). After a crash, recovery
    /// scans each partition from its last checkpointed recovery point.
    pub fn checkpoint_interval(mut self, time: Duration) -> Self {
        self.config.checkpoint_interval_ms = millis(time);
        self
    }

    /// Kafka's `group.min.session.timeout.ms` (default 6 s): consumers
    /// with a smaller `session.timeout.ms` cannot join a group.
    pub fn group_min_session_timeout(mut self, time: Duration) -> Self {
        self.config.group_min_session_timeout_ms = millis(time);
        self
    }

    /// Kafka's `group.max.session.timeout.ms` (default 30 minutes).
    pub fn group_max_session_timeout(mut self, time: Duration) -> Self {
        self.config.group_max_session_timeout_ms = millis(time);
        self
    }

    /// Kafka's `group.initial.rebalance.delay.ms` (default 0).
    pub fn group_initial_rebalance_delay(mut self, time: Duration) -> Self {
        self.config.group_initial_rebalance_delay_ms = millis(time);
        self
    }

    /// Kafka's `log.retention.check.interval.ms` (default 5 minutes): how
    /// often each partition enforces `retention.ms` and `retention.bytes`
    /// and, if it is compacted, checks whether it is dirty enough
    /// (`min.cleanable.dirty.ratio`) to clean. logbus runs both checks on
    /// this one timer (Kafka's cleaner polls on its own,
    /// `log.cleaner.backoff.ms`). [`Partition::enforce_retention`] and
    /// [`Partition::clean`] run either now. Whole milliseconds, at least 1.
    ///
    /// [`Partition::enforce_retention`]: crate::Partition::enforce_retention
    /// [`Partition::clean`]: crate::Partition::clean
    pub fn retention_check_interval(mut self, interval: Duration) -> Self {
        self.config.retention_check_interval_ms = millis(interval);
        self
    }

    /// Kafka's `producer.id.expiration.ms` (default 1 day), for every
    /// partition: a producer whose last batch in a partition is this old
    /// (by the batch's timestamp), with no transaction open there, is
    /// forgotten at the next retention check or open, so its next batch
    /// must start at sequence 0 again (else `UnknownProducerId`). Whole
    /// milliseconds, at least 1.
    ///
    /// ```
    /// use std::time::Duration;
    /// use logbus::ClusterConfig;
    /// let config = ClusterConfig::builder()
    ///     .producer_id_expiration(Duration::from_secs(3600))
    ///     .build()?;
    /// assert_eq!(config.producer_id_expiration(), Duration::from_secs(3600));
    /// # Ok::<(), logbus::Error>(())
    /// ```
    pub fn producer_id_expiration(mut self, expiration: Duration) -> Self {
        self.config.producer_id_expiration_ms = millis(expiration);
        self
    }

    /// Kafka's `background.threads` (default 2, not Kafka's 10): how many
    /// threads (`logbus-log-N`) run every partition log's background work,
    /// whatever the number of partitions. A long compaction pass holds one
    /// of them; with one thread, other logs' flushes and removals wait for
    /// it to end. At most 1024: every thread starts when the cluster
    /// opens.
    pub fn background_threads(mut self, threads: usize) -> Self {
        self.config.background_threads = threads;
        self
    }

    /// The most partitions the cluster may hold, over all topics, internal
    /// ones (`__consumer_offsets` has 50) included: a
    /// [`create_topic`](crate::Cluster::create_topic) or
    /// [`create_partitions`](crate::Cluster::create_partitions) that would
    /// pass it fails with [`Error::InvalidPartitions`] and stores nothing.
    /// Default and maximum:
    /// [`MAX_PARTITIONS_PER_CLUSTER`](crate::MAX_PARTITIONS_PER_CLUSTER).
    /// Every partition keeps at least four files open (its active
    /// segment's log and two indexes, and its directory lock) and three
    /// memory maps, and three more of each per further segment: lower this
    /// to what the process's `ulimit -n` and the system's
    /// `vm.max_map_count` allow. A cluster that already holds more (a
    /// lower limit on reopen) keeps its partitions but cannot add any.
    pub fn max_partitions(mut self, partitions: u32) -> Self {
        self.config.max_partitions = partitions;
        self
    }

    /// Kafka's `broker.session.timeout.ms` (default 9 s): a broker whose
    /// last heartbeat is older than this is fenced: its leaderships move
    /// to other in-sync replicas and it leaves every ISR (unless it is a
    /// partition's last in-sync replica). A broker stopped cleanly is
    /// fenced at once (Kafka's controlled shutdown). Whole milliseconds,
    /// at least 1, above the heartbeat interval.
    pub fn broker_session_timeout(mut self, timeout: Duration) -> Self {
        self.config.broker_session_timeout_ms = millis(timeout);
        self
    }

    /// Kafka's `broker.heartbeat.interval.ms` (default 2 s): how often a
    /// running broker heartbeats the controller. At least 1 ms, below the
    /// session timeout.
    pub fn broker_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.config.broker_heartbeat_interval_ms = millis(interval);
        self
    }

    /// Kafka's `replica.lag.time.max.ms` (default 30 s): a follower that
    /// has not caught up to its leader's log end for this long leaves the
    /// ISR. At least 1 ms.
    pub fn replica_lag_time_max(mut self, time: Duration) -> Self {
        self.config.replica_lag_time_max_ms = millis(time);
        self
    }

    /// Kafka's `replica.fetch.wait.max.ms` (default 500 ms): the longest a
    /// follower's fetch waits at the leader for new data. At most
    /// `replica.lag.time.max.ms`, as Kafka requires (a follower waiting
    /// longer would drop out of the ISR while idle).
    pub fn replica_fetch_wait_max(mut self, time: Duration) -> Self {
        self.config.replica_fetch_wait_max_ms = millis(time);
        self
    }

    /// Kafka's `replica.fetch.max.bytes` (default 1 MiB): the bytes a
    /// follower's fetch asks for per partition. 1 to 2³¹−1.
    pub fn replica_fetch_max_bytes(mut self, bytes: usize) -> Self {
        self.config.replica_fetch_max_bytes = bytes;
        self
    }

    /// Kafka's `auto.leader.rebalance.enable` (default true): when a
    /// broker returns, it takes back the leadership of every partition it
    /// prefers (it is the first replica) if it is live and in the ISR.
    /// [`Cluster::elect_preferred_leaders`](crate::Cluster::elect_preferred_leaders)
    /// does the same on demand.
    pub fn auto_leader_rebalance_enable(mut self, enable: bool) -> Self {
        self.config.auto_leader_rebalance_enable = enable;
        self
    }

    /// Runs the controller's liveness thread (default) or not: without it
    /// brokers are fenced only when a test calls the liveness step itself.
    #[cfg(test)]
    pub(crate) fn controller_thread(mut self, run: bool) -> Self {
        self.config.controller_thread = run;
        self
    }

    /// Runs the followers' fetcher threads (default) or not: without them
    /// followers are fed only when a test fetches for them.
    #[cfg(test)]
    pub(crate) fn replica_fetchers(mut self, run: bool) -> Self {
        self.config.replica_fetchers = run;
        self
    }

    /// The file layer (default: [`StdStorage`]).
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.config.storage = storage;
        self
    }

    /// Gives broker `id`'s data directory a file layer of its own (default:
    /// the cluster's [`storage`](Self::storage)); the root, its lock and the
    /// metadata log stay on the cluster's. With a fault-injecting storage
    /// per broker, one broker's power loss or failing disk can be simulated
    /// while the others run on (see [`Cluster::crash_broker`](crate::Cluster::crash_broker)).
    /// `build()` refuses an id not below [`brokers`](Self::brokers).
    pub fn broker_storage(mut self, id: u32, storage: Arc<dyn Storage>) -> Self {
        self.config.broker_storages.insert(id, storage);
        self
    }

    /// Validates and returns the configuration.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the invalid setting.
    pub fn build(self) -> Result<ClusterConfig> {
        self.config.validate()?;
        Ok(self.config)
    }
}

impl ClusterConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        let c = self;
        if c.brokers == 0 || c.brokers > MAX_BROKERS {
            return Err(Error::InvalidConfig(format!(
                "brokers={} must be between 1 and {MAX_BROKERS} (logbus::MAX_BROKERS)",
                c.brokers
            )));
        }
        if let Some(&id) = c.broker_storages.keys().find(|&&id| id >= c.brokers) {
            return Err(Error::InvalidConfig(format!(
                "broker_storage names broker {id}, but brokers={} (ids 0..{})",
                c.brokers, c.brokers
            )));
        }
        if let Some(&id) = c.broker_dirs.keys().find(|&&id| id >= c.brokers) {
            return Err(Error::InvalidConfig(format!(
                "broker_dir({id}, ..): broker ids are 0..{} (brokers={})",
                c.brokers, c.brokers
            )));
        }
        let mut seen = BTreeMap::new();
        for (id, path) in &c.broker_dirs {
            if let Some(other) = seen.insert(path, id) {
                return Err(Error::InvalidConfig(format!(
                    "brokers {other} and {id} were given the same directory {}",
                    path.display()
                )));
            }
        }
        let factor = c.default_replication_factor;
        if factor == 0 || factor > MAX_REPLICATION_FACTOR || u32::from(factor) > c.brokers {
            return Err(Error::InvalidConfig(format!(
                "default.replication.factor={factor} must be between 1 and the number of \
                 brokers ({}), at most {MAX_REPLICATION_FACTOR} (logbus::MAX_REPLICATION_FACTOR)",
                c.brokers
            )));
        }
        if let Some(factor) = c.offsets_topic_replication_factor
            && (factor == 0 || factor > MAX_REPLICATION_FACTOR || u32::from(factor) > c.brokers)
        {
            return Err(Error::InvalidConfig(format!(
                "offsets.topic.replication.factor={factor} must be between 1 and the number of \
                 brokers ({}), at most {MAX_REPLICATION_FACTOR} (logbus::MAX_REPLICATION_FACTOR)",
                c.brokers
            )));
        }
        if let Some(factor) = c.txn_state_replication_factor
            && (factor == 0 || factor > MAX_REPLICATION_FACTOR || u32::from(factor) > c.brokers)
        {
            return Err(Error::InvalidConfig(format!(
                "transaction.state.log.replication.factor={factor} must be between 1 and the \
                 number of brokers ({}), at most {MAX_REPLICATION_FACTOR} \
                 (logbus::MAX_REPLICATION_FACTOR)",
                c.brokers
            )));
        }
        if c.txn_state_min_isr == 0 {
            return Err(Error::InvalidConfig(
                "transaction.state.log.min.isr must be >= 1".into(),
            ));
        }
        if c.txn_state_partitions == 0 || c.txn_state_partitions > MAX_PARTITIONS_PER_TOPIC {
            return Err(Error::InvalidConfig(format!(
                "transaction.state.log.num.partitions={} must be between 1 and \
                 {MAX_PARTITIONS_PER_TOPIC}",
                c.txn_state_partitions
            )));
        }
        if c.txn_max_timeout_ms < 1 || c.txn_max_timeout_ms > i64::from(i32::MAX) {
            return Err(Error::InvalidConfig(format!(
                "transaction.max.timeout.ms={} must be between 1 and {}",
                c.txn_max_timeout_ms,
                i32::MAX
            )));
        }
        if c.txn_abort_interval_ms < 1 {
            return Err(Error::InvalidConfig(
                "transaction.abort.timed.out.transaction.cleanup.interval.ms must be >= 1".into(),
            ));
        }
        if c.transactional_id_expiration_ms < 1 {
            return Err(Error::InvalidConfig(
                "transactional.id.expiration.ms must be >= 1".into(),
            ));
        }
        if c.txn_remove_expired_interval_ms < 1 {
            return Err(Error::InvalidConfig(
                "transaction.remove.expired.transaction.cleanup.interval.ms must be >= 1".into(),
            ));
        }
        if c.checkpoint_interval_ms < 1 {
            return Err(Error::InvalidConfig(
                "log.flush.offset.checkpoint.interval.ms must be >= 1".into(),
            ));
        }
        if c.group_max_session_timeout_ms < c.group_min_session_timeout_ms {
            return Err(Error::InvalidConfig(format!(
                "group.min.session.timeout.ms ({}) must be at most \
                 group.max.session.timeout.ms ({})",
                c.group_min_session_timeout_ms, c.group_max_session_timeout_ms
            )));
        }
        if c.retention_check_interval_ms < 1 {
            return Err(Error::InvalidConfig(
                "log.retention.check.interval.ms must be >= 1".into(),
            ));
        }
        if c.producer_id_expiration_ms < 1 {
            return Err(Error::InvalidConfig(
                "producer.id.expiration.ms must be >= 1".into(),
            ));
        }
        if c.background_threads == 0 || c.background_threads > MAX_BACKGROUND_THREADS {
            return Err(Error::InvalidConfig(format!(
                "background.threads={} must be between 1 and {MAX_BACKGROUND_THREADS}",
                c.background_threads
            )));
        }
        if c.num_partitions == 0 || c.num_partitions > MAX_PARTITIONS_PER_TOPIC {
            return Err(Error::InvalidConfig(format!(
                "num.partitions={} must be between 1 and {MAX_PARTITIONS_PER_TOPIC} \
                 (logbus::MAX_PARTITIONS_PER_TOPIC)",
                c.num_partitions
            )));
        }
        if c.max_partitions == 0 || c.max_partitions > MAX_PARTITIONS_PER_CLUSTER {
            return Err(Error::InvalidConfig(format!(
                "max.partitions={} must be between 1 and {MAX_PARTITIONS_PER_CLUSTER} \
                 (logbus::MAX_PARTITIONS_PER_CLUSTER)",
                c.max_partitions
            )));
        }
        if c.broker_heartbeat_interval_ms < 1
            || c.broker_session_timeout_ms <= c.broker_heartbeat_interval_ms
        {
            return Err(Error::InvalidConfig(format!(
                "broker.heartbeat.interval.ms={} must be at least 1 and below \
                 broker.session.timeout.ms={}",
                c.broker_heartbeat_interval_ms, c.broker_session_timeout_ms
            )));
        }
        if c.replica_lag_time_max_ms < 1 {
            return Err(Error::InvalidConfig(
                "replica.lag.time.max.ms must be >= 1".into(),
            ));
        }
        if c.replica_fetch_wait_max_ms > c.replica_lag_time_max_ms {
            return Err(Error::InvalidConfig(format!(
                "replica.fetch.wait.max.ms={} must be at most replica.lag.time.max.ms={}: a \
                 follower waiting longer would leave the ISR while idle",
                c.replica_fetch_wait_max_ms, c.replica_lag_time_max_ms
            )));
        }
        if c.replica_fetch_max_bytes == 0 || c.replica_fetch_max_bytes > i32::MAX as usize {
            return Err(Error::InvalidConfig(format!(
                "replica.fetch.max.bytes={} must be between 1 and {}",
                c.replica_fetch_max_bytes,
                i32::MAX
            )));
        }
        c.topic_defaults.log_config()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_and_replica_settings_have_kafkas_defaults_and_are_checked() {
        let c = ClusterConfig::default();
        assert_eq!(c.broker_session_timeout(), Duration::from_secs(9));
        assert_eq!(c.broker_heartbeat_interval(), Duration::from_secs(2));
        assert_eq!(c.replica_lag_time_max(), Duration::from_secs(30));
        assert_eq!(c.replica_fetch_wait_max(), Duration::from_millis(500));
        assert_eq!(c.replica_fetch_max_bytes(), 1024 * 1024);
        assert!(c.auto_leader_rebalance_enable());
        let set = ClusterConfig::builder()
            .broker_session_timeout(Duration::from_secs(3))
            .broker_heartbeat_interval(Duration::from_millis(500))
            .replica_lag_time_max(Duration::from_secs(5))
            .replica_fetch_wait_max(Duration::from_secs(5))
            .replica_fetch_max_bytes(4096)
            .auto_leader_rebalance_enable(false)
            .build()
            .unwrap();
        assert_eq!(set.broker_session_timeout(), Duration::from_secs(3));
        assert_eq!(set.broker_heartbeat_interval(), Duration::from_millis(500));
        assert_eq!(set.replica_lag_time_max(), Duration::from_secs(5));
        assert_eq!(set.replica_fetch_wait_max(), Duration::from_secs(5));
        assert_eq!(set.replica_fetch_max_bytes(), 4096);
        assert!(!set.auto_leader_rebalance_enable());
        let refused = |b: ClusterConfigBuilder, key: &str| match b.build() {
            Err(Error::InvalidConfig(m)) => assert!(m.contains(key), "{key}: {m}"),
            other => panic!("{key}: {other:?}"),
        };
        let b = ClusterConfig::builder;
        refused(
            b().broker_heartbeat_interval(Duration::from_secs(9)),
            "broker.heartbeat.interval.ms",
        );
        refused(
            b().broker_session_timeout(Duration::from_secs(1)),
            "broker.session.timeout.ms",
        );
        refused(
            b().broker_heartbeat_interval(Duration::ZERO),
            "broker.heartbeat.interval.ms",
        );
        refused(
            b().replica_lag_time_max(Duration::ZERO),
            "replica.lag.time.max.ms",
        );
        refused(
            b().replica_fetch_wait_max(Duration::from_secs(31)),
            "replica.fetch.wait.max.ms",
        );
        refused(b().replica_fetch_max_bytes(0), "replica.fetch.max.bytes");
        refused(
            b().replica_fetch_max_bytes(1 << 31),
            "replica.fetch.max.bytes",
        );
        refused(
            b().offsets_topic_replication_factor(0),
            "offsets.topic.replication.factor",
        );
        refused(
            b().brokers(2).offsets_topic_replication_factor(3),
            "offsets.topic.replication.factor",
        );
        refused(
            b().transaction_state_log_replication_factor(0),
            "transaction.state.log.replication.factor",
        );
        refused(
            b().brokers(2).transaction_state_log_replication_factor(3),
            "transaction.state.log.replication.factor",
        );
        refused(
            b().transaction_state_log_min_isr(0),
            "transaction.state.log.min.isr",
        );
        for partitions in [0, MAX_PARTITIONS_PER_TOPIC + 1] {
            refused(
                b().transaction_state_log_num_partitions(partitions),
                "transaction.state.log.num.partitions",
            );
        }
        for timeout in [Duration::ZERO, Duration::from_millis(1 << 31)] {
            refused(
                b().transaction_max_timeout(timeout),
                "transaction.max.timeout.ms",
            );
        }
        refused(
            b().transaction_abort_interval(Duration::ZERO),
            "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        );
        for expiration in [Duration::ZERO, Duration::from_micros(999)] {
            refused(
                b().transactional_id_expiration(expiration),
                "transactional.id.expiration.ms",
            );
        }
        refused(
            b().transaction_remove_expired_interval(Duration::ZERO),
            "transaction.remove.expired.transaction.cleanup.interval.ms",
        );
    }

    #[test]
    fn transaction_settings_default_to_kafkas() {
        let one = ClusterConfig::default();
        assert_eq!(one.transaction_state_log_replication_factor(), 1);
        assert_eq!(
            one.transaction_state_log_min_isr(),
            1,
            "capped by the factor"
        );
        assert_eq!(one.transaction_state_log_num_partitions(), 50);
        assert_eq!(one.transaction_max_timeout(), Duration::from_secs(900));
        assert_eq!(one.transaction_abort_interval(), Duration::from_secs(10));
        assert_eq!(
            one.transactional_id_expiration(),
            Duration::from_secs(7 * 24 * 3600)
        );
        assert_eq!(
            one.transaction_remove_expired_interval(),
            Duration::from_secs(3600)
        );
        let five = ClusterConfig::builder().brokers(5).build().unwrap();
        assert_eq!(five.transaction_state_log_replication_factor(), 3);
        assert_eq!(five.transaction_state_log_min_isr(), 2);
        let set = ClusterConfig::builder()
            .brokers(5)
            .transaction_state_log_replication_factor(5)
            .transaction_state_log_min_isr(4)
            .transaction_state_log_num_partitions(7)
            .transactional_id_expiration(Duration::from_millis(1))
            .transaction_remove_expired_interval(Duration::from_secs(60))
            .build()
            .unwrap();
        assert_eq!(set.transactional_id_expiration(), Duration::from_millis(1));
        assert_eq!(
            set.transaction_remove_expired_interval(),
            Duration::from_secs(60)
        );
        assert_eq!(set.transaction_state_log_replication_factor(), 5);
        assert_eq!(set.transaction_state_log_min_isr(), 4);
        assert_eq!(set.transaction_state_log_num_partitions(), 7);
    }
}
