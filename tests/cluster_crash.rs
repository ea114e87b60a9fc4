//! Crash consistency of the topic registry: at every failing write, sync,
//! rename, directory sync, create or remove during a run of topic
//! operations, followed by a power loss, the reopened cluster holds exactly
//! the acknowledged operations (plus, possibly, the one that failed), and
//! the broker directory holds exactly the live topics' partitions plus the
//! directories the open reported as unknown (kept, never deleted without
//! evidence). In this script every leftover has evidence (a removal record
//! or a `-delete` name), so none is unknown.

mod common;

use common::shm_tempdir as tempdir;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

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

fn config(storage: &FaultyStorage) -> Result<ClusterConfig> {
    // Small preallocated indexes keep the fault layer's journal small.
    let defaults = TopicConfig::new().set("segment.index.bytes", "4096")?;
    ClusterConfig::builder()
        .storage(Arc::new(storage.clone()))
        .topic_defaults(defaults)
        .build()
}

fn open(dir: &Path, storage: &FaultyStorage) -> Result<Cluster> {
    Cluster::open(dir, config(storage)?)
}

fn run(cluster: &Cluster, op: Op) -> Result<()> {
    match op {
        Op::Create(t, n) => {
            let config = TopicConfig::new().retention_time(Some(Duration::from_secs(60)));
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
    assert!(
        unknown.is_empty(),
        "{what}: unknown {:?}",
        report.unknown_dirs
    );
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

/// Copies directory `from` into `to`, recursively (lock files left out).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else if entry.file_name() != ".lock" {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn values(cluster: &Cluster, topic: &str) -> Result<Vec<Vec<u8>>> {
    let p = cluster.topic(topic)?.partition(0)?;
    let mut out = Vec::new();
    for batch in p.read(0, 1 << 16)?.batches() {
        for record in batch?.records()? {
            out.push(record?.value().map(|v| v.to_vec()).unwrap_or_default());
        }
    }
    Ok(out)
}

/// A rebuild of a damaged metadata log interrupted by a failing write,
/// sync, rename, directory sync, create or remove and a power loss leaves
/// either the rebuilt log or none (the open refuses); run again, it
/// restores every topic, config, record and committed offset.
#[test]
fn a_rebuild_interrupted_by_a_crash_can_be_run_again() -> Result<()> {
    use logbus::{Error, OffsetAndMetadata, TopicPartition};

    // The damaged cluster every run starts from.
    let base = tempdir();
    {
        let storage = FaultyStorage::new();
        let cluster = open(base.path(), &storage)?;
        let a = cluster.create_topic(
            NewTopic::new("a", 1)
                .config(TopicConfig::new().retention_time(Some(Duration::from_secs(60)))),
        )?;
        run(&cluster, Op::Append("a"))?;
        cluster.create_topic(NewTopic::new("b", 1))?;
        run(&cluster, Op::Append("b"))?;
        let offsets = BTreeMap::from([(TopicPartition::new("a", 0), OffsetAndMetadata::new(1))]);
        cluster.alter_group_offsets("g", &offsets)?;
        drop(a);
        cluster.close()?;
    }
    // One flipped byte in the last metadata batch (`__consumer_offsets`).
    let segment = base
        .path()
        .join("__cluster_metadata-0/00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();

    let check = |dir: &Path, storage: &FaultyStorage, what: &str| -> Result<()> {
        let cluster = match open(dir, storage) {
            Ok(cluster) => cluster,
            Err(Error::MetadataMissing { .. } | Error::Corrupt { .. }) => {
                Cluster::rebuild_metadata(dir, config(storage)?)?;
                open(dir, storage)?
            }
            Err(e) => panic!("{what}: {e}"),
        };
        assert_eq!(cluster.list_topics(), ["a", "b"], "{what}");
        let a = cluster.topic("a")?;
        assert_eq!(a.overrides().get("retention.ms"), Some("60000"), "{what}");
        assert_eq!(values(&cluster, "a")?, [b"a".to_vec()], "{what}");
        assert_eq!(values(&cluster, "b")?, [b"b".to_vec()], "{what}");
        let committed = cluster.list_group_offsets("g")?;
        assert_eq!(committed[&TopicPartition::new("a", 0)].offset, 1, "{what}");
        assert!(cluster.recovery_report().unknown_dirs.is_empty(), "{what}");
        cluster.close()
    };

    let ops = [
        FaultOp::Write,
        FaultOp::Sync,
        FaultOp::SyncDir,
        FaultOp::Rename,
        FaultOp::Create,
        FaultOp::Remove,
    ];
    // A clean rebuild, to count its operations.
    let counts: Vec<u64> = {
        let dir = tempdir();
        copy_tree(base.path(), dir.path());
        let storage = FaultyStorage::new();
        let before: Vec<u64> = ops.iter().map(|op| storage.op_count(*op)).collect();
        Cluster::rebuild_metadata(dir.path(), config(&storage)?)?;
        let counts = ops
            .iter()
            .zip(before)
            .map(|(op, b)| storage.op_count(*op) - b)
            .collect();
        check(dir.path(), &storage, "clean")?;
        counts
    };
    let mut failures = 0;
    for (op, total) in ops.iter().zip(counts) {
        for n in 1..=total {
            let dir = tempdir();
            copy_tree(base.path(), dir.path());
            let storage = FaultyStorage::new();
            storage.fail_nth(*op, storage.op_count(*op) + n, FaultKind::Eio);
            let failed = Cluster::rebuild_metadata(dir.path(), config(&storage)?).is_err();
            failures += u64::from(failed);
            storage.clear_faults();
            let tear = if n % 2 == 0 {
                Tear::None
            } else {
                Tear::Random(n)
            };
            storage.crash(tear)?;
            check(dir.path(), &storage, &format!("{op:?} #{n} {tear:?}"))?;
        }
    }
    assert!(failures > 10, "the faults fired ({failures})");
    Ok(())
}
