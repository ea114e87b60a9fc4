//! The consumer: Kafka's `KafkaConsumer` with manual assignment.
//!
//! A [`Consumer`] reads the partitions it is [`assign`](Consumer::assign)ed
//! from its own positions. [`Consumer::poll`] takes records from the fetched
//! batches it buffers (at most one fetch per partition: zero-copy views of
//! the segments; a compressed batch is decompressed once into one buffer its
//! records share), fetches more when a partition's buffer runs dry, and waits
//! for appends when there is nothing to return.
//!
//! ## Waking up
//! The consumer registers the sending side of one bounded(1) channel with
//! every assigned partition (through the replica manager's `watch`); each
//! append, and a delete or
//! close of the partition, sends on it. A poll first empties that channel,
//! then fetches, then waits on it (and on the clock's jumps and a timer for
//! its deadline), so an append that lands after the fetch always leaves a
//! message behind and is never slept through.
//!
//! ## Fetch size and latency
//! `fetch.min.bytes` and `fetch.max.wait.ms` act as in Kafka's fetch
//! request: fetched data is held back until the buffered batches add up to
//! `fetch.min.bytes`, or until `fetch.max.wait.ms` has passed since data
//! first became available. Once released, buffered records are returned
//! without waiting until every partition's buffer is drained.
//!
//! ## Transactions
//! Under `isolation.level = read_committed` the fetches stop at the last
//! stable offset and carry the aborted transactions their batches may hold;
//! the cursor over a fetch (`fetch.rs`) skips the batches of aborted
//! transactions as Kafka's `CompletedFetch` does. Control batches are never
//! returned, under either level; positions move past them and past skipped
//! batches.
//!
//! ## Groups
//! With a `group.id`, [`Consumer::subscribe`] makes the consumer a member
//! of its group (see the `group` module for the protocol), and committed
//! offsets give newly assigned partitions their starting positions.

mod ahead;
#[cfg(test)]
mod ahead_tests;
#[cfg(test)]
mod checked_tests;
mod commits;
mod config;
mod decode;
#[cfg(test)]
mod decode_tests;
mod fetch;
mod fetcher;
mod group;
mod group_metadata;
#[cfg(test)]
mod leader_tests;
#[cfg(test)]
mod read_committed_tests;
mod records;
mod subscription_state;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::cluster::{
    Cluster, FetchBound, OffsetAndMetadata, PartitionOffsets, ReadReleaser, ReadSource,
    TopicIdPartition,
};
use crate::error::{CorruptionKind, Error, Result};
use crate::types::{IsolationLevel, TopicPartition};

use config::byte_count;
pub use config::{ConsumerConfig, ConsumerConfigBuilder, OffsetReset};
pub use group::ConsumerRebalanceListener;
pub use group_metadata::ConsumerGroupMetadata;
pub use records::{
    ConsumerRecord, ConsumerRecordRef, ConsumerRecords, OffsetAndTimestamp, PartitionRecords,
    PartitionRecordsIter, RecordsIntoIter, RecordsIter,
};

use fetch::{Aborted, Fetch, Sink};
use group::Membership;

/// The committed offsets handed to a [`Consumer::commit_async`] callback.
pub type CommittedOffsets = BTreeMap<TopicPartition, OffsetAndMetadata>;

/// A finished asynchronous commit waiting for its callback.
type CommitCallback = Box<dyn FnOnce(&CommittedOffsets, Result<()>) + Send>;

/// The listener and queued commit callbacks, which are not `Debug`.
#[derive(Default)]
struct Callbacks {
    completed: Vec<(CommittedOffsets, Result<()>, CommitCallback)>,
}

impl std::fmt::Debug for Callbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callbacks")
            .field("completed", &self.completed.len())
            .finish()
    }
}

/// The rebalance listener slot.
#[derive(Default)]
struct ListenerSlot(Option<Box<dyn ConsumerRebalanceListener>>);

impl std::fmt::Debug for ListenerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}

impl ListenerSlot {
    fn take(&mut self) -> Option<Box<dyn ConsumerRebalanceListener>> {
        self.0.take()
    }

