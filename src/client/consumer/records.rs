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

    /// The span of `len` bytes at `start`; `len` below `u32::MAX`.
    #[inline]
    pub(crate) const fn new(start: u32, len: u32) -> Span {
        Span { start, len }
    }

    #[inline]
    pub(crate) fn range(self) -> Option<std::ops::Range<usize>> {
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

/// One record's place in a poll's result: what a [`ConsumerRecord`] holds,
/// with its batch named by index into its partition's batch list instead of
/// by a reference count. 40 bytes, written once per record by the fetch
/// cursor; nothing is counted, allocated or dropped per record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub(crate) offset: u64,
    pub(crate) timestamp: i64,
    pub(crate) key: Span,
    pub(crate) value: Span,
    /// Index into [`PartitionBuf::batches`].
    pub(crate) batch: u32,
    /// Index into [`PartitionBuf::headers`]; [`Entry::NO_HEADERS`] if none.
    pub(crate) headers: u32,
}

impl Entry {
    /// [`Entry::headers`] of a record without headers.
    pub(crate) const NO_HEADERS: u32 = u32::MAX;
}

/// One partition's records of a poll: the batches they lie in (one
/// reference each), the records, and the headers of those that have some.
#[derive(Debug, Clone, Default)]
pub(crate) struct PartitionBuf {
    batches: Vec<Arc<BatchData>>,
    entries: Vec<Entry>,
    headers: Vec<Box<[Header]>>,
}

impl PartitionBuf {
    /// An empty buffer with room for `records` records.
    pub(crate) fn with_capacity(records: usize) -> Self {
        PartitionBuf {
            batches: Vec::new(),
            entries: Vec::with_capacity(records),
            headers: Vec::new(),
        }
    }

    /// The number of records.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds no records.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds the batch the next records lie in; returns its index for
    /// [`Entry::batch`].
    #[inline]
    pub(crate) fn push_batch(&mut self, batch: &Arc<BatchData>) -> u32 {
        self.batches.push(Arc::clone(batch));
        // A poll returns at most `max.poll.records` (an i32 in Kafka)
        // records, so at most that many batches.
        (self.batches.len() - 1) as u32
    }

    /// The index [`PartitionBuf::push_batch`] will return next.
    #[inline]
    pub(crate) fn next_batch(&self) -> u32 {
        self.batches.len() as u32
    }

    /// The records, for a decoder to append to (whose entries name batches
    /// already added, or the next one, added before the records are read).
    #[inline]
    pub(crate) fn entries_mut(&mut self) -> &mut Vec<Entry> {
        &mut self.entries
    }

    /// Adds a record's headers; returns their index for [`Entry::headers`].
    pub(crate) fn push_headers(&mut self, headers: Box<[Header]>) -> u32 {
        if headers.is_empty() {
            return Entry::NO_HEADERS;
        }
        self.headers.push(headers);
        (self.headers.len() - 1) as u32
    }

    /// The offsets of the records, in order.
    #[cfg(test)]
    pub(crate) fn offsets(&self) -> Vec<u64> {
        self.entries.iter().map(|e| e.offset).collect()
    }

    /// Adds a record.
    #[inline]
    pub(crate) fn push(&mut self, entry: Entry) {
        self.entries.push(entry);
    }

    /// The view of record `i`.
    #[inline]
    fn view(&self, i: usize) -> Option<ConsumerRecordRef<'_>> {
        let entry = self.entries.get(i)?;
        Some(self.view_of(entry))
    }

    #[inline]
    fn view_of<'a>(&'a self, entry: &'a Entry) -> ConsumerRecordRef<'a> {
        let headers = match entry.headers {
            Entry::NO_HEADERS => &[][..],
            h => &self.headers[h as usize],
        };
        ConsumerRecordRef {
            batch: &self.batches[entry.batch as usize],
            entry,
            headers,
        }
    }
}

