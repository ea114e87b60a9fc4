//! One partition's fetched bytes and the cursor that turns them into
//! [`ConsumerRecord`]s, lazily, a batch at a time.
//!
//! Uncompressed batches (the common case) are decoded a run of records at
//! a time ([`decode_run`](super::decode::decode_run)), straight into the
//! 40-byte entries a poll returns: one pass over the records' bytes, no
//! allocation (headers only when a record has some, through the full
//! parser), keys and values as ranges of the batch, whose bytes, topic and
//! partition the records share through one [`BatchData`] per batch. Compressed batches go
//! through [`RecordIter`], which decompresses the records section once; their
//! keys and values are then gathered into one buffer the records share.
//!
//! A read_committed fetch also carries the aborted transactions its batches
//! may hold ([`Aborted`]); the cursor skips their batches as Kafka's
//! `CompletedFetch` does. Control batches (transaction markers) are never
//! records for the application, under either isolation level.
//!
//! With `check.crcs=true` every batch a consumer returns has had its CRC
//! checked, once: by this process before it was stored (an append's
//! validation, recovery's scan: the read reports those bytes as checked,
//! see `log::read`'s module docs) or here, for every other batch (bytes
//! written by another process or an earlier run, a read-only view's).

use std::collections::{HashSet, VecDeque};
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use super::ahead::AheadJob;
use super::decode::{RunCursor, RunParams, decode_run};
use super::records::{BatchData, Entry, PartitionBuf, Span};
use crate::cluster::ReadSource;
use crate::error::FormatError;
use crate::format::Header;
use crate::format::control::{ControlType, decode_control_key};
use crate::format::header::out_of_sequence;
use crate::format::{
    Batch, RECORDS_OFFSET, RecordIter, bad_delta, decode_batch_at, decode_headers, parse_record,
    verify_crc,
};
use crate::types::{Compression, TimestampType};

/// Whole record batches read from one partition (zero-copy views of a
/// segment's memory map), and how far the consumer has taken records from
/// them. A consumer holds at most one per partition.
#[derive(Debug)]
pub(super) struct Fetch {
    data: Bytes,
    /// Where `data` lies in the segment's map.
    source: ReadSource,
    /// Position of the next batch in `data`.
    pos: usize,
    /// The last offset of the last batch started, which the next must
    /// start above.
    last_offset: Option<u64>,
    /// The batch records are being taken from.
    current: Option<Current>,
    /// For a read_committed fetch, the aborted transactions to skip.
    aborted: Option<Aborted>,
    /// The bytes of `data` this process checked before the read; a batch
    /// wholly within them is not checked again.
    checked: Range<usize>,
    /// The read-ahead of this fetch's position, if one was made: a batch
    /// whose CRC it found valid is not checked again (see `ahead`).
    ahead: Option<Arc<AheadJob>>,
}

