//! Kafka's sparse offset index (`<base offset>.index`).
//!
//! ```text
//! slot (8 bytes, big-endian):
//!   0..4  relative offset  u32  (offset - base offset of the segment)
//!   4..8  position         u32  (byte position of the batch in the .log)
//! ```
//!
//! Entries are strictly increasing in offset and non-decreasing in position.
//! The file is preallocated with zeros to `segment.index.bytes` (rounded down
//! to whole slots) and trimmed to its entries when the segment is sealed.

use std::path::Path;

use byteorder::{BigEndian, ByteOrder};

use crate::error::{Error, Result};
use crate::storage::file::Storage;
use crate::storage::index_file::{IndexEntry, IndexFile, SegmentIndex, Slots};

/// Offset index slot size in bytes.
pub(crate) const OFFSET_ENTRY_SIZE: usize = 8;

/// One offset index slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    relative_offset: u32,
    position: u32,
}

impl IndexEntry for OffsetEntry {
    const SIZE: usize = OFFSET_ENTRY_SIZE;

    fn decode(slot: &[u8]) -> Self {
        OffsetEntry {
            relative_offset: BigEndian::read_u32(&slot[0..4]),
            position: BigEndian::read_u32(&slot[4..8]),
        }
    }

    fn encode(&self, slot: &mut [u8]) {
        BigEndian::write_u32(&mut slot[0..4], self.relative_offset);
        BigEndian::write_u32(&mut slot[4..8], self.position);
    }

    fn precedes(&self, next: &Self) -> bool {
        next.relative_offset > self.relative_offset && next.position >= self.position
    }

    fn relative_offset(&self) -> u32 {
        self.relative_offset
    }
}

/// The entries of an offset index file that [`OffsetIndex::inspect`] read,
/// as `(offset, position)`, through a read-only map of the file.
#[derive(Debug)]
pub(crate) struct OffsetEntries {
    slots: Slots<OffsetEntry>,
    base_offset: u64,
    trimmed: bool,
}

impl OffsetEntries {
    /// Whether the file held exactly these entries
    /// ([`IndexLoad::is_trimmed`](crate::storage::index_file::IndexLoad::is_trimmed)): only then may they be trusted for the
    /// segment's counters.
    pub(crate) fn is_trimmed(&self) -> bool {
        self.trimmed
    }

    fn absolute(&self, e: OffsetEntry) -> (u64, u32) {
        (self.base_offset + u64::from(e.relative_offset), e.position)
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Entry `i` (`i < len()`), as `(offset, position)`.
    pub(crate) fn get(&self, i: usize) -> (u64, u32) {
        self.absolute(self.slots.get(i))
    }

    /// The last entry.
    pub(crate) fn last(&self) -> Option<(u64, u32)> {
        self.slots.last().map(|e| self.absolute(e))
    }

    /// The last entry whose offset is at or below `target`.
    pub(crate) fn floor(&self, target: u64) -> Option<(u64, u32)> {
        let base = self.base_offset;
        self.slots
            .floor(|e| base + u64::from(e.relative_offset) <= target)
            .map(|e| self.absolute(e))
    }
}

/// The offset index of one segment: maps offsets to byte positions in the
/// segment's log, sparsely.
#[derive(Debug)]
pub(crate) struct OffsetIndex {
    slots: IndexFile<OffsetEntry>,
    base_offset: u64,
}

impl SegmentIndex for OffsetIndex {
    type Entry = OffsetEntry;

    fn over(slots: IndexFile<OffsetEntry>, base_offset: u64) -> Self {
        OffsetIndex { slots, base_offset }
    }

    fn slots(&self) -> &IndexFile<OffsetEntry> {
        &self.slots
    }

    fn slots_mut(&mut self) -> &mut IndexFile<OffsetEntry> {
        &mut self.slots
    }

    fn base_offset(&self) -> u64 {
        self.base_offset
    }
}

impl OffsetIndex {
    /// Reads an index file without changing it: `None` if the file is
    /// missing, longer than `plausible` bytes, or not clean (a damaged entry
    /// after the valid prefix, an incomplete slot); otherwise its entries,
    /// read through a map of the file, and whether the file held nothing
    /// else ([`OffsetEntries::is_trimmed`]). The tail of an untrimmed file is
    /// not read.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub(crate) fn inspect(
        storage: &dyn Storage,
        path: &Path,
        base_offset: u64,
        plausible: u64,
    ) -> Result<Option<OffsetEntries>> {
        let clean = IndexFile::<OffsetEntry>::inspect_clean(storage, path, plausible)?;
        Ok(clean.map(|(slots, trimmed)| OffsetEntries {
            slots,
            base_offset,
            trimmed,
        }))
    }

