//! The controller's failover, at the cluster level: fencing and its
//! elections, a broker's return, unclean election, AlterPartition,
//! liveness on a manual clock. (Followers' fetchers are off here, so that
//! every ISR change is the test's own; no test looks at data moving
//! between replicas.)

use std::collections::HashMap;
use std::time::Duration;

use super::*;
use crate::clock::ManualClock;
use crate::format::BatchBuilder;
use crate::replica::{AppendAcks, AppendOrigin};
use crate::types::Compression;

const SESSION_MS: i64 = 9_000;

fn config(clock: &ManualClock, thread: bool) -> ClusterConfig {
    ClusterConfig::builder()
        .brokers(3)
        .clock(Arc::new(clock.clone()))
        .controller_thread(thread)
        .replica_fetchers(false)
        .build()
        .unwrap()
}

fn open(dir: &std::path::Path, clock: &ManualClock) -> Cluster {
    Cluster::open(dir, config(clock, false)).unwrap()
}

/// Topic `rf3` (3 partitions, replication factor 3, min ISR 2) and `rf2`
/// (3 partitions, replication factor 2).
fn create_topics(cluster: &Cluster) {
    let min2 = TopicConfig::new().min_insync_replicas(2).unwrap();
    cluster
        .create_topic(NewTopic::new("rf3", 3).replication_factor(3).config(min2))
        .unwrap();
    cluster
        .create_topic(NewTopic::new("rf2", 3).replication_factor(2))
        .unwrap();
}

fn roles(cluster: &Cluster, topic: &str) -> Vec<LeaderAndIsr> {
    cluster
        .inner
        .topic_state(topic)
        .unwrap()
        .assignments
        .read()
        .clone()
}

fn key(cluster: &Cluster, topic: &str, p: u32) -> TopicIdPartition {
    cluster.inner.topic_state(topic).unwrap().key(p).unwrap()
}

/// What broker `b`'s replica manager holds for the partition.
fn held(cluster: &Cluster, b: u32, key: &TopicIdPartition) -> (Option<u32>, i32, Vec<u32>) {
    let info = cluster
        .inner
        .broker(b)
        .unwrap()
        .replicas
        .describe(key)
        .unwrap();
    (info.leader, info.leader_epoch, info.isr)
}

fn batch() -> Vec<u8> {
    let mut b = BatchBuilder::new(Compression::None);
    b.append(1, None, Some(b"v"), &[]);
    b.build().unwrap().to_vec()
}

/// Crashes broker `b` and lets its session expire.
fn crash_and_expire(cluster: &Cluster, clock: &ManualClock, b: u32) {
    cluster.inner.mark_broker_crashed(b).unwrap();
    clock.advance_ms(SESSION_MS + 1);
    cluster.inner.liveness_tick().unwrap();
    assert!(cluster.inner.is_broker_fenced(b));
}

/// What fencing broker 0 must make of a partition's state: it leaves
/// the ISR (all of it live and more than one member here) and, if it
/// led, the first replica left in the ISR leads in the next epoch.
fn expected_after_fencing_0(before: &LeaderAndIsr) -> LeaderAndIsr {
    let isr: Vec<u32> = before.isr.iter().copied().filter(|&b| b != 0).collect();
    let leader = if before.leader == Some(0) {
        before.replicas.iter().copied().find(|b| isr.contains(b))
    } else {
        before.leader
    };
    LeaderAndIsr {
        replicas: before.replicas.clone(),
        leader,
        leader_epoch: before.leader_epoch + i32::from(leader != before.leader),
        partition_epoch: before.partition_epoch + i32::from(before.replicas.contains(&0)),
        isr,
    }
}

