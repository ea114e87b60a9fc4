//! `logbus groups list|describe|reset-offsets|delete` as a user runs
//! them, over groups whose offsets `logbus consume --group` committed.

use std::collections::BTreeMap;
use std::path::Path;

mod common;

use assert_cmd::cargo::cargo_bin_cmd;
use common::{logbus, path_str};
use logbus::{Cluster, ClusterConfig, TopicPartition};
use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A row of `describe`: committed offset, log end offset, lag.
type Lag = (Option<u64>, u64, Option<u64>);

/// Runs `logbus ARGS...` successfully; its stdout.
fn run(dir: &Path, args: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
    let output = logbus(dir, args).assert().success().get_output().clone();
    Ok(String::from_utf8(output.stdout)?)
}

/// Runs `logbus --json ARGS...` successfully; its document.
fn run_json(dir: &Path, args: &[&str]) -> Result<Value, Box<dyn std::error::Error>> {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    Ok(serde_json::from_str(&run(dir, &all)?)?)
}

/// A closed directory with topic `orders` (2 partitions): 6 records in
/// partition 0 and 4 in partition 1. Group `billing` has read them all;
/// group `audit` has read 2 records of partition 0.
///
/// The tests of this binary run in parallel threads, each spawning
/// commands. A child is forked with every file of this process, the
/// lock file of a `Cluster` open here included, and holds that lock
/// until it execs (the descriptor closes on exec): a `Cluster::open` of
/// the same directory here, or a command's, meeting such a child in that
/// moment fails with `DirectoryLocked`. So this process writes nothing
/// itself (the commands create the topics) and reads with read-only
/// opens, which take no lock; only the test that needs a holder holds
/// one.
fn data_dir() -> Result<tempfile::TempDir, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    for (topic, partitions) in [("orders", "2"), ("other", "1")] {
        cargo_bin_cmd!("logbus")
            .args(["topics", "--dir", path_str(d), "create", topic])
            .args(["--partitions", partitions])
            .assert()
            .success();
    }
    logbus(d, &["produce", "--topic", "orders", "--partition", "0"])
        .write_stdin("a0\na1\na2\na3\na4\na5\n")
        .assert()
        .success();
    logbus(d, &["produce", "--topic", "orders", "--partition", "1"])
        .write_stdin("b0\nb1\nb2\nb3\n")
        .assert()
        .success();
    let billing = run(
        d,
        &[
            "consume",
            "--topic",
            "orders",
            "--group",
            "billing",
            "--from-beginning",
        ],
    )?;
    assert_eq!(billing.lines().count(), 10);
    let audit = run(
        d,
        &[
            "consume",
            "--topic",
            "orders",
            "--group",
            "audit",
            "--partition",
            "0",
            "--from-beginning",
            "--max-messages",
            "2",
        ],
    )?;
    assert_eq!(audit, "a0\na1\n");
    Ok(dir)
}

/// `describe --json`'s rows as partition → (committed, log end, lag).
fn lags(dir: &Path, group: &str) -> Result<BTreeMap<u64, Lag>, Box<dyn std::error::Error>> {
    let described = run_json(dir, &["groups", "describe", group])?;
    assert_eq!(described["group_id"], group);
    Ok(described["offsets"]
        .as_array()
        .expect("offsets")
        .iter()
        .map(|o| {
            assert_eq!(o["topic"], "orders");
            (
                o["partition"].as_u64().expect("partition"),
                (
                    o["committed_offset"].as_u64(),
                    o["log_end_offset"].as_u64().expect("log end"),
                    o["lag"].as_u64(),
                ),
            )
        })
        .collect())
}

/// The committed offsets of `group`, read with the library (a read-only
/// open: see [`data_dir`]).
fn committed(dir: &Path, group: &str) -> Result<BTreeMap<u32, u64>, Box<dyn std::error::Error>> {
    let cluster = Cluster::open_read_only(dir, ClusterConfig::default())?;
    let offsets = cluster.list_group_offsets(group)?;
    cluster.close()?;
    Ok(offsets
        .into_iter()
        .map(|(tp, o)| {
            assert_eq!(tp.topic, "orders");
            (tp.partition, o.offset)
        })
        .collect())
}

