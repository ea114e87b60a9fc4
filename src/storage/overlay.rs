//! [`OverlayStorage`]: a copy-on-write layer over another [`Storage`] that
//! never changes it — the file layer of a read-only open
//! ([`Cluster::open_read_only`](crate::Cluster::open_read_only)).
//!
//! Reads go through to the files underneath, opened read-only
//! ([`OpenMode::Read`]). Every change — a write, a length change, a new
//! file or directory, a rename, a removal — is kept in memory and seen by
//! later calls of the overlay (and by every handle of the changed file),
//! never by the storage underneath: recovery can cut a torn tail, rebuild
//! an index or remove a leftover file, and the directory stays as it was.
//! Syncs succeed and do nothing, and [`Storage::lock_dir`] returns a guard
//! that locks nothing ([`DirLock::is_locked`] is false), so a directory
//! another process holds can be read.
//!
//! # Files
//!
//! A file the overlay has not changed reads through its real handle, and
//! its length is the real file's current length (another process may be
//! appending). The first change freezes the length the overlay sees and
//! copies, page by page (4 KiB), only the pages written: a file cut
//! shorter or extended with zeros copies nothing, so a preallocated index
//! costs no memory.
//!
//! # Maps
//!
//! [`StorageFile::map`] of a `.log` file whose mapped bytes the overlay
//! has not changed maps the real file ([`ReadMap`] over its pages): logbus
//! only appends to a live segment file or replaces it by rename, so the
//! bytes below its length at the open stay in place while a writer in
//! another process goes on. Every other map is a copy in anonymous memory
//! ([`ReadMap::filled`]): another process trims and rewrites index files
//! and replaces checkpoints, and a shared map of a file that shrinks
//! under it would fault (`SIGBUS`). The residual risk of the real maps is
//! a writer that cuts a segment below what the overlay saw (a follower's
//! truncation after a leader change, or the writer's own recovery
//! cutting damage); reading such bytes would fault.
//!
//! # Directories
//!
//! The overlay records, per path, what it changed: a file it holds, a
//! directory it made, or a removal that hides the real path and
//! everything below it. Renaming a directory is not supported (logbus
//! renames directories only to delete topics, which a read-only cluster
//! refuses): it fails with [`crate::Error::Io`] and changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::storage::file::{DirLock, OpenMode, Storage, StorageFile};
use crate::storage::mmap::ReadMap;

/// The unit of copy-on-write.
const PAGE: usize = 4096;
/// [`PAGE`] as a file position.
const PAGE_U64: u64 = PAGE as u64;

/// The suffix of the files the overlay maps from the real file system
/// while unchanged (segment files; see the module documentation).
const REAL_MAP_SUFFIX: &str = ".log";

/// A [`Storage`] that reads through to another and keeps every change in
/// memory (see the module documentation).
///
/// ```
/// use std::sync::Arc;
/// use logbus::{OpenMode, OverlayStorage, StdStorage, Storage};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("file");
/// std::fs::write(&path, b"hello")?;
/// let overlay = OverlayStorage::new(Arc::new(StdStorage));
/// let file = overlay.open(&path, OpenMode::Existing)?;
/// file.write_all_at(b"J", 0)?;
/// file.sync()?;
/// overlay.remove_file(&dir.path().join("file"))?;
/// overlay.open(&dir.path().join("new"), OpenMode::CreateNew)?;
/// let mut buf = [0; 5];
/// file.read_exact_at(&mut buf, 0)?;
/// assert_eq!(&buf, b"Jello"); // the overlay's view
/// assert_eq!(std::fs::read(&path)?, b"hello"); // the disk's, unchanged
/// assert!(!overlay.exists(&path));
/// assert!(!dir.path().join("new").exists());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct OverlayStorage {
    inner: Arc<dyn Storage>,
    entries: Mutex<BTreeMap<PathBuf, Entry>>,
}

/// What the overlay knows of a path.
#[derive(Debug, Clone)]
enum Entry {
    /// A file, real or in memory: every handle of the path shares it.
    File(Arc<Node>),
    /// A directory the overlay made: whatever the storage underneath holds
    /// at this path or below (removed in the overlay before, or appearing
    /// later) is hidden.
    Dir,
    /// Removed: the path and everything below it are hidden.
    Gone,
}

/// What a path resolves to.
enum Found {
    File(Arc<Node>),
    /// A directory the overlay made.
    Dir,
    /// Not changed by the overlay: whatever the storage underneath holds
    /// (possibly nothing).
    Underneath,
    Missing,
}

