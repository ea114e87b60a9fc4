//! `logbus perf`: a producer/consumer performance tool in the spirit of
//! Kafka's `kafka-producer-perf-test` and `kafka-consumer-perf-test`. It
//! prints its result as one JSON line. The same source is built as the
//! library's `perf` example (`cargo run --release --example perf -- ARGS`),
//! which takes the same arguments.
//!
//! ```sh
//! logbus perf produce --dir D --topic T --partitions P \
//!     --records N --record-size S --acks A [--linger-ms L] [--batch-size B] [--compression C] \
//!     [--rate R] [--brokers B] [--replication-factor F] [--min-insync M] \
//!     [--idempotence true|false] [--transaction-records N] [--threads N] \
//!     [--flush-messages M] [--max-in-flight N] [--buffer-memory B] \
//!     [--value-per-record true] [--timeline true]
//! logbus perf consume --dir D --topic T --records N \
//!     [--max-poll-records M] [--group G] [--brokers B] [--baseline true] \
//!     [--check-crcs false] [--write-first true --record-size S]
//! logbus perf scan --dir D --topic T [--baseline true]
//! logbus perf append --dir D --records N --record-size S [--batch-size B]
//!     [--build true] [--group-bytes G]
//! ```
//!
//! `consume --baseline true` runs no consumer: it reads the partitions'
//! segment files (of broker 0) with `std::fs` (1 MiB `read` calls into one
//! reused buffer) and prints
//! the same JSON (`"mode":"consume-baseline"`), counting the records from
//! the batch headers after the clock stops. Alternate it with plain
//! `consume` runs: the ratio of the medians is the figure to compare.
//! `consume --write-first true` first creates the topic (one partition) in
//! a fresh `--dir` and produces `--records` records of `--record-size`
//! bytes into it from this process (untimed), then consumes them: the
//! consumer then reads bytes this process wrote, whose CRCs it does not
//! check again (see `check.crcs`), where a plain `consume` of a directory
//! another process wrote checks every batch's CRC. `--check-crcs false`
//! sets the consumer's `check.crcs` (on by default). The JSON says which
//! ran as `write_first` and `check_crcs`.
//! `scan` opens each partition directory of broker 0 as a standalone
//! [`Log`](logbus::Log) and reads it end to end with `Log::read` (1 MiB
//! reads) and `Batch::record_data` views (`--owned true`: `Batch::records`,
//! owned `Record`s), touching each value (no consumer, no cluster);
//! `scan --baseline true` is the same `std::fs` read.
//! `append` opens a standalone [`Log`](logbus::Log) in a fresh `--dir` and
//! appends batches of the records `produce` would send (the same values, no
//! key, as many as fit in `--batch-size`, default 16384) with
//! [`Log::append`](logbus::Log::append), which checks every batch's CRC and
//! records as it does a client's: the batch is built once, untimed, and
//! appended again and again (the append sets its offsets in place; the CRC
//! does not cover them). It is the producer's ceiling on one partition:
//! alternate it with `produce --acks 1` of the same records.
//! `--build true` encodes each batch again, record by record, inside the
//! timed loop (what a producer's sending thread does besides the hand-off);
//! `--group-bytes G` joins as many batches as fit in `G` bytes into one
//! append (one write), as the producer's sender joins the batches waiting
//! for a partition. Together they measure one thread that builds its
//! batches and writes them itself, in large groups. The JSON adds `build`
//! and `batches_per_append`.
//!
//! `--rate R` offers a fixed load of R records per second (sends are paced,
//! so the latency measured is not queueing behind an unbounded backlog);
//! without it the producer sends as fast as it can. Pacing spins on the
//! clock when the next send is due within 2 ms and sleeps only for longer
//! gaps: a `sleep` of a microsecond lasts ~50-60 µs on Linux (timer slack),
//! which at 1 M records/s turned the offered load into bursts of ~60 sends.
//! `--max-in-flight N` and `--buffer-memory B` set the producer's
//! `max.in.flight.requests.per.connection` (which also caps how many ready
//! batches of a partition one append joins) and `buffer.memory`.
//! `--value-per-record true` gives every record a value of its own, a
//! `Vec<u8>` allocated and filled for it (as an application serialising
//! each record does), instead of one shared `Bytes` whose reference count
//! each record takes; the JSON says which ran as `value_per_record`.
//! `--topic-str true` names each record's topic by `&str`, as most
//! applications write `ProducerRecord::new("orders", value)`, instead of
//! by one shared `Arc<str>` (the JSON says which ran as `topic_str`).
//! `--latency-every N` times every N-th send of each thread (default 16;
//! 0 times none: the latencies are then null, and no send goes through
//! `send_with_callback`, whose boxed callback and two clock readings per
//! timed send the rate otherwise includes).
//! `--threads N` sends from N threads through one shared (cloned)
//! `Producer`, the records (and the rate) split evenly between them.
//! `--flush-messages M` creates the topic with `flush.messages=M` (1: an
//! fsync before every acknowledgement, shared by concurrent appends). The
//! cluster then runs on a counting wrapper of `StdStorage` that notes every
//! `write` and `fdatasync` of the topic's `.log` files on broker 0, and the
//! baseline is no longer 1 MiB writes: it replays that sequence (the same
//! write sizes, an `fdatasync` where logbus began one, covering the writes
//! that came before it) on a fresh file per segment, so logbus and the
//! baseline write the same bytes with the same batching; the baseline
//! runs each write and fdatasync after the other, where logbus writes the
//! next group while an fsync runs. The JSON then adds `fsyncs` (of those `.log` files; the
//! sender appends one partition's ready batches, up to 1 MiB and
//! `max.in.flight` batches, in one write, so fsyncs are not batches),
//! `fsyncs_per_sec`, `records_per_fsync`, `log_bytes` and
//! `baseline_fsyncs_per_sec`. `--brokers`,
//! `--replication-factor` and `--min-insync` open a cluster of that many
//! brokers and create the topic with that replication factor and
//! `min.insync.replicas` (all default to 1); `consume` must be given the
//! same `--brokers` as the `produce` that made the directory.
//! `--idempotence` sets `enable.idempotence` (left alone, the producer's
//! default applies: on with `--acks all`, off with 0 or 1); the JSON says
//! which ran as `idempotence`. `--transaction-records N` makes the producer
//! transactional (`transactional.id` `perf`) and commits a transaction
//! every N records (and at the end); acknowledgement latencies are then
//! those of the appends, the records becoming visible to `read_committed`
//! consumers at their transaction's commit; `commit_seconds` is the time
//! spent in `commit_transaction` (the flush of the transaction's records,
//! then the coordinator's state writes and markers).
//! `--timeline true` (in a build with the library's `internals` feature:
//! `cargo run --release --features internals --example perf`) records the
//! producer's stages during the timed run (see `logbus::timeline`) and adds
//! `timeline` to the JSON: for each stage seen, `count`, `p50_us`, `p90_us`,
//! `p99_us`, `p999_us`, `max_us` and `total_ms` (else `timeline` is null).
//!
//! Before the clock starts one record (not counted) is sent and waited for,
//! so the one-time work of a partition's first append (its first segment's
//! files, the producer's first batch and thread wake-ups) is not part of
//! the figures. Before closing, each thread's CPU time and run-queue wait
//! (`/proc/self/task/*/schedstat`) go to stderr.
//!
//! Progress goes to stderr; the result is one JSON line on stdout with
//! `records`, `bytes`, `seconds`, `records_per_sec`, `mb_per_sec`, for
//! `consume` and `scan` `cpu_seconds` and `records_per_cpu_sec` (the
//! measuring thread's CPU time, which waiting for a CPU on a busy machine
//! does not inflate), for `produce` `app_cpu_ns_per_record` and
//! `sender_cpu_ns_per_record` (the CPU time of the sending threads while
//! they send, and of the producer's sender thread during the timed run,
//! per record; null where unsupported: steadier than the rate on a shared
//! machine, for comparing two builds; with `--flush-messages` the second
//! includes the producer's fsync thread, whose name `/proc` cuts to the
//! same 15 characters),
//! `peak_rss_mb` (`VmHWM`: for `consume`, since the cluster was opened, with
//! the peak of opening apart as `open_peak_rss_mb`; `peak_rss_includes_open`
//! says where that split is unsupported), `rss_anon_mb` and `rss_file_mb`
//! (anonymous memory and mapped file pages resident at the end of the
//! measured phase), for `produce` the send-to-acknowledgement latency
//! percentiles `p50_us`, `p99_us`, `p999_us` (of every 16th record, or
//! every `latency_every`-th, sent with `send_with_callback`: from just
//! before `send` to the callback on
//! the sender thread, so the figure is when the acknowledgement happened,
//! not when the sending thread next looked; in 0.1 µs steps), and a
//! `baseline_mb_per_sec` with the `ratio` to it: the same number of bytes
//! written (produce) or read (consume) with plain file I/O in the same run,
//! because shared machines are noisy and only ratios compare. `produce`
//! runs `sync` (untimed) before its timed phase and before its write
//! baseline, so neither starts while the kernel writes back the other's
//! pages.