    fn is_none(&self) -> bool {
        self.0.is_none()
    }
}

/// Numbers the made-up client ids, as Kafka's `consumer-N`.
static CLIENT_IDS: AtomicU64 = AtomicU64::new(1);

/// Where a partition's position will come from, or the position itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// Known: the offset of the next record to return.
    At(u64),
    /// To be looked up at the next poll or `position`: by
    /// `auto.offset.reset` (a newly assigned partition) or as asked by
    /// `seek_to_beginning` / `seek_to_end`.
    Reset(OffsetReset),
    /// To be looked up by `auto.offset.reset`.
    Unset,
}

/// One assigned partition.
#[derive(Debug)]
struct Assigned {
    tp: TopicPartition,
    /// How the replica manager knows the partition (its topic's id tells
    /// a re-created topic from the one assigned).
    key: TopicIdPartition,
    position: Position,
    paused: bool,
    fetch: Option<Fetch>,
    /// The position at which the partition's end was last reported
    /// (`enable.partition.eof`); `None` since the position was last set.
    eof_at: Option<u64>,
    /// Releases the pages of fetches drained, so that the consumer's
    /// resident set does not grow with the log it reads.
    releaser: ReadReleaser,
    /// The topic's counters (records returned by polls).
    stats: std::sync::Arc<crate::metrics::TopicStats>,
    /// The read-ahead of the partition's next fetch (see `ahead`).
    ahead: Option<std::sync::Arc<ahead::AheadJob>>,
}

