//! How much a reader of a [`Log`] slows down while another thread appends
//! to it (readers never wait behind a writer).
//!
//! ```sh
//! cargo run --release --example contention -- [DIR] [--records N] [--repeat R]
//! ```
//!
//! Opens a standalone `Log` in `DIR` (default: a fresh temporary
//! directory; an existing log there is appended to), pre-fills it with `N`
//! records (default 2,000,000) of 100 bytes in batches of about 16 KiB
//! built with [`BatchBuilder`], then reads those records end to end with
//! `Log::read` (1 MiB reads), iterating every record's value:
//!
//! - `alone`: nothing else touches the log;
//! - `contended`: another thread appends the same kind of batches as fast
//!   as it can for as long as the reader runs.
//!
//! Each phase runs `R` times (default 3), alternating, and the best pass of
//! each counts (the machine is shared, so the best pass is the least
//! disturbed one). It prints one JSON line: records per second of both,
//! `ratio` (contended / alone), the latency of single `Log::read` calls
//! (p50, p99, max in µs: a read that waits behind an append's write shows
//! up there), and what the appender managed meanwhile.

#![allow(clippy::print_stdout, reason = "the tool prints its result")]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use logbus::format::BatchBuilder;
use logbus::{Compression, Log};

const RECORD_BYTES: usize = 100;
const BATCH_BYTES: usize = 16 * 1024;
const READ_BYTES: usize = 1 << 20;

/// One batch of ~16 KiB of 100-byte records.
fn batch(value: &[u8]) -> Vec<u8> {
    let mut builder = BatchBuilder::with_capacity(Compression::None, BATCH_BYTES + 1024);
    while builder.estimated_size() + RECORD_BYTES + 16 <= BATCH_BYTES {
        builder.append(1_700_000_000_000, None, Some(value), &[]);
    }
    builder.build().expect("a valid batch").to_vec()
}

/// What one read pass measured.
struct Pass {
    records: u64,
    seconds: f64,
    /// Durations of the `Log::read` calls, in ns.
    calls: Vec<u64>,
}

impl Pass {
    fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.seconds
    }
}

/// Reads `[0, end)` with 1 MiB reads, touching every record's value.
fn read_all(log: &Log, end: u64) -> Pass {
    let mut records = 0u64;
    let mut touched = 0u64;
    let mut calls = Vec::with_capacity(1 << 12);
    let mut offset = 0;
    let start = Instant::now();
    while offset < end {
        let call = Instant::now();
        let read = log.read(offset, READ_BYTES).expect("read");
        calls.push(call.elapsed().as_nanos() as u64);
        for batch in read.batches() {
            let batch = batch.expect("a valid batch");
            let last = batch.header().last_offset() as u64;
            let data = batch.record_data().expect("records");
            for record in data.iter() {
                let record = record.expect("a valid record");
                if (record.offset() as u64) < end {
                    records += 1;
                    touched += record.value().map_or(0, |v| u64::from(v[0]));
                }
            }
            offset = last + 1;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    std::hint::black_box(touched);
    Pass {
        records,
        seconds,
        calls,
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut dir: Option<PathBuf> = None;
    let mut records: u64 = 2_000_000;
    let mut repeat = 3;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--records" => records = args.next().ok_or("--records N")?.parse()?,
            "--repeat" => repeat = args.next().ok_or("--repeat R")?.parse()?,
            _ => dir = Some(PathBuf::from(arg)),
        }
    }
    let temp = tempfile::tempdir()?;
    let dir = dir.unwrap_or_else(|| temp.path().join("contention-0"));
    let log = Arc::new(Log::builder(&dir).open()?);

    let value = vec![7u8; RECORD_BYTES];
    let template = batch(&value);
    let start_offset = log.log_end_offset();
    eprintln!(
        "pre-filling {records} records in {} B batches",
        template.len()
    );
    while log.log_end_offset() - start_offset < records {
        log.append(&mut template.clone(), 0)?;
    }
    let end = log.log_end_offset();

    let mut alone: Option<Pass> = None;
    let mut contended: Option<Pass> = None;
    let mut appended = 0u64;
    let mut appender_seconds = 0.0;
    for _ in 0..repeat {
        let pass = read_all(&log, end);
        eprintln!("alone: {:.0} records/s", pass.records_per_sec());
        if alone
            .as_ref()
            .is_none_or(|best| pass.records_per_sec() > best.records_per_sec())
        {
            alone = Some(pass);
        }

        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let writer = {
            let (log, stop, count, template) = (
                Arc::clone(&log),
                Arc::clone(&stop),
                Arc::clone(&count),
                template.clone(),
            );
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut buf = template.clone();
                while !stop.load(Ordering::Relaxed) {
                    buf.copy_from_slice(&template);
                    let info = log.append(&mut buf, 0).expect("append");
                    count.fetch_add(info.record_count(), Ordering::Relaxed);
                }
                started.elapsed()
            })
        };
        // Let the appender get going before the clock starts.
        while count.load(Ordering::Relaxed) == 0 {
            std::thread::yield_now();
        }
        let before = count.load(Ordering::Relaxed);
        let pass = read_all(&log, end);
        let during = count.load(Ordering::Relaxed) - before;
        stop.store(true, Ordering::Relaxed);
        let _: Duration = writer.join().expect("the appender");
        eprintln!(
            "contended: {:.0} records/s ({during} records appended meanwhile)",
            pass.records_per_sec()
        );
        if contended
            .as_ref()
            .is_none_or(|best| pass.records_per_sec() > best.records_per_sec())
        {
            appended = during;
            appender_seconds = pass.seconds;
            contended = Some(pass);
        }
    }
    let (mut alone, mut contended) = (alone.ok_or("no pass")?, contended.ok_or("no pass")?);
    alone.calls.sort_unstable();
    contended.calls.sort_unstable();
    println!(
        "{{\"records\":{},\"alone_records_per_sec\":{:.0},\"contended_records_per_sec\":{:.0},\
         \"ratio\":{:.3},\"alone_read_us_p50\":{:.1},\"alone_read_us_p99\":{:.1},\
         \"alone_read_us_max\":{:.1},\"contended_read_us_p50\":{:.1},\
         \"contended_read_us_p99\":{:.1},\"contended_read_us_max\":{:.1},\
         \"appended_records_per_sec\":{:.0}}}",
        alone.records,
        alone.records_per_sec(),
        contended.records_per_sec(),
        contended.records_per_sec() / alone.records_per_sec(),
        percentile(&alone.calls, 0.5),
        percentile(&alone.calls, 0.99),
        percentile(&alone.calls, 1.0),
        percentile(&contended.calls, 0.5),
        percentile(&contended.calls, 0.99),
        percentile(&contended.calls, 1.0),
        appended as f64 / appender_seconds,
    );
    Arc::try_unwrap(log)
        .map_err(|_| "the log is still shared")?
        .close()?;
    Ok(())
}
