//! fsyncgate: after an fsync failed, no unsynced byte is ever declared
//! durable, not even by a reopen of the log.
//!
//! When an fsync fails, the kernel may drop the dirty pages it covered, or
//! mark them clean while they stay in the page cache: the process still
//! reads them, a later fsync "succeeds" without writing them, and a power
//! loss loses them. A log whose fsync failed is fenced at once
//! (`durability.rs`), so it never retries and acknowledges. This module
//! keeps a *reopen* of the same directory from trusting those pages too:
//! the reopened log is cut back to the last offset a successful fsync
//! covered (the durable offset when the fsync failed), however the bytes
//! after it look in the page cache.
//!
//! That offset is kept in two places:
//! - **Process memory**, keyed by the log directory's canonical path. This
//!   is logbus's one piece of process-wide state, and it has to be: the
//!   reopen may come from a new `Log`, a new `Storage` and a new `Cluster`
//!   with a fresh config, made after every object of the fenced log was
//!   dropped; only the process is common to them (and the page cache that
//!   cannot be trusted lives exactly as long as the kernel, which outlives
//!   the process; see the marker). Entries are per directory, so logs in
//!   different directories (tests running in parallel) never see each
//!   other's; a reopen that applied an entry removes it.
//! - **A marker file**, `fenced-offset` in the log directory, written with
//!   [`write_atomic`], so that a reopen by a later process (the machine did
//!   not lose power, the page cache still holds the bad pages) cuts too.
//!   One line, `fenced-offset v1 <offset> <crc32c>`: a damaged marker is
//!   told from a missing one and refuses the open. If writing it fails as
//!   well (the disk is failing), the memory still holds for this process.
//!   Recovery ignores files it does not know, as Kafka's loader does.
//!
//! A reopen reads both (the smaller offset wins), truncates the log to the
//! offset, fsyncs, then removes the marker and forgets the entry, and
//! reports the cut in [`RecoveryReport::fenced_truncation`](crate::RecoveryReport::fenced_truncation).
//! A failure on the way leaves both in place for the next reopen.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::error::Result;
use crate::log::{Log, marker};
use crate::storage::Storage;

/// The marker file's name in the log directory.
pub(crate) const MARKER: &str = "fenced-offset";

/// The marker's format tag; the offset and a CRC-32C of the line before it
/// follow.
const TAG: &str = "fenced-offset v1";

/// Durable offsets of fenced logs not yet reopened, by canonical directory.
static FENCED: Mutex<BTreeMap<PathBuf, u64>> = Mutex::new(BTreeMap::new());

/// A log reopened after an fsync failure fenced it, cut back to the last
/// offset a successful fsync covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FencedTruncation {
    /// Every offset below this was covered by a successful fsync before
    /// the failure. The reopened log ends here.
    pub synced_offset: u64,
    /// Where the log ended as recovery found it, before the cut: the
    /// offsets from `synced_offset` to here were read back from pages a
    /// failed fsync covered, and were dropped.
    pub found_end_offset: u64,
}

/// The key of `dir` in [`FENCED`]: its canonical path, so that two
/// spellings of one directory meet.
fn key(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir)
        .or_else(|_| std::path::absolute(dir))
        .unwrap_or_else(|_| dir.to_path_buf())
}

fn marker_path(dir: &Path) -> PathBuf {
    dir.join(MARKER)
}

/// Remembers in memory that only offsets below `synced` of the log in
/// `dir` are on disk. Cheap; called under the durability lock, right
/// after the failed fsync fenced the log.
pub(crate) fn remember(dir: &Path, synced: u64) {
    FENCED
        .lock()
        .entry(key(dir))
        .and_modify(|offset| *offset = (*offset).min(synced))
        .or_insert(synced);
}

/// Writes the marker for `synced`, best effort: the memory holds for this
/// process if it fails.
pub(crate) fn write_marker(storage: &dyn Storage, dir: &Path, synced: u64) {
    // Ignored on purpose: the disk already failed an fsync.
    let _ = marker::write(storage, &marker_path(dir), TAG, synced);
}

