//! Topic lifecycle: create, describe, add partitions, delete, re-create,
//! reopen; bad input changes nothing stored.

use std::time::Duration;

use logbus::format::BatchBuilder;
use logbus::{Cluster, ClusterConfig, Compression, Error, NewTopic, Partition, TopicConfig};

fn open(dir: &std::path::Path) -> Cluster {
    Cluster::open(dir, ClusterConfig::default()).unwrap()
}

fn append(partition: &Partition, values: &[&str]) -> u64 {
    let mut batch = BatchBuilder::new(Compression::None);
    for v in values {
        batch.append(1_700_000_000_000, None, Some(v.as_bytes()), &[]);
    }
    let info = partition
        .append(&mut batch.build().unwrap().to_vec())
        .unwrap();
    info.first_offset()
}

fn values(partition: &Partition, from: u64) -> Vec<String> {
    let read = partition.read(from, 1 << 20).unwrap();
    let mut out = Vec::new();
    for batch in read.batches() {
        for record in batch.unwrap().records().unwrap() {
            let record = record.unwrap();
            if record.offset() as u64 >= from {
                out.push(String::from_utf8(record.value().unwrap().to_vec()).unwrap());
            }
        }
    }
    out
}

#[test]
fn topics_configs_and_offsets_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    let config = TopicConfig::new()
        .retention_time(Some(Duration::from_secs(3600)))
        .set("segment.bytes", "1048576")
        .unwrap();
    let topic = cluster
        .create_topic(NewTopic::new("orders", 2).config(config))
        .unwrap();
    let id = topic.id();
    append(&topic.partition(1).unwrap(), &["a", "b", "c"]);
    cluster.create_topic(NewTopic::new("audit.log", 1)).unwrap();
    cluster.create_partitions("audit.log", 3).unwrap();
    topic.partition(1).unwrap().delete_records(1).unwrap();
    cluster.close().unwrap();
    assert!(matches!(topic.partition(0), Err(Error::Closed(_))));
    drop(topic);

    let cluster = open(dir.path());
    assert_eq!(cluster.list_topics(), vec!["audit.log", "orders"]);
    let topic = cluster.topic("orders").unwrap();
    assert_eq!(topic.id(), id);
    assert_eq!(topic.config().get("retention.ms"), Some("3600000"));
    assert_eq!(topic.overrides().get("segment.bytes"), Some("1048576"));
    let p1 = topic.partition(1).unwrap();
    assert_eq!(p1.log_start_offset().unwrap(), 1);
    assert_eq!(p1.high_watermark().unwrap(), 3);
    assert_eq!(values(&p1, 1), vec!["b", "c"]);
    assert_eq!(cluster.topic("audit.log").unwrap().partition_count(), 3);
    let description = cluster.describe_topic("orders").unwrap();
    assert_eq!(description.partitions.len(), 2);
    assert_eq!(description.partitions[1].log_end_offset, 3);
    assert_eq!(description.partitions[1].log_start_offset, 1);
}

#[test]
fn deleted_topic_handles_fail_and_recreated_topic_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    let old = cluster.create_topic(NewTopic::new("t", 1)).unwrap();
    let p = old.partition(0).unwrap();
    append(&p, &["old-1", "old-2"]);
    let read_before = p.read(0, 1 << 20).unwrap();
    cluster.delete_topic("t").unwrap();
    assert!(old.is_deleted());
    let unknown = |e: Error| matches!(e, Error::UnknownTopicOrPartition { .. });
    assert!(unknown(p.read(0, 100).unwrap_err()));
    assert!(unknown(p.high_watermark().unwrap_err()));
    assert!(unknown(old.partition(0).unwrap_err()));
    assert!(unknown(cluster.topic("t").unwrap_err()));
    assert!(unknown(cluster.delete_topic("t").unwrap_err()));
    // Data already read stays valid after the files are gone.
    assert_eq!(read_before.batches().count(), 1);

    let new = cluster.create_topic(NewTopic::new("t", 1)).unwrap();
    assert_ne!(new.id(), old.id());
    let p2 = new.partition(0).unwrap();
    assert_eq!(p2.log_end_offset().unwrap(), 0);
    append(&p2, &["new"]);
    // The old handle still refers to the deleted topic.
    assert!(unknown(p.read(0, 100).unwrap_err()));
    cluster.close().unwrap();
    let cluster = open(dir.path());
    assert_eq!(
        values(&cluster.topic("t").unwrap().partition(0).unwrap(), 0),
        vec!["new"]
    );
}

