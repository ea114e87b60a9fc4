//! Explores thousands of seeded crash states (`FaultyStorage::power_loss`)
//! over scripts of appends (single and concurrent), rolls, retention,
//! compaction, `delete_records`, truncation and checkpoints — at the `Log`
//! level and at the `Cluster` level, for each flush policy — and checks
//! the durability promises after every reopen:
//! - every acknowledged record the policy promises is there, exactly once,
//!   in order, at its offset;
//! - what a reopen serves is a prefix of what was appended, at the same
//!   offsets, and never a record an earlier reopen served differently;
//! - every open succeeds (an ordinary power loss never refuses an open);
//! - deletions that were acknowledged stay.
//!
//! Counts: `LOGBUS_EXPLORE_STATES=N` explores about `N` crash states per
//! level (default: a CI-sized count). `LOGBUS_EXPLORE_SEED=S` (with
//! `LOGBUS_EXPLORE_POLICY=name`) replays one run; a failure prints the
//! command. `LOGBUS_EXPLORE_BASE=B` changes the seeds of a long run.

#[path = "crash_explore/cluster_level.rs"]
mod cluster_level;
mod common;
#[path = "crash_explore/gate.rs"]
mod gate;
#[path = "crash_explore/log_level.rs"]
mod log_level;
#[path = "crash_explore/model.rs"]
mod model;
#[path = "crash_explore/refusal.rs"]
mod refusal;
#[path = "crash_explore/run.rs"]
mod run;

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use logbus::FlushPolicy;

use gate::Bug;

/// A flush policy the explorer runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    PageCache,
    EveryAppend,
    EveryMessages(u64),
    Interval(u64),
    MessagesAndInterval(u64, u64),
}

pub(crate) const POLICIES: [Policy; 5] = [
    Policy::PageCache,
    Policy::EveryAppend,
    Policy::EveryMessages(3),
    Policy::Interval(100),
    Policy::MessagesAndInterval(5, 50),
];

impl Policy {
    pub(crate) fn flush(self) -> FlushPolicy {
        match self {
            Policy::PageCache => FlushPolicy::page_cache(),
            Policy::EveryAppend => FlushPolicy::every_append(),
            Policy::EveryMessages(n) => FlushPolicy::every_messages(n),
            Policy::Interval(ms) => FlushPolicy::every_interval(Duration::from_millis(ms)),
            Policy::MessagesAndInterval(n, ms) => {
                FlushPolicy::every_messages(n).with_interval(Duration::from_millis(ms))
            }
        }
    }

    /// `flush.messages`, if set.
    pub(crate) fn messages(self) -> Option<u64> {
        match self {
            Policy::EveryAppend => Some(1),
            Policy::EveryMessages(n) | Policy::MessagesAndInterval(n, _) => Some(n),
            Policy::PageCache | Policy::Interval(_) => None,
        }
    }

    /// `flush.ms`, if set.
    pub(crate) fn interval_ms(self) -> Option<u64> {
        match self {
            Policy::Interval(ms) | Policy::MessagesAndInterval(_, ms) => Some(ms),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> String {
        match self {
            Policy::PageCache => "page_cache".into(),
            Policy::EveryAppend => "every_append".into(),
            Policy::EveryMessages(n) => format!("every_messages_{n}"),
            Policy::Interval(ms) => format!("interval_{ms}ms"),
            Policy::MessagesAndInterval(n, ms) => format!("messages_{n}_and_{ms}ms"),
        }
    }
}

/// What a run explored.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Stats {
    /// Crash states: reopens checked after a power loss or process kill.
    pub(crate) states: u64,
    /// Promised records checked in place, over all reopens.
    pub(crate) promised: u64,
    /// Acknowledged records a power loss took (beyond the promise).
    pub(crate) acked_lost: u64,
    /// Reopens whose recovery reported a cut.
    pub(crate) cuts: u64,
}

impl Stats {
    pub(crate) fn add(&mut self, other: Stats) {
        self.states += other.states;
        self.promised += other.promised;
        self.acked_lost += other.acked_lost;
        self.cuts += other.cuts;
    }
}

/// A violated promise, with what it takes to replay it.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) level: &'static str,
    pub(crate) policy: Policy,
    pub(crate) seed: u64,
    pub(crate) crash: u64,
    pub(crate) message: String,
    pub(crate) history: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} level, policy {}, seed {}, crash #{}: {}",
            self.level,
            self.policy.name(),
            self.seed,
            self.crash,
            self.message
        )?;
        writeln!(
            f,
            "  replay: LOGBUS_EXPLORE_SEED={} LOGBUS_EXPLORE_POLICY={} cargo test --all-features \
             --test crash_explore {}_level -- --nocapture",
            self.seed,
            self.policy.name(),
            self.level
        )?;
        let skip = self.history.len().saturating_sub(60);
        if skip > 0 {
            writeln!(f, "  ... {skip} earlier steps")?;
        }
        for line in &self.history[skip..] {
            writeln!(f, "  | {line}")?;
        }
        Ok(())
    }
}

