//! Strict validation of a freshly produced batch, on borrowed bytes.
//!
//! The log runs this on every append before anything is stored, on the
//! caller's buffer (no copy into `Bytes` first).

use crate::error::FormatError;
use crate::format::compression;
use crate::format::header::{BatchHeader, RECORDS_OFFSET};
use crate::format::record::parse_record;
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
        let raw = parse_record(data, pos)?;
        if raw.offset_delta != expected {
            return Err(FormatError::InvalidOffsetDelta(
                "record offset deltas are not 0, 1, 2, ...",
            ));
        }
        max_timestamp = max_timestamp.max(header.base_timestamp.wrapping_add(raw.timestamp_delta));
        pos = raw.end;
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
