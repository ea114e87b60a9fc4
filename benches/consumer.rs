//! Consumer throughput against a plain read of the same bytes.
//!
//! One partition holds `RECORDS` records with 100-byte values (no key, no
//! headers), appended beforehand as ~16 KiB uncompressed batches; the data
//! is in the page cache. The batches were appended by this process, so
//! the consumer does not check their CRCs again (`check.crcs` checks each
//! batch once: its append validated it); `_cold` variants read a copy of
//! the partition that a cluster closed and opened again, whose batches no
//! one in this process checked, as a consumer reads what another process
//! wrote. Each measured iteration:
//!
//! - `consume/logbus`: a consumer (default config: `max.poll.records` 500,
//!   `check.crcs` on) assigned to the partition polls every record, touching
//!   each record's value (iterating `&records`: `ConsumerRecordRef` views),
//!   and drops the records.
//! - `consume/logbus_10k`: the same with `max.poll.records` 10000.
//! - `consume/logbus_10k_cold`: the same over the reopened copy: every
//!   batch's CRC-32C checked.
//! - `consume/logbus_10k_owned`: the same iterating `records` by value
//!   (an owned `ConsumerRecord` per record).
//! - `consume/logbus_10k_no_read_ahead` and
//!   `consume/logbus_10k_cold_no_read_ahead`: `logbus_10k` and
//!   `logbus_10k_cold` with the consumer's read-ahead off (no helper thread
//!   reading the next fetch and checking its CRCs while the records of a
//!   poll are processed): what the read-ahead gains.
//! - `consume/std_fs_read`: reads the partition's segment file with `read`
//!   in 1 MiB chunks, and touches one byte per 100.
//!
//! The `stages` group splits the read path into its stages over the
//! segment's bytes already in memory (read once with `std::fs::read`), each
//! against a `memcpy` of the same bytes in 1 MiB chunks, in the same group:
//!
//! - `stages/memcpy`: the baseline.
//! - `stages/batch_decode`: `Batches` over the bytes: each batch's header
//!   parsed and its CRC-32C checked.
//! - `stages/record_views`: the same, then each batch's records as
//!   borrowed `RecordView`s (`Batch::record_data`), touching each value.
//! - `stages/records_owned`: the same with owned `Record`s
//!   (`Batch::records`: two `Bytes` slices per record).
//! - `stages/poll`: what the consumer adds on top: `consume/logbus_10k`
//!   (the log read, the fetch, the poll and iterating `ConsumerRecordRef`s;
//!   no CRC: this process appended the batches).
//! - `stages/poll_cold`: the same over the reopened copy, every batch's
//!   CRC checked (`consume/logbus_10k_cold`).
//! - `stages/poll_cold_no_read_ahead`: the same with the consumer's
//!   read-ahead off: every CRC on the polling thread.
//!
//! After criterion's groups a summary runs each variant several times,
//! alternating, and prints the medians, records/s and the ratio to the plain
//! read (the ratio is what to compare across these shared, noisy machines).

use std::hint::black_box;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use logbus::format::{BatchBuilder, Batches};
use logbus::{
    Cluster, ClusterConfig, Compression, Consumer, ConsumerConfig, NewTopic, OffsetReset,
    TopicPartition,
};

const RECORDS: usize = 1_000_000;
const VALUE: usize = 100;
const BATCH_BYTES: usize = 16 << 10;

struct Setup {
    _dir: tempfile::TempDir,
    cluster: Cluster,
    segment: PathBuf,
    _cold_dir: tempfile::TempDir,
    /// The same records, in a cluster closed and opened again: nothing
    /// in it was checked by this process.
    cold: Cluster,
}

fn setup() -> Setup {
    let (dir, cluster, segment) = fill();
    let (cold_dir, cold, _) = fill();
    cold.close().expect("close");
    let cold = Cluster::open(cold_dir.path(), ClusterConfig::default()).expect("reopen");
    Setup {
        _dir: dir,
        cluster,
        segment,
        _cold_dir: cold_dir,
        cold,
    }
}

