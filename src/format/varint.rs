//! Kafka's variable-length integers, as in protobuf: zigzag encoding, then
//! 7 bits per byte, least significant group first, high bit set on every
//! byte but the last.
//!
//! A `varint` carries an `i32` in at most 5 bytes, a `varlong` an `i64` in at
//! most 10. Like Kafka's `ByteUtils.readVarint`, the decoder accepts the
//! longest form and ignores the bits of the last byte that do not fit the
//! type; a continuation bit on the 5th (10th) byte, or input that ends while a
//! continuation bit is set, is [`FormatError::MalformedVarint`].
//!
//! ```
//! use logbus::format::varint;
//!
//! let mut buf = Vec::new();
//! varint::put_varint(&mut buf, -1);
//! assert_eq!(buf, [0x01]);
//! assert_eq!(varint::read_varint(&buf).unwrap(), (-1, 1));
//! ```

use crate::error::FormatError;

/// Longest encoding of a varint (`i32`).
pub const MAX_VARINT_LEN: usize = 5;
/// Longest encoding of a varlong (`i64`).
pub const MAX_VARLONG_LEN: usize = 10;

/// Zigzag-maps an `i32` so that small magnitudes become small unsigned values.
#[inline]
fn zigzag32(value: i32) -> u32 {
    ((value << 1) ^ (value >> 31)) as u32
}

