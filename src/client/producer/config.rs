//! [`ProducerConfig`], its builder, and [`Acks`].

use std::sync::Arc;
use std::time::Duration;

use crate::client::partitioner::Partitioner;
use crate::config::{NamedValue, millis};
use crate::error::{Error, Result};
use crate::types::Compression;

/// When the producer considers a record sent: Kafka's `acks`.
///
/// With one broker `All` behaves as `Leader`; once replication lands, `All`
/// will wait for every in-sync replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Acks {
    /// `acks=0`: fire and forget. A record's handle completes when the
    /// sender thread takes its batch, before the append; its
    /// [`RecordMetadata::offset`](super::RecordMetadata::offset) is `None`
    /// and append errors are not reported.
    None,
    /// `acks=1`: the handle completes after the leader appended the batch.
    Leader,
    /// `acks=all` (Kafka's default since 3.0): the handle completes after
    /// every in-sync replica has the batch. Equal to `Leader` with one broker.
    #[default]
    All,
}

impl Acks {
    /// Kafka's spelling of the setting's value: `"0"`, `"1"` or `"all"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        }
    }
}

/// A [`Producer`](super::Producer)'s settings, under Kafka's names.
///
/// | Kafka setting | builder method | default |
/// |---|---|---|
/// | `acks` | [`acks`](ProducerConfigBuilder::acks) | `all` |
/// | `linger.ms` | [`linger`](ProducerConfigBuilder::linger) | 5 ms |
/// | `batch.size` | [`batch_size`](ProducerConfigBuilder::batch_size) | 16384 |
/// | `compression.type` | [`compression`](ProducerConfigBuilder::compression) | none |
/// | `buffer.memory` | [`buffer_memory`](ProducerConfigBuilder::buffer_memory) | 33554432 (32 MiB) |
/// | `max.block.ms` | [`max_block`](ProducerConfigBuilder::max_block) | 60 s |
/// | `max.request.size` | [`max_request_size`](ProducerConfigBuilder::max_request_size) | 1048576 |
/// | `partitioner.class` | [`partitioner`](ProducerConfigBuilder::partitioner) | built-in (key hash, else sticky) |
/// | `client.id` | [`client_id`](ProducerConfigBuilder::client_id) | `producer-N` |
/// | `enable.idempotence` | [`enable_idempotence`](ProducerConfigBuilder::enable_idempotence) | `true` |
/// | `retries` | [`retries`](ProducerConfigBuilder::retries) | 2147483647 |
/// | `retry.backoff.ms` | [`retry_backoff`](ProducerConfigBuilder::retry_backoff) | 100 ms |
/// | `delivery.timeout.ms` | [`delivery_timeout`](ProducerConfigBuilder::delivery_timeout) | 120 s |
/// | `request.timeout.ms` | [`request_timeout`](ProducerConfigBuilder::request_timeout) | 30 s |
/// | `max.in.flight.requests.per.connection` | [`max_in_flight`](ProducerConfigBuilder::max_in_flight) | 5 |
/// | `transactional.id` | [`transactional_id`](ProducerConfigBuilder::transactional_id) | none |
/// | `transaction.timeout.ms` | [`transaction_timeout`](ProducerConfigBuilder::transaction_timeout) | 60 s |
///
/// Durations are kept in whole milliseconds (rounded down), as Kafka keeps
/// them; sizes are bytes.
///
/// ## Idempotence and retries
/// With `enable.idempotence` (the default, as in Kafka 3.0 and later) the
/// producer takes a producer id from the cluster and numbers its records
/// per partition (Kafka's producer id, epoch and sequence fields of every
/// batch), so the partition stores a retried batch once and answers the
/// retry with the original offsets. [`build`](ProducerConfigBuilder::build)
/// applies Kafka's rules: idempotence needs `acks=all`, `retries` above 0
/// and `max.in.flight.requests.per.connection` at most 5. Asked for
/// explicitly, a conflicting `acks` or `retries=0` is a config error; left
/// at its default, idempotence is turned off by them instead. A
/// `max.in.flight.requests.per.connection` above 5 is an error either way
/// (unless idempotence is explicitly off).
///
/// A batch that fails with a retriable error
/// ([`Error::is_retriable`]: no leader, not enough replicas, a timeout...)
/// is sent again after `retry.backoff.ms`, up to `retries` times, until
/// `delivery.timeout.ms` after its first record was sent; then its records
/// fail. A partition's records are appended and completed in send order:
/// a retried batch goes before the batches after it. Without idempotence a
/// retry may store a batch twice (when the first attempt was written but
/// its acknowledgement was lost) — set `retries` to 0 to fail instead.
///
/// ## Transactions
/// A `transactional.id` makes the producer transactional (see
/// [`Producer::init_transactions`](super::Producer::init_transactions)).
/// It needs idempotence: `enable.idempotence=false`, or an `acks` or
/// `retries=0` that turns the default off, is a config error with it, as
/// in Kafka. `transaction.timeout.ms` is how long the cluster's
/// transaction coordinator lets a transaction stay open before it aborts
/// it and fences the producer; it must not exceed the cluster's
/// `transaction.max.timeout.ms` (checked by `init_transactions`).
///
/// ## Linger and synchronous sends
/// A record waits in its partition's batch for up to `linger.ms` (or until
/// the batch reaches `batch.size`) so that records sent close together are
/// appended together. Waiting on a record's handle does not wait out the
/// linger: [`SendFuture::wait`](super::SendFuture::wait) (and polling it as a
/// `Future`) sends its batch at once, so a send-then-wait loop appends one
/// record at a time without a `linger.ms` pause per record. Linger only
/// delays records nobody waits for yet, which is where batching pays.
///
/// ```
/// use std::time::Duration;
/// use logbus::{Acks, Compression, ProducerConfig};
/// let config = ProducerConfig::builder()
///     .acks(Acks::Leader)
///     .linger(Duration::from_millis(10))
///     .compression(Compression::Lz4)
///     .build()?;
/// assert_eq!(config.batch_size(), 16_384);
/// assert_eq!(config.linger(), Duration::from_millis(10));
/// assert!(ProducerConfig::builder().buffer_memory(0).build().is_err());
/// # Ok::<(), logbus::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    acks: Acks,
    linger_ms: i64,
    batch_size: u64,
    compression: Compression,
    buffer_memory: u64,
    max_block_ms: i64,
    max_request_size: u64,
    partitioner: Option<Arc<dyn Partitioner>>,
    client_id: String,
    /// `enable.idempotence` as set (`None`: left at its default); after
    /// `build`, the effective value.
    idempotence: Option<bool>,
    retries: i32,
    retry_backoff_ms: i64,
    /// `delivery.timeout.ms` as set (`None`: the default).
    delivery_timeout_ms: Option<i64>,
    request_timeout_ms: i64,
    max_in_flight: u32,
    transactional_id: Option<String>,
    transaction_timeout_ms: i64,
    #[cfg(feature = "internals")]
    faults: Option<Arc<dyn super::ProduceFaults>>,
}

