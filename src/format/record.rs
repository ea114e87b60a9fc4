//! One record inside a v2 batch: its wire layout, encoder and parser.
//!
//! ```text
//! length          varint   bytes after this field
//! attributes      int8     unused, written as 0
//! timestampDelta  varlong  timestamp - batch baseTimestamp
//! offsetDelta     varint   offset - batch baseOffset
//! keyLength       varint   -1 = null key
//! key             bytes
//! valueLength     varint   -1 = null value
//! value           bytes
//! headersCount    varint
//! headers         keyLength varint (>= 0), UTF-8 key,
//!                 valueLength varint (-1 = null), value
//! ```

use std::ops::Range;

use bytes::Bytes;

use super::varint::{
    put_varint, put_varlong, unzigzag32, varint_size, varint_zigzag, varlong, varlong_size,
};
use crate::error::FormatError;

/// A record header: a UTF-8 key and an optional value.
///
/// Fields are public: a header has no invariant beyond what the types say.
///
/// ```
/// use logbus::format::Header;
///
/// let h = Header::new("trace-id", Some(&b"abc"[..]));
/// assert_eq!(h.key, "trace-id");
/// assert_eq!(h.value.as_deref(), Some(&b"abc"[..]));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Header {
    /// The header key.
    pub key: String,
    /// The header value; `None` is Kafka's null value (length -1).
    pub value: Option<Bytes>,
}

impl Header {
    /// Builds a header, copying the value.
    #[must_use]
    pub fn new(key: impl Into<String>, value: Option<&[u8]>) -> Self {
        Header {
            key: key.into(),
            value: value.map(Bytes::copy_from_slice),
        }
    }
}

/// A record decoded from a batch, with its absolute offset and timestamp.
///
/// Fields are private because a record's offset and timestamp come from its
/// batch; read them through the accessors. Keys, values and header values
/// are [`Bytes`] that share the batch's memory (or, for a compressed batch,
/// the memory of its decompressed records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub(crate) offset: i64,
    pub(crate) timestamp: i64,
    pub(crate) key: Option<Bytes>,
    pub(crate) value: Option<Bytes>,
    pub(crate) headers: Vec<Header>,
}

impl Record {
    /// The record's offset: batch `baseOffset` + `offsetDelta`.
    #[must_use]
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// The record's timestamp: batch `baseTimestamp` + `timestampDelta`, or
    /// the batch's `maxTimestamp` when the batch uses `LogAppendTime` (as
    /// Kafka reports it).
    #[must_use]
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// The key; `None` for a null key.
    #[must_use]
    pub fn key(&self) -> Option<&Bytes> {
        self.key.as_ref()
    }

    /// The value; `None` for a null value (a tombstone).
    #[must_use]
    pub fn value(&self) -> Option<&Bytes> {
        self.value.as_ref()
    }

    /// The headers, in wire order.
    #[must_use]
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// Splits the record into key, value and headers.
    #[must_use]
    pub fn into_parts(self) -> (Option<Bytes>, Option<Bytes>, Vec<Header>) {
        (self.key, self.value, self.headers)
    }
}

/// Size of a length-prefixed nullable byte field.
#[inline]
fn nullable_size(field: Option<usize>) -> Option<usize> {
    match field {
        None => Some(1),
        Some(len) => {
            let l = i32::try_from(len).ok()?;
            varint_size(l).checked_add(len)
        }
    }
}

/// Size of a record body (everything after its `length` varint), or `None`
/// if a field is too long for Kafka's i32 lengths.
pub(crate) fn body_size(
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[Header],
) -> Option<usize> {
    let mut size = 1 + varlong_size(timestamp_delta) + varint_size(offset_delta);
    size = size.checked_add(nullable_size(key.map(<[u8]>::len))?)?;
    size = size.checked_add(nullable_size(value.map(<[u8]>::len))?)?;
    size = size.checked_add(varint_size(i32::try_from(headers.len()).ok()?))?;
    for h in headers {
        size = size.checked_add(nullable_size(Some(h.key.len()))?)?;
        size = size.checked_add(nullable_size(h.value.as_ref().map(Bytes::len))?)?;
    }
    i32::try_from(size).ok()?;
    Some(size)
}

