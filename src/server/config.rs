//! The listener's settings: [`ServerConfig`] and its builder.

use std::net::SocketAddr;
use std::time::Duration;

use super::fetch_session::DEFAULT_MAX_INCREMENTAL_FETCH_SESSION_CACHE_SLOTS;
use super::sasl::SaslPlainUsers;
#[cfg(feature = "tls")]
use super::tls::TlsConfig;
use crate::error::{Error, Result};

/// Kafka's `socket.request.max.bytes` default: 100 MiB.
pub(crate) const DEFAULT_SOCKET_REQUEST_MAX_BYTES: usize = 100 * 1024 * 1024;
/// Kafka's `connections.max.idle.ms` default: 10 minutes.
pub(crate) const DEFAULT_CONNECTIONS_MAX_IDLE: Duration = Duration::from_secs(600);
/// Kafka's `fetch.max.bytes` (broker) default: 55 MiB.
pub(crate) const DEFAULT_FETCH_MAX_BYTES: usize = 55 * 1024 * 1024;
/// How many connections all listeners of one server accept at once by
/// default (Kafka's `max.connections` is unbounded; here every connection
/// is a thread, so the default is bounded).
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Kafka's `connection.failed.authentication.delay.ms` default: 100 ms.
pub(crate) const DEFAULT_CONNECTION_FAILED_AUTHENTICATION_DELAY: Duration =
    Duration::from_millis(100);
/// How long the rest of a request may take to arrive once its first byte
/// did, by default.
pub(crate) const DEFAULT_REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of a Kafka protocol listener
/// ([`Cluster::serve_with`](crate::Cluster::serve_with)). Built with
/// [`ServerConfig::builder`]; Kafka's names and defaults where Kafka has
/// the setting.
///
/// Security, as Kafka's `security.protocol` of the listener
/// ([`ServerConfig::security_protocol`]): `PLAINTEXT` by default, which
/// may bind loopback addresses only (unless
/// [`ServerConfigBuilder::allow_non_loopback`]); `SASL_PLAINTEXT` with
/// SASL/PLAIN users ([`ServerConfigBuilder::sasl_plain_user`]); `SSL`
/// with TLS (`ServerConfigBuilder::tls`, feature `tls`); `SASL_SSL` with
/// both.
///
/// ```
/// use std::time::Duration;
/// use logbus::ServerConfig;
/// let config = ServerConfig::builder("127.0.0.1:0".parse()?)
///     .socket_request_max_bytes(1 << 20)
///     .connections_max_idle(Duration::from_secs(60))
///     .build()?;
/// assert_eq!(config.socket_request_max_bytes(), 1 << 20);
/// assert!(!config.non_loopback_allowed());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub(crate) listen: SocketAddr,
    pub(crate) advertised_host: Option<String>,
    pub(crate) socket_request_max_bytes: usize,
    pub(crate) queued_max_request_bytes: Option<usize>,
    pub(crate) max_incremental_fetch_session_cache_slots: usize,
    pub(crate) max_connections: usize,
    pub(crate) connections_max_idle: Duration,
    pub(crate) request_read_timeout: Duration,
    pub(crate) fetch_max_bytes: usize,
    pub(crate) allow_non_loopback: bool,
    pub(crate) connection_failed_authentication_delay: Duration,
    /// SASL/PLAIN's users and passwords; empty: no SASL.
    pub(crate) sasl_plain_users: SaslPlainUsers,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<TlsConfig>,
}

/// Kafka's `security.protocol` of a listener: whether it speaks TLS, and
/// whether clients authenticate with SASL first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SecurityProtocol {
    /// `PLAINTEXT`: neither TLS nor SASL.
    Plaintext,
    /// `SASL_PLAINTEXT`: SASL authentication over plain TCP.
    SaslPlaintext,
    /// `SSL`: TLS, no SASL.
    Ssl,
    /// `SASL_SSL`: SASL authentication over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// Kafka's name for it, as a client's `security.protocol` setting
    /// spells it (`SASL_SSL`, ...).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }
}

