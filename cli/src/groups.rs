//! `logbus groups list|describe|reset-offsets|delete`: Kafka's
//! kafka-consumer-groups over a data directory.
//!
//! Group memberships live in the memory of the process that runs the
//! consumers, so a group seen from this command has no members: what it
//! shows and changes are the committed offsets in `__consumer_offsets`.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Subcommand};
use logbus::{Cluster, GroupDescription, GroupState, OffsetSpec, TopicPartition};
use serde::Serialize;

use crate::console::{check_partitions, with_cluster};
use crate::open;

/// The data directory, on every `groups` subcommand.
#[derive(Debug, Args)]
pub(crate) struct DirArg {
    /// The cluster directory.
    #[arg(long)]
    dir: PathBuf,
}

/// `logbus groups ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum GroupsCommand {
    /// The groups that have members or committed offsets.
    List(DirArg),
    /// A group's state, members, and per partition its committed offset,
    /// log end offset and lag.
    Describe {
        #[command(flatten)]
        dir: DirArg,
        /// The group id.
        group: String,
    },
    /// Move a group's committed offsets; prints the new offsets and
    /// changes nothing unless --execute is given.
    ResetOffsets(ResetArgs),
    /// Delete a group's committed offsets.
    Delete {
        #[command(flatten)]
        dir: DirArg,
        /// The group id.
        group: String,
    },
}

/// `logbus groups reset-offsets`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("scope").required(true).args(["topics", "all_topics"])))]
#[command(group(ArgGroup::new("spec").required(true).args([
    "to_earliest", "to_latest", "to_offset", "shift_by", "to_datetime",
])))]
pub(crate) struct ResetArgs {
    #[command(flatten)]
    dir: DirArg,
    /// The group id.
    group: String,
    /// A topic, or `TOPIC:P1,P2` for some of its partitions (repeatable).
    #[arg(long = "topic", value_name = "TOPIC[:PARTITIONS]")]
    topics: Vec<String>,
    /// Every partition the group has a committed offset for.
    #[arg(long)]
    all_topics: bool,
    /// To the log start offset.
    #[arg(long)]
    to_earliest: bool,
    /// To the end of the log (nothing left to consume).
    #[arg(long)]
    to_latest: bool,
    /// To this offset (moved into the log's range if outside).
    #[arg(long, value_name = "N")]
    to_offset: Option<u64>,
    /// By N from the committed offset (negative: back), kept in the log's
    /// range.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    shift_by: Option<i64>,
    /// To the first record at or after this time:
    /// `YYYY-MM-DDTHH:MM:SS[.sss]` with an optional `Z` or `±HH:MM` (UTC
    /// when none).
    #[arg(long, value_name = "DATETIME", value_parser = parse_datetime)]
    to_datetime: Option<i64>,
    /// Only print the new offsets (the default).
    #[arg(long, conflicts_with = "execute")]
    dry_run: bool,
    /// Commit the new offsets.
    #[arg(long)]
    execute: bool,
}

/// `logbus groups`.
pub(crate) fn run(command: &GroupsCommand, json: bool) -> Result<(), String> {
    match command {
        GroupsCommand::List(dir) => {
            let cluster = open::open_for_reading(&dir.dir, None)?;
            let groups = with_cluster(cluster, |c| Ok(c.list_groups()))?;
            if json {
                crate::print_json(&serde_json::json!({ "groups": groups }))
            } else {
                crate::print(&groups.iter().map(|g| format!("{g}\n")).collect::<String>())
            }
        }
        GroupsCommand::Describe { dir, group } => {
            let cluster = open::open_for_reading(&dir.dir, None)?;
            let description = with_cluster(cluster, |c| existing(c, group))?;
            if json {
                crate::print_json(&DescribeJson::from(&description))
            } else {
                crate::print(&render_description(&description))
            }
        }
        GroupsCommand::ResetOffsets(args) => reset(args, json),
        GroupsCommand::Delete { dir, group } => {
            let cluster = open::open_for_writing(&dir.dir, None)?;
            let deleted = with_cluster(cluster, |c| {
                existing(c, group)?;
                c.delete_group(group)
                    .map_err(|e| format!("cannot delete group '{group}': {e}"))
            })?;
            if json {
                crate::print_json(&serde_json::json!({
                    "group_id": group,
                    "deleted_offsets": deleted,
                }))
            } else {
                crate::print(&format!(
                    "Deleted consumer group '{group}' ({deleted} committed offsets).\n"
                ))
            }
        }
    }
}

