//! A storage whose every operation can be made to fail at once: the
//! broker's log directory failing ([`Cluster::fail_disk`](crate::Cluster::fail_disk)).
//!
//! [`FailableStorage`] wraps another [`Storage`] and hands out files that
//! wrap the inner ones. They all share one [`DiskSwitch`]: once it is
//! thrown, every call of the storage and of every file it handed out —
//! before or after the switch — fails with [`crate::Error::Io`] (`EIO`,
//! "log directory failed (fail_disk)"), as a dead disk answers. Memory
//! maps made before keep reading: their pages are in memory, as Kafka's
//! mmaps of a failed directory are. Before the switch every call goes
//! straight through; a call costs one atomic load more.
//!
//! In tests a [`WriteGate`] can also park a write halfway (the first half
//! of its bytes written, the rest not yet) until the test releases it, to
//! show what other threads see of a write in progress.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};
use crate::storage::file::{DirLock, OpenMode, Storage, StorageFile};
use crate::storage::mmap::ReadMap;

/// What a failed disk answers (Linux's `EIO`).
const EIO: i32 = 5;

/// The message of every error after the switch.
const FAILED: &str = "log directory failed (fail_disk)";

/// The switch shared by a [`FailableStorage`] and its files: off until
/// [`DiskSwitch::fail`], and never back (a replaced disk is a new storage).
#[derive(Debug, Clone, Default)]
pub(crate) struct DiskSwitch(Arc<AtomicBool>);

