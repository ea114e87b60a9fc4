use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::error::Error;
use crate::format::{self, BatchBuilder};
use crate::storage::{FaultKind, FaultOp, FaultyStorage, StdStorage};
use crate::{Compression, Log, LogConfig};

#[test]
fn markers_round_trip_and_damage_is_told_from_absence() {
    let dir = tempfile::tempdir().unwrap();
    let storage = StdStorage::new();
    assert_eq!(pending(&storage, dir.path()).unwrap(), None);
    for offset in [0, 1, 12_345, u64::MAX] {
        write_marker(&storage, dir.path(), offset).unwrap();
        assert_eq!(pending(&storage, dir.path()).unwrap(), Some(offset));
    }
    // (Damage in general: `marker`'s tests. Here: the message says which
    // marker.)
    std::fs::write(marker_path(dir.path()), b"restart-offset v1 7 00000000\n").unwrap();
    let err = pending(&storage, dir.path()).unwrap_err();
    assert!(err.to_string().contains("restart-offset"), "{err}");
    std::fs::write(temp_path(dir.path()), b"half").unwrap();
    assert!(has_temp(&storage, dir.path()));
    remove_marker(&storage, dir.path()).unwrap();
    assert_eq!(pending(&storage, dir.path()).unwrap(), None);
    assert!(!has_temp(&storage, dir.path()));
}

/// A batch of `records` records stamped with `epoch` and based at `base`.
fn batch(records: usize, epoch: i32, base: u64) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Compression::None);
    for i in 0..records {
        builder.append(1_000 + i as i64, Some(b"k"), Some(&[7; 40]), &[]);
    }
    let mut bytes = builder.build().expect("build").to_vec();
    format::set_base_offset(&mut bytes, base as i64);
    format::set_partition_leader_epoch(&mut bytes, epoch);
    bytes
}

fn small_segments() -> LogConfig {
    LogConfig::builder()
        .segment_bytes(1024)
        .build()
        .expect("config")
}

/// Every batch of the log as (base offset, last offset, epoch).
fn contents(log: &Log) -> Vec<(i64, i64, i32)> {
    let read = log
        .read(log.log_start_offset(), usize::MAX)
        .expect("readable");
    read.batches()
        .map(|b| {
            let h = *b.expect("a valid batch").header();
            (h.base_offset, h.last_offset(), h.partition_leader_epoch)
        })
        .collect()
}

fn epochs(log: &Log) -> Vec<(i32, u64)> {
    log.epoch_entries()
        .iter()
        .map(|e| (e.epoch, e.start_offset))
        .collect()
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    names.sort();
    names
}

/// A log of several segments written by three leader epochs.
fn written(log: &Log) {
    for (i, epoch) in [0, 0, 0, 2, 2, 2, 5, 5, 5, 5].into_iter().enumerate() {
        log.append_as_follower(&batch(3, epoch, 3 * i as u64))
            .expect("append");
    }
}

#[test]
fn a_restart_empties_the_log_and_starts_it_again_at_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::builder(dir.path())
        .config(small_segments())
        .open()
        .unwrap();
    written(&log);
    assert!(log.segment_count() > 2, "{:?}", log.segment_base_offsets());
    assert_eq!(epochs(&log), [(0, 0), (2, 9), (5, 18)]);
    let before = contents(&log);
    // A reader of the old data keeps it.
    let held = log.read(0, usize::MAX).unwrap();

    log.truncate_fully_and_start_at(100).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (100, 100));
    assert_eq!(log.segment_base_offsets(), [100]);
    assert_eq!(log.recovery_point(), 100);
    assert_eq!(epochs(&log), []);
    assert_eq!(log.latest_epoch(), None);
    assert!(contents(&log).is_empty());
    assert!(matches!(
        log.read(99, 1 << 20),
        Err(Error::OffsetOutOfRange { .. })
    ));
    let held: Vec<i64> = held
        .batches()
        .map(|b| b.unwrap().header().base_offset)
        .collect();
    assert_eq!(held.len(), before.len(), "old data still readable");

    // The follower goes on from there with its leader's batches.
    log.append_as_follower(&batch(2, 7, 100)).unwrap();
    log.append_as_follower(&batch(2, 8, 102)).unwrap();
    assert_eq!(epochs(&log), [(7, 100), (8, 102)]);
    let after = contents(&log);
    log.close().unwrap();
    // Only the new segment, the epoch file, the close's producer snapshot
    // and no marker are left.
    assert_eq!(
        file_names(dir.path()),
        [
            "00000000000000000100.index",
            "00000000000000000100.log",
            "00000000000000000100.timeindex",
            "00000000000000000104.snapshot",
            "leader-epoch-checkpoint",
        ]
    );

    // A reopen with the owner's old checkpoints still starts at 100.
    let log = Log::builder(dir.path())
        .config(small_segments())
        .recovery_point(0)
        .log_start_offset(0)
        .open()
        .unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (100, 104));
    assert_eq!(contents(&log), after);
    assert_eq!(epochs(&log), [(7, 100), (8, 102)]);
}

