//! The transaction coordinator (Kafka's `TransactionCoordinator`): each
//! transactional id's state, kept in memory and persisted as records of
//! the internal compacted topic `__transaction_state` (see
//! [`super::txn_log`]), driven by the state machine of
//! [`super::txn_state`].
//!
//! The topic is created at the first `init_producer_id` (as
//! `__consumer_offsets` at the first commit) with
//! `transaction.state.log.num.partitions` partitions (50),
//! `transaction.state.log.replication.factor` replicas and
//! `min.insync.replicas` = `transaction.state.log.min.isr` (2, capped by
//! the factor). A transactional id's records all go to partition
//! `partition_for_transactional_id`; every new state but a completed one
//! is appended there with acks=all *before* the coordinator acts on it or
//! answers, so what the coordinator answered survives a crash and a
//! leader change. On open the cluster replays every partition of the
//! topic (the last record of each id wins; a tombstone removes it).
//!
//! A `CompleteCommit` (`CompleteAbort`) state is the exception: it is
//! appended in the same batch as the id's next record (the next
//! transaction's `Ongoing`, an init, a tombstone), or by the timer's next
//! pass, or by `Cluster::close`, whichever comes first, so back-to-back
//! transactions write one record batch less each. Nothing is decided by
//! it: every marker is written before it is taken, so a replay that finds
//! the `Prepare*` state instead only writes the markers again (Kafka's
//! coordinator resends them after a failover too; a second marker of a
//! transaction already ended is one more control batch, which readers
//! skip).
//!
//! Ending a transaction is Kafka's two-phase protocol: `PrepareCommit` (or
//! `PrepareAbort`) is recorded — the decision, after which `end_txn`
//! answers — then a COMMIT (ABORT) marker is written to every partition
//! of the transaction through the [`MarkerWriter`], with the coordinator
//! epoch (the leader epoch of the id's `__transaction_state` partition),
//! then `CompleteCommit` (`CompleteAbort`) is recorded. A lingering
//! producer's commit writes the markers before `end_txn` returns
//! (`Markers::Inline`). Otherwise the answered id
//! is queued, and its markers are written by the producer's sender thread
//! (`Markers::Sender`) or, for the listener's `EndTxn`, by the timer
//! thread, woken at once (as Kafka's marker channel works after `EndTxn`
//! is answered); or first by
//! a read in the process ([`ClusterInner::complete_answered_txns`]: a
//! read that starts after the answer sees the outcome), or by the id's
//! next request. A marker that cannot be written (its
//! partition has no leader for a moment) leaves the transaction prepared:
//! the coordinator's timer retries it every
//! `transaction.abort.timed.out.transaction.cleanup.interval.ms`, and so
//! do a retried `end_txn` and the next `init_producer_id`; a transaction
//! replayed in a `Prepare*` state is completed the same way. A partition
//! whose topic was deleted needs no marker.
//!
//! The timer also aborts transactions left `Ongoing` past their
//! `transaction.timeout.ms`, with an epoch bump (Kafka's
//! `prepareFenceProducerEpoch`), so the producer that left it is fenced.
//!
//! ## Expiration of transactional ids
//! Every `transaction.remove.expired.transaction.cleanup.interval.ms` the
//! timer removes the ids whose state is `Empty`, `CompleteCommit` or
//! `CompleteAbort` and last changed `transactional.id.expiration.ms` ago
//! or earlier (Kafka's `removeExpiredTransactionalIds`): a tombstone (a
//! null value under the id's key) is appended to the id's partition with
//! acks=all, then the id is forgotten. A transaction open or completing
//! never expires. A replay skips an id whose last record is a tombstone,
//! so a reopen does not know it either; its next `init_producer_id` takes
//! a new producer id at epoch 0, as a new id's does. Kafka batches the
//! tombstones of a partition; logbus appends one record per expired id.
//!
//! ## Transactional offsets
//! `txn_offset_commit` appends the offsets at once to the group's
//! `__consumer_offsets` partition as a transactional batch of the
//! transaction's producer id and epoch, where the group coordinator holds
//! them pending (see [`super::coordinator`]). Writing the transaction's
//! COMMIT marker to that partition makes them the group's committed
//! offsets; an ABORT marker drops them. This happens wherever markers are
//! written — `end_txn`, a retry, the timer (a timed-out transaction is
//! aborted), the completion of a transaction replayed as prepared — so a
//! crash after `PrepareCommit` is recorded and before the markers are
//! written completes the commit at reopen *with* its offsets: the offsets
//! replay pending from `__consumer_offsets` (replayed before
//! `__transaction_state`) and the marker written at reopen applies them.
//! A crash before `PrepareCommit` aborts the open transaction, offsets
//! included.
//!
//! ## Locks
//! `ids` (the map of transactional ids) is taken briefly, alone or — to
//! forget an expired id — under that id's entry lock; no entry lock is
//! ever taken under `ids`. Each id's
//! entry lock is held for a whole request — the state write, the markers,
//! the offset commits — so one id's requests run one at a time and its
//! records are appended in the order its state changes. Under it the
//! cluster's usual locks are taken (`controller` to allocate a producer
//! id, `topics`, a replica manager, the offset store); no entry lock is
//! ever taken under those. Internal topics are created before an entry
//! lock is taken. `end_txn` queues an answered id under its entry lock,
//! taking `timer` and then `completing` briefly; the queue's readers take
//! `completing` alone and an entry lock alone, never one under the other.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, select};
use parking_lot::{Condvar, Mutex, RwLock};

use super::offsets::{OFFSETS_TOPIC, OffsetAndMetadata, partition_for_group};
use super::replay::replay_records;
use super::txn_log::{self, TxnStatus, partition_for_transactional_id};
use super::txn_state::{InitOutcome, TxnMetadata, TxnRefusal};
use super::{CleanupPolicy, ClusterInner, NewTopic, SkippedRecord, TopicConfig, TopicState};
use crate::error::{Error, Result};
use crate::format::{BatchBuilder, ControlRecordType};
use crate::replica::{AppendAcks, AppendOrigin, FetchBound};
use crate::timeline::Stage;
use crate::types::{Compression, TopicPartition};

/// The internal topic holding transaction states.
pub(crate) const TXN_TOPIC: &str = "__transaction_state";

/// The client's `transaction.timeout.ms` default.
#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "the producer's config keeps its own default; read by the coordinator's tests"
    )
)]
pub(crate) const DEFAULT_TRANSACTION_TIMEOUT_MS: i32 = 60_000;

/// Writes a transaction's COMMIT or ABORT marker to one partition, through
/// its leader, acknowledged as acks=all (the replica layer's
/// `append_txn_marker`). `coordinator_epoch` is the leader epoch of the
/// transactional id's `__transaction_state` partition.
pub(crate) trait MarkerWriter: Send + Sync {
    /// Writes the marker of `producer_id` at `producer_epoch` to
    /// `topic`-`partition`.
    ///
    /// # Errors
    /// Anything the append fails with; the coordinator retries (an
    /// [`Error::UnknownTopicOrPartition`] means the partition is gone and
    /// needs no marker).
    fn write_marker(
        &self,
        topic: &str,
        partition: u32,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
    ) -> Result<()>;
}

