//! The record accumulator: per partition, the open batch that records are
//! encoded into, and the queue of sealed batches waiting for the sender.
//!
//! Everything here lives behind the producer's one mutex; a `send` takes it
//! once. Nothing here blocks or runs user code, so batches that could run
//! callbacks when dropped are never dropped while it is held.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::Mutex;

use super::future::{BatchResult, Callback, Outcome};
use super::record::TopicName;
use super::transaction::{TxnManager, TxnTag};
use crate::client::partitioner::StickyPartitions;
use crate::cluster::{ClusterInner, PendingAck, TopicState};
use crate::error::{Error, Result};
use crate::format::{BatchBuilder, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, RECORD_BATCH_OVERHEAD};
use crate::replica::{ReplicaManager, TopicIdPartition};

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
    /// The count it is in while the sender thread has it
    /// ([`PartitionShared::with_sender`] or
    /// [`PartitionShared::completing`]); the sender counts it down when it
    /// finishes the batch.
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

/// What the sender thread and the sending threads ([`DirectAppends`])
/// share about one partition: who has its batches, and its sequences.
///
/// ## Who numbers a partition
/// A partition's batches are numbered (given their sequences) when they
/// are encoded, once, in seal order, by whichever thread appends them
/// first: a sending thread appending a group it took from the partition's
/// [`Held`] queue, or the sender thread. Both number from the same
/// [`PartitionShared::sequences`], and never at the same time, by the rule
/// that decides who appends the partition: a sending thread takes a group
/// only while `with_sender` is 0 (no batch of the partition is with the
/// sender to be sent, or sent again) and no other sending thread is
/// appending it ([`Held::writing`], under the producer's lock); the sender
/// thread is handed a partition's batches only while no sending thread
/// appends it, and counts them in `with_sender` until they are finished.
/// So the batches the sender numbers (fresh ones) or renumbers (KIP-360's
/// epoch bump, of batches waiting to be sent again) are all counted in
/// `with_sender`, and a sending thread numbers only while it is 0. The one
/// way a batch reaches the sender's queue of batches to send without
/// being counted there is a batch a sending thread appended and handed
/// over to complete (counted in `completing`) whose acknowledgement then
/// failed: it moves to `with_sender` ([`SenderCount::move_to_sender`]) before
/// it is queued again, and the sender renumbers the partition only once
/// no sending thread that took a group before that is still appending it
/// (`writing`). The mutex around the sequences is never contended; it
/// keeps the hand-over between threads memory-safe, the rule above keeps
/// the numbering in seal order.
#[derive(Debug)]
pub(crate) struct PartitionShared {
    /// Batches of this partition with the sender thread, not yet finished
    /// (each holds a [`SenderCount`] and counts down when finished): while
    /// any is, no sending thread appends this partition, so the
    /// partition's batches are numbered, appended and completed in seal
    /// order.
    pub(crate) with_sender: AtomicUsize,
    /// Batches of this partition a sending thread appended and handed to
    /// the sender thread to complete (callbacks, an acknowledgement to
    /// wait for), not yet completed: while any is, a sending thread hands
    /// its own appended batches over too instead of completing them, so
    /// the partition's records complete in order.
    pub(crate) completing: AtomicUsize,
    /// A sending thread is appending this partition: nobody else appends
    /// it meanwhile ([`Held::writing`]). Set and cleared under the
    /// producer's lock; the sender reads it without.
    pub(crate) writing: AtomicBool,
    /// The last append from a sending thread was not acknowledged at once
    /// (or none was made yet): see `Core::append_held`.
    pub(crate) acks_wait: AtomicBool,
    /// The partition's sequences.
    pub(crate) sequences: Mutex<Sequences>,
}

impl Default for PartitionShared {
    fn default() -> Self {
        PartitionShared {
            with_sender: AtomicUsize::new(0),
            completing: AtomicUsize::new(0),
            writing: AtomicBool::new(false),
            acks_wait: AtomicBool::new(true),
            sequences: Mutex::default(),
        }
    }
}

/// A batch's place in its partition's [`PartitionShared`] counts while the
/// sender thread has it.
#[derive(Debug)]
pub(crate) struct SenderCount {
    shared: Arc<PartitionShared>,
    /// Counted in `completing` (else in `with_sender`).
    completing: bool,
}

