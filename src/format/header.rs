//! The fixed 61-byte header of a v2 record batch.
//!
//! Layout (all integers big-endian; see `docs/format.md`):
//!
//! ```text
//! offset  size  field                 covered by CRC
//!      0     8  baseOffset            no
//!      8     4  batchLength           no   (bytes after this field)
//!     12     4  partitionLeaderEpoch  no
//!     16     1  magic (= 2)           no
//!     17     4  crc (CRC-32C)         no
//!     21     2  attributes            yes
//!     23     4  lastOffsetDelta       yes
//!     27     8  baseTimestamp         yes
//!     35     8  maxTimestamp          yes
//!     43     8  producerId            yes
//!     51     2  producerEpoch         yes
//!     53     4  baseSequence          yes
//!     57     4  recordsCount          yes
//!     61     -  records ...           yes
//! ```

use byteorder::{BigEndian, ByteOrder};

use crate::error::FormatError;
use crate::types::{Compression, TimestampType};

/// Position of `baseOffset`.
pub const BASE_OFFSET_OFFSET: usize = 0;
/// Position of `batchLength`.
pub const BATCH_LENGTH_OFFSET: usize = 8;
/// Bytes before the part that `batchLength` counts: baseOffset + batchLength.
pub const LOG_OVERHEAD: usize = 12;
/// Position of `partitionLeaderEpoch`.
pub const PARTITION_LEADER_EPOCH_OFFSET: usize = 12;
/// Position of `magic`.
pub const MAGIC_OFFSET: usize = 16;
/// Position of `crc`.
pub const CRC_OFFSET: usize = 17;
/// Position of `attributes`; the CRC covers from here to the end of the batch.
pub const ATTRIBUTES_OFFSET: usize = 21;
/// Position of `lastOffsetDelta`.
pub const LAST_OFFSET_DELTA_OFFSET: usize = 23;
/// Position of `baseTimestamp`.
pub const BASE_TIMESTAMP_OFFSET: usize = 27;
/// Position of `maxTimestamp`.
pub const MAX_TIMESTAMP_OFFSET: usize = 35;
/// Position of `producerId`.
pub const PRODUCER_ID_OFFSET: usize = 43;
/// Position of `producerEpoch`.
pub const PRODUCER_EPOCH_OFFSET: usize = 51;
/// Position of `baseSequence`.
pub const BASE_SEQUENCE_OFFSET: usize = 53;
/// Position of `recordsCount`.
pub const RECORDS_COUNT_OFFSET: usize = 57;
/// Position of the first record; also the size of an empty batch.
pub const RECORDS_OFFSET: usize = 61;
/// Size of a batch holding no records (Kafka's `RECORD_BATCH_OVERHEAD`).
pub const RECORD_BATCH_OVERHEAD: usize = RECORDS_OFFSET;
/// The only supported magic value.
pub const MAGIC_V2: i8 = 2;
/// Smallest valid `batchLength`: the header after the length field.
pub const MIN_BATCH_LENGTH: i32 = (RECORD_BATCH_OVERHEAD - LOG_OVERHEAD) as i32;

/// Attribute bits 0..=2: compression codec.
pub const COMPRESSION_CODEC_MASK: u16 = 0x07;
/// Attribute bit 3: timestamp type (1 = LogAppendTime).
pub const TIMESTAMP_TYPE_MASK: u16 = 0x08;
/// Attribute bit 4: transactional.
pub const TRANSACTIONAL_FLAG_MASK: u16 = 0x10;
/// Attribute bit 5: control batch.
pub const CONTROL_FLAG_MASK: u16 = 0x20;
/// Attribute bit 6: the delete horizon is set in baseTimestamp (KIP-534).
pub const DELETE_HORIZON_FLAG_MASK: u16 = 0x40;

/// `producerId` of a batch written without idempotence.
pub const NO_PRODUCER_ID: i64 = -1;
/// `producerEpoch` of a batch written without idempotence.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// `baseSequence` of a batch written without idempotence.
pub const NO_SEQUENCE: i32 = -1;
/// `partitionLeaderEpoch` before a leader stamps it.
pub const NO_PARTITION_LEADER_EPOCH: i32 = -1;
/// A timestamp that is not set.
pub const NO_TIMESTAMP: i64 = -1;

