//! Failover: a producer and a consumer group keep going while brokers
//! crash, stop and restart.
//!
//! ```text
//! cargo run --release --example failover [DIR]
//! ```
//!
//! Three brokers; topic `orders` of 6 partitions, replication factor 3,
//! `min.insync.replicas` 2. A producer thread sends numbered records with
//! `acks=all`; the producer is idempotent (the default) and resends a batch
//! that failed with a retriable error by itself, in order, and the
//! partition recognises a resend of a batch it had in fact stored, so
//! nothing is stored twice. The thread itself resends only a record whose
//! `delivery.timeout.ms` ran out (counted in
//! `not_enough_replicas_errors` when that was the reason). A consumer group
//! member reads the records concurrently. Meanwhile the main thread:
//!
//! 1. crashes the broker leading partition 0 and restarts it,
//! 2. stops broker 1 cleanly and restarts it,
//! 3. crashes two brokers at once: the last one cannot satisfy
//!    `min.insync.replicas`, so producing stalls (the producer retries
//!    `NotEnoughReplicas`); both restart and producing resumes,
//! 4. stops broker 0 and restarts it,
//!
//! waiting each time until every partition's ISR is complete again. Then
//! the producer stops, everything it sent is acknowledged, the consumer
//! reads to the end, the cluster closes, and one JSON line goes to stdout:
//!
//! ```text
//! {"acked":...,"consumed_unique":...,"lost":0,"duplicates":...,"leader_changes":...,
//!  "isr_shrinks":...,"isr_expands":...,"not_enough_replicas_errors":...,"elapsed_ms":...}
//! ```
//!
//! The counters are the cluster's ([`Cluster::replication_stats`]), so they
//! include `__consumer_offsets` (50 partitions, replication factor 3 here),
//! which the consumer's first commit creates before the faults begin.
//! `lost` counts acknowledged records never consumed; it must be 0, or the
//! example exits with an error. Sessions and lag times are short (1 s) so
//! it runs in seconds, on the system clock. The data stays in `DIR`
//! (default: a fresh temporary directory, whose path is printed on stderr).

#![allow(clippy::print_stdout, reason = "an example prints its results")]

use std::collections::HashMap;
use std::error::Error;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use logbus::{
    Acks, Cluster, ClusterConfig, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, TopicConfig,
};

const TOPIC: &str = "orders";
const PARTITIONS: u32 = 6;
const GROUP: &str = "order-readers";
/// How long any one wait may take before the example gives up.
const WAIT: Duration = Duration::from_secs(30);

type BoxError = Box<dyn Error + Send + Sync>;

/// What the threads share.
struct Shared {
    started: Instant,
    /// Numbers acknowledged (at least once).
    acked: Mutex<Vec<bool>>,
    acked_count: AtomicU64,
    /// How many times each number was consumed.
    consumed: Mutex<HashMap<u64, u32>>,
    not_enough_replicas: AtomicU64,
    /// Set by main: the producer sends no new numbers.
    stop_producing: AtomicBool,
    /// Set by the producer once everything it sent is acknowledged.
    producer_done: AtomicBool,
    /// Set by the consumer after its first commit, which creates
    /// `__consumer_offsets` (replication factor 3: only while every broker
    /// runs); the faults start after it.
    committed: AtomicBool,
    abort: AtomicBool,
}

impl Shared {
    fn log(&self, line: &str) {
        let ms = self.started.elapsed().as_millis();
        eprintln!("[{ms:>5} ms] {line}");
    }

    fn all_consumed(&self) -> bool {
        if !self.producer_done.load(Ordering::Acquire) {
            return false;
        }
        let acked = self.acked.lock().expect("no thread panics holding it");
        let consumed = self.consumed.lock().expect("no thread panics holding it");
        acked
            .iter()
            .enumerate()
            .all(|(n, &a)| !a || consumed.contains_key(&(n as u64)))
    }
}

