//! `logbus topics ...` as a user runs it: over data directories made by
//! the command itself and by the library.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod common;

use assert_cmd::cargo::cargo_bin_cmd;
use common::every_file;
use logbus::{Cluster, ClusterConfig, NewTopic, Producer, ProducerConfig, ProducerRecord};
use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn topics(dir: &Path, args: &[&str]) -> assert_cmd::Command {
    let mut cmd = cargo_bin_cmd!("logbus");
    cmd.arg("topics").arg("--dir").arg(dir).args(args);
    cmd
}

/// `logbus --json topics --dir DIR ARGS...`, which must succeed, parsed.
fn json(dir: &Path, args: &[&str]) -> Result<Value, Box<dyn std::error::Error>> {
    let mut cmd = cargo_bin_cmd!("logbus");
    cmd.args(["--json", "topics", "--dir"]).arg(dir).args(args);
    let output = cmd.assert().success().get_output().stdout.clone();
    Ok(serde_json::from_slice(&output)?)
}

/// The stdout of a command that must succeed.
fn text(dir: &Path, args: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
    let output = topics(dir, args)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    Ok(String::from_utf8(output)?)
}

/// The stderr of a command that must fail with exit status 2 and print
/// nothing on stdout.
fn refused(dir: &Path, args: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
    let output = topics(dir, args).assert().code(2).get_output().clone();
    assert!(output.stdout.is_empty(), "{args:?}");
    let stderr = String::from_utf8(output.stderr)?;
    assert!(stderr.starts_with("logbus: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one plain line: {stderr}");
    Ok(stderr)
}

/// The record files of the metadata log, by name, with their bytes: what
/// the cluster stores about its topics.
fn metadata(dir: &Path) -> Result<BTreeMap<PathBuf, Vec<u8>>, std::io::Error> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir.join("__cluster_metadata-0"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "log") {
            files.insert(path.clone(), std::fs::read(&path)?);
        }
    }
    Ok(files)
}

/// The one topic of a `describe TOPIC` or a change's JSON.
fn topic_of(value: &Value) -> &Value {
    if let Some(all) = value["topics"].as_array() {
        assert_eq!(all.len(), 1, "{value}");
        &all[0]
    } else {
        &value["topic"]
    }
}

#[test]
fn create_then_list_and_describe_show_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let created = json(
        dir.path(),
        &[
            "create",
            "orders",
            "--partitions",
            "3",
            "--config",
            "retention.ms=3600000",
            "--config",
            "cleanup.policy = compact",
        ],
    )?;
    assert_eq!(created["action"], "created");
    assert_eq!(topic_of(&created)["partition_count"], 3);
    let out = text(dir.path(), &["create", "audit", "--partitions", "1"])?;
    assert!(out.starts_with("Created topic audit.\n"), "{out}");

    assert_eq!(text(dir.path(), &["list"])?, "audit\norders\n");
    assert_eq!(
        json(dir.path(), &["list"])?["topics"],
        serde_json::json!(["audit", "orders"])
    );

    let described = json(dir.path(), &["describe", "orders"])?;
    let topic = topic_of(&described);
    assert_eq!(topic["name"], "orders");
    assert_eq!(topic["internal"], false);
    assert_eq!(topic["replication_factor"], 1);
    assert_eq!(
        topic["configs"],
        serde_json::json!({"cleanup.policy": "compact", "retention.ms": "3600000"})
    );
    let partitions = topic["partitions"].as_array().ok_or("partitions")?;
    assert_eq!(partitions.len(), 3);
    for (i, p) in partitions.iter().enumerate() {
        assert_eq!(p["partition"], i);
        assert_eq!(p["leader"], 0);
        assert_eq!(p["replicas"], serde_json::json!([0]));
        assert_eq!(p["isr"], serde_json::json!([0]));
        for field in [
            "log_start_offset",
            "high_watermark",
            "log_end_offset",
            "size_bytes",
        ] {
            assert_eq!(p[field], 0, "{field}");
        }
    }
    // Every user topic without a name.
    let all = json(dir.path(), &["describe"])?;
    let names: Vec<&str> = all["topics"]
        .as_array()
        .ok_or("topics")?
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["audit", "orders"]);
    let out = text(dir.path(), &["describe", "orders"])?;
    assert!(out.starts_with("Topic: orders  TopicId: "), "{out}");
    assert!(
        out.contains("Configs: cleanup.policy=compact,retention.ms=3600000\n"),
        "{out}"
    );
    assert!(
        out.contains("PARTITION  LEADER  REPLICAS  ISR  LOG-START"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 2 + 3, "{out}");
    Ok(())
}

