//! The record accumulator: per partition, the open batch that records are
//! encoded into, and the queue of sealed batches waiting for the sender.
//!
//! Everything here lives behind the producer's one mutex; a `send` takes it
//! once. Nothing here blocks or runs user code, so batches that could run
//! callbacks when dropped are never dropped while it is held.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::Mutex;

use super::future::{BatchResult, Callback, Outcome};
use super::record::TopicName;
use super::transaction::{TxnManager, TxnTag};
use crate::client::partitioner::StickyPartitions;
use crate::cluster::{ClusterInner, TopicState};
use crate::error::{Error, Result};
use crate::format::{BatchBuilder, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, RECORD_BATCH_OVERHEAD};

/// One batch of one partition: open while records are added, then sealed
/// and queued for the sender.
pub(crate) struct Batch {
    pub(crate) topic: Arc<TopicState>,
    pub(crate) partition: u32,
    /// `None` once the sender built the batch.
    pub(crate) builder: Option<BatchBuilder>,
    /// The encoded batch, once built (kept for retries).
    pub(crate) bytes: Option<Vec<u8>>,
    /// Records in the batch, once built.
    pub(crate) records: i32,
    /// How many times the sender sent it.
    pub(crate) attempts: u32,
    pub(crate) result: Arc<BatchResult>,
    /// Callbacks with the index and timestamp of their record, in record order.
    pub(crate) callbacks: Vec<(u32, i64, Callback)>,
    /// Bytes of `buffer.memory` this batch holds: its buffer's capacity
    /// (as Kafka's `BufferPool` counts a batch's whole buffer).
    pub(crate) reserved: usize,
    /// Clock time of its first record: linger counts from here.
    pub(crate) created_ms: i64,
    /// Position in the seal order (0 while open).
    pub(crate) seq: u64,
    /// Whether it holds records routed by the sticky partitioner.
    pub(crate) keyless: bool,
    /// The transaction it belongs to (transactional producers).
    pub(crate) txn: Option<TxnTag>,
    /// Its place in [`PartitionShared::with_sender`] while the sender
    /// thread has it; the sender counts it down when it finishes the batch.
    pub(crate) with_sender: Option<SenderCount>,
}

/// The idempotence state of one partition: the producer id and epoch its
/// sequences belong to (`NO_PRODUCER_ID` until its first batch is
/// numbered, and without idempotence) and the sequence of the next batch
/// numbered for the first time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sequences {
    pub(crate) producer_id: i64,
    pub(crate) epoch: i16,
    pub(crate) next_sequence: i32,
}

impl Default for Sequences {
    fn default() -> Self {
        Sequences {
            producer_id: NO_PRODUCER_ID,
            epoch: NO_PRODUCER_EPOCH,
            next_sequence: 0,
        }
    }
}

/// What the producer's lock and the sender thread share about one
/// partition: how many of its batches the sender thread has, and its
/// sequences.
///
/// Only the sender thread numbers batches (gives them their sequences),
/// once, in seal order, when it first encodes them; with held groups
/// ([`GroupedHandoffs`]) a partition's held batches go to it only in seal
/// order after those it has. The mutex around the sequences is never
/// contended (the sender thread is its only user); it keeps them with the
/// partition's other shared state.
#[derive(Debug)]
pub(crate) struct PartitionShared {
    /// Batches of this partition with the sender thread, not yet finished
    /// (each holds a [`SenderCount`] and counts down when finished): while
    /// any is, the partition's held batches stay held and grow into a
    /// larger group ([`Accumulator::hold`]).
    pub(crate) with_sender: AtomicUsize,
    /// The partition's sequences.
    pub(crate) sequences: Mutex<Sequences>,
}

impl Default for PartitionShared {
    fn default() -> Self {
        PartitionShared {
            with_sender: AtomicUsize::new(0),
            sequences: Mutex::default(),
        }
    }
}

/// A batch's place in its partition's [`PartitionShared::with_sender`]
/// count while the sender thread has it.
#[derive(Debug)]
pub(crate) struct SenderCount {
    shared: Arc<PartitionShared>,
}

impl SenderCount {
    /// Counts `n` batches in `shared`'s `with_sender` count and returns
    /// their places.
    fn add(shared: &Arc<PartitionShared>, n: usize) -> impl Fn() -> SenderCount {
        shared.with_sender.fetch_add(n, Ordering::AcqRel);
        let shared = shared.clone();
        move || SenderCount {
            shared: shared.clone(),
        }
    }

    /// The partition's shared state.
    pub(crate) fn shared(&self) -> &Arc<PartitionShared> {
        &self.shared
    }

    /// The batch is finished: the partition's held batches may go to the
    /// sender thread once none is left.
    pub(crate) fn done(self) {
        self.shared.with_sender.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("topic", &self.topic.name)
            .field("partition", &self.partition)
            .field("records", &self.builder.as_ref().map(BatchBuilder::len))
            .field("callbacks", &self.callbacks.len())
            .field("reserved", &self.reserved)
            .field("created_ms", &self.created_ms)
            .field("seq", &self.seq)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl Batch {
    /// Bytes the batch would take if built now, uncompressed.
    pub(crate) fn size(&self) -> usize {
        self.builder
            .as_ref()
            .map_or(0, BatchBuilder::estimated_size)
    }

    /// Calls every callback (in record order; a panicking callback is
    /// contained) and then completes the shared result, as Kafka's
    /// `ProducerBatch.done` does: whoever waits on a handle sees the
    /// callbacks of its batch already run. Does nothing the second time.
    pub(crate) fn finish(&mut self, outcome: Outcome) {
        if self.result.is_done() {
            return;
        }
        for (index, timestamp, callback) in self.callbacks.drain(..) {
            let metadata = outcome.metadata(&self.result, index, timestamp);
            // A panic in user code must not kill the sender thread and
            // leave every later record waiting forever.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                callback(metadata);
            }));
        }
        self.result.complete(outcome);
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // Only reached when the sender thread stopped abnormally: nobody may
        // be left waiting.
        if !self.result.is_done() {
            self.finish(Outcome::Failed(Error::Internal(
                "the producer's sender thread stopped before appending this record".into(),
            )));
        }
    }
}