#[cfg(test)]
thread_local! {
    /// Batches whose CRC [`Fetch::drain`] checked on this thread (tests
    /// count CRC passes with it; a consumer polls on its caller's thread).
    static CRC_CHECKS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The number of batch CRCs [`Fetch::drain`] checked on this thread so far.
#[cfg(test)]
pub(super) fn crc_checks() -> u64 {
    CRC_CHECKS.with(std::cell::Cell::get)
}

/// The aborted transactions of a read_committed fetch and the producers
/// whose batches are being skipped: Kafka's `CompletedFetch`
/// `abortedTransactions` and `abortedProducerIds`.
///
/// As batches go by, each aborted transaction whose first offset is at or
/// below a batch's last offset puts its producer in the skipped set
/// (considered at every batch with a producer id); a transactional data
/// batch of a skipped producer is skipped whole; an ABORT marker of a
/// producer takes it out of the set (its aborted transaction ended there).
#[derive(Debug, Default)]
pub(super) struct Aborted {
    /// `(producer id, first offset)`, by first offset.
    pending: VecDeque<(i64, u64)>,
    producers: HashSet<i64>,
}

impl Aborted {
    /// From the fetch's aborted transactions, `(producer id, first offset)`
    /// in any order.
    pub(super) fn new(mut transactions: Vec<(i64, u64)>) -> Self {
        transactions.sort_by_key(|&(producer, first)| (first, producer));
        Aborted {
            pending: transactions.into(),
            producers: HashSet::new(),
        }
    }

    /// Whether the batch with `header`, whose last offset is `last`, is to
    /// be skipped as aborted data; an ABORT marker (`abort_marker`) ends
    /// its producer's skipping.
    fn skips(
        &mut self,
        header: &crate::format::BatchHeader,
        last: u64,
        abort_marker: bool,
    ) -> bool {
        if header.producer_id < 0 {
            return false;
        }
        while let Some(&(producer, _)) = self.pending.front().filter(|t| t.1 <= last) {
            self.producers.insert(producer);
            self.pending.pop_front();
        }
        if abort_marker {
            self.producers.remove(&header.producer_id);
            return false;
        }
        header.is_transactional() && self.producers.contains(&header.producer_id)
    }
}

/// The batch being read.
#[derive(Debug)]
struct Current {
    records: Records,
    next_offset: u64,
}

#[derive(Debug)]
enum Records {
    /// An uncompressed batch, decoded here.
    Plain(Plain),
    /// A compressed batch, decoded by the format layer.
    Compressed(Decoded),
}

/// The records of a compressed batch, decoded up front: keys and values
/// copied into `shared`'s bytes, and the error that stopped decoding, if
/// any, to report after the records before it.
#[derive(Debug)]
struct Decoded {
    shared: Arc<BatchData>,
    records: std::vec::IntoIter<Pending>,
    error: Option<FormatError>,
}

/// A decoded record of a compressed batch, not yet taken.
#[derive(Debug)]
struct Pending {
    offset: u64,
    timestamp: i64,
    key: Span,
    value: Span,
    headers: Box<[Header]>,
}

/// Cursor over the records of an uncompressed batch, with the checks
/// [`RecordIter`] makes.
#[derive(Debug)]
struct Plain {
    /// The whole batch, with what its records share.
    shared: Arc<BatchData>,
    pos: usize,
    index: usize,
    declared: usize,
    /// What its records share (`batch` set when a run starts).
    params: RunParams,
    previous_delta: i64,
}

/// Where [`Fetch::drain`] puts its records, and what they share.
pub(super) struct Sink<'a> {
    pub(super) topic: &'a Arc<str>,
    pub(super) partition: u32,
    pub(super) check_crcs: bool,
    pub(super) max: usize,
    pub(super) out: &'a mut PartitionBuf,
}

impl Fetch {
    /// A fetch of `data`; `aborted` for a read_committed fetch.
    pub(super) fn new(data: Bytes, source: ReadSource, aborted: Option<Aborted>) -> Self {
        Fetch {
            data,
            source,
            pos: 0,
            last_offset: None,
            current: None,
            aborted,
            checked: 0..0,
            ahead: None,
        }
    }

    /// This fetch, with the read-ahead made of its position (`None`:
    /// none): the batches whose CRC the helper found valid, at the same
    /// addresses, are not checked again (see `ahead`'s module docs).
    pub(super) fn ahead(mut self, ahead: Option<Arc<AheadJob>>) -> Self {
        self.ahead = ahead;
        self
    }

    /// This fetch, told that this process checked (CRC and structure) the
    /// batches lying wholly within `checked` (positions in the fetched
    /// bytes) before the read: their CRCs are not checked again. What the
    /// log's read reports ([`LogRead`](crate::log::LogRead)'s checked
    /// range).
    pub(super) fn checked(mut self, checked: Range<usize>) -> Self {
        self.checked = checked;
        self
    }

    /// Where the fetched bytes lie in the segment's map.
    pub(super) fn source(&self) -> &ReadSource {
        &self.source
    }

    /// Bytes of batches not yet started (what `fetch.min.bytes` and
    /// `fetch.max.bytes` count).
    pub(super) fn remaining_bytes(&self) -> usize {
        self.data.len() - self.pos
    }

    /// Whether every record has been taken.
    pub(super) fn is_drained(&self) -> bool {
        self.current.is_none() && self.pos >= self.data.len()
    }

    /// An upper bound on the records left, counted up to `cap` (for sizing
    /// the output vector). Walks batch headers only.
    pub(super) fn records_left(&self, cap: usize) -> usize {
        let mut left = match &self.current {
            Some(Current {
                records: Records::Plain(p),
                ..
            }) => p.declared - p.index,
            Some(Current {
                records: Records::Compressed(decoded),
                ..
            }) => decoded.records.len(),
            None => 0,
        };
        let mut pos = self.pos;
        while left < cap {
            let Ok(header) =
                crate::format::BatchHeader::parse(self.data.get(pos..).unwrap_or_default())
            else {
                break;
            };
            left += usize::try_from(header.records_count).unwrap_or(0);
            pos += header.total_size();
        }
        left.min(cap)
    }

