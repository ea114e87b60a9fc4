//! [`ProducerRecord`] (what is sent) and [`RecordMetadata`] (where it went).

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use compact_str::CompactString;

use super::IntoBytes;
use crate::format::Header;
use crate::format::RECORD_BATCH_OVERHEAD;
use crate::format::varint::{varint_size, varlong_size};
use crate::types::TopicPartition;

/// A record to send: Kafka's `ProducerRecord`.
///
/// Keys, values and header values take anything that implements
/// [`IntoBytes`]: borrowed data of any lifetime (`&str`, `&[u8]`,
/// `&String`, `&Vec<u8>`, `&[u8; N]`, `Cow`), which is copied, and owned
/// buffers (`Vec<u8>`, `String`, `Box<[u8]>`) and [`Bytes`], which are not.
/// The topic takes anything that implements [`IntoTopic`]: a `&str`, a
/// `&String` or a `String` (copied into a new name), or an `Arc<str>` (not
/// copied: hold one to send many records to a topic without a copy of its
/// name per record).
///
/// The partition is chosen by the producer unless set here; the timestamp
/// is the producer's clock at `send` unless set here (it must not be
/// negative).
///
/// ```
/// use logbus::ProducerRecord;
/// let record = ProducerRecord::new("orders", "created")
///     .with_key("order-1")
///     .with_header("source", "web")
///     .with_timestamp(1_700_000_000_000);
/// assert_eq!(record.key().map(|k| &k[..]), Some(&b"order-1"[..]));
/// assert_eq!(record.partition(), None);
///
/// // A tombstone: a key without a value (deletes the key in a compacted topic).
/// let tombstone = ProducerRecord::tombstone("orders", "order-1");
/// assert!(tombstone.value().is_none());
/// ```
///
/// Arguments borrowed from a caller work as they are:
///
/// ```
/// use logbus::{Producer, ProducerRecord, Result, SendFuture};
///
/// fn publish(producer: &Producer, topic: &str, key: &str, value: &str) -> Result<SendFuture> {
///     producer.send(ProducerRecord::new(topic, value).with_key(key))
/// }
///
/// fn record_of(topic: &String, key: &Vec<u8>, value: &[u8]) -> ProducerRecord {
///     ProducerRecord::new(topic, value)
///         .with_key(key)
///         .with_header("trace", format!("{topic}/{}", key.len()))
/// }
/// let record = record_of(&"orders".to_string(), &vec![1, 2], b"v");
/// assert_eq!(record.topic(), "orders");
/// assert_eq!(record.headers()[0].value.as_deref(), Some(&b"orders/2"[..]));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct ProducerRecord {
    pub(crate) topic: TopicName,
    pub(crate) key: Option<Bytes>,
    pub(crate) value: Option<Bytes>,
    pub(crate) headers: Vec<Header>,
    // The partition and the timestamp with flags of their own rather than
    // as `Option`s, which keeps a record at 128 bytes: a send moves it
    // without a call to `memcpy`.
    partition: u32,
    timestamp: i64,
    has_partition: bool,
    has_timestamp: bool,
}

impl ProducerRecord {
    /// A record of `topic` with this value, no key, no headers.
    pub fn new(topic: impl IntoTopic, value: impl IntoBytes) -> Self {
        ProducerRecord {
            topic: topic.into_topic(),
            key: None,
            value: Some(value.into_bytes()),
            headers: Vec::new(),
            partition: 0,
            timestamp: 0,
            has_partition: false,
            has_timestamp: false,
        }
    }

    /// A record of `topic` with this key and a null value (Kafka's tombstone).
    pub fn tombstone(topic: impl IntoTopic, key: impl IntoBytes) -> Self {
        ProducerRecord {
            topic: topic.into_topic(),
            key: Some(key.into_bytes()),
            value: None,
            headers: Vec::new(),
            partition: 0,
            timestamp: 0,
            has_partition: false,
            has_timestamp: false,
        }
    }

    /// Sets the key: the partition is then Kafka's murmur2 hash of it
    /// (unless a partition is set or a custom partitioner chooses).
    pub fn with_key(mut self, key: impl IntoBytes) -> Self {
        self.key = Some(key.into_bytes());
        self
    }

    /// Sets or clears the value (`None` is Kafka's null value; write it
    /// `None::<Bytes>`, or use [`tombstone`](ProducerRecord::tombstone)).
    pub fn with_value(mut self, value: Option<impl IntoBytes>) -> Self {
        self.value = value.map(IntoBytes::into_bytes);
        self
    }

    /// Sends the record to this partition, bypassing every partitioner.
    pub fn with_partition(mut self, partition: u32) -> Self {
        self.partition = partition;
        self.has_partition = true;
        self
    }

    /// Sets the record's create time, in milliseconds since the Unix epoch.
    pub fn with_timestamp(mut self, timestamp_ms: i64) -> Self {
        self.timestamp = timestamp_ms;
        self.has_timestamp = true;
        self
    }

