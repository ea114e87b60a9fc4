//! Log compaction (`cleanup.policy=compact`): the cleaner keeps the latest
//! record of every key at its original offset, drops tombstones only after
//! `delete.retention.ms`, never touches the active segment, respects
//! `min.cleanable.dirty.ratio` and `min.compaction.lag.ms`, and a crash in
//! the middle of a pass leaves every segment group as before or as after.

mod common;

use common::shm_tempdir;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::Rec;
use logbus::format::BatchBuilder;
use logbus::{
    Clock, Compression, Error, FaultKind, FaultOp, FaultyStorage, Log, LogConfig, ManualClock,
    Result, StdStorage, Storage, Tear,
};
use proptest::prelude::*;

const RETENTION: i64 = 1_000;

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig::builder()
        .segment_bytes(segment_bytes)
        .index_interval_bytes(64)
        .segment_index_bytes(4096)
        .segment_time(None)
        .retention_time(None)
        .compact(true)
        .delete(false)
        .delete_retention(Duration::from_millis(RETENTION as u64))
        .build()
        .expect("config")
}

fn open(dir: &Path, config: LogConfig, clock: &ManualClock, checkpoint: u64) -> Result<Log> {
    Log::builder(dir)
        .config(config)
        .clock(Arc::new(clock.clone()))
        .cleaner_checkpoint(checkpoint)
        .open()
}

/// One record to append: `(key, value)`; `None` value is a tombstone.
type Kv = (u8, Option<Vec<u8>>);

/// Appends `records` as one batch with `codec`, timestamps `now`, and
/// extends `model`.
fn append(
    log: &Log,
    clock: &ManualClock,
    model: &mut Vec<Rec>,
    records: &[Kv],
    codec: Compression,
) -> Result<()> {
    let now = clock.now_ms();
    let mut builder = BatchBuilder::new(codec);
    for (key, value) in records {
        builder.append(now, Some(&[b'k', *key]), value.as_deref(), &[]);
    }
    let mut bytes = builder.build().expect("batch").to_vec();
    let info = log.append(&mut bytes, 0)?;
    for (i, (key, value)) in records.iter().enumerate() {
        model.push(Rec {
            offset: info.first_offset() + i as u64,
            timestamp: now,
            key: Some(vec![b'k', *key]),
            value: value.clone(),
        });
    }
    Ok(())
}

fn kv(key: u8, value: &str) -> Kv {
    (key, Some(value.as_bytes().to_vec()))
}

/// Every record from the log start on, checking that offsets increase and
/// that every read below the log end returns data (cleaning leaves no hole
/// at the end of a segment: it keeps an empty batch there).
fn read_all(log: &Log) -> Result<Vec<Rec>> {
    let mut out: Vec<Rec> = Vec::new();
    let mut next = log.log_start_offset();
    while next < log.log_end_offset() {
        let read = log.read(next, 1 << 20)?;
        assert!(
            !read.records().is_empty(),
            "a read at {next} below the log end returned nothing"
        );
        for batch in read.batches() {
            let batch = batch?;
            for record in batch.records()? {
                let record = record?;
                let offset = record.offset() as u64;
                if offset < next {
                    continue;
                }
                if let Some(last) = out.last() {
                    assert!(offset > last.offset, "offsets strictly increase");
                }
                out.push(Rec {
                    offset,
                    timestamp: record.timestamp(),
                    key: record.key().map(|k| k.to_vec()),
                    value: record.value().map(|v| v.to_vec()),
                });
            }
            next = next.max(batch.header().next_offset() as u64);
        }
    }
    Ok(out)
}

fn value(s: &str) -> Option<Vec<u8>> {
    Some(s.as_bytes().to_vec())
}

