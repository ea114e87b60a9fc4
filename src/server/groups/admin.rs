//! ListGroups, DescribeGroups and DeleteGroups.

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    GroupId, ListGroupsRequest, ListGroupsResponse,
};

use super::consumer_protocol::{encode_assignment, encode_subscription};
use super::str_bytes;
use crate::server::{RequestContext, error_code};
use crate::{GroupState, Subscription};

/// The state and protocol type of `group`, as Kafka lists it: a group the
/// membership coordinator does not know but that has committed offsets is
/// `Empty` with no protocol type, one with neither is `Dead`.
fn state_of(ctx: &RequestContext<'_>, group: &str) -> (GroupState, String) {
    let inner = &ctx.cluster.inner;
    match inner.groups.describe(group, inner.clock().now_ms()) {
        Some(g) => (g.state, g.protocol_type.unwrap_or_default()),
        None if inner
            .group_offsets(group)
            .is_ok_and(|offsets| !offsets.is_empty()) =>
        {
            (GroupState::Empty, String::new())
        }
        None => (GroupState::Dead, String::new()),
    }
}

/// Whether the broker that took the request lists `group`: as Kafka, each
/// broker lists the groups it coordinates (the admin client asks every
/// broker and puts the answers together). Before `__consumer_offsets`
/// exists, or while the group's partition has no leader, the broker with
/// the smallest id lists it, so it shows once.
fn coordinates(ctx: &RequestContext<'_>, group: &str) -> bool {
    match ctx.cluster.inner.current_group_coordinator(group) {
        Some(Some(leader)) => leader == ctx.broker,
        _ => ctx.advertised.keys().next() == Some(&ctx.broker),
    }
}

/// Answers ListGroups (v0–v4, with v4's state filter): the groups this
/// broker coordinates.
pub(in crate::server) fn list_groups(
    ctx: &RequestContext<'_>,
    request: &ListGroupsRequest,
) -> ListGroupsResponse {
    if let Err(e) = ctx.cluster.inner.check_open() {
        return ListGroupsResponse::default().with_error_code(error_code(&e));
    }
    let states: Vec<&str> = if ctx.api_version >= 4 {
        request.states_filter.iter().map(|s| s.as_str()).collect()
    } else {
        Vec::new()
    };
    let groups = ctx
        .cluster
        .list_groups()
        .into_iter()
        .filter(|group| coordinates(ctx, group))
        .filter_map(|group| {
            let (state, protocol_type) = state_of(ctx, &group);
            if !states.is_empty() && !states.iter().any(|s| s.eq_ignore_ascii_case(state.name())) {
                return None;
            }
            let mut listed = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(group)))
                .with_protocol_type(str_bytes(protocol_type));
            if ctx.api_version >= 4 {
                listed = listed.with_group_state(str_bytes(state.name()));
            }
            Some(listed)
        })
        .collect();
    ListGroupsResponse::default()
        .with_error_code(0)
        .with_groups(groups)
}

/// Answers DescribeGroups (v0–v5). As Kafka, only a `Stable` group shows
/// its protocol and each member's metadata and assignment.
pub(in crate::server) fn describe_groups(
    ctx: &RequestContext<'_>,
    request: &DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let inner = &ctx.cluster.inner;
    let groups = request
        .groups
        .iter()
        .map(|id| {
            let described = DescribedGroup::default().with_group_id(id.clone());
            let group = id.as_str();
            if group.is_empty() {
                return described.with_error_code(ResponseError::InvalidGroupId.code());
            }
            if let Err(e) = inner.check_open() {
                return described.with_error_code(error_code(&e));
            }
            let (state, protocol_type) = state_of(ctx, group);
            let described = described
                .with_error_code(0)
                .with_group_state(str_bytes(state.name()))
                .with_protocol_type(str_bytes(protocol_type.clone()));
            let Some(snapshot) = inner.groups.describe(group, inner.clock().now_ms()) else {
                return described;
            };
            let stable = snapshot.state == GroupState::Stable;
            let consumer = protocol_type == "consumer";
            let members = snapshot
                .members
                .iter()
                .map(|m| {
                    let (metadata, assignment) = if stable {
                        let metadata = m.metadata.clone().unwrap_or_else(|| {
                            encode_subscription(&Subscription::new(m.subscription.iter().cloned()))
                        });
                        let assignment = m.raw_assignment.clone().unwrap_or_else(|| {
                            if consumer {
                                encode_assignment(&m.assignment)
                            } else {
                                Bytes::new()
                            }
                        });
                        (metadata, assignment)
                    } else {
                        (Bytes::new(), Bytes::new())
                    };
                    let instance = if ctx.api_version >= 4 {
                        m.instance_id.clone().map(str_bytes)
                    } else {
                        None
                    };
                    DescribedGroupMember::default()
                        .with_member_id(str_bytes(m.member_id.clone()))
                        .with_group_instance_id(instance)
                        .with_client_id(str_bytes(m.client_id.clone()))
                        .with_client_host(str_bytes(m.client_host.clone()))
                        .with_member_metadata(metadata)
                        .with_member_assignment(assignment)
                })
                .collect();
            let protocol = if stable {
                snapshot.protocol.clone().unwrap_or_default()
            } else {
                String::new()
            };
            described
                .with_protocol_data(str_bytes(protocol))
                .with_members(members)
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

/// Answers DeleteGroups (v0–v2): each group deleted (its offsets removed)
/// if it has no members.
pub(in crate::server) fn delete_groups(
    ctx: &RequestContext<'_>,
    request: &DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let results = request
        .groups_names
        .iter()
        .map(|id| {
            let group = id.as_str();
            let code = if group.is_empty() {
                ResponseError::InvalidGroupId.code()
            } else if state_of(ctx, group).0 == GroupState::Dead {
                ResponseError::GroupIdNotFound.code()
            } else {
                match ctx.cluster.delete_group(group) {
                    Ok(_) => 0,
                    Err(e) => error_code(&e),
                }
            };
            DeletableGroupResult::default()
                .with_group_id(id.clone())
                .with_error_code(code)
        })
        .collect();
    DeleteGroupsResponse::default().with_results(results)
}
