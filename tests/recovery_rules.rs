//! The recovery rules: offsets are checked by their place (the CRC does not
//! cover a batch's base offset), damage below the recovery point refuses the
//! open and changes nothing, damage at or above it is cut and reported, a
//! missing segment is damage, reads and consumers never skip a batch whose
//! offsets do not fit, and a new log's directory is made durable.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::hooked::{FileHooks, HookedStorage};
use common::{
    Files, Rec, append_model, drafts, open_at, read_records, restore, segment_name, small_config,
    snapshot, snapshot_bases, spans,
};
use logbus::format::{self, BatchBuilder, BatchHeader};
use logbus::{
    Cluster, ClusterConfig, Compression, Consumer, ConsumerConfig, CorruptionKind, Error,
    FormatError, Log, LogConfig, ManualClock, NewTopic, OffsetReset, Result, StdStorage,
    TopicPartition,
};
use proptest::prelude::*;

/// A log of `batches` one-record batches, closed cleanly: its files, model
/// and config.
fn ten_batch_log(config: &LogConfig, batches: usize) -> Result<(Files, Vec<Rec>)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_at(dir.path(), config, 0)?;
    let mut model = Vec::new();
    for i in 0..batches {
        append_model(
            &log,
            &mut model,
            &[(1_000 + i as i64, Some(b"k".to_vec()), Some(vec![b'v'; 20]))],
        )?;
    }
    log.close()?;
    Ok((snapshot(dir.path()), model))
}

/// The damage: bit 2 of byte 7 (the low byte of the base offset) of
/// the 4th batch, which turns its base offset 3 into 7.
fn flip_fourth_base_offset(files: &mut Files) -> (usize, u64) {
    let name = segment_name(0, "log");
    let bytes = files.get_mut(&name).expect("log");
    let batch = spans(bytes)[3];
    assert_eq!(batch.base_offset, 3);
    bytes[batch.start + 7] ^= 1 << 2;
    assert_eq!(
        BatchHeader::parse(&bytes[batch.start..])
            .expect("header")
            .base_offset,
        7
    );
    (batch.start, batch.base_offset)
}

fn corrupt_parts(err: Error) -> (PathBuf, u64, CorruptionKind) {
    match err {
        Error::Corrupt {
            path,
            position,
            kind,
        } => (path, position, kind),
        other => panic!("expected Corrupt, got {other}"),
    }
}

/// Defect 2, as the issue describes it: a flipped bit in a batch's base
/// offset (not covered by the CRC) must never make the log silently serve
/// fewer records. In a cleanly closed log (recovery point at the end) the
/// damage lies below the recovery point: the open refuses, names the file
/// and the batch, and changes nothing. Compacted logs too (the batch after
/// the raised one shows the conflict, and the earlier one is blamed).
#[test]
fn a_flipped_base_offset_in_a_cleanly_closed_log_refuses_the_open() -> Result<()> {
    for compact in [false, true] {
        let config = LogConfig::builder().compact(compact).build()?;
        let (files, model) = ten_batch_log(&config, 10)?;
        let leo = model.len() as u64;
        let mut damaged = files.clone();
        let (position, offset) = flip_fourth_base_offset(&mut damaged);
        let dir = tempfile::tempdir().expect("tempdir");
        restore(dir.path(), &damaged);
        let err = open_at(dir.path(), &config, leo).expect_err("refused");
        let (path, at, kind) = corrupt_parts(err);
        assert_eq!(path, dir.path().join(segment_name(0, "log")));
        assert_eq!(at, position as u64, "compact {compact}: the damaged batch");
        match kind {
            CorruptionKind::BelowRecoveryPoint {
                offset: found,
                recovery_point,
                cause,
                next_valid,
            } => {
                assert_eq!((found, recovery_point), (offset, leo));
                assert!(
                    matches!(
                        *cause,
                        CorruptionKind::Batch(FormatError::OffsetsOutOfSequence { .. })
                    ),
                    "{cause}"
                );
                // The batches after it are valid and continue the log.
                assert!(next_valid.is_some(), "compact {compact}");
            }
            other => panic!("compact {compact}: {other}"),
        }
        assert!(snapshot(dir.path()) == damaged, "no file changed");
    }
    Ok(())
}

