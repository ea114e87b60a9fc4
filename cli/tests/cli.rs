//! The `logbus` command as a user runs it, over data directories made here
//! with the library (a `Cluster` and a `Producer`), clean and damaged.

use std::path::{Path, PathBuf};
use std::time::Duration;

mod common;

use assert_cmd::cargo::cargo_bin_cmd;
use common::{every_file, path_str};
use logbus::{
    CleanupPolicy, Cluster, ClusterConfig, Compression, Consumer, ConsumerConfig, NewTopic,
    OffsetReset, Producer, ProducerConfig, ProducerRecord, TopicConfig, TopicPartition,
};
use serde_json::Value;

/// Batches written to each topic: one per flush.
const BATCHES: usize = 12;
/// Records per batch.
const PER_BATCH: usize = 5;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The value of record `i` of batch `b`.
fn value(b: usize, i: usize) -> String {
    format!("value-{b}-{i}-{}", "x".repeat(20))
}

/// A cluster with `orders` (uncompressed, small segments, an index entry
/// for every batch) and `zipped` (lz4), each holding BATCHES batches of
/// PER_BATCH records; returned open.
fn cluster(dir: &Path) -> Result<Cluster, Box<dyn std::error::Error>> {
    let cluster = Cluster::open(dir, ClusterConfig::default())?;
    let config = TopicConfig::new()
        .index_interval_bytes(0)?
        .segment_bytes(1024)?;
    cluster.create_topic(NewTopic::new("orders", 1).config(config.clone()))?;
    cluster.create_topic(NewTopic::new("zipped", 1).config(config))?;
    for (topic, compression) in [("orders", Compression::None), ("zipped", Compression::Lz4)] {
        let producer = Producer::new(
            &cluster,
            ProducerConfig::builder()
                .linger(Duration::from_secs(3600))
                .compression(compression)
                .build()?,
        )?;
        for b in 0..BATCHES {
            let mut sent = Vec::new();
            for i in 0..PER_BATCH {
                sent.push(
                    producer.send(
                        ProducerRecord::new(topic, value(b, i))
                            .with_key(format!("key-{b}-{i}"))
                            .with_header("h", format!("{i}")),
                    )?,
                );
            }
            producer.flush()?;
            for future in sent {
                future.wait()?;
            }
        }
        producer.close()?;
    }
    internal_topics(&cluster)?;
    Ok(cluster)
}

/// Fills `__transaction_state` and `__consumer_offsets`: a committed and an
/// aborted transaction on `txn` (control batches, an aborted-transaction
/// index) and a group's committed offsets on `orders`.
fn internal_topics(cluster: &Cluster) -> TestResult {
    cluster.create_topic(NewTopic::new("txn", 1))?;
    let producer = Producer::new(
        cluster,
        ProducerConfig::builder().transactional_id("tx-0").build()?,
    )?;
    producer.init_transactions()?;
    for commit in [true, false] {
        producer.begin_transaction()?;
        drop(producer.send(ProducerRecord::new("txn", "in a transaction"))?);
        producer.flush()?; // in the log before the marker, committed or not
        if commit {
            producer.commit_transaction()?;
        } else {
            producer.abort_transaction()?;
        }
    }
    producer.close()?;
    compacted(cluster)?;
    let mut consumer = Consumer::new(
        cluster,
        ConsumerConfig::builder()
            .group_id("readers")
            .auto_offset_reset(OffsetReset::Earliest)
            .build()?,
    )?;
    consumer.assign(&[TopicPartition::new("orders", 0)])?;
    consumer.poll(Duration::from_secs(5))?;
    consumer.commit_sync()?;
    consumer.close()?;
    Ok(())
}

/// A closed cluster directory as `cluster` writes it.
fn data_dir() -> Result<tempfile::TempDir, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    cluster(dir.path())?.close()?;
    Ok(dir)
}

/// The files of `partition_dir` with `extension`, by name.
fn files(partition_dir: &Path, extension: &str) -> Result<Vec<PathBuf>, std::io::Error> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(partition_dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == extension));
    files.sort();
    Ok(files)
}

fn logbus(args: &[&str]) -> assert_cmd::Command {
    let mut cmd = cargo_bin_cmd!("logbus");
    cmd.args(args);
    cmd
}

