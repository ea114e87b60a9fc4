//! How long `Cluster::open` takes on a directory a killed process left,
//! with Kafka's default preallocated index size (`segment.index.bytes`,
//! 10 MiB) and with 4 KiB indexes.
//!
//! ```sh
//! cargo run --release --example open_after_kill -- ROOT [RUNS]
//! ```
//!
//! For each index size a child process opens a cluster in `ROOT`, creates a
//! topic of 8 partitions, appends to it, commits a group offset (which
//! creates the 50 partitions of `__consumer_offsets`) and exits without
//! closing anything: the active segments' index files keep their
//! preallocated size, as after a kill. Then, `RUNS` times (default 7),
//! alternating between the two sizes, a copy of that directory is opened by
//! a fresh child process, which prints how long `Cluster::open` took and
//! exits without closing. The result is one line per size with the median,
//! minimum and maximum, and the ratio of the medians. Put `ROOT` on a fast
//! file system (`/dev/shm`, `/tmp`).
//!
//! ```sh
//! cargo run --release --example open_after_kill -- big ROOT [RUNS] [MIB] [SEGMENT_MIB]
//! ```
//!
//! The `big` mode measures the open of one large partition after a kill
//! -9: a child process produces `MIB` MiB (default 1024) of 1 KiB records
//! to a topic of one partition (`flush.ms` and the checkpoint interval 500
//! ms, so the recovery point follows the log and is checkpointed), then
//! keeps producing slowly; once a checkpoint past the bulk has been
//! written the parent kills it with SIGKILL, mid-stream. `RUNS` times
//! (default 5) a copy of that directory is opened by a fresh child, which
//! prints how long `Cluster::open` took and what its recovery scanned (the
//! copy is written back to disk first, as the killed writer's flushes had
//! written all but its last 500 ms of records). The result is one JSON line with the median, minimum and maximum.
//! `SEGMENT_MIB` is `segment.bytes` in MiB (default 1024, Kafka's; at most
//! 2 GiB − 1): 2048 keeps the whole GiB in the active segment, so the
//! recovery point falls inside the segment recovery scans.

#![allow(clippy::print_stdout, reason = "the tool prints its result")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use logbus::{
    Cluster, ClusterConfig, NewTopic, OffsetAndMetadata, Producer, ProducerConfig, ProducerRecord,
    TopicConfig, TopicPartition,
};

/// The two index sizes compared: Kafka's default and 4 KiB.
const SIZES: [u64; 2] = [10 * 1024 * 1024, 4096];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("make") if args.len() == 3 => make(Path::new(&args[1]), parse(&args[2])),
        Some("open") if args.len() == 3 => open(Path::new(&args[1]), parse(&args[2])),
        Some("big-make") if args.len() == 4 => {
            big_make(Path::new(&args[1]), parse(&args[2]), parse(&args[3]))
        }
        Some("big-open") if args.len() == 3 => big_open(Path::new(&args[1]), parse(&args[2])),
        Some("big") if (2..=5).contains(&args.len()) => big(
            Path::new(&args[1]),
            args.get(2).map_or(5, |r| parse(r) as usize),
            args.get(3).map_or(1024, |m| parse(m)),
            args.get(4).map_or(1024, |m| parse(m)) << 20,
        ),
        Some(root) if args.len() <= 2 => bench(
            Path::new(root),
            args.get(1).map_or(7, |r| parse(r) as usize),
        ),
        _ => Err(
            "usage: open_after_kill ROOT [RUNS] | open_after_kill big ROOT [RUNS] [MIB] [SEGMENT_MIB]"
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("open_after_kill: {e}");
            ExitCode::FAILURE
        }
    }
}

type Outcome = Result<(), Box<dyn std::error::Error>>;

fn parse(number: &str) -> u64 {
    number.parse().expect("a number")
}

fn config(index_bytes: u64) -> ClusterConfig {
    let defaults = TopicConfig::new()
        .set("segment.index.bytes", index_bytes.to_string())
        .expect("valid topic defaults");
    ClusterConfig::builder()
        .topic_defaults(defaults)
        .build()
        .expect("valid cluster config")
}

/// The child that builds the directory, then exits as a kill would leave
/// it (no close, no destructors).
fn make(dir: &Path, index_bytes: u64) -> Outcome {
    let cluster = Cluster::open(dir, config(index_bytes))?;
    cluster.create_topic(NewTopic::new("events", 8))?;
    let producer = Producer::new(&cluster, ProducerConfig::default())?;
    for i in 0..20_000u32 {
        let record = ProducerRecord::new("events", vec![b'v'; 100]).with_key(format!("k{i}"));
        drop(producer.send(record)?);
    }
    producer.flush()?;
    let offsets = BTreeMap::from([(TopicPartition::new("events", 0), OffsetAndMetadata::new(1))]);
    cluster.alter_group_offsets("g", &offsets)?;
    std::process::exit(0)
}

