//! Strict validation of a freshly produced batch, on borrowed bytes.
//!
//! The log runs this on every append before anything is stored, on the
//! caller's buffer (no copy into `Bytes` first).

use crate::error::FormatError;
use crate::format::compression;
use crate::format::header::{BatchHeader, RECORDS_OFFSET};
use crate::format::record::{scan_record, scan_short_record};
use crate::types::{Compression, TimestampType};

/// Checks the records of the batch `batch` (exactly one batch whose header,
/// structure and CRC were already checked, e.g. by
/// [`check_batch`](crate::format::check_batch)) as a producer must send them:
/// at least one record, exactly `recordsCount` records, offset deltas 0, 1,
/// ..., n-1 with the last equal to `lastOffsetDelta`, every record well
/// formed with no bytes left over, and, for `CreateTime` batches,
/// `maxTimestamp` equal to the largest record timestamp. Returns the number
/// of records. A compressed batch is decompressed once to be checked.
///
/// # Errors
/// [`FormatError::Empty`], [`FormatError::RecordCountMismatch`],
/// [`FormatError::InvalidOffsetDelta`], [`FormatError::InvalidRecord`],
/// [`FormatError::MalformedVarint`], and the codec errors.
pub fn validate_batch_records(batch: &[u8], header: &BatchHeader) -> Result<usize, FormatError> {
    let declared = match header.records_count {
        0 => return Err(FormatError::Empty),
        n if n < 0 => return Err(FormatError::InvalidRecord("negative recordsCount")),
        n => n,
    };
    let records = batch.get(RECORDS_OFFSET..).unwrap_or_default();
    let decompressed;
    let data: &[u8] = match header.compression()? {
        Compression::None => records,
        codec => {
            decompressed = compression::decompress(codec, records)?;
            &decompressed
        }
    };
    let mut pos = 0;
    let mut max_timestamp = i64::MIN;
    for expected in 0..declared {
        if pos >= data.len() {
            return Err(FormatError::RecordCountMismatch {
                declared,
                actual: expected as usize,
            });
        }
        // Most records take the fast path; the others, and every invalid
        // record, are scanned again by the full grammar, which decides.
        let (timestamp_delta, end) = match scan_short_record(data, pos, expected) {
            Some(record) => record,
            None => full_record(data, pos, expected)?,
        };
        max_timestamp = max_timestamp.max(header.base_timestamp.wrapping_add(timestamp_delta));
        pos = end;
    }
    if pos != data.len() {
        return Err(FormatError::InvalidRecord(
            "bytes left after the last record",
        ));
    }
    if declared - 1 != header.last_offset_delta {
        return Err(FormatError::InvalidOffsetDelta(
            "lastOffsetDelta does not match the last record",
        ));
    }
    if header.timestamp_type() == TimestampType::CreateTime && max_timestamp != header.max_timestamp
    {
        return Err(FormatError::InvalidRecord(
            "maxTimestamp is not the largest record timestamp",
        ));
    }
    Ok(declared as usize)
}

