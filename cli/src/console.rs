//! `logbus produce` and `logbus consume`: Kafka's kafka-console-producer
//! and kafka-console-consumer over a data directory.
//!
//! `produce` reads the whole of stdin and checks every line (key
//! separator, headers) before it opens the directory, so a bad line stores
//! nothing. `consume` holds the directory for itself while it runs, so no
//! record can arrive meanwhile: it stops once every partition it reads is
//! at its end (or at `--max-messages`, or after `--timeout-ms` without a
//! record). With `--json` it prints one JSON object per record (JSON
//! lines), not one document, so that its output can be streamed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use logbus::{
    Cluster, Consumer, ConsumerConfig, ConsumerRecordRef, Error, Header, IsolationLevel,
    OffsetAndMetadata, OffsetReset, Producer, ProducerConfig, ProducerRecord, TimestampType,
    TopicPartition,
};
use serde::Serialize;

use crate::open;

/// `logbus produce`: lines of stdin become records.
#[derive(Debug, Args)]
pub(crate) struct ProduceArgs {
    /// The cluster directory.
    #[arg(long)]
    dir: PathBuf,
    /// The topic to write to (it must exist).
    #[arg(long)]
    topic: String,
    /// Split each line at the first SEP into key and value (Kafka's
    /// `parse.key=true` with `key.separator`); a line without SEP is an
    /// error. Without it the line is the value and the key is null.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// A header added to every record (repeatable).
    #[arg(long = "header", value_name = "KEY=VALUE")]
    headers: Vec<String>,
    /// Each line starts with its own headers, `k1:v1,k2:v2`, then a tab
    /// (Kafka's `parse.headers=true` with its default delimiters); a
    /// header without `:` has a null value.
    #[arg(long)]
    parse_headers: bool,
    /// Send every record to this partition (default: by key, as the
    /// producer's partitioner).
    #[arg(long, value_name = "N")]
    partition: Option<u32>,
}

/// Where `consume --offset` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartOffset {
    Earliest,
    Latest,
    At(u64),
}

fn parse_start(text: &str) -> Result<StartOffset, String> {
    match text {
        "earliest" => Ok(StartOffset::Earliest),
        "latest" => Ok(StartOffset::Latest),
        n => n
            .parse()
            .map(StartOffset::At)
            .map_err(|_| format!("expected earliest, latest or a non-negative offset, not '{n}'")),
    }
}

/// `--isolation-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Isolation {
    /// Every record, those of open and aborted transactions included.
    ReadUncommitted,
    /// Only records outside transactions and of committed ones.
    ReadCommitted,
}

/// `logbus consume`: print a topic's records.
#[derive(Debug, Args)]
pub(crate) struct ConsumeArgs {
    /// The cluster directory.
    #[arg(long)]
    dir: PathBuf,
    /// The topic to read (it must exist).
    #[arg(long)]
    topic: String,
    /// Read as this consumer group: start at its committed offsets, and
    /// commit the offsets after the records printed when done. This
    /// process is the group's only member while it runs.
    #[arg(long)]
    group: Option<String>,
    /// Read only these partitions (repeatable; default: every partition).
    #[arg(long = "partition", value_name = "N")]
    partitions: Vec<u32>,
    /// Where to start in the --partition partitions: earliest, latest or
    /// an offset.
    #[arg(long, value_parser = parse_start, requires = "partitions", conflicts_with = "from_beginning")]
    offset: Option<StartOffset>,
    /// Start at the earliest record when there is no committed offset
    /// (default: at the end, printing only records newer than the start).
    #[arg(long)]
    from_beginning: bool,
    /// Stop after this many records.
    #[arg(long, value_name = "N")]
    max_messages: Option<u64>,
    /// Stop when no record came for this long (ms). Without it, consume
    /// stops once every partition is at its end (nothing else can write
    /// while it holds the directory).
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
    /// Which records of transactions to print.
    #[arg(long, value_enum, default_value = "read-uncommitted")]
    isolation_level: Isolation,
    /// Print each record's key.
    #[arg(long)]
    print_key: bool,
    /// Print each record's offset (`Offset:N`).
    #[arg(long)]
    print_offset: bool,
    /// Print each record's partition (`Partition:N`).
    #[arg(long)]
    print_partition: bool,
    /// Print each record's timestamp (`CreateTime:MS` or
    /// `LogAppendTime:MS`).
    #[arg(long)]
    print_timestamp: bool,
    /// Print each record's headers (`k1:v1,k2:v2`, or `NO_HEADERS`).
    #[arg(long)]
    print_headers: bool,
    /// The separator between printed fields (Kafka's `key.separator`).
    #[arg(long, value_name = "SEP", default_value = "\t")]
    separator: String,
}

