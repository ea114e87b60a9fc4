//! Where the time goes: a timeline of the producer's and the log's stages,
//! for profiling (feature `internals`).
//!
//! The producer's stages (a commit, the append of a transaction's tail,
//! PrepareCommit, the markers, a sender thread's wait, each file write...)
//! are spans: while a timeline is recording ([`start`] until [`stop`]),
//! each span's stage, thread, start and duration is noted in a buffer of
//! fixed size ([`CAPACITY`] spans, 16 MiB allocated at the first [`start`]
//! and kept; later spans are counted, not kept). Not recording, a span
//! costs one relaxed atomic load; built without the feature, nothing.
//!
//! The buffer is the process's: one timeline records at a time, and it
//! notes the spans of every producer and log of the process. A span that
//! runs across a [`start`] is not kept.
//!
//! ```
//! use logbus::timeline::{self, Stage};
//! use logbus::{Cluster, ClusterConfig, NewTopic, Producer, ProducerConfig, ProducerRecord};
//!
//! let dir = tempfile::tempdir()?;
//! let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
//! cluster.create_topic(NewTopic::new("t", 1))?;
//! let producer = Producer::new(&cluster, ProducerConfig::default())?;
//! timeline::start();
//! producer.send(ProducerRecord::new("t", "v"))?.wait()?;
//! let recorded = timeline::stop();
//! assert!(!recorded.durations(Stage::FileWrite).is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![cfg_attr(
    not(feature = "internals"),
    expect(
        unreachable_pub,
        reason = "public (in a public module) with the internals feature"
    )
)]

#[cfg(feature = "internals")]
pub use imp::{CAPACITY, Span, Timeline, start, stop};

/// A stage of the producer or the log that a timeline times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Stage {
    /// `Producer::commit_transaction`, on the calling thread.
    Commit = 1,
    /// The sender thread's append of a group of batches (it took them
    /// from the accumulator, or a transaction's tail).
    SenderAppend,
    /// A sending thread's append of a group of its own sealed batches
    /// (direct appends).
    DirectAppend,
    /// `AddPartitionsToTxn` at the transaction coordinator (the
    /// transaction's `Ongoing` state written).
    AddPartitions,
    /// `EndTxn` at the coordinator (PrepareCommit written; with inline
    /// markers, the markers too).
    EndTxn,
    /// The sender thread writing the markers of ended transactions.
    Markers,
    /// The sender thread waiting for work (spinning, then parked).
    SenderWait,
    /// One write system call of a log file (`pwritev`, on Linux; the
    /// storage layer's other writes are not timed).
    FileWrite,
}

#[cfg_attr(
    not(feature = "internals"),
    expect(dead_code, reason = "read by the timeline, built with `internals`")
)]
impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 8] = [
        Stage::Commit,
        Stage::SenderAppend,
        Stage::DirectAppend,
        Stage::AddPartitions,
        Stage::EndTxn,
        Stage::Markers,
        Stage::SenderWait,
        Stage::FileWrite,
    ];

    /// Its name: the variant's, in kebab case.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Stage::Commit => "commit",
            Stage::SenderAppend => "sender-append",
            Stage::DirectAppend => "direct-append",
            Stage::AddPartitions => "add-partitions",
            Stage::EndTxn => "end-txn",
            Stage::Markers => "markers",
            Stage::SenderWait => "sender-wait",
            Stage::FileWrite => "file-write",
        }
    }
}

/// Times `f` as a span of `stage` while a timeline records.
#[inline]
pub(crate) fn timed<T>(stage: Stage, f: impl FnOnce() -> T) -> T {
    #[cfg(feature = "internals")]
    {
        let started = imp::begin();
        let out = f();
        if let Some(started) = started {
            imp::end(stage, started);
        }
        out
    }
    #[cfg(not(feature = "internals"))]
    {
        let _ = stage;
        f()
    }
}

#[cfg(feature = "internals")]
mod imp {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use super::Stage;

    /// How many spans a timeline keeps.
    pub const CAPACITY: usize = 1 << 20;