/// The decoded fixed header of a v2 record batch.
///
/// [`BatchHeader::parse`] checks structure only (length, magic); the CRC is
/// checked by [`verify_crc`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Bytes after the `batchLength` field.
    pub batch_length: i32,
    /// Epoch of the leader that appended the batch.
    pub partition_leader_epoch: i32,
    /// Magic byte; always 2 once parsed.
    pub magic: i8,
    /// Stored CRC-32C of attributes..end.
    pub crc: u32,
    /// Attribute bits.
    pub attributes: u16,
    /// Offset of the last record minus `base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record (or the delete horizon, see attributes).
    pub base_timestamp: i64,
    /// Largest record timestamp (or the append time under LogAppendTime).
    pub max_timestamp: i64,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// Producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence number of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub records_count: i32,
}

impl BatchHeader {
    /// Parses the header at the start of `buf`.
    ///
    /// Checks that `buf` holds the 61-byte header, that magic is 2, and that
    /// `batchLength` covers at least the header. It does not need the whole
    /// batch and does not check the CRC.
    ///
    /// # Errors
    /// [`FormatError::Truncated`], [`FormatError::UnsupportedMagic`],
    /// [`FormatError::InvalidBatchLength`].
    pub fn parse(buf: &[u8]) -> Result<Self, FormatError> {
        if buf.len() < RECORD_BATCH_OVERHEAD {
            return Err(FormatError::Truncated {
                needed: RECORD_BATCH_OVERHEAD,
                available: buf.len(),
            });
        }
        let batch_length = BigEndian::read_i32(&buf[BATCH_LENGTH_OFFSET..]);
        let magic = buf[MAGIC_OFFSET] as i8;
        if magic != MAGIC_V2 {
            return Err(FormatError::UnsupportedMagic(magic));
        }
        if batch_length < MIN_BATCH_LENGTH {
            return Err(FormatError::InvalidBatchLength(batch_length));
        }
        Ok(BatchHeader {
            base_offset: BigEndian::read_i64(&buf[BASE_OFFSET_OFFSET..]),
            batch_length,
            partition_leader_epoch: BigEndian::read_i32(&buf[PARTITION_LEADER_EPOCH_OFFSET..]),
            magic,
            crc: BigEndian::read_u32(&buf[CRC_OFFSET..]),
            attributes: BigEndian::read_u16(&buf[ATTRIBUTES_OFFSET..]),
            last_offset_delta: BigEndian::read_i32(&buf[LAST_OFFSET_DELTA_OFFSET..]),
            base_timestamp: BigEndian::read_i64(&buf[BASE_TIMESTAMP_OFFSET..]),
            max_timestamp: BigEndian::read_i64(&buf[MAX_TIMESTAMP_OFFSET..]),
            producer_id: BigEndian::read_i64(&buf[PRODUCER_ID_OFFSET..]),
            producer_epoch: BigEndian::read_i16(&buf[PRODUCER_EPOCH_OFFSET..]),
            base_sequence: BigEndian::read_i32(&buf[BASE_SEQUENCE_OFFSET..]),
            records_count: BigEndian::read_i32(&buf[RECORDS_COUNT_OFFSET..]),
        })
    }

    /// Total size of the batch in bytes, `batchLength + 12`.
    #[must_use]
    pub fn total_size(&self) -> usize {
        // parse() guarantees batch_length >= MIN_BATCH_LENGTH > 0.
        self.batch_length as usize + LOG_OVERHEAD
    }

    /// Offset of the last record (`baseOffset + lastOffsetDelta`).
    #[must_use]
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .wrapping_add(i64::from(self.last_offset_delta))
    }

    /// Offset after the last record.
    #[must_use]
    pub fn next_offset(&self) -> i64 {
        self.last_offset().wrapping_add(1)
    }

    /// The compression codec named by the attributes.
    ///
    /// # Errors
    /// [`FormatError::UnknownCompression`] for ids 5..=7.
    pub fn compression(&self) -> Result<Compression, FormatError> {
        Compression::from_id((self.attributes & COMPRESSION_CODEC_MASK) as u8)
    }

    /// The timestamp type named by the attributes.
    #[must_use]
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_MASK != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// Whether the batch belongs to a transaction.
    #[must_use]
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_FLAG_MASK != 0
    }

    /// Whether the batch is a control batch (transaction markers).
    #[must_use]
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_FLAG_MASK != 0
    }

    /// Whether baseTimestamp holds the delete horizon (KIP-534).
    #[must_use]
    pub fn has_delete_horizon(&self) -> bool {
        self.attributes & DELETE_HORIZON_FLAG_MASK != 0
    }

    /// The base and last offsets, checked: the base offset is not negative,
    /// lastOffsetDelta is not negative, and the offset after the last one
    /// still fits an `i64` (so `last + 1` never wraps).
    ///
    /// # Errors
    /// [`FormatError::InvalidOffsetDelta`] for a negative lastOffsetDelta,
    /// [`FormatError::InvalidBaseOffset`] otherwise.
    pub(crate) fn checked_offsets(&self) -> Result<(u64, u64), FormatError> {
        if self.last_offset_delta < 0 {
            return Err(FormatError::InvalidOffsetDelta(
                "lastOffsetDelta is negative",
            ));
        }
        let last = self
            .base_offset
            .checked_add(i64::from(self.last_offset_delta))
            .filter(|&last| self.base_offset >= 0 && last < i64::MAX);
        match last {
            Some(last) => Ok((self.base_offset as u64, last as u64)),
            None => Err(FormatError::InvalidBaseOffset {
                base_offset: self.base_offset,
                last_offset_delta: self.last_offset_delta,
            }),
        }
    }
}

