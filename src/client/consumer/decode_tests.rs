//! The consumer's batch-at-a-time decoding ([`super::decode`]) against the
//! full parser (`format::parse_record`): on random records (keys and values
//! null, empty, short and long; headers; timestamp and offset deltas of
//! every varint width) the fast path takes exactly what the full parser
//! parses, never a record it rejects; and a fetch drained in polls of any
//! size returns what a drain with the full parser alone returns (the same
//! records, the same error at the same offset, the same position).

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use super::ConsumerRecords;
use super::decode::{FastRecord, fast_record};
use super::fetch::{Fetch, Sink};
use super::records::{PartitionBuf, Span};
use crate::cluster::ReadSource;
use crate::error::FormatError;
use crate::format::{
    BatchBuilder, Header, RECORDS_OFFSET, bad_delta, decode_headers, encode_record, parse_record,
};
use crate::types::{Compression, TimestampType, TopicPartition};

/// A value of `width` random low bits (so every varint width comes up),
/// negated when `negative`.
fn of_width(bits: u64, width: u32, negative: bool) -> i64 {
    let v = (bits & (u64::MAX >> (64 - width.max(1)))) as i64 * i64::from(width > 0);
    if negative { v.wrapping_neg() } else { v }
}

fn timestamp_delta() -> impl Strategy<Value = i64> {
    (any::<u64>(), 0u32..=63, any::<bool>()).prop_map(|(b, w, n)| of_width(b, w, n))
}

fn offset_delta() -> impl Strategy<Value = i32> {
    (any::<u64>(), 0u32..=31, prop::bool::weighted(0.1))
        .prop_map(|(b, w, n)| of_width(b, w, n) as i32)
}

/// A key or value: null, empty, short (one-byte length), around the
/// one-/two-byte boundary (63/64 bytes), 100 bytes, or long (around the
/// two-/three-byte boundary, 8191/8192 bytes).
fn field() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some(Vec::new())),
        3 => prop::collection::vec(any::<u8>(), 1..63).prop_map(Some),
        1 => prop::collection::vec(any::<u8>(), 62..66).prop_map(Some),
        3 => prop::collection::vec(any::<u8>(), 100..101).prop_map(Some),
        1 => prop::collection::vec(any::<u8>(), 8190..8194).prop_map(Some),
    ]
}

fn headers() -> impl Strategy<Value = Vec<Header>> {
    prop_oneof![
        4 => Just(Vec::new()),
        1 => prop::collection::vec(("[a-z]{0,5}", field()), 1..3).prop_map(|hs| {
            hs.into_iter()
                .map(|(k, v)| Header::new(&k, v.as_deref()))
                .collect()
        }),
    ]
}

#[derive(Debug, Clone)]
struct Rec {
    timestamp_delta: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<Header>,
}

fn rec() -> impl Strategy<Value = Rec> {
    (timestamp_delta(), field(), field(), headers()).prop_map(
        |(timestamp_delta, key, value, headers)| Rec {
            timestamp_delta,
            key,
            value,
            headers,
        },
    )
}

/// Appends `r` with `offset_delta` to `buf`.
fn encode(buf: &mut Vec<u8>, r: &Rec, offset_delta: i32) {
    assert!(encode_record(
        buf,
        r.timestamp_delta,
        offset_delta,
        r.key.as_deref(),
        r.value.as_deref(),
        &r.headers,
    ));
}

/// The length of `v`'s zigzag varint.
fn varint_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    (64 - z.leading_zeros() as usize).max(1).div_ceil(7)
}

/// Whether the record is of the shape the fast path takes: no headers and
/// every varint (length, deltas, key and value lengths) of 1 or 2 bytes.
fn common_shape(r: &Rec, offset_delta: i32, record_len: usize) -> bool {
    let len = |f: &Option<Vec<u8>>| f.as_ref().map_or(-1, |f| f.len() as i64);
    r.headers.is_empty()
        && [
            record_len as i64,
            r.timestamp_delta,
            i64::from(offset_delta),
            len(&r.key),
            len(&r.value),
        ]
        .iter()
        .all(|&v| varint_len(v) <= 2)
}

/// The full parser's record at `data[pos]` in the fast path's terms.
fn full(data: &[u8], pos: usize) -> Result<(FastRecord, usize), FormatError> {
    let raw = parse_record(data, pos)?;
    Ok((
        FastRecord {
            timestamp_delta: raw.timestamp_delta,
            offset_delta: raw.offset_delta,
            key: Span::of(raw.key),
            value: Span::of(raw.value),
            end: raw.end,
        },
        raw.header_count,
    ))
}