/// Reads records from assigned partitions: Kafka's `KafkaConsumer`.
///
/// Like Kafka's consumer it is single-threaded: every method takes
/// `&mut self` (or `&self`), and a `Consumer` may move between threads
/// (`Send`) but is not shared. Create one per reading thread.
///
/// Like Kafka's consumer, too, it has its next fetch under way while the
/// application processes a poll's records: one helper thread per consumer
/// (started by its first fetch, stopped and joined by `close` or drop)
/// reads each partition's next fetch ahead, bringing its pages in and
/// checking its batches' CRCs, so that the poll that returns them need not.
/// Polls return the same records and the same errors as without it.
///
/// ## Knowing when it has caught up
/// With [`enable_partition_eof`](ConsumerConfigBuilder::enable_partition_eof)
/// (librdkafka's `enable.partition.eof`), a poll also reports each assigned
/// partition whose position reached its end (the high watermark), once
/// each time it does: see [`ConsumerRecords::partition_eofs`], whose
/// example rebuilds state at start-up and stops once every partition is
/// at its end.
///
/// ## Transactions: `isolation.level`
/// Under [`IsolationLevel::ReadUncommitted`] (the default) a poll returns
/// every record below the high watermark, those of open and aborted
/// transactions included. Under [`IsolationLevel::ReadCommitted`]
/// ([`isolation_level`](ConsumerConfigBuilder::isolation_level)) it returns
/// records outside transactions and those of committed transactions, in
/// offset order, and nothing at or beyond the *last stable offset* (LSO):
/// the first offset of the oldest transaction still open (else the high
/// watermark). A read_committed consumer therefore waits at an open
/// transaction, even for records of other producers behind it, until that
/// transaction commits or aborts; the marker's arrival wakes a waiting poll.
/// For such a consumer the end of a partition is its LSO:
/// [`end_offsets`](Consumer::end_offsets), [`seek_to_end`](Consumer::seek_to_end),
/// `auto.offset.reset = latest` and `enable.partition.eof` use it.
///
/// Transaction markers (control records) take an offset each but are
/// never returned, under either level. Positions move past them, and past
/// the batches of aborted transactions a read_committed consumer skips, so
/// a poll that found only those returns no records but its position (and
/// so a commit of it) lies after them.
///
/// ## Subscribing to a topic that does not exist
/// Is not an error, and does not create the topic (there is no
/// `auto.create.topics.enable`; only the name's validity is checked). The
/// consumer joins its group with no partitions of that topic: its polls
/// return nothing, and wait out their timeouts, until the topic is
/// created. Then the group's leader notices at its next poll (a poll
/// already waiting notices at once) and the group rebalances,
/// assigning the new partitions; for a lone member that is the first poll
/// after the creation. Each new partition starts at the group's committed
/// offset, else by `auto.offset.reset` *at that poll*: with `latest` (the
/// default), records written between the topic's creation and that poll
/// are skipped, so a consumer that must see every record of a topic
/// created later sets [`OffsetReset::Earliest`]. The same holds for topics
/// a [`subscribe_pattern`](Consumer::subscribe_pattern) matches later.
/// [`assign`](Consumer::assign)ing a partition of a missing topic by hand,
/// in contrast, fails with [`Error::UnknownTopicOrPartition`].
///
/// ## Positions out of range: `auto.offset.reset`
/// A position is out of range when it lies below the partition's log start
/// offset (records removed by retention or
/// [`delete_records`](crate::Partition::delete_records)) or above its high
/// watermark (a [`seek`](Consumer::seek) past the end, or a committed offset
/// beyond the log). The high watermark itself is in range: it is where the
/// next record will be. (Under read_committed, a position between the last
/// stable offset and the high watermark is in range: it reads nothing
/// until the transactions below it end.) Nothing is checked at `seek`, `assign` or
/// [`position`](Consumer::position), which reports the offset as it is;
/// the next poll that fetches from the partition finds it out of range and, without an error or a notice, moves it by
/// `auto.offset.reset`:
///
/// - [`OffsetReset::Earliest`]: to the log start offset at that moment;
/// - [`OffsetReset::Latest`]: to the high watermark at that moment (the
///   last stable offset under read_committed);
/// - [`OffsetReset::None`]: nowhere: that poll, and every later one, fails
///   with [`Error::NoOffsetForPartition`] and the position stays as it was
///   until a `seek` into the log.
///
/// Records between the old position and the new one are never returned
/// by this consumer. A group's committed offset that is out of range is
/// taken as the position and reset the same way at the fetch. To notice
/// and decide yourself, use `None` and catch the error.
///
/// ```
/// use logbus::format::BatchBuilder;
/// use logbus::{Cluster, ClusterConfig, Compression, Consumer, ConsumerConfig, NewTopic};
/// use logbus::{OffsetReset, TopicPartition};
/// use std::time::Duration;
///
/// let dir = tempfile::tempdir()?;
/// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
/// let partition = cluster.create_topic(NewTopic::new("orders", 1))?.partition(0)?;
/// let mut batch = BatchBuilder::new(Compression::None);
/// batch.append(1_700_000_000_000, Some(b"order-1"), Some(b"created"), &[]);
/// batch.append(1_700_000_000_001, Some(b"order-1"), Some(b"paid"), &[]);
/// partition.append(&mut batch.build()?.to_vec())?;
///
/// let config = ConsumerConfig::builder()
///     .auto_offset_reset(OffsetReset::Earliest)
///     .build()?;
/// let mut consumer = Consumer::new(&cluster, config)?;
/// consumer.assign(&[TopicPartition::new("orders", 0)])?;
/// let records = consumer.poll(Duration::from_millis(100))?;
/// let values: Vec<&[u8]> = records.iter().filter_map(|r| r.value()).collect();
/// assert_eq!(values, [&b"created"[..], &b"paid"[..]]);
/// assert_eq!(consumer.position(&TopicPartition::new("orders", 0))?, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Consumer {
    cluster: Cluster,
    config: ConsumerConfig,
    client_id: String,
    /// In assignment order.
    assignment: Vec<Assigned>,
    index: HashMap<TopicPartition, usize>,
    /// Where fetching and draining start: rotates so that no partition
    /// starves the others.
    rotation: usize,
    /// Fetched records were released (`fetch.min.bytes` met or
    /// `fetch.max.wait.ms` passed) and are returned without waiting.
    delivering: bool,
    /// When data first became available while below `fetch.min.bytes`.
    pending_since: Option<i64>,
    waker_tx: Sender<()>,
    waker_rx: Receiver<()>,
    clock_rx: Receiver<()>,
    /// Group membership, while subscribed.
    membership: Option<Membership>,
    listener: ListenerSlot,
    /// A rebalance listener is running (it must not call `poll`).
    in_callback: bool,
    /// A listener called `unsubscribe`; done once its step is over.
    unsubscribe_requested: bool,
    /// When the next auto-commit is due (cluster clock).
    next_auto_commit: i64,
    callbacks: Callbacks,
    /// Reads each partition's next fetch ahead on a helper thread.
    read_ahead: ahead::ReadAhead,
    /// Whether fetches are read ahead (tests that count this thread's CRC
    /// checks turn it off).
    read_ahead_enabled: bool,
    /// The cluster has more than one broker, so a partition's leader can
    /// move: the consumer watches the metadata (a move wakes a waiting
    /// poll) and moves its partitions' watches to their new leaders.
    follows_leaders: bool,
    /// The metadata epoch at which every assigned partition's watch was
    /// last put on its leader.
    leaders_seen: u64,
}

