//! One partition's local state over its log: Kafka's `Partition` (the
//! broker-side object), named `PartitionState` here because
//! [`Partition`](crate::Partition) is the public handle.
//!
//! A hosted partition is either its leader's (the broker named by its
//! [`LeaderAndIsr`]) or a follower's; the controller moves it between the
//! two with [`PartitionState::apply_roles`]. Every caller goes through the
//! [`ReplicaManager`](super::ReplicaManager).
//!
//! ## Locks
//! `roles` (the leadership as the controller last decided it) comes first:
//! an append holds it shared through the log's append, so a leadership
//! change waits for appends in flight and no batch is stamped with an epoch
//! that is no longer current. `log` (a read-write lock over the open log)
//! comes next, after the manager's table of hosted partitions and before
//! the log's own locks. Appends and reads take it shared; only closing or
//! deleting the partition takes it exclusively, so it waits for appends in
//! flight and every later call sees the partition gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crossbeam_channel::{Sender, TrySendError};
use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::log::{
    AppendInfo, CleanReport, Log, LogRead, RecoveryReport, RetentionReport, TimestampOffset,
};
use crate::replica::FetchBound;

const LIVE: u8 = 0;
const DELETED: u8 = 1;
const CLOSED: u8 = 2;

/// A partition's replicas, leader, leader epoch and in-sync replicas, as
/// the controller decided them: Kafka's `LeaderAndIsr` (with the replica
/// list, as KRaft's `PartitionRecord` carries it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaderAndIsr {
    /// The brokers holding a replica, the preferred leader first.
    pub(crate) replicas: Vec<u32>,
    /// The broker leading it; `None` while no replica can lead (every
    /// in-sync replica's broker is down and unclean election is not
    /// allowed): Kafka's leader `-1`.
    pub(crate) leader: Option<u32>,
    /// The leader epoch: bumped with every change of leader.
    pub(crate) leader_epoch: i32,
    /// KRaft's partition epoch: bumped with every change of this state
    /// (leader, ISR or replicas), so that a proposal made against an older
    /// state is refused.
    pub(crate) partition_epoch: i32,
    /// The in-sync replicas.
    pub(crate) isr: Vec<u32>,
}

impl LeaderAndIsr {
    /// A new partition's: the first replica leads, in epoch 0, and every
    /// replica is in sync.
    pub(crate) fn new(replicas: Vec<u32>) -> Self {
        LeaderAndIsr {
            leader: replicas.first().copied(),
            leader_epoch: 0,
            partition_epoch: 0,
            isr: replicas.clone(),
            replicas,
        }
    }

    /// Whether `self` is older than `other`: an earlier leader epoch, or
    /// the same leader epoch and an earlier partition epoch.
    pub(crate) fn is_older_than(&self, other: &LeaderAndIsr) -> bool {
        (self.leader_epoch, self.partition_epoch) < (other.leader_epoch, other.partition_epoch)
    }
}

/// One hosted partition: its log, leadership, high watermark and the
/// consumers waiting for data.
#[derive(Debug)]
pub(crate) struct PartitionState {
    topic: Arc<str>,
    partition: u32,
    /// The broker hosting this replica.
    broker: u32,
    /// The leadership, as the controller last decided it.
    roles: RwLock<LeaderAndIsr>,
    /// The topic's `min.insync.replicas`.
    min_insync: usize,
    log: RwLock<Option<Log>>,
    gone: AtomicU8,
    watchers: Watchers,
    /// What recovery did when the log was opened.
    recovery: RecoveryReport,
}

/// Offsets of a partition at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PartitionOffsets {
    pub(crate) log_start: u64,
    pub(crate) high_watermark: u64,
    pub(crate) log_end: u64,
    pub(crate) recovery_point: u64,
    /// The first offset not yet cleaned, for compacted logs.
    pub(crate) cleaner_checkpoint: Option<u64>,
}

impl PartitionState {
    /// The state of a partition hosted over `log`, led and replicated as
    /// `roles` says, needing `min_insync` in-sync replicas for `acks=all`.
    pub(crate) fn new(
        topic: Arc<str>,
        partition: u32,
        broker: u32,
        roles: LeaderAndIsr,
        min_insync: usize,
        log: Log,
    ) -> Self {
        let recovery = log.recovery_report().clone();
        PartitionState {
            topic,
            partition,
            broker,
            roles: RwLock::new(roles),
            min_insync,
            log: RwLock::new(Some(log)),
            gone: AtomicU8::new(LIVE),
            watchers: Watchers::default(),
            recovery,
        }
    }