/// What the producer knows about one topic.
#[derive(Debug)]
pub(crate) struct TopicEntry {
    pub(crate) name: Arc<str>,
    pub(crate) state: Arc<TopicState>,
    /// The open batch of each partition.
    pub(crate) batches: Vec<Option<Batch>>,
    /// The sealed batches each partition holds back ([`GroupedHandoffs`]).
    pub(crate) held: Vec<Held>,
    /// The sticky partition for keyless records, until its batch is sealed.
    pub(crate) sticky: Option<u32>,
    /// The topic's `max.message.bytes`.
    pub(crate) max_message_bytes: usize,
    /// A batch is full at this size: `batch.size`, at most `max.message.bytes`.
    pub(crate) batch_limit: usize,
    /// The topic's `cleanup.policy` includes `compact`.
    pub(crate) compact: bool,
    /// The topic's config version these were read at
    /// ([`TopicState::config_version`]).
    config_version: u64,
}

impl TopicEntry {
    fn new(state: Arc<TopicState>, batch_size: usize) -> Self {
        let mut entry = TopicEntry {
            name: state.name.clone(),
            state,
            batches: Vec::new(),
            held: Vec::new(),
            sticky: None,
            max_message_bytes: 0,
            batch_limit: 0,
            compact: false,
            config_version: 0,
        };
        entry.read_configs(batch_size);
        entry
    }

    /// Brings `compact`, `max_message_bytes` and `batch_limit` up to the
    /// topic's configs, which can change live (an altered `cleanup.policy`
    /// or `max.message.bytes` applies from the next send): read again only
    /// when the topic's config version moved, one atomic load per send.
    #[inline]
    pub(crate) fn refresh_configs(&mut self, batch_size: usize) {
        if self.state.config_version() != self.config_version {
            self.read_configs(batch_size);
        }
    }

    #[inline(never)]
    fn read_configs(&mut self, batch_size: usize) {
        // The version first: configs read after it are at least as new.
        self.config_version = self.state.config_version();
        let configs = self.state.configs();
        self.compact = configs.log_config.compact();
        self.max_message_bytes = configs.log_config.max_batch_len();
        self.batch_limit = batch_size.min(self.max_message_bytes);
    }

    /// Whether `partition` has an open batch.
    pub(crate) fn has_batch(&self, partition: u32) -> bool {
        self.batches
            .get(partition as usize)
            .is_some_and(Option::is_some)
    }

    /// The open batch of `partition`, if it belongs to transaction `txn`
    /// (`None`: no transaction), takes a record of at most `upper` encoded
    /// bytes within `batch_limit`, and has room for it in its buffer as it
    /// is (its reservation in `buffer.memory` does not grow): where a send
    /// usually puts its record, found with one lookup.
    #[inline]
    pub(crate) fn open_batch_with_room(
        &mut self,
        partition: u32,
        upper: usize,
        batch_limit: usize,
        txn: Option<TxnTag>,
    ) -> Option<&mut Batch> {
        let batch = self.batches.get_mut(partition as usize)?.as_mut()?;
        let builder = batch.builder.as_ref()?;
        (batch.txn == txn
            && builder.estimated_size() + upper <= batch_limit
            && builder.has_room(upper))
        .then_some(batch)
    }

    /// Whether the open batch of `partition` takes `bytes` more.
    pub(crate) fn fits(&self, partition: u32, bytes: usize) -> bool {
        self.batches
            .get(partition as usize)
            .and_then(Option::as_ref)
            .is_some_and(|b| b.size() + bytes <= self.batch_limit)
    }

    /// Bytes of `buffer.memory` a record of at most `upper` encoded bytes
    /// takes for `partition` beyond what is reserved already: if it fits
    /// the open batch, what that batch's buffer must grow by (nothing when
    /// the batch was opened at full size); else the smallest buffer a new
    /// batch for it can have.
    #[inline]
    pub(crate) fn room_needed(&self, partition: u32, upper: usize) -> usize {
        match self
            .batches
            .get(partition as usize)
            .and_then(Option::as_ref)
        {
            Some(b) if b.size() + upper <= self.batch_limit => {
                BatchBuilder::capacity_for(b.size() - RECORD_BATCH_OVERHEAD + upper)
                    .saturating_sub(b.reserved)
            }
            _ => BatchBuilder::capacity_for(upper),
        }
    }

    /// The partition for a keyless record: the sticky one.
    #[inline]
    pub(crate) fn sticky_partition(&mut self, sticky: &StickyPartitions, count: NonZeroU32) -> u32 {
        match self.sticky {
            Some(p) if p < count.get() => p,
            _ => {
                let p = sticky.partition(&self.name, count);
                self.sticky = Some(p);
                p
            }
        }
    }