impl Consumer {
    /// A consumer of `cluster`'s partitions, with no assignment yet.
    ///
    /// # Errors
    /// [`Error::Closed`] if the cluster is closed.
    pub fn new(cluster: &Cluster, config: ConsumerConfig) -> Result<Consumer> {
        cluster.inner.check_open()?;
        let client_id = config
            .client_id
            .clone()
            .unwrap_or_else(|| format!("consumer-{}", CLIENT_IDS.fetch_add(1, Ordering::Relaxed)));
        let (waker_tx, waker_rx) = crossbeam_channel::bounded(1);
        let clock_rx = cluster.inner.clock().subscribe();
        let follows_leaders = cluster.inner.broker_count() > 1;
        if follows_leaders {
            // Before the epoch is read: a move after it wakes a poll.
            cluster.inner.watch_metadata(&waker_tx);
        }
        let leaders_seen = cluster.inner.metadata_epoch();
        // Kafka starts the auto-commit timer when the consumer is made.
        let next_auto_commit = cluster
            .inner
            .clock()
            .now_ms()
            .saturating_add(config.auto_commit_interval_ms);
        Ok(Consumer {
            cluster: cluster.clone(),
            config,
            client_id,
            assignment: Vec::new(),
            index: HashMap::new(),
            rotation: 0,
            delivering: false,
            pending_since: None,
            waker_tx,
            waker_rx,
            clock_rx,
            membership: None,
            listener: ListenerSlot::default(),
            in_callback: false,
            unsubscribe_requested: false,
            next_auto_commit,
            callbacks: Callbacks::default(),
            read_ahead: ahead::ReadAhead::default(),
            read_ahead_enabled: true,
            follows_leaders,
            leaders_seen,
        })
    }

    /// The consumer's `client.id`: the configured one, else `consumer-N`.
    #[must_use]
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    /// Ends a subscription or a manual assignment (Kafka's
    /// `unsubscribe`). A subscribed consumer auto-commits (with
    /// `enable.auto.commit`), revokes its partitions through the rebalance
    /// listener and leaves its group (a static member stays until its
    /// session times out).
    pub fn unsubscribe(&mut self) {
        if self.in_callback {
            // Inside a rebalance step: finish it first (see `poll`).
            self.unsubscribe_requested = true;
            return;
        }
        let _ = self.leave_group();
        self.clear_assignment();
    }

