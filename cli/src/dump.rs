//! `logbus dump-log FILE...`: kafka-dump-log over segment files.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::scan::{self, BatchInfo, Damage, IndexCheck, LogScan, Records};

/// What `dump-log` prints for one file.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Dumped {
    /// A `.log` file.
    Log {
        path: PathBuf,
        #[serde(flatten)]
        scan: LogScan,
    },
    /// A `.index` or `.timeindex` file.
    Index {
        path: PathBuf,
        #[serde(flatten)]
        check: IndexCheck,
    },
    /// A `.txnindex` file: the aborted transactions.
    TxnIndex {
        path: PathBuf,
        entries: Vec<AbortedTxn>,
        damage: Vec<Damage>,
    },
    /// A `.snapshot` file: the producers' state.
    Snapshot {
        path: PathBuf,
        producers: Vec<SnapshotProducer>,
        damage: Vec<Damage>,
    },
}

/// One aborted transaction of a `.txnindex` file.
#[derive(Debug, Serialize)]
pub(crate) struct AbortedTxn {
    producer_id: i64,
    first_offset: i64,
    last_offset: i64,
    last_stable_offset: i64,
}

/// One producer of a `.snapshot` file, with Kafka's -1 for what it lacks.
#[derive(Debug, Serialize)]
pub(crate) struct SnapshotProducer {
    producer_id: i64,
    producer_epoch: i16,
    last_sequence: i32,
    last_offset: i64,
    offset_delta: i32,
    timestamp: i64,
    coordinator_epoch: i32,
    current_txn_first_offset: i64,
}

impl Dumped {
    pub(crate) fn damage(&self) -> &[Damage] {
        match self {
            Dumped::Log { scan, .. } => &scan.damage,
            Dumped::Index { check, .. } => &check.damage,
            Dumped::TxnIndex { damage, .. } | Dumped::Snapshot { damage, .. } => damage,
        }
    }
}

/// The one JSON document `dump-log --json` prints.
#[derive(Debug, Serialize)]
pub(crate) struct DumpOutput<'a> {
    pub(crate) files: &'a [Dumped],
}

/// The options of `dump-log`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DumpOptions {
    pub(crate) print_data_log: bool,
    pub(crate) deep_iteration: bool,
}

/// Reads one file, as its extension says.
pub(crate) fn dump(
    path: &Path,
    options: DumpOptions,
    bar: &indicatif::ProgressBar,
) -> Result<Dumped, String> {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match extension {
        "log" => {
            // As kafka-dump-log: --print-data-log implies --deep-iteration.
            let records = if options.print_data_log {
                Records::Payload
            } else if options.deep_iteration {
                Records::List
            } else {
                Records::Skip
            };
            Ok(Dumped::Log {
                path: path.to_path_buf(),
                scan: scan::scan_log(path, records, bar)?,
            })
        }
        "index" => {
            let log = scan::sibling_log(path)?;
            Ok(Dumped::Index {
                path: path.to_path_buf(),
                check: scan::check_offset_index(path, log.as_ref())?,
            })
        }
        "timeindex" => {
            let log = scan::sibling_log(path)?;
            Ok(Dumped::Index {
                path: path.to_path_buf(),
                check: scan::check_time_index(path, log.as_ref())?,
            })
        }
        "txnindex" => {
            let (entries, damage) = scan::read_txn_index(path)?;
            Ok(Dumped::TxnIndex {
                path: path.to_path_buf(),
                entries: entries
                    .iter()
                    .map(|t| AbortedTxn {
                        producer_id: t.producer_id,
                        first_offset: t.first_offset,
                        last_offset: t.last_offset,
                        last_stable_offset: t.last_stable_offset,
                    })
                    .collect(),
                damage,
            })
        }
        "snapshot" => {
            let (producers, damage) = match logbus::inspect::read_producer_snapshot_entries(path) {
                Ok(entries) => (entries, Vec::new()),
                Err(logbus::Error::Corrupt { position, kind, .. }) => (
                    Vec::new(),
                    vec![Damage::new(
                        path,
                        position,
                        format!("producer snapshot: {kind}"),
                    )],
                ),
                Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
            };
            Ok(Dumped::Snapshot {
                path: path.to_path_buf(),
                producers: producers
                    .iter()
                    .map(|p| SnapshotProducer {
                        producer_id: p.producer_id,
                        producer_epoch: p.epoch,
                        last_sequence: p.last_sequence.unwrap_or(-1),
                        last_offset: p.last_offset.unwrap_or(-1),
                        offset_delta: p.offset_delta,
                        timestamp: p.timestamp,
                        coordinator_epoch: p.coordinator_epoch,
                        current_txn_first_offset: p.current_txn_first_offset.unwrap_or(-1),
                    })
                    .collect(),
                damage,
            })
        }
        _ => Err(format!(
            "{}: not a segment file (.log, .index, .timeindex, .txnindex or .snapshot)",
            path.display()
        )),
    }
}

fn opt_text(text: Option<&String>) -> &str {
    text.map_or("null", String::as_str)
}