/// `logbus --json dump-log FILES...`, parsed.
fn dump_json(extra: &[&str], files: &[PathBuf]) -> Result<Value, Box<dyn std::error::Error>> {
    let mut args = vec!["--json", "dump-log"];
    args.extend_from_slice(extra);
    args.extend(files.iter().map(|f| path_str(f)));
    let output = logbus(&args).assert().success().get_output().stdout.clone();
    Ok(serde_json::from_slice(&output)?)
}

/// `logbus --json verify DIR`: the exit code and the parsed report.
fn verify_json(dir: &Path) -> Result<(i32, Value), Box<dyn std::error::Error>> {
    let output = logbus(&["--json", "verify", path_str(dir)]).output()?;
    let code = output.status.code().expect("exit code");
    Ok((code, serde_json::from_slice(&output.stdout)?))
}

/// Every damage of a verify report as (file, position).
fn damage(report: &Value) -> Vec<(PathBuf, u64)> {
    report["damage"]
        .as_array()
        .expect("damage array")
        .iter()
        .map(|d| {
            (
                PathBuf::from(d["file"].as_str().expect("file")),
                d["position"].as_u64().expect("position"),
            )
        })
        .collect()
}

/// A compacted topic `state`, cleaned: its segments have offset gaps
/// and cleaned batches, which are not damage.
fn compacted(cluster: &Cluster) -> TestResult {
    let config = TopicConfig::new()
        .cleanup_policy(CleanupPolicy::Compact)
        .index_interval_bytes(0)?
        .segment_bytes(1024)?;
    let partition = cluster
        .create_topic(NewTopic::new("state", 1).config(config))?
        .partition(0)?;
    let producer = Producer::new(
        cluster,
        ProducerConfig::builder()
            .linger(Duration::from_secs(3600))
            .build()?,
    )?;
    for b in 0..BATCHES {
        for i in 0..PER_BATCH {
            // Three keys: most records are superseded.
            drop(producer.send(
                ProducerRecord::new("state", value(b, i)).with_key(format!("key-{}", i % 3)),
            )?);
        }
        producer.flush()?;
    }
    producer.close()?;
    let report = partition.clean()?;
    assert!(report.segments_cleaned > 0, "{report:?}");
    Ok(())
}

#[test]
fn dump_log_counts_equal_what_was_written() -> TestResult {
    let dir = data_dir()?;
    let logs = files(&dir.path().join("broker-0/orders-0"), "log")?;
    assert!(logs.len() > 1, "small segments roll: {logs:?}");
    let dumped = dump_json(&["--print-data-log"], &logs)?;
    let mut batches = 0;
    let mut values = Vec::new();
    for file in dumped["files"].as_array().expect("files") {
        assert_eq!(file["kind"], "log");
        assert_eq!(file["damage"].as_array().map(Vec::len), Some(0));
        for batch in file["batches"].as_array().expect("batches") {
            batches += 1;
            assert_eq!(batch["crc_valid"], true);
            assert_eq!(batch["compression"], "none");
            assert_eq!(batch["count"].as_u64(), Some(PER_BATCH as u64));
            for record in batch["records"].as_array().expect("records") {
                let payload = &record["payload"];
                assert_eq!(payload["headers"][0]["key"], "h");
                values.push(payload["value"].as_str().expect("value").to_string());
            }
        }
    }
    assert_eq!(batches, BATCHES);
    let written: Vec<String> = (0..BATCHES)
        .flat_map(|b| (0..PER_BATCH).map(move |i| value(b, i)))
        .collect();
    assert_eq!(values, written);
    Ok(())
}

