//! The group coordinator's membership protocol: Kafka's `GroupCoordinator`
//! and `GroupMetadata`, in process.
//!
//! Members talk to it with the calls of Kafka's protocol — join, sync,
//! heartbeat, leave — and it moves each group through Kafka's states:
//!
//! ```text
//!            join                 all members joined          leader's sync
//!   Empty ────────▶ PreparingRebalance ──────────▶ CompletingRebalance ──────▶ Stable
//!     ▲                 ▲   │ last member gone          │ join / leave / expiry  │
//!     └─────────────────┼───┘                           ▼                        │
//!                       └────────────────────── PreparingRebalance ◀───────────────┘
//! ```
//!
//! `Dead` is what the admin views report for a group that has neither
//! members nor committed offsets ([`GroupCoordinator::describe`] knows no
//! such group).
//!
//! ## Members on the wire
//! Kafka clients join over the wire protocol (`join_wire`, `sync_wire`):
//! their protocol metadata and the leader's assignments are opaque bytes,
//! kept beside the parsed [`Subscription`] and partitions and handed back
//! unchanged, for any protocol type; in-process consumers and wire members
//! can share a group of protocol type `consumer`. A new wire member may
//! first be handed its member id (`new_member_id`, KIP-394). A wire
//! member's join or sync that the listener holds until it can be answered
//! marks the member `awaiting`: its session does not expire meanwhile, as
//! Kafka keeps such a member alive.
//!
//! ## No blocking
//! Kafka's broker parks a JoinGroup or SyncGroup request until the
//! rebalance can answer it. Here every call returns at once: a member whose
//! join or sync cannot be answered yet gets `Pending` and calls again later;
//! the coordinator sends on every member's waker channel whenever the group
//! changes state, so a consumer waiting in `poll` wakes up and asks again.
//!
//! ## Time
//! There is no timer thread. Every call first expires what the group's
//! clock says has expired — members whose session timed out, and, in
//! `PreparingRebalance`, members that did not rejoin within the rebalance
//! timeout — so a test that moves a [`ManualClock`](crate::ManualClock)
//! sees the effect at its next call. Live consumers call in at least every
//! `heartbeat.interval.ms` (their heartbeat thread), which keeps expiry
//! timely in production.
//!
//! ## Locks
//! `groups` is taken before the offset store (a commit checks membership
//! and appends under it, so a member fenced by a rebalance can never commit
//! afterwards) and never while holding a topic or replica lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::Sender;
use parking_lot::Mutex;

mod join;
mod protocol;

use join::{join_known, join_new, join_static_replacement, touch};
pub use protocol::Subscription;

use crate::error::{Error, Result};
use crate::types::TopicPartition;

/// The state of a consumer group, as Kafka's `GroupState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GroupState {
    /// No members (the group may still have committed offsets).
    Empty,
    /// A rebalance started: the coordinator waits for every member to
    /// rejoin (or for the rebalance timeout).
    PreparingRebalance,
    /// Every member rejoined; the coordinator waits for the leader's
    /// assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
    /// The group has no members and no committed offsets.
    Dead,
}

impl GroupState {
    /// Kafka's name of the state (`Empty`, `PreparingRebalance`, ...).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

impl std::fmt::Display for GroupState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a member sends to join.
#[derive(Debug, Clone)]
pub(crate) struct JoinRequest {
    /// The id the coordinator gave the member earlier; `None` to join as a
    /// new member.
    pub member_id: Option<String>,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub session_timeout_ms: i64,
    pub rebalance_timeout_ms: i64,
    /// Assignor names, preferred first.
    pub protocols: Vec<String>,
    pub subscription: Subscription,
    /// Woken whenever the group changes state.
    pub waker: Sender<()>,
}

/// The answer to a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JoinResponse {
    /// The member is in the group under `member_id`; the join phase waits
    /// for other members. Join again (with this id) when woken.
    Pending { member_id: String },
    /// The join phase is complete for `generation`.
    Joined(Joined),
}

/// What a member joining over Kafka's wire protocol sends beside a
/// [`JoinRequest`]: the group's protocol type (Kafka's `protocol_type`:
/// `consumer` for consumers, `connect` for Kafka Connect workers, ...;
/// every member of a group has the same) and, for each protocol it offers
/// (in the order of [`JoinRequest::protocols`]), the opaque metadata the
/// leader's assignor reads. The coordinator hands these bytes to the
/// leader unchanged, whatever the protocol type.
#[derive(Debug, Clone, Default)]
struct WireJoin {
    protocol_type: String,
    metadata: Vec<Bytes>,
    /// Where the member's connection comes from, as Kafka's DescribeGroups
    /// shows it (`/` and the IP address).
    client_host: String,
}

/// The protocol type of members that join in process.
pub(crate) const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// A member as the leader sees it in a [`Joined`].
#[cfg_attr(
    not(feature = "server"),
    allow(dead_code, reason = "for the wire listener")
)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JoinedMember {
    /// The member's `group.instance.id`, if it is static.
    pub instance_id: Option<String>,
    /// The metadata the member sent for the chosen protocol, if it joined
    /// over the wire (`None` for an in-process member: its
    /// [`Subscription`] is in [`Joined::members`]).
    pub metadata: Option<Bytes>,
}