/// Runs `f` on the opened cluster, then closes it whatever `f` returned.
pub(crate) fn with_cluster<T>(
    cluster: Cluster,
    f: impl FnOnce(&Cluster) -> Result<T, String>,
) -> Result<T, String> {
    let out = f(&cluster);
    let closed = cluster
        .close()
        .map_err(|e| format!("cannot close the data directory cleanly: {e}"));
    match (out, closed) {
        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
        (Ok(v), Ok(())) => Ok(v),
    }
}

/// The partition count of `topic`, or a plain message if it does not exist.
pub(crate) fn partition_count(cluster: &Cluster, topic: &str) -> Result<u32, String> {
    match cluster.topic(topic) {
        Ok(t) => Ok(t.partition_count()),
        Err(Error::UnknownTopicOrPartition { .. }) => {
            Err(format!("topic '{topic}' does not exist"))
        }
        Err(e) => Err(format!("cannot read topic '{topic}': {e}")),
    }
}

/// Checks that `topic` has every partition of `partitions`.
pub(crate) fn check_partitions(
    cluster: &Cluster,
    topic: &str,
    partitions: &[u32],
) -> Result<u32, String> {
    let count = partition_count(cluster, topic)?;
    if let Some(p) = partitions.iter().find(|&&p| p >= count) {
        return Err(format!(
            "topic '{topic}' has no partition {p} (it has {count})"
        ));
    }
    Ok(count)
}

/// One line of stdin as a record.
#[derive(Debug)]
struct Line {
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: Vec<Header>,
}

/// `KEY=VALUE` from `--header`.
fn parse_header_arg(text: &str) -> Result<Header, String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok(Header::new(key, Some(value.as_bytes()))),
        _ => Err(format!(
            "bad header '{text}': expected KEY=VALUE with a non-empty KEY"
        )),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The headers part of a `--parse-headers` line: `k1:v1,k2:v2`.
fn parse_line_headers(part: &[u8], number: usize) -> Result<Vec<Header>, String> {
    if part.is_empty() {
        return Ok(Vec::new());
    }
    part.split(|&b| b == b',')
        .map(|one| {
            let (key, value) = match one.iter().position(|&b| b == b':') {
                Some(i) => (&one[..i], Some(&one[i + 1..])),
                None => (one, None),
            };
            let key = std::str::from_utf8(key)
                .map_err(|_| format!("line {number}: a header key is not UTF-8"))?;
            if key.is_empty() {
                return Err(format!("line {number}: a header has an empty key"));
            }
            Ok(Header::new(key, value))
        })
        .collect()
}

/// Splits stdin into records; every line is checked before any is sent.
fn parse_lines(input: &[u8], args: &ProduceArgs, common: &[Header]) -> Result<Vec<Line>, String> {
    let mut lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop(); // the newline ending the last line
    }
    let separator = args.key_separator.as_deref().map(str::as_bytes);
    lines
        .into_iter()
        .enumerate()
        .map(|(i, line)| {
            let number = i + 1;
            let mut rest = line.strip_suffix(b"\r").unwrap_or(line);
            let mut headers = common.to_vec();
            if args.parse_headers {
                let Some(tab) = rest.iter().position(|&b| b == b'\t') else {
                    return Err(format!(
                        "line {number}: no tab after the headers (--parse-headers)"
                    ));
                };
                headers.extend(parse_line_headers(&rest[..tab], number)?);
                rest = &rest[tab + 1..];
            }
            let (key, value) = match separator {
                None => (None, rest),
                Some(sep) => match find(rest, sep) {
                    Some(at) => (Some(rest[..at].to_vec()), &rest[at + sep.len()..]),
                    None => {
                        return Err(format!(
                            "line {number}: no key separator '{}'",
                            String::from_utf8_lossy(sep)
                        ));
                    }
                },
            };
            Ok(Line {
                key,
                value: value.to_vec(),
                headers,
            })
        })
        .collect()
}