/// A temporary directory, on tmpfs when there is one.
pub(crate) use common::shm_tempdir as tempdir;

/// A copy of a directory tree taken before a reopen, saved when the reopen
/// fails a check (with `LOGBUS_EXPLORE_DUMP=<dir>` set).
pub(crate) struct Dump {
    files: refusal::Tree,
}

impl Dump {
    pub(crate) fn take(root: &Path) -> Option<Dump> {
        std::env::var_os("LOGBUS_EXPLORE_DUMP")?;
        Some(Dump {
            files: refusal::read_tree(root, true),
        })
    }

    /// Writes the copy under `$LOGBUS_EXPLORE_DUMP/<level>-<policy>-<seed>`.
    pub(crate) fn save(&self, level: &str, policy: Policy, seed: u64) -> std::path::PathBuf {
        let base =
            std::path::PathBuf::from(std::env::var_os("LOGBUS_EXPLORE_DUMP").expect("dump dir"))
                .join(format!("{level}-{}-{seed}", policy.name()));
        self.save_as(&base);
        base
    }

    /// Writes the copy under `base`.
    pub(crate) fn save_as(&self, base: &Path) {
        let _ = std::fs::remove_dir_all(base);
        refusal::write_tree(base, &self.files);
    }
}

/// A fresh simulated disk. Torn pages are torn by 512-byte sector (new or
/// old content each, the simulator's default), never zeroing bytes that
/// were durable: `LOGBUS_EXPLORE_TORN=zeroed` makes a torn page read as
/// zeros, durable bytes in it included, which no log that appends in place
/// can survive (acknowledged records sharing a page with a later, unsynced
/// append are lost).
pub(crate) fn faulty_storage() -> logbus::FaultyStorage {
    let storage = logbus::FaultyStorage::new();
    if std::env::var("LOGBUS_EXPLORE_TORN").is_ok_and(|v| v == "zeroed") {
        storage.set_torn_pages(logbus::TornPages::Zeroed);
    }
    storage
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let value = value.trim();
    let parsed = match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={value} is not a number")))
}

/// The policies to run: all, or the one `LOGBUS_EXPLORE_POLICY` names.
fn policies() -> Vec<Policy> {
    match std::env::var("LOGBUS_EXPLORE_POLICY") {
        Ok(name) => {
            let chosen: Vec<Policy> = POLICIES.into_iter().filter(|p| p.name() == name).collect();
            assert!(
                !chosen.is_empty(),
                "LOGBUS_EXPLORE_POLICY={name}: one of {:?}",
                POLICIES.map(Policy::name)
            );
            chosen
        }
        Err(_) => POLICIES.to_vec(),
    }
}

/// Explores about `states` crash states per level, spread over the
/// policies, by runs of `crashes` crash states each (`run(seed, policy,
/// crashes)`). Prints the counts; returns every failure.
pub(crate) fn explore(
    level: &str,
    default_states: u64,
    crashes: u64,
    run: impl Fn(u64, Policy, u64) -> Result<Stats, Failure>,
) -> Vec<Failure> {
    let policies = policies();
    let total = env_u64("LOGBUS_EXPLORE_STATES").unwrap_or(default_states);
    let per_policy = total.div_ceil(policies.len() as u64).max(1);
    let base = env_u64("LOGBUS_EXPLORE_BASE").unwrap_or(0x5eed);
    let only = env_u64("LOGBUS_EXPLORE_SEED");
    let mut failures = Vec::new();
    let mut all = 0;
    let started = Instant::now();
    for (p, policy) in policies.iter().enumerate() {
        let mut states = 0;
        let mut stats = Stats::default();
        let mut runs = 0;
        let mut failed = 0;
        let policy_started = Instant::now();
        let seeds: Box<dyn Iterator<Item = u64>> = match only {
            Some(seed) => Box::new(std::iter::once(seed)),
            None => {
                Box::new((0..).map(|i: u64| base.wrapping_add((p as u64) << 40).wrapping_add(i)))
            }
        };
        for seed in seeds {
            if only.is_none() && states >= per_policy {
                break;
            }
            runs += 1;
            match run(seed, *policy, crashes) {
                Ok(n) => {
                    states += n.states;
                    stats.add(n);
                }
                Err(failure) => {
                    states += failure.crash + 1;
                    failed += 1;
                    eprintln!("VIOLATION {failure}");
                    failures.push(failure);
                }
            }
        }
        all += states;
        eprintln!(
            "crash_explore {level} level, {}: {states} crash states in {runs} runs \
             ({failed} failed), {:.1?}; {} promised records checked in place, {} \
             acknowledged records lost beyond the promise, {} cuts reported",
            policy.name(),
            policy_started.elapsed(),
            stats.promised,
            stats.acked_lost,
            stats.cuts
        );
    }
    eprintln!(
        "crash_explore {level} level: {all} crash states explored in {:.1?}, {} violation(s)",
        started.elapsed(),
        failures.len()
    );
    let mut kinds: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for f in &failures {
        *kinds.entry(kind_of(&f.message)).or_default() += 1;
    }
    for (kind, count) in kinds {
        eprintln!("  {count:5} x {kind}");
    }
    failures
}

