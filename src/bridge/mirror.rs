//! [`Mirror`]: the copying itself, both ways, with checkpoints.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, Headers as _, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::{Message as _, Offset, TopicPartitionList};

use super::config::{MirrorBuilder, MirrorConfig, TopicRoute};
use super::kafka::{DeliveryContext, client_config, kafka_error, partition_count};
use super::syncs::{Direction, OffsetSync, OffsetSyncs};
use super::{MirrorError, target_partition};
use crate::{
    Cluster, Consumer, ConsumerConfig, Header, IsolationLevel, NewTopic, OffsetAndMetadata,
    OffsetReset, Producer, ProducerConfig, ProducerRecord, SendFuture, TopicPartition,
};

/// How long one poll of a source waits for records before the run checks
/// its progress and deadline again.
const POLL_SLICE: Duration = Duration::from_millis(100);

/// A mirror between this logbus cluster and a Kafka cluster (Kafka's
/// MirrorMaker): see the [module documentation](super) for what is
/// copied and what is guaranteed. `Send + Sync` and cheap to clone (clones
/// share the mirror); runs are serialized.
///
/// ```
/// use std::collections::BTreeMap;
/// use logbus::bridge::Mirror;
/// use logbus::{
///     Cluster, ClusterConfig, NewTopic, OffsetAndMetadata, Producer, ProducerConfig,
///     ProducerRecord, TopicPartition,
/// };
///
/// // librdkafka's in-process mock cluster stands in for Kafka here.
/// let kafka = rdkafka::mocking::MockCluster::new(1)?;
/// kafka.create_topic("orders", 2, 1)?;
///
/// let dir = tempfile::tempdir()?;
/// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
/// cluster.create_topic(NewTopic::new("orders", 2))?;
/// let producer = Producer::new(&cluster, ProducerConfig::default())?;
/// for i in 0..5 {
///     producer.send(ProducerRecord::new("orders", "created").with_key(format!("o-{i}")))?;
/// }
/// producer.flush()?;
///
/// let mirror = Mirror::builder(&cluster, "backup")
///     .bootstrap_servers(kafka.bootstrap_servers())
///     .to_kafka("orders")
///     .build()?;
/// assert_eq!(mirror.run_once()?.records_to_kafka, 5); // bounded: what is there now
/// assert_eq!(mirror.run_once()?.records_to_kafka, 0); // resumes where it stopped
///
/// // A logbus group that read everything resumes at the end in Kafka too.
/// let tp = TopicPartition::new("orders", 0);
/// let end = cluster.topic("orders")?.partitions()?[0].log_end_offset()?;
/// cluster.alter_group_offsets("billing", &BTreeMap::from([(tp.clone(), OffsetAndMetadata::new(end))]))?;
/// assert_eq!(mirror.translate_offsets("billing")?[&tp], end);
///
/// // Or in the background, until stopped.
/// let running = mirror.start();
/// running.stop()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Mirror {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("name", &self.inner.config.name)
            .field("bootstrap_servers", &self.inner.config.bootstrap_servers)
            .field("to_kafka", &self.inner.config.to_kafka)
            .field("from_kafka", &self.inner.config.from_kafka)
            .field("exactly_once", &self.inner.config.exactly_once)
            .finish_non_exhaustive()
    }
}

/// What one [`Mirror::run_once`] copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MirrorReport {
    /// Records copied from logbus to Kafka (and checkpointed).
    pub records_to_kafka: u64,
    /// Records copied from Kafka to logbus (and checkpointed).
    pub records_from_kafka: u64,
}

impl MirrorReport {
    /// Records copied either way.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.records_to_kafka + self.records_from_kafka
    }
}

struct Inner {
    cluster: Cluster,
    config: MirrorConfig,
    /// The logbus producer: records from Kafka, and offset syncs.
    producer: Producer,
    /// The copying state, made at the first run and dropped after a
    /// failure (the next run starts again from the committed positions).
    engines: Mutex<Engines>,
    syncs: Mutex<OffsetSyncs>,
    /// Set by an injected crash or a fencing: the mirror refuses to run.
    dead: Mutex<Option<DeadReason>>,
    /// Records handed to a target in this mirror's life (the crash hook's
    /// count).
    handed: AtomicU64,
}

#[derive(Debug, Clone)]
enum DeadReason {
    Crashed,
    Fenced(String),
}

#[derive(Default)]
struct Engines {
    to_kafka: Option<ToKafka>,
    from_kafka: Option<FromKafka>,
}

impl Mirror {
    /// Starts building a mirror named `name` (it names the mirror's
    /// groups, `transactional.id` and offset-syncs topic: a restarted
    /// mirror resumes by its name).
    pub fn builder(cluster: &Cluster, name: &str) -> MirrorBuilder {
        MirrorBuilder::new(cluster, name)
    }

    pub(crate) fn new(cluster: Cluster, config: MirrorConfig) -> Result<Mirror, MirrorError> {
        let syncs_topic = config.syncs_topic();
        cluster.create_topic_if_not_exists(NewTopic::new(syncs_topic.as_str(), 1))?;
        let syncs = load_syncs(&cluster, &syncs_topic, &config.name)?;
        let producer = Producer::new(
            &cluster,
            ProducerConfig::builder()
                .client_id(format!("mirror-{}", config.name))
                .build()?,
        )?;
        Ok(Mirror {
            inner: Arc::new(Inner {
                cluster,
                config,
                producer,
                engines: Mutex::new(Engines::default()),
                syncs: Mutex::new(syncs),
                dead: Mutex::new(None),
                handed: AtomicU64::new(0),
            }),
        })
    }

