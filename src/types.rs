//! Small value types shared by every layer.

use crate::error::FormatError;

/// A topic name and a partition number: Kafka's `TopicPartition`.
///
/// ```
/// use logbus::TopicPartition;
/// let tp = TopicPartition::new("orders", 2);
/// assert_eq!(tp.to_string(), "orders-2");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic's name.
    pub topic: String,
    /// The partition number.
    pub partition: u32,
}

impl TopicPartition {
    /// A topic and partition.
    pub fn new(topic: impl Into<String>, partition: u32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// Which timestamp a record batch carries (attribute bit 3 of a v2 batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TimestampType {
    /// The producer's timestamp is kept (`message.timestamp.type=CreateTime`,
    /// Kafka's default).
    #[default]
    CreateTime,
    /// The log stamps the time of the append (`LogAppendTime`).
    LogAppendTime,
}

/// Compression codec of a record batch (attribute bits 0..=2 of a v2 batch).
///
/// Codecs other than [`Compression::None`] need their cargo feature (`gzip`,
/// `snappy`, `lz4`, `zstd`; all on by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// No compression (id 0).
    #[default]
    None,
    /// gzip (id 1).
    Gzip,
    /// snappy in the xerial framing Kafka's Java client writes (id 2).
    Snappy,
    /// LZ4 frame format (id 3).
    Lz4,
    /// Zstandard (id 4).
    Zstd,
}

impl Compression {
    /// The codec's id in the batch attributes.
    #[must_use]
    pub fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The codec with attribute id `id`.
    ///
    /// # Errors
    /// [`FormatError::UnknownCompression`] for ids above 4.
    pub fn from_id(id: u8) -> Result<Self, FormatError> {
        Ok(match id {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => return Err(FormatError::UnknownCompression(other)),
        })
    }

    /// Kafka's name for the codec (`compression.type`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// What a consumer's fetch may return (Kafka's `isolation.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IsolationLevel {
    /// Everything below the high watermark, records of open and aborted
    /// transactions included (`read_uncommitted`, Kafka's default).
    #[default]
    ReadUncommitted,
    /// Only below the last stable offset, with the aborted transactions
    /// overlapping the fetched records, so the reader can skip them
    /// (`read_committed`).
    ReadCommitted,
}
