//! Unit tests of the cluster: checkpoints, retention timers, concurrent
//! creation, routing to the leader's broker, old metadata logs.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::clock::ManualClock;
use crate::cluster::offsets::{OFFSETS_PARTITIONS, OFFSETS_TOPIC, OffsetAndMetadata};
use crate::config::FlushPolicy;
use crate::format::BatchBuilder;
use crate::log::{CheckpointRead, OffsetCheckpoint};
use crate::replica::{AppendAcks, AppendOrigin};
use crate::types::Compression;

#[test]
fn recovery_points_are_checkpointed_every_interval() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let config = ClusterConfig::builder()
        .clock(Arc::new(clock.clone()))
        .checkpoint_interval(Duration::from_secs(60))
        .build()
        .unwrap();
    let cluster = Cluster::open(dir.path(), config).unwrap();
    let durable = TopicConfig::new().flush(FlushPolicy::every_append());
    let topic = cluster
        .create_topic(NewTopic::new("t", 1).config(durable))
        .unwrap();
    let mut batch = BatchBuilder::new(Compression::None);
    batch.append(1, None, Some(b"v"), &[]);
    batch.append(2, None, Some(b"w"), &[]);
    let mut bytes = batch.build().unwrap().to_vec();
    topic.partition(0).unwrap().append(&mut bytes).unwrap();
    let file = OffsetCheckpoint::new(
        dir.path()
            .join(BROKER_DIR)
            .join("recovery-point-offset-checkpoint"),
    );
    let recorded = || match file.read().unwrap() {
        CheckpointRead::Present(entries) => entries.get(&("t".to_string(), 0)).copied(),
        CheckpointRead::Missing => None,
    };
    assert_eq!(recorded(), None, "nothing before the first interval");
    let (count, done) = &cluster.inner.checkpoints;
    let mut written = count.lock();
    clock.advance_ms(60_000);
    while *written == 0 {
        assert!(
            !done
                .wait_for(&mut written, Duration::from_secs(30))
                .timed_out(),
            "the checkpoint thread wrote nothing"
        );
    }
    drop(written);
    assert_eq!(recorded(), Some(2));
    cluster.close().unwrap();
}

#[test]
fn partitions_check_retention_on_the_clusters_interval() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let config = ClusterConfig::builder()
        .clock(Arc::new(clock.clone()))
        .retention_check_interval(Duration::from_secs(10))
        .build()
        .unwrap();
    let cluster = Cluster::open(dir.path(), config).unwrap();
    let short = TopicConfig::new()
        .retention_time(Some(Duration::from_millis(1)))
        .segment_bytes(1024)
        .unwrap();
    let topic = cluster
        .create_topic(NewTopic::new("t", 1).config(short))
        .unwrap();
    let partition = topic.partition(0).unwrap();
    for i in 0..20 {
        let mut batch = BatchBuilder::new(Compression::None);
        batch.append(1_000_000, None, Some(&[i; 200]), &[]);
        let mut bytes = batch.build().unwrap().to_vec();
        partition.append(&mut bytes).unwrap();
    }
    let checks = |timeout: Duration, at_least: u64| {
        let key = cluster.inner.topic_state("t").unwrap().key(0).unwrap();
        cluster
            .inner
            .replicas_for(&key)
            .unwrap()
            .with_log(&key, |log| {
                Ok(log.wait_for_background(timeout, |_, n| n >= at_least))
            })
            .unwrap()
    };
    clock.advance_ms(9_999);
    assert!(!checks(Duration::ZERO, 1), "no check before the interval");
    assert_eq!(partition.log_start_offset().unwrap(), 0);
    clock.advance_ms(1);
    assert!(
        checks(Duration::from_secs(30), 1),
        "no check at the interval"
    );
    assert!(
        partition.log_start_offset().unwrap() > 0,
        "retention deleted nothing"
    );
    cluster.close().unwrap();
}

