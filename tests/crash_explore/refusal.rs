//! A refused open changes no file: damage that no power loss makes (a
//! flipped bit in fsynced data, below the recovery point, after a clean
//! close) refuses the open, and every file is as it was, byte for byte.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use logbus::format::BatchHeader;

/// Every file below `root` (the directory locks aside) by relative path,
/// with its bytes; directories as `None`.
pub(crate) type Tree = BTreeMap<PathBuf, Option<Vec<u8>>>;

pub(crate) fn snapshot(root: &Path) -> Tree {
    read_tree(root, false)
}

/// Every file below `root` by relative path, with its bytes; directories
/// as `None`. The directory locks (`.lock`) only with `locks`.
pub(crate) fn read_tree(root: &Path, locks: bool) -> Tree {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            let rel = path.strip_prefix(root).expect("below root").to_path_buf();
            if path.is_dir() {
                out.insert(rel, None);
                stack.push(path);
            } else if locks || path.file_name().is_some_and(|n| n != ".lock") {
                out.insert(rel, Some(std::fs::read(&path).expect("read file")));
            }
        }
    }
    out
}

/// Writes `tree` below `root` (which it creates), over what is there.
pub(crate) fn write_tree(root: &Path, tree: &Tree) {
    std::fs::create_dir_all(root).expect("create dir");
    for (rel, content) in tree {
        let path = root.join(rel);
        match content {
            None => std::fs::create_dir_all(&path).expect("create dir"),
            Some(bytes) => {
                std::fs::create_dir_all(path.parent().expect("parent")).expect("create dir");
                std::fs::write(&path, bytes).expect("write file");
            }
        }
    }
}

/// What differs between two snapshots, described.
pub(crate) fn differences(before: &Tree, after: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (path, content) in before {
        match after.get(path) {
            None => out.push(format!("{} removed", path.display())),
            Some(now) if now != content => out.push(format!(
                "{} changed ({} -> {} bytes)",
                path.display(),
                content.as_ref().map_or(0, Vec::len),
                now.as_ref().map_or(0, Vec::len)
            )),
            Some(_) => {}
        }
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        out.push(format!("{} created", path.display()));
    }
    out
}

/// Byte ranges of the batches in a segment file.
pub(crate) fn batch_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut position = 0;
    while position < bytes.len() {
        let header = BatchHeader::parse(&bytes[position..]).expect("intact header");
        let end = position + header.total_size();
        out.push((position, end));
        position = end;
    }
    out
}

/// Flips one bit in the middle of the records of the last batch of the
/// segment file `path` (covered by the CRC, not by the header's structure).
pub(crate) fn flip_in_last_batch(path: &Path) {
    let mut bytes = std::fs::read(path).expect("read segment");
    let (start, end) = *batch_spans(&bytes).last().expect("a batch");
    // The records start after the 61-byte header.
    let at = start + 61 + (end - start - 61) / 2;
    bytes[at] ^= 0x10;
    std::fs::write(path, bytes).expect("write segment");
}
