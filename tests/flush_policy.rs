//! Kafka's `flush.messages` and `flush.ms`, alone and together: an fsync
//! happens exactly when the unflushed records reach N, before the append
//! that got there returns; the background flush runs on the clock; across a
//! power loss at most N − 1 acknowledged records are lost, and only the
//! newest ones. Topic configs given with whitespace mean what they say.

mod common;

use common::shm_tempdir as tempdir;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{batch, read_records};
use logbus::{
    Cluster, ClusterConfig, FaultOp, FaultyStorage, FlushPolicy, Log, LogConfig, ManualClock,
    NewTopic, Result, StdStorage, Tear, TopicConfig,
};

/// Generous bound on waits that end as soon as the condition holds.
const PATIENCE: Duration = Duration::from_secs(60);

/// Large segments (no roll, no spare), no retention: the only fsyncs are
/// the ones the policy asks for.
fn config(policy: FlushPolicy) -> LogConfig {
    LogConfig::builder()
        .segment_bytes(64 << 20)
        .retention_time(None)
        .segment_time(None)
        .flush(policy)
        .build()
        .expect("config")
}

fn open(dir: &Path, policy: FlushPolicy, storage: &FaultyStorage, clock: &ManualClock) -> Log {
    Log::builder(dir)
        .config(config(policy))
        .storage(Arc::new(storage.clone()))
        .clock(Arc::new(clock.clone()))
        .open()
        .expect("open")
}

/// A new log under `policy` on a fresh simulated disk with a manual clock
/// at 1000: the directory (keep it), the disk, the clock and the log.
fn fresh(policy: FlushPolicy) -> (tempfile::TempDir, FaultyStorage, ManualClock, Log) {
    let dir = tempdir();
    let storage = FaultyStorage::new();
    let clock = ManualClock::new(1_000);
    let log = open(dir.path(), policy, &storage, &clock);
    (dir, storage, clock, log)
}

#[test]
fn flush_messages_fsyncs_exactly_when_the_unflushed_records_reach_n() -> Result<()> {
    const N: u64 = 5;
    let (_dir, storage, _clock, log) = fresh(FlushPolicy::every_messages(N));
    let mut synced_at = Vec::new();
    // The first flush also writes the leader-epoch-checkpoint file (one
    // more fsync) for the log's first leader epoch.
    let mut epoch_file_pending = true;
    // Batches of 1, 2 and 3 records: records count, not batches.
    for (i, records) in [1, 1, 1, 1, 1, 2, 2, 3, 4, 1, 1, 1, 1, 1, 6, 1]
        .into_iter()
        .enumerate()
    {
        let before = log.recovery_point();
        let syncs = storage.op_count(FaultOp::Sync);
        let info = log.append(&mut batch("m", records, 1_000), 0)?;
        let end = info.last_offset() + 1;
        let flushes = end - before >= N;
        let epoch_file = u64::from(flushes && std::mem::take(&mut epoch_file_pending));
        let fsyncs = storage.op_count(FaultOp::Sync) - syncs - epoch_file;
        if flushes {
            assert_eq!(
                log.recovery_point(),
                end,
                "append {i}: synced before it returned"
            );
            assert_eq!(fsyncs, 1, "append {i}: one fsync");
            synced_at.push(end);
        } else {
            assert_eq!(
                log.recovery_point(),
                before,
                "append {i}: below N, no fsync"
            );
            assert_eq!(fsyncs, 0, "append {i}");
        }
        // What Kafka's rule promises for every acknowledged append.
        assert!(log.recovery_point() + N > end, "append {i}");
    }
    assert_eq!(synced_at, [5, 12, 17, 27]);
    log.close()?;
    Ok(())
}

#[test]
fn flush_messages_one_is_every_append() -> Result<()> {
    let (_dir, storage, _clock, log) = fresh(FlushPolicy::every_messages(1));
    assert_eq!(log.config().flush(), FlushPolicy::every_append());
    for i in 0..10 {
        let syncs = storage.op_count(FaultOp::Sync);
        let info = log.append(&mut batch("e", 1 + i % 3, 1_000), 0)?;
        assert_eq!(log.recovery_point(), info.last_offset() + 1);
        // Plus the leader-epoch-checkpoint's fsync on the first append.
        assert_eq!(
            storage.op_count(FaultOp::Sync) - syncs,
            1 + u64::from(i == 0)
        );
    }
    log.close()?;
    Ok(())
}

