//! [`ReplicaManager`]: the one seam between a broker's hosted partitions
//! and everything that reads or writes them.
//!
//! Kafka's `ReplicaManager`: the producer's sender, the consumer's fetches,
//! the public [`Partition`](crate::Partition) handles, the admin calls and
//! the group coordinator all go through it, naming a partition by its
//! [`TopicIdPartition`]. None of them holds a reference to a partition's
//! state or log, so when replication moves a partition's leadership, every
//! caller meets it here (as [`Error::NotLeaderOrFollower`] and the like)
//! instead of holding on to a stale replica.
//!
//! ## Locks
//! `hosted` (the table of hosted partitions) is taken briefly, shared, to
//! look a partition up, and exclusively only to host or remove partitions;
//! it is never held while a partition's log lock is taken. It comes after
//! the cluster's controller, topic table and the broker's checkpoint lock,
//! and before a partition's log lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use crossbeam_channel::Sender;
use parking_lot::RwLock;
use uuid::Uuid;

use super::fetcher::ReplicaFetcherManager;
use super::partition::{FollowerFetchRequest, FollowerFetchResponse, IsrProposal};
use super::purgatory::PendingAck;
use super::{
    AlterPartition, FetchBound, FetchedData, LeaderAndIsr, PartitionOffsets, PartitionState,
    Replica, ReplicaConfig, TopicIdPartition,
};
use crate::error::{Error, Result};
use crate::log::{AppendInfo, CleanReport, Log, RecoveryReport, RetentionReport, TimestampOffset};
use crate::storage::DiskSwitch;

/// When an append is acknowledged: Kafka's `requiredAcks`, as the replica
/// manager sees it. (`acks=0` is the producer's business: the append itself
/// is the same as `acks=1`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AppendAcks {
    /// After the leader's append (`acks=1`).
    Leader,
    /// After every in-sync replica has the batch, and only while at least
    /// `min.insync.replicas` are in sync (`acks=all`). With one broker the
    /// leader is the whole ISR, so this is `Leader`.
    All,
}

/// Who appends, which decides how much of the batch is checked: Kafka's
/// `AppendOrigin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AppendOrigin {
    /// Batches from outside ([`Partition::append`](crate::Partition::append)):
    /// validated fully, as Kafka's broker validates produce requests.
    Client,
    /// Batches built in this process an instant ago (the producer's sender,
    /// the group coordinator): structure and sizes checked, CRC and
    /// records not re-checked (see `Log::append_trusted`).
    Trusted,
    /// The coordinators' own records to their compacted topics
    /// (`__transaction_state`, `__consumer_offsets`), built in this
    /// process with a key on every record: checked as `Trusted`, but not
    /// record by record for a key, which they carry by construction (see
    /// `Log::append_trusted_keyed`).
    TrustedKeyed,
    /// A coordinator's own records built in this process (the group
    /// coordinator's transactional offset commits): checked as `Trusted`,
    /// but a producer's batch only for its epoch and transaction state,
    /// not its sequence (Kafka's `AppendOrigin.COORDINATOR`; see
    /// `Log::append_coordinator`).
    Coordinator,
}

/// One partition as [`ReplicaManager::describe`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionInfo {
    /// The broker leading it, if any.
    pub(crate) leader: Option<u32>,
    /// Its leader epoch.
    pub(crate) leader_epoch: i32,
    /// Every replica as the leader sees it, the leader first.
    pub(crate) replicas: Vec<Replica>,
    /// The in-sync replicas.
    pub(crate) isr: Vec<u32>,
    /// Its offsets.
    pub(crate) offsets: PartitionOffsets,
    /// Bytes of its segments on disk.
    pub(crate) size_bytes: u64,
}

/// The partitions one broker hosts, and every operation on them.
#[derive(Debug)]
pub(crate) struct ReplicaManager {
    broker: u32,
    config: ReplicaConfig,
    closed: AtomicBool,
    /// Set with `closed` when the broker stopped or crashed (the fault
    /// API) rather than the cluster closing: calls get the retriable
    /// `NotLeaderOrFollower`.
    stopped: AtomicBool,
    /// By topic name: looked up on every append and fetch, so hashed with
    /// foldhash (randomly seeded per process, several times cheaper than
    /// SipHash on a short name).
    hosted: RwLock<HashMap<Arc<str>, Hosted, foldhash::fast::RandomState>>,
    /// Where leaders propose ISR changes; with none, the ISR stays as the
    /// controller set it.
    alter_partition: RwLock<Option<Arc<dyn AlterPartition>>>,
    /// The broker's fetchers, told when this broker starts following a
    /// leader.
    fetchers: RwLock<Weak<ReplicaFetcherManager>>,
    /// The switch of the broker's storage (`fail_disk`), once given.
    disk: OnceLock<DiskSwitch>,
}

/// A topic's hosted partitions, by partition number (a broker hosts only
/// the partitions placed on it).
#[derive(Debug)]
struct Hosted {
    id: Uuid,
    partitions: BTreeMap<u32, Arc<PartitionState>>,
}

impl ReplicaManager {
    /// The manager of broker `broker`, hosting nothing yet, with Kafka's
    /// default replication settings on the system clock.
    #[cfg(test)]
    pub(crate) fn new(broker: u32) -> Self {
        Self::with_config(broker, ReplicaConfig::default())
    }

    /// The manager of broker `broker`, replicating as `config` says.
    pub(crate) fn with_config(broker: u32, config: ReplicaConfig) -> Self {
        ReplicaManager {
            broker,
            config,
            closed: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            hosted: RwLock::new(HashMap::default()),
            alter_partition: RwLock::new(None),
            fetchers: RwLock::new(Weak::new()),
            disk: OnceLock::new(),
        }
    }