/// What `produce` wrote to one partition.
#[derive(Debug, Serialize)]
struct Written {
    partition: u32,
    records: u64,
    first_offset: Option<u64>,
    last_offset: Option<u64>,
}

/// `produce`'s report.
#[derive(Debug, Serialize)]
struct Produced {
    topic: String,
    records: u64,
    partitions: Vec<Written>,
}

/// `logbus produce`.
pub(crate) fn produce(args: &ProduceArgs, json: bool) -> Result<(), String> {
    let common = args
        .headers
        .iter()
        .map(|h| parse_header_arg(h))
        .collect::<Result<Vec<_>, _>>()?;
    if args.key_separator.as_deref() == Some("") {
        return Err("--key-separator must not be empty".into());
    }
    let mut input = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut input)
        .map_err(|e| format!("cannot read stdin: {e}"))?;
    let lines = parse_lines(&input, args, &common)?;
    let cluster = open::open_for_writing(&args.dir, None)?;
    let produced = with_cluster(cluster, |cluster| send_all(cluster, args, lines))?;
    if json {
        crate::print_json(&produced)
    } else {
        let mut text = format!(
            "produced {} records to topic {}\n",
            produced.records, produced.topic
        );
        for w in &produced.partitions {
            if let (Some(first), Some(last)) = (w.first_offset, w.last_offset) {
                text.push_str(&format!(
                    "  partition {}: {} records, offsets {first}..={last}\n",
                    w.partition, w.records
                ));
            }
        }
        crate::print(&text)
    }
}

fn send_all(cluster: &Cluster, args: &ProduceArgs, lines: Vec<Line>) -> Result<Produced, String> {
    let partitions: Vec<u32> = args.partition.into_iter().collect();
    check_partitions(cluster, &args.topic, &partitions)?;
    let producer = Producer::new(cluster, ProducerConfig::default())
        .map_err(|e| format!("cannot start a producer: {e}"))?;
    let mut futures = Vec::with_capacity(lines.len());
    let mut failure = None;
    for (i, line) in lines.into_iter().enumerate() {
        let mut record = ProducerRecord::new(args.topic.as_str(), line.value);
        if let Some(key) = line.key {
            record = record.with_key(key);
        }
        if let Some(p) = args.partition {
            record = record.with_partition(p);
        }
        record = record.with_headers(line.headers);
        match producer.send(record) {
            Ok(f) => futures.push((i + 1, f)),
            Err(e) => {
                failure = Some(format!("line {}: {e}", i + 1));
                break;
            }
        }
    }
    let flushed = producer.flush();
    let mut written: BTreeMap<u32, Written> = BTreeMap::new();
    let mut records = 0;
    for (number, future) in futures {
        match future.wait() {
            Ok(meta) => {
                records += 1;
                let w = written.entry(meta.partition()).or_insert(Written {
                    partition: meta.partition(),
                    records: 0,
                    first_offset: None,
                    last_offset: None,
                });
                w.records += 1;
                if let Some(offset) = meta.offset() {
                    w.first_offset = Some(w.first_offset.map_or(offset, |f| f.min(offset)));
                    w.last_offset = Some(w.last_offset.map_or(offset, |l| l.max(offset)));
                }
            }
            Err(e) => {
                failure.get_or_insert_with(|| format!("line {number}: {e}"));
            }
        }
    }
    let closed = producer.close();
    if let Some(failure) = failure {
        return Err(format!(
            "{failure} ({records} records before it were written)"
        ));
    }
    flushed
        .and(closed)
        .map_err(|e| format!("the producer failed: {e}"))?;
    Ok(Produced {
        topic: args.topic.clone(),
        records,
        partitions: written.into_values().collect(),
    })
}

