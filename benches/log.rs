//! Partition log throughput against plain file I/O of the same bytes.
//!
//! Each group measures logbus and, in the same run, a baseline that writes
//! or reads the same bytes with plain `std::fs` calls in the same chunk
//! sizes, so the ratio of the two medians is what to compare across these
//! shared, noisy machines:
//!
//! - `append/{100B,1KiB}`: appending pre-built 16 KiB batches (page cache
//!   only) vs `write_all` of the same batches to a fresh file.
//! - `scan`: reading the whole log with `Log::read` in 1 MiB reads
//!   (`logbus-read`: the reads alone), with CRC checks of every batch
//!   (`logbus-crc`), and with every record read as a borrowed `RecordView`
//!   (`logbus-records`), vs reading the same file with `read` in 1 MiB
//!   chunks (`plain-file`).
//! - `roll`: the 1 KiB append with 1 MiB segments (a roll every 64 batches)
//!   and retention deleting old segments as it goes, vs 1 GiB segments (no
//!   roll). It also prints the slowest single append seen with rolls, to
//!   show that creating and deleting segments does not stall appends.
//! - `small-append`: one-record batches of 100 bytes, one append each
//!   (a transaction marker, a coordinator's record, a record sent alone),
//!   vs one `write_all` of the same bytes each: the log's cost per append.
//! - `group-write/{100B,1KiB}`: writing groups of 64 batches (1 MiB) as
//!   the producer's group appends do, through the storage layer: with one
//!   vectored write of the batches where they are
//!   (`StorageFile::write_all_vectored_at`, `vectored`) vs copied into one
//!   buffer first and written with one write (`joined`, what the appends
//!   did before).

use std::hint::black_box;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use logbus::format::{BatchBuilder, Batches};
use logbus::{Compression, Log, LogConfig, OpenMode, StdStorage, Storage};

/// Bytes appended per measured iteration.
const APPEND_BYTES: usize = 32 << 20;
/// Target size of one batch, as Kafka's default `batch.size`.
const BATCH_BYTES: usize = 16 << 10;

fn build_batch(record_size: usize) -> Vec<u8> {
    let value = vec![0x5a; record_size];
    let mut builder = BatchBuilder::new(Compression::None);
    let mut i = 0i64;
    while builder.estimated_size() + record_size + 16 < BATCH_BYTES {
        builder.append(1_700_000_000_000 + i, None, Some(&value), &[]);
        i += 1;
    }
    builder.build().expect("batch").to_vec()
}

fn config() -> LogConfig {
    LogConfig::builder()
        .segment_bytes(1 << 30)
        .retention_time(None)
        .build()
        .expect("config")
}

/// The time `iters` fresh logs take to append `batch` `count` times each.
fn time_log_appends(iters: u64, batch: &[u8], count: usize) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::builder(dir.path())
            .config(config())
            .open()
            .expect("open");
        let mut batch = batch.to_vec();
        let start = Instant::now();
        for _ in 0..count {
            black_box(log.append(&mut batch, 0).expect("append"));
        }
        total += start.elapsed();
    }
    total
}

/// The baseline: the time `iters` fresh files take to `write_all` `bytes`
/// `count` times each.
fn time_plain_writes(iters: u64, bytes: &[u8], count: usize) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut file = std::fs::File::create(dir.path().join("plain")).expect("create");
        let start = Instant::now();
        for _ in 0..count {
            file.write_all(black_box(bytes)).expect("write");
        }
        total += start.elapsed();
    }
    total
}

fn bench_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    for (name, record_size) in [("100B", 100), ("1KiB", 1024)] {
        let template = build_batch(record_size);
        let batches = APPEND_BYTES / template.len();
        group.throughput(Throughput::Bytes((batches * template.len()) as u64));
        group.bench_function(format!("{name}/logbus"), |b| {
            b.iter_custom(|iters| time_log_appends(iters, &template, batches));
        });
        group.bench_function(format!("{name}/plain-file"), |b| {
            b.iter_custom(|iters| time_plain_writes(iters, &template, batches));
        });
    }
    group.finish();
}