/// A short name for the kind of a violation, for the summary.
fn kind_of(message: &str) -> &'static str {
    const KINDS: [(&str, &str); 13] = [
        (
            "below the checkpointed log start",
            "log start below a checkpointed one",
        ),
        (
            "below its recovery point",
            "open refused: below the recovery point",
        ),
        (
            "followed by valid data",
            "open refused: damage followed by valid data",
        ),
        ("refused", "open refused: other"),
        ("is gone too", "promised record lost (compaction)"),
        ("promised record", "promised record lost"),
        ("promised", "promised record replaced"),
        ("a gap", "gap in offsets"),
        (
            "never appended there",
            "record at a wrong offset / from nowhere",
        ),
        ("served again", "deleted record back"),
        ("served as", "offset served with two records"),
        ("returned nothing", "read returned nothing below the end"),
        ("not a prefix", "log start moved up"),
    ];
    KINDS
        .iter()
        .find(|(needle, _)| message.contains(needle))
        .map_or("other", |(_, kind)| kind)
}

fn assert_no_failures(failures: &[Failure]) {
    if failures.is_empty() {
        return;
    }
    let mut text = format!("{} run(s) violated a promise:\n", failures.len());
    for f in failures.iter().take(5) {
        text.push_str(&f.to_string());
    }
    panic!("{text}");
}

/// The log configuration the regression tests start from: small segments,
/// a 4 KiB index, no rolling or retention by time. Each test adds the
/// cleanup and flush policy it needs.
fn regression_config(segment_bytes: u64) -> logbus::LogConfigBuilder {
    logbus::LogConfig::builder()
        .segment_bytes(segment_bytes)
        .segment_index_bytes(4096)
        .segment_time(None)
        .retention_time(None)
}

/// [`regression_config`] for a compacted log (no deletion) whose appends
/// stay in the page cache until a flush.
fn compacted_config(segment_bytes: u64) -> logbus::LogConfigBuilder {
    regression_config(segment_bytes)
        .compact(true)
        .delete(false)
        .flush(logbus::FlushPolicy::page_cache())
}

/// Opens the log in `dir` on `storage` as the regression tests do: with
/// `config`, a manual clock at 0, and the owner's checkpointed recovery
/// point and log start.
fn open_log(
    dir: &Path,
    config: &logbus::LogConfig,
    storage: std::sync::Arc<dyn logbus::Storage>,
    recovery_point: u64,
    log_start: u64,
) -> logbus::Result<logbus::Log> {
    logbus::Log::builder(dir)
        .config(config.clone())
        .storage(storage)
        .clock(std::sync::Arc::new(logbus::ManualClock::new(0)))
        .recovery_point(recovery_point)
        .log_start_offset(log_start)
        .open()
}

/// Appends one batch of `(key, value)` records, all at timestamp 1000.
fn append_records(
    log: &logbus::Log,
    records: &[(Option<String>, String)],
) -> logbus::Result<logbus::AppendInfo> {
    let drafts: Vec<model::Draft> = records
        .iter()
        .map(|(key, value)| model::Draft {
            timestamp: 1_000,
            key: key.as_ref().map(|k| k.clone().into_bytes()),
            value: value.clone().into_bytes(),
        })
        .collect();
    log.append(&mut model::build_batch(&drafts), 0)
}

/// Appends batch `i`: `count` records at timestamp 1000, the `j`th keyed
/// `k{i}.{j}` with the value `"value {i}.{j} "` repeated `repeat` times.
fn append_numbered(
    log: &logbus::Log,
    i: u64,
    count: u64,
    repeat: usize,
) -> logbus::Result<logbus::AppendInfo> {
    let records: Vec<(Option<String>, String)> = (0..count)
        .map(|j| {
            (
                Some(format!("k{i}.{j}")),
                format!("value {i}.{j} ").repeat(repeat),
            )
        })
        .collect();
    append_records(log, &records)
}

/// One regression seed's simulated disk ([`faulty_storage`]) holding one
/// partition directory, `t-0`, whose creation is durable.
struct CrashDisk {
    tmp: tempfile::TempDir,
    config: logbus::LogConfig,
    faulty: logbus::FaultyStorage,
}

impl CrashDisk {
    /// A fresh disk for logs with `config`, and the first process over it
    /// (which made the directory).
    fn new(config: &logbus::LogConfig) -> logbus::Result<(CrashDisk, gate::Gate)> {
        use logbus::Storage;

        let disk = CrashDisk {
            tmp: tempdir(),
            config: config.clone(),
            faulty: faulty_storage(),
        };
        let gate = disk.process();
        gate.create_dir_all(&disk.dir())?;
        gate.sync_dir(disk.tmp.path())?;
        Ok((disk, gate))
    }

