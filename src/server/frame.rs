//! One request frame in, one response frame out: the request header, the
//! API versions the listener answers (ApiVersions), decoding, dispatch and
//! the response header.

use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{Decodable, Encodable};

use super::listener::Shared;
use super::sasl::{self, Session};
use super::{RequestContext, admin, coordinator_versions, data, dispatch_coordinator};

/// What to do after a request.
pub(crate) enum Answer {
    /// Send this frame (size prefix included).
    Respond(BytesMut),
    /// Send this frame, then close the connection for this reason (a
    /// failed SASL authentication).
    RespondThenClose(BytesMut, String),
    /// Send nothing (a produce with `acks=0`).
    Nothing,
    /// Close the connection, for this reason (logged).
    Close(String),
    /// Close the connection quietly: its broker is stopped or crashed (the
    /// cluster's fault API), so it answers nothing, as a down broker.
    Down,
}

/// The ApiVersions versions answered: v3 is the first flexible one (its
/// response header stays v0, as KIP-511 has it).
const API_VERSIONS: (i16, i16) = (0, 3);

/// The versions of each data-path and administration API answered here, as
/// (API, lowest, highest). The highest are those current clients use
/// before topic ids replace topic names in requests (Fetch v13, Produce
/// v13).
pub(crate) const VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    // SASL (KIP-43, KIP-152): listed on every listener, as Kafka does;
    // without SASL (or once authenticated) answered ILLEGAL_SASL_STATE.
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
];

/// Every API the listener answers and its version range, ApiVersions
/// included, the coordinators' too, by API key.
pub(crate) fn supported_versions() -> Vec<(ApiKey, i16, i16)> {
    let mut all: Vec<(ApiKey, i16, i16)> = VERSIONS
        .iter()
        .copied()
        .chain(std::iter::once((
            ApiKey::ApiVersions,
            API_VERSIONS.0,
            API_VERSIONS.1,
        )))
        .chain(coordinator_versions())
        .collect();
    all.sort_by_key(|(key, _, _)| *key as i16);
    all
}

/// The range of `api` the listener answers, if it answers it.
fn range_of(api: ApiKey) -> Option<(i16, i16)> {
    supported_versions()
        .into_iter()
        .find(|(key, _, _)| *key == api)
        .map(|(_, lo, hi)| (lo, hi))
}

/// Answers one request frame (without its size prefix) on a connection
/// from `peer` in SASL state `session`.
pub(crate) fn answer(
    shared: &Shared,
    broker: u32,
    peer: SocketAddr,
    session: &mut Session,
    mut frame: Bytes,
) -> Answer {
    if !shared.cluster.is_broker_running(broker) {
        return Answer::Down;
    }
    if frame.len() < 8 {
        return Answer::Close(format!(
            "a request of {} bytes is shorter than a request header",
            frame.len()
        ));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Ok(api) = ApiKey::try_from(key) else {
        return Answer::Close(format!("unknown API key {key}"));
    };
    if api == ApiKey::ApiVersions && !(API_VERSIONS.0..=API_VERSIONS.1).contains(&version) {
        // A client may try a newer ApiVersions than the broker knows: it
        // gets UNSUPPORTED_VERSION in the v0 layout, with the versions
        // supported, and retries with one of them (KIP-511).
        let response = api_versions_response(UNSUPPORTED_VERSION);
        return respond(correlation_id, 0, &ResponseKind::ApiVersions(response), 0);
    }
    let Some((lowest, highest)) = range_of(api) else {
        return Answer::Close(format!("API {api:?} (key {key}) is not served"));
    };
    // Before SASL authentication, nothing but ApiVersions and SASL's own
    // requests (Kafka closes the connection too).
    if let Err(reason) = session.admits(api) {
        return Answer::Close(reason);
    }
    if !(lowest..=highest).contains(&version) {
        return Answer::Close(format!(
            "{api:?} v{version} is not served (v{lowest} to v{highest} are)"
        ));
    }
    let header = match RequestHeader::decode(&mut frame, api.request_header_version(version)) {
        Ok(header) => header,
        Err(e) => return Answer::Close(format!("{api:?} v{version}: bad request header: {e}")),
    };
    if !super::shape::has_schema(api) {
        // Decoding it unchecked could abort the process (see `shape`).
        return Answer::Close(format!("{api:?}: no request shape to check it against"));
    }
    if let Err(reason) = super::shape::check(api, version, &frame) {
        return Answer::Close(format!("{api:?} v{version}: {reason}"));
    }
    let request = match RequestKind::decode(api, &mut frame, version) {
        Ok(request) => request,
        Err(e) => return Answer::Close(format!("{api:?} v{version}: does not decode: {e}")),
    };
    let request = match request {
        RequestKind::SaslHandshake(r) => {
            let (response, close) = sasl::handshake(session, version, &r);
            let response = ResponseKind::SaslHandshake(response);
            return respond_then(correlation_id, version, &response, close);
        }
        RequestKind::SaslAuthenticate(r) => {
            let users = &shared.config.sasl_plain_users;
            let (response, close) = sasl::authenticate(users, session, &r);
            let response = ResponseKind::SaslAuthenticate(response);
            return respond_then(correlation_id, version, &response, close);
        }
        other => other,
    };
    let client_id = header.client_id.as_ref().map(|s| s.as_str());
    let principal = session.principal();
    let ctx = RequestContext {
        cluster: &shared.cluster,
        broker,
        api_version: version,
        client_id,
        peer,
        principal: principal.as_deref(),
        advertised: &shared.advertised,
    };
    tracing::trace!(
        broker,
        ?api,
        version,
        correlation_id,
        client_id = ctx.client_id,
        peer = %ctx.peer,
        principal = ctx.principal,
        "logbus listener: request"
    );
    let handled = catch_unwind(AssertUnwindSafe(|| handle(&ctx, shared, api, request)));
    match handled {
        Ok(Ok(Some(response))) => respond(correlation_id, version, &response, {
            response.header_version(version)
        }),
        Ok(Ok(None)) => Answer::Nothing,
        Ok(Err(reason)) => Answer::Close(format!("{api:?} v{version}: {reason}")),
        Err(_) => Answer::Close(format!("{api:?} v{version}: the handler panicked")),
    }
}

/// Kafka's UNSUPPORTED_VERSION error code.
const UNSUPPORTED_VERSION: i16 = 35;

/// Dispatches a decoded request to its handler: `Ok(None)` when no
/// response is sent (a produce with `acks=0`), `Err` with the reason when
/// the connection is to be closed instead (a failed `acks=0` produce).
fn handle(
    ctx: &RequestContext<'_>,
    shared: &Shared,
    api: ApiKey,
    request: RequestKind,
) -> Result<Option<ResponseKind>, String> {
    let response = match request {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions_response(0)),
        RequestKind::Metadata(r) => ResponseKind::Metadata(data::metadata(ctx, &r)),
        RequestKind::Produce(r) => {
            return data::produce(ctx, r).map(|r| r.map(ResponseKind::Produce));
        }
        RequestKind::Fetch(r) => ResponseKind::Fetch(data::fetch(ctx, shared, &r)),
        RequestKind::ListOffsets(r) => ResponseKind::ListOffsets(data::list_offsets(ctx, &r)),
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(data::offsets_for_leader_epoch(ctx, &r))
        }
        RequestKind::DeleteRecords(r) => ResponseKind::DeleteRecords(data::delete_records(ctx, &r)),
        RequestKind::CreateTopics(r) => ResponseKind::CreateTopics(admin::create_topics(ctx, &r)),
        RequestKind::DeleteTopics(r) => ResponseKind::DeleteTopics(admin::delete_topics(ctx, &r)),
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(admin::create_partitions(ctx, &r))
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(admin::describe_configs(ctx, &r))
        }
        RequestKind::AlterConfigs(r) => ResponseKind::AlterConfigs(admin::alter_configs(ctx, &r)),
        RequestKind::IncrementalAlterConfigs(r) => {
            ResponseKind::IncrementalAlterConfigs(admin::incremental_alter_configs(ctx, &r))
        }
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(admin::describe_cluster(ctx, &r))
        }
        other => return Ok(dispatch_coordinator(ctx, api, other)),
    };
    Ok(Some(response))
}

