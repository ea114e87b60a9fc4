//! The completion of a batch, shared by every record in it, and the
//! per-record handle [`SendFuture`] (Kafka's `ProduceRequestResult` and
//! `FutureRecordMetadata`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::thread::ThreadId;
use std::time::Duration;

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex};

use super::Core;
use super::record::RecordMetadata;
use crate::clock::Clock;
use crate::error::{Error, Result};

/// A callback given to
/// [`Producer::send_with_callback`](super::Producer::send_with_callback).
pub(crate) type Callback = Box<dyn FnOnce(Result<RecordMetadata>) + Send + 'static>;

/// How a batch ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Appended (or, with acks=0, taken by the sender: no offset).
    Sent {
        base_offset: Option<u64>,
        log_append_time: Option<i64>,
    },
    /// The append failed; every record of the batch gets a copy.
    Failed(Error),
}

impl Outcome {
    /// The metadata of the record at `index` in the batch.
    pub(crate) fn metadata(
        &self,
        result: &BatchResult,
        index: u32,
        timestamp: i64,
    ) -> Result<RecordMetadata> {
        match self {
            Outcome::Sent {
                base_offset,
                log_append_time,
            } => Ok(RecordMetadata {
                topic: result.topic.clone(),
                partition: result.partition,
                offset: base_offset.map(|base| base + u64::from(index)),
                timestamp: log_append_time.unwrap_or(timestamp),
            }),
            Outcome::Failed(error) => Err(error.duplicate()),
        }
    }
}

/// The result of one batch, shared by the handles of all its records.
#[derive(Debug)]
pub(crate) struct BatchResult {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: u32,
    clock: Arc<dyn Clock>,
    /// The producer's sender thread: waiting there would deadlock.
    sender_thread: ThreadId,
    /// The producer, asked to send the batch at once when someone waits.
    core: Weak<Core>,
    done: AtomicBool,
    state: Mutex<ResultState>,
    cond: Condvar,
}

#[derive(Debug, Default)]
struct ResultState {
    outcome: Option<Outcome>,
    /// Waiters with a time limit, woken by a message.
    timed_waiters: Vec<Sender<()>>,
    /// The wakers of handles polled as futures; a handle keeps its slot.
    wakers: Vec<Waker>,
}

