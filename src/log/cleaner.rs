//! Log compaction (Kafka's `cleanup.policy=compact`): keep the latest record
//! of every key.
//!
//! # One pass
//! 1. Under the state read lock, take a snapshot of the *cleanable* sealed
//!    segments: from the first segment up to the active segment, or up to
//!    the first dirty segment whose newest record is younger than
//!    `min.compaction.lag.ms`. The part from the cleaner checkpoint (the
//!    first dirty offset) on is *dirty*; below it the log was cleaned
//!    before. Then fsync the log up to the end of the cleanable part (if
//!    the background flush after the rolls has not yet): a record is only
//!    ever dropped for a later one that a power loss cannot take.
//! 2. Without any lock, build the offset map: key → offset of its last
//!    record in the dirty part (Kafka's `OffsetMap`, here exact: whole keys,
//!    no hashing, so no collisions, and memory grows with the number of
//!    distinct keys).
//! 3. Group consecutive cleanable segments so a group fits `segment.bytes`,
//!    the index capacity and 32-bit relative offsets, and rewrite each group
//!    into one segment written as `{base}.log.cleaned` (+ indexes), named by
//!    the group's first base offset. A record is kept iff it has a key, no
//!    later record of that key is in the map, and it is not a tombstone
//!    whose delete horizon passed. Offsets never change: a rewritten batch
//!    starts at its first kept record (a producer's last batch and a
//!    marker at their original base offset, as Kafka's cleaner writes every
//!    batch) and keeps its original last offset (`lastOffsetDelta`), as
//!    Kafka's cleaner does. Batches that lose no record are copied byte
//!    for byte.
//! 4. Under the state write lock, check that nothing truncated or deleted
//!    segments meanwhile (else throw the work away), and swap each group in
//!    as Kafka's `replaceSegments` does: rename `.cleaned` → `.swap`, rename
//!    the old segments' files `.deleted`, rename `.swap` → the plain names.
//!    Recovery on open removes `.cleaned` files and completes a `.swap`
//!    (see `open.rs`), so after a crash each group reads either as before
//!    or as after cleaning.
//!
//! # Tombstones
//! As in Kafka since KIP-534: the first pass that keeps a tombstone stamps
//! its batch with a delete horizon (`now + delete.retention.ms`, stored in
//! `baseTimestamp` with attribute bit 6); a later pass at or after the
//! horizon drops it.
//!
//! # Transactions
//! As Kafka's cleaner (`Cleaner`, `CleanedTransactionMetadata`): nothing
//! at or above the last stable offset is cleaned (an open transaction may
//! still abort); records of aborted transactions (found with the segments'
//! `.txnindex` entries) are removed and never enter the offset map, so
//! they supersede nothing.
//!
//! A transaction marker (control batch) goes once no batch of its
//! transaction is left, walking the whole log in offset order each pass:
//! an ABORT marker once no batch of its aborted transaction was met in the
//! pass, a COMMIT marker once no transactional batch of its producer was
//! met since the producer's previous marker. An empty batch an earlier
//! pass kept (a producer's last batch, or one keeping a segment's end)
//! counts as met: it still opens its transaction for a rebuild of
//! producer state. Like tombstones, the first pass that finds a marker
//! removable stamps its batch with the delete horizon (`now +
//! delete.retention.ms`, KIP-534); a pass at or after the horizon removes
//! it, so a reader that saw the transaction's records has that long to see
//! its marker. The `.txnindex` entry of an ABORT marker goes in the pass
//! that first finds the marker removable (Kafka rebuilds the cleaned
//! segment's index from the ABORT markers whose transaction still has
//! batches): with no record of the transaction left, a read_committed
//! reader has nothing to skip. The other entries carry over to the cleaned
//! segment. Control records other than COMMIT and ABORT stay.
//!
//! # Producer state
//! Each producer's last write (as the log's producer state knows it,
//! Kafka's `isBatchLastRecordOfProducer`) stays, so that producer state
//! rebuilt from the cleaned log (a replica copying it, an open without a
//! usable snapshot) still knows the producer's epoch and last sequence:
//! its last data batch of its current epoch, with its offsets and producer
//! fields (Kafka's `RETAIN_EMPTY`), its records cleaned as anywhere else
//! (a rewritten one keeps its base offset, so its base sequence still
//! matches) and emptied (header only) if none is left or it is aborted
//! data; if it has no data batch in its current epoch (its last write was
//! a marker that bumped the epoch), each of its markers of that epoch,
//! emptied once removable and past its horizon.
//!
//! # Not supported yet
//! A batch all of whose records are removed is dropped whole, except at
//! the end of a group, where an empty batch (header only) keeps the
//! group's last offset; Kafka keeps only the last batch of a pass so, and
//! an empty transactional batch kept there keeps its transaction's marker
//! (see above). A marker past its horizon goes in the next pass, which
//! runs when the dirty ratio asks for it or on [`Log::clean`].

use std::collections::HashMap;

use byteorder::{BigEndian, ByteOrder};
use bytes::Bytes;

use crate::error::{Error, FormatError, Result};
use crate::format::control::{ControlType, decode_control_key};
use crate::format::txn_index::AbortedTxn;
use crate::format::{self, Batch, BatchHeader};
use crate::log::{Log, LogInner, LogState, worker::Job};
use crate::storage::segment::{BatchMeta, CLEANED_SUFFIX, SWAP_SUFFIX, Segment};
use crate::types::{Compression, TimestampType};

