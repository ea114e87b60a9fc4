//! The scheduler's guarantees, with a manual clock and a storage that can
//! hold a removal at a gate or panic in one: periodic work runs on the
//! shared threads, closing a log waits for its running work and leaves no
//! queued work behind, and a panic fences only the log whose work panicked.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::*;
use crate::clock::ManualClock;
use crate::config::{FlushPolicy, LogConfig};
use crate::format::BatchBuilder;
use crate::log::Log;
use crate::storage::{DirLock, OpenMode, StdStorage, Storage, StorageFile};
use crate::types::Compression;

/// Generous bound on waits that end as soon as the condition holds.
const PATIENCE: Duration = Duration::from_secs(60);

/// Real files, except that removing a `*.gate` file waits until the gate
/// opens and removing a `*.boom` file panics; every call on a path under
/// a watched directory is counted.
#[derive(Debug, Default)]
struct GateStorage {
    inner: StdStorage,
    gate: Mutex<Gate>,
    changed: Condvar,
    watched: Mutex<Option<(PathBuf, usize)>>,
}

#[derive(Debug, Default)]
struct Gate {
    open: bool,
    /// Removals of gate files that have started.
    waiting: usize,
}

impl GateStorage {
    fn touch(&self, path: &Path) {
        if let Some((dir, calls)) = &mut *self.watched.lock()
            && path.starts_with(dir)
        {
            *calls += 1;
        }
    }

    fn wait_for_gate_waiters(&self, n: usize) {
        let mut gate = self.gate.lock();
        while gate.waiting < n {
            assert!(
                !self.changed.wait_for(&mut gate, PATIENCE).timed_out(),
                "no removal reached the gate"
            );
        }
    }

    fn open_gate(&self) {
        self.gate.lock().open = true;
        self.changed.notify_all();
    }

    /// From now on, counts calls on paths under `dir`.
    fn watch(&self, dir: &Path) {
        *self.watched.lock() = Some((dir.to_path_buf(), 0));
    }

    fn watched_calls(&self) -> usize {
        self.watched.lock().as_ref().map_or(0, |w| w.1)
    }
}

/// Opens the gate when dropped, so a failed assertion does not leave a
/// pool thread at the gate for the scheduler's stop to wait on forever.
struct OpenOnDrop(Arc<GateStorage>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open_gate();
    }
}

impl Storage for GateStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> crate::Result<Arc<dyn StorageFile>> {
        self.touch(path);
        self.inner.open(path, mode)
    }
    fn create_dir_all(&self, path: &Path) -> crate::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> crate::Result<()> {
        self.touch(from);
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> crate::Result<()> {
        self.touch(path);
        let name = path.to_string_lossy();
        assert!(!name.ends_with(".boom"), "injected panic removing {name}");
        if name.ends_with(".gate") {
            let mut gate = self.gate.lock();
            gate.waiting += 1;
            self.changed.notify_all();
            while !gate.open {
                self.changed.wait(&mut gate);
            }
        }
        self.inner.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> crate::Result<()> {
        self.inner.remove_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> crate::Result<Vec<PathBuf>> {
        self.inner.list_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
    fn sync_dir(&self, path: &Path) -> crate::Result<()> {
        self.touch(path);
        self.inner.sync_dir(path)
    }
    fn lock_dir(&self, dir: &Path) -> crate::Result<DirLock> {
        self.inner.lock_dir(dir)
    }
}

fn open(
    dir: &Path,
    config: LogConfig,
    clock: &ManualClock,
    storage: Arc<dyn Storage>,
    pool: &LogScheduler,
) -> Log {
    Log::builder(dir)
        .config(config)
        .clock(Arc::new(clock.clone()))
        .storage(storage)
        .scheduler(pool.handle())
        .open()
        .unwrap()
}

/// One batch of `n` records with keys `key0..` and 60-byte values, all at
/// `timestamp`.
fn batch(n: u32, timestamp: i64) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Compression::None);
    for i in 0..n {
        let key = format!("key{i}");
        builder.append(timestamp, Some(key.as_bytes()), Some(&[b'v'; 60]), &[]);
    }
    builder.build().unwrap().to_vec()
}

/// A file of that name in `dir`, for a removal job to remove.
fn file_in(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, b"x").unwrap();
    path
}

