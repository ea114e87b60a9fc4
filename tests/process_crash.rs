//! Process crashes (kill -9): a child process works on a [`Cluster`] and the
//! parent kills it with SIGKILL at a moment drawn from a seed, reopens the
//! directory and checks everything the child acknowledged.
//!
//! - `kill9_produce_acks1`: two producer threads (`acks=1`, the default
//!   page-cache flush policy; one waits on [`SendFuture`]s, one uses
//!   callbacks) send keyed records with checkable payloads to a 4-partition
//!   topic with 64 KiB segments, while checkpoints are written every 10 ms.
//!   The child prints a line for every record once its handle or callback
//!   said `Ok`. After each reopen: every acknowledged record is at its
//!   acknowledged offset; each writer's records are in each partition
//!   exactly once, in send order, without a hole; offsets are dense; and the
//!   batches seen at the previous reopen are still there byte for byte, so
//!   no offset ever holds two different records.
//! - `kill9_group_commits`: one or two consumers of a group (any of the four
//!   assignors) commit what they processed (`commit_sync` or
//!   `commit_offsets`) while a producer feeds the topic; the child prints
//!   each committed position once the commit returned `Ok`. After each
//!   reopen the group's committed offsets never went backwards, are at least
//!   the last printed commit of each partition and at most the log end; and
//!   a restarted member never commits below what was committed before the
//!   kill. The produced records are checked as above.
//!
//! The kill moments: right after the spawn; while the child opens (and so
//! recovers) the cluster; after reading k lines of acknowledgements or
//! commits, k drawn from the trial's seed (from 0 to thousands, so some
//! kills land in a roll or a checkpoint write); or while it closes the
//! cluster. The parent kills upon reading a line: no sleeps, no timing
//! assumptions. Lines the child wrote before it died are read after the
//! kill too: each was written after its acknowledgement. After about half
//! of the kills the parent reopens and checks; after the others the next
//! child recovers straight from the kill, so recovery after recovery and
//! kills during recovery are exercised. A directory serves up to 100
//! trials, then a fresh one starts.
//!
//! `harness = false`: `main` is the test runner (it understands the test
//! harness's `--list`, `--exact`, `--ignored`, `--skip` and name filters;
//! failures set the exit status) and, when `LOGBUS_CRASH_CHILD` is set, the
//! child: the same binary, so the child costs no extra build.
//! `LOGBUS_CRASH_TRIALS` (default 50 per test) and `LOGBUS_CRASH_SEED`
//! (decimal or 0x-hex; default fixed) choose the run. Every trial prints its
//! seed; a failure names the test, trial, seed and base seed (rerunning
//! with that base seed and at least that many trials replays the same
//! plans; where a kill lands within a plan depends on timing).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::num::NonZeroU32;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitCode, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use common::{Rng, with_context};
use logbus::format::BatchHeader;
use logbus::{
    Acks, Cluster, ClusterConfig, Compression, Consumer, ConsumerConfig, Error, NewTopic,
    OffsetAndMetadata, OffsetReset, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
    SendFuture, TopicConfig, TopicPartition, partition_for_key,
};

/// Set in a child's environment: its role, `produce` or `commit`.
const CHILD_ENV: &str = "LOGBUS_CRASH_CHILD";
/// The cluster directory a child opens.
const DIR_ENV: &str = "LOGBUS_CRASH_DIR";
/// The child's [`Plan`], encoded.
const PLAN_ENV: &str = "LOGBUS_CRASH_PLAN";
/// Trials per test (default [`DEFAULT_TRIALS`]).
const TRIALS_ENV: &str = "LOGBUS_CRASH_TRIALS";
/// The base seed every trial's seed derives from.
const SEED_ENV: &str = "LOGBUS_CRASH_SEED";

const DEFAULT_TRIALS: usize = 50;
const DEFAULT_SEED: u64 = 0x6b69_6c6c_2d6e_696e;
/// Trials on one directory before a fresh one starts (the checks read the
/// whole log at every reopen, so this keeps long runs linear).
const CHAIN: usize = 100;
/// How long the parent waits for a line (or for the child's end) before it
/// declares the child hung. Only a hang detector: a healthy child prints
/// within milliseconds.
const WATCHDOG: Duration = Duration::from_secs(120);
/// Keys cycle through `k0` .. `k22`.
const KEYS: u64 = 23;
/// The consumer group of the commit test.
const GROUP: &str = "crash-group";
const ASSIGNORS: [&str; 4] = ["range", "roundrobin", "sticky", "cooperative-sticky"];
/// Unacknowledged sends a handle-waiting writer keeps in flight.
const WINDOW: usize = 48;

fn main() -> ExitCode {
    if let Some(role) = std::env::var_os(CHILD_ENV) {
        return child::main(&role.to_string_lossy());
    }
    runner::main()
}

/// What a child does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Two producer threads, acks=1.
    Produce,
    /// A producer thread and one or two group members committing.
    Commit,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Produce => "produce",
            Role::Commit => "commit",
        }
    }

    fn parse(name: &str) -> Option<Role> {
        [Role::Produce, Role::Commit]
            .into_iter()
            .find(|r| r.name() == name)
    }

    fn topic(self) -> &'static str {
        match self {
            Role::Produce => "crash",
            Role::Commit => "work",
        }
    }

    fn partitions(self) -> u32 {
        match self {
            Role::Produce => 4,
            Role::Commit => 3,
        }
    }
}

/// One child's settings, drawn by the parent from the trial's seed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    /// The trial number: part of every payload.
    trial: u32,
    /// Records each writer sends before it stops.
    cap: u64,
    /// Close the cluster once the writers are done (else idle until killed).
    close: bool,
    compression: Compression,
    linger_ms: u64,
    batch_size: u64,
    /// Group members (commit test).
    members: u32,
    /// Index into [`ASSIGNORS`].
    assignor: usize,
    max_poll_records: usize,
}