/// The child that opens a copy and reports how long it took, in
/// microseconds, then exits without closing.
fn open(dir: &Path, index_bytes: u64) -> Outcome {
    let start = Instant::now();
    let cluster = Cluster::open(dir, config(index_bytes))?;
    let micros = start.elapsed().as_micros();
    println!("{micros}");
    std::mem::forget(cluster);
    std::process::exit(0)
}

fn child(args: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
    let out = Command::new(std::env::current_exe()?).args(args).output()?;
    if !out.status.success() {
        return Err(format!(
            "child {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn bench(root: &Path, runs: usize) -> Outcome {
    std::fs::create_dir_all(root)?;
    let template = |size: u64| root.join(format!("template-{size}"));
    for size in SIZES {
        let dir = template(size);
        if !dir.exists() {
            child(&["make", path_str(&dir)?, &size.to_string()])?;
        }
    }
    let mut times: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for run in 0..runs {
        for k in 0..SIZES.len() {
            // Alternate which size goes first.
            let size = SIZES[(k + run) % SIZES.len()];
            let work: PathBuf = root.join(format!("work-{size}"));
            if work.exists() {
                std::fs::remove_dir_all(&work)?;
            }
            let status = Command::new("cp")
                .args(["-a", "--sparse=always"])
                .arg(template(size))
                .arg(&work)
                .status()?;
            if !status.success() {
                return Err("cp failed".into());
            }
            let micros: f64 = child(&["open", path_str(&work)?, &size.to_string()])?
                .trim()
                .parse()?;
            times.entry(size).or_default().push(micros / 1000.0);
            std::fs::remove_dir_all(&work)?;
        }
    }
    let mut medians = Vec::new();
    for size in SIZES {
        let mut t = times.remove(&size).unwrap_or_default();
        t.sort_by(f64::total_cmp);
        let median = t[t.len() / 2];
        medians.push(median);
        println!(
            "segment.index.bytes={size}: median {median:.1} ms, min {:.1}, max {:.1}, runs {t:.1?}",
            t[0],
            t[t.len() - 1]
        );
    }
    println!("ratio of medians: {:.2}", medians[0] / medians[1]);
    Ok(())
}

fn path_str(path: &Path) -> Result<&str, Box<dyn std::error::Error>> {
    path.to_str().ok_or_else(|| "non-UTF-8 path".into())
}

/// The config of the `big` mode: the recovery point follows the log (a
/// flush every 500 ms) and is checkpointed every 500 ms.
fn big_config(segment_bytes: u64) -> ClusterConfig {
    let defaults = TopicConfig::new()
        .set("flush.ms", "500")
        .and_then(|c| c.set("segment.bytes", segment_bytes.to_string()))
        .expect("valid topic defaults");
    ClusterConfig::builder()
        .topic_defaults(defaults)
        .checkpoint_interval(std::time::Duration::from_millis(500))
        .build()
        .expect("valid cluster config")
}

/// The child that writes `mib` MiB to one partition, then keeps producing
/// slowly; it prints `ready` once a checkpoint after the bulk was written,
/// and waits to be killed.
fn big_make(dir: &Path, mib: u64, segment_bytes: u64) -> Outcome {
    use std::io::Write;
    let cluster = Cluster::open(dir, big_config(segment_bytes))?;
    cluster.create_topic(NewTopic::new("big", 1))?;
    let producer = Producer::new(&cluster, ProducerConfig::default())?;
    let value = logbus::Bytes::from(vec![b'v'; 1024]);
    let partition = cluster.topic("big")?.partition(0)?;
    let target = mib << 20;
    let mut i = 0u64;
    while partition.size_bytes()? < target {
        for _ in 0..10_000 {
            drop(producer.send(ProducerRecord::new("big", &value).with_key(format!("k{i}")))?);
            i += 1;
        }
    }
    producer.flush()?;
    // Two flush and checkpoint intervals: the checkpointed recovery point
    // is past the bulk. Records keep coming meanwhile, as they would.
    let written = Instant::now();
    let mut announced = false;
    loop {
        for _ in 0..100 {
            drop(producer.send(ProducerRecord::new("big", &value).with_key(format!("k{i}")))?);
            i += 1;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        if !announced && written.elapsed() > std::time::Duration::from_millis(1500) {
            announced = true;
            let mut out = std::io::stdout();
            writeln!(out, "ready {}", partition.size_bytes()?)?;
            out.flush()?;
        }
    }
}

/// The child that opens a copy of the killed directory and prints the open
/// time in microseconds and what recovery scanned, then exits.
fn big_open(dir: &Path, segment_bytes: u64) -> Outcome {
    let (start, cpu) = (Instant::now(), thread_cpu_ns());
    let cluster = Cluster::open(dir, big_config(segment_bytes))?;
    let micros = start.elapsed().as_micros();
    let cpu_micros = thread_cpu_ns().saturating_sub(cpu) / 1000;
    let partition = cluster.topic("big")?.partition(0)?;
    let report = partition.recovery_report();
    println!(
        "{micros} {cpu_micros} {} {} {} {}",
        report.segments_scanned,
        report.bytes_scanned,
        partition.size_bytes()?,
        report.truncated.as_ref().map_or(0, |t| t.bytes)
    );
    std::mem::forget(cluster);
    std::process::exit(0)
}

fn big(root: &Path, runs: usize, mib: u64, segment_bytes: u64) -> Outcome {
    let segment_bytes = segment_bytes.min(i32::MAX as u64);
    use std::io::BufRead;
    std::fs::create_dir_all(root)?;
    let template = root.join(format!("big-{mib}-{segment_bytes}"));
    if !template.exists() {
        let mut child = Command::new(std::env::current_exe()?)
            .args([
                "big-make",
                path_str(&template)?,
                &mib.to_string(),
                &segment_bytes.to_string(),
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        // SIGKILL, mid-stream: `Child::kill` sends it on Unix.
        child.kill()?;
        child.wait()?;
        if !line.starts_with("ready") {
            return Err(format!("the writer failed before it was ready: {line:?}").into());
        }
        eprintln!("killed the writer at {}", line.trim());
    }
    let mut times = Vec::new();
    let mut cpu_times = Vec::new();
    let mut last = String::new();
    for _ in 0..runs {
        let work = root.join("big-work");
        if work.exists() {
            std::fs::remove_dir_all(&work)?;
        }
        let status = Command::new("cp")
            .args(["-a", "--sparse=always"])
            .arg(&template)
            .arg(&work)
            .status()?;
        if !status.success() {
            return Err("cp failed".into());
        }
        // The copy's pages are dirty; the killed writer's were not (beyond
        // its last flush, 500 ms of records): written back now, so that
        // the open's fsync of what it recovered does not time the copy.
        let status = Command::new("sync").arg("-f").arg(&work).status()?;
        if !status.success() {
            return Err("sync failed".into());
        }
        let out = child(&["big-open", path_str(&work)?, &segment_bytes.to_string()])?;
        let mut fields = out.split_whitespace();
        let micros: f64 = fields.next().ok_or("no output")?.parse()?;
        let cpu_micros: f64 = fields.next().ok_or("no output")?.parse()?;
        cpu_times.push(cpu_micros / 1000.0);
        last = fields.collect::<Vec<_>>().join(" ");
        times.push(micros / 1000.0);
        std::fs::remove_dir_all(&work)?;
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let mut cpu_sorted = cpu_times.clone();
    cpu_sorted.sort_by(f64::total_cmp);
    let mut fields = last.split(' ');
    let mut next = || fields.next().unwrap_or("null").to_string();
    let (scanned, bytes_scanned, bytes, cut) = (next(), next(), next(), next());
    println!(
        "{{\"mode\":\"big\",\"mib\":{mib},\"segment_bytes\":{segment_bytes},\"open_ms_median\":{:.1},\"open_ms_min\":{:.1},\
         \"open_ms_max\":{:.1},\"open_ms\":{times:.1?},\"cpu_ms_median\":{:.1},\
         \"cpu_ms\":{cpu_times:.1?},\"segments_scanned\":{scanned},\"bytes_scanned\":{bytes_scanned},\
         \"partition_bytes\":{bytes},\"bytes_cut\":{cut}}}",
        sorted[sorted.len() / 2],
        sorted[0],
        sorted[sorted.len() - 1],
        cpu_sorted[cpu_sorted.len() / 2],
    );
    Ok(())
}

/// CPU time of the calling thread so far, in nanoseconds (Linux's
/// `/proc/thread-self/schedstat`; 0 elsewhere): what the open cost,
/// whatever else the machine was running.
pub(crate) fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}
