//! The fault API: brokers stopped, crashed (with and without a power loss
//! of their own storage), restarted, paused and cut off, while producers
//! with `acks=all` and consumers follow the leaders. Waits are on the
//! cluster's partition changes ([`Cluster::wait_until`]) or on records,
//! each with a generous real-time failure guard; nothing sleeps.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::replicated::*;
use logbus::{
    Acks, Cluster, ClusterConfig, Consumer, ConsumerConfig, Error, FaultyStorage, ManualClock,
    NewTopic, OffsetAndMetadata, Producer, ProducerConfig, ProducerRecord, TopicConfig,
    TopicPartition,
};

/// Sends `numbers` (key and value: the number) with `producer` and waits
/// for each; a retriable failure is resent after the next partition change
/// (or a short guard). Returns the numbers acknowledged.
fn send_all(cluster: &Cluster, producer: &Producer, numbers: std::ops::Range<u64>) -> Vec<u64> {
    let started = Instant::now();
    let mut pending: Vec<u64> = numbers.collect();
    let mut acked = Vec::new();
    while !pending.is_empty() {
        assert!(started.elapsed() < GUARD, "sends kept failing");
        let futures: Vec<_> = pending
            .iter()
            .map(|&n| {
                let text = n.to_string();
                (
                    n,
                    producer
                        .send(ProducerRecord::new(TOPIC, &text).with_key(text))
                        .unwrap(),
                )
            })
            .collect();
        let mut failed = Vec::new();
        for (n, future) in futures {
            match future.wait() {
                Ok(_) => acked.push(n),
                Err(e) if e.is_retriable() => failed.push(n),
                Err(e) => panic!("record {n}: {e}"),
            }
        }
        if !failed.is_empty() {
            // Retry once the controller changed something (or shortly).
            cluster.wait_until(Duration::from_millis(50), |_| false);
        }
        pending = failed;
    }
    acked
}

#[test]
fn stopping_a_leaders_broker_moves_its_leaderships_and_acks_all_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), builder().build().unwrap()).unwrap();
    create(&cluster, 3);
    create_offsets_topic(&cluster);
    let producer = acks_all(&cluster);
    let mut acked = send_all(&cluster, &producer, 0..300);
    let stopped = leader(&cluster, 0);
    let before = cluster.replication_stats();

    cluster.stop_broker(stopped).unwrap();
    // A controlled shutdown: fenced and its leaderships moved at once.
    assert!(cluster.is_broker_fenced(stopped));
    assert!(!cluster.is_broker_running(stopped));
    let description = cluster.describe_topic(TOPIC).unwrap();
    for p in &description.partitions {
        assert_ne!(p.leader, Some(stopped), "partition {}", p.partition);
        assert!(!p.isr.contains(&stopped), "partition {}", p.partition);
    }
    let after = cluster.replication_stats();
    assert!(after.leader_changes > before.leader_changes);
    assert!(after.isr_shrinks >= before.isr_shrinks + 3);
    // Stopping it again is refused, typed.
    assert!(matches!(
        cluster.stop_broker(stopped),
        Err(Error::IllegalState(_))
    ));

    acked.extend(send_all(&cluster, &producer, 300..600));
    assert_eq!(acked.len(), 600);
    let expected: BTreeSet<u64> = acked.into_iter().collect();
    consume_all(&cluster, &expected);

    cluster.restart_broker(stopped).unwrap();
    assert!(!cluster.is_broker_fenced(stopped));
    assert!(cluster.wait_until(GUARD, isr_complete));
    assert!(cluster.replication_stats().isr_expands >= after.isr_expands + 3);
    producer.close().unwrap();
    cluster.close().unwrap();
    assert_replicas_identical(dir.path(), 3);
}

