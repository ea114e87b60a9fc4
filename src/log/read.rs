//! Reads: by offset (whole batches, zero-copy) and by timestamp.
//!
//! ## Bytes this process checked
//! A read also says which of the bytes it returns this process has already
//! checked ([`LogRead`]'s checked range), so that a consumer with
//! `check.crcs=true` checks each batch's CRC once, not again on every read
//! (a third of a 1 KiB consume went to CRC-32C). Each segment
//! keeps one range of its file known good (`Segment::checked`):
//!
//! - **What extends it**: every append publishes bytes that were checked
//!   or built in this process an instant before, from the buffer written:
//!   client batches ([`Log::append`]: CRC, structure and records
//!   validated) and a follower's copies ([`Log::append_as_follower`]:
//!   validated the same way, except the batches its leader's read in this
//!   process reported as checked, which are copied from those bytes);
//!   batches logbus's producer, the coordinators
//!   and the transaction markers built (their CRC computed here over those
//!   bytes); the cleaner's output (each source batch's CRC checked as it
//!   was read, kept batches copied from those bytes, rewritten ones with
//!   a CRC computed here); and what recovery scanned whole at open (every
//!   batch's CRC checked, from the scan's first batch to the end of the
//!   segment).
//! - **Where it starts**: a segment opened from existing files, not
//!   scanned, starts with an empty range at its end: its bytes were
//!   written by another process (or an earlier run) and are checked by
//!   every reader as before; what this process appends to it is covered.
//! - **What shrinks it**: segment bytes are never rewritten in place. A
//!   truncation (a follower's `truncate_to`, recovery's cut of a torn
//!   tail) clamps the range to the bytes kept, so bytes appended later at
//!   the same positions are covered only by their own append. A file that
//!   a truncation replaces by rename (the shrink rule) gets the kept
//!   prefix copied from the old file's bytes, unchanged. A deleted
//!   segment takes its range with it; a cleaned segment that replaces
//!   others comes with its own range (its appends'), never the old ones';
//!   a new segment (a roll, a spare) starts empty and grows with its
//!   appends.
//! - **Who may trust it**: only a log whose directory lock this process
//!   holds. A read-only view
//!   ([`Cluster::open_read_only`](crate::Cluster::open_read_only)) holds
//!   none and reads files another process writes and may cut: its reads
//!   report nothing as checked, so every CRC is checked there.
//! - **What a read reports**: the part of the checked range within the
//!   bytes returned. The bytes a [`LogRead`] holds never change (a
//!   truncation never shrinks a file under a live map), so what was
//!   checked when the read ran stays checked for as long as they are held.
//!
//! What this does not catch: bytes below the mark that change underneath
//! the running process (another program writing into a locked log's
//! files, or a device returning different bytes for a page the kernel
//! evicted and read back). `check.crcs` guards against damage of what is
//! stored, found when it is read by a process that did not check it; the
//! same damage is found by a reader in any later process (which starts
//! with nothing checked) and by `logbus verify`.
//!
//! The log's own walk to the batch a read starts at ([`Log::read`] checks
//! every batch it walks) skips the CRC of the batches within the checked
//! range in the same way.

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::format::header::{OffsetOrder, out_of_sequence};
use crate::format::{Batch, Batches};
use crate::log::Log;
use crate::storage::mmap::MapRange;

/// The result of [`Log::read`]: whole record batches, zero-copy views of the
/// segment's memory map, plus the log's offsets at the time of the read.
#[derive(Debug, Clone)]
pub struct LogRead {
    records: Bytes,
    /// Where `records` lie in the segment's map; `None` when empty.
    source: Option<MapRange>,
    log_start_offset: u64,
    log_end_offset: u64,
    /// For a read_committed read ([`Log::read_committed`]): the aborted
    /// transactions overlapping the records returned.
    aborted: Option<Vec<AbortedTransaction>>,
    /// The bytes of `records` this process checked before (see the module
    /// docs): a batch wholly within them needs no CRC check.
    checked: std::ops::Range<usize>,
}

/// A transaction that was aborted, as a read_committed read reports it
/// (Kafka's `FetchResponse.AbortedTransaction`): from `first_offset` on,
/// the records of producer `producer_id` up to its next ABORT marker
/// belong to the aborted transaction and must be skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AbortedTransaction {
    /// The transaction's producer id.
    pub producer_id: i64,
    /// The transaction's first offset in the partition.
    pub first_offset: u64,
}

impl LogRead {
    /// For a read_committed read ([`Log::read_committed`]), the aborted
    /// transactions whose records may lie among the batches returned
    /// (those whose first offset is below the end of the read and whose
    /// ABORT marker is at or after the offset read), ordered by ABORT
    /// marker; `None` for a read_uncommitted read.
    #[must_use]
    pub fn aborted_transactions(&self) -> Option<&[AbortedTransaction]> {
        self.aborted.as_deref()
    }

    /// The batches' bytes, laid end to end exactly as stored. The first batch
    /// holds the requested offset (it may start before it: skip records
    /// below the offset you asked for). Empty when reading at the log end.
    #[must_use]
    pub fn records(&self) -> &Bytes {
        &self.records
    }

