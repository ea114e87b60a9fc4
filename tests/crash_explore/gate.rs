//! A `Storage` over a shared `FaultyStorage` that stands for one process:
//! once [`Gate::crash`] has run, the process is dead and nothing it does
//! reaches the files any more.
//!
//! After the crash, `sync` and `sync_dir` of the dead process succeed
//! without doing anything and every other call fails. So the dead
//! objects, dropped after the crash, neither touch the files the next
//! "process" opens nor record an fsync failure (a failed fsync is
//! remembered process-wide and would cut the next open: fsyncgate
//! handling, which a power loss does not call for).
//!
//! The gate is a read-write lock: every call holds it shared for its
//! whole duration, and the crash takes it exclusively, so the power loss
//! falls between two calls of any thread, never inside one.
//!
//! A gate can also carry a deliberate [`Bug`] (for the self-test that the
//! explorer catches acknowledged data that was never made durable).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};

use logbus::{
    DirLock, Error, FaultyStorage, OpenMode, PowerLossReport, ReadMap, Result, Storage, StorageFile,
};

/// A deliberate durability bug a gate can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bug {
    /// None: the storage behaves.
    None,
    /// `sync` of segment log files (`*.log`) succeeds without syncing.
    SkipLogSync,
    /// `sync_dir` succeeds without syncing.
    SkipDirSync,
}

#[derive(Debug)]
struct GateState {
    dead: RwLock<bool>,
    bug: Bug,
    /// While set (to the thread that set it), `sync` of segment log files
    /// from any other thread waits (outside the gate) until it is cleared:
    /// a background flush held up for as long as a test needs, while the
    /// test's own thread syncs freely.
    held: Mutex<Option<std::thread::ThreadId>>,
    released: Condvar,
}

/// One process's view of the shared files.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    inner: FaultyStorage,
    state: Arc<GateState>,
}

fn dead_error(op: &'static str, path: &Path) -> Error {
    Error::Io {
        op,
        path: path.to_path_buf(),
        source: io::Error::other("the process died in a simulated power loss"),
    }
}

impl Gate {
    /// A live process over `inner`.
    pub(crate) fn new(inner: &FaultyStorage, bug: Bug) -> Self {
        Gate {
            inner: inner.clone(),
            state: Arc::new(GateState {
                dead: RwLock::new(false),
                bug,
                held: Mutex::new(None),
                released: Condvar::new(),
            }),
        }
    }

    /// Waits for every call in progress, kills the process and loses power
    /// (`FaultyStorage::power_loss(seed)`), all while no call can start.
    /// Held syncs are let go afterwards (and do nothing: the process is
    /// dead).
    pub(crate) fn crash(&self, seed: u64) -> Result<PowerLossReport> {
        let report = {
            let mut dead = self
                .state
                .dead
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *dead = true;
            self.inner.power_loss(seed)
        };
        self.release_syncs();
        report
    }

    /// Holds the log's background work until
    /// [`release_syncs`](Self::release_syncs) or a crash: every `sync` of a
    /// segment log file (`*.log`) and every creation of a spare segment
    /// file (`*.spare`) made by another thread than this one. A held spare
    /// keeps the jobs queued behind it (the flush after a roll) from
    /// starting at all.
    pub(crate) fn hold_log_syncs(&self) {
        *self
            .state
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(std::thread::current().id());
    }

    pub(crate) fn release_syncs(&self) {
        *self
            .state
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        self.state.released.notify_all();
    }

