//! `logbus topics`: list, describe, create, delete and alter topics of a
//! data directory (as Kafka's `kafka-topics.sh` and `kafka-configs.sh`).
//!
//! Every command opens the directory itself (so no other process may hold
//! it), does one thing and closes it. Bad input (an unknown topic or
//! config, a bad value) is refused with the library's message before
//! anything is stored.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use logbus::{AlterConfigOp, Cluster, NewTopic, TopicConfig, TopicDescription};
use serde::Serialize;

use crate::open::{open_for_reading, open_for_writing};

/// `logbus topics --dir DIR <command>`.
#[derive(Debug, Args)]
pub(crate) struct TopicsArgs {
    /// The cluster's data directory.
    #[arg(long)]
    dir: PathBuf,
    #[command(subcommand)]
    command: TopicsCommand,
}

#[derive(Debug, Subcommand)]
enum TopicsCommand {
    /// List the user topics (internal ones are not listed).
    List,
    /// Describe one topic, or every user topic: its config overrides, and
    /// per partition the leader, replicas, ISR, log start offset, high
    /// watermark, log end offset and size.
    Describe {
        /// The topic (all user topics without it).
        topic: Option<String>,
    },
    /// Create a topic.
    Create {
        /// The topic's name.
        topic: String,
        /// The number of partitions.
        #[arg(long)]
        partitions: u32,
        /// Replicas of each partition (the cluster's default without it).
        #[arg(long)]
        replication_factor: Option<u16>,
        /// A topic config, KEY=VALUE (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// Delete a topic and all its data.
    Delete {
        /// The topic's name.
        topic: String,
    },
    /// Change a topic's configs: set some, delete (revert to the default)
    /// others, in one stored change.
    AlterConfig {
        /// The topic's name.
        topic: String,
        /// Set a config, KEY=VALUE (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Delete the topic's value of a config (repeatable).
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
    /// Raise a topic's partition count.
    AddPartitions {
        /// The topic's name.
        topic: String,
        /// The new total number of partitions.
        #[arg(long)]
        total: u32,
    },
}

/// One partition, as `describe` prints it.
#[derive(Debug, Serialize)]
struct PartitionOut {
    partition: u32,
    leader: Option<u32>,
    leader_epoch: i32,
    replicas: Vec<u32>,
    isr: Vec<u32>,
    /// `None` when no leader answers (the partition is offline).
    log_start_offset: Option<u64>,
    high_watermark: Option<u64>,
    log_end_offset: Option<u64>,
    size_bytes: Option<u64>,
}

/// One topic, as `describe` prints it.
#[derive(Debug, Serialize)]
struct TopicOut {
    name: String,
    id: String,
    internal: bool,
    partition_count: usize,
    replication_factor: usize,
    /// Only the configs set for the topic.
    configs: BTreeMap<String, String>,
    partitions: Vec<PartitionOut>,
}

#[derive(Debug, Serialize)]
struct ListOut {
    topics: Vec<String>,
}

#[derive(Debug, Serialize)]
struct DescribeOut {
    topics: Vec<TopicOut>,
}

#[derive(Debug, Serialize)]
struct ChangedOut {
    /// `created`, `deleted`, `altered` or `partitions-added`.
    action: &'static str,
    /// The topic as it is after the change (none after a deletion).
    topic: Option<TopicOut>,
    /// The deleted topic's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    deleted: Option<String>,
}

/// Splits `KEY=VALUE` (at the first `=`).
fn key_value(flag: &str, raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.to_string()))
        }
        _ => Err(format!("{flag} expects KEY=VALUE, got {raw:?}")),
    }
}

