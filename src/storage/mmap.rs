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
//!    The one exception is a read-only open
//!    ([`OverlayStorage`](super::OverlayStorage)), which takes no lock: it
//!    maps a real file only for a segment (`.log`) whose mapped bytes it has
//!    not changed. A writer in another process appends after those bytes
//!    and never rewrites them; it cuts them only when it truncates the
//!    segment (a follower's divergence, recovery of damage), the residual
//!    risk the overlay documents. Every other file the overlay serves from a
//!    copy in anonymous memory ([`ReadMap::filled`]), which no process can
//!    change.
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
use std::sync::{Arc, Weak};

use bytes::Bytes;
use memmap2::{Advice, Mmap, MmapOptions, UncheckedAdvice};

use crate::error::{Error, Result};

/// A read-only, shared memory map of the first [`len`](ReadMap::len) bytes of
/// a file. A map of length 0 makes no `mmap` call and reads as an empty slice.
///
/// Writes made to the file with positioned writes after the map was created
/// are visible through it (it is a shared mapping of the page cache).
pub struct ReadMap {
    map: Option<Mmap>,
    /// Whether `map` is anonymous memory filled by [`ReadMap::filled`]
    /// rather than a shared map of a file: its pages are never released
    /// (`MADV_DONTNEED` would zero them).
    anonymous: bool,
}

impl ReadMap {
    /// A map of no bytes.
    #[must_use]
    pub(crate) fn empty() -> Self {
        ReadMap {
            map: None,
            anonymous: false,
        }
    }

    /// A map of `len` bytes of anonymous memory, zeroed, then given its
    /// content by `fill` and made read-only: for content that is not (or
    /// must not be read from) a file's pages, such as a read-only
    /// overlay's in-memory copy of a file. Pages `fill` leaves untouched
    /// cost no memory (the kernel's shared zero page backs them), so a
    /// large, mostly zero file (a preallocated index) is cheap.
    ///
    /// # Errors
    /// [`Error::Io`] naming `path` if the memory cannot be mapped; `fill`'s
    /// error.
    pub(crate) fn filled(
        path: &Path,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<Self> {
        if len == 0 {
            return Ok(ReadMap::empty());
        }
        let mut map = MmapOptions::new()
            .len(len)
            .map_anon()
            .map_err(|e| Error::io("mmap anonymous", path, e))?;
        fill(&mut map)?;
        let map = map
            .make_read_only()
            .map_err(|e| Error::io("mprotect", path, e))?;
        Ok(ReadMap {
            map: Some(map),
            anonymous: true,
        })
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
        Ok(ReadMap {
            map: Some(map),
            anonymous: false,
        })
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

    /// Asks the kernel not to read ahead around the pages this map faults in
    /// (`MADV_RANDOM`). Meant for index files: a lookup touches a few slots,
    /// and reading ahead into a preallocated index's tail (a hole in the
    /// file) costs the kernel zero-filling megabytes of pages nobody reads.
    /// Failure is ignored: the kernel then reads ahead as usual.
    pub(crate) fn advise_random(&self) {
        if let Some(map) = &self.map {
            let _ = map.advise(Advice::Random);
        }
    }

    /// Drops this process's page-table entries for the whole pages within
    /// `range`, so the pages stop counting in its resident set; the bytes
    /// stay readable (a later access maps the page again from the page
    /// cache, re-reading the file if the kernel evicted it).
    ///
    /// Meant for bytes a reader has moved past: it costs the next toucher a
    /// page fault, nothing else. Only pages wholly inside `range` are
    /// released; a range of less than a page releases nothing. Failure is
    /// ignored: the pages merely stay resident. A [`filled`](Self::filled)
    /// map releases nothing (its pages are its only copy).
    ///
    /// # Panics
    /// If `range` is not within `0..self.len()`.
    pub(crate) fn release(&self, range: Range<usize>) {
        assert!(
            range.start <= range.end && range.end <= self.len(),
            "range {range:?} outside a map of {} bytes",
            self.len()
        );
        let Some(map) = self.map.as_ref().filter(|_| !self.anonymous) else {
            return;
        };
        // Offsets align as addresses do (`mmap` returns page-aligned
        // addresses). Where pages are larger than 4 KiB, `madvise`'s own
        // rounding may release a little beyond `range`: harmless, as below.
        let page = RELEASE_ALIGN;
        let start = range.start.next_multiple_of(page);
        let end = range.end / page * page;
        if start >= end {
            return;
        }
        // SAFETY: `MADV_DONTNEED` is unsafe in general because on a private
        // or anonymous mapping it discards the contents (later reads see
        // zeros or the file's original bytes). This map is a read-only
        // `MAP_SHARED` mapping of a file (`MmapOptions::map`), never written
        // through, so dropping its page-table entries discards nothing: a
        // later access faults the page in again from the page cache, i.e.
        // the file's current content. That content is the content borrowers
        // saw, by this module's invariant: (1) the file is never shrunk below
        // the map's length while the map lives, so the re-fault finds the
        // page inside the file (no SIGBUS); (2) bytes a reader may be
        // reading are never rewritten; (3) no other process changes the
        // file. So every outstanding `&[u8]` and `Bytes` of the range keeps
        // reading the same bytes. This holds for any whole pages of the
        // mapping, so the kernel rounding `start..end` (which lies within the
        // mapping, checked above) out to its page size keeps it.
        let _ =
            unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, start, end - start) };
    }
}

