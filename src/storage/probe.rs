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
//! it starts above it (an offset index entry at its position that names its
//! last offset vouches for it; one that names another offset is a stale or
//! lost index page, since index files are never fsynced, and is no
//! evidence against it).
//!
//! The first batch failing a check is the segment's damage. Its offset (the
//! offset the batch had to start at) decides what recovery does with it
//! (see `log/open.rs`); the probe only locates it and, for the report,
//! looks past it for valid-looking batches that continue the log.
//!
//! In a compacted log a batch whose base offset was raised by damage still
//! starts above its predecessor; only the batch after it (which then starts
//! at or below its last offset) shows the conflict. Either of the two may
//! be the damaged one. The earlier one is blamed (so that a raised offset
//! is never served), unless an index entry vouches for it, the later one
//! conflicts with the batches before the earlier one too, or the earlier
//! one lies below the recovery point while the later one does not: then
//! blaming the earlier would refuse an open (or cut flushed data) over
//! damage a power loss can explain in the later one.
//!
//! ## Looking past damage
//! The search for a continuation checks cheap structure first at each
//! candidate position (the magic byte, found a zero page at a time; a
//! header whose length fits the file, known attribute bits and codec,
//! lastOffsetDelta and recordsCount that agree, offsets in the expected
//! range) and computes a CRC only for the rare candidate passing all of
//! them, so it is linear in the file's size. It looks at positions where
//! the log's writer could have put a batch: below `segment.bytes` (appends
//! roll before a segment grows past it; at least [`MIN_SEARCH`], for a
//! configuration that shrank) and below [`MAX_BATCH_POSITION`], so a file
//! that merely claims a huge size (a sparse tail) costs little. What it
//! finds goes into the report only: it never changes a decision.

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

/// How far past the start of a segment the search for valid data after
/// damage looks, at least (see the module docs).
const MIN_SEARCH: u64 = 16 << 20;

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
    /// The largest position a batch may start at.
    max_position: u64,
    /// Where looking for valid batches after damage stops.
    search_end: u64,
}

