//! Opening a log: listing its segments and recovering them.
//!
//! Segments wholly below the recovery point were flushed; their indexes are
//! trusted after cheap consistency checks (and rebuilt if those fail). Every
//! other segment is scanned batch by batch with CRC checks and its indexes
//! rebuilt. Damage at the end of the last segment with nothing valid after
//! it is a torn write: it is cut and reported in [`RecoveryReport`]. Damage
//! followed by valid data, or in any segment but the last, is interior
//! corruption: the open fails with [`Error::Corrupt`] and nothing is cut.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use parking_lot::{Mutex, RwLock};

use crate::error::{CorruptionKind, Error, FormatError, Result};
use crate::log::durability::Durability;
use crate::log::{Log, LogBuilder, LogInner, LogScheduler, LogState, fence};
use crate::storage::probe::{Counters, ScanOutcome, SegmentProbe};
use crate::storage::segment::{
    self, CLEANED_SUFFIX, DELETED_SUFFIX, INDEX_SUFFIX, LOG_SUFFIX, SWAP_SUFFIX, Segment,
    TIME_INDEX_SUFFIX, TRUNCATING_SUFFIX,
};
use crate::storage::{Storage, spare};

/// What recovery did when the log was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments scanned batch by batch (at or after the recovery point, or
    /// whose indexes failed their checks).
    pub segments_scanned: usize,
    /// Segments whose indexes were rebuilt.
    pub indexes_rebuilt: usize,
    /// The torn tail cut from the last segment, if there was one.
    pub truncated: Option<TruncatedTail>,
    /// Leftover files removed (`.deleted`, temporary and orphaned index
    /// files, a cleaner's unfinished `.cleaned` files, segments a completed
    /// swap replaced).
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
}

