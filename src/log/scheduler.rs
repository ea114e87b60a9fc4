//! The log scheduler: a fixed pool of threads (`logbus-log-N`) that runs the
//! background work of many logs (Kafka's broker scheduler, sized by
//! `background.threads`).
//!
//! Each registered log has a [`Slot`]: a bounded mailbox of its jobs, flags
//! for its due timers, and whether a pool thread is running its work. The
//! threads share one bounded channel of slots that have work; a slot is in
//! the channel (or being run) at most once, so one log's work runs on one
//! thread at a time, in the order it was scheduled, and a busy log cannot
//! fill the channel. After each work item a thread puts the slot back at the
//! end of the channel if it has more, so logs take turns.
//!
//! Timers (the interval flush and the retention/cleaning check) are kept
//! here, in one ordered set of deadlines read from the scheduler's clock.
//! Waiting threads wake on the channel, on the clock's jumps
//! ([`Clock::subscribe`]) or when the earliest deadline may have passed
//! ([`Clock::wait_hint`]); whichever thread wakes first marks the due slots
//! and queues them. Nothing sleeps.
//!
//! Closing a log ([`Registration::close`]) removes its timers, takes its
//! queued jobs and waits until no thread runs its work; from then on no
//! thread touches the log (threads hold only a `Weak` reference, upgraded
//! under the slot's lock while the slot is open). A panic in one log's work
//! fences that log and stops its timers; the thread goes on with other logs.
//!
//! A long cleaning pass occupies one thread; other logs' work waits for the
//! remaining threads, so with one thread (a standalone log's private
//! scheduler, or `background.threads=1`) it waits for the pass to end.
//!
//! ## Locks
//! `Shared::timers` is taken alone. A slot's `state` is taken after the
//! log's `state` lock (appends schedule under it) and alone otherwise; it is
//! never held while work runs.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, select};
use parking_lot::{Condvar, Mutex};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::log::LogInner;
use crate::log::worker::{self, Job, Work};

/// How many jobs one log may have waiting before `schedule` stops queueing
/// them (a removal then runs inline, a flush is skipped).
pub(crate) const QUEUE_CAPACITY: usize = 1024;

/// Capacity of the channel of slots with work. A slot is in it at most
/// once, so it only fills when this many logs wait at the same time.
const READY_CAPACITY: usize = 1024;

/// The threads of a scheduler, stopped and joined by [`LogScheduler::stop`]
/// or on drop. Logs register through a [`SchedulerHandle`].
#[derive(Debug)]
pub(crate) struct LogScheduler {
    shared: Arc<Shared>,
    /// Dropped to stop the threads (every thread sees the disconnect).
    stop: Mutex<Option<Sender<()>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// A cheap handle that logs register with.
#[derive(Debug, Clone)]
pub(crate) struct SchedulerHandle {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    clock: Arc<dyn Clock>,
    /// Slots with work.
    ready: Sender<Arc<Slot>>,
    /// One bounded(1) channel per thread, signalled when a deadline earlier
    /// than every other is added, so each idle thread waits for it.
    wakers: Vec<Sender<()>>,
    timers: Mutex<Timers>,
    /// Set by `stop`: later work is not queued.
    stopped: AtomicBool,
    next_id: AtomicU64,
}

/// Which periodic work a timer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum TimerKind {
    /// `flush.ms` ([`FlushPolicy::interval`](crate::FlushPolicy::interval)).
    Flush,
    /// `log.retention.check.interval.ms`: retention, then cleaning.
    Retention,
}

#[derive(Debug, Default)]
struct Timers {
    /// (deadline, slot id, kind), earliest first.
    due: BTreeSet<(i64, u64, TimerKind)>,
    /// Registered slots and their current deadlines.
    slots: HashMap<u64, TimerSlot>,
}

#[derive(Debug)]
struct TimerSlot {
    slot: Arc<Slot>,
    /// (kind, interval, current deadline).
    timers: Vec<(TimerKind, i64, i64)>,
}

/// One registered log.
#[derive(Debug)]
struct Slot {
    id: u64,
    log: Weak<LogInner>,
    state: Mutex<SlotState>,
    /// Notified whenever a work item ends (and when the slot goes idle).
    idle: Condvar,
}