impl SegmentProbe {
    /// Maps the log file at `path` (a segment of base offset `base_offset`
    /// whose batches follow each other as `order` says, of a log whose
    /// `segment.bytes` is `segment_bytes`) read-only.
    ///
    /// # Errors
    /// [`crate::Error::Io`].
    pub(crate) fn open(
        storage: &dyn Storage,
        path: PathBuf,
        base_offset: u64,
        order: OffsetOrder,
        segment_bytes: u64,
    ) -> Result<Self> {
        let file = storage.open(&path, OpenMode::Existing)?;
        let len = usize::try_from(file.len()?).unwrap_or(usize::MAX);
        let map = file.map(len)?;
        Ok(SegmentProbe {
            base_offset,
            path,
            map,
            order,
            max_position: MAX_BATCH_POSITION,
            search_end: segment_bytes.clamp(MIN_SEARCH, MAX_BATCH_POSITION),
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
        if position > self.max_position {
            return Err(CorruptionKind::PositionOutOfRange {
                limit: self.max_position,
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
    /// batches are checked against them (see the module docs), and where
    /// their order breaks, `recovery_point` helps decide which of two
    /// batches is blamed.
    pub(crate) fn scan(&self, index: Option<&OffsetEntries>, recovery_point: u64) -> ScanOutcome {
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
                damage = Some(self.attribute_conflict(
                    previous,
                    (position, expected, base),
                    e,
                    recovery_point,
                ));
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
                    // An entry naming the batch's last offset vouches for
                    // it. One that names another offset is no evidence
                    // against it: index files are never fsynced (only log
                    // files are), so after a power loss an index page may
                    // read as zeros or hold stale entries, even where the
                    // log's bytes were fsynced; the index is rebuilt.
                    confirmed = u64::from(at) == position && entry == last;
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
    /// `base`, which had to start at or above `expected`) breaks the order
    /// after `previous`: `(position, offset, cause)`. In a log that is not
    /// compacted every accepted batch continues its predecessors exactly,
    /// back to the segment's base offset, so the batch breaking the order is
    /// the damaged one. In a compacted log the conflict may come from the
    /// previous batch's base offset having been raised instead; then the
    /// previous batch is blamed, unless an index entry confirms it, this
    /// batch conflicts with the batches before it as well, or the previous
    /// batch lies below the recovery point while this one does not (see
    /// the module docs).
    fn attribute_conflict(
        &self,
        previous: Option<Accepted>,
        (position, expected, base): (u64, u64, u64),
        error: FormatError,
        recovery_point: u64,
    ) -> (u64, u64, CorruptionKind) {
        let blame_this = (position, expected, CorruptionKind::Batch(error));
        if self.order != OffsetOrder::Increasing {
            return blame_this;
        }
        let both_on_one_side =
            |p: &Accepted| (p.floor >= recovery_point) == (expected >= recovery_point);
        match previous {
            Some(p) if !p.confirmed && base >= p.floor && both_on_one_side(&p) => (
                p.position,
                p.floor,
                CorruptionKind::Batch(out_of_sequence(
                    p.base,
                    p.last,
                    base,
                    "the next batch starts at that offset, at or below this batch's last one; in a \
                     compacted log either may be the damaged one, and recovery stops at the earlier",
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
        // Headers that start where a batch may start.
        let searched = bytes
            .len()
            .min(usize::try_from(self.search_end).unwrap_or(usize::MAX) + RECORD_BATCH_OVERHEAD);
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
    /// nothing is allocated per entry, and an untrimmed file's tail is not
    /// read). A scan uses them as hints, checked against the batches, also
    /// when the file is untrimmed: the entries up to the first zero slot,
    /// which is what the preallocated file of an appendable segment holds
    /// (what may lie beyond that slot is not read, and the rebuild drops
    /// it).
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
    /// trusted: both files are trimmed (they hold exactly their consistent
    /// entries, as sealing a segment or a clean close leaves them, and are
    /// no larger than the segment could need), the last offset index entry
    /// points at the batch that ends at its offset, every batch from there
    /// to the end of the file is valid and follows the one before it, the
    /// file ends with a whole batch, and the last time index entry names
    /// the batch holding the segment's largest timestamp (no later batch
    /// has a larger one, so a time index that lost its tail is caught).
    /// Anything else: `None`, and the caller scans. `index_bytes` is
    /// `segment.index.bytes`.
    ///
    /// An index file longer than its entries belonged to a segment that was
    /// appendable when the process died (or whose trim a power loss
    /// undid): its preallocated tail is not read (only the entries and the
    /// slot after them are), and the segment is scanned and its indexes
    /// rebuilt, as Kafka recovers the segments a crash left unflushed. So
    /// the cost of this check does not depend on `segment.index.bytes`.
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
        let time = TimeIndex::inspect(
            storage,
            &segment_file(dir, base, TIME_INDEX_SUFFIX),
            base,
            plausible_bytes(self.len(), index_bytes, TIME_ENTRY_SIZE),
        )?;
        let Some(last_time) = time.filter(|t| t.trimmed).map(|t| t.last) else {
            return Ok(None);
        };
        let holder = last_time.map_or(base, |(_, offset)| offset);
        let Some(entries) = self
            .offset_index(storage, &segment_file(dir, base, INDEX_SUFFIX), index_bytes)?
            .filter(OffsetEntries::is_trimmed)
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
            if position > self.max_position {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{BatchBuilder, set_base_offset};
    use crate::storage::StdStorage;

    /// One batch of `count` records at `base`.
    fn batch(base: i64, count: usize) -> Vec<u8> {
        let mut builder = BatchBuilder::new(Compression::None);
        for i in 0..count {
            builder.append(1_000 + i as i64, Some(b"k"), Some(b"value"), &[]);
        }
        let mut bytes = builder.build().expect("batch").to_vec();
        set_base_offset(&mut bytes, base);
        bytes
    }

    /// Batches laid end to end, and where each starts.
    fn segment(bases: &[i64]) -> (Vec<u8>, Vec<u64>) {
        let mut bytes = Vec::new();
        let mut starts = Vec::new();
        for &base in bases {
            starts.push(bytes.len() as u64);
            bytes.extend_from_slice(&batch(base, 1));
        }
        (bytes, starts)
    }

    fn probe(bytes: &[u8], order: OffsetOrder) -> (tempfile::TempDir, SegmentProbe) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000000.log");
        std::fs::write(&path, bytes).expect("write");
        let probe = SegmentProbe::open(&StdStorage, path, 0, order, 1 << 20).expect("probe");
        (dir, probe)
    }

    fn damage_of(outcome: &ScanOutcome) -> (u64, u64) {
        let damage = outcome.damage.as_ref().expect("damage");
        (damage.position, damage.offset)
    }

    #[test]
    fn a_whole_segment_scans_clean_in_either_order() {
        let (bytes, starts) = segment(&[0, 1, 2, 3]);
        for order in [OffsetOrder::Contiguous, OffsetOrder::Increasing] {
            let (_dir, probe) = probe(&bytes, order);
            let outcome = probe.scan(None, 0);
            assert_eq!(outcome.damage, None);
            assert_eq!(
                (outcome.valid_bytes, outcome.next_offset),
                (bytes.len() as u64, 4)
            );
            let tail = outcome.tail.expect("tail");
            assert_eq!(
                (tail.position, tail.base, tail.last, tail.floor),
                (starts[3], 3, 3, 3)
            );
        }
    }

    #[test]
    fn a_gap_is_damage_only_where_offsets_are_contiguous() {
        let (bytes, starts) = segment(&[0, 1, 5, 6]);
        let (_dir, contiguous) = probe(&bytes, OffsetOrder::Contiguous);
        let outcome = contiguous.scan(None, 0);
        assert_eq!(damage_of(&outcome), (starts[2], 2));
        // The batch after the damaged one starts above the damage's offset:
        // valid data follows it, up to offset 7.
        let damage = outcome.damage.expect("damage");
        assert_eq!(
            (damage.valid_after, damage.claimed_end),
            (Some(starts[3]), Some(7))
        );
        let (_dir, increasing) = probe(&bytes, OffsetOrder::Increasing);
        assert_eq!(increasing.scan(None, 0).damage, None);
        // A first batch above the base offset, likewise.
        let (bytes, _) = segment(&[3, 4]);
        let (_dir, contiguous) = probe(&bytes, OffsetOrder::Contiguous);
        assert_eq!(damage_of(&contiguous.scan(None, 0)), (0, 0));
        let (_dir, increasing) = probe(&bytes, OffsetOrder::Increasing);
        assert_eq!(increasing.scan(None, 0).next_offset, 5);
    }

    #[test]
    fn a_raised_base_offset_in_a_compacted_log_is_blamed_on_the_raised_batch() {
        // The third batch's base offset 2 raised to 7: the fourth (3) shows
        // the conflict.
        let (bytes, starts) = segment(&[0, 1, 7, 3, 4]);
        let (_dir, probe) = probe(&bytes, OffsetOrder::Increasing);
        // Both batches on one side of the recovery point: the earlier one.
        assert_eq!(damage_of(&probe.scan(None, 0)), (starts[2], 2));
        assert_eq!(damage_of(&probe.scan(None, 100)), (starts[2], 2));
        // The raised batch below the recovery point, the next above it: a
        // power loss can explain only the later one, so it is blamed.
        assert_eq!(damage_of(&probe.scan(None, 5)), (starts[3], 8));
    }

    #[test]
    fn a_lowered_base_offset_in_a_compacted_log_is_blamed_on_the_lowered_batch() {
        // The fourth batch's base offset 3 lowered to 0: it conflicts with
        // the batches before the third too, so the third is innocent.
        let (bytes, starts) = segment(&[0, 1, 2, 0, 4]);
        let (_dir, probe) = probe(&bytes, OffsetOrder::Increasing);
        assert_eq!(damage_of(&probe.scan(None, 0)), (starts[3], 3));
    }

    #[test]
    fn batches_beyond_the_largest_position_are_damage() {
        let (bytes, starts) = segment(&[0, 1, 2]);
        let (_dir, mut probe) = probe(&bytes, OffsetOrder::Contiguous);
        probe.max_position = starts[2] - 1;
        let outcome = probe.scan(None, 0);
        assert_eq!(damage_of(&outcome), (starts[2], 2));
        assert_eq!(
            outcome.damage.expect("damage").cause,
            CorruptionKind::PositionOutOfRange {
                limit: starts[2] - 1
            }
        );
    }

    #[test]
    fn the_search_past_damage_skips_zero_pages_and_stale_copies() {
        let first = batch(0, 2);
        let stale = batch(0, 2);
        let next = batch(2, 3);
        for zeros in [1, 4095, 4096, 4097, 3 * 4096 + 17] {
            let mut bytes = first.clone();
            bytes.extend(std::iter::repeat_n(0u8, zeros));
            bytes.extend_from_slice(&stale);
            let at = bytes.len() as u64;
            bytes.extend_from_slice(&next);
            let (_dir, probe) = probe(&bytes, OffsetOrder::Contiguous);
            let damage = probe.scan(None, 0).damage.expect("damage");
            assert_eq!((damage.position, damage.offset), (first.len() as u64, 2));
            assert_eq!(damage.valid_after, Some(at), "{zeros} zeros");
            assert_eq!(damage.claimed_end, Some(5), "{zeros} zeros");
        }
        // Nothing continuing the log after the damage: a torn write.
        let mut bytes = first.clone();
        bytes.extend_from_slice(&stale[..stale.len() / 2]);
        bytes.extend_from_slice(&stale);
        let (_dir, probe) = probe(&bytes, OffsetOrder::Contiguous);
        let damage = probe.scan(None, 0).damage.expect("damage");
        assert_eq!((damage.valid_after, damage.claimed_end), (None, None));
    }

    #[test]
    fn next_magic_finds_every_candidate_in_order() {
        let mut bytes = vec![0u8; 3 * 4096 + 200];
        for at in [5, 4090, 4096 + 10, 2 * 4096 + 4095] {
            bytes[at + MAGIC_OFFSET] = MAGIC_V2 as u8;
        }
        let mut found = Vec::new();
        let mut from = 0;
        while let Some(at) = next_magic(&bytes, from) {
            found.push(at);
            from = at + 1;
        }
        assert_eq!(found, [5, 4090, 4096 + 10, 2 * 4096 + 4095]);
        // A header must fit after the candidate.
        assert_eq!(next_magic(&bytes[..4096 + 10 + 60], 4091), None);
    }
}
