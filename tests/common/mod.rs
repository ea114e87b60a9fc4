//! Helpers shared by the integration tests.
#![allow(dead_code, reason = "each test file uses a different subset")]

use std::path::Path;
use std::sync::Arc;

use logbus::format::{Batch, BatchBuilder};
use logbus::{Compression, Log, LogConfig, ManualClock, Result};

/// A batch of `count` records with values `"{tag}-{i}"`, keys `"k{i}"`, and
/// timestamps `ts, ts+1, ...`.
pub(crate) fn batch(tag: &str, count: usize, ts: i64) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Compression::None);
    for i in 0..count {
        let key = format!("k{i}");
        let value = format!("{tag}-{i}");
        builder.append(
            ts + i as i64,
            Some(key.as_bytes()),
            Some(value.as_bytes()),
            &[],
        );
    }
    builder.build().expect("build batch").to_vec()
}

/// A batch whose records have the given timestamps.
pub(crate) fn batch_with_timestamps(timestamps: &[i64]) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Compression::None);
    for (i, ts) in timestamps.iter().enumerate() {
        builder.append(*ts, None, Some(format!("v{i}").as_bytes()), &[]);
    }
    builder.build().expect("build batch").to_vec()
}

/// Every record in the log from `from` on, as `(offset, timestamp, value)`,
/// read through `Log::read` one batch run at a time.
pub(crate) fn read_all(log: &Log, from: u64) -> Result<Vec<(u64, i64, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut next = from;
    while next < log.log_end_offset() {
        let read = log.read(next, 64 * 1024)?;
        assert!(
            !read.records().is_empty(),
            "a read below the log end returns data"
        );
        for batch in read.batches() {
            let batch = batch?;
            for record in batch.records()? {
                let record = record?;
                let offset = record.offset() as u64;
                if offset >= next {
                    let value = record.value().map(|v| v.to_vec()).unwrap_or_default();
                    out.push((offset, record.timestamp(), value));
                }
            }
            next = batch.header().next_offset() as u64;
        }
    }
    Ok(out)
}

/// Decodes every batch in `bytes`.
pub(crate) fn batches(bytes: &bytes::Bytes) -> Vec<Batch> {
    logbus::format::Batches::new(bytes.clone())
        .collect::<std::result::Result<Vec<_>, _>>()
        .expect("valid batches")
}

/// A log with small segments and a manual clock.
pub(crate) fn small_log(dir: &Path, segment_bytes: u64, clock: &ManualClock) -> Result<Log> {
    Log::builder(dir)
        .config(
            LogConfig::builder()
                .segment_bytes(segment_bytes)
                .index_interval_bytes(128)
                .segment_index_bytes(4096)
                .retention_ms(None)
                .build()?,
        )
        .clock(Arc::new(clock.clone()))
        .open()
}