    /// The mirror's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    /// The logbus topics copied to Kafka, with their Kafka names.
    #[must_use]
    pub fn to_kafka_routes(&self) -> &[TopicRoute] {
        &self.inner.config.to_kafka
    }

    /// The Kafka topics copied into logbus, with their logbus names.
    #[must_use]
    pub fn from_kafka_routes(&self) -> &[TopicRoute] {
        &self.inner.config.from_kafka
    }

    /// Whether records go to Kafka in transactions
    /// ([`MirrorBuilder::exactly_once`]).
    #[must_use]
    pub fn is_exactly_once(&self) -> bool {
        self.inner.config.exactly_once
    }

    /// Copies what is there now, both ways, and returns: every source
    /// partition up to its end as the run starts (records arriving
    /// meanwhile may be copied too), checkpointing every
    /// [`records_per_checkpoint`](MirrorBuilder::records_per_checkpoint)
    /// records and at the end. Logbus to Kafka first, then Kafka to logbus;
    /// the first failure ends the run (what was checkpointed before it
    /// stays). Blocks while another run of this mirror is in progress. The
    /// first run connects to Kafka.
    ///
    /// # Errors
    /// [`MirrorError::Kafka`], [`MirrorError::Logbus`],
    /// [`MirrorError::Delivery`] (the records since the last checkpoint are
    /// copied again by the next run: at-least-once; in exactly-once mode
    /// their transaction is aborted); [`MirrorError::Timeout`] after the
    /// mirror's timeout without progress; [`MirrorError::UnknownKafkaTopic`];
    /// [`MirrorError::Config`] when a Kafka topic has fewer partitions
    /// than its logbus source in exactly-once mode;
    /// [`MirrorError::Fenced`] once a newer mirror of the same name took
    /// over (this one then refuses every run).
    pub fn run_once(&self) -> Result<MirrorReport, MirrorError> {
        let inner = &self.inner;
        let mut engines = inner.engines.lock();
        inner.check_alive()?;
        let mut report = MirrorReport::default();
        if !inner.config.to_kafka.is_empty() {
            // A logbus topic that gained partitions: start again from the
            // committed positions with all of them.
            if let Some(engine) = &engines.to_kafka
                && engine.routes.iter().any(|r| {
                    inner
                        .cluster
                        .topic(&r.source)
                        .is_ok_and(|t| t.partition_count() != r.source_partitions)
                })
            {
                engines.to_kafka = None;
            }
            // An engine that failed is dropped: the next run starts again
            // from the committed positions.
            let mut engine = match engines.to_kafka.take() {
                Some(engine) => engine,
                None => ToKafka::open(inner).map_err(|e| inner.note_failure(e))?,
            };
            report.records_to_kafka = engine.run(inner).map_err(|e| inner.note_failure(e))?;
            engines.to_kafka = Some(engine);
        }
        if !inner.config.from_kafka.is_empty() {
            let mut engine = match engines.from_kafka.take() {
                Some(engine) => engine,
                None => FromKafka::open(inner).map_err(|e| inner.note_failure(e))?,
            };
            report.records_from_kafka = engine.run(inner).map_err(|e| inner.note_failure(e))?;
            engines.from_kafka = Some(engine);
        }
        Ok(report)
    }

