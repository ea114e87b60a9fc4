//! [`FaultyStorage`]: real files with injected failures and simulated power
//! loss, for tests.
//!
//! # Model
//!
//! Files live on the real file system (so memory maps work); the caller
//! chooses where, typically in a temporary directory. Every mutating call goes
//! through a journal: before a write or `set_len` changes a file, the bytes it
//! will overwrite or cut (its *pre-image*) and the file's old length are
//! recorded. A successful [`StorageFile::sync`] forgets the file's journal
//! (nothing is ever snapshotted whole). [`FaultyStorage::crash`] undoes the
//! journals in reverse order, so every file is back at its content as of its
//! last successful sync, optionally keeping a torn prefix of the latest
//! write.
//!
//! Simplifications, deliberately:
//! - Directory operations (create, rename, remove) are durable at once;
//!   files created since the last `sync_dir` survive a crash. Renames and
//!   removals must go through this storage for the journal to follow them.
//! - Writes through a writable memory map are not seen (logbus maps files
//!   read-only).
//! - The directory locks of the "dead" process are not released by a crash:
//!   drop them (with the rest of the old process's objects) before reopening.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::storage::file::{DirLock, OpenMode, Storage, StorageFile};
use crate::storage::mmap::ReadMap;
use crate::storage::std_fs::StdStorage;

/// An operation [`FaultyStorage`] counts and can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultOp {
    /// [`StorageFile::write_all_at`].
    Write,
    /// [`StorageFile::sync`].
    Sync,
    /// [`Storage::sync_dir`].
    SyncDir,
    /// [`Storage::rename`].
    Rename,
    /// [`Storage::open`] with [`OpenMode::CreateNew`] or
    /// [`OpenMode::CreateOrOpen`].
    Create,
    /// [`StorageFile::set_len`].
    SetLen,
    /// [`Storage::remove_file`] and [`Storage::remove_dir_all`].
    Remove,
}

impl FaultOp {
    const ALL: [FaultOp; 7] = [
        FaultOp::Write,
        FaultOp::Sync,
        FaultOp::SyncDir,
        FaultOp::Rename,
        FaultOp::Create,
        FaultOp::SetLen,
        FaultOp::Remove,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// The error an injected fault returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// `EIO` (raw OS error 5): the device failed.
    Eio,
    /// `ENOSPC` (raw OS error 28, [`io::ErrorKind::StorageFull`]): the
    /// device is full.
    Enospc,
}

impl FaultKind {
    fn to_io(self) -> io::Error {
        match self {
            FaultKind::Eio => io::Error::from_raw_os_error(5),
            FaultKind::Enospc => io::Error::from_raw_os_error(28),
        }
    }
}

/// What [`FaultyStorage::crash`] keeps of the most recent unsynced write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tear {
    /// Every unsynced write is lost.
    None,
    /// The first `n` bytes (at most all) of the most recent unsynced write,
    /// over all files, survive: a torn write. Everything else unsynced is
    /// lost, including earlier unsynced writes to the same file.
    KeepPrefix(usize),
    /// Like [`Tear::KeepPrefix`] with a length in `0..=len` drawn from the
    /// seed.
    Random(u64),
}

#[derive(Debug, Clone, Copy)]
enum Trigger {
    /// Fail when the op's counter reaches this value.
    At(u64),
    /// Fail every call.
    Always,
}

#[derive(Debug, Clone, Copy)]
struct Fault {
    op: FaultOp,
    kind: FaultKind,
    trigger: Trigger,
    /// For writes: bytes written before failing.
    partial: usize,
}

/// How to undo one unsynced change of a file.
#[derive(Debug)]
struct Undo {
    /// Global order of the change, to find the most recent write.
    seq: u64,
    /// The file's length before the change.
    old_len: u64,
    /// Where the change starts: the write's position, or the new length of
    /// a shrinking `set_len`.
    position: u64,
    /// The bytes the change destroyed, from `position` (within `old_len`).
    pre_image: Vec<u8>,
    /// Bytes written, for a write; `None` for `set_len`.
    written: Option<usize>,
}

