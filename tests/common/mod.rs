//! Helpers shared by the integration tests.
#![allow(dead_code, reason = "each test file uses a different subset")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use logbus::format::{Batch, BatchBuilder, BatchHeader};
use logbus::{AppendInfo, Compression, Log, LogConfig, ManualClock, Result};

pub(crate) mod hooked;
pub(crate) mod replicated;

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
    Ok(read_records(log, from, 64 * 1024)?
        .into_iter()
        .map(|r| (r.offset, r.timestamp, r.value.unwrap_or_default()))
        .collect())
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
                .retention_time(None)
                .build()?,
        )
        .clock(Arc::new(clock.clone()))
        .open()
}

/// One record as the tests' models hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rec {
    pub(crate) offset: u64,
    pub(crate) timestamp: i64,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Option<Vec<u8>>,
}

/// The records a test appends in one batch, before the log assigns offsets:
/// `(timestamp, key, value)`.
pub(crate) type Draft = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

/// Builds one uncompressed batch from drafts.
pub(crate) fn build_batch(records: &[Draft]) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Compression::None);
    for (ts, key, value) in records {
        builder.append(*ts, key.as_deref(), value.as_deref(), &[]);
    }
    builder.build().expect("build batch").to_vec()
}

/// Appends `records` as one batch and extends `model` with the offsets the
/// log assigned.
pub(crate) fn append_model(
    log: &Log,
    model: &mut Vec<Rec>,
    records: &[Draft],
) -> Result<AppendInfo> {
    let mut bytes = build_batch(records);
    let info = log.append(&mut bytes, 0)?;
    assert_eq!(
        info.last_offset() - info.first_offset() + 1,
        records.len() as u64
    );
    for (i, (ts, key, value)) in records.iter().enumerate() {
        model.push(Rec {
            offset: info.first_offset() + i as u64,
            timestamp: *ts,
            key: key.clone(),
            value: value.clone(),
        });
    }
    Ok(info)
}

/// Drafts of `count` records tagged `tag`, timestamps `ts, ts+1, ...`.
pub(crate) fn drafts(tag: &str, count: usize, ts: i64) -> Vec<Draft> {
    (0..count)
        .map(|i| {
            (
                ts + i as i64,
                Some(format!("k{i}").into_bytes()),
                Some(format!("{tag}-{i}").into_bytes()),
            )
        })
        .collect()
}

/// Every record from `from` on, keys and values included, read through
/// `Log::read` with `max_bytes` per read. Checks that every returned batch
/// is valid (CRC) and that offsets increase.
pub(crate) fn read_records(log: &Log, from: u64, max_bytes: usize) -> Result<Vec<Rec>> {
    let mut out: Vec<Rec> = Vec::new();
    let mut next = from;
    let end = log.log_end_offset();
    while next < end {
        let read = log.read(next, max_bytes)?;
        assert!(
            !read.records().is_empty(),
            "a read at {next} below the log end {end} returned no data"
        );
        let before = next;
        for batch in read.batches() {
            let batch = batch?;
            for record in batch.records()? {
                let record = record?;
                let offset = record.offset() as u64;
                if offset >= next {
                    if let Some(last) = out.last() {
                        assert!(offset > last.offset, "offsets increase");
                    }
                    out.push(Rec {
                        offset,
                        timestamp: record.timestamp(),
                        key: record.key().map(|k| k.to_vec()),
                        value: record.value().map(|v| v.to_vec()),
                    });
                }
            }
            next = next.max(batch.header().next_offset() as u64);
        }
        assert!(next > before, "reads make progress");
    }
    Ok(out)
}

/// What `offset_for_timestamp(target)` must answer for `model` (records in
/// offset order) and `log_start`.
pub(crate) fn expected_for_timestamp(
    model: &[Rec],
    log_start: u64,
    target: i64,
) -> Option<(u64, i64)> {
    model
        .iter()
        .find(|r| r.offset >= log_start && r.timestamp >= target)
        .map(|r| (r.offset, r.timestamp))
}

/// Checks `offset_for_timestamp` for every target against the model.
pub(crate) fn check_timestamps(
    log: &Log,
    model: &[Rec],
    log_start: u64,
    targets: impl IntoIterator<Item = i64>,
) -> Result<()> {
    for target in targets {
        let found = log
            .offset_for_timestamp(target)?
            .map(|t| (t.offset, t.timestamp));
        assert_eq!(
            found,
            expected_for_timestamp(model, log_start, target),
            "offset_for_timestamp({target})"
        );
    }
    Ok(())
}

/// Checks that a read at every offset in `[log_start, log_end)` returns a
/// first batch that holds that offset and the model's records from there on
/// (one read, not the whole rest of the log).
pub(crate) fn check_every_offset(log: &Log, model: &[Rec]) -> Result<()> {
    for (i, rec) in model.iter().enumerate() {
        let read = log.read(rec.offset, 1)?;
        let mut got = Vec::new();
        for batch in read.batches() {
            let batch = batch?;
            assert!(
                batch.header().base_offset as u64 <= rec.offset
                    && batch.header().last_offset() as u64 >= rec.offset,
                "read({}) starts with the batch holding it",
                rec.offset
            );
            for record in batch.records()? {
                let record = record?;
                if record.offset() as u64 >= rec.offset {
                    got.push(Rec {
                        offset: record.offset() as u64,
                        timestamp: record.timestamp(),
                        key: record.key().map(|k| k.to_vec()),
                        value: record.value().map(|v| v.to_vec()),
                    });
                }
            }
        }
        assert!(!got.is_empty(), "read({}) returned its record", rec.offset);
        assert_eq!(got[..], model[i..i + got.len()], "read({})", rec.offset);
    }
    Ok(())
}

