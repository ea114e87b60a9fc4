//! Level (b): a `Cluster` over the shared storage, with topics of every
//! flush policy side by side: topic creates and deletes, partition
//! additions, appends through `Partition::append` and a `Producer` (acks
//! 1 and all, also from several threads), retention, compaction,
//! `delete_records`, checkpoint writes and close-less crashes.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use logbus::{
    Acks, CheckpointRead, CleanupPolicy, Cluster, ClusterConfig, FaultyStorage, ManualClock,
    NewTopic, OffsetCheckpoint, Partition, Producer, ProducerConfig, ProducerRecord, TopicConfig,
};

use crate::gate::{Bug, Gate};
use crate::model::{Draft, PartitionModel, Rec, Rng, build_batch, read_served};
use crate::run::{Crash, Explorer, Trail, join_appenders, placed, spawn_appenders, until_acks};
use crate::{Failure, POLICIES, Policy, Stats, tempdir};

const NAMES: [&str; 5] = ["alpha", "beta", "gamma", "delta", "eps"];

/// What the explorer knows about one topic.
#[derive(Debug)]
struct TopicModel {
    id: String,
    policy: Policy,
    segment_bytes: u64,
    parts: Vec<PartitionModel>,
}

/// An append's outcome as a thread or a producer callback reports it.
enum Event {
    Acked {
        topic: String,
        partition: u32,
        recs: Vec<Rec>,
        late: bool,
    },
    Failed {
        topic: String,
        partition: u32,
        drafts: Vec<Draft>,
        error: String,
    },
}

impl Event {
    fn is_ack(&self) -> bool {
        matches!(self, Event::Acked { .. })
    }
}

/// One seeded run over one cluster.
pub(crate) struct ClusterRun {
    trail: Trail,
    rng: Rng,
    _tmp: tempfile::TempDir,
    root: PathBuf,
    faulty: FaultyStorage,
    clock: ManualClock,
    bug: Bug,
    gate: Gate,
    cluster: Option<Cluster>,
    topics: BTreeMap<String, TopicModel>,
    deleted_ids: HashSet<String>,
    next_id: u64,
    pub(crate) stats: Stats,
}

impl ClusterRun {
    pub(crate) fn new(seed: u64, policy: Policy, bug: Bug) -> Self {
        let tmp = tempdir();
        let root = tmp.path().join("cluster");
        let faulty = crate::faulty_storage();
        let gate = Gate::new(&faulty, bug);
        ClusterRun {
            trail: Trail::new("cluster", policy, seed),
            rng: Rng(seed ^ 0xc1a5_7e00),
            _tmp: tmp,
            root,
            faulty,
            clock: ManualClock::new(1_700_000_000_000),
            bug,
            gate,
            cluster: None,
            topics: BTreeMap::new(),
            deleted_ids: HashSet::new(),
            next_id: 0,
            stats: Stats::default(),
        }
    }

    pub(crate) fn run(mut self, crashes: u64) -> Result<Stats, Failure> {
        if let Err(e) = self.open().map(|c| self.cluster = Some(c)) {
            return Err(self.trail.fail(0, format!("first open: {e}")));
        }
        self.crash_states(crashes)?;
        if let Some(cluster) = self.cluster.take() {
            cluster
                .close()
                .map_err(|e| self.trail.fail(crashes, format!("close: {e}")))?;
        }
        Ok(self.stats)
    }

    fn config(&self) -> ClusterConfig {
        let defaults = TopicConfig::new()
            .set("segment.index.bytes", "4096")
            .and_then(|c| c.set("index.interval.bytes", "256"))
            .expect("topic defaults");
        ClusterConfig::builder()
            .storage(Arc::new(self.gate.clone()))
            .clock(Arc::new(self.clock.clone()))
            .checkpoint_interval(Duration::from_secs(3600))
            .topic_defaults(defaults)
            .build()
            .expect("cluster config")
    }

    fn open(&mut self) -> Result<Cluster, String> {
        let config = self.config();
        Cluster::open(&self.root, config).map_err(|e| format!("the open refused: {e}"))
    }

    fn cluster(&self) -> &Cluster {
        self.cluster.as_ref().expect("an open cluster")
    }

    fn partition(&self, topic: &str, p: u32) -> Result<Partition, String> {
        self.cluster()
            .topic(topic)
            .and_then(|t| t.partition(p))
            .map_err(|e| format!("{topic}-{p}: {e}"))
    }

