//! Observability: the counters and latency histograms the library keeps
//! itself, and the same values handed to the [`metrics`](https://docs.rs/metrics)
//! facade.
//!
//! A leaf module (every layer may count into it; it names no other module).
//! Each cluster owns one [`Metrics`]: relaxed atomics that back
//! [`Cluster::metrics`](crate::Cluster::metrics) with no recorder installed,
//! and facade handles registered once (per cluster, per topic, per group)
//! and cached, so that the hot paths (an append, a fetch, a poll) count
//! per batch with a few relaxed atomic adds and never look a metric up by
//! name. With no recorder installed a facade handle is a no-op.
//!
//! Names follow Kafka's where Kafka has one, in the facade's style
//! (`kafka.server:type=BrokerTopicMetrics,name=BytesInPerSec,topic=t` →
//! `logbus_bytes_in_total{topic="t"}`); the table is in [`names`].
//!
//! Cost: an append or a consumer's read adds two clock reads, six relaxed
//! atomic adds and three facade calls (no-ops without a recorder); a poll
//! one add per partition it returns records of. Against the build before,
//! `examples/perf` showed no difference beyond the shared machine's noise
//! (produce 5 M × 100 B, acks=1: 0.97× median of 7 alternating pairs;
//! consume: 1.00×).
//!
//! Facade handles are registered with the recorder in force on the thread
//! that creates them: install a global recorder before `Cluster::open`.
//! Two clusters of one process report into the same facade series (their
//! snapshots stay separate).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

/// The metric names, each with the Kafka metric it maps to.
///
/// | name | kind | labels | Kafka |
/// |---|---|---|---|
/// | `logbus_bytes_in_total` | counter | `topic` | `kafka.server:type=BrokerTopicMetrics,name=BytesInPerSec` |
/// | `logbus_records_in_total` | counter | `topic` | `kafka.server:type=BrokerTopicMetrics,name=MessagesInPerSec` |
/// | `logbus_bytes_out_total` | counter | `topic` | `kafka.server:type=BrokerTopicMetrics,name=BytesOutPerSec` |
/// | `logbus_records_out_total` | counter | `topic` | consumer `records-consumed-total` |
/// | `logbus_produce_seconds` | histogram | | `kafka.network:type=RequestMetrics,name=LocalTimeMs,request=Produce` |
/// | `logbus_fetch_seconds` | histogram | | `kafka.network:type=RequestMetrics,name=LocalTimeMs,request=Fetch` |
/// | `logbus_log_flush_seconds` | histogram | | `kafka.log:type=LogFlushStats,name=LogFlushRateAndTimeMs` |
/// | `logbus_under_replicated_partitions` | gauge | | `kafka.server:type=ReplicaManager,name=UnderReplicatedPartitions` |
/// | `logbus_isr_shrinks_total` | counter | | `kafka.server:type=ReplicaManager,name=IsrShrinksPerSec` |
/// | `logbus_isr_expands_total` | counter | | `kafka.server:type=ReplicaManager,name=IsrExpandsPerSec` |
/// | `logbus_leader_elections_total` | counter | | `kafka.controller:type=ControllerStats,name=LeaderElectionRateAndTimeMs` |
/// | `logbus_consumer_group_lag` | gauge | `group`, `topic`, `partition` | `kafka-consumer-groups --describe` LAG |
/// | `logbus_rebalances_total` | counter | `group` | consumer `rebalance-total` |
/// | `logbus_fenced_logs_total` | counter | | none (a log whose fsync failed; Kafka takes its directory offline) |
pub mod names {
    /// Record batch bytes appended by partition leaders, per topic.
    pub const BYTES_IN: &str = "logbus_bytes_in_total";
    /// Records appended by partition leaders, per topic.
    pub const RECORDS_IN: &str = "logbus_records_in_total";
    /// Record batch bytes served to consumers' fetches, per topic.
    pub const BYTES_OUT: &str = "logbus_bytes_out_total";
    /// Records returned by consumers' polls, per topic.
    pub const RECORDS_OUT: &str = "logbus_records_out_total";
    /// Time of a leader's append (one produce request), in seconds.
    pub const PRODUCE_SECONDS: &str = "logbus_produce_seconds";
    /// Time of a consumer's fetch from a partition, in seconds.
    pub const FETCH_SECONDS: &str = "logbus_fetch_seconds";
    /// Time of a log's flush (fsync of its unflushed files), in seconds.
    pub const LOG_FLUSH_SECONDS: &str = "logbus_log_flush_seconds";
    /// Partitions whose ISR is smaller than their replica set.
    pub const UNDER_REPLICATED: &str = "logbus_under_replicated_partitions";
    /// Partition changes that dropped a member from the ISR.
    pub const ISR_SHRINKS: &str = "logbus_isr_shrinks_total";
    /// Partition changes that added a member to the ISR.
    pub const ISR_EXPANDS: &str = "logbus_isr_expands_total";
    /// Partition changes that moved the leadership (to another broker or
    /// to none).
    pub const LEADER_ELECTIONS: &str = "logbus_leader_elections_total";
    /// A group's lag on a partition: log end (high watermark) minus the
    /// committed offset.
    pub const CONSUMER_GROUP_LAG: &str = "logbus_consumer_group_lag";
    /// Completed rebalances (new generations) of a group.
    pub const REBALANCES: &str = "logbus_rebalances_total";
    /// Logs fenced after a failed fsync.
    pub const FENCED_LOGS: &str = "logbus_fenced_logs_total";
}