#[test]
fn fencing_moves_leaderships_to_the_isr_and_a_reopen_restores_them() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let cluster = open(dir.path(), &clock);
    create_topics(&cluster);
    let before: Vec<(&str, Vec<LeaderAndIsr>)> = vec![
        ("rf3", roles(&cluster, "rf3")),
        ("rf2", roles(&cluster, "rf2")),
    ];
    assert!(
        before
            .iter()
            .flat_map(|(_, r)| r)
            .any(|r| r.leader == Some(0)),
        "placement spreads leaders: broker 0 leads something"
    );
    let metadata_end = |c: &Cluster| {
        c.inner
            .controller
            .lock()
            .metadata
            .as_ref()
            .unwrap()
            .log_end_offset()
    };
    let end_before = metadata_end(&cluster);
    crash_and_expire(&cluster, &clock, 0);
    // One batch for all the changes (each record is one offset).
    let changed = before
        .iter()
        .flat_map(|(_, r)| r)
        .filter(|r| r.replicas.contains(&0))
        .count() as u64;
    assert_eq!(metadata_end(&cluster), end_before + changed);
    let mut expected = Vec::new();
    for (topic, before) in &before {
        let after = roles(&cluster, topic);
        for (p, (b, a)) in (0..).zip(before.iter().zip(&after)) {
            assert_eq!(a, &expected_after_fencing_0(b), "{topic}-{p}");
            assert_ne!(a.leader, Some(0));
            let k = key(&cluster, topic, p);
            // Every live replica's broker took it; routing follows.
            for &r in a.replicas.iter().filter(|&&r| r != 0) {
                assert_eq!(
                    held(&cluster, r, &k),
                    (a.leader, a.leader_epoch, a.isr.clone())
                );
            }
            let leader = a.leader.unwrap();
            let partition = cluster.topic(topic).unwrap().partition(p).unwrap();
            let end = partition.log_end_offset().unwrap();
            // Routed as every request is; acknowledged at the leader's
            // append (followers are not fed here, so acks=all would wait).
            cluster
                .inner
                .replicas_for(&k)
                .unwrap()
                .append(&k, &mut batch(), AppendOrigin::Client, AppendAcks::Leader)
                .unwrap();
            let on_leader = cluster.inner.broker(leader).unwrap().replicas.offsets(&k);
            assert_eq!(
                on_leader.unwrap().log_end,
                end + 1,
                "{topic}-{p} went to {leader}"
            );
        }
        expected.push((topic.to_string(), after));
    }
    cluster.close().unwrap();

    let cluster = open(dir.path(), &clock);
    for (topic, after) in &expected {
        assert_eq!(&roles(&cluster, topic), after, "{topic} restored");
        for (p, a) in (0..).zip(after) {
            let k = key(&cluster, topic, p);
            for &r in &a.replicas {
                assert_eq!(
                    held(&cluster, r, &k),
                    (a.leader, a.leader_epoch, a.isr.clone())
                );
            }
        }
    }
    cluster.close().unwrap();
}

