//! The idempotent producer: Kafka's config rules, the producer id, epoch
//! and sequences in every batch, retries after injected faults (a failure
//! before the write, an acknowledgement lost after it) and leader changes
//! storing every record exactly once and in order, the retry backoff and
//! the delivery timeout on the cluster's clock, and the epoch bump of
//! KIP-360. Faults come from the `internals` feature's
//! [`ProduceFaults`] hook (which keeps every append on the sender thread;
//! one test runs the leader changes without faults, with direct appends
//! on); waits are on channels and the manual clock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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

/// A 2-broker cluster on `clock` whose topic `t` (1 partition, RF 1)
/// inherits `min.insync.replicas=2`: every `acks=all` append is refused
/// with the retriable `NotEnoughReplicas`.
fn refusing(clock: &Arc<ManualClock>) -> (tempfile::TempDir, Cluster) {
    let dir = tempfile::tempdir().unwrap();
    let config = ClusterConfig::builder()
        .brokers(2)
        .clock(clock.clone())
        .topic_defaults(TopicConfig::new().min_insync_replicas(2).unwrap())
        .build()
        .unwrap();
    let cluster = Cluster::open(dir.path(), config).unwrap();
    cluster.create_topic(NewTopic::new("t", 1)).unwrap();
    (dir, cluster)
}

#[test]
fn the_delivery_timeout_ends_the_retries_of_a_batch() {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let (_dir, cluster) = refusing(&clock);
    let (faults, calls) = Scripted::new(Vec::new(), Some(clock.clone()));
    let config = ProducerConfig::builder()
        .linger(Duration::ZERO)
        .retry_backoff(Duration::from_millis(100))
        .request_timeout(Duration::from_millis(300))
        .delivery_timeout(Duration::from_millis(1_000))
        .faults(faults)
        .build()
        .unwrap();
    let producer = Producer::new(&cluster, config).unwrap();
    let start = clock.now_ms();
    let (done_tx, done) = crossbeam_channel::bounded(1);
    producer
        .send_with_callback(ProducerRecord::new("t", "v"), move |r| {
            done_tx.send(r.map(|m| m.offset())).unwrap();
        })
        .unwrap();
    // One attempt per backoff, each refused, until the deadline.
    let mut attempts = Vec::new();
    let outcome = loop {
        crossbeam_channel::select! {
            recv(calls) -> call => {
                let (at, attempt) = call.unwrap();
                attempts.push((at - start, attempt));
                clock.advance_ms(100);
            }
            recv(done) -> outcome => break outcome.unwrap(),
            default(GUARD) => panic!("stuck after {attempts:?}"),
        }
    };
    match outcome {
        Err(Error::Timeout { op, waited }) => {
            assert!(op.contains("delivery.timeout.ms"), "{op}");
            assert_eq!(waited, Duration::from_millis(1_000));
        }
        other => panic!("{other:?}"),
    }
    let expected: Vec<(i64, u32)> = (0..10).map(|i| (i * 100, i as u32 + 1)).collect();
    assert_eq!(attempts, expected);
    assert!(stored(&cluster, "t", 0).is_empty());

    // With `retries`, the last error once they are used up.
    let config = ProducerConfig::builder()
        .linger(Duration::ZERO)
        .retries(2)
        .retry_backoff(Duration::ZERO)
        .build()
        .unwrap();
    let producer = Producer::new(&cluster, config).unwrap();
    let outcome = producer.send(ProducerRecord::new("t", "v")).unwrap().wait();
    assert!(
        matches!(outcome, Err(Error::NotEnoughReplicas { .. })),
        "{outcome:?}"
    );
    cluster.close().unwrap();
}

