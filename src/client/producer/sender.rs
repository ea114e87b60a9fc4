//! The sender thread (`logbus-producer`): takes sealed batches in seal
//! order, builds them (compression, CRC) and appends them to their
//! partitions, then completes their records. For a producer whose sending
//! threads append their own batches (`DirectAppends`, in `direct.rs`) it
//! takes only what those hand over (`Handoff`) and what is released to it
//! (lingered, stale, flushed or waited for).
//!
//! Each partition has a queue of batches waiting to be sent and a list of
//! batches sent whose `acks=all` acknowledgement has not arrived (the
//! replica manager's `DelayedProduce`). Up to
//! `max.in.flight.requests.per.connection` batches of a partition wait for
//! their acknowledgement at once, so one partition's replication round
//! trip never holds up the others; a partition's batches are completed in
//! send order (the high watermark only grows). In-flight batches keep their
//! `buffer.memory` until then.
//!
//! ## Retries
//! A batch that fails with a retriable error goes back to the front of its
//! partition's queue, together with the batches of that partition sent
//! after it (their acknowledgements are dropped: with idempotence their
//! resend is answered as a duplicate, with the original offsets), and is
//! sent again after `retry.backoff.ms` on the cluster's clock, alone, once
//! nothing of its partition is in flight (Kafka's in-order retry). A batch
//! keeps its bytes (and so its producer id, epoch and sequence) between
//! attempts. `delivery.timeout.ms` after its first record was sent, a batch
//! that is not done fails.
//!
//! ## Idempotence
//! The producer id comes from the cluster, when the first batch is built
//! (here or, with direct appends, by a sending thread: the id, epoch and
//! each partition's sequences are shared, see `PartitionShared`); each
//! partition numbers its records from 0 in the epoch it started with. A batch refused with
//! `OutOfOrderSequence` or `UnknownProducerId` while nothing before it in
//! its partition is unfinished means the partition lost (or never had) the
//! producer's earlier batches: the producer bumps its epoch (KIP-360; past
//! `i16::MAX` it takes a new producer id), renumbers that partition's
//! unfinished batches from 0 and sends them again. `InvalidProducerEpoch`
//! fails the batch.
//!
//! ## Transactions
//! A transactional batch carries its transaction's producer id and epoch
//! (from `init_transactions`; a partition numbers from 0 again when they
//! change) and the transactional flag. A producer with direct appends
//! (`linger.ms` above 0, the default) holds a transaction's sealed
//! batches as any held batch, and its commit appends them on the
//! committing thread (`Core::append_own`, adding their partitions to the
//! transaction first); this thread gets what is released to it before
//! (a whole group, lingered or stale batches, a flush), and the
//! callbacks. Without direct appends (`linger.ms` 0, injected faults) a
//! partition is added to the transaction (Kafka's `AddPartitionsToTxn`)
//! as soon as the transaction opens a batch there (`add_early`: the
//! accumulator queues it, once per partition and transaction; a refusal
//! is left to the next step), and the commit is handed to this thread
//! (`CommitJob`): once every batch sealed before it is finished, it
//! checks the transaction's state (a failed batch made it abortable, and
//! the commit fails with that batch's error), writes PrepareCommit
//! (`EndTxn`), answers the caller, and then writes the markers.
//!
//! Either way, before the first batch of a transaction to a partition is
//! sent here, the partitions waiting for that and not added yet are added
//! in one request; a retriable refusal backs them off for
//! `retry.backoff.ms`, any other fails the transaction's unsent batches.
//! No KIP-360 renumbering here: the epoch is the coordinator's, so a
//! refused sequence fails the batch. Every failed batch of a transaction
//! is reported to the transaction manager (the transaction becomes
//! abortable, or the producer fatally fenced) before the flush waiting
//! for it is woken; the unsent batches of a transaction being aborted
//! fail without being sent.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use byteorder::{BigEndian, ByteOrder};
use crossbeam_channel::{Receiver, Select};

use super::accumulator::{
    Batch, DirectAppends, EarlyAdd, Handoff, PartitionShared, SENDER_RUNNING, Sequences,
};
use super::future::Outcome;
use super::{Acks, Core, Msg};
use crate::cluster::{AppendAcks, PendingAck, TopicState};
use crate::error::{Error, Result};
use crate::format::{
    BASE_SEQUENCE_OFFSET, BatchBuilder, CRC_OFFSET, NO_PRODUCER_ID, NO_SEQUENCE,
    PRODUCER_EPOCH_OFFSET, PRODUCER_ID_OFFSET, compute_crc,
};
use crate::log::AppendInfo;
use crate::replica::{ReplicaManager, TopicIdPartition};
use crate::timeline::Stage;

/// At most this many bytes of consecutive batches of one partition are
/// written by one append (a quarter of `segment.bytes` if smaller; one batch
/// always goes alone): see [`group_limit`].
pub(super) const MAX_GROUP_BYTES: usize = 1 << 20;

/// The most bytes of consecutive batches of a partition of `topic` one
/// append takes: [`MAX_GROUP_BYTES`], or a quarter of the topic's
/// `segment.bytes` if smaller.
pub(super) fn group_limit(topic: &TopicState) -> usize {
    let segment_bytes =
        usize::try_from(topic.configs().log_config.segment_bytes()).unwrap_or(usize::MAX);
    MAX_GROUP_BYTES.min(segment_bytes / 4)
}

/// Batches appended together whose `acks=all` acknowledgement has not
/// arrived.
struct InFlight {
    batches: Vec<Batch>,
    /// Each batch's outcome once acknowledged.
    outcomes: Vec<Outcome>,
    /// `None`: acknowledged at the append already (the high watermark had
    /// passed the batches), yet completed only after the batches sent
    /// before them.
    ack: Option<PendingAck>,
}

impl InFlight {
    /// The outcome of the acknowledgement at `now`, if known.
    fn poll(&self, now: i64) -> Option<Result<()>> {
        self.ack.as_ref().map_or(Some(Ok(())), |ack| ack.poll(now))
    }
}

/// Whether the batches of a partition still in flight when some of its
/// batches failed were sent before or after those.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// The failed batches were the first in flight: the rest came after.
    BeforeInFlight,
    /// The failed batches were refused at once: the rest came before.
    AfterInFlight,
}