/// A cluster in a new directory whose partition `bench-0` holds the
/// records, appended by this process; and its segment file.
fn fill() -> (tempfile::TempDir, Cluster, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = Cluster::open(dir.path(), ClusterConfig::default()).expect("cluster");
    let partition = cluster
        .create_topic(NewTopic::new("bench", 1))
        .expect("topic")
        .partition(0)
        .expect("partition");
    let value = [0x5au8; VALUE];
    let mut appended = 0;
    while appended < RECORDS {
        let mut builder = BatchBuilder::new(Compression::None);
        let mut n = 0;
        while appended + n < RECORDS && builder.estimated_size() + VALUE + 16 < BATCH_BYTES {
            builder.append(1_700_000_000_000 + n as i64, None, Some(&value), &[]);
            n += 1;
        }
        partition
            .append(&mut builder.build().expect("batch").to_vec())
            .expect("append");
        appended += n;
    }
    let segment = dir.path().join("broker-0/bench-0/00000000000000000000.log");
    assert!(segment.exists(), "one segment holds every record");
    (dir, cluster, segment)
}

/// Consumes every record once, iterating each poll's records by reference
/// (`ConsumerRecordRef` views) or, with `owned`, by value (an owned
/// `ConsumerRecord` each: one reference count per record); returns a
/// checksum so nothing is optimized away.
fn consume(cluster: &Cluster, max_poll_records: usize, owned: bool) -> u64 {
    consume_with(cluster, max_poll_records, owned, true)
}

/// [`consume`], with the consumer's read-ahead on or off.
fn consume_with(cluster: &Cluster, max_poll_records: usize, owned: bool, read_ahead: bool) -> u64 {
    let config = ConsumerConfig::builder()
        .max_poll_records(max_poll_records)
        .auto_offset_reset(OffsetReset::Earliest)
        .build()
        .expect("config");
    let mut consumer = Consumer::new(cluster, config).expect("consumer");
    consumer.set_read_ahead(read_ahead);
    consumer
        .assign(&[TopicPartition::new("bench", 0)])
        .expect("assign");
    let mut seen = 0;
    let mut sum = 0u64;
    while seen < RECORDS {
        let records = consumer.poll(Duration::from_secs(10)).expect("poll");
        assert!(!records.is_empty(), "ran dry at {seen}");
        seen += records.count();
        if owned {
            for record in records {
                let value = record.value().expect("value");
                sum = sum.wrapping_add(u64::from(value[VALUE / 2]) + record.offset());
            }
        } else {
            for record in &records {
                let value = record.value().expect("value");
                sum = sum.wrapping_add(u64::from(value[VALUE / 2]) + record.offset());
            }
        }
    }
    sum
}

/// Reads the segment file in 1 MiB chunks, touching one byte per record.
fn plain_read(path: &Path, buf: &mut [u8]) -> u64 {
    let mut file = std::fs::File::open(path).expect("open");
    let mut sum = 0u64;
    loop {
        let n = file.read(buf).expect("read");
        if n == 0 {
            return sum;
        }
        sum = buf[..n]
            .iter()
            .step_by(VALUE)
            .fold(sum, |s, &b| s.wrapping_add(u64::from(b)));
    }
}

fn bench_consume(c: &mut Criterion) {
    let s = setup();
    let mut buf = vec![0u8; 1 << 20];
    let mut group = c.benchmark_group("consume");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(6))
        .throughput(Throughput::Elements(RECORDS as u64));
    group.bench_function("logbus", |b| {
        b.iter(|| black_box(consume(&s.cluster, 500, false)))
    });
    group.bench_function("logbus_10k", |b| {
        b.iter(|| black_box(consume(&s.cluster, 10_000, false)))
    });
    group.bench_function("logbus_10k_cold", |b| {
        b.iter(|| black_box(consume(&s.cold, 10_000, false)))
    });
    group.bench_function("logbus_10k_owned", |b| {
        b.iter(|| black_box(consume(&s.cluster, 10_000, true)))
    });
    group.bench_function("logbus_10k_no_read_ahead", |b| {
        b.iter(|| black_box(consume_with(&s.cluster, 10_000, false, false)))
    });
    group.bench_function("logbus_10k_cold_no_read_ahead", |b| {
        b.iter(|| black_box(consume_with(&s.cold, 10_000, false, false)))
    });
    group.bench_function("std_fs_read", |b| {
        b.iter(|| black_box(plain_read(&s.segment, &mut buf)))
    });
    group.finish();

    // The summary: medians of alternating runs.
    let runs = 9;
    let mut times: [Vec<Duration>; 6] = Default::default();
    for _ in 0..runs {
        let t = Instant::now();
        black_box(consume(&s.cluster, 500, false));
        times[0].push(t.elapsed());
        let t = Instant::now();
        black_box(consume(&s.cluster, 10_000, false));
        times[1].push(t.elapsed());
        let t = Instant::now();
        black_box(plain_read(&s.segment, &mut buf));
        times[2].push(t.elapsed());
        let t = Instant::now();
        black_box(consume(&s.cold, 10_000, false));
        times[3].push(t.elapsed());
        let t = Instant::now();
        black_box(consume_with(&s.cluster, 10_000, false, false));
        times[4].push(t.elapsed());
        let t = Instant::now();
        black_box(consume_with(&s.cold, 10_000, false, false));
        times[5].push(t.elapsed());
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let [a, b, p, cold, b_off, cold_off] = times.each_mut().map(median);
    let bytes = std::fs::metadata(&s.segment).expect("metadata").len();
    let rate = |d: Duration| RECORDS as f64 / d.as_secs_f64() / 1e6;
    eprintln!(
        "consume summary ({RECORDS} records of {VALUE} B, {:.0} MiB, medians of {runs} runs):",
        bytes as f64 / f64::from(1 << 20)
    );
    let row = |label: &str, d: Duration| {
        eprintln!(
            "  {label:<35}{d:?}  {:.1} M records/s  {:.1} ns/record  ratio to plain read {:.2}",
            rate(d),
            d.as_nanos() as f64 / RECORDS as f64,
            d.as_secs_f64() / p.as_secs_f64()
        );
    };
    row("logbus (max.poll.records 500):", a);
    row("logbus (max.poll.records 10000):", b);
    row("the same, every CRC checked:", cold);
    row("10000, read-ahead off:", b_off);
    row("every CRC checked, read-ahead off:", cold_off);
    eprintln!(
        "  std::fs read (1 MiB chunks):     {p:?}  {:.1} M records/s  {:.0} MiB/s",
        rate(p),
        bytes as f64 / f64::from(1 << 20) / p.as_secs_f64()
    );
}

