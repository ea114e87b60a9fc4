//! Several brokers in one cluster: broker directories, replica placement,
//! the partition state in the metadata log, routing to the leader's broker,
//! and reopening. Followers are fed by their fetchers (see
//! `replication.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use logbus::{
    Acks, Cluster, ClusterConfig, Consumer, ConsumerConfig, Error, NewTopic, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, TopicConfig, TopicPartition,
};

fn brokers(n: u32) -> ClusterConfig {
    ClusterConfig::builder().brokers(n).build().unwrap()
}

/// Partition directories (`<topic>-<n>`) in `dir`, sorted.
fn partition_dirs(dir: &Path, topic: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| {
                    n.strip_prefix(topic)
                        .and_then(|rest| rest.strip_prefix('-'))
                        .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn produce(cluster: &Cluster, topic: &str, count: u64, acks: Acks) -> Vec<(u32, u64)> {
    let producer = Producer::new(
        cluster,
        ProducerConfig::builder().acks(acks).build().unwrap(),
    )
    .unwrap();
    let futures: Vec<_> = (0..count)
        .map(|i| {
            producer
                .send(ProducerRecord::new(topic, i.to_string()).with_key(format!("k{i}")))
                .unwrap()
        })
        .collect();
    let placed = futures
        .into_iter()
        .map(|f| {
            let m = f.wait().unwrap();
            (m.partition(), m.offset().unwrap())
        })
        .collect();
    producer.close().unwrap();
    placed
}

/// Values of every record of `topic` (all `partitions`), by partition.
fn consume_all(cluster: &Cluster, topic: &str, partitions: u32, count: usize) -> Vec<String> {
    let config = ConsumerConfig::builder()
        .auto_offset_reset(OffsetReset::Earliest)
        .build()
        .unwrap();
    let mut consumer = Consumer::new(cluster, config).unwrap();
    let all: Vec<TopicPartition> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    consumer.assign(&all).unwrap();
    let mut values = Vec::new();
    while values.len() < count {
        let records = consumer.poll(Duration::from_secs(30)).unwrap();
        assert!(!records.is_empty(), "records stopped at {}", values.len());
        values.extend(
            records
                .iter()
                .map(|r| String::from_utf8(r.value().unwrap().to_vec()).unwrap()),
        );
    }
    values.sort();
    values
}

/// Leaders spread round-robin over the brokers; each partition's
/// directory is on its leader's broker only (replication factor 1).
#[test]
fn three_brokers_spread_rf1_partitions_and_serve_them_like_one() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), brokers(3)).unwrap();
    let topic = cluster.create_topic(NewTopic::new("t", 6)).unwrap();
    let described = topic.describe().unwrap();
    let mut led: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for p in &described.partitions {
        assert_eq!(p.replicas, [p.leader.unwrap()], "{p:?}");
        assert_eq!(p.isr, [p.leader.unwrap()]);
        assert_eq!(p.leader_epoch, 0);
        led.entry(p.leader.unwrap()).or_default().push(p.partition);
    }
    assert_eq!(led.len(), 3, "every broker leads: {led:?}");
    assert!(led.values().all(|ps| ps.len() == 2), "{led:?}");
    // Consecutive partitions have consecutive leaders.
    for pair in described.partitions.windows(2) {
        assert_eq!(pair[1].leader.unwrap(), (pair[0].leader.unwrap() + 1) % 3);
    }
    for (&broker, parts) in &led {
        let expected: Vec<String> = parts.iter().map(|p| format!("t-{p}")).collect();
        assert_eq!(
            partition_dirs(&dir.path().join(format!("broker-{broker}")), "t"),
            expected
        );
    }

    let placed = produce(&cluster, "t", 300, Acks::All);
    let per_partition: BTreeSet<u32> = placed.iter().map(|(p, _)| *p).collect();
    assert_eq!(per_partition.len(), 6, "keys spread over every partition");
    let mut expected: Vec<String> = (0..300).map(|i: u64| i.to_string()).collect();
    expected.sort();
    assert_eq!(consume_all(&cluster, "t", 6, 300), expected);
    let ends: Vec<u64> = topic
        .partitions()
        .unwrap()
        .iter()
        .map(|p| p.log_end_offset().unwrap())
        .collect();
    assert_eq!(ends.iter().sum::<u64>(), 300);
    cluster.close().unwrap();

    // A reopen restores placement, leaders and data.
    let cluster = Cluster::open(dir.path(), brokers(3)).unwrap();
    let again = cluster.describe_topic("t").unwrap();
    for (before, after) in described.partitions.iter().zip(&again.partitions) {
        assert_eq!(
            (
                before.leader.unwrap(),
                &before.replicas,
                &before.isr,
                before.leader_epoch
            ),
            (
                after.leader.unwrap(),
                &after.replicas,
                &after.isr,
                after.leader_epoch
            )
        );
    }
    assert_eq!(consume_all(&cluster, "t", 6, 300), expected);
    assert_eq!(
        cluster.recovery_report().partitions.len(),
        6,
        "one report per partition"
    );
    cluster.close().unwrap();
}

