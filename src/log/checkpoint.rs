//! Kafka's offset checkpoint files (`recovery-point-offset-checkpoint`,
//! `log-start-offset-checkpoint`, ...): the owner of many logs records one
//! offset per partition in them.
//!
//! The text layout is Kafka's: a version line (`0`), a count line, then one
//! `topic partition offset` line per entry. Files are replaced atomically
//! (temp file, fsync, rename, directory fsync). Reading tells a missing file
//! apart from an unreadable one, so damage is never taken for a fresh start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{CorruptionKind, Error, Result};
use crate::storage::{OpenMode, Storage, write_atomic};

/// The only checkpoint format version.
const VERSION: u32 = 0;

/// The largest checkpoint file read: room for a million entries of
/// 60-character topic names. A larger file (a sparse one, say) is damage,
/// refused before anything is allocated for it.
const MAX_FILE_BYTES: u64 = 64 << 20;

/// What reading a checkpoint file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointRead {
    /// No file: nothing was checkpointed yet.
    Missing,
    /// The entries, by (topic, partition).
    Present(BTreeMap<(String, u32), u64>),
}

/// One checkpoint file.
///
/// ```
/// use std::collections::BTreeMap;
/// use logbus::{CheckpointRead, OffsetCheckpoint};
/// let dir = tempfile::tempdir()?;
/// let file = OffsetCheckpoint::new(dir.path().join("recovery-point-offset-checkpoint"));
/// assert_eq!(file.read()?, CheckpointRead::Missing);
/// let mut entries = BTreeMap::new();
/// entries.insert(("orders".to_string(), 0), 42);
/// file.write(&entries)?;
/// assert_eq!(file.read()?, CheckpointRead::Present(entries));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct OffsetCheckpoint {
    path: PathBuf,
    storage: std::sync::Arc<dyn Storage>,
}

impl OffsetCheckpoint {
    /// The checkpoint file at `path` on the real file system.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self::with_storage(path, std::sync::Arc::new(crate::storage::StdStorage::new()))
    }

    /// The checkpoint file at `path` on `storage`.
    pub fn with_storage(path: impl Into<PathBuf>, storage: std::sync::Arc<dyn Storage>) -> Self {
        OffsetCheckpoint {
            path: path.into(),
            storage,
        }
    }

    /// The file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the file with `entries`, atomically.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn write(&self, entries: &BTreeMap<(String, u32), u64>) -> Result<()> {
        let mut text = format!("{VERSION}\n{}\n", entries.len());
        for ((topic, partition), offset) in entries {
            text.push_str(&format!("{topic} {partition} {offset}\n"));
        }
        write_atomic(self.storage.as_ref(), &self.path, text.as_bytes())
    }

    /// Reads the file.
    ///
    /// # Errors
    /// [`Error::Corrupt`] with [`CorruptionKind::Checkpoint`] when the file
    /// exists but is not a valid checkpoint (including an offset above
    /// `i64::MAX`, which no Kafka offset is, and a file above 64 MiB);
    /// [`Error::Io`].
    pub fn read(&self) -> Result<CheckpointRead> {
        if !self.storage.exists(&self.path) {
            return Ok(CheckpointRead::Missing);
        }
        let file = self.storage.open(&self.path, OpenMode::Existing)?;
        let len = file.len()?;
        if len > MAX_FILE_BYTES {
            return Err(self.bad(&format!(
                "the file holds {len} bytes, more than any checkpoint ({MAX_FILE_BYTES})"
            )));
        }
        let len = usize::try_from(len).map_err(|_| self.bad("file too large"))?;
        let mut bytes = vec![0; len];
        file.read_exact_at(&mut bytes, 0)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| self.bad("not UTF-8"))?;
        self.parse(text).map(CheckpointRead::Present)
    }

    fn parse(&self, text: &str) -> Result<BTreeMap<(String, u32), u64>> {
        let mut lines = text.lines();
        let version: u32 = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| self.bad("missing version line"))?;
        if version != VERSION {
            return Err(self.bad("unsupported version"));
        }
        let count: usize = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| self.bad("missing count line"))?;
        let mut entries = BTreeMap::new();
        for line in lines.by_ref().take(count) {
            let mut fields = line.split(' ');
            let (Some(topic), Some(partition), Some(offset), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err(self.bad("an entry is not `topic partition offset`"));
            };
            let partition = partition
                .parse()
                .map_err(|_| self.bad("bad partition number"))?;
            // Kafka's offsets are signed 64-bit.
            let offset: u64 = offset
                .parse()
                .ok()
                .filter(|&o| i64::try_from(o).is_ok())
                .ok_or_else(|| self.bad("bad offset"))?;
            entries.insert((topic.to_string(), partition), offset);
        }
        if entries.len() != count || lines.any(|l| !l.trim().is_empty()) {
            return Err(self.bad("entry count does not match"));
        }
        Ok(entries)
    }

    fn bad(&self, what: &str) -> Error {
        Error::corrupt(
            self.path.clone(),
            0,
            CorruptionKind::Checkpoint(what.to_string()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damaged_files_are_unreadable_not_missing() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = OffsetCheckpoint::new(dir.path().join("cp"));
        for bad in [
            "",
            "1\n0\n",
            "0\n2\nt 0 1\n",
            "0\n1\nt x 1\n",
            "0\n1\nt 0 1 2\n",
            "0\n0\nextra\n",
            "0\n1\nt 0 9223372036854775808\n",
            "0\n1\nt 0 -1\n",
            "0\n2\nt 0 1\nt 0 2\n",
        ] {
            std::fs::write(file.path(), bad).expect("write");
            assert!(
                matches!(
                    file.read(),
                    Err(Error::Corrupt {
                        kind: CorruptionKind::Checkpoint(_),
                        ..
                    })
                ),
                "{bad:?} must be unreadable"
            );
        }
        std::fs::write(file.path(), "0\n2\na 0 5\nb.c 3 7\n").expect("write");
        let CheckpointRead::Present(entries) = file.read()? else {
            panic!("present")
        };
        assert_eq!(entries.get(&("b.c".to_string(), 3)), Some(&7));
        // The largest offset Kafka has is fine.
        std::fs::write(file.path(), "0\n1\nt 0 9223372036854775807\n").expect("write");
        assert!(matches!(file.read()?, CheckpointRead::Present(_)));
        Ok(())
    }

    #[test]
    fn a_huge_file_is_refused_before_it_is_read() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = OffsetCheckpoint::new(dir.path().join("cp"));
        file.write(&BTreeMap::from([(("t".to_string(), 0), 5)]))?;
        // A sparse tail of 1 TiB: reading it whole would exhaust memory.
        std::fs::OpenOptions::new()
            .write(true)
            .open(file.path())
            .and_then(|f| f.set_len(1 << 40))
            .expect("extend");
        assert!(matches!(
            file.read(),
            Err(Error::Corrupt {
                kind: CorruptionKind::Checkpoint(_),
                ..
            })
        ));
        Ok(())
    }
}
