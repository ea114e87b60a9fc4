//! fsyncgate: after an fsync failure fences a log, nothing that failed
//! fsync covered is ever declared durable, not even by a reopen in the same
//! process that still sees those bytes in the page cache. The reopened log
//! ends at the last offset a successful fsync covered, says so in its
//! recovery report, and a power loss after the reopen shows the same
//! records. This holds with the same or a new storage, after the marker
//! file alone (a new process), and across a cluster close and reopen.

mod common;

use common::shm_tempdir as tempdir;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{Rec, append_model, drafts, read_records, snapshot};
use logbus::{
    Cluster, ClusterConfig, CorruptionKind, Error, FaultKind, FaultOp, FaultyStorage,
    FencedTruncation, FlushPolicy, Log, LogConfig, ManualClock, NewTopic, Result, StdStorage,
    Storage, Tear, TopicConfig,
};

/// The marker a fenced log leaves in its directory.
const MARKER: &str = "fenced-offset";

/// Generous bound on waits that end as soon as the condition holds.
const PATIENCE: Duration = Duration::from_secs(60);

fn config(policy: FlushPolicy) -> LogConfig {
    LogConfig::builder()
        .segment_bytes(1_000)
        .index_interval_bytes(100)
        .segment_index_bytes(4096)
        .segment_time(None)
        .retention_time(None)
        .flush(policy)
        .build()
        .expect("config")
}

fn open(dir: &Path, policy: FlushPolicy, storage: Arc<dyn Storage>) -> Result<Log> {
    Log::builder(dir)
        .config(config(policy))
        .storage(storage)
        .clock(Arc::new(ManualClock::new(1_000)))
        .open()
}

/// [`open`] on the standard storage.
fn open_std(dir: &Path, policy: FlushPolicy) -> Result<Log> {
    open(dir, policy, Arc::new(StdStorage::new()))
}

/// Appends `count` batches of 1 to 3 records, each acknowledged.
fn append_acked(log: &Log, model: &mut Vec<Rec>, tag: &str, count: usize) -> Result<()> {
    for i in 0..count {
        append_model(log, model, &drafts(&format!("{tag}{i}"), 1 + i % 3, 1_000))?;
    }
    Ok(())
}

/// A log under `flush.messages=1` with `acked` acknowledged batches whose
/// next fsync fails: the failed append and the records before it are in
/// the page cache, the log is fenced. Returns the acknowledged records.
fn fence_after(dir: &Path, storage: &FaultyStorage, acked: usize) -> Result<Vec<Rec>> {
    let log = open(dir, FlushPolicy::every_append(), Arc::new(storage.clone()))?;
    let mut model = Vec::new();
    append_acked(&log, &mut model, "ok", acked)?;
    // A log's first append fsyncs its leader-epoch-checkpoint file before
    // the batch: fail the batch's fsync, not that one.
    let nth = if acked == 0 { 2 } else { 1 };
    storage.fail_nth(FaultOp::Sync, nth, FaultKind::Eio);
    let mut failed = Vec::new();
    let err = append_model(&log, &mut failed, &drafts("lost", 2, 1_000)).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(log.is_fenced());
    assert_eq!(log.recovery_point(), model.len() as u64);
    // The process still reads the failed append: it is in the page cache.
    assert_eq!(read_records(&log, 0, 1 << 20)?.len(), model.len() + 2);
    assert!(
        matches!(log.close(), Err(Error::Fenced { .. })),
        "a fenced log does not flush on close"
    );
    Ok(model)
}

#[test]
fn a_reopen_in_the_same_process_ends_at_the_last_synced_offset() -> Result<()> {
    for acked in [0, 1, 7, 30] {
        let dir = tempdir();
        let storage = FaultyStorage::new();
        let model = fence_after(dir.path(), &storage, acked)?;
        let synced = model.len() as u64;
        assert!(dir.path().join(MARKER).exists(), "the marker was written");

        let log = open(
            dir.path(),
            FlushPolicy::every_append(),
            Arc::new(storage.clone()),
        )?;
        assert_eq!(log.log_end_offset(), synced, "acked={acked}");
        assert_eq!(read_records(&log, 0, 1 << 20)?, model);
        assert_eq!(
            log.recovery_report().fenced_truncation,
            Some(FencedTruncation {
                synced_offset: synced,
                found_end_offset: synced + 2,
            })
        );
        assert_eq!(log.recovery_point(), synced);
        assert!(!dir.path().join(MARKER).exists(), "the marker is consumed");
        // The cut is on disk: a power loss now shows the same records.
        storage.crash(Tear::None)?;
        drop(log);
        let log = open(
            dir.path(),
            FlushPolicy::every_append(),
            Arc::new(storage.clone()),
        )?;
        assert_eq!(read_records(&log, 0, 1 << 20)?, model, "acked={acked}");
        assert_eq!(
            log.recovery_report().fenced_truncation,
            None,
            "applied once"
        );
        // And the log takes appends again, from the cut.
        let mut model = model;
        append_acked(&log, &mut model, "again", 3)?;
        log.close()?;
        let log = open_std(dir.path(), FlushPolicy::every_append())?;
        assert_eq!(read_records(&log, 0, 1 << 20)?, model);
    }
    Ok(())
}