impl Plan {
    fn encode(&self) -> String {
        format!(
            "{} {} {} {} {} {} {} {} {}",
            self.trial,
            self.cap,
            u8::from(self.close),
            self.compression.id(),
            self.linger_ms,
            self.batch_size,
            self.members,
            self.assignor,
            self.max_poll_records
        )
    }

    fn decode(text: &str) -> Option<Plan> {
        let f: Vec<u64> = text
            .split(' ')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let [
            trial,
            cap,
            close,
            compression,
            linger_ms,
            batch_size,
            members,
            assignor,
            polls,
        ] = f[..]
        else {
            return None;
        };
        Some(Plan {
            trial: u32::try_from(trial).ok()?,
            cap,
            close: close == 1,
            compression: Compression::from_id(u8::try_from(compression).ok()?).ok()?,
            linger_ms,
            batch_size,
            members: u32::try_from(members).ok()?,
            assignor: usize::try_from(assignor)
                .ok()
                .filter(|a| *a < ASSIGNORS.len())?,
            max_poll_records: usize::try_from(polls).ok()?,
        })
    }
}

/// One record's identity: which trial's which writer sent it, as its
/// `seq`-th record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Id {
    trial: u32,
    writer: u32,
    seq: u64,
}

/// The key slot of a writer's `seq`-th record: keys cycle, differently per
/// writer.
fn slot(writer: u32, seq: u64) -> u64 {
    (seq * 7 + u64::from(writer) * 3) % KEYS
}

fn key_of(id: Id) -> String {
    format!("k{}", slot(id.writer, id.seq))
}

/// `trial:writer:seq:` and 16 to 128 letters derived from the three.
fn value_of(id: Id) -> String {
    let mut value = format!("{}:{}:{}:", id.trial, id.writer, id.seq);
    let len = 16 + (id.seq * 13 + u64::from(id.writer) * 7 + u64::from(id.trial)) % 113;
    let mut rng = Rng(id.seq ^ (u64::from(id.trial) << 32) ^ (u64::from(id.writer) << 60));
    for _ in 0..len {
        value.push(char::from(b'a' + (rng.next_u64() % 26) as u8));
    }
    value
}

/// The identity a value claims (checked against [`value_of`] by callers).
fn parse_id(value: &[u8]) -> Option<Id> {
    let text = std::str::from_utf8(value).ok()?;
    let mut fields = text.splitn(4, ':');
    Some(Id {
        trial: fields.next()?.parse().ok()?,
        writer: fields.next()?.parse().ok()?,
        seq: fields.next()?.parse().ok()?,
    })
}