fn bench_scan(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::builder(dir.path())
        .config(config())
        .open()
        .expect("open");
    let mut batch = build_batch(100);
    let batches = (64 << 20) / batch.len();
    for _ in 0..batches {
        log.append(&mut batch, 0).expect("append");
    }
    let total_bytes = log.size_bytes();
    let segment = dir.path().join(format!("{:020}.log", 0));

    let mut group = c.benchmark_group("scan");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Bytes(total_bytes));
    group.bench_function("logbus-read", |b| {
        b.iter(|| {
            let mut offset = 0;
            let mut bytes = 0usize;
            while offset < log.log_end_offset() {
                let read = log.read(offset, 1 << 20).expect("read");
                let records = read.records();
                bytes += records.len();
                // The last batch's next offset, from the headers alone.
                let mut at = 0;
                while let Ok(header) = logbus::format::BatchHeader::parse(&records[at..]) {
                    offset = header.next_offset() as u64;
                    at += header.total_size();
                    if at >= records.len() {
                        break;
                    }
                }
            }
            black_box(bytes)
        });
    });
    group.bench_function("logbus-records", |b| {
        b.iter(|| {
            let mut offset = 0;
            let mut sum = 0u64;
            while offset < log.log_end_offset() {
                let read = log.read(offset, 1 << 20).expect("read");
                for batch in read.batches() {
                    let batch = batch.expect("valid batch");
                    let data = batch.record_data().expect("records");
                    for record in &data {
                        let record = record.expect("valid record");
                        let value = record.value().unwrap_or_default();
                        sum = sum.wrapping_add(u64::from(value.first().copied().unwrap_or(0)));
                    }
                    offset = batch.header().next_offset() as u64;
                }
            }
            black_box(sum)
        });
    });
    group.bench_function("logbus-crc", |b| {
        b.iter(|| {
            let mut offset = 0;
            let mut bytes = 0usize;
            while offset < log.log_end_offset() {
                let read = log.read(offset, 1 << 20).expect("read");
                for batch in Batches::new(read.records().clone()) {
                    let batch = batch.expect("valid batch");
                    bytes += batch.size();
                    offset = batch.header().next_offset() as u64;
                }
            }
            black_box(bytes)
        });
    });
    group.bench_function("plain-file", |b| {
        let mut buf = vec![0u8; 1 << 20];
        b.iter(|| {
            let mut file = std::fs::File::open(&segment).expect("open");
            let mut bytes = 0usize;
            loop {
                let n = file.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                bytes += n;
            }
            black_box(bytes)
        });
    });
    group.finish();
}

fn bench_roll(c: &mut Criterion) {
    let template = build_batch(1024);
    let batches = APPEND_BYTES / template.len();
    let mut group = c.benchmark_group("roll");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Bytes((batches * template.len()) as u64));
    let mut slowest = Duration::ZERO;
    for (name, segment_bytes, retention) in [
        ("1MiB-segments", 1 << 20, Some(8 << 20)),
        ("no-roll", 1 << 30, None),
    ] {
        let config = LogConfig::builder()
            .segment_bytes(segment_bytes)
            .retention_time(None)
            .retention_bytes(retention)
            .build()
            .expect("config");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let log = Log::builder(dir.path())
                        .config(config.clone())
                        .open()
                        .expect("open");
                    let mut batch = template.clone();
                    let start = Instant::now();
                    for i in 0..batches {
                        let one = Instant::now();
                        black_box(log.append(&mut batch, 0).expect("append"));
                        if retention.is_some() {
                            slowest = slowest.max(one.elapsed());
                            if i % 256 == 0 {
                                black_box(log.enforce_retention().expect("retention"));
                            }
                        }
                    }
                    total += start.elapsed();
                }
                total
            });
        });
    }
    group.finish();
    eprintln!("roll: slowest single append with 1 MiB segments: {slowest:?}");
}

/// Batches in one group: 1 MiB of 16 KiB batches, the producer's largest.
const GROUP_BATCHES: usize = 64;

fn bench_group_write(c: &mut Criterion) {
    let mut group = c.benchmark_group("group-write");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    for (name, record_size) in [("100B", 100), ("1KiB", 1024)] {
        let template = build_batch(record_size);
        // Separate buffers, as a producer's batches are.
        let batches: Vec<Vec<u8>> = vec![template.clone(); GROUP_BATCHES];
        let group_bytes = GROUP_BATCHES * template.len();
        let groups = APPEND_BYTES / group_bytes;
        group.throughput(Throughput::Bytes((groups * group_bytes) as u64));
        for vectored in [true, false] {
            let label = if vectored { "vectored" } else { "joined" };
            group.bench_function(format!("{name}/{label}"), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    let mut joined = Vec::new();
                    for _ in 0..iters {
                        let dir = tempfile::tempdir().expect("tempdir");
                        let file = StdStorage
                            .open(&dir.path().join("group"), OpenMode::CreateNew)
                            .expect("create");
                        let start = Instant::now();
                        let mut position = 0;
                        for _ in 0..groups {
                            let pieces: Vec<&[u8]> = batches.iter().map(Vec::as_slice).collect();
                            if vectored {
                                file.write_all_vectored_at(black_box(&pieces), position)
                                    .expect("write");
                            } else {
                                joined.clear();
                                for piece in &pieces {
                                    joined.extend_from_slice(piece);
                                }
                                file.write_all_at(black_box(&joined), position)
                                    .expect("write");
                            }
                            position += group_bytes as u64;
                        }
                        total += start.elapsed();
                    }
                    total
                });
            });
        }
    }
    group.finish();
}

/// Appends of one-record batches (a transaction marker, a coordinator's
/// record, a record sent alone): the log's cost per append beside the
/// system call's, against a `write_all` of the same bytes per record.
fn bench_small_append(c: &mut Criterion) {
    const APPENDS: usize = 20_000;
    let mut group = c.benchmark_group("small-append");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    let template = {
        let mut builder = BatchBuilder::new(Compression::None);
        builder.append(1_700_000_000_000, None, Some(&[0x5a; 100]), &[]);
        builder.build().expect("batch").to_vec()
    };
    group.throughput(Throughput::Elements(APPENDS as u64));
    group.bench_function("logbus", |b| {
        b.iter_custom(|iters| time_log_appends(iters, &template, APPENDS));
    });
    group.bench_function("plain-file", |b| {
        b.iter_custom(|iters| time_plain_writes(iters, &template, APPENDS));
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_append,
    bench_scan,
    bench_roll,
    bench_group_write,
    bench_small_append
);
criterion_main!(benches);
