//! [`ConsumerConfig`]: the consumer's settings, with Kafka's names and
//! defaults.

use std::sync::Arc;
use std::time::Duration;

use crate::client::assignor::{
    Assignor, CooperativeStickyAssignor, RangeAssignor, assignor_by_name,
};
use crate::config::{NamedValue, millis};
use crate::error::{Error, Result};
use crate::types::IsolationLevel;

/// What a consumer does when it has no valid position for a partition: a
/// newly assigned partition without a committed offset, or a position
/// outside the log (below the log start offset after retention or
/// `delete_records`, or above the high watermark). Kafka's
/// `auto.offset.reset`. An out-of-range position is reset, silently, by the
/// next poll that fetches from the partition, to the offset the policy
/// names at that moment; see
/// [the `Consumer` docs](crate::Consumer#positions-out-of-range-autooffsetreset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OffsetReset {
    /// Move to the log start offset (`earliest`).
    Earliest,
    /// Move to the high watermark (`latest`, Kafka's default; the last
    /// stable offset under read_committed): only records appended from now
    /// on are read.
    #[default]
    Latest,
    /// Fail with [`Error::NoOffsetForPartition`] (`none`).
    None,
}

impl OffsetReset {
    /// Kafka's name of the policy: `earliest`, `latest` or `none`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
            OffsetReset::None => "none",
        }
    }
}

impl std::str::FromStr for OffsetReset {
    type Err = Error;

    /// Parses Kafka's names (`earliest`, `latest`, `none`).
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "earliest" => Ok(OffsetReset::Earliest),
            "latest" => Ok(OffsetReset::Latest),
            "none" => Ok(OffsetReset::None),
            other => Err(Error::InvalidConfig(format!(
                "auto.offset.reset must be earliest, latest or none, not {other:?}"
            ))),
        }
    }
}

/// Settings of a [`Consumer`](crate::Consumer). Build with
/// [`ConsumerConfig::builder`]; every setting has Kafka's name and default.
/// Durations are [`Duration`]s kept to the whole millisecond (rounded
/// down), sizes are `u64` bytes; [`ConsumerConfigBuilder::set`] takes
/// Kafka's names and integer strings (milliseconds, bytes) instead.
///
/// ```
/// use logbus::{ConsumerConfig, OffsetReset};
/// use std::time::Duration;
/// let config = ConsumerConfig::builder()
///     .max_poll_records(100)
///     .auto_offset_reset(OffsetReset::Earliest)
///     .client_id("audit-reader")
///     .fetch_max_wait(Duration::from_millis(100))
///     .build()?;
/// assert_eq!(config.max_poll_records(), 100);
/// assert_eq!(config.fetch_max_wait(), Duration::from_millis(100));
/// assert_eq!(config.session_timeout(), Duration::from_secs(45)); // Kafka's default
///
/// // The same by Kafka's names.
/// let same = ConsumerConfig::builder()
///     .set("max.poll.records", "100")?
///     .set("auto.offset.reset", "earliest")?
///     .set("fetch.max.wait.ms", "100")?
///     .build()?;
/// assert_eq!(same.fetch_max_wait(), config.fetch_max_wait());
///
/// // Invalid values name the Kafka setting.
/// let err = ConsumerConfig::builder().max_poll_records(0).build().unwrap_err();
/// assert!(err.to_string().contains("max.poll.records"));
/// # Ok::<(), logbus::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub(crate) max_poll_records: usize,
    pub(crate) fetch_min_bytes: u64,
    /// Whole milliseconds, as every duration below (see [`millis`]).
    pub(crate) fetch_max_wait_ms: i64,
    pub(crate) max_partition_fetch_bytes: u64,
    pub(crate) fetch_max_bytes: u64,
    pub(crate) auto_offset_reset: OffsetReset,
    pub(crate) check_crcs: bool,
    pub(crate) client_id: Option<String>,
    pub(crate) group_id: Option<String>,
    pub(crate) group_instance_id: Option<String>,
    pub(crate) session_timeout_ms: i64,
    pub(crate) heartbeat_interval_ms: i64,
    pub(crate) max_poll_interval_ms: i64,
    pub(crate) enable_auto_commit: bool,
    pub(crate) auto_commit_interval_ms: i64,
    pub(crate) enable_partition_eof: bool,
    pub(crate) isolation_level: IsolationLevel,
    pub(crate) assignors: Vec<Arc<dyn Assignor>>,
    /// Names given to the builder, resolved by `build`.
    strategy_names: Option<Vec<String>>,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            max_poll_records: 500,
            fetch_min_bytes: 1,
            fetch_max_wait_ms: 500,
            max_partition_fetch_bytes: 1024 * 1024,
            fetch_max_bytes: 50 * 1024 * 1024,
            auto_offset_reset: OffsetReset::Latest,
            check_crcs: true,
            client_id: None,
            group_id: None,
            group_instance_id: None,
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 3_000,
            max_poll_interval_ms: 300_000,
            enable_auto_commit: true,
            auto_commit_interval_ms: 5_000,
            enable_partition_eof: false,
            isolation_level: IsolationLevel::ReadUncommitted,
            assignors: vec![Arc::new(RangeAssignor), Arc::new(CooperativeStickyAssignor)],
            strategy_names: None,
        }
    }
}