/// Defect 2 with recovery point 0 (nothing known to be flushed): the damage
/// may be a power loss's, so the log is cut at the damaged batch, and the
/// report says what was lost and that valid batches followed.
#[test]
fn a_flipped_base_offset_above_the_recovery_point_is_cut_and_reported() -> Result<()> {
    for compact in [false, true] {
        let config = LogConfig::builder().compact(compact).build()?;
        let (files, model) = ten_batch_log(&config, 10)?;
        let mut damaged = files.clone();
        let (position, offset) = flip_fourth_base_offset(&mut damaged);
        let dir = tempfile::tempdir().expect("tempdir");
        restore(dir.path(), &damaged);
        let log = open_at(dir.path(), &config, 0)?;
        let cut = log
            .recovery_report()
            .truncated
            .clone()
            .expect("the cut is reported");
        let what = format!("compact {compact}");
        assert_eq!(cut.path, dir.path().join(segment_name(0, "log")), "{what}");
        assert_eq!(cut.position, position as u64, "{what}");
        assert_eq!(cut.first_lost_offset, offset, "{what}");
        assert_eq!(cut.recovery_point, 0, "{what}");
        assert_eq!(cut.lost_end_offset, Some(10), "{what}");
        assert!(
            cut.valid_after.is_some() && cut.followed_by_valid_data(),
            "{what}"
        );
        assert!(cut.removed_segments.is_empty(), "{what}");
        assert_eq!(
            cut.bytes,
            damaged[&segment_name(0, "log")].len() as u64 - position as u64
        );
        // The log end offset and the records served agree: 0..3, nothing
        // at a wrong offset.
        assert_eq!(log.log_end_offset(), 3, "{what}");
        assert_eq!(
            read_records(&log, 0, 1 << 16)?,
            model[..3].to_vec(),
            "{what}"
        );
    }
    Ok(())
}

/// Defect 2 where the open cannot see the damage without reading the
/// whole segment: with an index entry per batch, a cleanly closed segment
/// is trusted after checking the batches from its last index entry on. The
/// read of the damaged batch then fails; no record is skipped or served at
/// a wrong offset, and every other record reads correctly.
#[test]
fn a_flipped_base_offset_the_open_cannot_see_fails_the_read() -> Result<()> {
    for compact in [false, true] {
        let config = LogConfig::builder()
            .compact(compact)
            .index_interval_bytes(1)
            .build()?;
        let (files, model) = ten_batch_log(&config, 10)?;
        let mut damaged = files.clone();
        let (_, offset) = flip_fourth_base_offset(&mut damaged);
        let dir = tempfile::tempdir().expect("tempdir");
        restore(dir.path(), &damaged);
        let log = open_at(dir.path(), &config, 10)?;
        assert_eq!(log.recovery_report().segments_scanned, 0, "trusted");
        assert_eq!(log.log_end_offset(), 10);
        for rec in &model {
            match log.read(rec.offset, 1 << 16) {
                Ok(read) => {
                    let mut next = rec.offset;
                    for batch in read.batches() {
                        for record in batch?.records()? {
                            let record = record?;
                            let at = record.offset() as u64;
                            if at < next {
                                continue;
                            }
                            assert_eq!(at, next, "read({}) skips nothing", rec.offset);
                            assert_eq!(
                                record.value().map(|v| v.to_vec()),
                                model[at as usize].value,
                                "read({})",
                                rec.offset
                            );
                            next += 1;
                        }
                    }
                    assert!(
                        next > rec.offset,
                        "read({}) returned its record",
                        rec.offset
                    );
                }
                Err(Error::Corrupt {
                    kind: CorruptionKind::Batch(FormatError::OffsetsOutOfSequence { .. }),
                    ..
                }) => assert!(
                    rec.offset == offset,
                    "compact {compact}: only the damaged batch fails, not read({})",
                    rec.offset
                ),
                Err(e) => panic!("read({}): {e}", rec.offset),
            }
        }
        let err = log.read(offset, 1 << 16).expect_err("the damaged batch");
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }
    Ok(())
}

fn tp(topic: &str) -> TopicPartition {
    TopicPartition::new(topic, 0)
}

