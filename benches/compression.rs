//! Benchmarks of each compression codec on whole batches: one record whose
//! value is 64 KiB or 1 MiB of compressible text-like bytes, or 1 MiB of
//! random bytes (stored uncompressed by lz4 and snappy). `compress` builds
//! the batch (record encoding, compression, CRC); `decompress` checks the
//! batch and reads its record (CRC, decompression, record decoding). The
//! codec dominates both. Throughput is in bytes of record value.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use logbus::Compression;
use logbus::format::{Batch, BatchBuilder};

#[path = "../src/format/compression/samples.rs"]
mod samples;

use samples::{random, text as compressible};

fn build(codec: Compression, value: &[u8]) -> bytes::Bytes {
    let mut b = BatchBuilder::new(codec);
    b.append(1_700_000_000_000, None, Some(value), &[]);
    b.build().expect("batch builds")
}

fn read(bytes: &bytes::Bytes) -> usize {
    let batch = Batch::from_bytes(bytes.clone()).expect("valid");
    let mut total = 0;
    for r in batch.records().expect("records") {
        total += r.expect("record").value().map_or(0, |v| v.len());
    }
    total
}

fn bench(c: &mut Criterion) {
    let inputs = [
        ("text-64KiB", compressible(64 << 10)),
        ("text-1MiB", compressible(1 << 20)),
        ("random-1MiB", random(1 << 20)),
    ];
    for codec in [
        Compression::Lz4,
        Compression::Snappy,
        Compression::Gzip,
        Compression::Zstd,
    ] {
        for (name, value) in &inputs {
            let param = format!("{}/{name}", codec.name());
            let mut group = c.benchmark_group("compress");
            group.throughput(Throughput::Bytes(value.len() as u64));
            group.bench_function(BenchmarkId::from_parameter(&param), |b| {
                b.iter(|| build(codec, black_box(value)));
            });
            group.finish();

            let bytes = build(codec, value);
            let mut group = c.benchmark_group("decompress");
            group.throughput(Throughput::Bytes(value.len() as u64));
            group.bench_function(BenchmarkId::from_parameter(&param), |b| {
                b.iter(|| read(black_box(&bytes)));
            });
            group.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