    /// Returns the next records of the assigned partitions, waiting up to
    /// `timeout` for some to arrive (Kafka's `poll`).
    ///
    /// Returns as soon as records are available (subject to
    /// `fetch.min.bytes` / `fetch.max.wait.ms`), at most `max.poll.records`
    /// of them, each partition's in offset order; returns an empty
    /// [`ConsumerRecords`] when the timeout passes first. With
    /// `enable.partition.eof` it also returns as soon as a partition reaches
    /// its end, reporting it in
    /// [`partition_eofs`](ConsumerRecords::partition_eofs) (with the
    /// records that got it there, if any). The wait sleeps on
    /// a channel (no polling loop): an append to an assigned partition, a
    /// jump of a [`ManualClock`](crate::ManualClock) or the deadline wakes
    /// it. Deadlines are read from the cluster's clock, so with a manual
    /// clock a poll returns only once the clock passes its deadline.
    ///
    /// Each position then moves past the records returned. Paused partitions
    /// return nothing and keep their positions. A partition without a valid
    /// position gets one from `auto.offset.reset`.
    ///
    /// In a cluster of several brokers the consumer follows each
    /// partition's leader: while a leader moves (its broker stopped or
    /// crashed, and not yet replaced), the partition is skipped, never
    /// failing the poll, and the metadata change that names the new leader
    /// wakes a waiting poll, which then reads from it.
    ///
    /// # Errors
    /// - [`Error::IllegalState`] if the consumer neither subscribes nor has
    ///   partitions assigned, or when called from a rebalance listener.
    /// - [`Error::NoOffsetForPartition`] if a partition has no position, or
    ///   its position is outside the log, and `auto.offset.reset` is `none`.
    /// - [`Error::UnknownTopicOrPartition`] once a topic assigned by hand is
    ///   deleted (also waking a poll that waits); the partition stays
    ///   assigned until [`assign`](Consumer::assign) drops it. A subscribed
    ///   consumer skips a deleted partition instead; the group's next
    ///   rebalance takes it away.
    /// - Subscribed: [`Error::FencedInstanceId`] once another consumer took
    ///   this static member's `group.instance.id` (every later poll too);
    ///   [`Error::InconsistentGroupProtocol`] if the group uses assignors
    ///   this consumer does not offer; [`Error::InvalidConfig`] if
    ///   `session.timeout.ms` is outside the cluster's
    ///   `group.min/max.session.timeout.ms`.
    /// - [`Error::CorruptRecord`] for a batch failing its CRC or structure
    ///   check (when no other records are ready).
    /// - [`Error::Closed`] once the cluster is closed.
    ///
    /// Records returned before an error are never lost: positions only move
    /// past records handed out.
    pub fn poll(&mut self, timeout: Duration) -> Result<ConsumerRecords> {
        if self.in_callback {
            return Err(Error::IllegalState(
                "poll was called from a rebalance listener".into(),
            ));
        }
        let out = self.poll_loop(timeout);
        // Out of poll: from now on, max.poll.interval.ms counts.
        self.note_poll(self.cluster.inner.clock().now_ms(), false);
        out
    }

    fn poll_loop(&mut self, timeout: Duration) -> Result<ConsumerRecords> {
        if self.assignment.is_empty() && self.membership.is_none() {
            return Err(Error::IllegalState(
                "Consumer is not subscribed to any topics or assigned any partitions".into(),
            ));
        }
        self.run_commit_callbacks();
        let clock = self.cluster.inner.clock().clone();
        let timeout_ms = i64::try_from(timeout.as_nanos().div_ceil(1_000_000)).unwrap_or(i64::MAX);
        let deadline = clock.now_ms().saturating_add(timeout_ms);
        loop {
            // Empty the wake-up channels before looking at the log: whatever
            // is appended (or however the clock moves) from here on leaves a
            // message that ends the wait below.
            while self.waker_rx.try_recv().is_ok() {}
            while self.clock_rx.try_recv().is_ok() {}
            self.cluster.inner.check_open()?;
            let now = clock.now_ms();
            // Waiting inside poll is not a missed poll: Kafka restarts its
            // poll timer on every pass of this loop too.
            self.note_poll(now, true);
            let member_ready = if self.membership.is_some() {
                let ready = self.group_step(now);
                if std::mem::take(&mut self.unsubscribe_requested) {
                    // A listener unsubscribed during the step.
                    self.unsubscribe();
                    return Ok(ConsumerRecords::default());
                }
                // Cooperative members keep reading what they own while
                // the group rebalances.
                ready?
                    || self
                        .membership
                        .as_ref()
                        .is_some_and(Membership::reads_while_rebalancing)
            } else {
                self.maybe_auto_commit(now);
                true
            };
            if member_ready {
                self.fill()?;
            }
            if member_ready && self.ready(now) {
                let (records, moved) = self.drain()?;
                if !records.is_empty() {
                    return Ok(records.with_eofs(self.partition_eofs()));
                }
                if moved {
                    // Positions moved past batches with nothing to return
                    // (control batches, compacted records): more may follow
                    // in the log, so fetch again before waiting.
                    continue;
                }
            }
            if member_ready {
                let eofs = self.partition_eofs();
                if !eofs.is_empty() {
                    return Ok(ConsumerRecords::default().with_eofs(eofs));
                }
            }
            let mut wake_at = deadline;
            if let Some(since) = self.pending_since {
                let max_wait = self.config.fetch_max_wait_ms;
                wake_at = wake_at.min(since.saturating_add(max_wait));
            }
            if now >= deadline {
                return Ok(ConsumerRecords::default());
            }
            if now >= wake_at {
                continue;
            }
            let timer = match clock.wait_hint(wake_at) {
                Some(wait) => crossbeam_channel::after(wait),
                None => crossbeam_channel::never(),
            };
            crossbeam_channel::select! {
                recv(self.waker_rx) -> _ => {}
                recv(self.clock_rx) -> _ => {}
                recv(timer) -> _ => {}
            }
        }
    }

