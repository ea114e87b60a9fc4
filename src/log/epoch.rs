//! Leader epochs (KIP-101, KIP-279): which leader epoch wrote which offsets,
//! kept as Kafka's `LeaderEpochFileCache` keeps it, and its
//! `leader-epoch-checkpoint` file in the partition directory.
//!
//! The cache is a list of (epoch, start offset) entries, both strictly
//! increasing: epoch `e` wrote the offsets from its start offset up to the
//! next entry's start offset (or the log end). A follower asks its leader
//! for the end offset of its own latest epoch ([`LeaderEpochCache::end_offset_for`])
//! and truncates to it, rather than to a high watermark that may be stale.
//!
//! The file is Kafka's text layout: a version line (`0`), a count line, then
//! one `epoch start_offset` line per entry, oldest first, replaced
//! atomically (temporary file, fsync, rename, directory fsync) through the
//! shared checkpoint machinery in `checkpoint.rs`.
//!
//! A new epoch changes the cache at once and the file with the next flush
//! of the log, before the recovery point passes the new entry's start (as
//! Kafka does since KAFKA-15046: the fsync is off the append path, where a
//! new leader's first append would otherwise wait for it). After a crash,
//! [`load`] assigns the epochs of the batches past the recovery point, as
//! Kafka's segment recovery does.

use std::path::{Path, PathBuf};

use crate::error::{CorruptionKind, Error, Result};
use crate::log::checkpoint::{CheckpointFile, parse_offset};
use crate::storage::Storage;
use crate::storage::segment::Segment;

/// Name of the leader epoch file in a partition directory (Kafka's).
pub(crate) const LEADER_EPOCH_CHECKPOINT: &str = "leader-epoch-checkpoint";

/// Kafka's `UNDEFINED_EPOCH`: no epoch (a request without one, or an answer
/// that knows none).
pub(crate) const UNDEFINED_EPOCH: i32 = -1;

/// Kafka's `UNDEFINED_EPOCH_OFFSET`: no end offset.
pub(crate) const UNDEFINED_EPOCH_OFFSET: i64 = -1;

/// One entry of the cache: `epoch` wrote the offsets from `start_offset` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct EpochEntry {
    /// The leader epoch (never negative).
    pub(crate) epoch: i32,
    /// The first offset that epoch's leader wrote (at most `i64::MAX`).
    pub(crate) start_offset: u64,
}

impl EpochEntry {
    pub(crate) fn new(epoch: i32, start_offset: u64) -> Self {
        EpochEntry {
            epoch,
            start_offset,
        }
    }
}

/// The answer to an end-offset query (Kafka's `OffsetForLeaderEpoch`
/// answer): both fields defined, or both undefined
/// ([`UNDEFINED_EPOCH`], [`UNDEFINED_EPOCH_OFFSET`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EpochEndOffset {
    /// The largest epoch at or below the one asked for that the cache knows
    /// (or the one asked for, when it is below every known epoch).
    pub(crate) epoch: i32,
    /// Where that epoch's offsets end: the next known epoch's start offset,
    /// or the log end offset for the latest epoch.
    pub(crate) end_offset: i64,
}

impl EpochEndOffset {
    /// Neither an epoch nor an offset.
    pub(crate) const UNDEFINED: EpochEndOffset = EpochEndOffset {
        epoch: UNDEFINED_EPOCH,
        end_offset: UNDEFINED_EPOCH_OFFSET,
    };

    fn new(epoch: i32, end_offset: u64) -> Self {
        EpochEndOffset {
            epoch,
            // Offsets in the cache never exceed i64::MAX; a log end offset
            // above it is no Kafka offset either.
            end_offset: i64::try_from(end_offset).unwrap_or(i64::MAX),
        }
    }
}

