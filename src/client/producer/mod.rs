//! The [`Producer`]: Kafka's producer, in process.
//!
//! A `send` encodes the record straight into its partition's open batch
//! (one lock, no allocation beyond what the caller hands in) and returns a
//! [`SendFuture`]. A batch is sealed when it is full (`batch.size`), when
//! its `linger.ms` has passed, when a record's handle is waited on or
//! polled, on `flush`/`close`, or when a `send` waits for `buffer.memory`;
//! the sender thread (`logbus-producer`) then builds
//! it (compression, CRC) and appends it to the partition's log, and
//! completes every record's handle and callback.
//!
//! ## Transactions
//! With a `transactional.id` the producer is Kafka's transactional
//! producer (`transaction.rs`, Kafka's `TransactionManager`): its state
//! sits in the accumulator, under the same mutex, so a `send` checks it
//! and stamps its batch with the transaction. The sender adds each
//! partition to the transaction at the cluster's coordinator as soon as a
//! `send` opens the transaction's first batch there (as Kafka's producer
//! does, so the coordinator's write overlaps with the sends that follow),
//! and at the latest before that batch is appended. `commit_transaction` and
//! `abort_transaction` seal every batch and wait for the sender (as
//! `flush`), so no batch of a transaction is appended after its marker.
//!
//! ## Locks
//! One mutex over the [`Accumulator`]. Taken by `send` (once), by the
//! sender thread (once per batch taken, once per batch finished), by
//! `flush`/`close`, and by a wait on (or the first poll of) a handle whose
//! batch is not done, to seal it. A handle never holds its batch's
//! completion lock while it takes this one; the sender completes batches
//! outside it. Under it the producer may take the cluster's topic
//! table (to look a topic up) and the sticky partitioner's mutex; never
//! the other way round. User code (partitioner, callbacks) never runs
//! under it.

mod accumulator;
mod config;
mod direct;
mod future;
mod into_bytes;
mod record;
mod sender;
mod transaction;

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::{JoinHandle, ThreadId};

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex, MutexGuard};

pub use config::{Acks, ProducerConfig, ProducerConfigBuilder};
pub use future::SendFuture;
pub use into_bytes::IntoBytes;
pub use record::{IntoTopic, ProducerRecord, RecordMetadata, TopicName};

use accumulator::{Accumulator, Batch};
use future::{BatchResult, Callback};

use crate::client::consumer::ConsumerGroupMetadata;
use crate::client::partitioner::{StickyPartitions, partition_for_key};
use crate::clock::Clock;
use crate::cluster::{Cluster, ClusterInner, OffsetAndMetadata, PendingRecords};
use crate::error::{Error, FormatError, Result};
use crate::format::BatchBuilder;
use crate::types::TopicPartition;

/// Messages to the sender thread.
#[derive(Debug)]
enum Msg {
    /// A batch was sealed, or something else changed: look again.
    Wake,
    /// Deliver everything pending, then exit.
    Shutdown,
}

/// A flag and a condition variable: the sender's cheap wait.
#[derive(Debug)]
struct Doorbell {
    rung: Mutex<bool>,
    /// `rung`, readable without the lock, for the spin before parking.
    ringing: AtomicBool,
    cv: Condvar,
    /// How `wait` spins before parking.
    spin: Spinner,
}

impl Doorbell {
    fn new(spin: Spinner) -> Self {
        Doorbell {
            rung: Mutex::new(false),
            ringing: AtomicBool::new(false),
            cv: Condvar::new(),
            spin,
        }
    }

    fn ring(&self) {
        let mut rung = self.rung.lock();
        *rung = true;
        self.ringing.store(true, Ordering::Release);
        drop(rung);
        self.cv.notify_one();
    }

    /// Returns when rung (at once if rung since the last wait) or after
    /// `timeout` (`None`: no timeout), and clears the flag.
    fn wait(&self, timeout: Option<std::time::Duration>) {
        self.spin.until(|| self.ringing.load(Ordering::Acquire));
        let mut rung = self.rung.lock();
        if !*rung {
            match timeout {
                Some(t) => {
                    let _ = self.cv.wait_for(&mut rung, t);
                }
                None => self.cv.wait(&mut rung),
            }
        }
        *rung = false;
        self.ringing.store(false, Ordering::Relaxed);
    }
}

/// Sends records to a [`Cluster`]'s topics: Kafka's `KafkaProducer`.
///
/// `Producer` is `Send + Sync` and cheap to clone; clones share one
/// producer (one buffer, one sender thread). Dropping the last clone
/// closes it, delivering everything pending; so does
/// [`Cluster::close`], which flushes every live producer before it closes
/// the logs.
///
/// Records are routed to a partition by, in order: the partition set on
/// the [`ProducerRecord`]; the custom [`Partitioner`](crate::Partitioner)
/// of the config, when it returns `Some`; Kafka's murmur2 hash of the key
/// ([`partition_for_key`](crate::partition_for_key)), so keys land where
/// Kafka's Java client would put them; else the topic's sticky partition,
/// which changes each time a batch of keyless records for it is sealed.
///
/// Within a partition, records are appended in the order their `send`
/// calls returned.
///
/// With a [`transactional_id`](ProducerConfigBuilder::transactional_id)
/// it is a transactional producer: records are sent inside transactions
/// ([`init_transactions`](Producer::init_transactions),
/// [`begin_transaction`](Producer::begin_transaction),
/// [`commit_transaction`](Producer::commit_transaction),
/// [`abort_transaction`](Producer::abort_transaction)), as Kafka's. A
/// fenced transactional producer ([`Error::ProducerFenced`]) refuses every
/// later call; drop it and make a new one.
///
/// ```
/// use logbus::{Acks, Cluster, ClusterConfig, NewTopic, Producer, ProducerConfig, ProducerRecord};
///
/// let dir = tempfile::tempdir()?;
/// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
/// cluster.create_topic(NewTopic::new("orders", 3))?;
///
/// let producer = Producer::new(&cluster, ProducerConfig::builder().acks(Acks::Leader).build()?)?;
/// // Wait for one record (its batch goes at once, without lingering)...
/// let metadata = producer
///     .send(ProducerRecord::new("orders", "created").with_key("order-1"))?
///     .wait()?;
/// assert_eq!(metadata.offset(), Some(0));
///
/// // ...or hear about it in a callback, on the producer's thread.
/// producer.send_with_callback(
///     ProducerRecord::new("orders", "paid").with_key("order-1"),
///     |result| assert_eq!(result.map(|m| m.offset()).ok(), Some(Some(1))),
/// )?;
/// producer.flush()?; // everything sent so far is appended and called back
/// producer.close()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Producer {
    handle: Arc<Handle>,
}

/// Owned by the `Producer` clones; closing happens when the last one drops.
#[derive(Debug)]
struct Handle {
    core: Arc<Core>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Errors are reported by `Producer::close`; dropping cannot return them.
        let _ = self.core.close(&self.thread);
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        self.cluster.release_handle();
    }
}

