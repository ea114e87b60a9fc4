//! Read-only inspection of a segment, for recovery.
//!
//! Recovery judges every segment before it changes any file, so an open that
//! fails on corruption leaves the directory exactly as it found it. A probe
//! either trusts a segment's indexes (after checking them against the log)
//! or scans its log file batch by batch; it writes nothing.
//!
//! ## What a scan checks
//! Every batch: its structure and CRC, its position (no batch starts beyond
//! [`MAX_BATCH_POSITION`]), offsets that fit the segment (at most 2^32 − 1
//! above its base offset, what Kafka's index files address), and offsets
//! that follow the batch before it as the log's [`OffsetOrder`] says. The
//! CRC does not cover `baseOffset`, so the order is what catches a damaged
//! one: in a log that is not compacted a batch starts exactly after the one
//! before it (the first at the segment's base offset); in a compacted log
//! it starts above it, and an offset index entry at its position must name
//! its last offset.
//!
//! The first batch failing a check is the segment's damage. Its offset (the
//! offset the batch had to start at) decides what recovery does with it
//! (see `log/open.rs`); the probe only locates it and, for the report,
//! looks past it for valid-looking batches that continue the log.
//!
//! In a compacted log a batch whose base offset was raised by damage still
//! starts above its predecessor; only the batch after it (which then starts
//! at or below its last offset) shows the conflict. Either of the two may
//! be the damaged one, so the damage is placed at the earlier, unless an
//! index entry vouches for it or the later one conflicts with the batches
//! before the earlier one too.
//!
//! ## Looking past damage
//! The search for a continuation checks cheap structure first at each
//! candidate position (the magic byte, found a zero page at a time; a
//! header whose length fits the file, known attribute bits and codec,
//! lastOffsetDelta and recordsCount that agree, offsets in the expected
//! range) and computes a CRC only for the rare candidate passing all of
//! them, so it is linear in the file's size.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{CorruptionKind, FormatError, Result};
use crate::format::header::{OffsetOrder, out_of_sequence};
use crate::format::{self, BatchHeader, MAGIC_OFFSET, MAGIC_V2, RECORD_BATCH_OVERHEAD};
use crate::storage::index::{OFFSET_ENTRY_SIZE, OffsetEntries, OffsetIndex};
use crate::storage::index_file::plausible_bytes;
use crate::storage::mmap::ReadMap;
use crate::storage::segment::{INDEX_SUFFIX, MAX_BATCH_POSITION, TIME_INDEX_SUFFIX, segment_file};
use crate::storage::time_index::{TIME_ENTRY_SIZE, TimeIndex};
use crate::storage::{OpenMode, Storage};
use crate::types::Compression;

/// The smallest possible record: a one-byte length, attributes, timestamp
/// delta, offset delta, key length, value length and header count.
const MIN_RECORD_SIZE: u64 = 7;

/// Attribute bits Kafka defines (codec, timestamp type, transactional,
/// control, delete horizon); the others are always zero.
const KNOWN_ATTRIBUTES: u16 = 0x7f;

/// What a full scan of a segment's log file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanOutcome {
    /// Bytes of valid batches from the start of the file: where the damage
    /// starts, if there is any.
    pub(crate) valid_bytes: u64,
    /// Offset after the last valid batch (the base offset if none).
    pub(crate) next_offset: u64,
    /// The first damage, if the scan found any.
    pub(crate) damage: Option<Damage>,
    /// The last valid batch, when there is no damage: a compacted log's
    /// next segment may show that its offsets were raised by damage.
    pub(crate) tail: Option<Tail>,
}

/// Damage a scan found, where the valid part of the segment ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    /// Where it starts: the end of the valid batches before it.
    pub(crate) position: u64,
    /// The offset the damaged batch had to start at: the first offset
    /// recovery loses if it cuts here.
    pub(crate) offset: u64,
    /// What is wrong.
    pub(crate) cause: CorruptionKind,
    /// Where a valid-looking batch continuing the log (offsets at or above
    /// `offset`) follows the damage in the same file, if one does.
    pub(crate) valid_after: Option<u64>,
    /// The offset after the last valid-looking batch from `valid_after` on:
    /// how far the data after the damage reached.
    pub(crate) claimed_end: Option<u64>,
}

