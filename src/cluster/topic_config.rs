//! Per-topic configuration, by Kafka's names, and topic-name rules.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::{FlushPolicy, LogConfig};
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

/// The topic configs logbus understands, with Kafka's names and defaults.
const KEYS: &[(&str, &str)] = &[
    ("cleanup.policy", "delete"),
    ("delete.retention.ms", "86400000"),
    ("flush.messages", "9223372036854775807"),
    ("flush.ms", "9223372036854775807"),
    ("index.interval.bytes", "4096"),
    ("max.message.bytes", "1048588"),
    ("message.timestamp.type", "CreateTime"),
    ("min.cleanable.dirty.ratio", "0.5"),
    ("min.compaction.lag.ms", "0"),
    ("retention.bytes", "-1"),
    ("retention.ms", "604800000"),
    ("segment.bytes", "1073741824"),
    ("segment.index.bytes", "10485760"),
    ("segment.ms", "604800000"),
];

/// A topic's configuration: Kafka's topic configs, set by name or by typed
/// setters. Only the settings given are stored with the topic; the rest
/// come from the cluster's defaults ([`ClusterConfigBuilder::topic_defaults`](crate::ClusterConfigBuilder::topic_defaults)),
/// which start at Kafka's defaults.
///
/// | name | meaning | default |
/// |---|---|---|
/// | `cleanup.policy` | `delete`, `compact` (keep the latest record per key) or `compact,delete` | `delete` |
/// | `delete.retention.ms` | how long a tombstone survives once a cleaning pass kept it | 1 day |
/// | `min.cleanable.dirty.ratio` | clean when this share of the log is uncleaned | 0.5 |
/// | `min.compaction.lag.ms` | never clean records younger than this | 0 |
/// | `retention.ms` | delete segments older than this; `-1` keeps forever | 7 days |
/// | `retention.bytes` | delete old segments above this size per partition; `-1` unlimited | `-1` |
/// | `segment.bytes` | roll a segment at this size | 1 GiB |
/// | `segment.ms` | roll a segment this old | 7 days |
/// | `segment.index.bytes` | preallocated offset index size | 10 MiB |
/// | `index.interval.bytes` | bytes between offset index entries | 4096 |
/// | `max.message.bytes` | largest record batch accepted | 1048588 |
/// | `message.timestamp.type` | `CreateTime` or `LogAppendTime` | `CreateTime` |
/// | `flush.messages` | `1` fsyncs before every acknowledgement | never |
/// | `flush.ms` | fsync at this interval | never |
///
/// ```
/// use logbus::TopicConfig;
/// let config = TopicConfig::new()
///     .retention_ms(Some(3_600_000))
///     .set("segment.bytes", "67108864")?;
/// assert_eq!(config.get("retention.ms"), Some("3600000"));
/// assert_eq!(config.log_config()?.segment_bytes(), 64 << 20);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicConfig {
    values: BTreeMap<String, String>,
}

impl TopicConfig {
    /// An empty configuration: every setting at its default.
    #[must_use]
    pub fn new() -> Self {
        TopicConfig::default()
    }

    /// Sets a config by its Kafka name.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an unknown name or a value that does not
    /// parse or is out of range; `self` is not returned then.
    pub fn set(mut self, name: &str, value: impl Into<String>) -> Result<Self> {
        let value = value.into();
        check_value(name, &value)?;
        self.values.insert(name.to_string(), value);
        Ok(self)
    }

    /// Rebuilds a configuration stored in the metadata log, checking every
    /// entry again.
    pub(crate) fn from_stored(values: &BTreeMap<String, String>) -> Result<Self> {
        let mut config = TopicConfig::new();
        for (k, v) in values {
            config = config.set(k, v.clone())?;
        }
        Ok(config)
    }

    /// The value set for `name`, if any (defaults are not reported here).
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The settings given, by name.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Every supported config name with Kafka's default value.
    pub fn supported() -> impl Iterator<Item = (&'static str, &'static str)> {
        KEYS.iter().copied()
    }

    fn put(mut self, name: &str, value: String) -> Self {
        self.values.insert(name.to_string(), value);
        self
    }

