//! Exactly once: a consume-transform-produce pipeline that survives
//! crashes and fences its own zombie.
//!
//! ```text
//! cargo run --release --example exactly_once [DIR]
//! ```
//!
//! Three brokers; an input topic of 4 partitions filled with numbered
//! records, and an output topic of 4 partitions, both with replication
//! factor 3. The pipeline is one consumer group member (`read_committed`,
//! static membership, no auto commit) and one transactional producer
//! (`transactional.id` `etl-0`). For each poll it begins a transaction,
//! sends one output record per input record (the input's partition, offset
//! and value), adds the consumer's positions with
//! `send_offsets_to_transaction` (with the consumer's `group_metadata`, so
//! the group refuses them if the member lost its generation), and commits
//! — so an input record's
//! output and the group's progress past it become visible together, or
//! not at all. Every seventh transaction is aborted on purpose (the
//! consumer goes back to the committed offsets and processes the records
//! again).
//!
//! Meanwhile the pipeline is crashed several times in the middle of a
//! transaction (its consumer and producer dropped without closing: the
//! open transaction stays open) and restarted with the same
//! `transactional.id`, whose `init_transactions` aborts what the crashed
//! instance left. Once, an instance is not dead but stalled: a new
//! instance takes over, and when the stalled one wakes up and tries to
//! commit it is fenced (`ProducerFenced`) and gives up.
//!
//! Finally a `read_committed` consumer reads the whole output topic and
//! checks that every input record's output is there exactly once. One
//! JSON line goes to stdout:
//!
//! ```text
//! {"input":...,"output_committed":...,"duplicates":0,"missing":0,
//!  "aborted_transactions":...,"fenced_zombies":1,"elapsed_ms":...}
//! ```
//!
//! The example exits with an error if `duplicates` or `missing` is not 0.
//! The data stays in `DIR` (default: a fresh temporary directory, whose
//! path is printed on stderr).

#![allow(clippy::print_stdout, reason = "an example prints its results")]

use std::collections::{BTreeMap, HashMap};
use std::error::Error;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use logbus::{
    Cluster, ClusterConfig, Consumer, ConsumerConfig, IsolationLevel, NewTopic, OffsetAndMetadata,
    OffsetReset, Producer, ProducerConfig, ProducerRecord, TopicConfig, TopicPartition,
};

const INPUT: &str = "input";
const OUTPUT: &str = "output";
const PARTITIONS: u32 = 4;
const RECORDS: u64 = 20_000;
const GROUP: &str = "etl";
const TRANSACTIONAL_ID: &str = "etl-0";
/// Input records per transaction (at most).
const PER_TRANSACTION: usize = 250;
/// How long one poll waits for input.
const POLL: Duration = Duration::from_millis(100);
/// How long the pipeline may take before the example gives up.
const WAIT: Duration = Duration::from_secs(120);

type BoxError = Box<dyn Error + Send + Sync>;

/// What the run counts.
#[derive(Default)]
struct Counts {
    /// Transactions aborted: on purpose, and those a crashed instance left
    /// open (aborted by the next instance's `init_transactions`).
    aborted: u64,
    committed: u64,
    fenced_zombies: u64,
    crashes: u64,
}

/// How an instance of the pipeline ends.
#[derive(Clone, Copy, Debug)]
enum Fate {
    /// Crashes in the middle of its `n`-th transaction: sends half of its
    /// output, then is dropped without committing or closing.
    CrashDuring(u64),
    /// After `n` transactions it stalls in the middle of its next one; a
    /// new instance takes over, then the stalled one tries to commit and
    /// is fenced.
    StallDuring(u64),
    /// Runs until the input is consumed, then closes.
    Finish,
}

