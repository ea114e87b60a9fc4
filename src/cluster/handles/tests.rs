//! Describing partitions: per-replica state, the under-replicated /
//! min-ISR / unavailable flags and lists in every state the controller can
//! put a partition in, and leaderless partitions. The fetchers and the
//! controller thread are off: each follower fetch, ISR change and fencing
//! is the test's own, on a manual clock.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::ManualClock;
use crate::cluster::{Cluster, ClusterConfig, NewTopic, TopicConfig};
use crate::error::Error;
use crate::format::BatchBuilder;
use crate::replica::{AppendAcks, AppendOrigin, LeaderAndIsr, TopicIdPartition, fetch_once};
use crate::types::{Compression, TopicPartition};

use super::{PartitionDescription, ReplicaDescription};

fn manual(clock: &ManualClock) -> ClusterConfig {
    ClusterConfig::builder()
        .brokers(3)
        .clock(Arc::new(clock.clone()))
        .controller_thread(false)
        .replica_fetchers(false)
        .build()
        .unwrap()
}

fn batch(records: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new(Compression::None);
    for _ in 0..records {
        b.append(1, None, Some(b"v"), &[]);
    }
    b.build().unwrap().to_vec()
}

fn key(cluster: &Cluster, topic: &str) -> TopicIdPartition {
    cluster.inner.topic_state(topic).unwrap().key(0).unwrap()
}

fn roles(cluster: &Cluster, topic: &str) -> LeaderAndIsr {
    cluster.inner.topic_state(topic).unwrap().assignments.read()[0].clone()
}

fn describe(cluster: &Cluster, topic: &str) -> PartitionDescription {
    cluster.describe_topic(topic).unwrap().partitions[0].clone()
}

/// The flags (under replicated, under min ISR, at min ISR, unavailable).
fn flags(p: &PartitionDescription) -> (bool, bool, bool, bool) {
    (
        p.under_replicated,
        p.under_min_isr,
        p.at_min_isr,
        p.unavailable,
    )
}

fn state(p: &PartitionDescription, broker: u32) -> &ReplicaDescription {
    p.replica_states
        .iter()
        .find(|r| r.broker == broker)
        .unwrap()
}

/// Broker `follower` runs one fetch round against broker `leader`.
fn fetch(cluster: &Cluster, follower: u32, leader: u32) {
    let round = fetch_once(
        &cluster.inner.broker(follower).unwrap().replicas,
        &cluster.inner.broker(leader).unwrap().replicas,
    );
    assert!(round.errors.is_empty(), "{:?}", round.errors);
}

/// The leader's own ISR proposal, through the controller.
fn set_isr(cluster: &Cluster, topic: &str, isr: Vec<u32>) {
    let r = roles(cluster, topic);
    cluster
        .inner
        .alter_partition(
            &key(cluster, topic),
            r.leader.unwrap(),
            r.leader_epoch,
            r.partition_epoch,
            isr,
        )
        .unwrap();
}

fn tp(topic: &str) -> Vec<TopicPartition> {
    vec![TopicPartition::new(topic, 0)]
}