#![allow(clippy::print_stdout, reason = "the tool prints its result")]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use logbus::{
    Acks, Cluster, ClusterConfig, Compression, Consumer, ConsumerConfig, DirLock, NewTopic,
    OffsetReset, OpenMode, Producer, ProducerConfig, ProducerRecord, ReadMap, StdStorage, Storage,
    StorageFile, TopicConfig, TopicPartition,
};

const MB: f64 = 1024.0 * 1024.0;
/// Of each sending thread's sends, every this many is timed to its
/// callback unless `--latency-every` says otherwise.
const LATENCY_EVERY: u64 = 16;

/// Runs the tool with `args` (`produce ...`, `consume ...` or `scan ...`),
/// prints its JSON line, or the error and the usage on stderr.
pub(crate) fn main_with(args: &[String]) -> ExitCode {
    match run(args) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("logbus perf: {e}");
            eprintln!(
                "usage: logbus perf produce --dir D --topic T --partitions P --records N --record-size S \
                 --acks 0|1|all [--linger-ms L] [--batch-size B] [--compression none|gzip|snappy|lz4|zstd] \
                 [--idempotence true|false (default: on with acks=all)] \
                 [--transaction-records N: commit a transaction every N records] \
                 [--rate R: records/s offered] [--brokers B (1)] [--replication-factor F (1)] \
                 [--min-insync M (1)] [--threads N (1): sending threads, one shared producer] \
                 [--flush-messages M: the topic's flush.messages; baseline replays logbus's writes and fsyncs] \
                 [--max-in-flight N] [--buffer-memory B] \
                 [--value-per-record true: a new value allocated per record] \
                 [--timeline true: time the producer's stages (a build with feature internals)]\n       \
                 logbus perf consume --dir D --topic T --records N [--max-poll-records M (10000)] \
                 [--group G: subscribe as a member of group G, auto commit on] [--brokers B (1)] \
                 [--baseline true: std::fs read of the segment files instead] \
                 [--check-crcs false] [--write-first true --record-size S: produce the records first, in this process]\n       \
                 logbus perf scan --dir D --topic T [--baseline true] [--owned true]\n       \
                 logbus perf append --dir D --records N --record-size S [--batch-size B (16384)] \
                 [--build true: encode each batch in the timed loop] [--group-bytes G: batches joined per append]"
            );
            ExitCode::from(2)
        }
    }
}

type Error = Box<dyn std::error::Error>;

struct Flags(HashMap<String, String>);

impl Flags {
    fn parse(args: &[String]) -> Result<Flags, Error> {
        let mut map = HashMap::new();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let name = flag
                .strip_prefix("--")
                .ok_or_else(|| format!("expected a --flag, got {flag:?}"))?;
            let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
            map.insert(name.to_string(), value.clone());
        }
        Ok(Flags(map))
    }

    fn get(&self, name: &str) -> Result<&str, Error> {
        self.0
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| format!("--{name} is required").into())
    }

    fn num<T: std::str::FromStr>(&self, name: &str, default: Option<T>) -> Result<T, Error> {
        match (self.0.get(name), default) {
            (Some(v), _) => v
                .parse()
                .map_err(|_| format!("--{name}: not a number: {v}").into()),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(format!("--{name} is required").into()),
        }
    }
}

fn run(args: &[String]) -> Result<String, Error> {
    let (command, rest) = args.split_first().ok_or("a command is required")?;
    let flags = Flags::parse(rest)?;
    match command.as_str() {
        "produce" => produce(&flags),
        "consume" if flags.0.get("baseline").is_some_and(|b| b == "true") => {
            consume_baseline(&flags, "consume-baseline")
        }
        "consume" => consume(&flags),
        "scan" if flags.0.get("baseline").is_some_and(|b| b == "true") => {
            consume_baseline(&flags, "scan-baseline")
        }
        "scan" => scan(&flags),
        "append" => append(&flags),
        other => Err(format!("unknown command {other:?}").into()),
    }
}

