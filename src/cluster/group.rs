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
//! `Dead` is what [`GroupCoordinator::describe`] reports for a group that
//! has neither members nor committed offsets.
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

/// A completed join: Kafka's `JoinGroupResponse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Joined {
    pub member_id: String,
    pub generation: i32,
    /// The chosen assignor's name.
    pub protocol: String,
    pub leader: String,
    /// Every member's subscription, for the leader only (empty otherwise).
    pub members: BTreeMap<String, Subscription>,
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
    waker: Sender<()>,
}

#[derive(Debug)]
struct Group {
    state: GroupState,
    generation: i32,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Static members: `group.instance.id` to member id.
    instances: HashMap<String, String>,
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
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            instances: HashMap::new(),
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
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| now.saturating_sub(m.last_seen) > m.session_timeout_ms)
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
        let members = if leader == member_id {
            self.members
                .iter()
                .map(|(id, m)| (id.clone(), m.subscription.clone()))
                .collect()
        } else {
            BTreeMap::new()
        };
        Joined {
            member_id: member_id.to_string(),
            generation: self.generation,
            protocol: self.protocol.clone().unwrap_or_default(),
            leader,
            members,
        }
    }

    fn unknown(group: &str, member_id: &str) -> Error {
        Error::UnknownMemberId {
            group: group.to_string(),
            member_id: member_id.to_string(),
        }
    }

    /// Checks that `member_id` is a member and, for a static member, that it
    /// has not been replaced.
    fn check_member(&self, group: &str, member_id: &str) -> Result<&Member> {
        let member = self
            .members
            .get(member_id)
            .ok_or_else(|| Self::unknown(group, member_id))?;
        Ok(member)
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
}

/// One member as an admin sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberSnapshot {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub assignment: Vec<TopicPartition>,
    pub subscription: Vec<String>,
}

/// A group's membership as an admin sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupSnapshot {
    pub state: GroupState,
    pub generation: i32,
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
        if g.members.is_empty() && g.state == GroupState::Empty && g.generation == 0 {
            groups.remove(group);
        }
        out
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

    /// Kafka's JoinGroup.
    pub(crate) fn join(&self, group: &str, req: JoinRequest, now: i64) -> Result<JoinResponse> {
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
        self.with_group(group, now, |g| {
            let others: Vec<&Member> = g
                .members
                .iter()
                .filter(|(id, _)| req.member_id.as_deref() != Some(id.as_str()))
                .map(|(_, m)| m)
                .collect();
            if !others.is_empty()
                && !req
                    .protocols
                    .iter()
                    .any(|p| others.iter().all(|m| m.protocols.contains(p)))
            {
                return Err(Error::InconsistentGroupProtocol {
                    group: group.to_string(),
                    offered: req.protocols.clone(),
                });
            }
            let known = req
                .member_id
                .as_deref()
                .filter(|id| g.members.contains_key(*id))
                .map(str::to_string);
            match (known, req.member_id.as_deref(), req.instance_id.as_deref()) {
                (Some(id), _, _) => Ok(join_known(g, group, id, req, now, &limits)),
                // Removed (expired or left): it must join afresh, as Kafka
                // answers UNKNOWN_MEMBER_ID. Or replaced: its instance id
                // now belongs to a process that joined with no member id,
                // and the old one must not take it back (Kafka's
                // FENCED_INSTANCE_ID).
                (None, Some(id), instance) => Err(g.fenced_or_unknown(group, id, instance)),
                (None, None, Some(instance)) if g.instances.contains_key(instance) => Ok(
                    join_static_replacement(g, instance.to_string(), req, now, &limits),
                ),
                (None, None, _) => Ok(join_new(g, req, now, &limits)),
            }
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
        self.with_group(group, now, |g| {
            g.check_member(group, member_id)?;
            if generation != g.generation {
                return Err(Error::IllegalGeneration {
                    group: group.to_string(),
                    generation,
                });
            }
            touch(g, member_id, now);
            match g.state {
                GroupState::PreparingRebalance => Err(Error::RebalanceInProgress {
                    group: group.to_string(),
                }),
                GroupState::CompletingRebalance => {
                    if g.leader.as_deref() == Some(member_id)
                        && let Some(assignment) = assignment
                    {
                        for (id, partitions) in assignment {
                            if let Some(m) = g.members.get_mut(&id) {
                                m.assignment = partitions;
                            }
                        }
                        g.state = GroupState::Stable;
                        g.notify_all();
                        return Ok(SyncResponse::Assigned(
                            g.members[member_id].assignment.clone(),
                        ));
                    }
                    Ok(SyncResponse::Pending)
                }
                GroupState::Stable => Ok(SyncResponse::Assigned(
                    g.members[member_id].assignment.clone(),
                )),
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
            Some(GroupSnapshot {
                state: g.state,
                generation: g.generation,
                protocol: g.protocol.clone(),
                leader: g.leader.clone(),
                members: g
                    .members
                    .iter()
                    .map(|(id, m)| MemberSnapshot {
                        member_id: id.clone(),
                        instance_id: m.instance_id.clone(),
                        client_id: m.client_id.clone(),
                        assignment: m.assignment.clone(),
                        subscription: m.subscription.topics.clone(),
                    })
                    .collect(),
                rebalances: g.rebalances,
            })
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

#[cfg(test)]
mod tests;
