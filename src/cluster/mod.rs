//! L4: the cluster: brokers (one data directory each) and the controller,
//! which owns the topic registry and persists it in its metadata log.
//!
//! ## Locks
//! `controller` (the registry and the metadata log) is taken first and held
//! for a whole create, delete or partition addition, so those run one at a
//! time and a re-created topic never meets its predecessor's files. Then
//! `topics` (name to live topic state), then a topic's `partitions`, then a
//! replica's log lock (see [`crate::replica`]). Appends and reads take only
//! the last three, shared.

mod admin;
mod broker;
mod checkpointer;
mod config;
mod coordinator;
mod group;
mod handles;
mod metadata;
mod offsets;
mod replay;
mod topic_config;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crossbeam_channel::Sender;

use parking_lot::{Mutex, RwLock};
use uuid::Uuid;

use crate::clock::Clock;
use crate::config::LogConfig;
use crate::error::{CorruptionKind, Error, Result};
use crate::replica::Replica;
use crate::storage::{DirLock, OpenMode, Storage, write_atomic};

pub use admin::{GroupDescription, MemberDescription, OffsetSpec, PartitionLag};
pub use config::{ClusterConfig, ClusterConfigBuilder};
pub use group::GroupState;
pub(crate) use group::{GroupCoordinator, JoinRequest, JoinResponse, Joined, SyncResponse};
pub use handles::{NewTopic, Partition, PartitionDescription, Topic, TopicDescription};
pub use offsets::OffsetAndMetadata;
pub use topic_config::{CleanupPolicy, MAX_TOPIC_NAME_LEN, TopicConfig};

use broker::Broker;
use checkpointer::Checkpointer;
use metadata::{MetadataLog, MetadataRecord, Registry};
use topic_config::collision_key;
pub(crate) use topic_config::validate_topic_name;

const META_PROPERTIES: &str = "meta.properties";
const METADATA_DIR: &str = "__cluster_metadata-0";
const BROKER_DIR: &str = "broker-0";
const FORMAT_VERSION: &str = "1";

/// An embedded Kafka cluster rooted at one directory.
///
/// Open it with [`Cluster::open`]; create topics, then produce and consume.
/// `Cluster` is `Send + Sync` and cheap to clone (clones share one cluster).
/// [`Cluster::close`] (or dropping the last clone and every handle made
/// from it) stops its threads, flushes every partition, writes the
/// checkpoints and releases the directory lock.
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
    broker: Broker,
    closed: AtomicBool,
    lock: Mutex<Option<DirLock>>,
    checkpointer: Mutex<Option<Checkpointer>>,
    offsets: coordinator::OffsetStore,
    /// Group membership (join, sync, heartbeat, leave).
    pub(crate) groups: GroupCoordinator,
    /// Bumped whenever a topic is created or deleted or gains partitions.
    metadata_epoch: AtomicU64,
    /// Woken (like replica watchers) whenever `metadata_epoch` moves.
    metadata_watchers: Mutex<Vec<Sender<()>>>,
    /// Periodic checkpoints written so far, for tests to wait on.
    checkpoints: (Mutex<u64>, parking_lot::Condvar),
}

#[derive(Debug)]
struct Controller {
    metadata: Option<MetadataLog>,
    registry: Registry,
}

/// A live topic: its id, configuration and partitions.
#[derive(Debug)]
pub(crate) struct TopicState {
    pub(crate) name: Arc<str>,
    pub(crate) id: Uuid,
    pub(crate) overrides: TopicConfig,
    pub(crate) effective: TopicConfig,
    pub(crate) log_config: LogConfig,
    pub(crate) partitions: RwLock<Vec<Arc<Replica>>>,
    /// `partitions.len()`, readable without the lock (the producer reads
    /// it for every record). Stored after a new partition is pushed, so it
    /// never exceeds the length.
    count: AtomicU32,
    deleted: AtomicBool,
}

impl TopicState {
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

    /// The current partition count (one atomic load, no lock).
    pub(crate) fn partition_count(&self) -> u32 {
        self.count.load(Ordering::Acquire)
    }

    /// One partition's replica.
    pub(crate) fn replica(&self, partition: u32) -> Result<Arc<Replica>> {
        if self.is_deleted() {
            return Err(self.unknown(Some(partition)));
        }
        self.partitions
            .read()
            .get(partition as usize)
            .cloned()
            .ok_or_else(|| self.unknown(Some(partition)))
    }
}