    fn dir(&self) -> std::path::PathBuf {
        self.tmp.path().join("t-0")
    }

    /// A new process over the disk (after the last one crashed or died).
    fn process(&self) -> gate::Gate {
        gate::Gate::new(&self.faulty, Bug::None)
    }

    /// Opens the log through `gate` with the owner's recovery point.
    fn open(&self, gate: &gate::Gate, recovery_point: u64) -> logbus::Result<logbus::Log> {
        self.open_from(gate, recovery_point, 0)
    }

    /// Opens the log through `gate` with the owner's recovery point and
    /// log start.
    fn open_from(
        &self,
        gate: &gate::Gate,
        recovery_point: u64,
        log_start: u64,
    ) -> logbus::Result<logbus::Log> {
        let storage = std::sync::Arc::new(gate.clone());
        open_log(
            &self.dir(),
            &self.config,
            storage,
            recovery_point,
            log_start,
        )
    }
}

#[test]
fn log_level() {
    let failures = explore("log", 1000, 12, |seed, policy, crashes| {
        log_level::LogRun::new(seed, policy, Bug::None).run(crashes)
    });
    assert_no_failures(&failures);
}

#[test]
fn cluster_level() {
    let failures = explore("cluster", 500, 10, |seed, policy, crashes| {
        cluster_level::ClusterRun::new(seed, policy, Bug::None).run(crashes)
    });
    assert_no_failures(&failures);
}

/// The explorer is not checking nothing: a storage that acknowledges
/// fsyncs of segment files without making anything durable, or that drops
/// directory fsyncs, is caught within a bounded number of crash states.
#[test]
fn the_explorer_catches_storage_that_skips_fsyncs() {
    for bug in [Bug::SkipLogSync, Bug::SkipDirSync] {
        let mut states = 0;
        let mut caught = None;
        for seed in 0..40 {
            match log_level::LogRun::new(seed, Policy::EveryAppend, bug).run(12) {
                Ok(n) => states += n.states,
                Err(failure) => {
                    states += failure.crash + 1;
                    caught = Some(failure);
                    break;
                }
            }
            if states > 300 {
                break;
            }
        }
        let failure = caught
            .unwrap_or_else(|| panic!("{bug:?}: no violation found in {states} crash states"));
        eprintln!(
            "{bug:?} caught after {states} crash states: {}",
            failure.message
        );
    }
    for bug in [Bug::SkipLogSync, Bug::SkipDirSync] {
        let mut states = 0;
        let mut caught = false;
        for seed in 0..20 {
            match cluster_level::ClusterRun::new(seed, Policy::EveryAppend, bug).run(10) {
                Ok(n) => states += n.states,
                Err(failure) => {
                    states += failure.crash + 1;
                    eprintln!(
                        "{bug:?} caught at the cluster level after {states} crash states: {}",
                        failure.message
                    );
                    caught = true;
                    break;
                }
            }
            if states > 150 {
                break;
            }
        }
        assert!(
            caught,
            "{bug:?}: no violation found at the cluster level in {states} crash states"
        );
    }
}

/// Regression: after a power loss took the records below a checkpointed
/// log start (`delete_records`), the reopened partition restarts at its
/// log end; the checkpoint file kept the old, higher log start until the
/// next checkpoint pass, so a crash before it hid the records appended
/// meanwhile, even from a process kill that lost nothing. Found by the
/// cluster-level exploration (page cache, seed 24310).
#[test]
fn records_appended_after_a_recovery_below_the_log_start_stay_visible() -> logbus::Result<()> {
    use std::sync::Arc;

    use logbus::format::BatchBuilder;
    use logbus::{Cluster, ClusterConfig, Compression, FaultyStorage, NewTopic, Tear};

    let tmp = tempdir();
    let root = tmp.path().join("cluster");
    let faulty = FaultyStorage::new();
    let open = |gate: &gate::Gate| {
        Cluster::open(
            &root,
            ClusterConfig::builder()
                .storage(Arc::new(gate.clone()))
                .build()?,
        )
    };
    let batch = |values: &[&str]| {
        let mut builder = BatchBuilder::new(Compression::None);
        for v in values {
            builder.append(1_000, None, Some(v.as_bytes()), &[]);
        }
        builder.build().map(|b| b.to_vec())
    };

    // Five records in the page cache, then deleted: the log start 5 is
    // checkpointed. A power loss takes the records (never fsynced).
    let gate = gate::Gate::new(&faulty, Bug::None);
    let cluster = open(&gate)?;
    let partition = cluster.create_topic(NewTopic::new("t", 1))?.partition(0)?;
    partition.append(&mut batch(&["a", "b", "c", "d", "e"])?)?;
    assert_eq!(partition.delete_records(5)?, 5);
    gate.kill();
    faulty.crash(Tear::None)?;
    drop((partition, cluster));

    // The log restarts at its end, 0; two records are appended and the
    // process dies (the page cache keeps them).
    let gate = gate::Gate::new(&faulty, Bug::None);
    let cluster = open(&gate)?;
    let partition = cluster.topic("t")?.partition(0)?;
    assert_eq!(
        (partition.log_start_offset()?, partition.log_end_offset()?),
        (0, 0)
    );
    let info = partition.append(&mut batch(&["x", "y"])?)?;
    assert_eq!(info.first_offset(), 0);
    gate.kill();
    drop((partition, cluster));

    let gate = gate::Gate::new(&faulty, Bug::None);
    let cluster = open(&gate)?;
    let partition = cluster.topic("t")?.partition(0)?;
    assert_eq!(
        (partition.log_start_offset()?, partition.log_end_offset()?),
        (0, 2),
        "the records appended after the recovery are visible"
    );
    let served = model::read_served(|o, m| partition.read(o, m), 0, 2, false).expect("readable");
    let values: Vec<&[u8]> = served.iter().map(|r| r.value.as_slice()).collect();
    assert_eq!(values, [b"x".as_slice(), b"y".as_slice()]);
    drop(partition);
    cluster.close()
}