#[test]
fn dump_log_deep_iteration_reads_compressed_batches() -> TestResult {
    let dir = data_dir()?;
    let logs = files(&dir.path().join("broker-0/zipped-0"), "log")?;
    let shallow = dump_json(&[], &logs)?;
    let deep = dump_json(&["--deep-iteration"], &logs)?;
    let (mut batches, mut counted, mut records) = (0, 0, 0);
    for (s, d) in shallow["files"]
        .as_array()
        .expect("files")
        .iter()
        .zip(deep["files"].as_array().expect("files"))
    {
        for (sb, db) in s["batches"]
            .as_array()
            .expect("batches")
            .iter()
            .zip(d["batches"].as_array().expect("batches"))
        {
            batches += 1;
            assert_eq!(sb["compression"], "lz4");
            assert!(
                sb.get("records").is_none(),
                "no records without deep iteration"
            );
            counted += sb["count"].as_u64().expect("count");
            let offsets: Vec<i64> = db["records"]
                .as_array()
                .expect("records")
                .iter()
                .map(|r| r["offset"].as_i64().expect("offset"))
                .collect();
            let base = db["base_offset"].as_i64().expect("base");
            assert_eq!(offsets, (base..base + PER_BATCH as i64).collect::<Vec<_>>());
            records += offsets.len();
        }
    }
    assert_eq!(
        (batches, counted, records),
        (BATCHES, (BATCHES * PER_BATCH) as u64, BATCHES * PER_BATCH)
    );
    Ok(())
}

#[test]
fn dump_log_shows_transactions_and_their_markers() -> TestResult {
    let dir = data_dir()?;
    let logs = files(&dir.path().join("broker-0/txn-0"), "log")?;
    let dumped = dump_json(&["--deep-iteration"], &logs)?;
    let batches: Vec<&Value> = dumped["files"]
        .as_array()
        .expect("files")
        .iter()
        .flat_map(|f| f["batches"].as_array().expect("batches"))
        .collect();
    // Two transactions of one record, each ended by its marker.
    let shape: Vec<(bool, bool, Option<&str>)> = batches
        .iter()
        .map(|b| {
            (
                b["is_transactional"].as_bool().expect("flag"),
                b["is_control"].as_bool().expect("flag"),
                b["records"][0]["control"]["marker"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            (true, false, None),
            (true, true, Some("COMMIT")),
            (true, false, None),
            (true, true, Some("ABORT")),
        ]
    );
    assert!(batches.iter().all(|b| b["producer_id"].as_i64() >= Some(0)));
    let mut args = vec!["dump-log", "--deep-iteration"];
    args.extend(logs.iter().map(|p| path_str(p)));
    let text = String::from_utf8(logbus(&args).assert().success().get_output().stdout.clone())?;
    assert!(
        text.contains("endTxnMarker: ABORT coordinatorEpoch: "),
        "{text}"
    );
    Ok(())
}

#[test]
fn dump_log_reads_transaction_indexes_and_producer_snapshots() -> TestResult {
    let dir = data_dir()?;
    let txn = dir.path().join("broker-0/txn-0");
    let logs = files(&txn, "log")?;
    let dumped = dump_json(&["--deep-iteration"], &logs)?;
    let batches: Vec<&Value> = dumped["files"]
        .as_array()
        .expect("files")
        .iter()
        .flat_map(|f| f["batches"].as_array().expect("batches"))
        .collect();
    // The aborted transaction: its record (the third batch) to its ABORT
    // marker (the fourth).
    let (first, marker) = (&batches[2]["base_offset"], &batches[3]["base_offset"]);
    let indexes = files(&txn, "txnindex")?;
    let dumped = dump_json(&[], &indexes)?;
    let aborted: Vec<(&Value, &Value)> = dumped["files"]
        .as_array()
        .expect("files")
        .iter()
        .flat_map(|f| f["entries"].as_array().expect("entries"))
        .map(|e| (&e["first_offset"], &e["last_offset"]))
        .collect();
    assert_eq!(aborted, [(first, marker)], "{dumped}");
    assert_eq!(dumped["files"][0]["kind"], "txn_index");

    // The clean close wrote each partition's producers at its log end.
    let orders = dir.path().join("broker-0/orders-0");
    let snapshot = files(&orders, "snapshot")?.pop().expect("a snapshot");
    let dumped = dump_json(&[], std::slice::from_ref(&snapshot))?;
    let producers = dumped["files"][0]["producers"]
        .as_array()
        .expect("producers");
    assert_eq!(producers.len(), 1, "{dumped}");
    let end = (BATCHES * PER_BATCH) as i64;
    assert_eq!(producers[0]["last_offset"].as_i64(), Some(end - 1));
    assert_eq!(producers[0]["last_sequence"].as_i64(), Some(end - 1));
    let text = String::from_utf8(
        logbus(&["dump-log", path_str(&snapshot)])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone(),
    )?;
    assert!(text.contains(&format!("lastOffset: {}", end - 1)), "{text}");
    Ok(())
}

#[test]
fn verify_finds_a_torn_transaction_index_entry() -> TestResult {
    let dir = data_dir()?;
    let index = files(&dir.path().join("broker-0/txn-0"), "txnindex")?
        .into_iter()
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
        .expect("a transaction index with an entry");
    let len = std::fs::metadata(&index)?.len();
    let mut file = std::fs::OpenOptions::new().append(true).open(&index)?;
    std::io::Write::write_all(&mut file, &[0, 0, 0, 0, 7])?;
    drop(file);
    let (code, report) = verify_json(dir.path())?;
    assert_eq!(code, 1, "{report}");
    assert_eq!(damage(&report), [(index, len)], "{report}");
    Ok(())
}

#[test]
fn dump_log_checks_index_entries_against_the_log() -> TestResult {
    let dir = data_dir()?;
    let partition = dir.path().join("broker-0/orders-0");
    let indexes = [files(&partition, "index")?, files(&partition, "timeindex")?].concat();
    let dumped = dump_json(&[], &indexes)?;
    let mut entries = 0;
    for file in dumped["files"].as_array().expect("files") {
        assert_eq!(file["checked_against_log"], true);
        assert_eq!(file["damage"].as_array().map(Vec::len), Some(0), "{file}");
        for entry in file["entries"].as_array().expect("entries") {
            assert!(entry["problem"].is_null(), "{entry}");
            entries += 1;
        }
    }
    assert!(
        entries > 0,
        "an index entry for every batch but each segment's first"
    );
    // The text form says the same.
    let mut args = vec!["dump-log"];
    args.extend(indexes.iter().map(|p| path_str(p)));
    let text = String::from_utf8(logbus(&args).assert().success().get_output().stdout.clone())?;
    assert!(
        text.contains("offset: ") && !text.contains("MISMATCH"),
        "{text}"
    );
    Ok(())
}

#[test]
fn verify_reports_nothing_in_a_clean_directory() -> TestResult {
    let dir = data_dir()?;
    let (code, report) = verify_json(dir.path())?;
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["clean"], true);
    assert_eq!(damage(&report), []);
    let checked = &report["checked"];
    assert!(checked["segments"].as_u64() > Some(2), "{checked}");
    assert!(
        checked["offset_checkpoints"].as_u64() >= Some(1),
        "{checked}"
    );
    assert!(
        checked["partition_metadata"].as_u64() >= Some(2),
        "{checked}"
    );
    let output = logbus(&["verify", path_str(dir.path())]).output()?;
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout)?;
    assert!(text.ends_with("no damage found\n"), "{text}");
    // stderr is a pipe here, not a terminal: no progress bar on it.
    assert_eq!(String::from_utf8(output.stderr)?, "");
    Ok(())
}