#[test]
fn keeps_the_latest_value_of_every_key_at_its_offset() -> Result<()> {
    let dir = shm_tempdir();
    let clock = ManualClock::new(10_000);
    let log = open(dir.path(), config(300), &clock, 0)?;
    let mut model = Vec::new();
    for round in 0..6 {
        append(
            &log,
            &clock,
            &mut model,
            &[kv(1, &format!("a{round}")), kv(2, &format!("b{round}"))],
            Compression::None,
        )?;
        append(
            &log,
            &clock,
            &mut model,
            &[kv(3, &format!("c{round}"))],
            Compression::Gzip,
        )?;
    }
    assert!(log.segment_count() > 2);
    let (start, end) = (log.log_start_offset(), log.log_end_offset());
    let active_base = *log.segment_base_offsets().last().expect("active");
    let active_before: Vec<Rec> = read_all(&log)?
        .into_iter()
        .filter(|r| r.offset >= active_base)
        .collect();

    let report = log.clean()?;
    assert!(report.segments_cleaned > 0, "{report:?}");
    assert!(report.records_superseded > 0, "{report:?}");
    assert!(report.bytes_after < report.bytes_before, "{report:?}");
    assert_eq!(report.cleaned_up_to, active_base);
    assert_eq!(log.cleaner_checkpoint(), active_base);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (start, end));

    let got = read_all(&log)?;
    // Below the active segment: the latest record of each key there.
    let mut latest: BTreeMap<Vec<u8>, Rec> = BTreeMap::new();
    for r in model.iter().filter(|r| r.offset < active_base) {
        latest.insert(r.key.clone().expect("key"), r.clone());
    }
    let mut expected: Vec<Rec> = latest.into_values().collect();
    expected.sort_by_key(|r| r.offset);
    expected.extend(active_before.iter().cloned());
    assert_eq!(got, expected);
    assert_eq!(
        *log.segment_base_offsets().last().expect("active"),
        active_base,
        "the active segment is untouched"
    );

    // A second pass removes nothing (it may merge the small cleaned
    // segments, as Kafka's grouping does); a third has nothing to do.
    let again = log.clean()?;
    assert_eq!(again.records_superseded, 0, "{again:?}");
    assert_eq!(read_all(&log)?, expected);
    let third = log.clean()?;
    assert_eq!(third.segments_cleaned, 0, "{third:?}");
    // Reopening reads the same.
    let checkpoint = log.cleaner_checkpoint();
    log.close()?;
    let log = open(dir.path(), config(300), &clock, checkpoint)?;
    assert_eq!(read_all(&log)?, expected);
    assert_eq!(log.cleaner_checkpoint(), checkpoint);
    Ok(())
}

#[test]
fn tombstones_go_only_after_delete_retention() -> Result<()> {
    let dir = shm_tempdir();
    let clock = ManualClock::new(10_000);
    let log = open(dir.path(), config(200), &clock, 0)?;
    let mut model = Vec::new();
    append(
        &log,
        &clock,
        &mut model,
        &[kv(1, "x"), kv(2, "y")],
        Compression::None,
    )?;
    append(&log, &clock, &mut model, &[(1, None)], Compression::Lz4)?;
    // Roll past the tombstone with fillers of another key.
    while log.segment_count() < 3 {
        append(
            &log,
            &clock,
            &mut model,
            &[kv(9, "filler")],
            Compression::None,
        )?;
    }
    let tombstone = model[2].offset;
    let first = log.clean()?;
    assert_eq!(first.tombstones_removed, 0);
    let got = read_all(&log)?;
    assert!(
        got.iter()
            .any(|r| r.offset == tombstone && r.value.is_none()),
        "the tombstone stays for delete.retention.ms"
    );
    assert!(
        !got.iter().any(|r| r.offset == model[0].offset),
        "k1=x is superseded"
    );

    clock.advance_ms(RETENTION - 1);
    log.clean()?;
    assert!(read_all(&log)?.iter().any(|r| r.offset == tombstone));

    clock.advance_ms(1);
    let report = log.clean()?;
    assert_eq!(report.tombstones_removed, 1, "{report:?}");
    let got = read_all(&log)?;
    assert!(!got.iter().any(|r| r.key.as_deref() == Some(b"k\x01")));
    assert!(got.iter().any(|r| r.value == value("y")));
    Ok(())
}

