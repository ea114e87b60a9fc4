//! Opening a log: listing its segments and recovering them.
//!
//! Recovery runs in two phases, so that an open it refuses changes no file.
//! Phase 1 only reads: it sorts the directory (segments, leftovers, a
//! cleaning pass's `.swap` files), then judges every segment in offset
//! order. Segments wholly below the recovery point were flushed; their
//! indexes are trusted after cheap consistency checks (the batches they walk
//! must follow each other) if they are trimmed, as sealing a segment or a
//! clean close leaves them, else they are scanned: an untrimmed index (the
//! active segment's after a crash) is rebuilt, never read past its entries,
//! so opening costs the same whatever `segment.index.bytes` is. Every other
//! segment is scanned batch by batch ([`SegmentProbe::scan`]: structure,
//! CRC, position, offsets), and each segment must start where the one before
//! it ends (in a compacted log, at or after it). In a log that is not
//! compacted, a scan starts at the batch of the last offset index entry
//! below the recovery point when the index holds one that checks out (the
//! batches before it, fsynced, have their headers walked, as a trusted
//! segment's are): an open after a crash checks what lies past the recovery
//! point, not the whole active segment ([`RecoveryReport::bytes_scanned`]).
//!
//! The first damage found (a batch failing its checks, a segment missing
//! between two others, two segments claiming the same offsets) is located
//! by offset: the offset the damaged data had to start at.
//! - **Below the recovery point** the bytes were fsynced, so neither an
//!   interrupted write nor a power loss explains the damage: the open fails
//!   with [`Error::Corrupt`] ([`CorruptionKind::BelowRecoveryPoint`], with
//!   the file and position) and nothing is cut.
//! - **At or above it** the bytes were never fsynced, and a power loss can
//!   leave anything there: a torn last write, or lost pages followed by
//!   valid-looking batches (pages written back out of order). The log is cut
//!   at the first damage, every later segment removed (they were never
//!   fsynced either), as Kafka does, and the cut is reported in
//!   [`RecoveryReport::truncated`] with what followed the damage.
//!
//! A log that ends below its recovery point (flushed data missing) is
//! refused too. Phase 2 then completes interrupted swaps, removes
//! leftovers, applies the cut, rebuilds the indexes of scanned segments and
//! fsyncs what it changed before the open returns.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use parking_lot::{Mutex, RwLock};

use crate::error::{CorruptionKind, Error, Result};
use crate::format::header::{OffsetOrder, out_of_sequence};
use crate::format::{self, BatchHeader};
use crate::log::durability::Durability;
use crate::log::{
    EpochFile, Log, LogBuilder, LogInner, LogScheduler, LogState, epoch, fence, producer_state,
    restart, snapshot,
};
use crate::storage::probe::{Counters, Damage, SegmentProbe, Tail};
use crate::storage::segment::{
    self, CLEANED_SUFFIX, DELETED_SUFFIX, INDEX_SUFFIX, LOG_SUFFIX, MAX_BATCH_POSITION,
    SWAP_SUFFIX, Segment, SegmentLimits, TIME_INDEX_SUFFIX, TRUNCATING_SUFFIX, TXN_INDEX_SUFFIX,
};
use crate::storage::{OpenMode, Storage, spare};

/// What recovery did when the log was opened ([`Log::recovery_report`]).
///
/// A clean close and reopen reports nothing cut. After a crash,
/// [`truncated`](Self::truncated) says whether recovery cut damaged,
/// never-fsynced data off the end of the log, and what it lost.
///
/// ```
/// use logbus::{Log, format::BatchBuilder, Compression};
/// let dir = tempfile::tempdir()?;
/// let log = Log::builder(dir.path()).open()?;
/// let mut batch = BatchBuilder::new(Compression::None);
/// batch.append(0, None, Some(b"v"), &[]);
/// log.append(&mut batch.build()?.to_vec(), 0)?;
/// let recovery_point = log.recovery_point();
/// log.close()?;
///
/// // Garbage after the last batch, as a torn write leaves it.
/// let segment = dir.path().join(format!("{:020}.log", 0));
/// let mut bytes = std::fs::read(&segment)?;
/// let valid = bytes.len() as u64;
/// bytes.extend_from_slice(&[0xab; 30]);
/// std::fs::write(&segment, &bytes)?;
///
/// let log = Log::builder(dir.path()).recovery_point(recovery_point).open()?;
/// let cut = log.recovery_report().truncated.as_ref().expect("the torn tail is cut");
/// assert_eq!((cut.position, cut.bytes), (valid, 30));
/// assert_eq!(cut.first_lost_offset, 1);
/// assert!(!cut.followed_by_valid_data(), "a torn write, not lost pages");
/// assert_eq!(log.log_end_offset(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Segments scanned batch by batch (at or after the recovery point, or
    /// whose indexes failed their checks).
    pub segments_scanned: usize,
    /// Segments whose indexes were rebuilt.
    pub indexes_rebuilt: usize,
    /// Bytes of log data recovery checked batch by batch (structure and
    /// CRC) in the scanned segments. A segment whose offset index holds an
    /// entry below the recovery point that checks out (the active segment
    /// a crash left, with its preallocated index) is checked only from
    /// that entry's batch on: the batches before it were fsynced, and are
    /// trusted as the index is, as those of a segment wholly below the
    /// recovery point are (their headers are walked, their CRCs not
    /// computed). So an open after a crash costs what lies past the
    /// recovery point, not the size of the active segment.
    pub bytes_scanned: u64,
    /// What recovery cut: damage at or above the recovery point and
    /// everything after it. `None` when nothing was cut.
    pub truncated: Option<TruncatedTail>,
    /// Leftover files removed (`.deleted`, temporary and orphaned index
    /// files, a cleaner's unfinished `.cleaned` files, segments a completed
    /// swap replaced, an empty segment a roll left after a compacted log's
    /// lost end). Segments removed by a cut are listed in
    /// [`TruncatedTail::removed_segments`] instead.
    pub removed_files: usize,
    /// Cleaned segments (`.swap` files) whose swap an interrupted cleaning
    /// pass left unfinished and recovery completed.
    pub swaps_completed: usize,
    /// Set when an fsync failure had fenced this log (in this process, or
    /// as recorded in its `fenced-offset` marker) and recovery found data
    /// past the last offset a successful fsync covered: the log was cut
    /// back to that offset, dropping what the page cache still showed past
    /// it (fsyncgate).
    pub fenced_truncation: Option<crate::log::FencedTruncation>,
    /// Set when the leader epoch file (`leader-epoch-checkpoint`) was
    /// missing while the log holds batches, or could not be read: the
    /// cache was rebuilt from the batches' leader epochs and the file
    /// rewritten.
    pub leader_epochs_rebuilt: Option<crate::log::LeaderEpochsRebuilt>,
    /// The producer-state snapshot (`<offset>.snapshot`) the producers'
    /// state was loaded from (only the batches after it were read), or
    /// `None` if every batch from the first segment was read.
    pub producer_snapshot: Option<u64>,
    /// Producer-state snapshots that could not be read (torn, damaged) and
    /// were removed; an older one, or the batches, took their place.
    pub producer_snapshots_skipped: usize,
}

