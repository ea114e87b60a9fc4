//! [`ConsumerConfig`]: the consumer's settings, with Kafka's names and
//! defaults.

use crate::error::{Error, Result};

/// What a consumer does when it has no valid position for a partition: a
/// newly assigned partition, or a position outside the log (below the log
/// start offset after retention or `delete_records`, or above the high
/// watermark). Kafka's `auto.offset.reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OffsetReset {
    /// Move to the log start offset (`earliest`).
    Earliest,
    /// Move to the high watermark (`latest`, Kafka's default): only records
    /// appended from now on are read.
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
///
/// ```
/// use logbus::{ConsumerConfig, OffsetReset};
/// let config = ConsumerConfig::builder()
///     .max_poll_records(100)
///     .auto_offset_reset(OffsetReset::Earliest)
///     .client_id("audit-reader")
///     .build()?;
/// assert_eq!(config.max_poll_records(), 100);
/// assert_eq!(config.fetch_max_wait_ms(), 500); // Kafka's default
///
/// // Invalid values name the Kafka setting.
/// let err = ConsumerConfig::builder().max_poll_records(0).build().unwrap_err();
/// assert!(err.to_string().contains("max.poll.records"));
/// # Ok::<(), logbus::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    pub(crate) max_poll_records: usize,
    pub(crate) fetch_min_bytes: usize,
    pub(crate) fetch_max_wait_ms: u64,
    pub(crate) max_partition_fetch_bytes: usize,
    pub(crate) fetch_max_bytes: usize,
    pub(crate) auto_offset_reset: OffsetReset,
    pub(crate) check_crcs: bool,
    pub(crate) client_id: Option<String>,
    pub(crate) group_id: Option<String>,
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
        }
    }
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
    pub fn fetch_min_bytes(&self) -> usize {
        self.fetch_min_bytes
    }

    /// `fetch.max.wait.ms`: how long data below `fetch.min.bytes` is held
    /// back at most (default 500).
    #[must_use]
    pub fn fetch_max_wait_ms(&self) -> u64 {
        self.fetch_max_wait_ms
    }

    /// `max.partition.fetch.bytes`: the most bytes one fetch takes from one
    /// partition, except that a single batch larger than this is still
    /// fetched whole (default 1 MiB).
    #[must_use]
    pub fn max_partition_fetch_bytes(&self) -> usize {
        self.max_partition_fetch_bytes
    }

    /// `fetch.max.bytes`: the most bytes the consumer buffers over all its
    /// partitions, except that the first batch is always fetched whole
    /// (default 50 MiB).
    #[must_use]
    pub fn fetch_max_bytes(&self) -> usize {
        self.fetch_max_bytes
    }

    /// `auto.offset.reset` (default [`OffsetReset::Latest`]).
    #[must_use]
    pub fn auto_offset_reset(&self) -> OffsetReset {
        self.auto_offset_reset
    }

    /// `check.crcs`: whether every fetched batch's CRC-32C is verified
    /// (default true).
    #[must_use]
    pub fn check_crcs(&self) -> bool {
        self.check_crcs
    }

    /// The `group.id`, if set.
    #[must_use]
    pub fn group_id(&self) -> Option<&str> {
        self.group_id.as_deref()
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

impl ConsumerConfigBuilder {
    /// `max.poll.records`, at least 1 (default 500).
    pub fn max_poll_records(mut self, records: usize) -> Self {
        self.config.max_poll_records = records;
        self
    }

    /// `fetch.min.bytes` (default 1).
    pub fn fetch_min_bytes(mut self, bytes: usize) -> Self {
        self.config.fetch_min_bytes = bytes;
        self
    }

    /// `fetch.max.wait.ms` (default 500).
    pub fn fetch_max_wait_ms(mut self, ms: u64) -> Self {
        self.config.fetch_max_wait_ms = ms;
        self
    }

    /// `max.partition.fetch.bytes` (default 1048576).
    pub fn max_partition_fetch_bytes(mut self, bytes: usize) -> Self {
        self.config.max_partition_fetch_bytes = bytes;
        self
    }

    /// `fetch.max.bytes` (default 52428800).
    pub fn fetch_max_bytes(mut self, bytes: usize) -> Self {
        self.config.fetch_max_bytes = bytes;
        self
    }

    /// `auto.offset.reset` (default [`OffsetReset::Latest`]).
    pub fn auto_offset_reset(mut self, reset: OffsetReset) -> Self {
        self.config.auto_offset_reset = reset;
        self
    }

    /// `check.crcs` (default true).
    pub fn check_crcs(mut self, check: bool) -> Self {
        self.config.check_crcs = check;
        self
    }

    /// `client.id`: a name for the consumer in logs and errors.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.config.client_id = Some(id.into());
        self
    }

    /// `group.id`: the consumer group whose committed offsets this
    /// consumer reads (a newly assigned partition starts at its group's
    /// committed offset, else by `auto.offset.reset`) and writes
    /// ([`Consumer::commit_sync`](crate::Consumer::commit_sync)). Group
    /// membership (`subscribe`) is not built yet; partitions are assigned
    /// by hand.
    pub fn group_id(mut self, id: impl Into<String>) -> Self {
        self.config.group_id = Some(id.into());
        self
    }

    /// Checks the settings and returns the configuration.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`], naming the setting, for `max.poll.records`
    /// of 0 or any setting above Kafka's limit of `i32::MAX`.
    pub fn build(self) -> Result<ConsumerConfig> {
        let c = &self.config;
        if c.group_id.as_deref() == Some("") {
            return Err(Error::InvalidConfig(
                "group.id must not be empty when set".into(),
            ));
        }
        if c.max_poll_records == 0 {
            return Err(Error::InvalidConfig(
                "max.poll.records must be at least 1".into(),
            ));
        }
        let limits = [
            ("max.poll.records", c.max_poll_records as u64),
            ("fetch.min.bytes", c.fetch_min_bytes as u64),
            ("fetch.max.wait.ms", c.fetch_max_wait_ms),
            (
                "max.partition.fetch.bytes",
                c.max_partition_fetch_bytes as u64,
            ),
            ("fetch.max.bytes", c.fetch_max_bytes as u64),
        ];
        if let Some((name, value)) = limits.iter().find(|(_, v)| *v > KAFKA_INT_MAX) {
            return Err(Error::InvalidConfig(format!(
                "{name} must be at most {KAFKA_INT_MAX}, not {value}"
            )));
        }
        Ok(self.config)
    }
}