/// Kafka's leader epoch cache: (epoch, start offset) entries, strictly
/// increasing in both. Pure memory; [`read_checkpoint`] and
/// [`write_checkpoint`] keep it in its file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// A cache holding `entries`, or `None` unless they are valid (epochs
    /// not negative, start offsets at most `i64::MAX`) and strictly
    /// increasing in both epoch and start offset, as every cache's entries
    /// are.
    pub(crate) fn from_entries(entries: Vec<EpochEntry>) -> Option<Self> {
        let valid = entries
            .iter()
            .all(|e| e.epoch >= 0 && i64::try_from(e.start_offset).is_ok());
        let increasing = entries
            .windows(2)
            .all(|w| w[0].epoch < w[1].epoch && w[0].start_offset < w[1].start_offset);
        (valid && increasing).then_some(LeaderEpochCache { entries })
    }

    /// The entries, oldest first.
    pub(crate) fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The newest entry.
    pub(crate) fn latest_entry(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// The newest epoch that wrote offsets (for a leader, the epoch it
    /// writes in).
    pub(crate) fn latest_epoch(&self) -> Option<i32> {
        self.latest_entry().map(|e| e.epoch)
    }

    /// Whether [`assign`](Self::assign) would change the cache: the epoch
    /// is valid and differs from the latest one, or is the latest one with
    /// an earlier start (Kafka's `isUpdateNeeded`).
    pub(crate) fn needs_assign(&self, epoch: i32, start_offset: u64) -> bool {
        if epoch < 0 || i64::try_from(start_offset).is_err() {
            return false;
        }
        self.latest_entry()
            .is_none_or(|latest| latest.epoch != epoch || start_offset < latest.start_offset)
    }

    /// Records that `epoch` wrote offsets from `start_offset` on (Kafka's
    /// `assign`); returns whether the cache changed.
    ///
    /// Nothing changes when `epoch` is the latest epoch and `start_offset`
    /// is not below its start (the common case: another batch of the same
    /// epoch), or when the entry is not valid (a negative epoch, as batches
    /// written without one carry, or an offset above `i64::MAX`). Otherwise
    /// every newer entry that conflicts with the new one (an epoch at or
    /// above `epoch`, or a start offset at or above `start_offset`) is
    /// removed, newest first, and the new entry becomes the latest, so both
    /// columns stay strictly increasing. As in Kafka, this means a lower
    /// epoch at a later offset replaces the higher epochs after it.
    pub(crate) fn assign(&mut self, epoch: i32, start_offset: u64) -> bool {
        if !self.needs_assign(epoch, start_offset) {
            return false;
        }
        while self
            .entries
            .last()
            .is_some_and(|last| last.epoch >= epoch || last.start_offset >= start_offset)
        {
            self.entries.pop();
        }
        self.entries.push(EpochEntry::new(epoch, start_offset));
        true
    }

    /// The end offset of `requested` epoch, exactly as Kafka's
    /// `endOffsetFor`:
    /// - [`UNDEFINED_EPOCH`] asked: undefined.
    /// - the latest epoch asked: (it, `log_end_offset`).
    /// - no known epoch above the one asked (an empty cache, or an epoch
    ///   newer than the latest): undefined.
    /// - an epoch below every known one: (the one asked, the first
    ///   entry's start offset): everything before was removed.
    /// - otherwise: (the largest known epoch at or below the one asked, the
    ///   start offset of the first known epoch above it).
    pub(crate) fn end_offset_for(&self, requested: i32, log_end_offset: u64) -> EpochEndOffset {
        if requested == UNDEFINED_EPOCH {
            return EpochEndOffset::UNDEFINED;
        }
        if self.latest_epoch() == Some(requested) {
            return EpochEndOffset::new(requested, log_end_offset);
        }
        let above = self.entries.partition_point(|e| e.epoch <= requested);
        let Some(higher) = self.entries.get(above) else {
            return EpochEndOffset::UNDEFINED;
        };
        match above.checked_sub(1).map(|i| self.entries[i]) {
            None => EpochEndOffset::new(requested, higher.start_offset),
            Some(floor) => EpochEndOffset::new(floor.epoch, higher.start_offset),
        }
    }

    /// Removes every entry starting at or after `end_offset` (the log was
    /// truncated to end there); returns whether the cache changed.
    pub(crate) fn truncate_from_end(&mut self, end_offset: u64) -> bool {
        let keep = self
            .entries
            .partition_point(|e| e.start_offset < end_offset);
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// Forgets the offsets below `start_offset` (the log now starts there):
    /// every entry starting at or before it is removed, and the newest of
    /// them comes back starting at `start_offset`, so the epoch that wrote
    /// the new first offset stays known (Kafka's `truncateFromStart`; an
    /// entry starting exactly at `start_offset` is kept as it is). Returns
    /// whether the cache changed.
    pub(crate) fn truncate_from_start(&mut self, start_offset: u64) -> bool {
        let covered = self
            .entries
            .partition_point(|e| e.start_offset <= start_offset);
        let Some(last_covered) = covered.checked_sub(1).map(|i| self.entries[i]) else {
            return false;
        };
        let changed = covered > 1 || last_covered.start_offset != start_offset;
        self.entries.drain(..covered);
        self.entries
            .insert(0, EpochEntry::new(last_covered.epoch, start_offset));
        changed
    }

    /// The epoch that wrote `offset`: the epoch of the last entry starting
    /// at or before it (Kafka's `epochForOffset`); `None` below the first
    /// entry.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "replication asks it; not wired in yet")
    )]
    pub(crate) fn epoch_for_offset(&self, offset: u64) -> Option<i32> {
        let covered = self.entries.partition_point(|e| e.start_offset <= offset);
        covered.checked_sub(1).map(|i| self.entries[i].epoch)
    }
}