/// How a stored batch's offsets must follow the batch before it. The CRC
/// does not cover `baseOffset`, so a batch's place is what checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OffsetOrder {
    /// A log that was never compacted: each batch starts exactly at the
    /// previous batch's last offset + 1, the first one at its segment's
    /// base offset.
    Contiguous,
    /// A compacted log: each batch starts above the previous batch's last
    /// offset, the first one at or above its segment's base offset.
    Increasing,
}

impl OffsetOrder {
    /// The order of a log that is compacted (`cleanup.policy` includes
    /// `compact`) or not.
    pub(crate) fn of_log(compacted: bool) -> Self {
        if compacted {
            OffsetOrder::Increasing
        } else {
            OffsetOrder::Contiguous
        }
    }

    /// Checks `header`'s offsets ([`BatchHeader::checked_offsets`]) and
    /// that the batch may start where `expected` is the next offset: the
    /// previous batch's last offset + 1, or the segment's base offset for
    /// its first batch. Returns the base and last offsets.
    ///
    /// # Errors
    /// As [`BatchHeader::checked_offsets`], and
    /// [`FormatError::OffsetsOutOfSequence`] when the batch does not follow.
    pub(crate) fn check(
        self,
        expected: u64,
        header: &BatchHeader,
    ) -> Result<(u64, u64), FormatError> {
        let (base, last) = header.checked_offsets()?;
        let follows = match self {
            OffsetOrder::Contiguous => base == expected,
            OffsetOrder::Increasing => base >= expected,
        };
        if follows {
            Ok((base, last))
        } else {
            Err(out_of_sequence(base, last, expected, self.rule()))
        }
    }

    fn rule(self) -> &'static str {
        match self {
            OffsetOrder::Contiguous => {
                "in a log that is not compacted a batch starts exactly at that offset, right \
                 after the batch before it or at its segment's base offset"
            }
            OffsetOrder::Increasing => {
                "a batch starts at or above that offset, after the batch before it and at or \
                 above its segment's base offset"
            }
        }
    }
}

/// A [`FormatError::OffsetsOutOfSequence`].
pub(crate) fn out_of_sequence(
    base: u64,
    last: u64,
    expected: u64,
    rule: &'static str,
) -> FormatError {
    let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    FormatError::OffsetsOutOfSequence {
        base: signed(base),
        last: signed(last),
        expected: signed(expected),
        rule,
    }
}

/// Computes the CRC-32C that a batch's `crc` field must hold: over
/// attributes..end of `batch`.
///
/// # Panics
/// If `batch` is shorter than the 61-byte header.
#[must_use]
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c(&batch[ATTRIBUTES_OFFSET..])
}

/// CRC-32C (Castagnoli, Kafka's batch checksum) of `bytes`, with the widest
/// instructions the CPU offers (chosen at run time).
#[inline]
#[must_use]
pub(crate) fn crc32c(bytes: &[u8]) -> u32 {
    crc_fast::crc32_iscsi(bytes)
}

/// Checks the stored CRC of the whole batch in `batch` (exactly one batch,
/// `total_size` bytes).
///
/// # Errors
/// [`FormatError::Truncated`] if `batch` is shorter than the header,
/// [`FormatError::CrcMismatch`] if the CRC differs.
pub fn verify_crc(batch: &[u8]) -> Result<(), FormatError> {
    if batch.len() < RECORD_BATCH_OVERHEAD {
        return Err(FormatError::Truncated {
            needed: RECORD_BATCH_OVERHEAD,
            available: batch.len(),
        });
    }
    let stored = BigEndian::read_u32(&batch[CRC_OFFSET..]);
    let computed = compute_crc(batch);
    if stored == computed {
        Ok(())
    } else {
        Err(FormatError::CrcMismatch { stored, computed })
    }
}

