//! [`MirrorBuilder`]: what a [`Mirror`](super::Mirror) copies, and how.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Mirror, MirrorError};
use crate::Cluster;

/// One mirrored topic: a source topic and the target topic it is copied to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRoute {
    /// The topic records are read from.
    pub source: String,
    /// The topic records are written to.
    pub target: String,
}

/// The librdkafka properties a mirror sets itself, which
/// [`MirrorBuilder::kafka_config`] may not: its guarantees rest on them.
pub const RESERVED_KAFKA_CONFIGS: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "transactional.id",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "isolation.level",
    "enable.partition.eof",
    "auto.offset.reset",
];

/// The settings of a [`Mirror`], made by a [`MirrorBuilder`].
#[derive(Debug, Clone)]
pub(crate) struct MirrorConfig {
    pub(crate) name: String,
    pub(crate) bootstrap_servers: String,
    pub(crate) to_kafka: Vec<TopicRoute>,
    pub(crate) from_kafka: Vec<TopicRoute>,
    pub(crate) exactly_once: bool,
    pub(crate) kafka_config: BTreeMap<String, String>,
    pub(crate) timeout: Duration,
    pub(crate) records_per_checkpoint: usize,
    pub(crate) offset_lag_max: u64,
    pub(crate) idle_wait: Duration,
    #[cfg(feature = "internals")]
    pub(crate) crash_after_records: Option<u64>,
}

impl MirrorConfig {
    /// The consumer group that holds the mirror's progress:
    /// `__mirror-<name>`, in logbus (to Kafka) and in Kafka (from Kafka,
    /// and to Kafka with exactly-once).
    pub(crate) fn group(&self) -> String {
        format!("__mirror-{}", self.name)
    }

    /// The producer's `transactional.id` in exactly-once mode.
    pub(crate) fn transactional_id(&self) -> String {
        format!("__mirror-{}", self.name)
    }

    /// The logbus topic of the offset syncs.
    pub(crate) fn syncs_topic(&self) -> String {
        format!("mirror-offset-syncs.{}.internal", self.name)
    }
}

/// Builds a [`Mirror`] (MirrorMaker's settings, in Kafka's words).
///
/// ```no_run
/// use logbus::bridge::Mirror;
/// use logbus::{Cluster, ClusterConfig};
///
/// let cluster = Cluster::open("/var/lib/app/logbus", ClusterConfig::default())?;
/// let mirror = Mirror::builder(&cluster, "to-prod")
///     .bootstrap_servers("kafka-1:9092,kafka-2:9092")
///     .to_kafka("orders") // logbus "orders" → Kafka "orders"
///     .from_kafka_as("prices", "prices-from-prod") // Kafka → logbus
///     .kafka_config("compression.type", "zstd")
///     .build()?;
/// let report = mirror.run_once()?; // what is there now
/// println!("{} records to Kafka", report.records_to_kafka);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[must_use]
pub struct MirrorBuilder {
    cluster: Cluster,
    config: MirrorConfig,
}

impl MirrorBuilder {
    pub(crate) fn new(cluster: &Cluster, name: &str) -> MirrorBuilder {
        MirrorBuilder {
            cluster: cluster.clone(),
            config: MirrorConfig {
                name: name.to_string(),
                bootstrap_servers: String::new(),
                to_kafka: Vec::new(),
                from_kafka: Vec::new(),
                exactly_once: false,
                kafka_config: BTreeMap::new(),
                timeout: Duration::from_secs(30),
                records_per_checkpoint: 10_000,
                offset_lag_max: 100,
                idle_wait: Duration::from_secs(1),
                #[cfg(feature = "internals")]
                crash_after_records: None,
            },
        }
    }

    /// The Kafka cluster's `bootstrap.servers` (`host:port,...`). Required.
    pub fn bootstrap_servers(mut self, servers: impl Into<String>) -> Self {
        self.config.bootstrap_servers = servers.into();
        self
    }

    /// Copies the logbus topic to the Kafka topic of the same name.
    pub fn to_kafka(self, topic: &str) -> Self {
        self.to_kafka_as(topic, topic)
    }

    /// Copies the logbus topic `source` to the Kafka topic `target`.
    pub fn to_kafka_as(mut self, source: &str, target: &str) -> Self {
        self.config.to_kafka.push(TopicRoute {
            source: source.to_string(),
            target: target.to_string(),
        });
        self
    }

    /// Copies the Kafka topic to the logbus topic of the same name.
    pub fn from_kafka(self, topic: &str) -> Self {
        self.from_kafka_as(topic, topic)
    }

    /// Copies the Kafka topic `source` to the logbus topic `target`
    /// (created with the source's partition count if it does not exist).
    pub fn from_kafka_as(mut self, source: &str, target: &str) -> Self {
        self.config.from_kafka.push(TopicRoute {
            source: source.to_string(),
            target: target.to_string(),
        });
        self
    }

    /// Exactly-once (default off: at-least-once), both ways: records go to
    /// Kafka in Kafka transactions of `transactional.id` `__mirror-<name>`,
    /// and to logbus in logbus transactions of `__mirror-<name>-from-kafka`,
    /// each with the source positions it covers
    /// (`send_offsets_to_transaction`), so the target holds the records and
    /// the progress together. See the [module](super)'s guarantees.
    pub fn exactly_once(mut self, enable: bool) -> Self {
        self.config.exactly_once = enable;
        self
    }