    /// A random live partition, if any.
    fn pick(&mut self) -> Option<(String, u32)> {
        if self.topics.is_empty() {
            return None;
        }
        let i = self.rng.below(self.topics.len() as u64) as usize;
        let (name, topic) = self.topics.iter().nth(i).expect("index in range");
        let name = name.clone();
        let p = self.rng.below(topic.parts.len() as u64) as u32;
        Some((name, p))
    }

    fn drafts(&mut self, topic: &str, count: u64) -> Vec<Draft> {
        let t = &self.topics[topic];
        let (compacted, segment_bytes) = (t.parts[0].compacted, t.segment_bytes);
        (0..count)
            .map(|_| {
                let id = self.next_id;
                self.next_id += 1;
                let len = self.rng.range(0, (segment_bytes / 8).min(400));
                let fill = (b'a' + (id % 26) as u8) as char;
                let value = format!(
                    "{:x}.{id}.{}",
                    self.trail.seed,
                    fill.to_string().repeat(len as usize)
                );
                let key = if compacted || self.rng.chance(80) {
                    Some(format!("k{}", self.rng.below(6)).into_bytes())
                } else {
                    None
                };
                Draft {
                    timestamp: logbus::Clock::now_ms(&self.clock),
                    key,
                    value: value.into_bytes(),
                }
            })
            .collect()
    }

    fn on_ack(&mut self, topic: &str, p: u32, recs: &[Rec]) {
        let Some(t) = self.topics.get_mut(topic) else {
            return;
        };
        let messages = t.policy.messages();
        let part = &mut t.parts[p as usize];
        part.acked(recs);
        if let (Some(n), Some(last)) = (messages, recs.iter().map(|r| r.offset).max()) {
            part.raise_bound((last + 1).saturating_sub(n - 1));
        }
    }

    fn create_topic(&mut self) -> Result<(), String> {
        if self.topics.len() >= 3 {
            return self.append();
        }
        let free: Vec<&str> = NAMES
            .iter()
            .copied()
            .filter(|n| !self.topics.contains_key(*n))
            .collect();
        let name = free[self.rng.below(free.len() as u64) as usize].to_string();
        // Half the topics take the run's policy, the rest any other.
        let policy = if self.rng.chance(50) {
            self.trail.policy
        } else {
            POLICIES[self.rng.below(POLICIES.len() as u64) as usize]
        };
        let compacted = self.rng.chance(30);
        let segment_bytes = [1024, 2048, 4096][self.rng.below(3) as usize];
        let partitions = self.rng.range(1, 3) as u32;
        let mut config = TopicConfig::new()
            .segment_bytes(segment_bytes)
            .unwrap()
            .flush(policy.flush())
            .cleanup_policy(if compacted {
                CleanupPolicy::Compact
            } else {
                CleanupPolicy::Delete
            });
        config = if self.rng.chance(40) {
            config
                .retention_bytes(Some(segment_bytes * self.rng.range(2, 5)))
                .unwrap()
        } else {
            config.retention_bytes(None).unwrap()
        };
        let topic = self
            .cluster()
            .create_topic(NewTopic::new(name.clone(), partitions).config(config))
            .map_err(|e| format!("create_topic({name}): {e}"))?;
        let id = topic.id();
        if self.deleted_ids.contains(&id) {
            return Err(format!("{name} was created with a deleted topic's id {id}"));
        }
        self.trail.note(format!(
            "create topic {name} ({id}): {partitions} partition(s), {}, compacted={compacted}, \
             segment.bytes={segment_bytes}",
            policy.name()
        ));
        self.topics.insert(
            name,
            TopicModel {
                id,
                policy,
                segment_bytes,
                parts: (0..partitions)
                    .map(|_| PartitionModel::new(compacted))
                    .collect(),
            },
        );
        Ok(())
    }

    fn delete_topic(&mut self) -> Result<(), String> {
        let Some((name, _)) = self.pick() else {
            return self.create_topic();
        };
        self.cluster()
            .delete_topic(&name)
            .map_err(|e| format!("delete_topic({name}): {e}"))?;
        let model = self.topics.remove(&name).expect("live topic");
        self.deleted_ids.insert(model.id.clone());
        self.trail
            .note(format!("delete topic {name} ({})", model.id));
        Ok(())
    }