#[test]
fn a_crashed_follower_catches_up_rejoins_the_isr_and_ends_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), builder().build().unwrap()).unwrap();
    create(&cluster, 1);
    let producer = acks_all(&cluster);
    send_all(&cluster, &producer, 0..200);
    let lead = leader(&cluster, 0);
    let follower = (lead + 1) % 3;

    cluster.crash_broker(follower).unwrap();
    assert!(!cluster.is_broker_running(follower));
    // acks=all waits for it until its session expires and it leaves the ISR.
    send_all(&cluster, &producer, 200..400);
    assert!(cluster.wait_until(GUARD, |c| c.is_broker_fenced(follower)));
    let isr = &cluster.describe_topic(TOPIC).unwrap().partitions[0].isr;
    assert!(!isr.contains(&follower), "{isr:?}");

    cluster.restart_broker(follower).unwrap();
    assert!(cluster.wait_until(GUARD, isr_complete));
    send_all(&cluster, &producer, 400..500);
    let expected: BTreeSet<u64> = (0..500).collect();
    consume_all(&cluster, &expected);
    producer.close().unwrap();
    cluster.close().unwrap();
    assert_replicas_identical(dir.path(), 1);
}

#[test]
fn two_of_three_brokers_down_refuse_acks_all_until_one_returns() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), builder().build().unwrap()).unwrap();
    create(&cluster, 1);
    let producer = acks_all(&cluster);
    send_all(&cluster, &producer, 0..100);
    let lead = leader(&cluster, 0);
    let (a, b) = ((lead + 1) % 3, (lead + 2) % 3);
    cluster.stop_broker(a).unwrap();
    cluster.stop_broker(b).unwrap();
    let partition = &cluster.describe_topic(TOPIC).unwrap().partitions[0];
    assert_eq!(partition.isr, vec![lead]);

    // Without retries, so the refusal is reported rather than retried
    // until the delivery timeout.
    let no_retries = Producer::new(
        &cluster,
        ProducerConfig::builder().retries(0).build().unwrap(),
    )
    .unwrap();
    let refused = no_retries
        .send(ProducerRecord::new(TOPIC, "100").with_key("100"))
        .unwrap()
        .wait();
    no_retries.close().unwrap();
    assert!(
        matches!(refused, Err(Error::NotEnoughReplicas { .. })),
        "{refused:?}"
    );

    cluster.restart_broker(a).unwrap();
    assert!(cluster.wait_until(GUARD, |c| {
        c.describe_topic(TOPIC)
            .is_ok_and(|d| d.partitions[0].isr.len() >= 2)
    }));
    send_all(&cluster, &producer, 100..200);
    cluster.restart_broker(b).unwrap();
    assert!(cluster.wait_until(GUARD, isr_complete));
    let expected: BTreeSet<u64> = (0..200).filter(|&n| n != 100).collect();
    consume_all(&cluster, &expected);
    producer.close().unwrap();
    cluster.close().unwrap();
}

/// A cluster on a manual clock (Kafka's default lag and session times).
fn manual(dir: &Path) -> (Cluster, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let config = ClusterConfig::builder()
        .brokers(3)
        .clock(clock.clone())
        .build()
        .unwrap();
    let cluster = Cluster::open(dir, config).unwrap();
    create(&cluster, 1);
    (cluster, clock)
}

#[test]
fn a_paused_follower_leaves_the_isr_after_the_lag_time_and_returns_when_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, clock) = manual(dir.path());
    let lead = leader(&cluster, 0);
    let paused = (lead + 1) % 3;
    cluster.pause_fetching(paused).unwrap();
    // One record it does not copy (acks=1: the leader's append suffices).
    let producer = Producer::new(
        &cluster,
        ProducerConfig::builder()
            .acks(Acks::Leader)
            .build()
            .unwrap(),
    )
    .unwrap();
    producer
        .send(ProducerRecord::new(TOPIC, "x"))
        .unwrap()
        .wait()
        .unwrap();
    let lag = cluster.config().replica_lag_time_max();
    let lag_ms = i64::try_from(lag.as_millis()).unwrap();
    let in_isr = |c: &Cluster| {
        c.describe_topic(TOPIC)
            .is_ok_and(|d| d.partitions[0].isr.contains(&paused))
    };
    assert!(in_isr(&cluster));
    clock.advance_ms(lag_ms + 1);
    assert!(cluster.wait_until(GUARD, |c| !in_isr(c)));
    assert!(cluster.replication_stats().isr_shrinks >= 1);
    assert!(
        !cluster.is_broker_fenced(paused),
        "only its fetching stopped"
    );

    cluster.resume_fetching(paused).unwrap();
    assert!(cluster.wait_until(GUARD, in_isr));
    producer.close().unwrap();
    cluster.close().unwrap();
}

