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

/// A [`Log`](crate::Log) over a [`WriteGate`]: what readers and other
/// writers see while an append's write to the active segment is parked
/// halfway (issue 13: readers never wait behind a writer).
#[cfg(test)]
mod read_during_append {
    use std::sync::Arc;
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    use super::{DiskSwitch, FailableStorage, WriteGate};
    use crate::error::Error;
    use crate::format::BatchBuilder;
    use crate::log::{Log, LogRead};
    use crate::storage::StdStorage;
    use crate::types::Compression;

    /// A deadlock watchdog, not a timing assertion: a read that waited for
    /// the parked append would wait forever.
    const WATCHDOG: Duration = Duration::from_secs(300);

    fn open(dir: &std::path::Path, gate: &WriteGate) -> Log {
        let storage =
            FailableStorage::with_gate(Arc::new(StdStorage), DiskSwitch::default(), gate.clone());
        Log::builder(dir).storage(Arc::new(storage)).open().unwrap()
    }

    /// A batch of `records` records, each value naming `tag`.
    fn batch(records: usize, tag: u8) -> Vec<u8> {
        let mut builder = BatchBuilder::new(Compression::None);
        for i in 0..records {
            builder.append(1_000 + i as i64, None, Some(&[tag; 200]), &[]);
        }
        builder.build().unwrap().to_vec()
    }

    /// The (base, last) offsets of the batches a read returned, each batch
    /// checked whole (CRC and records).
    fn spans(read: &LogRead) -> Vec<(i64, i64)> {
        read.batches()
            .map(|b| {
                let b = b.unwrap();
                b.validate_records().unwrap();
                (b.header().base_offset, b.header().last_offset())
            })
            .collect()
    }