/// A consumer group over a 3-broker cluster: its commits go to
/// `__consumer_offsets` partitions led by the brokers in turn, and come
/// back after a reopen.
#[test]
fn groups_commit_and_resume_across_brokers_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), brokers(3)).unwrap();
    cluster.create_topic(NewTopic::new("g", 4)).unwrap();
    produce(&cluster, "g", 100, Acks::Leader);
    let group = || {
        ConsumerConfig::builder()
            .group_id("readers")
            .auto_offset_reset(OffsetReset::Earliest)
            .build()
            .unwrap()
    };
    let mut consumer = Consumer::new(&cluster, group()).unwrap();
    consumer.subscribe(["g"]).unwrap();
    let mut seen = 0;
    while seen < 100 {
        seen += consumer.poll(Duration::from_secs(30)).unwrap().count();
    }
    consumer.commit_sync().unwrap();
    let all: Vec<TopicPartition> = (0..4).map(|p| TopicPartition::new("g", p)).collect();
    let committed = consumer.committed(&all).unwrap();
    assert_eq!(committed.values().map(|m| m.offset).sum::<u64>(), 100);
    consumer.close().unwrap();
    let offsets = cluster.describe_topic("__consumer_offsets").unwrap();
    let leaders: BTreeSet<u32> = offsets
        .partitions
        .iter()
        .map(|p| p.leader.unwrap())
        .collect();
    assert_eq!(leaders, BTreeSet::from([0, 1, 2]));
    cluster.close().unwrap();

    let cluster = Cluster::open(dir.path(), brokers(3)).unwrap();
    let mut consumer = Consumer::new(&cluster, group()).unwrap();
    consumer.subscribe(["g"]).unwrap();
    let offsets = |c: &BTreeMap<TopicPartition, logbus::OffsetAndMetadata>| -> Vec<u64> {
        c.values().map(|m| m.offset).collect()
    };
    assert_eq!(
        offsets(&consumer.committed(&all).unwrap()),
        offsets(&committed)
    );
    produce(&cluster, "g", 10, Acks::Leader);
    let mut after = 0;
    while after < 10 {
        after += consumer.poll(Duration::from_secs(30)).unwrap().count();
    }
    assert_eq!(after, 10, "only the new records: the group resumed");
    consumer.close().unwrap();
    cluster.close().unwrap();
}

