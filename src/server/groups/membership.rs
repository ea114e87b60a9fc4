//! JoinGroup, SyncGroup, Heartbeat and LeaveGroup.
//!
//! ## Parking
//! The library's coordinator never blocks: a join or sync it cannot answer
//! yet is `Pending`, and the member is woken on its waker channel when the
//! group changes. A Kafka broker instead holds the request until it can
//! answer, and Kafka clients expect that. Each connection has its own
//! thread and Kafka answers one request per connection at a time, so the
//! handler waits on that thread: on the member's waker channel, on the
//! cluster clock's jumps (a [`ManualClock`](crate::ManualClock) moved by
//! hand) and, in real time, until the group's next timed change (a session
//! expiring, the rebalance deadline, the end of
//! `group.initial.rebalance.delay.ms`) or the cluster closing; then it
//! asks again. Nothing sleeps.
//!
//! A member whose request is parked does not expire (Kafka keeps it
//! alive until it answers); its session runs again from the answer.
//!
//! A join waits at most until the later of its own rebalance timeout and
//! the group's rebalance deadline (by then the coordinator has removed the
//! members that did not rejoin and answers), a sync at most the member's
//! rebalance timeout (Kafka 3.x's limit for the leader's assignment);
//! past that the member gets REBALANCE_IN_PROGRESS and rejoins.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::consumer_protocol::{
    decode_assignment, decode_subscription, encode_assignment, encode_subscription,
};
use super::{non_empty, str_bytes};
use crate::Clock;
use crate::cluster::{JoinRequest, JoinResponse, Joined};
use crate::error::{Error, Result};
use crate::server::{RequestContext, error_code};
use crate::{Subscription, TopicPartition};

/// The consumer protocol's `protocol_type`.
const CONSUMER: &str = "consumer";

/// Calls `attempt` until it answers (`Some`), waiting in between as the
/// module docs say, until the clock passes `deadline()`; `Ok(None)` then.
fn park<T>(
    ctx: &RequestContext<'_>,
    group: &str,
    wake: &Receiver<()>,
    deadline: impl Fn(i64) -> i64,
    mut attempt: impl FnMut(i64) -> Result<Option<T>>,
) -> Result<Option<T>> {
    let inner = &ctx.cluster.inner;
    let clock: Arc<dyn Clock> = Arc::clone(inner.clock());
    // Subscribed before the first attempt: no jump is missed.
    let ticks = clock.subscribe();
    // Closing the cluster wakes its state watchers: the wait ends with it.
    let (state_tx, state) = crossbeam_channel::bounded(1);
    inner.watch_state(&state_tx);
    let _unwatch = Unwatch(inner, &state_tx);
    loop {
        inner.check_open()?;
        let now = clock.now_ms();
        if let Some(answer) = attempt(now)? {
            return Ok(Some(answer));
        }
        let deadline = deadline(now);
        if now >= deadline {
            return Ok(None);
        }
        let until = inner
            .groups
            .wake_at(group, now)
            .map_or(deadline, |t| t.min(deadline));
        let timer = match clock.wait_hint(until) {
            Some(wait) => crossbeam_channel::after(wait),
            None => crossbeam_channel::never(),
        };
        crossbeam_channel::select! {
            recv(wake) -> _ => {}
            recv(ticks) -> _ => {}
            recv(state) -> _ => {}
            recv(timer) -> _ => {}
        }
    }
}

/// Stops a parked request's state watch however the wait ends.
struct Unwatch<'a>(&'a crate::cluster::ClusterInner, &'a Sender<()>);

impl Drop for Unwatch<'_> {
    fn drop(&mut self) {
        self.0.unwatch_state(self.1);
    }
}

/// The group id of a request, or the error for an invalid one.
fn group_id(id: &StrBytes) -> std::result::Result<&str, ResponseError> {
    let id = id.as_str();
    if id.is_empty() {
        Err(ResponseError::InvalidGroupId)
    } else {
        Ok(id)
    }
}

