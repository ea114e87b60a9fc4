//! A segment's aborted-transaction index file (`<base>.txnindex`, Kafka's
//! `TransactionIndex`): the entries in memory, the file created lazily by
//! the first ABORT marker the segment holds.
//!
//! The entries are few (one per aborted transaction), so the whole file is
//! read when the segment opens and kept in memory; appends write at the
//! end. A damaged tail (a torn entry, one that does not decode, markers
//! going backwards) is cut at open, as a damaged index tail is: the log's
//! recovery rebuilds the entries of the segments it scans from their
//! batches, and a segment below the recovery point had its file fsynced
//! with its log.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Result;
use crate::format::txn_index::{ABORTED_TXN_SIZE, AbortedTxn, read_txn_index};
use crate::storage::{OpenMode, Storage, StorageFile};

/// One segment's aborted transactions.
#[derive(Debug)]
pub(crate) struct TxnIndexFile {
    path: PathBuf,
    file: Option<Arc<dyn StorageFile>>,
    entries: Vec<AbortedTxn>,
}

impl TxnIndexFile {
    /// A segment without aborted transactions whose file (none yet) would
    /// be `path`.
    pub(crate) fn empty(path: PathBuf) -> Self {
        TxnIndexFile {
            path,
            file: None,
            entries: Vec::new(),
        }
    }

    /// Reads `path` if it exists; a damaged tail is cut off the file.
    /// Returns the index and what was cut (the reason), if anything.
    ///
    /// # Errors
    /// [`crate::Error::Io`].
    pub(crate) fn open(storage: &dyn Storage, path: PathBuf) -> Result<(Self, Option<String>)> {
        if !storage.exists(&path) {
            return Ok((Self::empty(path), None));
        }
        let file = storage.open(&path, OpenMode::Existing)?;
        let len = usize::try_from(file.len()?).unwrap_or(usize::MAX);
        let mut bytes = vec![0u8; len];
        file.read_exact_at(&mut bytes, 0)?;
        let read = read_txn_index(&bytes);
        if read.damage.is_some() {
            file.set_len(read.valid_len as u64)?;
        }
        Ok((
            TxnIndexFile {
                path,
                file: Some(file),
                entries: read.entries,
            },
            read.damage,
        ))
    }

    /// The entries, in marker order.
    pub(crate) fn entries(&self) -> &[AbortedTxn] {
        &self.entries
    }

    /// The open file, if the segment has one.
    pub(crate) fn file(&self) -> Option<&Arc<dyn StorageFile>> {
        self.file.as_ref()
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends an entry, creating the file if needed. Returns the file
    /// (for the caller's next fsync) and whether it was created (a new
    /// directory entry).
    ///
    /// # Errors
    /// [`crate::Error::Io`]; the entry is then not in memory either.
    pub(crate) fn append(
        &mut self,
        storage: &dyn Storage,
        txn: AbortedTxn,
    ) -> Result<(Arc<dyn StorageFile>, bool)> {
        let created = self.file.is_none();
        let file = match &self.file {
            Some(file) => Arc::clone(file),
            None => {
                // A file a removed segment left at this name holds nothing
                // of this one.
                let file = storage.open(&self.path, OpenMode::CreateOrOpen)?;
                file.set_len(0)?;
                file
            }
        };
        let position = (self.entries.len() * ABORTED_TXN_SIZE) as u64;
        file.write_all_at(&txn.encode(), position)?;
        self.file = Some(Arc::clone(&file));
        self.entries.push(txn);
        Ok((file, created))
    }

    /// Drops the entries whose marker is at or after `offset` (a
    /// truncation of the segment), durably.
    ///
    /// # Errors
    /// [`crate::Error::Io`].
    pub(crate) fn truncate_to(&mut self, offset: u64) -> Result<()> {
        let keep = self
            .entries
            .iter()
            .take_while(|t| u64::try_from(t.last_offset).is_ok_and(|l| l < offset))
            .count();
        if keep == self.entries.len() {
            return Ok(());
        }
        if let Some(file) = &self.file {
            // Durable before new batches land where the cut markers were:
            // a power loss must not bring back an entry naming them.
            file.set_len((keep * ABORTED_TXN_SIZE) as u64)?;
            file.sync()?;
        }
        self.entries.truncate(keep);
        Ok(())
    }

    /// The segment's files moved (a cleaner stage rename): the file's new
    /// path.
    pub(crate) fn set_path(&mut self, path: PathBuf) {
        self.path = path;
    }

    /// Fsyncs the file, if there is one.
    ///
    /// # Errors
    /// [`crate::Error::Io`].
    pub(crate) fn sync(&self) -> Result<()> {
        match &self.file {
            Some(file) => file.sync(),
            None => Ok(()),
        }
    }
}
