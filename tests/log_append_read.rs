//! Appending and reading a partition log.

mod common;

use std::sync::Arc;

use common::{batch, batch_with_timestamps, batches, read_all, small_log};
use logbus::format::BatchHeader;
use logbus::{Error, FormatError, Log, LogConfig, ManualClock, Result, TimestampType};

#[test]
fn leader_append_assigns_offsets_and_stamps_epoch() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::builder(dir.path()).open()?;
    let mut first = batch("a", 3, 1_000);
    let mut second = batch("b", 2, 2_000);
    let a = log.append(&mut first, 7)?;
    let b = log.append(&mut second, 8)?;
    assert_eq!(
        (a.first_offset(), a.last_offset(), a.record_count()),
        (0, 2, 3)
    );
    assert_eq!(
        (b.first_offset(), b.last_offset(), b.record_count()),
        (3, 4, 2)
    );
    assert_eq!(a.max_timestamp(), 1_002);
    assert_eq!(log.log_end_offset(), 5);

    let read = log.read(0, 1 << 20)?;
    let stored = batches(read.records());
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].header().base_offset, 0);
    assert_eq!(stored[0].header().partition_leader_epoch, 7);
    assert_eq!(stored[1].header().base_offset, 3);
    assert_eq!(stored[1].header().partition_leader_epoch, 8);
    // The appended buffer was rewritten in place and is what is stored.
    assert_eq!(stored[1].as_bytes().as_ref(), &second[..]);

    let values: Vec<_> = read_all(&log, 0)?
        .into_iter()
        .map(|(o, _, v)| (o, v))
        .collect();
    assert_eq!(values[4], (4, b"b-1".to_vec()));
    Ok(())
}

#[test]
fn log_append_time_replaces_timestamps() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(50_000);
    let log = Log::builder(dir.path())
        .config(
            LogConfig::builder()
                .timestamp_type(TimestampType::LogAppendTime)
                .build()?,
        )
        .clock(Arc::new(clock.clone()))
        .open()?;
    let info = log.append(&mut batch("x", 2, 5), 0)?;
    assert_eq!(info.log_append_time(), Some(50_000));
    let records = read_all(&log, 0)?;
    assert!(
        records.iter().all(|(_, ts, _)| *ts == 50_000),
        "{records:?}"
    );
    // The CRC was recomputed: the stored batch validates.
    let read = log.read(0, 1 << 20)?;
    assert_eq!(
        batches(read.records())[0].header().timestamp_type(),
        TimestampType::LogAppendTime
    );
    Ok(())
}

#[test]
fn read_returns_whole_batches_and_at_least_one() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::builder(dir.path()).open()?;
    let mut sizes = Vec::new();
    for i in 0..5 {
        let mut b = batch(&format!("r{i}"), 4, 0);
        sizes.push(b.len());
        log.append(&mut b, 0)?;
    }
    // max_bytes smaller than one batch still returns that batch.
    let one = log.read(5, 1)?;
    assert_eq!(one.records().len(), sizes[1]);
    assert_eq!(batches(one.records())[0].header().base_offset, 4);
    // Two whole batches fit, a third does not.
    let two = log.read(0, sizes[0] + sizes[1] + sizes[2] - 1)?;
    assert_eq!(batches(two.records()).len(), 2);
    // At the log end: nothing, and no error.
    assert!(log.read(20, 1 << 20)?.records().is_empty());
    Ok(())
}

#[test]
fn out_of_range_reads_are_errors() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::builder(dir.path()).open()?;
    log.append(&mut batch("a", 2, 0), 0)?;
    assert!(matches!(
        log.read(3, 100),
        Err(Error::OffsetOutOfRange {
            offset: 3,
            log_start: 0,
            log_end: 2
        })
    ));
    log.delete_records(1)?;
    assert!(matches!(
        log.read(0, 100),
        Err(Error::OffsetOutOfRange { offset: 0, .. })
    ));
    assert_eq!(read_all(&log, 1)?.len(), 1);
    Ok(())
}

#[test]
fn bad_batches_are_rejected_and_change_nothing() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::builder(dir.path())
        .config(LogConfig::builder().max_message_bytes(200).build()?)
        .open()?;
    log.append(&mut batch("ok", 1, 0), 0)?;
    let before = (log.log_end_offset(), log.size_bytes());

    let mut flipped = batch("a", 2, 0);
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    assert!(matches!(
        log.append(&mut flipped, 0),
        Err(Error::InvalidBatch(FormatError::CrcMismatch { .. }))
    ));

    let mut truncated = batch("a", 2, 0);
    truncated.pop();
    assert!(matches!(
        log.append(&mut truncated, 0),
        Err(Error::InvalidBatch(_))
    ));

    assert!(matches!(
        log.append(&mut [], 0),
        Err(Error::InvalidBatch(FormatError::Empty))
    ));

    let mut big = batch(&"x".repeat(300), 1, 0);
    assert!(matches!(
        log.append(&mut big, 0),
        Err(Error::RecordTooLarge { max: 200, .. })
    ));

    // A valid batch followed by garbage: the whole append is refused.
    let mut mixed = batch("a", 1, 0);
    mixed.extend_from_slice(&[0u8; 70]);
    assert!(matches!(
        log.append(&mut mixed, 0),
        Err(Error::InvalidBatch(_))
    ));

    assert_eq!((log.log_end_offset(), log.size_bytes()), before);
    assert_eq!(read_all(&log, 0)?.len(), 1);
    Ok(())
}

