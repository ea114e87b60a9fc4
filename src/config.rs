//! Configuration of one partition log.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::types::TimestampType;

/// `d` in whole milliseconds, as Kafka keeps every duration: rounded down,
/// saturating at `i64::MAX`. Every typed setter taking a [`Duration`] goes
/// through it.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A value given by a setting's Kafka name (`set(name, value)` of the
/// client builders), with the parsers they share and errors naming it.
pub(crate) struct NamedValue<'a> {
    name: &'a str,
    raw: &'a str,
}

impl<'a> NamedValue<'a> {
    pub(crate) fn new(name: &'a str, raw: &'a str) -> Self {
        NamedValue { name, raw }
    }

    /// The value without surrounding whitespace.
    pub(crate) fn text(&self) -> &'a str {
        self.raw.trim()
    }

    /// `InvalidConfig` naming the setting and the value given.
    pub(crate) fn bad(&self, why: &str) -> Error {
        Error::InvalidConfig(format!("{}={:?}: {why}", self.name, self.raw))
    }

    /// A non-negative integer.
    pub(crate) fn uint(&self) -> Result<u64> {
        self.text()
            .parse()
            .map_err(|_| self.bad("must be a non-negative integer"))
    }

    /// Whole milliseconds.
    pub(crate) fn millis(&self) -> Result<Duration> {
        self.uint().map(Duration::from_millis)
    }

    /// `true` or `false`.
    pub(crate) fn boolean(&self) -> Result<bool> {
        match self.text() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(self.bad("must be true or false")),
        }
    }
}

/// A stored millisecond count as a [`Duration`] (negative ones, which
/// validation refuses, as zero).
pub(crate) fn duration(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// When appended data reaches the disk, and so what an acknowledged append
/// survives: Kafka's `flush.messages` and `flush.ms`, either, both or
/// neither. See the README's durability section.
///
/// - **Page cache** ([`FlushPolicy::page_cache`], the default, as in
///   Kafka): an append is acknowledged once it is in the operating system's
///   page cache. It survives a crash of the process, not a power loss or a
///   kernel crash before the OS wrote it back. Sealed segments are still
///   fsynced in the background after each roll.
/// - **Every N messages** ([`FlushPolicy::every_messages`], Kafka's
///   `flush.messages=N`): the append that brings the log's unflushed
///   records (log end offset minus recovery point, as Kafka counts them) to
///   N or more runs an fsync covering itself, or waits for the one in
///   flight, before it is acknowledged; concurrent appenders share fsyncs.
///   When any append returns, at most N − 1 offsets up to its end are not on
///   disk, so a power loss loses at most the last N − 1 acknowledged
///   records (the newest ones, never a gap).
/// - **Every append** ([`FlushPolicy::every_append`], `flush.messages=1`):
///   the case N = 1: every acknowledged append survives a power loss.
/// - **Interval** ([`FlushPolicy::every_interval`], Kafka's `flush.ms`):
///   the log's scheduler flushes everything appended so far at least every
///   interval (whole milliseconds, by the log's clock). An append
///   acknowledged less than one interval before a power loss may be lost.
///
/// With both set ([`FlushPolicy::with_messages`],
/// [`FlushPolicy::with_interval`]) both bounds hold.
///
/// ```
/// use std::time::Duration;
/// use logbus::FlushPolicy;
/// let policy = FlushPolicy::every_messages(100).with_interval(Duration::from_secs(1));
/// assert_eq!(policy.messages(), Some(100));
/// assert_eq!(policy.interval(), Some(Duration::from_secs(1)));
/// assert!(FlushPolicy::every_append().is_every_append());
/// assert!(FlushPolicy::default().is_page_cache());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlushPolicy {
    /// `flush.messages`; `None` never by count.
    messages: Option<u64>,
    /// `flush.ms`, whole milliseconds in `1..i64::MAX`; `None` never by
    /// time.
    interval: Option<Duration>,
}

impl FlushPolicy {
    /// The largest `flush.messages` or `flush.ms` that means anything:
    /// Kafka's `Long.MAX_VALUE`, its default, means "never".
    const NEVER: u64 = i64::MAX as u64;