/// Replication factor 3 over 3 brokers: every broker holds every
/// partition; the first replica leads, all are in sync at creation;
/// followers' logs exist and stay empty (nothing feeds them yet).
#[test]
fn every_replica_gets_a_directory_and_only_the_leader_takes_records() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), brokers(3)).unwrap();
    let topic = cluster
        .create_topic(NewTopic::new("r", 3).replication_factor(3))
        .unwrap();
    let described = topic.describe().unwrap();
    let leaders: BTreeSet<u32> = described
        .partitions
        .iter()
        .map(|p| p.leader.unwrap())
        .collect();
    assert_eq!(leaders.len(), 3, "leaders spread");
    for p in &described.partitions {
        assert_eq!(p.replicas.len(), 3);
        assert_eq!(p.replicas[0], p.leader.unwrap());
        let distinct: BTreeSet<_> = p.replicas.iter().collect();
        assert_eq!(distinct.len(), 3);
        assert_eq!(p.isr, p.replicas);
    }
    for b in 0..3 {
        assert_eq!(
            partition_dirs(&dir.path().join(format!("broker-{b}")), "r"),
            ["r-0", "r-1", "r-2"]
        );
    }
    produce(&cluster, "r", 30, Acks::All);
    let described = topic.describe().unwrap();
    cluster.close().unwrap();
    for p in &described.partitions {
        for &b in &p.replicas {
            let log = dir.path().join(format!(
                "broker-{b}/r-{}/00000000000000000000.log",
                p.partition
            ));
            let len = std::fs::metadata(&log).unwrap().len();
            let leader_log = dir.path().join(format!(
                "broker-{}/r-{}/00000000000000000000.log",
                p.leader.unwrap(),
                p.partition
            ));
            assert_eq!(len > 0, p.log_end_offset > 0, "{}", log.display());
            // acks=all: every in-sync replica had each batch.
            assert_eq!(
                len,
                std::fs::metadata(&leader_log).unwrap().len(),
                "{}",
                log.display()
            );
        }
    }
    let cluster = Cluster::open(dir.path(), brokers(3)).unwrap();
    // The two descriptions are taken at different moments; the followers'
    // live fetch state (`replica_states`) may change between them, the
    // placement and the offsets may not.
    let stable = |d: logbus::TopicDescription| {
        d.partitions
            .into_iter()
            .map(|p| {
                (
                    p.partition,
                    p.leader,
                    p.leader_epoch,
                    p.replicas,
                    p.isr,
                    p.high_watermark,
                    p.log_end_offset,
                    p.size_bytes,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        stable(cluster.describe_topic("r").unwrap()),
        stable(cluster.topic("r").unwrap().describe().unwrap())
    );
    let total: u64 = cluster
        .topic("r")
        .unwrap()
        .partitions()
        .unwrap()
        .iter()
        .map(|p| p.log_end_offset().unwrap())
        .sum();
    assert_eq!(total, 30);
    cluster.close().unwrap();
}

#[test]
fn replication_factors_are_checked_and_nothing_is_stored_when_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), brokers(3)).unwrap();
    for factor in [0, 4, 11] {
        match cluster.create_topic(NewTopic::new("x", 2).replication_factor(factor)) {
            Err(Error::InvalidReplicationFactor { topic, reason }) => {
                assert_eq!(topic, "x");
                assert!(!reason.is_empty());
            }
            other => panic!("factor {factor}: {other:?}"),
        }
    }
    assert!(cluster.list_topics().is_empty());
    for b in 0..3 {
        assert!(partition_dirs(&dir.path().join(format!("broker-{b}")), "x").is_empty());
    }
    // The most a cluster takes.
    let wide = tempfile::tempdir().unwrap();
    let big = Cluster::open(wide.path(), brokers(12)).unwrap();
    assert!(matches!(
        big.create_topic(NewTopic::new("x", 1).replication_factor(11)),
        Err(Error::InvalidReplicationFactor { .. })
    ));
    let ten = big
        .create_topic(NewTopic::new("x", 1).replication_factor(10))
        .unwrap();
    assert_eq!(ten.describe().unwrap().partitions[0].replicas.len(), 10);
    big.close().unwrap();
    cluster.close().unwrap();
}