fn main() -> Result<(), BoxError> {
    let dir = match std::env::args_os().nth(1) {
        Some(dir) => PathBuf::from(dir),
        None => tempfile::Builder::new()
            .prefix("logbus-exactly-once-")
            .tempdir()?
            .keep(),
    };
    eprintln!("data directory: {}", dir.display());
    let started = Instant::now();
    let config = ClusterConfig::builder()
        .brokers(3)
        .default_replication_factor(3)
        .group_min_session_timeout(Duration::from_secs(1))
        .build()?;
    let cluster = Cluster::open(&dir, config)?;
    let topic_config = TopicConfig::new().min_insync_replicas(2)?;
    for topic in [INPUT, OUTPUT] {
        cluster.create_topic(
            NewTopic::new(topic, PARTITIONS)
                .replication_factor(3)
                .config(topic_config.clone()),
        )?;
    }
    fill_input(&cluster)?;

    let mut counts = Counts::default();
    let fates = [
        Fate::CrashDuring(5),
        Fate::CrashDuring(9),
        Fate::StallDuring(6),
        Fate::CrashDuring(4),
        Fate::Finish,
    ];
    let mut stalled: Option<Pipeline> = None;
    for fate in fates {
        let mut pipeline = Pipeline::start(&cluster, &mut counts)?;
        if let Some(zombie) = stalled.take() {
            // The stalled instance wakes up: its transaction was aborted
            // and its epoch bumped by the new instance's init_transactions.
            match zombie.finish_transaction() {
                Err(logbus::Error::ProducerFenced { .. }) => counts.fenced_zombies += 1,
                Err(e) => return Err(format!("the zombie failed otherwise: {e}").into()),
                Ok(()) => return Err("the zombie committed after it was replaced".into()),
            }
        }
        match fate {
            Fate::CrashDuring(n) => {
                pipeline.run(&mut counts, Some(n), started)?;
                pipeline.half_transaction()?;
                counts.crashes += 1;
                eprintln!("crash after {n} transactions");
                // Dropped: no commit, no close, no leave.
                drop(pipeline);
            }
            Fate::StallDuring(n) => {
                pipeline.run(&mut counts, Some(n), started)?;
                pipeline.half_transaction()?;
                eprintln!("stall after {n} transactions: a new instance takes over");
                stalled = Some(pipeline);
            }
            Fate::Finish => {
                pipeline.run(&mut counts, None, started)?;
                pipeline.close()?;
            }
        }
    }

    let (output_committed, duplicates, missing) = check_output(&cluster)?;
    let elapsed = started.elapsed();
    cluster.close()?;
    println!(
        "{{\"input\":{RECORDS},\"output_committed\":{output_committed},\
         \"duplicates\":{duplicates},\"missing\":{missing},\
         \"aborted_transactions\":{},\"fenced_zombies\":{},\"elapsed_ms\":{}}}",
        counts.aborted,
        counts.fenced_zombies,
        elapsed.as_millis()
    );
    if duplicates > 0 || missing > 0 {
        return Err(format!("{duplicates} duplicated and {missing} missing outputs").into());
    }
    Ok(())
}

/// Writes the numbered input records, keyed by their number.
fn fill_input(cluster: &Cluster) -> Result<(), BoxError> {
    let producer = Producer::new(cluster, ProducerConfig::builder().build()?)?;
    for n in 0..RECORDS {
        let key = format!("k{n}");
        let value = n.to_string();
        drop(producer.send(ProducerRecord::new(INPUT, value).with_key(key))?);
    }
    producer.close()?;
    Ok(())
}

/// An input record being processed.
struct Input {
    partition: TopicPartition,
    offset: u64,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
}

/// One instance of the pipeline: its consumer and its producer.
struct Pipeline {
    consumer: Consumer,
    producer: Producer,
    /// The input records of the transaction in progress.
    batch: Vec<Input>,
}

impl Pipeline {
    /// Starts an instance: a static group member and a transactional
    /// producer whose `init_transactions` fences any earlier instance and
    /// aborts the transaction it left open.
    fn start(cluster: &Cluster, counts: &mut Counts) -> Result<Pipeline, BoxError> {
        let consumer_config = ConsumerConfig::builder()
            .group_id(GROUP)
            .group_instance_id("etl-member-0")
            .isolation_level(IsolationLevel::ReadCommitted)
            .enable_auto_commit(false)
            .auto_offset_reset(OffsetReset::Earliest)
            .max_poll_records(PER_TRANSACTION)
            .session_timeout(Duration::from_secs(1))
            .heartbeat_interval(Duration::from_millis(200))
            .build()?;
        let mut consumer = Consumer::new(cluster, consumer_config)?;
        consumer.subscribe([INPUT])?;
        let producer = Producer::new(
            cluster,
            ProducerConfig::builder()
                .transactional_id(TRANSACTIONAL_ID)
                .build()?,
        )?;
        producer.init_transactions()?;
        if counts.committed + counts.aborted > 0 {
            // The previous instance crashed or stalled with a transaction
            // open; init_transactions aborted it.
            counts.aborted += 1;
        }
        Ok(Pipeline {
            consumer,
            producer,
            batch: Vec::new(),
        })
    }

    /// Processes transactions until `limit` of them are done (or the
    /// input is consumed).
    fn run(
        &mut self,
        counts: &mut Counts,
        limit: Option<u64>,
        started: Instant,
    ) -> Result<(), BoxError> {
        let mut done = 0;
        while limit.is_none_or(|l| done < l) {
            if started.elapsed() > WAIT {
                return Err("the pipeline did not finish in time".into());
            }
            if self.consumed_all()? {
                return Ok(());
            }
            if !self.poll()? {
                continue;
            }
            self.producer.begin_transaction()?;
            self.send_outputs(self.batch.len())?;
            let seq = counts.committed + counts.aborted;
            if seq % 7 == 6 {
                self.producer.abort_transaction()?;
                self.rewind()?;
                counts.aborted += 1;
            } else {
                self.finish_transaction()?;
                counts.committed += 1;
            }
            done += 1;
        }
        Ok(())
    }

