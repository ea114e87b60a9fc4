//! [`FaultyStorage`]: real files with injected failures and simulated power
//! loss, for tests.
//!
//! Files live on the real file system (so memory maps work); the caller
//! chooses where, typically in a temporary directory. The real files are
//! what the process sees (the page cache); beside them the storage keeps
//! what a disk would hold, as the differences from the real files, and a
//! power loss rewrites the real files into a state the disk may be left in.
//!
//! # File content
//!
//! Content is tracked in 4 KiB pages, per file (following it through
//! renames; a file is first tracked when opened through this storage, all of
//! its content durable then).
//! - A write, or a [`set_len`](StorageFile::set_len), dirties the pages it
//!   touches: the pages written, and every page between the old and the new
//!   length (a write past the end fills the gap with zeros). The first time a
//!   page is dirtied after a good sync, its durable content is remembered
//!   (a copy of that one page, never of the whole file).
//! - A successful [`sync`](StorageFile::sync) (`fdatasync`) makes the
//!   length and every dirty page durable.
//! - A failed sync (an injected [`FaultOp::Sync`] fault, or a real error)
//!   *drops* the pages dirty at that moment: the process still reads their
//!   new content (the cache keeps it, marked clean) but it never reaches the
//!   disk. A later good sync does not write them back (it does make the
//!   length durable, so a dropped page past the old end reads as zeros);
//!   writing to a dropped page again makes the whole page dirty again, the
//!   earlier bytes included, and the next good sync persists it. This is
//!   Linux's behaviour since 4.13 ("fsyncgate").
//! - [`FaultyStorage::power_loss`]: each dirty page independently keeps its
//!   new content, keeps its durable content, or is torn: each of its
//!   512-byte sectors holds its new or its durable content (zeros past the
//!   durable length), as a disk with atomic sectors leaves a page write it
//!   did not finish; or, after
//!   [`set_torn_pages(TornPages::Zeroed)`](FaultyStorage::set_torn_pages),
//!   harsher than real disks, the whole page reads as zeros, durable bytes
//!   in it included. A dropped page always has its durable content. A file that grew
//!   since its last good sync ends at its durable length, at its new length,
//!   or at a page boundary between (a page that did not survive reads as
//!   zeros past the durable length); a file that shrank keeps its new length
//!   or its durable one, the cut pages then with their durable content (the
//!   page holding the cut point is decided like any dirty page, its new
//!   content having zeros past the cut).
//!
//! # Directory entries
//!
//! Each directory operation not yet durable is journalled in order:
//! creating a file ([`Storage::open`] with [`OpenMode::CreateNew`], or
//! [`OpenMode::CreateOrOpen`] when the file did not exist), creating a
//! directory ([`Storage::create_dir_all`], once per directory it creates), a
//! [`rename`](Storage::rename) (of a file or a directory, replacing the
//! target or not), [`remove_file`](Storage::remove_file) and
//! [`remove_dir_all`](Storage::remove_dir_all) of something that existed.
//! What a removal or a replacing rename destroyed is copied into memory,
//! with its page state, to bring it back.
//! - [`sync_dir(d)`](Storage::sync_dir) makes durable every pending
//!   operation whose entry lives directly in the directory now named `d` (a
//!   rename: its source or its target entry; following the directory
//!   through renames since, but not into a directory that replaced it), and
//!   with each every earlier pending operation on the same entry or below
//!   one of its paths, as named at the later one's time (a durable rename
//!   needs its source, which may have been created since the last sync; a
//!   durable tree removal covers the changes inside the tree; an entry
//!   removed and created again needs the removal). A file's own `sync` does
//!   not make its entry durable, and syncing a directory does not make its
//!   own entry (in its parent) durable: a directory created or renamed
//!   since its parent's last sync may vanish or go back to its old name
//!   with everything in it, synced or not.
//! - At a power loss each pending operation independently survives or is
//!   lost, except that an operation is lost whenever an earlier lost one
//!   touched one of its paths, an ancestor or a descendant of one, so no
//!   state appears that no order of the surviving operations could produce.
//!   Lost operations are undone newest first: a lost create removes the
//!   file or directory (with whatever is in it now); a lost removal brings
//!   the file or tree back, each file with its content decided as above from
//!   its state at removal; a lost rename moves the entry back (with whatever
//!   is in it now) and brings back the target it replaced.
//!
//! # Randomness
//!
//! [`FaultyStorage::power_loss`] draws from its seed, in this order: each
//! pending directory operation, oldest first (lost with probability 1/2
//! unless forced); then, file by file in the order the storage first saw
//! them, each dirty page in order (kept, lost or torn, 1/3 each), the
//! length (grown: durable, new or a page boundary between, 1/3 each, the
//! boundary uniform, or 1/2 each when no boundary lies between; shrunk: 1/2
//! each), and, unless [`TornPages::Zeroed`] is set, each sector of each torn
//! page in order (new or durable, 1/2 each). The same seed and history give the
//! same result.
//!
//! # [`FaultyStorage::crash`]
//!
//! The older, simpler crash keeps every directory operation and undoes all
//! unsynced content (dropped pages included), keeping only, as [`Tear`]
//! says, a prefix of the most recent write since its file's last good sync
//! (writes before a failed sync do not count).
//!
//! # Limits
//! - Within one file, pages are independent; between files, and between
//!   file content and directory entries, nothing is ordered beyond the rules
//!   above (a page of a file whose creation was lost is simply gone).
//!   Metadata other than the length (times, permissions) is not modelled.
//! - Renames and removals must go through this storage for its records to
//!   follow them; files changed behind its back confuse it. Writes through
//!   writable memory maps are not seen (logbus maps files read-only). Writes
//!   through a handle to a file after it was removed or replaced are not
//!   tracked: if the removal is lost the file comes back as it was when
//!   removed.
//! - Directory locks ([`Storage::lock_dir`]) and their `.lock` files are the
//!   real ones, outside the model: a simulated crash does not release the
//!   locks of the "dead" process; drop them (with the rest of its objects)
//!   before reopening.
//! - Removed content is held in memory until its removal is durable.