/// The consumer's side of defect 2: a poll reaching the damaged batch
/// returns `CorruptRecord` at its offset, every time, until the application
/// seeks past it; nothing is skipped silently.
#[test]
fn a_consumer_never_skips_a_batch_with_a_flipped_base_offset() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    let config = logbus::TopicConfig::new().set("index.interval.bytes", "1")?;
    let partition = cluster
        .create_topic(NewTopic::new("t", 1).config(config))?
        .partition(0)?;
    for i in 0..10 {
        let mut batch = BatchBuilder::new(Compression::None);
        batch.append(1_000 + i, Some(b"k"), Some(format!("v{i}").as_bytes()), &[]);
        partition.append(&mut batch.build()?.to_vec())?;
    }
    drop(partition);
    cluster.close()?;
    let log = dir.path().join("broker-0/t-0").join(segment_name(0, "log"));
    let mut files: Files = [(segment_name(0, "log"), std::fs::read(&log).expect("read"))].into();
    flip_fourth_base_offset(&mut files);
    std::fs::write(&log, &files[&segment_name(0, "log")]).expect("write");

    let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    let config = ConsumerConfig::builder()
        .auto_offset_reset(OffsetReset::Earliest)
        .build()?;
    let mut consumer = Consumer::new(&cluster, config)?;
    consumer.assign(&[tp("t")])?;
    let mut seen = Vec::new();
    let err = loop {
        match consumer.poll(Duration::ZERO) {
            Ok(records) => {
                assert!(!records.is_empty(), "the damage stops the consumer");
                seen.extend(records.iter().map(|r| r.offset()));
            }
            Err(e) => break e,
        }
    };
    assert_eq!(seen, [0, 1, 2]);
    for err in [err, consumer.poll(Duration::ZERO).expect_err("again")] {
        assert!(
            matches!(err, Error::CorruptRecord { offset: 3, .. }),
            "{err}"
        );
    }
    assert_eq!(consumer.position(&tp("t"))?, 3);
    consumer.seek(&tp("t"), 4)?;
    let mut rest = Vec::new();
    loop {
        let records = consumer.poll(Duration::ZERO)?;
        if records.is_empty() {
            break;
        }
        rest.extend(records.iter().map(|r| r.offset()));
    }
    assert_eq!(rest, (4..10).collect::<Vec<_>>());
    Ok(())
}

/// A log of several small segments, closed cleanly.
fn segmented_log() -> Result<(Files, Vec<Rec>, LogConfig)> {
    let config = small_config(700);
    let (files, model) = common::closed_log(&config, 5, 6)?;
    Ok((files, model, config))
}

/// The missing segment: a segment file missing
/// between two others. Below the recovery point it is refused (file and
/// position: the end of the segment before the gap), nothing changed; at or
/// above it the log is cut at the gap, every later segment removed, and
/// the report names them and the offsets lost.
#[test]
fn a_missing_middle_segment_is_refused_below_the_recovery_point_and_cut_above() -> Result<()> {
    let (files, model, config) = segmented_log()?;
    let leo = model.last().expect("records").offset + 1;
    let bases = snapshot_bases(&files);
    let missing = bases[2];
    let mut damaged = files.clone();
    for suffix in ["log", "index", "timeindex"] {
        damaged.remove(&segment_name(missing, suffix));
    }
    let before_gap = segment_name(bases[1], "log");
    let gap_at = files[&before_gap].len() as u64;

    for rp in [leo, missing + 1, bases[3]] {
        let dir = tempfile::tempdir().expect("tempdir");
        restore(dir.path(), &damaged);
        let err = open_at(dir.path(), &config, rp).expect_err("refused");
        let (path, position, kind) = corrupt_parts(err);
        assert_eq!(path, dir.path().join(&before_gap), "rp {rp}");
        assert_eq!(position, gap_at, "rp {rp}");
        match kind {
            CorruptionKind::BelowRecoveryPoint { offset, cause, .. } => {
                assert_eq!(offset, missing);
                assert_eq!(
                    *cause,
                    CorruptionKind::MissingSegment {
                        expected: missing,
                        next_base: bases[3]
                    }
                );
            }
            other => panic!("rp {rp}: {other}"),
        }
        assert!(snapshot(dir.path()) == damaged, "rp {rp}: no file changed");
    }

    for rp in [0, missing] {
        let dir = tempfile::tempdir().expect("tempdir");
        restore(dir.path(), &damaged);
        let log = open_at(dir.path(), &config, rp)?;
        let cut = log.recovery_report().truncated.clone().expect("reported");
        assert_eq!(cut.path, dir.path().join(&before_gap));
        assert_eq!((cut.position, cut.bytes), (gap_at, 0));
        assert_eq!(cut.first_lost_offset, missing);
        assert_eq!(cut.lost_end_offset, Some(leo));
        assert_eq!(
            cut.cause,
            CorruptionKind::MissingSegment {
                expected: missing,
                next_base: bases[3]
            }
        );
        let removed: Vec<PathBuf> = bases[3..]
            .iter()
            .map(|&b| dir.path().join(segment_name(b, "log")))
            .collect();
        assert_eq!(cut.removed_segments, removed);
        assert!(removed.iter().all(|p| !p.exists()));
        assert_eq!(log.segment_base_offsets(), bases[..2].to_vec());
        assert_eq!(log.log_end_offset(), missing);
        let expected: Vec<Rec> = model
            .iter()
            .filter(|r| r.offset < missing)
            .cloned()
            .collect();
        assert_eq!(read_records(&log, 0, 1 << 16)?, expected);
        // Appends continue densely from the cut.
        let mut model = expected;
        append_model(&log, &mut model, &drafts("after", 2, 90_000))?;
        assert_eq!(model[model.len() - 2].offset, missing);
    }
    Ok(())
}