    fn add_partitions(&mut self) -> Result<(), String> {
        let Some((name, _)) = self.pick() else {
            return self.create_topic();
        };
        let count = self.topics[&name].parts.len() as u32;
        if count >= 4 {
            return self.append();
        }
        let total = count + 1;
        self.cluster()
            .create_partitions(&name, total)
            .map_err(|e| format!("create_partitions({name}, {total}): {e}"))?;
        let t = self.topics.get_mut(&name).expect("live topic");
        let compacted = t.parts[0].compacted;
        t.parts.push(PartitionModel::new(compacted));
        self.trail
            .note(format!("{name} now has {total} partitions"));
        Ok(())
    }

    fn append(&mut self) -> Result<(), String> {
        let Some((name, p)) = self.pick() else {
            return self.create_topic();
        };
        let count = self.rng.range(1, 4);
        let drafts = self.drafts(&name, count);
        let mut bytes = build_batch(&drafts);
        let info = self
            .partition(&name, p)?
            .append(&mut bytes)
            .map_err(|e| format!("append to {name}-{p}: {e}"))?;
        let recs: Vec<Rec> = drafts
            .iter()
            .enumerate()
            .map(|(i, d)| d.at(info.first_offset() + i as u64))
            .collect();
        self.trail.note(format!(
            "append {count} to {name}-{p} at {}",
            info.first_offset()
        ));
        self.on_ack(&name, p, &recs);
        Ok(())
    }

    /// Records sent through a producer (acks 1 or all), to random
    /// partitions; with `crash`, the crash comes once `after` of them
    /// were acknowledged.
    fn produce(&mut self, crash: Option<(Crash, u64)>) -> Result<(), String> {
        if self.topics.is_empty() {
            return self.create_topic();
        }
        let acks = if self.rng.chance(50) {
            Acks::Leader
        } else {
            Acks::All
        };
        let producer = Producer::new(
            self.cluster(),
            ProducerConfig::builder()
                .acks(acks)
                .linger(Duration::ZERO)
                // Small batches: a producer batch must fit the smallest
                // segment.bytes here (1024); the producer does not split a
                // batch the log refuses as too large.
                .batch_size(256)
                .build()
                .expect("producer config"),
        )
        .map_err(|e| format!("Producer::new: {e}"))?;
        let count = self.rng.range(1, 12);
        let crashed = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        for _ in 0..count {
            let (name, p) = self.pick().expect("a topic");
            let draft = self.drafts(&name, 1).remove(0);
            let mut record = ProducerRecord::new(name.clone(), draft.value.clone())
                .with_partition(p)
                .with_timestamp(draft.timestamp);
            if let Some(key) = &draft.key {
                record = record.with_key(key.clone());
            }
            let tx = tx.clone();
            let crashed = Arc::clone(&crashed);
            let topic = name.clone();
            producer
                .send_with_callback(record, move |result| {
                    let event = match result.map(|m| m.offset()) {
                        Ok(Some(offset)) => Event::Acked {
                            late: crashed.load(Ordering::SeqCst),
                            topic,
                            partition: p,
                            recs: vec![draft.at(offset)],
                        },
                        other => Event::Failed {
                            topic,
                            partition: p,
                            drafts: vec![draft],
                            error: format!("{other:?}"),
                        },
                    };
                    let _ = tx.send(event);
                })
                .map_err(|e| format!("send to {name}-{p}: {e}"))?;
        }
        drop(tx);
        let mut events = Vec::new();
        let mut crash_info = None;
        if let Some((kind, after)) = crash {
            events = until_acks(&rx, after.min(count), Event::is_ack);
            crashed.store(true, Ordering::SeqCst);
            let pre = self.kill(kind)?;
            crash_info = Some((kind, pre));
        } else {
            producer
                .flush()
                .map_err(|e| format!("producer flush: {e}"))?;
        }
        drop(producer);
        events.extend(rx.iter());
        self.absorb(events, crash.is_some(), &format!("producer ({acks:?})"))?;
        if let Some((kind, pre)) = crash_info {
            self.after_crash(kind, pre)?;
        }
        Ok(())
    }