/// A refused open changes no file, at the log level: a flipped bit in the
/// last batch of each segment of a cleanly closed log (fsynced, below the
/// recovery point the owner checkpointed) refuses the open with
/// `Error::Corrupt`, and every file is as it was.
#[test]
fn a_refused_log_open_changes_no_file() -> logbus::Result<()> {
    use std::sync::Arc;

    use logbus::{Error, FlushPolicy, StdStorage};

    let config = regression_config(1024)
        .index_interval_bytes(256)
        .flush(FlushPolicy::every_append())
        .build()?;
    let open = |dir: &Path, recovery_point: u64| {
        open_log(dir, &config, Arc::new(StdStorage::new()), recovery_point, 0)
    };
    let tmp = tempdir();
    let dir = tmp.path().join("t-0");
    let log = open(&dir, 0)?;
    for i in 0..40u64 {
        let drafts: Vec<model::Draft> = (0..1 + i % 3)
            .map(|j| model::Draft {
                timestamp: 1_000 + i as i64,
                key: Some(format!("k{j}").into_bytes()),
                value: format!("value {i}.{j} ").repeat(4).into_bytes(),
            })
            .collect();
        log.append(&mut model::build_batch(&drafts), 0)?;
    }
    let end = log.log_end_offset();
    let bases = log.segment_base_offsets();
    assert!(bases.len() >= 3, "{bases:?}");
    log.close()?;
    let clean = refusal::snapshot(&dir);

    let mut refused = 0;
    for base in &bases {
        // Start from the clean files each time.
        std::fs::remove_dir_all(&dir).expect("clear");
        refusal::write_tree(&dir, &clean);
        let segment = dir.join(format!("{base:020}.log"));
        refusal::flip_in_last_batch(&segment);
        let before = refusal::snapshot(&dir);
        match open(&dir, end) {
            Err(Error::Corrupt { path, .. }) => {
                assert_eq!(path, segment, "the error names the damaged file");
                refused += 1;
            }
            Err(e) => panic!("segment {base}: unexpected error {e}"),
            Ok(_) => panic!("segment {base}: damage below the recovery point was accepted"),
        }
        let changed = refusal::differences(&before, &refusal::snapshot(&dir));
        assert!(
            changed.is_empty(),
            "segment {base}: the refused open changed {changed:?}"
        );
    }
    assert_eq!(refused, bases.len());
    Ok(())
}

