//! [`Batch`]: one validated v2 batch over [`Bytes`]; [`RecordIter`] over its
//! records as owned [`Record`]s, or [`RecordData`] and its [`RecordViews`]
//! over them as borrowed [`RecordView`]s; [`Batches`] over batches laid end
//! to end.

use bytes::Bytes;

use super::compression;
use super::header::{BatchHeader, RECORDS_OFFSET, check_batch};
use super::record::{RawRecord, Record, RecordView, decode_headers, read_record};
use crate::error::FormatError;
use crate::types::{Compression, TimestampType};

/// One record batch whose structure and CRC-32C have been checked.
///
/// Holding a `Batch` means: the 61-byte header parses, magic is 2,
/// `batchLength` matches the bytes, the CRC matches and `lastOffsetDelta` is
/// not negative. Records are checked when they are read
/// ([`Batch::records`]) or by [`Batch::validate_records`].
///
/// ```
/// use logbus::Bytes;
/// use logbus::Compression;
/// use logbus::format::{Batch, BatchBuilder};
///
/// let mut b = BatchBuilder::new(Compression::None);
/// b.append(10, Some(b"key"), Some(b"value"), &[]);
/// let bytes: Bytes = b.build()?;
///
/// let (batch, used) = Batch::decode(&bytes)?;
/// assert_eq!(used, bytes.len());
/// let record = batch.records()?.next().expect("one record")?;
/// assert_eq!(record.value().map(|v| &v[..]), Some(&b"value"[..]));
/// # Ok::<(), logbus::FormatError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    header: BatchHeader,
    bytes: Bytes,
}

impl Batch {
    /// Checks the batch at the start of `buf` (structure and CRC) and returns
    /// it with the number of bytes it occupies. `buf` may hold more bytes
    /// after the batch; the batch shares `buf`'s memory.
    ///
    /// # Errors
    /// As [`check_batch`]: [`FormatError::Truncated`],
    /// [`FormatError::UnsupportedMagic`], [`FormatError::InvalidBatchLength`],
    /// [`FormatError::CrcMismatch`], [`FormatError::InvalidOffsetDelta`].
    pub fn decode(buf: &Bytes) -> Result<(Batch, usize), FormatError> {
        decode_at(buf, 0)
    }

    /// Checks that `bytes` holds exactly one batch, as [`Batch::decode`].
    ///
    /// # Errors
    /// As [`Batch::decode`], plus [`FormatError::InvalidBatchLength`] when
    /// bytes follow the batch.
    pub fn from_bytes(bytes: Bytes) -> Result<Batch, FormatError> {
        let (batch, used) = Batch::decode(&bytes)?;
        if used != bytes.len() {
            return Err(FormatError::InvalidBatchLength(batch.header.batch_length));
        }
        Ok(batch)
    }

    /// The parsed header.
    #[must_use]
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The batch's bytes, exactly `header().total_size()` of them.
    #[must_use]
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The batch's bytes.
    #[must_use]
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Size of the batch in bytes.
    #[must_use]
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    /// The records section, decompressed if the batch is compressed.
    fn records_data(&self) -> Result<Bytes, FormatError> {
        let section = self.bytes.slice(RECORDS_OFFSET..);
        match self.header.compression()? {
            Compression::None => Ok(section),
            codec => compression::decompress(codec, &section).map(Bytes::from),
        }
    }