/// The group's description, or a plain message if it does not exist.
fn existing(cluster: &Cluster, group: &str) -> Result<GroupDescription, String> {
    if group.is_empty() {
        return Err("the group id must not be empty".into());
    }
    let description = cluster
        .describe_group(group)
        .map_err(|e| format!("cannot describe group '{group}': {e}"))?;
    if description.state == GroupState::Dead {
        return Err(format!("consumer group '{group}' does not exist"));
    }
    Ok(description)
}

/// A partition row of `describe --json`.
#[derive(Debug, Serialize)]
struct OffsetJson<'a> {
    topic: &'a str,
    partition: u32,
    committed_offset: Option<u64>,
    metadata: Option<&'a str>,
    log_end_offset: u64,
    lag: Option<u64>,
    consumer_id: Option<&'a str>,
}

/// A member of `describe --json`.
#[derive(Debug, Serialize)]
struct MemberJson<'a> {
    member_id: &'a str,
    group_instance_id: Option<&'a str>,
    client_id: &'a str,
    assignment: Vec<PartitionJson<'a>>,
}

/// A partition in JSON.
#[derive(Debug, Serialize)]
struct PartitionJson<'a> {
    topic: &'a str,
    partition: u32,
}

/// `describe --json`.
#[derive(Debug, Serialize)]
struct DescribeJson<'a> {
    group_id: &'a str,
    state: &'static str,
    protocol_type: &'a str,
    assignor: Option<&'a str>,
    generation: i32,
    members: Vec<MemberJson<'a>>,
    offsets: Vec<OffsetJson<'a>>,
}

/// The member a partition is assigned to.
fn owner<'a>(
    d: &'a GroupDescription,
    tp: &TopicPartition,
) -> Option<&'a logbus::MemberDescription> {
    d.members.iter().find(|m| m.assignment.contains(tp))
}

impl<'a> From<&'a GroupDescription> for DescribeJson<'a> {
    fn from(d: &'a GroupDescription) -> Self {
        DescribeJson {
            group_id: &d.group_id,
            state: d.state.name(),
            protocol_type: &d.protocol_type,
            assignor: d.assignor.as_deref(),
            generation: d.generation,
            members: d
                .members
                .iter()
                .map(|m| MemberJson {
                    member_id: &m.member_id,
                    group_instance_id: m.group_instance_id.as_deref(),
                    client_id: &m.client_id,
                    assignment: m
                        .assignment
                        .iter()
                        .map(|tp| PartitionJson {
                            topic: &tp.topic,
                            partition: tp.partition,
                        })
                        .collect(),
                })
                .collect(),
            offsets: d
                .offsets
                .iter()
                .map(|o| OffsetJson {
                    topic: &o.partition.topic,
                    partition: o.partition.partition,
                    committed_offset: o.committed.as_ref().map(|c| c.offset),
                    metadata: o.committed.as_ref().map(|c| c.metadata.as_str()),
                    log_end_offset: o.log_end_offset,
                    lag: o.lag,
                    consumer_id: owner(d, &o.partition).map(|m| m.member_id.as_str()),
                })
                .collect(),
        }
    }
}

/// Left-aligned columns, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}  "));
            }
        }
        text.push('\n');
        text
    };
    let mut text = line(header.to_vec());
    for row in rows {
        text.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    text
}

fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn render_description(d: &GroupDescription) -> String {
    let mut text = if d.members.is_empty() {
        format!(
            "Consumer group '{}' has no active members (state {}).\n\n",
            d.group_id, d.state
        )
    } else {
        format!(
            "Consumer group '{}': state {}, generation {}, {} members.\n\n",
            d.group_id,
            d.state,
            d.generation,
            d.members.len()
        )
    };
    let rows: Vec<Vec<String>> = d
        .offsets
        .iter()
        .map(|o| {
            let member = owner(d, &o.partition);
            vec![
                d.group_id.clone(),
                o.partition.topic.clone(),
                o.partition.partition.to_string(),
                or_dash(o.committed.as_ref().map(|c| c.offset)),
                o.log_end_offset.to_string(),
                or_dash(o.lag),
                or_dash(member.map(|m| &m.member_id)),
                or_dash(member.map(|m| &m.client_id)),
            ]
        })
        .collect();
    text.push_str(&table(
        &[
            "GROUP",
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "CONSUMER-ID",
            "CLIENT-ID",
        ],
        &rows,
    ));
    if !d.members.is_empty() {
        let rows: Vec<Vec<String>> = d
            .members
            .iter()
            .map(|m| {
                vec![
                    m.member_id.clone(),
                    or_dash(m.group_instance_id.as_ref()),
                    m.client_id.clone(),
                    m.assignment.len().to_string(),
                    m.assignment
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                ]
            })
            .collect();
        text.push('\n');
        text.push_str(&table(
            &[
                "CONSUMER-ID",
                "GROUP-INSTANCE-ID",
                "CLIENT-ID",
                "#PARTITIONS",
                "ASSIGNMENT",
            ],
            &rows,
        ));
    }
    text
}

