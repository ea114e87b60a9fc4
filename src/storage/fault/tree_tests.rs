//! [`FaultyStorage::power_loss`] on directory trees, checked against a
//! model that keeps entries by directory identity (as inodes do), not by
//! path as the storage does: random creations, renames and removals of
//! directories and files, and directory syncs. File content is always
//! synced, so each file is identified by its content.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::tests::tempdir;
use super::*;

/// Directories `d0..` in the root, each holding files `f0..`.
const DIRS: usize = 3;
const FILES: usize = 2;

#[derive(Debug, Clone)]
enum Op {
    MakeDir(usize),
    CreateFile(usize, usize),
    RenameFile((usize, usize), (usize, usize)),
    RenameDir(usize, usize),
    RemoveFile(usize, usize),
    RemoveDir(usize),
    /// `None`: the root.
    SyncDir(Option<usize>),
}

fn op() -> impl Strategy<Value = Op> {
    let file = || (0..DIRS, 0..FILES);
    prop_oneof![
        3 => (0..DIRS).prop_map(Op::MakeDir),
        3 => file().prop_map(|(d, f)| Op::CreateFile(d, f)),
        3 => (file(), file()).prop_map(|(from, to)| Op::RenameFile(from, to)),
        3 => (0..DIRS, 0..DIRS).prop_map(|(from, to)| Op::RenameDir(from, to)),
        1 => file().prop_map(|(d, f)| Op::RemoveFile(d, f)),
        1 => (0..DIRS).prop_map(Op::RemoveDir),
        3 => prop::option::of(0..DIRS).prop_map(Op::SyncDir),
    ]
}

fn dir_name(d: usize) -> String {
    format!("d{d}")
}

fn file_path(d: usize, f: usize) -> PathBuf {
    Path::new(&dir_name(d)).join(format!("f{f}"))
}

/// A node: a directory (entries by name) or a file (its content is its
/// node number).
#[derive(Debug, Clone)]
enum Node {
    Dir(BTreeMap<String, usize>),
    File,
}

/// An entry: a directory node and a name in it.
type Entry = (usize, String);

#[derive(Debug, Clone)]
enum Kind {
    Link(Entry, usize),
    Move(Entry, Entry, usize),
    Unlink(Entry, usize),
}

/// A directory operation of the model.
#[derive(Debug, Clone)]
struct Change {
    kind: Kind,
    /// The paths it touched, when it happened.
    paths: Vec<PathBuf>,
    /// Earlier operations, pending when it happened, that a durable `self`
    /// needs: on one of its entries, or inside what it moved or removed.
    needs: Vec<usize>,
    durable: bool,
}

impl Change {
    fn entries(&self) -> Vec<&Entry> {
        match &self.kind {
            Kind::Link(entry, _) | Kind::Unlink(entry, _) => vec![entry],
            Kind::Move(from, to, _) => vec![from, to],
        }
    }
}

/// The model: nodes (0 is the root) with their current entries, and every
/// directory operation in order.
#[derive(Debug)]
struct Model {
    nodes: Vec<Node>,
    changes: Vec<Change>,
}

fn children(nodes: &[Node], dir: usize) -> &BTreeMap<String, usize> {
    match &nodes[dir] {
        Node::Dir(children) => children,
        Node::File => panic!("node {dir} is a file"),
    }
}

fn children_mut(nodes: &mut [Node], dir: usize) -> &mut BTreeMap<String, usize> {
    match &mut nodes[dir] {
        Node::Dir(children) => children,
        Node::File => panic!("node {dir} is a file"),
    }
}

/// Applies a change to `nodes`; `false` if it cannot apply (an entry it
/// needs is missing or taken).
fn apply(nodes: &mut [Node], kind: &Kind) -> bool {
    match kind {
        Kind::Link((dir, name), node) => children_mut(nodes, *dir)
            .insert(name.clone(), *node)
            .is_none(),
        Kind::Move((from_dir, from), (to_dir, to), node) => {
            if children(nodes, *from_dir).get(from) != Some(node) {
                return false;
            }
            children_mut(nodes, *from_dir).remove(from);
            children_mut(nodes, *to_dir).insert(to.clone(), *node);
            true
        }
        Kind::Unlink((dir, name), node) => {
            children_mut(nodes, *dir).get(name) == Some(node)
                && children_mut(nodes, *dir).remove(name).is_some()
        }
    }
}

/// The tree below the root: each path, with `None` for a directory and the
/// file's number for a file.
type Tree = BTreeMap<PathBuf, Option<u64>>;