/// Requests reach the leader's broker; another broker's manager
/// answers `NotLeaderOrFollower`, and followers are fed by their fetchers
/// before `acks=all` completes.
#[test]
fn requests_go_to_the_leaders_broker() {
    let dir = tempfile::tempdir().unwrap();
    let config = ClusterConfig::builder().brokers(3).build().unwrap();
    let cluster = Cluster::open(dir.path(), config).unwrap();
    let topic = cluster
        .create_topic(NewTopic::new("t", 3).replication_factor(2))
        .unwrap();
    let inner = &cluster.inner;
    for p in 0..3 {
        let state = inner.topic_state("t").unwrap();
        let key = state.key(p).unwrap();
        let leader = state.leader(p).unwrap();
        assert_eq!(
            inner
                .replicas_for(&key)
                .unwrap()
                .describe(&key)
                .unwrap()
                .leader,
            Some(leader)
        );
        let mut batch = BatchBuilder::new(Compression::None);
        batch.append(1, None, Some(b"v"), &[]);
        let bytes = batch.build().unwrap().to_vec();
        let replicas = state.assignments.read()[p as usize].replicas.clone();
        for (id, broker) in (0..).zip(inner.brokers()) {
            let manager = &broker.replicas;
            let result = manager.append(
                &key,
                &mut bytes.clone(),
                AppendOrigin::Client,
                AppendAcks::All,
            );
            if id == leader {
                assert!(result.is_ok(), "{result:?}");
            } else if replicas.contains(&id) {
                assert!(
                    matches!(result, Err(Error::NotLeaderOrFollower { broker, .. }) if broker == id),
                    "{result:?}"
                );
            } else {
                assert!(
                    matches!(result, Err(Error::UnknownTopicOrPartition { .. })),
                    "broker {id} holds no replica: {result:?}"
                );
            }
        }
        assert_eq!(topic.partition(p).unwrap().log_end_offset().unwrap(), 1);
        // acks=all returned once every in-sync replica had the batch.
        for &id in &replicas {
            let manager = &inner.broker(id).unwrap().replicas;
            assert_eq!(manager.offsets(&key).unwrap().log_end, 1, "broker {id}");
        }
    }
    cluster.close().unwrap();
}

/// A metadata log written before several brokers (version 0 partition
/// records, no registrations) still opens, as broker 0's.
#[test]
fn a_single_broker_metadata_log_of_version_0_still_loads() {
    let dir = tempfile::tempdir().unwrap();
    let id = Uuid::from_u128(0x1234);
    let mut topic = vec![1, 0];
    topic.extend_from_slice(&1u16.to_be_bytes());
    topic.push(b'o');
    topic.extend_from_slice(&id.as_u128().to_be_bytes());
    let mut values = vec![topic];
    for p in 0..2u32 {
        let mut v0 = vec![2, 0];
        v0.extend_from_slice(&id.as_u128().to_be_bytes());
        v0.extend_from_slice(&p.to_be_bytes());
        v0.extend_from_slice(&1u16.to_be_bytes());
        v0.extend_from_slice(&0u32.to_be_bytes());
        v0.extend_from_slice(&0u32.to_be_bytes());
        v0.extend_from_slice(&0i32.to_be_bytes());
        values.push(v0);
    }
    let log = crate::log::Log::builder(dir.path().join(METADATA_DIR))
        .open()
        .unwrap();
    let mut batch = BatchBuilder::new(Compression::None);
    for v in &values {
        batch.append(1, None, Some(v), &[]);
    }
    log.append(&mut batch.build().unwrap().to_vec(), 0).unwrap();
    log.close().unwrap();
    let cluster = Cluster::open(dir.path(), ClusterConfig::default()).unwrap();
    let described = cluster.describe_topic("o").unwrap();
    assert_eq!(described.partitions.len(), 2);
    for p in &described.partitions {
        assert_eq!((p.leader, p.leader_epoch), (Some(0), 0));
        assert_eq!((p.replicas.clone(), p.isr.clone()), (vec![0], vec![0]));
    }
    cluster.close().unwrap();
    // Grown to three brokers, it keeps its placement.
    let config = ClusterConfig::builder().brokers(3).build().unwrap();
    let cluster = Cluster::open(dir.path(), config).unwrap();
    assert_eq!(
        cluster.describe_topic("o").unwrap().partitions,
        described.partitions
    );
    cluster.close().unwrap();
}