#[test]
fn a_broker_cut_off_from_the_controller_is_fenced_after_its_session() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, clock) = manual(dir.path());
    let session = cluster.config().broker_session_timeout();
    let session_ms = i64::try_from(session.as_millis()).unwrap();
    cluster.cut_off_broker(2).unwrap();
    assert!(!cluster.is_broker_fenced(2));
    clock.advance_ms(session_ms + 1);
    assert!(cluster.wait_until(GUARD, |c| c.is_broker_fenced(2)));
    assert!(cluster.is_broker_running(2), "its threads run on");
    let d = cluster.describe_topic(TOPIC).unwrap();
    assert_ne!(d.partitions[0].leader, Some(2));
    assert!(!d.partitions[0].isr.contains(&2));

    cluster.reconnect_broker(2).unwrap();
    clock.advance_ms(1);
    assert!(cluster.wait_until(GUARD, |c| !c.is_broker_fenced(2)));
    assert!(cluster.wait_until(GUARD, isr_complete));
    cluster.close().unwrap();
}

#[test]
fn a_power_loss_on_a_crashed_follower_loses_no_acks_all_record() {
    let dir = tempfile::tempdir().unwrap();
    let storages: Vec<FaultyStorage> = (0..3).map(|_| FaultyStorage::new()).collect();
    let mut config = builder();
    for (id, storage) in (0..).zip(&storages) {
        config = config.broker_storage(id, Arc::new(storage.clone()));
    }
    let cluster = Cluster::open(dir.path(), config.build().unwrap()).unwrap();
    create(&cluster, 1);
    create_offsets_topic(&cluster);
    let producer = acks_all(&cluster);
    send_all(&cluster, &producer, 0..500);
    let lead = leader(&cluster, 0);
    let victim = (lead + 1) % 3;
    let survivor = (lead + 2) % 3;
    assert!(storages[victim as usize].unsynced_summary().dirty_pages > 0);

    cluster.crash_broker(victim).unwrap();
    storages[victim as usize].power_loss(7).unwrap();
    // The power loss took records from the victim's log (they are on the
    // leader and the survivor, which still run).
    let segment = |b: u32| {
        let path = dir
            .path()
            .join(format!("broker-{b}/{TOPIC}-0/00000000000000000000.log"));
        std::fs::metadata(path).unwrap().len()
    };
    assert!(
        segment(victim) < segment(survivor),
        "{} < {}",
        segment(victim),
        segment(survivor)
    );
    assert!(cluster.wait_until(GUARD, |c| c.is_broker_fenced(victim)));
    send_all(&cluster, &producer, 500..600);
    cluster.restart_broker(victim).unwrap();
    assert!(cluster.wait_until(GUARD, isr_complete));

    // The victim now serves as leader with the survivor: every record
    // acknowledged is there.
    cluster.stop_broker(lead).unwrap();
    let d = cluster.describe_topic(TOPIC).unwrap();
    assert!(d.partitions[0].leader.is_some());
    let expected: BTreeSet<u64> = (0..600).collect();
    consume_all(&cluster, &expected);
    producer.close().unwrap();
    cluster.close().unwrap();
    let files: Vec<_> = [victim, survivor]
        .iter()
        .map(|b| log_files(&dir.path().join(format!("broker-{b}/{TOPIC}-0"))))
        .collect();
    assert_eq!(
        files[0], files[1],
        "the victim's replica equals the survivor's"
    );
}

