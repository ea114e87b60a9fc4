//! Unit tests of `FaultyStorage`: faults, `crash` and `power_loss`.
use proptest::prelude::*;

use super::*;
use crate::storage::write_atomic;

fn io_parts(err: Error) -> (&'static str, io::Error) {
    match err {
        Error::Io { op, source, .. } => (op, source),
        other => panic!("expected an I/O error, got {other}"),
    }
}

/// A temporary directory, on tmpfs when there is one: the simulated power
/// loss does not depend on real fsyncs, and these tests make many.
pub(super) fn tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().unwrap()
}

/// A new `FaultyStorage` over a temporary directory (keep it alive), and
/// the path and handle of a file `f` just created in it.
fn new_file() -> Result<(
    tempfile::TempDir,
    FaultyStorage,
    PathBuf,
    Arc<dyn StorageFile>,
)> {
    let dir = tempdir();
    let storage = FaultyStorage::new();
    let path = dir.path().join("f");
    let file = storage.open(&path, OpenMode::CreateNew)?;
    Ok((dir, storage, path, file))
}

/// Every operation through `file`, a handle from before a crash, fails
/// with an I/O error.
#[track_caller]
fn assert_fenced(file: &dyn StorageFile) {
    let mut buf = [0u8; 1];
    for err in [
        file.write_all_at(b"x", 0).unwrap_err(),
        file.read_exact_at(&mut buf, 0).unwrap_err(),
        file.sync().unwrap_err(),
        file.len().unwrap_err(),
        file.set_len(0).unwrap_err(),
        file.map(1).unwrap_err(),
    ] {
        assert!(matches!(err, Error::Io { .. }), "{err}");
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn nth_faults_fail_once_with_their_kind_and_are_counted() -> Result<()> {
    let (dir, storage, path, file) = new_file()?;
    assert_eq!(storage.op_count(FaultOp::Create), 1);

    storage.fail_nth(FaultOp::Write, 2, FaultKind::Enospc);
    file.write_all_at(b"a", 0)?;
    let (op, source) = io_parts(file.write_all_at(b"b", 1).unwrap_err());
    assert_eq!(op, "write");
    assert_eq!(source.kind(), io::ErrorKind::StorageFull);
    assert_eq!(source.raw_os_error(), Some(28));
    file.write_all_at(b"c", 1)?;
    assert_eq!(read(&path), b"ac"); // the failed write wrote nothing
    assert_eq!(storage.op_count(FaultOp::Write), 3);

    storage.fail_nth(FaultOp::Sync, 1, FaultKind::Eio);
    let (op, source) = io_parts(file.sync().unwrap_err());
    assert_eq!((op, source.raw_os_error()), ("fsync", Some(5)));
    file.sync()?;
    assert_eq!(storage.op_count(FaultOp::Sync), 2);

    let calls: [(FaultOp, &dyn Fn() -> Result<()>); 5] = [
        (FaultOp::SetLen, &|| file.set_len(9)),
        (FaultOp::SyncDir, &|| storage.sync_dir(dir.path())),
        (FaultOp::Rename, &|| {
            storage.rename(&path, &dir.path().join("g"))
        }),
        (FaultOp::Remove, &|| {
            storage.remove_file(&dir.path().join("none"))
        }),
        (FaultOp::Create, &|| {
            storage
                .open(&dir.path().join("h"), OpenMode::CreateOrOpen)
                .map(drop)
        }),
    ];
    for (op, call) in calls {
        let before = storage.op_count(op);
        storage.fail_nth(op, 1, FaultKind::Eio);
        assert!(call().is_err(), "{op:?} did not fail");
        call()?;
        assert_eq!(storage.op_count(op), before + 2, "{op:?}");
    }
    Ok(())
}

#[test]
fn fail_all_from_now_until_cleared() -> Result<()> {
    let dir = tempdir();
    let storage = FaultyStorage::new();
    let file = storage.open(&dir.path().join("f"), OpenMode::CreateNew)?;
    storage.fail_all_from_now(FaultOp::Sync, FaultKind::Enospc);
    for _ in 0..3 {
        assert!(file.sync().is_err());
    }
    file.write_all_at(b"x", 0)?; // other ops are unaffected
    storage.clear_faults();
    file.sync()?;
    Ok(())
}

#[test]
fn a_vectored_write_is_one_write_of_the_concatenation() -> Result<()> {
    let (_dir, storage, path, file) = new_file()?;
    file.write_all_at(b"base", 0)?;
    file.sync()?;
    // The second write fails after 3 bytes: those of the concatenation.
    storage.fail_nth_partial_write(2, FaultKind::Eio, 3);
    file.write_all_vectored_at(&[b"xy", b"", b"z"], 4)?;
    assert_eq!(read(&path), b"basexyz");
    assert!(
        file.write_all_vectored_at(&[b"12", b"34", b"56"], 2)
            .is_err()
    );
    assert_eq!(read(&path), b"ba123yz");
    storage.crash(Tear::None)?;
    assert_eq!(read(&path), b"base");
    Ok(())
}

#[test]
fn partial_write_is_unsynced_and_lost_on_crash() -> Result<()> {
    let (_dir, storage, path, file) = new_file()?;
    file.write_all_at(b"base", 0)?;
    file.sync()?;
    storage.fail_nth_partial_write(1, FaultKind::Eio, 3);
    assert!(file.write_all_at(b"123456", 2).is_err());
    assert_eq!(read(&path), b"ba123");
    storage.crash(Tear::None)?;
    assert_eq!(read(&path), b"base");
    Ok(())
}

#[test]
fn crash_fences_old_handles_and_keeps_old_maps() -> Result<()> {
    let (_dir, storage, path, file) = new_file()?;
    file.write_all_at(b"durable", 0)?;
    file.sync()?;
    file.write_all_at(b" and volatile", 7)?;
    let map = file.map(20)?;
    let bytes = crate::storage::slice_bytes(&map, 8..11);
    storage.crash(Tear::None)?;

    assert_eq!(map.as_slice(), b"durable and volatile");
    assert_eq!(&bytes[..], b"and");
    assert_fenced(file.as_ref());
    let reopened = storage.open(&path, OpenMode::Existing)?;
    assert_eq!(reopened.len()?, 7);
    reopened.write_all_at(b"!", 7)?;
    reopened.sync()?;
    assert_eq!(read(&path), b"durable!");
    Ok(())
}

#[test]
fn torn_write_keeps_exactly_the_prefix() -> Result<()> {
    let dir = tempdir();
    let storage = FaultyStorage::new();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let fa = storage.open(&a, OpenMode::CreateNew)?;
    let fb = storage.open(&b, OpenMode::CreateNew)?;
    fa.write_all_at(b"AAAA", 0)?;
    fa.sync()?;
    fb.write_all_at(b"bbbb", 0)?;
    fa.write_all_at(b"xyz", 2)?; // earlier unsynced write to a: lost
    fa.write_all_at(b"0123456789", 4)?; // most recent write: torn
    storage.crash(Tear::KeepPrefix(3))?;
    assert_eq!(read(&a), b"AAAA012");
    assert_eq!(read(&b), b"");

    let fa = storage.open(&a, OpenMode::Existing)?;
    fa.write_all_at(b"zz", 10)?;
    storage.crash(Tear::Random(7))?;
    let torn = read(&a);
    assert!(torn == b"AAAA012" || torn.len() > 10, "{torn:?}");
    assert!(b"AAAA012\0\0\0zz".starts_with(&torn));
    Ok(())
}

#[test]
fn journals_follow_renames_and_forget_removed_files() -> Result<()> {
    let dir = tempdir();
    let storage = FaultyStorage::new();
    let target = dir.path().join("checkpoint");
    write_atomic(&storage, &target, b"v1")?;
    let moved = dir.path().join("moved");
    let file = storage.open(&moved, OpenMode::CreateNew)?;
    file.write_all_at(b"unsynced", 0)?;
    storage.rename(&moved, &dir.path().join("sub-renamed"))?;
    let gone = storage.open(&dir.path().join("gone"), OpenMode::CreateNew)?;
    gone.write_all_at(b"x", 0)?;
    storage.remove_file(&dir.path().join("gone"))?;
    storage.crash(Tear::None)?;
    assert_eq!(read(&target), b"v1");
    assert_eq!(read(&dir.path().join("sub-renamed")), b"");
    assert!(!storage.exists(&dir.path().join("gone")));
    Ok(())
}

#[derive(Debug, Clone)]
enum Op {
    Write {
        file: usize,
        position: u64,
        data: Vec<u8>,
    },
    SetLen {
        file: usize,
        len: u64,
    },
    Sync {
        file: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2usize, 0..64u64, prop::collection::vec(any::<u8>(), 1..20))
            .prop_map(|(file, position, data)| Op::Write { file, position, data }),
        1 => (0..2usize, 0..80u64).prop_map(|(file, len)| Op::SetLen { file, len }),
        1 => (0..2usize).prop_map(|file| Op::Sync { file }),
    ]
}

fn apply(content: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { position, data, .. } => {
            let start = *position as usize;
            if content.len() < start + data.len() {
                content.resize(start + data.len(), 0);
            }
            content[start..start + data.len()].copy_from_slice(data);
        }
        Op::SetLen { len, .. } => content.resize(*len as usize, 0),
        Op::Sync { .. } => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn crash_restores_the_last_synced_content(
        ops in prop::collection::vec(op(), 0..40),
        keep in prop::option::of(0usize..25),
    ) {
        let dir = tempdir();
        let storage = FaultyStorage::new();
        let paths = [dir.path().join("0.log"), dir.path().join("1.index")];
        let files = [
            storage.open(&paths[0], OpenMode::CreateNew)?,
            storage.open(&paths[1], OpenMode::CreateNew)?,
        ];
        let mut current = [Vec::new(), Vec::new()];
        let mut synced = [Vec::new(), Vec::new()];
        // Writes not covered by a later sync of their file, in order.
        let mut unsynced_writes: Vec<&Op> = Vec::new();
        for op in &ops {
            match op {
                Op::Write { file, position, data } => {
                    files[*file].write_all_at(data, *position)?;
                    unsynced_writes.push(op);
                }
                Op::SetLen { file, len } => files[*file].set_len(*len)?,
                Op::Sync { file } => {
                    files[*file].sync()?;
                    synced[*file] = current[*file].clone();
                    unsynced_writes.retain(|w| !matches!(w, Op::Write { file: f, .. } if f == file));
                }
            }
            let file = match op {
                Op::Write { file, .. } | Op::SetLen { file, .. } | Op::Sync { file } => *file,
            };
            apply(&mut current[file], op);
            prop_assert_eq!(&read(&paths[file]), &current[file]);
        }
        storage.crash(keep.map_or(Tear::None, Tear::KeepPrefix))?;
        let mut expected = synced;
        if let (Some(keep @ 1..), Some(Op::Write { file, position, data })) = (keep, unsynced_writes.last()) {
            let torn = Op::Write {
                file: *file,
                position: *position,
                data: data[..keep.min(data.len())].to_vec(),
            };
            apply(&mut expected[*file], &torn);
        }
        for (path, expected) in paths.iter().zip(&expected) {
            prop_assert_eq!(&read(path), expected);
        }
    }
}

// ---- power_loss ----

const PAGE: usize = pages::PAGE as usize;

/// For each seed: runs `history` in a fresh directory on a fresh storage,
/// simulates a power loss with the seed and returns what `observe` sees
/// then.
fn over_seeds<T>(
    seeds: std::ops::Range<u64>,
    history: impl Fn(&Path, &FaultyStorage) -> Result<()>,
    observe: impl Fn(&Path) -> T,
) -> Result<Vec<T>> {
    seeds
        .map(|seed| {
            let dir = tempdir();
            let storage = FaultyStorage::new();
            history(dir.path(), &storage)?;
            storage.power_loss(seed)?;
            Ok(observe(dir.path()))
        })
        .collect()
}

/// The file's content, `None` if it is missing.
fn content(path: &Path) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

/// A file at `path` holding `bytes`, synced, its entry durable.
fn durable_file(
    storage: &FaultyStorage,
    path: &Path,
    bytes: &[u8],
) -> Result<Arc<dyn StorageFile>> {
    let file = storage.open(path, OpenMode::CreateNew)?;
    file.write_all_at(bytes, 0)?;
    file.sync()?;
    storage.sync_dir(names::parent(path))?;
    Ok(file)
}

#[test]
fn a_good_sync_after_a_failed_one_does_not_save_the_dropped_pages() -> Result<()> {
    let old = vec![b'A'; 2 * PAGE];
    let new = vec![b'B'; 2 * PAGE];
    let history = |dir: &Path, storage: &FaultyStorage| -> Result<()> {
        let file = durable_file(storage, &dir.join("f"), &old)?;
        file.write_all_at(&new, 0)?;
        storage.fail_nth(FaultOp::Sync, 1, FaultKind::Eio);
        assert!(file.sync().is_err());
        // The process still reads the new content, now clean in the cache.
        let mut buf = vec![0; 2 * PAGE];
        file.read_exact_at(&mut buf, 0)?;
        assert_eq!(buf, new);
        file.sync()?;
        let summary = storage.unsynced_summary();
        assert_eq!((summary.dirty_pages, summary.dropped_pages), (0, 2));
        Ok(())
    };
    for after in over_seeds(0..16, history, |dir| content(&dir.join("f")))? {
        assert_eq!(after.as_deref(), Some(&old[..]));
    }

    // The report counts them; crash reverts them too.
    let dir = tempdir();
    let storage = FaultyStorage::new();
    history(dir.path(), &storage)?;
    let report = storage.power_loss(3)?;
    assert_eq!(report.pages_dropped_by_failed_sync, 2);
    assert_eq!(report.pages_kept + report.pages_lost + report.pages_torn, 0);
    let dir = tempdir();
    let storage = FaultyStorage::new();
    history(dir.path(), &storage)?;
    storage.crash(Tear::KeepPrefix(usize::MAX))?;
    assert_eq!(read(&dir.path().join("f")), old);
    Ok(())
}

#[test]
fn rewriting_a_dropped_page_makes_the_whole_page_dirty_again() -> Result<()> {
    let old = vec![b'A'; 2 * PAGE];
    let history = |dir: &Path, storage: &FaultyStorage| -> Result<()> {
        let file = durable_file(storage, &dir.join("f"), &old)?;
        file.write_all_at(&vec![b'B'; 2 * PAGE], 0)?;
        storage.fail_nth(FaultOp::Sync, 1, FaultKind::Enospc);
        assert!(file.sync().is_err());
        file.write_all_at(b"C", 10)?; // page 0 only
        file.sync()
    };
    let mut expected = old.clone();
    expected[..PAGE].fill(b'B');
    expected[10] = b'C';
    for after in over_seeds(0..16, history, |dir| content(&dir.join("f")))? {
        assert_eq!(after.as_deref(), Some(&expected[..]));
    }
    Ok(())
}

#[test]
fn a_dropped_extension_reads_as_zeros_once_a_good_sync_makes_the_length_durable() -> Result<()> {
    let history = |dir: &Path, storage: &FaultyStorage| -> Result<()> {
        let file = durable_file(storage, &dir.join("f"), b"head")?;
        file.write_all_at(b"tail", 4)?;
        storage.fail_nth(FaultOp::Sync, 1, FaultKind::Eio);
        assert!(file.sync().is_err());
        file.sync()
    };
    for after in over_seeds(0..8, history, |dir| content(&dir.join("f")))? {
        assert_eq!(after.as_deref(), Some(&b"head\0\0\0\0"[..]));
    }
    Ok(())
}

#[test]
fn a_lost_truncation_brings_the_cut_pages_back() -> Result<()> {
    let old = vec![7; 3 * PAGE];
    let history = |dir: &Path, storage: &FaultyStorage| -> Result<()> {
        let file = durable_file(storage, &dir.join("f"), &old)?;
        file.set_len(100)
    };
    let outcomes = over_seeds(0..32, history, |dir| read(&dir.join("f")))?;
    for after in &outcomes {
        match after.len() {
            // Page 0, cut at 100, is decided like any dirty page.
            100 => assert!(after.iter().all(|&b| b == 7) || after.iter().all(|&b| b == 0)),
            len => {
                assert_eq!(len, 3 * PAGE);
                assert_eq!(after[PAGE..], old[PAGE..]);
                // Page 0 kept, lost or torn: each sector old or new.
                let mut new = old[..PAGE].to_vec();
                new[100..].fill(0);
                for sector in (0..PAGE).step_by(512) {
                    let got = &after[sector..sector + 512];
                    assert!(
                        got == &old[sector..sector + 512] || got == &new[sector..sector + 512],
                        "sector at {sector}: {got:?}"
                    );
                }
            }
        }
    }
    assert!(outcomes.iter().any(|o| o.len() == 100));
    assert!(outcomes.iter().any(|o| o.len() == 3 * PAGE));
    Ok(())
}

#[test]
fn a_durable_shrink_leaves_zeros_past_the_cut_even_in_a_dropped_page() -> Result<()> {
    let history = |dir: &Path, storage: &FaultyStorage| -> Result<()> {
        let file = durable_file(storage, &dir.join("f"), &vec![7; PAGE])?;
        file.set_len(100)?;
        storage.fail_nth(FaultOp::Sync, 1, FaultKind::Eio);
        assert!(file.sync().is_err()); // page 0 dropped
        file.sync()?; // the length 100 is durable, page 0 still dropped
        file.set_len(PAGE as u64) // page 0 dirty again
    };
    for after in over_seeds(0..32, history, |dir| read(&dir.join("f")))? {
        // Bytes past 100 are zeros whatever happened (never the old 7s);
        // the first 100 are the old ones or a torn page's zeros.
        assert!(after.len() == 100 || after.len() == PAGE, "{}", after.len());
        assert!(after[100..].iter().all(|&b| b == 0));
        assert!(after[..100].iter().all(|&b| b == 7) || after[..100].iter().all(|&b| b == 0));
    }
    Ok(())
}

#[test]
fn a_lost_write_atomic_rename_brings_the_old_content_back() -> Result<()> {
    let history = |dir: &Path, storage: &FaultyStorage| -> Result<()> {
        let target = dir.join("checkpoint");
        write_atomic(storage, &target, b"old version")?;
        storage.fail_nth(FaultOp::SyncDir, 1, FaultKind::Eio);
        assert!(write_atomic(storage, &target, b"new").is_err());
        assert_eq!(read(&target), b"new");
        Ok(())
    };
    let outcomes = over_seeds(0..32, history, |dir| {
        (
            content(&dir.join("checkpoint")),
            content(&dir.join("checkpoint.tmp")),
        )
    })?;
    for (target, temp) in &outcomes {
        match (target.as_deref(), temp.as_deref()) {
            // The rename survived, or was lost (the temp file's creation
            // with it, or not).
            (Some(b"new"), None) | (Some(b"old version"), None | Some(b"new")) => {}
            other => panic!("not a state the model allows: {other:?}"),
        }
    }
    for seen in [&b"new"[..], b"old version"] {
        assert!(
            outcomes.iter().any(|(t, _)| t.as_deref() == Some(seen)),
            "{outcomes:?}"
        );
    }
    Ok(())
}

#[test]
fn a_lost_rename_over_a_file_brings_both_back() -> Result<()> {
    let history = |dir: &Path, storage: &FaultyStorage| -> Result<()> {
        durable_file(storage, &dir.join("one"), b"1")?;
        durable_file(storage, &dir.join("two"), b"2")?;
        storage.rename(&dir.join("one"), &dir.join("two"))
    };
    let outcomes = over_seeds(0..32, history, |dir| {
        (content(&dir.join("one")), content(&dir.join("two")))
    })?;
    let kept = (None, Some(b"1".to_vec()));
    let lost = (Some(b"1".to_vec()), Some(b"2".to_vec()));
    assert!(
        outcomes.iter().all(|o| *o == kept || *o == lost),
        "{outcomes:?}"
    );
    assert!(outcomes.contains(&kept) && outcomes.contains(&lost));
    Ok(())
}

#[test]
fn renames_after_a_lost_one_are_lost_too() -> Result<()> {
    let history = |dir: &Path, storage: &FaultyStorage| -> Result<()> {
        let file = storage.open(&dir.join("x"), OpenMode::CreateNew)?;
        file.write_all_at(b"data", 0)?;
        file.sync()?;
        storage.rename(&dir.join("x"), &dir.join("y"))?;
        storage.rename(&dir.join("y"), &dir.join("z"))
    };
    let outcomes = over_seeds(0..64, history, |dir| {
        ["x", "y", "z"].map(|name| content(&dir.join(name)).is_some())
    })?;
    // Nothing (the creation lost), or the file at one of its names.
    let allowed = [
        [false, false, false],
        [true, false, false],
        [false, true, false],
        [false, false, true],
    ];
    for state in allowed {
        assert!(outcomes.contains(&state), "{state:?} never happened");
    }
    assert!(outcomes.iter().all(|o| allowed.contains(o)), "{outcomes:?}");
    Ok(())
}

#[test]
fn a_segment_created_without_a_directory_sync_may_vanish() -> Result<()> {
    let name = "topic-0/00000000000000000000.log";
    let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    for sync_dir in [false, true] {
        let history = |dir: &Path, storage: &FaultyStorage| -> Result<()> {
            storage.create_dir_all(&dir.join("topic-0"))?;
            storage.sync_dir(dir)?;
            let file = storage.open(&dir.join(name), OpenMode::CreateNew)?;
            file.write_all_at(&data, 0)?;
            file.sync()?; // the file's data, not its entry
            if sync_dir {
                storage.sync_dir(&dir.join("topic-0"))?;
            }
            Ok(())
        };
        let outcomes = over_seeds(0..32, history, |dir| content(&dir.join(name)))?;
        // When present, it holds exactly what was synced.
        assert!(
            outcomes
                .iter()
                .all(|o| o.is_none() || o.as_ref() == Some(&data))
        );
        assert_eq!(outcomes.contains(&None), !sync_dir, "{sync_dir}");
        assert!(outcomes.contains(&Some(data.clone())));
    }
    Ok(())
}

#[test]
fn a_lost_remove_dir_all_brings_the_tree_back() -> Result<()> {
    let tree = |dir: &Path| {
        (
            content(&dir.join("t/x")),
            content(&dir.join("t/sub/y")),
            dir.join("t/sub/empty").is_dir(),
        )
    };
    for sync_dir in [false, true] {
        let history = |dir: &Path, storage: &FaultyStorage| -> Result<()> {
            storage.create_dir_all(&dir.join("t/sub/empty"))?;
            for d in ["", "t", "t/sub"] {
                storage.sync_dir(&dir.join(d))?;
            }
            durable_file(storage, &dir.join("t/x"), b"x")?;
            durable_file(storage, &dir.join("t/sub/y"), b"y")?;
            storage.remove_dir_all(&dir.join("t"))?;
            assert!(!dir.join("t").exists());
            if sync_dir {
                storage.sync_dir(dir)?;
            }
            Ok(())
        };
        let outcomes = over_seeds(0..32, history, tree)?;
        let gone = (None, None, false);
        let back = (Some(b"x".to_vec()), Some(b"y".to_vec()), true);
        assert!(
            outcomes.iter().all(|o| *o == gone || *o == back),
            "{outcomes:?}"
        );
        assert!(outcomes.contains(&gone));
        assert_eq!(outcomes.contains(&back), !sync_dir);
    }
    Ok(())
}

#[test]
fn a_new_directory_needs_its_parent_synced_too() -> Result<()> {
    for sync_parent in [false, true] {
        let history = |dir: &Path, storage: &FaultyStorage| -> Result<()> {
            storage.create_dir_all(&dir.join("t/u"))?;
            storage.sync_dir(&dir.join("t"))?;
            durable_file(storage, &dir.join("t/u/f"), b"synced")?;
            if sync_parent {
                storage.sync_dir(dir)?;
            }
            Ok(())
        };
        let outcomes = over_seeds(0..32, history, |dir| {
            (dir.join("t").is_dir(), content(&dir.join("t/u/f")))
        })?;
        let present = (true, Some(b"synced".to_vec()));
        assert!(
            outcomes
                .iter()
                .all(|o| *o == present || *o == (false, None)),
            "{outcomes:?}"
        );
        assert_eq!(outcomes.iter().all(|o| *o == present), sync_parent);
    }
    Ok(())
}

#[test]
fn a_rename_synced_through_its_target_directory_survives() -> Result<()> {
    let history = |dir: &Path, storage: &FaultyStorage| -> Result<()> {
        storage.create_dir_all(&dir.join("a"))?;
        storage.create_dir_all(&dir.join("b"))?;
        storage.sync_dir(dir)?;
        let file = storage.open(&dir.join("a/x"), OpenMode::CreateNew)?;
        file.write_all_at(b"moved", 0)?;
        file.sync()?;
        // The creation in `a` is never synced through `a`.
        storage.rename(&dir.join("a/x"), &dir.join("b/x"))?;
        storage.sync_dir(&dir.join("b"))?;
        assert_eq!(storage.unsynced_summary().pending_dir_ops, 0);
        Ok(())
    };
    for (a, b) in over_seeds(0..16, history, |dir| {
        (content(&dir.join("a/x")), content(&dir.join("b/x")))
    })? {
        assert_eq!((a, b.as_deref()), (None, Some(&b"moved"[..])));
    }
    Ok(())
}

#[test]
fn a_synced_entry_in_a_renamed_directory_survives_the_rename_being_lost() -> Result<()> {
    let history = |dir: &Path, storage: &FaultyStorage| -> Result<()> {
        storage.create_dir_all(&dir.join("d0"))?;
        storage.sync_dir(dir)?;
        let old = storage.open(&dir.join("d0/a"), OpenMode::CreateNew)?;
        old.write_all_at(b"old", 0)?;
        old.sync()?;
        // Never made durable: the rename (in the root) and the creation of
        // the old file (in `d0`, under its old name).
        storage.rename(&dir.join("d0"), &dir.join("d2"))?;
        storage.remove_file(&dir.join("d2/a"))?;
        durable_file(storage, &dir.join("d2/a"), b"new")?;
        Ok(())
    };
    let outcomes = over_seeds(0..32, history, |dir| {
        (content(&dir.join("d0/a")), content(&dir.join("d2/a")))
    })?;
    // The directory keeps its synced entry under its old or its new name.
    let renamed = (None, Some(b"new".to_vec()));
    let not_renamed = (Some(b"new".to_vec()), None);
    assert!(
        outcomes.iter().all(|o| *o == renamed || *o == not_renamed),
        "{outcomes:?}"
    );
    assert!(outcomes.contains(&renamed) && outcomes.contains(&not_renamed));
    Ok(())
}

#[test]
fn syncing_a_directory_that_replaced_another_does_not_sync_the_replaced_ones_entries() -> Result<()>
{
    let history = |dir: &Path, storage: &FaultyStorage| -> Result<()> {
        for d in ["d0", "d1", "d2"] {
            storage.create_dir_all(&dir.join(d))?;
        }
        let file = storage.open(&dir.join("d1/f"), OpenMode::CreateNew)?;
        file.write_all_at(b"f", 0)?;
        file.sync()?;
        storage.rename(&dir.join("d1/f"), &dir.join("d0/f"))?;
        storage.rename(&dir.join("d2"), &dir.join("d1"))?; // replaces the old d1
        storage.sync_dir(&dir.join("d1"))?; // the old d2, holding none of those
        assert_eq!(storage.unsynced_summary().pending_dir_ops, 6);
        Ok(())
    };
    for (moved, d1) in over_seeds(0..32, history, |dir| {
        (dir.join("d0/f").exists(), dir.join("d1").is_dir())
    })? {
        // The file reached d0 only if the old d1 it came from was created.
        assert!(!moved || d1);
    }
    Ok(())
}

#[test]
fn power_loss_fences_handles_keeps_maps_faults_and_counters() -> Result<()> {
    let dir = tempdir();
    let storage = FaultyStorage::new();
    let path = dir.path().join("f");
    let durable = vec![b'D'; PAGE];
    let file = durable_file(&storage, &path, &durable)?;
    file.write_all_at(b"volatile", PAGE as u64)?;
    let map = file.map(PAGE + 8)?;
    storage.fail_nth(FaultOp::Write, 2, FaultKind::Eio);
    let writes = storage.op_count(FaultOp::Write);
    storage.power_loss(5)?;

    assert_eq!(&map.as_slice()[PAGE..], b"volatile");
    assert_fenced(file.as_ref());
    assert_eq!(storage.op_count(FaultOp::Write), writes);
    assert_eq!(storage.unsynced_summary(), UnsyncedSummary::default());
    // The synced page is intact whatever happened to the other one.
    assert_eq!(read(&path)[..PAGE], durable);
    let reopened = storage.open(&path, OpenMode::Existing)?;
    reopened.write_all_at(b"1", 0)?;
    assert!(reopened.write_all_at(b"2", 0).is_err()); // the armed fault
    Ok(())
}

#[test]
fn pending_dir_ops_lists_what_a_power_loss_may_lose() -> Result<()> {
    let dir = tempdir();
    let storage = FaultyStorage::new();
    let at = |name: &str| dir.path().join(name);
    storage.create_dir_all(&at("d"))?;
    storage.open(&at("d/f"), OpenMode::CreateNew)?;
    storage.open(&at("g"), OpenMode::CreateOrOpen)?;
    storage.open(&at("g"), OpenMode::CreateOrOpen)?; // exists: no entry made
    storage.rename(&at("g"), &at("d/f"))?;
    storage.remove_file(&at("missing"))?; // nothing removed
    storage.remove_dir_all(&at("d"))?;
    let expected = [
        format!("create directory {}", at("d").display()),
        format!("create file {}", at("d/f").display()),
        format!("create file {}", at("g").display()),
        format!(
            "rename {} to {} (replacing it)",
            at("g").display(),
            at("d/f").display()
        ),
        format!("remove directory tree {}", at("d").display()),
    ];
    assert_eq!(storage.pending_dir_ops(), expected);
    storage.sync_dir(dir.path())?; // everything hangs on the root's entries
    assert!(storage.pending_dir_ops().is_empty());
    Ok(())
}

#[test]
fn unsynced_summary_counts_what_a_power_loss_could_lose() -> Result<()> {
    let dir = tempdir();
    let storage = FaultyStorage::new();
    let file = durable_file(&storage, &dir.path().join("f"), &vec![1; PAGE])?;
    assert_eq!(storage.unsynced_summary(), UnsyncedSummary::default());
    file.write_all_at(b"x", (3 * PAGE + 1) as u64)?; // pages 1..=3
    storage.create_dir_all(&dir.path().join("d/e"))?;
    let summary = storage.unsynced_summary();
    assert_eq!(summary.dirty_pages, 3);
    assert_eq!(summary.files_with_length_change, 1);
    assert_eq!(summary.pending_dir_ops, 2);
    storage.fail_nth(FaultOp::Sync, 1, FaultKind::Eio);
    assert!(file.sync().is_err());
    let summary = storage.unsynced_summary();
    assert_eq!((summary.dirty_pages, summary.dropped_pages), (0, 3));
    Ok(())
}

#[test]
fn torn_pages_by_sector_never_change_durable_bytes() -> Result<()> {
    // 1500 durable bytes, then 6000 more appended (pages 0 and 1 dirty,
    // page 0 holding durable bytes too). Under `TornPages::Sectors` a
    // power loss never changes the durable bytes; torn pages hold a mix of
    // new sectors and old ones (zeros past the durable length).
    let durable: Vec<u8> = (0..1500u32).map(|i| (i % 251) as u8 + 1).collect();
    let appended: Vec<u8> = (0..6000u32).map(|i| (i % 241) as u8 + 1).collect();
    let mut mixed = 0;
    for seed in 0..64 {
        let dir = tempdir();
        let storage = FaultyStorage::new();
        storage.set_torn_pages(TornPages::Sectors);
        let path = dir.path().join("f");
        let file = storage.open(&path, OpenMode::CreateNew)?;
        file.write_all_at(&durable, 0)?;
        file.sync()?;
        storage.sync_dir(dir.path())?;
        file.write_all_at(&appended, 1500)?;
        let report = storage.power_loss(seed)?;
        let after = read(&path);
        assert_eq!(
            after[..1500],
            durable[..],
            "seed {seed}: durable bytes changed"
        );
        // Past them, each 512-byte sector (aligned in the file) holds its
        // new bytes or zeros, whole.
        for sector in (1024..after.len()).step_by(512) {
            let (from, to) = (sector.max(1500), (sector + 512).min(after.len()));
            let part = &after[from..to];
            assert!(
                part == &appended[from - 1500..to - 1500] || part.iter().all(|&b| b == 0),
                "seed {seed}: the sector at {sector} is neither new nor old"
            );
        }
        if report.pages_torn > 0 {
            let tail = &after[1500..];
            let some_new = tail.chunks(512).any(|c| c.iter().any(|&b| b != 0));
            let some_zero =
                tail.len() >= 512 && tail.chunks(512).any(|c| c.iter().all(|&b| b == 0));
            if some_new && some_zero {
                mixed += 1;
            }
        }
    }
    assert!(mixed > 0, "no torn page mixed new and old sectors");
    Ok(())
}