/// The last valid batch of a scanned segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tail {
    /// Its position.
    pub(crate) position: u64,
    /// Its base offset.
    pub(crate) base: u64,
    /// Its last offset.
    pub(crate) last: u64,
    /// The offset it had to start at or above.
    pub(crate) floor: u64,
    /// Whether an offset index entry names its last offset.
    pub(crate) confirmed: bool,
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

/// A valid batch a scan accepted.
#[derive(Debug, Clone, Copy)]
struct Accepted {
    position: u64,
    floor: u64,
    base: u64,
    last: u64,
    confirmed: bool,
}

/// A read-only view of one segment's log file.
#[derive(Debug)]
pub(crate) struct SegmentProbe {
    base_offset: u64,
    path: PathBuf,
    map: Arc<ReadMap>,
    order: OffsetOrder,
}

impl SegmentProbe {
    /// Maps the log file at `path` (a segment of base offset `base_offset`
    /// whose batches follow each other as `order` says) read-only.
    ///
    /// # Errors
    /// [`crate::Error::Io`].
    pub(crate) fn open(
        storage: &dyn Storage,
        path: PathBuf,
        base_offset: u64,
        order: OffsetOrder,
    ) -> Result<Self> {
        let file = storage.open(&path, OpenMode::Existing)?;
        let len = usize::try_from(file.len()?).unwrap_or(usize::MAX);
        let map = file.map(len)?;
        Ok(SegmentProbe {
            base_offset,
            path,
            map,
            order,
        })
    }

    /// The log file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The segment's base offset.
    pub(crate) fn base_offset(&self) -> u64 {
        self.base_offset
    }

    /// The log file's length.
    pub(crate) fn len(&self) -> u64 {
        self.map.len() as u64
    }

    /// A damage record at `position` for a batch that had to start at
    /// `offset`.
    fn damage(&self, position: u64, offset: u64, cause: CorruptionKind) -> Damage {
        let valid_after = self.find_continuation(position + 1, offset);
        let claimed_end = valid_after.and_then(|at| self.claimed_end(at, offset));
        Damage {
            position,
            offset,
            cause,
            valid_after,
            claimed_end,
        }
    }

    /// Checks the batch at `position` (a batch may start there): structure,
    /// CRC, offsets and their range. Returns the header and its offsets.
    fn check_batch_at(
        &self,
        position: u64,
    ) -> std::result::Result<(BatchHeader, u64, u64), CorruptionKind> {
        if position > MAX_BATCH_POSITION {
            return Err(CorruptionKind::PositionOutOfRange {
                limit: MAX_BATCH_POSITION,
            });
        }
        let bytes = usize::try_from(position)
            .ok()
            .and_then(|p| self.map.as_slice().get(p..))
            .unwrap_or_default();
        let header = format::check_batch(bytes).map_err(CorruptionKind::Batch)?;
        let (base, last) = header.checked_offsets().map_err(CorruptionKind::Batch)?;
        Ok((header, base, last))
    }

    /// Whether `last` lies in the range of offsets the segment can address.
    fn in_range(&self, base: u64, last: u64) -> std::result::Result<(), CorruptionKind> {
        if base >= self.base_offset && last - self.base_offset <= u64::from(u32::MAX) {
            Ok(())
        } else {
            Err(CorruptionKind::OffsetOutsideSegment {
                offset: i64::try_from(if base < self.base_offset { base } else { last })
                    .unwrap_or(i64::MAX),
                segment_base: self.base_offset,
            })
        }
    }