/// Log2 buckets of a [`Histogram`]: bucket `i` holds durations of
/// `[2^i, 2^(i+1))` nanoseconds (bucket 0 also 0 ns); 2^40 ns is about 18
/// minutes, and longer durations fall in the last bucket.
const BUCKETS: usize = 41;

/// A latency histogram kept with relaxed atomics: count, sum, max and
/// log2 buckets, plus the facade's histogram handle (in seconds).
#[derive(Debug)]
pub(crate) struct Histogram {
    count: AtomicU64,
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
    facade: metrics::Histogram,
}

impl Histogram {
    fn new(name: &'static str) -> Self {
        Histogram {
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            facade: metrics::histogram!(name),
        }
    }

    /// Records the time since `start`.
    pub(crate) fn since(&self, start: Instant) {
        self.record(start.elapsed());
    }

    /// Records one duration.
    pub(crate) fn record(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
        self.buckets[bucket_of(ns)].fetch_add(1, Ordering::Relaxed);
        self.facade.record(elapsed.as_secs_f64());
    }

    fn snapshot(&self) -> LatencySummary {
        LatencySummary {
            count: self.count.load(Ordering::Relaxed),
            sum: Duration::from_nanos(self.sum_ns.load(Ordering::Relaxed)),
            max: Duration::from_nanos(self.max_ns.load(Ordering::Relaxed)),
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

fn bucket_of(ns: u64) -> usize {
    let log2 = (u64::BITS - 1).saturating_sub(ns.leading_zeros()) as usize;
    log2.min(BUCKETS - 1)
}

/// A latency distribution in a [`MetricsSnapshot`]: how many, their sum
/// and maximum, and approximate quantiles (from power-of-two buckets).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LatencySummary {
    /// How many were recorded.
    pub count: u64,
    /// Their total.
    pub sum: Duration,
    /// The longest.
    pub max: Duration,
    buckets: Vec<u64>,
}

impl LatencySummary {
    /// The mean, or zero when nothing was recorded.
    #[must_use]
    pub fn mean(&self) -> Duration {
        match u32::try_from(self.count) {
            Ok(0) => Duration::ZERO,
            Ok(n) => self.sum / n,
            Err(_) => Duration::from_nanos(
                u64::try_from(self.sum.as_nanos() / u128::from(self.count)).unwrap_or(u64::MAX),
            ),
        }
    }

    /// An upper bound of quantile `q` (0.0 to 1.0, clamped): the end of
    /// the power-of-two bucket holding it, never above [`Self::max`]; zero
    /// when nothing was recorded.
    #[must_use]
    pub fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
        // The rank of the quantile, 1-based: ceil(q * count), at least 1.
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "a rank within 1..=count, from a clamped fraction"
        )]
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let end = 1u64.checked_shl(i as u32 + 1).unwrap_or(u64::MAX);
                return Duration::from_nanos(end).min(self.max);
            }
        }
        self.max
    }
}