impl Undo {
    fn apply(&self, content: &mut Vec<u8>) {
        let old_len = to_usize(self.old_len);
        content.resize(old_len.max(content.len()), 0);
        let start = to_usize(self.position);
        content[start..start + self.pre_image.len()].copy_from_slice(&self.pre_image);
        content.truncate(old_len);
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).expect("FaultyStorage files fit in memory")
}

/// The unsynced changes of one file (shared by all its handles).
#[derive(Debug, Default)]
struct Journal {
    /// Current path; `None` once removed or replaced.
    path: Option<PathBuf>,
    undo: Vec<Undo>,
}

#[derive(Debug, Default)]
struct State {
    counts: [u64; FaultOp::ALL.len()],
    faults: Vec<Fault>,
    /// Bumped by every crash; handles of an older generation are fenced.
    generation: u64,
    next_seq: u64,
    journals: HashMap<u64, Journal>,
    by_path: HashMap<PathBuf, u64>,
    next_id: u64,
}

impl State {
    /// Counts a call of `op` and returns the fault it must fail with, if any.
    fn count(&mut self, op: FaultOp) -> Option<Fault> {
        let count = &mut self.counts[op.index()];
        *count += 1;
        let count = *count;
        let i = self.faults.iter().position(|f| {
            f.op == op
                && match f.trigger {
                    Trigger::At(at) => at == count,
                    Trigger::Always => true,
                }
        })?;
        let fault = self.faults[i];
        if let Trigger::At(_) = fault.trigger {
            self.faults.remove(i);
        }
        Some(fault)
    }

    fn journal_for(&mut self, path: &Path) -> u64 {
        if let Some(&id) = self.by_path.get(path) {
            return id;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.journals.insert(
            id,
            Journal {
                path: Some(path.to_path_buf()),
                undo: Vec::new(),
            },
        );
        self.by_path.insert(path.to_path_buf(), id);
        id
    }

    /// Forgets the paths of files at or below `path` (removed or replaced).
    fn forget_below(&mut self, path: &Path) {
        let gone: Vec<PathBuf> = self
            .by_path
            .keys()
            .filter(|p| p.starts_with(path))
            .cloned()
            .collect();
        for p in gone {
            if let Some(id) = self.by_path.remove(&p) {
                let journal = self.journals.get_mut(&id).expect("journal of a path");
                journal.path = None;
                // A handle may still write to the unlinked file; a crash
                // would restore nothing of it, so its journal is useless.
                journal.undo.clear();
            }
        }
    }

    /// Moves the paths of files at or below `from` to below `to`.
    fn move_below(&mut self, from: &Path, to: &Path) {
        let moved: Vec<PathBuf> = self
            .by_path
            .keys()
            .filter(|p| p.starts_with(from))
            .cloned()
            .collect();
        let moved: Vec<(u64, PathBuf)> = moved
            .into_iter()
            .map(|p| {
                let id = self.by_path.remove(&p).expect("listed path");
                let rest = p.strip_prefix(from).expect("below from");
                let new = if rest.as_os_str().is_empty() {
                    to.to_path_buf()
                } else {
                    to.join(rest)
                };
                (id, new)
            })
            .collect();
        self.forget_below(to);
        for (id, new) in moved {
            self.journals.get_mut(&id).expect("journal of a path").path = Some(new.clone());
            self.by_path.insert(new, id);
        }
    }
}

struct Shared {
    std: StdStorage,
    state: Mutex<State>,
}

/// A [`Storage`] over real files that fails chosen operations and simulates
/// power loss; cheap to clone (clones share everything). See the module
/// documentation for the model.
#[derive(Clone)]
pub struct FaultyStorage {
    shared: Arc<Shared>,
}

impl Default for FaultyStorage {
    fn default() -> Self {
        FaultyStorage::new()
    }
}

impl fmt::Debug for FaultyStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.state.lock();
        f.debug_struct("FaultyStorage")
            .field("generation", &state.generation)
            .field("counts", &state.counts)
            .field("faults", &state.faults)
            .finish_non_exhaustive()
    }
}

