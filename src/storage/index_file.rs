//! The machinery Kafka's two index files share: a file of fixed-size slots,
//! preallocated with zeros, written with positioned writes and read through a
//! read-only map of the whole file.
//!
//! New entries are buffered and written in runs of [`PENDING_SLOTS`] (and
//! whenever the index is synced, trimmed or truncated), so an append does not
//! pay a system call per index entry. Entries still buffered when a process
//! dies are lost, which is harmless: an index is a hint that recovery checks
//! against the log and rebuilds when it disagrees.
//!
//! [`IndexFile`] knows slots and entry validity, not offsets or positions; the
//! typed indexes ([`OffsetIndex`](super::index::OffsetIndex),
//! [`TimeIndex`](super::time_index::TimeIndex)) are thin layers over it.
//!
//! The index owns its one map and never hands it out, so it may shrink its
//! file (trim, reset) after replacing the map, as the invariant of
//! [`mmap`](super::mmap) requires.
//!
//! ## Opening costs the entries, not the file
//! A sealed segment's index is trimmed to its entries (at the seal, and the
//! active segment's at a clean close); an appendable one's keeps its
//! preallocated zero tail, 10 MiB by Kafka's default, which a crash leaves
//! behind. Opening or inspecting a file reads its entries and the one slot
//! after them, never the rest: an untrimmed file is reported as such
//! ([`IndexLoad::is_trimmed`]) and recovery rebuilds that segment's indexes
//! instead of trusting them, and [`IndexFile::open`] and
//! [`IndexFile::emptied`] drop a tail by cutting the file and extending it
//! again (a sparse file: constant cost), never by reading or zeroing it.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::storage::file::{OpenMode, Storage, StorageFile};
use crate::storage::mmap::ReadMap;

/// One fixed-size entry of an index file.
pub(crate) trait IndexEntry: Copy + Debug {
    /// Bytes per slot.
    const SIZE: usize;
    /// Decodes a slot of exactly [`Self::SIZE`] bytes.
    fn decode(slot: &[u8]) -> Self;
    /// Encodes into a slot of exactly [`Self::SIZE`] bytes.
    fn encode(&self, slot: &mut [u8]);
    /// Whether `next` may directly follow `self` in a valid index.
    fn precedes(&self, next: &Self) -> bool;
    /// The entry's offset relative to its segment's base offset.
    fn relative_offset(&self) -> u32;
}

/// What [`IndexFile::open`] (or [`IndexFile::inspect`]) found in an
/// existing file.
///
/// Only the entries and the one slot after them are read: the cost does not
/// depend on the file's size. A file that is longer than its entries is
/// either an appendable segment's index, preallocated with zeros and never
/// trimmed (a segment sealed or closed cleanly has its index trimmed to its
/// entries), or damaged; its tail is never read slot by slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexLoad {
    /// Entries loaded: the longest consistent prefix.
    pub(crate) entries: usize,
    /// Whole slots after the entries, not read beyond the first. [`IndexFile::open`]
    /// drops them unread (cuts the file to its entries, then re-extends it).
    pub(crate) slots_after: usize,
    /// The slot right after the entries is not all zeros: an entry that
    /// does not follow the one before it (damage), where a preallocated
    /// tail starts with a zero slot.
    pub(crate) damaged: bool,
    /// Bytes of an incomplete slot at the end of the file.
    pub(crate) trailing_bytes: usize,
    /// The file was larger than its segment could need, so it was not read
    /// at all (and, when opened, emptied).
    pub(crate) oversized: bool,
}

impl IndexLoad {
    /// Whether the entries are consistent and followed by nothing or by a
    /// zero slot (as far as read: the rest of a preallocated tail is not
    /// read), in whole slots: usable as hints that are checked against the
    /// log. When not, the caller should rebuild the index from the log.
    pub(crate) fn is_clean(&self) -> bool {
        !self.damaged && self.trailing_bytes == 0 && !self.oversized
    }