#[test]
fn describe_shows_offsets_and_sizes_of_data_the_library_wrote() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
        cluster.create_topic(NewTopic::new("events", 2))?;
        let producer = Producer::new(&cluster, ProducerConfig::default())?;
        for i in 0..5 {
            producer
                .send(ProducerRecord::new("events", format!("v{i}")).with_partition(1))?
                .wait()?;
        }
        producer.close()?;
        cluster.topic("events")?.partition(1)?.delete_records(2)?;
        cluster.close()?;
    }
    let described = json(dir.path(), &["describe", "events"])?;
    let partitions = &topic_of(&described)["partitions"];
    assert_eq!(partitions[0]["log_end_offset"], 0);
    assert_eq!(partitions[0]["size_bytes"], 0);
    let p1 = &partitions[1];
    assert_eq!(p1["log_start_offset"], 2);
    assert_eq!(p1["high_watermark"], 5);
    assert_eq!(p1["log_end_offset"], 5);
    assert!(p1["size_bytes"].as_u64().ok_or("size")? > 0, "{p1}");
    Ok(())
}

#[test]
fn alter_config_is_stored_and_shown() -> TestResult {
    let dir = tempfile::tempdir()?;
    text(
        dir.path(),
        &[
            "create",
            "t",
            "--partitions",
            "1",
            "--config",
            "retention.ms=1000",
        ],
    )?;
    let altered = json(
        dir.path(),
        &[
            "alter-config",
            "t",
            "--set",
            "segment.bytes=65536",
            "--set",
            "max.message.bytes= 2048",
            "--delete",
            "retention.ms",
        ],
    )?;
    assert_eq!(altered["action"], "altered");
    let expected = serde_json::json!({"max.message.bytes": "2048", "segment.bytes": "65536"});
    assert_eq!(topic_of(&altered)["configs"], expected);
    // Stored: a later command, and the library, see it.
    assert_eq!(
        topic_of(&json(dir.path(), &["describe", "t"])?)["configs"],
        expected
    );
    // A read-only view, which takes no lock: a lock taken here could be
    // inherited for a moment by a child another test forks, and refuse the
    // command below (`DirectoryLocked`).
    let cluster = Cluster::open_read_only(dir.path(), ClusterConfig::default())?;
    let overrides = cluster.topic("t")?.overrides();
    assert_eq!(overrides.get("segment.bytes"), Some("65536"));
    assert_eq!(overrides.get("retention.ms"), None);
    cluster.close()?;
    drop(cluster);
    let out = text(
        dir.path(),
        &["alter-config", "t", "--delete", "segment.bytes"],
    )?;
    assert!(
        out.starts_with("Altered the configs of topic t.\n"),
        "{out}"
    );
    assert!(out.contains("Configs: max.message.bytes=2048\n"), "{out}");
    Ok(())
}

#[test]
fn add_partitions_and_delete() -> TestResult {
    let dir = tempfile::tempdir()?;
    text(dir.path(), &["create", "t", "--partitions", "2"])?;
    text(dir.path(), &["create", "u", "--partitions", "1"])?;
    let added = json(dir.path(), &["add-partitions", "t", "--total", "5"])?;
    assert_eq!(added["action"], "partitions-added");
    assert_eq!(topic_of(&added)["partition_count"], 5);
    assert_eq!(
        topic_of(&json(dir.path(), &["describe", "t"])?)["partitions"]
            .as_array()
            .ok_or("partitions")?
            .len(),
        5
    );
    let deleted = json(dir.path(), &["delete", "t"])?;
    assert_eq!(deleted["action"], "deleted");
    assert_eq!(deleted["deleted"], "t");
    assert_eq!(text(dir.path(), &["list"])?, "u\n");
    let out = text(dir.path(), &["delete", "u"])?;
    assert_eq!(out, "Deleted topic u.\n");
    assert_eq!(text(dir.path(), &["list"])?, "");
    Ok(())
}