impl Default for ProducerConfig {
    /// Kafka 4.0's defaults.
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            linger_ms: 5,
            batch_size: 16_384,
            compression: Compression::None,
            buffer_memory: 32 * 1024 * 1024,
            max_block_ms: 60_000,
            max_request_size: 1_048_576,
            partitioner: None,
            client_id: String::new(),
            idempotence: None,
            retries: i32::MAX,
            retry_backoff_ms: 100,
            delivery_timeout_ms: None,
            request_timeout_ms: 30_000,
            max_in_flight: 5,
            transactional_id: None,
            transaction_timeout_ms: 60_000,
            #[cfg(feature = "internals")]
            faults: None,
        }
    }
}

impl ProducerConfig {
    /// A builder starting from Kafka's defaults.
    pub fn builder() -> ProducerConfigBuilder {
        ProducerConfigBuilder {
            config: ProducerConfig::default(),
        }
    }

    /// `acks`.
    #[must_use]
    pub fn acks(&self) -> Acks {
        self.acks
    }

    /// `linger.ms`: how long a batch that is not full waits for more
    /// records before it is appended (unless someone waits on one of its
    /// records' handles, which sends it at once).
    #[must_use]
    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.linger_ms.unsigned_abs())
    }

    /// `batch.size`: the size in bytes at which a partition's batch is
    /// full and appended without waiting for `linger.ms`. A record larger
    /// than this goes in a batch of its own. 0 disables batching.
    #[must_use]
    pub fn batch_size(&self) -> u64 {
        self.batch_size
    }

    /// `compression.type`: the codec of every batch.
    #[must_use]
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// `buffer.memory`: bytes of records accepted but not yet appended.
    #[must_use]
    pub fn buffer_memory(&self) -> u64 {
        self.buffer_memory
    }

    /// `max.block.ms`: how long `send` waits for room in `buffer.memory`.
    #[must_use]
    pub fn max_block(&self) -> Duration {
        Duration::from_millis(self.max_block_ms.unsigned_abs())
    }

    /// `linger.ms` in milliseconds.
    pub(crate) fn linger_millis(&self) -> i64 {
        self.linger_ms
    }

    /// `max.block.ms` in milliseconds.
    pub(crate) fn max_block_millis(&self) -> i64 {
        self.max_block_ms
    }

    /// `max.request.size`: the largest record accepted, counted as a batch
    /// of its own (header included).
    #[must_use]
    pub fn max_request_size(&self) -> u64 {
        self.max_request_size
    }

    /// The custom partitioner, if one is set.
    #[must_use]
    pub fn partitioner(&self) -> Option<&Arc<dyn Partitioner>> {
        self.partitioner.as_ref()
    }

    /// `client.id` as set; empty means the producer names itself
    /// `producer-N`.
    #[must_use]
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Whether the producer is idempotent: `enable.idempotence` as
    /// [`build`](ProducerConfigBuilder::build) resolved it (true by default,
    /// false when `acks` or `retries` turned the default off).
    #[must_use]
    pub fn enable_idempotence(&self) -> bool {
        self.idempotence.unwrap_or(true)
    }

    /// `retries`: how many times a batch that failed with a retriable
    /// error is sent again.
    #[must_use]
    pub fn retries(&self) -> i32 {
        self.retries
    }

    /// `retry.backoff.ms`: the pause before a batch is sent again.
    #[must_use]
    pub fn retry_backoff(&self) -> Duration {
        Duration::from_millis(self.retry_backoff_ms.unsigned_abs())
    }

    /// `delivery.timeout.ms`: how long after `send` a record's outcome is
    /// known at the latest (its batch's first record counts).
    #[must_use]
    pub fn delivery_timeout(&self) -> Duration {
        Duration::from_millis(self.delivery_timeout_millis().unsigned_abs())
    }

    /// `request.timeout.ms`: how long one attempt waits for its
    /// acknowledgement (with `acks=all`, for the in-sync replicas).
    #[must_use]
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.unsigned_abs())
    }

    /// `max.in.flight.requests.per.connection`: how many batches of one
    /// partition may wait for their acknowledgement at once.
    #[must_use]
    pub fn max_in_flight(&self) -> u32 {
        self.max_in_flight
    }

    /// `transactional.id` (default none: not transactional).
    #[must_use]
    pub fn transactional_id(&self) -> Option<&str> {
        self.transactional_id.as_deref()
    }

    /// `transaction.timeout.ms` (default 60 s).
    #[must_use]
    pub fn transaction_timeout(&self) -> Duration {
        Duration::from_millis(self.transaction_timeout_ms.unsigned_abs())
    }

    pub(crate) fn transaction_timeout_millis(&self) -> i64 {
        self.transaction_timeout_ms
    }

    pub(crate) fn retry_backoff_millis(&self) -> i64 {
        self.retry_backoff_ms
    }

    pub(crate) fn request_timeout_millis(&self) -> i64 {
        self.request_timeout_ms
    }

    /// The default is `linger.ms + request.timeout.ms` when that is more
    /// than 120 s, as Kafka raises it.
    pub(crate) fn delivery_timeout_millis(&self) -> i64 {
        self.delivery_timeout_ms
            .unwrap_or_else(|| 120_000.max(self.linger_ms.saturating_add(self.request_timeout_ms)))
    }

    #[cfg(feature = "internals")]
    pub(crate) fn faults(&self) -> Option<&Arc<dyn super::ProduceFaults>> {
        self.faults.as_ref()
    }
}

