//! Waiting polls: wake-up on appends, timeouts on the cluster's clock,
//! fetch.min.bytes with fetch.max.wait.ms, and a topic deleted (or the
//! cluster closed) under a waiting poll.
//!
//! No test sleeps. The cluster runs on a [`ManualClock`] wrapped in a clock
//! that reports every `wait_hint` call, which a poll makes right before it
//! blocks: the test thread acts only once the poll is known to be waiting.

use std::sync::Arc;
use std::thread::{self, JoinHandle, ThreadId};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use logbus::format::BatchBuilder;
use logbus::{
    Clock, Cluster, ClusterConfig, Compression, Consumer, ConsumerConfig, ConsumerRecords, Error,
    ManualClock, NewTopic, OffsetReset, Partition, Result, TopicPartition,
};

const START: i64 = 1_000_000;

/// A manual clock that reports each `wait_hint` (caller thread, deadline).
#[derive(Debug)]
struct ReportingClock {
    clock: ManualClock,
    waits: Sender<(ThreadId, i64)>,
}

impl Clock for ReportingClock {
    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn wait_hint(&self, deadline_ms: i64) -> Option<Duration> {
        let _ = self.waits.send((thread::current().id(), deadline_ms));
        self.clock.wait_hint(deadline_ms)
    }

    fn subscribe(&self) -> Receiver<()> {
        self.clock.subscribe()
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    cluster: Cluster,
    clock: ManualClock,
    waits: Receiver<(ThreadId, i64)>,
    partition: Partition,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START);
    let (tx, waits) = crossbeam_channel::unbounded();
    let config = ClusterConfig::builder()
        .clock(Arc::new(ReportingClock {
            clock: clock.clone(),
            waits: tx,
        }))
        .build()
        .unwrap();
    let cluster = Cluster::open(dir.path(), config).unwrap();
    let partition = cluster
        .create_topic(NewTopic::new("t", 1))
        .unwrap()
        .partition(0)
        .unwrap();
    Fixture {
        _dir: dir,
        cluster,
        clock,
        waits,
        partition,
    }
}

fn append(partition: &Partition, values: &[&[u8]]) {
    let mut batch = BatchBuilder::new(Compression::None);
    for v in values {
        batch.append(START, None, Some(v), &[]);
    }
    partition
        .append(&mut batch.build().unwrap().to_vec())
        .unwrap();
}

fn consumer(cluster: &Cluster, config: ConsumerConfig) -> Consumer {
    let mut c = Consumer::new(cluster, config).unwrap();
    c.assign(&[TopicPartition::new("t", 0)]).unwrap();
    c
}

/// Runs one poll with `timeout` on another thread.
fn spawn_poll(
    mut consumer: Consumer,
    timeout: Duration,
) -> JoinHandle<(Consumer, Result<ConsumerRecords>)> {
    thread::spawn(move || {
        let result = consumer.poll(timeout);
        (consumer, result)
    })
}

impl Fixture {
    /// Blocks until `poller` is about to wait; returns its deadline.
    fn next_wait(&self, poller: ThreadId) -> i64 {
        loop {
            let (thread, deadline) = self
                .waits
                .recv_timeout(Duration::from_secs(30))
                .expect("the poll never waited");
            if thread == poller {
                return deadline;
            }
        }
    }
}

fn values(records: &ConsumerRecords) -> Vec<Vec<u8>> {
    records
        .iter()
        .map(|r| r.value().unwrap().to_vec())
        .collect()
}

#[test]
fn a_waiting_poll_wakes_for_an_append() {
    let f = fixture();
    let mut c = consumer(&f.cluster, ConsumerConfig::default());
    // Position at the (empty) log end first, as auto.offset.reset=latest.
    assert_eq!(c.position(&TopicPartition::new("t", 0)).unwrap(), 0);
    for round in 0..20u8 {
        let handle = spawn_poll(c, Duration::from_secs(3600));
        let deadline = f.next_wait(handle.thread().id());
        assert_eq!(deadline, START + 3_600_000);
        append(&f.partition, &[&[round], &[round, 1]]);
        let (back, result) = handle.join().unwrap();
        c = back;
        let records = result.unwrap();
        assert_eq!(values(&records), [vec![round], vec![round, 1]]);
        assert_eq!(
            records.iter().next().unwrap().offset(),
            u64::from(round) * 2
        );
    }
    // The clock never moved: every poll was woken by its append.
    assert_eq!(f.clock.now_ms(), START);
}