/// A torn tail cut by recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruncatedTail {
    /// The segment's log file.
    pub path: PathBuf,
    /// Where the valid data ended (the new file length).
    pub position: u64,
    /// How many bytes were cut.
    pub bytes: u64,
    /// Why the first cut batch was rejected.
    pub cause: FormatError,
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
    } = builder;
    storage.create_dir_all(&dir)?;
    let lock = storage.lock_dir(&dir)?;
    // Read before recovery changes any file: a damaged marker refuses the open.
    let fenced = fence::pending(storage.as_ref(), &dir)?;
    let mut report = RecoveryReport::default();
    finish_swaps(storage.as_ref(), &dir, &mut report)?;

    // Sort the directory: segment logs, and leftovers to remove.
    let mut bases = Vec::new();
    let mut indexes = Vec::new();
    for path in storage.list_dir(&dir)? {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.ends_with(DELETED_SUFFIX)
            || name.ends_with(TRUNCATING_SUFFIX)
            || spare::is_spare_file(name)
        {
            storage.remove_file(&path)?;
            report.removed_files += 1;
        } else if let Some(base) = segment::parse_segment_file(&path, LOG_SUFFIX) {
            bases.push(base);
        } else if segment::parse_segment_file(&path, INDEX_SUFFIX).is_some()
            || segment::parse_segment_file(&path, TIME_INDEX_SUFFIX).is_some()
        {
            indexes.push(path);
        }
    }
    bases.sort_unstable();
    for path in indexes {
        let base = segment::parse_segment_file(&path, INDEX_SUFFIX)
            .or_else(|| segment::parse_segment_file(&path, TIME_INDEX_SUFFIX));
        if base.is_some_and(|b| bases.binary_search(&b).is_err()) {
            storage.remove_file(&path)?;
            report.removed_files += 1;
        }
    }

    let limits = crate::log::LogInner::limits_for(&config);
    // Phase 1: judge every segment without changing any file, so a refused
    // open leaves the directory as it found it.
    let mut plans = plan_recovery(storage.as_ref(), &dir, &bases, recovery_point)?;
    // Phase 2: open for writing, rebuild what was scanned, cut a torn tail.
    report.removed_files += drop_empty_trailing_segment(storage.as_ref(), &dir, &mut plans)?;
    let mut segments: Vec<Segment> = Vec::with_capacity(plans.len().max(1));
    let mut scanned_any = false;
    let count = plans.len();
    for (i, plan) in plans.into_iter().enumerate() {
        let is_last = i + 1 == count;
        match plan {
            Plan::Trusted { base, counters } => {
                let mut seg = Segment::open(&storage, &dir, base, limits, !is_last)?;
                seg.adopt(counters);
                segments.push(seg);
            }
            Plan::Scanned { base, outcome } => {
                let mut seg = Segment::open(&storage, &dir, base, limits, false)?;
                seg.rebuild_indexes(outcome.valid_bytes)?;
                if let Some(cause) = outcome.stopped {
                    let file_len = seg.file().len()?;
                    seg.truncate_bytes(outcome.valid_bytes)?;
                    report.truncated = Some(TruncatedTail {
                        path: seg.log_path(),
                        position: outcome.valid_bytes,
                        bytes: file_len - outcome.valid_bytes,
                        cause,
                    });
                }
                if !is_last {
                    seg.seal()?;
                }
                report.segments_scanned += 1;
                report.indexes_rebuilt += 1;
                scanned_any = true;
                segments.push(seg);
            }
        }
    }
    if segments.is_empty() {
        segments.push(Segment::create(&storage, &dir, log_start_offset, limits)?);
    }

    // Data recovered from the page cache is made durable before the
    // recovery point may cover it.
    if scanned_any {
        for seg in &mut segments {
            seg.sync()?;
        }
        storage.sync_dir(&dir)?;
    }
    let now = clock.now_ms();
    if let Some(active) = segments.last_mut() {
        active.set_created_ms(now);
    }

    // Data recovered from the page cache is made durable before the
    // recovery point may cover it.
    if scanned_any {
        for seg in &mut segments {
            seg.sync()?;
        }
        storage.sync_dir(&dir)?;
    }
    let log_end_offset = segments
        .last()
        .map_or(log_start_offset, Segment::next_offset);
    let first_base = segments[0].base_offset();
    let log_start_offset = log_start_offset.max(first_base).min(log_end_offset);
    let durable = if scanned_any {
        log_end_offset
    } else {
        recovery_point.min(log_end_offset)
    };

    report.fenced_truncation = fence::planned(fenced, log_end_offset);

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
        config,
        state: RwLock::new(LogState {
            segments,
            log_start_offset,
            log_end_offset,
            unflushed: Vec::new(),
            dir_dirty: false,
            spare_ready: false,
            spare_requested: false,
            cleaner_checkpoint: cleaner_checkpoint.min(log_end_offset),
            generation: 0,
        }),
        fenced: AtomicBool::new(false),
        durability: Durability::new(durable, log_end_offset),
        recovery: report,
        cleaner: Mutex::new(()),
        background: scheduler.register(weak.clone()),
        _lock: lock,
    });
    // The first deadlines count from the open.
    inner.background.start_timers(
        inner.flush_interval_ms(),
        inner.config.retention_check_interval_ms(),
    );
    let log = Log {
        inner,
        private: Mutex::new(private),
    };
    fence::finish(&log, fenced)?;
    Ok(log)
}

