//! Crash consistency of the topic registry: at every failing write, sync,
//! rename, directory sync, create or remove during a run of topic
//! operations, followed by a power loss, the reopened cluster holds exactly
//! the acknowledged operations (plus, possibly, the one that failed), and
//! the broker directory holds exactly the live topics' partitions plus the
//! directories the open reported as unknown (kept, never deleted without
//! evidence). In this script every leftover has evidence (a removal record
//! or a `-delete` name), so none is unknown.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use logbus::format::BatchBuilder;
use logbus::{
    Cluster, ClusterConfig, Compression, FaultKind, FaultOp, FaultyStorage, NewTopic, Result, Tear,
    TopicConfig,
};

#[derive(Debug, Clone, Copy)]
enum Op {
    Create(&'static str, u32),
    Grow(&'static str, u32),
    Delete(&'static str),
    Append(&'static str),
}

const SCRIPT: &[Op] = &[
    Op::Create("a", 2),
    Op::Append("a"),
    Op::Create("b", 1),
    Op::Grow("a", 3),
    Op::Append("b"),
    Op::Delete("b"),
    Op::Create("b", 2),
    Op::Delete("a"),
    Op::Create("c.d", 1),
];

type Model = BTreeMap<String, u32>;

/// The registry after the first `k` operations of the script.
fn model_after(k: usize) -> Model {
    let mut m = Model::new();
    for op in &SCRIPT[..k] {
        match *op {
            Op::Create(t, n) | Op::Grow(t, n) => {
                m.insert(t.to_string(), n);
            }
            Op::Delete(t) => {
                m.remove(t);
            }
            Op::Append(_) => {}
        }
    }
    m
}

/// A temporary directory, on tmpfs when the machine has one: the run makes
/// thousands of real fsyncs (the fault layer wraps real files), which cost
/// ~40 s on this machine's disk and test nothing the fault layer doesn't.
fn tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().unwrap()
}

fn open(dir: &Path, storage: &FaultyStorage) -> Result<Cluster> {
    // Small preallocated indexes keep the fault layer's journal small.
    let defaults = TopicConfig::new().set("segment.index.bytes", "4096")?;
    let config = ClusterConfig::builder()
        .storage(Arc::new(storage.clone()))
        .topic_defaults(defaults)
        .build()?;
    Cluster::open(dir, config)
}

fn run(cluster: &Cluster, op: Op) -> Result<()> {
    match op {
        Op::Create(t, n) => {
            let config = TopicConfig::new().retention_ms(Some(60_000));
            cluster
                .create_topic(NewTopic::new(t, n).config(config))
                .map(drop)
        }
        Op::Grow(t, n) => cluster.create_partitions(t, n),
        Op::Delete(t) => cluster.delete_topic(t),
        Op::Append(t) => {
            let mut batch = BatchBuilder::new(Compression::None);
            batch.append(1, None, Some(t.as_bytes()), &[]);
            let partition = cluster.topic(t)?.partition(0)?;
            partition.append(&mut batch.build()?.to_vec()).map(drop)
        }
    }
}

/// Partition directories in the broker's data directory.
fn partition_dirs(root: &Path) -> Vec<String> {
    let mut dirs: Vec<String> = std::fs::read_dir(root.join("broker-0"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| {
            n.rsplit_once('-')
                .is_some_and(|(_, p)| p.parse::<u32>().is_ok())
        })
        .collect();
    dirs.sort();
    dirs
}

fn observed(cluster: &Cluster) -> Result<Model> {
    let mut m = Model::new();
    for name in cluster.list_topics() {
        let topic = cluster.topic(&name)?;
        for p in topic.partitions()? {
            // Every partition is readable.
            p.read(p.log_start_offset()?, 1 << 16)?;
        }
        m.insert(name, topic.partition_count());
    }
    Ok(m)
}

/// Runs the script with the `n`th `op` failing, crashes, reopens, checks.
fn crash_at(op: FaultOp, n: u64, tear: Tear) -> Result<bool> {
    let dir = tempdir();
    let storage = FaultyStorage::new();
    let cluster = open(dir.path(), &storage)?;
    let base = storage.op_count(op);
    storage.fail_nth(op, base + n, FaultKind::Eio);
    let mut acked = 0;
    let mut failed = false;
    for step in SCRIPT {
        if run(&cluster, *step).is_err() {
            failed = true;
            break;
        }
        acked += 1;
    }
    let _ = cluster.close();
    drop(cluster);
    storage.clear_faults();
    storage.crash(tear)?;
    let cluster = open(dir.path(), &storage)?;
    let found = observed(&cluster)?;
    let what = format!("{op:?} #{n} {tear:?}, {acked} acked");
    if failed {
        assert!(
            found == model_after(acked) || found == model_after(acked + 1),
            "{what}: found {found:?}"
        );
    } else {
        assert_eq!(found, model_after(acked), "{what}");
    }
    // The live partitions have directories, and so have the directories
    // the open kept and reported; here there are none of those.
    let report = cluster.recovery_report();
    let unknown: Vec<String> = report
        .unknown_dirs
        .iter()
        .map(|u| u.path.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    assert!(unknown.is_empty(), "{what}: unknown {:?}", report.unknown_dirs);
    let expected: Vec<String> = {
        let mut v: Vec<String> = found
            .iter()
            .flat_map(|(t, n)| (0..*n).map(move |p| format!("{t}-{p}")))
            .chain(unknown)
            .collect();
        v.sort();
        v
    };
    assert_eq!(partition_dirs(dir.path()), expected, "{what}");
    // The re-created "b" never shows the deleted "b"'s record.
    if acked >= 7 {
        let b = cluster.topic("b")?;
        assert_eq!(b.partition(0)?.high_watermark()?, 0, "{what}");
    }
    cluster.close()?;
    Ok(failed)
}

#[test]
fn registry_survives_a_crash_at_every_failing_operation() -> Result<()> {
    // Count the operations a clean run makes after open.
    let dir = tempdir();
    let storage = FaultyStorage::new();
    let cluster = open(dir.path(), &storage)?;
    let ops = [
        FaultOp::Write,
        FaultOp::Sync,
        FaultOp::SyncDir,
        FaultOp::Rename,
        FaultOp::Create,
        FaultOp::Remove,
    ];
    let before: Vec<u64> = ops.iter().map(|op| storage.op_count(*op)).collect();
    for step in SCRIPT {
        run(&cluster, *step)?;
    }
    let totals: Vec<u64> = ops
        .iter()
        .zip(&before)
        .map(|(op, b)| storage.op_count(*op) - b)
        .collect();
    cluster.close()?;
    assert_eq!(
        observed(&open(dir.path(), &storage)?)?,
        model_after(SCRIPT.len())
    );

    let mut failures = 0;
    for (op, total) in ops.iter().zip(totals) {
        for n in 1..=total {
            let tear = if n % 2 == 0 {
                Tear::None
            } else {
                Tear::Random(n)
            };
            failures += u64::from(crash_at(*op, n, tear)?);
        }
    }
    assert!(failures > 50, "the faults fired ({failures})");
    Ok(())
}