impl std::fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl ServerConfig {
    /// A builder listening at `listen`: its host for every broker, its port
    /// for the first broker (the next brokers take the next ports), or any
    /// free port per broker when the port is 0.
    pub fn builder(listen: SocketAddr) -> ServerConfigBuilder {
        ServerConfigBuilder {
            config: ServerConfig {
                listen,
                advertised_host: None,
                socket_request_max_bytes: DEFAULT_SOCKET_REQUEST_MAX_BYTES,
                queued_max_request_bytes: None,
                max_incremental_fetch_session_cache_slots:
                    DEFAULT_MAX_INCREMENTAL_FETCH_SESSION_CACHE_SLOTS,
                max_connections: DEFAULT_MAX_CONNECTIONS,
                connections_max_idle: DEFAULT_CONNECTIONS_MAX_IDLE,
                request_read_timeout: DEFAULT_REQUEST_READ_TIMEOUT,
                fetch_max_bytes: DEFAULT_FETCH_MAX_BYTES,
                allow_non_loopback: false,
                connection_failed_authentication_delay:
                    DEFAULT_CONNECTION_FAILED_AUTHENTICATION_DELAY,
                sasl_plain_users: SaslPlainUsers::default(),
                #[cfg(feature = "tls")]
                tls: None,
            },
        }
    }

    /// The address to listen at.
    #[must_use]
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// `socket.request.max.bytes`: the largest request accepted.
    #[must_use]
    pub fn socket_request_max_bytes(&self) -> usize {
        self.socket_request_max_bytes
    }

    /// `queued.max.request.bytes`: the bytes of requests read and not yet
    /// answered, over every broker's listener; `None` (Kafka's -1) for
    /// unbounded.
    #[must_use]
    pub fn queued_max_request_bytes(&self) -> Option<usize> {
        self.queued_max_request_bytes
    }

    /// `max.incremental.fetch.session.cache.slots`: the fetch sessions
    /// (KIP-227) each broker keeps.
    #[must_use]
    pub fn max_incremental_fetch_session_cache_slots(&self) -> usize {
        self.max_incremental_fetch_session_cache_slots
    }

    /// `max.connections`: connections open at once, over every broker's
    /// listener.
    #[must_use]
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// `connections.max.idle.ms`: a connection with no request for this
    /// long is closed.
    #[must_use]
    pub fn connections_max_idle(&self) -> Duration {
        self.connections_max_idle
    }

    /// How long the rest of a request may take once its first byte
    /// arrived, in all; a slower request closes its connection.
    #[must_use]
    pub fn request_read_timeout(&self) -> Duration {
        self.request_read_timeout
    }

    /// The broker's `fetch.max.bytes`: the most record bytes one fetch
    /// response carries (a client's own `max_bytes` may ask for less).
    #[must_use]
    pub fn fetch_max_bytes(&self) -> usize {
        self.fetch_max_bytes
    }

    /// Whether the listener may bind an address other than loopback: if
    /// [`ServerConfigBuilder::allow_non_loopback`] allowed it, or clients
    /// must authenticate (SASL) or connect over TLS.
    #[must_use]
    pub fn non_loopback_allowed(&self) -> bool {
        self.allow_non_loopback || self.security_protocol() != SecurityProtocol::Plaintext
    }

