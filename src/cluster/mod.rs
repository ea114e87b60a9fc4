//! L4: the cluster: brokers (one data directory each, with its own
//! replica manager and log threads) and the controller, which owns the
//! topic registry (topics, configs, each partition's replicas, leader,
//! leader epoch and ISR, the registered brokers) and persists it in its
//! metadata log.
//!
//! Every request for a partition goes to its leader's broker's
//! [`ReplicaManager`] ([`ClusterInner::replicas_for`]); another broker's
//! manager answers `NotLeaderOrFollower`, and a partition without a leader
//! `LeaderNotAvailable`. The controller fences a broker whose heartbeats
//! stop (`liveness.rs`) and moves its leaderships (`election.rs`,
//! `controller.rs`); followers' fetchers (`crate::replica`) copy each
//! leader's batches, and leaders propose ISR changes back through
//! `AlterPartition`.
//!
//! ## Locks
//! `controller` (the registry, the metadata log and the brokers' liveness)
//! is taken first and held for a whole create, delete, partition addition,
//! election or ISR change, so those run one at a time and a re-created
//! topic never meets its predecessor's files. Then `topics` (name to live
//! topic state), then a topic's `assignments` (read under `topics` to find
//! a partition's leader; written under `controller` when partitions are
//! added or a partition's state changes), then a broker's replica manager (its
//! table of hosted partitions, then a partition's log lock: see
//! [`crate::replica`]); no two brokers' locks are ever held together.
//! Appends and reads take only the last ones, shared.
//!
//! `clients` (weak references to the live producers) is taken alone, to
//! copy or extend it. [`Cluster::close`] copies it, then flushes each
//! producer holding no cluster lock (a producer's flush takes its own
//! accumulator lock and its sender thread appends through `topics` and a
//! replica's log lock), and only then takes `controller` to close the logs
//! (it stops the controller thread first, holding no lock: each of the
//! thread's liveness steps takes `controller`). `controller_thread` (the
//! handle of that thread) is taken alone, to wake or stop it.
//!
//! Each broker's slot in `brokers` (a `RwLock<Option<Arc<Broker>>>`) is
//! taken alone, briefly, to clone the running incarnation or (fault API,
//! `faults.rs`) to take it out or put a restarted one in; a restart puts it
//! in under `controller`. A stopped or crashed broker's fetcher threads are
//! joined with no cluster lock held (they may be inside `AlterPartition`,
//! waiting for `controller`).

mod admin;
mod broker;
mod checkpointer;
mod config;
mod controller;
mod coordinator;
mod election;
mod faults;
mod group;
mod handles;
mod liveness;
mod metadata;
mod observe;
mod offsets;
mod placement;
mod producer_ids;
mod rebuild;
mod replay;
mod report;
mod topic_config;
mod txn_coordinator;
mod txn_log;
mod txn_state;
#[cfg(test)]
mod txn_tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use crossbeam_channel::{Receiver, Sender};

use parking_lot::{Mutex, RwLock};
use uuid::Uuid;

use crate::clock::Clock;

/// Kafka's `default.api.timeout.ms`: how long a client call retries a
/// partition whose leadership is moving.
const DEFAULT_API_TIMEOUT_MS: i64 = 60_000;
use crate::config::LogConfig;
use crate::error::{CorruptionKind, Error, Result};
use crate::replica::{LeaderAndIsr, ReplicaManager, ReplicaRegistry};
use crate::storage::{DirLock, OpenMode, OverlayStorage, Storage, write_atomic};
use crate::types::TopicPartition;

/// How many bytes a [`ReadReleaser`] gathers before giving their pages back.
#[cfg(test)]
pub(crate) use crate::replica::RELEASE_CHUNK;
/// The replica manager's vocabulary, for the clients (which reach the
/// replica layer only through the cluster).
pub(crate) use crate::replica::{
    AppendAcks, FetchBound, PartitionOffsets, PendingAck, ReadReleaser, ReadSource,
    TopicIdPartition,
};
pub use admin::{GroupDescription, MemberDescription, OffsetSpec, PartitionLag};
pub use config::{ClusterConfig, ClusterConfigBuilder};
pub use faults::ReplicationStats;
pub(crate) use group::{GroupCoordinator, JoinRequest, JoinResponse, Joined, SyncResponse};
pub use group::{GroupState, Subscription};
pub use handles::{
    NewTopic, Partition, PartitionDescription, ReplicaDescription, Topic, TopicDescription,
};
pub use offsets::OffsetAndMetadata;
pub use report::{
    ClusterRecoveryReport, RebuildReport, RebuiltTopic, SkippedRecord, UnknownPartitionDir,
};
pub use topic_config::{AlterConfigOp, CleanupPolicy, MAX_TOPIC_NAME_LEN, TopicConfig};
pub(crate) use txn_coordinator::Markers;

use broker::{Broker, create_dir_durably, held_partition_dirs};
use checkpointer::Checkpointer;
use controller::Controller;
use metadata::{MetadataLog, MetadataRecord, Registry};
pub(crate) use topic_config::validate_topic_name;

const META_PROPERTIES: &str = "meta.properties";
const METADATA_DIR: &str = "__cluster_metadata-0";
/// Broker 0's directory: the one broker of a single-broker cluster.
const BROKER_DIR: &str = "broker-0";
const FORMAT_VERSION: &str = "1";

/// The most partitions one topic may have. Bounds what one create or
/// partition addition allocates and writes (its metadata batch is ~0.5 MiB)
/// and keeps every partition directory's name (`<topic>-<partition>`, with
/// a 249-character topic) within 255 bytes. Above it, creating a topic or
/// adding partitions fails with [`Error::InvalidPartitions`].
pub const MAX_PARTITIONS_PER_TOPIC: u32 = 10_000;

/// The most brokers a cluster may have
/// ([`ClusterConfigBuilder::brokers`]). Each broker starts its own
/// `background.threads` log threads.
pub const MAX_BROKERS: u32 = 64;

/// The largest replication factor a topic may have (and the largest
/// `default.replication.factor`); it must also be at most the number of
/// brokers. Above it, creating a topic fails with
/// [`Error::InvalidReplicationFactor`].
pub const MAX_REPLICATION_FACTOR: u16 = 10;

/// The most partitions a cluster may hold, over all topics (internal ones
/// included), and the largest value of
/// [`ClusterConfigBuilder::max_partitions`] (also its default). Each
/// partition keeps at least three memory maps (its active segment's log
/// and indexes) and four open files; Linux's default `vm.max_map_count` of
/// 65530 allows about 21,000 single-segment partitions.
pub const MAX_PARTITIONS_PER_CLUSTER: u32 = 20_000;

/// A client holding records the cluster must deliver before it closes (a
/// live producer's batches). The cluster keeps only weak references.
pub(crate) trait PendingRecords: Send + Sync + std::fmt::Debug {
    /// Delivers everything held, waiting until each record is appended (or
    /// failed). Called by [`Cluster::close`] with no cluster lock held.
    fn deliver_pending(&self);
}