/// Answers JoinGroup (v0–v9), parked until the join phase completes.
pub(in crate::server) fn join_group(
    ctx: &RequestContext<'_>,
    request: JoinGroupRequest,
) -> JoinGroupResponse {
    let version = ctx.api_version;
    let failed = |code: i16, member_id: &str| {
        JoinGroupResponse::default()
            .with_error_code(code)
            .with_generation_id(-1)
            .with_protocol_type(None)
            .with_protocol_name(if version >= 7 {
                None
            } else {
                Some(StrBytes::default())
            })
            .with_leader(StrBytes::default())
            .with_member_id(str_bytes(member_id))
    };
    let group = match group_id(&request.group_id) {
        Ok(group) => group.to_string(),
        Err(e) => return failed(e.code(), request.member_id.as_str()),
    };
    let protocol_type = request.protocol_type.as_str().to_string();
    let protocols: Vec<String> = request
        .protocols
        .iter()
        .map(|p| p.name.as_str().to_string())
        .collect();
    let metadata: Vec<Bytes> = request
        .protocols
        .iter()
        .map(|p| p.metadata.clone())
        .collect();
    let instance_id = if version >= 5 {
        non_empty(request.group_instance_id.as_ref()).map(str::to_string)
    } else {
        None
    };
    // The in-process assignors read a consumer's subscription.
    let mut subscription = match (protocol_type.as_str(), metadata.first()) {
        (CONSUMER, Some(first)) => decode_subscription(first).unwrap_or_default(),
        _ => Subscription::default(),
    };
    subscription.group_instance_id.clone_from(&instance_id);
    let session_timeout_ms = i64::from(request.session_timeout_ms);
    // v0 has no rebalance timeout: Kafka uses the session timeout.
    let rebalance_timeout_ms = if version >= 1 {
        i64::from(request.rebalance_timeout_ms)
    } else {
        session_timeout_ms
    };
    let mut member_id = non_empty(Some(&request.member_id)).map(str::to_string);
    let host = ctx.client_host();
    let (waker, wake) = crossbeam_channel::bounded(1);
    let groups = &ctx.cluster.inner.groups;
    let start = ctx.cluster.inner.clock().now_ms();
    let join = |member_id: Option<String>| JoinRequest {
        member_id,
        instance_id: instance_id.clone(),
        client_id: ctx.client_id.unwrap_or_default().to_string(),
        session_timeout_ms,
        rebalance_timeout_ms,
        protocols: protocols.clone(),
        subscription: subscription.clone(),
        waker: waker.clone(),
    };
    // v4+ (KIP-394): a new dynamic member first gets its member id, and
    // joins with it; it is not in the group before.
    if version >= 4 && member_id.is_none() && instance_id.is_none() {
        return match groups.new_member_id(&group, &join(None), &protocol_type, start) {
            Ok(id) => failed(ResponseError::MemberIdRequired.code(), &id),
            Err(e) => failed(join_error_code(&e), ""),
        };
    }
    let joined = park(
        ctx,
        &group,
        &wake,
        |now| {
            let own = start.saturating_add(rebalance_timeout_ms.max(0));
            groups
                .rebalance_deadline(&group, now)
                .map_or(own, |d| d.max(own))
        },
        |now| {
            let join = join(member_id.clone());
            match groups.join_wire(&group, join, &protocol_type, metadata.clone(), &host, now)? {
                JoinResponse::Pending { member_id: id } => {
                    member_id = Some(id);
                    Ok(None)
                }
                JoinResponse::Joined(joined) => Ok(Some(joined)),
            }
        },
    );
    let member = member_id.clone().unwrap_or_default();
    groups.release(&group, &member, ctx.cluster.inner.clock().now_ms());
    match joined {
        Ok(Some(joined)) => joined_response(version, &joined),
        Ok(None) => failed(ResponseError::RebalanceInProgress.code(), &member),
        Err(e) => failed(join_error_code(&e), &member),
    }
}

/// The code a refused join is answered with.
fn join_error_code(error: &Error) -> i16 {
    match error {
        // The only configuration a join checks.
        Error::InvalidConfig(_) => ResponseError::InvalidSessionTimeout.code(),
        // No protocol offered.
        Error::InvalidArgument(_) => ResponseError::InconsistentGroupProtocol.code(),
        e => error_code(e),
    }
}

/// A completed join as Kafka's JoinGroupResponse at `version`: the leader
/// gets every member's metadata for the chosen protocol (a wire member's
/// bytes as it sent them; an in-process member's subscription written as
/// a consumer's).
fn joined_response(version: i16, joined: &Joined) -> JoinGroupResponse {
    let members = joined
        .wire_members
        .iter()
        .map(|(id, m)| {
            let metadata = match (&m.metadata, joined.members.get(id)) {
                (Some(bytes), _) => bytes.clone(),
                (None, Some(subscription)) => encode_subscription(subscription),
                (None, None) => Bytes::new(),
            };
            let instance = if version >= 5 {
                m.instance_id.clone().map(str_bytes)
            } else {
                None
            };
            JoinGroupResponseMember::default()
                .with_member_id(str_bytes(id.clone()))
                .with_group_instance_id(instance)
                .with_metadata(metadata)
        })
        .collect();
    JoinGroupResponse::default()
        .with_error_code(0)
        .with_generation_id(joined.generation)
        .with_protocol_type(if version >= 7 {
            Some(str_bytes(joined.protocol_type.clone()))
        } else {
            None
        })
        .with_protocol_name(Some(str_bytes(joined.protocol.clone())))
        .with_leader(str_bytes(joined.leader.clone()))
        .with_member_id(str_bytes(joined.member_id.clone()))
        .with_members(members)
}

