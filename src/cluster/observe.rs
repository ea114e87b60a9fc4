//! The cluster's side of observability: [`Cluster::metrics`], the gauges
//! computed from the cluster's state (under-replicated partitions, group
//! lag), and the partition changes the controller applies, counted and
//! traced.

use super::*;
use crate::metrics::MetricsSnapshot;

impl Cluster {
    /// The cluster's metrics now: per-topic bytes and records in and out,
    /// produce, fetch and flush latencies, ISR shrinks and expands, leader
    /// elections, fenced logs and rebalances since the cluster opened, and
    /// the gauges computed now (under-replicated partitions, each group's
    /// lag). Works with no `metrics` recorder installed; with one, the same
    /// values are reported under the names in
    /// [`metric_names`](crate::metric_names), and this call also sets the
    /// computed gauges there (call it before a scrape, or periodically, to
    /// keep them current).
    ///
    /// ```
    /// use logbus::{Cluster, ClusterConfig, NewTopic, Producer, ProducerConfig, ProducerRecord};
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    /// cluster.create_topic(NewTopic::new("orders", 1))?;
    /// let producer = Producer::new(&cluster, ProducerConfig::default())?;
    /// producer.send(ProducerRecord::new("orders", "created"))?.wait()?;
    /// let metrics = cluster.metrics();
    /// assert_eq!(metrics.topics["orders"].records_in, 1);
    /// assert_eq!(metrics.produce_latency.count, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn metrics(&self) -> MetricsSnapshot {
        let mut snapshot = self.inner.metrics.snapshot();
        snapshot.under_replicated_partitions = self.inner.publish_under_replicated();
        // Groups whose offsets cannot be read now (closed, a partition's
        // files failing) are left out: a snapshot does not fail.
        for group in self.list_groups() {
            let Ok(description) = self.describe_group(&group) else {
                continue;
            };
            let entry = snapshot.groups.entry(group.clone()).or_default();
            for row in description.offsets {
                if let Some(lag) = row.lag {
                    self.inner.metrics.set_lag(
                        &group,
                        &row.partition.topic,
                        row.partition.partition,
                        lag,
                    );
                    entry.lag.insert(row.partition, lag);
                }
            }
        }
        snapshot
    }
}

impl ClusterInner {
    /// Counts (and traces) the controller's change of `topic`-`partition`
    /// from `old` to `new`.
    pub(super) fn partition_changed(
        &self,
        topic: &str,
        partition: u32,
        old: &LeaderAndIsr,
        new: &LeaderAndIsr,
    ) {
        self.stats.count(old, new);
        let leader_moved = old.leader != new.leader;
        let shrunk = old.isr.iter().any(|b| !new.isr.contains(b));
        let expanded = new.isr.iter().any(|b| !old.isr.contains(b));
        self.metrics
            .partition_changed(leader_moved, shrunk, expanded);
        if leader_moved {
            tracing::info!(
                topic,
                partition,
                old_leader = ?old.leader,
                new_leader = ?new.leader,
                leader_epoch = new.leader_epoch,
                "partition leader changed"
            );
        }
        if shrunk || expanded {
            tracing::info!(
                topic,
                partition,
                old_isr = ?old.isr,
                new_isr = ?new.isr,
                "partition ISR {}",
                if shrunk { "shrank" } else { "expanded" }
            );
        }
    }

    /// Counts the partitions whose ISR is smaller than their replica set
    /// (Kafka's `UnderReplicatedPartitions`, over the whole cluster), sets
    /// the facade's gauge to it and returns it.
    pub(super) fn publish_under_replicated(&self) -> u64 {
        let topics: Vec<Arc<TopicState>> = self.topics.read().values().cloned().collect();
        let count = topics
            .iter()
            .filter(|t| !t.is_deleted())
            .map(|t| {
                t.assignments
                    .read()
                    .iter()
                    .filter(|a| a.isr.len() < a.replicas.len())
                    .count() as u64
            })
            .sum();
        self.metrics.set_under_replicated(count);
        count
    }
}
