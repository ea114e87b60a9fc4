//! Producer to consumer through a cluster: concurrent produce and consume,
//! every record exactly once and in order per partition, across a reopen.

use std::collections::BTreeMap;
use std::time::Duration;

use logbus::{
    Cluster, ClusterConfig, Compression, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, TopicPartition, partition_for_key,
};

const PARTITIONS: u32 = 4;
const RECORDS: u64 = 20_000;

fn consumer(cluster: &Cluster) -> Consumer {
    let config = ConsumerConfig::builder()
        .auto_offset_reset(OffsetReset::Earliest)
        .max_poll_records(777)
        .build()
        .unwrap();
    let mut consumer = Consumer::new(cluster, config).unwrap();
    let all: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|p| TopicPartition::new("e2e", p))
        .collect();
    consumer.assign(&all).unwrap();
    consumer
}

/// Polls until `count` records arrived; returns (key, value) per partition
/// in the order received, checking offsets are consecutive.
fn consume(consumer: &mut Consumer, count: u64) -> BTreeMap<u32, Vec<(String, u64)>> {
    let mut seen: BTreeMap<u32, Vec<(String, u64)>> = BTreeMap::new();
    let mut next_offset: BTreeMap<u32, u64> = BTreeMap::new();
    let mut total = 0;
    while total < count {
        let records = consumer.poll(Duration::from_secs(30)).unwrap();
        assert!(!records.is_empty(), "records stopped arriving at {total}");
        for r in &records {
            let expected = next_offset.entry(r.partition()).or_insert(0);
            assert_eq!(r.offset(), *expected, "offsets are dense and in order");
            *expected += 1;
            let key = String::from_utf8(r.key().unwrap().to_vec()).unwrap();
            let value: u64 = std::str::from_utf8(r.value().unwrap())
                .unwrap()
                .parse()
                .unwrap();
            seen.entry(r.partition()).or_default().push((key, value));
            total += 1;
        }
    }
    seen
}

#[test]
fn concurrent_produce_and_consume_deliver_everything_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), ClusterConfig::default()).unwrap();
    cluster
        .create_topic(NewTopic::new("e2e", PARTITIONS))
        .unwrap();
    let mut reader = consumer(&cluster);
    let producer = Producer::new(
        &cluster,
        ProducerConfig::builder()
            .compression(Compression::Lz4)
            .batch_size(4096)
            .linger(Duration::from_millis(1))
            .build()
            .unwrap(),
    )
    .unwrap();

    let received = std::thread::scope(|s| {
        let reading = s.spawn(move || consume(&mut reader, RECORDS));
        let mut handles = Vec::new();
        for i in 0..RECORDS {
            let key = format!("key-{}", i % 97);
            handles.push(
                producer
                    .send(ProducerRecord::new("e2e", i.to_string()).with_key(key))
                    .unwrap(),
            );
        }
        producer.flush().unwrap();
        for handle in handles {
            assert!(handle.wait().unwrap().offset().is_some(), "acknowledged");
        }
        reading.join().unwrap()
    });
    producer.close().unwrap();

    // Each key's records are on its murmur2 partition, in send order.
    let count = std::num::NonZeroU32::new(PARTITIONS).unwrap();
    let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (partition, records) in &received {
        for (key, value) in records {
            assert_eq!(partition_for_key(key.as_bytes(), count), *partition);
            per_key.entry(key.clone()).or_default().push(*value);
        }
    }
    for (key, values) in &per_key {
        let k: u64 = key.trim_start_matches("key-").parse().unwrap();
        let expected: Vec<u64> = (0..RECORDS).filter(|i| i % 97 == k).collect();
        assert_eq!(values, &expected, "{key}");
    }

    // After a reopen, a new consumer reads exactly the same log.
    cluster.close().unwrap();
    let cluster = Cluster::open(dir.path(), ClusterConfig::default()).unwrap();
    let again = consume(&mut consumer(&cluster), RECORDS);
    assert_eq!(again, received);
    let mut tail = consumer(&cluster);
    for p in 0..PARTITIONS {
        tail.seek_to_end(&[TopicPartition::new("e2e", p)]).unwrap();
    }
    assert!(tail.poll(Duration::ZERO).unwrap().is_empty());
}
