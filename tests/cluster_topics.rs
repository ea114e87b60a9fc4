//! Topic lifecycle: create, describe, add partitions, delete, re-create,
//! reopen; bad input changes nothing stored.

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
        .retention_ms(Some(3_600_000))
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
        .create_topic(NewTopic::new("small", 1).config(too_small))
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
