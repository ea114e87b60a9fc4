//! A spare segment, prepared off the append path.
//!
//! Creating a segment's three files costs hundreds of microseconds on
//! common file systems (inode allocation, journal), and a roll happens in
//! the middle of an append. So once the active segment is half full, the
//! log's worker thread prepares a spare: `segment.log.spare` (empty) and
//! `segment.index.spare` / `segment.timeindex.spare` (preallocated zeros). A roll renames the three
//! into place under the new base offset, which costs a few renames, and
//! opens them without reading them.
//!
//! A spare is never data: recovery removes leftover spare files, and any
//! failure to prepare or adopt one falls back to creating the segment
//! inline.

use std::path::Path;
use std::sync::Arc;

use crate::error::Result;
use crate::storage::segment::{
    INDEX_SUFFIX, LOG_SUFFIX, SegmentLimits, TIME_INDEX_SUFFIX, segment_file,
};
use crate::storage::{OpenMode, Storage};

/// `dir/segment.{suffix}.spare`. The names end in `.spare` so that Kafka,
/// which loads every `*.log` file in a partition directory as a segment,
/// ignores them.
pub(crate) fn spare_file(dir: &Path, suffix: &str) -> std::path::PathBuf {
    dir.join(format!("segment.{suffix}.spare"))
}

/// Whether `name` is a spare segment file.
pub(crate) fn is_spare_file(name: &str) -> bool {
    let middle = name
        .strip_prefix("segment.")
        .and_then(|s| s.strip_suffix(".spare"));
    [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX].contains(&middle.unwrap_or_default())
}

/// Creates the spare's three files, replacing any leftovers.
///
/// # Errors
/// [`crate::Error::Io`]; the caller just has no spare then.
pub(crate) fn prepare(storage: &Arc<dyn Storage>, dir: &Path, limits: SegmentLimits) -> Result<()> {
    for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
        storage.remove_file(&spare_file(dir, suffix))?;
    }
    storage.open(&spare_file(dir, LOG_SUFFIX), OpenMode::CreateNew)?;
    for (suffix, entry) in [(INDEX_SUFFIX, 8), (TIME_INDEX_SUFFIX, 12)] {
        let file = storage.open(&spare_file(dir, suffix), OpenMode::CreateNew)?;
        file.set_len(limits.index_bytes / entry * entry)?;
    }
    Ok(())
}

/// Renames the spare's files to those of the segment at `base_offset`.
///
/// # Errors
/// [`crate::Error::Io`]; files already renamed stay in place and the caller
/// removes them before creating the segment inline.
pub(crate) fn rename_into_place(storage: &dyn Storage, dir: &Path, base_offset: u64) -> Result<()> {
    for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
        storage.rename(
            &spare_file(dir, suffix),
            &segment_file(dir, base_offset, suffix),
        )?;
    }
    Ok(())
}
