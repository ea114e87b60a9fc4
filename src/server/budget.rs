//! `queued.max.request.bytes`: one server-wide budget for the bytes of the
//! requests read and not yet answered, on every connection of every
//! broker's listener.
//!
//! Kafka's socket server allocates each request's buffer from a memory
//! pool of that size and mutes a connection whose next request does not
//! fit until other requests free their bytes. Here each connection reads
//! one request at a time, so a connection takes its request's bytes from
//! the budget after the size prefix arrived and before the body is read,
//! and gives them back once the request is answered; a request that does
//! not fit leaves its body in the socket (TCP pushes back on the client)
//! and its connection thread waits on a condition variable until enough
//! bytes are given back, the server stops, or a deadline passes.
//!
//! Without the setting (Kafka's default, -1) nothing is counted; the bound
//! is then `max.connections × socket.request.max.bytes`.

use std::time::Instant;

use parking_lot::{Condvar, Mutex};

/// Why a connection got no bytes from the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The server is stopping.
    Closed,
    /// The deadline passed before the bytes were free.
    TimedOut,
}

/// The server's budget of request bytes in flight.
#[derive(Debug)]
pub(crate) struct RequestBudget {
    /// `queued.max.request.bytes`; `None` when unbounded.
    limit: Option<usize>,
    state: Mutex<State>,
    /// Signalled whenever bytes are given back, a connection starts
    /// waiting, or the budget closes.
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Bytes of requests read (or being read) and not yet answered.
    used: usize,
    /// Connections waiting for bytes.
    waiting: usize,
    /// The server stops: no one waits any longer.
    closed: bool,
}

/// Bytes taken from a [`RequestBudget`], given back when dropped.
#[derive(Debug)]
#[must_use = "the bytes are given back when this is dropped"]
pub(crate) struct Reservation<'a> {
    budget: &'a RequestBudget,
    bytes: usize,
}

impl RequestBudget {
    /// A budget of `limit` bytes, or an unbounded one.
    pub(crate) fn new(limit: Option<usize>) -> Self {
        RequestBudget {
            limit,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }
    }