    /// Adds a header (keys may repeat, as in Kafka).
    pub fn with_header(mut self, key: impl Into<String>, value: impl IntoBytes) -> Self {
        self.headers.push(Header {
            key: key.into(),
            value: Some(value.into_bytes()),
        });
        self
    }

    /// Replaces the headers.
    pub fn with_headers(mut self, headers: Vec<Header>) -> Self {
        self.headers = headers;
        self
    }

    /// The topic.
    #[must_use]
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition, if set.
    #[must_use]
    #[inline]
    pub fn partition(&self) -> Option<u32> {
        self.has_partition.then_some(self.partition)
    }

    /// The key, if any.
    #[must_use]
    pub fn key(&self) -> Option<&Bytes> {
        self.key.as_ref()
    }

    /// The value, if any.
    #[must_use]
    pub fn value(&self) -> Option<&Bytes> {
        self.value.as_ref()
    }

    /// The headers.
    #[must_use]
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// The timestamp, if set.
    #[must_use]
    #[inline]
    pub fn timestamp(&self) -> Option<i64> {
        self.has_timestamp.then_some(self.timestamp)
    }

    /// Cheap upper bounds of (the record's size as the only record of a
    /// batch, the bytes it adds to any batch), assuming every varint at its
    /// longest: attributes 1, timestamp delta 10, offset delta 5, the
    /// length, key, value and header count varints 5 each, and 10 per
    /// header. Saturates instead of overflowing; the exact size
    /// ([`ProducerRecord::lone_batch_size`]) is needed only near a limit.
    pub(crate) fn size_bounds(&self) -> (usize, usize) {
        let mut body = 36_usize
            .saturating_add(self.key.as_ref().map_or(0, Bytes::len))
            .saturating_add(self.value.as_ref().map_or(0, Bytes::len));
        for h in &self.headers {
            body = body
                .saturating_add(10 + h.key.len())
                .saturating_add(h.value.as_ref().map_or(0, Bytes::len));
        }
        if body > i32::MAX as usize {
            // Beyond Kafka's lengths: make every limit check look closer.
            body = usize::MAX - RECORD_BATCH_OVERHEAD;
        }
        (RECORD_BATCH_OVERHEAD + body, body)
    }

    /// Size of this record as the only record of a v2 batch (header
    /// included): what `max.request.size` and `max.message.bytes` are
    /// checked against. `None` if a length exceeds Kafka's `i32` lengths.
    pub(crate) fn lone_batch_size(&self) -> Option<usize> {
        fn nullable(len: Option<usize>) -> Option<usize> {
            match len {
                None => Some(1),
                Some(len) => varint_size(i32::try_from(len).ok()?).checked_add(len),
            }
        }
        // attributes, timestamp delta 0, offset delta 0.
        let mut body = 1 + varlong_size(0) + varint_size(0);
        body = body.checked_add(nullable(self.key.as_ref().map(Bytes::len))?)?;
        body = body.checked_add(nullable(self.value.as_ref().map(Bytes::len))?)?;
        body = body.checked_add(varint_size(i32::try_from(self.headers.len()).ok()?))?;
        for h in &self.headers {
            body = body.checked_add(nullable(Some(h.key.len()))?)?;
            body = body.checked_add(nullable(h.value.as_ref().map(Bytes::len))?)?;
        }
        let body_len = i32::try_from(body).ok()?;
        RECORD_BATCH_OVERHEAD.checked_add(varint_size(body_len) + body)
    }
}

/// A topic's name as a [`ProducerRecord`] holds it (what
/// [`IntoTopic`] makes): the `Arc<str>` it was given, shared; otherwise a
/// copy, inline for a name of up to 24 bytes (most topic names), so that
/// `ProducerRecord::new("orders", value)` costs no allocation. It reads as
/// a `&str`.
///
/// ```
/// use logbus::{IntoTopic, TopicName};
///
/// let name: TopicName = "orders".into_topic();
/// assert_eq!(name, "orders");
/// assert_eq!(name.len(), 6);
/// assert_eq!(format!("{name}"), "orders");
/// ```
#[derive(Clone)]
pub struct TopicName(Name);

#[derive(Clone)]
enum Name {
    /// Inline up to 24 bytes, else in a buffer of its own.
    Own(CompactString),
    /// A longer name given as an `Arc<str>`.
    Shared(Arc<str>),
}

impl TopicName {
    /// The name.
    #[must_use]
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Name::Own(name) => name.as_str(),
            Name::Shared(name) => name,
        }
    }

    /// The shared name, for a name given as an `Arc<str>`.
    #[inline]
    pub(crate) fn shared(&self) -> Option<&Arc<str>> {
        match &self.0 {
            Name::Own(_) => None,
            Name::Shared(name) => Some(name),
        }
    }
}

