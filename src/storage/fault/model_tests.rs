//! [`FaultyStorage::power_loss`] checked against an independent model of the
//! documented rules over random histories, and its randomness checked to
//! reach every outcome.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;

use super::tests::tempdir;
use super::*;

const PAGE: u64 = pages::PAGE;
const SECTOR: usize = pages::SECTOR as usize;
const DIRS: [&str; 2] = ["a", "b"];
/// File names per directory; a slot is one of the `DIRS.len() * NAMES`
/// paths `<dir>/<n>`.
const NAMES: usize = 3;
const SLOTS: usize = DIRS.len() * NAMES;

fn slot_path(root: &Path, slot: usize) -> PathBuf {
    root.join(DIRS[slot / NAMES])
        .join((slot % NAMES).to_string())
}

#[derive(Debug, Clone)]
enum Op {
    /// On the `slot`th file present (modulo), like `SetLen` and `Sync`.
    Write {
        slot: usize,
        position: u64,
        len: u64,
        fill: u8,
    },
    SetLen {
        slot: usize,
        len: u64,
    },
    Sync {
        slot: usize,
        fail: bool,
    },
    Create {
        slot: usize,
    },
    Rename {
        from: usize,
        to: usize,
    },
    Remove {
        slot: usize,
    },
    SyncDir {
        dir: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..SLOTS, 0..3 * PAGE + 100, 1..PAGE + 600, 1..=255u8)
            .prop_map(|(slot, position, len, fill)| Op::Write { slot, position, len, fill }),
        1 => (0..SLOTS, 0..4 * PAGE).prop_map(|(slot, len)| Op::SetLen { slot, len }),
        3 => (0..SLOTS, prop::bool::weighted(0.3)).prop_map(|(slot, fail)| Op::Sync { slot, fail }),
        3 => (0..SLOTS).prop_map(|slot| Op::Create { slot }),
        3 => (0..SLOTS, 1..SLOTS)
            .prop_map(|(from, step)| Op::Rename { from, to: (from + step) % SLOTS }),
        1 => (0..SLOTS).prop_map(|slot| Op::Remove { slot }),
        1 => (0..DIRS.len()).prop_map(|dir| Op::SyncDir { dir }),
    ]
}

fn data(len: u64, fill: u8) -> Vec<u8> {
    (0..len)
        .map(|i| fill.wrapping_add((i % 251) as u8))
        .collect()
}

/// A file of the model: its durable and current content and its pages.
#[derive(Debug, Clone, Default)]
struct Inode {
    durable: Vec<u8>,
    current: Vec<u8>,
    dirty: BTreeSet<u64>,
    dropped: BTreeSet<u64>,
}

impl Inode {
    fn touch(&mut self, start: u64, end: u64) {
        if start < end {
            for page in start / PAGE..=(end - 1) / PAGE {
                self.dirty.insert(page);
                self.dropped.remove(&page);
            }
        }
    }

    fn write(&mut self, position: u64, bytes: &[u8]) {
        let len = self.current.len() as u64;
        let end = position + bytes.len() as u64;
        self.touch(
            if end > len {
                position.min(len)
            } else {
                position
            },
            end,
        );
        let (position, end) = (position as usize, end as usize);
        if self.current.len() < end {
            self.current.resize(end, 0);
        }
        self.current[position..end].copy_from_slice(bytes);
    }

    fn set_len(&mut self, new: u64) {
        let len = self.current.len() as u64;
        self.touch(len.min(new), len.max(new));
        self.current.resize(new as usize, 0);
    }

    fn synced(&mut self) {
        let mut durable = self.current.clone();
        for &page in &self.dropped {
            let start = (page * PAGE) as usize;
            if start >= durable.len() {
                continue;
            }
            let end = (start + PAGE as usize).min(durable.len());
            for (i, byte) in durable[start..end].iter_mut().enumerate() {
                *byte = self.durable.get(start + i).copied().unwrap_or(0);
            }
        }
        self.durable = durable;
        self.dirty.clear();
        let len = self.durable.len() as u64;
        self.dropped.retain(|&page| page * PAGE < len);
    }

    fn sync_failed(&mut self) {
        self.dropped.append(&mut self.dirty);
    }

