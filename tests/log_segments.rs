//! Rolling, retention, delete_records and truncation.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{batch, read_all, small_log};
use logbus::{Error, Log, LogConfig, ManualClock, Result};

fn segment_files(dir: &std::path::Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix))
        .collect();
    names.sort();
    names
}

#[test]
fn rolls_on_segment_bytes_with_kafka_file_names() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(0);
    let log = small_log(dir.path(), 400, &clock)?;
    let mut sizes = 0u64;
    for i in 0..20 {
        let mut b = batch(&format!("v{i}"), 2, 0);
        sizes += b.len() as u64;
        log.append(&mut b, 0)?;
    }
    let bases = log.segment_base_offsets();
    assert!(bases.len() >= 4, "{bases:?}");
    assert_eq!(bases[0], 0);
    assert!(bases.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(log.size_bytes(), sizes);
    let logs = segment_files(dir.path(), ".log");
    let expected: Vec<String> = bases.iter().map(|b| format!("{b:020}.log")).collect();
    assert_eq!(logs, expected);
    assert_eq!(segment_files(dir.path(), ".index").len(), bases.len());
    assert_eq!(segment_files(dir.path(), ".timeindex").len(), bases.len());
    // No segment holds more than segment.bytes.
    for name in &logs {
        let len = std::fs::metadata(dir.path().join(name))
            .expect("metadata")
            .len();
        assert!(len <= 400, "{name} has {len} bytes");
    }
    assert_eq!(read_all(&log, 0)?.len(), 40);
    Ok(())
}

#[test]
fn rolls_on_segment_ms_by_record_time() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::builder(dir.path())
        .config(
            LogConfig::builder()
                .segment_time(Some(Duration::from_secs(1)))
                .build()?,
        )
        .open()?;
    log.append(&mut batch("a", 1, 10_000), 0)?;
    log.append(&mut batch("b", 1, 10_900), 0)?;
    assert_eq!(log.segment_count(), 1);
    log.append(&mut batch("c", 1, 11_001), 0)?;
    assert_eq!(log.segment_base_offsets(), vec![0, 2]);
    Ok(())
}

#[test]
fn rolls_when_the_index_is_full() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::builder(dir.path())
        .config(
            LogConfig::builder()
                .segment_index_bytes(24) // two time index entries, three offset entries
                .index_interval_bytes(1)
                .build()?,
        )
        .open()?;
    for i in 0..12 {
        log.append(&mut batch(&format!("i{i}"), 1, i), 0)?;
    }
    assert!(log.segment_count() > 1, "a full index rolls the segment");
    assert_eq!(read_all(&log, 0)?.len(), 12);
    Ok(())
}

#[test]
fn retention_bytes_deletes_oldest_sealed_segments() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(0);
    let log = Log::builder(dir.path())
        .config(
            LogConfig::builder()
                .segment_bytes(300)
                .retention_time(None)
                .retention_bytes(Some(700))
                .build()?,
        )
        .clock(Arc::new(clock))
        .open()?;
    for i in 0..30 {
        log.append(&mut batch(&format!("r{i}"), 1, 0), 0)?;
    }
    let before = log.segment_count();
    let report = log.enforce_retention()?;
    assert!(report.segments > 0);
    assert_eq!(log.segment_count(), before - report.segments);
    // What is left is within the limit plus less than one segment, the
    // active segment was kept, and reading starts at the new log start.
    assert!(log.size_bytes() <= 700 + 300, "{}", log.size_bytes());
    assert_eq!(log.log_start_offset(), log.segment_base_offsets()[0]);
    assert_eq!(log.log_end_offset(), 30);
    let left = read_all(&log, log.log_start_offset())?;
    assert_eq!(left.last().map(|r| r.0), Some(29));
    assert!(matches!(
        log.read(0, 100),
        Err(Error::OffsetOutOfRange { .. })
    ));
    // Deleted segments' files are gone once the worker removed them, at the
    // latest when the log is closed and reopened.
    drop(log);
    let log = Log::builder(dir.path()).open()?;
    assert_eq!(segment_files(dir.path(), ".log").len(), log.segment_count());
    assert!(segment_files(dir.path(), ".deleted").is_empty());
    Ok(())
}

#[test]
fn retention_ms_uses_the_newest_record_and_never_the_active_segment() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(100_000);
    let log = Log::builder(dir.path())
        .config(
            LogConfig::builder()
                .segment_bytes(300)
                .retention_time(Some(Duration::from_millis(10_000)))
                .build()?,
        )
        .clock(Arc::new(clock.clone()))
        .open()?;
    for i in 0..12 {
        log.append(&mut batch(&format!("t{i}"), 1, 50_000 + i), 0)?;
    }
    // All records are 50 s old: every sealed segment goes, the active stays.
    let report = log.enforce_retention()?;
    assert!(report.segments > 0);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_end_offset(), 12);
    // Fresh records are kept.
    for i in 0..12 {
        log.append(&mut batch(&format!("n{i}"), 1, 99_000 + i), 0)?;
    }
    assert_eq!(
        log.enforce_retention()?.segments,
        1,
        "only the old active segment, now sealed"
    );
    clock.advance_ms(5_000);
    assert_eq!(log.enforce_retention()?.segments, 0);
    Ok(())
}