/// A log configuration with small segments and no time-based retention or
/// rolling.
pub(crate) fn small_config(segment_bytes: u64) -> LogConfig {
    LogConfig::builder()
        .segment_bytes(segment_bytes)
        .index_interval_bytes(128)
        .segment_index_bytes(4096)
        .segment_time(None)
        .retention_time(None)
        .build()
        .expect("valid config")
}

/// Opens `dir` with `config`, a manual clock and the given recovery point.
pub(crate) fn open_at(dir: &Path, config: &LogConfig, recovery_point: u64) -> Result<Log> {
    Log::builder(dir)
        .config(config.clone())
        .clock(Arc::new(ManualClock::new(0)))
        .recovery_point(recovery_point)
        .open()
}

/// A directory's files by name, with their bytes.
pub(crate) type Files = BTreeMap<String, Vec<u8>>;

/// Every file in `dir` (not recursive) by name, with its bytes. The lock
/// file is left out.
pub(crate) fn snapshot(dir: &Path) -> Files {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let entry = entry.expect("dir entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.contains("lock") || !entry.file_type().expect("file type").is_file() {
            continue;
        }
        files.insert(name, std::fs::read(entry.path()).expect("read file"));
    }
    files
}

/// Writes a snapshot into the (empty) directory `dir`.
pub(crate) fn restore(dir: &Path, files: &Files) {
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).expect("write file");
    }
}

/// `dir/{base:020}.{suffix}`.
pub(crate) fn segment_path(dir: &Path, base: u64, suffix: &str) -> PathBuf {
    dir.join(format!("{base:020}.{suffix}"))
}

/// Name of the file `{base:020}.{suffix}`.
pub(crate) fn segment_name(base: u64, suffix: &str) -> String {
    format!("{base:020}.{suffix}")
}

/// A batch laid out in a log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) base_offset: u64,
    pub(crate) last_offset: u64,
}

/// The batches of a log file's bytes, by their headers (assumed intact).
pub(crate) fn spans(bytes: &[u8]) -> Vec<Span> {
    let mut out = Vec::new();
    let mut position = 0;
    while position < bytes.len() {
        let header = BatchHeader::parse(&bytes[position..]).expect("intact header");
        let end = position + header.total_size();
        assert!(end <= bytes.len(), "whole batch");
        out.push(Span {
            start: position,
            end,
            base_offset: header.base_offset as u64,
            last_offset: header.last_offset() as u64,
        });
        position = end;
    }
    out
}

/// Base offsets of the segments in a snapshot, ascending.
pub(crate) fn snapshot_bases(files: &Files) -> Vec<u64> {
    files
        .keys()
        .filter_map(|name| name.strip_suffix(".log"))
        .map(|stem| stem.parse().expect("segment name"))
        .collect()
}

/// A small deterministic generator (SplitMix64) for seeded garbage.
#[derive(Debug, Clone)]
pub(crate) struct Rng(pub u64);

impl Rng {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// Writes a log with `config` until it has at least `segments` segments and
/// the last one holds at least `in_last` records (batches of 1 to 4
/// records, increasing timestamps from 1000), closes it, and returns its
/// files and the model of its records.
pub(crate) fn closed_log(
    config: &LogConfig,
    segments: usize,
    in_last: usize,
) -> Result<(Files, Vec<Rec>)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_at(dir.path(), config, 0)?;
    let mut model = Vec::new();
    let mut i = 0;
    loop {
        let count = 1 + i % 4;
        append_model(
            &log,
            &mut model,
            &drafts(&format!("b{i}"), count, 1000 + i as i64 * 10),
        )?;
        i += 1;
        let bases = log.segment_base_offsets();
        let last_base = *bases.last().expect("a segment");
        let last_count = model.iter().filter(|r| r.offset >= last_base).count();
        if bases.len() >= segments && last_count >= in_last {
            break;
        }
    }
    log.close()?;
    Ok((snapshot(dir.path()), model))
}

/// Runs `f`, prefixing the message of any panic (a failed assertion) with
/// `what`.
pub(crate) fn with_context<T>(what: &str, f: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(value) => value,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!("{what}: {message}")
        }
    }
}

/// A temporary directory on tmpfs (`/dev/shm`) when the machine has one,
/// else in the default place. Crash and fault tests make thousands of
/// fsyncs that the simulated power loss does not depend on; on this
/// machine's disk they cost tens of seconds and test nothing more.
pub(crate) fn shm_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().expect("tempdir")
}

/// A cluster in a temporary directory, on a manual clock: the fixture of
/// the client tests.
pub(crate) struct Fixture {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) clock: ManualClock,
    pub(crate) cluster: logbus::Cluster,
}

/// A fresh [`Fixture`] whose clock starts at `t0`.
pub(crate) fn fixture_at(t0: i64) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(t0);
    let config = logbus::ClusterConfig::builder()
        .clock(Arc::new(clock.clone()))
        .build()
        .expect("config");
    let cluster = logbus::Cluster::open(dir.path(), config).expect("open");
    Fixture {
        _dir: dir,
        clock,
        cluster,
    }
}

/// A `tracing` writer into a shared buffer, for tests that read the log
/// lines a subscriber wrote.
#[derive(Clone, Default)]
pub(crate) struct Captured(pub(crate) std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
