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
///
/// Durations are kept in whole milliseconds (rounded down), as Kafka keeps
/// them; sizes are bytes.
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

    /// `buffer.memory` in bytes (default 32 MiB; must be positive).
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

    /// Sets a setting by its Kafka name, with Kafka's value syntax:
    /// `acks` (`0`, `1`, `all` or `-1`), `linger.ms`, `batch.size`,
    /// `compression.type` (`none`, `gzip`, `snappy`, `lz4`, `zstd`),
    /// `buffer.memory`, `max.block.ms`, `max.request.size`, `client.id`.
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
            _ => {
                return Err(Error::InvalidConfig(format!(
                    "unknown producer config {name:?} (supported: acks, batch.size, \
                     buffer.memory, client.id, compression.type, linger.ms, max.block.ms, \
                     max.request.size)"
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
    /// `usize` holds, or a `compression.type` whose cargo feature is off.
    pub fn build(self) -> Result<ProducerConfig> {
        let c = self.config;
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

fn codec_enabled(compression: Compression) -> bool {
    match compression {
        Compression::None => true,
        Compression::Gzip => cfg!(feature = "gzip"),
        Compression::Snappy => cfg!(feature = "snappy"),
        Compression::Lz4 => cfg!(feature = "lz4"),
        Compression::Zstd => cfg!(feature = "zstd"),
    }
}
