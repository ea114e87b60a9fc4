//! The sockets: one listener per broker, a thread per connection, Kafka's
//! size-prefixed framing, and [`Server`], the handle that stops them.

use std::collections::{BTreeMap, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use super::budget::{Refused, RequestBudget, Reservation};
use super::config::ServerConfig;
use super::fetch_session::FetchSessions;
use super::frame::{self, Answer};
use super::sasl::{self, Session};
use crate::Cluster;
use crate::error::{Error, Result};

/// A running Kafka protocol listener: one port per broker of the cluster.
/// `Send + Sync`; stopped by [`Server::shutdown`] or when dropped, which
/// close every connection and join every thread the server started.
///
/// ```
/// use logbus::{Cluster, ClusterConfig};
/// let dir = tempfile::tempdir()?;
/// let config = ClusterConfig::builder().brokers(2).build()?;
/// let cluster = Cluster::open(dir.path(), config)?;
/// let server = cluster.serve("127.0.0.1:0")?; // any free port per broker
/// let addresses = server.addresses();
/// assert_eq!(addresses.len(), 2);
/// // Any Kafka client bootstraps from one of them, e.g. kcat:
/// // kcat -b 127.0.0.1:<port of broker 0> -L
/// assert_ne!(addresses[&0].port(), 0);
/// server.shutdown();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    addresses: BTreeMap<u32, SocketAddr>,
    acceptors: Mutex<Vec<JoinHandle<()>>>,
}

/// What every thread of one server shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cluster: Cluster,
    pub(crate) config: ServerConfig,
    /// Each broker's advertised (host, port).
    pub(crate) advertised: BTreeMap<u32, (String, u16)>,
    stopping: AtomicBool,
    /// Dropped at shutdown: every receiver then wakes (long-polling
    /// fetches end early).
    stop_tx: Mutex<Option<Sender<()>>>,
    pub(crate) stop_rx: Receiver<()>,
    /// The open connections, by id: a clone of each socket (to shut it
    /// down) and its thread.
    connections: Mutex<HashMap<u64, Connection>>,
    /// Connection threads that ended, to join.
    finished: Mutex<Vec<JoinHandle<()>>>,
    /// `queued.max.request.bytes`: the bytes of requests in flight.
    pub(crate) budget: RequestBudget,
    /// Every broker's fetch sessions (KIP-227).
    pub(crate) fetch_sessions: FetchSessions,
    next_id: AtomicU64,
}

/// An open connection: a clone of its socket (to shut it down) and its
/// thread, once started.
type Connection = (TcpStream, Option<JoinHandle<()>>);

impl Cluster {
    /// Serves Kafka's wire protocol for this cluster at `addr` (a loopback
    /// address, `host:port`), with [`ServerConfig`]'s defaults: see
    /// [`Cluster::serve_with`].
    ///
    /// # Errors
    /// As [`Cluster::serve_with`], and [`Error::InvalidArgument`] for an
    /// address that does not resolve.
    pub fn serve(&self, addr: impl std::net::ToSocketAddrs) -> Result<Server> {
        let listen = addr
            .to_socket_addrs()
            .map_err(|e| Error::InvalidArgument(format!("the listen address: {e}")))?
            .next()
            .ok_or_else(|| {
                Error::InvalidArgument("the listen address resolves to nothing".to_string())
            })?;
        self.serve_with(ServerConfig::builder(listen).build()?)
    }