/// An embedded Kafka cluster rooted at one directory.
///
/// Open it with [`Cluster::open`]; create topics, then produce and consume.
/// `Cluster` is `Send + Sync` and cheap to clone (clones share one cluster).
/// [`Cluster::close`] (or dropping the last clone and every handle made
/// from it) delivers what live producers hold, stops its threads, flushes
/// every partition, writes the checkpoints and releases the directory lock.
/// The drop of the last of them does this on the dropping thread, so the
/// directory can be opened again as soon as it returns.
///
/// ```
/// use logbus::{Cluster, ClusterConfig, NewTopic};
/// let dir = tempfile::tempdir()?;
/// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
/// let topic = cluster.create_topic(NewTopic::new("orders", 3))?;
/// assert_eq!(topic.partition_count(), 3);
/// assert_eq!(cluster.list_topics(), vec!["orders".to_string()]);
/// cluster.close()?;
///
/// // Everything is still there after a reopen.
/// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
/// assert_eq!(cluster.topic("orders")?.partition_count(), 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Cluster {
    pub(crate) inner: Arc<ClusterInner>,
}

/// The shared state behind every [`Cluster`] clone and handle.
#[derive(Debug)]
pub(crate) struct ClusterInner {
    root: PathBuf,
    config: ClusterConfig,
    cluster_id: String,
    controller: Mutex<Controller>,
    topics: RwLock<HashMap<String, Arc<TopicState>>>,
    /// The brokers, by id: each slot holds the running incarnation, or
    /// nothing while the broker is stopped or crashed (the fault API,
    /// `faults.rs`). Taken alone, briefly (a clone of the `Arc` is used).
    brokers: Vec<RwLock<Option<Arc<Broker>>>>,
    /// Every running broker's replica manager, by id: how followers'
    /// fetchers reach their leaders.
    registry: Arc<ReplicaRegistry>,
    /// Leader changes and ISR changes the controller applied.
    stats: faults::ReplicationCounters,
    /// What the cluster counts for [`Cluster::metrics`] and the `metrics`
    /// facade (`observe.rs`).
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    closed: AtomicBool,
    /// The root's lock and those of brokers placed elsewhere.
    lock: Mutex<Vec<DirLock>>,
    checkpointer: Mutex<Option<Checkpointer>>,
    /// The controller's liveness thread (brokers' heartbeats and fencing).
    controller_thread: Mutex<Option<liveness::ControllerThread>>,
    offsets: coordinator::OffsetStore,
    /// The transaction coordinator's state (`txn_coordinator.rs`).
    txn: txn_coordinator::TransactionCoordinator,
    /// Group membership (join, sync, heartbeat, leave).
    pub(crate) groups: GroupCoordinator,
    /// Bumped whenever a topic is created or deleted or gains partitions.
    metadata_epoch: AtomicU64,
    /// Strong references the cluster's own threads hold for a moment
    /// ([`InternalRef`]): not users' handles.
    internal_refs: Arc<Mutex<usize>>,
    /// Woken (like replica watchers) whenever `metadata_epoch` moves.
    metadata_watchers: Mutex<Vec<Sender<()>>>,
    /// [`Cluster::wait_until`]'s channels, also woken when a transaction
    /// gains partitions (which the other metadata watchers, such as the
    /// transaction timer, need not hear of: one wake-up per transaction).
    state_watchers: Mutex<Vec<Sender<()>>>,
    /// Periodic checkpoints written so far, for tests to wait on.
    checkpoints: (Mutex<u64>, parking_lot::Condvar),
    /// Live producers, flushed by `close` before any log closes.
    clients: Mutex<Vec<Weak<dyn PendingRecords>>>,
    /// What the open found and did.
    recovery: ClusterRecoveryReport,
    /// Opened with [`Cluster::open_read_only`]: every change is refused
    /// with [`Error::ReadOnly`].
    read_only: bool,
}

/// A live topic: its id, configuration and partitions.
#[derive(Debug)]
pub(crate) struct TopicState {
    pub(crate) name: Arc<str>,
    pub(crate) id: Uuid,
    /// The configuration as of now: replaced whole, under the controller
    /// lock, by `alter_topic_config` (read it with [`TopicState::configs`]).
    config: RwLock<Arc<TopicConfigs>>,
    /// Bumped after each replacement of `config`: a reader that cached
    /// what `configs` gave looks at it again only when this moved.
    config_version: std::sync::atomic::AtomicU64,
    /// The partition count (the producer reads it for every record).
    /// Stored after a new partition is hosted by the broker, so every
    /// partition below it exists.
    count: AtomicU32,
    /// Each partition's replicas, leader, leader epoch and ISR, by
    /// partition number; an entry is pushed before `count` covers it, and
    /// replaced by the controller after each persisted change.
    assignments: RwLock<Vec<LeaderAndIsr>>,
    deleted: AtomicBool,
    /// An internal topic (`__consumer_offsets`): only the cluster itself
    /// appends to it, deletes its records or changes its partitions.
    pub(crate) internal: bool,
}

/// A topic's configuration at one moment.
#[derive(Debug)]
pub(crate) struct TopicConfigs {
    /// Only the configs set for the topic (what the metadata log holds).
    pub(crate) overrides: TopicConfig,
    /// `overrides` over the cluster's topic defaults.
    pub(crate) effective: TopicConfig,
    /// What the topic's logs are given, from `effective`.
    pub(crate) log_config: LogConfig,
}

impl TopicState {
    /// The configuration as of now.
    pub(crate) fn configs(&self) -> Arc<TopicConfigs> {
        self.config.read().clone()
    }

    /// How many times the configuration was replaced (read it before
    /// [`TopicState::configs`]: a newer version means newer configs).
    pub(crate) fn config_version(&self) -> u64 {
        self.config_version.load(Ordering::Acquire)
    }

    /// Whether the topic was deleted (its handles then fail).
    pub(crate) fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    pub(crate) fn unknown(&self, partition: Option<u32>) -> Error {
        Error::UnknownTopicOrPartition {
            topic: self.name.to_string(),
            partition,
        }
    }

    /// The broker leading `partition`, if the topic has it.
    pub(crate) fn leader(&self, partition: u32) -> Option<u32> {
        self.assignments
            .read()
            .get(partition as usize)
            .and_then(|a| a.leader)
    }

    /// `partition`'s replicas, leader, leader epoch and ISR as the
    /// routing table holds them, if the topic has it.
    #[cfg_attr(not(feature = "server"), expect(dead_code, reason = "the listener's"))]
    pub(crate) fn roles(&self, partition: u32) -> Option<LeaderAndIsr> {
        self.assignments.read().get(partition as usize).cloned()
    }

    /// The current partition count (one atomic load, no lock).
    pub(crate) fn partition_count(&self) -> u32 {
        self.count.load(Ordering::Acquire)
    }

    /// The error for a public mutation of an internal topic (Kafka's
    /// `InvalidTopicException`), or `Ok` for a user topic.
    pub(crate) fn refuse_internal(&self, what: &str) -> Result<()> {
        if self.internal {
            return Err(Error::InvalidTopic {
                topic: self.name.to_string(),
                reason: format!(
                    "{what} an internal topic is not allowed; only the cluster writes it"
                ),
            });
        }
        Ok(())
    }

    /// The key by which the replica manager knows one of the topic's
    /// partitions.
    ///
    /// # Errors
    /// [`Error::UnknownTopicOrPartition`] if the topic was deleted or has
    /// no such partition.
    pub(crate) fn key(&self, partition: u32) -> Result<TopicIdPartition> {
        if self.is_deleted() || partition >= self.partition_count() {
            return Err(self.unknown(Some(partition)));
        }
        Ok(TopicIdPartition {
            topic_id: self.id,
            topic: self.name.clone(),
            partition,
        })
    }
}