/// The end of the log that recovery cut off: from the first damage at or
/// above the recovery point to the end of the log (data that was never
/// fsynced). Tells a torn write (nothing valid after the damage) from pages
/// a power loss wrote back out of order (valid-looking batches or later
/// segments after it: [`followed_by_valid_data`](Self::followed_by_valid_data)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TruncatedTail {
    /// The segment's log file that was cut.
    pub path: PathBuf,
    /// Where the valid data ended in it: the damage's position, now the
    /// file's length.
    pub position: u64,
    /// How many bytes were cut from that file.
    pub bytes: u64,
    /// The first offset lost: the offset the damaged data had to start at,
    /// and the log end offset after the cut.
    pub first_lost_offset: u64,
    /// The log end offset the data after the damage reached, as far as
    /// valid-looking batches there (in the cut file or the last removed
    /// segment) or the removed segments' base offsets (a segment is created
    /// when the log reaches its base offset) tell; `None` when nothing
    /// followed the damage. Offsets `first_lost_offset..lost_end_offset`
    /// were lost.
    pub lost_end_offset: Option<u64>,
    /// The recovery point the log was opened with; the cut is at or above
    /// it (damage below it refuses the open instead).
    pub recovery_point: u64,
    /// What was wrong at `position`.
    pub cause: CorruptionKind,
    /// Where in the cut file a valid-looking batch continuing the log
    /// followed the damage, if one did.
    pub valid_after: Option<u64>,
    /// The log files of the later segments removed with the cut (their
    /// index files went too).
    pub removed_segments: Vec<PathBuf>,
    /// Bytes of the removed segments' log files.
    pub removed_bytes: u64,
}

impl TruncatedTail {
    /// Whether valid-looking data followed the damage (in the cut file or
    /// as later segments): lost or reordered pages of a power loss, rather
    /// than a write torn at the end of the log.
    #[must_use]
    pub fn followed_by_valid_data(&self) -> bool {
        self.valid_after.is_some() || !self.removed_segments.is_empty()
    }
}

/// Tells an operator what recovery cut, where and why (warnings), and
/// what else it did (a debug summary).
fn trace_recovery(report: &RecoveryReport, log_end_offset: u64) {
    if let Some(cut) = &report.truncated {
        tracing::warn!(
            file = %cut.path.display(),
            position = cut.position,
            bytes_cut = cut.bytes,
            first_lost_offset = cut.first_lost_offset,
            lost_end_offset = ?cut.lost_end_offset,
            recovery_point = cut.recovery_point,
            cause = %cut.cause,
            removed_segments = cut.removed_segments.len(),
            followed_by_valid_data = cut.followed_by_valid_data(),
            "recovery cut a damaged tail above the recovery point"
        );
    }
    if let Some(fenced) = &report.fenced_truncation {
        tracing::warn!(
            synced_offset = fenced.synced_offset,
            found_end_offset = fenced.found_end_offset,
            "recovery drops what a failed fsync covered"
        );
    }
    tracing::debug!(
        log_end_offset,
        segments_scanned = report.segments_scanned,
        bytes_scanned = report.bytes_scanned,
        indexes_rebuilt = report.indexes_rebuilt,
        removed_files = report.removed_files,
        "log opened"
    );
}

