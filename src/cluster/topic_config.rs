//! Per-topic configuration, by Kafka's names, and topic-name rules.

use std::collections::BTreeMap;
use std::num::IntErrorKind;
use std::time::Duration;

use crate::config::{FlushPolicy, LogConfig, millis};
use crate::error::{Error, Result};
use crate::types::TimestampType;

/// What a topic does with old data (Kafka's `cleanup.policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CleanupPolicy {
    /// Delete whole old segments by `retention.ms` and `retention.bytes`.
    #[default]
    Delete,
    /// Keep the latest record of every key (log compaction); time and size
    /// retention delete nothing.
    Compact,
    /// Both: compact, and delete old segments by retention.
    CompactDelete,
}

impl CleanupPolicy {
    /// Kafka's name for the policy.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
            CleanupPolicy::CompactDelete => "compact,delete",
        }
    }

    /// Parses Kafka's names (`delete`, `compact`, `compact,delete` in either
    /// order, spaces allowed).
    #[must_use]
    pub fn parse(value: &str) -> Option<CleanupPolicy> {
        let mut compact = false;
        let mut delete = false;
        for part in value.split(',') {
            match part.trim() {
                "compact" if !compact => compact = true,
                "delete" if !delete => delete = true,
                _ => return None,
            }
        }
        match (compact, delete) {
            (true, true) => Some(CleanupPolicy::CompactDelete),
            (true, false) => Some(CleanupPolicy::Compact),
            (false, true) => Some(CleanupPolicy::Delete),
            (false, false) => None,
        }
    }
}

/// One change to a topic's configs, as Kafka's `IncrementalAlterConfigs`
/// makes them (its `SET` and `DELETE`): see
/// [`Cluster::alter_topic_config`](crate::Cluster::alter_topic_config).
///
/// ```
/// use logbus::AlterConfigOp;
/// let op = AlterConfigOp::set("retention.ms", "3600000");
/// assert_eq!(op.key(), "retention.ms");
/// assert_eq!(AlterConfigOp::delete("retention.ms").key(), "retention.ms");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AlterConfigOp {
    /// Sets the topic's own value of a config (name, value), checked as
    /// [`TopicConfig::set`] checks it.
    Set(String, String),
    /// Removes the topic's own value of a config (by name): the cluster's
    /// default applies again (Kafka's "revert to default").
    Delete(String),
}

impl AlterConfigOp {
    /// [`AlterConfigOp::Set`] of `key` to `value`.
    pub fn set(key: impl Into<String>, value: impl Into<String>) -> Self {
        AlterConfigOp::Set(key.into(), value.into())
    }

    /// [`AlterConfigOp::Delete`] of `key`.
    pub fn delete(key: impl Into<String>) -> Self {
        AlterConfigOp::Delete(key.into())
    }

    /// The config the change names.
    #[must_use]
    pub fn key(&self) -> &str {
        match self {
            AlterConfigOp::Set(key, _) | AlterConfigOp::Delete(key) => key,
        }
    }
}

/// How one config's value is parsed and checked.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// An integer (Kafka's INT or LONG) in `min..=max`.
    Int { min: i64, max: i64 },
    /// A number in `[0, 1]`.
    Ratio,
    /// `cleanup.policy`.
    Cleanup,
    /// `message.timestamp.type`.
    TimestampType,
    /// `true` or `false`, in any case (as Kafka's `ConfigDef` reads a
    /// BOOLEAN).
    Bool,
}

/// One config logbus understands: Kafka's name, Kafka's default (as
/// [`TopicConfig::supported`] reports it) and its rule.
#[derive(Debug)]
struct Key {
    name: &'static str,
    default: &'static str,
    rule: Rule,
}

const fn int(name: &'static str, default: &'static str, min: i64, max: i64) -> Key {
    Key {
        name,
        default,
        rule: Rule::Int { min, max },
    }
}

const I32_MAX: i64 = i32::MAX as i64;

/// The topic configs logbus understands, with Kafka's names, defaults and
/// ranges (narrower than Kafka's where logbus needs it: `segment.bytes`,
/// `segment.index.bytes` and `max.message.bytes` have logbus's own
/// minimums, `retention.bytes` takes -1 but no other negative value).
const KEYS: &[Key] = &[
    Key {
        name: "cleanup.policy",
        default: "delete",
        rule: Rule::Cleanup,
    },
    int("delete.retention.ms", "86400000", 0, i64::MAX),
    // Kafka: atLeast(1); its default, Long.MAX_VALUE, means never.
    int("flush.messages", "9223372036854775807", 1, i64::MAX),
    // Kafka: atLeast(0). 0: an fsync before every acknowledgement.
    int("flush.ms", "9223372036854775807", 0, i64::MAX),
    int("index.interval.bytes", "4096", 0, I32_MAX),
    int(
        "max.message.bytes",
        "1048588",
        crate::format::RECORD_BATCH_OVERHEAD as i64,
        I32_MAX,
    ),
    Key {
        name: "message.timestamp.type",
        default: "CreateTime",
        rule: Rule::TimestampType,
    },
    Key {
        name: "min.cleanable.dirty.ratio",
        default: "0.5",
        rule: Rule::Ratio,
    },
    int("min.compaction.lag.ms", "0", 0, i64::MAX),
    // Kafka: atLeast(1).
    int("min.insync.replicas", "1", 1, I32_MAX),
    int("retention.bytes", "-1", -1, i64::MAX),
    int("retention.ms", "604800000", -1, i64::MAX),
    int(
        "segment.bytes",
        "1073741824",
        LogConfig::MIN_SEGMENT_BYTES as i64,
        I32_MAX,
    ),
    int(
        "segment.index.bytes",
        "10485760",
        LogConfig::MIN_SEGMENT_INDEX_BYTES as i64,
        I32_MAX,
    ),
    int("segment.ms", "604800000", 1, i64::MAX),
    Key {
        name: "unclean.leader.election.enable",
        default: "false",
        rule: Rule::Bool,
    },
];

