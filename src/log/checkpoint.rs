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

/// Kafka's per-broker file of each partition's high watermark, the
/// replication offset checkpoint: the same layout as every other offset
/// checkpoint, so [`OffsetCheckpoint`] reads and writes it.
pub(crate) const REPLICATION_OFFSET_CHECKPOINT: &str = "replication-offset-checkpoint";

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
        self.file().write(
            entries
                .iter()
                .map(|((topic, partition), offset)| format!("{topic} {partition} {offset}")),
        )
    }

    /// Reads the file.
    ///
    /// # Errors
    /// [`Error::Corrupt`] with [`CorruptionKind::Checkpoint`] when the file
    /// exists but is not a valid checkpoint (including an offset above
    /// `i64::MAX`, which no Kafka offset is, and a file above 64 MiB);
    /// [`Error::Io`].
    pub fn read(&self) -> Result<CheckpointRead> {
        let file = self.file();
        let Some(lines) = file.read(|line| {
            let mut fields = line.split(' ');
            let (Some(topic), Some(partition), Some(offset), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err("an entry is not `topic partition offset`");
            };
            let partition: u32 = partition.parse().map_err(|_| "bad partition number")?;
            let offset = parse_offset(offset).ok_or("bad offset")?;
            Ok(((topic.to_string(), partition), offset))
        })?
        else {
            return Ok(CheckpointRead::Missing);
        };
        let count = lines.len();
        let entries: BTreeMap<_, _> = lines.into_iter().collect();
        if entries.len() != count {
            return Err(file.bad("an entry is repeated"));
        }
        Ok(CheckpointRead::Present(entries))
    }

    fn file(&self) -> CheckpointFile<'_> {
        CheckpointFile {
            path: &self.path,
            storage: self.storage.as_ref(),
        }
    }
}

/// A Kafka offset in a checkpoint: decimal, `0..=i64::MAX` (Kafka's offsets
/// are signed 64-bit and never negative in a checkpoint).
pub(crate) fn parse_offset(text: &str) -> Option<u64> {
    text.parse::<u64>()
        .ok()
        .filter(|&o| i64::try_from(o).is_ok())
}

/// The layout every checkpoint file shares (Kafka's `CheckpointFile`): a
/// version line (`0`), a count line, then one line per entry; replaced
/// atomically. The entry lines are the caller's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckpointFile<'a> {
    pub(crate) path: &'a Path,
    pub(crate) storage: &'a dyn Storage,
}

impl CheckpointFile<'_> {
    /// Replaces the file with `lines` (no line breaks in them), atomically:
    /// after a crash it holds the old or the new content, never a mix.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub(crate) fn write(&self, lines: impl ExactSizeIterator<Item = String>) -> Result<()> {
        let mut text = format!("{VERSION}\n{}\n", lines.len());
        for line in lines {
            text.push_str(&line);
            text.push('\n');
        }
        write_atomic(self.storage, self.path, text.as_bytes())
    }

    /// Reads the file: `None` when it does not exist, else every entry line
    /// through `parse` (which says what is wrong with a bad one).
    ///
    /// # Errors
    /// [`Error::Corrupt`] with [`CorruptionKind::Checkpoint`] naming the
    /// file when it exists but is not a valid checkpoint: not UTF-8, a
    /// missing or unknown version, a count that does not match the entry
    /// lines, an entry `parse` refuses, or more than 64 MiB;
    /// [`Error::Io`].
    pub(crate) fn read<T>(
        &self,
        parse: impl Fn(&str) -> std::result::Result<T, &'static str>,
    ) -> Result<Option<Vec<T>>> {
        if !self.storage.exists(self.path) {
            return Ok(None);
        }
        let file = self.storage.open(self.path, OpenMode::Existing)?;
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
        let mut entries = Vec::new();
        for line in lines.by_ref().take(count) {
            entries.push(parse(line).map_err(|what| self.bad(what))?);
        }
        if entries.len() != count || lines.any(|l| !l.trim().is_empty()) {
            return Err(self.bad("entry count does not match"));
        }
        Ok(Some(entries))
    }

    /// The [`Error::Corrupt`] naming this file.
    pub(crate) fn bad(&self, what: &str) -> Error {
        Error::corrupt(
            self.path.to_path_buf(),
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
    fn the_replication_offset_checkpoint_round_trips_in_kafkas_layout() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = OffsetCheckpoint::new(dir.path().join(REPLICATION_OFFSET_CHECKPOINT));
        assert_eq!(file.read()?, CheckpointRead::Missing);
        let entries = BTreeMap::from([
            (("orders".to_string(), 0), 42),
            (("orders".to_string(), 11), 0),
            (("__consumer_offsets".to_string(), 7), i64::MAX as u64),
        ]);
        file.write(&entries)?;
        // Kafka's text, byte for byte: version, count, `topic partition
        // offset` lines.
        assert_eq!(
            std::fs::read_to_string(file.path()).expect("read"),
            "0\n3\n__consumer_offsets 7 9223372036854775807\norders 0 42\norders 11 0\n"
        );
        assert_eq!(file.read()?, CheckpointRead::Present(entries));
        // A file Kafka wrote reads back the same.
        std::fs::write(file.path(), "0\n2\nt 0 5\nt 1 6\n").expect("write");
        assert_eq!(
            file.read()?,
            CheckpointRead::Present(BTreeMap::from([
                (("t".to_string(), 0), 5),
                (("t".to_string(), 1), 6)
            ]))
        );
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
