//! Opening a log: listing its segments and recovering them.
//!
//! Segments wholly below the recovery point were flushed; their indexes are
//! trusted after cheap consistency checks (and rebuilt if those fail). Every
//! other segment is scanned batch by batch with CRC checks and its indexes
//! rebuilt. Damage at the end of the last segment with nothing valid after
//! it is a torn write: it is cut and reported in [`RecoveryReport`]. Damage
//! followed by valid data, or in any segment but the last, is interior
//! corruption: the open fails with [`Error::Corrupt`] and nothing is cut.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use parking_lot::{Mutex, RwLock};

use crate::error::{CorruptionKind, Error, FormatError, Result};
use crate::log::durability::Durability;
use crate::log::{Log, LogBuilder, LogInner, LogState, worker};
use crate::storage::segment::{
    self, DELETED_SUFFIX, INDEX_SUFFIX, LOG_SUFFIX, ScanOutcome, Segment, TIME_INDEX_SUFFIX,
    TRUNCATING_SUFFIX,
};

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
    /// files).
    pub removed_files: usize,
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
    } = builder;
    storage.create_dir_all(&dir)?;
    let lock = storage.lock_dir(&dir)?;
    let mut report = RecoveryReport::default();

    // Sort the directory: segment logs, and leftovers to remove.
    let mut bases = Vec::new();
    let mut indexes = Vec::new();
    for path in storage.list_dir(&dir)? {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.ends_with(DELETED_SUFFIX) || name.ends_with(TRUNCATING_SUFFIX) {
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
    let mut segments: Vec<Segment> = Vec::with_capacity(bases.len().max(1));
    let mut scanned_any = false;
    for (i, &base) in bases.iter().enumerate() {
        let is_last = i + 1 == bases.len();
        let mut seg = Segment::open(&storage, &dir, base, limits)?;
        if let Some(previous) = segments.last()
            && base < previous.next_offset()
        {
            return Err(Error::corrupt(
                seg.log_path(),
                0,
                CorruptionKind::OffsetsNotIncreasing {
                    previous_last: previous.next_offset() as i64 - 1,
                    base: base as i64,
                },
            ));
        }
        let below_recovery_point = bases.get(i + 1).is_some_and(|&next| next <= recovery_point);
        let outcome = if below_recovery_point || is_last {
            // The last segment is trusted only if it ends below the recovery
            // point; otherwise it is scanned.
            match seg.load_clean()? {
                None if below_recovery_point || seg.next_offset() <= recovery_point => None,
                None => Some(seg.rebuild()?),
                some => some,
            }
        } else {
            Some(seg.rebuild()?)
        };
        if let Some(outcome) = outcome {
            report.segments_scanned += 1;
            report.indexes_rebuilt += 1;
            scanned_any = true;
            judge(&mut seg, outcome, is_last, &mut report)?;
            if !is_last {
                seg.seal()?;
            }
        }
        segments.push(seg);
    }
    if segments.is_empty() {
        segments.push(Segment::create(&storage, &dir, log_start_offset, limits)?);
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

    let (jobs, job_rx) = crossbeam_channel::bounded(worker::QUEUE_CAPACITY);
    let inner = Arc::new(LogInner {
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
        }),
        fenced: AtomicBool::new(false),
        durability: Durability::new(durable, log_end_offset),
        recovery: report,
        jobs,
        _lock: lock,
    });
    let worker = worker::Worker::spawn(&inner, job_rx)?;
    Ok(Log {
        inner,
        worker: Mutex::new(Some(worker)),
    })
}

/// Decides what a scan's outcome means: clean, a torn tail to cut, or
/// interior corruption.
fn judge(
    seg: &mut Segment,
    outcome: ScanOutcome,
    is_last: bool,
    report: &mut RecoveryReport,
) -> Result<()> {
    let Some(cause) = outcome.stopped else {
        return Ok(());
    };
    let path = seg.log_path();
    if let Some(next_valid) = outcome.valid_after_damage {
        return Err(Error::corrupt(
            path,
            outcome.valid_bytes,
            CorruptionKind::Interior { next_valid, cause },
        ));
    }
    if !is_last {
        return Err(Error::corrupt(
            path,
            outcome.valid_bytes,
            CorruptionKind::Batch(cause),
        ));
    }
    let file_len = seg.file().len()?;
    seg.truncate_bytes(outcome.valid_bytes)?;
    report.truncated = Some(TruncatedTail {
        path,
        position: outcome.valid_bytes,
        bytes: file_len - outcome.valid_bytes,
        cause,
    });
    Ok(())
}
