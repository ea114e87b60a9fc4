//! One segment: `{base_offset:020}.log` with its `.index` and `.timeindex`.
//!
//! A segment holds whole record batches laid end to end. It knows positions
//! and offsets of its own batches, nothing of the partition around it. The
//! log file is written with positioned writes and read through a read-only
//! map; the size the segment reports (`size`) is the end of the last valid
//! batch, and no reader is ever handed bytes beyond it.
//!
//! ## The shrink rule
//! Maps handed out by [`Segment::slice`] may outlive the segment. A file is
//! never shrunk below what a live map covers: [`Segment::truncate_to`]
//! shrinks in place only when no map beyond the new size is alive, and
//! otherwise writes the kept prefix to a new file that replaces the old one
//! by rename, so old maps keep reading the old inode.
//!
//! ## Checked bytes
//! A segment remembers one range of its log file whose batches this
//! process checked (CRC and structure) or built itself, and which has not
//! changed since ([`Segment::checked`]): the bytes every append publishes
//! (each append path validates or builds what it writes: see
//! `log::read`'s module docs), and what the log's recovery scanned at open
//! ([`Segment::mark_checked`]). A segment opened from existing files starts
//! with an empty range at its end, so the appends that follow are covered;
//! a truncation clamps the range to the bytes kept, and bytes are never
//! rewritten in place. The log decides whether readers may trust it.
//!
//! ## Reserved blocks
//! Appends reserve the log file's disk blocks a window ahead (up to
//! [`RESERVE_BYTES`], `fallocate` with `FALLOC_FL_KEEP_SIZE` where the
//! file system has it): the file's length and contents do not change, so
//! nothing a reader, a recovery or another parser sees changes, but each
//! write then finds its blocks allocated instead of asking the file system
//! for them page by page. Sealing the segment (a roll, a clean close) or a
//! truncation gives back what lies past the end. A crash leaves at most one
//! window reserved past the active segment's end until its next seal.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::error::{CorruptionKind, Error, FormatError, Result};
use crate::format::header::{OffsetOrder, out_of_sequence};
use crate::format::{self, BatchHeader};
use crate::storage::index::OffsetIndex;
use crate::storage::index_file::{IndexEntry, SegmentIndex, plausible_bytes};
use crate::storage::mmap::{MapRange, ReadMap, slice_bytes};
use crate::storage::probe::Counters;
use crate::storage::spare;
use crate::storage::time_index::TimeIndex;
use crate::storage::txn_index_file::TxnIndexFile;
use crate::storage::{OpenMode, Storage, StorageFile};

/// The largest byte position a batch may start at: Kafka's index files
/// hold positions as 32-bit signed integers, and `segment.bytes` is at
/// most 2 GiB, so no writer puts a batch further in. Recovery treats a
/// batch beyond it as damage.
pub(crate) const MAX_BATCH_POSITION: u64 = i32::MAX as u64;

/// How far ahead of the log file's end appends reserve its disk blocks
/// (see the module docs) at most: as far as the segment already holds, at
/// least [`MIN_RESERVE_BYTES`], so a partition written to rarely holds
/// little disk space it does not use.
pub(crate) const RESERVE_BYTES: u64 = 1 << 20;
/// How far ahead appends reserve at least.
pub(crate) const MIN_RESERVE_BYTES: u64 = 64 << 10;

/// Suffix of a segment's log file.
pub(crate) const LOG_SUFFIX: &str = "log";
/// Suffix of a segment's offset index.
pub(crate) const INDEX_SUFFIX: &str = "index";
/// Suffix of a segment's time index.
pub(crate) const TIME_INDEX_SUFFIX: &str = "timeindex";
/// Suffix of a segment's aborted-transaction index (created by the first
/// ABORT marker the segment holds).
pub(crate) const TXN_INDEX_SUFFIX: &str = "txnindex";
/// Suffix appended to files of a deleted segment until they are removed.
pub(crate) const DELETED_SUFFIX: &str = "deleted";
/// Suffix of a temporary file that replaces a truncated log file.
pub(crate) const TRUNCATING_SUFFIX: &str = "truncating";

/// Extra suffix of a segment the cleaner is still writing
/// (`{base}.log.cleaned`, ...); recovery removes such files.
pub(crate) const CLEANED_SUFFIX: &str = "cleaned";
/// Extra suffix of a cleaned segment about to replace the segments it was
/// cleaned from (`{base}.log.swap`, ...); recovery completes the swap.
pub(crate) const SWAP_SUFFIX: &str = "swap";

/// `dir/{base:020}.{suffix}.{stage}`: a segment file under a cleaner stage
/// name (Kafka's `.cleaned` and `.swap`).
pub(crate) fn staged_file(dir: &Path, base_offset: u64, suffix: &str, stage: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{suffix}.{stage}"))
}

/// A segment file's path, under the cleaner's `stage` name if given.
fn stage_path(dir: &Path, base_offset: u64, suffix: &str, stage: Option<&str>) -> PathBuf {
    match stage {
        Some(stage) => staged_file(dir, base_offset, suffix, stage),
        None => segment_file(dir, base_offset, suffix),
    }
}

/// `dir/{base:020}.{suffix}`: Kafka's file naming.
pub(crate) fn segment_file(dir: &Path, base_offset: u64, suffix: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{suffix}"))
}

/// Parses a segment file name `{base:020}.{suffix}` into its base offset.
pub(crate) fn parse_segment_file(path: &Path, suffix: &str) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(suffix)?.strip_suffix('.')?;
    if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
        stem.parse().ok()
    } else {
        None
    }
}

/// Sizing of a segment's files, and how its batches' offsets follow each
/// other, from the log configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentLimits {
    pub(crate) index_bytes: u64,
    pub(crate) index_interval_bytes: u64,
    /// Contiguous unless the log is compacted; reads check it on every
    /// batch they walk.
    pub(crate) order: OffsetOrder,
}

/// Opens the existing index file at `path` of a segment whose log holds
/// `log_size` bytes, extended to `index_bytes` (see
/// [`SegmentIndex::open`]); the file is read only if it is no larger than
/// such a segment's index can be.
fn reopen_index<I: SegmentIndex>(
    storage: &dyn Storage,
    path: &Path,
    base_offset: u64,
    index_bytes: u64,
    log_size: u64,
    limits: SegmentLimits,
) -> Result<I> {
    let plausible = plausible_bytes(log_size, limits.index_bytes, I::Entry::SIZE);
    Ok(I::open(storage, path, base_offset, index_bytes, plausible)?.0)
}

/// [`reopen_index`] if the file at `path` exists, else a new, empty index
/// file preallocated to `segment.index.bytes`.
fn open_or_create_index<I: SegmentIndex>(
    storage: &dyn Storage,
    path: &Path,
    base_offset: u64,
    index_bytes: u64,
    log_size: u64,
    limits: SegmentLimits,
) -> Result<I> {
    if storage.exists(path) {
        reopen_index(storage, path, base_offset, index_bytes, log_size, limits)
    } else {
        I::create(storage, path, base_offset, limits.index_bytes)
    }
}

/// Where one batch of an append lies in the buffer being appended.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchMeta {
    pub(crate) position_in_buf: usize,
    pub(crate) size: usize,
    pub(crate) last_offset: u64,
    pub(crate) max_timestamp: i64,
}

#[derive(Debug)]
struct Maps {
    current: Arc<ReadMap>,
    handed_out: Vec<Weak<ReadMap>>,
}

