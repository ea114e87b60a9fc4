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
}

/// What [`IndexFile::open`] found in an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexLoad {
    /// Entries loaded: the longest consistent prefix.
    pub(crate) entries: usize,
    /// Non-zero slots after that prefix that were discarded (and zeroed):
    /// inconsistent or damaged entries.
    pub(crate) discarded_slots: usize,
    /// Bytes of an incomplete slot at the end of the file (cut).
    pub(crate) trailing_bytes: usize,
    /// The file was larger than its segment could need, so it was not read
    /// at all (and, when opened, emptied).
    pub(crate) oversized: bool,
}

impl IndexLoad {
    /// Whether the file held only consistent entries followed by nothing or
    /// zeros, as a clean close (trimmed or preallocated) leaves it. When not,
    /// the caller should rebuild the index from the log.
    pub(crate) fn is_clean(&self) -> bool {
        self.discarded_slots == 0 && self.trailing_bytes == 0 && !self.oversized
    }

    /// What an index file too large to be read loads: nothing.
    fn oversized() -> Self {
        IndexLoad {
            entries: 0,
            discarded_slots: 0,
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
        let map = file.map(max_slots * E::SIZE)?;
        Ok(IndexFile {
            file,
            map,
            entries: 0,
            pending: Vec::new(),
            capacity: max_slots,
            max_slots,
            _entry: PhantomData,
        })
    }

    /// Opens an existing index file, loads its longest consistent prefix of
    /// entries, zeroes whatever follows it and re-extends the file to
    /// `max_bytes` (or to the entries it holds, if more). A file longer than
    /// `plausible` bytes (see [`plausible_bytes`]) is not read: it is
    /// emptied, and the load says so.
    pub(crate) fn open(
        storage: &dyn Storage,
        path: &Path,
        max_bytes: u64,
        plausible: u64,
    ) -> Result<(Self, IndexLoad)> {
        let file = storage.open(path, OpenMode::Existing)?;
        let len = file.len()?;
        let load = match usize::try_from(len) {
            Ok(len) if len as u64 <= plausible => scan::<E>(file.map(len)?.as_slice()),
            _ => {
                file.set_len(0)?;
                IndexLoad::oversized()
            }
        };
        let max_slots = slots_for(max_bytes, E::SIZE);
        let capacity = max_slots.max(load.entries);
        // The scan's map is dropped: this index holds no map of the file
        // while it changes the file's length.
        if !load.is_clean() {
            file.set_len(byte_len(load.entries, E::SIZE))?;
        }
        let wanted = byte_len(capacity, E::SIZE);
        if file.len()? != wanted {
            file.set_len(wanted)?;
        }
        let map = file.map(capacity * E::SIZE)?;
        Ok((
            IndexFile {
                file,
                map,
                entries: load.entries,
                pending: Vec::new(),
                capacity,
                max_slots,
                _entry: PhantomData,
            },
            load,
        ))
    }

    /// Reads an existing index file without changing it: what
    /// [`open`](Self::open) would load, and the entries of that prefix, read
    /// through a map of the file (no copy, nothing allocated per slot). A
    /// file longer than `plausible` bytes is not read (an empty,
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
        let load = scan::<E>(map.as_slice());
        let slots = Slots {
            map,
            entries: load.entries,
            _entry: PhantomData,
        };
        Ok(Some((load, slots)))
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
            self.file.map(len)
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
/// Reads the slots in place, one at a time: nothing is allocated per slot,
/// so the memory it takes does not depend on the file's size.
fn scan<E: IndexEntry>(bytes: &[u8]) -> IndexLoad {
    let is_zero = |slot: &[u8]| slot.iter().all(|&b| b == 0);
    let slot_count = bytes.len() / E::SIZE;
    let slot = |i: usize| &bytes[i * E::SIZE..(i + 1) * E::SIZE];
    let trailing_bytes = bytes.len() % E::SIZE;
    let first_is_entry = match slot_count {
        0 => false,
        1 => true,
        _ => !is_zero(slot(0)) || !is_zero(slot(1)),
    };
    let mut entries = 0;
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
                break;
            }
            prev = next;
            entries += 1;
        }
    }
    let discarded_slots = bytes[entries * E::SIZE..slot_count * E::SIZE]
        .chunks_exact(E::SIZE)
        .filter(|s| !is_zero(s))
        .count();
    IndexLoad {
        entries,
        discarded_slots,
        trailing_bytes,
        oversized: false,
    }
}