    /// Sets a librdkafka property for the Kafka clients the mirror makes
    /// (security, compression, `linger.ms`, …). The properties the mirror
    /// sets itself ([`RESERVED_KAFKA_CONFIGS`]) are refused by
    /// [`build`](MirrorBuilder::build).
    pub fn kafka_config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.kafka_config.insert(key.into(), value.into());
        self
    }

    /// How long a Kafka call (metadata, flush, commit, transaction) may
    /// take, and how long a run may go without progress before it fails
    /// with [`MirrorError::Timeout`]. Default 30 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// How many records are copied between two checkpoints (progress
    /// committed; in exactly-once mode, one Kafka transaction). Default
    /// 10 000. A run also checkpoints at its end.
    pub fn records_per_checkpoint(mut self, records: usize) -> Self {
        self.config.records_per_checkpoint = records;
        self
    }

    /// MirrorMaker 2's `offset.lag.max`: within a checkpoint, an offset
    /// sync is recorded for a partition's first record, then for the next
    /// record at least this many offsets further, and for its last record.
    /// Smaller values translate group offsets more closely (fewer records
    /// seen again after a move) at the cost of more sync records. Default
    /// 100.
    pub fn offset_lag_max(mut self, offsets: u64) -> Self {
        self.config.offset_lag_max = offsets;
        self
    }

    /// How long the background thread of [`Mirror::start`] waits after a
    /// run that copied nothing before it looks again. Default 1 s;
    /// [`MirrorHandle::stop`](super::MirrorHandle::stop) interrupts the
    /// wait.
    pub fn idle_wait(mut self, wait: Duration) -> Self {
        self.config.idle_wait = wait;
        self
    }

    /// Test hook: after this many records were handed to the target in
    /// this mirror's life, the run fails with [`MirrorError::Crashed`]
    /// before its next checkpoint, as a process killed there would, and
    /// the mirror refuses to run again (drop it and build a new one).
    #[cfg(feature = "internals")]
    pub fn crash_after_records(mut self, records: u64) -> Self {
        self.config.crash_after_records = Some(records);
        self
    }

    /// Checks the settings and builds the mirror. Connects to nothing:
    /// the Kafka clients are made at the first run.
    ///
    /// # Errors
    /// [`MirrorError::Config`] for an empty or invalid name (it must be a
    /// valid topic name of at most 200 characters), no
    /// `bootstrap.servers`, no topic, a target named twice, a topic copied
    /// both ways (a loop), a reserved
    /// Kafka property, a zero
    /// `records_per_checkpoint`, `offset_lag_max` or timeout;
    /// [`MirrorError::Logbus`] if the offset-syncs topic cannot be made or
    /// read.
    pub fn build(self) -> Result<Mirror, MirrorError> {
        let c = &self.config;
        let bad = |why: String| Err(MirrorError::Config(why));
        if c.name.is_empty()
            || c.name.len() > 200
            || !c
                .name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-'))
        {
            return bad(format!(
                "mirror name {:?} must be 1 to 200 ASCII letters, digits, '.', '_' or '-'",
                c.name
            ));
        }
        if c.bootstrap_servers.trim().is_empty() {
            return bad("bootstrap.servers is required".into());
        }
        if c.to_kafka.is_empty() && c.from_kafka.is_empty() {
            return bad("no topic to mirror".into());
        }
        for routes in [&c.to_kafka, &c.from_kafka] {
            let mut targets: Vec<&str> = routes.iter().map(|r| r.target.as_str()).collect();
            let mut sources: Vec<&str> = routes.iter().map(|r| r.source.as_str()).collect();
            targets.sort_unstable();
            sources.sort_unstable();
            if let Some(w) = targets.windows(2).find(|w| w[0] == w[1]) {
                return bad(format!("target topic {:?} is named twice", w[0]));
            }
            if let Some(w) = sources.windows(2).find(|w| w[0] == w[1]) {
                return bad(format!("source topic {:?} is named twice", w[0]));
            }
            if let Some(r) = routes
                .iter()
                .find(|r| r.source.is_empty() || r.target.is_empty())
            {
                return bad(format!("empty topic name in {r:?}"));
            }
        }
        // A topic copied both ways would be copied back and forth forever.
        if let Some(r) = c
            .to_kafka
            .iter()
            .find(|out| c.from_kafka.iter().any(|back| back.target == out.source))
        {
            return bad(format!(
                "logbus topic {:?} is both copied to Kafka and filled from Kafka",
                r.source
            ));
        }
        if let Some(r) = c
            .from_kafka
            .iter()
            .find(|back| c.to_kafka.iter().any(|out| out.target == back.source))
        {
            return bad(format!(
                "Kafka topic {:?} is both copied to logbus and filled from logbus",
                r.source
            ));
        }
        if let Some(key) = c
            .kafka_config
            .keys()
            .find(|k| RESERVED_KAFKA_CONFIGS.contains(&k.as_str()))
        {
            return bad(format!("{key} is set by the mirror itself"));
        }
        if c.records_per_checkpoint == 0 {
            return bad("records_per_checkpoint must be at least 1".into());
        }
        if c.offset_lag_max == 0 {
            return bad("offset.lag.max must be at least 1".into());
        }
        if c.timeout.is_zero() {
            return bad("timeout must not be zero".into());
        }
        Mirror::new(self.cluster, self.config)
    }
}