    /// Serves Kafka's wire protocol for this cluster: one listener per
    /// broker, on `config`'s host; with port 0 each on any free port, with
    /// port P broker `i` on port P + i. Any Kafka client can then bootstrap
    /// from one of [`Server::addresses`]; Metadata tells it every broker's
    /// address and each partition's leader, as a Kafka cluster does.
    ///
    /// Each connection is served by its own thread, one request at a time,
    /// in order (as Kafka's broker does). A request that breaks the
    /// framing, is larger than `socket.request.max.bytes`, names an API or
    /// version the listener does not answer, or does not decode closes its
    /// connection (logged at `warn` with the reason) and changes nothing.
    ///
    /// With SASL users configured
    /// ([`ServerConfigBuilder::sasl_plain_user`](crate::ServerConfigBuilder::sasl_plain_user)),
    /// a connection must authenticate with SASL/PLAIN before any request
    /// but ApiVersions is answered; with TLS
    /// (`ServerConfigBuilder::tls`, feature `tls`) every connection
    /// starts with a TLS handshake, which must complete within the request
    /// read timeout. Every bound (sizes, idle and read timeouts) holds
    /// under TLS too.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a non-loopback host without SASL or TLS
    /// unless
    /// [`ServerConfigBuilder::allow_non_loopback`](crate::ServerConfigBuilder::allow_non_loopback),
    /// or a fixed port whose last
    /// broker's port would pass 65535; [`Error::Io`] (operation `bind`) if
    /// a port cannot be bound (every listener bound so far is closed
    /// again); [`Error::Closed`] on a closed cluster.
    pub fn serve_with(&self, config: ServerConfig) -> Result<Server> {
        self.inner.check_open()?;
        let host = config.listen.ip();
        if !host.is_loopback() && !config.non_loopback_allowed() {
            return Err(Error::InvalidConfig(format!(
                "the listener would bind {host}, which is not a loopback address; it has no TLS or \
                 SASL, so anyone reaching the port could read and write every topic (configure \
                 SASL users or TLS, or ServerConfigBuilder::allow_non_loopback(true) to allow it \
                 as it is)"
            )));
        }
        let brokers = self.inner.broker_count();
        let base = config.listen.port();
        if base != 0 && u32::from(base) + brokers.saturating_sub(1) > u32::from(u16::MAX) {
            return Err(Error::InvalidConfig(format!(
                "port {base} for broker 0 leaves no port for broker {} (above 65535)",
                brokers - 1
            )));
        }
        let mut listeners = Vec::new();
        for broker in 0..brokers {
            let port = if base == 0 {
                0
            } else {
                base + u16::try_from(broker).unwrap_or(u16::MAX)
            };
            let at = SocketAddr::new(host, port);
            let listener =
                TcpListener::bind(at).map_err(|e| Error::io("bind", at.to_string(), e))?;
            let bound = listener
                .local_addr()
                .map_err(|e| Error::io("bind", at.to_string(), e))?;
            listeners.push((broker, listener, bound));
        }
        let advertised_host = config.advertised_host.clone().unwrap_or_else(|| {
            if host.is_unspecified() {
                Ipv4Addr::LOCALHOST.to_string()
            } else {
                host.to_string()
            }
        });
        let advertised = listeners
            .iter()
            .map(|(b, _, bound)| (*b, (advertised_host.clone(), bound.port())))
            .collect();
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(0);
        let budget = RequestBudget::new(config.queued_max_request_bytes);
        let fetch_sessions = FetchSessions::new(config.max_incremental_fetch_session_cache_slots);
        let shared = Arc::new(Shared {
            cluster: self.clone(),
            config,
            advertised,
            stopping: AtomicBool::new(false),
            stop_tx: Mutex::new(Some(stop_tx)),
            stop_rx,
            connections: Mutex::new(HashMap::new()),
            finished: Mutex::new(Vec::new()),
            budget,
            fetch_sessions,
            next_id: AtomicU64::new(0),
        });
        let mut addresses = BTreeMap::new();
        let mut acceptors = Vec::new();
        for (broker, listener, bound) in listeners {
            addresses.insert(broker, bound);
            let thread_shared = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("logbus-listener-{broker}"))
                .spawn(move || accept_loop(&thread_shared, broker, &listener));
            match spawned {
                Ok(handle) => acceptors.push(handle),
                Err(e) => {
                    let server = Server {
                        shared,
                        addresses,
                        acceptors: Mutex::new(acceptors),
                    };
                    server.shutdown();
                    return Err(Error::io("spawn", "the listener thread", e));
                }
            }
        }
        let security_protocol = shared.config.security_protocol().name();
        tracing::info!(
            ?addresses,
            security_protocol,
            "logbus: Kafka protocol listener started"
        );
        Ok(Server {
            shared,
            addresses,
            acceptors: Mutex::new(acceptors),
        })
    }
}

