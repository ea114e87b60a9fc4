//! Producer-state snapshots: a reopen (clean or after a crash), a
//! truncation and a damaged snapshot all give the state a full rebuild
//! from the batches gives.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::clock::ManualClock;
use crate::format::{BatchBuilder, ControlRecordType};
use crate::log::Log;
use crate::storage::{FaultyStorage, Tear};
use crate::{Compression, LogConfig};

/// What a comparison looks at: every producer as a snapshot records it,
/// and the open transactions' first offsets.
type Fingerprint = (
    Vec<crate::format::producer_snapshot::SnapshotEntry>,
    Option<u64>,
);

fn fingerprint(state: &ProducerStateManager) -> Fingerprint {
    (state.snapshot(), state.first_unstable_offset_at(u64::MAX))
}

/// The live state of `log` and the one a full rebuild of its segments
/// gives.
fn live_and_rebuilt(log: &Log) -> (Fingerprint, Fingerprint) {
    let state = log.inner.state.read();
    let rebuilt = producer_state::rebuild(&state.segments, state.log_start_offset).unwrap();
    (fingerprint(&state.producers), fingerprint(&rebuilt))
}

/// Producer `pid`'s next batch of `count` records: transactional for
/// producers 0 and 1, idempotent only for 2.
fn batch(log: &Log, pid: i64, count: i32) -> Vec<u8> {
    let next = {
        let state = log.inner.state.read();
        state
            .producers
            .producer(pid)
            .and_then(|p| p.batches.back())
            .map_or(0, |b| b.last_sequence + 1)
    };
    let mut builder = BatchBuilder::new(Compression::None)
        .producer(pid, 0, next)
        .transactional(pid < 2);
    for i in 0..count {
        builder.append(1_000, None, Some(&[i as u8; 30]), &[]);
    }
    builder.build().unwrap().to_vec()
}

#[derive(Debug, Clone)]
enum Op {
    Data {
        pid: i64,
        count: i32,
    },
    End {
        pid: i64,
        commit: bool,
    },
    Truncate {
        permille: u64,
    },
    Reopen {
        crash: bool,
        flush: bool,
        damage_newest: bool,
        /// A power loss (pending directory operations may be lost too)
        /// rather than a process crash.
        power: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3i64, 1..4i32).prop_map(|(pid, count)| Op::Data { pid, count }),
        3 => (0..2i64, any::<bool>()).prop_map(|(pid, commit)| Op::End { pid, commit }),
        1 => (0..1000u64).prop_map(|permille| Op::Truncate { permille }),
        2 => (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
            |(crash, flush, damage_newest, power)| Op::Reopen { crash, flush, damage_newest, power }
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random appends, markers, rolls (small segments), truncations and
    /// reopens (clean, or a crash with or without a flush first, with or
    /// without the newest snapshot damaged): after every step the log's
    /// producer state equals a full rebuild from its batches.
    #[test]
    fn the_state_always_equals_a_full_rebuild(ops in prop::collection::vec(op(), 1..50)) {
        let dir = tempfile::tempdir().unwrap();
        let storage = FaultyStorage::new();
        let clock = Arc::new(ManualClock::new(2_000));
        let config = LogConfig::builder().segment_bytes(400).build().unwrap();
        let open = |recovery_point: u64| {
            Log::builder(dir.path())
                .storage(Arc::new(storage.clone()))
                .clock(clock.clone())
                .config(config.clone())
                .recovery_point(recovery_point)
                .open()
                .unwrap()
        };
        let mut log = open(0);
        for op in ops {
            match op {
                Op::Data { pid, count } => {
                    log.append(&mut batch(&log, pid, count), 0).unwrap();
                }
                Op::End { pid, commit } => {
                    let kind = if commit { ControlRecordType::Commit } else { ControlRecordType::Abort };
                    log.append_marker(pid, 0, kind, 0).unwrap();
                }
                Op::Truncate { permille } => {
                    let target = log.log_end_offset() * permille / 1000;
                    log.truncate_to(target).unwrap();
                }
                Op::Reopen { crash, flush, damage_newest, power } => {
                    let recovery_point = if crash {
                        if flush {
                            log.flush().unwrap();
                        }
                        let durable = log.recovery_point();
                        if power {
                            storage.power_loss(durable).unwrap();
                        } else {
                            storage.crash(Tear::Random(durable)).unwrap();
                        }
                        drop(log);
                        durable
                    } else {
                        let end = log.log_end_offset();
                        log.close().unwrap();
                        end
                    };
                    if damage_newest
                        && let Some(&newest) = list(&StdStorage, dir.path()).unwrap().last()
                    {
                        let path = snapshot_file(dir.path(), newest);
                        let mut bytes = std::fs::read(&path).unwrap();
                        if let Some(b) = bytes.last_mut() {
                            *b ^= 0x55;
                        }
                        std::fs::write(&path, bytes).unwrap();
                    }
                    log = open(recovery_point);
                }
            }
            let (live, rebuilt) = live_and_rebuilt(&log);
            prop_assert_eq!(live, rebuilt);
        }
    }
}

use crate::storage::StdStorage;

/// A clean close writes a snapshot at the log end, which the next open
/// (at that recovery point) loads instead of reading the batches; a
/// damaged one is skipped for the older one from the last roll, and the
/// state is the same either way.
#[test]
fn a_reopen_loads_the_newest_readable_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(2_000));
    let config = LogConfig::builder().segment_bytes(400).build().unwrap();
    let open = |recovery_point: u64| {
        Log::builder(dir.path())
            .clock(clock.clone())
            .config(config.clone())
            .recovery_point(recovery_point)
            .open()
            .unwrap()
    };
    let log = open(0);
    for i in 0..12 {
        log.append(&mut batch(&log, i % 3, 2), 0).unwrap();
        if i % 4 == 3 {
            log.append_marker(0, 0, ControlRecordType::Abort, 0)
                .unwrap();
        }
    }
    assert!(log.segment_count() > 2);
    let end = log.log_end_offset();
    let (expected, _) = live_and_rebuilt(&log);
    log.close().unwrap();
    let snapshots = list(&StdStorage, dir.path()).unwrap();
    assert!(snapshots.contains(&end), "{snapshots:?}");
    assert!(snapshots.len() >= 2, "roll snapshots too: {snapshots:?}");

    let log = open(end);
    assert_eq!(log.recovery_report().producer_snapshot, Some(end));
    assert_eq!(live_and_rebuilt(&log), (expected.clone(), expected.clone()));
    log.close().unwrap();

    // Damaged: the CRC catches it; the previous roll's snapshot and the
    // batches after it give the same state.
    let path = snapshot_file(dir.path(), end);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[12] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let log = open(end);
    let report = log.recovery_report();
    assert_eq!(report.producer_snapshots_skipped, 1);
    let older = report.producer_snapshot.expect("a roll snapshot");
    assert!(older < end);
    assert_eq!(live_and_rebuilt(&log), (expected.clone(), expected.clone()));
    // The same with every snapshot unreadable (truncated to nothing): a
    // full replay.
    log.close().unwrap();
    for offset in list(&StdStorage, dir.path()).unwrap() {
        std::fs::write(snapshot_file(dir.path(), offset), b"").unwrap();
    }
    let log = open(end);
    assert_eq!(log.recovery_report().producer_snapshot, None);
    assert_eq!(live_and_rebuilt(&log), (expected.clone(), expected));
    // Below the recovery point only: an open from 0 reads every batch.
    log.close().unwrap();
    let log = open(0);
    assert_eq!(log.recovery_report().producer_snapshot, None);
}

