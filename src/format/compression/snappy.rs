//! snappy (codec 2) in the stream framing of xerial snappy-java's
//! `SnappyOutputStream`, which Kafka's Java client uses:
//!
//! ```text
//! magic              8 bytes  0x82 'S' 'N' 'A' 'P' 'P' 'Y' 0x00
//! version            i32 BE   1
//! compatibleVersion  i32 BE   1
//! chunks, repeated:  i32 BE length, then one raw snappy block of that length
//!                    (each block holds at most 32 KiB of input)
//! ```
//!
//! Reading follows `SnappyInputStream`: input that does not start with the
//! 16-byte header is taken as one raw (unframed) snappy block, as some
//! non-Java clients write it.

use super::{MAX_DECOMPRESSED_SIZE, too_large};
use crate::error::FormatError;

/// The xerial stream magic.
const MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
/// Magic + version + compatible version.
const HEADER_SIZE: usize = 16;
/// xerial's `DEFAULT_VERSION` and `MINIMUM_COMPATIBLE_VERSION`.
const VERSION: i32 = 1;
/// Input bytes per chunk (snappy-java's default block size, 32 KiB).
const BLOCK_SIZE: usize = 32 * 1024;

fn err(e: impl std::fmt::Display) -> FormatError {
    FormatError::Decompression(format!("snappy: {e}"))
}

pub(super) fn compress(input: &[u8], out: &mut Vec<u8>) -> Result<(), FormatError> {
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&VERSION.to_be_bytes());
    let mut encoder = snap::raw::Encoder::new();
    for chunk in input.chunks(BLOCK_SIZE) {
        let len_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let start = out.len();
        out.resize(start + snap::raw::max_compress_len(chunk.len()), 0);
        let written = encoder.compress(chunk, &mut out[start..]).map_err(err)?;
        out.truncate(start + written);
        // A chunk of at most 32 KiB compresses to far less than 2 GiB.
        let len = i32::try_from(written).map_err(err)?;
        out[len_at..start].copy_from_slice(&len.to_be_bytes());
    }
    Ok(())
}

/// Decompresses one raw snappy block and appends it to `out`, keeping the
/// total within `MAX_DECOMPRESSED_SIZE`.
fn decompress_block(block: &[u8], out: &mut Vec<u8>) -> Result<(), FormatError> {
    let len = snap::raw::decompress_len(block).map_err(err)?;
    if len > MAX_DECOMPRESSED_SIZE - out.len() {
        return Err(too_large("snappy"));
    }
    let start = out.len();
    out.resize(start + len, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(err)?;
    if written != len {
        return Err(err("block length differs from its header"));
    }
    Ok(())
}

pub(super) fn decompress(input: &[u8]) -> Result<Vec<u8>, FormatError> {
    let mut out = Vec::new();
    if input.len() < HEADER_SIZE || input[..MAGIC.len()] != MAGIC {
        decompress_block(input, &mut out)?;
        return Ok(out);
    }
    let version = i32::from_be_bytes([input[8], input[9], input[10], input[11]]);
    if version < VERSION {
        return Err(err(format!("unsupported stream version {version}")));
    }
    let mut rest = &input[HEADER_SIZE..];
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(err("stream ends inside a chunk length"));
        };
        let len =
            usize::try_from(i32::from_be_bytes(*len)).map_err(|_| err("negative chunk length"))?;
        if len > tail.len() {
            return Err(err("stream ends inside a chunk"));
        }
        let (block, tail) = tail.split_at(len);
        decompress_block(block, &mut out)?;
        rest = tail;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Raw snappy block for "abcabcabc" built by hand from the snappy format
    /// description: uncompressed length 9, literal "abc", copy of 6 bytes at
    /// offset 3 (1-byte-offset copy tag).
    const ABC_BLOCK: [u8; 7] = [0x09, 0x08, b'a', b'b', b'c', 0x09, 0x03];

    fn framed(blocks: &[&[u8]]) -> Vec<u8> {
        let mut v = vec![
            0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1,
        ];
        for b in blocks {
            v.extend((b.len() as i32).to_be_bytes());
            v.extend_from_slice(b);
        }
        v
    }

    #[test]
    fn decodes_hand_built_xerial_stream() -> Result<(), FormatError> {
        let hello: &[u8] = &[0x05, 0x10, b'h', b'e', b'l', b'l', b'o'];
        assert_eq!(
            decompress(&framed(&[&ABC_BLOCK, hello]))?,
            b"abcabcabchello"
        );
        // Header only: empty content.
        assert_eq!(decompress(&framed(&[]))?, b"");
        Ok(())
    }

    #[test]
    fn decodes_raw_unframed_snappy() -> Result<(), FormatError> {
        assert_eq!(decompress(&ABC_BLOCK)?, b"abcabcabc");
        Ok(())
    }

    #[test]
    fn writes_the_xerial_header_and_32k_chunks() -> Result<(), FormatError> {
        let input = vec![7u8; 3 * BLOCK_SIZE + 1];
        let mut out = Vec::new();
        compress(&input, &mut out)?;
        assert_eq!(out[..HEADER_SIZE], framed(&[])[..]);
        let mut chunks = 0;
        let mut rest = &out[HEADER_SIZE..];
        while let Some((len, tail)) = rest.split_first_chunk::<4>() {
            let len = i32::from_be_bytes(*len) as usize;
            let n = snap::raw::decompress_len(&tail[..len]).map_err(err)?;
            assert!(n <= BLOCK_SIZE);
            rest = &tail[len..];
            chunks += 1;
        }
        assert_eq!(chunks, 4);
        assert_eq!(decompress(&out)?, input);
        Ok(())
    }

    #[test]
    fn truncated_streams_are_errors() {
        let whole = framed(&[&ABC_BLOCK]);
        for cut in HEADER_SIZE + 1..whole.len() {
            assert!(decompress(&whole[..cut]).is_err(), "cut at {cut}");
        }
    }
}