/// One topic's counters, shared by its partitions (each hosted partition
/// and each consumer's assignment caches an `Arc` of it).
#[derive(Debug)]
pub(crate) struct TopicStats {
    bytes_in: AtomicU64,
    records_in: AtomicU64,
    bytes_out: AtomicU64,
    records_out: AtomicU64,
    facade_bytes_in: metrics::Counter,
    facade_records_in: metrics::Counter,
    facade_bytes_out: metrics::Counter,
    facade_records_out: metrics::Counter,
    /// The cluster's produce latency.
    pub(crate) produce: Arc<Histogram>,
    /// The cluster's fetch latency.
    pub(crate) fetch: Arc<Histogram>,
}

impl TopicStats {
    fn new(topic: &str, produce: Arc<Histogram>, fetch: Arc<Histogram>) -> Self {
        let label = || [("topic", topic.to_string())];
        TopicStats {
            bytes_in: AtomicU64::new(0),
            records_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            facade_bytes_in: metrics::counter!(names::BYTES_IN, &label()),
            facade_records_in: metrics::counter!(names::RECORDS_IN, &label()),
            facade_bytes_out: metrics::counter!(names::BYTES_OUT, &label()),
            facade_records_out: metrics::counter!(names::RECORDS_OUT, &label()),
            produce,
            fetch,
        }
    }

    /// Stats that belong to no cluster (a partition state or consumer
    /// made outside one, in tests): counted, never reported.
    pub(crate) fn detached() -> Arc<Self> {
        Arc::new(TopicStats {
            bytes_in: AtomicU64::new(0),
            records_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            facade_bytes_in: metrics::Counter::noop(),
            facade_records_in: metrics::Counter::noop(),
            facade_bytes_out: metrics::Counter::noop(),
            facade_records_out: metrics::Counter::noop(),
            produce: Arc::new(Histogram::detached()),
            fetch: Arc::new(Histogram::detached()),
        })
    }

    /// A leader appended one request's batches: `bytes` and `records`.
    pub(crate) fn appended(&self, bytes: u64, records: u64) {
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
        self.records_in.fetch_add(records, Ordering::Relaxed);
        self.facade_bytes_in.increment(bytes);
        self.facade_records_in.increment(records);
    }

    /// A consumer's fetch was served `bytes`.
    pub(crate) fn served(&self, bytes: u64) {
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
        self.facade_bytes_out.increment(bytes);
    }

    /// A consumer's poll returned `records` of this topic.
    pub(crate) fn consumed(&self, records: u64) {
        self.records_out.fetch_add(records, Ordering::Relaxed);
        self.facade_records_out.increment(records);
    }

    fn snapshot(&self) -> TopicMetrics {
        TopicMetrics {
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            records_in: self.records_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            records_out: self.records_out.load(Ordering::Relaxed),
        }
    }
}

impl Histogram {
    fn detached() -> Self {
        Histogram {
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            facade: metrics::Histogram::noop(),
        }
    }
}

/// What a log counts: its flushes' time and fencing. Shared by every log
/// of a cluster (a log opened on its own has its own).
#[derive(Debug)]
pub(crate) struct LogStats {
    /// Flush (fsync) time.
    pub(crate) flush: Histogram,
    fenced: AtomicU64,
    facade_fenced: metrics::Counter,
}

impl LogStats {
    fn new() -> Self {
        LogStats {
            flush: Histogram::new(names::LOG_FLUSH_SECONDS),
            fenced: AtomicU64::new(0),
            facade_fenced: metrics::counter!(names::FENCED_LOGS),
        }
    }

    /// Stats of a log opened on its own: counted, never reported.
    pub(crate) fn detached() -> Arc<Self> {
        Arc::new(LogStats {
            flush: Histogram::detached(),
            fenced: AtomicU64::new(0),
            facade_fenced: metrics::Counter::noop(),
        })
    }

    /// A log was fenced.
    pub(crate) fn fenced(&self) {
        self.fenced.fetch_add(1, Ordering::Relaxed);
        self.facade_fenced.increment(1);
    }
}

/// A group's rebalance counter.
#[derive(Debug)]
struct GroupStats {
    rebalances: u64,
    facade: metrics::Counter,
}