/// Truncation removes the snapshots above the cut and reloads from one
/// below it; a restart removes them all; retention those below the first
/// segment; at most `SNAPSHOTS_KEPT` stay.
#[test]
fn snapshots_follow_truncation_restart_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(2_000));
    let config = LogConfig::builder().segment_bytes(300).build().unwrap();
    let log = Log::builder(dir.path())
        .clock(clock.clone())
        .config(config)
        .open()
        .unwrap();
    for _ in 0..30 {
        log.append(&mut batch(&log, 2, 2), 0).unwrap();
    }
    let kept = log.inner.state.read().snapshots.clone();
    assert!(kept.len() <= SNAPSHOTS_KEPT && !kept.is_empty(), "{kept:?}");
    let cut = *kept.iter().next().unwrap() + 1;
    log.truncate_to(cut).unwrap();
    let after = log.inner.state.read().snapshots.clone();
    assert!(
        after.iter().all(|&o| o <= log.log_end_offset()),
        "{after:?}"
    );
    let (live, rebuilt) = live_and_rebuilt(&log);
    assert_eq!(live, rebuilt);
    for _ in 0..10 {
        log.append(&mut batch(&log, 2, 2), 0).unwrap();
    }
    let first_kept = log.segment_base_offsets()[2];
    log.delete_records(first_kept).unwrap();
    log.enforce_retention().unwrap();
    let first = log.segment_base_offsets()[0];
    assert!(log.inner.state.read().snapshots.iter().all(|&o| o >= first));
    log.truncate_fully_and_start_at(1_000).unwrap();
    assert!(log.inner.state.read().snapshots.is_empty());
    log.close().unwrap();
    // The close wrote one at the new log end, and nothing else remains.
    assert_eq!(
        list(&StdStorage, dir.path())
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        [1_000]
    );
}

