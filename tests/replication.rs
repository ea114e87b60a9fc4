//! Replication across brokers in one process: a topic of replication
//! factor 3 on 3 brokers is copied to every replica by the followers'
//! fetcher threads; `acks=all` completes once the in-sync replicas have a
//! batch; consumers read below the high watermark; after a clean close
//! every replica's segment files are the same, byte for byte, and every
//! broker wrote its `replication-offset-checkpoint` in Kafka's format.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use logbus::{
    Acks, Cluster, ClusterConfig, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, TopicConfig, TopicPartition,
};

const PARTITIONS: u32 = 3;
const RECORDS: u64 = 600;

/// The segment (`.log`) files and leader epoch file of a partition
/// directory, by name.
fn log_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".log") || n == "leader-epoch-checkpoint")
        .map(|n| {
            let bytes = std::fs::read(dir.join(&n)).unwrap();
            (n, bytes)
        })
        .collect()
}

/// A `replication-offset-checkpoint` file: version 0, a count, then
/// `topic partition offset` lines.
fn read_replication_checkpoint(path: &Path) -> BTreeMap<(String, u32), u64> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("0"), "version 0: {text:?}");
    let count: usize = lines.next().unwrap().parse().unwrap();
    let entries: BTreeMap<(String, u32), u64> = lines
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            assert_eq!(fields.len(), 3, "{line:?}");
            (
                (fields[0].to_string(), fields[1].parse().unwrap()),
                fields[2].parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(entries.len(), count, "{text:?}");
    entries
}

