//! Read-only inspection of a data directory's files, for operator tools
//! (the `logbus` command's `dump-log` and `verify`).
//!
//! Nothing here writes, creates, locks or removes a file: every file is
//! opened read-only. Record batches are decoded with [`format`](crate::format)
//! ([`BatchHeader::parse`](crate::format::BatchHeader::parse),
//! [`verify_crc`](crate::format::verify_crc), [`Batch`](crate::format::Batch));
//! this module adds what the library otherwise keeps inside its storage
//! layer:
//!
//! - [`ReadOnlyStorage`], a [`Storage`] that opens existing files read-only
//!   and refuses every change, so the library's own readers (such as
//!   [`OffsetCheckpoint`]) can read a directory another process may hold;
//! - [`read_offset_checkpoint`], an offset checkpoint file read through it;
//! - [`scan_offset_index`] and [`scan_time_index`], the entries of `.index`
//!   and `.timeindex` files (`docs/format.md` §5) and where they stop;
//! - [`read_producer_snapshot`], a producer-state snapshot checked, and
//!   [`read_producer_snapshot_entries`], its producers;
//! - [`scan_txn_index`], the aborted transactions of a `.txnindex` file;
//! - [`segment_base_offset`], the base offset a segment file's name holds.
//!
//! ```
//! use std::time::Duration;
//! use logbus::inspect::{self, IndexEnd};
//! use logbus::{Cluster, ClusterConfig, NewTopic, Producer, ProducerConfig, ProducerRecord};
//!
//! let dir = tempfile::tempdir()?;
//! let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
//! cluster.create_topic(NewTopic::new("orders", 1))?;
//! let producer = Producer::new(&cluster, ProducerConfig::default())?;
//! producer.send(ProducerRecord::new("orders", "created"))?.wait()?;
//! drop(producer);
//! cluster.close()?;
//!
//! let segment = dir.path().join("broker-0/orders-0/00000000000000000000.index");
//! assert_eq!(inspect::segment_base_offset(&segment), Some(0));
//! let index = inspect::scan_offset_index(&segment, 0)?;
//! assert!(index.entries.is_empty()); // sparse: one small batch, no entry
//! assert_eq!(index.end, IndexEnd::Eof); // trimmed at the clean close
//!
//! // The clean close wrote the idempotent producer's state at the log end.
//! let snapshot = dir.path().join("broker-0/orders-0/00000000000000000001.snapshot");
//! assert_eq!(inspect::read_producer_snapshot(&snapshot)?, 1);
//!
//! let checkpoint = dir.path().join("broker-0/recovery-point-offset-checkpoint");
//! let read = inspect::read_offset_checkpoint(&checkpoint)?;
//! assert!(matches!(read, logbus::CheckpointRead::Present(_)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{CorruptionKind, Error, Result};
use crate::log::{CheckpointRead, OffsetCheckpoint};
use crate::storage::{DirLock, OpenMode, ReadMap, Storage, StorageFile};

/// Bytes per `.index` entry: relative offset (u32) and position (u32).
pub const OFFSET_INDEX_ENTRY_SIZE: usize = 8;
/// Bytes per `.timeindex` entry: timestamp (i64) and relative offset (u32).
pub const TIME_INDEX_ENTRY_SIZE: usize = 12;
/// Bytes per `.txnindex` entry (`docs/format.md` §5).
pub const TXN_INDEX_ENTRY_SIZE: usize = 34;

/// The file system, read-only: [`Storage::open`] opens existing files for
/// reading only, and every operation that would change something (create,
/// rename, remove, set length, write, sync, lock) fails with
/// [`Error::Io`] of kind [`io::ErrorKind::PermissionDenied`] without
/// touching the disk. Memory maps are not offered (also refused).
///
/// ```
/// use std::sync::Arc;
/// use logbus::inspect::ReadOnlyStorage;
/// use logbus::{OpenMode, Storage};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("file");
/// std::fs::write(&path, b"hello")?;
/// let storage = ReadOnlyStorage;
/// let file = storage.open(&path, OpenMode::Existing)?;
/// let mut buf = [0; 5];
/// file.read_exact_at(&mut buf, 0)?;
/// assert_eq!(&buf, b"hello");
/// assert!(file.write_all_at(b"x", 0).is_err());
/// assert!(storage.open(&dir.path().join("new"), OpenMode::CreateOrOpen).is_err());
/// assert!(!dir.path().join("new").exists());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOnlyStorage;

