//! Many partitions: the keyed produce rate to a topic of 1000 partitions
//! against the rate to a topic of one, and how long `Cluster::open` takes on
//! the 1000-partition cluster after a clean close.
//!
//! ```sh
//! cargo run --release --example many_partitions -- ROOT [--pairs 5] \
//!     [--records 1000000] [--partitions 1000] [--linger-ms L] [--batch-size B] \
//!     [--only one|many]
//! cargo run --release --example many_partitions -- open DIR
//! ```
//!
//! Each of the `--pairs` pairs produces `--records` keyed records of 100
//! bytes (acks=1, through [`Producer`], keys `k0`..`k9999`) once to a fresh
//! cluster whose topic has one partition and once to one whose topic has
//! `--partitions`, alternating which goes first. The many-partition cluster
//! is then closed and reopened, and the reopen timed (`Cluster::open` wall
//! time, page cache warm). The result is one JSON line: medians, minimums
//! and maximums of both rates, the ratio of the medians, the open times,
//! and the medians of the CPU time per record of the sending thread and of
//! the producer's sender thread on the many-partition side (Linux;
//! `many_app_cpu_ns`, `many_sender_cpu_ns`: less disturbed by other
//! processes than the rates).
//! `--only many` (or `one`) runs only that side of each pair, for
//! profiling: the ratio is then null. `open DIR` only opens (and closes)
//! an existing cluster directory and
//! prints the open time in milliseconds, for profiling. Put `ROOT` on a
//! fast file system (`/dev/shm`, `/tmp`).

#![allow(clippy::print_stdout, reason = "the tool prints its result")]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use logbus::{Acks, Cluster, ClusterConfig, NewTopic, Producer, ProducerConfig, ProducerRecord};

type Error = Box<dyn std::error::Error>;

/// Distinct keys cycled through.
const KEYS: usize = 10_000;
/// Bytes of each record's value.
const VALUE_BYTES: usize = 100;

struct Options {
    root: PathBuf,
    pairs: usize,
    records: u64,
    partitions: u32,
    linger_ms: Option<u64>,
    batch_size: Option<u64>,
    /// Runs only this side of each pair: 1 partition (`one`) or many.
    only: Option<bool>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("open") if args.len() == 2 => open_only(Path::new(&args[1])),
        Some(_) => parse(&args).and_then(|options| bench(&options)),
        None => Err(
            "usage: many_partitions ROOT [--pairs N] [--records N] [--partitions P] \
                     [--linger-ms L] [--batch-size B] [--only one|many] | many_partitions open DIR"
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("many_partitions: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse(args: &[String]) -> Result<Options, Error> {
    let mut options = Options {
        root: PathBuf::from(&args[0]),
        pairs: 5,
        records: 1_000_000,
        partitions: 1000,
        linger_ms: None,
        batch_size: None,
        only: None,
    };
    let mut rest = args[1..].iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--pairs" => options.pairs = value.parse()?,
            "--records" => options.records = value.parse()?,
            "--partitions" => options.partitions = value.parse()?,
            "--linger-ms" => options.linger_ms = Some(value.parse()?),
            "--batch-size" => options.batch_size = Some(value.parse()?),
            "--only" => {
                options.only = Some(match value.as_str() {
                    "one" => false,
                    "many" => true,
                    _ => return Err("--only takes one or many".into()),
                });
            }
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if options.pairs == 0 || options.records == 0 || options.partitions == 0 {
        return Err("--pairs, --records and --partitions must be positive".into());
    }
    Ok(options)
}

fn open_cluster(dir: &Path) -> Result<Cluster, Error> {
    Ok(Cluster::open(dir, ClusterConfig::default())?)
}

/// Opens `dir`, prints the open time in milliseconds, closes.
fn open_only(dir: &Path) -> Result<(), Error> {
    let start = Instant::now();
    let cluster = open_cluster(dir)?;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    println!("{ms:.1}");
    cluster.close()?;
    Ok(())
}

/// CPU time in nanoseconds the threads of this process named `comm` (all
/// threads when `None`) ran so far, from `/proc/self/task/*/schedstat`
/// (Linux; `None` elsewhere).
fn cpu_ns(comm: Option<&str>) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path();
        if let Some(comm) = comm {
            let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            if name.trim_end() != comm {
                continue;
            }
        }
        let stat = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
        total += stat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(total)
}

/// CPU time of the calling thread in nanoseconds (Linux; 0 elsewhere).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// One side's run: records per second, and CPU nanoseconds per record of
/// the sending thread and of the producer's sender thread while producing.
struct Run {
    rate: f64,
    app_ns: f64,
    sender_ns: f64,
}

/// Produces the records to a fresh cluster in `dir` whose topic has
/// `partitions` partitions. The cluster is closed cleanly.
fn produce(dir: &Path, partitions: u32, options: &Options) -> Result<Run, Error> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    let phase = Instant::now();
    let cluster = open_cluster(dir)?;
    cluster.create_topic(NewTopic::new("events", partitions))?;
    eprintln!(
        "  {partitions} partitions: open and create_topic {:.1} ms",
        phase.elapsed().as_secs_f64() * 1000.0
    );
    let mut config = ProducerConfig::builder().acks(Acks::Leader);
    if let Some(linger) = options.linger_ms {
        config = config.linger(Duration::from_millis(linger));
    }
    if let Some(batch) = options.batch_size {
        config = config.batch_size(batch);
    }
    let producer = Producer::new(&cluster, config.build()?)?;
    let topic: std::sync::Arc<str> = std::sync::Arc::from("events");
    let keys: Vec<Bytes> = (0..KEYS).map(|k| Bytes::from(format!("k{k}"))).collect();
    let value = Bytes::from(
        (0..VALUE_BYTES)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    );
    let (app0, sender0) = (thread_cpu_ns(), cpu_ns(Some("logbus-producer")));
    let start = Instant::now();
    for i in 0..options.records {
        let key = &keys[(i % KEYS as u64) as usize];
        drop(producer.send(ProducerRecord::new(&topic, &value).with_key(key))?);
    }
    producer.flush()?;
    let seconds = start.elapsed().as_secs_f64();
    let app_ns = thread_cpu_ns().saturating_sub(app0) as f64 / options.records as f64;
    let sender_ns = match (sender0, cpu_ns(Some("logbus-producer"))) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 / options.records as f64,
        _ => 0.0,
    };
    let phase = Instant::now();
    producer.close()?;
    cluster.close()?;
    eprintln!(
        "  {partitions} partitions: produce {:.1} ms, close {:.1} ms",
        seconds * 1000.0,
        phase.elapsed().as_secs_f64() * 1000.0
    );
    Ok(Run {
        rate: options.records as f64 / seconds,
        app_ns,
        sender_ns,
    })
}

