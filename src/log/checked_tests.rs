//! What a read reports as checked by this process (see `read`'s module
//! docs): exactly the batches appended since the log was opened, or
//! scanned whole by its recovery, through appends, truncations, rolls,
//! deletions, reopens and cleaning; never a byte written before the open
//! and not scanned, and nothing in a read-only view.

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;

use super::{Log, LogRead};
use crate::config::LogConfig;
use crate::format::{Batch, BatchBuilder};
use crate::storage::{OverlayStorage, StdStorage};
use crate::types::Compression;

/// Small segments, so that a few appends roll.
const SEGMENT_BYTES: u64 = 400;

fn config() -> LogConfig {
    LogConfig::builder()
        .segment_bytes(SEGMENT_BYTES)
        .build()
        .expect("config")
}

fn open(dir: &Path, recovery_point: u64, log_start: u64) -> Log {
    Log::builder(dir)
        .config(config())
        .recovery_point(recovery_point)
        .log_start_offset(log_start)
        .open()
        .expect("open")
}

/// A batch of `records` records whose values are all `tag`.
fn batch(records: usize, tag: u8) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Compression::None);
    for i in 0..records {
        builder.append(1_000 + i as i64, None, Some(&[tag; 20]), &[]);
    }
    builder.build().expect("batch").to_vec()
}

/// The one batch `read` returned, checked whole here: its tag.
fn tag_of(read: &LogRead) -> u8 {
    let batch = Batch::from_bytes(read.records().clone()).expect("one whole batch");
    assert_eq!(batch.size(), read.records().len(), "one batch");
    let record = batch.records().expect("records").next().expect("a record");
    record.expect("record").value().expect("a value")[0]
}

/// A batch of the model: its offsets, its values' tag, and whether this
/// process appended or scanned it since the log was opened.
#[derive(Debug, Clone)]
struct Stored {
    base: u64,
    last: u64,
    tag: u8,
    fresh: bool,
}

#[derive(Debug, Clone)]
enum Op {
    /// Append one batch of this many records.
    Append(usize),
    /// `truncate_to` an offset, as a fraction (of 256) of the way from the
    /// log start to the log end.
    Truncate(u8),
    /// `delete_records` up to such an offset (segments below go).
    DeleteRecords(u8),
    /// Close and reopen: with `scan`, from recovery point 0, so recovery
    /// scans (and checks) every segment; otherwise at the flushed end, so
    /// nothing is scanned.
    Reopen { scan: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..5).prop_map(Op::Append),
        1 => any::<u8>().prop_map(Op::Truncate),
        1 => any::<u8>().prop_map(Op::DeleteRecords),
        1 => any::<bool>().prop_map(|scan| Op::Reopen { scan }),
    ]
}

/// `start + (end - start) * fraction / 256`.
fn between(start: u64, end: u64, fraction: u8) -> u64 {
    start + (end - start) * u64::from(fraction) / 256
}

/// Every batch of the model at or above the log start is read alone: its
/// bytes are what was appended, and the read reports it checked whole if
/// the model says this process appended or scanned it, else not at all.
fn check(log: &Log, model: &[Stored]) -> Result<(), TestCaseError> {
    let start = log.log_start_offset();
    for stored in model.iter().filter(|s| s.last >= start) {
        let read = log.read(stored.base.max(start), 1).expect("read");
        prop_assert_eq!(tag_of(&read), stored.tag, "batch at {}", stored.base);
        let expected = if stored.fresh {
            0..read.records().len()
        } else {
            0..0
        };
        prop_assert_eq!(
            read.checked(),
            expected,
            "batch at {} (fresh: {})",
            stored.base,
            stored.fresh
        );
    }
    prop_assert_eq!(
        log.log_end_offset(),
        model.last().map_or(start, |s| s.last + 1).max(start)
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn reads_report_checked_exactly_what_this_process_appended_or_scanned(
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), 0, 0);
        let mut model: Vec<Stored> = Vec::new();
        let mut tag = 0u8;
        for op in ops {
            match op {
                Op::Append(records) => {
                    tag = tag.wrapping_add(1);
                    let info = log.append(&mut batch(records, tag), 0).expect("append");
                    model.push(Stored {
                        base: info.first_offset(),
                        last: info.last_offset(),
                        tag,
                        fresh: true,
                    });
                }
                Op::Truncate(fraction) => {
                    let to = between(log.log_start_offset(), log.log_end_offset(), fraction);
                    let end = log.truncate_to(to).expect("truncate");
                    model.retain(|s| s.last < to);
                    prop_assert_eq!(end, model.last().map_or(end, |s| s.last + 1));
                }
                Op::DeleteRecords(fraction) => {
                    let to = between(log.log_start_offset(), log.log_end_offset(), fraction);
                    log.delete_records(to).expect("delete records");
                }
                Op::Reopen { scan } => {
                    log.flush().expect("flush");
                    let recovery_point = if scan { 0 } else { log.recovery_point() };
                    let log_start = log.log_start_offset();
                    log.close().expect("close");
                    log = open(dir.path(), recovery_point, log_start);
                    prop_assert_eq!(log.recovery_report().segments_scanned > 0, scan && !model.is_empty());
                    for stored in &mut model {
                        stored.fresh = scan;
                    }
                }
            }
            check(&log, &model)?;
        }
        log.close().expect("close");
    }
}

