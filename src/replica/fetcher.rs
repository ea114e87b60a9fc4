//! Followers' fetching: Kafka's `ReplicaFetcherManager` and
//! `ReplicaFetcherThread`, and the leader's ISR expiration task.
//!
//! Every piece is a step function first, so that a deterministic
//! simulation can drive replication itself: [`fetch_once`] runs one fetch
//! round of one follower broker from one leader broker, and
//! [`ReplicaManager::maybe_shrink_isr`] one pass of ISR expiration. The
//! threads only call them:
//!
//! - one `logbus-fetcher-F-L` thread per (follower broker F, leader
//!   broker L) pair, started when F first follows a partition led by L.
//!   After a round that moved nothing it long-polls: it waits on a
//!   wake-up channel registered with each partition it fetches at the
//!   leader (signalled by appends and by moves of the high watermark), on
//!   its control channel (new partitions, pause, shutdown), on the clock's
//!   wake-ups and at most `replica.fetch.wait.max.ms` on the clock, then
//!   fetches again. It never sleep-polls.
//! - one `logbus-isr-F` thread per broker, running ISR expiration every
//!   half `replica.lag.time.max.ms` on the clock, as Kafka schedules it.
//!
//! A fetcher reaches leaders through a [`ReplicaRegistry`] of every
//! broker's [`ReplicaManager`] (held weakly: a stopped broker's manager is
//! simply gone).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Mutex, RwLock};

use super::partition::{FollowerFetchRequest, FollowerPosition, PartitionState};
use super::{ReplicaManager, TopicIdPartition};
use crate::error::{Error, Result};
use crate::log::epoch::{EpochEndOffset, UNDEFINED_EPOCH};

/// Every broker's replica manager, by broker id: how a follower's fetcher
/// reaches its leader (in Kafka, the network).
#[derive(Debug, Default)]
pub(crate) struct ReplicaRegistry {
    managers: RwLock<BTreeMap<u32, Weak<ReplicaManager>>>,
}

impl ReplicaRegistry {
    /// Registers (or replaces) `manager` under its broker id.
    pub(crate) fn register(&self, manager: &Arc<ReplicaManager>) {
        self.managers
            .write()
            .insert(manager.broker(), Arc::downgrade(manager));
    }

    /// Forgets broker `broker` (stopped or crashed).
    pub(crate) fn remove(&self, broker: u32) {
        self.managers.write().remove(&broker);
    }

    /// Broker `broker`'s manager, if it runs.
    pub(crate) fn get(&self, broker: u32) -> Option<Arc<ReplicaManager>> {
        self.managers.read().get(&broker).and_then(Weak::upgrade)
    }
}

/// What one fetch round did.
#[derive(Debug, Default)]
pub(crate) struct FetchRound {
    /// Partitions fetched.
    pub(crate) partitions: usize,
    /// Partitions that got batches.
    pub(crate) appended: usize,
    /// Partitions truncated on a diverging epoch (their log end or last
    /// epoch changed).
    pub(crate) truncated: usize,
    /// The errors met, by partition (a leadership that moved shows up
    /// here until the controller's decision arrives).
    pub(crate) errors: Vec<(TopicIdPartition, Error)>,
}

impl FetchRound {
    /// Whether a follower's log changed (so another round follows at once,
    /// reporting the new log end to the leader).
    pub(crate) fn progressed(&self) -> bool {
        self.appended > 0 || self.truncated > 0
    }
}