/// A parsed config value.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    Int(i64),
    Ratio(f64),
    Cleanup(CleanupPolicy),
    Timestamp(TimestampType),
    Bool(bool),
}

/// One stored setting: its canonical text and what it parsed to.
#[derive(Debug, Clone)]
struct Setting {
    /// The canonical form (trimmed, numbers re-printed, `cleanup.policy` in
    /// Kafka's spelling): what [`TopicConfig::get`] and
    /// [`TopicConfig::entries`] report and the metadata log stores.
    text: String,
    /// The parsed value.
    value: Value,
}

impl Key {
    fn find(name: &str) -> Result<&'static Key> {
        KEYS.iter().find(|k| k.name == name).ok_or_else(|| {
            Error::InvalidConfig(format!(
                "unknown topic config {name:?} (supported: {})",
                KEYS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// Parses `raw` by this key's rule (surrounding whitespace ignored, as
    /// Kafka's `ConfigDef` trims values) into its canonical text and value.
    fn parse(&self, raw: &str) -> std::result::Result<Setting, String> {
        let name = self.name;
        let bad = |why: String| format!("{name}={raw:?}: {why}");
        let trimmed = raw.trim();
        let (text, value) = match self.rule {
            Rule::Int { min, max } => {
                let range = if min == -1 {
                    format!("must be -1 (unlimited) or between 0 and {max}")
                } else {
                    format!("must be an integer between {min} and {max}")
                };
                let v: i64 = trimmed.parse().map_err(|e: std::num::ParseIntError| {
                    bad(match e.kind() {
                        IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => {
                            format!("out of range: {range}")
                        }
                        _ => format!("not an integer: {range}"),
                    })
                })?;
                if !(min..=max).contains(&v) {
                    return Err(bad(range));
                }
                (v.to_string(), Value::Int(v))
            }
            Rule::Ratio => {
                let v: f64 = trimmed
                    .parse()
                    .ok()
                    .filter(|v| (0.0..=1.0).contains(v))
                    .ok_or_else(|| bad("must be a number between 0 and 1".into()))?;
                // -0 is 0.
                let v = v + 0.0;
                (format!("{v:?}"), Value::Ratio(v))
            }
            Rule::Cleanup => {
                let policy = CleanupPolicy::parse(trimmed)
                    .ok_or_else(|| bad("expected delete, compact or compact,delete".into()))?;
                (policy.name().to_string(), Value::Cleanup(policy))
            }
            Rule::TimestampType => {
                let kind = match trimmed {
                    "CreateTime" => TimestampType::CreateTime,
                    "LogAppendTime" => TimestampType::LogAppendTime,
                    _ => return Err(bad("expected CreateTime or LogAppendTime".into())),
                };
                (trimmed.to_string(), Value::Timestamp(kind))
            }
            Rule::Bool => {
                let v = if trimmed.eq_ignore_ascii_case("true") {
                    true
                } else if trimmed.eq_ignore_ascii_case("false") {
                    false
                } else {
                    return Err(bad("expected true or false".into()));
                };
                (v.to_string(), Value::Bool(v))
            }
        };
        Ok(Setting { text, value })
    }
}

/// A topic's configuration: Kafka's topic configs, set by name or by typed
/// setters. Only the settings given are stored with the topic; the rest
/// come from the cluster's defaults ([`ClusterConfigBuilder::topic_defaults`](crate::ClusterConfigBuilder::topic_defaults)),
/// which start at Kafka's defaults.
///
/// Each value is parsed once, when it is set, and kept in a canonical form:
/// surrounding whitespace is dropped (Kafka trims values too), integers are
/// re-printed (`" 007"` is stored as `"7"`), `cleanup.policy` is spelled
/// `delete`, `compact` or `compact,delete`. [`TopicConfig::get`],
/// [`TopicConfig::entries`] (what the metadata log stores) and
/// [`TopicConfig::log_config`] all see that one value. A value that does
/// not parse or is out of range is refused by [`TopicConfig::set`].
///
/// | name | meaning | range | default |
/// |---|---|---|---|
/// | `cleanup.policy` | `delete`, `compact` (keep the latest record per key) or `compact,delete` | | `delete` |
/// | `delete.retention.ms` | how long a tombstone survives once a cleaning pass kept it | ≥ 0 | 1 day |
/// | `min.cleanable.dirty.ratio` | clean when this share of the log is uncleaned | 0 to 1 | 0.5 |
/// | `min.compaction.lag.ms` | never clean records younger than this | ≥ 0 | 0 |
/// | `retention.ms` | delete segments older than this; `-1` keeps forever | ≥ -1 | 7 days |
/// | `retention.bytes` | delete old segments above this size per partition; `-1` unlimited | ≥ -1 | `-1` |
/// | `segment.bytes` | roll a segment at this size | 128 to 2³¹−1 | 1 GiB |
/// | `segment.ms` | roll a segment this old | ≥ 1 | 7 days |
/// | `segment.index.bytes` | preallocated offset index size | 24 to 2³¹−1 | 10 MiB |
/// | `index.interval.bytes` | bytes between offset index entries (0: every batch) | 0 to 2³¹−1 | 4096 |
/// | `max.message.bytes` | largest record batch accepted | 61 to 2³¹−1 | 1048588 |
/// | `message.timestamp.type` | `CreateTime` or `LogAppendTime` | | `CreateTime` |
/// | `min.insync.replicas` | in-sync replicas an `acks=all` append needs | ≥ 1 | 1 |
/// | `unclean.leader.election.enable` | may a replica outside the ISR become leader (losing records) | `true`, `false` | `false` |
/// | `flush.messages` | an fsync at least every this many records; `1`: before every acknowledgement | ≥ 1 | never (2⁶³−1) |
/// | `flush.ms` | an fsync at least this often; `0`: before every acknowledgement | ≥ 0 | never (2⁶³−1) |
///
/// `flush.messages` and `flush.ms` of 2⁶³−1 (Kafka's default) mean never.
/// See [`FlushPolicy`] for what each promises.
///
/// Typed setters take [`Duration`]s and byte counts; those whose argument
/// can be out of range return a `Result`, checked when called and worded
/// as [`TopicConfig::set`] words the same value.
///
/// ```
/// use std::time::Duration;
/// use logbus::TopicConfig;
/// let config = TopicConfig::new()
///     .retention_time(Some(Duration::from_secs(3600)))
///     .set("segment.bytes", " 67108864 ")?;
/// assert_eq!(config.get("retention.ms"), Some("3600000"));
/// assert_eq!(config.get("segment.bytes"), Some("67108864"));
/// assert_eq!(config.log_config()?.segment_bytes(), 64 << 20);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct TopicConfig {
    values: BTreeMap<&'static str, Setting>,
}

impl PartialEq for TopicConfig {
    fn eq(&self, other: &Self) -> bool {
        // The canonical text decides the value.
        self.entries().eq(other.entries())
    }
}

impl Eq for TopicConfig {}

impl std::fmt::Debug for TopicConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.entries()).finish()
    }
}