/// A row of reset-offsets' report.
#[derive(Debug, Serialize)]
struct ResetRow {
    topic: String,
    partition: u32,
    previous_offset: Option<u64>,
    new_offset: u64,
}

/// reset-offsets' report.
#[derive(Debug, Serialize)]
struct ResetReport {
    group_id: String,
    executed: bool,
    offsets: Vec<ResetRow>,
}

fn reset(args: &ResetArgs, json: bool) -> Result<(), String> {
    let group = args.group.as_str();
    if group.is_empty() {
        return Err("the group id must not be empty".into());
    }
    let target = match (
        args.to_earliest,
        args.to_latest,
        args.to_offset,
        args.shift_by,
        args.to_datetime,
    ) {
        (true, ..) => OffsetSpec::Earliest,
        (_, true, ..) => OffsetSpec::Latest,
        (_, _, Some(n), ..) => OffsetSpec::Offset(n),
        (_, _, _, Some(n), _) => OffsetSpec::ShiftBy(n),
        (_, _, _, _, Some(ts)) => OffsetSpec::Timestamp(ts),
        _ => return Err("name where to reset the offsets (--to-earliest, ...)".into()),
    };
    let scopes = args
        .topics
        .iter()
        .map(|t| parse_scope(t))
        .collect::<Result<Vec<_>, _>>()?;
    if !args.execute && !args.dry_run {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"logbus: a dry run: nothing is changed without --execute\n",
        );
    }
    // A dry run reads through the read-only view: it works while another
    // process holds the directory.
    let cluster = if args.execute {
        open::open_for_writing(&args.dir.dir, None)?
    } else {
        open::open_for_reading(&args.dir.dir, None)?
    };
    let offsets = with_cluster(cluster, |cluster| {
        let committed = cluster
            .list_group_offsets(group)
            .map_err(|e| format!("cannot read group '{group}': {e}"))?;
        let partitions = if args.all_topics {
            if committed.is_empty() {
                return Err(format!(
                    "consumer group '{group}' has no committed offsets \
                     (name partitions with --topic)"
                ));
            }
            committed.keys().cloned().collect()
        } else {
            let mut partitions = Vec::new();
            for (topic, some) in &scopes {
                let count = check_partitions(cluster, topic, some)?;
                let chosen: Vec<u32> = if some.is_empty() {
                    (0..count).collect()
                } else {
                    some.clone()
                };
                partitions.extend(chosen.into_iter().map(|p| TopicPartition::new(topic, p)));
            }
            partitions.sort();
            partitions.dedup();
            partitions
        };
        let planned = if args.execute {
            cluster.reset_group_offsets(group, &partitions, target)
        } else {
            cluster.reset_group_offsets_dry_run(group, &partitions, target)
        }
        .map_err(|e| format!("cannot reset group '{group}''s offsets: {e}"))?;
        let rows: Vec<ResetRow> = planned
            .into_iter()
            .map(|(tp, new_offset)| ResetRow {
                previous_offset: committed.get(&tp).map(|c| c.offset),
                topic: tp.topic,
                partition: tp.partition,
                new_offset,
            })
            .collect();
        Ok(rows)
    })?;
    let report = ResetReport {
        group_id: group.to_string(),
        executed: args.execute,
        offsets,
    };
    if json {
        return crate::print_json(&report);
    }
    let rows: Vec<Vec<String>> = report
        .offsets
        .iter()
        .map(|r| {
            vec![
                group.to_string(),
                r.topic.clone(),
                r.partition.to_string(),
                or_dash(r.previous_offset),
                r.new_offset.to_string(),
            ]
        })
        .collect();
    crate::print(&table(
        &[
            "GROUP",
            "TOPIC",
            "PARTITION",
            "PREVIOUS-OFFSET",
            "NEW-OFFSET",
        ],
        &rows,
    ))
}

