//! Directory operations not yet durable, and copies of what they removed.

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::Rng;
use super::pages::FileState;

/// A tracked file's id and page state.
pub(super) type TrackedFile = (u64, FileState);

/// A removed or replaced directory entry, kept in memory to bring it back if
/// its removal is lost.
#[derive(Debug)]
pub(super) enum Removed {
    /// A file: its content at removal and, if this storage tracked it, its
    /// id and page state (else all of it was durable).
    File {
        content: Vec<u8>,
        tracked: Option<TrackedFile>,
    },
    /// A directory and everything below it, names sorted.
    Dir { children: Vec<(OsString, Removed)> },
}

impl Removed {
    /// Copies the entry at `path` (a file, or a directory tree).
    pub(super) fn read(path: &Path) -> io::Result<Removed> {
        if fs::symlink_metadata(path)?.is_dir() {
            let mut names = fs::read_dir(path)?
                .map(|entry| entry.map(|e| e.file_name()))
                .collect::<io::Result<Vec<_>>>()?;
            names.sort();
            let children = names
                .into_iter()
                .map(|name| {
                    let child = Removed::read(&path.join(&name))?;
                    Ok((name, child))
                })
                .collect::<io::Result<_>>()?;
            Ok(Removed::Dir { children })
        } else {
            Ok(Removed::File {
                content: fs::read(path)?,
                tracked: None,
            })
        }
    }

    /// Calls `f` with the path and tracking slot of every file below `base`
    /// (the entry's path), in name order.
    pub(super) fn for_each_file(
        &mut self,
        base: &Path,
        f: &mut dyn FnMut(&Path, &mut Option<TrackedFile>),
    ) {
        match self {
            Removed::File { tracked, .. } => f(base, tracked),
            Removed::Dir { children } => {
                for (name, child) in children {
                    child.for_each_file(&base.join(name), f);
                }
            }
        }
    }

    /// Recreates the entry at `path` (whose parent exists), files with their
    /// content at removal; returns the tracked files, with their paths.
    pub(super) fn write(self, path: &Path) -> io::Result<Vec<(PathBuf, u64, FileState)>> {
        let mut tracked = Vec::new();
        self.write_into(path, &mut tracked)?;
        Ok(tracked)
    }

    fn write_into(self, path: &Path, out: &mut Vec<(PathBuf, u64, FileState)>) -> io::Result<()> {
        match self {
            Removed::File { content, tracked } => {
                fs::write(path, content)?;
                if let Some((id, state)) = tracked {
                    out.push((path.to_path_buf(), id, state));
                }
            }
            Removed::Dir { children } => {
                fs::create_dir(path)?;
                for (name, child) in children {
                    child.write_into(&path.join(name), out)?;
                }
            }
        }
        Ok(())
    }
}

/// A directory operation not yet durable.
#[derive(Debug)]
pub(super) enum DirOp {
    /// A file was created.
    CreateFile(PathBuf),
    /// A directory was created.
    CreateDir(PathBuf),
    /// `from` was renamed to `to`, replacing `replaced` if there was one.
    Rename {
        from: PathBuf,
        to: PathBuf,
        replaced: Option<Removed>,
    },
    /// A file or directory tree was removed.
    Remove { path: PathBuf, removed: Removed },
}

impl fmt::Display for DirOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirOp::CreateFile(path) => write!(f, "create file {}", path.display()),
            DirOp::CreateDir(path) => write!(f, "create directory {}", path.display()),
            DirOp::Rename { from, to, replaced } => write!(
                f,
                "rename {} to {}{}",
                from.display(),
                to.display(),
                if replaced.is_some() {
                    " (replacing it)"
                } else {
                    ""
                }
            ),
            DirOp::Remove { path, removed } => match removed {
                Removed::File { .. } => write!(f, "remove file {}", path.display()),
                Removed::Dir { .. } => write!(f, "remove directory tree {}", path.display()),
            },
        }
    }
}