/// A refused open changes no file, at the cluster level: a flipped bit in
/// the metadata log's last batch, or in a partition's last batch, after a
/// clean close, refuses `Cluster::open` with `Error::Corrupt`, and every
/// file under the root is as it was.
#[test]
fn a_refused_cluster_open_changes_no_file() -> logbus::Result<()> {
    use logbus::format::BatchBuilder;
    use logbus::{Cluster, ClusterConfig, Compression, Error, FlushPolicy, NewTopic, TopicConfig};

    let tmp = tempdir();
    let root = tmp.path().join("cluster");
    let cluster = Cluster::open(&root, ClusterConfig::default())?;
    let config = TopicConfig::new()
        .segment_bytes(1024)
        .unwrap()
        .flush(FlushPolicy::every_append());
    cluster.create_topic(NewTopic::new("keep", 1).config(config.clone()))?;
    let partition = cluster
        .create_topic(NewTopic::new("t", 2).config(config))?
        .partition(1)?;
    for i in 0..30 {
        let mut batch = BatchBuilder::new(Compression::None);
        batch.append(
            1_000,
            None,
            Some(format!("record {i} ").repeat(5).as_bytes()),
            &[],
        );
        partition.append(&mut batch.build()?.to_vec())?;
    }
    drop(partition);
    cluster.close()?;
    let clean = refusal::snapshot(&root);
    let restore = || {
        std::fs::remove_dir_all(&root).expect("clear");
        refusal::write_tree(&root, &clean);
    };
    let last_segment = |dir: &Path| {
        let mut logs: Vec<_> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        logs.sort();
        logs.pop().expect("a segment")
    };
    for damaged in ["__cluster_metadata-0", "broker-0/t-1"] {
        restore();
        let segment = last_segment(&root.join(damaged));
        refusal::flip_in_last_batch(&segment);
        let before = refusal::snapshot(&root);
        match Cluster::open(&root, ClusterConfig::default()) {
            Err(Error::Corrupt { path, .. }) => {
                assert!(
                    path.starts_with(root.join(damaged)),
                    "{damaged}: {}",
                    path.display()
                );
            }
            Err(e) => panic!("{damaged}: unexpected error {e}"),
            Ok(_) => panic!("{damaged}: damage below the recovery point was accepted"),
        }
        let changed = refusal::differences(&before, &refusal::snapshot(&root));
        assert!(
            changed.is_empty(),
            "{damaged}: the refused open changed {changed:?}"
        );
    }
    Ok(())
}

/// Regression: the cleaner dropped a durable record for a later one of the
/// same key that was not durable yet, so after a power loss the key had no
/// value at all. Under the page-cache policy a sealed segment is flushed in
/// the background after its roll; here that work is held up (the gate
/// holds the spare segment's creation, and the flush queued behind it)
/// while a cleaning pass runs, then the power fails. Found by the
/// log-level exploration (page cache and interval policies, compacted).
#[test]
fn compaction_never_drops_a_durable_record_for_one_that_is_not() -> logbus::Result<()> {
    use logbus::Log;

    let config = compacted_config(1024).build()?;
    let record = |key: &str, value: String| (Some(key.to_owned()), value);
    let mut lost_keys = Vec::new();
    for seed in 0..24u64 {
        let (disk, gate) = CrashDisk::new(&config)?;
        let log = disk.open(&gate, 0)?;
        // "A" once, flushed: it is durable.
        append_records(&log, &[record("A", "A-1".into())])?;
        log.flush()?;
        let durable = log.recovery_point();
        assert_eq!(durable, 1);
        // From here the log's background work (spare, flush) waits.
        gate.hold_log_syncs();
        let mut n = 0;
        let mut fill = |log: &Log, until_segments: usize| -> logbus::Result<()> {
            while log.segment_count() < until_segments {
                n += 1;
                append_records(
                    log,
                    &[record(&format!("k{n}"), format!("filler {n} ").repeat(8))],
                )?;
            }
            Ok(())
        };
        fill(&log, 2)?;
        // A newer "A" in the second segment, which is sealed next.
        append_records(&log, &[record("A", "A-2".into())])?;
        fill(&log, 3)?;
        let cleaned = log.clean()?;
        gate.crash(seed)?;
        drop(log);

        let gate = disk.process();
        let log = disk.open(&gate, durable)?;
        let served = model::read_served(
            |o, m| log.read(o, m),
            log.log_start_offset(),
            log.log_end_offset(),
            true,
        )
        .expect("readable");
        if !served
            .iter()
            .any(|r| r.key.as_deref() == Some(b"A".as_slice()))
        {
            lost_keys.push(format!("seed {seed}: {cleaned:?}"));
        }
        log.close()?;
    }
    assert!(
        lost_keys.is_empty(),
        "the durable record of key A was cleaned away for one a power loss took: {lost_keys:#?}"
    );
    Ok(())
}

/// Regression: deleting several segments (`delete_records`, retention; in
/// one call or several) renamed their files `.deleted` with no directory
/// fsync between them, so a power loss could keep a later rename and lose
/// an earlier one: the
/// earlier segment came back with a hole after it, below the recovery
/// point, and the open refused. Found by the log-level exploration (every
/// policy).
#[test]
fn a_power_loss_after_deleting_several_segments_never_leaves_a_hole() -> logbus::Result<()> {
    use logbus::FlushPolicy;

    let config = regression_config(1024)
        .flush(FlushPolicy::every_append())
        .build()?;
    for seed in 0..48u64 {
        let (disk, gate) = CrashDisk::new(&config)?;
        let log = disk.open(&gate, 0)?;
        let mut i = 0;
        while log.segment_count() < 6 {
            append_records(&log, &[(None, format!("record {i} ").repeat(12))])?;
            i += 1;
        }
        let end = log.log_end_offset();
        let bases = log.segment_base_offsets();
        // Three segments go, at once or one call at a time; the owner
        // checkpoints the new start.
        if seed % 2 == 1 {
            log.delete_records(bases[1])?;
            log.delete_records(bases[2])?;
        }
        let start = log.delete_records(bases[3])?;
        assert_eq!(log.segment_base_offsets()[0], bases[3]);
        gate.crash(seed)?;
        drop(log);

        let gate = disk.process();
        let log = disk.open_from(&gate, end, start).unwrap_or_else(|e| {
            panic!(
                "seed {seed}: the open after deleting segments {:?} refused: {e}",
                &bases[..3]
            )
        });
        assert_eq!(
            (log.log_start_offset(), log.log_end_offset()),
            (start, end),
            "seed {seed}"
        );
        let served =
            model::read_served(|o, m| log.read(o, m), start, end, false).expect("readable");
        assert_eq!(served.len() as u64, end - start, "seed {seed}");
        log.close()?;
    }
    Ok(())
}