impl Cluster {
    /// Opens the cluster rooted at `dir`, creating it if empty, and restores
    /// every topic, config and offset a previous run left.
    ///
    /// Recovery deletes data only on positive evidence: a `-delete`
    /// directory, or a partition directory whose topic the metadata log
    /// records as deleted. A partition directory nothing explains is kept
    /// and listed in [`Cluster::recovery_report`]; so are unreadable records
    /// of `__consumer_offsets`, which are skipped.
    ///
    /// # Errors
    /// [`Error::DirectoryLocked`] if another `Cluster` has it open;
    /// [`Error::MetadataMissing`] if the metadata log is missing or empty
    /// while partition directories (or its recovery point) show that topics
    /// existed; [`Error::Corrupt`] if a partition log, or the metadata log
    /// below its recovery point, is damaged beyond a torn tail (a damaged
    /// metadata log in `__cluster_metadata-0` is rebuilt with
    /// [`Cluster::rebuild_metadata`]); [`Error::PartitionDirConflict`] if a
    /// directory of another topic sits where a partition must go;
    /// [`Error::InvalidConfig`] for an invalid `config` or a directory
    /// written by an unknown format version; [`Error::Io`].
    pub fn open(dir: impl AsRef<Path>, config: ClusterConfig) -> Result<Cluster> {
        Self::open_with(dir.as_ref().to_path_buf(), config, false)
    }

    /// Opens the cluster rooted at `dir` read-only: a view of what the
    /// directory holds now, which takes no lock and never changes a byte
    /// there — it creates, writes, truncates, renames and removes nothing,
    /// and so can run while another process (or another [`Cluster`] of this
    /// one) has the directory open and is writing to it. For tools that
    /// inspect a live cluster: describe topics and groups, list committed
    /// offsets, read records with a consumer.
    ///
    /// The open recovers as [`Cluster::open`] does, but in memory only
    /// (through an [`OverlayStorage`]): a torn tail (a batch the writer is
    /// still appending counts as one) is cut from the view, missing or
    /// damaged indexes are rebuilt, leftover `.tmp` files and `-delete`
    /// directories are dropped from the view, and the files stay as they
    /// are; [`Cluster::recovery_report`] says what the view differs in. The
    /// view is what the directory held at the open: records appended by the
    /// writer afterwards are not seen (open again to see them).
    ///
    /// Nothing runs in the background: no checkpoint thread, no log
    /// scheduler (retention, cleaning, flushes), no transaction timer, no
    /// replica fetchers, no controller thread. Every call that would change
    /// the cluster fails with [`Error::ReadOnly`] and changes nothing:
    /// creating, deleting or growing topics, [`Cluster::checkpoint`],
    /// [`Producer::new`](crate::Producer::new), appending to a partition,
    /// deleting records, enforcing retention or cleaning, committing,
    /// altering, resetting or deleting group offsets, reassigning
    /// partitions. A consumer reads; a consumer in a group joins it (in
    /// this view only) but its commits fail with [`Error::ReadOnly`].
    ///
    /// Memory: the maps of unchanged segment (`.log`) files are the real
    /// files' pages, as in a normal open; index files and whatever
    /// recovery changed are copied into memory.
    ///
    /// ```
    /// use logbus::{Cluster, ClusterConfig, Error, NewTopic, Producer, ProducerConfig, ProducerRecord};
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    /// cluster.create_topic(NewTopic::new("orders", 1))?;
    /// let producer = Producer::new(&cluster, ProducerConfig::default())?;
    /// producer.send(ProducerRecord::new("orders", "created"))?.wait()?;
    ///
    /// // While `cluster` holds the directory:
    /// let view = Cluster::open_read_only(dir.path(), ClusterConfig::default())?;
    /// assert!(view.is_read_only());
    /// let orders = view.describe_topic("orders")?;
    /// assert_eq!(orders.partitions[0].log_end_offset, 1);
    /// assert!(matches!(
    ///     view.create_topic(NewTopic::new("refunds", 1)),
    ///     Err(Error::ReadOnly { .. })
    /// ));
    /// view.close()?;
    /// # drop(producer);
    /// # cluster.close()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ReadOnly`] if `dir` holds no cluster (no
    /// `meta.properties`): a read-only open creates nothing; otherwise as
    /// [`Cluster::open`], except that it never fails with
    /// [`Error::DirectoryLocked`].
    pub fn open_read_only(dir: impl AsRef<Path>, mut config: ClusterConfig) -> Result<Cluster> {
        let root = dir.as_ref().to_path_buf();
        config.validate()?;
        if !config.storage.exists(&root.join(META_PROPERTIES)) {
            return Err(Error::ReadOnly {
                path: root,
                operation: "creating a cluster (the directory holds no meta.properties)",
            });
        }
        // Every file goes through an overlay: recovery's changes stay in
        // memory. A broker with a file layer of its own gets its own.
        config.storage = Arc::new(OverlayStorage::new(config.storage.clone()));
        for storage in config.broker_storages.values_mut() {
            *storage = Arc::new(OverlayStorage::new(storage.clone()));
        }
        // Nothing replicates or fences: the view is what the files say.
        config.replica_fetchers = false;
        config.controller_thread = false;
        Self::open_with(root, config, true)
    }