#[cfg(test)]
mod model_tests;
mod names;
mod pages;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tree_tests;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::storage::file::{DirLock, OpenMode, Storage, StorageFile};
use crate::storage::mmap::ReadMap;
use crate::storage::std_fs::StdStorage;
use names::{DirOp, Removed};
use pages::FileState;

/// An operation [`FaultyStorage`] counts and can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultOp {
    /// [`StorageFile::write_all_at`].
    Write,
    /// [`StorageFile::sync`].
    Sync,
    /// [`Storage::sync_dir`].
    SyncDir,
    /// [`Storage::rename`].
    Rename,
    /// [`Storage::open`] with [`OpenMode::CreateNew`] or
    /// [`OpenMode::CreateOrOpen`].
    Create,
    /// [`StorageFile::set_len`].
    SetLen,
    /// [`Storage::remove_file`] and [`Storage::remove_dir_all`].
    Remove,
}

impl FaultOp {
    const ALL: [FaultOp; 7] = [
        FaultOp::Write,
        FaultOp::Sync,
        FaultOp::SyncDir,
        FaultOp::Rename,
        FaultOp::Create,
        FaultOp::SetLen,
        FaultOp::Remove,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// The error an injected fault returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// `EIO` (raw OS error 5): the device failed.
    Eio,
    /// `ENOSPC` (raw OS error 28, [`io::ErrorKind::StorageFull`]): the
    /// device is full.
    Enospc,
}

impl FaultKind {
    fn to_io(self) -> io::Error {
        match self {
            FaultKind::Eio => io::Error::from_raw_os_error(5),
            FaultKind::Enospc => io::Error::from_raw_os_error(28),
        }
    }
}

/// What [`FaultyStorage::crash`] keeps of the most recent unsynced write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tear {
    /// Every unsynced write is lost.
    None,
    /// The first `n` bytes (at most all) of the most recent unsynced write,
    /// over all files, survive: a torn write. Everything else unsynced is
    /// lost, including earlier unsynced writes to the same file.
    KeepPrefix(usize),
    /// Like [`Tear::KeepPrefix`] with a length in `0..=len` drawn from the
    /// seed.
    Random(u64),
}