/// Followers' log end offsets as the leader learns them from their
/// fetches, their lag and caught-up times; the flags and the lists as the
/// ISR shrinks to the minimum, below it, and grows back.
#[test]
fn replica_states_and_flags_follow_the_followers_and_the_isr() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let cluster = Cluster::open(dir.path(), manual(&clock)).unwrap();
    let min2 = TopicConfig::new().min_insync_replicas(2).unwrap();
    cluster
        .create_topic(NewTopic::new("t", 1).replication_factor(3).config(min2))
        .unwrap();
    let r = roles(&cluster, "t");
    let leader = r.leader.unwrap();
    let (f1, f2) = (r.replicas[1], r.replicas[2]);
    let k = key(&cluster, "t");

    let p = describe(&cluster, "t");
    assert_eq!(flags(&p), (false, false, false, false));
    assert_eq!(
        p.replica_states
            .iter()
            .map(|r| r.broker)
            .collect::<Vec<_>>(),
        p.replicas
    );
    assert!(p.replica_states.iter().all(|r| r.in_sync && !r.offline));
    let l = state(&p, leader);
    assert_eq!((l.log_end_offset, l.offset_lag), (Some(0), Some(0)));
    assert_eq!((l.last_caught_up_ms, l.last_fetch_ms), (None, None));
    for f in [f1, f2] {
        let s = state(&p, f);
        assert_eq!(
            (s.log_end_offset, s.offset_lag, s.last_fetch_ms),
            (None, None, None)
        );
    }
    assert!(cluster.under_replicated_partitions().unwrap().is_empty());
    assert!(cluster.under_min_isr_partitions().unwrap().is_empty());
    assert!(cluster.at_min_isr_partitions().unwrap().is_empty());
    assert!(cluster.unavailable_partitions().unwrap().is_empty());

    // Three records on the leader only (acks=1: nothing waits for followers).
    cluster
        .inner
        .replicas_for(&k)
        .unwrap()
        .append(&k, &mut batch(3), AppendOrigin::Client, AppendAcks::Leader)
        .unwrap();
    let p = describe(&cluster, "t");
    assert_eq!((p.log_end_offset, p.high_watermark), (3, 0));
    assert_eq!(state(&p, leader).log_end_offset, Some(3));

    // f1 copies them (its first fetch, from 0), then tells the leader it
    // has them (its next fetch, from 3).
    clock.advance_ms(10);
    fetch(&cluster, f1, leader);
    let p = describe(&cluster, "t");
    let s = state(&p, f1);
    assert_eq!((s.log_end_offset, s.offset_lag), (Some(0), Some(3)));
    assert_eq!(s.last_fetch_ms, Some(1_000_010));
    clock.advance_ms(10);
    fetch(&cluster, f1, leader);
    let p = describe(&cluster, "t");
    let s = state(&p, f1);
    assert_eq!((s.log_end_offset, s.offset_lag), (Some(3), Some(0)));
    assert_eq!(
        (s.last_caught_up_ms, s.last_fetch_ms),
        (Some(1_000_020), Some(1_000_020))
    );
    assert_eq!(state(&p, f2).log_end_offset, None);
    assert_eq!(
        p.high_watermark, 0,
        "f2, in the ISR, holds the high watermark"
    );

    // f2 fetches once, from 0: the leader knows it is 3 behind.
    clock.advance_ms(10);
    fetch(&cluster, f2, leader);
    let p = describe(&cluster, "t");
    let s = state(&p, f2);
    assert_eq!((s.log_end_offset, s.offset_lag), (Some(0), Some(3)));
    assert_eq!(s.last_fetch_ms, Some(1_000_030));
    fetch(&cluster, f2, leader);
    let p = describe(&cluster, "t");
    assert_eq!(state(&p, f2).offset_lag, Some(0));
    assert_eq!(p.high_watermark, 3, "every ISR member has the records");

    // The leader drops f2 from the ISR: under-replicated, at the minimum.
    set_isr(&cluster, "t", vec![leader, f1]);
    let p = describe(&cluster, "t");
    assert_eq!(flags(&p), (true, false, true, false));
    assert!(!state(&p, f2).in_sync && state(&p, f1).in_sync);
    assert!(!state(&p, f2).offline, "its broker is live");
    assert_eq!(cluster.under_replicated_partitions().unwrap(), tp("t"));
    assert_eq!(cluster.at_min_isr_partitions().unwrap(), tp("t"));
    assert!(cluster.under_min_isr_partitions().unwrap().is_empty());

    // Then f1: below min.insync.replicas.
    set_isr(&cluster, "t", vec![leader]);
    let p = describe(&cluster, "t");
    assert_eq!(flags(&p), (true, true, false, false));
    assert_eq!(cluster.under_min_isr_partitions().unwrap(), tp("t"));
    assert!(cluster.at_min_isr_partitions().unwrap().is_empty());
    assert!(cluster.unavailable_partitions().unwrap().is_empty());

    // Both back: nothing to report.
    set_isr(&cluster, "t", vec![leader, f1, f2]);
    let p = describe(&cluster, "t");
    assert_eq!(flags(&p), (false, false, false, false));
    assert!(cluster.under_replicated_partitions().unwrap().is_empty());
    cluster.close().unwrap();
    assert!(matches!(
        cluster.under_replicated_partitions(),
        Err(Error::Closed(_))
    ));
}