#[test]
fn the_default_replication_factor_applies_to_every_topic_created_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = ClusterConfig::builder()
        .brokers(3)
        .default_replication_factor(2)
        .build()
        .unwrap();
    assert_eq!(config.default_replication_factor(), 2);
    let cluster = Cluster::open(dir.path(), config).unwrap();
    let topic = cluster.create_topic(NewTopic::new("d", 2)).unwrap();
    for p in topic.describe().unwrap().partitions {
        assert_eq!(p.replicas.len(), 2);
    }
    let one = cluster
        .create_topic(NewTopic::new("one", 1).replication_factor(1))
        .unwrap();
    assert_eq!(one.describe().unwrap().partitions[0].replicas.len(), 1);
    // The group coordinator's topic, created on first use, has its own
    // factor: `offsets.topic.replication.factor`, by default 3 (here every
    // broker).
    let mut consumer = Consumer::new(
        &cluster,
        ConsumerConfig::builder().group_id("g").build().unwrap(),
    )
    .unwrap();
    let tp = TopicPartition::new("d", 0);
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    consumer
        .commit_offsets(&BTreeMap::from([(tp, logbus::OffsetAndMetadata::new(0))]))
        .unwrap();
    consumer.close().unwrap();
    let offsets = cluster.describe_topic("__consumer_offsets").unwrap();
    assert!(offsets.partitions.iter().all(|p| p.replicas.len() == 3));
    cluster.close().unwrap();
}

#[test]
fn min_insync_replicas_is_checked_against_the_replication_factor() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), brokers(3)).unwrap();
    let three = TopicConfig::new().min_insync_replicas(3).unwrap();
    match cluster.create_topic(
        NewTopic::new("m", 1)
            .replication_factor(2)
            .config(three.clone()),
    ) {
        Err(Error::InvalidConfig(message)) => assert!(message.contains("min.insync.replicas")),
        other => panic!("{other:?}"),
    }
    assert!(cluster.list_topics().is_empty());
    // Equal to the factor: every replica must be in sync, and is (the ISR
    // is every replica at creation).
    cluster
        .create_topic(NewTopic::new("m", 1).replication_factor(3).config(three))
        .unwrap();
    produce(&cluster, "m", 5, Acks::All);
    cluster.close().unwrap();

    // Inherited from the cluster's defaults, a larger value is allowed (as
    // in Kafka): acks=all is then refused, acks=1 accepted.
    let dir = tempfile::tempdir().unwrap();
    let config = ClusterConfig::builder()
        .brokers(2)
        .topic_defaults(TopicConfig::new().min_insync_replicas(2).unwrap())
        .build()
        .unwrap();
    let cluster = Cluster::open(dir.path(), config).unwrap();
    cluster.create_topic(NewTopic::new("solo", 1)).unwrap();
    // Without retries, so the refusal is reported rather than retried
    // until the delivery timeout.
    let producer = Producer::new(
        &cluster,
        ProducerConfig::builder()
            .acks(Acks::All)
            .retries(0)
            .build()
            .unwrap(),
    )
    .unwrap();
    match producer
        .send(ProducerRecord::new("solo", "v"))
        .unwrap()
        .wait()
    {
        Err(Error::NotEnoughReplicas {
            in_sync, required, ..
        }) => assert_eq!((in_sync, required), (1, 2)),
        other => panic!("{other:?}"),
    }
    producer.close().unwrap();
    assert_eq!(produce(&cluster, "solo", 1, Acks::Leader), [(0, 0)]);
    cluster.close().unwrap();
}