    /// Whether the cluster was opened with [`Cluster::open_read_only`].
    #[must_use]
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    /// [`Cluster::open`], or the rest of [`Cluster::open_read_only`] once
    /// its storage is an overlay (`read_only`: no background work).
    fn open_with(root: PathBuf, config: ClusterConfig, read_only: bool) -> Result<Cluster> {
        config.validate()?;
        let storage = config.storage.clone();
        if storage.exists(&root) {
            // A file there would fail later with the OS's "File exists" or
            // "Not a directory", naming some path inside it.
            match storage.list_dir(&root) {
                Err(Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotADirectory =>
                {
                    return Err(Error::NotADirectory { path: root });
                }
                other => drop(other?),
            }
        }
        create_dir_durably(&*storage, &root)?;
        let lock = storage.lock_dir(&root)?;
        let cluster_id = meta_properties(&*storage, &root)?;
        let metadata_dir = root.join(METADATA_DIR);
        let broker_dirs: Vec<PathBuf> = (0..config.brokers)
            .map(|id| broker_dir(&root, &config, id))
            .collect();
        // Brokers placed elsewhere are locked before anything is read.
        let mut locks = vec![lock];
        for dir in config.broker_dirs.values() {
            create_dir_durably(&*storage, dir)?;
            locks.push(storage.lock_dir(dir)?);
        }
        let recovery_point = metadata::read_recovery_point(&storage, &root)?;
        if metadata_is_empty(&*storage, &metadata_dir)? {
            refuse_empty_registry(&*storage, &metadata_dir, &broker_dirs, recovery_point)?;
        }
        create_dir_durably(&*storage, &metadata_dir)?;
        let (mut metadata, mut registry) = MetadataLog::open(
            metadata_dir,
            Some(&root),
            storage.clone(),
            config.clock.clone(),
            recovery_point,
        )?;
        if metadata.log_end_offset() == 0 {
            // Its bytes (if any) were all a torn tail: as good as missing.
            if let Err(e) = refuse_empty_registry(
                &*storage,
                &root.join(METADATA_DIR),
                &broker_dirs,
                recovery_point,
            ) {
                let _ = metadata.close();
                return Err(e);
            }
        }
        if let Err(e) = check_brokers(&registry, &config, &root) {
            let _ = metadata.close();
            return Err(e);
        }
        let metadata_report = metadata.recovery_report().clone();
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let mut brokers = Vec::with_capacity(broker_dirs.len());
        let mut scan = broker::BrokerScan::default();
        for (id, dir) in (0..).zip(broker_dirs) {
            let (broker, found) = Broker::open(
                id,
                dir,
                &cluster_id,
                config.broker_storage(id),
                &registry,
                config.background_threads,
                crate::replica::ReplicaConfig {
                    metrics: metrics.clone(),
                    ..config.replica_config()
                },
            )?;
            if read_only {
                // Before any log opens: no timer (retention, cleaning,
                // flushes) ever fires, and work a log would queue runs
                // inline or is skipped (see `LogInner::schedule`).
                broker.stop_scheduler();
            }
            brokers.push(broker);
            scan.removed.extend(found.removed);
            scan.unknown.extend(found.unknown);
        }
        // Every broker of a cluster of several is registered, so a reopen
        // with fewer is refused. (Broker 0 always exists: a single-broker
        // cluster's metadata log stays as it was.)
        let unregistered: Vec<MetadataRecord> = (0..config.brokers)
            .filter(|id| config.brokers > 1 && !registry.brokers.contains(id))
            .map(|broker_id| MetadataRecord::RegisterBroker { broker_id })
            .collect();
        if !unregistered.is_empty() {
            metadata.commit(&mut registry, &unregistered)?;
        }
        // Every broker is live now: partitions left leaderless elect.
        let elected = controller::elect_leaderless_at_open(&registry, &config.topic_defaults);
        if !elected.is_empty() {
            metadata.commit(&mut registry, &elected)?;
        }
        let mut inner = ClusterInner {
            root,
            cluster_id,
            controller: Mutex::new(Controller::new(metadata, registry.clone(), &config)),
            topics: RwLock::new(HashMap::new()),
            brokers: brokers
                .into_iter()
                .map(|b| RwLock::new(Some(Arc::new(b))))
                .collect(),
            registry: Arc::new(ReplicaRegistry::default()),
            stats: faults::ReplicationCounters::default(),
            metrics: metrics.clone(),
            closed: AtomicBool::new(false),
            lock: Mutex::new(locks),
            checkpointer: Mutex::new(None),
            controller_thread: Mutex::new(None),
            offsets: coordinator::OffsetStore::default(),
            txn: txn_coordinator::TransactionCoordinator::default(),
            groups: GroupCoordinator::new(group::GroupLimits {
                min_session_timeout_ms: config.group_min_session_timeout_ms,
                max_session_timeout_ms: config.group_max_session_timeout_ms,
                initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
            })
            .with_metrics(metrics.clone()),
            metadata_epoch: AtomicU64::new(0),
            internal_refs: Arc::new(Mutex::new(0)),
            metadata_watchers: Mutex::new(Vec::new()),
            state_watchers: Mutex::new(Vec::new()),
            checkpoints: (Mutex::new(0), parking_lot::Condvar::new()),
            clients: Mutex::new(Vec::new()),
            recovery: ClusterRecoveryReport::default(),
            read_only,
            config,
        };
        let mut report = ClusterRecoveryReport {
            metadata: metadata_report,
            unknown_dirs: scan.unknown,
            removed_dirs: scan.removed,
            ..ClusterRecoveryReport::default()
        };
        for meta in registry.topics.values() {
            let overrides = TopicConfig::from_stored(&meta.config)?;
            let state =
                inner.open_topic(&meta.name, meta.id, overrides, meta.assignments.clone())?;
            for (p, roles) in (0..).zip(&meta.assignments) {
                report.partitions.insert(
                    TopicPartition::new(meta.name.clone(), p),
                    inner
                        // The leader's report; a leaderless partition's
                        // from its first replica.
                        .broker(roles.leader.unwrap_or(roles.replicas[0]))?
                        .replicas
                        .recovery_report(&state.key(p)?)?,
                );
            }
            inner.topics.write().insert(meta.name.clone(), state);
        }
        report.skipped_records = inner.load_offsets()?;
        report.skipped_records.extend(inner.load_transactions()?);
        inner.recovery = report;
        let inner = Arc::new(inner);
        // Leaders propose ISR changes to the controller; followers start
        // fetching once every partition is hosted.
        for broker in inner.brokers() {
            broker
                .replicas
                .set_alter_partition(inner.controller_channel());
            inner.registry.register(&broker.replicas);
        }
        if inner.brokers.len() > 1 && inner.config.replica_fetchers {
            for broker in inner.brokers() {
                broker.start_fetchers(inner.registry.clone())?;
            }
        }
        // After the fetchers: completing a replayed prepared transaction
        // appends with acks=all.
        let markers: Arc<dyn txn_coordinator::MarkerWriter> =
            Arc::new(txn_coordinator::ReplicaMarkers::new(&inner));
        #[cfg(test)]
        let markers = match &inner.config.test_markers {
            Some(test) => test.0.clone(),
            None => markers,
        };
        inner.set_marker_writer(markers);
        if read_only {
            // No timer completes or aborts transactions and no checkpoint
            // is written: a read-only view only reads.
            return Ok(Cluster { inner });
        }
        inner.start_txn_timer()?;
        let interval = inner.config.checkpoint_interval_ms;
        *inner.checkpointer.lock() = Some(Checkpointer::spawn(WeakCluster::new(&inner), interval)?);
        if inner.config.controller_thread && inner.brokers.len() > 1 {
            *inner.controller_thread.lock() =
                Some(liveness::ControllerThread::spawn(WeakCluster::new(&inner))?);
        }
        Ok(Cluster { inner })
    }

    /// What the open found and did: the metadata log's and every
    /// partition's [`RecoveryReport`](crate::RecoveryReport) (torn tails
    /// cut, indexes rebuilt), the partition directories kept because
    /// nothing explains them, the leftovers of deleted topics removed, and
    /// the internal-topic records skipped. See [`ClusterRecoveryReport`].
    #[must_use]
    pub fn recovery_report(&self) -> &ClusterRecoveryReport {
        &self.inner.recovery
    }

    /// The cluster's root directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.inner.root
    }

    /// The cluster id from `meta.properties` (Kafka's base64 form of a
    /// random UUID, fixed when the directory was first opened).
    #[must_use]
    pub fn cluster_id(&self) -> &str {
        &self.inner.cluster_id
    }

    /// The configuration the cluster was opened with.
    #[must_use]
    pub fn config(&self) -> &ClusterConfig {
        &self.inner.config
    }

