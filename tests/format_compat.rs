//! Compatibility with an independent Kafka v2 implementation: the pure-Python
//! client kafka-python (its `kafka.record` package).
//!
//! - `kafka_python_fixtures_decode`: batches written by kafka-python
//!   (`tests/fixtures/kafka-python/*.bin`, made by
//!   `tests/compat/make_fixtures.py`) decode in logbus to exactly what
//!   kafka-python read from them (`expected.txt`). Always runs.
//! - `kafka_python_batches_append_to_a_log`: the same batches are accepted by
//!   `Log::append_as_follower` (stored byte for byte) and `Log::append` (only
//!   base offset and leader epoch rewritten) and read back identical.
//! - `logbus_segments_read_by_kafka_python`: segments written by a logbus
//!   `Log` in every codec are read by kafka-python
//!   (`tests/compat/read_segments.py`), which must validate every CRC and see
//!   every record as appended. Needs `LOGBUS_COMPAT_PYTHON`, a python with
//!   kafka-python and its codec libraries; skipped (with a message) without.
//!
//! The exchange format is the line format documented in
//! `tests/compat/read_segments.py`.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use logbus::format::{self, BatchBuilder, Batches, Header};
use logbus::{Compression, Log, LogConfig, ManualClock, TimestampType};

type TestResult<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

const ALL_CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

fn manifest_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn fixtures_dir() -> PathBuf {
    manifest_path("tests/fixtures/kafka-python")
}

/// One record as both sides describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RecordDesc {
    offset: i64,
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

/// One batch as both sides describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BatchDesc {
    base_offset: i64,
    last_offset_delta: i32,
    partition_leader_epoch: i32,
    crc: u32,
    compression: u8,
    timestamp_type: u8,
    first_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    transactional: bool,
    control: bool,
    records_count: i32,
    records: Vec<RecordDesc>,
}

/// The batches of one file (fixture or segment), by file name.
type FileDesc = (String, Vec<BatchDesc>);

fn unhex(s: &str) -> TestResult<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return Err(format!("odd-length hex {s:?}").into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| Ok(u8::from_str_radix(&s[i..i + 2], 16)?))
        .collect()
}

fn nullable_hex(s: &str) -> TestResult<Option<Vec<u8>>> {
    if s == "-" {
        Ok(None)
    } else {
        unhex(s).map(Some)
    }
}

/// Parses the line format of `read_segments.py --text` / `expected.txt`.
fn parse_text(text: &str) -> TestResult<Vec<FileDesc>> {
    let mut files: Vec<FileDesc> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        let bad = || format!("line {}: malformed: {line:?}", n + 1);
        match (f[0], f.len()) {
            ("file", 2) => files.push((f[1].to_owned(), Vec::new())),
            ("batch", 15) => {
                let batches = &mut files.last_mut().ok_or_else(bad)?.1;
                batches.push(BatchDesc {
                    base_offset: f[1].parse()?,
                    last_offset_delta: f[2].parse()?,
                    partition_leader_epoch: f[3].parse()?,
                    crc: f[4].parse()?,
                    compression: f[5].parse()?,
                    timestamp_type: f[6].parse()?,
                    first_timestamp: f[7].parse()?,
                    max_timestamp: f[8].parse()?,
                    producer_id: f[9].parse()?,
                    producer_epoch: f[10].parse()?,
                    base_sequence: f[11].parse()?,
                    transactional: f[12] == "1",
                    control: f[13] == "1",
                    records_count: f[14].parse()?,
                    records: Vec::new(),
                });
            }
            ("record", 6) => {
                let batch = files
                    .last_mut()
                    .and_then(|(_, b)| b.last_mut())
                    .ok_or_else(bad)?;
                let mut headers = Vec::new();
                for h in f[5].split(',').filter(|h| !h.is_empty()) {
                    let (k, v) = h.split_once(':').ok_or_else(bad)?;
                    headers.push((String::from_utf8(unhex(k)?)?, nullable_hex(v)?));
                }
                batch.records.push(RecordDesc {
                    offset: f[1].parse()?,
                    timestamp: f[2].parse()?,
                    key: nullable_hex(f[3])?,
                    value: nullable_hex(f[4])?,
                    headers,
                });
            }
            _ => return Err(bad().into()),
        }
    }
    Ok(files)
}

