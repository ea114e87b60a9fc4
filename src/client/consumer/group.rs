//! The consumer's side of group membership: Kafka's `ConsumerCoordinator`
//! and its heartbeat thread.
//!
//! A subscribed consumer is a member of its group. Each
//! [`poll`](Consumer::poll) first runs [`Consumer::group_step`], which
//! drives the member through the coordinator's protocol without blocking:
//!
//! 1. **join** — before joining, the member commits (with
//!    `enable.auto.commit`) and, under the eager protocol, revokes every
//!    partition; the coordinator answers `Pending` until every member has
//!    rejoined;
//! 2. **sync** — the leader runs the group's assignor over every member's
//!    subscription and sends the result; the others wait for it;
//! 3. **stable** — the member heartbeats, auto-commits when due, and
//!    rejoins when the coordinator reports a rebalance, when its pattern
//!    matches a different set of topics, or (leader only) when a
//!    subscribed topic's partition count changes.
//!
//! Under the cooperative protocol, members keep their partitions while
//! rejoining; after the sync each revokes only what it lost and, if it
//! revoked anything, rejoins at once so the follow-up rebalance can hand
//! those partitions to their new owners (KIP-429).
//!
//! Between polls a background thread (`logbus-heartbeat`) heartbeats every
//! `heartbeat.interval.ms` on the cluster's clock, and leaves the group
//! when `poll` has not been called for `max.poll.interval.ms`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use parking_lot::Mutex;

use crate::client::assignor::{RebalanceProtocol, Subscription};
use crate::cluster::{ClusterInner, JoinRequest, JoinResponse, Joined, SyncResponse, WeakCluster};
use crate::error::{Error, Result};
use crate::types::TopicPartition;

use super::{Consumer, ConsumerGroupMetadata};

/// Callbacks around a group rebalance: Kafka's
/// `ConsumerRebalanceListener`.
///
/// The consumer calls them from inside [`poll`](Consumer::poll) (and
/// [`close`](Consumer::close) / [`unsubscribe`](Consumer::unsubscribe)),
/// on the polling thread, with the consumer itself, so a callback may
/// commit or seek; calling `poll` from a callback fails with
/// [`Error::IllegalState`].
///
/// - `on_partitions_revoked` runs before partitions are taken away while
///   the member is still in the group: the place to commit what was
///   processed. Under the eager protocol it gets every partition at the
///   start of each rebalance; under the cooperative one only the
///   partitions moving elsewhere.
/// - `on_partitions_assigned` runs after the rebalance with the partitions
///   added (eager: the whole new assignment); positions are looked up
///   afterwards, so a `seek` here decides where reading starts.
/// - `on_partitions_lost` runs when the member finds it was removed from
///   the group (its session expired, or `max.poll.interval.ms` passed):
///   the partitions may already belong to someone else, so committing is
///   pointless. By default it calls `on_partitions_revoked`, as Kafka's.
///
/// ```
/// use logbus::{Consumer, ConsumerRebalanceListener, TopicPartition};
///
/// #[derive(Debug, Default)]
/// struct CommitOnRevoke {
///     assigned: Vec<TopicPartition>,
/// }
///
/// impl ConsumerRebalanceListener for CommitOnRevoke {
///     fn on_partitions_revoked(&mut self, consumer: &mut Consumer, _: &[TopicPartition]) {
///         // Commit what was processed before the partitions move on.
///         let _ = consumer.commit_sync();
///     }
///     fn on_partitions_assigned(&mut self, _: &mut Consumer, partitions: &[TopicPartition]) {
///         self.assigned.extend_from_slice(partitions);
///     }
/// }
/// ```
pub trait ConsumerRebalanceListener: Send {
    /// Partitions are about to be taken away (the member still owns them).
    fn on_partitions_revoked(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
        let _ = (consumer, partitions);
    }

    /// Partitions were added to the assignment.
    fn on_partitions_assigned(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
        let _ = (consumer, partitions);
    }

    /// Partitions were lost without a chance to revoke them first.
    fn on_partitions_lost(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
        self.on_partitions_revoked(consumer, partitions);
    }
}

/// What the consumer subscribes to.
#[derive(Debug, Clone)]
pub(super) enum Subscribed {
    Topics(BTreeSet<String>),
    /// Anchored: a topic must match the whole pattern, as Java's
    /// `Pattern.matcher(topic).matches()`.
    Pattern(regex::Regex),
}