#[test]
fn a_reader_keeps_reading_a_deleted_segment() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(0);
    let log = small_log(dir.path(), 300, &clock)?;
    for i in 0..12 {
        log.append(&mut batch(&format!("d{i}"), 1, 0), 0)?;
    }
    let held = log.read(0, 1 << 20)?;
    let copy = held.records().to_vec();
    log.delete_records(log.log_end_offset())?;
    assert_eq!(log.segment_count(), 1);
    // Close and reopen so the deleted files are certainly unlinked.
    drop(log);
    let _log = small_log(dir.path(), 300, &clock)?;
    assert_eq!(held.records().as_ref(), &copy[..]);
    assert!(held.batches().all(|b| b.is_ok()));
    Ok(())
}

#[test]
fn delete_records_advances_the_start_and_survives_reopen_with_checkpoint() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(0);
    let log = small_log(dir.path(), 300, &clock)?;
    for i in 0..10 {
        log.append(&mut batch(&format!("x{i}"), 2, 0), 0)?;
    }
    assert_eq!(log.delete_records(7)?, 7);
    assert_eq!(log.delete_records(3)?, 7, "the start never moves back");
    assert!(matches!(
        log.delete_records(21),
        Err(Error::OffsetOutOfRange { offset: 21, .. })
    ));
    assert_eq!(read_all(&log, 7)?.first().map(|r| r.0), Some(7));
    let start = log.log_start_offset();
    drop(log);
    let log = Log::builder(dir.path()).log_start_offset(start).open()?;
    assert_eq!(log.log_start_offset(), 7);
    assert!(matches!(
        log.read(6, 100),
        Err(Error::OffsetOutOfRange { .. })
    ));
    Ok(())
}

#[test]
fn truncate_to_removes_the_tail_across_segments() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(0);
    let log = small_log(dir.path(), 300, &clock)?;
    for i in 0..15 {
        log.append(&mut batch(&format!("y{i}"), 2, i * 100), 0)?;
    }
    let all = read_all(&log, 0)?;
    let segments = log.segment_count();
    // A batch boundary: everything from offset 8 on goes.
    assert_eq!(log.truncate_to(8)?, 8);
    assert_eq!(log.log_end_offset(), 8);
    assert!(log.segment_count() < segments);
    assert_eq!(read_all(&log, 0)?, all[..8].to_vec());
    // Mid-batch: the batch holding offset 5 (offsets 4..=5) goes whole.
    assert_eq!(log.truncate_to(5)?, 4);
    // Truncating past the end changes nothing.
    assert_eq!(log.truncate_to(100)?, 4);
    // Appends continue at the new end and survive a reopen.
    log.append(&mut batch("z", 1, 0), 0)?;
    assert_eq!(log.log_end_offset(), 5);
    assert_eq!(
        log.offset_for_timestamp(1_000)?,
        None,
        "truncated timestamps are gone"
    );
    drop(log);
    let log = small_log(dir.path(), 300, &clock)?;
    let after = read_all(&log, 0)?;
    assert_eq!(after.len(), 5);
    assert_eq!(after[..4], all[..4]);
    assert_eq!(after[4].2, b"z-0".to_vec());
    Ok(())
}

#[test]
fn truncate_while_a_reader_holds_the_tail() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::builder(dir.path()).open()?;
    for i in 0..6 {
        log.append(&mut batch(&format!("h{i}"), 1, 0), 0)?;
    }
    let held = log.read(0, 1 << 20)?;
    let copy = held.records().to_vec();
    assert_eq!(log.truncate_to(2)?, 2);
    log.append(&mut batch("new", 3, 0), 0)?;
    // The held bytes still read as before: the file was not shrunk under them.
    assert_eq!(held.records().as_ref(), &copy[..]);
    let values: Vec<_> = read_all(&log, 0)?.into_iter().map(|r| r.2).collect();
    assert_eq!(values[2], b"new-0".to_vec());
    assert_eq!(values.len(), 5);
    Ok(())
}

#[test]
fn truncate_below_every_segment_starts_afresh() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::builder(dir.path()).log_start_offset(50).open()?;
    assert_eq!(log.log_end_offset(), 50);
    log.append(&mut batch("a", 2, 0), 0)?;
    assert_eq!(log.truncate_to(10)?, 10);
    assert_eq!(log.log_start_offset(), 10);
    assert_eq!(log.log_end_offset(), 10);
    log.append(&mut batch("b", 1, 0), 0)?;
    assert_eq!(read_all(&log, 10)?.len(), 1);
    Ok(())
}

