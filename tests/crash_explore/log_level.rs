//! Level (a): one `Log` under a flush policy, the test playing the owner
//! (checkpoint files for the recovery point, log start and cleaner
//! offsets, written through the same storage at the points the cluster
//! writes them).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use logbus::{CheckpointRead, Clock, FaultyStorage, Log, LogConfig, ManualClock, OffsetCheckpoint};

use crate::gate::{Bug, Gate};
use crate::model::{Draft, PartitionModel, Rec, Rng, build_batch, read_served};
use crate::run::{Crash, Explorer, Trail, join_appenders, placed, spawn_appenders, until_acks};
use crate::{Failure, Policy, Stats, tempdir};

const RECOVERY_POINT: &str = "recovery-point-offset-checkpoint";
const LOG_START: &str = "log-start-offset-checkpoint";
const CLEANER: &str = "cleaner-offset-checkpoint";

/// How long a test waits for a background flush the clock made due. Only
/// a bound against hanging forever: the wait ends when the flush does.
const FLUSH_WAIT: Duration = Duration::from_secs(60);

/// One append that threads report back.
enum Event {
    Acked { recs: Vec<Rec>, late: bool },
    Failed { drafts: Vec<Draft>, error: String },
}

/// One seeded run over one log.
pub(crate) struct LogRun {
    trail: Trail,
    rng: Rng,
    _tmp: tempfile::TempDir,
    root: PathBuf,
    dir: PathBuf,
    faulty: FaultyStorage,
    clock: ManualClock,
    config: LogConfig,
    bug: Bug,
    gate: Gate,
    log: Option<Arc<Log>>,
    model: PartitionModel,
    next_id: u64,
    segment_bytes: u64,
    /// The recovery point the last open was given.
    opened_with: u64,
    /// The highest cleaner checkpoint any incarnation reached.
    max_cleaned: u64,
    /// The files before the last reopen (with `LOGBUS_EXPLORE_DUMP`).
    previous_dump: Option<crate::Dump>,
    /// What the run explored.
    pub(crate) stats: Stats,
}

impl LogRun {
    pub(crate) fn new(seed: u64, policy: Policy, bug: Bug) -> Self {
        let mut rng = Rng(seed ^ 0x10c5_eed0);
        let compacted = rng.chance(30);
        let segment_bytes = [1024, 2048, 4096, 6000][rng.below(4) as usize];
        let mut builder = LogConfig::builder()
            .segment_bytes(segment_bytes)
            .segment_index_bytes(4096)
            .index_interval_bytes([0, 256, 1024][rng.below(3) as usize])
            .segment_time(None)
            .flush(policy.flush())
            .compact(compacted)
            .delete(!compacted || rng.chance(30))
            .min_compaction_lag(Duration::from_millis(0));
        builder = if rng.chance(50) {
            builder.retention_time(Some(Duration::from_secs(60)))
        } else {
            builder.retention_time(None)
        };
        builder = if rng.chance(40) {
            builder.retention_bytes(Some(segment_bytes * rng.range(2, 6)))
        } else {
            builder.retention_bytes(None)
        };
        let config = builder.build().expect("valid config");
        let tmp = tempdir();
        let root = tmp.path().to_path_buf();
        let dir = root.join("t-0");
        let faulty = crate::faulty_storage();
        let gate = Gate::new(&faulty, bug);
        LogRun {
            trail: Trail::new("log", policy, seed),
            rng,
            _tmp: tmp,
            root,
            dir,
            faulty,
            clock: ManualClock::new(1_700_000_000_000),
            config,
            bug,
            gate,
            log: None,
            model: PartitionModel::new(compacted),
            next_id: 0,
            segment_bytes,
            opened_with: 0,
            max_cleaned: 0,
            previous_dump: None,
            stats: Stats::default(),
        }
    }

