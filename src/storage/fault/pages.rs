//! The unsynced content of one file, page by page: what its last successful
//! sync made durable and which pages changed since.

use std::collections::BTreeMap;
use std::collections::btree_map;

use super::{PowerLossReport, Rng, TornPages, to_usize};
use crate::error::Result;

/// The page size of the model, in bytes.
pub(super) const PAGE: u64 = 4096;

/// The atomic unit of a torn page write under [`TornPages::Sectors`].
pub(super) const SECTOR: u64 = 512;

/// A page whose cached content may differ from its durable content.
#[derive(Debug, Clone)]
struct Page {
    /// The page's durable content: the bytes of the page that lay within the
    /// durable length when it was first dirtied (trimmed when a sync makes
    /// the file shorter). Bytes past it are durable zeros.
    durable: Vec<u8>,
    /// `true`: dirty, written back by the next good sync. `false`: dropped by
    /// a failed sync: the cache holds it clean, so no later sync writes it
    /// back until it is dirtied again.
    dirty: bool,
}

/// The most recent write since the file's last good sync (what
/// [`super::Tear`] tears).
#[derive(Debug, Clone)]
pub(super) struct LastWrite {
    /// Global order of the write.
    pub(super) seq: u64,
    pub(super) position: u64,
    pub(super) bytes: Vec<u8>,
}

/// What a power loss does with one dirty page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// The new content reached the disk.
    Kept,
    /// The durable content is still there.
    Lost,
    /// The page reads as zeros (a torn page).
    Zeroed,
    /// Dropped by a failed sync: always the durable content.
    Dropped,
}

/// The durable state of one file and its pages changed since.
///
/// Invariant: a page not in `pages` has the same bytes in the cache (the
/// real file) and on the simulated disk, within both lengths; in particular
/// every page overlapping the bytes between the durable and the current
/// length is in `pages`.
#[derive(Debug, Clone)]
pub(super) struct FileState {
    /// The length as of the last successful sync.
    durable_len: u64,
    /// The current length, as last seen.
    len: u64,
    pages: BTreeMap<u64, Page>,
    pub(super) last_write: Option<LastWrite>,
}

/// Pages `first..=last` overlapping bytes `start..end` (`start < end`).
fn pages_of(start: u64, end: u64) -> std::ops::RangeInclusive<u64> {
    start / PAGE..=(end - 1) / PAGE
}

impl FileState {
    /// A file first seen `len` bytes long, all of it durable.
    pub(super) fn new(len: u64) -> Self {
        FileState {
            durable_len: len,
            len,
            pages: BTreeMap::new(),
            last_write: None,
        }
    }

    /// Whether nothing changed since the last good sync.
    pub(super) fn is_clean(&self) -> bool {
        self.pages.is_empty() && self.len == self.durable_len
    }

    /// Dirty and dropped pages and whether the length changed, for
    /// [`super::UnsyncedSummary`].
    pub(super) fn counts(&self) -> (u64, u64, bool) {
        let dirty = self.pages.values().filter(|p| p.dirty).count() as u64;
        let dropped = self.pages.len() as u64 - dirty;
        (dirty, dropped, self.len != self.durable_len)
    }

    /// Marks dirty the pages overlapping `start..end` of the file, now `len`
    /// bytes long, first remembering (read with `read`) the durable content
    /// of those not yet tracked.
    fn dirty(
        &mut self,
        len: u64,
        start: u64,
        end: u64,
        read: &mut dyn FnMut(&mut [u8], u64) -> Result<()>,
    ) -> Result<()> {
        self.len = len;
        if start >= end {
            return Ok(());
        }
        for index in pages_of(start, end) {
            match self.pages.entry(index) {
                btree_map::Entry::Occupied(mut page) => page.get_mut().dirty = true,
                btree_map::Entry::Vacant(slot) => {
                    // Untracked: the cache holds the durable content.
                    let page_start = index * PAGE;
                    let n = (page_start + PAGE).min(len).saturating_sub(page_start);
                    let mut durable = vec![0; to_usize(n)];
                    if n > 0 {
                        read(&mut durable, page_start)?;
                    }
                    slot.insert(Page {
                        durable,
                        dirty: true,
                    });
                }
            }
        }
        Ok(())
    }

    /// Before writing `n` bytes at `position` of the file, now `len` bytes
    /// long: dirties the pages written and any gap a write past the end
    /// fills with zeros.
    pub(super) fn before_write(
        &mut self,
        len: u64,
        position: u64,
        n: u64,
        read: &mut dyn FnMut(&mut [u8], u64) -> Result<()>,
    ) -> Result<()> {
        let end = position + n;
        let start = if end > len {
            position.min(len)
        } else {
            position
        };
        self.dirty(len, start, end, read)
    }

    /// After the write `bytes` at `position`, the `seq`th change overall.
    pub(super) fn after_write(&mut self, seq: u64, position: u64, bytes: &[u8]) {
        self.len = self.len.max(position + bytes.len() as u64);
        self.last_write = Some(LastWrite {
            seq,
            position,
            bytes: bytes.to_vec(),
        });
    }

