//! What a poll returns: [`ConsumerRecord`] and [`ConsumerRecords`]; and
//! [`OffsetAndTimestamp`] from `offsets_for_times`.

use std::sync::Arc;

use bytes::Bytes;

use crate::format::Header;
use crate::types::{TimestampType, TopicPartition};

/// What the records of one batch share: the topic, partition, timestamp
/// type and the bytes their keys and values lie in. Built once per batch.
#[derive(Debug)]
pub(crate) struct BatchData {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: u32,
    pub(crate) timestamp_type: TimestampType,
    pub(crate) bytes: Bytes,
}

/// Where a key or value lies in its batch's bytes; `len == u32::MAX` is
/// Kafka's null. (A batch is at most 2 GiB and decompressed records at most
/// [`MAX_DECOMPRESSED_SIZE`](crate::format::MAX_DECOMPRESSED_SIZE), so
/// offsets fit in 32 bits.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    start: u32,
    len: u32,
}

impl Span {
    pub(crate) const NULL: Span = Span {
        start: 0,
        len: u32::MAX,
    };

    /// The span of `range` (`None` for null).
    #[inline]
    pub(crate) fn of(range: Option<std::ops::Range<usize>>) -> Span {
        match range {
            // Both ends are below 2^31 (see above).
            Some(r) => Span {
                start: r.start as u32,
                len: (r.end - r.start) as u32,
            },
            None => Span::NULL,
        }
    }

    #[inline]
    fn range(self) -> Option<std::ops::Range<usize>> {
        (self.len != u32::MAX).then(|| {
            let start = self.start as usize;
            start..start + self.len as usize
        })
    }
}

/// One record returned by [`Consumer::poll`](crate::Consumer::poll): Kafka's
/// `ConsumerRecord`.
///
/// The records of one batch share one handle to the batch: its topic,
/// partition and bytes. Keys and values are views of those bytes: for an
/// uncompressed batch, of the segment's memory map (no copy); for a
/// compressed one, of a buffer holding the batch's decompressed keys and
/// values. [`ConsumerRecord::key`] and [`ConsumerRecord::value`] borrow
/// them; [`ConsumerRecord::key_bytes`] and [`ConsumerRecord::value_bytes`]
/// return [`Bytes`] that share that memory. Holding a record (or such
/// `Bytes`) keeps the memory alive; copy out what you keep for long
/// (`value.to_vec()`).
#[derive(Clone)]
pub struct ConsumerRecord {
    pub(crate) batch: Arc<BatchData>,
    pub(crate) offset: u64,
    pub(crate) timestamp: i64,
    pub(crate) key: Span,
    pub(crate) value: Span,
    pub(crate) headers: Box<[Header]>,
}

impl ConsumerRecord {
    /// The topic's name (one string shared by every record of the topic).
    #[must_use]
    pub fn topic(&self) -> &str {
        &self.batch.topic
    }

    /// The partition number.
    #[must_use]
    pub fn partition(&self) -> u32 {
        self.batch.partition
    }

    /// The record's offset in its partition.
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The record's timestamp in milliseconds since the Unix epoch: the
    /// producer's (`CreateTime`) or the log's (`LogAppendTime`), see
    /// [`ConsumerRecord::timestamp_type`].
    #[must_use]
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// Which timestamp [`ConsumerRecord::timestamp`] is, as stored in the
    /// record's batch.
    #[must_use]
    pub fn timestamp_type(&self) -> TimestampType {
        self.batch.timestamp_type
    }

    /// The key; `None` for a null key.
    #[must_use]
    #[inline]
    pub fn key(&self) -> Option<&[u8]> {
        self.key.range().map(|r| &self.batch.bytes[r])
    }

    /// The value; `None` for a null value (a tombstone).
    #[must_use]
    #[inline]
    pub fn value(&self) -> Option<&[u8]> {
        self.value.range().map(|r| &self.batch.bytes[r])
    }

    /// The key as [`Bytes`] sharing the batch's memory (no copy, as for
    /// [`value_bytes`](Self::value_bytes)), for keeping it beyond the
    /// record; `None` for a null key.
    #[must_use]
    pub fn key_bytes(&self) -> Option<Bytes> {
        self.key.range().map(|r| self.batch.bytes.slice(r))
    }

    /// The value as [`Bytes`] sharing the batch's memory (no copy: the
    /// mapped segment for an uncompressed batch, the batch's one
    /// decompressed buffer otherwise), for keeping it beyond the record;
    /// `None` for a null value.
    #[must_use]
    pub fn value_bytes(&self) -> Option<Bytes> {
        self.value.range().map(|r| self.batch.bytes.slice(r))
    }