/// A completed join: Kafka's `JoinGroupResponse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Joined {
    pub member_id: String,
    pub generation: i32,
    /// The group's protocol type.
    pub protocol_type: String,
    /// The chosen assignor's name.
    pub protocol: String,
    pub leader: String,
    /// Every member's subscription, for the leader only (empty otherwise).
    pub members: BTreeMap<String, Subscription>,
    /// Every member's instance id and wire metadata, for the leader only
    /// (empty otherwise).
    pub wire_members: BTreeMap<String, JoinedMember>,
}

/// One member's assignment as the leader sends it: the partitions, and
/// the opaque bytes a wire leader sent (handed to the member unchanged).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct MemberAssignment {
    /// The partitions (what in-process members read).
    partitions: Vec<TopicPartition>,
    /// The leader's bytes for the member, if the leader synced over the
    /// wire.
    raw: Option<Bytes>,
}

/// The answer to a sync over the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
enum WireSyncResponse {
    /// The leader has not sent the assignment yet; sync again when woken.
    Pending,
    /// The member's assignment for the generation.
    Assigned(MemberAssignment),
}

/// What a SyncGroup request says about the member and the group, checked
/// in a sync.
#[derive(Debug, Clone, Copy)]
struct SyncCheck<'a> {
    /// The member's `group.instance.id`, if it is static.
    instance_id: Option<&'a str>,
    /// The group's protocol type as the member knows it (v5+).
    protocol_type: Option<&'a str>,
    /// The chosen protocol as the member knows it (v5+).
    protocol_name: Option<&'a str>,
}

/// The answer to a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SyncResponse {
    /// The leader has not sent the assignment yet; sync again when woken.
    Pending,
    /// The member's partitions for the generation.
    Assigned(Vec<TopicPartition>),
}

/// Cluster-wide group settings (Kafka's `group.*` broker configs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupLimits {
    pub min_session_timeout_ms: i64,
    pub max_session_timeout_ms: i64,
    pub initial_rebalance_delay_ms: i64,
}

#[derive(Debug)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    /// Where a wire member's last JoinGroup came from (`/` and the IP
    /// address, as Kafka's `clientHost`); empty for an in-process member.
    client_host: String,
    session_timeout_ms: i64,
    rebalance_timeout_ms: i64,
    protocols: Vec<String>,
    subscription: Subscription,
    /// When the member last called in.
    last_seen: i64,
    /// Whether the member has (re)joined in the current rebalance.
    joined: bool,
    /// The member's partitions in the current generation (once synced).
    assignment: Vec<TopicPartition>,
    /// Each offered protocol's metadata, for a member that joined over the
    /// wire.
    metadata: Option<Vec<Bytes>>,
    /// The leader's bytes for the member's assignment, if it synced over
    /// the wire.
    raw_assignment: Option<Bytes>,
    /// A wire member whose join or sync is parked until the coordinator
    /// can answer: Kafka keeps such a member alive (its session does not
    /// expire) until the answer, or until the request gives up
    /// ([`GroupCoordinator::release`]).
    awaiting: bool,
    waker: Sender<()>,
}

impl Member {
    /// The metadata the member sent for `protocol`.
    fn metadata_for(&self, protocol: Option<&str>) -> Option<Bytes> {
        let i = self
            .protocols
            .iter()
            .position(|p| Some(p.as_str()) == protocol)?;
        self.metadata.as_ref()?.get(i).cloned()
    }
}

#[derive(Debug)]
struct Group {
    state: GroupState,
    generation: i32,
    /// The protocol type every member shares (Kafka's `protocolType`),
    /// kept while the group is empty.
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Static members: `group.instance.id` to member id.
    instances: HashMap<String, String>,
    /// Member ids handed out to new members that must join with them
    /// (Kafka's `pendingMembers`, KIP-394), and when each expires unused.
    pending_ids: HashMap<String, i64>,
    /// In `PreparingRebalance`: when members that have not rejoined are
    /// removed.
    rebalance_deadline: i64,
    /// In `PreparingRebalance` from `Empty`: the join phase does not end
    /// before this (`group.initial.rebalance.delay.ms`).
    initial_delay_until: i64,
    /// Rebalances completed (join phases that produced a generation with
    /// members), for descriptions.
    rebalances: u64,
    next_member: u64,
}