/// One segment of a partition log. See the module docs.
#[derive(Debug)]
pub(crate) struct Segment {
    base_offset: u64,
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    file: Arc<dyn StorageFile>,
    size: u64,
    maps: Mutex<Maps>,
    index: OffsetIndex,
    time_index: TimeIndex,
    limits: SegmentLimits,
    bytes_since_last_index_entry: u64,
    max_timestamp: i64,
    offset_of_max_timestamp: u64,
    next_offset: u64,
    rolling_timestamp: Option<i64>,
    created_ms: i64,
    sealed: bool,
    /// The aborted transactions whose ABORT marker the segment holds.
    txn_index: TxnIndexFile,
    /// The bytes whose batches this process checked or wrote (see the
    /// module docs); `start <= end <= size`, empty at the end when
    /// nothing is known.
    checked: std::ops::Range<u64>,
    /// The log file's disk blocks are reserved up to here (`u64::MAX`:
    /// reserving failed or is not supported; no more tries).
    reserved_end: AtomicU64,
    /// Something was reserved past the end since the last trim.
    reserved: AtomicBool,
}

impl Segment {
    /// Creates the three files of a new, empty segment.
    pub(crate) fn create(
        storage: &Arc<dyn Storage>,
        dir: &Path,
        base_offset: u64,
        limits: SegmentLimits,
    ) -> Result<Self> {
        Self::empty(storage, dir, base_offset, limits, OpenMode::CreateNew, None)
    }

    /// Creates a new, empty segment whose three files carry the extra
    /// suffix `stage` (`{base}.log.cleaned`, ...), for the cleaner. Rename
    /// the files with [`Segment::rename_stage`]; the segment's paths are the
    /// final ones once the files lost the stage suffix.
    pub(crate) fn create_staged(
        storage: &Arc<dyn Storage>,
        dir: &Path,
        base_offset: u64,
        limits: SegmentLimits,
        stage: &str,
    ) -> Result<Self> {
        Self::empty(
            storage,
            dir,
            base_offset,
            limits,
            OpenMode::CreateNew,
            Some(stage),
        )
    }

    /// Renames the segment's three files from stage `from` to stage `to`
    /// (`None`: the plain segment name). The indexes first and the log last
    /// when entering a stage, the log first when leaving it, so a stage's
    /// log file exists only once its indexes do.
    ///
    /// A staged segment always has its `.txnindex` file (empty if it holds
    /// no ABORT marker): it enters a stage first and leaves it last, so
    /// recovery can tell which plain `.txnindex` belongs to which log.
    pub(crate) fn rename_stage(&mut self, from: Option<&str>, to: Option<&str>) -> Result<()> {
        let path = |suffix: &str, stage| stage_path(&self.dir, self.base_offset, suffix, stage);
        let order = if to.is_some() {
            [
                TXN_INDEX_SUFFIX,
                INDEX_SUFFIX,
                TIME_INDEX_SUFFIX,
                LOG_SUFFIX,
            ]
        } else {
            [
                LOG_SUFFIX,
                INDEX_SUFFIX,
                TIME_INDEX_SUFFIX,
                TXN_INDEX_SUFFIX,
            ]
        };
        for suffix in order {
            if suffix == TXN_INDEX_SUFFIX && self.txn_index.file().is_none() {
                continue;
            }
            self.storage
                .rename(&path(suffix, from), &path(suffix, to))?;
        }
        self.txn_index.set_path(path(TXN_INDEX_SUFFIX, to));
        Ok(())
    }

