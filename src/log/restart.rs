//! Restarting a log at a new offset: Kafka's `truncateFullyAndStartAt`,
//! for a follower whose leader deleted (retention, `delete_records`)
//! records the follower never fetched.
//!
//! Every segment goes and an empty one starts at the new offset, with an
//! empty leader epoch cache. That takes many directory operations (three
//! renames per old segment, three creates, a rewritten epoch file), and a
//! crash between any two of them must leave the old log or the new one,
//! never a mix (a suffix of the old segments with the new one after a gap,
//! say). The commit point is a marker file, `restart-offset` in the log
//! directory, written with [`write_atomic`] before anything else changes:
//! - a crash before the marker is durable leaves the old log untouched;
//! - once it is durable, every later open finishes the restart: segments
//!   below the marker's offset are removed (the marker is the positive
//!   evidence a deletion needs), the leader epoch file is dropped and
//!   rebuilt from what remains, an empty segment is created at the offset
//!   if none is there, and the log start is at least the offset;
//! - the live operation removes the marker last, after the new segment,
//!   the removals and the empty epoch file are durable.
//!
//! The marker is one line, `restart-offset v1 <offset> <crc32c>`, as
//! `fenced-offset` is: a damaged marker refuses the open (changing no
//! file) instead of being taken for a missing one.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::log::marker;
use crate::storage::Storage;

/// The marker file's name in the log directory.
pub(crate) const MARKER: &str = "restart-offset";

/// The marker's format tag; the offset and a CRC-32C of the line before it
/// follow.
const TAG: &str = "restart-offset v1";

fn marker_path(dir: &Path) -> PathBuf {
    dir.join(MARKER)
}

fn temp_path(dir: &Path) -> PathBuf {
    let mut temp = marker_path(dir).into_os_string();
    temp.push(crate::storage::TEMP_SUFFIX);
    PathBuf::from(temp)
}

/// Writes the marker for a restart at `offset`, durably (file and
/// directory entry): the commit point of the restart.
///
/// # Errors
/// [`Error::Io`]; the marker may then exist or not (the directory sync
/// failed), and either is a consistent state.
pub(crate) fn write_marker(storage: &dyn Storage, dir: &Path, offset: u64) -> Result<()> {
    marker::write(storage, &marker_path(dir), TAG, offset)
}

/// The offset of a restart an earlier process committed but may not have
/// finished. Reads only.
///
/// # Errors
/// [`Error::Corrupt`] for a damaged marker; [`Error::Io`] if it cannot be
/// read.
pub(crate) fn pending(storage: &dyn Storage, dir: &Path) -> Result<Option<u64>> {
    marker::read(
        storage,
        &marker_path(dir),
        TAG,
        "the restart-offset marker records that the log was \
                 emptied to start again at a new offset, so the open is \
                 refused; removing the file opens the log as it was before \
                 the restart, if its old segments are all still there",
    )
}

/// Whether a crash inside [`write_marker`] left its temporary file (the
/// restart did not commit; the file is removed at the next open).
pub(crate) fn has_temp(storage: &dyn Storage, dir: &Path) -> bool {
    storage.exists(&temp_path(dir))
}

/// Removes the marker and a temporary one a crash inside [`write_marker`]
/// left, then syncs the directory if anything went: the restart is over.
///
/// # Errors
/// [`Error::Io`]; the marker then stays, and the next open finishes the
/// restart again (which changes nothing more).
pub(crate) fn remove_marker(storage: &dyn Storage, dir: &Path) -> Result<()> {
    let mut removed = false;
    for path in [marker_path(dir), temp_path(dir)] {
        if storage.exists(&path) {
            storage.remove_file(&path)?;
            removed = true;
        }
    }
    if removed {
        storage.sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