#[test]
fn create_topic_if_not_exists_creates_once_under_races() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), ClusterConfig::default()).unwrap();
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let cluster = &cluster;
                s.spawn(move || {
                    cluster
                        .create_topic_if_not_exists(NewTopic::new("jobs", 2 + i))
                        .unwrap()
                        .id()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(cluster.list_topics(), ["jobs"]);
    // Still validated first, existing or not.
    assert!(matches!(
        cluster.create_topic_if_not_exists(NewTopic::new("jobs", 0)),
        Err(Error::InvalidPartitions { .. })
    ));
    assert!(matches!(
        cluster.create_topic(NewTopic::new("jobs", 1)),
        Err(Error::TopicAlreadyExists { .. })
    ));
    cluster.close().unwrap();
}

#[test]
fn the_offsets_topic_is_replicated_and_waits_for_enough_live_brokers() {
    let dir = tempfile::tempdir().unwrap();
    let config = ClusterConfig::builder().brokers(3).build().unwrap();
    assert_eq!(config.offsets_topic_replication_factor(), 3);
    let cluster = Cluster::open(dir.path(), config).unwrap();
    cluster
        .create_topic(NewTopic::new("t", 1).replication_factor(3))
        .unwrap();
    let tp = TopicPartition::new("t", 0);
    let offsets = BTreeMap::from([(tp.clone(), OffsetAndMetadata::new(5))]);

    // Two live brokers cannot hold a topic of three replicas: the first
    // commit is refused, retriably, and creates nothing.
    cluster.stop_broker(2).unwrap();
    match cluster.alter_group_offsets("g", &offsets) {
        Err(e @ Error::CoordinatorNotAvailable { .. }) => assert!(e.is_retriable(), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(!cluster.inner.topics.read().contains_key(OFFSETS_TOPIC));
    assert!(cluster.list_group_offsets("g").unwrap().is_empty());

    // With the broker back, the same call succeeds and the topic has three
    // replicas per partition, not `default.replication.factor`'s one.
    cluster.restart_broker(2).unwrap();
    cluster.alter_group_offsets("g", &offsets).unwrap();
    assert_eq!(cluster.list_group_offsets("g").unwrap()[&tp].offset, 5);
    let state = cluster.inner.topic_state(OFFSETS_TOPIC).unwrap();
    let assignments = state.assignments.read();
    assert_eq!(assignments.len(), OFFSETS_PARTITIONS as usize);
    assert!(assignments.iter().all(|a| a.replicas.len() == 3));
    drop(assignments);
    cluster.close().unwrap();
}

/// A follower's truncation below its log's recovery point lowers the
/// broker's checkpointed recovery point, durably, before the cut, so the
/// broker can restart. Found by the cluster simulation: the checkpoint
/// kept the old, higher point (each note only moved it up) and the next
/// restart was refused as lost flushed data (`RecoveryPointBeyondEnd`).
#[test]
fn a_truncation_below_the_recovery_point_lowers_the_checkpoint_first() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let config = ClusterConfig::builder()
        .brokers(2)
        .clock(Arc::new(clock.clone()))
        .controller_thread(false)
        .replica_fetchers(false)
        .build()
        .unwrap();
    let cluster = Cluster::open(dir.path(), config).unwrap();
    let durable = TopicConfig::new().flush(FlushPolicy::every_append());
    cluster
        .create_topic(NewTopic::new("d", 1).replication_factor(2).config(durable))
        .unwrap();
    let state = cluster.inner.topic_state("d").unwrap();
    let key = state.key(0).unwrap();
    let roles = || state.assignments.read()[0].clone();
    let leader = roles().leader.unwrap();
    let follower = 1 - leader;
    let append = |records: usize| {
        let mut batch = BatchBuilder::new(Compression::None);
        for _ in 0..records {
            batch.append(1, None, Some(b"v"), &[]);
        }
        let mut bytes = batch.build().unwrap().to_vec();
        cluster
            .inner
            .replicas_for(&key)
            .unwrap()
            .append(&key, &mut bytes, AppendOrigin::Client, AppendAcks::Leader)
            .unwrap();
    };
    let fetch = |from: u32, to: u32| {
        let round = crate::replica::fetch_once(
            &cluster.inner.broker(from).unwrap().replicas,
            &cluster.inner.broker(to).unwrap().replicas,
        );
        assert!(round.errors.is_empty(), "{:?}", round.errors);
        round
    };
    let checkpointed = |broker: u32| {
        let file = OffsetCheckpoint::new(
            dir.path()
                .join(format!("broker-{broker}"))
                .join("recovery-point-offset-checkpoint"),
        );
        match file.read().unwrap() {
            CheckpointRead::Present(entries) => entries.get(&("d".to_string(), 0)).copied(),
            CheckpointRead::Missing => None,
        }
    };

    // Three fsynced records on the leader only; a clean stop checkpoints
    // its recovery point 3.
    append(3);
    cluster.stop_broker(leader).unwrap();
    assert_eq!(checkpointed(leader), Some(3));
    assert_eq!(roles().leader, Some(follower));
    // The new leader writes offset 0 in its own epoch.
    append(1);
    // The old leader returns as a follower and truncates to 0 (the
    // diverging epoch), then copies the new leader's record.
    cluster.restart_broker(leader).unwrap();
    assert_eq!(fetch(leader, follower).truncated, 1);
    assert!(
        checkpointed(leader).is_some_and(|p| p == 0),
        "lowered before the cut: {:?}",
        checkpointed(leader)
    );
    fetch(leader, follower);
    // Another clean stop and a restart: the checkpoint no longer lies past
    // the log's end.
    cluster.stop_broker(leader).unwrap();
    assert!(checkpointed(leader).is_some_and(|p| p <= 1));
    cluster.restart_broker(leader).unwrap();
    cluster.close().unwrap();
}

fn moving(topic: &str) -> Error {
    Error::NotLeaderOrFollower {
        topic: topic.into(),
        partition: 0,
        broker: 0,
    }
}

/// A request that met a moving leader is sent again after the next
/// metadata change (here a topic created by another thread once the
/// first attempt failed), and only then.
#[test]
fn a_request_meeting_a_moving_leader_is_retried_after_the_next_metadata_change() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000);
    let config = ClusterConfig::builder()
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let cluster = Cluster::open(dir.path(), config).unwrap();
    let mut creator = None;
    let mut attempts = 0;
    // The "leader" settles with the change: until then every attempt fails.
    let answer = cluster.inner.retry_while_leader_moves(|| {
        attempts += 1;
        if creator.is_none() {
            let c = cluster.clone();
            creator = Some(std::thread::spawn(move || {
                c.create_topic(NewTopic::new("other", 1)).unwrap();
            }));
        }
        if cluster.topic("other").is_err() {
            return Err(moving("t"));
        }
        Ok(())
    });
    creator.unwrap().join().unwrap();
    answer.unwrap();
    // One attempt, one after watching, then one per metadata change:
    // never a busy loop.
    assert!(attempts <= 5, "{attempts} attempts");
    // Any other error is returned at once.
    let mut calls = 0;
    let other = cluster.inner.retry_while_leader_moves(|| -> Result<()> {
        calls += 1;
        Err(Error::InvalidArgument("no".into()))
    });
    assert!(matches!(other, Err(Error::InvalidArgument(_))) && calls == 1);
    // Past default.api.timeout.ms of the clock, the last error.
    let mut advancer = None;
    let late = cluster.inner.retry_while_leader_moves(|| -> Result<()> {
        if advancer.is_none() {
            let clock = clock.clone();
            advancer = Some(std::thread::spawn(move || clock.advance_ms(60_001)));
        }
        Err(moving("t"))
    });
    advancer.unwrap().join().unwrap();
    assert!(matches!(late, Err(Error::NotLeaderOrFollower { .. })));
    cluster.close().unwrap();
}