    /// Whether a power loss tearing pages as `torn` says may leave the file
    /// holding `actual`.
    fn allows(&self, actual: &[u8], torn: TornPages) -> bool {
        let (current, durable, len) = (
            self.current.len() as u64,
            self.durable.len() as u64,
            actual.len() as u64,
        );
        let len_ok = if current > durable {
            len == durable || len == current || (len > durable && len < current && len % PAGE == 0)
        } else {
            len == current || len == durable
        };
        if !len_ok {
            return false;
        }
        let shrink_lost = len > current;
        let byte = |bytes: &[u8], i: usize| bytes.get(i).copied().unwrap_or(0);
        (0..len.div_ceil(PAGE)).all(|page| {
            let start = (page * PAGE) as usize;
            let end = (start + PAGE as usize).min(actual.len());
            let got = &actual[start..end];
            let old: Vec<u8> = (start..end).map(|i| byte(&self.durable, i)).collect();
            let new: Vec<u8> = (start..end).map(|i| byte(&self.current, i)).collect();
            if self.dirty.contains(&page) && !(shrink_lost && start as u64 >= current) {
                match torn {
                    TornPages::Zeroed => got == old || got == new || got.iter().all(|&b| b == 0),
                    // Each sector old or new: the page kept, lost or torn.
                    TornPages::Sectors => (0..got.len()).step_by(SECTOR).all(|s| {
                        let e = (s + SECTOR).min(got.len());
                        got[s..e] == old[s..e] || got[s..e] == new[s..e]
                    }),
                }
            } else {
                // Synced, dropped, or cut by a lost truncation.
                got == old
            }
        })
    }
}

/// A directory operation of the model.
#[derive(Debug, Clone, Copy)]
enum DirChange {
    Create { slot: usize, inode: usize },
    Rename { from: usize, to: usize },
    Remove { slot: usize },
}

impl DirChange {
    fn slots(self) -> u32 {
        match self {
            DirChange::Create { slot, .. } | DirChange::Remove { slot } => 1 << slot,
            DirChange::Rename { from, to } => 1 << from | 1 << to,
        }
    }

    fn apply(self, names: &mut BTreeMap<usize, usize>) {
        match self {
            DirChange::Create { slot, inode } => {
                names.insert(slot, inode);
            }
            DirChange::Rename { from, to } => {
                let inode = names.remove(&from).expect("renamed file");
                names.insert(to, inode);
            }
            DirChange::Remove { slot } => {
                names.remove(&slot);
            }
        }
    }
}

/// The model: files, the current and the durable directory entries, and
/// the directory operations not yet durable.
#[derive(Debug, Default)]
struct Model {
    inodes: Vec<Inode>,
    names: BTreeMap<usize, usize>,
    /// The durable operations applied in order to the starting (empty)
    /// directories. Reordering them before the pending ones is sound: a
    /// durable operation never follows a pending one on the same path.
    durable_names: BTreeMap<usize, usize>,
    pending: Vec<DirChange>,
    /// What the storage leaves in a torn page.
    torn: TornPages,
}

impl Model {
    /// The `n`th (modulo) file present, for the operations on content.
    fn file(&self, n: usize) -> Option<usize> {
        let present = self.names.len();
        (present > 0).then(|| *self.names.values().nth(n % present).expect("n < present"))
    }

    fn sync_dir(&mut self, dir: usize) {
        let in_dir: u32 = ((1 << NAMES) - 1) << (dir * NAMES);
        let mut durable = vec![false; self.pending.len()];
        for i in (0..self.pending.len()).rev() {
            durable[i] |= self.pending[i].slots() & in_dir != 0;
            if durable[i] {
                let slots = self.pending[i].slots();
                for (flag, earlier) in durable[..i].iter_mut().zip(&self.pending) {
                    *flag |= earlier.slots() & slots != 0;
                }
            }
        }
        let mut still = Vec::new();
        for (change, durable) in self.pending.drain(..).zip(durable) {
            if durable {
                change.apply(&mut self.durable_names);
            } else {
                still.push(change);
            }
        }
        self.pending = still;
    }

    /// Whether some choice of lost pending operations (an operation on a
    /// path an earlier lost one touched being lost too) leaves exactly the
    /// files `observed`, each with a content its file allows.
    fn allows(&self, observed: &BTreeMap<usize, Vec<u8>>) -> bool {
        let allowed: Vec<Vec<bool>> = (0..SLOTS)
            .map(|slot| {
                self.inodes
                    .iter()
                    .map(|inode| {
                        observed
                            .get(&slot)
                            .is_some_and(|c| inode.allows(c, self.torn))
                    })
                    .collect()
            })
            .collect();
        self.search(0, 0, self.durable_names.clone(), observed, &allowed)
    }

    fn search(
        &self,
        i: usize,
        lost: u32,
        names: BTreeMap<usize, usize>,
        observed: &BTreeMap<usize, Vec<u8>>,
        allowed: &[Vec<bool>],
    ) -> bool {
        let Some(&change) = self.pending.get(i) else {
            return names.keys().eq(observed.keys())
                && names.iter().all(|(&slot, &inode)| allowed[slot][inode]);
        };
        if change.slots() & lost == 0 {
            let mut kept = names.clone();
            change.apply(&mut kept);
            if self.search(i + 1, lost, kept, observed, allowed) {
                return true;
            }
        }
        self.search(i + 1, lost | change.slots(), names, observed, allowed)
    }
}