    /// Iterates over the batches, checking each one's CRC and structure.
    pub fn batches(&self) -> Batches {
        Batches::new(self.records.clone())
    }

    /// The part of [`LogRead::records`] whose batches this process checked
    /// (CRC and structure) or built before the read, as positions in
    /// `records`: a reader that checks CRCs may skip those of the batches
    /// lying wholly within it (see the module docs). Empty when nothing
    /// returned is known good.
    pub(crate) fn checked(&self) -> std::ops::Range<usize> {
        self.checked.clone()
    }

    /// Where the bytes lie in the segment's memory map (to release them from
    /// this process's resident set once read); `None` when there are none.
    pub(crate) fn source(&self) -> Option<&MapRange> {
        self.source.as_ref()
    }

    /// The log start offset when the read ran.
    #[must_use]
    pub fn log_start_offset(&self) -> u64 {
        self.log_start_offset
    }

    /// The log end offset when the read ran.
    #[must_use]
    pub fn log_end_offset(&self) -> u64 {
        self.log_end_offset
    }
}

/// A record found by [`Log::offset_for_timestamp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    /// The record's offset.
    pub offset: u64,
    /// The record's timestamp.
    pub timestamp: i64,
}

impl Log {
    /// Reads whole batches starting with the one that holds `offset`, up to
    /// `max_bytes` but always at least one batch. Batches are never split.
    /// Reading at the log end offset returns no bytes. The same as
    /// [`Log::read_bounded`] with the log end offset as the bound.
    ///
    /// Offsets are checked on the way (the CRC does not cover a batch's base
    /// offset): every batch walked to find `offset` must follow the one
    /// before it, the first batch returned must hold `offset` (in a
    /// compacted log, be the first one ending at or after it), and the run
    /// returned ends before any batch that does not continue it. A read
    /// never skips or repeats offsets: it fails instead.
    ///
    /// # Errors
    /// [`Error::OffsetOutOfRange`] when `offset` is below the log start
    /// offset or above the log end offset; [`Error::Corrupt`] (with
    /// [`CorruptionKind::Batch`](crate::CorruptionKind::Batch)) if a stored
    /// batch on the way is damaged or its offsets do not fit its place.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<LogRead> {
        self.read_bounded(offset, max_bytes, u64::MAX)
    }

    /// [`Log::read`] below `max_offset` (exclusive): only whole batches
    /// whose last offset is below it are returned, so a read bounded by a
    /// high watermark that lies below the log end offset never hands out a
    /// record at or above it. As Kafka's `LocalLog.read` with its
    /// `maxOffsetMetadata`: a read at or above the bound returns no bytes
    /// (not an error, as long as `offset` is within the log), and so does a
    /// read whose first batch reaches the bound (`max_bytes` never lets a
    /// batch cross it). A bound above the log end offset is the log end
    /// offset.
    ///
    /// # Errors
    /// As [`Log::read`].
    pub fn read_bounded(&self, offset: u64, max_bytes: usize, max_offset: u64) -> Result<LogRead> {
        let state = self.inner.state.read();
        read_locked(&state, offset, max_bytes, max_offset)
    }

    /// A read for a read_committed consumer: [`Log::read_bounded`] below
    /// the last stable offset ([`Log::last_stable_offset`]) as well as
    /// `max_offset`, with the aborted transactions overlapping the batches
    /// returned ([`LogRead::aborted_transactions`], collected from the
    /// `.txnindex` files of the segments from the one holding `offset` on,
    /// as Kafka's `collectAbortedTransactions`). The reader skips an
    /// aborted transaction's records and every control batch.
    ///
    /// # Errors
    /// As [`Log::read`].
    pub fn read_committed(
        &self,
        offset: u64,
        max_bytes: usize,
        max_offset: u64,
    ) -> Result<LogRead> {
        let state = self.inner.state.read();
        let lso = super::txn::last_stable_offset(&self.inner, &state);
        let mut read = read_locked(&state, offset, max_bytes, max_offset.min(lso))?;
        let mut upper = offset;
        let mut at = 0;
        while let Ok(header) = crate::format::BatchHeader::parse(&read.records[at..]) {
            upper = upper.max(u64::try_from(header.next_offset()).unwrap_or(upper));
            at += header.total_size();
            if at >= read.records.len() {
                break;
            }
        }
        read.aborted = Some(super::txn::collect_aborted(&state, offset, upper));
        Ok(read)
    }
}