#[inline]
fn put_nullable(buf: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        None => put_varint(buf, -1),
        Some(b) => {
            // body_size() has checked that every length fits an i32.
            put_varint(buf, b.len() as i32);
            buf.extend_from_slice(b);
        }
    }
}

/// Appends one record (length prefix included) to `buf`. `body` must be the
/// value [`body_size`] returned for the same fields.
pub(crate) fn write_record(
    buf: &mut Vec<u8>,
    body: usize,
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[Header],
) {
    let body_len = body as i32;
    buf.reserve(varint_size(body_len) + body);
    put_varint(buf, body_len);
    buf.push(0); // attributes
    put_varlong(buf, timestamp_delta);
    put_varint(buf, offset_delta);
    put_nullable(buf, key);
    put_nullable(buf, value);
    put_varint(buf, headers.len() as i32);
    for h in headers {
        put_nullable(buf, Some(h.key.as_bytes()));
        put_nullable(buf, h.value.as_deref());
    }
}

/// Where a parsed record's fields lie in the records section.
#[derive(Debug, Clone)]
pub(crate) struct RawRecord {
    pub(crate) timestamp_delta: i64,
    pub(crate) offset_delta: i32,
    pub(crate) key: Option<Range<usize>>,
    pub(crate) value: Option<Range<usize>>,
    /// The header entries (after `headersCount`).
    pub(crate) headers: Range<usize>,
    pub(crate) header_count: usize,
    /// Position after the record.
    pub(crate) end: usize,
}

/// Why [`scan_record`] rejected a record: a one-byte code, cheap to pass
/// around in the validator's loop and turned into a [`FormatError`] once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadRecord {
    Varint,
    NegativeLength,
    LengthExceedsBatch,
    NoAttributes,
    KeyLength,
    ValueLength,
    NegativeHeaderCount,
    HeaderKeyLength,
    HeaderKeyUtf8,
    HeaderValueLength,
    LengthMismatch,
}

impl From<BadRecord> for FormatError {
    #[cold]
    fn from(bad: BadRecord) -> Self {
        FormatError::InvalidRecord(match bad {
            BadRecord::Varint => return FormatError::MalformedVarint,
            BadRecord::NegativeLength => "negative record length",
            BadRecord::LengthExceedsBatch => "record length exceeds the batch",
            BadRecord::NoAttributes => "record ends before its attributes",
            BadRecord::KeyLength => "invalid key length",
            BadRecord::ValueLength => "invalid value length",
            BadRecord::NegativeHeaderCount => "negative header count",
            BadRecord::HeaderKeyLength => "invalid header key length",
            BadRecord::HeaderKeyUtf8 => "header key is not valid UTF-8",
            BadRecord::HeaderValueLength => "invalid header value length",
            BadRecord::LengthMismatch => "record length does not match its fields",
        })
    }
}

/// A cursor over one record's body (`rec`, after its length); `pos` never
/// exceeds `rec.len()`.
struct Body<'a> {
    rec: &'a [u8],
    pos: usize,
}