/// A partition whose only in-sync replica's broker stops has no leader:
/// it is still described (from the metadata and the replicas' own logs),
/// listed as unavailable and under the minimum ISR, and a handle to it
/// builds, answers `LeaderNotAvailable` (retriable), and works once the
/// broker returns.
#[test]
fn a_leaderless_partition_is_described_and_its_handle_waits_for_a_leader() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let cluster = Cluster::open(dir.path(), manual(&clock)).unwrap();
    cluster
        .create_topic(NewTopic::new("t", 1).replication_factor(3))
        .unwrap();
    cluster
        .create_topic(NewTopic::new("healthy", 1).replication_factor(3))
        .unwrap();
    let r = roles(&cluster, "t");
    let leader = r.leader.unwrap();
    let (f1, f2) = (r.replicas[1], r.replicas[2]);
    let k = key(&cluster, "t");
    let records = |n| {
        cluster
            .inner
            .replicas_for(&k)
            .unwrap()
            .append(&k, &mut batch(n), AppendOrigin::Client, AppendAcks::Leader)
            .unwrap()
    };
    records(2);
    fetch(&cluster, f1, leader); // f1 has 2 records, f2 none
    records(3);
    set_isr(&cluster, "t", vec![leader]);
    // A clean stop fences at once; with no other ISR member, no leader.
    cluster.inner.mark_broker_stopped(leader).unwrap();
    assert_eq!(roles(&cluster, "t").leader, None);

    let p = describe(&cluster, "t");
    assert_eq!(p.leader, None);
    assert_eq!(p.leader_epoch, r.leader_epoch + 1);
    assert_eq!(
        (p.replicas.clone(), p.isr.clone()),
        (r.replicas.clone(), vec![leader])
    );
    assert_eq!(flags(&p), (true, true, false, true));
    // The offsets are the last in-sync replica's own.
    assert_eq!((p.log_start_offset, p.log_end_offset), (0, 5));
    assert!(p.size_bytes > 0);
    let own: Vec<_> = p
        .replica_states
        .iter()
        .map(|s| {
            (
                s.broker,
                s.in_sync,
                s.offline,
                s.log_end_offset,
                s.offset_lag,
            )
        })
        .collect();
    assert_eq!(
        own,
        vec![
            (leader, true, true, Some(5), None),
            (f1, false, false, Some(2), None),
            (f2, false, false, Some(0), None),
        ]
    );
    assert_eq!(cluster.unavailable_partitions().unwrap(), tp("t"));
    assert_eq!(cluster.under_min_isr_partitions().unwrap(), tp("t"));
    assert!(
        cluster.at_min_isr_partitions().unwrap().is_empty(),
        "leaderless is under it"
    );
    // "healthy" lost a replica too (broker `leader` left every ISR).
    let under = cluster.under_replicated_partitions().unwrap();
    assert_eq!(
        under,
        vec![
            TopicPartition::new("healthy", 0),
            TopicPartition::new("t", 0)
        ]
    );
    let healthy = describe(&cluster, "healthy");
    assert!(state(&healthy, leader).offline && !state(&healthy, leader).in_sync);
    assert!(!healthy.unavailable);

    // A handle builds; its calls wait for a leader.
    let handle = cluster.topic("t").unwrap().partition(0).unwrap();
    for e in [
        handle.high_watermark().unwrap_err(),
        handle.append(&mut batch(1)).unwrap_err(),
        handle.read(0, 1 << 20).unwrap_err(),
    ] {
        assert!(
            matches!(e, Error::LeaderNotAvailable { partition: 0, .. }),
            "{e:?}"
        );
        assert!(e.is_retriable());
    }
    assert_eq!(cluster.topic("t").unwrap().partitions().unwrap().len(), 1);

    // The broker returns and is elected: the same handle works.
    cluster.inner.mark_broker_running(leader).unwrap();
    cluster.inner.liveness_tick().unwrap();
    assert_eq!(
        handle.high_watermark().unwrap(),
        5,
        "its ISR was itself alone"
    );
    handle
        .append(&mut batch(1))
        .unwrap_or_else(|e| panic!("{e:?}"));
    let p = describe(&cluster, "t");
    assert_eq!((p.leader, p.log_end_offset), (Some(leader), 6));
    assert!(!p.unavailable);
    assert!(cluster.unavailable_partitions().unwrap().is_empty());
    cluster.close().unwrap();
}