    /// Several threads append through `Partition::append` at once.
    fn concurrent(&mut self, crash: Option<(Crash, u64)>) -> Result<(), String> {
        if self.topics.is_empty() {
            return self.create_topic();
        }
        let threads = self.rng.range(2, 3);
        let mut work = Vec::new();
        for _ in 0..threads {
            let mut mine = Vec::new();
            for _ in 0..self.rng.range(2, 5) {
                let (name, p) = self.pick().expect("a topic");
                let count = self.rng.range(1, 3);
                let drafts = self.drafts(&name, count);
                mine.push((self.partition(&name, p)?, drafts));
            }
            work.push(mine);
        }
        let total: u64 = work.iter().map(|w| w.len() as u64).sum();
        let crashed = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let handles = spawn_appenders(
            work,
            &crashed,
            &tx,
            |(partition, drafts): (Partition, Vec<Draft>), crashed| {
                let mut bytes = build_batch(&drafts);
                let topic = partition.topic().to_string();
                let p = partition.partition();
                match partition.append(&mut bytes) {
                    Ok(info) => Event::Acked {
                        late: crashed.load(Ordering::SeqCst),
                        topic,
                        partition: p,
                        recs: placed(&drafts, info.first_offset()),
                    },
                    Err(e) => Event::Failed {
                        topic,
                        partition: p,
                        drafts,
                        error: e.to_string(),
                    },
                }
            },
        );
        drop(tx);
        let mut events = Vec::new();
        let mut crash_info = None;
        if let Some((kind, after)) = crash {
            events = until_acks(&rx, after.min(total), Event::is_ack);
            crashed.store(true, Ordering::SeqCst);
            let pre = self.kill(kind)?;
            crash_info = Some((kind, pre));
        }
        join_appenders(handles)?;
        events.extend(rx.iter());
        self.absorb(events, crash.is_some(), &format!("{threads} threads"))?;
        if let Some((kind, pre)) = crash_info {
            self.after_crash(kind, pre)?;
        }
        Ok(())
    }

    /// Takes the outcomes of appends into the model.
    fn absorb(&mut self, events: Vec<Event>, crashed: bool, who: &str) -> Result<(), String> {
        let (mut acked, mut late, mut failed) = (0, 0, 0);
        for event in events {
            match event {
                Event::Acked {
                    topic,
                    partition,
                    recs,
                    late: false,
                } => {
                    acked += 1;
                    self.on_ack(&topic, partition, &recs);
                }
                Event::Acked {
                    topic,
                    partition,
                    recs,
                    late: true,
                } => {
                    late += 1;
                    if let Some(t) = self.topics.get_mut(&topic) {
                        t.parts[partition as usize].unacked(&recs);
                    }
                }
                Event::Failed {
                    topic,
                    partition,
                    drafts,
                    error,
                } => {
                    if !crashed {
                        return Err(format!(
                            "an append to {topic}-{partition} failed without a crash: {error}"
                        ));
                    }
                    failed += 1;
                    if let Some(t) = self.topics.get_mut(&topic) {
                        t.parts[partition as usize].unknown(&drafts);
                    }
                }
            }
        }
        self.trail.note(format!(
            "{who} appended: {acked} acknowledged, {late} late, {failed} failed{}",
            if crashed { ", crash among them" } else { "" }
        ));
        Ok(())
    }

    fn delete_records(&mut self) -> Result<(), String> {
        let Some((name, p)) = self.pick() else {
            return self.create_topic();
        };
        let partition = self.partition(&name, p)?;
        let start = partition.log_start_offset().map_err(|e| e.to_string())?;
        let end = partition.log_end_offset().map_err(|e| e.to_string())?;
        let to = self.rng.range(start, end);
        let new_start = partition
            .delete_records(to)
            .map_err(|e| format!("delete_records({to}) on {name}-{p}: {e}"))?;
        self.trail
            .note(format!("delete_records({to}) on {name}-{p} -> {new_start}"));
        // It returned: the new log start is checkpointed.
        self.topics.get_mut(&name).expect("live topic").parts[p as usize]
            .start_persisted(new_start);
        Ok(())
    }

    fn retention(&mut self) -> Result<(), String> {
        let Some((name, p)) = self.pick() else {
            return self.create_topic();
        };
        let report = self
            .partition(&name, p)?
            .enforce_retention()
            .map_err(|e| format!("enforce_retention on {name}-{p}: {e}"))?;
        self.trail
            .note(format!("retention on {name}-{p}: {report:?}"));
        Ok(())
    }

