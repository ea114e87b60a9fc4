//! Committed offsets in `__consumer_offsets`: commit, list, delete; they
//! survive a restart of the whole cluster; deleting a topic or a group
//! removes them; bad input commits nothing.

use std::collections::BTreeMap;

use logbus::{Cluster, ClusterConfig, Error, NewTopic, OffsetAndMetadata, TopicPartition};

fn open(dir: &std::path::Path) -> Cluster {
    Cluster::open(dir, ClusterConfig::default()).unwrap()
}

fn offsets(entries: &[(&str, u32, u64)]) -> BTreeMap<TopicPartition, OffsetAndMetadata> {
    entries
        .iter()
        .map(|(t, p, o)| {
            (
                TopicPartition::new(*t, *p),
                OffsetAndMetadata::new(*o).with_metadata(format!("at {o}")),
            )
        })
        .collect()
}

fn plain(map: &BTreeMap<TopicPartition, OffsetAndMetadata>) -> Vec<(String, u32, u64, String)> {
    map.iter()
        .map(|(tp, m)| (tp.topic.clone(), tp.partition, m.offset, m.metadata.clone()))
        .collect()
}

#[test]
fn commits_survive_restart_and_later_commits_win() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    cluster.create_topic(NewTopic::new("a", 3)).unwrap();
    cluster.create_topic(NewTopic::new("b", 1)).unwrap();
    cluster
        .alter_group_offsets("g1", &offsets(&[("a", 0, 5), ("a", 2, 9)]))
        .unwrap();
    cluster
        .alter_group_offsets("g1", &offsets(&[("a", 0, 7), ("b", 0, 1)]))
        .unwrap();
    cluster
        .alter_group_offsets("g2", &offsets(&[("a", 1, 3)]))
        .unwrap();
    assert!(
        !cluster
            .list_topics()
            .contains(&"__consumer_offsets".to_string())
    );
    let before = cluster.list_group_offsets("g1").unwrap();
    assert_eq!(
        plain(&before),
        [
            ("a".into(), 0, 7, "at 7".into()),
            ("a".into(), 2, 9, "at 9".into()),
            ("b".into(), 0, 1, "at 1".into())
        ]
    );
    assert!(before.values().all(|m| m.commit_timestamp > 0));
    cluster.close().unwrap();

    let cluster = open(dir.path());
    assert_eq!(cluster.list_group_offsets("g1").unwrap(), before);
    assert_eq!(cluster.list_groups(), ["g1", "g2"]);
    assert_eq!(
        plain(&cluster.list_group_offsets("g2").unwrap()),
        [("a".into(), 1, 3, "at 3".into())]
    );
    assert!(cluster.list_group_offsets("nobody").unwrap().is_empty());
}

#[test]
fn deleting_a_group_or_a_topic_removes_its_offsets_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    cluster.create_topic(NewTopic::new("a", 2)).unwrap();
    cluster.create_topic(NewTopic::new("b", 1)).unwrap();
    cluster
        .alter_group_offsets("g1", &offsets(&[("a", 0, 5), ("b", 0, 2)]))
        .unwrap();
    cluster
        .alter_group_offsets("g2", &offsets(&[("a", 1, 3)]))
        .unwrap();
    assert_eq!(cluster.delete_group("g2").unwrap(), 1);
    assert_eq!(cluster.delete_group("g2").unwrap(), 0);
    cluster.delete_topic("a").unwrap();
    assert_eq!(
        plain(&cluster.list_group_offsets("g1").unwrap()),
        [("b".into(), 0, 2, "at 2".into())]
    );
    cluster.create_topic(NewTopic::new("a", 2)).unwrap();
    cluster.close().unwrap();

    let cluster = open(dir.path());
    assert_eq!(cluster.list_groups(), ["g1"]);
    assert_eq!(
        plain(&cluster.list_group_offsets("g1").unwrap()),
        [("b".into(), 0, 2, "at 2".into())]
    );
}

