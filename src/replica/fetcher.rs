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
//!   leader (signalled by appends, not by moves of the high watermark,
//!   which it learns at its next fetch as Kafka's followers do), on
//!   its control channel (new partitions, pause, throttle, shutdown), on
//!   the clock's wake-ups and at most `replica.fetch.wait.max.ms` on the
//!   clock, then fetches again. Under a fetch throttle ([`Throttle`], a
//!   fault to inject: a slow follower) a round that used up the allowance
//!   waits on the clock, its wake-ups and its control channel only, until
//!   the throttle allows bytes again. It never sleep-polls.
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
    /// Set when the broker's fetch throttle ran out of bytes before every
    /// partition was fetched: the clock time (ms) at which it allows
    /// another fetch.
    pub(crate) throttled_until: Option<i64>,
    /// Bytes of batches fetched.
    pub(crate) bytes: u64,
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
    fetch_round(local, leader, None)
}

/// [`fetch_once`] within the broker's fetch throttle, if it has one: each
/// partition's fetch asks for at most the bytes the throttle allows now
/// (always at least one batch), the bytes fetched are charged to it, and
/// once it allows nothing the round ends early, saying until when
/// ([`FetchRound::throttled_until`]). A throttled round starts at another
/// partition each time, so that a throttle smaller than one round's data
/// starves none of them.
fn fetch_round(
    local: &ReplicaManager,
    leader: &ReplicaManager,
    throttle: Option<&Mutex<Option<Throttle>>>,
) -> FetchRound {
    let mut round = FetchRound::default();
    let fetch_max_bytes = local.config().fetch_max_bytes;
    let clock = local.config().clock.clone();
    let mut followed = local.followed_from(leader.broker());
    if let Some(throttle) = throttle
        && let Some(t) = &mut *throttle.lock()
        && !followed.is_empty()
    {
        let start = t.next_start % followed.len();
        t.next_start = t.next_start.wrapping_add(1);
        followed.rotate_left(start);
    }
    for (key, state) in followed {
        let Some(position) = state.follower_position() else {
            continue;
        };
        if position.leader != leader.broker() {
            continue;
        }
        let max_bytes =
            match throttle.and_then(|t| t.lock().as_mut().map(|t| t.allowance(clock.now_ms()))) {
                None => fetch_max_bytes,
                Some(Ok(allowed)) => {
                    fetch_max_bytes.min(usize::try_from(allowed).unwrap_or(usize::MAX))
                }
                Some(Err(until)) => {
                    round.throttled_until = Some(until);
                    break;
                }
            };
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
                    let bytes = response.records.records().len() as u64;
                    round.bytes += bytes;
                    if let Some(t) = throttle
                        && let Some(t) = &mut *t.lock()
                    {
                        t.charge(bytes);
                    }
                    let appended = state.append_as_follower(
                        response.records.records(),
                        response.records.checked(),
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

/// A limit on the bytes a broker's fetchers fetch per second, measured on
/// the cluster's clock (in the spirit of Kafka's follower replication
/// quota, `follower.replication.throttled.rate`): a token bucket holding
/// at most one second of the rate, full when the throttle is set. A fetch
/// may ask for what the bucket holds; what it got is charged afterwards
/// (a fetch returns at least one whole batch, so the bucket can go below
/// zero), and no fetch starts until the bucket holds something again.
#[derive(Debug)]
pub(crate) struct Throttle {
    bytes_per_second: u64,
    /// What the bucket holds, in thousandths of a byte (a rate in bytes
    /// per second adds exactly `bytes_per_second` of them every ms).
    milli_bytes: i128,
    /// The clock time (ms) the bucket was last filled up to.
    filled_at_ms: i64,
    /// Where the next throttled round starts (rotating).
    next_start: usize,
}

impl Throttle {
    /// A full bucket for `bytes_per_second` (at least 1) at `now_ms`.
    pub(crate) fn new(bytes_per_second: u64, now_ms: i64) -> Self {
        let bytes_per_second = bytes_per_second.max(1);
        Throttle {
            bytes_per_second,
            milli_bytes: Self::capacity(bytes_per_second),
            filled_at_ms: now_ms,
            next_start: 0,
        }
    }

    /// One second of the rate, in thousandths of a byte.
    fn capacity(bytes_per_second: u64) -> i128 {
        i128::from(bytes_per_second) * 1000
    }

    fn fill(&mut self, now_ms: i64) {
        let elapsed = now_ms.saturating_sub(self.filled_at_ms).max(0);
        self.filled_at_ms = self.filled_at_ms.max(now_ms);
        let added = i128::from(elapsed) * i128::from(self.bytes_per_second);
        self.milli_bytes = (self.milli_bytes + added).min(Self::capacity(self.bytes_per_second));
    }

    /// The bytes a fetch may ask for at `now_ms` (at least 1), or the
    /// clock time (ms) at which the bucket holds something again.
    pub(crate) fn allowance(&mut self, now_ms: i64) -> std::result::Result<u64, i64> {
        self.fill(now_ms);
        if self.milli_bytes > 0 {
            return Ok(u64::try_from(self.milli_bytes / 1000)
                .unwrap_or(u64::MAX)
                .max(1));
        }
        // The first whole ms after which it holds more than nothing.
        let missing = -self.milli_bytes;
        let wait_ms = missing / i128::from(self.bytes_per_second) + 1;
        Err(self
            .filled_at_ms
            .saturating_add(i64::try_from(wait_ms).unwrap_or(i64::MAX)))
    }

    /// Charges `bytes` fetched.
    pub(crate) fn charge(&mut self, bytes: u64) {
        self.milli_bytes -= i128::from(bytes) * 1000;
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
    /// The byte rate limit on every fetcher thread of the broker together
    /// (fault injection: a slow follower), if one is set.
    throttle: Mutex<Option<Throttle>>,
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
        Some(fetch_round(&local, &leader, Some(&self.shared.throttle)))
    }

    /// Limits this broker's fetching (all its fetcher threads together) to
    /// `bytes_per_second` on the clock, or lifts the limit (`None`): a
    /// fault to inject (a slow follower falls out of the ISR once it lags
    /// for `replica.lag.time.max.ms`). Setting a rate starts with a full
    /// second of it.
    pub(crate) fn set_throttle(&self, bytes_per_second: Option<u64>) {
        let now = self
            .local
            .upgrade()
            .map_or(0, |local| local.config().clock.now_ms());
        *self.shared.throttle.lock() = bytes_per_second.map(|rate| Throttle::new(rate, now));
        for worker in self.fetchers.lock().values() {
            let _ = worker.control.try_send(Control::Wake);
        }
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
        // Until when to wait (clock ms), and whether the leader's news
        // ends the wait (not while throttled: only time does).
        let mut deadline = None;
        let mut listen = false;
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
                        leader.watch_as_follower(&key, &wake_tx);
                        watched.push(key);
                    }
                }
                // Unthrottled, a round is the step function itself.
                let round = if shared.throttle.lock().is_some() {
                    fetch_round(&local, &leader, Some(&shared.throttle))
                } else {
                    fetch_once(&local, &leader)
                };
                if let Some(until) = round.throttled_until {
                    deadline = Some(until);
                } else if round.progressed() {
                    continue;
                } else {
                    listen = true;
                }
            } else {
                listen = true;
            }
            if listen {
                deadline = Some(
                    clock
                        .now_ms()
                        .saturating_add(local.config().fetch_wait_max_ms),
                );
            }
        }
        // Paused: only a control message (or the clock) wakes it.
        let timer = match deadline.and_then(|at| clock.wait_hint(at)) {
            Some(d) => crossbeam_channel::after(d),
            None => crossbeam_channel::never(),
        };
        let wake = if listen {
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