impl SenderCount {
    /// Counts `n` batches in `shared`'s `completing` or `with_sender`
    /// count and returns their places.
    fn add(shared: &Arc<PartitionShared>, completing: bool, n: usize) -> impl Fn() -> SenderCount {
        let count = if completing {
            &shared.completing
        } else {
            &shared.with_sender
        };
        count.fetch_add(n, Ordering::AcqRel);
        let shared = shared.clone();
        move || SenderCount {
            shared: shared.clone(),
            completing,
        }
    }

    /// The partition's shared state.
    pub(crate) fn shared(&self) -> &Arc<PartitionShared> {
        &self.shared
    }

    /// The batch goes back to the sender's queue to be sent again: it
    /// keeps sending threads from the partition from now on (see
    /// [`PartitionShared`]).
    pub(crate) fn move_to_sender(&mut self) {
        if self.completing {
            // First the new count: the two are never both 0 meanwhile.
            self.shared.with_sender.fetch_add(1, Ordering::AcqRel);
            self.shared.completing.fetch_sub(1, Ordering::AcqRel);
            self.completing = false;
        }
    }

    /// The batch is finished: a sending thread may append the partition
    /// once none is left.
    pub(crate) fn done(self) {
        let count = if self.completing {
            &self.shared.completing
        } else {
            &self.shared.with_sender
        };
        count.fetch_sub(1, Ordering::AcqRel);
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
    /// The sealed batches each partition holds back ([`DirectAppends`]).
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

/// A producer that holds sealed batches back to move them a group at a
/// time: acks=1 or acks=all, idempotent or transactional or neither,
/// without injected faults, with a `linger.ms` above 0. Instead of waking the
/// sender thread for each sealed batch, the thread that seals a batch holds
/// it back in its partition's [`Held`] queue, and once the queue is due
/// (see [`Accumulator::hold`]) moves it whole: up to
/// [`DirectAppends::GROUP_BYTES`] in one (vectored) write. Who writes it
/// adapts to the machine. While the sender thread keeps up with the
/// partition, the due group goes to it, and it writes on its CPU while the
/// sending threads build the next batches (100-byte records: 1.2x the
/// rate of writing on the sending thread on two idle CPUs). Once a whole
/// group waits behind batches the sender has not finished (a busy machine
/// took its CPU, or its writes cost more than the building: 1 KiB
/// records), the sending thread appends the partition's next
/// [`DirectAppends::OWN_GROUPS`] due groups itself, in its send, instead
/// of queueing them behind the slower sender; then it hands the sender a
/// group again. (Completions still run on the sender thread: beside a
/// CPU-bound process, 1 KiB records at full speed still wait 10 ms at the
/// median, against 3 ms when the sending thread always wrote.) A
/// transactional producer's sending threads take no own groups. The
/// sender thread also takes what lingers (a held batch whose
/// `linger.ms` passed), what a flush, a `wait` or a full `buffer.memory`
/// asks for, retries, and the completions of the sending threads' appends
/// that need it (callbacks, which always run on it, and acknowledgements
/// not given at the append: acks=all with followers, or an fsync to wait
/// for). An idempotent producer's sending thread numbers what it appends
/// ([`PartitionShared`]). A flush, and a transactional producer's commit,
/// append what is held on the calling thread (`Core::append_own`), so a
/// transaction's batches reach the log through the sender thread or its
/// commit. Such
/// a producer's accumulator has [`Accumulator::direct`] set; these are
/// its limits.
pub(crate) struct DirectAppends;

impl DirectAppends {
    /// A partition's held batches are appended once they reach this many
    /// bytes, at most this many per write (as the sender joins batches).
    pub(crate) const GROUP_BYTES: usize = super::sender::MAX_GROUP_BYTES;
    /// ... or once the first of them was held this long. A partition
    /// sealing batches less often than this is not streaming: it hands
    /// them to the sender thread one by one, as a producer without direct
    /// appends does.
    pub(crate) const HOLD: Duration = Duration::from_micros(250);
    /// Past this many held bytes over all partitions, the held batches of
    /// every partition that no thread appends and the sender thread has
    /// none of go to the sender thread (many partitions, each sealing
    /// seldom); see [`Accumulator::release_idle`].
    pub(crate) const HELD_CAP: usize = 4 << 20;
    /// Held batches that no sending thread appended this long after they
    /// were due (their partition stopped sealing) go to the sender thread,
    /// which looks this often while batches are open or held.
    pub(crate) const STALE: Duration = Duration::from_millis(1);
    /// Groups the sending threads append themselves once the sender thread
    /// fell a whole group behind a partition, before they hand it one
    /// again.
    pub(crate) const OWN_GROUPS: u32 = 16;
}

/// The sealed batches of one partition not yet taken by the sender thread
/// or by a sending thread that appends them ([`DirectAppends`]), in seal
/// order.
#[derive(Debug, Default)]
pub(crate) struct Held {
    pub(crate) batches: VecDeque<Batch>,
    /// Their bytes.
    pub(crate) bytes: usize,
    /// Someone waits for one of them (`SendFuture::wait`): once the
    /// writing thread is done, the rest goes to the sender thread.
    pub(crate) urgent: bool,
    /// When the partition last sealed a batch, and when its first held
    /// batch was held.
    last_seal: Option<Instant>,
    first_held: Option<Instant>,
    /// How many more due groups the sending threads append themselves
    /// before the next is handed to the sender thread again (see
    /// [`Accumulator::hold`]): set to [`DirectAppends::OWN_GROUPS`] when
    /// the sender thread fell a whole group behind the partition.
    own_groups: u32,
    /// What the sender thread and the sending threads share about the
    /// partition: who has its batches, and its sequences.
    pub(crate) shared: Arc<PartitionShared>,
}

impl Held {
    /// Whether a sending thread is appending batches of this partition
    /// (nobody else appends it meanwhile).
    pub(crate) fn writing(&self) -> bool {
        self.shared.writing.load(Ordering::Acquire)
    }

    /// Whether a sending thread may append these batches now.
    fn free(&self) -> bool {
        !self.batches.is_empty()
            && !self.writing()
            && self.shared.with_sender.load(Ordering::Acquire) == 0
    }

    /// Whether they are due to be appended at `now`.
    fn due(&self, now: Instant) -> bool {
        self.bytes >= DirectAppends::GROUP_BYTES
            || self
                .first_held
                .is_none_or(|t| now.saturating_duration_since(t) >= DirectAppends::HOLD)
    }
}

/// Batches a sending thread appended (or tried to) and hands to the
/// sender thread to finish ([`DirectAppends`]).
pub(crate) enum Handoff {
    /// Not appended (one of them could not be encoded): the sender sends
    /// them as it sends any batch.
    Unsent(Vec<Batch>),
    /// Appended together; the sender completes them in order once `ack`
    /// (if any) completes, after `sync` (if any: the fsync the append left
    /// to its caller) ran, and runs their callbacks.
    Appended {
        batches: Vec<Batch>,
        outcomes: Vec<Outcome>,
        ack: Option<PendingAck>,
        sync: Option<(Arc<ReplicaManager>, TopicIdPartition, u64)>,
    },
    /// The append failed: the sender retries them or fails them.
    Failed { batches: Vec<Batch>, error: Error },
}

impl Handoff {
    pub(crate) fn batches(&self) -> &[Batch] {
        match self {
            Handoff::Unsent(batches)
            | Handoff::Appended { batches, .. }
            | Handoff::Failed { batches, .. } => batches,
        }
    }

    pub(crate) fn into_batches(self) -> Vec<Batch> {
        match self {
            Handoff::Unsent(batches)
            | Handoff::Appended { batches, .. }
            | Handoff::Failed { batches, .. } => batches,
        }
    }

    fn batches_mut(&mut self) -> &mut [Batch] {
        match self {
            Handoff::Unsent(batches)
            | Handoff::Appended { batches, .. }
            | Handoff::Failed { batches, .. } => batches,
        }
    }
}

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handoff")
            .field("batches", &self.batches().len())
            .finish_non_exhaustive()
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
    /// [`DirectAppends::HELD_CAP`].
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
    /// Sending threads append their sealed batches themselves
    /// ([`DirectAppends`]).
    pub(crate) direct: bool,
    /// Batches and bytes in the partitions' [`Held`] queues.
    pub(crate) held_batches: usize,
    held_bytes: usize,
    /// Sending threads appending now.
    pub(crate) direct_writers: usize,
    /// A partition (entry index, partition) whose held batches became due
    /// at a seal: the sending thread appends them once its send is done.
    pub(crate) direct_due: Option<(usize, u32)>,
    /// What sending threads appended (or failed to) for the sender thread
    /// to finish.
    pub(crate) handoffs: Vec<Handoff>,
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
            direct: false,
            held_batches: 0,
            held_bytes: 0,
            direct_writers: 0,
            direct_due: None,
            handoffs: Vec::new(),
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
            // With direct appends the partitions are added by whoever
            // appends the transaction's batches, at the latest by its
            // commit (`Core::append_own`): an early add would wake the
            // sender thread for each transaction.
            if !self.direct && self.early_seen.insert((ti, partition)) {
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
        self.seal_as(ti, partition, sticky, false);
    }

    /// Seals every open batch and, with [`Accumulator::direct`], keeps
    /// each in its partition's [`Held`] queue whatever [`Accumulator::hold`]
    /// would decide, for the calling thread to append them itself (a
    /// flush, a commit); returns the partitions that hold batches and
    /// that the calling thread may append now (`Held::free`), and whether
    /// any of their batches has a callback (which the sender thread runs).
    pub(crate) fn seal_to_held(&mut self, sticky: &StickyPartitions) -> (Vec<(usize, u32)>, bool) {
        let mut free = Vec::new();
        let mut callbacks = false;
        if !self.direct {
            return (free, callbacks);
        }
        for ti in 0..self.topics.len() {
            for p in 0..self.topics[ti].batches.len() {
                if self.topics[ti].batches[p].is_some() {
                    self.seal_as(ti, p as u32, sticky, true);
                }
            }
            for (p, held) in self.topics[ti].held.iter().enumerate() {
                if held.free() {
                    free.push((ti, p as u32));
                    callbacks |= held.batches.iter().any(|b| !b.callbacks.is_empty());
                }
            }
        }
        (free, callbacks)
    }

    /// [`Accumulator::seal`]; `keep`: see [`Accumulator::seal_to_held`].
    fn seal_as(&mut self, ti: usize, partition: u32, sticky: &StickyPartitions, keep: bool) {
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
        if self.direct {
            self.hold(ti, partition, batch, keep);
            return;
        }
        self.ready.push_back(batch);
        if self.sender_wakes_at != SENDER_RUNNING {
            self.pending_wake = true;
        }
    }

    /// Puts a sealed batch in its partition's [`Held`] queue
    /// ([`DirectAppends`]). A partition that seals batches less often than
    /// [`DirectAppends::HOLD`], holds none and has none with the sender is
    /// not streaming: no other batch is likely to join this one soon, and
    /// the sender thread appends it (in parallel with the sending thread;
    /// with many partitions this is the usual case). A partition with
    /// batches held or with the sender is busy however long ago it sealed
    /// (a send blocked on `buffer.memory`, or a long write, makes such
    /// gaps). Otherwise the queue waits to be joined until it is due: it
    /// holds [`DirectAppends::GROUP_BYTES`], or its first batch was held
    /// for [`DirectAppends::HOLD`], and nothing of the partition is with
    /// the sender or being appended elsewhere. A due queue goes to the
    /// sender thread whole, unless the partition has own groups left
    /// (`Held::own_groups`, set when a whole group waited behind the
    /// sender's unfinished batches of it): then `direct_due` notes it for
    /// the sealing thread to append. A queue not due waits for a later
    /// seal, the thread appending the partition, or the sender thread,
    /// which takes it once stale or at its `linger.ms` deadline (the sender
    /// sleeps until the earliest deadline of the open batches, which this
    /// batch's is no earlier than). With `keep`, the batch is only
    /// queued: the sealing thread appends it next.
    fn hold(&mut self, ti: usize, partition: u32, batch: Batch, keep: bool) {
        let now = Instant::now();
        let p = partition as usize;
        let entry = &mut self.topics[ti];
        if entry.held.len() <= p {
            entry.held.resize_with(p + 1, Held::default);
        }
        let held = &mut entry.held[p];
        let streaming = held
            .last_seal
            .is_some_and(|t| now.saturating_duration_since(t) < DirectAppends::HOLD)
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
        if keep {
            return;
        }
        if !streaming && !held.writing() {
            self.release(ti, partition);
        } else if held.free() && held.due(now) {
            if held.own_groups == 0 {
                // The sender kept up with the partition: it appends this
                // group on its CPU while the sending threads go on.
                self.release(ti, partition);
            } else if self.direct_due.is_none() {
                self.direct_due = Some((ti, partition));
            }
        } else if self.txn.is_none()
            && held.own_groups == 0
            && held.bytes >= DirectAppends::GROUP_BYTES
            && held.shared.with_sender.load(Ordering::Acquire) > 0
        {
            // A whole group waits behind what the sender has not finished
            // of the partition: the sender is slower than the sending
            // threads (a busy machine takes its CPU, or its writes cost
            // more than building the batches). The sending threads append
            // the partition's next groups themselves, as the sender would.
            // (Not a transactional producer's: its commit appends.)
            held.own_groups = DirectAppends::OWN_GROUPS;
        } else if self.held_bytes > DirectAppends::HELD_CAP.max(self.next_idle_scan) {
            self.release_idle();
            // Partitions that wait for the sender stay held: look again
            // only after another group's worth is held, not at every seal.
            self.next_idle_scan = self.held_bytes + DirectAppends::GROUP_BYTES;
        }
        if self.held_bytes <= DirectAppends::HELD_CAP {
            self.next_idle_scan = 0;
        }
    }

    /// Hands the held batches of `partition` of entry `ti` to the sender
    /// thread (to `ready`, in seal order).
    fn release(&mut self, ti: usize, partition: u32) {
        let Some(held) = self.topics[ti].held.get_mut(partition as usize) else {
            return;
        };
        held.urgent = false;
        held.first_held = None;
        let n = held.batches.len();
        if n == 0 {
            return;
        }
        let count = SenderCount::add(&held.shared, false, n);
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
    /// holds some and that no sending thread appends, for which `pick`
    /// says so.
    fn release_where(&mut self, pick: impl Fn(&Held) -> bool) {
        if self.held_batches == 0 {
            return;
        }
        for ti in 0..self.topics.len() {
            for p in 0..self.topics[ti].held.len() {
                let held = &self.topics[ti].held[p];
                if !held.batches.is_empty() && !held.writing() && pick(held) {
                    self.release(ti, p as u32);
                }
            }
        }
    }

    /// Hands to the sender thread the held batches of every partition that
    /// no sending thread appends and whose first batch was held
    /// [`DirectAppends::HOLD`] + `stale` ago: their partition stopped
    /// sealing.
    pub(crate) fn release_stale(&mut self, now: Instant, stale: Duration) {
        self.release_where(|held| {
            held.first_held
                .is_some_and(|t| now.saturating_duration_since(t) >= DirectAppends::HOLD + stale)
        });
    }

    /// Hands to the sender thread the held batches of every partition that
    /// no sending thread appends and of which the sender thread has no
    /// batches ([`DirectAppends::HELD_CAP`] is passed). A partition whose
    /// batches the sender still has keeps its held ones: handing it more
    /// would only lengthen the queue the sender is behind with, and keep
    /// the partition from the sending threads, which write faster (they
    /// take its batches over once the sender is done; `buffer.memory`
    /// bounds them meanwhile).
    fn release_idle(&mut self) {
        self.release_where(|held| held.shared.with_sender.load(Ordering::Acquire) == 0);
    }

    /// Hands the held batches of `partition` of entry `ti` to the sender
    /// thread now or, while a sending thread appends the partition, once
    /// that thread is done (`urgent`).
    pub(crate) fn release_soon(&mut self, ti: usize, partition: u32) {
        let Some(held) = self.topics[ti].held.get_mut(partition as usize) else {
            return;
        };
        if held.writing() {
            held.urgent = true;
        } else {
            self.release(ti, partition);
        }
    }

    /// Hands every partition's held batches to the sender thread, those of
    /// partitions a sending thread is appending once it is done
    /// ([`Accumulator::release_soon`]): a flush, a close, a full
    /// `buffer.memory`.
    fn release_all(&mut self) {
        if self.held_batches == 0 {
            return;
        }
        for ti in 0..self.topics.len() {
            for p in 0..self.topics[ti].held.len() {
                if !self.topics[ti].held[p].batches.is_empty() {
                    self.release_soon(ti, p as u32);
                }
            }
        }
    }

    /// Takes the first held batches of `partition` of entry `ti`, up to
    /// `limit` bytes (at least one) and, with `max_in_flight` (acks=all),
    /// as many batches as may wait for their acknowledgement besides those
    /// handed to the sender to complete, for this thread to append, if a
    /// sending thread may append them now; marks the partition as being
    /// appended.
    pub(crate) fn take_group(
        &mut self,
        ti: usize,
        partition: u32,
        limit: usize,
        max_in_flight: Option<usize>,
    ) -> Option<(Vec<Batch>, Arc<PartitionShared>)> {
        let held = self.topics.get_mut(ti)?.held.get_mut(partition as usize)?;
        if !held.free() {
            return None;
        }
        // As the sender bounds the batches waiting for an acks=all
        // acknowledgement (the duplicate check of a resend remembers only
        // so many batches).
        let room = match max_in_flight {
            Some(max) => max.saturating_sub(held.shared.completing.load(Ordering::Acquire)),
            None => usize::MAX,
        };
        if room == 0 {
            return None;
        }
        let mut group = Vec::new();
        let mut bytes = 0;
        let mut cut_by_room = false;
        while let Some(next) = held.batches.front() {
            let size = next.size();
            if !group.is_empty() && (bytes + size > limit || group.len() >= room) {
                cut_by_room = bytes + size <= limit;
                break;
            }
            bytes += size;
            group.extend(held.batches.pop_front());
        }
        held.bytes -= bytes;
        held.own_groups = held.own_groups.saturating_sub(1);
        held.shared.writing.store(true, Ordering::Release);
        held.first_held = if held.batches.is_empty() {
            None
        } else if cut_by_room {
            // The rest was due with these (its first batch held as long):
            // it stays due, for this thread's next round.
            held.first_held
        } else {
            // The rest was held no earlier than the last seal.
            held.last_seal
        };
        self.held_bytes -= bytes;
        self.held_batches -= group.len();
        self.direct_writers += 1;
        Some((group, held.shared.clone()))
    }

    /// Ends a sending thread's append of held batches of `partition` of
    /// entry `ti` (taken by [`Accumulator::take_group`] for `topic`), with
    /// what the sender thread must finish of them, if anything (counted as
    /// the partition's batches with the sender). Then, for the batches
    /// held meanwhile: the sender takes them if someone waits for them;
    /// else whether they are due for this thread to append too.
    pub(crate) fn end_writing(
        &mut self,
        ti: usize,
        partition: u32,
        topic: &Arc<TopicState>,
        shared: &PartitionShared,
        handoff: Option<Handoff>,
    ) -> bool {
        self.direct_writers -= 1;
        shared.writing.store(false, Ordering::Release);
        if (self.closed || handoff.is_some()) && self.sender_wakes_at != SENDER_RUNNING {
            // The sender waits for this thread before it exits.
            self.pending_wake = true;
        }
        let entry = self
            .topics
            .get_mut(ti)
            .filter(|e| Arc::ptr_eq(&e.state, topic));
        let Some(held) = entry.and_then(|e| e.held.get_mut(partition as usize)) else {
            // The topic was deleted meanwhile: its entry is a new one.
            self.handoffs.extend(handoff);
            return false;
        };
        if let Some(mut handoff) = handoff {
            // Batches the sender will append keep the partition from
            // sending threads until they are; appended ones only wait
            // for their completion (the sender completes what it is handed
            // in order, and runs every callback).
            let completing = matches!(handoff, Handoff::Appended { .. });
            let batches = handoff.batches_mut();
            let count = SenderCount::add(&held.shared, completing, batches.len());
            for batch in batches {
                batch.with_sender = Some(count());
            }
            self.handoffs.push(handoff);
        }
        // Busy writing is not idle: a batch sealed right after the write
        // belongs to the same stream.
        let now = Instant::now();
        held.last_seal = Some(now);
        if held.batches.is_empty() {
            held.urgent = false;
            return false;
        }
        if held.urgent || self.flushes > 0 || self.blocked > 0 || self.closed {
            self.release(ti, partition);
            return false;
        }
        if held.free() && held.due(now) {
            return true;
        }
        // They wait for a later seal or their linger deadline, which the
        // sender did not count while this thread appended.
        if self
            .held_deadline(ti, partition, self.linger_ms)
            .is_some_and(|d| d < self.sender_wakes_at)
        {
            self.pending_wake = true;
        }
        false
    }

    /// Whether every batch sealed up to seal number `target` that is not
    /// finished was appended and acknowledged and waits only for the
    /// sender thread to complete it (run its callbacks): handed over as
    /// [`Handoff::Appended`] with no acknowledgement or fsync to wait for,
    /// and the sender thread has no batch of its own unfinished.
    pub(crate) fn only_completions_left(&self, target: u64) -> bool {
        if self.sender_first.is_some_and(|s| s <= target) || self.held_batches > 0 {
            return false;
        }
        let waiting = self.outside.range(..=target).count();
        let completing: usize = self
            .handoffs
            .iter()
            .map(|h| match h {
                Handoff::Appended {
                    batches,
                    ack: None,
                    sync: None,
                    ..
                } => batches.iter().filter(|b| b.seq <= target).count(),
                _ => 0,
            })
            .sum();
        waiting == completing
    }

    /// Notes that the batches with seal numbers `seqs` are finished
    /// outside the sender thread.
    pub(crate) fn finished_outside(&mut self, seqs: impl IntoIterator<Item = u64>) {
        for seq in seqs {
            self.outside.remove(&seq);
        }
    }

    /// Notes that the sender thread took the batches with seal numbers
    /// `seqs` (from `ready` or `handoffs`).
    pub(crate) fn taken_by_sender(&mut self, seqs: impl IntoIterator<Item = u64>) {
        for seq in seqs {
            self.outside.remove(&seq);
            self.sender_first = Some(self.sender_first.map_or(seq, |s| s.min(seq)));
        }
    }

    /// Moves `done_seq` up to the batch before the first one not finished
    /// anywhere (with the sender thread, held, in `ready`, or being
    /// appended by a sending thread); every sealed batch when none is.
    pub(crate) fn update_done(&mut self) -> u64 {
        let first = match (self.sender_first, self.outside.first().copied()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let done = first.map_or(self.sealed_seq, |seq| seq.saturating_sub(1));
        self.done_seq = self.done_seq.max(done);
        self.done_seq
    }

    /// Seals every open batch whose linger has passed at `now`, or every
    /// open batch when `all`.
    pub(crate) fn seal_expired(
        &mut self,
        now: i64,
        linger_ms: i64,
        all: bool,
        sticky: &StickyPartitions,
    ) {
        if self.open == 0 && self.held_batches == 0 {
            return;
        }
        for ti in 0..self.topics.len() {
            for p in 0..self.topics[ti].batches.len() {
                let expired = self.topics[ti].batches[p]
                    .as_ref()
                    .is_some_and(|b| all || now >= b.created_ms.saturating_add(linger_ms));
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
        // Held batches whose linger passed go to the sender, unless a
        // sending thread is appending their partition (it looks at them
        // when done).
        self.release_where(|held| {
            held.batches
                .front()
                .is_some_and(|b| now >= b.created_ms.saturating_add(linger_ms))
        });
    }

    /// Seals every open batch.
    pub(crate) fn seal_all(&mut self, sticky: &StickyPartitions) {
        self.seal_expired(0, 0, true, sticky);
    }

    /// The earliest linger deadline of the open batches.
    pub(crate) fn next_deadline(&self, linger_ms: i64) -> Option<i64> {
        if self.open == 0 && self.held_batches == 0 {
            return None;
        }
        // Held batches of a partition a sending thread appends are its
        // to look at when it is done.
        let held = self.topics.iter().flat_map(|t| {
            t.held
                .iter()
                .filter(|h| !h.writing())
                .filter_map(|h| h.batches.front())
        });
        self.topics
            .iter()
            .flat_map(|t| t.batches.iter().flatten())
            .chain(held)
            .map(|b| b.created_ms.saturating_add(linger_ms))
            .min()
    }

    /// The linger deadline of the first held batch of `partition` of entry
    /// `ti`, if it has one.
    pub(crate) fn held_deadline(&self, ti: usize, partition: u32, linger_ms: i64) -> Option<i64> {
        let held = self.topics.get(ti)?.held.get(partition as usize)?;
        held.batches
            .front()
            .map(|b| b.created_ms.saturating_add(linger_ms))
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
        for handoff in self.handoffs.drain(..) {
            all.extend(handoff.into_batches());
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