/// A field of `/proc/self/status` given in kB, in MiB; 0 where unknown.
fn status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Peak resident set size in MiB (Linux `VmHWM`): anonymous memory plus
/// mapped file pages (the segments' memory maps) plus shared memory.
fn peak_rss_mb() -> f64 {
    status_mb("VmHWM")
}

/// Resets the peak resident set size (`VmHWM`) to the current one, so that
/// a later [`peak_rss_mb`] covers only what follows; false where unsupported.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Resident anonymous memory in MiB now (Linux `RssAnon`): the heap and
/// stacks, without mapped file pages.
fn rss_anon_mb() -> f64 {
    status_mb("RssAnon")
}

/// Resident mapped file pages in MiB now (Linux `RssFile`).
fn rss_file_mb() -> f64 {
    status_mb("RssFile")
}

/// CPU time this thread has run, in seconds (Linux
/// `/proc/thread-self/schedstat`, nanoseconds); 0 where unsupported. Less
/// noisy than wall time on a shared machine: time spent waiting for a CPU
/// is not counted.
fn thread_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 / 1e9)
}

/// Each thread of this process: its name (`comm`, which the kernel cuts
/// to 15 bytes) and its `schedstat`: nanoseconds on a CPU, nanoseconds
/// runnable but waiting for one, times scheduled in. Empty where
/// `/proc/self/task` is not there.
fn task_schedstats() -> Vec<(String, [u64; 3])> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
        let v: Vec<u64> = stat
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if let [run, wait, slices] = v[..] {
            out.push((comm.trim().to_string(), [run, wait, slices]));
        }
    }
    out
}

/// CPU nanoseconds run so far by the threads of this process whose name
/// starts with `prefix`, summed; `None` where unsupported or when no
/// thread has that name.
fn threads_cpu_ns(prefix: &str) -> Option<u64> {
    task_schedstats()
        .into_iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .map(|(_, [run, ..])| run)
        .reduce(|a, b| a + b)
}

/// Prints to stderr, for each thread of the process, its name, CPU time,
/// time spent runnable but waiting for a CPU (the run queue delay a wake-up
/// pays on a busy machine) and number of times it was scheduled in
/// (`/proc/self/task/*/schedstat`), for the names sharing a prefix summed.
fn report_thread_schedstat() {
    let mut by_name: std::collections::BTreeMap<String, (u64, u64, u64, u32)> =
        std::collections::BTreeMap::new();
    for (comm, [run, wait, slices]) in task_schedstats() {
        let name = comm.trim_end_matches(|c: char| c.is_ascii_digit());
        let e = by_name.entry(name.to_string()).or_default();
        e.0 += run;
        e.1 += wait;
        e.2 += slices;
        e.3 += 1;
    }
    for (name, (run, wait, slices, n)) in by_name {
        eprintln!(
            "  sched {name} x{n}: cpu {:.1} ms, waiting for a cpu {:.1} ms, scheduled in {slices} times ({:.1} us wait each)",
            run as f64 / 1e6,
            wait as f64 / 1e6,
            wait as f64 / 1e3 / slices.max(1) as f64
        );
    }
}

/// Has the kernel write back every dirty page now (`sync`, untimed), so
/// that a timed phase does not start while the pages of an earlier one
/// are being written: the write baseline runs right after the produce
/// phase, and without this it met that phase's writeback (in-process
/// ratios for 512 MB of 1 KiB records swung from 0.45 to 1.7). Best
/// effort: without a `sync` command nothing happens.
fn settle_writeback() {
    let _ = std::process::Command::new("sync").status();
}

/// Seconds to write `total` bytes to a fresh file in `dir` in 1 MiB writes.
fn baseline_write(dir: &Path, total: u64) -> Result<f64, Error> {
    let path = dir.join("perf-baseline.tmp");
    let chunk = vec![0x5au8; 1 << 20];
    settle_writeback();
    let start = Instant::now();
    let mut file = std::fs::File::create(&path)?;
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    drop(file);
    let seconds = start.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    Ok(seconds)
}

/// Seconds to read every `.log` file of the topic's partitions.
fn baseline_read(files: &[PathBuf]) -> Result<(f64, u64), Error> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    let start = Instant::now();
    for path in files {
        let mut file = std::fs::File::open(path)?;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
    }
    Ok((start.elapsed().as_secs_f64(), total))
}

/// A bar of `total` records on stderr when it is a terminal; `None`
/// otherwise (then a line every 2 s says how far the run is).
fn progress_bar(total: u64, what: &str) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {pos}/{len} records {per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    Some(bar)
}