    /// Runs the mirror on a background thread: [`run_once`](Mirror::run_once)
    /// again and again, waiting [`idle_wait`](MirrorBuilder::idle_wait)
    /// after a run that copied nothing, until [`MirrorHandle::stop`]. A run
    /// that fails for a reason that may pass (Kafka unreachable, a refused
    /// delivery, a timeout, a missing topic) is counted
    /// ([`MirrorHandle::failed_runs`], [`MirrorHandle::last_error`]) and
    /// tried again after `idle_wait`, from the last checkpoint (as
    /// MirrorMaker's tasks restart). A failure that will not pass (fenced,
    /// crashed, bad settings, the cluster closed) ends the thread, and
    /// `stop` returns it.
    ///
    /// # Panics
    /// If the OS refuses to make a thread.
    #[must_use = "dropping the handle stops the mirror"]
    pub fn start(&self) -> MirrorHandle {
        let shared = Arc::new(Background {
            stopped: Mutex::new(false),
            wake: Condvar::new(),
            failed_runs: AtomicU64::new(0),
            last_error: Mutex::new(None),
        });
        let mirror = self.clone();
        let state = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("logbus-mirror-{}", self.inner.config.name))
            .spawn(move || {
                loop {
                    if *state.stopped.lock() {
                        return Ok(());
                    }
                    let idle = match mirror.run_once() {
                        Ok(report) => report.total() == 0,
                        Err(e) if is_fatal(&e) => return Err(e),
                        Err(e) => {
                            state.failed_runs.fetch_add(1, Ordering::Relaxed);
                            *state.last_error.lock() = Some(e.to_string());
                            true
                        }
                    };
                    let mut stopped = state.stopped.lock();
                    if idle && !*stopped {
                        let _ = state
                            .wake
                            .wait_for(&mut stopped, mirror.inner.config.idle_wait);
                    }
                }
            })
            .expect("spawn the mirror's thread");
        MirrorHandle {
            shared,
            thread: Some(thread),
        }
    }

    /// Every offset sync known (loaded from the offset-syncs topic when
    /// the mirror was built, and added at each checkpoint since), in
    /// (direction, source partition, source offset) order; the newest
    /// 1024 per source partition are kept.
    #[must_use]
    pub fn offset_syncs(&self) -> Vec<OffsetSync> {
        self.inner.syncs.lock().all()
    }

    /// Where consumer group `group`'s committed positions on one side are
    /// on the other, through the offset syncs (MirrorMaker 2's
    /// `RemoteClusterUtils.translateOffsets`): for each mirrored logbus
    /// topic, the group's logbus positions as Kafka offsets of the target
    /// topic; for each Kafka topic mirrored into logbus, the group's Kafka
    /// positions as logbus offsets. A position exactly at a synced record
    /// translates exactly; one past it translates to just after its copy
    /// (a consumer there may see a few records again, and never misses
    /// one). Partitions without a sync at or below the group's position,
    /// and partitions whose records were spread by key (counts differ),
    /// are left out.
    ///
    /// # Errors
    /// [`MirrorError::Logbus`] for an invalid group id;
    /// [`MirrorError::Kafka`] or [`MirrorError::UnknownKafkaTopic`] when
    /// reading the group's Kafka positions fails.
    pub fn translate_offsets(
        &self,
        group: &str,
    ) -> Result<BTreeMap<TopicPartition, u64>, MirrorError> {
        let inner = &self.inner;
        let timeout = inner.config.timeout;
        let consumer = inner.kafka_consumer(group)?;
        let mut out = BTreeMap::new();
        if !inner.config.to_kafka.is_empty() {
            // Only topics whose partitions kept their numbers translate.
            let mut kept = Vec::new();
            for r in &inner.config.to_kafka {
                let source = inner.cluster.topic(&r.source)?.partition_count();
                if partition_count(consumer.client(), &r.target, timeout)? == source {
                    kept.push(r.source.as_str());
                }
            }
            let committed = inner.cluster.list_group_offsets(group)?;
            let syncs = inner.syncs.lock();
            for (tp, om) in &committed {
                if kept.contains(&tp.topic.as_str())
                    && let Some((target, offset)) =
                        syncs.translate(Direction::ToKafka, tp, om.offset)
                {
                    out.insert(target, offset);
                }
            }
        }
        if !inner.config.from_kafka.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for route in &inner.config.from_kafka {
                let n = partition_count(consumer.client(), &route.source, timeout)?;
                let kept = inner
                    .cluster
                    .topic(&route.target)
                    .is_ok_and(|t| t.partition_count() == n);
                if kept {
                    for p in 0..n {
                        tpl.add_partition(&route.source, p as i32);
                    }
                }
            }
            if tpl.count() == 0 {
                return Ok(out);
            }
            let committed = consumer
                .committed_offsets(tpl, timeout)
                .map_err(|e| kafka_error("read committed offsets", e))?;
            let syncs = inner.syncs.lock();
            for e in committed.elements() {
                if let (Offset::Offset(o), Ok(p)) = (e.offset(), u32::try_from(e.partition()))
                    && let Ok(o) = u64::try_from(o)
                    && let Some((target, offset)) =
                        syncs.translate(Direction::FromKafka, &TopicPartition::new(e.topic(), p), o)
                {
                    out.insert(target, offset);
                }
            }
        }
        Ok(out)
    }

    /// Moves consumer group `group` across: commits its
    /// [translated](Mirror::translate_offsets) positions on the other side
    /// (MirrorMaker 2's `sync.group.offsets`) — in Kafka for the topics
    /// mirrored there, in logbus (as [`Cluster::alter_group_offsets`]) for
    /// the topics mirrored from Kafka. Returns what was committed. The
    /// group should have no active member on the receiving side (logbus
    /// refuses then; Kafka refuses a commit outside the group's current
    /// generation).
    ///
    /// # Errors
    /// As [`translate_offsets`](Mirror::translate_offsets), plus the
    /// commit's errors ([`MirrorError::Kafka`], [`MirrorError::Logbus`]
    /// with [`Error::GroupNotEmpty`](crate::Error::GroupNotEmpty)).
    pub fn sync_group_offsets(
        &self,
        group: &str,
    ) -> Result<BTreeMap<TopicPartition, u64>, MirrorError> {
        let inner = &self.inner;
        let translated = self.translate_offsets(group)?;
        let mut to_kafka = TopicPartitionList::new();
        let mut to_logbus = BTreeMap::new();
        for (tp, &offset) in &translated {
            if inner.config.to_kafka.iter().any(|r| r.target == tp.topic) {
                to_kafka
                    .add_partition_offset(&tp.topic, tp.partition as i32, kafka_offset(offset))
                    .map_err(|e| kafka_error("build offsets", e))?;
            } else {
                to_logbus.insert(tp.clone(), OffsetAndMetadata::new(offset));
            }
        }
        if to_kafka.count() > 0 {
            inner
                .kafka_consumer(group)?
                .commit(&to_kafka, CommitMode::Sync)
                .map_err(|e| kafka_error("commit group offsets", e))?;
        }
        if !to_logbus.is_empty() {
            inner.cluster.alter_group_offsets(group, &to_logbus)?;
        }
        Ok(translated)
    }
}

impl Inner {
    fn check_alive(&self) -> Result<(), MirrorError> {
        match &*self.dead.lock() {
            None => Ok(()),
            Some(DeadReason::Crashed) => Err(MirrorError::Crashed),
            Some(DeadReason::Fenced(reason)) => Err(MirrorError::Fenced {
                operation: "run",
                reason: reason.clone(),
            }),
        }
    }