impl Cluster {
    /// Opens the cluster rooted at `dir`, creating it if empty, and restores
    /// every topic, config and offset a previous run left.
    ///
    /// # Errors
    /// [`Error::DirectoryLocked`] if another `Cluster` has it open;
    /// [`Error::Corrupt`] if metadata or a partition log is damaged beyond a
    /// torn tail; [`Error::InvalidConfig`] for an invalid `config` or a
    /// directory written by an unknown format version; [`Error::Io`].
    pub fn open(dir: impl AsRef<Path>, config: ClusterConfig) -> Result<Cluster> {
        let root = dir.as_ref().to_path_buf();
        config.validate()?;
        let storage = config.storage.clone();
        storage.create_dir_all(&root)?;
        let lock = storage.lock_dir(&root)?;
        let cluster_id = meta_properties(&*storage, &root)?;
        let (metadata, registry) = MetadataLog::open(
            root.join(METADATA_DIR),
            storage.clone(),
            config.clock.clone(),
        )?;
        let live: BTreeMap<(String, u32), Uuid> = registry
            .topics
            .values()
            .flat_map(|t| (0..t.partitions).map(move |p| ((t.name.clone(), p), t.id)))
            .collect();
        let broker = Broker::open(
            root.join(BROKER_DIR),
            storage,
            config.clock.clone(),
            &live,
            config.background_threads,
        )?;
        let inner = ClusterInner {
            root,
            cluster_id,
            controller: Mutex::new(Controller {
                metadata: Some(metadata),
                registry: registry.clone(),
            }),
            topics: RwLock::new(HashMap::new()),
            broker,
            closed: AtomicBool::new(false),
            lock: Mutex::new(Some(lock)),
            checkpointer: Mutex::new(None),
            offsets: coordinator::OffsetStore::default(),
            groups: GroupCoordinator::new(group::GroupLimits {
                min_session_timeout_ms: config.group_min_session_timeout_ms,
                max_session_timeout_ms: config.group_max_session_timeout_ms,
                initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
            }),
            metadata_epoch: AtomicU64::new(0),
            metadata_watchers: Mutex::new(Vec::new()),
            checkpoints: (Mutex::new(0), parking_lot::Condvar::new()),
            config,
        };
        for meta in registry.topics.values() {
            let overrides = TopicConfig::from_stored(&meta.config)?;
            let state = inner.open_topic(&meta.name, meta.id, overrides, meta.partitions)?;
            inner.topics.write().insert(meta.name.clone(), state);
        }
        inner.load_offsets()?;
        let inner = Arc::new(inner);
        let interval = inner.config.checkpoint_interval_ms;
        *inner.checkpointer.lock() = Some(Checkpointer::spawn(Arc::downgrade(&inner), interval)?);
        Ok(Cluster { inner })
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
    /// partitions exist when this returns.
    ///
    /// # Errors
    /// [`Error::InvalidTopic`] for a name that breaks Kafka's rules, is
    /// reserved or collides with an existing one; [`Error::TopicAlreadyExists`];
    /// [`Error::InvalidPartitions`] for zero partitions;
    /// [`Error::InvalidConfig`] for an invalid combination of configs. Nothing
    /// is stored in any of these cases.
    pub fn create_topic(&self, topic: NewTopic) -> Result<Topic> {
        let state = self.inner.create_topic(topic, false)?;
        Ok(Topic::new(self.inner.clone(), state))
    }

    /// Deletes a topic and all its data. Producers and consumers using it
    /// get [`Error::UnknownTopicOrPartition`] from then on; a topic created
    /// later with the same name starts empty.
    ///
    /// # Errors
    /// [`Error::UnknownTopicOrPartition`] if there is no such topic;
    /// [`Error::InvalidTopic`] for internal topics.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        self.inner.delete_topic(name)
    }

    /// Raises a topic's partition count to `total` (Kafka's
    /// `createPartitions`). Existing partitions keep their data; keyed
    /// records may map to different partitions afterwards, as in Kafka.
    ///
    /// # Errors
    /// [`Error::InvalidPartitions`] if `total` is not above the current
    /// count; [`Error::UnknownTopicOrPartition`].
    pub fn create_partitions(&self, name: &str, total: u32) -> Result<()> {
        self.inner.create_partitions(name, total)
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

    /// A topic's id, configuration and partitions with their offsets.
    ///
    /// # Errors
    /// [`Error::UnknownTopicOrPartition`] if there is no such topic.
    pub fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        self.topic(name)?.describe()
    }