#[test]
fn concurrent_appenders_each_get_what_the_policy_promises() -> Result<()> {
    for n in [1, 3, 16] {
        let dir = tempdir();
        let storage = FaultyStorage::new();
        let clock = ManualClock::new(1_000);
        let log = Arc::new(open(
            dir.path(),
            FlushPolicy::every_messages(n),
            &storage,
            &clock,
        ));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || -> Result<Vec<u64>> {
                    let mut ends = Vec::new();
                    for i in 0..40 {
                        let info =
                            log.append(&mut batch(&format!("t{t}"), 1 + (i % 4), 1_000), 0)?;
                        let end = info.last_offset() + 1;
                        // The recovery point only grows, so reading it after
                        // the return shows at least what held at the return.
                        assert!(
                            log.recovery_point() + n > end,
                            "n={n}: an append returned with {} unflushed offsets below its end",
                            end - log.recovery_point()
                        );
                        ends.push(end);
                    }
                    Ok(ends)
                })
            })
            .collect();
        let mut last_end = 0;
        for thread in threads {
            let ends = thread.join().expect("appender")?;
            last_end = last_end.max(*ends.iter().max().expect("appends"));
        }
        // A power loss now keeps all but at most the newest N − 1 offsets.
        // (The crash comes first: closing would flush everything.)
        storage.crash(Tear::None)?;
        drop(Arc::into_inner(log).expect("last reference"));
        let log = Log::builder(dir.path())
            .config(config(FlushPolicy::every_messages(n)))
            .storage(Arc::new(StdStorage::new()))
            .open()?;
        assert!(
            log.log_end_offset() + n > last_end,
            "n={n}: {} of {last_end} offsets survived",
            log.log_end_offset()
        );
        // Offsets are dense: nothing in the middle went missing.
        let records = read_records(&log, 0, 1 << 24)?;
        assert!(
            records
                .iter()
                .enumerate()
                .all(|(i, r)| r.offset == i as u64)
        );
        assert_eq!(records.len() as u64, log.log_end_offset());
    }
    Ok(())
}

#[test]
fn a_power_loss_loses_at_most_n_minus_one_acknowledged_records() -> Result<()> {
    const N: u64 = 4;
    // Crash after each number of appends, losing every unsynced byte.
    let mut lost_some = false;
    for appends in 0..12 {
        let (dir, storage, clock, log) = fresh(FlushPolicy::every_messages(N));
        let mut acked = 0;
        for i in 0..appends {
            acked = log
                .append(&mut batch("p", 1 + i % 2, 1_000), 0)?
                .last_offset()
                + 1;
        }
        // The power goes before the log closes (closing would flush).
        storage.crash(Tear::None)?;
        drop(log);
        let log = open(dir.path(), FlushPolicy::every_messages(N), &storage, &clock);
        let kept = log.log_end_offset();
        assert!(kept <= acked, "{appends} appends: nothing appears");
        assert!(
            kept + N > acked,
            "{appends} appends: kept {kept} of {acked}"
        );
        lost_some |= kept < acked;
    }
    assert!(lost_some, "the crashes lost unsynced records");
    Ok(())
}

#[test]
fn flush_ms_flushes_on_the_clock_and_flush_messages_still_counts() -> Result<()> {
    let policy = FlushPolicy::every_messages(10).with_interval(Duration::from_millis(500));
    let (_dir, _storage, clock, log) = fresh(policy);
    assert_eq!(log.config().flush(), policy);

    log.append(&mut batch("a", 3, 1_000), 0)?;
    assert_eq!(
        log.recovery_point(),
        0,
        "fewer than 10 records, no time passed"
    );
    clock.advance_ms(499);
    assert!(!log.wait_for_flush(3, Duration::ZERO));
    // The scheduler wakes on the clock's move; the wait is on a condition
    // variable, the timeout only guards against a hang.
    clock.advance_ms(1);
    assert!(log.wait_for_flush(3, PATIENCE), "the interval flush ran");
    assert_eq!(log.recovery_point(), 3);

    // The count bound holds between timer ticks.
    let info = log.append(&mut batch("b", 10, 1_000), 0)?;
    assert_eq!(log.recovery_point(), info.last_offset() + 1);
    assert_eq!(log.recovery_point(), 13);
    log.append(&mut batch("c", 2, 1_000), 0)?;
    assert_eq!(log.recovery_point(), 13);
    clock.advance_ms(500);
    assert!(
        log.wait_for_flush(15, PATIENCE),
        "the next interval flush ran"
    );
    log.close()?;
    Ok(())
}

