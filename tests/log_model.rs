//! Model-based test of the partition log: random sequences of appends,
//! reads, timestamp lookups, truncations, record deletions, retention,
//! flushes and reopens, checked against a plain in-memory model.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{Draft, Rec, append_model, check_timestamps, read_records};
use logbus::{Error, Log, LogConfig, ManualClock, Result};
use proptest::prelude::*;

const SEGMENT_BYTES: u64 = 512;
const RETENTION_BYTES: u64 = 1_500;

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<Draft>),
    /// A read at `log_start - 2 + pick % (len + 5)`, with `max_bytes`.
    Read {
        pick: u64,
        max_bytes: usize,
    },
    OffsetForTimestamp(i64),
    /// Truncate to `log_start + pick % (len + 3)`.
    TruncateTo(u64),
    /// Delete records below `log_start + pick % (len + 3)`.
    DeleteRecords(u64),
    EnforceRetention,
    Flush,
    Reopen,
}

fn draft() -> impl Strategy<Value = Draft> {
    (
        0i64..1_000,
        prop::option::weighted(0.7, prop::collection::vec(any::<u8>(), 0..8)),
        prop::option::weighted(0.9, prop::collection::vec(any::<u8>(), 0..120)),
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => prop::collection::vec(draft(), 1..=5).prop_map(Op::Append),
        4 => (any::<u64>(), 1usize..2_000).prop_map(|(pick, max_bytes)| Op::Read { pick, max_bytes }),
        2 => (-5i64..1_010).prop_map(Op::OffsetForTimestamp),
        2 => any::<u64>().prop_map(Op::TruncateTo),
        2 => any::<u64>().prop_map(Op::DeleteRecords),
        1 => Just(Op::EnforceRetention),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
    ]
}

/// What the log must hold: every record still stored at offsets below the
/// log end (those below the log start are no longer readable), the batches'
/// offset ranges, and the two offsets.
#[derive(Debug, Default)]
struct Model {
    records: Vec<Rec>,
    batches: Vec<(u64, u64)>,
    start: u64,
    end: u64,
}

impl Model {
    fn visible(&self) -> Vec<Rec> {
        self.records
            .iter()
            .filter(|r| r.offset >= self.start)
            .cloned()
            .collect()
    }

    fn len(&self) -> u64 {
        self.end - self.start
    }
}

fn config() -> LogConfig {
    LogConfig::builder()
        .segment_bytes(SEGMENT_BYTES)
        .index_interval_bytes(100)
        .segment_index_bytes(4096)
        .segment_time(None)
        .retention_time(None)
        .retention_bytes(Some(RETENTION_BYTES))
        .build()
        .expect("config")
}

fn open(dir: &Path, clock: &ManualClock, rp: u64, start: u64) -> Result<Log> {
    Log::builder(dir)
        .config(config())
        .clock(Arc::new(clock.clone()))
        .recovery_point(rp)
        .log_start_offset(start)
        .open()
}

/// Checks what retention (or `delete_records`) did: the log start only
/// moves forward, to the first remaining segment's base at most.
fn after_retention(log: &Log, model: &mut Model, floor: u64) {
    let start = log.log_start_offset();
    let first_base = log.segment_base_offsets()[0];
    assert!(start >= floor, "log start {start} below {floor}");
    assert!(
        start == floor || start == first_base,
        "retention moves the start to a segment base: {start} vs {first_base}"
    );
    assert!(first_base <= start && start <= model.end);
    model.start = start;
}

/// Closes the log on a helper thread and fails (instead of hanging the
/// suite) if that does not finish. The bound is a watchdog against a hang,
/// not a performance assertion: a close takes milliseconds.
fn close(log: Log) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(log.close());
    });
    rx.recv_timeout(std::time::Duration::from_secs(10))
        .expect("Log::close finishes (it hung: a worker job never completed)")
}