fn main() -> Result<(), BoxError> {
    let dir = match std::env::args_os().nth(1) {
        Some(dir) => PathBuf::from(dir),
        None => tempfile::Builder::new()
            .prefix("logbus-failover-")
            .tempdir()?
            .keep(),
    };
    eprintln!("data directory: {}", dir.display());
    let config = ClusterConfig::builder()
        .brokers(3)
        .default_replication_factor(3)
        .broker_session_timeout(Duration::from_secs(1))
        .broker_heartbeat_interval(Duration::from_millis(200))
        .replica_lag_time_max(Duration::from_secs(1))
        .replica_fetch_wait_max(Duration::from_millis(100))
        .group_min_session_timeout(Duration::from_secs(1))
        .build()?;
    let cluster = Cluster::open(&dir, config)?;
    let topic_config = TopicConfig::new().min_insync_replicas(2)?;
    cluster.create_topic(
        NewTopic::new(TOPIC, PARTITIONS)
            .replication_factor(3)
            .config(topic_config),
    )?;
    let shared = Arc::new(Shared {
        started: Instant::now(),
        acked: Mutex::new(Vec::new()),
        acked_count: AtomicU64::new(0),
        consumed: Mutex::new(HashMap::new()),
        not_enough_replicas: AtomicU64::new(0),
        stop_producing: AtomicBool::new(false),
        producer_done: AtomicBool::new(false),
        committed: AtomicBool::new(false),
        abort: AtomicBool::new(false),
    });
    let producer = {
        let (cluster, shared) = (cluster.clone(), shared.clone());
        thread::Builder::new()
            .name("producer".into())
            .spawn(move || {
                let result = produce(&cluster, &shared);
                if result.is_err() {
                    shared.abort.store(true, Ordering::Release);
                }
                result
            })?
    };
    let consumer = {
        let (cluster, shared) = (cluster.clone(), shared.clone());
        thread::Builder::new()
            .name("consumer".into())
            .spawn(move || {
                let result = consume(&cluster, &shared);
                if result.is_err() {
                    shared.abort.store(true, Ordering::Release);
                }
                result
            })?
    };

    let chaos = faults(&cluster, &shared);
    shared.stop_producing.store(true, Ordering::Release);
    let produced = producer
        .join()
        .map_err(|_| "the producer thread panicked")?;
    let consumed = consumer
        .join()
        .map_err(|_| "the consumer thread panicked")?;
    chaos?;
    produced?;
    consumed?;
    wait_for_complete_isrs(&cluster, &shared)?;
    let elapsed = shared.started.elapsed();
    let stats = cluster.replication_stats();
    cluster.close()?;

    let acked = shared.acked_count.load(Ordering::Acquire);
    let acked_numbers = shared.acked.lock().expect("threads are done");
    let consumed = shared.consumed.lock().expect("threads are done");
    let consumed_unique = consumed.len() as u64;
    let duplicates: u64 = consumed.values().map(|&n| u64::from(n - 1)).sum();
    let lost = acked_numbers
        .iter()
        .enumerate()
        .filter(|&(n, &a)| a && !consumed.contains_key(&(n as u64)))
        .count();
    println!(
        "{{\"acked\":{acked},\"consumed_unique\":{consumed_unique},\"lost\":{lost},\
         \"duplicates\":{duplicates},\"leader_changes\":{},\"isr_shrinks\":{},\
         \"isr_expands\":{},\"not_enough_replicas_errors\":{},\"elapsed_ms\":{}}}",
        stats.leader_changes,
        stats.isr_shrinks,
        stats.isr_expands,
        shared.not_enough_replicas.load(Ordering::Acquire),
        elapsed.as_millis()
    );
    if lost > 0 {
        return Err(format!("{lost} acknowledged records were never consumed").into());
    }
    Ok(())
}