    /// Remembers a failure that ends the mirror (a crash, a fencing).
    fn note_failure(&self, e: MirrorError) -> MirrorError {
        match &e {
            MirrorError::Crashed => *self.dead.lock() = Some(DeadReason::Crashed),
            MirrorError::Fenced { reason, .. } => {
                *self.dead.lock() = Some(DeadReason::Fenced(reason.clone()));
            }
            _ => {}
        }
        e
    }

    /// Counts a record handed to a target; the crash hook's check.
    fn handed_one(&self) -> bool {
        let n = self.handed.fetch_add(1, Ordering::Relaxed) + 1;
        #[cfg(feature = "internals")]
        if self.config.crash_after_records.is_some_and(|at| n >= at) {
            return true;
        }
        let _ = n;
        false
    }

    /// A Kafka consumer in group `group` that joins nothing (manual
    /// assignment): for committed offsets and commits.
    fn kafka_consumer(&self, group: &str) -> Result<BaseConsumer, MirrorError> {
        let mut c = client_config(&self.config);
        c.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true");
        c.create().map_err(|e| kafka_error("create consumer", e))
    }

    /// Stores offset syncs in the syncs topic (waiting for the append) and
    /// in memory.
    fn record_syncs(&self, syncs: &[OffsetSync]) -> Result<(), MirrorError> {
        if syncs.is_empty() {
            return Ok(());
        }
        let topic: Arc<str> = self.config.syncs_topic().into();
        let mut sent = Vec::with_capacity(syncs.len());
        for s in syncs {
            let (key, value) = s.encode();
            sent.push(
                self.producer
                    .send(ProducerRecord::new(Arc::clone(&topic), value).with_key(key))?,
            );
        }
        for f in sent {
            f.wait()?;
        }
        let mut known = self.syncs.lock();
        for s in syncs {
            known.add(s);
        }
        Ok(())
    }
}

/// Reads every offset sync of the syncs topic.
fn load_syncs(cluster: &Cluster, topic: &str, name: &str) -> Result<OffsetSyncs, MirrorError> {
    let mut consumer = Consumer::new(
        cluster,
        ConsumerConfig::builder()
            .auto_offset_reset(OffsetReset::Earliest)
            .client_id(format!("mirror-{name}-syncs"))
            .build()?,
    )?;
    let tp = TopicPartition::new(topic, 0);
    consumer.assign(std::slice::from_ref(&tp))?;
    let end = consumer.end_offsets(std::slice::from_ref(&tp))?[&tp];
    let mut syncs = OffsetSyncs::default();
    while consumer.position(&tp)? < end {
        let records = consumer.poll(POLL_SLICE)?;
        for r in records.iter() {
            if let Some(s) = OffsetSync::decode(r.key().unwrap_or(&[]), r.value().unwrap_or(&[])) {
                syncs.add(&s);
            }
        }
    }
    Ok(syncs)
}

