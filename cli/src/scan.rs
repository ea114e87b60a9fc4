//! Read-only scans of segment files: a `.log`'s batches (with
//! `logbus::format`), and `.index` / `.timeindex` entries checked against
//! the `.log` beside them (with `logbus::inspect`). Every file is opened
//! with `File::open` (read-only); nothing is written.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use logbus::Bytes;
use logbus::format::{self, Batch, BatchHeader, RECORD_BATCH_OVERHEAD};
use logbus::inspect::{self, IndexEnd, IndexScan};
use serde::Serialize;

/// One damage: a file, a byte position in it, and what is wrong there.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Damage {
    pub(crate) file: PathBuf,
    pub(crate) position: u64,
    pub(crate) problem: String,
}

/// The line both commands print for a damage.
impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DAMAGE {} at byte {}: {}",
            self.file.display(),
            self.position,
            self.problem
        )
    }
}

impl Damage {
    pub(crate) fn new(file: &Path, position: u64, problem: impl Into<String>) -> Self {
        Damage {
            file: file.to_path_buf(),
            position,
            problem: problem.into(),
        }
    }
}

/// How much of each batch's records a log scan reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Records {
    /// Headers only.
    Skip,
    /// Decode every record (checks them) but keep none.
    Validate,
    /// Decode and keep offsets and timestamps.
    List,
    /// Decode and keep keys, values and headers too.
    Payload,
}

/// One header of a record, as UTF-8 (lossy).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HeaderInfo {
    pub(crate) key: String,
    pub(crate) value: Option<String>,
}

/// One record of a batch.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RecordInfo {
    pub(crate) offset: i64,
    pub(crate) timestamp: i64,
    pub(crate) key_size: Option<usize>,
    pub(crate) value_size: Option<usize>,
    /// A control batch's record: the transaction marker it holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) control: Option<ControlInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) payload: Option<Payload>,
}

/// A control record (`docs/format.md` §5.1): its type and, for a
/// transaction marker, the coordinator epoch.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ControlInfo {
    /// `COMMIT`, `ABORT`, or `type <n>` for Kafka's other control types.
    pub(crate) marker: String,
    pub(crate) coordinator_epoch: Option<i32>,
}

fn control_info(key: Option<&[u8]>, value: Option<&[u8]>) -> Option<ControlInfo> {
    let key = key.filter(|k| k.len() >= 4)?;
    let marker = match i16::from_be_bytes([key[2], key[3]]) {
        0 => "ABORT".to_string(),
        1 => "COMMIT".to_string(),
        other => format!("type {other}"),
    };
    let coordinator_epoch = value
        .filter(|v| v.len() >= 6)
        .map(|v| i32::from_be_bytes([v[2], v[3], v[4], v[5]]));
    Some(ControlInfo {
        marker,
        coordinator_epoch,
    })
}

/// A record's key, value and headers (with `--print-data-log`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Payload {
    pub(crate) key: Option<String>,
    pub(crate) value: Option<String>,
    pub(crate) headers: Vec<HeaderInfo>,
}

/// One batch of a `.log` file.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BatchInfo {
    pub(crate) position: u64,
    pub(crate) size: u64,
    pub(crate) base_offset: i64,
    pub(crate) last_offset: i64,
    pub(crate) count: i32,
    pub(crate) partition_leader_epoch: i32,
    pub(crate) magic: i8,
    pub(crate) crc: u32,
    pub(crate) crc_valid: bool,
    pub(crate) compression: String,
    pub(crate) timestamp_type: &'static str,
    pub(crate) base_timestamp: i64,
    pub(crate) max_timestamp: i64,
    pub(crate) producer_id: i64,
    pub(crate) producer_epoch: i16,
    pub(crate) base_sequence: i32,
    pub(crate) is_transactional: bool,
    pub(crate) is_control: bool,
    pub(crate) has_delete_horizon: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) records: Option<Vec<RecordInfo>>,
}