#[test]
fn a_power_loss_before_the_reopen_leaves_nothing_to_cut() -> Result<()> {
    for tear in [Tear::None, Tear::KeepPrefix(20), Tear::Random(7)] {
        let dir = tempdir();
        let storage = FaultyStorage::new();
        let model = fence_after(dir.path(), &storage, 9)?;
        storage.crash(tear)?;
        let log = open(
            dir.path(),
            FlushPolicy::every_append(),
            Arc::new(storage.clone()),
        )?;
        assert_eq!(read_records(&log, 0, 1 << 20)?, model, "{tear:?}");
        // The failed bytes were lost (or torn and cut by recovery): the
        // marker is consumed without a cut to report.
        assert_eq!(log.recovery_report().fenced_truncation, None, "{tear:?}");
        assert!(!dir.path().join(MARKER).exists(), "{tear:?}");
    }
    Ok(())
}

#[test]
fn a_new_storage_instance_cuts_too() -> Result<()> {
    let dir = tempdir();
    let storage = FaultyStorage::new();
    let model = fence_after(dir.path(), &storage, 5)?;
    // Neither the storage nor any object of the fenced log is reused.
    let fresh = FaultyStorage::new();
    let log = open(
        dir.path(),
        FlushPolicy::page_cache(),
        Arc::new(fresh.clone()),
    )?;
    assert_eq!(read_records(&log, 0, 1 << 20)?, model);
    assert!(log.recovery_report().fenced_truncation.is_some());
    fresh.crash(Tear::None)?;
    drop(log);
    let log = open_std(dir.path(), FlushPolicy::page_cache())?;
    assert_eq!(read_records(&log, 0, 1 << 20)?, model);
    Ok(())
}

#[test]
fn the_marker_alone_cuts_a_copy_opened_elsewhere() -> Result<()> {
    // A new process has no memory of the failure, only the marker. A copy
    // of the directory at another path stands for it (the memory is keyed
    // by path); the copy holds the page cache's view, failed bytes included.
    let dir = tempdir();
    let storage = FaultyStorage::new();
    let model = fence_after(dir.path(), &storage, 6)?;
    let copy = tempdir();
    for (name, bytes) in snapshot(dir.path()) {
        std::fs::write(copy.path().join(name), bytes).expect("copy");
    }
    let log = open_std(copy.path(), FlushPolicy::every_append())?;
    assert_eq!(read_records(&log, 0, 1 << 20)?, model);
    assert_eq!(
        log.recovery_report()
            .fenced_truncation
            .map(|t| t.synced_offset),
        Some(model.len() as u64)
    );
    assert!(!copy.path().join(MARKER).exists());
    Ok(())
}

#[test]
fn the_memory_holds_when_the_marker_cannot_be_written() -> Result<()> {
    let dir = tempdir();
    let storage = FaultyStorage::new();
    let log = open(
        dir.path(),
        FlushPolicy::every_append(),
        Arc::new(storage.clone()),
    )?;
    let mut model = Vec::new();
    append_acked(&log, &mut model, "ok", 4)?;
    // Every fsync fails from now on, the marker's included.
    storage.fail_all_from_now(FaultOp::Sync, FaultKind::Eio);
    let mut failed = Vec::new();
    assert!(append_model(&log, &mut failed, &drafts("lost", 1, 1_000)).is_err());
    drop(log);
    assert!(
        !dir.path().join(MARKER).exists(),
        "no marker could be written"
    );
    storage.clear_faults();
    let log = open(
        dir.path(),
        FlushPolicy::every_append(),
        Arc::new(storage.clone()),
    )?;
    assert_eq!(read_records(&log, 0, 1 << 20)?, model);
    assert!(log.recovery_report().fenced_truncation.is_some());
    Ok(())
}