/// One cluster's metrics: what [`Cluster::metrics`](crate::Cluster::metrics)
/// reports, and the facade handles behind the same values.
#[derive(Debug)]
pub(crate) struct Metrics {
    topics: RwLock<HashMap<Arc<str>, Arc<TopicStats>>>,
    produce: Arc<Histogram>,
    fetch: Arc<Histogram>,
    log: Arc<LogStats>,
    groups: Mutex<HashMap<String, GroupStats>>,
    lags: Mutex<HashMap<(String, String, u32), metrics::Gauge>>,
    leader_elections: AtomicU64,
    isr_shrinks: AtomicU64,
    isr_expands: AtomicU64,
    facade_leader_elections: metrics::Counter,
    facade_isr_shrinks: metrics::Counter,
    facade_isr_expands: metrics::Counter,
    facade_under_replicated: metrics::Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A cluster's metrics, with the facade handles registered with the
    /// recorder in force (the global one, or a thread's local one).
    pub(crate) fn new() -> Self {
        describe();
        Metrics {
            topics: RwLock::new(HashMap::new()),
            produce: Arc::new(Histogram::new(names::PRODUCE_SECONDS)),
            fetch: Arc::new(Histogram::new(names::FETCH_SECONDS)),
            log: Arc::new(LogStats::new()),
            groups: Mutex::new(HashMap::new()),
            lags: Mutex::new(HashMap::new()),
            leader_elections: AtomicU64::new(0),
            isr_shrinks: AtomicU64::new(0),
            isr_expands: AtomicU64::new(0),
            facade_leader_elections: metrics::counter!(names::LEADER_ELECTIONS),
            facade_isr_shrinks: metrics::counter!(names::ISR_SHRINKS),
            facade_isr_expands: metrics::counter!(names::ISR_EXPANDS),
            facade_under_replicated: metrics::gauge!(names::UNDER_REPLICATED),
        }
    }

    /// `topic`'s counters, created on first use (to be cached by the
    /// caller: this takes a lock).
    pub(crate) fn topic(&self, topic: &Arc<str>) -> Arc<TopicStats> {
        if let Some(stats) = self.topics.read().get(topic) {
            return stats.clone();
        }
        self.topics
            .write()
            .entry(topic.clone())
            .or_insert_with(|| {
                Arc::new(TopicStats::new(
                    topic,
                    self.produce.clone(),
                    self.fetch.clone(),
                ))
            })
            .clone()
    }

    /// The counters every log of the cluster shares.
    pub(crate) fn log(&self) -> Arc<LogStats> {
        self.log.clone()
    }

    /// Counts one partition's change: whether its leader moved and
    /// whether its ISR lost or gained members.
    pub(crate) fn partition_changed(&self, leader_moved: bool, shrunk: bool, expanded: bool) {
        if leader_moved {
            self.leader_elections.fetch_add(1, Ordering::Relaxed);
            self.facade_leader_elections.increment(1);
        }
        if shrunk {
            self.isr_shrinks.fetch_add(1, Ordering::Relaxed);
            self.facade_isr_shrinks.increment(1);
        }
        if expanded {
            self.isr_expands.fetch_add(1, Ordering::Relaxed);
            self.facade_isr_expands.increment(1);
        }
    }

    /// Sets the under-replicated partitions gauge.
    pub(crate) fn set_under_replicated(&self, partitions: u64) {
        #[expect(clippy::cast_precision_loss, reason = "a gauge is an f64")]
        self.facade_under_replicated.set(partitions as f64);
    }

    /// Counts `n` completed rebalances of `group`.
    pub(crate) fn rebalanced(&self, group: &str, n: u64) {
        let mut groups = self.groups.lock();
        let stats = groups
            .entry(group.to_string())
            .or_insert_with(|| GroupStats {
                rebalances: 0,
                facade: metrics::counter!(names::REBALANCES, "group" => group.to_string()),
            });
        stats.rebalances += n;
        stats.facade.increment(n);
    }

    /// Sets `group`'s lag gauge on `topic`-`partition`.
    pub(crate) fn set_lag(&self, group: &str, topic: &str, partition: u32, lag: u64) {
        let mut lags = self.lags.lock();
        let key = (group.to_string(), topic.to_string(), partition);
        let gauge = lags.entry(key).or_insert_with(|| {
            metrics::gauge!(
                names::CONSUMER_GROUP_LAG,
                "group" => group.to_string(),
                "topic" => topic.to_string(),
                "partition" => partition.to_string()
            )
        });
        #[expect(clippy::cast_precision_loss, reason = "a gauge is an f64")]
        gauge.set(lag as f64);
    }