#[test]
fn a_gap_left_by_a_failed_batch_bumps_the_epoch_and_renumbers_from_zero() {
    let (_dir, cluster) = one_broker();
    cluster.create_topic(NewTopic::new("t", 2)).unwrap();
    // The first batch of partition 0 fails for good (its two attempts are
    // refused before the write), so the partition never sees sequence 0.
    let (faults, calls) = Scripted::new(
        vec![ProduceFault::BeforeWrite, ProduceFault::BeforeWrite],
        None,
    );
    let config = ProducerConfig::builder()
        .linger(Duration::ZERO)
        .retries(1)
        .retry_backoff(Duration::ZERO)
        .faults(faults)
        .build()
        .unwrap();
    let producer = Producer::new(&cluster, config).unwrap();
    let lost = producer
        .send(ProducerRecord::new("t", "lost").with_partition(0))
        .unwrap()
        .wait();
    assert!(matches!(lost, Err(Error::Timeout { .. })), "{lost:?}");
    // Partition 1 goes on in epoch 0.
    producer
        .send(ProducerRecord::new("t", "other").with_partition(1))
        .unwrap()
        .wait()
        .unwrap();
    // The next batch (sequence 1) is refused as UnknownProducerId, then
    // sent again in epoch 1 from sequence 0.
    let first = producer
        .send(ProducerRecord::new("t", "a").with_partition(0))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(first.offset(), Some(0));
    let handles: Vec<_> = ["b", "c"]
        .into_iter()
        .map(|v| {
            producer
                .send(ProducerRecord::new("t", v).with_partition(0))
                .unwrap()
        })
        .collect();
    for h in handles {
        h.wait().unwrap();
    }
    producer
        .send(ProducerRecord::new("t", "other2").with_partition(1))
        .unwrap()
        .wait()
        .unwrap();
    // One call per append: "lost" twice (attempts 1 and 2), "other", "a"
    // (refused as UnknownProducerId, then attempt 2 in epoch 1), "other2",
    // and "b" with "c" in one append, or in two when the sender took "b"
    // before "c" was sent (linger 0: a matter of thread timing).
    let attempts: Vec<u32> = calls.try_iter().map(|(_, a)| a).collect();
    assert_eq!(
        attempts.iter().filter(|&&a| a == 2).count(),
        2,
        "{attempts:?}"
    );
    assert!(attempts.iter().all(|&a| a <= 2), "{attempts:?}");
    assert!(matches!(attempts.len(), 7 | 8), "{attempts:?}");
    let p0 = stored(&cluster, "t", 0);
    let id = p0[0].2;
    let p0: Vec<(u64, &str, i16, i32)> = p0
        .iter()
        .map(|(o, v, pid, e, s)| {
            assert_eq!(*pid, id);
            (*o, v.as_str(), *e, *s)
        })
        .collect();
    assert_eq!(p0, [(0, "a", 1, 0), (1, "b", 1, 1), (2, "c", 1, 2)]);
    let p1: Vec<(String, i64, i16, i32)> = stored(&cluster, "t", 1)
        .into_iter()
        .map(|(_, v, pid, e, s)| (v, pid, e, s))
        .collect();
    assert_eq!(
        p1,
        [
            ("other".to_string(), id, 0, 0),
            ("other2".to_string(), id, 0, 1)
        ]
    );
    cluster.close().unwrap();
}

/// Up to 3 failed attempts per batch, chosen by a seeded generator: a
/// failure before the write or a lost acknowledgement after it.
#[derive(Debug)]
struct RandomFaults {
    rng: Mutex<Rng>,
    before: AtomicU64,
    lost: AtomicU64,
}

impl ProduceFaults for RandomFaults {
    fn fault(&self, _topic: &str, _partition: u32, attempt: u32) -> ProduceFault {
        if attempt > 3 {
            return ProduceFault::None;
        }
        match self.rng.lock().below(4) {
            0 => {
                self.before.fetch_add(1, Ordering::Relaxed);
                ProduceFault::BeforeWrite
            }
            1 => {
                self.lost.fetch_add(1, Ordering::Relaxed);
                ProduceFault::LoseAck
            }
            _ => ProduceFault::None,
        }
    }
}

/// What the callbacks heard: partition, value, offset or error.
type Heard = Vec<(u32, String, Result<u64, String>)>;