/// A stored millisecond count as a [`Duration`] (never negative: setters
/// store [`millis`] of a `Duration` or a parsed non-negative integer).
fn duration(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// A size in bytes as a `usize` for buffer arithmetic (`build` keeps
/// every size within `i32::MAX`).
pub(crate) fn byte_count(bytes: u64) -> usize {
    usize::try_from(bytes).unwrap_or(usize::MAX)
}

impl ConsumerConfig {
    /// A builder starting from Kafka's defaults.
    pub fn builder() -> ConsumerConfigBuilder {
        ConsumerConfigBuilder {
            config: ConsumerConfig::default(),
        }
    }

    /// `max.poll.records`: the most records one [`poll`](crate::Consumer::poll)
    /// returns (default 500).
    #[must_use]
    pub fn max_poll_records(&self) -> usize {
        self.max_poll_records
    }

    /// `fetch.min.bytes`: how many bytes of new record batches a poll waits
    /// for, at most `fetch.max.wait.ms`, before returning them (default 1:
    /// return as soon as anything is there).
    #[must_use]
    pub fn fetch_min_bytes(&self) -> u64 {
        self.fetch_min_bytes
    }

    /// `fetch.max.wait.ms`: how long data below `fetch.min.bytes` is held
    /// back at most (default 500 ms).
    #[must_use]
    pub fn fetch_max_wait(&self) -> Duration {
        duration(self.fetch_max_wait_ms)
    }

    /// `max.partition.fetch.bytes`: the most bytes one fetch takes from one
    /// partition, except that a single batch larger than this is still
    /// fetched whole (default 1 MiB).
    #[must_use]
    pub fn max_partition_fetch_bytes(&self) -> u64 {
        self.max_partition_fetch_bytes
    }

    /// `fetch.max.bytes`: the most bytes the consumer buffers over all its
    /// partitions, except that the first batch is always fetched whole
    /// (default 50 MiB).
    #[must_use]
    pub fn fetch_max_bytes(&self) -> u64 {
        self.fetch_max_bytes
    }

    /// `auto.offset.reset` (default [`OffsetReset::Latest`]).
    #[must_use]
    pub fn auto_offset_reset(&self) -> OffsetReset {
        self.auto_offset_reset
    }

    /// `check.crcs`: whether every fetched batch's CRC-32C is verified
    /// (default true). A batch is verified once per process: one this
    /// process appended (every append validates or builds its batches) or
    /// already checked since it opened the log is not checked again.
    #[must_use]
    pub fn check_crcs(&self) -> bool {
        self.check_crcs
    }

    /// The `group.id`, if set.
    #[must_use]
    pub fn group_id(&self) -> Option<&str> {
        self.group_id.as_deref()
    }

    /// `group.instance.id`, if set: the consumer is a static member of its
    /// group.
    #[must_use]
    pub fn group_instance_id(&self) -> Option<&str> {
        self.group_instance_id.as_deref()
    }

    /// `session.timeout.ms` (default 45 s).
    #[must_use]
    pub fn session_timeout(&self) -> Duration {
        duration(self.session_timeout_ms)
    }

    /// `heartbeat.interval.ms` (default 3 s).
    #[must_use]
    pub fn heartbeat_interval(&self) -> Duration {
        duration(self.heartbeat_interval_ms)
    }

    /// `max.poll.interval.ms` (default 5 minutes).
    #[must_use]
    pub fn max_poll_interval(&self) -> Duration {
        duration(self.max_poll_interval_ms)
    }

    /// `enable.auto.commit` (default true; only used with a `group.id`).
    #[must_use]
    pub fn enable_auto_commit(&self) -> bool {
        self.enable_auto_commit
    }

    /// `auto.commit.interval.ms` (default 5 s).
    #[must_use]
    pub fn auto_commit_interval(&self) -> Duration {
        duration(self.auto_commit_interval_ms)
    }

    /// `enable.partition.eof` (librdkafka's setting; default false): whether
    /// polls report partitions that reached their end, see
    /// [`ConsumerRecords::partition_eofs`](crate::ConsumerRecords::partition_eofs).
    #[must_use]
    pub fn enable_partition_eof(&self) -> bool {
        self.enable_partition_eof
    }

    /// `isolation.level` (default [`IsolationLevel::ReadUncommitted`]):
    /// which records of transactions polls return, and where a partition
    /// ends for this consumer.
    ///
    /// - `read_uncommitted`: every record below the high watermark,
    ///   records of open and aborted transactions included. The end of a
    ///   partition is its high watermark.
    /// - `read_committed`: records outside transactions and records of
    ///   committed transactions, never those of aborted ones, and nothing at
    ///   or above the last stable offset (the first offset of the oldest
    ///   transaction still open, else the high watermark), so a poll waits
    ///   there until that transaction ends. The end of a partition is its
    ///   last stable offset: [`Consumer::end_offsets`](crate::Consumer::end_offsets),
    ///   `auto.offset.reset = latest`,
    ///   [`seek_to_end`](crate::Consumer::seek_to_end) and
    ///   `enable.partition.eof` use it.
    ///
    /// Under both, transaction markers (control records) are never
    /// returned; positions move past them.
    #[must_use]
    pub fn isolation_level(&self) -> IsolationLevel {
        self.isolation_level
    }

    /// `partition.assignment.strategy`: the assignors the consumer offers
    /// its group, preferred first (default `range`, `cooperative-sticky`,
    /// as Kafka 3).
    #[must_use]
    pub fn assignors(&self) -> &[Arc<dyn Assignor>] {
        &self.assignors
    }

    /// `client.id`, if set; the consumer makes one up otherwise (see
    /// [`Consumer::client_id`](crate::Consumer::client_id)).
    #[must_use]
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }
}