#[test]
fn a_clean_stop_fences_at_once_and_a_return_takes_back_preferred_leaderships() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let cluster = open(dir.path(), &clock);
    create_topics(&cluster);
    let preferred: Vec<(String, u32)> = ["rf3", "rf2"]
        .iter()
        .flat_map(|t| {
            (0..)
                .zip(roles(&cluster, t))
                .filter(|(_, r)| r.replicas[0] == 0)
                .map(|(p, _)| (t.to_string(), p))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(!preferred.is_empty());
    cluster.inner.mark_broker_stopped(0).unwrap();
    assert!(cluster.inner.is_broker_fenced(0), "controlled shutdown");
    cluster.inner.mark_broker_running(0).unwrap();
    cluster.inner.liveness_tick().unwrap();
    assert!(!cluster.inner.is_broker_fenced(0));
    // Back, but out of the ISRs: nobody gives it a leadership yet.
    for (t, p) in &preferred {
        let r = &roles(&cluster, t)[*p as usize];
        assert!(r.leader != Some(0) && !r.isr.contains(&0), "{t}-{p}: {r:?}");
        // It got the current state too, though it missed the change.
        assert_eq!(held(&cluster, 0, &key(&cluster, t, *p)).0, r.leader);
    }
    // Each leader takes it back into the ISR (its follower caught up).
    for (t, p) in &preferred {
        let r = roles(&cluster, t)[*p as usize].clone();
        let mut isr = r.isr.clone();
        isr.push(0);
        let k = key(&cluster, t, *p);
        let new = cluster
            .inner
            .controller_channel()
            .alter_partition(
                &k,
                r.leader.unwrap(),
                r.leader_epoch,
                r.partition_epoch,
                isr,
            )
            .unwrap();
        assert!(new.isr.contains(&0) && new.leader == r.leader);
    }
    // The next step hands the preferred leaderships back.
    clock.advance_ms(2_000);
    cluster.inner.liveness_tick().unwrap();
    for (t, p) in &preferred {
        let r = &roles(&cluster, t)[*p as usize];
        assert_eq!(r.leader, Some(0), "{t}-{p}");
        assert_eq!(held(&cluster, 0, &key(&cluster, t, *p)).0, Some(0));
    }
    assert!(cluster.inner.controller.lock().rebalance_pending.is_empty());
    cluster.close().unwrap();
}

#[test]
fn without_auto_rebalance_only_the_explicit_election_moves_leaders_back() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let config = ClusterConfig::builder()
        .brokers(3)
        .clock(Arc::new(clock.clone()))
        .controller_thread(false)
        .replica_fetchers(false)
        .auto_leader_rebalance_enable(false)
        .build()
        .unwrap();
    let cluster = Cluster::open(dir.path(), config).unwrap();
    cluster
        .create_topic(NewTopic::new("t", 3).replication_factor(3))
        .unwrap();
    let led_by_0: Vec<u32> = (0..)
        .zip(roles(&cluster, "t"))
        .filter(|(_, r)| r.leader == Some(0))
        .map(|(p, _)| p)
        .collect();
    assert!(!led_by_0.is_empty());
    assert_eq!(
        cluster.elect_preferred_leaders().unwrap(),
        vec![],
        "all preferred"
    );
    cluster.inner.mark_broker_stopped(0).unwrap();
    cluster.inner.mark_broker_running(0).unwrap();
    cluster.inner.liveness_tick().unwrap();
    for (p, r) in (0..).zip(roles(&cluster, "t")) {
        if r.replicas.contains(&0) && !r.isr.contains(&0) {
            let mut isr = r.isr.clone();
            isr.push(0);
            cluster
                .inner
                .alter_partition(
                    &key(&cluster, "t", p),
                    r.leader.unwrap(),
                    r.leader_epoch,
                    r.partition_epoch,
                    isr,
                )
                .unwrap();
        }
    }
    clock.advance_ms(2_000);
    cluster.inner.liveness_tick().unwrap();
    assert!(roles(&cluster, "t").iter().all(|r| r.leader != Some(0)));
    let moved = cluster.elect_preferred_leaders().unwrap();
    let expected: Vec<TopicPartition> = led_by_0
        .iter()
        .map(|&p| TopicPartition::new("t", p))
        .collect();
    assert_eq!(moved, expected);
    for &p in &led_by_0 {
        let r = &roles(&cluster, "t")[p as usize];
        assert_eq!(r.leader, Some(0));
        assert_eq!(r.leader_epoch, 2, "one epoch away, one back");
    }
    cluster.close().unwrap();
}

/// Partition 0 of a topic with replication factor 3, its ISR shrunk to
/// its leader alone by the leader's own proposal; returns its leader.
fn shrink_to_leader(cluster: &Cluster, topic: &str) -> u32 {
    let r = roles(cluster, topic)[0].clone();
    let leader = r.leader.unwrap();
    cluster
        .inner
        .alter_partition(
            &key(cluster, topic, 0),
            leader,
            r.leader_epoch,
            r.partition_epoch,
            vec![leader],
        )
        .unwrap();
    leader
}