    /// Whether the file holds exactly its entries, as sealing a segment
    /// (and a clean close) leaves it: clean, and nothing after the entries.
    /// Only such an index is trusted for a segment's counters; an untrimmed
    /// one belonged to a segment that was appendable when the process died
    /// (or lost its trim in a power loss), and its tail was not read.
    pub(crate) fn is_trimmed(&self) -> bool {
        self.is_clean() && self.slots_after == 0
    }

    /// What an index file too large to be read loads: nothing.
    fn oversized() -> Self {
        IndexLoad {
            entries: 0,
            slots_after: 0,
            damaged: false,
            trailing_bytes: 0,
            oversized: true,
        }
    }
}

/// The most bytes an index file of a segment whose log file holds
/// `log_len` bytes can sensibly have: the configured preallocation
/// (`max_bytes`), or one slot per possible batch (every batch is at least
/// [`RECORD_BATCH_OVERHEAD`](crate::format::RECORD_BATCH_OVERHEAD) bytes)
/// plus one, whichever is larger. A larger file (a sparse multi-GB one,
/// say) cannot hold a valid index of the segment; it is not read, only
/// rebuilt, so inspecting it costs neither time nor memory.
pub(crate) fn plausible_bytes(log_len: u64, max_bytes: u64, slot_size: usize) -> u64 {
    let batches = log_len / crate::format::RECORD_BATCH_OVERHEAD as u64 + 2;
    max_bytes.max(batches.saturating_mul(slot_size as u64))
}

/// A segment's index over an [`IndexFile`] (the offset index, the time
/// index): how one is made, the same for both.
pub(crate) trait SegmentIndex: Sized {
    /// What one slot holds.
    type Entry: IndexEntry;

    /// The index of the segment at `base_offset` over `slots`.
    fn over(slots: IndexFile<Self::Entry>, base_offset: u64) -> Self;

    /// The index's slots.
    fn slots(&self) -> &IndexFile<Self::Entry>;

    /// The index's slots, to change.
    fn slots_mut(&mut self) -> &mut IndexFile<Self::Entry>;

    /// The segment's base offset.
    fn base_offset(&self) -> u64;

    /// Drops the entries with offset `>= offset` and zeroes their slots.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) if zeroing fails; the entries are
    /// dropped from this index regardless.
    fn truncate_to(&mut self, offset: u64) -> Result<()> {
        let base = self.base_offset();
        let keep = self
            .slots()
            .partition_point(|e| base + u64::from(e.relative_offset()) < offset);
        self.slots_mut().truncate(keep)
    }

    /// Drops every entry (to rebuild the index) and restores the
    /// configured capacity.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io); the index is then empty and full
    /// until reopened.
    fn reset(&mut self) -> Result<()> {
        self.slots_mut().reset()
    }

    /// Shrinks the file to exactly its entries (sealing the segment); the
    /// index is full afterwards.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io); the index is then empty and full
    /// until reopened.
    fn trim(&mut self) -> Result<()> {
        self.slots_mut().trim()
    }

    /// Flushes the index file to the device.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io).
    fn sync(&mut self) -> Result<()> {
        self.slots_mut().sync()
    }

    /// Whether no more entries fit.
    fn is_full(&self) -> bool {
        self.slots().is_full()
    }

    /// Number of entries.
    #[cfg(test)]
    fn entries(&self) -> usize {
        self.slots().entries()
    }

    /// The index file's path.
    #[cfg(test)]
    fn path(&self) -> &Path {
        self.slots().file().path()
    }

    /// The index file (to close it, drop the index; to delete it, rename
    /// or remove its path through the [`Storage`]).
    #[cfg(test)]
    fn file(&self) -> &std::sync::Arc<dyn crate::storage::StorageFile> {
        self.slots().file()
    }

    /// Creates a new, empty index file at `path` (which must not exist),
    /// preallocated to `max_index_bytes` rounded down to whole slots.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io).
    fn create(
        storage: &dyn Storage,
        path: &Path,
        base_offset: u64,
        max_index_bytes: u64,
    ) -> Result<Self> {
        let slots = IndexFile::create(storage, path, max_index_bytes)?;
        Ok(Self::over(slots, base_offset))
    }