/// A change to the records' bytes: in record `record` (modulo their
/// count), byte `at` (modulo the bytes from the record's start on).
#[derive(Debug, Clone)]
enum Damage {
    /// The byte set to `to`.
    Set { record: usize, at: usize, to: u8 },
    /// The byte's high (continuation) bit flipped.
    Flip { record: usize, at: usize },
    /// The last `n` bytes cut (modulo the length).
    Cut { n: usize },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), any::<usize>(), any::<u8>()).prop_map(|(record, at, to)| Damage::Set {
            record,
            at,
            to
        }),
        // In a record's first bytes: its length, deltas, key and value
        // lengths.
        (any::<usize>(), 0usize..12, any::<u8>()).prop_map(|(record, at, to)| Damage::Set {
            record,
            at,
            to
        }),
        (any::<usize>(), 0usize..12).prop_map(|(record, at)| Damage::Flip { record, at }),
        (
            any::<usize>(),
            0usize..12,
            prop_oneof![Just(0u8), Just(1), Just(2), Just(0x7f), Just(0x80)]
        )
            .prop_map(|(record, at, to)| Damage::Set { record, at, to }),
        (1usize..4).prop_map(|n| Damage::Cut { n }),
    ]
}

/// Applies `damage` to `bytes`, whose records start at `starts` (not
/// empty).
fn apply(bytes: &mut Vec<u8>, starts: &[usize], damage: &Damage) {
    let from = |record: usize| starts[record % starts.len()];
    match *damage {
        Damage::Set { record, at, to } => {
            let from = from(record);
            let at = from + at % (bytes.len() - from);
            bytes[at] = to;
        }
        Damage::Flip { record, at } => {
            let from = from(record);
            let at = from + at % (bytes.len() - from);
            bytes[at] ^= 0x80;
        }
        Damage::Cut { n } => bytes.truncate(bytes.len() - n % (bytes.len() - starts[0])),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The fast path takes a record of the common shape exactly as the full
    /// parser parses it (when the bytes after it leave room for its read
    /// windows), and declines every other.
    #[test]
    fn the_fast_path_agrees_with_the_full_parser(
        r in rec(),
        offset_delta in offset_delta(),
        before in prop::collection::vec(any::<u8>(), 0..3),
        after in prop::collection::vec(any::<u8>(), 0..12),
    ) {
        let mut data = before.clone();
        encode(&mut data, &r, offset_delta);
        let end = data.len();
        data.extend_from_slice(&after);
        let pos = before.len();
        let (expected, header_count) = full(&data, pos).expect("a valid record");
        prop_assert_eq!(expected.end, end);
        // The record's length field: `len + varint_len(len)` bytes in all.
        let record_len = (1..=5)
            .map(|n| end - pos - n)
            .find(|&len| len + varint_len(len as i64) == end - pos)
            .expect("a length");
        let fast = fast_record(&data, pos);
        if let Some(fast) = fast {
            prop_assert_eq!(fast, expected);
            prop_assert_eq!(header_count, 0);
        }
        if after.len() >= 8 {
            prop_assert_eq!(
                fast.is_some(),
                common_shape(&r, offset_delta, record_len),
                "{:?}", r.headers
            );
        }
    }

    /// A damaged record (any byte changed, a length's continuation bit
    /// flipped, its end cut): whatever the fast path takes, the full parser
    /// takes the same way; it never takes what the full parser rejects.
    #[test]
    fn the_fast_path_never_takes_what_the_full_parser_rejects(
        r in rec(),
        offset_delta in offset_delta(),
        damage in damage(),
        after in prop::collection::vec(any::<u8>(), 0..12),
    ) {
        let mut data = Vec::new();
        encode(&mut data, &r, offset_delta);
        apply(&mut data, &[0], &damage);
        data.extend_from_slice(&after);
        if let Some(fast) = fast_record(&data, 0) {
            prop_assert_eq!(full(&data, 0), Ok((fast, 0)));
        }
    }
}

/// A batch of `records` (offset deltas growing by `gaps`), its records
/// section replaced by their encoding, with `damage` applied to it and
/// `count_change` added to its `recordsCount`; no valid CRC (drained with
/// `check.crcs` off).
fn batch(
    records: &[(Rec, i32)],
    timestamp_type: TimestampType,
    damage: Option<&Damage>,
    count_change: i32,
) -> Bytes {
    let mut builder = BatchBuilder::new(Compression::None)
        .base_offset(1000)
        .timestamp_type(timestamp_type);
    builder.append(5, None, None, &[]);
    let header = builder.build().expect("batch");
    let mut bytes = header[..RECORDS_OFFSET].to_vec();
    let mut delta = -1;
    let mut starts = Vec::new();
    for (r, gap) in records {
        delta += gap;
        starts.push(bytes.len());
        encode(&mut bytes, r, delta);
    }
    if let Some(damage) = damage
        && !starts.is_empty()
    {
        apply(&mut bytes, &starts, damage);
    }
    let length = (bytes.len() - 12) as i32;
    bytes[8..12].copy_from_slice(&length.to_be_bytes());
    bytes[23..27].copy_from_slice(&delta.max(0).to_be_bytes());
    let count = records.len() as i32 + count_change;
    bytes[57..61].copy_from_slice(&count.to_be_bytes());
    Bytes::from(bytes)
}

/// A record as a poll returns it: offset, timestamp, key, value, headers.
type Got = (u64, i64, Option<Vec<u8>>, Option<Vec<u8>>, Vec<Header>);

/// What draining `data` (one batch) from `position` returns, by the full
/// parser alone: the records, the error that ends them, the position after.
fn by_full_parser(data: &Bytes, mut position: u64) -> (Vec<Got>, Result<(), FormatError>, u64) {
    let header = crate::format::BatchHeader::parse(data).expect("header");
    let mut got = Vec::new();
    let result = (|| {
        let declared = usize::try_from(header.records_count)
            .map_err(|_| FormatError::InvalidRecord("negative recordsCount"))?;
        let log_append = header.timestamp_type() == TimestampType::LogAppendTime;
        let (mut pos, mut previous) = (RECORDS_OFFSET, -1i64);
        for index in 0..declared {
            if pos >= data.len() {
                return Err(FormatError::RecordCountMismatch {
                    declared: declared as i32,
                    actual: index,
                });
            }
            let raw = parse_record(data, pos)?;
            let delta = i64::from(raw.offset_delta);
            if delta <= previous || raw.offset_delta > header.last_offset_delta {
                return Err(bad_delta());
            }
            (previous, pos) = (delta, raw.end);
            let offset = (header.base_offset + delta) as u64;
            if offset < position {
                continue;
            }
            position = offset + 1;
            let slice = |r: Option<std::ops::Range<usize>>| r.map(|r| data[r].to_vec());
            got.push((
                offset,
                if log_append {
                    header.max_timestamp
                } else {
                    header.base_timestamp.wrapping_add(raw.timestamp_delta)
                },
                slice(raw.key.clone()),
                slice(raw.value.clone()),
                decode_headers(data, &raw)?,
            ));
        }
        if pos != data.len() {
            return Err(FormatError::InvalidRecord(
                "bytes left after the last record",
            ));
        }
        position = position.max(header.base_offset as u64 + header.last_offset_delta as u64 + 1);
        Ok(())
    })();
    (got, result, position)
}

/// What draining `data` through [`Fetch::drain`] returns, `max` records a
/// poll.
fn by_fetch(
    data: &Bytes,
    mut position: u64,
    max: usize,
) -> (Vec<Got>, Result<(), FormatError>, u64) {
    let topic: Arc<str> = Arc::from("t");
    let mut fetch = Fetch::new(data.clone(), ReadSource::default(), None);
    let mut got = Vec::new();
    let mut result = Ok(());
    while !fetch.is_drained() {
        let mut out = PartitionBuf::default();
        result = fetch.drain(
            &mut position,
            Sink {
                topic: &topic,
                partition: 0,
                check_crcs: false,
                max,
                out: &mut out,
            },
        );
        assert!(out.len() <= max, "a poll holds at most max.poll.records");
        let records = ConsumerRecords::new(vec![(TopicPartition::new("t", 0), out)]);
        for r in &records {
            got.push((
                r.offset(),
                r.timestamp(),
                r.key().map(<[u8]>::to_vec),
                r.value().map(<[u8]>::to_vec),
                r.headers().to_vec(),
            ));
        }
        if result.is_err() {
            break;
        }
    }
    (got, result, position)
}

/// Records of one shape, as a producer writes them: `rec`'s key, headers
/// and value length, timestamp deltas growing by a step, one offset gap
/// (the deltas, timestamps and lengths may still cross a varint width).
fn uniform() -> impl Strategy<Value = Vec<(Rec, i32)>> {
    (
        rec(),
        1usize..150,
        0i64..3,
        prop_oneof![3 => Just(1i32), 1 => 2i32..4],
    )
        .prop_map(|(r, count, step, gap)| {
            (0..count)
                .map(|i| {
                    let mut r = r.clone();
                    r.timestamp_delta = r.timestamp_delta.wrapping_add(i as i64 * step);
                    if let Some(byte) = r.value.as_mut().and_then(|v| v.first_mut()) {
                        *byte = i as u8;
                    }
                    (r, gap)
                })
                .collect()
        })
}

fn gap() -> impl Strategy<Value = i32> {
    prop_oneof![8 => Just(1), 1 => 2i32..70, 1 => 70i32..20_000]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A fetch drained `max` records a poll, from any position, returns
    /// what the full parser alone returns: the same records, and for a
    /// damaged batch (a changed byte, a cut end, a wrong record count) the
    /// same error after the same records, the position at the first record
    /// not taken.
    #[test]
    fn a_drain_returns_what_the_full_parser_returns(
        records in prop_oneof![prop::collection::vec((rec(), gap()), 0..40), uniform()],
        log_append in any::<bool>(),
        damage in prop::option::weighted(0.5, damage()),
        count_change in prop_oneof![6 => Just(0), 1 => -2i32..3],
        from in prop_oneof![1 => Just(None), 3 => any::<u8>().prop_map(Some)],
        max in prop_oneof![Just(usize::MAX), 1usize..8],
    ) {
        // From below the batch, or from a fraction of its offsets.
        let last_delta: i32 = records.iter().map(|r| r.1).sum::<i32>() - 1;
        let from = from.map_or(0, |f| {
            1000 + (last_delta.max(0) as u64 + 1) * u64::from(f) / 256
        });
        let timestamp_type = if log_append {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        };
        let data = batch(&records, timestamp_type, damage.as_ref(), count_change);
        let expected = by_full_parser(&data, from);
        if damage.is_none() && count_change == 0 {
            prop_assert_eq!(&expected.1, &Ok(()));
        }
        prop_assert_eq!(by_fetch(&data, from, max), expected);
    }
}

/// The batch's whole shape in one run: records of the common shape all go
/// through the fast path, and a poll stops exactly at `max.poll.records`,
/// the next one going on from the record after.
#[test]
fn polls_split_a_batch_of_common_records_exactly_at_max_poll_records() {
    let r = |i: u8| Rec {
        timestamp_delta: i64::from(i),
        key: None,
        value: Some(vec![i; 100]),
        headers: Vec::new(),
    };
    let records: Vec<(Rec, i32)> = (0..150).map(|i| (r(i), 1)).collect();
    let data = batch(&records, TimestampType::CreateTime, None, 0);
    for max in [1, 7, 64, 149, 150, usize::MAX] {
        let (got, result, position) = by_fetch(&data, 0, max);
        assert_eq!(result, Ok(()));
        assert_eq!(position, 1150);
        let offsets: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(offsets, (1000..1150).collect::<Vec<u64>>(), "max {max}");
        assert!(
            got.iter()
                .all(|g| g.3.as_ref().is_some_and(|v| v.len() == 100))
        );
    }
}

/// A record in the middle of a run of records of one shape whose length
/// (or a length inside it) is off by a little, every varint keeping its
/// width: the error the full parser gives, after the records before it.
#[test]
fn a_wrong_length_inside_a_run_of_one_shape_is_the_full_parsers_error() {
    let r = |i: u8, key: bool| Rec {
        timestamp_delta: i64::from(i),
        key: key.then(|| vec![b'k'; 3]),
        value: Some(vec![i; 100]),
        headers: Vec::new(),
    };
    for key in [false, true] {
        let records: Vec<(Rec, i32)> = (0..10).map(|i| (r(i, key), 1)).collect();
        let clean = batch(&records, TimestampType::CreateTime, None, 0);
        // Record 5's length (2 bytes, then attributes, timestampDelta and
        // offsetDelta), key length (null: -1) and value length (2 bytes,
        // after the key's 3).
        let start = RECORDS_OFFSET + 5 * (clean.len() - RECORDS_OFFSET) / 10;
        let value_at = if key { 9 } else { 6 };
        for (at, change) in [(0, 2i8), (0, -2), (5, 2), (value_at, 2), (value_at, -2)] {
            let mut bytes = clean.to_vec();
            bytes[start + at] = bytes[start + at].wrapping_add(change as u8);
            let data = Bytes::from(bytes);
            let expected = by_full_parser(&data, 0);
            assert!(expected.1.is_err(), "key {key}, byte {at} {change:+}");
            assert_eq!(expected.0.len(), 5, "key {key}, byte {at} {change:+}");
            for max in [3, usize::MAX] {
                assert_eq!(
                    by_fetch(&data, 0, max),
                    expected,
                    "key {key}, byte {at} {change:+}, max {max}"
                );
            }
        }
    }
}
