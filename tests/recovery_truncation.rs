//! Recovery after a torn tail: the last segment's log file (or its indexes)
//! cut at every byte position of its last batches.

mod common;

use std::path::Path;

use common::{
    Files, Rec, append_model, check_every_offset, check_timestamps, drafts, open_at, read_records,
    restore, small_config, snapshot, snapshot_bases, spans,
};
use logbus::{CorruptionKind, Error, LogConfig, Result};

const SEGMENT_BYTES: u64 = 700;

/// A closed log of several segments, its files and the model of its records.
fn written_log() -> Result<(Files, Vec<Rec>, LogConfig)> {
    let config = small_config(SEGMENT_BYTES);
    let (files, model) = common::closed_log(&config, 4, 8)?;
    Ok((files, model, config))
}

/// The model's records below `end`.
fn prefix(model: &[Rec], end: u64) -> Vec<Rec> {
    model.iter().filter(|r| r.offset < end).cloned().collect()
}

/// Reopens `dir` after damage and checks that it holds exactly `expected`,
/// that appends continue after it, and that a second reopen keeps both.
fn check_recovered(dir: &Path, config: &LogConfig, rp: u64, expected: &[Rec]) -> Result<()> {
    let log = open_at(dir, config, rp)?;
    let end = expected.last().map_or(0, |r| r.offset + 1);
    assert_eq!(log.log_end_offset(), end, "log end offset");
    assert_eq!(read_records(&log, 0, 256)?, expected);
    let mut model = expected.to_vec();
    append_model(&log, &mut model, &drafts("after", 2, 99_000))?;
    assert_eq!(model[model.len() - 2].offset, end, "appends continue");
    log.close()?;
    let log = open_at(dir, config, 0)?;
    assert!(
        log.recovery_report().truncated.is_none(),
        "clean second open"
    );
    assert_eq!(read_records(&log, 0, 1 << 16)?, model);
    log.close()?;
    Ok(())
}

#[test]
fn a_torn_log_tail_is_cut_at_every_byte() -> Result<()> {
    let (files, model, config) = written_log()?;
    let last_base = *snapshot_bases(&files).last().expect("segments");
    let log_name = common::segment_name(last_base, "log");
    let bytes = &files[&log_name];
    let batches = spans(bytes);
    assert!(batches.len() >= 3);
    let from = batches[batches.len() - 3].start;
    let mut cuts_reported = 0;
    for cut in from..=bytes.len() {
        let dir = tempfile::tempdir().expect("tempdir");
        restore(dir.path(), &files);
        std::fs::write(dir.path().join(&log_name), &bytes[..cut]).expect("cut");
        // The complete batches before `cut`.
        let kept = batches.iter().take_while(|s| s.end <= cut).last();
        let valid = kept.map_or(0, |s| s.end);
        let end = kept.map_or(last_base, |s| s.last_offset + 1);

        let log = open_at(dir.path(), &config, 0)?;
        let report = log.recovery_report().clone();
        if cut == valid {
            assert_eq!(report.truncated, None, "cut {cut} at a batch boundary");
        } else {
            let tail = report
                .truncated
                .as_ref()
                .unwrap_or_else(|| panic!("cut {cut}: the torn tail is reported"));
            assert_eq!(tail.path, dir.path().join(&log_name));
            assert_eq!(
                (tail.position, tail.bytes),
                (valid as u64, (cut - valid) as u64),
                "cut {cut}"
            );
            cuts_reported += 1;
        }
        assert_eq!(
            std::fs::metadata(dir.path().join(&log_name))
                .expect("log file")
                .len(),
            valid as u64,
            "the torn bytes are gone from the file"
        );
        let expected = prefix(&model, end);
        assert_eq!(read_records(&log, 0, 1 << 16)?, expected, "cut {cut}");
        drop(log);
        // Appending and reopening again, for a spread of cuts (every batch
        // boundary and its neighbours among them).
        let near_boundary = batches
            .iter()
            .any(|s| s.start.abs_diff(cut) <= 1 || s.end.abs_diff(cut) <= 1);
        if near_boundary || cut % 7 == 0 {
            check_recovered(dir.path(), &config, 0, &expected)?;
        }
    }
    assert!(cuts_reported > 100);
    Ok(())
}