/// What the producer and its sender thread share.
#[derive(Debug)]
pub(crate) struct Core {
    cluster: Arc<ClusterInner>,
    config: ProducerConfig,
    client_id: String,
    clock: Arc<dyn Clock>,
    /// This core itself, for the batch results to reach back to it.
    me: Weak<Core>,
    linger_ms: i64,
    max_block_ms: i64,
    /// `batch.size`, `buffer.memory` and `max.request.size` (checked to
    /// fit by `build`).
    batch_size: usize,
    buffer_memory: usize,
    max_request_size: usize,
    acc: Mutex<Accumulator>,
    /// Signalled (with `acc`) when the sender finished the batch
    /// `acc.flush_target` names.
    finished: Condvar,
    /// `Accumulator::done_seq`, readable without the lock (for the spin
    /// of `wait_finished`).
    done_seq: AtomicU64,
    /// The number of the last transaction whose commit the sender
    /// answered ([`accumulator::CommitJob`]), readable without the lock
    /// (for the spin of `commit_transaction`).
    commit_answered: AtomicU64,
    /// How a flush spins before parking.
    spin: Spinner,
    sticky: StickyPartitions,
    work: Sender<Msg>,
    /// Rung with every message on `work`: what the sender waits on when
    /// only new work or a timer can wake it (no acknowledgement in flight,
    /// a system clock), since a condition variable wakes without the spin
    /// a channel select does first.
    doorbell: Doorbell,
    sender_thread: ThreadId,
    /// `enable.idempotence` (resolved).
    idempotent: bool,
    /// The cluster has one broker: every partition has one replica.
    one_broker: bool,
    /// The producer id and epoch an idempotent producer numbers new
    /// partitions in (`NO_PRODUCER_ID` until its first batch is numbered,
    /// by the sender or a sending thread; bumped by KIP-360 resets). Taken
    /// after a partition's sequences, never before.
    identity: Mutex<(i64, i16)>,
    /// `max.in.flight.requests.per.connection`, `retries`,
    /// `retry.backoff.ms`, `delivery.timeout.ms`, `request.timeout.ms`.
    max_in_flight: usize,
    retries: u32,
    retry_backoff_ms: i64,
    delivery_timeout_ms: i64,
    request_timeout_ms: i64,
}

/// Where [`ProduceFaults`] makes an append attempt fail (`internals`
/// feature; for tests).
#[cfg(feature = "internals")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProduceFault {
    /// The attempt goes ahead.
    None,
    /// The attempt fails with a retriable [`Error::Timeout`] before
    /// anything is written.
    BeforeWrite,
    /// The batch is appended (and replicated as usual), but its
    /// acknowledgement is lost: the attempt fails with a retriable
    /// [`Error::Timeout`].
    LoseAck,
}

/// Decides, for each append attempt of a producer's batch, whether it
/// fails ([`ProducerConfigBuilder::faults`]; `internals` feature; for
/// tests).
#[cfg(feature = "internals")]
pub trait ProduceFaults: Send + Sync + std::fmt::Debug {
    /// The fault for the `attempt`-th (from 1) append of a batch (or group
    /// of batches) of `topic`'s `partition`.
    fn fault(&self, topic: &str, partition: u32, attempt: u32) -> ProduceFault;
}