fn refused(op: &'static str, path: &Path) -> Error {
    Error::io(
        op,
        path,
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            "read-only inspection changes no file",
        ),
    )
}

impl Storage for ReadOnlyStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> Result<Arc<dyn StorageFile>> {
        if !matches!(mode, OpenMode::Existing | OpenMode::Read) {
            return Err(refused("create", path));
        }
        let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        Ok(Arc::new(ReadOnlyFile {
            file,
            path: path.to_path_buf(),
        }))
    }

    fn create_dir_all(&self, path: &Path) -> Result<()> {
        Err(refused("create_dir_all", path))
    }

    fn rename(&self, from: &Path, _to: &Path) -> Result<()> {
        Err(refused("rename", from))
    }

    fn remove_file(&self, path: &Path) -> Result<()> {
        Err(refused("remove_file", path))
    }

    fn remove_dir_all(&self, path: &Path) -> Result<()> {
        Err(refused("remove_dir_all", path))
    }

    // Listing and looking change nothing: the real file system's.
    fn list_dir(&self, path: &Path) -> Result<Vec<PathBuf>> {
        crate::storage::StdStorage.list_dir(path)
    }

    fn exists(&self, path: &Path) -> bool {
        crate::storage::StdStorage.exists(path)
    }

    fn sync_dir(&self, path: &Path) -> Result<()> {
        Err(refused("sync_dir", path))
    }

    fn lock_dir(&self, dir: &Path) -> Result<DirLock> {
        Err(refused("lock", dir))
    }
}

/// A file [`ReadOnlyStorage`] opened: reads only.
#[derive(Debug)]
struct ReadOnlyFile {
    file: File,
    path: PathBuf,
}

impl StorageFile for ReadOnlyFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn write_all_at(&self, _buf: &[u8], _position: u64) -> Result<()> {
        Err(refused("write", &self.path))
    }

    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> Result<()> {
        self.file
            .read_exact_at(buf, position)
            .map_err(|e| Error::io("read", &self.path, e))
    }

    fn sync(&self) -> Result<()> {
        Err(refused("fsync", &self.path))
    }

    fn len(&self) -> Result<u64> {
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(|e| Error::io("stat", &self.path, e))
    }

    fn set_len(&self, _len: u64) -> Result<()> {
        Err(refused("set_len", &self.path))
    }

    fn map(&self, _len: usize) -> Result<Arc<ReadMap>> {
        Err(refused("map", &self.path))
    }
}

/// Reads an offset checkpoint file (`recovery-point-offset-checkpoint`,
/// `log-start-offset-checkpoint`, `replication-offset-checkpoint`,
/// `cleaner-offset-checkpoint`) with [`OffsetCheckpoint::read`] over
/// [`ReadOnlyStorage`]: the file is opened read-only.
///
/// # Errors
/// As [`OffsetCheckpoint::read`]: [`Error::Corrupt`] for a file that is not
/// a valid checkpoint, [`Error::Io`].
pub fn read_offset_checkpoint(path: &Path) -> Result<CheckpointRead> {
    OffsetCheckpoint::with_storage(path, Arc::new(ReadOnlyStorage)).read()
}

/// The largest producer snapshot read: a million producers' entries. A
/// larger file (a sparse one, say) is damage, refused before anything is
/// allocated for it.
const MAX_SNAPSHOT_BYTES: u64 = 64 << 20;

/// Reads a producer-state snapshot (`<offset>.snapshot`, `docs/format.md`
/// §5) read-only and checks it as an open does (version 1, CRC-32C, an
/// entry count that matches the length). Returns how many producers it
/// holds.
///
/// An open skips a snapshot that does not decode (an older one, or a
/// replay of the log, takes its place), so such damage costs time, not
/// data.
///
/// # Errors
/// [`Error::Corrupt`] naming the file (at byte 0) with
/// [`CorruptionKind::Checkpoint`] saying what is wrong; [`Error::Io`].
pub fn read_producer_snapshot(path: &Path) -> Result<usize> {
    read_producer_snapshot_entries(path).map(|entries| entries.len())
}