/// Decodes every batch in `bytes` with logbus, re-checking each one's CRC
/// with `check_batch`.
fn describe(bytes: Bytes) -> TestResult<Vec<BatchDesc>> {
    let mut out = Vec::new();
    for batch in Batches::new(bytes) {
        let batch = batch?;
        let h = format::check_batch(batch.as_bytes())?;
        assert_eq!(&h, batch.header());
        let records = batch
            .records()?
            .map(|r| {
                r.map(|r| RecordDesc {
                    offset: r.offset(),
                    timestamp: r.timestamp(),
                    key: r.key().map(|k| k.to_vec()),
                    value: r.value().map(|v| v.to_vec()),
                    headers: r
                        .headers()
                        .iter()
                        .map(|h| (h.key.clone(), h.value.as_ref().map(|v| v.to_vec())))
                        .collect(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.push(BatchDesc {
            base_offset: h.base_offset,
            last_offset_delta: h.last_offset_delta,
            partition_leader_epoch: h.partition_leader_epoch,
            crc: h.crc,
            compression: h.compression()?.id(),
            timestamp_type: match h.timestamp_type() {
                TimestampType::CreateTime => 0,
                TimestampType::LogAppendTime => 1,
            },
            first_timestamp: h.base_timestamp,
            max_timestamp: h.max_timestamp,
            producer_id: h.producer_id,
            producer_epoch: h.producer_epoch,
            base_sequence: h.base_sequence,
            transactional: h.is_transactional(),
            control: h.is_control(),
            records_count: h.records_count,
            records,
        });
    }
    Ok(out)
}

/// The fixtures and what kafka-python read from them.
fn fixtures() -> TestResult<Vec<(FileDesc, Vec<u8>)>> {
    let dir = fixtures_dir();
    let expected = parse_text(&std::fs::read_to_string(dir.join("expected.txt"))?)?;
    let mut out = Vec::new();
    for (name, batches) in expected {
        let bytes = std::fs::read(dir.join(&name))?;
        out.push(((name, batches), bytes));
    }
    Ok(out)
}

#[test]
fn kafka_python_fixtures_decode() -> TestResult {
    let fixtures = fixtures()?;
    // Every .bin file is described, and every codec is covered.
    let on_disk: BTreeSet<String> = std::fs::read_dir(fixtures_dir())?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<BTreeSet<_>>>()?
        .into_iter()
        .filter(|n| n.ends_with(".bin"))
        .collect();
    let described: BTreeSet<String> = fixtures.iter().map(|((n, _), _)| n.clone()).collect();
    assert_eq!(on_disk, described, "expected.txt must describe every .bin");
    let codecs: BTreeSet<u8> = fixtures
        .iter()
        .flat_map(|((_, b), _)| b.iter().map(|b| b.compression))
        .collect();
    let all: BTreeSet<u8> = ALL_CODECS.iter().map(|c| c.id()).collect();
    assert_eq!(codecs, all, "fixtures cover every codec");
    assert!(
        fixtures
            .iter()
            .any(|((_, b), _)| b.iter().any(|b| b.timestamp_type == 1))
    );

    for ((name, expected), bytes) in fixtures {
        let got = describe(Bytes::from(bytes))?;
        assert_eq!(got.len(), expected.len(), "{name}: batch count");
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(g, e, "{name}: batch #{i}");
        }
    }
    Ok(())
}

#[test]
fn kafka_python_batches_append_to_a_log() -> TestResult {
    for ((name, expected), bytes) in fixtures()? {
        let records: u64 = expected.iter().map(|b| b.records.len() as u64).sum();

        // As follower: stored byte for byte, offsets as kafka-python's.
        let dir = tempfile::tempdir()?;
        let log = Log::builder(dir.path()).open()?;
        let info = log.append_as_follower(&bytes)?;
        assert_eq!((info.first_offset(), info.last_offset()), (0, records - 1));
        let read = log.read(0, 1 << 20)?;
        assert_eq!(
            read.records().as_ref(),
            &bytes[..],
            "{name}: follower bytes"
        );
        assert_eq!(describe(read.records().clone())?, expected, "{name}");
        log.close()?;

        // As leader, after 3 records already in the log: offsets move by 3,
        // the leader epoch is stamped, nothing else changes (the CRC does not
        // cover either field).
        let dir = tempfile::tempdir()?;
        let log = Log::builder(dir.path()).open()?;
        // The leader checks an idempotent producer's sequences: a fixture
        // batch of a producer continues the filler, which the follower path
        // stores unchecked.
        let mut filler = BatchBuilder::new(Compression::None);
        if let Some(first) = expected.iter().find(|b| b.producer_id >= 0)
            && first.base_sequence >= 3
        {
            filler = filler.producer(
                first.producer_id,
                first.producer_epoch,
                first.base_sequence - 3,
            );
        }
        for i in 0..3 {
            filler.append(i, None, Some(b"filler"), &[]);
        }
        log.append_as_follower(&filler.build()?)?;
        let mut appended = bytes.clone();
        let info = log.append(&mut appended, 9)?;
        assert_eq!((info.first_offset(), info.last_offset()), (3, records + 2));
        let mut want = expected.clone();
        let mut want_bytes = bytes.clone();
        let mut at = 0;
        for b in &mut want {
            b.base_offset += 3;
            b.partition_leader_epoch = 9;
            for r in &mut b.records {
                r.offset += 3;
            }
            let size = format::BatchHeader::parse(&want_bytes[at..])?.total_size();
            format::set_base_offset(&mut want_bytes[at..at + size], b.base_offset);
            format::set_partition_leader_epoch(&mut want_bytes[at..at + size], 9);
            at += size;
        }
        let read = log.read(3, 1 << 20)?;
        assert_eq!(
            read.records().as_ref(),
            &want_bytes[..],
            "{name}: leader bytes"
        );
        assert_eq!(describe(read.records().clone())?, want, "{name}");
        log.close()?;
    }
    Ok(())
}

/// A batch to append: producer id/epoch/sequence, transactional, records.
struct BatchSpec {
    producer: Option<(i64, i16, i32)>,
    transactional: bool,
    records: Vec<RecordSpec>,
}

struct RecordSpec {
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

fn rec(
    timestamp: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&str, Option<&[u8]>)],
) -> RecordSpec {
    RecordSpec {
        timestamp,
        key: key.map(<[u8]>::to_vec),
        value: value.map(<[u8]>::to_vec),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.map(<[u8]>::to_vec)))
            .collect(),
    }
}

/// The same variety as make_fixtures.py, plus (for compressed codecs) a
/// value large enough for several snappy chunks and lz4 blocks.
///
/// The two producers' batches continue their sequences from one codec's
/// log to the next (the log checks an idempotent producer's sequences).
fn batch_specs(codec: Compression) -> Vec<BatchSpec> {
    const T0: i64 = 1_700_000_000_000;
    let round = ALL_CODECS
        .iter()
        .position(|c| *c == codec)
        .expect("one of ALL_CODECS") as i32;
    let fill = b"logbus ".repeat(8);
    let mut specs = vec![
        BatchSpec {
            producer: None,
            transactional: false,
            records: vec![
                rec(T0, Some(b"key-0"), Some(&fill), &[]),
                rec(T0 - 5, None, Some(b"v1"), &[("h", Some(b"x"))]),
                rec(T0 + 1000, Some(b"key-2"), None, &[]),
                rec(
                    T0 + 7,
                    Some(b""),
                    Some(b""),
                    &[("empty", Some(b"")), ("null", None)],
                ),
                rec(T0 - 100_000, None, None, &[("k\u{e9}y", Some(b"\x00\xff"))]),
            ],
        },
        BatchSpec {
            producer: Some((4242, 3, 3 * round)),
            transactional: false,
            records: vec![
                rec(
                    T0 + 50,
                    Some(b"idem"),
                    Some(b"a"),
                    &[("a", Some(b"1")), ("b", None), ("a", Some(b"2"))],
                ),
                rec(T0 + 40, Some(b"idem"), Some(&fill), &[]),
                rec(T0 + 10_000_000, Some(b"idem"), Some(b"c"), &[]),
            ],
        },
        BatchSpec {
            producer: Some((99, 0, 2 * round)),
            transactional: true,
            records: vec![
                rec(1, Some(b"txn"), Some(b"t"), &[("trace", Some(b"abc"))]),
                rec(0, None, Some(&fill), &[]),
            ],
        },
        BatchSpec {
            producer: None,
            transactional: false,
            records: vec![rec(T0 + 3, Some(b"single"), Some(b"one"), &[])],
        },
        // Wider varints: a 2-byte key length and header count, a 6-byte
        // negative and a 6-byte positive timestamp delta.
        BatchSpec {
            producer: None,
            transactional: false,
            records: vec![
                RecordSpec {
                    timestamp: T0,
                    key: Some(vec![b'K'; 70]),
                    value: None,
                    headers: (0..70)
                        .map(|i| (format!("h{i}"), Some(Vec::new())))
                        .collect(),
                },
                rec(0, None, Some(b"epoch"), &[]),
                rec(T0 + (1 << 40), None, Some(&fill), &[]),
            ],
        },
    ];
    if codec != Compression::None {
        let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        specs.push(BatchSpec {
            producer: None,
            transactional: false,
            records: vec![
                rec(T0, Some(b"big"), Some(&big), &[]),
                rec(T0 + 1, Some(b"after-big"), Some(&fill), &[]),
            ],
        });
    }
    specs
}

fn build(codec: Compression, spec: &BatchSpec) -> TestResult<Vec<u8>> {
    let mut b = BatchBuilder::new(codec).transactional(spec.transactional);
    if let Some((id, epoch, seq)) = spec.producer {
        b = b.producer(id, epoch, seq);
    }
    for r in &spec.records {
        let headers: Vec<Header> = r
            .headers
            .iter()
            .map(|(k, v)| Header::new(k.as_str(), v.as_deref()))
            .collect();
        b.append(r.timestamp, r.key.as_deref(), r.value.as_deref(), &headers);
    }
    Ok(b.build()?.to_vec())
}

/// Writes a log with every codec and returns what kafka-python must see
/// (the CRC field left 0: it is checked against logbus's own reading).
fn write_log(dir: &Path, timestamp_type: TimestampType) -> TestResult<Vec<BatchDesc>> {
    const APPEND_TIME: i64 = 1_800_000_000_000;
    let clock = ManualClock::new(APPEND_TIME);
    let log = Log::builder(dir)
        .config(
            LogConfig::builder()
                .segment_bytes(6 * 1024)
                .index_interval_bytes(256)
                .timestamp_type(timestamp_type)
                .retention_time(None)
                .build()?,
        )
        .clock(Arc::new(clock.clone()))
        .open()?;
    let mut expected = Vec::new();
    let mut epoch = 0;
    for codec in ALL_CODECS {
        for spec in batch_specs(codec) {
            epoch += 1;
            clock.advance_ms(10);
            let mut bytes = build(codec, &spec)?;
            let info = log.append(&mut bytes, epoch)?;
            let first = info.first_offset() as i64;
            let append_time = info.log_append_time();
            assert_eq!(
                append_time.is_some(),
                timestamp_type == TimestampType::LogAppendTime
            );
            let max = spec.records.iter().map(|r| r.timestamp).max().unwrap_or(-1);
            let (producer_id, producer_epoch, base_sequence) =
                spec.producer.unwrap_or((-1, -1, -1));
            expected.push(BatchDesc {
                base_offset: first,
                last_offset_delta: spec.records.len() as i32 - 1,
                partition_leader_epoch: epoch,
                crc: 0,
                compression: codec.id(),
                timestamp_type: u8::from(append_time.is_some()),
                first_timestamp: spec.records[0].timestamp,
                max_timestamp: append_time.unwrap_or(max),
                producer_id,
                producer_epoch,
                base_sequence,
                transactional: spec.transactional,
                control: false,
                records_count: spec.records.len() as i32,
                records: spec
                    .records
                    .iter()
                    .enumerate()
                    .map(|(i, r)| RecordDesc {
                        offset: first + i as i64,
                        timestamp: append_time.unwrap_or(r.timestamp),
                        key: r.key.clone(),
                        value: r.value.clone(),
                        headers: r.headers.clone(),
                    })
                    .collect(),
            });
            if spec.transactional {
                // Its COMMIT marker: a control batch of one record, the
                // key (version 0, type 1 = COMMIT) and value (version 0,
                // the coordinator epoch) in Kafka's layout.
                let (producer_id, producer_epoch, _) =
                    spec.producer.expect("a transaction has a producer");
                clock.advance_ms(10);
                let coordinator_epoch = epoch + 100;
                let info = log.append_marker(
                    producer_id,
                    producer_epoch,
                    format::ControlRecordType::Commit,
                    coordinator_epoch,
                )?;
                let at = info.first_offset() as i64;
                let now = logbus::Clock::now_ms(&clock);
                let mut value = vec![0, 0];
                value.extend_from_slice(&coordinator_epoch.to_be_bytes());
                expected.push(BatchDesc {
                    base_offset: at,
                    last_offset_delta: 0,
                    partition_leader_epoch: epoch,
                    crc: 0,
                    compression: 0,
                    // Stamped as Kafka's broker stamps markers: with the
                    // append time in a LogAppendTime topic.
                    timestamp_type: u8::from(timestamp_type == TimestampType::LogAppendTime),
                    first_timestamp: now,
                    max_timestamp: now,
                    producer_id,
                    producer_epoch,
                    base_sequence: -1,
                    transactional: true,
                    control: true,
                    records_count: 1,
                    records: vec![RecordDesc {
                        offset: at,
                        timestamp: now,
                        key: Some(vec![0, 0, 0, 1]),
                        value: Some(value),
                        headers: Vec::new(),
                    }],
                });
            }
        }
    }
    assert!(log.segment_count() >= 3, "{} segments", log.segment_count());
    log.close()?;
    Ok(expected)
}

/// Runs read_segments.py on `dir` and parses its output.
fn kafka_python_read(python: &Path, dir: &Path) -> TestResult<Vec<FileDesc>> {
    let output = Command::new(python)
        .arg(manifest_path("tests/compat/read_segments.py"))
        .arg("--text")
        .arg(dir)
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "kafka-python could not read the segments in {}: {}\n{}",
            dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    parse_text(std::str::from_utf8(&output.stdout)?)
}

#[test]
fn logbus_segments_read_by_kafka_python() -> TestResult {
    let Some(python) = std::env::var_os("LOGBUS_COMPAT_PYTHON") else {
        // Straight to stderr, not eprintln!, so the test harness does not
        // capture it: a skipped check must be visible.
        let _ = writeln!(
            std::io::stderr(),
            "logbus_segments_read_by_kafka_python: SKIPPED: LOGBUS_COMPAT_PYTHON is not set \
             (set it to a python with kafka-python, python-snappy, lz4, zstandard and crc32c)"
        );
        return Ok(());
    };
    let python = PathBuf::from(python);
    for timestamp_type in [TimestampType::CreateTime, TimestampType::LogAppendTime] {
        let dir = tempfile::tempdir()?;
        let log_dir = dir.path().join("compat-0");
        let mut expected = write_log(&log_dir, timestamp_type)?;
        let files = kafka_python_read(&python, &log_dir)?;

        // kafka-python sees exactly what logbus's own decoder sees in each
        // segment file, CRC included.
        let mut names: Vec<String> = std::fs::read_dir(&log_dir)?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<Vec<_>>>()?
            .into_iter()
            .filter(|n| n.ends_with(".log"))
            .collect();
        names.sort();
        assert!(names.len() >= 3, "{names:?}");
        let python_names: Vec<&String> = files.iter().map(|(n, _)| n).collect();
        assert_eq!(python_names, names.iter().collect::<Vec<_>>());
        for (name, batches) in &files {
            let ours = describe(Bytes::from(std::fs::read(log_dir.join(name))?))?;
            assert_eq!(&ours, batches, "{timestamp_type:?} {name}");
        }

        // And every record is as appended, at the offset the log assigned.
        let got: Vec<BatchDesc> = files.into_iter().flat_map(|(_, b)| b).collect();
        assert_eq!(got.len(), expected.len(), "{timestamp_type:?}: batch count");
        for (i, (g, e)) in got.iter().zip(&mut expected).enumerate() {
            e.crc = g.crc;
            assert_eq!(g, e, "{timestamp_type:?}: batch #{i}");
        }
    }
    Ok(())
}