/// Regression: index files are never fsynced (only log files are), yet
/// recovery of a compacted log took an offset index entry that disagreed
/// with a batch as evidence against the batch: an index page a power loss
/// took (reading as zeros: "offset `base` at position 0") refused the open
/// over fsynced data below the recovery point, and above a recovery point
/// the owner had not checkpointed yet cut fsynced (acknowledged) records.
/// Found by the log-level exploration (every policy, compacted logs).
#[test]
fn a_lost_index_page_never_refuses_the_open_of_a_compacted_log() -> logbus::Result<()> {
    let config = compacted_config(4096).index_interval_bytes(1024).build()?;
    for seed in 0..48u64 {
        let (disk, gate) = CrashDisk::new(&config)?;
        let log = disk.open(&gate, 0)?;
        // The first segment holds two batches, the first of four records;
        // its index one entry: offset 3 at position 0. A lost index page
        // reads as zeros: offset 0 at position 0.
        for (i, (count, repeat)) in [(4, 35), (1, 180), (4, 35)].into_iter().enumerate() {
            append_numbered(&log, i as u64, count, repeat)?;
        }
        assert_eq!(log.segment_count(), 2);
        log.flush()?;
        let end = log.log_end_offset();
        gate.crash(seed)?;
        drop(log);

        // The owner checkpointed the flush, or not yet: either way the
        // fsynced batches stay (at or above a stale recovery point too).
        let recovery_point = if seed % 2 == 0 { end } else { 0 };
        let gate = disk.process();
        let log = disk
            .open(&gate, recovery_point)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(
            log.log_end_offset(),
            end,
            "seed {seed}: {:?}",
            log.recovery_report()
        );
        log.close()?;
    }
    Ok(())
}

/// Regression: in a compacted log (whose segments may leave offset gaps),
/// recovery that cut the last segment back to nothing, or found the last
/// two segments empty, ended the log at an empty segment's base offset,
/// above the last batch of the segment before it; the reopened log then
/// claimed offsets no batch held, its recovery point reached them, and
/// once appends there were lost, the next open (dropping the empty
/// segment) found the log ending below that recovery point and refused.
/// Found by the log-level exploration (page cache).
#[test]
fn a_compacted_log_cut_back_to_an_empty_segment_ends_at_its_last_batch() -> logbus::Result<()> {
    use logbus::Log;

    let config = compacted_config(1024).build()?;
    let mut cuts = 0;
    for seed in 0..128u64 {
        let (disk, gate) = CrashDisk::new(&config)?;
        let append = |log: &Log, i: u64| {
            append_records(
                log,
                &[(Some(format!("k{i}")), format!("value {i} ").repeat(20))],
            )
        };
        let log = disk.open(&gate, 0)?;
        let mut i = 0;
        // A flushed first segment, then records in the page cache across a
        // roll: the power loss may take the first segment's tail and the
        // second segment's content.
        while log.segment_count() < 2 {
            append(&log, i)?;
            i += 1;
        }
        log.flush()?;
        let flushed = log.recovery_point();
        // One roll or two: both new segments may lose all they held.
        while log.segment_count() < 3 + (seed % 2) as usize {
            append(&log, i)?;
            i += 1;
        }
        append(&log, i)?;
        gate.crash(seed)?;
        drop(log);

        let gate = disk.process();
        let log = disk.open(&gate, flushed)?;
        cuts += u64::from(log.recovery_report().truncated.is_some());
        let end = log.log_end_offset();
        let served = model::read_served(|o, m| log.read(o, m), log.log_start_offset(), end, true)
            .expect("readable");
        let last = served
            .last()
            .map_or(log.log_start_offset(), |r| r.offset + 1);
        assert_eq!(end, last, "seed {seed}: the log ends after its last record");
        // What this open kept is durable; the next append is not.
        let recovery_point = log.recovery_point();
        append(&log, 1_000)?;
        gate.crash(seed.wrapping_mul(31).wrapping_add(7))?;
        drop(log);

        let gate = disk.process();
        let log = disk
            .open(&gate, recovery_point)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert!(log.log_end_offset() >= end, "seed {seed}");
        log.close()?;
    }
    assert!(cuts > 0, "no power loss left a torn segment to cut");
    Ok(())
}

