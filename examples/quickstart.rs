//! Quickstart: write keyed records to a partition log and read them back.
//!
//! ```text
//! cargo run --release --example quickstart [DIR]
//! ```
//!
//! Writes into `DIR` (default: a fresh temporary directory, whose path is
//! printed) and leaves the data there, so you can look at the segment files
//! or run it again to append more.

#![allow(clippy::print_stdout, reason = "an example prints its results")]

use std::error::Error;
use std::path::PathBuf;

use logbus::format::{BatchBuilder, Header};
use logbus::{Compression, FlushPolicy, Log, LogConfig};

fn main() -> Result<(), Box<dyn Error>> {
    let dir = match std::env::args_os().nth(1) {
        Some(dir) => PathBuf::from(dir),
        None => tempfile::Builder::new()
            .prefix("logbus-quickstart-")
            .tempdir()?
            .keep(),
    };
    println!("data directory: {}", dir.display());

    let config = LogConfig::builder()
        .segment_bytes(1024 * 1024)
        .flush(FlushPolicy::EveryAppend)
        .build()?;
    let log = Log::builder(dir.join("orders-0")).config(config).open()?;
    let start = log.log_end_offset();

    // One batch per "request", as a producer would send them.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    for order in 0..3 {
        let key = format!("order-{order}");
        let mut batch = BatchBuilder::new(Compression::Lz4);
        for (i, event) in ["created", "paid", "shipped"].iter().enumerate() {
            let headers = [Header::new("source", Some(b"quickstart"))];
            batch.append(
                now + i as i64,
                Some(key.as_bytes()),
                Some(event.as_bytes()),
                &headers,
            );
        }
        let mut bytes = batch.build()?.to_vec();
        let info = log.append(&mut bytes, 0)?;
        println!(
            "appended {key}: offsets {}..={}",
            info.first_offset(),
            info.last_offset()
        );
    }

    // Read back everything this run appended.
    let mut next = start;
    while next < log.log_end_offset() {
        let read = log.read(next, 1024 * 1024)?;
        for batch in read.batches() {
            let batch = batch?;
            for record in batch.records()? {
                let record = record?;
                if (record.offset() as u64) < next {
                    continue;
                }
                let text =
                    |b: Option<&bytes::Bytes>| b.map(|b| String::from_utf8_lossy(b).into_owned());
                println!(
                    "offset {:>3}  timestamp {}  key {:?}  value {:?}",
                    record.offset(),
                    record.timestamp(),
                    text(record.key()).unwrap_or_default(),
                    text(record.value()).unwrap_or_default(),
                );
            }
            next = batch.header().next_offset() as u64;
        }
    }
    println!(
        "log: start offset {}, end offset {}, {} segment(s), {} bytes",
        log.log_start_offset(),
        log.log_end_offset(),
        log.segment_count(),
        log.size_bytes()
    );
    log.close()?;
    Ok(())
}