/// A short description of files: each page's first byte.
fn describe(files: &BTreeMap<usize, Vec<u8>>) -> String {
    files
        .iter()
        .map(|(slot, content)| {
            let pages: Vec<u8> = content.chunks(PAGE as usize).map(|page| page[0]).collect();
            format!(
                "slot {slot}: {} bytes, pages start {pages:?}",
                content.len()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl Model {
    /// A short description: entries, pending operations and each file's
    /// lengths and pages.
    fn describe(&self) -> String {
        let inodes: Vec<String> = self
            .inodes
            .iter()
            .enumerate()
            .map(|(i, inode)| {
                let first = |bytes: &[u8]| -> Vec<u8> {
                    bytes.chunks(PAGE as usize).map(|page| page[0]).collect()
                };
                format!(
                    "inode {i}: durable {} bytes {:?}, current {} bytes {:?}, dirty {:?}, dropped {:?}",
                    inode.durable.len(),
                    first(&inode.durable),
                    inode.current.len(),
                    first(&inode.current),
                    inode.dirty,
                    inode.dropped
                )
            })
            .collect();
        format!(
            "names {:?}, durable names {:?}, pending {:?}\n{}",
            self.names,
            self.durable_names,
            self.pending,
            inodes.join("\n")
        )
    }
}

/// What a run leaves: the report and each file's content, by slot.
type Outcome = (PowerLossReport, BTreeMap<usize, Vec<u8>>);

/// What every history starts with: a durable file of two and a half pages
/// in each directory.
fn prelude() -> Vec<Op> {
    let mut ops = Vec::new();
    for slot in [0, NAMES] {
        ops.extend([
            Op::Create { slot },
            Op::Write {
                slot: usize::from(slot != 0),
                position: 0,
                len: 2 * PAGE + PAGE / 2,
                fill: 1 + slot as u8,
            },
        ]);
    }
    ops.extend([
        Op::Sync {
            slot: 0,
            fail: false,
        },
        Op::Sync {
            slot: 1,
            fail: false,
        },
        Op::SyncDir { dir: 0 },
        Op::SyncDir { dir: 1 },
    ]);
    ops
}

/// Runs the prelude and `ops` on a `FaultyStorage` in `root` and on the
/// model, then simulates a power loss with `seed`.
fn run(root: &Path, ops: &[Op], seed: u64, torn: TornPages) -> Result<(Model, Outcome)> {
    for dir in DIRS {
        fs::create_dir(root.join(dir)).unwrap(); // durable before it all
    }
    let storage = FaultyStorage::new();
    storage.set_torn_pages(torn);
    let mut model = Model {
        torn,
        ..Model::default()
    };
    let mut handles: BTreeMap<usize, Arc<dyn StorageFile>> = BTreeMap::new();
    for op in prelude().iter().chain(ops) {
        match *op {
            Op::Write {
                slot,
                position,
                len,
                fill,
            } => {
                if let Some(inode) = model.file(slot) {
                    let bytes = data(len, fill);
                    handles[&inode].write_all_at(&bytes, position)?;
                    model.inodes[inode].write(position, &bytes);
                }
            }
            Op::SetLen { slot, len } => {
                if let Some(inode) = model.file(slot) {
                    handles[&inode].set_len(len)?;
                    model.inodes[inode].set_len(len);
                }
            }
            Op::Sync { slot, fail } => {
                if let Some(inode) = model.file(slot) {
                    if fail {
                        storage.fail_nth(FaultOp::Sync, 1, FaultKind::Eio);
                        assert!(handles[&inode].sync().is_err());
                        model.inodes[inode].sync_failed();
                    } else {
                        handles[&inode].sync()?;
                        model.inodes[inode].synced();
                    }
                }
            }
            Op::Create { slot } => {
                let path = slot_path(root, slot);
                if model.names.contains_key(&slot) {
                    storage.open(&path, OpenMode::CreateOrOpen)?; // no entry created
                } else {
                    let inode = model.inodes.len();
                    handles.insert(inode, storage.open(&path, OpenMode::CreateNew)?);
                    model.inodes.push(Inode::default());
                    model.names.insert(slot, inode);
                    model.pending.push(DirChange::Create { slot, inode });
                }
            }
            Op::Rename { from, to } => {
                if model.names.contains_key(&from) {
                    storage.rename(&slot_path(root, from), &slot_path(root, to))?;
                    DirChange::Rename { from, to }.apply(&mut model.names);
                    model.pending.push(DirChange::Rename { from, to });
                }
            }
            Op::Remove { slot } => {
                storage.remove_file(&slot_path(root, slot))?;
                if model.names.remove(&slot).is_some() {
                    model.pending.push(DirChange::Remove { slot });
                }
            }
            Op::SyncDir { dir } => {
                storage.sync_dir(&root.join(DIRS[dir]))?;
                model.sync_dir(dir);
            }
        }
    }
    // Before the power loss the files are what the process wrote.
    for slot in 0..SLOTS {
        let expected = model
            .names
            .get(&slot)
            .map(|&inode| model.inodes[inode].current.clone());
        assert_eq!(
            fs::read(slot_path(root, slot)).ok(),
            expected,
            "slot {slot}"
        );
    }

    let report = storage.power_loss(seed)?;
    let mut files = BTreeMap::new();
    for (d, dir) in DIRS.iter().enumerate() {
        for entry in fs::read_dir(root.join(dir)).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            let n: usize = name
                .parse()
                .unwrap_or_else(|_| panic!("stray file {dir}/{name}"));
            files.insert(d * NAMES + n, fs::read(entry.path()).unwrap());
        }
    }
    Ok((model, (report, files)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn power_loss_leaves_a_state_the_model_allows(
        ops in prop::collection::vec(op(), 1..32),
        seed in any::<u64>(),
        zeroed in any::<bool>(),
    ) {
        let torn = if zeroed { TornPages::Zeroed } else { TornPages::Sectors };
        let (first, second) = (tempdir(), tempdir());
        let (model, outcome) = run(first.path(), &ops, seed, torn)?;
        let (report, files) = &outcome;
        prop_assert!(
            model.allows(files),
            "not a state the model allows: {}\nmodel: {}\nreport: {report:?}",
            describe(files),
            model.describe(),
        );
        prop_assert_eq!(
            report.dir_ops_kept + report.dir_ops_lost,
            model.pending.len() as u64
        );
        // Deterministic: the same history and seed, elsewhere, give the same.
        let (_, again) = run(second.path(), &ops, seed, torn)?;
        prop_assert!(
            again == outcome,
            "not deterministic: {} / {:?}, then {} / {:?}",
            describe(&outcome.1),
            outcome.0,
            describe(&again.1),
            again.0,
        );
    }
}

#[test]
fn every_outcome_happens_over_seeds() -> Result<()> {
    let page = PAGE as usize;
    let mut total = PowerLossReport::default();
    let mut reports = BTreeSet::new();
    for seed in 0..48 {
        let dir = tempdir();
        let root = dir.path();
        let storage = FaultyStorage::new();
        let durable = |name: &str, len: usize| -> Result<Arc<dyn StorageFile>> {
            let file = storage.open(&root.join(name), OpenMode::CreateNew)?;
            file.write_all_at(&vec![7; len], 0)?;
            file.sync()?;
            Ok(file)
        };
        let grows = durable("grows", page)?;
        let shrinks = durable("shrinks", 3 * page)?;
        let drops = durable("drops", page)?;
        durable("removed", 10)?;
        storage.sync_dir(root)?;

        grows.write_all_at(&[1; 10], 0)?;
        grows.write_all_at(&[2; 10], 4 * PAGE + 10)?; // boundaries between
        shrinks.set_len(100)?;
        drops.write_all_at(&[3; 10], 0)?;
        storage.fail_nth(FaultOp::Sync, 1, FaultKind::Eio);
        assert!(drops.sync().is_err());
        storage.open(&root.join("created"), OpenMode::CreateNew)?;
        storage.rename(&root.join("created"), &root.join("renamed"))?;
        storage.remove_file(&root.join("removed"))?;

        let report = storage.power_loss(seed)?;
        total.pages_kept += report.pages_kept;
        total.pages_lost += report.pages_lost;
        total.pages_torn += report.pages_torn;
        total.pages_dropped_by_failed_sync += report.pages_dropped_by_failed_sync;
        total.files_with_length_change_kept += report.files_with_length_change_kept;
        total.files_with_length_change_lost += report.files_with_length_change_lost;
        total.files_with_length_change_partial += report.files_with_length_change_partial;
        total.dir_ops_kept += report.dir_ops_kept;
        total.dir_ops_lost += report.dir_ops_lost;
        reports.insert(format!("{report:?}"));
    }
    for (what, count) in [
        ("pages kept", total.pages_kept),
        ("pages lost", total.pages_lost),
        ("pages torn", total.pages_torn),
        ("pages dropped", total.pages_dropped_by_failed_sync),
        ("lengths kept", total.files_with_length_change_kept),
        ("lengths lost", total.files_with_length_change_lost),
        ("lengths partial", total.files_with_length_change_partial),
        ("dir ops kept", total.dir_ops_kept),
        ("dir ops lost", total.dir_ops_lost),
    ] {
        assert!(count > 0, "no {what} over 48 seeds: {total:?}");
    }
    assert!(reports.len() > 10, "{reports:?}");
    Ok(())
}
