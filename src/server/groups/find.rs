//! FindCoordinator: the broker leading the `__consumer_offsets` partition
//! of a group, or the `__transaction_state` partition of a transactional
//! id, created on first use as Kafka creates them.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::str_bytes;
use crate::error::Error;
use crate::server::RequestContext;

/// Kafka's `key_type` of a consumer group.
const GROUP: i8 = 0;
/// Kafka's `key_type` of a transactional id.
const TRANSACTION: i8 = 1;

/// Answers FindCoordinator, one key (v0–v3) or a batch (v4+).
pub(in crate::server) fn find_coordinator(
    ctx: &RequestContext<'_>,
    request: &FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let version = ctx.api_version;
    let key_type = if version >= 1 {
        request.key_type
    } else {
        GROUP
    };
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| locate(ctx, key_type, key))
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let found = locate(ctx, key_type, &request.key);
    let message = if version >= 1 {
        found.error_message
    } else {
        None
    };
    FindCoordinatorResponse::default()
        .with_error_code(found.error_code)
        .with_error_message(message)
        .with_node_id(found.node_id)
        .with_host(found.host)
        .with_port(found.port)
}

/// The coordinator of one key, or the error that stands in for it (with
/// Kafka's "no node": id -1, empty host, port -1).
fn locate(ctx: &RequestContext<'_>, key_type: i8, key: &StrBytes) -> Coordinator {
    let refused = |error: ResponseError, message: String| {
        Coordinator::default()
            .with_key(key.clone())
            .with_node_id(BrokerId(-1))
            .with_host(StrBytes::default())
            .with_port(-1)
            .with_error_code(error.code())
            .with_error_message(Some(str_bytes(message)))
    };
    let inner = &ctx.cluster.inner;
    let id = key.as_str();
    let leader = match key_type {
        GROUP => inner.group_coordinator(id).map_err(|e| {
            let code = match e {
                Error::InvalidArgument(_) => ResponseError::InvalidGroupId,
                _ => ResponseError::CoordinatorNotAvailable,
            };
            (code, e)
        }),
        TRANSACTION => inner.txn_coordinator(id).map_err(|e| {
            let code = match e {
                Error::InvalidArgument(_) => ResponseError::InvalidRequest,
                _ => ResponseError::CoordinatorNotAvailable,
            };
            (code, e)
        }),
        other => {
            return refused(
                ResponseError::InvalidRequest,
                format!("unknown coordinator key type {other}"),
            );
        }
    };
    let leader = match leader {
        Ok(Some(leader)) => leader,
        Ok(None) => {
            return refused(
                ResponseError::CoordinatorNotAvailable,
                "the coordinator's partition has no leader".into(),
            );
        }
        Err((code, e)) => return refused(code, e.to_string()),
    };
    match ctx.advertised.get(&leader) {
        Some((host, port)) => Coordinator::default()
            .with_key(key.clone())
            .with_node_id(BrokerId(i32::try_from(leader).unwrap_or(-1)))
            .with_host(str_bytes(host.clone()))
            .with_port(i32::from(*port))
            .with_error_code(0)
            .with_error_message(None),
        None => refused(
            ResponseError::CoordinatorNotAvailable,
            format!("broker {leader}, the coordinator, has no listener"),
        ),
    }
}
