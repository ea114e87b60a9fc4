//! A storage that passes every call to another one and lets a test watch,
//! or hold, what happens to the files it picks: the writes and fsyncs of a
//! partition's `.log` files, the directories synced.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use logbus::{DirLock, OpenMode, ReadMap, Result, Storage, StorageFile};

/// What a [`HookedStorage`] calls around the operations of the files
/// [`FileHooks::wraps`] picks (every other call only passes through).
pub(crate) trait FileHooks: std::fmt::Debug + Send + Sync + 'static {
    /// Whether the file at `path` is watched.
    fn wraps(&self, path: &Path) -> bool;
    /// Before a write of `bufs` (one buffer, or a vectored write's pieces).
    fn before_write(&self, _path: &Path, _bufs: &[&[u8]]) {}
    /// After a write of `bytes` bytes succeeded.
    fn after_write(&self, _path: &Path, _bytes: usize) {}
    /// Before an fsync (it may wait here, to hold the fsync).
    fn before_sync(&self, _path: &Path) {}
    /// After an fsync succeeded.
    fn after_sync(&self, _path: &Path) {}
    /// Before a directory's fsync (every directory, watched or not).
    fn before_sync_dir(&self, _path: &Path) {}
}

/// A [`Storage`] over `inner` that calls `hooks` around the watched files'
/// operations.
#[derive(Debug)]
pub(crate) struct HookedStorage<H: FileHooks> {
    inner: Arc<dyn Storage>,
    hooks: Arc<H>,
}

impl<H: FileHooks> HookedStorage<H> {
    pub(crate) fn new(inner: Arc<dyn Storage>, hooks: Arc<H>) -> Self {
        HookedStorage { inner, hooks }
    }
}

impl<H: FileHooks> Storage for HookedStorage<H> {
    fn open(&self, path: &Path, mode: OpenMode) -> Result<Arc<dyn StorageFile>> {
        let file = self.inner.open(path, mode)?;
        if !self.hooks.wraps(path) {
            return Ok(file);
        }
        Ok(Arc::new(HookedFile {
            inner: file,
            hooks: Arc::clone(&self.hooks),
        }))
    }
    fn create_dir_all(&self, path: &Path) -> Result<()> {
        self.inner.create_dir_all(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> Result<()> {
        self.inner.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> Result<()> {
        self.inner.remove_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> Result<Vec<PathBuf>> {
        self.inner.list_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
    fn sync_dir(&self, path: &Path) -> Result<()> {
        self.hooks.before_sync_dir(path);
        self.inner.sync_dir(path)
    }
    fn lock_dir(&self, dir: &Path) -> Result<DirLock> {
        self.inner.lock_dir(dir)
    }
}

#[derive(Debug)]
struct HookedFile<H: FileHooks> {
    inner: Arc<dyn StorageFile>,
    hooks: Arc<H>,
}

impl<H: FileHooks> StorageFile for HookedFile<H> {
    fn path(&self) -> &Path {
        self.inner.path()
    }
    fn write_all_at(&self, buf: &[u8], position: u64) -> Result<()> {
        self.hooks.before_write(self.path(), &[buf]);
        self.inner.write_all_at(buf, position)?;
        self.hooks.after_write(self.path(), buf.len());
        Ok(())
    }
    fn write_all_vectored_at(&self, bufs: &[&[u8]], position: u64) -> Result<()> {
        self.hooks.before_write(self.path(), bufs);
        self.inner.write_all_vectored_at(bufs, position)?;
        self.hooks
            .after_write(self.path(), bufs.iter().map(|b| b.len()).sum());
        Ok(())
    }
    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> Result<()> {
        self.inner.read_exact_at(buf, position)
    }
    fn sync(&self) -> Result<()> {
        self.hooks.before_sync(self.path());
        self.inner.sync()?;
        self.hooks.after_sync(self.path());
        Ok(())
    }
    fn len(&self) -> Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> Result<()> {
        self.inner.set_len(len)
    }
    fn map(&self, len: usize) -> Result<Arc<ReadMap>> {
        self.inner.map(len)
    }
    fn reserve(&self, position: u64, len: u64) -> Result<bool> {
        self.inner.reserve(position, len)
    }
}