#[test]
fn a_partition_without_a_live_isr_member_has_no_leader_unless_unclean_election_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let cluster = open(dir.path(), &clock);
    cluster
        .create_topic(NewTopic::new("clean", 1).replication_factor(3))
        .unwrap();
    let unclean = TopicConfig::new().unclean_leader_election_enable(true);
    cluster
        .create_topic(
            NewTopic::new("unclean", 1)
                .replication_factor(3)
                .config(unclean),
        )
        .unwrap();
    let leader = shrink_to_leader(&cluster, "clean");
    let before = roles(&cluster, "clean")[0].clone();
    cluster.inner.mark_broker_stopped(leader).unwrap();
    let after = roles(&cluster, "clean")[0].clone();
    assert_eq!(after.leader, None);
    assert_eq!(after.isr, vec![leader], "the last ISR member stays");
    assert_eq!(after.leader_epoch, before.leader_epoch + 1);
    let partition = cluster.topic("clean").unwrap();
    let k = key(&cluster, "clean", 0);
    assert!(matches!(
        cluster.inner.replicas_for(&k),
        Err(Error::LeaderNotAvailable { partition: 0, .. })
    ));
    let append = cluster.inner.leader_broker(&k).map(|_| ());
    assert!(
        append.as_ref().is_err_and(Error::is_retriable),
        "{append:?}"
    );
    // A handle still builds; its calls wait for a leader.
    let leaderless = partition.partition(0).unwrap();
    assert!(matches!(
        leaderless.high_watermark(),
        Err(Error::LeaderNotAvailable { partition: 0, .. })
    ));
    // Its return elects it: the clean election it waited for.
    cluster.inner.mark_broker_running(leader).unwrap();
    cluster.inner.liveness_tick().unwrap();
    let back = roles(&cluster, "clean")[0].clone();
    assert_eq!(back.leader, Some(leader));
    assert_eq!(back.leader_epoch, before.leader_epoch + 2);
    partition
        .partition(0)
        .unwrap()
        .append(&mut batch())
        .unwrap();

    // With unclean election the first live replica leads, alone in the ISR.
    let leader = shrink_to_leader(&cluster, "unclean");
    let before = roles(&cluster, "unclean")[0].clone();
    cluster.inner.mark_broker_stopped(leader).unwrap();
    let after = roles(&cluster, "unclean")[0].clone();
    let first_live = *before.replicas.iter().find(|&&b| b != leader).unwrap();
    assert_eq!(after.leader, Some(first_live));
    assert_eq!(after.isr, vec![first_live]);
    assert_eq!(after.leader_epoch, before.leader_epoch + 1);
    cluster
        .topic("unclean")
        .unwrap()
        .partition(0)
        .unwrap()
        .append(&mut batch())
        .unwrap();
    cluster.close().unwrap();
}

#[test]
fn a_partition_left_leaderless_elects_when_the_cluster_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let cluster = open(dir.path(), &clock);
    cluster
        .create_topic(NewTopic::new("t", 1).replication_factor(2))
        .unwrap();
    let r = roles(&cluster, "t")[0].clone();
    // Both replicas stop: the leader first, then the new one.
    for b in [r.replicas[0], r.replicas[1]] {
        cluster.inner.mark_broker_stopped(b).unwrap();
    }
    let leaderless = roles(&cluster, "t")[0].clone();
    assert_eq!(
        (leaderless.leader, leaderless.isr.clone()),
        (None, vec![r.replicas[1]])
    );
    cluster.close().unwrap();
    let cluster = open(dir.path(), &clock);
    let elected = roles(&cluster, "t")[0].clone();
    assert_eq!(elected.leader, Some(r.replicas[1]));
    assert_eq!(elected.leader_epoch, leaderless.leader_epoch + 1);
    assert_eq!(elected.partition_epoch, leaderless.partition_epoch + 1);
    cluster.close().unwrap();
    // The election was persisted: a second reopen finds it as it was.
    let cluster = open(dir.path(), &clock);
    assert_eq!(roles(&cluster, "t")[0], elected);
    cluster.close().unwrap();
}