/// The directory an entry at `path` lives in.
pub(super) fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Whether `a` and `b` are equal or one lies below the other.
fn related(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

impl DirOp {
    /// The paths the operation touches.
    pub(super) fn paths(&self) -> Vec<&Path> {
        match self {
            DirOp::CreateFile(path) | DirOp::CreateDir(path) | DirOp::Remove { path, .. } => {
                vec![path]
            }
            DirOp::Rename { from, to, .. } => vec![from, to],
        }
    }

    /// The operation's paths as named after the operations `later` (which
    /// followed it): a path at or below a renamed one moves with it; one
    /// at or below a removed or replaced entry is gone (`None`: whatever
    /// has that name since is something else).
    fn paths_after<'a>(&self, later: impl Iterator<Item = &'a DirOp>) -> Vec<Option<PathBuf>> {
        let mut paths: Vec<Option<PathBuf>> = self
            .paths()
            .into_iter()
            .map(|path| Some(path.to_path_buf()))
            .collect();
        for op in later {
            for slot in &mut paths {
                let Some(path) = slot.as_ref() else { continue };
                match op {
                    DirOp::Rename { from, to, .. } => {
                        if let Ok(rest) = path.strip_prefix(from) {
                            *slot = Some(if rest.as_os_str().is_empty() {
                                to.clone()
                            } else {
                                to.join(rest)
                            });
                        } else if path.starts_with(to) {
                            *slot = None;
                        }
                    }
                    DirOp::Remove { path: removed, .. } if path.starts_with(removed) => {
                        *slot = None;
                    }
                    _ => {}
                }
            }
        }
        paths
    }
}

/// Makes durable the pending operations whose entries live in `dir` (for a
/// rename: its source or its target; in the directory now named `dir`, even
/// if it was renamed since, and not in one it replaced), and with each every
/// earlier pending operation on the same entry or below one of its paths
/// (named as they were at the later one's time), so that no durable
/// operation ever needs a lost one: a rename's source created earlier, the
/// files of a removed tree, an entry removed and created again.
pub(super) fn sync_dir(pending: &mut Vec<DirOp>, dir: &Path) {
    // Only renames and removals change what a path names.
    let movers: Vec<usize> = (0..pending.len())
        .filter(|&k| matches!(pending[k], DirOp::Rename { .. } | DirOp::Remove { .. }))
        .collect();
    let between = |after: usize, before: usize| {
        let start = movers.partition_point(|&k| k <= after);
        let end = movers.partition_point(|&k| k < before);
        movers[start..end.max(start)].iter().map(|&k| &pending[k])
    };
    let mut durable = vec![false; pending.len()];
    for i in (0..pending.len()).rev() {
        durable[i] = durable[i]
            || pending[i]
                .paths_after(between(i, pending.len()))
                .iter()
                .flatten()
                .any(|path| parent(path) == dir);
        if durable[i] {
            let later = pending[i].paths();
            for j in 0..i {
                durable[j] = durable[j]
                    || pending[j]
                        .paths_after(between(j, i))
                        .iter()
                        .flatten()
                        .any(|path| later.iter().any(|l| path.starts_with(l)));
            }
        }
    }
    let mut durable = durable.into_iter();
    pending.retain(|_| !durable.next().expect("one flag per operation"));
}

/// Draws which pending operations a power loss loses: each independently
/// (one draw each, in order), except that an operation is lost whenever an
/// earlier lost one touched one of its paths, an ancestor or a descendant.
pub(super) fn choose_lost(pending: &[DirOp], rng: &mut Rng) -> Vec<bool> {
    let mut lost_paths: Vec<&Path> = Vec::new();
    pending
        .iter()
        .map(|op| {
            let coin = rng.below(2) == 0;
            let paths = op.paths();
            let lost = coin
                || paths
                    .iter()
                    .any(|p| lost_paths.iter().any(|lost| related(p, lost)));
            if lost {
                lost_paths.extend(paths);
            }
            lost
        })
        .collect()
}
