//! `Cluster::alter_topic_config`: each change applies to the live logs at
//! once, is stored in the metadata log and survives a reopen; bad input
//! changes nothing, stored or live.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use logbus::format::BatchBuilder;
use logbus::{
    AlterConfigOp, Cluster, ClusterConfig, Compression, Error, Log, LogConfig, NewTopic,
    OffsetAndMetadata, TopicConfig, TopicPartition,
};

/// Now, in milliseconds: records of this age are not due for
/// retention.ms's default of 7 days.
fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since.as_millis()).unwrap()
}

fn open(dir: &Path) -> Cluster {
    Cluster::open(dir, ClusterConfig::default()).unwrap()
}

/// A batch of `count` keyed records of `size` value bytes each.
fn batch(count: usize, size: usize) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Compression::None);
    let value = vec![b'v'; size];
    for i in 0..count {
        builder.append(
            now_ms(),
            Some(format!("k{i}").as_bytes()),
            Some(&value),
            &[],
        );
    }
    builder.build().unwrap().to_vec()
}

/// A batch of one record without a key.
fn keyless() -> Vec<u8> {
    let mut builder = BatchBuilder::new(Compression::None);
    builder.append(now_ms(), None, Some(b"v"), &[]);
    builder.build().unwrap().to_vec()
}

/// The `.log` files of partition `p` of `topic` on broker 0.
fn segments(dir: &Path, topic: &str, p: u32) -> usize {
    std::fs::read_dir(dir.join(format!("broker-0/{topic}-{p}")))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".log")
        })
        .count()
}

/// Every file of the metadata log, by name, with its bytes.
fn metadata_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(dir.join("__cluster_metadata-0"))
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect()
}

fn overrides(cluster: &Cluster, topic: &str) -> Vec<(String, String)> {
    cluster
        .topic(topic)
        .unwrap()
        .overrides()
        .entries()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn max_message_bytes_applies_at_once_to_every_handle_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    let topic = cluster.create_topic(NewTopic::new("t", 2)).unwrap();
    let partition = topic.partition(1).unwrap();
    let big = batch(4, 100);
    partition.append(&mut big.clone()).unwrap();

    cluster
        .alter_topic_config("t", &[AlterConfigOp::set("max.message.bytes", " 200 ")])
        .unwrap();
    // The handles made before see it, and so does the log.
    assert_eq!(topic.config().get("max.message.bytes"), Some("200"));
    assert_eq!(topic.overrides().get("max.message.bytes"), Some("200"));
    let end = partition.log_end_offset().unwrap();
    let err = partition.append(&mut big.clone()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::RecordTooLarge {
                max: 200,
                limit: "max.message.bytes",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(partition.log_end_offset().unwrap(), end);
    partition.append(&mut batch(1, 10)).unwrap();
    cluster.close().unwrap();
    drop((partition, topic));

    let cluster = open(dir.path());
    assert_eq!(
        overrides(&cluster, "t"),
        vec![("max.message.bytes".to_string(), "200".to_string())]
    );
    let partition = cluster.topic("t").unwrap().partition(0).unwrap();
    assert!(matches!(
        partition.append(&mut big.clone()),
        Err(Error::RecordTooLarge { max: 200, .. })
    ));
    // Deleting the topic's value reverts to the default, live and stored.
    cluster
        .alter_topic_config("t", &[AlterConfigOp::delete("max.message.bytes")])
        .unwrap();
    partition.append(&mut big.clone()).unwrap();
    assert!(overrides(&cluster, "t").is_empty());
    cluster.close().unwrap();
    drop(partition);
    let cluster = open(dir.path());
    assert!(overrides(&cluster, "t").is_empty());
    assert_eq!(
        cluster
            .topic("t")
            .unwrap()
            .config()
            .get("max.message.bytes"),
        None
    );
}

#[test]
fn lowering_segment_bytes_rolls_sooner() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    let topic = cluster.create_topic(NewTopic::new("t", 1)).unwrap();
    let partition = topic.partition(0).unwrap();
    for _ in 0..20 {
        partition.append(&mut batch(2, 100)).unwrap();
    }
    assert_eq!(segments(dir.path(), "t", 0), 1);
    cluster
        .alter_topic_config("t", &[AlterConfigOp::set("segment.bytes", "1024")])
        .unwrap();
    for _ in 0..20 {
        partition.append(&mut batch(2, 100)).unwrap();
    }
    // The active segment (over 4 KiB) rolls at the next append; then every
    // four or so batches.
    let rolled = segments(dir.path(), "t", 0);
    assert!(rolled >= 5, "{rolled} segments");
    assert_eq!(partition.log_end_offset().unwrap(), 80);
    cluster.close().unwrap();
    drop((partition, topic));
    let cluster = open(dir.path());
    let partition = cluster.topic("t").unwrap().partition(0).unwrap();
    assert_eq!(partition.log_end_offset().unwrap(), 80);
    for _ in 0..10 {
        partition.append(&mut batch(2, 100)).unwrap();
    }
    // Still 1 KiB segments after the reopen.
    assert!(segments(dir.path(), "t", 0) >= rolled + 2);
}

#[test]
fn retention_bytes_applies_at_the_next_retention_check() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    let config = TopicConfig::new().segment_bytes(1024).unwrap();
    let topic = cluster
        .create_topic(NewTopic::new("t", 1).config(config))
        .unwrap();
    let partition = topic.partition(0).unwrap();
    for _ in 0..20 {
        partition.append(&mut batch(2, 100)).unwrap();
    }
    assert!(segments(dir.path(), "t", 0) > 3);
    // Unlimited by default: nothing goes.
    assert_eq!(partition.enforce_retention().unwrap().segments, 0);
    assert_eq!(partition.log_start_offset().unwrap(), 0);
    cluster
        .alter_topic_config("t", &[AlterConfigOp::set("retention.bytes", "1")])
        .unwrap();
    let report = partition.enforce_retention().unwrap();
    assert!(report.segments > 0, "{report:?}");
    assert!(partition.log_start_offset().unwrap() > 0);
    // Only the active segment is left.
    assert_eq!(segments(dir.path(), "t", 0), 1);
    // The segment config survived the change of another key.
    assert_eq!(topic.config().get("segment.bytes"), Some("1024"));
}