/// A record of a [`ConsumerRecords`], borrowed from it: what
/// [`ConsumerRecords::iter`] and [`PartitionRecords`] yield. The same
/// accessors as [`ConsumerRecord`] (keys and values borrow the batch's
/// memory for as long as the `ConsumerRecords` lives);
/// [`to_record`](Self::to_record) makes an owned [`ConsumerRecord`].
///
/// Views cost nothing to make or drop: unlike an owned record they hold no
/// reference count of their batch.
#[derive(Clone, Copy)]
pub struct ConsumerRecordRef<'a> {
    batch: &'a Arc<BatchData>,
    entry: &'a Entry,
    headers: &'a [Header],
}

impl<'a> ConsumerRecordRef<'a> {
    /// The topic's name.
    #[must_use]
    pub fn topic(&self) -> &'a str {
        &self.batch.topic
    }

    /// The partition number.
    #[must_use]
    pub fn partition(&self) -> u32 {
        self.batch.partition
    }

    /// The record's offset in its partition.
    #[must_use]
    #[inline]
    pub fn offset(&self) -> u64 {
        self.entry.offset
    }

    /// The record's timestamp, as [`ConsumerRecord::timestamp`].
    #[must_use]
    #[inline]
    pub fn timestamp(&self) -> i64 {
        self.entry.timestamp
    }

    /// Which timestamp [`timestamp`](Self::timestamp) is.
    #[must_use]
    pub fn timestamp_type(&self) -> TimestampType {
        self.batch.timestamp_type
    }

    /// The key; `None` for a null key.
    #[must_use]
    #[inline]
    pub fn key(&self) -> Option<&'a [u8]> {
        let batch: &'a BatchData = self.batch;
        self.entry.key.range().map(|r| &batch.bytes[r])
    }

    /// The value; `None` for a null value (a tombstone).
    #[must_use]
    #[inline]
    pub fn value(&self) -> Option<&'a [u8]> {
        let batch: &'a BatchData = self.batch;
        self.entry.value.range().map(|r| &batch.bytes[r])
    }

    /// The key as [`Bytes`] sharing the batch's memory, as
    /// [`ConsumerRecord::key_bytes`].
    #[must_use]
    pub fn key_bytes(&self) -> Option<Bytes> {
        self.entry.key.range().map(|r| self.batch.bytes.slice(r))
    }

    /// The value as [`Bytes`] sharing the batch's memory, as
    /// [`ConsumerRecord::value_bytes`].
    #[must_use]
    pub fn value_bytes(&self) -> Option<Bytes> {
        self.entry.value.range().map(|r| self.batch.bytes.slice(r))
    }

    /// The headers, in the order the producer wrote them.
    #[must_use]
    pub fn headers(&self) -> &'a [Header] {
        self.headers
    }

    /// The topic and partition the record came from.
    #[must_use]
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(&*self.batch.topic, self.batch.partition)
    }

    /// The record as an owned [`ConsumerRecord`] (sharing the batch's
    /// memory, copying the headers).
    #[must_use]
    pub fn to_record(&self) -> ConsumerRecord {
        ConsumerRecord {
            batch: Arc::clone(self.batch),
            offset: self.entry.offset,
            timestamp: self.entry.timestamp,
            key: self.entry.key,
            value: self.entry.value,
            headers: self.headers.into(),
        }
    }
}

impl From<ConsumerRecordRef<'_>> for ConsumerRecord {
    fn from(view: ConsumerRecordRef<'_>) -> Self {
        view.to_record()
    }
}

impl std::fmt::Debug for ConsumerRecordRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerRecord")
            .field("topic", &self.topic())
            .field("partition", &self.partition())
            .field("offset", &self.offset())
            .field("timestamp", &self.timestamp())
            .field("timestamp_type", &self.timestamp_type())
            .field("key", &self.key().map(Bytes::copy_from_slice))
            .field("value", &self.value().map(Bytes::copy_from_slice))
            .field("headers", &self.headers)
            .finish()
    }
}