/// What a simulated power loss ([`FaultyStorage::power_loss`]) leaves in
/// a torn page: a dirty page that neither kept its new content nor its
/// durable content whole. Set with [`FaultyStorage::set_torn_pages`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TornPages {
    /// Each 512-byte sector of the page independently holds its new
    /// content or its durable content (zeros past the durable length), as
    /// a disk with 512-byte atomic sectors leaves a page write it did not
    /// finish: bytes that were durable and not written again never change
    /// (the default).
    #[default]
    Sectors,
    /// The whole page reads as zeros, the bytes in it that were durable
    /// included. Harsher than a real disk: no log that appends in place
    /// (logbus's or Kafka's) keeps acknowledged bytes that share a page
    /// with an unsynced append under this model.
    Zeroed,
}

/// What a simulated power loss ([`FaultyStorage::power_loss`]) did, for
/// tests to print and count. Pages are counted when they lie within the
/// file's length after the power loss.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PowerLossReport {
    /// Dirty pages whose new content survived.
    pub pages_kept: u64,
    /// Dirty pages left with their durable content.
    pub pages_lost: u64,
    /// Dirty pages torn: a mix of new and durable sectors, or read as
    /// zeros under [`TornPages::Zeroed`].
    pub pages_torn: u64,
    /// Pages dropped by a failed sync, left with their durable content.
    pub pages_dropped_by_failed_sync: u64,
    /// Files whose length changed since their last good sync and kept the
    /// new length.
    pub files_with_length_change_kept: u64,
    /// Files whose length changed since their last good sync and went back
    /// to the durable length.
    pub files_with_length_change_lost: u64,
    /// Files that grew since their last good sync and ended at a page
    /// boundary between the durable and the new length.
    pub files_with_length_change_partial: u64,
    /// Pending directory operations that survived.
    pub dir_ops_kept: u64,
    /// Pending directory operations that were lost (undone).
    pub dir_ops_lost: u64,
}

/// What a power loss could lose now ([`FaultyStorage::unsynced_summary`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnsyncedSummary {
    /// Dirty pages, over all files still linked.
    pub dirty_pages: u64,
    /// Pages dropped by a failed sync, over all files still linked.
    pub dropped_pages: u64,
    /// Files still linked whose length changed since their last good sync.
    pub files_with_length_change: u64,
    /// Directory operations not yet durable.
    pub pending_dir_ops: u64,
}

#[derive(Debug, Clone, Copy)]
enum Trigger {
    /// Fail when the op's counter reaches this value.
    At(u64),
    /// Fail every call.
    Always,
}

#[derive(Debug, Clone, Copy)]
struct Fault {
    op: FaultOp,
    kind: FaultKind,
    trigger: Trigger,
    /// For writes: bytes written before failing.
    partial: usize,
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).expect("FaultyStorage files fit in memory")
}

/// A well-mixed 64-bit value from a seed (SplitMix64's finalizer).
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A seeded stream of pseudo-random numbers (SplitMix64).
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        let value = splitmix64(self.0);
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        value % n
    }
}

/// A file the storage tracks, at its current path.
#[derive(Debug)]
struct Tracked {
    path: PathBuf,
    file: FileState,
}

#[derive(Debug, Default)]
struct State {
    counts: [u64; FaultOp::ALL.len()],
    faults: Vec<Fault>,
    /// Bumped by every crash; handles of an older generation are fenced.
    generation: u64,
    /// Order of writes, to find the most recent one.
    next_seq: u64,
    /// Tracked files by id (ids in order of first sight).
    files: BTreeMap<u64, Tracked>,
    by_path: HashMap<PathBuf, u64>,
    next_id: u64,
    /// Directory operations not yet durable, in order.
    pending: Vec<DirOp>,
    /// What a power loss leaves in a torn page.
    torn: TornPages,
}