impl Group {
    fn new() -> Self {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            instances: HashMap::new(),
            pending_ids: HashMap::new(),
            rebalance_deadline: 0,
            initial_delay_until: 0,
            rebalances: 0,
            next_member: 0,
        }
    }

    fn notify_all(&self) {
        for m in self.members.values() {
            // A full channel already holds a wake-up.
            let _ = m.waker.try_send(());
        }
    }

    fn prepare_rebalance(&mut self, now: i64, limits: &GroupLimits) {
        if self.state == GroupState::PreparingRebalance {
            return;
        }
        let from_empty = self.state == GroupState::Empty;
        self.state = GroupState::PreparingRebalance;
        for m in self.members.values_mut() {
            m.joined = false;
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0);
        self.rebalance_deadline = now.saturating_add(timeout);
        self.initial_delay_until = if from_empty {
            now.saturating_add(limits.initial_rebalance_delay_ms)
        } else {
            now
        };
        self.notify_all();
    }

    fn remove_member(&mut self, id: &str, now: i64, limits: &GroupLimits) {
        let Some(member) = self.members.remove(id) else {
            return;
        };
        if let Some(instance) = &member.instance_id
            && self.instances.get(instance).map(String::as_str) == Some(id)
        {
            self.instances.remove(instance);
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now, limits);
            }
            GroupState::PreparingRebalance => {}
            GroupState::Empty | GroupState::Dead => {}
        }
        self.maybe_complete_join(now);
    }

    /// Ends the join phase if every member rejoined (or none is left).
    fn maybe_complete_join(&mut self, now: i64) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        if self.members.values().any(|m| !m.joined) {
            return;
        }
        if !self.members.is_empty() && now < self.initial_delay_until {
            return;
        }
        self.generation += 1;
        for m in self.members.values_mut() {
            m.assignment.clear();
            m.raw_assignment = None;
        }
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = Some(self.select_protocol());
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        self.rebalances += 1;
        self.notify_all();
    }

    /// Kafka's `selectProtocol`: among the protocols every member supports,
    /// each member votes for the one it prefers most; the most votes win
    /// (ties, which Kafka breaks arbitrarily, go to the earlier candidate
    /// in the preference order of the member with the smallest id).
    fn select_protocol(&self) -> String {
        let mut members = self.members.values();
        let first = members
            .next()
            .map(|m| m.protocols.clone())
            .unwrap_or_default();
        let candidates: Vec<String> = first
            .into_iter()
            .filter(|p| self.members.values().all(|m| m.protocols.contains(p)))
            .collect();
        let mut votes: Vec<usize> = vec![0; candidates.len()];
        for m in self.members.values() {
            if let Some(i) = m
                .protocols
                .iter()
                .find_map(|p| candidates.iter().position(|c| c == p))
            {
                votes[i] += 1;
            }
        }
        let best = (0..candidates.len())
            .max_by(|&a, &b| votes[a].cmp(&votes[b]).then(b.cmp(&a)))
            .unwrap_or(0);
        candidates.get(best).cloned().unwrap_or_default()
    }

    /// Applies the clock: session expiry and the rebalance deadline.
    fn expire(&mut self, now: i64, limits: &GroupLimits) {
        self.pending_ids.retain(|_, expiry| *expiry >= now);
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| !m.awaiting && now.saturating_sub(m.last_seen) > m.session_timeout_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.remove_member(&id, now, limits);
        }
        if self.state == GroupState::PreparingRebalance && now >= self.rebalance_deadline {
            let laggards: Vec<String> = self
                .members
                .iter()
                .filter(|(_, m)| !m.joined)
                .map(|(id, _)| id.clone())
                .collect();
            for id in laggards {
                self.remove_member(&id, now, limits);
            }
        }
        self.maybe_complete_join(now);
    }

    fn joined_response(&self, member_id: &str) -> Joined {
        let leader = self.leader.clone().unwrap_or_default();
        let (members, wire_members) = if leader == member_id {
            (
                self.members
                    .iter()
                    .map(|(id, m)| (id.clone(), m.subscription.clone()))
                    .collect(),
                self.members
                    .iter()
                    .map(|(id, m)| {
                        let member = JoinedMember {
                            instance_id: m.instance_id.clone(),
                            metadata: m.metadata_for(self.protocol.as_deref()),
                        };
                        (id.clone(), member)
                    })
                    .collect(),
            )
        } else {
            (BTreeMap::new(), BTreeMap::new())
        };
        Joined {
            member_id: member_id.to_string(),
            generation: self.generation,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol: self.protocol.clone().unwrap_or_default(),
            leader,
            members,
            wire_members,
        }
    }

    fn unknown(group: &str, member_id: &str) -> Error {
        Error::UnknownMemberId {
            group: group.to_string(),
            member_id: member_id.to_string(),
        }
    }

    /// Kafka's `supportsProtocols`: a member joining a group with other
    /// members must share its protocol type and one of its protocols.
    fn check_protocols(&self, group: &str, req: &JoinRequest, protocol_type: &str) -> Result<()> {
        let others: Vec<&Member> = self
            .members
            .iter()
            .filter(|(id, _)| req.member_id.as_deref() != Some(id.as_str()))
            .map(|(_, m)| m)
            .collect();
        if !others.is_empty()
            && (self.protocol_type.as_deref() != Some(protocol_type)
                || !req
                    .protocols
                    .iter()
                    .any(|p| others.iter().all(|m| m.protocols.contains(p))))
        {
            return Err(Error::InconsistentGroupProtocol {
                group: group.to_string(),
                offered: req.protocols.clone(),
            });
        }
        Ok(())
    }

    /// Kafka's static member check: a request naming `instance` must come
    /// from the member that holds it now.
    fn check_instance(&self, group: &str, member_id: &str, instance: Option<&str>) -> Result<()> {
        match instance.and_then(|i| self.instances.get(i).map(|held| (i, held))) {
            Some((instance, held)) if held != member_id => Err(Error::FencedInstanceId {
                group: group.to_string(),
                instance_id: instance.to_string(),
            }),
            _ => Ok(()),
        }
    }

    fn fenced_or_unknown(&self, group: &str, member_id: &str, instance: Option<&str>) -> Error {
        match instance {
            Some(instance) if self.instances.contains_key(instance) => Error::FencedInstanceId {
                group: group.to_string(),
                instance_id: instance.to_string(),
            },
            _ => Self::unknown(group, member_id),
        }
    }
}