    /// For each partition, the first record whose timestamp is at or after
    /// the given time, or `None` if there is none (Kafka's
    /// `offsetsForTimes`). The partitions need not be assigned; positions
    /// do not change.
    ///
    /// ```
    /// # use logbus::format::BatchBuilder;
    /// # use logbus::{Cluster, ClusterConfig, Compression, Consumer, ConsumerConfig, NewTopic, TopicPartition};
    /// # use std::collections::BTreeMap;
    /// # let dir = tempfile::tempdir()?;
    /// # let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    /// # let partition = cluster.create_topic(NewTopic::new("t", 1))?.partition(0)?;
    /// let mut batch = BatchBuilder::new(Compression::None);
    /// for ts in [100, 200, 300] {
    ///     batch.append(ts, None, Some(b"v"), &[]);
    /// }
    /// partition.append(&mut batch.build()?.to_vec())?;
    /// let consumer = Consumer::new(&cluster, ConsumerConfig::default())?;
    /// let tp = TopicPartition::new("t", 0);
    /// let found = consumer.offsets_for_times(&BTreeMap::from([(tp.clone(), 150)]))?;
    /// let hit = found[&tp].expect("a record at or after 150");
    /// assert_eq!((hit.offset(), hit.timestamp()), (1, 200));
    /// let none = consumer.offsets_for_times(&BTreeMap::from([(tp.clone(), 301)]))?;
    /// assert_eq!(none[&tp], None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a negative timestamp;
    /// [`Error::UnknownTopicOrPartition`]; [`Error::Corrupt`] if a batch on
    /// the way is damaged. Nothing is looked up unless every input is valid.
    pub fn offsets_for_times(
        &self,
        timestamps: &BTreeMap<TopicPartition, i64>,
    ) -> Result<BTreeMap<TopicPartition, Option<OffsetAndTimestamp>>> {
        if let Some((tp, ts)) = timestamps.iter().find(|(_, ts)| **ts < 0) {
            return Err(Error::InvalidArgument(format!(
                "the target time for partition {tp} is negative ({ts})"
            )));
        }
        let keys = timestamps
            .iter()
            .map(|(tp, &ts)| Ok((self.lookup(tp)?, tp.clone(), ts)))
            .collect::<Result<Vec<_>>>()?;
        keys.into_iter()
            .map(|(key, tp, ts)| {
                let inner = &self.cluster.inner;
                let found = inner.retry_while_leader_moves(|| {
                    inner.replicas_for(&key)?.offset_for_timestamp(&key, ts)
                })?;
                Ok((
                    tp,
                    found.map(|f| OffsetAndTimestamp {
                        offset: f.offset,
                        timestamp: f.timestamp,
                    }),
                ))
            })
            .collect()
    }