    /// Runs `crashes` crash states (plus the steps between them).
    pub(crate) fn run(mut self, crashes: u64) -> Result<Stats, Failure> {
        let compacted = self.model.compacted;
        self.trail
            .note(format!("config: compacted={compacted} {:?}", self.config));
        if let Err(e) = self.first_open() {
            return Err(self.trail.fail(0, e));
        }
        self.crash_states(crashes)?;
        if let Some(log) = self.log.take() {
            let log = Arc::try_unwrap(log).expect("no other log handle");
            log.close()
                .map_err(|e| self.trail.fail(crashes, format!("close: {e}")))?;
        }
        Ok(self.stats)
    }

    fn log(&self) -> &Arc<Log> {
        self.log.as_ref().expect("an open log")
    }

    fn checkpoint_file(&self, name: &str) -> OffsetCheckpoint {
        OffsetCheckpoint::with_storage(self.root.join(name), Arc::new(self.gate.clone()))
    }

    fn read_checkpoint(&self, name: &str) -> Result<Option<u64>, String> {
        match self.checkpoint_file(name).read() {
            Ok(CheckpointRead::Present(entries)) => Ok(entries.get(&("t".to_string(), 0)).copied()),
            Ok(CheckpointRead::Missing) => Ok(None),
            Err(e) => Err(format!("{name} unreadable after a power loss: {e}")),
        }
    }

    /// The owner's checkpoint write: recovery point, log start, cleaner
    /// offset, each file replaced atomically.
    fn write_checkpoints(&mut self) -> Result<(), String> {
        let log = Arc::clone(self.log());
        let mut files = vec![
            (RECOVERY_POINT, log.recovery_point()),
            (LOG_START, log.log_start_offset()),
        ];
        if self.model.compacted {
            files.push((CLEANER, log.cleaner_checkpoint()));
        }
        for (name, value) in &files {
            let entries = BTreeMap::from([(("t".to_string(), 0), *value)]);
            self.checkpoint_file(name)
                .write(&entries)
                .map_err(|e| format!("writing {name}: {e}"))?;
        }
        self.trail.note(format!("checkpoints {files:?}"));
        self.model.start_persisted(log.log_start_offset());
        Ok(())
    }

    fn open(&mut self) -> Result<Log, String> {
        let rp = self.read_checkpoint(RECOVERY_POINT)?.unwrap_or(0);
        let start = self.read_checkpoint(LOG_START)?.unwrap_or(0);
        let cleaner = self.read_checkpoint(CLEANER)?.unwrap_or(0);
        let mut builder = Log::builder(&self.dir)
            .config(self.config.clone())
            .storage(Arc::new(self.gate.clone()))
            .clock(Arc::new(self.clock.clone()))
            .recovery_point(rp)
            .log_start_offset(start);
        if self.model.compacted {
            builder = builder.cleaner_checkpoint(cleaner);
        }
        self.trail.note(format!(
            "open: recovery point {rp}, log start {start}, cleaner {cleaner}"
        ));
        self.opened_with = rp;
        builder
            .open()
            .map_err(|e| format!("the open after a crash refused: {e}"))
    }

    fn first_open(&mut self) -> Result<(), String> {
        // The owner makes the log directory durable, as the broker does.
        use logbus::Storage;
        self.gate
            .create_dir_all(&self.dir)
            .and_then(|()| self.gate.sync_dir(&self.root))
            .map_err(|e| format!("creating the log dir: {e}"))?;
        let log = self.open()?;
        self.log = Some(Arc::new(log));
        self.write_checkpoints()
    }

    fn drafts(&mut self, count: u64, big: bool) -> Vec<Draft> {
        (0..count)
            .map(|_| {
                let id = self.next_id;
                self.next_id += 1;
                let len = if big {
                    self.rng
                        .range(self.segment_bytes / 4, self.segment_bytes / 2)
                } else {
                    self.rng.range(0, (self.segment_bytes / 8).min(400))
                };
                let fill = (b'a' + (id % 26) as u8) as char;
                let value = format!(
                    "{:x}.{id}.{}",
                    self.trail.seed,
                    fill.to_string().repeat(len as usize)
                );
                let key = if self.model.compacted {
                    Some(format!("k{}", self.rng.below(6)).into_bytes())
                } else if self.rng.chance(20) {
                    None
                } else {
                    Some(format!("k{}", id % 7).into_bytes())
                };
                Draft {
                    timestamp: self.clock.now_ms(),
                    key,
                    value: value.into_bytes(),
                }
            })
            .collect()
    }