/// How many times a marker write that met a moved leader is sent again at
/// once before the failure is left to the coordinator's timer.
const MARKER_LEADER_RETRIES: u32 = 3;

/// The cluster's writer: each marker goes to the partition's leader
/// through its broker's replica manager, and is answered once it is
/// replicated as an `acks=all` append is (Kafka's WriteTxnMarkers).
pub(crate) struct ReplicaMarkers {
    cluster: super::WeakCluster,
}

impl ReplicaMarkers {
    /// A writer for `cluster`'s partitions (weak: the coordinator inside
    /// the cluster holds the writer).
    pub(crate) fn new(cluster: &Arc<ClusterInner>) -> Self {
        ReplicaMarkers {
            cluster: super::WeakCluster::new(cluster),
        }
    }
}

impl MarkerWriter for ReplicaMarkers {
    fn write_marker(
        &self,
        topic: &str,
        partition: u32,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
    ) -> Result<()> {
        let cluster = self.cluster.upgrade().ok_or(Error::Closed("cluster"))?;
        let key = cluster.partition_key(&TopicPartition::new(topic, partition))?;
        let marker = if commit {
            ControlRecordType::Commit
        } else {
            ControlRecordType::Abort
        };
        // A leadership that moved while the marker was on its way is
        // found again at once (Kafka's marker channel re-resolves the
        // leader and resends), rather than left to the timer's next pass;
        // the controller has already routed the partition to its new
        // leader when the old one answers NotLeaderOrFollower.
        let mut attempts = 0;
        loop {
            let written = cluster.replicas_for(&key).and_then(|r| {
                r.append_txn_marker(&key, producer_id, producer_epoch, marker, coordinator_epoch)
            });
            match written {
                Ok(_) => return Ok(()),
                Err(Error::NotLeaderOrFollower { .. } | Error::FencedLeaderEpoch { .. })
                    if attempts < MARKER_LEADER_RETRIES =>
                {
                    attempts += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// One transactional id's coordinator state.
#[derive(Debug, Default)]
struct Entry {
    /// The recorded state; `None` before the first init (or after a
    /// tombstone).
    meta: Option<TxnMetadata>,
    /// In a `Prepare*` state: how many of the state's partitions, in
    /// their order, have their marker written; the rest still lack it (in
    /// memory only: a replay starts over with every partition). A count,
    /// not a copy of the partitions, as markers are written in order and
    /// the first that fails stops the rest.
    marked: usize,
    /// `meta` is a `Complete*` state not appended yet: it goes into the
    /// same batch as the id's next record (see the module docs).
    unwritten: bool,
    /// The buffers the id's records are built in, kept between records
    /// (`None` until the id's first record here: a replay makes an entry
    /// for every id it finds, most of which may never write again).
    scratch: Option<RecordScratch>,
}

/// The buffers of one transactional id's `__transaction_state` records
/// (under its entry lock): the encoded key, a value and the batch,
/// reused so that a record allocates nothing once they have grown.
#[derive(Debug)]
struct RecordScratch {
    /// The id's encoded key (empty until its first record).
    key: Vec<u8>,
    value: Vec<u8>,
    builder: BatchBuilder,
}

impl Default for RecordScratch {
    fn default() -> Self {
        RecordScratch {
            key: Vec::new(),
            value: Vec::new(),
            builder: BatchBuilder::with_capacity(Compression::None, 256),
        }
    }
}

/// A record batch larger than this (a transaction over very many
/// partitions) is not kept for the id's next record.
const SCRATCH_KEEP_BYTES: usize = 64 << 10;

impl Entry {
    /// Takes `meta` as the recorded state.
    fn set(&mut self, meta: TxnMetadata) {
        self.unwritten = false;
        self.marked = 0;
        self.meta = Some(meta);
    }
}

/// The transaction coordinator's state (see the module docs).
pub(crate) struct TransactionCoordinator {
    ids: Mutex<HashMap<String, Arc<Mutex<Entry>>>>,
    /// `None` until `Cluster::open` installs the cluster's writer.
    markers: RwLock<Option<Arc<dyn MarkerWriter>>>,
    timer: Mutex<Option<TxnTimer>>,
    /// Ids whose `end_txn` recorded a `Prepare*` state: a producer's
    /// sender or the timer thread writes their markers next (Kafka's
    /// marker channel), unless a read comes first. An id leaves once its
    /// markers were tried.
    completing: Mutex<Vec<String>>,
    /// `completing`'s length, read without its lock.
    queued: AtomicUsize,
    /// Tests: the timer thread writes no markers outside its passes:
    /// neither the queue's nor, at a metadata change, those of prepared
    /// transactions (a change it sees late would otherwise complete a
    /// transaction the test holds prepared).
    #[cfg(test)]
    pub(crate) hold_queue: std::sync::atomic::AtomicBool,
    /// Tests: producers' sender threads leave the queue alone.
    #[cfg(test)]
    pub(crate) hold_senders: std::sync::atomic::AtomicBool,
    /// The clock time of the last timer pass, for tests to wait on.
    passes: (Mutex<Option<i64>>, Condvar),
}

impl std::fmt::Debug for TransactionCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionCoordinator")
            .field("ids", &self.ids.lock().len())
            .finish_non_exhaustive()
    }
}

impl Default for TransactionCoordinator {
    fn default() -> Self {
        TransactionCoordinator {
            ids: Mutex::new(HashMap::new()),
            markers: RwLock::new(None),
            timer: Mutex::new(None),
            completing: Mutex::new(Vec::new()),
            queued: AtomicUsize::new(0),
            #[cfg(test)]
            hold_queue: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            hold_senders: std::sync::atomic::AtomicBool::new(false),
            passes: (Mutex::new(None), Condvar::new()),
        }
    }
}

impl TransactionCoordinator {
    fn entry(&self, id: &str) -> Option<Arc<Mutex<Entry>>> {
        self.ids.lock().get(id).cloned()
    }

    fn entry_or_new(&self, id: &str) -> Arc<Mutex<Entry>> {
        self.ids.lock().entry(id.to_string()).or_default().clone()
    }
}

/// The configs of `__transaction_state` (Kafka's
/// `transaction.state.log.*` defaults): compacted, 100 MiB segments,
/// `min.insync.replicas` from the cluster config.
fn txn_topic_config(min_isr: u16) -> Result<TopicConfig> {
    TopicConfig::new()
        .cleanup_policy(CleanupPolicy::Compact)
        .segment_bytes(100 * 1024 * 1024)?
        .min_insync_replicas(min_isr)
}

fn check_transactional_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::InvalidArgument(
            "transactional.id must not be empty".into(),
        ));
    }
    if id.len() > i16::MAX as usize {
        return Err(Error::InvalidArgument(format!(
            "transactional.id is longer than {} bytes",
            i16::MAX
        )));
    }
    Ok(())
}