/// A header as `consume --json` prints it.
#[derive(Debug, Serialize)]
struct JsonHeader {
    key: String,
    value: Option<String>,
}

/// A record as `consume --json` prints it (one object per line); keys,
/// values and header values as UTF-8 (invalid bytes replaced).
#[derive(Debug, Serialize)]
struct JsonRecord<'a> {
    topic: &'a str,
    partition: u32,
    offset: u64,
    timestamp: i64,
    timestamp_type: &'static str,
    key: Option<String>,
    value: Option<String>,
    headers: Vec<JsonHeader>,
}

fn lossy(bytes: Option<&[u8]>) -> Option<String> {
    bytes.map(|b| String::from_utf8_lossy(b).into_owned())
}

fn timestamp_name(kind: TimestampType) -> &'static str {
    match kind {
        TimestampType::LogAppendTime => "LogAppendTime",
        _ => "CreateTime",
    }
}

/// A record as text: Kafka's `DefaultMessageFormatter` field order.
fn render_record(record: &ConsumerRecordRef<'_>, args: &ConsumeArgs) -> String {
    let mut fields = Vec::new();
    if args.print_timestamp {
        fields.push(format!(
            "{}:{}",
            timestamp_name(record.timestamp_type()),
            record.timestamp()
        ));
    }
    if args.print_partition {
        fields.push(format!("Partition:{}", record.partition()));
    }
    if args.print_offset {
        fields.push(format!("Offset:{}", record.offset()));
    }
    if args.print_headers {
        let headers = record.headers();
        if headers.is_empty() {
            fields.push("NO_HEADERS".into());
        } else {
            let list: Vec<String> = headers
                .iter()
                .map(|h| {
                    format!(
                        "{}:{}",
                        h.key,
                        lossy(h.value.as_deref()).unwrap_or_else(|| "null".into())
                    )
                })
                .collect();
            fields.push(list.join(","));
        }
    }
    if args.print_key {
        fields.push(lossy(record.key()).unwrap_or_else(|| "null".into()));
    }
    fields.push(lossy(record.value()).unwrap_or_else(|| "null".into()));
    let mut line = fields.join(&args.separator);
    line.push('\n');
    line
}

fn render_json(record: &ConsumerRecordRef<'_>) -> Result<String, String> {
    let json = JsonRecord {
        topic: record.topic(),
        partition: record.partition(),
        offset: record.offset(),
        timestamp: record.timestamp(),
        timestamp_type: timestamp_name(record.timestamp_type()),
        key: lossy(record.key()),
        value: lossy(record.value()),
        headers: record
            .headers()
            .iter()
            .map(|h| JsonHeader {
                key: h.key.clone(),
                value: lossy(h.value.as_deref()),
            })
            .collect(),
    };
    let mut line = serde_json::to_string(&json).map_err(|e| e.to_string())?;
    line.push('\n');
    Ok(line)
}

/// `logbus consume`.
pub(crate) fn consume(args: &ConsumeArgs, json: bool) -> Result<(), String> {
    if args.group.as_deref() == Some("") {
        return Err("--group must not be empty".into());
    }
    let cluster = open::open_for_writing(&args.dir, None)?;
    let printed = with_cluster(cluster, |cluster| read_all(cluster, args, json))?;
    let _ = writeln!(std::io::stderr(), "Processed a total of {printed} messages");
    Ok(())
}

fn lib(e: Error) -> String {
    e.to_string()
}