impl Server {
    /// Where each broker's listener is bound, by broker id.
    #[must_use]
    pub fn addresses(&self) -> BTreeMap<u32, SocketAddr> {
        self.addresses.clone()
    }

    /// Stops the listeners and closes every connection, then joins every
    /// thread the server started. A request being answered completes
    /// first (a long-polling fetch answers at once with what it has).
    /// Calling it again does nothing; dropping the server calls it.
    pub fn shutdown(&self) {
        if self.shared.stopping.swap(true, Ordering::AcqRel) {
            // Another call stops it; this one still waits for the threads.
        }
        self.shared.stop_tx.lock().take();
        // Connections waiting for request bytes give up.
        self.shared.budget.close();
        // Wake each blocked `accept` by connecting to it.
        for addr in self.addresses.values() {
            let _ = TcpStream::connect(wake_address(*addr));
        }
        for handle in self.acceptors.lock().drain(..) {
            let _ = handle.join();
        }
        // No new connection can start now: close the open ones.
        let open: Vec<Connection> = self
            .shared
            .connections
            .lock()
            .drain()
            .map(|(_, c)| c)
            .collect();
        for (stream, _) in &open {
            let _ = stream.shutdown(Shutdown::Both);
        }
        for (_, handle) in open {
            if let Some(handle) = handle {
                let _ = handle.join();
            }
        }
        for handle in self.shared.finished.lock().drain(..) {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
impl Server {
    /// What the server's threads share.
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The address that reaches a listener bound at `bound` from this host.
fn wake_address(bound: SocketAddr) -> SocketAddr {
    match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), bound.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), bound.port())
        }
        _ => bound,
    }
}

/// Accepts connections to broker `broker`'s listener until the server
/// stops.
fn accept_loop(shared: &Arc<Shared>, broker: u32, listener: &TcpListener) {
    loop {
        let accepted = listener.accept();
        if shared.stopping.load(Ordering::Acquire) {
            return;
        }
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(broker, error = %e, "logbus listener: accept failed");
                continue;
            }
        };
        // A stopped or crashed broker (the fault API) is unreachable, as a
        // down Kafka broker: its connections close at once.
        if !shared.cluster.is_broker_running(broker) {
            tracing::debug!(broker, %peer, "logbus listener: broker down, connection refused");
            let _ = stream.shutdown(Shutdown::Both);
            continue;
        }
        // Join the threads of connections that ended meanwhile.
        let ended: Vec<JoinHandle<()>> = shared.finished.lock().drain(..).collect();
        for handle in ended {
            let _ = handle.join();
        }
        let mut connections = shared.connections.lock();
        if connections.len() >= shared.config.max_connections {
            drop(connections);
            tracing::warn!(
                broker,
                %peer,
                max_connections = shared.config.max_connections,
                "logbus listener: connection refused: max.connections reached"
            );
            let _ = stream.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(clone) = stream.try_clone() else {
            continue;
        };
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        // Registered before the thread starts, so that its own removal
        // always finds the entry.
        connections.insert(id, (clone, None));
        let thread_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("logbus-conn-{broker}-{id}"))
            .spawn(move || {
                serve_connection(&thread_shared, broker, stream, peer);
                let mut connections = thread_shared.connections.lock();
                if let Some((_, Some(handle))) = connections.remove(&id) {
                    thread_shared.finished.lock().push(handle);
                }
            });
        match spawned {
            Ok(handle) => {
                if let Some(entry) = connections.get_mut(&id) {
                    entry.1 = Some(handle);
                } else {
                    // The connection already ended: join it later.
                    shared.finished.lock().push(handle);
                }
            }
            Err(e) => {
                if let Some((s, _)) = connections.remove(&id) {
                    let _ = s.shutdown(Shutdown::Both);
                }
                tracing::warn!(broker, error = %e, "logbus listener: no thread for a connection");
            }
        }
    }
}

/// Why a connection stopped reading.
enum Stop {
    /// The peer closed it, it idled out or the server stops: no warning.
    Quiet,
    /// A broken or hostile request: logged at `warn`.
    Bad(String),
}

/// A connection's byte stream: the socket, or TLS over it.
enum Transport {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<super::tls::TlsStream>),
}