    /// Iterates over the records, decompressing the records section first
    /// if needed (once, into one buffer that the records share; for an
    /// uncompressed batch keys and values are slices of the batch itself).
    ///
    /// Each record is checked as it is read: its length and every field
    /// length stay inside the record, header keys are UTF-8, offset deltas
    /// strictly increase and never exceed `lastOffsetDelta`. The iterator
    /// yields [`FormatError::RecordCountMismatch`] if the records run out
    /// before `recordsCount`, an error if bytes are left after the last one,
    /// and stops after the first error.
    ///
    /// Gaps between offset deltas are accepted here because Kafka's log
    /// compaction leaves them; [`Batch::validate_records`] is the strict
    /// check for freshly produced batches.
    ///
    /// # Errors
    /// [`FormatError::UnknownCompression`], [`FormatError::CodecNotEnabled`],
    /// [`FormatError::Decompression`], or [`FormatError::InvalidRecord`] for
    /// a negative `recordsCount`.
    pub fn records(&self) -> Result<RecordIter, FormatError> {
        let declared = usize::try_from(self.header.records_count)
            .map_err(|_| FormatError::InvalidRecord("negative recordsCount"))?;
        let log_append_time = match self.header.timestamp_type() {
            TimestampType::LogAppendTime => Some(self.header.max_timestamp),
            TimestampType::CreateTime => None,
        };
        Ok(RecordIter {
            data: self.records_data()?,
            cursor: Cursor::new(
                declared,
                self.header.base_offset,
                self.header.base_timestamp,
                log_append_time,
                self.header.last_offset_delta,
            ),
        })
    }

    /// The records section, decompressed once if the batch is compressed
    /// (for an uncompressed batch, a view of the batch's own bytes), to
    /// iterate over as borrowed [`RecordView`]s with [`RecordData::iter`]:
    /// the fast way to read records, with no reference count and no
    /// allocation per record. The records are checked as
    /// [`Batch::records`] checks them.
    ///
    /// ```
    /// use logbus::Compression;
    /// use logbus::format::{Batch, BatchBuilder};
    ///
    /// let mut b = BatchBuilder::new(Compression::None).base_offset(7);
    /// b.append(10, None, Some(b"a"), &[]);
    /// b.append(11, None, Some(b"b"), &[]);
    /// let batch = Batch::from_bytes(b.build()?)?;
    /// let data = batch.record_data()?;
    /// let mut seen = Vec::new();
    /// for record in &data {
    ///     let record = record?;
    ///     seen.push((record.offset(), record.value().unwrap_or_default().to_vec()));
    /// }
    /// assert_eq!(seen, [(7, b"a".to_vec()), (8, b"b".to_vec())]);
    /// # Ok::<(), logbus::FormatError>(())
    /// ```
    ///
    /// # Errors
    /// As [`Batch::records`].
    pub fn record_data(&self) -> Result<RecordData, FormatError> {
        let declared = usize::try_from(self.header.records_count)
            .map_err(|_| FormatError::InvalidRecord("negative recordsCount"))?;
        let log_append_time = match self.header.timestamp_type() {
            TimestampType::LogAppendTime => Some(self.header.max_timestamp),
            TimestampType::CreateTime => None,
        };
        Ok(RecordData {
            data: self.records_data()?,
            declared,
            base_offset: self.header.base_offset,
            base_timestamp: self.header.base_timestamp,
            log_append_time,
            last_offset_delta: self.header.last_offset_delta,
        })
    }

    /// Fully validates the records of a batch as a producer must send it,
    /// without building [`Record`]s; returns the number of records.
    ///
    /// On top of what [`Batch::records`] checks: at least one record, offset
    /// deltas exactly 0, 1, ..., n-1 and the last equal to `lastOffsetDelta`,
    /// and for `CreateTime` a `maxTimestamp` equal to the largest record
    /// timestamp. A compressed batch is decompressed (once) to be checked.
    /// The same check as [`validate_batch_records`](super::validate_batch_records).
    ///
    /// # Errors
    /// [`FormatError::Empty`], [`FormatError::RecordCountMismatch`],
    /// [`FormatError::InvalidOffsetDelta`], [`FormatError::InvalidRecord`],
    /// [`FormatError::MalformedVarint`], and the codec errors of
    /// [`Batch::records`].
    pub fn validate_records(&self) -> Result<usize, FormatError> {
        super::validate_batch_records(&self.bytes, &self.header)
    }
}

/// Checks the batch at `buf[at..]` and slices it out of `buf`.
fn decode_at(buf: &Bytes, at: usize) -> Result<(Batch, usize), FormatError> {
    let header = check_batch(buf.get(at..).unwrap_or_default())?;
    let size = header.total_size();
    Ok((
        Batch {
            header,
            bytes: buf.slice(at..at + size),
        },
        size,
    ))
}