/// With the fetcher threads running, the leader's view of its followers
/// reaches its own log end: the test waits (on the partition's wake-ups,
/// bounded) for the high watermark, which moves only once every ISR member
/// reported the records.
#[test]
fn with_fetchers_every_replica_is_reported_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = ClusterConfig::builder().brokers(3).build().unwrap();
    let cluster = Cluster::open(dir.path(), config).unwrap();
    let topic = cluster
        .create_topic(NewTopic::new("t", 1).replication_factor(3))
        .unwrap();
    let k = key(&cluster, "t");
    let (tx, rx) = crossbeam_channel::bounded(1);
    cluster.inner.watch_leader(&k, &tx);
    let partition = topic.partition(0).unwrap();
    partition.append(&mut batch(4)).unwrap();
    partition.append(&mut batch(1)).unwrap();
    loop {
        let p = describe(&cluster, "t");
        if p.high_watermark == 5 && p.replica_states.iter().all(|s| s.log_end_offset == Some(5)) {
            assert_eq!(flags(&p), (false, false, false, false));
            for s in &p.replica_states {
                assert!(s.in_sync && !s.offline, "{s:?}");
                assert_eq!(s.offset_lag, Some(0), "{s:?}");
                let follower = p.leader != Some(s.broker);
                assert_eq!(s.last_caught_up_ms.is_some(), follower, "{s:?}");
                assert_eq!(s.last_fetch_ms.is_some(), follower, "{s:?}");
            }
            break;
        }
        assert!(
            rx.recv_timeout(Duration::from_secs(30)).is_ok(),
            "the followers never caught up: {p:?}"
        );
    }
    cluster.inner.unwatch(&k, &tx);
    cluster.close().unwrap();
}

/// One broker: it leads everything and is its own ISR; nothing is under
/// replicated, unavailable or at the minimum ISR (1 of 1 is at it).
#[test]
fn a_single_broker_reports_its_one_replica() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), ClusterConfig::default()).unwrap();
    let topic = cluster.create_topic(NewTopic::new("t", 2)).unwrap();
    topic.partition(1).unwrap().append(&mut batch(2)).unwrap();
    let partitions = topic.describe().unwrap().partitions;
    for (p, end) in partitions.iter().zip([0, 2]) {
        assert_eq!(flags(p), (false, false, true, false));
        let only = ReplicaDescription {
            broker: 0,
            in_sync: true,
            offline: false,
            log_end_offset: Some(end),
            offset_lag: Some(0),
            last_caught_up_ms: None,
            last_fetch_ms: None,
        };
        assert_eq!(p.replica_states, vec![only]);
    }
    assert!(cluster.under_replicated_partitions().unwrap().is_empty());
    assert!(cluster.unavailable_partitions().unwrap().is_empty());
    let at_min = cluster.at_min_isr_partitions().unwrap();
    assert_eq!(
        at_min,
        vec![TopicPartition::new("t", 0), TopicPartition::new("t", 1)]
    );
    cluster.close().unwrap();
}

/// Appends `n` records at `key`'s leader without waiting for followers
/// (acks=1: the followers here fetch only when the test says).
fn leader_append(cluster: &Cluster, key: &TopicIdPartition, n: usize) {
    cluster
        .inner
        .replicas_for(key)
        .unwrap()
        .append(key, &mut batch(n), AppendOrigin::Client, AppendAcks::Leader)
        .unwrap();
}