/// `count` per second of `cpu_seconds`, or JSON's null when no CPU time
/// was measured (a run shorter than the scheduler's accounting: JSON has no
/// infinity).
fn per_cpu_second(count: u64, cpu_seconds: f64) -> String {
    if cpu_seconds > 0.0 {
        format!("{:.0}", count as f64 / cpu_seconds)
    } else {
        "null".to_string()
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn compression(name: &str) -> Result<Compression, Error> {
    Ok(match name {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        other => return Err(format!("unknown compression {other:?}").into()),
    })
}

/// One `write` or `fdatasync` of a counted file (its index in
/// [`OpLog::files`]), as [`CountingStorage`] saw it.
#[derive(Debug, Clone, Copy)]
enum Op {
    Write(usize, usize),
    Sync(usize),
}

/// The files [`CountingStorage`] counts, in the order they were opened, and
/// what was done to them.
#[derive(Debug, Default)]
struct OpLog {
    files: Vec<PathBuf>,
    ops: Vec<Op>,
}

/// `StdStorage` noting every write and fdatasync of `topic`'s `.log` files
/// on broker 0 (`--flush-messages`), for the JSON's `fsyncs` and for the
/// baseline to replay. Other files pass through unwrapped.
#[derive(Debug)]
struct CountingStorage {
    inner: StdStorage,
    /// `"{topic}-"`: a partition directory's name is this and a number.
    prefix: String,
    log: Arc<Mutex<OpLog>>,
}

impl CountingStorage {
    fn counted(&self, path: &Path) -> bool {
        let name = |p: Option<&Path>| {
            p.and_then(Path::file_name)
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_string()
        };
        let parent = path.parent();
        name(Some(path)).contains(".log")
            && name(parent.and_then(Path::parent)) == "broker-0"
            && name(parent)
                .strip_prefix(&self.prefix)
                .is_some_and(|p| p.parse::<u32>().is_ok())
    }
}

impl Storage for CountingStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> logbus::Result<Arc<dyn StorageFile>> {
        let file = self.inner.open(path, mode)?;
        if !self.counted(path) {
            return Ok(file);
        }
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.files.push(path.to_path_buf());
        let id = log.files.len() - 1;
        drop(log);
        Ok(Arc::new(CountingFile {
            inner: file,
            id,
            log: Arc::clone(&self.log),
        }))
    }
    fn create_dir_all(&self, path: &Path) -> logbus::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> logbus::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> logbus::Result<()> {
        self.inner.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> logbus::Result<()> {
        self.inner.remove_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> logbus::Result<Vec<PathBuf>> {
        self.inner.list_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
    fn sync_dir(&self, path: &Path) -> logbus::Result<()> {
        self.inner.sync_dir(path)
    }
    fn lock_dir(&self, dir: &Path) -> logbus::Result<DirLock> {
        self.inner.lock_dir(dir)
    }
}

#[derive(Debug)]
struct CountingFile {
    inner: Arc<dyn StorageFile>,
    id: usize,
    log: Arc<Mutex<OpLog>>,
}

impl CountingFile {
    fn note(&self, op: Op) {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ops
            .push(op);
    }
}

impl StorageFile for CountingFile {
    fn path(&self) -> &Path {
        self.inner.path()
    }
    fn write_all_at(&self, buf: &[u8], position: u64) -> logbus::Result<()> {
        self.inner.write_all_at(buf, position)?;
        self.note(Op::Write(self.id, buf.len()));
        Ok(())
    }
    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> logbus::Result<()> {
        self.inner.read_exact_at(buf, position)
    }
    fn sync(&self) -> logbus::Result<()> {
        // Noted as it begins: the writes noted before it are what it
        // covers (the producer's sender writes its next group while an
        // fsync runs, and the baseline's fdatasync must cover the same).
        self.note(Op::Sync(self.id));
        self.inner.sync()
    }
    fn len(&self) -> logbus::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> logbus::Result<()> {
        self.inner.set_len(len)
    }
    fn map(&self, len: usize) -> logbus::Result<Arc<ReadMap>> {
        self.inner.map(len)
    }
}

/// The `--flush-messages` baseline: `ops` replayed with `std::fs` on fresh
/// files in `dir` (one per counted file, created before the clock starts):
/// each write as one `write` of the same size, each fsync as one
/// `fdatasync`. Returns the seconds, the bytes written and the fsyncs.
fn baseline_replay(dir: &Path, files: usize, ops: &[Op]) -> Result<(f64, u64, u64), Error> {
    let largest = ops
        .iter()
        .map(|op| match op {
            Op::Write(_, n) => *n,
            Op::Sync(_) => 0,
        })
        .max()
        .unwrap_or(0);
    let chunk = vec![0x5au8; largest];
    let paths: Vec<PathBuf> = (0..files)
        .map(|i| dir.join(format!("perf-baseline-{i}.tmp")))
        .collect();
    let mut open = paths
        .iter()
        .map(std::fs::File::create)
        .collect::<Result<Vec<_>, _>>()?;
    let (mut bytes, mut syncs) = (0u64, 0u64);
    let start = Instant::now();
    for op in ops {
        match *op {
            Op::Write(id, n) => {
                open[id].write_all(&chunk[..n])?;
                bytes += n as u64;
            }
            Op::Sync(id) => {
                open[id].sync_data()?;
                syncs += 1;
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    drop(open);
    for path in &paths {
        std::fs::remove_file(path)?;
    }
    Ok((seconds, bytes, syncs))
}

/// What one sending thread does: `count` sends (the thread's `index` of
/// `threads`, so with `--rate` its k-th send is due at
/// `(k * threads + index) / rate`), every `latency_every`-th timed.
struct Sending<'a> {
    producer: &'a Producer,
    topic: &'a Arc<str>,
    value: &'a logbus::Bytes,
    /// Whether each record gets a newly allocated copy of `value`.
    value_per_record: bool,
    /// Whether each record names its topic by `&str` rather than by the
    /// shared `Arc<str>`.
    topic_str: bool,
    rate: Option<f64>,
    threads: u64,
    /// Every this many sends of the thread, one is timed (0: none).
    latency_every: u64,
    transaction_records: Option<u64>,
    start: Instant,
    /// Send-to-callback nanoseconds of the timed records.
    lat: &'a Arc<Mutex<Vec<u64>>>,
    /// Records sent, on a terminal.
    bar: &'a Option<indicatif::ProgressBar>,
}

impl Sending<'_> {
    /// Sends this thread's records; returns the time spent in
    /// `commit_transaction` and the CPU time this thread ran meanwhile
    /// (seconds, 0 where unsupported).
    fn run(&self, index: u64, count: u64) -> Result<(Duration, f64), Error> {
        let cpu_start = thread_cpu_seconds();
        let mut last_report = Instant::now();
        let mut commit_time = Duration::ZERO;
        for i in 0..count {
            if let Some(rate) = self.rate {
                let due =
                    self.start + Duration::from_secs_f64((i * self.threads + index) as f64 / rate);
                pace(due);
            }
            if let Some(n) = self.transaction_records
                && i > 0
                && i % n == 0
            {
                let committing = Instant::now();
                self.producer.commit_transaction()?;
                commit_time += committing.elapsed();
                self.producer.begin_transaction()?;
            }
            let record = match (self.value_per_record, self.topic_str) {
                (true, false) => ProducerRecord::new(self.topic, self.value.to_vec()),
                (false, false) => ProducerRecord::new(self.topic, self.value),
                (true, true) => ProducerRecord::new(&**self.topic, self.value.to_vec()),
                (false, true) => ProducerRecord::new(&**self.topic, self.value),
            };
            if self.latency_every != 0 && i % self.latency_every == 0 {
                let lat = Arc::clone(self.lat);
                let sent = Instant::now();
                self.producer.send_with_callback(record, move |result| {
                    let nanos = sent.elapsed().as_nanos() as u64;
                    if result.is_ok() {
                        lat.lock().unwrap_or_else(|e| e.into_inner()).push(nanos);
                    }
                })?;
            } else {
                drop(self.producer.send(record)?);
            }
            if index != 0 || i % 65_536 != 0 {
                // Progress is shown by the first thread, every 64 Ki records.
            } else if let Some(bar) = self.bar {
                bar.set_position(i * self.threads);
            } else if last_report.elapsed() > Duration::from_secs(2) {
                last_report = Instant::now();
                let secs = self.start.elapsed().as_secs_f64();
                eprintln!(
                    "  {} records sent, {:.0} records/s",
                    i * self.threads,
                    (i * self.threads) as f64 / secs
                );
            }
        }
        Ok((commit_time, thread_cpu_seconds() - cpu_start))
    }
}

/// Waits until `due`: spinning when it is less than 2 ms away (a short
/// `sleep` overshoots by the timer slack, ~50-60 µs), sleeping the rest
/// of a longer wait first.
fn pace(due: Instant) {
    const SPIN: Duration = Duration::from_millis(2);
    let now = Instant::now();
    if due <= now {
        return;
    }
    if due - now > SPIN {
        std::thread::sleep(due - now - SPIN);
    }
    while Instant::now() < due {
        std::hint::spin_loop();
    }
}

fn produce(flags: &Flags) -> Result<String, Error> {
    let dir = PathBuf::from(flags.get("dir")?);
    let topic = flags.get("topic")?.to_string();
    let partitions: u32 = flags.num("partitions", Some(1))?;
    let records: u64 = flags.num("records", None)?;
    let size: usize = flags.num("record-size", None)?;
    let threads: u64 = flags.num("threads", Some(1))?;
    if threads == 0 {
        return Err("--threads must be positive".into());
    }
    let flush_messages: Option<u64> = flags
        .0
        .get("flush-messages")
        .map(|n| n.parse())
        .transpose()?;
    let acks = match flags.get("acks").unwrap_or("1") {
        "0" => Acks::None,
        "1" => Acks::Leader,
        "all" | "-1" => Acks::All,
        other => return Err(format!("--acks: expected 0, 1 or all, got {other}").into()),
    };
    let mut config = ProducerConfig::builder().acks(acks);
    if let Some(linger) = flags.0.get("linger-ms") {
        config = config.linger(Duration::from_millis(linger.parse()?));
    }
    if let Some(batch) = flags.0.get("batch-size") {
        config = config.batch_size(batch.parse()?);
    }
    if let Some(codec) = flags.0.get("compression") {
        config = config.compression(compression(codec)?);
    }
    if let Some(n) = flags.0.get("max-in-flight") {
        config = config.max_in_flight(n.parse()?);
    }
    if let Some(bytes) = flags.0.get("buffer-memory") {
        config = config.buffer_memory(bytes.parse()?);
    }
    match flags.0.get("idempotence").map(String::as_str) {
        None => {}
        Some("true") => config = config.enable_idempotence(true),
        Some("false") => config = config.enable_idempotence(false),
        Some(other) => {
            return Err(format!("--idempotence: expected true or false, got {other}").into());
        }
    }

    let value_per_record = match flags.0.get("value-per-record").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(format!("--value-per-record: expected true or false, got {other}").into());
        }
    };
    let topic_str = match flags.0.get("topic-str").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(format!("--topic-str: expected true or false, got {other}").into());
        }
    };
    let timeline = match flags.0.get("timeline").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(format!("--timeline: expected true or false, got {other}").into());
        }
    };
    let rate: Option<f64> = flags.0.get("rate").map(|r| r.parse()).transpose()?;
    if rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        return Err("--rate must be positive".into());
    }
    let replication: u16 = flags.num("replication-factor", Some(1))?;
    let min_insync: u16 = flags.num("min-insync", Some(1))?;
    let op_log = Arc::new(Mutex::new(OpLog::default()));
    let cluster = if flush_messages.is_some() {
        let storage = CountingStorage {
            inner: StdStorage::new(),
            prefix: format!("{topic}-"),
            log: Arc::clone(&op_log),
        };
        let config = ClusterConfig::builder()
            .brokers(cluster_brokers(flags)?)
            .storage(Arc::new(storage))
            .build()?;
        Cluster::open(&dir, config)?
    } else {
        open_cluster(&dir, flags)?
    };
    let mut topic_config = TopicConfig::new().min_insync_replicas(min_insync)?;
    if let Some(m) = flush_messages {
        topic_config = topic_config.set("flush.messages", m.to_string())?;
    }
    cluster.create_topic_if_not_exists(
        NewTopic::new(&topic, partitions)
            .replication_factor(replication)
            .config(topic_config),
    )?;
    let transaction_records: Option<u64> = flags
        .0
        .get("transaction-records")
        .map(|n| n.parse())
        .transpose()?;
    if transaction_records == Some(0) {
        return Err("--transaction-records must be positive".into());
    }
    if transaction_records.is_some() && threads > 1 {
        return Err("--transaction-records needs --threads 1".into());
    }
    if transaction_records.is_some() {
        config = config.transactional_id("perf");
    }
    let config = config.build()?;
    let idempotence = config.enable_idempotence();
    let producer = Producer::new(&cluster, config)?;
    if transaction_records.is_some() {
        producer.init_transactions()?;
        producer.begin_transaction()?;
    }
    // An `Arc<str>` topic is shared by every record, not copied into each.
    let topic_name: Arc<str> = Arc::from(topic.as_str());
    // One value, shared: the tool measures logbus, not the allocator.
    let value = logbus::Bytes::from(
        (0..size)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    );
    // Every `latency_every`-th send of each thread is timed, from just
    // before `send_with_callback` to its callback on the sender thread.
    let latency_every: u64 = flags.num("latency-every", Some(LATENCY_EVERY))?;
    let lat = Arc::new(Mutex::new(Vec::with_capacity(
        records.div_ceil(latency_every.max(1)) as usize + threads as usize,
    )));
    eprintln!(
        "producing {records} records of {size} bytes to {topic} in {} from {threads} thread(s)",
        dir.display()
    );
    // One record sent and waited for before the clock starts: the producer
    // looks the topic up and the partition's first append sets up its
    // leader epoch and segment, one-time costs that a 2 s run at 1 M/s
    // would count as its p99 (records sent meanwhile queue behind them).
    // Not counted anywhere.
    if transaction_records.is_none() {
        producer
            .send(ProducerRecord::new(&topic_name, &value))?
            .wait()?;
    }
    let ops_before = op_log.lock().unwrap_or_else(|e| e.into_inner()).ops.len();
    let bar = progress_bar(records, "producing");
    settle_writeback();
    if timeline {
        timeline_start()?;
    }
    let sender_cpu_start = threads_cpu_ns("logbus-producer");
    let start = Instant::now();
    let sending = Sending {
        producer: &producer,
        topic: &topic_name,
        value: &value,
        value_per_record,
        topic_str,
        rate,
        threads,
        latency_every,
        transaction_records,
        start,
        lat: &lat,
        bar: &bar,
    };
    // Time spent in commit_transaction (flushing the transaction's records,
    // then the coordinator's writes and markers).
    let (mut commit_time, app_cpu_seconds) = if threads == 1 {
        sending.run(0, records)?
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let count = records / threads + u64::from(t < records % threads);
                    let sending = &sending;
                    s.spawn(move || sending.run(t, count).map_err(|e| e.to_string()))
                })
                .collect();
            let (mut total, mut cpu) = (Duration::ZERO, 0.0);
            for handle in handles {
                let (commit, thread_cpu) =
                    handle.join().map_err(|_| "a sending thread panicked")??;
                total += commit;
                cpu += thread_cpu;
            }
            Ok::<_, Error>((total, cpu))
        })?
    };
    if transaction_records.is_some() {
        let committing = Instant::now();
        producer.commit_transaction()?;
        commit_time += committing.elapsed();
    }
    producer.flush()?;
    let seconds = start.elapsed().as_secs_f64();
    let sender_cpu_ns = sender_cpu_start
        .zip(threads_cpu_ns("logbus-producer"))
        .map(|(before, after)| after.saturating_sub(before));
    let timeline = if timeline {
        timeline_stop()
    } else {
        "null".to_string()
    };
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let (anon_mb, file_mb) = (rss_anon_mb(), rss_file_mb());
    report_thread_schedstat();
    let (files, ops) = {
        let log = op_log.lock().unwrap_or_else(|e| e.into_inner());
        (log.files.len(), log.ops[ops_before..].to_vec())
    };
    producer.close()?;
    let bytes = records * size as u64;
    let mut lat = std::mem::take(&mut *lat.lock().unwrap_or_else(|e| e.into_inner()));
    lat.sort_unstable();
    let mb_per_sec = bytes as f64 / MB / seconds;
    let mut fsync_fields = String::new();
    let baseline = if flush_messages.is_some() {
        let (baseline, log_bytes, fsyncs) = baseline_replay(&dir, files, &ops)?;
        fsync_fields = format!(
            ",\"flush_messages\":{},\"log_bytes\":{log_bytes},\"fsyncs\":{fsyncs},\
             \"fsyncs_per_sec\":{:.0},\"records_per_fsync\":{:.1},\"baseline_fsyncs_per_sec\":{:.0}",
            flush_messages.unwrap_or(0),
            fsyncs as f64 / seconds,
            records as f64 / fsyncs.max(1) as f64,
            fsyncs as f64 / baseline,
        );
        baseline
    } else {
        baseline_write(&dir, bytes)?
    };
    cluster.close()?;
    let baseline_mb = bytes as f64 / MB / baseline;
    // No latencies without timed sends (`--latency-every 0`).
    let us = |p: f64| {
        if latency_every == 0 {
            "null".to_string()
        } else {
            format!("{:.1}", percentile(&lat, p) as f64 / 1000.0)
        }
    };
    Ok(format!(
        "{{\"mode\":\"produce\",\"records\":{records},\"bytes\":{bytes},\"seconds\":{seconds:.3},\
         \"records_per_sec\":{:.0},\"mb_per_sec\":{mb_per_sec:.1},\"p50_us\":{},\"p99_us\":{},\
         \"p999_us\":{},\"latency_every\":{latency_every},\"peak_rss_mb\":{:.1},\"rss_anon_mb\":{anon_mb:.1},\
         \"rss_file_mb\":{file_mb:.1},\"baseline_mb_per_sec\":{baseline_mb:.1},\"ratio\":{:.3},\
         \"offered_rate\":{},\"threads\":{threads},\"brokers\":{},\"replication_factor\":{replication},\
         \"min_insync\":{min_insync},\"idempotence\":{idempotence},\"transaction_records\":{},\"commit_seconds\":{:.3},\
         \"value_per_record\":{value_per_record},\"topic_str\":{topic_str},\"app_cpu_ns_per_record\":{},\
         \"sender_cpu_ns_per_record\":{}{fsync_fields},\"timeline\":{timeline}}}",
        records as f64 / seconds,
        us(50.0),
        us(99.0),
        us(99.9),
        peak_rss_mb(),
        mb_per_sec / baseline_mb,
        rate.map_or("null".to_string(), |r| format!("{r:.0}")),
        cluster_brokers(flags)?,
        transaction_records.map_or("null".to_string(), |n| n.to_string()),
        commit_time.as_secs_f64(),
        if app_cpu_seconds > 0.0 {
            format!("{:.1}", app_cpu_seconds * 1e9 / records as f64)
        } else {
            "null".to_string()
        },
        sender_cpu_ns.map_or("null".to_string(), |ns| format!(
            "{:.1}",
            ns as f64 / records as f64
        )),
    ))
}

