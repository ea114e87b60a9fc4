//! Closing a cluster first delivers what its live producers hold, then
//! closes the logs: nothing a producer accepted is dropped. Consumers close
//! before the cluster, or their last positions are not committed.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use logbus::{
    Acks, Cluster, ClusterConfig, Error, ManualClock, NewTopic, Producer, ProducerConfig,
    ProducerRecord,
};

fn open(dir: &Path, clock: &ManualClock) -> Cluster {
    let config = ClusterConfig::builder()
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    Cluster::open(dir, config).unwrap()
}

/// Producers that hold everything until a flush: an hour of `linger.ms`
/// on a clock that never moves, batches larger than what is sent.
fn lingering(cluster: &Cluster) -> Producer {
    let config = ProducerConfig::builder()
        .acks(Acks::Leader)
        .linger(Duration::from_millis(3_600_000))
        .batch_size(4 << 20)
        .build()
        .unwrap();
    Producer::new(cluster, config).unwrap()
}

/// Every record value in `topic`, partition by partition.
fn stored(cluster: &Cluster, topic: &str) -> Vec<String> {
    let topic = cluster.topic(topic).unwrap();
    let mut out = Vec::new();
    for p in topic.partitions().unwrap() {
        let read = p.read(0, 64 << 20).unwrap();
        for batch in read.batches() {
            for record in batch.unwrap().records().unwrap() {
                let record = record.unwrap();
                out.push(String::from_utf8(record.value().unwrap().to_vec()).unwrap());
            }
        }
    }
    out.sort();
    out
}

/// The scenario: 1,000 records lingering in a live producer (and
/// more in a second one) when the cluster closes.
#[test]
fn closing_the_cluster_delivers_what_live_producers_hold() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let cluster = open(dir.path(), &clock);
    cluster.create_topic(NewTopic::new("orders", 3)).unwrap();
    cluster.create_topic(NewTopic::new("audit", 1)).unwrap();
    let producer = lingering(&cluster);
    let other = lingering(&cluster);
    let handles: Vec<_> = (0..1000)
        .map(|i| {
            producer
                .send(ProducerRecord::new("orders", format!("v{i:04}")).with_key(format!("k{i}")))
                .unwrap()
        })
        .collect();
    let called = Arc::new(AtomicUsize::new(0));
    for i in 0..10 {
        let called = called.clone();
        other
            .send_with_callback(ProducerRecord::new("audit", format!("a{i}")), move |r| {
                assert!(r.is_ok(), "{r:?}");
                called.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
    }
    assert!(handles.iter().all(|h| !h.is_done()), "still lingering");

    cluster.close().unwrap();

    // Every handle completed with its offset; every callback ran.
    let mut offsets = [0u64; 3];
    for handle in handles {
        let metadata = handle.wait().unwrap();
        let slot = &mut offsets[metadata.partition() as usize];
        assert_eq!(
            metadata.offset(),
            Some(*slot),
            "offsets are dense per partition"
        );
        *slot += 1;
    }
    assert_eq!(offsets.iter().sum::<u64>(), 1000);
    assert_eq!(called.load(Ordering::SeqCst), 10);
    // The producers outlive the cluster, but take nothing more.
    for p in [&producer, &other] {
        assert!(matches!(
            p.send(ProducerRecord::new("orders", "late")).unwrap_err(),
            Error::Closed("cluster")
        ));
    }
    assert!(matches!(
        Producer::new(&cluster, ProducerConfig::default()).unwrap_err(),
        Error::Closed(_)
    ));
    producer.close().unwrap();
    drop((producer, other, cluster));

    let cluster = open(dir.path(), &clock);
    let expected: Vec<String> = (0..1000).map(|i| format!("v{i:04}")).collect();
    assert_eq!(stored(&cluster, "orders"), expected);
    let audit: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
    assert_eq!(stored(&cluster, "audit"), audit);
}

/// A producer callback may close the cluster: the close cannot wait for
/// that producer's sender (it is the caller) but does not deadlock, and
/// it still delivers what other producers hold.
#[test]
fn a_close_from_a_producer_callback_returns() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let cluster = open(dir.path(), &clock);
    cluster.create_topic(NewTopic::new("t", 1)).unwrap();
    let closer = lingering(&cluster);
    let bystander = lingering(&cluster);
    let held = bystander.send(ProducerRecord::new("t", "held")).unwrap();
    let (tx, rx) = crossbeam_channel::bounded(1);
    let in_callback = cluster.clone();
    closer
        .send_with_callback(ProducerRecord::new("t", "first"), move |r| {
            assert!(r.is_ok());
            tx.send(in_callback.close()).unwrap();
        })
        .unwrap();
    closer.flush().unwrap();
    rx.recv().unwrap().unwrap();
    assert!(matches!(cluster.topic("t").unwrap_err(), Error::Closed(_)));
    assert_eq!(held.wait().unwrap().offset(), Some(1));
    drop((closer, bystander, cluster));
    let cluster = open(dir.path(), &clock);
    assert_eq!(stored(&cluster, "t"), ["first", "held"]);
}

/// A group consumer: earliest, auto commit on (its interval never passes
/// on the manual clock, so only `close` commits).
fn member(cluster: &Cluster) -> logbus::Consumer {
    let config = logbus::ConsumerConfig::builder()
        .group_id("g")
        .auto_offset_reset(logbus::OffsetReset::Earliest)
        .build()
        .unwrap();
    let mut consumer = logbus::Consumer::new(cluster, config).unwrap();
    consumer.subscribe(["orders"]).unwrap();
    consumer
}

/// Polls until the consumer has seen `n` records (each poll is also a step
/// of the group protocol).
fn poll_values(consumer: &mut logbus::Consumer, n: usize) -> Vec<String> {
    let mut values = Vec::new();
    for _ in 0..20 {
        for record in &consumer.poll(Duration::ZERO).unwrap() {
            values.push(String::from_utf8(record.value().unwrap().to_vec()).unwrap());
        }
        if values.len() >= n {
            break;
        }
    }
    values
}

/// The shutdown order the README gives: consumers, then producers, then the
/// cluster. Closed the other way round, a consumer's final commit fails
/// with `Closed` and what it polled is delivered again after a reopen
/// (at least once, never lost).
#[test]
fn consumers_close_before_the_cluster_or_their_last_positions_are_not_committed() {
    for consumer_first in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_700_000_000_000);
        let cluster = open(dir.path(), &clock);
        cluster.create_topic(NewTopic::new("orders", 1)).unwrap();
        let producer = lingering(&cluster);
        let sent: Vec<_> = (0..3)
            .map(|i| {
                producer
                    .send(ProducerRecord::new("orders", format!("v{i}")))
                    .unwrap()
            })
            .collect();
        for handle in sent {
            handle.wait().unwrap();
        }
        let mut consumer = member(&cluster);
        assert_eq!(poll_values(&mut consumer, 3), ["v0", "v1", "v2"]);
        if consumer_first {
            consumer.close().unwrap();
            cluster.close().unwrap();
        } else {
            cluster.close().unwrap();
            assert!(matches!(consumer.close(), Err(Error::Closed(_))));
        }
        drop(producer);

        let cluster = open(dir.path(), &clock);
        let mut consumer = member(&cluster);
        let again = poll_values(&mut consumer, 3);
        if consumer_first {
            assert!(again.is_empty(), "committed on close: {again:?}");
        } else {
            assert_eq!(again, ["v0", "v1", "v2"], "delivered again");
        }
        consumer.close().unwrap();
        cluster.close().unwrap();
    }
}