fn tree(nodes: &[Node]) -> Tree {
    fn walk(nodes: &[Node], dir: usize, at: &Path, out: &mut Tree) {
        for (name, &node) in children(nodes, dir) {
            let path = at.join(name);
            match nodes[node] {
                Node::Dir(_) => {
                    out.insert(path.clone(), None);
                    walk(nodes, node, &path, out);
                }
                Node::File => {
                    out.insert(path, Some(node as u64));
                }
            }
        }
    }
    let mut out = Tree::new();
    walk(nodes, 0, Path::new(""), &mut out);
    out
}

fn read_tree(root: &Path) -> Tree {
    fn walk(root: &Path, at: &Path, out: &mut Tree) {
        for entry in fs::read_dir(root.join(at)).unwrap() {
            let entry = entry.unwrap();
            let path = at.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                out.insert(path.clone(), None);
                walk(root, &path, out);
            } else {
                let bytes: [u8; 8] = fs::read(entry.path()).unwrap().try_into().unwrap();
                out.insert(path, Some(u64::from_le_bytes(bytes)));
            }
        }
    }
    let mut out = Tree::new();
    walk(root, Path::new(""), &mut out);
    out
}

impl Model {
    fn new() -> Self {
        Model {
            nodes: vec![Node::Dir(BTreeMap::new())],
            changes: Vec::new(),
        }
    }

    /// The node at `dir` in the root, if any.
    fn dir(&self, d: usize) -> Option<usize> {
        children(&self.nodes, 0).get(&dir_name(d)).copied()
    }

    fn file(&self, d: usize, f: usize) -> Option<usize> {
        let dir = self.dir(d)?;
        children(&self.nodes, dir).get(&format!("f{f}")).copied()
    }

    /// Whether `node` is `ancestor` or lies below it now.
    fn within(&self, mut node: usize, ancestor: usize) -> bool {
        loop {
            if node == ancestor {
                return true;
            }
            let parent = (0..self.nodes.len()).find(|&n| {
                matches!(&self.nodes[n], Node::Dir(c) if c.values().any(|&child| child == node))
            });
            match parent {
                Some(parent) => node = parent,
                None => return false,
            }
        }
    }

    /// Records and applies a change.
    fn change(&mut self, kind: Kind, paths: Vec<PathBuf>) {
        let entries: Vec<Entry> = match &kind {
            Kind::Link(entry, _) | Kind::Unlink(entry, _) => vec![entry.clone()],
            Kind::Move(from, to, _) => vec![from.clone(), to.clone()],
        };
        // The nodes whose subtrees it moves or removes: what it unlinks or
        // replaces.
        let affected: Vec<usize> = entries
            .iter()
            .filter_map(|(dir, name)| children(&self.nodes, *dir).get(name).copied())
            .collect();
        let needs = (0..self.changes.len())
            .filter(|&j| {
                let earlier = &self.changes[j];
                !earlier.durable
                    && earlier.entries().into_iter().any(|e| {
                        entries.contains(e) || affected.iter().any(|&a| self.within(e.0, a))
                    })
            })
            .collect();
        assert!(apply(&mut self.nodes, &kind), "the history applies");
        self.changes.push(Change {
            kind,
            paths,
            needs,
            durable: false,
        });
    }

    fn sync_dir(&mut self, dir: usize) {
        for i in (0..self.changes.len()).rev() {
            let change = &self.changes[i];
            if !change.durable && change.entries().iter().any(|(d, _)| *d == dir) {
                self.changes[i].durable = true;
            }
            if self.changes[i].durable {
                for j in self.changes[i].needs.clone() {
                    self.changes[j].durable = true;
                }
            }
        }
    }

    /// Whether some choice of lost pending operations (each one lost when
    /// an earlier lost one touched one of its paths, an ancestor or a
    /// descendant) replays, by node, into `observed`.
    fn allows(&self, observed: &Tree) -> bool {
        let pending: Vec<usize> = (0..self.changes.len())
            .filter(|&i| !self.changes[i].durable)
            .collect();
        let mut lost = vec![false; self.changes.len()];
        self.search(&pending, &mut lost, &mut Vec::new(), observed)
    }

    fn search(
        &self,
        pending: &[usize],
        lost: &mut Vec<bool>,
        lost_paths: &mut Vec<PathBuf>,
        observed: &Tree,
    ) -> bool {
        let Some((&i, rest)) = pending.split_first() else {
            return self.replay(lost).as_ref() == Some(observed);
        };
        let paths = &self.changes[i].paths;
        let forced = paths.iter().any(|p| {
            lost_paths
                .iter()
                .any(|l| p.starts_with(l) || l.starts_with(p))
        });
        if !forced && self.search(rest, lost, lost_paths, observed) {
            return true;
        }
        lost[i] = true;
        let before = lost_paths.len();
        lost_paths.extend(paths.iter().cloned());
        let found = self.search(rest, lost, lost_paths, observed);
        lost_paths.truncate(before);
        lost[i] = false;
        found
    }