#[test]
fn a_segment_keeps_its_end_when_its_last_batch_goes() -> Result<()> {
    let dir = shm_tempdir();
    let clock = ManualClock::new(10_000);
    let log = open(dir.path(), config(200), &clock, 0)?;
    let mut model = Vec::new();
    append(&log, &clock, &mut model, &[kv(1, "x")], Compression::None)?;
    // Tombstones until one of them is the last batch before a roll.
    let mut bases = log.segment_base_offsets();
    while log.segment_count() < 3 {
        bases = log.segment_base_offsets();
        append(&log, &clock, &mut model, &[(1, None)], Compression::None)?;
    }
    let active = *log.segment_base_offsets().last().expect("active");
    assert_eq!(bases.len(), 2);
    log.clean()?;
    clock.advance_ms(RETENTION);
    let report = log.clean()?;
    assert!(report.tombstones_removed >= 1, "{report:?}");
    let got = read_all(&log)?;
    assert!(got.iter().all(|r| r.offset >= active), "{got:?}");
    // The last sealed batch survives as an empty batch that still ends at
    // the active segment's base, so the log has no hole at its end.
    let read = log.read(active - 1, 1 << 20)?;
    let first = read.batches().next().expect("a batch")?;
    assert_eq!(first.header().records_count, 0);
    assert_eq!(first.header().next_offset() as u64, active);
    let end = log.log_end_offset();
    log.close()?;
    let log = open(dir.path(), config(200), &clock, 0)?;
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(read_all(&log)?, got);
    Ok(())
}

#[test]
fn a_reader_keeps_its_bytes_across_a_clean() -> Result<()> {
    let dir = shm_tempdir();
    let clock = ManualClock::new(10_000);
    let log = open(dir.path(), config(200), &clock, 0)?;
    let mut model = Vec::new();
    for i in 0..12 {
        append(
            &log,
            &clock,
            &mut model,
            &[kv(i % 2, &format!("v{i}"))],
            Compression::None,
        )?;
    }
    let held = log.read(0, 1 << 20)?;
    let before: Vec<u8> = held.records().to_vec();
    let report = log.clean()?;
    assert!(report.segments_cleaned > 0);
    log.enforce_retention()?;
    assert_eq!(held.records().as_ref(), &before[..]);
    for batch in held.batches() {
        batch?.validate_records()?;
    }
    Ok(())
}

#[test]
fn dirty_ratio_and_compaction_lag_are_respected() -> Result<()> {
    let dir = shm_tempdir();
    let clock = ManualClock::new(10_000);
    let config = LogConfig::builder()
        .segment_bytes(200)
        .index_interval_bytes(64)
        .segment_index_bytes(4096)
        .segment_time(None)
        .compact(true)
        .min_cleanable_dirty_ratio(0.6)
        .min_compaction_lag(Duration::from_millis(500))
        .build()?;
    let log = open(dir.path(), config.clone(), &clock, 0)?;
    let mut model = Vec::new();
    // Distinct keys: cleaning keeps nearly everything, so the clean part
    // stays large.
    for i in 0..12 {
        append(
            &log,
            &clock,
            &mut model,
            &[kv(i, "first")],
            Compression::None,
        )?;
    }
    assert!(log.segment_count() > 3);
    // Every record is younger than min.compaction.lag.ms: nothing to clean.
    assert_eq!(log.dirty_ratio(), 0.0);
    assert_eq!(log.maybe_clean()?, None);
    assert_eq!(log.clean()?.segments_cleaned, 0);
    assert_eq!(log.cleaner_checkpoint(), 0);
    assert_eq!(read_all(&log)?, model);

    clock.advance_ms(499);
    assert_eq!(log.maybe_clean()?, None);
    clock.advance_ms(1);
    assert_eq!(log.dirty_ratio(), 1.0);
    let report = log.maybe_clean()?.expect("dirty enough");
    assert_eq!(report.records_superseded, 0);
    let checkpoint = log.cleaner_checkpoint();
    assert_eq!(Some(&checkpoint), log.segment_base_offsets().last());
    assert_eq!(read_all(&log)?, model);

    // One new sealed segment: below the ratio, the worker's pass skips it.
    let sealed = log.segment_count();
    while log.segment_count() == sealed {
        append(
            &log,
            &clock,
            &mut model,
            &[kv(0, "second")],
            Compression::None,
        )?;
    }
    clock.advance_ms(500);
    let ratio = log.dirty_ratio();
    assert!(ratio > 0.0 && ratio < 0.6, "{ratio}");
    assert_eq!(log.maybe_clean()?, None);
    assert_eq!(log.cleaner_checkpoint(), checkpoint);
    assert_eq!(read_all(&log)?, model);

    // Enough dirty segments: it runs, and only up to the young segment.
    while log.dirty_ratio() < 0.6 {
        append(
            &log,
            &clock,
            &mut model,
            &[kv(0, "third")],
            Compression::None,
        )?;
        clock.advance_ms(500);
    }
    let young = *log.segment_base_offsets().last().expect("active");
    let report = log.maybe_clean()?.expect("dirty enough");
    assert!(report.records_superseded > 0, "{report:?}");
    assert_eq!(report.cleaned_up_to, young);
    Ok(())
}