    /// Acknowledged once in the page cache; no fsync by count or time
    /// (Kafka's defaults). The default policy.
    #[must_use]
    pub const fn page_cache() -> Self {
        FlushPolicy {
            messages: None,
            interval: None,
        }
    }

    /// An fsync covering every append before it is acknowledged (Kafka's
    /// `flush.messages=1`); concurrent appends share one fsync.
    #[must_use]
    pub const fn every_append() -> Self {
        FlushPolicy::page_cache().with_messages(1)
    }

    /// An fsync at least every `n` records (Kafka's `flush.messages`); see
    /// the type's documentation for what that promises. `n` of `i64::MAX`
    /// or more (Kafka's default, meaning never) sets no bound; `0` means
    /// every append, as an interval of zero does (the setting
    /// `flush.messages=0` by name is refused, as Kafka refuses it).
    #[must_use]
    pub const fn every_messages(n: u64) -> Self {
        FlushPolicy::page_cache().with_messages(n)
    }

    /// A background fsync at least every `interval` (Kafka's `flush.ms`).
    /// The interval is counted in whole milliseconds, rounded down; one
    /// below a millisecond means an fsync before every acknowledgement
    /// ([`FlushPolicy::every_append`]), as `flush.ms=0` does, and one of
    /// `i64::MAX` milliseconds or more sets no bound.
    #[must_use]
    pub fn every_interval(interval: Duration) -> Self {
        FlushPolicy::page_cache().with_interval(interval)
    }

    /// This policy with the `flush.messages` bound set to `n` (replacing
    /// any other), as [`FlushPolicy::every_messages`].
    #[must_use]
    pub const fn with_messages(mut self, n: u64) -> Self {
        self.messages = match n {
            0 => Some(1),
            n if n >= Self::NEVER => None,
            n => Some(n),
        };
        self
    }

    /// This policy with the `flush.ms` bound set to `interval` (replacing
    /// any other), as [`FlushPolicy::every_interval`].
    #[must_use]
    pub fn with_interval(mut self, interval: Duration) -> Self {
        let ms = interval.as_millis();
        if ms == 0 {
            self.interval = None;
            self.messages = Some(1);
        } else if ms >= u128::from(Self::NEVER) {
            self.interval = None;
        } else {
            // Below i64::MAX, so it fits.
            self.interval = Some(Duration::from_millis(ms as u64));
        }
        self
    }

    /// The `flush.messages` bound: an fsync at least every this many
    /// records. `None`: none.
    #[must_use]
    pub const fn messages(&self) -> Option<u64> {
        self.messages
    }

    /// The `flush.ms` bound: a background fsync at least this often.
    /// `None`: none.
    #[must_use]
    pub const fn interval(&self) -> Option<Duration> {
        self.interval
    }

    /// Whether appends are acknowledged from the page cache with no fsync
    /// bound at all.
    #[must_use]
    pub const fn is_page_cache(&self) -> bool {
        self.messages.is_none() && self.interval.is_none()
    }

    /// Whether every append is fsynced before it is acknowledged
    /// (`flush.messages=1`).
    #[must_use]
    pub const fn is_every_append(&self) -> bool {
        matches!(self.messages, Some(1))
    }
}

/// Settings of one partition log. Build with [`LogConfig::builder`]; every
/// field has Kafka's default and, where one exists, Kafka's name.
///
/// ```
/// use logbus::LogConfig;
/// let config = LogConfig::builder().segment_bytes(64 * 1024 * 1024).build()?;
/// assert_eq!(config.segment_bytes(), 64 * 1024 * 1024);
/// # Ok::<(), logbus::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    segment_bytes: u64,
    segment_ms: Option<i64>,
    segment_index_bytes: u64,
    index_interval_bytes: u64,
    retention_ms: Option<i64>,
    retention_bytes: Option<u64>,
    max_message_bytes: u64,
    timestamp_type: TimestampType,
    flush: FlushPolicy,
    retention_check_interval_ms: i64,
    compact: bool,
    delete: bool,
    delete_retention_ms: i64,
    min_cleanable_dirty_ratio: f64,
    min_compaction_lag_ms: i64,
    producer_id_expiration_ms: i64,
}

