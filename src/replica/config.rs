//! [`ReplicaConfig`]: the replication settings of one broker's
//! [`ReplicaManager`](super::ReplicaManager), with Kafka's names and
//! defaults.

use std::sync::Arc;

use crate::clock::{Clock, SystemClock};

/// How a broker replicates: Kafka's `replica.*` broker settings, and the
/// cluster's clock, on which every replication deadline is measured.
#[derive(Debug, Clone)]
pub(crate) struct ReplicaConfig {
    /// `replica.lag.time.max.ms`: a follower that has not caught up with
    /// its leader's log end for this long leaves the ISR (default 30 s).
    pub(crate) lag_time_max_ms: i64,
    /// `replica.fetch.wait.max.ms`: how long an idle follower's fetcher
    /// waits for the leader's news before it fetches again anyway
    /// (default 500 ms).
    pub(crate) fetch_wait_max_ms: i64,
    /// `replica.fetch.max.bytes`: the most bytes one partition's fetch
    /// returns (at least one batch; default 1 MiB).
    pub(crate) fetch_max_bytes: usize,
    /// How long an `acks=all` append waits for its in-sync replicas before
    /// it fails with [`Error::Timeout`](crate::Error::Timeout): the
    /// produce request's `timeout.ms` (default 30 s).
    pub(crate) ack_timeout_ms: i64,
    /// The cluster's clock.
    pub(crate) clock: Arc<dyn Clock>,
    /// The cluster's metrics, which hosted partitions count into.
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// A known bug to inject, per cluster (the cluster simulation's
    /// self-test must catch it); `None` but in that test.
    #[cfg(test)]
    pub(crate) injected_bug: Option<InjectedBug>,
}

/// A known replication bug a test can inject into one cluster's replica
/// managers (through `ClusterConfig::injected_bug`), so that the cluster
/// simulation shows it catches it.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InjectedBug {
    /// `acks=all` is acknowledged as soon as the leader appended, without
    /// waiting for the in-sync replicas.
    AckBeforeReplication,
    /// Consumers' fetches read up to the leader's log end, not below the
    /// high watermark.
    ReadPastHighWatermark,
}

impl ReplicaConfig {
    /// Kafka's defaults, on `clock`.
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Self {
        ReplicaConfig {
            lag_time_max_ms: 30_000,
            fetch_wait_max_ms: 500,
            fetch_max_bytes: 1 << 20,
            ack_timeout_ms: 30_000,
            clock,
            metrics: Arc::new(crate::metrics::Metrics::new()),
            #[cfg(test)]
            injected_bug: None,
        }
    }
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig::new(Arc::new(SystemClock))
    }
}