    /// Polls the next input records into `batch`; false if none came.
    fn poll(&mut self) -> Result<bool, BoxError> {
        let records = self.consumer.poll(POLL)?;
        self.batch = records
            .iter()
            .map(|r| Input {
                partition: r.topic_partition(),
                offset: r.offset(),
                key: r.key().map(<[u8]>::to_vec),
                value: r.value().unwrap_or_default().to_vec(),
            })
            .collect();
        Ok(!self.batch.is_empty())
    }

    /// Sends the output of the first `n` records of `batch`.
    fn send_outputs(&self, n: usize) -> Result<(), BoxError> {
        for input in &self.batch[..n] {
            let value = format!(
                "{}:{}:{}",
                input.partition.partition,
                input.offset,
                String::from_utf8_lossy(&input.value)
            );
            let mut record = ProducerRecord::new(OUTPUT, value);
            if let Some(key) = &input.key {
                record = record.with_key(key.clone());
            }
            drop(self.producer.send(record)?);
        }
        Ok(())
    }

    /// Begins a transaction and sends half of the next poll's output, as
    /// an instance would that is about to crash or stall.
    fn half_transaction(&mut self) -> Result<(), BoxError> {
        while !self.poll()? {
            if self.consumed_all()? {
                break;
            }
        }
        self.producer.begin_transaction()?;
        self.send_outputs(self.batch.len() / 2)?;
        self.producer.flush()?;
        Ok(())
    }

    /// Adds the consumer's positions to the transaction and commits it.
    fn finish_transaction(&self) -> Result<(), logbus::Error> {
        let mut offsets = BTreeMap::new();
        for input in &self.batch {
            let next = OffsetAndMetadata::new(input.offset + 1);
            offsets
                .entry(input.partition.clone())
                .and_modify(|o: &mut OffsetAndMetadata| {
                    if o.offset < next.offset {
                        *o = next.clone();
                    }
                })
                .or_insert(next);
        }
        self.producer
            .send_offsets_to_transaction(&offsets, self.consumer.group_metadata()?)?;
        self.producer.commit_transaction()
    }

    /// Moves the consumer back to the group's committed offsets after an
    /// abort, so the aborted records are processed again.
    fn rewind(&mut self) -> Result<(), BoxError> {
        let assigned = self.consumer.assignment();
        let committed = self.consumer.committed(&assigned)?;
        for tp in &assigned {
            match committed.get(tp) {
                Some(meta) => self.consumer.seek(tp, meta.offset)?,
                None => self.consumer.seek_to_beginning(std::slice::from_ref(tp))?,
            }
        }
        Ok(())
    }

    /// Whether the group has committed past every input record.
    fn consumed_all(&self) -> Result<bool, BoxError> {
        let partitions: Vec<TopicPartition> = (0..PARTITIONS)
            .map(|p| TopicPartition::new(INPUT, p))
            .collect();
        let committed = self.consumer.committed(&partitions)?;
        let done: u64 = committed.values().map(|m| m.offset).sum();
        Ok(done >= RECORDS)
    }

    fn close(self) -> Result<(), BoxError> {
        self.producer.close()?;
        self.consumer.close()?;
        Ok(())
    }
}

/// Reads the whole output topic with a read_committed consumer: how many
/// records it holds, how many inputs appear more than once (counting each
/// extra copy) and how many inputs never appear.
fn check_output(cluster: &Cluster) -> Result<(u64, u64, u64), BoxError> {
    let config = ConsumerConfig::builder()
        .isolation_level(IsolationLevel::ReadCommitted)
        .auto_offset_reset(OffsetReset::Earliest)
        .build()?;
    let mut consumer = Consumer::new(cluster, config)?;
    let partitions: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|p| TopicPartition::new(OUTPUT, p))
        .collect();
    consumer.assign(&partitions)?;
    let ends = consumer.end_offsets(&partitions)?;
    let mut seen: HashMap<u64, u64> = HashMap::new();
    let mut total = 0;
    let deadline = Instant::now() + WAIT;
    loop {
        let mut at_end = true;
        for tp in &partitions {
            if consumer.position(tp)? < ends[tp] {
                at_end = false;
            }
        }
        if at_end {
            break;
        }
        if Instant::now() > deadline {
            return Err("reading the output did not finish in time".into());
        }
        for record in consumer.poll(POLL)?.iter() {
            total += 1;
            let value = String::from_utf8_lossy(record.value().unwrap_or_default()).into_owned();
            let number: u64 = value
                .rsplit(':')
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("an output record that is not ours: {value:?}"))?;
            *seen.entry(number).or_default() += 1;
        }
    }
    consumer.close()?;
    let duplicates = seen.values().map(|&n| n - 1).sum();
    let missing = (0..RECORDS).filter(|n| !seen.contains_key(n)).count() as u64;
    Ok((total, duplicates, missing))
}
