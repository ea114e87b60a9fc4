//! A producer/consumer performance tool in the spirit of Kafka's
//! `kafka-producer-perf-test` and `kafka-consumer-perf-test`.
//!
//! ```sh
//! cargo run --release --example perf -- produce --dir D --topic T --partitions P \
//!     --records N --record-size S --acks A [--linger-ms L] [--batch-size B] [--compression C] \
//!     [--rate R] [--brokers B] [--replication-factor F] [--min-insync M] \
//!     [--idempotence true|false] [--transaction-records N]
//! cargo run --release --example perf -- consume --dir D --topic T --records N \
//!     [--max-poll-records M] [--group G] [--brokers B] [--baseline true]
//! cargo run --release --example perf -- scan --dir D --topic T [--baseline true]
//! ```
//!
//! `consume --baseline true` runs no consumer: it reads the partitions'
//! segment files (of broker 0) with `std::fs` (1 MiB `read` calls into one
//! reused buffer) and prints
//! the same JSON (`"mode":"consume-baseline"`), counting the records from
//! the batch headers after the clock stops. Alternate it with plain
//! `consume` runs: the ratio of the medians is the figure to compare.
//! `scan` opens each partition directory of broker 0 as a standalone
//! [`Log`](logbus::Log) and reads it end to end with `Log::read` (1 MiB
//! reads) and `Batch::record_data` views (`--owned true`: `Batch::records`,
//! owned `Record`s), touching each value (no consumer, no cluster);
//! `scan --baseline true` is the same `std::fs` read.
//!
//! `--rate R` offers a fixed load of R records per second (sends are paced,
//! so the latency measured is not queueing behind an unbounded backlog);
//! without it the producer sends as fast as it can. `--brokers`,
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
//!
//! Progress goes to stderr; the result is one JSON line on stdout with
//! `records`, `bytes`, `seconds`, `records_per_sec`, `mb_per_sec`, for
//! `consume` and `scan` `cpu_seconds` and `records_per_cpu_sec` (the
//! measuring thread's CPU time, which waiting for a CPU on a busy machine
//! does not inflate),
//! `peak_rss_mb` (`VmHWM`: for `consume`, since the cluster was opened, with
//! the peak of opening apart as `open_peak_rss_mb`; `peak_rss_includes_open`
//! says where that split is unsupported), `rss_anon_mb` and `rss_file_mb`
//! (anonymous memory and mapped file pages resident at the end of the
//! measured phase), for `produce` the send-to-acknowledgement latency
//! percentiles `p50_us`, `p99_us`, `p999_us` (of every 16th record), and a
//! `baseline_mb_per_sec` with the `ratio` to it: the same number of bytes
//! written (produce) or read (consume) with plain file I/O in the same run,
//! because shared machines are noisy and only ratios compare.

#![allow(clippy::print_stdout, reason = "the tool prints its result")]

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use logbus::{
    Acks, Cluster, ClusterConfig, Compression, Consumer, ConsumerConfig, NewTopic, OffsetReset,
    Producer, ProducerConfig, ProducerRecord, SendFuture, TopicConfig, TopicPartition,
};

const MB: f64 = 1024.0 * 1024.0;
const LATENCY_SAMPLE: u64 = 16;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("perf: {e}");
            eprintln!(
                "usage: perf produce --dir D --topic T --partitions P --records N --record-size S \
                 --acks 0|1|all [--linger-ms L] [--batch-size B] [--compression none|gzip|snappy|lz4|zstd] \
                 [--idempotence true|false (default: on with acks=all)] \
                 [--transaction-records N: commit a transaction every N records] \
                 [--rate R: records/s offered] [--brokers B (1)] [--replication-factor F (1)] \
                 [--min-insync M (1)]\n       \
                 perf consume --dir D --topic T --records N [--max-poll-records M (10000)] \
                 [--group G: subscribe as a member of group G, auto commit on] [--brokers B (1)] \
                 [--baseline true: std::fs read of the segment files instead]\n       \
                 perf scan --dir D --topic T [--baseline true] [--owned true]"
            );
            ExitCode::FAILURE
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