#[test]
fn a_torn_tail_below_the_recovery_point_is_refused_and_changes_nothing() -> Result<()> {
    // A checkpoint claiming more than the disk holds: the log file lost data
    // the owner saw flushed. No interrupted write explains that, so nothing
    // is cut: the open fails, names the file and position, and leaves every
    // file as it was. With the recovery point the disk really supports, the
    // same files open and the torn part (never flushed) is cut.
    let (files, model, config) = written_log()?;
    let leo = model.last().expect("records").offset + 1;
    let last_base = *snapshot_bases(&files).last().expect("segments");
    let log_name = common::segment_name(last_base, "log");
    let bytes = &files[&log_name];
    let batches = spans(bytes);
    let from = batches[batches.len() - 3].start;
    for cut in (from..bytes.len()).step_by(5) {
        let dir = tempfile::tempdir().expect("tempdir");
        restore(dir.path(), &files);
        std::fs::write(dir.path().join(&log_name), &bytes[..cut]).expect("cut");
        let kept = batches.iter().take_while(|s| s.end <= cut).last();
        let valid = kept.map_or(0, |s| s.end) as u64;
        let end = kept.map_or(last_base, |s| s.last_offset + 1);
        let before = snapshot(dir.path());
        let err = match open_at(dir.path(), &config, leo) {
            Ok(_) => panic!("cut {cut}: an open below the recovery point succeeded"),
            Err(e) => e,
        };
        let Error::Corrupt {
            path,
            position,
            kind,
        } = err
        else {
            panic!("cut {cut}: {err}")
        };
        assert_eq!(path, dir.path().join(&log_name), "cut {cut}");
        assert_eq!(position, valid, "cut {cut}: the damage is located");
        match kind {
            CorruptionKind::BelowRecoveryPoint {
                offset,
                recovery_point,
                ..
            } => {
                assert!(cut as u64 != valid, "cut {cut}: a torn batch");
                assert_eq!((offset, recovery_point), (end, leo), "cut {cut}");
            }
            CorruptionKind::RecoveryPointBeyondEnd {
                recovery_point,
                log_end,
            } => {
                assert_eq!(cut as u64, valid, "cut {cut}: at a batch boundary");
                assert_eq!((recovery_point, log_end), (leo, end), "cut {cut}");
            }
            other => panic!("cut {cut}: {other}"),
        }
        assert!(snapshot(dir.path()) == before, "cut {cut}: a file changed");

        let expected = prefix(&model, end);
        let log = open_at(dir.path(), &config, end)?;
        assert_eq!(log.log_end_offset(), end);
        check_every_offset(&log, &expected)?;
        check_timestamps(&log, &expected, 0, (990..1400).step_by(9))?;
        drop(log);
        check_recovered(dir.path(), &config, end, &expected)?;
    }
    Ok(())
}

#[test]
fn truncating_the_last_segments_indexes_loses_nothing() -> Result<()> {
    let (files, model, config) = written_log()?;
    let leo = model.last().expect("records").offset + 1;
    let last_base = *snapshot_bases(&files).last().expect("segments");
    for suffix in ["index", "timeindex"] {
        let name = common::segment_name(last_base, suffix);
        let len = files[&name].len();
        assert!(len > 0, "the closed segment's {suffix} has entries");
        for cut in 0..len {
            for rp in [0, leo] {
                let dir = tempfile::tempdir().expect("tempdir");
                restore(dir.path(), &files);
                std::fs::write(dir.path().join(&name), &files[&name][..cut]).expect("cut");
                let log = open_at(dir.path(), &config, rp)?;
                assert!(log.recovery_report().truncated.is_none());
                check_every_offset(&log, &model)?;
                check_timestamps(&log, &model, 0, (990..1400).step_by(3))?;
                drop(log);
                if cut % 4 == 0 {
                    check_recovered(dir.path(), &config, rp, &model)?;
                }
            }
        }
    }
    Ok(())
}