impl FaultyStorage {
    /// A storage with no faults armed.
    #[must_use]
    pub fn new() -> Self {
        FaultyStorage {
            shared: Arc::new(Shared {
                std: StdStorage::new(),
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Makes the `n`th call of `op` from now (1-based) fail with `kind`,
    /// once. A failed write writes nothing.
    ///
    /// # Panics
    /// If `n` is 0.
    pub fn fail_nth(&self, op: FaultOp, n: u64, kind: FaultKind) {
        self.arm(op, n, kind, 0);
    }

    /// Makes the `n`th write from now (1-based) write the first `written`
    /// bytes of its buffer and then fail with `kind`, once.
    ///
    /// # Panics
    /// If `n` is 0.
    pub fn fail_nth_partial_write(&self, n: u64, kind: FaultKind, written: usize) {
        self.arm(FaultOp::Write, n, kind, written);
    }

    fn arm(&self, op: FaultOp, n: u64, kind: FaultKind, partial: usize) {
        assert!(n >= 1, "fail_nth counts from 1");
        let mut state = self.shared.state.lock();
        let at = state.counts[op.index()] + n;
        state.faults.push(Fault {
            op,
            kind,
            trigger: Trigger::At(at),
            partial,
        });
    }

    /// Makes every call of `op` from now on fail with `kind`, until
    /// [`clear_faults`](Self::clear_faults).
    pub fn fail_all_from_now(&self, op: FaultOp, kind: FaultKind) {
        self.shared.state.lock().faults.push(Fault {
            op,
            kind,
            trigger: Trigger::Always,
            partial: 0,
        });
    }

    /// Disarms every fault.
    pub fn clear_faults(&self) {
        self.shared.state.lock().faults.clear();
    }

    /// How many calls of `op` were made so far, failed ones included (calls
    /// on fenced handles are not counted).
    #[must_use]
    pub fn op_count(&self, op: FaultOp) -> u64 {
        self.shared.state.lock().counts[op.index()]
    }

    /// Simulates a power loss: every file written through this storage goes
    /// back to its content and length at its last successful sync, except
    /// for what `tear` keeps of the most recent unsynced write. Every file
    /// handle opened before the crash fails all later calls; handles opened
    /// afterwards work normally. [`ReadMap`]s made before the crash stay
    /// readable with their old content (restored files are replaced by
    /// rename, not rewritten in place). Armed faults and counters are kept.
    ///
    /// # Errors
    /// [`Error::Io`] if restoring a file fails.
    pub fn crash(&self, tear: Tear) -> Result<()> {
        let mut state = self.shared.state.lock();
        state.generation += 1;
        let torn_seq = state
            .journals
            .values()
            .filter(|j| j.path.is_some())
            .flat_map(|j| &j.undo)
            .filter(|u| u.written.is_some())
            .map(|u| u.seq)
            .max();
        for journal in state.journals.values_mut() {
            let undo = std::mem::take(&mut journal.undo);
            let Some(path) = &journal.path else { continue };
            if undo.is_empty() {
                continue;
            }
            let mut content = std::fs::read(path).map_err(|e| Error::io("crash: read", path, e))?;
            let mut torn = None;
            for change in undo.iter().rev() {
                if let Some(written) = change.written
                    && Some(change.seq) == torn_seq
                {
                    let keep = match tear {
                        Tear::None => 0,
                        Tear::KeepPrefix(n) => n.min(written),
                        Tear::Random(seed) => to_usize(splitmix64(seed) % (written as u64 + 1)),
                    };
                    let start = to_usize(change.position);
                    torn = Some((start, content[start..start + keep].to_vec()));
                }
                change.apply(&mut content);
            }
            // The torn prefix lands on the file as of its last sync.
            if let Some((start, kept)) = torn.filter(|(_, kept)| !kept.is_empty()) {
                let end = start + kept.len();
                if content.len() < end {
                    content.resize(end, 0);
                }
                content[start..end].copy_from_slice(&kept);
            }
            let mut temp = path.clone().into_os_string();
            temp.push(".crash-restore");
            let temp = PathBuf::from(temp);
            std::fs::write(&temp, &content)
                .and_then(|()| std::fs::rename(&temp, path))
                .map_err(|e| Error::io("crash: restore", path, e))?;
        }
        Ok(())
    }

    fn fenced(op: &'static str, path: &Path) -> Error {
        Error::io(
            op,
            path,
            io::Error::other("file handle from before a simulated power loss"),
        )
    }

    /// Counts `op` and fails it if a fault is armed.
    fn check(&self, op: FaultOp, name: &'static str, path: &Path) -> Result<()> {
        match self.shared.state.lock().count(op) {
            Some(fault) => Err(Error::io(name, path, fault.kind.to_io())),
            None => Ok(()),
        }
    }
}

/// A well-mixed 64-bit value from a seed (SplitMix64's finalizer).
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Storage for FaultyStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> Result<Arc<dyn StorageFile>> {
        if mode != OpenMode::Existing {
            self.check(FaultOp::Create, "create", path)?;
        }
        let inner = self.shared.std.open(path, mode)?;
        let mut state = self.shared.state.lock();
        if mode == OpenMode::CreateNew {
            // A file at a path we knew was deleted behind our back.
            state.forget_below(path);
        }
        let id = state.journal_for(path);
        Ok(Arc::new(FaultyFile {
            inner,
            storage: self.clone(),
            id,
            generation: state.generation,
        }))
    }

    fn create_dir_all(&self, path: &Path) -> Result<()> {
        self.shared.std.create_dir_all(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.check(FaultOp::Rename, "rename", from)?;
        let mut state = self.shared.state.lock();
        self.shared.std.rename(from, to)?;
        state.move_below(from, to);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> Result<()> {
        self.check(FaultOp::Remove, "remove_file", path)?;
        let mut state = self.shared.state.lock();
        self.shared.std.remove_file(path)?;
        state.forget_below(path);
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> Result<()> {
        self.check(FaultOp::Remove, "remove_dir_all", path)?;
        let mut state = self.shared.state.lock();
        self.shared.std.remove_dir_all(path)?;
        state.forget_below(path);
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> Result<Vec<PathBuf>> {
        self.shared.std.list_dir(path)
    }

    fn exists(&self, path: &Path) -> bool {
        self.shared.std.exists(path)
    }

    fn sync_dir(&self, path: &Path) -> Result<()> {
        self.check(FaultOp::SyncDir, "fsync directory", path)?;
        self.shared.std.sync_dir(path)
    }

    fn lock_dir(&self, dir: &Path) -> Result<DirLock> {
        self.shared.std.lock_dir(dir)
    }
}

/// A file of [`FaultyStorage`].
#[derive(Debug)]
struct FaultyFile {
    inner: Arc<dyn StorageFile>,
    storage: FaultyStorage,
    /// Key of the file's journal.
    id: u64,
    /// The crash generation the handle was opened in.
    generation: u64,
}

impl FaultyFile {
    /// Locks the state, failing if this handle is fenced.
    fn alive(&self, op: &'static str) -> Result<parking_lot::MutexGuard<'_, State>> {
        let state = self.storage.shared.state.lock();
        if state.generation == self.generation {
            Ok(state)
        } else {
            Err(FaultyStorage::fenced(op, self.path()))
        }
    }

    /// Records how to undo a change that cuts or overwrites the bytes
    /// `position..end` of the file (`end` may lie past its end).
    fn record(
        &self,
        state: &mut State,
        position: u64,
        end: u64,
        written: Option<usize>,
    ) -> Result<()> {
        let old_len = self.inner.len()?;
        let mut pre_image = vec![0u8; to_usize(end.min(old_len).saturating_sub(position))];
        self.inner.read_exact_at(&mut pre_image, position)?;
        let seq = state.next_seq;
        state.next_seq += 1;
        state
            .journals
            .get_mut(&self.id)
            .expect("journal of an open file")
            .undo
            .push(Undo {
                seq,
                old_len,
                position,
                pre_image,
                written,
            });
        Ok(())
    }
}

impl StorageFile for FaultyFile {
    fn path(&self) -> &Path {
        self.inner.path()
    }

    fn write_all_at(&self, buf: &[u8], position: u64) -> Result<()> {
        let mut state = self.alive("write")?;
        let fault = state.count(FaultOp::Write);
        let buf = &buf[..fault.map_or(buf.len(), |f| f.partial.min(buf.len()))];
        if !buf.is_empty() {
            self.record(
                &mut state,
                position,
                position + buf.len() as u64,
                Some(buf.len()),
            )?;
            self.inner.write_all_at(buf, position)?;
        }
        match fault {
            Some(f) => Err(Error::io("write", self.path(), f.kind.to_io())),
            None => Ok(()),
        }
    }

    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> Result<()> {
        let _state = self.alive("read")?;
        self.inner.read_exact_at(buf, position)
    }

    fn sync(&self) -> Result<()> {
        let mut state = self.alive("fsync")?;
        if let Some(f) = state.count(FaultOp::Sync) {
            return Err(Error::io("fsync", self.path(), f.kind.to_io()));
        }
        self.inner.sync()?;
        state
            .journals
            .get_mut(&self.id)
            .expect("journal of an open file")
            .undo
            .clear();
        Ok(())
    }

    fn len(&self) -> Result<u64> {
        let _state = self.alive("stat")?;
        self.inner.len()
    }

    fn set_len(&self, len: u64) -> Result<()> {
        let mut state = self.alive("set_len")?;
        if let Some(f) = state.count(FaultOp::SetLen) {
            return Err(Error::io("set_len", self.path(), f.kind.to_io()));
        }
        self.record(&mut state, len, u64::MAX, None)?;
        self.inner.set_len(len)
    }

    fn map(&self, len: usize) -> Result<Arc<ReadMap>> {
        let _state = self.alive("mmap")?;
        self.inner.map(len)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::storage::write_atomic;

    fn io_parts(err: Error) -> (&'static str, io::Error) {
        match err {
            Error::Io { op, source, .. } => (op, source),
            other => panic!("expected an I/O error, got {other}"),
        }
    }

    fn read(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    #[test]
    fn nth_faults_fail_once_with_their_kind_and_are_counted() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let storage = FaultyStorage::new();
        let path = dir.path().join("f");
        let file = storage.open(&path, OpenMode::CreateNew)?;
        assert_eq!(storage.op_count(FaultOp::Create), 1);

        storage.fail_nth(FaultOp::Write, 2, FaultKind::Enospc);
        file.write_all_at(b"a", 0)?;
        let (op, source) = io_parts(file.write_all_at(b"b", 1).unwrap_err());
        assert_eq!(op, "write");
        assert_eq!(source.kind(), io::ErrorKind::StorageFull);
        assert_eq!(source.raw_os_error(), Some(28));
        file.write_all_at(b"c", 1)?;
        assert_eq!(read(&path), b"ac"); // the failed write wrote nothing
        assert_eq!(storage.op_count(FaultOp::Write), 3);

        storage.fail_nth(FaultOp::Sync, 1, FaultKind::Eio);
        let (op, source) = io_parts(file.sync().unwrap_err());
        assert_eq!((op, source.raw_os_error()), ("fsync", Some(5)));
        file.sync()?;
        assert_eq!(storage.op_count(FaultOp::Sync), 2);

        let calls: [(FaultOp, &dyn Fn() -> Result<()>); 5] = [
            (FaultOp::SetLen, &|| file.set_len(9)),
            (FaultOp::SyncDir, &|| storage.sync_dir(dir.path())),
            (FaultOp::Rename, &|| {
                storage.rename(&path, &dir.path().join("g"))
            }),
            (FaultOp::Remove, &|| {
                storage.remove_file(&dir.path().join("none"))
            }),
            (FaultOp::Create, &|| {
                storage
                    .open(&dir.path().join("h"), OpenMode::CreateOrOpen)
                    .map(drop)
            }),
        ];
        for (op, call) in calls {
            let before = storage.op_count(op);
            storage.fail_nth(op, 1, FaultKind::Eio);
            assert!(call().is_err(), "{op:?} did not fail");
            call()?;
            assert_eq!(storage.op_count(op), before + 2, "{op:?}");
        }
        Ok(())
    }

    #[test]
    fn fail_all_from_now_until_cleared() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let storage = FaultyStorage::new();
        let file = storage.open(&dir.path().join("f"), OpenMode::CreateNew)?;
        storage.fail_all_from_now(FaultOp::Sync, FaultKind::Enospc);
        for _ in 0..3 {
            assert!(file.sync().is_err());
        }
        file.write_all_at(b"x", 0)?; // other ops are unaffected
        storage.clear_faults();
        file.sync()?;
        Ok(())
    }

    #[test]
    fn partial_write_is_unsynced_and_lost_on_crash() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let storage = FaultyStorage::new();
        let path = dir.path().join("f");
        let file = storage.open(&path, OpenMode::CreateNew)?;
        file.write_all_at(b"base", 0)?;
        file.sync()?;
        storage.fail_nth_partial_write(1, FaultKind::Eio, 3);
        assert!(file.write_all_at(b"123456", 2).is_err());
        assert_eq!(read(&path), b"ba123");
        storage.crash(Tear::None)?;
        assert_eq!(read(&path), b"base");
        Ok(())
    }

    #[test]
    fn crash_fences_old_handles_and_keeps_old_maps() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let storage = FaultyStorage::new();
        let path = dir.path().join("f");
        let file = storage.open(&path, OpenMode::CreateNew)?;
        file.write_all_at(b"durable", 0)?;
        file.sync()?;
        file.write_all_at(b" and volatile", 7)?;
        let map = file.map(20)?;
        let bytes = crate::storage::slice_bytes(&map, 8..11);
        storage.crash(Tear::None)?;

        assert_eq!(map.as_slice(), b"durable and volatile");
        assert_eq!(&bytes[..], b"and");
        let mut buf = [0u8; 1];
        for err in [
            file.write_all_at(b"x", 0).unwrap_err(),
            file.read_exact_at(&mut buf, 0).unwrap_err(),
            file.sync().unwrap_err(),
            file.len().unwrap_err(),
            file.set_len(0).unwrap_err(),
            file.map(1).unwrap_err(),
        ] {
            assert!(matches!(err, Error::Io { .. }), "{err}");
        }
        let reopened = storage.open(&path, OpenMode::Existing)?;
        assert_eq!(reopened.len()?, 7);
        reopened.write_all_at(b"!", 7)?;
        reopened.sync()?;
        assert_eq!(read(&path), b"durable!");
        Ok(())
    }

    #[test]
    fn torn_write_keeps_exactly_the_prefix() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let storage = FaultyStorage::new();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let fa = storage.open(&a, OpenMode::CreateNew)?;
        let fb = storage.open(&b, OpenMode::CreateNew)?;
        fa.write_all_at(b"AAAA", 0)?;
        fa.sync()?;
        fb.write_all_at(b"bbbb", 0)?;
        fa.write_all_at(b"xyz", 2)?; // earlier unsynced write to a: lost
        fa.write_all_at(b"0123456789", 4)?; // most recent write: torn
        storage.crash(Tear::KeepPrefix(3))?;
        assert_eq!(read(&a), b"AAAA012");
        assert_eq!(read(&b), b"");

        let fa = storage.open(&a, OpenMode::Existing)?;
        fa.write_all_at(b"zz", 10)?;
        storage.crash(Tear::Random(7))?;
        let torn = read(&a);
        assert!(torn == b"AAAA012" || torn.len() > 10, "{torn:?}");
        assert!(b"AAAA012\0\0\0zz".starts_with(&torn));
        Ok(())
    }

    #[test]
    fn journals_follow_renames_and_forget_removed_files() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let storage = FaultyStorage::new();
        let target = dir.path().join("checkpoint");
        write_atomic(&storage, &target, b"v1")?;
        let moved = dir.path().join("moved");
        let file = storage.open(&moved, OpenMode::CreateNew)?;
        file.write_all_at(b"unsynced", 0)?;
        storage.rename(&moved, &dir.path().join("sub-renamed"))?;
        let gone = storage.open(&dir.path().join("gone"), OpenMode::CreateNew)?;
        gone.write_all_at(b"x", 0)?;
        storage.remove_file(&dir.path().join("gone"))?;
        storage.crash(Tear::None)?;
        assert_eq!(read(&target), b"v1");
        assert_eq!(read(&dir.path().join("sub-renamed")), b"");
        assert!(!storage.exists(&dir.path().join("gone")));
        Ok(())
    }

    #[derive(Debug, Clone)]
    enum Op {
        Write {
            file: usize,
            position: u64,
            data: Vec<u8>,
        },
        SetLen {
            file: usize,
            len: u64,
        },
        Sync {
            file: usize,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..2usize, 0..64u64, prop::collection::vec(any::<u8>(), 1..20))
                .prop_map(|(file, position, data)| Op::Write { file, position, data }),
            1 => (0..2usize, 0..80u64).prop_map(|(file, len)| Op::SetLen { file, len }),
            1 => (0..2usize).prop_map(|file| Op::Sync { file }),
        ]
    }

    fn apply(content: &mut Vec<u8>, op: &Op) {
        match op {
            Op::Write { position, data, .. } => {
                let start = *position as usize;
                if content.len() < start + data.len() {
                    content.resize(start + data.len(), 0);
                }
                content[start..start + data.len()].copy_from_slice(data);
            }
            Op::SetLen { len, .. } => content.resize(*len as usize, 0),
            Op::Sync { .. } => {}
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn crash_restores_the_last_synced_content(
            ops in prop::collection::vec(op(), 0..40),
            keep in prop::option::of(0usize..25),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let storage = FaultyStorage::new();
            let paths = [dir.path().join("0.log"), dir.path().join("1.index")];
            let files = [
                storage.open(&paths[0], OpenMode::CreateNew)?,
                storage.open(&paths[1], OpenMode::CreateNew)?,
            ];
            let mut current = [Vec::new(), Vec::new()];
            let mut synced = [Vec::new(), Vec::new()];
            // Writes not covered by a later sync of their file, in order.
            let mut unsynced_writes: Vec<&Op> = Vec::new();
            for op in &ops {
                match op {
                    Op::Write { file, position, data } => {
                        files[*file].write_all_at(data, *position)?;
                        unsynced_writes.push(op);
                    }
                    Op::SetLen { file, len } => files[*file].set_len(*len)?,
                    Op::Sync { file } => {
                        files[*file].sync()?;
                        synced[*file] = current[*file].clone();
                        unsynced_writes.retain(|w| !matches!(w, Op::Write { file: f, .. } if f == file));
                    }
                }
                let file = match op {
                    Op::Write { file, .. } | Op::SetLen { file, .. } | Op::Sync { file } => *file,
                };
                apply(&mut current[file], op);
                prop_assert_eq!(&read(&paths[file]), &current[file]);
            }
            storage.crash(keep.map_or(Tear::None, Tear::KeepPrefix))?;
            let mut expected = synced;
            if let (Some(keep @ 1..), Some(Op::Write { file, position, data })) = (keep, unsynced_writes.last()) {
                let torn = Op::Write {
                    file: *file,
                    position: *position,
                    data: data[..keep.min(data.len())].to_vec(),
                };
                apply(&mut expected[*file], &torn);
            }
            for (path, expected) in paths.iter().zip(&expected) {
                prop_assert_eq!(&read(path), expected);
            }
        }
    }
}