    /// The broker this manager serves.
    pub(crate) fn broker(&self) -> u32 {
        self.broker
    }

    /// Its replication settings.
    pub(crate) fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    /// Sets where leaders propose ISR changes (the controller).
    pub(crate) fn set_alter_partition(&self, alter: Arc<dyn AlterPartition>) {
        *self.alter_partition.write() = Some(alter);
    }

    /// Sets the fetchers to tell when this broker starts following a
    /// leader (see [`ReplicaFetcherManager`]).
    pub(crate) fn set_fetchers(&self, fetchers: &Arc<ReplicaFetcherManager>) {
        *self.fetchers.write() = Arc::downgrade(fetchers);
    }

    /// The broker's fetchers, while they run.
    pub(crate) fn fetchers(&self) -> Option<Arc<ReplicaFetcherManager>> {
        self.fetchers.read().upgrade()
    }

    /// Hosts `partition` of topic `topic` (id `id`) over `log`, as its
    /// leader or a follower as `roles` says (which must name this broker
    /// among the replicas), needing `min_insync` in-sync replicas for
    /// `acks=all` appends.
    ///
    /// # Errors
    /// [`Error::Closed`] once shut down; [`Error::Internal`] if `partition`
    /// is hosted already, `id` is not the hosted topic's, or this broker
    /// holds no replica of it.
    pub(crate) fn host(
        &self,
        topic: &Arc<str>,
        id: Uuid,
        partition: u32,
        roles: LeaderAndIsr,
        min_insync: usize,
        log: Log,
    ) -> Result<()> {
        if !roles.replicas.contains(&self.broker) {
            return Err(Error::Internal(format!(
                "{topic}-{partition} hosted on broker {}, which is not among its replicas {:?}",
                self.broker, roles.replicas
            )));
        }
        let leader = roles.leader.filter(|&l| l != self.broker);
        let state = Arc::new(
            PartitionState::new(
                topic.clone(),
                partition,
                self.broker,
                roles,
                min_insync,
                log,
                self.config.clock.now_ms(),
            )
            .with_stats(self.config.metrics.topic(topic)),
        );
        let mut hosted = self.hosted.write();
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("cluster"));
        }
        let entry = hosted.entry(topic.clone()).or_insert_with(|| Hosted {
            id,
            partitions: BTreeMap::new(),
        });
        if entry.id != id || entry.partitions.contains_key(&partition) {
            return Err(Error::Internal(format!(
                "{topic}-{partition} hosted twice (id {} held, {id} given)",
                entry.id
            )));
        }
        entry.partitions.insert(partition, state);
        drop(hosted);
        if let Some(leader) = leader {
            self.wake_fetcher(leader);
        }
        Ok(())
    }

    /// Tells the fetcher of `leader`'s partitions that there is work.
    fn wake_fetcher(&self, leader: u32) {
        if let Some(fetchers) = self.fetchers.read().upgrade() {
            fetchers.follow(leader);
        }
    }

    /// Stops hosting every partition of `topic` (deleted): each one's log
    /// is shut (waiting for appends in flight, waking its watchers) and its
    /// files are left for the caller to remove.
    ///
    /// # Errors
    /// The first error met; every partition is shut anyway.
    pub(crate) fn delete_topic(&self, topic: &str) -> Result<()> {
        let removed = self.hosted.write().remove(topic);
        let mut first_error = None;
        for state in removed.into_iter().flat_map(|h| h.partitions.into_values()) {
            if let Err(e) = state.shut(true) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Stops hosting every partition of `topic` without deleting anything
    /// (a topic whose opening failed half-way): each log is flushed and
    /// closed.
    ///
    /// # Errors
    /// The first error met; every partition is closed anyway.
    pub(crate) fn unhost_topic(&self, topic: &str) -> Result<()> {
        let removed = self.hosted.write().remove(topic);
        let mut first_error = None;
        for state in removed.into_iter().flat_map(|h| h.partitions.into_values()) {
            if let Err(e) = state.shut(false) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Stops hosting one partition whose replica left this broker (a
    /// reassignment moved it): waiting acknowledgements fail with
    /// [`Error::NotLeaderOrFollower`] (retriable), the log is dropped
    /// unflushed (its files are deleted next). Nothing if it is not hosted.
    pub(crate) fn unhost(&self, key: &TopicIdPartition) {
        let removed = self
            .hosted
            .write()
            .get_mut(&*key.topic)
            .filter(|h| h.id == key.topic_id)
            .and_then(|h| h.partitions.remove(&key.partition));
        if let Some(state) = removed {
            state.shut_moved();
        }
    }

    /// Shuts every hosted partition (the cluster closes): each log is
    /// flushed and closed. Returns each partition's final offsets (or the
    /// error closing it); later calls fail with [`Error::Closed`].
    pub(crate) fn shutdown(&self) -> Vec<(Arc<str>, u32, Result<Option<PartitionOffsets>>)> {
        self.drain(false, |state| state.shut(false))
    }

    /// Empties the table of hosted partitions (marking the manager closed,
    /// and `stopped` for a broker that stops) and shuts each one with
    /// `shut`, with the table lock released.
    fn drain(
        &self,
        stopped: bool,
        shut: impl Fn(&PartitionState) -> Result<Option<PartitionOffsets>>,
    ) -> Vec<(Arc<str>, u32, Result<Option<PartitionOffsets>>)> {
        let drained: Vec<(Arc<str>, Hosted)> = {
            let mut hosted = self.hosted.write();
            if stopped {
                self.stopped.store(true, Ordering::Release);
            }
            self.closed.store(true, Ordering::Release);
            hosted.drain().collect()
        };
        drained
            .into_iter()
            .flat_map(|(topic, h)| {
                h.partitions
                    .into_values()
                    .map(move |state| (topic.clone(), state.partition(), state))
            })
            .map(|(topic, partition, state)| (topic, partition, shut(&state)))
            .collect()
    }

    /// Shuts every hosted partition because the broker stops (`flush`) or
    /// crashes (`!flush`: nothing flushed); see
    /// [`PartitionState::shut_broker`]. Later calls fail with
    /// [`Error::Closed`]; calls that reach a partition still in hand get
    /// the retriable [`Error::NotLeaderOrFollower`].
    pub(crate) fn shutdown_broker(
        &self,
        flush: bool,
    ) -> Vec<(Arc<str>, u32, Result<Option<PartitionOffsets>>)> {
        self.drain(true, |state| state.shut_broker(flush))
    }

    /// Every hosted partition.
    pub(crate) fn hosted_partitions(&self) -> Vec<TopicIdPartition> {
        self.hosted
            .read()
            .iter()
            .flat_map(|(topic, h)| {
                h.partitions.keys().map(|&partition| TopicIdPartition {
                    topic_id: h.id,
                    topic: topic.clone(),
                    partition,
                })
            })
            .collect()
    }

    /// Gives the manager its broker's disk switch, so that a request
    /// caught inside the log when `fail_disk` throws it is answered as one
    /// arriving just after (see [`ReplicaManager::on_failed_disk`]).
    pub(crate) fn set_disk_switch(&self, disk: DiskSwitch) {
        let _ = self.disk.set(disk);
    }

    /// An I/O error, or the fenced log after one, met by a request while
    /// the broker's disk failed under it (`fail_disk`) becomes the
    /// retriable [`Error::NotLeaderOrFollower`], as a request arriving
    /// after the broker halted gets (Kafka answers its retriable
    /// `KAFKA_STORAGE_ERROR`): the broker is going down and the
    /// partition's leadership moves. Nothing the request carried was
    /// acknowledged. Any other error is returned as it is.
    fn on_failed_disk(&self, key: &TopicIdPartition, e: Error) -> Error {
        let failed = self.disk.get().is_some_and(DiskSwitch::is_failed);
        match e {
            Error::Io { .. } | Error::Fenced { .. } if failed => Error::NotLeaderOrFollower {
                topic: key.topic.to_string(),
                partition: key.partition,
                broker: self.broker,
            },
            e => e,
        }
    }

    /// The hosted partition `key`.
    fn get(&self, key: &TopicIdPartition) -> Result<Arc<PartitionState>> {
        let hosted = self.hosted.read();
        if self.closed.load(Ordering::Acquire) {
            if self.stopped.load(Ordering::Acquire) {
                // The broker is down, not the cluster: ask the new leader.
                return Err(Error::NotLeaderOrFollower {
                    topic: key.topic.to_string(),
                    partition: key.partition,
                    broker: self.broker,
                });
            }
            return Err(Error::Closed("cluster"));
        }
        let state = hosted
            .get(&*key.topic)
            .filter(|h| h.id == key.topic_id)
            .and_then(|h| h.partitions.get(&key.partition))
            .cloned()
            .ok_or_else(|| Error::UnknownTopicOrPartition {
                topic: key.topic.to_string(),
                partition: Some(key.partition),
            })?;
        drop(hosted);
        if state.is_gone() {
            return Err(state.gone_error());
        }
        Ok(state)
    }

    /// The hosted partition `key`, which this broker must lead.
    fn leader(&self, key: &TopicIdPartition) -> Result<Arc<PartitionState>> {
        let state = self.get(key)?;
        if state.leader() != Some(self.broker) {
            return Err(state.not_leader());
        }
        Ok(state)
    }

    /// Takes the leadership the controller decided for `key` (Kafka's
    /// `becomeLeaderOrFollower`); an update older than the one held is
    /// ignored. Becoming the leader resets the followers' state (see
    /// `PartitionState::apply_roles`) and the partition leaves this
    /// broker's fetchers (they fetch only what it follows); becoming a
    /// follower fails the acknowledgements waiting for replication and
    /// hands the partition to the fetcher of its new leader's broker.
    ///
    /// # Errors
    /// [`Error::UnknownTopicOrPartition`], [`Error::Closed`];
    /// [`Error::Internal`] if `roles` does not name this broker among the
    /// replicas.
    pub(crate) fn apply_leader_and_isr(
        &self,
        key: &TopicIdPartition,
        roles: LeaderAndIsr,
    ) -> Result<()> {
        if !roles.replicas.contains(&self.broker) {
            return Err(Error::Internal(format!(
                "{}-{} given to broker {}, which is not among its replicas {:?}",
                key.topic, key.partition, self.broker, roles.replicas
            )));
        }
        let change = self
            .get(key)?
            .apply_roles(roles, self.config.clock.now_ms());
        if let Some(leader) = change.and_then(|c| c.leader).filter(|&l| l != self.broker) {
            self.wake_fetcher(leader);
        }
        Ok(())
    }

    /// Whether `key` is hosted here (its topic was not deleted, the
    /// cluster is open).
    pub(crate) fn is_hosted(&self, key: &TopicIdPartition) -> bool {
        self.get(key).is_ok()
    }

    /// Appends `batches` to the leader's log (offsets assigned in place)
    /// and wakes the partition's watchers; returns once `acks` is met.
    ///
    /// # Errors
    /// [`Error::UnknownTopicOrPartition`], [`Error::Closed`];
    /// [`Error::NotLeaderOrFollower`] if this broker does not lead it;
    /// [`Error::NotEnoughReplicas`] for `acks=all` with fewer in-sync
    /// replicas than required (nothing appended); those of
    /// [`Log::append`].
    pub(crate) fn append(
        &self,
        key: &TopicIdPartition,
        batches: &mut [u8],
        origin: AppendOrigin,
        acks: AppendAcks,
    ) -> Result<AppendInfo> {
        let (info, pending) = self.append_pending(key, batches, origin, acks)?;
        if let Some(pending) = pending {
            pending.wait(&self.config.clock)?;
        }
        Ok(info)
    }

    /// [`ReplicaManager::append`] without waiting for the in-sync
    /// replicas: returns the append and, for `acks=all` while followers
    /// still lack the batch, the acknowledgement to wait for (Kafka's
    /// `DelayedProduce`), completed by whoever moves the high watermark
    /// past the batch. With one replica there is never one to wait for.
    ///
    /// # Errors
    /// As [`ReplicaManager::append`] (but never
    /// [`Error::NotEnoughReplicasAfterAppend`] or a timeout: those arrive
    /// through the [`PendingAck`]).
    pub(crate) fn append_pending(
        &self,
        key: &TopicIdPartition,
        batches: &mut [u8],
        origin: AppendOrigin,
        acks: AppendAcks,
    ) -> Result<(AppendInfo, Option<PendingAck>)> {
        let state = self.leader(key)?;
        let (info, pending) = state
            .append(batches, origin, acks == AppendAcks::All)
            .map_err(|e| self.on_failed_disk(key, e))?;
        #[cfg(test)]
        if self.config.injected_bug == Some(super::InjectedBug::AckBeforeReplication) {
            return Ok((info, None));
        }
        let now = self.config.clock.now_ms();
        Ok((
            info,
            pending.map(|p| p.with_timeout(now, self.config.ack_timeout_ms)),
        ))
    }

    /// [`ReplicaManager::append_pending`] of batches logbus's producer
    /// built, leaving the fsync of a log that fsyncs every append to the
    /// caller (see `PartitionState::append_deferred`): the third value, if
    /// any, is the offset to pass to [`ReplicaManager::sync_for_ack`]
    /// before the acknowledgement can complete. The batches are the
    /// concatenation of `pieces` (each whole batches), written with one
    /// vectored write.
    ///
    /// # Errors
    /// As [`ReplicaManager::append_pending`].
    pub(crate) fn append_deferred(
        &self,
        key: &TopicIdPartition,
        pieces: &mut [&mut [u8]],
        acks: AppendAcks,
    ) -> Result<(AppendInfo, Option<PendingAck>, Option<u64>)> {
        let state = self.leader(key)?;
        let (info, pending, sync) = state
            .append_deferred(pieces, acks == AppendAcks::All)
            .map_err(|e| self.on_failed_disk(key, e))?;
        let now = self.config.clock.now_ms();
        Ok((
            info,
            pending.map(|p| p.with_timeout(now, self.config.ack_timeout_ms)),
            sync,
        ))
    }

    /// Runs (or waits for) the fsync a [`ReplicaManager::append_deferred`]
    /// left to its caller, for the offsets below `next_offset` of `key`,
    /// and moves the high watermark past them (completing their
    /// acknowledgements); a failed fsync fails the acknowledgements it
    /// leaves waiting.
    ///
    /// # Errors
    /// [`Error::UnknownTopicOrPartition`], [`Error::Closed`]; those of
    /// [`Log::sync_for_ack`].
    pub(crate) fn sync_for_ack(&self, key: &TopicIdPartition, next_offset: u64) -> Result<()> {
        self.get(key)?
            .sync_for_ack(next_offset)
            .map_err(|e| self.on_failed_disk(key, e))
    }

    /// Writes a transaction marker (COMMIT or ABORT) for producer
    /// `producer_id` at `producer_epoch` to `key` as its leader (Kafka's
    /// `WriteTxnMarkers`), and returns once it is replicated as
    /// `acks=all` requires.
    ///
    /// # Errors
    /// [`Error::NotLeaderOrFollower`] unless this broker leads `key`;
    /// [`Error::NotEnoughReplicas`] (nothing written) and
    /// [`Error::NotEnoughReplicasAfterAppend`] or a timeout (written, not
    /// replicated enough) as an `acks=all` append;
    /// [`Error::InvalidProducerEpoch`] for an epoch older than the
    /// producer's and [`Error::InvalidArgument`] for a fenced coordinator
    /// epoch (nothing written); [`Error::UnknownTopicOrPartition`],
    /// [`Error::Closed`], and the I/O errors of [`Log::append_marker`](crate::Log::append_marker).
    pub(crate) fn append_txn_marker(
        &self,
        key: &TopicIdPartition,
        producer_id: i64,
        producer_epoch: i16,
        marker: crate::format::ControlRecordType,
        coordinator_epoch: i32,
    ) -> Result<AppendInfo> {
        let state = self.leader(key)?;
        let (info, pending) = state
            .append_marker(producer_id, producer_epoch, marker, coordinator_epoch)
            .map_err(|e| self.on_failed_disk(key, e))?;
        if let Some(pending) = pending {
            let now = self.config.clock.now_ms();
            pending
                .with_timeout(now, self.config.ack_timeout_ms)
                .wait(&self.config.clock)?;
        }
        Ok(info)
    }

    /// `key`'s last stable offset at its leader (Kafka's `ListOffsets`
    /// with `read_committed`): see [`Log::last_stable_offset`](crate::Log::last_stable_offset).
    ///
    /// # Errors
    /// [`Error::NotLeaderOrFollower`] unless this broker leads `key`;
    /// [`Error::UnknownTopicOrPartition`], [`Error::Closed`].
    pub(crate) fn last_stable_offset(&self, key: &TopicIdPartition) -> Result<u64> {
        self.leader(key)?.last_stable_offset()
    }

    /// Serves a follower's fetch of `key` as its leader (Kafka's fetch
    /// from a replica): data from `request.fetch_offset` up to the log
    /// end, the high watermark and log start, or a diverging epoch to
    /// truncate to (KIP-320). Notes the follower's progress, moves the high
    /// watermark (completing `acks=all` appends) and, when the follower
    /// caught up while out of the ISR, proposes adding it through
    /// [`AlterPartition`] (with no partition lock held).
    ///
    /// # Errors
    /// [`Error::NotLeaderOrFollower`] unless this broker leads `key`;
    /// [`Error::FencedLeaderEpoch`] for a stale
    /// `request.current_leader_epoch`; [`Error::OffsetOutOfRange`];
    /// [`Error::UnknownTopicOrPartition`], [`Error::Closed`].
    pub(crate) fn fetch_as_follower(
        &self,
        key: &TopicIdPartition,
        request: &FollowerFetchRequest,
    ) -> Result<FollowerFetchResponse> {
        let state = self.leader(key)?;
        let (response, proposal) = state.fetch_as_follower(request, self.config.clock.now_ms())?;
        if let Some(proposal) = proposal {
            self.propose(key, &state, proposal);
        }
        Ok(response)
    }

    /// Sends an ISR proposal to the controller, holding no lock of the
    /// partition; without a controller the ISR stays as it is.
    fn propose(&self, key: &TopicIdPartition, state: &PartitionState, proposal: IsrProposal) {
        let alter = self.alter_partition.read().clone();
        if let Some(alter) = alter {
            // A refused proposal (a newer state exists) is dropped: the
            // controller's decision reached this manager already.
            let _ = alter.alter_partition(
                key,
                proposal.leader,
                proposal.leader_epoch,
                proposal.partition_epoch,
                proposal.isr,
            );
        }
        state.proposal_done();
    }

    /// Proposes removing from the ISR of every partition this broker leads
    /// the followers that have not caught up within
    /// `replica.lag.time.max.ms` (Kafka's `isr-expiration` task); returns
    /// how many partitions it proposed a shrink for.
    pub(crate) fn maybe_shrink_isr(&self) -> usize {
        let now = self.config.clock.now_ms();
        let mut proposed = 0;
        for (key, state) in self.hosted_states() {
            if let Some(proposal) = state.isr_shrink(now, self.config.lag_time_max_ms) {
                proposed += 1;
                self.propose(&key, &state, proposal);
            }
        }
        proposed
    }

    /// Every hosted partition with its state.
    fn hosted_states(&self) -> Vec<(TopicIdPartition, Arc<PartitionState>)> {
        self.hosted
            .read()
            .iter()
            .flat_map(|(topic, h)| {
                h.partitions.iter().map(|(&partition, state)| {
                    (
                        TopicIdPartition {
                            topic_id: h.id,
                            topic: topic.clone(),
                            partition,
                        },
                        state.clone(),
                    )
                })
            })
            .collect()
    }

    /// The hosted partitions this broker follows `leader` in.
    pub(crate) fn followed_from(
        &self,
        leader: u32,
    ) -> Vec<(TopicIdPartition, Arc<PartitionState>)> {
        if self.closed.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut followed = self.hosted_states();
        followed.retain(|(_, state)| state.leader() == Some(leader) && leader != self.broker);
        followed
    }

    /// The leaders of the partitions this broker follows.
    pub(crate) fn followed_leaders(&self) -> Vec<u32> {
        let mut leaders: Vec<u32> = self
            .hosted_states()
            .iter()
            .filter_map(|(_, state)| state.leader())
            .filter(|&l| l != self.broker)
            .collect();
        leaders.sort_unstable();
        leaders.dedup();
        leaders
    }

    /// Restores `key`'s high watermark from the broker's
    /// `replication-offset-checkpoint` (capped at its log end offset).
    ///
    /// # Errors
    /// As [`ReplicaManager::offsets`].
    pub(crate) fn restore_high_watermark(&self, key: &TopicIdPartition, offset: u64) -> Result<()> {
        self.get(key)?.restore_high_watermark(offset)
    }

    /// Reads whole batches of `key` from `offset`, up to `max_bytes` (but at
    /// least one batch) and below `bound`. An offset at or above the bound,
    /// but within the log, reads nothing.
    ///
    /// # Errors
    /// [`Error::OffsetOutOfRange`] outside `[log start, log end]`;
    /// [`Error::NotLeaderOrFollower`] for a consumer's fetch
    /// ([`FetchBound::HighWatermark`]) from a broker that does not lead it;
    /// as [`ReplicaManager::append`] otherwise, and [`Error::Corrupt`] for
    /// a damaged batch.
    pub(crate) fn fetch(
        &self,
        key: &TopicIdPartition,
        offset: u64,
        max_bytes: usize,
        bound: FetchBound,
    ) -> Result<FetchedData> {
        let state = match bound {
            FetchBound::LogEnd => self.get(key)?,
            FetchBound::HighWatermark | FetchBound::TxnCommitted => self.leader(key)?,
        };
        #[cfg(test)]
        let bound = match self.config.injected_bug {
            Some(super::InjectedBug::ReadPastHighWatermark) => FetchBound::LogEnd,
            _ => bound,
        };
        let (read, high_watermark) = state
            .read(offset, max_bytes, bound)
            .map_err(|e| self.on_failed_disk(key, e))?;
        Ok(FetchedData::new(read, high_watermark))
    }

    /// `key`'s leadership as its leader holds it (replicas, leader epoch,
    /// ISR): what the listener checks a client's `current_leader_epoch`
    /// against.
    ///
    /// # Errors
    /// [`Error::NotLeaderOrFollower`] unless this broker leads `key`;
    /// [`Error::UnknownTopicOrPartition`], [`Error::Closed`].
    #[cfg_attr(not(feature = "server"), expect(dead_code, reason = "the listener's"))]
    pub(crate) fn leader_roles(&self, key: &TopicIdPartition) -> Result<LeaderAndIsr> {
        Ok(self.leader(key)?.roles())
    }

    /// Where `epoch`'s offsets end in `key`'s log at its leader, as
    /// (epoch, end offset): Kafka's `OffsetForLeaderEpoch` answer (see
    /// `Log::end_offset_for_epoch`; (-1, -1) for an epoch the log cannot
    /// place).
    ///
    /// # Errors
    /// As [`ReplicaManager::leader_roles`].
    #[cfg_attr(not(feature = "server"), expect(dead_code, reason = "the listener's"))]
    pub(crate) fn end_offset_for_epoch(
        &self,
        key: &TopicIdPartition,
        epoch: i32,
    ) -> Result<(i32, i64)> {
        self.leader(key)?.with_log(|log| {
            let found = log.end_offset_for_epoch(epoch);
            Ok((found.epoch, found.end_offset))
        })
    }

    /// `key`'s offsets now.
    ///
    /// # Errors
    /// [`Error::UnknownTopicOrPartition`], [`Error::Closed`].
    pub(crate) fn offsets(&self, key: &TopicIdPartition) -> Result<PartitionOffsets> {
        self.get(key)?.offsets()
    }

    /// The first record of `key` with a timestamp `>= timestamp`.
    ///
    /// # Errors
    /// As [`ReplicaManager::offsets`], and [`Error::Corrupt`].
    pub(crate) fn offset_for_timestamp(
        &self,
        key: &TopicIdPartition,
        timestamp: i64,
    ) -> Result<Option<TimestampOffset>> {
        self.leader(key)?.offset_for_timestamp(timestamp)
    }

    /// Advances `key`'s log start offset to `offset` (Kafka's
    /// `deleteRecords`); returns the new one.
    ///
    /// # Errors
    /// As [`ReplicaManager::offsets`]; [`Error::OffsetOutOfRange`].
    pub(crate) fn delete_records(&self, key: &TopicIdPartition, offset: u64) -> Result<u64> {
        self.leader(key)?.delete_records(offset)
    }

    /// Runs `key`'s retention now.
    ///
    /// # Errors
    /// As [`ReplicaManager::offsets`], and [`Error::Io`].
    pub(crate) fn enforce_retention(&self, key: &TopicIdPartition) -> Result<RetentionReport> {
        self.get(key)?.enforce_retention()
    }

    /// Runs a cleaning pass on `key` now.
    ///
    /// # Errors
    /// As [`ReplicaManager::offsets`], and those of [`Log::clean`].
    pub(crate) fn clean(&self, key: &TopicIdPartition) -> Result<CleanReport> {
        self.get(key)?.clean()
    }

    /// Bytes of `key`'s segments on disk.
    ///
    /// # Errors
    /// As [`ReplicaManager::offsets`].
    pub(crate) fn size_bytes(&self, key: &TopicIdPartition) -> Result<u64> {
        self.get(key)?.size_bytes()
    }

    /// What recovery did when `key`'s log was opened.
    ///
    /// # Errors
    /// As [`ReplicaManager::offsets`].
    pub(crate) fn recovery_report(&self, key: &TopicIdPartition) -> Result<RecoveryReport> {
        Ok(self.get(key)?.recovery_report().clone())
    }

    /// `key`'s leader, replicas, ISR and offsets.
    ///
    /// # Errors
    /// As [`ReplicaManager::offsets`].
    pub(crate) fn describe(&self, key: &TopicIdPartition) -> Result<PartitionInfo> {
        let state = self.get(key)?;
        let offsets = state.offsets()?;
        let roles = state.roles();
        let followers = state.followers();
        let now = self.config.clock.now_ms();
        let replicas = roles
            .replicas
            .iter()
            .map(|&broker| {
                if broker == self.broker {
                    Replica {
                        log_end_offset: Some(offsets.log_end),
                        durable_offset: Some(offsets.recovery_point),
                        last_caught_up_ms: Some(now),
                        last_fetch_ms: Some(now),
                        ..Replica::reset(broker, true, now)
                    }
                } else {
                    followers
                        .iter()
                        .find(|r| r.broker == broker)
                        .copied()
                        .unwrap_or_else(|| Replica::reset(broker, false, now))
                }
            })
            .collect();
        Ok(PartitionInfo {
            leader: roles.leader,
            leader_epoch: roles.leader_epoch,
            replicas,
            isr: roles.isr,
            offsets,
            size_bytes: state.size_bytes()?,
        })
    }

    /// Sends on `waker` after every append to `key`, every move of its
    /// high watermark (and when it goes away); see `PartitionState::watch`. Does nothing if `key` is not
    /// hosted.
    pub(crate) fn watch(&self, key: &TopicIdPartition, waker: &Sender<()>) {
        if let Ok(state) = self.get(key) {
            state.watch(waker);
        }
    }

    /// Sends on `waker` after every append to `key` (and when it goes
    /// away), not at moves of its high watermark: a follower's fetcher,
    /// see `PartitionState::watch_as_follower`. Does nothing if `key` is
    /// not hosted.
    pub(crate) fn watch_as_follower(&self, key: &TopicIdPartition, waker: &Sender<()>) {
        if let Ok(state) = self.get(key) {
            state.watch_as_follower(waker);
        }
    }

    /// Stops waking `waker` for `key`.
    pub(crate) fn unwatch(&self, key: &TopicIdPartition, waker: &Sender<()>) {
        if let Ok(state) = self.get(key) {
            state.unwatch(waker);
        }
    }

    /// How many `acks=all` appends to `key` wait (for tests).
    #[cfg(test)]
    pub(crate) fn pending_acks(&self, key: &TopicIdPartition) -> usize {
        self.get(key).map_or(0, |s| s.pending_acks())
    }

    /// Gives every partition of topic `topic` (id `id`) this broker hosts
    /// the topic's new configuration ([`PartitionState::set_config`]).
    /// Every partition is tried; the first error is returned.
    pub(crate) fn set_topic_config(
        &self,
        topic: &str,
        id: Uuid,
        config: &crate::config::LogConfig,
        min_insync: usize,
    ) -> Result<()> {
        let states: Vec<Arc<PartitionState>> = self
            .hosted
            .read()
            .get(topic)
            .filter(|h| h.id == id)
            .map(|h| h.partitions.values().cloned().collect())
            .unwrap_or_default();
        let mut first_error = None;
        for state in states {
            if let Err(e) = state.set_config(config, min_insync) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Runs `f` on `key`'s open log (for tests).
    #[cfg(test)]
    pub(crate) fn with_log<T>(
        &self,
        key: &TopicIdPartition,
        f: impl FnOnce(&Log) -> Result<T>,
    ) -> Result<T> {
        self.get(key)?.with_log(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::BatchBuilder;
    use crate::types::Compression;

    fn batch(records: usize) -> Vec<u8> {
        let mut builder = BatchBuilder::new(Compression::None);
        for _ in 0..records {
            builder.append(1, None, Some(b"v"), &[]);
        }
        builder.build().unwrap().to_vec()
    }

    /// A manager hosting partition 0 of `t` over a log in `dir`.
    fn hosting(dir: &std::path::Path) -> (ReplicaManager, TopicIdPartition) {
        hosting_as(dir, 0, vec![0], 1)
    }

    /// Broker `broker`'s manager hosting partition 0 of `t` (replicas
    /// `replicas`, `min_insync` in-sync replicas for acks=all) over a log
    /// in `dir`.
    fn hosting_as(
        dir: &std::path::Path,
        broker: u32,
        replicas: Vec<u32>,
        min_insync: usize,
    ) -> (ReplicaManager, TopicIdPartition) {
        let manager = ReplicaManager::new(broker);
        let topic: Arc<str> = Arc::from("t");
        let id = Uuid::new_v4();
        let log = Log::builder(dir.join("t-0")).open().unwrap();
        manager
            .host(&topic, id, 0, LeaderAndIsr::new(replicas), min_insync, log)
            .unwrap();
        let key = TopicIdPartition {
            topic_id: id,
            topic,
            partition: 0,
        };
        (manager, key)
    }

    #[test]
    fn fetches_are_bounded_and_report_the_high_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, key) = hosting(dir.path());
        for n in [2, 3] {
            manager
                .append(&key, &mut batch(n), AppendOrigin::Client, AppendAcks::All)
                .unwrap();
        }
        for bound in [FetchBound::LogEnd, FetchBound::HighWatermark] {
            let fetched = manager.fetch(&key, 0, 1 << 20, bound).unwrap();
            assert_eq!(fetched.high_watermark(), 5, "{bound:?}");
            assert_eq!(fetched.clone().into_log_read().batches().count(), 2);
            let at_end = manager.fetch(&key, 5, 1 << 20, bound).unwrap();
            assert!(at_end.records().is_empty(), "{bound:?}");
            assert!(matches!(
                manager.fetch(&key, 6, 1 << 20, bound),
                Err(Error::OffsetOutOfRange { .. })
            ));
        }
        let info = manager.describe(&key).unwrap();
        assert_eq!((info.leader, info.leader_epoch), (Some(0), 0));
        assert_eq!(info.isr, [0]);
        assert_eq!(info.replicas[0].log_end_offset, Some(5));
        manager.unhost_topic("t").unwrap();
    }

    #[test]
    fn a_key_of_another_topic_id_is_unknown_and_a_shut_manager_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, key) = hosting(dir.path());
        let stale = TopicIdPartition {
            topic_id: Uuid::new_v4(),
            ..key.clone()
        };
        assert!(matches!(
            manager.offsets(&stale),
            Err(Error::UnknownTopicOrPartition { .. })
        ));
        assert!(!manager.is_hosted(&stale));
        assert!(manager.is_hosted(&key));
        let closed = manager.shutdown();
        assert_eq!(closed.len(), 1);
        assert!(matches!(closed[0].2, Ok(Some(_))));
        assert!(matches!(manager.offsets(&key), Err(Error::Closed(_))));
        let log = Log::builder(dir.path().join("u-0")).open().unwrap();
        assert!(matches!(
            manager.host(
                &Arc::from("u"),
                Uuid::new_v4(),
                0,
                LeaderAndIsr::new(vec![0]),
                1,
                log
            ),
            Err(Error::Closed(_))
        ));
    }

    /// A follower's manager refuses appends and consumers' fetches with
    /// `NotLeaderOrFollower`, and serves a follower's fetch (to the log
    /// end) from its own log.
    #[test]
    fn a_follower_answers_not_leader_to_producers_and_consumers() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, key) = hosting_as(dir.path(), 1, vec![0, 1], 1);
        for acks in [AppendAcks::Leader, AppendAcks::All] {
            assert!(matches!(
                manager.append(&key, &mut batch(1), AppendOrigin::Client, acks),
                Err(Error::NotLeaderOrFollower {
                    broker: 1,
                    partition: 0,
                    ..
                })
            ));
        }
        assert!(matches!(
            manager.fetch(&key, 0, 1 << 20, FetchBound::HighWatermark),
            Err(Error::NotLeaderOrFollower { .. })
        ));
        let fetched = manager.fetch(&key, 0, 1 << 20, FetchBound::LogEnd).unwrap();
        assert!(fetched.records().is_empty());
        let info = manager.describe(&key).unwrap();
        assert_eq!((info.leader, info.isr.clone()), (Some(0), vec![0, 1]));
        // A broker that holds no replica cannot host it.
        let other = ReplicaManager::new(2);
        let log = Log::builder(dir.path().join("t-1")).open().unwrap();
        assert!(matches!(
            other.host(
                &key.topic,
                key.topic_id,
                1,
                LeaderAndIsr::new(vec![0, 1]),
                1,
                log
            ),
            Err(Error::Internal(_))
        ));
        manager.unhost_topic("t").unwrap();
    }

    /// `acks=all` needs `min.insync.replicas` in-sync replicas; `acks=1`
    /// does not.
    #[test]
    fn acks_all_needs_min_insync_replicas() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, key) = hosting_as(dir.path(), 0, vec![0], 2);
        assert!(matches!(
            manager.append(&key, &mut batch(1), AppendOrigin::Client, AppendAcks::All),
            Err(Error::NotEnoughReplicas {
                in_sync: 1,
                required: 2,
                ..
            })
        ));
        assert_eq!(
            manager.offsets(&key).unwrap().log_end,
            0,
            "nothing appended"
        );
        manager
            .append(
                &key,
                &mut batch(1),
                AppendOrigin::Client,
                AppendAcks::Leader,
            )
            .unwrap();
        assert_eq!(manager.offsets(&key).unwrap().log_end, 1);
        manager.unhost_topic("t").unwrap();
    }

    /// The controller's decisions move leadership: a follower becomes the
    /// leader and takes appends stamped with the new epoch; an update older
    /// than the one held is ignored.
    #[test]
    fn leadership_follows_the_controller_and_stale_updates_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, key) = hosting_as(dir.path(), 1, vec![0, 1], 1);
        let elected = LeaderAndIsr {
            replicas: vec![0, 1],
            leader: Some(1),
            leader_epoch: 1,
            partition_epoch: 1,
            isr: vec![1],
        };
        manager.apply_leader_and_isr(&key, elected.clone()).unwrap();
        manager
            .append(
                &key,
                &mut batch(2),
                AppendOrigin::Client,
                AppendAcks::Leader,
            )
            .unwrap();
        let stale = LeaderAndIsr::new(vec![0, 1]);
        manager.apply_leader_and_isr(&key, stale).unwrap();
        let info = manager.describe(&key).unwrap();
        assert_eq!(
            (info.leader, info.leader_epoch, info.isr),
            (Some(1), 1, vec![1])
        );
        let fetched = manager
            .fetch(&key, 0, 1 << 20, FetchBound::HighWatermark)
            .unwrap();
        let epochs: Vec<i32> = fetched
            .into_log_read()
            .batches()
            .map(|b| b.unwrap().header().partition_leader_epoch)
            .collect();
        assert_eq!(epochs, [1], "stamped with the epoch it was appended in");
        let offline = LeaderAndIsr {
            leader: None,
            leader_epoch: 2,
            partition_epoch: 2,
            ..elected
        };
        manager.apply_leader_and_isr(&key, offline).unwrap();
        assert!(matches!(
            manager.append(
                &key,
                &mut batch(1),
                AppendOrigin::Client,
                AppendAcks::Leader
            ),
            Err(Error::NotLeaderOrFollower { broker: 1, .. })
        ));
        let elsewhere = LeaderAndIsr::new(vec![0, 2]);
        assert!(matches!(
            manager.apply_leader_and_isr(&key, elsewhere),
            Err(Error::Internal(_))
        ));
        manager.unhost_topic("t").unwrap();
    }

    #[test]
    fn deleting_a_topic_stops_hosting_it() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, key) = hosting(dir.path());
        let (tx, rx) = crossbeam_channel::bounded(1);
        manager.watch(&key, &tx);
        manager.delete_topic("t").unwrap();
        assert!(rx.try_recv().is_ok(), "watchers are woken");
        assert!(matches!(
            manager.append(&key, &mut batch(1), AppendOrigin::Client, AppendAcks::All),
            Err(Error::UnknownTopicOrPartition { .. })
        ));
        assert!(manager.hosted_partitions().is_empty());
    }
}