    /// Waits while work on `path` (a log file's sync, a spare's creation)
    /// is held.
    fn wait_if_held(&self, path: &Path) {
        if path.extension().is_none_or(|e| e != "log" && e != "spare") {
            return;
        }
        let mut held = self
            .state
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let me = std::thread::current().id();
        while held.is_some_and(|holder| holder != me) {
            held = self
                .state
                .released
                .wait(held)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Kills the process without a power loss (a process crash: the page
    /// cache keeps everything written).
    pub(crate) fn kill(&self) {
        *self
            .state
            .dead
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        self.release_syncs();
    }

    /// Runs `f` while the process is alive, holding the gate shared.
    fn alive<T>(
        &self,
        when_dead: impl FnOnce() -> Result<T>,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let dead = self
            .state
            .dead
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *dead { when_dead() } else { f() }
    }
}

impl Storage for Gate {
    fn open(&self, path: &Path, mode: OpenMode) -> Result<Arc<dyn StorageFile>> {
        if mode != OpenMode::Existing {
            self.wait_if_held(path);
        }
        self.alive(
            || Err(dead_error("open", path)),
            || {
                let file = self.inner.open(path, mode)?;
                Ok(Arc::new(GateFile {
                    inner: file,
                    gate: self.clone(),
                }) as Arc<dyn StorageFile>)
            },
        )
    }

    fn create_dir_all(&self, path: &Path) -> Result<()> {
        self.alive(
            || Err(dead_error("create_dir_all", path)),
            || self.inner.create_dir_all(path),
        )
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.alive(
            || Err(dead_error("rename", from)),
            || self.inner.rename(from, to),
        )
    }

    fn remove_file(&self, path: &Path) -> Result<()> {
        self.alive(
            || Err(dead_error("remove_file", path)),
            || self.inner.remove_file(path),
        )
    }

    fn remove_dir_all(&self, path: &Path) -> Result<()> {
        self.alive(
            || Err(dead_error("remove_dir_all", path)),
            || self.inner.remove_dir_all(path),
        )
    }

    fn list_dir(&self, path: &Path) -> Result<Vec<PathBuf>> {
        self.alive(
            || Err(dead_error("list_dir", path)),
            || self.inner.list_dir(path),
        )
    }

    fn exists(&self, path: &Path) -> bool {
        self.alive(|| Ok(false), || Ok(self.inner.exists(path)))
            .unwrap_or(false)
    }

    fn sync_dir(&self, path: &Path) -> Result<()> {
        self.alive(
            || Ok(()),
            || {
                if self.state.bug == Bug::SkipDirSync {
                    Ok(())
                } else {
                    self.inner.sync_dir(path)
                }
            },
        )
    }

    fn lock_dir(&self, dir: &Path) -> Result<DirLock> {
        self.alive(
            || Err(dead_error("lock_dir", dir)),
            || self.inner.lock_dir(dir),
        )
    }
}

/// A file opened through a [`Gate`].
#[derive(Debug)]
struct GateFile {
    inner: Arc<dyn StorageFile>,
    gate: Gate,
}

impl StorageFile for GateFile {
    fn path(&self) -> &Path {
        self.inner.path()
    }

    fn write_all_at(&self, buf: &[u8], position: u64) -> Result<()> {
        let path = self.inner.path();
        self.gate.alive(
            || Err(dead_error("write", path)),
            || self.inner.write_all_at(buf, position),
        )
    }

    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> Result<()> {
        let path = self.inner.path();
        self.gate.alive(
            || Err(dead_error("read", path)),
            || self.inner.read_exact_at(buf, position),
        )
    }

    fn sync(&self) -> Result<()> {
        let path = self.inner.path();
        self.gate.wait_if_held(path);
        self.gate.alive(
            || Ok(()),
            || {
                let skip = self.gate.state.bug == Bug::SkipLogSync
                    && path.extension().is_some_and(|e| e == "log");
                if skip { Ok(()) } else { self.inner.sync() }
            },
        )
    }

    fn len(&self) -> Result<u64> {
        let path = self.inner.path();
        self.gate
            .alive(|| Err(dead_error("len", path)), || self.inner.len())
    }

    fn set_len(&self, len: u64) -> Result<()> {
        let path = self.inner.path();
        self.gate.alive(
            || Err(dead_error("set_len", path)),
            || self.inner.set_len(len),
        )
    }

    fn map(&self, len: usize) -> Result<Arc<ReadMap>> {
        let path = self.inner.path();
        self.gate
            .alive(|| Err(dead_error("map", path)), || self.inner.map(len))
    }
}