/// Where the member is in the protocol.
#[derive(Debug, Clone)]
enum Step {
    /// Must join; `prepared` once the pre-join commit and revocation ran.
    Join { prepared: bool },
    /// Joined; the coordinator waits for other members.
    Joining,
    /// The join phase is complete; the member syncs.
    Sync(Box<Joined>),
    /// The member has its assignment for `generation`.
    Stable,
}

/// The consumer's membership in its group.
#[derive(Debug)]
pub(super) struct Membership {
    pub(super) group: String,
    pub(super) subscribed: Subscribed,
    /// The topics the subscription currently resolves to, sorted.
    topics: Vec<String>,
    member_id: Option<String>,
    /// The generation of the current assignment, or -1.
    generation: i32,
    step: Step,
    /// Fixed by the configured assignors: cooperative only if every one of
    /// them is (Kafka's rule), so a group that switches assignors never
    /// moves a partition its owner has not revoked.
    protocol: RebalanceProtocol,
    /// The cluster's metadata epoch when last looked at.
    metadata_epoch: u64,
    /// Leader only: every member's topics, and the partition counts of
    /// those that existed, when the leader last assigned, to notice a
    /// change.
    leader_counts: Option<(BTreeSet<String>, TopicLayout)>,
    /// A rejoin is due at the next step (cooperative follow-up, changed
    /// subscription or metadata).
    rejoin: bool,
    /// Eager members revoke everything before they rejoin, but still tell
    /// the assignor what they owned (as Kafka's sticky assignor carries it
    /// in its user data), so `sticky` stays sticky.
    last_owned: Vec<TopicPartition>,
    /// Another consumer took this static member's `group.instance.id`:
    /// fatal, as in Kafka, until `unsubscribe` or `close`.
    fenced: bool,
    heartbeat: Option<Heartbeat>,
}

/// Each existing topic's id and partition count: a topic deleted and
/// created again under the same name shows up as a new id.
type TopicLayout = BTreeMap<String, (uuid::Uuid, u32)>;

impl Membership {
    pub(super) fn new(group: String, subscribed: Subscribed, protocol: RebalanceProtocol) -> Self {
        Membership {
            group,
            subscribed,
            topics: Vec::new(),
            member_id: None,
            generation: -1,
            step: Step::Join { prepared: false },
            protocol,
            metadata_epoch: u64::MAX,
            leader_counts: None,
            rejoin: false,
            last_owned: Vec::new(),
            fenced: false,
            heartbeat: None,
        }
    }

    /// The member id and generation to commit with, if the member is in a
    /// generation.
    pub(super) fn commit_identity(&self) -> Option<(&str, i32)> {
        self.member_id.as_deref().map(|id| (id, self.generation))
    }

    /// Why the member may not commit now, if it may not: it is fenced, or
    /// it has rejoined and waits for its new assignment (Kafka's client
    /// answers `RebalanceInProgressException` then; its old generation is
    /// about to end, and the coordinator would call it stale).
    pub(super) fn commit_refusal(&self) -> Option<Error> {
        if self.fenced {
            return Some(self.fenced_error());
        }
        match self.step {
            Step::Joining | Step::Sync(_) if self.member_id.is_some() => {
                Some(Error::RebalanceInProgress {
                    group: self.group.clone(),
                })
            }
            _ => None,
        }
    }

    fn fenced_error(&self) -> Error {
        Error::FencedInstanceId {
            group: self.group.clone(),
            instance_id: self.instance_id().unwrap_or_default(),
        }
    }

    fn instance_id(&self) -> Option<String> {
        self.heartbeat.as_ref().and_then(|h| h.instance_id.clone())
    }

    /// Whether the member has an assignment for its current generation.
    pub(super) fn is_stable(&self) -> bool {
        matches!(self.step, Step::Stable)
    }

    /// Whether the member keeps reading the partitions it owns while its
    /// group rebalances: under the cooperative protocol it owns them until
    /// it revokes them (KIP-429's point); under the eager one it has
    /// revoked everything before rejoining.
    pub(super) fn reads_while_rebalancing(&self) -> bool {
        self.protocol == RebalanceProtocol::Cooperative && !self.fenced
    }

    pub(super) fn generation(&self) -> i32 {
        self.generation
    }