impl Producer {
    /// A producer for `cluster`'s topics. Starts its sender thread
    /// (`logbus-producer`).
    ///
    /// An idempotent producer
    /// ([`enable_idempotence`](ProducerConfig::enable_idempotence)) takes
    /// its producer id from the cluster when it sends its first batch
    /// (Kafka's `InitProducerId`); if the cluster cannot give one (it
    /// cannot record a new block of ids), that batch fails with the error.
    ///
    /// # Errors
    /// [`Error::ReadOnly`](crate::Error::ReadOnly) on a cluster opened with
    /// [`Cluster::open_read_only`](crate::Cluster::open_read_only) (nothing changes);
    /// [`Error::Closed`] if the cluster is closed; [`Error::Io`] if the
    /// thread cannot be started.
    pub fn new(cluster: &Cluster, config: ProducerConfig) -> Result<Producer> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let inner = cluster.inner.clone();
        inner.check_open()?;
        inner.check_writable("producing")?;
        let clock = inner.clock().clone();
        let client_id = if config.client_id().is_empty() {
            format!("producer-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed))
        } else {
            config.client_id().to_string()
        };
        // Wake-ups coalesce; two slots let a shutdown in next to a wake-up.
        let (work, work_rx) = crossbeam_channel::bounded(2);
        // The thread gets its state once its id is known; it subscribes to
        // the clock here, so a clock move after `new` returns is never missed.
        let (core_tx, core_rx) = crossbeam_channel::bounded::<Arc<Core>>(1);
        let ticks = clock.subscribe();
        let thread = std::thread::Builder::new()
            .name("logbus-producer".into())
            .spawn(move || {
                if let Ok(core) = core_rx.recv() {
                    sender::run(&core, &work_rx, &ticks);
                }
            })
            .map_err(|e| Error::io("spawn producer thread", cluster.dir(), e))?;
        let linger_ms = config.linger_millis();
        let config_idempotent = config.enable_idempotence();
        let config_max_in_flight = config.max_in_flight();
        let config_retries = config.retries().unsigned_abs();
        let config_backoff = config.retry_backoff_millis();
        let config_delivery = config.delivery_timeout_millis();
        let config_request = config.request_timeout_millis();
        let size = |bytes: u64| usize::try_from(bytes).unwrap_or(usize::MAX);
        let acc = accumulator_for(&config, linger_ms);
        let one_broker = cluster.config().brokers() == 1;
        let core = Arc::new_cyclic(|me| Core {
            me: me.clone(),
            linger_ms,
            max_block_ms: config.max_block_millis(),
            batch_size: size(config.batch_size()),
            buffer_memory: size(config.buffer_memory()),
            max_request_size: size(config.max_request_size()),
            cluster: inner,
            config,
            client_id,
            clock,
            acc: Mutex::new(acc),
            finished: Condvar::new(),
            done_seq: AtomicU64::new(0),
            commit_answered: AtomicU64::new(0),
            spin: Spinner::for_this_machine(),
            sticky: StickyPartitions::new(),
            work,
            doorbell: Doorbell::new(Spinner::for_this_machine()),
            sender_thread: thread.thread().id(),
            idempotent: config_idempotent,
            one_broker,
            identity: Mutex::new((
                crate::format::NO_PRODUCER_ID,
                crate::format::NO_PRODUCER_EPOCH,
            )),
            max_in_flight: usize::try_from(config_max_in_flight).unwrap_or(usize::MAX),
            retries: config_retries,
            retry_backoff_ms: config_backoff,
            delivery_timeout_ms: config_delivery,
            request_timeout_ms: config_request,
        });
        // The receiver is alive until the thread got its state.
        let _ = core_tx.send(core.clone());
        // Closing the cluster delivers what this producer holds first.
        let weak: Weak<Core> = Arc::downgrade(&core);
        core.cluster.register_client(weak);
        Ok(Producer {
            handle: Arc::new(Handle {
                core,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Sends a record: chooses its partition, encodes it into the
    /// partition's open batch, and returns a handle to its outcome. Blocks
    /// only while `buffer.memory` is full (up to `max.block.ms`). A
    /// transactional producer sends only inside a transaction; the record
    /// belongs to it.
    ///
    /// # Errors
    /// Found before anything is stored, and then the record is dropped:
    /// [`Error::UnknownTopicOrPartition`] for a topic that does not exist or
    /// a partition it does not have; [`Error::InvalidTopic`] for an
    /// internal topic (`__consumer_offsets`); [`Error::RecordTooLarge`] when the
    /// record, as a batch of its own, exceeds `max.request.size`,
    /// `buffer.memory` or the topic's `max.message.bytes`;
    /// [`Error::InvalidBatch`] (with [`FormatError::InvalidRecord`]) for a
    /// record without a key sent to a compacted topic
    /// (`cleanup.policy=compact`);
    /// [`Error::BufferExhausted`] when `buffer.memory` stayed full for
    /// `max.block.ms`; [`Error::InvalidArgument`] for a negative timestamp
    /// or a custom partitioner's partition out of range;
    /// [`Error::Closed`] once the producer (`"producer"`) or the cluster
    /// (`"cluster"`) is closed. A transactional producer: [`Error::IllegalState`]
    /// outside a transaction, the transaction's error once it must be
    /// aborted, [`Error::ProducerFenced`] once fenced. Errors of the
    /// append arrive through the handle (a transactional record also
    /// fails with [`Error::TransactionAborted`] when its transaction is
    /// aborted before it was sent, and with [`Error::InvalidProducerEpoch`] when
    /// a newer producer fenced this one).
    pub fn send(&self, record: ProducerRecord) -> Result<SendFuture> {
        let (result, index, timestamp) = self.handle.core.append(record, None)?;
        let result = result
            .ok_or_else(|| Error::Internal("a send without a callback has no result".into()))?;
        Ok(SendFuture::new(result, index, timestamp))
    }

    /// As [`send`](Producer::send), but hands the outcome to `callback`
    /// instead of a handle. The callback runs exactly once, on the sender
    /// thread, after the batch's append (with [`Acks::None`], when the
    /// sender takes the batch); callbacks of one partition run in send
    /// order. It should be quick, since it holds up the sender. Inside it,
    /// `send` works (but fails with [`Error::BufferExhausted`] rather than
    /// wait for room), while `flush` and waiting on an unfinished
    /// [`SendFuture`] return [`Error::IllegalState`]; a panic in it is
    /// caught and ignored.
    ///
    /// # Errors
    /// As [`send`](Producer::send); the callback is then not called.
    pub fn send_with_callback(
        &self,
        record: ProducerRecord,
        callback: impl FnOnce(Result<RecordMetadata>) + Send + 'static,
    ) -> Result<()> {
        self.handle.core.append(record, Some(Box::new(callback)))?;
        Ok(())
    }

    /// Seals every open batch without waiting for `linger.ms` and blocks
    /// until everything sent before this call is appended and called back
    /// (whatever the outcome; the handles hold the errors). With a
    /// `linger.ms` above 0 and `acks` 1 or all, the calling thread itself
    /// appends the batches of each partition of which the sender thread
    /// has nothing left to append (callbacks still run on the sender
    /// thread); a transactional producer's flush leaves that to its
    /// commit.
    ///
    /// # Errors
    /// [`Error::IllegalState`] inside a producer callback (it would wait
    /// for itself).
    pub fn flush(&self) -> Result<()> {
        self.handle.core.flush()
    }

    /// Closes the producer for every clone: later sends fail with
    /// [`Error::Closed`]; everything already sent is appended and called
    /// back; then the sender thread stops and is joined. Closing again is
    /// a no-op. Called inside a producer callback, it does not wait: the
    /// sender delivers what is pending and stops once the callback returns.
    ///
    /// A transactional producer first aborts its open transaction (as
    /// Kafka's does). Dropping the last clone instead closes without
    /// ending it: the records are delivered and the transaction stays
    /// open until the next [`init_transactions`](Producer::init_transactions)
    /// with the same `transactional.id` or `transaction.timeout.ms`
    /// aborts it — as after a crash.
    ///
    /// # Errors
    /// [`Error::Internal`] if the sender thread panicked.
    pub fn close(&self) -> Result<()> {
        let core = &self.handle.core;
        if core.open_transaction() && !core.on_sender_thread() {
            // Best effort: a fenced or failing producer closes anyway.
            let _ = core.abort_transaction();
        }
        core.close(&self.handle.thread)
    }

    /// Registers the producer's `transactional.id` with the cluster's
    /// transaction coordinator (Kafka's `initTransactions`): takes the
    /// id's producer id with a new epoch, which fences every older
    /// producer with the same id (their later calls fail with
    /// [`Error::ProducerFenced`]) and first aborts the transaction such a
    /// producer left open (or completes one it was committing). Call it
    /// once, before the first [`begin_transaction`](Producer::begin_transaction).
    /// Blocks until done, retrying while the coordinator is not available
    /// for up to `max.block.ms` of clock time.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use logbus::{Cluster, ClusterConfig, NewTopic, Producer, ProducerConfig, ProducerRecord};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    /// cluster.create_topic(NewTopic::new("payments", 2))?;
    /// let config = ProducerConfig::builder().transactional_id("payments-writer").build()?;
    /// let producer = Producer::new(&cluster, config)?;
    /// producer.init_transactions()?;
    ///
    /// producer.begin_transaction()?;
    /// let debit = producer.send(ProducerRecord::new("payments", "debit").with_key("alice"))?;
    /// let credit = producer.send(ProducerRecord::new("payments", "credit").with_key("bob"))?;
    /// producer.commit_transaction()?; // both records, or neither
    /// assert!(debit.wait().is_ok() && credit.wait().is_ok());
    ///
    /// producer.begin_transaction()?;
    /// let oops = producer.send(ProducerRecord::new("payments", "oops").with_key("alice"))?;
    /// producer.abort_transaction()?; // read_committed consumers never see it
    /// assert!(oops.wait().is_err()); // never sent: it lingered in its batch
    /// producer.close()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::IllegalState`] without a `transactional.id`, after a
    /// successful call, or while another transactional call of this
    /// producer runs; [`Error::ProducerFenced`] once fenced;
    /// [`Error::InvalidTransactionTimeout`] when `transaction.timeout.ms`
    /// exceeds the cluster's `transaction.max.timeout.ms` (fatal, as the
    /// coordinator's other refusals);
    /// [`Error::Timeout`] after `max.block.ms` of retriable failures (the
    /// call may be made again); [`Error::Closed`].
    pub fn init_transactions(&self) -> Result<()> {
        self.handle.core.init_transactions()
    }

    /// Starts a transaction (Kafka's `beginTransaction`): the records
    /// sent until [`commit_transaction`](Producer::commit_transaction) or
    /// [`abort_transaction`](Producer::abort_transaction) belong to it.
    /// Local: the cluster hears of the transaction with its first record
    /// (or offsets).
    ///
    /// # Errors
    /// [`Error::IllegalState`] without a `transactional.id`, before
    /// [`init_transactions`](Producer::init_transactions) or while a
    /// transaction is open; the error that made the producer fatal
    /// ([`Error::ProducerFenced`]); [`Error::Closed`].
    pub fn begin_transaction(&self) -> Result<()> {
        self.handle.core.begin_transaction()
    }

    /// Adds a consumer group's offsets to the open transaction (Kafka's
    /// `sendOffsetsToTransaction`): they become `group`'s committed
    /// offsets when the transaction commits, and are dropped if it
    /// aborts — the consume-transform-produce loop's exactly-once step.
    /// `offsets` are the positions to resume from (the offset after the
    /// last record processed). Blocks until the coordinator holds them.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use logbus::{
    ///     Cluster, ClusterConfig, NewTopic, OffsetAndMetadata, Producer, ProducerConfig,
    ///     ProducerRecord, TopicPartition,
    /// };
    ///
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    /// cluster.create_topic(NewTopic::new("in", 1))?;
    /// cluster.create_topic(NewTopic::new("out", 1))?;
    /// let producer = Producer::new(
    ///     &cluster,
    ///     ProducerConfig::builder().transactional_id("etl").build()?,
    /// )?;
    /// producer.init_transactions()?;
    /// producer.begin_transaction()?;
    /// let sent = producer.send(ProducerRecord::new("out", "transformed"))?;
    /// let mut offsets = BTreeMap::new();
    /// offsets.insert(TopicPartition::new("in", 0), OffsetAndMetadata::new(42));
    /// producer.send_offsets_to_transaction(&offsets, "etl-group")?;
    /// assert!(cluster.list_group_offsets("etl-group")?.is_empty()); // not yet
    /// producer.commit_transaction()?;
    /// assert_eq!(sent.wait()?.offset(), Some(0));
    /// let committed = cluster.list_group_offsets("etl-group")?;
    /// assert_eq!(committed[&TopicPartition::new("in", 0)].offset, 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// `group` is a group id (`"etl-group"`: no membership check), or,
    /// better, the consuming member's
    /// [`Consumer::group_metadata`](crate::Consumer::group_metadata)
    /// (Kafka's KIP-447): the coordinator then refuses the offsets with
    /// [`Error::CommitFailed`] if that member left the group or the group
    /// rebalanced since (its partitions may be another member's now), and
    /// the transaction must be aborted.
    ///
    /// # Errors
    /// [`Error::IllegalState`] outside a transaction; the error that made
    /// the transaction abortable or the producer fatal
    /// ([`Error::ProducerFenced`]); [`Error::CommitFailed`] for a stale
    /// member or generation (the transaction becomes abortable);
    /// [`Error::InvalidArgument`] for an
    /// invalid group id or offset and [`Error::UnknownTopicOrPartition`]
    /// (which makes the transaction abortable); [`Error::Timeout`] after
    /// `max.block.ms` of retriable failures; [`Error::Closed`].
    pub fn send_offsets_to_transaction(
        &self,
        offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>,
        group: impl Into<ConsumerGroupMetadata>,
    ) -> Result<()> {
        self.handle
            .core
            .send_offsets_to_transaction(offsets, &group.into())
    }

    /// Commits the open transaction (Kafka's `commitTransaction`): waits
    /// until every record sent in it is appended (as
    /// [`flush`](Producer::flush)), then has the coordinator record the
    /// commit and write a COMMIT marker to every partition of the
    /// transaction, which makes its records visible to `read_committed`
    /// consumers and its offsets
    /// ([`send_offsets_to_transaction`](Producer::send_offsets_to_transaction))
    /// the group's committed offsets, all at once. Returns once the
    /// commit is decided (recorded by the coordinator), as Kafka's does,
    /// and every record's callback ran. With a `linger.ms` above 0 (the
    /// default) the calling thread appends the transaction's batches
    /// still held and writes the markers before it returns; with
    /// `linger.ms` 0 the sender thread writes the markers right after.
    /// Either way any read in this process that starts after the return
    /// sees the commit (it writes missing markers first). If any record of
    /// the transaction failed, nothing is committed: the call returns
    /// that record's error and the transaction must be aborted.
    ///
    /// # Errors
    /// [`Error::IllegalState`] outside a transaction, or inside a
    /// producer callback; a failed record's error (the transaction is then
    /// abortable: call [`abort_transaction`](Producer::abort_transaction));
    /// [`Error::ProducerFenced`] once fenced (also when the coordinator
    /// aborted the transaction at `transaction.timeout.ms`);
    /// [`Error::Timeout`] after `max.block.ms` of retriable failures (call
    /// it again to retry); [`Error::Closed`].
    pub fn commit_transaction(&self) -> Result<()> {
        crate::timeline::timed(crate::timeline::Stage::Commit, || {
            self.handle.core.commit_transaction()
        })
    }

    /// Aborts the open transaction (Kafka's `abortTransaction`): records
    /// of it not yet appended fail ([`Error::TransactionAborted`] on their
    /// handles) and are never written, those in flight are waited for,
    /// then the coordinator writes an ABORT marker to every partition of
    /// the transaction and drops its offsets. Also the way out of a
    /// transaction whose records or offsets failed; after such a failure
    /// the producer takes a new epoch from the coordinator, so every
    /// partition's sequences start again.
    ///
    /// # Errors
    /// [`Error::IllegalState`] outside a transaction, or inside a
    /// producer callback; [`Error::ProducerFenced`] once fenced;
    /// [`Error::Timeout`] after `max.block.ms` of retriable failures (call
    /// it again to retry); [`Error::Closed`].
    pub fn abort_transaction(&self) -> Result<()> {
        self.handle.core.abort_transaction()
    }

    /// The producer's `client.id` (as configured, else `producer-N`).
    #[must_use]
    pub fn client_id(&self) -> &str {
        &self.handle.core.client_id
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &ProducerConfig {
        &self.handle.core.config
    }
}

/// The accumulator of a new producer, with its transaction manager if
/// the config has a `transactional.id`.
fn accumulator_for(config: &ProducerConfig, linger_ms: i64) -> Accumulator {
    let mut acc = Accumulator::new(linger_ms);
    acc.spare = accumulator::SpareBuffers::new(
        accumulator::SPARE_BYTES
            .min(usize::try_from(config.buffer_memory() / 8).unwrap_or(usize::MAX)),
    );
    acc.txn = config
        .transactional_id()
        .map(|id| transaction::TxnManager::new(id, config.transaction_timeout_millis()));
    // Injected faults are the sender's to apply.
    #[cfg(feature = "internals")]
    let faults = config.faults().is_some();
    #[cfg(not(feature = "internals"))]
    let faults = false;
    // Idempotence too: a partition's sequences are shared with the sender
    // (`accumulator::PartitionShared`).
    acc.direct = config.acks() != Acks::None && linger_ms > 0 && !faults;
    acc
}

/// Encodes `record` into the open `batch` (whose buffer has room for it)
/// and returns what `send` hands back: the batch's result (without a
/// callback; a callback is queued on the batch instead, and needs no
/// reference to it) and the record's index in the batch. With `open`
/// batches open in all, at least [`PREFETCH_OPEN`], the lines the batch's
/// next record will take are prefetched ([`BatchBuilder::prefetch_next`]).
#[inline(always)]
fn append_to(
    batch: &mut Batch,
    record: &ProducerRecord,
    callback: Option<Callback>,
    timestamp: i64,
    keyless: bool,
    open: usize,
) -> Result<(Option<Arc<BatchResult>>, u32)> {
    let Some(builder) = batch.builder.as_mut() else {
        return Err(Error::Internal("an open batch has no builder".into()));
    };
    builder.append(
        timestamp,
        record.key.as_deref(),
        record.value.as_deref(),
        &record.headers,
    );
    if open >= PREFETCH_OPEN {
        builder.prefetch_next();
    }
    // The record's lengths were checked against i32 and the batch holds
    // far fewer than i32::MAX records, so the builder took it.
    let index = u32::try_from(builder.len() - 1)
        .map_err(|_| Error::Internal("batch record count overflow".into()))?;
    batch.keyless |= keyless;
    let result = match callback {
        Some(callback) => {
            batch.callbacks.push((index, timestamp, callback));
            None
        }
        None => Some(batch.result.clone()),
    };
    Ok((result, index))
}

/// With at least this many batches open, each append prefetches where its
/// batch's next record goes: the batches' next lines no longer stay in the
/// cache until their partition's next record (1,000 partitions: 1,000
/// appends later), and the CPU's own prefetcher follows few streams. With
/// one partition, appends are sequential and the prefetch would be wasted.
const PREFETCH_OPEN: usize = 16;

/// Kafka's rule for compacted topics, applied before the record is taken:
/// the log would refuse a record without a key, failing its whole batch.
/// `compact`: the topic's `cleanup.policy` includes `compact` now.
fn refuse_keyless(compact: bool, record: &ProducerRecord) -> Result<()> {
    if record.key.is_none() && compact {
        return Err(Error::InvalidBatch(FormatError::InvalidRecord(
            "a compacted log (cleanup.policy=compact) accepts only records with a key",
        )));
    }
    Ok(())
}

impl PendingRecords for Core {
    fn deliver_pending(&self) {
        // On the sender thread (a callback closing the cluster) this is
        // refused rather than waiting for itself; nothing else can fail.
        let _ = self.flush();
    }
}

impl Core {
    /// Tells the sender to look again (a batch was sealed, or room is
    /// wanted).
    fn wake_sender(&self) {
        let _ = self.work.try_send(Msg::Wake);
        self.doorbell.ring();
    }

    fn on_sender_thread(&self) -> bool {
        std::thread::current().id() == self.sender_thread
    }

    /// The send path: checks, partition choice, room in the buffer, and the
    /// append into the open batch. Returns the batch's result (without a
    /// callback; with one, `None`), the record's index in it and its
    /// timestamp.
    fn append(
        &self,
        record: ProducerRecord,
        callback: Option<Callback>,
    ) -> Result<(Option<Arc<BatchResult>>, u32, i64)> {
        // A cheap bound first; the exact size only near a limit.
        let (mut lone, upper) = record.size_bounds();
        if lone > self.max_request_size.min(self.buffer_memory) {
            lone = record.lone_batch_size().ok_or(Error::RecordTooLarge {
                size: lone as u64,
                max: self.max_request_size as u64,
                limit: "max.request.size",
            })?;
            for (max, limit) in [
                (self.max_request_size, "max.request.size"),
                (self.buffer_memory, "buffer.memory"),
            ] {
                if lone > max {
                    return Err(Error::RecordTooLarge {
                        size: lone as u64,
                        max: max as u64,
                        limit,
                    });
                }
            }
        }
        let timestamp = match record.timestamp() {
            Some(t) if t < 0 => {
                return Err(Error::InvalidArgument(format!(
                    "record timestamp {t} is negative"
                )));
            }
            Some(t) => t,
            None => self.clock.now_ms(),
        };
        let chosen = match (self.config.partitioner(), record.partition()) {
            (Some(partitioner), None) => self.custom_partition(&**partitioner, &record)?,
            _ => None,
        };

        let mut acc = self.acc.lock();
        let result =
            self.append_locked(&mut acc, &record, callback, lone, upper, timestamp, chosen);
        if acc.direct_due.is_some() {
            self.append_held(&mut acc);
        }
        let wake = std::mem::take(&mut acc.pending_wake);
        drop(acc);
        if wake {
            self.wake_sender();
        }
        result
    }

    /// A custom partitioner's choice, made outside the lock (it is user code).
    fn custom_partition(
        &self,
        partitioner: &dyn crate::client::partitioner::Partitioner,
        record: &ProducerRecord,
    ) -> Result<Option<u32>> {
        let state = {
            let mut acc = self.acc.lock();
            self.check_open(&acc)?;
            let ti = acc.entry(&self.cluster, &record.topic, self.batch_size, &self.sticky)?;
            let state = acc.topics[ti].state.clone();
            refuse_keyless(state.configs().log_config.compact(), record)?;
            state
        };
        let count = NonZeroU32::new(state.partition_count()).ok_or_else(|| state.unknown(None))?;
        match partitioner.partition(
            &record.topic,
            record.key.as_deref(),
            record.value.as_deref(),
            count,
        ) {
            Some(p) if p >= count.get() => Err(Error::InvalidArgument(format!(
                "the custom partitioner chose partition {p} of topic {} which has {count} partitions",
                record.topic
            ))),
            chosen => Ok(chosen),
        }
    }

    fn check_open(&self, acc: &Accumulator) -> Result<()> {
        if acc.closed {
            return Err(Error::Closed("producer"));
        }
        self.cluster.check_open()
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; the values are computed before the lock"
    )]
    fn append_locked(
        &self,
        acc: &mut MutexGuard<'_, Accumulator>,
        record: &ProducerRecord,
        callback: Option<Callback>,
        lone: usize,
        upper: usize,
        timestamp: i64,
        chosen: Option<u32>,
    ) -> Result<(Option<Arc<BatchResult>>, u32, i64)> {
        self.check_open(acc)?;
        let txn = acc
            .txn
            .as_ref()
            .map(transaction::TxnManager::check_send)
            .transpose()?;
        let ti = acc.entry(&self.cluster, &record.topic, self.batch_size, &self.sticky)?;
        let entry = &mut acc.topics[ti];
        // The topic's configs can change live: an altered cleanup.policy or
        // max.message.bytes applies from the next send.
        entry.refresh_configs(self.batch_size);
        refuse_keyless(entry.compact, record)?;
        if lone > entry.max_message_bytes {
            let exact = record.lone_batch_size().unwrap_or(usize::MAX);
            if exact > entry.max_message_bytes {
                return Err(Error::RecordTooLarge {
                    size: exact as u64,
                    max: entry.max_message_bytes as u64,
                    limit: "max.message.bytes",
                });
            }
        }
        let count = entry.state.partition_count();
        let (partition, keyless) = match (record.partition(), chosen) {
            (Some(p), _) | (None, Some(p)) => {
                if p >= count {
                    return Err(entry.unknown(Some(p)));
                }
                (p, false)
            }
            (None, None) => {
                let count = NonZeroU32::new(count).ok_or_else(|| entry.unknown(None))?;
                match record.key.as_deref() {
                    Some(key) => (partition_for_key(key, count), false),
                    None => (entry.sticky_partition(&self.sticky, count), true),
                }
            }
        };
        // The usual case, with one look at the partition's open batch: it
        // belongs to the same transaction, takes the record within the
        // batch limit, and its buffer holds it without growing (so nothing
        // more is taken from `buffer.memory`, which is not over its limit):
        // no seal, no new batch, no wait.
        let (used, open) = (acc.used, acc.open);
        let entry = &mut acc.topics[ti];
        let batch_limit = entry.batch_limit;
        if let Some(batch) = entry.open_batch_with_room(partition, upper, batch_limit, txn)
            && used <= self.buffer_memory
        {
            let (result, index) = append_to(batch, record, callback, timestamp, keyless, open)?;
            if batch.size() >= batch_limit {
                acc.seal(ti, partition, &self.sticky);
            }
            return Ok((result, index, timestamp));
        }
        self.append_slow(
            acc,
            record,
            callback,
            upper,
            timestamp,
            (ti, partition, keyless, count),
            txn,
        )
    }

    /// [`Core::append_locked`] when the record does not go into the
    /// partition's open batch as it is: the sticky partition's batch is
    /// full, `buffer.memory` must be waited for or grows, the open batch is
    /// of another transaction or full, or there is none. Out of line, so
    /// the usual send stays small.
    #[inline(never)]
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; the values are computed before the lock"
    )]
    fn append_slow(
        &self,
        acc: &mut MutexGuard<'_, Accumulator>,
        record: &ProducerRecord,
        callback: Option<Callback>,
        upper: usize,
        timestamp: i64,
        (ti, mut partition, keyless, count): (usize, u32, bool, u32),
        txn: Option<transaction::TxnTag>,
    ) -> Result<(Option<Arc<BatchResult>>, u32, i64)> {
        let entry = &acc.topics[ti];
        if keyless && entry.has_batch(partition) && !entry.fits(partition, upper) {
            // The sticky partition's batch is full: seal it, which moves
            // the topic to another partition, and put the record there
            // (Kafka's abortOnNewBatch).
            acc.seal(ti, partition, &self.sticky);
            let count = NonZeroU32::new(count).ok_or_else(|| acc.topics[ti].unknown(None))?;
            partition = acc.topics[ti].sticky_partition(&self.sticky, count);
        }
        self.reserve(acc, ti, partition, upper)?;
        if txn.is_some() {
            // The wait for room may have outlived the transaction.
            let again = acc
                .txn
                .as_ref()
                .map(transaction::TxnManager::check_send)
                .transpose()?;
            if again != txn {
                return Err(Error::IllegalState(
                    "the transaction ended while the send waited for buffer.memory".into(),
                ));
            }
        }

        let other_txn = acc.topics[ti]
            .batches
            .get(partition as usize)
            .and_then(Option::as_ref)
            .is_some_and(|b| b.txn != txn);
        if other_txn {
            // Never mix two transactions in one batch.
            acc.seal(ti, partition, &self.sticky);
        }
        if !acc.topics[ti].fits(partition, upper) {
            acc.seal(ti, partition, &self.sticky);
            let created_ms = match record.timestamp() {
                None => timestamp,
                Some(_) => self.clock.now_ms(),
            };
            // As Kafka's accumulator, a new batch takes a buffer of
            // `batch.size` (or of the record, if larger) so appends never
            // reallocate, counted whole against `buffer.memory`, while
            // that leaves half of `buffer.memory` free. Else it starts
            // smaller and grows geometrically, so that many partitions'
            // open batches do not take it all (Kafka would block, or fail
            // when `buffer.memory` is below `batch.size`).
            let capacity = accumulator::batch_capacity(
                acc.topics[ti].batch_limit,
                upper,
                acc.used,
                self.buffer_memory,
            );
            let full = accumulator::full_capacity(acc.topics[ti].batch_limit, 0);
            let builder = match acc.spare.take(capacity, full) {
                Some(buf) => BatchBuilder::with_buffer(self.config.compression(), buf),
                None => BatchBuilder::with_capacity(self.config.compression(), capacity),
            };
            let entry = &acc.topics[ti];
            let reserved = builder.buffer_capacity();
            let batch = Batch {
                topic: entry.state.clone(),
                partition,
                builder: Some(builder),
                result: Arc::new(BatchResult::new(
                    entry.name.clone(),
                    partition,
                    self.clock.clone(),
                    self.sender_thread,
                    self.me.clone(),
                )),
                callbacks: Vec::new(),
                bytes: None,
                records: 0,
                attempts: 0,
                reserved,
                created_ms,
                seq: 0,
                keyless: false,
                txn,
                with_sender: None,
            };
            acc.open_batch(ti, partition, batch);
        }
        let Accumulator {
            topics, used, open, ..
        } = &mut **acc;
        let entry = &mut topics[ti];
        let Some(batch) = entry
            .batches
            .get_mut(partition as usize)
            .and_then(Option::as_mut)
        else {
            return Err(Error::Internal("no open batch after opening one".into()));
        };
        let Some(builder) = batch.builder.as_mut() else {
            return Err(Error::Internal("an open batch has no builder".into()));
        };
        // Without room for the record, grow geometrically within the
        // batch limit and what is free of `buffer.memory` (`reserve`
        // waited for what the record needs); a full-size batch always has
        // room.
        if !builder.has_room(upper) {
            builder.grow_to(accumulator::grown_capacity(
                builder.buffer_capacity(),
                builder.estimated_size(),
                upper,
                accumulator::full_capacity(entry.batch_limit, upper),
                self.buffer_memory.saturating_sub(*used),
            ));
        }
        let grown = builder.buffer_capacity().saturating_sub(batch.reserved);
        batch.reserved += grown;
        *used += grown;
        let (result, index) = append_to(batch, record, callback, timestamp, keyless, *open)?;
        if batch.size() >= entry.batch_limit {
            acc.seal(ti, partition, &self.sticky);
        }
        Ok((result, index, timestamp))
    }

    /// Waits until `buffer.memory` has room for a record of at most `upper`
    /// bytes for `partition` of entry `ti` (what the open batch's buffer
    /// must grow by, or the smallest buffer of a new batch), for at most
    /// `max.block.ms` of clock time.
    fn reserve(
        &self,
        acc: &mut MutexGuard<'_, Accumulator>,
        ti: usize,
        partition: u32,
        upper: usize,
    ) -> Result<()> {
        let buffer_memory = self.buffer_memory;
        let room = |acc: &Accumulator| {
            // An empty buffer takes any record that passed the size checks.
            acc.used == 0
                || acc
                    .used
                    .saturating_add(acc.topics[ti].room_needed(partition, upper))
                    <= buffer_memory
        };
        if room(acc) {
            return Ok(());
        }
        let exhausted = |waited_ms: i64| Error::BufferExhausted {
            buffer_memory: buffer_memory as u64,
            waited: std::time::Duration::from_millis(waited_ms.max(0).unsigned_abs()),
        };
        // On the sender thread nothing drains while we wait.
        if self.max_block_ms == 0 || self.on_sender_thread() {
            return Err(exhausted(0));
        }
        // The start is read before subscribing: any clock move after the
        // subscription counts towards the deadline and wakes the wait.
        let start = self.clock.now_ms();
        let ticks = self.clock.subscribe();
        let deadline = start.saturating_add(self.max_block_ms);
        // As in Kafka, a full buffer sends every batch without lingering.
        acc.blocked += 1;
        acc.seal_all(&self.sticky);
        let outcome = loop {
            let now = self.clock.now_ms();
            if now >= deadline {
                break Err(exhausted(now - start));
            }
            let (tx, woken) = crossbeam_channel::bounded(1);
            acc.space_waiters.push_back(tx);
            let wake = std::mem::take(&mut acc.pending_wake);
            let timer = match self.clock.wait_hint(deadline) {
                Some(d) => crossbeam_channel::after(d),
                None => crossbeam_channel::never(),
            };
            MutexGuard::unlocked(acc, || {
                if wake {
                    self.wake_sender();
                }
                crossbeam_channel::select! {
                    recv(woken) -> _ => {}
                    recv(ticks) -> _ => {}
                    recv(timer) -> _ => {}
                }
            });
            if let Err(e) = self.check_open(acc) {
                break Err(e);
            }
            if acc.topics[ti].state.is_deleted() {
                break Err(acc.topics[ti].unknown(Some(partition)));
            }
            if room(acc) {
                break Ok(());
            }
        };
        acc.blocked -= 1;
        // The wake-up that brought this send here may be the only one
        // coming: hand it on (a send that finds no room waits again).
        acc.wake_one_space_waiter();
        outcome
    }

    /// Seals the open batch whose result is `result`, if it is still open,
    /// and wakes the sender: someone waits for one of its records, so
    /// lingering for more would only delay them.
    pub(crate) fn send_now(&self, result: &Arc<BatchResult>) {
        let mut acc = self.acc.lock();
        let ti = acc.find(&result.topic);
        if let Some(ti) = ti {
            let open = acc.topics[ti]
                .batches
                .get(result.partition as usize)
                .and_then(Option::as_ref)
                .is_some_and(|b| Arc::ptr_eq(&b.result, result));
            if open {
                acc.seal(ti, result.partition, &self.sticky);
            }
            // Held (or being appended by a sending thread): to the sender
            // now, or when that thread is done.
            acc.release_soon(ti, result.partition);
        }
        let wake = std::mem::take(&mut acc.pending_wake);
        drop(acc);
        if wake {
            self.wake_sender();
        }
    }

    fn flush(&self) -> Result<()> {
        if self.on_sender_thread() {
            return Err(Error::IllegalState(
                "flush inside a producer callback would deadlock: callbacks run on the \
                 producer's sender thread"
                    .into(),
            ));
        }
        let mut acc = self.acc.lock();
        if acc.txn.is_none() {
            // (A transactional producer's own appends are its commit's:
            // an abort flushes too, and its batches must not be written.)
            self.append_own(&mut acc);
        }
        acc.flushes += 1;
        acc.seal_all(&self.sticky);
        let target = acc.sealed_seq;
        let mut acc = self.wait_finished(acc, target);
        acc.flushes -= 1;
        Ok(())
    }

    /// Moves `done_seq` on ([`Accumulator::update_done`]) and wakes the
    /// flushes waiting for it.
    fn publish_done(&self, acc: &mut Accumulator) {
        let done = acc.update_done();
        self.done_seq.store(done, Ordering::Release);
        if done >= acc.flush_target {
            acc.flush_target = u64::MAX;
            self.finished.notify_all();
        }
    }

    /// Wakes the sender if needed and waits until it finished every batch
    /// up to seal number `target`.
    fn wait_finished<'a>(
        &'a self,
        mut acc: MutexGuard<'a, Accumulator>,
        target: u64,
    ) -> MutexGuard<'a, Accumulator> {
        if std::mem::take(&mut acc.pending_wake) {
            self.wake_sender();
        }
        if acc.done_seq < target {
            drop(acc);
            self.spin
                .until(|| self.done_seq.load(Ordering::Acquire) >= target);
            acc = self.acc.lock();
        }
        while acc.done_seq < target {
            acc.flush_target = acc.flush_target.min(target);
            self.finished.wait(&mut acc);
        }
        acc
    }

    fn close(&self, thread: &Mutex<Option<JoinHandle<()>>>) -> Result<()> {
        let target = {
            let mut acc = self.acc.lock();
            acc.closed = true;
            acc.seal_all(&self.sticky);
            acc.wake_space_waiters();
            acc.pending_wake = false;
            acc.sealed_seq
        };
        if self.on_sender_thread() {
            // Called from a callback: the sender sees `closed` when it
            // returns, delivers what is pending and exits; joining here
            // would wait for ourselves.
            return Ok(());
        }
        // Fails only if the thread is already gone.
        let _ = self.work.send(Msg::Shutdown);
        self.doorbell.ring();
        drop(self.wait_finished(self.acc.lock(), target));
        let mut thread = thread.lock();
        if let Some(handle) = thread.take() {
            handle
                .join()
                .map_err(|_| Error::Internal("the producer's sender thread panicked".into()))?;
        }
        Ok(())
    }
}

/// An adaptive spin before parking, for the hand-offs between a
/// producer's callers and its sender thread (a flush waiting for the
/// sender's append, the sender waiting for the flush's doorbell). Waking a
/// parked thread whose CPU went idle costs tens of microseconds on a
/// virtual machine, more than the append it waits for; waiting awake
/// avoids that when a CPU is free. When none is, a spinning thread takes
/// the CPU from the thread it waits for, so the spin adapts as an adaptive
/// mutex does: after a spin that timed out the next `2^failures` waits
/// (at most 1024) park at once, and a spin that succeeds resets that.
/// No spin on a single CPU.
#[derive(Debug)]
struct Spinner {
    limit: std::time::Duration,
    /// Spins that timed out in a row.
    failures: AtomicU32,
    /// Waits left that park without spinning.
    skip: AtomicU32,
}

impl Spinner {
    /// The spin for this machine: 50 µs with more than one CPU (long
    /// enough for the sender to append a transaction's last batch, short
    /// against a `linger.ms`), none with one.
    fn for_this_machine() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Spinner::new(if cpus > 1 {
            std::time::Duration::from_micros(50)
        } else {
            std::time::Duration::ZERO
        })
    }