    pub(crate) fn unknown(&self, partition: Option<u32>) -> Error {
        self.state.unknown(partition)
    }
}

/// The buffer capacity of a new batch for a record of at most `upper`
/// encoded bytes, with `used` of `buffer_memory` taken. A full batch
/// (`batch_limit`, or the record if larger), as Kafka's accumulator
/// allocates `batch.size`, while that leaves at least half of
/// `buffer_memory` free; else a start of an eighth of that (at least the
/// record's room, at most what is free), which grows geometrically
/// ([`grown_capacity`]). Full batches for every partition would take all
/// of `buffer_memory` once more partitions than it holds batches have a
/// batch open (2,000 of 16 KiB in 32 MiB): later batches would find no
/// room, and every send would wait for room and seal every open batch, so
/// that batches went out with a record or two each.
pub(crate) fn batch_capacity(
    batch_limit: usize,
    upper: usize,
    used: usize,
    buffer_memory: usize,
) -> usize {
    let lone = BatchBuilder::capacity_for(upper);
    let full = full_capacity(batch_limit, upper);
    if used.saturating_add(full) <= buffer_memory / 2 {
        return full;
    }
    let start = BatchBuilder::capacity_for(
        (batch_limit.saturating_sub(RECORD_BATCH_OVERHEAD) / START_FRACTION).max(upper),
    );
    start
        .min(full)
        .min(buffer_memory.saturating_sub(used))
        .max(lone)
}

/// The buffer capacity of a full batch (of `batch_limit` bytes, or of its
/// one record of at most `upper` encoded bytes if larger): appends to it
/// never reallocate.
pub(crate) fn full_capacity(batch_limit: usize, upper: usize) -> usize {
    BatchBuilder::capacity_for(batch_limit.saturating_sub(RECORD_BATCH_OVERHEAD).max(upper))
}

/// The most bytes of finished batches' buffers a producer keeps for its
/// new batches (at most an eighth of `buffer.memory`).
pub(crate) const SPARE_BYTES: usize = 1 << 20;

/// Buffers of finished batches kept for new ones, as Kafka's `BufferPool`
/// keeps `batch.size` buffers: a new batch takes the one given back last,
/// whose lines the sending thread wrote a group or two before and may
/// still have in its cache, instead of memory the allocator hands out
/// (and the sender thread, which finishes most batches, freed on the other
/// CPU). Only buffers of a full batch's capacity are kept (compressed
/// batches, larger records and the smaller batches of many partitions
/// are not), and at most `limit` bytes of them, outside `buffer.memory`'s
/// count.
#[derive(Debug, Default)]
pub(crate) struct SpareBuffers {
    buffers: Vec<Vec<u8>>,
    /// The capacity kept: that of the last full batch opened.
    capacity: usize,
    limit: usize,
}

impl SpareBuffers {
    /// Keeps at most `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        SpareBuffers {
            buffers: Vec::new(),
            capacity: 0,
            limit,
        }
    }

    /// Keeps what it can of `given` (the buffers of finished batches);
    /// leaves the rest there (the sender thread drops them after it
    /// released the producer's lock).
    pub(crate) fn keep(&mut self, given: &mut Vec<Vec<u8>>) {
        if self.capacity == 0 {
            // No full batch opened yet: nothing to keep them for.
            return;
        }
        let room = self.limit / self.capacity;
        given.retain_mut(|buf| {
            if buf.capacity() != self.capacity || self.buffers.len() >= room {
                return true;
            }
            self.buffers.push(std::mem::take(buf));
            false
        });
    }

    /// A kept buffer for a new batch of `capacity` bytes, if it is a full
    /// batch's (`full`); a capacity not seen before drops the kept ones.
    pub(crate) fn take(&mut self, capacity: usize, full: usize) -> Option<Vec<u8>> {
        if capacity != full {
            return None;
        }
        if capacity != self.capacity {
            self.buffers.clear();
            self.capacity = capacity;
        }
        self.buffers.pop()
    }

    /// Bytes kept.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.buffers.len() * self.capacity
    }
}

/// A batch not opened at full size starts at this fraction of it.
const START_FRACTION: usize = 8;

/// The buffer capacity an open batch of `size` bytes in a buffer of
/// `capacity` grows to for a record of at most `upper` encoded bytes, with
/// `free` bytes of `buffer.memory` left (after the caller waited for at
/// least the growth the record needs): twice the capacity, at most `full`
/// (the capacity of a full batch) and what is free, at least what the
/// record needs. Doubling keeps the copies of a growing batch below its
/// final size (growing by each record would copy the batch once per
/// record).
pub(crate) fn grown_capacity(
    capacity: usize,
    size: usize,
    upper: usize,
    full: usize,
    free: usize,
) -> usize {
    let needed = BatchBuilder::capacity_for(size.saturating_sub(RECORD_BATCH_OVERHEAD) + upper);
    if capacity >= needed {
        return capacity;
    }
    capacity
        .saturating_mul(2)
        .min(full)
        .min(capacity.saturating_add(free))
        .max(needed)
}