    /// Runs `f` on another thread and returns its result, failing the test
    /// if it never finishes (it waited for the parked write).
    fn on_a_reader_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (done, result) = mpsc::channel();
        thread::spawn(move || done.send(f()).unwrap());
        result
            .recv_timeout(WATCHDOG)
            .expect("a reader waited for the append parked in its write")
    }

    /// Three published batches, then a fourth whose write parks halfway:
    /// reads on another thread complete meanwhile and return exactly the
    /// three, never a byte of the fourth; once released, the fourth reads
    /// back whole.
    fn parked_append_is_invisible(follower: bool) {
        let dir = tempfile::tempdir().unwrap();
        let gate = WriteGate::default();
        let log = Arc::new(open(&dir.path().join("t-0"), &gate));
        let mut published = Vec::new();
        for (records, tag) in [(3, 1), (5, 2), (2, 3)] {
            let info = log.append(&mut batch(records, tag), 0).unwrap();
            published.push((info.first_offset() as i64, info.last_offset() as i64));
        }
        let end = log.log_end_offset();
        assert_eq!(end, 10);
        let size = log.size_bytes();

        gate.arm(".log");
        let appender = {
            let log = Arc::clone(&log);
            thread::spawn(move || {
                let mut bytes = batch(4, 4);
                if follower {
                    crate::format::set_base_offset(&mut bytes, 10);
                    crate::format::set_partition_leader_epoch(&mut bytes, 0);
                    log.append_as_follower(&bytes)
                } else {
                    log.append(&mut bytes, 0)
                }
            })
        };
        gate.wait_parked();

        let (read, committed, tail, past, leo, bytes) = on_a_reader_thread({
            let log = Arc::clone(&log);
            move || {
                (
                    log.read(0, usize::MAX).unwrap(),
                    log.read_committed(0, usize::MAX, u64::MAX).unwrap(),
                    log.read(end, usize::MAX).unwrap(),
                    log.read(end + 1, usize::MAX),
                    log.log_end_offset(),
                    log.size_bytes(),
                )
            }
        });
        assert_eq!(spans(&read), published, "exactly the published batches");
        assert_eq!(read.records().len() as u64, size);
        assert_eq!(read.log_end_offset(), end);
        assert_eq!(spans(&committed), published);
        assert!(tail.records().is_empty(), "nothing at the published end");
        assert!(
            matches!(past, Err(Error::OffsetOutOfRange { log_end: 10, .. })),
            "{past:?}"
        );
        assert_eq!(
            (leo, bytes),
            (end, size),
            "the end and size are the published ones"
        );
        // A read from the middle ends at the published end as well.
        assert_eq!(spans(&log.read(4, usize::MAX).unwrap()), published[1..]);

        gate.release();
        let info = appender.join().unwrap().unwrap();
        assert_eq!((info.first_offset(), info.last_offset()), (10, 13));
        let read = log.read(0, usize::MAX).unwrap();
        let mut all = published.clone();
        all.push((10, 13));
        assert_eq!(spans(&read), all);
        assert_eq!(spans(&log.read(10, usize::MAX).unwrap()), [(10, 13)]);
        assert_eq!(log.log_end_offset(), 14);

        // What the appends left on disk is what a reopen finds: no damage.
        Arc::try_unwrap(log).unwrap().close().unwrap();
        let log = open(&dir.path().join("t-0"), &gate);
        assert!(log.recovery_report().truncated.is_none());
        assert_eq!(spans(&log.read(0, usize::MAX).unwrap()), all);
        log.close().unwrap();
    }

    #[test]
    fn a_read_during_a_parked_append_returns_only_the_earlier_batches() {
        parked_append_is_invisible(false);
    }

    #[test]
    fn a_read_during_a_parked_follower_append_returns_only_the_earlier_batches() {
        parked_append_is_invisible(true);
    }

    /// Appends stay serialized: a second append and a truncation started
    /// while the first is parked in its write run after it, in order, and
    /// the log holds the batches contiguously.
    #[test]
    fn writers_wait_for_a_parked_append() {
        let dir = tempfile::tempdir().unwrap();
        let gate = WriteGate::default();
        let log = Arc::new(open(&dir.path().join("t-0"), &gate));
        log.append(&mut batch(2, 1), 0).unwrap();

        gate.arm(".log");
        let first = {
            let log = Arc::clone(&log);
            thread::spawn(move || log.append(&mut batch(3, 2), 0).unwrap())
        };
        gate.wait_parked();
        let (started, started_rx) = mpsc::channel();
        let second = {
            let log = Arc::clone(&log);
            thread::spawn(move || {
                started.send(()).unwrap();
                log.append(&mut batch(4, 3), 0).unwrap()
            })
        };
        started_rx.recv().unwrap();
        // Whether or not the second append reached the lock yet, the parked
        // one is still unpublished: readers see the first batch only.
        let read = on_a_reader_thread({
            let log = Arc::clone(&log);
            move || log.read(0, usize::MAX).unwrap()
        });
        assert_eq!(spans(&read), [(0, 1)]);

        gate.release();
        let (a, b) = (first.join().unwrap(), second.join().unwrap());
        assert_eq!((a.first_offset(), a.last_offset()), (2, 4));
        assert_eq!((b.first_offset(), b.last_offset()), (5, 8));
        assert_eq!(b.position(), a.position() + a.bytes(), "written end to end");
        assert_eq!(
            spans(&log.read(0, usize::MAX).unwrap()),
            [(0, 1), (2, 4), (5, 8)]
        );

        // A truncation waits for an append parked in its write as well,
        // then cuts what it published.
        gate.arm(".log");
        let third = {
            let log = Arc::clone(&log);
            thread::spawn(move || log.append(&mut batch(1, 4), 0).unwrap())
        };
        gate.wait_parked();
        let (started, started_rx) = mpsc::channel();
        let cut = {
            let log = Arc::clone(&log);
            thread::spawn(move || {
                started.send(()).unwrap();
                log.truncate_to(5).unwrap()
            })
        };
        started_rx.recv().unwrap();
        gate.release();
        let c = third.join().unwrap();
        assert_eq!(c.first_offset(), 9);
        cut.join().unwrap();
        assert_eq!(log.log_end_offset(), 5);
        assert_eq!(spans(&log.read(0, usize::MAX).unwrap()), [(0, 1), (2, 4)]);
        let d = log.append(&mut batch(2, 5), 0).unwrap();
        assert_eq!((d.first_offset(), d.last_offset()), (5, 6));
        Arc::try_unwrap(log).unwrap().close().unwrap();
        let log = open(&dir.path().join("t-0"), &gate);
        assert!(log.recovery_report().truncated.is_none());
        assert_eq!(
            spans(&log.read(0, usize::MAX).unwrap()),
            [(0, 1), (2, 4), (5, 6)]
        );
        log.close().unwrap();
    }
}