impl Transport {
    /// The socket (for its timeouts and shutdown).
    fn socket(&self) -> &TcpStream {
        match self {
            Transport::Plain(stream) => stream,
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.socket(),
        }
    }

    /// Reads some bytes into `buf` (at least one) before `deadline`;
    /// `Ok(0)` when the peer closed the connection.
    fn read_before(&mut self, buf: &mut [u8], deadline: Instant) -> std::io::Result<usize> {
        match self {
            Transport::Plain(stream) => loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(std::io::Error::new(
                        ErrorKind::TimedOut,
                        "the deadline passed",
                    ));
                }
                stream.set_read_timeout(Some(left))?;
                match stream.read(buf) {
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    other => return other,
                }
            },
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.read_before(buf, deadline),
        }
    }

    /// Writes all of `data`.
    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Transport::Plain(stream) => stream.write_all(data),
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.write_all(data),
        }
    }

    /// Reads and drops what the peer sends until it closes the connection
    /// or `deadline` passes.
    fn drain_until_closed(&mut self, deadline: Instant) {
        let mut sink = [0u8; 4096];
        while let Ok(n) = self.read_before(&mut sink, deadline) {
            if n == 0 {
                return;
            }
        }
    }

    /// Closes the connection (TLS: with close_notify first).
    fn close(&mut self) {
        #[cfg(feature = "tls")]
        if let Transport::Tls(tls) = self {
            tls.close();
        }
        let _ = self.socket().shutdown(Shutdown::Both);
    }
}

/// Serves one connection: the TLS handshake if the listener has TLS, then
/// reads a request, answers it, and again, until the peer closes it, it
/// idles out, a request is bad or the server stops.
fn serve_connection(shared: &Arc<Shared>, broker: u32, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(shared.config.request_read_timeout));
    let mut stream = match open_transport(shared, stream) {
        Ok(stream) => stream,
        Err(reason) => {
            tracing::warn!(broker, %peer, %reason, "logbus listener: connection closed");
            return;
        }
    };
    let mut session = Session::new(&shared.config.sasl_plain_users);
    loop {
        if shared.stopping.load(Ordering::Acquire) {
            return;
        }
        let limit = session.max_receive(shared.config.socket_request_max_bytes);
        // The request's bytes stay counted in queued.max.request.bytes
        // until it is answered.
        let (request, reservation) = match read_frame(shared, &mut stream, limit) {
            Ok(read) => read,
            Err(Stop::Quiet) => return,
            Err(Stop::Bad(reason)) => {
                tracing::warn!(broker, %peer, %reason, "logbus listener: connection closed");
                stream.close();
                return;
            }
        };
        let answer = if session.expects_raw_token() {
            // Handshake v0: a bare PLAIN token, answered with an empty
            // frame.
            match sasl::raw_token(&shared.config.sasl_plain_users, &mut session, &request) {
                Ok(()) => Answer::Respond(BytesMut::from(&[0u8; 4][..])),
                Err(reason) => Answer::Close(reason),
            }
        } else {
            frame::answer(shared, broker, peer, &mut session, request)
        };
        drop(reservation);
        let (response, close) = match answer {
            Answer::Respond(response) => (Some(response), None),
            Answer::RespondThenClose(response, reason) => (Some(response), Some(reason)),
            Answer::Nothing => (None, None),
            Answer::Close(reason) => (None, Some(reason)),
            Answer::Down => {
                tracing::debug!(broker, %peer, "logbus listener: broker down, connection closed");
                stream.close();
                return;
            }
        };
        let answered = response.is_some();
        if let Some(response) = response
            && let Err(e) = stream.write_all(&response)
        {
            tracing::debug!(broker, %peer, error = %e, "logbus listener: write failed");
            return;
        }
        if let Some(reason) = close {
            tracing::warn!(broker, %peer, %reason, "logbus listener: connection closed");
            if answered {
                // A response the client must read before the connection
                // closes (a failed authentication's): closed as soon as
                // the client closes it, or after Kafka's
                // connection.failed.authentication.delay.ms. Closing at
                // once can lose it: a client may see the end of the
                // stream before the response, or a reset.
                let delay = shared.config.connection_failed_authentication_delay;
                stream.drain_until_closed(Instant::now() + delay);
            }
            stream.close();
            return;
        }
    }
}

