//! Damaged offset and time indexes: whatever happened to them, reads by
//! offset and lookups by timestamp after a reopen answer exactly what a full
//! scan of the appended records answers.

mod common;

use common::{
    Files, Rec, Rng, append_model, check_every_offset, check_timestamps, open_at, read_records,
    restore, segment_name, small_config, snapshot, snapshot_bases,
};
use logbus::{LogConfig, RecoveryReport, Result};

/// Two copies of one log's files: after a clean close (indexes trimmed,
/// final time index entry written) and while it was still open after a
/// flush (the active segment's indexes preallocated), as a crash leaves it.
struct Written {
    closed: Files,
    live: Files,
    model: Vec<Rec>,
    config: LogConfig,
}

/// Timestamps that go up and down, so the time index matters.
fn written_log() -> Result<Written> {
    written_log_with(small_config(900))
}

fn written_log_with(config: LogConfig) -> Result<Written> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_at(dir.path(), &config, 0)?;
    let mut model = Vec::new();
    let mut rng = Rng(0x1de7);
    let mut i = 0;
    while log.segment_count() < 4 || model.len() < 120 {
        let count = 1 + rng.below(4) as usize;
        let records: Vec<_> = (0..count)
            .map(|j| {
                let ts = 1_000 + rng.below(2_000) as i64;
                let key = (j % 2 == 0).then(|| format!("k{i}-{j}").into_bytes());
                let value = Some(vec![b'v'; rng.below(40) as usize]);
                (ts, key, value)
            })
            .collect();
        append_model(&log, &mut model, &records)?;
        i += 1;
    }
    log.flush()?;
    let live = snapshot(dir.path());
    log.close()?;
    let closed = snapshot(dir.path());
    Ok(Written {
        closed,
        live,
        model,
        config,
    })
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    Random,
    Zeros,
    TruncatedMidEntry,
    EntriesSwapped,
    Deleted,
    Emptied,
}

const DAMAGES: [Damage; 6] = [
    Damage::Random,
    Damage::Zeros,
    Damage::TruncatedMidEntry,
    Damage::EntriesSwapped,
    Damage::Deleted,
    Damage::Emptied,
];

fn apply(files: &mut Files, name: &str, damage: Damage, entry_size: usize, seed: u64) {
    let mut rng = Rng(seed);
    match damage {
        Damage::Deleted => {
            files.remove(name);
        }
        Damage::Emptied => files.get_mut(name).expect("index").clear(),
        Damage::Random => {
            let bytes = files.get_mut(name).expect("index");
            let len = bytes.len().max(entry_size * 3);
            *bytes = rng.bytes(len);
        }
        Damage::Zeros => {
            let bytes = files.get_mut(name).expect("index");
            let len = bytes.len().max(entry_size * 3);
            *bytes = vec![0; len];
        }
        Damage::TruncatedMidEntry => {
            let bytes = files.get_mut(name).expect("index");
            let entries = used_entries(bytes, entry_size);
            let cut = (entries.saturating_sub(1)) * entry_size + entry_size / 2;
            bytes.truncate(cut.min(bytes.len()));
        }
        Damage::EntriesSwapped => {
            let bytes = files.get_mut(name).expect("index");
            let entries = used_entries(bytes, entry_size);
            if entries >= 2 {
                let a = rng.below(entries as u64 - 1) as usize;
                let b = entries - 1;
                for k in 0..entry_size {
                    bytes.swap(a * entry_size + k, b * entry_size + k);
                }
            } else {
                // Nothing to swap: duplicate garbage entries instead.
                let junk = rng.bytes(entry_size);
                bytes.splice(0..0, junk.iter().chain(&junk).copied());
            }
        }
    }
}

/// Entries in use: the slots before the first all-zero slot (the rest of a
/// preallocated file is zeros).
fn used_entries(bytes: &[u8], entry_size: usize) -> usize {
    bytes
        .chunks_exact(entry_size)
        .position(|slot| slot.iter().all(|&b| b == 0))
        .unwrap_or(bytes.len() / entry_size)
        .max(usize::from(!bytes.is_empty()))
}

fn check_answers(w: &Written, files: &Files, rp: u64, what: &str) -> Result<()> {
    common::with_context(what, || check_answers_inner(w, files, rp, what))
}

