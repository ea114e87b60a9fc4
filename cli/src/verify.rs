//! `logbus verify DIR`: a read-only scan of a whole data directory.
//!
//! The layout is the one `Cluster::open` makes (`docs/format.md` §6): the
//! root's `meta.properties`, metadata log and checkpoint, and broker
//! directories holding partition directories. Rather than assume where the
//! brokers sit, the scan walks the tree: a directory holding 20-digit
//! segment files is a partition log; checkpoint and properties files are
//! recognised by name wherever they are. So `DIR` may also be one broker
//! directory, or one partition directory.
//!
//! Files are opened read-only (`File::open`, or the library's
//! `inspect::ReadOnlyStorage`); no lock is taken and no byte is written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use logbus::Error;
use logbus::inspect;
use serde::Serialize;

use crate::progress;
use crate::scan::{self, Damage, Records};

/// How deep below `DIR` the scan looks: root, broker, partition and a
/// spare level for brokers placed in a subdirectory.
const MAX_DEPTH: usize = 4;

/// What was checked, by kind.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Checked {
    pub(crate) partition_dirs: usize,
    pub(crate) segments: usize,
    pub(crate) batches: usize,
    pub(crate) offset_indexes: usize,
    pub(crate) time_indexes: usize,
    pub(crate) txn_indexes: usize,
    pub(crate) producer_snapshots: usize,
    pub(crate) offset_checkpoints: usize,
    pub(crate) leader_epoch_checkpoints: usize,
    pub(crate) partition_metadata: usize,
    pub(crate) meta_properties: usize,
}

/// The report of `verify`.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) dir: PathBuf,
    pub(crate) clean: bool,
    pub(crate) checked: Checked,
    pub(crate) damage: Vec<Damage>,
    /// Things seen and left alone (directories being deleted, files of an
    /// unfinished compaction), which are not damage.
    pub(crate) skipped: Vec<String>,
}

/// Scans `dir`.
pub(crate) fn verify(dir: &Path) -> Result<Report, String> {
    if !dir.is_dir() {
        return Err(format!("{}: not a directory", dir.display()));
    }
    let mut report = Report {
        dir: dir.to_path_buf(),
        clean: true,
        checked: Checked::default(),
        damage: Vec::new(),
        skipped: Vec::new(),
    };
    let bar = progress::bytes(progress::total_bytes(dir, "log", MAX_DEPTH), "verifying");
    walk(dir, 0, &mut report, &bar)?;
    bar.finish_and_clear();
    report.clean = report.damage.is_empty();
    Ok(report)
}

