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
//! flight and every later call sees the partition gone. `replication` (a
//! mutex over the leader's view of its followers, the pending `acks=all`
//! acknowledgements and the ISR proposal in flight) comes after `roles`
//! and is never held while the log lock is taken (offsets are read from
//! the log first); it is held while the high watermark is written, so the
//! high watermark and the acknowledgements it completes move together.
//! `watchers` and `fetchers` come last. An ISR proposal goes to the controller
//! ([`AlterPartition`](super::AlterPartition)) with none of these held.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

use crossbeam_channel::{Sender, TrySendError};
use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::purgatory::{DelayedProduce, PendingAck};
use crate::error::{Error, Result};
use crate::log::epoch::{EpochEndOffset, UNDEFINED_EPOCH};
use crate::log::{
    AppendInfo, CleanReport, Log, LogRead, RecoveryReport, RetentionReport, TimestampOffset,
};
use crate::replica::{FetchBound, Replica};

const LIVE: u8 = 0;
const DELETED: u8 = 1;
const CLOSED: u8 = 2;
/// Its broker was stopped, crashed or lost its disk (the fault API): the
/// partition lives on at its other replicas, so callers get the retriable
/// `NotLeaderOrFollower` and follow the new leader.
const STOPPED: u8 = 3;
/// The replica left this broker (a reassignment moved it): calls answer
/// `NotLeaderOrFollower`, retriable, as the partition lives on elsewhere.
const MOVED: u8 = 4;

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
    /// The topic's `min.insync.replicas` (changed by
    /// [`PartitionState::set_config`]).
    min_insync: AtomicUsize,
    /// Whether the high watermark counts durable offsets rather than log
    /// end offsets: the topic fsyncs every append before acknowledging it
    /// (`flush.messages=1`), so no consumer may see a record a crash of
    /// any in-sync replica's machine can take back. Follows the log's
    /// configuration ([`PartitionState::set_config`]).
    durable_hw: AtomicBool,
    /// The high watermark: consumers read below it. Written under
    /// `replication`; on the leader it never moves back within a leader
    /// epoch.
    high_watermark: AtomicU64,
    /// The leader's view of its followers and the acknowledgements waiting
    /// for them.
    replication: Mutex<Replication>,
    log: RwLock<Option<Log>>,
    gone: AtomicU8,
    /// Woken by appends and by moves of the high watermark: consumers.
    watchers: Watchers,
    /// Woken by appends only: followers' fetchers, which learn a new high
    /// watermark from their next fetch, as Kafka's followers do; a move
    /// of it does not cost each of them a fetch round of its own.
    fetchers: Watchers,
    /// What recovery did when the log was opened.
    recovery: RecoveryReport,
    /// The topic's counters: the cluster's once hosted
    /// ([`PartitionState::with_stats`]).
    stats: Arc<crate::metrics::TopicStats>,
}

/// The leader-side replication state of a partition (empty on a follower).
#[derive(Debug, Default)]
struct Replication {
    /// Each follower's state, by broker (the leader itself excluded).
    followers: BTreeMap<u32, Replica>,
    /// Where the current leader epoch started in this log (Kafka's
    /// `leaderEpochStartOffsetOpt`); `Some` while this broker leads.
    leader_epoch_start_offset: Option<u64>,
    /// An ISR change proposed to the controller and not yet answered.
    proposal_in_flight: bool,
    /// The follower an expansion in flight adds to the ISR: until the
    /// controller answers, the high watermark waits for it too (Kafka's
    /// `maximalIsr`). Otherwise the high watermark could pass its log end
    /// meanwhile, and once in the ISR it could be elected leader without
    /// records acknowledged to `acks=all` producers.
    joining: Option<u32>,
    /// `acks=all` appends waiting for the high watermark.
    pending: Vec<DelayedProduce>,
}

/// An ISR change a leader proposes to the controller (through
/// [`AlterPartition`](super::AlterPartition)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IsrProposal {
    /// The leader proposing it.
    pub(crate) leader: u32,
    /// The leader epoch it was made in.
    pub(crate) leader_epoch: i32,
    /// The partition epoch of the state it changes.
    pub(crate) partition_epoch: i32,
    /// The proposed ISR.
    pub(crate) isr: Vec<u32>,
}

/// A follower's fetch, as the leader gets it (Kafka's `FetchRequest`
/// partition data from a replica).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FollowerFetchRequest {
    /// The follower's broker.
    pub(crate) follower: u32,
    /// Where to read from: the follower's log end offset.
    pub(crate) fetch_offset: u64,
    /// The epoch of the follower's last batch (KIP-320); `None` for an
    /// empty log.
    pub(crate) last_fetched_epoch: Option<i32>,
    /// The leader epoch the follower believes current.
    pub(crate) current_leader_epoch: i32,
    /// Every offset below this is on the follower's disk.
    pub(crate) durable_offset: u64,
    /// The most bytes to return (at least one batch).
    pub(crate) max_bytes: usize,
}

/// The leader's answer to a follower's fetch.
#[derive(Debug, Clone)]
pub(crate) struct FollowerFetchResponse {
    /// Whole batches from the fetch offset up to the log end; empty when
    /// diverging or when there is nothing new.
    pub(crate) records: LogRead,
    /// The leader's high watermark after the fetch.
    pub(crate) high_watermark: u64,
    /// The leader's log start offset.
    pub(crate) log_start: u64,
    /// The leader's log end offset.
    #[cfg_attr(not(test), expect(dead_code, reason = "for a simulation's checks"))]
    pub(crate) log_end: u64,
    /// KIP-320's `divergingEpoch`: the follower's last fetched epoch ends
    /// earlier on the leader than the follower's log, so the follower
    /// must truncate to (at most) this end offset of this epoch; no
    /// records come with it.
    pub(crate) diverging: Option<EpochEndOffset>,
}

