//! Consumer groups end to end: subscribe, rebalances, listeners, commits,
//! timeouts — every timeout driven by a ManualClock.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use logbus::format::BatchBuilder;
use logbus::{
    Cluster, ClusterConfig, Compression, Consumer, ConsumerConfig, ConsumerRebalanceListener,
    Error, GroupState, ManualClock, NewTopic, OffsetReset, OffsetSpec, TopicPartition,
};

const T0: i64 = 1_700_000_000_000;

mod common;

use common::Fixture;

fn fixture() -> Fixture {
    common::fixture_at(T0)
}

fn config(group: &str) -> logbus::ConsumerConfigBuilder {
    ConsumerConfig::builder()
        .group_id(group)
        .auto_offset_reset(OffsetReset::Earliest)
        .session_timeout(Duration::from_millis(10_000))
        .heartbeat_interval(Duration::from_millis(1_000))
        .max_poll_interval(Duration::from_millis(60_000))
}

fn append(cluster: &Cluster, topic: &str, partition: u32, values: &[&str]) {
    let mut batch = BatchBuilder::new(Compression::None);
    for v in values {
        batch.append(T0, Some(v.as_bytes()), Some(v.as_bytes()), &[]);
    }
    cluster
        .topic(topic)
        .unwrap()
        .partition(partition)
        .unwrap()
        .append(&mut batch.build().unwrap().to_vec())
        .unwrap();
}

/// A consumer of `f`'s cluster subscribed to `topics`.
fn member<const N: usize>(f: &Fixture, config: ConsumerConfig, topics: [&str; N]) -> Consumer {
    let mut consumer = Consumer::new(&f.cluster, config).unwrap();
    consumer.subscribe(topics).unwrap();
    consumer
}

/// Group `g`'s settings with client id `id` and one assignor.
fn strategy(id: &str, assignor: &str) -> ConsumerConfig {
    config("g")
        .client_id(id)
        .partition_assignment_strategy([assignor])
        .build()
        .unwrap()
}

fn sorted(mut v: Vec<TopicPartition>) -> Vec<TopicPartition> {
    v.sort();
    v
}

/// Polls every consumer (without waiting) until none changes its
/// assignment or generation in a full round.
fn settle(consumers: &mut [&mut Consumer]) {
    for _ in 0..20 {
        let before: Vec<_> = consumers
            .iter()
            .map(|c| (c.generation(), sorted(c.assignment())))
            .collect();
        for c in consumers.iter_mut() {
            c.poll(Duration::ZERO).unwrap();
        }
        let after: Vec<_> = consumers
            .iter()
            .map(|c| (c.generation(), sorted(c.assignment())))
            .collect();
        if before == after && after.iter().all(|(g, _)| g.is_some()) {
            let generations: BTreeSet<_> = after.iter().map(|(g, _)| *g).collect();
            if generations.len() == 1 {
                return;
            }
        }
    }
    panic!("the group did not settle");
}

#[test]
fn a_lone_member_gets_every_partition_and_reads() {
    let f = fixture();
    f.cluster.create_topic(NewTopic::new("t", 3)).unwrap();
    append(&f.cluster, "t", 1, &["a", "b"]);
    let mut c = member(&f, config("g").build().unwrap(), ["t"]);
    let records = c.poll(Duration::ZERO).unwrap();
    assert_eq!(records.count(), 2);
    assert_eq!(sorted(c.assignment()).len(), 3);
    assert_eq!(c.generation(), Some(1));
}