    /// `retention.ms`; `None` keeps data forever.
    #[must_use]
    pub fn retention_ms(self, ms: Option<i64>) -> Self {
        self.put("retention.ms", ms.unwrap_or(-1).to_string())
    }

    /// `retention.bytes`; `None` is unlimited.
    #[must_use]
    pub fn retention_bytes(self, bytes: Option<u64>) -> Self {
        let v = bytes.map_or_else(|| "-1".to_string(), |b| b.to_string());
        self.put("retention.bytes", v)
    }

    /// `segment.bytes`.
    #[must_use]
    pub fn segment_bytes(self, bytes: u64) -> Self {
        self.put("segment.bytes", bytes.to_string())
    }

    /// `segment.ms`.
    #[must_use]
    pub fn segment_ms(self, ms: i64) -> Self {
        self.put("segment.ms", ms.to_string())
    }

    /// `max.message.bytes`.
    #[must_use]
    pub fn max_message_bytes(self, bytes: usize) -> Self {
        self.put("max.message.bytes", bytes.to_string())
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

    /// The flush policy, as Kafka's `flush.messages` / `flush.ms`:
    /// [`FlushPolicy::EveryAppend`] is `flush.messages=1`,
    /// [`FlushPolicy::Interval`] sets `flush.ms`.
    #[must_use]
    pub fn flush(mut self, policy: FlushPolicy) -> Self {
        self.values.remove("flush.messages");
        self.values.remove("flush.ms");
        match policy {
            FlushPolicy::PageCache => self,
            FlushPolicy::EveryAppend => self.put("flush.messages", "1".into()),
            FlushPolicy::Interval(d) => {
                let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1);
                self.put("flush.ms", ms.to_string())
            }
        }
    }

    /// This configuration laid over `base`: settings here win.
    #[must_use]
    pub fn overlaid_on(&self, base: &TopicConfig) -> TopicConfig {
        let mut values = base.values.clone();
        values.extend(self.values.iter().map(|(k, v)| (k.clone(), v.clone())));
        TopicConfig { values }
    }

    fn value(&self, name: &str) -> &str {
        self.get(name)
            .unwrap_or_else(|| KEYS.iter().find(|(k, _)| *k == name).map_or("", |(_, v)| v))
    }

    fn int(&self, name: &str) -> i64 {
        // Every stored value was checked by `check_value`.
        self.value(name).parse().unwrap_or(i64::MAX)
    }

    /// The cleanup policy.
    #[must_use]
    pub fn cleanup(&self) -> CleanupPolicy {
        CleanupPolicy::parse(self.value("cleanup.policy")).unwrap_or_default()
    }

    /// The partition log settings this topic config means (defaults for
    /// anything not set).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the combination is invalid (for example
    /// a `segment.bytes` below the minimum).
    pub fn log_config(&self) -> Result<LogConfig> {
        let positive = |v: i64| (v >= 0).then_some(v);
        let flush = if self.int("flush.messages") == 1 {
            FlushPolicy::EveryAppend
        } else {
            match self.int("flush.ms") {
                i64::MAX => FlushPolicy::PageCache,
                ms => FlushPolicy::Interval(Duration::from_millis(ms.unsigned_abs())),
            }
        };
        let timestamp_type = if self.value("message.timestamp.type") == "LogAppendTime" {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        };
        let policy = self.cleanup();
        LogConfig::builder()
            .compact(policy != CleanupPolicy::Delete)
            .delete(policy != CleanupPolicy::Compact)
            .delete_retention_ms(self.int("delete.retention.ms"))
            .min_cleanable_dirty_ratio(
                self.value("min.cleanable.dirty.ratio")
                    .parse()
                    .unwrap_or(0.5),
            )
            .min_compaction_lag_ms(self.int("min.compaction.lag.ms"))
            .segment_bytes(self.int("segment.bytes").unsigned_abs())
            .segment_ms(Some(self.int("segment.ms")))
            .segment_index_bytes(self.int("segment.index.bytes").unsigned_abs())
            .index_interval_bytes(self.int("index.interval.bytes").unsigned_abs())
            .retention_ms(positive(self.int("retention.ms")))
            .retention_bytes(positive(self.int("retention.bytes")).map(i64::unsigned_abs))
            .max_message_bytes(usize::try_from(self.int("max.message.bytes")).unwrap_or(usize::MAX))
            .timestamp_type(timestamp_type)
            .flush(flush)
            .build()
    }
}