/// Sends 3 × `per_partition` records (values `p-i`) over 3 partitions of
/// a replicated topic while the faults strike (with `faults`) and the
/// leaders of partitions 0 and 1 are stopped and restarted midway; then
/// checks that every partition holds exactly its records, once each, in
/// send order, at the offsets their sends reported. Injected faults keep
/// the producer's batches on its sender thread; without them its sealed
/// batches are held for the sending thread to append (direct appends),
/// but while a batch of a partition waits for its acknowledgement at the
/// sender (here nearly always: the followers must fetch it) the sending
/// thread leaves the partition to the sender, so this runs the hand-over
/// between the two rather than appends from the sending thread.
fn exactly_once_in_order(seed: u64, per_partition: usize, faults: bool) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), builder().build().unwrap()).unwrap();
    create(&cluster, 3);
    let injected = Arc::new(RandomFaults {
        rng: Mutex::new(Rng(seed)),
        before: AtomicU64::new(0),
        lost: AtomicU64::new(0),
    });
    let mut config = ProducerConfig::builder()
        .linger(Duration::from_millis(1))
        .batch_size(200)
        .retry_backoff(Duration::from_millis(1));
    if faults {
        config = config.faults(injected.clone());
    }
    let config = config.build().unwrap();
    let producer = Producer::new(&cluster, config).unwrap();
    let mut rng = Rng(seed ^ 0x5eed);
    let mut sent: Vec<(u32, String)> = Vec::new();
    // What the callbacks heard, in the order they ran.
    let heard: Arc<Mutex<Heard>> = Arc::default();
    let mut stopped = Vec::new();
    for i in 0..3 * per_partition {
        let partition = (i % 3) as u32;
        let value = format!("{partition}-{}", i / 3);
        let record = ProducerRecord::new("t", value.as_str()).with_partition(partition);
        let log = heard.clone();
        let v = value.clone();
        producer
            .send_with_callback(record, move |r| {
                let r = r.map(|m| m.offset().unwrap()).map_err(|e| e.to_string());
                log.lock().push((partition, v, r));
            })
            .unwrap();
        sent.push((partition, value));
        // Leader changes while batches are in flight: stop the leader of
        // partition 0, later (the first broker back) crash the one of
        // partition 1.
        if i == per_partition || i == 2 * per_partition {
            if let Some(back) = stopped.pop() {
                cluster.restart_broker(back).unwrap();
                assert!(cluster.wait_until(GUARD, isr_complete));
            }
            if i == per_partition {
                // A controlled shutdown: leaderships move at once.
                let lead = leader(&cluster, 0);
                cluster.stop_broker(lead).unwrap();
                stopped.push(lead);
            } else {
                // A crash: the leader is gone until its session expires.
                let lead = leader(&cluster, 1);
                cluster.crash_broker(lead).unwrap();
                stopped.push(lead);
            }
        }
        // (Rarely without faults: a flush hands every held batch to the
        // sender, and the sending thread appends only while it streams.)
        if rng.below(if faults { 16 } else { 512 }) == 0 {
            // Now and then wait for everything, so batches come in every
            // size.
            producer.flush().unwrap();
        }
    }
    producer.flush().unwrap();
    let heard = std::mem::take(&mut *heard.lock());
    let mut offsets: BTreeMap<(u32, String), u64> = BTreeMap::new();
    for partition in 0..3 {
        let expected: Vec<&String> = sent
            .iter()
            .filter(|(p, _)| *p == partition)
            .map(|(_, v)| v)
            .collect();
        let completed: Vec<&String> = heard
            .iter()
            .filter(|(p, ..)| *p == partition)
            .map(|(_, v, _)| v)
            .collect();
        let first_wrong = completed.iter().zip(&expected).position(|(a, b)| a != b);
        assert!(
            completed.len() == expected.len() && first_wrong.is_none(),
            "partition {partition}: {} of {} completed, the first out of order at {first_wrong:?}: \
             {:?}",
            completed.len(),
            expected.len(),
            first_wrong.map(|i| &completed[i..(i + 5).min(completed.len())])
        );
    }
    for (partition, value, result) in heard {
        let offset = result.unwrap_or_else(|e| panic!("{value}: {e}"));
        offsets.insert((partition, value), offset);
    }
    for back in stopped {
        cluster.restart_broker(back).unwrap();
    }
    assert!(cluster.wait_until(GUARD, isr_complete));
    for partition in 0..3 {
        let expected: Vec<&String> = sent
            .iter()
            .filter(|(p, _)| *p == partition)
            .map(|(_, v)| v)
            .collect();
        let records = stored(&cluster, "t", partition);
        let values: Vec<&String> = records.iter().map(|r| &r.1).collect();
        let first_wrong = values.iter().zip(&expected).position(|(a, b)| a != b);
        assert!(
            values.len() == expected.len() && first_wrong.is_none(),
            "partition {partition}: {} stored for {} sent, the first wrong at {first_wrong:?}: {:?}",
            values.len(),
            expected.len(),
            first_wrong.map(|i| &values[i..(i + 5).min(values.len())])
        );
        for (offset, value, ..) in &records {
            assert_eq!(
                offsets[&(partition, value.clone())],
                *offset,
                "partition {partition}: the offset reported for {value}"
            );
        }
    }
    if faults {
        // The faults did strike, both kinds.
        assert!(injected.before.load(Ordering::Relaxed) > 10);
        assert!(injected.lost.load(Ordering::Relaxed) > 10);
    }
    producer.close().unwrap();
    cluster.close().unwrap();
}

