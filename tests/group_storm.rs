//! Join / leave / crash storms on one consumer group, every timeout driven
//! by a ManualClock.
//!
//! Random sequences of events — a member subscribes (dynamic or static),
//! closes, crashes (is dropped), restarts (a static member comes back under
//! its `group.instance.id`), commits; records are appended; the clock moves
//! by less than a session timeout — run against a pool of at most five
//! members driven round-robin with `poll(Duration::ZERO)`, under an eager
//! assignor (`range`) and the cooperative one (`cooperative-sticky`). The
//! proptest seed is fixed, so each run replays the same storms
//! (`PROPTEST_RNG_SEED` / `PROPTEST_CASES` explore others). After every poll
//! the storm checks:
//!
//! 1. no partition is owned by two members of one generation, and at any
//!    instant the live members' assignments are disjoint;
//! 2. every record is returned by some poll (checked once the storm stops
//!    and the group settles; duplicates are allowed and counted), and every
//!    record returned is the one appended at that offset;
//! 3. committed offsets never move backwards, and never past a record that
//!    no poll returned;
//! 4. within one member, a partition's records arrive at consecutive
//!    offsets, starting from the group's committed offset when the
//!    partition was assigned.
//!
//! Once the events stop, the storm settles the group, checks that every
//! record was returned and that a final commit covers every partition's
//! log end, and closes the members. The tests at the end pin down, in a
//! few lines each, three bugs the storms found (all fixed).

mod common;

use common::shm_tempdir;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use logbus::format::BatchBuilder;
use logbus::{
    Cluster, ClusterConfig, Compression, Consumer, ConsumerConfig, ConsumerRebalanceListener,
    Error, ManualClock, NewTopic, OffsetReset, TopicPartition,
};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

const T0: i64 = 1_700_000_000_000;
const TOPIC: &str = "storm";
const GROUP: &str = "storm-group";
const SESSION_MS: i64 = 10_000;
const HEARTBEAT_MS: u64 = 1_000;
const MAX_MEMBERS: usize = 5;
const RANGE: &[&str] = &["range"];
const COOPERATIVE: &[&str] = &["cooperative-sticky"];
/// The assignor lists of a group moving between `range` and
/// `cooperative-sticky` (a rolling upgrade or downgrade).
const MIXED: &[&[&str]] = &[
    &["cooperative-sticky", "range"],
    &["range", "cooperative-sticky"],
    &["range"],
];

#[derive(Debug, Clone)]
enum Event {
    /// A new member subscribes (ignored when the pool is full); a static
    /// one has a `group.instance.id`; `strategy` picks its assignors from
    /// the storm's lists.
    Join {
        auto_commit: bool,
        static_member: bool,
        strategy: usize,
    },
    /// Member `pick % len` crashes and comes back: a static member as a
    /// new consumer with the same `group.instance.id` (taking its place in
    /// the group), a dynamic one as a new member.
    Restart(usize),
    /// Member `pick % len` closes: commits (with auto commit), revokes and
    /// leaves.
    Close(usize),
    /// Member `pick % len` is dropped: no commit, no leave.
    Crash(usize),
    /// The clock moves by less than a session timeout.
    Advance(i64),
    /// Member `pick % len` calls `commit_sync`.
    Commit(usize),
    /// `count` records are appended to partition `partition % n`.
    Append { partition: u32, count: usize },
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => (any::<bool>(), prop::bool::weighted(0.25), any::<usize>()).prop_map(
            |(auto_commit, static_member, strategy)| Event::Join {
                auto_commit,
                static_member,
                strategy,
            }
        ),
        1 => any::<usize>().prop_map(Event::Restart),
        1 => any::<usize>().prop_map(Event::Close),
        1 => any::<usize>().prop_map(Event::Crash),
        4 => (1..SESSION_MS).prop_map(Event::Advance),
        2 => any::<usize>().prop_map(Event::Commit),
        4 => (any::<u32>(), 1usize..=12).prop_map(|(partition, count)| Event::Append { partition, count }),
    ]
}