/// [`Log::read_bounded`] under the state lock.
fn read_locked(
    state: &super::LogState,
    offset: u64,
    max_bytes: usize,
    max_offset: u64,
) -> Result<LogRead> {
    {
        let (start, end) = (state.log_start_offset, state.log_end_offset);
        if offset < start || offset > end {
            return Err(Error::OffsetOutOfRange {
                offset,
                log_start: start,
                log_end: end,
            });
        }
        let mut records = Bytes::new();
        let mut source = None;
        let mut checked = 0..0;
        if offset < end.min(max_offset) {
            for segment in &state.segments[state.segment_index_for(offset)..] {
                let trusted = if state.trust_checked {
                    segment.checked()
                } else {
                    0..0
                };
                if let Some((position, header)) =
                    segment.find_batch_trusting(offset, trusted.clone())?
                {
                    // Found in a later segment, or after a gap: the batch
                    // does not hold `offset`, which only compaction explains.
                    if segment.offset_order() == OffsetOrder::Contiguous
                        && header.base_offset > offset as i64
                    {
                        let (base, last) = header
                            .checked_offsets()
                            .map_err(|e| segment.corrupt(position, e))?;
                        return Err(segment.corrupt(
                            position,
                            out_of_sequence(
                                base,
                                last,
                                offset,
                                "a read of that offset gets the batch holding it",
                            ),
                        ));
                    }
                    let run_end = segment.batch_run_end(position, max_bytes as u64, max_offset)?;
                    let (bytes, range) = segment.slice_mapped(position, run_end)?;
                    // The trusted range, within the bytes returned.
                    let (from, to) = (trusted.start.max(position), trusted.end.min(run_end));
                    if from < to {
                        checked = (from - position) as usize..(to - position) as usize;
                    }
                    records = bytes;
                    source = Some(range);
                    break;
                }
            }
        }
        Ok(LogRead {
            records,
            source,
            log_start_offset: start,
            log_end_offset: end,
            aborted: None,
            checked,
        })
    }
}

impl Log {
    /// The first record (in offset order, at or after the log start offset)
    /// whose timestamp is `>= timestamp`, as Kafka's `offsetsForTimes`
    /// finds it; `None` if there is none.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if a batch on the way is damaged.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<TimestampOffset>> {
        let state = self.inner.state.read();
        let log_start = state.log_start_offset;
        for segment in &state.segments {
            if segment.max_timestamp() < timestamp || segment.next_offset() <= log_start {
                continue;
            }
            let from = segment.timestamp_scan_start(timestamp)?;
            for item in segment.batches_from(from)? {
                let (position, header) = item.map_err(|(p, e)| segment.corrupt(p, e))?;
                if header.max_timestamp < timestamp || (header.last_offset() as u64) < log_start {
                    continue;
                }
                let bytes = segment.slice(position, position + header.total_size() as u64)?;
                let batch = Batch::from_bytes(bytes).map_err(|e| segment.corrupt(position, e))?;
                for record in batch.records().map_err(|e| segment.corrupt(position, e))? {
                    let record = record.map_err(|e| segment.corrupt(position, e))?;
                    let offset = record.offset() as u64;
                    if offset >= log_start && record.timestamp() >= timestamp {
                        return Ok(Some(TimestampOffset {
                            offset,
                            timestamp: record.timestamp(),
                        }));
                    }
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use crate::error::Error;
    use crate::format::BatchBuilder;
    use crate::log::Log;
    use crate::types::Compression;

    /// The (base, last) offsets of the batches a read returned.
    fn spans(read: &super::LogRead) -> Vec<(i64, i64)> {
        read.batches()
            .map(|b| {
                let header = *b.unwrap().header();
                (header.base_offset, header.last_offset())
            })
            .collect()
    }

    /// Every offset and bound over a small log, against a model: the read
    /// starts at the batch holding the offset and keeps whole batches while
    /// their last offset is below the bound, as Kafka's read up to a high
    /// watermark position does.
    #[test]
    fn a_bounded_read_returns_only_whole_batches_below_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::builder(dir.path().join("t-0")).open().unwrap();
        let sizes = [2, 3, 1, 4];
        let mut batches = Vec::new();
        for size in sizes {
            let mut builder = BatchBuilder::new(Compression::None);
            for _ in 0..size {
                builder.append(1, None, Some(b"v"), &[]);
            }
            let info = log
                .append(&mut builder.build().unwrap().to_vec(), 0)
                .unwrap();
            batches.push((info.first_offset() as i64, info.last_offset() as i64));
        }
        let end = log.log_end_offset();
        assert_eq!(end, 10);
        for offset in 0..=end {
            for bound in 0..=end + 1 {
                let expected: Vec<(i64, i64)> = batches
                    .iter()
                    .copied()
                    .skip_while(|&(_, last)| last < offset as i64)
                    .take_while(|&(_, last)| last < bound as i64)
                    .collect();
                let read = log.read_bounded(offset, usize::MAX, bound).unwrap();
                assert_eq!(spans(&read), expected, "offset {offset}, bound {bound}");
                assert_eq!(read.log_end_offset(), end);
            }
        }
        // A batch straddling the bound is held back even as the only one.
        assert!(log.read_bounded(2, 1, 4).unwrap().records().is_empty());
        assert_eq!(spans(&log.read_bounded(2, 1, 5).unwrap()), [(2, 4)]);
        // At least one batch, and `max_bytes` never lets one cross the bound.
        assert_eq!(spans(&log.read_bounded(0, 1, u64::MAX).unwrap()), [(0, 1)]);
        assert!(matches!(
            log.read_bounded(end + 1, usize::MAX, end),
            Err(Error::OffsetOutOfRange { .. })
        ));
        log.close().unwrap();
    }
}