    /// Takes `bytes` for one request, waiting while they would take the
    /// bytes in flight over the limit. A request alone is never refused
    /// for its size (the configuration keeps the limit at least
    /// `socket.request.max.bytes`, and a request goes when nothing else is
    /// in flight).
    ///
    /// # Errors
    /// [`Refused::Closed`] once the server stops, [`Refused::TimedOut`]
    /// when `deadline` passes first.
    pub(crate) fn acquire(
        &self,
        bytes: usize,
        deadline: Instant,
    ) -> Result<Reservation<'_>, Refused> {
        let Some(limit) = self.limit else {
            return Ok(Reservation {
                budget: self,
                bytes: 0,
            });
        };
        let mut state = self.state.lock();
        let mut counted = false;
        let result = loop {
            if state.closed {
                break Err(Refused::Closed);
            }
            if state.used == 0 || state.used.saturating_add(bytes) <= limit {
                state.used += bytes;
                #[cfg(test)]
                self.changed.notify_all();
                break Ok(Reservation {
                    budget: self,
                    bytes,
                });
            }
            if !counted {
                counted = true;
                state.waiting += 1;
                self.changed.notify_all();
            }
            if self.changed.wait_until(&mut state, deadline).timed_out() {
                // One last look: the bytes may have come back just now.
                if !state.closed && state.used.saturating_add(bytes) <= limit {
                    continue;
                }
                break Err(Refused::TimedOut);
            }
        };
        if counted {
            state.waiting -= 1;
        }
        result
    }

    /// Wakes every waiting connection and refuses every later
    /// [`acquire`](Self::acquire): the server stops.
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.changed.notify_all();
    }

    /// Bytes of requests in flight (always 0 when unbounded).
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.state.lock().used
    }

    /// Waits until `n` connections wait for bytes.
    #[cfg(test)]
    pub(crate) fn wait_for_waiting(&self, n: usize) {
        self.wait_for(|_, waiting| waiting >= n);
    }

    /// Waits until `done(used, waiting)` holds; panics after a minute (a
    /// broken budget fails its test instead of hanging it).
    #[cfg(test)]
    pub(crate) fn wait_for(&self, done: impl Fn(usize, usize) -> bool) {
        let give_up = Instant::now() + std::time::Duration::from_secs(60);
        let mut state = self.state.lock();
        while !done(state.used, state.waiting) {
            assert!(
                !self.changed.wait_until(&mut state, give_up).timed_out(),
                "the budget never reached the state waited for: {state:?}"
            );
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        let mut state = self.budget.state.lock();
        state.used -= self.bytes;
        drop(state);
        self.budget.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    use bytes::BytesMut;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{ApiVersionsRequest, FetchRequest, RequestHeader, TopicName};
    use kafka_protocol::protocol::{Encodable, Request, StrBytes};

    use super::{Refused, RequestBudget};
    use crate::format::BatchBuilder;
    use crate::{Cluster, ClusterConfig, Compression, NewTopic, ServerConfig};

    /// Far enough away that a test never reaches it.
    fn later() -> std::time::Instant {
        std::time::Instant::now() + Duration::from_secs(3600)
    }

    #[test]
    fn unbounded_counts_nothing_and_never_waits() {
        let budget = RequestBudget::new(None);
        let a = budget.acquire(usize::MAX, later()).unwrap();
        let b = budget.acquire(usize::MAX, later()).unwrap();
        assert_eq!(budget.used(), 0);
        drop((a, b));
    }

    #[test]
    fn a_request_over_the_budget_waits_until_another_is_answered() {
        let budget = RequestBudget::new(Some(100));
        let first = budget.acquire(60, later()).unwrap();
        let also = budget.acquire(40, later()).unwrap();
        assert_eq!(budget.used(), 100);
        drop(also);
        let (took_tx, took_rx) = crossbeam_channel::bounded(1);
        std::thread::scope(|s| {
            s.spawn(|| {
                let r = budget.acquire(50, later()).unwrap();
                took_tx.send(budget.used()).unwrap();
                drop(r);
            });
            budget.wait_for_waiting(1);
            // 60 + 50 > 100: still waiting, nothing taken.
            assert!(took_rx.try_recv().is_err());
            assert_eq!(budget.used(), 60);
            drop(first);
            assert_eq!(took_rx.recv().unwrap(), 50);
        });
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_request_alone_goes_whatever_its_size() {
        let budget = RequestBudget::new(Some(10));
        let big = budget.acquire(25, later()).unwrap();
        assert_eq!(budget.used(), 25);
        drop(big);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn closing_wakes_the_waiting_and_refuses_the_next() {
        let budget = RequestBudget::new(Some(10));
        let held = budget.acquire(10, later()).unwrap();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| budget.acquire(1, later()).map(|_| ()));
            budget.wait_for_waiting(1);
            budget.close();
            assert_eq!(waiter.join().unwrap(), Err(Refused::Closed));
        });
        drop(held);
        assert_eq!(budget.acquire(1, later()).map(|_| ()), Err(Refused::Closed));
    }

    /// One request frame (size prefix included) from client `client_id`.
    fn frame<R: Request>(request: &R, version: i16, client_id: &str) -> Vec<u8> {
        let mut body = BytesMut::new();
        let mut header = RequestHeader::default();
        header.request_api_key = R::KEY;
        header.request_api_version = version;
        header.correlation_id = 1;
        header.client_id = Some(StrBytes::from_string(client_id.to_string()));
        header
            .encode(&mut body, R::header_version(version))
            .unwrap();
        request.encode(&mut body, version).unwrap();
        let mut framed = (body.len() as i32).to_be_bytes().to_vec();
        framed.extend_from_slice(&body);
        framed
    }

    /// Reads one response frame: its correlation id is the first 4 bytes.
    fn read_response(stream: &mut TcpStream) -> Vec<u8> {
        let mut size = [0u8; 4];
        stream.read_exact(&mut size).unwrap();
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        stream.read_exact(&mut body).unwrap();
        body
    }

    /// Through the listener: a long-polling Fetch holds its bytes; a
    /// second connection's request, which would take the total over
    /// `queued.max.request.bytes`, is not read until the Fetch is
    /// answered; then it is.
    #[test]
    fn over_the_wire_a_request_waits_for_the_bytes_of_a_parked_fetch() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = Cluster::open(dir.path(), ClusterConfig::default()).unwrap();
        cluster.create_topic(NewTopic::new("t", 1)).unwrap();
        let config = ServerConfig::builder("127.0.0.1:0".parse().unwrap())
            .socket_request_max_bytes(1000)
            .queued_max_request_bytes(Some(1000))
            .build()
            .unwrap();
        let server = cluster.serve_with(config).unwrap();
        let budget = &server.shared().budget;
        let addr = server.addresses()[&0];
        let connect = || {
            let stream = TcpStream::connect(addr).unwrap();
            // A broken server fails the test instead of hanging it.
            stream
                .set_read_timeout(Some(Duration::from_secs(60)))
                .unwrap();
            stream
        };

        let mut partition = FetchPartition::default();
        partition.fetch_offset = 0;
        partition.partition_max_bytes = 1 << 20;
        let mut topic = FetchTopic::default();
        topic.topic = TopicName(StrBytes::from_static_str("t"));
        topic.partitions = vec![partition];
        let mut fetch = FetchRequest::default();
        fetch.replica_id = (-1).into();
        fetch.max_wait_ms = 60_000;
        fetch.min_bytes = 1;
        fetch.max_bytes = 1 << 20;
        fetch.topics = vec![topic];
        let fetch = frame(&fetch, 12, &"f".repeat(500));
        let fetch_size = fetch.len() - 4;
        let mut fetcher = connect();
        fetcher.write_all(&fetch).unwrap();
        // The fetch is read and parked (the partition is empty).
        budget.wait_for(|used, _| used == fetch_size);

        let versions = frame(&ApiVersionsRequest::default(), 0, &"v".repeat(500));
        assert!(fetch_size + versions.len() - 4 > 1000);
        let mut other = connect();
        other.write_all(&versions).unwrap();
        budget.wait_for_waiting(1);
        // Not read, so not answered: nothing to read yet.
        other.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(
            other.read(&mut byte).unwrap_err().kind(),
            ErrorKind::WouldBlock
        );
        other.set_nonblocking(false).unwrap();
        assert_eq!(budget.used(), fetch_size);

        // A record for the fetch: it is answered, and gives its bytes back.
        let mut b = BatchBuilder::new(Compression::None);
        b.append(1_700_000_000_000, None, Some(b"wake"), &[]);
        let mut records = b.build().unwrap().to_vec();
        cluster
            .topic("t")
            .unwrap()
            .partition(0)
            .unwrap()
            .append(&mut records)
            .unwrap();
        let fetched = read_response(&mut fetcher);
        assert_eq!(&fetched[..4], &1i32.to_be_bytes());
        let answered = read_response(&mut other);
        assert_eq!(&answered[..4], &1i32.to_be_bytes());
        // ApiVersions v0's error code follows the correlation id.
        assert_eq!(&answered[4..6], &0i16.to_be_bytes());
        budget.wait_for(|used, _| used == 0);
        server.shutdown();
    }

    #[test]
    fn a_wait_past_its_deadline_is_refused_and_takes_nothing() {
        let budget = RequestBudget::new(Some(10));
        let held = budget.acquire(8, later()).unwrap();
        let passed = std::time::Instant::now();
        assert_eq!(
            budget.acquire(5, passed).map(|_| ()),
            Err(Refused::TimedOut)
        );
        assert_eq!(budget.used(), 8);
        drop(held);
        assert!(budget.acquire(5, passed).is_ok(), "fits: no wait");
    }
}