/// What one member's rebalance listener tells the storm.
#[derive(Debug, Default)]
struct Track {
    /// Per assigned partition, the offset its next record must have.
    expect: BTreeMap<u32, u64>,
    /// `on_partitions_assigned` calls.
    assigned_calls: u64,
}

struct Tracker(Arc<Mutex<Track>>);

impl ConsumerRebalanceListener for Tracker {
    fn on_partitions_assigned(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
        // Reading starts at the committed offset (the log start without
        // one), looked up after this callback returns.
        let committed = consumer.committed(partitions).expect("committed offsets");
        let mut track = self.0.lock().unwrap();
        track.assigned_calls += 1;
        for tp in partitions {
            let start = committed.get(tp).map_or(0, |m| m.offset);
            track.expect.insert(tp.partition, start);
        }
    }

    fn on_partitions_revoked(&mut self, _: &mut Consumer, partitions: &[TopicPartition]) {
        let mut track = self.0.lock().unwrap();
        for tp in partitions {
            track.expect.remove(&tp.partition);
        }
    }

    fn on_partitions_lost(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
        self.on_partitions_revoked(consumer, partitions);
    }
}

struct Member {
    /// The storm's name for the member (member ids change on rejoin); a
    /// restarted static member keeps it.
    id: usize,
    /// How to start it again.
    setup: Setup,
    consumer: Consumer,
    track: Arc<Mutex<Track>>,
}

#[derive(Debug, Clone, Copy)]
struct Setup {
    auto_commit: bool,
    /// `group.instance.id` = `i{n}` for a static member.
    instance: Option<usize>,
    strategy: &'static [&'static str],
}

/// What a storm observed, for the summary line.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    produced: u64,
    duplicates: u64,
    members: usize,
    closes: u64,
    crashes: u64,
    restarts: u64,
    commits_ok: u64,
    commits_refused: u64,
    max_generation: i32,
    rebalance_callbacks: u64,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.produced += o.produced;
        self.duplicates += o.duplicates;
        self.members += o.members;
        self.closes += o.closes;
        self.crashes += o.crashes;
        self.restarts += o.restarts;
        self.commits_ok += o.commits_ok;
        self.commits_refused += o.commits_refused;
        self.max_generation = self.max_generation.max(o.max_generation);
        self.rebalance_callbacks += o.rebalance_callbacks;
    }
}

/// Returns `Err` with the formatted message (and the storm's recent trace)
/// when the condition fails.
macro_rules! check {
    ($storm:expr, $cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($storm.failure(format!($($fmt)+)));
        }
    };
}