impl Body<'_> {
    /// A varint, still zigzag-encoded.
    #[inline(always)]
    fn zigzag(&mut self) -> Result<u32, BadRecord> {
        let Some(rest) = self.rec.get(self.pos..) else {
            return Err(BadRecord::Varint);
        };
        let Some((v, n)) = varint_zigzag(rest) else {
            return Err(BadRecord::Varint);
        };
        self.pos += n;
        Ok(v)
    }

    #[inline(always)]
    fn varint(&mut self) -> Result<i32, BadRecord> {
        self.zigzag().map(unzigzag32)
    }

    #[inline(always)]
    fn varlong(&mut self) -> Result<i64, BadRecord> {
        let Some(rest) = self.rec.get(self.pos..) else {
            return Err(BadRecord::Varint);
        };
        let Some((v, n)) = varlong(rest) else {
            return Err(BadRecord::Varint);
        };
        self.pos += n;
        Ok(v)
    }

    /// A varint that must not be negative (`bad` if it is).
    #[inline(always)]
    fn count(&mut self, bad: BadRecord) -> Result<usize, BadRecord> {
        non_negative(self.zigzag()?).ok_or(bad)
    }

    /// Takes `len` bytes (at most `i32::MAX`, so `pos + len` cannot overflow).
    #[inline(always)]
    fn take(&mut self, len: usize, bad: BadRecord) -> Result<Range<usize>, BadRecord> {
        let start = self.pos;
        if self.rec.len() - start < len {
            return Err(bad);
        }
        self.pos = start + len;
        Ok(start..self.pos)
    }

    /// A nullable field: -1 is null, other negatives are invalid.
    #[inline(always)]
    fn nullable(&mut self, bad: BadRecord) -> Result<Option<Range<usize>>, BadRecord> {
        match self.zigzag()? {
            1 => Ok(None), // -1
            v => self.take(non_negative(v).ok_or(bad)?, bad).map(Some),
        }
    }
}

/// The value of a zigzag-encoded varint if it is not negative.
#[inline(always)]
fn non_negative(zigzag: u32) -> Option<usize> {
    (zigzag & 1 == 0).then_some((zigzag >> 1) as usize)
}

impl<'a> Body<'a> {
    /// One header entry: a key (length >= 0, UTF-8) and a nullable value.
    #[inline(always)]
    fn header(&mut self) -> Result<(&'a str, Option<Range<usize>>), BadRecord> {
        let rec = self.rec;
        let key_len = self.count(BadRecord::HeaderKeyLength)?;
        let key = self.take(key_len, BadRecord::HeaderKeyLength)?;
        let key = std::str::from_utf8(&rec[key]).map_err(|_| BadRecord::HeaderKeyUtf8)?;
        let value = self.nullable(BadRecord::HeaderValueLength)?;
        Ok((key, value))
    }
}

/// Parses the record starting at `data[pos]`, checking every length against
/// the record's own length and header keys for UTF-8. Does not allocate.
/// The one implementation of the record grammar: [`parse_record`] and the
/// batch validator both use it.
#[inline(always)]
pub(crate) fn scan_record(data: &[u8], pos: usize) -> Result<RawRecord, BadRecord> {
    let Some((len, n)) = data.get(pos..).and_then(varint_zigzag) else {
        return Err(BadRecord::Varint);
    };
    let len = non_negative(len).ok_or(BadRecord::NegativeLength)?;
    let start = pos + n;
    // `start <= data.len()`, so the subtraction cannot wrap.
    if data.len() - start < len {
        return Err(BadRecord::LengthExceedsBatch);
    }
    let end = start + len;
    let mut c = Body {
        rec: &data[start..end],
        pos: 0,
    };
    // Attributes: unused by Kafka, read and ignored as Kafka does.
    c.take(1, BadRecord::NoAttributes)?;
    let timestamp_delta = c.varlong()?;
    let offset_delta = c.varint()?;
    let key = c.nullable(BadRecord::KeyLength)?;
    let value = c.nullable(BadRecord::ValueLength)?;
    let header_count = c.count(BadRecord::NegativeHeaderCount)?;
    let headers_start = start + c.pos;
    for _ in 0..header_count {
        c.header()?;
    }
    if c.pos != len {
        return Err(BadRecord::LengthMismatch);
    }
    Ok(RawRecord {
        timestamp_delta,
        offset_delta,
        key: key.map(|r| start + r.start..start + r.end),
        value: value.map(|r| start + r.start..start + r.end),
        headers: headers_start..end,
        header_count,
        end,
    })
}