/// The sender's view of one partition.
struct PartitionQueue {
    topic: Arc<TopicState>,
    partition: u32,
    /// Batches to send (again), in seal order.
    waiting: VecDeque<Batch>,
    /// Batches sent, waiting for their acknowledgement, in send order.
    in_flight: VecDeque<InFlight>,
    /// Batches in `in_flight`.
    in_flight_batches: usize,
    /// Nothing is sent before this clock time (a retry's backoff).
    retry_at: i64,
    /// The partition's state shared with the sending threads (those of a
    /// producer with direct appends; the sender's own otherwise): its
    /// sequences, numbered by whoever appends a batch first (see
    /// [`PartitionShared`] for why the two never number at once).
    shared: Arc<PartitionShared>,
    /// The transaction this partition was last added to (0: none).
    added_in: u64,
    /// The epoch must be bumped and the batches renumbered before the next
    /// send.
    reset: bool,
}

impl PartitionQueue {
    fn new(topic: Arc<TopicState>, partition: u32) -> Self {
        PartitionQueue {
            topic,
            partition,
            waiting: VecDeque::new(),
            in_flight: VecDeque::new(),
            in_flight_batches: 0,
            retry_at: i64::MIN,
            shared: Arc::default(),
            added_in: 0,
            reset: false,
        }
    }

    fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.in_flight.is_empty()
    }

    /// Shares the sequences of `batch`'s partition with the sending
    /// threads, if it comes from them (every batch of a producer with
    /// direct appends does, before any is numbered here).
    fn adopt(&mut self, batch: &Batch) {
        if let Some(count) = &batch.with_sender
            && !Arc::ptr_eq(&self.shared, count.shared())
        {
            self.shared = count.shared().clone();
        }
    }

    /// The partition's producer id and epoch, sequences.
    fn sequences(&self) -> Sequences {
        *self.shared.sequences.lock()
    }
}

/// What the sender tracks between batches.
struct Progress {
    /// The producer's `transactional.id` (empty without one).
    transactional_id: Arc<str>,
    /// Every partition written to (the sequence state stays).
    partitions: HashMap<TopicIdPartition, PartitionQueue>,
    /// The partitions with batches waiting or in flight.
    active: HashSet<TopicIdPartition>,
    /// Seal numbers of the batches taken from the accumulator and not
    /// finished yet.
    unfinished: BTreeSet<u64>,
    /// `buffer.memory` bytes of batches finished since the last accounting.
    released: usize,
    /// Buffers of batches finished since the last accounting.
    spare: Vec<Vec<u8>>,
    /// Batches finished since the last accounting.
    finished: usize,
    /// The transaction being aborted: its unsent batches fail.
    txn_abort: Option<u64>,
    /// A transaction whose unsent batches fail, and why (one of its
    /// batches, or adding its partitions, failed).
    txn_failed: Option<(u64, Error)>,
    /// Failures of transactional batches the transaction manager has not
    /// heard of yet.
    txn_errors: Vec<(u64, Error)>,
    /// Transactions the coordinator accepted partitions for, not yet told
    /// to the transaction manager.
    txn_started: Option<u64>,
    /// Runs the fsyncs the appends left to the sender.
    flusher: Flusher,
}

/// Requests the flusher's queue holds. Each is a group in flight (at most
/// `max.in.flight` per partition), so the bound is only reached with many
/// partitions; the sender then waits for room (the flusher never waits for
/// the sender).
const SYNC_QUEUE: usize = 1024;

/// An fsync the flusher runs: the offsets of `key` below `next_offset`.
struct SyncRequest {
    replicas: Arc<ReplicaManager>,
    key: TopicIdPartition,
    next_offset: u64,
}