impl TopicConfig {
    /// An empty configuration: every setting at its default.
    #[must_use]
    pub fn new() -> Self {
        TopicConfig::default()
    }

    /// Sets a config by its Kafka name. The value is parsed now and stored
    /// in its canonical form (see the type's documentation).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the config, for an unknown name or a
    /// value that does not parse or is out of range; `self` is not returned
    /// then.
    pub fn set(mut self, name: &str, value: impl Into<String>) -> Result<Self> {
        let key = Key::find(name)?;
        let setting = key.parse(&value.into()).map_err(Error::InvalidConfig)?;
        self.values.insert(key.name, setting);
        Ok(self)
    }

    /// Rebuilds a configuration stored in the metadata log, checking every
    /// entry again. Values an older version stored with surrounding
    /// whitespace load in their canonical form.
    pub(crate) fn from_stored(values: &BTreeMap<String, String>) -> Result<Self> {
        let mut config = TopicConfig::new();
        for (k, v) in values {
            config = config.set(k, v.clone())?;
        }
        Ok(config)
    }

    /// The value set for `name`, in its canonical form, if any (defaults
    /// are not reported here).
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(|s| s.text.as_str())
    }

    /// The settings given, by name, in their canonical form.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, s)| (*k, s.text.as_str()))
    }

    /// Every supported config name with Kafka's default value.
    pub fn supported() -> impl Iterator<Item = (&'static str, &'static str)> {
        KEYS.iter().map(|k| (k.name, k.default))
    }

    /// Stores a value a typed setter made that is in range whatever the
    /// argument (the setter's type admits no other).
    fn put(self, name: &'static str, text: String) -> Self {
        self.set(name, text)
            .expect("a typed setter's value is always in range")
    }

    /// `retention.ms`: sealed segments whose newest record is older than
    /// this are deleted; `None` keeps data forever (`-1`). Whole
    /// milliseconds, rounded down.
    #[must_use]
    pub fn retention_time(self, time: Option<Duration>) -> Self {
        self.put("retention.ms", time.map_or(-1, millis).to_string())
    }

    /// `retention.bytes`: the oldest sealed segments are deleted while a
    /// partition is larger; `None` is unlimited (`-1`).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a size above `i64::MAX`, worded as
    /// [`TopicConfig::set`] words it.
    pub fn retention_bytes(self, bytes: Option<u64>) -> Result<Self> {
        let v = bytes.map_or_else(|| "-1".to_string(), |b| b.to_string());
        self.set("retention.bytes", v)
    }

    /// `segment.bytes`: a segment is rolled before it grows past this.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] outside 128 to 2³¹−1, worded as
    /// [`TopicConfig::set`] words it.
    pub fn segment_bytes(self, bytes: u64) -> Result<Self> {
        self.set("segment.bytes", bytes.to_string())
    }

    /// `segment.ms`: a segment this old is rolled at the next append;
    /// `None` never rolls by time (Kafka's `Long.MAX_VALUE`). Whole
    /// milliseconds, rounded down.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] below one millisecond, worded as
    /// [`TopicConfig::set`] words it.
    pub fn segment_time(self, time: Option<Duration>) -> Result<Self> {
        self.set("segment.ms", time.map_or(i64::MAX, millis).to_string())
    }

    /// `segment.index.bytes`: the size preallocated for each index file.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] outside 24 to 2³¹−1, worded as
    /// [`TopicConfig::set`] words it.
    pub fn segment_index_bytes(self, bytes: u64) -> Result<Self> {
        self.set("segment.index.bytes", bytes.to_string())
    }

    /// `index.interval.bytes`: bytes of batches between offset index
    /// entries (0: every batch).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] above 2³¹−1, worded as [`TopicConfig::set`]
    /// words it.
    pub fn index_interval_bytes(self, bytes: u64) -> Result<Self> {
        self.set("index.interval.bytes", bytes.to_string())
    }

    /// `max.message.bytes`: the largest record batch accepted.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] outside 61 to 2³¹−1, worded as
    /// [`TopicConfig::set`] words it.
    pub fn max_message_bytes(self, bytes: u64) -> Result<Self> {
        self.set("max.message.bytes", bytes.to_string())
    }

    /// `delete.retention.ms`: how long a tombstone survives once a
    /// cleaning pass kept it. Whole milliseconds, rounded down.
    #[must_use]
    pub fn delete_retention(self, time: Duration) -> Self {
        self.put("delete.retention.ms", millis(time).to_string())
    }

    /// `min.cleanable.dirty.ratio`: the background cleaner cleans a
    /// compacted partition once this share of it is not yet cleaned.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] outside `[0, 1]` (or NaN), worded as
    /// [`TopicConfig::set`] words it.
    pub fn min_cleanable_dirty_ratio(self, ratio: f64) -> Result<Self> {
        self.set("min.cleanable.dirty.ratio", ratio.to_string())
    }

    /// `min.compaction.lag.ms`: records younger than this are never
    /// cleaned. Whole milliseconds, rounded down.
    #[must_use]
    pub fn min_compaction_lag(self, lag: Duration) -> Self {
        self.put("min.compaction.lag.ms", millis(lag).to_string())
    }

    /// `message.timestamp.type`.
    #[must_use]
    pub fn timestamp_type(self, kind: TimestampType) -> Self {
        let v = match kind {
            TimestampType::CreateTime => "CreateTime",
            TimestampType::LogAppendTime => "LogAppendTime",
        };
        self.put("message.timestamp.type", v.to_string())
    }

    /// `cleanup.policy`.
    #[must_use]
    pub fn cleanup_policy(self, policy: CleanupPolicy) -> Self {
        self.put("cleanup.policy", policy.name().to_string())
    }

    /// The flush policy, as Kafka's `flush.messages` and `flush.ms`:
    /// replaces both with the bounds `policy` sets
    /// ([`FlushPolicy::messages`] as `flush.messages`,
    /// [`FlushPolicy::interval`] in milliseconds as `flush.ms`).
    /// `log_config().flush()` gives `policy` back.
    #[must_use]
    pub fn flush(mut self, policy: FlushPolicy) -> Self {
        self.values.remove("flush.messages");
        self.values.remove("flush.ms");
        if let Some(n) = policy.messages() {
            self = self.put("flush.messages", n.to_string());
        }
        if let Some(every) = policy.interval() {
            self = self.put("flush.ms", millis(every).to_string());
        }
        self
    }

    /// This configuration with `ops` applied in order, each checked as
    /// [`TopicConfig::set`] checks a value (a [`AlterConfigOp::Delete`]
    /// of a key not set is no change). `self` is untouched.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the config, for an unknown name, a
    /// bad value, or a key named by two ops (Kafka refuses duplicate keys
    /// in one request).
    pub(crate) fn altered(&self, ops: &[AlterConfigOp]) -> Result<TopicConfig> {
        let mut seen = std::collections::BTreeSet::new();
        let mut next = self.clone();
        for op in ops {
            let key = Key::find(op.key())?;
            if !seen.insert(key.name) {
                return Err(Error::InvalidConfig(format!(
                    "{} is named by more than one change",
                    key.name
                )));
            }
            match op {
                AlterConfigOp::Set(_, value) => next = next.set(key.name, value.clone())?,
                AlterConfigOp::Delete(_) => {
                    next.values.remove(key.name);
                }
            }
        }
        Ok(next)
    }

    /// This configuration laid over `base`: settings here win.
    #[must_use]
    pub fn overlaid_on(&self, base: &TopicConfig) -> TopicConfig {
        let mut values = base.values.clone();
        values.extend(self.values.iter().map(|(k, v)| (*k, v.clone())));
        TopicConfig { values }
    }

    fn value(&self, name: &str) -> Option<Value> {
        self.values.get(name).map(|s| s.value)
    }

    fn int(&self, name: &str) -> Option<i64> {
        match self.value(name) {
            Some(Value::Int(v)) => Some(v),
            _ => None,
        }
    }

    /// A setting whose range starts at 0 or above, as `u64`.
    fn unsigned(&self, name: &str) -> Option<u64> {
        self.int(name).map(i64::unsigned_abs)
    }

    /// Kafka's `min.insync.replicas` (at least 1): an `acks=all` append
    /// is refused with [`Error::NotEnoughReplicas`] while fewer replicas
    /// are in sync. A topic's own value may not exceed its replication
    /// factor (its creation is refused); one inherited from the cluster's
    /// defaults may, as in Kafka, and then every `acks=all` append is
    /// refused while `acks=1` ones succeed.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for 0.
    pub fn min_insync_replicas(self, replicas: u16) -> Result<Self> {
        self.set("min.insync.replicas", replicas.to_string())
    }

    /// Kafka's `unclean.leader.election.enable` (default `false`): whether
    /// a replica outside the ISR may be elected leader when no in-sync
    /// replica is left, trading acknowledged records for availability.
    /// The controller reads it when a partition has no live in-sync
    /// replica left: the first live replica then leads, with itself as
    /// the whole ISR.
    pub fn unclean_leader_election_enable(self, enable: bool) -> Self {
        self.put("unclean.leader.election.enable", enable.to_string())
    }

    /// The `unclean.leader.election.enable` in effect (false unless set).
    pub(crate) fn unclean_leader_election(&self) -> bool {
        matches!(
            self.value("unclean.leader.election.enable"),
            Some(Value::Bool(true))
        )
    }

    /// The `min.insync.replicas` in effect (1 unless set).
    pub(crate) fn min_insync(&self) -> u64 {
        self.unsigned("min.insync.replicas").unwrap_or(1)
    }

    /// The cleanup policy.
    #[must_use]
    pub fn cleanup(&self) -> CleanupPolicy {
        match self.value("cleanup.policy") {
            Some(Value::Cleanup(policy)) => policy,
            _ => CleanupPolicy::default(),
        }
    }

    /// The flush policy `flush.messages` and `flush.ms` say: `flush.ms=0`
    /// is an fsync before every acknowledgement, 2⁶³−1 (Kafka's default)
    /// is never.
    fn flush_policy(&self) -> FlushPolicy {
        let mut policy = FlushPolicy::page_cache();
        if let Some(n) = self.unsigned("flush.messages") {
            policy = policy.with_messages(n);
        }
        if let Some(ms) = self.unsigned("flush.ms") {
            // 0 ms means every append; i64::MAX means none.
            policy = policy.with_interval(Duration::from_millis(ms));
        }
        policy
    }

    /// The partition log settings this topic config means (defaults for
    /// anything not set).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] if the settings do not make a valid log
    /// configuration together (each was checked when it was set).
    pub fn log_config(&self) -> Result<LogConfig> {
        let defaults = LogConfig::default();
        let timestamp_type = match self.value("message.timestamp.type") {
            Some(Value::Timestamp(kind)) => kind,
            _ => defaults.timestamp_type(),
        };
        let ratio = match self.value("min.cleanable.dirty.ratio") {
            Some(Value::Ratio(r)) => r,
            _ => defaults.min_cleanable_dirty_ratio(),
        };
        // -1 is unlimited; every other value is in range.
        let limit = |name: &str, default: Option<u64>| match self.int(name) {
            Some(-1) => None,
            Some(v) => Some(v.unsigned_abs()),
            None => default,
        };
        let retention_ms = limit(
            "retention.ms",
            defaults.retention_ms().map(i64::unsigned_abs),
        );
        let max_message_bytes = self
            .unsigned("max.message.bytes")
            .unwrap_or(defaults.max_message_bytes());
        let policy = self.cleanup();
        LogConfig::builder()
            .compact(policy != CleanupPolicy::Delete)
            .delete(policy != CleanupPolicy::Compact)
            .delete_retention(
                self.unsigned("delete.retention.ms")
                    .map_or(defaults.delete_retention(), Duration::from_millis),
            )
            .min_cleanable_dirty_ratio(ratio)
            .min_compaction_lag(
                self.unsigned("min.compaction.lag.ms")
                    .map_or(defaults.min_compaction_lag(), Duration::from_millis),
            )
            .segment_bytes(
                self.unsigned("segment.bytes")
                    .unwrap_or(defaults.segment_bytes()),
            )
            .segment_time(
                self.unsigned("segment.ms")
                    .map_or(defaults.segment_time(), |ms| {
                        Some(Duration::from_millis(ms))
                    }),
            )
            .segment_index_bytes(
                self.unsigned("segment.index.bytes")
                    .unwrap_or(defaults.segment_index_bytes()),
            )
            .index_interval_bytes(
                self.unsigned("index.interval.bytes")
                    .unwrap_or(defaults.index_interval_bytes()),
            )
            .retention_time(retention_ms.map(Duration::from_millis))
            .retention_bytes(limit("retention.bytes", defaults.retention_bytes()))
            .max_message_bytes(max_message_bytes)
            .timestamp_type(timestamp_type)
            .flush(self.flush_policy())
            .build()
    }
}