/// `producer.id.expiration.ms`: the retention check (on the log's clock)
/// forgets an idle producer, never one with a transaction open; a
/// forgotten producer must start again at sequence 0; a snapshot load
/// drops expired producers too.
#[test]
fn idle_producers_expire_with_the_retention_check() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let config = LogConfig::builder()
        .retention_check_interval(std::time::Duration::from_secs(1))
        .producer_id_expiration(std::time::Duration::from_secs(5))
        .build()
        .unwrap();
    let log = Log::builder(dir.path())
        .clock(clock.clone())
        .config(config.clone())
        .open()
        .unwrap();
    log.append(&mut batch(&log, 2, 2), 0).unwrap(); // idempotent, ts 1_000
    log.append(&mut batch(&log, 0, 1), 0).unwrap(); // transaction open
    let producers = |log: &Log| {
        let state = log.inner.state.read();
        (
            state.producers.producer(0).is_some(),
            state.producers.producer(2).is_some(),
        )
    };
    clock.advance_ms(4_000); // 5_000: 4 s after the last write
    assert!(log.wait_for_background(std::time::Duration::from_secs(60), |_, n| n >= 1));
    assert_eq!(producers(&log), (true, true), "not idle long enough");
    clock.advance_ms(1_000); // 6_000: 5 s
    assert!(log.wait_for_background(std::time::Duration::from_secs(60), |_, n| n >= 2));
    assert_eq!(
        producers(&log),
        (true, false),
        "the open transaction keeps 0"
    );
    let mut next = BatchBuilder::new(Compression::None).producer(2, 0, 2);
    next.append(6_000, None, Some(b"x"), &[]);
    assert!(matches!(
        log.append(&mut next.build().unwrap().to_vec(), 0),
        Err(crate::Error::UnknownProducerId { producer_id: 2, .. })
    ));
    // Producer 0's transaction ends; the snapshot at close keeps it (its
    // marker is recent), a load 5 s later drops it.
    log.append_marker(0, 0, ControlRecordType::Commit, 0)
        .unwrap();
    let end = log.log_end_offset();
    log.close().unwrap();
    let reopen = || {
        Log::builder(dir.path())
            .clock(clock.clone())
            .config(config.clone())
            .recovery_point(end)
            .open()
            .unwrap()
    };
    let log = reopen();
    assert_eq!(log.recovery_report().producer_snapshot, Some(end));
    assert_eq!(producers(&log), (true, false));
    log.close().unwrap();
    clock.advance_ms(5_000);
    let log = reopen();
    assert_eq!(producers(&log), (false, false));
}

/// Replaying a segment from a snapshot taken in its middle (the walk
/// starts at the batch the offset index finds, headers only) gives the
/// state a replay of the whole segment gives, with transactions open
/// across the snapshot's offset.
#[test]
fn a_replay_from_the_middle_of_a_segment_equals_one_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig::builder()
        .index_interval_bytes(64)
        .build()
        .unwrap();
    let log = Log::builder(dir.path())
        .clock(Arc::new(ManualClock::new(2_000)))
        .config(config)
        .open()
        .unwrap();
    for round in 0..20 {
        for pid in 0..3 {
            log.append(&mut batch(&log, pid, 1 + round % 3), 0).unwrap();
        }
        if round % 4 == 3 {
            let kind = if round % 8 == 3 {
                ControlRecordType::Commit
            } else {
                ControlRecordType::Abort
            };
            log.append_marker(0, 0, kind, 0).unwrap();
        }
    }
    let mid = log.log_end_offset();
    let (entries, mid_unstable) = {
        let state = log.inner.state.read();
        (
            state.producers.snapshot(),
            state.producers.first_unstable_offset_at(u64::MAX),
        )
    };
    assert!(
        mid_unstable.is_some(),
        "a transaction is open at the snapshot"
    );
    for round in 0..20 {
        for pid in 0..3 {
            log.append(&mut batch(&log, pid, 2), 0).unwrap();
        }
        if round % 5 == 4 {
            log.append_marker(round % 2, 0, ControlRecordType::Commit, 0)
                .unwrap();
        }
    }
    let state = log.inner.state.read();
    assert_eq!(state.segments.len(), 1, "one segment holds both halves");
    let segment = &state.segments[0];
    let mut from_mid = ProducerStateManager::from_snapshot(&entries, mid, 2_000, i64::MAX);
    let mut aborted_mid = Vec::new();
    assert!(
        producer_state::replay_segment(&mut from_mid, segment, mid, |t| aborted_mid.push(t))
            .unwrap()
    );
    let mut from_start = ProducerStateManager::new(0);
    let mut aborted_all = Vec::new();
    assert!(
        producer_state::replay_segment(&mut from_start, segment, 0, |t| aborted_all.push(t))
            .unwrap()
    );
    assert_eq!(fingerprint(&from_mid), fingerprint(&from_start));
    // Only the transactions completed past the snapshot are replayed.
    let after: Vec<_> = aborted_all
        .iter()
        .filter(|t| t.last_offset >= mid as i64)
        .collect();
    assert_eq!(aborted_mid.iter().collect::<Vec<_>>(), after);
}
