//! Consumer groups end to end: subscribe, rebalances, listeners, commits,
//! timeouts — every timeout driven by a ManualClock.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use logbus::format::BatchBuilder;
use logbus::{
    Cluster, ClusterConfig, Compression, Consumer, ConsumerConfig, ConsumerRebalanceListener,
    Error, GroupState, ManualClock, NewTopic, OffsetReset, TopicPartition,
};

const T0: i64 = 1_700_000_000_000;

struct Fixture {
    _dir: tempfile::TempDir,
    clock: ManualClock,
    cluster: Cluster,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let config = ClusterConfig::builder()
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let cluster = Cluster::open(dir.path(), config).unwrap();
    Fixture {
        _dir: dir,
        clock,
        cluster,
    }
}

fn config(group: &str) -> logbus::ConsumerConfigBuilder {
    ConsumerConfig::builder()
        .group_id(group)
        .auto_offset_reset(OffsetReset::Earliest)
        .session_timeout_ms(10_000)
        .heartbeat_interval_ms(1_000)
        .max_poll_interval_ms(60_000)
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
    let mut c = Consumer::new(&f.cluster, config("g").build().unwrap()).unwrap();
    c.subscribe(["t"]).unwrap();
    let records = c.poll(Duration::ZERO).unwrap();
    assert_eq!(records.count(), 2);
    assert_eq!(sorted(c.assignment()).len(), 3);
    assert_eq!(c.generation(), Some(1));
}

#[test]
fn a_second_member_takes_half_after_a_rebalance() {
    let f = fixture();
    f.cluster.create_topic(NewTopic::new("t", 4)).unwrap();
    let mut a = Consumer::new(&f.cluster, config("g").build().unwrap()).unwrap();
    a.subscribe(["t"]).unwrap();
    a.poll(Duration::ZERO).unwrap();
    assert_eq!(a.assignment().len(), 4);
    let mut b = Consumer::new(&f.cluster, config("g").build().unwrap()).unwrap();
    b.subscribe(["t"]).unwrap();
    settle(&mut [&mut a, &mut b]);
    assert_eq!(a.assignment().len(), 2);
    assert_eq!(b.assignment().len(), 2);
    assert_eq!(a.generation(), Some(2));
    let all: BTreeSet<_> = a.assignment().into_iter().chain(b.assignment()).collect();
    assert_eq!(all.len(), 4);
    let _ = f.clock;
}