    /// The headers, in the order the producer wrote them.
    #[must_use]
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// The topic and partition the record came from.
    #[must_use]
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(&*self.batch.topic, self.batch.partition)
    }

    /// Splits the record into key, value (as [`ConsumerRecord::key_bytes`]
    /// and [`ConsumerRecord::value_bytes`]) and headers.
    #[must_use]
    pub fn into_parts(self) -> (Option<Bytes>, Option<Bytes>, Vec<Header>) {
        (
            self.key_bytes(),
            self.value_bytes(),
            self.headers.into_vec(),
        )
    }
}

impl std::fmt::Debug for ConsumerRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerRecord")
            .field("topic", &self.topic())
            .field("partition", &self.partition())
            .field("offset", &self.offset)
            .field("timestamp", &self.timestamp)
            .field("timestamp_type", &self.timestamp_type())
            .field("key", &self.key().map(Bytes::copy_from_slice))
            .field("value", &self.value().map(Bytes::copy_from_slice))
            .field("headers", &self.headers)
            .finish()
    }
}

impl PartialEq for ConsumerRecord {
    fn eq(&self, other: &Self) -> bool {
        self.offset == other.offset
            && self.timestamp == other.timestamp
            && self.partition() == other.partition()
            && self.timestamp_type() == other.timestamp_type()
            && self.topic() == other.topic()
            && self.key() == other.key()
            && self.value() == other.value()
            && self.headers == other.headers
    }
}

impl Eq for ConsumerRecord {}

/// The records one [`Consumer::poll`](crate::Consumer::poll) returned,
/// grouped by partition, each partition's in offset order: Kafka's
/// `ConsumerRecords`.
///
/// ```
/// # use logbus::ConsumerRecords;
/// fn print(records: &ConsumerRecords) {
///     for tp in records.partitions() {
///         for record in records.records(tp) {
///             println!("{tp} @{}: {:?}", record.offset(), record.value());
///         }
///     }
///     // Or all of them, partition by partition.
///     let total = records.iter().count();
///     assert_eq!(total, records.count());
/// }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerRecords {
    parts: Vec<(TopicPartition, Vec<ConsumerRecord>)>,
    count: usize,
    /// Partitions that reached their end (`enable.partition.eof`).
    eofs: Vec<(TopicPartition, u64)>,
}

impl ConsumerRecords {
    pub(crate) fn new(parts: Vec<(TopicPartition, Vec<ConsumerRecord>)>) -> Self {
        let count = parts.iter().map(|(_, r)| r.len()).sum();
        ConsumerRecords {
            parts,
            count,
            eofs: Vec::new(),
        }
    }

    /// These records with the end-of-partition signals of the same poll.
    pub(crate) fn with_eofs(mut self, eofs: Vec<(TopicPartition, u64)>) -> Self {
        self.eofs = eofs;
        self
    }

    /// The number of records.
    #[must_use]
    pub fn count(&self) -> usize {
        self.count
    }

    /// Whether there are no records. End-of-partition signals are not
    /// records: a poll that returns only
    /// [`partition_eofs`](Self::partition_eofs) is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The assigned partitions whose position reached the partition's end
    /// (its high watermark: the offset after the last record; under
    /// read_committed its last stable offset, as librdkafka does) in this
    /// poll, with that offset, in assignment order: librdkafka's
    /// `RD_KAFKA_RESP_ERR__PARTITION_EOF` events. Only with
    /// [`enable_partition_eof`](crate::ConsumerConfigBuilder::enable_partition_eof);
    /// always empty otherwise.
    ///
    /// A partition is reported once each time it reaches its end: when
    /// the records of this poll (or earlier ones) brought its position to
    /// the end, or when it is at its end right after being assigned or
    /// [`seek`](crate::Consumer::seek)ed (an empty partition, say). It is
    /// reported again only after its position moved (new records were
    /// returned, or a seek) and reached the end again. Paused partitions
    /// are not reported until resumed. A poll with nothing but such
    /// signals to return returns them at once rather than waiting out its
    /// timeout. The records of a reported partition in this poll, if any,
    /// come before its end: after handling them the consumer has read
    /// everything the partition held when the poll looked.
    ///
    /// ```
    /// use logbus::{Cluster, ClusterConfig, Consumer, ConsumerConfig, NewTopic};
    /// use logbus::{OffsetReset, Producer, ProducerConfig, ProducerRecord, TopicPartition};
    /// use std::collections::BTreeMap;
    /// use std::time::Duration;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    /// cluster.create_topic(NewTopic::new("accounts", 2))?;
    /// let producer = Producer::new(&cluster, ProducerConfig::default())?;
    /// for (key, value) in [("alice", "10"), ("bob", "20"), ("alice", "15")] {
    ///     producer.send(ProducerRecord::new("accounts", value).with_key(key))?;
    /// }
    /// producer.flush()?;
    ///
    /// // Rebuild the state at start-up: read until every partition is at its end.
    /// let config = ConsumerConfig::builder()
    ///     .auto_offset_reset(OffsetReset::Earliest)
    ///     .enable_partition_eof(true)
    ///     .build()?;
    /// let mut consumer = Consumer::new(&cluster, config)?;
    /// let partitions = [TopicPartition::new("accounts", 0), TopicPartition::new("accounts", 1)];
    /// consumer.assign(&partitions)?;
    /// let mut balances = BTreeMap::new();
    /// let mut at_end = BTreeMap::new();
    /// while at_end.len() < partitions.len() {
    ///     let records = consumer.poll(Duration::from_secs(60))?;
    ///     for record in &records {
    ///         let key = String::from_utf8(record.key().unwrap_or_default().to_vec())?;
    ///         let value = String::from_utf8(record.value().unwrap_or_default().to_vec())?;
    ///         balances.insert(key, value);
    ///     }
    ///     for (tp, offset) in records.partition_eofs() {
    ///         at_end.insert(tp.clone(), *offset);
    ///     }
    /// }
    /// assert_eq!(balances["alice"], "15");
    /// assert_eq!(balances["bob"], "20");
    /// assert_eq!(at_end.values().sum::<u64>(), 3); // every record read
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn partition_eofs(&self) -> &[(TopicPartition, u64)] {
        &self.eofs
    }