#[test]
fn follower_append_keeps_bytes_and_rejects_going_backwards() -> Result<()> {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let follower_dir = tempfile::tempdir().expect("tempdir");
    let leader = Log::builder(leader_dir.path()).open()?;
    let follower = Log::builder(follower_dir.path()).open()?;
    for i in 0..3 {
        leader.append(&mut batch(&format!("l{i}"), 3, i), 4)?;
    }
    let copied = leader.read(0, 1 << 20)?;
    let info = follower.append_as_follower(copied.records())?;
    assert_eq!((info.first_offset(), info.last_offset()), (0, 8));
    assert_eq!(follower.read(0, 1 << 20)?.records(), copied.records());

    // Appending the same batches again would go backwards.
    let err = follower.append_as_follower(copied.records()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::OffsetsOutOfOrder {
                first: 0,
                log_end: 9,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(follower.log_end_offset(), 9);

    // A gap forward is refused in a log that is not compacted (its offsets
    // are contiguous: recovery and reads treat a gap as damage)...
    let mut later = batch("gap", 1, 0);
    logbus::format::set_base_offset(&mut later, 20);
    let err = follower.append_as_follower(&later).unwrap_err();
    assert!(
        matches!(
            err,
            Error::OffsetsOutOfOrder {
                first: 20,
                log_end: 9,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(follower.log_end_offset(), 9);
    // ... and a negative base offset is no offset at all.
    let mut negative = batch("neg", 1, 0);
    logbus::format::set_base_offset(&mut negative, -1);
    assert!(matches!(
        follower.append_as_follower(&negative),
        Err(Error::InvalidBatch(FormatError::InvalidBaseOffset { .. }))
    ));

    // A compacted follower takes gaps forward (compacted leaders leave
    // them), and keeps them across a reopen.
    let compacted_dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig::builder().compact(true).build()?;
    let compacted = Log::builder(compacted_dir.path())
        .config(config.clone())
        .open()?;
    compacted.append_as_follower(copied.records())?;
    compacted.append_as_follower(&later)?;
    assert_eq!(compacted.log_end_offset(), 21);
    assert_eq!(
        BatchHeader::parse(compacted.read(15, 100)?.records())?.base_offset,
        20
    );
    compacted.close()?;
    let compacted = Log::builder(compacted_dir.path())
        .config(config)
        .recovery_point(21)
        .open()?;
    assert_eq!(compacted.log_end_offset(), 21);
    assert_eq!(
        BatchHeader::parse(compacted.read(15, 100)?.records())?.base_offset,
        20
    );
    Ok(())
}

#[test]
fn reopen_restores_everything() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(0);
    let expected = {
        let log = small_log(dir.path(), 1024, &clock)?;
        for i in 0..40 {
            log.append(&mut batch(&format!("p{i}"), 3, i * 10), 1)?;
        }
        assert!(log.segment_count() > 3, "small segments roll");
        let all = read_all(&log, 0)?;
        log.close()?;
        all
    };
    let log = small_log(dir.path(), 1024, &clock)?;
    assert_eq!(log.log_end_offset(), 120);
    assert_eq!(read_all(&log, 0)?, expected);
    assert!(log.recovery_report().truncated.is_none());
    log.append(&mut batch("after", 1, 0), 1)?;
    assert_eq!(log.log_end_offset(), 121);
    Ok(())
}

#[test]
fn a_second_opener_is_refused() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::builder(dir.path()).open()?;
    assert!(matches!(
        Log::builder(dir.path()).open(),
        Err(Error::DirectoryLocked { .. })
    ));
    drop(log);
    Log::builder(dir.path()).open()?;
    Ok(())
}

#[test]
fn offset_for_timestamp_matches_a_full_scan() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(0);
    let log = small_log(dir.path(), 600, &clock)?;
    // Timestamps that go up and down, across many segments.
    let mut seed = 17u64;
    for _ in 0..60 {
        let stamps: Vec<i64> = (0..3)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((seed >> 33) % 1000) as i64
            })
            .collect();
        log.append(&mut batch_with_timestamps(&stamps), 0)?;
    }
    let all = read_all(&log, 0)?;
    for target in (-5..1010).step_by(7) {
        let expected = all
            .iter()
            .find(|(_, ts, _)| *ts >= target)
            .map(|(o, ts, _)| (*o, *ts));
        let found = log
            .offset_for_timestamp(target)?
            .map(|t| (t.offset, t.timestamp));
        assert_eq!(found, expected, "target {target}");
    }
    Ok(())
}
