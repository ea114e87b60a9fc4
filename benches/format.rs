//! Benchmarks of the v2 batch format: encoding (builder + CRC) and decoding
//! (structure + CRC check, then every record) of 100-record batches with
//! 100 B and 1 KiB values, uncompressed and lz4. Throughput is in bytes of
//! record values.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use logbus::Compression;
use logbus::format::{Batch, BatchBuilder};

const RECORDS: usize = 100;

/// Mildly compressible values: a counter pattern with some variety.
fn values(size: usize) -> Vec<Vec<u8>> {
    (0..RECORDS)
        .map(|i| (0..size).map(|j| ((i * 31 + j * 7) % 97) as u8).collect())
        .collect()
}

fn build(codec: Compression, values: &[Vec<u8>]) -> bytes::Bytes {
    let mut b = BatchBuilder::new(codec);
    for (i, v) in values.iter().enumerate() {
        let key = (i as u64).to_be_bytes();
        b.append(1_700_000_000_000 + i as i64, Some(&key), Some(v), &[]);
    }
    b.build().expect("batch builds")
}

fn bench(c: &mut Criterion) {
    for size in [100usize, 1024] {
        let values = values(size);
        for codec in [Compression::None, Compression::Lz4] {
            let param = format!("{}/{}x{size}B", codec.name(), RECORDS);
            let id = BenchmarkId::from_parameter(&param);

            let mut group = c.benchmark_group("encode");
            group.throughput(Throughput::Bytes((RECORDS * size) as u64));
            group.bench_function(id.clone(), |b| {
                b.iter(|| build(codec, black_box(&values)));
            });
            group.finish();

            let bytes = build(codec, &values);
            let mut group = c.benchmark_group("decode");
            group.throughput(Throughput::Bytes((RECORDS * size) as u64));
            group.bench_function(id.clone(), |b| {
                b.iter(|| {
                    let batch = Batch::from_bytes(black_box(bytes.clone())).expect("valid");
                    let mut total = 0;
                    for r in batch.records().expect("records") {
                        total += r.expect("record").value().map_or(0, |v| v.len());
                    }
                    total
                });
            });
            group.bench_function(BenchmarkId::new("validate", &param), |b| {
                b.iter(|| {
                    let batch = Batch::from_bytes(black_box(bytes.clone())).expect("valid");
                    batch.validate_records().expect("valid records")
                });
            });
            // The record checks alone, without the CRC and header checks.
            let parsed = Batch::from_bytes(bytes.clone()).expect("valid");
            group.bench_function(BenchmarkId::new("validate_only", &param), |b| {
                b.iter(|| {
                    logbus::format::validate_batch_records(
                        black_box(parsed.as_bytes()),
                        black_box(parsed.header()),
                    )
                    .expect("valid records")
                });
            });
            group.finish();
        }
    }
}

/// Records of 100 B values in a 16 KiB batch (Kafka's default `batch.size`),
/// as `benches/log.rs` appends them: no key, no headers.
const RECORDS_16K: usize = 160;

fn build_16k(builder: &mut BatchBuilder, value: &[u8]) {
    for i in 0..RECORDS_16K {
        builder.append(1_700_000_000_000 + i as i64, None, Some(value), &[]);
    }
}

/// Building and validating a 16 KiB batch of 100 B records: the producer's
/// encoding cost and the log's per-append check. Throughput is in records.
fn bench_16k(c: &mut Criterion) {
    let value = [0x5au8; 100];
    let mut group = c.benchmark_group("16KiB-of-100B");
    group.throughput(Throughput::Elements(RECORDS_16K as u64));
    group.bench_function("build", |b| {
        b.iter(|| {
            let mut builder = BatchBuilder::new(Compression::None);
            build_16k(&mut builder, black_box(&value));
            builder.build().expect("batch builds")
        });
    });
    group.bench_function("with_capacity+build", |b| {
        b.iter(|| {
            let mut builder = BatchBuilder::with_capacity(Compression::None, 17 << 10);
            build_16k(&mut builder, black_box(&value));
            builder.build().expect("batch builds")
        });
    });
    let mut reused = BatchBuilder::with_capacity(Compression::None, 17 << 10);
    group.bench_function("clear+finish", |b| {
        b.iter(|| {
            reused.clear();
            build_16k(&mut reused, black_box(&value));
            reused.finish().expect("batch builds").len()
        });
    });
    // The floor of encoding: the same values copied into a reused buffer,
    // without record heads (a memcpy per record).
    let mut plain = Vec::with_capacity(17 << 10);
    group.bench_function("memcpy-baseline", |b| {
        b.iter(|| {
            plain.clear();
            for _ in 0..RECORDS_16K {
                plain.extend_from_slice(black_box(&value));
            }
            plain.len()
        });
    });
    let mut builder = BatchBuilder::new(Compression::None);
    build_16k(&mut builder, &value);
    let bytes = builder.build().expect("batch builds");
    group.bench_function("check+validate", |b| {
        b.iter(|| {
            let header = logbus::format::check_batch(black_box(&bytes)).expect("valid");
            logbus::format::validate_batch_records(&bytes, &header).expect("valid records")
        });
    });
    // The batch's CRC-32C alone (part of check+validate), against the
    // memcpy-baseline above: both pass over the same 16 KiB.
    group.bench_function("crc_only", |b| {
        b.iter(|| logbus::format::compute_crc(black_box(&bytes)))
    });
    let header = logbus::format::check_batch(&bytes).expect("valid");
    group.bench_function("validate_only", |b| {
        b.iter(|| {
            logbus::format::validate_batch_records(black_box(&bytes), black_box(&header))
                .expect("valid records")
        });
    });
    group.finish();
}

criterion_group!(benches, bench, bench_16k);
criterion_main!(benches);