#[test]
fn a_damaged_marker_refuses_the_open_and_changes_nothing() -> Result<()> {
    let dir = tempdir();
    {
        let log = open_std(dir.path(), FlushPolicy::page_cache())?;
        let mut model = Vec::new();
        append_acked(&log, &mut model, "ok", 3)?;
        log.close()?;
    }
    std::fs::write(dir.path().join(MARKER), b"fenced-offset v1 2 deadbeef\n").expect("write");
    let before = snapshot(dir.path());
    let err = open_std(dir.path(), FlushPolicy::page_cache()).unwrap_err();
    match &err {
        Error::Corrupt {
            path,
            kind: CorruptionKind::Checkpoint(why),
            ..
        } => {
            assert!(path.ends_with(MARKER), "{err}");
            assert!(why.contains("fenced-offset"), "{err}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    assert_eq!(snapshot(dir.path()), before);
    Ok(())
}

#[test]
fn a_failed_background_flush_under_the_page_cache_policy_cuts_too() -> Result<()> {
    // flush.ms: the timer's fsync fails. Records acknowledged from the page
    // cache since the last good fsync were never on disk, and the disk
    // refused them: the reopen drops them rather than call them durable.
    let dir = tempdir();
    let storage = FaultyStorage::new();
    let clock = ManualClock::new(1_000);
    let policy = FlushPolicy::every_interval(Duration::from_millis(100));
    // Large segments: no roll, so no background flush but the timer's.
    let big = LogConfig::builder()
        .segment_bytes(64 << 20)
        .retention_time(None)
        .flush(policy)
        .build()?;
    let log = Log::builder(dir.path())
        .config(big.clone())
        .storage(Arc::new(storage.clone()))
        .clock(Arc::new(clock.clone()))
        .open()?;
    let mut model = Vec::new();
    append_acked(&log, &mut model, "a", 4)?;
    clock.advance_ms(100);
    assert!(log.wait_for_flush(model.len() as u64, PATIENCE));
    let synced = model.len();
    append_acked(&log, &mut model, "b", 3)?;
    storage.fail_nth(FaultOp::Sync, 1, FaultKind::Enospc);
    clock.advance_ms(100);
    // The scheduler runs the flush, which fails and fences the log; the
    // wait ends there.
    assert!(
        !log.wait_for_flush(model.len() as u64, PATIENCE),
        "a failed flush makes nothing durable"
    );
    assert!(log.is_fenced());
    let mut more = Vec::new();
    assert!(matches!(
        append_model(&log, &mut more, &drafts("c", 1, 1_000)),
        Err(Error::Fenced { .. })
    ));
    assert_eq!(log.recovery_point(), synced as u64);
    drop(log);
    let log = Log::builder(dir.path())
        .config(big)
        .storage(Arc::new(storage.clone()))
        .open()?;
    assert_eq!(read_records(&log, 0, 1 << 20)?, model[..synced]);
    Ok(())
}

/// A cluster over `storage` with a fresh config each time.
fn open_cluster(dir: &Path, storage: Arc<dyn Storage>) -> Result<Cluster> {
    let config = ClusterConfig::builder()
        .storage(storage)
        .clock(Arc::new(ManualClock::new(1_000_000)))
        .build()?;
    Cluster::open(dir, config)
}

/// The values of every record of partition 0 of `topic`.
fn values(cluster: &Cluster, topic: &str) -> Result<Vec<Vec<u8>>> {
    let partition = cluster.topic(topic)?.partition(0)?;
    let read = partition.read(0, 1 << 20)?;
    let mut values = Vec::new();
    for batch in read.batches() {
        for record in batch?.records()? {
            values.push(record?.value().expect("value").to_vec());
        }
    }
    Ok(values)
}

#[test]
fn a_cluster_closed_and_reopened_drops_what_the_failed_fsync_covered() -> Result<()> {
    let dir = tempdir();
    let storage = FaultyStorage::new();
    let cluster = open_cluster(dir.path(), Arc::new(storage.clone()))?;
    let durable = TopicConfig::new().set("flush.messages", "1")?;
    let partition = cluster
        .create_topic(NewTopic::new("t", 1).config(durable))?
        .partition(0)?;
    let mut acked = Vec::new();
    for i in 0..5 {
        let value = format!("v{i}");
        partition.append(&mut common::build_batch(&[(
            1_000,
            None,
            Some(value.clone().into_bytes()),
        )]))?;
        acked.push(value.into_bytes());
    }
    storage.fail_nth(FaultOp::Sync, 1, FaultKind::Eio);
    let err = partition
        .append(&mut common::build_batch(&[(
            1_000,
            None,
            Some(b"lost".to_vec()),
        )]))
        .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    // The failed record is in the log but not durable: with fsync before
    // every acknowledgement the high watermark covers durable offsets
    // only, so no reader sees it.
    assert_eq!(values(&cluster, "t")?, acked);
    assert_eq!(partition.log_end_offset()?, acked.len() as u64 + 1);
    // Closing reports the fenced partition; the cluster closes anyway.
    drop(cluster.close());
    drop(partition);
    drop(cluster);

    // A fresh config and storage: only the process is the same.
    let fresh = FaultyStorage::new();
    let cluster = open_cluster(dir.path(), Arc::new(fresh.clone()))?;
    assert_eq!(values(&cluster, "t")?, acked);
    let partition = cluster.topic("t")?.partition(0)?;
    assert_eq!(partition.log_end_offset()?, acked.len() as u64);
    partition.append(&mut common::build_batch(&[(
        1_000,
        None,
        Some(b"after".to_vec()),
    )]))?;
    acked.push(b"after".to_vec());

    // A power loss after the reopen (before any close could flush) keeps
    // exactly that: the cut was made durable by the reopen.
    fresh.crash(Tear::None)?;
    drop(partition);
    drop(cluster.close());
    drop(cluster);
    let cluster = open_cluster(dir.path(), Arc::new(StdStorage::new()))?;
    assert_eq!(values(&cluster, "t")?, acked);
    cluster.close()?;
    Ok(())
}