/// The faults, one after another, each ended by a restart and a wait for
/// complete ISRs.
fn faults(cluster: &Cluster, shared: &Shared) -> Result<(), BoxError> {
    let pause = |ms| thread::sleep(Duration::from_millis(ms));
    wait_until(shared, "the consumer's first commit", || {
        shared.committed.load(Ordering::Acquire)
    })?;
    pause(500);
    // 1. The leader of partition 0 crashes.
    let leader = cluster.describe_topic(TOPIC)?.partitions[0]
        .leader
        .ok_or("partition 0 has no leader")?;
    shared.log(&format!("crash broker {leader} (leads partition 0)"));
    cluster.crash_broker(leader)?;
    wait_until(shared, "its fencing", || cluster.is_broker_fenced(leader))?;
    shared.log(&format!("broker {leader} fenced; its leaderships moved"));
    pause(300);
    cluster.restart_broker(leader)?;
    shared.log(&format!("broker {leader} restarted"));
    wait_for_complete_isrs(cluster, shared)?;

    // 2. A clean stop.
    shared.log("stop broker 1");
    cluster.stop_broker(1)?;
    pause(500);
    cluster.restart_broker(1)?;
    shared.log("broker 1 restarted");
    wait_for_complete_isrs(cluster, shared)?;

    // 3. Two of three down: below min.insync.replicas.
    let before = shared.not_enough_replicas.load(Ordering::Acquire);
    shared.log("crash brokers 2 and 0");
    cluster.crash_broker(2)?;
    cluster.crash_broker(0)?;
    wait_until(shared, "fencing of both", || {
        cluster.is_broker_fenced(2) && cluster.is_broker_fenced(0)
    })?;
    wait_until(shared, "a NotEnoughReplicas error", || {
        shared.not_enough_replicas.load(Ordering::Acquire) > before
    })?;
    shared.log("producing stalls with NotEnoughReplicas");
    pause(300);
    cluster.restart_broker(2)?;
    cluster.restart_broker(0)?;
    shared.log("brokers 2 and 0 restarted");
    wait_for_complete_isrs(cluster, shared)?;

    // 4. Another clean stop.
    shared.log("stop broker 0");
    cluster.stop_broker(0)?;
    pause(500);
    cluster.restart_broker(0)?;
    shared.log("broker 0 restarted");
    wait_for_complete_isrs(cluster, shared)?;
    pause(300);
    Ok(())
}

