//! The group coordinator's APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, ListGroups, DescribeGroups and DeleteGroups.
//!
//! Every handler answers through the library's group coordinator (the one
//! the in-process consumers use), so Kafka clients and in-process
//! consumers can share a group. The coordinator is cluster-wide: any
//! broker's listener answers for any group, but FindCoordinator names the
//! leader of the group's `__consumer_offsets` partition, as Kafka does, so
//! clients follow the same rules as against Kafka.
//!
//! JoinGroup and SyncGroup park on the connection's thread until the
//! coordinator can answer (see `membership`).

use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;

mod admin;
mod consumer_protocol;
mod find;
mod membership;
mod offsets;

pub(super) use offsets::{PartitionAnswer, commit_entry};
#[cfg(test)]
pub(super) mod tests;

/// The versions of each API this module answers, as (API, lowest, highest).
///
/// The highest of each is what Kafka 3.6 brokers answer for the classic
/// group protocol, within what `kafka-protocol` 0.18 encodes (OffsetCommit
/// from v2, OffsetFetch from v1): the versions librdkafka 2.x, the Java
/// client 3.x and kafka-python 3.0 negotiate.
pub(super) const VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
];

/// Answers `request`, a request of one of the APIs in [`VERSIONS`] (at a
/// version in its range); `None` for any other request.
pub(super) fn handle(ctx: &RequestContext<'_>, request: RequestKind) -> Option<ResponseKind> {
    Some(match request {
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(find::find_coordinator(ctx, &r))
        }
        RequestKind::JoinGroup(r) => ResponseKind::JoinGroup(membership::join_group(ctx, r)),
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(membership::sync_group(ctx, r)),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(membership::heartbeat(ctx, &r)),
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(membership::leave_group(ctx, &r)),
        RequestKind::OffsetCommit(r) => ResponseKind::OffsetCommit(offsets::offset_commit(ctx, &r)),
        RequestKind::OffsetFetch(r) => ResponseKind::OffsetFetch(offsets::offset_fetch(ctx, &r)),
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(admin::list_groups(ctx, &r)),
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(admin::describe_groups(ctx, &r))
        }
        RequestKind::DeleteGroups(r) => ResponseKind::DeleteGroups(admin::delete_groups(ctx, &r)),
        _ => return None,
    })
}

/// `s` as the protocol's string type.
pub(super) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// An optional string of a request, `None` also when empty (Kafka treats
/// an empty `group_instance_id` as none).
pub(super) fn non_empty(s: Option<&StrBytes>) -> Option<&str> {
    s.map(StrBytes::as_str).filter(|s| !s.is_empty())
}