/// A producer that hands sealed batches to the sender thread a group at
/// a time: acks=1 or acks=all, idempotent or not, without transactions (or
/// injected faults), with a `linger.ms` above 0. Instead of waking the
/// sender thread for each sealed batch, the thread that seals a batch
/// holds it back in its partition's [`Held`] queue and hands the queue
/// over whole once it is due (see [`Accumulator::hold`]): one hand-off,
/// and one (vectored) write by the sender, for up to
/// [`GroupedHandoffs::GROUP_BYTES`], while the sending threads go on
/// building batches on their CPU. The sender thread also takes what
/// lingers (a held batch whose `linger.ms` passed) and what a flush, a
/// `wait` or a full `buffer.memory` asks for. Such a producer's
/// accumulator has [`Accumulator::grouped`] set; these are its limits.
///
/// An earlier design appended each due group on the sending thread that
/// sealed it; handing the group to the sender thread instead measured
/// faster in every case tried (100-byte and 1 KiB records, acks=1 and
/// idempotent acks=all, two sending threads): the write runs beside the
/// building of the next batches instead of after it.
pub(crate) struct GroupedHandoffs;

impl GroupedHandoffs {
    /// A partition's held batches go to the sender thread once they reach
    /// this many bytes (the most it joins in one write).
    pub(crate) const GROUP_BYTES: usize = super::sender::MAX_GROUP_BYTES;
    /// ... or once the first of them was held this long. A partition
    /// sealing batches less often than this is not streaming: it hands
    /// them to the sender thread one by one, as a producer without held
    /// groups does.
    pub(crate) const HOLD: Duration = Duration::from_micros(250);
    /// Past this many held bytes over all partitions, the held batches of
    /// every partition the sender thread has none of go to it (many
    /// partitions, each sealing seldom); see [`Accumulator::release_idle`].
    pub(crate) const HELD_CAP: usize = 4 << 20;
    /// Held batches not handed over this long after they were due (their
    /// partition stopped sealing) go to the sender thread, which looks this
    /// often while batches are open or held.
    pub(crate) const STALE: Duration = Duration::from_millis(1);
}

/// The sealed batches of one partition not yet handed to the sender thread
/// ([`GroupedHandoffs`]), in seal order.
#[derive(Debug, Default)]
pub(crate) struct Held {
    pub(crate) batches: VecDeque<Batch>,
    /// Their bytes.
    pub(crate) bytes: usize,
    /// When the partition last sealed a batch, and when its first held
    /// batch was held.
    last_seal: Option<Instant>,
    first_held: Option<Instant>,
    /// What the producer's lock and the sender thread share about the
    /// partition: how many of its batches the sender has, and its
    /// sequences.
    pub(crate) shared: Arc<PartitionShared>,
}

impl Held {
    /// Whether these batches may go to the sender thread as a group now:
    /// it has none of the partition's earlier batches left (while it has,
    /// the group grows).
    fn free(&self) -> bool {
        !self.batches.is_empty() && self.shared.with_sender.load(Ordering::Acquire) == 0
    }

    /// Whether they are due to be handed over at `now`.
    fn due(&self, now: Instant) -> bool {
        self.bytes >= GroupedHandoffs::GROUP_BYTES
            || self
                .first_held
                .is_none_or(|t| now.saturating_duration_since(t) >= GroupedHandoffs::HOLD)
    }
}

/// The producer's shared state, behind its one mutex.
#[derive(Debug)]
pub(crate) struct Accumulator {
    pub(crate) topics: Vec<TopicEntry>,
    index: HashMap<Arc<str>, usize>,
    /// The entry used last: most sends go to the same topic as the one before.
    last: usize,
    /// The name a send gave when entry `last` was last looked up, if it
    /// was a shared one (an `Arc<str>` topic held by the caller): a send
    /// with the same shared name is recognised by its address, without
    /// comparing bytes. Held, so the address cannot be reused by another
    /// name.
    last_name: Option<Arc<str>>,
    /// Sealed batches in seal order, waiting for the sender thread.
    pub(crate) ready: VecDeque<Batch>,
    /// Open batches over all topics.
    pub(crate) open: usize,
    /// Bytes of `buffer.memory` held by open, ready and in-flight batches.
    pub(crate) used: usize,
    /// Buffers of finished batches kept for new batches.
    pub(crate) spare: SpareBuffers,
    /// Seal-order number of the last sealed batch.
    pub(crate) sealed_seq: u64,
    /// Seal-order number of the last batch the sender finished (it finishes
    /// them in seal order); `u64::MAX` once the sender thread is gone.
    pub(crate) done_seq: u64,
    /// The smallest seal number a `flush` or `close` waits for
    /// (`u64::MAX` when none waits): the sender signals only once
    /// `done_seq` reaches it, not after every batch.
    pub(crate) flush_target: u64,
    /// Sends waiting for room in `buffer.memory`.
    pub(crate) space_waiters: VecDeque<Sender<()>>,
    /// How many sends wait for room: while any does, every batch is sent
    /// without waiting for `linger.ms`, as in Kafka.
    pub(crate) blocked: usize,
    /// Held bytes past which a seal looks for idle partitions' batches to
    /// hand to the sender again ([`Accumulator::release_idle`]); 0 below
    /// [`GroupedHandoffs::HELD_CAP`].
    next_idle_scan: usize,
    /// No more sends are accepted.
    pub(crate) closed: bool,
    /// The sender must be woken (a batch was sealed, or opened with a
    /// deadline before the one the sender sleeps until).
    pub(crate) pending_wake: bool,
    /// A transaction ended: the sender writes the answered markers
    /// (`ClusterInner::complete_answered_txns`) at its next turn.
    pub(crate) markers_due: bool,
    /// While the sender thread sleeps, the clock time it sleeps until
    /// (`i64::MAX`: until woken); [`SENDER_RUNNING`] while it works, when
    /// it will look at the batches again before sleeping and needs no wake.
    pub(crate) sender_wakes_at: i64,
    /// `linger.ms`.
    linger_ms: i64,
    /// The transaction state of a transactional producer.
    pub(crate) txn: Option<TxnManager>,
    /// A commit handed to the sender thread, which ends the transaction
    /// once every batch of it is finished.
    pub(crate) commit: Option<CommitJob>,
    /// Partitions a transaction opened a batch in, for the sender to add to
    /// the transaction before the batch is sealed.
    pub(crate) early_adds: Vec<EarlyAdd>,
    /// The partitions (entry index, partition) put in `early_adds` during
    /// transaction `early_txn`: each once per transaction.
    early_seen: HashSet<(usize, u32)>,
    early_txn: u64,
    /// Sealed batches are held and handed to the sender thread in groups
    /// ([`GroupedHandoffs`]).
    pub(crate) grouped: bool,
    /// Batches and bytes in the partitions' [`Held`] queues.
    pub(crate) held_batches: usize,
    held_bytes: usize,
    /// Flushes and closes waiting: held batches go to the sender at once.
    pub(crate) flushes: usize,
    /// Seal numbers of the batches sealed and not finished that the sender
    /// thread has not taken (open batches have none yet).
    outside: BTreeSet<u64>,
    /// The smallest seal number of the batches the sender thread took and
    /// has not finished.
    pub(crate) sender_first: Option<u64>,
}