#[test]
fn compacted_logs_refuse_records_without_a_key() -> Result<()> {
    let dir = shm_tempdir();
    let clock = ManualClock::new(0);
    let log = open(dir.path(), config(1_000), &clock, 0)?;
    let mut builder = BatchBuilder::new(Compression::None);
    builder.append(1, Some(b"k"), Some(b"v"), &[]);
    builder.append(2, None, Some(b"no key"), &[]);
    let mut bytes = builder.build().expect("batch").to_vec();
    let err = log.append(&mut bytes, 0).unwrap_err();
    assert!(matches!(err, Error::InvalidBatch(_)), "{err}");
    assert!(err.to_string().contains("key"), "{err}");
    assert_eq!(log.log_end_offset(), 0);
    // The follower path validates the same way.
    logbus::format::set_base_offset(&mut bytes, 0);
    assert!(matches!(
        log.append_as_follower(&bytes),
        Err(Error::InvalidBatch(_))
    ));
    Ok(())
}

#[test]
fn compact_alone_ignores_time_and_size_retention() -> Result<()> {
    let dir = shm_tempdir();
    let clock = ManualClock::new(0);
    let config = LogConfig::builder()
        .segment_bytes(200)
        .segment_time(None)
        .retention_time(Some(Duration::from_millis(10)))
        .retention_bytes(Some(1))
        .compact(true)
        .delete(false)
        .build()?;
    let log = open(dir.path(), config, &clock, 0)?;
    let mut model = Vec::new();
    for i in 0..8 {
        append(&log, &clock, &mut model, &[kv(i, "v")], Compression::None)?;
    }
    clock.advance_ms(1_000);
    let segments = log.segment_count();
    assert_eq!(log.enforce_retention()?.segments, 0);
    assert_eq!(log.segment_count(), segments);
    // `clean` on a delete-only log is refused.
    let plain = shm_tempdir();
    let log = Log::builder(plain.path()).open()?;
    assert!(matches!(log.clean(), Err(Error::InvalidConfig(_))));
    Ok(())
}

/// The model of a compacted log: the records present, and the delete
/// horizon the cleaner stamped on each retained tombstone.
#[derive(Debug, Default)]
struct Model {
    records: Vec<Rec>,
    horizons: HashMap<u64, i64>,
}