/// Runs `check` for `LOGBUS_SEED` if set, else for `fixed` and a seed
/// from the time, naming the seed if it fails.
fn for_seeds(fixed: u64, check: impl Fn(u64)) {
    let seeds: Vec<u64> = match std::env::var("LOGBUS_SEED") {
        Ok(seed) => vec![seed.parse().expect("LOGBUS_SEED is a number")],
        Err(_) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            vec![fixed, now]
        }
    };
    for seed in seeds {
        common::with_context(
            &format!("seed {seed} (rerun with LOGBUS_SEED={seed})"),
            || check(seed),
        );
    }
}

#[test]
fn every_record_is_stored_once_in_order_despite_retries_and_leader_changes() {
    for_seeds(1, |seed| exactly_once_in_order(seed, 300, true));
}

#[test]
fn with_direct_appends_on_every_record_is_stored_once_in_order_despite_leader_changes() {
    for_seeds(2, |seed| exactly_once_in_order(seed, 2_000, false));
}

/// An idempotent batch of one record: producer 7, epoch 0, `sequence`.
fn idempotent_batch(timestamp: i64, sequence: i32) -> Vec<u8> {
    let mut builder =
        logbus::format::BatchBuilder::new(logbus::Compression::None).producer(7, 0, sequence);
    builder.append(timestamp, None, Some(b"v"), &[]);
    builder.build().unwrap().to_vec()
}

#[test]
fn the_clusters_producer_id_expiration_forgets_idle_producers_at_reopen() {
    for (expiration, forgotten) in [
        (Duration::from_secs(5), true),
        (Duration::from_secs(3600), false),
    ] {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let dir = tempfile::tempdir().unwrap();
        let config = || {
            ClusterConfig::builder()
                .clock(clock.clone())
                .producer_id_expiration(expiration)
                .build()
                .unwrap()
        };
        let cluster = Cluster::open(dir.path(), config()).unwrap();
        let partition = cluster
            .create_topic(NewTopic::new("t", 1))
            .unwrap()
            .partition(0)
            .unwrap();
        partition
            .append(&mut idempotent_batch(clock.now_ms(), 0))
            .unwrap();
        cluster.close().unwrap();
        clock.advance_ms(10_000);

        let cluster = Cluster::open(dir.path(), config()).unwrap();
        let partition = cluster.topic("t").unwrap().partition(0).unwrap();
        let next = partition.append(&mut idempotent_batch(clock.now_ms(), 1));
        if forgotten {
            assert!(
                matches!(next, Err(Error::UnknownProducerId { producer_id: 7, .. })),
                "{next:?}"
            );
            // Starting over at sequence 0 is accepted.
            partition
                .append(&mut idempotent_batch(clock.now_ms(), 0))
                .unwrap();
        } else {
            assert_eq!(next.unwrap().first_offset(), 1);
        }
        cluster.close().unwrap();
    }
}