impl PartialEq for ConsumerRecordRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.offset() == other.offset()
            && self.timestamp() == other.timestamp()
            && self.partition() == other.partition()
            && self.timestamp_type() == other.timestamp_type()
            && self.topic() == other.topic()
            && self.key() == other.key()
            && self.value() == other.value()
            && self.headers == other.headers
    }
}

impl Eq for ConsumerRecordRef<'_> {}

impl PartialEq<ConsumerRecord> for ConsumerRecordRef<'_> {
    fn eq(&self, other: &ConsumerRecord) -> bool {
        self.offset() == other.offset()
            && self.timestamp() == other.timestamp()
            && self.partition() == other.partition()
            && self.timestamp_type() == other.timestamp_type()
            && self.topic() == other.topic()
            && self.key() == other.key()
            && self.value() == other.value()
            && self.headers == other.headers()
    }
}

impl PartialEq<ConsumerRecordRef<'_>> for ConsumerRecord {
    fn eq(&self, other: &ConsumerRecordRef<'_>) -> bool {
        other == self
    }
}

/// The records one [`Consumer::poll`](crate::Consumer::poll) returned,
/// grouped by partition, each partition's in offset order: Kafka's
/// `ConsumerRecords`.
///
/// Iterating by reference ([`iter`](Self::iter), `for r in &records`,
/// [`records`](Self::records)) yields [`ConsumerRecordRef`] views, which
/// cost nothing per record; iterating by value (`for r in records`) yields
/// owned [`ConsumerRecord`]s.
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
#[derive(Clone, Default)]
pub struct ConsumerRecords {
    parts: Vec<(TopicPartition, PartitionBuf)>,
    count: usize,
    /// Partitions that reached their end (`enable.partition.eof`).
    eofs: Vec<(TopicPartition, u64)>,
}

impl ConsumerRecords {
    pub(crate) fn new(parts: Vec<(TopicPartition, PartitionBuf)>) -> Self {
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

    /// Every record, partition by partition, as views.
    pub fn iter(&self) -> RecordsIter<'_> {
        RecordsIter {
            parts: self.parts.iter(),
            current: None,
        }
    }

    /// The records of one partition, in offset order (empty if it has none).
    #[must_use]
    pub fn records(&self, partition: &TopicPartition) -> PartitionRecords<'_> {
        static EMPTY: PartitionBuf = PartitionBuf {
            batches: Vec::new(),
            entries: Vec::new(),
            headers: Vec::new(),
        };
        PartitionRecords {
            buf: self
                .parts
                .iter()
                .find(|(tp, _)| tp == partition)
                .map_or(&EMPTY, |(_, records)| records),
        }
    }

    /// The partitions that have records here.
    pub fn partitions(&self) -> impl ExactSizeIterator<Item = &TopicPartition> + '_ {
        self.parts.iter().map(|(tp, _)| tp)
    }
}

impl std::fmt::Debug for ConsumerRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerRecords")
            .field("records", &self.iter().collect::<Vec<_>>())
            .field("eofs", &self.eofs)
            .finish()
    }
}

impl PartialEq for ConsumerRecords {
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count
            && self.eofs == other.eofs
            && self.parts.len() == other.parts.len()
            && self.partitions().eq(other.partitions())
            && self.iter().eq(other.iter())
    }
}

impl Eq for ConsumerRecords {}

/// One partition's records of a [`ConsumerRecords`], in offset order, from
/// [`ConsumerRecords::records`]: a list of [`ConsumerRecordRef`] views.
#[derive(Clone, Copy)]
pub struct PartitionRecords<'a> {
    buf: &'a PartitionBuf,
}

