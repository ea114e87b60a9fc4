//! [`StdStorage`]: the file layer over the real file system.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::storage::file::{DirLock, OpenMode, Storage, StorageFile};
use crate::storage::mmap::ReadMap;

/// Name of the lock file [`Storage::lock_dir`] creates in a locked directory.
pub(crate) const LOCK_FILE: &str = ".lock";

/// The real file system: positioned I/O, `fdatasync`, directory fsync,
/// `flock`-style directory locks and read-only memory maps.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdStorage;

impl StdStorage {
    /// The real file system.
    #[must_use]
    pub fn new() -> Self {
        StdStorage
    }
}

impl Storage for StdStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> Result<Arc<dyn StorageFile>> {
        let mut options = OpenOptions::new();
        options.read(true).write(mode != OpenMode::Read);
        let op = match mode {
            OpenMode::Existing => "open",
            OpenMode::Read => "open for reading",
            OpenMode::CreateNew => {
                options.create_new(true);
                "create"
            }
            OpenMode::CreateOrOpen => {
                options.create(true);
                "open or create"
            }
        };
        let file = options.open(path).map_err(|e| Error::io(op, path, e))?;
        Ok(Arc::new(StdFile {
            file,
            path: path.to_path_buf(),
        }))
    }

    fn create_dir_all(&self, path: &Path) -> Result<()> {
        fs::create_dir_all(path).map_err(|e| Error::io("create_dir_all", path, e))
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        fs::rename(from, to).map_err(|e| Error::io("rename", from, e))
    }

    fn remove_file(&self, path: &Path) -> Result<()> {
        ok_if_missing(fs::remove_file(path)).map_err(|e| Error::io("remove_file", path, e))
    }

    fn remove_dir_all(&self, path: &Path) -> Result<()> {
        ok_if_missing(fs::remove_dir_all(path)).map_err(|e| Error::io("remove_dir_all", path, e))
    }

    fn list_dir(&self, path: &Path) -> Result<Vec<PathBuf>> {
        let read_dir = |path: &Path| -> io::Result<Vec<PathBuf>> {
            fs::read_dir(path)?
                .map(|entry| entry.map(|e| e.path()))
                .collect()
        };
        read_dir(path).map_err(|e| Error::io("read_dir", path, e))
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn sync_dir(&self, path: &Path) -> Result<()> {
        File::open(path)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| Error::io("fsync directory", path, e))
    }

    fn lock_dir(&self, dir: &Path) -> Result<DirLock> {
        let lock_path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| Error::io("open lock file", &lock_path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock::new(file, dir.to_path_buf())),
            Err(TryLockError::WouldBlock) => Err(Error::DirectoryLocked {
                path: dir.to_path_buf(),
            }),
            Err(TryLockError::Error(e)) => Err(Error::io("lock", lock_path, e)),
        }
    }
}

/// Ignores `NotFound`: removing what is already gone succeeds.
fn ok_if_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// A file of [`StdStorage`].
#[derive(Debug)]
pub(crate) struct StdFile {
    file: File,
    path: PathBuf,
}

impl StorageFile for StdFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn write_all_at(&self, buf: &[u8], position: u64) -> Result<()> {
        self.file
            .write_all_at(buf, position)
            .map_err(|e| Error::io("write", &self.path, e))
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn write_all_vectored_at(&self, bufs: &[&[u8]], position: u64) -> Result<()> {
        crate::timeline::timed(crate::timeline::Stage::FileWrite, || {
            pwritev_all(&self.file, bufs, position)
        })
        .map_err(|e| Error::io("write", &self.path, e))
    }

    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> Result<()> {
        self.file
            .read_exact_at(buf, position)
            .map_err(|e| Error::io("read", &self.path, e))
    }

    fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io("fsync", &self.path, e))
    }

    fn len(&self) -> Result<u64> {
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(|e| Error::io("stat", &self.path, e))
    }

    fn set_len(&self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .map_err(|e| Error::io("set_len", &self.path, e))
    }

    fn map(&self, len: usize) -> Result<Arc<ReadMap>> {
        ReadMap::new(&self.file, &self.path, len).map(Arc::new)
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn reserve(&self, position: u64, len: u64) -> Result<bool> {
        use rustix::fs::{FallocateFlags, fallocate};
        match fallocate(&self.file, FallocateFlags::KEEP_SIZE, position, len) {
            Ok(()) => Ok(true),
            // A file system without it (or without this mode): no hint.
            Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS) => Ok(false),
            Err(e) => Err(Error::io("fallocate", &self.path, e.into())),
        }
    }
}