    fn absolute(&self, entry: OffsetEntry) -> (u64, u32) {
        (
            self.base_offset + u64::from(entry.relative_offset),
            entry.position,
        )
    }

    /// Appends an entry: `offset` is stored at byte `position` of the log.
    ///
    /// # Errors
    /// [`Error::Internal`] if the index is full, `offset` is not above the
    /// last entry's offset (or below the base offset or more than `u32::MAX`
    /// above it), or `position` is below the last entry's; the caller
    /// guarantees none happens. [`Error::Io`] if the write fails; the entry
    /// is then not added.
    pub(crate) fn append(&mut self, offset: u64, position: u32) -> Result<()> {
        let relative_offset = offset
            .checked_sub(self.base_offset)
            .and_then(|r| u32::try_from(r).ok());
        let entry = relative_offset.map(|relative_offset| OffsetEntry {
            relative_offset,
            position,
        });
        match (entry, self.slots.last()) {
            (Some(entry), last) if last.is_none_or(|last| last.precedes(&entry)) => {
                self.slots.push(&entry)
            }
            (_, last) => Err(Error::Internal(format!(
                "offset index entry ({offset}, {position}) does not follow {:?} \
                 in the index of base offset {}",
                last.map(|l| self.absolute(l)),
                self.base_offset
            ))),
        }
    }

    /// The entry with the largest offset at or below `target`, as
    /// `(offset, position)`; `None` if every entry is above `target` (or
    /// there are none): the caller then starts at position 0.
    pub(crate) fn lookup(&self, target: u64) -> Option<(u64, u32)> {
        let relative = target.checked_sub(self.base_offset)?;
        let relative = u32::try_from(relative).unwrap_or(u32::MAX);
        let n = self
            .slots
            .partition_point(|e| e.relative_offset <= relative);
        n.checked_sub(1).map(|i| self.absolute(self.slots.entry(i)))
    }