/// Membership of every group.
#[derive(Debug)]
pub(crate) struct GroupCoordinator {
    groups: Mutex<HashMap<String, Group>>,
    limits: GroupLimits,
    /// Where completed rebalances are counted (the cluster's).
    metrics: Arc<crate::metrics::Metrics>,
    /// Signalled after every call, so a test can wait for a member on
    /// another thread to reach the group.
    #[cfg(test)]
    changed: parking_lot::Condvar,
}

/// One member as an admin sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberSnapshot {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    /// Where a wire member's connection comes from (`/` and the IP
    /// address); empty for an in-process member.
    pub client_host: String,
    pub assignment: Vec<TopicPartition>,
    pub subscription: Vec<String>,
    /// The metadata the member sent for the group's protocol, if it
    /// joined over the wire.
    pub metadata: Option<Bytes>,
    /// The leader's bytes for the member's assignment, if it synced over
    /// the wire.
    pub raw_assignment: Option<Bytes>,
    /// Whether the member's join or sync is parked, waiting for the
    /// coordinator's answer (a wire member).
    pub awaiting: bool,
}

/// A group's membership as an admin sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupSnapshot {
    pub state: GroupState,
    pub generation: i32,
    /// The members' protocol type (kept while the group is empty).
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: Vec<MemberSnapshot>,
    pub rebalances: u64,
}

impl GroupCoordinator {
    pub(crate) fn new(limits: GroupLimits) -> Self {
        GroupCoordinator {
            groups: Mutex::new(HashMap::new()),
            limits,
            metrics: Arc::new(crate::metrics::Metrics::new()),
            #[cfg(test)]
            changed: parking_lot::Condvar::new(),
        }
    }

    /// The coordinator, counting rebalances into `metrics`.
    pub(crate) fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Counts and traces the rebalances `g` completed since it had
    /// completed `before`.
    fn observe(&self, name: &str, g: &Group, before: u64) {
        if g.rebalances > before {
            self.metrics.rebalanced(name, g.rebalances - before);
            tracing::info!(
                group = name,
                generation = g.generation,
                members = g.members.len(),
                leader = ?g.leader,
                protocol = ?g.protocol,
                "group rebalanced"
            );
        }
    }

    /// Runs `f` on `group` (created empty if unknown) after expiring what
    /// `now` says has expired.
    fn with_group<T>(&self, group: &str, now: i64, f: impl FnOnce(&mut Group) -> T) -> T {
        let mut groups = self.groups.lock();
        // Every poll of a member comes here: look up before allocating a key.
        if !groups.contains_key(group) {
            groups.insert(group.to_string(), Group::new());
        }
        let g = groups.get_mut(group).expect("inserted above");
        let before = g.rebalances;
        g.expire(now, &self.limits);
        let out = f(g);
        self.observe(group, g, before);
        // A group that never formed is dropped; one that did keeps its
        // generation while empty, as Kafka keeps an `Empty` group, so
        // generations never repeat (until the group is deleted).
        if g.members.is_empty()
            && g.state == GroupState::Empty
            && g.generation == 0
            && g.pending_ids.is_empty()
        {
            groups.remove(group);
        }
        #[cfg(test)]
        self.changed.notify_all();
        out
    }