impl OverlayStorage {
    /// An overlay over `inner`, which it only reads.
    #[must_use]
    pub fn new(inner: Arc<dyn Storage>) -> Self {
        OverlayStorage {
            inner,
            entries: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether the overlay changed anything (a write, a length change, a
    /// new file or directory, a rename or a removal) since it was made.
    #[must_use]
    pub fn has_changes(&self) -> bool {
        self.entries.lock().values().any(|entry| match entry {
            Entry::File(node) => node.is_changed(),
            Entry::Dir | Entry::Gone => true,
        })
    }

    fn resolve(entries: &BTreeMap<PathBuf, Entry>, path: &Path) -> Found {
        match entries.get(path) {
            Some(Entry::File(node)) => return Found::File(node.clone()),
            Some(Entry::Dir) => return Found::Dir,
            Some(Entry::Gone) => return Found::Missing,
            None => {}
        }
        // Below a removed path, a file or a directory the overlay made,
        // nothing underneath shows.
        if path
            .ancestors()
            .skip(1)
            .any(|ancestor| entries.contains_key(ancestor))
        {
            Found::Missing
        } else {
            Found::Underneath
        }
    }

    /// Whether `path` is a directory in the overlay's view.
    fn is_dir(&self, entries: &BTreeMap<PathBuf, Entry>, path: &Path) -> bool {
        match Self::resolve(entries, path) {
            Found::Dir => true,
            Found::Underneath => self.inner.list_dir(path).is_ok(),
            Found::File(_) | Found::Missing => false,
        }
    }

    /// Whether `path` exists in the overlay's view.
    fn exists_in(&self, entries: &BTreeMap<PathBuf, Entry>, path: &Path) -> bool {
        match Self::resolve(entries, path) {
            Found::File(_) | Found::Dir => true,
            Found::Underneath => self.inner.exists(path),
            Found::Missing => false,
        }
    }

    /// The parent of `path` must be a directory for a file to go there.
    fn check_parent(
        &self,
        entries: &BTreeMap<PathBuf, Entry>,
        op: &'static str,
        path: &Path,
    ) -> Result<()> {
        match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() && !self.is_dir(entries, parent) => Err(
                io_error(op, path, io::ErrorKind::NotFound, "no such directory"),
            ),
            _ => Ok(()),
        }
    }

    /// Removes every entry strictly below `dir`.
    fn forget_below(entries: &mut BTreeMap<PathBuf, Entry>, dir: &Path) {
        let below: Vec<PathBuf> = entries
            .range(dir.to_path_buf()..)
            .map(|(path, _)| path)
            .take_while(|path| path.starts_with(dir))
            .filter(|path| path.as_path() != dir)
            .cloned()
            .collect();
        for path in below {
            entries.remove(&path);
        }
    }
}

fn io_error(op: &'static str, path: &Path, kind: io::ErrorKind, what: &str) -> Error {
    Error::io(
        op,
        path,
        io::Error::new(kind, format!("{what} (read-only overlay)")),
    )
}

impl Storage for OverlayStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> Result<Arc<dyn StorageFile>> {
        let mut entries = self.entries.lock();
        let node = match Self::resolve(&entries, path) {
            Found::File(node) if mode == OpenMode::CreateNew => {
                drop(node);
                return Err(io_error(
                    "create",
                    path,
                    io::ErrorKind::AlreadyExists,
                    "file exists",
                ));
            }
            Found::File(node) => node,
            Found::Dir => {
                return Err(io_error(
                    "open",
                    path,
                    io::ErrorKind::IsADirectory,
                    "a directory",
                ));
            }
            Found::Underneath if self.inner.exists(path) => {
                if mode == OpenMode::CreateNew {
                    return Err(io_error(
                        "create",
                        path,
                        io::ErrorKind::AlreadyExists,
                        "file exists",
                    ));
                }
                // Opening a directory for reading would succeed.
                if self.inner.list_dir(path).is_ok() {
                    return Err(io_error(
                        "open",
                        path,
                        io::ErrorKind::IsADirectory,
                        "a directory",
                    ));
                }
                let real = self.inner.open(path, OpenMode::Read)?;
                let node = Arc::new(Node::real(real, path));
                entries.insert(path.to_path_buf(), Entry::File(node.clone()));
                node
            }
            Found::Underneath | Found::Missing => {
                if matches!(mode, OpenMode::Existing | OpenMode::Read) {
                    return Err(io_error(
                        "open",
                        path,
                        io::ErrorKind::NotFound,
                        "no such file",
                    ));
                }
                self.check_parent(&entries, "create", path)?;
                let node = Arc::new(Node::new_in_memory());
                entries.insert(path.to_path_buf(), Entry::File(node.clone()));
                node
            }
        };
        Ok(Arc::new(OverlayFile {
            node,
            path: path.to_path_buf(),
            writable: mode != OpenMode::Read,
        }))
    }

    fn create_dir_all(&self, path: &Path) -> Result<()> {
        let mut entries = self.entries.lock();
        let mut missing = Vec::new();
        for dir in path.ancestors().filter(|d| !d.as_os_str().is_empty()) {
            match Self::resolve(&entries, dir) {
                Found::Dir => break,
                Found::File(_) => {
                    return Err(io_error(
                        "create_dir_all",
                        dir,
                        io::ErrorKind::AlreadyExists,
                        "a file is in the way",
                    ));
                }
                Found::Underneath if self.inner.exists(dir) => {
                    if self.inner.list_dir(dir).is_err() {
                        return Err(io_error(
                            "create_dir_all",
                            dir,
                            io::ErrorKind::AlreadyExists,
                            "a file is in the way",
                        ));
                    }
                    break;
                }
                Found::Underneath | Found::Missing => missing.push(dir.to_path_buf()),
            }
        }
        for dir in missing.into_iter().rev() {
            entries.insert(dir, Entry::Dir);
        }
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        let mut entries = self.entries.lock();
        let node = match Self::resolve(&entries, from) {
            Found::File(node) => node,
            Found::Underneath if self.inner.exists(from) => {
                if self.inner.list_dir(from).is_ok() {
                    return Err(io_error(
                        "rename",
                        from,
                        io::ErrorKind::Unsupported,
                        "renaming a directory is not supported",
                    ));
                }
                Arc::new(Node::real(self.inner.open(from, OpenMode::Read)?, from))
            }
            Found::Dir => {
                return Err(io_error(
                    "rename",
                    from,
                    io::ErrorKind::Unsupported,
                    "renaming a directory is not supported",
                ));
            }
            Found::Underneath | Found::Missing => {
                return Err(io_error(
                    "rename",
                    from,
                    io::ErrorKind::NotFound,
                    "no such file",
                ));
            }
        };
        if self.is_dir(&entries, to) {
            return Err(io_error(
                "rename",
                to,
                io::ErrorKind::IsADirectory,
                "a directory",
            ));
        }
        self.check_parent(&entries, "rename", to)?;
        if from == to {
            return Ok(());
        }
        entries.insert(from.to_path_buf(), Entry::Gone);
        entries.insert(to.to_path_buf(), Entry::File(node));
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> Result<()> {
        let mut entries = self.entries.lock();
        if self.is_dir(&entries, path) {
            return Err(io_error(
                "remove_file",
                path,
                io::ErrorKind::IsADirectory,
                "a directory",
            ));
        }
        if self.exists_in(&entries, path) {
            entries.insert(path.to_path_buf(), Entry::Gone);
        }
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> Result<()> {
        let mut entries = self.entries.lock();
        if self.exists_in(&entries, path) {
            Self::forget_below(&mut entries, path);
            entries.insert(path.to_path_buf(), Entry::Gone);
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> Result<Vec<PathBuf>> {
        let entries = self.entries.lock();
        let mut listed = BTreeSet::new();
        match Self::resolve(&entries, path) {
            Found::File(_) => {
                return Err(io_error(
                    "read_dir",
                    path,
                    io::ErrorKind::NotADirectory,
                    "not a directory",
                ));
            }
            Found::Missing => {
                return Err(io_error(
                    "read_dir",
                    path,
                    io::ErrorKind::NotFound,
                    "no such directory",
                ));
            }
            Found::Dir => {}
            Found::Underneath => listed.extend(self.inner.list_dir(path)?),
        }
        // Children the overlay made, moved here or removed.
        let own: Vec<(PathBuf, bool)> = entries
            .range(path.to_path_buf()..)
            .take_while(|(child, _)| child.starts_with(path))
            .filter(|(child, _)| child.parent() == Some(path))
            .map(|(child, entry)| (child.clone(), !matches!(entry, Entry::Gone)))
            .collect();
        for (child, present) in own {
            if present {
                listed.insert(child);
            } else {
                listed.remove(&child);
            }
        }
        Ok(listed.into_iter().collect())
    }

    fn exists(&self, path: &Path) -> bool {
        self.exists_in(&self.entries.lock(), path)
    }

    fn sync_dir(&self, path: &Path) -> Result<()> {
        if self.is_dir(&self.entries.lock(), path) {
            Ok(())
        } else {
            Err(io_error(
                "fsync directory",
                path,
                io::ErrorKind::NotFound,
                "no such directory",
            ))
        }
    }

    fn lock_dir(&self, dir: &Path) -> Result<DirLock> {
        Ok(DirLock::unlocked(dir.to_path_buf()))
    }
}

/// One file of the overlay's view, shared by every handle of it (as an
/// inode is).
#[derive(Debug)]
struct Node {
    content: Mutex<Content>,
    /// Whether unchanged maps may map the real file (a segment file).
    map_real: bool,
}

#[derive(Debug)]
enum Content {
    /// The real file, unchanged: reads, length and maps go to it.
    Real(Arc<dyn StorageFile>),
    /// Changed (or made) by the overlay.
    Changed(Changed),
}

/// A file the overlay changed: bytes `[0, base_len)` not in `pages` are the
/// real file's, bytes past `base_len` not in `pages` are zeros.
///
/// Invariants: `base_len <= len`; a page's bytes at or past `len` are zero.
#[derive(Debug)]
struct Changed {
    base: Option<Arc<dyn StorageFile>>,
    base_len: u64,
    len: u64,
    pages: BTreeMap<u64, Box<[u8]>>,
}

impl Node {
    fn real(file: Arc<dyn StorageFile>, path: &Path) -> Self {
        Node {
            content: Mutex::new(Content::Real(file)),
            map_real: path.to_string_lossy().ends_with(REAL_MAP_SUFFIX),
        }
    }

    fn new_in_memory() -> Self {
        Node {
            content: Mutex::new(Content::Changed(Changed {
                base: None,
                base_len: 0,
                len: 0,
                pages: BTreeMap::new(),
            })),
            map_real: false,
        }
    }

    fn is_changed(&self) -> bool {
        matches!(*self.content.lock(), Content::Changed(_))
    }
}

impl Content {
    /// The changed form, made from the real file's current length if the
    /// file was unchanged.
    fn changed(&mut self) -> Result<&mut Changed> {
        if let Content::Real(file) = self {
            let len = file.len()?;
            *self = Content::Changed(Changed {
                base: Some(file.clone()),
                base_len: len,
                len,
                pages: BTreeMap::new(),
            });
        }
        match self {
            Content::Changed(changed) => Ok(changed),
            Content::Real(_) => unreachable!("made changed just above"),
        }
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// How many times [`read_base`] reads again after the real file shrank
/// under it.
const SHRINK_RETRIES: usize = 3;

/// Reads `out.len()` bytes of the real file `base` at `at`; bytes past its
/// end (another process cut it after the overlay took its length, as a
/// writer trims a preallocated index at a roll) read as zeros, as the
/// zeros such a cut drops.
fn read_base(base: &dyn StorageFile, out: &mut [u8], at: u64) -> Result<()> {
    let mut attempt = 0;
    loop {
        let available = to_usize(base.len()?.saturating_sub(at)).min(out.len());
        let (present, past_end) = out.split_at_mut(available);
        past_end.fill(0);
        match base.read_exact_at(present, at) {
            Err(Error::Io { source, .. })
                if source.kind() == io::ErrorKind::UnexpectedEof && attempt < SHRINK_RETRIES =>
            {
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Bytes copied at a time by [`copy_nonzero`].
const COPY_CHUNK: usize = 64 << 10;

/// Fills `out` with the first `out.len()` bytes of `base` (as
/// [`read_base`]), leaving untouched the chunks that are all zeros: `out`
/// is fresh anonymous memory, whose untouched pages cost nothing (the zero
/// tail of a preallocated index).
fn copy_nonzero(base: &dyn StorageFile, out: &mut [u8]) -> Result<()> {
    let mut chunk = vec![0u8; COPY_CHUNK.min(out.len())];
    for (i, dest) in out.chunks_mut(COPY_CHUNK).enumerate() {
        let chunk = &mut chunk[..dest.len()];
        read_base(base, chunk, (i * COPY_CHUNK) as u64)?;
        if chunk.iter().any(|&b| b != 0) {
            dest.copy_from_slice(chunk);
        }
    }
    Ok(())
}

impl Changed {
    /// Reads `buf.len()` bytes at `position`, all below `len`.
    fn read(&self, buf: &mut [u8], position: u64) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = position + done as u64;
            let page = at / PAGE_U64;
            let in_page = to_usize(at % PAGE_U64);
            if let Some(bytes) = self.pages.get(&page) {
                let n = (PAGE - in_page).min(buf.len() - done);
                buf[done..done + n].copy_from_slice(&bytes[in_page..in_page + n]);
                done += n;
                continue;
            }
            // A run of unchanged pages, up to the next changed one.
            let run_end = self
                .pages
                .range(page..)
                .next()
                .map_or(u64::MAX, |(p, _)| p * PAGE_U64);
            let n = to_usize((run_end - at).min((buf.len() - done) as u64));
            let out = &mut buf[done..done + n];
            let from_base = to_usize(self.base_len.saturating_sub(at)).min(n);
            match &self.base {
                Some(base) if from_base > 0 => read_base(&**base, &mut out[..from_base], at)?,
                _ => {}
            }
            out[from_base..].fill(0);
            done += n;
        }
        Ok(())
    }

    /// The page `page`, copied in if it was not yet.
    fn page_mut(&mut self, page: u64) -> Result<&mut [u8]> {
        if !self.pages.contains_key(&page) {
            let mut bytes = vec![0u8; PAGE].into_boxed_slice();
            let start = page * PAGE_U64;
            let readable = to_usize(self.len.saturating_sub(start)).min(PAGE);
            // No page is at `page` yet, so this reads the base or zeros.
            self.read(&mut bytes[..readable], start)?;
            self.pages.insert(page, bytes);
        }
        // Present: inserted just above if it was not.
        Ok(self.pages.entry(page).or_default())
    }

    fn write(&mut self, buf: &[u8], position: u64) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = position + done as u64;
            let in_page = to_usize(at % PAGE_U64);
            let n = (PAGE - in_page).min(buf.len() - done);
            self.page_mut(at / PAGE_U64)?[in_page..in_page + n]
                .copy_from_slice(&buf[done..done + n]);
            done += n;
        }
        self.len = self.len.max(position + buf.len() as u64);
        Ok(())
    }

    fn set_len(&mut self, len: u64) {
        if len < self.len {
            // Pages wholly past the end go; the one holding it is zeroed
            // from the end on.
            let first_gone = len.div_ceil(PAGE_U64);
            self.pages.split_off(&first_gone);
            if let Some(last) = self.pages.get_mut(&(len / PAGE_U64)) {
                last[to_usize(len % PAGE_U64)..].fill(0);
            }
            self.base_len = self.base_len.min(len);
        }
        self.len = len;
    }
}

/// A handle of an [`OverlayStorage`] file.
#[derive(Debug)]
struct OverlayFile {
    node: Arc<Node>,
    path: PathBuf,
    /// False for a handle opened with [`OpenMode::Read`].
    writable: bool,
}

impl OverlayFile {
    fn check_writable(&self, op: &'static str) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(io_error(
                op,
                &self.path,
                io::ErrorKind::PermissionDenied,
                "opened for reading",
            ))
        }
    }
}

impl StorageFile for OverlayFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn write_all_at(&self, buf: &[u8], position: u64) -> Result<()> {
        self.check_writable("write")?;
        self.node.content.lock().changed()?.write(buf, position)
    }

    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> Result<()> {
        let content = self.node.content.lock();
        match &*content {
            Content::Real(file) => file.read_exact_at(buf, position),
            Content::Changed(changed) => {
                if position.saturating_add(buf.len() as u64) > changed.len {
                    return Err(io_error(
                        "read",
                        &self.path,
                        io::ErrorKind::UnexpectedEof,
                        "read past the end of the file",
                    ));
                }
                changed.read(buf, position)
            }
        }
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn len(&self) -> Result<u64> {
        match &*self.node.content.lock() {
            Content::Real(file) => file.len(),
            Content::Changed(changed) => Ok(changed.len),
        }
    }

    fn set_len(&self, len: u64) -> Result<()> {
        self.check_writable("set_len")?;
        let mut content = self.node.content.lock();
        if let Content::Real(file) = &*content
            && file.len()? == len
        {
            return Ok(());
        }
        content.changed()?.set_len(len);
        Ok(())
    }

    fn map(&self, len: usize) -> Result<Arc<ReadMap>> {
        let content = self.node.content.lock();
        let (file_len, real) = match &*content {
            Content::Real(file) => (file.len()?, Some(file)),
            Content::Changed(changed) => (
                changed.len,
                changed
                    .base
                    .as_ref()
                    .filter(|_| changed.pages.is_empty() && len as u64 <= changed.base_len),
            ),
        };
        if len as u64 > file_len {
            return Err(io_error(
                "mmap",
                &self.path,
                io::ErrorKind::InvalidInput,
                &format!("cannot map {len} bytes of a file of {file_len} bytes"),
            ));
        }
        match real {
            Some(file) if self.node.map_real => file.map(len),
            _ => {
                let map = ReadMap::filled(&self.path, len, |bytes| match &*content {
                    Content::Real(file) => copy_nonzero(&**file, bytes),
                    Content::Changed(changed) => {
                        // Only the bytes that may be non-zero are written:
                        // the zero tail stays untouched anonymous memory.
                        let stored = to_usize(changed.base_len).min(bytes.len());
                        if let Some(base) = &changed.base {
                            copy_nonzero(&**base, &mut bytes[..stored])?;
                        }
                        for (&page, data) in &changed.pages {
                            let start = to_usize(page * PAGE_U64);
                            if start >= bytes.len() {
                                break;
                            }
                            let n = PAGE.min(bytes.len() - start);
                            bytes[start..start + n].copy_from_slice(&data[..n]);
                        }
                        Ok(())
                    }
                })?;
                Ok(Arc::new(map))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;

    use super::*;
    use crate::storage::StdStorage;

    /// Every file and directory below `dir` with its content (`None` for
    /// a directory).
    fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
        let mut all = BTreeMap::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for entry in fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    all.insert(path.clone(), None);
                    todo.push(path);
                } else {
                    all.insert(path.clone(), Some(fs::read(&path).unwrap()));
                }
            }
        }
        all
    }

    fn setup() -> (tempfile::TempDir, OverlayStorage) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/a.log"), b"0123456789").unwrap();
        fs::write(dir.path().join("sub/b.index"), vec![7u8; 3 * PAGE + 5]).unwrap();
        fs::write(dir.path().join("top"), b"top").unwrap();
        (dir, OverlayStorage::new(Arc::new(StdStorage)))
    }

    fn read(file: &dyn StorageFile, at: u64, n: usize) -> Vec<u8> {
        let mut buf = vec![0xee; n];
        file.read_exact_at(&mut buf, at).unwrap();
        buf
    }

    fn kind(e: &Error) -> io::ErrorKind {
        match e {
            Error::Io { source, .. } => source.kind(),
            other => panic!("not an I/O error: {other}"),
        }
    }

    #[test]
    fn writes_are_copied_on_write_and_shared_by_every_handle() -> Result<()> {
        let (dir, overlay) = setup();
        let before = snapshot(dir.path());
        let path = dir.path().join("sub/b.index");
        let first = overlay.open(&path, OpenMode::Existing)?;
        assert!(!overlay.has_changes());
        assert_eq!(first.len()?, 3 * PAGE_U64 + 5);
        // A write spanning a page boundary copies two pages.
        first.write_all_at(b"abcd", PAGE_U64 - 2)?;
        first.sync()?;
        assert!(overlay.has_changes());
        let second = overlay.open(&path, OpenMode::CreateOrOpen)?;
        let mut expected = vec![7u8; 3 * PAGE + 5];
        expected[PAGE - 2..PAGE + 2].copy_from_slice(b"abcd");
        assert_eq!(read(&*second, 0, expected.len()), expected);
        // Past the end: extends, with zeros between.
        second.write_all_at(b"zz", 3 * PAGE_U64 + 10)?;
        expected.extend_from_slice(&[0, 0, 0, 0, 0, b'z', b'z']);
        assert_eq!(first.len()?, expected.len() as u64);
        assert_eq!(read(&*first, 0, expected.len()), expected);
        let mut buf = [0u8; 2];
        assert_eq!(
            kind(
                &first
                    .read_exact_at(&mut buf, expected.len() as u64 - 1)
                    .unwrap_err()
            ),
            io::ErrorKind::UnexpectedEof
        );
        assert_eq!(snapshot(dir.path()), before);
        Ok(())
    }

    #[test]
    fn lengths_cut_and_extended_read_as_a_shorter_file_then_zeros() -> Result<()> {
        let (dir, overlay) = setup();
        let before = snapshot(dir.path());
        let file = overlay.open(&dir.path().join("sub/b.index"), OpenMode::Existing)?;
        file.write_all_at(b"xy", PAGE_U64 + 1)?;
        file.set_len(PAGE_U64 + 2)?;
        assert_eq!(file.len()?, PAGE_U64 + 2);
        file.set_len(3 * PAGE_U64)?;
        let mut expected = vec![7u8; PAGE + 2];
        expected[PAGE + 1] = b'x';
        expected.resize(3 * PAGE, 0);
        assert_eq!(read(&*file, 0, 3 * PAGE), expected);
        // Cut below the copied page: the base is cut too.
        file.set_len(10)?;
        file.set_len(20)?;
        let mut short = vec![7u8; 10];
        short.resize(20, 0);
        assert_eq!(read(&*file, 0, 20), short);
        // Setting the length an unchanged file has changes nothing.
        let other = overlay.open(&dir.path().join("top"), OpenMode::Existing)?;
        other.set_len(3)?;
        let overlay_of_top = OverlayStorage::new(Arc::new(StdStorage));
        overlay_of_top
            .open(&dir.path().join("top"), OpenMode::Existing)?
            .set_len(3)?;
        assert!(!overlay_of_top.has_changes());
        assert_eq!(snapshot(dir.path()), before);
        Ok(())
    }

    #[test]
    fn names_change_in_memory_only() -> Result<()> {
        let (dir, overlay) = setup();
        let before = snapshot(dir.path());
        let root = dir.path();
        // Create, rename over, remove, make directories.
        let new = overlay.open(&root.join("sub/new.tmp"), OpenMode::CreateNew)?;
        new.write_all_at(b"fresh", 0)?;
        overlay.rename(&root.join("sub/new.tmp"), &root.join("top"))?;
        overlay.remove_file(&root.join("sub/a.log"))?;
        overlay.remove_file(&root.join("sub/a.log"))?; // missing is fine
        overlay.create_dir_all(&root.join("made/deeper"))?;
        overlay.open(&root.join("made/deeper/f"), OpenMode::CreateOrOpen)?;
        assert!(overlay.exists(&root.join("top")));
        assert!(!overlay.exists(&root.join("sub/new.tmp")));
        assert!(!overlay.exists(&root.join("sub/a.log")));
        assert_eq!(
            read(&*overlay.open(&root.join("top"), OpenMode::Read)?, 0, 5),
            b"fresh"
        );
        let mut listed = overlay.list_dir(root)?;
        listed.sort();
        assert_eq!(
            listed,
            vec![root.join("made"), root.join("sub"), root.join("top")]
        );
        assert_eq!(
            overlay.list_dir(&root.join("sub"))?,
            vec![root.join("sub/b.index")]
        );
        assert_eq!(
            overlay.list_dir(&root.join("made/deeper"))?,
            vec![root.join("made/deeper/f")]
        );
        // A removed directory hides everything below it, and one made
        // again in its place is empty.
        overlay.remove_dir_all(&root.join("sub"))?;
        assert!(!overlay.exists(&root.join("sub/b.index")));
        assert_eq!(
            kind(&overlay.list_dir(&root.join("sub")).unwrap_err()),
            io::ErrorKind::NotFound
        );
        overlay.create_dir_all(&root.join("sub"))?;
        assert!(overlay.list_dir(&root.join("sub"))?.is_empty());
        assert!(!overlay.exists(&root.join("sub/b.index")));
        overlay.sync_dir(&root.join("sub"))?;
        // The disk saw none of it.
        assert_eq!(snapshot(root), before);
        Ok(())
    }

    #[test]
    fn refused_calls_say_why_and_change_nothing() -> Result<()> {
        let (dir, overlay) = setup();
        let before = snapshot(dir.path());
        let root = dir.path();
        let cases = [
            (
                overlay
                    .open(&root.join("nope"), OpenMode::Existing)
                    .unwrap_err(),
                io::ErrorKind::NotFound,
            ),
            (
                overlay
                    .open(&root.join("top"), OpenMode::CreateNew)
                    .unwrap_err(),
                io::ErrorKind::AlreadyExists,
            ),
            (
                overlay
                    .open(&root.join("no/dir"), OpenMode::CreateNew)
                    .unwrap_err(),
                io::ErrorKind::NotFound,
            ),
            (
                overlay
                    .open(&root.join("sub"), OpenMode::Existing)
                    .unwrap_err(),
                io::ErrorKind::IsADirectory,
            ),
            (
                overlay
                    .rename(&root.join("sub"), &root.join("moved"))
                    .unwrap_err(),
                io::ErrorKind::Unsupported,
            ),
            (
                overlay
                    .rename(&root.join("nope"), &root.join("moved"))
                    .unwrap_err(),
                io::ErrorKind::NotFound,
            ),
            (
                overlay.list_dir(&root.join("top")).unwrap_err(),
                io::ErrorKind::NotADirectory,
            ),
            (
                overlay.create_dir_all(&root.join("top/x")).unwrap_err(),
                io::ErrorKind::AlreadyExists,
            ),
        ];
        for (e, expected) in &cases {
            assert_eq!(kind(e), *expected, "{e}");
            // The listing's error is the file system's own.
            if *expected != io::ErrorKind::NotADirectory {
                assert!(e.to_string().contains("read-only overlay"), "{e}");
            }
        }
        // A handle opened for reading refuses changes.
        let read_only = overlay.open(&root.join("top"), OpenMode::Read)?;
        assert_eq!(
            kind(&read_only.write_all_at(b"x", 0).unwrap_err()),
            io::ErrorKind::PermissionDenied
        );
        assert_eq!(
            kind(&read_only.set_len(0).unwrap_err()),
            io::ErrorKind::PermissionDenied
        );
        assert!(!overlay.has_changes());
        assert_eq!(snapshot(root), before);
        Ok(())
    }

    #[test]
    fn the_lock_locks_nothing_and_creates_no_file() -> Result<()> {
        let (dir, overlay) = setup();
        let before = snapshot(dir.path());
        let guard = overlay.lock_dir(dir.path())?;
        assert!(!guard.is_locked());
        assert_eq!(guard.path(), dir.path());
        assert_eq!(snapshot(dir.path()), before, "no .lock file");
        // A real lock held elsewhere does not stop it, and it does not
        // stop a real one.
        let real = StdStorage.lock_dir(dir.path())?;
        assert!(real.is_locked());
        let _again = overlay.lock_dir(dir.path())?;
        drop(guard);
        assert!(matches!(
            StdStorage.lock_dir(dir.path()),
            Err(Error::DirectoryLocked { .. })
        ));
        Ok(())
    }

    #[test]
    fn an_unchanged_file_follows_a_writer_until_the_overlay_changes_it() -> Result<()> {
        let (dir, overlay) = setup();
        let path = dir.path().join("sub/a.log");
        let file = overlay.open(&path, OpenMode::Existing)?;
        // Another process appends.
        let writer = StdStorage.open(&path, OpenMode::Existing)?;
        writer.write_all_at(b"ab", 10)?;
        assert_eq!(file.len()?, 12);
        assert_eq!(read(&*file, 8, 4), b"89ab");
        // The overlay cuts it (as recovery cuts a torn tail): its view is
        // frozen from then on.
        file.set_len(11)?;
        writer.write_all_at(b"cd", 12)?;
        assert_eq!(file.len()?, 11);
        assert_eq!(read(&*file, 9, 2), b"9a");
        assert_eq!(fs::read(&path).unwrap(), b"0123456789abcd");
        Ok(())
    }

    #[test]
    fn bytes_a_writer_cut_after_the_overlay_took_the_length_read_as_zeros() -> Result<()> {
        let (dir, overlay) = setup();
        let path = dir.path().join("sub/b.index");
        let file = overlay.open(&path, OpenMode::Existing)?;
        file.write_all_at(b"w", 0)?; // the overlay's length is now fixed
        // Another process trims the file (as a roll trims an index).
        StdStorage
            .open(&path, OpenMode::Existing)?
            .set_len(PAGE_U64 + 1)?;
        let mut expected = vec![7u8; PAGE + 1];
        expected[0] = b'w';
        expected.resize(3 * PAGE + 5, 0);
        assert_eq!(read(&*file, 0, 3 * PAGE + 5), expected);
        assert_eq!(file.map(3 * PAGE + 5)?.as_slice(), &expected[..]);
        Ok(())
    }

    #[test]
    fn maps_of_unchanged_segments_are_real_and_every_other_map_a_copy() -> Result<()> {
        let (dir, overlay) = setup();
        let log = dir.path().join("sub/a.log");
        let index = dir.path().join("sub/b.index");
        let writer_log = StdStorage.open(&log, OpenMode::Existing)?;
        let writer_index = StdStorage.open(&index, OpenMode::Existing)?;

        let log_map = overlay.open(&log, OpenMode::Existing)?.map(10)?;
        let index_map = overlay.open(&index, OpenMode::Existing)?.map(PAGE)?;
        assert_eq!(log_map.as_slice(), b"0123456789");
        assert_eq!(index_map.as_slice(), &[7u8; PAGE][..]);
        // Another process rewrites bytes in place: the real map shares the
        // page cache, the copy does not.
        writer_log.write_all_at(b"X", 0)?;
        writer_index.write_all_at(b"X", 0)?;
        assert_eq!(&log_map.as_slice()[..2], b"X1");
        assert_eq!(index_map.as_slice()[0], 7);
        writer_log.write_all_at(b"0", 0)?;

        // A segment cut by the overlay still maps the real prefix; one
        // written to is a copy of its changed view.
        let cut = overlay.open(&log, OpenMode::Existing)?;
        cut.set_len(8)?;
        assert!(cut.map(9).is_err(), "past the overlay's length");
        let prefix = cut.map(8)?;
        writer_log.write_all_at(b"Y", 1)?;
        assert_eq!(&prefix.as_slice()[..3], b"0Y2");
        cut.write_all_at(b"!", 7)?;
        let copy = cut.map(8)?;
        writer_log.write_all_at(b"Z", 2)?;
        assert_eq!(copy.as_slice(), b"0Y23456!");

        // An index cut and extended (as an open re-extends a preallocated
        // one) maps as its entries then zeros.
        let file = overlay.open(&index, OpenMode::Existing)?;
        file.set_len(6)?;
        file.set_len(2 * PAGE_U64)?;
        file.write_all_at(b"e", PAGE_U64 + 1)?;
        let map = file.map(2 * PAGE)?;
        let mut expected = vec![b'X'];
        expected.extend_from_slice(&[7u8; 5]);
        expected.resize(2 * PAGE, 0);
        expected[PAGE + 1] = b'e';
        assert_eq!(map.as_slice(), &expected[..]);
        // A new file's map is its bytes.
        let new = overlay.open(&dir.path().join("sub/new.log"), OpenMode::CreateNew)?;
        new.write_all_at(b"new", 0)?;
        assert_eq!(new.map(3)?.as_slice(), b"new");
        assert!(new.map(0)?.is_empty());
        Ok(())
    }
}