/// The longest topic name Kafka accepts.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Checks a topic name against Kafka's rules; `internal` allows the
/// reserved `__` prefix.
pub(crate) fn validate_topic_name(name: &str, internal: bool) -> Result<()> {
    let bad = |reason: &str| {
        Err(Error::InvalidTopic {
            topic: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return bad("the name is empty");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are not allowed");
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return bad("longer than 249 characters");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return bad(&format!(
            "character {c:?} is not allowed (only ASCII letters, digits, '.', '_' and '-')"
        ));
    }
    if !internal && name.starts_with("__") {
        return bad("names starting with '__' are reserved for internal topics");
    }
    Ok(())
}

/// Kafka's collision rule: `a.b` and `a_b` would share metric names, so
/// two topics may not differ only by `.` versus `_`.
pub(crate) fn collision_key(name: &str) -> String {
    name.replace('.', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kafkas_rules() {
        for ok in ["a", "orders", "a.b_c-D9", &"x".repeat(249)] {
            validate_topic_name(ok, false).unwrap();
        }
        for bad in ["", ".", "..", "a b", "ü", "a/b", "__x", &"x".repeat(250)] {
            let err = validate_topic_name(bad, false).unwrap_err();
            assert!(matches!(err, Error::InvalidTopic { .. }), "{bad}: {err}");
        }
        validate_topic_name("__consumer_offsets", true).unwrap();
        assert_eq!(collision_key("a.b"), collision_key("a_b"));
    }

    #[test]
    fn defaults_are_kafkas_and_values_are_checked() {
        let c = TopicConfig::new().log_config().unwrap();
        assert_eq!(c, LogConfig::default());
        assert!(TopicConfig::new().set("retention.ms", "x").is_err());
        assert!(TopicConfig::new().set("retention.ms", "-2").is_err());
        assert!(TopicConfig::new().set("no.such", "1").is_err());
        assert!(
            TopicConfig::new()
                .set("cleanup.policy", "compress")
                .is_err()
        );
        assert!(
            TopicConfig::new()
                .set("cleanup.policy", "compact,compact")
                .is_err()
        );
        assert!(
            TopicConfig::new()
                .set("min.cleanable.dirty.ratio", "1.5")
                .is_err()
        );
        let compact = TopicConfig::new()
            .set("cleanup.policy", "delete, compact")
            .unwrap()
            .set("delete.retention.ms", "1000")
            .unwrap()
            .log_config()
            .unwrap();
        assert!(compact.compact() && compact.delete());
        assert_eq!(compact.delete_retention_ms(), 1000);
        let only = TopicConfig::new().cleanup_policy(CleanupPolicy::Compact);
        assert_eq!(only.cleanup(), CleanupPolicy::Compact);
        let only = only.log_config().unwrap();
        assert!(only.compact() && !only.delete());
        assert!(TopicConfig::new().set("segment.bytes", "1").is_err());
    }

    #[test]
    fn booleans_are_read_as_kafka_reads_them() {
        for (raw, canonical) in [("true", "true"), (" TRUE ", "true"), ("False", "false")] {
            let c = TopicConfig::new()
                .set("unclean.leader.election.enable", raw)
                .unwrap();
            assert_eq!(c.get("unclean.leader.election.enable"), Some(canonical));
        }
        for bad in ["yes", "1", ""] {
            assert!(
                TopicConfig::new()
                    .set("unclean.leader.election.enable", bad)
                    .is_err(),
                "{bad:?}"
            );
        }
        assert!(TopicConfig::new().set("min.insync.replicas", "0").is_err());
        assert_eq!(TopicConfig::new().min_insync(), 1);
        assert_eq!(
            TopicConfig::new()
                .min_insync_replicas(3)
                .unwrap()
                .min_insync(),
            3
        );
    }

    #[test]
    fn typed_setters_map_to_kafka_names() {
        let c = TopicConfig::new()
            .retention_time(None)
            .retention_bytes(Some(10_000))
            .unwrap()
            .flush(FlushPolicy::every_append())
            .timestamp_type(TimestampType::LogAppendTime)
            .delete_retention(Duration::from_secs(60))
            .min_compaction_lag(Duration::from_millis(1500))
            .min_cleanable_dirty_ratio(0.25)
            .unwrap()
            .segment_index_bytes(4096)
            .unwrap()
            .index_interval_bytes(0)
            .unwrap()
            .max_message_bytes(2048)
            .unwrap()
            .segment_time(None)
            .unwrap()
            .min_insync_replicas(2)
            .unwrap()
            .unclean_leader_election_enable(true);
        assert!(TopicConfig::new().min_insync_replicas(0).is_err());
        for (name, value) in [
            ("min.insync.replicas", "2"),
            ("unclean.leader.election.enable", "true"),
            ("retention.ms", "-1"),
            ("flush.messages", "1"),
            ("delete.retention.ms", "60000"),
            ("min.compaction.lag.ms", "1500"),
            ("min.cleanable.dirty.ratio", "0.25"),
            ("segment.index.bytes", "4096"),
            ("index.interval.bytes", "0"),
            ("max.message.bytes", "2048"),
            ("segment.ms", "9223372036854775807"),
        ] {
            assert_eq!(c.get(name), Some(value), "{name}");
        }
        let log = c.log_config().unwrap();
        assert_eq!(log.retention_time(), None);
        assert_eq!(log.delete_retention(), Duration::from_secs(60));
        assert_eq!(log.min_compaction_lag(), Duration::from_millis(1500));
        assert_eq!(log.segment_index_bytes(), 4096);
        assert_eq!(log.max_message_bytes(), 2048);
        assert_eq!(log.retention_bytes(), Some(10_000));
        assert_eq!(log.flush(), FlushPolicy::every_append());
        assert_eq!(log.timestamp_type(), TimestampType::LogAppendTime);
        let interval =
            TopicConfig::new().flush(FlushPolicy::every_interval(Duration::from_millis(250)));
        assert_eq!(interval.get("flush.ms"), Some("250"));
        assert_eq!(interval.get("flush.messages"), None);
        assert_eq!(
            interval.log_config().unwrap().flush(),
            FlushPolicy::every_interval(Duration::from_millis(250))
        );
        let under = TopicConfig::new()
            .segment_bytes(8192)
            .and_then(|c| c.segment_time(Some(Duration::from_millis(5))))
            .unwrap();
        let over = TopicConfig::new()
            .segment_bytes(4096)
            .unwrap()
            .overlaid_on(&under);
        assert_eq!(over.get("segment.bytes"), Some("4096"));
        assert_eq!(over.get("segment.ms"), Some("5"));
    }

    /// A value of the right kind for `key`, and one padded with whitespace.
    fn sample(key: &Key) -> &'static str {
        match key.rule {
            Rule::Cleanup => "compact",
            Rule::TimestampType => "LogAppendTime",
            Rule::Ratio => "0.25",
            Rule::Int { .. } => "4096",
            Rule::Bool => "true",
        }
    }

    #[test]
    fn every_key_trims_and_canonicalises_its_value() {
        for key in KEYS {
            let value = sample(key);
            for padded in [
                format!(" {value}"),
                format!("{value} "),
                format!("\t {value}\n"),
                format!("{}{value}", " ".repeat(40)),
            ] {
                let c = TopicConfig::new().set(key.name, padded.clone()).unwrap();
                assert_eq!(c.get(key.name), Some(value), "{}={padded:?}", key.name);
                assert_eq!(
                    c.log_config().unwrap(),
                    TopicConfig::new()
                        .set(key.name, value)
                        .unwrap()
                        .log_config()
                        .unwrap(),
                    "{}={padded:?} means what {value:?} means",
                    key.name
                );
                let stored: BTreeMap<String, String> = c
                    .entries()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                assert_eq!(TopicConfig::from_stored(&stored).unwrap(), c);
            }
        }
        // Integers are re-printed; policies spelled as Kafka does.
        let c = TopicConfig::new()
            .set("segment.ms", "+007")
            .unwrap()
            .set("cleanup.policy", " delete , compact ")
            .unwrap()
            .set("min.cleanable.dirty.ratio", "-0")
            .unwrap()
            .set("min.cleanable.dirty.ratio", " 1 ")
            .unwrap();
        assert_eq!(c.get("segment.ms"), Some("7"));
        assert_eq!(c.get("cleanup.policy"), Some("compact,delete"));
        assert_eq!(c.get("min.cleanable.dirty.ratio"), Some("1.0"));
        assert_eq!(
            TopicConfig::new()
                .set("min.cleanable.dirty.ratio", "-0")
                .unwrap()
                .get("min.cleanable.dirty.ratio"),
            Some("0.0")
        );
    }

    #[test]
    fn the_issue_cases_mean_what_they_say() {
        // flush.messages=" 1" is every append, not ignored.
        let c = TopicConfig::new().set("flush.messages", " 1").unwrap();
        assert_eq!(c.get("flush.messages"), Some("1"));
        assert!(c.log_config().unwrap().flush().is_every_append());
        // flush.messages other than 1 is a bound of that many records.
        let c = TopicConfig::new().set("flush.messages", "100").unwrap();
        assert_eq!(c.log_config().unwrap().flush().messages(), Some(100));
        // Many spaces, then 1.
        let c = TopicConfig::new().set("retention.ms", "      1").unwrap();
        assert_eq!(c.get("retention.ms"), Some("1"));
        assert_eq!(
            c.log_config().unwrap().retention_time(),
            Some(Duration::from_millis(1))
        );
    }

    #[test]
    fn garbage_and_overflow_are_refused_naming_the_key() {
        for key in KEYS {
            let mut bad = vec!["", " ", "x", "1 2", "0x10", "\u{0}"];
            if let Rule::Int { min, max } = key.rule {
                bad.extend([
                    "1.5",
                    "9223372036854775808",
                    "-9223372036854775809",
                    "99999999999999999999",
                ]);
                let below = (i128::from(min) - 1).to_string();
                let above = (i128::from(max) + 1).to_string();
                for v in [below, above] {
                    let err = TopicConfig::new().set(key.name, v.clone()).unwrap_err();
                    assert!(
                        matches!(err, Error::InvalidConfig(_)),
                        "{}={v}: {err}",
                        key.name
                    );
                    assert!(err.to_string().contains(key.name), "{err}");
                }
                // The bounds themselves are accepted.
                for v in [min, max] {
                    let c = TopicConfig::new().set(key.name, v.to_string()).unwrap();
                    c.log_config().unwrap();
                }
            }
            if let Rule::Ratio = key.rule {
                bad.extend(["NaN", "inf", "-0.1", "1.0000001"]);
            }
            for v in bad {
                let err = TopicConfig::new().set(key.name, v).unwrap_err();
                assert!(
                    matches!(err, Error::InvalidConfig(_)),
                    "{}={v:?}: {err}",
                    key.name
                );
                assert!(
                    err.to_string().contains(key.name),
                    "{}={v:?}: {err}",
                    key.name
                );
            }
        }
    }

    #[test]
    fn typed_setters_out_of_range_fail_when_called_as_set_words_it() {
        let new = TopicConfig::new;
        // (tests/bad_input.rs row 23 covers the other setters.)
        let cases: [(Result<TopicConfig>, &str, &str); 2] = [
            (new().segment_index_bytes(8), "segment.index.bytes", "8"),
            (
                new().index_interval_bytes(1 << 31),
                "index.interval.bytes",
                "2147483648",
            ),
        ];
        for (result, name, text) in cases {
            let err = result.unwrap_err();
            assert!(matches!(err, Error::InvalidConfig(_)), "{name}: {err}");
            // The same words as `set` of the same value.
            let by_name = new().set(name, text).unwrap_err();
            assert_eq!(err.to_string(), by_name.to_string(), "{name}");
        }
        let err = new().min_cleanable_dirty_ratio(f64::NAN).unwrap_err();
        assert!(
            err.to_string().contains("min.cleanable.dirty.ratio"),
            "{err}"
        );
        // Durations cannot be out of range: beyond i64::MAX ms they
        // saturate (never), and below a millisecond they round down.
        let c = new()
            .retention_time(Some(Duration::MAX))
            .delete_retention(Duration::from_micros(1500));
        assert_eq!(c.get("retention.ms"), Some("9223372036854775807"));
        assert_eq!(c.get("delete.retention.ms"), Some("1"));
        c.log_config().unwrap();
    }

    #[test]
    fn supported_defaults_are_the_log_defaults() {
        let mut all = TopicConfig::new();
        for (name, default) in TopicConfig::supported() {
            all = all.set(name, default).unwrap();
        }
        assert_eq!(all.log_config().unwrap(), LogConfig::default());
        assert_eq!(TopicConfig::supported().count(), KEYS.len());
    }

    #[test]
    fn flush_settings_round_trip_through_the_policy() {
        let policies = [
            FlushPolicy::page_cache(),
            FlushPolicy::every_append(),
            FlushPolicy::every_messages(2),
            FlushPolicy::every_messages(i64::MAX as u64 - 1),
            FlushPolicy::every_interval(Duration::from_millis(1)),
            FlushPolicy::every_interval(Duration::from_millis(i64::MAX as u64 - 1)),
            FlushPolicy::every_messages(100).with_interval(Duration::from_secs(3)),
            FlushPolicy::every_append().with_interval(Duration::from_millis(10)),
        ];
        for policy in policies {
            let c = TopicConfig::new().flush(policy);
            assert_eq!(c.log_config().unwrap().flush(), policy, "{c:?}");
            // And back: the settings the policy gives are the same ones.
            let again = TopicConfig::new().flush(c.log_config().unwrap().flush());
            assert_eq!(again, c);
        }
        // Replacing: flush() clears what an earlier one set.
        let c = TopicConfig::new()
            .flush(FlushPolicy::every_messages(5).with_interval(Duration::from_secs(1)))
            .flush(FlushPolicy::page_cache());
        assert_eq!(c.entries().count(), 0);

        // Settings by name: both bounds, each alone, and the special values.
        let by_name = |pairs: &[(&str, &str)]| {
            let mut c = TopicConfig::new();
            for (k, v) in pairs {
                c = c.set(k, *v).unwrap();
            }
            c.log_config().unwrap().flush()
        };
        assert_eq!(
            by_name(&[("flush.messages", "10"), ("flush.ms", "500")]),
            FlushPolicy::every_messages(10).with_interval(Duration::from_millis(500))
        );
        assert_eq!(by_name(&[("flush.ms", "0")]), FlushPolicy::every_append());
        assert_eq!(
            by_name(&[("flush.messages", "10"), ("flush.ms", "0")]),
            FlushPolicy::every_append()
        );
        assert_eq!(
            by_name(&[
                ("flush.messages", "9223372036854775807"),
                ("flush.ms", "9223372036854775807")
            ]),
            FlushPolicy::page_cache()
        );
        assert!(TopicConfig::new().set("flush.messages", "0").is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(512))]

        /// Any string for any key is refused, or yields a config whose
        /// `log_config` succeeds and whose canonical value parses back to
        /// itself.
        #[test]
        fn any_value_is_refused_or_canonical(
            index in 0..KEYS.len(),
            value in proptest::prop_oneof![
                proptest::string::string_regex("[ \t]{0,3}[+-]?[0-9]{0,21}[ \t]{0,3}").unwrap(),
                proptest::string::string_regex("[ ]{0,2}[-+0-9.eE]{0,8}[ ]{0,2}").unwrap(),
                proptest::string::string_regex("[ ]{0,2}(delete|compact)?([ ]?,[ ]?(delete|compact))?[ ]{0,2}").unwrap(),
                proptest::string::string_regex("[ ]{0,2}(CreateTime|LogAppendTime|createtime)[ ]{0,2}").unwrap(),
                proptest::prelude::any::<String>(),
            ],
        ) {
            let name = KEYS[index].name;
            if let Ok(c) = TopicConfig::new().set(name, value.clone()) {
                c.log_config().unwrap();
                let canonical = c.get(name).unwrap().to_string();
                let again = TopicConfig::new().set(name, canonical.clone()).unwrap();
                proptest::prop_assert_eq!(again.get(name), Some(canonical.as_str()));
                proptest::prop_assert_eq!(&again, &c);
                proptest::prop_assert_eq!(again.log_config().unwrap(), c.log_config().unwrap());
                // Whitespace never changes the meaning.
                let padded = TopicConfig::new().set(name, format!(" {value}\t")).unwrap();
                proptest::prop_assert_eq!(&padded, &c);
            }
        }
    }
}