#[test]
fn a_cluster_cannot_reopen_with_fewer_brokers_but_can_grow() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), brokers(2)).unwrap();
    cluster.close().unwrap();
    // Even without topics: the brokers are registered.
    match Cluster::open(dir.path(), brokers(1)) {
        Err(Error::InvalidConfig(message)) => {
            assert!(message.contains("at least 2 brokers"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let cluster = Cluster::open(dir.path(), brokers(2)).unwrap();
    cluster.create_topic(NewTopic::new("a", 4)).unwrap();
    produce(&cluster, "a", 20, Acks::All);
    cluster.close().unwrap();
    assert!(matches!(
        Cluster::open(dir.path(), brokers(1)),
        Err(Error::InvalidConfig(_))
    ));

    let cluster = Cluster::open(dir.path(), brokers(4)).unwrap();
    let a = cluster.describe_topic("a").unwrap();
    assert!(
        a.partitions.iter().all(|p| p.leader.unwrap() < 2),
        "placement kept"
    );
    assert_eq!(consume_all(&cluster, "a", 4, 20).len(), 20);
    let b = cluster.create_topic(NewTopic::new("b", 4)).unwrap();
    let leaders: BTreeSet<u32> = b
        .describe()
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.leader.unwrap())
        .collect();
    assert_eq!(
        leaders,
        BTreeSet::from([0, 1, 2, 3]),
        "new brokers take new topics"
    );
    cluster.close().unwrap();
    assert!(matches!(
        Cluster::open(dir.path(), brokers(3)),
        Err(Error::InvalidConfig(_))
    ));
}

/// Adding partitions places them as Kafka does, continuing from
/// partition 0's leader; the placement survives a reopen.
#[test]
fn added_partitions_continue_the_placement() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), brokers(3)).unwrap();
    cluster
        .create_topic(NewTopic::new("grow", 2).replication_factor(2))
        .unwrap();
    cluster.create_partitions("grow", 7).unwrap();
    let described = cluster.describe_topic("grow").unwrap();
    assert_eq!(described.partitions.len(), 7);
    for pair in described.partitions.windows(2) {
        assert_eq!(
            pair[1].leader.unwrap(),
            (pair[0].leader.unwrap() + 1) % 3,
            "{pair:?}"
        );
    }
    for p in &described.partitions {
        assert_eq!(p.replicas.len(), 2);
        assert_ne!(p.replicas[0], p.replicas[1]);
        for &b in &p.replicas {
            assert!(
                dir.path()
                    .join(format!("broker-{b}/grow-{}", p.partition))
                    .is_dir()
            );
        }
    }
    produce(&cluster, "grow", 70, Acks::All);
    cluster.close().unwrap();
    let cluster = Cluster::open(dir.path(), brokers(3)).unwrap();
    assert_eq!(
        cluster
            .describe_topic("grow")
            .unwrap()
            .partitions
            .iter()
            .map(|p| (p.leader.unwrap(), p.replicas.clone()))
            .collect::<Vec<_>>(),
        described
            .partitions
            .iter()
            .map(|p| (p.leader.unwrap(), p.replicas.clone()))
            .collect::<Vec<_>>()
    );
    assert_eq!(consume_all(&cluster, "grow", 7, 70).len(), 70);
    cluster.close().unwrap();
}

/// Deleting a topic removes its directories from every broker.
#[test]
fn deleting_a_topic_removes_every_replica() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), brokers(3)).unwrap();
    cluster
        .create_topic(NewTopic::new("gone", 3).replication_factor(2))
        .unwrap();
    produce(&cluster, "gone", 9, Acks::All);
    cluster.delete_topic("gone").unwrap();
    for b in 0..3 {
        assert!(partition_dirs(&dir.path().join(format!("broker-{b}")), "gone").is_empty());
    }
    let again = cluster
        .create_topic(NewTopic::new("gone", 3).replication_factor(3))
        .unwrap();
    assert!(
        again
            .partitions()
            .unwrap()
            .iter()
            .all(|p| p.log_end_offset().unwrap() == 0)
    );
    cluster.close().unwrap();
}