/// What a reopen of `dir` must cut to: the smaller of the remembered
/// offset and the marker's. Reads only, so it can run before recovery
/// changes any file.
///
/// # Errors
/// [`Error::Corrupt`] for a damaged marker; [`Error::Io`] if it cannot be
/// read.
pub(crate) fn pending(storage: &dyn Storage, dir: &Path) -> Result<Option<u64>> {
    let remembered = FENCED.lock().get(&key(dir)).copied();
    let marked = read_marker(storage, dir)?;
    Ok(match (remembered, marked) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

fn read_marker(storage: &dyn Storage, dir: &Path) -> Result<Option<u64>> {
    marker::read(
        storage,
        &marker_path(dir),
        TAG,
        "the fenced-offset marker records where the log's synced \
                 data ended when an fsync failed, so the open is refused; \
                 removing the file opens the log trusting whatever the page \
                 cache holds past that point",
    )
}

/// What the report says for a pending cut to `synced` of a log recovery
/// found ending at `found_end`: nothing unless something is cut (a power
/// loss may have taken the unsynced bytes already, or the directory holds
/// a new log).
pub(crate) fn planned(synced: Option<u64>, found_end: u64) -> Option<FencedTruncation> {
    synced
        .filter(|&synced| synced < found_end)
        .map(|synced_offset| FencedTruncation {
            synced_offset,
            found_end_offset: found_end,
        })
}

/// The last step of opening a log with a pending cut: truncates to
/// `synced`, fsyncs the log (the cut must be on disk before the marker
/// goes), removes the marker (and a leftover temporary one), fsyncs the
/// directory and forgets the remembered offset.
///
/// # Errors
/// The [`Error::Io`] of any step; the marker and the memory then stay for
/// the next reopen.
pub(crate) fn finish(log: &Log, synced: Option<u64>) -> Result<()> {
    let Some(synced) = synced else {
        return Ok(());
    };
    let inner = &log.inner;
    log.truncate_to(synced)?;
    inner.sync_now()?;
    let marker = marker_path(&inner.dir);
    let mut temp = marker.clone().into_os_string();
    temp.push(crate::storage::TEMP_SUFFIX);
    let mut removed = false;
    for path in [marker, PathBuf::from(temp)] {
        if inner.storage.exists(&path) {
            inner.storage.remove_file(&path)?;
            removed = true;
        }
    }
    if removed {
        inner.storage.sync_dir(&inner.dir)?;
    }
    FENCED.lock().remove(&key(&inner.dir));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StdStorage;

    #[test]
    fn markers_round_trip_and_damage_is_told_from_absence() {
        let dir = tempfile::tempdir().unwrap();
        let storage = StdStorage::new();
        assert_eq!(read_marker(&storage, dir.path()).unwrap(), None);
        for offset in [0, 1, 12_345, u64::MAX] {
            write_marker(&storage, dir.path(), offset);
            assert_eq!(read_marker(&storage, dir.path()).unwrap(), Some(offset));
        }
        // (Damage in general: `marker`'s tests. Here: the message says
        // which marker.)
        std::fs::write(marker_path(dir.path()), b"fenced-offset v1 7 00000000\n").unwrap();
        let err = read_marker(&storage, dir.path()).unwrap_err();
        assert!(err.to_string().contains("fenced-offset"), "{err}");
    }

    #[test]
    fn memory_is_keyed_by_the_canonical_directory_and_keeps_the_smallest() {
        let dir = tempfile::tempdir().unwrap();
        let storage = StdStorage::new();
        let sub = dir.path().join("log");
        std::fs::create_dir(&sub).unwrap();
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        assert_eq!(pending(&storage, &sub).unwrap(), None);
        remember(&sub, 9);
        remember(&dir.path().join("log/../log"), 7);
        remember(&sub, 8);
        assert_eq!(pending(&storage, &sub).unwrap(), Some(7));
        assert_eq!(pending(&storage, &other).unwrap(), None);
        // The marker and the memory disagree: the smaller wins.
        write_marker(&storage, &sub, 5);
        assert_eq!(pending(&storage, &sub).unwrap(), Some(5));
        write_marker(&storage, &sub, 11);
        assert_eq!(pending(&storage, &sub).unwrap(), Some(7));
        FENCED.lock().remove(&key(&sub));
        assert_eq!(pending(&storage, &sub).unwrap(), Some(11));
    }
}