#[test]
fn the_fault_api_refuses_bad_targets_with_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), builder().build().unwrap()).unwrap();
    assert!(matches!(
        cluster.crash_broker(3),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        cluster.restart_broker(1),
        Err(Error::IllegalState(_))
    ));
    cluster.crash_broker(1).unwrap();
    assert!(matches!(
        cluster.pause_fetching(1),
        Err(Error::IllegalState(_))
    ));
    // Closing works with a broker down; the next open recovers it.
    cluster.close().unwrap();
    assert!(matches!(cluster.restart_broker(1), Err(Error::Closed(_))));
    let cluster = Cluster::open(dir.path(), builder().build().unwrap()).unwrap();
    assert!(cluster.is_broker_running(1));
    cluster.close().unwrap();

    let one = tempfile::tempdir().unwrap();
    let single = Cluster::open(one.path(), ClusterConfig::default()).unwrap();
    assert!(matches!(
        single.stop_broker(0),
        Err(Error::InvalidArgument(_))
    ));
    single.close().unwrap();
}

#[test]
fn sends_racing_a_leader_crash_succeed_or_fail_retriably_and_nothing_acked_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), builder().build().unwrap()).unwrap();
    create(&cluster, 3);
    create_offsets_topic(&cluster);
    // Sends without waiting while the faults happen; every outcome goes
    // to the test thread. Some records go through, then partition 0's
    // leader crashes.
    let mut sends = BackgroundSends::start(&cluster);
    sends.await_more(300, "records are acknowledged");
    let crashed = leader(&cluster, 0);
    cluster.crash_broker(crashed).unwrap();
    assert!(cluster.wait_until(GUARD, |c| c.is_broker_fenced(crashed)));
    sends.await_more(300, "sends go on after the failover");
    cluster.restart_broker(crashed).unwrap();
    assert!(cluster.wait_until(GUARD, isr_complete));
    let acked = sends.finish();
    assert!(!acked.is_empty());
    consume_all(&cluster, &acked);
    cluster.close().unwrap();
}

/// A paused follower whose leader then deletes the records it never
/// fetched (`delete_records`, which also removes the segments below) starts
/// its log again at the leader's log start when it resumes (Kafka's
/// `truncateFullyAndStartAt`) instead of failing every fetch with
/// `OffsetOutOfRange`, catches up and re-enters the ISR.
#[test]
fn a_follower_behind_the_leaders_log_start_restarts_there_and_rejoins_the_isr() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let config = ClusterConfig::builder()
        .brokers(3)
        .clock(clock.clone())
        .build()
        .unwrap();
    let cluster = Cluster::open(dir.path(), config).unwrap();
    let topic_config = TopicConfig::new().segment_bytes(1024).unwrap();
    let topic = cluster
        .create_topic(
            NewTopic::new(TOPIC, 1)
                .replication_factor(3)
                .config(topic_config),
        )
        .unwrap();
    let lead = leader(&cluster, 0);
    let paused = (lead + 1) % 3;
    cluster.pause_fetching(paused).unwrap();
    let producer = Producer::new(
        &cluster,
        ProducerConfig::builder()
            .acks(Acks::Leader)
            .build()
            .unwrap(),
    )
    .unwrap();
    for i in 0..200 {
        producer
            .send(ProducerRecord::new(TOPIC, format!("record {i}")))
            .unwrap()
            .wait()
            .unwrap();
    }
    let partition = topic.partition(0).unwrap();
    // Segments wholly below 150 go with it.
    assert_eq!(partition.delete_records(150).unwrap(), 150);
    let lag_ms = i64::try_from(cluster.config().replica_lag_time_max().as_millis()).unwrap();
    let in_isr = |c: &Cluster| {
        c.describe_topic(TOPIC)
            .is_ok_and(|d| d.partitions[0].isr.contains(&paused))
    };
    clock.advance_ms(lag_ms + 1);
    assert!(cluster.wait_until(GUARD, |c| !in_isr(c)));

    cluster.resume_fetching(paused).unwrap();
    assert!(cluster.wait_until(GUARD, in_isr));
    let d = cluster.describe_topic(TOPIC).unwrap();
    let replica = d.partitions[0]
        .replica_states
        .iter()
        .find(|r| r.broker == paused)
        .unwrap();
    assert_eq!(replica.log_end_offset, Some(200));
    producer.close().unwrap();
    cluster.close().unwrap();
    // Its log starts at the leader's log start now: the old segments went.
    let follower_dir = dir.path().join(format!("broker-{paused}/{TOPIC}-0"));
    let segments: Vec<String> = log_files(&follower_dir)
        .into_keys()
        .filter(|n| n.ends_with(".log"))
        .collect();
    assert_eq!(segments[0], "00000000000000000150.log", "{segments:?}");
}