#[test]
fn bad_input_is_rejected_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    cluster.create_topic(NewTopic::new("a.b", 1)).unwrap();
    for name in [
        "",
        ".",
        "..",
        "has space",
        "__internal",
        &"x".repeat(250),
        "a_b",
    ] {
        let err = cluster.create_topic(NewTopic::new(name, 1)).unwrap_err();
        assert!(matches!(err, Error::InvalidTopic { .. }), "{name}: {err}");
    }
    assert!(matches!(
        cluster.create_topic(NewTopic::new("a.b", 1)).unwrap_err(),
        Error::TopicAlreadyExists { .. }
    ));
    assert!(matches!(
        cluster.create_topic(NewTopic::new("zero", 0)).unwrap_err(),
        Error::InvalidPartitions { .. }
    ));
    assert!(matches!(
        cluster.create_partitions("a.b", 1).unwrap_err(),
        Error::InvalidPartitions { .. }
    ));
    assert!(matches!(
        cluster.create_partitions("nope", 4).unwrap_err(),
        Error::UnknownTopicOrPartition { .. }
    ));
    assert!(matches!(
        cluster.topic("a.b").unwrap().partition(1).unwrap_err(),
        Error::UnknownTopicOrPartition {
            partition: Some(1),
            ..
        }
    ));
    let too_small = TopicConfig::new().max_message_bytes(100);
    let topic = cluster
        .create_topic(NewTopic::new("small", 1).config(too_small.unwrap()))
        .unwrap();
    let p = topic.partition(0).unwrap();
    let mut batch = BatchBuilder::new(Compression::None);
    batch.append(0, None, Some(&[0u8; 200]), &[]);
    let err = p.append(&mut batch.build().unwrap().to_vec()).unwrap_err();
    assert!(matches!(err, Error::RecordTooLarge { .. }), "{err}");
    assert_eq!(p.log_end_offset().unwrap(), 0);
    assert!(matches!(
        p.read(5, 100).unwrap_err(),
        Error::OffsetOutOfRange { .. }
    ));
    assert!(matches!(
        p.delete_records(5).unwrap_err(),
        Error::OffsetOutOfRange { .. }
    ));
    cluster.close().unwrap();
    let cluster = open(dir.path());
    assert_eq!(cluster.list_topics(), vec!["a.b", "small"]);
    assert_eq!(cluster.topic("a.b").unwrap().partition_count(), 1);
}

#[test]
fn a_second_opener_is_refused_until_close() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    let clone = cluster.clone();
    assert!(matches!(
        Cluster::open(dir.path(), ClusterConfig::default()).unwrap_err(),
        Error::DirectoryLocked { .. }
    ));
    clone.close().unwrap();
    assert!(matches!(
        cluster.create_topic(NewTopic::new("x", 1)).unwrap_err(),
        Error::Closed(_)
    ));
    let again = open(dir.path());
    drop(again);
    drop(cluster);
    let _third = open(dir.path());
}