#[test]
fn compaction_can_be_turned_on_but_not_off() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    let topic = cluster.create_topic(NewTopic::new("t", 1)).unwrap();
    let partition = topic.partition(0).unwrap();
    partition.append(&mut keyless()).unwrap();
    cluster
        .alter_topic_config("t", &[AlterConfigOp::set("cleanup.policy", "compact")])
        .unwrap();
    // A compacted log takes keyed records only, from now on.
    assert!(matches!(
        partition.append(&mut keyless()),
        Err(Error::InvalidBatch(_))
    ));
    partition.append(&mut batch(1, 10)).unwrap();
    let before = metadata_files(dir.path());
    for op in [
        AlterConfigOp::set("cleanup.policy", "delete"),
        AlterConfigOp::delete("cleanup.policy"),
    ] {
        let err = cluster.alter_topic_config("t", &[op]).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidConfig(m) if m.contains("compact")),
            "{err}"
        );
    }
    assert_eq!(metadata_files(dir.path()), before);
    // compact,delete keeps compacting: allowed.
    cluster
        .alter_topic_config(
            "t",
            &[AlterConfigOp::set("cleanup.policy", "delete , compact")],
        )
        .unwrap();
    assert_eq!(topic.config().get("cleanup.policy"), Some("compact,delete"));
    cluster.close().unwrap();
    drop((partition, topic));
    let cluster = open(dir.path());
    assert_eq!(
        overrides(&cluster, "t"),
        vec![("cleanup.policy".to_string(), "compact,delete".to_string())]
    );
    let partition = cluster.topic("t").unwrap().partition(0).unwrap();
    assert_eq!(partition.log_end_offset().unwrap(), 2);
    assert!(partition.append(&mut keyless()).is_err());
}

#[test]
fn bad_input_changes_nothing_stored_or_live() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    let config = TopicConfig::new().set("retention.ms", "1000").unwrap();
    let topic = cluster
        .create_topic(NewTopic::new("t", 1).config(config))
        .unwrap();
    cluster.create_topic(NewTopic::new("gone", 1)).unwrap();
    cluster.delete_topic("gone").unwrap();
    // `__consumer_offsets` exists once a group commits.
    cluster
        .alter_group_offsets(
            "g",
            &BTreeMap::from([(TopicPartition::new("t", 0), OffsetAndMetadata::new(0))]),
        )
        .unwrap();
    let files = metadata_files(dir.path());
    let stored = overrides(&cluster, "t");
    let invalid = |ops: &[AlterConfigOp]| {
        let err = cluster.alter_topic_config("t", ops).unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{ops:?}: {err}");
        err.to_string()
    };
    assert!(invalid(&[AlterConfigOp::set("no.such.key", "1")]).contains("no.such.key"));
    assert!(invalid(&[AlterConfigOp::delete("no.such.key")]).contains("no.such.key"));
    assert!(invalid(&[AlterConfigOp::set("retention.ms", "soon")]).contains("retention.ms"));
    assert!(invalid(&[AlterConfigOp::set("segment.bytes", "1")]).contains("segment.bytes"));
    // A good op with a bad one: neither applies.
    invalid(&[
        AlterConfigOp::set("retention.ms", "5000"),
        AlterConfigOp::set("max.message.bytes", "-1"),
    ]);
    // The same key twice.
    assert!(
        invalid(&[
            AlterConfigOp::set("retention.ms", "5000"),
            AlterConfigOp::delete("retention.ms"),
        ])
        .contains("retention.ms")
    );
    // min.insync.replicas above the replication factor (1).
    assert!(invalid(&[AlterConfigOp::set("min.insync.replicas", "2")]).contains("min.insync"));
    for (name, unknown) in [
        ("nope", true),
        ("gone", true),
        ("__consumer_offsets", false),
    ] {
        let err = cluster
            .alter_topic_config(name, &[AlterConfigOp::set("retention.ms", "5")])
            .unwrap_err();
        if unknown {
            assert!(
                matches!(&err, Error::UnknownTopicOrPartition { topic, .. } if topic == name),
                "{name}: {err}"
            );
        } else {
            assert!(
                matches!(&err, Error::InvalidTopic { topic, .. } if topic == name),
                "{name}: {err}"
            );
        }
    }
    assert_eq!(metadata_files(dir.path()), files);
    assert_eq!(overrides(&cluster, "t"), stored);
    assert_eq!(topic.config().get("retention.ms"), Some("1000"));
    // A change that changes nothing writes nothing.
    cluster
        .alter_topic_config(
            "t",
            &[
                AlterConfigOp::set("retention.ms", " 1000"),
                AlterConfigOp::delete("segment.ms"),
            ],
        )
        .unwrap();
    cluster.alter_topic_config("t", &[]).unwrap();
    assert_eq!(metadata_files(dir.path()), files);
    cluster.close().unwrap();
    assert!(matches!(
        cluster.alter_topic_config("t", &[AlterConfigOp::set("retention.ms", "5")]),
        Err(Error::Closed(_))
    ));
    drop(topic);

    let cluster = open(dir.path());
    assert_eq!(overrides(&cluster, "t"), stored);
    let internal = cluster.topic("__consumer_offsets").unwrap().config();
    assert_eq!(internal.get("retention.ms"), None);
}