/// One fetch round of follower `local` from leader `leader` (Kafka's
/// `ReplicaFetcherThread.doWork`, one request): for every partition
/// `local` follows in `leader`, fetch from its log end with its last
/// epoch and durable offset, then append what came (keeping the leader's
/// offsets and epochs) and take the leader's high watermark, or truncate
/// on a diverging epoch, or, for a fetch offset below the leader's log
/// start, empty the log and start it again there. Errors are per
/// partition, in the result.
pub(crate) fn fetch_once(local: &ReplicaManager, leader: &ReplicaManager) -> FetchRound {
    let mut round = FetchRound::default();
    let max_bytes = local.config().fetch_max_bytes;
    for (key, state) in local.followed_from(leader.broker()) {
        let Some(position) = state.follower_position() else {
            continue;
        };
        if position.leader != leader.broker() {
            continue;
        }
        round.partitions += 1;
        let request = FollowerFetchRequest {
            follower: local.broker(),
            fetch_offset: position.fetch_offset,
            last_fetched_epoch: position.last_fetched_epoch,
            current_leader_epoch: position.leader_epoch,
            durable_offset: position.durable_offset,
            max_bytes,
        };
        let outcome = match leader.fetch_as_follower(&key, &request) {
            Err(Error::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            }) if offset == position.fetch_offset => {
                out_of_range(&state, &position, log_start, log_end)
                    .map(|moved| round.truncated += usize::from(moved))
            }
            other => other.and_then(|response| match response.diverging {
                Some(diverging) => {
                    state.truncate_diverging(diverging, position.leader_epoch)?;
                    // Progress only if the next fetch asks differently
                    // (a cut, or a dropped empty epoch); else the thread
                    // waits rather than spinning on the same answer.
                    let after = state.follower_position();
                    if after.is_none_or(|a| {
                        (a.fetch_offset, a.last_fetched_epoch)
                            != (position.fetch_offset, position.last_fetched_epoch)
                    }) {
                        round.truncated += 1;
                    }
                    Ok(())
                }
                None => {
                    let appended = state.append_as_follower(
                        response.records.records(),
                        position.leader_epoch,
                        response.high_watermark,
                    )?;
                    if appended {
                        round.appended += 1;
                    }
                    state.follow_log_start(response.log_start)
                }
            }),
        };
        if let Err(e) = outcome {
            round.errors.push((key, e));
        }
    }
    round
}

/// A fetch offset outside the leader's log (Kafka's
/// `ReplicaFetcherThread.handleOffsetOutOfRange`): below the leader's log
/// start (the leader deleted records this follower never fetched), the
/// follower's log is emptied and starts again at the leader's log start;
/// above the leader's log end (possible only without a last fetched epoch,
/// else the leader answers a diverging epoch), it is truncated to the
/// leader's end. Returns whether the follower's log changed.
fn out_of_range(
    state: &PartitionState,
    position: &FollowerPosition,
    leader_log_start: u64,
    leader_log_end: u64,
) -> Result<bool> {
    if position.fetch_offset < leader_log_start {
        state.restart_at_leader_start(leader_log_start, position.leader_epoch)?;
        Ok(true)
    } else if position.fetch_offset > leader_log_end {
        let leader_end = EpochEndOffset {
            epoch: UNDEFINED_EPOCH,
            end_offset: i64::try_from(leader_log_end).unwrap_or(i64::MAX),
        };
        let end = state.truncate_diverging(leader_end, position.leader_epoch)?;
        Ok(end != position.fetch_offset)
    } else {
        // Inside the log after all (it moved since): fetch again.
        Ok(false)
    }
}

/// Messages to a fetcher thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    /// Partitions were added or the pause changed: look again.
    Wake,
    /// Exit.
    Stop,
}

/// One running thread and its control channel.
#[derive(Debug)]
struct Worker {
    control: Sender<Control>,
    handle: Option<JoinHandle<()>>,
}

/// A broker's fetchers: one thread per leader broker it follows
/// partitions of (Kafka's `ReplicaFetcherManager`), plus its ISR
/// expiration thread. Without threads ([`ReplicaFetcherManager::manual`])
/// it only records the pause, and the caller drives [`fetch_once`] and
/// [`ReplicaManager::maybe_shrink_isr`] itself.
#[derive(Debug)]
pub(crate) struct ReplicaFetcherManager {
    broker: u32,
    local: Weak<ReplicaManager>,
    registry: Arc<ReplicaRegistry>,
    threaded: bool,
    shared: Arc<Shared>,
    fetchers: Mutex<BTreeMap<u32, Worker>>,
    expiration: Mutex<Option<Worker>>,
}

/// What the threads share with their manager.
#[derive(Debug, Default)]
struct Shared {
    paused: AtomicBool,
    stopped: AtomicBool,
}