    /// Moves records at or above `*position` into `sink.out` until it holds
    /// `sink.max` records or the fetch is drained, advancing `*position`
    /// past each record taken and past the offsets a batch covers without
    /// records for the application (control batches, batches of aborted
    /// transactions in a read_committed fetch, records removed by
    /// compaction).
    ///
    /// Each batch's offsets are checked before its records are taken (the
    /// CRC does not cover its base offset): they must be valid (not
    /// negative, no overflow), start above the previous batch's last offset
    /// and end at or after `*position`. The log hands out batches from the
    /// one holding the position on, each continuing the one before it, so
    /// a batch breaking this is damage: never skipped.
    ///
    /// On a damaged batch the fetch is emptied and the error returned;
    /// `*position` stays at the first record not taken.
    pub(super) fn drain(&mut self, position: &mut u64, sink: Sink<'_>) -> Result<(), FormatError> {
        let result = self.drain_inner(position, sink);
        if result.is_err() {
            self.current = None;
            self.pos = self.data.len();
        }
        result
    }

    fn drain_inner(&mut self, position: &mut u64, sink: Sink<'_>) -> Result<(), FormatError> {
        let Sink {
            topic,
            partition,
            check_crcs,
            max,
            out,
        } = sink;
        while out.len() < max {
            if let Some(current) = &mut self.current {
                let done = match &mut current.records {
                    Records::Plain(plain) => plain.take(position, out, max)?,
                    Records::Compressed(decoded) => decoded.take(position, out, max)?,
                };
                if done {
                    *position = (*position).max(current.next_offset);
                    self.current = None;
                }
                continue;
            }
            if self.pos >= self.data.len() {
                break;
            }
            // The structure always; the CRC unless this process checked
            // the batch before (see the module docs).
            let (batch, size) = decode_batch_at(&self.data, self.pos, false)?;
            let ahead = self
                .ahead
                .as_ref()
                .is_some_and(|job| job.verified(&self.data, &(self.pos..self.pos + size)));
            if !ahead && let Some(job) = self.ahead.take() {
                // The helper is behind this thread: from here on this
                // thread checks the fetch's batches itself, and the helper
                // stops (see `ahead`).
                job.fence();
            }
            if check_crcs
                && !(self.checked.start <= self.pos && self.pos + size <= self.checked.end)
                && !ahead
            {
                #[cfg(test)]
                CRC_CHECKS.with(|n| n.set(n.get() + 1));
                verify_crc(batch.as_bytes())?;
            }
            let header = batch.header();
            let (base, last) = header.checked_offsets()?;
            if let Some(previous) = self.last_offset
                && base <= previous
            {
                return Err(out_of_sequence(
                    base,
                    last,
                    previous + 1,
                    "a fetched batch starts at or above that offset, after the batch before it",
                ));
            }
            if last < *position {
                return Err(out_of_sequence(
                    base,
                    last,
                    *position,
                    "a fetched batch ends at or after that offset, the consumer's position",
                ));
            }
            self.pos += size;
            self.last_offset = Some(last);
            let next_offset = last + 1;
            if let Some(aborted) = &mut self.aborted {
                let abort_marker = header.is_control() && is_abort_marker(&batch)?;
                if aborted.skips(header, last, abort_marker) {
                    *position = next_offset;
                    continue;
                }
            }
            if header.is_control() {
                // Transaction markers are not records for the application.
                *position = next_offset;
                continue;
            }
            let timestamp_type = header.timestamp_type();
            let shared = |bytes| {
                Arc::new(BatchData {
                    topic: Arc::clone(topic),
                    partition,
                    timestamp_type,
                    bytes,
                })
            };
            let records = if header.compression()? == Compression::None {
                Records::Plain(Plain::new(batch, shared)?)
            } else {
                Records::Compressed(Decoded::new(batch.records()?, shared))
            };
            self.current = Some(Current {
                records,
                next_offset,
            });
        }
        Ok(())
    }
}

