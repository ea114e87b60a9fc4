//! gzip (codec 1): a plain gzip stream (RFC 1952), as Java's
//! `GZIPOutputStream` writes it; deflate level 6 (Java's default).

use std::io::Write;

use flate2::write::GzEncoder;

use super::read_bounded;
use crate::error::FormatError;

pub(super) fn compress(input: &[u8], out: &mut Vec<u8>) -> Result<(), FormatError> {
    let mut encoder = GzEncoder::new(out, flate2::Compression::new(6));
    encoder
        .write_all(input)
        .and_then(|()| encoder.try_finish())
        .map_err(|e| FormatError::Decompression(format!("gzip compression failed: {e}")))
}

/// Reads every gzip member (Java's `GZIPInputStream` also reads
/// concatenated members).
pub(super) fn decompress(input: &[u8]) -> Result<Vec<u8>, FormatError> {
    read_bounded(flate2::read::MultiGzDecoder::new(input), "gzip")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gzip member built by hand from RFC 1952/1951: header, one stored
    /// deflate block, CRC-32 and size trailer.
    fn stored_member(data: &[u8]) -> Vec<u8> {
        let mut v = vec![0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0xff];
        v.push(0x01); // BFINAL=1, BTYPE=00 (stored)
        let len = data.len() as u16;
        v.extend(len.to_le_bytes());
        v.extend((!len).to_le_bytes());
        v.extend_from_slice(data);
        v.extend(crc32fast::hash(data).to_le_bytes());
        v.extend((data.len() as u32).to_le_bytes());
        v
    }

    #[test]
    fn decodes_hand_built_stream() -> Result<(), FormatError> {
        assert_eq!(decompress(&stored_member(b"hello kafka"))?, b"hello kafka");
        let mut two = stored_member(b"ab");
        two.extend(stored_member(b"cd"));
        assert_eq!(decompress(&two)?, b"abcd");
        Ok(())
    }

    #[test]
    fn writes_a_gzip_header_and_rejects_bad_trailer() -> Result<(), FormatError> {
        let mut out = Vec::new();
        compress(b"data", &mut out)?;
        assert_eq!(&out[..3], [0x1f, 0x8b, 0x08]);
        let mut bad = stored_member(b"hello");
        let n = bad.len();
        bad[n - 5] ^= 1; // CRC-32
        assert!(decompress(&bad).is_err());
        Ok(())
    }
}