/// What a `.log` scan found.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LogScan {
    pub(crate) base_offset: Option<u64>,
    pub(crate) size: u64,
    pub(crate) batches: Vec<BatchInfo>,
    /// The offset after the last batch read (the segment's next offset).
    pub(crate) next_offset: Option<u64>,
    pub(crate) damage: Vec<Damage>,
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn read_at(file: &File, path: &Path, buf: &mut [u8], position: u64) -> Result<(), String> {
    file.read_exact_at(buf, position)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Scans a `.log` file batch by batch: framing, CRC, offsets, and (as
/// `records` says) records. Stops at the first batch whose framing is
/// broken (nothing after it can be found); a batch whose CRC or records are
/// wrong is reported and the scan goes on after it.
pub(crate) fn scan_log(
    path: &Path,
    records: Records,
    bar: &ProgressBar,
) -> Result<LogScan, String> {
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let len = file
        .metadata()
        .map_err(|e| format!("cannot stat {}: {e}", path.display()))?
        .len();
    let base_offset = inspect::segment_base_offset(path);
    let mut scan = LogScan {
        base_offset,
        size: len,
        batches: Vec::new(),
        next_offset: base_offset,
        damage: Vec::new(),
    };
    let mut position = 0u64;
    // The offset the next batch must reach at least: the segment's base
    // offset, then one past the previous batch's last offset.
    let mut expected = base_offset.unwrap_or(0);
    while position < len {
        let left = len - position;
        if left < RECORD_BATCH_OVERHEAD as u64 {
            scan.damage.push(Damage::new(
                path,
                position,
                format!(
                    "{left} bytes after the last batch, fewer than a batch header \
                     ({RECORD_BATCH_OVERHEAD} bytes)"
                ),
            ));
            break;
        }
        let mut head = [0u8; RECORD_BATCH_OVERHEAD];
        read_at(&file, path, &mut head, position)?;
        let header = match BatchHeader::parse(&head) {
            Ok(header) => header,
            Err(e) => {
                scan.damage.push(Damage::new(
                    path,
                    position,
                    format!("no valid batch header: {e}"),
                ));
                break;
            }
        };
        let size = header.total_size() as u64;
        if size > left {
            scan.damage.push(Damage::new(
                path,
                position,
                format!(
                    "the batch's length ({size} bytes) runs past the end of the file \
                     ({left} bytes left)"
                ),
            ));
            break;
        }
        let mut bytes = vec![0u8; size as usize];
        read_at(&file, path, &mut bytes, position)?;
        let crc_valid = match format::verify_crc(&bytes) {
            Ok(()) => true,
            Err(e) => {
                scan.damage
                    .push(Damage::new(path, position, format!("batch {e}")));
                false
            }
        };
        check_offsets(path, position, &header, base_offset, expected, &mut scan);
        if let Ok(last) = u64::try_from(header.last_offset()) {
            expected = expected.max(last.saturating_add(1));
            scan.next_offset = Some(expected);
        }
        let bytes = Bytes::from(bytes);
        let kept = if crc_valid && records != Records::Skip {
            read_records(path, position, &bytes, records, &mut scan.damage)
        } else {
            None
        };
        scan.batches
            .push(batch_info(position, &header, crc_valid, kept));
        position += size;
        bar.inc(size);
    }
    // What a damage left unread.
    bar.inc(len - position.min(len));
    Ok(scan)
}

fn check_offsets(
    path: &Path,
    position: u64,
    header: &BatchHeader,
    segment_base: Option<u64>,
    expected: u64,
    scan: &mut LogScan,
) {
    let mut problem = |text: String| scan.damage.push(Damage::new(path, position, text));
    if header.last_offset_delta < 0 {
        problem(format!(
            "lastOffsetDelta is negative ({})",
            header.last_offset_delta
        ));
        return;
    }
    let Ok(base) = u64::try_from(header.base_offset) else {
        problem(format!("baseOffset is negative ({})", header.base_offset));
        return;
    };
    let Some(last) = header
        .base_offset
        .checked_add(i64::from(header.last_offset_delta))
        .filter(|&l| l < i64::MAX)
    else {
        problem(format!(
            "baseOffset {} + lastOffsetDelta {} overflows",
            header.base_offset, header.last_offset_delta
        ));
        return;
    };
    if base < expected {
        problem(format!(
            "offsets {base}..={last} do not follow: the batch must start at or above {expected} \
             (the previous batch's last offset + 1, or the segment's base offset)"
        ));
    }
    if let Some(segment_base) = segment_base
        && (last as u64).saturating_sub(segment_base) > u64::from(u32::MAX)
    {
        problem(format!(
            "last offset {last} lies more than 2^32 - 1 above the segment's base offset \
             {segment_base}"
        ));
    }
}

/// Decodes the records of a batch whose CRC verified.
fn read_records(
    path: &Path,
    position: u64,
    bytes: &Bytes,
    mode: Records,
    damage: &mut Vec<Damage>,
) -> Option<Vec<RecordInfo>> {
    let batch = match Batch::from_bytes(bytes.clone()) {
        Ok(batch) => batch,
        Err(e) => {
            damage.push(Damage::new(path, position, format!("batch {e}")));
            return None;
        }
    };
    let iter = match batch.records() {
        Ok(iter) => iter,
        Err(e) => {
            damage.push(Damage::new(
                path,
                position,
                format!("records cannot be read: {e}"),
            ));
            return None;
        }
    };
    let is_control = batch.header().is_control();
    let mut kept = Vec::new();
    for (i, record) in iter.enumerate() {
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                damage.push(Damage::new(
                    path,
                    position,
                    format!("record {i} of the batch: {e}"),
                ));
                break;
            }
        };
        if mode == Records::Validate {
            continue;
        }
        let payload = (mode == Records::Payload).then(|| Payload {
            key: record.key().map(|k| lossy(k)),
            value: record.value().map(|v| lossy(v)),
            headers: record
                .headers()
                .iter()
                .map(|h| HeaderInfo {
                    key: h.key.clone(),
                    value: h.value.as_ref().map(|v| lossy(v)),
                })
                .collect(),
        });
        kept.push(RecordInfo {
            offset: record.offset(),
            timestamp: record.timestamp(),
            key_size: record.key().map(Bytes::len),
            value_size: record.value().map(Bytes::len),
            control: if is_control {
                control_info(record.key().map(|k| &k[..]), record.value().map(|v| &v[..]))
            } else {
                None
            },
            payload,
        });
    }
    (mode != Records::Validate).then_some(kept)
}