#[test]
fn verify_finds_a_flipped_byte_inside_a_batch() -> TestResult {
    let dir = data_dir()?;
    let log = files(&dir.path().join("broker-0/orders-0"), "log")?[0].clone();
    let dumped = dump_json(&[], std::slice::from_ref(&log))?;
    let batch = &dumped["files"][0]["batches"][1];
    let position = batch["position"].as_u64().expect("position");
    let size = batch["size"].as_u64().expect("size");
    let mut bytes = std::fs::read(&log)?;
    bytes[(position + size - 3) as usize] ^= 0x40; // inside the last record
    std::fs::write(&log, &bytes)?;

    let (code, report) = verify_json(dir.path())?;
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["clean"], false);
    assert_eq!(damage(&report), [(log.clone(), position)]);
    let problem = report["damage"][0]["problem"].as_str().expect("problem");
    assert!(problem.contains("CRC"), "{problem}");
    // dump-log shows the same batch as failing its CRC.
    let dumped = dump_json(&[], &[log])?;
    assert_eq!(dumped["files"][0]["batches"][1]["crc_valid"], false);
    Ok(())
}

#[test]
fn verify_finds_a_truncated_index() -> TestResult {
    let dir = data_dir()?;
    let index = files(&dir.path().join("broker-0/orders-0"), "index")?
        .into_iter()
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() >= 16))
        .expect("an index with entries");
    let len = std::fs::metadata(&index)?.len();
    assert_eq!(len % 8, 0, "trimmed at the clean close");
    let file = std::fs::OpenOptions::new().write(true).open(&index)?;
    file.set_len(len - 3)?;
    drop(file);

    let (code, report) = verify_json(dir.path())?;
    assert_eq!(code, 1, "{report}");
    assert_eq!(damage(&report), [(index, len - 8)]);
    Ok(())
}