    /// Every record, partition by partition.
    pub fn iter(&self) -> RecordsIter<'_> {
        RecordsIter {
            parts: self.parts.iter(),
            current: [].iter(),
        }
    }

    /// The records of one partition, in offset order (empty if it has none).
    #[must_use]
    pub fn records(&self, partition: &TopicPartition) -> &[ConsumerRecord] {
        self.parts
            .iter()
            .find(|(tp, _)| tp == partition)
            .map_or(&[], |(_, records)| records.as_slice())
    }

    /// The partitions that have records here.
    pub fn partitions(&self) -> impl ExactSizeIterator<Item = &TopicPartition> + '_ {
        self.parts.iter().map(|(tp, _)| tp)
    }
}

/// Iterator over `&ConsumerRecord`, from [`ConsumerRecords::iter`].
#[derive(Debug, Clone)]
pub struct RecordsIter<'a> {
    parts: std::slice::Iter<'a, (TopicPartition, Vec<ConsumerRecord>)>,
    current: std::slice::Iter<'a, ConsumerRecord>,
}

impl<'a> Iterator for RecordsIter<'a> {
    type Item = &'a ConsumerRecord;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(record) = self.current.next() {
                return Some(record);
            }
            self.current = self.parts.next()?.1.iter();
        }
    }
}

impl std::iter::FusedIterator for RecordsIter<'_> {}

/// Owning iterator over the records, from `ConsumerRecords::into_iter`.
#[derive(Debug)]
pub struct RecordsIntoIter {
    parts: std::vec::IntoIter<(TopicPartition, Vec<ConsumerRecord>)>,
    current: std::vec::IntoIter<ConsumerRecord>,
}

impl Iterator for RecordsIntoIter {
    type Item = ConsumerRecord;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(record) = self.current.next() {
                return Some(record);
            }
            self.current = self.parts.next()?.1.into_iter();
        }
    }
}

impl std::iter::FusedIterator for RecordsIntoIter {}

impl IntoIterator for ConsumerRecords {
    type Item = ConsumerRecord;
    type IntoIter = RecordsIntoIter;

    fn into_iter(self) -> RecordsIntoIter {
        RecordsIntoIter {
            parts: self.parts.into_iter(),
            current: Vec::new().into_iter(),
        }
    }
}

impl<'a> IntoIterator for &'a ConsumerRecords {
    type Item = &'a ConsumerRecord;
    type IntoIter = RecordsIter<'a>;

    fn into_iter(self) -> RecordsIter<'a> {
        self.iter()
    }
}

/// A record found by
/// [`Consumer::offsets_for_times`](crate::Consumer::offsets_for_times):
/// Kafka's `OffsetAndTimestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OffsetAndTimestamp {
    pub(crate) offset: u64,
    pub(crate) timestamp: i64,
}

impl OffsetAndTimestamp {
    /// The offset of the first record whose timestamp is at or after the
    /// time asked for.
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// That record's timestamp.
    #[must_use]
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }
}