fn kafka_offset(offset: u64) -> Offset {
    Offset::Offset(i64::try_from(offset).unwrap_or(i64::MAX))
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// A mirrored topic's state.
struct Route {
    source: String,
    target: Arc<str>,
    source_partitions: u32,
    target_partitions: u32,
}

/// For each source partition of a checkpoint: the records to sync (the
/// first, then every `offset.lag.max` offsets, and the last), with where
/// they landed. Records are added in source offset order.
#[derive(Default)]
struct Span {
    samples: Vec<(u64, i32, u64)>,
    last: Option<(u64, i32, u64)>,
}

impl Span {
    fn add(&mut self, lag_max: u64, upstream: u64, partition: i32, downstream: u64) {
        let due = self
            .samples
            .last()
            .is_none_or(|&(u, ..)| upstream >= u.saturating_add(lag_max));
        if due {
            self.samples.push((upstream, partition, downstream));
        }
        self.last = Some((upstream, partition, downstream));
    }

    fn syncs(&self, direction: Direction, source: TopicPartition, target: &str) -> Vec<OffsetSync> {
        let mut points = self.samples.clone();
        if let Some(last) = self.last
            && points.last() != Some(&last)
        {
            points.push(last);
        }
        points
            .into_iter()
            .map(|(u, p, d)| OffsetSync {
                direction,
                source: source.clone(),
                target: TopicPartition::new(target, u32::try_from(p).unwrap_or(0)),
                upstream_offset: u,
                downstream_offset: d,
            })
            .collect()
    }
}

/// logbus → Kafka.
struct ToKafka {
    consumer: Consumer,
    producer: BaseProducer<DeliveryContext>,
    /// The Kafka side of the mirror's group (exactly-once only).
    group: Option<BaseConsumer>,
    routes: Vec<Route>,
    /// Records sent since the last checkpoint: (route, partition, offset),
    /// in the order of their delivery slots.
    pending: Vec<(usize, u32, u64)>,
}

impl ToKafka {
    fn open(inner: &Inner) -> Result<ToKafka, MirrorError> {
        let config = &inner.config;
        let mut c = client_config(config);
        c.set("enable.idempotence", "true").set("acks", "all");
        if config.exactly_once {
            c.set("transactional.id", config.transactional_id());
        }
        let producer: BaseProducer<DeliveryContext> = c
            .create_with_context(DeliveryContext::default())
            .map_err(|e| kafka_error("create producer", e))?;
        let mut routes = Vec::new();
        for r in &config.to_kafka {
            let source_partitions = inner.cluster.topic(&r.source)?.partition_count();
            let target_partitions = partition_count(producer.client(), &r.target, config.timeout)?;
            if config.exactly_once && target_partitions < source_partitions {
                return Err(MirrorError::Config(format!(
                    "exactly-once needs Kafka topic {:?} to have at least the {} partitions of \
                     logbus topic {:?} (it has {})",
                    r.target, source_partitions, r.source, target_partitions
                )));
            }
            routes.push(Route {
                source: r.source.clone(),
                target: r.target.as_str().into(),
                source_partitions,
                target_partitions,
            });
        }
        // Where to resume: the logbus group, and with exactly-once the
        // later of it and Kafka's.
        let mut resume: BTreeMap<TopicPartition, u64> = inner
            .cluster
            .list_group_offsets(&config.group())?
            .into_iter()
            .map(|(tp, om)| (tp, om.offset))
            .collect();
        let mut group = None;
        if config.exactly_once {
            producer
                .init_transactions(config.timeout)
                .map_err(|e| kafka_error("init transactions", e))?;
            let consumer = inner.kafka_consumer(&config.group())?;
            let mut tpl = TopicPartitionList::new();
            for r in &routes {
                for p in 0..r.source_partitions {
                    tpl.add_partition(&r.target, p as i32);
                }
            }
            let committed = consumer
                .committed_offsets(tpl, config.timeout)
                .map_err(|e| kafka_error("read committed offsets", e))?;
            for e in committed.elements() {
                let Some(route) = routes.iter().find(|r| {
                    &*r.target == e.topic() && e.metadata() == format!("logbus:{}", r.source)
                }) else {
                    continue;
                };
                if let (Offset::Offset(o), Ok(p)) = (e.offset(), u32::try_from(e.partition()))
                    && let Ok(o) = u64::try_from(o)
                {
                    let tp = TopicPartition::new(route.source.as_str(), p);
                    let at = resume.entry(tp).or_insert(0);
                    *at = (*at).max(o);
                }
            }
            group = Some(consumer);
        }
        let mut consumer = Consumer::new(
            &inner.cluster,
            ConsumerConfig::builder()
                .auto_offset_reset(OffsetReset::Earliest)
                .isolation_level(IsolationLevel::ReadCommitted)
                .client_id(format!("mirror-{}", config.name))
                .build()?,
        )?;
        let tps: Vec<TopicPartition> = routes
            .iter()
            .flat_map(|r| {
                (0..r.source_partitions).map(|p| TopicPartition::new(r.source.as_str(), p))
            })
            .collect();
        consumer.assign(&tps)?;
        for tp in &tps {
            if let Some(&at) = resume.get(tp) {
                consumer.seek(tp, at)?;
            }
        }
        Ok(ToKafka {
            consumer,
            producer,
            group,
            routes,
            pending: Vec::new(),
        })
    }

    fn partitions(&self) -> Vec<TopicPartition> {
        self.routes
            .iter()
            .flat_map(|r| {
                (0..r.source_partitions).map(|p| TopicPartition::new(r.source.as_str(), p))
            })
            .collect()
    }

    fn run(&mut self, inner: &Inner) -> Result<u64, MirrorError> {
        let timeout = inner.config.timeout;
        let tps = self.partitions();
        let ends = self.consumer.end_offsets(&tps)?;
        let mut copied = 0;
        // Progress is a position moving (records, or transaction markers
        // and aborted records skipped).
        let mut progress = Instant::now();
        let mut last_positions = None;
        loop {
            let mut behind = false;
            let mut positions = Vec::with_capacity(tps.len());
            for tp in &tps {
                let at = self.consumer.position(tp)?;
                behind |= at < ends[tp];
                positions.push(at);
            }
            if !behind {
                break;
            }
            if last_positions.as_ref() != Some(&positions) {
                progress = Instant::now();
                last_positions = Some(positions);
            } else if progress.elapsed() > timeout {
                return Err(MirrorError::Timeout(timeout));
            }
            let records = self.consumer.poll(POLL_SLICE)?;
            for r in records.iter() {
                let Some(route) = self.routes.iter().position(|x| x.source == r.topic()) else {
                    continue; // only assigned topics are read
                };
                self.send(
                    inner,
                    route,
                    r.partition(),
                    r.offset(),
                    r.key(),
                    r.value(),
                    r.headers(),
                    r.timestamp(),
                )?;
                copied += 1;
                if inner.handed_one() {
                    return Err(self.crash());
                }
                if self.pending.len() >= inner.config.records_per_checkpoint {
                    self.checkpoint(inner)?;
                }
            }
        }
        self.checkpoint(inner)?;
        Ok(copied)
    }

    #[allow(clippy::too_many_arguments, reason = "one record's parts")]
    fn send(
        &mut self,
        inner: &Inner,
        route: usize,
        partition: u32,
        offset: u64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
        timestamp: i64,
    ) -> Result<(), MirrorError> {
        let timeout = inner.config.timeout;
        if inner.config.exactly_once && self.pending.is_empty() {
            self.producer
                .begin_transaction()
                .map_err(|e| kafka_error("begin transaction", e))?;
        }
        let r = &self.routes[route];
        let target = target_partition(
            key,
            partition,
            nonzero(r.source_partitions),
            nonzero(r.target_partitions),
        );
        let slot = {
            let mut results = self.producer.context().results.lock();
            results.push(None);
            results.len() - 1
        };
        let mut record = BaseRecord::<[u8], [u8], usize>::with_opaque_to(&r.target, slot)
            .partition(target as i32)
            .timestamp(timestamp);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        if !headers.is_empty() {
            let mut h = OwnedHeaders::new_with_capacity(headers.len());
            for header in headers {
                h = h.insert(KafkaHeader {
                    key: &header.key,
                    value: header.value.as_deref(),
                });
            }
            record = record.headers(h);
        }
        let started = Instant::now();
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    if started.elapsed() > timeout {
                        return Err(MirrorError::Timeout(timeout));
                    }
                    record = back;
                    self.producer.poll(POLL_SLICE);
                }
                Err((e, _)) => return Err(kafka_error("send", e)),
            }
        }
        self.pending.push((route, partition, offset));
        Ok(())
    }

    /// The injected crash: what was sent reaches Kafka (acknowledged, or in
    /// the open transaction), and nothing is checkpointed.
    fn crash(&mut self) -> MirrorError {
        let _ = self.producer.flush(POLL_SLICE * 100);
        MirrorError::Crashed
    }

    fn checkpoint(&mut self, inner: &Inner) -> Result<(), MirrorError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let config = &inner.config;
        let spans = match self.commit_to_kafka(inner) {
            Ok(spans) => spans,
            Err(e) => {
                if config.exactly_once {
                    // Best effort: a broker aborts it anyway when the next
                    // mirror calls init_transactions.
                    let _ = self.producer.abort_transaction(config.timeout);
                }
                return Err(e);
            }
        };
        let mut offsets = BTreeMap::new();
        let mut syncs = Vec::new();
        for ((route, partition), span) in spans {
            let r = &self.routes[route];
            let source = TopicPartition::new(r.source.as_str(), partition);
            if let Some((u, ..)) = span.last {
                offsets.insert(source.clone(), OffsetAndMetadata::new(u + 1));
            }
            syncs.extend(span.syncs(Direction::ToKafka, source, &r.target));
        }
        inner
            .cluster
            .alter_group_offsets(&config.group(), &offsets)?;
        inner.record_syncs(&syncs)?;
        self.pending.clear();
        self.producer.context().results.lock().clear();
        Ok(())
    }

    /// Waits for Kafka to acknowledge every pending record (and, with
    /// exactly-once, commits their transaction with the source positions).
    fn commit_to_kafka(
        &mut self,
        inner: &Inner,
    ) -> Result<BTreeMap<(usize, u32), Span>, MirrorError> {
        let config = &inner.config;
        self.producer
            .flush(config.timeout)
            .map_err(|e| kafka_error("flush", e))?;
        let results = self.producer.context().results.lock().clone();
        let mut spans: BTreeMap<(usize, u32), Span> = BTreeMap::new();
        for (i, &(route, partition, offset)) in self.pending.iter().enumerate() {
            let target = &self.routes[route].target;
            match results.get(i).cloned().flatten() {
                Some(Ok((p, o))) => {
                    let o = u64::try_from(o).unwrap_or(0);
                    spans.entry((route, partition)).or_default().add(
                        config.offset_lag_max,
                        offset,
                        p,
                        o,
                    );
                }
                Some(Err(reason)) => {
                    return Err(MirrorError::Delivery {
                        topic: target.to_string(),
                        reason,
                    });
                }
                None => {
                    return Err(MirrorError::Delivery {
                        topic: target.to_string(),
                        reason: "no delivery report after flush".into(),
                    });
                }
            }
        }
        if config.exactly_once {
            let mut tpl = TopicPartitionList::new();
            for ((route, partition), span) in &spans {
                let r = &self.routes[*route];
                if let Some((u, ..)) = span.last {
                    let mut e = tpl.add_partition(&r.target, *partition as i32);
                    e.set_offset(kafka_offset(u + 1))
                        .map_err(|e| kafka_error("build offsets", e))?;
                    e.set_metadata(format!("logbus:{}", r.source));
                }
            }
            let group = self
                .group
                .as_ref()
                .and_then(BaseConsumer::group_metadata)
                .ok_or_else(|| MirrorError::Config("no Kafka group metadata".into()))?;
            self.producer
                .send_offsets_to_transaction(&tpl, &group, config.timeout)
                .map_err(|e| kafka_error("send offsets to transaction", e))?;
            self.producer
                .commit_transaction(config.timeout)
                .map_err(|e| kafka_error("commit transaction", e))?;
        }
        Ok(spans)
    }
}

