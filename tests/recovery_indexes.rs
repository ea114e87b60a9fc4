//! Damaged offset and time indexes: whatever happened to them, reads by
//! offset and lookups by timestamp after a reopen answer exactly what a full
//! scan of the appended records answers.

mod common;

use common::{
    Files, Rec, Rng, append_model, check_every_offset, check_timestamps, open_at, read_records,
    restore, segment_name, small_config, snapshot, snapshot_bases,
};
use logbus::{LogConfig, Result};

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
    let config = small_config(900);
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