/// Sends `count` records of 1 KiB with acks=1 (the leader's append
/// suffices, so a slow follower does not hold them up).
fn send_kib_records(cluster: &Cluster, count: usize) {
    let producer = Producer::new(
        cluster,
        ProducerConfig::builder()
            .acks(Acks::Leader)
            .build()
            .unwrap(),
    )
    .unwrap();
    let value = vec![b'x'; 1024];
    let futures: Vec<_> = (0..count)
        .map(|_| {
            producer
                .send(ProducerRecord::new(TOPIC, value.clone()))
                .unwrap()
        })
        .collect();
    for future in futures {
        future.wait().unwrap();
    }
    producer.close().unwrap();
}

fn follower_in_isr(broker: u32) -> impl Fn(&Cluster) -> bool {
    move |c: &Cluster| {
        c.describe_topic(TOPIC)
            .is_ok_and(|d| d.partitions[0].isr.contains(&broker))
    }
}

/// A throttled follower's fetcher threads on a manual clock: the
/// throttle lets through about a second of its rate per second of the
/// clock, so after a burst of appends and a jump past
/// `replica.lag.time.max.ms` the follower is still behind and leaves the
/// ISR; lifted, it catches up (no clock move needed) and returns.
#[test]
fn a_throttled_follower_leaves_the_isr_and_returns_when_the_throttle_is_lifted() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, clock) = manual(dir.path());
    let lead = leader(&cluster, 0);
    let slow = (lead + 1) % 3;
    cluster.throttle_fetching(slow, Some(4 * 1024)).unwrap();
    // 200 KiB: fifty seconds' worth at 4 KiB/s.
    send_kib_records(&cluster, 200);
    assert!(follower_in_isr(slow)(&cluster));
    // The other follower has everything before the clock jumps (its
    // fetcher thread may trail on a busy machine): only the throttled one
    // may fall out of the ISR.
    let fast = (lead + 2) % 3;
    let caught_up = |c: &Cluster| {
        c.describe_topic(TOPIC).is_ok_and(|d| {
            d.partitions[0]
                .replica_states
                .iter()
                .any(|r| r.broker == fast && r.offset_lag == Some(0))
        })
    };
    assert!(cluster.wait_until(GUARD, caught_up));
    let lag_ms = i64::try_from(cluster.config().replica_lag_time_max().as_millis()).unwrap();
    clock.advance_ms(lag_ms + 1);
    assert!(cluster.wait_until(GUARD, |c| !follower_in_isr(slow)(c)));
    assert!(!cluster.is_broker_fenced(slow), "only its fetching is slow");
    let behind = cluster.describe_topic(TOPIC).unwrap().partitions[0]
        .replica_states
        .iter()
        .find(|r| r.broker == slow)
        .unwrap()
        .offset_lag;
    assert!(behind.is_some_and(|lag| lag > 0), "{behind:?}");

    cluster.throttle_fetching(slow, None).unwrap();
    assert!(cluster.wait_until(GUARD, follower_in_isr(slow)));
    assert!(cluster.wait_until(GUARD, isr_complete));
    cluster.close().unwrap();
}