    /// Kafka's `sasl.enabled.mechanisms`: `["PLAIN"]` with SASL/PLAIN
    /// users configured, else empty (no SASL).
    #[must_use]
    pub fn sasl_enabled_mechanisms(&self) -> Vec<&'static str> {
        if self.sasl_plain_users.is_empty() {
            Vec::new()
        } else {
            vec![super::sasl::PLAIN]
        }
    }

    /// The SASL/PLAIN user names, sorted (their passwords are not shown).
    #[must_use]
    pub fn sasl_plain_usernames(&self) -> Vec<&str> {
        self.sasl_plain_users.usernames()
    }

    /// Whether connections speak TLS (feature `tls`).
    #[must_use]
    pub fn tls_enabled(&self) -> bool {
        #[cfg(feature = "tls")]
        {
            self.tls.is_some()
        }
        #[cfg(not(feature = "tls"))]
        {
            false
        }
    }

    /// The listener's `security.protocol`: what a client sets to connect.
    #[must_use]
    pub fn security_protocol(&self) -> SecurityProtocol {
        match (self.tls_enabled(), self.sasl_plain_users.is_empty()) {
            (false, true) => SecurityProtocol::Plaintext,
            (false, false) => SecurityProtocol::SaslPlaintext,
            (true, true) => SecurityProtocol::Ssl,
            (true, false) => SecurityProtocol::SaslSsl,
        }
    }

    /// `connection.failed.authentication.delay.ms`: how long a connection
    /// whose SASL authentication failed stays open after the failure's
    /// response, unless the client closes it first.
    #[must_use]
    pub fn connection_failed_authentication_delay(&self) -> Duration {
        self.connection_failed_authentication_delay
    }

    /// The host clients are told to connect to (Kafka's
    /// `advertised.listeners` host), if set; else the listen address's
    /// host (or `127.0.0.1` for an unspecified address).
    #[must_use]
    pub fn advertised_host(&self) -> Option<&str> {
        self.advertised_host.as_deref()
    }

    fn validate(&self) -> Result<()> {
        let positive = |name: &str, ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(Error::InvalidConfig(format!("{name} must be positive")))
            }
        };
        positive(
            "socket.request.max.bytes",
            self.socket_request_max_bytes > 0,
        )?;
        positive("max.connections", self.max_connections > 0)?;
        if let Some(queued) = self.queued_max_request_bytes
            && queued < self.socket_request_max_bytes
        {
            // Kafka's rule: every request the socket accepts must fit.
            return Err(Error::InvalidConfig(format!(
                "queued.max.request.bytes ({queued}) must be at least socket.request.max.bytes ({})",
                self.socket_request_max_bytes
            )));
        }
        positive(
            "connections.max.idle.ms",
            !self.connections_max_idle.is_zero(),
        )?;
        positive(
            "the request read timeout",
            !self.request_read_timeout.is_zero(),
        )?;
        positive("fetch.max.bytes", self.fetch_max_bytes > 0)?;
        if self.socket_request_max_bytes > i32::MAX as usize {
            return Err(Error::InvalidConfig(format!(
                "socket.request.max.bytes is {}, above the protocol's {} (a request's size is an int32)",
                self.socket_request_max_bytes,
                i32::MAX
            )));
        }
        if let Some(host) = &self.advertised_host
            && host.is_empty()
        {
            return Err(Error::InvalidConfig(
                "the advertised host is empty".to_string(),
            ));
        }
        self.sasl_plain_users.validate()?;
        Ok(())
    }
}

/// Builds a [`ServerConfig`]; see [`ServerConfig::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ServerConfigBuilder {
    config: ServerConfig,
}

impl ServerConfigBuilder {
    /// `socket.request.max.bytes` (default 100 MiB): a request whose size
    /// prefix is larger closes its connection unread.
    pub fn socket_request_max_bytes(mut self, bytes: usize) -> Self {
        self.config.socket_request_max_bytes = bytes;
        self
    }

    /// `queued.max.request.bytes` (default `None`, Kafka's -1: unbounded):
    /// the bytes of requests read and not yet answered, across every
    /// connection of every broker's listener. A connection whose next
    /// request would take the total over it reads no further (its client
    /// waits, as on a muted Kafka connection) until other requests are
    /// answered, the server stops (the connection closes), or
    /// `connections.max.idle.ms` passes (the connection closes, logged).
    /// A request being answered keeps its bytes counted until it is
    /// answered, a long-polling Fetch or a parked JoinGroup / SyncGroup
    /// included. Unbounded, the bytes in flight are at most
    /// `max.connections` × `socket.request.max.bytes`, since each
    /// connection answers one request at a time. Must be at least
    /// `socket.request.max.bytes`, as in Kafka.
    pub fn queued_max_request_bytes(mut self, bytes: Option<usize>) -> Self {
        self.config.queued_max_request_bytes = bytes;
        self
    }

    /// `max.incremental.fetch.session.cache.slots` (default 1000): the
    /// fetch sessions (KIP-227) each broker keeps. A consumer's Fetch
    /// (v7+) may open a session and then send only the partitions whose
    /// position changed; the broker answers only partitions with records,
    /// an error, or a new high watermark or log start offset. When every
    /// slot is taken, a new session replaces one unused for 120 s, else
    /// the one with the fewest partitions if it has fewer than the new
    /// one; otherwise the consumer gets full fetches without a session. 0
    /// keeps no sessions.
    pub fn max_incremental_fetch_session_cache_slots(mut self, slots: usize) -> Self {
        self.config.max_incremental_fetch_session_cache_slots = slots;
        self
    }