    fn new(limit: std::time::Duration) -> Self {
        Spinner {
            limit,
            failures: AtomicU32::new(0),
            skip: AtomicU32::new(0),
        }
    }

    /// Spins for at most the limit until `ready`; returns whether it
    /// became ready (the caller parks otherwise).
    fn until(&self, ready: impl Fn() -> bool) -> bool {
        if ready() {
            return true;
        }
        if self.limit.is_zero() {
            return false;
        }
        // One decrement per wait, never below zero (two flushes may wait
        // at once).
        if self
            .skip
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            return false;
        }
        let start = std::time::Instant::now();
        loop {
            for _ in 0..64 {
                if ready() {
                    self.failures.store(0, Ordering::Relaxed);
                    return true;
                }
                std::hint::spin_loop();
            }
            if start.elapsed() >= self.limit {
                let failures = self
                    .failures
                    .fetch_add(1, Ordering::Relaxed)
                    .saturating_add(1);
                self.skip.store(1 << failures.min(10), Ordering::Relaxed);
                return ready();
            }
        }
    }
}

#[cfg(test)]
mod hand_off_tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    use super::{Doorbell, Spinner};

    #[test]
    fn a_spin_reports_whether_the_condition_came_true() {
        assert!(Spinner::new(Duration::from_micros(50)).until(|| true));
        assert!(!Spinner::new(Duration::ZERO).until(|| false));
        // Ready on the third look: seen while spinning.
        let looks = AtomicUsize::new(0);
        assert!(
            Spinner::new(Duration::from_secs(60))
                .until(|| { looks.fetch_add(1, Ordering::Relaxed) >= 2 })
        );
        assert_eq!(looks.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn spins_that_time_out_make_the_next_waits_park_at_once() {
        let spinner = Spinner::new(Duration::from_micros(1));
        let looks = AtomicUsize::new(0);
        let never = || {
            looks.fetch_add(1, Ordering::Relaxed);
            false
        };
        assert!(!spinner.until(never));
        // The next two waits (2^1) look once and do not spin.
        for _ in 0..2 {
            let before = looks.load(Ordering::Relaxed);
            assert!(!spinner.until(never));
            assert_eq!(looks.load(Ordering::Relaxed), before + 1);
        }
        // Then it spins again (many looks), fails, and skips four.
        let before = looks.load(Ordering::Relaxed);
        assert!(!spinner.until(never));
        assert!(looks.load(Ordering::Relaxed) > before + 1);
        assert_eq!(spinner.skip.load(Ordering::Relaxed), 4);
        // A success while skipping is still seen, and a spin that
        // succeeds resets the failures.
        assert!(spinner.until(|| true));
        spinner.skip.store(0, Ordering::Relaxed);
        let looks = AtomicUsize::new(0);
        assert!(
            Spinner::new(Duration::from_secs(60))
                .until(|| { looks.fetch_add(1, Ordering::Relaxed) >= 1 })
        );
        let ready_on_second = AtomicUsize::new(0);
        assert!(spinner.until(|| ready_on_second.fetch_add(1, Ordering::Relaxed) >= 1));
        assert_eq!(spinner.failures.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_doorbell_rung_before_the_wait_is_answered_once() {
        for spin in [Duration::ZERO, Duration::from_micros(50)] {
            let bell = Doorbell::new(Spinner::new(spin));
            bell.ring();
            // Returns at once, whatever the timeout, and clears the ring.
            bell.wait(None);
            assert!(!*bell.rung.lock());
            assert!(!bell.ringing.load(Ordering::Relaxed));
        }
    }

    /// The flag the spin reads never says "rung" once the ring it
    /// announces was taken: a stale flag ends the next wait's spin at once,
    /// and that wait then parks (a thread woken from a park costs tens of
    /// microseconds on a virtual machine). Two rings racing one wait left
    /// it set when the flag was written outside the lock.
    #[test]
    fn a_doorbell_never_announces_a_ring_it_no_longer_holds() {
        const RINGS: usize = 20_000;
        let bell = std::sync::Arc::new(Doorbell::new(Spinner::new(Duration::from_micros(50))));
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let ringer = {
            let (bell, done) = (bell.clone(), done.clone());
            std::thread::spawn(move || {
                for _ in 0..RINGS {
                    bell.ring();
                }
                done.store(true, Ordering::Release);
                bell.ring();
            })
        };
        let mut stale = 0;
        while !done.load(Ordering::Acquire) {
            bell.wait(Some(Duration::from_millis(10)));
            let rung = bell.rung.lock();
            if bell.ringing.load(Ordering::Acquire) && !*rung {
                stale += 1;
            }
        }
        ringer.join().expect("ringer");
        assert_eq!(stale, 0, "waits that found the flag set without a ring");
    }

    #[test]
    fn a_doorbell_wakes_a_parked_waiter() {
        let bell = std::sync::Arc::new(Doorbell::new(Spinner::new(Duration::ZERO)));
        let woken = std::sync::Arc::new(AtomicBool::new(false));
        let waiter = {
            let (bell, woken) = (bell.clone(), woken.clone());
            std::thread::spawn(move || {
                bell.wait(None);
                woken.store(true, Ordering::Relaxed);
            })
        };
        bell.ring();
        waiter.join().expect("waiter");
        assert!(woken.load(Ordering::Relaxed));
    }
}

#[cfg(test)]
mod buffer_tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::{Producer, ProducerConfig, ProducerRecord};
    use crate::error::{Error, Result};
    use crate::format::{BatchBuilder, RECORD_BATCH_OVERHEAD};
    use crate::{Cluster, ClusterConfig, ManualClock, NewTopic};

    const HOUR_MS: u64 = 3_600_000;

    /// A cluster on a manual clock (batches linger until it moves) with
    /// topic `t` of `partitions` partitions.
    fn cluster(dir: &std::path::Path, partitions: u32) -> Result<Cluster> {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let cluster = Cluster::open(dir, ClusterConfig::builder().clock(clock).build()?)?;
        cluster.create_topic(NewTopic::new("t", partitions))?;
        Ok(cluster)
    }

    /// `buffer.memory` in use, and the buffer capacities of the open batches.
    fn usage(producer: &Producer) -> (usize, Vec<usize>) {
        let acc = producer.handle.core.acc.lock();
        let capacities = acc
            .topics
            .iter()
            .flat_map(|t| t.batches.iter().flatten())
            .map(|b| b.builder.as_ref().map_or(0, BatchBuilder::buffer_capacity))
            .collect();
        (acc.used, capacities)
    }

    /// A producer whose 16 KiB batches wait for a flush (or to fill).
    fn lingering_producer(cluster: &Cluster) -> Result<Producer> {
        Producer::new(
            cluster,
            ProducerConfig::builder()
                .batch_size(16_384)
                .linger(Duration::from_millis(HOUR_MS))
                .build()?,
        )
    }

    #[test]
    fn a_new_batch_takes_batch_size_of_buffer_memory_at_once() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let cluster = cluster(dir.path(), 2)?;
        let producer = lingering_producer(&cluster)?;
        let full = BatchBuilder::capacity_for(16_384 - RECORD_BATCH_OVERHEAD);
        drop(producer.send(ProducerRecord::new("t", vec![1_u8; 100]).with_partition(0))?);
        assert_eq!(usage(&producer), (full, vec![full]));
        // Records that fit the batch take nothing more: its buffer is not
        // reallocated.
        for _ in 0..100 {
            drop(producer.send(ProducerRecord::new("t", vec![1_u8; 100]).with_partition(0))?);
        }
        assert_eq!(usage(&producer), (full, vec![full]));
        // A second partition's batch takes another whole buffer.
        drop(producer.send(ProducerRecord::new("t", vec![1_u8; 100]).with_partition(1))?);
        assert_eq!(usage(&producer), (2 * full, vec![full, full]));
        producer.flush()?;
        assert_eq!(usage(&producer), (0, vec![]), "all given back");
        producer.close()?;
        cluster.close()
    }

    /// Finished batches' buffers are kept (within their limit) and a new
    /// full batch takes one; their earlier bytes are not in the batches
    /// built in them.
    #[test]
    fn a_new_batch_takes_the_buffer_of_a_finished_one() -> Result<()> {
        const RECORDS: u32 = 12_000;
        let dir = tempfile::tempdir().expect("tempdir");
        let cluster = cluster(dir.path(), 2)?;
        let producer = lingering_producer(&cluster)?;
        let full = BatchBuilder::capacity_for(16_384 - RECORD_BATCH_OVERHEAD);
        let spare = |producer: &Producer| producer.handle.core.acc.lock().spare.bytes();
        let value = |i: u32| vec![(i % 251) as u8; 100];
        assert_eq!(spare(&producer), 0);
        // About 80 full batches finish: new ones take the buffers of those
        // finished before (how many depends on when the writes ran), and
        // after the flush some are kept, at most 1 MiB (an eighth of the
        // default 32 MiB of buffer.memory is more).
        for i in 0..RECORDS {
            drop(producer.send(ProducerRecord::new("t", value(i)).with_partition(0))?);
        }
        producer.flush()?;
        let kept = spare(&producer);
        assert!(kept > 0 && kept <= 1 << 20 && kept % full == 0, "{kept}");
        // A new batch takes one: the kept bytes fall by one buffer while
        // buffer.memory counts the batch.
        drop(producer.send(ProducerRecord::new("t", vec![7_u8; 10]).with_partition(1))?);
        assert_eq!(spare(&producer), kept - full);
        assert_eq!(usage(&producer), (full, vec![full]));
        // Batches built in kept buffers hold what was sent, nothing of the
        // batches built there before.
        for i in RECORDS..RECORDS + 1_000 {
            drop(producer.send(ProducerRecord::new("t", value(i)).with_partition(0))?);
        }
        producer.flush()?;
        let mut consumer = crate::Consumer::new(
            &cluster,
            crate::ConsumerConfig::builder()
                .auto_offset_reset(crate::OffsetReset::Earliest)
                .build()?,
        )?;
        consumer.assign(&[
            crate::TopicPartition::new("t", 0),
            crate::TopicPartition::new("t", 1),
        ])?;
        let mut seen = [Vec::new(), Vec::new()];
        while seen[0].len() + seen[1].len() < RECORDS as usize + 1_001 {
            let records = consumer.poll(Duration::from_secs(5))?;
            assert!(!records.is_empty(), "records missing");
            for r in records.iter() {
                seen[r.partition() as usize].push(r.value().unwrap_or_default().to_vec());
            }
        }
        let expected: Vec<Vec<u8>> = (0..RECORDS + 1_000).map(value).collect();
        assert_eq!(seen[0], expected);
        assert_eq!(seen[1], vec![vec![7_u8; 10]]);
        producer.close()?;
        cluster.close()
    }

    #[test]
    fn with_less_than_a_batch_free_a_batch_grows_within_what_is_free() -> Result<()> {
        const BUFFER: usize = 4_000;
        let dir = tempfile::tempdir().expect("tempdir");
        let cluster = cluster(dir.path(), 1)?;
        let producer = Producer::new(
            &cluster,
            ProducerConfig::builder()
                .batch_size(16_384)
                .buffer_memory(BUFFER as u64)
                .max_block(Duration::ZERO)
                .linger(Duration::from_millis(HOUR_MS))
                .build()?,
        )?;
        let mut accepted = 0;
        let error = loop {
            match producer.send(ProducerRecord::new("t", vec![2_u8; 500])) {
                Ok(handle) => drop(handle),
                Err(e) => break e,
            }
            accepted += 1;
            let (used, capacities) = usage(&producer);
            // What is counted is what the buffer holds, never beyond
            // buffer.memory.
            assert_eq!(capacities, vec![used]);
            assert!(used <= BUFFER, "{used}");
        };
        assert!(matches!(error, Error::BufferExhausted { .. }), "{error:?}");
        // The batch starts at an eighth of batch.size and then takes the
        // rest of buffer.memory: 7 records of 507 bytes and the header fill
        // 3,610 bytes; an 8th could need up to 568 more.
        assert_eq!(accepted, 7);
        producer.flush()?;
        assert_eq!(usage(&producer), (0, vec![]));
        producer.close()?;
        cluster.close()
    }
}
