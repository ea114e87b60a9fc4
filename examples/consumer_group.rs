//! A consumer group surviving a crash: three consumers share a topic, one
//! of them dies without closing, and the other two take over its
//! partitions — re-reading what it had not committed — until every record
//! has been consumed.
//!
//! ```text
//! cargo run --release --example consumer_group [DIR]
//! ```
//!
//! A producer thread sends 30 000 numbered records (key and value: the
//! number as text) to the 6 partitions of topic `events`, while three
//! consumers, each on its own thread and in group `event-counters`, poll
//! them with auto commit every 200 ms. Once half the records have been
//! consumed, one consumer is dropped without `close` — like a crashed
//! process: it neither commits nor leaves. Its heartbeats stop, so after
//! `session.timeout.ms` (1.5 s here) the group rebalances and the
//! survivors read its partitions from the last committed offsets: records
//! it had read but not committed are delivered a second time (at-least-once),
//! and none is lost.
//!
//! Progress goes to stderr; stdout gets one JSON line:
//!
//! ```text
//! {"produced":30000,"consumed_unique":30000,"duplicates":412,"rebalances":3,"lost":0,...}
//! ```
//!
//! `rebalances` counts the group generations the consumers were assigned
//! partitions in; `lost` (= `produced - consumed_unique`) must be 0, or the
//! example exits with an error. The data stays in `DIR` (default: a fresh
//! temporary directory, whose path is printed). Run again on the same
//! directory and the group resumes from its committed offsets: only the new
//! run's records are read.

#![allow(clippy::print_stdout, reason = "an example prints its results")]

use std::collections::BTreeSet;
use std::error::Error;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use logbus::{
    Cluster, ClusterConfig, Consumer, ConsumerConfig, ConsumerRebalanceListener, NewTopic,
    OffsetReset, Producer, ProducerConfig, ProducerRecord, TopicPartition,
};

const TOPIC: &str = "events";
const PARTITIONS: u32 = 6;
const GROUP: &str = "event-counters";
const RECORDS: u64 = 30_000;
const CONSUMERS: usize = 3;
/// The consumer that crashes once half the records are consumed.
const VICTIM: usize = 2;
const DEADLINE: Duration = Duration::from_secs(60);

type BoxError = Box<dyn Error + Send + Sync>;

/// What the threads share.
struct Shared {
    started: Instant,
    /// The first number of this run: the log's size when it started, so a
    /// rerun on the same directory sends numbers no earlier run used.
    base: u64,
    /// How many times each of this run's numbers was consumed.
    deliveries: Mutex<Vec<u32>>,
    /// Numbers consumed at least once.
    unique: AtomicU64,
    /// Records the producer had appended (acknowledged).
    produced: AtomicU64,
    producer_done: AtomicBool,
    /// Generations in which some consumer was assigned partitions.
    generations: Mutex<BTreeSet<i32>>,
    /// Set to stop every thread early after a failure.
    abort: AtomicBool,
    /// Set when the deadline passed: the consumers stop and the example
    /// reports what it saw.
    timed_out: AtomicBool,
}

impl Shared {
    fn log(&self, line: &str) {
        let ms = self.started.elapsed().as_millis();
        eprintln!("[{ms:>5} ms] {line}");
    }

