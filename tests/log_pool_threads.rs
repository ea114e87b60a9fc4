//! The logs of a cluster share `background.threads` scheduler threads:
//! the number of `logbus-log*` threads does not grow with the partitions.
//!
//! This file holds one test so that it runs alone in its process and no
//! other test's threads are counted.

use std::collections::BTreeMap;

use logbus::{Cluster, ClusterConfig, NewTopic, OffsetAndMetadata, TopicPartition};

/// Threads of this process whose name starts with `prefix`.
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end().starts_with(prefix))
        .count()
}

#[test]
fn a_cluster_runs_a_fixed_number_of_log_threads_whatever_its_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let config = ClusterConfig::builder()
        .background_threads(3)
        .build()
        .unwrap();
    let cluster = Cluster::open(dir.path(), config).unwrap();
    // The pool's three, and at most one private thread for the metadata
    // log (which may start after the open returns).
    let expected = 3..=4;
    let at_open = threads_named("logbus-log");
    assert!(expected.contains(&at_open), "{at_open} log threads at open");

    cluster.create_topic(NewTopic::new("wide", 60)).unwrap();
    let mut offsets = BTreeMap::new();
    offsets.insert(TopicPartition::new("wide", 7), OffsetAndMetadata::new(1));
    // The first commit creates __consumer_offsets and its 50 partitions.
    cluster.alter_group_offsets("g", &offsets).unwrap();
    assert_eq!(
        cluster
            .describe_topic("__consumer_offsets")
            .unwrap()
            .partitions
            .len(),
        50
    );
    let after = threads_named("logbus-log");
    assert!(
        expected.contains(&after),
        "110 partitions added log threads: {after}"
    );

    cluster.close().unwrap();
}