fn read_all(cluster: &Cluster, args: &ConsumeArgs, json: bool) -> Result<u64, String> {
    let count = check_partitions(cluster, &args.topic, &args.partitions)?;
    let mut config = ConsumerConfig::builder()
        .client_id("logbus-console-consumer")
        .auto_offset_reset(if args.from_beginning {
            OffsetReset::Earliest
        } else {
            OffsetReset::Latest
        })
        .enable_partition_eof(true)
        .enable_auto_commit(false)
        .isolation_level(match args.isolation_level {
            Isolation::ReadUncommitted => IsolationLevel::ReadUncommitted,
            Isolation::ReadCommitted => IsolationLevel::ReadCommitted,
        });
    if let Some(group) = &args.group {
        config = config.group_id(group.as_str());
    }
    let config = config.build().map_err(lib)?;
    let mut consumer = Consumer::new(cluster, config).map_err(lib)?;
    let result = read_with(&mut consumer, count, args, json);
    let closed = consumer.close().map_err(lib);
    let printed = result?;
    closed?;
    Ok(printed)
}

fn read_with(
    consumer: &mut Consumer,
    count: u32,
    args: &ConsumeArgs,
    json: bool,
) -> Result<u64, String> {
    if args.group.is_some() && args.partitions.is_empty() {
        consumer.subscribe([args.topic.as_str()]).map_err(lib)?;
    } else {
        let partitions: Vec<u32> = if args.partitions.is_empty() {
            (0..count).collect()
        } else {
            args.partitions.clone()
        };
        let tps: Vec<TopicPartition> = partitions
            .iter()
            .map(|&p| TopicPartition::new(args.topic.as_str(), p))
            .collect();
        consumer.assign(&tps).map_err(lib)?;
        match args.offset {
            None => {}
            Some(StartOffset::Earliest) => consumer.seek_to_beginning(&tps).map_err(lib)?,
            Some(StartOffset::Latest) => consumer.seek_to_end(&tps).map_err(lib)?,
            Some(StartOffset::At(offset)) => {
                for tp in &tps {
                    consumer.seek(tp, offset).map_err(lib)?;
                }
            }
        }
    }
    let idle = args.timeout_ms.map(Duration::from_millis);
    let poll_for = idle.unwrap_or(Duration::from_secs(1));
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut printed = 0u64;
    let mut at_end: BTreeSet<TopicPartition> = BTreeSet::new();
    // Partitions where --max-messages stopped the printing: the first
    // record not printed (what a group commits for them).
    let mut unprinted: BTreeMap<TopicPartition, u64> = BTreeMap::new();
    let mut last_record = Instant::now();
    loop {
        if args.max_messages.is_some_and(|max| printed >= max) {
            break;
        }
        let records = consumer.poll(poll_for).map_err(lib)?;
        for record in &records {
            let tp = record.topic_partition();
            if args.max_messages.is_some_and(|max| printed >= max) {
                let first = unprinted.entry(tp).or_insert(record.offset());
                *first = (*first).min(record.offset());
                continue;
            }
            at_end.remove(&tp);
            let line = if json {
                render_json(&record)?
            } else {
                render_record(&record, args)
            };
            out.write_all(line.as_bytes())
                .map_err(|e| format!("cannot write to stdout: {e}"))?;
            printed += 1;
        }
        if !records.is_empty() {
            last_record = Instant::now();
        }
        for (tp, _) in records.partition_eofs() {
            at_end.insert(tp.clone());
        }
        let assignment = consumer.assignment();
        if !assignment.is_empty() && assignment.iter().all(|tp| at_end.contains(tp)) {
            break;
        }
        if records.is_empty() && idle.is_some_and(|idle| last_record.elapsed() >= idle) {
            break;
        }
    }
    out.flush()
        .map_err(|e| format!("cannot write to stdout: {e}"))?;
    if args.group.is_some() {
        let mut commit = BTreeMap::new();
        for tp in consumer.assignment() {
            let offset = match unprinted.get(&tp) {
                Some(&first) => first,
                None => consumer.position(&tp).map_err(lib)?,
            };
            commit.insert(tp, OffsetAndMetadata::new(offset));
        }
        consumer
            .commit_offsets(&commit)
            .map_err(|e| format!("cannot commit the group's offsets: {e}"))?;
    }
    Ok(printed)
}