fn batch_info(
    position: u64,
    header: &BatchHeader,
    crc_valid: bool,
    records: Option<Vec<RecordInfo>>,
) -> BatchInfo {
    BatchInfo {
        position,
        size: header.total_size() as u64,
        base_offset: header.base_offset,
        last_offset: header.last_offset(),
        count: header.records_count,
        partition_leader_epoch: header.partition_leader_epoch,
        magic: header.magic,
        crc: header.crc,
        crc_valid,
        compression: header
            .compression()
            .map_or_else(|e| format!("unknown ({e})"), |c| c.name().to_string()),
        timestamp_type: match header.timestamp_type() {
            logbus::TimestampType::LogAppendTime => "LogAppendTime",
            _ => "CreateTime",
        },
        base_timestamp: header.base_timestamp,
        max_timestamp: header.max_timestamp,
        producer_id: header.producer_id,
        producer_epoch: header.producer_epoch,
        base_sequence: header.base_sequence,
        is_transactional: header.is_transactional(),
        is_control: header.is_control(),
        has_delete_horizon: header.has_delete_horizon(),
        records,
    }
}

/// One index entry with what checking it against the log found.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct IndexEntryInfo {
    /// Byte position of the entry in the index file.
    pub(crate) index_position: u64,
    pub(crate) offset: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) position: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) timestamp: Option<i64>,
    /// What is wrong with the entry; `None` when it agrees with the log
    /// (or when there was no log to check it against).
    pub(crate) problem: Option<String>,
}

/// What checking an index file found.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct IndexCheck {
    pub(crate) kind: &'static str,
    pub(crate) base_offset: u64,
    pub(crate) entries: Vec<IndexEntryInfo>,
    /// How the entries end: `eof`, `zero_tail`, `out_of_order`, `partial_entry`.
    pub(crate) end: String,
    /// Whether the entries were checked against a `.log` beside the index.
    pub(crate) checked_against_log: bool,
    pub(crate) damage: Vec<Damage>,
}

fn end_name(end: &IndexEnd) -> String {
    match end {
        IndexEnd::Eof => "eof".into(),
        IndexEnd::ZeroTail { position, slots } => {
            format!("zero_tail at byte {position} ({slots} empty slots)")
        }
        IndexEnd::OutOfOrder { position } => format!("out_of_order at byte {position}"),
        IndexEnd::PartialEntry { position, bytes } => {
            format!("partial_entry at byte {position} ({bytes} bytes)")
        }
        _ => "unknown".into(),
    }
}

fn end_damage(path: &Path, end: &IndexEnd, entry_kind: &str) -> Option<Damage> {
    match *end {
        IndexEnd::OutOfOrder { position } => Some(Damage::new(
            path,
            position,
            format!("{entry_kind} entry does not follow the one before it"),
        )),
        IndexEnd::PartialEntry { position, bytes } => Some(Damage::new(
            path,
            position,
            format!("the file ends {bytes} bytes into an {entry_kind} entry (torn or truncated)"),
        )),
        _ => None,
    }
}

/// The `.log` file beside an index file, scanned (headers only), if any.
pub(crate) fn sibling_log(index: &Path) -> Result<Option<LogScan>, String> {
    let log = index.with_extension("log");
    if !log.is_file() {
        return Ok(None);
    }
    scan_log(&log, Records::Skip, &ProgressBar::hidden()).map(Some)
}