/// Whether control batch `batch` is an ABORT marker: its first record's key
/// names type 0 (Kafka's `containsAbortMarker`). A control batch without
/// records is not one.
///
/// # Errors
/// A record or control key that does not decode.
fn is_abort_marker(batch: &Batch) -> Result<bool, FormatError> {
    let Some(record) = batch.records()?.next() else {
        return Ok(false);
    };
    let key = record?.key.ok_or(FormatError::InvalidRecord(
        "a control record has a null key",
    ))?;
    match decode_control_key(&key) {
        Ok(kind) => Ok(kind == ControlType::Abort),
        Err(_) => Err(FormatError::InvalidRecord(
            "a control record's key is shorter than 4 bytes or has a negative version",
        )),
    }
}

impl Plain {
    fn new(
        batch: Batch,
        shared: impl FnOnce(Bytes) -> Arc<BatchData>,
    ) -> Result<Self, FormatError> {
        let header = *batch.header();
        let declared = usize::try_from(header.records_count)
            .map_err(|_| FormatError::InvalidRecord("negative recordsCount"))?;
        let (timestamp_base, timestamp_mask) = match header.timestamp_type() {
            TimestampType::LogAppendTime => (header.max_timestamp, 0),
            TimestampType::CreateTime => (header.base_timestamp, -1),
        };
        Ok(Plain {
            shared: shared(batch.into_bytes()),
            pos: RECORDS_OFFSET,
            index: 0,
            declared,
            params: RunParams {
                base_offset: header.base_offset,
                timestamp_base,
                timestamp_mask,
                last_offset_delta: header.last_offset_delta,
                batch: 0,
            },
            previous_delta: -1,
        })
    }

    /// Takes records until `out` holds `max`; returns whether the batch is
    /// done. Checks each record as [`RecordIter`] does.
    ///
    /// Runs of records of the common shape go through [`decode_run`], one
    /// [`Entry`] per record with no per-record bookkeeping; a run starts
    /// once every record left is at or above `*position` (records only go
    /// up within a batch), and is bounded by `max` and the declared count.
    /// Any other record (long varints, headers, below the position, near
    /// the end of the batch, malformed) goes through [`Plain::take_one`],
    /// the full parser, which gives the verdict.
    #[inline]
    fn take(
        &mut self,
        position: &mut u64,
        out: &mut PartitionBuf,
        max: usize,
    ) -> Result<bool, FormatError> {
        // One count per call (not per record), so that `take_one` may
        // borrow `self` mutably while `data` is read.
        let shared = Arc::clone(&self.shared);
        let data: &[u8] = &shared.bytes;
        // The batch is added to `out` with the first record taken from it.
        let mut batch = None;
        loop {
            let room = max.saturating_sub(out.len());
            if room == 0 {
                // Done with the last record taken, so that the position
                // moves past the batch's offsets now (a bad end is
                // reported by the next call).
                return Ok(self.index == self.declared && self.pos == data.len());
            }
            if self.index == self.declared {
                if self.pos != data.len() {
                    return Err(FormatError::InvalidRecord(
                        "bytes left after the last record",
                    ));
                }
                return Ok(true);
            }
            // The lowest offset a record after the last one read can have
            // (the batch's offsets were checked: no overflow).
            let above = (self.params.base_offset + self.previous_delta + 1) as u64;
            if above >= *position {
                let burst = room.min(self.declared - self.index);
                let params = RunParams {
                    batch: batch.unwrap_or_else(|| out.next_batch()),
                    ..self.params
                };
                let mut cursor = RunCursor {
                    pos: self.pos,
                    previous_delta: self.previous_delta,
                };
                let taken = decode_run(data, &mut cursor, burst, &params, out.entries_mut());
                if taken > 0 {
                    if batch.is_none() {
                        batch = Some(out.push_batch(&shared));
                    }
                    (self.pos, self.previous_delta) = (cursor.pos, cursor.previous_delta);
                    self.index += taken;
                    *position = (self.params.base_offset + self.previous_delta) as u64 + 1;
                    if taken == burst {
                        continue;
                    }
                }
            }
            if self.pos >= data.len() {
                return Err(FormatError::RecordCountMismatch {
                    declared: self.declared as i32,
                    actual: self.index,
                });
            }
            self.take_one(position, out, &mut batch)?;
        }
    }

