//! Kafka's time index (`<base offset>.timeindex`).
//!
//! ```text
//! slot (12 bytes, big-endian):
//!   0..8   timestamp        i64  (largest timestamp seen so far, ms)
//!   8..12  relative offset  u32  (offset - base offset of the segment)
//! ```
//!
//! An entry `(t, o)` says: `t` is the largest timestamp among the segment's
//! records up to offset `o`, first reached there. Timestamps are strictly increasing, offsets non-decreasing. The file is
//! preallocated and trimmed like the offset index.

use std::path::Path;

use byteorder::{BigEndian, ByteOrder};

use crate::error::{Error, Result};
use crate::storage::file::Storage;
use crate::storage::index_file::{IndexEntry, IndexFile, SegmentIndex};

/// Time index slot size in bytes.
pub(crate) const TIME_ENTRY_SIZE: usize = 12;

/// Kafka's "no timestamp" (`RecordBatch.NO_TIMESTAMP`): the last timestamp of
/// an empty time index, so only timestamps `>= 0` are indexed.
const NO_TIMESTAMP: i64 = -1;

/// One time index slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    timestamp: i64,
    relative_offset: u32,
}

impl IndexEntry for TimeEntry {
    const SIZE: usize = TIME_ENTRY_SIZE;

    fn decode(slot: &[u8]) -> Self {
        TimeEntry {
            timestamp: BigEndian::read_i64(&slot[0..8]),
            relative_offset: BigEndian::read_u32(&slot[8..12]),
        }
    }

    fn encode(&self, slot: &mut [u8]) {
        BigEndian::write_i64(&mut slot[0..8], self.timestamp);
        BigEndian::write_u32(&mut slot[8..12], self.relative_offset);
    }

    fn precedes(&self, next: &Self) -> bool {
        next.timestamp > self.timestamp && next.relative_offset >= self.relative_offset
    }

    fn relative_offset(&self) -> u32 {
        self.relative_offset
    }
}

/// What [`TimeIndex::inspect`] found in a clean time index file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InspectedTimeIndex {
    /// The last entry as `(timestamp, offset)`, if any.
    pub(crate) last: Option<(i64, u64)>,
    /// Whether the file held exactly its entries
    /// ([`IndexLoad::is_trimmed`](crate::storage::index_file::IndexLoad::is_trimmed)): only then may the last entry be
    /// trusted as the segment's largest timestamp.
    pub(crate) trimmed: bool,
}

/// The time index of one segment: maps timestamps to offsets, sparsely.
#[derive(Debug)]
pub(crate) struct TimeIndex {
    slots: IndexFile<TimeEntry>,
    base_offset: u64,
}

impl SegmentIndex for TimeIndex {
    type Entry = TimeEntry;

    fn over(slots: IndexFile<TimeEntry>, base_offset: u64) -> Self {
        TimeIndex { slots, base_offset }
    }

    fn slots(&self) -> &IndexFile<TimeEntry> {
        &self.slots
    }

    fn slots_mut(&mut self) -> &mut IndexFile<TimeEntry> {
        &mut self.slots
    }

    fn base_offset(&self) -> u64 {
        self.base_offset
    }
}