/// Answers SyncGroup (v0–v5), parked until the leader's assignment is in.
pub(in crate::server) fn sync_group(
    ctx: &RequestContext<'_>,
    request: SyncGroupRequest,
) -> SyncGroupResponse {
    let version = ctx.api_version;
    let failed = |code: i16| {
        SyncGroupResponse::default()
            .with_error_code(code)
            .with_assignment(Bytes::new())
    };
    let group = match group_id(&request.group_id) {
        Ok(group) => group.to_string(),
        Err(e) => return failed(e.code()),
    };
    let member_id = request.member_id.as_str();
    let inner = &ctx.cluster.inner;
    let groups = &inner.groups;
    let now = inner.clock().now_ms();
    let group_type = groups
        .describe(&group, now)
        .and_then(|g| g.protocol_type)
        .unwrap_or_default();
    // An in-process member reads the partitions of a consumer's assignment.
    let assignment: BTreeMap<String, (Vec<TopicPartition>, Option<Bytes>)> = request
        .assignments
        .iter()
        .map(|a| {
            let partitions = if group_type == CONSUMER {
                decode_assignment(&a.assignment).unwrap_or_default()
            } else {
                Vec::new()
            };
            (
                a.member_id.as_str().to_string(),
                (partitions, Some(a.assignment.clone())),
            )
        })
        .collect();
    // Kafka takes the leader's assignments even when empty (a group with
    // no partitions to give).
    let assignment = Some(assignment);
    let instance = if version >= 3 {
        non_empty(request.group_instance_id.as_ref())
    } else {
        None
    };
    let protocol = if version >= 5 {
        (
            request.protocol_type.as_ref().map(StrBytes::as_str),
            request.protocol_name.as_ref().map(StrBytes::as_str),
        )
    } else {
        (None, None)
    };
    let (waker, wake): (Sender<()>, Receiver<()>) = crossbeam_channel::bounded(1);
    let rebalance_ms = groups
        .rebalance_timeout_ms(&group, member_id, now)
        .unwrap_or(0);
    let synced = park(
        ctx,
        &group,
        &wake,
        |_| now.saturating_add(rebalance_ms),
        |now| {
            groups.sync_wire(
                &group,
                member_id,
                request.generation_id,
                instance,
                protocol,
                assignment.clone(),
                &waker,
                now,
            )
        },
    );
    groups.release(&group, member_id, inner.clock().now_ms());
    match synced {
        Ok(Some((partitions, raw))) => {
            let bytes = raw.unwrap_or_else(|| {
                // The leader is in process: its partitions, written as a
                // consumer's assignment.
                if group_type == CONSUMER {
                    encode_assignment(&partitions)
                } else {
                    Bytes::new()
                }
            });
            let mut response = SyncGroupResponse::default()
                .with_error_code(0)
                .with_assignment(bytes);
            if version >= 5 {
                let snapshot = groups.describe(&group, inner.clock().now_ms());
                response = response
                    .with_protocol_type(
                        snapshot
                            .as_ref()
                            .and_then(|g| g.protocol_type.clone())
                            .map(str_bytes),
                    )
                    .with_protocol_name(snapshot.and_then(|g| g.protocol).map(str_bytes));
            }
            response
        }
        Ok(None) => failed(ResponseError::RebalanceInProgress.code()),
        Err(e) => failed(error_code(&e)),
    }
}

/// Answers Heartbeat (v0–v4).
pub(in crate::server) fn heartbeat(
    ctx: &RequestContext<'_>,
    request: &HeartbeatRequest,
) -> HeartbeatResponse {
    let code = match group_id(&request.group_id) {
        Err(e) => e.code(),
        Ok(group) => {
            let instance = if ctx.api_version >= 3 {
                non_empty(request.group_instance_id.as_ref())
            } else {
                None
            };
            let inner = &ctx.cluster.inner;
            match inner.groups.heartbeat(
                group,
                request.member_id.as_str(),
                instance,
                request.generation_id,
                inner.clock().now_ms(),
            ) {
                Ok(()) => 0,
                Err(e) => error_code(&e),
            }
        }
    };
    HeartbeatResponse::default().with_error_code(code)
}

/// Answers LeaveGroup: one member (v0–v2) or a batch, each answered on its
/// own (v3+).
pub(in crate::server) fn leave_group(
    ctx: &RequestContext<'_>,
    request: &LeaveGroupRequest,
) -> LeaveGroupResponse {
    let group = match group_id(&request.group_id) {
        Ok(group) => group,
        Err(e) => return LeaveGroupResponse::default().with_error_code(e.code()),
    };
    let inner = &ctx.cluster.inner;
    let leave = |member_id: &str, instance: Option<&str>| match inner.groups.leave_member(
        group,
        member_id,
        instance,
        inner.clock().now_ms(),
    ) {
        Ok(()) => 0,
        Err(e) => error_code(&e),
    };
    if ctx.api_version < 3 {
        let code = leave(request.member_id.as_str(), None);
        return LeaveGroupResponse::default().with_error_code(code);
    }
    let members = request
        .members
        .iter()
        .map(|m| {
            let instance = non_empty(m.group_instance_id.as_ref());
            MemberResponse::default()
                .with_member_id(m.member_id.clone())
                .with_group_instance_id(m.group_instance_id.clone())
                .with_error_code(leave(m.member_id.as_str(), instance))
        })
        .collect();
    LeaveGroupResponse::default()
        .with_error_code(0)
        .with_members(members)
}