#[derive(Debug, Default)]
struct SlotState {
    jobs: VecDeque<Job>,
    flush_due: bool,
    retention_due: bool,
    /// In the ready channel or taken from it by a thread.
    queued: bool,
    /// A thread is running this log's work right now.
    running: bool,
    closed: bool,
    /// Work items finished, and retention checks among them (for tests).
    finished: u64,
    retention_checks: u64,
}

impl SlotState {
    fn has_work(&self) -> bool {
        !self.jobs.is_empty() || self.flush_due || self.retention_due
    }

    fn next_work(&mut self) -> Option<Work> {
        if let Some(job) = self.jobs.pop_front() {
            Some(Work::Job(job))
        } else if std::mem::take(&mut self.flush_due) {
            Some(Work::IntervalFlush)
        } else if std::mem::take(&mut self.retention_due) {
            Some(Work::RetentionCheck)
        } else {
            None
        }
    }
}

/// A log's membership in a scheduler, held by the log.
#[derive(Debug)]
pub(crate) struct Registration {
    shared: Arc<Shared>,
    slot: Arc<Slot>,
}

impl LogScheduler {
    /// Starts `threads` threads named `logbus-log-0`, `logbus-log-1`, …
    /// whose timers read `clock`.
    ///
    /// # Errors
    /// [`Error::Io`] if a thread cannot be spawned (those already started
    /// are stopped).
    pub(crate) fn start(threads: usize, clock: Arc<dyn Clock>) -> Result<LogScheduler> {
        let threads = threads.max(1);
        let (ready, ready_rx) = crossbeam_channel::bounded(READY_CAPACITY);
        let (stop, stop_rx) = crossbeam_channel::bounded(0);
        let (wakers, wake_rxs): (Vec<_>, Vec<_>) =
            (0..threads).map(|_| crossbeam_channel::bounded(1)).unzip();
        let shared = Arc::new(Shared {
            clock,
            ready,
            wakers,
            timers: Mutex::new(Timers::default()),
            stopped: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
        });
        let scheduler = LogScheduler {
            shared: shared.clone(),
            stop: Mutex::new(Some(stop)),
            threads: Mutex::new(Vec::with_capacity(threads)),
        };
        for (n, wake) in wake_rxs.into_iter().enumerate() {
            let (shared, ready_rx, stop_rx) = (shared.clone(), ready_rx.clone(), stop_rx.clone());
            // Subscribed here, so a jump right after `start` is not missed.
            let ticks = shared.clock.subscribe();
            let wake = Wake {
                stop: stop_rx,
                ticks,
                wake,
            };
            let handle = std::thread::Builder::new()
                .name(format!("logbus-log-{n}"))
                .spawn(move || run(&shared, &ready_rx, &wake))
                .map_err(|e| Error::io("spawn log scheduler thread", "logbus-log", e))?;
            scheduler.threads.lock().push(handle);
        }
        Ok(scheduler)
    }

    pub(crate) fn handle(&self) -> SchedulerHandle {
        SchedulerHandle {
            shared: self.shared.clone(),
        }
    }

    /// Stops and joins the threads. Work still queued is not run: close the
    /// logs first (closing a log takes its queued jobs). Stopping twice is
    /// a no-op.
    pub(crate) fn stop(&self) {
        self.shared.stopped.store(true, Ordering::Release);
        drop(self.stop.lock().take());
        let current = std::thread::current().id();
        for handle in self.threads.lock().drain(..) {
            // A thread never joins itself (it would wait forever).
            if handle.thread().id() != current {
                let _ = handle.join();
            }
        }
    }
}

impl Drop for LogScheduler {
    fn drop(&mut self) {
        self.stop();
    }
}

impl SchedulerHandle {
    /// Registers a log (not yet its timers: see [`Registration::start_timers`]).
    pub(crate) fn register(&self, log: Weak<LogInner>) -> Registration {
        Registration {
            shared: self.shared.clone(),
            slot: Arc::new(Slot {
                id: self.shared.next_id.fetch_add(1, Ordering::Relaxed),
                log,
                state: Mutex::new(SlotState::default()),
                idle: Condvar::new(),
            }),
        }
    }
}