/// What applying a leadership decision did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RoleChange {
    /// The broker leading the partition now, if any.
    pub(crate) leader: Option<u32>,
    /// The leader epoch now.
    pub(crate) leader_epoch: i32,
}

/// Offsets of a partition at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PartitionOffsets {
    pub(crate) log_start: u64,
    pub(crate) high_watermark: u64,
    pub(crate) log_end: u64,
    pub(crate) recovery_point: u64,
    /// The log's truncations so far when `recovery_point` was read (see
    /// `Log::recovery_point_and_truncations`).
    pub(crate) truncations: u64,
    /// The first offset not yet cleaned, for compacted logs.
    pub(crate) cleaner_checkpoint: Option<u64>,
}

impl PartitionState {
    /// The state of a partition hosted over `log`, led and replicated as
    /// `roles` says, needing `min_insync` in-sync replicas for `acks=all`.
    /// A leader's followers start unknown (as at `makeLeader`, at `now_ms`).
    pub(crate) fn new(
        topic: Arc<str>,
        partition: u32,
        broker: u32,
        roles: LeaderAndIsr,
        min_insync: usize,
        log: Log,
        now_ms: i64,
    ) -> Self {
        let recovery = log.recovery_report().clone();
        let durable_hw = log.config().flush().is_every_append();
        let mut replication = Replication::default();
        if roles.leader == Some(broker) {
            // A reopened leader's epoch started where its log says.
            let start = log
                .epoch_entries()
                .iter()
                .find(|e| e.epoch == roles.leader_epoch)
                .map_or(log.log_end_offset(), |e| e.start_offset);
            replication.reset_for_leader(broker, &roles, start, now_ms);
        }
        // Until the replica layer knows better, nothing is stable above 0.
        log.update_high_watermark(0);
        let state = PartitionState {
            topic,
            partition,
            broker,
            roles: RwLock::new(roles),
            min_insync: AtomicUsize::new(min_insync),
            durable_hw: AtomicBool::new(durable_hw),
            high_watermark: AtomicU64::new(0),
            replication: Mutex::new(replication),
            log: RwLock::new(Some(log)),
            gone: AtomicU8::new(LIVE),
            watchers: Watchers::default(),
            fetchers: Watchers::default(),
            recovery,
            stats: crate::metrics::TopicStats::detached(),
        };
        let roles = state.roles.read();
        if roles.leader == Some(broker) {
            let _ = state.maybe_increment_hw(&roles, None);
        }
        drop(roles);
        state
    }

    /// The partition, counting into `stats` (its topic's).
    pub(crate) fn with_stats(mut self, stats: Arc<crate::metrics::TopicStats>) -> Self {
        self.stats = stats;
        self
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

    /// The high watermark now.
    pub(crate) fn high_watermark(&self) -> u64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// Restores the high watermark from the broker's
    /// `replication-offset-checkpoint` (capped at the log end offset); it
    /// only moves forward.
    pub(crate) fn restore_high_watermark(&self, offset: u64) -> Result<()> {
        let log_end = self.with_log(|log| Ok(log.log_end_offset()))?;
        let _guard = self.replication.lock();
        self.high_watermark
            .fetch_max(offset.min(log_end), Ordering::AcqRel);
        drop(_guard);
        self.tell_log_hw();
        Ok(())
    }

    /// Takes the leadership the controller decided, unless it is older
    /// than the one held (a stale update, ignored: returns `None`). Waits
    /// for appends in flight. Becoming the leader (a new leader epoch)
    /// resets the followers' state and records the epoch's start in the
    /// log's leader epoch cache (Kafka's `makeLeader`); ceasing to lead
    /// fails the acknowledgements waiting for replication with
    /// [`Error::NotLeaderOrFollower`] (`makeFollower`). A leader then moves
    /// its high watermark (a smaller ISR may let it advance) and fails the
    /// waiting acknowledgements if the ISR fell below
    /// `min.insync.replicas`.
    pub(crate) fn apply_roles(&self, roles: LeaderAndIsr, now_ms: i64) -> Option<RoleChange> {
        let mut held = self.roles.write();
        if roles.is_older_than(&held) {
            return None;
        }
        let was_leader = held.leader == Some(self.broker);
        let old_epoch = held.leader_epoch;
        *held = roles;
        let is_leader = held.leader == Some(self.broker);
        let change = RoleChange {
            leader: held.leader,
            leader_epoch: held.leader_epoch,
        };
        let mut failed = Vec::new();
        if is_leader && (!was_leader || old_epoch != held.leader_epoch) {
            // No append is in flight (they hold `roles` shared): the log
            // end is where the new epoch starts.
            let start = self
                .with_log(|log| {
                    log.assign_leader_epoch(held.leader_epoch)?;
                    Ok(log.log_end_offset())
                })
                .ok();
            let mut replication = self.replication.lock();
            // Acks of an older epoch of this leader: their batches may be
            // gone from the ISR's logs.
            failed = std::mem::take(&mut replication.pending);
            if let Some(start) = start {
                replication.reset_for_leader(self.broker, &held, start, now_ms);
            }
        } else if is_leader {
            let mut replication = self.replication.lock();
            // Replicas added by a reassignment start unknown.
            for &b in &held.replicas {
                if b != self.broker {
                    replication
                        .followers
                        .entry(b)
                        .or_insert_with(|| Replica::reset(b, false, now_ms));
                }
            }
            replication
                .followers
                .retain(|b, _| held.replicas.contains(b));
        } else {
            let mut replication = self.replication.lock();
            failed = std::mem::take(&mut replication.pending);
            *replication = Replication::default();
        }
        let roles = RwLockWriteGuard::downgrade(held);
        for ack in failed {
            ack.complete(Err(self.not_leader()));
        }
        if is_leader {
            let _ = self.maybe_increment_hw(&roles, None);
        }
        Some(change)
    }

    /// The leadership, held shared, if this broker leads the partition;
    /// else [`Error::NotLeaderOrFollower`].
    /// [`PartitionState::lead`] for an append; with `acks_all`,
    /// [`Error::NotEnoughReplicas`] while the ISR is smaller than
    /// `min.insync.replicas` (nothing is appended).
    fn lead_for(&self, acks_all: bool) -> Result<RwLockReadGuard<'_, LeaderAndIsr>> {
        let roles = self.lead()?;
        let min_insync = self.min_insync();
        if acks_all && roles.isr.len() < min_insync {
            return Err(Error::NotEnoughReplicas {
                topic: self.topic.to_string(),
                partition: self.partition,
                in_sync: roles.isr.len(),
                required: min_insync,
            });
        }
        Ok(roles)
    }

