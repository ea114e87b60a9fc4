//! Time, as logbus sees it.
//!
//! Every timeout and timestamp reads a [`Clock`]. Production code uses
//! [`SystemClock`]; tests use [`ManualClock`] and move time by hand, so no test
//! sleeps to wait for a timer.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

/// A source of time in milliseconds since the Unix epoch.
///
/// Background threads that wait for a deadline call [`Clock::wait_hint`] to
/// learn how long to wait in real time, and also listen on
/// [`Clock::subscribe`], which fires whenever the clock jumps.
pub trait Clock: Send + Sync + Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;

    /// How long to wait in real time before `deadline_ms` may have passed:
    /// `None` means "until the clock jumps" (a manual clock never advances on
    /// its own).
    fn wait_hint(&self, deadline_ms: i64) -> Option<Duration>;

    /// A channel that receives a message whenever the clock is moved by hand.
    /// The system clock never sends on it.
    fn subscribe(&self) -> Receiver<()>;
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    fn wait_hint(&self, deadline_ms: i64) -> Option<Duration> {
        let left = deadline_ms.saturating_sub(self.now_ms()).max(0);
        Some(Duration::from_millis(left.unsigned_abs()))
    }

    fn subscribe(&self) -> Receiver<()> {
        crossbeam_channel::never()
    }
}

/// A clock that only moves when told to, for deterministic tests.
///
/// ```
/// use logbus::{Clock, ManualClock};
/// let clock = ManualClock::new(1_000);
/// clock.advance_ms(500);
/// assert_eq!(clock.now_ms(), 1_500);
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<Mutex<ManualState>>,
}

#[derive(Debug)]
struct ManualState {
    now_ms: i64,
    subscribers: Vec<Sender<()>>,
}

impl ManualClock {
    /// A clock that reads `now_ms` until moved.
    #[must_use]
    pub fn new(now_ms: i64) -> Self {
        ManualClock {
            inner: Arc::new(Mutex::new(ManualState {
                now_ms,
                subscribers: Vec::new(),
            })),
        }
    }

    /// Moves the clock forward by `ms` and wakes every subscriber.
    pub fn advance_ms(&self, ms: i64) {
        let mut state = self.inner.lock();
        state.now_ms = state.now_ms.saturating_add(ms);
        Self::notify(&mut state);
    }

    /// Sets the clock to `now_ms` (which may go backwards, as wall clocks can)
    /// and wakes every subscriber.
    pub fn set_ms(&self, now_ms: i64) {
        let mut state = self.inner.lock();
        state.now_ms = now_ms;
        Self::notify(&mut state);
    }

    fn notify(state: &mut ManualState) {
        // A full channel already holds a wake-up; a disconnected one is dropped.
        state.subscribers.retain(|tx| {
            !matches!(
                tx.try_send(()),
                Err(crossbeam_channel::TrySendError::Disconnected(()))
            )
        });
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.inner.lock().now_ms
    }

    fn wait_hint(&self, _deadline_ms: i64) -> Option<Duration> {
        None
    }

    fn subscribe(&self) -> Receiver<()> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.inner.lock().subscribers.push(tx);
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_wakes_subscribers_once_per_jump() {
        let clock = ManualClock::new(10);
        let rx = clock.subscribe();
        assert!(rx.try_recv().is_err());
        clock.advance_ms(5);
        clock.advance_ms(5);
        assert_eq!(clock.now_ms(), 20);
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err(), "wake-ups coalesce");
    }

    #[test]
    fn system_clock_hint_never_negative() {
        let clock = SystemClock;
        assert_eq!(clock.wait_hint(0), Some(Duration::ZERO));
    }
}