/// A broker at its own path: its partitions live there; a reopen must
/// give it the same path (a swapped or missing one is refused).
#[test]
fn brokers_can_live_at_their_own_paths() {
    let root = tempfile::tempdir().unwrap();
    let disk1 = tempfile::tempdir().unwrap();
    let disk2 = tempfile::tempdir().unwrap();
    let placed = |one: &Path, two: &Path| {
        ClusterConfig::builder()
            .brokers(3)
            .broker_dir(1, one)
            .broker_dir(2, two)
            .build()
            .unwrap()
    };
    let config = placed(disk1.path(), disk2.path());
    assert_eq!(config.broker_dir(1), Some(disk1.path()));
    assert_eq!(config.broker_dir(0), None);
    let cluster = Cluster::open(root.path(), config.clone()).unwrap();
    cluster.create_topic(NewTopic::new("p", 3)).unwrap();
    produce(&cluster, "p", 30, Acks::All);
    let described = cluster.describe_topic("p").unwrap();
    for p in &described.partitions {
        let home = match p.leader.unwrap() {
            0 => root.path().join("broker-0"),
            1 => disk1.path().to_path_buf(),
            _ => disk2.path().to_path_buf(),
        };
        assert!(home.join(format!("p-{}", p.partition)).is_dir());
    }
    assert!(!root.path().join("broker-1").exists());
    // The placed directories are locked while the cluster is open.
    let elsewhere = tempfile::tempdir().unwrap();
    match Cluster::open(elsewhere.path(), placed(disk1.path(), disk2.path())) {
        Err(Error::DirectoryLocked { path }) => assert_eq!(path, disk1.path()),
        other => panic!("{other:?}"),
    }
    cluster.close().unwrap();

    // Swapped paths, or a registered broker at a fresh path: refused.
    match Cluster::open(root.path(), placed(disk2.path(), disk1.path())) {
        Err(Error::InvalidConfig(message)) => assert!(message.contains("belongs to broker")),
        other => panic!("{other:?}"),
    }
    match Cluster::open(root.path(), brokers(3)) {
        Err(Error::InvalidConfig(message)) => assert!(message.contains("meta.properties")),
        other => panic!("{other:?}"),
    }
    assert!(
        !root
            .path()
            .join("broker-1")
            .join("meta.properties")
            .exists()
    );
    // Another cluster's broker directories: refused (they hold partitions
    // the new root's metadata does not know; an empty one names the other
    // cluster in its meta.properties).
    let other_root = tempfile::tempdir().unwrap();
    assert!(matches!(
        Cluster::open(other_root.path(), placed(disk1.path(), disk2.path())),
        Err(Error::MetadataMissing { .. })
    ));
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(
        empty.path().join("meta.properties"),
        "cluster.id=someone-else\nnode.id=1\n",
    )
    .unwrap();
    let (fresh, spare) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    match Cluster::open(fresh.path(), placed(empty.path(), spare.path())) {
        Err(Error::InvalidConfig(message)) => assert!(message.contains("of cluster"), "{message}"),
        other => panic!("{other:?}"),
    }

    let cluster = Cluster::open(root.path(), config).unwrap();
    assert_eq!(consume_all(&cluster, "p", 3, 30).len(), 30);
    cluster.close().unwrap();
}

#[test]
fn broker_configs_are_validated() {
    let b = ClusterConfig::builder;
    assert!(b().brokers(logbus::MAX_BROKERS).build().is_ok());
    for bad in [
        b().brokers(0).build(),
        b().brokers(logbus::MAX_BROKERS + 1).build(),
        b().brokers(2).broker_dir(2, "/somewhere").build(),
        b().brokers(3)
            .broker_dir(1, "/same")
            .broker_dir(2, "/same")
            .build(),
        b().default_replication_factor(0).build(),
        b().brokers(2).default_replication_factor(3).build(),
        b().brokers(11)
            .default_replication_factor(logbus::MAX_REPLICATION_FACTOR + 1)
            .build(),
    ] {
        assert!(matches!(bad, Err(Error::InvalidConfig(_))), "{bad:?}");
    }
}

/// Rebuilding the registry from partition directories covers one broker's
/// directory only: a cluster of several is refused before anything moves.
#[test]
fn rebuilding_the_metadata_of_several_brokers_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), brokers(2)).unwrap();
    cluster.create_topic(NewTopic::new("t", 2)).unwrap();
    cluster.close().unwrap();
    let metadata = dir.path().join("__cluster_metadata-0");
    let before: Vec<_> = std::fs::read_dir(&metadata)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(matches!(
        Cluster::rebuild_metadata(dir.path(), brokers(2)),
        Err(Error::InvalidConfig(_))
    ));
    let after: Vec<_> = std::fs::read_dir(&metadata)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after);
    let cluster = Cluster::open(dir.path(), brokers(2)).unwrap();
    assert_eq!(cluster.list_topics(), ["t"]);
    cluster.close().unwrap();
}