#[test]
fn a_second_member_takes_half_after_a_rebalance() {
    let f = fixture();
    f.cluster.create_topic(NewTopic::new("t", 4)).unwrap();
    let mut a = member(&f, config("g").build().unwrap(), ["t"]);
    a.poll(Duration::ZERO).unwrap();
    assert_eq!(a.assignment().len(), 4);
    let mut b = member(&f, config("g").build().unwrap(), ["t"]);
    settle(&mut [&mut a, &mut b]);
    assert_eq!(a.assignment().len(), 2);
    assert_eq!(b.assignment().len(), 2);
    assert_eq!(a.generation(), Some(2));
    let all: BTreeSet<_> = a.assignment().into_iter().chain(b.assignment()).collect();
    assert_eq!(all.len(), 4);
    let described = f.cluster.describe_group("g").unwrap();
    assert_eq!(described.state, GroupState::Stable);
    assert_eq!(described.generation, 2);
    assert_eq!(described.assignor.as_deref(), Some("range"));
    let members: BTreeSet<&str> = described
        .members
        .iter()
        .map(|m| m.member_id.as_str())
        .collect();
    assert_eq!(
        members,
        BTreeSet::from([a.member_id().unwrap(), b.member_id().unwrap()])
    );
    // Admin changes wait until the group is empty; a dry run answers.
    assert!(matches!(
        f.cluster.delete_group("g").unwrap_err(),
        Error::GroupNotEmpty { .. }
    ));
    let all = [0, 1, 2, 3].map(|p| TopicPartition::new("t", p));
    assert!(matches!(
        f.cluster
            .reset_group_offsets("g", &all, OffsetSpec::Latest)
            .unwrap_err(),
        Error::GroupNotEmpty { .. }
    ));
    let plan = f
        .cluster
        .reset_group_offsets_dry_run("g", &all, OffsetSpec::Latest)
        .unwrap();
    assert_eq!(plan.values().copied().collect::<Vec<_>>(), [0, 0, 0, 0]);
    a.close().unwrap();
    b.close().unwrap();
    assert_eq!(
        f.cluster.describe_group("g").unwrap().state,
        GroupState::Empty
    );
}

/// Records every listener call as (kind, partitions).
#[derive(Debug, Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Call>>>);

