//! What a poll returns: [`ConsumerRecord`] and [`ConsumerRecords`]; and
//! [`OffsetAndTimestamp`] from `offsets_for_times`.

use std::sync::Arc;

use bytes::Bytes;

use crate::format::Header;
use crate::types::{TimestampType, TopicPartition};

/// One record returned by [`Consumer::poll`](crate::Consumer::poll): Kafka's
/// `ConsumerRecord`.
///
/// Keys, values and header values are [`Bytes`]: for an uncompressed batch
/// they are views of the segment's memory map (no copy), for a compressed one
/// views of the batch's decompressed records. Holding a record keeps that
/// memory alive; clone the bytes you keep out (`value.to_vec()`) if you hold
/// records for long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: u32,
    pub(crate) offset: u64,
    pub(crate) timestamp: i64,
    pub(crate) timestamp_type: TimestampType,
    pub(crate) key: Option<Bytes>,
    pub(crate) value: Option<Bytes>,
    pub(crate) headers: Vec<Header>,
}

impl ConsumerRecord {
    /// The topic's name (one string shared by every record of the topic).
    #[must_use]
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition number.
    #[must_use]
    pub fn partition(&self) -> u32 {
        self.partition
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
        self.timestamp_type
    }

    /// The key; `None` for a null key.
    #[must_use]
    pub fn key(&self) -> Option<&Bytes> {
        self.key.as_ref()
    }

    /// The value; `None` for a null value (a tombstone).
    #[must_use]
    pub fn value(&self) -> Option<&Bytes> {
        self.value.as_ref()
    }

    /// The headers, in the order the producer wrote them.
    #[must_use]
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// The topic and partition the record came from.
    #[must_use]
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(&*self.topic, self.partition)
    }

    /// Splits the record into key, value and headers.
    #[must_use]
    pub fn into_parts(self) -> (Option<Bytes>, Option<Bytes>, Vec<Header>) {
        (self.key, self.value, self.headers)
    }
}

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
}

impl ConsumerRecords {
    pub(crate) fn new(parts: Vec<(TopicPartition, Vec<ConsumerRecord>)>) -> Self {
        let count = parts.iter().map(|(_, r)| r.len()).sum();
        ConsumerRecords { parts, count }
    }

    /// The number of records.
    #[must_use]
    pub fn count(&self) -> usize {
        self.count
    }

    /// Whether there are no records.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
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
