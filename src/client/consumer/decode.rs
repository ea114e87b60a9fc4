//! Batch-at-a-time decoding of an uncompressed batch's records into the
//! [`Entry`]s a poll returns.
//!
//! [`decode_run`] is the consumer's fast path: it reads consecutive records
//! of the common shape (no headers, every varint one or two bytes long: the
//! length, the timestamp and offset deltas, the key and value lengths) and
//! writes one 40-byte [`Entry`] per record, in one pass, with nothing else
//! per record: no allocation, no reference count, no per-record check of
//! the consumer's position or of `max.poll.records` (the caller bounds the
//! run by both). It stops at the first record it does not take, leaving
//! its verdict to the full parser (`format::parse_record`), so a malformed
//! record is reported exactly as before: the same error, at the same
//! offset.
//!
//! It never accepts a record the full parser rejects: fields are read in
//! order at positions that only grow, and a record is accepted only if its
//! `headersCount` (0) is its last byte, exactly where its length says it
//! ends, so every field lies inside the record. The read-ahead windows may
//! see bytes after the record, but a field that uses them ends past it and
//! is refused.

use super::records::{Entry, Span};
use crate::format::short_varint;

/// What the records of one batch share, for [`decode_run`].
#[derive(Debug, Clone, Copy)]
pub(super) struct RunParams {
    /// The batch's `baseOffset` (checked not negative, and `baseOffset +
    /// lastOffsetDelta` not overflowing, before its records are read).
    pub(super) base_offset: i64,
    /// Added to a record's timestamp delta masked by `timestamp_mask`: the
    /// batch's `baseTimestamp` (CreateTime) or `maxTimestamp`
    /// (LogAppendTime, every record's timestamp).
    pub(super) timestamp_base: i64,
    /// All ones for CreateTime (the delta counts), 0 for LogAppendTime.
    pub(super) timestamp_mask: i64,
    /// The batch's `lastOffsetDelta`: no record's delta may exceed it.
    pub(super) last_offset_delta: i32,
    /// [`Entry::batch`] of the records.
    pub(super) batch: u32,
}

/// Where a run stands in the records section: the next record's position
/// and the offset delta of the record before it (-1 before the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RunCursor {
    pub(super) pos: usize,
    pub(super) previous_delta: i64,
}

/// A record [`fast_record`] took: its zigzag timestamp delta, its offset
/// delta, its key and value, and where it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FastRecord {
    pub(super) timestamp_delta: i64,
    pub(super) offset_delta: i32,
    pub(super) key: Span,
    pub(super) value: Span,
    pub(super) end: usize,
}

/// Decodes up to `n` records from `cursor` into `out` (one [`Entry`] each,
/// batch `params.batch`, no headers) while they have the common shape and
/// their offset deltas grow within `params.last_offset_delta`; returns how
/// many it took and advances `cursor` past them.
///
/// The caller makes sure every record taken is one to return: at or above
/// the consumer's position (offsets only grow within a batch, so that
/// holds once the record before the run was) and within `max.poll.records`
/// (`n`).
#[inline]
pub(super) fn decode_run(
    data: &[u8],
    cursor: &mut RunCursor,
    n: usize,
    params: &RunParams,
    out: &mut Vec<Entry>,
) -> usize {
    let RunParams {
        base_offset,
        timestamp_base,
        timestamp_mask,
        last_offset_delta,
        batch,
    } = *params;
    let RunCursor {
        mut pos,
        mut previous_delta,
    } = *cursor;
    out.reserve(n);
    let mut taken = 0;
    while taken < n {
        let Some(record) = fast_record(data, pos) else {
            break;
        };
        let delta = i64::from(record.offset_delta);
        if delta <= previous_delta || record.offset_delta > last_offset_delta {
            break;
        }
        previous_delta = delta;
        pos = record.end;
        taken += 1;
        out.push(Entry {
            // Not negative and no overflow: see `RunParams::base_offset`,
            // and `delta <= lastOffsetDelta`.
            offset: (base_offset + delta) as u64,
            timestamp: timestamp_base.wrapping_add(record.timestamp_delta & timestamp_mask),
            key: record.key,
            value: record.value,
            batch,
            headers: Entry::NO_HEADERS,
        });
    }
    *cursor = RunCursor {
        pos,
        previous_delta,
    };
    taken
}

/// A nullable field (key or value) whose length is a short varint at the
/// start of window `w`, the field starting at `q`: its span and the
/// position after it; `None` for a long varint or a negative length other
/// than -1. The field may run past the record: the caller's final check
/// refuses that.
#[inline(always)]
fn short_field(w: u64, q: usize) -> Option<(Span, usize)> {
    match short_varint(w)? {
        (1, n) => Some((Span::NULL, q + n)), // -1: null
        (z, n) if z & 1 == 0 => {
            let start = q + n;
            let len = z >> 1;
            Some((Span::new(start as u32, len), start + len as usize))
        }
        _ => None,
    }
}

/// The record at `data[pos]` if it has the common shape (no headers, every
/// varint one or two bytes), parsed exactly as the full parser would;
/// `None` for anything else, including any invalid field and a record so
/// close to the end of `data` that a read-ahead window does not fit (the
/// full parser then gives the verdict).
#[inline(always)]
pub(super) fn fast_record(data: &[u8], pos: usize) -> Option<FastRecord> {
    // Length, attributes, timestampDelta and offsetDelta: at most 7 bytes.
    let mut w = u64::from_le_bytes(*data.get(pos..)?.first_chunk::<8>()?);
    let (len, n) = short_varint(w)?;
    if len & 1 != 0 {
        return None; // a negative length
    }
    let end = pos + n + (len >> 1) as usize;
    if end > data.len() {
        return None;
    }
    // Past the length and the attributes byte (ignored, as Kafka does).
    w >>= 8 * (n + 1);
    let (ts, m) = short_varint(w)?;
    w >>= 8 * m;
    let (od, k) = short_varint(w)?;
    let q = pos + n + 1 + m + k;
    // The key's and (for a null key) the value's lengths: at most 4 bytes.
    let kv = u64::from(u32::from_le_bytes(*data.get(q..)?.first_chunk::<4>()?));
    let (key, value, q) = if kv & 0xff == 1 {
        let (value, q) = short_field(kv >> 8, q + 1)?;
        (Span::NULL, value, q)
    } else {
        let (key, q) = short_field(kv, q)?;
        let w = u64::from(u16::from_le_bytes(*data.get(q..)?.first_chunk::<2>()?));
        let (value, q) = short_field(w, q)?;
        (key, value, q)
    };
    // headersCount 0 as the record's last byte.
    if q + 1 != end || data.get(q) != Some(&0) {
        return None;
    }
    Some(FastRecord {
        timestamp_delta: i64::from((ts >> 1) as i32 ^ -((ts & 1) as i32)),
        offset_delta: (od >> 1) as i32 ^ -((od & 1) as i32),
        key,
        value,
        end,
    })
}