/// Seconds to write `total` bytes to a fresh file in `dir` in 1 MiB writes.
fn baseline_write(dir: &Path, total: u64) -> Result<f64, Error> {
    let path = dir.join("perf-baseline.tmp");
    let chunk = vec![0x5au8; 1 << 20];
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

fn produce(flags: &Flags) -> Result<String, Error> {
    let dir = PathBuf::from(flags.get("dir")?);
    let topic = flags.get("topic")?.to_string();
    let partitions: u32 = flags.num("partitions", Some(1))?;
    let records: u64 = flags.num("records", None)?;
    let size: usize = flags.num("record-size", None)?;
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
    match flags.0.get("idempotence").map(String::as_str) {
        None => {}
        Some("true") => config = config.enable_idempotence(true),
        Some("false") => config = config.enable_idempotence(false),
        Some(other) => {
            return Err(format!("--idempotence: expected true or false, got {other}").into());
        }
    }

    let rate: Option<f64> = flags.0.get("rate").map(|r| r.parse()).transpose()?;
    if rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        return Err("--rate must be positive".into());
    }
    let replication: u16 = flags.num("replication-factor", Some(1))?;
    let min_insync: u16 = flags.num("min-insync", Some(1))?;
    let cluster = open_cluster(&dir, flags)?;
    cluster.create_topic_if_not_exists(
        NewTopic::new(&topic, partitions)
            .replication_factor(replication)
            .config(TopicConfig::new().min_insync_replicas(min_insync)?),
    )?;
    let transaction_records: Option<u64> = flags
        .0
        .get("transaction-records")
        .map(|n| n.parse())
        .transpose()?;
    if transaction_records == Some(0) {
        return Err("--transaction-records must be positive".into());
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
    let topic_name: std::sync::Arc<str> = std::sync::Arc::from(topic.as_str());
    // One value, shared: the tool measures logbus, not the allocator.
    let value = bytes::Bytes::from(
        (0..size)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    );
    // Every LATENCY_SAMPLE-th send is timed: its send instant and its
    // `SendFuture` wait in `pending` (in send order) until the future is
    // seen done. Completions are looked for at each sampled send, so an
    // acknowledgement is noticed within LATENCY_SAMPLE sends of arriving;
    // the samples still pending at the end are waited for in order.
    let mut pending: VecDeque<(Instant, SendFuture)> = VecDeque::new();
    let mut lat: Vec<u64> = Vec::with_capacity(records.div_ceil(LATENCY_SAMPLE) as usize);
    let micros = |sent: Instant| sent.elapsed().as_micros().max(1) as u64;
    eprintln!(
        "producing {records} records of {size} bytes to {topic} in {}",
        dir.display()
    );
    let start = Instant::now();
    let mut last_report = Instant::now();
    // Time spent in commit_transaction (flushing the transaction's records,
    // then the coordinator's writes and markers).
    let mut commit_time = Duration::ZERO;
    for i in 0..records {
        if let Some(rate) = rate {
            // Sends are paced to the offered load: record i leaves at i/rate.
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        if let Some(n) = transaction_records
            && i > 0
            && i % n == 0
        {
            let committing = Instant::now();
            producer.commit_transaction()?;
            commit_time += committing.elapsed();
            producer.begin_transaction()?;
        }
        let record = ProducerRecord::new(&topic_name, &value);
        if i % LATENCY_SAMPLE == 0 {
            while let Some((sent, future)) = pending.front() {
                if !future.is_done() {
                    break;
                }
                if let Some(Ok(_)) = future.wait_timeout(Duration::ZERO) {
                    lat.push(micros(*sent));
                }
                pending.pop_front();
            }
            let sent = Instant::now();
            pending.push_back((sent, producer.send(record)?));
        } else {
            drop(producer.send(record)?);
        }
        if i % 65_536 == 0 && last_report.elapsed() > Duration::from_secs(2) {
            last_report = Instant::now();
            let secs = start.elapsed().as_secs_f64();
            eprintln!("  {i} records sent, {:.0} records/s", i as f64 / secs);
        }
    }
    if transaction_records.is_some() {
        let committing = Instant::now();
        producer.commit_transaction()?;
        commit_time += committing.elapsed();
    }
    for (sent, future) in pending {
        if future.wait().is_ok() {
            lat.push(micros(sent));
        }
    }
    producer.flush()?;
    let seconds = start.elapsed().as_secs_f64();
    let (anon_mb, file_mb) = (rss_anon_mb(), rss_file_mb());
    producer.close()?;
    let bytes = records * size as u64;
    let baseline = baseline_write(&dir, bytes)?;
    cluster.close()?;
    lat.sort_unstable();
    let mb_per_sec = bytes as f64 / MB / seconds;
    let baseline_mb = bytes as f64 / MB / baseline;
    Ok(format!(
        "{{\"mode\":\"produce\",\"records\":{records},\"bytes\":{bytes},\"seconds\":{seconds:.3},\
         \"records_per_sec\":{:.0},\"mb_per_sec\":{mb_per_sec:.1},\"p50_us\":{},\"p99_us\":{},\
         \"p999_us\":{},\"peak_rss_mb\":{:.1},\"rss_anon_mb\":{anon_mb:.1},\
         \"rss_file_mb\":{file_mb:.1},\"baseline_mb_per_sec\":{baseline_mb:.1},\"ratio\":{:.3},\
         \"offered_rate\":{},\"brokers\":{},\"replication_factor\":{replication},\
         \"min_insync\":{min_insync},\"idempotence\":{idempotence},\"transaction_records\":{},\"commit_seconds\":{:.3}}}",
        records as f64 / seconds,
        percentile(&lat, 50.0),
        percentile(&lat, 99.0),
        percentile(&lat, 99.9),
        peak_rss_mb(),
        mb_per_sec / baseline_mb,
        rate.map_or("null".to_string(), |r| format!("{r:.0}")),
        cluster_brokers(flags)?,
        transaction_records.map_or("null".to_string(), |n| n.to_string()),
        commit_time.as_secs_f64(),
    ))
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
    let cluster = open_cluster(&dir, flags)?;
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
        if last_report.elapsed() > Duration::from_secs(2) {
            last_report = Instant::now();
            eprintln!("  {count} records consumed");
        }
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
        "{{\"mode\":\"consume\",\"group\":{},\"records\":{count},\"bytes\":{bytes},\"seconds\":{seconds:.3},\
         \"cpu_seconds\":{cpu_seconds:.3},\"records_per_cpu_sec\":{:.0},\
         \"records_per_sec\":{:.0},\"mb_per_sec\":{:.1},\"peak_rss_mb\":{peak_mb:.1},\
         \"peak_rss_includes_open\":{},\"open_peak_rss_mb\":{open_peak_mb:.1},\"rss_anon_mb\":{anon_mb:.1},\
         \"rss_file_mb\":{file_mb:.1},\"log_bytes\":{file_bytes},\"baseline_mb_per_sec\":{baseline_mb:.1},\"ratio\":{:.3}}}",
        group.map_or("null".to_string(), |g| format!("{g:?}")),
        count as f64 / cpu_seconds,
        count as f64 / seconds,
        bytes as f64 / MB / seconds,
        !peak_reset,
        mb_per_sec / baseline_mb,
    ))
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
         \"cpu_seconds\":{cpu_seconds:.3},\"records_per_cpu_sec\":{:.0},\
         \"records_per_sec\":{:.0},\"mb_per_sec\":{:.1},\"log_bytes\":{bytes}}}",
        records as f64 / cpu_seconds,
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
         \"cpu_seconds\":{cpu_seconds:.3},\"records_per_cpu_sec\":{:.0},\
         \"records_per_sec\":{:.0},\"mb_per_sec\":{:.1},\"log_bytes\":{log_bytes}}}",
        records as f64 / cpu_seconds,
        records as f64 / seconds,
        log_bytes as f64 / MB / seconds,
    ))
}