#[test]
fn alter_partition_accepts_the_leaders_proposals_and_refuses_stale_or_invalid_ones() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let cluster = open(dir.path(), &clock);
    cluster
        .create_topic(NewTopic::new("t", 1).replication_factor(3))
        .unwrap();
    let channel = cluster.inner.controller_channel();
    let k = key(&cluster, "t", 0);
    let r = roles(&cluster, "t")[0].clone();
    let leader = r.leader.unwrap();
    let follower = r.replicas[1];
    let other = r.replicas[2];
    let (le, pe) = (r.leader_epoch, r.partition_epoch);
    let propose =
        |by: u32, le: i32, pe: i32, isr: Vec<u32>| channel.alter_partition(&k, by, le, pe, isr);

    // Unchanged: no new state, no epoch bump.
    assert_eq!(propose(leader, le, pe, r.isr.clone()).unwrap(), r);
    // A shrink: the partition epoch moves, the leader epoch stays.
    let shrunk = propose(leader, le, pe, vec![leader, follower]).unwrap();
    assert_eq!(
        shrunk,
        LeaderAndIsr {
            isr: vec![leader, follower],
            partition_epoch: pe + 1,
            ..r.clone()
        }
    );
    assert_eq!(roles(&cluster, "t")[0], shrunk, "routing table");
    for b in [leader, follower, other] {
        assert_eq!(
            held(&cluster, b, &k),
            (Some(leader), le, vec![leader, follower])
        );
    }
    let pe = pe + 1;
    let refused = [
        (
            "stale partition epoch",
            propose(leader, le, pe - 1, vec![leader]),
        ),
        ("not the leader", propose(follower, le, pe, vec![follower])),
        (
            "future leader epoch",
            propose(leader, le + 1, pe, vec![leader]),
        ),
        ("not a replica", propose(leader, le, pe, vec![leader, 7])),
        (
            "without the leader",
            propose(leader, le, pe, vec![follower]),
        ),
        ("empty", propose(leader, le, pe, vec![])),
        ("twice", propose(leader, le, pe, vec![leader, leader])),
    ];
    for (case, result) in refused {
        match (case, result) {
            ("stale partition epoch", Err(Error::FencedLeaderEpoch { epoch, current, .. })) => {
                assert_eq!((epoch, current), (pe - 1, pe));
            }
            ("not the leader", Err(Error::NotLeaderOrFollower { broker, .. })) => {
                assert_eq!(broker, follower);
            }
            (_, Err(Error::InvalidArgument(m))) if case != "stale partition epoch" => {
                assert!(m.contains("t-0"), "{case}: {m}");
            }
            (case, other) => panic!("{case}: {other:?}"),
        }
    }
    assert_eq!(roles(&cluster, "t")[0], shrunk, "refusals change nothing");
    // A fenced broker may not join the ISR; the old leader's epoch is
    // fenced once it lost the leadership.
    cluster.inner.mark_broker_stopped(other).unwrap();
    assert!(matches!(
        propose(leader, le, pe, vec![leader, follower, other]),
        Err(Error::InvalidArgument(m)) if m.contains("fenced")
    ));
    cluster.inner.mark_broker_stopped(leader).unwrap();
    let now = roles(&cluster, "t")[0].clone();
    assert_eq!(now.leader, Some(follower));
    assert!(matches!(
        propose(leader, le, now.partition_epoch, vec![leader]),
        Err(Error::FencedLeaderEpoch { epoch, current, .. }) if epoch == le && current == le + 1
    ));
    // Persisted: a reopen restores the accepted state's successors.
    cluster.close().unwrap();
    let cluster = open(dir.path(), &clock);
    assert_eq!(roles(&cluster, "t")[0], now);
    assert!(matches!(
        cluster.inner.controller_channel().alter_partition(
            &TopicIdPartition {
                topic_id: Uuid::from_u128(1),
                ..k.clone()
            },
            follower,
            0,
            0,
            vec![follower]
        ),
        Err(Error::UnknownTopicOrPartition { .. })
    ));
    cluster.close().unwrap();
    assert!(matches!(
        channel.alter_partition(&k, follower, 0, 0, vec![follower]),
        Err(Error::Closed(_))
    ));
}

#[test]
fn liveness_fences_at_the_session_timeout_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let cluster = open(dir.path(), &clock);
    create_topics(&cluster);
    cluster.inner.set_broker_cut_off(1, true).unwrap();
    clock.advance_ms(SESSION_MS);
    cluster.inner.liveness_tick().unwrap();
    assert!(
        !cluster.inner.is_broker_fenced(1),
        "its session lasts the timeout"
    );
    clock.advance_ms(1);
    let next = cluster.inner.liveness_tick().unwrap();
    assert!(cluster.inner.is_broker_fenced(1));
    assert_eq!(next, SESSION_MS + 1 + 2_000, "the next heartbeat");
    assert!(
        roles(&cluster, "rf3")
            .iter()
            .all(|r| r.leader != Some(1) && !r.isr.contains(&1))
    );
    assert!(!cluster.inner.is_broker_fenced(0) && !cluster.inner.is_broker_fenced(2));
    // Reconnected, it heartbeats and is unfenced.
    cluster.inner.set_broker_cut_off(1, false).unwrap();
    cluster.inner.liveness_tick().unwrap();
    assert!(!cluster.inner.is_broker_fenced(1));
    cluster.close().unwrap();
}