    /// Counts one consumed number; returns false for numbers of earlier
    /// runs.
    fn consumed(&self, number: u64) -> bool {
        let Some(i) = number.checked_sub(self.base) else {
            return false;
        };
        let mut deliveries = self.deliveries.lock().expect("no thread panics holding it");
        let Some(count) = usize::try_from(i).ok().and_then(|i| deliveries.get_mut(i)) else {
            return false;
        };
        *count += 1;
        if *count == 1 {
            self.unique.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    fn all_consumed(&self) -> bool {
        self.producer_done.load(Ordering::Acquire)
            && self.unique.load(Ordering::Relaxed) >= self.produced.load(Ordering::Acquire)
    }
}

/// Reports each consumer's assignments and notes their generations.
struct Progress {
    name: String,
    shared: Arc<Shared>,
}

impl ConsumerRebalanceListener for Progress {
    fn on_partitions_revoked(&mut self, _: &mut Consumer, partitions: &[TopicPartition]) {
        if !partitions.is_empty() {
            let list = partition_list(partitions);
            self.shared.log(&format!(
                "{}: revoked {list} (auto-committed first)",
                self.name
            ));
        }
    }

    fn on_partitions_assigned(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
        let generation = consumer.generation().unwrap_or(-1);
        self.shared
            .generations
            .lock()
            .expect("no thread panics holding it")
            .insert(generation);
        let list = partition_list(partitions);
        self.shared.log(&format!(
            "{}: generation {generation}, assigned {list}",
            self.name
        ));
    }

    fn on_partitions_lost(&mut self, _: &mut Consumer, partitions: &[TopicPartition]) {
        let list = partition_list(partitions);
        self.shared.log(&format!(
            "{}: lost {list} (removed from the group)",
            self.name
        ));
    }
}

fn partition_list(partitions: &[TopicPartition]) -> String {
    let numbers: Vec<String> = partitions
        .iter()
        .map(|tp| tp.partition.to_string())
        .collect();
    format!("partitions [{}]", numbers.join(", "))
}

fn main() -> Result<(), BoxError> {
    let dir = match std::env::args_os().nth(1) {
        Some(dir) => PathBuf::from(dir),
        None => tempfile::Builder::new()
            .prefix("logbus-consumer-group-")
            .tempdir()?
            .keep(),
    };
    eprintln!("data directory: {}", dir.display());

    // Sessions far shorter than Kafka's 45 s default, so the crash is
    // noticed quickly: the cluster must allow them.
    let config = ClusterConfig::builder()
        .group_min_session_timeout(Duration::from_secs(1))
        .build()?;
    let cluster = Cluster::open(&dir, config)?;
    let topic = cluster.create_topic_if_not_exists(NewTopic::new(TOPIC, PARTITIONS))?;
    let base = topic
        .partitions()?
        .iter()
        .map(|p| p.log_end_offset())
        .sum::<Result<u64, _>>()?;
    let shared = Arc::new(Shared {
        started: Instant::now(),
        base,
        deliveries: Mutex::new(vec![0; usize::try_from(RECORDS)?]),
        unique: AtomicU64::new(0),
        produced: AtomicU64::new(0),
        producer_done: AtomicBool::new(false),
        generations: Mutex::new(BTreeSet::new()),
        abort: AtomicBool::new(false),
        timed_out: AtomicBool::new(false),
    });

    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|i| {
            let (cluster, shared) = (cluster.clone(), shared.clone());
            thread::Builder::new()
                .name(format!("consumer-{i}"))
                .spawn(move || {
                    let result = consume(&cluster, i, &shared);
                    if result.is_err() {
                        shared.abort.store(true, Ordering::Release);
                    }
                    result
                })
        })
        .collect::<Result<_, _>>()?;
    let producer = {
        let (cluster, shared) = (cluster.clone(), shared.clone());
        thread::Builder::new()
            .name("producer".into())
            .spawn(move || {
                let result = produce(&cluster, &shared);
                shared.producer_done.store(true, Ordering::Release);
                if result.is_err() {
                    shared.abort.store(true, Ordering::Release);
                }
                result
            })?
    };

    producer
        .join()
        .map_err(|_| "the producer thread panicked")??;
    let mut per_consumer = Vec::new();
    for handle in consumers {
        per_consumer.push(handle.join().map_err(|_| "a consumer thread panicked")??);
    }
    let elapsed = shared.started.elapsed();
    report_offsets(&cluster, &shared)?;
    cluster.close()?;

    let produced = shared.produced.load(Ordering::Acquire);
    let unique = shared.unique.load(Ordering::Acquire);
    let deliveries = shared.deliveries.lock().expect("threads are done");
    let duplicates: u64 = deliveries
        .iter()
        .map(|&n| u64::from(n.saturating_sub(1)))
        .sum();
    let rebalances = shared.generations.lock().expect("threads are done").len();
    let lost = produced.saturating_sub(unique);
    let counts: Vec<String> = per_consumer.iter().map(u64::to_string).collect();
    shared.log(&format!(
        "done: {produced} produced, {unique} consumed, {duplicates} duplicates, \
         per consumer [{}]",
        counts.join(", ")
    ));
    println!(
        "{{\"produced\":{produced},\"consumed_unique\":{unique},\"duplicates\":{duplicates},\
         \"rebalances\":{rebalances},\"lost\":{lost},\"per_consumer\":[{}],\
         \"elapsed_ms\":{},\"dir\":{}}}",
        counts.join(","),
        elapsed.as_millis(),
        json_string(&dir.display().to_string())
    );
    if lost > 0 {
        return Err(format!("{lost} records were never consumed").into());
    }
    if shared.timed_out.load(Ordering::Acquire) {
        return Err(format!("the consumers stopped at the {DEADLINE:?} deadline").into());
    }
    Ok(())
}

/// Sends this run's numbers in bursts, so that records keep arriving while
/// the group rebalances.
fn produce(cluster: &Cluster, shared: &Arc<Shared>) -> Result<(), BoxError> {
    let producer = Producer::new(cluster, ProducerConfig::default())?;
    let failed = Arc::new(AtomicU64::new(0));
    for number in shared.base..shared.base + RECORDS {
        if shared.abort.load(Ordering::Acquire) {
            break;
        }
        let text = number.to_string();
        let record = ProducerRecord::new(TOPIC, &text).with_key(text);
        let (acked, failed) = (shared.clone(), failed.clone());
        producer.send_with_callback(record, move |result| match result {
            Ok(_) => {
                acked.produced.fetch_add(1, Ordering::AcqRel);
            }
            Err(_) => {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        })?;
        let sent = number - shared.base + 1;
        if sent.is_multiple_of(1_000) {
            // About 30 bursts over ~0.6 s.
            thread::sleep(Duration::from_millis(20));
        }
        if sent.is_multiple_of(10_000) {
            shared.log(&format!("producer: sent {sent} records"));
        }
    }
    producer.close()?;
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(format!("{failed} sends failed").into());
    }
    shared.log("producer: done");
    Ok(())
}

/// One consumer's thread: polls until every record is consumed (the
/// victim: until half of them are, then it crashes). Returns how many
/// records it consumed.
fn consume(cluster: &Cluster, index: usize, shared: &Arc<Shared>) -> Result<u64, BoxError> {
    let name = format!("consumer-{index}");
    let config = ConsumerConfig::builder()
        .group_id(GROUP)
        .client_id(name.clone())
        .auto_offset_reset(OffsetReset::Earliest)
        .session_timeout(Duration::from_millis(1_500))
        .heartbeat_interval(Duration::from_millis(300))
        .enable_auto_commit(true)
        .auto_commit_interval(Duration::from_millis(200))
        .build()?;
    let mut consumer = Consumer::new(cluster, config)?;
    consumer.set_rebalance_listener(Progress {
        name: name.clone(),
        shared: shared.clone(),
    });
    consumer.subscribe([TOPIC])?;
    let mut consumed = 0u64;
    loop {
        if shared.started.elapsed() > DEADLINE && !shared.timed_out.swap(true, Ordering::AcqRel) {
            shared.log(&format!(
                "{name}: not everything was consumed within {DEADLINE:?}"
            ));
        }
        if shared.timed_out.load(Ordering::Acquire) || shared.abort.load(Ordering::Acquire) {
            consumer.close()?;
            return Ok(consumed);
        }
        let records = consumer.poll(Duration::from_millis(100))?;
        for record in &records {
            let number = record
                .value()
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or("a record whose value is not a number")?;
            if shared.consumed(number) {
                consumed += 1;
            }
        }
        if index == VICTIM && shared.unique.load(Ordering::Relaxed) >= RECORDS / 2 {
            let owned = partition_list(&consumer.assignment());
            shared.log(&format!(
                "{name}: crashing after {consumed} records, owning {owned}: no commit, no \
                 leave; the group notices when its session times out"
            ));
            drop(consumer);
            return Ok(consumed);
        }
        if shared.all_consumed() {
            // Commits what was read, revokes and leaves.
            consumer.close()?;
            shared.log(&format!("{name}: everything consumed; closed"));
            return Ok(consumed);
        }
    }
}

/// Prints each partition's committed offset next to its log end.
fn report_offsets(cluster: &Cluster, shared: &Shared) -> Result<(), BoxError> {
    let committed = cluster.list_group_offsets(GROUP)?;
    let topic = cluster.topic(TOPIC)?;
    let mut lines = Vec::new();
    for partition in topic.partitions()? {
        let tp = TopicPartition::new(TOPIC, partition.partition());
        let end = partition.log_end_offset()?;
        let at = committed.get(&tp).map_or(0, |m| m.offset);
        lines.push(format!("{}: {at}/{end}", tp.partition));
    }
    shared.log(&format!(
        "committed/log end per partition: {}",
        lines.join(", ")
    ));
    Ok(())
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