#[test]
fn compacted_topics_keep_their_policy_and_refuse_keyless_records() {
    use logbus::{CleanupPolicy, OffsetAndMetadata, TopicPartition};
    use std::collections::BTreeMap;

    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    let config = TopicConfig::new()
        .cleanup_policy(CleanupPolicy::Compact)
        .set("delete.retention.ms", "60000")
        .unwrap()
        .set("min.cleanable.dirty.ratio", "0.1")
        .unwrap();
    let topic = cluster
        .create_topic(NewTopic::new("profiles", 1).config(config))
        .unwrap();
    let p = topic.partition(0).unwrap();
    let mut keyless = BatchBuilder::new(Compression::None);
    keyless.append(1, None, Some(b"v"), &[]);
    let err = p
        .append(&mut keyless.build().unwrap().to_vec())
        .unwrap_err();
    assert!(matches!(err, Error::InvalidBatch(_)), "{err}");
    // A key-less record after keyed ones refuses the whole batch, compressed
    // or not; nothing is stored.
    let mut codecs = vec![Compression::None];
    if cfg!(feature = "gzip") {
        codecs.push(Compression::Gzip);
    }
    for codec in codecs {
        let mut mixed = BatchBuilder::new(codec);
        mixed.append(1, Some(b"user-1"), Some(b"v1"), &[]);
        mixed.append(1, Some(b"user-2"), Some(b"v2"), &[]);
        mixed.append(1, None, Some(b"v3"), &[]);
        let err = p.append(&mut mixed.build().unwrap().to_vec()).unwrap_err();
        assert!(matches!(err, Error::InvalidBatch(_)), "{codec:?}: {err}");
        assert_eq!(p.log_end_offset().unwrap(), 0);
    }
    let mut keyed = BatchBuilder::new(Compression::None);
    keyed.append(1, Some(b"user-1"), Some(b"v1"), &[]);
    p.append(&mut keyed.build().unwrap().to_vec()).unwrap();
    assert_eq!(p.log_end_offset().unwrap(), 1);
    // The offsets topic, created by the first commit, is compacted too.
    cluster
        .alter_group_offsets(
            "g",
            &BTreeMap::from([(
                TopicPartition::new("profiles", 0),
                OffsetAndMetadata::new(1),
            )]),
        )
        .unwrap();
    let offsets = cluster.describe_topic("__consumer_offsets").unwrap();
    assert!(offsets.internal);
    assert_eq!(offsets.partitions.len(), 50);
    assert_eq!(offsets.config.cleanup(), CleanupPolicy::Compact);
    drop((p, topic));
    cluster.close().unwrap();
    let cluster = open(dir.path());
    let config = cluster.topic("profiles").unwrap().config().clone();
    assert_eq!(config.cleanup(), CleanupPolicy::Compact);
    assert_eq!(config.get("delete.retention.ms"), Some("60000"));
    assert!(
        dir.path()
            .join("broker-0/cleaner-offset-checkpoint")
            .exists()
    );
}

/// Kafka's longest topic names (249 characters): the `-delete` directory
/// name is cut to fit 255 bytes, so the deletion works, and the name
/// re-created starts empty.
#[test]
fn topics_with_the_longest_names_are_deleted_and_recreated_empty() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    let name = "n".repeat(249);
    let topic = cluster.create_topic(NewTopic::new(&name, 2)).unwrap();
    append(&topic.partition(0).unwrap(), &["old"]);
    cluster.delete_topic(&name).unwrap();
    assert!(cluster.list_topics().is_empty());
    let broker: Vec<String> = std::fs::read_dir(dir.path().join("broker-0"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('n'))
        .collect();
    assert!(broker.is_empty(), "{broker:?}");
    let again = cluster.create_topic(NewTopic::new(&name, 2)).unwrap();
    assert_eq!(again.partition(0).unwrap().log_end_offset().unwrap(), 0);
    append(&again.partition(1).unwrap(), &["new"]);
    cluster.close().unwrap();
    let cluster = open(dir.path());
    let topic = cluster.topic(&name).unwrap();
    assert!(values(&topic.partition(0).unwrap(), 0).is_empty());
    assert_eq!(values(&topic.partition(1).unwrap(), 0), ["new"]);
}

