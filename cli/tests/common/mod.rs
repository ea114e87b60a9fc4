//! Helpers shared by the command line's test binaries.
// Each test binary compiles this module and uses some of it.
#![allow(dead_code, reason = "each test binary uses a part of these helpers")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use assert_cmd::cargo::cargo_bin_cmd;

/// `path` as the `&str` a command line takes.
pub(crate) fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// `logbus ARGS... --dir DIR`.
pub(crate) fn logbus(dir: &Path, args: &[&str]) -> assert_cmd::Command {
    let mut cmd = cargo_bin_cmd!("logbus");
    cmd.args(args).args(["--dir", path_str(dir)]);
    cmd
}

/// Every file under `dir` with its bytes: compare two snapshots to prove a
/// command changed nothing.
pub(crate) fn every_file(dir: &Path) -> Result<BTreeMap<PathBuf, Vec<u8>>, std::io::Error> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path)?);
            }
        }
    }
    Ok(files)
}