    fn lead(&self) -> Result<RwLockReadGuard<'_, LeaderAndIsr>> {
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

    /// The error every call returns once the partition is gone.
    pub(crate) fn gone_error(&self) -> Error {
        match self.gone.load(Ordering::Acquire) {
            CLOSED => Error::Closed("cluster"),
            STOPPED | MOVED => self.not_leader(),
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

    /// The topic's `min.insync.replicas` as of now.
    fn min_insync(&self) -> usize {
        self.min_insync.load(Ordering::Acquire)
    }

    /// Takes the topic's new configuration (an altered topic config): the
    /// log's, and `min.insync.replicas` for the next `acks=all` append.
    /// The high watermark follows the new flush policy from its next move
    /// (it never moves back).
    ///
    /// # Errors
    /// As [`Log::set_config`]; the error of a replica that is gone.
    pub(crate) fn set_config(
        &self,
        config: &crate::config::LogConfig,
        min_insync: usize,
    ) -> Result<()> {
        self.with_log(|log| log.set_config(config.clone()))?;
        self.min_insync.store(min_insync, Ordering::Release);
        self.durable_hw
            .store(config.flush().is_every_append(), Ordering::Release);
        Ok(())
    }

    pub(crate) fn with_log<T>(&self, f: impl FnOnce(&Log) -> Result<T>) -> Result<T> {
        let guard = self.log.read();
        match guard.as_ref() {
            Some(log) => f(log),
            None => Err(self.gone_error()),
        }
    }

    /// Appends batches as the leader (offsets assigned by the log, stamped
    /// with the current leader epoch; `origin`: how much is checked, see
    /// [`super::AppendOrigin`]), moves the high watermark and
    /// wakes waiting consumers. With `acks_all`, first refuses the append
    /// with [`Error::NotEnoughReplicas`] while the ISR is below
    /// `min.insync.replicas`, and after it returns the acknowledgement
    /// still waiting for the in-sync replicas, if any (none when the high
    /// watermark already passed the batch: always with one replica).
    ///
    /// # Errors
    /// [`Error::NotLeaderOrFollower`] unless this broker leads the
    /// partition; [`Error::NotEnoughReplicas`]; those of [`Log::append`].
    pub(crate) fn append(
        &self,
        batches: &mut [u8],
        origin: super::AppendOrigin,
        acks_all: bool,
    ) -> Result<(AppendInfo, Option<PendingAck>)> {
        self.append_with(acks_all, acks_all, |log, epoch| match origin {
            super::AppendOrigin::Client => log.append(batches, epoch),
            super::AppendOrigin::Trusted => log.append_trusted(batches, epoch),
            super::AppendOrigin::TrustedKeyed => log.append_trusted_keyed(batches, epoch),
            super::AppendOrigin::Coordinator => log.append_coordinator(batches, epoch),
        })
    }

    /// The leader's append: `write` appends at the leader epoch; with
    /// `check_isr`, [`Error::NotEnoughReplicas`] first while the ISR is
    /// below `min.insync.replicas`; with `park`, the acknowledgement
    /// waiting for the high watermark to pass the batches is returned.
    fn append_with(
        &self,
        check_isr: bool,
        park: bool,
        write: impl FnOnce(&Log, i32) -> Result<AppendInfo>,
    ) -> Result<(AppendInfo, Option<PendingAck>)> {
        let start = std::time::Instant::now();
        let roles = self.lead_for(check_isr)?;
        let info = self.with_log(|log| write(log, roles.leader_epoch))?;
        if !info.is_duplicate() {
            self.stats.appended(info.bytes(), info.record_count());
        }
        let end = info.last_offset() + 1;
        // Under `park` without acks=all (a deferred fsync), followers may
        // fetch the batches at once and the high watermark waits for the
        // fsync.
        let moved = self.maybe_increment_hw(&roles, Some(end));
        let pending = if park {
            self.park_ack(&roles, end)
        } else {
            None
        };
        drop(roles);
        self.wake_after_append(moved);
        self.stats.produce.since(start);
        Ok((info, pending))
    }

    /// [`PartitionState::append`] of batches logbus's producer built, for a
    /// caller that waits for acknowledgements without blocking: where the
    /// log fsyncs every append (the high watermark counts durable offsets)
    /// and the acknowledgement can wait for the high watermark (`acks=all`,
    /// or `acks=1` while the leader is the whole ISR and
    /// `min.insync.replicas` is 1), the batches are written without the
    /// fsync, and the third value is the offset the caller must pass to
    /// [`PartitionState::sync_for_ack`] (from any thread): the returned
    /// acknowledgement completes once the high watermark, which the fsync
    /// moves, passes the batches. Otherwise this is
    /// [`PartitionState::append`] (with `acks_all`), and the third value
    /// is `None`.
    ///
    /// The batches are the concatenation of `pieces`, each holding whole
    /// batches: appended as one buffer of them would be, but written with
    /// one vectored write instead of being copied together first
    /// ([`Log::append_trusted_vectored`]).
    ///
    /// # Errors
    /// As [`PartitionState::append`].
    pub(crate) fn append_deferred(
        &self,
        pieces: &mut [&mut [u8]],
        acks_all: bool,
    ) -> Result<(AppendInfo, Option<PendingAck>, Option<u64>)> {
        let defer = {
            let roles = self.lead()?;
            self.durable_hw.load(Ordering::Acquire)
                && (acks_all || (roles.isr.as_slice() == [self.broker] && self.min_insync() <= 1))
        };
        if !defer {
            let (info, pending) = match pieces {
                [only] => self.append(only, super::AppendOrigin::Trusted, acks_all)?,
                // `PartitionState::append` with `AppendOrigin::Trusted`.
                _ => self.append_with(acks_all, acks_all, |log, epoch| {
                    log.append_trusted_vectored(pieces, epoch)
                })?,
            };
            return Ok((info, pending, None));
        }
        let (info, pending) = self.append_with(acks_all, true, |log, epoch| {
            log.append_trusted_deferred(pieces, epoch)
        })?;
        Ok((info, pending, Some(info.last_offset() + 1)))
    }

    /// Runs (or waits for) the fsync an [`PartitionState::append_deferred`]
    /// ending before `next_offset` left to its caller, then moves the high
    /// watermark, which completes the acknowledgements it passes (also
    /// when the fsync fails: offsets another fsync made durable count). If
    /// the fsync fails (the log is fenced then), every acknowledgement
    /// waiting for an offset that is not durable fails with its error.
    ///
    /// # Errors
    /// Those of [`Log::sync_for_ack`]; the error of a replica that is
    /// gone.
    pub(crate) fn sync_for_ack(&self, next_offset: u64) -> Result<()> {
        let synced = self.with_log(|log| log.sync_for_ack(next_offset));
        // Failed or not, the high watermark first: another fsync (a
        // roll's, the flush scheduler's) may have made offsets durable
        // without moving it, and their acknowledgements complete now; a
        // failure fails only those still waiting for offsets not durable.
        if let Ok(roles) = self.lead() {
            let _ = self.maybe_increment_hw(&roles, None);
        }
        if let Err(e) = &synced {
            let durable = self.with_log(|log| Ok(log.recovery_point())).unwrap_or(0);
            let failed = {
                let mut replication = self.replication.lock();
                let (failed, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut replication.pending)
                    .into_iter()
                    .partition(|p| p.required_offset > durable);
                replication.pending = waiting;
                failed
            };
            for ack in failed {
                ack.complete(Err(e.duplicate()));
            }
        }
        synced
    }

    /// Appends a transaction marker as the leader (Kafka's
    /// `WriteTxnMarkers` append: `acks=all`, coordinator origin), stamped
    /// with the current leader epoch; moves the high watermark and returns
    /// the acknowledgement still waiting for the in-sync replicas, if any.
    ///
    /// # Errors
    /// [`Error::NotLeaderOrFollower`] unless this broker leads the
    /// partition; [`Error::NotEnoughReplicas`]; those of
    /// [`Log::append_marker`].
    pub(crate) fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        marker: crate::format::ControlRecordType,
        coordinator_epoch: i32,
    ) -> Result<(AppendInfo, Option<PendingAck>)> {
        let roles = self.lead_for(true)?;
        let info = self.with_log(|log| {
            log.update_high_watermark(self.high_watermark());
            log.append_marker_in_epoch(
                producer_id,
                producer_epoch,
                marker,
                coordinator_epoch,
                Some(roles.leader_epoch),
            )
        })?;
        self.stats.appended(info.bytes(), info.record_count());
        let moved = self.maybe_increment_hw(&roles, Some(info.last_offset() + 1));
        let pending = self.park_ack(&roles, info.last_offset() + 1);
        drop(roles);
        self.wake_after_append(moved);
        Ok((info, pending))
    }

    /// The last stable offset: below it, only committed or aborted
    /// transactions' records and records outside transactions (see
    /// [`Log::last_stable_offset`]; the log is told the high watermark
    /// first).
    pub(crate) fn last_stable_offset(&self) -> Result<u64> {
        let high_watermark = self.high_watermark();
        self.with_log(|log| {
            log.update_high_watermark(high_watermark);
            Ok(log.last_stable_offset())
        })
    }

    /// `required_offset`, unless it already did.
    fn park_ack(&self, _roles: &LeaderAndIsr, required_offset: u64) -> Option<PendingAck> {
        let mut replication = self.replication.lock();
        if self.high_watermark() >= required_offset {
            return None;
        }
        // Acknowledgements nobody waits for (timed out) go.
        replication.pending.retain(|p| !p.is_abandoned());
        let (delayed, pending) = DelayedProduce::new(required_offset);
        replication.pending.push(delayed);
        Some(pending)
    }

    /// Recomputes the leader's high watermark (Kafka's
    /// `maybeIncrementLeaderHW`): the minimum over the ISR (and a follower
    /// an expansion in flight adds: Kafka's `maximalIsr`) of the log end
    /// offsets (or, with `durable_hw`, of the durable offsets), the
    /// leader's own included; a follower in the ISR not heard from since
    /// this broker became the leader holds it. It never moves back.
    /// Completes the acknowledgements it passes or, while the ISR is
    /// below `min.insync.replicas`, fails every waiting one with
    /// [`Error::NotEnoughReplicasAfterAppend`] (as Kafka's
    /// `checkEnoughReplicasReachOffset`, without waiting for the high
    /// watermark, which the smaller ISR alone moves). Returns whether it moved (and then wakes the
    /// watchers). The caller holds `roles` shared, and this broker leads.
    fn maybe_increment_hw(&self, roles: &LeaderAndIsr, appended_end: Option<u64>) -> bool {
        // The leader's own offset: after an append, the end of what it
        // appended (at most the log end, so a safe candidate) without
        // reading the log again; with `durable_hw`, the recovery point.
        let durable_hw = self.durable_hw.load(Ordering::Acquire);
        let own = match appended_end {
            Some(end) if !durable_hw => Ok(end),
            _ => self.with_log(|log| {
                let log_end = log.log_end_offset();
                Ok(if durable_hw {
                    log.recovery_point().min(log_end)
                } else {
                    log_end
                })
            }),
        };
        let Ok(own) = own else {
            return false;
        };
        let mut replication = self.replication.lock();
        let mut candidate = Some(own);
        let joining = replication.joining.filter(|b| !roles.isr.contains(b));
        for b in roles
            .isr
            .iter()
            .chain(joining.as_ref())
            .filter(|&&b| b != self.broker)
        {
            let offset = replication.followers.get(b).and_then(|r| {
                if durable_hw {
                    r.durable_offset
                } else {
                    r.log_end_offset
                }
            });
            candidate = match (candidate, offset) {
                (Some(c), Some(o)) => Some(c.min(o)),
                _ => None,
            };
        }
        let old = self.high_watermark();
        let moved = candidate.is_some_and(|c| c > old);
        if moved {
            self.high_watermark
                .store(candidate.unwrap_or(old), Ordering::Release);
        }
        let mut done = Vec::new();
        let min_insync = self.min_insync();
        if !replication.pending.is_empty() {
            if roles.isr.len() < min_insync {
                // As Kafka's `checkEnoughReplicasReachOffset`, but at once:
                // a high watermark reached by fewer than min.insync.replicas
                // is no acks=all acknowledgement, and the wait would end so.
                done.extend(replication.pending.drain(..).map(|p| {
                    let e = Error::NotEnoughReplicasAfterAppend {
                        topic: self.topic.to_string(),
                        partition: self.partition,
                        in_sync: roles.isr.len(),
                        required: min_insync,
                    };
                    (p, Err(e))
                }));
            } else {
                let hw = self.high_watermark();
                let (passed, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut replication.pending)
                    .into_iter()
                    .partition(|p| p.required_offset <= hw);
                done.extend(passed.into_iter().map(|p| (p, Ok(()))));
                replication.pending = waiting;
            }
        }
        drop(replication);
        if moved {
            self.tell_log_hw();
        }
        for (ack, result) in done {
            ack.complete(result);
        }
        if moved {
            self.watchers.notify();
        }
        moved
    }

    /// Wakes after a leader's append: followers' fetchers always (they
    /// wait for appends), consumers only if the high watermark did not
    /// move (its move woke them already).
    fn wake_after_append(&self, hw_moved: bool) {
        self.fetchers.notify();
        if !hw_moved {
            self.watchers.notify();
        }
    }

    /// Wakes every waiting consumer and follower's fetcher.
    fn wake_all(&self) {
        self.watchers.notify();
        self.fetchers.notify();
    }

    /// Tells the log the high watermark (for its last stable offset; an
    /// atomic store, no log lock).
    fn tell_log_hw(&self) {
        let hw = self.high_watermark();
        let _ = self.with_log(|log| {
            log.update_high_watermark(hw);
            Ok(())
        });
    }

    /// Serves a follower's fetch as the leader (Kafka's
    /// `Partition.fetchRecords` for a replica): checks the follower's
    /// epochs, answers a diverging epoch (KIP-320) or reads up to the log
    /// end, notes the follower's progress, moves the high watermark, and
    /// returns the ISR expansion to propose, if the follower caught up
    /// while out of the ISR (the caller proposes it holding no lock).
    ///
    /// # Errors
    /// [`Error::NotLeaderOrFollower`] unless this broker leads the
    /// partition and the follower holds a replica of it (or the follower
    /// knows a newer epoch than this broker);
    /// [`Error::FencedLeaderEpoch`] for an older `current_leader_epoch`;
    /// [`Error::OffsetOutOfRange`] for a fetch offset outside the log.
    pub(crate) fn fetch_as_follower(
        &self,
        request: &FollowerFetchRequest,
        now_ms: i64,
    ) -> Result<(FollowerFetchResponse, Option<IsrProposal>)> {
        let roles = self.lead()?;
        if request.current_leader_epoch < roles.leader_epoch {
            return Err(Error::FencedLeaderEpoch {
                topic: self.topic.to_string(),
                partition: self.partition,
                epoch: request.current_leader_epoch,
                current: roles.leader_epoch,
            });
        }
        if request.current_leader_epoch > roles.leader_epoch
            || request.follower == self.broker
            || !roles.replicas.contains(&request.follower)
        {
            return Err(self.not_leader());
        }
        let (records, diverging, log_start, log_end) = self.with_log(|log| {
            let log_start = log.log_start_offset();
            if let Some(epoch) = request.last_fetched_epoch.filter(|&e| e >= 0) {
                let found = log.end_offset_for_epoch(epoch);
                let ends_early =
                    found.end_offset < 0 || (found.end_offset as u64) < request.fetch_offset;
                if found.epoch != epoch || ends_early {
                    let diverging = if found.end_offset < 0 {
                        // This log knows no epoch at or below it: the
                        // follower keeps nothing above the log start.
                        EpochEndOffset {
                            epoch: UNDEFINED_EPOCH,
                            end_offset: i64::try_from(log_start).unwrap_or(i64::MAX),
                        }
                    } else {
                        found
                    };
                    let empty = log.read_bounded(log.log_end_offset(), 0, 0)?;
                    return Ok((empty, Some(diverging), log_start, log.log_end_offset()));
                }
            }
            let read = log.read_bounded(request.fetch_offset, request.max_bytes, u64::MAX)?;
            Ok((read, None, log_start, read_end(log)))
        })?;
        // The follower's log ends at its fetch offset unless it diverged
        // (then it ends at most where it is told to truncate).
        let proposal = if diverging.is_none() {
            let mut replication = self.replication.lock();
            let leader_epoch_start = replication.leader_epoch_start_offset;
            let follower = replication
                .followers
                .entry(request.follower)
                .or_insert_with(|| Replica::reset(request.follower, false, now_ms));
            follower.update_fetch_state(
                request.fetch_offset,
                request.durable_offset,
                log_end,
                now_ms,
            );
            let hw = self.high_watermark();
            let caught_up = request.fetch_offset >= hw
                && leader_epoch_start.is_some_and(|s| request.fetch_offset >= s);
            if caught_up
                && !roles.isr.contains(&request.follower)
                && !replication.proposal_in_flight
            {
                replication.proposal_in_flight = true;
                replication.joining = Some(request.follower);
                let mut isr = roles.isr.clone();
                isr.push(request.follower);
                Some(IsrProposal {
                    leader: self.broker,
                    leader_epoch: roles.leader_epoch,
                    partition_epoch: roles.partition_epoch,
                    isr,
                })
            } else {
                None
            }
        } else {
            None
        };
        self.maybe_increment_hw(&roles, None);
        Ok((
            FollowerFetchResponse {
                records,
                high_watermark: self.high_watermark(),
                log_start,
                log_end,
                diverging,
            },
            proposal,
        ))
    }

    /// The ISR shrink to propose now (Kafka's `maybeShrinkIsr`): the ISR
    /// without the followers that have not caught up within
    /// `lag_time_max_ms`, if any, while this broker leads and no other
    /// proposal is in flight.
    pub(crate) fn isr_shrink(&self, now_ms: i64, lag_time_max_ms: i64) -> Option<IsrProposal> {
        let roles = self.lead().ok()?;
        let log_end = self.with_log(|log| Ok(log.log_end_offset())).ok()?;
        let mut replication = self.replication.lock();
        if replication.proposal_in_flight {
            return None;
        }
        let isr: Vec<u32> = roles
            .isr
            .iter()
            .copied()
            .filter(|&b| {
                b == self.broker
                    || replication
                        .followers
                        .get(&b)
                        .is_some_and(|r| r.is_caught_up(log_end, now_ms, lag_time_max_ms))
            })
            .collect();
        if isr.len() == roles.isr.len() {
            return None;
        }
        replication.proposal_in_flight = true;
        Some(IsrProposal {
            leader: self.broker,
            leader_epoch: roles.leader_epoch,
            partition_epoch: roles.partition_epoch,
            isr,
        })
    }

    /// How many `acks=all` appends wait (for tests).
    #[cfg(test)]
    pub(crate) fn pending_acks(&self) -> usize {
        self.replication.lock().pending.len()
    }

    /// Notes that the proposal in flight was answered (or failed), and
    /// wakes the long-polling fetchers: a follower that caught up while
    /// the proposal was in flight got no expansion proposed, and an idle
    /// partition would not wake it again (Kafka's followers re-fetch every
    /// `replica.fetch.wait.max.ms`; here their next fetch is now). Without
    /// this, an ISR shrunk below `min.insync.replicas` could never grow
    /// back: `acks=all` appends are refused, so nothing wakes the follower.
    pub(crate) fn proposal_done(&self) {
        let mut replication = self.replication.lock();
        replication.proposal_in_flight = false;
        replication.joining = None;
        drop(replication);
        self.wake_all();
    }

    /// The followers as the leader sees them (empty on a follower).
    pub(crate) fn followers(&self) -> Vec<Replica> {
        self.replication
            .lock()
            .followers
            .values()
            .copied()
            .collect()
    }

    /// Where this follower fetches from: the leader and epoch it follows,
    /// its log end offset, the epoch of its last batch and its durable
    /// offset. `None` while it leads or no broker does.
    pub(crate) fn follower_position(&self) -> Option<FollowerPosition> {
        let roles = self.roles.read();
        let leader = roles.leader.filter(|&l| l != self.broker)?;
        let leader_epoch = roles.leader_epoch;
        drop(roles);
        self.with_log(|log| {
            Ok(FollowerPosition {
                leader,
                leader_epoch,
                fetch_offset: log.log_end_offset(),
                last_fetched_epoch: log.latest_epoch(),
                durable_offset: log.recovery_point(),
            })
        })
        .ok()
    }

    /// Appends the leader's batches as a follower (keeping their offsets
    /// and epochs), if it still follows `leader_epoch`, and sets the high
    /// watermark to `min(leader_hw, log end)`. Returns whether anything
    /// was appended (or the log cut: see below). The batches within
    /// `checked` (the leader's read said this process checked or built
    /// them) are not checked again ([`Log::append_as_follower_checked`]).
    ///
    /// Batches whose first one holds this log's end but starts below it
    /// (this log ends inside a batch of the leader's) mean the log was
    /// restarted at a leader log start inside that batch, or diverged
    /// where the leader's epoch history no longer reaches: the log is cut
    /// back to the batch's base offset (restarted there if that is at or
    /// below its log start) and the batches appended.
    ///
    /// # Errors
    /// [`Error::FencedLeaderEpoch`] if the leadership moved since the
    /// fetch; those of [`Log::append_as_follower`].
    pub(crate) fn append_as_follower(
        &self,
        batches: &[u8],
        checked: std::ops::Range<usize>,
        leader_epoch: i32,
        leader_hw: u64,
    ) -> Result<bool> {
        let roles = self.roles.read();
        self.check_follows(&roles, leader_epoch)?;
        let appended = !batches.is_empty();
        let log_end = self.with_log(|log| {
            if appended {
                match log.append_as_follower_checked(batches, checked.clone()) {
                    // The leader's first batch holds this log's end but
                    // starts below it. A follower copies whole batches, so
                    // either this log was restarted at the leader's log
                    // start, which lies inside that batch (records deleted
                    // by offset, not by batch), or it diverged from the
                    // leader where the leader's epochs no longer reach
                    // (the leader deleted the records around the
                    // divergence, so its answer did not name it).
                    Err(Error::OffsetsOutOfOrder {
                        first,
                        last,
                        log_end,
                    }) if u64::try_from(first).is_ok_and(|f| f < log_end)
                        && u64::try_from(last).is_ok_and(|l| l >= log_end) =>
                    {
                        let first = u64::try_from(first).unwrap_or(0);
                        if first <= log.log_start_offset() {
                            // Restarted (or nothing kept from `first` on):
                            // start again at the batch, as Kafka's follower
                            // does on `UnexpectedAppendOffsetException`;
                            // the log start follows the leader's again.
                            log.truncate_fully_and_start_at(first)?;
                        } else {
                            // Diverged: what it holds from the batch on is
                            // not the leader's.
                            log.truncate_to(first)?;
                        }
                        // A cut that had to go below `first` (the batch
                        // holding it started earlier) fetches again.
                        if log.log_end_offset() == first {
                            log.append_as_follower_checked(batches, checked.clone())?;
                        }
                    }
                    other => {
                        other?;
                    }
                }
            }
            Ok(log.log_end_offset())
        })?;
        let _guard = self.replication.lock();
        self.high_watermark
            .store(leader_hw.min(log_end), Ordering::Release);
        drop(_guard);
        self.tell_log_hw();
        drop(roles);
        if appended {
            self.wake_all();
        }
        Ok(appended)
    }

    /// Follows the leader's log start offset (moved by retention or
    /// `delete_records` there), as far as this follower's high watermark
    /// (Kafka's follower `maybeIncrementLogStartOffset`).
    ///
    /// # Errors
    /// Those of [`Log::delete_records`].
    pub(crate) fn follow_log_start(&self, leader_log_start: u64) -> Result<()> {
        let high_watermark = self.high_watermark();
        self.with_log(|log| {
            let target = leader_log_start
                .min(high_watermark)
                .min(log.log_end_offset());
            if target > log.log_start_offset() {
                log.delete_records(target)?;
            }
            Ok(())
        })
    }

    /// Truncates this follower's log as the leader's diverging epoch says
    /// (KIP-101/KIP-279, as Kafka's `getOffsetTruncationState`): to the
    /// leader's end offset of the epoch when this log has that epoch too,
    /// else to where this log's own entries for it end (the next fetch
    /// then asks about an older epoch), never below what the leader's
    /// answer implies and never to a local high watermark. Returns the new
    /// log end offset.
    ///
    /// # Errors
    /// As [`PartitionState::append_as_follower`], and those of
    /// [`Log::truncate_to`].
    pub(crate) fn truncate_diverging(
        &self,
        diverging: EpochEndOffset,
        leader_epoch: i32,
    ) -> Result<u64> {
        let roles = self.roles.read();
        self.check_follows(&roles, leader_epoch)?;
        let log_end = self.with_log(|log| {
            let log_end = log.log_end_offset();
            let leader_end = u64::try_from(diverging.end_offset.max(0)).unwrap_or(0);
            let target = if diverging.epoch < 0 {
                leader_end.min(log_end)
            } else {
                let own = log.end_offset_for_epoch(diverging.epoch);
                if own.end_offset < 0 {
                    leader_end.min(log_end)
                } else if own.epoch == diverging.epoch {
                    leader_end.min(own.end_offset as u64)
                } else {
                    (own.end_offset as u64).min(log_end)
                }
            };
            log.truncate_to(target)?;
            Ok(log.log_end_offset())
        })?;
        let _guard = self.replication.lock();
        if self.high_watermark() > log_end {
            self.high_watermark.store(log_end, Ordering::Release);
        }
        drop(_guard);
        self.tell_log_hw();
        Ok(log_end)
    }

    /// Empties this follower's log and starts it again at the leader's
    /// log start offset `leader_log_start`, because the leader deleted
    /// (retention, `delete_records`) records this follower never fetched
    /// (Kafka's `truncateFullyAndStartAt` on an `OFFSET_OUT_OF_RANGE`
    /// below the leader's log start). The high watermark becomes the new
    /// log end. Returns the new log end offset.
    ///
    /// # Errors
    /// As [`PartitionState::append_as_follower`], and those of
    /// [`Log::truncate_fully_and_start_at`].
    pub(crate) fn restart_at_leader_start(
        &self,
        leader_log_start: u64,
        leader_epoch: i32,
    ) -> Result<u64> {
        let roles = self.roles.read();
        self.check_follows(&roles, leader_epoch)?;
        let log_end = self.with_log(|log| {
            log.truncate_fully_and_start_at(leader_log_start)?;
            Ok(log.log_end_offset())
        })?;
        let _guard = self.replication.lock();
        self.high_watermark.store(log_end, Ordering::Release);
        drop(_guard);
        self.tell_log_hw();
        Ok(log_end)
    }

    fn check_follows(&self, roles: &LeaderAndIsr, leader_epoch: i32) -> Result<()> {
        if roles.leader == Some(self.broker) || roles.leader_epoch != leader_epoch {
            return Err(Error::FencedLeaderEpoch {
                topic: self.topic.to_string(),
                partition: self.partition,
                epoch: leader_epoch,
                current: roles.leader_epoch,
            });
        }
        Ok(())
    }

    /// Reads whole batches from `offset`, below `bound`, and returns them
    /// with the high watermark at the time of the read.
    pub(crate) fn read(
        &self,
        offset: u64,
        max_bytes: usize,
        bound: FetchBound,
    ) -> Result<(LogRead, u64)> {
        let start = std::time::Instant::now();
        let high_watermark = self.high_watermark();
        let (read, high_watermark) = self.with_log(|log| {
            let read = match bound {
                FetchBound::LogEnd => log.read_bounded(offset, max_bytes, u64::MAX)?,
                FetchBound::HighWatermark => log.read_bounded(offset, max_bytes, high_watermark)?,
                FetchBound::TxnCommitted => {
                    log.update_high_watermark(high_watermark);
                    log.read_committed(offset, max_bytes, high_watermark)?
                }
            };
            Ok((read, high_watermark))
        })?;
        // A consumer's fetch: followers read through `fetch_as_follower`,
        // which Kafka's BytesOutPerSec leaves out too.
        self.stats.served(read.records().len() as u64);
        self.stats.fetch.since(start);
        Ok((read, high_watermark))
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
        let high_watermark = self.high_watermark();
        self.with_log(|log| Ok(self.offsets_of(log, high_watermark)))
    }

    fn offsets_of(&self, log: &Log, high_watermark: u64) -> PartitionOffsets {
        let log_end = log.log_end_offset();
        let (recovery_point, truncations) = log.recovery_point_and_truncations();
        PartitionOffsets {
            log_start: log.log_start_offset(),
            high_watermark: high_watermark.min(log_end),
            log_end,
            recovery_point,
            truncations,
            cleaner_checkpoint: log.config().compact().then(|| log.cleaner_checkpoint()),
        }
    }

    pub(crate) fn size_bytes(&self) -> Result<u64> {
        self.with_log(|log| Ok(log.size_bytes()))
    }

    /// Registers `waker` to receive a message after every append, every
    /// move of the high watermark (and when the partition goes away). The
    /// channel should be bounded: a full one already holds a wake-up.
    pub(crate) fn watch(&self, waker: &Sender<()>) {
        self.watchers.add(waker);
    }

    /// Registers a follower's fetcher: `waker` receives a message after
    /// every append (and when the partition goes away or an ISR proposal
    /// is answered), not when only the high watermark moves.
    pub(crate) fn watch_as_follower(&self, waker: &Sender<()>) {
        self.fetchers.add(waker);
    }

    /// Stops waking `waker` (as a consumer's or as a fetcher's).
    pub(crate) fn unwatch(&self, waker: &Sender<()>) {
        self.watchers.remove(waker);
        self.fetchers.remove(waker);
    }

    /// Closes the log for good: `deleted` for a deleted topic, else for a
    /// closing cluster. Waits for appends in flight, fails the
    /// acknowledgements still waiting, wakes every watcher, and returns
    /// the final offsets (after the closing flush).
    pub(crate) fn shut(&self, deleted: bool) -> Result<Option<PartitionOffsets>> {
        if deleted {
            self.shut_as(DELETED, LogEnding::Drop)
        } else {
            self.shut_as(CLOSED, LogEnding::Close)
        }
    }

    /// Shuts the replica because it left this broker (its files are
    /// deleted next): as `shut(true)`, but the acknowledgements still
    /// waiting, and every later call, answer `NotLeaderOrFollower`
    /// (retriable: the partition lives on at its other replicas).
    pub(crate) fn shut_moved(&self) {
        // Nothing is flushed, so nothing can fail.
        let _ = self.shut_as(MOVED, LogEnding::Drop);
    }

    /// Marks the partition `gone`, takes its log (waiting for appends in
    /// flight), fails the pending acknowledgements with the matching
    /// error, wakes every watcher and ends the log as `ending` says;
    /// returns the final offsets of a closed log.
    fn shut_as(&self, gone: u8, ending: LogEnding) -> Result<Option<PartitionOffsets>> {
        let mut guard = self.log.write();
        self.gone.store(gone, Ordering::Release);
        let Some(log) = guard.take() else {
            return Ok(None);
        };
        drop(guard);
        let pending = std::mem::take(&mut self.replication.lock().pending);
        for ack in pending {
            ack.complete(Err(self.gone_error()));
        }
        self.wake_all();
        match ending {
            LogEnding::Drop => {
                // The files are about to be removed; a flush would be wasted.
                drop(log);
                Ok(None)
            }
            LogEnding::Abandon => {
                log.abandon();
                Ok(None)
            }
            LogEnding::Close => {
                log.flush()?;
                let offsets = self.offsets_of(&log, self.high_watermark());
                log.close()?;
                Ok(Some(offsets))
            }
        }
    }

    /// Closes the log because its broker stops (`flush`: cleanly, the log
    /// flushed and closed as at a cluster's close) or crashes (`!flush`:
    /// the log is fenced and dropped, nothing flushed, so with
    /// fault-injecting storage its unsynced pages can be lost). Pending
    /// acknowledgements and later calls fail with the retriable
    /// [`Error::NotLeaderOrFollower`]. Returns the final offsets of a clean
    /// stop.
    pub(crate) fn shut_broker(&self, flush: bool) -> Result<Option<PartitionOffsets>> {
        let ending = if flush {
            LogEnding::Close
        } else {
            LogEnding::Abandon
        };
        self.shut_as(STOPPED, ending)
    }
}

/// How a shut partition's log ends.
#[derive(Debug, Clone, Copy)]
enum LogEnding {
    /// Flushed and closed.
    Close,
    /// Dropped unflushed: its files are about to be removed.
    Drop,
    /// Fenced and dropped unflushed, as a crash leaves it.
    Abandon,
}

/// The log end offset after a read (for the follower's caught-up check,
/// the leader's log end when it served the read).
fn read_end(log: &Log) -> u64 {
    log.log_end_offset()
}

/// Where a follower fetches from (see [`PartitionState::follower_position`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FollowerPosition {
    /// The broker it follows.
    pub(crate) leader: u32,
    /// The leader epoch it follows.
    pub(crate) leader_epoch: i32,
    /// Its log end offset.
    pub(crate) fetch_offset: u64,
    /// The epoch of its last batch.
    pub(crate) last_fetched_epoch: Option<i32>,
    /// Every offset below this is on its disk.
    pub(crate) durable_offset: u64,
}

impl Replication {
    /// The state of a broker that just became the leader in `roles`'s
    /// epoch, which starts at `start`: every follower unknown, those in
    /// the ISR caught up now.
    fn reset_for_leader(&mut self, broker: u32, roles: &LeaderAndIsr, start: u64, now_ms: i64) {
        self.followers = roles
            .replicas
            .iter()
            .filter(|&&b| b != broker)
            .map(|&b| (b, Replica::reset(b, roles.isr.contains(&b), now_ms)))
            .collect();
        self.leader_epoch_start_offset = Some(start);
        self.proposal_in_flight = false;
        self.joining = None;
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
