//! Power loss and I/O failures under `FlushPolicy::every_append()`, with the
//! fault-injecting `FaultyStorage`: an acknowledged append is never lost,
//! nothing unacknowledged shows up twice, and a failed write or fsync fences
//! the log until it is reopened.

mod common;

use common::shm_tempdir as tempdir;

use std::path::Path;
use std::sync::Arc;

use common::{Draft, Rec, append_model, build_batch, read_records};
use logbus::{
    Error, FaultKind, FaultOp, FaultyStorage, FlushPolicy, Log, LogConfig, ManualClock, Result,
    StdStorage, Tear,
};

/// Appends per run (crash points are spread over the operations they make).
const APPENDS: usize = 80;

fn config() -> LogConfig {
    LogConfig::builder()
        .segment_bytes(600)
        .index_interval_bytes(100)
        .segment_index_bytes(4096)
        .segment_time(None)
        .retention_time(None)
        .flush(FlushPolicy::every_append())
        .build()
        .expect("config")
}

fn open_faulty(dir: &Path, storage: &FaultyStorage) -> Result<Log> {
    Log::builder(dir)
        .config(config())
        .storage(Arc::new(storage.clone()))
        .clock(Arc::new(ManualClock::new(0)))
        .open()
}

fn reopen(dir: &Path) -> Result<Log> {
    Log::builder(dir)
        .config(config())
        .storage(Arc::new(StdStorage::new()))
        .clock(Arc::new(ManualClock::new(0)))
        .open()
}

fn drafts_for(i: usize) -> Vec<Draft> {
    (0..1 + i % 3)
        .map(|j| {
            (
                1_000 + i as i64,
                Some(format!("k{i}").into_bytes()),
                Some(format!("v{i}-{j}").repeat(1 + (i * 7 + j) % 5).into_bytes()),
            )
        })
        .collect()
}

/// How a run injects its failure.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Fail(FaultOp, u64, FaultKind),
    PartialWrite(u64, usize),
    /// After this many appends succeed, every later `FaultOp` fails. For
    /// operations the log's worker thread also makes (creating and sizing
    /// the spare segment), where "the n-th one" depends on thread timing.
    FailFrom(FaultOp, usize, FaultKind),
}

/// Appends until one fails (at most `max` appends). Returns the model of
/// the acknowledged records and the drafts of the failed append.
fn append_until_failure(log: &Log, max: usize) -> Result<(Vec<Rec>, Option<Vec<Draft>>)> {
    let mut model = Vec::new();
    for i in 0..max {
        let drafts = drafts_for(i);
        match append_model(log, &mut model, &drafts) {
            Ok(_) => {}
            Err(Error::Io { .. }) => return Ok((model, Some(drafts))),
            Err(e) => panic!("append {i}: unexpected {e}"),
        }
    }
    Ok((model, None))
}

/// After reopening: the acknowledged records come first, intact; at most
/// the one unacknowledged append follows, whole and once. Appends continue.
fn check_after_crash(
    dir: &Path,
    acked: &[Rec],
    failed: Option<&[Draft]>,
    what: &str,
) -> Result<()> {
    let log = reopen(dir).unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
    let got = read_records(&log, 0, 1 << 16)?;
    assert!(
        got.len() >= acked.len(),
        "{what}: lost acknowledged records ({} of {})",
        got.len(),
        acked.len()
    );
    assert_eq!(
        got[..acked.len()],
        acked[..],
        "{what}: acknowledged records"
    );
    let extra = &got[acked.len()..];
    if !extra.is_empty() {
        let failed =
            failed.unwrap_or_else(|| panic!("{what}: records appeared from nowhere: {extra:?}"));
        let extra: Vec<Draft> = extra
            .iter()
            .map(|r| (r.timestamp, r.key.clone(), r.value.clone()))
            .collect();
        assert_eq!(
            extra, failed,
            "{what}: the unacknowledged append survives whole or not at all"
        );
    }
    let mut model = got;
    append_model(&log, &mut model, &drafts_for(99))?;
    log.close()?;
    let log = reopen(dir)?;
    assert_eq!(
        read_records(&log, 0, 1 << 16)?,
        model,
        "{what}: after appending again"
    );
    Ok(())
}