impl fmt::Debug for ReadMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadMap").field("len", &self.len()).finish()
    }
}

/// The alignment [`ReadMap::release`] rounds ranges inward to: the usual
/// page size.
const RELEASE_ALIGN: usize = 4096;

/// How many consumed bytes a [`Releaser`] gathers before releasing them.
pub(crate) const RELEASE_CHUNK: usize = 8 << 20;

/// Where the bytes of a read lie: a range of a map, held weakly (it keeps no
/// map alive, so it does not hold back a segment's truncation or deletion).
#[derive(Debug, Clone)]
pub(crate) struct MapRange {
    map: Weak<ReadMap>,
    range: Range<usize>,
}

impl MapRange {
    /// `range` of `map`.
    ///
    /// # Panics
    /// If `range` is not within `0..map.len()`.
    pub(crate) fn new(map: &Arc<ReadMap>, range: Range<usize>) -> Self {
        assert!(
            range.start <= range.end && range.end <= map.len(),
            "range {range:?} outside a map of {} bytes",
            map.len()
        );
        MapRange {
            map: Arc::downgrade(map),
            range,
        }
    }
}

/// Releases ([`ReadMap::release`]) the bytes a reader has moved past, so that
/// reading a log from end to end keeps a bounded number of its pages
/// resident: a reader reports each read it is done with
/// ([`done_with`](Releaser::done_with)), and once [`RELEASE_CHUNK`]
/// contiguous bytes of a map are done they are released in one call, up to
/// a [`FOLIO_SPAN`] boundary. The rest is released when the reader moves to
/// another map or place, or when the `Releaser` is dropped.
///
/// Why the boundary: the page cache may hold a file in large folios (up to
/// 2 MiB, aligned to their size in the file), and a page fault may map a
/// whole folio. Releasing part of the folio the reader is still reading
/// would be undone by its next fault, leaving that part resident for good;
/// a release that ends on a `FOLIO_SPAN` boundary splits no folio.
///
/// Releasing never invalidates bytes: whoever still holds a [`Bytes`] of a
/// released range reads the same bytes (the pages fault in again).
#[derive(Debug, Default)]
pub(crate) struct Releaser {
    map: Weak<ReadMap>,
    /// Bytes of `map` below this are released (up to the page holding it).
    released: usize,
    /// The reader is done with `released..done`.
    done: usize,
}

/// The largest folio the page cache is expected to map at once (a PMD:
/// 2 MiB on x86-64); see [`Releaser`].
pub(crate) const FOLIO_SPAN: usize = 2 << 20;

impl Releaser {
    /// Notes that the reader is done with the bytes of `read`.
    pub(crate) fn done_with(&mut self, read: &MapRange) {
        let contiguous = Weak::ptr_eq(&self.map, &read.map)
            && read.range.start >= self.released
            && read.range.start <= self.done;
        if !contiguous {
            self.flush();
            self.map = read.map.clone();
            self.released = read.range.start;
            self.done = read.range.start;
        }
        self.done = self.done.max(read.range.end);
        if self.done - self.released >= RELEASE_CHUNK + FOLIO_SPAN {
            self.release_to(self.done / FOLIO_SPAN * FOLIO_SPAN);
        }
    }

    /// Releases everything the reader is done with.
    pub(crate) fn flush(&mut self) {
        self.release_to(self.done);
    }

    fn release_to(&mut self, end: usize) {
        if end > self.released
            && let Some(map) = self.map.upgrade()
        {
            map.release(self.released..end);
        }
        // A page holding `end` was not released: it is once the reader is
        // done with the rest of it.
        self.released = self.released.max(end / RELEASE_ALIGN * RELEASE_ALIGN);
    }
}