// `min_cleanable_dirty_ratio` is validated to be finite, so equality is an
// equivalence relation.
impl Eq for LogConfig {}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: Some(7 * 24 * 3600 * 1000),
            segment_index_bytes: 10 * 1024 * 1024,
            index_interval_bytes: 4096,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            max_message_bytes: 1_048_588,
            timestamp_type: TimestampType::CreateTime,
            flush: FlushPolicy::page_cache(),
            retention_check_interval_ms: 300_000,
            compact: false,
            delete: true,
            delete_retention_ms: 86_400_000,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            producer_id_expiration_ms: 86_400_000,
        }
    }
}

impl LogConfig {
    /// Smallest accepted `segment.bytes`.
    pub const MIN_SEGMENT_BYTES: u64 = 128;
    /// Smallest accepted `segment.index.bytes` (one offset index entry is 8
    /// bytes, one time index entry 12).
    pub const MIN_SEGMENT_INDEX_BYTES: u64 = 24;

    /// A builder starting from the defaults.
    pub fn builder() -> LogConfigBuilder {
        LogConfigBuilder {
            config: LogConfig::default(),
        }
    }

    /// `segment.bytes`: a segment is rolled before an append would make it
    /// larger. Default 1 GiB.
    #[must_use]
    pub fn segment_bytes(&self) -> u64 {
        self.segment_bytes
    }
    /// `segment.ms`: a segment older than this (by the time of its first
    /// append) is rolled at the next append. Default 7 days; `None` never.
    #[must_use]
    pub fn segment_time(&self) -> Option<Duration> {
        self.segment_ms.map(duration)
    }
    /// `segment.ms` in milliseconds, for the log.
    pub(crate) fn segment_ms(&self) -> Option<i64> {
        self.segment_ms
    }
    /// `segment.index.bytes`: the size preallocated for each index file; a
    /// full index rolls the segment. Default 10 MiB.
    #[must_use]
    pub fn segment_index_bytes(&self) -> u64 {
        self.segment_index_bytes
    }
    /// `index.interval.bytes`: bytes of batches between offset index entries.
    /// Default 4096.
    #[must_use]
    pub fn index_interval_bytes(&self) -> u64 {
        self.index_interval_bytes
    }
    /// `retention.ms`: sealed segments whose newest record is older than this
    /// are deleted. Default 7 days; `None` keeps everything.
    #[must_use]
    pub fn retention_time(&self) -> Option<Duration> {
        self.retention_ms.map(duration)
    }
    /// `retention.ms` in milliseconds, for the log.
    pub(crate) fn retention_ms(&self) -> Option<i64> {
        self.retention_ms
    }
    /// `retention.bytes`: oldest sealed segments are deleted while the log is
    /// larger than this. Default `None` (unlimited).
    #[must_use]
    pub fn retention_bytes(&self) -> Option<u64> {
        self.retention_bytes
    }
    /// `max.message.bytes`: the largest record batch accepted. Default
    /// 1048588, as in Kafka.
    #[must_use]
    pub fn max_message_bytes(&self) -> u64 {
        self.max_message_bytes
    }
    /// `max.message.bytes` as a length (validated to fit an `i32`).
    pub(crate) fn max_batch_len(&self) -> usize {
        usize::try_from(self.max_message_bytes).unwrap_or(usize::MAX)
    }
    /// `message.timestamp.type`. Default `CreateTime`.
    #[must_use]
    pub fn timestamp_type(&self) -> TimestampType {
        self.timestamp_type
    }
    /// When appends reach the disk (`flush.messages`, `flush.ms`). Default
    /// [`FlushPolicy::page_cache`].
    #[must_use]
    pub fn flush(&self) -> FlushPolicy {
        self.flush
    }

