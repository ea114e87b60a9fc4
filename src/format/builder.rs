//! [`BatchBuilder`]: encodes records into one v2 batch.

use byteorder::{BigEndian, ByteOrder};
use bytes::Bytes;

use super::compression;
use super::header::{
    ATTRIBUTES_OFFSET, BASE_OFFSET_OFFSET, BASE_SEQUENCE_OFFSET, BASE_TIMESTAMP_OFFSET,
    BATCH_LENGTH_OFFSET, CONTROL_FLAG_MASK, CRC_OFFSET, LAST_OFFSET_DELTA_OFFSET, LOG_OVERHEAD,
    MAGIC_OFFSET, MAGIC_V2, MAX_TIMESTAMP_OFFSET, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH,
    NO_PRODUCER_ID, NO_SEQUENCE, PARTITION_LEADER_EPOCH_OFFSET, PRODUCER_EPOCH_OFFSET,
    PRODUCER_ID_OFFSET, RECORDS_COUNT_OFFSET, RECORDS_OFFSET, TIMESTAMP_TYPE_MASK,
    TRANSACTIONAL_FLAG_MASK, compute_crc,
};
use super::record::{APPEND_SLACK, Header, encode_record};
use crate::error::FormatError;
use crate::types::{Compression, TimestampType};

/// Whether the CPU has `prefetchw` (CPUID 8000_0001h, ECX bit 8): asked
/// once, then one relaxed load.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetchw_supported() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering};
    static KNOWN: AtomicU8 = AtomicU8::new(0);
    match KNOWN.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let yes = std::arch::x86_64::__cpuid(0x8000_0001).ecx & (1 << 8) != 0;
            KNOWN.store(if yes { 1 } else { 2 }, Ordering::Relaxed);
            yes
        }
    }
}

/// Builds one Kafka v2 record batch.
///
/// Records are encoded as they are appended, straight into one buffer that
/// already reserves the 61-byte header, so an uncompressed batch is built
/// without copying. [`BatchBuilder::build`] fills in the header, compresses
/// the records section if a codec was chosen, and sets the CRC-32C.
///
/// Defaults match a non-idempotent Kafka producer: base offset 0,
/// `CreateTime`, producer id/epoch/sequence -1, partition leader epoch -1,
/// not transactional, not control.
///
/// The first record's timestamp becomes `baseTimestamp`; `maxTimestamp` is
/// the largest record timestamp (the builder does not substitute a log
/// append time, see
/// [`set_log_append_time`](super::set_log_append_time)).
///
/// ```
/// use logbus::Compression;
/// use logbus::format::{Batch, BatchBuilder};
///
/// let mut builder = BatchBuilder::new(Compression::None).base_offset(42);
/// builder.append(1_700_000_000_000, Some(b"k"), Some(b"hello"), &[]);
/// builder.append(1_700_000_000_005, None, Some(b"world"), &[]);
/// let bytes = builder.build()?;
///
/// let batch = Batch::from_bytes(bytes)?;
/// assert_eq!(batch.validate_records()?, 2);
/// let offsets: Vec<i64> = batch
///     .records()?
///     .map(|r| r.map(|r| r.offset()))
///     .collect::<Result<_, _>>()?;
/// assert_eq!(offsets, [42, 43]);
/// # Ok::<(), logbus::FormatError>(())
/// ```
#[must_use]
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    compression: Compression,
    timestamp_type: TimestampType,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    transactional: bool,
    control: bool,
    partition_leader_epoch: i32,
    base_offset: i64,
    base_timestamp: i64,
    max_timestamp: i64,
    count: usize,
    /// `RECORDS_OFFSET` header bytes, then the encoded records.
    buf: Vec<u8>,
    /// The batch [`BatchBuilder::finish`] compressed, kept for its capacity.
    compressed: Vec<u8>,
    /// A record could not be encoded (a length beyond `i32`).
    too_large: bool,
}

impl BatchBuilder {
    /// A builder for a batch compressed with `compression`.
    pub fn new(compression: Compression) -> Self {
        Self::with_capacity(compression, 0)
    }