    /// Creates a topic. The topic is in the metadata log (fsynced) and its
    /// partitions exist when this returns: each partition's replicas are
    /// placed over the brokers as Kafka places them (leaders round-robin,
    /// from a start drawn from the topic id), and every replica's broker
    /// has its directory and log.
    ///
    /// # Errors
    /// [`Error::ReadOnly`](crate::Error::ReadOnly) on a cluster opened with
    /// [`Cluster::open_read_only`](crate::Cluster::open_read_only) (nothing changes);
    /// [`Error::InvalidTopic`] for a name that breaks Kafka's rules, is
    /// reserved or collides with an existing one; [`Error::TopicAlreadyExists`];
    /// [`Error::InvalidPartitions`] for zero partitions, more than
    /// [`MAX_PARTITIONS_PER_TOPIC`], or more than the cluster may hold
    /// ([`ClusterConfigBuilder::max_partitions`]);
    /// [`Error::InvalidReplicationFactor`] for a replication factor of 0,
    /// above the number of brokers or above [`MAX_REPLICATION_FACTOR`];
    /// [`Error::InvalidConfig`] for an invalid combination of configs (a
    /// topic's own `min.insync.replicas` above its replication factor
    /// included);
    /// [`Error::PartitionDirConflict`] when a directory of an unknown topic
    /// occupies one of the new partitions' paths. Nothing is stored in any
    /// of these cases.
    pub fn create_topic(&self, topic: NewTopic) -> Result<Topic> {
        self.inner.check_writable("creating a topic")?;
        let state = self.inner.create_topic(topic, false, false)?;
        Ok(Topic::new(self.inner.clone(), state))
    }

    /// Creates a topic unless one of that name exists, and returns it
    /// either way (as `kafka-topics.sh --create --if-not-exists`). The
    /// check and the creation are one step under the cluster's controller
    /// lock, so concurrent callers all get the same topic, created once —
    /// unlike [`Cluster::topic`] followed by [`Cluster::create_topic`].
    ///
    /// An existing topic is returned as it is: its partition count and
    /// configs are not compared with `topic`'s (read them with
    /// [`Topic::describe`]). `topic` is still validated first.
    ///
    /// ```
    /// use logbus::{Cluster, ClusterConfig, NewTopic};
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    /// let first = cluster.create_topic_if_not_exists(NewTopic::new("jobs", 3))?;
    /// let again = cluster.create_topic_if_not_exists(NewTopic::new("jobs", 5))?;
    /// assert_eq!(first.id(), again.id());
    /// assert_eq!(again.partition_count(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`Cluster::create_topic`], except that an existing topic of the
    /// name is returned instead of [`Error::TopicAlreadyExists`].
    pub fn create_topic_if_not_exists(&self, topic: NewTopic) -> Result<Topic> {
        self.inner.check_writable("creating a topic")?;
        let state = self.inner.create_topic(topic, false, true)?;
        Ok(Topic::new(self.inner.clone(), state))
    }

    /// Deletes a topic and all its data. Producers and consumers using it
    /// get [`Error::UnknownTopicOrPartition`] from then on; a topic created
    /// later with the same name starts empty.
    ///
    /// The deletion is decided by one record in the metadata log, written
    /// (fsynced) first; then the topic disappears from the cluster and its
    /// directories are renamed `-delete` and removed. If removing them fails
    /// the error is returned, but the topic stays deleted: the next open
    /// (or a re-creation of the name) removes what is left, on the
    /// evidence of that record.
    ///
    /// # Errors
    /// [`Error::ReadOnly`](crate::Error::ReadOnly) on a cluster opened with
    /// [`Cluster::open_read_only`](crate::Cluster::open_read_only) (nothing changes);
    /// [`Error::UnknownTopicOrPartition`] if there is no such topic;
    /// [`Error::InvalidTopic`] for internal topics; [`Error::Io`] from
    /// writing the record (nothing changed) or from removing the files
    /// (the topic is deleted all the same).
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        self.inner.check_writable("deleting a topic")?;
        self.inner.delete_topic(name)
    }

    /// Raises a topic's partition count to `total` (Kafka's
    /// `createPartitions`). Existing partitions keep their data; keyed
    /// records may map to different partitions afterwards, as in Kafka.
    ///
    /// # Errors
    /// [`Error::ReadOnly`](crate::Error::ReadOnly) on a cluster opened with
    /// [`Cluster::open_read_only`](crate::Cluster::open_read_only) (nothing changes);
    /// [`Error::InvalidPartitions`] if `total` is not above the current
    /// count, is above [`MAX_PARTITIONS_PER_TOPIC`], or would take the
    /// cluster above [`ClusterConfigBuilder::max_partitions`];
    /// [`Error::UnknownTopicOrPartition`]; [`Error::InvalidTopic`] for
    /// internal topics (their partition count is fixed:
    /// `__consumer_offsets` places groups by it);
    /// [`Error::PartitionDirConflict`] as for [`Cluster::create_topic`].
    /// Nothing is stored in any of these cases.
    pub fn create_partitions(&self, name: &str, total: u32) -> Result<()> {
        self.inner.check_writable("adding partitions")?;
        self.inner.create_partitions(name, total)
    }

    /// Changes a topic's own configs, as Kafka's `IncrementalAlterConfigs`:
    /// each [`AlterConfigOp`] sets a config or deletes the topic's value
    /// (the cluster's default applies again); configs not named keep their
    /// values.
    ///
    /// Every op and the resulting configuration are checked first, by the
    /// rules [`TopicConfig::set`] and [`Cluster::create_topic`] apply; then
    /// the changed configs are stored in the metadata log as one batch
    /// (fsynced), and then applied at once: every handle's
    /// [`Topic::config`] reports them, and every replica's log uses them
    /// from its next append, roll, retention check or cleaning pass (see
    /// [`Log::set_config`](crate::Log::set_config)); `min.insync.replicas`
    /// from the next `acks=all` append, `unclean.leader.election.enable`
    /// from the next election. A reopen restores them.
    ///
    /// ```
    /// use logbus::{AlterConfigOp, Cluster, ClusterConfig, NewTopic};
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    /// let topic = cluster.create_topic(NewTopic::new("orders", 1))?;
    /// cluster.alter_topic_config(
    ///     "orders",
    ///     &[AlterConfigOp::set("retention.ms", "3600000"), AlterConfigOp::delete("segment.ms")],
    /// )?;
    /// assert_eq!(topic.config().get("retention.ms"), Some("3600000"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::UnknownTopicOrPartition`] if there is no such topic;
    /// [`Error::InvalidTopic`] for internal topics;
    /// [`Error::InvalidConfig`] for an unknown config name, a bad value, a
    /// config named twice, `min.insync.replicas` above the replication
    /// factor, or turning compaction off for a compacted topic (its logs
    /// may hold the offset gaps compaction leaves); [`Error::Io`] writing
    /// the metadata log; [`Error::Closed`]. Nothing is stored in any of
    /// these cases. An error applying the stored change to a replica's log
    /// is returned too, the change standing (a reopen applies it).
    pub fn alter_topic_config(&self, topic: &str, ops: &[AlterConfigOp]) -> Result<()> {
        self.inner.alter_topic_config(topic, ops)
    }

    /// Names of the user topics, sorted (internal topics are not listed).
    #[must_use]
    pub fn list_topics(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .inner
            .topics
            .read()
            .keys()
            .filter(|n| !n.starts_with("__"))
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// A handle to an existing topic.
    ///
    /// # Errors
    /// [`Error::UnknownTopicOrPartition`] if there is no such topic.
    pub fn topic(&self, name: &str) -> Result<Topic> {
        let state = self.inner.topic_state(name)?;
        Ok(Topic::new(self.inner.clone(), state))
    }

    /// A topic's id, configuration and partitions with their leaders,
    /// replicas, ISR and offsets, as [`Topic::describe`] (partitions without
    /// a leader included).
    ///
    /// # Errors
    /// [`Error::UnknownTopicOrPartition`] if there is no such topic;
    /// [`Error::Closed`].
    pub fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        self.topic(name)?.describe()
    }

    /// Writes the checkpoint files now, as the checkpoint thread does every
    /// `checkpoint_interval`: every partition's recovery point, log
    /// start offset and (for compacted topics) cleaner offset, each file
    /// replaced atomically. After a crash, recovery scans only what lies
    /// past the recovery points it finds there.
    ///
    /// ```
    /// use logbus::{Cluster, ClusterConfig, NewTopic};
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    /// cluster.create_topic(NewTopic::new("events", 1))?;
    /// cluster.checkpoint()?;
    /// assert!(dir.path().join("broker-0/recovery-point-offset-checkpoint").exists());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ReadOnly`](crate::Error::ReadOnly) on a cluster opened with
    /// [`Cluster::open_read_only`](crate::Cluster::open_read_only) (nothing changes);
    /// [`Error::Closed`] once the cluster is closed; [`Error::Io`] if
    /// writing a file fails (the files it would have replaced stay valid).
    pub fn checkpoint(&self) -> Result<()> {
        self.inner.check_open()?;
        self.inner.check_writable("writing checkpoints")?;
        self.inner.checkpoint()
    }

    /// Closes the cluster for every clone and handle: later calls return
    /// [`Error::Closed`]. First every live [`Producer`](crate::Producer)
    /// of the cluster is flushed: records it accepted before the close
    /// began are appended and their handles and callbacks complete (new
    /// sends fail with [`Error::Closed`] from the moment the close begins).
    /// Then every partition is flushed, the checkpoint files are written,
    /// the cluster's threads stop and the directory lock is released.
    /// Closing twice is a no-op.
    ///
    /// Called from inside a producer callback, the close cannot wait for
    /// that producer (its sender thread is the caller): records it still
    /// holds fail with [`Error::Closed`].
    ///
    /// # Errors
    /// The first [`Error::Io`] met; the cluster is closed anyway.
    pub fn close(&self) -> Result<()> {
        self.inner.close()
    }
}