/// Builds a [`ConsumerConfig`]; from [`ConsumerConfig::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ConsumerConfigBuilder {
    config: ConsumerConfig,
}

/// Kafka declares these settings as Java `int`s.
const KAFKA_INT_MAX: u64 = i32::MAX as u64;

/// The longest `group.id` or `group.instance.id`: Kafka's strings carry
/// an `i16` length, in the protocol and in `__consumer_offsets` keys.
const MAX_ID_BYTES: usize = i16::MAX as usize;

/// The names [`ConsumerConfigBuilder::set`] accepts.
const SETTINGS: [&str; 18] = [
    "auto.commit.interval.ms",
    "auto.offset.reset",
    "check.crcs",
    "client.id",
    "enable.auto.commit",
    "enable.partition.eof",
    "fetch.max.bytes",
    "fetch.max.wait.ms",
    "fetch.min.bytes",
    "group.id",
    "group.instance.id",
    "heartbeat.interval.ms",
    "isolation.level",
    "max.partition.fetch.bytes",
    "max.poll.interval.ms",
    "max.poll.records",
    "partition.assignment.strategy",
    "session.timeout.ms",
];

impl ConsumerConfigBuilder {
    /// `max.poll.records`, at least 1 (default 500).
    pub fn max_poll_records(mut self, records: usize) -> Self {
        self.config.max_poll_records = records;
        self
    }