impl State {
    /// Counts a call of `op` and returns the fault it must fail with, if any.
    fn count(&mut self, op: FaultOp) -> Option<Fault> {
        let count = &mut self.counts[op.index()];
        *count += 1;
        let count = *count;
        let i = self.faults.iter().position(|f| {
            f.op == op
                && match f.trigger {
                    Trigger::At(at) => at == count,
                    Trigger::Always => true,
                }
        })?;
        let fault = self.faults[i];
        if let Trigger::At(_) = fault.trigger {
            self.faults.remove(i);
        }
        Some(fault)
    }

    /// The id of the file at `path`, tracking it (`len` bytes, all durable)
    /// if it is not yet.
    fn track(&mut self, path: &Path, len: u64) -> u64 {
        if let Some(&id) = self.by_path.get(path) {
            return id;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.files.insert(
            id,
            Tracked {
                path: path.to_path_buf(),
                file: FileState::new(len),
            },
        );
        self.by_path.insert(path.to_path_buf(), id);
        id
    }

    /// Stops tracking the file at `path`, returning its id and state.
    fn untrack(&mut self, path: &Path) -> Option<(u64, FileState)> {
        let id = self.by_path.remove(path)?;
        let tracked = self.files.remove(&id).expect("tracked file of a path");
        Some((id, tracked.file))
    }

    /// Tracks again a file brought back at `path`.
    fn retrack(&mut self, path: PathBuf, id: u64, file: FileState) {
        self.forget_below(&path);
        self.by_path.insert(path.clone(), id);
        self.files.insert(id, Tracked { path, file });
    }

    /// Forgets the files at or below `path` (removed, replaced, or changed
    /// behind the storage's back).
    fn forget_below(&mut self, path: &Path) {
        let gone: Vec<PathBuf> = self
            .by_path
            .keys()
            .filter(|p| p.starts_with(path))
            .cloned()
            .collect();
        for p in gone {
            self.untrack(&p);
        }
    }

    /// Moves the files at or below `from` to below `to`.
    fn move_below(&mut self, from: &Path, to: &Path) {
        let moved: Vec<PathBuf> = self
            .by_path
            .keys()
            .filter(|p| p.starts_with(from))
            .cloned()
            .collect();
        let moved: Vec<(u64, PathBuf)> = moved
            .into_iter()
            .map(|p| {
                let id = self.by_path.remove(&p).expect("listed path");
                let rest = p.strip_prefix(from).expect("below from");
                let new = if rest.as_os_str().is_empty() {
                    to.to_path_buf()
                } else {
                    to.join(rest)
                };
                (id, new)
            })
            .collect();
        self.forget_below(to);
        for (id, new) in moved {
            self.files.get_mut(&id).expect("tracked file").path = new.clone();
            self.by_path.insert(new, id);
        }
    }

    /// Moves the page state of the tracked files in `removed` (the copy of
    /// what was at `base`) into it, and forgets everything below `base`.
    fn adopt(&mut self, base: &Path, removed: &mut Removed) {
        removed.for_each_file(base, &mut |path, slot| *slot = self.untrack(path));
        self.forget_below(base);
    }

    /// Writes back a removed entry at `path` and tracks its files again.
    fn bring_back(&mut self, path: &Path, removed: Removed) -> Result<()> {
        let files = removed
            .write(path)
            .map_err(|e| Error::io("power loss: bring back", path, e))?;
        for (path, id, file) in files {
            self.retrack(path, id, file);
        }
        Ok(())
    }

    /// Undoes a lost directory operation (all later operations on its paths
    /// are already undone or durable).
    fn undo(&mut self, op: DirOp) -> Result<()> {
        match op {
            DirOp::CreateFile(path) => {
                self.forget_below(&path);
                ok_if_missing(fs::remove_file(&path))
                    .map_err(|e| Error::io("power loss: undo create", path, e))
            }
            DirOp::CreateDir(path) => {
                self.forget_below(&path);
                ok_if_missing(fs::remove_dir_all(&path))
                    .map_err(|e| Error::io("power loss: undo create_dir", path, e))
            }
            DirOp::Rename { from, to, replaced } => {
                fs::rename(&to, &from).map_err(|e| Error::io("power loss: undo rename", &to, e))?;
                self.move_below(&to, &from);
                match replaced {
                    Some(replaced) => self.bring_back(&to, replaced),
                    None => Ok(()),
                }
            }
            DirOp::Remove { path, removed } => self.bring_back(&path, removed),
        }
    }

    /// Forgets everything unsynced: after a crash the disk is all there is.
    fn reset(&mut self) -> (BTreeMap<u64, Tracked>, Vec<DirOp>) {
        self.generation += 1;
        self.by_path.clear();
        (
            std::mem::take(&mut self.files),
            std::mem::take(&mut self.pending),
        )
    }
}

/// Ignores `NotFound`: removing what is already gone succeeds.
fn ok_if_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Replaces the content of `path` by rename, so that maps of the old file
/// keep their content.
fn replace_content(path: &Path, content: &[u8]) -> Result<()> {
    let mut temp = path.to_path_buf().into_os_string();
    temp.push(".crash-restore");
    let temp = PathBuf::from(temp);
    fs::write(&temp, content)
        .and_then(|()| fs::rename(&temp, path))
        .map_err(|e| Error::io("crash: restore", path, e))
}

struct Shared {
    std: StdStorage,
    state: Mutex<State>,
}

/// A [`Storage`] over real files that fails chosen operations and simulates
/// power loss; cheap to clone (clones share everything). See the module
/// documentation for the model.
#[derive(Clone)]
pub struct FaultyStorage {
    shared: Arc<Shared>,
}

impl Default for FaultyStorage {
    fn default() -> Self {
        FaultyStorage::new()
    }
}

impl fmt::Debug for FaultyStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.state.lock();
        f.debug_struct("FaultyStorage")
            .field("generation", &state.generation)
            .field("counts", &state.counts)
            .field("faults", &state.faults)
            .field("pending_dir_ops", &state.pending.len())
            .finish_non_exhaustive()
    }
}