/// The controller thread does the same by itself, woken by the clock's
/// jumps and by the fault hooks (each change wakes the metadata watchers,
/// which the test waits on).
#[test]
fn the_controller_thread_fences_a_cut_off_broker_and_unfences_it_on_reconnection() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let cluster = Cluster::open(dir.path(), config(&clock, true)).unwrap();
    cluster
        .create_topic(NewTopic::new("t", 3).replication_factor(3))
        .unwrap();
    let (tx, rx) = crossbeam_channel::bounded(1);
    cluster.inner.watch_metadata(&tx);
    let wait_until = |what: &str, done: &dyn Fn() -> bool| {
        while !done() {
            assert!(
                rx.recv_timeout(Duration::from_secs(30)).is_ok(),
                "the controller thread never got to: {what}"
            );
        }
    };
    cluster.inner.set_broker_cut_off(2, true).unwrap();
    clock.advance_ms(SESSION_MS + 1);
    wait_until("fence broker 2", &|| {
        roles(&cluster, "t").iter().all(|r| !r.isr.contains(&2))
    });
    assert!(cluster.inner.is_broker_fenced(2));
    cluster.inner.set_broker_cut_off(2, false).unwrap();
    wait_until("unfence broker 2", &|| !cluster.inner.is_broker_fenced(2));
    cluster.close().unwrap();
}

#[test]
fn new_replicas_go_to_live_brokers_only() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let cluster = open(dir.path(), &clock);
    cluster
        .create_topic(NewTopic::new("grown", 1).replication_factor(2))
        .unwrap();
    cluster.inner.mark_broker_stopped(1).unwrap();
    assert!(matches!(
        cluster.create_topic(NewTopic::new("t3", 1).replication_factor(3)),
        Err(Error::InvalidReplicationFactor { reason, .. }) if reason.contains("live brokers (2 of 3")
    ));
    cluster
        .create_topic(NewTopic::new("t2", 4).replication_factor(2))
        .unwrap();
    cluster.create_partitions("grown", 5).unwrap();
    for (topic, from) in [("t2", 0), ("grown", 1)] {
        for r in &roles(&cluster, topic)[from..] {
            assert!(!r.replicas.contains(&1), "{topic}: {r:?}");
            assert_eq!(r.isr, r.replicas);
            assert_eq!(r.leader, Some(r.replicas[0]));
        }
    }
    cluster.close().unwrap();
}

#[derive(Debug, Clone)]
enum Fault {
    Crash(u32),
    Stop(u32),
    Run(u32),
    CutOff(u32),
    Reconnect(u32),
    Advance(i64),
    /// The leader of partition `.0 % 3` drops the `.1`-th other ISR member.
    Shrink(u32, usize),
    /// The leader of partition `.0 % 3` adds a live replica outside the ISR.
    Expand(u32),
    Preferred,
}

fn fault() -> impl proptest::strategy::Strategy<Value = Fault> {
    use proptest::prelude::*;
    prop_oneof![
        (0..3u32).prop_map(Fault::Crash),
        (0..3u32).prop_map(Fault::Stop),
        (0..3u32).prop_map(Fault::Run),
        (0..3u32).prop_map(Fault::CutOff),
        (0..3u32).prop_map(Fault::Reconnect),
        prop_oneof![Just(1_000i64), Just(2_000), Just(9_001)].prop_map(Fault::Advance),
        (0..3u32, 0..2usize).prop_map(|(p, n)| Fault::Shrink(p, n)),
        (0..3u32).prop_map(Fault::Expand),
        Just(Fault::Preferred),
    ]
}