/// Polls `done` every 10 ms until it holds (an example may sleep).
fn wait_until(shared: &Shared, what: &str, mut done: impl FnMut() -> bool) -> Result<(), BoxError> {
    let deadline = Instant::now() + WAIT;
    while !done() {
        if shared.abort.load(Ordering::Acquire) {
            return Err("a thread failed".into());
        }
        if Instant::now() > deadline {
            return Err(format!("gave up waiting for {what}").into());
        }
        thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Waits until every partition of the topic has all its replicas in sync.
fn wait_for_complete_isrs(cluster: &Cluster, shared: &Shared) -> Result<(), BoxError> {
    wait_until(shared, "complete ISRs", || {
        cluster.describe_topic(TOPIC).is_ok_and(|d| {
            d.partitions
                .iter()
                .all(|p| p.leader.is_some() && p.isr.len() == p.replicas.len())
        })
    })?;
    shared.log("every ISR is complete");
    Ok(())
}

/// Sends numbers until told to stop, resending those whose send failed
/// with a retriable error, then waits until everything is acknowledged.
fn produce(cluster: &Cluster, shared: &Arc<Shared>) -> Result<(), BoxError> {
    let config = ProducerConfig::builder()
        .acks(Acks::All)
        .linger(Duration::from_millis(2))
        .build()?;
    let producer = Producer::new(cluster, config)?;
    let (tx, rx) = mpsc::channel::<(u64, Result<(), logbus::Error>)>();
    let mut next = 0u64;
    let mut in_flight = 0u64;
    let mut retry = Vec::new();
    let send = |number: u64| -> Result<(), BoxError> {
        let text = number.to_string();
        let tx = tx.clone();
        producer.send_with_callback(
            ProducerRecord::new(TOPIC, &text).with_key(text),
            move |result| {
                let _ = tx.send((number, result.map(drop)));
            },
        )?;
        Ok(())
    };
    loop {
        if shared.abort.load(Ordering::Acquire) {
            return Err("aborted".into());
        }
        let stopping = shared.stop_producing.load(Ordering::Acquire);
        if stopping && in_flight == 0 && retry.is_empty() {
            break;
        }
        for number in retry.drain(..) {
            send(number)?;
            in_flight += 1;
        }
        if !stopping && in_flight < 2_000 {
            for _ in 0..50 {
                send(next)?;
                next += 1;
                in_flight += 1;
            }
        }
        // About 10 000 records a second while the ISRs keep up.
        let wait = Duration::from_millis(5);
        let deadline = Instant::now() + wait;
        while let Ok((number, result)) =
            rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            in_flight -= 1;
            match result {
                Ok(()) => {
                    let mut acked = shared.acked.lock().expect("no thread panics holding it");
                    let i = usize::try_from(number)?;
                    if acked.len() <= i {
                        acked.resize(i + 1, false);
                    }
                    if !acked[i] {
                        acked[i] = true;
                        shared.acked_count.fetch_add(1, Ordering::AcqRel);
                    }
                }
                Err(e) if e.is_retriable() => {
                    if matches!(
                        e,
                        logbus::Error::NotEnoughReplicas { .. }
                            | logbus::Error::NotEnoughReplicasAfterAppend { .. }
                    ) {
                        shared.not_enough_replicas.fetch_add(1, Ordering::AcqRel);
                    }
                    retry.push(number);
                }
                Err(e) => return Err(format!("record {number}: {e}").into()),
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        if !retry.is_empty() {
            // Give the cluster a moment to fail over before resending.
            thread::sleep(Duration::from_millis(20));
        }
    }
    producer.close()?;
    shared.producer_done.store(true, Ordering::Release);
    shared.log(&format!(
        "producer: done, {} acknowledged",
        shared.acked_count.load(Ordering::Acquire)
    ));
    Ok(())
}

/// A consumer group member reading until every acknowledged number was
/// consumed.
fn consume(cluster: &Cluster, shared: &Arc<Shared>) -> Result<(), BoxError> {
    let config = ConsumerConfig::builder()
        .group_id(GROUP)
        .client_id("reader")
        .auto_offset_reset(OffsetReset::Earliest)
        .session_timeout(Duration::from_millis(1_500))
        .heartbeat_interval(Duration::from_millis(300))
        .build()?;
    let mut consumer = Consumer::new(cluster, config)?;
    consumer.subscribe([TOPIC])?;
    let mut deadline = None;
    loop {
        if shared.abort.load(Ordering::Acquire) {
            return Err("aborted".into());
        }
        match consumer.poll(Duration::from_millis(100)) {
            Ok(records) => {
                let mut consumed = shared.consumed.lock().expect("no thread panics holding it");
                for record in &records {
                    let number = record
                        .value()
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .ok_or("a record whose value is not a number")?;
                    *consumed.entry(number).or_insert(0) += 1;
                }
            }
            Err(e) if e.is_retriable() => {}
            Err(e) => return Err(format!("poll: {e}").into()),
        }
        if !shared.committed.load(Ordering::Acquire) {
            match consumer.commit_sync() {
                Ok(()) => shared.committed.store(true, Ordering::Release),
                Err(e) if e.is_retriable() => {}
                Err(e) => return Err(format!("commit: {e}").into()),
            }
        }
        if shared.all_consumed() {
            break;
        }
        if shared.producer_done.load(Ordering::Acquire) {
            let at = *deadline.get_or_insert_with(|| Instant::now() + WAIT);
            if Instant::now() > at {
                shared.log("consumer: gave up before consuming every acknowledged record");
                break;
            }
        }
    }
    consumer.close()?;
    shared.log("consumer: done");
    Ok(())
}