    /// Opens an existing index file ([`IndexFile::open`]). Loads the
    /// longest prefix of entries in which each entry follows the one
    /// before ([`IndexEntry::precedes`]), stopping at the zero tail, drops
    /// what follows without reading it and re-extends the file to
    /// `max_index_bytes` for appends. The returned [`IndexLoad`] says what
    /// followed the entries; if it was not clean, the caller should
    /// rebuild the index from the log (reset it, then append).
    ///
    /// Entries are not checked against the log; the caller checks the last
    /// one against the log's end. A file longer than `plausible` bytes
    /// ([`plausible_bytes`]) is not read but emptied.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io), also when the file is missing.
    fn open(
        storage: &dyn Storage,
        path: &Path,
        base_offset: u64,
        max_index_bytes: u64,
        plausible: u64,
    ) -> Result<(Self, IndexLoad)> {
        let (slots, load) = IndexFile::open(storage, path, max_index_bytes, plausible)?;
        Ok((Self::over(slots, base_offset), load))
    }

    /// An empty index in the file at `path` (created if missing) whose
    /// content is dropped unread, for a rebuild (see
    /// [`IndexFile::emptied`]).
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io).
    fn emptied(
        storage: &dyn Storage,
        path: &Path,
        base_offset: u64,
        max_index_bytes: u64,
    ) -> Result<Self> {
        let slots = IndexFile::emptied(storage, path, max_index_bytes)?;
        Ok(Self::over(slots, base_offset))
    }

    /// An empty index in a file that `mode` creates, or (`Existing`) in a
    /// file known to hold only zeros, such as an adopted spare.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io).
    fn empty(
        storage: &dyn Storage,
        path: &Path,
        base_offset: u64,
        max_index_bytes: u64,
        mode: OpenMode,
    ) -> Result<Self> {
        let slots = IndexFile::empty(storage, path, max_index_bytes, mode)?;
        Ok(Self::over(slots, base_offset))
    }
}

/// How many new entries are buffered before they are written.
pub(crate) const PENDING_SLOTS: usize = 64;

/// A slot file: entries `0..entries` are valid (the last ones possibly still
/// buffered in `pending`), slots up to `capacity` are preallocated zeros.
///
/// After an I/O error from [`trim`](Self::trim) or [`reset`](Self::reset)
/// the index is left empty and full; the caller must reopen it.
#[derive(Debug)]
pub(crate) struct IndexFile<E: IndexEntry> {
    file: Arc<dyn StorageFile>,
    /// A map of `capacity * E::SIZE` bytes (at least); owned, never shared.
    map: Arc<ReadMap>,
    entries: usize,
    /// Encoded entries not yet written: the last `pending.len() / E::SIZE`
    /// of the `entries`.
    pending: Vec<u8>,
    capacity: usize,
    /// Capacity from the configured maximum size, restored by `reset`.
    max_slots: usize,
    _entry: PhantomData<E>,
}

fn slots_for(max_bytes: u64, size: usize) -> usize {
    usize::try_from(max_bytes / size as u64).unwrap_or(usize::MAX / size)
}

fn byte_len(slots: usize, size: usize) -> u64 {
    (slots as u64) * (size as u64)
}

impl<E: IndexEntry> IndexFile<E> {
    /// Creates `path` (which must not exist) preallocated to `max_bytes`
    /// rounded down to whole slots.
    pub(crate) fn create(storage: &dyn Storage, path: &Path, max_bytes: u64) -> Result<Self> {
        Self::empty(storage, path, max_bytes, OpenMode::CreateNew)
    }

    /// An empty index in a file that `mode` creates, or (with
    /// [`OpenMode::Existing`]) in a file that is known to hold only zeros,
    /// such as a prepared spare; its length is set to `max_bytes` rounded
    /// down to whole slots if it differs.
    pub(crate) fn empty(
        storage: &dyn Storage,
        path: &Path,
        max_bytes: u64,
        mode: OpenMode,
    ) -> Result<Self> {
        let file = storage.open(path, mode)?;
        let max_slots = slots_for(max_bytes, E::SIZE);
        if mode == OpenMode::CreateNew || file.len()? != byte_len(max_slots, E::SIZE) {
            file.set_len(byte_len(max_slots, E::SIZE))?;
        }
        Self::over(file, max_slots, 0)
    }