    /// Takes the record at `self.pos` (if at or above `*position`) with the
    /// full parser: long varints, headers, and the verdict on anything the
    /// fast path declined.
    #[inline(never)]
    fn take_one(
        &mut self,
        position: &mut u64,
        out: &mut PartitionBuf,
        batch: &mut Option<u32>,
    ) -> Result<(), FormatError> {
        let data = &self.shared.bytes;
        let raw = parse_record(data, self.pos)?;
        let delta = i64::from(raw.offset_delta);
        if delta <= self.previous_delta || raw.offset_delta > self.params.last_offset_delta {
            return Err(bad_delta());
        }
        self.previous_delta = delta;
        self.pos = raw.end;
        self.index += 1;
        let offset = (self.params.base_offset + delta) as u64;
        if offset < *position {
            return Ok(());
        }
        let headers = if raw.header_count == 0 {
            Entry::NO_HEADERS
        } else {
            out.push_headers(decode_headers(data, &raw)?.into_boxed_slice())
        };
        *position = offset + 1;
        let batch = *batch.get_or_insert_with(|| out.push_batch(&self.shared));
        out.push(Entry {
            offset,
            timestamp: self
                .params
                .timestamp_base
                .wrapping_add(raw.timestamp_delta & self.params.timestamp_mask),
            key: Span::of(raw.key),
            value: Span::of(raw.value),
            batch,
            headers,
        });
        Ok(())
    }
}