    /// `fetch.min.bytes` (default 1).
    pub fn fetch_min_bytes(mut self, bytes: u64) -> Self {
        self.config.fetch_min_bytes = bytes;
        self
    }

    /// `fetch.max.wait.ms` (default 500 ms).
    pub fn fetch_max_wait(mut self, wait: Duration) -> Self {
        self.config.fetch_max_wait_ms = millis(wait);
        self
    }

    /// `max.partition.fetch.bytes` (default 1048576).
    pub fn max_partition_fetch_bytes(mut self, bytes: u64) -> Self {
        self.config.max_partition_fetch_bytes = bytes;
        self
    }

    /// `fetch.max.bytes` (default 52428800).
    pub fn fetch_max_bytes(mut self, bytes: u64) -> Self {
        self.config.fetch_max_bytes = bytes;
        self
    }

    /// `auto.offset.reset` (default [`OffsetReset::Latest`]).
    pub fn auto_offset_reset(mut self, reset: OffsetReset) -> Self {
        self.config.auto_offset_reset = reset;
        self
    }

    /// `check.crcs` (default true): verify each fetched batch's CRC-32C,
    /// once per process (see [`ConsumerConfig::check_crcs`]).
    pub fn check_crcs(mut self, check: bool) -> Self {
        self.config.check_crcs = check;
        self
    }