/// The leader epoch file of the partition stored in `dir`.
pub(crate) fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join(LEADER_EPOCH_CHECKPOINT)
}

/// Reads the leader epoch file of the partition stored in `dir`: `None`
/// when there is none.
///
/// # Errors
/// [`crate::Error::Corrupt`] with [`CorruptionKind::Checkpoint`], naming
/// the file, when it exists but is not a valid leader epoch checkpoint (the
/// checkpoint layout's rules, an entry that is not `epoch start_offset`
/// with a non-negative 32-bit epoch and an offset in `0..=i64::MAX`, or
/// entries not strictly increasing in both); [`crate::Error::Io`].
pub(crate) fn read_checkpoint(
    storage: &dyn Storage,
    dir: &Path,
) -> Result<Option<LeaderEpochCache>> {
    let path = checkpoint_path(dir);
    let file = CheckpointFile {
        path: &path,
        storage,
    };
    let Some(entries) = file.read(parse_entry)? else {
        return Ok(None);
    };
    LeaderEpochCache::from_entries(entries)
        .map(Some)
        .ok_or_else(|| file.bad("leader epochs or their start offsets do not increase"))
}

/// One `epoch start_offset` line.
fn parse_entry(line: &str) -> std::result::Result<EpochEntry, &'static str> {
    let mut fields = line.split(' ');
    let (Some(epoch), Some(offset), None) = (fields.next(), fields.next(), fields.next()) else {
        return Err("an entry is not `epoch start_offset`");
    };
    let epoch: i32 = epoch
        .parse()
        .ok()
        .filter(|e| *e >= 0)
        .ok_or("bad leader epoch")?;
    let start_offset = parse_offset(offset).ok_or("bad start offset")?;
    Ok(EpochEntry::new(epoch, start_offset))
}

/// Replaces the leader epoch file of the partition stored in `dir` with
/// `cache`'s entries, atomically: after a crash it holds the old or the new
/// entries, never a mix.
///
/// # Errors
/// [`crate::Error::Io`]; the file then still holds its old content.
pub(crate) fn write_checkpoint(
    storage: &dyn Storage,
    dir: &Path,
    cache: &LeaderEpochCache,
) -> Result<()> {
    let path = checkpoint_path(dir);
    CheckpointFile {
        path: &path,
        storage,
    }
    .write(
        cache
            .entries
            .iter()
            .map(|e| format!("{} {}", e.epoch, e.start_offset)),
    )
}

