//! What opening a cluster does with what it finds: a damaged or lost
//! metadata log refuses the open (never deletes topic data) and is rebuilt
//! from the partition directories; partition directories nothing explains
//! are kept and reported; recovery reports are visible per partition.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use logbus::format::{Batch, BatchBuilder};
use logbus::{
    Cluster, ClusterConfig, Compression, Error, NewTopic, OffsetAndMetadata, Partition,
    TopicConfig, TopicPartition,
};

fn open(dir: &Path) -> Cluster {
    Cluster::open(dir, ClusterConfig::default()).unwrap()
}

fn append(partition: &Partition, values: &[&str]) {
    let mut batch = BatchBuilder::new(Compression::None);
    for v in values {
        batch.append(1_700_000_000_000, None, Some(v.as_bytes()), &[]);
    }
    partition
        .append(&mut batch.build().unwrap().to_vec())
        .unwrap();
}

fn values(cluster: &Cluster, topic: &str, partition: u32) -> Vec<String> {
    let p = cluster.topic(topic).unwrap().partition(partition).unwrap();
    let read = p.read(p.log_start_offset().unwrap(), 1 << 20).unwrap();
    let mut out = Vec::new();
    for batch in read.batches() {
        for record in batch.unwrap().records().unwrap() {
            let record = record.unwrap();
            out.push(String::from_utf8(record.value().unwrap().to_vec()).unwrap());
        }
    }
    out
}

fn broker(dir: &Path) -> PathBuf {
    dir.join("broker-0")
}

fn metadata_segment(dir: &Path) -> PathBuf {
    dir.join("__cluster_metadata-0")
        .join("00000000000000000000.log")
}