    /// `client.id`: a name for the consumer in logs and errors.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.config.client_id = Some(id.into());
        self
    }

    /// `group.id`: the consumer group this consumer belongs to. It is
    /// needed for [`subscribe`](crate::Consumer::subscribe) (the group's
    /// members share the partitions) and for committed offsets: a newly
    /// assigned partition starts at its group's committed offset, else by
    /// `auto.offset.reset`.
    pub fn group_id(mut self, id: impl Into<String>) -> Self {
        self.config.group_id = Some(id.into());
        self
    }

    /// `group.instance.id`: makes the consumer a static member (KIP-345).
    /// A static member that restarts with the same id within
    /// `session.timeout.ms` gets its partitions back without a rebalance;
    /// it does not leave the group on close, so its partitions wait for it
    /// until the session times out.
    pub fn group_instance_id(mut self, id: impl Into<String>) -> Self {
        self.config.group_instance_id = Some(id.into());
        self
    }

    /// `session.timeout.ms` (default 45 s): a member whose heartbeats
    /// stop for this long is removed from its group and its partitions are
    /// reassigned. Must lie within the cluster's
    /// `group.min/max.session.timeout.ms`.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.config.session_timeout_ms = millis(timeout);
        self
    }

    /// `heartbeat.interval.ms` (default 3 s): how often the consumer's
    /// background thread heartbeats; below `session.timeout.ms`.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.config.heartbeat_interval_ms = millis(interval);
        self
    }

    /// `max.poll.interval.ms` (default 5 minutes): a consumer that does not
    /// call `poll` for this long leaves its group (its heartbeat thread
    /// sends the leave), and the group waits this long at most for members
    /// to rejoin during a rebalance.
    pub fn max_poll_interval(mut self, interval: Duration) -> Self {
        self.config.max_poll_interval_ms = millis(interval);
        self
    }

    /// `enable.auto.commit` (default true): with a `group.id`, `poll`
    /// commits the positions of the records earlier polls returned every
    /// `auto.commit.interval.ms`, and before a rebalance takes partitions
    /// away, and at [`close`](crate::Consumer::close).
    pub fn enable_auto_commit(mut self, enable: bool) -> Self {
        self.config.enable_auto_commit = enable;
        self
    }

    /// `auto.commit.interval.ms` (default 5 s).
    pub fn auto_commit_interval(mut self, interval: Duration) -> Self {
        self.config.auto_commit_interval_ms = millis(interval);
        self
    }

    /// `enable.partition.eof` (librdkafka's setting; default false): polls
    /// report each assigned partition whose position reaches its end, once
    /// each time it does, in
    /// [`ConsumerRecords::partition_eofs`](crate::ConsumerRecords::partition_eofs).
    pub fn enable_partition_eof(mut self, enable: bool) -> Self {
        self.config.enable_partition_eof = enable;
        self
    }

    /// `isolation.level` (default [`IsolationLevel::ReadUncommitted`]):
    /// with [`IsolationLevel::ReadCommitted`] polls return only records
    /// outside transactions and of committed transactions, up to the last
    /// stable offset; see [`ConsumerConfig::isolation_level`].
    pub fn isolation_level(mut self, level: IsolationLevel) -> Self {
        self.config.isolation_level = level;
        self
    }

    /// `partition.assignment.strategy` by name, preferred first: `range`,
    /// `roundrobin`, `sticky`, `cooperative-sticky` or Kafka's class
    /// names (see [`assignor_by_name`]). Checked by
    /// [`build`](Self::build). Replaces assignors set by
    /// [`assignors`](Self::assignors).
    pub fn partition_assignment_strategy<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.strategy_names = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// The assignors the consumer offers, preferred first, including
    /// custom [`Assignor`]s. Replaces a list given by name.
    pub fn assignors(mut self, assignors: Vec<Arc<dyn Assignor>>) -> Self {
        self.config.assignors = assignors;
        self.config.strategy_names = None;
        self
    }

    /// Sets a setting by its Kafka name, with Kafka's value syntax:
    /// durations (`*.ms`) as whole milliseconds and sizes (`*.bytes`) as
    /// bytes, both non-negative integers; `true` / `false`;
    /// `auto.offset.reset` as `earliest`, `latest` or `none`;
    /// `isolation.level` as `read_uncommitted` or `read_committed`;
    /// `partition.assignment.strategy` as a comma-separated list of names.
    /// Surrounding whitespace is ignored. A typed setter and `set` of the
    /// same key store the same value; ranges are checked by
    /// [`build`](Self::build), as for the typed setters.
    ///
    /// ```
    /// use logbus::ConsumerConfig;
    /// use std::time::Duration;
    /// let config = ConsumerConfig::builder()
    ///     .set("enable.partition.eof", "true")?
    ///     .set("session.timeout.ms", "10000")?
    ///     .build()?;
    /// assert!(config.enable_partition_eof());
    /// assert_eq!(config.session_timeout(), Duration::from_secs(10));
    /// let err = ConsumerConfig::builder().set("fetch.max.wait.ms", "soon").unwrap_err();
    /// assert!(err.to_string().contains("fetch.max.wait.ms"));
    /// # Ok::<(), logbus::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the setting, for an unknown name or
    /// a value that does not parse; `self` is not returned then.
    pub fn set(self, name: &str, value: impl Into<String>) -> Result<Self> {
        let raw = value.into();
        let v = NamedValue::new(name, &raw);
        let text = v.text();
        Ok(match name {
            "max.poll.records" => {
                let records = text
                    .parse::<usize>()
                    .map_err(|_| v.bad("must be a non-negative integer"))?;
                self.max_poll_records(records)
            }
            "fetch.min.bytes" => self.fetch_min_bytes(v.uint()?),
            "fetch.max.wait.ms" => self.fetch_max_wait(v.millis()?),
            "max.partition.fetch.bytes" => self.max_partition_fetch_bytes(v.uint()?),
            "fetch.max.bytes" => self.fetch_max_bytes(v.uint()?),
            "auto.offset.reset" => self.auto_offset_reset(text.parse()?),
            "check.crcs" => self.check_crcs(v.boolean()?),
            "client.id" => self.client_id(text),
            "group.id" => self.group_id(text),
            "group.instance.id" => self.group_instance_id(text),
            "session.timeout.ms" => self.session_timeout(v.millis()?),
            "heartbeat.interval.ms" => self.heartbeat_interval(v.millis()?),
            "max.poll.interval.ms" => self.max_poll_interval(v.millis()?),
            "enable.auto.commit" => self.enable_auto_commit(v.boolean()?),
            "auto.commit.interval.ms" => self.auto_commit_interval(v.millis()?),
            "enable.partition.eof" => self.enable_partition_eof(v.boolean()?),
            "isolation.level" => self.isolation_level(match text {
                "read_uncommitted" => IsolationLevel::ReadUncommitted,
                "read_committed" => IsolationLevel::ReadCommitted,
                _ => return Err(v.bad("must be read_uncommitted or read_committed")),
            }),
            "partition.assignment.strategy" => {
                self.partition_assignment_strategy(text.split(',').map(str::trim))
            }
            _ => {
                return Err(Error::InvalidConfig(format!(
                    "unknown consumer config {name:?} (supported: {})",
                    SETTINGS.join(", ")
                )));
            }
        })
    }

    /// Checks the settings and returns the configuration.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`], naming the setting, for `max.poll.records`
    /// of 0, a `heartbeat.interval.ms` not below `session.timeout.ms`, an
    /// unknown or empty `partition.assignment.strategy`, empty ids, ids
    /// longer than 32767 bytes (what Kafka's commit records can hold), or
    /// any setting above Kafka's limit of `i32::MAX` (milliseconds or
    /// bytes).
    pub fn build(mut self) -> Result<ConsumerConfig> {
        if let Some(names) = self.config.strategy_names.take() {
            self.config.assignors = names
                .iter()
                .map(|name| {
                    assignor_by_name(name).ok_or_else(|| {
                        Error::InvalidConfig(format!(
                            "partition.assignment.strategy: unknown assignor {name:?}"
                        ))
                    })
                })
                .collect::<Result<_>>()?;
        }
        let c = &self.config;
        if c.assignors.is_empty() {
            return Err(Error::InvalidConfig(
                "partition.assignment.strategy must name at least one assignor".into(),
            ));
        }
        if c.group_instance_id.as_deref() == Some("") {
            return Err(Error::InvalidConfig(
                "group.instance.id must not be empty when set".into(),
            ));
        }
        if c.heartbeat_interval_ms == 0 || c.heartbeat_interval_ms >= c.session_timeout_ms {
            return Err(Error::InvalidConfig(format!(
                "heartbeat.interval.ms ({}) must be at least 1 and below session.timeout.ms ({})",
                c.heartbeat_interval_ms, c.session_timeout_ms
            )));
        }
        if c.max_poll_interval_ms == 0 || c.auto_commit_interval_ms == 0 {
            return Err(Error::InvalidConfig(
                "max.poll.interval.ms and auto.commit.interval.ms must be at least 1".into(),
            ));
        }
        if c.group_id.as_deref() == Some("") {
            return Err(Error::InvalidConfig(
                "group.id must not be empty when set".into(),
            ));
        }
        for (name, id) in [
            ("group.id", &c.group_id),
            ("group.instance.id", &c.group_instance_id),
        ] {
            if let Some(len) = id.as_ref().map(String::len).filter(|&l| l > MAX_ID_BYTES) {
                return Err(Error::InvalidConfig(format!(
                    "{name} is {len} bytes long; at most {MAX_ID_BYTES} fit Kafka's records"
                )));
            }
        }
        if c.max_poll_records == 0 {
            return Err(Error::InvalidConfig(
                "max.poll.records must be at least 1".into(),
            ));
        }
        // Stored milliseconds are never negative.
        let ms = |v: i64| u64::try_from(v).unwrap_or(0);
        let limits = [
            ("max.poll.records", c.max_poll_records as u64),
            ("fetch.min.bytes", c.fetch_min_bytes),
            ("fetch.max.wait.ms", ms(c.fetch_max_wait_ms)),
            ("max.partition.fetch.bytes", c.max_partition_fetch_bytes),
            ("fetch.max.bytes", c.fetch_max_bytes),
            ("session.timeout.ms", ms(c.session_timeout_ms)),
            ("heartbeat.interval.ms", ms(c.heartbeat_interval_ms)),
            ("max.poll.interval.ms", ms(c.max_poll_interval_ms)),
            ("auto.commit.interval.ms", ms(c.auto_commit_interval_ms)),
        ];
        if let Some((name, value)) = limits.iter().find(|(_, v)| *v > KAFKA_INT_MAX) {
            return Err(Error::InvalidConfig(format!(
                "{name} must be at most {KAFKA_INT_MAX}, not {value}"
            )));
        }
        Ok(self.config)
    }
}