/// The leader epoch cache of a log being opened, whose recovered segments
/// are `segments`: read from its file, cut to the log's offsets (a crash
/// can leave entries past the end, after a truncation or lost unsynced
/// batches, or below the start, after retention) and caught up with the
/// epochs of the batches past `recovery_point` (which the file may lack:
/// see [`EpochFile::StaleAppend`](crate::log::EpochFile::StaleAppend)),
/// the file rewritten if that changed it. Without a file, or with a
/// damaged one, the cache is rebuilt from the batches and the file
/// written; that is reported, except for a missing file whose epochs all
/// start at or past the recovery point (a log never flushed since its
/// first epoch).
///
/// A rebuild stops at a damaged batch, which can only lie below the
/// recovery point in a segment recovery trusted on its indexes: the read
/// that reaches it refuses it, as for any damage there, and the open
/// (whose repairs are done by now) is not refused after changing files.
///
/// # Errors
/// [`crate::Error::Io`].
pub(crate) fn load(
    storage: &dyn Storage,
    dir: &Path,
    segments: &[Segment],
    (log_start_offset, log_end_offset): (u64, u64),
    recovery_point: u64,
) -> Result<(LeaderEpochCache, Option<LeaderEpochsRebuilt>)> {
    let damage = match read_checkpoint(storage, dir) {
        Ok(Some(mut cache)) => {
            let cut_end = cache.truncate_from_end(log_end_offset);
            // A new epoch's entry reaches the file with the flush that moves
            // the recovery point past it: one a crash kept from the file is
            // in the batches past the recovery point.
            let caught_up = assign_from(&mut cache, segments, recovery_point)?;
            let cut_start = cache.truncate_from_start(log_start_offset);
            if cut_end || cut_start || caught_up {
                write_checkpoint(storage, dir, &cache)?;
            }
            return Ok((cache, None));
        }
        Ok(None) => None,
        Err(Error::Corrupt { kind, .. }) => Some(kind),
        Err(e) => return Err(e),
    };
    if damage.is_none() && segments.iter().all(Segment::is_empty) {
        return Ok((LeaderEpochCache::default(), None));
    }
    let mut cache = rebuild(segments)?;
    cache.truncate_from_end(log_end_offset);
    cache.truncate_from_start(log_start_offset);
    write_checkpoint(storage, dir, &cache)?;
    // A missing file is no loss while no epoch starts below the recovery
    // point: a log whose first epochs were never flushed has none yet.
    let lost = cache
        .entries
        .first()
        .is_some_and(|e| e.start_offset < recovery_point);
    if damage.is_none() && !lost {
        return Ok((cache, None));
    }
    let rebuilt = LeaderEpochsRebuilt {
        path: checkpoint_path(dir),
        damage,
        entries: cache.entries().len(),
    };
    Ok((cache, Some(rebuilt)))
}

/// Assigns to `cache` the epochs newer than its latest of `segments`'
/// batches from the one holding `from` on (headers only: the open's
/// recovery checked every batch past the recovery point), as Kafka's
/// segment recovery does.
/// Returns whether the cache changed. Stops at a damaged batch.
///
/// # Errors
/// [`crate::Error::Io`] if a segment cannot be read.
fn assign_from(cache: &mut LeaderEpochCache, segments: &[Segment], from: u64) -> Result<bool> {
    let mut changed = false;
    for segment in segments.iter().filter(|s| s.next_offset() > from) {
        let start = if from > segment.base_offset() {
            match segment.find_batch(from) {
                Ok(Some((position, _))) => position,
                Ok(None) => continue,
                Err(Error::Corrupt { .. }) => return Ok(changed),
                Err(e) => return Err(e),
            }
        } else {
            0
        };
        for batch in segment.headers_from(start)? {
            let Ok((_, header)) = batch else {
                return Ok(changed);
            };
            // Only epochs newer than the file's latest, as Kafka's segment
            // recovery assigns: the file is right for every epoch it names
            // (a truncation rewrites it before anything is appended).
            let epoch = header.partition_leader_epoch;
            if cache.latest_epoch().is_none_or(|latest| epoch > latest) {
                let base = u64::try_from(header.base_offset).unwrap_or_default();
                changed |= cache.assign(epoch, base);
            }
        }
    }
    Ok(changed)
}

/// The cache appends would have built from `segments`' batches: each
/// batch's `partitionLeaderEpoch` assigned at its base offset, in offset
/// order, up to the first damaged batch (structure, CRC, offsets), if any.
///
/// # Errors
/// [`crate::Error::Io`] if a segment cannot be read.
pub(crate) fn rebuild(segments: &[Segment]) -> Result<LeaderEpochCache> {
    let mut cache = LeaderEpochCache::default();
    for segment in segments {
        for batch in segment.batches_from(0)? {
            let Ok((_, header)) = batch else {
                return Ok(cache);
            };
            // The walk checked the offsets: never negative.
            let base = u64::try_from(header.base_offset).unwrap_or_default();
            cache.assign(header.partition_leader_epoch, base);
        }
    }
    Ok(cache)
}

/// Why recovery rebuilt a log's leader epoch cache from its batches
/// ([`RecoveryReport::leader_epochs_rebuilt`](crate::RecoveryReport::leader_epochs_rebuilt)).
///
/// The cache is rebuilt from the `partitionLeaderEpoch` and base offset of
/// every batch, in offset order, as appends would have built it, and the
/// file rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaderEpochsRebuilt {
    /// The `leader-epoch-checkpoint` file, now rewritten.
    pub path: PathBuf,
    /// What was wrong with it: `None` when it was missing (while the log
    /// holds batches), else why it could not be read
    /// ([`CorruptionKind::Checkpoint`]).
    pub damage: Option<CorruptionKind>,
    /// Entries in the rebuilt cache.
    pub entries: usize,
}

#[cfg(test)]
mod tests;