#[test]
fn retention_and_cleaning_checks_run_on_the_shared_threads() {
    let clock = ManualClock::new(1_000_000);
    let pool = LogScheduler::start(2, Arc::new(clock.clone())).unwrap();
    let storage: Arc<dyn Storage> = Arc::new(StdStorage::new());
    let dirs = [(); 3].map(|()| tempfile::tempdir().unwrap());
    let base = LogConfig::builder()
        .segment_bytes(1024)
        .segment_time(None)
        .retention_check_interval(Duration::from_secs(60));
    let expiring = base
        .clone()
        .retention_time(Some(Duration::from_millis(10_000)))
        .build()
        .unwrap();
    let compacted = base
        .clone()
        .retention_time(None)
        .compact(true)
        .delete(false)
        .build()
        .unwrap();
    let kept = base.retention_time(None).build().unwrap();
    let logs = [
        open(dirs[0].path(), expiring, &clock, storage.clone(), &pool),
        open(dirs[1].path(), compacted, &clock, storage.clone(), &pool),
        open(dirs[2].path(), kept, &clock, storage, &pool),
    ];
    // Ten batches of the same ten keys: each fills most of a segment, so
    // every one rolls, and all but the last copies of the keys are
    // garbage for the cleaner.
    for log in &logs {
        for _ in 0..10 {
            log.append(&mut batch(10, clock.now_ms()), 0).unwrap();
        }
        assert_eq!(log.segment_count(), 10);
    }
    let sizes = logs.each_ref().map(Log::size_bytes);

    // Past retention.ms, but not yet at a check: nothing changes.
    clock.advance_ms(59_999);
    for log in &logs {
        assert_eq!(log.segment_count(), 10);
    }
    clock.advance_ms(1);
    for log in &logs {
        assert!(
            log.inner
                .background
                .wait_for(PATIENCE, |_, checks| checks >= 1),
            "no retention check ran"
        );
    }
    assert_eq!(logs[0].segment_count(), 1, "expired segments deleted");
    assert_eq!(logs[0].log_start_offset(), 90);
    assert!(logs[1].cleaner_checkpoint() >= 90, "the log was cleaned");
    assert!(logs[1].size_bytes() < sizes[1] / 2);
    assert_eq!(logs[2].size_bytes(), sizes[2], "no rule deletes anything");

    // The next check is one interval after this one.
    logs[0].append(&mut batch(10, clock.now_ms()), 0).unwrap();
    clock.advance_ms(59_999);
    assert!(
        !logs[0]
            .inner
            .background
            .wait_for(Duration::ZERO, |_, checks| checks >= 2)
    );
    clock.advance_ms(1);
    assert!(
        logs[0]
            .inner
            .background
            .wait_for(PATIENCE, |_, checks| checks >= 2)
    );
    for log in logs {
        log.close().unwrap();
    }
}

#[test]
fn interval_flushes_of_many_logs_run_on_one_thread() {
    let clock = ManualClock::new(1_000_000);
    let pool = LogScheduler::start(1, Arc::new(clock.clone())).unwrap();
    let storage: Arc<dyn Storage> = Arc::new(StdStorage::new());
    let dirs = [(); 4].map(|()| tempfile::tempdir().unwrap());
    let logs = dirs.each_ref().map(|dir| {
        let config = LogConfig::builder()
            .flush(FlushPolicy::every_interval(Duration::from_millis(500)))
            .build()
            .unwrap();
        open(dir.path(), config, &clock, storage.clone(), &pool)
    });
    for log in &logs {
        log.append(&mut batch(3, clock.now_ms()), 0).unwrap();
        assert_eq!(log.recovery_point(), 0);
    }
    clock.advance_ms(499);
    for log in &logs {
        assert!(!log.wait_for_flush(3, Duration::ZERO));
    }
    clock.advance_ms(1);
    for log in &logs {
        assert!(log.wait_for_flush(3, PATIENCE), "the interval flush ran");
    }
    for log in logs {
        log.close().unwrap();
    }
}

#[test]
fn a_new_flush_interval_restarts_the_timer_from_now() {
    let clock = ManualClock::new(1_000_000);
    let pool = LogScheduler::start(1, Arc::new(clock.clone())).unwrap();
    let storage: Arc<dyn Storage> = Arc::new(StdStorage::new());
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default(), &clock, storage, &pool);
    log.append(&mut batch(3, clock.now_ms()), 0).unwrap();
    clock.advance_ms(10_000);
    assert!(!log.wait_for_flush(3, Duration::ZERO));
    let every = LogConfig::builder()
        .flush(FlushPolicy::every_interval(Duration::from_millis(500)))
        .build()
        .unwrap();
    log.set_config(every).unwrap();
    clock.advance_ms(499);
    assert!(!log.wait_for_flush(3, Duration::ZERO));
    clock.advance_ms(1);
    assert!(log.wait_for_flush(3, PATIENCE), "the interval flush ran");
    // And off again: the timer is gone.
    log.set_config(LogConfig::default()).unwrap();
    log.append(&mut batch(3, clock.now_ms()), 0).unwrap();
    clock.advance_ms(10_000);
    assert!(!log.wait_for_flush(6, Duration::ZERO));
    log.close().unwrap();
}