/// Slices the batch at `buf[at..]` as [`Batch::decode`] does, checking its
/// CRC-32C only if `verify_crc` (a consumer with `check.crcs=false` skips
/// it; the structure is always checked). Returns the batch and its size.
pub(crate) fn decode_batch_at(
    buf: &Bytes,
    at: usize,
    verify_crc: bool,
) -> Result<(Batch, usize), FormatError> {
    if verify_crc {
        return decode_at(buf, at);
    }
    let rest = buf.get(at..).unwrap_or_default();
    let header = super::header::BatchHeader::parse(rest)?;
    let size = header.total_size();
    if rest.len() < size {
        return Err(FormatError::Truncated {
            needed: size,
            available: rest.len(),
        });
    }
    if header.last_offset_delta < 0 {
        return Err(FormatError::InvalidOffsetDelta(
            "lastOffsetDelta is negative",
        ));
    }
    let bytes = buf.slice(at..at + size);
    Ok((Batch { header, bytes }, size))
}

/// Iterator over the records of a [`Batch`], from [`Batch::records`].
///
/// Yields `Result<Record, FormatError>` and stops after the first error.
#[derive(Debug, Clone)]
pub struct RecordIter {
    data: Bytes,
    cursor: Cursor,
}

/// Where an iteration over a records section stands, and the checks every
/// record passes (shared by [`RecordIter`] and [`RecordViews`]).
#[derive(Debug, Clone)]
struct Cursor {
    pos: usize,
    index: usize,
    declared: usize,
    base_offset: i64,
    base_timestamp: i64,
    log_append_time: Option<i64>,
    last_offset_delta: i32,
    previous_delta: i64,
    done: bool,
}

/// The error for record offset deltas out of order or past
/// `lastOffsetDelta` (the readers' checks share it).
#[cold]
pub(crate) fn bad_delta() -> FormatError {
    FormatError::InvalidOffsetDelta(
        "record offset deltas must increase and not exceed lastOffsetDelta",
    )
}

impl Cursor {
    fn new(
        declared: usize,
        base_offset: i64,
        base_timestamp: i64,
        log_append_time: Option<i64>,
        last_offset_delta: i32,
    ) -> Self {
        Cursor {
            pos: 0,
            index: 0,
            declared,
            base_offset,
            base_timestamp,
            log_append_time,
            last_offset_delta,
            previous_delta: -1,
            done: false,
        }
    }