/// Regression: `truncate_to` shortened a segment without an fsync, and
/// since the durable offset already covered the kept part no flush synced
/// it later: an append that rolled at once sealed it unsynced, a process
/// crash and reopen trusted it (below the recovery point), and a later
/// power loss brought the cut batches back below the recovery point,
/// overlapping the next segment: the open refused. Found by the log-level
/// exploration (page cache).
#[test]
fn a_truncation_is_durable_before_the_log_moves_on() -> logbus::Result<()> {
    use logbus::{FlushPolicy, Log};

    let config = regression_config(1024)
        .flush(FlushPolicy::page_cache())
        .build()?;
    for seed in 0..32u64 {
        let (disk, gate) = CrashDisk::new(&config)?;
        let append = |log: &Log, tag: &str, repeat: usize| {
            append_records(log, &[(None, format!("{tag} ").repeat(repeat))])
        };
        let log = disk.open(&gate, 0)?;
        // Two segments of three batches, all flushed.
        for i in 0..6 {
            append(&log, &format!("old {i}"), 25)?;
        }
        assert_eq!(log.segment_count(), 2);
        log.flush()?;
        // Cut the last batch of the first segment (the second goes); the
        // owner checkpoints the lowered recovery point. The next append is
        // too big for what is left: the log rolls at once.
        let end = log.truncate_to(2)?;
        assert_eq!((end, log.recovery_point()), (2, 2));
        append(&log, "new", 160)?;
        assert_eq!(log.segment_base_offsets(), [0, 2]);
        // A process crash (the page cache survives) and a reopen that
        // trusts the first segment; appends, flushed and checkpointed;
        // then a power loss.
        gate.kill();
        drop(log);
        let gate = disk.process();
        let log = disk.open(&gate, end)?;
        append(&log, "newer", 20)?;
        log.flush()?;
        let flushed = log.recovery_point();
        assert_eq!(flushed, 4);
        gate.crash(seed)?;
        drop(log);

        let gate = disk.process();
        let log = disk
            .open(&gate, flushed)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let served =
            model::read_served(|o, m| log.read(o, m), 0, flushed, false).expect("readable");
        let values: Vec<&[u8]> = served.iter().map(|r| &r.value[..3]).collect();
        assert_eq!(values, [b"old", b"old", b"new", b"new"], "seed {seed}");
        log.close()?;
    }
    Ok(())
}

/// Regression (found by a 25,000-state run after the fixes above): a
/// compacted log whose last segment is empty above the previous segment's
/// end (a power loss took the end of the previous segment after the roll,
/// then a truncation emptied the last one) durably ends at the empty
/// segment's base, and its recovery point says so; recovery must keep that
/// segment rather than end the log below the recovery point and refuse.
#[test]
fn an_empty_compacted_segment_at_the_recovery_point_is_kept() -> logbus::Result<()> {
    use std::sync::Arc;

    use logbus::{Log, StdStorage, Storage};

    let config = compacted_config(1024).build()?;
    let open = |dir: &Path, storage: Arc<dyn Storage>, recovery_point: u64| {
        open_log(dir, &config, storage, recovery_point, 0)
    };
    let append = |log: &Log, i: u64, count: u64| append_numbered(log, i, count, 8);
    for seed in 0..16u64 {
        let tmp = tempdir();
        let dir = tmp.path().join("t-0");
        // Two segments, a few batches in the second.
        let log = open(&dir, Arc::new(StdStorage::new()), 0)?;
        let mut i = 0;
        while log.segment_count() < 2 {
            append(&log, i, 1)?;
            i += 1;
        }
        append(&log, i, 3)?;
        let second = log.segment_base_offsets()[1];
        log.close()?;
        // What a power loss can leave (the first segment's last batch lost
        // after the roll): a gap before the second segment, which a
        // compacted log accepts.
        let first = dir.join(format!("{:020}.log", 0));
        let bytes = std::fs::read(&first).expect("read");
        let (last_start, _) = *refusal::batch_spans(&bytes).last().expect("a batch");
        std::fs::write(&first, &bytes[..last_start]).expect("write");

        let faulty = faulty_storage();
        let gate = gate::Gate::new(&faulty, Bug::None);
        let log = open(&dir, Arc::new(gate.clone()), 0)?;
        assert_eq!(log.segment_base_offsets(), [0, second], "seed {seed}");
        // The truncation empties the second segment (durably; the recovery
        // point follows), then the power fails.
        let end = log.truncate_to(second)?;
        assert_eq!((end, log.recovery_point()), (second, second));
        gate.crash(seed)?;
        drop(log);

        let gate = gate::Gate::new(&faulty, Bug::None);
        let log = open(&dir, Arc::new(gate), end).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(log.log_end_offset(), end, "seed {seed}");
        log.close()?;
    }
    Ok(())
}