impl BatchResult {
    pub(crate) fn new(
        topic: Arc<str>,
        partition: u32,
        clock: Arc<dyn Clock>,
        sender_thread: ThreadId,
        core: Weak<Core>,
    ) -> Self {
        BatchResult {
            topic,
            partition,
            clock,
            sender_thread,
            core,
            done: AtomicBool::new(false),
            state: Mutex::new(ResultState::default()),
            cond: Condvar::new(),
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Records the outcome (the first one wins) and wakes every waiter.
    pub(crate) fn complete(&self, outcome: Outcome) {
        let mut state = self.state.lock();
        if state.outcome.is_some() {
            return;
        }
        state.outcome = Some(outcome);
        self.done.store(true, Ordering::Release);
        for waiter in state.timed_waiters.drain(..) {
            let _ = waiter.try_send(());
        }
        let wakers = std::mem::take(&mut state.wakers);
        drop(state);
        self.cond.notify_all();
        // Wakers are user code: called outside the lock.
        for waker in wakers {
            waker.wake();
        }
    }

    /// Asks the producer to send this batch now instead of lingering.
    /// Never called with `state` locked (it takes the producer's lock).
    fn send_now(self: &Arc<Self>) {
        if self.is_done() {
            return;
        }
        if let Some(core) = self.core.upgrade() {
            core.send_now(self);
        }
    }

    fn on_sender_thread(&self) -> bool {
        std::thread::current().id() == self.sender_thread
    }

    fn deadlock_error() -> Error {
        Error::IllegalState(
            "waiting for a record inside a producer callback would deadlock: \
             callbacks run on the producer's sender thread"
                .into(),
        )
    }
}

/// The handle `send` returns: yields the record's [`RecordMetadata`] once
/// its batch is appended, or the error that failed it. Kafka's
/// `Future<RecordMetadata>`.
///
/// Use it either way:
/// - blocking: [`wait`](SendFuture::wait) (or
///   [`wait_timeout`](SendFuture::wait_timeout)) parks the calling thread;
/// - async: it is also a [`std::future::Future`] whose output is what
///   `wait` returns. Polling registers the task's waker, which the
///   producer's sender thread wakes when the batch is done; no runtime is
///   needed (it works on any executor).
///
/// Waiting or polling sends the record's batch at once rather than after
/// `linger.ms`: whoever waits for a record should not wait out the linger.
/// So a send-then-wait loop appends each record as its own batch with no
/// linger pause, while records nobody waits for yet are still batched.
///
/// Every record of a batch shares one completion: a handle is a pointer to
/// it plus the record's index and timestamp, and costs no allocation.
/// When a batch fails, each of its records gets its own copy of the
/// error (the same variant and fields; an I/O error keeps its OS error code).
///
/// ```
/// use logbus::{Cluster, ClusterConfig, NewTopic, Producer, ProducerConfig, ProducerRecord};
/// let dir = tempfile::tempdir()?;
/// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
/// cluster.create_topic(NewTopic::new("events", 1))?;
/// let producer = Producer::new(&cluster, ProducerConfig::default())?;
/// let sent = producer.send(ProducerRecord::new("events", "hello"))?;
/// let metadata = sent.wait()?; // does not wait for linger.ms
/// assert_eq!((metadata.partition(), metadata.offset()), (0, Some(0)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// In async code, `.await` it (any executor; a minimal one is hidden here):
///
/// ```
/// use logbus::{Cluster, ClusterConfig, NewTopic, Producer, ProducerConfig, ProducerRecord};
///
/// async fn publish(producer: &Producer, topic: &str, key: &str) -> logbus::Result<u64> {
///     let metadata = producer.send(ProducerRecord::new(topic, "v").with_key(key))?.await?;
///     Ok(metadata.offset().unwrap_or_default())
/// }
/// # fn block_on<F: std::future::Future>(future: F) -> F::Output {
/// #     struct Unpark(std::thread::Thread);
/// #     impl std::task::Wake for Unpark {
/// #         fn wake(self: std::sync::Arc<Self>) { self.0.unpark() }
/// #     }
/// #     let waker = std::sync::Arc::new(Unpark(std::thread::current())).into();
/// #     let mut cx = std::task::Context::from_waker(&waker);
/// #     let mut future = std::pin::pin!(future);
/// #     loop {
/// #         match future.as_mut().poll(&mut cx) {
/// #             std::task::Poll::Ready(output) => return output,
/// #             std::task::Poll::Pending => std::thread::park(),
/// #         }
/// #     }
/// # }
/// let dir = tempfile::tempdir()?;
/// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
/// cluster.create_topic(NewTopic::new("events", 1))?;
/// let producer = Producer::new(&cluster, ProducerConfig::default())?;
/// assert_eq!(block_on(publish(&producer, "events", "k"))?, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[must_use = "a send's outcome is only known through its handle; drop it explicitly to ignore it"]
pub struct SendFuture {
    result: Arc<BatchResult>,
    index: u32,
    timestamp: i64,
    /// Whether this handle already asked for its batch to be sent now.
    sent_now: bool,
    /// This handle's slot in the batch's wakers, once polled.
    waker_slot: Option<usize>,
}

impl SendFuture {
    pub(crate) fn new(result: Arc<BatchResult>, index: u32, timestamp: i64) -> Self {
        SendFuture {
            result,
            index,
            timestamp,
            sent_now: false,
            waker_slot: None,
        }
    }

    /// The partition the record was assigned to.
    #[must_use]
    pub fn partition(&self) -> u32 {
        self.result.partition
    }

    /// Whether the outcome is known (then [`wait`](SendFuture::wait) does
    /// not block).
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.result.is_done()
    }

    /// Blocks until the record's batch is appended (or, with
    /// [`Acks::None`](super::Acks::None), taken by the sender) and returns
    /// where it went. If the batch is still open (lingering for more
    /// records), it is sent at once rather than after `linger.ms`.
    ///
    /// # Errors
    /// The error that failed the batch's append (for example
    /// [`Error::UnknownTopicOrPartition`] if the topic was deleted
    /// meanwhile, [`Error::Io`], [`Error::Closed`] if the cluster closed);
    /// [`Error::IllegalState`] when called from a producer callback for a
    /// record that is not done yet (it would wait for itself).
    pub fn wait(self) -> Result<RecordMetadata> {
        let result = &*self.result;
        if !result.is_done() && !result.on_sender_thread() {
            self.result.send_now();
        }
        let mut state = result.state.lock();
        loop {
            if let Some(outcome) = &state.outcome {
                return outcome.metadata(result, self.index, self.timestamp);
            }
            if result.on_sender_thread() {
                return Err(BatchResult::deadlock_error());
            }
            result.cond.wait(&mut state);
        }
    }

    /// As [`wait`](SendFuture::wait) (which includes sending a lingering
    /// batch at once), but gives up after `timeout` as the cluster's
    /// [`Clock`] measures it, returning `None` (with a
    /// [`ManualClock`](crate::ManualClock), only once the clock is moved
    /// past it). The handle stays usable.
    ///
    /// A zero `timeout` only looks: it returns the outcome if it is known
    /// and does not send a lingering batch early (as
    /// [`is_done`](SendFuture::is_done), which leaves batching alone).
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Result<RecordMetadata>> {
        let result = &*self.result;
        if result.is_done() {
            let state = result.state.lock();
            if let Some(outcome) = &state.outcome {
                return Some(outcome.metadata(result, self.index, self.timestamp));
            }
        } else if !timeout.is_zero() && !result.on_sender_thread() {
            self.result.send_now();
        }
        let clock = &result.clock;
        // Subscribe before the first look at the clock, so a move after it
        // always wakes this wait.
        let ticks = clock.subscribe();
        let start = clock.now_ms();
        let deadline = start.saturating_add(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX));
        let (tx, woken) = crossbeam_channel::bounded(1);
        let mut tx = Some(tx);
        loop {
            {
                let mut state = result.state.lock();
                if let Some(outcome) = &state.outcome {
                    return Some(outcome.metadata(result, self.index, self.timestamp));
                }
                if result.on_sender_thread() {
                    return Some(Err(BatchResult::deadlock_error()));
                }
                if clock.now_ms() >= deadline {
                    return None;
                }
                if let Some(tx) = tx.take() {
                    state.timed_waiters.push(tx);
                }
            }
            let timer = match clock.wait_hint(deadline) {
                Some(d) => crossbeam_channel::after(d),
                None => crossbeam_channel::never(),
            };
            crossbeam_channel::select! {
                recv(woken) -> _ => {}
                recv(ticks) -> _ => {}
                recv(timer) -> _ => {}
            }
        }
    }
}

impl Future for SendFuture {
    type Output = Result<RecordMetadata>;

    /// Ready with what [`wait`](SendFuture::wait) returns once the batch is
    /// done; until then registers the task's waker (the sender thread wakes
    /// it) and, on the first poll, sends the batch at once rather than after
    /// `linger.ms`. Polling again after `Ready` returns the same result.
    /// Never blocks, so it is not refused inside a producer callback; but
    /// blocking on it there (e.g. an executor's `block_on`) would deadlock.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let result = &*this.result;
        if !this.sent_now && !result.is_done() {
            this.sent_now = true;
            this.result.send_now();
        }
        let mut state = result.state.lock();
        if let Some(outcome) = &state.outcome {
            return Poll::Ready(outcome.metadata(result, this.index, this.timestamp));
        }
        let waker = cx.waker();
        match this.waker_slot {
            Some(slot) => {
                if let Some(old) = state.wakers.get_mut(slot)
                    && !old.will_wake(waker)
                {
                    old.clone_from(waker);
                }
            }
            None => {
                this.waker_slot = Some(state.wakers.len());
                state.wakers.push(waker.clone());
            }
        }
        Poll::Pending
    }
}