/// What one cleaning pass ([`Log::clean`]) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CleanReport {
    /// Sealed segments that were rewritten (replaced by cleaned ones).
    pub segments_cleaned: usize,
    /// Cleaned segments written in their place (groups of small segments
    /// merge into one).
    pub segments_written: usize,
    /// Bytes of the replaced segments.
    pub bytes_before: u64,
    /// Bytes of the segments that replaced them.
    pub bytes_after: u64,
    /// Records removed because a later record has the same key.
    pub records_superseded: u64,
    /// Tombstones removed because their delete horizon passed.
    pub tombstones_removed: u64,
    /// Records without a key removed (a compacted log rejects them on
    /// append, but a log switched from `delete` may hold some).
    pub keyless_removed: u64,
    /// Records of aborted transactions removed (they never supersede a
    /// record: a read_committed reader never saw them).
    pub aborted_removed: u64,
    /// Transaction markers removed: no record of their transaction was
    /// left and their delete horizon (`delete.retention.ms` after the
    /// first pass that found them removable) passed.
    pub markers_removed: u64,
    /// The cleaner checkpoint (first dirty offset) after the pass: every
    /// offset below it was cleaned.
    pub cleaned_up_to: u64,
}

impl Log {
    /// Runs one cleaning pass now, whatever the dirty ratio: keeps the
    /// latest record of every key in the sealed segments, removes
    /// tombstones and transaction markers whose delete horizon
    /// (`delete.retention.ms` after the first pass that found them
    /// removable; a marker is, once no record of its transaction is left)
    /// has passed, and advances the cleaner checkpoint. The active segment
    /// and segments younger than `min.compaction.lag.ms` are not touched;
    /// offsets, the log start offset and the log end offset never change;
    /// small cleaned segments merge (up to `segment.bytes`).
    ///
    /// The log's background thread runs a pass on its retention-check interval
    /// when the dirty ratio reaches `min.cleanable.dirty.ratio` (see
    /// [`Log::maybe_clean`]). Readers are never blocked for the rewrite and
    /// see either the old or the new segments; data they hold stays valid.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] if the log's `cleanup.policy` does not
    /// include `compact`; [`Error::Fenced`]; [`Error::Corrupt`] if a batch
    /// being cleaned is damaged; [`Error::Io`]. A failure while writing the
    /// cleaned files changes nothing; a failure while swapping them in
    /// fences the log (reopening it completes or rolls back the swap).
    pub fn clean(&self) -> Result<CleanReport> {
        if !self.inner.config().compact() {
            return Err(Error::InvalidConfig(
                "cleanup.policy does not include compact".into(),
            ));
        }
        Ok(self.inner.clean(None)?.unwrap_or_default())
    }

    /// Runs a cleaning pass if the log compacts and its dirty ratio
    /// ([`Log::dirty_ratio`]) is at least `min.cleanable.dirty.ratio`, as the
    /// background thread does; `None` if it did not run.
    ///
    /// # Errors
    /// As [`Log::clean`].
    pub fn maybe_clean(&self) -> Result<Option<CleanReport>> {
        self.inner.maybe_clean()
    }

    /// The share of the cleanable bytes (sealed segments old enough for
    /// `min.compaction.lag.ms`) that lies at or above the cleaner
    /// checkpoint: 0 when there is nothing to clean.
    #[must_use]
    pub fn dirty_ratio(&self) -> f64 {
        let now = self.inner.clock.now_ms();
        let state = self.inner.state.read();
        self.inner.cleanable(&state, now).ratio()
    }

    /// The cleaner checkpoint: the first offset not yet cleaned. Persist it
    /// in the owner's `cleaner-offset-checkpoint` and pass it to
    /// [`LogBuilder::cleaner_checkpoint`](crate::LogBuilder::cleaner_checkpoint).
    #[must_use]
    pub fn cleaner_checkpoint(&self) -> u64 {
        self.inner.state.read().cleaner_checkpoint
    }
}

/// The cleanable part of the log, by segment index.
#[derive(Debug, Clone, Copy)]
struct Cleanable {
    /// First dirty offset.
    first_dirty: u64,
    /// Segments `[0, end)` may be cleaned; `end` is the active segment or
    /// the first one too young for `min.compaction.lag.ms`.
    end: usize,
    /// Base offset of segment `end`: the new checkpoint after a pass.
    end_offset: u64,
    clean_bytes: u64,
    dirty_bytes: u64,
}

impl Cleanable {
    fn ratio(&self) -> f64 {
        let total = self.clean_bytes + self.dirty_bytes;
        if total == 0 {
            0.0
        } else {
            self.dirty_bytes as f64 / total as f64
        }
    }
}

/// One sealed segment as the cleaner read it.
struct Snapshot {
    base: u64,
    next_offset: u64,
    bytes: Bytes,
    /// Its aborted transactions (`.txnindex`): they carry over to the
    /// cleaned segment, but for those whose ABORT marker was found
    /// removable.
    aborted: Vec<AbortedTxn>,
}

impl LogInner {
    pub(crate) fn maybe_clean(&self) -> Result<Option<CleanReport>> {
        if !self.config().compact() {
            return Ok(None);
        }
        self.clean(Some(self.config().min_cleanable_dirty_ratio()))
    }

