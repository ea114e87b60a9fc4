//! Compaction and transactions in a cluster: on a
//! compacted topic the cleaner removes a transaction marker once no record
//! of its transaction is left and `delete.retention.ms` passed since the
//! pass that found it removable, as Kafka's cleaner does; a marker whose
//! transaction still has a record stays, and a read_committed consumer
//! sees the same latest value of every key before and after.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use logbus::{
    CleanupPolicy, Cluster, ClusterConfig, Consumer, ConsumerConfig, IsolationLevel, ManualClock,
    NewTopic, OffsetReset, Partition, Producer, ProducerConfig, ProducerRecord, TopicConfig,
    TopicPartition,
};

const TOPIC: &str = "state";
const SEGMENT_MS: u64 = 100;
const RETENTION: Duration = Duration::from_secs(10);

fn open(dir: &std::path::Path, clock: &ManualClock) -> Cluster {
    let config = ClusterConfig::builder()
        .clock(Arc::new(clock.clone()))
        .transaction_state_log_num_partitions(4)
        .build()
        .unwrap();
    let cluster = Cluster::open(dir, config).unwrap();
    let topic = TopicConfig::new()
        .cleanup_policy(CleanupPolicy::Compact)
        .segment_time(Some(Duration::from_millis(SEGMENT_MS)))
        .unwrap()
        .delete_retention(RETENTION);
    cluster
        .create_topic(NewTopic::new(TOPIC, 1).config(topic))
        .unwrap();
    cluster
}

fn record(key: &str, value: &str) -> ProducerRecord {
    ProducerRecord::new(TOPIC, value.to_string())
        .with_key(key.to_string())
        .with_partition(0)
}

/// Sends a transactional record: the commit or abort tells its outcome.
fn put(producer: &Producer, record: ProducerRecord) {
    let _outcome = producer.send(record).unwrap();
}

/// Every control batch of the partition with a record: (offset, COMMIT).
fn markers(partition: &Partition) -> Vec<(u64, bool)> {
    let mut out = Vec::new();
    let mut offset = partition.log_start_offset().unwrap();
    while offset < partition.high_watermark().unwrap() {
        let read = partition.read(offset, 1 << 20).unwrap();
        let before = offset;
        for batch in read.batches() {
            let batch = batch.unwrap();
            let h = *batch.header();
            let next = u64::try_from(h.next_offset()).unwrap();
            if next <= offset {
                continue;
            }
            offset = next;
            if h.is_control()
                && let Some(record) = batch.records().unwrap().next()
            {
                let key = record.unwrap().key().unwrap().to_vec();
                let kind = i16::from_be_bytes([key[2], key[3]]);
                out.push((u64::try_from(h.base_offset).unwrap(), kind == 1));
            }
        }
        assert!(offset > before, "a read below the high watermark moves on");
    }
    out
}

/// The latest value of each key a read_committed consumer reads from the
/// beginning.
fn committed_view(cluster: &Cluster) -> BTreeMap<String, String> {
    let config = ConsumerConfig::builder()
        .auto_offset_reset(OffsetReset::Earliest)
        .isolation_level(IsolationLevel::ReadCommitted)
        .build()
        .unwrap();
    let mut consumer = Consumer::new(cluster, config).unwrap();
    consumer.assign(&[TopicPartition::new(TOPIC, 0)]).unwrap();
    let mut view = BTreeMap::new();
    loop {
        let records = consumer.poll(Duration::ZERO).unwrap();
        if records.is_empty() {
            return view;
        }
        for r in &records {
            let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
            let key = text(r.key().unwrap());
            match r.value() {
                Some(v) => view.insert(key, text(v)),
                None => view.remove(&key),
            };
        }
    }
}

#[test]
fn markers_go_with_their_transactions_records_and_the_delete_horizon() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let cluster = open(dir.path(), &clock);
    let partition = cluster.topic(TOPIC).unwrap().partition(0).unwrap();
    let tx = Producer::new(
        &cluster,
        ProducerConfig::builder()
            .transactional_id("tx")
            .build()
            .unwrap(),
    )
    .unwrap();
    tx.init_transactions().unwrap();
    let plain = Producer::new(&cluster, ProducerConfig::default()).unwrap();

    // T1 and T2 are superseded whole below, T3 aborts, T4 keeps "k4".
    tx.begin_transaction().unwrap();
    put(&tx, record("k1", "a"));
    put(&tx, record("k2", "b"));
    tx.commit_transaction().unwrap();
    tx.begin_transaction().unwrap();
    put(&tx, record("k1", "c"));
    tx.commit_transaction().unwrap();
    tx.begin_transaction().unwrap();
    put(&tx, record("k3", "aborted"));
    // Written before the abort (else the abort drops it unsent).
    tx.flush().unwrap();
    tx.abort_transaction().unwrap();
    plain.send(record("k1", "z")).unwrap().wait().unwrap();
    plain.send(record("k2", "y")).unwrap().wait().unwrap();
    tx.begin_transaction().unwrap();
    put(&tx, record("k4", "d"));
    tx.commit_transaction().unwrap();
    plain.send(record("end", "e")).unwrap().wait().unwrap();
    // A new segment: everything above is sealed and cleanable.
    clock.advance_ms(2 * SEGMENT_MS as i64);
    plain.send(record("active", "x")).unwrap().wait().unwrap();

    let before = markers(&partition);
    assert_eq!(
        before.iter().map(|m| m.1).collect::<Vec<_>>(),
        [true, true, false, true],
        "{before:?}"
    );
    let c4 = before[3].0;
    let view = committed_view(&cluster);
    assert_eq!(view.get("k1").map(String::as_str), Some("z"));
    assert!(!view.contains_key("k3"));

    // The first pass removes the records; the next finds the markers of
    // T1..T3 removable and stamps them: they stay until the horizon.
    for _ in 0..2 {
        partition.clean().unwrap();
    }
    assert_eq!(markers(&partition), before);
    assert_eq!(committed_view(&cluster), view);

    clock.advance_ms(i64::try_from(RETENTION.as_millis()).unwrap());
    for _ in 0..2 {
        partition.clean().unwrap();
    }
    // Only T4's marker is left: its transaction has a record.
    assert_eq!(markers(&partition), [(c4, true)]);
    assert_eq!(committed_view(&cluster), view);
}