fn describe_one(cluster: &Cluster, name: &str) -> Result<TopicOut, String> {
    let topic = cluster.topic(name).map_err(|e| e.to_string())?;
    let TopicDescription {
        name,
        id,
        internal,
        partitions,
        ..
    } = topic.describe().map_err(|e| e.to_string())?;
    let configs = topic
        .overrides()
        .entries()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut out = Vec::with_capacity(partitions.len());
    for p in partitions {
        // Offsets come from the leader; an offline partition has none.
        let handle = topic.partition(p.partition).ok();
        let ask = |f: &dyn Fn(&logbus::Partition) -> logbus::Result<u64>| {
            handle.as_ref().and_then(|h| f(h).ok())
        };
        out.push(PartitionOut {
            partition: p.partition,
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            log_start_offset: ask(&|h| h.log_start_offset()),
            high_watermark: ask(&|h| h.high_watermark()),
            log_end_offset: ask(&|h| h.log_end_offset()),
            size_bytes: ask(&|h| h.size_bytes()),
            replicas: p.replicas,
            isr: p.isr,
        });
    }
    Ok(TopicOut {
        name,
        id,
        internal,
        partition_count: out.len(),
        replication_factor: out.first().map_or(0, |p| p.replicas.len()),
        configs,
        partitions: out,
    })
}

fn list_ids(ids: &[u32]) -> String {
    if ids.is_empty() {
        return "-".to_string();
    }
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

fn opt<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// Left-aligned columns, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut text = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        text.push_str(line.join("  ").trim_end());
        text.push('\n');
    }
    text
}

fn render_topic(topic: &TopicOut) -> String {
    let configs = if topic.configs.is_empty() {
        "-".to_string()
    } else {
        topic
            .configs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut text = format!(
        "Topic: {}  TopicId: {}  PartitionCount: {}  ReplicationFactor: {}  Configs: {}\n",
        topic.name, topic.id, topic.partition_count, topic.replication_factor, configs
    );
    let rows: Vec<Vec<String>> = topic
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.partition.to_string(),
                opt(p.leader),
                list_ids(&p.replicas),
                list_ids(&p.isr),
                opt(p.log_start_offset),
                opt(p.high_watermark),
                opt(p.log_end_offset),
                opt(p.size_bytes),
            ]
        })
        .collect();
    text.push_str(&table(
        &[
            "PARTITION",
            "LEADER",
            "REPLICAS",
            "ISR",
            "LOG-START",
            "HIGH-WATERMARK",
            "LOG-END",
            "SIZE-BYTES",
        ],
        &rows,
    ));
    text
}

/// Closes the cluster, reporting a failure to close as the command's.
fn closed<T>(cluster: &Cluster, result: Result<T, String>) -> Result<T, String> {
    let close = cluster
        .close()
        .map_err(|e| format!("closing {}: {e}", cluster.dir().display()));
    let value = result?;
    close?;
    Ok(value)
}