/// Zigzag-maps an `i64`.
#[inline]
fn zigzag64(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

/// Appends `value` as a zigzag varint (1 to 5 bytes).
#[inline]
pub fn put_varint(buf: &mut Vec<u8>, value: i32) {
    put_unsigned(buf, u64::from(zigzag32(value)));
}

/// Appends `value` as a zigzag varlong (1 to 10 bytes).
#[inline]
pub fn put_varlong(buf: &mut Vec<u8>, value: i64) {
    put_unsigned(buf, zigzag64(value));
}

#[inline]
fn put_unsigned(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Bytes that [`put_varint`] writes for `value`.
#[inline]
#[must_use]
pub fn varint_size(value: i32) -> usize {
    unsigned_size(u64::from(zigzag32(value)))
}

/// Bytes that [`put_varlong`] writes for `value`.
#[inline]
#[must_use]
pub fn varlong_size(value: i64) -> usize {
    unsigned_size(zigzag64(value))
}

#[inline]
fn unsigned_size(v: u64) -> usize {
    // Number of significant bits, at least 1, in groups of 7:
    // ceil(bits / 7) == (9 * bits + 64) / 64 for 1..=64 bits, a multiply
    // and a shift instead of a division's dozen instructions (the encoder
    // sizes five or six varints per record).
    let bits = 64 - (v | 1).leading_zeros() as usize;
    (bits * 9 + 64) >> 6
}

/// Reads a zigzag varint from the start of `buf`; returns the value and the
/// number of bytes read.
///
/// # Errors
/// [`FormatError::MalformedVarint`] if `buf` ends inside the varint or the
/// varint is longer than 5 bytes.
#[inline]
pub fn read_varint(buf: &[u8]) -> Result<(i32, usize), FormatError> {
    varint(buf).ok_or(FormatError::MalformedVarint)
}

/// Reads a zigzag varlong from the start of `buf`; returns the value and the
/// number of bytes read.
///
/// # Errors
/// [`FormatError::MalformedVarint`] if `buf` ends inside the varlong or the
/// varlong is longer than 10 bytes.
#[inline]
pub fn read_varlong(buf: &[u8]) -> Result<(i64, usize), FormatError> {
    varlong(buf).ok_or(FormatError::MalformedVarint)
}

/// [`read_varint`] without the error value, for hot loops.
#[inline(always)]
pub(crate) fn varint(buf: &[u8]) -> Option<(i32, usize)> {
    let (v, len) = varint_zigzag(buf)?;
    Some((unzigzag32(v), len))
}

/// A varint still zigzag-encoded: lets hot loops test the sign (the low
/// bit) and take a non-negative value (`v >> 1`) without decoding it.
#[inline(always)]
pub(crate) fn varint_zigzag(buf: &[u8]) -> Option<(u32, usize)> {
    let (raw, len) = read_unsigned(buf, MAX_VARINT_LEN)?;
    Some((raw as u32, len)) // Bits beyond 32 are ignored, as Kafka does.
}

/// Decodes a zigzag-encoded `u32`.
#[inline(always)]
pub(crate) fn unzigzag32(v: u32) -> i32 {
    ((v >> 1) as i32) ^ -((v & 1) as i32)
}

/// [`read_varlong`] without the error value, for hot loops.
#[inline(always)]
pub(crate) fn varlong(buf: &[u8]) -> Option<(i64, usize)> {
    let (v, len) = read_unsigned(buf, MAX_VARLONG_LEN)?;
    Some((((v >> 1) as i64) ^ -((v & 1) as i64), len))
}

#[inline(always)]
fn read_unsigned(buf: &[u8], max_len: usize) -> Option<(u64, usize)> {
    // Fast paths: lengths and deltas in records are mostly one or two bytes.
    // Longer values take the out-of-line loop, which keeps the callers'
    // inlined code small.
    match *buf {
        [b0, ..] if b0 < 0x80 => Some((u64::from(b0), 1)),
        [b0, b1, ..] if b1 < 0x80 => Some((u64::from(b0 & 0x7f) | (u64::from(b1) << 7), 2)),
        _ => read_unsigned_long(buf, max_len),
    }
}

#[inline(never)]
fn read_unsigned_long(buf: &[u8], max_len: usize) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, &b) in buf.iter().take(max_len).enumerate() {
        // For i == 9 the shift is 63: only the lowest bit of the byte fits;
        // the rest is dropped like Kafka's readVarlong does.
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc32(v: i32) -> Vec<u8> {
        let mut b = Vec::new();
        put_varint(&mut b, v);
        b
    }

    fn enc64(v: i64) -> Vec<u8> {
        let mut b = Vec::new();
        put_varlong(&mut b, v);
        b
    }

    #[test]
    fn known_encodings() {
        // From the protobuf zigzag table.
        assert_eq!(enc32(0), [0x00]);
        assert_eq!(enc32(-1), [0x01]);
        assert_eq!(enc32(1), [0x02]);
        assert_eq!(enc32(-2), [0x03]);
        assert_eq!(enc32(63), [0x7e]);
        assert_eq!(enc32(-64), [0x7f]);
        assert_eq!(enc32(64), [0x80, 0x01]);
        assert_eq!(enc32(150), [0xac, 0x02]);
        assert_eq!(enc32(i32::MAX), [0xfe, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(enc32(i32::MIN), [0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(enc64(i64::MIN).len(), 10);
        assert_eq!(enc64(i64::MAX), {
            let mut v = vec![0xfe];
            v.extend([0xff; 8]);
            v.push(0x01);
            v
        });
    }

    #[test]
    fn round_trip_edges() -> Result<(), FormatError> {
        for v in [0, 1, -1, 63, -64, 64, -65, 8191, 8192, i32::MAX, i32::MIN] {
            let b = enc32(v);
            assert_eq!(b.len(), varint_size(v));
            assert_eq!(read_varint(&b)?, (v, b.len()));
        }
        for v in [
            0,
            1,
            -1,
            i64::from(i32::MAX) + 1,
            i64::MAX,
            i64::MIN,
            -(1 << 40),
        ] {
            let b = enc64(v);
            assert_eq!(b.len(), varlong_size(v));
            assert_eq!(read_varlong(&b)?, (v, b.len()));
        }
        Ok(())
    }

    #[test]
    fn sizes_match_the_bytes_written_at_every_width() {
        // Every number of significant bits, at its smallest and largest value.
        for bits in 0..=64_u32 {
            for v in [
                1_u64.checked_shl(bits).map_or(u64::MAX, |b| b - 1),
                1_u64 << bits.saturating_sub(1),
            ] {
                let mut b = Vec::new();
                put_unsigned(&mut b, v);
                assert_eq!(unsigned_size(v), b.len(), "{v:#x}");
            }
        }
    }

    #[test]
    fn malformed() {
        assert_eq!(read_varint(&[]), Err(FormatError::MalformedVarint));
        assert_eq!(read_varint(&[0x80]), Err(FormatError::MalformedVarint));
        assert_eq!(
            read_varint(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]),
            Err(FormatError::MalformedVarint)
        );
        assert_eq!(read_varlong(&[0xff; 11]), Err(FormatError::MalformedVarint));
        assert_eq!(read_varlong(&[0xff; 3]), Err(FormatError::MalformedVarint));
    }

    #[test]
    fn trailing_bytes_are_not_consumed() -> Result<(), FormatError> {
        assert_eq!(read_varint(&[0xac, 0x02, 0xff])?, (150, 2));
        Ok(())
    }
}
