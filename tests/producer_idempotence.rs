//! The idempotent producer: Kafka's config rules, the producer id, epoch
//! and sequences in every batch, retries after injected faults (a failure
//! before the write, an acknowledgement lost after it) and leader changes
//! storing every record exactly once and in order, the retry backoff and
//! the delivery timeout on the cluster's clock, and the epoch bump of
//! KIP-360. Faults come from the `internals` feature's
//! [`ProduceFaults`] hook; waits are on channels and the manual clock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

mod common;

use common::Rng;
use common::replicated::{GUARD, builder, create, isr_complete, leader};
use logbus::{
    Acks, Clock, Cluster, ClusterConfig, Error, ManualClock, NewTopic, ProduceFault, ProduceFaults,
    Producer, ProducerConfig, ProducerRecord, TopicConfig,
};

/// Every record of partition `partition` of `topic` as `(offset, value,
/// producer id, epoch, sequence of the record)`.
fn stored(cluster: &Cluster, topic: &str, partition: u32) -> Vec<(u64, String, i64, i16, i32)> {
    let partition = cluster.topic(topic).unwrap().partition(partition).unwrap();
    let mut out = Vec::new();
    let mut offset = partition.log_start_offset().unwrap();
    loop {
        let read = partition.read(offset, 1 << 20).unwrap();
        let mut any = false;
        for batch in read.batches() {
            let batch = batch.unwrap();
            let h = *batch.header();
            for (i, record) in batch.records().unwrap().enumerate() {
                let record = record.unwrap();
                let at = u64::try_from(record.offset()).unwrap();
                if at < offset {
                    continue;
                }
                any = true;
                let value = String::from_utf8(record.value().unwrap().to_vec()).unwrap();
                let sequence = if h.base_sequence < 0 {
                    -1
                } else {
                    h.base_sequence + i32::try_from(i).unwrap()
                };
                out.push((at, value, h.producer_id, h.producer_epoch, sequence));
                offset = at + 1;
            }
        }
        if !any {
            return out;
        }
    }
}

/// The batch headers of a partition as `(producer id, epoch, base
/// sequence, record count)`.
fn headers(cluster: &Cluster, topic: &str, partition: u32) -> Vec<(i64, i16, i32, i32)> {
    let partition = cluster.topic(topic).unwrap().partition(partition).unwrap();
    let read = partition.read(0, 1 << 24).unwrap();
    read.batches()
        .map(|b| {
            let h = *b.unwrap().header();
            (
                h.producer_id,
                h.producer_epoch,
                h.base_sequence,
                h.records_count,
            )
        })
        .collect()
}

fn one_broker() -> (tempfile::TempDir, Cluster) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), ClusterConfig::default()).unwrap();
    (dir, cluster)
}

/// Faults taken from a script, one per append attempt (then none); every
/// call is reported on a channel with the clock time and the attempt.
#[derive(Debug)]
struct Scripted {
    script: Mutex<Vec<ProduceFault>>,
    calls: Sender<(i64, u32)>,
    clock: Option<Arc<ManualClock>>,
}

impl Scripted {
    fn new(
        script: Vec<ProduceFault>,
        clock: Option<Arc<ManualClock>>,
    ) -> (Arc<Scripted>, Receiver<(i64, u32)>) {
        let (calls, rx) = crossbeam_channel::unbounded();
        let mut script = script;
        script.reverse();
        (
            Arc::new(Scripted {
                script: Mutex::new(script),
                calls,
                clock,
            }),
            rx,
        )
    }
}

impl ProduceFaults for Scripted {
    fn fault(&self, _topic: &str, _partition: u32, attempt: u32) -> ProduceFault {
        let now = self.clock.as_ref().map_or(0, |c| c.now_ms());
        let _ = self.calls.send((now, attempt));
        self.script.lock().pop().unwrap_or(ProduceFault::None)
    }
}