    /// A recorded span.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Span {
        /// Its stage.
        pub stage: Stage,
        /// The thread it ran on: a small number given to each thread at
        /// its first span (0 for the 256th thread and later).
        pub thread: u8,
        /// When it started, since the timeline's [`start`].
        pub start: Duration,
        /// How long it took.
        pub duration: Duration,
    }

    impl Span {
        /// When it ended, since the timeline's [`start`].
        #[must_use]
        pub fn end(&self) -> Duration {
            self.start + self.duration
        }
    }

    /// What a timeline recorded: its spans in the order they ended.
    #[derive(Debug, Clone, Default)]
    pub struct Timeline {
        /// The spans kept (at most [`CAPACITY`]).
        pub spans: Vec<Span>,
        /// Spans that ended once the buffer was full (not kept).
        pub dropped: u64,
    }

    impl Timeline {
        /// The durations of `stage`'s spans, shortest first.
        #[must_use]
        pub fn durations(&self, stage: Stage) -> Vec<Duration> {
            let mut all: Vec<Duration> = self
                .spans
                .iter()
                .filter(|s| s.stage == stage)
                .map(|s| s.duration)
                .collect();
            all.sort_unstable();
            all
        }
    }

    static RECORDING: AtomicBool = AtomicBool::new(false);
    /// The next slot to fill.
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    /// When the recording started, in ns since `epoch()`.
    static STARTED: AtomicU64 = AtomicU64::new(0);
    /// Two words a span: its start (ns since `epoch()`, plus one: zero
    /// marks a slot not written yet), then its duration (ns) << 16 |
    /// thread << 8 | stage. Allocated at the first `start`.
    static WORDS: OnceLock<Box<[AtomicU64]>> = OnceLock::new();
    static THREADS: AtomicUsize = AtomicUsize::new(1);

    thread_local! {
        static THREAD: u8 = u8::try_from(THREADS.fetch_add(1, Ordering::Relaxed)).unwrap_or(0);
    }

    fn epoch() -> Instant {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        *EPOCH.get_or_init(Instant::now)
    }

    fn since_epoch(t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX >> 1)
    }

    fn words() -> &'static [AtomicU64] {
        WORDS.get_or_init(|| (0..2 * CAPACITY).map(|_| AtomicU64::new(0)).collect())
    }

    /// Starts recording a new timeline (discarding what was recorded
    /// since the last [`start`]).
    pub fn start() {
        RECORDING.store(false, Ordering::SeqCst);
        for word in words() {
            word.store(0, Ordering::Relaxed);
        }
        NEXT.store(0, Ordering::SeqCst);
        STARTED.store(since_epoch(Instant::now()), Ordering::SeqCst);
        RECORDING.store(true, Ordering::SeqCst);
    }

    /// Stops recording and returns the spans that ended since [`start`]
    /// (none without one). Spans still running are not kept.
    #[must_use]
    pub fn stop() -> Timeline {
        let was = RECORDING.swap(false, Ordering::SeqCst);
        let Some(words) = WORDS.get().filter(|_| was) else {
            return Timeline::default();
        };
        let started = STARTED.load(Ordering::SeqCst);
        let ended = NEXT.load(Ordering::SeqCst);
        let mut timeline = Timeline {
            spans: Vec::with_capacity(ended.min(CAPACITY)),
            dropped: ended.saturating_sub(CAPACITY) as u64,
        };
        for slot in 0..ended.min(CAPACITY) {
            let start = words[2 * slot].load(Ordering::Acquire);
            let packed = words[2 * slot + 1].load(Ordering::Acquire);
            let stage = Stage::ALL.into_iter().find(|s| *s as u64 == packed & 0xff);
            // A slot still being written, or a span begun before this
            // recording started.
            let Some(stage) = stage.filter(|_| start > started) else {
                continue;
            };
            timeline.spans.push(Span {
                stage,
                thread: ((packed >> 8) & 0xff) as u8,
                start: Duration::from_nanos(start - 1 - started),
                duration: Duration::from_nanos(packed >> 16),
            });
        }
        timeline
    }

    #[inline]
    pub(super) fn begin() -> Option<Instant> {
        RECORDING.load(Ordering::Relaxed).then(Instant::now)
    }

    #[cold]
    pub(super) fn end(stage: Stage, started: Instant) {
        let ended = Instant::now();
        let Some(words) = WORDS.get() else {
            return;
        };
        let slot = NEXT.fetch_add(1, Ordering::Relaxed);
        if slot >= CAPACITY {
            return;
        }
        let start = since_epoch(started);
        let duration = since_epoch(ended).saturating_sub(start).min(u64::MAX >> 16);
        let thread = THREAD.with(|t| *t);
        words[2 * slot + 1].store(
            duration << 16 | u64::from(thread) << 8 | stage as u64,
            Ordering::Relaxed,
        );
        // Written last: a zero start means the slot is not written yet.
        words[2 * slot].store(start + 1, Ordering::Release);
    }
}