/// The ApiVersions response: every API served and its versions.
fn api_versions_response(error_code: i16) -> ApiVersionsResponse {
    let mut response = ApiVersionsResponse::default();
    response.error_code = error_code;
    response.api_keys = supported_versions()
        .into_iter()
        .map(|(key, lo, hi)| {
            let mut v = ApiVersion::default();
            v.api_key = key as i16;
            v.min_version = lo;
            v.max_version = hi;
            v
        })
        .collect();
    response
}

/// The response frame, then (with a reason) the connection closed.
fn respond_then(
    correlation_id: i32,
    version: i16,
    response: &ResponseKind,
    close: Option<String>,
) -> Answer {
    let answer = respond(
        correlation_id,
        version,
        response,
        response.header_version(version),
    );
    match (answer, close) {
        (Answer::Respond(frame), Some(reason)) => Answer::RespondThenClose(frame, reason),
        (answer, _) => answer,
    }
}

/// The response frame: size, header (of `header_version`), body.
fn respond(
    correlation_id: i32,
    version: i16,
    response: &ResponseKind,
    header_version: i16,
) -> Answer {
    // A fetch's records are copied once, into a buffer of the right size.
    let capacity = match response {
        ResponseKind::Fetch(fetch) => fetch.compute_size(version).unwrap_or(0),
        _ => 0,
    };
    let mut out = BytesMut::with_capacity(capacity.max(256) + 64);
    out.put_i32(0);
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    if let Err(e) = header.encode(&mut out, header_version) {
        return Answer::Close(format!("the response header does not encode: {e}"));
    }
    if let Err(e) = response.encode(&mut out, version) {
        return Answer::Close(format!("the response does not encode at v{version}: {e}"));
    }
    let size = out.len() - 4;
    let Ok(size) = i32::try_from(size) else {
        return Answer::Close(format!("a response of {size} bytes is too large"));
    };
    out[..4].copy_from_slice(&size.to_be_bytes());
    Answer::Respond(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_version_is_one_kafka_protocol_knows() {
        for (api, lo, hi) in supported_versions() {
            let valid = api.valid_versions();
            assert!(lo <= hi, "{api:?}");
            assert!(
                valid.min <= lo && hi <= valid.max,
                "{api:?} {lo}..{hi} vs {valid}"
            );
        }
    }

    #[test]
    fn every_served_api_is_shape_checked() {
        for (api, _, _) in supported_versions() {
            assert!(super::super::shape::has_schema(api), "{api:?}");
        }
    }

    #[test]
    fn api_versions_lists_each_api_once() {
        let all = supported_versions();
        let mut keys: Vec<i16> = all.iter().map(|(k, _, _)| *k as i16).collect();
        keys.dedup();
        assert_eq!(keys.len(), all.len());
        assert!(keys.contains(&(ApiKey::ApiVersions as i16)));
    }
}