    /// Builds a new, empty segment at `base_offset` from the prepared spare
    /// (see [`spare`]): renames its files into place and opens them without
    /// reading them. On failure, removes whatever was renamed, so the caller
    /// can create the segment inline.
    pub(crate) fn from_spare(
        storage: &Arc<dyn Storage>,
        dir: &Path,
        base_offset: u64,
        limits: SegmentLimits,
    ) -> Result<Self> {
        spare::rename_into_place(storage.as_ref(), dir, base_offset)
            .and_then(|()| Self::empty(storage, dir, base_offset, limits, OpenMode::Existing, None))
            .inspect_err(|_| {
                for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                    // Best effort: the inline create that follows reports errors.
                    let _ = storage.remove_file(&segment_file(dir, base_offset, suffix));
                }
            })
    }

    /// An empty segment whose files `mode` creates, or (`Existing`) whose
    /// files exist and hold nothing (an adopted spare); named with the
    /// cleaner's `stage` suffix when one is given.
    fn empty(
        storage: &Arc<dyn Storage>,
        dir: &Path,
        base_offset: u64,
        limits: SegmentLimits,
        mode: OpenMode,
        stage: Option<&str>,
    ) -> Result<Self> {
        let path = |suffix| stage_path(dir, base_offset, suffix, stage);
        let file = storage.open(&path(LOG_SUFFIX), mode)?;
        let txn_index = TxnIndexFile::empty(path(TXN_INDEX_SUFFIX));
        let index = OffsetIndex::empty(
            storage.as_ref(),
            &path(INDEX_SUFFIX),
            base_offset,
            limits.index_bytes,
            mode,
        )?;
        let time_index = TimeIndex::empty(
            storage.as_ref(),
            &path(TIME_INDEX_SUFFIX),
            base_offset,
            limits.index_bytes,
            mode,
        )?;
        Self::assemble(
            storage,
            dir,
            base_offset,
            file,
            0,
            (index, time_index, txn_index),
            limits,
        )
    }

    fn assemble(
        storage: &Arc<dyn Storage>,
        dir: &Path,
        base_offset: u64,
        file: Arc<dyn StorageFile>,
        size: u64,
        (index, time_index, txn_index): (OffsetIndex, TimeIndex, TxnIndexFile),
        limits: SegmentLimits,
    ) -> Result<Self> {
        let current = file.map(to_usize(size))?;
        Ok(Segment {
            base_offset,
            dir: dir.to_path_buf(),
            storage: Arc::clone(storage),
            file,
            size,
            maps: Mutex::new(Maps {
                current,
                handed_out: Vec::new(),
            }),
            index,
            time_index,
            limits,
            bytes_since_last_index_entry: 0,
            max_timestamp: format::NO_TIMESTAMP,
            offset_of_max_timestamp: base_offset,
            next_offset: base_offset,
            rolling_timestamp: None,
            created_ms: 0,
            sealed: false,
            txn_index,
            checked: size..size,
            reserved_end: AtomicU64::new(size),
            reserved: AtomicBool::new(false),
        })
    }

    /// Opens an existing segment's files without reading the log; missing
    /// index files are created empty. A sealed segment's indexes are opened
    /// as they are (trimmed); an appendable one's are extended to
    /// `segment.index.bytes`. Recovery judged the files before (see
    /// [`SegmentProbe`](super::probe::SegmentProbe)) and trusted them; call
    /// [`Segment::adopt`] next. (A segment whose indexes recovery rebuilds
    /// is opened with [`Segment::open_for_rebuild`].)
    pub(crate) fn open(
        storage: &Arc<dyn Storage>,
        dir: &Path,
        base_offset: u64,
        limits: SegmentLimits,
        sealed: bool,
    ) -> Result<Self> {
        let index_bytes = if sealed { 0 } else { limits.index_bytes };
        let path = |suffix| segment_file(dir, base_offset, suffix);
        let s = storage.as_ref();
        let mut segment = Self::open_existing(storage, dir, base_offset, limits, |size| {
            let index = open_or_create_index(
                s,
                &path(INDEX_SUFFIX),
                base_offset,
                index_bytes,
                size,
                limits,
            )?;
            let time_index = open_or_create_index(
                s,
                &path(TIME_INDEX_SUFFIX),
                base_offset,
                index_bytes,
                size,
                limits,
            )?;
            Ok((index, time_index))
        })?;
        segment.sealed = sealed;
        Ok(segment)
    }

    /// Opens an existing segment whose indexes recovery rebuilds: neither
    /// the log nor the index files are read, and the index files (created
    /// if missing) are emptied, their content dropped unread (cut to
    /// nothing and extended with zeros to `segment.index.bytes`), so the
    /// cost does not depend on their size. Call
    /// [`Segment::rebuild_indexes`] next.
    pub(crate) fn open_for_rebuild(
        storage: &Arc<dyn Storage>,
        dir: &Path,
        base_offset: u64,
        limits: SegmentLimits,
    ) -> Result<Self> {
        let path = |suffix| segment_file(dir, base_offset, suffix);
        let (s, bytes) = (storage.as_ref(), limits.index_bytes);
        Self::open_existing(storage, dir, base_offset, limits, |_| {
            let index = OffsetIndex::emptied(s, &path(INDEX_SUFFIX), base_offset, bytes)?;
            let time_index = TimeIndex::emptied(s, &path(TIME_INDEX_SUFFIX), base_offset, bytes)?;
            Ok((index, time_index))
        })
    }

    /// Opens an existing segment's log file without reading it, and its
    /// indexes with `indexes` (given the log's length).
    fn open_existing(
        storage: &Arc<dyn Storage>,
        dir: &Path,
        base_offset: u64,
        limits: SegmentLimits,
        indexes: impl FnOnce(u64) -> Result<(OffsetIndex, TimeIndex)>,
    ) -> Result<Self> {
        let file = storage.open(
            &segment_file(dir, base_offset, LOG_SUFFIX),
            OpenMode::Existing,
        )?;
        let size = file.len()?;
        let (index, time_index) = indexes(size)?;
        // A damaged tail is cut here; the log's recovery rebuilds the
        // entries of the segments it scans.
        let (txn_index, _damage) = TxnIndexFile::open(
            storage.as_ref(),
            segment_file(dir, base_offset, TXN_INDEX_SUFFIX),
        )?;
        Self::assemble(
            storage,
            dir,
            base_offset,
            file,
            size,
            (index, time_index, txn_index),
            limits,
        )
    }

    /// Base offset: no offset in this segment is below it.
    pub(crate) fn base_offset(&self) -> u64 {
        self.base_offset
    }
    /// Bytes of valid batches.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }
    /// Whether the segment holds no batch.
    pub(crate) fn is_empty(&self) -> bool {
        self.size == 0
    }
    /// Offset after the last batch (the base offset when empty).
    pub(crate) fn next_offset(&self) -> u64 {
        self.next_offset
    }
    /// Largest record timestamp seen, or -1.
    pub(crate) fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }
    /// Timestamp that `segment.ms` rolling counts from: the max timestamp of
    /// the first batch, as in Kafka.
    pub(crate) fn rolling_timestamp(&self) -> Option<i64> {
        self.rolling_timestamp
    }
    /// Wall-clock time the segment was created or opened, for `segment.ms`
    /// when its batches carry no timestamps.
    pub(crate) fn created_ms(&self) -> i64 {
        self.created_ms
    }

    /// Records when the segment was created or opened.
    pub(crate) fn set_created_ms(&mut self, now: i64) {
        self.created_ms = now;
    }

    /// The log file's handle (for syncing it outside the log's lock).
    pub(crate) fn file(&self) -> &Arc<dyn StorageFile> {
        &self.file
    }
    /// Path of the log file.
    pub(crate) fn log_path(&self) -> PathBuf {
        segment_file(&self.dir, self.base_offset, LOG_SUFFIX)
    }

    /// How the segment's batches' offsets follow each other.
    pub(crate) fn offset_order(&self) -> OffsetOrder {
        self.limits.order
    }

    /// Takes a log's new configuration (`Log::set_config`): the offset
    /// order (only ever relaxed, to [`OffsetOrder::Increasing`], when
    /// compaction is turned on) and the bytes between index entries. The
    /// index size stays: the active segment's index is preallocated.
    pub(crate) fn update_limits(&mut self, order: OffsetOrder, index_interval_bytes: u64) {
        self.limits.order = order;
        self.limits.index_interval_bytes = index_interval_bytes;
    }

    /// Whether an append of `bytes` bytes ending at `last_offset` fits:
    /// relative offsets must fit the indexes and the indexes must have room.
    pub(crate) fn can_append(&self, last_offset: u64) -> bool {
        last_offset >= self.base_offset
            && last_offset - self.base_offset <= u64::from(u32::MAX)
            && !self.index.is_full()
            && !self.time_index.is_full()
    }

    /// Appends `buf`, which holds the batches described by `batches`, at the
    /// end of the log file, and indexes them. Offsets must be increasing and
    /// at or after [`Segment::next_offset`]; the caller checked that.
    /// [`Segment::write_unpublished`] then [`Segment::publish`].
    pub(crate) fn append(&mut self, buf: &[u8], batches: &[BatchMeta]) -> Result<u64> {
        let position = self.write_unpublished(&[buf])?;
        self.publish(position, buf.len() as u64, batches)?;
        Ok(position)
    }

    /// The first half of an append: writes `bufs`, one after the other,
    /// at the end of the log file (at [`Segment::size`]) with one
    /// [`StorageFile::write_all_vectored_at`](crate::storage::StorageFile::write_all_vectored_at)
    /// (no copy into one buffer) and returns where, changing nothing else.
    /// The bytes are not published: `size`, the indexes and every read
    /// stay as they were, so readers sharing the segment (`&self`) go on
    /// reading what was there before and never see a byte of `bufs` until
    /// [`Segment::publish`] makes it part of the segment. A map never
    /// serves bytes at or past `size` (see [`Segment::slice`]).
    ///
    /// The caller guarantees that nothing else writes to or changes this
    /// segment until it publishes (the log holds its state lock's
    /// upgradable read, which excludes every other writer). If the write
    /// fails, the bytes past `size` are garbage the next write overwrites
    /// or recovery cuts; the log is fenced then.
    pub(crate) fn write_unpublished(&self, bufs: &[&[u8]]) -> Result<u64> {
        let position = self.size;
        let len: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        self.reserve_for(position + len);
        self.file.write_all_vectored_at(bufs, position)?;
        Ok(position)
    }

    /// Reserves the log file's blocks up to `end` and a window past it
    /// ([`RESERVE_BYTES`] at most), unless they are already (see the
    /// module docs). A hint: a failure only stops the tries for this
    /// segment, and the write that follows reports any real lack of space.
    fn reserve_for(&self, end: u64) {
        let reserved_end = self.reserved_end.load(Ordering::Relaxed);
        if end <= reserved_end {
            return;
        }
        let from = reserved_end.max(self.size);
        let ahead = self.size.clamp(MIN_RESERVE_BYTES, RESERVE_BYTES);
        let upto = end.saturating_add(ahead);
        let (next, made) = match self.file.reserve(from, upto - from) {
            Ok(true) => (upto, true),
            Ok(false) => (u64::MAX, false),
            Err(e) => {
                tracing::debug!(error = %e, "reserving a segment's blocks failed");
                (u64::MAX, false)
            }
        };
        if made {
            self.reserved.store(true, Ordering::Relaxed);
        }
        self.reserved_end.store(next, Ordering::Relaxed);
    }

    /// Gives back the blocks reserved past the end of the log file, if
    /// any: setting its length to itself frees them.
    fn trim_reserved(&mut self) -> Result<()> {
        if self.reserved.swap(false, Ordering::Relaxed) {
            self.file.set_len(self.size)?;
        }
        self.reserved_end.store(self.size, Ordering::Relaxed);
        Ok(())
    }

    /// The second half of an append: publishes the `len` bytes that
    /// [`Segment::write_unpublished`] wrote at `position` (the batches
    /// `batches` describe): indexes them and moves `size` past them. No
    /// log file I/O; index entries are buffered in memory (a full buffer
    /// of them is written now and then: one small write per 64 entries).
    pub(crate) fn publish(&mut self, position: u64, len: u64, batches: &[BatchMeta]) -> Result<()> {
        debug_assert_eq!(position, self.size, "publish what was written at the end");
        // Every append path checked or built the batches it writes (see the
        // module docs): they extend the checked range, which ends at the
        // published size unless recovery left a gap before it.
        if self.checked.end != position {
            self.checked = position..position;
        }
        for batch in batches {
            self.index_batch(
                position + batch.position_in_buf as u64,
                batch.last_offset,
                batch.max_timestamp,
                batch.size as u64,
            )?;
        }
        self.size += len;
        self.checked.end = self.size;
        Ok(())
    }

    /// The byte range of the log file whose batches this process checked
    /// whole (CRC and structure) or built itself, and which has not
    /// changed since: the bytes appends published, and what recovery
    /// scanned ([`Segment::mark_checked`]). A range, not a prefix: a
    /// segment opened from existing files starts with an empty range at
    /// its end, which its appends then extend. Within `0..size`.
    pub(crate) fn checked(&self) -> std::ops::Range<u64> {
        self.checked.clone()
    }

    /// Records that recovery checked every batch from byte `from` to the
    /// segment's end (its batches' CRCs and structure, by a scan at open).
    pub(crate) fn mark_checked(&mut self, from: u64) {
        self.checked = from.min(self.size)..self.size;
    }

    /// Updates the in-memory counters and the indexes for one batch that now
    /// lies at `position`. Shared by append and recovery, so a rebuilt index
    /// equals the one appends wrote.
    fn index_batch(
        &mut self,
        position: u64,
        last_offset: u64,
        max_timestamp: i64,
        size: u64,
    ) -> Result<()> {
        if position == 0 {
            self.rolling_timestamp = Some(max_timestamp);
        }
        if max_timestamp > self.max_timestamp {
            self.max_timestamp = max_timestamp;
            self.offset_of_max_timestamp = last_offset;
        }
        if self.bytes_since_last_index_entry > self.limits.index_interval_bytes {
            let position = u32::try_from(position).map_err(|_| {
                Error::corrupt(
                    self.log_path(),
                    position,
                    CorruptionKind::PositionOutOfRange {
                        limit: MAX_BATCH_POSITION,
                    },
                )
            })?;
            self.index.append(last_offset, position)?;
            self.time_index
                .maybe_append(self.max_timestamp, self.offset_of_max_timestamp)?;
            self.bytes_since_last_index_entry = 0;
        }
        self.bytes_since_last_index_entry += size;
        self.next_offset = last_offset + 1;
        Ok(())
    }

    /// The current map, grown to cover `size` bytes if it does not yet.
    fn map(&self) -> Result<Arc<ReadMap>> {
        self.map_covering(self.size)
    }

    /// The current map if it covers `[0, end)`, else one grown to cover
    /// `size` bytes. A read of bytes the current map covers needs no new
    /// map, however far appends moved `size` since it was made: a reader
    /// behind the log end does not remap (and fault its pages in again)
    /// for every append.
    fn map_covering(&self, end: u64) -> Result<Arc<ReadMap>> {
        let mut maps = self.maps.lock();
        if (maps.current.len() as u64) < end.min(self.size) {
            let fresh = self.file.map(to_usize(self.size))?;
            let old = std::mem::replace(&mut maps.current, fresh);
            if Arc::strong_count(&old) > 1 {
                maps.handed_out.push(Arc::downgrade(&old));
            }
        }
        Ok(Arc::clone(&maps.current))
    }

    /// Zero-copy bytes `[start, end)` of the log file; `end <= size`.
    pub(crate) fn slice(&self, start: u64, end: u64) -> Result<Bytes> {
        debug_assert!(start <= end && end <= self.size);
        let map = self.map_covering(end)?;
        Ok(slice_bytes(&map, to_usize(start)..to_usize(end)))
    }

    /// [`slice`](Segment::slice), with where its bytes lie in the map (for
    /// [`Releaser`](crate::storage::mmap::Releaser)).
    pub(crate) fn slice_mapped(&self, start: u64, end: u64) -> Result<(Bytes, MapRange)> {
        debug_assert!(start <= end && end <= self.size);
        let map = self.map_covering(end)?;
        let range = to_usize(start)..to_usize(end);
        Ok((slice_bytes(&map, range.clone()), MapRange::new(&map, range)))
    }

    /// Iterates over the batch headers from `position` on, checking each
    /// batch's structure, CRC and offsets: from position 0 the first batch
    /// must start at the segment's base offset (at or above it, compacted);
    /// from elsewhere (a batch [`find_batch`](Self::find_batch) found) the
    /// first is taken as it is; every later one must continue the one
    /// before it.
    ///
    /// In a compacted log each batch is also checked against the offset
    /// index and the batch after it ([`Segment::suspect`]).
    pub(crate) fn batches_from(&self, position: u64) -> Result<SegmentBatches<'_>> {
        Ok(SegmentBatches {
            segment: self,
            map: self.map()?,
            position: to_usize(position),
            end: to_usize(self.size),
            expected: (position == 0).then_some(self.base_offset),
            crc: true,
        })
    }

    /// [`batches_from`](Self::batches_from) without the CRCs: each batch's
    /// structure and offsets are checked, its bytes are not read past the
    /// header. For walks over batches already checked whole (below the
    /// recovery point when they were written, above it by this open's
    /// recovery): the producer-state rebuild, which reads only headers and
    /// markers, as Kafka's does.
    pub(crate) fn headers_from(&self, position: u64) -> Result<SegmentBatches<'_>> {
        Ok(SegmentBatches {
            crc: false,
            ..self.batches_from(position)?
        })
    }

    /// In a compacted log, why the valid batch `header` at `position`
    /// (offsets up to `last`, which had to start at or above `floor`) cannot
    /// be served, if it cannot. A compacted log's offsets may jump, so a base
    /// offset raised by damage still starts above the batch before it; what
    /// shows it is the offset index (an entry at its position names another
    /// offset, or an entry at a later position names an offset it claims)
    /// or the batch after it, which then starts at or below its last
    /// offset. Such a conflict is blamed on this batch, as recovery does,
    /// unless an index entry names its last offset or the next batch also
    /// starts below `floor` (then the next one is the damaged one). `None`
    /// in a log that is not compacted, whose offsets are contiguous and
    /// checked batch by batch.
    fn suspect(
        &self,
        bytes: &[u8],
        position: u64,
        header: &BatchHeader,
        floor: u64,
        last: u64,
    ) -> Option<FormatError> {
        if self.limits.order != OffsetOrder::Increasing {
            return None;
        }
        let base = last - u64::try_from(header.last_offset_delta).unwrap_or(0);
        let contradiction = |expected| {
            Some(out_of_sequence(
                base,
                last,
                expected,
                "in a compacted log the offset index or the next batch puts that offset where \
                 this batch's offsets are; either may be the damaged one, so it is not served",
            ))
        };
        let confirmed = match self.index.lookup(last) {
            Some((offset, at)) if u64::from(at) > position => return contradiction(offset),
            Some((offset, at)) if u64::from(at) == position => {
                if offset != last {
                    return contradiction(offset);
                }
                true
            }
            _ => false,
        };
        let next = to_usize(position + header.total_size() as u64);
        if confirmed || next >= bytes.len() {
            return None;
        }
        match BatchHeader::parse(&bytes[next..]) {
            Ok(after) if after.base_offset <= last as i64 && after.base_offset >= floor as i64 => {
                contradiction(after.base_offset.max(0) as u64)
            }
            _ => None,
        }
    }

    /// End of the run of whole batches that starts at `start` (a batch
    /// boundary) and spans at most `max_bytes`, but always at least one batch,
    /// and holds only batches whose last offset is below `max_offset` (a
    /// first batch reaching it makes the run empty). Walks headers only; the reader checks CRCs. The run ends before a
    /// batch whose header is damaged or whose offsets do not continue the
    /// batch before it, so a read never hands out batches that skip or
    /// repeat offsets; a read starting at that batch reports it.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the first batch's header is damaged.
    pub(crate) fn batch_run_end(&self, start: u64, max_bytes: u64, max_offset: u64) -> Result<u64> {
        // Every byte the walk below looks at lies before the end of the
        // run's first batch or `start + max_bytes`, whichever is further,
        // plus one batch header (the walk parses the header after a batch
        // it keeps, and the header of the batch that ends the run). A map
        // covering that much serves it (see `map_covering`).
        let header = format::header::RECORD_BATCH_OVERHEAD as u64;
        let map = self.map_covering(start.saturating_add(header))?;
        let first_size = map
            .as_slice()
            .get(to_usize(start)..to_usize(self.size.min(map.len() as u64)))
            .and_then(|at| BatchHeader::parse(at).ok())
            .map_or(0, |h| h.total_size() as u64);
        let needed = start
            .saturating_add(first_size)
            .max(start.saturating_add(max_bytes))
            .saturating_add(header);
        let map = self.map_covering(needed)?;
        let bytes = &map.as_slice()[..to_usize(self.size.min(map.len() as u64))];
        let mut end = start;
        let mut expected = None;
        while end < self.size {
            let checked = BatchHeader::parse(&bytes[to_usize(end)..]).and_then(|header| {
                let offsets = match expected {
                    None => header.checked_offsets(),
                    Some(expected) => self.limits.order.check(expected, &header),
                };
                offsets.map(|(_, last)| (header, last))
            });
            let (header, last) = match checked {
                Ok(checked) => checked,
                Err(e) if end == start => return Err(self.corrupt(end, e)),
                Err(_) => break,
            };
            let size = header.total_size() as u64;
            let next = end + size;
            if next > self.size || (end > start && next - start > max_bytes) || last >= max_offset {
                break;
            }
            // The first batch has no predecessor here: any conflict with
            // the batch after it is blamed on it.
            if let Some(e) = self.suspect(bytes, end, &header, expected.unwrap_or(0), last) {
                if end == start {
                    return Err(self.corrupt(end, e));
                }
                break;
            }
            expected = Some(last + 1);
            end = next;
        }
        Ok(end)
    }

    /// Position and header of the first batch whose last offset is `>=
    /// offset`, or `None` if the segment has no such batch.
    ///
    /// Every batch walked on the way is checked: structure, CRC, and offsets
    /// that continue the batch before it (see [`OffsetOrder`]). The offset
    /// index is a hint: the walk starts at the batch its entry names, which
    /// must end at the entry's offset; if it does not, or anything after it
    /// fails its checks, the segment is walked from its start instead (where
    /// the first batch must start at the base offset), so a damaged index
    /// never yields a wrong answer and damaged batches are reported, never
    /// skipped.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for a batch failing its checks.
    pub(crate) fn find_batch(&self, offset: u64) -> Result<Option<(u64, BatchHeader)>> {
        self.find_batch_trusting(offset, 0..0)
    }

    /// [`find_batch`](Self::find_batch), without the CRCs of the batches
    /// lying wholly within `trusted` (a part of [`Segment::checked`] the
    /// caller trusts); their structure and offsets are still checked.
    pub(crate) fn find_batch_trusting(
        &self,
        offset: u64,
        trusted: std::ops::Range<u64>,
    ) -> Result<Option<(u64, BatchHeader)>> {
        let lookup = self.index.lookup(offset);
        {
            // First within the current map as it is (see `map_covering`):
            // a walk that finds the batch there, every batch on the way
            // checked whole, is the walk below, which would look at the
            // same bytes only. Anything else is decided by the walk over
            // all of `size`.
            let current = Arc::clone(&self.maps.lock().current);
            if (current.len() as u64) < self.size {
                let from = lookup.map_or(0, |(_, position)| u64::from(position));
                let entry = lookup.map(|(entry, _)| entry);
                if let Ok(Some(found)) =
                    self.scan_for(current.as_slice(), offset, from, entry, &trusted)
                {
                    return Ok(Some(found));
                }
            }
        }
        let map = self.map()?;
        let bytes = &map.as_slice()[..to_usize(self.size)];
        if let Some((entry, position)) = lookup
            && let Ok(found) =
                self.scan_for(bytes, offset, u64::from(position), Some(entry), &trusted)
        {
            return Ok(found);
        }
        self.scan_for(bytes, offset, 0, None, &trusted)
            .map_err(|(pos, e)| self.corrupt(pos, e))
    }

    /// Walks `bytes` (the segment's batches) from `from` (position 0, or the
    /// position of the index entry `entry`, whose batch must end at `entry`)
    /// to the first batch ending at or after `offset`. The CRC of a batch
    /// wholly within `trusted` is not checked.
    fn scan_for(
        &self,
        bytes: &[u8],
        offset: u64,
        from: u64,
        entry: Option<u64>,
        trusted: &std::ops::Range<u64>,
    ) -> std::result::Result<Option<(u64, BatchHeader)>, (u64, FormatError)> {
        let mut position = from;
        let mut expected = entry.is_none().then_some(self.base_offset);
        while position < (bytes.len() as u64).min(self.size) {
            let at = |e| (position, e);
            let rest = &bytes[to_usize(position)..];
            let header = format::check_batch_structure(rest).map_err(at)?;
            let end = position + header.total_size() as u64;
            if !(trusted.start <= position && end <= trusted.end) {
                format::verify_crc(&rest[..header.total_size()]).map_err(at)?;
            }
            let (_, last) = match (expected, entry) {
                (Some(expected), _) => self.limits.order.check(expected, &header),
                (None, Some(entry)) => header.checked_offsets().and_then(|(base, last)| {
                    if last == entry {
                        Ok((base, last))
                    } else {
                        Err(out_of_sequence(
                            base,
                            last,
                            entry,
                            "the offset index entry at this batch's position names that offset as its last",
                        ))
                    }
                }),
                (None, None) => header.checked_offsets(),
            }
            .map_err(at)?;
            if last >= offset {
                return Ok(Some((position, header)));
            }
            expected = Some(last + 1);
            position += header.total_size() as u64;
        }
        Ok(None)
    }

    pub(crate) fn corrupt(&self, position: u64, error: FormatError) -> Error {
        Error::corrupt(self.log_path(), position, CorruptionKind::Batch(error))
    }

    /// Position of the first batch that may hold a record with a timestamp
    /// `>= timestamp`: every record before it has an older timestamp.
    pub(crate) fn timestamp_scan_start(&self, timestamp: i64) -> Result<u64> {
        match self.time_index.lookup_lt(timestamp) {
            // Every record at or before `offset` is older than `timestamp`.
            Some((_, offset)) => Ok(self
                .find_batch(offset + 1)?
                .map_or(self.size, |(position, _)| position)),
            None => Ok(0),
        }
    }

    /// Rebuilds both indexes and the counters from the batches in the first
    /// `valid_bytes` of the log file, which recovery already checked (so
    /// only headers are read here). Bytes after them are cut separately with
    /// [`Segment::truncate_bytes`].
    pub(crate) fn rebuild_indexes(&mut self, valid_bytes: u64) -> Result<()> {
        self.index.reset()?;
        self.time_index.reset()?;
        self.bytes_since_last_index_entry = 0;
        self.max_timestamp = format::NO_TIMESTAMP;
        self.offset_of_max_timestamp = self.base_offset;
        self.next_offset = self.base_offset;
        self.rolling_timestamp = None;
        self.size = valid_bytes;
        self.checked = self.checked.start.min(valid_bytes)..self.checked.end.min(valid_bytes);
        let map = self.map()?;
        let bytes = &map.as_slice()[..to_usize(valid_bytes)];
        let mut position = 0usize;
        while position < bytes.len() {
            let header = BatchHeader::parse(&bytes[position..])
                .map_err(|e| self.corrupt(position as u64, e))?;
            let size = header.total_size();
            self.index_batch(
                position as u64,
                header.last_offset() as u64,
                header.max_timestamp,
                size as u64,
            )?;
            position += size;
        }
        Ok(())
    }

    /// Takes the counters that recovery derived from trusted indexes.
    pub(crate) fn adopt(&mut self, counters: Counters) {
        self.next_offset = counters.next_offset;
        self.max_timestamp = counters.max_timestamp;
        self.offset_of_max_timestamp = counters.offset_of_max_timestamp;
        self.rolling_timestamp = counters.rolling_timestamp;
        self.bytes_since_last_index_entry = counters.bytes_since_last_index_entry;
    }

    /// Cuts the log file to `valid_bytes` (after a scan found a torn tail).
    pub(crate) fn truncate_bytes(&mut self, valid_bytes: u64) -> Result<()> {
        self.shrink_file(valid_bytes)?;
        self.size = valid_bytes;
        Ok(())
    }

    /// Removes every batch holding an offset `>= offset`, cutting at the
    /// start of the batch that contains `offset`. Returns the new next offset.
    pub(crate) fn truncate_to(&mut self, offset: u64) -> Result<u64> {
        let Some((position, header)) = self.find_batch(offset)? else {
            return Ok(self.next_offset);
        };
        let new_next = header.base_offset.max(self.base_offset as i64) as u64;
        self.shrink_file(position)?;
        self.index.truncate_to(new_next)?;
        self.time_index.truncate_to(new_next)?;
        self.txn_index.truncate_to(new_next)?;
        // The dropped entries' zeroed slots are made durable before new
        // batches can land at their positions: recovery checks a compacted
        // log's index entries against its batches, and a stale entry that a
        // power loss brought back would then disagree with valid data.
        self.index.sync()?;
        self.time_index.sync()?;
        self.size = position;
        // Re-derive the counters from what is left.
        self.rebuild_counters()?;
        Ok(self.next_offset)
    }

    /// Recomputes next offset, max timestamp and index spacing by walking
    /// the kept batches' headers.
    fn rebuild_counters(&mut self) -> Result<()> {
        self.next_offset = self.base_offset;
        self.max_timestamp = format::NO_TIMESTAMP;
        self.offset_of_max_timestamp = self.base_offset;
        self.rolling_timestamp = None;
        let kept = self
            .batches_from(0)?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|(p, e)| self.corrupt(p, e))?;
        for (position, header) in kept {
            if position == 0 {
                self.rolling_timestamp = Some(header.max_timestamp);
            }
            if header.max_timestamp > self.max_timestamp {
                self.max_timestamp = header.max_timestamp;
                self.offset_of_max_timestamp = header.last_offset() as u64;
            }
            self.next_offset = header.last_offset() as u64 + 1;
        }
        // Appends reset the spacing at each entry's batch, then count it.
        let last_indexed = self.index.last_entry().map_or(0, |(_, p)| u64::from(p));
        self.bytes_since_last_index_entry = self.size - last_indexed;
        Ok(())
    }

    /// Shrinks the log file to `len` bytes, honouring the shrink rule.
    fn shrink_file(&mut self, len: u64) -> Result<()> {
        // The bytes kept stay as they are (checked or not); none past
        // `len` is checked any more, whatever comes to lie there.
        self.checked = self.checked.start.min(len)..self.checked.end.min(len);
        let live_beyond = {
            let mut maps = self.maps.lock();
            maps.handed_out.retain(|weak| weak.strong_count() > 0);
            let current_shared =
                Arc::strong_count(&maps.current) > 1 && maps.current.len() as u64 > len;
            current_shared
                || maps
                    .handed_out
                    .iter()
                    .filter_map(Weak::upgrade)
                    .any(|map| map.len() as u64 > len)
        };
        if live_beyond {
            self.replace_file_with_prefix(len)?;
        } else {
            // Drop our own map first: it may cover bytes past `len`.
            let mut maps = self.maps.lock();
            maps.current = self.file.map(0)?;
            drop(maps);
            self.file.set_len(len)?;
        }
        // Either way nothing is reserved past `len` any more.
        self.reserved.store(false, Ordering::Relaxed);
        self.reserved_end.store(len, Ordering::Relaxed);
        let mut maps = self.maps.lock();
        maps.current = self.file.map(to_usize(len))?;
        Ok(())
    }

    /// Writes the first `len` bytes to a new file and renames it over the log
    /// file. Maps of the old file keep reading the old inode.
    fn replace_file_with_prefix(&mut self, len: u64) -> Result<()> {
        let temp = segment_file(&self.dir, self.base_offset, TRUNCATING_SUFFIX);
        self.storage.remove_file(&temp)?;
        let fresh = self.storage.open(&temp, OpenMode::CreateNew)?;
        let old_map = self.file.map(to_usize(len))?;
        fresh.write_all_at(old_map.as_slice(), 0)?;
        fresh.sync()?;
        self.storage.rename(&temp, &self.log_path())?;
        self.storage.sync_dir(&self.dir)?;
        let mut maps = self.maps.lock();
        let old = std::mem::replace(&mut maps.current, fresh.map(0)?);
        maps.handed_out.push(Arc::downgrade(&old));
        drop(maps);
        self.file = fresh;
        Ok(())
    }

    /// Seals the segment when a newer one becomes active: records the
    /// largest timestamp in the time index (as Kafka does) and trims both
    /// index files to their entries.
    pub(crate) fn seal(&mut self) -> Result<()> {
        if self.max_timestamp != format::NO_TIMESTAMP {
            self.time_index
                .maybe_append(self.max_timestamp, self.offset_of_max_timestamp)?;
        }
        self.index.trim()?;
        self.time_index.trim()?;
        self.trim_reserved()?;
        self.sealed = true;
        Ok(())
    }

    /// Whether [`Segment::seal`] trimmed the indexes.
    pub(crate) fn is_sealed(&self) -> bool {
        self.sealed
    }

    /// Makes a sealed segment appendable again (after a truncation made it
    /// the active one): reopens its indexes at full preallocated size.
    pub(crate) fn unseal(&mut self) -> Result<()> {
        let path = |suffix| segment_file(&self.dir, self.base_offset, suffix);
        let (s, base, size, limits) = (
            self.storage.as_ref(),
            self.base_offset,
            self.size,
            self.limits,
        );
        self.index = reopen_index(
            s,
            &path(INDEX_SUFFIX),
            base,
            limits.index_bytes,
            size,
            limits,
        )?;
        self.time_index = reopen_index(
            s,
            &path(TIME_INDEX_SUFFIX),
            base,
            limits.index_bytes,
            size,
            limits,
        )?;
        self.sealed = false;
        Ok(())
    }

    /// Syncs the log file and both indexes.
    pub(crate) fn sync(&mut self) -> Result<()> {
        self.file.sync()?;
        self.index.sync()?;
        self.time_index.sync()?;
        self.txn_index.sync()
    }

    /// The aborted transactions whose ABORT marker this segment holds, in
    /// marker order.
    pub(crate) fn aborted_txns(&self) -> &[crate::format::txn_index::AbortedTxn] {
        self.txn_index.entries()
    }

    /// Records an aborted transaction whose ABORT marker this segment
    /// holds, creating the `.txnindex` file if needed. Returns the file
    /// (to fsync with the segment's log) and whether it was created.
    ///
    /// # Errors
    /// [`crate::Error::Io`].
    pub(crate) fn append_aborted(
        &mut self,
        txn: crate::format::txn_index::AbortedTxn,
    ) -> Result<(Arc<dyn StorageFile>, bool)> {
        self.txn_index.append(self.storage.as_ref(), txn)
    }

    /// Drops the segment's aborted-transaction entries whose marker is at
    /// or after `offset` (recovery rebuilds them from the batches).
    ///
    /// # Errors
    /// [`crate::Error::Io`].
    pub(crate) fn truncate_aborted(&mut self, offset: u64) -> Result<()> {
        self.txn_index.truncate_to(offset)
    }

    /// Creates the segment's `.txnindex` file if it has none (a staged
    /// segment always has one: see [`Segment::rename_stage`]).
    ///
    /// # Errors
    /// [`crate::Error::Io`].
    pub(crate) fn ensure_txn_index_file(&mut self) -> Result<()> {
        if self.txn_index.file().is_none() {
            let path = self.txn_index.path().to_path_buf();
            drop(self.storage.open(&path, OpenMode::CreateOrOpen)?);
            self.txn_index = TxnIndexFile::open(self.storage.as_ref(), path)?.0;
        }
        Ok(())
    }

    /// Renames the segment's three files with a `.deleted` suffix. Readers
    /// holding maps keep reading; the files are removed later with
    /// [`remove_deleted_files`].
    pub(crate) fn mark_deleted(&self) -> Result<Vec<PathBuf>> {
        let mut renamed = Vec::with_capacity(4);
        for suffix in [
            LOG_SUFFIX,
            INDEX_SUFFIX,
            TIME_INDEX_SUFFIX,
            TXN_INDEX_SUFFIX,
        ] {
            let from = segment_file(&self.dir, self.base_offset, suffix);
            if self.storage.exists(&from) {
                let to = from.with_extension(format!("{suffix}.{DELETED_SUFFIX}"));
                self.storage.rename(&from, &to)?;
                renamed.push(to);
            }
        }
        Ok(renamed)
    }
}