/// The connection's transport: the socket itself, or (with TLS) the socket
/// after a TLS handshake that must end within the request read timeout.
fn open_transport(shared: &Shared, stream: TcpStream) -> std::result::Result<Transport, String> {
    #[cfg(feature = "tls")]
    if let Some(tls) = &shared.config.tls {
        let deadline = Instant::now() + shared.config.request_read_timeout;
        return super::tls::accept(tls, stream, deadline).map(|s| Transport::Tls(Box::new(s)));
    }
    let _ = shared;
    Ok(Transport::Plain(stream))
}

/// Reads one size-prefixed request of at most `limit` bytes: waits up to
/// `connections.max.idle.ms` for its first byte, then up to the request
/// read timeout for its size; takes its bytes from
/// `queued.max.request.bytes` (waiting up to `connections.max.idle.ms` for
/// them), then gives the rest the request read timeout to arrive.
fn read_frame<'s>(
    shared: &'s Shared,
    stream: &mut Transport,
    limit: usize,
) -> std::result::Result<(Bytes, Reservation<'s>), Stop> {
    let config = &shared.config;
    let mut size = [0u8; 4];
    let idle = Instant::now() + config.connections_max_idle;
    match stream.read_before(&mut size[..1], idle) {
        Ok(0) => return Err(Stop::Quiet),
        Ok(_) => {}
        // Idle too long (or reset): Kafka closes idle connections
        // without a word.
        Err(_) => return Err(Stop::Quiet),
    }
    // The rest of the request must arrive by this deadline, however it
    // trickles in.
    let deadline = Instant::now() + config.request_read_timeout;
    read_by(stream, &mut size[1..], deadline)
        .map_err(|e| Stop::Bad(format!("the request size did not arrive: {e}")))?;
    let size = i32::from_be_bytes(size);
    if size < 0 {
        return Err(Stop::Bad(format!("negative request size {size}")));
    }
    let size = size as usize;
    if size > limit {
        let name = if limit < config.socket_request_max_bytes {
            "sasl.server.max.receive.size (before SASL authentication)"
        } else {
            "socket.request.max.bytes"
        };
        return Err(Stop::Bad(format!(
            "request of {size} bytes is larger than {name} ({limit})"
        )));
    }
    let reservation = match shared
        .budget
        .acquire(size, Instant::now() + config.connections_max_idle)
    {
        Ok(reservation) => reservation,
        Err(Refused::Closed) => return Err(Stop::Quiet),
        Err(Refused::TimedOut) => {
            return Err(Stop::Bad(format!(
                "a request of {size} bytes waited connections.max.idle.ms ({:?}) for \
                 queued.max.request.bytes",
                config.connections_max_idle
            )));
        }
    };
    // The body's own deadline starts once its bytes are granted.
    let deadline = Instant::now() + config.request_read_timeout;
    // Grown as bytes arrive, 64 KiB ahead at most: a size prefix alone
    // reserves little.
    let mut body = Vec::new();
    let mut filled = 0;
    while filled < size {
        let want = (size - filled).min(64 * 1024);
        body.resize(filled + want, 0);
        let got = read_some(stream, &mut body[filled..], deadline).map_err(|e| {
            Stop::Bad(format!(
                "{filled} of the request's {size} bytes arrived: {e}"
            ))
        })?;
        filled += got;
    }
    body.truncate(filled);
    Ok((Bytes::from(body), reservation))
}

/// Reads some bytes into `buf` (at least one) before `deadline`.
fn read_some(stream: &mut Transport, buf: &mut [u8], deadline: Instant) -> std::io::Result<usize> {
    match stream.read_before(buf, deadline)? {
        0 => Err(std::io::Error::new(
            ErrorKind::UnexpectedEof,
            "the peer closed the connection",
        )),
        n => Ok(n),
    }
}

/// Fills `buf` before `deadline`.
fn read_by(stream: &mut Transport, buf: &mut [u8], deadline: Instant) -> std::io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        at += read_some(stream, &mut buf[at..], deadline)?;
    }
    Ok(())
}