impl TimeIndex {
    /// Reads an existing index file without changing it. `Ok(None)` when
    /// the file is missing, longer than `plausible` bytes (not read at all)
    /// or not clean (a damaged entry after the valid prefix, an incomplete
    /// slot); otherwise its last entry, if any, and whether the file held
    /// nothing else. The tail of an untrimmed file is not read.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub(crate) fn inspect(
        storage: &dyn Storage,
        path: &Path,
        base_offset: u64,
        plausible: u64,
    ) -> Result<Option<InspectedTimeIndex>> {
        let clean = IndexFile::<TimeEntry>::inspect_clean(storage, path, plausible)?;
        Ok(clean.map(|(slots, trimmed)| InspectedTimeIndex {
            last: slots
                .last()
                .map(|e| (e.timestamp, base_offset + u64::from(e.relative_offset))),
            trimmed,
        }))
    }

    fn absolute(&self, entry: TimeEntry) -> (i64, u64) {
        (
            entry.timestamp,
            self.base_offset + u64::from(entry.relative_offset),
        )
    }

    /// Records that `timestamp` is the largest timestamp so far and is first
    /// reached at `offset` — if it is larger than the last entry's timestamp
    /// (Kafka's rule; an empty index takes timestamps `>= 0`). Otherwise does
    /// nothing.
    ///
    /// # Errors
    /// [`Error::Internal`] if `offset` is below the last entry's offset (or
    /// outside `base..=base + u32::MAX`), or an entry is due and the index
    /// is full; the caller guarantees neither happens. [`Error::Io`] if the
    /// write fails; the entry is then not added.
    pub(crate) fn maybe_append(&mut self, timestamp: i64, offset: u64) -> Result<()> {
        let last = self.slots.last();
        let relative_offset = offset
            .checked_sub(self.base_offset)
            .and_then(|r| u32::try_from(r).ok())
            .filter(|&r| last.is_none_or(|l| r >= l.relative_offset));
        let Some(relative_offset) = relative_offset else {
            return Err(Error::Internal(format!(
                "time index entry ({timestamp}, {offset}) goes below the last entry {:?} \
                 in the index of base offset {}",
                last.map(|l| self.absolute(l)),
                self.base_offset
            )));
        };
        if timestamp <= last.map_or(NO_TIMESTAMP, |l| l.timestamp) {
            return Ok(());
        }
        self.slots.push(&TimeEntry {
            timestamp,
            relative_offset,
        })
    }

    /// The entry with the largest timestamp strictly below `timestamp`, as
    /// `(timestamp, offset)`: records before its offset all have timestamps
    /// below `timestamp`, so a search for the first record at or after
    /// `timestamp` may start there. `None` if there is none: start at the
    /// segment's base offset.
    pub(crate) fn lookup_lt(&self, timestamp: i64) -> Option<(i64, u64)> {
        let n = self.slots.partition_point(|e| e.timestamp < timestamp);
        n.checked_sub(1).map(|i| self.absolute(self.slots.entry(i)))
    }

    /// The last entry as `(timestamp, offset)`.
    #[cfg(test)]
    pub(crate) fn last_entry(&self) -> Option<(i64, u64)> {
        self.slots.last().map(|e| self.absolute(e))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::storage::StdStorage;

    const BASE: u64 = 500;

    fn entries_of(index: &TimeIndex) -> Vec<(i64, u64)> {
        (0..index.entries())
            .map(|i| index.absolute(index.slots.entry(i)))
            .collect()
    }

    #[test]
    fn maybe_append_follows_kafkas_rule() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.timeindex");
        // 3 slots.
        let mut index = TimeIndex::create(&StdStorage, &path, BASE, 3 * 12 + 11)?;
        assert_eq!(index.file().len()?, 36);
        index.maybe_append(-1, BASE)?; // no timestamp: not indexed
        assert_eq!(index.entries(), 0);
        index.maybe_append(100, BASE + 1)?;
        index.maybe_append(100, BASE + 2)?; // not larger: skipped
        index.maybe_append(90, BASE + 3)?; // smaller: skipped
        assert_eq!(index.entries(), 1);
        assert!(matches!(
            index.maybe_append(200, BASE),
            Err(Error::Internal(_))
        ));
        index.maybe_append(200, BASE + 1)?; // same offset is allowed
        index.maybe_append(300, BASE + 7)?;
        assert!(index.is_full());
        index.maybe_append(300, BASE + 8)?; // nothing due: fine when full
        assert!(matches!(
            index.maybe_append(400, BASE + 9),
            Err(Error::Internal(_))
        ));
        assert_eq!(
            entries_of(&index),
            vec![(100, BASE + 1), (200, BASE + 1), (300, BASE + 7)]
        );
        assert_eq!(index.last_entry(), Some((300, BASE + 7)));
        assert_eq!(index.lookup_lt(100), None);
        assert_eq!(index.lookup_lt(101), Some((100, BASE + 1)));
        assert_eq!(index.lookup_lt(300), Some((200, BASE + 1)));
        assert_eq!(index.lookup_lt(i64::MAX), Some((300, BASE + 7)));
        assert_eq!(index.base_offset(), BASE);
        assert_eq!(index.path(), path);
        Ok(())
    }

    #[test]
    fn reopen_trim_reset_and_damage() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.timeindex");
        let mut index = TimeIndex::create(&StdStorage, &path, BASE, 120)?;
        index.maybe_append(0, BASE)?;
        index.maybe_append(10, BASE + 4)?;
        index.maybe_append(20, BASE + 4)?;
        index.sync()?;
        drop(index);
        let inspected = TimeIndex::inspect(&StdStorage, &path, BASE, 120)?.expect("clean");
        assert_eq!(
            inspected,
            InspectedTimeIndex {
                last: Some((20, BASE + 4)),
                trimmed: false,
            }
        );
        let (mut index, load) = TimeIndex::open(&StdStorage, &path, BASE, 120, u64::MAX)?;
        assert!(load.is_clean() && !load.is_trimmed());
        let expected = vec![(0, BASE), (10, BASE + 4), (20, BASE + 4)];
        assert_eq!(entries_of(&index), expected);
        index.trim()?;
        assert_eq!(index.file().len()?, 36);
        assert!(index.is_full());
        drop(index);
        let inspected = TimeIndex::inspect(&StdStorage, &path, BASE, 120)?.expect("clean");
        assert!(inspected.trimmed);
        let (mut index, load) = TimeIndex::open(&StdStorage, &path, BASE, 120, u64::MAX)?;
        assert!(load.is_trimmed());
        assert_eq!(entries_of(&index), expected);
        assert_eq!(index.file().len()?, 120);
        index.truncate_to(BASE + 4)?;
        assert_eq!(entries_of(&index), vec![(0, BASE)]);
        index.maybe_append(5, BASE + 1)?;
        index.reset()?;
        assert_eq!(index.entries(), 0);
        index.maybe_append(7, BASE + 2)?;
        drop(index);

        // Damage: timestamps going backwards after the first entry.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[12..24].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 9]);
        std::fs::write(&path, &bytes).unwrap();
        let (index, load) = TimeIndex::open(&StdStorage, &path, BASE, 120, u64::MAX)?;
        assert_eq!((load.entries, load.damaged), (1, true));
        assert_eq!(entries_of(&index), vec![(7, BASE + 2)]);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn behaves_like_a_model(
            appends in prop::collection::vec((-5i64..200, 0u64..4), 0..60),
            targets in prop::collection::vec(-10i64..250, 1..20),
            cut in 490u64..700,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("0.timeindex");
            let mut index = TimeIndex::create(&StdStorage, &path, BASE, 100 * 12)?;
            let mut model: Vec<(i64, u64)> = Vec::new();
            let mut offset = BASE;
            for (timestamp, step) in appends {
                offset += step;
                index.maybe_append(timestamp, offset)?;
                if timestamp > model.last().map_or(-1, |e| e.0) {
                    model.push((timestamp, offset));
                }
            }
            prop_assert_eq!(entries_of(&index), model.clone());
            let lookup_model = |model: &[(i64, u64)], t: i64| {
                model.iter().rev().find(|e| e.0 < t).copied()
            };
            for &t in &targets {
                prop_assert_eq!(index.lookup_lt(t), lookup_model(&model, t));
            }
            index.truncate_to(cut)?;
            model.retain(|e| e.1 < cut);
            prop_assert_eq!(entries_of(&index), model.clone());
            drop(index);
            let (index, load) = TimeIndex::open(&StdStorage, &path, BASE, 100 * 12, u64::MAX)?;
            let model = if model == [(0, BASE)] { vec![] } else { model };
            prop_assert!(load.is_clean());
            prop_assert_eq!(entries_of(&index), model);
        }

        #[test]
        fn damaged_files_load_a_consistent_prefix(
            bytes in prop::collection::vec(
                prop_oneof![3 => Just(0u8), 1 => any::<u8>()], 0..300),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("0.timeindex");
            std::fs::write(&path, &bytes).unwrap();
            let (index, load) = TimeIndex::open(&StdStorage, &path, 0, 120, u64::MAX)?;
            let loaded = entries_of(&index);
            prop_assert_eq!(loaded.len(), load.entries);
            for (i, &(timestamp, offset)) in loaded.iter().enumerate() {
                let slot = &bytes[i * 12..i * 12 + 12];
                prop_assert_eq!(timestamp, BigEndian::read_i64(&slot[..8]));
                prop_assert_eq!(offset, u64::from(BigEndian::read_u32(&slot[8..])));
            }
            for pair in loaded.windows(2) {
                prop_assert!(pair[0].0 < pair[1].0 && pair[0].1 <= pair[1].1);
            }
            let on_disk = std::fs::read(&path).unwrap();
            prop_assert_eq!(on_disk.len(), 120.max(loaded.len() * 12));
            prop_assert!(on_disk[loaded.len() * 12..].iter().all(|&b| b == 0));
        }
    }
}