/// Removes files renamed by [`Segment::mark_deleted`].
pub(crate) fn remove_deleted_files(storage: &dyn Storage, paths: &[PathBuf]) -> Result<()> {
    for path in paths {
        storage.remove_file(path)?;
    }
    Ok(())
}

/// Iterator over batch headers of a segment (see [`Segment::batches_from`]).
#[derive(Debug)]
pub(crate) struct SegmentBatches<'a> {
    segment: &'a Segment,
    map: Arc<ReadMap>,
    position: usize,
    end: usize,
    /// The offset the next batch must start at (or above, compacted);
    /// `None` for a first batch taken as it is.
    expected: Option<u64>,
    /// Whether each batch's CRC is checked.
    crc: bool,
}

impl Iterator for SegmentBatches<'_> {
    type Item = std::result::Result<(u64, BatchHeader), (u64, FormatError)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.position >= self.end {
            return None;
        }
        let at = self.position;
        let bytes = &self.map.as_slice()[..self.end];
        let check = if self.crc {
            format::check_batch
        } else {
            format::check_batch_structure
        };
        let checked = check(&bytes[at..]).and_then(|header| {
            let offsets = match self.expected {
                Some(expected) => self.segment.limits.order.check(expected, &header),
                None => header.checked_offsets(),
            };
            let (_, last) = offsets?;
            let floor = self.expected.unwrap_or(0);
            match self.segment.suspect(bytes, at as u64, &header, floor, last) {
                Some(e) => Err(e),
                None => Ok((header, last)),
            }
        });
        match checked {
            Ok((header, last)) => {
                self.position += header.total_size();
                self.expected = Some(last + 1);
                Some(Ok((at as u64, header)))
            }
            Err(e) => {
                self.position = self.end;
                Some(Err((at as u64, e)))
            }
        }
    }
}