fn crash_run(fault: Fault, tear: Tear) -> Result<()> {
    let what = format!("{fault:?}, {tear:?}");
    let dir = tempdir();
    let storage = FaultyStorage::new();
    let log = open_faulty(dir.path(), &storage)?;
    let mut before = Vec::new();
    match fault {
        Fault::Fail(op, n, kind) => storage.fail_nth(op, n, kind),
        Fault::PartialWrite(n, written) => {
            storage.fail_nth_partial_write(n, FaultKind::Eio, written)
        }
        Fault::FailFrom(op, after, kind) => {
            let (model, failed) = append_until_failure(&log, after)?;
            assert!(failed.is_none(), "{what}: appends before the fault succeed");
            before = model;
            storage.fail_all_from_now(op, kind);
        }
    }
    let (acked, failed) = append_until_failure(&log, APPENDS)?;
    let acked = [before, acked].concat();
    // Callers pick faults among the operations a full run makes.
    assert!(failed.is_some(), "{what}: the fault fired");
    if failed.is_some() {
        assert!(log.is_fenced(), "{what}: a failed append fences the log");
        let mut more = build_batch(&drafts_for(50));
        assert!(
            matches!(log.append(&mut more, 0), Err(Error::Fenced { .. })),
            "{what}: appends after the failure are refused"
        );
        assert!(matches!(log.flush(), Err(Error::Fenced { .. })), "{what}");
        assert!(
            log.truncate_to(0).is_err(),
            "{what}: truncation is refused too"
        );
    }
    // Every acknowledged record is readable before the crash as well.
    assert_eq!(
        read_records(&log, 0, 1 << 16)?[..acked.len()],
        acked[..],
        "{what}"
    );
    drop(log);
    storage.clear_faults();
    storage.crash(tear)?;
    check_after_crash(dir.path(), &acked, failed.as_deref(), &what)
}

#[test]
fn crashes_at_failed_writes_lose_nothing_acknowledged() -> Result<()> {
    // How many writes a full run makes, to spread the crash points over.
    let dir = tempdir();
    let storage = FaultyStorage::new();
    let log = open_faulty(dir.path(), &storage)?;
    let base = storage.op_count(FaultOp::Write);
    let (_, failed) = append_until_failure(&log, APPENDS)?;
    assert!(failed.is_none());
    let writes = storage.op_count(FaultOp::Write) - base;
    assert!(writes > 40, "{writes} writes");
    drop(log);
    for n in 1..=writes {
        let tear = match n % 3 {
            0 => Tear::None,
            1 => Tear::Random(n),
            _ => Tear::KeepPrefix(30),
        };
        crash_run(Fault::Fail(FaultOp::Write, n, FaultKind::Eio), tear)?;
        if n % 2 == 0 {
            crash_run(
                Fault::PartialWrite(n, 1 + (n as usize * 13) % 90),
                Tear::None,
            )?;
        }
    }
    Ok(())
}

#[test]
fn crashes_at_failed_syncs_lose_nothing_acknowledged() -> Result<()> {
    let dir = tempdir();
    let storage = FaultyStorage::new();
    let log = open_faulty(dir.path(), &storage)?;
    let (base_sync, base_dir) = (
        storage.op_count(FaultOp::Sync),
        storage.op_count(FaultOp::SyncDir),
    );
    append_until_failure(&log, APPENDS)?;
    let syncs = storage.op_count(FaultOp::Sync) - base_sync;
    let dir_syncs = storage.op_count(FaultOp::SyncDir) - base_dir;
    assert!(
        syncs >= 40 && dir_syncs >= 1,
        "{syncs} syncs, {dir_syncs} dir syncs"
    );
    drop(log);
    for n in 1..=syncs {
        let kind = if n % 2 == 0 {
            FaultKind::Eio
        } else {
            FaultKind::Enospc
        };
        let tear = if n % 3 == 0 {
            Tear::None
        } else {
            Tear::Random(n * 31)
        };
        crash_run(Fault::Fail(FaultOp::Sync, n, kind), tear)?;
    }
    for n in 1..=dir_syncs {
        crash_run(
            Fault::Fail(FaultOp::SyncDir, n, FaultKind::Eio),
            Tear::Random(n),
        )?;
    }
    Ok(())
}