    /// The tree the changes not lost leave, from empty directories.
    fn replay(&self, lost: &[bool]) -> Option<Tree> {
        let mut nodes: Vec<Node> = self
            .nodes
            .iter()
            .map(|node| match node {
                Node::Dir(_) => Node::Dir(BTreeMap::new()),
                Node::File => Node::File,
            })
            .collect();
        for (change, &lost) in self.changes.iter().zip(lost) {
            if !lost && !apply(&mut nodes, &change.kind) {
                return None;
            }
        }
        Some(tree(&nodes))
    }
}

/// Runs `ops` on a `FaultyStorage` in `root` and on the model, then
/// simulates a power loss with `seed`; returns the model and the tree left.
fn run(root: &Path, ops: &[Op], seed: u64) -> Result<(Model, Tree)> {
    let storage = FaultyStorage::new();
    let mut model = Model::new();
    let path = |p: &Path| root.join(p);
    for op in ops {
        match *op {
            Op::MakeDir(d) => {
                if model.dir(d).is_none() {
                    storage.create_dir_all(&path(Path::new(&dir_name(d))))?;
                    let node = model.nodes.len();
                    model.nodes.push(Node::Dir(BTreeMap::new()));
                    model.change(
                        Kind::Link((0, dir_name(d)), node),
                        vec![PathBuf::from(dir_name(d))],
                    );
                }
            }
            Op::CreateFile(d, f) => {
                if let Some(dir) = model.dir(d)
                    && model.file(d, f).is_none()
                {
                    let node = model.nodes.len();
                    let file = storage.open(&path(&file_path(d, f)), OpenMode::CreateNew)?;
                    file.write_all_at(&(node as u64).to_le_bytes(), 0)?;
                    file.sync()?;
                    model.nodes.push(Node::File);
                    model.change(
                        Kind::Link((dir, format!("f{f}")), node),
                        vec![file_path(d, f)],
                    );
                }
            }
            Op::RenameFile((d, f), (to_d, to_f)) => {
                if let (Some(node), Some(to_dir)) = (model.file(d, f), model.dir(to_d))
                    && (d, f) != (to_d, to_f)
                {
                    storage.rename(&path(&file_path(d, f)), &path(&file_path(to_d, to_f)))?;
                    let from_dir = model.dir(d).expect("its directory");
                    model.change(
                        Kind::Move(
                            (from_dir, format!("f{f}")),
                            (to_dir, format!("f{to_f}")),
                            node,
                        ),
                        vec![file_path(d, f), file_path(to_d, to_f)],
                    );
                }
            }
            Op::RenameDir(d, to) => {
                let target_empty = model
                    .dir(to)
                    .is_none_or(|t| children(&model.nodes, t).is_empty());
                if let Some(node) = model.dir(d)
                    && d != to
                    && target_empty
                {
                    storage.rename(
                        &path(Path::new(&dir_name(d))),
                        &path(Path::new(&dir_name(to))),
                    )?;
                    model.change(
                        Kind::Move((0, dir_name(d)), (0, dir_name(to)), node),
                        vec![PathBuf::from(dir_name(d)), PathBuf::from(dir_name(to))],
                    );
                }
            }
            Op::RemoveFile(d, f) => {
                storage.remove_file(&path(&file_path(d, f)))?;
                if let Some(node) = model.file(d, f) {
                    let dir = model.dir(d).expect("its directory");
                    model.change(
                        Kind::Unlink((dir, format!("f{f}")), node),
                        vec![file_path(d, f)],
                    );
                }
            }
            Op::RemoveDir(d) => {
                storage.remove_dir_all(&path(Path::new(&dir_name(d))))?;
                if let Some(node) = model.dir(d) {
                    model.change(
                        Kind::Unlink((0, dir_name(d)), node),
                        vec![PathBuf::from(dir_name(d))],
                    );
                }
            }
            Op::SyncDir(None) => {
                storage.sync_dir(root)?;
                model.sync_dir(0);
            }
            Op::SyncDir(Some(d)) => {
                if let Some(dir) = model.dir(d) {
                    storage.sync_dir(&path(Path::new(&dir_name(d))))?;
                    model.sync_dir(dir);
                }
            }
        }
    }
    assert_eq!(read_tree(root), tree(&model.nodes), "before the power loss");
    storage.power_loss(seed)?;
    Ok((model, read_tree(root)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn power_loss_leaves_a_tree_the_model_allows(
        ops in prop::collection::vec(op(), 1..28),
        seed in any::<u64>(),
    ) {
        let (first, second) = (tempdir(), tempdir());
        let (model, after) = run(first.path(), &ops, seed)?;
        prop_assert!(
            model.allows(&after),
            "not a tree the model allows: {after:?}\nchanges: {:#?}",
            model.changes
        );
        let (_, again) = run(second.path(), &ops, seed)?;
        prop_assert_eq!(again, after, "not deterministic");
    }
}