/// Parses the header at the start of `buf` and checks that the whole batch
/// is present and its CRC matches. Returns the header; the batch is
/// `&buf[..header.total_size()]`. Records are not decoded.
///
/// # Errors
/// As [`BatchHeader::parse`] and [`verify_crc`], plus
/// [`FormatError::Truncated`] when `buf` ends inside the batch and
/// [`FormatError::InvalidOffsetDelta`] when `lastOffsetDelta` is negative.
pub fn check_batch(buf: &[u8]) -> Result<BatchHeader, FormatError> {
    let header = check_batch_structure(buf)?;
    verify_crc(&buf[..header.total_size()])?;
    Ok(header)
}

/// [`check_batch`] without the CRC: the header parses, the whole batch is
/// present and `lastOffsetDelta` is not negative. For walks over batches
/// whose CRCs were already checked (Kafka's producer-state rebuild reads
/// batch headers only, too).
///
/// ```
/// use logbus::format::{BatchBuilder, check_batch_structure};
/// use logbus::Compression;
/// let mut builder = BatchBuilder::new(Compression::None);
/// builder.append(0, Some(b"k"), Some(b"v"), &[]);
/// let mut batch = builder.build()?.to_vec();
/// let last = batch.len() - 1;
/// batch[last] ^= 1; // a damaged record: the CRC no longer matches
/// assert!(check_batch_structure(&batch).is_ok());
/// assert!(logbus::format::check_batch(&batch).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// As [`check_batch`], but never [`FormatError::CrcMismatch`].
pub fn check_batch_structure(buf: &[u8]) -> Result<BatchHeader, FormatError> {
    let header = BatchHeader::parse(buf)?;
    let size = header.total_size();
    if buf.len() < size {
        return Err(FormatError::Truncated {
            needed: size,
            available: buf.len(),
        });
    }
    if header.last_offset_delta < 0 {
        return Err(FormatError::InvalidOffsetDelta(
            "lastOffsetDelta is negative",
        ));
    }
    Ok(header)
}

/// Overwrites `baseOffset` (not covered by the CRC).
///
/// # Panics
/// If `batch` is shorter than the header.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    BigEndian::write_i64(&mut batch[BASE_OFFSET_OFFSET..], base_offset);
}

/// Overwrites `partitionLeaderEpoch` (not covered by the CRC).
///
/// # Panics
/// If `batch` is shorter than the header.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    BigEndian::write_i32(&mut batch[PARTITION_LEADER_EPOCH_OFFSET..], epoch);
}

/// Stamps a batch with the log append time, as a Kafka broker does for a
/// topic with `message.timestamp.type=LogAppendTime`: sets the timestamp-type
/// attribute bit and `maxTimestamp`, then recomputes the CRC.
///
/// # Panics
/// If `batch` is shorter than the header.
pub fn set_log_append_time(batch: &mut [u8], timestamp: i64) {
    let attributes = BigEndian::read_u16(&batch[ATTRIBUTES_OFFSET..]) | TIMESTAMP_TYPE_MASK;
    BigEndian::write_u16(&mut batch[ATTRIBUTES_OFFSET..], attributes);
    BigEndian::write_i64(&mut batch[MAX_TIMESTAMP_OFFSET..], timestamp);
    let crc = compute_crc(batch);
    BigEndian::write_u32(&mut batch[CRC_OFFSET..], crc);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    #[test]
    fn crc32c_matches_the_catalogue_check_value() {
        // CRC-32/ISCSI's check value: the CRC of "123456789".
        assert_eq!(super::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(super::crc32c(b""), 0);
    }

    proptest! {
        /// The accelerated CRC agrees with an independent implementation
        /// at every length and alignment (its SIMD paths switch at 256
        /// bytes and work in blocks, with a scalar head and tail).
        #[test]
        fn crc32c_matches_an_independent_implementation(
            bytes in proptest::collection::vec(any::<u8>(), 0..20_000),
            skip in 0usize..64,
        ) {
            let skip = skip.min(bytes.len());
            let slice = &bytes[skip..];
            prop_assert_eq!(super::crc32c(slice), crc32c::crc32c(slice));
        }
    }
}