/// One producer of a producer-state snapshot (Kafka's
/// `ProducerStateEntry` as its snapshot files keep it: the last batch
/// only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerSnapshotEntry {
    /// The producer id.
    pub producer_id: i64,
    /// Its epoch.
    pub epoch: i16,
    /// The sequence number of its last batch's last record (`None` when
    /// only a transaction marker of it is in the log: Kafka's -1).
    pub last_sequence: Option<i32>,
    /// The offset of its last batch's last record (`None` as above).
    pub last_offset: Option<i64>,
    /// Its last batch's last offset minus its first.
    pub offset_delta: i32,
    /// The max timestamp of its last write.
    pub timestamp: i64,
    /// The coordinator epoch of its last marker (-1 before any).
    pub coordinator_epoch: i32,
    /// The first offset of its open transaction, if one is open.
    pub current_txn_first_offset: Option<i64>,
}

/// [`read_producer_snapshot`], with every producer it holds, in file
/// order.
///
/// ```
/// use logbus::{Cluster, ClusterConfig, NewTopic, Producer, ProducerConfig, ProducerRecord};
/// let dir = tempfile::tempdir()?;
/// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
/// cluster.create_topic(NewTopic::new("orders", 1))?;
/// let producer = Producer::new(&cluster, ProducerConfig::default())?;
/// producer.send(ProducerRecord::new("orders", "created"))?.wait()?;
/// drop(producer);
/// cluster.close()?;
/// let snapshot = dir.path().join("broker-0/orders-0/00000000000000000001.snapshot");
/// let producers = logbus::inspect::read_producer_snapshot_entries(&snapshot)?;
/// assert_eq!(producers[0].last_offset, Some(0));
/// assert_eq!(producers[0].last_sequence, Some(0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// As [`read_producer_snapshot`].
pub fn read_producer_snapshot_entries(path: &Path) -> Result<Vec<ProducerSnapshotEntry>> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    let bad = |what: String| Error::corrupt(path, 0, CorruptionKind::Checkpoint(what));
    if len > MAX_SNAPSHOT_BYTES {
        return Err(bad(format!(
            "a producer snapshot of {len} bytes, more than any ({MAX_SNAPSHOT_BYTES})"
        )));
    }
    let mut bytes = vec![0; usize::try_from(len).unwrap_or(0)];
    file.read_exact_at(&mut bytes, 0)
        .map_err(|e| Error::io("read", path, e))?;
    let entries = crate::format::producer_snapshot::decode_snapshot(&bytes).map_err(bad)?;
    Ok(entries
        .iter()
        .map(|e| ProducerSnapshotEntry {
            producer_id: e.producer_id,
            epoch: e.epoch,
            last_sequence: e.last_batch.map(|b| b.last_sequence),
            last_offset: e.last_batch.map(|b| b.last_offset),
            offset_delta: e.last_batch.map_or(0, |b| b.offset_delta),
            timestamp: e.timestamp,
            coordinator_epoch: e.coordinator_epoch,
            current_txn_first_offset: e.current_txn_first_offset,
        })
        .collect())
}

/// One `.txnindex` entry: an aborted transaction (Kafka's `AbortedTxn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxnEntry {
    /// The producer whose transaction aborted.
    pub producer_id: i64,
    /// The transaction's first offset in this partition.
    pub first_offset: i64,
    /// The offset of its ABORT marker.
    pub last_offset: i64,
    /// The last stable offset when the marker was written.
    pub last_stable_offset: i64,
}

/// What a `.txnindex` file holds, as an open reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnIndexScan {
    /// The entries up to the first damage, in file order.
    pub entries: Vec<AbortedTxnEntry>,
    /// The bytes they cover (a multiple of [`TXN_INDEX_ENTRY_SIZE`]): where
    /// the damage, if any, starts.
    pub valid_bytes: u64,
    /// What stopped the read before the file's end: a torn last entry, one
    /// of an unknown version, or markers going backwards.
    pub damage: Option<String>,
}