#[test]
fn interval_policy_flushes_in_the_background_when_the_clock_moves() -> Result<()> {
    use logbus::FlushPolicy;
    use std::time::Duration;

    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_000);
    let log = Log::builder(dir.path())
        .config(
            LogConfig::builder()
                .flush(FlushPolicy::every_interval(Duration::from_millis(500)))
                .build()?,
        )
        .clock(Arc::new(clock.clone()))
        .open()?;
    log.append(&mut batch("i", 3, 0), 0)?;
    assert_eq!(
        log.recovery_point(),
        0,
        "nothing is flushed before the interval passes"
    );
    clock.advance_ms(499);
    assert!(!log.wait_for_flush(3, Duration::ZERO));
    // The worker wakes on the clock's move; waiting is on a condition
    // variable, the timeout only guards against a hang.
    clock.advance_ms(1);
    assert!(
        log.wait_for_flush(3, Duration::from_secs(60)),
        "the interval flush ran"
    );
    assert_eq!(log.recovery_point(), 3);
    log.append(&mut batch("j", 2, 0), 0)?;
    clock.advance_ms(500);
    assert!(log.wait_for_flush(5, Duration::from_secs(60)));
    Ok(())
}

#[test]
fn leftover_spare_files_are_removed_on_open_and_not_taken_for_data() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = Log::builder(dir.path()).open()?;
        log.append(&mut batch("a", 2, 0), 0)?;
    }
    // A crash can leave a spare behind, even one with bytes in it.
    std::fs::write(dir.path().join("segment.log.spare"), batch("stale", 3, 0)).expect("write");
    std::fs::write(dir.path().join("segment.index.spare"), [0u8; 64]).expect("write");
    std::fs::write(dir.path().join("segment.timeindex.spare"), [0u8; 48]).expect("write");
    let log = Log::builder(dir.path()).open()?;
    assert_eq!(log.recovery_report().removed_files, 3);
    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(read_all(&log, 0)?.len(), 2);
    log.close()?;
    assert!(
        segment_files(dir.path(), ".log")
            .iter()
            .all(|n| !n.starts_with("spare"))
    );
    Ok(())
}

#[test]
fn delete_records_applies_no_other_retention_rule() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_000_000);
    let log = Log::builder(dir.path())
        .config(
            LogConfig::builder()
                .segment_bytes(300)
                .retention_time(Some(Duration::from_millis(1)))
                .retention_bytes(Some(1))
                .build()?,
        )
        .clock(Arc::new(clock))
        .open()?;
    for i in 0..12 {
        log.append(&mut batch(&format!("k{i}"), 1, i), 0)?;
    }
    let segments = log.segment_count();
    // Every sealed segment is past retention.ms and retention.bytes, but
    // delete_records removes only what lies below the new start.
    log.delete_records(1)?;
    assert_eq!(log.segment_count(), segments);
    assert_eq!(log.log_start_offset(), 1);
    assert!(log.enforce_retention()?.segments > 0);
    Ok(())
}

#[test]
fn a_crash_right_after_a_roll_leaves_no_gap_below_the_log_end() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(0);
    let (sealed_base, active_base) = {
        let log = small_log(dir.path(), 400, &clock)?;
        while log.segment_count() < 2 {
            let i = log.log_end_offset();
            log.append(&mut batch(&format!("g{i}"), 1, 0), 0)?;
        }
        let bases = log.segment_base_offsets();
        (bases[0], bases[1])
    };
    // What a power loss can leave: the new segment was created empty, but the
    // unsynced end of the sealed one is torn.
    let active = dir.path().join(format!("{active_base:020}.log"));
    std::fs::write(&active, b"").expect("empty active segment");
    let sealed = dir.path().join(format!("{sealed_base:020}.log"));
    let len = std::fs::metadata(&sealed).expect("metadata").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&sealed)
        .expect("open");
    file.set_len(len - 5).expect("tear");
    drop(file);

    let log = small_log(dir.path(), 400, &clock)?;
    assert!(
        log.recovery_report().truncated.is_some(),
        "the torn tail is cut, not refused"
    );
    assert_eq!(
        log.segment_base_offsets(),
        vec![sealed_base],
        "the empty segment is gone"
    );
    let end = log.log_end_offset();
    assert!(end < active_base);
    // Every offset below the log end reads, and appends continue densely.
    assert_eq!(read_all(&log, 0)?.len() as u64, end);
    log.append(&mut batch("after", 1, 0), 0)?;
    assert_eq!(read_all(&log, 0)?.last().map(|r| r.0), Some(end));
    Ok(())
}