    /// Scans the whole log file: every batch with the checks the module
    /// docs list, stopping at the first damage. `index` holds the entries of
    /// the segment's offset index when its file is clean; a compacted log's
    /// batches are checked against them (see the module docs).
    pub(crate) fn scan(&self, index: Option<&OffsetEntries>) -> ScanOutcome {
        let bytes = self.map.as_slice();
        let len = bytes.len() as u64;
        let index = index.filter(|_| self.order == OffsetOrder::Increasing);
        let mut next_entry = 0;
        let mut position = 0u64;
        let mut expected = self.base_offset;
        let mut previous: Option<Accepted> = None;
        let mut damage = None;
        while position < len {
            let (header, base, last) = match self.check_batch_at(position) {
                Ok(checked) => checked,
                Err(cause) => {
                    damage = Some((position, expected, cause));
                    break;
                }
            };
            if let Err(e) = self.order.check(expected, &header) {
                // When the earlier batch is blamed, the valid part ends
                // before it.
                damage = Some(self.attribute_conflict(previous, position, expected, base, e));
                break;
            }
            if let Err(cause) = self.in_range(base, last) {
                damage = Some((position, expected, cause));
                break;
            }
            let mut confirmed = false;
            if let Some(index) = index {
                while next_entry < index.len() && u64::from(index.get(next_entry).1) < position {
                    next_entry += 1;
                }
                if next_entry < index.len() {
                    let (entry, at) = index.get(next_entry);
                    if u64::from(at) == position {
                        if entry != last {
                            let cause = CorruptionKind::Batch(out_of_sequence(
                                base,
                                last,
                                entry,
                                "a batch ends at the offset its offset index entry names",
                            ));
                            damage = Some((position, expected, cause));
                            break;
                        }
                        confirmed = true;
                    }
                }
            }
            previous = Some(Accepted {
                position,
                floor: expected,
                base,
                last,
                confirmed,
            });
            position += header.total_size() as u64;
            expected = last + 1;
        }
        match damage {
            Some((at, offset, cause)) => ScanOutcome {
                valid_bytes: at,
                next_offset: offset,
                damage: Some(self.damage(at, offset, cause)),
                tail: None,
            },
            None => ScanOutcome {
                valid_bytes: position,
                next_offset: expected,
                damage: None,
                tail: previous.map(|p| Tail {
                    position: p.position,
                    base: p.base,
                    last: p.last,
                    floor: p.floor,
                    confirmed: p.confirmed,
                }),
            },
        }
    }

    /// Where the damage lies when the batch at `position` (base offset
    /// `base`) breaks the order after `previous`: `(position, offset,
    /// cause)`. In a log that is not compacted every accepted batch
    /// continues its predecessors exactly, back to the segment's base
    /// offset, so the batch breaking the order is the damaged one. In a
    /// compacted log the conflict may come from the previous batch's base
    /// offset having been raised instead; then the previous batch is
    /// blamed, unless an index entry confirms it or this batch conflicts
    /// with the batches before it as well.
    fn attribute_conflict(
        &self,
        previous: Option<Accepted>,
        position: u64,
        expected: u64,
        base: u64,
        error: FormatError,
    ) -> (u64, u64, CorruptionKind) {
        let blame_this = (position, expected, CorruptionKind::Batch(error));
        if self.order != OffsetOrder::Increasing {
            return blame_this;
        }
        match previous {
            Some(p) if !p.confirmed && base >= p.floor => (
                p.position,
                p.floor,
                CorruptionKind::Batch(out_of_sequence(
                    p.base,
                    p.last,
                    base,
                    "the batch after it starts at or below its last offset; in a compacted log \
                     either may be the damaged one, so recovery stops at the earlier",
                )),
            ),
            _ => blame_this,
        }
    }

    /// The position of the first valid-looking batch at or after `from`
    /// whose offsets continue the log at or above `expected` (a stale copy
    /// of an earlier batch does not count). Cheap checks first; a CRC only
    /// for candidates passing them (see the module docs).
    pub(crate) fn find_continuation(&self, from: u64, expected: u64) -> Option<u64> {
        let bytes = self.map.as_slice();
        // Headers that start at a valid position.
        let searched = bytes
            .len()
            .min(MAX_BATCH_POSITION as usize + RECORD_BATCH_OVERHEAD);
        let mut candidate = usize::try_from(from).ok()?;
        loop {
            let at = next_magic(&bytes[..searched], candidate)?;
            if self.plausible_continuation(&bytes[at..], expected) {
                return Some(at as u64);
            }
            candidate = at + 1;
        }
    }