#[test]
fn failures_creating_segments_and_resizing_files_fence_the_log() -> Result<()> {
    // Where a full run rolls: after which appends the segment count grows.
    let dir = tempdir();
    let storage = FaultyStorage::new();
    let log = open_faulty(dir.path(), &storage)?;
    let mut rolls = Vec::new();
    for i in 0..APPENDS {
        let segments = log.segment_count();
        let mut model = Vec::new();
        append_model(&log, &mut model, &drafts_for(i))?;
        if log.segment_count() > segments {
            rolls.push(i);
        }
    }
    assert!(rolls.len() >= 3, "{rolls:?}: the runs roll segments");
    drop(log);
    // Creating a segment fails on the append path once a roll cannot use a
    // spare: the second roll after the fault is armed at the latest.
    let last_armable = rolls[rolls.len() - 2];
    for after in 0..last_armable {
        crash_run(
            Fault::FailFrom(FaultOp::Create, after, FaultKind::Enospc),
            Tear::None,
        )?;
    }
    // Sealing trims index files on every roll.
    for after in 0..*rolls.last().expect("rolls") {
        crash_run(
            Fault::FailFrom(FaultOp::SetLen, after, FaultKind::Enospc),
            Tear::Random(after as u64),
        )?;
    }
    Ok(())
}

#[test]
fn a_failed_append_without_a_crash_is_recovered_on_reopen() -> Result<()> {
    // No power loss: the process just reopens after the failure. Every
    // acknowledged append is there; the failed one may be (it reached the
    // page cache) but whole and once.
    for (op, n) in [
        (FaultOp::Write, 7),
        (FaultOp::Sync, 9),
        (FaultOp::Sync, 30),
        (FaultOp::Create, 2),
    ] {
        let what = format!("{op:?} #{n}");
        let dir = tempdir();
        let storage = FaultyStorage::new();
        let log = open_faulty(dir.path(), &storage)?;
        if op == FaultOp::Create {
            // The worker thread creates spare segments too, so which create
            // is the n-th depends on timing: fail them all instead.
            storage.fail_all_from_now(op, FaultKind::Eio);
        } else {
            storage.fail_nth(op, n, FaultKind::Eio);
        }
        let (acked, failed) = append_until_failure(&log, APPENDS)?;
        assert!(failed.is_some(), "{what}: the fault fired");
        assert!(log.is_fenced());
        drop(log);
        check_after_crash(dir.path(), &acked, failed.as_deref(), &what)?;
    }
    Ok(())
}

#[test]
fn concurrent_acknowledged_appends_survive_a_crash() -> Result<()> {
    for (round, fail_at) in [0u64, 5, 17, 40, 90].into_iter().enumerate() {
        let what = format!("round {round}");
        let dir = tempdir();
        let storage = FaultyStorage::new();
        let log = Arc::new(open_faulty(dir.path(), &storage)?);
        if fail_at > 0 {
            storage.fail_nth(FaultOp::Sync, fail_at, FaultKind::Eio);
        }
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    let mut acked = Vec::new();
                    for i in 0..25 {
                        let value = format!("t{t}-{i}").into_bytes();
                        let mut bytes = build_batch(&[(i, None, Some(value.clone()))]);
                        match log.append(&mut bytes, 0) {
                            Ok(info) => acked.push((info.first_offset(), value)),
                            Err(Error::Io { .. } | Error::Fenced { .. }) => break,
                            Err(e) => panic!("append: {e}"),
                        }
                    }
                    acked
                })
            })
            .collect();
        let mut acked: Vec<(u64, Vec<u8>)> = threads
            .into_iter()
            .flat_map(|t| t.join().expect("appender"))
            .collect();
        acked.sort();
        if fail_at > 0 {
            assert!(log.is_fenced(), "{what}: the failed fsync fenced the log");
        } else {
            assert_eq!(acked.len(), 100);
        }
        drop(log);
        storage.clear_faults();
        storage.crash(Tear::Random(round as u64))?;

        let log = reopen(dir.path())?;
        let got = read_records(&log, 0, 1 << 16)?;
        for (offset, value) in &acked {
            let found = got.iter().find(|r| r.offset == *offset);
            assert_eq!(
                found.and_then(|r| r.value.as_ref()),
                Some(value),
                "{what}: acknowledged offset {offset}"
            );
        }
        // Offsets are dense and no value appears twice.
        let mut values: Vec<_> = got.iter().map(|r| r.value.clone()).collect();
        assert!(
            got.iter().enumerate().all(|(i, r)| r.offset == i as u64),
            "{what}"
        );
        values.sort();
        values.dedup();
        assert_eq!(values.len(), got.len(), "{what}: no duplicates");
    }
    Ok(())
}