/// Runs `logbus topics ...`; prints text, or one JSON document with `json`.
pub(crate) fn run(args: TopicsArgs, json: bool) -> Result<(), String> {
    let TopicsArgs { dir, command } = args;
    match command {
        TopicsCommand::List => {
            let cluster = open_for_reading(&dir, None)?;
            let topics = cluster.list_topics();
            closed(&cluster, Ok(()))?;
            if json {
                crate::print_json(&ListOut { topics })
            } else {
                let mut text = String::new();
                for t in topics {
                    text.push_str(&t);
                    text.push('\n');
                }
                crate::print(&text)
            }
        }
        TopicsCommand::Describe { topic } => {
            let cluster = open_for_reading(&dir, None)?;
            let names = topic.map_or_else(|| cluster.list_topics(), |t| vec![t]);
            let described = names.iter().map(|n| describe_one(&cluster, n)).collect();
            let topics: Vec<TopicOut> = closed(&cluster, described)?;
            if json {
                crate::print_json(&DescribeOut { topics })
            } else {
                let text: Vec<String> = topics.iter().map(render_topic).collect();
                crate::print(&text.join("\n"))
            }
        }
        TopicsCommand::Create {
            topic,
            partitions,
            replication_factor,
            configs,
        } => {
            // Checked before the directory is opened.
            let mut config = TopicConfig::new();
            for raw in &configs {
                let (key, value) = key_value("--config", raw)?;
                config = config.set(&key, value).map_err(|e| e.to_string())?;
            }
            let mut new = NewTopic::new(topic.clone(), partitions).config(config);
            if let Some(factor) = replication_factor {
                new = new.replication_factor(factor);
            }
            let cluster = open_for_writing(&dir, None)?;
            let result = cluster
                .create_topic(new)
                .map_err(|e| e.to_string())
                .and_then(|_| describe_one(&cluster, &topic));
            let out = closed(&cluster, result)?;
            changed(
                json,
                "created",
                Some(out),
                None,
                &format!("Created topic {topic}."),
            )
        }
        TopicsCommand::Delete { topic } => {
            let cluster = open_for_writing(&dir, None)?;
            let result = cluster.delete_topic(&topic).map_err(|e| e.to_string());
            closed(&cluster, result)?;
            changed(
                json,
                "deleted",
                None,
                Some(topic.clone()),
                &format!("Deleted topic {topic}."),
            )
        }
        TopicsCommand::AlterConfig { topic, set, delete } => {
            let mut ops = Vec::with_capacity(set.len() + delete.len());
            for raw in &set {
                let (key, value) = key_value("--set", raw)?;
                ops.push(AlterConfigOp::set(key, value));
            }
            ops.extend(delete.iter().map(|k| AlterConfigOp::delete(k.trim())));
            if ops.is_empty() {
                return Err(
                    "alter-config needs at least one --set KEY=VALUE or --delete KEY".into(),
                );
            }
            let cluster = open_for_writing(&dir, None)?;
            let result = cluster
                .alter_topic_config(&topic, &ops)
                .map_err(|e| e.to_string())
                .and_then(|()| describe_one(&cluster, &topic));
            let out = closed(&cluster, result)?;
            changed(
                json,
                "altered",
                Some(out),
                None,
                &format!("Altered the configs of topic {topic}."),
            )
        }
        TopicsCommand::AddPartitions { topic, total } => {
            let cluster = open_for_writing(&dir, None)?;
            let result = cluster
                .create_partitions(&topic, total)
                .map_err(|e| e.to_string())
                .and_then(|()| describe_one(&cluster, &topic));
            let out = closed(&cluster, result)?;
            changed(
                json,
                "partitions-added",
                Some(out),
                None,
                &format!("Topic {topic} now has {total} partitions."),
            )
        }
    }
}

/// Prints the outcome of a change: `message` and the topic as it is now,
/// or the JSON document.
fn changed(
    json: bool,
    action: &'static str,
    topic: Option<TopicOut>,
    deleted: Option<String>,
    message: &str,
) -> Result<(), String> {
    if json {
        return crate::print_json(&ChangedOut {
            action,
            topic,
            deleted,
        });
    }
    let mut text = format!("{message}\n");
    if let Some(topic) = &topic {
        text.push_str(&render_topic(topic));
    }
    crate::print(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_splits_at_the_first_equals_sign() {
        assert_eq!(
            key_value("--set", "a.b=c=d").unwrap(),
            ("a.b".to_string(), "c=d".to_string())
        );
        assert_eq!(
            key_value("--set", "k=").unwrap(),
            ("k".to_string(), String::new())
        );
        for bad in ["k", "=v", ""] {
            let err = key_value("--set", bad).unwrap_err();
            assert!(err.contains("--set expects KEY=VALUE"), "{err}");
        }
    }

    #[test]
    fn tables_align_their_columns() {
        let text = table(
            &["A", "LONG-NAME"],
            &[vec!["1".into(), "x".into()], vec!["100".into(), "y".into()]],
        );
        assert_eq!(text, "A    LONG-NAME\n1    x\n100  y\n");
    }
}