    /// An acknowledged append: the model and the policy's bound.
    fn on_ack(&mut self, recs: &[Rec]) {
        self.model.acked(recs);
        if let (Some(n), Some(last)) = (self.trail.policy.messages(), recs.last()) {
            self.model
                .raise_bound((last.offset + 1).saturating_sub(n - 1));
        }
    }

    fn append(&mut self, big: bool) -> Result<(), String> {
        let count = if big { 1 } else { self.rng.range(1, 4) };
        let drafts = self.drafts(count, big);
        let mut bytes = build_batch(&drafts);
        let info = self
            .log()
            .append(&mut bytes, 0)
            .map_err(|e| format!("append: {e}"))?;
        let recs: Vec<Rec> = drafts
            .iter()
            .enumerate()
            .map(|(i, d)| d.at(info.first_offset() + i as u64))
            .collect();
        self.trail.note(format!(
            "append {} record(s) at {} ({} bytes)",
            recs.len(),
            info.first_offset(),
            bytes.len()
        ));
        self.on_ack(&recs);
        Ok(())
    }

    /// Several threads append at once. With `crash`, the crash happens
    /// once `after` appends were acknowledged, while the threads go on.
    fn concurrent(&mut self, crash: Option<(Crash, u64)>) -> Result<(), String> {
        let threads = self.rng.range(2, 3);
        let mut work: Vec<Vec<Vec<Draft>>> = Vec::new();
        for _ in 0..threads {
            let batches = self.rng.range(2, 6);
            let mut mine = Vec::new();
            for _ in 0..batches {
                let count = self.rng.range(1, 3);
                mine.push(self.drafts(count, false));
            }
            work.push(mine);
        }
        let total: u64 = work.iter().map(|w| w.len() as u64).sum();
        let crashed = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let log = Arc::clone(self.log());
        let handles = spawn_appenders(work, &crashed, &tx, move |drafts: Vec<Draft>, crashed| {
            let mut bytes = build_batch(&drafts);
            match log.append(&mut bytes, 0) {
                Ok(info) => Event::Acked {
                    // Read after the append returned: an ack the crash may
                    // have overtaken is not one.
                    late: crashed.load(Ordering::SeqCst),
                    recs: placed(&drafts, info.first_offset()),
                },
                Err(e) => Event::Failed {
                    drafts,
                    error: e.to_string(),
                },
            }
        });
        drop(tx);
        let mut events = Vec::new();
        let mut crash_info = None;
        if let Some((kind, after)) = crash {
            events = until_acks(&rx, after.min(total), |e| matches!(e, Event::Acked { .. }));
            let r_before = self.log().recovery_point();
            crashed.store(true, Ordering::SeqCst);
            self.kill(kind)?;
            crash_info = Some((kind, r_before));
        }
        join_appenders(handles)?;
        events.extend(rx.iter());
        let (mut acked, mut late, mut failed) = (0, 0, 0);
        for event in events {
            match event {
                Event::Acked { recs, late: false } => {
                    acked += 1;
                    self.on_ack(&recs);
                }
                Event::Acked { recs, late: true } => {
                    late += 1;
                    self.model.unacked(&recs);
                }
                Event::Failed { drafts, error } => {
                    if crash.is_none() {
                        return Err(format!(
                            "a concurrent append failed without a crash: {error}"
                        ));
                    }
                    failed += 1;
                    self.model.unknown(&drafts);
                }
            }
        }
        self.trail.note(format!(
            "{threads} threads appended: {acked} acknowledged, {late} late, {failed} failed{}",
            if crash.is_some() {
                ", crash among them"
            } else {
                ""
            }
        ));
        if crash.is_none() && (late > 0 || failed > 0) {
            return Err("concurrent appends failed without a crash".into());
        }
        if let Some((kind, r_before)) = crash_info {
            self.after_crash(kind, r_before)?;
        }
        Ok(())
    }