impl Drop for Releaser {
    fn drop(&mut self) {
        self.flush();
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

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use super::*;

    const PAGES: usize = 64;

    /// A file of `PAGES` pages whose byte `i` is `i * 7 % 251`, mapped whole.
    fn mapped() -> (tempfile::TempDir, Arc<ReadMap>, Vec<u8>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("map.log");
        let content: Vec<u8> = (0..PAGES * RELEASE_ALIGN)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut file = File::create(&path).expect("create");
        file.write_all(&content).expect("write");
        drop(file);
        let file = File::open(&path).expect("open");
        let map = Arc::new(ReadMap::new(&file, &path, content.len()).expect("map"));
        (dir, map, content)
    }

    /// Resident kB of the mapping that holds `addr`, from `/proc/self/smaps`
    /// (the index file's tests use it too).
    #[cfg(target_os = "linux")]
    pub(crate) fn resident_kb(addr: *const u8) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let addr = addr as usize;
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((lo, hi)) = range.split_once('-')
                && let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = (lo..hi).contains(&addr);
            } else if inside && let Some(kb) = line.strip_prefix("Rss:") {
                return kb.trim().trim_end_matches("kB").trim().parse().expect("kB");
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    #[test]
    fn a_filled_map_reads_what_was_filled_and_survives_a_release() {
        let path = Path::new("in-memory");
        let map = Arc::new(
            ReadMap::filled(path, 3 * RELEASE_ALIGN, |bytes| {
                bytes[..5].copy_from_slice(b"hello");
                bytes[2 * RELEASE_ALIGN] = 7;
                Ok(())
            })
            .expect("filled"),
        );
        assert_eq!(map.len(), 3 * RELEASE_ALIGN);
        assert_eq!(&map.as_slice()[..6], b"hello\0");
        map.release(0..map.len());
        // Nothing was released: the bytes are still there, not zeros.
        assert_eq!(&map.as_slice()[..5], b"hello");
        assert_eq!(map.as_slice()[2 * RELEASE_ALIGN], 7);
        assert_eq!(&slice_bytes(&map, 1..4)[..], b"ell");
        assert!(
            ReadMap::filled(path, 0, |_| unreachable!())
                .expect("empty")
                .is_empty()
        );
        let err = ReadMap::filled(path, 8, |_| Err(Error::Internal("fill".into()))).unwrap_err();
        assert!(matches!(err, Error::Internal(_)), "{err}");
    }

    #[test]
    fn bytes_taken_before_a_release_read_the_same_after_it() {
        let (_dir, map, content) = mapped();
        let early = slice_bytes(&map, 100..20 * RELEASE_ALIGN + 5);
        let whole = slice_bytes(&map, 0..map.len());
        assert_eq!(&whole[..], &content[..], "every page touched");
        map.release(0..map.len());
        assert_eq!(&early[..], &content[100..20 * RELEASE_ALIGN + 5]);
        assert_eq!(&whole[..], &content[..]);
        assert_eq!(map.as_slice(), &content[..]);
        // Releasing again, and nothing, is harmless.
        map.release(0..map.len());
        map.release(5..5);
        map.release(1..RELEASE_ALIGN);
        assert_eq!(&whole[..], &content[..]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn release_drops_the_pages_from_the_resident_set() {
        let (_dir, map, content) = mapped();
        let sum: u64 = map.as_slice().iter().map(|&b| u64::from(b)).sum();
        assert_eq!(sum, content.iter().map(|&b| u64::from(b)).sum::<u64>());
        let all = (PAGES * RELEASE_ALIGN / 1024) as u64;
        assert_eq!(resident_kb(map.as_slice().as_ptr()), all);
        // Only whole pages inside the range go: a page partly outside stays.
        map.release(10..(PAGES / 2) * RELEASE_ALIGN + 10);
        let left = resident_kb(map.as_slice().as_ptr());
        assert_eq!(left, all - ((PAGES / 2 - 1) * RELEASE_ALIGN / 1024) as u64);
        assert_eq!(map.as_slice(), &content[..]);
        assert_eq!(resident_kb(map.as_slice().as_ptr()), all);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_releaser_releases_in_chunks_what_the_reader_is_done_with() {
        let (_dir, map, content) = mapped();
        let addr = map.as_slice().as_ptr();
        assert_eq!(map.as_slice(), &content[..]);
        let all = (PAGES * RELEASE_ALIGN / 1024) as u64;
        let held = slice_bytes(&map, 0..3 * RELEASE_ALIGN);
        let mut releaser = Releaser::default();
        // Less than a chunk: nothing released yet.
        releaser.done_with(&MapRange::new(&map, 0..3 * RELEASE_ALIGN));
        releaser.done_with(&MapRange::new(
            &map,
            3 * RELEASE_ALIGN..8 * RELEASE_ALIGN + 1,
        ));
        assert_eq!(resident_kb(addr), all);
        // Dropping the releaser releases what it was done with: whole pages.
        drop(releaser);
        assert_eq!(resident_kb(addr), all - (8 * RELEASE_ALIGN / 1024) as u64);
        assert_eq!(&held[..], &content[..3 * RELEASE_ALIGN]);
        // A releaser whose map is gone releases nothing and does not fail.
        let mut releaser = Releaser::default();
        releaser.done_with(&MapRange::new(&map, 0..PAGES * RELEASE_ALIGN));
        drop(map);
        drop(releaser);
        assert_eq!(&held[..], &content[..3 * RELEASE_ALIGN]);
    }
}
