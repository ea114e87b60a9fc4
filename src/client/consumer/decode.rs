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
    // The layout of the last record read: records of a batch mostly share
    // one, which makes reading the next one a few masks and shifts.
    let mut layout = Layout::NONE;
    let mut taken = 0;
    while taken < n {
        let record = match layout.record(data, pos) {
            Some(record) => record,
            None => match fast_record_and_layout(data, pos) {
                Some((record, l)) => {
                    layout = l;
                    record
                }
                None => break,
            },
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

/// A varint of one or two bytes at the start of `w` (its bytes in
/// little-endian order), still zigzag-encoded, and its length; `None` if it
/// is longer.
#[inline(always)]
fn short_varint(w: u64) -> Option<(u32, usize)> {
    let b0 = w as u32 & 0xff;
    if b0 < 0x80 {
        return Some((b0, 1));
    }
    let b1 = (w >> 8) as u32 & 0xff;
    if b1 < 0x80 {
        return Some(((b0 & 0x7f) | (b1 << 7), 2));
    }
    None
}

/// The value (still zigzag-encoded) of a varint whose width is known (its
/// continuation bits checked): at byte `shift / 8` of `w`, `m2` 0 for one
/// byte, `0x3f80` for two.
#[inline(always)]
fn known_varint(w: u64, shift: u32, m2: u64) -> u32 {
    (((w >> shift) & 0x7f) | ((w >> (shift + 1)) & m2)) as u32
}

/// What a varint of `width` (1 or 2) bytes at byte `at` of a window
/// requires of it: `(mask, bits)`, the continuation bit of each byte (set
/// but for the last), and [`known_varint`]'s `m2`.
#[inline(always)]
fn varint_shape(at: usize, width: usize) -> (u64, u64, u64) {
    let bit = 0x80u64 << (8 * at);
    if width == 1 {
        (bit, 0, 0)
    } else {
        (bit | bit << 8, bit, 0x3f80)
    }
}

/// The byte layout of a record of the common shape: the widths of its
/// varints and whether its key is null, as masks to check a record against
/// and shifts to read its fields. A record that passes the checks has that
/// layout, so its fields are read without looking for their ends; one that
/// does not goes through [`fast_record_and_layout`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Layout {
    /// Bits of the 8 bytes at the record's start that must equal
    /// `head_bits`: the continuation bits of the length and the timestamp
    /// and offset deltas. ([`Layout::NONE`]'s never match.)
    head_mask: u64,
    head_bits: u64,
    /// The same for the 4 bytes at the key's length: its continuation bits
    /// (the whole byte for a null key, -1) and, for a null key, those of
    /// the value's length after it.
    kv_mask: u64,
    kv_bits: u64,
    /// The same for the 2 bytes at the value's length after a key.
    v_mask: u64,
    v_bits: u64,
    /// The length's width in bytes, and its `m2`.
    len_width: usize,
    len_m2: u64,
    ts_shift: u32,
    ts_m2: u64,
    od_shift: u32,
    od_m2: u64,
    /// Where the key's length is, from the record's start.
    key_at: usize,
    key_null: bool,
    key_m2: u64,
    key_width: usize,
    value_m2: u64,
    value_width: usize,
}

impl Layout {
    /// No layout: every record goes to [`fast_record_and_layout`].
    const NONE: Layout = Layout {
        head_mask: 0,
        head_bits: 1,
        kv_mask: 0,
        kv_bits: 0,
        v_mask: 0,
        v_bits: 0,
        len_width: 1,
        len_m2: 0,
        ts_shift: 0,
        ts_m2: 0,
        od_shift: 0,
        od_m2: 0,
        key_at: 0,
        key_null: true,
        key_m2: 0,
        key_width: 1,
        value_m2: 0,
        value_width: 1,
    };

    /// The layout of a record whose varints have these widths.
    fn new(
        len_width: usize,
        ts_width: usize,
        od_width: usize,
        key: Option<usize>,
        value_width: usize,
    ) -> Layout {
        let (lm, lb, len_m2) = varint_shape(0, len_width);
        let ts_at = len_width + 1;
        let (tm, tb, ts_m2) = varint_shape(ts_at, ts_width);
        let od_at = ts_at + ts_width;
        let (om, ob, od_m2) = varint_shape(od_at, od_width);
        let (kv_mask, kv_bits, key_m2, key_width, v_mask, v_bits, value_m2) = match key {
            None => {
                let (vm, vb, value_m2) = varint_shape(1, value_width);
                (0xff | vm, 1 | vb, 0, 1, 0, 0, value_m2)
            }
            Some(key_width) => {
                let (km, kb, key_m2) = varint_shape(0, key_width);
                let (vm, vb, value_m2) = varint_shape(0, value_width);
                (km, kb, key_m2, key_width, vm, vb, value_m2)
            }
        };
        Layout {
            head_mask: lm | tm | om,
            head_bits: lb | tb | ob,
            kv_mask,
            kv_bits,
            v_mask,
            v_bits,
            len_width,
            len_m2,
            ts_shift: 8 * ts_at as u32,
            ts_m2,
            od_shift: 8 * od_at as u32,
            od_m2,
            key_at: od_at + od_width,
            key_null: key.is_none(),
            key_m2,
            key_width,
            value_m2,
            value_width,
        }
    }

    /// The record at `data[pos]` if it has this layout and is valid,
    /// exactly as [`fast_record`] would read it; `None` otherwise (then
    /// [`fast_record_and_layout`] decides).
    ///
    /// The masks fix every varint's width, so each field is where the
    /// layout says; the lengths must not be negative, and the record is
    /// accepted only if its value ends one byte before its end, that byte
    /// (`headersCount`) 0, within `data`: every field lies inside it, as in
    /// [`fast_record`].
    #[inline(always)]
    pub(super) fn record(&self, data: &[u8], pos: usize) -> Option<FastRecord> {
        let w = u64::from_le_bytes(*data.get(pos..)?.first_chunk::<8>()?);
        let q = pos + self.key_at;
        let kv = u64::from(u32::from_le_bytes(*data.get(q..)?.first_chunk::<4>()?));
        if w & self.head_mask != self.head_bits || kv & self.kv_mask != self.kv_bits {
            return None;
        }
        let len = known_varint(w, 0, self.len_m2);
        let ts = known_varint(w, self.ts_shift, self.ts_m2);
        let od = known_varint(w, self.od_shift, self.od_m2);
        let (key, v, vz) = if self.key_null {
            (Span::NULL, q + 1, known_varint(kv, 8, self.value_m2))
        } else {
            let kz = known_varint(kv, 0, self.key_m2);
            if kz & 1 != 0 {
                return None;
            }
            let start = q + self.key_width;
            let v = start + (kz >> 1) as usize;
            let wv = u64::from(u16::from_le_bytes(*data.get(v..)?.first_chunk::<2>()?));
            if wv & self.v_mask != self.v_bits {
                return None;
            }
            (
                Span::new(start as u32, kz >> 1),
                v,
                known_varint(wv, 0, self.value_m2),
            )
        };
        if (len | vz) & 1 != 0 {
            return None; // a negative length (or a null value: declined)
        }
        let end = pos + self.len_width + (len >> 1) as usize;
        let start = v + self.value_width;
        let value_end = start + (vz >> 1) as usize;
        if value_end + 1 != end || data.get(value_end) != Some(&0) {
            return None;
        }
        Some(FastRecord {
            timestamp_delta: i64::from(unzigzag(ts)),
            offset_delta: unzigzag(od),
            key,
            value: Span::new(start as u32, vz >> 1),
            end,
        })
    }
}

/// A zigzag-encoded value's value.
#[inline(always)]
fn unzigzag(z: u32) -> i32 {
    (z >> 1) as i32 ^ -((z & 1) as i32)
}

/// A nullable field (key or value) whose length is a short varint at the
/// start of window `w`, the field starting at `q`: its span, the position
/// after it and its length's width; `None` for a long varint or a negative
/// length other than -1. The field may run past the record: the caller's
/// final check refuses that.
#[inline(always)]
fn short_field(w: u64, q: usize) -> Option<(Span, usize, usize)> {
    match short_varint(w)? {
        (1, n) => Some((Span::NULL, q + n, n)), // -1: null
        (z, n) if z & 1 == 0 => {
            let start = q + n;
            let len = z >> 1;
            Some((Span::new(start as u32, len), start + len as usize, n))
        }
        _ => None,
    }
}

/// The record at `data[pos]` if it has the common shape (no headers, every
/// varint one or two bytes), parsed exactly as the full parser would;
/// `None` for anything else, including any invalid field and a record so
/// close to the end of `data` that a read-ahead window does not fit (the
/// full parser then gives the verdict).
#[cfg(test)]
pub(super) fn fast_record(data: &[u8], pos: usize) -> Option<FastRecord> {
    fast_record_and_layout(data, pos).map(|(record, _)| record)
}

/// [`fast_record`], and the record's layout.
#[inline(always)]
pub(super) fn fast_record_and_layout(data: &[u8], pos: usize) -> Option<(FastRecord, Layout)> {
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
    let (key, key_width, value, value_width, q) = if kv & 0xff == 1 {
        let (value, q, vw) = short_field(kv >> 8, q + 1)?;
        (Span::NULL, None, value, vw, q)
    } else {
        let (key, q, kw) = short_field(kv, q)?;
        let w = u64::from(u16::from_le_bytes(*data.get(q..)?.first_chunk::<2>()?));
        let (value, q, vw) = short_field(w, q)?;
        (key, Some(kw), value, vw, q)
    };
    // headersCount 0 as the record's last byte.
    if q + 1 != end || data.get(q) != Some(&0) {
        return None;
    }
    let record = FastRecord {
        timestamp_delta: i64::from(unzigzag(ts)),
        offset_delta: unzigzag(od),
        key,
        value,
        end,
    };
    Some((record, Layout::new(n, m, k, key_width, value_width)))
}