/// Reads a `.txnindex` file (`docs/format.md` §5) read-only, as an open
/// reads it.
///
/// # Errors
/// [`Error::Io`].
pub fn scan_txn_index(path: &Path) -> Result<TxnIndexScan> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    let read = crate::format::txn_index::read_txn_index(&bytes);
    Ok(TxnIndexScan {
        entries: read
            .entries
            .iter()
            .map(|t| AbortedTxnEntry {
                producer_id: t.producer_id,
                first_offset: t.first_offset,
                last_offset: t.last_offset,
                last_stable_offset: t.last_stable_offset,
            })
            .collect(),
        valid_bytes: read.valid_len as u64,
        damage: read.damage,
    })
}

/// The base offset a segment file's name holds (`00000000000000170410.log`
/// → 170410): a name of exactly 20 decimal digits before its extension.
/// `None` for any other name.
#[must_use]
pub fn segment_base_offset(path: &Path) -> Option<u64> {
    let stem = path.file_stem()?.to_str()?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// One `.index` entry: the offset it names (base offset + relative offset)
/// and the position of a batch in the `.log` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetIndexEntry {
    /// The absolute offset: the segment's base offset plus the stored
    /// relative offset.
    pub offset: u64,
    /// The byte position of the batch in the segment's `.log` file.
    pub position: u32,
}

/// One `.timeindex` entry: a timestamp and the offset it was reached at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeIndexEntry {
    /// The largest timestamp in the segment up to [`offset`](Self::offset).
    pub timestamp: i64,
    /// The absolute offset: the segment's base offset plus the stored
    /// relative offset.
    pub offset: u64,
}

/// Where the entries of an index file stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IndexEnd {
    /// At the end of the file, in whole entries: a trimmed index (a sealed
    /// segment's, or any after a clean close).
    Eof,
    /// At a slot of zeros at byte `position`, as an appendable segment's
    /// preallocated tail starts; `slots` whole slots follow the entries
    /// (only the first is read).
    ZeroTail {
        /// Byte position of the first zero slot.
        position: u64,
        /// Whole slots from there to the end of the file.
        slots: u64,
    },
    /// Damage: the slot at byte `position` is not zero and does not follow
    /// the entry before it (offsets and timestamps must increase).
    OutOfOrder {
        /// Byte position of the slot.
        position: u64,
    },
    /// Damage: the file ends `bytes` bytes into an entry starting at
    /// byte `position` (a torn or truncated index).
    PartialEntry {
        /// Byte position of the incomplete entry.
        position: u64,
        /// How many of its bytes the file holds.
        bytes: u64,
    },
}

impl IndexEnd {
    /// Whether the index file is damaged (out of order or torn).
    #[must_use]
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            IndexEnd::OutOfOrder { .. } | IndexEnd::PartialEntry { .. }
        )
    }
}

/// What [`scan_offset_index`] or [`scan_time_index`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexScan<E> {
    /// The entries, in file order, each following the one before; entry
    /// `i` lies at byte `i * entry size`.
    pub entries: Vec<E>,
    /// Where and why the entries stop.
    pub end: IndexEnd,
}

/// Reads the entries of an offset index (`.index`) file of the segment at
/// `base_offset`, read-only, as the library loads them: entries while each
/// names a larger offset at the same or a larger position than the one
/// before, up to the end of the file or the first zero slot (the slot after
/// a zero slot is not read: a preallocated tail is not read through).
///
/// # Errors
/// [`Error::Io`].
pub fn scan_offset_index(path: &Path, base_offset: u64) -> Result<IndexScan<OffsetIndexEntry>> {
    scan(
        path,
        OFFSET_INDEX_ENTRY_SIZE,
        |slot| {
            let relative = u32::from_be_bytes(slot[0..4].try_into().unwrap_or_default());
            let position = u32::from_be_bytes(slot[4..8].try_into().unwrap_or_default());
            OffsetIndexEntry {
                offset: base_offset + u64::from(relative),
                position,
            }
        },
        |prev, next| next.offset > prev.offset && next.position >= prev.position,
    )
}