#[test]
fn close_waits_for_running_work_and_no_queued_work_runs_after_it() {
    let clock = ManualClock::new(1_000_000);
    let pool = LogScheduler::start(1, Arc::new(clock.clone())).unwrap();
    let gate = Arc::new(GateStorage::default());
    let _open_on_failure = OpenOnDrop(gate.clone());
    let storage: Arc<dyn Storage> = gate.clone();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = LogConfig::default();
    let a = open(dir_a.path(), config.clone(), &clock, storage.clone(), &pool);
    let b = open(dir_b.path(), config, &clock, storage, &pool);

    // The only thread is held inside one of b's removals.
    let held = file_in(dir_b.path(), "held.gate");
    b.inner.schedule(Job::RemoveFiles(vec![held.clone()]));
    gate.wait_for_gate_waiters(1);
    // a's work queues behind it.
    let doomed = file_in(dir_a.path(), "old.deleted");
    a.inner.schedule(Job::RemoveFiles(vec![doomed.clone()]));
    a.inner.schedule(Job::PrepareSpare);
    a.inner.schedule(Job::Flush(0));

    // Closing a does not wait for b's work; its queued removal runs in the
    // close, and nothing else of it ever runs.
    a.close().unwrap();
    assert!(!doomed.exists(), "a queued removal is done by close");
    gate.watch(dir_a.path());

    // Closing b waits for the removal its thread is running.
    let (closed_tx, closed_rx) = crossbeam_channel::bounded(1);
    let closer = std::thread::spawn(move || {
        b.close().unwrap();
        closed_tx.send(()).unwrap();
    });
    assert!(
        closed_rx.recv_timeout(Duration::from_millis(100)).is_err(),
        "close returned while the log's work was running"
    );
    assert!(held.exists());
    gate.open_gate();
    closed_rx.recv_timeout(PATIENCE).unwrap();
    assert!(!held.exists(), "the running removal finished before close");
    closer.join().unwrap();

    // Every thread is joined: whatever was left of a in the channel has
    // been seen and dropped.
    pool.stop();
    assert_eq!(gate.watched_calls(), 0, "a job touched a closed log");
    let names: Vec<_> = std::fs::read_dir(dir_a.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.contains("spare")),
        "no spare prepared after close: {names:?}"
    );
}

#[test]
fn a_panic_fences_only_the_log_whose_work_panicked() {
    let clock = ManualClock::new(1_000_000);
    let pool = LogScheduler::start(1, Arc::new(clock.clone())).unwrap();
    let storage: Arc<dyn Storage> = Arc::new(GateStorage::default());
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = LogConfig::builder()
        .retention_check_interval(Duration::from_secs(1))
        .build()
        .unwrap();
    let a = open(dir_a.path(), config.clone(), &clock, storage.clone(), &pool);
    let b = open(dir_b.path(), config, &clock, storage, &pool);

    let boom = file_in(dir_a.path(), "x.boom");
    a.inner.schedule(Job::RemoveFiles(vec![boom]));
    assert!(a.inner.background.wait_for(PATIENCE, |done, _| done >= 1));
    assert!(a.is_fenced(), "the panic fenced its log");

    // The same (only) thread goes on with b's work.
    let gone = file_in(dir_b.path(), "y.deleted");
    b.inner.schedule(Job::RemoveFiles(vec![gone.clone()]));
    assert!(b.inner.background.wait_for(PATIENCE, |done, _| done >= 1));
    assert!(!gone.exists());
    assert!(!b.is_fenced());
    b.append(&mut batch(1, clock.now_ms()), 0).unwrap();
    assert!(matches!(
        a.append(&mut batch(1, clock.now_ms()), 0),
        Err(crate::Error::Fenced { .. })
    ));

    // The fenced log's timers are gone; the other's still run.
    clock.advance_ms(1_000);
    assert!(
        b.inner
            .background
            .wait_for(PATIENCE, |_, checks| checks >= 1)
    );
    assert!(
        !a.inner
            .background
            .wait_for(Duration::ZERO, |_, checks| checks >= 1)
    );
    assert!(a.close().is_err(), "a fenced log reports it on close");
    b.close().unwrap();
}