/// Checks one config value by its name's rules.
fn check_value(name: &str, value: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::InvalidConfig(format!("{name}={value:?}: {why}")));
    let int = || value.trim().parse::<i64>();
    match name {
        "cleanup.policy" => match CleanupPolicy::parse(value) {
            Some(_) => Ok(()),
            None => bad("expected delete, compact or compact,delete"),
        },
        "delete.retention.ms" | "min.compaction.lag.ms" => match int() {
            Ok(v) if v >= 0 => Ok(()),
            Ok(_) => bad("must be >= 0"),
            Err(_) => bad("not an integer"),
        },
        "min.cleanable.dirty.ratio" => match value.trim().parse::<f64>() {
            Ok(v) if (0.0..=1.0).contains(&v) => Ok(()),
            _ => bad("must be a number between 0 and 1"),
        },
        "message.timestamp.type" => match value {
            "CreateTime" | "LogAppendTime" => Ok(()),
            _ => bad("expected CreateTime or LogAppendTime"),
        },
        "retention.ms" | "retention.bytes" => match int() {
            Ok(v) if v >= -1 => Ok(()),
            Ok(_) => bad("must be -1 (unlimited) or >= 0"),
            Err(_) => bad("not an integer"),
        },
        "segment.bytes" => match int() {
            Ok(v) if v >= LogConfig::MIN_SEGMENT_BYTES as i64 && v <= i64::from(i32::MAX) => Ok(()),
            Ok(_) => bad("must be between 128 and 2147483647"),
            Err(_) => bad("not an integer"),
        },
        "segment.index.bytes" => match int() {
            Ok(v) if v >= LogConfig::MIN_SEGMENT_INDEX_BYTES as i64 && v <= i64::from(i32::MAX) => {
                Ok(())
            }
            Ok(_) => bad("must be between 24 and 2147483647"),
            Err(_) => bad("not an integer"),
        },
        "segment.ms" | "flush.ms" | "flush.messages" => match int() {
            Ok(v) if v >= 1 => Ok(()),
            Ok(_) => bad("must be >= 1"),
            Err(_) => bad("not an integer"),
        },
        "index.interval.bytes" => match int() {
            Ok(v) if (0..=i64::from(i32::MAX)).contains(&v) => Ok(()),
            Ok(_) => bad("must be >= 0"),
            Err(_) => bad("not an integer"),
        },
        "max.message.bytes" => match int() {
            Ok(v) if (61..=i64::from(i32::MAX)).contains(&v) => Ok(()),
            Ok(_) => bad("must be between 61 (one empty batch) and 2147483647"),
            Err(_) => bad("not an integer"),
        },
        _ => Err(Error::InvalidConfig(format!(
            "unknown topic config {name:?} (supported: {})",
            KEYS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
        ))),
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
    fn typed_setters_map_to_kafka_names() {
        let c = TopicConfig::new()
            .retention_ms(None)
            .retention_bytes(Some(10_000))
            .flush(FlushPolicy::EveryAppend)
            .timestamp_type(TimestampType::LogAppendTime);
        assert_eq!(c.get("retention.ms"), Some("-1"));
        let log = c.log_config().unwrap();
        assert_eq!(log.retention_ms(), None);
        assert_eq!(log.retention_bytes(), Some(10_000));
        assert_eq!(log.flush(), FlushPolicy::EveryAppend);
        assert_eq!(log.timestamp_type(), TimestampType::LogAppendTime);
        let interval = TopicConfig::new().flush(FlushPolicy::Interval(Duration::from_millis(250)));
        assert_eq!(
            interval.log_config().unwrap().flush(),
            FlushPolicy::Interval(Duration::from_millis(250))
        );
        let over = TopicConfig::new()
            .segment_bytes(4096)
            .overlaid_on(&TopicConfig::new().segment_bytes(8192).segment_ms(5));
        assert_eq!(over.get("segment.bytes"), Some("4096"));
        assert_eq!(over.get("segment.ms"), Some("5"));
    }
}