/// Lets the test act between the sender taking a batch and appending it:
/// reports each append (1, 2, ...) and holds the second until told to go.
#[derive(Debug)]
struct HoldSecond {
    calls: Mutex<u32>,
    reached: Sender<u32>,
    go: Receiver<()>,
}

impl ProduceFaults for HoldSecond {
    fn fault(&self, _topic: &str, _partition: u32, _attempt: u32) -> ProduceFault {
        let call = {
            let mut calls = self.calls.lock();
            *calls += 1;
            *calls
        };
        self.reached.send(call).unwrap();
        if call == 2 {
            self.go.recv().unwrap();
        }
        ProduceFault::None
    }
}

/// A batch acknowledged at its append (the high watermark passed it at
/// once) while an earlier batch of its partition still waits for its
/// acknowledgement: that earlier acknowledgement arrived too, and the
/// callbacks still run in send order. Here the ISR shrinks to the leader
/// while "a" waits for the crashed follower, so the append of "b" is
/// acknowledged at once; the sender used to complete "b" before "a".
#[test]
fn a_batch_acknowledged_at_its_append_completes_after_the_batches_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(
        dir.path(),
        builder()
            .brokers(2)
            .default_replication_factor(2)
            .build()
            .unwrap(),
    )
    .unwrap();
    let config = TopicConfig::new().min_insync_replicas(1).unwrap();
    cluster
        .create_topic(NewTopic::new("t", 1).replication_factor(2).config(config))
        .unwrap();
    assert!(cluster.wait_until(GUARD, isr_complete));
    let lead = leader(&cluster, 0);
    let follower = 1 - lead;
    let (reached_tx, reached) = crossbeam_channel::unbounded();
    let (go, go_rx) = crossbeam_channel::unbounded();
    let faults = Arc::new(HoldSecond {
        calls: Mutex::new(0),
        reached: reached_tx,
        go: go_rx,
    });
    let producer = Producer::new(
        &cluster,
        ProducerConfig::builder()
            .linger(Duration::ZERO)
            .faults(faults)
            .build()
            .unwrap(),
    )
    .unwrap();
    // The follower stays in the ISR until its session expires: "a" waits.
    cluster.crash_broker(follower).unwrap();
    let heard: Arc<Mutex<Heard>> = Arc::default();
    let send = |value: &str| {
        let log = heard.clone();
        let v = value.to_string();
        producer
            .send_with_callback(
                ProducerRecord::new("t", value).with_partition(0),
                move |r| {
                    let r = r.map(|m| m.offset().unwrap()).map_err(|e| e.to_string());
                    log.lock().push((0, v, r));
                },
            )
            .unwrap();
    };
    send("a");
    assert_eq!(reached.recv().unwrap(), 1);
    send("b");
    assert_eq!(reached.recv().unwrap(), 2);
    // "a" is appended and in flight, "b" about to be appended. The ISR
    // shrinks to the leader, whose high watermark then passes "a".
    let partition = cluster.topic("t").unwrap().partition(0).unwrap();
    assert!(cluster.wait_until(GUARD, |c| {
        c.describe_topic("t")
            .is_ok_and(|d| d.partitions[0].isr == [lead])
            && partition.high_watermark().is_ok_and(|hw| hw >= 1)
    }));
    go.send(()).unwrap();
    producer.flush().unwrap();
    assert_eq!(
        *heard.lock(),
        [(0, "a".to_string(), Ok(0)), (0, "b".to_string(), Ok(1))]
    );
    producer.close().unwrap();
    cluster.restart_broker(follower).unwrap();
    cluster.close().unwrap();
}
