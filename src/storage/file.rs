//! The file layer: a small trait over the handful of file-system calls the
//! storage engine makes, so that tests can swap in a fault-injecting
//! implementation ([`FaultyStorage`](super::FaultyStorage)).
//!
//! Every method returns [`crate::Error::Io`] with the operation and path on
//! failure.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Result;
use crate::storage::mmap::ReadMap;

/// How [`Storage::open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Open an existing file for reading and writing; fail if it is missing.
    Existing,
    /// Create a new file; fail if it exists.
    CreateNew,
    /// Open for reading and writing, creating it if missing.
    CreateOrOpen,
    /// Open an existing file for reading only; fail if it is missing. Every
    /// write, length change or sync through the handle fails (the file is
    /// opened read-only by the operating system).
    Read,
}

/// A directory tree of files: the real file system or a test double.
pub trait Storage: Send + Sync + Debug + 'static {
    /// Opens `path` as `mode` says.
    ///
    /// # Errors
    /// [`crate::Error::Io`].
    fn open(&self, path: &Path, mode: OpenMode) -> Result<Arc<dyn StorageFile>>;
    /// Creates `path` and its missing parents.
    ///
    /// # Errors
    /// [`crate::Error::Io`].
    fn create_dir_all(&self, path: &Path) -> Result<()>;
    /// Renames `from` to `to`, replacing `to` if it exists.
    ///
    /// # Errors
    /// [`crate::Error::Io`].
    fn rename(&self, from: &Path, to: &Path) -> Result<()>;
    /// Removes the file `path`; a missing file is not an error.
    ///
    /// # Errors
    /// [`crate::Error::Io`].
    fn remove_file(&self, path: &Path) -> Result<()>;
    /// Removes the directory `path` and everything below it; a missing
    /// directory is not an error.
    ///
    /// # Errors
    /// [`crate::Error::Io`].
    fn remove_dir_all(&self, path: &Path) -> Result<()>;
    /// The entries of directory `path` (full paths), in no particular order.
    ///
    /// # Errors
    /// [`crate::Error::Io`].
    fn list_dir(&self, path: &Path) -> Result<Vec<PathBuf>>;
    /// Whether `path` exists.
    fn exists(&self, path: &Path) -> bool;
    /// Makes the directory's entries (creates, renames, removals) durable.
    ///
    /// # Errors
    /// [`crate::Error::Io`].
    fn sync_dir(&self, path: &Path) -> Result<()>;
    /// Takes an exclusive advisory lock on `dir` (through a `.lock` file in
    /// it), held until the returned guard drops.
    ///
    /// # Errors
    /// [`crate::Error::DirectoryLocked`] when another opener holds it,
    /// [`crate::Error::Io`] otherwise.
    fn lock_dir(&self, dir: &Path) -> Result<DirLock>;
}

/// An open file. All I/O is positioned; there is no cursor.
#[expect(
    clippy::len_without_is_empty,
    reason = "len is a fallible system call; an is_empty would add nothing"
)]
pub trait StorageFile: Send + Sync + Debug {
    /// The path the file was opened with.
    fn path(&self) -> &Path;
    /// Writes all of `buf` at byte `position`.
    ///
    /// # Errors
    /// [`crate::Error::Io`]; a partial write may have happened.
    fn write_all_at(&self, buf: &[u8], position: u64) -> Result<()>;
    /// Writes all of `bufs`, one after the other, at byte `position`: the
    /// same bytes, and the same outcome, as [`StorageFile::write_all_at`]
    /// of their concatenation (a caller must treat a failure the same way:
    /// any prefix of the concatenation may have been written). The real
    /// file system's files write them with one vectored write (`pwritev`)
    /// instead of copying them into one buffer first. The default joins
    /// them into one buffer and calls [`StorageFile::write_all_at`], so
    /// that an implementation that models or injects faults into writes
    /// sees exactly one write of the concatenation.
    ///
    /// # Errors
    /// [`crate::Error::Io`]; a partial write may have happened.
    fn write_all_vectored_at(&self, bufs: &[&[u8]], position: u64) -> Result<()> {
        match bufs {
            [] => Ok(()),
            [one] => self.write_all_at(one, position),
            _ => self.write_all_at(&bufs.concat(), position),
        }
    }
    /// Reads exactly `buf.len()` bytes at `position`.
    ///
    /// # Errors
    /// [`crate::Error::Io`], including `UnexpectedEof`.
    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> Result<()>;
    /// Flushes the file's data (and the metadata needed to read it) to the
    /// device (`fdatasync`).
    ///
    /// # Errors
    /// [`crate::Error::Io`]. After a failed sync the caller must assume any
    /// unsynced data is lost.
    fn sync(&self) -> Result<()>;
    /// The file's current length.
    ///
    /// # Errors
    /// [`crate::Error::Io`].
    fn len(&self) -> Result<u64>;
    /// Sets the file's length, extending with zeros or truncating.
    ///
    /// # Errors
    /// [`crate::Error::Io`].
    fn set_len(&self, len: u64) -> Result<()>;
    /// Maps the first `len` bytes of the file read-only. `len` must not
    /// exceed the file's length.
    ///
    /// # Errors
    /// [`crate::Error::Io`].
    fn map(&self, len: usize) -> Result<Arc<ReadMap>>;
    /// A hint: reserves the file's disk blocks for the `len` bytes at
    /// `position` without changing its length or contents (Linux's
    /// `fallocate` with `FALLOC_FL_KEEP_SIZE`), so that writes there later
    /// skip the file system's block allocation. [`StorageFile::set_len`]
    /// to the current length gives back what was reserved past it.
    /// Returns whether anything was reserved; the default reserves nothing.
    ///
    /// # Errors
    /// [`crate::Error::Io`] (no space, for one); nothing was reserved then.
    fn reserve(&self, position: u64, len: u64) -> Result<bool> {
        let _ = (position, len);
        Ok(false)
    }
}

/// An exclusive lock on a directory, released on drop; or, from a storage
/// that never writes the directory (the read-only overlay), a guard that
/// locks nothing.
#[derive(Debug)]
pub struct DirLock {
    file: Option<std::fs::File>,
    path: PathBuf,
}

impl DirLock {
    pub(crate) fn new(file: std::fs::File, path: PathBuf) -> Self {
        DirLock {
            file: Some(file),
            path,
        }
    }

    /// A guard for `path` that holds no lock: other openers are not kept
    /// out, and nothing is created in the directory.
    pub(crate) fn unlocked(path: PathBuf) -> Self {
        DirLock { file: None, path }
    }

    /// Whether the guard holds an operating-system lock (false for a
    /// read-only overlay's guard).
    #[must_use]
    pub fn is_locked(&self) -> bool {
        self.file.is_some()
    }

    /// The locked directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}
