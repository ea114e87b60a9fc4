//! Acknowledgements that wait for replication: Kafka's `DelayedProduce`
//! in its produce purgatory.
//!
//! An `acks=all` append to a partition with followers in its ISR is
//! written to the leader's log, then parked here as a [`DelayedProduce`]
//! until the partition's high watermark passes the batch's last offset.
//! Whoever moves the high watermark (a follower's fetch, an ISR change)
//! completes it, and whoever takes the leadership away or shrinks the ISR
//! below `min.insync.replicas` fails it; the appender holds the other end,
//! a [`PendingAck`], and may wait on it (bounded on the cluster's clock)
//! or poll it, so one appender can have many partitions' acknowledgements
//! in flight.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::clock::Clock;
use crate::error::{Error, Result};

/// The partition's side of an acknowledgement waiting for replication.
#[derive(Debug)]
pub(crate) struct DelayedProduce {
    /// The high watermark that completes it: the batch's last offset + 1.
    pub(crate) required_offset: u64,
    done: Sender<Result<()>>,
    /// Alive while the appender holds its [`PendingAck`].
    waiter: Weak<()>,
}

impl DelayedProduce {
    /// A new pending acknowledgement completed once the high watermark
    /// reaches `required_offset`, and the appender's end of it.
    pub(crate) fn new(required_offset: u64) -> (DelayedProduce, PendingAck) {
        let (done, rx) = crossbeam_channel::bounded(1);
        let alive = Arc::new(());
        (
            DelayedProduce {
                required_offset,
                done,
                waiter: Arc::downgrade(&alive),
            },
            PendingAck {
                rx,
                started_ms: 0,
                deadline_ms: i64::MAX,
                _alive: alive,
            },
        )
    }

    /// Whether the appender dropped its [`PendingAck`] (it timed out or
    /// went away): nobody waits for the outcome any more.
    pub(crate) fn is_abandoned(&self) -> bool {
        self.waiter.strong_count() == 0
    }

    /// Completes it with `result` (nothing happens if the appender gave
    /// up waiting).
    pub(crate) fn complete(self, result: Result<()>) {
        let _ = self.done.try_send(result);
    }
}

/// The appender's side of an `acks=all` acknowledgement that waits for
/// the in-sync replicas.
#[derive(Debug)]
pub(crate) struct PendingAck {
    rx: Receiver<Result<()>>,
    /// When the wait started (cluster clock, ms).
    started_ms: i64,
    /// When it fails with [`Error::Timeout`] (cluster clock, ms).
    deadline_ms: i64,
    /// Tells the partition whether anyone still waits.
    _alive: Arc<()>,
}

impl PendingAck {
    /// The outcome if it is known: `Ok(())` once the high watermark passed
    /// the batch, or the error that ended the wait.
    pub(crate) fn try_result(&self) -> Option<Result<()>> {
        match self.rx.try_recv() {
            Ok(result) => Some(result),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Err(Error::Closed("partition"))),
        }
    }

    /// The same acknowledgement, failing with [`Error::Timeout`] once
    /// `timeout_ms` have passed from `now_ms` on the cluster clock.
    pub(crate) fn with_timeout(mut self, now_ms: i64, timeout_ms: i64) -> Self {
        self.started_ms = now_ms;
        self.deadline_ms = now_ms.saturating_add(timeout_ms);
        self
    }

    /// When it times out (cluster clock, ms).
    pub(crate) fn deadline_ms(&self) -> i64 {
        self.deadline_ms
    }

    /// The outcome at `now_ms`: as [`PendingAck::try_result`], or
    /// [`Error::Timeout`] once the deadline passed.
    pub(crate) fn poll(&self, now_ms: i64) -> Option<Result<()>> {
        self.try_result().or_else(|| {
            (now_ms >= self.deadline_ms).then(|| {
                Err(Error::Timeout {
                    op: "acks=all waiting for the in-sync replicas",
                    waited: Duration::from_millis(
                        u64::try_from(now_ms.saturating_sub(self.started_ms)).unwrap_or(0),
                    ),
                })
            })
        })
    }

    /// The channel the outcome arrives on (to wait for several at once).
    pub(crate) fn receiver(&self) -> &Receiver<Result<()>> {
        &self.rx
    }

    /// Waits for the outcome, until its deadline on `clock`.
    ///
    /// # Errors
    /// The error that ended the wait ([`Error::NotLeaderOrFollower`],
    /// [`Error::NotEnoughReplicasAfterAppend`]), [`Error::Closed`] if the
    /// partition went away, [`Error::Timeout`] at the deadline.
    pub(crate) fn wait(&self, clock: &Arc<dyn Clock>) -> Result<()> {
        let ticks = clock.subscribe();
        let deadline = self.deadline_ms;
        loop {
            if let Some(result) = self.poll(clock.now_ms()) {
                return result;
            }
            let timer = match clock.wait_hint(deadline) {
                Some(d) => crossbeam_channel::after(d),
                None => crossbeam_channel::never(),
            };
            crossbeam_channel::select! {
                recv(self.rx) -> result => {
                    return result.unwrap_or(Err(Error::Closed("partition")));
                }
                recv(ticks) -> _ => {}
                recv(timer) -> _ => {}
            }
        }
    }
}