impl Registration {
    /// Starts the log's timers: an interval flush every `flush_ms` (if
    /// any) and a retention check every `retention_ms`, the first ones
    /// counted from now.
    pub(crate) fn start_timers(&self, flush_ms: Option<i64>, retention_ms: i64) {
        let now = self.shared.clock.now_ms();
        let mut timers = Vec::with_capacity(2);
        if let Some(every) = flush_ms {
            timers.push((TimerKind::Flush, every, now.saturating_add(every)));
        }
        timers.push((
            TimerKind::Retention,
            retention_ms,
            now.saturating_add(retention_ms),
        ));
        let earliest = {
            let mut all = self.shared.timers.lock();
            let before = all.due.first().map_or(i64::MAX, |t| t.0);
            for &(kind, _, deadline) in &timers {
                all.due.insert((deadline, self.slot.id, kind));
            }
            all.slots.insert(
                self.slot.id,
                TimerSlot {
                    slot: self.slot.clone(),
                    timers,
                },
            );
            all.due.first().map_or(i64::MAX, |t| t.0) < before
        };
        if earliest {
            for waker in &self.shared.wakers {
                // Full: that thread has a wake-up pending already.
                let _ = waker.try_send(());
            }
        }
    }

    /// Replaces the log's timers (its `flush.ms` changed), the first
    /// deadlines counted from now. Nothing once the log is closed.
    pub(crate) fn restart_timers(&self, flush_ms: Option<i64>, retention_ms: i64) {
        // Under the slot's lock, so that `close` (which removes the timers
        // again after marking the slot closed) cannot miss these.
        let state = self.slot.state.lock();
        if state.closed {
            return;
        }
        self.shared.remove_timers(self.slot.id);
        self.start_timers(flush_ms, retention_ms);
        drop(state);
    }

    /// Queues a job; gives it back if it cannot be queued (the log is
    /// closed, its mailbox or the ready channel is full, or the scheduler
    /// stopped). Never blocks.
    pub(crate) fn submit(&self, job: Job) -> std::result::Result<(), Job> {
        if self.shared.stopped.load(Ordering::Acquire) {
            return Err(job);
        }
        let mut state = self.slot.state.lock();
        if state.closed || state.jobs.len() >= QUEUE_CAPACITY {
            return Err(job);
        }
        if !state.queued {
            if self.shared.ready.try_send(self.slot.clone()).is_err() {
                return Err(job);
            }
            state.queued = true;
        }
        state.jobs.push_back(job);
        Ok(())
    }

    /// Unregisters the log: removes its timers, takes its queued jobs and
    /// waits until no thread runs its work. Returns the jobs that never ran,
    /// or `None` if the log was closed already.
    pub(crate) fn close(&self) -> Option<Vec<Job>> {
        self.shared.remove_timers(self.slot.id);
        let mut state = self.slot.state.lock();
        if std::mem::replace(&mut state.closed, true) {
            return None;
        }
        // Timers a `restart_timers` racing with this close added.
        self.shared.remove_timers(self.slot.id);
        let jobs = std::mem::take(&mut state.jobs).into();
        state.flush_due = false;
        state.retention_due = false;
        while state.running {
            self.slot.idle.wait(&mut state);
        }
        Some(jobs)
    }

    /// Waits until `done` holds for (finished work items, finished retention
    /// checks), at most `timeout`; returns whether it did.
    #[cfg(test)]
    pub(crate) fn wait_for(
        &self,
        timeout: std::time::Duration,
        done: impl Fn(u64, u64) -> bool,
    ) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut state = self.slot.state.lock();
        while !done(state.finished, state.retention_checks) {
            if self.slot.idle.wait_until(&mut state, deadline).timed_out() {
                return done(state.finished, state.retention_checks);
            }
        }
        true
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // A log always closes before it drops; this only keeps a log that
        // failed half-way through its open from leaving timers behind.
        self.shared.remove_timers(self.slot.id);
    }
}

impl Shared {
    fn remove_timers(&self, id: u64) {
        let mut timers = self.timers.lock();
        if let Some(entry) = timers.slots.remove(&id) {
            for (kind, _, deadline) in entry.timers {
                timers.due.remove(&(deadline, id, kind));
            }
        }
    }