/// Builds a validated [`ProducerConfig`]; see there for the settings.
#[derive(Debug, Clone)]
#[must_use]
pub struct ProducerConfigBuilder {
    config: ProducerConfig,
}

impl ProducerConfigBuilder {
    /// `acks` (default [`Acks::All`]).
    pub fn acks(mut self, acks: Acks) -> Self {
        self.config.acks = acks;
        self
    }

    /// `linger.ms` (default 5 ms), kept in whole milliseconds (rounded
    /// down; beyond `i64::MAX` ms it saturates). Waiting on a record's
    /// handle sends its batch without waiting for it.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.config.linger_ms = millis(linger);
        self
    }

    /// `batch.size` in bytes (default 16384; 0 sends every record alone;
    /// at most `i32::MAX`).
    pub fn batch_size(mut self, bytes: u64) -> Self {
        self.config.batch_size = bytes;
        self
    }

    /// `compression.type` (default none). The codec's cargo feature must be on.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.config.compression = compression;
        self
    }

    /// `buffer.memory` in bytes (default 32 MiB; must be positive): the
    /// batch buffers of records not yet finished, counted by capacity.
    /// Beyond it the producer keeps the buffers of finished full batches
    /// for new ones, at most an eighth of it and 1 MiB (Kafka's
    /// `BufferPool` keeps them within it).
    pub fn buffer_memory(mut self, bytes: u64) -> Self {
        self.config.buffer_memory = bytes;
        self
    }

    /// `max.block.ms` (default 60 s; zero makes `send` fail at once when
    /// the buffer is full), kept in whole milliseconds (rounded down;
    /// beyond `i64::MAX` ms it saturates).
    pub fn max_block(mut self, max_block: Duration) -> Self {
        self.config.max_block_ms = millis(max_block);
        self
    }

    /// `max.request.size` in bytes (default 1048576; must be positive).
    pub fn max_request_size(mut self, bytes: u64) -> Self {
        self.config.max_request_size = bytes;
        self
    }

    /// A custom [`Partitioner`], consulted before the built-in choice
    /// (Kafka's `partitioner.class`).
    pub fn partitioner(mut self, partitioner: Arc<dyn Partitioner>) -> Self {
        self.config.partitioner = Some(partitioner);
        self
    }

    /// `client.id` (default: `producer-N`, numbered per process).
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.config.client_id = id.into();
        self
    }

    /// `enable.idempotence` (default true). Setting it (either way) makes
    /// conflicting settings an error rather than turning it off; see
    /// [`ProducerConfig`].
    pub fn enable_idempotence(mut self, enable: bool) -> Self {
        self.config.idempotence = Some(enable);
        self
    }

    /// `retries` (default `i32::MAX`; at least 0). 0 fails a batch at its
    /// first error.
    pub fn retries(mut self, retries: i32) -> Self {
        self.config.retries = retries;
        self
    }

    /// `retry.backoff.ms` (default 100 ms), in whole milliseconds.
    pub fn retry_backoff(mut self, backoff: Duration) -> Self {
        self.config.retry_backoff_ms = millis(backoff);
        self
    }

    /// `delivery.timeout.ms` (default 120 s; at least `linger.ms +
    /// request.timeout.ms`), in whole milliseconds.
    pub fn delivery_timeout(mut self, timeout: Duration) -> Self {
        self.config.delivery_timeout_ms = Some(millis(timeout));
        self
    }

    /// `request.timeout.ms` (default 30 s), in whole milliseconds.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout_ms = millis(timeout);
        self
    }

    /// `max.in.flight.requests.per.connection` (default 5; at least 1; at
    /// most 5 with idempotence).
    pub fn max_in_flight(mut self, batches: u32) -> Self {
        self.config.max_in_flight = batches;
        self
    }

    /// `transactional.id` (default none): makes the producer
    /// transactional; see [`Producer::init_transactions`](super::Producer::init_transactions).
    /// Producers with the same id fence each other: the one that called
    /// `init_transactions` last wins.
    ///
    /// ```
    /// use std::time::Duration;
    /// use logbus::ProducerConfig;
    /// let config = ProducerConfig::builder()
    ///     .transactional_id("orders-etl-0")
    ///     .transaction_timeout(Duration::from_secs(30))
    ///     .build()?;
    /// assert_eq!(config.transactional_id(), Some("orders-etl-0"));
    /// assert!(config.enable_idempotence());
    /// // A transactional producer needs idempotence.
    /// let conflict = ProducerConfig::builder()
    ///     .transactional_id("orders-etl-0")
    ///     .enable_idempotence(false)
    ///     .build();
    /// assert!(conflict.is_err());
    /// # Ok::<(), logbus::Error>(())
    /// ```
    pub fn transactional_id(mut self, id: impl Into<String>) -> Self {
        self.config.transactional_id = Some(id.into());
        self
    }

    /// `transaction.timeout.ms` (default 60 s), in whole milliseconds: how
    /// long a transaction may stay open before the cluster aborts it (and
    /// fences this producer). At most the cluster's
    /// `transaction.max.timeout.ms`, which `init_transactions` checks.
    pub fn transaction_timeout(mut self, timeout: Duration) -> Self {
        self.config.transaction_timeout_ms = millis(timeout);
        self
    }

    /// Injects produce faults (tests only; `internals` feature).
    #[cfg(feature = "internals")]
    pub fn faults(mut self, faults: Arc<dyn super::ProduceFaults>) -> Self {
        self.config.faults = Some(faults);
        self
    }

    /// Sets a setting by its Kafka name, with Kafka's value syntax:
    /// `acks` (`0`, `1`, `all` or `-1`), `linger.ms`, `batch.size`,
    /// `compression.type` (`none`, `gzip`, `snappy`, `lz4`, `zstd`),
    /// `buffer.memory`, `max.block.ms`, `max.request.size`, `client.id`,
    /// `enable.idempotence` (`true`, `false`), `retries`,
    /// `retry.backoff.ms`, `delivery.timeout.ms`, `request.timeout.ms`,
    /// `max.in.flight.requests.per.connection`, `transactional.id`,
    /// `transaction.timeout.ms`.
    /// Surrounding whitespace is ignored. A typed setter and `set` of the
    /// same key store the same value; ranges are checked by
    /// [`build`](Self::build), as for the typed setters.
    /// (`partitioner.class` names a Java class; pass a [`Partitioner`] to
    /// [`partitioner`](Self::partitioner) instead.)
    ///
    /// ```
    /// use std::time::Duration;
    /// use logbus::{Acks, Compression, ProducerConfig};
    /// let config = ProducerConfig::builder()
    ///     .set("acks", "1")?
    ///     .set("linger.ms", "20")?
    ///     .set("compression.type", "lz4")?
    ///     .build()?;
    /// assert_eq!(config.acks(), Acks::Leader);
    /// assert_eq!(config.linger(), Duration::from_millis(20));
    /// assert_eq!(config.compression(), Compression::Lz4);
    /// let err = ProducerConfig::builder().set("linger.ms", "soon").unwrap_err();
    /// assert!(err.to_string().contains("linger.ms"));
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
            "acks" => self.acks(match text {
                "0" => Acks::None,
                "1" => Acks::Leader,
                "all" | "-1" => Acks::All,
                _ => return Err(v.bad("must be 0, 1, all or -1")),
            }),
            "linger.ms" => self.linger(v.millis()?),
            "batch.size" => self.batch_size(v.uint()?),
            "compression.type" => self.compression(match text {
                "none" => Compression::None,
                "gzip" => Compression::Gzip,
                "snappy" => Compression::Snappy,
                "lz4" => Compression::Lz4,
                "zstd" => Compression::Zstd,
                _ => return Err(v.bad("must be none, gzip, snappy, lz4 or zstd")),
            }),
            "buffer.memory" => self.buffer_memory(v.uint()?),
            "max.block.ms" => self.max_block(v.millis()?),
            "max.request.size" => self.max_request_size(v.uint()?),
            "client.id" => self.client_id(text),
            "enable.idempotence" => self.enable_idempotence(v.boolean()?),
            "retries" => self.retries(
                i32::try_from(v.uint()?).map_err(|_| v.bad("must be at most 2147483647"))?,
            ),
            "retry.backoff.ms" => self.retry_backoff(v.millis()?),
            "delivery.timeout.ms" => self.delivery_timeout(v.millis()?),
            "request.timeout.ms" => self.request_timeout(v.millis()?),
            "max.in.flight.requests.per.connection" => self.max_in_flight(
                u32::try_from(v.uint()?).map_err(|_| v.bad("must be at most 4294967295"))?,
            ),
            "transactional.id" => self.transactional_id(text),
            "transaction.timeout.ms" => self.transaction_timeout(v.millis()?),
            _ => {
                return Err(Error::InvalidConfig(format!(
                    "unknown producer config {name:?} (supported: acks, batch.size, \
                     buffer.memory, client.id, compression.type, delivery.timeout.ms, \
                     enable.idempotence, linger.ms, max.block.ms, \
                     max.in.flight.requests.per.connection, max.request.size, \
                     request.timeout.ms, retries, retry.backoff.ms, transaction.timeout.ms, \
                     transactional.id)"
                )));
            }
        })
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the Kafka setting: `buffer.memory` or
    /// `max.request.size` of 0, `batch.size` above `i32::MAX`,
    /// `buffer.memory` or `max.request.size` beyond what this platform's
    /// `usize` holds, a `compression.type` whose cargo feature is off,
    /// negative `retries`, `max.in.flight.requests.per.connection` of 0,
    /// a `delivery.timeout.ms` set below `linger.ms + request.timeout.ms`;
    /// with idempotence, `max.in.flight.requests.per.connection` above 5,
    /// and with `enable.idempotence=true` set explicitly, `acks` other than
    /// `all` or `retries=0` (Kafka's rules; see [`ProducerConfig`]); an
    /// empty `transactional.id`, or one without idempotence;
    /// `transaction.timeout.ms` above `i32::MAX`.
    pub fn build(self) -> Result<ProducerConfig> {
        let mut c = self.config;
        check_retries(&mut c)?;
        check_transactions(&c)?;
        if c.buffer_memory == 0 {
            return Err(Error::InvalidConfig(
                "buffer.memory must be positive".into(),
            ));
        }
        if c.max_request_size == 0 {
            return Err(Error::InvalidConfig(
                "max.request.size must be positive".into(),
            ));
        }
        if c.batch_size > i32::MAX as u64 {
            return Err(Error::InvalidConfig(format!(
                "batch.size must be at most {}, got {}",
                i32::MAX,
                c.batch_size
            )));
        }
        for (name, value) in [
            ("buffer.memory", c.buffer_memory),
            ("max.request.size", c.max_request_size),
        ] {
            if usize::try_from(value).is_err() {
                return Err(Error::InvalidConfig(format!(
                    "{name} must be at most {}, got {value}",
                    usize::MAX
                )));
            }
        }
        if !codec_enabled(c.compression) {
            return Err(Error::InvalidConfig(format!(
                "compression.type={} needs logbus's `{}` cargo feature",
                c.compression.name(),
                c.compression.name()
            )));
        }
        Ok(c)
    }
}