/// A byte position or size of a segment as `usize`. Segments hold at most
/// [`MAX_BATCH_POSITION`] bytes of batches plus one batch (recovery cuts or
/// refuses anything beyond, and appends roll before `segment.bytes`), which
/// fits `usize` on every supported target; a larger value saturates, and
/// mapping that many bytes then fails with an error instead of a panic.
fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::BatchBuilder;
    use crate::storage::StdStorage;
    use crate::types::Compression;

    fn one_batch(base: i64) -> (Vec<u8>, BatchMeta) {
        let mut builder = BatchBuilder::new(Compression::None).base_offset(base);
        builder.append(42, Some(b"k"), Some(b"v"), &[]);
        let bytes = builder.build().expect("batch").to_vec();
        let meta = BatchMeta {
            position_in_buf: 0,
            size: bytes.len(),
            last_offset: base as u64,
            max_timestamp: 42,
        };
        (bytes, meta)
    }

    #[test]
    fn a_segment_made_from_a_spare_is_a_normal_segment() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage: Arc<dyn Storage> = Arc::new(StdStorage::new());
        let limits = SegmentLimits {
            index_bytes: 4096,
            index_interval_bytes: 1,
            order: OffsetOrder::Contiguous,
        };
        spare::prepare(&storage, dir.path(), limits)?;
        let mut segment = Segment::from_spare(&storage, dir.path(), 100, limits)?;
        assert!(!storage.exists(&spare::spare_file(dir.path(), LOG_SUFFIX)));
        for base in 100..103 {
            let (bytes, meta) = one_batch(base);
            segment.append(&bytes, &[meta])?;
        }
        assert_eq!(segment.next_offset(), 103);
        assert_eq!(
            segment.find_batch(102)?.map(|(_, h)| h.base_offset),
            Some(102)
        );
        segment.seal()?;
        drop(segment);
        // The files carry the segment's name and reopen as recovery opens a
        // segment it scanned.
        let index = segment_file(dir.path(), 100, INDEX_SUFFIX);
        assert!(storage.exists(&index));
        let mut reopened = Segment::open(&storage, dir.path(), 100, limits, false)?;
        reopened.rebuild_indexes(reopened.size())?;
        assert_eq!(reopened.next_offset(), 103);
        assert_eq!(
            reopened.find_batch(101)?.map(|(_, h)| h.base_offset),
            Some(101)
        );
        Ok(())
    }

    /// The disk blocks of `path`, in bytes.
    fn allocated(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).expect("stat").blocks() * 512
    }

    /// Appends reserve the log file's blocks a window ahead without
    /// changing its length (so readers, recovery and other parsers see the
    /// same file); sealing, and a truncation, give the reservation back.
    #[test]
    fn appends_reserve_blocks_ahead_that_seal_and_truncation_give_back() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut segment, _) = segment_of(dir.path(), OffsetOrder::Contiguous, &[0, 1, 2])?;
        let path = segment.log_path();
        assert_eq!(
            std::fs::metadata(&path).expect("stat").len(),
            segment.size()
        );
        if !segment.reserved.load(Ordering::Relaxed) {
            // A file system without `fallocate`: nothing is reserved.
            assert_eq!(segment.reserved_end.load(Ordering::Relaxed), u64::MAX);
            return Ok(());
        }
        assert!(allocated(&path) >= MIN_RESERVE_BYTES, "reserved ahead");
        assert!(segment.reserved_end.load(Ordering::Relaxed) > segment.size());
        // Truncating gives the reservation back; the next append reserves
        // again.
        let position = segment.find_batch(2)?.map(|(p, _)| p).expect("batch 2");
        segment.truncate_to(2)?;
        assert_eq!(segment.size(), position);
        assert!(
            allocated(&path) < MIN_RESERVE_BYTES,
            "a truncation frees it"
        );
        let (bytes, meta) = one_batch(2);
        segment.append(&bytes, &[meta])?;
        assert!(allocated(&path) >= MIN_RESERVE_BYTES, "reserved again");
        segment.seal()?;
        assert_eq!(
            std::fs::metadata(&path).expect("stat").len(),
            segment.size()
        );
        assert!(allocated(&path) < MIN_RESERVE_BYTES, "sealing frees it");
        assert_eq!(segment.find_batch(2)?.map(|(_, h)| h.base_offset), Some(2));
        Ok(())
    }

    /// A segment of one-record batches at `bases`, appended as they are,
    /// with an index entry per batch (after the first).
    fn segment_of(dir: &Path, order: OffsetOrder, bases: &[i64]) -> Result<(Segment, Vec<u64>)> {
        let storage: Arc<dyn Storage> = Arc::new(StdStorage::new());
        let limits = SegmentLimits {
            index_bytes: 4096,
            index_interval_bytes: 1,
            order,
        };
        let mut segment = Segment::create(&storage, dir, 0, limits)?;
        let mut positions = Vec::new();
        for &base in bases {
            let (bytes, meta) = one_batch(base);
            positions.push(segment.append(&bytes, &[meta])?);
        }
        Ok((segment, positions))
    }

    /// A read of batches the current map covers is served from it however
    /// far appends moved the end since (no remap, no page faults again);
    /// a read reaching past it maps the whole segment and sees every batch.
    #[test]
    fn reads_behind_the_end_keep_the_current_map() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut segment, mut positions) =
            segment_of(dir.path(), OffsetOrder::Contiguous, &[0, 1, 2])?;
        let first = segment.map()?;
        assert_eq!(first.len() as u64, segment.size());
        for base in 3..6 {
            let (bytes, meta) = one_batch(base);
            positions.push(segment.append(&bytes, &[meta])?);
        }
        let current = || Arc::clone(&segment.maps.lock().current);

        let (position, header) = segment.find_batch(1)?.expect("batch 1");
        assert_eq!((position, header.base_offset), (positions[1], 1));
        let one_batch_bytes = positions[2] - positions[1];
        let end = segment.batch_run_end(position, one_batch_bytes, u64::MAX)?;
        assert_eq!(end, positions[2]);
        let (bytes, _) = segment.slice_mapped(position, end)?;
        assert_eq!(
            crate::format::BatchHeader::parse(&bytes)?.base_offset,
            1,
            "the batch itself"
        );
        // Two batches' worth of bytes: still within the old map.
        assert_eq!(
            segment.batch_run_end(0, positions[2], u64::MAX)?,
            positions[2]
        );
        assert!(Arc::ptr_eq(&first, &current()), "no remap behind the end");

        let (position, header) = segment.find_batch(4)?.expect("batch 4");
        assert_eq!((position, header.base_offset), (positions[4], 4));
        assert_eq!(
            segment.batch_run_end(0, u64::MAX, u64::MAX)?,
            segment.size()
        );
        let (bytes, _) = segment.slice_mapped(positions[2], segment.size())?;
        assert_eq!(bytes.len() as u64, segment.size() - positions[2]);
        assert!(!Arc::ptr_eq(&first, &current()));
        assert_eq!(current().len() as u64, segment.size());
        Ok(())
    }

    #[test]
    fn a_position_beyond_32_bits_is_an_error_not_a_panic() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut segment, _) = segment_of(dir.path(), OffsetOrder::Contiguous, &[0, 1])?;
        let err = segment
            .index_batch(5 << 30, 2, 42, 100)
            .expect_err("no index position");
        assert!(
            matches!(
                err,
                Error::Corrupt {
                    kind: CorruptionKind::PositionOutOfRange { .. },
                    ..
                }
            ),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn reads_of_a_contiguous_segment_never_cross_a_gap() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (segment, positions) =
            segment_of(dir.path(), OffsetOrder::Contiguous, &[0, 1, 2, 9, 10])?;
        // Before the gap: found, and a run ends before the batch after it.
        let (at, _) = segment.find_batch(1)?.expect("found");
        assert_eq!(at, positions[1]);
        assert_eq!(segment.batch_run_end(at, u64::MAX, u64::MAX)?, positions[3]);
        // In it: the walk reaches the gap, from the index entry and again
        // from the start, and reports it.
        let err = segment.find_batch(3).expect_err("the gap");
        let Error::Corrupt { position, kind, .. } = err else {
            panic!("{err}")
        };
        assert_eq!(position, positions[3]);
        assert!(
            matches!(
                kind,
                CorruptionKind::Batch(FormatError::OffsetsOutOfSequence { .. })
            ),
            "{kind}"
        );
        // After it, a read anchored at an index entry naming the batch gets
        // that batch, which holds the offset asked for: nothing is skipped.
        let (at, header) = segment.find_batch(9)?.expect("found");
        assert_eq!((at, header.base_offset), (positions[3], 9));
        // The same walk by timestamp.
        let items: Vec<_> = segment.batches_from(0)?.collect();
        assert_eq!(items.len(), 4);
        assert!(matches!(items[3], Err((p, _)) if p == positions[3]));
        Ok(())
    }

    #[test]
    fn reads_of_a_compacted_segment_never_serve_a_raised_base_offset() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        // Gaps are fine; the batch at 7 is followed by one at 4: one of the
        // two was damaged, and the index entry at its position (offset 3)
        // says it is the raised one.
        let (segment, positions) =
            segment_of(dir.path(), OffsetOrder::Increasing, &[0, 2, 3, 4, 8])?;
        let mut bytes = std::fs::read(segment.log_path()).expect("read");
        format::set_base_offset(&mut bytes[to_usize(positions[2])..], 7);
        std::fs::write(segment.log_path(), &bytes).expect("write");
        // The run from the start ends before the raised batch.
        assert_eq!(segment.batch_run_end(0, u64::MAX, u64::MAX)?, positions[2]);
        // Reading it fails; the batches after it read.
        let (at, header) = segment.find_batch(3)?.expect("found");
        assert_eq!((at, header.base_offset), (positions[2], 7));
        assert!(matches!(
            segment.batch_run_end(at, u64::MAX, u64::MAX),
            Err(Error::Corrupt { position, .. }) if position == positions[2]
        ));
        let (at, header) = segment.find_batch(4)?.expect("found");
        assert_eq!((at, header.base_offset), (positions[3], 4));
        assert_eq!(
            segment.batch_run_end(at, u64::MAX, u64::MAX)?,
            segment.size()
        );
        let items: Vec<_> = segment.batches_from(0)?.collect();
        assert!(matches!(items[2], Err((p, _)) if p == positions[2]));
        Ok(())
    }

    #[test]
    fn adopting_a_missing_spare_fails_and_leaves_nothing() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage: Arc<dyn Storage> = Arc::new(StdStorage::new());
        let limits = SegmentLimits {
            index_bytes: 4096,
            index_interval_bytes: 1,
            order: OffsetOrder::Contiguous,
        };
        assert!(Segment::from_spare(&storage, dir.path(), 7, limits).is_err());
        assert!(storage.list_dir(dir.path())?.is_empty());
        // The inline fallback works in the same place.
        Segment::create(&storage, dir.path(), 7, limits)?;
        Ok(())
    }
}