#[test]
fn verify_finds_garbage_after_the_last_batch() -> TestResult {
    let dir = data_dir()?;
    let log = files(&dir.path().join("broker-0/orders-0"), "log")?
        .pop()
        .expect("a segment");
    let len = std::fs::metadata(&log)?.len();
    for garbage in [vec![0xAB; 100], vec![0x5A; 7]] {
        let mut bytes = std::fs::read(&log)?;
        bytes.truncate(len as usize);
        bytes.extend_from_slice(&garbage);
        std::fs::write(&log, &bytes)?;
        let (code, report) = verify_json(dir.path())?;
        assert_eq!(code, 1, "{report}");
        assert_eq!(damage(&report), [(log.clone(), len)], "{garbage:?}");
    }
    Ok(())
}

#[test]
fn verify_finds_damaged_checkpoints_and_snapshots() -> TestResult {
    let dir = data_dir()?;
    let broker = dir.path().join("broker-0");
    let partition = broker.join("orders-0");
    let checkpoint = broker.join("recovery-point-offset-checkpoint");
    std::fs::write(&checkpoint, "0\n2\norders 0 12\n")?; // one entry of two
    let epochs = partition.join("leader-epoch-checkpoint");
    std::fs::write(&epochs, "0\n2\n0 0\n0 5\n")?; // epoch 0 twice
    let snapshot = files(&partition, "snapshot")?
        .pop()
        .expect("a producer snapshot");
    let mut bytes = std::fs::read(&snapshot)?;
    let last = bytes.len() - 1;
    bytes[last] ^= 1; // the CRC no longer matches
    std::fs::write(&snapshot, &bytes)?;

    let (code, report) = verify_json(dir.path())?;
    assert_eq!(code, 1, "{report}");
    let mut found = damage(&report);
    found.sort();
    // The second entry line of the epochs file starts at byte 8.
    let mut expected = vec![(checkpoint, 0), (epochs, 8), (snapshot, 0)];
    expected.sort();
    assert_eq!(found, expected, "{report}");
    Ok(())
}

#[test]
fn read_only_commands_change_no_file() -> TestResult {
    let dir = data_dir()?;
    // Damaged too: the commands read past damage without repairing it.
    let log = files(&dir.path().join("broker-0/orders-0"), "log")?[0].clone();
    let mut bytes = std::fs::read(&log)?;
    bytes.extend_from_slice(b"garbage");
    std::fs::write(&log, &bytes)?;
    let before = every_file(dir.path())?;
    let (code, _) = verify_json(dir.path())?;
    assert_eq!(code, 1);
    logbus(&["verify", path_str(dir.path())]).assert().code(1);
    let partition = dir.path().join("broker-0/orders-0");
    let all = [
        files(&partition, "log")?,
        files(&partition, "index")?,
        files(&partition, "timeindex")?,
    ]
    .concat();
    dump_json(&["--print-data-log"], &all)?;
    let mut args = vec!["dump-log", "--deep-iteration"];
    args.extend(all.iter().map(|p| path_str(p)));
    logbus(&args).assert().success();
    assert_eq!(every_file(dir.path())?, before);
    Ok(())
}

#[test]
fn verify_reads_a_directory_a_cluster_holds_open() -> TestResult {
    let dir = tempfile::tempdir()?;
    let cluster = cluster(dir.path())?;
    // Active segments keep their preallocated index tails: not damage.
    let (code, report) = verify_json(dir.path())?;
    assert_eq!(code, 0, "{report}");
    assert_eq!(damage(&report), []);
    cluster.close()?;
    Ok(())
}

#[test]
fn bad_arguments_and_unknown_files_exit_2() {
    logbus(&["verify", "/nonexistent/logbus-dir"])
        .assert()
        .code(2);
    logbus(&["dump-log", "Cargo.toml"]).assert().code(2);
    logbus(&["dump-log"]).assert().code(2);
}

