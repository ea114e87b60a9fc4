//! Producer-state snapshots (`<offset:020>.snapshot`, Kafka's
//! `ProducerStateManager` snapshot files): the state of every producer as
//! it stands at `offset`, so an open or a truncation replays only the
//! batches after it instead of the whole log.
//!
//! Written at each segment roll (the state at the new segment's base
//! offset) and at a clean close (at the log end offset), without an fsync
//! of their own: the file joins the log's unflushed files, so the fsync
//! that raises the recovery point past its offset covers it. An open
//! loads the newest readable snapshot at or below the recovery point (and
//! within the log); one that does not decode (torn, damaged) is skipped
//! for an older one, or for a replay from the first segment. A snapshot
//! always describes the log's history below its offset, so it is removed
//! when that history changes: synchronously above a truncation's cut, all
//! of them at a restart (`truncate_fully_and_start_at`); those below the
//! first segment go with retention, and only the newest
//! [`SNAPSHOTS_KEPT`] are kept.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::format::producer_snapshot::{decode_snapshot, encode_snapshot};
use crate::log::producer_state::{self, ProducerStateManager};
use crate::log::{LogInner, LogState};
use crate::storage::segment::Segment;
use crate::storage::{OpenMode, Storage};

/// The suffix of a snapshot file.
pub(crate) const SNAPSHOT_SUFFIX: &str = "snapshot";

/// How many snapshots a log keeps (the newest); older ones are removed in
/// the background. Kafka keeps one per segment; a bound keeps a compacted
/// log that never deletes segments from collecting them.
pub(crate) const SNAPSHOTS_KEPT: usize = 4;

/// `dir/{offset:020}.snapshot`.
pub(crate) fn snapshot_file(dir: &Path, offset: u64) -> PathBuf {
    crate::storage::segment::segment_file(dir, offset, SNAPSHOT_SUFFIX)
}

/// The offsets of the snapshot files in `dir` (an open takes them from
/// its own listing of the directory).
///
/// # Errors
/// [`crate::Error::Io`].
#[cfg(test)]
pub(crate) fn list(storage: &dyn Storage, dir: &Path) -> Result<BTreeSet<u64>> {
    Ok(storage
        .list_dir(dir)?
        .iter()
        .filter_map(|p| crate::storage::segment::parse_segment_file(p, SNAPSHOT_SUFFIX))
        .collect())
}

/// The state a snapshot file holds, or `None` if it cannot be read or
/// does not decode.
fn read(
    storage: &dyn Storage,
    dir: &Path,
    offset: u64,
    now_ms: i64,
    expiration_ms: i64,
) -> Option<ProducerStateManager> {
    let file = storage
        .open(&snapshot_file(dir, offset), OpenMode::Existing)
        .ok()?;
    let len = usize::try_from(file.len().ok()?).ok()?;
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, 0).ok()?;
    let entries = decode_snapshot(&bytes).ok()?;
    Some(ProducerStateManager::from_snapshot(
        &entries,
        offset,
        now_ms,
        expiration_ms,
    ))
}

/// What loading producer state found.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// The snapshot used, if one was.
    pub(crate) from: Option<u64>,
    /// Snapshots skipped because they did not decode.
    pub(crate) unreadable: Vec<u64>,
}

/// The producer state of `segments`: the newest readable snapshot among
/// `offsets` at or below `limit` (and not below the first segment), then
/// the batches after it; without one, every batch from the first segment.
/// The `.txnindex` entries of the segments at the indexes in `rebuild`
/// are rebuilt from their markers on the way (those below the snapshot
/// are kept: a snapshot at or below the recovery point was fsynced after
/// them).
///
/// # Errors
/// [`crate::Error::Io`] from reading a segment or rewriting a `.txnindex`.
pub(crate) fn load(
    storage: &dyn Storage,
    dir: &Path,
    segments: &mut [Segment],
    offsets: &BTreeSet<u64>,
    limit: u64,
    rebuild: &[usize],
    (now_ms, expiration_ms): (i64, i64),
) -> Result<(ProducerStateManager, Loaded)> {
    let first = segments.first().map_or(0, Segment::base_offset);
    let mut loaded = Loaded::default();
    let mut state = None;
    let candidates = offsets
        .iter()
        .rev()
        .copied()
        .filter(|&o| o >= first && o <= limit);
    for offset in candidates {
        match read(storage, dir, offset, now_ms, expiration_ms) {
            Some(s) => {
                state = Some(s);
                loaded.from = Some(offset);
                break;
            }
            None => loaded.unreadable.push(offset),
        }
    }
    let from = loaded.from.unwrap_or(first);
    let mut state = state.unwrap_or_else(|| ProducerStateManager::new(first));
    for (i, segment) in segments.iter_mut().enumerate() {
        if segment.next_offset() <= from {
            continue;
        }
        let rebuild = rebuild.contains(&i);
        if rebuild {
            segment.truncate_aborted(from)?;
        }
        let mut aborted = Vec::new();
        let whole = producer_state::replay_segment(&mut state, segment, from, |txn| {
            aborted.push(txn);
        })?;
        if rebuild {
            for txn in aborted {
                segment.append_aborted(txn)?;
            }
        }
        if !whole {
            break;
        }
    }
    Ok((state, loaded))
}