/// Kafka's checks of the retry settings and of idempotence
/// (`ProducerConfig.postProcessAndValidateIdempotenceConfigs` and
/// `KafkaProducer.configureDeliveryTimeout`); resolves `enable.idempotence`.
fn check_retries(c: &mut ProducerConfig) -> Result<()> {
    if c.retries < 0 {
        return Err(Error::InvalidConfig(format!(
            "retries must be at least 0, got {}",
            c.retries
        )));
    }
    if c.max_in_flight == 0 {
        return Err(Error::InvalidConfig(
            "max.in.flight.requests.per.connection must be at least 1".into(),
        ));
    }
    if let Some(delivery) = c.delivery_timeout_ms {
        let least = c.linger_ms.saturating_add(c.request_timeout_ms);
        if delivery < least {
            return Err(Error::InvalidConfig(format!(
                "delivery.timeout.ms should be equal to or larger than linger.ms + \
                 request.timeout.ms ({least}), got {delivery}"
            )));
        }
    }
    let explicit = c.idempotence.is_some();
    if c.idempotence == Some(false) {
        return Ok(());
    }
    let mut enabled = true;
    if c.retries == 0 {
        if explicit {
            return Err(Error::InvalidConfig(
                "must set retries to non-zero when using the idempotent producer \
                 (enable.idempotence=true)"
                    .into(),
            ));
        }
        enabled = false;
    }
    if c.acks != Acks::All {
        if explicit {
            return Err(Error::InvalidConfig(format!(
                "must set acks to all in order to use the idempotent producer \
                 (enable.idempotence=true), got acks={}",
                c.acks.as_str()
            )));
        }
        enabled = false;
    }
    // As in Kafka, checked even when `acks` or `retries` turned the
    // default off.
    if c.max_in_flight > MAX_IN_FLIGHT_IDEMPOTENT {
        return Err(Error::InvalidConfig(format!(
            "to use the idempotent producer, max.in.flight.requests.per.connection must be \
             set to at most {MAX_IN_FLIGHT_IDEMPOTENT}, got {} (or set enable.idempotence=false)",
            c.max_in_flight
        )));
    }
    c.idempotence = Some(enabled);
    Ok(())
}

