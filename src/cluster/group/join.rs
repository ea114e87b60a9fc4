//! Joining a group: a new member, a static member replacing its
//! predecessor (KIP-345), a known member rejoining, and the answer each
//! gets.

use std::collections::BTreeSet;

use super::{Group, GroupLimits, GroupState, JoinRequest, JoinResponse, Member, Subscription};

pub(super) fn touch(g: &mut Group, member_id: &str, now: i64) {
    if let Some(m) = g.members.get_mut(member_id) {
        m.last_seen = m.last_seen.max(now);
    }
}

/// Whether two subscriptions name the same topics: order and duplicates do
/// not matter ([`Subscription::topics`]), so they start no rebalance.
fn same_topics(a: &Subscription, b: &Subscription) -> bool {
    a.topics.iter().collect::<BTreeSet<_>>() == b.topics.iter().collect::<BTreeSet<_>>()
}

/// Whether two subscriptions claim the same partitions. A cooperative
/// member that revoked partitions rejoins with fewer, and that must start
/// the follow-up rebalance, as Kafka compares the whole join metadata.
fn same_owned(a: &Subscription, b: &Subscription) -> bool {
    a.owned_partitions.iter().collect::<BTreeSet<_>>()
        == b.owned_partitions.iter().collect::<BTreeSet<_>>()
}

fn new_member(req: &JoinRequest, now: i64) -> Member {
    Member {
        instance_id: req.instance_id.clone(),
        client_id: req.client_id.clone(),
        client_host: String::new(),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        protocols: req.protocols.clone(),
        subscription: req.subscription.clone(),
        last_seen: now,
        joined: false,
        assignment: Vec::new(),
        metadata: None,
        raw_assignment: None,
        awaiting: false,
        waker: req.waker.clone(),
    }
}

pub(super) fn make_member_id(g: &mut Group, req: &JoinRequest) -> String {
    g.next_member += 1;
    let prefix = req.instance_id.as_deref().unwrap_or(&req.client_id);
    format!(
        "{prefix}-{}-{}",
        g.next_member,
        uuid::Uuid::new_v4().simple()
    )
}

/// A member the coordinator does not know yet (nor its instance id),
/// under `id` if it was handed one (KIP-394), else under a new one.
pub(super) fn join_new(
    g: &mut Group,
    req: JoinRequest,
    id: Option<String>,
    now: i64,
    limits: &GroupLimits,
) -> JoinResponse {
    let id = id.unwrap_or_else(|| make_member_id(g, &req));
    let mut member = new_member(&req, now);
    member.joined = true;
    if let Some(instance) = &req.instance_id {
        g.instances.insert(instance.clone(), id.clone());
    }
    g.members.insert(id.clone(), member);
    g.prepare_rebalance(now, limits);
    // `prepare_rebalance` cleared `joined` if it started a new round.
    if let Some(m) = g.members.get_mut(&id) {
        m.joined = true;
    }
    g.maybe_complete_join(now);
    answer_join(g, &id)
}

/// A static member rejoining under a new member id (a restarted process):
/// it takes the old member's place and, if the group is stable and its
/// subscription unchanged, its assignment, without a rebalance (KIP-345).
pub(super) fn join_static_replacement(
    g: &mut Group,
    instance: String,
    req: JoinRequest,
    now: i64,
    limits: &GroupLimits,
) -> JoinResponse {
    let old_id = g.instances[&instance].clone();
    let Some(old) = g.members.remove(&old_id) else {
        g.instances.remove(&instance);
        return join_new(g, req, None, now, limits);
    };
    let id = make_member_id(g, &req);
    let unchanged =
        same_topics(&old.subscription, &req.subscription) && old.protocols == req.protocols;
    let mut member = new_member(&req, now);
    member.joined = old.joined;
    member.assignment = old.assignment;
    member.raw_assignment = old.raw_assignment;
    g.instances.insert(instance, id.clone());
    if g.leader.as_deref() == Some(&old_id) {
        g.leader = Some(id.clone());
    }
    g.members.insert(id.clone(), member);
    match g.state {
        GroupState::Stable if unchanged => {}
        GroupState::PreparingRebalance => {
            if let Some(m) = g.members.get_mut(&id) {
                m.joined = true;
            }
            g.maybe_complete_join(now);
        }
        _ => {
            g.prepare_rebalance(now, limits);
            if let Some(m) = g.members.get_mut(&id) {
                m.joined = true;
            }
            g.maybe_complete_join(now);
        }
    }
    answer_join(g, &id)
}

/// A join from a current member; `metadata_changed` if it sent other wire
/// metadata than before.
pub(super) fn join_known(
    g: &mut Group,
    id: String,
    req: JoinRequest,
    metadata_changed: bool,
    now: i64,
    limits: &GroupLimits,
) -> JoinResponse {
    let member = g.members.get_mut(&id).expect("checked by the caller");
    let changed = metadata_changed
        || !same_topics(&member.subscription, &req.subscription)
        || !same_owned(&member.subscription, &req.subscription)
        || member.protocols != req.protocols;
    member.last_seen = member.last_seen.max(now);
    member.subscription = req.subscription;
    member.protocols = req.protocols;
    member.session_timeout_ms = req.session_timeout_ms;
    member.rebalance_timeout_ms = req.rebalance_timeout_ms;
    member.waker = req.waker;
    let is_leader = g.leader.as_deref() == Some(id.as_str());
    match g.state {
        GroupState::PreparingRebalance => {}
        // Kafka: the leader rejoining, or a member whose metadata changed,
        // starts a rebalance; anyone else gets the current generation back.
        GroupState::CompletingRebalance if changed => g.prepare_rebalance(now, limits),
        GroupState::Stable if changed || is_leader => g.prepare_rebalance(now, limits),
        GroupState::CompletingRebalance | GroupState::Stable => return answer_join(g, &id),
        GroupState::Empty | GroupState::Dead => g.prepare_rebalance(now, limits),
    }
    if let Some(m) = g.members.get_mut(&id) {
        m.joined = true;
    }
    g.maybe_complete_join(now);
    answer_join(g, &id)
}

fn answer_join(g: &Group, id: &str) -> JoinResponse {
    match g.state {
        GroupState::CompletingRebalance | GroupState::Stable => {
            JoinResponse::Joined(g.joined_response(id))
        }
        _ => JoinResponse::Pending {
            member_id: id.to_string(),
        },
    }
}