/// Kafka → logbus.
struct FromKafka {
    /// With exactly-once: the transactional logbus producer
    /// (`transactional.id` `__mirror-<name>-from-kafka`).
    txn: Option<Producer>,
    routes: Vec<Route>,
    /// The next offset to read per (route, partition), as committed.
    next: BTreeMap<(usize, u32), u64>,
    /// Records sent since the last checkpoint.
    pending: Vec<(usize, u32, u64, SendFuture)>,
}

impl FromKafka {
    fn open(inner: &Inner) -> Result<FromKafka, MirrorError> {
        let config = &inner.config;
        let consumer = inner.kafka_consumer(&config.group())?;
        let mut routes = Vec::new();
        let mut tpl = TopicPartitionList::new();
        for r in &config.from_kafka {
            let source_partitions = partition_count(consumer.client(), &r.source, config.timeout)?;
            let topic = inner
                .cluster
                .create_topic_if_not_exists(NewTopic::new(r.target.as_str(), source_partitions))?;
            if config.exactly_once && topic.partition_count() < source_partitions {
                return Err(MirrorError::Config(format!(
                    "exactly-once needs logbus topic {:?} to have at least the {} partitions of \
                     Kafka topic {:?} (it has {})",
                    r.target,
                    source_partitions,
                    r.source,
                    topic.partition_count()
                )));
            }
            for p in 0..source_partitions {
                tpl.add_partition(&r.source, p as i32);
            }
            routes.push(Route {
                source: r.source.clone(),
                target: r.target.as_str().into(),
                source_partitions,
                target_partitions: topic.partition_count(),
            });
        }
        let committed = consumer
            .committed_offsets(tpl, config.timeout)
            .map_err(|e| kafka_error("read committed offsets", e))?;
        let mut next: BTreeMap<(usize, u32), u64> = BTreeMap::new();
        for e in committed.elements() {
            let Some(route) = routes.iter().position(|r| r.source == e.topic()) else {
                continue;
            };
            if let (Offset::Offset(o), Ok(p)) = (e.offset(), u32::try_from(e.partition()))
                && let Ok(o) = u64::try_from(o)
            {
                next.insert((route, p), o);
            }
        }
        let mut txn = None;
        if config.exactly_once {
            // The positions committed with the records, in the logbus
            // group, under the target partition of the same number: the
            // later of them and Kafka's (committed after) is where to resume.
            let logbus = inner.cluster.list_group_offsets(&config.group())?;
            for (i, r) in routes.iter().enumerate() {
                let tag = format!("kafka:{}", r.source);
                for (tp, om) in &logbus {
                    if *tp.topic == *r.target && om.metadata == tag {
                        let at = next.entry((i, tp.partition)).or_insert(0);
                        *at = (*at).max(om.offset);
                    }
                }
            }
            let producer = Producer::new(
                &inner.cluster,
                ProducerConfig::builder()
                    .client_id(format!("mirror-{}-txn", config.name))
                    .transactional_id(format!("{}-from-kafka", config.transactional_id()))
                    .build()?,
            )?;
            producer
                .init_transactions()
                .map_err(|e| logbus_error("init transactions", e))?;
            txn = Some(producer);
        }
        Ok(FromKafka {
            txn,
            routes,
            next,
            pending: Vec::new(),
        })
    }

