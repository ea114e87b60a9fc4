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
//! - `send/100B/shared-value` and `send/100B/value-per-record`: the
//!   sending thread alone: the time of `SEND_RECORDS` `send` calls (no key,
//!   an `Arc<str>` topic, handles dropped), one shared `Bytes` value or a
//!   new `Vec` per record; the sender thread appends meanwhile, and the
//!   flush after the last send is not timed. Baseline in the same group,
//!   `send/100B/encode-only`: the same records encoded into 16 KiB
//!   `BatchBuilder`s on one thread, no producer (what a send cannot avoid).
//!
//! Compare the ratio of the medians (the machines are shared and noisy);
//! records per second for 100 B records is `records / median`.

use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use logbus::format::BatchBuilder;
use logbus::{
    Acks, Cluster, ClusterConfig, Compression, NewTopic, Producer, ProducerConfig, ProducerRecord,
    TopicConfig,
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

/// Records per measured iteration of the `send` group.
const SEND_RECORDS: usize = 200_000;

/// The time of `SEND_RECORDS` sends of `value` (or, `per_record`, of a new
/// copy of it each) to a one-partition topic, acks=1.
fn send_only(value: &Bytes, per_record: bool) -> Duration {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::open(dir.path(), ClusterConfig::default()).expect("cluster");
    cluster
        .create_topic(NewTopic::new("bench", 1))
        .expect("topic");
    let config = ProducerConfig::builder()
        .acks(Acks::Leader)
        .build()
        .expect("config");
    let producer = Producer::new(&cluster, config).expect("producer");
    let topic: Arc<str> = Arc::from("bench");
    // The topic's lookup and the partition's first append, untimed.
    producer
        .send(ProducerRecord::new(&topic, value))
        .expect("send")
        .wait()
        .expect("appended");
    let start = Instant::now();
    for _ in 0..SEND_RECORDS {
        let record = if per_record {
            ProducerRecord::new(&topic, value.to_vec())
        } else {
            ProducerRecord::new(&topic, value)
        };
        drop(producer.send(black_box(record)).expect("send"));
    }
    let elapsed = start.elapsed();
    producer.flush().expect("flush");
    producer.close().expect("close");
    cluster.close().expect("close cluster");
    elapsed
}

/// The time of encoding `SEND_RECORDS` records of `value` (no key, one
/// timestamp) into 16 KiB batches.
fn encode_only(value: &Bytes) -> Duration {
    let mut builder = BatchBuilder::with_capacity(Compression::None, CHUNK + 64);
    let timestamp = 1_700_000_000_000;
    let start = Instant::now();
    for _ in 0..SEND_RECORDS {
        builder.append(timestamp, None, Some(black_box(&value[..])), &[]);
        if builder.estimated_size() >= CHUNK {
            black_box(builder.finish().expect("batch builds").len());
            builder.clear();
        }
    }
    start.elapsed()
}

fn bench_send(c: &mut Criterion) {
    let mut group = c.benchmark_group("send");
    group.sample_size(20);
    group.throughput(Throughput::Elements(SEND_RECORDS as u64));
    let value = Bytes::from(vec![0x5a_u8; 100]);
    group.bench_function("100B/shared-value", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| send_only(&value, false)).sum());
    });
    group.bench_function("100B/value-per-record", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| send_only(&value, true)).sum());
    });
    group.bench_function("100B/encode-only", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| encode_only(&value)).sum());
    });
    group.finish();
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

criterion_group!(benches, bench_produce, bench_send);
criterion_main!(benches);
