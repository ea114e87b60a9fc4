//! The log's background work: flushing sealed segments after a roll,
//! removing deleted segments' files, preparing spare segments, the interval
//! flush and the periodic retention and cleaning check.
//!
//! The work runs on a [`LogScheduler`](super::scheduler::LogScheduler)'s
//! threads, shared by every log of a cluster (a standalone log has a
//! private one-thread scheduler). This module says what each piece of work
//! does; the scheduler says when and where it runs.

use std::path::PathBuf;

use crate::log::LogInner;
use crate::storage::segment::remove_deleted_files;
use crate::storage::spare;

/// Work a log queues for its scheduler.
#[derive(Debug)]
pub(crate) enum Job {
    /// Make every offset below this durable (after a roll).
    Flush(u64),
    /// Remove files renamed `.deleted`.
    RemoveFiles(Vec<PathBuf>),
    /// Prepare a spare segment for the next roll, if none is ready.
    PrepareSpare,
}

/// One item a scheduler thread runs for a log: a queued job or a due timer.
#[derive(Debug)]
pub(crate) enum Work {
    Job(Job),
    /// `flush.ms`: flush everything appended so far.
    IntervalFlush,
    /// `log.retention.check.interval.ms`: enforce retention, then clean if
    /// the log compacts and is dirty enough, then forget producers past
    /// `producer.id.expiration.ms`.
    RetentionCheck,
}

/// Runs one work item. Failures are not reported: a failed fsync fences the
/// log inside `sync_to`, a file left behind is removed by the next open, a
/// failed retention or cleaning pass is retried at the next check (a failed
/// swap fenced the log).
pub(crate) fn run(inner: &LogInner, work: Work) {
    match work {
        Work::Job(Job::Flush(offset)) => drop(inner.sync_to(offset)),
        Work::Job(Job::RemoveFiles(paths)) => {
            drop(remove_deleted_files(inner.storage.as_ref(), &paths));
        }
        Work::Job(Job::PrepareSpare) => inner.prepare_spare(),
        Work::IntervalFlush => {
            let leo = inner.state.read().log_end_offset;
            drop(inner.sync_to(leo));
        }
        Work::RetentionCheck => {
            drop(inner.enforce_retention());
            drop(inner.maybe_clean());
            inner.expire_producers();
        }
    }
}

impl LogInner {
    /// Queues a job for the scheduler without blocking. If it cannot be
    /// queued (the log's queue or the scheduler's channel is full, or the
    /// scheduler stopped), a removal runs inline and a flush or spare is
    /// skipped (the next flush, or close, covers it; the next roll creates
    /// its segment inline).
    pub(crate) fn schedule(&self, job: Job) {
        if let Err(job) = self.background.submit(job) {
            run_unqueued(self, job);
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

    /// `flush.ms`: the interval of the background flush in milliseconds,
    /// if the policy sets one (whole milliseconds, at least 1).
    pub(crate) fn flush_interval_ms(&self) -> Option<i64> {
        self.config()
            .flush()
            .interval()
            .map(|every| i64::try_from(every.as_millis()).unwrap_or(i64::MAX))
    }
}

/// What becomes of a job no scheduler thread will run (it could not be
/// queued, or the log closed before it ran): removals run here, the rest
/// is dropped.
pub(crate) fn run_unqueued(inner: &LogInner, job: Job) {
    match job {
        Job::RemoveFiles(paths) => drop(remove_deleted_files(inner.storage.as_ref(), &paths)),
        Job::Flush(_) | Job::PrepareSpare => {}
    }
}