#[test]
fn config_follows_kafkas_idempotence_rules() {
    let default = ProducerConfig::default();
    assert!(default.enable_idempotence());
    assert_eq!(default.retries(), i32::MAX);
    assert_eq!(default.retry_backoff(), Duration::from_millis(100));
    assert_eq!(default.delivery_timeout(), Duration::from_millis(120_000));
    assert_eq!(default.request_timeout(), Duration::from_millis(30_000));
    assert_eq!(default.max_in_flight(), 5);
    let built = ProducerConfig::builder().build().unwrap();
    assert!(built.enable_idempotence());

    // Left at its default, idempotence gives way to acks and retries...
    for acks in [Acks::None, Acks::Leader] {
        let c = ProducerConfig::builder().acks(acks).build().unwrap();
        assert!(!c.enable_idempotence(), "{acks:?}");
    }
    let c = ProducerConfig::builder().retries(0).build().unwrap();
    assert!(!c.enable_idempotence());
    // ...asked for, they are errors.
    for acks in [Acks::None, Acks::Leader] {
        let err = ProducerConfig::builder()
            .acks(acks)
            .enable_idempotence(true)
            .build()
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidConfig(m) if m.contains("acks")),
            "{err}"
        );
    }
    let err = ProducerConfig::builder()
        .retries(0)
        .enable_idempotence(true)
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidConfig(m) if m.contains("retries")),
        "{err}"
    );
    // More than 5 in flight is an error unless idempotence is off
    // explicitly (even when acks turned the default off, as in Kafka).
    for builder in [
        ProducerConfig::builder(),
        ProducerConfig::builder().enable_idempotence(true),
        ProducerConfig::builder().acks(Acks::Leader),
    ] {
        let err = builder.max_in_flight(6).build().unwrap_err();
        assert!(
            matches!(&err, Error::InvalidConfig(m) if m.contains("max.in.flight")),
            "{err}"
        );
    }
    let c = ProducerConfig::builder()
        .enable_idempotence(false)
        .max_in_flight(6)
        .build()
        .unwrap();
    assert!(!c.enable_idempotence());
    assert_eq!(c.max_in_flight(), 6);
    let c = ProducerConfig::builder()
        .enable_idempotence(false)
        .acks(Acks::Leader)
        .retries(0)
        .build()
        .unwrap();
    assert!(!c.enable_idempotence());

    // Ranges.
    for (builder, name) in [
        (ProducerConfig::builder().retries(-1), "retries"),
        (ProducerConfig::builder().max_in_flight(0), "max.in.flight"),
        (
            ProducerConfig::builder()
                .linger(Duration::from_millis(10))
                .request_timeout(Duration::from_millis(1_000))
                .delivery_timeout(Duration::from_millis(1_009)),
            "delivery.timeout.ms",
        ),
    ] {
        let err = builder.build().unwrap_err();
        assert!(
            matches!(&err, Error::InvalidConfig(m) if m.contains(name)),
            "{name}: {err}"
        );
    }
    // Exactly linger + request timeout is allowed; left at its default the
    // delivery timeout grows to it, as Kafka's does.
    let c = ProducerConfig::builder()
        .linger(Duration::from_millis(10))
        .request_timeout(Duration::from_millis(1_000))
        .delivery_timeout(Duration::from_millis(1_010))
        .build()
        .unwrap();
    assert_eq!(c.delivery_timeout(), Duration::from_millis(1_010));
    let c = ProducerConfig::builder()
        .linger(Duration::from_secs(100))
        .build()
        .unwrap();
    assert_eq!(c.delivery_timeout(), Duration::from_millis(130_000));

    // Kafka's names.
    let c = ProducerConfig::builder()
        .set("enable.idempotence", "false")
        .unwrap()
        .set("retries", "7")
        .unwrap()
        .set("retry.backoff.ms", "250")
        .unwrap()
        .set("delivery.timeout.ms", "60000")
        .unwrap()
        .set("request.timeout.ms", "20000")
        .unwrap()
        .set("max.in.flight.requests.per.connection", "9")
        .unwrap()
        .build()
        .unwrap();
    assert!(!c.enable_idempotence());
    assert_eq!(c.retries(), 7);
    assert_eq!(c.retry_backoff(), Duration::from_millis(250));
    assert_eq!(c.delivery_timeout(), Duration::from_millis(60_000));
    assert_eq!(c.request_timeout(), Duration::from_millis(20_000));
    assert_eq!(c.max_in_flight(), 9);
    for (name, value) in [
        ("enable.idempotence", "yes please"),
        ("retries", "-1"),
        ("retries", "2147483648"),
        ("max.in.flight.requests.per.connection", "many"),
    ] {
        let err = ProducerConfig::builder().set(name, value).unwrap_err();
        assert!(err.to_string().contains(name), "{name}={value}: {err}");
    }
}

