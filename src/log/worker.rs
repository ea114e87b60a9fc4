//! The log's worker thread: flushes sealed segments after a roll, removes
//! deleted segments' files, runs the interval flush and periodic retention.
//!
//! The thread is named `logbus-log`, takes jobs from a bounded channel, stops
//! on an explicit shutdown message and is joined by [`Worker::stop`]. It
//! holds only a weak reference to the log. Waiting is on the channel, the
//! clock's wake-ups, or a timeout derived from the clock; never a sleep. If
//! the thread panics, the log is fenced rather than left half-alive.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, select};

use crate::config::FlushPolicy;
use crate::error::{Error, Result};
use crate::log::LogInner;
use crate::storage::segment::remove_deleted_files;
use crate::storage::spare;

/// How many jobs may wait before `schedule` blocks the caller.
pub(crate) const QUEUE_CAPACITY: usize = 1024;

/// Work for the worker thread.
#[derive(Debug)]
pub(crate) enum Job {
    /// Make every offset below this durable (after a roll).
    Flush(u64),
    /// Remove files renamed `.deleted`.
    RemoveFiles(Vec<PathBuf>),
    /// Prepare a spare segment for the next roll, if none is ready.
    PrepareSpare,
    /// Exit the loop.
    Shutdown,
}

/// Handle to the worker thread.
#[derive(Debug)]
pub(crate) struct Worker {
    jobs: Sender<Job>,
    handle: JoinHandle<()>,
}

impl Worker {
    pub(crate) fn spawn(inner: &Arc<LogInner>, jobs: Receiver<Job>) -> Result<Self> {
        let weak = Arc::downgrade(inner);
        let ticks = inner.clock.subscribe();
        // The first deadlines are fixed here, on the opener's thread, so they
        // count from the open whenever the thread gets to run.
        let now = inner.clock.now_ms();
        let schedule = (
            inner.next_interval_flush(now),
            now.saturating_add(inner.config.retention_check_interval_ms()),
        );
        let handle = std::thread::Builder::new()
            .name("logbus-log".into())
            .spawn(move || run(&weak, &jobs, &ticks, schedule))
            .map_err(|e| Error::io("spawn worker thread", inner.dir.clone(), e))?;
        Ok(Worker {
            jobs: inner.jobs.clone(),
            handle,
        })
    }

    /// Asks the thread to finish the jobs already queued, then joins it.
    pub(crate) fn stop(self) {
        // If the thread is gone its receiver is dropped; nothing to stop then.
        let _ = self.jobs.send(Job::Shutdown);
        let _ = self.handle.join();
    }
}

/// Fences the log if the worker thread unwinds.
struct PanicGuard<'a>(&'a Weak<LogInner>);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(inner) = self.0.upgrade()
        {
            inner.fence();
        }
    }
}

fn run(weak: &Weak<LogInner>, jobs: &Receiver<Job>, ticks: &Receiver<()>, schedule: (i64, i64)) {
    let _guard = PanicGuard(weak);
    let (mut next_flush, mut next_retention) = schedule;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let deadline = next_flush.min(next_retention);
        let timeout = inner.clock.wait_hint(deadline);
        let clock_ticks = ticks.clone();
        drop(inner);
        let job = match timeout {
            Some(t) => select! {
                recv(jobs) -> job => job.ok(),
                recv(clock_ticks) -> _ => None,
                default(t) => None,
            },
            None => select! {
                recv(jobs) -> job => job.ok(),
                recv(clock_ticks) -> _ => None,
            },
        };
        let Some(inner) = weak.upgrade() else { return };
        match job {
            Some(Job::Shutdown) => return,
            // Failures fence the log inside `sync_to`; nothing else to do.
            Some(Job::Flush(offset)) => drop(inner.sync_to(offset)),
            // A file left behind is removed by the next open.
            Some(Job::RemoveFiles(paths)) => {
                drop(remove_deleted_files(inner.storage.as_ref(), &paths))
            }
            Some(Job::PrepareSpare) => inner.prepare_spare(),
            None => {}
        }
        let now = inner.clock.now_ms();
        if now >= next_flush {
            let leo = inner.state.read().log_end_offset;
            drop(inner.sync_to(leo));
            next_flush = inner.next_interval_flush(now);
        }
        if now >= next_retention {
            drop(inner.enforce_retention());
            // A failed pass is retried at the next check; a failed swap
            // fenced the log.
            drop(inner.maybe_clean());
            next_retention = now.saturating_add(inner.config.retention_check_interval_ms());
        }
    }
}

impl LogInner {
    /// Queues a job for the worker thread without blocking. If the queue is
    /// full or the worker is gone, a removal runs inline and a flush is
    /// skipped (the next flush, or close, covers it).
    pub(crate) fn schedule(&self, job: Job) {
        if let Err(
            crossbeam_channel::TrySendError::Full(job)
            | crossbeam_channel::TrySendError::Disconnected(job),
        ) = self.jobs.try_send(job)
        {
            match job {
                Job::RemoveFiles(paths) => {
                    drop(remove_deleted_files(self.storage.as_ref(), &paths))
                }
                Job::Flush(_) | Job::PrepareSpare | Job::Shutdown => {}
            }
        }
    }

    /// Prepares a spare segment unless one is ready. A failure leaves no
    /// spare: the next roll creates its segment inline.
    fn prepare_spare(&self) {
        if self.state.read().spare_ready || self.is_fenced() {
            return;
        }
        let prepared = spare::prepare(&self.storage, &self.dir, self.segment_limits()).is_ok();
        let mut state = self.state.write();
        if prepared {
            state.spare_ready = true;
        } else {
            // Let a later append ask again.
            state.spare_requested = false;
        }
    }

    fn next_interval_flush(&self, now: i64) -> i64 {
        match self.config.flush() {
            FlushPolicy::Interval(every) => {
                now.saturating_add(i64::try_from(every.as_millis()).unwrap_or(i64::MAX))
            }
            FlushPolicy::PageCache | FlushPolicy::EveryAppend => i64::MAX,
        }
    }
}