/// Kafka's answer for a request that cannot reach the transaction log: a
/// retriable failure of its partition (no leader, too few in-sync
/// replicas) is `COORDINATOR_NOT_AVAILABLE`.
fn unavailable(id: &str, e: Error) -> Error {
    if e.is_retriable() {
        Error::CoordinatorNotAvailable {
            group: id.to_string(),
            reason: format!("{TXN_TOPIC}: {e}"),
        }
    } else {
        e
    }
}

fn refusal(id: &str, producer_id: i64, r: TxnRefusal) -> Error {
    match r {
        TxnRefusal::ProducerFenced { epoch, current } => Error::ProducerFenced {
            transactional_id: id.to_string(),
            epoch,
            current,
        },
        TxnRefusal::InvalidProducerIdMapping => Error::InvalidProducerIdMapping {
            transactional_id: id.to_string(),
            producer_id,
        },
        TxnRefusal::ConcurrentTransactions => Error::ConcurrentTransactions {
            transactional_id: id.to_string(),
        },
        TxnRefusal::InvalidTxnState(_) => Error::InvalidTxnState { producer_id },
    }
}

impl ClusterInner {
    /// The `__transaction_state` topic, created on first use.
    ///
    /// # Errors
    /// The retriable [`Error::CoordinatorNotAvailable`] if it has to be
    /// created while fewer brokers are live than its replication factor.
    fn txn_topic(&self, id: &str) -> Result<Arc<TopicState>> {
        match self.topic_state(TXN_TOPIC) {
            Ok(state) => Ok(state),
            Err(Error::UnknownTopicOrPartition { .. }) => {
                let topic = NewTopic::new(
                    TXN_TOPIC,
                    self.config.transaction_state_log_num_partitions(),
                )
                .replication_factor(self.config.transaction_state_log_replication_factor())
                .config(txn_topic_config(
                    self.config.transaction_state_log_min_isr(),
                )?);
                self.create_topic(topic, true, true).map_err(|e| match e {
                    Error::InvalidReplicationFactor { reason, .. } => {
                        Error::CoordinatorNotAvailable {
                            group: id.to_string(),
                            reason: format!("{TXN_TOPIC} cannot be created yet: {reason}"),
                        }
                    }
                    e => e,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The broker leading the `__transaction_state` partition of
    /// `transactional_id` (its transaction coordinator, as FindCoordinator
    /// answers), creating the topic on first use; `None` while the
    /// partition has no leader.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an invalid transactional id; the
    /// retriable [`Error::CoordinatorNotAvailable`] if the topic cannot be
    /// created yet.
    #[cfg_attr(
        not(feature = "server"),
        allow(dead_code, reason = "for the wire listener")
    )]
    pub(crate) fn txn_coordinator(&self, transactional_id: &str) -> Result<Option<u32>> {
        check_transactional_id(transactional_id)?;
        let topic = self.txn_topic(transactional_id)?;
        Ok(topic.leader(partition_for_transactional_id(
            transactional_id,
            topic.partition_count(),
        )))
    }

    /// The partition of `__transaction_state` holding `id`, and its leader
    /// epoch (the coordinator epoch markers carry).
    fn txn_partition(&self, id: &str) -> Result<(crate::replica::TopicIdPartition, i32)> {
        // Not `topic_state`, which refuses once the cluster closes: the
        // close appends the completed states not appended yet.
        let topic = self.topics.read().get(TXN_TOPIC).cloned().ok_or_else(|| {
            Error::UnknownTopicOrPartition {
                topic: TXN_TOPIC.to_string(),
                partition: None,
            }
        })?;
        let p = partition_for_transactional_id(id, topic.partition_count());
        let key = topic.key(p)?;
        let epoch = topic
            .assignments
            .read()
            .get(p as usize)
            .map_or(0, |a| a.leader_epoch);
        Ok((key, epoch))
    }

    /// Appends `meta` as `id`'s state, acknowledged by every in-sync
    /// replica, and takes it as the entry's state. A completed state the
    /// entry has not appended yet goes first, in the same batch.
    fn record_txn_state(&self, id: &str, entry: &mut Entry, meta: TxnMetadata) -> Result<()> {
        self.write_txn_record(id, entry, Some(&meta))?;
        entry.set(meta);
        Ok(())
    }

    /// Appends `id`'s record — a state, or a tombstone (`None`) when the
    /// id expires — acknowledged by every in-sync replica, after the
    /// entry's unwritten completed state if it has one (one batch, so
    /// both or neither are stored).
    fn write_txn_record(
        &self,
        id: &str,
        entry: &mut Entry,
        value: Option<&TxnMetadata>,
    ) -> Result<()> {
        let Entry {
            meta,
            unwritten,
            scratch,
            ..
        } = entry;
        let scratch = scratch.get_or_insert_with(RecordScratch::default);
        if scratch.key.is_empty() {
            txn_log::encode_key_into(id, &mut scratch.key).map_err(|e| {
                scratch.key.clear();
                Error::InvalidArgument(e)
            })?;
        }
        let (key, _) = self.txn_partition(id).map_err(|e| unavailable(id, e))?;
        let RecordScratch {
            key: key_bytes,
            value: value_bytes,
            builder,
        } = scratch;
        builder.clear();
        let now = self.clock().now_ms();
        if let (Some(pending), true) = (meta.as_ref(), *unwritten) {
            value_bytes.clear();
            txn_log::encode_metadata_into(pending, value_bytes).map_err(Error::InvalidArgument)?;
            builder.append(now, Some(key_bytes), Some(value_bytes), &[]);
        }
        let value = match value {
            Some(value) => {
                value_bytes.clear();
                txn_log::encode_metadata_into(value, value_bytes)
                    .map_err(Error::InvalidArgument)?;
                Some(value_bytes.as_slice())
            }
            None => None,
        };
        builder.append(now, Some(key_bytes), value, &[]);
        // Built in the builder's own buffer, which the append stamps with
        // offsets in place (no copy).
        let appended = builder.finish().map_err(Error::from).and_then(|batch| {
            self.replicas_for(&key)
                .and_then(|r| r.append(&key, batch, AppendOrigin::TrustedKeyed, AppendAcks::All))
                .map_err(|e| unavailable(id, e))
        });
        if builder.buffer_capacity() > SCRATCH_KEEP_BYTES {
            *builder = BatchBuilder::with_capacity(Compression::None, 256);
        }
        if value_bytes.capacity() > SCRATCH_KEEP_BYTES {
            *value_bytes = Vec::new();
        }
        appended?;
        entry.unwritten = false;
        Ok(())
    }

    /// Appends the entry's completed state if it is not appended yet.
    fn write_unwritten(&self, id: &str, entry: &mut Entry) -> Result<()> {
        let Some(meta) = entry.meta.clone().filter(|_| entry.unwritten) else {
            return Ok(());
        };
        entry.unwritten = false;
        let written = self.write_txn_record(id, entry, Some(&meta));
        if written.is_err() {
            entry.unwritten = true;
        }
        written
    }

    /// Appends every completed state not appended yet: `Cluster::close`
    /// runs this once the timer stopped, while the logs are open, so a
    /// reopen finds each transaction complete. A failure is left to the
    /// replay, which completes a transaction it finds prepared again.
    pub(crate) fn write_unwritten_txn_states(&self) {
        for (id, entry) in self.txn_entries() {
            let _ = self.write_unwritten(&id, &mut entry.lock());
        }
    }

    /// Writes the markers a `Prepare*` state still lacks (a marker of a
    /// `__consumer_offsets` partition ends the transaction's offsets
    /// there), then records the completed state. Nothing to do
    /// in any other state.
    fn finish_txn(&self, id: &str, entry: &mut Entry) -> Result<()> {
        let Some((status, producer_id, epoch)) = entry
            .meta
            .as_ref()
            .map(|m| (m.status, m.producer_id, m.epoch))
        else {
            return Ok(());
        };
        let commit = match status {
            TxnStatus::PrepareCommit => true,
            TxnStatus::PrepareAbort => false,
            _ => return Ok(()),
        };
        let (_, coordinator_epoch) = self.txn_partition(id).map_err(|e| unavailable(id, e))?;
        let writer =
            self.txn.markers.read().clone().ok_or_else(|| {
                Error::Internal("no transaction marker writer is installed".into())
            })?;
        // In order, each partition counted as marked once its marker is
        // written (or its partition is gone): a failure leaves it and the
        // ones after it for the next try.
        let Entry { meta, marked, .. } = &mut *entry;
        let Some(meta) = meta.as_ref() else {
            return Ok(());
        };
        for (topic, partition) in meta.partitions.iter().skip(*marked) {
            match writer.write_marker(
                topic,
                *partition,
                producer_id,
                epoch,
                commit,
                coordinator_epoch,
            ) {
                Ok(()) => {}
                // The partition is gone: nothing to mark.
                Err(Error::UnknownTopicOrPartition { .. }) => {}
                Err(e) => return Err(e),
            }
            if topic == OFFSETS_TOPIC {
                // Kafka's `scheduleHandleTxnCompletion`: the group
                // coordinator applies (or drops) the transaction's offsets.
                self.complete_txn_offsets(*partition, producer_id, commit);
            }
            *marked += 1;
        }
        let done = meta
            .complete(self.clock().now_ms())
            .ok_or_else(|| Error::Internal("a prepared transaction did not complete".into()))?;
        // Appended with the id's next record (or by the timer, or at
        // close): every marker is written, so the outcome stands whether
        // or not a replay finds this state.
        entry.set(done);
        entry.unwritten = true;
        Ok(())
    }

    /// Kafka's `InitProducerId` for a transactional producer
    /// (`init_transactions`): a producer id and a new epoch for
    /// `transactional_id`. A new id gets a fresh producer id at epoch 0;
    /// a known one its epoch bumped, which fences the producer holding the
    /// older epoch (its requests get [`Error::ProducerFenced`]). A
    /// transaction the older producer left open is aborted first; one
    /// still completing is completed first.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty or too long id;
    /// [`Error::InvalidTransactionTimeout`] for a timeout not in
    /// `1..=transaction.max.timeout.ms`; the retriable
    /// [`Error::CoordinatorNotAvailable`] (the transaction log cannot be
    /// written now) and [`Error::ConcurrentTransactions`] (the previous
    /// transaction's markers cannot be written now); [`Error::Closed`];
    /// [`Error::Io`] from the metadata log (a new producer id block).
    pub(crate) fn init_producer_id(
        &self,
        transactional_id: &str,
        transaction_timeout_ms: i32,
    ) -> Result<(i64, i16)> {
        self.init_producer_id_expecting(transactional_id, transaction_timeout_ms, None)
    }

    /// [`init_producer_id`](Self::init_producer_id) from a producer that
    /// holds `expected` (its producer id and epoch) and bumps its epoch
    /// after an abortable error (KIP-360): refused with
    /// [`Error::ProducerFenced`] unless the id's current producer id and
    /// epoch are `expected` (or the id is unknown, its state expired), so
    /// a zombie cannot fence the instance that replaced it. Kafka also
    /// accepts the epoch before the current one, for a bump whose response
    /// was lost; no response is lost in process.
    pub(crate) fn init_producer_id_expecting(
        &self,
        transactional_id: &str,
        transaction_timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16)> {
        let id = transactional_id;
        check_transactional_id(id)?;
        self.check_open()?;
        if transaction_timeout_ms < 1
            || i64::from(transaction_timeout_ms) > self.config.txn_max_timeout_ms
        {
            return Err(Error::InvalidTransactionTimeout {
                timeout_ms: i64::from(transaction_timeout_ms),
                max_ms: self.config.txn_max_timeout_ms,
            });
        }
        self.txn_topic(id)?;
        let entry = self.txn.entry_or_new(id);
        let mut entry = entry.lock();
        let concurrent = || Error::ConcurrentTransactions {
            transactional_id: id.to_string(),
        };
        if let (Some((producer_id, epoch)), Some(current)) = (expected, entry.meta.as_ref())
            && (current.producer_id, current.epoch) != (producer_id, epoch)
        {
            return Err(Error::ProducerFenced {
                transactional_id: id.to_string(),
                epoch,
                current: current.epoch,
            });
        }
        // Two rounds at most: a fencing abort, then the init proper.
        for _ in 0..2 {
            let current = match entry.meta.clone() {
                Some(meta) => meta,
                None => TxnMetadata::new(
                    self.allocate_producer_id()?,
                    transaction_timeout_ms,
                    self.clock().now_ms(),
                ),
            };
            if matches!(
                current.status,
                TxnStatus::PrepareCommit | TxnStatus::PrepareAbort
            ) {
                self.finish_txn(id, &mut entry).map_err(|_| concurrent())?;
                continue;
            }
            let mut failed = None;
            let outcome = current
                .init(transaction_timeout_ms, self.clock().now_ms(), || {
                    // The epoch is exhausted: a new producer id.
                    self.allocate_producer_id().unwrap_or_else(|e| {
                        failed = Some(e);
                        -1
                    })
                })
                .map_err(|r| refusal(id, current.producer_id, r))?;
            if let Some(e) = failed {
                return Err(e);
            }
            match outcome {
                InitOutcome::Ready(next) => {
                    let answer = (next.producer_id, next.epoch);
                    self.record_txn_state(id, &mut entry, next)?;
                    return Ok(answer);
                }
                InitOutcome::FenceAndAbort(fenced) => {
                    self.record_txn_state(id, &mut entry, fenced)?;
                    self.finish_txn(id, &mut entry).map_err(|_| concurrent())?;
                }
            }
        }
        Err(concurrent())
    }

    /// The entry of a known transactional id, checked against the
    /// request's producer id and epoch.
    fn txn_entry(&self, id: &str, producer_id: i64) -> Result<Arc<Mutex<Entry>>> {
        check_transactional_id(id)?;
        self.check_open()?;
        self.txn
            .entry(id)
            .ok_or_else(|| refusal(id, producer_id, TxnRefusal::InvalidProducerIdMapping))
    }

    /// Adds `partitions` to `transactional_id`'s transaction (Kafka's
    /// `AddPartitionsToTxn`, sent before the producer's first batch to a
    /// partition), opening the transaction if none is open. Recorded
    /// before it returns; adding partitions already in the transaction
    /// writes nothing.
    ///
    /// # Errors
    /// [`Error::ProducerFenced`], [`Error::InvalidProducerIdMapping`];
    /// the retriable [`Error::ConcurrentTransactions`] while the previous
    /// transaction completes (and its markers cannot be written now) and
    /// [`Error::CoordinatorNotAvailable`];
    /// [`Error::UnknownTopicOrPartition`] for a partition that does not
    /// exist; [`Error::InvalidTopic`] for an internal topic.
    pub(crate) fn add_partitions_to_txn(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[TopicPartition],
    ) -> Result<()> {
        crate::timeline::timed(Stage::AddPartitions, || {
            let mut added = Vec::with_capacity(partitions.len());
            for tp in partitions {
                self.topic_state_for_append(&tp.topic)?.key(tp.partition)?;
                added.push((tp.topic.clone(), tp.partition));
            }
            self.add_to_txn(transactional_id, producer_id, producer_epoch, &added)
        })
    }

    /// Adds `group`'s `__consumer_offsets` partition to the transaction
    /// (Kafka's `AddOffsetsToTxn`, from `send_offsets_to_transaction`):
    /// the group's offsets committed in the transaction become visible
    /// with its COMMIT marker there.
    ///
    /// # Errors
    /// As [`ClusterInner::add_partitions_to_txn`]; [`Error::InvalidArgument`]
    /// for an invalid group id.
    pub(crate) fn add_offsets_to_txn(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        group: &str,
    ) -> Result<()> {
        super::coordinator::check_group(group)?;
        let topic = self.offsets_topic(group)?;
        let partition = partition_for_group(group, topic.partition_count());
        self.add_to_txn(
            transactional_id,
            producer_id,
            producer_epoch,
            &[(OFFSETS_TOPIC.to_string(), partition)],
        )
    }

    fn add_to_txn(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, u32)],
    ) -> Result<()> {
        let entry = self.txn_entry(id, producer_id)?;
        let mut entry = entry.lock();
        let no_mapping = || refusal(id, producer_id, TxnRefusal::InvalidProducerIdMapping);
        let add = |entry: &Entry| {
            entry.meta.as_ref().ok_or_else(no_mapping).map(|meta| {
                meta.add_partitions(producer_id, epoch, partitions, self.clock().now_ms())
            })
        };
        let mut next = add(&entry)?;
        if matches!(next, Err(TxnRefusal::ConcurrentTransactions)) {
            // The previous transaction is completing: finish it now, then
            // the request proceeds.
            self.finish_txn(id, &mut entry)
                .map_err(|_| refusal(id, producer_id, TxnRefusal::ConcurrentTransactions))?;
            next = add(&entry)?;
        }
        let meta = entry.meta.as_ref().ok_or_else(no_mapping)?;
        if meta.status == TxnStatus::Ongoing
            && partitions.iter().all(|p| meta.partitions.contains(p))
        {
            meta.check_producer(producer_id, epoch)
                .map_err(|r| refusal(id, producer_id, r))?;
            return Ok(());
        }
        let next = next.map_err(|r| refusal(id, producer_id, r))?;
        self.record_txn_state(id, &mut entry, next)?;
        // `Cluster::wait_until` re-checks after a transaction's partitions
        // change (the metadata watchers need not wake).
        self.wake_state_watchers();
        Ok(())
    }

    /// [`ClusterInner::txn_offset_commit_as`] with a bare group id.
    #[cfg(test)]
    pub(crate) fn txn_offset_commit(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        group: &str,
        offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>,
    ) -> Result<()> {
        self.txn_offset_commit_as(
            transactional_id,
            producer_id,
            producer_epoch,
            group,
            None,
            offsets,
        )
    }

    /// Kafka's `TxnOffsetCommit` (from `send_offsets_to_transaction`,
    /// after [`ClusterInner::add_offsets_to_txn`]): `offsets` of `group`
    /// are appended to its `__consumer_offsets` partition in the open
    /// transaction, pending, and become the group's committed offsets when
    /// it commits (dropped if it aborts); see the group coordinator's
    /// module docs. With `member` (its member id and generation, KIP-447)
    /// the group checks it as for a member's own commit, under the
    /// group's lock (taken under this id's entry lock; nothing takes an
    /// entry lock under it).
    ///
    /// # Errors
    /// [`Error::CommitFailed`] for a member no longer in the group or a
    /// stale generation, the retriable [`Error::RebalanceInProgress`];
    /// [`Error::ProducerFenced`], [`Error::InvalidProducerIdMapping`];
    /// [`Error::InvalidTxnState`] if no transaction is open or the group's
    /// offsets partition was not added to it; the offsets' own errors, as
    /// a plain commit's ([`Error::UnknownTopicOrPartition`],
    /// [`Error::InvalidArgument`]); and those of the acks=all append, as a
    /// plain commit's (the retriable [`Error::NotEnoughReplicas`],
    /// [`Error::NotLeaderOrFollower`]; nothing is pending then).
    pub(crate) fn txn_offset_commit_as(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        group: &str,
        member: Option<(&str, i32)>,
        offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>,
    ) -> Result<()> {
        let ids = (transactional_id, producer_id, producer_epoch);
        self.txn_offset_commit_checked(ids, group, offsets, |append| match member {
            // KIP-447: under the group's lock, as a member's own commit,
            // so the member and generation cannot change meanwhile.
            Some(member) => {
                let now = self.clock().now_ms();
                self.groups.commit(group, Some(member), now, append)
            }
            // A bare group id: no membership check (Kafka's generation -1).
            None => append(),
        })
    }

    /// [`ClusterInner::txn_offset_commit_as`] from a Kafka client on the
    /// wire: `member` is (member id, `group.instance.id`, generation), and
    /// a refused member gets Kafka's errors ([`Error::UnknownMemberId`],
    /// [`Error::IllegalGeneration`], [`Error::FencedInstanceId`],
    /// [`Error::RebalanceInProgress`]) rather than the in-process
    /// consumer's [`Error::CommitFailed`].
    ///
    /// # Errors
    /// As [`ClusterInner::txn_offset_commit_as`], with the member's errors
    /// above.
    #[cfg_attr(
        not(feature = "server"),
        allow(dead_code, reason = "for the wire listener")
    )]
    pub(crate) fn txn_offset_commit_wire(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        group: &str,
        member: Option<(&str, Option<&str>, i32)>,
        offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>,
    ) -> Result<()> {
        let ids = (transactional_id, producer_id, producer_epoch);
        self.txn_offset_commit_checked(ids, group, offsets, |append| match member {
            Some((member_id, instance, generation)) => {
                let now = self.clock().now_ms();
                self.groups
                    .commit_wire(group, member_id, instance, generation, now, append)
            }
            None => append(),
        })
    }

    /// The checks of a `TxnOffsetCommit` for the transaction
    /// (`ids`: transactional id, producer id, epoch), then `under_group`,
    /// which checks the member and runs the append it is given.
    fn txn_offset_commit_checked(
        &self,
        (transactional_id, producer_id, producer_epoch): (&str, i64, i16),
        group: &str,
        offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>,
        under_group: impl FnOnce(&mut dyn FnMut() -> Result<()>) -> Result<()>,
    ) -> Result<()> {
        let id = transactional_id;
        super::coordinator::check_group(group)?;
        self.check_commit_offsets(offsets)?;
        let entry = self.txn_entry(id, producer_id)?;
        let entry = entry.lock();
        let meta = entry
            .meta
            .as_ref()
            .ok_or_else(|| refusal(id, producer_id, TxnRefusal::InvalidProducerIdMapping))?;
        meta.check_producer(producer_id, producer_epoch)
            .map_err(|r| refusal(id, producer_id, r))?;
        // No `__consumer_offsets` yet: the group's partition cannot be in
        // the transaction.
        let added = self.topic_state(OFFSETS_TOPIC).is_ok_and(|topic| {
            let partition = partition_for_group(group, topic.partition_count());
            meta.partitions
                .contains(&(OFFSETS_TOPIC.to_string(), partition))
        });
        if meta.status != TxnStatus::Ongoing || !added {
            return Err(Error::InvalidTxnState { producer_id });
        }
        // Under the entry lock: the transaction cannot end meanwhile.
        under_group(&mut || self.commit_txn_offsets(group, producer_id, producer_epoch, offsets))
    }

    /// Kafka's `EndTxn`: commits (or aborts) `transactional_id`'s open
    /// transaction. Returns once the decision (`PrepareCommit` /
    /// `PrepareAbort`) is recorded, as Kafka's coordinator answers; the
    /// markers are written next by whom `markers` names (see the module
    /// docs), or first by a read in the process
    /// ([`ClusterInner::complete_answered_txns`]) or the id's next
    /// request. Retrying an end that completed the same way succeeds
    /// with nothing to do.
    ///
    /// # Errors
    /// [`Error::ProducerFenced`] (a newer producer, or the coordinator
    /// aborted the transaction at its timeout),
    /// [`Error::InvalidProducerIdMapping`]; [`Error::InvalidTxnState`]
    /// when no transaction is open or a retry asks the other outcome; the
    /// retriable [`Error::ConcurrentTransactions`] (a retry of this end
    /// while its markers still cannot be written) and
    /// [`Error::CoordinatorNotAvailable`].
    pub(crate) fn end_txn(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        markers: Markers,
    ) -> Result<()> {
        crate::timeline::timed(Stage::EndTxn, || {
            let id = transactional_id;
            let entry = self.txn_entry(id, producer_id)?;
            let mut entry = entry.lock();
            let ended = entry
                .meta
                .as_ref()
                .ok_or_else(|| refusal(id, producer_id, TxnRefusal::InvalidProducerIdMapping))?
                .end(producer_id, producer_epoch, commit, self.clock().now_ms());
            match ended {
                Ok(None) => Ok(()),
                Ok(Some(prepared)) => {
                    self.record_txn_state(id, &mut entry, prepared)?;
                    // Decided: the markers follow the answer, as Kafka's
                    // marker channel writes them; with no timer thread (the
                    // cluster is closing) they are written here. Markers that
                    // fail are retried later either way.
                    if markers == Markers::Inline || !self.queue_markers(id, markers) {
                        let _ = self.finish_txn(id, &mut entry);
                    }
                    Ok(())
                }
                Err(TxnRefusal::ConcurrentTransactions) => self
                    .finish_txn(id, &mut entry)
                    .map_err(|_| refusal(id, producer_id, TxnRefusal::ConcurrentTransactions)),
                Err(r) => Err(refusal(id, producer_id, r)),
            }
        })
    }

    /// [`ClusterInner::end_txn`] writing the markers before it returns
    /// (a marker that fails leaves the transaction prepared), so that a
    /// test stepping the coordinator sees no marker land between its
    /// steps.
    #[cfg(test)]
    pub(crate) fn end_txn_marked(
        &self,
        id: &str,
        pid: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<()> {
        self.end_txn(id, pid, epoch, commit, Markers::Inline)
    }

    /// One pass of the coordinator's timer at the clock's now. With
    /// `due.abort`: completes prepared transactions whose markers are
    /// missing, and aborts (with an epoch bump) transactions open longer
    /// than their timeout. With `due.expire`: removes the transactional
    /// ids past `transactional.id.expiration.ms` (see
    /// [`ClusterInner::expire_transactional_id`]). Failures are left for
    /// the next pass.
    pub(crate) fn txn_timer_pass(&self, due: TimerDue) {
        let now = self.clock().now_ms();
        let entries = self.txn_entries();
        for (id, entry) in entries {
            if self.check_open().is_err() {
                break;
            }
            let mut guard = entry.lock();
            if due.abort
                && let Some(meta) = guard.meta.clone()
            {
                // A timed-out transaction is fenced first; its markers
                // (or a prepared one's missing ones) are written after.
                let ready = match meta.expire(now) {
                    Some(fenced) => self.record_txn_state(&id, &mut guard, fenced).is_ok(),
                    None => true,
                };
                if ready {
                    let _ = self.finish_txn(&id, &mut guard);
                }
                // A completed state waits for the id's next record no
                // longer than a pass.
                let _ = self.write_unwritten(&id, &mut guard);
            }
            if due.expire {
                self.expire_transactional_id(&id, &entry, &mut guard, now);
            }
        }
        let (last, changed) = &self.txn.passes;
        *last.lock() = Some(now);
        changed.notify_all();
        // `Cluster::wait_until` re-checks its condition after each pass
        // (a transaction it waits on may have timed out).
        self.wake_watchers();
    }

    /// Queues `id`'s markers and, for [`Markers::Timer`], wakes the timer
    /// thread; `false` when no timer thread runs (before it starts or once
    /// it stopped: nothing would be sure to write them).
    fn queue_markers(&self, id: &str, markers: Markers) -> bool {
        let timer = self.txn.timer.lock();
        let Some(timer) = timer.as_ref() else {
            return false;
        };
        {
            let mut completing = self.txn.completing.lock();
            completing.push(id.to_string());
            self.txn.queued.store(completing.len(), Ordering::Release);
        }
        if markers == Markers::Timer {
            // Full: a wake-up is pending already.
            let _ = timer.markers.try_send(());
        }
        true
    }

    /// Writes the markers of the transactions `end_txn` queued (on the
    /// timer thread, before a read_committed read — see
    /// [`ClusterInner::complete_answered_txns`] — and at close). A
    /// transaction another request completed meanwhile has nothing left
    /// to do; one whose markers fail stays prepared for the timer's next
    /// pass or a metadata change. An id leaves the queue only after its
    /// entry lock was taken: a second caller meanwhile waits on that lock
    /// and finds the markers written. Wakes `Cluster::wait_until` (only)
    /// when a transaction completed.
    pub(crate) fn complete_queued_txns(&self) {
        let ids = self.txn.completing.lock().clone();
        let mut completed = false;
        for id in ids {
            if let Some(entry) = self.txn.entry(&id) {
                let mut guard = entry.lock();
                let prepared = guard.meta.as_ref().is_some_and(|m| {
                    matches!(m.status, TxnStatus::PrepareCommit | TxnStatus::PrepareAbort)
                });
                if prepared {
                    completed |= self.finish_txn(&id, &mut guard).is_ok();
                }
            }
            let mut completing = self.txn.completing.lock();
            if let Some(i) = completing.iter().position(|queued| *queued == id) {
                completing.swap_remove(i);
            }
            self.txn.queued.store(completing.len(), Ordering::Release);
        }
        // Only `Cluster::wait_until`: the metadata watchers (the timer
        // thread among them) have nothing to do with a completion, and
        // waking them for every transaction cost a wake-up each.
        if completed {
            self.wake_state_watchers();
        }
    }

    /// [`ClusterInner::complete_answered_txns`] on a producer's sender
    /// thread, after its producer ended a transaction.
    pub(crate) fn complete_txns_for_sender(&self) {
        #[cfg(test)]
        if self.txn.hold_senders.load(Ordering::SeqCst) {
            return;
        }
        crate::timeline::timed(Stage::Markers, || self.complete_answered_txns());
    }

    /// Writes the markers of every transaction whose end was answered and
    /// whose markers the timer thread has not written yet, so that a
    /// read_committed read in this process sees every commit answered
    /// before it started (Kafka promises only that the markers follow).
    /// One atomic load when none wait.
    pub(crate) fn complete_answered_txns(&self) {
        if self.txn.queued.load(Ordering::Acquire) > 0 {
            self.complete_queued_txns();
        }
    }

    /// Every transactional id and its entry, taken from `ids` at once.
    fn txn_entries(&self) -> Vec<(String, Arc<Mutex<Entry>>)> {
        self.txn
            .ids
            .lock()
            .iter()
            .map(|(id, e)| (id.clone(), e.clone()))
            .collect()
    }

    /// Writes the missing markers of every prepared transaction (Kafka's
    /// marker channel resends a marker as soon as its partition has a
    /// leader again): the timer runs this after each metadata change, so
    /// a partition that had no leader gets its marker when one is
    /// elected, not at the next timer pass. Wakes `Cluster::wait_until`
    /// when a transaction completed.
    pub(crate) fn complete_prepared_txns(&self) {
        let entries = self.txn_entries();
        let mut completed = false;
        for (id, entry) in entries {
            if self.check_open().is_err() {
                return;
            }
            let mut guard = entry.lock();
            let prepared = guard.meta.as_ref().is_some_and(|m| {
                matches!(m.status, TxnStatus::PrepareCommit | TxnStatus::PrepareAbort)
            });
            if prepared {
                completed |= self.finish_txn(&id, &mut guard).is_ok();
            }
        }
        if completed {
            self.wake_watchers();
        }
    }

    /// Kafka's `removeExpiredTransactionalIds` for one id, under its entry
    /// lock (`guard`, of `entry`): if its state has expired
    /// ([`TxnMetadata::id_expired`]), a tombstone is appended to its
    /// `__transaction_state` partition (acks=all), then the id is
    /// forgotten. A failed append keeps the state as it was, for the next
    /// pass. An entry without a state (expired, or a first init that
    /// failed) leaves the map unless another request holds it: taking an
    /// entry from the map needs `ids`, taken here under the entry lock, so
    /// when only the map and this pass hold the entry nobody can reach it
    /// meanwhile.
    fn expire_transactional_id(
        &self,
        id: &str,
        entry: &Arc<Mutex<Entry>>,
        guard: &mut Entry,
        now: i64,
    ) {
        if let Some(meta) = &guard.meta {
            if !meta.id_expired(now, self.config.transactional_id_expiration_ms) {
                return;
            }
            // Kafka's `prepareDead`: no request can see the id meanwhile
            // (its entry lock is held), so the state goes from the last
            // recorded one to removed once the tombstone is written.
            if self.write_txn_record(id, guard, None).is_err() {
                return;
            }
            guard.meta = None;
            guard.marked = 0;
        }
        let mut ids = self.txn.ids.lock();
        // The map's reference and this pass's: nobody else holds it.
        if ids.get(id).is_some_and(|e| Arc::ptr_eq(e, entry)) && Arc::strong_count(entry) == 2 {
            ids.remove(id);
        }
    }

    /// Replays `__transaction_state`, if it exists, into the coordinator.
    /// Unreadable records are skipped and returned (as
    /// [`ClusterInner::load_offsets`] does); a damaged batch is
    /// [`Error::Corrupt`]. Transactions found prepared are completed by
    /// the timer.
    pub(crate) fn load_transactions(&self) -> Result<Vec<SkippedRecord>> {
        let Ok(topic) = self.topic_state(TXN_TOPIC) else {
            return Ok(Vec::new());
        };
        let mut states: HashMap<String, TxnMetadata> = HashMap::new();
        let mut skipped = Vec::new();
        for p in 0..topic.partition_count() {
            let key = topic.key(p)?;
            let replicas = self.replicas_for(&key)?;
            let offsets = replicas.offsets(&key)?;
            let mut bad = Vec::new();
            replay_records(
                Path::new(&format!("{TXN_TOPIC}-{p}")),
                offsets.log_start,
                offsets.high_watermark,
                |offset| {
                    let fetched =
                        replicas.fetch(&key, offset, 1 << 20, FetchBound::HighWatermark)?;
                    Ok(fetched.records().clone())
                },
                |_, key, value| {
                    let id = txn_log::decode_key(key.ok_or("a record without a key")?)?;
                    match value {
                        Some(value) => {
                            let v = txn_log::decode_value(value)?;
                            states.insert(id, TxnMetadata::from_log_value(&v));
                        }
                        None => {
                            states.remove(&id);
                        }
                    }
                    Ok(())
                },
                Some(&mut bad),
            )?;
            skipped.extend(bad.into_iter().map(|(offset, reason)| SkippedRecord {
                partition: TopicPartition::new(TXN_TOPIC, p),
                offset,
                reason,
            }));
        }
        let mut ids = self.txn.ids.lock();
        for (id, meta) in states {
            let mut entry = Entry::default();
            entry.set(meta);
            ids.insert(id, Arc::new(Mutex::new(entry)));
        }
        Ok(skipped)
    }

    /// Installs the writer of transaction markers (the replica layer's, or
    /// a test's).
    pub(crate) fn set_marker_writer(&self, writer: Arc<dyn MarkerWriter>) {
        *self.txn.markers.write() = Some(writer);
    }

    /// `transactional_id`'s recorded state, if it has one.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "read by tests until a describe API exists")
    )]
    pub(crate) fn txn_metadata(&self, transactional_id: &str) -> Option<TxnMetadata> {
        self.txn.entry(transactional_id)?.lock().meta.clone()
    }

    /// Starts the coordinator's timer thread.
    pub(crate) fn start_txn_timer(self: &Arc<Self>) -> Result<()> {
        let timer = TxnTimer::spawn(
            super::WeakCluster::new(self),
            self.config.txn_abort_interval_ms,
            self.config.txn_remove_expired_interval_ms,
        )?;
        *self.txn.timer.lock() = Some(timer);
        Ok(())
    }

    /// Stops the timer thread (at close), waiting for a pass in progress.
    pub(crate) fn stop_txn_timer(&self) {
        let timer = self.txn.timer.lock().take();
        if let Some(timer) = timer {
            timer.stop();
        }
        // Waiters see the cluster closed.
        self.txn.passes.1.notify_all();
    }

    /// Waits until a timer pass at clock time `at_ms` or later has
    /// finished; `false` after `guard` of real time or at close.
    #[cfg(test)]
    pub(crate) fn wait_for_txn_pass(&self, at_ms: i64, guard: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + guard;
        let (last, changed) = &self.txn.passes;
        let mut last = last.lock();
        loop {
            if last.is_some_and(|t| t >= at_ms) {
                return true;
            }
            if self.check_open().is_err() || changed.wait_until(&mut last, deadline).timed_out() {
                return last.is_some_and(|t| t >= at_ms);
            }
        }
    }
}