    /// Whether `buf` starts with a batch that could continue the log at or
    /// above `expected`: cheap structure first, then the CRC.
    fn plausible_continuation(&self, buf: &[u8], expected: u64) -> bool {
        let Ok(header) = BatchHeader::parse(buf) else {
            return false;
        };
        let size = header.total_size();
        if size > buf.len() || header.attributes & !KNOWN_ATTRIBUTES != 0 {
            return false;
        }
        let Ok(codec) = header.compression() else {
            return false;
        };
        let count = header.records_count;
        if count < 0 || (count > 0 && i64::from(header.last_offset_delta) < i64::from(count) - 1) {
            return false;
        }
        let records_bytes = (size - RECORD_BATCH_OVERHEAD) as u64;
        if codec == Compression::None && count as u64 * MIN_RECORD_SIZE > records_bytes {
            return false;
        }
        match header.checked_offsets() {
            Ok((base, last)) if base >= expected && self.in_range(base, last).is_ok() => {}
            _ => return false,
        }
        format::verify_crc(&buf[..size]).is_ok()
    }

    /// The offset after the last of the valid batches from `position` on,
    /// each starting above the one before it, the first at or above
    /// `expected`; `None` if there is none. For the report: how far data
    /// after damage reached.
    pub(crate) fn claimed_end(&self, position: u64, expected: u64) -> Option<u64> {
        let mut position = position;
        let mut expected = expected;
        let mut end = None;
        while position < self.len() {
            let Ok((header, base, last)) = self.check_batch_at(position) else {
                break;
            };
            if base < expected || self.in_range(base, last).is_err() {
                break;
            }
            end = Some(last + 1);
            expected = last + 1;
            position += header.total_size() as u64;
        }
        end
    }

    /// The entries of the segment's offset index, if its file exists, is
    /// clean and no larger than the segment could need (read through a map:
    /// nothing is allocated per entry).
    ///
    /// # Errors
    /// [`crate::Error::Io`] reading the file.
    pub(crate) fn offset_index(
        &self,
        storage: &dyn Storage,
        path: &Path,
        index_bytes: u64,
    ) -> Result<Option<OffsetEntries>> {
        OffsetIndex::inspect(
            storage,
            path,
            self.base_offset,
            plausible_bytes(self.len(), index_bytes, OFFSET_ENTRY_SIZE),
        )
    }