    /// A builder whose buffer has room for `bytes` bytes of batch (header
    /// and uncompressed records) before it grows: with the batch size the
    /// producer aims for, appends never reallocate. A few dozen bytes more
    /// than the largest batch avoids a last reallocation, as each append
    /// reserves a little slack.
    ///
    /// ```
    /// use logbus::Compression;
    /// use logbus::format::BatchBuilder;
    ///
    /// let mut builder = BatchBuilder::with_capacity(Compression::None, 16 << 10);
    /// builder.append(1_700_000_000_000, None, Some(b"v"), &[]);
    /// assert_eq!(builder.build()?.len(), 69);
    /// # Ok::<(), logbus::FormatError>(())
    /// ```
    pub fn with_capacity(compression: Compression, bytes: usize) -> Self {
        Self::with_buffer(compression, Vec::with_capacity(bytes.max(RECORDS_OFFSET)))
    }

    /// A builder that builds in `buf` (emptied first), keeping its
    /// capacity: the buffer of a batch built before can be used again.
    pub(crate) fn with_buffer(compression: Compression, mut buf: Vec<u8>) -> Self {
        buf.clear();
        buf.resize(RECORDS_OFFSET, 0);
        BatchBuilder {
            compression,
            timestamp_type: TimestampType::CreateTime,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            transactional: false,
            control: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            base_offset: 0,
            base_timestamp: 0,
            max_timestamp: 0,
            count: 0,
            buf,
            compressed: Vec::new(),
            too_large: false,
        }
    }

    /// Sets the timestamp type attribute (default `CreateTime`).
    pub fn timestamp_type(mut self, timestamp_type: TimestampType) -> Self {
        self.timestamp_type = timestamp_type;
        self
    }