/// Who writes the markers of a transaction `end_txn` decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Markers {
    /// The timer thread, woken at once (a request over the wire).
    Timer,
    /// The caller's producer's sender thread, which the producer wakes
    /// ([`ClusterInner::complete_txns_for_sender`]); the timer thread is
    /// not woken (a third thread woken per transaction cost more than it
    /// saved on two cores).
    Sender,
    /// `end_txn` itself, before it returns: a lingering producer's
    /// `commit_transaction` on its calling thread, and tests.
    Inline,
}

/// What a pass of the coordinator's timer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimerDue {
    /// Abort timed-out transactions and retry missing markers
    /// (`transaction.abort.timed.out.transaction.cleanup.interval.ms`).
    pub(crate) abort: bool,
    /// Remove expired transactional ids
    /// (`transaction.remove.expired.transaction.cleanup.interval.ms`).
    pub(crate) expire: bool,
}

/// The coordinator's timer thread (`logbus-txn-timer`): an abort pass at
/// start (completing what the replay found prepared), then every
/// `transaction.abort.timed.out.transaction.cleanup.interval.ms` of the
/// cluster's clock; an expiration pass every
/// `transaction.remove.expired.transaction.cleanup.interval.ms`, the first
/// one interval after the start (as Kafka schedules
/// `transactionalId-expiration`). Both due at once run as one pass. It
/// waits on its stop channel, the clock's wake-ups and a timeout derived
/// from the clock, never sleeping to poll.
struct TxnTimer {
    stop: Sender<()>,
    /// Wakes the thread to write the markers `end_txn` queued.
    markers: Sender<()>,
    handle: JoinHandle<()>,
}