    /// Closes the cluster for every clone and handle: later calls return
    /// [`Error::Closed`]. Flushes every partition, writes the checkpoint
    /// files, stops the cluster's threads and releases the directory lock.
    /// Closing twice is a no-op.
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

    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.config.clock
    }

    /// A number that changes whenever a topic is created or deleted or
    /// gains partitions.
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
        for tx in self.metadata_watchers.lock().iter() {
            // A full channel already holds a wake-up.
            let _ = tx.try_send(());
        }
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

    fn open_topic(
        &self,
        name: &str,
        id: Uuid,
        overrides: TopicConfig,
        partitions: u32,
    ) -> Result<Arc<TopicState>> {
        let effective = overrides.overlaid_on(&self.config.topic_defaults);
        let log_config = effective.log_config()?;
        let name: Arc<str> = Arc::from(name);
        let mut replicas = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            replicas.push(
                self.broker
                    .open_partition(&name, id, p, log_config.clone())?,
            );
        }
        Ok(Arc::new(TopicState {
            name,
            id,
            overrides,
            effective,
            log_config,
            count: AtomicU32::new(partitions),
            partitions: RwLock::new(replicas),
            deleted: AtomicBool::new(false),
        }))
    }

    pub(crate) fn create_topic(&self, topic: NewTopic, internal: bool) -> Result<Arc<TopicState>> {
        self.check_open()?;
        let NewTopic {
            name,
            partitions,
            config: overrides,
        } = topic;
        validate_topic_name(&name, internal)?;
        let partitions = partitions.unwrap_or(self.config.num_partitions);
        if partitions == 0 {
            return Err(Error::InvalidPartitions {
                topic: name,
                reason: "a topic needs at least one partition".into(),
            });
        }
        overrides
            .overlaid_on(&self.config.topic_defaults)
            .log_config()?;
        let mut controller = self.controller.lock();
        let Controller { metadata, registry } = &mut *controller;
        let metadata = metadata.as_ref().ok_or(Error::Closed("cluster"))?;
        if registry.topics.contains_key(&name) {
            return Err(Error::TopicAlreadyExists { topic: name });
        }
        let key = collision_key(&name);
        if let Some(other) = registry.topics.keys().find(|t| collision_key(t) == key) {
            return Err(Error::InvalidTopic {
                reason: format!(
                    "it collides with existing topic {other} ('.' and '_' are treated alike)"
                ),
                topic: name,
            });
        }
        let id = Uuid::new_v4();
        let mut records = vec![MetadataRecord::Topic {
            name: name.clone(),
            id,
        }];
        records.extend((0..partitions).map(|p| partition_record(id, p)));
        records.extend(overrides.entries().map(|(k, v)| MetadataRecord::Config {
            topic_id: id,
            key: k.to_string(),
            value: Some(v.to_string()),
        }));
        metadata.commit(registry, &records)?;
        match self.open_topic(&name, id, overrides, partitions) {
            Ok(state) => {
                self.topics.write().insert(name, state.clone());
                self.metadata_changed();
                Ok(state)
            }
            Err(e) => {
                // Best effort: take the half-created topic back out of the
                // registry; a later open removes whatever is left.
                let _ = metadata.commit(registry, &[MetadataRecord::RemoveTopic { topic_id: id }]);
                for p in 0..partitions {
                    let _ = self.broker.delete_partition(&name, p, id);
                }
                Err(e)
            }
        }
    }

    fn delete_topic(&self, name: &str) -> Result<()> {
        self.check_open()?;
        if name.starts_with("__") {
            return Err(Error::InvalidTopic {
                topic: name.to_string(),
                reason: "internal topics cannot be deleted".into(),
            });
        }
        let mut controller = self.controller.lock();
        let Controller { metadata, registry } = &mut *controller;
        let metadata = metadata.as_ref().ok_or(Error::Closed("cluster"))?;
        let meta = registry.topic(name)?;
        let id = meta.id;
        metadata.commit(registry, &[MetadataRecord::RemoveTopic { topic_id: id }])?;
        let state = self.topics.write().remove(name);
        let mut first_error = None;
        if let Some(state) = state {
            state.deleted.store(true, Ordering::Release);
            let replicas = state.partitions.read().clone();
            for replica in replicas {
                let result = replica
                    .shut(true)
                    .and_then(|_| self.broker.delete_partition(name, replica.partition(), id));
                if let Err(e) = result {
                    first_error.get_or_insert(e);
                }
            }
        }
        self.metadata_changed();
        if let Err(e) = self.broker.write_checkpoints() {
            first_error.get_or_insert(e);
        }
        // A re-created topic must not inherit its predecessor's commits.
        for group in self.groups_with_offsets_for(name) {
            if let Err(e) = self.delete_offsets(&group, Some(name)) {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn create_partitions(&self, name: &str, total: u32) -> Result<()> {
        self.check_open()?;
        let mut controller = self.controller.lock();
        let Controller { metadata, registry } = &mut *controller;
        let metadata = metadata.as_ref().ok_or(Error::Closed("cluster"))?;
        let meta = registry.topic(name)?;
        let (id, current) = (meta.id, meta.partitions);
        if total <= current {
            return Err(Error::InvalidPartitions {
                topic: name.to_string(),
                reason: format!(
                    "the topic has {current} partitions; the new count {total} must be larger"
                ),
            });
        }
        let state = self.topic_state(name)?;
        let records: Vec<MetadataRecord> =
            (current..total).map(|p| partition_record(id, p)).collect();
        metadata.commit(registry, &records)?;
        for p in current..total {
            let replica =
                self.broker
                    .open_partition(&state.name, id, p, state.log_config.clone())?;
            let mut replicas = state.partitions.write();
            replicas.push(replica);
            state.count.store(replicas.len() as u32, Ordering::Release);
            drop(replicas);
            self.metadata_changed();
        }
        Ok(())
    }

    /// Writes every live partition's recovery point and log start offset
    /// to the broker's checkpoint files.
    pub(crate) fn checkpoint(&self) -> Result<()> {
        let topics: Vec<Arc<TopicState>> = self.topics.read().values().cloned().collect();
        for topic in topics {
            let replicas = topic.partitions.read().clone();
            for replica in replicas {
                // A partition deleted or closed meanwhile has nothing to note.
                if let Ok(offsets) = replica.offsets() {
                    self.broker
                        .note_offsets(&topic.name, replica.partition(), offsets);
                }
            }
        }
        self.broker.write_checkpoints()?;
        *self.checkpoints.0.lock() += 1;
        self.checkpoints.1.notify_all();
        Ok(())
    }

    fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if let Some(checkpointer) = self.checkpointer.lock().take() {
            checkpointer.stop();
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
        let topics: Vec<Arc<TopicState>> = self.topics.write().drain().map(|(_, t)| t).collect();
        for topic in topics {
            let replicas = topic.partitions.read().clone();
            for replica in replicas {
                match replica.shut(false) {
                    Ok(Some(offsets)) => {
                        self.broker
                            .note_offsets(&topic.name, replica.partition(), offsets);
                    }
                    Ok(None) => {}
                    Err(e) => note(Err(e)),
                }
            }
        }
        note(self.broker.write_checkpoints());
        // Every partition log is closed: nothing is left for its threads.
        self.broker.stop_scheduler();
        drop(controller);
        self.lock.lock().take();
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for ClusterInner {
    fn drop(&mut self) {
        // Errors are reported by `Cluster::close`; dropping cannot return them.
        let _ = self.close();
    }
}

fn partition_record(topic_id: Uuid, partition: u32) -> MetadataRecord {
    MetadataRecord::Partition {
        topic_id,
        partition,
        replicas: vec![0],
        leader: 0,
        leader_epoch: 0,
    }
}

/// Reads `meta.properties`, or writes it for a new cluster; returns the
/// cluster id.
fn meta_properties(storage: &dyn Storage, root: &Path) -> Result<String> {
    let path = root.join(META_PROPERTIES);
    if storage.exists(&path) {
        let file = storage.open(&path, OpenMode::Existing)?;
        let len = usize::try_from(file.len()?)
            .unwrap_or(usize::MAX)
            .min(64 * 1024);
        let mut bytes = vec![0; len];
        file.read_exact_at(&mut bytes, 0)?;
        let text = String::from_utf8_lossy(&bytes);
        let field = |key: &str| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().to_string())
        };
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
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;
    use crate::config::FlushPolicy;
    use crate::format::BatchBuilder;
    use crate::log::{CheckpointRead, OffsetCheckpoint};
    use crate::types::Compression;

    #[test]
    fn recovery_points_are_checkpointed_every_interval() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000_000);
        let config = ClusterConfig::builder()
            .clock(Arc::new(clock.clone()))
            .checkpoint_interval_ms(60_000)
            .build()
            .unwrap();
        let cluster = Cluster::open(dir.path(), config).unwrap();
        let durable = TopicConfig::new().flush(FlushPolicy::every_append());
        let topic = cluster
            .create_topic(NewTopic::new("t", 1).config(durable))
            .unwrap();
        let mut batch = BatchBuilder::new(Compression::None);
        batch.append(1, None, Some(b"v"), &[]);
        batch.append(2, None, Some(b"w"), &[]);
        let mut bytes = batch.build().unwrap().to_vec();
        topic.partition(0).unwrap().append(&mut bytes).unwrap();
        let file = OffsetCheckpoint::new(
            dir.path()
                .join(BROKER_DIR)
                .join("recovery-point-offset-checkpoint"),
        );
        let recorded = || match file.read().unwrap() {
            CheckpointRead::Present(entries) => entries.get(&("t".to_string(), 0)).copied(),
            CheckpointRead::Missing => None,
        };
        assert_eq!(recorded(), None, "nothing before the first interval");
        let (count, done) = &cluster.inner.checkpoints;
        let mut written = count.lock();
        clock.advance_ms(60_000);
        while *written == 0 {
            assert!(
                !done
                    .wait_for(&mut written, Duration::from_secs(30))
                    .timed_out(),
                "the checkpoint thread wrote nothing"
            );
        }
        drop(written);
        assert_eq!(recorded(), Some(2));
        cluster.close().unwrap();
    }
}