    fn run(&mut self, inner: &Inner) -> Result<u64, MirrorError> {
        let mut copied = 0;
        for route in 0..self.routes.len() {
            copied += self.run_route(inner, route)?;
        }
        Ok(copied)
    }

    /// Copies one topic. A consumer per topic and per run: its end-of-
    /// partition events name only a partition number, and none is left
    /// over from an earlier run.
    fn run_route(&mut self, inner: &Inner, route: usize) -> Result<u64, MirrorError> {
        let config = &inner.config;
        let consumer = inner.kafka_consumer(&config.group())?;
        let (source, partitions) = {
            let r = &self.routes[route];
            (r.source.clone(), r.source_partitions)
        };
        // Each partition's end as the run starts; a partition is done when
        // its position reaches it (or librdkafka reports its end).
        let mut tpl = TopicPartitionList::new();
        let mut done = vec![false; partitions as usize];
        let mut highs = vec![0; partitions as usize];
        for p in 0..partitions {
            let (low, high) = consumer
                .fetch_watermarks(&source, p as i32, config.timeout)
                .map_err(|e| kafka_error("fetch watermarks", e))?;
            let start = match self.next.get(&(route, p)) {
                Some(&at) => {
                    tpl.add_partition_offset(&source, p as i32, kafka_offset(at))
                        .map_err(|e| kafka_error("assign", e))?;
                    i64::try_from(at).unwrap_or(i64::MAX)
                }
                None => {
                    tpl.add_partition_offset(&source, p as i32, Offset::Beginning)
                        .map_err(|e| kafka_error("assign", e))?;
                    low
                }
            };
            done[p as usize] = start >= high;
            highs[p as usize] = high;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| kafka_error("assign", e))?;
        let mut copied = 0;
        let mut progress = Instant::now();
        while done.iter().any(|d| !d) {
            match consumer.poll(POLL_SLICE) {
                None => {
                    if progress.elapsed() > config.timeout {
                        return Err(MirrorError::Timeout(config.timeout));
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    if let Some(d) = usize::try_from(p).ok().and_then(|p| done.get_mut(p)) {
                        *d = true;
                    }
                }
                Some(Err(e)) => return Err(kafka_error("consume", e)),
                Some(Ok(m)) => {
                    progress = Instant::now();
                    let p = u32::try_from(m.partition()).unwrap_or(0);
                    let offset = u64::try_from(m.offset()).unwrap_or(0);
                    let r = &self.routes[route];
                    let mut record = ProducerRecord::new(Arc::clone(&r.target), Bytes::new())
                        .with_value(m.payload().map(Bytes::copy_from_slice))
                        .with_partition(target_partition(
                            m.key(),
                            p,
                            nonzero(r.source_partitions),
                            nonzero(r.target_partitions),
                        ));
                    if let Some(k) = m.key() {
                        record = record.with_key(Bytes::copy_from_slice(k));
                    }
                    if let Some(ts) = m.timestamp().to_millis().filter(|t| *t >= 0) {
                        record = record.with_timestamp(ts);
                    }
                    if let Some(hs) = m.headers() {
                        let headers = hs
                            .iter()
                            .map(|h| Header {
                                key: h.key.to_string(),
                                value: h.value.map(Bytes::copy_from_slice),
                            })
                            .collect();
                        record = record.with_headers(headers);
                    }
                    let producer = self.txn.as_ref().unwrap_or(&inner.producer);
                    if self.txn.is_some() && self.pending.is_empty() {
                        producer
                            .begin_transaction()
                            .map_err(|e| logbus_error("begin transaction", e))?;
                    }
                    let sent = producer.send(record)?;
                    self.pending.push((route, p, offset, sent));
                    copied += 1;
                    if m.offset() + 1 >= highs[p as usize] {
                        done[p as usize] = true;
                    }
                    if inner.handed_one() {
                        let _ = producer.flush();
                        return Err(MirrorError::Crashed);
                    }
                    if self.pending.len() >= config.records_per_checkpoint {
                        self.checkpoint(inner, &consumer)?;
                    }
                }
            }
        }
        self.checkpoint(inner, &consumer)?;
        Ok(copied)
    }

    /// Waits for logbus to append every pending record (with exactly-once,
    /// commits their transaction with the source positions), then commits
    /// the source positions to Kafka, then records the offset syncs.
    fn checkpoint(&mut self, inner: &Inner, consumer: &BaseConsumer) -> Result<(), MirrorError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let result = self.checkpoint_logbus(inner);
        if result.is_err()
            && let Some(txn) = &self.txn
        {
            let _ = txn.abort_transaction();
        }
        let spans = result?;
        let mut tpl = TopicPartitionList::new();
        let mut syncs = Vec::new();
        for ((route, partition), span) in &spans {
            let r = &self.routes[*route];
            if let Some((u, ..)) = span.last {
                tpl.add_partition_offset(&r.source, *partition as i32, kafka_offset(u + 1))
                    .map_err(|e| kafka_error("build offsets", e))?;
                self.next.insert((*route, *partition), u + 1);
            }
            syncs.extend(span.syncs(
                Direction::FromKafka,
                TopicPartition::new(r.source.as_str(), *partition),
                &r.target,
            ));
        }
        consumer
            .commit(&tpl, CommitMode::Sync)
            .map_err(|e| kafka_error("commit offsets", e))?;
        inner.record_syncs(&syncs)?;
        Ok(())
    }