/// Starts recording the producer's stages.
#[cfg(feature = "internals")]
fn timeline_start() -> Result<(), Error> {
    logbus::timeline::start();
    Ok(())
}

#[cfg(not(feature = "internals"))]
fn timeline_start() -> Result<(), Error> {
    Err("--timeline needs a build with the internals feature".into())
}

/// Stops recording; each stage's spans as JSON: count, median and 90th
/// percentile (µs), total (ms).
#[cfg(feature = "internals")]
fn timeline_stop() -> String {
    use logbus::timeline::{self, Stage};
    let recorded = timeline::stop();
    let mut out = String::from("{");
    for stage in Stage::ALL {
        let durations = recorded.durations(stage);
        if durations.is_empty() {
            continue;
        }
        // Per mille, so that the 99.9th percentile is one of them.
        let at = |p: usize| durations[(durations.len() - 1) * p / 1000].as_secs_f64() * 1e6;
        let total: Duration = durations.iter().sum();
        out.push_str(&format!(
            "\"{}\":{{\"count\":{},\"p50_us\":{:.2},\"p90_us\":{:.2},\"p99_us\":{:.2},\
             \"p999_us\":{:.2},\"max_us\":{:.2},\"total_ms\":{:.3}}},",
            stage.name(),
            durations.len(),
            at(500),
            at(900),
            at(990),
            at(999),
            at(1000),
            total.as_secs_f64() * 1e3,
        ));
    }
    out.push_str(&format!("\"dropped\":{}}}", recorded.dropped));
    out
}