fn batch_line(out: &mut String, b: &BatchInfo) {
    let last_sequence = if b.base_sequence < 0 {
        -1
    } else {
        // Kafka's lastSequence: base sequence + lastOffsetDelta, wrapping
        // past i32::MAX to 0 (DefaultRecordBatch.incrementSequence).
        let delta = i32::try_from(b.last_offset - b.base_offset).unwrap_or(i32::MAX);
        if b.base_sequence > i32::MAX - delta {
            delta - (i32::MAX - b.base_sequence) - 1
        } else {
            b.base_sequence + delta
        }
    };
    let _ = writeln!(
        out,
        "baseOffset: {} lastOffset: {} count: {} baseSequence: {} lastSequence: {} \
         producerId: {} producerEpoch: {} partitionLeaderEpoch: {} isTransactional: {} \
         isControl: {} deleteHorizon: {} position: {} {}: {} baseTimestamp: {} size: {} \
         magic: {} compresscodec: {} crc: {} isvalid: {}",
        b.base_offset,
        b.last_offset,
        b.count,
        b.base_sequence,
        last_sequence,
        b.producer_id,
        b.producer_epoch,
        b.partition_leader_epoch,
        b.is_transactional,
        b.is_control,
        b.has_delete_horizon,
        b.position,
        b.timestamp_type,
        b.max_timestamp,
        b.base_timestamp,
        b.size,
        b.magic,
        b.compression,
        b.crc,
        b.crc_valid,
    );
    for r in b.records.iter().flatten() {
        let _ = write!(
            out,
            "| offset: {} {}: {} keySize: {} valueSize: {}",
            r.offset,
            b.timestamp_type,
            r.timestamp,
            r.key_size.map_or(-1, |n| n as i64),
            r.value_size.map_or(-1, |n| n as i64),
        );
        if let Some(c) = &r.control {
            let _ = write!(out, " endTxnMarker: {}", c.marker);
            if let Some(epoch) = c.coordinator_epoch {
                let _ = write!(out, " coordinatorEpoch: {epoch}");
            }
        }
        if let Some(p) = &r.payload {
            let headers: Vec<String> = p
                .headers
                .iter()
                .map(|h| format!("{}={}", h.key, opt_text(h.value.as_ref())))
                .collect();
            let _ = write!(
                out,
                " headers: [{}] key: {} payload: {}",
                headers.join(", "),
                opt_text(p.key.as_ref()),
                opt_text(p.value.as_ref()),
            );
        }
        out.push('\n');
    }
}

/// The human-readable text of one dumped file, in kafka-dump-log's layout.
pub(crate) fn render(dumped: &Dumped) -> String {
    let mut out = String::new();
    match dumped {
        Dumped::Log { path, scan } => {
            let _ = writeln!(out, "Dumping {}", path.display());
            if let Some(base) = scan.base_offset {
                let _ = writeln!(out, "Log starting offset: {base}");
            }
            for b in &scan.batches {
                batch_line(&mut out, b);
            }
            let records: i64 = scan.batches.iter().map(|b| i64::from(b.count)).sum();
            let _ = writeln!(
                out,
                "{} batches, {} records, {} bytes",
                scan.batches.len(),
                records,
                scan.size
            );
        }
        Dumped::Index { path, check } => {
            let _ = writeln!(out, "Dumping {}", path.display());
            for e in &check.entries {
                match (e.position, e.timestamp) {
                    (Some(position), _) => {
                        let _ = write!(out, "offset: {} position: {position}", e.offset);
                    }
                    (None, Some(timestamp)) => {
                        let _ = write!(out, "timestamp: {timestamp} offset: {}", e.offset);
                    }
                    (None, None) => {}
                }
                if let Some(problem) = &e.problem {
                    let _ = write!(out, "  MISMATCH: {problem}");
                }
                out.push('\n');
            }
            let _ = writeln!(
                out,
                "{} entries, end: {}{}",
                check.entries.len(),
                check.end,
                if check.checked_against_log {
                    ", checked against the .log beside it"
                } else {
                    ", no .log beside it to check against"
                }
            );
        }
        Dumped::TxnIndex { path, entries, .. } => {
            let _ = writeln!(out, "Dumping {}", path.display());
            for t in entries {
                let _ = writeln!(
                    out,
                    "producerId: {} firstOffset: {} lastOffset: {} lastStableOffset: {}",
                    t.producer_id, t.first_offset, t.last_offset, t.last_stable_offset
                );
            }
            let _ = writeln!(out, "{} aborted transactions", entries.len());
        }
        Dumped::Snapshot {
            path, producers, ..
        } => {
            // As kafka-dump-log prints a producer snapshot.
            let _ = writeln!(out, "Dumping {}", path.display());
            for p in producers {
                let _ = writeln!(
                    out,
                    "producerId: {} producerEpoch: {} coordinatorEpoch: {} \
                     currentTxnFirstOffset: {} lastTimestamp: {} lastSequence: {} \
                     lastOffset: {} offsetDelta: {}",
                    p.producer_id,
                    p.producer_epoch,
                    p.coordinator_epoch,
                    p.current_txn_first_offset,
                    p.timestamp,
                    p.last_sequence,
                    p.last_offset,
                    p.offset_delta,
                );
            }
            let _ = writeln!(out, "{} producers", producers.len());
        }
    }
    for d in dumped.damage() {
        let _ = writeln!(out, "{d}");
    }
    out
}