/// Defect 3 both ways, on the last segment: damage followed by valid
/// batches above the recovery point is cut and reported (not refused), and
/// a torn tail below the recovery point is refused (not cut).
#[test]
fn where_the_damage_lies_decides_what_it_means() -> Result<()> {
    let (files, model, config) = segmented_log()?;
    let leo = model.last().expect("records").offset + 1;
    let last_base = *snapshot_bases(&files).last().expect("segments");
    let name = segment_name(last_base, "log");
    let batches = spans(&files[&name]);
    assert!(batches.len() >= 3);
    // Zeros over the second batch of the last segment: a lost page, with
    // valid batches after it.
    let hole = batches[1];
    let mut holed = files.clone();
    holed.get_mut(&name).expect("log")[hole.start..hole.end].fill(0);
    // Its indexes lost too, so that recovery reads the whole segment (a
    // segment whose indexes pass their checks is trusted without reading
    // what lies before its last index entry; reads then report the hole).
    holed.remove(&segment_name(last_base, "index"));
    holed.remove(&segment_name(last_base, "timeindex"));
    // A torn last batch.
    let last = batches[batches.len() - 1];
    let mut torn = files.clone();
    torn.get_mut(&name).expect("log").truncate(last.end - 7);

    // Above the recovery point.
    let dir = tempfile::tempdir().expect("tempdir");
    restore(dir.path(), &holed);
    let log = open_at(dir.path(), &config, hole.base_offset)?;
    let cut = log.recovery_report().truncated.clone().expect("reported");
    assert_eq!(
        (cut.position, cut.first_lost_offset),
        (hole.start as u64, hole.base_offset)
    );
    assert_eq!(cut.valid_after, Some(hole.end as u64));
    assert_eq!(cut.lost_end_offset, Some(leo));
    assert!(cut.followed_by_valid_data());
    assert_eq!(log.log_end_offset(), hole.base_offset);

    // Below it: refused, nothing changed.
    for (what, damaged, position, offset) in [
        ("a lost page", &holed, hole.start, hole.base_offset),
        ("a torn tail", &torn, last.start, last.base_offset),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        restore(dir.path(), damaged);
        let err = open_at(dir.path(), &config, leo).expect_err(what);
        let (path, at, kind) = corrupt_parts(err);
        assert_eq!(
            (path, at),
            (dir.path().join(&name), position as u64),
            "{what}"
        );
        assert!(
            matches!(kind, CorruptionKind::BelowRecoveryPoint { offset: o, recovery_point, .. } if o == offset && recovery_point == leo),
            "{what}: {kind}"
        );
        assert!(snapshot(dir.path()) == *damaged, "{what}: no file changed");
    }
    Ok(())
}

/// Records which directories were synced (watches no file).
#[derive(Debug, Default)]
struct SyncedDirs(Mutex<Vec<PathBuf>>);

impl FileHooks for SyncedDirs {
    fn wraps(&self, _path: &Path) -> bool {
        false
    }

    fn before_sync_dir(&self, path: &Path) {
        self.0.lock().expect("lock").push(path.to_path_buf());
    }
}

