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

#[cfg(test)]
use super::varint::put_varlong;
use super::varint::{put_varint, unzigzag32, varint_size, varint_zigzag, varlong, varlong_size};
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

/// A record read in place from its batch: the same fields as [`Record`],
/// borrowed from the batch's (or its decompressed records') bytes, with no
/// reference count and no allocation. From [`RecordData::iter`](super::RecordData::iter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub(crate) offset: i64,
    pub(crate) timestamp: i64,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) value: Option<&'a [u8]>,
    /// The header entries (after `headersCount`), already checked.
    pub(crate) headers: &'a [u8],
    pub(crate) header_count: usize,
}

impl<'a> RecordView<'a> {
    /// The record's offset, as [`Record::offset`].
    #[must_use]
    #[inline]
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// The record's timestamp, as [`Record::timestamp`].
    #[must_use]
    #[inline]
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// The key; `None` for a null key.
    #[must_use]
    #[inline]
    pub fn key(&self) -> Option<&'a [u8]> {
        self.key
    }

    /// The value; `None` for a null value (a tombstone).
    #[must_use]
    #[inline]
    pub fn value(&self) -> Option<&'a [u8]> {
        self.value
    }

    /// The number of headers.
    #[must_use]
    pub fn header_count(&self) -> usize {
        self.header_count
    }

    /// The headers in wire order, as `(key, value)` borrowed from the batch.
    #[must_use]
    pub fn headers(&self) -> HeaderViews<'a> {
        HeaderViews {
            body: Body {
                rec: self.headers,
                pos: 0,
            },
            left: self.header_count,
        }
    }

    /// The record with its key, value and headers copied out.
    #[must_use]
    pub fn to_record(&self) -> Record {
        Record {
            offset: self.offset,
            timestamp: self.timestamp,
            key: self.key.map(Bytes::copy_from_slice),
            value: self.value.map(Bytes::copy_from_slice),
            headers: self
                .headers()
                .map(|(key, value)| Header::new(key, value))
                .collect(),
        }
    }
}

/// Iterator over the headers of a [`RecordView`], as `(key, value)`.
#[derive(Debug, Clone)]
pub struct HeaderViews<'a> {
    body: Body<'a>,
    left: usize,
}