fn check_answers_inner(w: &Written, files: &Files, rp: u64, what: &str) -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    restore(dir.path(), files);
    let log =
        open_at(dir.path(), &w.config, rp).unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
    assert!(log.recovery_report().truncated.is_none(), "{what}");
    assert_eq!(read_records(&log, 0, 1 << 16)?, w.model, "{what}");
    check_every_offset(&log, &w.model)?;
    check_timestamps(&log, &w.model, 0, (990..3_010).step_by(7))?;
    // Appends after the reopen are found by both lookups too.
    let mut model = w.model.clone();
    append_model(&log, &mut model, &[(5_000, None, Some(b"late".to_vec()))])?;
    check_timestamps(&log, &model, 0, [2_999, 3_000, 4_999, 5_000, 5_001])?;
    log.close()?;
    let log = open_at(dir.path(), &w.config, 0)?;
    check_every_offset(&log, &model)?;
    check_timestamps(&log, &model, 0, (990..5_010).step_by(31))?;
    Ok(())
}

fn run(kind: &str, entry_size: usize) -> Result<()> {
    let w = written_log()?;
    let leo = w.model.last().expect("records").offset + 1;
    let bases = snapshot_bases(&w.closed);
    let mut failures = Vec::new();
    for (state, files) in [("closed", &w.closed), ("live", &w.live)] {
        for base in [bases[1], *bases.last().expect("segments")] {
            let name = segment_name(base, kind);
            for (d, damage) in DAMAGES.iter().enumerate() {
                let mut damaged = files.clone();
                apply(&mut damaged, &name, *damage, entry_size, 7 + d as u64);
                for rp in [0, leo] {
                    let what = format!("{state} log, {name} {damage:?}, recovery point {rp}");
                    let outcome =
                        std::panic::catch_unwind(|| check_answers(&w, &damaged, rp, &what));
                    match outcome {
                        Ok(result) => result?,
                        Err(panic) => failures.push(
                            panic
                                .downcast_ref::<String>()
                                .cloned()
                                .unwrap_or_else(|| what.clone()),
                        ),
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures: {failures:#?}",
        failures.len()
    );
    Ok(())
}

#[test]
fn damaged_offset_indexes_never_change_answers() -> Result<()> {
    run("index", 8)
}

#[test]
fn damaged_time_indexes_never_change_answers() -> Result<()> {
    run("timeindex", 12)
}

#[test]
fn every_truncation_of_a_sealed_time_index_keeps_answers() -> Result<()> {
    // A time index cut at each entry boundary: its last entry is then an
    // intermediate one, which must not pass for the segment's maximum.
    let w = written_log()?;
    let leo = w.model.last().expect("records").offset + 1;
    let bases = snapshot_bases(&w.closed);
    for base in &bases {
        let name = segment_name(*base, "timeindex");
        let entries = w.closed[&name].len() / 12;
        for keep in 0..entries {
            let mut damaged = w.closed.clone();
            damaged.get_mut(&name).expect("index").truncate(keep * 12);
            check_answers(&w, &damaged, leo, &format!("{name} cut to {keep} entries"))?;
        }
    }
    Ok(())
}

/// A segment whose largest timestamp is in an early batch, followed by many
/// indexed batches with smaller ones: its indexes are trusted on reopen
/// (found from the offset index entry below that batch, without reading
/// the segment from its start) and every lookup still equals the model.
#[test]
fn an_early_largest_timestamp_is_found_without_a_scan() -> Result<()> {
    let config = LogConfig::builder()
        .segment_bytes(1 << 20)
        .index_interval_bytes(64)
        .build()?;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_at(dir.path(), &config, 0)?;
    let mut model = Vec::new();
    for i in 0..200i64 {
        let ts = if i == 20 { 90_000 } else { 1_000 + i };
        append_model(&log, &mut model, &[(ts, None, Some(vec![b'x'; 30]))])?;
    }
    let end = log.log_end_offset();
    log.close()?;
    let log = open_at(dir.path(), &config, end)?;
    assert_eq!(log.recovery_report().segments_scanned, 0, "indexes trusted");
    check_timestamps(
        &log,
        &model,
        0,
        [0, 1_000, 1_100, 1_199, 1_200, 89_999, 90_000, 90_001],
    )?;
    check_every_offset(&log, &model)?;
    Ok(())
}

/// Opens a copy of `files` at recovery point `rp` and returns what recovery
/// did.
fn report_of(files: &Files, config: &LogConfig, rp: u64) -> Result<RecoveryReport> {
    let dir = tempfile::tempdir().expect("tempdir");
    restore(dir.path(), files);
    let log = open_at(dir.path(), config, rp)?;
    let report = log.recovery_report().clone();
    log.close()?;
    Ok(report)
}

/// Writes `bytes` at `at` in the file `name`, extending it with zeros.
fn write_at(files: &mut Files, name: &str, at: usize, bytes: &[u8]) {
    let file = files.get_mut(name).expect("index");
    if file.len() < at + bytes.len() {
        file.resize(at + bytes.len(), 0);
    }
    file[at..at + bytes.len()].copy_from_slice(bytes);
}

/// Kafka's default `segment.index.bytes`.
const TEN_MIB: usize = 10 << 20;

/// After a crash the active segment's index files still have their
/// preallocated size (`segment.index.bytes`, Kafka's default 10 MiB here):
/// they were never trimmed. Recovery does not trust them for the segment's
/// counters, even with every record below the recovery point, and does not
/// read their zero tails: that segment alone is scanned and its indexes
/// rebuilt (emptied unread, then refilled from the log). Garbage deep in
/// such a tail is never trusted and never comes back. A sealed segment
/// whose trim a power loss undid (its index as long as the preallocation
/// again) is rebuilt the same way; trimmed indexes are trusted as before.
#[test]
fn untrimmed_preallocated_indexes_are_rebuilt_not_read_or_trusted() -> Result<()> {
    let config = LogConfig::builder()
        .segment_bytes(900)
        .index_interval_bytes(128)
        .segment_index_bytes(TEN_MIB as u64)
        .segment_time(None)
        .retention_time(None)
        .build()?;
    let w = written_log_with(config.clone())?;
    let leo = w.model.last().expect("records").offset + 1;
    let bases = snapshot_bases(&w.closed);
    let active = *bases.last().expect("segments");
    let (index, time_index) = (
        segment_name(active, "index"),
        segment_name(active, "timeindex"),
    );
    assert_eq!(w.live[&index].len(), TEN_MIB, "preallocated while live");
    assert!(w.closed[&index].len() < 4096, "trimmed by the close");

    // Closed cleanly: every index trimmed and trusted.
    let report = report_of(&w.closed, &config, leo)?;
    assert_eq!((report.segments_scanned, report.indexes_rebuilt), (0, 0));

    // As a crash leaves it: only the active segment is rebuilt, whichever
    // the recovery point.
    for rp in [leo, 0] {
        let report = report_of(&w.live, &config, rp)?;
        let scanned = if rp == 0 { bases.len() } else { 1 };
        assert_eq!(
            (report.segments_scanned, report.indexes_rebuilt),
            (scanned, scanned),
            "recovery point {rp}"
        );
        check_answers(&w, &w.live, rp, &format!("live, recovery point {rp}"))?;
    }

    // Garbage after the zero slots of the active segment's tails.
    let mut damaged = w.live.clone();
    write_at(&mut damaged, &index, TEN_MIB - 4096, &[0x5a; 64]);
    write_at(&mut damaged, &time_index, 9 << 20, &[0xa5; 120]);
    let report = report_of(&damaged, &config, leo)?;
    assert_eq!((report.segments_scanned, report.indexes_rebuilt), (1, 1));
    check_answers(&w, &damaged, leo, "garbage in the active segment's tails")?;
    let dir = tempfile::tempdir().expect("tempdir");
    restore(dir.path(), &damaged);
    open_at(dir.path(), &config, leo)?.close()?;
    let after = common::snapshot(dir.path());
    assert_eq!(after[&index], w.closed[&index], "rebuilt, the garbage gone");
    assert_eq!(after[&time_index], w.closed[&time_index]);

    // A sealed segment whose trim was lost, with and without garbage after
    // zeros: rebuilt, not trusted.
    let sealed = segment_name(bases[1], "index");
    for garbage in [false, true] {
        let mut untrimmed = w.closed.clone();
        write_at(&mut untrimmed, &sealed, TEN_MIB - 8, &[0; 8]);
        if garbage {
            write_at(&mut untrimmed, &sealed, 4096, &[0x77; 16]);
        }
        let report = report_of(&untrimmed, &config, leo)?;
        assert_eq!(
            (report.segments_scanned, report.indexes_rebuilt),
            (1, 1),
            "garbage {garbage}"
        );
        check_answers(
            &w,
            &untrimmed,
            leo,
            &format!("untrimmed sealed, garbage {garbage}"),
        )?;
    }
    Ok(())
}