impl FaultyStorage {
    /// A storage with no faults armed.
    #[must_use]
    pub fn new() -> Self {
        FaultyStorage {
            shared: Arc::new(Shared {
                std: StdStorage::new(),
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Chooses what later power losses leave in a torn page (see
    /// [`TornPages`]; the default is [`TornPages::Sectors`]).
    pub fn set_torn_pages(&self, torn: TornPages) {
        self.shared.state.lock().torn = torn;
    }

    /// Makes the `n`th call of `op` from now (1-based) fail with `kind`,
    /// once. A failed write writes nothing; a failed sync drops the pages
    /// it covered (see the module documentation).
    ///
    /// # Panics
    /// If `n` is 0.
    pub fn fail_nth(&self, op: FaultOp, n: u64, kind: FaultKind) {
        self.arm(op, n, kind, 0);
    }

    /// Makes the `n`th write from now (1-based) write the first `written`
    /// bytes of its buffer and then fail with `kind`, once.
    ///
    /// # Panics
    /// If `n` is 0.
    pub fn fail_nth_partial_write(&self, n: u64, kind: FaultKind, written: usize) {
        self.arm(FaultOp::Write, n, kind, written);
    }

    fn arm(&self, op: FaultOp, n: u64, kind: FaultKind, partial: usize) {
        assert!(n >= 1, "fail_nth counts from 1");
        let mut state = self.shared.state.lock();
        let at = state.counts[op.index()] + n;
        state.faults.push(Fault {
            op,
            kind,
            trigger: Trigger::At(at),
            partial,
        });
    }

    /// Makes every call of `op` from now on fail with `kind`, until
    /// [`clear_faults`](Self::clear_faults).
    pub fn fail_all_from_now(&self, op: FaultOp, kind: FaultKind) {
        self.shared.state.lock().faults.push(Fault {
            op,
            kind,
            trigger: Trigger::Always,
            partial: 0,
        });
    }

    /// Disarms every fault.
    pub fn clear_faults(&self) {
        self.shared.state.lock().faults.clear();
    }

    /// How many calls of `op` were made so far, failed ones included (calls
    /// on fenced handles are not counted).
    #[must_use]
    pub fn op_count(&self, op: FaultOp) -> u64 {
        self.shared.state.lock().counts[op.index()]
    }

    /// What a power loss could lose now.
    #[must_use]
    pub fn unsynced_summary(&self) -> UnsyncedSummary {
        let state = self.shared.state.lock();
        let mut summary = UnsyncedSummary {
            pending_dir_ops: state.pending.len() as u64,
            ..UnsyncedSummary::default()
        };
        for tracked in state.files.values() {
            let (dirty, dropped, length_changed) = tracked.file.counts();
            summary.dirty_pages += dirty;
            summary.dropped_pages += dropped;
            summary.files_with_length_change += u64::from(length_changed);
        }
        summary
    }

    /// The directory operations not yet durable, oldest first, described
    /// (`create file <path>`, `rename <from> to <to>`, ...): what a power
    /// loss may lose.
    #[must_use]
    pub fn pending_dir_ops(&self) -> Vec<String> {
        let state = self.shared.state.lock();
        state.pending.iter().map(ToString::to_string).collect()
    }

    /// Simulates a power loss as a kernel and disk may leave things: each
    /// dirty page kept, lost or zeroed, each changed length decided, each
    /// pending directory operation kept or lost, as the module documentation
    /// describes. Deterministic for a given seed and history.
    ///
    /// Afterwards, as after [`crash`](Self::crash): every file handle opened
    /// before fails all later calls; [`ReadMap`]s made before keep their old
    /// content; armed faults and counters are kept; everything on disk is
    /// durable.
    ///
    /// # Errors
    /// [`Error::Io`] if rewriting the files fails (they are then left
    /// half-way).
    pub fn power_loss(&self, seed: u64) -> Result<PowerLossReport> {
        let mut state = self.shared.state.lock();
        let mut rng = Rng::new(seed);
        let mut report = PowerLossReport::default();
        let pending = std::mem::take(&mut state.pending);
        let lost = names::choose_lost(&pending, &mut rng);
        for (op, lost) in pending.into_iter().zip(lost).rev() {
            if lost {
                report.dir_ops_lost += 1;
                state.undo(op)?;
            } else {
                report.dir_ops_kept += 1;
            }
        }
        let (files, _) = state.reset();
        // By path, not by when each file was first opened: the same files
        // get the same fate whatever order a process opened them in.
        let mut dirty: Vec<_> = files.values().filter(|t| !t.file.is_clean()).collect();
        dirty.sort_by(|a, b| a.path.cmp(&b.path));
        for tracked in dirty {
            let path = &tracked.path;
            let current = fs::read(path).map_err(|e| Error::io("power loss: read", path, e))?;
            let content =
                tracked
                    .file
                    .after_power_loss(&current, &mut rng, state.torn, &mut report);
            replace_content(path, &content)?;
        }
        Ok(report)
    }

    /// Simulates a power loss the simple way: every directory operation
    /// survives; every file written through this storage goes back to its
    /// content and length at its last successful sync (pages dropped by a
    /// failed sync included), except for what `tear` keeps of the most
    /// recent write since its file's last good sync. Every file handle
    /// opened before the crash fails all later calls; handles opened
    /// afterwards work normally. [`ReadMap`]s made before the crash stay
    /// readable with their old content (restored files are replaced by
    /// rename, not rewritten in place). Armed faults and counters are kept.
    ///
    /// # Errors
    /// [`Error::Io`] if restoring a file fails.
    pub fn crash(&self, tear: Tear) -> Result<()> {
        let mut state = self.shared.state.lock();
        let (files, _) = state.reset();
        let torn_seq = files
            .values()
            .filter_map(|t| t.file.last_write.as_ref())
            .map(|w| w.seq)
            .max();
        for tracked in files.values().filter(|t| !t.file.is_clean()) {
            let path = &tracked.path;
            let current = fs::read(path).map_err(|e| Error::io("crash: read", path, e))?;
            let mut content = tracked.file.durable_content(&current);
            if let Some(write) = &tracked.file.last_write
                && Some(write.seq) == torn_seq
            {
                let written = write.bytes.len();
                let keep = match tear {
                    Tear::None => 0,
                    Tear::KeepPrefix(n) => n.min(written),
                    Tear::Random(seed) => to_usize(splitmix64(seed) % (written as u64 + 1)),
                };
                // The torn prefix lands on the file as of its last sync.
                if keep > 0 {
                    let start = to_usize(write.position);
                    let end = start + keep;
                    if content.len() < end {
                        content.resize(end, 0);
                    }
                    content[start..end].copy_from_slice(&write.bytes[..keep]);
                }
            }
            replace_content(path, &content)?;
        }
        Ok(())
    }

    fn fenced(op: &'static str, path: &Path) -> Error {
        Error::io(
            op,
            path,
            io::Error::other("file handle from before a simulated power loss"),
        )
    }

    /// Locks the state, counting `op` and failing it if a fault is armed.
    fn check(
        &self,
        op: FaultOp,
        name: &'static str,
        path: &Path,
    ) -> Result<parking_lot::MutexGuard<'_, State>> {
        let mut state = self.shared.state.lock();
        match state.count(op) {
            Some(fault) => Err(Error::io(name, path, fault.kind.to_io())),
            None => Ok(state),
        }
    }

    /// Copies what is at `path`, if anything, before it is removed or
    /// replaced.
    fn copy_before_removal(op: &'static str, path: &Path) -> Result<Option<Removed>> {
        match fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(op, path, e)),
            Ok(_) => Removed::read(path)
                .map(Some)
                .map_err(|e| Error::io(op, path, e)),
        }
    }

    /// Removes what is at `path` with `remove` (the operation `name`,
    /// whose copy step is `copy`), keeping a copy of it as a pending
    /// directory operation that a power loss may undo.
    fn remove_keeping_copy(
        &self,
        name: &'static str,
        copy: &'static str,
        path: &Path,
        remove: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let mut state = self.check(FaultOp::Remove, name, path)?;
        let removed = Self::copy_before_removal(copy, path)?;
        remove()?;
        if let Some(mut removed) = removed {
            state.adopt(path, &mut removed);
            state.pending.push(DirOp::Remove {
                path: path.to_path_buf(),
                removed,
            });
        }
        Ok(())
    }
}

impl Storage for FaultyStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> Result<Arc<dyn StorageFile>> {
        let mut state = if matches!(mode, OpenMode::Existing | OpenMode::Read) {
            self.shared.state.lock()
        } else {
            self.check(FaultOp::Create, "create", path)?
        };
        let creates = match mode {
            OpenMode::Existing | OpenMode::Read => false,
            OpenMode::CreateNew => true,
            OpenMode::CreateOrOpen => fs::symlink_metadata(path).is_err(),
        };
        let inner = self.shared.std.open(path, mode)?;
        if creates {
            // A file at a path it knew was removed behind its back.
            state.forget_below(path);
            state.pending.push(DirOp::CreateFile(path.to_path_buf()));
        }
        let len = inner.len()?;
        let id = state.track(path, len);
        Ok(Arc::new(FaultyFile {
            inner,
            storage: self.clone(),
            id,
            generation: state.generation,
        }))
    }

    fn create_dir_all(&self, path: &Path) -> Result<()> {
        let mut state = self.shared.state.lock();
        let mut missing = Vec::new();
        let mut dir = Some(path);
        while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
            if fs::symlink_metadata(d).is_ok() {
                break;
            }
            missing.push(d.to_path_buf());
            dir = d.parent();
        }
        let result = self.shared.std.create_dir_all(path);
        for dir in missing.into_iter().rev() {
            if dir.is_dir() {
                state.pending.push(DirOp::CreateDir(dir));
            }
        }
        result
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        let mut state = self.check(FaultOp::Rename, "rename", from)?;
        if from == to {
            return self.shared.std.rename(from, to);
        }
        let replaced = Self::copy_before_removal("rename: copy target", to)?;
        self.shared.std.rename(from, to)?;
        let replaced = replaced.map(|mut replaced| {
            state.adopt(to, &mut replaced);
            replaced
        });
        state.move_below(from, to);
        state.pending.push(DirOp::Rename {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            replaced,
        });
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> Result<()> {
        self.remove_keeping_copy("remove_file", "remove_file: copy", path, || {
            self.shared.std.remove_file(path)
        })
    }

    fn remove_dir_all(&self, path: &Path) -> Result<()> {
        self.remove_keeping_copy("remove_dir_all", "remove_dir_all: copy", path, || {
            self.shared.std.remove_dir_all(path)
        })
    }

    fn list_dir(&self, path: &Path) -> Result<Vec<PathBuf>> {
        self.shared.std.list_dir(path)
    }

    fn exists(&self, path: &Path) -> bool {
        self.shared.std.exists(path)
    }

    fn sync_dir(&self, path: &Path) -> Result<()> {
        let mut state = self.check(FaultOp::SyncDir, "fsync directory", path)?;
        self.shared.std.sync_dir(path)?;
        names::sync_dir(&mut state.pending, path);
        Ok(())
    }

    fn lock_dir(&self, dir: &Path) -> Result<DirLock> {
        self.shared.std.lock_dir(dir)
    }
}

/// A file of [`FaultyStorage`].
#[derive(Debug)]
struct FaultyFile {
    inner: Arc<dyn StorageFile>,
    storage: FaultyStorage,
    /// Key of the file's tracked state (gone once removed or replaced).
    id: u64,
    /// The crash generation the handle was opened in.
    generation: u64,
}

impl FaultyFile {
    /// Locks the state, failing if this handle is fenced.
    fn alive(&self, op: &'static str) -> Result<parking_lot::MutexGuard<'_, State>> {
        let state = self.storage.shared.state.lock();
        if state.generation == self.generation {
            Ok(state)
        } else {
            Err(FaultyStorage::fenced(op, self.path()))
        }
    }
}

impl StorageFile for FaultyFile {
    fn path(&self) -> &Path {
        self.inner.path()
    }