impl DiskSwitch {
    /// Fails every later I/O through the storage and its files.
    pub(crate) fn fail(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether the disk failed.
    pub(crate) fn is_failed(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// `Ok` while the disk works; the failed disk's error for `op` on
    /// `path` once it failed.
    fn check(&self, op: &'static str, path: &Path) -> Result<()> {
        if self.is_failed() {
            Err(failed(op, path))
        } else {
            Ok(())
        }
    }
}

/// The error of `op` on `path` on a failed disk: `EIO`, with a message that
/// says why.
fn failed(op: &'static str, path: &Path) -> Error {
    let eio = io::Error::from_raw_os_error(EIO);
    Error::io(
        op,
        path,
        io::Error::new(eio.kind(), format!("{FAILED}: {eio}")),
    )
}

/// A [`Storage`] that fails every operation once its [`DiskSwitch`] is
/// thrown (see the module documentation).
#[derive(Debug)]
pub(crate) struct FailableStorage {
    inner: Arc<dyn Storage>,
    switch: DiskSwitch,
    #[cfg(test)]
    gate: Option<WriteGate>,
}

impl FailableStorage {
    /// Wraps `inner`, working until `switch` is thrown.
    pub(crate) fn new(inner: Arc<dyn Storage>, switch: DiskSwitch) -> Self {
        FailableStorage {
            inner,
            switch,
            #[cfg(test)]
            gate: None,
        }
    }

    /// [`FailableStorage::new`] whose files' writes pass `gate`.
    #[cfg(test)]
    pub(crate) fn with_gate(inner: Arc<dyn Storage>, switch: DiskSwitch, gate: WriteGate) -> Self {
        FailableStorage {
            inner,
            switch,
            gate: Some(gate),
        }
    }
}

/// A test's hold on writes: once [`armed`](WriteGate::arm) for a file
/// name suffix, the next write to such a file writes the first half of its
/// bytes, then parks its thread until [`WriteGate::release`], then writes
/// the rest. [`WriteGate::wait_parked`] waits for a write to park. No
/// sleeps: threads wait on a condition variable.
#[cfg(test)]
#[derive(Debug, Clone, Default)]
pub(crate) struct WriteGate(Arc<(parking_lot::Mutex<GateState>, parking_lot::Condvar)>);

#[cfg(test)]
#[derive(Debug, Default)]
struct GateState {
    /// The suffix of the file names whose next write parks.
    armed: Option<&'static str>,
    /// Whether a write is parked (its first half written).
    parked: bool,
    /// Whether the parked write may go on.
    released: bool,
}

#[cfg(test)]
impl WriteGate {
    /// Parks the next write to a file whose name ends with `suffix`.
    pub(crate) fn arm(&self, suffix: &'static str) {
        let mut state = self.0.0.lock();
        *state = GateState {
            armed: Some(suffix),
            ..GateState::default()
        };
    }

    /// Waits until a write is parked halfway.
    pub(crate) fn wait_parked(&self) {
        let (lock, changed) = &*self.0;
        let mut state = lock.lock();
        while !state.parked {
            changed.wait(&mut state);
        }
    }

    /// Lets the parked write (or the next one to park) finish.
    pub(crate) fn release(&self) {
        let (lock, changed) = &*self.0;
        lock.lock().released = true;
        changed.notify_all();
    }

    /// Writes `buf` at `position` through `write`, parking halfway if the
    /// gate is armed for `path` (and disarming it).
    fn write(
        &self,
        path: &Path,
        buf: &[u8],
        position: u64,
        write: impl Fn(&[u8], u64) -> Result<()>,
    ) -> Result<()> {
        let (lock, changed) = &*self.0;
        let matches = {
            let mut state = lock.lock();
            let matches = state
                .armed
                .is_some_and(|suffix| path.to_string_lossy().ends_with(suffix));
            if matches {
                state.armed = None;
            }
            matches
        };
        if !matches || buf.len() < 2 {
            return write(buf, position);
        }
        let half = buf.len() / 2;
        write(&buf[..half], position)?;
        let mut state = lock.lock();
        state.parked = true;
        changed.notify_all();
        while !state.released {
            changed.wait(&mut state);
        }
        drop(state);
        write(&buf[half..], position + half as u64)
    }
}

impl Storage for FailableStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> Result<Arc<dyn StorageFile>> {
        self.switch.check("open", path)?;
        let inner = self.inner.open(path, mode)?;
        Ok(Arc::new(FailableFile {
            inner,
            switch: self.switch.clone(),
            #[cfg(test)]
            gate: self.gate.clone(),
        }))
    }

    fn create_dir_all(&self, path: &Path) -> Result<()> {
        self.switch.check("create_dir_all", path)?;
        self.inner.create_dir_all(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.switch.check("rename", from)?;
        self.inner.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> Result<()> {
        self.switch.check("remove_file", path)?;
        self.inner.remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> Result<()> {
        self.switch.check("remove_dir_all", path)?;
        self.inner.remove_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> Result<Vec<PathBuf>> {
        self.switch.check("list_dir", path)?;
        self.inner.list_dir(path)
    }

    /// `false` once the disk failed: what `Path::exists` (and so
    /// [`StdStorage`](crate::storage::StdStorage)) answers when the
    /// `stat` fails.
    fn exists(&self, path: &Path) -> bool {
        !self.switch.is_failed() && self.inner.exists(path)
    }

    fn sync_dir(&self, path: &Path) -> Result<()> {
        self.switch.check("sync_dir", path)?;
        self.inner.sync_dir(path)
    }

    fn lock_dir(&self, dir: &Path) -> Result<DirLock> {
        self.switch.check("lock_dir", dir)?;
        self.inner.lock_dir(dir)
    }
}

/// A file of a [`FailableStorage`]: fails every call once the switch is
/// thrown, whenever it was opened.
#[derive(Debug)]
struct FailableFile {
    inner: Arc<dyn StorageFile>,
    switch: DiskSwitch,
    #[cfg(test)]
    gate: Option<WriteGate>,
}

impl StorageFile for FailableFile {
    fn path(&self) -> &Path {
        self.inner.path()
    }

    fn write_all_at(&self, buf: &[u8], position: u64) -> Result<()> {
        self.switch.check("write", self.inner.path())?;
        #[cfg(test)]
        if let Some(gate) = &self.gate {
            return gate.write(self.inner.path(), buf, position, |buf, position| {
                self.inner.write_all_at(buf, position)
            });
        }
        self.inner.write_all_at(buf, position)
    }

    fn write_all_vectored_at(&self, bufs: &[&[u8]], position: u64) -> Result<()> {
        self.switch.check("write", self.inner.path())?;
        #[cfg(test)]
        if let Some(gate) = &self.gate {
            // The gate parks a write of the concatenation halfway.
            return gate.write(
                self.inner.path(),
                &bufs.concat(),
                position,
                |buf, position| self.inner.write_all_at(buf, position),
            );
        }
        self.inner.write_all_vectored_at(bufs, position)
    }

    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> Result<()> {
        self.switch.check("read", self.inner.path())?;
        self.inner.read_exact_at(buf, position)
    }

    fn sync(&self) -> Result<()> {
        self.switch.check("fsync", self.inner.path())?;
        self.inner.sync()
    }

    fn len(&self) -> Result<u64> {
        self.switch.check("len", self.inner.path())?;
        self.inner.len()
    }

    fn set_len(&self, len: u64) -> Result<()> {
        self.switch.check("set_len", self.inner.path())?;
        self.inner.set_len(len)
    }

    fn map(&self, len: usize) -> Result<Arc<ReadMap>> {
        self.switch.check("mmap", self.inner.path())?;
        self.inner.map(len)
    }

    fn reserve(&self, position: u64, len: u64) -> Result<bool> {
        self.switch.check("fallocate", self.inner.path())?;
        self.inner.reserve(position, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StdStorage;

    fn is_failed_disk(e: &Error) -> bool {
        matches!(e, Error::Io { source, .. }
            if source.kind() == io::Error::from_raw_os_error(EIO).kind()
                && source.to_string().contains(FAILED))
    }

    fn setup() -> (tempfile::TempDir, FailableStorage, DiskSwitch) {
        let dir = tempfile::tempdir().unwrap();
        let switch = DiskSwitch::default();
        let storage = FailableStorage::new(Arc::new(StdStorage), switch.clone());
        (dir, storage, switch)
    }

    #[test]
    fn everything_works_until_the_switch_and_fails_after_it() {
        let (dir, storage, switch) = setup();
        let sub = dir.path().join("p-0");
        storage.create_dir_all(&sub).unwrap();
        let path = sub.join("a.log");
        let file = storage.open(&path, OpenMode::CreateNew).unwrap();
        file.write_all_at(b"hello", 0).unwrap();
        file.sync().unwrap();
        let map = file.map(5).unwrap();
        let mut buf = [0; 5];
        file.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"hello");
        assert_eq!(file.len().unwrap(), 5);
        storage.sync_dir(&sub).unwrap();
        assert!(storage.exists(&path));
        assert_eq!(storage.list_dir(&sub).unwrap(), vec![path.clone()]);
        assert!(!switch.is_failed(), "nothing failed before the switch");

        switch.fail();
        assert!(switch.is_failed());
        // The file opened before the switch fails too, every call of it.
        let file_errors = [
            file.write_all_at(b"x", 5).unwrap_err(),
            file.write_all_vectored_at(&[b"x", b"y"], 5).unwrap_err(),
            file.read_exact_at(&mut buf, 0).unwrap_err(),
            file.sync().unwrap_err(),
            file.len().unwrap_err(),
            file.set_len(0).unwrap_err(),
            file.map(5).unwrap_err(),
        ];
        let other = sub.join("b.log");
        let storage_errors = [
            storage.open(&path, OpenMode::Existing).unwrap_err(),
            storage.open(&other, OpenMode::CreateNew).unwrap_err(),
            storage.create_dir_all(&dir.path().join("q-0")).unwrap_err(),
            storage.rename(&path, &other).unwrap_err(),
            storage.remove_file(&path).unwrap_err(),
            storage.remove_dir_all(&sub).unwrap_err(),
            storage.list_dir(&sub).unwrap_err(),
            storage.sync_dir(&sub).unwrap_err(),
            storage.lock_dir(&sub).unwrap_err(),
        ];
        for e in file_errors.iter().chain(&storage_errors) {
            assert!(is_failed_disk(e), "{e}");
        }
        assert!(
            file_errors[0].to_string().contains("a.log"),
            "{}",
            file_errors[0]
        );
        assert!(!storage.exists(&path), "a failed disk's stat fails");
        assert_eq!(file.path(), path, "the path is no I/O");
        // A map made before keeps reading.
        assert_eq!(map.as_slice(), b"hello");
        // Nothing changed on the disk underneath.
        assert_eq!(std::fs::read(&path).unwrap(), b"hello");
        assert!(!other.exists());
        assert!(!dir.path().join("q-0").exists());
    }

    #[test]
    fn one_switch_fails_only_its_own_storage() {
        let (dir, storage, switch) = setup();
        let healthy = FailableStorage::new(Arc::new(StdStorage), DiskSwitch::default());
        let path = dir.path().join("c");
        let file = healthy.open(&path, OpenMode::CreateNew).unwrap();
        switch.fail();
        assert!(storage.open(&path, OpenMode::Existing).is_err());
        file.write_all_at(b"still", 0).unwrap();
        file.sync().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"still");
    }
}
