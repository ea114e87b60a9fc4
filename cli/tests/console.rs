//! `logbus produce` and `logbus consume` as a user runs them, over data
//! directories whose topics are made here with the library.

use std::path::Path;

mod common;

use assert_cmd::cargo::cargo_bin_cmd;
use common::{logbus, path_str};
use logbus::{Cluster, ClusterConfig};
use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A cluster directory with these topics (name, partitions), made by the
/// command line. The tests of this binary run in parallel threads, each
/// spawning commands, and a child is forked with every file of this
/// process until it execs: a `Cluster` open here has its lock file
/// inherited for that moment, so a command opening the same directory
/// could meet the lock held (`DirectoryLocked`). So this process opens no
/// directory for writing, except in the test that needs a holder.
fn data_dir(topics: &[(&str, u32)]) -> Result<tempfile::TempDir, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    for (name, partitions) in topics {
        let partitions = partitions.to_string();
        cargo_bin_cmd!("logbus")
            .args(["topics", "--dir", path_str(dir.path()), "create", name])
            .args(["--partitions", &partitions])
            .assert()
            .success();
    }
    Ok(dir)
}

/// `logbus produce --topic TOPIC EXTRA...` with `input` on stdin.
fn produce(dir: &Path, topic: &str, extra: &[&str], input: &str) {
    let mut args = vec!["produce", "--topic", topic];
    args.extend_from_slice(extra);
    logbus(dir, &args).write_stdin(input).assert().success();
}

/// `logbus consume --topic TOPIC EXTRA...`: its stdout.
fn consume(dir: &Path, topic: &str, extra: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
    let mut args = vec!["consume", "--topic", topic];
    args.extend_from_slice(extra);
    let output = logbus(dir, &args).assert().success().get_output().clone();
    Ok(String::from_utf8(output.stdout)?)
}

/// `logbus --json consume ...`: one parsed object per line.
fn consume_json(
    dir: &Path,
    topic: &str,
    extra: &[&str],
) -> Result<Vec<Value>, Box<dyn std::error::Error>> {
    let mut args = vec!["--json", "consume", "--topic", topic];
    args.extend_from_slice(extra);
    let output = logbus(dir, &args).assert().success().get_output().clone();
    String::from_utf8(output.stdout)?
        .lines()
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}

/// The values of every record of `topic`, from the beginning.
fn values(dir: &Path, topic: &str) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    Ok(consume(dir, topic, &["--from-beginning"])?
        .lines()
        .map(str::to_string)
        .collect())
}

#[test]
fn consume_prints_what_produce_read_from_stdin() -> TestResult {
    let dir = data_dir(&[("orders", 1)])?;
    let input = "h1:a,h2:b\tk1:v1\n\tk2:v2 with: colons\nh3\tk3:\n";
    let output = logbus(
        dir.path(),
        &[
            "--json",
            "produce",
            "--topic",
            "orders",
            "--key-separator",
            ":",
            "--parse-headers",
            "--header",
            "src=cli",
        ],
    )
    .write_stdin(input)
    .assert()
    .success()
    .get_output()
    .stdout
    .clone();
    let produced: Value = serde_json::from_slice(&output)?;
    assert_eq!(produced["records"], 3);
    assert_eq!(produced["partitions"][0]["partition"], 0);
    assert_eq!(produced["partitions"][0]["first_offset"], 0);
    assert_eq!(produced["partitions"][0]["last_offset"], 2);

    let text = consume(
        dir.path(),
        "orders",
        &[
            "--from-beginning",
            "--print-offset",
            "--print-headers",
            "--print-key",
        ],
    )?;
    assert_eq!(
        text,
        "Offset:0\tsrc:cli,h1:a,h2:b\tk1\tv1\n\
         Offset:1\tsrc:cli\tk2\tv2 with: colons\n\
         Offset:2\tsrc:cli,h3:null\tk3\t\n"
    );

    // The same records as JSON lines, every field there.
    let records = consume_json(dir.path(), "orders", &["--from-beginning"])?;
    assert_eq!(records.len(), 3);
    let first = &records[0];
    assert_eq!(first["topic"], "orders");
    assert_eq!(first["partition"], 0);
    assert_eq!(first["offset"], 0);
    assert_eq!(first["key"], "k1");
    assert_eq!(first["value"], "v1");
    assert_eq!(first["timestamp_type"], "CreateTime");
    assert!(first["timestamp"].as_i64() > Some(0), "{first}");
    assert_eq!(
        first["headers"],
        serde_json::json!([
            {"key": "src", "value": "cli"},
            {"key": "h1", "value": "a"},
            {"key": "h2", "value": "b"},
        ])
    );
    assert_eq!(
        records[2]["headers"][1],
        serde_json::json!({"key": "h3", "value": null})
    );
    assert_eq!(records[2]["value"], "");
    Ok(())
}

