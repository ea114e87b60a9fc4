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
//! `sasl`, TLS (feature `tls`) in `tls`, the server-wide budget of
//! request bytes in flight (`queued.max.request.bytes`) in `budget`, and
//! each broker's fetch sessions (KIP-227) in `fetch_session`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};

use crate::Cluster;

mod admin;
mod budget;
mod config;
mod data;
mod errors;
mod fetch_session;
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
    /// The address the client's connection comes from.
    pub(crate) peer: SocketAddr,
    /// The principal the connection authenticated as with SASL (Kafka's
    /// `User:NAME`); `None` on a listener without SASL.
    pub(crate) principal: Option<&'a str>,
    /// Where each broker's listener is reached, as (host, port): what
    /// Metadata and FindCoordinator answer.
    pub(crate) advertised: &'a BTreeMap<u32, (String, u16)>,
}

impl RequestContext<'_> {
    /// The client's host as Kafka's DescribeGroups shows it (a member's
    /// `client_host`, Java's `InetAddress.toString()` of an address with
    /// no host name): `/` and the IP address, an IPv6 address in Java's
    /// full form (eight groups, no `::`).
    pub(crate) fn client_host(&self) -> String {
        kafka_client_host(self.peer.ip())
    }
}

/// `/` and `ip` as Java's `InetAddress.getHostAddress` writes it.
pub(crate) fn kafka_client_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("/{v4}"),
        IpAddr::V6(v6) => {
            let groups: Vec<String> = v6.segments().iter().map(|g| format!("{g:x}")).collect();
            format!("/{}", groups.join(":"))
        }
    }
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

#[cfg(test)]
mod context_tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::kafka_client_host;

    #[test]
    fn client_hosts_are_written_as_java_writes_them() {
        assert_eq!(
            kafka_client_host(Ipv4Addr::new(10, 0, 0, 7).into()),
            "/10.0.0.7"
        );
        assert_eq!(
            kafka_client_host(Ipv6Addr::LOCALHOST.into()),
            "/0:0:0:0:0:0:0:1"
        );
        assert_eq!(
            kafka_client_host("fe80::1:ab".parse::<Ipv6Addr>().unwrap().into()),
            "/fe80:0:0:0:0:0:1:ab"
        );
    }
}