fn list(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut entries = std::fs::read_dir(dir)
        .and_then(|rd| {
            rd.map(|e| e.map(|e| e.path()))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    entries.sort();
    Ok(entries)
}

fn name_of(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

fn walk(dir: &Path, depth: usize, report: &mut Report, bar: &ProgressBar) -> Result<(), String> {
    let entries = list(dir)?;
    let mut segments: BTreeMap<u64, PathBuf> = BTreeMap::new();
    for path in &entries {
        let name = name_of(path);
        // symlink_metadata: a link is not followed out of the directory.
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            continue;
        };
        if meta.is_dir() {
            if name.ends_with("-delete") || name.ends_with(".rebuilding") {
                report
                    .skipped
                    .push(format!("{}: being removed or rebuilt", path.display()));
            } else if depth < MAX_DEPTH {
                walk(path, depth + 1, report, bar)?;
            }
            continue;
        }
        if !meta.is_file() {
            continue;
        }
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let base = inspect::segment_base_offset(path);
        match (extension, base) {
            ("log", Some(base)) => {
                segments.insert(base, path.clone());
            }
            // Checked with their .log in check_partition.
            ("index" | "timeindex", Some(_)) if !path.with_extension("log").is_file() => {
                report.skipped.push(format!(
                    "{}: an index without its .log (recovery rebuilds or removes it)",
                    path.display()
                ));
            }
            ("txnindex", Some(_)) => {
                let (_, damage) = scan::read_txn_index(path)?;
                report.checked.txn_indexes += 1;
                report.damage.extend(damage);
            }
            ("snapshot", Some(_)) => {
                report.checked.producer_snapshots += 1;
                note_corrupt(
                    inspect::read_producer_snapshot(path),
                    "producer snapshot",
                    report,
                )?;
            }
            ("cleaned" | "swap" | "spare" | "deleted", _) => report.skipped.push(format!(
                "{}: a file of an unfinished compaction, deletion or a spare segment",
                path.display()
            )),
            _ if name.ends_with("-offset-checkpoint") => {
                report.checked.offset_checkpoints += 1;
                check_offset_checkpoint(path, report)?;
            }
            _ if name == "leader-epoch-checkpoint" => {
                report.checked.leader_epoch_checkpoints += 1;
                report.damage.extend(check_leader_epochs(path)?);
            }
            _ if name == "partition.metadata" => {
                report.checked.partition_metadata += 1;
                report.damage.extend(check_partition_metadata(path)?);
            }
            _ if name == "meta.properties" => {
                report.checked.meta_properties += 1;
                report.damage.extend(check_meta_properties(path)?);
            }
            _ => {}
        }
    }
    if !segments.is_empty() {
        report.checked.partition_dirs += 1;
        check_partition(&segments, report, bar)?;
    }
    Ok(())
}

/// Every segment of one partition directory, in base offset order.
fn check_partition(
    segments: &BTreeMap<u64, PathBuf>,
    report: &mut Report,
    bar: &ProgressBar,
) -> Result<(), String> {
    // The offset the next segment must start at or above.
    let mut next: Option<(u64, &Path)> = None;
    for (&base, log_path) in segments {
        if let Some((next_offset, previous)) = next
            && base < next_offset
        {
            report.damage.push(Damage::new(
                log_path,
                0,
                format!(
                    "the segment's base offset {base} lies below the next offset {next_offset} \
                     of the segment before it ({})",
                    previous.display()
                ),
            ));
        }
        let log = scan::scan_log(log_path, Records::Validate, bar)?;
        report.checked.segments += 1;
        report.checked.batches += log.batches.len();
        report.damage.extend(log.damage.iter().cloned());
        let index = log_path.with_extension("index");
        if index.is_file() {
            report.checked.offset_indexes += 1;
            let check = scan::check_offset_index(&index, Some(&log))?;
            report.damage.extend(check.damage);
        }
        let time_index = log_path.with_extension("timeindex");
        if time_index.is_file() {
            report.checked.time_indexes += 1;
            let check = scan::check_time_index(&time_index, Some(&log))?;
            report.damage.extend(check.damage);
        }
        if let Some(n) = log.next_offset {
            next = Some((n, log_path));
        }
    }
    Ok(())
}

fn check_offset_checkpoint(path: &Path, report: &mut Report) -> Result<(), String> {
    note_corrupt(
        inspect::read_offset_checkpoint(path),
        "offset checkpoint",
        report,
    )
}

/// Notes a file that does not parse as `what` as damage at the position
/// the parser gave; any other failure (the file cannot be read) is an error.
fn note_corrupt<T>(read: logbus::Result<T>, what: &str, report: &mut Report) -> Result<(), String> {
    match read {
        Ok(_) => Ok(()),
        Err(Error::Corrupt {
            path,
            position,
            kind,
            ..
        }) => {
            report.damage.push(Damage::new(
                &path,
                position,
                format!("not a valid {what}: {kind}"),
            ));
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

fn read_text(path: &Path) -> Result<Result<String, Damage>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(String::from_utf8(bytes)
        .map_err(|e| Damage::new(path, e.utf8_error().valid_up_to() as u64, "not UTF-8 text")))
}

/// The byte position of line `n` (0-based) of `text`.
fn line_position(text: &str, n: usize) -> u64 {
    text.split_inclusive('\n')
        .take(n)
        .map(str::len)
        .sum::<usize>() as u64
}

/// Kafka's `leader-epoch-checkpoint`: `0`, a count, then `<epoch> <start
/// offset>` lines with both columns strictly increasing.
fn check_leader_epochs(path: &Path) -> Result<Vec<Damage>, String> {
    let text = match read_text(path)? {
        Ok(text) => text,
        Err(damage) => return Ok(vec![damage]),
    };
    let bad = |line: usize, problem: String| {
        Ok(vec![Damage::new(
            path,
            line_position(&text, line),
            format!("leader epoch checkpoint, line {}: {problem}", line + 1),
        )])
    };
    let lines: Vec<&str> = text.lines().collect();
    if lines.first().map(|l| l.trim()) != Some("0") {
        return bad(0, "the version line is not 0".into());
    }
    let Some(count) = lines.get(1).and_then(|l| l.trim().parse::<usize>().ok()) else {
        return bad(1, "no count line".into());
    };
    let entries = &lines[2..];
    let mut previous: Option<(i32, i64)> = None;
    for (i, line) in entries.iter().enumerate() {
        if i >= count {
            if line.trim().is_empty() {
                continue;
            }
            return bad(i + 2, format!("more entries than the count ({count})"));
        }
        let mut fields = line.split(' ');
        let parsed = match (fields.next(), fields.next(), fields.next()) {
            (Some(e), Some(o), None) => e.parse::<i32>().ok().zip(o.parse::<i64>().ok()),
            _ => None,
        };
        let Some((epoch, offset)) = parsed.filter(|&(e, o)| e >= 0 && o >= 0) else {
            return bad(i + 2, "not `<epoch> <start offset>`".into());
        };
        if let Some((pe, po)) = previous
            && (epoch <= pe || offset <= po)
        {
            return bad(
                i + 2,
                format!("epoch {epoch} at {offset} does not follow epoch {pe} at {po}"),
            );
        }
        previous = Some((epoch, offset));
    }
    if entries.len() < count {
        return bad(
            lines.len(),
            format!("fewer entries than the count ({count})"),
        );
    }
    Ok(Vec::new())
}

/// Kafka's `partition.metadata`: `version: 0` and `topic_id: <22-character
/// base64url id>`.
fn check_partition_metadata(path: &Path) -> Result<Vec<Damage>, String> {
    let text = match read_text(path)? {
        Ok(text) => text,
        Err(damage) => return Ok(vec![damage]),
    };
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
    };
    let version_ok = value("version:").as_deref() == Some("0");
    let id_ok = value("topic_id:").is_some_and(|id| {
        id.len() == 22
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    Ok(if version_ok && id_ok {
        Vec::new()
    } else {
        vec![Damage::new(
            path,
            0,
            "partition.metadata is not `version: 0` and a 22-character `topic_id`",
        )]
    })
}

/// `meta.properties`: Java-properties text with `version` and `cluster.id`.
fn check_meta_properties(path: &Path) -> Result<Vec<Damage>, String> {
    let text = match read_text(path)? {
        Ok(text) => text,
        Err(damage) => return Ok(vec![damage]),
    };
    let has = |key: &str| {
        text.lines().filter(|l| !l.starts_with('#')).any(|l| {
            l.split_once('=')
                .is_some_and(|(k, v)| k.trim() == key && !v.trim().is_empty())
        })
    };
    Ok(if has("version") && has("cluster.id") {
        Vec::new()
    } else {
        vec![Damage::new(
            path,
            0,
            "meta.properties lacks `version` or `cluster.id`",
        )]
    })
}

/// The human-readable text of a report.
pub(crate) fn render(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let c = &report.checked;
    let _ = writeln!(out, "Verifying {}", report.dir.display());
    let _ = writeln!(
        out,
        "checked {} partition directories: {} segments ({} batches), {} offset indexes, \
         {} time indexes, {} transaction indexes, {} producer snapshots; {} offset \
         checkpoints, {} leader epoch checkpoints, {} partition.metadata, {} meta.properties",
        c.partition_dirs,
        c.segments,
        c.batches,
        c.offset_indexes,
        c.time_indexes,
        c.txn_indexes,
        c.producer_snapshots,
        c.offset_checkpoints,
        c.leader_epoch_checkpoints,
        c.partition_metadata,
        c.meta_properties,
    );
    for s in &report.skipped {
        let _ = writeln!(out, "skipped {s}");
    }
    for d in &report.damage {
        let _ = writeln!(out, "{d}");
    }
    if report.clean {
        let _ = writeln!(out, "no damage found");
    } else {
        let _ = writeln!(out, "{} damaged places found", report.damage.len());
    }
    out
}
