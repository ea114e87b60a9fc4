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
//! ## Groups
//! With a `group.id`, [`Consumer::subscribe`] makes the consumer a member
//! of its group (see the `group` module for the protocol), and committed
//! offsets give newly assigned partitions their starting positions.

mod config;
mod fetch;
mod group;
mod records;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::cluster::{
    Cluster, FetchBound, OffsetAndMetadata, PartitionOffsets, ReadReleaser, ReadSource,
    TopicIdPartition,
};
use crate::error::{CorruptionKind, Error, Result};
use crate::types::TopicPartition;

use config::byte_count;
pub use config::{ConsumerConfig, ConsumerConfigBuilder, OffsetReset};
pub use group::ConsumerRebalanceListener;
pub use records::{
    ConsumerRecord, ConsumerRecords, OffsetAndTimestamp, RecordsIntoIter, RecordsIter,
};

use fetch::{Fetch, Sink};
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
}

/// Reads records from assigned partitions: Kafka's `KafkaConsumer`.
///
/// Like Kafka's consumer it is single-threaded: every method takes
/// `&mut self` (or `&self`), and a `Consumer` may move between threads
/// (`Send`) but is not shared. Create one per reading thread.
///
/// ## Knowing when it has caught up
/// With [`enable_partition_eof`](ConsumerConfigBuilder::enable_partition_eof)
/// (librdkafka's `enable.partition.eof`), a poll also reports each assigned
/// partition whose position reached its end (the high watermark), once
/// each time it does: see [`ConsumerRecords::partition_eofs`], whose
/// example rebuilds state at start-up and stops once every partition is
/// at its end.
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
/// next record will be. Nothing is checked at `seek`, `assign` or
/// [`position`](Consumer::position), which reports the offset as it is;
/// the next poll that fetches from the partition finds it out of range and, without an error or a notice, moves it by
/// `auto.offset.reset`:
///
/// - [`OffsetReset::Earliest`]: to the log start offset at that moment;
/// - [`OffsetReset::Latest`]: to the high watermark at that moment;
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

    /// Sets the partitions to read, replacing the previous assignment
    /// (Kafka's `assign`). Partitions that stay assigned keep their
    /// position, pause state and buffered records; new ones get a position
    /// from `auto.offset.reset` at the next [`poll`](Consumer::poll) or
    /// [`position`](Consumer::position), unless [`seek`](Consumer::seek)
    /// sets one first. A partition whose topic was deleted and created
    /// again starts afresh. Duplicates are ignored; an empty list unassigns
    /// everything.
    ///
    /// # Errors
    /// [`Error::UnknownTopicOrPartition`] if a topic or partition does not
    /// exist; [`Error::IllegalState`] while subscribed (call
    /// [`unsubscribe`](Consumer::unsubscribe) first); [`Error::Closed`].
    /// The assignment is unchanged then.
    pub fn assign(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        if self.membership.is_some() {
            return Err(Error::IllegalState(
                "Subscription to topics, partitions and pattern are mutually exclusive: \
                 unsubscribe first"
                    .into(),
            ));
        }
        self.assign_exact(partitions)
    }

    /// The assignment a group handed out: partitions of topics deleted
    /// meanwhile are left out (the next rebalance drops them anyway).
    fn set_assignment(&mut self, partitions: &[TopicPartition]) {
        let live: Vec<TopicPartition> = partitions
            .iter()
            .filter(|tp| {
                self.index
                    .get(*tp)
                    .is_some_and(|&i| !self.is_gone(&self.assignment[i]))
                    || self.lookup(tp).is_ok()
            })
            .cloned()
            .collect();
        // Only a topic deleted between the filter and here can fail; it
        // is dropped at the next rebalance.
        let _ = self.assign_exact(&live);
    }

    fn assign_exact(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        let mut seen = HashSet::with_capacity(partitions.len());
        let mut fresh: HashMap<TopicPartition, TopicIdPartition> = HashMap::new();
        for tp in partitions {
            if !seen.insert(tp) {
                continue;
            }
            let kept = self.index.get(tp).map(|&i| &self.assignment[i]);
            if kept.is_none_or(|a| self.is_gone(a)) {
                fresh.insert(tp.clone(), self.lookup(tp)?);
            }
        }
        let mut old: HashMap<TopicPartition, Assigned> = self
            .assignment
            .drain(..)
            .map(|a| (a.tp.clone(), a))
            .collect();
        seen.clear();
        for tp in partitions {
            if !seen.insert(tp) {
                continue;
            }
            let kept = old.remove(tp);
            let assigned = match (kept, fresh.remove(tp)) {
                (Some(kept), None) => kept,
                (kept, Some(key)) => {
                    // New, or re-created after its topic was deleted.
                    let replicas = self.cluster.inner.replicas();
                    if let Some(stale) = kept {
                        replicas.unwatch(&stale.key, &self.waker_tx);
                    }
                    replicas.watch(&key, &self.waker_tx);
                    Assigned {
                        tp: tp.clone(),
                        key,
                        position: Position::Unset,
                        paused: false,
                        fetch: None,
                        eof_at: None,
                        releaser: ReadReleaser::default(),
                    }
                }
                (None, None) => {
                    return Err(Error::Internal(format!(
                        "{tp} was neither assigned nor looked up"
                    )));
                }
            };
            self.assignment.push(assigned);
        }
        for dropped in old.into_values() {
            self.cluster
                .inner
                .replicas()
                .unwatch(&dropped.key, &self.waker_tx);
        }
        self.index = self
            .assignment
            .iter()
            .enumerate()
            .map(|(i, a)| (a.tp.clone(), i))
            .collect();
        self.rotation = 0;
        if self.assignment.iter().all(|a| a.fetch.is_none()) {
            self.delivering = false;
            self.pending_since = None;
        }
        Ok(())
    }

    /// Commits the current position of every assigned partition for the
    /// consumer's `group.id` (Kafka's `commitSync()`): the offsets after the
    /// records `poll` returned, or set by `seek`. Partitions without a
    /// position yet are left out. One batch in `__consumer_offsets`: applied
    /// whole or not at all.
    ///
    /// A subscribed consumer commits as a member of its group's current
    /// generation; once the group has rebalanced without it, the commit
    /// fails with [`Error::CommitFailed`] rather than overwrite the new
    /// owner's progress. A consumer with assigned partitions commits only
    /// while its group has no members. Runs the callbacks of earlier
    /// [`commit_async`](Consumer::commit_async) calls first.
    ///
    /// # Errors
    /// [`Error::IllegalState`] without a `group.id`;
    /// [`Error::CommitFailed`]; [`Error::RebalanceInProgress`] while the
    /// group waits for its leader's assignment (retriable: poll, then
    /// commit again); the errors of
    /// [`Cluster::alter_group_offsets`](crate::Cluster::alter_group_offsets).
    pub fn commit_sync(&mut self) -> Result<()> {
        self.run_commit_callbacks();
        let offsets = self.consumed_offsets();
        self.commit_offsets(&offsets)
    }

    /// Commits the current positions (as [`commit_sync`](Consumer::commit_sync))
    /// and hands the outcome to `callback` (Kafka's `commitAsync`). The
    /// commit itself is an in-process append and is done when this
    /// returns; the callback runs, as Kafka's, on the consumer's thread at
    /// the next [`poll`](Consumer::poll), `commit_sync` or
    /// [`close`](Consumer::close), callbacks in the order of their commits.
    ///
    /// ```
    /// use logbus::{Cluster, ClusterConfig, Consumer, ConsumerConfig, NewTopic, TopicPartition};
    /// use std::sync::{Arc, Mutex};
    /// use std::time::Duration;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    /// cluster.create_topic(NewTopic::new("orders", 1))?;
    /// let config = ConsumerConfig::builder().group_id("audit").build()?;
    /// let mut consumer = Consumer::new(&cluster, config)?;
    /// let tp = TopicPartition::new("orders", 0);
    /// consumer.assign(&[tp.clone()])?;
    /// consumer.seek(&tp, 0)?;
    /// let outcome = Arc::new(Mutex::new(None));
    /// let seen = outcome.clone();
    /// consumer.commit_async(move |offsets, result| {
    ///     *seen.lock().unwrap() = Some((offsets.len(), result.is_ok()));
    /// });
    /// consumer.poll(Duration::ZERO)?; // runs the callback
    /// assert_eq!(*outcome.lock().unwrap(), Some((1, true)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn commit_async(
        &mut self,
        callback: impl FnOnce(&CommittedOffsets, Result<()>) + Send + 'static,
    ) {
        let offsets = self.consumed_offsets();
        self.commit_offsets_async(offsets, callback);
    }

    /// Commits the given offsets and hands the outcome to `callback`, as
    /// [`commit_async`](Consumer::commit_async).
    pub fn commit_offsets_async(
        &mut self,
        offsets: CommittedOffsets,
        callback: impl FnOnce(&CommittedOffsets, Result<()>) + Send + 'static,
    ) {
        let result = self.commit_offsets(&offsets);
        self.callbacks
            .completed
            .push((offsets, result, Box::new(callback)));
    }

    /// Runs the callbacks of finished asynchronous commits, in order.
    fn run_commit_callbacks(&mut self) {
        for (offsets, result, callback) in std::mem::take(&mut self.callbacks.completed) {
            callback(&offsets, result);
        }
    }

    /// The position of every assigned partition that has one: the offsets
    /// after the records `poll` returned.
    fn consumed_offsets(&self) -> CommittedOffsets {
        self.assignment
            .iter()
            .filter_map(|a| match a.position {
                Position::At(offset) => Some((a.tp.clone(), OffsetAndMetadata::new(offset))),
                _ => None,
            })
            .collect()
    }

    /// With `enable.auto.commit`, commits the consumed positions when
    /// `auto.commit.interval.ms` has passed. Failures are dropped, as
    /// Kafka's client logs and drops them: the next commit covers them.
    fn maybe_auto_commit(&mut self, now: i64) {
        if !self.config.enable_auto_commit || self.config.group_id.is_none() {
            return;
        }
        if now < self.next_auto_commit {
            return;
        }
        let interval = self.config.auto_commit_interval_ms;
        let _ = self.maybe_auto_commit_sync();
        self.next_auto_commit = now.saturating_add(interval);
    }

    /// With `enable.auto.commit` and a `group.id`, commits the consumed
    /// positions now.
    fn maybe_auto_commit_sync(&mut self) -> Result<()> {
        if !self.config.enable_auto_commit || self.config.group_id.is_none() {
            return Ok(());
        }
        let offsets = self.consumed_offsets();
        if offsets.is_empty() {
            return Ok(());
        }
        self.commit_offsets(&offsets)
    }

    /// Commits the given offsets for the consumer's `group.id` (Kafka's
    /// `commitSync(offsets)`); each is the offset of the next record to
    /// read.
    ///
    /// # Errors
    /// As [`Consumer::commit_sync`].
    pub fn commit_offsets(
        &mut self,
        offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>,
    ) -> Result<()> {
        let group = self.group()?;
        if let Some(refusal) = self
            .membership
            .as_ref()
            .and_then(Membership::commit_refusal)
        {
            return Err(refusal);
        }
        if offsets.is_empty() {
            return Ok(());
        }
        let member = self
            .membership
            .as_ref()
            .and_then(Membership::commit_identity);
        self.cluster
            .inner
            .commit_offsets_as(&group, member, offsets)
    }

    /// The committed offsets of the consumer's group for `partitions`
    /// (Kafka's `committed`); partitions without one are left out.
    ///
    /// # Errors
    /// [`Error::IllegalState`] without a `group.id`.
    pub fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, OffsetAndMetadata>> {
        let group = self.group()?;
        let all = self.cluster.inner.group_offsets(&group)?;
        Ok(partitions
            .iter()
            .filter_map(|tp| all.get(tp).map(|m| (tp.clone(), m.clone())))
            .collect())
    }

    fn group(&self) -> Result<String> {
        self.config.group_id.clone().ok_or_else(|| {
            Error::IllegalState("committing or reading committed offsets needs a group.id".into())
        })
    }

    /// The assigned partitions, in the order given to
    /// [`assign`](Consumer::assign).
    #[must_use]
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.assignment.iter().map(|a| a.tp.clone()).collect()
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

    fn clear_assignment(&mut self) {
        for a in self.assignment.drain(..) {
            self.cluster
                .inner
                .replicas()
                .unwatch(&a.key, &self.waker_tx);
        }
        self.index.clear();
        self.delivering = false;
        self.pending_since = None;
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

    /// Sets the position of an assigned partition: the next poll returns
    /// records from `offset` on (Kafka's `seek`). Buffered records of the
    /// partition are dropped. An offset outside the log is accepted here and
    /// handled by `auto.offset.reset` at the next poll, as in Kafka.
    ///
    /// # Errors
    /// [`Error::IllegalState`] if the partition is not assigned (nothing
    /// changes).
    pub fn seek(&mut self, partition: &TopicPartition, offset: u64) -> Result<()> {
        let i = self.assigned(partition)?;
        self.set_position(i, Position::At(offset));
        Ok(())
    }

    /// Moves the partitions' positions to their log start offsets, looked
    /// up at the next [`poll`](Consumer::poll) or
    /// [`position`](Consumer::position) (Kafka's `seekToBeginning`). An
    /// empty list means every assigned partition.
    ///
    /// # Errors
    /// [`Error::IllegalState`] if a partition is not assigned (nothing
    /// changes).
    pub fn seek_to_beginning(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.seek_all(partitions, Position::Reset(OffsetReset::Earliest))
    }

    /// Moves the partitions' positions to their high watermarks, looked up
    /// at the next [`poll`](Consumer::poll) or
    /// [`position`](Consumer::position) (Kafka's `seekToEnd`). An empty list
    /// means every assigned partition.
    ///
    /// # Errors
    /// [`Error::IllegalState`] if a partition is not assigned (nothing
    /// changes).
    pub fn seek_to_end(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.seek_all(partitions, Position::Reset(OffsetReset::Latest))
    }

    /// The offset of the next record the consumer will return for an
    /// assigned partition (Kafka's `position`). Looks it up first if it is
    /// pending (a new assignment, or after `seek_to_beginning/end`).
    ///
    /// # Errors
    /// [`Error::IllegalState`] if the partition is not assigned;
    /// [`Error::NoOffsetForPartition`] if it has no position and
    /// `auto.offset.reset` is `none`; [`Error::UnknownTopicOrPartition`] if
    /// the topic was deleted.
    pub fn position(&mut self, partition: &TopicPartition) -> Result<u64> {
        let i = self.assigned(partition)?;
        self.resolve(i)
    }

    /// Stops returning records of the partitions, keeping their positions
    /// and buffered records, until [`resume`](Consumer::resume) (Kafka's
    /// `pause`).
    ///
    /// # Errors
    /// [`Error::IllegalState`] if a partition is not assigned (nothing
    /// changes).
    pub fn pause(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.set_paused(partitions, true)
    }

    /// Returns records of paused partitions again (Kafka's `resume`).
    /// Resuming a partition that is not paused does nothing.
    ///
    /// # Errors
    /// [`Error::IllegalState`] if a partition is not assigned (nothing
    /// changes).
    pub fn resume(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.set_paused(partitions, false)
    }

    /// The paused partitions, in assignment order (Kafka's `paused`).
    #[must_use]
    pub fn paused(&self) -> Vec<TopicPartition> {
        self.assignment
            .iter()
            .filter(|a| a.paused)
            .map(|a| a.tp.clone())
            .collect()
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
                let found = self
                    .cluster
                    .inner
                    .replicas()
                    .offset_for_timestamp(&key, ts)?;
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

    /// The high watermarks of the partitions: the offset after the last
    /// record a consumer can read (Kafka's `endOffsets`). The partitions need
    /// not be assigned.
    ///
    /// # Errors
    /// [`Error::UnknownTopicOrPartition`]; [`Error::Closed`].
    pub fn end_offsets(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, u64>> {
        self.offsets_of(partitions, |o| o.high_watermark)
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

    fn offsets_of(
        &self,
        partitions: &[TopicPartition],
        f: impl Fn(&PartitionOffsets) -> u64,
    ) -> Result<BTreeMap<TopicPartition, u64>> {
        partitions
            .iter()
            .map(|tp| {
                let offsets = self.cluster.inner.replicas().offsets(&self.lookup(tp)?)?;
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
        !self.cluster.inner.replicas().is_hosted(&a.key)
    }

    fn assigned(&self, tp: &TopicPartition) -> Result<usize> {
        self.index
            .get(tp)
            .copied()
            .ok_or_else(|| Error::IllegalState(format!("No current assignment for partition {tp}")))
    }

    fn set_position(&mut self, i: usize, position: Position) {
        let a = &mut self.assignment[i];
        a.position = position;
        a.fetch = None;
        a.eof_at = None;
    }

    fn seek_all(&mut self, partitions: &[TopicPartition], position: Position) -> Result<()> {
        let targets: Vec<usize> = if partitions.is_empty() {
            (0..self.assignment.len()).collect()
        } else {
            partitions
                .iter()
                .map(|tp| self.assigned(tp))
                .collect::<Result<_>>()?
        };
        for i in targets {
            self.set_position(i, position);
        }
        Ok(())
    }

    fn set_paused(&mut self, partitions: &[TopicPartition], paused: bool) -> Result<()> {
        let targets = partitions
            .iter()
            .map(|tp| self.assigned(tp))
            .collect::<Result<Vec<_>>>()?;
        for i in targets {
            self.assignment[i].paused = paused;
        }
        Ok(())
    }

    /// The position of assignment `i`, looked up if pending.
    fn resolve(&mut self, i: usize) -> Result<u64> {
        let a = &mut self.assignment[i];
        let reset = match a.position {
            Position::At(offset) => return Ok(offset),
            Position::Reset(reset) => reset,
            Position::Unset => {
                // A group's committed offset comes first, as in Kafka; an
                // out-of-range one is reset at the fetch like any position.
                if let Some(group) = &self.config.group_id {
                    let committed = self.cluster.inner.group_offsets(group)?;
                    if let Some(meta) = committed.get(&a.tp) {
                        a.position = Position::At(meta.offset);
                        return Ok(meta.offset);
                    }
                }
                self.config.auto_offset_reset
            }
        };
        let offset = reset_offset(&self.cluster, a, reset)?;
        a.position = Position::At(offset);
        Ok(offset)
    }

    /// Fetches for every fetchable partition whose buffer is empty (or, while
    /// data is held back for `fetch.min.bytes`, every fetchable partition, to
    /// count what has arrived since), within `fetch.max.bytes`.
    fn fill(&mut self) -> Result<()> {
        let n = self.assignment.len();
        let max_total = byte_count(self.config.fetch_max_bytes);
        let mut used: usize = 0;
        if self.delivering {
            used = self
                .assignment
                .iter()
                .filter_map(|a| a.fetch.as_ref())
                .map(Fetch::remaining_bytes)
                .sum();
        }
        for k in 0..n {
            let i = (self.rotation + k) % n;
            if self.assignment[i].paused {
                continue;
            }
            if let Some(fetch) = &self.assignment[i].fetch
                && self.delivering
                && !fetch.is_drained()
            {
                continue;
            }
            self.assignment[i].fetch = None;
            if self.membership.is_some() && self.is_gone(&self.assignment[i]) {
                // Deleted: the group's next rebalance takes it away.
                continue;
            }
            let position = self.resolve(i)?;
            if used > 0 && used >= max_total {
                continue;
            }
            let max_bytes = byte_count(self.config.max_partition_fetch_bytes)
                .min(max_total.saturating_sub(used));
            let (data, source) = self.read(i, position, max_bytes)?;
            if data.is_empty() || (used > 0 && used + data.len() > max_total) {
                continue;
            }
            used += data.len();
            self.assignment[i].fetch = Some(Fetch::new(data, source));
        }
        Ok(())
    }

    /// Reads from assignment `i` at `position`, resetting the position by
    /// `auto.offset.reset` when it is outside the log.
    fn read(
        &mut self,
        i: usize,
        mut position: u64,
        max_bytes: usize,
    ) -> Result<(bytes::Bytes, ReadSource)> {
        let reset = self.config.auto_offset_reset;
        let a = &mut self.assignment[i];
        // The log start may move again between the reset and the read; a
        // few tries settle any realistic race.
        for _ in 0..4 {
            let fetched = self.cluster.inner.replicas().fetch(
                &a.key,
                position,
                max_bytes,
                FetchBound::HighWatermark,
            );
            match fetched {
                Ok(fetched) => return Ok((fetched.records().clone(), fetched.source())),
                Err(Error::OffsetOutOfRange { .. }) => {
                    position = reset_offset(&self.cluster, a, reset)?;
                    a.position = Position::At(position);
                }
                // The log checks the batch it starts the read at; report its
                // damage as the consumer's own check would.
                Err(Error::Corrupt {
                    kind: CorruptionKind::Batch(cause),
                    ..
                }) => {
                    return Err(Error::CorruptRecord {
                        topic: a.tp.topic.clone(),
                        partition: a.tp.partition,
                        offset: position,
                        cause,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Ok((bytes::Bytes::new(), ReadSource::default()))
    }

    /// Whether buffered records may be returned now, by `fetch.min.bytes`
    /// and `fetch.max.wait.ms`.
    fn ready(&mut self, now: i64) -> bool {
        if self.delivering {
            return true;
        }
        let buffered: usize = self
            .assignment
            .iter()
            .filter(|a| !a.paused)
            .filter_map(|a| a.fetch.as_ref())
            .map(Fetch::remaining_bytes)
            .sum();
        if buffered == 0 {
            self.pending_since = None;
            return false;
        }
        let since = *self.pending_since.get_or_insert(now);
        let waited = now.saturating_sub(since);
        if buffered >= byte_count(self.config.fetch_min_bytes)
            || waited >= self.config.fetch_max_wait_ms
        {
            self.delivering = true;
            self.pending_since = None;
        }
        self.delivering
    }

    /// With `enable.partition.eof`, the fetchable partitions whose position
    /// is at the high watermark and not yet reported there; marks them
    /// reported. Never fails, so that records drained before it are
    /// returned: a partition whose offsets cannot be read is left for the
    /// next fetch to report.
    fn partition_eofs(&mut self) -> Vec<(TopicPartition, u64)> {
        if !self.config.enable_partition_eof {
            return Vec::new();
        }
        let mut eofs = Vec::new();
        let replicas = self.cluster.inner.replicas();
        for a in &mut self.assignment {
            let Position::At(position) = a.position else {
                continue;
            };
            if a.paused || a.eof_at == Some(position) {
                continue;
            }
            // A position above the high watermark is out of range: the
            // next fetch resets it and it is reported from there. A
            // partition gone has no offsets.
            if replicas
                .offsets(&a.key)
                .is_ok_and(|o| o.high_watermark == position)
            {
                a.eof_at = Some(position);
                eofs.push((a.tp.clone(), position));
            }
        }
        eofs
    }

    /// Takes up to `max.poll.records` buffered records, partition by
    /// partition from the rotation point, advancing positions; also says
    /// whether any position moved.
    fn drain(&mut self) -> Result<(ConsumerRecords, bool)> {
        let n = self.assignment.len();
        let mut remaining = self.config.max_poll_records;
        let mut parts = Vec::new();
        let mut failure = None;
        let mut last = None;
        let mut moved = false;
        for k in 0..n {
            if remaining == 0 {
                break;
            }
            let i = (self.rotation + k) % n;
            let a = &mut self.assignment[i];
            if a.paused {
                continue;
            }
            let (Some(fetch), Position::At(mut position)) = (a.fetch.as_mut(), a.position) else {
                continue;
            };
            let mut out = Vec::with_capacity(fetch.records_left(remaining));
            let result = fetch.drain(
                &mut position,
                Sink {
                    topic: &a.key.topic,
                    partition: a.tp.partition,
                    check_crcs: self.config.check_crcs,
                    max: remaining,
                    out: &mut out,
                },
            );
            moved |= a.position != Position::At(position);
            a.position = Position::At(position);
            if fetch.is_drained() {
                a.releaser.done_with(fetch.source());
                a.fetch = None;
            }
            if !out.is_empty() {
                remaining -= out.len();
                parts.push((a.tp.clone(), out));
                last = Some(i);
            }
            if let Err(cause) = result {
                failure = Some(Error::CorruptRecord {
                    topic: a.tp.topic.clone(),
                    partition: a.tp.partition,
                    offset: position,
                    cause,
                });
                break;
            }
        }
        if let Some(last) = last {
            self.rotation = (last + 1) % n;
        }
        if self
            .assignment
            .iter()
            .all(|a| a.paused || a.fetch.is_none())
        {
            self.delivering = false;
        }
        match failure {
            // The partition's fetch was emptied, so the next poll reads the
            // damaged batch again and reports it then.
            Some(e) if parts.is_empty() => Err(e),
            _ => Ok((ConsumerRecords::new(parts), moved)),
        }
    }
}

/// The offset `reset` points to in `a`'s partition.
fn reset_offset(cluster: &Cluster, a: &Assigned, reset: OffsetReset) -> Result<u64> {
    let offsets = cluster.inner.replicas().offsets(&a.key)?;
    match reset {
        OffsetReset::Earliest => Ok(offsets.log_start),
        OffsetReset::Latest => Ok(offsets.high_watermark),
        OffsetReset::None => Err(Error::NoOffsetForPartition {
            topic: a.tp.topic.clone(),
            partition: a.tp.partition,
        }),
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // Like a crashed process: no commit, no leave. Dropping the
        // membership stops the heartbeat thread.
        if self.membership.take().is_some() {
            self.cluster.inner.unwatch_metadata(&self.waker_tx);
        }
        for a in &self.assignment {
            self.cluster
                .inner
                .replicas()
                .unwatch(&a.key, &self.waker_tx);
        }
    }
}