    /// How often the log's background thread enforces retention and, for
    /// a compacted log, checks whether it needs cleaning (Kafka's broker
    /// settings `log.retention.check.interval.ms` and
    /// `log.cleaner.backoff.ms`). Default 5 minutes.
    #[must_use]
    pub fn retention_check_interval(&self) -> Duration {
        duration(self.retention_check_interval_ms)
    }
    /// The same in milliseconds, for the log's timers.
    pub(crate) fn retention_check_interval_ms(&self) -> i64 {
        self.retention_check_interval_ms
    }
    /// This configuration with the cluster's
    /// `log.retention.check.interval.ms`.
    pub(crate) fn with_retention_check_interval_ms(mut self, ms: i64) -> Self {
        self.retention_check_interval_ms = ms;
        self
    }

    /// This config with `producer.id.expiration.ms` set to `ms` (the
    /// cluster's broker-wide setting).
    pub(crate) fn with_producer_id_expiration_ms(mut self, ms: i64) -> Self {
        self.producer_id_expiration_ms = ms;
        self
    }

    /// Whether `cleanup.policy` includes `compact`: the cleaner keeps the
    /// latest record of every key (see [`Log::clean`](crate::Log::clean)),
    /// and appends of records without a key are refused. Default false.
    #[must_use]
    pub fn compact(&self) -> bool {
        self.compact
    }
    /// Whether `cleanup.policy` includes `delete`: `retention.ms` and
    /// `retention.bytes` delete old sealed segments. Default true. With
    /// `compact` alone (`cleanup.policy=compact`) they delete nothing, as in
    /// Kafka.
    #[must_use]
    pub fn delete(&self) -> bool {
        self.delete
    }
    /// `cleanup.policy` as Kafka spells it: `delete`, `compact` or
    /// `compact,delete`.
    #[must_use]
    pub fn cleanup_policy_name(&self) -> &'static str {
        match (self.compact, self.delete) {
            (true, true) => "compact,delete",
            (true, false) => "compact",
            _ => "delete",
        }
    }
    /// `delete.retention.ms`: how long the cleaner keeps a tombstone (a
    /// record with a null value) after it first cleaned it, so that a reader
    /// scanning from the start sees the deletion. Default 1 day.
    #[must_use]
    pub fn delete_retention(&self) -> Duration {
        duration(self.delete_retention_ms)
    }
    /// `delete.retention.ms` in milliseconds, for the cleaner.
    pub(crate) fn delete_retention_ms(&self) -> i64 {
        self.delete_retention_ms
    }
    /// `min.cleanable.dirty.ratio`: the background cleaner cleans a
    /// compacted log once the dirty part (not yet cleaned, cleanable bytes)
    /// is at least this fraction of the cleanable log. Default 0.5.
    #[must_use]
    pub fn min_cleanable_dirty_ratio(&self) -> f64 {
        self.min_cleanable_dirty_ratio
    }
    /// `min.compaction.lag.ms`: a segment whose newest record is younger
    /// than this is not cleaned yet. Default 0.
    #[must_use]
    pub fn min_compaction_lag(&self) -> Duration {
        duration(self.min_compaction_lag_ms)
    }
    /// `min.compaction.lag.ms` in milliseconds, for the cleaner.
    pub(crate) fn min_compaction_lag_ms(&self) -> i64 {
        self.min_compaction_lag_ms
    }

    /// `producer.id.expiration.ms`: how long after a producer's last
    /// write (its last batch's timestamp, or its last marker's) the log
    /// forgets its state, unless it has a transaction open (Kafka's
    /// broker setting; default 1 day). Checked with retention
    /// (`log.retention.check.interval.ms`). A forgotten producer's next
    /// batch must start at sequence 0 (`UnknownProducerId`).
    #[must_use]
    pub fn producer_id_expiration(&self) -> Duration {
        duration(self.producer_id_expiration_ms)
    }

    /// `producer.id.expiration.ms` in milliseconds.
    pub(crate) fn producer_id_expiration_ms(&self) -> i64 {
        self.producer_id_expiration_ms
    }

    fn validate(&self) -> Result<()> {
        if self.producer_id_expiration_ms < 1 {
            return Err(Error::InvalidConfig(
                "producer.id.expiration.ms must be at least 1".into(),
            ));
        }
        if !self.compact && !self.delete {
            return Err(Error::InvalidConfig(
                "cleanup.policy must include compact or delete".into(),
            ));
        }
        if self.delete_retention_ms < 0 {
            return Err(Error::InvalidConfig(
                "delete.retention.ms must not be negative".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.min_cleanable_dirty_ratio) {
            return Err(Error::InvalidConfig(format!(
                "min.cleanable.dirty.ratio must be in [0, 1], got {}",
                self.min_cleanable_dirty_ratio
            )));
        }
        if self.min_compaction_lag_ms < 0 {
            return Err(Error::InvalidConfig(
                "min.compaction.lag.ms must not be negative".into(),
            ));
        }
        if self.segment_bytes < Self::MIN_SEGMENT_BYTES || self.segment_bytes > i32::MAX as u64 {
            return Err(Error::InvalidConfig(format!(
                "segment.bytes must be in [{}, {}], got {}",
                Self::MIN_SEGMENT_BYTES,
                i32::MAX,
                self.segment_bytes
            )));
        }
        if self.segment_index_bytes < Self::MIN_SEGMENT_INDEX_BYTES
            || self.segment_index_bytes > i32::MAX as u64
        {
            return Err(Error::InvalidConfig(format!(
                "segment.index.bytes must be in [{}, {}], got {}",
                Self::MIN_SEGMENT_INDEX_BYTES,
                i32::MAX,
                self.segment_index_bytes
            )));
        }
        if self.index_interval_bytes > i32::MAX as u64 {
            return Err(Error::InvalidConfig(format!(
                "index.interval.bytes must be at most {}, got {}",
                i32::MAX,
                self.index_interval_bytes
            )));
        }
        if matches!(self.segment_ms, Some(ms) if ms <= 0) {
            return Err(Error::InvalidConfig("segment.ms must be positive".into()));
        }
        if matches!(self.retention_ms, Some(ms) if ms < 0) {
            return Err(Error::InvalidConfig(
                "retention.ms must not be negative".into(),
            ));
        }
        let overhead = crate::format::RECORD_BATCH_OVERHEAD as u64;
        if self.max_message_bytes < overhead || self.max_message_bytes > i32::MAX as u64 {
            return Err(Error::InvalidConfig(format!(
                "max.message.bytes must be in [{overhead}, {}], got {}",
                i32::MAX,
                self.max_message_bytes
            )));
        }
        if self.retention_check_interval_ms <= 0 {
            return Err(Error::InvalidConfig(
                "log.retention.check.interval.ms must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// Builds a validated [`LogConfig`].
#[derive(Debug, Clone)]
#[must_use]
pub struct LogConfigBuilder {
    config: LogConfig,
}

impl LogConfigBuilder {
    /// Sets `segment.bytes`.
    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.config.segment_bytes = bytes;
        self
    }
    /// Sets `segment.ms` (`None`: never roll by time; whole milliseconds,
    /// at least 1).
    pub fn segment_time(mut self, time: Option<Duration>) -> Self {
        self.config.segment_ms = time.map(millis);
        self
    }
    /// Sets `segment.index.bytes`.
    pub fn segment_index_bytes(mut self, bytes: u64) -> Self {
        self.config.segment_index_bytes = bytes;
        self
    }
    /// Sets `index.interval.bytes` (0: an index entry for every batch, as
    /// in Kafka).
    pub fn index_interval_bytes(mut self, bytes: u64) -> Self {
        self.config.index_interval_bytes = bytes;
        self
    }
    /// Sets `retention.ms` (`None`: unlimited; whole milliseconds).
    pub fn retention_time(mut self, time: Option<Duration>) -> Self {
        self.config.retention_ms = time.map(millis);
        self
    }
    /// Sets `retention.bytes` (`None`: unlimited).
    pub fn retention_bytes(mut self, bytes: Option<u64>) -> Self {
        self.config.retention_bytes = bytes;
        self
    }
    /// Sets `max.message.bytes`.
    pub fn max_message_bytes(mut self, bytes: u64) -> Self {
        self.config.max_message_bytes = bytes;
        self
    }
    /// Sets `message.timestamp.type`.
    pub fn timestamp_type(mut self, kind: TimestampType) -> Self {
        self.config.timestamp_type = kind;
        self
    }
    /// Sets the flush policy (`flush.messages`, `flush.ms`).
    pub fn flush(mut self, policy: FlushPolicy) -> Self {
        self.config.flush = policy;
        self
    }

    /// Sets `log.retention.check.interval.ms` (whole milliseconds, at
    /// least 1).
    pub fn retention_check_interval(mut self, interval: Duration) -> Self {
        self.config.retention_check_interval_ms = millis(interval);
        self
    }

    /// Sets whether `cleanup.policy` includes `compact`.
    pub fn compact(mut self, compact: bool) -> Self {
        self.config.compact = compact;
        self
    }
    /// Sets whether `cleanup.policy` includes `delete`.
    pub fn delete(mut self, delete: bool) -> Self {
        self.config.delete = delete;
        self
    }
    /// Sets `producer.id.expiration.ms` (whole milliseconds, at least 1;
    /// see [`LogConfig::producer_id_expiration`]).
    pub fn producer_id_expiration(mut self, time: Duration) -> Self {
        self.config.producer_id_expiration_ms = millis(time);
        self
    }

    /// Sets `delete.retention.ms` (whole milliseconds).
    pub fn delete_retention(mut self, time: Duration) -> Self {
        self.config.delete_retention_ms = millis(time);
        self
    }
    /// Sets `min.cleanable.dirty.ratio` (in `[0, 1]`).
    pub fn min_cleanable_dirty_ratio(mut self, ratio: f64) -> Self {
        self.config.min_cleanable_dirty_ratio = ratio;
        self
    }
    /// Sets `min.compaction.lag.ms` (whole milliseconds).
    pub fn min_compaction_lag(mut self, lag: Duration) -> Self {
        self.config.min_compaction_lag_ms = millis(lag);
        self
    }

    /// Validates and returns the configuration.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first invalid setting.
    pub fn build(self) -> Result<LogConfig> {
        self.config.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kafkas() {
        let c = LogConfig::default();
        assert_eq!(c.segment_bytes(), 1 << 30);
        assert_eq!(c.index_interval_bytes(), 4096);
        assert_eq!(c.retention_time(), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(c.segment_time(), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(c.retention_check_interval(), Duration::from_secs(300));
        assert_eq!(c.retention_bytes(), None);
        assert_eq!(c.max_message_bytes(), 1_048_588);
        assert!(LogConfig::builder().build().is_ok());
    }

    #[test]
    fn invalid_values_are_named() {
        let err = LogConfig::builder().segment_bytes(1).build().unwrap_err();
        assert!(err.to_string().contains("segment.bytes"), "{err}");
        let err = LogConfig::builder()
            .segment_time(Some(Duration::from_micros(999)))
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("segment.ms"), "{err}");
        let err = LogConfig::builder()
            .min_cleanable_dirty_ratio(1.5)
            .build()
            .unwrap_err();
        assert!(
            err.to_string().contains("min.cleanable.dirty.ratio"),
            "{err}"
        );
        let err = LogConfig::builder()
            .min_cleanable_dirty_ratio(f64::NAN)
            .build()
            .unwrap_err();
        assert!(
            err.to_string().contains("min.cleanable.dirty.ratio"),
            "{err}"
        );
        let err = LogConfig::builder()
            .retention_check_interval(Duration::ZERO)
            .build()
            .unwrap_err();
        assert!(
            err.to_string().contains("log.retention.check.interval.ms"),
            "{err}"
        );
        for bytes in [0, 1 << 31] {
            let err = LogConfig::builder()
                .max_message_bytes(bytes)
                .build()
                .unwrap_err();
            assert!(err.to_string().contains("max.message.bytes"), "{err}");
        }
        // Durations beyond i64::MAX milliseconds saturate: never.
        let c = LogConfig::builder()
            .segment_time(Some(Duration::MAX))
            .retention_time(Some(Duration::MAX))
            .build()
            .unwrap();
        assert_eq!(c.segment_ms(), Some(i64::MAX));
        assert_eq!(c.retention_ms(), Some(i64::MAX));
    }

    #[test]
    fn cleanup_policy_defaults_and_names() {
        let c = LogConfig::default();
        assert!(c.delete() && !c.compact());
        assert_eq!(c.cleanup_policy_name(), "delete");
        assert_eq!(c.delete_retention(), Duration::from_secs(86_400));
        assert_eq!(c.min_compaction_lag(), Duration::ZERO);
        assert_eq!(c.producer_id_expiration(), Duration::from_secs(86_400));
        assert!((c.min_cleanable_dirty_ratio() - 0.5).abs() < f64::EPSILON);
        let c = LogConfig::builder().compact(true).build().unwrap();
        assert_eq!(c.cleanup_policy_name(), "compact,delete");
        let c = LogConfig::builder()
            .compact(true)
            .delete(false)
            .build()
            .unwrap();
        assert_eq!(c.cleanup_policy_name(), "compact");
        let err = LogConfig::builder().delete(false).build().unwrap_err();
        assert!(err.to_string().contains("cleanup.policy"), "{err}");
    }

    #[test]
    fn flush_policies_say_what_kafkas_settings_say() {
        let page = FlushPolicy::page_cache();
        assert_eq!(page, FlushPolicy::default());
        assert!(page.is_page_cache() && !page.is_every_append());
        assert_eq!((page.messages(), page.interval()), (None, None));

        let every = FlushPolicy::every_append();
        assert_eq!(every, FlushPolicy::every_messages(1));
        assert!(every.is_every_append() && !every.is_page_cache());

        let both = FlushPolicy::every_messages(10).with_interval(Duration::from_millis(250));
        assert_eq!(both.messages(), Some(10));
        assert_eq!(both.interval(), Some(Duration::from_millis(250)));
        assert_eq!(
            both,
            FlushPolicy::every_interval(Duration::from_millis(250)).with_messages(10)
        );
        assert!(!both.is_every_append() && !both.is_page_cache());
        assert!(LogConfig::builder().flush(both).build().is_ok());

        // Whole milliseconds, rounded down; below one is every append, as
        // flush.ms=0.
        assert_eq!(
            FlushPolicy::every_interval(Duration::from_micros(2_999)).interval(),
            Some(Duration::from_millis(2))
        );
        assert_eq!(
            FlushPolicy::every_interval(Duration::from_micros(999)),
            FlushPolicy::every_append()
        );
        assert_eq!(
            FlushPolicy::every_messages(500).with_interval(Duration::ZERO),
            FlushPolicy::every_append()
        );
        // Kafka's Long.MAX_VALUE (its default) and beyond mean never.
        assert!(FlushPolicy::every_messages(i64::MAX as u64).is_page_cache());
        assert!(FlushPolicy::every_messages(u64::MAX).is_page_cache());
        // Zero records is every append, as a zero interval.
        assert_eq!(FlushPolicy::every_messages(0), FlushPolicy::every_append());
        assert_eq!(
            FlushPolicy::every_messages(i64::MAX as u64 - 1).messages(),
            Some(i64::MAX as u64 - 1)
        );
        assert!(FlushPolicy::every_interval(Duration::MAX).is_page_cache());
        assert!(
            FlushPolicy::every_interval(Duration::from_millis(i64::MAX as u64)).is_page_cache()
        );
        // Replacing one bound keeps the other.
        assert_eq!(
            both.with_messages(u64::MAX),
            FlushPolicy::every_interval(Duration::from_millis(250))
        );
    }

    #[test]
    fn index_interval_zero_indexes_every_batch_as_in_kafka() {
        let c = LogConfig::builder()
            .index_interval_bytes(0)
            .build()
            .unwrap();
        assert_eq!(c.index_interval_bytes(), 0);
        let err = LogConfig::builder()
            .index_interval_bytes(1 << 40)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("index.interval.bytes"), "{err}");
    }
}