impl Decoded {
    /// Reads every record of `iter` (stopping at the first error), copying
    /// keys and values into one buffer.
    fn new(iter: RecordIter, shared: impl FnOnce(Bytes) -> Arc<BatchData>) -> Self {
        let mut buf = Vec::new();
        let mut records = Vec::with_capacity(iter.size_hint().0);
        let mut error = None;
        let mut copy = |part: Option<&Bytes>| match part {
            Some(part) => {
                let start = buf.len();
                buf.extend_from_slice(part);
                Span::of(Some(start..buf.len()))
            }
            None => Span::NULL,
        };
        for record in iter {
            match record {
                Ok(record) => {
                    // The batch's offsets were checked before it was
                    // decoded, and a record's delta is within them.
                    let offset = record.offset() as u64;
                    let timestamp = record.timestamp();
                    let (key, value, headers) = record.into_parts();
                    records.push(Pending {
                        offset,
                        timestamp,
                        key: copy(key.as_ref()),
                        value: copy(value.as_ref()),
                        headers: headers.into_boxed_slice(),
                    });
                }
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        Decoded {
            shared: shared(Bytes::from(buf)),
            records: records.into_iter(),
            error,
        }
    }

    /// Takes records until `out` holds `max`; returns whether the batch is
    /// done, or the error that ended it once its records are taken.
    fn take(
        &mut self,
        position: &mut u64,
        out: &mut PartitionBuf,
        max: usize,
    ) -> Result<bool, FormatError> {
        let mut batch = None;
        while out.len() < max {
            let Some(record) = self.records.next() else {
                return match self.error.take() {
                    Some(e) => Err(e),
                    None => Ok(true),
                };
            };
            if record.offset < *position {
                continue;
            }
            *position = record.offset + 1;
            let batch = *batch.get_or_insert_with(|| out.push_batch(&self.shared));
            let headers = out.push_headers(record.headers);
            out.push(Entry {
                offset: record.offset,
                timestamp: record.timestamp,
                key: record.key,
                value: record.value,
                batch,
                headers,
            });
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::consumer::ConsumerRecords;
    use crate::format::{BatchBuilder, set_base_offset};
    use crate::types::TopicPartition;

    /// Batches laid end to end, each of `count` records at `base`.
    fn batches(specs: &[(i64, usize)]) -> Bytes {
        let mut out = Vec::new();
        for &(base, count) in specs {
            let mut builder = BatchBuilder::new(Compression::None);
            for i in 0..count {
                builder.append(i as i64, None, Some(b"v"), &[]);
            }
            let mut bytes = builder.build().expect("batch").to_vec();
            set_base_offset(&mut bytes, base);
            out.extend_from_slice(&bytes);
        }
        Bytes::from(out)
    }

    /// Drains `data` from `position`: the offsets taken and the result.
    fn drain(data: Bytes, position: u64) -> (Vec<u64>, u64, Result<(), FormatError>) {
        let topic: Arc<str> = Arc::from("t");
        let mut out = PartitionBuf::default();
        let mut position = position;
        let mut fetch = Fetch::new(data, ReadSource::default(), None);
        let result = fetch.drain(
            &mut position,
            Sink {
                topic: &topic,
                partition: 0,
                check_crcs: true,
                max: usize::MAX,
                out: &mut out,
            },
        );
        (out.offsets(), position, result)
    }

    /// One batch at `base`: `kind` is `'d'` data of `pid` (`pid < 0`: no
    /// producer), `'i'` idempotent (not transactional) data of `pid`, `'a'`
    /// / `'c'` an ABORT / COMMIT marker of `pid`, `'x'` a control batch
    /// whose key does not decode.
    fn txn_batch(base: i64, kind: char, pid: i64, count: usize) -> Vec<u8> {
        use crate::format::control::{EndTxnMarker, marker_batch};
        let mut bytes = match kind {
            'a' | 'c' => marker_batch(
                pid,
                0,
                EndTxnMarker {
                    commit: kind == 'c',
                    coordinator_epoch: 0,
                },
                0,
            )
            .expect("marker")
            .to_vec(),
            _ => {
                let mut builder = BatchBuilder::new(Compression::None);
                if pid >= 0 {
                    builder = builder
                        .producer(pid, 0, 0)
                        .transactional(kind == 'd')
                        .control(kind == 'x');
                }
                for i in 0..count {
                    let key: &[u8] = if kind == 'x' { b"\xff" } else { b"k" };
                    builder.append(i as i64, Some(key), Some(b"v"), &[]);
                }
                builder.build().expect("batch").to_vec()
            }
        };
        set_base_offset(&mut bytes, base);
        bytes
    }

    /// Drains the batches as a read_committed fetch with `aborted`.
    fn drain_committed(
        specs: &[(i64, char, i64, usize)],
        aborted: &[(i64, u64)],
    ) -> (Vec<u64>, u64, Result<(), FormatError>) {
        let data: Vec<u8> = specs
            .iter()
            .flat_map(|&(base, kind, pid, count)| txn_batch(base, kind, pid, count))
            .collect();
        let topic: Arc<str> = Arc::from("t");
        let mut out = PartitionBuf::default();
        let mut position = 0;
        let aborted = Some(Aborted::new(aborted.to_vec()));
        let mut fetch = Fetch::new(Bytes::from(data), ReadSource::default(), aborted);
        let result = fetch.drain(
            &mut position,
            Sink {
                topic: &topic,
                partition: 0,
                check_crcs: true,
                max: usize::MAX,
                out: &mut out,
            },
        );
        (out.offsets(), position, result)
    }

    #[test]
    fn a_read_committed_fetch_skips_aborted_batches_as_kafkas_completed_fetch() {
        // Producer 1 aborts [0, 2), its ABORT at 3 ends the skipping, so
        // its batch at 4 (a later transaction) is returned; producer 2's
        // transaction starts inside its first batch's range (a first
        // offset up to the batch's last offset counts); the idempotent
        // batch of producer 2 and the plain one are never skipped; markers
        // are never returned; the listed order does not matter.
        let specs = [
            (0, 'd', 1, 2),
            (2, 'd', 2, 1),
            (3, 'a', 1, 1),
            (4, 'd', 1, 1),
            (5, 'i', 2, 1),
            (6, 'd', 2, 2),
            (8, 'd', -1, 1),
            (9, 'a', 2, 1),
            (10, 'd', 2, 1),
            (11, 'c', 2, 1),
        ];
        let (taken, position, result) = drain_committed(&specs, &[(2, 7), (1, 0)]);
        assert_eq!(result, Ok(()));
        assert_eq!(taken, [2, 4, 5, 8, 10]);
        assert_eq!(position, 12);
        // Without aborted transactions, only the markers go.
        let (taken, _, _) = drain_committed(&specs, &[]);
        assert_eq!(taken, [0, 1, 2, 4, 5, 6, 7, 8, 10]);
    }

    #[test]
    fn a_control_batch_whose_key_does_not_decode_is_an_error() {
        let specs = [(0, 'd', -1, 1), (1, 'x', 3, 1), (2, 'd', -1, 1)];
        let (taken, position, result) = drain_committed(&specs, &[]);
        assert!(
            matches!(result, Err(FormatError::InvalidRecord(_))),
            "{result:?}"
        );
        assert_eq!((taken, position), (vec![0], 1));
    }

    /// Records the fast path takes and records it declines (headers, long
    /// varints, a null value), drained a few at a time from inside the
    /// batch: the same records, in order, as the format layer's iterator,
    /// and the position after each poll is the next record's offset.
    #[test]
    fn fast_and_full_paths_interleave_across_polls() {
        let mut builder = BatchBuilder::new(Compression::None).base_offset(0);
        for i in 0..23i64 {
            let headers = if i % 5 == 2 {
                vec![Header::new("h", Some(b"x"))]
            } else {
                Vec::new()
            };
            let ts = if i % 7 == 3 { 1 << 40 } else { i };
            let value: Option<&[u8]> = if i % 6 == 4 { None } else { Some(b"value") };
            builder.append(ts, Some(b"k"), value, &headers);
        }
        let bytes = builder.build().expect("batch");
        let expected: Vec<(u64, i64, Option<Vec<u8>>, usize)> = Batch::from_bytes(bytes.clone())
            .expect("batch")
            .records()
            .expect("records")
            .map(|r| {
                let r = r.expect("record");
                (
                    r.offset() as u64,
                    r.timestamp(),
                    r.value().map(|v| v.to_vec()),
                    r.headers().len(),
                )
            })
            .collect();
        let topic: Arc<str> = Arc::from("t");
        let mut fetch = Fetch::new(bytes, ReadSource::default(), None);
        let mut position = 4;
        let mut got = Vec::new();
        while !fetch.is_drained() {
            let mut out = PartitionBuf::default();
            let result = fetch.drain(
                &mut position,
                Sink {
                    topic: &topic,
                    partition: 0,
                    check_crcs: true,
                    max: 3,
                    out: &mut out,
                },
            );
            assert_eq!(result, Ok(()));
            let records = ConsumerRecords::new(vec![(TopicPartition::new("t", 0), out)]);
            for r in &records {
                got.push((
                    r.offset(),
                    r.timestamp(),
                    r.value().map(<[u8]>::to_vec),
                    r.headers().len(),
                ));
            }
            assert_eq!(position, got.last().map_or(4, |r| r.0 + 1));
        }
        assert_eq!(got, expected[4..]);
    }

    #[test]
    fn a_consistent_run_is_taken_whole_from_the_position() {
        let (taken, position, result) = drain(batches(&[(0, 3), (3, 2), (5, 1)]), 1);
        assert_eq!(result, Ok(()));
        assert_eq!(taken, [1, 2, 3, 4, 5]);
        assert_eq!(position, 6);
        // Gaps forward (a compacted log) are taken as they are.
        let (taken, position, result) = drain(batches(&[(0, 2), (7, 1)]), 0);
        assert_eq!((taken, position, result), (vec![0, 1, 7], 8, Ok(())));
    }

    #[test]
    fn negative_or_overflowing_base_offsets_are_errors_not_wraps() {
        for base in [-1, i64::MIN, i64::MAX, i64::MAX - 1] {
            let (taken, position, result) = drain(batches(&[(base, 3)]), 0);
            assert!(
                matches!(result, Err(FormatError::InvalidBaseOffset { .. })),
                "base {base}: {result:?}"
            );
            assert!(taken.is_empty(), "base {base}");
            assert_eq!(position, 0, "base {base}: the position stays");
        }
        // After valid records: those are taken, the position stops at the
        // damaged batch.
        let (taken, position, result) = drain(batches(&[(0, 2), (-1, 1)]), 0);
        assert_eq!((taken, position), (vec![0, 1], 2));
        assert!(matches!(result, Err(FormatError::InvalidBaseOffset { .. })));
    }

    #[test]
    fn batches_out_of_sequence_are_errors_never_skipped() {
        // A batch wholly below the position, a batch going backwards, a
        // batch repeating the previous one's last offset.
        for (specs, from, taken_first) in [
            (vec![(0, 2), (2, 2)], 5, vec![]),
            (vec![(0, 3), (1, 2)], 0, vec![0, 1, 2]),
            (vec![(0, 3), (2, 2)], 0, vec![0, 1, 2]),
        ] {
            let (taken, position, result) = drain(batches(&specs), from);
            assert!(
                matches!(result, Err(FormatError::OffsetsOutOfSequence { .. })),
                "{specs:?} from {from}: {result:?}"
            );
            assert_eq!(taken, taken_first, "{specs:?}");
            assert_eq!(
                position,
                taken_first.last().map_or(from, |o| o + 1),
                "{specs:?}: the position stays at the first record not taken"
            );
        }
    }
}