/// A read-only view ([`OverlayStorage`], no directory lock) trusts
/// nothing, even what its own recovery scanned: another process writes
/// and may cut those files.
#[test]
fn a_read_only_view_reports_nothing_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), 0, 0);
    for tag in 1..=6 {
        log.append(&mut batch(2, tag), 0).expect("append");
    }
    assert!(!log.read(0, 1).expect("read").checked().is_empty());
    // While the writer holds the directory, from recovery point 0: the view's
    // recovery scans every segment.
    let view = Log::builder(dir.path())
        .config(config())
        .storage(Arc::new(OverlayStorage::new(Arc::new(StdStorage))))
        .open()
        .expect("view");
    assert!(view.recovery_report().segments_scanned > 0);
    let mut offset = 0;
    while offset < view.log_end_offset() {
        let read = view.read(offset, 1).expect("read");
        assert!(read.checked().is_empty(), "offset {offset}");
        assert_eq!(tag_of(&read), (offset / 2 + 1) as u8);
        offset += 2;
    }
    drop(view);
    log.close().expect("close");
}

/// A cleaned segment replaces the ones it was cleaned from with its own
/// checked range: the batches its pass wrote (each source batch's CRC was
/// checked as it was read), whatever the old segments' ranges were; the
/// records read are the latest of each key.
#[test]
fn a_cleaning_pass_on_a_cold_log_writes_checked_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let compacted = || {
        LogConfig::builder()
            .segment_bytes(SEGMENT_BYTES)
            .compact(true)
            .delete(false)
            .min_cleanable_dirty_ratio(0.0)
            .build()
            .expect("config")
    };
    let log = Log::builder(dir.path())
        .config(compacted())
        .open()
        .expect("open");
    for round in 0..8u8 {
        for key in 0..3u8 {
            let mut builder = BatchBuilder::new(Compression::None);
            builder.append(1_000, Some(&[key]), Some(&[round, key]), &[]);
            log.append(&mut builder.build().expect("batch").to_vec(), 0)
                .expect("append");
        }
    }
    log.flush().expect("flush");
    let recovery_point = log.recovery_point();
    log.close().expect("close");
    // Reopened without a scan: nothing is checked.
    let log = Log::builder(dir.path())
        .config(compacted())
        .recovery_point(recovery_point)
        .open()
        .expect("reopen");
    let end = log.log_end_offset();
    for offset in 0..end {
        assert!(log.read(offset, 1).expect("read").checked().is_empty());
    }
    let report = log.clean().expect("clean");
    assert!(report.segments_written > 0, "{report:?}");
    // The cleaned segments' batches are checked; the active segment's
    // (not cleaned, written before the open) are not.
    let mut latest = std::collections::BTreeMap::new();
    let mut checked_batches = 0;
    let mut offset = log.log_start_offset();
    while offset < end {
        let read = log.read(offset, 1).expect("read");
        let batch = Batch::from_bytes(read.records().clone()).expect("batch");
        if read.checked() == (0..read.records().len()) {
            checked_batches += 1;
        } else {
            assert!(read.checked().is_empty(), "offset {offset}");
        }
        for record in batch.records().expect("records") {
            let record = record.expect("record");
            let key = record.key().expect("key")[0];
            latest.insert(key, record.value().expect("value").to_vec());
        }
        offset = batch.header().next_offset() as u64;
    }
    assert!(checked_batches > 0);
    assert_eq!(
        latest.into_iter().collect::<Vec<_>>(),
        (0..3u8).map(|k| (k, vec![7, k])).collect::<Vec<_>>()
    );
    log.close().expect("close");
}

/// A follower's copy of batches read from a leader in this process checks
/// only the batches the read does not report as checked: damage there
/// refuses the whole append (nothing stored); within the reported range
/// the CRC and records are not checked again.
#[test]
fn a_followers_copy_checks_only_what_the_read_does_not_report_as_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let leader = Log::builder(dir.path().join("leader"))
        .open()
        .expect("leader");
    leader.append(&mut batch(3, 1), 0).expect("append");
    leader.append(&mut batch(2, 2), 0).expect("append");
    let read = leader.read(0, 1 << 20).expect("read");
    let all = read.records().len();
    assert_eq!(read.checked(), 0..all);
    let first = Batch::decode(read.records()).expect("first batch").1;
    // A record byte of the second batch, covered by its CRC.
    let mut damaged = read.records().to_vec();
    damaged[all - 1] ^= 0xff;

    let follower = Log::builder(dir.path().join("follower"))
        .open()
        .expect("follower");
    for trusted in [0..0, 0..first] {
        let err = follower
            .append_as_follower_checked(&damaged, trusted.clone())
            .expect_err("the second batch is checked");
        assert!(matches!(err, crate::Error::InvalidBatch(_)), "{err}");
        assert_eq!(follower.log_end_offset(), 0, "{trusted:?}: nothing stored");
    }
    follower
        .append_as_follower_checked(read.records(), 0..all)
        .expect("copy");
    assert_eq!(follower.log_end_offset(), 5);
    let copied = follower.read(0, 1 << 20).expect("read");
    assert_eq!(copied.records(), read.records());
    assert_eq!(
        copied.checked(),
        0..all,
        "the copy is checked in this process"
    );

    // Within the reported range nothing is checked again: the damage
    // stands in for the work not done.
    let trusting = Log::builder(dir.path().join("trusting"))
        .open()
        .expect("trusting");
    trusting
        .append_as_follower_checked(&damaged, 0..all)
        .expect("not checked again");
    assert_eq!(trusting.log_end_offset(), 5);
}