#[test]
fn bad_commits_are_rejected_and_commit_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    cluster.create_topic(NewTopic::new("a", 1)).unwrap();
    let err = cluster
        .alter_group_offsets("", &offsets(&[("a", 0, 1)]))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    let err = cluster
        .alter_group_offsets("g", &offsets(&[("a", 0, 1), ("a", 1, 1)]))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnknownTopicOrPartition {
                partition: Some(1),
                ..
            }
        ),
        "{err}"
    );
    let err = cluster
        .alter_group_offsets("g", &offsets(&[("nope", 0, 1)]))
        .unwrap_err();
    assert!(
        matches!(err, Error::UnknownTopicOrPartition { .. }),
        "{err}"
    );
    let long = BTreeMap::from([(
        TopicPartition::new("a", 0),
        OffsetAndMetadata::new(1).with_metadata("x".repeat(40_000)),
    )]);
    assert!(matches!(
        cluster.alter_group_offsets("g", &long).unwrap_err(),
        Error::InvalidArgument(_)
    ));
    assert!(cluster.list_groups().is_empty());
    assert!(cluster.list_group_offsets("g").unwrap().is_empty());
    cluster.close().unwrap();
    assert!(open(dir.path()).list_groups().is_empty());
}

#[test]
fn a_consumer_resumes_where_its_group_committed_after_a_restart() {
    use logbus::format::BatchBuilder;
    use logbus::{Compression, Consumer, ConsumerConfig, OffsetReset};
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    let partition = cluster
        .create_topic(NewTopic::new("jobs", 1))
        .unwrap()
        .partition(0)
        .unwrap();
    let mut batch = BatchBuilder::new(Compression::None);
    for i in 0..10u8 {
        batch.append(1, None, Some(&[i]), &[]);
    }
    partition
        .append(&mut batch.build().unwrap().to_vec())
        .unwrap();
    let config = || {
        ConsumerConfig::builder()
            .group_id("workers")
            .auto_offset_reset(OffsetReset::Earliest)
            .max_poll_records(4)
            .build()
            .unwrap()
    };
    let tp = TopicPartition::new("jobs", 0);
    let mut consumer = Consumer::new(&cluster, config()).unwrap();
    assert!(
        consumer
            .committed(std::slice::from_ref(&tp))
            .unwrap()
            .is_empty()
    );
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    let first = consumer.poll(Duration::from_secs(5)).unwrap();
    assert_eq!(first.count(), 4);
    consumer.commit_sync().unwrap();
    assert_eq!(
        consumer.committed(std::slice::from_ref(&tp)).unwrap()[&tp].offset,
        4
    );
    // Polled but not committed: redelivered after the restart.
    assert_eq!(consumer.poll(Duration::from_secs(5)).unwrap().count(), 4);
    drop(consumer);
    drop(partition);
    cluster.close().unwrap();

    let cluster = open(dir.path());
    let mut consumer = Consumer::new(&cluster, config()).unwrap();
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    let resumed = consumer.poll(Duration::from_secs(5)).unwrap();
    let offsets: Vec<u64> = resumed.iter().map(|r| r.offset()).collect();
    assert_eq!(offsets, [4, 5, 6, 7]);
    // Explicit offsets, then another group starts from auto.offset.reset.
    consumer
        .commit_offsets(&BTreeMap::from([(tp.clone(), OffsetAndMetadata::new(9))]))
        .unwrap();
    assert_eq!(
        cluster.list_group_offsets("workers").unwrap()[&tp].offset,
        9
    );
    let mut other = Consumer::new(
        &cluster,
        ConsumerConfig::builder()
            .group_id("auditors")
            .auto_offset_reset(OffsetReset::Latest)
            .build()
            .unwrap(),
    )
    .unwrap();
    other.assign(std::slice::from_ref(&tp)).unwrap();
    assert_eq!(other.position(&tp).unwrap(), 10);
    // Without a group.id there is nothing to commit to.
    let mut loner = Consumer::new(&cluster, ConsumerConfig::default()).unwrap();
    loner.assign(std::slice::from_ref(&tp)).unwrap();
    assert!(matches!(
        loner.commit_sync().unwrap_err(),
        Error::IllegalState(_)
    ));
    assert!(matches!(
        ConsumerConfig::builder().group_id("").build().unwrap_err(),
        Error::InvalidConfig(_)
    ));
}