/// The same on the system clock with fetcher threads, asserting only
/// what happens, never when: a follower throttled to 1 KiB/s behind a
/// 256 KiB burst leaves the ISR (lag time 500 ms) and returns once the
/// throttle is lifted.
#[test]
fn a_throttled_follower_on_the_system_clock_eventually_leaves_and_rejoins_the_isr() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), builder().build().unwrap()).unwrap();
    create(&cluster, 1);
    let lead = leader(&cluster, 0);
    let slow = (lead + 2) % 3;
    cluster.throttle_fetching(slow, Some(1024)).unwrap();
    send_kib_records(&cluster, 256);
    assert!(cluster.wait_until(GUARD, |c| !follower_in_isr(slow)(c)));
    cluster.throttle_fetching(slow, None).unwrap();
    assert!(cluster.wait_until(GUARD, follower_in_isr(slow)));
    assert!(cluster.wait_until(GUARD, isr_complete));
    cluster.close().unwrap();
}

#[test]
fn throttle_fetching_refuses_bad_targets_with_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), builder().build().unwrap()).unwrap();
    assert!(matches!(
        cluster.throttle_fetching(3, Some(1024)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        cluster.throttle_fetching(1, Some(0)),
        Err(Error::InvalidArgument(_))
    ));
    cluster.crash_broker(1).unwrap();
    assert!(matches!(
        cluster.throttle_fetching(1, Some(1024)),
        Err(Error::IllegalState(_))
    ));
    cluster.close().unwrap();
    assert!(matches!(
        cluster.throttle_fetching(0, None),
        Err(Error::Closed(_))
    ));
    let one = tempfile::tempdir().unwrap();
    let single = Cluster::open(one.path(), ClusterConfig::default()).unwrap();
    assert!(matches!(
        single.throttle_fetching(0, Some(1024)),
        Err(Error::InvalidArgument(_))
    ));
    single.close().unwrap();
}

/// Kafka's `Utils.abs(groupId.hashCode()) % 50`: the group's
/// `__consumer_offsets` partition, computed independently of logbus.
fn offsets_partition_of(group: &str) -> usize {
    let hash = group
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    (hash & 0x7fff_ffff) as usize % 50
}

#[test]
fn a_commit_while_the_offsets_leader_is_crashed_waits_for_the_new_leader() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), builder().build().unwrap()).unwrap();
    create(&cluster, 1);
    create_offsets_topic(&cluster);
    let partition = offsets_partition_of("g");
    let leader_of_offsets = |cluster: &Cluster| {
        cluster
            .describe_topic("__consumer_offsets")
            .unwrap()
            .partitions[partition]
            .leader
    };
    let crashed = leader_of_offsets(&cluster).unwrap();
    let config = ConsumerConfig::builder().group_id("g").build().unwrap();
    let mut consumer = Consumer::new(&cluster, config).unwrap();
    let tp = TopicPartition::new(TOPIC, 0);
    consumer.assign(std::slice::from_ref(&tp)).unwrap();

    // Until the controller fences it (broker.session.timeout.ms), the
    // crashed broker still leads the group's offsets partition.
    cluster.crash_broker(crashed).unwrap();
    let offsets = BTreeMap::from([(tp.clone(), OffsetAndMetadata::new(7))]);
    consumer.commit_offsets(&offsets).unwrap();

    let new_leader = leader_of_offsets(&cluster);
    assert!(new_leader.is_some() && new_leader != Some(crashed));
    assert_eq!(
        consumer.committed(std::slice::from_ref(&tp)).unwrap()[&tp].offset,
        7
    );
    consumer.close().unwrap();
    cluster.close().unwrap();
}