    /// What recovery did when the partition's log was opened.
    pub(crate) fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    pub(crate) fn partition(&self) -> u32 {
        self.partition
    }

    /// The broker leading the partition, if any.
    pub(crate) fn leader(&self) -> Option<u32> {
        self.roles.read().leader
    }

    /// The leadership now: replicas, leader, epochs and ISR.
    pub(crate) fn roles(&self) -> LeaderAndIsr {
        self.roles.read().clone()
    }

    /// Takes the leadership the controller decided, unless it is older
    /// than the one held (a stale update, ignored: returns `false`). Waits
    /// for appends in flight.
    pub(crate) fn apply_roles(&self, roles: LeaderAndIsr) -> bool {
        let mut held = self.roles.write();
        if roles.is_older_than(&held) {
            return false;
        }
        *held = roles;
        true
    }

    /// The leadership, held shared, if this broker leads the partition;
    /// else [`Error::NotLeaderOrFollower`].
    fn lead(&self) -> Result<parking_lot::RwLockReadGuard<'_, LeaderAndIsr>> {
        let roles = self.roles.read();
        if roles.leader != Some(self.broker) {
            return Err(self.not_leader());
        }
        Ok(roles)
    }

    /// [`Error::NotLeaderOrFollower`] for this partition on this broker.
    pub(crate) fn not_leader(&self) -> Error {
        Error::NotLeaderOrFollower {
            topic: self.topic.to_string(),
            partition: self.partition,
            broker: self.broker,
        }
    }

    /// The in-sync replicas an `acks=all` append needs.
    pub(crate) fn min_insync(&self) -> usize {
        self.min_insync
    }

    /// The error every call returns once the partition is gone.
    pub(crate) fn gone_error(&self) -> Error {
        match self.gone.load(Ordering::Acquire) {
            CLOSED => Error::Closed("cluster"),
            _ => Error::UnknownTopicOrPartition {
                topic: self.topic.to_string(),
                partition: Some(self.partition),
            },
        }
    }

    /// Whether the partition was deleted or closed.
    pub(crate) fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire) != LIVE
    }

    pub(crate) fn with_log<T>(&self, f: impl FnOnce(&Log) -> Result<T>) -> Result<T> {
        let guard = self.log.read();
        match guard.as_ref() {
            Some(log) => f(log),
            None => Err(self.gone_error()),
        }
    }

    /// Appends batches as the leader (offsets assigned by the log, stamped
    /// with the current leader epoch) and wakes waiting consumers.
    ///
    /// # Errors
    /// [`Error::NotLeaderOrFollower`] unless this broker leads the
    /// partition; those of [`Log::append`].
    pub(crate) fn append(&self, batches: &mut [u8]) -> Result<AppendInfo> {
        let roles = self.lead()?;
        let info = self.with_log(|log| log.append(batches, roles.leader_epoch))?;
        drop(roles);
        self.watchers.notify();
        Ok(info)
    }

    /// [`PartitionState::append`] for batches the in-process producer built
    /// (see `Log::append_trusted`): the CRC and records are not re-checked.
    pub(crate) fn append_trusted(&self, batches: &mut [u8]) -> Result<AppendInfo> {
        let roles = self.lead()?;
        let info = self.with_log(|log| log.append_trusted(batches, roles.leader_epoch))?;
        drop(roles);
        self.watchers.notify();
        Ok(info)
    }

    /// Reads whole batches from `offset`, below `bound`, and returns them
    /// with the high watermark at the time of the read.
    pub(crate) fn read(
        &self,
        offset: u64,
        max_bytes: usize,
        bound: FetchBound,
    ) -> Result<(LogRead, u64)> {
        self.with_log(|log| {
            // One broker: the high watermark is the log end offset.
            let high_watermark = log.log_end_offset();
            let max_offset = match bound {
                FetchBound::LogEnd => u64::MAX,
                FetchBound::HighWatermark => high_watermark,
            };
            Ok((
                log.read_bounded(offset, max_bytes, max_offset)?,
                high_watermark,
            ))
        })
    }

    pub(crate) fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<TimestampOffset>> {
        self.with_log(|log| log.offset_for_timestamp(timestamp))
    }

    /// Advances the log start offset to `offset`; returns the new one.
    pub(crate) fn delete_records(&self, offset: u64) -> Result<u64> {
        self.with_log(|log| log.delete_records(offset))
    }

    /// Runs retention now (see [`Log::enforce_retention`]).
    pub(crate) fn enforce_retention(&self) -> Result<RetentionReport> {
        self.with_log(Log::enforce_retention)
    }

    /// Runs a cleaning pass now (see [`Log::clean`]).
    pub(crate) fn clean(&self) -> Result<CleanReport> {
        self.with_log(Log::clean)
    }

    pub(crate) fn offsets(&self) -> Result<PartitionOffsets> {
        self.with_log(|log| {
            let log_end = log.log_end_offset();
            Ok(PartitionOffsets {
                log_start: log.log_start_offset(),
                high_watermark: log_end,
                log_end,
                recovery_point: log.recovery_point(),
                cleaner_checkpoint: log.config().compact().then(|| log.cleaner_checkpoint()),
            })
        })
    }

    pub(crate) fn size_bytes(&self) -> Result<u64> {
        self.with_log(|log| Ok(log.size_bytes()))
    }

    /// Registers `waker` to receive a message after every append (and when
    /// the partition goes away). The channel should be bounded: a full one
    /// already holds a wake-up.
    pub(crate) fn watch(&self, waker: &Sender<()>) {
        self.watchers.add(waker);
    }

    /// Stops waking `waker`.
    pub(crate) fn unwatch(&self, waker: &Sender<()>) {
        self.watchers.remove(waker);
    }

    /// Closes the log for good: `deleted` for a deleted topic, else for a
    /// closing cluster. Waits for appends in flight, wakes every watcher,
    /// and returns the final offsets (after the closing flush).
    pub(crate) fn shut(&self, deleted: bool) -> Result<Option<PartitionOffsets>> {
        let mut guard = self.log.write();
        self.gone
            .store(if deleted { DELETED } else { CLOSED }, Ordering::Release);
        let Some(log) = guard.take() else {
            return Ok(None);
        };
        drop(guard);
        self.watchers.notify();
        if deleted {
            // The files are about to be removed; a flush would be wasted.
            drop(log);
            return Ok(None);
        }
        log.flush()?;
        let log_end = log.log_end_offset();
        let offsets = PartitionOffsets {
            log_start: log.log_start_offset(),
            high_watermark: log_end,
            log_end,
            recovery_point: log.recovery_point(),
            cleaner_checkpoint: log.config().compact().then(|| log.cleaner_checkpoint()),
        };
        log.close()?;
        Ok(Some(offsets))
    }
}