/// Copies the files of directory `from` into a new directory `to` (no
/// subdirectories; the lock file is left out).
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != ".lock" {
            fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Names of the entries of `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Start and length of every batch in a segment file.
fn batch_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let bytes = bytes::Bytes::copy_from_slice(bytes);
    let mut spans = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (_, used) = Batch::decode(&bytes.slice(at..)).unwrap();
        spans.push((at, used));
        at += used;
    }
    spans
}

/// The scenario: topics `a` and `b`, records in `b`, a clean
/// close, then one flipped byte in the last batch of the metadata log
/// (`b`'s creation). The open must refuse instead of starting without
/// `b` and removing its directory; the rebuild brings both back.
#[test]
fn a_damaged_metadata_log_refuses_the_open_and_the_rebuild_restores_every_topic() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    let a_config = TopicConfig::new().retention_time(Some(Duration::from_secs(3600)));
    let a = cluster
        .create_topic(NewTopic::new("a", 1).config(a_config))
        .unwrap();
    let b_config = TopicConfig::new().set("segment.bytes", "1048576").unwrap();
    let b = cluster
        .create_topic(NewTopic::new("b", 2).config(b_config))
        .unwrap();
    append(&a.partition(0).unwrap(), &["a1"]);
    append(&b.partition(0).unwrap(), &["b1", "b2"]);
    append(&b.partition(1).unwrap(), &["b3"]);
    let (a_id, b_id) = (a.id(), b.id());
    drop((a, b));
    cluster.close().unwrap();
    drop(cluster);

    let segment = metadata_segment(dir.path());
    let mut bytes = fs::read(&segment).unwrap();
    let spans = batch_spans(&bytes);
    assert_eq!(spans.len(), 2, "one batch per created topic");
    let (start, len) = spans[1];
    bytes[start + len / 2] ^= 0x20;
    fs::write(&segment, &bytes).unwrap();
    let b0_segment = broker(dir.path()).join("b-0/00000000000000000000.log");
    let b0_bytes = fs::read(&b0_segment).unwrap();

    for _ in 0..2 {
        match Cluster::open(dir.path(), ClusterConfig::default()) {
            Err(Error::Corrupt { path, .. }) => assert!(
                path.starts_with(dir.path().join("__cluster_metadata-0")),
                "{}",
                path.display()
            ),
            other => panic!("expected the metadata log's corruption, got {other:?}"),
        }
        // Nothing of `b` was touched by the refused open.
        assert_eq!(fs::read(&b0_segment).unwrap(), b0_bytes);
        assert_eq!(
            names(&broker(dir.path()))
                .iter()
                .filter(|n| n.starts_with("b-"))
                .count(),
            2
        );
    }

    let report = Cluster::rebuild_metadata(dir.path(), ClusterConfig::default()).unwrap();
    let aside = report
        .moved_aside
        .clone()
        .expect("the old log was moved aside");
    assert_eq!(
        aside.file_name().unwrap().to_str().unwrap(),
        "__cluster_metadata-0.damaged-1"
    );
    assert!(
        aside.join("00000000000000000000.log").exists(),
        "never deleted"
    );
    assert!(report.skipped_dirs.is_empty(), "{:?}", report.skipped_dirs);
    let summary: Vec<(&str, &str, u32, bool, bool)> = report
        .topics
        .iter()
        .map(|t| {
            (
                t.name.as_str(),
                t.id.as_str(),
                t.partitions,
                t.config_recovered,
                t.removed,
            )
        })
        .collect();
    // `a`'s batch precedes the damage; `b`'s configs were in the damaged one.
    assert_eq!(
        summary,
        [
            ("a", a_id.as_str(), 1, true, false),
            ("b", b_id.as_str(), 2, false, false)
        ]
    );
    assert!(report.old_records_read >= 3, "{}", report.old_records_read);

    let cluster = open(dir.path());
    assert_eq!(cluster.list_topics(), ["a", "b"]);
    let a = cluster.topic("a").unwrap();
    assert_eq!(a.id(), a_id);
    assert_eq!(a.overrides().get("retention.ms"), Some("3600000"));
    assert_eq!(cluster.topic("b").unwrap().id(), b_id);
    assert_eq!(values(&cluster, "a", 0), ["a1"]);
    assert_eq!(values(&cluster, "b", 0), ["b1", "b2"]);
    assert_eq!(values(&cluster, "b", 1), ["b3"]);
    assert!(cluster.recovery_report().unknown_dirs.is_empty());
    assert!(cluster.recovery_report().removed_dirs.is_empty());
    // The rebuilt registry is an ordinary one: it takes changes and
    // survives a reopen.
    cluster.create_topic(NewTopic::new("c", 1)).unwrap();
    cluster.close().unwrap();
    assert_eq!(open(dir.path()).list_topics(), ["a", "b", "c"]);
}

#[test]
fn a_lost_metadata_log_refuses_the_open_until_it_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    let t = cluster.create_topic(NewTopic::new("t", 3)).unwrap();
    for p in 0..3 {
        append(&t.partition(p).unwrap(), &[&format!("v{p}")]);
    }
    let committed = BTreeMap::from([(TopicPartition::new("t", 2), OffsetAndMetadata::new(1))]);
    cluster.alter_group_offsets("g", &committed).unwrap();
    drop(t);
    cluster.close().unwrap();
    drop(cluster);
    fs::remove_dir_all(dir.path().join("__cluster_metadata-0")).unwrap();
    // A lost partition directory: the rebuild keeps its place.
    fs::remove_dir_all(broker(dir.path()).join("t-1")).unwrap();
    let before = names(&broker(dir.path()));

    match Cluster::open(dir.path(), ClusterConfig::default()) {
        Err(e @ Error::MetadataMissing { .. }) => {
            let text = e.to_string();
            assert!(text.contains("rebuild_metadata"), "{text}");
            assert!(text.contains("partition directories"), "{text}");
        }
        other => panic!("expected MetadataMissing, got {other:?}"),
    }
    assert!(
        !dir.path().join("__cluster_metadata-0").exists(),
        "nothing created"
    );
    assert_eq!(names(&broker(dir.path())), before, "nothing removed");

    let report = Cluster::rebuild_metadata(dir.path(), ClusterConfig::default()).unwrap();
    assert_eq!(report.moved_aside, None);
    assert_eq!(report.old_records_read, 0);
    let t_report = report.topics.iter().find(|t| t.name == "t").unwrap();
    assert_eq!((t_report.partitions, t_report.config_recovered), (3, false));
    assert_eq!(t_report.missing_partitions, [1]);
    let offsets = report
        .topics
        .iter()
        .find(|t| t.name == "__consumer_offsets")
        .unwrap();
    assert_eq!(offsets.partitions, 50);

    let cluster = open(dir.path());
    assert_eq!(cluster.list_topics(), ["t"]);
    assert_eq!(values(&cluster, "t", 0), ["v0"]);
    assert!(values(&cluster, "t", 1).is_empty(), "recreated empty");
    assert_eq!(values(&cluster, "t", 2), ["v2"]);
    // Committed offsets come back with `__consumer_offsets`, compacted as before.
    let listed: Vec<(TopicPartition, u64)> = cluster
        .list_group_offsets("g")
        .unwrap()
        .into_iter()
        .map(|(tp, o)| (tp, o.offset))
        .collect();
    assert_eq!(listed, [(TopicPartition::new("t", 2), 1)]);
    let internal = cluster.describe_topic("__consumer_offsets").unwrap();
    assert_eq!(internal.config.cleanup(), logbus::CleanupPolicy::Compact);
}

#[test]
fn an_empty_metadata_log_with_a_recovery_point_refuses_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    cluster.create_topic(NewTopic::new("gone", 1)).unwrap();
    cluster.delete_topic("gone").unwrap();
    cluster.close().unwrap();
    drop(cluster);
    // No partition directory is left, but the checkpoint knows the log
    // held two changes.
    fs::write(metadata_segment(dir.path()), b"").unwrap();
    match Cluster::open(dir.path(), ClusterConfig::default()) {
        Err(Error::MetadataMissing { evidence, .. }) => {
            assert!(evidence.contains("checkpoint"), "{evidence}");
        }
        other => panic!("expected MetadataMissing, got {other:?}"),
    }
    Cluster::rebuild_metadata(dir.path(), ClusterConfig::default()).unwrap();
    assert!(open(dir.path()).list_topics().is_empty());
}

#[test]
fn partition_dirs_nothing_explains_are_kept_and_reported_never_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    let t = cluster.create_topic(NewTopic::new("t", 1)).unwrap();
    append(&t.partition(0).unwrap(), &["t1"]);
    drop(t);
    cluster.close().unwrap();
    drop(cluster);
    let b = broker(dir.path());
    // `t`'s directory copied under another topic's name and a partition
    // `t` does not have (its id is live), one with an unknown id, one
    // without partition.metadata.
    copy_dir(&b.join("t-0"), &b.join("u-0"));
    copy_dir(&b.join("t-0"), &b.join("t-5"));
    copy_dir(&b.join("t-0"), &b.join("v-0"));
    fs::write(
        b.join("v-0/partition.metadata"),
        "version: 0\ntopic_id: AAAAAAAAAAAAAAAAAAAAAQ\n",
    )
    .unwrap();
    fs::create_dir(b.join("w-0")).unwrap();

    let cluster = open(dir.path());
    let report = cluster.recovery_report();
    let unknown: Vec<(String, Option<String>)> = report
        .unknown_dirs
        .iter()
        .map(|u| {
            (
                u.path.file_name().unwrap().to_str().unwrap().to_string(),
                u.topic_id.clone(),
            )
        })
        .collect();
    let t_id = cluster.topic("t").unwrap().id();
    assert_eq!(
        unknown,
        [
            ("t-5".to_string(), Some(t_id.clone())),
            ("u-0".to_string(), Some(t_id.clone())),
            (
                "v-0".to_string(),
                Some("AAAAAAAAAAAAAAAAAAAAAQ".to_string())
            ),
            ("w-0".to_string(), None),
        ]
    );
    assert!(report.removed_dirs.is_empty());
    assert_eq!(cluster.list_topics(), ["t"]);
    assert_eq!(values(&cluster, "t", 0), ["t1"]);
    for kept in ["t-5", "u-0", "v-0", "w-0"] {
        assert!(b.join(kept).exists(), "{kept} kept");
    }

    // A topic whose path holds a directory of another topic is refused,
    // and nothing is stored.
    for name in ["u", "v"] {
        match cluster.create_topic(NewTopic::new(name, 1)) {
            Err(Error::PartitionDirConflict { path, .. }) => {
                assert_eq!(path, b.join(format!("{name}-0")));
            }
            other => panic!("{name}: expected a conflict, got {other:?}"),
        }
    }
    // A directory without partition.metadata holds nothing: it is adopted.
    cluster.create_topic(NewTopic::new("w", 1)).unwrap();
    // The same topic id at a partition the topic gains is that partition.
    cluster.create_partitions("t", 6).unwrap();
    assert_eq!(values(&cluster, "t", 5), ["t1"]);
    cluster.close().unwrap();
    drop(cluster);

    let cluster = open(dir.path());
    assert_eq!(cluster.list_topics(), ["t", "w"]);
    let unknown: Vec<&Path> = cluster
        .recovery_report()
        .unknown_dirs
        .iter()
        .map(|u| u.path.as_path())
        .collect();
    assert_eq!(unknown, [b.join("u-0"), b.join("v-0")]);
}

/// A torn write at the end of a partition's log is cut on open, and the
/// cut is visible through the cluster and the partition.
#[test]
fn a_torn_tail_is_reported_through_the_cluster_and_the_partition() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    let t = cluster.create_topic(NewTopic::new("t", 2)).unwrap();
    append(&t.partition(1).unwrap(), &["one", "two"]);
    drop(t);
    cluster.close().unwrap();
    drop(cluster);
    let segment = broker(dir.path()).join("t-1/00000000000000000000.log");
    let mut bytes = fs::read(&segment).unwrap();
    let valid = bytes.len() as u64;
    let mut torn = BatchBuilder::new(Compression::None);
    torn.append(1_700_000_000_000, None, Some(b"never acknowledged"), &[]);
    let torn = torn.build().unwrap().to_vec();
    bytes.extend_from_slice(&torn[..torn.len() / 2]);
    fs::write(&segment, &bytes).unwrap();

    let cluster = open(dir.path());
    let report = cluster.recovery_report();
    let cut: Vec<TopicPartition> = report.truncations().map(|(tp, _)| tp).collect();
    assert_eq!(cut, [TopicPartition::new("t", 1)]);
    let tail = report.partitions[&TopicPartition::new("t", 1)]
        .truncated
        .clone()
        .unwrap();
    assert_eq!(tail.path, segment);
    assert_eq!(tail.position, valid);
    assert_eq!(tail.bytes, (torn.len() / 2) as u64);
    assert!(
        report.partitions[&TopicPartition::new("t", 0)]
            .truncated
            .is_none()
    );
    assert_eq!(report.metadata.truncated, None);
    let p1 = cluster.topic("t").unwrap().partition(1).unwrap();
    assert_eq!(p1.recovery_report().truncated, Some(tail));
    assert_eq!(values(&cluster, "t", 1), ["one", "two"]);
    // A partition created later reports a fresh log.
    let fresh = cluster.create_topic(NewTopic::new("later", 1)).unwrap();
    assert_eq!(
        fresh.partition(0).unwrap().recovery_report().truncated,
        None
    );
}

#[test]
fn a_rebuild_refuses_two_topic_ids_under_one_name_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    cluster.create_topic(NewTopic::new("t", 2)).unwrap();
    cluster.close().unwrap();
    drop(cluster);
    fs::write(
        broker(dir.path()).join("t-1/partition.metadata"),
        "version: 0\ntopic_id: AAAAAAAAAAAAAAAAAAAAAQ\n",
    )
    .unwrap();
    let root_before = names(dir.path());
    match Cluster::rebuild_metadata(dir.path(), ClusterConfig::default()) {
        Err(Error::PartitionDirConflict { reason, .. }) => {
            assert!(reason.contains("two topic ids"), "{reason}");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(names(dir.path()), root_before);
    // The healthy metadata log still opens; the foreign directory at `t`'s
    // path is refused, not adopted.
    assert!(matches!(
        Cluster::open(dir.path(), ClusterConfig::default()),
        Err(Error::PartitionDirConflict { .. })
    ));
}

/// A rebuild keeps the old log's evidence of deleted topics: a directory
/// a crash left behind after the deletion was recorded is written as
/// created-then-removed, so the next open removes it.
#[test]
fn a_rebuild_keeps_the_evidence_of_deleted_topics() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    let gone = cluster.create_topic(NewTopic::new("gone", 1)).unwrap();
    append(&gone.partition(0).unwrap(), &["old"]);
    let keep = cluster.create_topic(NewTopic::new("keep", 1)).unwrap();
    append(&keep.partition(0).unwrap(), &["kept"]);
    let lost_config = TopicConfig::new().retention_time(Some(Duration::from_secs(60)));
    cluster
        .create_topic(NewTopic::new("lost", 2).config(lost_config))
        .unwrap();
    drop((gone, keep));
    cluster.close().unwrap();
    drop(cluster);
    let b = broker(dir.path());
    let saved = dir.path().join("saved-gone-0");
    copy_dir(&b.join("gone-0"), &saved);
    let cluster = open(dir.path());
    cluster.delete_topic("gone").unwrap();
    cluster.close().unwrap();
    drop(cluster);
    // As if the deletion's removal of the directory had not reached the disk.
    fs::rename(&saved, b.join("gone-0")).unwrap();
    // Every directory of `lost` is gone; the old log still knows it.
    fs::remove_dir_all(b.join("lost-0")).unwrap();
    fs::remove_dir_all(b.join("lost-1")).unwrap();

    let report = Cluster::rebuild_metadata(dir.path(), ClusterConfig::default()).unwrap();
    let summary: Vec<(&str, bool, bool, Vec<u32>)> = report
        .topics
        .iter()
        .map(|t| {
            (
                t.name.as_str(),
                t.removed,
                t.config_recovered,
                t.missing_partitions.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("gone", true, false, vec![]),
            ("keep", false, true, vec![]),
            ("lost", false, true, vec![0, 1])
        ]
    );
    let cluster = open(dir.path());
    assert_eq!(cluster.list_topics(), ["keep", "lost"]);
    let lost = cluster.topic("lost").unwrap();
    assert_eq!(lost.partition_count(), 2);
    assert_eq!(lost.overrides().get("retention.ms"), Some("60000"));
    assert_eq!(cluster.recovery_report().removed_dirs, [b.join("gone-0")]);
    assert!(!b.join("gone-0").exists());
    // Re-created, the name starts empty.
    let again = cluster.create_topic(NewTopic::new("gone", 1)).unwrap();
    assert_eq!(again.partition(0).unwrap().log_end_offset().unwrap(), 0);
    assert_eq!(values(&cluster, "keep", 0), ["kept"]);
}

#[test]
fn a_rebuild_needs_a_closed_cluster() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Cluster::rebuild_metadata(dir.path(), ClusterConfig::default()),
        Err(Error::InvalidArgument(_))
    ));
    let cluster = open(dir.path());
    assert!(matches!(
        Cluster::rebuild_metadata(dir.path(), ClusterConfig::default()),
        Err(Error::DirectoryLocked { .. })
    ));
    cluster.close().unwrap();
}

/// Without a recovery point (an older directory, a lost checkpoint file),
/// a metadata log whose bytes are all unreadable is cut to nothing by its
/// recovery; with partition directories present that is the same as a
/// missing log, and the open refuses.
#[test]
fn a_metadata_log_holding_only_garbage_is_as_good_as_missing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    cluster.create_topic(NewTopic::new("t", 1)).unwrap();
    cluster.close().unwrap();
    drop(cluster);
    fs::remove_file(dir.path().join("recovery-point-offset-checkpoint")).unwrap();
    fs::write(metadata_segment(dir.path()), [0u8; 100]).unwrap();
    assert!(matches!(
        Cluster::open(dir.path(), ClusterConfig::default()),
        Err(Error::MetadataMissing { .. })
    ));
    assert!(broker(dir.path()).join("t-0/partition.metadata").exists());
    Cluster::rebuild_metadata(dir.path(), ClusterConfig::default()).unwrap();
    assert_eq!(open(dir.path()).list_topics(), ["t"]);
}