/// A new log's first segment files and its directory
/// (every directory the open created, in its parent) are durable before
/// the open returns, so nothing acknowledged later can lose its files.
#[test]
fn a_new_logs_directory_and_first_segment_are_synced_before_the_open_returns() -> Result<()> {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("a").join("b");
    let synced_dirs = Arc::new(SyncedDirs::default());
    let storage = Arc::new(HookedStorage::new(
        Arc::new(StdStorage::new()),
        synced_dirs.clone(),
    ));
    let log = Log::builder(&dir)
        .storage(storage.clone())
        .clock(Arc::new(ManualClock::new(0)))
        .open()?;
    let synced = synced_dirs.0.lock().expect("lock").clone();
    for expected in [
        dir.clone(),
        root.path().join("a"),
        root.path().to_path_buf(),
    ] {
        assert!(
            synced.contains(&expected),
            "{} synced: {synced:?}",
            expected.display()
        );
    }
    assert!(dir.join(segment_name(0, "log")).exists());
    drop(log);

    // Reopening an existing log creates nothing, so it syncs nothing more
    // than recovery needs (here: nothing).
    synced_dirs.0.lock().expect("lock").clear();
    let log = Log::builder(&dir)
        .storage(storage.clone())
        .clock(Arc::new(ManualClock::new(0)))
        .recovery_point(0)
        .open()?;
    assert_eq!(log.log_end_offset(), 0);
    assert!(
        !synced_dirs
            .0
            .lock()
            .expect("lock")
            .contains(&root.path().join("a")),
        "an existing directory is not re-synced in its parent"
    );
    Ok(())
}

/// A batch of one record carrying `base` as its base offset (valid CRC:
/// the CRC does not cover it).
fn batch_at(base: i64, delta_records: usize) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Compression::None).base_offset(base);
    for i in 0..delta_records {
        builder.append(1_000 + i as i64, Some(b"k"), Some(b"v"), &[]);
    }
    builder.build().expect("batch").to_vec()
}

/// A stored base offset of -1 (or one whose last offset overflows) never
/// panics or wraps: recovery treats the batch as damage, and reads of a
/// segment the open trusted without reading it report it.
#[test]
fn negative_and_overflowing_base_offsets_are_damage_never_a_panic() -> Result<()> {
    let config = LogConfig::builder().index_interval_bytes(1).build()?;
    let (files, _) = ten_batch_log(&config, 6)?;
    let name = segment_name(0, "log");
    let batches = spans(&files[&name]);
    for bad in [-1i64, i64::MIN, i64::MAX, i64::MAX - 1] {
        let mut damaged = files.clone();
        let bytes = damaged.get_mut(&name).expect("log");
        format::set_base_offset(&mut bytes[batches[1].start..], bad);
        // Above the recovery point: cut at the bad batch.
        let dir = tempfile::tempdir().expect("tempdir");
        restore(dir.path(), &damaged);
        let log = open_at(dir.path(), &config, 0)?;
        let cut = log.recovery_report().truncated.clone().expect("reported");
        assert_eq!(
            (cut.position, cut.first_lost_offset),
            (batches[1].start as u64, 1)
        );
        assert_eq!(log.log_end_offset(), 1);
        drop(log);
        // Trusted (cleanly closed, index entry per batch): the open does not
        // read the bad batch, a read does, and fails.
        let dir = tempfile::tempdir().expect("tempdir");
        restore(dir.path(), &damaged);
        let log = open_at(dir.path(), &config, 6)?;
        for offset in 0..6 {
            match log.read(offset, 1 << 16) {
                Ok(read) => {
                    for batch in read.batches() {
                        let header = *batch?.header();
                        assert!(header.base_offset >= 0, "base {bad}: read({offset})");
                    }
                }
                Err(Error::Corrupt { .. }) => assert_eq!(offset, 1, "base {bad}"),
                Err(e) => panic!("base {bad}: read({offset}): {e}"),
            }
        }
        let _ = log.offset_for_timestamp(0)?;
    }
    // And a whole segment of such batches.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bytes = batch_at(-1, 1);
    bytes.extend_from_slice(&batch_at(i64::MAX - 1, 3));
    std::fs::write(dir.path().join(segment_name(0, "log")), &bytes).expect("write");
    let log = open_at(dir.path(), &config, 0)?;
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(
        log.recovery_report().truncated.as_ref().map(|c| c.position),
        Some(0)
    );
    Ok(())
}

/// Logs the property test damages, written once.
fn property_logs() -> &'static [(Files, Vec<Rec>, LogConfig)] {
    static LOGS: OnceLock<Vec<(Files, Vec<Rec>, LogConfig)>> = OnceLock::new();
    LOGS.get_or_init(|| {
        [(600, 4, 5), (1_500, 3, 3)]
            .into_iter()
            .map(|(segment_bytes, segments, in_last)| {
                let config = small_config(segment_bytes);
                let (files, model) =
                    common::closed_log(&config, segments, in_last).expect("written log");
                (files, model, config)
            })
            .collect()
    })
}

/// What a property case does to one file.
#[derive(Debug, Clone, Copy)]
enum Change {
    Flip { at: u32, bit: u8 },
    Truncate { at: u32 },
}