    pub(super) fn member_id(&self) -> Option<&str> {
        self.member_id.as_deref()
    }

    fn publish(&self) {
        if let Some(hb) = &self.heartbeat {
            *hb.shared.member.lock() = self.member_id.clone().map(|id| (id, self.generation));
        }
    }
}

/// State shared with the heartbeat thread.
#[derive(Debug, Default)]
struct HeartbeatShared {
    /// The member id and generation to heartbeat for; `None` pauses it.
    member: Mutex<Option<(String, i32)>>,
    /// When `poll` was last called (cluster clock).
    last_poll: AtomicI64,
    /// The consumer is inside `poll` (which notes the time on each pass of
    /// its loop): never a missed poll.
    in_poll: AtomicBool,
    /// The member id the thread left the group with because `poll` was not
    /// called within `max.poll.interval.ms`.
    left_as: Mutex<Option<String>>,
    /// The clock time the thread last woke at (for tests to wait on).
    last_wake: Mutex<i64>,
    woke: parking_lot::Condvar,
}

/// The `logbus-heartbeat` thread of one consumer.
#[derive(Debug)]
struct Heartbeat {
    shared: Arc<HeartbeatShared>,
    instance_id: Option<String>,
    stop: Sender<()>,
    handle: Option<JoinHandle<()>>,
}

impl Heartbeat {
    fn spawn(consumer: &Consumer, group: &str) -> Result<Heartbeat> {
        let shared = Arc::new(HeartbeatShared::default());
        shared
            .last_poll
            .store(consumer.cluster.inner.clock().now_ms(), Ordering::Release);
        let (stop, stop_rx) = crossbeam_channel::bounded(1);
        let ctx = HeartbeatContext {
            cluster: WeakCluster::new(&consumer.cluster.inner),
            shared: shared.clone(),
            group: group.to_string(),
            instance_id: consumer.config.group_instance_id.clone(),
            interval: consumer.config.heartbeat_interval_ms,
            max_poll_interval: consumer.config.max_poll_interval_ms,
            waker: consumer.waker_tx.clone(),
        };
        let clock_rx = consumer.cluster.inner.clock().subscribe();
        let handle = std::thread::Builder::new()
            .name("logbus-heartbeat".into())
            .spawn(move || ctx.run(&stop_rx, &clock_rx))
            .map_err(|e| Error::io("spawn heartbeat thread", "", e))?;
        Ok(Heartbeat {
            shared,
            instance_id: consumer.config.group_instance_id.clone(),
            stop,
            handle: Some(handle),
        })
    }

    fn stop(&mut self) {
        let _ = self.stop.try_send(());
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop();
    }
}

struct HeartbeatContext {
    cluster: WeakCluster,
    shared: Arc<HeartbeatShared>,
    group: String,
    instance_id: Option<String>,
    interval: i64,
    max_poll_interval: i64,
    waker: Sender<()>,
}

impl HeartbeatContext {
    fn run(
        &self,
        stop: &crossbeam_channel::Receiver<()>,
        clock_rx: &crossbeam_channel::Receiver<()>,
    ) {
        let mut next = i64::MIN;
        loop {
            let Some(cluster) = self.cluster.upgrade() else {
                return;
            };
            if cluster.check_open().is_err() {
                return;
            }
            let clock = cluster.clock().clone();
            let now = clock.now_ms();
            let due = now >= next;
            if due {
                next = now.saturating_add(self.interval);
            }
            self.wake(&cluster, now, due);
            drop(cluster);
            let timer = match clock.wait_hint(next) {
                Some(wait) => crossbeam_channel::after(wait),
                None => crossbeam_channel::never(),
            };
            crossbeam_channel::select! {
                recv(stop) -> _ => return,
                recv(clock_rx) -> _ => {}
                recv(timer) -> _ => {}
            }
        }
    }

    /// One wake-up of the thread at clock time `now`: the poll-interval
    /// check, and a heartbeat if `due`.
    fn wake(&self, cluster: &ClusterInner, now: i64, due: bool) {
        self.check(cluster, now, due);
        *self.shared.last_wake.lock() = now;
        self.shared.woke.notify_all();
    }