/// After every step: the routing table is the registry's state, every
/// live replica's broker holds it, a leader is live and in the ISR, a
/// leaderless partition has no live ISR member; leader epochs never go
/// back and never have two leaders.
fn check_consistent(
    cluster: &Cluster,
    topics: &[&str],
    seen: &mut HashMap<(String, u32, i32), Option<u32>>,
) -> std::result::Result<(), proptest::test_runner::TestCaseError> {
    use proptest::prop_assert;
    use proptest::prop_assert_eq;
    let inner = &cluster.inner;
    let controller = inner.controller.lock();
    for topic in topics {
        let stored = controller
            .registry
            .topic(topic)
            .unwrap()
            .assignments
            .clone();
        prop_assert_eq!(&roles(cluster, topic), &stored, "{} routing", topic);
        for (p, s) in (0..).zip(&stored) {
            let k = key(cluster, topic, p);
            for &b in s
                .replicas
                .iter()
                .filter(|&&b| controller.liveness.is_live(b))
            {
                prop_assert_eq!(
                    held(cluster, b, &k),
                    (s.leader, s.leader_epoch, s.isr.clone()),
                    "{}-{} on broker {}",
                    topic,
                    p,
                    b
                );
            }
            match s.leader {
                Some(l) => prop_assert!(
                    controller.liveness.is_live(l) && s.isr.contains(&l),
                    "{:?}",
                    s
                ),
                None => prop_assert!(
                    s.isr.iter().all(|&b| !controller.liveness.is_live(b)),
                    "{:?}",
                    s
                ),
            }
            if let Some(before) = seen.insert((topic.to_string(), p, s.leader_epoch), s.leader) {
                prop_assert_eq!(before, s.leader, "two leaders in one epoch");
            }
            let newest = seen
                .keys()
                .filter(|(t, q, _)| t == topic && *q == p)
                .map(|(_, _, e)| *e)
                .max();
            prop_assert_eq!(newest, Some(s.leader_epoch), "the leader epoch went back");
        }
    }
    Ok(())
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]

    /// Seeded schedules of crashes, clean stops, restarts, controller
    /// cut-offs, clock advances, leaders' ISR changes and preferred
    /// elections over three brokers: the routing table, the registry and
    /// every live replica's broker agree after every step, Kafka's
    /// invariants hold, and a reopen restores what the registry held
    /// (partitions left leaderless elect at the reopen).
    #[test]
    fn failover_schedules_keep_the_controller_consistent(
        faults in proptest::collection::vec(fault(), 1..40),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(0);
        let cluster = open(dir.path(), &clock);
        create_topics(&cluster);
        let topics = ["rf3", "rf2"];
        let inner = &cluster.inner;
        let mut seen = HashMap::new();
        check_consistent(&cluster, &topics, &mut seen)?;
        for fault in faults {
            match fault {
                Fault::Crash(b) => inner.mark_broker_crashed(b).unwrap(),
                Fault::Stop(b) => inner.mark_broker_stopped(b).unwrap(),
                Fault::Run(b) => inner.mark_broker_running(b).unwrap(),
                Fault::CutOff(b) => inner.set_broker_cut_off(b, true).unwrap(),
                Fault::Reconnect(b) => inner.set_broker_cut_off(b, false).unwrap(),
                Fault::Advance(ms) => clock.advance_ms(ms),
                Fault::Shrink(p, n) => {
                    let s = roles(&cluster, "rf3")[(p % 3) as usize].clone();
                    if let Some(l) = s.leader {
                        let others: Vec<u32> = s.isr.iter().copied().filter(|&b| b != l).collect();
                        if let Some(&gone) = others.get(n) {
                            let isr = s.isr.iter().copied().filter(|&b| b != gone).collect();
                            let k = key(&cluster, "rf3", p % 3);
                            inner.alter_partition(&k, l, s.leader_epoch, s.partition_epoch, isr).unwrap();
                        }
                    }
                }
                Fault::Expand(p) => {
                    let s = roles(&cluster, "rf3")[(p % 3) as usize].clone();
                    let back = s.replicas.iter().copied()
                        .find(|&b| !s.isr.contains(&b) && !inner.is_broker_fenced(b));
                    if let (Some(l), Some(back)) = (s.leader, back) {
                        let mut isr = s.isr.clone();
                        isr.push(back);
                        let k = key(&cluster, "rf3", p % 3);
                        inner.alter_partition(&k, l, s.leader_epoch, s.partition_epoch, isr).unwrap();
                    }
                }
                Fault::Preferred => drop(cluster.elect_preferred_leaders().unwrap()),
            }
            inner.liveness_tick().unwrap();
            check_consistent(&cluster, &topics, &mut seen)?;
        }
        let before: Vec<Vec<LeaderAndIsr>> = topics.iter().map(|t| roles(&cluster, t)).collect();
        cluster.close().unwrap();
        let cluster = open(dir.path(), &clock);
        for (topic, before) in topics.iter().zip(before) {
            for (b, a) in before.iter().zip(roles(&cluster, topic)) {
                if b.leader.is_some() {
                    proptest::prop_assert_eq!(b, &a);
                } else {
                    proptest::prop_assert_eq!(a.leader, Some(b.isr[0]));
                    proptest::prop_assert_eq!(a.leader_epoch, b.leader_epoch + 1);
                }
            }
        }
        cluster.close().unwrap();
    }
}

