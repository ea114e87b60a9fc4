//! L1: files. The file layer ([`Storage`]) with a real ([`StdStorage`]), a
//! copy-on-write one that never changes what it reads
//! ([`OverlayStorage`], for read-only opens) and, for tests, a
//! fault-injecting (`FaultyStorage`) implementation, a
//! wrapper whose switch fails every operation (`FailableStorage`: a broker's
//! failed disk), memory maps (the only module with `unsafe`), the offset and
//! time indexes, and the segment.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::Result;

mod failable;
#[cfg(any(test, feature = "internals"))]
mod fault;
mod file;
pub(crate) mod index;
mod index_file;
pub(crate) mod mmap;
mod overlay;
pub(crate) mod probe;
pub(crate) mod segment;
pub(crate) mod spare;
mod std_fs;
pub(crate) mod time_index;
pub(crate) mod txn_index_file;

#[cfg(test)]
pub(crate) use failable::WriteGate;
pub(crate) use failable::{DiskSwitch, FailableStorage};
#[cfg(any(test, feature = "internals"))]
pub use fault::{
    FaultKind, FaultOp, FaultyStorage, PowerLossReport, Tear, TornPages, UnsyncedSummary,
};
pub use file::{DirLock, OpenMode, Storage, StorageFile};
pub use mmap::{ReadMap, slice_bytes};
pub use overlay::OverlayStorage;
pub use std_fs::StdStorage;

/// Suffix of the temporary file [`write_atomic`] writes before renaming it
/// over the target. A leftover one (from a crash mid-replace) is garbage.
pub(crate) const TEMP_SUFFIX: &str = ".tmp";

/// Replaces the content of `path` with `contents` so that after a crash the
/// file holds either the old or the new content, never a mix: writes a
/// temporary file in the same directory, fsyncs it, renames it over `path`
/// and fsyncs the directory.
///
/// # Errors
/// [`crate::Error::Io`] from any step; `path` then still holds its old
/// content (or is still missing), and a `<name>.tmp` file may be left over.
pub(crate) fn write_atomic(storage: &dyn Storage, path: &Path, contents: &[u8]) -> Result<()> {
    let temp = temp_path(path);
    storage.remove_file(&temp)?;
    let file = storage.open(&temp, OpenMode::CreateNew)?;
    file.write_all_at(contents, 0)?;
    file.sync()?;
    drop(file);
    storage.rename(&temp, path)?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    storage.sync_dir(dir)
}

/// `<path>.tmp`.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(TEMP_SUFFIX);
    PathBuf::from(name)
}