    /// Moves the clock: by the flush interval (then the background flush
    /// must cover everything appended before), or by a while (retention).
    fn tick(&mut self) -> Result<(), String> {
        if let Some(ms) = self.trail.policy.interval_ms() {
            let leo = self.log().log_end_offset();
            self.clock.advance_ms(ms as i64);
            if !self.log().wait_for_flush(leo, FLUSH_WAIT) {
                return Err(format!(
                    "the interval flush did not cover offset {leo} after the clock moved {ms} ms"
                ));
            }
            self.model.raise_bound(leo);
            self.trail.note(format!("tick {ms} ms: flushed to {leo}"));
        } else {
            let ms = self.rng.range(1_000, 40_000);
            self.clock.advance_ms(ms as i64);
            self.trail.note(format!("clock +{ms} ms"));
        }
        Ok(())
    }

    fn delete_records(&mut self) -> Result<(), String> {
        let (start, end) = (self.log().log_start_offset(), self.log().log_end_offset());
        let to = self.rng.range(start, end);
        let new_start = self
            .log()
            .delete_records(to)
            .map_err(|e| format!("delete_records({to}): {e}"))?;
        self.trail
            .note(format!("delete_records({to}) -> {new_start}"));
        // The owner checkpoints the new log start before answering.
        self.write_checkpoints()
    }

    fn truncate(&mut self) -> Result<(), String> {
        let (start, end) = (self.log().log_start_offset(), self.log().log_end_offset());
        // A compacted log is truncated only above what the cleaner cleaned
        // (as in Kafka: followers truncate above the high watermark, the
        // cleaner stays below it), else a record it dropped for a later
        // one of the same key would go with that later one.
        let floor = if self.model.compacted {
            // What any incarnation cleaned: a reopen's cleaner checkpoint
            // may be older than what was cleaned before the crash.
            self.max_cleaned = self.max_cleaned.max(self.log().cleaner_checkpoint());
            self.max_cleaned
        } else {
            0
        };
        // Above the log start by more than a batch (at most 4 records):
        // a cut below it lowers the log start (as Kafka's truncateTo does),
        // which the model does not follow.
        let low = (start + 4).max(end.saturating_sub(12)).max(floor);
        if low > end {
            return Ok(());
        }
        let to = self.rng.range(low, end);
        let new_end = self
            .log()
            .truncate_to(to)
            .map_err(|e| format!("truncate_to({to}): {e}"))?;
        self.trail.note(format!("truncate_to({to}) -> {new_end}"));
        self.model.truncated(new_end);
        // As Kafka's LogManager.truncateTo, the owner checkpoints the
        // lowered recovery point at once.
        self.write_checkpoints()
    }

    fn close_and_reopen(&mut self) -> Result<(), String> {
        let log = Arc::try_unwrap(self.log.take().expect("open log")).expect("one handle");
        let pre_start = log.log_start_offset();
        self.max_cleaned = self.max_cleaned.max(log.cleaner_checkpoint());
        log.close().map_err(|e| format!("close: {e}"))?;
        self.trail.note("clean close".into());
        // A clean close flushes: everything acknowledged is promised.
        let promised = self.model.promised(0, true);
        self.reopen_and_check(pre_start, &promised, true)
    }

    fn kill(&mut self, kind: Crash) -> Result<(), String> {
        if matches!(kind, Crash::PowerLoss(_)) && std::env::var_os("LOGBUS_EXPLORE_DUMP").is_some()
        {
            let pending = self.faulty.pending_dir_ops();
            self.trail
                .note(format!("pending directory operations: {pending:?}"));
        }
        let what = kind.strike(&self.gate)?;
        self.trail.note(what);
        Ok(())
    }

    /// Drops the dead log and checks the reopen.
    fn after_crash(&mut self, kind: Crash, r_before: u64) -> Result<(), String> {
        let log = self.log.take().expect("open log");
        let pre_start = log.log_start_offset();
        self.max_cleaned = self.max_cleaned.max(log.cleaner_checkpoint());
        drop(Arc::try_unwrap(log).expect("one handle"));
        let promised = self.model.promised(r_before, matches!(kind, Crash::Kill));
        self.stats.states += 1;
        self.reopen_and_check(pre_start, &promised, matches!(kind, Crash::Kill))
    }