pub(super) fn open(builder: LogBuilder) -> Result<Log> {
    let LogBuilder {
        dir,
        config,
        storage,
        clock,
        recovery_point,
        log_start_offset,
        cleaner_checkpoint,
        scheduler,
        truncation_hook,
        stats,
    } = builder;
    let span = tracing::info_span!("log_open", dir = %dir.display());
    let _entered = span.enter();
    let created_dirs = missing_dirs(storage.as_ref(), &dir);
    storage.create_dir_all(&dir)?;
    let lock = storage.lock_dir(&dir)?;
    // Read before recovery changes any file: a damaged marker refuses the open.
    let fenced = fence::pending(storage.as_ref(), &dir)?;
    // A restart committed before a crash: finished below.
    let restart_at = restart::pending(storage.as_ref(), &dir)?;
    let log_start_offset = log_start_offset.max(restart_at.unwrap_or(0));
    // Nothing below the restart offset exists any more.
    let recovery_point = recovery_point.max(restart_at.unwrap_or(0));
    let limits = LogInner::limits_for(&config);

    // Phase 1: read and judge everything without changing any file, so a
    // refused open leaves the directory as it found it.
    let mut listing = list(storage.as_ref(), &dir)?;
    if let Some(offset) = restart_at {
        listing.drop_below(&dir, offset);
    }
    let plan = plan_recovery(
        storage.as_ref(),
        &dir,
        &listing,
        (recovery_point, log_start_offset),
        limits,
        config.segment_bytes(),
    )?;

    // Phase 2: complete swaps, remove leftovers, apply the cut.
    let mut report = RecoveryReport::default();
    let mut changed = finish_swaps(storage.as_ref(), &dir, &listing, &plan, &mut report)?;
    for path in &listing.leftovers {
        storage.remove_file(path)?;
        report.removed_files += 1;
        changed = true;
    }
    let kept: Vec<u64> = plan.segments.iter().map(|s| s.base).collect();
    for (base, path) in &listing.index_files {
        let replaced = plan.swaps.iter().any(|s| *base >= s.base && *base < s.end);
        let removed_by_cut = plan
            .cut
            .as_ref()
            .is_some_and(|c| c.removed.iter().any(|r| r.base == *base));
        if kept.binary_search(base).is_err() && !replaced && !removed_by_cut {
            storage.remove_file(path)?;
            report.removed_files += 1;
            changed = true;
        }
    }
    if let Some(cut) = &plan.cut {
        // The later segments go first, durably, before the damaged one is
        // cut: a crash in between then finds the same damage again, never a
        // shortened segment followed by data a compacted log would accept.
        for removed in cut.removed.iter().rev() {
            for suffix in [
                LOG_SUFFIX,
                INDEX_SUFFIX,
                TIME_INDEX_SUFFIX,
                TXN_INDEX_SUFFIX,
            ] {
                storage.remove_file(&segment::segment_file(&dir, removed.base, suffix))?;
            }
            changed = true;
        }
    }
    for &base in &plan.dropped_empty {
        for suffix in [
            LOG_SUFFIX,
            INDEX_SUFFIX,
            TIME_INDEX_SUFFIX,
            TXN_INDEX_SUFFIX,
        ] {
            let path = segment::segment_file(&dir, base, suffix);
            if storage.exists(&path) {
                storage.remove_file(&path)?;
                report.removed_files += 1;
            }
        }
        changed = true;
    }
    if changed {
        storage.sync_dir(&dir)?;
    }

    // Open the segments: rebuild what was scanned, cut the damage.
    let mut segments: Vec<Segment> = Vec::with_capacity(plan.segments.len().max(1));
    let mut scanned = Vec::new();
    let count = plan.segments.len();
    for (i, planned) in plan.segments.iter().enumerate() {
        let is_last = i + 1 == count;
        match planned.kind {
            Judged::Trusted(counters) => {
                let mut seg = Segment::open(&storage, &dir, planned.base, limits, !is_last)?;
                seg.adopt(counters);
                segments.push(seg);
            }
            Judged::Scanned {
                valid_bytes,
                checked_from,
                ..
            } => {
                // Its index files are rebuilt: dropped unread, however
                // large their preallocated tails.
                let mut seg = Segment::open_for_rebuild(&storage, &dir, planned.base, limits)?;
                seg.rebuild_indexes(valid_bytes)?;
                let file_len = seg.file().len()?;
                if file_len > valid_bytes {
                    seg.truncate_bytes(valid_bytes)?;
                }
                // The scan checked these bytes whole (in a read-only view
                // the log does not trust them: see `read`'s module docs).
                seg.mark_checked(checked_from);
                if !is_last {
                    seg.seal()?;
                }
                report.segments_scanned += 1;
                report.indexes_rebuilt += 1;
                scanned.push(i);
                segments.push(seg);
            }
        }
    }
    report.bytes_scanned = plan.bytes_scanned;
    report.truncated = plan.cut.map(|cut| cut.report);
    let mut created = false;
    if segments.is_empty() {
        segments.push(Segment::create(&storage, &dir, log_start_offset, limits)?);
        created = true;
    }

    // Producer state: the newest readable snapshot at or below the
    // recovery point, then the batches after it. The aborted-transaction
    // entries of the scanned segments past it are rebuilt from their
    // markers, as Kafka's `LogSegment.recover` does. Snapshots that do not
    // describe this log (past its end, below its first segment, or of a
    // log a restart replaced) or do not decode are removed.
    let (producers, snapshots) = load_producers(
        (storage.as_ref(), &dir),
        listing.snapshots,
        &mut segments,
        &scanned,
        (recovery_point, restart_at.is_some()),
        (clock.now_ms(), config.producer_id_expiration_ms()),
        &mut report,
    )?;

    // Data recovered from the page cache is made durable before the
    // recovery point may cover it; a new log's first files and directory
    // are durable before anything in them is acknowledged.
    for &i in &scanned {
        segments[i].sync()?;
    }
    if !scanned.is_empty() || created {
        storage.sync_dir(&dir)?;
    }
    for new_dir in &created_dirs {
        let parent = match new_dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        storage.sync_dir(parent)?;
    }
    let now = clock.now_ms();
    if let Some(active) = segments.last_mut() {
        active.set_created_ms(now);
    }
    let log_end_offset = segments
        .last()
        .map_or(log_start_offset, Segment::next_offset);
    let first_base = segments[0].base_offset();
    let log_start_offset = log_start_offset.max(first_base).min(log_end_offset);
    let durable = if scanned.is_empty() {
        recovery_point.min(log_end_offset)
    } else {
        log_end_offset
    };

    report.fenced_truncation = fence::planned(fenced, log_end_offset);
    trace_recovery(&report, log_end_offset);
    if restart_at.is_some() {
        // The old log's epochs: rebuilt from what the restart kept.
        let path = dir.join(epoch::LEADER_EPOCH_CHECKPOINT);
        if storage.exists(&path) {
            storage.remove_file(&path)?;
        }
    }
    let (epochs, rebuilt) = epoch::load(
        storage.as_ref(),
        &dir,
        &segments,
        (log_start_offset, log_end_offset),
        recovery_point,
    )?;
    report.leader_epochs_rebuilt = rebuilt;

    let (scheduler, private) = match scheduler {
        Some(shared) => (shared, None),
        None => {
            let private = LogScheduler::start(1, clock.clone())?;
            (private.handle(), Some(private))
        }
    };
    let inner = Arc::new_cyclic(|weak| LogInner {
        dir,
        storage,
        clock,
        config: RwLock::new(Arc::new(config)),
        state: RwLock::new(LogState {
            segments,
            log_start_offset,
            log_end_offset,
            unflushed: Vec::new(),
            dir_dirty: false,
            spare_ready: false,
            spare_requested: false,
            // A checkpoint past the log end does not describe this log (a
            // power loss took what it covered, or the file is damaged):
            // start cleaning from the log start again, as Kafka does.
            cleaner_checkpoint: if cleaner_checkpoint > log_end_offset {
                log_start_offset
            } else {
                cleaner_checkpoint.max(log_start_offset)
            },
            generation: 0,
            epochs,
            epoch_file: EpochFile::Written,
            producers,
            snapshots,
            trust_checked: lock.is_locked(),
        }),
        fenced: AtomicBool::new(false),
        stats: stats.unwrap_or_else(crate::metrics::LogStats::detached),
        durability: Durability::new(durable, log_end_offset),
        recovery: report,
        cleaner: Mutex::new(()),
        background: scheduler.register(weak.clone()),
        truncation_hook,
        high_watermark: std::sync::atomic::AtomicU64::new(u64::MAX),
        _lock: lock,
    });
    // The first deadlines count from the open.
    inner.background.start_timers(
        inner.flush_interval_ms(),
        inner.config().retention_check_interval_ms(),
    );
    let log = Log {
        inner,
        private: Mutex::new(private),
    };
    if restart_at.is_some() || restart::has_temp(log.inner.storage.as_ref(), &log.inner.dir) {
        // The removals and the new segment are durable (synced above), and
        // so is the epoch file `load` wrote if it wrote one; a new log's
        // missing epoch file is what an empty cache reads as.
        restart::remove_marker(log.inner.storage.as_ref(), &log.inner.dir)?;
    }
    fence::finish(&log, fenced)?;
    Ok(log)
}