impl ReplicaFetcherManager {
    /// The fetchers of `local`'s broker, reaching leaders through
    /// `registry`, with threads: one per leader, started as `local` comes
    /// to follow partitions, and the ISR expiration thread.
    ///
    /// # Errors
    /// [`Error::Io`] if a thread cannot be spawned.
    pub(crate) fn start(
        local: &Arc<ReplicaManager>,
        registry: Arc<ReplicaRegistry>,
    ) -> Result<Arc<Self>> {
        let manager = Self::build(local, registry, true);
        local.set_fetchers(&manager);
        manager.spawn_expiration()?;
        for leader in local.followed_leaders() {
            manager.follow(leader);
        }
        Ok(manager)
    }

    /// The fetchers of `local`'s broker without threads: the caller drives
    /// [`ReplicaFetcherManager::fetch_once_from`] and ISR expiration.
    #[cfg_attr(not(test), expect(dead_code, reason = "for a simulation"))]
    pub(crate) fn manual(local: &Arc<ReplicaManager>, registry: Arc<ReplicaRegistry>) -> Arc<Self> {
        let manager = Self::build(local, registry, false);
        local.set_fetchers(&manager);
        manager
    }

    fn build(
        local: &Arc<ReplicaManager>,
        registry: Arc<ReplicaRegistry>,
        threaded: bool,
    ) -> Arc<Self> {
        Arc::new(ReplicaFetcherManager {
            broker: local.broker(),
            local: Arc::downgrade(local),
            registry,
            threaded,
            shared: Arc::new(Shared::default()),
            fetchers: Mutex::new(BTreeMap::new()),
            expiration: Mutex::new(None),
        })
    }

    /// One fetch round from `leader` now (unless paused): see
    /// [`fetch_once`]. `None` if either broker's manager is gone.
    #[cfg_attr(not(test), expect(dead_code, reason = "for a simulation"))]
    pub(crate) fn fetch_once_from(&self, leader: u32) -> Option<FetchRound> {
        if self.shared.paused.load(Ordering::Acquire) {
            return Some(FetchRound::default());
        }
        let local = self.local.upgrade()?;
        let leader = self.registry.get(leader)?;
        Some(fetch_once(&local, &leader))
    }

    /// Pauses (or resumes) all of this broker's fetching: a fault to
    /// inject (a follower that stops fetching falls out of the ISR after
    /// `replica.lag.time.max.ms`).
    pub(crate) fn set_paused(&self, paused: bool) {
        self.shared.paused.store(paused, Ordering::Release);
        for worker in self.fetchers.lock().values() {
            let _ = worker.control.try_send(Control::Wake);
        }
    }

    /// Makes sure a thread fetches from `leader`, and wakes it (the broker
    /// started following a partition there).
    pub(crate) fn follow(&self, leader: u32) {
        if !self.threaded || leader == self.broker || self.shared.stopped.load(Ordering::Acquire) {
            return;
        }
        let mut fetchers = self.fetchers.lock();
        if let Some(worker) = fetchers.get(&leader) {
            let _ = worker.control.try_send(Control::Wake);
            return;
        }
        let (control, rx) = crossbeam_channel::bounded(1);
        let local = self.local.clone();
        let registry = self.registry.clone();
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("logbus-fetcher-{}-{leader}", self.broker))
            .spawn(move || run_fetcher(&local, leader, &registry, &shared, &rx));
        // Without a thread the partition is not fed; the ISR shrinks.
        if let Ok(handle) = spawned {
            fetchers.insert(
                leader,
                Worker {
                    control,
                    handle: Some(handle),
                },
            );
        }
    }

    fn spawn_expiration(&self) -> Result<()> {
        let (control, rx) = crossbeam_channel::bounded(1);
        let local = self.local.clone();
        let handle = std::thread::Builder::new()
            .name(format!("logbus-isr-{}", self.broker))
            .spawn(move || run_expiration(&local, &rx))
            .map_err(|e| Error::io("spawn the ISR expiration thread", "", e))?;
        *self.expiration.lock() = Some(Worker {
            control,
            handle: Some(handle),
        });
        Ok(())
    }

    /// Stops and joins every thread; later calls start none.
    pub(crate) fn shutdown(&self) {
        self.shared.stopped.store(true, Ordering::Release);
        let mut workers: Vec<Worker> = std::mem::take(&mut *self.fetchers.lock())
            .into_values()
            .collect();
        workers.extend(self.expiration.lock().take());
        for worker in &workers {
            let _ = worker.control.send(Control::Stop);
        }
        for mut worker in workers {
            if let Some(handle) = worker.handle.take() {
                let _ = handle.join();
            }
        }
    }
}