    /// Sets the idempotent producer's id, epoch and the sequence number of
    /// the first record (defaults -1, -1, -1).
    pub fn producer(mut self, id: i64, epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = id;
        self.producer_epoch = epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Sets the transactional attribute (default false).
    pub fn transactional(mut self, transactional: bool) -> Self {
        self.transactional = transactional;
        self
    }

    /// Sets the control attribute (default false).
    pub fn control(mut self, control: bool) -> Self {
        self.control = control;
        self
    }

    /// Sets `partitionLeaderEpoch` (default -1).
    pub fn partition_leader_epoch(mut self, epoch: i32) -> Self {
        self.partition_leader_epoch = epoch;
        self
    }

    /// Sets `baseOffset` (default 0). Record offsets are `base_offset`,
    /// `base_offset + 1`, ... in append order.
    pub fn base_offset(mut self, base_offset: i64) -> Self {
        self.base_offset = base_offset;
        self
    }

    /// Appends a record with the next offset delta (0, 1, 2, ...).
    ///
    /// Timestamps may go backwards; deltas are signed. A record whose key,
    /// value, header or total length does not fit Kafka's 32-bit lengths is
    /// not added, and [`BatchBuilder::build`] then fails.
    pub fn append(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) {
        let Ok(offset_delta) = i32::try_from(self.count) else {
            self.too_large = true;
            return;
        };
        let base_timestamp = if self.count == 0 {
            timestamp
        } else {
            self.base_timestamp
        };
        let timestamp_delta = timestamp.wrapping_sub(base_timestamp);
        if !encode_record(
            &mut self.buf,
            timestamp_delta,
            offset_delta,
            key,
            value,
            headers,
        ) {
            self.too_large = true;
            return;
        }
        if self.count == 0 {
            self.base_timestamp = timestamp;
            self.max_timestamp = timestamp;
        } else {
            self.max_timestamp = self.max_timestamp.max(timestamp);
        }
        self.count += 1;
    }

    /// Number of records appended.
    #[must_use]
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no record has been appended.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the batch if it were built uncompressed now: the header plus
    /// the encoded records. A compressed batch is usually smaller.
    #[must_use]
    pub fn estimated_size(&self) -> usize {
        self.buf.len()
    }

    /// The buffer capacity for a batch of `records_bytes` bytes of encoded
    /// records (header and append slack added): a builder made
    /// [`with_capacity`](BatchBuilder::with_capacity) this never
    /// reallocates while its records take at most `records_bytes`.
    #[inline]
    pub(crate) const fn capacity_for(records_bytes: usize) -> usize {
        RECORDS_OFFSET
            .saturating_add(records_bytes)
            .saturating_add(APPEND_SLACK)
    }

    /// Bytes the builder's buffer holds without reallocating (what it
    /// takes of the producer's `buffer.memory`).
    #[inline]
    pub(crate) fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Whether an append of a record of at most `record_bytes` encoded
    /// bytes fits the buffer as it is (no reallocation, no
    /// [`grow_to`](BatchBuilder::grow_to) needed).
    #[inline]
    pub(crate) fn has_room(&self, record_bytes: usize) -> bool {
        self.buf.capacity() - self.buf.len() >= record_bytes.saturating_add(APPEND_SLACK)
    }

    /// Asks the CPU to bring the two cache lines after the batch's end,
    /// where its next record goes, into its cache for writing (x86-64
    /// `prefetchw`; nothing elsewhere). With many partitions, a
    /// partition's next record comes after many others: its batch's next
    /// lines, fresh or last read by the thread that appended a batch in
    /// the same memory, would miss the cache then, and the producer's
    /// mutex, released right after the record is written, waits for those
    /// stores.
    #[inline(always)]
    #[cfg_attr(
        target_arch = "x86_64",
        expect(unsafe_code, reason = "a prefetch hint is inline asm")
    )]
    pub(crate) fn prefetch_next(&self) {
        #[cfg(target_arch = "x86_64")]
        if prefetchw_supported() {
            let len = self.buf.len();
            for ahead in [64, 128] {
                let at = len + ahead;
                if at < self.buf.capacity() {
                    // SAFETY: `at` is within the buffer's allocation, so
                    // the pointer is in bounds. `prefetchw` is a hint: it
                    // never faults, writes no memory, registers or flags,
                    // and is a no-op on CPUs without it (older Intel ones
                    // decode it as a NOP); the asm uses no stack.
                    unsafe {
                        std::arch::asm!(
                            "prefetchw [{}]",
                            in(reg) self.buf.as_ptr().add(at),
                            options(nostack, preserves_flags, readonly)
                        );
                    }
                }
            }
        }
    }

    /// Grows the buffer to hold `capacity` bytes (no doubling beyond it:
    /// the producer counts every byte against `buffer.memory`). Does
    /// nothing when it holds that much already.
    #[inline]
    pub(crate) fn grow_to(&mut self, capacity: usize) {
        self.buf
            .reserve_exact(capacity.saturating_sub(self.buf.len()));
    }

    /// Builds the batch: header, (compressed) records, CRC-32C.
    ///
    /// # Errors
    /// [`FormatError::Empty`] if no record was appended;
    /// [`FormatError::InvalidRecord`] if a record or the batch exceeds
    /// Kafka's 32-bit lengths; [`FormatError::CodecNotEnabled`] if the codec's
    /// cargo feature is off.
    pub fn build(mut self) -> Result<Bytes, FormatError> {
        self.check()?;
        let mut out = match self.compression {
            Compression::None => self.buf,
            codec => {
                let records = &self.buf[RECORDS_OFFSET..];
                let mut out = Vec::with_capacity(RECORDS_OFFSET + records.len() / 2 + 64);
                out.resize(RECORDS_OFFSET, 0);
                compression::compress(codec, records, &mut out)?;
                out
            }
        };
        self.buf = Vec::new();
        self.write_header(&mut out)?;
        Ok(Bytes::from(out))
    }

    /// Builds the batch of the records appended so far in the builder's own
    /// buffer (for a compressed batch, a second buffer the builder keeps)
    /// and returns it: the same bytes as [`BatchBuilder::build`], without
    /// allocating once the buffers have grown. The bytes are mutable so they
    /// can go straight to [`Log::append`](crate::Log::append), which sets
    /// the base offset. Call [`BatchBuilder::clear`] to start the next batch
    /// in the same buffers; appending more records and finishing again
    /// builds a batch of all of them.
    ///
    /// ```
    /// use logbus::Compression;
    /// use logbus::format::{Batch, BatchBuilder};
    ///
    /// let mut builder = BatchBuilder::with_capacity(Compression::None, 16 << 10);
    /// for round in 0..3 {
    ///     builder.clear();
    ///     builder.append(1_700_000_000_000 + round, None, Some(b"v"), &[]);
    ///     let batch = Batch::from_bytes(builder.finish()?.to_vec().into())?;
    ///     assert_eq!(batch.validate_records()?, 1);
    /// }
    /// # Ok::<(), logbus::FormatError>(())
    /// ```
    ///
    /// # Errors
    /// As [`BatchBuilder::build`].
    pub fn finish(&mut self) -> Result<&mut [u8], FormatError> {
        self.check()?;
        let mut out = std::mem::take(match self.compression {
            Compression::None => &mut self.buf,
            codec => {
                self.compressed.clear();
                self.compressed.resize(RECORDS_OFFSET, 0);
                compression::compress(codec, &self.buf[RECORDS_OFFSET..], &mut self.compressed)?;
                &mut self.compressed
            }
        });
        let result = self.write_header(&mut out);
        let slot = match self.compression {
            Compression::None => &mut self.buf,
            _ => &mut self.compressed,
        };
        *slot = out;
        result?;
        Ok(slot.as_mut_slice())
    }

    /// Removes the records, keeping the settings (compression, producer,
    /// base offset, ...) and the buffers' capacity, to build the next batch.
    pub fn clear(&mut self) {
        self.buf.truncate(RECORDS_OFFSET);
        self.count = 0;
        self.base_timestamp = 0;
        self.max_timestamp = 0;
        self.too_large = false;
    }

    /// The errors [`BatchBuilder::build`] reports before encoding.
    fn check(&self) -> Result<(), FormatError> {
        if self.too_large {
            return Err(FormatError::InvalidRecord(
                "a record is too large for Kafka's 32-bit lengths",
            ));
        }
        if self.count == 0 {
            return Err(FormatError::Empty);
        }
        Ok(())
    }

    /// Fills in the header of `out` (header bytes, then the possibly
    /// compressed records) and its CRC.
    fn write_header(&self, out: &mut [u8]) -> Result<(), FormatError> {
        let batch_length = i32::try_from(out.len() - LOG_OVERHEAD)
            .map_err(|_| FormatError::InvalidRecord("batch exceeds 2 GiB"))?;
        // count <= i32::MAX + 1 is guaranteed by append(); a count of
        // exactly 2^31 records cannot fit in 2 GiB, so this cannot fail.
        let count = i32::try_from(self.count)
            .map_err(|_| FormatError::InvalidRecord("too many records for one batch"))?;
        let mut attributes = u16::from(self.compression.id());
        if self.timestamp_type == TimestampType::LogAppendTime {
            attributes |= TIMESTAMP_TYPE_MASK;
        }
        if self.transactional {
            attributes |= TRANSACTIONAL_FLAG_MASK;
        }
        if self.control {
            attributes |= CONTROL_FLAG_MASK;
        }
        BigEndian::write_i64(&mut out[BASE_OFFSET_OFFSET..], self.base_offset);
        BigEndian::write_i32(&mut out[BATCH_LENGTH_OFFSET..], batch_length);
        BigEndian::write_i32(
            &mut out[PARTITION_LEADER_EPOCH_OFFSET..],
            self.partition_leader_epoch,
        );
        out[MAGIC_OFFSET] = MAGIC_V2 as u8;
        BigEndian::write_u16(&mut out[ATTRIBUTES_OFFSET..], attributes);
        BigEndian::write_i32(&mut out[LAST_OFFSET_DELTA_OFFSET..], count - 1);
        BigEndian::write_i64(&mut out[BASE_TIMESTAMP_OFFSET..], self.base_timestamp);
        BigEndian::write_i64(&mut out[MAX_TIMESTAMP_OFFSET..], self.max_timestamp);
        BigEndian::write_i64(&mut out[PRODUCER_ID_OFFSET..], self.producer_id);
        BigEndian::write_i16(&mut out[PRODUCER_EPOCH_OFFSET..], self.producer_epoch);
        BigEndian::write_i32(&mut out[BASE_SEQUENCE_OFFSET..], self.base_sequence);
        BigEndian::write_i32(&mut out[RECORDS_COUNT_OFFSET..], count);
        let crc = compute_crc(out);
        BigEndian::write_u32(&mut out[CRC_OFFSET..], crc);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::header::{BatchHeader, check_batch};

    #[test]
    fn empty_batch_is_refused() {
        assert_eq!(
            BatchBuilder::new(Compression::None).build(),
            Err(FormatError::Empty)
        );
    }

    #[test]
    fn header_fields() -> Result<(), FormatError> {
        let mut b = BatchBuilder::new(Compression::None)
            .base_offset(100)
            .partition_leader_epoch(7)
            .producer(9, 2, 30)
            .transactional(true)
            .control(true)
            .timestamp_type(TimestampType::LogAppendTime);
        b.append(50, None, Some(b"a"), &[]);
        b.append(40, None, Some(b"b"), &[]);
        b.append(60, Some(b"k"), None, &[]);
        assert_eq!(b.len(), 3);
        let size = b.estimated_size();
        let bytes = b.build()?;
        assert_eq!(bytes.len(), size);
        let h: BatchHeader = check_batch(&bytes)?;
        assert_eq!(h.base_offset, 100);
        assert_eq!(h.total_size(), bytes.len());
        assert_eq!(h.partition_leader_epoch, 7);
        assert_eq!(h.attributes, 0x08 | 0x10 | 0x20);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.base_timestamp, 50);
        assert_eq!(h.max_timestamp, 60);
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (9, 2, 30)
        );
        assert_eq!(h.records_count, 3);
        Ok(())
    }

    #[test]
    fn known_bytes_of_a_one_record_batch() -> Result<(), FormatError> {
        let mut b = BatchBuilder::new(Compression::None);
        b.append(0, None, Some(b"v"), &[]);
        let bytes = b.build()?;
        let mut expected = vec![0u8; 8]; // baseOffset
        expected.extend(57i32.to_be_bytes()); // batchLength = 61 + 8 - 12
        expected.extend((-1i32).to_be_bytes()); // partitionLeaderEpoch
        expected.push(2); // magic
        expected.extend([0; 4]); // crc, checked below
        expected.extend([0, 0]); // attributes
        expected.extend(0i32.to_be_bytes()); // lastOffsetDelta
        expected.extend([0; 16]); // base and max timestamp
        expected.extend((-1i64).to_be_bytes());
        expected.extend((-1i16).to_be_bytes());
        expected.extend((-1i32).to_be_bytes());
        expected.extend(1i32.to_be_bytes()); // recordsCount
        // length 7, attrs, ts 0, offset 0, key null, value len 1, 'v', 0 headers
        expected.extend([0x0e, 0, 0, 0, 0x01, 0x02, b'v', 0]);
        let crc = crc32c::crc32c(&expected[ATTRIBUTES_OFFSET..]);
        expected[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(&bytes[..], &expected[..]);
        Ok(())
    }

    /// `finish` gives the bytes `build` gives, for every codec, and a
    /// builder reused with `clear` builds the same batch as a fresh one.
    #[test]
    fn finish_and_clear_match_build() -> Result<(), FormatError> {
        let fill = |b: &mut BatchBuilder, n: i64| {
            for i in 0..n {
                let value = vec![i as u8; (i as usize * 37) % 300];
                let headers = [Header::new("h", Some(&b"x"[..]))];
                let headers = if i % 3 == 0 { &headers[..] } else { &[] };
                b.append(
                    1_000 + i * 7 - (i % 4) * 20,
                    Some(b"key"),
                    Some(&value),
                    headers,
                );
            }
        };
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let settings = |b: BatchBuilder| b.base_offset(5).producer(1, 2, 3);
            let mut reused = settings(BatchBuilder::with_capacity(codec, 64));
            assert_eq!(reused.finish().map(|_| ()), Err(FormatError::Empty));
            for n in [3, 40, 1, 100] {
                let mut fresh = settings(BatchBuilder::new(codec));
                fill(&mut fresh, n);
                let expected = fresh.build()?;
                reused.clear();
                fill(&mut reused, n);
                assert_eq!(reused.finish()?, &expected[..], "{codec:?} {n}");
                // Finishing twice gives the same batch.
                assert_eq!(reused.finish()?, &expected[..], "{codec:?} {n}");
                check_batch(&expected)?;
            }
        }
        Ok(())
    }
}