    /// The log start offsets of the partitions: the first offsets that can
    /// be read (Kafka's `beginningOffsets`). The partitions need not be
    /// assigned.
    ///
    /// # Errors
    /// [`Error::UnknownTopicOrPartition`]; [`Error::Closed`].
    pub fn beginning_offsets(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, u64>> {
        self.offsets_of(partitions, |o| o.log_start)
    }

    /// The ends of the partitions for this consumer (Kafka's `endOffsets`),
    /// by its [`isolation_level`](ConsumerConfig::isolation_level): the high
    /// watermark (the offset after the last record a read_uncommitted
    /// consumer can read), or under read_committed the last stable offset
    /// (below it, every transaction is decided; a read_committed consumer
    /// reads no further). The partitions need not be assigned.
    ///
    /// # Errors
    /// [`Error::UnknownTopicOrPartition`]; [`Error::Closed`].
    pub fn end_offsets(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, u64>> {
        let isolation = self.config.isolation_level;
        partitions
            .iter()
            .map(|tp| {
                let key = self.lookup(tp)?;
                let end = self.cluster.inner.retry_while_leader_moves(|| {
                    fetcher::end_offset(&self.cluster, &key, isolation)
                })?;
                Ok((tp.clone(), end))
            })
            .collect()
    }

    /// Closes the consumer (Kafka's `close`): with `enable.auto.commit` it
    /// commits the consumed positions; a subscribed consumer then revokes
    /// its partitions through the listener and leaves its group, so the
    /// others take them over at once (a static member does not leave: its
    /// partitions wait `session.timeout.ms` for it to come back). Pending
    /// [`commit_async`](Consumer::commit_async) callbacks run.
    ///
    /// Dropping a consumer without `close` is like a crash of its
    /// process: nothing is committed and the group notices only when the
    /// member's session times out.
    ///
    /// # Errors
    /// The auto-commit's failure, other than [`Error::CommitFailed`] and
    /// [`Error::RebalanceInProgress`] (the group moved on; nothing to keep).
    /// The consumer is closed anyway.
    pub fn close(mut self) -> Result<()> {
        let result = if self.membership.is_some() {
            self.leave_group()
        } else {
            self.maybe_auto_commit_sync()
        };
        self.run_commit_callbacks();
        match result {
            Err(Error::CommitFailed { .. } | Error::RebalanceInProgress { .. }) => Ok(()),
            other => other,
        }
    }

    /// Turns the read-ahead of fetches (a helper thread that reads each
    /// partition's next fetch and checks its CRCs while the application
    /// works; on by default) off or on: for benchmarks that compare the
    /// two. Records and errors are the same either way.
    #[cfg(feature = "internals")]
    #[doc(hidden)]
    pub fn set_read_ahead(&mut self, on: bool) {
        self.read_ahead_enabled = on;
    }

    fn offsets_of(
        &self,
        partitions: &[TopicPartition],
        f: impl Fn(&PartitionOffsets) -> u64,
    ) -> Result<BTreeMap<TopicPartition, u64>> {
        partitions
            .iter()
            .map(|tp| {
                let key = self.lookup(tp)?;
                let inner = &self.cluster.inner;
                let offsets =
                    inner.retry_while_leader_moves(|| inner.replicas_for(&key)?.offsets(&key))?;
                Ok((tp.clone(), f(&offsets)))
            })
            .collect()
    }

    fn lookup(&self, tp: &TopicPartition) -> Result<TopicIdPartition> {
        self.cluster.inner.partition_key(tp)
    }

    /// Whether `a`'s partition is gone (its topic deleted, the cluster
    /// closed).
    fn is_gone(&self, a: &Assigned) -> bool {
        !self
            .cluster
            .inner
            .replicas_for(&a.key)
            .is_ok_and(|r| r.is_hosted(&a.key))
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // Like a crashed process: no commit, no leave. Dropping the
        // membership stops the heartbeat thread.
        let member = self.membership.take().is_some();
        if member || self.follows_leaders {
            self.cluster.inner.unwatch_metadata(&self.waker_tx);
        }
        for a in &self.assignment {
            self.cluster.inner.unwatch(&a.key, &self.waker_tx);
        }
    }
}
