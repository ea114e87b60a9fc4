//! Producer throughput, end to end (send → appended), against plain file
//! writes of the same bytes.
//!
//! - `produce/{100B,1KiB}/logbus`: one thread sends `PAYLOAD_BYTES` worth of
//!   records of that value size (no key) to a one-partition topic through a
//!   `Producer` (acks=1, Kafka's default `batch.size` and `linger.ms`, page
//!   cache only), then `flush`es: the time covers encoding, batching, the
//!   sender thread's appends and the completion of every record.
//! - `produce/{100B,1KiB}/plain-file`: `write_all` of the same number of
//!   payload bytes to a fresh file in 16 KiB chunks, in the same run.
//! - `produce/100B/acks-all-idempotent` and `produce/100B/acks-all-plain`:
//!   as `logbus`, with `acks=all` (one broker), with `enable.idempotence`
//!   (producer id, epoch and sequences in every batch, checked by the log)
//!   and without it. The target: idempotent at least 0.95× plain.
//!
//! - `produce/100B/transactions-100`: as `acks-all-idempotent`, from a
//!   transactional producer committing a transaction every 100 records
//!   (the COMMIT markers and the coordinator's state writes included).
//!   The target: at least 0.7× `acks-all-idempotent`.
//!
//! Compare the ratio of the medians (the machines are shared and noisy);
//! records per second for 100 B records is `records / median`.

use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use logbus::{
    Acks, Cluster, ClusterConfig, NewTopic, Producer, ProducerConfig, ProducerRecord, TopicConfig,
};

/// Payload bytes produced per measured iteration.
const PAYLOAD_BYTES: usize = 32 << 20;
/// Chunk size of the plain-file baseline (Kafka's default `batch.size`).
const CHUNK: usize = 16 << 10;

fn produce(records: usize, value: &Bytes, config: &ProducerConfig) -> Duration {
    produce_in_transactions(records, value, config, None)
}

/// Produces `records`; with `per_transaction`, in transactions of that
/// many records (`config` must then have a `transactional.id`).
fn produce_in_transactions(
    records: usize,
    value: &Bytes,
    config: &ProducerConfig,
    per_transaction: Option<usize>,
) -> Duration {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::open(dir.path(), ClusterConfig::default()).expect("cluster");
    cluster
        .create_topic(
            NewTopic::new("bench", 1).config(
                TopicConfig::new()
                    .segment_bytes(1 << 30)
                    .unwrap()
                    .retention_time(None),
            ),
        )
        .expect("topic");
    let producer = Producer::new(&cluster, config.clone()).expect("producer");
    let start = Instant::now();
    if per_transaction.is_some() {
        producer.init_transactions().expect("init");
        producer.begin_transaction().expect("begin");
    }
    let mut last = None;
    for i in 0..records {
        if let Some(n) = per_transaction
            && i > 0
            && i % n == 0
        {
            producer.commit_transaction().expect("commit");
            producer.begin_transaction().expect("begin");
        }
        last = Some(
            producer
                .send(ProducerRecord::new("bench", value.clone()))
                .expect("send"),
        );
    }
    if per_transaction.is_some() {
        producer.commit_transaction().expect("commit");
    }
    producer.flush().expect("flush");
    let metadata = last.expect("sent").wait().expect("appended");
    let elapsed = start.elapsed();
    // Each committed transaction but the last leaves a COMMIT marker
    // before the last record.
    let markers = per_transaction.map_or(0, |n| (records - 1) / n);
    assert_eq!(metadata.offset(), Some((records + markers) as u64 - 1));
    producer.close().expect("close");
    cluster.close().expect("close cluster");
    elapsed
}

fn plain_file(bytes: usize) -> Duration {
    let dir = tempfile::tempdir().expect("tempdir");
    let chunk = vec![0x5a_u8; CHUNK];
    let mut file = std::fs::File::create(dir.path().join("plain")).expect("create");
    let start = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK);
        file.write_all(black_box(&chunk[..n])).expect("write");
        left -= n;
    }
    start.elapsed()
}

fn bench_produce(c: &mut Criterion) {
    let mut group = c.benchmark_group("produce");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    let acks_one = ProducerConfig::builder()
        .acks(Acks::Leader)
        .build()
        .expect("config");
    for (name, size) in [("100B", 100), ("1KiB", 1024)] {
        let records = PAYLOAD_BYTES / size;
        let value = Bytes::from(vec![0x5a_u8; size]);
        group.throughput(Throughput::Elements(records as u64));
        group.bench_function(format!("{name}/logbus"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| produce(records, &value, &acks_one))
                    .sum()
            });
        });
        group.bench_function(format!("{name}/plain-file"), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| plain_file(records * size)).sum());
        });
    }
    let records = PAYLOAD_BYTES / 100;
    let value = Bytes::from(vec![0x5a_u8; 100]);
    group.throughput(Throughput::Elements(records as u64));
    for (name, idempotence) in [("acks-all-idempotent", true), ("acks-all-plain", false)] {
        let config = ProducerConfig::builder()
            .acks(Acks::All)
            .enable_idempotence(idempotence)
            .build()
            .expect("config");
        group.bench_function(format!("100B/{name}"), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| produce(records, &value, &config)).sum());
        });
    }
    let transactional = ProducerConfig::builder()
        .acks(Acks::All)
        .transactional_id("bench")
        .build()
        .expect("config");
    group.bench_function("100B/transactions-100", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| produce_in_transactions(records, &value, &transactional, Some(100)))
                .sum()
        });
    });
    group.finish();
}

criterion_group!(benches, bench_produce);
criterion_main!(benches);