    /// The last entry as `(offset, position)`.
    pub(crate) fn last_entry(&self) -> Option<(u64, u32)> {
        self.slots.last().map(|e| self.absolute(e))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::storage::StdStorage;
    use crate::storage::index_file::IndexLoad;

    const BASE: u64 = 1_000;

    fn entries_of(index: &OffsetIndex) -> Vec<(u64, u32)> {
        (0..index.entries())
            .map(|i| index.absolute(index.slots.entry(i)))
            .collect()
    }

    /// `(offset, position)` pairs an index accepts, in order.
    fn valid_entries(max: usize) -> impl Strategy<Value = Vec<(u64, u32)>> {
        prop::collection::vec((1u64..50, 0u32..100), 0..max).prop_map(|steps| {
            let (mut offset, mut position) = (BASE, 0u32);
            steps
                .into_iter()
                .enumerate()
                .map(|(i, (d_offset, d_position))| {
                    if i > 0 {
                        offset += d_offset;
                    }
                    position += d_position;
                    (offset, position)
                })
                .collect()
        })
    }

    #[test]
    fn append_lookup_and_full() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        // 3 slots; the 5 extra bytes are rounded away.
        let mut index = OffsetIndex::create(&StdStorage, &path, BASE, 3 * 8 + 5)?;
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 24);
        assert_eq!(index.lookup(BASE + 10), None);
        index.append(BASE + 2, 100)?;
        index.append(BASE + 5, 100)?;
        assert!(matches!(
            index.append(BASE + 5, 200),
            Err(Error::Internal(_))
        ));
        assert!(matches!(
            index.append(BASE + 7, 99),
            Err(Error::Internal(_))
        ));
        assert!(matches!(
            index.append(BASE - 1, 200),
            Err(Error::Internal(_))
        ));
        assert!(matches!(
            index.append(BASE + (1 << 32), 200),
            Err(Error::Internal(_))
        ));
        assert!(!index.is_full());
        index.append(BASE + 9, 300)?;
        assert!(index.is_full());
        assert!(matches!(
            index.append(BASE + 10, 400),
            Err(Error::Internal(_))
        ));
        assert_eq!(index.entries(), 3);
        assert_eq!(index.last_entry(), Some((BASE + 9, 300)));
        assert_eq!(index.lookup(BASE + 1), None);
        assert_eq!(index.lookup(BASE + 2), Some((BASE + 2, 100)));
        assert_eq!(index.lookup(BASE + 8), Some((BASE + 5, 100)));
        assert_eq!(index.lookup(u64::MAX), Some((BASE + 9, 300)));
        assert_eq!(index.lookup(0), None);
        assert_eq!(index.base_offset(), BASE);
        assert_eq!(index.path(), path);
        Ok(())
    }

    #[test]
    fn reopen_after_trim_and_after_untrimmed_close() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut index = OffsetIndex::create(&StdStorage, &path, BASE, 80)?;
        for (i, offset) in [BASE, BASE + 3, BASE + 4].into_iter().enumerate() {
            index.append(offset, 10 * i as u32)?;
        }
        index.sync()?;
        let expected = entries_of(&index);
        drop(index);

        // Untrimmed: the zero tail is not read as entries; the first entry
        // (relative offset 0, position 0) is kept.
        let (mut index, load) = OffsetIndex::open(&StdStorage, &path, BASE, 80, u64::MAX)?;
        assert!(load.is_clean() && !load.is_trimmed());
        assert_eq!((load.entries, load.slots_after), (3, 7));
        assert_eq!(entries_of(&index), expected);
        index.trim()?;
        assert!(index.is_full());
        assert_eq!(index.file().len()?, 24);
        assert_eq!(entries_of(&index), expected);
        drop(index);

        // Trimmed: trusted by inspection, re-extended for appends.
        let inspected = OffsetIndex::inspect(&StdStorage, &path, BASE, 80)?.expect("clean");
        assert!(inspected.is_trimmed());
        assert_eq!(inspected.last(), expected.last().copied());
        let (mut index, load) = OffsetIndex::open(&StdStorage, &path, BASE, 80, u64::MAX)?;
        assert!(load.is_trimmed());
        assert_eq!(entries_of(&index), expected);
        assert_eq!(index.file().len()?, 80);
        index.append(BASE + 9, 50)?;
        assert_eq!(index.lookup(BASE + 100), Some((BASE + 9, 50)));

        index.reset()?;
        assert_eq!(index.entries(), 0);
        assert_eq!(index.lookup(BASE + 100), None);
        drop(index);
        let (index, load) = OffsetIndex::open(&StdStorage, &path, BASE, 80, u64::MAX)?;
        assert_eq!((index.entries(), load.is_clean()), (0, true));
        Ok(())
    }

    #[test]
    fn a_lone_zero_entry_reads_as_an_empty_index_unless_trimmed() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut index = OffsetIndex::create(&StdStorage, &path, BASE, 80)?;
        index.append(BASE, 0)?;
        drop(index);
        let (mut index, load) = OffsetIndex::open(&StdStorage, &path, BASE, 80, u64::MAX)?;
        assert_eq!((load.entries, load.is_clean()), (0, true));
        index.append(BASE, 0)?;
        index.trim()?;
        drop(index);
        let (index, _) = OffsetIndex::open(&StdStorage, &path, BASE, 80, u64::MAX)?;
        assert_eq!(entries_of(&index), vec![(BASE, 0)]);
        Ok(())
    }

    #[test]
    fn damaged_tail_is_cut_and_zeroed() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut index = OffsetIndex::create(&StdStorage, &path, BASE, 80)?;
        index.append(BASE + 1, 10)?;
        index.append(BASE + 2, 20)?;
        drop(index);
        // A slot going backwards, garbage after a zero slot, and a torn
        // half-slot at the end. Only the slot after the entries is read:
        // the rest is dropped unread.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[16..24].copy_from_slice(&[0, 0, 0, 1, 0, 0, 0, 30]);
        bytes[40..48].copy_from_slice(&[0, 0, 0, 9, 0, 0, 0, 90]);
        bytes.truncate(76);
        std::fs::write(&path, &bytes).unwrap();
        let (mut index, load) = OffsetIndex::open(&StdStorage, &path, BASE, 80, u64::MAX)?;
        assert_eq!(
            load,
            IndexLoad {
                entries: 2,
                slots_after: 7,
                damaged: true,
                trailing_bytes: 4,
                oversized: false,
            }
        );
        assert!(!load.is_clean() && !load.is_trimmed());
        assert_eq!(entries_of(&index), vec![(BASE + 1, 10), (BASE + 2, 20)]);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 80);
        assert!(bytes[16..].iter().all(|&b| b == 0));
        index.append(BASE + 3, 30)?;
        drop(index);
        let (index, load) = OffsetIndex::open(&StdStorage, &path, BASE, 80, u64::MAX)?;
        assert!(load.is_clean());
        assert_eq!(index.entries(), 3);
        Ok(())
    }

    #[test]
    fn an_index_larger_than_plausible_is_not_read_but_emptied() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut index = OffsetIndex::create(&StdStorage, &path, BASE, 80)?;
        index.append(BASE + 1, 10)?;
        index.trim()?;
        drop(index);
        // A sparse file of 6 GiB behind the one entry.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(6 << 30)
            .unwrap();
        let plausible = 4096;
        assert!(OffsetIndex::inspect(&StdStorage, &path, BASE, plausible)?.is_none());
        let (index, load) = OffsetIndex::open(&StdStorage, &path, BASE, 80, plausible)?;
        assert!(load.oversized && !load.is_clean());
        assert_eq!(index.entries(), 0);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 80);
        // Within the limit it reads as before.
        let entries = OffsetIndex::inspect(&StdStorage, &path, BASE, 80)?.expect("clean");
        assert_eq!(entries.len(), 0);
        assert!(!entries.is_trimmed(), "preallocated again");
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn behaves_like_a_sorted_list(
            entries in valid_entries(40),
            targets in prop::collection::vec(0u64..3_000, 1..20),
            cut in 900u64..3_000,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("0.index");
            let mut index = OffsetIndex::create(&StdStorage, &path, BASE, 64 * 8)?;
            for &(offset, position) in &entries {
                index.append(offset, position)?;
            }
            let lookup_model = |model: &[(u64, u32)], target: u64| {
                model.iter().rev().find(|(o, _)| *o <= target).copied()
            };
            for &target in &targets {
                prop_assert_eq!(index.lookup(target), lookup_model(&entries, target));
            }
            index.truncate_to(cut)?;
            let model: Vec<_> = entries.iter().copied().filter(|(o, _)| *o < cut).collect();
            prop_assert_eq!(entries_of(&index), model.clone());
            for &target in &targets {
                prop_assert_eq!(index.lookup(target), lookup_model(&model, target));
            }
            drop(index);
            let (index, load) = OffsetIndex::open(&StdStorage, &path, BASE, 64 * 8, u64::MAX)?;
            // A lone (base, 0) entry reads as an empty index.
            let model = if model == [(BASE, 0)] { vec![] } else { model };
            prop_assert!(load.is_clean());
            prop_assert_eq!(entries_of(&index), model);
        }

        #[test]
        fn damaged_files_load_a_consistent_prefix(
            bytes in prop::collection::vec(
                prop_oneof![3 => Just(0u8), 1 => any::<u8>()], 0..200),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("0.index");
            std::fs::write(&path, &bytes).unwrap();
            let (index, load) = OffsetIndex::open(&StdStorage, &path, 0, 64, u64::MAX)?;
            let loaded = entries_of(&index);
            prop_assert_eq!(loaded.len(), load.entries);
            for (i, &(offset, position)) in loaded.iter().enumerate() {
                let slot = &bytes[i * 8..i * 8 + 8];
                prop_assert_eq!(offset, u64::from(BigEndian::read_u32(&slot[..4])));
                prop_assert_eq!(position, BigEndian::read_u32(&slot[4..]));
            }
            for pair in loaded.windows(2) {
                prop_assert!(pair[0].0 < pair[1].0 && pair[0].1 <= pair[1].1);
            }
            let on_disk = std::fs::read(&path).unwrap();
            prop_assert_eq!(on_disk.len(), 64.max(loaded.len() * 8));
            prop_assert!(on_disk[loaded.len() * 8..].iter().all(|&b| b == 0));
        }
    }
}