#[test]
fn list_and_describe_show_committed_offsets_log_ends_and_lag() -> TestResult {
    let dir = data_dir()?;
    let d = dir.path();
    assert_eq!(run(d, &["groups", "list"])?, "audit\nbilling\n");
    assert_eq!(
        run_json(d, &["groups", "list"])?,
        serde_json::json!({"groups": ["audit", "billing"]})
    );
    assert_eq!(
        lags(d, "billing")?,
        BTreeMap::from([(0, (Some(6), 6, Some(0))), (1, (Some(4), 4, Some(0)))])
    );
    assert_eq!(
        lags(d, "audit")?,
        BTreeMap::from([(0, (Some(2), 6, Some(4)))])
    );
    // New records raise the lag.
    logbus(d, &["produce", "--topic", "orders", "--partition", "1"])
        .write_stdin("b4\nb5\nb6\n")
        .assert()
        .success();
    assert_eq!(
        lags(d, "billing")?,
        BTreeMap::from([(0, (Some(6), 6, Some(0))), (1, (Some(4), 7, Some(3)))])
    );
    let described = run_json(d, &["groups", "describe", "billing"])?;
    assert_eq!(described["state"], "Empty");
    assert_eq!(described["members"], serde_json::json!([]));
    assert_eq!(described["offsets"][1]["consumer_id"], Value::Null);

    // The text table, as kafka-consumer-groups prints it.
    let text = run(d, &["groups", "describe", "billing"])?;
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("Consumer group 'billing' has no active members (state Empty).")
    );
    assert_eq!(lines.next(), Some(""));
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(
        header,
        [
            "GROUP",
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "CONSUMER-ID",
            "CLIENT-ID"
        ]
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        rows,
        [
            ["billing", "orders", "0", "6", "6", "0", "-", "-"],
            ["billing", "orders", "1", "4", "7", "3", "-", "-"],
        ]
    );
    Ok(())
}

#[test]
fn reset_offsets_is_a_dry_run_until_execute() -> TestResult {
    let dir = data_dir()?;
    let d = dir.path();
    let reset = |extra: &[&str]| -> Result<Value, Box<dyn std::error::Error>> {
        let mut args = vec!["groups", "reset-offsets", "billing"];
        args.extend_from_slice(extra);
        run_json(d, &args)
    };
    let new_offsets = |report: &Value| -> BTreeMap<u64, u64> {
        report["offsets"]
            .as_array()
            .expect("offsets")
            .iter()
            .map(|o| {
                (
                    o["partition"].as_u64().expect("partition"),
                    o["new_offset"].as_u64().expect("new offset"),
                )
            })
            .collect()
    };
    let before = committed(d, "billing")?;
    assert_eq!(before, BTreeMap::from([(0, 6), (1, 4)]));

    // A dry run (the default, or --dry-run) reports and changes nothing.
    let dry = reset(&["--all-topics", "--to-earliest"])?;
    assert_eq!(dry["executed"], false);
    assert_eq!(new_offsets(&dry), BTreeMap::from([(0, 0), (1, 0)]));
    assert_eq!(dry["offsets"][0]["previous_offset"], 6);
    let dry = reset(&["--all-topics", "--shift-by", "-3", "--dry-run"])?;
    assert_eq!(new_offsets(&dry), BTreeMap::from([(0, 3), (1, 1)]));
    assert_eq!(committed(d, "billing")?, before);
    // A dry run works while another process holds the directory (this
    // one); an execution says plainly that it cannot.
    let holder = Cluster::open(d, ClusterConfig::default())?;
    let dry = reset(&["--all-topics", "--to-latest"])?;
    assert_eq!(new_offsets(&dry), BTreeMap::from([(0, 6), (1, 4)]));
    let refused = logbus(
        d,
        &[
            "groups",
            "reset-offsets",
            "billing",
            "--all-topics",
            "--to-latest",
            "--execute",
        ],
    )
    .assert()
    .failure()
    .get_output()
    .clone();
    let stderr = String::from_utf8(refused.stderr)?;
    assert!(stderr.contains("open in another process"), "{stderr}");
    holder.close()?;
    assert_eq!(committed(d, "billing")?, before);
    // The text form says the same.
    let text = run(
        d,
        &[
            "groups",
            "reset-offsets",
            "billing",
            "--topic",
            "orders:1",
            "--to-offset",
            "2",
        ],
    )?;
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec![
                "GROUP",
                "TOPIC",
                "PARTITION",
                "PREVIOUS-OFFSET",
                "NEW-OFFSET"
            ],
            vec!["billing", "orders", "1", "4", "2"],
        ]
    );
    assert_eq!(committed(d, "billing")?, before);

    // --execute commits what the dry run showed.
    let executed = reset(&["--all-topics", "--shift-by", "-3", "--execute"])?;
    assert_eq!(executed["executed"], true);
    assert_eq!(new_offsets(&executed), BTreeMap::from([(0, 3), (1, 1)]));
    assert_eq!(committed(d, "billing")?, BTreeMap::from([(0, 3), (1, 1)]));
    assert_eq!(
        lags(d, "billing")?,
        BTreeMap::from([(0, (Some(3), 6, Some(3))), (1, (Some(1), 4, Some(3)))])
    );
    // Offsets outside the log are moved into it.
    reset(&["--topic", "orders:0", "--to-offset", "100", "--execute"])?;
    reset(&["--topic", "orders:1", "--shift-by", "-100", "--execute"])?;
    assert_eq!(committed(d, "billing")?, BTreeMap::from([(0, 6), (1, 0)]));
    // By time: every record is newer than 1970 and older than 2999.
    reset(&[
        "--topic",
        "orders",
        "--to-datetime",
        "1970-01-01T00:00:00Z",
        "--execute",
    ])?;
    assert_eq!(committed(d, "billing")?, BTreeMap::from([(0, 0), (1, 0)]));
    reset(&[
        "--all-topics",
        "--to-datetime",
        "2999-01-01T00:00:00.000+01:00",
        "--execute",
    ])?;
    assert_eq!(committed(d, "billing")?, BTreeMap::from([(0, 6), (1, 4)]));
    reset(&["--all-topics", "--to-earliest", "--execute"])?;
    reset(&["--all-topics", "--to-latest", "--execute"])?;
    assert_eq!(committed(d, "billing")?, BTreeMap::from([(0, 6), (1, 4)]));

    // A new group's offsets can be set before it first reads, and a
    // consume of it resumes from them.
    run(
        d,
        &[
            "groups",
            "reset-offsets",
            "fresh",
            "--topic",
            "orders:0",
            "--to-offset",
            "4",
            "--execute",
        ],
    )?;
    let resumed = run(
        d,
        &[
            "consume",
            "--topic",
            "orders",
            "--group",
            "fresh",
            "--partition",
            "0",
        ],
    )?;
    assert_eq!(resumed, "a4\na5\n");
    Ok(())
}