    /// An empty index in the file at `path` (created if missing), whatever
    /// the file held: its content is dropped without being read (the file
    /// is cut to nothing, then extended with zeros to `max_bytes` rounded
    /// down to whole slots), so this costs the same for any file size. For
    /// an index that recovery rebuilds from the log.
    pub(crate) fn emptied(storage: &dyn Storage, path: &Path, max_bytes: u64) -> Result<Self> {
        let file = storage.open(path, OpenMode::CreateOrOpen)?;
        let max_slots = slots_for(max_bytes, E::SIZE);
        file.set_len(0)?;
        file.set_len(byte_len(max_slots, E::SIZE))?;
        Self::over(file, max_slots, 0)
    }

    /// An index over `file`, which is `max_slots.max(entries)` slots long
    /// and holds `entries` entries, written.
    fn over(file: Arc<dyn StorageFile>, max_slots: usize, entries: usize) -> Result<Self> {
        let capacity = max_slots.max(entries);
        let map = file.map(capacity * E::SIZE)?;
        map.advise_random();
        Ok(IndexFile {
            file,
            map,
            entries,
            pending: Vec::new(),
            capacity,
            max_slots,
            _entry: PhantomData,
        })
    }

    /// Opens an existing index file, loads its longest consistent prefix of
    /// entries and drops whatever follows it without reading it (the zero
    /// tail of a preallocated file, or damage): the file is cut to its
    /// entries, then re-extended with zeros to `max_bytes` (or to the
    /// entries it holds, if more). Reads the entries and one slot after
    /// them, whatever the file's size. A file longer than `plausible` bytes
    /// (see [`plausible_bytes`]) is not read: it is emptied, and the load
    /// says so.
    pub(crate) fn open(
        storage: &dyn Storage,
        path: &Path,
        max_bytes: u64,
        plausible: u64,
    ) -> Result<(Self, IndexLoad)> {
        let file = storage.open(path, OpenMode::Existing)?;
        let len = file.len()?;
        let load = match usize::try_from(len) {
            Ok(len) if len as u64 <= plausible => {
                let map = file.map(len)?;
                map.advise_random();
                scan::<E>(map.as_slice())
            }
            _ => IndexLoad::oversized(),
        };
        // The scan's map is dropped: this index holds no map of the file
        // while it changes the file's length.
        let kept = byte_len(load.entries, E::SIZE);
        if len != kept {
            file.set_len(kept)?;
        }
        let max_slots = slots_for(max_bytes, E::SIZE);
        let wanted = byte_len(max_slots.max(load.entries), E::SIZE);
        if wanted != kept {
            file.set_len(wanted)?;
        }
        Ok((Self::over(file, max_slots, load.entries)?, load))
    }

    /// Reads an existing index file without changing it: what
    /// [`open`](Self::open) would load, and the entries of that prefix, read
    /// through a map of the file (no copy, nothing allocated per slot; of
    /// the slots after the entries only the first is read). A file longer
    /// than `plausible` bytes is not read (an empty,
    /// [oversized](IndexLoad::oversized) load). `None` if the file does not
    /// exist.
    pub(crate) fn inspect(
        storage: &dyn Storage,
        path: &Path,
        plausible: u64,
    ) -> Result<Option<(IndexLoad, Slots<E>)>> {
        if !storage.exists(path) {
            return Ok(None);
        }
        let file = storage.open(path, OpenMode::Existing)?;
        let len = file.len()?;
        let Some(len) = usize::try_from(len).ok().filter(|&l| l as u64 <= plausible) else {
            let empty = Slots {
                map: Arc::new(ReadMap::empty()),
                entries: 0,
                _entry: PhantomData,
            };
            return Ok(Some((IndexLoad::oversized(), empty)));
        };
        let map = file.map(len)?;
        map.advise_random();
        let load = scan::<E>(map.as_slice());
        let slots = Slots {
            map,
            entries: load.entries,
            _entry: PhantomData,
        };
        Ok(Some((load, slots)))
    }