/// A `commit_transaction` the sender thread completes: once it finished
/// every batch sealed up to `target` (appended and acknowledged, or
/// failed), it checks the transaction's state and writes PrepareCommit
/// (Kafka's `EndTxn`) itself, answers, and then writes the markers, so the
/// application thread waits for one hand-off instead of two.
#[derive(Debug)]
pub(crate) struct CommitJob {
    /// The transaction's number.
    pub(crate) number: u64,
    /// The seal number of the transaction's last batch.
    pub(crate) target: u64,
    /// The outcome, once the sender answered.
    pub(crate) answer: Option<Result<()>>,
}

/// A partition of a transaction, to add to it early.
pub(crate) type EarlyAdd = (Arc<TopicState>, u32, TxnTag);

/// [`Accumulator::sender_wakes_at`] while the sender thread works.
pub(crate) const SENDER_RUNNING: i64 = i64::MIN;

/// A batch of an open transaction is sealed once it holds this many bytes
/// while the sender thread has nothing else to do (instead of lingering
/// until it is full or the transaction commits): the sender appends it
/// while the application still sends the transaction's later records, and
/// the commit finds only the tail left to write.
pub(crate) const TXN_EARLY_BYTES: usize = 4096;

impl Accumulator {
    pub(crate) fn new(linger_ms: i64) -> Self {
        Accumulator {
            topics: Vec::new(),
            index: HashMap::new(),
            last: 0,
            last_name: None,
            ready: VecDeque::new(),
            open: 0,
            used: 0,
            spare: SpareBuffers::default(),
            sealed_seq: 0,
            done_seq: 0,
            flush_target: u64::MAX,
            space_waiters: VecDeque::new(),
            blocked: 0,
            next_idle_scan: 0,
            closed: false,
            pending_wake: false,
            markers_due: false,
            sender_wakes_at: SENDER_RUNNING,
            linger_ms,
            txn: None,
            commit: None,
            early_adds: Vec::new(),
            early_seen: HashSet::new(),
            early_txn: 0,
            grouped: false,
            held_batches: 0,
            held_bytes: 0,
            flushes: 0,
            outside: BTreeSet::new(),
            sender_first: None,
        }
    }

    /// The entry of topic `name`, looked up in the cluster on first use and
    /// again once the cached topic is deleted (a topic re-created under the
    /// same name is a new topic: the old one's open batches are sealed and
    /// will fail).
    #[inline(always)]
    pub(crate) fn entry(
        &mut self,
        cluster: &ClusterInner,
        name: &TopicName,
        batch_size: usize,
        sticky: &StickyPartitions,
    ) -> Result<usize> {
        // Inlined into `send`: the usual case, the topic of the send before,
        // by the same shared name or by the same bytes.
        if let Some(e) = self.topics.get(self.last)
            && (match (name.shared(), &self.last_name) {
                (Some(n), Some(last)) => Arc::ptr_eq(n, last),
                _ => false,
            } || (e.name.len() == name.len() && e.name.as_bytes() == name.as_bytes()))
            && !e.state.is_deleted()
        {
            return Ok(self.last);
        }
        let i = self.entry_lookup(cluster, name, batch_size, sticky)?;
        self.last_name = name.shared().cloned();
        Ok(i)
    }

    /// [`Accumulator::entry`] for another topic than the last one.
    #[inline(never)]
    fn entry_lookup(
        &mut self,
        cluster: &ClusterInner,
        name: &str,
        batch_size: usize,
        sticky: &StickyPartitions,
    ) -> Result<usize> {
        match self.index.get(name) {
            Some(&i) => {
                if self.topics[i].state.is_deleted() {
                    let state = cluster.topic_state_for_append(name)?;
                    for p in 0..self.topics[i].batches.len() {
                        self.seal(i, p as u32, sticky);
                    }
                    // The sender fails them (the topic is gone); a thread
                    // still appending some finds its entry replaced.
                    for p in 0..self.topics[i].held.len() {
                        self.release(i, p as u32);
                    }
                    self.topics[i] = TopicEntry::new(state, batch_size);
                }
                self.last = i;
                Ok(i)
            }
            None => {
                let state = cluster.topic_state_for_append(name)?;
                let i = self.topics.len();
                self.topics.push(TopicEntry::new(state, batch_size));
                self.index.insert(self.topics[i].name.clone(), i);
                self.last = i;
                Ok(i)
            }
        }
    }

