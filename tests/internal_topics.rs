//! Internal topics (`__consumer_offsets`): only the cluster writes them,
//! and a record their replay cannot read is skipped and reported instead
//! of locking the user out.

use std::collections::BTreeMap;
use std::path::Path;

use logbus::format::BatchBuilder;
use logbus::{
    Cluster, ClusterConfig, Compression, Error, Log, NewTopic, OffsetAndMetadata, Producer,
    ProducerConfig, ProducerRecord, TopicPartition,
};

const OFFSETS: &str = "__consumer_offsets";

fn open(dir: &Path) -> Cluster {
    Cluster::open(dir, ClusterConfig::default()).unwrap()
}

fn commit(cluster: &Cluster, group: &str, topic: &str, offset: u64) {
    let offsets = BTreeMap::from([(
        TopicPartition::new(topic, 0),
        OffsetAndMetadata::new(offset),
    )]);
    cluster.alter_group_offsets(group, &offsets).unwrap();
}

fn committed(cluster: &Cluster, group: &str) -> Vec<(String, u64)> {
    cluster
        .list_group_offsets(group)
        .unwrap()
        .into_iter()
        .map(|(tp, o)| (tp.topic, o.offset))
        .collect()
}

/// The `__consumer_offsets` partition holding `group`'s commits (the only
/// non-empty one after its first commit).
fn offsets_partition(cluster: &Cluster) -> u32 {
    let topic = cluster.topic(OFFSETS).unwrap();
    let used: Vec<u32> = (0..topic.partition_count())
        .filter(|&p| topic.partition(p).unwrap().log_end_offset().unwrap() > 0)
        .collect();
    assert_eq!(used.len(), 1, "{used:?}");
    used[0]
}

fn batch(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut batch = BatchBuilder::new(Compression::None);
    batch.append(1_700_000_000_000, Some(key), Some(value), &[]);
    batch.build().unwrap().to_vec()
}

#[test]
fn public_mutations_of_internal_topics_are_refused_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    cluster.create_topic(NewTopic::new("a", 1)).unwrap();
    commit(&cluster, "g", "a", 3);
    let p = offsets_partition(&cluster);
    let internal = cluster.topic(OFFSETS).unwrap();
    let partition = internal.partition(p).unwrap();
    let end = partition.log_end_offset().unwrap();
    let refused = |e: Error| {
        assert!(
            matches!(&e, Error::InvalidTopic { topic, .. } if topic == OFFSETS),
            "{e}"
        );
    };
    refused(partition.append(&mut batch(b"k", b"v")).unwrap_err());
    refused(partition.delete_records(end).unwrap_err());
    refused(cluster.create_partitions(OFFSETS, 60).unwrap_err());
    refused(cluster.delete_topic(OFFSETS).unwrap_err());
    let producer = Producer::new(&cluster, ProducerConfig::default()).unwrap();
    refused(
        producer
            .send(ProducerRecord::new(OFFSETS, "v").with_partition(p))
            .unwrap_err(),
    );
    producer.close().unwrap();
    // Reading is allowed, and nothing changed.
    assert_eq!(partition.log_end_offset().unwrap(), end);
    assert_eq!(partition.log_start_offset().unwrap(), 0);
    assert!(partition.read(0, 1 << 20).unwrap().batches().count() > 0);
    assert_eq!(internal.partition_count(), 50);
    assert_eq!(committed(&cluster, "g"), [("a".to_string(), 3)]);
    // User topics are unaffected.
    let user = cluster.topic("a").unwrap().partition(0).unwrap();
    user.append(&mut batch(b"k", b"v")).unwrap();
    assert_eq!(user.delete_records(1).unwrap(), 1);
}

/// The scenario, with the record placed by other means (a raw
/// `Log` on the partition directory while the cluster is closed), since
/// the cluster no longer accepts it: the open skips and reports it, and
/// every other commit loads.
#[test]
fn an_unreadable_commit_record_is_skipped_and_reported_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    cluster.create_topic(NewTopic::new("a", 1)).unwrap();
    cluster.create_topic(NewTopic::new("b", 1)).unwrap();
    commit(&cluster, "g1", "a", 5);
    let p = offsets_partition(&cluster);
    cluster.close().unwrap();
    drop(cluster);

    let log_dir = dir.path().join("broker-0").join(format!("{OFFSETS}-{p}"));
    let log = Log::builder(&log_dir).open().unwrap();
    let garbage_at = log.log_end_offset();
    // A commit key (version 1) whose strings run past the end, then a key
    // of a version no logbus (or Kafka) writes, then a key-less record.
    log.append(&mut batch(b"\x00\x01\x00\x09g1", b"v"), 0)
        .unwrap();
    log.append(&mut batch(b"\x00\x63", b"future"), 0).unwrap();
    let mut keyless = BatchBuilder::new(Compression::None);
    keyless.append(1, None, Some(b"v"), &[]);
    log.append(&mut keyless.build().unwrap().to_vec(), 0)
        .unwrap();
    log.close().unwrap();

    let cluster = open(dir.path());
    let skipped: Vec<(TopicPartition, u64)> = cluster
        .recovery_report()
        .skipped_records
        .iter()
        .map(|s| (s.partition.clone(), s.offset))
        .collect();
    let tp = TopicPartition::new(OFFSETS, p);
    assert_eq!(
        skipped,
        [
            (tp.clone(), garbage_at),
            (tp.clone(), garbage_at + 1),
            (tp.clone(), garbage_at + 2)
        ]
    );
    assert!(
        cluster
            .recovery_report()
            .skipped_records
            .iter()
            .all(|s| !s.reason.is_empty())
    );
    assert_eq!(committed(&cluster, "g1"), [("a".to_string(), 5)]);
    // Commits after the garbage are replayed too.
    commit(&cluster, "g1", "b", 7);
    cluster.close().unwrap();
    drop(cluster);
    let cluster = open(dir.path());
    assert_eq!(cluster.recovery_report().skipped_records.len(), 3);
    assert_eq!(
        committed(&cluster, "g1"),
        [("a".to_string(), 5), ("b".to_string(), 7)]
    );
}