impl std::ops::Deref for TopicName {
    type Target = str;

    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for TopicName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for TopicName {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for TopicName {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for TopicName {}

impl PartialEq<str> for TopicName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for TopicName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::hash::Hash for TopicName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for TopicName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TopicName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::fmt::Debug for TopicName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for TopicName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<TopicName> for String {
    fn from(name: TopicName) -> String {
        match name.0 {
            Name::Own(name) => name.into_string(),
            Name::Shared(name) => String::from(&*name),
        }
    }
}

/// Converts a topic name into the [`TopicName`] a [`ProducerRecord`]
/// holds.
///
/// An `Arc<str>` (or `&Arc<str>`) is shared without a copy, the cheapest
/// way to send many records to one topic. Every other spelling is copied,
/// and does not allocate for a name of up to 24 bytes (most names): a
/// `&str`, `&String` or `Cow<str>` is copied inline; a longer name has a
/// buffer of its own (a `String`'s or `Box<str>`'s is kept).
///
/// ```
/// use std::sync::Arc;
/// use logbus::ProducerRecord;
///
/// fn event(topic: &str, key: &str) -> ProducerRecord {
///     ProducerRecord::new(topic, "v").with_key(key)
/// }
/// assert_eq!(event("orders", "k").topic(), "orders");
///
/// let topic: Arc<str> = Arc::from("orders");
/// let records: Vec<_> = (0..3)
///     .map(|i| ProducerRecord::new(&topic, format!("event {i}")))
///     .collect();
/// assert!(records.iter().all(|r| r.topic() == "orders"));
/// ```
pub trait IntoTopic {
    /// The topic's name.
    fn into_topic(self) -> TopicName;
}

impl IntoTopic for TopicName {
    fn into_topic(self) -> TopicName {
        self
    }
}

impl IntoTopic for &TopicName {
    fn into_topic(self) -> TopicName {
        self.clone()
    }
}

impl IntoTopic for Arc<str> {
    fn into_topic(self) -> TopicName {
        TopicName(Name::Shared(self))
    }
}

impl IntoTopic for &Arc<str> {
    /// Another reference to the same name (no copy).
    fn into_topic(self) -> TopicName {
        TopicName(Name::Shared(self.clone()))
    }
}

impl IntoTopic for &str {
    #[inline]
    fn into_topic(self) -> TopicName {
        TopicName(Name::Own(CompactString::new(self)))
    }
}

impl IntoTopic for &String {
    fn into_topic(self) -> TopicName {
        self.as_str().into_topic()
    }
}

impl IntoTopic for String {
    fn into_topic(self) -> TopicName {
        TopicName(Name::Own(CompactString::from(self)))
    }
}

impl IntoTopic for Box<str> {
    fn into_topic(self) -> TopicName {
        TopicName(Name::Own(CompactString::from(self)))
    }
}

impl IntoTopic for Cow<'_, str> {
    fn into_topic(self) -> TopicName {
        TopicName(Name::Own(CompactString::from(self)))
    }
}

/// Where a sent record was stored: Kafka's `RecordMetadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: u32,
    pub(crate) offset: Option<u64>,
    pub(crate) timestamp: i64,
}

impl RecordMetadata {
    /// The topic.
    #[must_use]
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition.
    #[must_use]
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The topic and partition together.
    #[must_use]
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(&*self.topic, self.partition)
    }

    /// The record's offset in its partition; `None` with
    /// [`Acks::None`](super::Acks::None), where the producer does not wait
    /// for the append (Kafka reports -1).
    #[must_use]
    pub fn offset(&self) -> Option<u64> {
        self.offset
    }

    /// The record's timestamp: its create time (set on the record, else
    /// the producer's clock at `send`), or the time of the append when the
    /// topic uses `LogAppendTime` (and the producer waited for it).
    #[must_use]
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_topic_names_it_and_an_arc_is_shared() {
        let name = String::from("orders");
        let arc: Arc<str> = Arc::from("orders");
        for record in [
            ProducerRecord::new("orders", "v"),
            ProducerRecord::new(&name, "v"),
            ProducerRecord::new(name.clone(), "v"),
            ProducerRecord::new(Box::<str>::from("orders"), "v"),
            ProducerRecord::new(Cow::Borrowed("orders"), "v"),
            ProducerRecord::tombstone(&arc, "k"),
        ] {
            assert_eq!(record.topic(), "orders");
        }
        // An `Arc<str>` is shared; a `&str` copied (inline when short).
        for record in [
            ProducerRecord::new(&arc, "v"),
            ProducerRecord::new(arc.clone(), "v"),
        ] {
            assert!(record.topic.shared().is_some_and(|n| Arc::ptr_eq(n, &arc)));
        }
        let long: Arc<str> = Arc::from("a-topic-name-longer-than-24-bytes");
        let own = ProducerRecord::new(&*long, "v");
        assert!(own.topic.shared().is_none());
        assert_eq!(own.topic(), &*long);
        assert_eq!(own.topic, ProducerRecord::new(&long, "v").topic);
        assert_eq!(String::from(own.topic.clone()), &*long);
    }
}
