//! Read-only inspection of a segment, for recovery.
//!
//! Recovery judges every segment before it changes any file, so an open that
//! fails on corruption leaves the directory exactly as it found it. A probe
//! either trusts a segment's indexes (after checking them against the log)
//! or scans its log file batch by batch; it writes nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{FormatError, Result};
use crate::format::{self, BatchHeader, RECORD_BATCH_OVERHEAD};
use crate::storage::index::OffsetIndex;
use crate::storage::mmap::ReadMap;
use crate::storage::segment::{INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, segment_file};
use crate::storage::time_index::TimeIndex;
use crate::storage::{OpenMode, Storage};

/// What a full scan of a segment's log file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanOutcome {
    /// Bytes of valid batches from the start of the file.
    pub(crate) valid_bytes: u64,
    /// Offset after the last valid batch (the base offset if none).
    pub(crate) next_offset: u64,
    /// Why scanning stopped before the end of the file, if it did.
    pub(crate) stopped: Option<FormatError>,
    /// Where a batch continuing the log starts after the damage, if one does.
    pub(crate) valid_after_damage: Option<u64>,
}

/// A segment's counters, derived from indexes that passed their checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counters {
    pub(crate) next_offset: u64,
    pub(crate) max_timestamp: i64,
    pub(crate) offset_of_max_timestamp: u64,
    pub(crate) rolling_timestamp: Option<i64>,
    pub(crate) bytes_since_last_index_entry: u64,
}

/// A read-only view of one segment's files.
#[derive(Debug)]
pub(crate) struct SegmentProbe {
    base_offset: u64,
    path: PathBuf,
    map: Arc<ReadMap>,
}

impl SegmentProbe {
    /// Maps the segment's log file read-only.
    pub(crate) fn open(storage: &dyn Storage, dir: &Path, base_offset: u64) -> Result<Self> {
        let path = segment_file(dir, base_offset, LOG_SUFFIX);
        let file = storage.open(&path, OpenMode::Existing)?;
        let len = usize::try_from(file.len()?).unwrap_or(usize::MAX);
        let map = file.map(len)?;
        Ok(SegmentProbe {
            base_offset,
            path,
            map,
        })
    }

    /// The log file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The log file's length.
    pub(crate) fn len(&self) -> u64 {
        self.map.len() as u64
    }

    /// Validates the batch at the start of `buf` as the one following
    /// `next_offset` in this segment: structure, CRC, and offsets that
    /// continue the segment and fit its relative offsets.
    fn check_next(&self, buf: &[u8], next_offset: u64) -> Result<BatchHeader, FormatError> {
        let header = format::check_batch(buf)?;
        if header.base_offset < next_offset as i64 {
            return Err(FormatError::InvalidOffsetDelta(
                "batch offsets go backwards",
            ));
        }
        let last = header.last_offset();
        if last < header.base_offset || (last as u64) - self.base_offset > u64::from(u32::MAX) {
            return Err(FormatError::InvalidOffsetDelta(
                "batch offsets leave the segment's range",
            ));
        }
        Ok(header)
    }

    /// Scans the whole log file with CRC checks. Stops at the first invalid
    /// batch and looks past it for a batch that continues the log.
    pub(crate) fn scan(&self) -> ScanOutcome {
        let bytes = self.map.as_slice();
        let mut position = 0usize;
        let mut next_offset = self.base_offset;
        let mut stopped = None;
        while position < bytes.len() {
            match self.check_next(&bytes[position..], next_offset) {
                Ok(header) => {
                    position += header.total_size();
                    next_offset = header.next_offset() as u64;
                }
                Err(e) => {
                    stopped = Some(e);
                    break;
                }
            }
        }
        let valid_after_damage = stopped
            .as_ref()
            .and_then(|_| self.find_continuation(bytes, position, next_offset));
        ScanOutcome {
            valid_bytes: position as u64,
            next_offset,
            stopped,
            valid_after_damage,
        }
    }

    /// Looks for a valid batch anywhere after `damaged` whose base offset is
    /// at least `next_offset`. A stale copy of an earlier batch does not
    /// count: it cannot be data that was appended after the damage.
    fn find_continuation(&self, bytes: &[u8], damaged: usize, next_offset: u64) -> Option<u64> {
        let mut candidate = damaged + 1;
        while candidate + RECORD_BATCH_OVERHEAD <= bytes.len() {
            // Cheap filter first: the magic byte.
            if bytes[candidate + format::MAGIC_OFFSET] == format::MAGIC_V2 as u8
                && self.check_next(&bytes[candidate..], next_offset).is_ok()
            {
                return Some(candidate as u64);
            }
            candidate += 1;
        }
        None
    }