/// Median, minimum and maximum (zeros when there are none).
fn stats(values: &[f64]) -> (f64, f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    (
        sorted[sorted.len() / 2],
        sorted[0],
        sorted[sorted.len() - 1],
    )
}

fn bench(options: &Options) -> Result<(), Error> {
    std::fs::create_dir_all(&options.root)?;
    let one = options.root.join("one");
    let many = options.root.join("many");
    let (mut rates_one, mut rates_many, mut opens) = (Vec::new(), Vec::new(), Vec::new());
    let (mut app_ns, mut sender_ns) = (Vec::new(), Vec::new());
    for pair in 0..options.pairs {
        for k in 0..2 {
            let many_side = (k + pair) % 2 != 0;
            if options.only.is_some_and(|only| only != many_side) {
                continue;
            }
            if !many_side {
                let rate = produce(&one, 1, options)?.rate;
                eprintln!("pair {pair}: 1 partition: {rate:.0} records/s");
                rates_one.push(rate);
            } else {
                let run = produce(&many, options.partitions, options)?;
                let rate = run.rate;
                app_ns.push(run.app_ns);
                sender_ns.push(run.sender_ns);
                let start = Instant::now();
                let cluster = open_cluster(&many)?;
                let open_ms = start.elapsed().as_secs_f64() * 1000.0;
                cluster.close()?;
                eprintln!(
                    "pair {pair}: {} partitions: {rate:.0} records/s, reopen {open_ms:.1} ms, \
                     CPU per record: sending thread {:.0} ns, sender thread {:.0} ns",
                    options.partitions, run.app_ns, run.sender_ns
                );
                rates_many.push(rate);
                opens.push(open_ms);
            }
        }
    }
    // `many` stays, for `open DIR` (a next run replaces it).
    if one.exists() {
        std::fs::remove_dir_all(&one)?;
    }
    let (one_median, one_min, one_max) = stats(&rates_one);
    let (many_median, many_min, many_max) = stats(&rates_many);
    let (open_median, open_min, open_max) = stats(&opens);
    let (app_median, _, _) = stats(&app_ns);
    let (sender_median, _, _) = stats(&sender_ns);
    let ratio = if options.only.is_none() {
        format!("{:.3}", many_median / one_median)
    } else {
        "null".to_string()
    };
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.1}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    println!(
        "{{\"records\":{},\"record_bytes\":{VALUE_BYTES},\"partitions\":{},\"linger_ms\":{},\
         \"batch_size\":{},\"pairs\":{},\
         \"one_rate_median\":{one_median:.0},\"one_rate_min\":{one_min:.0},\"one_rate_max\":{one_max:.0},\
         \"many_rate_median\":{many_median:.0},\"many_rate_min\":{many_min:.0},\"many_rate_max\":{many_max:.0},\
         \"ratio\":{ratio},\"open_ms_median\":{open_median:.1},\"open_ms_min\":{open_min:.1},\
         \"open_ms_max\":{open_max:.1},\"many_app_cpu_ns\":{app_median:.0},\
         \"many_sender_cpu_ns\":{sender_median:.0},\"open_ms\":[{}],\"one_rates\":[{}],\"many_rates\":[{}]}}",
        options.records,
        options.partitions,
        options
            .linger_ms
            .map_or("null".to_string(), |l| l.to_string()),
        options
            .batch_size
            .map_or("null".to_string(), |b| b.to_string()),
        options.pairs,
        list(&opens),
        list(&rates_one),
        list(&rates_many),
    );
    Ok(())
}
