//! One-line offset markers in a log directory (`fenced-offset`,
//! `restart-offset`): `<tag> <offset> <CRC-32C of the text before it, 8
//! hex digits>\n`, written atomically. The CRC tells a damaged marker
//! from a missing one: a damaged one refuses the open (changing no file)
//! instead of being ignored.

use std::path::Path;

use crate::error::{CorruptionKind, Error, Result};
use crate::storage::{OpenMode, Storage, write_atomic};

/// A marker longer than this is damaged.
const MAX_MARKER_LEN: u64 = 256;

/// The marker's text for `offset`.
fn encode(tag: &str, offset: u64) -> String {
    let line = format!("{tag} {offset}");
    format!(
        "{line} {:08x}\n",
        crate::format::header::crc32c(line.as_bytes())
    )
}

/// Writes the marker `tag` for `offset` at `path`, durably (file and
/// directory entry).
///
/// # Errors
/// [`Error::Io`]; the marker may then exist or not.
pub(crate) fn write(storage: &dyn Storage, path: &Path, tag: &str, offset: u64) -> Result<()> {
    write_atomic(storage, path, encode(tag, offset).as_bytes())
}

/// Reads the marker `tag` at `path`: `None` if there is none. `meaning`
/// completes the message of a damaged one: what the marker records and
/// what removing it would do.
///
/// # Errors
/// [`Error::Corrupt`] for a damaged marker; [`Error::Io`] if it cannot be
/// read.
pub(crate) fn read(
    storage: &dyn Storage,
    path: &Path,
    tag: &str,
    meaning: &str,
) -> Result<Option<u64>> {
    if !storage.exists(path) {
        return Ok(None);
    }
    let damaged = |what: &str| {
        Error::corrupt(
            path,
            0,
            CorruptionKind::Checkpoint(format!("{what}: {meaning}")),
        )
    };
    let file = storage.open(path, OpenMode::Existing)?;
    let len = file.len()?;
    if len > MAX_MARKER_LEN {
        return Err(damaged("the marker is too long"));
    }
    let mut bytes = vec![0; usize::try_from(len).unwrap_or(0)];
    file.read_exact_at(&mut bytes, 0)?;
    parse(&bytes, tag)
        .map(Some)
        .ok_or_else(|| damaged("the marker is damaged"))
}

fn parse(bytes: &[u8], tag: &str) -> Option<u64> {
    let text = std::str::from_utf8(bytes).ok()?.strip_suffix('\n')?;
    let (line, crc) = text.rsplit_once(' ')?;
    if crc.len() != 8
        || u32::from_str_radix(crc, 16).ok()? != crate::format::header::crc32c(line.as_bytes())
    {
        return None;
    }
    line.strip_prefix(tag)?.strip_prefix(' ')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StdStorage;

    /// A marker file with a bad CRC, or too long, refuses the read as
    /// corruption naming what the marker means; none is `None`.
    #[test]
    fn a_damaged_marker_file_is_corruption_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let storage = StdStorage::new();
        let read = || read(&storage, &path, "t v1", "what it means");
        assert_eq!(read().unwrap(), None);
        write(&storage, &path, "t v1", 9).unwrap();
        assert_eq!(read().unwrap(), Some(9));
        std::fs::write(&path, b"t v1 7 00000000\n").unwrap();
        let err = read().unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Corrupt {
                    kind: CorruptionKind::Checkpoint(_),
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("what it means"), "{err}");
        std::fs::write(&path, vec![b'1'; 300]).unwrap();
        assert!(read().is_err());
    }

    #[test]
    fn a_marker_reads_back_and_any_damage_is_refused() {
        let text = encode("t v1", 42);
        assert_eq!(parse(text.as_bytes(), "t v1"), Some(42));
        assert_eq!(parse(text.as_bytes(), "other v1"), None);
        for at in 0..text.len() {
            let mut bytes = text.clone().into_bytes();
            bytes[at] ^= 0x01;
            assert_eq!(parse(&bytes, "t v1"), None, "flip at {at}");
        }
        for cut in 0..text.len() {
            assert_eq!(parse(&text.as_bytes()[..cut], "t v1"), None, "cut at {cut}");
        }
    }
}