/// The sender's flusher thread (`logbus-producer-sync`), started at the
/// first append that leaves its fsync to the sender: for a topic that
/// fsyncs every append, the sender writes a group of batches and hands its
/// fsync here, then writes the next group while this one is synced (as
/// Kafka's appends go on while its log flusher syncs). The group's
/// acknowledgement completes when the fsync moves the high watermark past
/// it. Requests waiting together are joined: one fsync per partition for
/// all of them. Dropping it lets the thread finish the requests sent and
/// waits for it.
#[derive(Default)]
struct Flusher {
    requests: Option<crossbeam_channel::Sender<SyncRequest>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    /// Has the offsets of `key` below `next_offset` fsynced; in this
    /// thread if the flusher thread cannot be started.
    fn sync(&mut self, replicas: Arc<ReplicaManager>, key: TopicIdPartition, next_offset: u64) {
        if self.requests.is_none() {
            let (tx, rx) = crossbeam_channel::bounded(SYNC_QUEUE);
            if let Ok(thread) = std::thread::Builder::new()
                .name("logbus-producer-sync".into())
                .spawn(move || flush_loop(&rx))
            {
                self.requests = Some(tx);
                self.thread = Some(thread);
            }
        }
        let request = SyncRequest {
            replicas,
            key,
            next_offset,
        };
        let request = match &self.requests {
            Some(tx) => match tx.send(request) {
                Ok(()) => return,
                Err(crossbeam_channel::SendError(request)) => request,
            },
            None => request,
        };
        // No thread: the acknowledgement completes (or fails) here.
        let _ = request
            .replicas
            .sync_for_ack(&request.key, request.next_offset);
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The flusher thread's loop: takes every request waiting, runs one fsync
/// per partition up to the highest offset asked for, until the sender
/// drops its end. A failed fsync fails the acknowledgements waiting for it
/// (see `PartitionState::sync_for_ack`); a partition gone or led elsewhere
/// failed them already.
fn flush_loop(requests: &Receiver<SyncRequest>) {
    let mut joined: Vec<SyncRequest> = Vec::new();
    while let Ok(first) = requests.recv() {
        joined.push(first);
        while let Ok(more) = requests.try_recv() {
            match joined.iter_mut().find(|r| r.key == more.key) {
                Some(r) => r.next_offset = r.next_offset.max(more.next_offset),
                None => joined.push(more),
            }
        }
        for request in joined.drain(..) {
            if let Err(e) = request
                .replicas
                .sync_for_ack(&request.key, request.next_offset)
            {
                tracing::debug!(
                    topic = %request.key.topic,
                    partition = request.key.partition,
                    error = %e,
                    "producer fsync failed"
                );
            }
        }
    }
}

impl Progress {
    /// Why a batch of transaction `number` must fail instead of being
    /// sent, if it must.
    fn txn_refusal(&self, number: u64) -> Option<Error> {
        if self.txn_abort == Some(number) {
            return Some(Error::TransactionAborted {
                transactional_id: self.transactional_id.to_string(),
            });
        }
        match &self.txn_failed {
            Some((n, e)) if *n == number => Some(e.duplicate()),
            _ => None,
        }
    }
}

/// The thread's loop: runs until the producer is closed and everything
/// pending is delivered.
pub(super) fn run(core: &Core, work: &Receiver<Msg>, ticks: &Receiver<()>) {
    let _guard = ExitGuard(core);
    let mut taken: VecDeque<Batch> = VecDeque::new();
    let mut handoffs: Vec<Handoff> = Vec::new();
    let mut early: Vec<EarlyAdd> = Vec::new();
    let mut stopping = false;
    // A manual clock only moves by hand, telling its subscribers (`ticks`),
    // which only a channel select can watch.
    let manual_clock = core.clock.wait_hint(i64::MAX).is_none();
    let mut progress = Progress {
        transactional_id: Arc::from(core.config.transactional_id().unwrap_or_default()),
        partitions: HashMap::new(),
        active: HashSet::new(),
        unfinished: BTreeSet::new(),
        released: 0,
        spare: Vec::new(),
        finished: 0,
        txn_abort: None,
        txn_failed: None,
        txn_errors: Vec::new(),
        txn_started: None,
        flusher: Flusher::default(),
    };
    loop {
        let markers_due;
        let commit_waiting;
        // Held batches may become stale (see `DirectAppends::STALE`):
        // look again that often, in real time, while batches are open or
        // held.
        let mut stale_check = false;
        let linger_deadline = {
            let mut acc = core.acc.lock();
            acc.sender_wakes_at = SENDER_RUNNING;
            progress.txn_abort = acc.txn.as_ref().and_then(|t| t.aborting);
            if acc.held_batches > 0 {
                acc.release_stale(std::time::Instant::now(), DirectAppends::STALE);
            }
            if acc.ready.is_empty() && (acc.open > 0 || acc.held_batches > 0) {
                let all = stopping || acc.closed || acc.blocked > 0;
                let now = core.clock.now_ms();
                acc.seal_expired(now, core.linger_ms, all, &core.sticky);
            }
            acc.pending_wake = false;
            markers_due = std::mem::take(&mut acc.markers_due);
            commit_waiting = acc.commit.as_ref().is_some_and(|j| j.answer.is_none());
            std::mem::swap(&mut taken, &mut acc.ready);
            std::mem::swap(&mut handoffs, &mut acc.handoffs);
            std::mem::swap(&mut early, &mut acc.early_adds);
            acc.taken_by_sender(
                taken
                    .iter()
                    .chain(handoffs.iter().flat_map(Handoff::batches))
                    .map(|b| b.seq),
            );
            if taken.is_empty() && handoffs.is_empty() {
                if (stopping || acc.closed)
                    && acc.open == 0
                    && acc.held_batches == 0
                    && acc.direct_writers == 0
                    && progress.active.is_empty()
                    && !markers_due
                    && !commit_waiting
                {
                    return;
                }
                let deadline = acc.next_deadline(core.linger_ms);
                stale_check = acc.direct && deadline.is_some();
                // A send opening a batch with an earlier linger deadline
                // wakes the sender; the sender may wake earlier (for an
                // acknowledgement or a retry) and then looks again.
                acc.sender_wakes_at = deadline.unwrap_or(i64::MAX);
                deadline
            } else {
                None
            }
        };
        let mut moved = !taken.is_empty() || !handoffs.is_empty();
        if markers_due {
            // Before the next transaction's first request, which would
            // write them itself.
            core.cluster.complete_txns_for_sender();
            moved = true;
        }
        if !early.is_empty() {
            moved |= core.add_early(&mut progress, &early);
            early.clear();
        }
        // What sending threads handed over was sealed before any batch of
        // its partition released to `ready` since (a partition is not
        // written from a sending thread while the sender has some of it).
        for handoff in handoffs.drain(..) {
            core.take_handoff(handoff, &mut progress);
        }
        for batch in taken.drain(..) {
            core.take(batch, &mut progress);
        }
        moved |= core.step(&mut progress);
        if !progress.txn_errors.is_empty() || progress.txn_started.is_some() {
            // Before `account` wakes a commit waiting for these batches.
            core.report_txn(&mut progress);
        }
        if progress.finished > 0 {
            core.account(&mut progress);
        }
        if commit_waiting {
            moved |= core.answer_commit();
        }
        if moved {
            continue;
        }
        // Nothing to do now: sleep until something changes.
        let now = core.clock.now_ms();
        let mut deadline = linger_deadline;
        let mut heads = Vec::new();
        for key in &progress.active {
            let Some(part) = progress.partitions.get(key) else {
                continue;
            };
            if let Some(head) = part.in_flight.front() {
                match &head.ack {
                    Some(ack) => {
                        heads.push(ack.receiver().clone());
                        deadline = earliest(deadline, ack.deadline_ms());
                    }
                    // Acknowledged already (`step` completes it first;
                    // never left here): look again at once.
                    None => deadline = earliest(deadline, now),
                }
            } else if let Some(first) = part.waiting.front() {
                // Waiting for its backoff (which may have passed since
                // `step` looked: then the timer fires at once) or its
                // delivery deadline.
                deadline = earliest(deadline, part.retry_at.max(now));
                deadline = earliest(deadline, core.delivery_deadline(first));
            }
        }
        let mut wait = deadline.and_then(|d| core.clock.wait_hint(d));
        if stale_check {
            wait = Some(wait.map_or(DirectAppends::STALE, |w| w.min(DirectAppends::STALE)));
        }
        let timer = match wait {
            Some(d) => crossbeam_channel::after(d),
            None => crossbeam_channel::never(),
        };
        if heads.is_empty() && !manual_clock {
            // Only new work or the timer can wake us: the doorbell, which
            // parks at once (a channel select spins and yields first,
            // taking a core a busy producer wants).
            crate::timeline::timed(Stage::SenderWait, || core.doorbell.wait(wait));
            stopping |= drain(work);
            continue;
        }
        // Work, the clock, the timer and the first acknowledgement in
        // flight of each partition.
        let mut select = Select::new();
        let work_index = (!stopping).then(|| select.recv(work));
        select.recv(ticks);
        select.recv(&timer);
        for rx in &heads {
            select.recv(rx);
        }
        let ready = crate::timeline::timed(Stage::SenderWait, || select.ready());
        if Some(ready) == work_index {
            stopping |= drain(work);
        } else {
            // A tick or the timer is drained here; an acknowledgement is
            // taken by `step`.
            let _ = ticks.try_recv();
            let _ = timer.try_recv();
        }
    }
}

/// Takes every message waiting on `work`; whether one asked to stop.
fn drain(work: &Receiver<Msg>) -> bool {
    let mut stop = false;
    loop {
        match work.try_recv() {
            Ok(Msg::Wake) => {}
            Ok(Msg::Shutdown) => stop = true,
            Err(crossbeam_channel::TryRecvError::Empty) => return stop,
            Err(crossbeam_channel::TryRecvError::Disconnected) => return true,
        }
    }
}

fn earliest(a: Option<i64>, b: i64) -> Option<i64> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// A fault injected by [`ProduceFaults`](super::ProduceFaults).
#[cfg(feature = "internals")]
fn injected(fault: super::ProduceFault) -> Error {
    Error::Timeout {
        op: match fault {
            super::ProduceFault::BeforeWrite => "an injected fault before the write",
            _ => "an injected lost acknowledgement",
        },
        waited: std::time::Duration::ZERO,
    }
}

impl Core {
    /// Puts a batch the sender took from the accumulator in its
    /// partition's queue.
    fn take(&self, batch: Batch, progress: &mut Progress) {
        progress.unfinished.insert(batch.seq);
        let key = match batch.topic.key(batch.partition) {
            Ok(key) => key,
            Err(e) => {
                finish(progress, batch, Outcome::Failed(e));
                return;
            }
        };
        let part = progress
            .partitions
            .entry(key.clone())
            .or_insert_with(|| PartitionQueue::new(batch.topic.clone(), batch.partition));
        part.adopt(&batch);
        part.waiting.push_back(batch);
        progress.active.insert(key);
    }

    /// Takes what a sending thread appended itself (or failed to) for this
    /// thread to finish ([`DirectAppends`](super::accumulator::DirectAppends)):
    /// nothing of the partition was with this thread to be sent when the
    /// sending thread took these, so the partition's order holds. Only
    /// batches that sending threads appended before and whose
    /// acknowledgement failed since may be waiting to be sent again: these
    /// were sealed after them and follow them (sent again too, answered as
    /// duplicates where stored, renumbered with them by a KIP-360 reset).
    fn take_handoff(&self, handoff: Handoff, progress: &mut Progress) {
        let first = &handoff.batches()[0];
        let (topic, partition) = (first.topic.clone(), first.partition);
        let key = match topic.key(partition) {
            Ok(key) => key,
            Err(e) => {
                for batch in handoff.into_batches() {
                    progress.unfinished.insert(batch.seq);
                    finish(progress, batch, Outcome::Failed(e.duplicate()));
                }
                return;
            }
        };
        for batch in handoff.batches() {
            progress.unfinished.insert(batch.seq);
        }
        let mut part = progress
            .partitions
            .remove(&key)
            .unwrap_or_else(|| PartitionQueue::new(topic, partition));
        part.adopt(first_of(&handoff));
        let now = self.clock.now_ms();
        if !part.waiting.is_empty() {
            if let Handoff::Appended {
                sync: Some((replicas, key, next_offset)),
                ..
            } = &handoff
            {
                // The resend's acknowledgement waits for it too.
                progress
                    .flusher
                    .sync(replicas.clone(), key.clone(), *next_offset);
            }
            for mut batch in handoff.into_batches() {
                if let Some(count) = batch.with_sender.as_mut() {
                    count.move_to_sender();
                }
                part.waiting.push_back(batch);
            }
            progress.active.insert(key.clone());
            progress.partitions.insert(key, part);
            return;
        }
        match handoff {
            Handoff::Unsent(batches) => {
                for batch in batches.into_iter().rev() {
                    part.waiting.push_front(batch);
                }
            }
            Handoff::Appended {
                batches,
                outcomes,
                ack,
                sync,
            } => {
                if let Some((replicas, key, next_offset)) = sync {
                    progress.flusher.sync(replicas, key, next_offset);
                }
                self.land(&mut part, batches, outcomes, ack, now, progress);
            }
            Handoff::Failed { batches, error } => {
                self.failed(
                    &mut part,
                    batches,
                    error,
                    Sent::AfterInFlight,
                    now,
                    progress,
                );
            }
        }
        if !part.is_idle() {
            progress.active.insert(key.clone());
        }
        progress.partitions.insert(key, part);
    }

    /// One round over the active partitions: takes the acknowledgements
    /// that arrived, fails batches past their delivery timeout, and sends
    /// what may be sent. Returns whether anything changed.
    fn step(&self, progress: &mut Progress) -> bool {
        let mut moved = self.add_partitions(progress);
        let keys: Vec<TopicIdPartition> = progress.active.iter().cloned().collect();
        for key in keys {
            let Some(mut part) = progress.partitions.remove(&key) else {
                progress.active.remove(&key);
                continue;
            };
            moved |= self.step_partition(&mut part, progress);
            if part.is_idle() {
                progress.active.remove(&key);
            }
            progress.partitions.insert(key, part);
        }
        moved
    }

    fn step_partition(&self, part: &mut PartitionQueue, progress: &mut Progress) -> bool {
        let mut moved = false;
        loop {
            let now = self.clock.now_ms();
            // The first acknowledgement in flight.
            if let Some(head) = part.in_flight.front()
                && let Some(result) = head.poll(now)
            {
                moved = true;
                let Some(done) = part.in_flight.pop_front() else {
                    break;
                };
                part.in_flight_batches -= done.batches.len();
                match result {
                    Ok(()) => {
                        for (batch, outcome) in done.batches.into_iter().zip(done.outcomes) {
                            finish(progress, batch, outcome);
                        }
                    }
                    Err(e) => {
                        self.failed(part, done.batches, e, Sent::BeforeInFlight, now, progress)
                    }
                }
                continue;
            }
            // `max.in.flight`: batches waiting for acks=all, or groups
            // waiting for their fsync (acks 0 and 1 join every waiting
            // batch into one group).
            let in_flight = if self.config.acks() == Acks::All {
                part.in_flight_batches
            } else {
                part.in_flight.len()
            };
            if !part.in_flight.is_empty() && in_flight >= self.max_in_flight {
                break;
            }
            // Batches past their delivery timeout fail, in order, once
            // nothing before them is in flight.
            if part.in_flight.is_empty()
                && let Some(first) = part.waiting.front()
                && now >= self.delivery_deadline(first)
            {
                moved = true;
                if let Some(batch) = part.waiting.pop_front() {
                    let error = self.expired(&batch, now);
                    finish(progress, batch, Outcome::Failed(error));
                }
                continue;
            }
            let Some(first) = part.waiting.front() else {
                break;
            };
            if let Some(tag) = first.txn {
                if let Some(error) = progress.txn_refusal(tag.number) {
                    // In order: only once nothing before it is in flight.
                    if !part.in_flight.is_empty() {
                        break;
                    }
                    moved = true;
                    if let Some(batch) = part.waiting.pop_front() {
                        finish(progress, batch, Outcome::Failed(error));
                    }
                    continue;
                }
                if part.added_in != tag.number {
                    // `add_partitions` adds it first (or backs off).
                    break;
                }
            }
            if now < part.retry_at {
                break;
            }
            // A retry (or a renumbering) waits until nothing of its
            // partition is in flight.
            if (first.attempts > 0 || part.reset) && !part.in_flight.is_empty() {
                break;
            }
            // A sending thread that took a group of the partition before
            // its batches came back here may still be numbering it: the
            // renumbering waits for it (it hands its group over next).
            if part.reset
                && part
                    .shared
                    .writing
                    .load(std::sync::atomic::Ordering::Acquire)
            {
                break;
            }
            if part.reset
                && let Err(e) = self.bump_epoch(part)
            {
                moved = true;
                if let Some(batch) = part.waiting.pop_front() {
                    finish(progress, batch, Outcome::Failed(e));
                }
                continue;
            }
            moved = true;
            if !self.send(part, now, progress) {
                // A failed send is looked at again in the next round, so
                // one partition retrying at once cannot hold up the others.
                break;
            }
        }
        moved
    }

    /// Sends the first waiting batch of `part` (with the fresh batches
    /// after it that fit into the same append). Returns false if the
    /// append failed.
    fn send(&self, part: &mut PartitionQueue, now: i64, progress: &mut Progress) -> bool {
        // `max.in.flight` bounds the batches waiting for an acks=all
        // acknowledgement; with acks 0 or 1 nothing waits (and idempotence,
        // whose duplicate check remembers 5 batches, needs acks=all), so
        // every waiting batch may join the append, up to `limit` bytes:
        // one write, and one fsync where the topic fsyncs every append.
        let room = if self.config.acks() == Acks::All {
            self.max_in_flight
                .saturating_sub(part.in_flight_batches)
                .max(1)
        } else {
            usize::MAX
        };
        let mut group: Vec<Batch> = Vec::new();
        let limit = group_limit(&part.topic);
        let mut bytes = 0;
        while let Some(next) = part.waiting.front() {
            // A retry goes alone: a group mixing a batch already stored
            // with new ones would be refused.
            let alone = next.attempts > 0;
            if !group.is_empty() && (alone || group.len() >= room || bytes + next.size() > limit) {
                break;
            }
            bytes += next.size();
            group.extend(part.waiting.pop_front());
            if alone {
                break;
            }
        }
        // Build (and number) the fresh batches.
        let mut built = Vec::with_capacity(group.len());
        for batch in &mut group {
            built.push(self.build(part, batch));
            batch.attempts += 1;
        }
        if built.iter().any(Result::is_err) {
            // Only a batch that cannot be encoded fails here: fail it, put
            // the others back.
            for (batch, result) in group.into_iter().zip(built).rev() {
                match result {
                    Err(e) => finish(progress, batch, Outcome::Failed(e)),
                    Ok(()) => {
                        let mut batch = batch;
                        batch.attempts -= 1;
                        part.waiting.push_front(batch);
                    }
                }
            }
            return true;
        }
        if self.config.acks() == Acks::None {
            for batch in &mut group {
                batch.finish(Outcome::Sent {
                    base_offset: None,
                    log_append_time: None,
                });
            }
        }
        let appended = self.append_batches(part, &mut group, progress);
        match appended {
            Ok((outcomes, ack)) => {
                self.land(part, group, outcomes, ack, now, progress);
                true
            }
            Err(e) if self.config.acks() == Acks::None => {
                // The records were completed when sent; nobody hears of
                // the error (finishing again changes nothing).
                for batch in group {
                    finish(progress, batch, Outcome::Failed(e.duplicate()));
                }
                true
            }
            Err(e) => {
                self.failed(part, group, e, Sent::AfterInFlight, now, progress);
                false
            }
        }
    }

    /// Appended batches of `part`: in flight until `ack` (if any) completes,
    /// or completed now.
    fn land(
        &self,
        part: &mut PartitionQueue,
        group: Vec<Batch>,
        outcomes: Vec<Outcome>,
        ack: Option<PendingAck>,
        now: i64,
        progress: &mut Progress,
    ) {
        match ack {
            Some(ack) => {
                let timeout = self
                    .request_timeout_ms
                    .min(self.delivery_deadline(&group[0]).saturating_sub(now))
                    .max(0);
                part.in_flight_batches += group.len();
                part.in_flight.push_back(InFlight {
                    batches: group,
                    outcomes,
                    ack: Some(ack.with_timeout(now, timeout)),
                });
            }
            None if !part.in_flight.is_empty() => {
                // Acknowledged at once (the high watermark passed these
                // batches, e.g. a follower fetched them before the append
                // returned), which completed the acknowledgements of the
                // batches before them too: but those are only taken from
                // their channels in order. Completing these now would run
                // their callbacks first; they wait their turn instead.
                part.in_flight_batches += group.len();
                part.in_flight.push_back(InFlight {
                    batches: group,
                    outcomes,
                    ack: None,
                });
            }
            None => {
                for (batch, outcome) in group.into_iter().zip(outcomes) {
                    finish(progress, batch, outcome);
                }
            }
        }
    }

    /// Encodes `batch` once, with the partition's next sequence under
    /// idempotence; a batch sent before keeps its bytes. The first batch
    /// of an idempotent producer takes its producer id from the cluster
    /// (Kafka's `InitProducerId`; epoch 0).
    fn build(&self, part: &PartitionQueue, batch: &mut Batch) -> Result<()> {
        if batch.bytes.is_some() {
            return Ok(());
        }
        let mut seqs = part.shared.sequences.lock();
        if let Some(tag) = batch.txn {
            // A new epoch (init_transactions, or the bump after an
            // abortable error) numbers every partition from 0 again.
            if (seqs.producer_id, seqs.epoch) != (tag.producer_id, tag.epoch) {
                *seqs = Sequences {
                    producer_id: tag.producer_id,
                    epoch: tag.epoch,
                    next_sequence: 0,
                };
            }
        } else if self.idempotent {
            self.start_sequences(&mut seqs)?;
        }
        let transactional = batch.txn.is_some();
        encode(batch, |builder, records| {
            stamp(&mut seqs, builder, records, transactional)
        })
    }

    /// Gives a partition that has no producer id yet the producer's
    /// current one and epoch, numbering from 0. The producer's first
    /// takes its id from the cluster (Kafka's `InitProducerId`; epoch 0),
    /// whichever thread numbers a batch first.
    pub(super) fn start_sequences(&self, seqs: &mut Sequences) -> Result<()> {
        if seqs.producer_id != NO_PRODUCER_ID {
            return Ok(());
        }
        let mut identity = self.identity.lock();
        if identity.0 == NO_PRODUCER_ID {
            *identity = (self.cluster.allocate_producer_id()?, 0);
        }
        *seqs = Sequences {
            producer_id: identity.0,
            epoch: identity.1,
            next_sequence: 0,
        };
        Ok(())
    }

    /// Appends `group` (its batches' bytes where they are) and
    /// returns each batch's outcome and the acknowledgement to wait for.
    fn append_batches(
        &self,
        part: &PartitionQueue,
        group: &mut [Batch],
        progress: &mut Progress,
    ) -> Result<(Vec<Outcome>, Option<PendingAck>)> {
        #[cfg(feature = "internals")]
        let fault = match self.config.faults() {
            Some(faults) => faults.fault(&part.topic.name, part.partition, group[0].attempts),
            None => super::ProduceFault::None,
        };
        #[cfg(feature = "internals")]
        if fault == super::ProduceFault::BeforeWrite {
            return Err(injected(fault));
        }
        let key = part.topic.key(part.partition)?;
        let replicas = self.cluster.replicas_for(&key)?;
        let (info, ack, sync) = crate::timeline::timed(Stage::SenderAppend, || {
            append_group(&replicas, &key, group, self.append_acks())
        })?;
        if let Some(next_offset) = sync {
            // The acknowledgement waits for this fsync; the next group is
            // written meanwhile.
            progress.flusher.sync(replicas, key, next_offset);
        }
        #[cfg(feature = "internals")]
        if fault == super::ProduceFault::LoseAck {
            drop((info, ack));
            return Err(injected(fault));
        }
        Ok((outcomes(&info, group), ack))
    }

    /// What the replica manager waits for before it acknowledges.
    pub(super) fn append_acks(&self) -> AppendAcks {
        match self.config.acks() {
            // The append is the same; only the producer completes earlier.
            Acks::None | Acks::Leader => AppendAcks::Leader,
            Acks::All => AppendAcks::All,
        }
    }

    /// `batches` (sent together, in order) failed with `error`: they (and
    /// every batch of the partition sent after them) go back to the queue
    /// to be retried, or they fail. `sent` tells whether the batches still
    /// in flight were sent before or after them.
    fn failed(
        &self,
        part: &mut PartitionQueue,
        batches: Vec<Batch>,
        error: Error,
        sent: Sent,
        now: i64,
        progress: &mut Progress,
    ) {
        // A transactional producer's epoch is the coordinator's: a refused
        // sequence fails the batch (and makes the transaction abortable).
        let renumber = part.sequences().producer_id != NO_PRODUCER_ID
            && batches[0].txn.is_none()
            && matches!(
                error,
                Error::OutOfOrderSequence { .. } | Error::UnknownProducerId { .. }
            );
        let retriable = error.is_retriable() || renumber;
        let first = &batches[0];
        let can_retry = retriable
            && self.config.acks() != Acks::None
            && first.attempts <= self.retries
            && now < self.delivery_deadline(first);
        if !can_retry {
            let error = if retriable && now >= self.delivery_deadline(first) {
                self.expired(first, now)
            } else {
                error
            };
            for batch in batches {
                finish(progress, batch, Outcome::Failed(error.duplicate()));
            }
            return;
        }
        // KIP-360: only when nothing before them is unfinished (they were
        // first in their partition's queue, and nothing sent before them is
        // in flight) is a refusal proof that the partition lost the
        // producer's earlier batches; otherwise the earlier batches'
        // outcomes come first and these are simply sent again after them.
        let reset = renumber && (sent == Sent::BeforeInFlight || part.in_flight.is_empty());
        let mut back: Vec<Batch> = batches;
        if sent == Sent::BeforeInFlight {
            // Everything sent after these goes back too, to be sent again
            // in order after them (answered as duplicates if it was
            // stored), so that the partition's records complete in order.
            for later in part.in_flight.drain(..) {
                back.extend(later.batches);
            }
            part.in_flight_batches = 0;
        }
        for mut batch in back.into_iter().rev() {
            // Sent again by this thread: no sending thread appends (and
            // numbers) the partition meanwhile.
            if let Some(count) = batch.with_sender.as_mut() {
                count.move_to_sender();
            }
            part.waiting.push_front(batch);
        }
        if reset {
            part.reset = true;
            part.retry_at = now;
        } else if renumber {
            part.retry_at = now;
        } else {
            part.retry_at = now.saturating_add(self.retry_backoff_ms);
        }
    }

    /// Bumps the producer's epoch (a new producer id past `i16::MAX`) for
    /// `part` and renumbers its batches already encoded from sequence 0.
    fn bump_epoch(&self, part: &mut PartitionQueue) -> Result<()> {
        let mut seqs = part.shared.sequences.lock();
        {
            let mut identity = self.identity.lock();
            if (seqs.producer_id, seqs.epoch) == *identity {
                if identity.1 == i16::MAX {
                    *identity = (self.cluster.allocate_producer_id()?, 0);
                } else {
                    identity.1 += 1;
                }
            }
            (seqs.producer_id, seqs.epoch) = *identity;
        }
        seqs.next_sequence = 0;
        part.reset = false;
        for batch in &mut part.waiting {
            let Some(bytes) = batch.bytes.as_mut() else {
                break;
            };
            let sequence = seqs.next_sequence;
            seqs.next_sequence = next_sequence(sequence, batch.records);
            renumber(bytes, seqs.producer_id, seqs.epoch, sequence);
        }
        Ok(())
    }

    /// Adds to the transaction every partition whose next batch is the
    /// transaction's first there (Kafka's `AddPartitionsToTxn`, sent
    /// before the batches are drained), in one request. A retriable
    /// failure backs those partitions off; any other fails the
    /// transaction's unsent batches. Returns whether anything changed.
    fn add_partitions(&self, progress: &mut Progress) -> bool {
        let Some(id) = self.config.transactional_id() else {
            return false;
        };
        let now = self.clock.now_ms();
        let mut tag = None;
        let mut wanted = Vec::new();
        let mut partitions = Vec::new();
        for key in &progress.active {
            let Some(part) = progress.partitions.get(key) else {
                continue;
            };
            let Some(first) = part.waiting.front().and_then(|b| b.txn) else {
                continue;
            };
            if part.added_in == first.number
                || now < part.retry_at
                || progress.txn_refusal(first.number).is_some()
                || tag.is_some_and(|t: super::transaction::TxnTag| t != first)
            {
                continue;
            }
            tag = Some(first);
            wanted.push(key.clone());
            partitions.push(crate::types::TopicPartition::new(
                &*part.topic.name,
                part.partition,
            ));
        }
        let Some(tag) = tag else {
            return false;
        };
        match self
            .cluster
            .add_partitions_to_txn(id, tag.producer_id, tag.epoch, &partitions)
        {
            Ok(()) => {
                for key in &wanted {
                    if let Some(part) = progress.partitions.get_mut(key) {
                        part.added_in = tag.number;
                    }
                }
                progress.txn_started = Some(tag.number);
            }
            Err(e) if e.is_retriable() => {
                let at = now.saturating_add(self.retry_backoff_ms);
                for key in &wanted {
                    if let Some(part) = progress.partitions.get_mut(key) {
                        part.retry_at = at;
                    }
                }
            }
            Err(e) => {
                progress.txn_errors.push((tag.number, e.duplicate()));
                progress.txn_failed = Some((tag.number, e));
            }
        }
        true
    }

    /// Adds the partitions a transaction opened batches in to it at once,
    /// while their batches still fill (Kafka's producer sends
    /// `AddPartitionsToTxn` as soon as `send` meets a new partition), so
    /// the coordinator's write is off the commit's path. Only the newest
    /// transaction's partitions count, and a refusal is left to
    /// [`Core::add_partitions`], which adds them again before their first
    /// batch and handles it. Returns whether a partition was added.
    fn add_early(&self, progress: &mut Progress, early: &[EarlyAdd]) -> bool {
        let Some(id) = self.config.transactional_id() else {
            return false;
        };
        let Some(&(_, _, tag)) = early.last() else {
            return false;
        };
        if progress.txn_refusal(tag.number).is_some() {
            return false;
        }
        let now = self.clock.now_ms();
        let mut wanted = Vec::new();
        let mut partitions = Vec::new();
        for (topic, partition, t) in early {
            let Ok(key) = topic.key(*partition) else {
                continue;
            };
            let part = progress
                .partitions
                .entry(key.clone())
                .or_insert_with(|| PartitionQueue::new(topic.clone(), *partition));
            if *t != tag || part.added_in == tag.number || now < part.retry_at {
                continue;
            }
            wanted.push(key);
            partitions.push(crate::types::TopicPartition::new(&*topic.name, *partition));
        }
        if wanted.is_empty()
            || self
                .cluster
                .add_partitions_to_txn(id, tag.producer_id, tag.epoch, &partitions)
                .is_err()
        {
            return false;
        }
        for key in &wanted {
            if let Some(part) = progress.partitions.get_mut(key) {
                part.added_in = tag.number;
            }
        }
        progress.txn_started = Some(tag.number);
        true
    }

    /// Tells the transaction manager what happened to transactions: the
    /// coordinator accepted their partitions, or their batches failed.
    fn report_txn(&self, progress: &mut Progress) {
        let mut acc = self.acc.lock();
        let Some(txn) = acc.txn.as_mut() else {
            progress.txn_errors.clear();
            progress.txn_started = None;
            return;
        };
        if let Some(number) = progress.txn_started.take() {
            txn.started(number);
        }
        for (number, error) in progress.txn_errors.drain(..) {
            txn.batch_failed(number, &error);
        }
    }

    /// When `batch` fails at the latest: `delivery.timeout.ms` after its
    /// first record.
    fn delivery_deadline(&self, batch: &Batch) -> i64 {
        batch.created_ms.saturating_add(self.delivery_timeout_ms)
    }

    fn expired(&self, batch: &Batch, now: i64) -> Error {
        Error::Timeout {
            op: "delivering a batch (delivery.timeout.ms)",
            waited: std::time::Duration::from_millis(
                u64::try_from(now.saturating_sub(batch.created_ms)).unwrap_or(0),
            ),
        }
    }

    /// Gives back the `buffer.memory` of the batches finished and notes
    /// how far the batches are finished: up to the first unfinished one.
    fn account(&self, progress: &mut Progress) {
        let released = std::mem::take(&mut progress.released);
        progress.finished = 0;
        let mut acc = self.acc.lock();
        acc.used -= released;
        acc.spare.keep(&mut progress.spare);
        acc.sender_first = progress.unfinished.first().copied();
        if released > 0 {
            acc.wake_one_space_waiter();
        }
        self.publish_done(&mut acc);
        drop(acc);
        progress.spare.clear();
    }
}

/// Completes `batch`'s records (and runs their callbacks) and notes it
/// finished. Runs user code: never with the producer's lock held.
fn first_of(handoff: &Handoff) -> &Batch {
    &handoff.batches()[0]
}

fn finish(progress: &mut Progress, mut batch: Batch, outcome: Outcome) {
    if let (Some(tag), Outcome::Failed(error)) = (batch.txn, &outcome)
        && !batch.result.is_done()
    {
        progress.txn_errors.push((tag.number, error.duplicate()));
        if progress.txn_refusal(tag.number).is_none() {
            // The rest of the transaction fails too (Kafka's
            // abortUndrainedBatches).
            progress.txn_failed = Some((tag.number, error.duplicate()));
        }
    }
    batch.finish(outcome);
    if let Some(count) = batch.with_sender.take() {
        // Last: a sending thread may append the partition once none is left.
        count.done();
    }
    progress.unfinished.remove(&batch.seq);
    progress.released += batch.reserved;
    if let Some(buf) = batch.bytes.take() {
        progress.spare.push(buf);
    }
    progress.finished += 1;
}

/// Sets the producer fields of a batch of `records` numbered from `seqs`
/// (nothing without a producer id), and moves its next sequence on.
pub(super) fn stamp(
    seqs: &mut Sequences,
    builder: BatchBuilder,
    records: i32,
    transactional: bool,
) -> BatchBuilder {
    if seqs.producer_id == NO_PRODUCER_ID {
        return builder;
    }
    let sequence = seqs.next_sequence;
    seqs.next_sequence = next_sequence(sequence, records);
    builder
        .producer(seqs.producer_id, seqs.epoch, sequence)
        .transactional(transactional)
}

/// Encodes a sealed batch once (`stamp` sets its producer fields, given
/// its record count); a batch encoded before keeps its bytes.
pub(super) fn encode(
    batch: &mut Batch,
    stamp: impl FnOnce(BatchBuilder, i32) -> BatchBuilder,
) -> Result<()> {
    if batch.bytes.is_some() {
        return Ok(());
    }
    let builder = batch
        .builder
        .take()
        .ok_or_else(|| Error::Internal("a sealed batch has no records".into()))?;
    let records = i32::try_from(builder.len())
        .map_err(|_| Error::Internal("batch record count overflow".into()))?;
    let builder = stamp(builder, records);
    batch.records = records;
    batch.bytes = Some(Vec::from(builder.build()?));
    Ok(())
}

/// Appends the encoded batches of `group` to `key` as its leader, each
/// batch's bytes where they are: several are written with one vectored
/// write, not copied into one buffer first. Returns what
/// [`ReplicaManager::append_deferred`] does.
pub(super) fn append_group(
    replicas: &ReplicaManager,
    key: &TopicIdPartition,
    group: &mut [Batch],
    acks: AppendAcks,
) -> Result<(AppendInfo, Option<PendingAck>, Option<u64>)> {
    let mut pieces = Vec::with_capacity(group.len());
    for batch in group.iter_mut() {
        let bytes = batch
            .bytes
            .as_deref_mut()
            .ok_or_else(|| Error::Internal("a batch was not built".into()))?;
        pieces.push(bytes);
    }
    replicas.append_deferred(key, &mut pieces, acks)
}

/// Each batch's outcome, for batches appended together as `info` tells.
pub(super) fn outcomes(info: &AppendInfo, group: &[Batch]) -> Vec<Outcome> {
    let mut next = info.first_offset();
    group
        .iter()
        .map(|batch| {
            let base = next;
            next += u64::try_from(batch.records).unwrap_or(0);
            Outcome::Sent {
                base_offset: Some(base),
                log_append_time: info.log_append_time(),
            }
        })
        .collect()
}

/// The sequence after a batch of `records` starting at `sequence` (Kafka
/// wraps past `i32::MAX` to 0).
fn next_sequence(sequence: i32, records: i32) -> i32 {
    let next = i64::from(sequence) + i64::from(records);
    i32::try_from(next % (i64::from(i32::MAX) + 1)).unwrap_or(0)
}

/// Rewrites the producer fields of an encoded batch and its CRC.
fn renumber(bytes: &mut [u8], producer_id: i64, epoch: i16, sequence: i32) {
    if bytes.len() <= BASE_SEQUENCE_OFFSET + 4 || sequence == NO_SEQUENCE {
        return;
    }
    BigEndian::write_i64(&mut bytes[PRODUCER_ID_OFFSET..], producer_id);
    BigEndian::write_i16(&mut bytes[PRODUCER_EPOCH_OFFSET..], epoch);
    BigEndian::write_i32(&mut bytes[BASE_SEQUENCE_OFFSET..], sequence);
    let crc = compute_crc(bytes);
    BigEndian::write_u32(&mut bytes[CRC_OFFSET..], crc);
}

/// Runs when the sender thread exits, normally or by a panic: no send may
/// be accepted or wait any more, and every record still held is failed.
struct ExitGuard<'a>(&'a Core);

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        let core = self.0;
        let leftovers = {
            let mut acc = core.acc.lock();
            acc.closed = true;
            acc.wake_space_waiters();
            acc.drain_all()
        };
        // Dropping a batch that is not done fails its records (and runs
        // their callbacks), so this happens outside the lock.
        drop(leftovers);
        core.acc.lock().done_seq = u64::MAX;
        core.done_seq
            .store(u64::MAX, std::sync::atomic::Ordering::Release);
        core.finished.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_wrap_past_i32_max_to_zero() {
        assert_eq!(next_sequence(0, 5), 5);
        assert_eq!(next_sequence(i32::MAX - 1, 1), i32::MAX);
        assert_eq!(next_sequence(i32::MAX, 1), 0);
        assert_eq!(next_sequence(i32::MAX - 1, 5), 3);
    }
}