    fn clean(&mut self) -> Result<(), String> {
        let Some((name, p)) = self.pick() else {
            return self.create_topic();
        };
        if !self.topics[&name].parts[0].compacted {
            return self.retention();
        }
        let report = self
            .partition(&name, p)?
            .clean()
            .map_err(|e| format!("clean on {name}-{p}: {e}"))?;
        self.trail.note(format!("clean {name}-{p}: {report:?}"));
        Ok(())
    }

    fn read_checkpoint(&self, name: &str) -> Result<BTreeMap<(String, u32), u64>, String> {
        let path = self.root.join("broker-0").join(name);
        match OffsetCheckpoint::new(&path).read() {
            Ok(CheckpointRead::Present(entries)) => Ok(entries),
            Ok(CheckpointRead::Missing) => Ok(BTreeMap::new()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// `Cluster::checkpoint`, then what the files say becomes the model's:
    /// recovery points raise the promise, log starts delete for good.
    fn checkpoint(&mut self) -> Result<(), String> {
        self.cluster()
            .checkpoint()
            .map_err(|e| format!("checkpoint: {e}"))?;
        let recovery = self.read_checkpoint("recovery-point-offset-checkpoint")?;
        let starts = self.read_checkpoint("log-start-offset-checkpoint")?;
        for (name, t) in &mut self.topics {
            for (p, part) in t.parts.iter_mut().enumerate() {
                let key = (name.clone(), p as u32);
                if let Some(rp) = recovery.get(&key) {
                    part.raise_bound(*rp);
                }
                if let Some(start) = starts.get(&key) {
                    part.start_persisted(*start);
                }
            }
        }
        self.trail.note(format!(
            "checkpoint: recovery points {recovery:?}, log starts {starts:?}"
        ));
        Ok(())
    }

    fn close_and_reopen(&mut self) -> Result<(), String> {
        let pre = self.starts()?;
        let cluster = self.cluster.take().expect("open cluster");
        cluster.close().map_err(|e| format!("close: {e}"))?;
        drop(cluster);
        self.trail.note("clean close".into());
        self.reopen_and_check(&pre, true)
    }

    /// Every live partition's log start offset.
    fn starts(&self) -> Result<BTreeMap<(String, u32), u64>, String> {
        let mut out = BTreeMap::new();
        for (name, t) in &self.topics {
            for p in 0..t.parts.len() as u32 {
                let start = self
                    .partition(name, p)?
                    .log_start_offset()
                    .map_err(|e| format!("{name}-{p}: {e}"))?;
                out.insert((name.clone(), p), start);
            }
        }
        Ok(out)
    }

    /// Crashes the process; returns the log starts the dead cluster had.
    fn kill(&mut self, kind: Crash) -> Result<BTreeMap<(String, u32), u64>, String> {
        let what = kind.strike(&self.gate)?;
        self.trail.note(what);
        self.starts()
    }

    fn after_crash(
        &mut self,
        kind: Crash,
        pre: BTreeMap<(String, u32), u64>,
    ) -> Result<(), String> {
        drop(self.cluster.take());
        self.stats.states += 1;
        self.reopen_and_check(&pre, matches!(kind, Crash::Kill))
    }

    fn reopen_and_check(
        &mut self,
        pre: &BTreeMap<(String, u32), u64>,
        page_cache_survived: bool,
    ) -> Result<(), String> {
        self.gate = Gate::new(&self.faulty, self.bug);
        let dump = crate::Dump::take(&self.root);
        let result = self.check_reopen(pre, page_cache_survived);
        if let (Err(e), Some(dump)) = (&result, dump) {
            let at = dump.save("cluster", self.trail.policy, self.trail.seed);
            return Err(format!(
                "{e} (the files before the reopen: {})",
                at.display()
            ));
        }
        result
    }

    fn check_reopen(
        &mut self,
        pre: &BTreeMap<(String, u32), u64>,
        page_cache_survived: bool,
    ) -> Result<(), String> {
        let cluster = self.open()?;
        let report = cluster.recovery_report().clone();
        self.cluster = Some(cluster);
        let names: Vec<String> = self.topics.keys().cloned().collect();
        let listed = self.cluster().list_topics();
        if listed != names {
            return Err(format!(
                "topics after the reopen: {listed:?}, expected {names:?}"
            ));
        }
        if !report.unknown_dirs.is_empty() {
            return Err(format!(
                "unexplained partition directories: {:?}",
                report.unknown_dirs
            ));
        }
        let mut summary = Vec::new();
        for name in &names {
            let topic = self
                .cluster()
                .topic(name)
                .map_err(|e| format!("{name}: {e}"))?;
            let model = &self.topics[name];
            if topic.id() != model.id {
                return Err(format!(
                    "{name} has id {} after the reopen, not {}",
                    topic.id(),
                    model.id
                ));
            }
            if topic.partition_count() as usize != model.parts.len() {
                return Err(format!(
                    "{name} has {} partitions after the reopen, not {}",
                    topic.partition_count(),
                    model.parts.len()
                ));
            }
            for p in 0..model.parts.len() as u32 {
                let partition = topic.partition(p).map_err(|e| format!("{name}-{p}: {e}"))?;
                let start = partition.log_start_offset().map_err(|e| e.to_string())?;
                let end = partition.log_end_offset().map_err(|e| e.to_string())?;
                let rr = partition.recovery_report().clone();
                let now = read_served(
                    |o, m| partition.read(o, m),
                    start,
                    end,
                    self.topics[name].parts[p as usize].compacted,
                )
                .map_err(|e| format!("{name}-{p}: {e}"))?;
                let part = &self.topics[name].parts[p as usize];
                let promised = part.promised(0, page_cache_survived);
                // A partition added since the last crash has no entry:
                // it started empty.
                let pre_start = pre.get(&(name.clone(), p)).copied().unwrap_or(0);
                let checked = self.topics.get_mut(name).expect("live").parts[p as usize]
                    .check_reopen(&now, start, end, pre_start, &promised)
                    .map_err(|e| format!("{name}-{p}: {e}"))?;
                self.stats.promised += checked.promised;
                self.stats.acked_lost += checked.acked_lost;
                self.stats.cuts += u64::from(rr.truncated.is_some());
                if rr.fenced_truncation.is_some() {
                    return Err(format!(
                        "{name}-{p}: a fenced truncation without a failed fsync"
                    ));
                }
                if let Some(cut) = &rr.truncated {
                    if page_cache_survived {
                        return Err(format!(
                            "{name}-{p}: a cut where the page cache survived: {cut:?}"
                        ));
                    }
                    crate::model::check_cut(cut, end, None)
                        .map_err(|e| format!("{name}-{p}: {e}"))?;
                }
                self.topics.get_mut(name).expect("live").parts[p as usize].reopened(&now, end);
                summary.push(format!("{name}-{p} [{start}, {end})"));
            }
        }
        if let Some(id) = self
            .cluster()
            .list_topics()
            .iter()
            .filter_map(|n| self.cluster().topic(n).ok())
            .map(|t| t.id())
            .find(|id| self.deleted_ids.contains(id))
        {
            return Err(format!("deleted topic id {id} is back"));
        }
        self.trail.note(format!(
            "reopened: {}; metadata {:?}; removed dirs {:?}",
            summary.join(", "),
            report.metadata,
            report.removed_dirs
        ));
        Ok(())
    }
}

impl Explorer for ClusterRun {
    fn trail(&self) -> &Trail {
        &self.trail
    }

    fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    fn step(&mut self) -> Result<(), String> {
        match self.rng.below(100) {
            0..=29 => self.append(),
            30..=39 => self.produce(None),
            40..=47 => self.concurrent(None),
            48..=54 => self.create_topic(),
            55..=57 => self.delete_topic(),
            58..=59 => self.add_partitions(),
            60..=64 => self.delete_records(),
            65..=69 => self.retention(),
            70..=74 => self.clean(),
            75..=83 => self.checkpoint(),
            84..=89 => {
                let ms = self.rng.range(10, 120);
                self.clock.advance_ms(ms as i64);
                self.trail.note(format!("clock +{ms} ms"));
                Ok(())
            }
            90..=91 => self.close_and_reopen(),
            _ => self.append(),
        }
    }

    fn crash_state(&mut self) -> Result<(), String> {
        let kind = Crash::pick(&mut self.rng);
        if !self.topics.is_empty() && self.rng.chance(30) {
            let after = self.rng.range(0, 8);
            return if self.rng.chance(50) {
                self.concurrent(Some((kind, after)))
            } else {
                self.produce(Some((kind, after)))
            };
        }
        let pre = self.kill(kind)?;
        self.after_crash(kind, pre)
    }
}