#[cfg(not(feature = "internals"))]
fn timeline_stop() -> String {
    "null".to_string()
}

fn cluster_brokers(flags: &Flags) -> Result<u32, Error> {
    flags.num("brokers", Some(1))
}

/// Opens the cluster in `dir` with `--brokers` brokers.
fn open_cluster(dir: &Path, flags: &Flags) -> Result<Cluster, Error> {
    let config = ClusterConfig::builder()
        .brokers(cluster_brokers(flags)?)
        .build()?;
    Ok(Cluster::open(dir, config)?)
}

fn consume(flags: &Flags) -> Result<String, Error> {
    let dir = PathBuf::from(flags.get("dir")?);
    let topic = flags.get("topic")?.to_string();
    let records: u64 = flags.num("records", None)?;
    let max_poll_records: usize = flags.num("max-poll-records", Some(10_000))?;
    let check_crcs = match flags.0.get("check-crcs").map(String::as_str) {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(format!("--check-crcs: expected true or false, got {other}").into());
        }
    };
    let write_first = flags.0.get("write-first").is_some_and(|w| w == "true");
    let cluster = open_cluster(&dir, flags)?;
    if write_first {
        write_records(&cluster, &topic, records, flags.num("record-size", None)?)?;
    }
    let handle = cluster.topic(&topic)?;
    // Opening the cluster reads the logs (recovery checks), and that peak is
    // not the consumer's: report it apart.
    let open_peak_mb = peak_rss_mb();
    let peak_reset = reset_peak_rss();
    let partitions: Vec<TopicPartition> = (0..handle.partition_count())
        .map(|p| TopicPartition::new(topic.as_str(), p))
        .collect();
    let group = flags.0.get("group").cloned();
    let mut config = ConsumerConfig::builder()
        .auto_offset_reset(OffsetReset::Earliest)
        .check_crcs(check_crcs)
        .max_poll_records(max_poll_records);
    if let Some(group) = &group {
        config = config.group_id(group.as_str());
    }
    let mut consumer = Consumer::new(&cluster, config.build()?)?;
    match &group {
        // A group member: every poll also heartbeats (and auto-commits
        // every 5 s) through the group coordinator.
        Some(_) => consumer.subscribe([topic.as_str()])?,
        None => consumer.assign(&partitions)?,
    }
    eprintln!(
        "consuming {records} records from {topic} in {}",
        dir.display()
    );
    let bar = progress_bar(records, "consuming");
    let cpu_start = thread_cpu_seconds();
    let start = Instant::now();
    let mut count = 0u64;
    let mut bytes = 0u64;
    let mut last_report = Instant::now();
    while count < records {
        let polled = consumer.poll(Duration::from_secs(5))?;
        if polled.is_empty() {
            return Err(format!("only {count} records after waiting 5 s").into());
        }
        for record in &polled {
            count += 1;
            bytes += record.value().map_or(0, |v| v.len() as u64)
                + record.key().map_or(0, |k| k.len() as u64);
        }
        if let Some(bar) = &bar {
            bar.set_position(count);
        } else if last_report.elapsed() > Duration::from_secs(2) {
            last_report = Instant::now();
            eprintln!("  {count} records consumed");
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu_seconds = thread_cpu_seconds() - cpu_start;
    let (peak_mb, anon_mb, file_mb) = (peak_rss_mb(), rss_anon_mb(), rss_file_mb());
    consumer.close()?;
    let files: Vec<PathBuf> = (0..handle.partition_count())
        .flat_map(|p| {
            let pdir = dir.join("broker-0").join(format!("{topic}-{p}"));
            std::fs::read_dir(pdir)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
        })
        .collect();
    drop(handle);
    cluster.close()?;
    let (baseline, file_bytes) = baseline_read(&files)?;
    let mb_per_sec = file_bytes as f64 / MB / seconds;
    let baseline_mb = file_bytes as f64 / MB / baseline;
    Ok(format!(
        "{{\"mode\":\"consume\",\"write_first\":{write_first},\"check_crcs\":{check_crcs},\"group\":{},\"records\":{count},\"bytes\":{bytes},\"seconds\":{seconds:.3},\
         \"cpu_seconds\":{cpu_seconds:.3},\"records_per_cpu_sec\":{},\
         \"records_per_sec\":{:.0},\"mb_per_sec\":{:.1},\"peak_rss_mb\":{peak_mb:.1},\
         \"peak_rss_includes_open\":{},\"open_peak_rss_mb\":{open_peak_mb:.1},\"rss_anon_mb\":{anon_mb:.1},\
         \"rss_file_mb\":{file_mb:.1},\"log_bytes\":{file_bytes},\"baseline_mb_per_sec\":{baseline_mb:.1},\"ratio\":{:.3}}}",
        group.map_or("null".to_string(), |g| format!("{g:?}")),
        per_cpu_second(count, cpu_seconds),
        count as f64 / seconds,
        bytes as f64 / MB / seconds,
        !peak_reset,
        mb_per_sec / baseline_mb,
    ))
}

/// `consume --write-first true`: creates `topic` (one partition) and
/// produces `records` records of `size` bytes into it through a
/// `Producer` (acks=1), waiting for every acknowledgement, before the
/// consumer's clock starts, so that the consumer reads bytes this process
/// wrote (and whose CRCs its appends checked or computed).
fn write_records(cluster: &Cluster, topic: &str, records: u64, size: usize) -> Result<(), Error> {
    if cluster.topic(topic).is_ok() {
        return Err(format!("--write-first: topic {topic} exists; use a fresh --dir").into());
    }
    cluster.create_topic(NewTopic::new(topic, 1))?;
    let producer = Producer::new(
        cluster,
        ProducerConfig::builder().acks(Acks::Leader).build()?,
    )?;
    let topic_name: Arc<str> = Arc::from(topic);
    let value = logbus::Bytes::from(
        (0..size)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    );
    eprintln!("writing {records} records of {size} bytes to {topic} first");
    for _ in 0..records {
        drop(producer.send(ProducerRecord::new(&topic_name, &value))?);
    }
    producer.flush()?;
    producer.close()?;
    Ok(())
}

/// The `.log` files of `topic`'s partitions on broker 0, partition by
/// partition, each partition's in offset order (their names).
fn segment_files(dir: &Path, topic: &str) -> Result<Vec<PathBuf>, Error> {
    let mut files = Vec::new();
    for p in 0.. {
        let pdir = dir.join("broker-0").join(format!("{topic}-{p}"));
        if !pdir.is_dir() {
            break;
        }
        let mut logs: Vec<PathBuf> = std::fs::read_dir(pdir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        files.extend(logs);
    }
    if files.is_empty() {
        return Err(format!("no segment files of {topic} under {}", dir.display()).into());
    }
    Ok(files)
}

/// The records the batches laid end to end in `buf` hold, from their
/// headers (`recordsCount`, at byte 57).
fn count_records(buf: &[u8]) -> u64 {
    let mut at = 0;
    let mut records = 0u64;
    while let Some(head) = buf.get(at..at + 61) {
        let length = u32::from_be_bytes([head[8], head[9], head[10], head[11]]) as usize;
        records += u64::from(u32::from_be_bytes([head[57], head[58], head[59], head[60]]));
        at += 12 + length;
    }
    records
}

/// The plain-read baseline of `consume` and `scan`: every segment file read
/// with `read(2)` in 1 MiB chunks into one reused buffer (the cheapest way
/// to read the bytes, so the strictest baseline), in the same JSON as the
/// mode it stands for. The records are counted from the batch headers
/// after the clock stops.
fn consume_baseline(flags: &Flags, mode: &str) -> Result<String, Error> {
    let dir = PathBuf::from(flags.get("dir")?);
    let topic = flags.get("topic")?.to_string();
    let files = segment_files(&dir, &topic)?;
    let cpu_start = thread_cpu_seconds();
    let (seconds, bytes) = baseline_read(&files)?;
    let cpu_seconds = thread_cpu_seconds() - cpu_start;
    let mut records = 0;
    for path in &files {
        records += count_records(&std::fs::read(path)?);
    }
    Ok(format!(
        "{{\"mode\":\"{mode}\",\"records\":{records},\"bytes\":{bytes},\"seconds\":{seconds:.3},\
         \"cpu_seconds\":{cpu_seconds:.3},\"records_per_cpu_sec\":{},\
         \"records_per_sec\":{:.0},\"mb_per_sec\":{:.1},\"log_bytes\":{bytes}}}",
        per_cpu_second(records, cpu_seconds),
        records as f64 / seconds,
        bytes as f64 / MB / seconds,
    ))
}

/// Reads every partition of `topic` (broker 0's replicas, opened as
/// standalone logs) end to end with `Log::read` and borrowed record views,
/// touching each value.
fn scan(flags: &Flags) -> Result<String, Error> {
    let dir = PathBuf::from(flags.get("dir")?);
    let topic = flags.get("topic")?.to_string();
    // `--owned true`: owned `Record`s (`Batch::records`) instead of views.
    let owned = flags.0.get("owned").is_some_and(|o| o == "true");
    let mut logs = Vec::new();
    for p in 0.. {
        let pdir = dir.join("broker-0").join(format!("{topic}-{p}"));
        if !pdir.is_dir() {
            break;
        }
        logs.push(logbus::Log::builder(pdir).open()?);
    }
    let cpu_start = thread_cpu_seconds();
    let start = Instant::now();
    let mut records = 0u64;
    let mut bytes = 0u64;
    let mut log_bytes = 0u64;
    let mut sum = 0u64;
    for log in &logs {
        let mut offset = log.log_start_offset();
        while offset < log.log_end_offset() {
            let read = log.read(offset, 1 << 20)?;
            log_bytes += read.records().len() as u64;
            for batch in read.batches() {
                let batch = batch?;
                if owned {
                    for record in batch.records()? {
                        let record = record?;
                        let value = record.value().map_or(&[][..], |v| &v[..]);
                        bytes += value.len() as u64;
                        sum = sum.wrapping_add(u64::from(value.first().copied().unwrap_or(0)));
                        records += 1;
                    }
                } else {
                    let data = batch.record_data()?;
                    for record in &data {
                        let record = record?;
                        let value = record.value().unwrap_or_default();
                        bytes += value.len() as u64;
                        sum = sum.wrapping_add(u64::from(value.first().copied().unwrap_or(0)));
                        records += 1;
                    }
                }
                offset = batch.header().next_offset() as u64;
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu_seconds = thread_cpu_seconds() - cpu_start;
    std::hint::black_box(sum);
    for log in logs {
        log.close()?;
    }
    Ok(format!(
        "{{\"mode\":\"scan\",\"records\":{records},\"bytes\":{bytes},\"seconds\":{seconds:.3},\
         \"cpu_seconds\":{cpu_seconds:.3},\"records_per_cpu_sec\":{},\
         \"records_per_sec\":{:.0},\"mb_per_sec\":{:.1},\"log_bytes\":{log_bytes}}}",
        per_cpu_second(records, cpu_seconds),
        records as f64 / seconds,
        log_bytes as f64 / MB / seconds,
    ))
}

/// `perf append`: [`Log::append`](logbus::Log::append) of pre-built
/// batches of the records `produce` sends (see the module docs).
fn append(flags: &Flags) -> Result<String, Error> {
    let dir = PathBuf::from(flags.get("dir")?);
    let records: u64 = flags.num("records", None)?;
    let size: usize = flags.num("record-size", None)?;
    let batch_size: usize = flags.num("batch-size", Some(16_384))?;
    if records == 0 {
        return Err("--records must be positive".into());
    }
    let value: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    // As many records as the producer would put in one batch.
    let mut builder = logbus::format::BatchBuilder::new(Compression::None);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
    let mut per_batch = 0u64;
    while per_batch < records {
        let before = builder.clone();
        builder.append(now, None, Some(&value), &[]);
        if builder.estimated_size() > batch_size && per_batch > 0 {
            builder = before;
            break;
        }
        per_batch += 1;
    }
    let mut batch = builder.build()?.to_vec();
    let batches = records.div_ceil(per_batch);
    // `--build true` encodes every batch, record by record, inside the
    // timed loop (the work of a producer's sending thread); `--group-bytes`
    // joins consecutive batches into one append of up to that many bytes.
    let build = flags.0.get("build").is_some_and(|b| b == "true");
    let group_bytes: usize = flags.num("group-bytes", Some(0))?;
    let per_group = (group_bytes / batch.len()).max(1) as u64;
    let mut builder = logbus::format::BatchBuilder::with_capacity(Compression::None, batch.len());
    let mut group: Vec<u8> = Vec::with_capacity(batch.len() * per_group as usize);
    let log = logbus::Log::builder(&dir).open()?;
    let cpu_start = thread_cpu_seconds();
    let start = Instant::now();
    let mut done = 0;
    while done < batches {
        let n = per_group.min(batches - done);
        if !build && n == 1 {
            log.append(&mut batch, 0)?;
            done += 1;
            continue;
        }
        group.clear();
        for _ in 0..n {
            if build {
                builder.clear();
                for _ in 0..per_batch {
                    builder.append(now, None, Some(&value), &[]);
                }
                group.extend_from_slice(builder.finish()?);
            } else {
                group.extend_from_slice(&batch);
            }
        }
        log.append(&mut group, 0)?;
        done += n;
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu_seconds = thread_cpu_seconds() - cpu_start;
    let appended = log.log_end_offset();
    let bytes = batches * batch.len() as u64;
    log.close()?;
    Ok(format!(
        "{{\"mode\":\"append\",\"records\":{appended},\"records_per_batch\":{per_batch},\
         \"bytes\":{bytes},\"seconds\":{seconds:.3},\"cpu_seconds\":{cpu_seconds:.3},\
         \"records_per_sec\":{:.0},\"mb_per_sec\":{:.1},\"build\":{build},\"batches_per_append\":{per_group}}}",
        appended as f64 / seconds,
        bytes as f64 / MB / seconds,
    ))
}