/// The producer state of the recovered segments (see
/// [`snapshot::load`]) and the snapshot files kept, after removing those
/// that do not describe this log or do not decode. `offsets` are those of
/// the snapshot files the open's listing found.
///
/// # Errors
/// [`Error::Io`].
fn load_producers(
    (storage, dir): (&dyn Storage, &Path),
    mut offsets: BTreeSet<u64>,
    segments: &mut [Segment],
    scanned: &[usize],
    (recovery_point, restarted): (u64, bool),
    expiration: (i64, i64),
    report: &mut RecoveryReport,
) -> Result<(producer_state::ProducerStateManager, BTreeSet<u64>)> {
    // A `.txnindex` entry naming a marker past its segment's end cannot
    // be right (the segment was cut after it was written and the cut of
    // the index was lost): dropped.
    for segment in segments.iter_mut() {
        segment.truncate_aborted(segment.next_offset())?;
    }
    let first = segments.first().map_or(0, Segment::base_offset);
    let end = segments.last().map_or(0, Segment::next_offset);
    let stale: Vec<u64> = offsets
        .iter()
        .copied()
        .filter(|&o| restarted || o < first || o > end)
        .collect();
    for offset in stale {
        storage.remove_file(&snapshot::snapshot_file(dir, offset))?;
        offsets.remove(&offset);
    }
    let (state, loaded) = snapshot::load(
        storage,
        dir,
        segments,
        &offsets,
        recovery_point.min(end),
        scanned,
        expiration,
    )?;
    report.producer_snapshot = loaded.from;
    report.producer_snapshots_skipped = loaded.unreadable.len();
    for offset in loaded.unreadable {
        storage.remove_file(&snapshot::snapshot_file(dir, offset))?;
        offsets.remove(&offset);
    }
    Ok((state, offsets))
}

/// `dir` and its ancestors that do not exist yet, `dir` first: the open
/// creates them, and then makes each one's entry durable in its parent.
fn missing_dirs(storage: &dyn Storage, dir: &Path) -> Vec<PathBuf> {
    let mut missing = Vec::new();
    let mut current = Some(dir);
    while let Some(path) = current.filter(|p| !p.as_os_str().is_empty() && !storage.exists(p)) {
        missing.push(path.to_path_buf());
        current = path.parent();
    }
    missing
}

/// The files of a log directory, sorted for recovery.
#[derive(Debug, Default)]
struct Listing {
    /// Base offsets of the segments' log files (`{base}.log`), ascending.
    logs: Vec<u64>,
    /// Base offsets of cleaned segments an interrupted cleaning pass left as
    /// `{base}.log.swap`, ascending.
    swaps: Vec<u64>,
    /// Index files (`.index`, `.timeindex`) by base offset.
    index_files: Vec<(u64, PathBuf)>,
    /// Index `.swap` files and `.swap` files of no segment: they follow
    /// their log's swap, or are removed.
    index_swaps: Vec<PathBuf>,
    /// Files to remove: `.deleted`, `.truncating`, spares and the cleaner's
    /// unfinished `.cleaned` files.
    leftovers: Vec<PathBuf>,
    /// Offsets of the producer-state snapshots (`{offset}.snapshot`), so
    /// that loading the producers' state lists the directory no second
    /// time.
    snapshots: BTreeSet<u64>,
}

impl Listing {
    /// Drops every segment below `offset` (its log, index and `.swap`
    /// files become leftovers to remove): a committed restart at `offset`
    /// ([`Log::truncate_fully_and_start_at`]) deleted them.
    fn drop_below(&mut self, dir: &Path, offset: u64) {
        for &base in self.logs.iter().filter(|&&b| b < offset) {
            self.leftovers
                .push(segment::segment_file(dir, base, LOG_SUFFIX));
        }
        self.logs.retain(|&b| b >= offset);
        for &base in self.swaps.iter().filter(|&&b| b < offset) {
            self.leftovers
                .push(segment::staged_file(dir, base, LOG_SUFFIX, SWAP_SUFFIX));
        }
        self.swaps.retain(|&b| b >= offset);
        let (below, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.index_files)
            .into_iter()
            .partition(|(base, _)| *base < offset);
        self.leftovers
            .extend(below.into_iter().map(|(_, path)| path));
        self.index_files = kept;
    }
}

/// Sorts the directory's files. Reads only.
fn list(storage: &dyn Storage, dir: &Path) -> Result<Listing> {
    let stage = |name: &str, stage: &str| {
        name.strip_suffix(stage)
            .and_then(|n| n.strip_suffix('.'))
            .map(str::to_owned)
    };
    let mut listing = Listing::default();
    for path in storage.list_dir(dir)? {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if name.ends_with(DELETED_SUFFIX)
            || name.ends_with(TRUNCATING_SUFFIX)
            || spare::is_spare_file(&name)
            || stage(&name, CLEANED_SUFFIX).is_some()
        {
            listing.leftovers.push(path);
        } else if let Some(plain) = stage(&name, SWAP_SUFFIX) {
            match segment::parse_segment_file(Path::new(&plain), LOG_SUFFIX) {
                Some(base) => listing.swaps.push(base),
                None => listing.index_swaps.push(path),
            }
        } else if let Some(base) = segment::parse_segment_file(&path, LOG_SUFFIX) {
            listing.logs.push(base);
        } else if let Some(offset) = segment::parse_segment_file(&path, snapshot::SNAPSHOT_SUFFIX) {
            listing.snapshots.insert(offset);
        } else if let Some(base) = segment::parse_segment_file(&path, INDEX_SUFFIX)
            .or_else(|| segment::parse_segment_file(&path, TIME_INDEX_SUFFIX))
            .or_else(|| segment::parse_segment_file(&path, TXN_INDEX_SUFFIX))
        {
            listing.index_files.push((base, path));
        }
    }
    listing.logs.sort_unstable();
    listing.swaps.sort_unstable();
    Ok(listing)
}

/// A cleaned segment (`{base}.log.swap`) that replaces the segments whose
/// base offsets lie in `[base, end)`.
#[derive(Debug, Clone, Copy)]
struct SwapPlan {
    base: u64,
    end: u64,
}