#[test]
fn batches_on_disk_carry_the_producer_id_epoch_and_sequences() {
    let (_dir, cluster) = one_broker();
    cluster.create_topic(NewTopic::new("t", 2)).unwrap();
    let idempotent = Producer::new(&cluster, ProducerConfig::default()).unwrap();
    let plain = Producer::new(
        &cluster,
        ProducerConfig::builder()
            .enable_idempotence(false)
            .build()
            .unwrap(),
    )
    .unwrap();
    // Batches of 1, 3 and 2 records in partition 0, of 2 and 1 in 1.
    for (partition, sizes) in [(0, vec![1, 3, 2]), (1, vec![2, 1])] {
        for (b, size) in sizes.into_iter().enumerate() {
            let handles: Vec<_> = (0..size)
                .map(|i| {
                    idempotent
                        .send(
                            ProducerRecord::new("t", format!("{b}.{i}")).with_partition(partition),
                        )
                        .unwrap()
                })
                .collect();
            for h in handles {
                h.wait().unwrap();
            }
        }
    }
    plain
        .send(ProducerRecord::new("t", "plain").with_partition(0))
        .unwrap()
        .wait()
        .unwrap();
    let p0 = headers(&cluster, "t", 0);
    let p1 = headers(&cluster, "t", 1);
    let id = p0[0].0;
    assert!(id >= 0, "{p0:?}");
    assert_eq!(
        p0,
        [(id, 0, 0, 1), (id, 0, 1, 3), (id, 0, 4, 2), (-1, -1, -1, 1)]
    );
    assert_eq!(p1, [(id, 0, 0, 2), (id, 0, 2, 1)]);
    // A second producer gets another id.
    let second = Producer::new(&cluster, ProducerConfig::default()).unwrap();
    second
        .send(ProducerRecord::new("t", "second").with_partition(1))
        .unwrap()
        .wait()
        .unwrap();
    let last = *headers(&cluster, "t", 1).last().unwrap();
    assert!(last.0 >= 0 && last.0 != id, "{last:?}");
    assert_eq!((last.1, last.2), (0, 0));
    cluster.close().unwrap();
}

#[test]
fn a_lost_acknowledgement_is_retried_once_stored_with_idempotence_twice_without() {
    for idempotence in [true, false] {
        let (_dir, cluster) = one_broker();
        cluster.create_topic(NewTopic::new("t", 1)).unwrap();
        let (faults, calls) = Scripted::new(
            vec![
                ProduceFault::LoseAck,
                ProduceFault::LoseAck,
                ProduceFault::BeforeWrite,
            ],
            None,
        );
        let config = ProducerConfig::builder()
            .enable_idempotence(idempotence)
            .retry_backoff(Duration::ZERO)
            .faults(faults)
            .build()
            .unwrap();
        let producer = Producer::new(&cluster, config).unwrap();
        let sent = producer
            .send(ProducerRecord::new("t", "once"))
            .unwrap()
            .wait()
            .unwrap();
        let attempts: Vec<u32> = calls.try_iter().map(|(_, a)| a).collect();
        assert_eq!(attempts, [1, 2, 3, 4]);
        let values: Vec<(u64, String)> = stored(&cluster, "t", 0)
            .into_iter()
            .map(|(o, v, ..)| (o, v))
            .collect();
        if idempotence {
            // Written by the first attempt, answered with its offset.
            assert_eq!(sent.offset(), Some(0));
            assert_eq!(values, [(0, "once".to_string())]);
        } else {
            // Kafka's behaviour without idempotence: every lost
            // acknowledgement leaves a copy.
            assert_eq!(sent.offset(), Some(2));
            assert_eq!(values.len(), 3, "{values:?}");
        }
        cluster.close().unwrap();
    }
}

#[test]
fn a_retry_waits_for_the_backoff_on_the_clock() {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(
        dir.path(),
        ClusterConfig::builder()
            .clock(clock.clone())
            .build()
            .unwrap(),
    )
    .unwrap();
    cluster.create_topic(NewTopic::new("t", 1)).unwrap();
    let (faults, calls) = Scripted::new(
        vec![ProduceFault::BeforeWrite, ProduceFault::LoseAck],
        Some(clock.clone()),
    );
    let config = ProducerConfig::builder()
        .linger(Duration::ZERO)
        .retry_backoff(Duration::from_millis(100))
        .faults(faults)
        .build()
        .unwrap();
    let producer = Producer::new(&cluster, config).unwrap();
    let (done_tx, done) = crossbeam_channel::bounded(1);
    producer
        .send_with_callback(ProducerRecord::new("t", "v"), move |r| {
            done_tx.send(r.map(|m| m.offset())).unwrap();
        })
        .unwrap();
    let (t1, a1) = calls.recv_timeout(GUARD).unwrap();
    assert_eq!(a1, 1);
    // The hook reads the clock when called: a retry before the backoff
    // passed would see an earlier time.
    clock.advance_ms(60);
    clock.advance_ms(60);
    let (t2, a2) = calls.recv_timeout(GUARD).unwrap();
    assert_eq!(a2, 2);
    assert!(t2 >= t1 + 100, "retried after {} ms", t2 - t1);
    assert!(
        done.try_recv().is_err(),
        "the lost acknowledgement is retried"
    );
    clock.advance_ms(60);
    clock.advance_ms(60);
    let (t3, a3) = calls.recv_timeout(GUARD).unwrap();
    assert_eq!(a3, 3);
    assert!(t3 >= t2 + 100, "retried after {} ms", t3 - t2);
    assert_eq!(done.recv_timeout(GUARD).unwrap().unwrap(), Some(0));
    let values: Vec<String> = stored(&cluster, "t", 0).into_iter().map(|r| r.1).collect();
    assert_eq!(values, ["v"]);
    producer.close().unwrap();
    cluster.close().unwrap();
}