/// `TOPIC` or `TOPIC:P1,P2`.
fn parse_scope(text: &str) -> Result<(String, Vec<u32>), String> {
    let (topic, partitions) = match text.split_once(':') {
        None => (text, Vec::new()),
        Some((topic, list)) => {
            let partitions = list
                .split(',')
                .map(|p| {
                    p.trim()
                        .parse::<u32>()
                        .map_err(|_| format!("bad --topic '{text}': expected TOPIC or TOPIC:P1,P2"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            (topic, partitions)
        }
    };
    if topic.is_empty() {
        return Err(format!("bad --topic '{text}': the topic is empty"));
    }
    Ok((topic.to_string(), partitions))
}

/// `YYYY-MM-DDTHH:MM:SS[.sss][Z|±HH:MM]` as ms since the Unix epoch.
fn parse_datetime(text: &str) -> Result<i64, String> {
    let bad =
        || format!("expected YYYY-MM-DDTHH:MM:SS[.sss] with an optional Z or ±HH:MM, not '{text}'");
    let (date, rest) = text.split_once('T').ok_or_else(bad)?;
    let number = |s: &str, len: usize| -> Result<i64, String> {
        if s.len() == len && s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let d: Vec<&str> = date.split('-').collect();
    let [y, mo, da] = d.as_slice() else {
        return Err(bad());
    };
    let (year, month, day) = (number(y, 4)?, number(mo, 2)?, number(da, 2)?);
    // The zone: Z, +HH:MM, -HH:MM or none (UTC).
    let (time, offset_minutes) = if let Some(t) = rest.strip_suffix('Z') {
        (t, 0)
    } else if let Some(at) = rest.rfind(['+', '-']) {
        let (t, zone) = rest.split_at(at);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (h, m) = zone[1..].split_once(':').ok_or_else(bad)?;
        let (h, m) = (number(h, 2)?, number(m, 2)?);
        if h > 23 || m > 59 {
            return Err(bad());
        }
        (t, sign * (h * 60 + m))
    } else {
        (rest, 0)
    };
    let (hms, millis) = match time.split_once('.') {
        Some((hms, frac)) => (hms, number(frac, 3)?),
        None => (time, 0),
    };
    let t: Vec<&str> = hms.split(':').collect();
    let [h, mi, s] = t.as_slice() else {
        return Err(bad());
    };
    let (hour, minute, second) = (number(h, 2)?, number(mi, 2)?, number(s, 2)?);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 59 {
        return Err(bad());
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    let ms = seconds * 1_000 + millis;
    if ms < 0 {
        return Err(format!("'{text}' is before 1970"));
    }
    Ok(ms)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_parse_to_epoch_ms() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00"), Ok(0));
        assert_eq!(parse_datetime("1970-01-01T00:00:01.250Z"), Ok(1_250));
        assert_eq!(
            parse_datetime("2023-11-14T22:13:20.000Z"),
            Ok(1_700_000_000_000)
        );
        assert_eq!(
            parse_datetime("2023-11-15T00:13:20+02:00"),
            Ok(1_700_000_000_000)
        );
        assert_eq!(
            parse_datetime("2023-11-14T20:13:20-02:00"),
            Ok(1_700_000_000_000)
        );
        assert_eq!(parse_datetime("2024-02-29T00:00:00"), Ok(1_709_164_800_000));
        for bad in [
            "2023-02-29T00:00:00",
            "2023-13-01T00:00:00",
            "2023-11-14 22:13:20",
            "2023-11-14T24:00:00",
            "2023-11-14T22:13",
            "1969-12-31T23:59:59",
            "yesterday",
        ] {
            assert!(parse_datetime(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scopes_parse() {
        assert_eq!(parse_scope("orders"), Ok(("orders".into(), vec![])));
        assert_eq!(parse_scope("orders:0,2"), Ok(("orders".into(), vec![0, 2])));
        assert!(parse_scope("orders:x").is_err());
        assert!(parse_scope(":1").is_err());
    }
}