#[test]
fn bad_input_exits_2_with_a_plain_message_and_changes_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    text(
        dir.path(),
        &[
            "create",
            "t",
            "--partitions",
            "2",
            "--config",
            "retention.ms=1000",
        ],
    )?;
    let before = metadata(dir.path())?;
    let described = json(dir.path(), &["describe", "t"])?;
    let cases: [(&[&str], &str); 12] = [
        (&["alter-config", "t", "--set", "no.such=1"], "no.such"),
        (
            &["alter-config", "t", "--set", "retention.ms=soon"],
            "retention.ms",
        ),
        (
            &[
                "alter-config",
                "t",
                "--set",
                "retention.ms=5",
                "--delete",
                "bogus",
            ],
            "bogus",
        ),
        (&["alter-config", "t", "--set", "retention.ms"], "KEY=VALUE"),
        (&["alter-config", "t"], "at least one"),
        (&["alter-config", "nope", "--set", "retention.ms=5"], "nope"),
        (&["describe", "nope"], "nope"),
        (&["delete", "nope"], "nope"),
        (&["add-partitions", "nope", "--total", "3"], "nope"),
        (&["add-partitions", "t", "--total", "1"], "must be larger"),
        (&["create", "t", "--partitions", "1"], "exists"),
        (
            &[
                "create",
                "x",
                "--partitions",
                "1",
                "--config",
                "segment.bytes=1",
            ],
            "segment.bytes",
        ),
    ];
    for (args, named) in cases {
        let message = refused(dir.path(), args)?;
        assert!(message.contains(named), "{args:?}: {message}");
    }
    assert_eq!(metadata(dir.path())?, before);
    assert_eq!(json(dir.path(), &["describe", "t"])?, described);
    assert_eq!(text(dir.path(), &["list"])?, "t\n");
    // Not a data directory at all.
    let missing = dir.path().join("missing");
    let message = refused(&missing, &["list"])?;
    assert!(
        message.contains("is not a logbus data directory"),
        "{message}"
    );
    assert!(!missing.exists());
    Ok(())
}

#[test]
fn a_directory_held_open_is_refused_for_changes_and_read_without_changing_a_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    // A manual clock: the holder's timers (checkpoints, flushes) stay
    // still while the files are compared.
    let clock = std::sync::Arc::new(logbus::ManualClock::new(1_000));
    let config = ClusterConfig::builder().clock(clock).build()?;
    let cluster = Cluster::open(dir.path(), config)?;
    cluster.create_topic(NewTopic::new("t", 1))?;
    let producer = Producer::new(&cluster, ProducerConfig::default())?;
    for i in 0..10 {
        drop(producer.send(ProducerRecord::new("t", format!("v{i}")))?);
    }
    producer.flush()?;
    for args in [
        &["alter-config", "t", "--set", "retention.ms=5"][..],
        &["delete", "t"],
        &["create", "u", "--partitions", "1"],
    ] {
        let message = refused(dir.path(), args)?;
        assert!(
            message.contains("is open in another process"),
            "{args:?}: {message}"
        );
    }
    // list and describe read a view that takes no lock and changes no byte.
    let before = every_file(dir.path())?;
    assert_eq!(text(dir.path(), &["list"])?, "t\n");
    let described = json(dir.path(), &["describe", "t"])?;
    assert_eq!(
        topic_of(&described)["partitions"][0]["log_end_offset"],
        10,
        "{described}"
    );
    assert_eq!(every_file(dir.path())?, before);
    // Nothing changed under the cluster holding it.
    assert_eq!(cluster.list_topics(), ["t"]);
    assert_eq!(cluster.topic("t")?.overrides().entries().count(), 0);
    drop(producer);
    cluster.close()?;
    drop(cluster);
    assert_eq!(text(dir.path(), &["list"])?, "t\n");
    Ok(())
}