impl ClusterInner {
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("cluster"));
        }
        Ok(())
    }

    /// `Ok` unless the cluster was opened read-only
    /// ([`Cluster::open_read_only`]); then [`Error::ReadOnly`] for
    /// `operation` (what the caller was about to do, as "creating a
    /// topic").
    pub(crate) fn check_writable(&self, operation: &'static str) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly {
                path: self.root.clone(),
                operation,
            });
        }
        Ok(())
    }

    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.config.clock
    }

    /// Broker `id`, running.
    ///
    /// # Errors
    /// [`Error::Internal`] if there is no such broker (the open checked
    /// that every broker the metadata names exists);
    /// [`Error::IllegalState`] if it is stopped or crashed.
    pub(crate) fn broker(&self, id: u32) -> Result<Arc<Broker>> {
        let slot = self.brokers.get(id as usize).ok_or_else(|| {
            Error::Internal(format!(
                "broker {id} is named by the metadata but the cluster has {} brokers",
                self.brokers.len()
            ))
        })?;
        slot.read()
            .clone()
            .ok_or_else(|| Error::IllegalState(format!("broker {id} is not running")))
    }

    /// Broker `id` if it runs.
    pub(crate) fn running_broker(&self, id: u32) -> Option<Arc<Broker>> {
        self.brokers
            .get(id as usize)
            .and_then(|slot| slot.read().clone())
    }

    /// The running brokers, by id.
    pub(crate) fn brokers(&self) -> Vec<Arc<Broker>> {
        self.brokers
            .iter()
            .filter_map(|slot| slot.read().clone())
            .collect()
    }

    /// The broker leading `key`.
    ///
    /// # Errors
    /// [`Error::UnknownTopicOrPartition`] if there is no such partition
    /// (its topic was deleted, or re-created with another id);
    /// [`Error::Closed`].
    pub(crate) fn leader_broker(&self, key: &TopicIdPartition) -> Result<Arc<Broker>> {
        if let [only] = &self.brokers[..] {
            // One broker leads everything; its manager answers for the rest.
            return only.read().clone().ok_or(Error::Closed("cluster"));
        }
        let leader = self
            .topics
            .read()
            .get(&*key.topic)
            .filter(|t| t.id == key.topic_id && key.partition < t.partition_count())
            .map(|t| t.leader(key.partition));
        match leader {
            // A stopped broker's leaderships move once it is fenced; until
            // then its partitions answer as a follower's would.
            Some(Some(id)) => self
                .running_broker(id)
                .ok_or_else(|| Error::NotLeaderOrFollower {
                    topic: key.topic.to_string(),
                    partition: key.partition,
                    broker: id,
                }),
            Some(None) => {
                self.check_open()?;
                Err(Error::LeaderNotAvailable {
                    topic: key.topic.to_string(),
                    partition: key.partition,
                })
            }
            None => {
                self.check_open()?;
                Err(Error::UnknownTopicOrPartition {
                    topic: key.topic.to_string(),
                    partition: Some(key.partition),
                })
            }
        }
    }

    /// Sends on `waker` after every append to `key` at its leader and every
    /// move of its high watermark (see `ReplicaManager::watch`), following
    /// the leader: watched on the broker that leads it now, and on no
    /// other running broker (the one that led it before
    /// a move, now a follower, stops waking it). With no leader known yet,
    /// watched nowhere: the next metadata change tells when to call again.
    pub(crate) fn watch_leader(&self, key: &TopicIdPartition, waker: &Sender<()>) {
        let leader = self.leader_broker(key).ok();
        for broker in self.brokers() {
            if leader.as_ref().is_some_and(|l| Arc::ptr_eq(l, &broker)) {
                broker.replicas.watch(key, waker);
            } else {
                broker.replicas.unwatch(key, waker);
            }
        }
    }

    /// Stops waking `waker` for `key`, on every running broker (a waker
    /// that followed the partition's leader may be on any).
    pub(crate) fn unwatch(&self, key: &TopicIdPartition, waker: &Sender<()>) {
        for broker in self.brokers() {
            broker.replicas.unwatch(key, waker);
        }
    }

    /// The replica manager to ask about `key`: its leader's broker's.
    /// (Another broker's manager answers [`Error::NotLeaderOrFollower`].)
    ///
    /// # Errors
    /// As [`ClusterInner::leader_broker`].
    pub(crate) fn replicas_for(&self, key: &TopicIdPartition) -> Result<Arc<ReplicaManager>> {
        Ok(self.leader_broker(key)?.replicas.clone())
    }

    /// The key of `tp` for the replica manager.
    ///
    /// # Errors
    /// [`Error::UnknownTopicOrPartition`] if there is no such partition;
    /// [`Error::Closed`].
    pub(crate) fn partition_key(&self, tp: &TopicPartition) -> Result<TopicIdPartition> {
        self.topic_state(&tp.topic)?.key(tp.partition)
    }

    /// A number that changes whenever a topic is created or deleted or
    /// gains partitions, and whenever a partition's leader or ISR changes.
    pub(crate) fn metadata_epoch(&self) -> u64 {
        self.metadata_epoch.load(Ordering::Acquire)
    }

    /// Sends on `tx` whenever the metadata epoch moves (and at close).
    pub(crate) fn watch_metadata(&self, tx: &Sender<()>) {
        self.metadata_watchers.lock().push(tx.clone());
    }

    /// Stops sending on `tx`.
    pub(crate) fn unwatch_metadata(&self, tx: &Sender<()>) {
        self.metadata_watchers
            .lock()
            .retain(|w| !w.same_channel(tx));
    }

    fn metadata_changed(&self) {
        self.metadata_epoch.fetch_add(1, Ordering::AcqRel);
        self.wake_watchers();
    }

    /// Runs `f`, a request to a partition's leader, again while it fails
    /// because the partition's leadership is moving (the routing table
    /// already names a new leader that has not applied its new state yet,
    /// or no leader is elected): after each metadata change, for up to
    /// Kafka's `default.api.timeout.ms` (60 s) of the cluster's clock, as
    /// Kafka's clients retry such errors after a metadata refresh. Then, or
    /// for any other outcome, returns what `f` returned.
    pub(crate) fn retry_while_leader_moves<T>(
        &self,
        mut f: impl FnMut() -> Result<T>,
    ) -> Result<T> {
        let clock = self.clock().clone();
        let deadline = clock.now_ms().saturating_add(DEFAULT_API_TIMEOUT_MS);
        // Set up at the first failure only (most calls never fail): the
        // metadata watch and the clock's wake-ups.
        let mut watching: Option<(Sender<()>, Receiver<()>, Receiver<()>)> = None;
        let result = loop {
            let seen = self.metadata_epoch.load(Ordering::Acquire);
            match f() {
                Err(e)
                    if e.is_leadership_moving()
                        && clock.now_ms() < deadline
                        && self.check_open().is_ok() =>
                {
                    if watching.is_none() {
                        // Watch first, then look again: a change between
                        // the failure and the watch is not missed.
                        let (tx, rx) = crossbeam_channel::bounded(1);
                        self.watch_metadata(&tx);
                        watching = Some((tx, rx, clock.subscribe()));
                        continue;
                    }
                    if self.metadata_epoch.load(Ordering::Acquire) != seen {
                        continue;
                    }
                    let timer = clock
                        .wait_hint(deadline)
                        .map_or_else(crossbeam_channel::never, crossbeam_channel::after);
                    let (changed, ticks) = watching
                        .as_ref()
                        .map(|(_, rx, ticks)| (rx.clone(), ticks.clone()))
                        .unwrap_or_else(|| {
                            (crossbeam_channel::never(), crossbeam_channel::never())
                        });
                    crossbeam_channel::select! {
                        recv(changed) -> _ => {}
                        recv(ticks) -> _ => {}
                        recv(timer) -> _ => {}
                    }
                }
                other => break other,
            }
        };
        if let Some((tx, _, _)) = watching {
            self.unwatch_metadata(&tx);
        }
        result
    }

    /// Wakes every `watch_metadata` channel (a `Cluster::wait_until`
    /// re-checks its condition).
    pub(crate) fn wake_watchers(&self) {
        for tx in self.metadata_watchers.lock().iter() {
            // A full channel already holds a wake-up.
            let _ = tx.try_send(());
        }
        self.wake_state_watchers();
    }

    /// Wakes only the [`Cluster::wait_until`] callers (a transaction
    /// gained partitions).
    pub(crate) fn wake_state_watchers(&self) {
        for tx in self.state_watchers.lock().iter() {
            let _ = tx.try_send(());
        }
    }

    /// Sends on `tx` whenever [`ClusterInner::wake_state_watchers`] runs.
    pub(crate) fn watch_state(&self, tx: &Sender<()>) {
        self.state_watchers.lock().push(tx.clone());
    }

    /// Stops sending on `tx`.
    pub(crate) fn unwatch_state(&self, tx: &Sender<()>) {
        self.state_watchers.lock().retain(|w| !w.same_channel(tx));
    }

    /// The live state of a topic.
    pub(crate) fn topic_state(&self, name: &str) -> Result<Arc<TopicState>> {
        self.check_open()?;
        self.topics
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownTopicOrPartition {
                topic: name.to_string(),
                partition: None,
            })
    }

    /// Every live topic's state, by name.
    #[cfg_attr(not(feature = "server"), expect(dead_code, reason = "the listener's"))]
    pub(crate) fn topic_states(&self) -> Vec<Arc<TopicState>> {
        let mut topics: Vec<Arc<TopicState>> = self
            .topics
            .read()
            .values()
            .filter(|t| !t.is_deleted())
            .cloned()
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        topics
    }

    /// How many brokers the cluster has (running or not): ids `0..n`.
    pub(crate) fn broker_count(&self) -> u32 {
        u32::try_from(self.brokers.len()).unwrap_or(u32::MAX)
    }

    /// The live state of a topic that records are sent to: user topics
    /// only (internal ones refuse public appends).
    pub(crate) fn topic_state_for_append(&self, name: &str) -> Result<Arc<TopicState>> {
        let state = self.topic_state(name)?;
        state.refuse_internal("appending to")?;
        Ok(state)
    }

    /// Registers a client whose pending records `close` delivers first.
    pub(crate) fn register_client(&self, client: Weak<dyn PendingRecords>) {
        let mut clients = self.clients.lock();
        clients.retain(|c| c.strong_count() > 0);
        clients.push(client);
    }

    /// Writes every live partition's recovery point and log start offset
    /// to its broker's checkpoint files.
    pub(crate) fn checkpoint(&self) -> Result<()> {
        for broker in self.brokers() {
            for key in broker.replicas.hosted_partitions() {
                broker.note_partition(&key);
            }
            broker.write_checkpoints()?;
        }
        *self.checkpoints.0.lock() += 1;
        self.checkpoints.1.notify_all();
        Ok(())
    }

    fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // New sends fail from here on (they check `closed` under their
        // producer's lock); what producers accepted before is delivered
        // while every log is still open. No cluster lock is held.
        let clients: Vec<Arc<dyn PendingRecords>> = self
            .clients
            .lock()
            .drain(..)
            .filter_map(|c| c.upgrade())
            .collect();
        for client in &clients {
            client.deliver_pending();
        }
        drop(clients);
        // Before the fetchers stop: a pass in progress appends with
        // acks=all.
        self.stop_txn_timer();
        // The markers of transactions whose end was answered.
        self.complete_queued_txns();
        self.write_unwritten_txn_states();
        // Acknowledged appends are on every in-sync replica already.
        for broker in self.brokers() {
            broker.stop_fetchers();
        }
        if let Some(checkpointer) = self.checkpointer.lock().take() {
            checkpointer.stop();
        }
        // Before `controller` is taken: the thread takes it for each tick.
        let thread = self.controller_thread.lock().take();
        if let Some(thread) = thread {
            thread.stop();
        }
        // Consumers waiting for metadata wake up and see the cluster closed.
        self.metadata_changed();
        let mut first_error = None;
        let mut note = |r: Result<()>| {
            if let Err(e) = r {
                first_error.get_or_insert(e);
            }
        };
        let mut controller = self.controller.lock();
        if let Some(metadata) = controller.metadata.take() {
            note(metadata.close());
        }
        self.topics.write().clear();
        // Stopped and crashed brokers closed their logs already.
        for broker in self.brokers() {
            for (topic, partition, closed) in broker.replicas.shutdown() {
                match closed {
                    Ok(Some(offsets)) => broker.note_offsets(&topic, partition, offsets),
                    Ok(None) => {}
                    Err(e) => note(Err(e)),
                }
            }
            note(broker.write_checkpoints());
            // Every partition log is closed: nothing is left for its threads.
            broker.stop_scheduler();
        }
        drop(controller);
        self.lock.lock().clear();
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// A strong reference one of the cluster's own threads takes for a
/// moment (a timer pass, a heartbeat, an ISR proposal): counted, so that
/// the drop of the last handle a user holds closes the cluster on the
/// user's thread even while such a thread holds the cluster (else the
/// directory lock would be released just after the drop returned, on
/// that thread, and an immediate reopen would find it locked).
pub(crate) struct InternalRef {
    inner: Option<Arc<ClusterInner>>,
    count: Arc<Mutex<usize>>,
}