/// The record at `data[pos]` by the full grammar, which must have offset
/// delta `expected`: its timestamp delta and end. Out of line, so that the
/// validator's loop around the fast path keeps its values in registers.
#[inline(never)]
fn full_record(data: &[u8], pos: usize, expected: i32) -> Result<(i64, usize), FormatError> {
    // The record's error code becomes a `FormatError` only on failure.
    let raw = scan_record(data, pos).map_err(FormatError::from)?;
    if raw.offset_delta != expected {
        return Err(FormatError::InvalidOffsetDelta(
            "record offset deltas are not 0, 1, 2, ...",
        ));
    }
    Ok((raw.timestamp_delta, raw.end))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::format::record::Header;
    use crate::format::varint::{read_varint, read_varlong};
    use crate::format::{BatchBuilder, check_batch};

    /// The record grammar as it was written before `scan_record`, kept as the
    /// reference model: a cursor that returns `FormatError` at every step.
    fn reference_record(data: &[u8], pos: usize) -> Result<(i64, i32, usize), FormatError> {
        let invalid = FormatError::InvalidRecord;
        let (len, n) = read_varint(data.get(pos..).unwrap_or_default())?;
        if len < 0 {
            return Err(invalid("negative record length"));
        }
        let start = pos + n;
        let end = match start.checked_add(len as usize) {
            Some(end) if end <= data.len() => end,
            _ => return Err(invalid("record length exceeds the batch")),
        };
        let mut p = start;
        let varint = |p: &mut usize| -> Result<i32, FormatError> {
            let (v, n) = read_varint(&data[*p..end])?;
            *p += n;
            Ok(v)
        };
        let take = |p: &mut usize, len: usize, what| -> Result<usize, FormatError> {
            match p.checked_add(len) {
                Some(stop) if stop <= end => Ok(std::mem::replace(p, stop)),
                _ => Err(invalid(what)),
            }
        };
        let nullable = |p: &mut usize, what| -> Result<(), FormatError> {
            match varint(p)? {
                -1 => Ok(()),
                len if len < 0 => Err(invalid(what)),
                len => take(p, len as usize, what).map(|_| ()),
            }
        };
        take(&mut p, 1, "record ends before its attributes")?;
        let (timestamp_delta, n) = read_varlong(&data[p..end])?;
        p += n;
        let offset_delta = varint(&mut p)?;
        nullable(&mut p, "invalid key length")?;
        nullable(&mut p, "invalid value length")?;
        let count = varint(&mut p)?;
        if count < 0 {
            return Err(invalid("negative header count"));
        }
        for _ in 0..count {
            let key_len = varint(&mut p)?;
            if key_len < 0 {
                return Err(invalid("invalid header key length"));
            }
            let key = take(&mut p, key_len as usize, "invalid header key length")?;
            if std::str::from_utf8(&data[key..key + key_len as usize]).is_err() {
                return Err(invalid("header key is not valid UTF-8"));
            }
            nullable(&mut p, "invalid header value length")?;
        }
        if p != end {
            return Err(invalid("record length does not match its fields"));
        }
        Ok((timestamp_delta, offset_delta, end))
    }

    /// `validate_batch_records` as it was, for uncompressed batches.
    fn reference_validate(batch: &[u8], header: &BatchHeader) -> Result<usize, FormatError> {
        let declared = match header.records_count {
            0 => return Err(FormatError::Empty),
            n if n < 0 => return Err(FormatError::InvalidRecord("negative recordsCount")),
            n => n,
        };
        let data = batch.get(RECORDS_OFFSET..).unwrap_or_default();
        let mut pos = 0;
        let mut max_timestamp = i64::MIN;
        for expected in 0..declared {
            if pos >= data.len() {
                return Err(FormatError::RecordCountMismatch {
                    declared,
                    actual: expected as usize,
                });
            }
            let (timestamp_delta, offset_delta, end) = reference_record(data, pos)?;
            if offset_delta != expected {
                return Err(FormatError::InvalidOffsetDelta(
                    "record offset deltas are not 0, 1, 2, ...",
                ));
            }
            max_timestamp = max_timestamp.max(header.base_timestamp.wrapping_add(timestamp_delta));
            pos = end;
        }
        if pos != data.len() {
            return Err(FormatError::InvalidRecord(
                "bytes left after the last record",
            ));
        }
        if declared - 1 != header.last_offset_delta {
            return Err(FormatError::InvalidOffsetDelta(
                "lastOffsetDelta does not match the last record",
            ));
        }
        if header.timestamp_type() == TimestampType::CreateTime
            && max_timestamp != header.max_timestamp
        {
            return Err(FormatError::InvalidRecord(
                "maxTimestamp is not the largest record timestamp",
            ));
        }
        Ok(declared as usize)
    }

    type Rec = (
        i64,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Vec<(String, Option<Vec<u8>>)>,
    );

    fn record() -> impl Strategy<Value = Rec> {
        let bytes = || proptest::option::of(proptest::collection::vec(any::<u8>(), 0..80));
        (
            prop_oneof![-3i64..300, any::<i64>()],
            bytes(),
            bytes(),
            proptest::collection::vec(("[a-zé]{0,3}", bytes()), 0..3),
        )
    }

    fn build(records: &[Rec]) -> Vec<u8> {
        let mut b = BatchBuilder::new(Compression::None);
        for (ts, key, value, headers) in records {
            let headers: Vec<Header> = headers
                .iter()
                .map(|(k, v)| Header::new(k.as_str(), v.as_deref()))
                .collect();
            b.append(
                1_700_000_000_000 + ts,
                key.as_deref(),
                value.as_deref(),
                &headers,
            );
        }
        b.build().map(|b| b.to_vec()).unwrap_or_default()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// For random batches, mutated in their records section and header
        /// fields, the validator gives exactly the reference model's answer.
        #[test]
        fn same_verdict_as_reference(
            records in proptest::collection::vec(record(), 1..6),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            cut in proptest::option::of(any::<prop::sample::Index>()),
            count_delta in prop_oneof![8 => Just(0i32), 1 => -2i32..3],
            last_delta in prop_oneof![8 => Just(0i32), 1 => -2i32..3],
            max_ts_delta in prop_oneof![8 => Just(0i64), 1 => -2i64..3],
        ) {
            let mut bytes = build(&records);
            let mut header = check_batch(&bytes).expect("builder output is valid");
            prop_assert_eq!(validate_batch_records(&bytes, &header), Ok(records.len()));
            let records_len = bytes.len() - RECORDS_OFFSET;
            for (at, byte) in edits {
                bytes[RECORDS_OFFSET + at.index(records_len)] = byte;
            }
            if let Some(cut) = cut {
                bytes.truncate(RECORDS_OFFSET + cut.index(records_len));
            }
            header.records_count = header.records_count.wrapping_add(count_delta);
            header.last_offset_delta = header.last_offset_delta.wrapping_add(last_delta);
            header.max_timestamp = header.max_timestamp.wrapping_add(max_ts_delta);
            prop_assert_eq!(
                validate_batch_records(&bytes, &header),
                reference_validate(&bytes, &header)
            );
        }
    }
}