/// Finishes or rolls back what an interrupted cleaning pass left, as
/// Kafka's `LogLoader` does: `.cleaned` files (a cleaned segment still
/// being written) are removed, so the old segments stay; a `{base}.log.swap`
/// file (a complete, fsynced cleaned segment) replaces every segment whose
/// base offset lies in `[base, end)`, where `end` is the offset after its
/// last batch (the cleaner keeps each group's end, so these are exactly the
/// segments it was cleaned from), and is renamed to `{base}.log`. Index `.swap` files follow
/// their log file; orphaned ones are removed (recovery rebuilds indexes).
fn finish_swaps(storage: &dyn Storage, dir: &Path, report: &mut RecoveryReport) -> Result<()> {
    let stage = |name: &str, stage: &str| {
        name.strip_suffix(stage)
            .and_then(|n| n.strip_suffix('.'))
            .map(str::to_owned)
    };
    let mut swaps = Vec::new();
    let mut segment_files = Vec::new();
    let mut stray = Vec::new();
    for path in storage.list_dir(dir)? {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if stage(&name, CLEANED_SUFFIX).is_some() {
            storage.remove_file(&path)?;
            report.removed_files += 1;
        } else if let Some(plain) = stage(&name, SWAP_SUFFIX) {
            match segment::parse_segment_file(Path::new(&plain), LOG_SUFFIX) {
                Some(base) => swaps.push(base),
                None => stray.push(path),
            }
        } else if let Some(base) = [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX]
            .iter()
            .find_map(|suffix| segment::parse_segment_file(&path, suffix))
        {
            segment_files.push((base, path));
        }
    }
    swaps.sort_unstable();
    for &base in &swaps {
        let swap_log = segment::staged_file(dir, base, LOG_SUFFIX, SWAP_SUFFIX);
        let end = swap_end(storage, &swap_log, base)?.max(base + 1);
        // The replaced segments' files, and an index left behind by one
        // whose log was already renamed `.deleted`.
        for (_, path) in segment_files.iter().filter(|(b, _)| *b >= base && *b < end) {
            if storage.exists(path) {
                storage.remove_file(path)?;
                report.removed_files += 1;
            }
        }
        // The log first: once it has its plain name the swap is done.
        storage.rename(&swap_log, &segment::segment_file(dir, base, LOG_SUFFIX))?;
        for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            let swap = segment::staged_file(dir, base, suffix, SWAP_SUFFIX);
            if storage.exists(&swap) {
                storage.rename(&swap, &segment::segment_file(dir, base, suffix))?;
            }
        }
        report.swaps_completed += 1;
    }
    // Index swaps whose log was renamed already (or never staged).
    for path in stray {
        if storage.exists(&path) {
            storage.remove_file(&path)?;
            report.removed_files += 1;
        }
    }
    if !swaps.is_empty() || report.removed_files > 0 {
        storage.sync_dir(dir)?;
    }
    Ok(())
}

/// The offset after the last batch of a `.swap` log file (fsynced before it
/// was renamed to `.swap`, so whole); `base` if it holds none.
fn swap_end(storage: &dyn Storage, path: &Path, base: u64) -> Result<u64> {
    let file = storage.open(path, crate::storage::OpenMode::Existing)?;
    let len = usize::try_from(file.len()?).unwrap_or(usize::MAX);
    let map = file.map(len)?;
    let bytes = map.as_slice();
    let mut position = 0;
    let mut end = base;
    while position < bytes.len() {
        let header = crate::format::check_batch(&bytes[position..])
            .map_err(|e| Error::corrupt(path, position as u64, CorruptionKind::Batch(e)))?;
        end = header.last_offset() as u64 + 1;
        position += header.total_size();
    }
    Ok(end)
}