    /// The counters kept so far; the caller fills in what is computed
    /// from the cluster's state (under-replicated partitions, lag).
    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let topics = self
            .topics
            .read()
            .iter()
            .map(|(name, stats)| (name.to_string(), stats.snapshot()))
            .collect();
        let groups = self
            .groups
            .lock()
            .iter()
            .map(|(name, stats)| {
                (
                    name.clone(),
                    GroupMetrics {
                        rebalances: stats.rebalances,
                        lag: BTreeMap::new(),
                    },
                )
            })
            .collect();
        MetricsSnapshot {
            topics,
            produce_latency: self.produce.snapshot(),
            fetch_latency: self.fetch.snapshot(),
            log_flush: self.log.flush.snapshot(),
            under_replicated_partitions: 0,
            isr_shrinks: self.isr_shrinks.load(Ordering::Relaxed),
            isr_expands: self.isr_expands.load(Ordering::Relaxed),
            leader_elections: self.leader_elections.load(Ordering::Relaxed),
            fenced_logs: self.log.fenced.load(Ordering::Relaxed),
            groups,
        }
    }
}

/// Describes every metric to the recorder in force (units and help text).
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        names::BYTES_IN,
        Unit::Bytes,
        "Record batch bytes appended by partition leaders (Kafka BytesInPerSec)"
    );
    describe_counter!(
        names::RECORDS_IN,
        Unit::Count,
        "Records appended by partition leaders (Kafka MessagesInPerSec)"
    );
    describe_counter!(
        names::BYTES_OUT,
        Unit::Bytes,
        "Record batch bytes served to consumers (Kafka BytesOutPerSec)"
    );
    describe_counter!(
        names::RECORDS_OUT,
        Unit::Count,
        "Records returned by consumers' polls (Kafka records-consumed-total)"
    );
    describe_histogram!(
        names::PRODUCE_SECONDS,
        Unit::Seconds,
        "Time of a leader's append (Kafka LocalTimeMs, request=Produce)"
    );
    describe_histogram!(
        names::FETCH_SECONDS,
        Unit::Seconds,
        "Time of a consumer's fetch from a partition (Kafka LocalTimeMs, request=Fetch)"
    );
    describe_histogram!(
        names::LOG_FLUSH_SECONDS,
        Unit::Seconds,
        "Time of a log flush (Kafka LogFlushRateAndTimeMs)"
    );
    describe_gauge!(
        names::UNDER_REPLICATED,
        Unit::Count,
        "Partitions whose ISR is smaller than their replica set (Kafka UnderReplicatedPartitions)"
    );
    describe_counter!(
        names::ISR_SHRINKS,
        Unit::Count,
        "ISR changes that dropped a member (Kafka IsrShrinksPerSec)"
    );
    describe_counter!(
        names::ISR_EXPANDS,
        Unit::Count,
        "ISR changes that added a member (Kafka IsrExpandsPerSec)"
    );
    describe_counter!(
        names::LEADER_ELECTIONS,
        Unit::Count,
        "Partition leadership changes (Kafka LeaderElectionRateAndTimeMs)"
    );
    describe_gauge!(
        names::CONSUMER_GROUP_LAG,
        Unit::Count,
        "Log end minus the group's committed offset, per partition"
    );
    describe_counter!(
        names::REBALANCES,
        Unit::Count,
        "Completed rebalances of a consumer group (Kafka rebalance-total)"
    );
    describe_counter!(
        names::FENCED_LOGS,
        Unit::Count,
        "Logs fenced after a failed fsync"
    );
}

/// One topic's counters in a [`MetricsSnapshot`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicMetrics {
    /// Record batch bytes appended by the partitions' leaders
    /// (`logbus_bytes_in_total`).
    pub bytes_in: u64,
    /// Records appended by the partitions' leaders, transaction markers
    /// included (`logbus_records_in_total`).
    pub records_in: u64,
    /// Record batch bytes served to consumers' fetches
    /// (`logbus_bytes_out_total`; a batch fetched twice counts twice).
    pub bytes_out: u64,
    /// Records returned by consumers' polls (`logbus_records_out_total`).
    pub records_out: u64,
}