    /// Marks the slots whose timers are due, re-arms those timers (from now,
    /// as the old per-log thread did) and returns the slots to queue, with
    /// the earliest deadline left.
    fn take_due(&self, now: i64) -> (Vec<Arc<Slot>>, i64) {
        let mut fired = Vec::new();
        let mut timers = self.timers.lock();
        while let Some(&(deadline, id, kind)) = timers.due.first() {
            if deadline > now {
                break;
            }
            timers.due.pop_first();
            let Some(entry) = timers.slots.get_mut(&id) else {
                continue;
            };
            let mut next = i64::MAX;
            for timer in &mut entry.timers {
                if timer.0 == kind {
                    timer.2 = now.saturating_add(timer.1);
                    next = timer.2;
                }
            }
            let slot = entry.slot.clone();
            timers.due.insert((next, id, kind));
            fired.push((slot, kind));
        }
        let earliest = timers.due.first().map_or(i64::MAX, |t| t.0);
        drop(timers);
        let mut to_run = Vec::new();
        for (slot, kind) in fired {
            let mut state = slot.state.lock();
            if state.closed {
                continue;
            }
            match kind {
                TimerKind::Flush => state.flush_due = true,
                TimerKind::Retention => state.retention_due = true,
            }
            if !std::mem::replace(&mut state.queued, true) {
                drop(state);
                to_run.push(slot);
            }
        }
        (to_run, earliest)
    }
}

/// What a pool thread waits on besides the ready channel.
#[derive(Debug)]
struct Wake {
    /// Disconnected by [`LogScheduler::stop`].
    stop: Receiver<()>,
    /// The clock's jumps.
    ticks: Receiver<()>,
    /// An earlier deadline was added.
    wake: Receiver<()>,
}

/// A pool thread: runs slots from the channel and fires timers until the
/// stop channel disconnects.
fn run(shared: &Shared, ready: &Receiver<Arc<Slot>>, wake: &Wake) {
    loop {
        let (fired, earliest) = shared.take_due(shared.clock.now_ms());
        for slot in fired {
            // Queued behind other logs' work; if the channel is full, run
            // the slot here rather than lose the tick.
            if let Err(e) = shared.ready.try_send(slot) {
                run_slot(shared, e.into_inner());
            }
        }
        let timeout = if earliest == i64::MAX {
            None
        } else {
            shared.clock.wait_hint(earliest)
        };
        let slot = match timeout {
            Some(t) => select! {
                recv(ready) -> slot => slot,
                recv(wake.ticks) -> _ => continue,
                recv(wake.wake) -> _ => continue,
                recv(wake.stop) -> _ => return,
                default(t) => continue,
            },
            None => select! {
                recv(ready) -> slot => slot,
                recv(wake.ticks) -> _ => continue,
                recv(wake.wake) -> _ => continue,
                recv(wake.stop) -> _ => return,
            },
        };
        match slot {
            Ok(slot) => run_slot(shared, slot),
            Err(_) => return,
        }
    }
}

/// Runs one work item of `slot`, then puts it back in the channel if it has
/// more (or goes on here if the channel is full).
fn run_slot(shared: &Shared, slot: Arc<Slot>) {
    loop {
        let (work, inner) = {
            let mut state = slot.state.lock();
            let work = if state.closed {
                None
            } else {
                state.next_work()
            };
            let inner = work.as_ref().and_then(|_| slot.log.upgrade());
            let (Some(work), Some(inner)) = (work, inner) else {
                state.queued = false;
                return;
            };
            state.running = true;
            (work, inner)
        };
        let retention = matches!(work, Work::RetentionCheck);
        if catch_unwind(AssertUnwindSafe(|| worker::run(&inner, work))).is_err() {
            // The log is left as the panic found it: fence it and stop its
            // timers. Its queued jobs still run (removals are harmless).
            inner.fence();
            shared.remove_timers(slot.id);
        }
        // Dropped before the log may be told it is idle, so the closer holds
        // the last reference (and releases the directory lock itself).
        drop(inner);
        let mut state = slot.state.lock();
        state.running = false;
        state.finished += 1;
        state.retention_checks += u64::from(retention);
        slot.idle.notify_all();
        if state.closed || !state.has_work() {
            state.queued = false;
            return;
        }
        if shared.ready.try_send(slot.clone()).is_ok() {
            return;
        }
        // The channel is full: this thread goes on with the slot.
    }
}

#[cfg(test)]
mod tests;