/// The reassignment under way is in the metadata log: a crash between
/// the ISR change that put its last target replica in sync and the switch
/// (simulated by committing that ISR change alone) reopens with the move
/// under way, and the first liveness step completes it: the replicas
/// become the target, the leadership moves to the target's first replica,
/// the dropped replica's directory goes. A pure addition under way
/// (nothing dropped) survives a reopen as well.
#[test]
fn a_reassignment_cut_off_before_its_switch_completes_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let cluster = open(dir.path(), &clock);
    cluster
        .create_topic(NewTopic::new("t", 1).replication_factor(2))
        .unwrap();
    let before = roles(&cluster, "t")[0].clone();
    let (r0, r1) = (before.replicas[0], before.replicas[1]);
    let spare = (0..3).find(|b| !before.replicas.contains(b)).unwrap();
    let target = vec![spare, r1];
    let tp = TopicPartition::new("t", 0);
    cluster.reassign_partition(&tp, &target).unwrap();
    assert_eq!(
        cluster.list_partition_reassignments(),
        [(tp.clone(), target.clone())].into()
    );
    let moving = roles(&cluster, "t")[0].clone();
    assert_eq!(moving.replicas, [spare, r1, r0]);
    assert_eq!(moving.isr, [r0, r1]);
    {
        let mut controller = cluster.inner.controller.lock();
        let Controller {
            metadata, registry, ..
        } = &mut *controller;
        let next = LeaderAndIsr {
            isr: vec![r0, r1, spare],
            partition_epoch: moving.partition_epoch + 1,
            ..moving.clone()
        };
        let decided = Decided {
            topic_id: key(&cluster, "t", 0).topic_id,
            topic: "t".into(),
            partition: 0,
            roles: next,
        };
        let changes = Changes::from([(("t".to_string(), 0), decided)]);
        ClusterInner::commit_changes(metadata.as_mut().unwrap(), registry, &changes).unwrap();
    }
    cluster.close().unwrap();

    let cluster = open(dir.path(), &clock);
    assert_eq!(
        cluster.list_partition_reassignments(),
        [(tp.clone(), target.clone())].into(),
        "the target survived the reopen"
    );
    assert_eq!(roles(&cluster, "t")[0].isr, [r0, r1, spare]);
    cluster.inner.liveness_tick().unwrap();
    assert!(cluster.list_partition_reassignments().is_empty());
    let done = roles(&cluster, "t")[0].clone();
    assert_eq!(done.replicas, target);
    assert_eq!(done.isr, [r1, spare]);
    assert_eq!(
        done.leader,
        Some(spare),
        "r0 led; the target's first takes over"
    );
    assert_eq!(done.leader_epoch, before.leader_epoch + 1);
    assert!(!dir.path().join(format!("broker-{r0}/t-0")).exists());
    assert!(dir.path().join(format!("broker-{spare}/t-0")).exists());
    // A pure addition (nothing dropped): under way until r0 is in sync.
    let all = vec![spare, r1, r0];
    cluster.reassign_partition(&tp, &all).unwrap();
    let added = roles(&cluster, "t")[0].clone();
    assert_eq!(added.replicas, all);
    assert_eq!(
        cluster.list_partition_reassignments(),
        [(tp.clone(), all.clone())].into(),
        "r0 is not in sync yet"
    );
    cluster.close().unwrap();
    let cluster = open(dir.path(), &clock);
    assert_eq!(
        cluster.list_partition_reassignments(),
        [(tp, all)].into(),
        "an addition under way survives a reopen too"
    );
    cluster.close().unwrap();
}