fn run(ops: &[Op]) -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_000_000);
    let mut log = open(dir.path(), &clock, 0, 0)?;
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Append(records) if common::build_batch(records).len() as u64 > SEGMENT_BYTES => {
                // An append larger than a segment is refused whole.
                let mut bytes = common::build_batch(records);
                assert!(matches!(
                    log.append(&mut bytes, 0),
                    Err(Error::RecordTooLarge { .. })
                ));
            }
            Op::Append(records) => {
                let first = model.end;
                let info = append_model(&log, &mut model.records, records)?;
                assert_eq!(info.first_offset(), first);
                model.batches.push((first, info.last_offset()));
                model.end = info.last_offset() + 1;
            }
            Op::Read { pick, max_bytes } => {
                let offset = (model.start + pick % (model.len() + 5)).saturating_sub(2);
                match log.read(offset, *max_bytes) {
                    Ok(read) => {
                        assert!(offset >= model.start && offset <= model.end);
                        assert_eq!(read.log_start_offset(), model.start);
                        assert_eq!(read.log_end_offset(), model.end);
                        let got = common::batches(read.records());
                        if offset == model.end {
                            assert!(got.is_empty(), "a read at the end is empty");
                        } else {
                            assert!(!got.is_empty());
                            let first = got[0].header();
                            assert!(first.base_offset as u64 <= offset);
                            assert!(first.last_offset() as u64 >= offset);
                        }
                        // Only the first batch is sure to fit; all are whole.
                        let mut records = Vec::new();
                        for batch in &got {
                            for r in batch.records()? {
                                let r = r?;
                                if r.offset() as u64 >= offset {
                                    records.push(Rec {
                                        offset: r.offset() as u64,
                                        timestamp: r.timestamp(),
                                        key: r.key().map(|k| k.to_vec()),
                                        value: r.value().map(|v| v.to_vec()),
                                    });
                                }
                            }
                        }
                        let expected: Vec<Rec> = model
                            .records
                            .iter()
                            .filter(|r| r.offset >= offset)
                            .take(records.len())
                            .cloned()
                            .collect();
                        assert_eq!(records, expected, "read({offset}, {max_bytes})");
                    }
                    Err(Error::OffsetOutOfRange {
                        offset: o,
                        log_start,
                        log_end,
                    }) => {
                        assert!(offset < model.start || offset > model.end, "read({offset})");
                        assert_eq!((o, log_start, log_end), (offset, model.start, model.end));
                    }
                    Err(e) => return Err(e),
                }
            }
            Op::OffsetForTimestamp(ts) => {
                check_timestamps(&log, &model.visible(), model.start, [*ts])?;
            }
            Op::TruncateTo(pick) => {
                let offset = model.start + pick % (model.len() + 3);
                let new_end = if offset >= model.end {
                    model.end
                } else {
                    model
                        .batches
                        .iter()
                        .find(|(base, last)| *base <= offset && offset <= *last)
                        .expect("the batch holding the offset")
                        .0
                };
                assert_eq!(log.truncate_to(offset)?, new_end, "truncate_to({offset})");
                model.end = new_end;
                model.records.retain(|r| r.offset < new_end);
                model.batches.retain(|(base, _)| *base < new_end);
                model.start = model.start.min(new_end);
            }
            Op::DeleteRecords(pick) => {
                let offset = model.start + pick % (model.len() + 3);
                match log.delete_records(offset) {
                    Ok(start) => {
                        assert!(offset <= model.end);
                        assert_eq!(start, log.log_start_offset());
                        let floor = offset.max(model.start);
                        after_retention(&log, &mut model, floor);
                    }
                    Err(Error::OffsetOutOfRange { .. }) => assert!(offset > model.end),
                    Err(e) => return Err(e),
                }
            }
            Op::EnforceRetention => {
                let before = log.size_bytes();
                let report = log.enforce_retention()?;
                assert_eq!(log.size_bytes(), before - report.bytes);
                if report.segments > 0 {
                    // Over retention.bytes, or segments wholly below the start.
                    let first_base = log.segment_base_offsets()[0];
                    assert!(before > RETENTION_BYTES || first_base <= model.start);
                }
                let floor = model.start;
                after_retention(&log, &mut model, floor);
            }
            Op::Flush => {
                log.flush()?;
                assert_eq!(log.recovery_point(), model.end);
            }
            Op::Reopen => {
                let (rp, start) = (log.recovery_point(), log.log_start_offset());
                assert!(rp <= model.end);
                close(log)?;
                log = open(dir.path(), &clock, rp, start)?;
                assert_eq!(log.recovery_report().truncated, None);
            }
        }
        assert_eq!(log.log_end_offset(), model.end, "after {op:?}");
        assert_eq!(log.log_start_offset(), model.start, "after {op:?}");
        assert_eq!(
            read_records(&log, model.start, 700)?,
            model.visible(),
            "after {op:?}"
        );
    }
    // Everything survives a final reopen too.
    let (rp, start) = (log.recovery_point(), log.log_start_offset());
    close(log)?;
    let log = open(dir.path(), &clock, rp, start)?;
    assert_eq!(read_records(&log, model.start, 1 << 16)?, model.visible());
    check_timestamps(&log, &model.visible(), model.start, (-1..1_001).step_by(50))?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        max_shrink_iters: 500,
        max_shrink_time: 10_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_log_behaves_like_its_model(ops in prop::collection::vec(op(), 1..60)) {
        run(&ops).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
}

#[test]
fn truncating_below_a_pending_flush_then_closing_finishes() -> Result<()> {
    // Rolls queue a flush of the sealed segments up to the new segment's
    // base offset; a truncation below that offset must not leave the worker
    // waiting for offsets that no longer exist (which hangs `close`).
    for _ in 0..5 {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new(0);
        let log = open(dir.path(), &clock, 0, 0)?;
        let mut model = Vec::new();
        while log.segment_count() < 3 {
            append_model(&log, &mut model, &common::drafts("x", 3, 0))?;
        }
        assert_eq!(log.truncate_to(2)?, 0, "the first batch holds offset 2");
        log.flush()?;
        assert!(log.recovery_point() <= log.log_end_offset());
        close(log)?;
        let log = open(dir.path(), &clock, 0, 0)?;
        assert_eq!(log.log_end_offset(), 0);
        close(log)?;
    }
    Ok(())
}