    /// Waits (in real time, at most 30 s, then panics) until `done` holds
    /// for `group`'s [`describe`](Self::describe) as of `now`: for tests
    /// whose members run on other threads.
    #[cfg(all(test, feature = "server"))]
    pub(crate) fn wait_for(
        &self,
        group: &str,
        now: impl Fn() -> i64,
        done: impl Fn(Option<&GroupSnapshot>) -> bool,
    ) {
        let limit = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if done(self.describe(group, now()).as_ref()) {
                return;
            }
            let mut groups = self.groups.lock();
            // Checked again under the lock: no call can slip in between.
            let snapshot = groups.get(group).and_then(describe_group);
            if done(snapshot.as_ref()) {
                return;
            }
            assert!(
                !self.changed.wait_until(&mut groups, limit).timed_out(),
                "group {group} did not reach the expected state"
            );
        }
    }

    /// Runs `f` if `group` has no members, then forgets the group (its
    /// generation starts again at 1): for deleting a group.
    pub(crate) fn delete_if_empty<T>(
        &self,
        group: &str,
        now: i64,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let out = self.while_empty(group, now, f)?;
        let mut groups = self.groups.lock();
        if groups.get(group).is_some_and(|g| g.members.is_empty()) {
            groups.remove(group);
        }
        Ok(out)
    }

    /// Kafka's JoinGroup, from an in-process consumer (protocol type
    /// `consumer`, no wire metadata).
    pub(crate) fn join(&self, group: &str, req: JoinRequest, now: i64) -> Result<JoinResponse> {
        self.join_inner(group, req, None, now)
    }

    /// Kafka's JoinGroup from a member on the wire: as [`join`](Self::join),
    /// with the member's protocol type and metadata bytes, which the
    /// leader gets back unchanged, and the host its connection comes from
    /// (`client_host`, which DescribeGroups shows).
    ///
    /// # Errors
    /// As [`join`](Self::join); [`Error::InconsistentGroupProtocol`] also
    /// for an empty protocol type, a protocol type other than the group's,
    /// or metadata that does not match the protocols one for one.
    #[cfg_attr(
        not(feature = "server"),
        allow(dead_code, reason = "for the wire listener")
    )]
    pub(crate) fn join_wire(
        &self,
        group: &str,
        req: JoinRequest,
        protocol_type: &str,
        metadata: Vec<Bytes>,
        client_host: &str,
        now: i64,
    ) -> Result<JoinResponse> {
        let wire = WireJoin {
            protocol_type: protocol_type.to_string(),
            metadata,
            client_host: client_host.to_string(),
        };
        if wire.protocol_type.is_empty() || wire.metadata.len() != req.protocols.len() {
            return Err(Error::InconsistentGroupProtocol {
                group: group.to_string(),
                offered: req.protocols,
            });
        }
        self.join_inner(group, req, Some(wire), now)
    }

    /// Kafka's JoinGroup v4+ from a new dynamic member (no member id, no
    /// instance id; KIP-394): checks the request as a join would, then
    /// hands out a member id, which the member must join with within its
    /// session timeout (Kafka answers MEMBER_ID_REQUIRED with it). The
    /// member is not in the group until then.
    ///
    /// # Errors
    /// As [`join_wire`](Self::join_wire).
    #[cfg_attr(
        not(feature = "server"),
        allow(dead_code, reason = "for the wire listener")
    )]
    pub(crate) fn new_member_id(
        &self,
        group: &str,
        req: &JoinRequest,
        protocol_type: &str,
        now: i64,
    ) -> Result<String> {
        self.check_join(req)?;
        if protocol_type.is_empty() {
            return Err(Error::InconsistentGroupProtocol {
                group: group.to_string(),
                offered: req.protocols.clone(),
            });
        }
        self.with_group(group, now, |g| {
            g.check_protocols(group, req, protocol_type)?;
            let id = join::make_member_id(g, req);
            g.pending_ids
                .insert(id.clone(), now.saturating_add(req.session_timeout_ms));
            Ok(id)
        })
    }

    /// What a join is checked for before the group is looked at: the
    /// session timeout within the cluster's bounds, a protocol offered.
    fn check_join(&self, req: &JoinRequest) -> Result<()> {
        let limits = self.limits;
        if req.session_timeout_ms < limits.min_session_timeout_ms
            || req.session_timeout_ms > limits.max_session_timeout_ms
        {
            return Err(Error::InvalidConfig(format!(
                "session.timeout.ms={} is outside the cluster's \
                 [group.min.session.timeout.ms, group.max.session.timeout.ms] = [{}, {}]",
                req.session_timeout_ms,
                limits.min_session_timeout_ms,
                limits.max_session_timeout_ms
            )));
        }
        if req.protocols.is_empty() {
            return Err(Error::InvalidArgument(
                "a member must offer at least one assignor".into(),
            ));
        }
        Ok(())
    }

    fn join_inner(
        &self,
        group: &str,
        req: JoinRequest,
        wire: Option<WireJoin>,
        now: i64,
    ) -> Result<JoinResponse> {
        let limits = self.limits;
        self.check_join(&req)?;
        self.with_group(group, now, |g| {
            let protocol_type = wire
                .as_ref()
                .map_or(CONSUMER_PROTOCOL_TYPE, |w| w.protocol_type.as_str());
            g.check_protocols(group, &req, protocol_type)?;
            let known = req
                .member_id
                .as_deref()
                .filter(|id| g.members.contains_key(*id))
                .map(str::to_string);
            let protocol_type = protocol_type.to_string();
            let (metadata, client_host) = match wire {
                Some(w) => (Some(w.metadata), Some(w.client_host)),
                None => (None, None),
            };
            // Kafka compares the whole join metadata: new bytes under the
            // same topics (another protocol's user data) also rebalance.
            let metadata_changed = known
                .as_ref()
                .and_then(|id| g.members.get(id))
                .is_some_and(|m| m.metadata != metadata);
            let answer = match (known, req.member_id.as_deref(), req.instance_id.as_deref()) {
                (Some(id), _, _) => join_known(g, id, req, metadata_changed, now, &limits),
                // Removed (expired or left): it must join afresh, as Kafka
                // answers UNKNOWN_MEMBER_ID. Or replaced: its instance id
                // now belongs to a process that joined with no member id,
                // and the old one must not take it back (Kafka's
                // FENCED_INSTANCE_ID).
                // A new member back with the id it was handed (KIP-394).
                (None, Some(id), _) if g.pending_ids.remove(id).is_some() => {
                    let id = id.to_string();
                    join_new(g, req, Some(id), now, &limits)
                }
                (None, Some(id), instance) => return Err(g.fenced_or_unknown(group, id, instance)),
                (None, None, Some(instance)) if g.instances.contains_key(instance) => {
                    join_static_replacement(g, instance.to_string(), req, now, &limits)
                }
                (None, None, _) => join_new(g, req, None, now, &limits),
            };
            g.protocol_type = Some(protocol_type);
            let id = match &answer {
                JoinResponse::Pending { member_id } => member_id.clone(),
                JoinResponse::Joined(joined) => joined.member_id.clone(),
            };
            let wire = metadata.is_some();
            if let Some(m) = g.members.get_mut(&id) {
                m.metadata = metadata;
                if let Some(host) = client_host {
                    m.client_host = host;
                }
                m.awaiting = wire && matches!(answer, JoinResponse::Pending { .. });
            }
            // The answer is built again: the member may lead, and the
            // leader's answer carries its own metadata too.
            Ok(match answer {
                JoinResponse::Joined(_) => JoinResponse::Joined(g.joined_response(&id)),
                pending => pending,
            })
        })
    }

    /// Kafka's SyncGroup. The leader passes every member's assignment.
    pub(crate) fn sync(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        assignment: Option<BTreeMap<String, Vec<TopicPartition>>>,
        now: i64,
    ) -> Result<SyncResponse> {
        let assignment = assignment.map(|a| {
            a.into_iter()
                .map(|(id, partitions)| {
                    (
                        id,
                        MemberAssignment {
                            partitions,
                            raw: None,
                        },
                    )
                })
                .collect()
        });
        let check = SyncCheck {
            instance_id: None,
            protocol_type: None,
            protocol_name: None,
        };
        Ok(
            match self.sync_inner(group, member_id, generation, check, assignment, None, now)? {
                WireSyncResponse::Pending => SyncResponse::Pending,
                WireSyncResponse::Assigned(a) => SyncResponse::Assigned(a.partitions),
            },
        )
    }

    /// Kafka's SyncGroup from a member on the wire: as [`sync`](Self::sync),
    /// with the leader's opaque assignment bytes (beside the partitions
    /// they hold, for in-process members) handed to each member unchanged.
    /// `instance_id` must hold the member (else FENCED_INSTANCE_ID), and
    /// `protocol` (type and name, v5+), where given, must be the group's
    /// (else INCONSISTENT_GROUP_PROTOCOL); `waker` is woken from now on
    /// when the group changes. `None` while the leader's assignment is
    /// awaited; else the member's partitions and the leader's bytes for
    /// it (`None` if the leader is in process).
    #[allow(clippy::too_many_arguments, reason = "Kafka's SyncGroup fields")]
    #[allow(clippy::type_complexity, reason = "each member's partitions and bytes")]
    #[cfg_attr(
        not(feature = "server"),
        allow(dead_code, reason = "for the wire listener")
    )]
    pub(crate) fn sync_wire(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        instance_id: Option<&str>,
        protocol: (Option<&str>, Option<&str>),
        assignment: Option<BTreeMap<String, (Vec<TopicPartition>, Option<Bytes>)>>,
        waker: &Sender<()>,
        now: i64,
    ) -> Result<Option<(Vec<TopicPartition>, Option<Bytes>)>> {
        let check = SyncCheck {
            instance_id,
            protocol_type: protocol.0,
            protocol_name: protocol.1,
        };
        let assignment = assignment.map(|a| {
            a.into_iter()
                .map(|(id, (partitions, raw))| (id, MemberAssignment { partitions, raw }))
                .collect()
        });
        let answer = self.sync_inner(
            group,
            member_id,
            generation,
            check,
            assignment,
            Some(waker),
            now,
        )?;
        Ok(match answer {
            WireSyncResponse::Pending => None,
            WireSyncResponse::Assigned(a) => Some((a.partitions, a.raw)),
        })
    }

    #[allow(clippy::too_many_arguments, reason = "Kafka's SyncGroup fields")]
    fn sync_inner(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        check: SyncCheck<'_>,
        assignment: Option<BTreeMap<String, MemberAssignment>>,
        waker: Option<&Sender<()>>,
        now: i64,
    ) -> Result<WireSyncResponse> {
        self.with_group(group, now, |g| {
            if !g.members.contains_key(member_id) {
                return Err(g.fenced_or_unknown(group, member_id, check.instance_id));
            }
            g.check_instance(group, member_id, check.instance_id)?;
            if generation != g.generation {
                return Err(Error::IllegalGeneration {
                    group: group.to_string(),
                    generation,
                });
            }
            let inconsistent = |expected: Option<&str>, actual: Option<&str>| {
                expected.is_some_and(|e| Some(e) != actual)
            };
            if inconsistent(check.protocol_type, g.protocol_type.as_deref())
                || inconsistent(check.protocol_name, g.protocol.as_deref())
            {
                return Err(Error::InconsistentGroupProtocol {
                    group: group.to_string(),
                    offered: check
                        .protocol_name
                        .into_iter()
                        .map(str::to_string)
                        .collect(),
                });
            }
            touch(g, member_id, now);
            if let Some(waker) = waker
                && let Some(m) = g.members.get_mut(member_id)
            {
                m.waker = waker.clone();
                // Parked until the leader's assignment (cleared below if
                // it is in).
                m.awaiting = g.state == GroupState::CompletingRebalance;
            }
            let assigned = |g: &Group| {
                let m = &g.members[member_id];
                WireSyncResponse::Assigned(MemberAssignment {
                    partitions: m.assignment.clone(),
                    raw: m.raw_assignment.clone(),
                })
            };
            match g.state {
                GroupState::PreparingRebalance => Err(Error::RebalanceInProgress {
                    group: group.to_string(),
                }),
                GroupState::CompletingRebalance => {
                    if g.leader.as_deref() == Some(member_id)
                        && let Some(assignment) = assignment
                    {
                        for (id, a) in assignment {
                            if let Some(m) = g.members.get_mut(&id) {
                                m.assignment = a.partitions;
                                m.raw_assignment = a.raw;
                            }
                        }
                        if let Some(m) = g.members.get_mut(member_id) {
                            m.awaiting = false;
                        }
                        g.state = GroupState::Stable;
                        g.notify_all();
                        return Ok(assigned(g));
                    }
                    Ok(WireSyncResponse::Pending)
                }
                GroupState::Stable => Ok(assigned(g)),
                GroupState::Empty | GroupState::Dead => Err(Group::unknown(group, member_id)),
            }
        })
    }

    /// Kafka's Heartbeat: keeps the member's session alive and tells it
    /// whether it must rejoin.
    pub(crate) fn heartbeat(
        &self,
        group: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: i64,
    ) -> Result<()> {
        self.with_group(group, now, |g| {
            if !g.members.contains_key(member_id) {
                return Err(g.fenced_or_unknown(group, member_id, instance_id));
            }
            g.check_instance(group, member_id, instance_id)?;
            touch(g, member_id, now);
            match g.state {
                GroupState::PreparingRebalance => Err(Error::RebalanceInProgress {
                    group: group.to_string(),
                }),
                _ if generation != g.generation => Err(Error::IllegalGeneration {
                    group: group.to_string(),
                    generation,
                }),
                // Kafka answers a heartbeat while the leader computes the
                // assignment with success; the member syncs anyway.
                _ => Ok(()),
            }
        })
    }

    /// Kafka's LeaveGroup. Unknown members are ignored.
    pub(crate) fn leave(&self, group: &str, member_id: &str, now: i64) {
        let limits = self.limits;
        self.with_group(group, now, |g| g.remove_member(member_id, now, &limits));
    }

    /// Kafka's LeaveGroup for one member of the request (v3+ names members
    /// by member id, instance id or both).
    ///
    /// # Errors
    /// [`Error::UnknownMemberId`] if no such member is in the group;
    /// [`Error::FencedInstanceId`] if `instance` belongs to another member
    /// id. Nothing changes then.
    #[cfg_attr(
        not(feature = "server"),
        allow(dead_code, reason = "for the wire listener")
    )]
    pub(crate) fn leave_member(
        &self,
        group: &str,
        member_id: &str,
        instance: Option<&str>,
        now: i64,
    ) -> Result<()> {
        let limits = self.limits;
        self.with_group(group, now, |g| {
            let id = match instance {
                Some(instance) => {
                    let held = g
                        .instances
                        .get(instance)
                        .cloned()
                        .ok_or_else(|| Group::unknown(group, member_id))?;
                    if !member_id.is_empty() && held != member_id {
                        return Err(Error::FencedInstanceId {
                            group: group.to_string(),
                            instance_id: instance.to_string(),
                        });
                    }
                    held
                }
                None if g.members.contains_key(member_id) => member_id.to_string(),
                None => return Err(Group::unknown(group, member_id)),
            };
            g.remove_member(&id, now, &limits);
            Ok(())
        })
    }

    /// Runs `commit` under the group's lock if a commit with Kafka's
    /// OffsetCommit fields may go ahead, with Kafka's errors (where
    /// [`commit`](Self::commit) answers the in-process consumer's
    /// [`Error::CommitFailed`]): a negative `generation` commits as a
    /// consumer outside the group, allowed while it has no members;
    /// otherwise the member must hold `instance` (if given), be in the
    /// group, be at its generation, and the group must not await its
    /// leader's assignment.
    ///
    /// # Errors
    /// [`Error::FencedInstanceId`], [`Error::UnknownMemberId`],
    /// [`Error::IllegalGeneration`], [`Error::RebalanceInProgress`];
    /// `commit`'s own.
    #[cfg_attr(
        not(feature = "server"),
        allow(dead_code, reason = "for the wire listener")
    )]
    pub(crate) fn commit_wire<T>(
        &self,
        group: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        now: i64,
        commit: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        self.with_group(group, now, |g| {
            if generation < 0 && g.members.is_empty() {
                return commit();
            }
            g.check_instance(group, member_id, instance)?;
            if !g.members.contains_key(member_id) {
                return Err(Group::unknown(group, member_id));
            }
            if generation != g.generation {
                return Err(Error::IllegalGeneration {
                    group: group.to_string(),
                    generation,
                });
            }
            if g.state == GroupState::CompletingRebalance {
                return Err(Error::RebalanceInProgress {
                    group: group.to_string(),
                });
            }
            touch(g, member_id, now);
            commit()
        })
    }

    /// The earliest time after `now` at which `group` may change by the
    /// clock alone (a session expiring, the rebalance deadline, the end of
    /// the initial rebalance delay); `None` if nothing is due.
    #[cfg_attr(
        not(feature = "server"),
        allow(dead_code, reason = "for the wire listener")
    )]
    pub(crate) fn wake_at(&self, group: &str, now: i64) -> Option<i64> {
        self.with_group(group, now, |g| {
            let sessions = g.members.values().filter(|m| !m.awaiting).map(|m| {
                m.last_seen
                    .saturating_add(m.session_timeout_ms)
                    .saturating_add(1)
            });
            let rebalance = (g.state == GroupState::PreparingRebalance)
                .then_some([g.rebalance_deadline, g.initial_delay_until])
                .into_iter()
                .flatten();
            sessions.chain(rebalance).filter(|t| *t > now).min()
        })
    }

    /// Ends the parking of `member_id`'s join or sync (answered, or given
    /// up): its session runs again from `now`, as Kafka restarts a
    /// member's heartbeat timer when it answers.
    #[cfg_attr(
        not(feature = "server"),
        allow(dead_code, reason = "for the wire listener")
    )]
    pub(crate) fn release(&self, group: &str, member_id: &str, now: i64) {
        self.with_group(group, now, |g| {
            if let Some(m) = g.members.get_mut(member_id) {
                m.awaiting = false;
                m.last_seen = m.last_seen.max(now);
            }
        });
    }

    /// When `group`'s join phase ends at the latest (members that have not
    /// rejoined by then are removed); `None` unless it is rebalancing.
    #[cfg_attr(
        not(feature = "server"),
        allow(dead_code, reason = "for the wire listener")
    )]
    pub(crate) fn rebalance_deadline(&self, group: &str, now: i64) -> Option<i64> {
        self.with_group(group, now, |g| {
            (g.state == GroupState::PreparingRebalance).then_some(g.rebalance_deadline)
        })
    }

    /// The rebalance timeout `member_id` joined with, if it is in `group`.
    #[cfg_attr(
        not(feature = "server"),
        allow(dead_code, reason = "for the wire listener")
    )]
    pub(crate) fn rebalance_timeout_ms(
        &self,
        group: &str,
        member_id: &str,
        now: i64,
    ) -> Option<i64> {
        self.with_group(group, now, |g| {
            g.members.get(member_id).map(|m| m.rebalance_timeout_ms)
        })
    }

    /// `group` as the coordinator knows it, members or not (an `Empty`
    /// group keeps its generation and protocol type); `None` for a group
    /// it does not know (which may still have committed offsets).
    #[cfg_attr(
        not(feature = "server"),
        allow(dead_code, reason = "for the wire listener")
    )]
    pub(crate) fn describe(&self, group: &str, now: i64) -> Option<GroupSnapshot> {
        self.with_group(group, now, |g| describe_group(g))
    }

    /// Runs `commit` if `member_id` may commit for `generation` (Kafka's
    /// `handleCommitOffsets` checks), holding the group's lock across it so
    /// no rebalance slips between the check and the append. A `None`
    /// member commits as a "simple" consumer (manual assignment), which
    /// Kafka allows only while the group has no members.
    pub(crate) fn commit<T>(
        &self,
        group: &str,
        member: Option<(&str, i32)>,
        now: i64,
        commit: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        self.with_group(group, now, |g| {
            let failed = |reason: String| Error::CommitFailed {
                group: group.to_string(),
                reason,
            };
            match member {
                None if g.members.is_empty() => {}
                None => {
                    return Err(failed(
                        "the group has active members; commit as one of them".into(),
                    ));
                }
                Some((id, generation)) => {
                    if !g.members.contains_key(id) {
                        return Err(failed(format!(
                            "member {id} is no longer in the group (its session timed out, \
                             poll was not called within max.poll.interval.ms, or it left); \
                             its partitions may have been reassigned"
                        )));
                    }
                    if generation != g.generation {
                        return Err(failed(format!(
                            "generation {generation} is stale (the group is at {}): \
                             the group rebalanced",
                            g.generation
                        )));
                    }
                    if g.state == GroupState::CompletingRebalance {
                        return Err(Error::RebalanceInProgress {
                            group: group.to_string(),
                        });
                    }
                    touch(g, id, now);
                }
            }
            commit()
        })
    }

    /// Runs `f` only if `group` has no members (for admin changes to its
    /// offsets, or its deletion).
    pub(crate) fn while_empty<T>(
        &self,
        group: &str,
        now: i64,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        self.with_group(group, now, |g| {
            if g.members.is_empty() {
                f()
            } else {
                Err(Error::GroupNotEmpty {
                    group: group.to_string(),
                })
            }
        })
    }

    /// A snapshot of `group`'s membership; `None` if it has no members.
    pub(crate) fn snapshot(&self, group: &str, now: i64) -> Option<GroupSnapshot> {
        self.with_group(group, now, |g| {
            if g.members.is_empty() {
                return None;
            }
            describe_group(g)
        })
    }

    /// Groups that have members, sorted.
    pub(crate) fn active_groups(&self, now: i64) -> Vec<String> {
        let mut groups = self.groups.lock();
        for (name, g) in groups.iter_mut() {
            let before = g.rebalances;
            g.expire(now, &self.limits);
            self.observe(name, g, before);
        }
        let mut names: Vec<String> = groups
            .iter()
            .filter(|(_, g)| !g.members.is_empty())
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }
}

/// A snapshot of `g`; `None` if it never formed (no members, generation 0).
fn describe_group(g: &Group) -> Option<GroupSnapshot> {
    if g.members.is_empty() && g.generation == 0 {
        return None;
    }
    Some(GroupSnapshot {
        state: g.state,
        generation: g.generation,
        protocol_type: g.protocol_type.clone(),
        protocol: g.protocol.clone(),
        leader: g.leader.clone(),
        members: g
            .members
            .iter()
            .map(|(id, m)| MemberSnapshot {
                member_id: id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                assignment: m.assignment.clone(),
                subscription: m.subscription.topics.clone(),
                metadata: m.metadata_for(g.protocol.as_deref()),
                raw_assignment: m.raw_assignment.clone(),
                awaiting: m.awaiting,
            })
            .collect(),
        rebalances: g.rebalances,
    })
}

#[cfg(test)]
mod tests;