/// At most this many buffers go into one `pwritev` (Linux's `IOV_MAX`).
#[cfg(any(target_os = "linux", target_os = "android"))]
const IOV_MAX: usize = 1024;

/// Writes all of `bufs`, one after the other, at `position` of `file` with
/// `pwritev`, as [`FileExt::write_all_at`] writes one buffer: a short
/// write continues where it stopped, an interrupted call is retried, and a
/// call that writes nothing is [`io::ErrorKind::WriteZero`]. More than
/// [`IOV_MAX`] buffers take a call per [`IOV_MAX`].
#[cfg(any(target_os = "linux", target_os = "android"))]
fn pwritev_all(file: &File, bufs: &[&[u8]], mut position: u64) -> io::Result<()> {
    let mut slices: Vec<io::IoSlice<'_>> = bufs
        .iter()
        .filter(|b| !b.is_empty())
        .map(|b| io::IoSlice::new(b))
        .collect();
    let mut rest = slices.as_mut_slice();
    while !rest.is_empty() {
        let count = rest.len().min(IOV_MAX);
        match rustix::io::pwritev(file, &rest[..count], position) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "failed to write whole buffer",
                ));
            }
            Ok(written) => {
                position += written as u64;
                // `written` is at most the length of the buffers passed.
                io::IoSlice::advance_slices(&mut rest, written);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{slice_bytes, write_atomic};

    #[test]
    fn a_vectored_write_writes_the_concatenation() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let file = StdStorage.open(&dir.path().join("f"), OpenMode::CreateNew)?;
        file.write_all_at(b"0123456789", 0)?;
        // Empty pieces, and more pieces than one pwritev takes.
        let pieces: Vec<Vec<u8>> = (0..2 * IOV_MAX + 7)
            .map(|i| vec![(i % 251) as u8; i % 3])
            .collect();
        let slices: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
        let joined = pieces.concat();
        file.write_all_vectored_at(&slices, 4)?;
        let mut back = vec![0; 4 + joined.len()];
        file.read_exact_at(&mut back, 0)?;
        assert_eq!(&back[..4], b"0123");
        assert_eq!(&back[4..], &joined[..]);
        assert_eq!(file.len()?, back.len() as u64);
        file.write_all_vectored_at(&[], 0)?;
        file.write_all_vectored_at(&[b"ab", b"", b"c"], 1)?;
        let mut head = [0; 5];
        file.read_exact_at(&mut head, 0)?;
        assert_eq!(head, [b'0', b'a', b'b', b'c', joined[0]]);
        Ok(())
    }

    #[test]
    fn a_vectored_write_to_a_read_only_file_fails() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        StdStorage.open(&path, OpenMode::CreateNew)?;
        let file = StdStorage.open(&path, OpenMode::Read)?;
        assert!(file.write_all_vectored_at(&[b"a", b"b"], 0).is_err());
        Ok(())
    }

    #[test]
    fn positioned_io_round_trips() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let storage = StdStorage::new();
        let path = dir.path().join("a.log");
        let file = storage.open(&path, OpenMode::CreateNew)?;
        assert_eq!(file.path(), path);
        file.write_all_at(b"hello", 0)?;
        file.write_all_at(b"world", 10)?;
        assert_eq!(file.len()?, 15);
        let mut buf = [0xffu8; 15];
        file.read_exact_at(&mut buf, 0)?;
        assert_eq!(&buf, b"hello\0\0\0\0\0world");
        file.sync()?;
        file.set_len(3)?;
        assert_eq!(file.len()?, 3);
        let err = file.read_exact_at(&mut buf, 0).unwrap_err();
        assert!(matches!(err, Error::Io { op: "read", .. }), "{err}");
        storage.sync_dir(dir.path())?;
        Ok(())
    }

    /// A reservation changes neither the length nor the contents; setting
    /// the length to itself gives the blocks back.
    #[test]
    fn a_reservation_keeps_the_length_and_set_len_gives_it_back() -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let file = StdStorage::new().open(&path, OpenMode::CreateNew)?;
        file.write_all_at(b"abc", 0)?;
        let blocks = || std::fs::metadata(&path).expect("stat").blocks() * 512;
        if !file.reserve(3, 1 << 20)? {
            return Ok(());
        }
        assert_eq!(file.len()?, 3);
        assert!(blocks() >= 1 << 20);
        let mut buf = [0; 3];
        file.read_exact_at(&mut buf, 0)?;
        assert_eq!(&buf, b"abc");
        file.set_len(3)?;
        assert!(blocks() < 1 << 20);
        assert_eq!(file.len()?, 3);
        Ok(())
    }

    #[test]
    fn open_modes_and_directory_calls() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let storage = StdStorage::new();
        let path = dir.path().join("x");
        let err = storage.open(&path, OpenMode::Existing).unwrap_err();
        match err {
            Error::Io {
                op,
                path: p,
                source,
            } => {
                assert_eq!(op, "open");
                assert_eq!(p, path);
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("unexpected {other}"),
        }
        storage
            .open(&path, OpenMode::CreateOrOpen)?
            .write_all_at(b"1", 0)?;
        assert!(storage.open(&path, OpenMode::CreateNew).is_err());
        assert_eq!(storage.open(&path, OpenMode::CreateOrOpen)?.len()?, 1);
        assert!(storage.exists(&path));

        let sub = dir.path().join("a/b");
        storage.create_dir_all(&sub)?;
        storage.open(&sub.join("f"), OpenMode::CreateNew)?;
        let moved = dir.path().join("y");
        storage.rename(&path, &moved)?;
        let mut listed = storage.list_dir(dir.path())?;
        listed.sort();
        assert_eq!(listed, vec![dir.path().join("a"), moved.clone()]);
        storage.remove_file(&moved)?;
        storage.remove_file(&moved)?; // missing is fine
        storage.remove_dir_all(&dir.path().join("a"))?;
        storage.remove_dir_all(&dir.path().join("a"))?;
        assert!(storage.list_dir(dir.path())?.is_empty());
        assert!(storage.list_dir(&dir.path().join("nope")).is_err());
        Ok(())
    }

    #[test]
    fn dir_lock_conflicts_and_releases_on_drop() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let storage = StdStorage::new();
        let lock = storage.lock_dir(dir.path())?;
        assert_eq!(lock.path(), dir.path());
        match storage.lock_dir(dir.path()) {
            Err(Error::DirectoryLocked { path }) => assert_eq!(path, dir.path()),
            other => panic!("expected DirectoryLocked, got {other:?}"),
        }
        drop(lock);
        let _again = storage.lock_dir(dir.path())?;
        Ok(())
    }

    #[test]
    fn write_atomic_replaces_content() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let storage = StdStorage::new();
        let path = dir.path().join("checkpoint");
        write_atomic(&storage, &path, b"first version, long")?;
        assert_eq!(std::fs::read(&path).unwrap(), b"first version, long");
        write_atomic(&storage, &path, b"second")?;
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        // Only the target is left behind.
        assert_eq!(storage.list_dir(dir.path())?, vec![path]);
        Ok(())
    }

    #[test]
    fn maps_see_positioned_writes_and_reject_lengths_past_the_end() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let storage = StdStorage::new();
        let file = storage.open(&dir.path().join("m"), OpenMode::CreateNew)?;
        let empty = file.map(0)?;
        assert!(empty.is_empty());
        assert_eq!(empty.as_slice(), b"");
        file.set_len(16)?;
        let map = file.map(16)?;
        assert_eq!(map.len(), 16);
        file.write_all_at(b"abc", 4)?;
        assert_eq!(&map.as_slice()[4..7], b"abc");
        assert!(file.map(17).is_err());
        Ok(())
    }

    #[test]
    fn sliced_bytes_outlive_map_file_and_name() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let storage = StdStorage::new();
        let path = dir.path().join("seg.log");
        let file = storage.open(&path, OpenMode::CreateNew)?;
        file.write_all_at(b"0123456789", 0)?;
        let map = file.map(10)?;
        let bytes = slice_bytes(&map, 2..6);
        let empty = slice_bytes(&map, 10..10);
        drop(map);
        drop(file);
        let renamed = dir.path().join("seg.log.deleted");
        storage.rename(&path, &renamed)?;
        storage.remove_file(&renamed)?;
        assert_eq!(&bytes[..], b"2345");
        assert_eq!(bytes.slice(1..3), &b"34"[..]);
        assert!(empty.is_empty());
        Ok(())
    }

    #[test]
    #[should_panic(expected = "outside a map")]
    fn slice_bytes_rejects_ranges_past_the_map() {
        let dir = tempfile::tempdir().unwrap();
        let file = StdStorage::new()
            .open(&dir.path().join("f"), OpenMode::CreateNew)
            .unwrap();
        file.write_all_at(b"abc", 0).unwrap();
        let map = file.map(3).unwrap();
        let _ = slice_bytes(&map, 1..4);
    }
}