    /// Reads an existing index file without changing it, as
    /// [`inspect`](Self::inspect) does, and keeps only a clean one: `None`
    /// if the file is missing, longer than `plausible` bytes, or not clean
    /// (a damaged entry after the valid prefix, an incomplete slot);
    /// otherwise its entries and whether the file held nothing else
    /// ([`IndexLoad::is_trimmed`]).
    pub(crate) fn inspect_clean(
        storage: &dyn Storage,
        path: &Path,
        plausible: u64,
    ) -> Result<Option<(Slots<E>, bool)>> {
        Ok(match Self::inspect(storage, path, plausible)? {
            Some((load, slots)) if load.is_clean() => Some((slots, load.is_trimmed())),
            _ => None,
        })
    }

    /// Number of valid entries.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> usize {
        self.entries
    }

    /// Whether no more entries fit.
    pub(crate) fn is_full(&self) -> bool {
        self.entries >= self.capacity
    }

    /// Entries already written to the file.
    fn written(&self) -> usize {
        self.entries - self.pending.len() / E::SIZE
    }

    /// Entry `i`; `i < entries()`.
    pub(crate) fn entry(&self, i: usize) -> E {
        debug_assert!(i < self.entries);
        let written = self.written();
        if i < written {
            E::decode(&self.map.as_slice()[i * E::SIZE..(i + 1) * E::SIZE])
        } else {
            let at = (i - written) * E::SIZE;
            E::decode(&self.pending[at..at + E::SIZE])
        }
    }

    /// The last entry, if any.
    pub(crate) fn last(&self) -> Option<E> {
        self.entries.checked_sub(1).map(|i| self.entry(i))
    }

    /// The number of leading entries for which `pred` holds; `pred` must be
    /// true for a prefix of the entries and false after (binary search).
    pub(crate) fn partition_point(&self, pred: impl Fn(&E) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.entries);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(&self.entry(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Writes `entry` into the next slot. The caller has checked that it
    /// follows the last entry.
    pub(crate) fn push(&mut self, entry: &E) -> Result<()> {
        if self.is_full() {
            return Err(Error::Internal(format!(
                "append to full index {} ({} entries)",
                self.file.path().display(),
                self.entries
            )));
        }
        let at = self.pending.len();
        self.pending.resize(at + E::SIZE, 0);
        entry.encode(&mut self.pending[at..]);
        self.entries += 1;
        if self.pending.len() >= PENDING_SLOTS * E::SIZE {
            self.write_pending()?;
        }
        Ok(())
    }

    /// Writes the buffered entries to their slots. On failure they stay
    /// buffered (and visible to lookups); the caller fences.
    pub(crate) fn write_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.file
            .write_all_at(&self.pending, byte_len(self.written(), E::SIZE))?;
        self.pending.clear();
        Ok(())
    }

    /// Keeps the first `keep` entries and zeroes the slots of the others so
    /// that a reopen cannot resurrect them. Readers stop seeing the dropped
    /// entries even if zeroing fails.
    pub(crate) fn truncate(&mut self, keep: usize) -> Result<()> {
        if keep >= self.entries {
            return Ok(());
        }
        let written = self.written();
        if keep >= written {
            self.pending.truncate((keep - written) * E::SIZE);
            self.entries = keep;
            return Ok(());
        }
        self.pending.clear();
        let dropped = written - keep;
        self.entries = keep;
        self.file
            .write_all_at(&vec![0u8; dropped * E::SIZE], byte_len(keep, E::SIZE))
    }

    /// Drops every entry and restores the configured capacity (for a
    /// rebuild).
    pub(crate) fn reset(&mut self) -> Result<()> {
        self.entries = 0;
        self.pending.clear();
        self.capacity = self.max_slots;
        self.resize(0)
            .and_then(|()| self.resize(byte_len(self.max_slots, E::SIZE)))
    }

    /// Shrinks the file to exactly its entries, as Kafka does when a segment
    /// is sealed; the index is full afterwards.
    pub(crate) fn trim(&mut self) -> Result<()> {
        self.write_pending()?;
        self.capacity = self.entries;
        self.resize(byte_len(self.entries, E::SIZE))
    }

    /// Sets the file length to `len` bytes and maps all of it. The old map
    /// is dropped first (this index is its only holder), so no live map
    /// covers bytes the file loses.
    fn resize(&mut self, len: u64) -> Result<()> {
        self.map = Arc::new(ReadMap::empty());
        let result = self.file.set_len(len).and_then(|()| {
            let len = usize::try_from(len).expect("length of mapped slots fits usize");
            let map = self.file.map(len)?;
            map.advise_random();
            Ok(map)
        });
        match result {
            Ok(map) => {
                self.map = map;
                Ok(())
            }
            Err(e) => {
                self.entries = 0;
                self.pending.clear();
                self.capacity = 0;
                Err(e)
            }
        }
    }

    /// Writes buffered entries and flushes the file to the device.
    pub(crate) fn sync(&mut self) -> Result<()> {
        self.write_pending()?;
        self.file.sync()
    }

    /// The index file.
    #[cfg(test)]
    pub(crate) fn file(&self) -> &Arc<dyn StorageFile> {
        &self.file
    }
}