/// Reads the entries of a time index (`.timeindex`) file of the segment at
/// `base_offset`, read-only, as [`scan_offset_index`] does: entries while
/// each has a larger timestamp and the same or a larger offset than the
/// one before.
///
/// # Errors
/// [`Error::Io`].
pub fn scan_time_index(path: &Path, base_offset: u64) -> Result<IndexScan<TimeIndexEntry>> {
    scan(
        path,
        TIME_INDEX_ENTRY_SIZE,
        |slot| {
            let timestamp = i64::from_be_bytes(slot[0..8].try_into().unwrap_or_default());
            let relative = u32::from_be_bytes(slot[8..12].try_into().unwrap_or_default());
            TimeIndexEntry {
                timestamp,
                offset: base_offset + u64::from(relative),
            }
        },
        |prev, next| next.timestamp > prev.timestamp && next.offset >= prev.offset,
    )
}

/// Reads slots of `size` bytes in chunks; `decode` gives an entry and
/// `follows` the rule an entry must keep with the one before it.
fn scan<E: Copy>(
    path: &Path,
    size: usize,
    decode: impl Fn(&[u8]) -> E,
    follows: fn(&E, &E) -> bool,
) -> Result<IndexScan<E>> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    let slot_size = size as u64;
    let whole = len / slot_size;
    let mut entries: Vec<E> = Vec::new();
    let chunk_slots: u64 = 4096;
    let mut buf = vec![0u8; size * chunk_slots as usize];
    let mut slot_index = 0u64;
    while slot_index < whole {
        let n = chunk_slots.min(whole - slot_index);
        let chunk = &mut buf[..n as usize * size];
        file.read_exact_at(chunk, slot_index * slot_size)
            .map_err(|e| Error::io("read", path, e))?;
        for (i, slot) in chunk.chunks_exact(size).enumerate() {
            let position = (slot_index + i as u64) * slot_size;
            if slot.iter().all(|&b| b == 0) {
                return Ok(IndexScan {
                    entries,
                    end: IndexEnd::ZeroTail {
                        position,
                        slots: whole - position / slot_size,
                    },
                });
            }
            let entry = decode(slot);
            if let Some(prev) = entries.last()
                && !follows(prev, &entry)
            {
                return Ok(IndexScan {
                    entries,
                    end: IndexEnd::OutOfOrder { position },
                });
            }
            entries.push(entry);
        }
        slot_index += n;
    }
    let end = if len % slot_size == 0 {
        IndexEnd::Eof
    } else {
        IndexEnd::PartialEntry {
            position: whole * slot_size,
            bytes: len % slot_size,
        }
    };
    Ok(IndexScan { entries, end })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_scan_stops_where_the_entries_stop() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000100.index");
        let entry = |rel: u32, pos: u32| {
            let mut v = rel.to_be_bytes().to_vec();
            v.extend_from_slice(&pos.to_be_bytes());
            v
        };
        let mut bytes = [entry(1, 80), entry(5, 400)].concat();
        std::fs::write(&path, &bytes).expect("write");
        let scan = scan_offset_index(&path, 100)?;
        assert_eq!(scan.entries.len(), 2);
        assert_eq!(scan.entries[1].offset, 105);
        assert_eq!(scan.end, IndexEnd::Eof);

        bytes.extend_from_slice(&[0; 24]);
        std::fs::write(&path, &bytes).expect("write");
        let scan = scan_offset_index(&path, 100)?;
        assert_eq!(
            scan.end,
            IndexEnd::ZeroTail {
                position: 16,
                slots: 3
            }
        );

        std::fs::write(&path, [entry(5, 400), entry(1, 80)].concat()).expect("write");
        let scan = scan_offset_index(&path, 100)?;
        assert_eq!(scan.end, IndexEnd::OutOfOrder { position: 8 });

        std::fs::write(&path, [entry(5, 400), vec![1, 2, 3]].concat()).expect("write");
        let scan = scan_offset_index(&path, 100)?;
        assert_eq!(
            scan.end,
            IndexEnd::PartialEntry {
                position: 8,
                bytes: 3
            }
        );
        assert!(scan.end.is_damage());
        assert_eq!(segment_base_offset(&path), Some(100));
        Ok(())
    }
}