    /// The segment's counters from its indexes, if the indexes can be
    /// trusted: both files are clean, the last offset index entry points at
    /// the batch that ends at its offset, every batch from there to the end
    /// of the file is valid and the file ends with a whole batch, and the
    /// last time index entry names the batch holding the segment's largest
    /// timestamp (no later batch has a larger one, so a time index that lost
    /// its tail is caught). Anything else: `None`, and the caller scans.
    ///
    /// # Errors
    /// [`crate::Error::Io`] reading the index files.
    pub(crate) fn trusted(&self, storage: &dyn Storage, dir: &Path) -> Result<Option<Counters>> {
        let base = self.base_offset;
        let Some(last_time) =
            TimeIndex::inspect(storage, &segment_file(dir, base, TIME_INDEX_SUFFIX), base)?
        else {
            return Ok(None);
        };
        let holder = last_time.map_or(base, |(_, offset)| offset);
        let Some((last_index, floor)) = OffsetIndex::inspect_floor(
            storage,
            &segment_file(dir, base, INDEX_SUFFIX),
            base,
            holder,
        )?
        else {
            return Ok(None);
        };
        Ok(self.check_indexes(last_index, last_time, floor))
    }

    /// `floor` is the offset index entry at or below the batch holding the
    /// largest timestamp, where the walk for that batch starts.
    fn check_indexes(
        &self,
        last_index: Option<(u64, u32)>,
        last_time: Option<(i64, u64)>,
        floor: Option<(u64, u32)>,
    ) -> Option<Counters> {
        let bytes = self.map.as_slice();
        if bytes.is_empty() {
            return (last_index.is_none() && last_time.is_none()).then_some(Counters {
                next_offset: self.base_offset,
                max_timestamp: format::NO_TIMESTAMP,
                offset_of_max_timestamp: self.base_offset,
                rolling_timestamp: None,
                bytes_since_last_index_entry: 0,
            });
        }
        let indexed = match last_index {
            Some((offset, position)) => {
                let at = usize::try_from(position)
                    .ok()
                    .filter(|&p| p < bytes.len())?;
                let header = format::check_batch(&bytes[at..]).ok()?;
                (header.last_offset() == offset as i64).then_some((offset, at))?
            }
            None => (self.base_offset, 0),
        };
        // A closed segment's time index ends with its largest timestamp.
        let (max_timestamp, offset_of_max) = last_time?;
        // Index entries name the batch that ends at their offset, so the
        // walk starts at the floor entry's batch: its end is at or below the
        // holder's.
        let start = if offset_of_max >= indexed.0 {
            indexed.1
        } else {
            floor
                .and_then(|(_, position)| usize::try_from(position).ok())
                .filter(|&p| p <= indexed.1)
                .unwrap_or(0)
        };
        // Batches before the last index entry are trusted as the index is;
        // they are walked (headers only, no CRC: a closed segment is read
        // only as far as needed) just to check that none holds a larger
        // timestamp than the time index says. From the last index entry on,
        // every batch is CRC-checked.
        let mut position = start;
        let mut holder_seen = false;
        let mut last = None;
        while position < bytes.len() {
            let rest = &bytes[position..];
            // The first batch is CRC-checked too: it proves the floor entry
            // points at a real batch boundary.
            let header = if position >= indexed.1 || position == start {
                format::check_batch(rest).ok()?
            } else {
                let header = BatchHeader::parse(rest).ok()?;
                if header.total_size() > rest.len() || header.last_offset_delta < 0 {
                    return None;
                }
                header
            };
            if holder_seen && header.max_timestamp > max_timestamp {
                return None;
            }
            if header.last_offset() == offset_of_max as i64 {
                if header.max_timestamp != max_timestamp {
                    return None;
                }
                holder_seen = true;
            }
            position += header.total_size();
            last = Some(header);
        }
        let last = last?;
        if !holder_seen || position != bytes.len() {
            return None;
        }
        let first = BatchHeader::parse(bytes).ok()?;
        Some(Counters {
            next_offset: last.next_offset() as u64,
            max_timestamp,
            offset_of_max_timestamp: offset_of_max,
            rolling_timestamp: Some(first.max_timestamp),
            bytes_since_last_index_entry: (bytes.len() - indexed.1) as u64,
        })
    }
}
