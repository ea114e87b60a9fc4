//! zstd (codec 4): one standard zstd frame (RFC 8878), level 3 (Kafka's
//! default `compression.zstd.level`).

use super::{MAX_DECOMPRESSED_SIZE, read_bounded};
use crate::error::FormatError;

/// Kafka's default zstd level.
const LEVEL: i32 = 3;

/// Largest window the decoder accepts: 2^26 = 64 MiB, matching
/// `MAX_DECOMPRESSED_SIZE`, so a frame cannot demand a larger buffer.
const WINDOW_LOG_MAX: u32 = 26;

const _: () = assert!(1usize << WINDOW_LOG_MAX == MAX_DECOMPRESSED_SIZE);

pub(super) fn compress(input: &[u8], out: &mut Vec<u8>) -> Result<(), FormatError> {
    let frame = zstd::bulk::compress(input, LEVEL)
        .map_err(|e| FormatError::Decompression(format!("zstd compression failed: {e}")))?;
    out.extend_from_slice(&frame);
    Ok(())
}

pub(super) fn decompress(input: &[u8]) -> Result<Vec<u8>, FormatError> {
    let err = |e: std::io::Error| FormatError::Decompression(format!("zstd: {e}"));
    let mut decoder = zstd::stream::read::Decoder::with_buffer(input).map_err(err)?;
    decoder.window_log_max(WINDOW_LOG_MAX).map_err(err)?;
    read_bounded(decoder, "zstd")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zstd frame built by hand from RFC 8878: magic, a single-segment
    /// frame header with a 1-byte content size, one raw last block.
    fn raw_frame(data: &[u8]) -> Vec<u8> {
        assert!(data.len() < 256);
        let mut v = vec![0x28, 0xb5, 0x2f, 0xfd];
        v.push(0x20); // Single_Segment_flag, FCS field 1 byte, no checksum
        v.push(data.len() as u8);
        let block_header = ((data.len() as u32) << 3) | 1; // raw, last
        v.extend(&block_header.to_le_bytes()[..3]);
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn decodes_hand_built_frame() -> Result<(), FormatError> {
        assert_eq!(decompress(&raw_frame(b"hello kafka"))?, b"hello kafka");
        Ok(())
    }

    #[test]
    fn writes_a_standard_frame() -> Result<(), FormatError> {
        let mut out = Vec::new();
        compress(b"data data data", &mut out)?;
        assert_eq!(&out[..4], [0x28, 0xb5, 0x2f, 0xfd]);
        let mut bad = raw_frame(b"abc");
        bad.truncate(bad.len() - 1);
        assert!(decompress(&bad).is_err());
        Ok(())
    }
}