impl<'a> PartitionRecords<'a> {
    /// The number of records.
    #[must_use]
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Record `i` (0 is the lowest offset).
    #[must_use]
    pub fn get(&self, i: usize) -> Option<ConsumerRecordRef<'a>> {
        self.buf.view(i)
    }

    /// The first record.
    #[must_use]
    pub fn first(&self) -> Option<ConsumerRecordRef<'a>> {
        self.get(0)
    }

    /// The last record.
    #[must_use]
    pub fn last(&self) -> Option<ConsumerRecordRef<'a>> {
        self.len().checked_sub(1).and_then(|i| self.get(i))
    }

    /// The records, in offset order.
    #[must_use]
    pub fn iter(&self) -> PartitionRecordsIter<'a> {
        PartitionRecordsIter {
            buf: self.buf,
            entries: self.buf.entries.iter(),
        }
    }

    /// The records as owned [`ConsumerRecord`]s.
    #[must_use]
    pub fn to_vec(&self) -> Vec<ConsumerRecord> {
        self.iter().map(|r| r.to_record()).collect()
    }
}

impl std::fmt::Debug for PartitionRecords<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for PartitionRecords<'a> {
    type Item = ConsumerRecordRef<'a>;
    type IntoIter = PartitionRecordsIter<'a>;

    fn into_iter(self) -> PartitionRecordsIter<'a> {
        self.iter()
    }
}

/// Iterator over one partition's records, from [`PartitionRecords::iter`].
#[derive(Debug, Clone)]
pub struct PartitionRecordsIter<'a> {
    buf: &'a PartitionBuf,
    entries: std::slice::Iter<'a, Entry>,
}

impl<'a> Iterator for PartitionRecordsIter<'a> {
    type Item = ConsumerRecordRef<'a>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let entry = self.entries.next()?;
        Some(self.buf.view_of(entry))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl ExactSizeIterator for PartitionRecordsIter<'_> {}

impl DoubleEndedIterator for PartitionRecordsIter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let entry = self.entries.next_back()?;
        Some(self.buf.view_of(entry))
    }
}

impl std::iter::FusedIterator for PartitionRecordsIter<'_> {}

/// Iterator over [`ConsumerRecordRef`] views, from [`ConsumerRecords::iter`].
#[derive(Debug, Clone)]
pub struct RecordsIter<'a> {
    parts: std::slice::Iter<'a, (TopicPartition, PartitionBuf)>,
    current: Option<PartitionRecordsIter<'a>>,
}

impl<'a> Iterator for RecordsIter<'a> {
    type Item = ConsumerRecordRef<'a>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(record) = self.current.as_mut().and_then(Iterator::next) {
                return Some(record);
            }
            let (_, buf) = self.parts.next()?;
            self.current = Some(PartitionRecords { buf }.iter());
        }
    }
}

impl std::iter::FusedIterator for RecordsIter<'_> {}

/// Owning iterator over the records, from `ConsumerRecords::into_iter`.
#[derive(Debug)]
pub struct RecordsIntoIter {
    parts: std::vec::IntoIter<(TopicPartition, PartitionBuf)>,
    current: PartitionBuf,
    next: usize,
}

impl Iterator for RecordsIntoIter {
    type Item = ConsumerRecord;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(entry) = self.current.entries.get(self.next) {
                self.next += 1;
                let headers = match entry.headers {
                    Entry::NO_HEADERS => Box::default(),
                    h => std::mem::take(&mut self.current.headers[h as usize]),
                };
                return Some(ConsumerRecord {
                    batch: Arc::clone(&self.current.batches[entry.batch as usize]),
                    offset: entry.offset,
                    timestamp: entry.timestamp,
                    key: entry.key,
                    value: entry.value,
                    headers,
                });
            }
            self.current = self.parts.next()?.1;
            self.next = 0;
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
            current: PartitionBuf::default(),
            next: 0,
        }
    }
}

impl<'a> IntoIterator for &'a ConsumerRecords {
    type Item = ConsumerRecordRef<'a>;
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