/// The first offset `change` to log file `name` can affect: the base offset
/// of the batch holding the byte (or the first batch cut away); `None`
/// when it affects no record (an index file, a truncation at the end).
fn first_affected(files: &Files, name: &str, change: Change) -> Option<u64> {
    name.strip_suffix(".log")?;
    let batches = spans(&files[name]);
    let position = match change {
        Change::Flip { at, .. } | Change::Truncate { at } => at as usize,
    };
    let holding = batches.iter().find(|s| s.end > position);
    match (holding, change) {
        // A flip of a leader epoch byte changes no record.
        (Some(s), Change::Flip { .. }) if (12..16).contains(&(position - s.start)) => None,
        (Some(s), _) => Some(s.base_offset),
        (None, _) => None,
    }
}

/// Every record `log` serves from 0 on, until the first read that fails:
/// `(records, failed)`. A failure is `Corrupt` or a batch failing its CRC.
fn served(log: &Log) -> (Vec<Rec>, bool) {
    let mut out: Vec<Rec> = Vec::new();
    let mut next = 0;
    let end = log.log_end_offset();
    while next < end {
        let Ok(read) = log.read(next, 1 << 16) else {
            return (out, true);
        };
        let before = next;
        for batch in read.batches() {
            let Ok(batch) = batch else {
                return (out, true);
            };
            let Ok(records) = batch.records() else {
                return (out, true);
            };
            for record in records {
                let Ok(record) = record else {
                    return (out, true);
                };
                let offset = record.offset() as u64;
                if offset >= next {
                    out.push(Rec {
                        offset,
                        timestamp: record.timestamp(),
                        key: record.key().map(|k| k.to_vec()),
                        value: record.value().map(|v| v.to_vec()),
                    });
                    next = offset + 1;
                }
            }
            next = next.max(batch.header().next_offset() as u64);
        }
        assert!(next > before, "reads make progress");
    }
    (out, false)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// For a random log and one random flipped bit or truncation anywhere
    /// (log or index files), the open either refuses (only when the damage
    /// lies below the recovery point) with no file changed, or succeeds and
    /// serves a prefix of the original records, each at its own offset,
    /// losing nothing below the recovery point unless a read then fails.
    #[test]
    fn damage_is_refused_below_the_recovery_point_or_cut_to_a_prefix(
        which in 0usize..2,
        file in any::<prop::sample::Index>(),
        fraction in 0.0f64..1.0,
        bit in 0u8..8,
        truncate in prop::bool::weighted(0.3),
        rp_choice in 0usize..3,
        rp_fraction in 0.0f64..1.0,
    ) {
        let (files, model, config) = &property_logs()[which];
        let leo = model.last().expect("records").offset + 1;
        let names: Vec<&String> = files.keys().collect();
        let name = names[file.index(names.len())].clone();
        let len = files[&name].len();
        prop_assume!(len > 0);
        let at = ((len as f64 * fraction) as usize).min(len - 1) as u32;
        let change = if truncate {
            Change::Truncate { at }
        } else {
            Change::Flip { at, bit }
        };
        let rp = match rp_choice {
            0 => 0,
            1 => (leo as f64 * rp_fraction) as u64,
            _ => leo,
        };
        let mut damaged = files.clone();
        let bytes = damaged.get_mut(&name).expect("file");
        match change {
            Change::Flip { at, bit } => bytes[at as usize] ^= 1 << bit,
            Change::Truncate { at } => bytes.truncate(at as usize),
        }
        let affected = first_affected(files, &name, change);
        let what = format!("{change:?} of {name}, rp {rp}, affects {affected:?}");
        let dir = tempfile::tempdir().expect("tempdir");
        restore(dir.path(), &damaged);
        match open_at(dir.path(), config, rp) {
            Err(Error::Corrupt { .. }) => {
                prop_assert!(affected.is_some_and(|a| a < rp), "{what}: refused");
                prop_assert!(snapshot(dir.path()) == damaged, "{what}: a file changed");
            }
            Err(e) => prop_assert!(false, "{what}: {e}"),
            Ok(log) => {
                let (got, failed) = served(&log);
                prop_assert!(got.len() <= model.len(), "{what}");
                prop_assert_eq!(&got[..], &model[..got.len()], "{}: a prefix", what);
                let kept = got.len() as u64;
                if failed {
                    // A read fails only at damage the open did not read.
                    prop_assert!(affected.is_some_and(|a| a < rp && kept >= a), "{what}: read failed at {kept}");
                } else {
                    // Lost offsets are exactly those from the damage on, and
                    // only when the damage lies at or above the recovery
                    // point.
                    prop_assert_eq!(log.log_end_offset(), kept, "{}", what);
                    prop_assert!(
                        kept == leo || (affected == Some(kept) && kept >= rp),
                        "{what}: lost offsets {kept}..{leo}"
                    );
                }
                if let Some(cut) = &log.recovery_report().truncated {
                    prop_assert!(cut.first_lost_offset >= rp, "{what}: cut below the rp");
                    prop_assert_eq!(cut.first_lost_offset, log.log_end_offset(), "{}", what);
                }
            }
        }
    }
}