#[test]
fn a_poll_times_out_only_once_the_clock_passes_its_deadline() {
    let f = fixture();
    let c = consumer(&f.cluster, ConsumerConfig::default());
    let handle = spawn_poll(c, Duration::from_millis(1000));
    let poller = handle.thread().id();
    assert_eq!(f.next_wait(poller), START + 1000);
    f.clock.advance_ms(999);
    // Woken by the clock, still before the deadline: it waits again.
    assert_eq!(f.next_wait(poller), START + 1000);
    f.clock.advance_ms(1);
    let (_, result) = handle.join().unwrap();
    assert!(result.unwrap().is_empty());
}

#[test]
fn a_zero_timeout_never_waits() {
    let f = fixture();
    let mut c = consumer(&f.cluster, ConsumerConfig::default());
    assert!(c.poll(Duration::ZERO).unwrap().is_empty());
    append(&f.partition, &[b"x"]);
    assert_eq!(values(&c.poll(Duration::ZERO).unwrap()), [b"x".to_vec()]);
    let me = thread::current().id();
    assert!(
        f.waits.try_iter().all(|(thread, _)| thread != me),
        "a zero-timeout poll waited"
    );
}

#[test]
fn fetch_min_bytes_holds_data_back_for_at_most_fetch_max_wait() {
    let f = fixture();
    let config = ConsumerConfig::builder()
        .fetch_min_bytes(1000)
        .fetch_max_wait(Duration::from_millis(500))
        .auto_offset_reset(OffsetReset::Earliest)
        .build()
        .unwrap();
    let c = consumer(&f.cluster, config);
    let handle = spawn_poll(c, Duration::from_secs(60));
    let poller = handle.thread().id();
    assert_eq!(f.next_wait(poller), START + 60_000);
    f.clock.advance_ms(100);
    assert_eq!(f.next_wait(poller), START + 60_000);
    // A small batch: below fetch.min.bytes, so the poll now waits at most
    // fetch.max.wait.ms for more.
    append(&f.partition, &[b"small"]);
    assert_eq!(f.next_wait(poller), START + 100 + 500);
    f.clock.advance_ms(499);
    assert_eq!(f.next_wait(poller), START + 600);
    f.clock.advance_ms(1);
    let (c, result) = handle.join().unwrap();
    assert_eq!(values(&result.unwrap()), [b"small".to_vec()]);

    // Enough bytes arrive together: returned at once, with no clock move.
    let handle = spawn_poll(c, Duration::from_secs(60));
    let poller = handle.thread().id();
    f.next_wait(poller);
    append(&f.partition, &[b"a"]);
    f.next_wait(poller);
    append(&f.partition, &[&[7u8; 1200][..]]);
    let (_, result) = handle.join().unwrap();
    let records = result.unwrap();
    assert_eq!(values(&records), [b"a".to_vec(), vec![7u8; 1200]]);
    assert_eq!(f.clock.now_ms(), START + 600);
}

#[test]
fn deleting_the_topic_wakes_a_waiting_poll_with_unknown_topic() {
    let f = fixture();
    let c = consumer(&f.cluster, ConsumerConfig::default());
    let handle = spawn_poll(c, Duration::from_secs(3600));
    f.next_wait(handle.thread().id());
    f.cluster.delete_topic("t").unwrap();
    let (mut c, result) = handle.join().unwrap();
    let err = result.unwrap_err();
    assert!(
        matches!(&err, Error::UnknownTopicOrPartition { topic, partition: Some(0) } if topic == "t"),
        "{err}"
    );
    // And every later poll says the same, without waiting.
    assert!(matches!(
        c.poll(Duration::from_secs(3600)),
        Err(Error::UnknownTopicOrPartition { .. })
    ));
    // A topic re-created under the name is a new topic: assigning it again
    // reads the new one from a new position.
    let partition = f
        .cluster
        .create_topic(NewTopic::new("t", 1))
        .unwrap()
        .partition(0)
        .unwrap();
    append(&partition, &[b"new"]);
    c.assign(&[TopicPartition::new("t", 0)]).unwrap();
    c.seek_to_beginning(&[]).unwrap();
    assert_eq!(values(&c.poll(Duration::ZERO).unwrap()), [b"new".to_vec()]);
}

#[test]
fn closing_the_cluster_wakes_a_waiting_poll() {
    let f = fixture();
    let c = consumer(&f.cluster, ConsumerConfig::default());
    let handle = spawn_poll(c, Duration::from_secs(3600));
    f.next_wait(handle.thread().id());
    f.cluster.close().unwrap();
    let (_, result) = handle.join().unwrap();
    assert!(matches!(result, Err(Error::Closed(_))));
}

#[test]
fn consumer_is_send() {
    fn send<T: Send>() {}
    send::<Consumer>();
    send::<ConsumerRecords>();
}