    fn reopen_and_check(
        &mut self,
        pre_start: u64,
        promised: &BTreeMap<u64, Rec>,
        no_cut: bool,
    ) -> Result<(), String> {
        self.gate = Gate::new(&self.faulty, self.bug);
        let dump = crate::Dump::take(&self.root);
        let result = self.reopen_and_check_inner(pre_start, promised, no_cut);
        if let (Err(e), Some(dump)) = (&result, &dump) {
            let at = dump.save("log", self.trail.policy, self.trail.seed);
            if let Some(previous) = &self.previous_dump {
                previous.save_as(&at.with_extension("previous"));
            }
            return Err(format!(
                "{e} (the files before the reopen: {}; before the reopen before it: \
                 .previous)",
                at.display()
            ));
        }
        self.previous_dump = dump;
        result
    }

    fn reopen_and_check_inner(
        &mut self,
        pre_start: u64,
        promised: &BTreeMap<u64, Rec>,
        no_cut: bool,
    ) -> Result<(), String> {
        let log = self.open()?;
        let (start, end) = (log.log_start_offset(), log.log_end_offset());
        let report = log.recovery_report().clone();
        self.trail
            .note(format!("reopened [{start}, {end}): {report:?}"));
        let now = read_served(|o, m| log.read(o, m), start, end, self.model.compacted)?;
        let checked = self
            .model
            .check_reopen(&now, start, end, pre_start, promised)?;
        self.stats.promised += checked.promised;
        self.stats.acked_lost += checked.acked_lost;
        self.stats.cuts += u64::from(report.truncated.is_some());
        if report.fenced_truncation.is_some() {
            return Err("a fenced truncation without any failed fsync".into());
        }
        if let Some(cut) = &report.truncated {
            crate::model::check_cut(cut, end, Some(self.opened_with))?;
            if no_cut {
                return Err(format!(
                    "a cut where the page cache survived (clean close or process kill): {cut:?}"
                ));
            }
        }
        self.model.reopened(&now, end);
        self.log = Some(Arc::new(log));
        // The owner checkpoints what the open found.
        self.write_checkpoints()
    }
}

impl Explorer for LogRun {
    fn trail(&self) -> &Trail {
        &self.trail
    }

    fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    fn step(&mut self) -> Result<(), String> {
        let roll = self.rng.below(100);
        match roll {
            0..=39 => self.append(false),
            40..=44 => self.append(true),
            45..=54 => self.concurrent(None),
            55..=59 => {
                let leo = self.log().log_end_offset();
                self.log().flush().map_err(|e| format!("flush: {e}"))?;
                self.model.raise_bound(leo);
                self.trail.note(format!("flush to {leo}"));
                Ok(())
            }
            60..=67 => self.tick(),
            68..=73 => {
                let report = self
                    .log()
                    .enforce_retention()
                    .map_err(|e| format!("enforce_retention: {e}"))?;
                let start = self.log().log_start_offset();
                self.trail
                    .note(format!("retention: {report:?}, log start {start}"));
                Ok(())
            }
            74..=78 => self.delete_records(),
            79..=84 if self.model.compacted => {
                let report = self.log().clean().map_err(|e| format!("clean: {e}"))?;
                self.trail.note(format!("clean: {report:?}"));
                Ok(())
            }
            85..=87 => self.truncate(),
            88..=96 => self.write_checkpoints(),
            97..=98 => self.close_and_reopen(),
            _ => self.append(false),
        }
    }

    fn crash_state(&mut self) -> Result<(), String> {
        let kind = Crash::pick(&mut self.rng);
        if self.rng.chance(25) {
            let after = self.rng.range(0, 8);
            return self.concurrent(Some((kind, after)));
        }
        let r_before = self.log().recovery_point();
        self.kill(kind)?;
        self.after_crash(kind, r_before)
    }
}