/// A compacted log the cleaner rewrote (offsets with gaps, header-only
/// batches): a reopen on its indexes or by a full scan finds it whole (the
/// rules for compacted logs raise no false alarm); and for flipped bits
/// anywhere in it, an open refuses only for damage below the recovery
/// point, changing nothing, and never cuts below it.
#[test]
fn a_cleaned_compacted_log_reopens_whole_and_its_damage_follows_the_rules() -> Result<()> {
    let config = LogConfig::builder()
        .segment_bytes(500)
        .index_interval_bytes(64)
        .segment_index_bytes(4096)
        .segment_time(None)
        .retention_time(None)
        .compact(true)
        .delete(false)
        .delete_retention(Duration::from_millis(0))
        .build()?;
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_000);
    let log = Log::builder(dir.path())
        .config(config.clone())
        .clock(Arc::new(clock.clone()))
        .open()?;
    for i in 0..60u8 {
        let mut builder = BatchBuilder::new(Compression::None);
        builder.append(
            1_000 + i64::from(i),
            Some(&[b'k', i % 5]),
            Some(&[i; 12]),
            &[],
        );
        if i % 3 == 0 {
            builder.append(1_000 + i64::from(i), Some(&[b't', i]), None, &[]);
        }
        log.append(&mut builder.build()?.to_vec(), 0)?;
    }
    clock.advance_ms(10);
    let report = log.clean()?;
    assert!(report.segments_cleaned > 0);
    let leo = log.log_end_offset();
    let before = read_all_records(&log)?;
    log.close()?;
    let files = snapshot(dir.path());

    for rp in [0, leo] {
        let dir = tempfile::tempdir().expect("tempdir");
        restore(dir.path(), &files);
        let log = open_at(dir.path(), &config, rp)?;
        assert!(log.recovery_report().truncated.is_none(), "rp {rp}");
        assert_eq!(log.log_end_offset(), leo);
        assert_eq!(read_all_records(&log)?, before, "rp {rp}");
    }

    let bases = snapshot_bases(&files);
    let mut outcomes = [0usize; 3];
    for &base in &bases {
        let name = segment_name(base, "log");
        let batches = spans(&files[&name]);
        for span in &batches {
            // The base offset's low byte, and a byte the CRC covers.
            for position in [span.start + 7, span.start + 30] {
                for rp in [0, leo] {
                    let what = format!("flip at {position} of {name}, rp {rp}");
                    let mut damaged = files.clone();
                    damaged.get_mut(&name).expect("log")[position] ^= 0x04;
                    let dir = tempfile::tempdir().expect("tempdir");
                    restore(dir.path(), &damaged);
                    match open_at(dir.path(), &config, rp) {
                        Err(Error::Corrupt { kind, .. }) => {
                            assert!(span.base_offset < rp, "{what}: refused: {kind}");
                            assert!(snapshot(dir.path()) == damaged, "{what}: changed");
                            outcomes[0] += 1;
                        }
                        Err(e) => panic!("{what}: {e}"),
                        Ok(log) => {
                            if let Some(cut) = &log.recovery_report().truncated {
                                assert!(cut.first_lost_offset >= rp, "{what}: {cut:?}");
                                assert!(cut.first_lost_offset <= span.base_offset, "{what}");
                                outcomes[1] += 1;
                            } else {
                                outcomes[2] += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    // Each outcome happens: refusals (below the recovery point), cuts
    // (above it), and opens that trust the damaged segment's indexes.
    assert!(outcomes.iter().all(|&n| n > 0), "{outcomes:?}");
    Ok(())
}

/// Every record of `log`, gaps and all, by reading from each batch's end.
fn read_all_records(log: &Log) -> Result<Vec<Rec>> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    while next < log.log_end_offset() {
        let read = log.read(next, 1 << 16)?;
        for batch in read.batches() {
            let batch = batch?;
            for record in batch.records()? {
                let record = record?;
                if record.offset() as u64 >= next {
                    out.push(Rec {
                        offset: record.offset() as u64,
                        timestamp: record.timestamp(),
                        key: record.key().map(|k| k.to_vec()),
                        value: record.value().map(|v| v.to_vec()),
                    });
                }
            }
            next = next.max(batch.header().next_offset() as u64);
        }
    }
    Ok(out)
}

/// An interrupted cleaning pass's `.swap` file is judged before anything
/// changes: an intact one waits while an open is refused for other damage
/// (and is completed by an open that succeeds); a damaged one refuses the
/// open whatever the recovery point, since the cleaner fsyncs a cleaned
/// segment before it names it `.swap`, so no power loss explains damage
/// in it.
#[test]
fn swap_files_are_judged_before_anything_changes() -> Result<()> {
    let (files, model, config) = segmented_log()?;
    let leo = model.last().expect("records").offset + 1;
    let bases = snapshot_bases(&files);
    let swapped = segment_name(bases[1], "log");
    let swap_name = format!("{swapped}.swap");
    let mut with_swap = files.clone();
    with_swap.insert(swap_name.clone(), files[&swapped].clone());

    // Intact, and the open succeeds: the swap is completed.
    let dir = tempfile::tempdir().expect("tempdir");
    restore(dir.path(), &with_swap);
    let log = open_at(dir.path(), &config, leo)?;
    assert_eq!(log.recovery_report().swaps_completed, 1);
    assert!(!dir.path().join(&swap_name).exists());
    assert_eq!(read_records(&log, 0, 1 << 16)?, model);
    drop(log);

    // Intact, but the open is refused for a missing segment: nothing moves.
    let mut refused = with_swap.clone();
    refused.remove(&segment_name(bases[3], "log"));
    let dir = tempfile::tempdir().expect("tempdir");
    restore(dir.path(), &refused);
    let err = open_at(dir.path(), &config, leo).expect_err("refused");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(snapshot(dir.path()) == refused, "the swap waits");

    // Damaged: refused even with recovery point 0.
    let mut damaged = with_swap.clone();
    let bytes = damaged.get_mut(&swap_name).expect("swap");
    let at = spans(bytes)[1].start + 40;
    bytes[at] ^= 0x01;
    let dir = tempfile::tempdir().expect("tempdir");
    restore(dir.path(), &damaged);
    let err = open_at(dir.path(), &config, 0).expect_err("refused");
    let (path, _, kind) = corrupt_parts(err);
    assert_eq!(path, dir.path().join(&swap_name));
    assert!(matches!(kind, CorruptionKind::Batch(_)), "{kind}");
    assert!(snapshot(dir.path()) == damaged, "no file changed");
    Ok(())
}

/// A roll just before a power loss can leave an empty last segment above
/// the end of the segment before it (whose unflushed end was lost). In a
/// log that is not compacted that is a gap: cut (above the recovery point)
/// and reported. In a compacted log gaps between segments are legal, and
/// the empty segment, which holds nothing, is removed so offsets below the
/// log end stay accounted for.
#[test]
fn an_empty_last_segment_above_the_previous_end_is_removed() -> Result<()> {
    for compact in [false, true] {
        let config = LogConfig::builder()
            .compact(compact)
            .segment_bytes(700)
            .segment_time(None)
            .build()?;
        let (files, model) = ten_batch_log(&config, 12)?;
        let leo = model.len() as u64;
        let bases = snapshot_bases(&files);
        let stray = leo + 5;
        let mut damaged = files.clone();
        damaged.insert(segment_name(stray, "log"), Vec::new());
        let dir = tempfile::tempdir().expect("tempdir");
        restore(dir.path(), &damaged);
        let log = open_at(dir.path(), &config, leo)?;
        let report = log.recovery_report().clone();
        assert_eq!(log.segment_base_offsets(), bases, "compact {compact}");
        assert_eq!(log.log_end_offset(), leo);
        assert!(!dir.path().join(segment_name(stray, "log")).exists());
        if compact {
            assert!(report.truncated.is_none());
            assert!(report.removed_files >= 1);
        } else {
            let cut = report.truncated.expect("reported");
            assert_eq!(
                cut.cause,
                CorruptionKind::MissingSegment {
                    expected: leo,
                    next_base: stray
                }
            );
            assert_eq!(
                cut.removed_segments,
                [dir.path().join(segment_name(stray, "log"))]
            );
            // A segment is created when the log reaches its base offset.
            assert_eq!(cut.lost_end_offset, Some(stray));
        }
        assert_eq!(read_records(&log, 0, 1 << 16)?, model);
    }
    Ok(())
}
