//! Read-only memory maps of file prefixes: the only module of the crate
//! allowed `unsafe`.
//!
//! # The invariant callers uphold
//!
//! A [`ReadMap`] covers the first `len` bytes of a file, where `len` is at most
//! the file's length when the map is made. Touching a mapped page that lies
//! past the end of the file raises `SIGBUS`, and Rust's `&[u8]` promises that
//! the bytes do not change while they are borrowed. So, while any `ReadMap`
//! of a file is alive (including through a [`Bytes`] from [`slice_bytes`]):
//!
//! 1. **The file is never shrunk below the map's length.** Within logbus a
//!    file is only appended to, extended with `set_len`, or replaced by
//!    rename; a segment file that must be shortened (recovery of a torn tail,
//!    follower truncation) is shortened only when no map of it covers the part
//!    that is cut — the segment layer drops or replaces its maps first and a
//!    deleted segment is renamed `.deleted` and removed, never truncated. An
//!    index shrinks its own file only after dropping the one map it owns.
//! 2. **Bytes a reader may be reading are not rewritten.** Log appends write
//!    past every existing map; index slots are written (and zeroed on
//!    truncation) only through `&mut` of the index that owns the map, and
//!    only slots past the entries it publishes to readers.
//! 3. **No other process modifies the files.** The data directory is locked
//!    ([`Storage::lock_dir`](super::Storage::lock_dir)) against other logbus
//!    openers; files changed behind logbus's back are outside its contract.
//!
//! Renaming or unlinking a mapped file is harmless: the map keeps the inode
//! alive.
#![allow(
    unsafe_code,
    reason = "memory-mapping a file is unsafe; this is the crate's one module for it"
)]

use std::fmt;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions};

use crate::error::{Error, Result};

/// A read-only, shared memory map of the first [`len`](ReadMap::len) bytes of
/// a file. A map of length 0 makes no `mmap` call and reads as an empty slice.
///
/// Writes made to the file with positioned writes after the map was created
/// are visible through it (it is a shared mapping of the page cache).
pub struct ReadMap {
    map: Option<Mmap>,
}

impl ReadMap {
    /// A map of no bytes.
    #[must_use]
    pub(crate) fn empty() -> Self {
        ReadMap { map: None }
    }

    /// Maps the first `len` bytes of `file` (opened as `path`) read-only.
    ///
    /// # Errors
    /// [`Error::Io`] if `len` exceeds the file's length or `mmap` fails.
    pub(crate) fn new(file: &File, path: &Path, len: usize) -> Result<Self> {
        if len == 0 {
            return Ok(ReadMap::empty());
        }
        let file_len = file
            .metadata()
            .map_err(|e| Error::io("mmap", path, e))?
            .len();
        if len as u64 > file_len {
            return Err(Error::io(
                "mmap",
                path,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cannot map {len} bytes of a file of {file_len} bytes"),
                ),
            ));
        }
        // SAFETY: `mmap` itself is sound for any open file; what makes reading
        // the mapping sound is the invariant of this module's documentation:
        // (1) the file holds at least `len` bytes now (checked just above) and
        // is never shrunk below `len` while this map lives, so no access
        // touches a page past the end of the file (no SIGBUS); (2) bytes that
        // a reader can borrow are not rewritten while borrowed; (3) the
        // directory is locked against other openers, so no other process
        // changes the file.
        let map = unsafe { MmapOptions::new().len(len).map(file) }
            .map_err(|e| Error::io("mmap", path, e))?;
        Ok(ReadMap { map: Some(map) })
    }

    /// The mapped bytes.
    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Number of mapped bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.as_ref().map_or(0, |m| m.len())
    }

    /// Whether the map covers no bytes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for ReadMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadMap").field("len", &self.len()).finish()
    }
}

/// Owner of a [`Bytes`] made by [`slice_bytes`]: keeps the map alive and
/// exposes exactly its range.
struct MapSlice {
    map: Arc<ReadMap>,
    range: Range<usize>,
}

impl AsRef<[u8]> for MapSlice {
    fn as_ref(&self) -> &[u8] {
        &self.map.as_slice()[self.range.clone()]
    }
}

/// A zero-copy [`Bytes`] of `range` of the map that keeps the map alive for as
/// long as the `Bytes` (or any clone or slice of it) lives, even after every
/// other handle to the map and the file are dropped and the file is renamed
/// or unlinked.
///
/// # Panics
/// If `range` is not within `0..map.len()`.
#[must_use]
pub fn slice_bytes(map: &Arc<ReadMap>, range: Range<usize>) -> Bytes {
    assert!(
        range.start <= range.end && range.end <= map.len(),
        "range {range:?} outside a map of {} bytes",
        map.len()
    );
    Bytes::from_owner(MapSlice {
        map: Arc::clone(map),
        range,
    })
}