/// A segment as recovery judges it: its base offset and whether its log
/// file is still a `.swap` file.
#[derive(Debug, Clone, Copy)]
struct Found {
    base: u64,
    swap: bool,
}

/// What phase 1 decided for one segment that stays.
#[derive(Debug)]
struct Planned {
    base: u64,
    kind: Judged,
}

#[derive(Debug, Clone, Copy)]
enum Judged {
    /// Its indexes passed their checks; use the counters derived from them.
    Trusted(Counters),
    /// It was scanned (or is cut); rebuild its indexes over the first
    /// `valid_bytes` and cut what follows them. Every batch from
    /// `checked_from` to `valid_bytes` had its CRC and structure checked
    /// by the scan (`valid_bytes` when the scan is not known to have
    /// checked any: a cut segment).
    Scanned {
        valid_bytes: u64,
        next_offset: u64,
        checked_from: u64,
    },
}

impl Planned {
    fn next_offset(&self) -> u64 {
        match self.kind {
            Judged::Trusted(counters) => counters.next_offset,
            Judged::Scanned { next_offset, .. } => next_offset,
        }
    }
}

/// The cut phase 1 decided on.
#[derive(Debug)]
struct Cut {
    /// The later segments to remove.
    removed: Vec<Found>,
    report: TruncatedTail,
}

/// Everything phase 1 decided.
#[derive(Debug, Default)]
struct RecoveryPlan {
    /// The segments that stay, in order; the cut one (if any) last.
    segments: Vec<Planned>,
    swaps: Vec<SwapPlan>,
    cut: Option<Cut>,
    /// Empty last segments of a compacted log to remove, newest first.
    dropped_empty: Vec<u64>,
    /// Bytes checked batch by batch ([`RecoveryReport::bytes_scanned`]).
    bytes_scanned: u64,
}

/// Phase 1 of recovery: plans the interrupted swaps, then judges every
/// segment in offset order (trusted or scanned), finds the first damage and
/// decides what it means. Reads only.
fn plan_recovery(
    storage: &dyn Storage,
    dir: &Path,
    listing: &Listing,
    (recovery_point, log_start_offset): (u64, u64),
    limits: SegmentLimits,
    segment_bytes: u64,
) -> Result<RecoveryPlan> {
    let mut plan = RecoveryPlan::default();
    // A `.swap` file is a cleaned segment the cleaner fsynced before it
    // renamed it, so damage in it is never a power loss's doing: refused.
    for &base in &listing.swaps {
        let path = segment::staged_file(dir, base, LOG_SUFFIX, SWAP_SUFFIX);
        let probe =
            SegmentProbe::open(storage, path, base, OffsetOrder::Increasing, segment_bytes)?;
        let outcome = probe.scan(None, recovery_point);
        if let Some(damage) = outcome.damage {
            return Err(Error::corrupt(probe.path(), damage.position, damage.cause));
        }
        plan.swaps.push(SwapPlan {
            base,
            end: outcome.next_offset.max(base + 1),
        });
    }
    let mut found: Vec<Found> = listing
        .logs
        .iter()
        .filter(|&&base| !plan.swaps.iter().any(|s| base >= s.base && base < s.end))
        .map(|&base| Found { base, swap: false })
        .chain(plan.swaps.iter().map(|s| Found {
            base: s.base,
            swap: true,
        }))
        .collect();
    found.sort_unstable_by_key(|f| f.base);

    let mut judge = Judge {
        storage,
        dir,
        recovery_point,
        limits,
        segment_bytes,
        found: &found,
        probes: Vec::with_capacity(found.len()),
        tails: Vec::with_capacity(found.len()),
        bytes_scanned: Cell::new(0),
    };
    for (i, seg) in found.iter().enumerate() {
        let probe = judge.probe(*seg)?;
        if !plan.segments.is_empty()
            && let Some(cut) = judge.boundary(&mut plan.segments, i, &probe)?
        {
            plan.cut = Some(cut);
            break;
        }
        let below = found
            .get(i + 1)
            .is_some_and(|next| next.base <= recovery_point);
        let is_last = i + 1 == found.len();
        let trusted = if !seg.swap && (below || is_last) {
            probe
                .trusted(storage, dir, limits.index_bytes)?
                .filter(|c| below || c.next_offset <= recovery_point)
        } else {
            None
        };
        let (kind, tail) = match trusted {
            Some(counters) => (Judged::Trusted(counters), None),
            None => match judge.scan(&probe, *seg)? {
                Ok(outcome) => outcome,
                Err(damage) => {
                    plan.cut = Some(judge.cut(&probe, *seg, i, damage)?);
                    plan.segments.push(Planned {
                        base: seg.base,
                        kind: Judged::Scanned {
                            valid_bytes: plan.cut.as_ref().map_or(0, |c| c.report.position),
                            next_offset: plan
                                .cut
                                .as_ref()
                                .map_or(0, |c| c.report.first_lost_offset),
                            // Nothing counts as checked: only appends after
                            // the cut are.
                            checked_from: plan.cut.as_ref().map_or(0, |c| c.report.position),
                        },
                    });
                    break;
                }
            },
        };
        plan.segments.push(Planned {
            base: seg.base,
            kind,
        });
        judge.probes.push(probe);
        judge.tails.push(tail);
    }

    // The same when the cut is what left the last segment empty: the log
    // ends where the segment before it ends, not at the empty segment's
    // base offset. Else the log end would claim offsets no batch holds,
    // and once appends there were lost, a later open (which drops the
    // empty segment as below) would find the log ending below the
    // recovery point this open let it reach. The cut moves to the end of
    // the previous segment (again, if that one is empty too), the emptied
    // segments join the removed ones. As below, only segments above the
    // recovery point.
    if let Some(cut) = plan.cut.as_mut() {
        while cut.report.position == 0
            && let [.., previous, last] = plan.segments.as_slice()
            && last.base > previous.next_offset()
            && last.base > recovery_point
            && let Some(previous_probe) = judge.probes.get(plan.segments.len() - 2)
            && let Some(&emptied) = found.iter().find(|f| f.base == last.base && !f.swap)
        {
            let end = previous.next_offset();
            let valid = match previous.kind {
                Judged::Trusted(_) => previous_probe.len(),
                Judged::Scanned { valid_bytes, .. } => valid_bytes,
            };
            let report = &mut cut.report;
            report.removed_segments.insert(0, report.path.clone());
            report.removed_bytes += report.bytes;
            report.path = previous_probe.path().to_path_buf();
            report.position = valid;
            report.bytes = 0;
            report.first_lost_offset = end;
            cut.removed.insert(0, emptied);
            plan.segments.pop();
        }
    }

    // In a compacted log segments may leave gaps, so an empty last segment
    // above the end of the one before it (a roll just before a power loss
    // that took the previous segment's unflushed end) is no damage; it is
    // removed, so offsets below the log end stay accounted for. So is the
    // one before it, if it is empty and above its predecessor's end too
    // (two rolls, both segments' content lost). Not one at or below the
    // recovery point: the log durably ended there (a truncation or a
    // cleaning pass can leave an empty active segment above the last
    // batch), and dropping it would end the log below the recovery point.
    while plan.cut.is_none()
        && let [.., previous, last] = plan.segments.as_slice()
        && last.next_offset() == last.base
        && last.base > previous.next_offset()
        && last.base > recovery_point
        && judge
            .probes
            .get(plan.segments.len() - 1)
            .is_some_and(|p| p.len() == 0)
    {
        plan.dropped_empty.push(last.base);
        plan.segments.pop();
    }

    // Flushed data that is missing: the log ends below its recovery point.
    let log_end = plan
        .segments
        .last()
        .map_or(log_start_offset, Planned::next_offset);
    if plan.cut.is_none() && log_end < recovery_point {
        let last = plan.segments.len().checked_sub(1);
        let (path, position) = match (plan.segments.last(), last.and_then(|i| judge.probes.get(i)))
        {
            (Some(last), Some(probe)) => (
                probe.path().to_path_buf(),
                match last.kind {
                    Judged::Trusted(_) => probe.len(),
                    Judged::Scanned { valid_bytes, .. } => valid_bytes,
                },
            ),
            _ => (dir.to_path_buf(), 0),
        };
        return Err(Error::corrupt(
            path,
            position,
            CorruptionKind::RecoveryPointBeyondEnd {
                recovery_point,
                log_end,
            },
        ));
    }
    plan.bytes_scanned = judge.bytes_scanned.get();
    Ok(plan)
}