/// What the cluster's own threads keep of it: a `Weak` and the count of
/// their momentary strong references, upgraded into an [`InternalRef`].
#[derive(Debug, Clone)]
pub(crate) struct WeakCluster {
    weak: Weak<ClusterInner>,
    count: Arc<Mutex<usize>>,
}

impl WeakCluster {
    pub(crate) fn new(inner: &Arc<ClusterInner>) -> Self {
        WeakCluster {
            weak: Arc::downgrade(inner),
            count: inner.internal_refs.clone(),
        }
    }

    /// A counted strong reference; `None` once the cluster is gone. The
    /// upgrade and the count change together under the count's lock,
    /// which `release_handle` reads them under.
    pub(crate) fn upgrade(&self) -> Option<InternalRef> {
        let mut n = self.count.lock();
        let inner = self.weak.upgrade()?;
        *n += 1;
        drop(n);
        Some(InternalRef {
            inner: Some(inner),
            count: self.count.clone(),
        })
    }
}

impl std::ops::Deref for InternalRef {
    type Target = Arc<ClusterInner>;

    fn deref(&self) -> &Arc<ClusterInner> {
        self.inner.as_ref().expect("present until dropped")
    }
}

impl Drop for InternalRef {
    fn drop(&mut self) {
        let mut n = self.count.lock();
        // The `Arc` goes under the lock (if it is the last, the cluster
        // closes here; its close never takes this lock).
        drop(self.inner.take());
        *n -= 1;
    }
}