#[test]
fn flush_ms_alone_acknowledges_from_the_page_cache() -> Result<()> {
    let policy = FlushPolicy::every_interval(Duration::from_millis(200));
    let (_dir, _storage, clock, log) = fresh(policy);
    for _ in 0..5 {
        log.append(&mut batch("i", 7, 1_000), 0)?;
    }
    assert_eq!(log.recovery_point(), 0);
    clock.advance_ms(200);
    assert!(log.wait_for_flush(35, PATIENCE));
    log.close()?;
    Ok(())
}

/// A cluster over `storage` with a manual clock.
fn open_cluster(dir: &Path, storage: &FaultyStorage) -> Result<Cluster> {
    let config = ClusterConfig::builder()
        .storage(Arc::new(storage.clone()))
        .clock(Arc::new(ManualClock::new(1_000_000)))
        .build()?;
    Cluster::open(dir, config)
}

#[test]
fn whitespace_padded_topic_configs_mean_what_they_say() -> Result<()> {
    let dir = tempdir();
    let storage = FaultyStorage::new();
    let cluster = open_cluster(dir.path(), &storage)?;
    let every = TopicConfig::new().set("flush.messages", " 1")?;
    let third = TopicConfig::new().set("flush.messages", "3 ")?;
    let retained = TopicConfig::new().set("retention.ms", "      1")?;
    let topics = [
        ("every", every),
        ("third", third),
        ("cache", TopicConfig::new()),
        ("retained", retained),
    ];
    for (name, config) in &topics {
        cluster.create_topic(NewTopic::new(*name, 1).config(config.clone()))?;
    }
    assert_eq!(
        cluster
            .describe_topic("retained")?
            .config
            .get("retention.ms"),
        Some("1")
    );
    assert_eq!(
        cluster
            .describe_topic("every")?
            .config
            .get("flush.messages"),
        Some("1")
    );
    // Count fsyncs per append (the cluster's other fsyncs run on its clock,
    // which does not move).
    let fsyncs_per_append = |topic: &str| -> Result<Vec<u64>> {
        let partition = cluster.topic(topic)?.partition(0)?;
        let mut counts = Vec::new();
        for _ in 0..6 {
            let before = storage.op_count(FaultOp::Sync);
            partition.append(&mut batch("v", 1, 1_000))?;
            counts.push(storage.op_count(FaultOp::Sync) - before);
        }
        Ok(counts)
    };
    // Each partition's first flush also writes (and fsyncs) its
    // leader-epoch-checkpoint file, for the first leader epoch.
    assert_eq!(fsyncs_per_append("every")?, [2, 1, 1, 1, 1, 1]);
    assert_eq!(fsyncs_per_append("third")?, [0, 0, 2, 0, 0, 1]);
    assert_eq!(fsyncs_per_append("cache")?, [0, 0, 0, 0, 0, 0]);
    assert_eq!(fsyncs_per_append("retained")?, [0, 0, 0, 0, 0, 0]);
    cluster.close()?;

    // Reopened, the stored (canonical) configs load and mean the same.
    let cluster = open_cluster(dir.path(), &storage)?;
    assert_eq!(
        cluster
            .describe_topic("third")?
            .config
            .get("flush.messages"),
        Some("3")
    );
    let partition = cluster.topic("every")?.partition(0)?;
    let before = storage.op_count(FaultOp::Sync);
    partition.append(&mut batch("w", 1, 1_000))?;
    assert_eq!(storage.op_count(FaultOp::Sync) - before, 1);
    cluster.close()?;
    Ok(())
}
