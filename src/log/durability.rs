//! Making appends durable: group commit and fencing.
//!
//! When the flush policy asks for an fsync before an acknowledgement
//! (`flush.messages=N`: the append that brings the unflushed offsets to N or
//! more; N = 1 is every append) the append returns only after an fsync that
//! covers it. Concurrent appenders share fsyncs: one of them runs the sync
//! for everything written so far while the others wait on a condition
//! variable; when it finishes, every appender whose offset it covered
//! returns. A failed fsync fences the log: the waiting appenders and every
//! later one get an error, and nothing is ever retried and acknowledged.
//! The durable offset at the failure is remembered ([`super::fence`]) so
//! that a reopen cuts the log back to it rather than trust pages the failed
//! fsync may have dropped (fsyncgate).
//!
//! An appender that can wait for its acknowledgement without blocking
//! (the producer's sender) may leave the fsync to later:
//! `Log::append_trusted_deferred` writes without it, and
//! `Log::sync_for_ack` runs it (or waits for the one in flight) from
//! another thread, so the next append is written while this one is
//! synced. The promise is the same: nothing is acknowledged before an
//! fsync that began after its bytes were written has returned. A sync
//! covers the log end it read before it began, never more.
//!
//! A truncation can lower the log end offset while a sync is in flight or a
//! flush is queued. Targets are therefore capped at the current log end, and
//! a sync that a truncation overtook does not advance the durable offset
//! (its covered offset may no longer exist).

use std::mem;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex, RwLockUpgradableReadGuard};

use crate::error::Result;
use crate::log::{EpochFile, LogInner, fence};

/// Group-commit state of one log.
#[derive(Debug)]
pub(crate) struct Durability {
    state: Mutex<SyncState>,
    done: Condvar,
    /// A copy of the log end offset, updated under the log's `state` lock,
    /// readable here without taking that lock (which comes first in the
    /// lock order).
    log_end: AtomicU64,
}

#[derive(Debug)]
struct SyncState {
    /// Every offset below this is on disk.
    durable_offset: u64,
    /// Whether some thread is running an fsync right now.
    running: bool,
    /// Truncations so far; a sync that saw this change does not count.
    truncations: u64,
}

impl Durability {
    pub(crate) fn new(durable_offset: u64, log_end: u64) -> Self {
        Durability {
            state: Mutex::new(SyncState {
                durable_offset,
                running: false,
                truncations: 0,
            }),
            done: Condvar::new(),
            log_end: AtomicU64::new(log_end),
        }
    }

    /// Wakes every thread waiting in [`LogInner::wait_durable`] (after the
    /// log was fenced).
    pub(crate) fn wake_waiters(&self) {
        let _state = self.state.lock();
        self.done.notify_all();
    }

    /// Records a new log end offset; called with the log's `state` lock held.
    pub(crate) fn set_log_end(&self, offset: u64) {
        self.log_end.store(offset, Ordering::Release);
    }

    pub(crate) fn durable_offset(&self) -> u64 {
        self.state.lock().durable_offset
    }

    /// The durable offset and the truncation count, read together.
    pub(crate) fn durable_offset_and_truncations(&self) -> (u64, u64) {
        let state = self.state.lock();
        (state.durable_offset, state.truncations)
    }

    /// Lowers the log end and the durable offset after a truncation to
    /// `offset`; called with the log's `state` lock held.
    pub(crate) fn truncate(&self, offset: u64) {
        self.set_log_end(offset);
        let mut state = self.state.lock();
        state.durable_offset = state.durable_offset.min(offset);
        state.truncations += 1;
        self.done.notify_all();
    }
}

impl Durability {
    /// Sets the log end and the durable offset to `offset` after the log
    /// restarted there, empty, durably
    /// ([`Log::truncate_fully_and_start_at`](crate::Log::truncate_fully_and_start_at));
    /// called with the log's `state` lock held.
    pub(crate) fn restart_at(&self, offset: u64) {
        self.set_log_end(offset);
        let mut state = self.state.lock();
        state.durable_offset = offset;
        state.truncations += 1;
        self.done.notify_all();
    }
}

impl LogInner {
    /// Waits until every offset below `offset` is on disk, or `timeout`
    /// passes, or the log is fenced (then it never will be); returns
    /// whether it is. Woken by every completed sync and by fencing.
    pub(crate) fn wait_durable(&self, offset: u64, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut state = self.durability.state.lock();
        while state.durable_offset < offset {
            if self.is_fenced() {
                return false;
            }
            if self
                .durability
                .done
                .wait_until(&mut state, deadline)
                .timed_out()
            {
                return state.durable_offset >= offset;
            }
        }
        true
    }