/// Kafka's rule: a transactional producer is idempotent.
fn check_transactions(c: &ProducerConfig) -> Result<()> {
    let Some(id) = &c.transactional_id else {
        return Ok(());
    };
    if id.is_empty() {
        return Err(Error::InvalidConfig(
            "transactional.id must not be empty".into(),
        ));
    }
    if c.idempotence != Some(true) {
        return Err(Error::InvalidConfig(
            "cannot set a transactional.id without also enabling idempotence \
             (enable.idempotence, acks=all, retries above 0)"
                .into(),
        ));
    }
    if c.transaction_timeout_ms > i64::from(i32::MAX) {
        return Err(Error::InvalidConfig(format!(
            "transaction.timeout.ms must be at most {}, got {}",
            i32::MAX,
            c.transaction_timeout_ms
        )));
    }
    Ok(())
}

/// Kafka's `MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION_FOR_IDEMPOTENCE`: a
/// partition remembers an idempotent producer's last 5 batches.
pub(crate) const MAX_IN_FLIGHT_IDEMPOTENT: u32 = 5;

fn codec_enabled(compression: Compression) -> bool {
    match compression {
        Compression::None => true,
        Compression::Gzip => cfg!(feature = "gzip"),
        Compression::Snappy => cfg!(feature = "snappy"),
        Compression::Lz4 => cfg!(feature = "lz4"),
        Compression::Zstd => cfg!(feature = "zstd"),
    }
}