    /// Before setting the length of the file, now `len` bytes long, to
    /// `new_len`: dirties the pages between the two lengths.
    pub(super) fn before_set_len(
        &mut self,
        len: u64,
        new_len: u64,
        read: &mut dyn FnMut(&mut [u8], u64) -> Result<()>,
    ) -> Result<()> {
        self.dirty(len, len.min(new_len), len.max(new_len), read)
    }

    /// After setting the length to `len`.
    pub(super) fn after_set_len(&mut self, len: u64) {
        self.len = len;
    }

    /// A successful sync of the file, now `len` bytes long: the length and
    /// every dirty page become durable; dropped pages stay dropped.
    pub(super) fn synced(&mut self, len: u64) {
        self.durable_len = len;
        self.len = len;
        self.pages
            .retain(|&index, page| !page.dirty && index * PAGE < len);
        for (&index, page) in &mut self.pages {
            page.durable
                .truncate(to_usize((len - index * PAGE).min(PAGE)));
        }
        self.last_write = None;
    }

    /// A failed sync: every dirty page is dropped (the cache marks it clean;
    /// it never reaches the disk unless written again).
    pub(super) fn sync_failed(&mut self) {
        for page in self.pages.values_mut() {
            page.dirty = false;
        }
        self.last_write = None;
    }

    /// Overwrites `out[start..end]` with the page's durable content.
    fn put_durable(out: &mut [u8], page: &Page, start: usize, end: usize) {
        let n = page.durable.len().min(end - start);
        out[start..start + n].copy_from_slice(&page.durable[..n]);
        out[start + n..end].fill(0);
    }

    /// The file's durable content (the content as of its last good sync),
    /// given its current content.
    pub(super) fn durable_content(&self, current: &[u8]) -> Vec<u8> {
        let durable_len = to_usize(self.durable_len);
        let mut out = current.to_vec();
        out.resize(durable_len, 0);
        for (&index, page) in &self.pages {
            let start = to_usize(index * PAGE);
            if start < durable_len {
                let end = (start + to_usize(PAGE)).min(durable_len);
                Self::put_durable(&mut out, page, start, end);
            }
        }
        out
    }

    /// The file's content after a power loss, given its current content:
    /// each dirty page kept, lost or zeroed, the length decided, both drawn
    /// from `rng` (pages in order, then the length). Counts what it decided
    /// in `report`.
    pub(super) fn after_power_loss(
        &self,
        current: &[u8],
        rng: &mut Rng,
        torn: TornPages,
        report: &mut PowerLossReport,
    ) -> Vec<u8> {
        let fates: Vec<Fate> = self
            .pages
            .values()
            .map(|page| {
                if page.dirty {
                    [Fate::Kept, Fate::Lost, Fate::Zeroed][to_usize(rng.below(3))]
                } else {
                    Fate::Dropped
                }
            })
            .collect();
        let current_len = current.len() as u64;
        let durable_len = self.durable_len;
        let len = if current_len > durable_len {
            // Grown: the durable length, the new one or a page boundary
            // between (some extending writes reached the disk).
            let first = durable_len / PAGE + 1;
            let last = (current_len - 1) / PAGE;
            match rng.below(if first <= last { 3 } else { 2 }) {
                0 => durable_len,
                1 => current_len,
                _ => (first + rng.below(last - first + 1)) * PAGE,
            }
        } else if current_len < durable_len {
            // Shrunk: the truncation happened or not.
            [current_len, durable_len][to_usize(rng.below(2))]
        } else {
            current_len
        };
        if current_len != durable_len {
            if len == current_len {
                report.files_with_length_change_kept += 1;
            } else if len == durable_len {
                report.files_with_length_change_lost += 1;
            } else {
                report.files_with_length_change_partial += 1;
            }
        }
        let shrink_lost = len > current_len;

        let len = to_usize(len);
        let mut out = vec![0u8; len];
        let copied = len.min(current.len());
        out[..copied].copy_from_slice(&current[..copied]);
        for ((&index, page), mut fate) in self.pages.iter().zip(fates) {
            let start = index * PAGE;
            if start >= len as u64 {
                continue;
            }
            if shrink_lost && start >= current_len && fate != Fate::Dropped {
                // A cut page of a lost truncation: its blocks are still there.
                fate = Fate::Lost;
            }
            let (start, end) = (to_usize(start), (to_usize(start + PAGE)).min(len));
            match fate {
                // `out` holds the cached page (zeros past the current end).
                Fate::Kept => report.pages_kept += 1,
                Fate::Lost => {
                    report.pages_lost += 1;
                    Self::put_durable(&mut out, page, start, end);
                }
                Fate::Dropped => {
                    report.pages_dropped_by_failed_sync += 1;
                    Self::put_durable(&mut out, page, start, end);
                }
                Fate::Zeroed => {
                    report.pages_torn += 1;
                    match torn {
                        TornPages::Zeroed => out[start..end].fill(0),
                        TornPages::Sectors => {
                            // `out` holds the new content; each sector
                            // independently goes back to its durable one.
                            let mut durable = vec![0; end - start];
                            Self::put_durable(&mut durable, page, 0, end - start);
                            for sector in (start..end).step_by(to_usize(SECTOR)) {
                                let to = (sector + to_usize(SECTOR)).min(end);
                                if rng.below(2) == 1 {
                                    out[sector..to]
                                        .copy_from_slice(&durable[sector - start..to - start]);
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }
}