    /// Returns once every offset below `target` is on disk, running an fsync
    /// itself or waiting for the one in flight.
    pub(crate) fn sync_to(&self, target: u64) -> Result<()> {
        self.sync_until(target, false)
    }

    /// Runs one fsync of the log's files (and of the directory if entries
    /// changed) even if the durable offset covers the log end already:
    /// after a truncation on open, which changed the files without raising
    /// it.
    pub(crate) fn sync_now(&self) -> Result<()> {
        self.sync_until(u64::MAX, true)
    }

    fn sync_until(&self, target: u64, mut force: bool) -> Result<()> {
        let mut state = self.durability.state.lock();
        loop {
            self.check_not_fenced()?;
            let reachable = target.min(self.durability.log_end.load(Ordering::Acquire));
            if !force && state.durable_offset >= reachable {
                return Ok(());
            }
            if state.running {
                self.durability.done.wait(&mut state);
                continue;
            }
            force = false;
            state.running = true;
            let truncations = state.truncations;
            drop(state);
            let start = std::time::Instant::now();
            let outcome = self.sync_dirty();
            self.stats.flush.since(start);
            state = self.durability.state.lock();
            state.running = false;
            match outcome {
                Ok(upto) if state.truncations == truncations => {
                    state.durable_offset = state.durable_offset.max(upto);
                }
                // A truncation overtook this sync: what it covered may be
                // gone. The loop syncs again if the target still needs it.
                Ok(_) => {}
                // The leader epoch file could not be written: the log is
                // fenced (as a failed write of the append path fences it),
                // but no data fsync failed, so nothing synced is in doubt
                // and no fenced-offset marker is written.
                Err(SyncFailure::EpochFile(e)) => {
                    self.durability.done.notify_all();
                    return Err(e);
                }
                Err(SyncFailure::Fsync(e)) => {
                    // Fenced before the lock is released, so no other thread
                    // starts a retry that would "succeed" over pages this
                    // failure dropped and raise the durable offset past them.
                    self.mark_fenced();
                    let synced = state.durable_offset;
                    fence::remember(&self.dir, synced);
                    self.durability.done.notify_all();
                    drop(state);
                    fence::write_marker(self.storage.as_ref(), &self.dir, synced);
                    return Err(e);
                }
            }
            self.durability.done.notify_all();
        }
    }

    /// Fsyncs every file holding data not yet on disk, and the directory if
    /// segments were created or removed. Returns the log end offset that the
    /// syncs cover. The `state` lock is held only to collect the files.
    fn sync_dirty(&self) -> std::result::Result<u64, SyncFailure> {
        let (sealed, active, dir_dirty, covered) = {
            // A new leader epoch's entry reaches its file before the
            // recovery point may pass its start offset (see
            // `EpochFile::StaleAppend`). Under the upgradable read: appends,
            // which may change the cache, wait; readers do not.
            let state = self.state.upgradable_read();
            let mut state = if state.epoch_file == EpochFile::StaleAppend {
                self.write_epoch_file(&state.epochs)
                    .map_err(SyncFailure::EpochFile)?;
                let mut state = RwLockUpgradableReadGuard::upgrade(state);
                state.epoch_file = EpochFile::Written;
                state
            } else {
                RwLockUpgradableReadGuard::upgrade(state)
            };
            let sealed = mem::take(&mut state.unflushed);
            let dir_dirty = mem::replace(&mut state.dir_dirty, false);
            let active = state.active();
            (
                sealed,
                active.file().clone(),
                dir_dirty,
                state.log_end_offset,
            )
        };
        for file in &sealed {
            file.sync().map_err(SyncFailure::Fsync)?;
        }
        active.sync().map_err(SyncFailure::Fsync)?;
        if dir_dirty {
            self.storage
                .sync_dir(&self.dir)
                .map_err(SyncFailure::Fsync)?;
        }
        Ok(covered)
    }
}

/// Why [`LogInner::sync_dirty`] failed.
#[derive(Debug)]
enum SyncFailure {
    /// Writing the leader epoch file failed (it fenced the log); no data
    /// fsync ran.
    EpochFile(crate::Error),
    /// An fsync failed: what it covered may be lost (fsyncgate).
    Fsync(crate::Error),
}