    fn cleanable(&self, state: &LogState, now: i64) -> Cleanable {
        let first_dirty = state.cleaner_checkpoint.max(state.log_start_offset);
        let lag = self.config().min_compaction_lag_ms();
        let sealed = state.segments.len() - 1;
        let mut end = sealed;
        let (mut clean_bytes, mut dirty_bytes) = (0, 0);
        // Kafka's rule: nothing at or above the last stable offset is
        // cleaned (an open transaction's records may still abort).
        let lso = super::txn::last_stable_offset(self, state);
        for (i, segment) in state.segments[..sealed].iter().enumerate() {
            if segment.next_offset() <= first_dirty {
                clean_bytes += segment.size();
                continue;
            }
            if segment.next_offset() > lso {
                end = i;
                break;
            }
            // Kafka's rule: a dirty segment whose newest record is younger
            // than the lag ends the cleanable part.
            if lag > 0 && segment.max_timestamp() > now.saturating_sub(lag) {
                end = i;
                break;
            }
            dirty_bytes += segment.size();
        }
        Cleanable {
            first_dirty,
            end,
            end_offset: state.segments[end].base_offset(),
            clean_bytes,
            dirty_bytes,
        }
    }

    /// One pass; with `min_ratio`, only if the dirty ratio reaches it
    /// (`None` if it does not).
    pub(crate) fn clean(&self, min_ratio: Option<f64>) -> Result<Option<CleanReport>> {
        let _one_at_a_time = self.cleaner.lock();
        self.check_not_fenced()?;
        let now = self.clock.now_ms();
        let (cleanable, snapshots, generation) = {
            let state = self.state.read();
            let cleanable = self.cleanable(&state, now);
            if min_ratio.is_some_and(|min| cleanable.dirty_bytes == 0 || cleanable.ratio() < min) {
                return Ok(None);
            }
            if cleanable.end == 0 {
                return Ok(Some(CleanReport {
                    cleaned_up_to: state.cleaner_checkpoint,
                    ..CleanReport::default()
                }));
            }
            let snapshots = state.segments[..cleanable.end]
                .iter()
                .map(|s| {
                    Ok(Snapshot {
                        base: s.base_offset(),
                        next_offset: s.next_offset(),
                        bytes: s.slice(0, s.size())?,
                        aborted: s.aborted_txns().to_vec(),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            // Every aborted transaction whose data may lie in the cleanable
            // segments, the ones whose marker lies later included.
            let aborted: Vec<AbortedTxn> = state
                .segments
                .iter()
                .flat_map(|s| s.aborted_txns().iter().copied())
                .collect();
            let producers_last = state
                .producers
                .last_records()
                .into_iter()
                .map(|(id, (last_data_offset, epoch))| {
                    (
                        id,
                        LastRecord {
                            last_data_offset,
                            epoch,
                        },
                    )
                })
                .collect();
            (
                cleanable,
                (snapshots, aborted, producers_last),
                state.generation,
            )
        };
        let (snapshots, aborted, producers_last) = snapshots;
        // Every record the offset map is built from must be on disk before
        // it supersedes an older one: else a power loss could take the
        // newer record after the cleaned segment (fsynced) dropped the
        // older, durable one, and the key would have no value at all. The
        // page-cache policies flush sealed segments in the background after
        // their roll, so this rarely waits.
        self.sync_to(cleanable.end_offset)?;
        let map = build_offset_map(&snapshots, cleanable.first_dirty, &aborted, &self.dir)?;
        let mut report = CleanReport {
            cleaned_up_to: cleanable.end_offset.max(cleanable.first_dirty),
            ..CleanReport::default()
        };
        let mut staged: Vec<(std::ops::Range<usize>, Segment)> = Vec::new();
        let mut tracker = TxnTracker::new(&aborted);
        tracker.producers_last = producers_last;
        let result = (|| {
            for range in self.groups(&snapshots) {
                let group = &snapshots[range.clone()];
                if let Some(segment) =
                    self.clean_group(group, (&map, &mut tracker), now, &mut report)?
                {
                    staged.push((range, segment));
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            for (_, segment) in staged {
                discard(self, segment);
            }
            return Err(e);
        }
        let report = self.swap(staged, &snapshots, generation, report)?;
        tracing::info!(
            dir = %self.dir.display(),
            segments_cleaned = report.segments_cleaned,
            segments_written = report.segments_written,
            bytes_before = report.bytes_before,
            bytes_after = report.bytes_after,
            records_superseded = report.records_superseded,
            tombstones_removed = report.tombstones_removed,
            markers_removed = report.markers_removed,
            cleaned_up_to = report.cleaned_up_to,
            "compaction pass done"
        );
        Ok(Some(report))
    }

    /// Splits the snapshots into runs of consecutive segments that fit one
    /// segment: `segment.bytes`, the index capacity (counted generously:
    /// one entry per `index.interval.bytes`), 32-bit relative offsets.
    fn groups(&self, snapshots: &[Snapshot]) -> Vec<std::ops::Range<usize>> {
        let max_bytes = self.config().segment_bytes();
        let interval = self.config().index_interval_bytes();
        // The time index has the larger entries (12 bytes); one slot is
        // kept for the entry sealing adds.
        let max_entries = (self.config().segment_index_bytes() / 12).saturating_sub(1);
        let mut groups = Vec::new();
        let mut start = 0;
        while start < snapshots.len() {
            let mut end = start + 1;
            let mut bytes = snapshots[start].bytes.len() as u64;
            while end < snapshots.len() {
                let next = &snapshots[end];
                let total = bytes + next.bytes.len() as u64;
                let entries = total / interval.saturating_add(1) + 1;
                let span = next.next_offset.saturating_sub(snapshots[start].base);
                if total > max_bytes || entries > max_entries || span > u64::from(u32::MAX) {
                    break;
                }
                bytes = total;
                end += 1;
            }
            groups.push(start..end);
            start = end;
        }
        groups
    }

    /// Writes the cleaned copy of `group` as a staged (`.cleaned`), sealed
    /// and fsynced segment. `None` when cleaning would change nothing and
    /// the group is a single segment.
    fn clean_group(
        &self,
        group: &[Snapshot],
        (map, tracker): (&HashMap<Bytes, u64>, &mut TxnTracker),
        now: i64,
        report: &mut CleanReport,
    ) -> Result<Option<Segment>> {
        let mut outputs = Vec::with_capacity(group.len());
        let mut changed = group.len() > 1;
        let mut counts = CleanReport::default();
        for (i, snapshot) in group.iter().enumerate() {
            let keep_end = i + 1 == group.len();
            let (buf, metas, same) =
                self.clean_segment(snapshot, (map, &mut *tracker), now, keep_end, &mut counts)?;
            changed |= !same;
            outputs.push((buf, metas));
        }
        // The `.txnindex` entries of the ABORT markers found removable go
        // (Kafka rebuilds the cleaned segment's index from the markers it
        // keeps); the others carry over.
        let entries: Vec<AbortedTxn> = group
            .iter()
            .flat_map(|s| &s.aborted)
            .filter(|txn| {
                !tracker
                    .dropped
                    .contains(&(txn.producer_id, txn.last_offset))
            })
            .copied()
            .collect();
        changed |= entries.len() != group.iter().map(|s| s.aborted.len()).sum::<usize>();
        if !changed {
            return Ok(None);
        }
        let base = group[0].base;
        let staged = crate::storage::segment::staged_file(
            &self.dir,
            base,
            crate::storage::segment::LOG_SUFFIX,
            CLEANED_SUFFIX,
        );
        // A leftover from an earlier failed pass in this process.
        for suffix in [
            crate::storage::segment::LOG_SUFFIX,
            crate::storage::segment::INDEX_SUFFIX,
            crate::storage::segment::TIME_INDEX_SUFFIX,
            crate::storage::segment::TXN_INDEX_SUFFIX,
        ] {
            let path =
                crate::storage::segment::staged_file(&self.dir, base, suffix, CLEANED_SUFFIX);
            if self.storage.exists(&path) {
                self.storage.remove_file(&path)?;
            }
        }
        let mut segment = Segment::create_staged(
            &self.storage,
            &self.dir,
            base,
            self.segment_limits(),
            CLEANED_SUFFIX,
        )?;
        let written = (|| {
            for (buf, metas) in &outputs {
                if !buf.is_empty() {
                    segment.append(buf, metas)?;
                }
            }
            segment.ensure_txn_index_file()?;
            for txn in &entries {
                segment.append_aborted(*txn)?;
            }
            segment.seal()?;
            segment.sync()
        })();
        if let Err(e) = written {
            discard(self, segment);
            return Err(e);
        }
        debug_assert!(staged.ends_with(format!("{base:020}.log.{CLEANED_SUFFIX}")));
        report.segments_cleaned += group.len();
        report.segments_written += 1;
        report.bytes_before += group.iter().map(|s| s.bytes.len() as u64).sum::<u64>();
        report.bytes_after += segment.size();
        report.records_superseded += counts.records_superseded;
        report.tombstones_removed += counts.tombstones_removed;
        report.keyless_removed += counts.keyless_removed;
        report.aborted_removed += counts.aborted_removed;
        report.markers_removed += counts.markers_removed;
        Ok(Some(segment))
    }

    /// The cleaned batches of one segment, and whether they equal the old
    /// ones. With `keep_end`, a last batch that loses every record is kept
    /// as an empty batch (header only, its original offsets), as Kafka's
    /// cleaner keeps empty batches: the segment still ends where it did, so
    /// the log's offsets below the next segment stay accounted for and
    /// recovery knows exactly which segments a `.swap` replaces.
    fn clean_segment(
        &self,
        snapshot: &Snapshot,
        (map, tracker): (&HashMap<Bytes, u64>, &mut TxnTracker),
        now: i64,
        keep_end: bool,
        counts: &mut CleanReport,
    ) -> Result<(Vec<u8>, Vec<BatchMeta>, bool)> {
        let mut out = Vec::with_capacity(snapshot.bytes.len());
        let mut metas = Vec::new();
        let mut same = true;
        let mut position = 0;
        for batch in format::Batches::new(snapshot.bytes.clone()) {
            let batch = batch.map_err(|e| corrupt(&self.dir, snapshot.base, position, e))?;
            let size = batch.size();
            let at_end = keep_end && position + size == snapshot.bytes.len();
            let header = *batch.header();
            let kept = if header.is_control() {
                let removable = control_type(&batch)
                    .map(|kind| tracker.on_control(&header, kind))
                    .map_err(|e| corrupt(&self.dir, snapshot.base, position, e))?;
                let last = tracker.is_producers_last(&header);
                filter_marker(
                    &batch,
                    (removable, last),
                    now,
                    self.config().delete_retention_ms(),
                    counts,
                )
                .map_err(|e| corrupt(&self.dir, snapshot.base, position, e))?
            } else {
                // An empty batch (an earlier pass kept it) counts as met
                // too, as in Kafka: it still opens its transaction for a
                // rebuild of producer state, so its marker must stay.
                let aborted = tracker.on_batch(&header);
                if tracker.is_producers_last(&header) {
                    // Kept with its offsets and producer fields (Kafka's
                    // RETAIN_EMPTY), its records cleaned as anywhere else.
                    let kept = if header.records_count == 0 {
                        Kept::Whole
                    } else if aborted {
                        counts.aborted_removed += u64::from(header.records_count.max(0) as u32);
                        Kept::Nothing
                    } else {
                        filter_batch(
                            &batch,
                            (map, true),
                            now,
                            self.config().delete_retention_ms(),
                            counts,
                        )
                        .map_err(|e| corrupt(&self.dir, snapshot.base, position, e))?
                    };
                    match kept {
                        Kept::Nothing => Kept::Rewritten(empty_batch(&header)),
                        kept => kept,
                    }
                } else if aborted {
                    counts.aborted_removed += u64::from(header.records_count.max(0) as u32);
                    Kept::Nothing
                } else if header.records_count == 0 {
                    // An empty batch an earlier pass kept: still needed only
                    // at the end of a group.
                    if at_end { Kept::Whole } else { Kept::Nothing }
                } else {
                    filter_batch(
                        &batch,
                        (map, false),
                        now,
                        self.config().delete_retention_ms(),
                        counts,
                    )
                    .map_err(|e| corrupt(&self.dir, snapshot.base, position, e))?
                }
            };
            let start = out.len();
            let header = match kept {
                Kept::Whole => {
                    out.extend_from_slice(batch.as_bytes());
                    *batch.header()
                }
                Kept::Nothing if keep_end && position + size == snapshot.bytes.len() => {
                    same = false;
                    let empty = empty_batch(batch.header());
                    out.extend_from_slice(&empty);
                    BatchHeader::parse(&empty)?
                }
                Kept::Nothing => {
                    same = false;
                    position += size;
                    continue;
                }
                Kept::Rewritten(bytes) => {
                    same = false;
                    out.extend_from_slice(&bytes);
                    BatchHeader::parse(&bytes)?
                }
            };
            metas.push(BatchMeta {
                position_in_buf: start,
                size: out.len() - start,
                last_offset: header.last_offset() as u64,
                max_timestamp: header.max_timestamp,
            });
            position += size;
        }
        Ok((out, metas, same))
    }

    /// Swaps the staged segments in under the write lock (Kafka's
    /// `replaceSegments`) and advances the checkpoint.
    fn swap(
        &self,
        staged: Vec<(std::ops::Range<usize>, Segment)>,
        snapshots: &[Snapshot],
        generation: u64,
        report: CleanReport,
    ) -> Result<CleanReport> {
        let mut state = self.state.write();
        if state.generation != generation || self.is_fenced() {
            // A truncation or deletion changed the segments meanwhile: the
            // work is stale. The next pass starts over.
            let checkpoint = state.cleaner_checkpoint;
            drop(state);
            for (_, segment) in staged {
                discard(self, segment);
            }
            return Ok(CleanReport {
                cleaned_up_to: checkpoint,
                ..CleanReport::default()
            });
        }
        let swapped_any = !staged.is_empty();
        let result = (|| {
            // Replace from the last group back, so earlier indexes stay valid.
            for (range, mut segment) in staged.into_iter().rev() {
                debug_assert!(
                    snapshots[range.clone()]
                        .iter()
                        .zip(&state.segments[range.clone()])
                        .all(|(snap, seg)| snap.base == seg.base_offset())
                );
                segment.rename_stage(Some(CLEANED_SUFFIX), Some(SWAP_SUFFIX))?;
                let mut removed = Vec::new();
                for old in &state.segments[range.clone()] {
                    removed.extend(old.mark_deleted()?);
                }
                segment.rename_stage(Some(SWAP_SUFFIX), None)?;
                let old: Vec<Segment> = state.segments.splice(range, [segment]).collect();
                drop(old);
                self.schedule(Job::RemoveFiles(removed));
            }
            Ok(())
        })();
        if let Err(e) = result {
            self.fence();
            return Err(e);
        }
        state.cleaner_checkpoint = state.cleaner_checkpoint.max(report.cleaned_up_to);
        if swapped_any {
            state.generation += 1;
            state.dir_dirty = true;
        }
        drop(state);
        if swapped_any {
            self.storage
                .sync_dir(&self.dir)
                .inspect_err(|_| self.fence())?;
        }
        Ok(report)
    }
}

/// Removes a staged segment's files (best effort: the next open removes
/// `.cleaned` leftovers).
fn discard(inner: &LogInner, segment: Segment) {
    let base = segment.base_offset();
    drop(segment);
    for suffix in [
        crate::storage::segment::LOG_SUFFIX,
        crate::storage::segment::INDEX_SUFFIX,
        crate::storage::segment::TIME_INDEX_SUFFIX,
        crate::storage::segment::TXN_INDEX_SUFFIX,
    ] {
        let path = crate::storage::segment::staged_file(&inner.dir, base, suffix, CLEANED_SUFFIX);
        let _ = inner.storage.remove_file(&path);
    }
}

fn corrupt(dir: &std::path::Path, base: u64, position: usize, error: FormatError) -> Error {
    Error::corrupt(
        crate::storage::segment::segment_file(dir, base, crate::storage::segment::LOG_SUFFIX),
        position as u64,
        crate::error::CorruptionKind::Batch(error),
    )
}

/// Key → offset of the key's last record at or after `first_dirty`.
/// Records of aborted transactions never enter it (Kafka's cleaner skips
/// them: they must not supersede a committed record).
fn build_offset_map(
    snapshots: &[Snapshot],
    first_dirty: u64,
    aborted: &[AbortedTxn],
    dir: &std::path::Path,
) -> Result<HashMap<Bytes, u64>> {
    let mut map = HashMap::new();
    let mut tracker = TxnTracker::new(aborted);
    for snapshot in snapshots {
        let mut position = 0;
        for batch in format::Batches::new(snapshot.bytes.clone()) {
            let batch = batch.map_err(|e| corrupt(dir, snapshot.base, position, e))?;
            position += batch.size();
            if batch.header().is_control() {
                let kind =
                    control_type(&batch).map_err(|e| corrupt(dir, snapshot.base, position, e))?;
                tracker.on_control(batch.header(), kind);
                continue;
            }
            let in_aborted = tracker.on_batch(batch.header());
            if in_aborted || (batch.header().last_offset() as u64) < first_dirty {
                continue;
            }
            let records = batch
                .records()
                .map_err(|e| corrupt(dir, snapshot.base, position, e))?;
            for record in records {
                let record = record.map_err(|e| corrupt(dir, snapshot.base, position, e))?;
                let offset = record.offset() as u64;
                if offset >= first_dirty
                    && let Some(key) = record.key()
                {
                    // A copy: a slice would keep a whole decompressed
                    // batch alive for the length of the pass.
                    map.insert(Bytes::copy_from_slice(key), offset);
                }
            }
        }
    }
    Ok(map)
}

/// What a producer last wrote, as the cleaner keeps it (Kafka's
/// `LastRecord`).
#[derive(Debug, Clone, Copy)]
struct LastRecord {
    /// The last offset of its last data batch in its current epoch, if it
    /// has one (none when its last write was a marker that bumped the
    /// epoch, or when its data was cleaned away and the state rebuilt).
    last_data_offset: Option<u64>,
    /// Its current epoch.
    epoch: i16,
}

/// The transaction state of one pass, batch by batch in offset order
/// (Kafka's `CleanedTransactionMetadata`): which transactional batches
/// belong to an aborted transaction (a producer is aborting from its
/// aborted transaction's first offset up to its ABORT marker), and which
/// markers may go because no batch of their transaction is left.
/// It also knows each producer's last write, which the cleaner keeps
/// (Kafka's `isBatchLastRecordOfProducer`), so producer state rebuilt from
/// the cleaned log still knows the producer's epoch and last sequence.
struct TxnTracker {
    /// The aborted transactions not reached yet, by first offset.
    pending: std::collections::VecDeque<AbortedTxn>,
    /// The producers inside an aborted transaction: its `.txnindex` entry,
    /// and whether a batch of it was met in this pass.
    aborting: HashMap<i64, (AbortedTxn, bool)>,
    /// The producers a batch of whose (not aborted) transaction was met in
    /// this pass since their last marker.
    committing: std::collections::HashSet<i64>,
    /// Each producer's last write.
    producers_last: HashMap<i64, LastRecord>,
    /// The `.txnindex` entries of ABORT markers found removable (no batch
    /// of their transaction left), by producer id and marker offset: the
    /// cleaned segment leaves them out.
    dropped: std::collections::HashSet<(i64, i64)>,
}

impl TxnTracker {
    fn new(aborted: &[AbortedTxn]) -> Self {
        let mut pending = aborted.to_vec();
        pending.sort_by_key(|t| t.first_offset);
        TxnTracker {
            pending: pending.into(),
            aborting: HashMap::new(),
            committing: std::collections::HashSet::new(),
            producers_last: HashMap::new(),
            dropped: std::collections::HashSet::new(),
        }
    }

    /// Starts tracking the aborted transactions whose first offset is at
    /// or below `last` (Kafka's `consumeAbortedTxnsUpTo`).
    fn consume_aborted_up_to(&mut self, last: i64) {
        while self.pending.front().is_some_and(|t| t.first_offset <= last) {
            if let Some(t) = self.pending.pop_front() {
                self.aborting.entry(t.producer_id).or_insert((t, false));
            }
        }
    }

    /// Whether the batch of `header` is its producer's last write, which
    /// stays (Kafka's `isBatchLastRecordOfProducer`): its last data batch,
    /// or, if it has none, any of its markers of its current epoch.
    fn is_producers_last(&self, header: &BatchHeader) -> bool {
        if header.producer_id < 0 {
            return false;
        }
        self.producers_last
            .get(&header.producer_id)
            .is_some_and(|last| match last.last_data_offset {
                Some(offset) => {
                    !header.is_control() && u64::try_from(header.last_offset()) == Ok(offset)
                }
                None => header.is_control() && header.producer_epoch == last.epoch,
            })
    }

    /// Reads the data batch of `header` (the next in offset order): whether
    /// it is data of an aborted transaction (Kafka's `onBatchRead`).
    fn on_batch(&mut self, header: &BatchHeader) -> bool {
        self.consume_aborted_up_to(header.last_offset());
        if !header.is_transactional() {
            return false;
        }
        match self.aborting.get_mut(&header.producer_id) {
            Some((_, seen)) => {
                *seen = true;
                true
            }
            None => {
                self.committing.insert(header.producer_id);
                false
            }
        }
    }

    /// Reads the control batch of `header` (the next in offset order),
    /// `kind` its record's type (`None` for an empty one): whether the
    /// marker may go once its delete horizon passed (Kafka's
    /// `onControlBatchRead`). An ABORT marker may go when no batch of its
    /// transaction was met in this pass (its `.txnindex` entry then goes
    /// at once), a COMMIT marker likewise; an empty control batch (an
    /// earlier pass removed its record) may go; any other control record
    /// stays.
    fn on_control(&mut self, header: &BatchHeader, kind: Option<ControlType>) -> bool {
        self.consume_aborted_up_to(header.last_offset());
        match kind {
            None => true,
            Some(ControlType::Abort) => match self.aborting.remove(&header.producer_id) {
                Some((_, true)) => false,
                Some((txn, false)) => {
                    self.dropped.insert((txn.producer_id, txn.last_offset));
                    true
                }
                None => true,
            },
            Some(ControlType::Commit) => !self.committing.remove(&header.producer_id),
            Some(ControlType::Other(_)) => false,
        }
    }
}

/// What cleaning keeps of one batch.
enum Kept {
    Whole,
    Nothing,
    Rewritten(Vec<u8>),
}

/// The type of the control record of `batch` (a control batch): `None`
/// for an empty one.
fn control_type(batch: &Batch) -> std::result::Result<Option<ControlType>, FormatError> {
    let Some(record) = batch.records()?.next() else {
        return Ok(None);
    };
    let record = record?;
    let key = record
        .key()
        .ok_or(FormatError::InvalidRecord("a control record without a key"))?;
    decode_control_key(key)
        .map(Some)
        .map_err(|_| FormatError::InvalidRecord("a control record with a damaged key"))
}

/// What cleaning keeps of the control batch `batch` (Kafka's
/// `checkBatchRetention` for a control batch, with `filterTo`'s delete
/// horizon): `removable` if no batch of its transaction is left
/// ([`TxnTracker::on_control`]), `last` if it is its producer's last write.
/// A marker that may not go stays as it is. The first pass that finds it
/// removable stamps its batch with the delete horizon (`now +
/// delete.retention.ms`, as for tombstones); a pass at or after the
/// horizon removes its record, the batch with it, or only the record if
/// the batch is its producer's last (then kept empty, its producer fields
/// and offsets with it).
fn filter_marker(
    batch: &Batch,
    (removable, last): (bool, bool),
    now: i64,
    delete_retention_ms: i64,
    counts: &mut CleanReport,
) -> std::result::Result<Kept, FormatError> {
    let header = batch.header();
    if !removable {
        return Ok(Kept::Whole);
    }
    let horizon = header.has_delete_horizon().then_some(header.base_timestamp);
    if header.records_count == 0 || horizon.is_some_and(|h| now >= h) {
        if header.records_count > 0 {
            counts.markers_removed += 1;
        }
        return Ok(match (last, header.records_count > 0) {
            (true, true) => Kept::Rewritten(empty_batch(header)),
            (true, false) => Kept::Whole,
            (false, _) => Kept::Nothing,
        });
    }
    if horizon.is_some() {
        return Ok(Kept::Whole);
    }
    let records = batch
        .records()?
        .collect::<std::result::Result<Vec<_>, FormatError>>()?;
    let horizon = now.saturating_add(delete_retention_ms);
    encode(header, &records, Some(horizon), true).map(Kept::Rewritten)
}

/// Decides which records of `batch` stay and re-encodes it if some go (or
/// if a tombstone needs its delete horizon); with `keep_base`, a rewritten
/// batch keeps its base offset (see [`encode`]).
fn filter_batch(
    batch: &Batch,
    (map, keep_base): (&HashMap<Bytes, u64>, bool),
    now: i64,
    delete_retention_ms: i64,
    counts: &mut CleanReport,
) -> std::result::Result<Kept, FormatError> {
    let header = batch.header();
    let horizon = header.has_delete_horizon().then_some(header.base_timestamp);
    let mut kept = Vec::new();
    let mut dropped = false;
    let mut tombstones = false;
    for record in batch.records()? {
        let record = record?;
        let offset = record.offset() as u64;
        let Some(key) = record.key() else {
            counts.keyless_removed += 1;
            dropped = true;
            continue;
        };
        if map.get(key).is_some_and(|&last| last > offset) {
            counts.records_superseded += 1;
            dropped = true;
            continue;
        }
        if record.value().is_none() {
            if horizon.is_some_and(|h| now >= h) {
                counts.tombstones_removed += 1;
                dropped = true;
                continue;
            }
            tombstones = true;
        }
        kept.push(record);
    }
    if kept.is_empty() {
        return Ok(Kept::Nothing);
    }
    let needs_horizon = tombstones && horizon.is_none();
    if !dropped && !needs_horizon {
        return Ok(Kept::Whole);
    }
    let horizon = if tombstones {
        Some(horizon.unwrap_or_else(|| now.saturating_add(delete_retention_ms)))
    } else {
        None
    };
    encode(header, &kept, horizon, keep_base).map(Kept::Rewritten)
}

/// A batch without records that keeps the offsets, timestamp type, flags
/// and producer fields of `original` (Kafka's `writeEmptyHeader`): both
/// timestamps are the original's max timestamp, no compression.
fn empty_batch(original: &BatchHeader) -> Vec<u8> {
    let mut out = vec![0u8; format::RECORDS_OFFSET];
    let attributes = original.attributes
        & (format::TIMESTAMP_TYPE_MASK
            | format::TRANSACTIONAL_FLAG_MASK
            | format::CONTROL_FLAG_MASK);
    write_header(
        &mut out,
        original,
        original.base_offset,
        attributes,
        original.last_offset_delta,
        (original.max_timestamp, original.max_timestamp),
        0,
    );
    out
}

/// Fills in the header of the batch in `out` (records already after it)
/// and its CRC, taking the producer fields and epoch from `original`.
fn write_header(
    out: &mut [u8],
    original: &BatchHeader,
    base_offset: i64,
    attributes: u16,
    last_offset_delta: i32,
    (base_timestamp, max_timestamp): (i64, i64),
    count: i32,
) {
    // `out` is one batch, far below 2 GiB (`segment.bytes` is an i32).
    let batch_length = (out.len() - format::LOG_OVERHEAD) as i32;
    BigEndian::write_i64(&mut out[format::BASE_OFFSET_OFFSET..], base_offset);
    BigEndian::write_i32(&mut out[format::BATCH_LENGTH_OFFSET..], batch_length);
    BigEndian::write_i32(
        &mut out[format::PARTITION_LEADER_EPOCH_OFFSET..],
        original.partition_leader_epoch,
    );
    out[format::MAGIC_OFFSET] = format::MAGIC_V2 as u8;
    BigEndian::write_u16(&mut out[format::ATTRIBUTES_OFFSET..], attributes);
    BigEndian::write_i32(
        &mut out[format::LAST_OFFSET_DELTA_OFFSET..],
        last_offset_delta,
    );
    BigEndian::write_i64(&mut out[format::BASE_TIMESTAMP_OFFSET..], base_timestamp);
    BigEndian::write_i64(&mut out[format::MAX_TIMESTAMP_OFFSET..], max_timestamp);
    BigEndian::write_i64(&mut out[format::PRODUCER_ID_OFFSET..], original.producer_id);
    BigEndian::write_i16(
        &mut out[format::PRODUCER_EPOCH_OFFSET..],
        original.producer_epoch,
    );
    BigEndian::write_i32(
        &mut out[format::BASE_SEQUENCE_OFFSET..],
        original.base_sequence,
    );
    BigEndian::write_i32(&mut out[format::RECORDS_COUNT_OFFSET..], count);
    let crc = format::compute_crc(out);
    BigEndian::write_u32(&mut out[format::CRC_OFFSET..], crc);
}

/// Encodes `records` (a non-empty, increasing subset of the records of the
/// batch `original` heads) as one batch that keeps the original's last
/// offset, producer fields, epoch, codec and timestamp type. It starts at
/// its first record, or with `keep_base` at the original's base offset (as
/// Kafka's cleaner writes every batch), so that its base sequence and
/// last offset still give its last sequence.
fn encode(
    original: &BatchHeader,
    records: &[format::Record],
    horizon: Option<i64>,
    keep_base: bool,
) -> std::result::Result<Vec<u8>, FormatError> {
    let base_offset = if keep_base {
        original.base_offset
    } else {
        records[0].offset()
    };
    let log_append_time = original.timestamp_type() == TimestampType::LogAppendTime;
    let base_timestamp = horizon.unwrap_or_else(|| records[0].timestamp());
    let max_timestamp = if log_append_time {
        original.max_timestamp
    } else {
        records
            .iter()
            .map(format::Record::timestamp)
            .max()
            .unwrap_or(format::NO_TIMESTAMP)
    };
    let mut body = Vec::new();
    for record in records {
        let timestamp_delta = if log_append_time {
            0
        } else {
            record.timestamp().wrapping_sub(base_timestamp)
        };
        let offset_delta = i32::try_from(record.offset() - base_offset)
            .map_err(|_| FormatError::InvalidOffsetDelta("offset delta beyond i32"))?;
        if !format::encode_record(
            &mut body,
            timestamp_delta,
            offset_delta,
            record.key().map(|k| &k[..]),
            record.value().map(|v| &v[..]),
            record.headers(),
        ) {
            return Err(FormatError::InvalidRecord(
                "a record is too large for Kafka's 32-bit lengths",
            ));
        }
    }
    let codec: Compression = original.compression()?;
    let mut out = vec![0u8; format::RECORDS_OFFSET];
    format::compress(codec, &body, &mut out)?;
    if out.len() - format::LOG_OVERHEAD > i32::MAX as usize {
        return Err(FormatError::InvalidRecord("batch exceeds 2 GiB"));
    }
    let count = i32::try_from(records.len())
        .map_err(|_| FormatError::InvalidRecord("too many records for one batch"))?;
    let last_offset_delta = i32::try_from(original.last_offset() - base_offset)
        .map_err(|_| FormatError::InvalidOffsetDelta("offset delta beyond i32"))?;
    let mut attributes = original.attributes & !format::DELETE_HORIZON_FLAG_MASK;
    if horizon.is_some() {
        attributes |= format::DELETE_HORIZON_FLAG_MASK;
    }
    write_header(
        &mut out,
        original,
        base_offset,
        attributes,
        last_offset_delta,
        (base_timestamp, max_timestamp),
        count,
    );
    Ok(out)
}

#[cfg(test)]
mod tests;