    /// `max.connections` (default 1024; Kafka's is unbounded, but here
    /// every connection is a thread): a connection beyond it is closed as
    /// it is accepted.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.config.max_connections = connections;
        self
    }

    /// `connections.max.idle.ms` (default 10 minutes).
    pub fn connections_max_idle(mut self, idle: Duration) -> Self {
        self.config.connections_max_idle = idle;
        self
    }

    /// How long the rest of a request may take to arrive, in all, once its
    /// first byte did (default 30 s): a client trickling a request in
    /// slowly loses its connection.
    pub fn request_read_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_read_timeout = timeout;
        self
    }

    /// The broker's `fetch.max.bytes` (default 55 MiB).
    pub fn fetch_max_bytes(mut self, bytes: usize) -> Self {
        self.config.fetch_max_bytes = bytes;
        self
    }

    /// Allows binding an address other than loopback without SASL or TLS
    /// (default `false`): anyone who reaches the port then reads and
    /// writes every topic. With SASL or TLS configured, a non-loopback
    /// address is allowed anyway.
    pub fn allow_non_loopback(mut self, allow: bool) -> Self {
        self.config.allow_non_loopback = allow;
        self
    }

    /// `connection.failed.authentication.delay.ms` (default 100 ms): after
    /// a failed SASL authentication's response, the connection closes
    /// when the client closes it or after this delay, whichever comes
    /// first (so that the client reads the response before the end of the
    /// stream, and a client guessing passwords is slowed down). Zero
    /// closes it at once.
    pub fn connection_failed_authentication_delay(mut self, delay: Duration) -> Self {
        self.config.connection_failed_authentication_delay = delay;
        self
    }

    /// Adds a SASL/PLAIN user (Kafka's `user_NAME="PASSWORD"` in the
    /// listener's JAAS configuration); the same name again replaces its
    /// password. With at least one user the listener is `SASL_PLAINTEXT`
    /// (or `SASL_SSL` with `tls`, feature `tls`): a connection must
    /// authenticate (SaslHandshake, then SaslAuthenticate) before any
    /// request but ApiVersions is answered.
    ///
    /// ```
    /// use logbus::{SecurityProtocol, ServerConfig};
    /// let config = ServerConfig::builder("0.0.0.0:9092".parse()?)
    ///     .sasl_plain_user("alice", "alice-secret")
    ///     .build()?;
    /// assert_eq!(config.security_protocol(), SecurityProtocol::SaslPlaintext);
    /// assert_eq!(config.sasl_enabled_mechanisms(), ["PLAIN"]);
    /// assert!(config.non_loopback_allowed());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sasl_plain_user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.config
            .sasl_plain_users
            .insert(user.into(), password.into());
        self
    }

    /// Adds SASL/PLAIN users, as (user, password) pairs: as
    /// [`sasl_plain_user`](Self::sasl_plain_user) for each.
    pub fn sasl_plain_users<U, P>(mut self, users: impl IntoIterator<Item = (U, P)>) -> Self
    where
        U: Into<String>,
        P: Into<String>,
    {
        for (user, password) in users {
            self = self.sasl_plain_user(user, password);
        }
        self
    }

    /// Serves TLS (feature `tls`) with this certificate and key: the
    /// listener is `SSL`, or `SASL_SSL` with SASL users.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.config.tls = Some(tls);
        self
    }

    /// The host clients are told to connect to (Kafka's
    /// `advertised.listeners`), for a listener bound to an unspecified or
    /// private address.
    pub fn advertised_host(mut self, host: impl Into<String>) -> Self {
        self.config.advertised_host = Some(host.into());
        self
    }

    /// The configuration.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a zero bound, a
    /// `socket.request.max.bytes` above `i32::MAX`, a
    /// `queued.max.request.bytes` below `socket.request.max.bytes`, an empty advertised
    /// host, or a SASL/PLAIN user whose name or password is empty or holds
    /// a NUL (which PLAIN's token cannot carry).
    pub fn build(self) -> Result<ServerConfig> {
        self.config.validate()?;
        Ok(self.config)
    }
}