/// One listener call: its kind and its partitions, sorted.
type Call = (&'static str, Vec<TopicPartition>);

impl Recorder {
    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl ConsumerRebalanceListener for Recorder {
    fn on_partitions_revoked(&mut self, _: &mut Consumer, p: &[TopicPartition]) {
        self.0.lock().unwrap().push(("revoked", sorted(p.to_vec())));
    }
    fn on_partitions_assigned(&mut self, _: &mut Consumer, p: &[TopicPartition]) {
        self.0
            .lock()
            .unwrap()
            .push(("assigned", sorted(p.to_vec())));
    }
    fn on_partitions_lost(&mut self, _: &mut Consumer, p: &[TopicPartition]) {
        self.0.lock().unwrap().push(("lost", sorted(p.to_vec())));
    }
}

fn tps(topic: &str, partitions: &[u32]) -> Vec<TopicPartition> {
    partitions
        .iter()
        .map(|&p| TopicPartition::new(topic, p))
        .collect()
}

#[test]
fn eager_members_revoke_everything_and_get_a_new_assignment() {
    let f = fixture();
    f.cluster.create_topic(NewTopic::new("t", 2)).unwrap();
    let mut a = Consumer::new(&f.cluster, config("g").build().unwrap()).unwrap();
    let events = Recorder::default();
    a.set_rebalance_listener(events.clone());
    a.subscribe(["t"]).unwrap();
    a.poll(Duration::ZERO).unwrap();
    assert_eq!(events.take(), vec![("assigned", tps("t", &[0, 1]))]);
    let mut b = member(&f, config("g").build().unwrap(), ["t"]);
    settle(&mut [&mut a, &mut b]);
    let calls = events.take();
    assert_eq!(calls[0], ("revoked", tps("t", &[0, 1])));
    assert_eq!(calls[1].0, "assigned");
    assert_eq!(calls[1].1, sorted(a.assignment()));
    assert_eq!(calls.len(), 2);
}

#[test]
fn cooperative_members_keep_what_does_not_move() {
    let f = fixture();
    f.cluster.create_topic(NewTopic::new("t", 4)).unwrap();
    let coop = || strategy("coop", "cooperative-sticky");
    let mut a = Consumer::new(&f.cluster, coop()).unwrap();
    let events = Recorder::default();
    a.set_rebalance_listener(events.clone());
    a.subscribe(["t"]).unwrap();
    a.poll(Duration::ZERO).unwrap();
    assert_eq!(events.take(), vec![("assigned", tps("t", &[0, 1, 2, 3]))]);
    let mut b = member(&f, coop(), ["t"]);
    settle(&mut [&mut a, &mut b]);
    let kept = sorted(a.assignment());
    assert_eq!(kept.len(), 2);
    let moved: Vec<TopicPartition> = tps("t", &[0, 1, 2, 3])
        .into_iter()
        .filter(|tp| !kept.contains(tp))
        .collect();
    let calls = events.take();
    // Only the moving partitions are revoked; nothing new is added to a.
    assert!(calls.contains(&("revoked", moved.clone())), "{calls:?}");
    assert!(
        !calls
            .iter()
            .any(|(k, p)| *k == "revoked" && p.iter().any(|tp| kept.contains(tp))),
        "{calls:?}"
    );
    assert_eq!(sorted(b.assignment()), moved);
    // The follow-up rebalance gave b the moved partitions: two generations
    // after a's first.
    assert_eq!(a.generation(), Some(3));
}

#[test]
fn a_crashed_member_is_removed_after_its_session_times_out() {
    let f = fixture();
    f.cluster.create_topic(NewTopic::new("t", 4)).unwrap();
    let mut a = Consumer::new(&f.cluster, config("g").build().unwrap()).unwrap();
    let mut b = Consumer::new(&f.cluster, config("g").build().unwrap()).unwrap();
    a.subscribe(["t"]).unwrap();
    b.subscribe(["t"]).unwrap();
    settle(&mut [&mut a, &mut b]);
    assert_eq!(a.assignment().len(), 2);
    drop(b); // a crash: no leave
    // Within the session timeout nothing changes.
    for _ in 0..9 {
        f.clock.advance_ms(1_000);
        a.poll(Duration::ZERO).unwrap();
        assert_eq!(a.assignment().len(), 2);
    }
    // Past it, the coordinator removes b and a takes everything.
    f.clock.advance_ms(1_500);
    for _ in 0..3 {
        a.poll(Duration::ZERO).unwrap();
    }
    assert_eq!(sorted(a.assignment()), tps("t", &[0, 1, 2, 3]));
}

#[test]
fn close_leaves_at_once_and_commits() {
    let f = fixture();
    f.cluster.create_topic(NewTopic::new("t", 2)).unwrap();
    let mut a = Consumer::new(&f.cluster, config("g").build().unwrap()).unwrap();
    let mut b = Consumer::new(&f.cluster, config("g").build().unwrap()).unwrap();
    a.subscribe(["t"]).unwrap();
    b.subscribe(["t"]).unwrap();
    settle(&mut [&mut a, &mut b]);
    append(&f.cluster, "t", 0, &["a", "b", "c"]);
    append(&f.cluster, "t", 1, &["d"]);
    let mut read = 0;
    for _ in 0..3 {
        read += b.poll(Duration::ZERO).unwrap().count();
    }
    let b_owned = b.assignment();
    assert_eq!(b_owned.len(), 1);
    b.close().unwrap();
    // The auto-commit at close stored b's positions.
    let committed = f.cluster.list_group_offsets("g").unwrap();
    let expected = if b_owned[0].partition == 0 { 3 } else { 1 };
    assert_eq!(read, expected as usize);
    assert_eq!(committed[&b_owned[0]].offset, expected);
    // No clock movement needed: a takes over at its next polls.
    for _ in 0..3 {
        a.poll(Duration::ZERO).unwrap();
    }
    assert_eq!(sorted(a.assignment()), tps("t", &[0, 1]));
}

#[test]
fn auto_commit_stores_what_poll_returned_every_interval() {
    let f = fixture();
    f.cluster.create_topic(NewTopic::new("t", 1)).unwrap();
    append(&f.cluster, "t", 0, &["a", "b"]);
    let mut c = Consumer::new(
        &f.cluster,
        config("g")
            .auto_commit_interval(Duration::from_millis(5_000))
            .build()
            .unwrap(),
    )
    .unwrap();
    c.subscribe(["t"]).unwrap();
    assert_eq!(c.poll(Duration::ZERO).unwrap().count(), 2);
    let tp = TopicPartition::new("t", 0);
    assert!(!f.cluster.list_group_offsets("g").unwrap().contains_key(&tp));
    f.clock.advance_ms(4_999);
    c.poll(Duration::ZERO).unwrap();
    assert!(!f.cluster.list_group_offsets("g").unwrap().contains_key(&tp));
    f.clock.advance_ms(1);
    c.poll(Duration::ZERO).unwrap();
    assert_eq!(f.cluster.list_group_offsets("g").unwrap()[&tp].offset, 2);
}

#[test]
fn without_auto_commit_nothing_is_committed_implicitly() {
    let f = fixture();
    f.cluster.create_topic(NewTopic::new("t", 1)).unwrap();
    append(&f.cluster, "t", 0, &["a"]);
    let mut c = Consumer::new(
        &f.cluster,
        config("g").enable_auto_commit(false).build().unwrap(),
    )
    .unwrap();
    c.subscribe(["t"]).unwrap();
    assert_eq!(c.poll(Duration::ZERO).unwrap().count(), 1);
    f.clock.advance_ms(9_000);
    c.poll(Duration::ZERO).unwrap();
    c.close().unwrap();
    assert!(f.cluster.list_group_offsets("g").unwrap().is_empty());
}

#[test]
fn a_member_removed_from_its_group_cannot_commit() {
    let f = fixture();
    f.cluster.create_topic(NewTopic::new("t", 2)).unwrap();
    append(&f.cluster, "t", 0, &["a"]);
    append(&f.cluster, "t", 1, &["b"]);
    let mut a = Consumer::new(
        &f.cluster,
        config("g").enable_auto_commit(false).build().unwrap(),
    )
    .unwrap();
    let mut b = Consumer::new(
        &f.cluster,
        config("g").enable_auto_commit(false).build().unwrap(),
    )
    .unwrap();
    a.subscribe(["t"]).unwrap();
    a.poll(Duration::ZERO).unwrap();
    b.subscribe(["t"]).unwrap();
    b.poll(Duration::ZERO).unwrap(); // the group now waits for a to rejoin
    // During the join phase a may still commit for its generation.
    a.commit_sync().unwrap();
    // a never rejoins; past the rebalance timeout (max.poll.interval.ms)
    // the coordinator drops it. b keeps calling in, so its session lives.
    for _ in 0..61 {
        f.clock.advance_ms(1_000);
        b.poll(Duration::ZERO).unwrap();
    }
    b.poll(Duration::ZERO).unwrap();
    assert_eq!(sorted(b.assignment()), tps("t", &[0, 1]));
    let err = a.commit_sync().unwrap_err();
    assert!(matches!(err, Error::CommitFailed { .. }), "{err}");
}

#[test]
fn a_static_member_restarting_within_its_session_keeps_its_partitions() {
    let f = fixture();
    f.cluster.create_topic(NewTopic::new("t", 4)).unwrap();
    let stat = |id: &str| config("g").group_instance_id(id).build().unwrap();
    let mut a = Consumer::new(&f.cluster, stat("worker-a")).unwrap();
    let mut b = Consumer::new(&f.cluster, stat("worker-b")).unwrap();
    a.subscribe(["t"]).unwrap();
    b.subscribe(["t"]).unwrap();
    settle(&mut [&mut a, &mut b]);
    let (a_owned, generation) = (sorted(a.assignment()), a.generation());
    a.close().unwrap(); // static: no leave
    f.clock.advance_ms(5_000);
    b.poll(Duration::ZERO).unwrap();
    let mut a2 = member(&f, stat("worker-a"), ["t"]);
    a2.poll(Duration::ZERO).unwrap();
    assert_eq!(sorted(a2.assignment()), a_owned);
    assert_eq!(a2.generation(), generation, "no rebalance");
    b.poll(Duration::ZERO).unwrap();
    assert_eq!(b.generation(), generation);
}

#[test]
fn a_second_consumer_with_the_same_instance_id_fences_the_first() {
    let f = fixture();
    f.cluster.create_topic(NewTopic::new("t", 2)).unwrap();
    let stat = || config("g").group_instance_id("w").build().unwrap();
    let mut a = member(&f, stat(), ["t"]);
    a.poll(Duration::ZERO).unwrap();
    let mut a2 = member(&f, stat(), ["t"]);
    a2.poll(Duration::ZERO).unwrap();
    assert_eq!(a2.assignment().len(), 2);
    let err = a.poll(Duration::ZERO).unwrap_err();
    assert!(matches!(err, Error::FencedInstanceId { .. }), "{err}");
}

#[test]
fn a_pattern_picks_up_topics_created_later() {
    let f = fixture();
    f.cluster
        .create_topic(NewTopic::new("orders-eu", 1))
        .unwrap();
    f.cluster
        .create_topic(NewTopic::new("payments", 1))
        .unwrap();
    let mut c = Consumer::new(&f.cluster, config("g").build().unwrap()).unwrap();
    c.subscribe_pattern("orders-.*").unwrap();
    c.poll(Duration::ZERO).unwrap();
    assert_eq!(c.assignment(), tps("orders-eu", &[0]));
    f.cluster
        .create_topic(NewTopic::new("orders-us", 2))
        .unwrap();
    append(&f.cluster, "orders-us", 1, &["x"]);
    let mut got = 0;
    for _ in 0..3 {
        got += c.poll(Duration::ZERO).unwrap().count();
    }
    assert_eq!(got, 1);
    assert_eq!(
        c.subscription(),
        vec!["orders-eu".to_string(), "orders-us".to_string()]
    );
    assert_eq!(c.assignment().len(), 3);
    assert!(matches!(
        c.subscribe_pattern("orders-(").unwrap_err(),
        Error::InvalidArgument(_)
    ));
}

#[test]
fn added_partitions_are_assigned() {
    let f = fixture();
    f.cluster.create_topic(NewTopic::new("t", 1)).unwrap();
    let mut a = Consumer::new(&f.cluster, config("g").build().unwrap()).unwrap();
    let mut b = Consumer::new(&f.cluster, config("g").build().unwrap()).unwrap();
    a.subscribe(["t"]).unwrap();
    b.subscribe(["t"]).unwrap();
    settle(&mut [&mut a, &mut b]);
    assert_eq!(a.assignment().len() + b.assignment().len(), 1);
    f.cluster.create_partitions("t", 4).unwrap();
    settle(&mut [&mut a, &mut b]);
    assert_eq!(a.assignment().len(), 2);
    assert_eq!(b.assignment().len(), 2);
}

#[test]
fn a_waiting_poll_wakes_when_a_new_subscribed_topic_gets_records() {
    let f = fixture();
    let mut c = member(&f, config("g").build().unwrap(), ["later"]);
    assert!(c.poll(Duration::ZERO).unwrap().is_empty());
    assert!(c.assignment().is_empty());
    let cluster = f.cluster.clone();
    let producer = std::thread::spawn(move || {
        cluster.create_topic(NewTopic::new("later", 1)).unwrap();
        append(&cluster, "later", 0, &["hello"]);
    });
    // With a manual clock this poll can only return because records came.
    let mut got = 0;
    while got == 0 {
        got += c.poll(Duration::from_secs(1)).unwrap().count();
    }
    producer.join().unwrap();
    assert_eq!(got, 1);
}

#[test]
fn commit_async_callbacks_run_in_order_at_the_next_poll() {
    let f = fixture();
    f.cluster.create_topic(NewTopic::new("t", 1)).unwrap();
    append(&f.cluster, "t", 0, &["a", "b"]);
    let mut c = Consumer::new(
        &f.cluster,
        config("g").enable_auto_commit(false).build().unwrap(),
    )
    .unwrap();
    c.subscribe(["t"]).unwrap();
    c.poll(Duration::ZERO).unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    for i in 0..3 {
        let order = order.clone();
        c.commit_async(move |offsets, result| {
            result.unwrap();
            order
                .lock()
                .unwrap()
                .push((i, offsets.values().next().unwrap().offset));
        });
    }
    assert!(
        order.lock().unwrap().is_empty(),
        "callbacks wait for the next poll"
    );
    c.poll(Duration::ZERO).unwrap();
    assert_eq!(*order.lock().unwrap(), vec![(0, 2), (1, 2), (2, 2)]);
}

#[test]
fn a_group_resumes_from_its_commits_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let open = || {
        Cluster::open(
            dir.path(),
            ClusterConfig::builder()
                .clock(Arc::new(clock.clone()))
                .build()
                .unwrap(),
        )
        .unwrap()
    };
    let cluster = open();
    cluster.create_topic(NewTopic::new("t", 2)).unwrap();
    append(&cluster, "t", 0, &["a", "b", "c"]);
    append(&cluster, "t", 1, &["d"]);
    let mut c = Consumer::new(&cluster, config("g").build().unwrap()).unwrap();
    c.subscribe(["t"]).unwrap();
    let mut first: Vec<String> = Vec::new();
    while first.len() < 4 {
        for r in c.poll(Duration::ZERO).unwrap().iter() {
            first.push(String::from_utf8(r.value().unwrap().to_vec()).unwrap());
        }
    }
    c.close().unwrap();
    append(&cluster, "t", 1, &["e"]);
    cluster.close().unwrap();

    let cluster = open();
    let mut c = Consumer::new(&cluster, config("g").build().unwrap()).unwrap();
    c.subscribe(["t"]).unwrap();
    let mut second = Vec::new();
    for _ in 0..3 {
        for r in c.poll(Duration::ZERO).unwrap().iter() {
            second.push(String::from_utf8(r.value().unwrap().to_vec()).unwrap());
        }
    }
    assert_eq!(second, vec!["e".to_string()]);
}

#[test]
fn misuse_is_refused_without_changing_anything() {
    let f = fixture();
    f.cluster.create_topic(NewTopic::new("t", 1)).unwrap();
    let mut no_group = Consumer::new(&f.cluster, ConsumerConfig::default()).unwrap();
    assert!(matches!(
        no_group.subscribe(["t"]).unwrap_err(),
        Error::IllegalState(_)
    ));
    let mut c = Consumer::new(&f.cluster, config("g").build().unwrap()).unwrap();
    c.assign(&tps("t", &[0])).unwrap();
    assert!(matches!(
        c.subscribe(["t"]).unwrap_err(),
        Error::IllegalState(_)
    ));
    assert_eq!(c.assignment(), tps("t", &[0]));
    c.unsubscribe();
    c.subscribe(["t"]).unwrap();
    assert!(matches!(
        c.assign(&tps("t", &[0])).unwrap_err(),
        Error::IllegalState(_)
    ));
    assert!(matches!(
        c.subscribe(["bad name!"]).unwrap_err(),
        Error::InvalidTopic { .. }
    ));
    assert_eq!(c.subscription(), vec!["t".to_string()]);
    let bad = ConsumerConfig::builder()
        .session_timeout(Duration::from_millis(1_000))
        .heartbeat_interval(Duration::from_millis(1_000))
        .build()
        .unwrap_err();
    assert!(bad.to_string().contains("heartbeat.interval.ms"));
    let unknown = ConsumerConfig::builder()
        .partition_assignment_strategy(["fastest"])
        .build()
        .unwrap_err();
    assert!(
        unknown
            .to_string()
            .contains("partition.assignment.strategy")
    );
}

/// Polls from inside a listener, which Kafka forbids too.
struct Reentrant(Arc<Mutex<Option<Error>>>);

impl ConsumerRebalanceListener for Reentrant {
    fn on_partitions_assigned(&mut self, c: &mut Consumer, _: &[TopicPartition]) {
        *self.0.lock().unwrap() = c.poll(Duration::ZERO).err();
    }
}

#[test]
fn poll_inside_a_listener_is_refused() {
    let f = fixture();
    f.cluster.create_topic(NewTopic::new("t", 1)).unwrap();
    let mut c = Consumer::new(&f.cluster, config("g").build().unwrap()).unwrap();
    let seen = Arc::new(Mutex::new(None));
    c.set_rebalance_listener(Reentrant(seen.clone()));
    c.subscribe(["t"]).unwrap();
    c.poll(Duration::ZERO).unwrap();
    assert!(matches!(
        *seen.lock().unwrap(),
        Some(Error::IllegalState(_))
    ));
}

#[test]
fn a_session_timeout_below_the_cluster_minimum_is_refused_at_join() {
    let f = fixture();
    f.cluster.create_topic(NewTopic::new("t", 1)).unwrap();
    let config = ConsumerConfig::builder()
        .group_id("g")
        .session_timeout(Duration::from_millis(1_000))
        .heartbeat_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    let mut c = member(&f, config, ["t"]);
    let err = c.poll(Duration::ZERO).unwrap_err();
    assert!(
        err.to_string().contains("group.min.session.timeout.ms"),
        "{err}"
    );
}

/// Gives every partition to the member with the largest id.
#[derive(Debug)]
struct AllToLast;

impl logbus::Assignor for AllToLast {
    fn name(&self) -> &str {
        "all-to-last"
    }

    fn assign(
        &self,
        partitions_per_topic: &std::collections::BTreeMap<String, u32>,
        members: &std::collections::BTreeMap<String, logbus::Subscription>,
    ) -> std::collections::BTreeMap<String, Vec<TopicPartition>> {
        let mut out: std::collections::BTreeMap<String, Vec<TopicPartition>> =
            members.keys().map(|m| (m.clone(), Vec::new())).collect();
        if let Some((last, sub)) = members.iter().next_back() {
            for (topic, &count) in partitions_per_topic {
                if sub.subscribes_to(topic) {
                    out.get_mut(last)
                        .unwrap()
                        .extend((0..count).map(|p| TopicPartition::new(topic, p)));
                }
            }
        }
        out
    }
}

#[test]
fn a_custom_assignor_decides_the_assignment() {
    let f = fixture();
    f.cluster.create_topic(NewTopic::new("t", 3)).unwrap();
    let custom = || {
        config("g")
            .assignors(vec![Arc::new(AllToLast)])
            .build()
            .unwrap()
    };
    let mut a = Consumer::new(&f.cluster, custom()).unwrap();
    let mut b = Consumer::new(&f.cluster, custom()).unwrap();
    a.subscribe(["t"]).unwrap();
    b.subscribe(["t"]).unwrap();
    settle(&mut [&mut a, &mut b]);
    let (last, first) = if a.member_id() > b.member_id() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert_eq!(last.assignment().len(), 3);
    assert!(first.assignment().is_empty());
    assert_eq!(
        f.cluster.describe_group("g").unwrap().assignor.as_deref(),
        Some("all-to-last")
    );
    // A member offering no assignor the group uses is refused.
    let mut range = member(&f, config("g").build().unwrap(), ["t"]);
    let err = range.poll(Duration::ZERO).unwrap_err();
    assert!(
        matches!(err, Error::InconsistentGroupProtocol { .. }),
        "{err}"
    );
}

#[test]
fn a_cooperative_follower_rejoins_in_the_same_poll_after_revoking() {
    let f = fixture();
    f.cluster.create_topic(NewTopic::new("x", 1)).unwrap();
    f.cluster.create_topic(NewTopic::new("t", 2)).unwrap();
    let coop = |id: &str| strategy(id, "cooperative-sticky");
    // a (the leader) reads x only; b reads t and owns both its partitions.
    let mut a = member(&f, coop("a"), ["x"]);
    a.poll(Duration::ZERO).unwrap();
    let mut b = member(&f, coop("b"), ["t"]);
    settle(&mut [&mut a, &mut b]);
    assert_eq!(b.assignment().len(), 2);
    // c joins for t: b, a follower, must give one partition up.
    let mut c = member(&f, coop("c"), ["t"]);
    c.poll(Duration::ZERO).unwrap();
    b.poll(Duration::ZERO).unwrap(); // rejoins: pending
    a.poll(Duration::ZERO).unwrap(); // completes the join, syncs
    // One poll: b syncs, revokes one partition and rejoins at once; no
    // wake-up would come for a second try.
    b.poll(Duration::ZERO).unwrap();
    assert_eq!(b.assignment().len(), 1);
    for _ in 0..3 {
        a.poll(Duration::ZERO).unwrap();
        c.poll(Duration::ZERO).unwrap();
    }
    assert_eq!(
        c.assignment().len(),
        1,
        "the revoked partition found its owner"
    );
}

#[test]
fn a_fenced_static_member_stays_fenced() {
    let f = fixture();
    f.cluster.create_topic(NewTopic::new("t", 2)).unwrap();
    let stat = || config("g").group_instance_id("w").build().unwrap();
    let mut a = member(&f, stat(), ["t"]);
    a.poll(Duration::ZERO).unwrap();
    let mut a2 = member(&f, stat(), ["t"]);
    a2.poll(Duration::ZERO).unwrap();
    for _ in 0..3 {
        let err = a.poll(Duration::ZERO).unwrap_err();
        assert!(matches!(err, Error::FencedInstanceId { .. }), "{err}");
        assert!(a.assignment().is_empty());
    }
    assert!(matches!(
        a.commit_sync().unwrap_err(),
        Error::FencedInstanceId { .. }
    ));
    a2.poll(Duration::ZERO).unwrap();
    assert_eq!(a2.assignment().len(), 2, "the new process keeps its place");
}

#[test]
fn unsubscribe_from_a_listener_ends_the_subscription_after_the_step() {
    struct Quit;
    impl ConsumerRebalanceListener for Quit {
        fn on_partitions_revoked(&mut self, c: &mut Consumer, _: &[TopicPartition]) {
            c.unsubscribe();
        }
    }
    let f = fixture();
    f.cluster.create_topic(NewTopic::new("t", 2)).unwrap();
    let mut a = Consumer::new(&f.cluster, config("g").build().unwrap()).unwrap();
    a.set_rebalance_listener(Quit);
    a.subscribe(["t"]).unwrap();
    a.poll(Duration::ZERO).unwrap();
    let mut b = member(&f, config("g").build().unwrap(), ["t"]);
    b.poll(Duration::ZERO).unwrap();
    // a sees the rebalance and revokes; its listener unsubscribes.
    assert!(a.poll(Duration::ZERO).unwrap().is_empty());
    assert!(a.subscription().is_empty());
    assert!(a.assignment().is_empty());
    for _ in 0..3 {
        b.poll(Duration::ZERO).unwrap();
    }
    assert_eq!(b.assignment().len(), 2);
}

#[test]
fn the_sticky_assignor_is_sticky_in_a_group() {
    let f = fixture();
    f.cluster.create_topic(NewTopic::new("t", 6)).unwrap();
    let sticky = |id: &str| strategy(id, "sticky");
    let mut a = member(&f, sticky("a"), ["t"]);
    a.poll(Duration::ZERO).unwrap();
    let mut b = member(&f, sticky("b"), ["t"]);
    settle(&mut [&mut a, &mut b]);
    let (a1, b1) = (sorted(a.assignment()), sorted(b.assignment()));
    let mut c = member(&f, sticky("c"), ["t"]);
    settle(&mut [&mut a, &mut b, &mut c]);
    // Eager members revoke everything, yet tell the assignor what they
    // owned: each keeps two of its three.
    let kept_a = a.assignment().iter().filter(|tp| a1.contains(tp)).count();
    let kept_b = b.assignment().iter().filter(|tp| b1.contains(tp)).count();
    assert_eq!((kept_a, kept_b), (2, 2));
}

#[test]
fn a_topic_deleted_and_created_again_is_read_again() {
    let f = fixture();
    f.cluster.create_topic(NewTopic::new("t", 1)).unwrap();
    let mut c = member(&f, config("g").build().unwrap(), ["t"]);
    c.poll(Duration::ZERO).unwrap();
    f.cluster.delete_topic("t").unwrap();
    f.cluster.create_topic(NewTopic::new("t", 1)).unwrap();
    append(&f.cluster, "t", 0, &["a", "b"]);
    let mut n = 0;
    for _ in 0..5 {
        n += c.poll(Duration::ZERO).unwrap().count();
    }
    assert_eq!(n, 2);
}

#[test]
fn a_commit_while_waiting_for_the_new_assignment_is_retriable() {
    let f = fixture();
    f.cluster.create_topic(NewTopic::new("t", 2)).unwrap();
    append(&f.cluster, "t", 0, &["a"]);
    append(&f.cluster, "t", 1, &["b"]);
    let coop = |id: &str| strategy(id, "cooperative-sticky");
    let mut a = member(&f, coop("a"), ["t"]);
    a.poll(Duration::ZERO).unwrap();
    let mut b = member(&f, coop("b"), ["t"]);
    settle(&mut [&mut a, &mut b]);
    let mut c = member(&f, coop("c"), ["t"]);
    c.poll(Duration::ZERO).unwrap();
    c.poll(Duration::ZERO).unwrap();
    a.poll(Duration::ZERO).unwrap(); // the leader rejoins: pending
    b.poll(Duration::ZERO).unwrap(); // the last to join: waits for the sync
    assert_eq!(
        f.cluster.describe_group("g").unwrap().state,
        GroupState::CompletingRebalance
    );
    let err = b.commit_sync().unwrap_err();
    assert!(matches!(err, Error::RebalanceInProgress { .. }), "{err}");
    assert!(err.is_retriable());
    // Once the rebalance is over the same call goes through.
    for _ in 0..3 {
        a.poll(Duration::ZERO).unwrap();
        b.poll(Duration::ZERO).unwrap();
        c.poll(Duration::ZERO).unwrap();
    }
    b.commit_sync().unwrap();
}

#[test]
fn cooperative_members_keep_reading_while_the_group_rebalances() {
    let f = fixture();
    f.cluster.create_topic(NewTopic::new("t", 4)).unwrap();
    let coop = || strategy("coop", "cooperative-sticky");
    let mut a = Consumer::new(&f.cluster, coop()).unwrap();
    let mut b = Consumer::new(&f.cluster, coop()).unwrap();
    a.subscribe(["t"]).unwrap();
    b.subscribe(["t"]).unwrap();
    settle(&mut [&mut a, &mut b]);
    let owned = a.assignment();
    assert_eq!(owned.len(), 2);
    let mut c = member(&f, coop(), ["t"]);
    c.poll(Duration::ZERO).unwrap(); // the group waits for a and b
    for tp in &owned {
        append(&f.cluster, "t", tp.partition, &["x"]);
    }
    // a rejoins and waits for b, yet reads the partitions it still owns.
    let got = a.poll(Duration::ZERO).unwrap().count();
    assert_eq!(a.generation(), None, "a is mid-rebalance");
    assert_eq!(got, 2);
}