/// Checks a record's key and value against its claimed identity.
fn check_record(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Id, String> {
    let value = value.ok_or("a record without a value")?;
    let id = parse_id(value).ok_or_else(|| {
        format!(
            "a value not written by a writer: {:?}",
            String::from_utf8_lossy(value)
        )
    })?;
    if value != value_of(id).as_bytes() {
        return Err(format!(
            "the value of {id:?} is damaged: {:?}",
            String::from_utf8_lossy(value)
        ));
    }
    if key != Some(key_of(id).as_bytes()) {
        return Err(format!(
            "{id:?} has key {:?}",
            key.map(String::from_utf8_lossy)
        ));
    }
    Ok(id)
}

/// The partition of each key slot under the default (murmur2) partitioner.
fn partition_table(partitions: u32) -> Vec<u32> {
    let count = NonZeroU32::new(partitions).expect("partitions > 0");
    (0..KEYS)
        .map(|s| partition_for_key(format!("k{s}").as_bytes(), count))
        .collect()
}

/// Both processes use the same settings: the default (page-cache) flush
/// policy, checkpoints every 10 ms, Kafka's default 10 MiB preallocated
/// indexes (an open after a kill rebuilds the untrimmed ones without
/// reading them) and an index entry every 512 bytes.
fn cluster_config() -> ClusterConfig {
    let defaults = TopicConfig::new()
        .set("index.interval.bytes", "512")
        .expect("valid topic defaults");
    ClusterConfig::builder()
        .topic_defaults(defaults)
        .checkpoint_interval(Duration::from_millis(10))
        .build()
        .expect("valid cluster config")
}

/// 64 KiB segments (a roll every few hundred records per partition), and
/// nothing deleted by retention.
fn topic_config() -> TopicConfig {
    TopicConfig::new()
        .segment_bytes(64 * 1024)
        .unwrap()
        .retention_time(None)
}

/// The child: prints `O` before it opens the cluster, `R` once the topic is
/// there, `A writer seq partition offset` for every acknowledged record,
/// `C member partition offset` for every committed position, `I` when its
/// writers are done (then it waits to be killed), and `CLOSING`/`CLOSED`
/// around a clean close. Exits when its stdin closes (the parent died).
mod child {
    use super::*;
    use std::collections::VecDeque;

    pub(super) fn main(role: &str) -> ExitCode {
        let Some(role) = Role::parse(role) else {
            fail(&format!("unknown role {role:?}"));
        };
        let dir = std::env::var_os(DIR_ENV).unwrap_or_else(|| fail("no directory"));
        let plan = std::env::var(PLAN_ENV)
            .ok()
            .and_then(|p| Plan::decode(&p))
            .unwrap_or_else(|| fail("no plan"));
        exit_when_orphaned();
        let result = match role {
            Role::Produce => produce(Path::new(&dir), &plan),
            Role::Commit => commit(Path::new(&dir), &plan),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&format!("{} trial {}: {e}", role.name(), plan.trial)),
        }
    }

    /// Writes a line and flushes it; exits if the parent is gone.
    fn say(line: &str) {
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            std::process::exit(4);
        }
    }

    fn fail(message: &str) -> ! {
        eprintln!("process_crash child: {message}");
        std::process::exit(2)
    }

    /// The parent holds the child's stdin until it kills it: end of input
    /// means the parent died, so the child must not linger.
    fn exit_when_orphaned() {
        std::thread::spawn(|| {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 64];
            while let Ok(1..) = stdin.read(&mut buf) {}
            std::process::exit(3);
        });
    }

    fn open(dir: &Path, role: Role) -> logbus::Result<Cluster> {
        say("O");
        let cluster = Cluster::open(dir, cluster_config())?;
        let topic = NewTopic::new(role.topic(), role.partitions()).config(topic_config());
        match cluster.create_topic(topic) {
            Ok(_) | Err(Error::TopicAlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
        say("R");
        Ok(cluster)
    }

    fn producer(cluster: &Cluster, plan: &Plan) -> logbus::Result<Producer> {
        let config = ProducerConfig::builder()
            .acks(Acks::Leader)
            .linger(Duration::from_millis(plan.linger_ms))
            .batch_size(plan.batch_size)
            .compression(plan.compression)
            // Small, so a writer far ahead of its acknowledgements blocks.
            .buffer_memory(256 * 1024)
            .build()?;
        Producer::new(cluster, config)
    }

    fn record(role: Role, id: Id) -> ProducerRecord {
        ProducerRecord::new(role.topic(), value_of(id)).with_key(key_of(id))
    }

    fn acknowledge(id: Id, result: logbus::Result<RecordMetadata>) {
        match result {
            Ok(meta) => {
                let offset = meta
                    .offset()
                    .unwrap_or_else(|| fail(&format!("{id:?} acknowledged without an offset")));
                say(&format!(
                    "A {} {} {} {offset}",
                    id.writer,
                    id.seq,
                    meta.partition()
                ));
            }
            Err(e) => fail(&format!("sending {id:?} failed: {e}")),
        }
    }

    /// Sends `plan.cap` records, each acknowledged from its callback.
    fn write_with_callbacks(
        cluster: &Cluster,
        role: Role,
        plan: &Plan,
        writer: u32,
    ) -> logbus::Result<()> {
        let producer = producer(cluster, plan)?;
        for seq in 0..plan.cap {
            let id = Id {
                trial: plan.trial,
                writer,
                seq,
            };
            producer.send_with_callback(record(role, id), move |result| acknowledge(id, result))?;
        }
        producer.close()
    }

    /// Sends `plan.cap` records, waiting for the oldest handle once
    /// [`WINDOW`] are in flight.
    fn write_with_handles(
        cluster: &Cluster,
        role: Role,
        plan: &Plan,
        writer: u32,
    ) -> logbus::Result<()> {
        let producer = producer(cluster, plan)?;
        let mut window: VecDeque<(Id, SendFuture)> = VecDeque::new();
        for seq in 0..plan.cap {
            let id = Id {
                trial: plan.trial,
                writer,
                seq,
            };
            window.push_back((id, producer.send(record(role, id))?));
            if window.len() >= WINDOW
                && let Some((id, handle)) = window.pop_front()
            {
                acknowledge(id, handle.wait());
            }
        }
        for (id, handle) in window {
            acknowledge(id, handle.wait());
        }
        producer.close()
    }

    /// After the writers: a clean close, or idling until the kill.
    fn finish(cluster: &Cluster, plan: &Plan) -> logbus::Result<()> {
        if plan.close {
            say("CLOSING");
            cluster.close()?;
            say("CLOSED");
            return Ok(());
        }
        say("I");
        loop {
            std::thread::park();
        }
    }

    fn produce(dir: &Path, plan: &Plan) -> logbus::Result<()> {
        let cluster = open(dir, Role::Produce)?;
        std::thread::scope(|s| {
            let a = s.spawn(|| write_with_callbacks(&cluster, Role::Produce, plan, 0));
            let b = s.spawn(|| write_with_handles(&cluster, Role::Produce, plan, 1));
            a.join().unwrap_or_else(|_| fail("writer 0 panicked"))?;
            b.join().unwrap_or_else(|_| fail("writer 1 panicked"))
        })?;
        finish(&cluster, plan)
    }

    /// A producer feeds the topic while the members consume and commit;
    /// the members run until the kill (or fail the child).
    fn commit(dir: &Path, plan: &Plan) -> logbus::Result<()> {
        let cluster = open(dir, Role::Commit)?;
        std::thread::scope(|s| {
            for member in 0..plan.members {
                let cluster = &cluster;
                s.spawn(move || {
                    if let Err(e) = consume(cluster, plan, member) {
                        fail(&format!("member {member}: {e}"));
                    }
                });
            }
            if let Err(e) = write_with_handles(&cluster, Role::Commit, plan, 0) {
                fail(&format!("writer 0: {e}"));
            }
            say("I");
        });
        unreachable!("the members never stop")
    }

    fn consume(cluster: &Cluster, plan: &Plan, member: u32) -> logbus::Result<()> {
        let config = ConsumerConfig::builder()
            .group_id(GROUP)
            .client_id(format!("member-{member}"))
            .auto_offset_reset(OffsetReset::Earliest)
            .enable_auto_commit(false)
            .max_poll_records(plan.max_poll_records)
            .partition_assignment_strategy([ASSIGNORS[plan.assignor]])
            .build()?;
        let mut consumer = Consumer::new(cluster, config)?;
        consumer.subscribe([Role::Commit.topic()])?;
        loop {
            let records = consumer.poll(Duration::from_millis(50))?;
            let mut next: BTreeMap<TopicPartition, OffsetAndMetadata> = BTreeMap::new();
            for r in &records {
                if let Err(e) = check_record(r.key(), r.value()) {
                    fail(&format!(
                        "member {member} read {}@{}: {e}",
                        r.partition(),
                        r.offset()
                    ));
                }
                next.insert(r.topic_partition(), OffsetAndMetadata::new(r.offset() + 1));
            }
            if next.is_empty() {
                continue;
            }
            // Even members commit what they processed, odd ones their
            // positions; both are exactly the offsets after the records.
            let committed = if member.is_multiple_of(2) {
                consumer.commit_offsets(&next)
            } else {
                consumer.commit_sync()
            };
            match committed {
                Ok(()) => {
                    for (tp, meta) in &next {
                        say(&format!("C {member} {} {}", tp.partition, meta.offset));
                    }
                }
                Err(
                    Error::RebalanceInProgress { .. }
                    | Error::CommitFailed { .. }
                    | Error::UnknownMemberId { .. }
                    | Error::IllegalGeneration { .. },
                ) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// The parent: the test runner, the trials, the checks.
mod runner {
    use super::*;

    /// When the parent kills the child.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Kill {
        /// Right after the spawn, before the child printed anything.
        AtSpawn,
        /// Upon `O`: while the child opens (recovers) the cluster.
        WhileOpening,
        /// After `k` acknowledgement or commit lines (upon `R` for 0).
        AfterLines(u64),
        /// Upon `CLOSING`: during `Cluster::close`, or after the child
        /// already exited.
        WhileClosing,
    }

    struct Test {
        name: &'static str,
        role: Role,
    }

    const TESTS: [Test; 2] = [
        Test {
            name: "kill9_produce_acks1",
            role: Role::Produce,
        },
        Test {
            name: "kill9_group_commits",
            role: Role::Commit,
        },
    ];

    /// The test harness's command line, as far as it concerns us.
    #[derive(Debug, Default)]
    struct Args {
        list: bool,
        terse: bool,
        ignored: bool,
        bench: bool,
        exact: bool,
        filters: Vec<String>,
        skips: Vec<String>,
    }

    impl Args {
        fn parse(args: impl IntoIterator<Item = String>) -> Args {
            let mut out = Args::default();
            let mut args = args.into_iter();
            while let Some(arg) = args.next() {
                let (flag, inline) = match arg.split_once('=') {
                    Some((flag, value)) if flag.starts_with("--") => {
                        (flag.to_owned(), Some(value.to_owned()))
                    }
                    _ => (arg.clone(), None),
                };
                let mut value = || inline.clone().or_else(|| args.next()).unwrap_or_default();
                match flag.as_str() {
                    "--list" => out.list = true,
                    "--ignored" => out.ignored = true,
                    "--bench" => out.bench = true,
                    "--exact" => out.exact = true,
                    "--skip" => out.skips.push(value()),
                    "--format" => out.terse = value() == "terse",
                    "--test-threads" | "--color" | "--logfile" | "--shuffle-seed" | "-Z" => {
                        value();
                    }
                    // --nocapture, --quiet, --include-ignored, --test, ...
                    f if f.starts_with('-') => {}
                    _ => out.filters.push(arg),
                }
            }
            out
        }

        fn matches(&self, pattern: &str, name: &str) -> bool {
            if self.exact {
                name == pattern
            } else {
                name.contains(pattern)
            }
        }

        /// Whether the named (not ignored) test runs: none does under
        /// `--ignored` or `--bench`.
        fn selects(&self, name: &str) -> bool {
            !self.ignored
                && !self.bench
                && (self.filters.is_empty() || self.filters.iter().any(|f| self.matches(f, name)))
                && !self.skips.iter().any(|s| self.matches(s, name))
        }
    }

    pub(super) fn main() -> ExitCode {
        let args = Args::parse(std::env::args().skip(1));
        let selected: Vec<&Test> = TESTS.iter().filter(|t| args.selects(t.name)).collect();
        let mut out = std::io::stdout();
        if args.list {
            for test in &selected {
                let _ = writeln!(out, "{}: test", test.name);
            }
            if !args.terse {
                let _ = writeln!(out, "\n{} tests, 0 benchmarks", selected.len());
            }
            return ExitCode::SUCCESS;
        }
        let trials = match std::env::var(TRIALS_ENV) {
            Ok(text) => match text.parse::<usize>() {
                Ok(n) => n,
                Err(_) => {
                    eprintln!("{TRIALS_ENV}={text:?} is not a number");
                    return ExitCode::FAILURE;
                }
            },
            Err(_) => DEFAULT_TRIALS,
        };
        let seed = match std::env::var(SEED_ENV) {
            Ok(text) => match parse_seed(&text) {
                Some(seed) => seed,
                None => {
                    eprintln!("{SEED_ENV}={text:?} is not a number");
                    return ExitCode::FAILURE;
                }
            },
            Err(_) => DEFAULT_SEED,
        };
        let _ = writeln!(out, "\nrunning {} tests", selected.len());
        let mut failed = Vec::new();
        for test in &selected {
            let outcome = std::panic::catch_unwind(|| run_trials(test.role, trials, seed));
            let verdict = if outcome.is_ok() { "ok" } else { "FAILED" };
            let _ = writeln!(out, "test {} ... {verdict}", test.name);
            if outcome.is_err() {
                failed.push(test.name);
            }
        }
        let _ = writeln!(
            out,
            "\ntest result: {}. {} passed; {} failed; 0 ignored; 0 measured; {} filtered out\n",
            if failed.is_empty() { "ok" } else { "FAILED" },
            selected.len() - failed.len(),
            failed.len(),
            TESTS.len() - selected.len()
        );
        if failed.is_empty() {
            ExitCode::SUCCESS
        } else {
            let _ = writeln!(out, "failures: {failed:?}");
            ExitCode::FAILURE
        }
    }

    fn parse_seed(text: &str) -> Option<u64> {
        match text.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => text.parse().ok(),
        }
    }

    /// The seed of trial `i` of a test.
    fn trial_seed(base: u64, role: Role, i: usize) -> u64 {
        let tag = match role {
            Role::Produce => 0x5052,
            Role::Commit => 0x434d,
        };
        Rng(base ^ (tag << 48) ^ i as u64).next_u64()
    }

    /// A count of lines spread over four orders of magnitude.
    fn spread(rng: &mut Rng) -> u64 {
        match rng.below(4) {
            0 => rng.below(10),
            1 => rng.below(200),
            2 => rng.below(1500),
            _ => rng.below(5000),
        }
    }

    fn draw(role: Role, trial: u32, rng: &mut Rng) -> (Plan, Kill) {
        let roll = rng.below(100);
        let kill = match (role, roll) {
            (_, 0..5) => Kill::AtSpawn,
            (_, 5..20) => Kill::WhileOpening,
            (Role::Produce, 20..35) => Kill::WhileClosing,
            _ => Kill::AfterLines(spread(rng)),
        };
        let cap = match (role, kill) {
            // Two writers: k lines come after k/2 records each.
            (Role::Produce, Kill::AfterLines(k)) => k.div_ceil(2) + rng.below(400),
            // One writer: enough acknowledgements alone to reach k.
            (Role::Commit, Kill::AfterLines(k)) => k + rng.below(400),
            (_, Kill::WhileClosing) => rng.below(1500),
            _ => rng.below(3000),
        };
        let compressions = [
            Compression::None,
            Compression::None,
            Compression::Lz4,
            Compression::Snappy,
            Compression::Gzip,
            Compression::Zstd,
        ];
        let plan = Plan {
            trial,
            cap,
            close: kill == Kill::WhileClosing,
            compression: compressions[rng.below(compressions.len() as u64) as usize],
            linger_ms: rng.below(3),
            batch_size: [256, 2048, 16384][rng.below(3) as usize],
            members: 1 + rng.below(2) as u32,
            assignor: rng.below(ASSIGNORS.len() as u64) as usize,
            max_poll_records: [1, 7, 100][rng.below(3) as usize],
        };
        (plan, kill)
    }

    fn run_trials(role: Role, trials: usize, base: u64) {
        let started = Instant::now();
        let mut current: Option<Chain> = None;
        let mut total = Outcome::default();
        for i in 0..trials {
            if i % CHAIN == 0 {
                current = Some(Chain::new(role));
            }
            let chain = current.as_mut().expect("a chain");
            let seed = trial_seed(base, role, i);
            let mut rng = Rng(seed);
            let trial = u32::try_from(i).expect("trial number fits u32");
            let (plan, kill) = draw(role, trial, &mut rng);
            let last_of_chain = i + 1 == trials || (i + 1) % CHAIN == 0;
            let check = last_of_chain || rng.below(2) == 0;
            let what = format!(
                "process_crash {} trial {i} (seed {seed:#018x}; base seed {base:#x}; {kill:?}; {plan:?})",
                role.name()
            );
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                with_context(&what, || chain.trial(&plan, kill, check))
            }))
            .unwrap_or_else(|panic| {
                // Keep the evidence.
                if let Some(failed) = current.take() {
                    let kept = failed.dir.keep();
                    eprintln!("process_crash: the directory is kept at {}", kept.display());
                }
                std::panic::resume_unwind(panic)
            });
            eprintln!(
                "process_crash {}: trial {i} seed {seed:#018x} {kill:?}: {}",
                role.name(),
                outcome.describe(role)
            );
            total.add(&outcome);
        }
        let elapsed = started.elapsed();
        eprintln!(
            "process_crash {}: {trials} trials (base seed {base:#x}) in {elapsed:.1?}, \
             {:.1} trials/s; in all {}",
            role.name(),
            trials as f64 / elapsed.as_secs_f64().max(1e-9),
            total.describe(role)
        );
    }

    /// What one trial (or, summed, a run) saw.
    #[derive(Debug, Default)]
    struct Outcome {
        /// Acknowledgement lines read.
        acks: usize,
        /// Commit lines read.
        commits: usize,
        /// Children that exited by themselves (a clean close that finished
        /// before the kill).
        exited: usize,
        /// Segment files the kill left ending inside a batch.
        torn: usize,
        /// The torn files, relative to the cluster directory.
        torn_files: Vec<String>,
        /// Temporary files (`*.tmp`: a checkpoint or metadata file being
        /// replaced) the kill left.
        temp_files: usize,
        /// Reopens (with checks), records read at them, the time the opens
        /// took.
        reopens: usize,
        records: usize,
        opening: Duration,
    }

    impl Outcome {
        fn add(&mut self, other: &Outcome) {
            self.acks += other.acks;
            self.commits += other.commits;
            self.exited += other.exited;
            self.torn += other.torn;
            self.temp_files += other.temp_files;
            self.reopens += other.reopens;
            self.records += other.records;
            self.opening += other.opening;
        }

        fn describe(&self, role: Role) -> String {
            let mut text = format!("{} acks", self.acks);
            if role == Role::Commit {
                text += &format!(", {} commits", self.commits);
            }
            if self.exited > 0 {
                text += &format!(", {} exited before the kill", self.exited);
            }
            if self.torn > 0 {
                text += &format!(", {} torn segments", self.torn);
                if !self.torn_files.is_empty() {
                    text += &format!(" ({})", self.torn_files.join(", "));
                }
            }
            if self.temp_files > 0 {
                text += &format!(", {} temporary files", self.temp_files);
            }
            if self.reopens > 0 {
                text += &format!(
                    "; {} reopens (opening took {:.1?}) checked {} records",
                    self.reopens, self.opening, self.records
                );
            }
            text
        }
    }

    /// An acknowledgement line.
    #[derive(Debug, Clone, Copy)]
    struct Ack {
        id: Id,
        partition: u32,
        offset: u64,
    }

    /// One directory and what is known about it across trials.
    struct Chain {
        role: Role,
        dir: tempfile::TempDir,
        table: Vec<u32>,
        /// Records per writer each trial sent at most.
        caps: HashMap<u32, u64>,
        /// Acknowledgements since the last reopen (older ones were checked
        /// then, and their batches must stay unchanged).
        acks: Vec<Ack>,
        /// Each partition as the last reopen saw it.
        seen: Vec<Seen>,
        /// The largest printed commit of each partition, over all trials.
        printed: BTreeMap<u32, u64>,
        /// Committed offsets at the last reopen.
        committed: BTreeMap<u32, u64>,
        /// No restarted member may commit below this: the largest commit
        /// printed by earlier trials or read at the last reopen.
        floor: BTreeMap<u32, u64>,
    }

    impl Chain {
        fn new(role: Role) -> Chain {
            Chain {
                role,
                dir: tempfile::tempdir().expect("tempdir"),
                table: partition_table(role.partitions()),
                caps: HashMap::new(),
                acks: Vec::new(),
                seen: (0..role.partitions()).map(|_| Seen::default()).collect(),
                printed: BTreeMap::new(),
                committed: BTreeMap::new(),
                floor: BTreeMap::new(),
            }
        }

        fn trial(&mut self, plan: &Plan, kill: Kill, check: bool) -> Outcome {
            let (lines, exited) = run_child(self.role, self.dir.path(), plan, kill);
            self.caps.insert(plan.trial, plan.cap);
            let (acks, commits) = self.absorb(plan, &lines);
            let (torn_files, temp_files) = debris(self.dir.path());
            let mut outcome = Outcome {
                acks,
                commits,
                exited: usize::from(exited),
                torn: torn_files.len(),
                torn_files,
                temp_files,
                ..Outcome::default()
            };
            if check {
                let (records, opening) = self.check();
                outcome.reopens = 1;
                outcome.records = records;
                outcome.opening = opening;
            }
            outcome
        }

        /// Parses the child's lines; checks what can be checked from them
        /// alone. Returns the numbers of acknowledgements and commits.
        fn absorb(&mut self, plan: &Plan, lines: &[String]) -> (usize, usize) {
            let (mut acks, mut commits) = (0, 0);
            // Per writer and partition: the last acknowledged (seq, offset).
            let mut last_ack: HashMap<(u32, u32), (u64, u64)> = HashMap::new();
            // Per member and partition: the last printed commit.
            let mut last_commit: HashMap<(u32, u32), u64> = HashMap::new();
            for line in lines {
                let fields: Vec<&str> = line.split(' ').collect();
                let numbers = || -> Vec<u64> {
                    fields[1..]
                        .iter()
                        .map(|f| f.parse().unwrap_or_else(|_| panic!("bad line {line:?}")))
                        .collect()
                };
                match fields[0] {
                    "O" | "R" | "I" | "CLOSING" | "CLOSED" => {}
                    "A" => {
                        let [writer, seq, partition, offset] = numbers()[..] else {
                            panic!("bad line {line:?}");
                        };
                        let (writer, partition) = (writer as u32, partition as u32);
                        let id = Id {
                            trial: plan.trial,
                            writer,
                            seq,
                        };
                        assert!(seq < plan.cap, "{id:?} beyond the cap {}", plan.cap);
                        assert_eq!(
                            partition,
                            self.table[slot(writer, seq) as usize],
                            "{id:?} acknowledged on the wrong partition"
                        );
                        if let Some((s, o)) = last_ack.insert((writer, partition), (seq, offset)) {
                            assert!(
                                s < seq && o < offset,
                                "writer {writer}'s acknowledgements on partition {partition} \
                                 out of order: seq {s} at {o}, then seq {seq} at {offset}"
                            );
                        }
                        self.acks.push(Ack {
                            id,
                            partition,
                            offset,
                        });
                        acks += 1;
                    }
                    "C" => {
                        let [member, partition, offset] = numbers()[..] else {
                            panic!("bad line {line:?}");
                        };
                        let (member, partition) = (member as u32, partition as u32);
                        assert_eq!(self.role, Role::Commit, "a commit line from a producer");
                        let floor = self.floor.get(&partition).copied().unwrap_or(0);
                        assert!(
                            offset >= floor,
                            "member {member} committed {offset} on partition {partition}, \
                             below {floor} committed before the kill"
                        );
                        if let Some(last) = last_commit.insert((member, partition), offset) {
                            assert!(
                                last <= offset,
                                "member {member}'s commits on partition {partition} went back \
                                 from {last} to {offset}"
                            );
                        }
                        let max = self.printed.entry(partition).or_insert(0);
                        *max = (*max).max(offset);
                        commits += 1;
                    }
                    _ => panic!("unexpected line from the child: {line:?}"),
                }
            }
            for (p, offset) in &self.printed {
                let floor = self.floor.entry(*p).or_insert(0);
                *floor = (*floor).max(*offset);
            }
            (acks, commits)
        }

        /// Reopens the directory and checks the log (and the group's
        /// commits); returns the number of records read.
        /// Reopens the directory and checks the log (and the group's
        /// commits); returns the number of new records read and the time
        /// the open took.
        fn check(&mut self) -> (usize, Duration) {
            let started = Instant::now();
            let cluster =
                Cluster::open(self.dir.path(), cluster_config()).expect("reopen after the kill");
            let opened = started.elapsed();
            let records = self.check_log(&cluster);
            if self.role == Role::Commit {
                self.check_commits(&cluster);
            }
            cluster.close().expect("close after the check");
            (records, opened)
        }

        /// Checks every partition against what the last reopen saw and the
        /// acknowledgements since; returns the number of new records.
        fn check_log(&mut self, cluster: &Cluster) -> usize {
            let name = self.role.topic();
            let topic = match cluster.topic(name) {
                Ok(topic) => topic,
                Err(Error::UnknownTopicOrPartition { .. }) => {
                    // Killed before the topic's creation returned.
                    assert!(
                        self.acks.is_empty(),
                        "acknowledged records but no topic {name}"
                    );
                    assert!(
                        self.seen.iter().all(|s| s.end == 0),
                        "topic {name} vanished"
                    );
                    return 0;
                }
                Err(e) => panic!("topic {name}: {e}"),
            };
            assert_eq!(topic.partition_count(), self.role.partitions());
            let mut fresh = Vec::new();
            for (p, seen) in (0..).zip(&mut self.seen) {
                let partition = topic.partition(p).expect("partition");
                let start = seen.end;
                fresh.push((start, seen.extend(&partition, &self.table, &self.caps)));
            }
            for ack in &self.acks {
                let (start, ids) = &fresh[ack.partition as usize];
                let found = ack
                    .offset
                    .checked_sub(*start)
                    .and_then(|i| ids.get(i as usize));
                assert_eq!(
                    found,
                    Some(&ack.id),
                    "acknowledged {:?} is not at partition {} offset {} (new records from {start} \
                     to {})",
                    ack.id,
                    ack.partition,
                    ack.offset,
                    start + ids.len() as u64
                );
            }
            self.acks.clear();
            fresh.iter().map(|(_, ids)| ids.len()).sum()
        }

        fn check_commits(&mut self, cluster: &Cluster) {
            let offsets = cluster.list_group_offsets(GROUP).expect("group offsets");
            let mut committed = BTreeMap::new();
            for (tp, meta) in &offsets {
                assert_eq!(tp.topic, self.role.topic(), "a commit for {tp}");
                let end = self.seen[tp.partition as usize].end;
                assert!(
                    meta.offset <= end,
                    "committed {} on {tp} beyond its log end {end}",
                    meta.offset
                );
                committed.insert(tp.partition, meta.offset);
            }
            for (p, printed) in &self.printed {
                let now = committed.get(p).copied();
                assert!(
                    now.is_some_and(|c| c >= *printed),
                    "partition {p}: committed {now:?} after the kill, but {printed} was \
                     committed before it"
                );
            }
            for (p, before) in &self.committed {
                let now = committed.get(p).copied();
                assert!(
                    now.is_some_and(|c| c >= *before),
                    "partition {p}: committed {now:?}, below {before} at the previous reopen"
                );
            }
            for (p, offset) in &committed {
                let floor = self.floor.entry(*p).or_insert(0);
                *floor = (*floor).max(*offset);
            }
            self.committed = committed;
        }
    }

    /// One partition as the last reopen saw it.
    #[derive(Debug, Default)]
    struct Seen {
        /// The log end offset.
        end: u64,
        /// Every batch below `end`, byte for byte.
        bytes: Vec<u8>,
        /// Per trial and writer, the smallest seq its next record in this
        /// partition may have.
        next: HashMap<(u32, u32), u64>,
    }

    impl Seen {
        /// Reads the partition: the batches below the previous end must be
        /// unchanged, byte for byte (so no offset ever holds a different
        /// record); the records after it are checked one by one (dense
        /// offsets; keys, values and partitions; each writer's records in
        /// send order without a hole or a repeat) and returned, by offset.
        fn extend(
            &mut self,
            partition: &logbus::Partition,
            table: &[u32],
            caps: &HashMap<u32, u64>,
        ) -> Vec<Id> {
            let p = partition.partition();
            assert_eq!(
                partition.log_start_offset().expect("log start"),
                0,
                "partition {p}"
            );
            let end = partition.log_end_offset().expect("log end");
            assert_eq!(
                partition.high_watermark().expect("high watermark"),
                end,
                "partition {p}"
            );
            assert!(
                end >= self.end,
                "partition {p} shrank from {} to {end} records",
                self.end
            );
            let mut at = 0;
            let mut position = 0;
            let mut ids = Vec::new();
            while at < end {
                let read = partition
                    .read(at, 1 << 20)
                    .unwrap_or_else(|e| panic!("read {p}@{at}: {e}"));
                let before = at;
                for batch in read.batches() {
                    let batch =
                        batch.unwrap_or_else(|e| panic!("partition {p}: a bad batch at {at}: {e}"));
                    let header = batch.header();
                    let (base, next) = (header.base_offset as u64, header.next_offset() as u64);
                    assert_eq!(base, at, "partition {p}: batches are contiguous");
                    let bytes = batch.as_bytes();
                    if next <= self.end {
                        let old = self.bytes.get(position..position + bytes.len());
                        assert!(
                            old == Some(&bytes[..]),
                            "partition {p}: the batch at offsets {base}..{next} changed since the \
                             last reopen"
                        );
                        position += bytes.len();
                    } else {
                        assert!(
                            base >= self.end,
                            "partition {p}: a batch at {base}..{next} straddles the previous end \
                             {}",
                            self.end
                        );
                        self.check_batch(p, &batch, table, caps, &mut ids);
                    }
                    at = next;
                }
                assert!(
                    at > before,
                    "partition {p}: a read at {at} below the end {end} made no progress"
                );
            }
            assert_eq!(at, end, "partition {p}: batches past the log end");
            self.end = end;
            ids
        }

        fn check_batch(
            &mut self,
            p: u32,
            batch: &logbus::format::Batch,
            table: &[u32],
            caps: &HashMap<u32, u64>,
            ids: &mut Vec<Id>,
        ) {
            let records = batch
                .records()
                .unwrap_or_else(|e| panic!("partition {p}: a bad batch: {e}"));
            for record in records {
                let record = record.unwrap_or_else(|e| panic!("partition {p}: a bad record: {e}"));
                let offset = record.offset() as u64;
                let expected = self.end + ids.len() as u64;
                assert_eq!(offset, expected, "partition {p}: offsets are dense");
                let id = check_record(record.key().map(|k| &k[..]), record.value().map(|v| &v[..]))
                    .unwrap_or_else(|e| panic!("partition {p} offset {offset}: {e}"));
                assert_eq!(
                    table[slot(id.writer, id.seq) as usize],
                    p,
                    "{id:?} at {offset} is on the wrong partition"
                );
                let cap = caps
                    .get(&id.trial)
                    .unwrap_or_else(|| panic!("{id:?} at {p}@{offset}: no such trial"));
                assert!(id.seq < *cap, "{id:?} at {p}@{offset} beyond the cap {cap}");
                let from = self.next.get(&(id.trial, id.writer)).copied().unwrap_or(0);
                assert!(
                    id.seq >= from,
                    "{id:?} at {p}@{offset} repeated or out of send order (expected seq >= {from})"
                );
                if let Some(missing) =
                    (from..id.seq).find(|&s| table[slot(id.writer, s) as usize] == p)
                {
                    panic!(
                        "partition {p} lost trial {} writer {} seq {missing}: {id:?} follows at \
                         {offset}",
                        id.trial, id.writer
                    );
                }
                self.next.insert((id.trial, id.writer), id.seq + 1);
                ids.push(id);
            }
            self.bytes.extend_from_slice(batch.as_bytes());
        }
    }

    /// A child that is killed and reaped if the parent panics.
    struct Reaper {
        child: Child,
        reaped: bool,
    }

    impl Reaper {
        fn kill(&mut self) {
            self.child.kill().expect("SIGKILL the child");
        }

        fn wait(&mut self) -> ExitStatus {
            let status = self.child.wait().expect("wait for the child");
            self.reaped = true;
            status
        }
    }

    impl Drop for Reaper {
        fn drop(&mut self) {
            if !self.reaped {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }

    /// Forwards the child's complete lines; a last line cut by the kill is
    /// dropped. The channel holds a few lines only, so the parent reads
    /// about as far as the child wrote.
    fn read_lines(stdout: ChildStdout) -> Receiver<String> {
        let (tx, rx) = mpsc::sync_channel(16);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) if !line.ends_with('\n') => return,
                    Ok(_) => {
                        if tx.send(line.trim_end().to_owned()).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        rx
    }

    #[cfg(unix)]
    fn killed(status: ExitStatus) -> bool {
        use std::os::unix::process::ExitStatusExt;
        status.signal() == Some(9)
    }

    #[cfg(not(unix))]
    fn killed(status: ExitStatus) -> bool {
        !status.success()
    }

    /// Runs one child until the kill; returns every complete line it wrote
    /// and whether it exited by itself first.
    fn run_child(role: Role, dir: &Path, plan: &Plan, kill: Kill) -> (Vec<String>, bool) {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut child = Command::new(exe)
            .env(CHILD_ENV, role.name())
            .env(DIR_ENV, dir)
            .env(PLAN_ENV, plan.encode())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the child");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut child = Reaper {
            child,
            reaped: false,
        };
        let lines_rx = read_lines(stdout);
        let mut lines = Vec::new();
        let mut counted = 0;
        let mut sent_kill = kill == Kill::AtSpawn;
        if sent_kill {
            child.kill();
        }
        while !sent_kill {
            match lines_rx.recv_timeout(WATCHDOG) {
                Ok(line) => {
                    if line.starts_with("A ") || line.starts_with("C ") {
                        counted += 1;
                    }
                    sent_kill = match kill {
                        Kill::AtSpawn => true,
                        Kill::WhileOpening => line == "O",
                        Kill::AfterLines(0) => line == "R",
                        Kill::AfterLines(k) => counted >= k,
                        Kill::WhileClosing => line == "CLOSING",
                    };
                    lines.push(line);
                    if sent_kill {
                        child.kill();
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "the child printed nothing for {WATCHDOG:?} ({} lines so far: hung?)",
                    lines.len()
                ),
                // It exited by itself; its status says how.
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // What it wrote before it died: each line came after its event.
        loop {
            match lines_rx.recv_timeout(WATCHDOG) {
                Ok(line) => lines.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("the child's output stayed open {WATCHDOG:?} after the kill")
                }
            }
        }
        let status = child.wait();
        let exited = !killed(status);
        if exited {
            assert!(
                status.success()
                    && plan.close
                    && lines.last().map(String::as_str) == Some("CLOSED"),
                "the child ended by itself ({status}) after {} lines; last: {:?}",
                lines.len(),
                lines.last()
            );
        }
        (lines, exited)
    }

    /// What the kill left in `dir`: the last segments that end inside a batch
    /// (a write cut short), and temporary files of a checkpoint or metadata
    /// file being replaced. Observed only, to show which windows the kills
    /// hit; recovery must cope with both.
    fn debris(dir: &Path) -> (Vec<String>, usize) {
        let (mut torn, mut temp_files) = (Vec::new(), 0);
        let mut dirs = vec![dir.to_path_buf()];
        while let Some(d) = dirs.pop() {
            let mut last_segment = None;
            for entry in std::fs::read_dir(&d).expect("read the cluster directory") {
                let path = entry.expect("directory entry").path();
                let name = path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                if path.is_dir() {
                    dirs.push(path);
                } else if name.ends_with(".tmp") {
                    temp_files += 1;
                } else if name.ends_with(".log") && last_segment.as_ref().is_none_or(|l| *l < path)
                {
                    last_segment = Some(path);
                }
            }
            if let Some(path) = last_segment {
                let bytes = std::fs::read(&path).expect("read a segment");
                let mut at = 0;
                while let Ok(header) = BatchHeader::parse(&bytes[at..]) {
                    if at + header.total_size() > bytes.len() {
                        break;
                    }
                    at += header.total_size();
                }
                if at != bytes.len() {
                    let name = path.strip_prefix(dir).unwrap_or(&path);
                    torn.push(name.display().to_string());
                }
            }
        }
        (torn, temp_files)
    }
}