/// Copies `bytes` into `buf` in chunks of its size, touching one byte per
/// record of each chunk.
fn memcpy(bytes: &[u8], buf: &mut [u8]) -> u64 {
    let mut sum = 0u64;
    for chunk in bytes.chunks(buf.len()) {
        let dst = &mut buf[..chunk.len()];
        dst.copy_from_slice(chunk);
        sum = dst
            .iter()
            .step_by(VALUE)
            .fold(sum, |s, &b| s.wrapping_add(u64::from(b)));
    }
    sum
}

/// The records of the batches in `bytes`: with `views`, borrowed views,
/// else owned records; `None` checks the batches only.
fn decode(bytes: &logbus::Bytes, records: Option<bool>) -> u64 {
    let mut sum = 0u64;
    for batch in Batches::new(bytes.clone()) {
        let batch = batch.expect("batch");
        match records {
            None => sum = sum.wrapping_add(batch.header().records_count as u64),
            Some(true) => {
                let data = batch.record_data().expect("records");
                for record in &data {
                    let record = record.expect("record");
                    let value = record.value().expect("value");
                    sum = sum.wrapping_add(u64::from(value[VALUE / 2]) + record.offset() as u64);
                }
            }
            Some(false) => {
                for record in batch.records().expect("records") {
                    let record = record.expect("record");
                    let value = record.value().expect("value");
                    sum = sum.wrapping_add(u64::from(value[VALUE / 2]) + record.offset() as u64);
                }
            }
        }
    }
    sum
}

fn bench_stages(c: &mut Criterion) {
    let s = setup();
    let bytes = logbus::Bytes::from(std::fs::read(&s.segment).expect("read segment"));
    let mut buf = vec![0u8; 1 << 20];
    let mut group = c.benchmark_group("stages");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(RECORDS as u64));
    group.bench_function("memcpy", |b| b.iter(|| black_box(memcpy(&bytes, &mut buf))));
    group.bench_function("batch_decode", |b| {
        b.iter(|| black_box(decode(&bytes, None)))
    });
    group.bench_function("record_views", |b| {
        b.iter(|| black_box(decode(&bytes, Some(true))))
    });
    group.bench_function("records_owned", |b| {
        b.iter(|| black_box(decode(&bytes, Some(false))))
    });
    group.bench_function("poll", |b| {
        b.iter(|| black_box(consume(&s.cluster, 10_000, false)))
    });
    group.bench_function("poll_cold", |b| {
        b.iter(|| black_box(consume(&s.cold, 10_000, false)))
    });
    group.bench_function("poll_cold_no_read_ahead", |b| {
        b.iter(|| black_box(consume_with(&s.cold, 10_000, false, false)))
    });
    group.finish();
}

criterion_group!(benches, bench_consume, bench_stages);
criterion_main!(benches);