#[test]
fn delete_removes_a_group() -> TestResult {
    let dir = data_dir()?;
    let d = dir.path();
    let deleted = run_json(d, &["groups", "delete", "audit"])?;
    assert_eq!(
        deleted,
        serde_json::json!({"group_id": "audit", "deleted_offsets": 1})
    );
    assert_eq!(run(d, &["groups", "list"])?, "billing\n");
    assert_eq!(
        run(d, &["groups", "delete", "billing"])?,
        "Deleted consumer group 'billing' (2 committed offsets).\n"
    );
    assert_eq!(run(d, &["groups", "list"])?, "");
    // A consume of a deleted group starts over.
    let again = run(
        d,
        &[
            "consume",
            "--topic",
            "orders",
            "--group",
            "billing",
            "--from-beginning",
        ],
    )?;
    assert_eq!(again.lines().count(), 10);
    Ok(())
}

#[test]
fn bad_input_exits_non_zero_and_changes_nothing() -> TestResult {
    let dir = data_dir()?;
    let d = dir.path();
    let before = (committed(d, "billing")?, committed(d, "audit")?);
    let failures: [(&[&str], &str); 8] = [
        (
            &["groups", "describe", "nobody"],
            "consumer group 'nobody' does not exist",
        ),
        (
            &["groups", "delete", "nobody"],
            "consumer group 'nobody' does not exist",
        ),
        (&["groups", "describe", ""], "must not be empty"),
        (
            &[
                "groups",
                "reset-offsets",
                "nobody",
                "--all-topics",
                "--to-earliest",
                "--execute",
            ],
            "consumer group 'nobody' has no committed offsets",
        ),
        (
            &[
                "groups",
                "reset-offsets",
                "billing",
                "--topic",
                "nope",
                "--to-earliest",
                "--execute",
            ],
            "topic 'nope' does not exist",
        ),
        (
            &[
                "groups",
                "reset-offsets",
                "billing",
                "--topic",
                "orders",
                "--topic",
                "orders:7",
                "--to-earliest",
                "--execute",
            ],
            "topic 'orders' has no partition 7",
        ),
        (
            // `other` has no committed offset to shift from: nothing of
            // the whole reset is committed, `orders` included.
            &[
                "groups",
                "reset-offsets",
                "billing",
                "--topic",
                "orders",
                "--topic",
                "other",
                "--shift-by",
                "1",
                "--execute",
            ],
            "cannot shift other-0: group billing has no committed offset",
        ),
        (
            &[
                "groups",
                "reset-offsets",
                "billing",
                "--all-topics",
                "--to-datetime",
                "2024-02-30T00:00:00",
                "--execute",
            ],
            "expected YYYY-MM-DDTHH:MM:SS",
        ),
    ];
    for (args, message) in failures {
        let output = logbus(d, args).output()?;
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(output.stderr)?;
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
    // Arguments clap refuses: no scope, no target, two targets, dry run
    // and execute together.
    for args in [
        &["groups", "reset-offsets", "billing", "--to-earliest"][..],
        &["groups", "reset-offsets", "billing", "--all-topics"],
        &[
            "groups",
            "reset-offsets",
            "billing",
            "--all-topics",
            "--to-earliest",
            "--to-latest",
        ],
        &[
            "groups",
            "reset-offsets",
            "billing",
            "--all-topics",
            "--to-earliest",
            "--dry-run",
            "--execute",
        ],
    ] {
        logbus(d, args).assert().code(2);
    }
    assert_eq!((committed(d, "billing")?, committed(d, "audit")?), before);
    assert_eq!(run(d, &["groups", "list"])?, "audit\nbilling\n");
    // The library agrees that `nobody` was never created.
    let cluster = Cluster::open_read_only(d, ClusterConfig::default())?;
    assert!(cluster.list_group_offsets("nobody")?.is_empty());
    assert!(
        !cluster
            .list_group_offsets("billing")?
            .contains_key(&TopicPartition::new("other", 0))
    );
    cluster.close()?;
    Ok(())
}