/// Online reassignment, step by step: the added replicas are created and
/// listed, fetch, enter the ISR one by one through the leader's proposals,
/// and the last one completes it — replicas exactly the target, the
/// leader (dropped) handed over with a new epoch, its log deleted. The
/// records stay readable and writable throughout, and a reopen keeps the
/// new placement with no stray directory.
#[test]
fn reassignment_adds_catches_up_switches_the_leader_and_removes_the_old_replica() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let cluster = Cluster::open(dir.path(), manual(&clock)).unwrap();
    cluster
        .create_topic(NewTopic::new("t", 1).replication_factor(1))
        .unwrap();
    let before = roles(&cluster, "t");
    let old = before.leader.unwrap();
    let (a, b) = ((old + 1) % 3, (old + 2) % 3);
    let k = key(&cluster, "t");
    let handle = cluster.topic("t").unwrap().partition(0).unwrap();
    handle.append(&mut batch(3)).unwrap();
    let tp0 = TopicPartition::new("t", 0);

    cluster.reassign_partition(&tp0, &[a, b]).unwrap();
    let r = roles(&cluster, "t");
    assert_eq!(
        (r.replicas.clone(), r.isr.clone()),
        (vec![a, b, old], vec![old])
    );
    assert_eq!((r.leader, r.leader_epoch), (Some(old), before.leader_epoch));
    assert_eq!(r.partition_epoch, before.partition_epoch + 1);
    assert_eq!(
        cluster.list_partition_reassignments(),
        [(tp0.clone(), vec![a, b])].into()
    );
    assert!(cluster.inner.broker(a).unwrap().replicas.is_hosted(&k));
    assert!(describe(&cluster, "t").under_replicated);

    // a catches up: its second fetch (at the leader's end) makes the
    // leader propose it into the ISR; not complete while b is out.
    fetch(&cluster, a, old);
    fetch(&cluster, a, old);
    assert_eq!(roles(&cluster, "t").isr, vec![old, a]);
    assert_eq!(cluster.list_partition_reassignments().len(), 1);
    leader_append(&cluster, &k, 1);
    fetch(&cluster, a, old);
    // An acks=all append a has not fetched waits at the old leader.
    let (_, pending) = cluster
        .inner
        .replicas_for(&k)
        .unwrap()
        .append_pending(&k, &mut batch(1), AppendOrigin::Client, AppendAcks::All)
        .unwrap();
    let pending = pending.expect("a has not fetched it");

    // b catches up (it copies the waiting batch too): complete.
    fetch(&cluster, b, old);
    // This fetch puts b in the ISR, which completes the reassignment under
    // the round's feet: the round may end on the new epoch's refusal.
    let _ = fetch_once(
        &cluster.inner.broker(b).unwrap().replicas,
        &cluster.inner.broker(old).unwrap().replicas,
    );
    let r = roles(&cluster, "t");
    assert_eq!(r.replicas, vec![a, b]);
    assert_eq!(
        (r.leader, r.leader_epoch),
        (Some(a), before.leader_epoch + 1)
    );
    assert_eq!(r.isr, vec![a, b]);
    assert!(cluster.list_partition_reassignments().is_empty());
    assert!(!cluster.inner.broker(old).unwrap().replicas.is_hosted(&k));
    let old_dir = dir.path().join(format!("broker-{old}/t-0"));
    assert!(dir.path().join(format!("broker-{a}/t-0")).exists());
    assert!(!old_dir.exists(), "{old_dir:?}");
    // The waiting append was never acknowledged: it fails retriably (the
    // producer resends it to the new leader), and b, which copied it,
    // truncates it away at its first fetch from a (diverging epoch).
    let e = pending.try_result().expect("completed").unwrap_err();
    assert!(matches!(e, Error::NotLeaderOrFollower { .. }), "{e:?}");
    fetch(&cluster, b, a);
    for br in [a, b] {
        let held = cluster
            .inner
            .broker(br)
            .unwrap()
            .replicas
            .describe(&k)
            .unwrap();
        assert_eq!((held.leader, held.isr.clone()), (Some(a), vec![a, b]));
        assert_eq!(held.offsets.log_end, 4, "broker {br}");
    }
    // The same handle reads at the new leader (the high watermark moves
    // once b reports its log end), and writes there.
    fetch(&cluster, b, a);
    assert_eq!(handle.read(0, 1 << 20).unwrap().batches().count(), 2);
    leader_append(&cluster, &k, 1);
    assert_eq!(handle.log_end_offset().unwrap(), 5);
    fetch(&cluster, b, a);
    fetch(&cluster, b, a);
    assert!(!describe(&cluster, "t").under_replicated);
    cluster.close().unwrap();

    let cluster = Cluster::open(dir.path(), manual(&clock)).unwrap();
    assert_eq!(roles(&cluster, "t"), r);
    let report = cluster.recovery_report();
    assert!(report.unknown_dirs.is_empty() && report.removed_dirs.is_empty());
    assert_eq!(describe(&cluster, "t").log_end_offset, 5);
    cluster.close().unwrap();
}