#[test]
fn several_ops_are_one_change_and_replay_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    let config = TopicConfig::new()
        .set("retention.ms", "1000")
        .and_then(|c| c.set("segment.ms", "2000"))
        .unwrap();
    cluster
        .create_topic(NewTopic::new("t", 3).config(config))
        .unwrap();
    cluster
        .alter_topic_config(
            "t",
            &[
                AlterConfigOp::delete("retention.ms"),
                AlterConfigOp::set("segment.ms", "3000"),
                AlterConfigOp::set("flush.messages", "1"),
                AlterConfigOp::set("unclean.leader.election.enable", "TRUE"),
            ],
        )
        .unwrap();
    let expected = vec![
        ("flush.messages".to_string(), "1".to_string()),
        ("segment.ms".to_string(), "3000".to_string()),
        (
            "unclean.leader.election.enable".to_string(),
            "true".to_string(),
        ),
    ];
    assert_eq!(overrides(&cluster, "t"), expected);
    cluster.close().unwrap();
    let cluster = open(dir.path());
    assert_eq!(overrides(&cluster, "t"), expected);
    assert_eq!(
        cluster
            .describe_topic("t")
            .unwrap()
            .config
            .get("segment.ms"),
        Some("3000")
    );
}

#[test]
fn a_log_takes_a_new_config_but_keeps_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::builder(dir.path().join("l")).open().unwrap();
    for _ in 0..10 {
        log.append(&mut batch(2, 100), 0).unwrap();
    }
    assert_eq!(log.segment_count(), 1);
    log.set_config(LogConfig::builder().segment_bytes(1024).build().unwrap())
        .unwrap();
    assert_eq!(log.config().segment_bytes(), 1024);
    for _ in 0..10 {
        log.append(&mut batch(2, 100), 0).unwrap();
    }
    assert!(log.segment_count() > 3, "{}", log.segment_count());
    let compact = LogConfig::builder()
        .segment_bytes(1024)
        .compact(true)
        .delete(false)
        .build()
        .unwrap();
    log.set_config(compact.clone()).unwrap();
    assert!(log.append(&mut keyless(), 0).is_err());
    let err = log.set_config(LogConfig::default()).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    assert_eq!(*log.config(), compact);
    log.close().unwrap();
}

#[test]
fn min_insync_replicas_applies_to_the_next_acks_all_append() {
    let dir = tempfile::tempdir().unwrap();
    let config = ClusterConfig::builder().brokers(2).build().unwrap();
    let cluster = Cluster::open(dir.path(), config).unwrap();
    let topic = cluster
        .create_topic(NewTopic::new("t", 1).replication_factor(2))
        .unwrap();
    let leader = cluster.describe_topic("t").unwrap().partitions[0]
        .leader
        .unwrap();
    cluster.stop_broker(1 - leader).unwrap();
    let partition = topic.partition(0).unwrap();
    assert_eq!(
        cluster.describe_topic("t").unwrap().partitions[0].isr,
        [leader]
    );
    partition.append(&mut batch(1, 10)).unwrap();
    cluster
        .alter_topic_config("t", &[AlterConfigOp::set("min.insync.replicas", "2")])
        .unwrap();
    let err = partition.append(&mut batch(1, 10)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotEnoughReplicas {
                in_sync: 1,
                required: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(cluster.describe_topic("t").unwrap().partitions[0].under_min_isr);
    cluster
        .alter_topic_config("t", &[AlterConfigOp::delete("min.insync.replicas")])
        .unwrap();
    partition.append(&mut batch(1, 10)).unwrap();
    assert_eq!(partition.log_end_offset().unwrap(), 2);
}