/// The batch of `log` starting at byte `position`.
fn batch_at(log: &LogScan, position: u64) -> Option<&BatchInfo> {
    log.batches
        .binary_search_by_key(&position, |b| b.position)
        .ok()
        .map(|i| &log.batches[i])
}

/// The batch of `log` holding `offset`.
fn batch_holding(log: &LogScan, offset: u64) -> Option<&BatchInfo> {
    let offset = i64::try_from(offset).ok()?;
    let i = log.batches.partition_point(|b| b.last_offset < offset);
    log.batches
        .get(i)
        .filter(|b| b.base_offset <= offset && offset <= b.last_offset)
}

/// Checks an offset index (`.index`) file against `log` (the `.log` beside
/// it, when there is one): each entry names an offset inside the batch
/// that starts at the entry's position.
pub(crate) fn check_offset_index(path: &Path, log: Option<&LogScan>) -> Result<IndexCheck, String> {
    let base = inspect::segment_base_offset(path).unwrap_or(0);
    let IndexScan { entries, end } =
        inspect::scan_offset_index(path, base).map_err(|e| e.to_string())?;
    let mut damage = Vec::new();
    let mut infos = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let index_position = (i * inspect::OFFSET_INDEX_ENTRY_SIZE) as u64;
        let problem = log.and_then(|log| match batch_at(log, u64::from(entry.position)) {
            None => Some(format!(
                "offset {} at position {}: no batch starts at that position of the .log",
                entry.offset, entry.position
            )),
            Some(b) => {
                let offset = entry.offset as i64;
                (offset < b.base_offset || offset > b.last_offset).then(|| {
                    format!(
                        "offset {} is not in the batch at position {} (offsets {}..={})",
                        entry.offset, entry.position, b.base_offset, b.last_offset
                    )
                })
            }
        });
        if let Some(problem) = &problem {
            damage.push(Damage::new(path, index_position, problem.clone()));
        }
        infos.push(IndexEntryInfo {
            index_position,
            offset: entry.offset,
            position: Some(entry.position),
            timestamp: None,
            problem,
        });
    }
    damage.extend(end_damage(path, &end, "offset index"));
    Ok(IndexCheck {
        kind: "offset_index",
        base_offset: base,
        entries: infos,
        end: end_name(&end),
        checked_against_log: log.is_some(),
        damage,
    })
}

/// Checks a time index (`.timeindex`) file against `log`: entries are in
/// order (timestamps increase, offsets do not decrease), and each names an
/// offset of a batch whose largest timestamp is the entry's timestamp (the
/// batch where the segment's largest timestamp so far was reached).
pub(crate) fn check_time_index(path: &Path, log: Option<&LogScan>) -> Result<IndexCheck, String> {
    let base = inspect::segment_base_offset(path).unwrap_or(0);
    let IndexScan { entries, end } =
        inspect::scan_time_index(path, base).map_err(|e| e.to_string())?;
    let mut damage = Vec::new();
    let mut infos = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let index_position = (i * inspect::TIME_INDEX_ENTRY_SIZE) as u64;
        let problem = log.and_then(|log| match batch_holding(log, entry.offset) {
            None => Some(format!(
                "timestamp {} at offset {}: no batch of the .log holds that offset",
                entry.timestamp, entry.offset
            )),
            Some(b) => (b.max_timestamp != entry.timestamp).then(|| {
                format!(
                    "timestamp {} at offset {}: the batch holding it (offsets {}..={}) has \
                     largest timestamp {}",
                    entry.timestamp, entry.offset, b.base_offset, b.last_offset, b.max_timestamp
                )
            }),
        });
        if let Some(problem) = &problem {
            damage.push(Damage::new(path, index_position, problem.clone()));
        }
        infos.push(IndexEntryInfo {
            index_position,
            offset: entry.offset,
            position: None,
            timestamp: Some(entry.timestamp),
            problem,
        });
    }
    damage.extend(end_damage(path, &end, "time index"));
    Ok(IndexCheck {
        kind: "time_index",
        base_offset: base,
        entries: infos,
        end: end_name(&end),
        checked_against_log: log.is_some(),
        damage,
    })
}

/// Reads a `.txnindex` file as an open does: its entries up to the first
/// damage (a torn entry, an unknown version, markers going backwards).
pub(crate) fn read_txn_index(
    path: &Path,
) -> Result<(Vec<inspect::AbortedTxnEntry>, Vec<Damage>), String> {
    let scan = inspect::scan_txn_index(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let damage = scan
        .damage
        .map(|problem| {
            Damage::new(
                path,
                scan.valid_bytes,
                format!("aborted-transaction index: {problem}"),
            )
        })
        .into_iter()
        .collect();
    Ok((scan.entries, damage))
}