impl ClusterInner {
    /// Called as a user's handle (a `Cluster`, `Topic`, `Partition` or
    /// producer) drops its reference: when no other handle remains (only
    /// the cluster's own threads' momentary references), closes the
    /// cluster now, on this thread. Two handles dropped at once may both
    /// see the other and leave the close to the last drop, on a user's
    /// thread too.
    pub(crate) fn release_handle(self: &Arc<Self>) {
        let last = {
            let n = self.internal_refs.lock();
            Arc::strong_count(self) <= *n + 1
        };

        if last {
            // Errors are reported by `Cluster::close`; dropping cannot
            // return them.
            let _ = self.close();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.inner.release_handle();
    }
}

impl Drop for ClusterInner {
    fn drop(&mut self) {
        // Errors are reported by `Cluster::close`; dropping cannot return them.
        let _ = self.close();
    }
}

/// Whether the metadata log in `dir` holds no bytes (missing directory, no
/// segment, or only empty segments).
fn metadata_is_empty(storage: &dyn Storage, dir: &Path) -> Result<bool> {
    if !storage.exists(dir) {
        return Ok(true);
    }
    for path in storage.list_dir(dir)? {
        if crate::storage::segment::parse_segment_file(&path, crate::storage::segment::LOG_SUFFIX)
            .is_some()
            && storage.open(&path, OpenMode::Existing)?.len()? > 0
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Broker `id`'s data directory: its own path if the config gives one,
/// else `<root>/broker-<id>`.
fn broker_dir(root: &Path, config: &ClusterConfig, id: u32) -> PathBuf {
    match config.broker_dirs.get(&id) {
        Some(path) => path.clone(),
        None => root.join(format!("broker-{id}")),
    }
}

/// Refuses to open with fewer brokers than the metadata knows of (those
/// registered, and those any partition's replicas name): their replicas
/// would be missing. Kafka would report them offline; a broker here is a
/// directory the cluster owns, with no way to bring an unconfigured one
/// back, so logbus refuses instead (reassign its replicas away first).
fn check_brokers(registry: &Registry, config: &ClusterConfig, root: &Path) -> Result<()> {
    let known = registry.known_brokers();
    match known.last() {
        Some(&last) if last >= config.brokers => Err(Error::InvalidConfig(format!(
            "the cluster in {} has brokers 0..={last}; it cannot open with brokers={}: \
             reopen it with at least {} brokers (a broker's replicas cannot be dropped)",
            root.display(),
            config.brokers,
            u64::from(last) + 1
        ))),
        _ => Ok(()),
    }
}

/// Refuses to start with an empty registry when the directory shows that
/// topics existed: partition directories with `partition.metadata` in a
/// broker directory, or a metadata recovery point above zero.
fn refuse_empty_registry(
    storage: &dyn Storage,
    metadata_dir: &Path,
    broker_dirs: &[PathBuf],
    recovery_point: Option<u64>,
) -> Result<()> {
    let mut held = Vec::new();
    for dir in broker_dirs {
        held.extend(held_partition_dirs(storage, dir)?);
    }
    let evidence = if let Some(first) = held.first() {
        format!(
            "{} partition directories hold data (first: {})",
            held.len(),
            first.display()
        )
    } else if let Some(point) = recovery_point.filter(|&p| p > 0) {
        format!("its checkpoint says {point} changes were made durable")
    } else {
        return Ok(());
    };
    Err(Error::MetadataMissing {
        path: metadata_dir.to_path_buf(),
        evidence,
    })
}

/// Reads `meta.properties`, or writes it for a new cluster; returns the
/// cluster id.
fn meta_properties(storage: &dyn Storage, root: &Path) -> Result<String> {
    let path = root.join(META_PROPERTIES);
    if storage.exists(&path) {
        let properties = broker::read_properties(storage, &path)?;
        let field = |key: &str| properties.get(key).cloned();
        let bad = |what: String| Error::corrupt(path.clone(), 0, CorruptionKind::Metadata(what));
        match field("logbus.format.version") {
            Some(v) if v == FORMAT_VERSION => {}
            Some(v) => {
                return Err(Error::InvalidConfig(format!(
                    "{} has logbus.format.version={v}; this logbus reads version {FORMAT_VERSION}",
                    path.display()
                )));
            }
            None => return Err(bad("meta.properties has no logbus.format.version".into())),
        }
        return field("cluster.id").ok_or_else(|| bad("meta.properties has no cluster.id".into()));
    }
    let id = broker::topic_id_string(Uuid::new_v4());
    let text = format!(
        "#logbus cluster metadata\nversion=1\ncluster.id={id}\nnode.id=0\nlogbus.format.version={FORMAT_VERSION}\n"
    );
    write_atomic(storage, &path, text.as_bytes())?;
    Ok(id)
}

#[cfg(test)]
mod eos_sim;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