#[test]
fn a_restart_at_or_below_the_current_offsets_works_too() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::builder(dir.path()).open().unwrap();
    // An empty log restarted where it is: the new segment replaces the
    // old one of the same base offset.
    log.truncate_fully_and_start_at(0).unwrap();
    assert_eq!(log.segment_base_offsets(), [0]);
    log.append_as_follower(&batch(4, 1, 0)).unwrap();
    // Below the log end: everything goes all the same.
    log.truncate_fully_and_start_at(2).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (2, 2));
    assert!(contents(&log).is_empty());
    log.append_as_follower(&batch(1, 3, 2)).unwrap();
    log.close().unwrap();
    let log = Log::builder(dir.path()).open().unwrap();
    assert_eq!(contents(&log), [(2, 2, 3)]);
}

#[test]
fn a_fenced_log_refuses_a_restart_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FaultyStorage::new();
    let log = Log::builder(dir.path())
        .storage(Arc::new(storage.clone()))
        .open()
        .unwrap();
    log.append_as_follower(&batch(2, 0, 0)).unwrap();
    // The marker's rename fails: nothing changed, the log is fenced.
    storage.fail_nth(FaultOp::Rename, 1, FaultKind::Eio);
    assert!(matches!(
        log.truncate_fully_and_start_at(50),
        Err(Error::Io { .. })
    ));
    assert!(log.is_fenced());
    assert!(matches!(
        log.truncate_fully_and_start_at(50),
        Err(Error::Fenced { .. })
    ));
    assert_eq!(log.log_end_offset(), 2);
    drop(log);
    let log = Log::builder(dir.path()).open().unwrap();
    assert_eq!(contents(&log), [(0, 1, 0)]);
    assert!(!file_names(dir.path()).iter().any(|n| n.starts_with(MARKER)));
}

/// What a reopen found after a crash in the middle of a restart.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    Old,
    New,
}

/// A crash at every step of a restart (each I/O operation in turn fails,
/// then a power loss drawn from a seed keeps or loses every unsynced
/// change), then a reopen with the owner's old checkpoints: the log is
/// the old one, whole, or the new one, empty at the offset, never a mix.
/// A restart that returned `Ok` is always found done.
#[test]
fn a_crash_at_any_step_of_a_restart_reopens_to_the_old_or_the_new_log() {
    const RESTART_AT: u64 = 1_000;
    let counted = [
        FaultOp::Write,
        FaultOp::Sync,
        FaultOp::SyncDir,
        FaultOp::Rename,
        FaultOp::Create,
        FaultOp::SetLen,
        FaultOp::Remove,
    ];
    let setup = || {
        let dir = tempfile::tempdir().unwrap();
        let storage = FaultyStorage::new();
        let log = Log::builder(dir.path())
            .config(small_segments())
            .storage(Arc::new(storage.clone()))
            .open()
            .unwrap();
        written(&log);
        log.flush().unwrap();
        (dir, storage, log)
    };
    // How many operations of each kind a restart makes.
    let (_dir, storage, log) = setup();
    let old_contents = contents(&log);
    let old_epochs = epochs(&log);
    let old_end = log.log_end_offset();
    let old_recovery_point = log.recovery_point();
    let before: Vec<u64> = counted.iter().map(|&op| storage.op_count(op)).collect();
    log.truncate_fully_and_start_at(RESTART_AT).unwrap();
    let made: Vec<u64> = counted
        .iter()
        .zip(&before)
        .map(|(&op, &b)| storage.op_count(op) - b)
        .collect();
    drop(log);
    assert!(made.iter().sum::<u64>() > 10, "{made:?}");

    let mut seen = (0, 0);
    for (&op, &count) in counted.iter().zip(&made) {
        for n in 1..=count {
            for seed in 0..3 {
                let (dir, storage, log) = setup();
                storage.fail_nth(op, n, FaultKind::Eio);
                let result = log.truncate_fully_and_start_at(RESTART_AT);
                log.abandon();
                storage.clear_faults();
                storage.power_loss(seed * 7919 + n).unwrap();
                let reopened = Log::builder(dir.path())
                    .config(small_segments())
                    .storage(Arc::new(storage.clone()))
                    .recovery_point(old_recovery_point)
                    .open()
                    .unwrap_or_else(|e| panic!("{op:?} #{n} seed {seed}: {e}"));
                let offsets = (reopened.log_start_offset(), reopened.log_end_offset());
                let found = if offsets == (0, old_end) {
                    assert_eq!(contents(&reopened), old_contents, "{op:?} #{n} seed {seed}");
                    assert_eq!(epochs(&reopened), old_epochs, "{op:?} #{n} seed {seed}");
                    Found::Old
                } else {
                    assert_eq!(offsets, (RESTART_AT, RESTART_AT), "{op:?} #{n} seed {seed}");
                    assert_eq!(reopened.segment_base_offsets(), [RESTART_AT]);
                    assert_eq!(epochs(&reopened), [], "{op:?} #{n} seed {seed}");
                    Found::New
                };
                if result.is_ok() {
                    assert_eq!(found, Found::New, "{op:?} #{n} seed {seed}: acknowledged");
                }
                match found {
                    Found::Old => seen.0 += 1,
                    Found::New => seen.1 += 1,
                }
                // Whichever it is, it works: the next append lands.
                let next = reopened.log_end_offset();
                reopened.append_as_follower(&batch(1, 9, next)).unwrap();
                reopened.close().unwrap();
                assert!(
                    !file_names(dir.path()).iter().any(|n| n.starts_with(MARKER)),
                    "{op:?} #{n} seed {seed}: the marker is gone after a reopen"
                );
            }
        }
    }
    assert!(seen.0 > 0 && seen.1 > 0, "both outcomes happen: {seen:?}");
}