#[test]
fn lines_without_a_key_separator_have_null_keys() -> TestResult {
    let dir = data_dir(&[("plain", 1)])?;
    produce(dir.path(), "plain", &[], "first line\r\n\nthird: line\n");
    let records = consume_json(dir.path(), "plain", &["--from-beginning"])?;
    let shape: Vec<(Value, Value, usize)> = records
        .iter()
        .map(|r| {
            (
                r["key"].clone(),
                r["value"].clone(),
                r["headers"].as_array().map_or(99, Vec::len),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            (Value::Null, "first line".into(), 0),
            (Value::Null, "".into(), 0),
            (Value::Null, "third: line".into(), 0),
        ]
    );
    // In text, a null key prints as `null`, no headers as NO_HEADERS, and
    // --separator joins the fields.
    let text = consume(
        dir.path(),
        "plain",
        &[
            "--from-beginning",
            "--max-messages",
            "1",
            "--print-key",
            "--print-headers",
            "--print-partition",
            "--separator",
            "|",
        ],
    )?;
    assert_eq!(text, "Partition:0|NO_HEADERS|null|first line\n");
    Ok(())
}

#[test]
fn produce_spreads_keys_and_consume_reads_every_partition() -> TestResult {
    let dir = data_dir(&[("spread", 3)])?;
    let input: String = (0..30).map(|i| format!("key-{i}=value-{i}\n")).collect();
    produce(dir.path(), "spread", &["--key-separator", "="], &input);
    produce(dir.path(), "spread", &["--partition", "2"], "pinned\n");
    let records = consume_json(dir.path(), "spread", &["--from-beginning"])?;
    let mut got: Vec<String> = records
        .iter()
        .map(|r| r["value"].as_str().expect("value").to_string())
        .collect();
    got.sort();
    let mut expected: Vec<String> = (0..30).map(|i| format!("value-{i}")).collect();
    expected.push("pinned".into());
    expected.sort();
    assert_eq!(got, expected);
    let partitions: std::collections::BTreeSet<u64> = records
        .iter()
        .map(|r| r["partition"].as_u64().expect("partition"))
        .collect();
    assert_eq!(partitions.len(), 3, "30 keys land on every partition");
    // Each key's records are on one partition: the one its key hashes to.
    let pinned = records
        .iter()
        .find(|r| r["value"] == "pinned")
        .expect("pinned");
    assert_eq!(pinned["partition"], 2);
    // --partition reads only that partition.
    let only = consume_json(
        dir.path(),
        "spread",
        &["--partition", "2", "--from-beginning"],
    )?;
    assert!(only.iter().all(|r| r["partition"] == 2));
    assert_eq!(
        only.len(),
        records.iter().filter(|r| r["partition"] == 2).count()
    );
    Ok(())
}

#[test]
fn max_messages_stops_after_that_many() -> TestResult {
    let dir = data_dir(&[("orders", 1)])?;
    let input: String = (0..5).map(|i| format!("v{i}\n")).collect();
    produce(dir.path(), "orders", &[], &input);
    let output = logbus(
        dir.path(),
        &[
            "consume",
            "--topic",
            "orders",
            "--from-beginning",
            "--max-messages",
            "2",
        ],
    )
    .assert()
    .success()
    .get_output()
    .clone();
    assert_eq!(String::from_utf8(output.stdout)?, "v0\nv1\n");
    assert_eq!(
        String::from_utf8(output.stderr)?,
        "Processed a total of 2 messages\n"
    );
    Ok(())
}

#[test]
fn consume_starts_at_the_end_unless_told_otherwise() -> TestResult {
    let dir = data_dir(&[("orders", 1)])?;
    produce(dir.path(), "orders", &[], "v0\nv1\nv2\n");
    // The default: only records newer than the start, so none.
    assert_eq!(consume(dir.path(), "orders", &["--timeout-ms", "200"])?, "");
    assert_eq!(consume(dir.path(), "orders", &[])?, "");
    assert_eq!(
        consume(
            dir.path(),
            "orders",
            &["--from-beginning", "--timeout-ms", "200"]
        )?,
        "v0\nv1\nv2\n"
    );
    // --offset in a named partition.
    assert_eq!(
        consume(dir.path(), "orders", &["--partition", "0", "--offset", "1"])?,
        "v1\nv2\n"
    );
    assert_eq!(
        consume(
            dir.path(),
            "orders",
            &["--partition", "0", "--offset", "earliest"]
        )?,
        "v0\nv1\nv2\n"
    );
    assert_eq!(
        consume(
            dir.path(),
            "orders",
            &["--partition", "0", "--offset", "latest"]
        )?,
        ""
    );
    Ok(())
}

#[test]
fn consume_with_a_group_commits_and_the_next_one_resumes() -> TestResult {
    let dir = data_dir(&[("orders", 2)])?;
    let input: String = (0..6).map(|i| format!("v{i}\n")).collect();
    produce(dir.path(), "orders", &["--partition", "0"], &input);
    let group = ["--group", "billing", "--from-beginning"];
    let first = consume(
        dir.path(),
        "orders",
        &[&group[..], &["--max-messages", "4"]].concat(),
    )?;
    assert_eq!(first, "v0\nv1\nv2\nv3\n");
    let second = consume(dir.path(), "orders", &group)?;
    assert_eq!(second, "v4\nv5\n");
    assert_eq!(consume(dir.path(), "orders", &group)?, "");
    // New records, on both partitions, are read by the group's next run.
    produce(dir.path(), "orders", &["--partition", "1"], "w0\n");
    produce(dir.path(), "orders", &["--partition", "0"], "v6\n");
    let mut third: Vec<String> = consume(dir.path(), "orders", &group)?
        .lines()
        .map(str::to_string)
        .collect();
    third.sort();
    assert_eq!(third, ["v6", "w0"]);
    // Another group starts on its own.
    assert_eq!(
        consume(
            dir.path(),
            "orders",
            &["--group", "audit", "--partition", "1", "--from-beginning"]
        )?,
        "w0\n"
    );
    Ok(())
}

#[test]
fn bad_input_exits_non_zero_and_stores_nothing() -> TestResult {
    let dir = data_dir(&[("orders", 2)])?;
    produce(dir.path(), "orders", &["--partition", "0"], "kept\n");
    let failures: [(&[&str], &str, &str); 7] = [
        (
            &["produce", "--topic", "nope"],
            "x\n",
            "topic 'nope' does not exist",
        ),
        (
            &["produce", "--topic", "orders", "--header", "novalue"],
            "x\n",
            "bad header 'novalue'",
        ),
        (
            &["produce", "--topic", "orders", "--header", "=v"],
            "x\n",
            "bad header '=v'",
        ),
        (
            &["produce", "--topic", "orders", "--key-separator", ":"],
            "k:v\nno separator\n",
            "line 2: no key separator ':'",
        ),
        (
            &["produce", "--topic", "orders", "--parse-headers"],
            "h:v\tvalue\nno tab\n",
            "line 2: no tab after the headers",
        ),
        (
            &["produce", "--topic", "orders", "--partition", "2"],
            "x\n",
            "topic 'orders' has no partition 2",
        ),
        (
            &["consume", "--topic", "nope"],
            "",
            "topic 'nope' does not exist",
        ),
    ];
    for (args, stdin, message) in failures {
        let output = logbus(dir.path(), args).write_stdin(stdin).output()?;
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(output.stderr)?;
        assert!(
            stderr.starts_with("logbus: ") && stderr.contains(message),
            "{args:?}: {stderr}"
        );
        assert!(output.stdout.is_empty(), "{args:?}");
    }
    // --offset needs --partition; a non-numeric offset is refused.
    logbus(
        dir.path(),
        &["consume", "--topic", "orders", "--offset", "1"],
    )
    .assert()
    .code(2);
    logbus(
        dir.path(),
        &[
            "consume",
            "--topic",
            "orders",
            "--partition",
            "0",
            "--offset",
            "soon",
        ],
    )
    .assert()
    .code(2);
    // Nothing was written by the failed runs.
    assert_eq!(values(dir.path(), "orders")?, ["kept"]);
    Ok(())
}

#[test]
fn a_directory_held_by_another_process_is_refused_plainly() -> TestResult {
    let dir = data_dir(&[("orders", 1)])?;
    let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    let output = logbus(dir.path(), &["produce", "--topic", "orders"])
        .write_stdin("x\n")
        .output()?;
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8(output.stderr)?.contains("is open in another process"));
    cluster.close()?;
    // Read without a lock: a command here could meet this process's lock
    // inherited by another test's child for a moment (see `data_dir`).
    let view = Cluster::open_read_only(dir.path(), ClusterConfig::default())?;
    assert_eq!(view.topic("orders")?.partition(0)?.log_end_offset()?, 0);
    view.close()?;
    Ok(())
}
