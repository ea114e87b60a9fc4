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
        Some(root) if args.len() <= 2 => bench(
            Path::new(root),
            args.get(1).map_or(7, |r| parse(r) as usize),
        ),
        _ => Err("usage: open_after_kill ROOT [RUNS]".into()),
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