/// Bad targets are refused with nothing changed; dropping a replica that
/// is in sync anyway completes at once.
#[test]
fn reassignment_refuses_bad_targets_and_a_pure_removal_completes_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let cluster = Cluster::open(dir.path(), manual(&clock)).unwrap();
    cluster
        .create_topic(NewTopic::new("t", 1).replication_factor(2))
        .unwrap();
    let before = roles(&cluster, "t");
    let spare = (0..3).find(|b| !before.replicas.contains(b)).unwrap();
    cluster.inner.mark_broker_stopped(spare).unwrap();
    let tp0 = TopicPartition::new("t", 0);
    for bad in [vec![], vec![0, 0], vec![0, 7], vec![spare]] {
        let e = cluster.reassign_partition(&tp0, &bad).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{bad:?}: {e:?}");
        assert_eq!(roles(&cluster, "t"), before, "{bad:?}");
    }
    let missing = TopicPartition::new("t", 1);
    assert!(matches!(
        cluster.reassign_partition(&missing, &[0]),
        Err(Error::UnknownTopicOrPartition { .. })
    ));
    assert!(cluster.list_partition_reassignments().is_empty());

    // Keep only the follower: the leader hands over at once.
    let follower = before.replicas[1];
    cluster.reassign_partition(&tp0, &[follower]).unwrap();
    let r = roles(&cluster, "t");
    assert_eq!(
        (r.replicas.clone(), r.isr.clone()),
        (vec![follower], vec![follower])
    );
    assert_eq!(
        (r.leader, r.leader_epoch),
        (Some(follower), before.leader_epoch + 1)
    );
    assert!(cluster.list_partition_reassignments().is_empty());
    cluster.close().unwrap();
}

/// With the fetcher threads, a reassignment completes by itself: the test
/// waits (bounded, on the metadata watcher) until none is under way.
#[test]
fn with_fetchers_a_reassignment_completes_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let config = ClusterConfig::builder().brokers(3).build().unwrap();
    let cluster = Cluster::open(dir.path(), config).unwrap();
    let topic = cluster
        .create_topic(NewTopic::new("t", 1).replication_factor(1))
        .unwrap();
    let old = roles(&cluster, "t").leader.unwrap();
    let target = vec![(old + 1) % 3, (old + 2) % 3];
    let partition = topic.partition(0).unwrap();
    partition.append(&mut batch(7)).unwrap();
    let (tx, rx) = crossbeam_channel::bounded(1);
    cluster.inner.watch_metadata(&tx);
    cluster
        .reassign_partition(&TopicPartition::new("t", 0), &target)
        .unwrap();
    while !cluster.list_partition_reassignments().is_empty() {
        assert!(
            rx.recv_timeout(Duration::from_secs(30)).is_ok(),
            "the reassignment never completed: {:?}",
            roles(&cluster, "t")
        );
    }
    cluster.inner.unwatch_metadata(&tx);
    let p = describe(&cluster, "t");
    assert_eq!(
        (p.replicas.clone(), p.leader),
        (target.clone(), Some(target[0]))
    );
    assert_eq!((p.log_end_offset, p.isr.len()), (7, 2));
    partition.append(&mut batch(1)).unwrap();
    assert_eq!(partition.read(0, 1 << 20).unwrap().batches().count(), 2);
    cluster.close().unwrap();
}