impl LogInner {
    /// Writes the producer state as the snapshot at `offset` (the state
    /// must cover the log exactly up to it), adds the file to the
    /// unflushed ones, and removes the oldest beyond [`SNAPSHOTS_KEPT`].
    ///
    /// # Errors
    /// [`crate::Error::Io`], as any failed write of the append path (the
    /// caller fences the log); a half-written file fails its CRC at the
    /// next open and is skipped.
    pub(crate) fn write_snapshot(&self, state: &mut LogState, offset: u64) -> Result<()> {
        let path = snapshot_file(&self.dir, offset);
        let bytes = encode_snapshot(&state.producers.snapshot());
        let file = self.storage.open(&path, OpenMode::CreateOrOpen)?;
        state.snapshots.insert(offset);
        state.dir_dirty = true;
        file.set_len(0)?;
        file.write_all_at(&bytes, 0)?;
        state.unflushed.push(file);
        let excess = state.snapshots.len().saturating_sub(SNAPSHOTS_KEPT);
        let old: Vec<u64> = state.snapshots.iter().copied().take(excess).collect();
        for o in old {
            self.storage.remove_file(&snapshot_file(&self.dir, o))?;
            state.snapshots.remove(&o);
        }
        Ok(())
    }

    /// Removes the snapshots at `offsets` (they describe the log's history
    /// correctly, only space is at stake: a failure leaves them for the
    /// next open to find).
    pub(crate) fn remove_snapshots(&self, state: &mut LogState, offsets: &[u64]) {
        for offset in offsets {
            if self
                .storage
                .remove_file(&snapshot_file(&self.dir, *offset))
                .is_ok()
            {
                state.snapshots.remove(offset);
                state.dir_dirty = true;
            }
        }
    }

    /// Removes every snapshot now (a restart: the history they describe
    /// is gone).
    ///
    /// # Errors
    /// [`crate::Error::Io`].
    pub(crate) fn remove_all_snapshots(&self, state: &mut LogState) -> Result<()> {
        let all: Vec<u64> = state.snapshots.iter().copied().collect();
        for o in all {
            let path = snapshot_file(&self.dir, o);
            if self.storage.exists(&path) {
                self.storage.remove_file(&path)?;
            }
            state.snapshots.remove(&o);
            state.dir_dirty = true;
        }
        Ok(())
    }

    /// Removes the snapshots above `offset` now (a truncation changed the
    /// history they describe).
    ///
    /// # Errors
    /// [`crate::Error::Io`].
    pub(crate) fn remove_snapshots_above(&self, state: &mut LogState, offset: u64) -> Result<()> {
        let above: Vec<u64> = state.snapshots.range(offset + 1..).copied().collect();
        for o in above {
            let path = snapshot_file(&self.dir, o);
            if self.storage.exists(&path) {
                self.storage.remove_file(&path)?;
            }
            state.snapshots.remove(&o);
            state.dir_dirty = true;
        }
        Ok(())
    }

    /// The producer state after a truncation: from the newest snapshot at
    /// or below the new log end offset, then the batches after it.
    ///
    /// # Errors
    /// [`crate::Error::Io`].
    pub(crate) fn reload_producers(&self, state: &mut LogState) -> Result<()> {
        let limit = state.log_end_offset;
        let offsets = state.snapshots.clone();
        let (producers, loaded) = load(
            self.storage.as_ref(),
            &self.dir,
            &mut state.segments,
            &offsets,
            limit,
            &[],
            (self.clock.now_ms(), self.producer_expiration_ms()),
        )?;
        state.producers = producers;
        for offset in loaded.unreadable {
            let path = snapshot_file(&self.dir, offset);
            let _ = self.storage.remove_file(&path);
            state.snapshots.remove(&offset);
        }
        Ok(())
    }

    /// `producer.id.expiration.ms`.
    pub(crate) fn producer_expiration_ms(&self) -> i64 {
        self.config().producer_id_expiration_ms()
    }

    /// Forgets the producers whose last write is `producer.id.expiration.ms`
    /// old or older and that have no transaction open (Kafka's
    /// `removeExpiredProducers`); returns how many. Run with each
    /// retention check.
    pub(crate) fn expire_producers(&self) -> usize {
        let now = self.clock.now_ms();
        let mut state = self.state.write();
        state
            .producers
            .remove_expired(now, self.config().producer_id_expiration_ms())
    }
}

#[cfg(test)]
mod tests;