/// Parses the record starting at `data[pos]`: [`scan_record`] with its
/// error as a [`FormatError`].
pub(crate) fn parse_record(data: &[u8], pos: usize) -> Result<RawRecord, FormatError> {
    scan_record(data, pos).map_err(FormatError::from)
}

/// Builds the headers of a record that [`parse_record`] accepted. `data` is
/// the records section `raw` was parsed from.
pub(crate) fn decode_headers(data: &Bytes, raw: &RawRecord) -> Result<Vec<Header>, FormatError> {
    if raw.header_count == 0 {
        return Ok(Vec::new());
    }
    // Each header takes at least 2 bytes, which bounds the allocation.
    let mut headers = Vec::with_capacity(raw.header_count.min(raw.headers.len() / 2));
    let base = raw.headers.start;
    let mut c = Body {
        rec: data.get(raw.headers.clone()).unwrap_or_default(),
        pos: 0,
    };
    for _ in 0..raw.header_count {
        let (key, value) = c.header()?;
        headers.push(Header {
            key: key.to_owned(),
            value: value.map(|r| data.slice(base + r.start..base + r.end)),
        });
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(
        ts: i64,
        od: i32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) -> Vec<u8> {
        let body = body_size(ts, od, key, value, headers).expect("fits");
        let mut buf = Vec::new();
        write_record(&mut buf, body, ts, od, key, value, headers);
        buf
    }

    #[test]
    fn known_layout() {
        // length 11: attrs 0, ts delta 1 (zigzag 2), offset delta 0, key -1,
        // value "hi", 1 header "k" -> null.
        let headers = [Header::new("k", None)];
        let buf = encode(1, 0, None, Some(b"hi"), &headers);
        assert_eq!(
            buf,
            [
                0x16, 0x00, 0x02, 0x00, 0x01, 0x04, b'h', b'i', 0x02, 0x02, b'k', 0x01
            ]
        );
        assert_eq!(
            buf.len(),
            1 + body_size(1, 0, None, Some(b"hi"), &headers).unwrap_or(0)
        );
    }

    #[test]
    fn parse_round_trip() -> Result<(), FormatError> {
        let headers = [
            Header::new("a", Some(b"1")),
            Header::new("", None),
            Header::new("ü", Some(b"")),
        ];
        let buf = Bytes::from(encode(-5, 7, Some(b"key"), None, &headers));
        let raw = parse_record(&buf, 0)?;
        assert_eq!(raw.end, buf.len());
        assert_eq!(raw.timestamp_delta, -5);
        assert_eq!(raw.offset_delta, 7);
        assert_eq!(raw.key.clone().map(|r| &buf[r]), Some(&b"key"[..]));
        assert!(raw.value.is_none());
        assert_eq!(decode_headers(&buf, &raw)?, headers);
        Ok(())
    }

    #[test]
    fn rejects_bad_lengths() {
        let good = encode(0, 0, Some(b"k"), Some(b"v"), &[]);
        // Record length one too long / too short.
        let mut long = good.clone();
        long[0] += 2;
        assert!(parse_record(&long, 0).is_err());
        let mut short = good.clone();
        short[0] -= 2;
        assert!(parse_record(&short, 0).is_err());
        // Key length -2.
        let mut neg = good.clone();
        neg[4] = 0x03;
        assert!(parse_record(&neg, 0).is_err());
        // Every truncation fails.
        for cut in 0..good.len() {
            assert!(parse_record(&good[..cut], 0).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn rejects_non_utf8_header_key() {
        let headers = [Header::new("é", None)];
        let mut buf = encode(0, 0, None, None, &headers);
        let pos = buf.iter().position(|&b| b == 0xc3).unwrap_or(0);
        buf[pos] = 0xff;
        assert_eq!(
            parse_record(&buf, 0).map(|_| ()),
            Err(FormatError::InvalidRecord("header key is not valid UTF-8"))
        );
    }
}
