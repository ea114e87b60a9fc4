//! A Kafka wire-protocol listener (feature `server`): any Kafka client can
//! connect to a [`Cluster`] over Kafka's own protocol.
//!
//! The listener decodes each request with the `kafka-protocol` crate's
//! message schemas and answers it through the same calls the in-process
//! clients use. Handlers are grouped by module: the data path and topic
//! administration here, the group coordinator's APIs in `groups`, the
//! transaction coordinator's in `txn`. Each module lists the API versions it
//! answers (`VERSIONS`) and answers them (`handle`).
//!
//! Start it with [`Cluster::serve`] (or [`Cluster::serve_with`] and a
//! [`ServerConfig`]): one listener per broker, each on its own port, a
//! thread per connection answering its requests one at a time, in order.
//! The sockets and framing are in `listener`, the request header, versions
//! and dispatch in `frame`, the data path (Metadata, Produce, Fetch,
//! ListOffsets, OffsetForLeaderEpoch, DeleteRecords) in `data`, topic
//! administration in `admin`, the bounds every request is checked
//! against before it is decoded in `shape`, SASL/PLAIN authentication in
//! `sasl` and TLS (feature `tls`) in `tls`.

use std::collections::BTreeMap;

use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};

use crate::Cluster;

mod admin;
mod config;
mod data;
mod errors;
mod frame;
mod groups;
mod listener;
mod sasl;
mod shape;
#[cfg(feature = "tls")]
mod tls;
mod txn;

pub use config::{SecurityProtocol, ServerConfig, ServerConfigBuilder};
pub use listener::Server;
#[cfg(feature = "tls")]
pub use tls::TlsConfig;

#[allow(unused_imports, reason = "the coordinator modules use it")]
pub(crate) use errors::{error_code, response_error};

/// What a handler needs to answer one request.
#[derive(Debug)]
pub(crate) struct RequestContext<'a> {
    /// The cluster the listener serves.
    pub(crate) cluster: &'a Cluster,
    /// The broker whose listener took the request.
    pub(crate) broker: u32,
    /// The request's API version (its schema version).
    pub(crate) api_version: i16,
    /// The client's `client.id`, if it sent one.
    pub(crate) client_id: Option<&'a str>,
    /// Where each broker's listener is reached, as (host, port): what
    /// Metadata and FindCoordinator answer.
    pub(crate) advertised: &'a BTreeMap<u32, (String, u16)>,
}

/// The API versions the coordinator modules answer, as
/// (API, lowest, highest): what ApiVersions advertises for them.
pub(crate) fn coordinator_versions() -> Vec<(ApiKey, i16, i16)> {
    groups::VERSIONS
        .iter()
        .chain(txn::VERSIONS)
        .copied()
        .collect()
}

/// Answers `request` (of API `api`) if it is a coordinator API (groups,
/// transactions, as [`coordinator_versions`] lists them); `None` otherwise.
pub(crate) fn dispatch_coordinator(
    ctx: &RequestContext<'_>,
    api: ApiKey,
    request: RequestKind,
) -> Option<ResponseKind> {
    if groups::VERSIONS.iter().any(|(key, _, _)| *key == api) {
        groups::handle(ctx, request)
    } else if txn::VERSIONS.iter().any(|(key, _, _)| *key == api) {
        txn::handle(ctx, request)
    } else {
        None
    }
}