    fn check(&self, cluster: &ClusterInner, now: i64, due: bool) {
        let mut member = self.shared.member.lock();
        let Some((id, generation)) = member.clone() else {
            return;
        };
        let last_poll = self.shared.last_poll.load(Ordering::Acquire);
        if !self.shared.in_poll.load(Ordering::Acquire)
            && now.saturating_sub(last_poll) > self.max_poll_interval
        {
            // Kafka: "consumer poll timeout has expired". A dynamic member
            // leaves so the group rebalances at once; a static one stops
            // heartbeating and is removed when its session times out.
            if self.instance_id.is_none() {
                cluster.groups.leave(&self.group, &id, now);
            }
            *member = None;
            *self.shared.left_as.lock() = Some(id);
            let _ = self.waker.try_send(());
            return;
        }
        if !due {
            return;
        }
        let result = cluster.groups.heartbeat(
            &self.group,
            &id,
            self.instance_id.as_deref(),
            generation,
            now,
        );
        if result.is_err() {
            // The consumer learns what happened at its next poll.
            let _ = self.waker.try_send(());
        }
    }
}

impl Consumer {
    /// Subscribes to `topics` as a member of the consumer's group (Kafka's
    /// `subscribe`): the group's members share the partitions of the
    /// topics, and each [`poll`](Consumer::poll) takes part in the group's
    /// rebalances. Topics that do not exist yet are not an error (and are
    /// not created): their partitions are assigned once they are created,
    /// as [the `Consumer` docs](Consumer#subscribing-to-a-topic-that-does-not-exist)
    /// explain. Replaces an earlier subscription (the member rejoins with
    /// the new topics); an empty list unsubscribes.
    ///
    /// ```
    /// use logbus::{Cluster, ClusterConfig, Consumer, ConsumerConfig, NewTopic, OffsetReset};
    /// use std::time::Duration;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    /// cluster.create_topic(NewTopic::new("orders", 3))?;
    /// let config = ConsumerConfig::builder()
    ///     .group_id("billing")
    ///     .auto_offset_reset(OffsetReset::Earliest)
    ///     .build()?;
    /// let mut consumer = Consumer::new(&cluster, config)?;
    /// consumer.subscribe(["orders"])?;
    /// consumer.poll(Duration::from_millis(10))?; // joins the group
    /// assert_eq!(consumer.assignment().len(), 3); // the only member owns all
    /// consumer.close()?; // leaves the group
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::IllegalState`] without a `group.id`, or while partitions
    /// are assigned by hand ([`assign`](Consumer::assign)); call
    /// [`unsubscribe`](Consumer::unsubscribe) first.
    /// [`Error::InvalidTopic`] for an invalid topic name. Nothing changes
    /// then.
    pub fn subscribe<I, S>(&mut self, topics: I) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let topics: BTreeSet<String> = topics.into_iter().map(Into::into).collect();
        for topic in &topics {
            crate::cluster::validate_topic_name(topic, true)?;
        }
        if topics.is_empty() {
            self.unsubscribe();
            return Ok(());
        }
        self.set_subscription(Subscribed::Topics(topics))
    }

    /// Subscribes to every topic whose whole name matches `pattern` (a
    /// regular expression in the `regex` crate's syntax, which covers the
    /// Java patterns Kafka users write: `orders-.*`, `(a|b)\.events`), now
    /// or later: topics created afterwards that match are picked up.
    /// Internal topics (`__consumer_offsets`) never match. Otherwise as
    /// [`subscribe`](Consumer::subscribe).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an invalid pattern; as
    /// [`subscribe`](Consumer::subscribe).
    pub fn subscribe_pattern(&mut self, pattern: &str) -> Result<()> {
        let regex = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
            Error::InvalidArgument(format!("invalid subscription pattern {pattern:?}: {e}"))
        })?;
        self.set_subscription(Subscribed::Pattern(regex))
    }

    /// Sets the listener called around rebalances (Kafka passes it to
    /// `subscribe`). Replaces an earlier one.
    pub fn set_rebalance_listener(&mut self, listener: impl ConsumerRebalanceListener + 'static) {
        self.listener.0 = Some(Box::new(listener));
    }

    /// The topics the consumer subscribes to: the given ones, or those its
    /// pattern matched when last resolved. Empty when not subscribed.
    #[must_use]
    pub fn subscription(&self) -> Vec<String> {
        match &self.membership {
            Some(m) => match &m.subscribed {
                Subscribed::Topics(t) => t.iter().cloned().collect(),
                Subscribed::Pattern(_) => m.topics.clone(),
            },
            None => Vec::new(),
        }
    }

    /// The consumer's member id in its group, once it has joined.
    #[must_use]
    pub fn member_id(&self) -> Option<&str> {
        self.membership.as_ref().and_then(Membership::member_id)
    }

    /// The generation of the group the consumer's assignment belongs to,
    /// or `None` before it has one (Kafka's `groupMetadata().generationId()`).
    #[must_use]
    pub fn generation(&self) -> Option<i32> {
        self.membership
            .as_ref()
            .filter(|m| m.is_stable())
            .map(Membership::generation)
    }

    /// The consumer's group id, generation and member id (Kafka's
    /// `groupMetadata()`), to give to
    /// [`Producer::send_offsets_to_transaction`](crate::Producer::send_offsets_to_transaction)
    /// so that the group coordinator refuses the offsets if this member
    /// was removed from the group or the group rebalanced since. Before
    /// the consumer has joined (or with `assign`), the generation is -1
    /// and the member id empty: no check is made.
    ///
    /// # Errors
    /// [`Error::IllegalState`] without a `group.id`.
    pub fn group_metadata(&self) -> Result<ConsumerGroupMetadata> {
        let mut metadata = ConsumerGroupMetadata::new(self.group()?);
        if let (Some(member), Some(generation)) = (self.member_id(), self.generation()) {
            metadata = metadata.with_member(generation, member);
        }
        if let Some(instance) = self.config.group_instance_id() {
            metadata = metadata.with_group_instance_id(instance);
        }
        Ok(metadata)
    }

    fn set_subscription(&mut self, subscribed: Subscribed) -> Result<()> {
        let Some(group) = self.config.group_id.clone() else {
            return Err(Error::IllegalState(
                "subscribing needs a group.id (set ConsumerConfig::group_id)".into(),
            ));
        };
        if self.membership.is_none() && !self.assignment.is_empty() {
            return Err(Error::IllegalState(
                "Subscription to topics, partitions and pattern are mutually exclusive: \
                 unsubscribe from the manual assignment first"
                    .into(),
            ));
        }
        match &mut self.membership {
            Some(m) => {
                m.subscribed = subscribed;
                m.metadata_epoch = u64::MAX;
            }
            None => {
                let protocol = if self
                    .config
                    .assignors
                    .iter()
                    .all(|a| a.protocol() == RebalanceProtocol::Cooperative)
                {
                    RebalanceProtocol::Cooperative
                } else {
                    RebalanceProtocol::Eager
                };
                let mut m = Membership::new(group.clone(), subscribed, protocol);
                m.heartbeat = Some(Heartbeat::spawn(self, &group)?);
                if !self.follows_leaders {
                    // (A consumer following leaders watches already.)
                    self.cluster.inner.watch_metadata(&self.waker_tx);
                }
                self.membership = Some(m);
            }
        }
        Ok(())
    }

    /// Leaves the group (if subscribed): revokes the assignment through the
    /// listener after a final auto-commit, and sends the leave (dynamic
    /// members only). Returns the auto-commit's outcome.
    pub(super) fn leave_group(&mut self) -> Result<()> {
        if self.membership.is_none() {
            return Ok(());
        }
        let committed = self.maybe_auto_commit_sync();
        let owned = self.assignment();
        if !owned.is_empty() {
            self.call_listener(|l, c| l.on_partitions_revoked(c, &owned));
        }
        let Some(mut m) = self.membership.take() else {
            return committed;
        };
        if let Some(mut hb) = m.heartbeat.take() {
            hb.stop();
        }
        if let Some(id) = &m.member_id
            && self.config.group_instance_id.is_none()
        {
            let now = self.cluster.inner.clock().now_ms();
            self.cluster.inner.groups.leave(&m.group, id, now);
        }
        if !self.follows_leaders {
            self.cluster.inner.unwatch_metadata(&self.waker_tx);
        }
        self.clear_assignment();
        committed
    }

    /// Runs `f` with the listener (if any) and the consumer, guarding
    /// against `poll` from inside the callback.
    fn call_listener(&mut self, f: impl FnOnce(&mut dyn ConsumerRebalanceListener, &mut Consumer)) {
        let Some(mut listener) = self.listener.take() else {
            return;
        };
        self.in_callback = true;
        f(&mut *listener, self);
        self.in_callback = false;
        if self.listener.is_none() {
            self.listener.0 = Some(listener);
        }
    }

    /// Waits until the heartbeat thread has woken at clock time `at` or
    /// later (tests move a manual clock, then wait here).
    #[cfg(test)]
    pub(super) fn wait_for_heartbeat_at(&self, at: i64) {
        let Some(hb) = self.membership.as_ref().and_then(|m| m.heartbeat.as_ref()) else {
            return;
        };
        let mut last = hb.shared.last_wake.lock();
        while *last < at {
            // A guard against hanging the test suite, not a timing
            // assertion: the thread wakes within microseconds of the jump.
            let waited = hb
                .shared
                .woke
                .wait_for(&mut last, std::time::Duration::from_secs(60));
            assert!(
                !waited.timed_out() || *last >= at,
                "the heartbeat thread never woke"
            );
        }
    }

    /// Notes that `poll` runs at `now` (for `max.poll.interval.ms`) and
    /// whether the consumer is inside it.
    pub(super) fn note_poll(&self, now: i64, inside: bool) {
        if let Some(hb) = self.membership.as_ref().and_then(|m| m.heartbeat.as_ref()) {
            hb.shared.last_poll.store(now, Ordering::Release);
            hb.shared.in_poll.store(inside, Ordering::Release);
        }
    }

    /// Drives group membership one step without blocking. Returns whether
    /// the member has its assignment (records may be fetched).
    pub(super) fn group_step(&mut self, now: i64) -> Result<bool> {
        let Some(m) = self.membership.as_mut() else {
            return Ok(true);
        };
        if m.fenced {
            return Err(m.fenced_error());
        }
        let left_as = m
            .heartbeat
            .as_ref()
            .and_then(|hb| hb.shared.left_as.lock().take());
        if left_as.is_some() && left_as == m.member_id {
            // The heartbeat thread left the group for this member (not for
            // an earlier one the consumer has already replaced).
            self.member_lost(true);
        }
        self.check_metadata();
        // Each arm either returns or moves to a later step; a few rounds
        // settle any answer the coordinator can give.
        for _ in 0..8 {
            let m = self.membership.as_mut().expect("subscribed");
            match m.step.clone() {
                Step::Stable => {
                    if m.rejoin {
                        m.rejoin = false;
                        m.step = Step::Join { prepared: false };
                        continue;
                    }
                    let id = m.member_id.clone().unwrap_or_default();
                    let result = self.cluster.inner.groups.heartbeat(
                        &m.group,
                        &id,
                        self.config.group_instance_id.as_deref(),
                        m.generation,
                        now,
                    );
                    match result {
                        Ok(()) => {
                            self.maybe_auto_commit(now);
                            return Ok(true);
                        }
                        Err(Error::RebalanceInProgress { .. }) => {
                            m.step = Step::Join { prepared: false };
                        }
                        Err(Error::FencedInstanceId { .. }) => {
                            return Err(self.fence());
                        }
                        Err(Error::UnknownMemberId { .. } | Error::IllegalGeneration { .. }) => {
                            self.member_lost(matches!(result, Err(Error::UnknownMemberId { .. })));
                        }
                        Err(e) => return Err(e),
                    }
                }
                Step::Join { prepared: false } => {
                    self.prepare_join();
                    if let Some(m) = self.membership.as_mut() {
                        m.step = Step::Join { prepared: true };
                    }
                }
                Step::Join { prepared: true } | Step::Joining => match self.send_join(now) {
                    Ok(JoinResponse::Pending { member_id }) => {
                        let m = self.membership.as_mut().expect("subscribed");
                        m.member_id = Some(member_id);
                        m.step = Step::Joining;
                        m.publish();
                        return Ok(false);
                    }
                    Ok(JoinResponse::Joined(joined)) => {
                        let m = self.membership.as_mut().expect("subscribed");
                        m.member_id = Some(joined.member_id.clone());
                        m.step = Step::Sync(Box::new(joined));
                    }
                    Err(Error::UnknownMemberId { .. }) => {
                        let m = self.membership.as_mut().expect("subscribed");
                        m.member_id = None;
                    }
                    Err(Error::FencedInstanceId { .. }) => return Err(self.fence()),
                    Err(e) => return Err(e),
                },
                Step::Sync(joined) => {
                    let assignment = if joined.leader == joined.member_id {
                        Some(self.assign_as_leader(&joined)?)
                    } else {
                        None
                    };
                    let m = self.membership.as_mut().expect("subscribed");
                    let result = self.cluster.inner.groups.sync(
                        &m.group,
                        &joined.member_id,
                        joined.generation,
                        assignment,
                        now,
                    );
                    match result {
                        Ok(SyncResponse::Pending) => return Ok(false),
                        Ok(SyncResponse::Assigned(partitions)) => {
                            self.complete_join(&joined, partitions);
                            if self.membership.as_ref().is_some_and(|m| m.rejoin) {
                                // The cooperative follow-up: rejoin now, as
                                // no wake-up will come for it.
                                continue;
                            }
                            return Ok(true);
                        }
                        Err(Error::RebalanceInProgress { .. }) => {
                            m.step = Step::Join { prepared: false };
                        }
                        Err(Error::UnknownMemberId { .. } | Error::IllegalGeneration { .. }) => {
                            self.member_lost(matches!(result, Err(Error::UnknownMemberId { .. })));
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(false)
    }

    /// Re-resolves a pattern and, as leader, compares partition counts when
    /// the cluster's topics changed.
    fn check_metadata(&mut self) {
        let epoch = self.cluster.inner.metadata_epoch();
        let Some(m) = self.membership.as_mut() else {
            return;
        };
        if m.metadata_epoch == epoch {
            return;
        }
        m.metadata_epoch = epoch;
        let topics: Vec<String> = match &m.subscribed {
            Subscribed::Topics(t) => t.iter().cloned().collect(),
            Subscribed::Pattern(re) => {
                let mut names: Vec<String> = self
                    .cluster
                    .list_topics()
                    .into_iter()
                    .filter(|t| re.is_match(t))
                    .collect();
                names.sort();
                names
            }
        };
        if topics != m.topics {
            m.topics = topics;
            m.rejoin = true;
        }
        if let Some((topics, layout)) = &m.leader_counts {
            let now_layout = topic_layout(&self.cluster.inner, topics.iter());
            if &now_layout != layout {
                m.rejoin = true;
            }
        }
    }

    /// Kafka's `onJoinPrepare`: commit, then revoke (eager: everything;
    /// cooperative: partitions of topics no longer subscribed).
    fn prepare_join(&mut self) {
        let _ = self.maybe_auto_commit_sync();
        let Some(m) = self.membership.as_ref() else {
            return;
        };
        let owned = self.assignment();
        let revoked: Vec<TopicPartition> = match m.protocol {
            RebalanceProtocol::Eager => {
                let owned_now = owned.clone();
                if let Some(m) = self.membership.as_mut() {
                    m.last_owned = owned_now;
                }
                owned
            }
            RebalanceProtocol::Cooperative => owned
                .into_iter()
                .filter(|tp| !m.topics.contains(&tp.topic))
                .collect(),
        };
        if revoked.is_empty() {
            return;
        }
        self.call_listener(|l, c| l.on_partitions_revoked(c, &revoked));
        let kept: Vec<TopicPartition> = self
            .assignment()
            .into_iter()
            .filter(|tp| !revoked.contains(tp))
            .collect();
        self.set_assignment(&kept);
    }

    fn send_join(&mut self, now: i64) -> Result<JoinResponse> {
        let mut owned = self.assignment();
        let m = self.membership.as_mut().expect("subscribed");
        if m.protocol == RebalanceProtocol::Eager {
            owned.clone_from(&m.last_owned);
        }
        // The join carries the current topics: no further rejoin is due.
        m.rejoin = false;
        let m = &*m;
        let mut subscription =
            Subscription::new(m.topics.iter().cloned()).with_owned_partitions(owned);
        if m.generation >= 0 {
            subscription = subscription.with_generation(m.generation);
        }
        if let Some(instance) = &self.config.group_instance_id {
            subscription = subscription.with_group_instance_id(instance.clone());
        }
        let request = JoinRequest {
            member_id: m.member_id.clone(),
            instance_id: self.config.group_instance_id.clone(),
            client_id: self.client_id.clone(),
            session_timeout_ms: self.config.session_timeout_ms,
            rebalance_timeout_ms: self.config.max_poll_interval_ms,
            protocols: self
                .config
                .assignors
                .iter()
                .map(|a| a.name().to_string())
                .collect(),
            subscription,
            waker: self.waker_tx.clone(),
        };
        self.cluster.inner.groups.join(&m.group, request, now)
    }

    /// The leader's part of the sync: run the chosen assignor.
    fn assign_as_leader(
        &mut self,
        joined: &Joined,
    ) -> Result<BTreeMap<String, Vec<TopicPartition>>> {
        let assignor = self
            .config
            .assignors
            .iter()
            .find(|a| a.name() == joined.protocol)
            .cloned()
            .ok_or_else(|| {
                Error::Internal(format!(
                    "the group chose assignor {:?}, which this consumer does not offer",
                    joined.protocol
                ))
            })?;
        let topics: BTreeSet<String> = joined
            .members
            .values()
            .flat_map(|s| s.topics.iter().cloned())
            .collect();
        let layout = topic_layout(&self.cluster.inner, topics.iter());
        let counts: BTreeMap<String, u32> =
            layout.iter().map(|(t, (_, n))| (t.clone(), *n)).collect();
        let assignment = assignor.assign(&counts, &joined.members);
        if let Some(m) = self.membership.as_mut() {
            m.leader_counts = Some((topics, layout));
        }
        Ok(assignment)
    }

    /// Kafka's `onJoinComplete`: take the new assignment, calling the
    /// listener for what was revoked and added.
    fn complete_join(&mut self, joined: &Joined, partitions: Vec<TopicPartition>) {
        let protocol = self
            .membership
            .as_ref()
            .map_or(RebalanceProtocol::Eager, |m| m.protocol);
        let owned = self.assignment();
        let (revoked, added): (Vec<TopicPartition>, Vec<TopicPartition>) = match protocol {
            RebalanceProtocol::Eager => (Vec::new(), partitions.clone()),
            RebalanceProtocol::Cooperative => (
                owned
                    .iter()
                    .filter(|tp| !partitions.contains(tp))
                    .cloned()
                    .collect(),
                partitions
                    .iter()
                    .filter(|tp| !owned.contains(tp))
                    .cloned()
                    .collect(),
            ),
        };
        {
            let m = self.membership.as_mut().expect("subscribed");
            m.generation = joined.generation;
            m.step = Step::Stable;
            if joined.leader != joined.member_id {
                m.leader_counts = None;
            }
            m.publish();
        }
        if !revoked.is_empty() {
            // Commit what was read from the partitions before they move.
            let _ = self.maybe_auto_commit_sync();
            self.call_listener(|l, c| l.on_partitions_revoked(c, &revoked));
            if let Some(m) = self.membership.as_mut() {
                m.rejoin = true;
            }
        }
        self.set_assignment(&partitions);
        self.call_listener(|l, c| l.on_partitions_assigned(c, &added));
    }

    /// Another consumer took this static member's instance id: its
    /// partitions are lost, and every later poll and commit fails.
    fn fence(&mut self) -> Error {
        self.member_lost(false);
        match self.membership.as_mut() {
            Some(m) => {
                m.fenced = true;
                if let Some(hb) = &m.heartbeat {
                    *hb.shared.member.lock() = None;
                }
                m.fenced_error()
            }
            None => Error::IllegalState("the consumer left its group".into()),
        }
    }

    /// The member was removed from its group (or its generation is gone):
    /// its partitions are lost, and it joins afresh.
    fn member_lost(&mut self, forget_id: bool) {
        let owned = self.assignment();
        if !owned.is_empty() {
            self.call_listener(|l, c| l.on_partitions_lost(c, &owned));
        }
        self.clear_assignment();
        if let Some(m) = self.membership.as_mut() {
            // A static member keeps its id: joining with it tells a
            // removed member (welcome back) from a replaced one (fenced).
            if forget_id && m.instance_id().is_none() {
                m.member_id = None;
            }
            m.last_owned.clear();
            m.generation = -1;
            m.step = Step::Join { prepared: true };
            m.publish();
        }
    }
}

/// The ids and partition counts of the existing topics among `topics`.
fn topic_layout<'a>(
    cluster: &ClusterInner,
    topics: impl Iterator<Item = &'a String>,
) -> TopicLayout {
    topics
        .filter_map(|t| {
            cluster
                .topic_state(t)
                .ok()
                .map(|s| (t.clone(), (s.id, s.partition_count())))
        })
        .collect()
}