    /// The segment's counters from its indexes, if the indexes can be
    /// trusted: both files are clean (and no larger than the segment could
    /// need), the last offset index entry points at the batch that ends at
    /// its offset, every batch from there to the end of the file is valid
    /// and follows the one before it, the file ends with a whole batch, and
    /// the last time index entry names the batch holding the segment's
    /// largest timestamp (no later batch has a larger one, so a time index
    /// that lost its tail is caught). Anything else: `None`, and the caller
    /// scans. `index_bytes` is `segment.index.bytes`.
    ///
    /// # Errors
    /// [`crate::Error::Io`] reading the index files.
    pub(crate) fn trusted(
        &self,
        storage: &dyn Storage,
        dir: &Path,
        index_bytes: u64,
    ) -> Result<Option<Counters>> {
        let base = self.base_offset;
        let Some(last_time) = TimeIndex::inspect(
            storage,
            &segment_file(dir, base, TIME_INDEX_SUFFIX),
            base,
            plausible_bytes(self.len(), index_bytes, TIME_ENTRY_SIZE),
        )?
        else {
            return Ok(None);
        };
        let holder = last_time.map_or(base, |(_, offset)| offset);
        let Some(entries) =
            self.offset_index(storage, &segment_file(dir, base, INDEX_SUFFIX), index_bytes)?
        else {
            return Ok(None);
        };
        Ok(self.check_indexes(entries.last(), last_time, entries.floor(holder)))
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
                let at = u64::from(position);
                let (_, _, last) = self.check_batch_at(at).ok()?;
                (last == offset).then_some((offset, at))?
            }
            None => (self.base_offset, 0),
        };
        // A closed segment's time index ends with its largest timestamp.
        let (max_timestamp, offset_of_max) = last_time?;
        // Index entries name the batch that ends at their offset, so the
        // walk starts at the floor entry's batch: its end is at or below the
        // holder's. The batch the walk starts at is anchored by its entry
        // (it must end at the entry's offset) or, at position 0, by the
        // segment's base offset.
        let (start, anchor) = if offset_of_max >= indexed.0 {
            (indexed.1, last_index.map(|(offset, _)| offset))
        } else {
            match floor.filter(|&(_, p)| u64::from(p) <= indexed.1) {
                Some((offset, position)) => (u64::from(position), Some(offset)),
                None => (0, None),
            }
        };
        // Batches before the last index entry are trusted as the index is;
        // they are walked (headers only, no CRC: a closed segment is read
        // only as far as needed) to check that none holds a larger
        // timestamp than the time index says and that each follows the one
        // before it. From the last index entry on, every batch is
        // CRC-checked.
        let mut position = start;
        let mut expected = anchor.is_none().then_some(self.base_offset);
        let mut holder_seen = false;
        let mut last_header = None;
        let len = bytes.len() as u64;
        while position < len {
            if position > MAX_BATCH_POSITION {
                return None;
            }
            let rest = &bytes[position as usize..];
            // The first batch is CRC-checked too: it proves the entry it
            // starts from points at a real batch boundary.
            let header = if position >= indexed.1 || position == start {
                format::check_batch(rest).ok()?
            } else {
                let header = BatchHeader::parse(rest).ok()?;
                if header.total_size() > rest.len() {
                    return None;
                }
                header
            };
            let (base, last) = match (expected, anchor) {
                (Some(expected), _) => self.order.check(expected, &header).ok()?,
                (None, Some(anchor)) => header
                    .checked_offsets()
                    .ok()
                    .filter(|&(_, l)| l == anchor)?,
                (None, None) => return None,
            };
            self.in_range(base, last).ok()?;
            if holder_seen && header.max_timestamp > max_timestamp {
                return None;
            }
            if last == offset_of_max {
                if header.max_timestamp != max_timestamp {
                    return None;
                }
                holder_seen = true;
            }
            position += header.total_size() as u64;
            expected = Some(last + 1);
            last_header = Some(last);
        }
        let last = last_header?;
        if !holder_seen || position != len {
            return None;
        }
        let first = BatchHeader::parse(bytes).ok()?;
        Some(Counters {
            next_offset: last + 1,
            max_timestamp,
            offset_of_max_timestamp: offset_of_max,
            rolling_timestamp: Some(first.max_timestamp),
            bytes_since_last_index_entry: len - indexed.1,
        })
    }
}

/// The smallest position `p >= from` at which a batch header could start,
/// judged by the magic byte alone (`bytes[p + 16] == 2`) and room for a
/// header. Runs of zero bytes (a hole, a zero-filled tail) are skipped a
/// page at a time.
fn next_magic(bytes: &[u8], from: usize) -> Option<usize> {
    const CHUNK: usize = 4096;
    static ZEROS: [u8; CHUNK] = [0; CHUNK];
    let magic = MAGIC_V2 as u8;
    // The magic byte of a header that fits in `bytes`.
    let last = bytes
        .len()
        .checked_sub(RECORD_BATCH_OVERHEAD - MAGIC_OFFSET)?;
    let mut i = from.checked_add(MAGIC_OFFSET)?;
    while i <= last {
        let end = i.saturating_add(CHUNK).min(last + 1);
        let chunk = &bytes[i..end];
        if chunk.len() == CHUNK && chunk == ZEROS.as_slice() {
            i = end;
            continue;
        }
        if let Some(k) = chunk.iter().position(|&b| b == magic) {
            return Some(i + k - MAGIC_OFFSET);
        }
        i = end;
    }
    None
}