impl<'a> Iterator for HeaderViews<'a> {
    type Item = (&'a str, Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let rec = self.body.rec;
        // The entries were checked when the record was read, so this
        // cannot fail; a failure would end the iteration.
        match self.body.header() {
            Ok((key, value)) => Some((key, value.map(|r| &rec[r]))),
            Err(_) => {
                self.left = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
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
/// if a field is too long for Kafka's i32 lengths. With [`write_record`],
/// the plain encoder that [`encode_record`] is tested against.
#[cfg(test)]
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
#[cfg(test)]
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

/// Spare capacity [`encode_record`] wants beyond the record's own bytes
/// (what [`Varints`] zero-extends the buffer by): a buffer with this much
/// room past a record is never reallocated by its append.
pub(crate) const APPEND_SLACK: usize = 32;

/// Varints written straight into the spare capacity of a buffer: it is
/// zero-extended by 32 bytes (one fixed-size fill, no call to `memset`),
/// the varints go into that window by index, and [`Varints::finish`]
/// truncates the rest. The window is a local array reference, so its
/// address and length stay in registers (writes through the `Vec` itself
/// would reload its pointer and length after every byte, as a byte store
/// may alias them), and indices are masked to it (no bounds check). Cheaper
/// than pushing byte by byte (a capacity check each) or copying from a
/// stack array (a store-forwarding stall when the bytes are reloaded as a
/// vector). At most 32 bytes may be written (debug builds check it).
struct Varints<'a> {
    window: &'a mut [u8; 32],
    len: usize,
}

impl<'a> Varints<'a> {
    /// Zero-extends `buf` by 32 bytes, to write into. `buf` must have the
    /// capacity for them (else it reallocates).
    #[inline(always)]
    fn new(buf: &'a mut Vec<u8>) -> Self {
        let start = buf.len();
        buf.resize(start + 32, 0);
        let (_, window) = buf.split_at_mut(start);
        let window = window
            .first_chunk_mut::<32>()
            .unwrap_or_else(|| unreachable!("the buffer was just extended by 32 bytes"));
        Varints { window, len: 0 }
    }

    /// A zigzag-encoded value (see [`put_varint`]).
    #[inline(always)]
    fn put(&mut self, mut zigzag: u64) {
        while zigzag >= 0x80 {
            self.window[self.len & 31] = zigzag as u8 | 0x80;
            self.len += 1;
            zigzag >>= 7;
        }
        self.window[self.len & 31] = zigzag as u8;
        self.len += 1;
    }

    #[inline(always)]
    fn varint(&mut self, value: i32) {
        self.put(u64::from(((value << 1) ^ (value >> 31)) as u32));
    }

    #[inline(always)]
    fn varlong(&mut self, value: i64) {
        self.put(((value << 1) ^ (value >> 63)) as u64);
    }

    /// The bytes written; truncate the buffer to its old length plus this.
    #[inline(always)]
    fn written(self) -> usize {
        debug_assert!(
            self.len <= 32,
            "{} bytes written to a 32-byte window",
            self.len
        );
        self.len
    }
}

/// A field's length as Kafka's i32, -1 for null; `None` if it does not fit.
#[inline(always)]
fn nullable_len(field: Option<&[u8]>) -> Option<i32> {
    field.map_or(Some(-1), |b| i32::try_from(b.len()).ok())
}

/// Appends one record (length prefix included) to `buf`: the same bytes as
/// [`body_size`] and [`write_record`], in one pass with one capacity check
/// per field. Returns `false`, leaving `buf` as it was, if a length does not
/// fit Kafka's i32 lengths.
#[inline]
pub(crate) fn encode_record(
    buf: &mut Vec<u8>,
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[Header],
) -> bool {
    if key.is_none() && headers.is_empty() {
        return encode_value_record(buf, timestamp_delta, offset_delta, value);
    }
    let (Some(key_len), Some(value_len), Ok(header_count)) = (
        nullable_len(key),
        nullable_len(value),
        i32::try_from(headers.len()),
    ) else {
        return false;
    };
    // The lengths fit i32, so this sum cannot overflow a u64.
    let mut body = (1
        + varlong_size(timestamp_delta)
        + varint_size(offset_delta)
        + varint_size(key_len)
        + varint_size(value_len)
        + varint_size(header_count)) as u64
        + key.map_or(0, |k| k.len() as u64)
        + value.map_or(0, |v| v.len() as u64);
    if !headers.is_empty() {
        let Some(header_bytes) = headers_size(headers) else {
            return false;
        };
        body += header_bytes;
    }
    let Ok(body) = i32::try_from(body) else {
        return false;
    };
    // The slack lets `Varints` zero-extend the buffer without reallocating.
    buf.reserve(varint_size(body) + body as usize + APPEND_SLACK);
    // At most 5 + 1 + 10 + 5 + 5 (+ 5) bytes.
    let start = buf.len();
    let mut head = Varints::new(buf);
    head.varint(body);
    head.put(0); // attributes
    head.varlong(timestamp_delta);
    head.varint(offset_delta);
    head.varint(key_len);
    if let Some(key) = key {
        let written = head.written();
        buf.truncate(start + written);
        buf.extend_from_slice(key);
        let start = buf.len();
        let mut mid = Varints::new(buf);
        mid.varint(value_len);
        let written = mid.written();
        buf.truncate(start + written);
    } else {
        head.varint(value_len);
        let written = head.written();
        buf.truncate(start + written);
    }
    if let Some(value) = value {
        buf.extend_from_slice(value);
    }
    if headers.is_empty() {
        buf.push(0);
    } else {
        put_varint(buf, header_count);
        for h in headers {
            put_nullable(buf, Some(h.key.as_bytes()));
            put_nullable(buf, h.value.as_deref());
        }
    }
    true
}

/// [`encode_record`] of a record without a key or headers (a producer's
/// usual keyless record): the same bytes, with fewer lengths to size and
/// check.
#[inline(always)]
fn encode_value_record(
    buf: &mut Vec<u8>,
    timestamp_delta: i64,
    offset_delta: i32,
    value: Option<&[u8]>,
) -> bool {
    let Some(value_len) = nullable_len(value) else {
        return false;
    };
    let value_bytes = value.map_or(0, <[u8]>::len);
    // attributes, the null key's -1 and the header count 0 take a byte
    // each; the value is below 2^31 bytes, so this cannot overflow.
    let body = 3
        + varlong_size(timestamp_delta)
        + varint_size(offset_delta)
        + varint_size(value_len)
        + value_bytes;
    let Ok(body) = i32::try_from(body) else {
        return false;
    };
    // The slack lets `Varints` zero-extend the buffer without reallocating.
    buf.reserve(varint_size(body) + body as usize + APPEND_SLACK);
    // At most 5 + 1 + 10 + 5 + 1 + 5 bytes.
    let start = buf.len();
    let mut head = Varints::new(buf);
    head.varint(body);
    head.put(0); // attributes
    head.varlong(timestamp_delta);
    head.varint(offset_delta);
    head.put(1); // the key's length: -1, null
    head.varint(value_len);
    let written = head.written();
    buf.truncate(start + written);
    if let Some(value) = value {
        buf.extend_from_slice(value);
    }
    buf.push(0); // no headers
    true
}

/// Bytes of the header entries, or `None` if a length does not fit an i32.
#[inline(never)]
fn headers_size(headers: &[Header]) -> Option<u64> {
    let mut size = 0u64;
    for h in headers {
        size += nullable_size(Some(h.key.len()))? as u64;
        size += nullable_size(h.value.as_ref().map(Bytes::len))? as u64;
    }
    Some(size)
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
#[derive(Debug, Clone)]
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

/// A varint of one or two bytes at the start of `w` (little-endian bytes),
/// still zigzag-encoded, and its length; `None` if it is longer. Also the
/// consumer's run decoder's.
#[inline(always)]
pub(crate) fn short_varint(w: u64) -> Option<(u32, usize)> {
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

/// A short varint at `data[q]`, read from a two-byte window (so it needs two
/// bytes of `data` even for a one-byte varint).
#[inline(always)]
fn short_varint_at(data: &[u8], q: usize) -> Option<(u32, usize)> {
    let &[b0, b1] = data.get(q..)?.first_chunk::<2>()?;
    short_varint(u64::from(u16::from_le_bytes([b0, b1])))
}

/// A nullable field at `data[q]` with a short length: returns the position
/// after it, or `None` for a negative length other than -1 or a long varint.
/// The field may extend past the record: the caller's final `q == end`
/// check catches that, as positions only grow.
#[inline(always)]
fn short_nullable_at(data: &[u8], q: usize) -> Option<usize> {
    short_nullable(u64::from(short_window(data, q)?), q)
}

/// Two bytes at `data[q]` as a little-endian window.
#[inline(always)]
fn short_window(data: &[u8], q: usize) -> Option<u16> {
    Some(u16::from_le_bytes(*data.get(q..)?.first_chunk::<2>()?))
}

/// [`short_nullable_at`] on the window `w` of bytes at `q`.
#[inline(always)]
fn short_nullable(w: u64, q: usize) -> Option<usize> {
    match short_varint(w)? {
        (1, n) => Some(q + n), // -1: null
        (z, n) => (z & 1 == 0).then(|| q + n + (z >> 1) as usize),
    }
}

/// The headers of a record in [`scan_short_record`], from `headersCount`
/// at `data[q]` in a record that ends at `end`: the position after them,
/// or `None` for long varints or anything invalid. Out of line: most
/// records have no headers.
#[inline(never)]
fn short_headers(data: &[u8], mut q: usize, end: usize) -> Option<usize> {
    let (count, c) = short_varint_at(data, q)?;
    q += c;
    if count & 1 != 0 {
        return None;
    }
    for _ in 0..count >> 1 {
        let (key_len, n) = short_varint_at(data, q)?;
        if key_len & 1 != 0 {
            return None;
        }
        let key_start = q + n;
        q = key_start + (key_len >> 1) as usize;
        if q > end {
            return None;
        }
        std::str::from_utf8(data.get(key_start..q)?).ok()?;
        q = short_nullable_at(data, q)?;
    }
    Some(q)
}

/// The validator's fast path: the record starting at `data[pos]` if its
/// varints are short (one or two bytes) and its offset delta is
/// `expected`. Returns its timestamp delta and end, exactly as
/// [`scan_record`] would; returns `None` for anything else (long varints,
/// any invalid field, another offset delta, and records so close to the end
/// of `data` that a fixed-size read window does not fit, which only the last
/// record of a batch can be), and the caller then runs [`scan_record`],
/// which gives the verdict.
///
/// It never accepts a record [`scan_record`] rejects: the fields are read
/// in order at positions that only grow, and the record is accepted only if
/// its last field ends exactly where its length says, so every byte used
/// lies inside the record. The windows read ahead (8 bytes for the length,
/// attributes, timestamp and offset deltas; 4 for the key and value lengths)
/// may see bytes after the record, but a field that uses them ends past it.
#[inline(always)]
pub(crate) fn scan_short_record(data: &[u8], pos: usize, expected: i32) -> Option<(i64, usize)> {
    let ShortHead { end, ts, od, mut q } = short_head(data, pos)?;
    // `expected` is not negative: its zigzag form is `2 * expected`.
    if od != (expected as u32) << 1 {
        return None;
    }
    let kv = u32::from_le_bytes(*data.get(q..)?.first_chunk::<4>()?);
    if kv & 0xff == 1 {
        // A null key: the value's length is in the same window.
        q = short_nullable(u64::from(kv >> 8), q + 1)?;
    } else {
        q = short_nullable(u64::from(kv), q)?; // key
        q = short_nullable_at(data, q)?; // value
    }
    if q + 1 == end && data.get(q) == Some(&0) {
        // No headers, the common case: one byte, maybe the last of `data`.
        q += 1;
    } else {
        q = short_headers(data, q, end)?;
    }
    if q != end {
        return None;
    }
    Some((i64::from(unzigzag32(ts)), end))
}

/// The head of a record whose first varints are short: where it ends,
/// its zigzag timestamp and offset deltas, and where its key length is.
struct ShortHead {
    end: usize,
    ts: u32,
    od: u32,
    q: usize,
}

/// Reads the length, attributes, timestampDelta and offsetDelta of the
/// record at `data[pos]` from one 8-byte window (at most 7 bytes when the
/// varints are short); `None` for a long varint, an odd (negative) length,
/// a record running past `data`, or a window that does not fit.
#[inline(always)]
fn short_head(data: &[u8], pos: usize) -> Option<ShortHead> {
    // Length, attributes, timestampDelta and offsetDelta: at most 7 bytes.
    let mut w = u64::from_le_bytes(*data.get(pos..)?.first_chunk::<8>()?);
    let (len, n) = short_varint(w)?;
    if len & 1 != 0 {
        return None;
    }
    let start = pos + n;
    let end = start + (len >> 1) as usize;
    if end > data.len() {
        return None;
    }
    w >>= 8 * (n + 1); // the length and the attributes byte
    let (ts, m) = short_varint(w)?;
    w >>= 8 * m;
    let (od, k) = short_varint(w)?;
    Some(ShortHead {
        end,
        ts,
        od,
        q: start + 1 + m + k,
    })
}

/// A nullable field whose length is a short varint, from the two-byte
/// window `w` at `q`: its range (`None` for null) and the position after
/// it; `None` for a negative length other than -1 or a long varint.
#[inline(always)]
fn short_field(w: u16, q: usize) -> Option<(Option<Range<usize>>, usize)> {
    match short_varint(u64::from(w))? {
        (1, n) => Some((None, q + n)), // -1: null
        (z, n) if z & 1 == 0 => {
            let start = q + n;
            let end = start + (z >> 1) as usize;
            Some((Some(start..end), end))
        }
        _ => None,
    }
}

/// The readers' fast path: the record starting at `data[pos]` if its
/// varints are short (one or two bytes) and it has no headers, exactly as
/// [`scan_record`] would parse it; `None` for anything else (long varints,
/// headers, any invalid field, and records so close to the end of `data`
/// that the 8-byte window does not fit), and the caller then runs
/// [`scan_record`], which gives the verdict.
///
/// It never accepts a record [`scan_record`] rejects, by the argument of
/// [`scan_short_record`]: fields are read in order at positions that only
/// grow, and the record is accepted only if its `headersCount` (0) is its
/// last byte, exactly where its length says it ends, so every field lies
/// inside the record; the read-ahead windows may see bytes after it, but a
/// field that uses them ends past it and is refused.
#[inline(always)]
pub(crate) fn scan_plain_record(data: &[u8], pos: usize) -> Option<RawRecord> {
    let ShortHead { end, ts, od, q } = short_head(data, pos)?;
    let (key, q) = short_field(short_window(data, q)?, q)?;
    let (value, q) = short_field(short_window(data, q)?, q)?;
    // `q + 1 == end <= data.len()`, so `data[q]` exists.
    if q + 1 != end || data[q] != 0 {
        return None;
    }
    Some(RawRecord {
        timestamp_delta: i64::from(unzigzag32(ts)),
        offset_delta: unzigzag32(od),
        key,
        value,
        headers: end..end,
        header_count: 0,
        end,
    })
}

/// [`scan_plain_record`], or [`scan_record`] where it declines.
#[inline(always)]
pub(crate) fn read_record(data: &[u8], pos: usize) -> Result<RawRecord, FormatError> {
    match scan_plain_record(data, pos) {
        Some(raw) => Ok(raw),
        None => parse_record(data, pos),
    }
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

    pub(super) fn encode(
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

#[cfg(test)]
mod fast_path_tests {
    use proptest::prelude::*;

    use super::tests::encode;
    use super::*;

    #[test]
    fn typical_records_take_the_fast_path() {
        for (i, value_len) in [(0, 100), (70, 100), (5, 0), (4000, 8000)] {
            let value = vec![7u8; value_len];
            let mut buf = encode(i64::from(i), i, Some(b"key"), Some(&value), &[]);
            let end = buf.len();
            buf.extend([0; 8]); // a following record
            assert_eq!(scan_short_record(&buf, 0, i), Some((i64::from(i), end)));
        }
    }

    fn bytes(max: usize) -> impl Strategy<Value = Option<Vec<u8>>> {
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..max))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Whatever the fast path accepts, the full grammar accepts with
        /// the same timestamp delta, end and offset delta; and it accepts
        /// every intact record whose varints are short.
        #[test]
        fn fast_path_agrees_with_scan_record(
            ts in prop_oneof![-100i64..100, -5000i64..5000, any::<i64>()],
            od in prop_oneof![0i32..200, 0i32..10_000],
            key in bytes(80),
            value in bytes(200),
            headers in proptest::collection::vec(("[a-zé]{0,3}", bytes(8)), 0..3),
            expected in prop_oneof![3 => Just(None), 1 => (0i32..300).prop_map(Some)],
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
            cut in proptest::option::of(any::<prop::sample::Index>()),
            tail in proptest::collection::vec(any::<u8>(), 0..10),
        ) {
            let headers: Vec<Header> = headers
                .iter()
                .map(|(k, v)| Header::new(k.as_str(), v.as_deref()))
                .collect();
            let mut buf = encode(ts, od, key.as_deref(), value.as_deref(), &headers);
            let intact = buf.len();
            let expected = expected.unwrap_or(od);
            buf.extend(&tail);
            let mutated = !edits.is_empty() || cut.is_some();
            for (at, byte) in edits {
                let at = at.index(buf.len());
                buf[at] = byte;
            }
            if let Some(cut) = cut {
                buf.truncate(cut.index(buf.len()));
            }
            let fast = scan_short_record(&buf, 0, expected);
            if let Some((timestamp_delta, end)) = fast {
                let raw = scan_record(&buf, 0);
                prop_assert!(raw.is_ok(), "fast path accepted what scan_record rejects: {:?}", raw);
                let raw = raw.expect("checked above");
                prop_assert_eq!(raw.timestamp_delta, timestamp_delta);
                prop_assert_eq!(raw.end, end);
                prop_assert_eq!(raw.offset_delta, expected);
            }
            let short = |v: i64| (-4096..4096).contains(&v);
            let all_short = short(ts)
                && short(i64::from(od))
                && intact < 4096
                && headers.iter().all(|h| h.key.len() < 64);
            // Windows of two to eight bytes may read past a record: the last
            // record of a batch can take the full grammar instead.
            if !mutated && expected == od && all_short && tail.len() >= 2 {
                prop_assert_eq!(fast, Some((ts, intact)));
            }
            // The readers' fast path: whatever it accepts, scan_record
            // parses the same way; it takes every intact short record
            // without headers.
            let plain = scan_plain_record(&buf, 0);
            if let Some(p) = &plain {
                let raw = scan_record(&buf, 0);
                prop_assert!(raw.is_ok(), "plain path accepted what scan_record rejects: {:?}", raw);
                let raw = raw.expect("checked above");
                prop_assert_eq!(
                    (raw.timestamp_delta, raw.offset_delta, &raw.key, &raw.value, raw.header_count, raw.end),
                    (p.timestamp_delta, p.offset_delta, &p.key, &p.value, p.header_count, p.end)
                );
            }
            if !mutated && all_short && headers.is_empty() && tail.len() >= 2 {
                prop_assert!(plain.is_some(), "an intact short record was declined");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The builder's one-pass encoder writes the same bytes as the plain
        /// `body_size` + `write_record`, after whatever the buffer held.
        #[test]
        fn encode_record_matches_write_record(
            ts in prop_oneof![-100i64..100, any::<i64>()],
            od in prop_oneof![0i32..200, any::<i32>()],
            key in bytes(300),
            value in bytes(300),
            headers in proptest::collection::vec(("\\PC{0,4}", bytes(8)), 0..3),
            prefix in proptest::collection::vec(any::<u8>(), 0..70),
        ) {
            let headers: Vec<Header> = headers
                .iter()
                .map(|(k, v)| Header::new(k.as_str(), v.as_deref()))
                .collect();
            let mut expected = prefix.clone();
            expected.extend(encode(ts, od, key.as_deref(), value.as_deref(), &headers));
            let mut buf = prefix;
            prop_assert!(encode_record(&mut buf, ts, od, key.as_deref(), value.as_deref(), &headers));
            prop_assert_eq!(buf, expected);
        }
    }
}