#[test]
fn three_brokers_replicate_acks_all_and_close_with_identical_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let config = ClusterConfig::builder().brokers(3).build().unwrap();
    let cluster = Cluster::open(dir.path(), config).unwrap();
    let topic_config = TopicConfig::new()
        .min_insync_replicas(2)
        .unwrap()
        .segment_bytes(16 * 1024)
        .unwrap();
    cluster
        .create_topic(
            NewTopic::new("t", PARTITIONS)
                .replication_factor(3)
                .config(topic_config),
        )
        .unwrap();

    let producer = Producer::new(
        &cluster,
        ProducerConfig::builder().acks(Acks::All).build().unwrap(),
    )
    .unwrap();
    let futures: Vec<_> = (0..RECORDS)
        .map(|i| {
            producer
                .send(ProducerRecord::new("t", format!("value-{i:04}")).with_key(format!("k{i}")))
                .unwrap()
        })
        .collect();
    for future in futures {
        future.wait().unwrap();
    }
    producer.close().unwrap();

    // Every acknowledged record is on every in-sync replica, so below the
    // high watermark, which describe reports.
    let described = cluster.describe_topic("t").unwrap();
    let mut committed = 0;
    for p in &described.partitions {
        assert_eq!(p.replicas.len(), 3);
        assert_eq!(p.isr.len(), 3, "{p:?}");
        assert_eq!(p.high_watermark, p.log_end_offset, "{p:?}");
        committed += p.high_watermark;
    }
    assert_eq!(committed, RECORDS);

    let consumer_config = ConsumerConfig::builder()
        .auto_offset_reset(OffsetReset::Earliest)
        .build()
        .unwrap();
    let mut consumer = Consumer::new(&cluster, consumer_config).unwrap();
    let all: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|p| TopicPartition::new("t", p))
        .collect();
    consumer.assign(&all).unwrap();
    let mut values = Vec::new();
    while (values.len() as u64) < RECORDS {
        let records = consumer.poll(Duration::from_secs(30)).unwrap();
        assert!(!records.is_empty(), "records stopped at {}", values.len());
        values.extend(
            records
                .iter()
                .map(|r| String::from_utf8(r.value().unwrap().to_vec()).unwrap()),
        );
    }
    values.sort();
    let expected: Vec<String> = (0..RECORDS).map(|i| format!("value-{i:04}")).collect();
    assert_eq!(values, expected);
    consumer.close().unwrap();
    cluster.close().unwrap();

    let mut compared = 0;
    for p in 0..PARTITIONS {
        let name = format!("t-{p}");
        let leader = log_files(&dir.path().join("broker-0").join(&name));
        assert!(leader.keys().any(|n| n.ends_with(".log")), "{leader:?}");
        for broker in 1..3 {
            let replica = log_files(&dir.path().join(format!("broker-{broker}")).join(&name));
            assert!(
                replica == leader,
                "{name} on broker {broker} differs from broker 0"
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 2 * PARTITIONS);
    // Every broker checkpointed the high watermarks of the partitions it
    // hosts, at most the log end; the leaders' are the log end.
    for broker in 0..3 {
        let path = dir
            .path()
            .join(format!("broker-{broker}"))
            .join("replication-offset-checkpoint");
        let entries = read_replication_checkpoint(&path);
        for p in &described.partitions {
            let hw = entries[&("t".to_string(), p.partition)];
            assert!(hw <= p.log_end_offset);
            if p.leader == Some(broker) {
                assert_eq!(
                    hw, p.log_end_offset,
                    "broker {broker} leads {}",
                    p.partition
                );
            }
        }
    }

    // A reopen serves everything again.
    let config = ClusterConfig::builder().brokers(3).build().unwrap();
    let cluster = Cluster::open(dir.path(), config).unwrap();
    let again = cluster.describe_topic("t").unwrap();
    for (before, after) in described.partitions.iter().zip(&again.partitions) {
        assert_eq!(after.log_end_offset, before.log_end_offset);
        assert_eq!(after.high_watermark, before.high_watermark, "restored");
    }
    cluster.close().unwrap();
}

/// A reassignment's target is in the metadata log: a cluster closed in
/// the middle of one (the new replicas hosted but, their fetching paused,
/// not caught up) reopens with the move under way, and completes it by
/// itself: the new replicas catch up, the leadership switches to the
/// target's first replica, and the dropped replica's directory goes.
#[test]
fn a_reassignment_interrupted_by_a_close_completes_after_the_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let config = || ClusterConfig::builder().brokers(3).build().unwrap();
    let cluster = Cluster::open(dir.path(), config()).unwrap();
    cluster
        .create_topic(NewTopic::new("t", 1).replication_factor(1))
        .unwrap();
    let old = cluster.describe_topic("t").unwrap().partitions[0]
        .leader
        .unwrap();
    let target = vec![(old + 1) % 3, (old + 2) % 3];
    let producer = Producer::new(
        &cluster,
        ProducerConfig::builder().acks(Acks::All).build().unwrap(),
    )
    .unwrap();
    for i in 0..50 {
        producer
            .send(ProducerRecord::new("t", format!("value-{i:02}")))
            .unwrap()
            .wait()
            .unwrap();
    }
    producer.close().unwrap();
    for &b in &target {
        cluster.pause_fetching(b).unwrap();
    }
    let tp = TopicPartition::new("t", 0);
    cluster.reassign_partition(&tp, &target).unwrap();
    let under_way = cluster.list_partition_reassignments();
    assert_eq!(under_way, [(tp.clone(), target.clone())].into());
    let p = &cluster.describe_topic("t").unwrap().partitions[0];
    assert_eq!(p.replicas, [target[0], target[1], old]);
    assert_eq!((p.leader, p.isr.clone()), (Some(old), vec![old]));
    cluster.close().unwrap();

    let cluster = Cluster::open(dir.path(), config()).unwrap();
    // Nobody asks again: the reopened cluster resumes the move.
    let done = |c: &Cluster| c.list_partition_reassignments().is_empty();
    assert!(cluster.wait_until(Duration::from_secs(60), done));
    let p = &cluster.describe_topic("t").unwrap().partitions[0];
    assert_eq!(p.replicas, target);
    assert_eq!(p.leader, Some(target[0]));
    assert_eq!(p.log_end_offset, 50);
    assert!(!dir.path().join(format!("broker-{old}/t-0")).exists());

    let consumer_config = ConsumerConfig::builder()
        .auto_offset_reset(OffsetReset::Earliest)
        .build()
        .unwrap();
    let mut consumer = Consumer::new(&cluster, consumer_config).unwrap();
    consumer.assign(&[tp]).unwrap();
    let mut values = Vec::new();
    while values.len() < 50 {
        let records = consumer.poll(Duration::from_secs(30)).unwrap();
        assert!(!records.is_empty(), "records stopped at {}", values.len());
        values.extend(
            records
                .iter()
                .map(|r| String::from_utf8(r.value().unwrap().to_vec()).unwrap()),
        );
    }
    let expected: Vec<String> = (0..50).map(|i| format!("value-{i:02}")).collect();
    assert_eq!(values, expected);
    consumer.close().unwrap();
    cluster.close().unwrap();
}