/// The state phase 1 judges segments with.
struct Judge<'a> {
    storage: &'a dyn Storage,
    dir: &'a Path,
    recovery_point: u64,
    limits: SegmentLimits,
    segment_bytes: u64,
    /// Every segment found, in offset order.
    found: &'a [Found],
    /// The probes of the segments judged so far, in order.
    probes: Vec<SegmentProbe>,
    /// The last valid batch of each segment judged so far, when scanned.
    tails: Vec<Option<Tail>>,
    /// Bytes checked batch by batch so far.
    bytes_scanned: Cell<u64>,
}

/// What [`Judge::scan`] decides for a segment: whole (`Ok`, with its last
/// batch), or damaged.
type ScanJudgement = std::result::Result<(Judged, Option<Tail>), Damage>;

impl Judge<'_> {
    fn log_path(&self, seg: Found) -> PathBuf {
        if seg.swap {
            segment::staged_file(self.dir, seg.base, LOG_SUFFIX, SWAP_SUFFIX)
        } else {
            segment::segment_file(self.dir, seg.base, LOG_SUFFIX)
        }
    }

    fn order(&self, seg: Found) -> OffsetOrder {
        // The cleaner writes `.swap` files of compacted logs only.
        if seg.swap {
            OffsetOrder::Increasing
        } else {
            self.limits.order
        }
    }

    fn probe(&self, seg: Found) -> Result<SegmentProbe> {
        SegmentProbe::open(
            self.storage,
            self.log_path(seg),
            seg.base,
            self.order(seg),
            self.segment_bytes,
        )
    }

    /// Scans a segment: `Ok((kind, tail))` when it is whole, `Err(damage)`
    /// at its first damage.
    fn scan(&self, probe: &SegmentProbe, seg: Found) -> Result<ScanJudgement> {
        if let Some(judged) = self.scan_past_recovery_point(probe, seg)? {
            return Ok(judged);
        }
        self.bytes_scanned
            .set(self.bytes_scanned.get() + probe.len());
        let index = if self.order(seg) == OffsetOrder::Increasing {
            let suffix_path = if seg.swap {
                segment::staged_file(self.dir, seg.base, INDEX_SUFFIX, SWAP_SUFFIX)
            } else {
                segment::segment_file(self.dir, seg.base, INDEX_SUFFIX)
            };
            probe.offset_index(self.storage, &suffix_path, self.limits.index_bytes)?
        } else {
            None
        };
        let outcome = probe.scan(index.as_ref(), self.recovery_point);
        Ok(match outcome.damage {
            Some(damage) => Err(damage),
            None => Ok((
                Judged::Scanned {
                    valid_bytes: outcome.valid_bytes,
                    next_offset: outcome.next_offset,
                    // The whole file, every batch's CRC.
                    checked_from: 0,
                },
                outcome.tail,
            )),
        })
    }

    /// Scans a segment from the batch its offset index places last below
    /// the recovery point, as [`SegmentProbe::scan`] would (the same checks,
    /// the same damage), when it can: the log's batches follow each other
    /// exactly (not compacted, not a `.swap` file), the index file is clean
    /// and holds an entry below the recovery point, and the batches before
    /// that entry's batch chain up to it (headers only: offsets that follow
    /// each other from the segment's base offset, lengths that fit the
    /// file, no CRC) and it passes every check and ends at the entry's
    /// offset. Those batches were fsynced (they lie below the recovery
    /// point), and are trusted as the index is, as they would be in a
    /// segment wholly below the recovery point. `None` when it cannot:
    /// then the whole segment is scanned, which also locates damage before
    /// the entry exactly.
    ///
    /// # Errors
    /// [`Error::Io`] reading the index or mapping the log.
    fn scan_past_recovery_point(
        &self,
        probe: &SegmentProbe,
        seg: Found,
    ) -> Result<Option<ScanJudgement>> {
        let order = self.order(seg);
        if seg.swap || order != OffsetOrder::Contiguous || self.recovery_point <= seg.base {
            return Ok(None);
        }
        // Only the segment holding the recovery point: one wholly below it
        // is scanned because its indexes failed their checks, and then
        // nothing vouches for its batches but a whole scan.
        let wholly_below = self
            .found
            .iter()
            .find(|f| f.base > seg.base)
            .is_some_and(|next| next.base <= self.recovery_point);
        if wholly_below {
            return Ok(None);
        }
        let index_path = segment::segment_file(self.dir, seg.base, INDEX_SUFFIX);
        let Some((entry_offset, entry_position)) = probe
            .offset_index(self.storage, &index_path, self.limits.index_bytes)?
            .and_then(|entries| entries.floor(self.recovery_point - 1))
        else {
            return Ok(None);
        };
        let anchor = u64::from(entry_position);
        let len = probe.len();
        if anchor >= len || anchor > MAX_BATCH_POSITION {
            return Ok(None);
        }
        let file = self.storage.open(probe.path(), OpenMode::Existing)?;
        let map = file.map(usize::try_from(len).unwrap_or(usize::MAX))?;
        let bytes = map.as_slice();
        if bytes.len() as u64 != len {
            return Ok(None);
        }
        let in_range = |base: u64, last: u64| {
            if base >= seg.base && last - seg.base <= u64::from(u32::MAX) {
                Ok(())
            } else {
                Err(CorruptionKind::OffsetOutsideSegment {
                    offset: i64::try_from(if base < seg.base { base } else { last })
                        .unwrap_or(i64::MAX),
                    segment_base: seg.base,
                })
            }
        };
        // The prefix: headers only, chained from the base offset.
        let mut position = 0u64;
        let mut expected = seg.base;
        while position < anchor {
            let rest = &bytes[to_index(position)..];
            let Ok(header) = BatchHeader::parse(rest) else {
                return Ok(None);
            };
            let size = header.total_size() as u64;
            let Ok((base, last)) = order.check(expected, &header) else {
                return Ok(None);
            };
            if size > rest.len() as u64 || in_range(base, last).is_err() {
                return Ok(None);
            }
            position += size;
            expected = last + 1;
        }
        if position != anchor {
            return Ok(None);
        }
        // From the entry's batch on: every check of a full scan.
        let check = |position: u64, expected: u64| {
            if position > MAX_BATCH_POSITION {
                return Err(CorruptionKind::PositionOutOfRange {
                    limit: MAX_BATCH_POSITION,
                });
            }
            let header =
                format::check_batch(&bytes[to_index(position)..]).map_err(CorruptionKind::Batch)?;
            let (base, last) = order
                .check(expected, &header)
                .map_err(CorruptionKind::Batch)?;
            in_range(base, last)?;
            Ok((header.total_size() as u64, base, last))
        };
        let mut tail = None;
        let mut damage = None;
        while position < len {
            match check(position, expected) {
                Ok((_, _, last)) if position == anchor && last != entry_offset => {
                    return Ok(None);
                }
                Ok((size, base, last)) => {
                    tail = Some(Tail {
                        position,
                        base,
                        last,
                        floor: expected,
                        confirmed: false,
                    });
                    position += size;
                    expected = last + 1;
                }
                Err(_) if position == anchor => return Ok(None),
                Err(cause) => {
                    damage = Some(cause);
                    break;
                }
            }
        }
        self.bytes_scanned
            .set(self.bytes_scanned.get() + (len - anchor));
        Ok(Some(match damage {
            // As `SegmentProbe::scan` reports it: what follows is looked
            // for from the next byte on.
            Some(cause) => {
                let valid_after = probe.find_continuation(position + 1, expected);
                Err(Damage {
                    position,
                    offset: expected,
                    cause,
                    valid_after,
                    claimed_end: valid_after.and_then(|at| probe.claimed_end(at, expected)),
                })
            }
            None => Ok((
                Judged::Scanned {
                    valid_bytes: position,
                    next_offset: expected,
                    // The batches before the anchor were walked by their
                    // headers only.
                    checked_from: anchor,
                },
                tail,
            )),
        }))
    }

    /// Decides what `damage` in segment `index` (`probe`) means: an error
    /// when it lies below the recovery point (or in a `.swap` file), else
    /// the cut to make there.
    fn cut(&self, probe: &SegmentProbe, seg: Found, index: usize, damage: Damage) -> Result<Cut> {
        if seg.swap {
            return Err(Error::corrupt(probe.path(), damage.position, damage.cause));
        }
        if damage.offset < self.recovery_point {
            return Err(Error::corrupt(
                probe.path(),
                damage.position,
                CorruptionKind::BelowRecoveryPoint {
                    offset: damage.offset,
                    recovery_point: self.recovery_point,
                    cause: Box::new(damage.cause),
                    next_valid: damage.valid_after,
                },
            ));
        }
        let removed: Vec<Found> = self.found[index + 1..].to_vec();
        let mut removed_segments = Vec::with_capacity(removed.len());
        let mut removed_bytes = 0;
        let mut lost_end = damage.claimed_end;
        for (k, later) in removed.iter().enumerate() {
            let later_probe = self.probe(*later)?;
            removed_bytes += later_probe.len();
            removed_segments.push(segment::segment_file(self.dir, later.base, LOG_SUFFIX));
            if k + 1 == removed.len() {
                // How far the removed data reached, for the report: the last
                // segment's valid batches, or at least its base offset.
                let end = later_probe.claimed_end(0, later.base).unwrap_or(later.base);
                lost_end = Some(lost_end.map_or(end, |e| e.max(end)));
            }
        }
        Ok(Cut {
            removed,
            report: TruncatedTail {
                path: segment::segment_file(self.dir, seg.base, LOG_SUFFIX),
                position: damage.position,
                bytes: probe.len() - damage.position,
                first_lost_offset: damage.offset,
                lost_end_offset: lost_end.filter(|&end| end > damage.offset),
                recovery_point: self.recovery_point,
                cause: damage.cause,
                valid_after: damage.valid_after,
                removed_segments,
                removed_bytes,
            },
        })
    }

    /// Checks that segment `index` (`probe`) starts where the previous one
    /// (the last of `planned`) ends at `end`: exactly, unless the log is
    /// compacted, where it may start later. When it does not, the damage
    /// lies at the end of the previous segment, and this returns the cut
    /// (changing the previous segment's plan to a cut one), or the error.
    fn boundary(
        &mut self,
        planned: &mut [Planned],
        index: usize,
        probe: &SegmentProbe,
    ) -> Result<Option<Cut>> {
        let base = probe.base_offset();
        let end = planned[index - 1].next_offset();
        let gap = base > end && self.limits.order == OffsetOrder::Contiguous;
        if base >= end && !gap {
            return Ok(None);
        }
        let k = index - 1;
        let previous = self.found[k];
        // A previous segment trusted on its indexes is rescanned: the cut
        // may have to land inside it, and its whole content must be known.
        if let Judged::Trusted(_) = planned[k].kind {
            match self.scan(&self.probes[k], previous)? {
                Ok((kind, tail)) => {
                    planned[k].kind = kind;
                    self.tails[k] = tail;
                }
                Err(damage) => {
                    let cut = self.cut(&self.probes[k], previous, k, damage)?;
                    set_cut(&mut planned[k], &cut);
                    return Ok(Some(cut));
                }
            }
        }
        let Judged::Scanned { valid_bytes, .. } = planned[k].kind else {
            unreachable!("rescanned above")
        };
        let end = planned[k].next_offset();
        let damage = if gap {
            Damage {
                position: valid_bytes,
                offset: end,
                cause: CorruptionKind::MissingSegment {
                    expected: end,
                    next_base: base,
                },
                valid_after: None,
                claimed_end: None,
            }
        } else {
            // Two segments claim the same offsets. In a compacted log the
            // previous segment's last batch may have had its base offset
            // raised by damage (file names are not): it is the suspect,
            // unless an index entry confirms it.
            let suspect = self.tails[k]
                .filter(|t| !t.confirmed && self.limits.order == OffsetOrder::Increasing)
                .map(|tail| {
                    let cause = CorruptionKind::Batch(out_of_sequence(
                        tail.base,
                        tail.last,
                        base,
                        "the next segment starts at that offset, at or below this batch's last one; recovery \
                         stops before this batch",
                    ));
                    (tail, cause)
                });
            let overlap = CorruptionKind::OffsetsNotIncreasing {
                previous_last: i64::try_from(end - 1).unwrap_or(i64::MAX),
                base: i64::try_from(base).unwrap_or(i64::MAX),
            };
            match suspect {
                // Above the recovery point: cut before the suspect batch.
                Some((tail, cause)) if tail.floor >= self.recovery_point => Damage {
                    position: tail.position,
                    offset: tail.floor,
                    cause,
                    valid_after: None,
                    claimed_end: None,
                },
                // The lower of the two claims lies below the recovery
                // point: flushed data is involved, refused.
                _ if base < self.recovery_point => {
                    let (position, offset, cause) = match suspect {
                        Some((tail, cause)) => (tail.position, tail.floor, cause),
                        None => (valid_bytes, base, overlap),
                    };
                    return Err(Error::corrupt(
                        self.probes[k].path(),
                        position,
                        CorruptionKind::BelowRecoveryPoint {
                            offset,
                            recovery_point: self.recovery_point,
                            cause: Box::new(cause),
                            next_valid: None,
                        },
                    ));
                }
                // The later segment lies at or above it: a power loss may
                // have brought back a segment a truncation removed. Cut it
                // and everything after it.
                _ => Damage {
                    position: valid_bytes,
                    offset: end,
                    cause: overlap,
                    valid_after: None,
                    claimed_end: None,
                },
            }
        };
        let cut = self.cut(&self.probes[k], previous, k, damage)?;
        set_cut(&mut planned[k], &cut);
        Ok(Some(cut))
    }
}