    /// The next record of `data` with its offset and timestamp, checked:
    /// `None` at the end (after the declared count, with no bytes left),
    /// else the record or the first error, after which it stops.
    #[inline]
    fn next_raw(&mut self, data: &[u8]) -> Option<Result<(RawRecord, i64, i64), FormatError>> {
        if self.done {
            return None;
        }
        if self.index == self.declared {
            self.done = true;
            return (self.pos != data.len()).then_some(Err(FormatError::InvalidRecord(
                "bytes left after the last record",
            )));
        }
        if self.pos >= data.len() {
            self.done = true;
            return Some(Err(FormatError::RecordCountMismatch {
                declared: self.declared as i32,
                actual: self.index,
            }));
        }
        let raw = match read_record(data, self.pos) {
            Ok(raw) => raw,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        let delta = i64::from(raw.offset_delta);
        if delta <= self.previous_delta || raw.offset_delta > self.last_offset_delta {
            self.done = true;
            return Some(Err(bad_delta()));
        }
        self.previous_delta = delta;
        self.pos = raw.end;
        self.index += 1;
        let offset = self.base_offset.wrapping_add(delta);
        let timestamp = self
            .log_append_time
            .unwrap_or_else(|| self.base_timestamp.wrapping_add(raw.timestamp_delta));
        Some(Ok((raw, offset, timestamp)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.done {
            (0, Some(0))
        } else {
            // One extra item for a trailing error.
            (0, Some(self.declared - self.index + 1))
        }
    }
}

impl Iterator for RecordIter {
    type Item = Result<Record, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (raw, offset, timestamp) = match self.cursor.next_raw(&self.data)? {
            Ok(next) => next,
            Err(e) => return Some(Err(e)),
        };
        Some(match decode_headers(&self.data, &raw) {
            Ok(headers) => Ok(Record {
                offset,
                timestamp,
                key: raw.key.map(|r| self.data.slice(r)),
                value: raw.value.map(|r| self.data.slice(r)),
                headers,
            }),
            Err(e) => {
                self.cursor.done = true;
                Err(e)
            }
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.cursor.size_hint()
    }
}

impl std::iter::FusedIterator for RecordIter {}

/// The records section of a batch, decompressed if it was compressed, from
/// [`Batch::record_data`]; [`RecordData::iter`] reads its records in place.
#[derive(Debug, Clone)]
pub struct RecordData {
    data: Bytes,
    declared: usize,
    base_offset: i64,
    base_timestamp: i64,
    log_append_time: Option<i64>,
    last_offset_delta: i32,
}

impl RecordData {
    /// The records, each a [`RecordView`] borrowing this section's bytes.
    /// Checked and ended as [`RecordIter`] is: it yields the first error
    /// and stops.
    #[must_use]
    pub fn iter(&self) -> RecordViews<'_> {
        RecordViews {
            data: &self.data,
            cursor: Cursor::new(
                self.declared,
                self.base_offset,
                self.base_timestamp,
                self.log_append_time,
                self.last_offset_delta,
            ),
        }
    }

    /// The number of records the batch header declares.
    #[must_use]
    pub fn declared_count(&self) -> usize {
        self.declared
    }

    /// The records section's bytes (decompressed).
    #[must_use]
    pub fn as_bytes(&self) -> &Bytes {
        &self.data
    }
}

impl<'a> IntoIterator for &'a RecordData {
    type Item = Result<RecordView<'a>, FormatError>;
    type IntoIter = RecordViews<'a>;

    fn into_iter(self) -> RecordViews<'a> {
        self.iter()
    }
}

/// Iterator over the records of a [`RecordData`] as borrowed
/// [`RecordView`]s, from [`RecordData::iter`]. Yields
/// `Result<RecordView, FormatError>` and stops after the first error.
#[derive(Debug, Clone)]
pub struct RecordViews<'a> {
    data: &'a [u8],
    cursor: Cursor,
}

impl<'a> Iterator for RecordViews<'a> {
    type Item = Result<RecordView<'a>, FormatError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let data = self.data;
        Some(
            self.cursor
                .next_raw(data)?
                .map(|(raw, offset, timestamp)| RecordView {
                    offset,
                    timestamp,
                    key: raw.key.map(|r| &data[r]),
                    value: raw.value.map(|r| &data[r]),
                    headers: &data[raw.headers],
                    header_count: raw.header_count,
                }),
        )
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.cursor.size_hint()
    }
}

impl std::iter::FusedIterator for RecordViews<'_> {}

/// Iterator over batches laid end to end in one [`Bytes`] (a fetch
/// response, a slice of a segment). Each batch is checked as by
/// [`Batch::decode`]; iteration stops after the first error, which it yields.
///
/// ```
/// use bytes::{Bytes, BytesMut};
/// use logbus::Compression;
/// use logbus::format::{BatchBuilder, Batches};
///
/// let mut all = BytesMut::new();
/// for base in [0, 1] {
///     let mut b = BatchBuilder::new(Compression::None).base_offset(base);
///     b.append(0, None, Some(b"x"), &[]);
///     all.extend_from_slice(&b.build()?);
/// }
/// let bases: Vec<i64> = Batches::new(all.freeze())
///     .map(|b| b.map(|b| b.header().base_offset))
///     .collect::<Result<_, _>>()?;
/// assert_eq!(bases, [0, 1]);
/// # Ok::<(), logbus::FormatError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Batches {
    buf: Bytes,
    position: usize,
    failed: bool,
}

