//! Time, as logbus sees it.
//!
//! Every timeout and timestamp reads a [`Clock`]. Production code uses
//! [`SystemClock`]; tests use [`ManualClock`] and move time by hand, so no test
//! sleeps to wait for a timer.

use std::fmt::Debug;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
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
///
/// Read through the CPU's time stamp counter where it is reliable (one
/// clock per process, measured against `SystemTime` every 10 ms), since a
/// producer reads it once per record: it agrees with `SystemTime::now()`
/// to within a millisecond and follows a step of the system clock within
/// 10 ms.
///
/// ```
/// use std::time::{SystemTime, UNIX_EPOCH};
/// use logbus::{Clock, SystemClock};
/// let before = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
/// let now = SystemClock.now_ms();
/// let after = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
/// assert!(before - 1 <= now && now <= after + 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    /// The wall clock, read through the time stamp counter: as `SystemTime::now()`
    /// to within a millisecond, at a fraction of its cost.
    fn now_ms(&self) -> i64 {
        WALL.now_ms()
    }

    fn wait_hint(&self, deadline_ms: i64) -> Option<Duration> {
        let left = deadline_ms.saturating_sub(self.now_ms()).max(0);
        Some(Duration::from_millis(left.unsigned_abs()))
    }

    fn subscribe(&self) -> Receiver<()> {
        crossbeam_channel::never()
    }
}

/// How often [`WallClock`] reads the system clock again (nanoseconds).
const RESYNC_NS: u64 = 10_000_000;

/// The longest a measurement of the offset may take to be kept: its error is
/// at most half of it.
const MAX_SPAN_NS: u64 = 200_000;

/// The wall clock at the cost of a counter read.
///
/// Every record a producer sends is stamped with the wall clock's time, and
/// on a virtual machine `SystemTime::now()` costs 45-90 ns: more than half
/// of what a whole `send` may take at 10 M records a second. This clock
/// reads the CPU's time stamp counter instead (through `quanta`, which
/// calibrates it against the operating system's monotonic clock and falls
/// back to that clock where the counter is not reliable) and adds an offset
/// to the wall clock that it measures again whenever `RESYNC_NS` have passed,
/// so a step or a slew of the system clock shows within 10 ms. Between two
/// readings of the system clock the two clocks drift apart by the rate
/// difference of the counter and the (NTP-adjusted) wall clock: well under
/// a millisecond. Like `SystemTime`, it is not monotonic across a step of
/// the system clock.
#[derive(Debug)]
struct WallClock {
    /// `quanta`'s calibrated counter and its raw reading that monotonic
    /// nanoseconds count from: a reading is the counter, a subtraction and
    /// a multiply-shift (`quanta::Instant::now` adds a look at quanta's
    /// global clock and a `Duration` on the way).
    counter: OnceLock<(quanta::Clock, u64)>,
    /// Wall-clock nanoseconds since the Unix epoch minus monotonic
    /// nanoseconds since `base`, as last measured.
    offset_ns: AtomicI64,
    /// Monotonic nanoseconds at which to measure `offset_ns` again.
    resync_at: AtomicU64,
}

/// The process's one [`WallClock`]: every `SystemClock` reads it.
static WALL: WallClock = WallClock {
    counter: OnceLock::new(),
    offset_ns: AtomicI64::new(0),
    resync_at: AtomicU64::new(0),
};

impl WallClock {
    fn now_ms(&self) -> i64 {
        let (counter, base) = self.counter.get_or_init(|| {
            let counter = quanta::Clock::new();
            let base = counter.raw();
            (counter, base)
        });
        let mono_ns = || counter.delta_as_nanos(*base, counter.raw());
        let mono = mono_ns();
        // Relaxed: each atomic holds a whole value on its own; a reader that
        // sees a new `resync_at` with the previous offset uses an offset at
        // most `RESYNC_NS` old, which is as good.
        if mono >= self.resync_at.load(Ordering::Relaxed) {
            // The system clock between two counter readings: the offset is
            // taken at their midpoint.
            let wall = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
            let after = mono_ns();
            // A thread descheduled between the readings learns nothing
            // precise: it keeps the slow path's answer and the next reader
            // measures again.
            if after.saturating_sub(mono) <= MAX_SPAN_NS {
                let midpoint = mono + (after - mono) / 2;
                self.offset_ns.store(
                    wall.saturating_sub(i64::try_from(midpoint).unwrap_or(i64::MAX)),
                    Ordering::Relaxed,
                );
                self.resync_at
                    .store(after.saturating_add(RESYNC_NS), Ordering::Relaxed);
            }
            return wall / 1_000_000;
        }
        let mono = i64::try_from(mono).unwrap_or(i64::MAX);
        mono.saturating_add(self.offset_ns.load(Ordering::Relaxed)) / 1_000_000
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
    fn system_clock_reads_the_wall_clock() {
        let wall_ms = || {
            let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            i64::try_from(d.as_millis()).unwrap()
        };
        // Many readings, across several resynchronisations: each lies
        // between the system clock read before and after it (a millisecond
        // either side for rounding and the counter's drift).
        let mut resyncs_seen = 0;
        let mut last_resync = WALL.resync_at.load(Ordering::Relaxed);
        for _ in 0..200_000 {
            let before = wall_ms();
            let now = SystemClock.now_ms();
            let after = wall_ms();
            assert!(
                before - 1 <= now && now <= after + 1,
                "{before} <= {now} <= {after}"
            );
            let resync = WALL.resync_at.load(Ordering::Relaxed);
            if resync != last_resync {
                resyncs_seen += 1;
                last_resync = resync;
            }
            if resyncs_seen >= 3 {
                break;
            }
        }
    }

    #[test]
    fn system_clock_hint_never_negative() {
        let clock = SystemClock;
        assert_eq!(clock.wait_hint(0), Some(Duration::ZERO));
    }
}