    fn write_all_at(&self, buf: &[u8], position: u64) -> Result<()> {
        let mut state = self.alive("write")?;
        let fault = state.count(FaultOp::Write);
        let buf = &buf[..fault.map_or(buf.len(), |f| f.partial.min(buf.len()))];
        if !buf.is_empty() {
            if let Some(tracked) = state.files.get_mut(&self.id) {
                let len = self.inner.len()?;
                tracked
                    .file
                    .before_write(len, position, buf.len() as u64, &mut |out, at| {
                        self.inner.read_exact_at(out, at)
                    })?;
            }
            self.inner.write_all_at(buf, position)?;
            let seq = state.next_seq;
            state.next_seq += 1;
            if let Some(tracked) = state.files.get_mut(&self.id) {
                tracked.file.after_write(seq, position, buf);
            }
        }
        match fault {
            Some(f) => Err(Error::io("write", self.path(), f.kind.to_io())),
            None => Ok(()),
        }
    }

    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> Result<()> {
        let _state = self.alive("read")?;
        self.inner.read_exact_at(buf, position)
    }

    fn sync(&self) -> Result<()> {
        let mut state = self.alive("fsync")?;
        let result = match state.count(FaultOp::Sync) {
            Some(f) => Err(Error::io("fsync", self.path(), f.kind.to_io())),
            None => self.inner.sync(),
        };
        let Some(tracked) = state.files.get_mut(&self.id) else {
            return result;
        };
        match result {
            Ok(()) => {
                tracked.file.synced(self.inner.len()?);
                Ok(())
            }
            Err(e) => {
                tracked.file.sync_failed();
                Err(e)
            }
        }
    }

    fn len(&self) -> Result<u64> {
        let _state = self.alive("stat")?;
        self.inner.len()
    }

    fn set_len(&self, len: u64) -> Result<()> {
        let mut state = self.alive("set_len")?;
        if let Some(f) = state.count(FaultOp::SetLen) {
            return Err(Error::io("set_len", self.path(), f.kind.to_io()));
        }
        if let Some(tracked) = state.files.get_mut(&self.id) {
            let old = self.inner.len()?;
            tracked
                .file
                .before_set_len(old, len, &mut |out, at| self.inner.read_exact_at(out, at))?;
        }
        self.inner.set_len(len)?;
        if let Some(tracked) = state.files.get_mut(&self.id) {
            tracked.file.after_set_len(len);
        }
        Ok(())
    }

    fn map(&self, len: usize) -> Result<Arc<ReadMap>> {
        let _state = self.alive("mmap")?;
        self.inner.map(len)
    }
}