#[test]
fn perf_produces_and_consumes_the_records_it_was_asked_for() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let run = |args: &[&str]| -> Result<Value, Box<dyn std::error::Error>> {
        let output = logbus(args).output()?;
        assert!(output.status.success(), "{output:?}");
        let text = String::from_utf8(output.stdout)?;
        assert_eq!(text.lines().count(), 1, "one JSON line: {text}");
        Ok(serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?)
    };
    let produced = run(&[
        "perf",
        "produce",
        "--dir",
        path_str(&data),
        "--topic",
        "t",
        "--partitions",
        "2",
        "--records",
        "3000",
        "--record-size",
        "50",
        "--acks",
        "all",
    ])?;
    assert_eq!(produced["mode"], "produce");
    assert_eq!(produced["records"], 3000);
    assert_eq!(produced["bytes"], 150_000);
    // The sending thread's and the sender thread's CPU time per record
    // (null where /proc has no schedstat).
    if cfg!(target_os = "linux") {
        for field in ["app_cpu_ns_per_record", "sender_cpu_ns_per_record"] {
            let ns = produced[field].as_f64().ok_or(field)?;
            assert!(ns > 0.0, "{field}: {produced}");
        }
    }
    assert_eq!(produced["latency_every"], 16);
    assert!(produced["p50_us"].as_f64() > Some(0.0), "{produced}");
    // Without timed sends there are no latencies.
    let untimed = run(&[
        "perf",
        "produce",
        "--dir",
        path_str(&dir.path().join("untimed")),
        "--topic",
        "t",
        "--records",
        "1000",
        "--record-size",
        "50",
        "--latency-every",
        "0",
    ])?;
    assert_eq!(untimed["records"], 1000);
    assert_eq!(untimed["latency_every"], 0);
    for field in ["p50_us", "p99_us", "p999_us"] {
        assert!(untimed[field].is_null(), "{field}: {untimed}");
    }
    let consumed = run(&[
        "perf",
        "consume",
        "--dir",
        path_str(&data),
        "--topic",
        "t",
        "--records",
        "3000",
    ])?;
    // One poll may return more than asked: the warm-up record too.
    assert!(consumed["records"].as_u64() >= Some(3000), "{consumed}");
    // The data is what perf said it wrote, and the one record it sends and
    // waits for before starting the clock.
    let cluster = Cluster::open(&data, ClusterConfig::default())?;
    let topic = cluster.topic("t")?;
    let mut ends = 0;
    for p in topic.partitions()? {
        ends += p.log_end_offset()?;
    }
    assert_eq!(ends, 3001);
    cluster.close()?;
    // `append`: whole batches of what `produce` would send, through
    // `Log::append` into a log of its own; then the same with each batch
    // encoded in the timed loop and 4 joined per append. Each log holds
    // the records its run reports (`Log::append` checked every one).
    let append = |name: &str, extra: &[&str]| -> Result<Value, Box<dyn std::error::Error>> {
        let log_dir = dir.path().join(name);
        let mut args = vec![
            "perf",
            "append",
            "--dir",
            path_str(&log_dir),
            "--records",
            "3000",
            "--record-size",
            "50",
            "--batch-size",
            "1000",
        ];
        args.extend_from_slice(extra);
        let json = run(&args)?;
        let log = logbus::Log::builder(&log_dir).open()?;
        assert_eq!(Some(log.log_end_offset()), json["records"].as_u64());
        log.close()?;
        Ok(json)
    };
    let appended = append("log", &[])?;
    assert_eq!(appended["mode"], "append");
    let per_batch = appended["records_per_batch"].as_u64().ok_or("per batch")?;
    assert!((1..3000).contains(&per_batch), "{appended}");
    assert_eq!(
        appended["records"].as_u64(),
        Some(3000_u64.div_ceil(per_batch) * per_batch)
    );
    let built = append("built", &["--build", "true", "--group-bytes", "4000"])?;
    assert_eq!(built["build"], true);
    assert_eq!(built["records"], appended["records"]);
    let per_append = built["batches_per_append"].as_u64().ok_or("per append")?;
    assert!((2..=4).contains(&per_append), "{built}");
    logbus(&["perf", "produce", "--records", "x"])
        .assert()
        .code(2);
    Ok(())
}