/// Removes an empty last segment that starts above the end of the segment
/// before it. A crash can leave one behind: the roll created it, then the
/// unacknowledged, unsynced tail of the previous segment was lost. Keeping it
/// would leave a gap of offsets that never held data below the log end;
/// without it the previous segment becomes active again and offsets stay
/// dense. Returns the number of files removed.
fn drop_empty_trailing_segment(
    storage: &dyn Storage,
    dir: &Path,
    plans: &mut Vec<Plan>,
) -> Result<usize> {
    let [.., previous, last] = plans.as_slice() else {
        return Ok(0);
    };
    if !(last.is_empty() && last.base() > previous.next_offset()) {
        return Ok(0);
    }
    let base = last.base();
    plans.pop();
    let mut removed = 0;
    for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
        let path = segment::segment_file(dir, base, suffix);
        if storage.exists(&path) {
            storage.remove_file(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// What recovery will do with one segment.
enum Plan {
    /// Its indexes passed their checks; use the counters derived from them.
    Trusted { base: u64, counters: Counters },
    /// It was scanned; rebuild its indexes and cut what follows the valid
    /// batches (a torn tail: `outcome.stopped` is set).
    Scanned { base: u64, outcome: ScanOutcome },
}

impl Plan {
    fn base(&self) -> u64 {
        match self {
            Plan::Trusted { base, .. } | Plan::Scanned { base, .. } => *base,
        }
    }

    fn next_offset(&self) -> u64 {
        match self {
            Plan::Trusted { counters, .. } => counters.next_offset,
            Plan::Scanned { outcome, .. } => outcome.next_offset,
        }
    }

    /// Whether the segment holds no valid batch.
    fn is_empty(&self) -> bool {
        self.next_offset() == self.base()
    }
}

/// Phase 1 of recovery: decides for every segment, in order, whether its
/// indexes can be trusted or it must be scanned, and judges every scan.
/// Reads only.
fn plan_recovery(
    storage: &dyn Storage,
    dir: &Path,
    bases: &[u64],
    recovery_point: u64,
) -> Result<Vec<Plan>> {
    let probes = bases
        .iter()
        .map(|&base| SegmentProbe::open(storage, dir, base))
        .collect::<Result<Vec<_>>>()?;
    // Damage is a torn tail only in the last segment that holds bytes: empty
    // segments after it (a roll just before a crash) hold nothing to tear.
    let last_with_bytes = probes.iter().rposition(|p| p.len() > 0).unwrap_or(0);
    let mut plans = Vec::with_capacity(bases.len());
    let mut previous_next: Option<u64> = None;
    for (i, (&base, probe)) in bases.iter().zip(&probes).enumerate() {
        let is_last = i + 1 == bases.len();
        let tail = i >= last_with_bytes;
        if let Some(next) = previous_next.filter(|&next| base < next) {
            return Err(Error::corrupt(
                probe.path(),
                0,
                CorruptionKind::OffsetsNotIncreasing {
                    previous_last: next as i64 - 1,
                    base: base as i64,
                },
            ));
        }
        // Segments wholly below the recovery point were flushed. The last
        // segment is trusted only if everything in it is below it too.
        let below_recovery_point = bases.get(i + 1).is_some_and(|&next| next <= recovery_point);
        let trusted = if below_recovery_point || is_last {
            probe
                .trusted(storage, dir)?
                .filter(|c| below_recovery_point || c.next_offset <= recovery_point)
        } else {
            None
        };
        let plan = match trusted {
            Some(counters) => Plan::Trusted { base, counters },
            None => {
                let outcome = probe.scan();
                judge(probe, &outcome, tail)?;
                Plan::Scanned { base, outcome }
            }
        };
        previous_next = Some(plan.next_offset());
        plans.push(plan);
    }
    Ok(plans)
}

/// Decides what a scan's outcome means: clean, a torn tail to cut (`Ok`), or
/// interior corruption (`Err`).
fn judge(probe: &SegmentProbe, outcome: &ScanOutcome, is_last: bool) -> Result<()> {
    let Some(cause) = &outcome.stopped else {
        return Ok(());
    };
    if let Some(next_valid) = outcome.valid_after_damage {
        return Err(Error::corrupt(
            probe.path(),
            outcome.valid_bytes,
            CorruptionKind::Interior {
                next_valid,
                cause: cause.clone(),
            },
        ));
    }
    if !is_last {
        return Err(Error::corrupt(
            probe.path(),
            outcome.valid_bytes,
            CorruptionKind::Batch(cause.clone()),
        ));
    }
    debug_assert!(outcome.valid_bytes < probe.len());
    Ok(())
}