struct Storm {
    _dir: tempfile::TempDir,
    clock: ManualClock,
    cluster: Cluster,
    /// The assignor lists members pick from.
    strategies: &'static [&'static [&'static str]],
    partitions: u32,
    members: Vec<Member>,
    next_member: usize,
    next_instance: usize,
    /// `values[p][offset]`: the number appended there.
    values: Vec<Vec<u64>>,
    /// `deliveries[p][offset]`: how many polls returned the record.
    deliveries: Vec<Vec<u32>>,
    next_value: u64,
    /// The committed offsets last read.
    committed: BTreeMap<u32, u64>,
    /// Per generation, per member, the partitions it reported owning
    /// (generations never repeat, even after the group empties).
    owners: BTreeMap<i32, BTreeMap<usize, BTreeSet<u32>>>,
    /// Assigned-callback counts of members gone from the pool.
    retired_callbacks: u64,
    stats: Stats,
    trace: Vec<String>,
}

impl Storm {
    fn new(strategies: &'static [&'static [&'static str]], partitions: u32) -> Storm {
        let dir = shm_tempdir();
        let clock = ManualClock::new(T0);
        let config = ClusterConfig::builder()
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap();
        let cluster = Cluster::open(dir.path(), config).unwrap();
        cluster
            .create_topic(NewTopic::new(TOPIC, partitions))
            .unwrap();
        let n = partitions as usize;
        Storm {
            _dir: dir,
            clock,
            cluster,
            strategies,
            partitions,
            members: Vec::new(),
            next_member: 0,
            next_instance: 0,
            values: vec![Vec::new(); n],
            deliveries: vec![Vec::new(); n],
            next_value: 0,
            committed: BTreeMap::new(),
            owners: BTreeMap::new(),
            retired_callbacks: 0,
            stats: Stats::default(),
            trace: Vec::new(),
        }
    }

    fn failure(&self, message: String) -> String {
        let start = self.trace.len().saturating_sub(40);
        format!(
            "{message}\n--- last {} trace lines ---\n{}",
            self.trace.len() - start,
            self.trace[start..].join("\n")
        )
    }

    fn note(&mut self, line: String) {
        self.trace.push(line);
    }

    fn join(&mut self, auto_commit: bool, static_member: bool, strategy: usize) {
        if self.members.len() >= MAX_MEMBERS {
            return;
        }
        let instance = static_member.then(|| {
            self.next_instance += 1;
            self.next_instance
        });
        let setup = Setup {
            auto_commit,
            instance,
            strategy: self.strategies[strategy % self.strategies.len()],
        };
        let id = self.next_member;
        self.next_member += 1;
        self.note(format!("m{id} joins: {setup:?}"));
        let member = self.start(id, setup);
        self.members.push(member);
    }

    fn start(&mut self, id: usize, setup: Setup) -> Member {
        let mut config = ConsumerConfig::builder()
            .group_id(GROUP)
            .client_id(format!("m{id}"))
            .auto_offset_reset(OffsetReset::Earliest)
            .session_timeout(Duration::from_millis(SESSION_MS as u64))
            .heartbeat_interval(Duration::from_millis(HEARTBEAT_MS))
            .max_poll_interval(Duration::from_millis(60_000))
            .enable_auto_commit(setup.auto_commit)
            .auto_commit_interval(Duration::from_millis(1_500))
            .max_poll_records(7)
            .partition_assignment_strategy(setup.strategy.iter().copied());
        if let Some(instance) = setup.instance {
            config = config.group_instance_id(format!("i{instance}"));
        }
        let mut consumer = Consumer::new(&self.cluster, config.build().unwrap()).unwrap();
        let track = Arc::new(Mutex::new(Track::default()));
        consumer.set_rebalance_listener(Tracker(track.clone()));
        consumer.subscribe([TOPIC]).unwrap();
        self.stats.members += 1;
        Member {
            id,
            setup,
            consumer,
            track,
        }
    }

    fn retire(&mut self, member: &Member) {
        self.retired_callbacks += member.track.lock().unwrap().assigned_calls;
    }

    fn append(&mut self, partition: u32, count: usize) {
        let p = partition % self.partitions;
        let mut batch = BatchBuilder::new(Compression::None);
        let mut values = Vec::with_capacity(count);
        for _ in 0..count {
            let v = self.next_value;
            self.next_value += 1;
            let text = v.to_string();
            batch.append(T0, Some(text.as_bytes()), Some(text.as_bytes()), &[]);
            values.push(v);
        }
        let info = self
            .cluster
            .topic(TOPIC)
            .unwrap()
            .partition(p)
            .unwrap()
            .append(&mut batch.build().unwrap().to_vec())
            .unwrap();
        let slot = &mut self.values[p as usize];
        assert_eq!(info.first_offset(), slot.len() as u64, "append offsets");
        slot.extend(values);
        self.deliveries[p as usize].resize(slot.len(), 0);
        self.stats.produced += count as u64;
    }

    fn apply(&mut self, event: &Event) -> Result<(), String> {
        match *event {
            Event::Join {
                auto_commit,
                static_member,
                strategy,
            } => self.join(auto_commit, static_member, strategy),
            Event::Close(pick) if !self.members.is_empty() => {
                let m = self.members.remove(pick % self.members.len());
                self.note(format!(
                    "m{} closes (generation {:?}, owns {:?})",
                    m.id,
                    m.consumer.generation(),
                    partitions_of(&m.consumer)
                ));
                self.retire(&m);
                let id = m.id;
                let result = m.consumer.close();
                check!(self, result.is_ok(), "m{id} close failed: {result:?}");
                self.stats.closes += 1;
            }
            Event::Crash(pick) if !self.members.is_empty() => {
                let m = self.members.remove(pick % self.members.len());
                self.note(format!(
                    "m{} crashes (generation {:?}, owns {:?})",
                    m.id,
                    m.consumer.generation(),
                    partitions_of(&m.consumer)
                ));
                self.retire(&m);
                drop(m);
                self.stats.crashes += 1;
            }
            Event::Restart(pick) if !self.members.is_empty() => {
                let i = pick % self.members.len();
                let m = self.members.remove(i);
                self.note(format!(
                    "m{} restarts (generation {:?}, owns {:?})",
                    m.id,
                    m.consumer.generation(),
                    partitions_of(&m.consumer)
                ));
                self.retire(&m);
                let (id, setup) = (m.id, m.setup);
                drop(m);
                self.stats.restarts += 1;
                if setup.instance.is_some() {
                    let member = self.start(id, setup);
                    self.members.insert(i, member);
                } else {
                    let strategy = self
                        .strategies
                        .iter()
                        .position(|s| *s == setup.strategy)
                        .unwrap_or(0);
                    self.join(setup.auto_commit, false, strategy);
                }
            }
            Event::Close(_) | Event::Crash(_) | Event::Restart(_) => {}
            Event::Advance(ms) => {
                self.clock.advance_ms(ms);
                self.note(format!("clock +{ms} ms"));
            }
            Event::Commit(pick) if !self.members.is_empty() => {
                let i = pick % self.members.len();
                let result = self.members[i].consumer.commit_sync();
                let id = self.members[i].id;
                self.note(format!("m{id} commit_sync: {result:?}"));
                match result {
                    Ok(()) => self.stats.commits_ok += 1,
                    Err(Error::CommitFailed { .. } | Error::RebalanceInProgress { .. }) => {
                        self.stats.commits_refused += 1;
                    }
                    Err(e) => check!(self, false, "m{id} commit_sync failed: {e}"),
                }
            }
            Event::Commit(_) => {}
            Event::Append { partition, count } => self.append(partition, count),
        }
        self.check_committed()
    }

    /// One round: every live member polls once, in pool order.
    fn round(&mut self) -> Result<(), String> {
        for i in 0..self.members.len() {
            self.poll(i)?;
        }
        Ok(())
    }

    fn poll(&mut self, i: usize) -> Result<(), String> {
        let before = (
            self.members[i].consumer.generation(),
            partitions_of(&self.members[i].consumer),
        );
        let result = self.members[i].consumer.poll(Duration::ZERO);
        let id = self.members[i].id;
        let records = match result {
            Ok(records) => records,
            Err(e) => return Err(self.failure(format!("m{id} poll failed: {e}"))),
        };
        let generation = self.members[i].consumer.generation();
        let owned = partitions_of(&self.members[i].consumer);
        if (generation, &owned) != (before.0, &before.1) {
            let member_id = self.members[i].consumer.member_id().map(short);
            self.note(format!(
                "m{id} ({member_id:?}) now generation {generation:?} owning {owned:?}"
            ));
        }
        // Invariant 4 and record integrity.
        let mut expect = std::mem::take(&mut self.members[i].track.lock().unwrap().expect);
        let mut failure = None;
        for r in records.iter() {
            let p = r.partition();
            let offset = r.offset();
            let value: u64 = std::str::from_utf8(r.value().unwrap())
                .unwrap()
                .parse()
                .unwrap();
            let appended = self.values[p as usize].get(offset as usize).copied();
            if appended != Some(value) {
                failure = Some(format!(
                    "m{id} read {value} at {TOPIC}-{p}@{offset}, where {appended:?} was appended"
                ));
                break;
            }
            match expect.get_mut(&p) {
                Some(next) if *next == offset => *next = offset + 1,
                next => {
                    failure = Some(format!(
                        "m{id} read {TOPIC}-{p}@{offset}, expected offset {next:?} \
                         (owns {owned:?})"
                    ));
                    break;
                }
            }
            self.deliveries[p as usize][offset as usize] += 1;
        }
        self.members[i].track.lock().unwrap().expect = expect;
        if let Some(message) = failure {
            return Err(self.failure(message));
        }
        if !records.is_empty() {
            let counts: BTreeMap<u32, usize> = records
                .partitions()
                .map(|tp| (tp.partition, records.records(tp).len()))
                .collect();
            self.note(format!("m{id} got records {counts:?}"));
        }
        // Invariant 1: one owner per partition per generation.
        if let Some(g) = generation {
            self.stats.max_generation = self.stats.max_generation.max(g);
            let owners = self.owners.entry(g).or_default();
            let clash =
                owners
                    .iter()
                    .filter(|(other, _)| **other != id)
                    .find_map(|(other, theirs)| {
                        let both: Vec<u32> = theirs.intersection(&owned).copied().collect();
                        (!both.is_empty()).then_some((*other, both))
                    });
            owners.entry(id).or_default().extend(owned.iter().copied());
            if let Some((other, both)) = clash {
                return Err(self.failure(format!(
                    "generation {g}: m{id} and m{other} both own partitions {both:?}"
                )));
            }
        }
        // Invariant 1, at this instant, across every live member.
        for a in 0..self.members.len() {
            for b in a + 1..self.members.len() {
                let pa = partitions_of(&self.members[a].consumer);
                let pb = partitions_of(&self.members[b].consumer);
                let both: Vec<u32> = pa.intersection(&pb).copied().collect();
                if !both.is_empty() {
                    let (ida, idb) = (self.members[a].id, self.members[b].id);
                    let ga = self.members[a].consumer.generation();
                    let gb = self.members[b].consumer.generation();
                    return Err(self.failure(format!(
                        "live members m{ida} (generation {ga:?}) and m{idb} (generation {gb:?}) \
                         both hold partitions {both:?}"
                    )));
                }
            }
        }
        self.check_committed()
    }

    /// Invariant 3: committed offsets only move forward, and only over
    /// records some poll returned.
    fn check_committed(&mut self) -> Result<(), String> {
        let now = self.cluster.list_group_offsets(GROUP).unwrap();
        for (tp, meta) in now {
            let p = tp.partition;
            let last = self.committed.get(&p).copied().unwrap_or(0);
            check!(
                self,
                meta.offset >= last,
                "committed offset of {tp} moved back from {last} to {}",
                meta.offset
            );
            let deliveries = &self.deliveries[p as usize];
            check!(
                self,
                meta.offset as usize <= deliveries.len(),
                "committed offset of {tp} is {} past the log end {}",
                meta.offset,
                deliveries.len()
            );
            if let Some(skipped) = (last..meta.offset).find(|&o| deliveries[o as usize] == 0) {
                return Err(self.failure(format!(
                    "committed offset of {tp} moved to {} over {tp}@{skipped}, which no poll \
                     returned",
                    meta.offset
                )));
            }
            if meta.offset != last {
                self.note(format!("committed {tp} = {}", meta.offset));
            }
            self.committed.insert(p, meta.offset);
        }
        Ok(())
    }

    fn undelivered(&self) -> Vec<(u32, u64)> {
        self.deliveries
            .iter()
            .enumerate()
            .flat_map(|(p, d)| {
                d.iter()
                    .enumerate()
                    .filter(|(_, n)| **n == 0)
                    .map(move |(o, _)| (p as u32, o as u64))
            })
            .collect()
    }

    /// The group's state once the storm stops: whether every live member
    /// reports the same generation, and which partitions no member owns.
    fn settlement(&self) -> (bool, BTreeSet<u32>) {
        let generations: BTreeSet<Option<i32>> = self
            .members
            .iter()
            .map(|m| m.consumer.generation())
            .collect();
        let owned: BTreeSet<u32> = self
            .members
            .iter()
            .flat_map(|m| partitions_of(&m.consumer))
            .collect();
        let orphans = (0..self.partitions)
            .filter(|p| !owned.contains(p))
            .collect();
        let one_generation = generations.len() == 1 && !generations.contains(&None);
        (one_generation, orphans)
    }

    /// Whether every member has read its partitions to their ends.
    fn caught_up(&self) -> bool {
        self.members.iter().all(|m| {
            let track = m.track.lock().unwrap();
            partitions_of(&m.consumer).iter().all(|p| {
                track.expect.get(p).copied() == Some(self.values[*p as usize].len() as u64)
            })
        })
    }

    /// Invariant 2: with no more events, the group settles and every record
    /// is returned; then the members commit everything and leave.
    fn finish(mut self) -> Result<Stats, String> {
        self.note("--- storm over, settling ---".into());
        if self.members.is_empty() {
            self.join(true, false, 0);
        }
        let mut done = false;
        for _ in 0..200 {
            self.clock.advance_ms(1_000);
            for _ in 0..4 {
                self.round()?;
            }
            let (one_generation, orphans) = self.settlement();
            if one_generation && orphans.is_empty() && self.caught_up() {
                done = self.undelivered().is_empty();
                break;
            }
        }
        if !done {
            let undelivered = self.undelivered();
            let summary: BTreeMap<u32, usize> =
                undelivered.iter().fold(BTreeMap::new(), |mut acc, (p, _)| {
                    *acc.entry(*p).or_default() += 1;
                    acc
                });
            let members: Vec<String> = self
                .members
                .iter()
                .map(|m| {
                    format!(
                        "m{} generation {:?} owns {:?}",
                        m.id,
                        m.consumer.generation(),
                        partitions_of(&m.consumer)
                    )
                })
                .collect();
            return Err(self.failure(format!(
                "the group did not settle with every record delivered and read to the end: \
                 undelivered per partition {summary:?}; members {members:?}"
            )));
        }
        for i in 0..self.members.len() {
            let result = self.members[i].consumer.commit_sync();
            let id = self.members[i].id;
            check!(
                self,
                result.is_ok(),
                "m{id} final commit failed: {result:?}"
            );
        }
        self.check_committed()?;
        for p in 0..self.partitions {
            let end = self.values[p as usize].len() as u64;
            let committed = self.committed.get(&p).copied().unwrap_or(0);
            check!(
                self,
                committed == end,
                "after the final commits {TOPIC}-{p} is committed at {committed}, not {end}"
            );
        }
        for m in std::mem::take(&mut self.members) {
            self.retire(&m);
            let id = m.id;
            let result = m.consumer.close();
            check!(self, result.is_ok(), "m{id} close failed: {result:?}");
        }
        self.stats.duplicates = self
            .deliveries
            .iter()
            .flatten()
            .map(|&n| u64::from(n.saturating_sub(1)))
            .sum();
        self.stats.rebalance_callbacks = self.retired_callbacks;
        Ok(self.stats)
    }
}

fn partitions_of(consumer: &Consumer) -> BTreeSet<u32> {
    consumer
        .assignment()
        .iter()
        .map(|tp| tp.partition)
        .collect()
}

fn short(member_id: &str) -> String {
    member_id.chars().take(12).collect()
}

/// Runs one storm: a couple of members first, then the events, each
/// followed by a round of polls (and one record appended, so records keep
/// arriving), then the settling phase.
fn run_storm(
    strategies: &'static [&'static [&'static str]],
    partitions: u32,
    events: &[Event],
) -> Result<Stats, String> {
    let mut storm = Storm::new(strategies, partitions);
    storm.join(true, false, 0);
    storm.join(false, false, 1);
    storm.round()?;
    for (step, event) in events.iter().enumerate() {
        storm.note(format!("step {step}: {event:?}"));
        storm.apply(event)?;
        storm.append(step as u32, 1);
        storm.round()?;
    }
    storm.finish()
}

/// 48 cases from a fixed seed (one per storm), so every run replays the
/// same storms; `PROPTEST_RNG_SEED` picks other ones (and `PROPTEST_CASES`
/// more).
fn storm_config(seed: u64) -> ProptestConfig {
    let defaults = ProptestConfig::default();
    let rng_seed = match defaults.rng_seed {
        RngSeed::Random => RngSeed::Fixed(seed),
        seed => seed,
    };
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() {
        defaults.cases
    } else {
        48
    };
    ProptestConfig {
        cases,
        rng_seed,
        max_shrink_iters: 200,
        failure_persistence: None,
        ..defaults
    }
}

static TOTALS: Mutex<BTreeMap<&str, (u32, Stats)>> = Mutex::new(BTreeMap::new());

fn storm_case(
    name: &'static str,
    strategies: &'static [&'static [&'static str]],
    partitions: u32,
    events: &[Event],
) -> Result<(), TestCaseError> {
    let stats = run_storm(strategies, partitions, events).map_err(TestCaseError::fail)?;
    let mut totals = TOTALS.lock().unwrap();
    let entry = totals.entry(name).or_default();
    entry.0 += 1;
    entry.1 += stats;
    eprintln!("{name}: {} cases so far, {:?}", entry.0, entry.1);
    Ok(())
}

proptest! {
    #![proptest_config(storm_config(0x5EED_0001))]

    #[test]
    fn eager_range_storm(partitions in 4u32..=8, events in prop::collection::vec(event(), 20..100)) {
        storm_case("range", &[RANGE], partitions, &events)?;
    }
}

proptest! {
    #![proptest_config(storm_config(0x5EED_0002))]

    #[test]
    fn cooperative_sticky_storm(
        partitions in 4u32..=8,
        events in prop::collection::vec(event(), 20..100),
    ) {
        storm_case("cooperative-sticky", &[COOPERATIVE], partitions, &events)?;
    }
}

proptest! {
    #![proptest_config(storm_config(0x5EED_0003))]

    /// Members with `range`, `cooperative-sticky` or both, so the group's
    /// assignor (and protocol) changes with its membership.
    #[test]
    fn mixed_assignor_storm(
        partitions in 4u32..=8,
        events in prop::collection::vec(event(), 20..100),
    ) {
        storm_case("mixed", MIXED, partitions, &events)?;
    }
}

// Minimal reproductions of what the storms found.

fn small_cluster() -> (tempfile::TempDir, ManualClock, Cluster) {
    let dir = shm_tempdir();
    let clock = ManualClock::new(T0);
    let config = ClusterConfig::builder()
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let cluster = Cluster::open(dir.path(), config).unwrap();
    cluster.create_topic(NewTopic::new(TOPIC, 4)).unwrap();
    (dir, clock, cluster)
}

fn member(cluster: &Cluster, name: &str, strategy: &[&str]) -> Consumer {
    let config = ConsumerConfig::builder()
        .group_id(GROUP)
        .client_id(name)
        .session_timeout(Duration::from_millis(10_000))
        .heartbeat_interval(Duration::from_millis(1_000))
        .partition_assignment_strategy(strategy.iter().copied())
        .build()
        .unwrap();
    let mut consumer = Consumer::new(cluster, config).unwrap();
    consumer.subscribe([TOPIC]).unwrap();
    consumer
}

/// Polls every member once per step, moving the clock a heartbeat
/// interval each time.
fn poll_all(clock: &ManualClock, members: &mut [Consumer], steps: usize) {
    for _ in 0..steps {
        clock.advance_ms(1_000);
        for c in members.iter_mut() {
            c.poll(Duration::ZERO).unwrap();
        }
    }
}

/// Under the cooperative protocol a member that revokes partitions rejoins
/// at once, and that rejoin must start the follow-up rebalance which hands
/// the revoked partitions to their new owner (KIP-429).
///
/// Here `c0` (the leader) owns 0 and 1, `c1` owns 2 and 3; `c2` joins. The
/// assignor takes 3 from the follower `c1`, which revokes it and rejoins
/// with fewer owned partitions. The coordinator must treat that as changed
/// join metadata (Kafka's `member.matches(protocols)` compares the owned
/// partitions too) and rebalance; the storms once found partition 3 left
/// without an owner and `c2` idle because only topics and assignors were
/// compared.
#[test]
fn a_follower_that_revokes_triggers_the_follow_up_rebalance() {
    let (_dir, clock, cluster) = small_cluster();
    let mut members = Vec::new();
    for name in ["c0", "c1", "c2"] {
        members.push(member(&cluster, name, COOPERATIVE));
        poll_all(&clock, &mut members, 5);
    }
    let owned: Vec<BTreeSet<u32>> = members.iter().map(partitions_of).collect();
    let generations: Vec<Option<i32>> = members.iter().map(Consumer::generation).collect();
    let all: BTreeSet<u32> = owned.iter().flatten().copied().collect();
    assert_eq!(
        all,
        BTreeSet::from([0, 1, 2, 3]),
        "unowned partitions; assignments {owned:?}, generations {generations:?}"
    );
    assert!(owned.iter().all(|o| !o.is_empty()), "{owned:?}");
}

/// Kafka keeps an empty group's metadata (state `Empty`), so its
/// generation keeps counting: the next member gets a generation above
/// every earlier one, and fencing by generation outside the coordinator
/// stays sound. (The coordinator once dropped an emptied group and started
/// again at generation 1.)
#[test]
fn generations_keep_counting_after_the_group_empties() {
    let (_dir, clock, cluster) = small_cluster();
    let mut first = vec![member(&cluster, "a", RANGE)];
    poll_all(&clock, &mut first, 2);
    first.push(member(&cluster, "b", RANGE));
    poll_all(&clock, &mut first, 3);
    let before = first[0].generation().unwrap();
    assert_eq!(before, 2);
    first[0].commit_sync().unwrap();
    for c in first {
        c.close().unwrap();
    }
    assert!(!cluster.list_group_offsets(GROUP).unwrap().is_empty());
    let mut second = vec![member(&cluster, "c", RANGE)];
    poll_all(&clock, &mut second, 2);
    let after = second[0].generation().unwrap();
    assert!(
        after > before,
        "the group's generation went from {before} back to {after}"
    );
}

/// Records the partitions passed to `on_partitions_revoked`.
struct RecordRevoked(Arc<Mutex<BTreeSet<u32>>>);

impl ConsumerRebalanceListener for RecordRevoked {
    fn on_partitions_revoked(&mut self, _: &mut Consumer, partitions: &[TopicPartition]) {
        let mut revoked = self.0.lock().unwrap();
        revoked.extend(partitions.iter().map(|tp| tp.partition));
    }
}

/// Kafka's consumer decides its rebalance protocol from its configuration:
/// the highest one every configured assignor supports
/// (`["cooperative-sticky", "range"]` is eager), as logbus's own
/// `RebalanceProtocol` docs say. When a group of
/// `["cooperative-sticky", "range"]` members is joined by a `["range"]`
/// member, every partition that moves must be revoked first, and the leader
/// must never take a partition a follower still holds. (The consumer once
/// followed the protocol of whichever assignor the group chose, so members
/// kept their partitions through the join and lost them without
/// `on_partitions_revoked`.)
#[test]
fn partitions_are_revoked_before_they_move_when_the_group_changes_protocol() {
    let (_dir, clock, cluster) = small_cluster();
    let mut members: Vec<(Consumer, Arc<Mutex<BTreeSet<u32>>>)> = Vec::new();
    let both = &["cooperative-sticky", "range"][..];
    for (name, strategy) in [("b", both), ("a", both), ("c", RANGE)] {
        let mut consumer = member(&cluster, name, strategy);
        let revoked = Arc::new(Mutex::new(BTreeSet::new()));
        consumer.set_rebalance_listener(RecordRevoked(revoked.clone()));
        members.push((consumer, revoked));
        for _ in 0..5 {
            clock.advance_ms(1_000);
            for i in 0..members.len() {
                let before = partitions_of(&members[i].0);
                members[i].0.poll(Duration::ZERO).unwrap();
                let after = partitions_of(&members[i].0);
                let revoked = std::mem::take(&mut *members[i].1.lock().unwrap());
                let taken: BTreeSet<u32> = before.difference(&after).copied().collect();
                let who = members[i].0.client_id().to_string();
                assert!(
                    taken.is_subset(&revoked),
                    "{who} lost {taken:?} but was told only of {revoked:?}"
                );
                for (other, _) in &members {
                    let shared: Vec<u32> =
                        partitions_of(other).intersection(&after).copied().collect();
                    assert!(
                        other.client_id() == who || shared.is_empty(),
                        "{who} and {} both hold {shared:?}",
                        other.client_id()
                    );
                }
            }
        }
    }
}