/// Consumers waiting for appends: each registers the sending side of a
/// bounded channel; an append sends on every one that is not already full.
#[derive(Debug, Default)]
struct Watchers {
    list: Mutex<Vec<Sender<()>>>,
    count: AtomicUsize,
}

impl Watchers {
    fn add(&self, waker: &Sender<()>) {
        let mut list = self.list.lock();
        if !list.iter().any(|w| w.same_channel(waker)) {
            list.push(waker.clone());
            self.count.store(list.len(), Ordering::Release);
        }
    }

    fn remove(&self, waker: &Sender<()>) {
        let mut list = self.list.lock();
        list.retain(|w| !w.same_channel(waker));
        self.count.store(list.len(), Ordering::Release);
    }

    fn notify(&self) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut list = self.list.lock();
        list.retain(|w| !matches!(w.try_send(()), Err(TrySendError::Disconnected(()))));
        self.count.store(list.len(), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchers_are_woken_once_per_burst_and_pruned_when_dropped() {
        let watchers = Watchers::default();
        let (tx, rx) = crossbeam_channel::bounded(1);
        watchers.add(&tx);
        watchers.add(&tx);
        watchers.notify();
        watchers.notify();
        assert_eq!(rx.try_iter().count(), 1);
        watchers.remove(&tx);
        watchers.notify();
        assert!(rx.try_recv().is_err());
        let (tx2, rx2) = crossbeam_channel::bounded(1);
        watchers.add(&tx2);
        drop((tx2, rx2));
        watchers.notify();
        assert_eq!(watchers.count.load(Ordering::Acquire), 0);
    }
}