impl<E: IndexEntry> Drop for IndexFile<E> {
    /// Writes buffered entries on a clean drop, as `BufWriter` does. A
    /// failure is ignored: the entries are a hint that recovery rebuilds.
    fn drop(&mut self) {
        let _ = self.write_pending();
    }
}

/// The valid entries of an index file that [`IndexFile::inspect`] read,
/// through a read-only map of the file.
#[derive(Debug)]
pub(crate) struct Slots<E: IndexEntry> {
    map: Arc<ReadMap>,
    entries: usize,
    _entry: PhantomData<E>,
}

impl<E: IndexEntry> Slots<E> {
    /// Number of valid entries.
    pub(crate) fn len(&self) -> usize {
        self.entries
    }

    /// Entry `i`, `i < len()`.
    pub(crate) fn get(&self, i: usize) -> E {
        E::decode(&self.map.as_slice()[i * E::SIZE..(i + 1) * E::SIZE])
    }

    /// The last entry, if any.
    pub(crate) fn last(&self) -> Option<E> {
        self.entries.checked_sub(1).map(|i| self.get(i))
    }

    /// The last entry for which `below` holds; `below` must hold for a
    /// prefix of the entries (binary search).
    pub(crate) fn floor(&self, below: impl Fn(&E) -> bool) -> Option<E> {
        let (mut lo, mut hi) = (0, self.entries);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if below(&self.get(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1).map(|i| self.get(i))
    }
}

/// Finds the longest consistent prefix of entries in `bytes`.
///
/// The prefix stops at the first entry that does not follow its predecessor
/// or at the first all-zero slot after the first (the preallocated tail). An
/// all-zero first slot is an entry (relative offset 0 at position 0, say)
/// only when the file is exactly one slot long or the next slot is not all
/// zeros; otherwise the file is an empty, preallocated index. (Reading a
/// real all-zero first entry as "no entries" loses nothing: such an entry
/// points at the segment's start, where a lookup without entries starts
/// too.)
///
/// Reads the entries and the one slot after them (two for an empty file),
/// in place: neither the time nor the memory it takes depends on the size
/// of the file, and the pages of a preallocated tail are never touched.
fn scan<E: IndexEntry>(bytes: &[u8]) -> IndexLoad {
    let slot_count = bytes.len() / E::SIZE;
    scan_slots::<E>(slot_count, bytes.len() % E::SIZE, |i| {
        &bytes[i * E::SIZE..(i + 1) * E::SIZE]
    })
}

/// [`scan`] over `slot_count` slots that `slot` reads, followed by
/// `trailing_bytes` bytes of an incomplete slot.
fn scan_slots<'a, E: IndexEntry>(
    slot_count: usize,
    trailing_bytes: usize,
    slot: impl Fn(usize) -> &'a [u8],
) -> IndexLoad {
    let is_zero = |slot: &[u8]| slot.iter().all(|&b| b == 0);
    let first_is_entry = match slot_count {
        0 => false,
        1 => true,
        _ => !is_zero(slot(0)) || !is_zero(slot(1)),
    };
    let mut entries = 0;
    let mut damaged = false;
    if first_is_entry {
        entries = 1;
        let mut prev = E::decode(slot(0));
        while entries < slot_count {
            let bytes = slot(entries);
            if is_zero(bytes) {
                break;
            }
            let next = E::decode(bytes);
            if !prev.precedes(&next) {
                damaged = true;
                break;
            }
            prev = next;
            entries += 1;
        }
    }
    IndexLoad {
        entries,
        slots_after: slot_count - entries,
        damaged,
        trailing_bytes,
        oversized: false,
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::storage::StdStorage;
    #[cfg(target_os = "linux")]
    use crate::storage::mmap::tests::resident_kb;

    /// A test entry: a big-endian `u64` that must increase.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Seq(u64);

    impl IndexEntry for Seq {
        const SIZE: usize = 8;
        fn decode(slot: &[u8]) -> Self {
            Seq(u64::from_be_bytes(slot.try_into().expect("8 bytes")))
        }
        fn encode(&self, slot: &mut [u8]) {
            slot.copy_from_slice(&self.0.to_be_bytes());
        }
        fn precedes(&self, next: &Self) -> bool {
            next.0 > self.0
        }
        fn relative_offset(&self) -> u32 {
            u32::try_from(self.0).unwrap_or(u32::MAX)
        }
    }

    /// Kafka's default `segment.index.bytes`.
    const TEN_MIB: usize = 10 << 20;

    /// Scans a file of `len` bytes whose slots `content` gives, returning
    /// the load and the distinct slots read, in order.
    fn scan_counting(len: usize, content: impl Fn(usize) -> [u8; 8]) -> (IndexLoad, Vec<usize>) {
        let mut bytes = vec![0u8; len];
        for (i, slot) in bytes.chunks_exact_mut(8).enumerate() {
            slot.copy_from_slice(&content(i));
        }
        let read = RefCell::new(Vec::new());
        let load = scan_slots::<Seq>(len / 8, len % 8, |i| {
            let mut read = read.borrow_mut();
            if read.last() != Some(&i) {
                read.push(i);
            }
            &bytes[i * 8..(i + 1) * 8]
        });
        (load, read.into_inner())
    }

    fn entry(value: u64) -> [u8; 8] {
        value.to_be_bytes()
    }

    #[test]
    fn a_preallocated_tail_is_never_read() {
        // 100 entries, then zeros to 10 MiB: the entries and one zero slot
        // are read, nothing else, and the index is clean but untrimmed.
        let (load, read) =
            scan_counting(
                TEN_MIB,
                |i| {
                    if i < 100 { entry(i as u64 + 1) } else { [0; 8] }
                },
            );
        assert_eq!(read, (0..=100).collect::<Vec<_>>());
        assert_eq!(
            load,
            IndexLoad {
                entries: 100,
                slots_after: TEN_MIB / 8 - 100,
                damaged: false,
                trailing_bytes: 0,
                oversized: false,
            }
        );
        assert!(load.is_clean() && !load.is_trimmed());

        // Garbage deep in the tail is not read either: the load is the
        // same, still untrimmed, so never trusted for counters.
        let (garbage, read) = scan_counting(TEN_MIB, |i| match i {
            0..100 => entry(i as u64 + 1),
            1000..1010 => [0xab; 8],
            _ => [0; 8],
        });
        assert_eq!((garbage, read.len()), (load, 101));

        // An empty preallocated file: its first two slots.
        let (load, read) = scan_counting(TEN_MIB, |_| [0; 8]);
        assert_eq!(read, [0, 1]);
        assert_eq!((load.entries, load.slots_after), (0, TEN_MIB / 8));
        assert!(load.is_clean() && !load.is_trimmed());
    }

    #[test]
    fn a_trimmed_file_is_read_whole_and_damage_after_the_entries_is_seen() {
        let (load, read) = scan_counting(100 * 8, |i| entry(i as u64 + 1));
        assert_eq!(read.len(), 100);
        assert_eq!((load.entries, load.slots_after), (100, 0));
        assert!(load.is_trimmed());
        // An entry that does not follow ends the entries: damage, and
        // nothing after it is read.
        let (load, read) = scan_counting(TEN_MIB, |i| match i {
            0..50 => entry(i as u64 + 1),
            _ => entry(7),
        });
        assert_eq!(read.len(), 51);
        assert_eq!((load.entries, load.damaged), (50, true));
        assert!(!load.is_clean() && !load.is_trimmed());
        // A torn slot at the end of a trimmed-looking file.
        let (load, _) = scan_counting(3 * 8 + 5, |i| entry(i as u64 + 1));
        assert_eq!((load.entries, load.trailing_bytes), (3, 5));
        assert!(!load.is_clean() && !load.is_trimmed());
    }

    /// On a real file: inspecting and opening a 64 MiB preallocated index
    /// with a few entries touches a few pages of it (the inspected map's
    /// resident set stays small), and opening drops the tail without
    /// reading it, garbage included.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_large_preallocated_index_is_inspected_and_opened_without_touching_its_tail() -> Result<()>
    {
        const LEN: u64 = 64 << 20;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.index");
        let mut index = IndexFile::<Seq>::create(&StdStorage, &path, LEN)?;
        for i in 1..=10 {
            index.push(&Seq(i))?;
        }
        drop(index);
        // Garbage far into the zero tail.
        let file = StdStorage.open(&path, OpenMode::Existing)?;
        file.write_all_at(&[0xab; 64], LEN - 4096)?;
        drop(file);

        let (load, slots) = IndexFile::<Seq>::inspect(&StdStorage, &path, LEN)?.expect("exists");
        assert_eq!(
            (load.entries, load.slots_after),
            (10, LEN as usize / 8 - 10)
        );
        assert!(load.is_clean() && !load.is_trimmed());
        assert_eq!(slots.last(), Some(Seq(10)));
        let resident = resident_kb(slots.map.as_slice().as_ptr());
        assert!(
            resident < 1024,
            "{resident} kB of a {} kB index were read",
            LEN / 1024
        );
        drop(slots);

        let (index, load) = IndexFile::<Seq>::open(&StdStorage, &path, 4096, LEN)?;
        assert_eq!(load.entries, 10);
        assert_eq!(index.last(), Some(Seq(10)));
        drop(index);
        // Cut to its entries and re-extended: the garbage is gone.
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(bytes.len(), 4096);
        assert!(bytes[80..].iter().all(|&b| b == 0));
        Ok(())
    }

    #[test]
    fn an_emptied_index_drops_its_content_unread() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.index");
        let mut index = IndexFile::<Seq>::create(&StdStorage, &path, 80)?;
        index.push(&Seq(1))?;
        index.push(&Seq(2))?;
        index.trim()?;
        drop(index);
        let mut index = IndexFile::<Seq>::emptied(&StdStorage, &path, 800)?;
        assert_eq!((index.entries(), index.last()), (0, None));
        index.push(&Seq(5))?;
        drop(index);
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(bytes.len(), 800);
        assert_eq!(&bytes[..8], &5u64.to_be_bytes());
        assert!(bytes[8..].iter().all(|&b| b == 0));
        // A missing file is created.
        let missing = dir.path().join("1.index");
        let index = IndexFile::<Seq>::emptied(&StdStorage, &missing, 80)?;
        assert_eq!(index.entries(), 0);
        assert_eq!(std::fs::metadata(&missing).expect("created").len(), 80);
        Ok(())
    }
}
