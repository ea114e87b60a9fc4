//! Property tests of the v2 batch format: builder/decoder round trips over
//! all field ranges and codecs, and robustness of the decoder on random and
//! damaged input.

use bytes::Bytes;
use logbus::format::{Batch, BatchBuilder, Batches, Header, Record, compute_crc, verify_crc};
use logbus::{Compression, FormatError, TimestampType};
use proptest::prelude::*;

const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

/// One record to append: timestamp, key, value, headers.
type Input = (i64, Option<Vec<u8>>, Option<Vec<u8>>, Vec<Header>);

#[derive(Debug, Clone)]
struct Params {
    compression: Compression,
    log_append_time: bool,
    producer: (i64, i16, i32),
    transactional: bool,
    control: bool,
    leader_epoch: i32,
    base_offset: i64,
}

fn header() -> impl Strategy<Value = Header> {
    (
        "\\PC{0,8}",
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
    )
        .prop_map(|(key, value)| Header {
            key,
            value: value.map(Bytes::from),
        })
}

fn timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        -1i64..=1,
        1_600_000_000_000i64..1_800_000_000_000,
    ]
}

fn input() -> impl Strategy<Value = Input> {
    (
        timestamp(),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..32)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
        proptest::collection::vec(header(), 0..4),
    )
}

fn params() -> impl Strategy<Value = Params> {
    (
        proptest::sample::select(CODECS.to_vec()),
        any::<bool>(),
        (any::<i64>(), any::<i16>(), any::<i32>()),
        any::<bool>(),
        any::<bool>(),
        any::<i32>(),
        prop_oneof![0i64..1000, any::<i64>()],
    )
        .prop_map(
            |(
                compression,
                log_append_time,
                producer,
                transactional,
                control,
                leader_epoch,
                base_offset,
            )| {
                Params {
                    compression,
                    log_append_time,
                    producer,
                    transactional,
                    control,
                    leader_epoch,
                    base_offset,
                }
            },
        )
}

fn build(p: &Params, records: &[Input]) -> Result<Bytes, FormatError> {
    let ts_type = if p.log_append_time {
        TimestampType::LogAppendTime
    } else {
        TimestampType::CreateTime
    };
    let mut b = BatchBuilder::new(p.compression)
        .timestamp_type(ts_type)
        .producer(p.producer.0, p.producer.1, p.producer.2)
        .transactional(p.transactional)
        .control(p.control)
        .partition_leader_epoch(p.leader_epoch)
        .base_offset(p.base_offset);
    for (ts, key, value, headers) in records {
        b.append(*ts, key.as_deref(), value.as_deref(), headers);
    }
    assert_eq!(b.len(), records.len());
    b.build()
}

/// Every record of every batch in `bytes`, or the first error.
fn decode_all(bytes: Bytes) -> Result<Vec<Record>, FormatError> {
    let mut out = Vec::new();
    for batch in Batches::new(bytes) {
        let batch = batch?;
        for r in batch.records()? {
            out.push(r?);
        }
    }
    Ok(out)
}