impl TxnTimer {
    fn spawn(
        cluster: super::WeakCluster,
        interval_ms: i64,
        expire_interval_ms: i64,
    ) -> Result<TxnTimer> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let (markers, queued) = crossbeam_channel::bounded::<()>(1);
        let (clock, root) = {
            let inner = cluster.upgrade().ok_or_else(|| {
                Error::Internal("transaction timer spawned for a dropped cluster".into())
            })?;
            (inner.clock().clone(), inner.root.clone())
        };
        let ticks = clock.subscribe();
        // Metadata changes (a partition's new leader) let missing markers
        // be written at once.
        let (changes_tx, changes) = crossbeam_channel::bounded::<()>(1);
        let mut seen_epoch = {
            let inner = cluster.upgrade().ok_or_else(|| {
                Error::Internal("transaction timer spawned for a dropped cluster".into())
            })?;
            inner.watch_metadata(&changes_tx);
            inner.metadata_epoch.load(Ordering::Acquire)
        };
        let mut abort_at = clock.now_ms();
        let mut expire_at = abort_at.saturating_add(expire_interval_ms);
        let handle = std::thread::Builder::new()
            .name("logbus-txn-timer".into())
            .spawn(move || {
                loop {
                    let now = clock.now_ms();
                    let due = TimerDue {
                        abort: now >= abort_at,
                        expire: now >= expire_at,
                    };
                    if due.abort || due.expire {
                        if due.abort {
                            abort_at = now.saturating_add(interval_ms);
                        }
                        if due.expire {
                            expire_at = now.saturating_add(expire_interval_ms);
                        }
                        let Some(inner) = cluster.upgrade() else {
                            return;
                        };
                        inner.txn_timer_pass(due);
                    }
                    let timeout = match clock.wait_hint(abort_at.min(expire_at)) {
                        Some(wait) => crossbeam_channel::after(wait),
                        None => crossbeam_channel::never(),
                    };
                    select! {
                        recv(stopped) -> _ => return,
                        recv(queued) -> _ => {
                            let Some(inner) = cluster.upgrade() else {
                                return;
                            };
                            #[cfg(test)]
                            if inner.txn.hold_queue.load(Ordering::SeqCst) {
                                continue;
                            }
                            inner.complete_queued_txns();
                        }
                        recv(ticks) -> _ => {}
                        recv(timeout) -> _ => {}
                        recv(changes) -> _ => {
                            let Some(inner) = cluster.upgrade() else {
                                return;
                            };
                            // Its own passes wake it too: only a real
                            // metadata change counts.
                            let epoch =
                                inner.metadata_epoch.load(Ordering::Acquire);
                            if epoch != seen_epoch {
                                seen_epoch = epoch;
                                #[cfg(test)]
                                if inner.txn.hold_queue.load(Ordering::SeqCst) {
                                    continue;
                                }
                                inner.complete_prepared_txns();
                            }
                        }
                    }
                }
            })
            .map_err(|e| Error::io("spawn transaction timer thread", root, e))?;
        Ok(TxnTimer {
            stop,
            markers,
            handle,
        })
    }

    /// Stops the thread and joins it (unless called on the thread itself,
    /// which happens when it held the last reference to the cluster).
    fn stop(self) {
        let _ = self.stop.try_send(());
        if self.handle.thread().id() != std::thread::current().id() {
            let _ = self.handle.join();
        }
    }
}