/// An acks=1 producer without idempotence appends sealed batches from the
/// sending thread; an append that finds the partition without its leader
/// goes to the sender thread, which retries it on the new leader: every
/// record arrives once, in order.
#[test]
fn acks_1_appends_from_the_sending_thread_are_retried_across_a_leader_crash() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), builder().build().unwrap()).unwrap();
    create(&cluster, 1);
    create_offsets_topic(&cluster);
    let producer = Producer::new(
        &cluster,
        ProducerConfig::builder()
            .acks(Acks::Leader)
            .batch_size(512)
            .build()
            .unwrap(),
    )
    .unwrap();
    let send = |n: u64| {
        let text = n.to_string();
        producer
            .send(ProducerRecord::new(TOPIC, &text).with_key(text))
            .unwrap()
    };
    let first: Vec<_> = (0..300).map(send).collect();
    for future in first {
        future.wait().unwrap();
    }
    // Replicated everywhere before the leader goes (acks=1 promises no more).
    let partition = cluster.topic(TOPIC).unwrap().partition(0).unwrap();
    assert!(cluster.wait_until(GUARD, |_| partition.high_watermark().unwrap() == 300));
    cluster.crash_broker(leader(&cluster, 0)).unwrap();

    // Many batches of 512 bytes: the sending thread appends the first
    // itself and meets the crashed leader.
    let later: Vec<_> = (300..600).map(send).collect();
    let offsets: Vec<u64> = later
        .into_iter()
        .map(|f| f.wait().unwrap().offset().unwrap())
        .collect();
    assert_eq!(offsets, (300..600).collect::<Vec<u64>>());
    let expected: BTreeSet<u64> = (0..600).collect();
    consume_all(&cluster, &expected);
    producer.close().unwrap();
    cluster.close().unwrap();
}

/// A consumer assigned by hand follows its partition's leader: a poll
/// that meets a crashed leader neither fails nor returns early, and the
/// election that names the new leader wakes it; appends at the new leader
/// wake a later poll; a pending position waits for the new leader instead
/// of failing.
#[test]
fn a_consumer_follows_its_partitions_leader_across_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), builder().build().unwrap()).unwrap();
    create(&cluster, 1);
    let producer = acks_all(&cluster);
    send_all(&cluster, &producer, 0..10);
    let tp = TopicPartition::new(TOPIC, 0);
    let consumer_with = |reset| {
        let config = ConsumerConfig::builder()
            .auto_offset_reset(reset)
            .build()
            .unwrap();
        let mut consumer = Consumer::new(&cluster, config).unwrap();
        consumer.assign(std::slice::from_ref(&tp)).unwrap();
        consumer
    };
    let mut consumer = consumer_with(logbus::OffsetReset::Earliest);
    let mut seen = Vec::new();
    let mut poll_until = |consumer: &mut Consumer, count: usize| {
        while seen.len() < count {
            let records = consumer
                .poll(GUARD)
                .expect("a poll never fails while the leader moves");
            assert!(!records.is_empty(), "no poll waits out its timeout");
            seen.extend(records.iter().map(|r| {
                std::str::from_utf8(r.value().unwrap())
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            }));
        }
    };

    // Until the controller fences the crashed broker, it still leads.
    let first = leader(&cluster, 0);
    cluster.crash_broker(first).unwrap();
    poll_until(&mut consumer, 10);
    assert_ne!(leader(&cluster, 0), first);

    // Records appended at the new leader wake the poll that waits for them.
    std::thread::scope(|s| {
        s.spawn(|| send_all(&cluster, &producer, 10..20));
        poll_until(&mut consumer, 20);
    });
    assert_eq!(seen, (0..20).collect::<Vec<u64>>());

    // A position still to be looked up waits for the next leader.
    let mut latest = consumer_with(logbus::OffsetReset::Latest);
    let second = leader(&cluster, 0);
    cluster.crash_broker(second).unwrap();
    assert_eq!(latest.position(&tp).unwrap(), 20);
    assert_ne!(leader(&cluster, 0), second);
    latest.close().unwrap();
    consumer.close().unwrap();
    producer.close().unwrap();
    cluster.close().unwrap();
}