/// A valid batch of a few records with the given codec, for damage tests.
fn sample_batch() -> impl Strategy<Value = Bytes> {
    (params(), proptest::collection::vec(input(), 1..6))
        .prop_filter_map("codec not enabled", |(p, records)| build(&p, &records).ok())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trip(p in params(), records in proptest::collection::vec(input(), 1..40)) {
        let bytes = match build(&p, &records) {
            Err(FormatError::CodecNotEnabled(_)) => return Ok(()),
            other => other?,
        };
        let batch = Batch::from_bytes(bytes.clone())?;
        let h = *batch.header();
        prop_assert_eq!(h.base_offset, p.base_offset);
        prop_assert_eq!(h.partition_leader_epoch, p.leader_epoch);
        prop_assert_eq!(h.compression()?, p.compression);
        prop_assert_eq!(h.is_transactional(), p.transactional);
        prop_assert_eq!(h.is_control(), p.control);
        prop_assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), p.producer);
        prop_assert_eq!(h.records_count as usize, records.len());
        prop_assert_eq!(h.last_offset_delta as usize, records.len() - 1);
        prop_assert_eq!(h.base_timestamp, records[0].0);
        let max = records.iter().map(|r| r.0).max().unwrap_or_default();
        prop_assert_eq!(h.max_timestamp, max);
        prop_assert_eq!(batch.validate_records()?, records.len());

        let decoded = decode_all(bytes)?;
        prop_assert_eq!(decoded.len(), records.len());
        for (i, (r, (ts, key, value, headers))) in decoded.iter().zip(&records).enumerate() {
            prop_assert_eq!(r.offset(), p.base_offset.wrapping_add(i as i64));
            let expected_ts = if p.log_append_time { max } else { *ts };
            prop_assert_eq!(r.timestamp(), expected_ts);
            prop_assert_eq!(r.key().map(|k| k.to_vec()), key.clone());
            prop_assert_eq!(r.value().map(|v| v.to_vec()), value.clone());
            prop_assert_eq!(r.headers(), &headers[..]);
        }
    }

    #[test]
    fn random_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = decode_all(Bytes::from(raw.clone()));
        if let Ok((batch, _)) = Batch::decode(&Bytes::from(raw)) {
            let _ = batch.validate_records();
        }
    }

    #[test]
    fn mutated_batches_never_panic_nor_lie(
        bytes in sample_batch(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut raw = bytes.to_vec();
        for (at, byte) in &edits {
            let i = at.index(raw.len());
            raw[i] = *byte;
        }
        if let Some(cut) = cut {
            raw.truncate(cut.index(raw.len()));
        }
        let raw = Bytes::from(raw);
        for batch in Batches::new(raw.clone()).flatten() {
            // A batch is only ever handed out with a matching CRC.
            let b = batch.as_bytes();
            prop_assert!(verify_crc(b).is_ok());
            prop_assert_eq!(compute_crc(b), batch.header().crc);
            let _ = batch.validate_records();
            if let Ok(records) = batch.records() {
                for r in records {
                    let _ = r;
                }
            }
        }
    }

    #[test]
    fn single_bit_flips_after_byte_21_are_detected(
        bytes in sample_batch(),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let mut raw = bytes.to_vec();
        let i = 21 + at.index(raw.len() - 21);
        raw[i] ^= 1 << bit;
        let raw = Bytes::from(raw);
        prop_assert!(Batch::decode(&raw).is_err());
        prop_assert!(decode_all(raw).is_err());
    }

    #[test]
    fn header_bits_before_the_crc_do_not_corrupt_records(
        bytes in sample_batch(),
        epoch in any::<i32>(),
        base in any::<i64>(),
    ) {
        // baseOffset and partitionLeaderEpoch are outside the CRC and may be
        // rewritten (the log assigns offsets, the leader stamps its epoch).
        let before = decode_all(bytes.clone())?;
        let mut raw = bytes.to_vec();
        logbus::format::set_base_offset(&mut raw, base);
        logbus::format::set_partition_leader_epoch(&mut raw, epoch);
        let after = decode_all(Bytes::from(raw))?;
        prop_assert_eq!(before.len(), after.len());
        for (i, (a, b)) in before.iter().zip(&after).enumerate() {
            prop_assert_eq!(b.offset(), base.wrapping_add(i as i64));
            prop_assert_eq!(a.value(), b.value());
        }
    }
}

#[test]
fn many_records_in_every_codec() -> Result<(), FormatError> {
    for codec in CODECS {
        let mut b = BatchBuilder::new(codec).base_offset(1_000_000);
        for i in 0..5_000i64 {
            let value = i.to_be_bytes();
            b.append(1_700_000_000_000 - i, None, Some(&value), &[]);
        }
        let bytes = match b.build() {
            Err(FormatError::CodecNotEnabled(_)) => continue,
            other => other?,
        };
        let batch = Batch::from_bytes(bytes)?;
        assert_eq!(batch.validate_records()?, 5_000);
        assert_eq!(batch.header().max_timestamp, 1_700_000_000_000);
        for (i, r) in batch.records()?.enumerate() {
            let r = r?;
            assert_eq!(r.offset(), 1_000_000 + i as i64);
            assert_eq!(r.timestamp(), 1_700_000_000_000 - i as i64);
            assert_eq!(
                r.value().map(|v| &v[..]),
                Some(&(i as i64).to_be_bytes()[..])
            );
        }
    }
    Ok(())
}

#[test]
fn truncation_at_every_byte_is_an_error() -> Result<(), FormatError> {
    let mut b = BatchBuilder::new(Compression::None);
    b.append(
        1,
        Some(b"key"),
        Some(b"value"),
        &[Header::new("h", Some(b"v"))],
    );
    b.append(2, None, None, &[]);
    let bytes = b.build()?;
    for cut in 0..bytes.len() {
        let part = bytes.slice(..cut);
        assert!(Batch::decode(&part).is_err(), "cut at {cut}");
        assert!(decode_all(part).is_err() || cut == 0, "cut at {cut}");
    }
    Ok(())
}