/// Marks a planned segment as the one a cut shortens.
fn set_cut(planned: &mut Planned, cut: &Cut) {
    planned.kind = Judged::Scanned {
        valid_bytes: cut.report.position,
        next_offset: cut.report.first_lost_offset,
        checked_from: cut.report.position,
    };
}

/// Completes what an interrupted cleaning pass left, as Kafka's `LogLoader`
/// does (phase 1 judged the `.swap` files and listed the `.cleaned` ones,
/// which go with the leftovers, so the old segments stay): each
/// `{base}.log.swap` (a complete, fsynced cleaned segment) replaces every
/// segment whose base offset lies in `[base, end)` (the cleaner keeps each
/// group's end, so these are exactly the segments it was cleaned from), and
/// is renamed to `{base}.log`. Index `.swap` files follow their log file;
/// orphaned ones are removed (recovery rebuilds indexes). Returns whether
/// any file changed.
fn finish_swaps(
    storage: &dyn Storage,
    dir: &Path,
    listing: &Listing,
    plan: &RecoveryPlan,
    report: &mut RecoveryReport,
) -> Result<bool> {
    let mut changed = false;
    for swap in &plan.swaps {
        // The replaced segments' files, and an index left behind by one
        // whose log was already renamed `.deleted`.
        let replaced = listing
            .logs
            .iter()
            .filter(|&&b| b >= swap.base && b < swap.end)
            .map(|&b| segment::segment_file(dir, b, LOG_SUFFIX))
            .chain(
                listing
                    .index_files
                    .iter()
                    .filter(|(b, _)| *b >= swap.base && *b < swap.end)
                    .map(|(_, path)| path.clone()),
            );
        for path in replaced {
            if storage.exists(&path) {
                storage.remove_file(&path)?;
                report.removed_files += 1;
            }
        }
        // The log first: once it has its plain name the swap is done.
        storage.rename(
            &segment::staged_file(dir, swap.base, LOG_SUFFIX, SWAP_SUFFIX),
            &segment::segment_file(dir, swap.base, LOG_SUFFIX),
        )?;
        for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX] {
            let staged = segment::staged_file(dir, swap.base, suffix, SWAP_SUFFIX);
            if storage.exists(&staged) {
                storage.rename(&staged, &segment::segment_file(dir, swap.base, suffix))?;
            }
        }
        report.swaps_completed += 1;
        changed = true;
    }
    // Index swaps whose log was renamed already (or never staged). A
    // `.txnindex` leaves its stage last (see `Segment::rename_stage`): one
    // whose log already has its plain name (and no `.cleaned` copy is
    // left) belongs to the swapped segment, and nothing rebuilds it, so it
    // takes its place.
    for path in &listing.index_swaps {
        let txn_base = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(SWAP_SUFFIX))
            .and_then(|n| n.strip_suffix('.'))
            .and_then(|plain| segment::parse_segment_file(Path::new(plain), TXN_INDEX_SUFFIX));
        if let Some(base) = txn_base
            && storage.exists(&segment::segment_file(dir, base, LOG_SUFFIX))
            && !storage.exists(&segment::staged_file(dir, base, LOG_SUFFIX, CLEANED_SUFFIX))
            && storage.exists(path)
        {
            storage.rename(path, &segment::segment_file(dir, base, TXN_INDEX_SUFFIX))?;
            changed = true;
            continue;
        }
        if storage.exists(path) {
            storage.remove_file(path)?;
            report.removed_files += 1;
            changed = true;
        }
    }
    Ok(changed)
}

/// `position` (below the length of a mapped file) as an index into it.
fn to_index(position: u64) -> usize {
    usize::try_from(position).unwrap_or(usize::MAX)
}