impl Batches {
    /// Iterates over the batches in `buf` from its start.
    #[must_use]
    pub fn new(buf: Bytes) -> Self {
        Batches {
            buf,
            position: 0,
            failed: false,
        }
    }

    /// Position after the last batch yielded; after an error, the position
    /// of the batch that failed.
    #[must_use]
    pub fn position(&self) -> usize {
        self.position
    }
}

impl Iterator for Batches {
    type Item = Result<Batch, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.position >= self.buf.len() {
            return None;
        }
        match decode_at(&self.buf, self.position) {
            Ok((batch, size)) => {
                self.position += size;
                Some(Ok(batch))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

impl std::iter::FusedIterator for Batches {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::builder::BatchBuilder;
    use crate::format::record::Header;

    fn sample(compression: Compression) -> Result<Bytes, FormatError> {
        let mut b = BatchBuilder::new(compression).base_offset(5);
        b.append(
            1000,
            Some(b"k0"),
            Some(b"v0"),
            &[Header::new("h", Some(b"x"))],
        );
        b.append(990, None, None, &[]);
        b.append(1010, Some(b""), Some(b""), &[Header::new("n", None)]);
        b.build()
    }

    #[test]
    fn round_trip_uncompressed() -> Result<(), FormatError> {
        let bytes = sample(Compression::None)?;
        let batch = Batch::from_bytes(bytes.clone())?;
        assert_eq!(batch.validate_records()?, 3);
        let records: Vec<Record> = batch.records()?.collect::<Result<_, _>>()?;
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].offset(), 5);
        assert_eq!(records[1].offset(), 6);
        assert_eq!(records[2].offset(), 7);
        assert_eq!(records[1].timestamp(), 990);
        assert_eq!(records[0].key().map(|k| &k[..]), Some(&b"k0"[..]));
        assert_eq!(records[1].key(), None);
        assert_eq!(records[1].value(), None);
        assert_eq!(records[2].value().map(|v| v.len()), Some(0));
        assert_eq!(records[0].headers(), [Header::new("h", Some(b"x"))]);
        assert_eq!(records[2].headers(), [Header::new("n", None)]);
        // Zero copy: the value points into the batch's memory.
        let value = records[0].value().map(|v| v.as_ptr() as usize).unwrap_or(0);
        let start = bytes.as_ptr() as usize;
        assert!(value > start && value < start + bytes.len());
        Ok(())
    }

    #[test]
    fn round_trip_every_enabled_codec() -> Result<(), FormatError> {
        let plain: Vec<Record> = Batch::from_bytes(sample(Compression::None)?)?
            .records()?
            .collect::<Result<_, _>>()?;
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            match sample(codec) {
                Ok(bytes) => {
                    let batch = Batch::from_bytes(bytes)?;
                    assert_eq!(batch.header().compression()?, codec);
                    assert_eq!(batch.validate_records()?, 3);
                    let records: Vec<Record> = batch.records()?.collect::<Result<_, _>>()?;
                    assert_eq!(records, plain, "{codec:?}");
                }
                Err(e) => assert_eq!(e, FormatError::CodecNotEnabled(codec.name())),
            }
        }
        Ok(())
    }

    /// The views read the same records as the owned iterator, errors
    /// included, for every codec and for damaged counts.
    #[test]
    fn views_agree_with_the_owned_records() -> Result<(), FormatError> {
        let owned = |batch: &Batch| -> Result<Vec<Result<Record, FormatError>>, FormatError> {
            Ok(batch.records()?.collect())
        };
        let viewed = |batch: &Batch| -> Result<Vec<Result<Record, FormatError>>, FormatError> {
            let data = batch.record_data()?;
            Ok(data.iter().map(|r| r.map(|v| v.to_record())).collect())
        };
        let mut batches = Vec::new();
        for codec in [Compression::None, Compression::Gzip, Compression::Lz4] {
            if let Ok(bytes) = sample(codec) {
                batches.push(Batch::from_bytes(bytes)?);
            }
        }
        let plain = sample(Compression::None)?;
        for (count, last) in [(4, 3), (2, 1), (3, 1), (3, 5)] {
            batches.push(Batch::from_bytes(patch(&plain, count, last))?);
        }
        for batch in &batches {
            assert_eq!(owned(batch)?, viewed(batch)?);
        }
        let data = batches[0].record_data()?;
        let first = data.iter().next().expect("a record")?;
        let headers: Vec<_> = first.headers().collect();
        assert_eq!(headers, [("h", Some(&b"x"[..]))]);
        assert_eq!(first.header_count(), 1);
        Ok(())
    }