/// A deletion whose directory renames fail is still a deletion: the topic
/// is gone at once, and what is left on disk is removed before the name is
/// used again, or by the next open (the removal record is the evidence).
#[test]
fn a_deletion_that_fails_half_way_is_finished_later() {
    use logbus::{FaultKind, FaultOp, FaultyStorage};
    use std::sync::Arc;

    let config = |storage: &FaultyStorage| {
        ClusterConfig::builder()
            .storage(Arc::new(storage.clone()))
            .build()
            .unwrap()
    };
    let name = "d".repeat(249);
    for recreate_before_reopen in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let storage = FaultyStorage::new();
        let cluster = Cluster::open(dir.path(), config(&storage)).unwrap();
        let topic = cluster.create_topic(NewTopic::new(&name, 1)).unwrap();
        append(&topic.partition(0).unwrap(), &["old"]);
        storage.fail_all_from_now(FaultOp::Rename, FaultKind::Eio);
        let err = cluster.delete_topic(&name).unwrap_err();
        storage.clear_faults();
        assert!(matches!(err, Error::Io { op: "rename", .. }), "{err}");
        // Nothing of the topic is visible any more.
        assert!(topic.is_deleted());
        assert!(cluster.list_topics().is_empty());
        assert!(matches!(
            cluster.topic(&name).unwrap_err(),
            Error::UnknownTopicOrPartition { .. }
        ));
        let leftover = dir.path().join("broker-0").join(format!("{name}-0"));
        assert!(leftover.exists(), "the failed rename left the directory");
        if recreate_before_reopen {
            let again = cluster.create_topic(NewTopic::new(&name, 1)).unwrap();
            assert_eq!(again.partition(0).unwrap().log_end_offset().unwrap(), 0);
        }
        cluster.close().unwrap();
        drop((topic, cluster));
        let cluster = Cluster::open(dir.path(), config(&storage)).unwrap();
        if recreate_before_reopen {
            let again = cluster.topic(&name).unwrap();
            assert!(values(&again.partition(0).unwrap(), 0).is_empty());
            assert!(cluster.recovery_report().removed_dirs.is_empty());
        } else {
            assert!(cluster.list_topics().is_empty());
            assert_eq!(
                cluster.recovery_report().removed_dirs,
                std::slice::from_ref(&leftover)
            );
            assert!(!leftover.exists());
            let again = cluster.create_topic(NewTopic::new(&name, 1)).unwrap();
            assert!(values(&again.partition(0).unwrap(), 0).is_empty());
        }
        cluster.close().unwrap();
    }
}

/// Everything in `dir`, recursively: relative paths and file contents.
fn snapshot(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path.clone());
                out.push((path.strip_prefix(dir).unwrap().to_path_buf(), Vec::new()));
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.push((path.strip_prefix(dir).unwrap().to_path_buf(), bytes));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn partition_counts_are_bounded_before_anything_is_allocated_or_stored() {
    use logbus::{MAX_PARTITIONS_PER_CLUSTER, MAX_PARTITIONS_PER_TOPIC};

    let dir = tempfile::tempdir().unwrap();
    let config = ClusterConfig::builder().max_partitions(8).build().unwrap();
    assert_eq!(config.max_partitions(), 8);
    let cluster = Cluster::open(dir.path(), config).unwrap();
    cluster.create_topic(NewTopic::new("t", 2)).unwrap();
    let metadata = dir.path().join("__cluster_metadata-0");
    let broker = dir.path().join("broker-0");
    let (meta_before, broker_before) = (snapshot(&metadata), snapshot(&broker));
    let refused = |e: Error, limit: &str| match e {
        Error::InvalidPartitions { reason, .. } => {
            assert!(reason.contains(limit), "{reason} names {limit}");
        }
        other => panic!("expected InvalidPartitions, got {other}"),
    };
    for count in [u32::MAX, MAX_PARTITIONS_PER_TOPIC + 1] {
        refused(
            cluster
                .create_topic(NewTopic::new("huge", count))
                .unwrap_err(),
            "MAX_PARTITIONS_PER_TOPIC",
        );
        refused(
            cluster.create_partitions("t", count).unwrap_err(),
            "MAX_PARTITIONS_PER_TOPIC",
        );
    }
    // Within the per-topic limit but above the cluster's.
    refused(
        cluster.create_topic(NewTopic::new("big", 7)).unwrap_err(),
        "max_partitions",
    );
    refused(
        cluster.create_partitions("t", 9).unwrap_err(),
        "max_partitions",
    );
    assert_eq!(snapshot(&metadata), meta_before);
    assert_eq!(snapshot(&broker), broker_before);
    // Up to the limit is fine.
    cluster.create_topic(NewTopic::new("fits", 6)).unwrap();
    refused(
        cluster.create_partitions("t", 3).unwrap_err(),
        "max_partitions",
    );
    cluster.close().unwrap();
    let cluster = open(dir.path());
    assert_eq!(cluster.list_topics(), ["fits", "t"]);
    assert_eq!(cluster.topic("t").unwrap().partition_count(), 2);

    for bad in [0, MAX_PARTITIONS_PER_CLUSTER + 1] {
        assert!(matches!(
            ClusterConfig::builder().max_partitions(bad).build(),
            Err(Error::InvalidConfig(_))
        ));
    }
    assert!(matches!(
        ClusterConfig::builder()
            .num_partitions(MAX_PARTITIONS_PER_TOPIC + 1)
            .build(),
        Err(Error::InvalidConfig(_))
    ));
}