    /// The entry of topic `name`, if the producer has one.
    pub(crate) fn find(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Makes `batch` the open batch of `partition` of entry `ti`, which
    /// must have none (seal it first).
    pub(crate) fn open_batch(&mut self, ti: usize, partition: u32, batch: Batch) {
        let entry = &mut self.topics[ti];
        let p = partition as usize;
        if entry.batches.len() <= p {
            entry.batches.resize_with(p + 1, || None);
        }
        debug_assert!(entry.batches[p].is_none(), "open batch replaced");
        self.used += batch.reserved;
        self.open += 1;
        let deadline = batch.created_ms.saturating_add(self.linger_ms);
        if let Some(tag) = batch.txn {
            if tag.number != self.early_txn {
                self.early_txn = tag.number;
                self.early_seen.clear();
            }
            if self.early_seen.insert((ti, partition)) {
                self.early_adds.push((entry.state.clone(), partition, tag));
                if self.sender_wakes_at != SENDER_RUNNING {
                    self.pending_wake = true;
                }
            }
        }
        entry.batches[p] = Some(batch);
        // The sender must learn of an earlier linger deadline.
        if deadline < self.sender_wakes_at {
            self.pending_wake = true;
        }
    }

    /// Seals the open batch of `partition` of entry `ti`, if any, and
    /// queues it for the sender. A batch of sticky-routed records moves the
    /// topic's sticky partition on (KIP-480/794).
    pub(crate) fn seal(&mut self, ti: usize, partition: u32, sticky: &StickyPartitions) {
        let entry = &mut self.topics[ti];
        let Some(mut batch) = entry
            .batches
            .get_mut(partition as usize)
            .and_then(Option::take)
        else {
            return;
        };
        self.sealed_seq += 1;
        batch.seq = self.sealed_seq;
        if batch.keyless && entry.sticky == Some(partition) {
            entry.sticky = None;
            if let Some(count) = NonZeroU32::new(entry.state.partition_count()) {
                sticky.on_batch_complete(&entry.name, count, partition);
            }
        }
        self.open -= 1;
        self.outside.insert(batch.seq);
        if self.grouped {
            self.hold(ti, partition, batch);
            return;
        }
        self.ready.push_back(batch);
        if self.sender_wakes_at != SENDER_RUNNING {
            self.pending_wake = true;
        }
    }

    /// Puts a sealed batch in its partition's [`Held`] queue
    /// ([`GroupedHandoffs`]). A partition that seals batches less often than
    /// [`GroupedHandoffs::HOLD`], holds none and has none with the sender is
    /// not streaming: no other batch is likely to join this one soon, and
    /// it goes to the sender thread at once (with many partitions this is
    /// the usual case). A partition with batches held or with the sender
    /// is busy however long ago it sealed (a send blocked on
    /// `buffer.memory`, or a long write, makes such gaps). Otherwise the
    /// queue waits to be joined, and goes to the sender thread whole once
    /// it is due: it holds [`GroupedHandoffs::GROUP_BYTES`], or its first
    /// batch was held for [`GroupedHandoffs::HOLD`], and the sender has no
    /// batch of the partition left (while it has, the queue grows into a
    /// larger group for its next write). A queue not due waits for a later
    /// seal or the sender thread, which takes it once stale or at its
    /// `linger.ms` deadline (the sender sleeps until the earliest deadline
    /// of the open batches, which this batch's is no earlier than).
    fn hold(&mut self, ti: usize, partition: u32, batch: Batch) {
        let now = Instant::now();
        let p = partition as usize;
        let entry = &mut self.topics[ti];
        if entry.held.len() <= p {
            entry.held.resize_with(p + 1, Held::default);
        }
        let held = &mut entry.held[p];
        let streaming = held
            .last_seal
            .is_some_and(|t| now.saturating_duration_since(t) < GroupedHandoffs::HOLD)
            || !held.batches.is_empty()
            || held.shared.with_sender.load(Ordering::Acquire) > 0;
        held.last_seal = Some(now);
        if held.batches.is_empty() {
            held.first_held = Some(now);
        }
        let size = batch.size();
        held.bytes += size;
        held.batches.push_back(batch);
        self.held_bytes += size;
        self.held_batches += 1;
        if !streaming || (held.free() && held.due(now)) {
            self.release(ti, partition);
        } else if self.held_bytes > GroupedHandoffs::HELD_CAP.max(self.next_idle_scan) {
            self.release_idle();
            // Partitions that wait for the sender stay held: look again
            // only after another group's worth is held, not at every seal.
            self.next_idle_scan = self.held_bytes + GroupedHandoffs::GROUP_BYTES;
        }
        if self.held_bytes <= GroupedHandoffs::HELD_CAP {
            self.next_idle_scan = 0;
        }
    }

    /// Hands the held batches of `partition` of entry `ti` to the sender
    /// thread (to `ready`, in seal order).
    pub(crate) fn release(&mut self, ti: usize, partition: u32) {
        let Some(held) = self.topics[ti].held.get_mut(partition as usize) else {
            return;
        };
        held.first_held = None;
        let n = held.batches.len();
        if n == 0 {
            return;
        }
        let count = SenderCount::add(&held.shared, n);
        for mut batch in held.batches.drain(..) {
            batch.with_sender = Some(count());
            self.ready.push_back(batch);
        }
        self.held_bytes -= held.bytes;
        self.held_batches -= n;
        held.bytes = 0;
        if self.sender_wakes_at != SENDER_RUNNING {
            self.pending_wake = true;
        }
    }

    /// Hands to the sender thread the held batches of every partition that
    /// holds some, for which `pick` says so.
    fn release_where(&mut self, pick: impl Fn(&Held) -> bool) {
        if self.held_batches == 0 {
            return;
        }
        for ti in 0..self.topics.len() {
            for p in 0..self.topics[ti].held.len() {
                let held = &self.topics[ti].held[p];
                if !held.batches.is_empty() && pick(held) {
                    self.release(ti, p as u32);
                }
            }
        }
    }

    /// Hands to the sender thread the held batches of every partition whose
    /// first batch was held
    /// [`GroupedHandoffs::HOLD`] + `stale` ago: their partition stopped
    /// sealing.
    pub(crate) fn release_stale(&mut self, now: Instant, stale: Duration) {
        self.release_where(|held| {
            held.first_held
                .is_some_and(|t| now.saturating_duration_since(t) >= GroupedHandoffs::HOLD + stale)
        });
    }

    /// Hands to the sender thread the held batches of every partition of
    /// which it has no batches ([`GroupedHandoffs::HELD_CAP`] is passed). A
    /// partition whose batches the sender still has keeps its held ones:
    /// handing it more would only lengthen the queue the sender is behind
    /// with, in smaller groups (they go to it as one once it is done;
    /// `buffer.memory` bounds them meanwhile).
    fn release_idle(&mut self) {
        self.release_where(|held| held.shared.with_sender.load(Ordering::Acquire) == 0);
    }

    /// Hands every partition's held batches to the sender thread: a flush,
    /// a close, a full `buffer.memory`.
    fn release_all(&mut self) {
        self.release_where(|_| true);
    }

    /// Notes that the sender thread took the batches with seal numbers
    /// `seqs` (from `ready`).
    pub(crate) fn taken_by_sender(&mut self, seqs: impl IntoIterator<Item = u64>) {
        for seq in seqs {
            self.outside.remove(&seq);
            self.sender_first = Some(self.sender_first.map_or(seq, |s| s.min(seq)));
        }
    }

    /// Moves `done_seq` up to the batch before the first one not finished
    /// anywhere (with the sender thread, held, or in `ready`); every sealed
    /// batch when none is.
    pub(crate) fn update_done(&mut self) -> u64 {
        let first = match (self.sender_first, self.outside.first().copied()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let done = first.map_or(self.sealed_seq, |seq| seq.saturating_sub(1));
        self.done_seq = self.done_seq.max(done);
        self.done_seq
    }

    /// Seals every open batch whose linger has passed at `now`, every
    /// batch of a transaction holding at least `txn_bytes`, or every open
    /// batch when `all`.
    pub(crate) fn seal_expired(
        &mut self,
        now: i64,
        linger_ms: i64,
        all: bool,
        txn_bytes: usize,
        sticky: &StickyPartitions,
    ) {
        if self.open == 0 && self.held_batches == 0 {
            return;
        }
        for ti in 0..self.topics.len() {
            for p in 0..self.topics[ti].batches.len() {
                let expired = self.topics[ti].batches[p].as_ref().is_some_and(|b| {
                    all || now >= b.created_ms.saturating_add(linger_ms)
                        || (b.txn.is_some() && b.size() >= txn_bytes)
                });
                if expired {
                    self.seal(ti, p as u32, sticky);
                }
            }
        }
        if self.held_batches == 0 {
            return;
        }
        if all {
            self.release_all();
            return;
        }
        // Held batches whose linger passed go to the sender.
        self.release_where(|held| {
            held.batches
                .front()
                .is_some_and(|b| now >= b.created_ms.saturating_add(linger_ms))
        });
    }

    /// Seals every open batch.
    pub(crate) fn seal_all(&mut self, sticky: &StickyPartitions) {
        self.seal_expired(0, 0, true, usize::MAX, sticky);
    }

    /// The size at which a batch of transaction `txn` (`None`: outside
    /// transactions) is sealed now: [`TXN_EARLY_BYTES`] while the sender
    /// thread sleeps or waits (it takes the batch at once), else never
    /// before it is full (the sender looks at the open batches again
    /// before it sleeps).
    #[inline]
    pub(crate) fn early_limit(&self, txn: Option<TxnTag>) -> usize {
        if txn.is_some() && self.sender_wakes_at != SENDER_RUNNING {
            TXN_EARLY_BYTES
        } else {
            usize::MAX
        }
    }

    /// The earliest linger deadline of the open batches.
    pub(crate) fn next_deadline(&self, linger_ms: i64) -> Option<i64> {
        if self.open == 0 && self.held_batches == 0 {
            return None;
        }
        let held = self
            .topics
            .iter()
            .flat_map(|t| t.held.iter().filter_map(|h| h.batches.front()));
        self.topics
            .iter()
            .flat_map(|t| t.batches.iter().flatten())
            .chain(held)
            .map(|b| b.created_ms.saturating_add(linger_ms))
            .min()
    }

    /// Wakes every send waiting for room (each looks again).
    pub(crate) fn wake_space_waiters(&mut self) {
        for waiter in self.space_waiters.drain(..) {
            let _ = waiter.try_send(());
        }
    }

    /// Wakes the longest waiting send for room in `buffer.memory` that
    /// still waits (Kafka's `BufferPool` signals its first waiter): woken
    /// together, every blocked send would compete with the sender for the
    /// CPU at each finished batch. A woken send passes the wake-up on when
    /// it leaves the wait.
    pub(crate) fn wake_one_space_waiter(&mut self) {
        while let Some(waiter) = self.space_waiters.pop_front() {
            // A send that stopped waiting dropped its receiver.
            if waiter.try_send(()).is_ok() {
                return;
            }
        }
    }

    /// Takes every batch out, open or sealed (when the sender stops for
    /// good). The caller drops them after releasing the lock.
    pub(crate) fn drain_all(&mut self) -> Vec<Batch> {
        let mut all: Vec<Batch> = self.ready.drain(..).collect();
        for entry in &mut self.topics {
            all.extend(entry.batches.iter_mut().filter_map(Option::take));
            for held in &mut entry.held {
                all.extend(held.batches.drain(..));
                held.bytes = 0;
            }
        }
        self.open = 0;
        self.held_batches = 0;
        self.held_bytes = 0;
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spare_buffers_keep_a_full_batch_capacity_within_their_limit() {
        let buf = |cap: usize| Vec::with_capacity(cap);
        let mut spare = SpareBuffers::new(1_000);
        // Nothing kept before a full batch's capacity is known (not even
        // buffers of no capacity).
        let mut given = vec![buf(300), buf(0)];
        spare.keep(&mut given);
        assert_eq!((spare.buffers.len(), given.len()), (0, 2));
        // A batch smaller than a full one takes nothing (and sets nothing).
        assert!(spare.take(100, 300).is_none());
        assert!(spare.take(300, 300).is_none());
        // Three of 300 fit in 1,000; other capacities stay with the caller.
        let mut given = vec![buf(300), buf(500), buf(300), buf(300), buf(300)];
        let marked: Vec<*const u8> = given.iter().map(Vec::as_ptr).collect();
        spare.keep(&mut given);
        assert_eq!(spare.bytes(), 900);
        assert_eq!(
            given.iter().map(Vec::capacity).collect::<Vec<_>>(),
            [500, 300]
        );
        // The one given back last is taken first.
        assert_eq!(spare.take(300, 300).map(|b| b.as_ptr()), Some(marked[3]));
        assert_eq!(spare.bytes(), 600);
        // A new full capacity (a topic with another batch size) drops the rest.
        assert!(spare.take(400, 400).is_none());
        assert_eq!(spare.bytes(), 0);
    }

    #[test]
    fn a_batch_is_sized_for_batch_size_or_its_record_while_half_the_memory_stays_free() {
        const MEMORY: usize = 1 << 25;
        let full = BatchBuilder::capacity_for(16_384 - RECORD_BATCH_OVERHEAD);
        assert_eq!(full, 16_384 + 32);
        assert_eq!(full_capacity(16_384, 136), full);
        assert_eq!(batch_capacity(16_384, 136, 0, MEMORY), full);
        assert_eq!(batch_capacity(16_384, 136, MEMORY / 2 - full, MEMORY), full);
        // A record larger than the batch limit: a buffer of its own size.
        assert_eq!(
            batch_capacity(16_384, 20_036, 0, MEMORY),
            BatchBuilder::capacity_for(20_036)
        );
        // Past half of buffer.memory: an eighth of a batch.
        let start = BatchBuilder::capacity_for((16_384 - RECORD_BATCH_OVERHEAD) / 8);
        assert_eq!(
            batch_capacity(16_384, 136, MEMORY / 2 - full + 1, MEMORY),
            start
        );
        assert_eq!(batch_capacity(16_384, 136, MEMORY - 10_000, MEMORY), start);
        // ... at most what is free, at least the record's room.
        let lone = BatchBuilder::capacity_for(136);
        assert_eq!(batch_capacity(16_384, 136, MEMORY - 1_000, MEMORY), 1_000);
        assert_eq!(batch_capacity(16_384, 136, MEMORY - 100, MEMORY), lone);
        assert_eq!(batch_capacity(16_384, 1_500, 0, 4_000), start);
        assert_eq!(batch_capacity(16_384, 3_000, 0, 4_000), 3_000 + 61 + 32);
        // batch.size 0 (no batching): each record alone.
        assert_eq!(batch_capacity(0, 136, 0, MEMORY), lone);
    }

    #[test]
    fn a_batch_grows_by_doubling_within_its_limit_and_what_is_free() {
        let full = full_capacity(16_384, 136);
        // Room enough: no growth.
        assert_eq!(grown_capacity(2_000, 1_800, 136, full, 0), 2_000);
        assert_eq!(grown_capacity(2_000, 1_900, 136, full, 1 << 20), 4_000);
        assert_eq!(grown_capacity(10_000, 9_900, 136, full, 1 << 20), full);
        // Less free than a doubling: what is free ...
        assert_eq!(grown_capacity(2_000, 1_900, 136, full, 1_000), 3_000);
        // ... but what the record needs (its caller waited for that).
        let needed = BatchBuilder::capacity_for(1_900 - RECORD_BATCH_OVERHEAD + 136);
        assert_eq!(grown_capacity(2_000, 1_900, 136, full, 0), needed);
    }

    #[test]
    fn accumulator_starts_empty() {
        let acc = Accumulator::new(5);
        assert_eq!((acc.open, acc.used, acc.sealed_seq), (0, 0, 0));
        assert_eq!(acc.next_deadline(5), None);
    }
}