impl Drop for ReplicaFetcherManager {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Drains the control channel; returns whether to stop.
fn stop_requested(control: &Receiver<Control>) -> bool {
    loop {
        match control.try_recv() {
            Ok(Control::Wake) => {}
            Ok(Control::Stop) | Err(crossbeam_channel::TryRecvError::Disconnected) => return true,
            Err(crossbeam_channel::TryRecvError::Empty) => return false,
        }
    }
}

/// A `logbus-fetcher-F-L` thread's loop.
fn run_fetcher(
    local: &Weak<ReplicaManager>,
    leader_id: u32,
    registry: &ReplicaRegistry,
    shared: &Shared,
    control: &Receiver<Control>,
) {
    let (wake_tx, wake_rx) = crossbeam_channel::bounded::<()>(1);
    let Some(clock) = local.upgrade().map(|m| m.config().clock.clone()) else {
        return;
    };
    let ticks = clock.subscribe();
    // The partitions whose watchers hold `wake_tx`, at which incarnation of
    // the leader's manager (a restarted broker has new partition states).
    let mut watched: Vec<TopicIdPartition> = Vec::new();
    let mut watched_at: Weak<ReplicaManager> = Weak::new();
    loop {
        if stop_requested(control) || shared.stopped.load(Ordering::Acquire) {
            return;
        }
        let mut wait_ms = None;
        if !shared.paused.load(Ordering::Acquire) {
            let (Some(local), leader) = (local.upgrade(), registry.get(leader_id)) else {
                return;
            };
            if let Some(leader) = leader {
                let _ = wake_rx.try_recv();
                if !std::ptr::eq(watched_at.as_ptr(), Arc::as_ptr(&leader)) {
                    watched.clear();
                    watched_at = Arc::downgrade(&leader);
                }
                for (key, _) in local.followed_from(leader_id) {
                    if !watched.contains(&key) {
                        leader.watch(&key, &wake_tx);
                        watched.push(key);
                    }
                }
                let round = fetch_once(&local, &leader);
                if round.progressed() {
                    continue;
                }
            }
            wait_ms = Some(local.config().fetch_wait_max_ms);
        }
        // Paused: only a control message (or the clock) wakes it.
        let timer = match wait_ms.and_then(|ms| clock.wait_hint(clock.now_ms().saturating_add(ms)))
        {
            Some(d) => crossbeam_channel::after(d),
            None => crossbeam_channel::never(),
        };
        let wake = if wait_ms.is_some() {
            wake_rx.clone()
        } else {
            crossbeam_channel::never()
        };
        crossbeam_channel::select! {
            recv(control) -> msg => {
                if !matches!(msg, Ok(Control::Wake)) {
                    return;
                }
            }
            recv(wake) -> _ => {}
            recv(ticks) -> _ => {}
            recv(timer) -> _ => {}
        }
    }
}

/// A `logbus-isr-F` thread's loop: ISR expiration every half
/// `replica.lag.time.max.ms` on the clock.
fn run_expiration(local: &Weak<ReplicaManager>, control: &Receiver<Control>) {
    let Some((clock, lag)) = local
        .upgrade()
        .map(|m| (m.config().clock.clone(), m.config().lag_time_max_ms))
    else {
        return;
    };
    let ticks = clock.subscribe();
    let period = (lag / 2).max(1);
    // The first pass runs at once, then one every period.
    let mut next = clock.now_ms();
    loop {
        if stop_requested(control) {
            return;
        }
        let now = clock.now_ms();
        if now >= next {
            let Some(manager) = local.upgrade() else {
                return;
            };
            manager.maybe_shrink_isr();
            // From when the pass started: a clock moved meanwhile has sent
            // a wake-up that finds the next pass due.
            next = now.saturating_add(period);
        }
        let timer = match clock.wait_hint(next) {
            Some(d) => crossbeam_channel::after(d),
            None => crossbeam_channel::never(),
        };
        crossbeam_channel::select! {
            recv(control) -> msg => {
                if !matches!(msg, Ok(Control::Wake)) {
                    return;
                }
            }
            recv(ticks) -> _ => {}
            recv(timer) -> _ => {}
        }
    }
}