    #[test]
    fn log_append_time_reports_max_timestamp() -> Result<(), FormatError> {
        let mut raw = sample(Compression::None)?.to_vec();
        crate::format::header::set_log_append_time(&mut raw, 77);
        let batch = Batch::from_bytes(Bytes::from(raw))?;
        for r in batch.records()? {
            assert_eq!(r?.timestamp(), 77);
        }
        Ok(())
    }

    #[test]
    fn from_bytes_rejects_trailing_bytes() -> Result<(), FormatError> {
        let mut raw = sample(Compression::None)?.to_vec();
        raw.push(0);
        assert!(Batch::from_bytes(Bytes::from(raw)).is_err());
        Ok(())
    }

    /// Rewrites the records count and lastOffsetDelta and fixes the CRC.
    fn patch(bytes: &Bytes, count: i32, last_delta: i32) -> Bytes {
        use byteorder::{BigEndian, ByteOrder};
        let mut raw = bytes.to_vec();
        BigEndian::write_i32(&mut raw[57..], count);
        BigEndian::write_i32(&mut raw[23..], last_delta);
        let crc = crate::format::header::compute_crc(&raw);
        BigEndian::write_u32(&mut raw[17..], crc);
        Bytes::from(raw)
    }

    #[test]
    fn count_mismatches_are_errors() -> Result<(), FormatError> {
        let bytes = sample(Compression::None)?;
        // Declares more records than it holds.
        let batch = Batch::from_bytes(patch(&bytes, 4, 3))?;
        assert_eq!(
            batch.validate_records(),
            Err(FormatError::RecordCountMismatch {
                declared: 4,
                actual: 3
            })
        );
        let results: Vec<_> = batch.records()?.collect();
        assert_eq!(results.len(), 4);
        assert!(results[3].is_err());
        // Declares fewer: bytes are left over.
        let batch = Batch::from_bytes(patch(&bytes, 2, 1))?;
        assert!(batch.validate_records().is_err());
        assert!(batch.records()?.any(|r| r.is_err()));
        // lastOffsetDelta disagrees with the records.
        let batch = Batch::from_bytes(patch(&bytes, 3, 5))?;
        assert!(matches!(
            batch.validate_records(),
            Err(FormatError::InvalidOffsetDelta(_))
        ));
        let batch = Batch::from_bytes(patch(&bytes, 3, 1))?;
        assert!(batch.records()?.any(|r| r.is_err()));
        // Empty and negative counts.
        let batch = Batch::from_bytes(patch(&bytes, 0, 0))?;
        assert_eq!(batch.validate_records(), Err(FormatError::Empty));
        let batch = Batch::from_bytes(patch(&bytes, -1, 0))?;
        assert!(batch.records().is_err());
        Ok(())
    }

    #[test]
    fn batches_iterates_and_stops_at_damage() -> Result<(), FormatError> {
        let one = sample(Compression::None)?;
        let mut all = Vec::new();
        all.extend_from_slice(&one);
        all.extend_from_slice(&one);
        all.extend_from_slice(&one[..30]);
        let mut it = Batches::new(Bytes::from(all));
        assert!(it.next().transpose()?.is_some());
        assert!(it.next().transpose()?.is_some());
        assert_eq!(it.position(), 2 * one.len());
        assert!(matches!(
            it.next(),
            Some(Err(FormatError::Truncated { .. }))
        ));
        assert!(it.next().is_none());
        Ok(())
    }
}
