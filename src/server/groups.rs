//! The group coordinator's APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, ListGroups, DescribeGroups and DeleteGroups.

use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};

use super::RequestContext;

/// The versions of each API this module answers, as (API, lowest, highest).
pub(super) const VERSIONS: &[(ApiKey, i16, i16)] = &[];

/// Answers `request` if it is one of this module's APIs; hands it back
/// otherwise.
pub(super) fn dispatch(
    ctx: &RequestContext<'_>,
    request: RequestKind,
) -> Result<ResponseKind, RequestKind> {
    let _ = ctx;
    Err(request)
}
