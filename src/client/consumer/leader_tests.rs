//! A consumer of a cluster of several brokers moves its partitions'
//! watches to their new leaders, so that appends there wake its polls.

use std::time::Duration;

use crate::format::BatchBuilder;
use crate::{
    Cluster, ClusterConfig, Compression, Consumer, ConsumerConfig, NewTopic, TopicPartition,
};

/// Appends one record to partition 0 of `t` (at its leader) and returns
/// whether the consumer's waker was woken by it.
fn append_wakes(cluster: &Cluster, consumer: &Consumer) -> bool {
    while consumer.waker_rx.try_recv().is_ok() {}
    let mut batch = BatchBuilder::new(Compression::None);
    batch.append(1, None, Some(b"v"), &[]);
    let partition = cluster.topic("t").unwrap().partition(0).unwrap();
    partition
        .append(&mut batch.build().unwrap().to_vec())
        .unwrap();
    consumer.waker_rx.try_recv().is_ok()
}

#[test]
fn after_a_leader_moves_appends_at_the_new_leader_wake_the_consumer() {
    let dir = tempfile::tempdir().unwrap();
    let config = ClusterConfig::builder().brokers(3).build().unwrap();
    let cluster = Cluster::open(dir.path(), config).unwrap();
    cluster
        .create_topic(NewTopic::new("t", 1).replication_factor(3))
        .unwrap();
    let leader = |cluster: &Cluster| cluster.describe_topic("t").unwrap().partitions[0].leader;
    let mut consumer = Consumer::new(&cluster, ConsumerConfig::default()).unwrap();
    consumer.assign(&[TopicPartition::new("t", 0)]).unwrap();
    assert!(
        append_wakes(&cluster, &consumer),
        "watched at the first leader"
    );

    // A controlled shutdown moves the leadership before it returns.
    let first = leader(&cluster).unwrap();
    cluster.stop_broker(first).unwrap();
    let second = leader(&cluster).unwrap();
    assert_ne!(second, first);
    // The move changed the metadata, which the consumer watches.
    assert!(consumer.waker_rx.try_recv().is_ok(), "woken by the move");
    consumer.poll(Duration::ZERO).unwrap();
    assert!(
        append_wakes(&cluster, &consumer),
        "watched at the new leader"
    );

    // Another move (the first broker back as a follower, the second
    // stopped): the watch follows again.
    cluster.restart_broker(first).unwrap();
    cluster.stop_broker(second).unwrap();
    consumer.poll(Duration::ZERO).unwrap();
    assert!(
        append_wakes(&cluster, &consumer),
        "watched at the third leader"
    );
    consumer.close().unwrap();
    cluster.close().unwrap();
}