    /// The logbus half of a checkpoint: every pending record appended, and
    /// with exactly-once their transaction committed with the positions.
    fn checkpoint_logbus(
        &mut self,
        inner: &Inner,
    ) -> Result<BTreeMap<(usize, u32), Span>, MirrorError> {
        let mut spans: BTreeMap<(usize, u32), Span> = BTreeMap::new();
        for (route, partition, offset, sent) in self.pending.drain(..) {
            let target = Arc::clone(&self.routes[route].target);
            let metadata = sent.wait().map_err(|e| MirrorError::Delivery {
                topic: target.to_string(),
                reason: e.to_string(),
            })?;
            let landed = metadata.offset().ok_or_else(|| MirrorError::Delivery {
                topic: target.to_string(),
                reason: "appended without an offset".into(),
            })?;
            spans.entry((route, partition)).or_default().add(
                inner.config.offset_lag_max,
                offset,
                i32::try_from(metadata.partition()).unwrap_or(0),
                landed,
            );
        }
        if let Some(txn) = &self.txn {
            let mut offsets = BTreeMap::new();
            for ((route, partition), span) in &spans {
                let r = &self.routes[*route];
                if let Some((u, ..)) = span.last {
                    offsets.insert(
                        TopicPartition::new(&*r.target, *partition),
                        OffsetAndMetadata::new(u + 1).with_metadata(format!("kafka:{}", r.source)),
                    );
                }
            }
            txn.send_offsets_to_transaction(&offsets, inner.config.group())
                .map_err(|e| logbus_error("send offsets to transaction", e))?;
            txn.commit_transaction()
                .map_err(|e| logbus_error("commit transaction", e))?;
        }
        Ok(spans)
    }
}

/// A logbus transactional call's failure: fenced is [`MirrorError::Fenced`].
fn logbus_error(operation: &'static str, e: crate::Error) -> MirrorError {
    match e {
        crate::Error::ProducerFenced { .. } => MirrorError::Fenced {
            operation,
            reason: e.to_string(),
        },
        e => MirrorError::Logbus(e),
    }
}

/// Whether a failed run ends a background mirror (else it is tried again).
fn is_fatal(e: &MirrorError) -> bool {
    matches!(
        e,
        MirrorError::Fenced { .. }
            | MirrorError::Crashed
            | MirrorError::Config(_)
            | MirrorError::Panicked
            | MirrorError::Logbus(crate::Error::Closed(_))
    )
}

/// What a background mirror's thread and its handle share.
#[derive(Debug)]
struct Background {
    stopped: Mutex<bool>,
    wake: Condvar,
    failed_runs: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A mirror running on its thread ([`Mirror::start`]). Dropping it stops
/// the mirror as [`stop`](MirrorHandle::stop) does, ignoring the result.
#[derive(Debug)]
pub struct MirrorHandle {
    shared: Arc<Background>,
    thread: Option<JoinHandle<Result<(), MirrorError>>>,
}

impl MirrorHandle {
    /// Whether the thread has ended (stopped, or a failure that will not
    /// pass).
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// How many runs failed and were tried again.
    #[must_use]
    pub fn failed_runs(&self) -> u64 {
        self.shared.failed_runs.load(Ordering::Relaxed)
    }

    /// The message of the last failed run that was tried again, if any.
    #[must_use]
    pub fn last_error(&self) -> Option<String> {
        self.shared.last_error.lock().clone()
    }

    /// Stops the mirror: the run in progress finishes (and checkpoints),
    /// then the thread ends.
    ///
    /// # Errors
    /// The failure that ended the thread, if one did;
    /// [`MirrorError::Panicked`] if the thread panicked.
    pub fn stop(mut self) -> Result<(), MirrorError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<(), MirrorError> {
        *self.shared.stopped.lock() = true;
        self.shared.wake.notify_all();
        match self.thread.take() {
            None => Ok(()),
            Some(thread) => thread.join().map_err(|_| MirrorError::Panicked)?,
        }
    }
}

impl Drop for MirrorHandle {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}