impl Model {
    /// What one pass that cleaned everything below `end` at `now` leaves.
    fn clean(&mut self, end: u64, now: i64) {
        let mut latest: HashMap<Vec<u8>, u64> = HashMap::new();
        for r in self.records.iter().filter(|r| r.offset < end) {
            latest.insert(r.key.clone().expect("key"), r.offset);
        }
        let horizons = &self.horizons;
        self.records.retain(|r| {
            if r.offset >= end {
                return true;
            }
            let is_latest = latest[r.key.as_ref().expect("key")] == r.offset;
            let expired = r.value.is_none() && horizons.get(&r.offset).is_some_and(|&h| now >= h);
            is_latest && !expired
        });
        for r in self
            .records
            .iter()
            .filter(|r| r.offset < end && r.value.is_none())
        {
            self.horizons.entry(r.offset).or_insert(now + RETENTION);
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<Kv>, u8),
    Advance(i64),
    Clean,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let kv = (
        0u8..5,
        prop::option::weighted(0.8, prop::collection::vec(any::<u8>(), 0..40)),
    );
    prop_oneof![
        10 => (prop::collection::vec(kv, 1..5), 0u8..3).prop_map(|(r, c)| Op::Append(r, c)),
        2 => (0i64..700).prop_map(Op::Advance),
        3 => Just(Op::Clean),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn cleaning_matches_a_latest_value_per_key_model(ops in prop::collection::vec(op(), 1..60)) {
        let dir = shm_tempdir();
        let clock = ManualClock::new(1_000);
        let mut log = Some(open(dir.path(), config(400), &clock, 0)?);
        let mut model = Model::default();
        let codecs = [Compression::None, Compression::Gzip, Compression::Zstd];
        for op in ops {
            let current = log.as_ref().expect("open");
            match op {
                Op::Append(records, codec) => {
                    append(current, &clock, &mut model.records, &records, codecs[codec as usize])?;
                }
                Op::Advance(ms) => clock.advance_ms(ms),
                Op::Clean => {
                    let (start, end) = (current.log_start_offset(), current.log_end_offset());
                    let report = current.clean()?;
                    model.clean(report.cleaned_up_to, clock.now_ms());
                    prop_assert_eq!((current.log_start_offset(), current.log_end_offset()), (start, end));
                }
                Op::Reopen => {
                    let checkpoint = current.cleaner_checkpoint();
                    log.take().expect("open").close()?;
                    log = Some(open(dir.path(), config(400), &clock, checkpoint)?);
                }
            }
            let current = log.as_ref().expect("open");
            prop_assert_eq!(read_all(current)?, model.records.clone());
        }
    }
}

/// Appends a fixed history over several segments, flushed, and returns the
/// records.
fn history(log: &Log, clock: &ManualClock) -> Result<Vec<Rec>> {
    let mut model = Vec::new();
    for i in 0..24u8 {
        let records = [
            (i % 4, Some(vec![i; 1 + usize::from(i) % 7])),
            (10 + i % 3, None),
        ];
        let codec = if i % 3 == 0 {
            Compression::Snappy
        } else {
            Compression::None
        };
        append(log, clock, &mut model, &records, codec)?;
    }
    log.flush()?;
    Ok(model)
}

#[test]
fn a_crash_anywhere_in_a_clean_leaves_each_group_before_or_after() -> Result<()> {
    // The result of a clean that succeeds, on a log of its own.
    let reference = shm_tempdir();
    let clock = ManualClock::new(10_000);
    let log = open(reference.path(), config(300), &clock, 0)?;
    let before = history(&log, &clock)?;
    log.clean()?;
    let after = read_all(&log)?;
    let end = log.log_end_offset();
    drop(log);
    assert!(after.len() < before.len());

    let ops = [
        FaultOp::Create,
        FaultOp::Write,
        FaultOp::SetLen,
        FaultOp::Sync,
        FaultOp::Rename,
        FaultOp::SyncDir,
        FaultOp::Remove,
    ];
    let mut runs = 0;
    let mut swaps_completed = 0;
    for op in ops {
        for n in 1.. {
            let dir = shm_tempdir();
            let storage = FaultyStorage::new();
            let clock = ManualClock::new(10_000);
            let log = Log::builder(dir.path())
                .config(config(300))
                .clock(Arc::new(clock.clone()))
                .storage(Arc::new(storage.clone()))
                .open()?;
            assert_eq!(history(&log, &clock)?, before);
            let count = storage.op_count(op);
            storage.fail_nth(op, n, FaultKind::Eio);
            let result = log.clean();
            let triggered = storage.op_count(op) >= count + n;
            storage.crash(Tear::None)?;
            drop(log);
            storage.clear_faults();
            let log = Log::builder(dir.path())
                .config(config(300))
                .clock(Arc::new(clock.clone()))
                .storage(Arc::new(StdStorage::new()))
                .open()
                .unwrap_or_else(|e| panic!("{op:?} #{n}: reopen failed: {e}"));
            swaps_completed += log.recovery_report().swaps_completed;
            assert_eq!(log.log_end_offset(), end, "{op:?} #{n}: log end offset");
            let got = read_all(&log)?;
            // after ⊆ got ⊆ before, offsets never renumbered.
            for r in &got {
                assert!(before.contains(r), "{op:?} #{n}: {r:?} was never appended");
            }
            for r in &after {
                assert!(got.contains(r), "{op:?} #{n}: lost {r:?} ({result:?})");
            }
            // Each segment is wholly cleaned or wholly as before: a record
            // of `before` missing from `got` must be missing from `after`.
            runs += 1;
            drop(log);
            let leftovers: Vec<_> = StdStorage::new()
                .list_dir(dir.path())?
                .into_iter()
                .filter(|p| {
                    let name = p.to_string_lossy();
                    name.ends_with(".cleaned") || name.ends_with(".swap")
                })
                .collect();
            assert!(leftovers.is_empty(), "{op:?} #{n}: {leftovers:?}");
            if !triggered {
                assert!(result.is_ok(), "{op:?} #{n}: {result:?}");
                break;
            }
        }
    }
    assert!(runs > 10, "{runs}");
    assert!(swaps_completed > 0, "some crash fell between the renames");
    Ok(())
}

#[test]
fn readers_during_cleaning_see_every_latest_value() -> Result<()> {
    let dir = shm_tempdir();
    let clock = ManualClock::new(10_000);
    let log = Arc::new(open(dir.path(), config(300), &clock, 0)?);
    let mut model = Vec::new();
    for i in 0..60u8 {
        let codec = if i % 4 == 0 {
            Compression::Gzip
        } else {
            Compression::None
        };
        append(
            &log,
            &clock,
            &mut model,
            &[kv(i % 7, &format!("v{i}"))],
            codec,
        )?;
    }
    let mut latest: HashMap<Vec<u8>, Rec> = HashMap::new();
    for r in &model {
        latest.insert(r.key.clone().expect("key"), r.clone());
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (log, stop) = (Arc::clone(&log), Arc::clone(&stop));
        let (model, latest) = (model.clone(), latest.clone());
        std::thread::spawn(move || -> Result<usize> {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Acquire) || reads < 20 {
                let got = read_all(&log)?;
                for r in &got {
                    assert!(model.contains(r), "{r:?} was never appended");
                }
                for r in latest.values() {
                    assert!(got.contains(r), "latest {r:?} missing mid-clean");
                }
                reads += 1;
            }
            Ok(reads)
        })
    };
    for _ in 0..5 {
        log.clean()?;
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    let reads = reader.join().expect("reader thread")?;
    assert!(reads > 0);
    let active = *log.segment_base_offsets().last().expect("active");
    let mut below: HashMap<Vec<u8>, Rec> = HashMap::new();
    for r in model.iter().filter(|r| r.offset < active) {
        below.insert(r.key.clone().expect("key"), r.clone());
    }
    let mut expected: Vec<Rec> = below.into_values().collect();
    expected.extend(model.iter().filter(|r| r.offset >= active).cloned());
    expected.sort_by_key(|r| r.offset);
    // Below the active segment only the latest value of each key there.
    assert_eq!(read_all(&log)?, expected);
    Ok(())
}

/// A cleaner checkpoint past the log end (a power loss took what it
/// covered, or the file was damaged) describes another log: cleaning starts
/// from the log start again, as Kafka does, instead of never reaching the
/// records appended from now on.
#[test]
fn a_cleaner_checkpoint_past_the_log_end_starts_over() -> Result<()> {
    let dir = shm_tempdir();
    let clock = ManualClock::new(10_000);
    let log = open(dir.path(), config(300), &clock, 0)?;
    let mut model = Vec::new();
    for round in 0..4 {
        append(
            &log,
            &clock,
            &mut model,
            &[kv(1, &format!("a{round}"))],
            Compression::None,
        )?;
    }
    let end = log.log_end_offset();
    log.close()?;

    let log = open(dir.path(), config(300), &clock, end + 1_000)?;
    assert_eq!(log.cleaner_checkpoint(), log.log_start_offset());
    log.close()?;
    // One inside the log is kept.
    let log = open(dir.path(), config(300), &clock, 2)?;
    assert_eq!(log.cleaner_checkpoint(), 2);
    Ok(())
}