/// One consumer group's metrics in a [`MetricsSnapshot`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupMetrics {
    /// Rebalances completed since the cluster opened
    /// (`logbus_rebalances_total`).
    pub rebalances: u64,
    /// Per partition with a committed offset: the log end (high
    /// watermark) minus that offset (`logbus_consumer_group_lag`).
    pub lag: BTreeMap<crate::types::TopicPartition, u64>,
}

/// What [`Cluster::metrics`](crate::Cluster::metrics) returns: the
/// cluster's counters since it opened, and the gauges computed now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Per topic (internal ones included), by name.
    pub topics: BTreeMap<String, TopicMetrics>,
    /// Leaders' appends (`logbus_produce_seconds`): the local time, not
    /// the wait for `acks=all` replication.
    pub produce_latency: LatencySummary,
    /// Consumers' fetches (`logbus_fetch_seconds`).
    pub fetch_latency: LatencySummary,
    /// Log flushes (`logbus_log_flush_seconds`).
    pub log_flush: LatencySummary,
    /// Partitions whose ISR is smaller than their replica set now
    /// (`logbus_under_replicated_partitions`).
    pub under_replicated_partitions: u64,
    /// Partition changes that dropped ISR members (`logbus_isr_shrinks_total`).
    pub isr_shrinks: u64,
    /// Partition changes that added ISR members (`logbus_isr_expands_total`).
    pub isr_expands: u64,
    /// Partition changes that moved the leadership
    /// (`logbus_leader_elections_total`).
    pub leader_elections: u64,
    /// Logs fenced after a failed fsync (`logbus_fenced_logs_total`).
    pub fenced_logs: u64,
    /// Consumer groups with members or committed offsets, or that
    /// rebalanced since the cluster opened.
    pub groups: BTreeMap<String, GroupMetrics>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two_of_nanoseconds() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 0);
        assert_eq!(bucket_of(2), 1);
        assert_eq!(bucket_of(3), 1);
        assert_eq!(bucket_of(1024), 10);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn a_histogram_summarises_what_it_recorded() {
        let h = Histogram::detached();
        for us in [1u64, 2, 3, 100] {
            h.record(Duration::from_micros(us));
        }
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.sum, Duration::from_micros(106));
        assert_eq!(s.max, Duration::from_micros(100));
        assert_eq!(s.mean(), Duration::from_nanos(26_500));
        // The median, 2 µs = 2000 ns, lies in [1024, 2048); the third
        // value, 3000 ns, in [2048, 4096).
        assert_eq!(s.quantile(0.5), Duration::from_nanos(2048));
        assert_eq!(s.quantile(0.75), Duration::from_nanos(4096));
        // The top bucket's end is capped by the maximum.
        assert_eq!(s.quantile(1.0), Duration::from_micros(100));
        assert_eq!(LatencySummary::default().quantile(0.5), Duration::ZERO);
        assert_eq!(LatencySummary::default().mean(), Duration::ZERO);
    }

    #[test]
    fn topics_share_one_entry_per_name_and_count_separately() {
        let m = Metrics::new();
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        m.topic(&a).appended(100, 3);
        m.topic(&a).appended(50, 2);
        m.topic(&b).served(7);
        m.topic(&b).consumed(1);
        let s = m.snapshot();
        assert_eq!((s.topics["a"].bytes_in, s.topics["a"].records_in), (150, 5));
        assert_eq!(s.topics["a"].bytes_out, 0);
        assert_eq!((s.topics["b"].bytes_out, s.topics["b"].records_out), (7, 1));
    }

    #[test]
    fn partition_changes_and_rebalances_are_counted() {
        let m = Metrics::new();
        m.partition_changed(true, true, false);
        m.partition_changed(false, false, true);
        m.rebalanced("g", 1);
        m.rebalanced("g", 2);
        m.log().fenced();
        let s = m.snapshot();
        assert_eq!(
            (
                s.leader_elections,
                s.isr_shrinks,
                s.isr_expands,
                s.fenced_logs
            ),
            (1, 1, 1, 1)
        );
        assert_eq!(s.groups["g"].rebalances, 3);
    }
}
