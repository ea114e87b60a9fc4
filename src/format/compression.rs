//! Compression of a batch's records section, framed as Kafka's Java client
//! frames it (see `docs/format.md`):
//!
//! - gzip (1): one gzip stream; concatenated members are accepted on read.
//! - snappy (2): xerial snappy-java's stream framing (`SnappyOutputStream`);
//!   raw unframed snappy is accepted on read.
//! - lz4 (3): the LZ4 frame format with independent 64 KiB blocks and no
//!   checksums, as `Lz4BlockOutputStream` writes it, via lz4_flex's frame
//!   module.
//! - zstd (4): one standard zstd frame, level 3.
//!
//! Each codec sits behind its cargo feature; without it, both directions
//! return [`FormatError::CodecNotEnabled`].
//!
//! Decompression never produces more than [`MAX_DECOMPRESSED_SIZE`] bytes:
//! larger output is a [`FormatError::Decompression`] error, so a small
//! hostile batch cannot make the decoder allocate without bound.

#[cfg(feature = "gzip")]
mod gzip;
#[cfg(feature = "lz4")]
mod lz4;
#[cfg(test)]
mod samples;
#[cfg(feature = "snappy")]
mod snappy;
#[cfg(feature = "zstd")]
mod zstd;

use crate::error::FormatError;
use crate::types::Compression;

/// Largest decompressed records section a compressed batch may hold:
/// 64 MiB (Kafka's default
/// `message.max.bytes` is about 1 MiB).
pub const MAX_DECOMPRESSED_SIZE: usize = 64 << 20;

/// Appends `input` compressed with `codec` to `out`.
pub(crate) fn compress(
    codec: Compression,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), FormatError> {
    match codec {
        Compression::None => {
            out.extend_from_slice(input);
            Ok(())
        }
        #[cfg(feature = "gzip")]
        Compression::Gzip => gzip::compress(input, out),
        #[cfg(feature = "snappy")]
        Compression::Snappy => snappy::compress(input, out),
        #[cfg(feature = "lz4")]
        Compression::Lz4 => lz4::compress(input, out),
        #[cfg(feature = "zstd")]
        Compression::Zstd => zstd::compress(input, out),
        #[allow(unreachable_patterns, reason = "reachable when a codec feature is off")]
        other => Err(FormatError::CodecNotEnabled(other.name())),
    }
}

/// Decompresses a records section compressed with `codec`, refusing output
/// above [`MAX_DECOMPRESSED_SIZE`].
pub(crate) fn decompress(codec: Compression, input: &[u8]) -> Result<Vec<u8>, FormatError> {
    match codec {
        Compression::None => Ok(input.to_vec()),
        #[cfg(feature = "gzip")]
        Compression::Gzip => gzip::decompress(input),
        #[cfg(feature = "snappy")]
        Compression::Snappy => snappy::decompress(input),
        #[cfg(feature = "lz4")]
        Compression::Lz4 => lz4::decompress(input),
        #[cfg(feature = "zstd")]
        Compression::Zstd => zstd::decompress(input),
        #[allow(unreachable_patterns, reason = "reachable when a codec feature is off")]
        other => Err(FormatError::CodecNotEnabled(other.name())),
    }
}

/// Reads `reader` to its end, failing once it yields more than
/// [`MAX_DECOMPRESSED_SIZE`] bytes. The buffer grows with the output only.
#[cfg(any(feature = "gzip", feature = "zstd"))]
fn read_bounded(reader: impl std::io::Read, codec: &str) -> Result<Vec<u8>, FormatError> {
    use std::io::Read;
    let mut out = Vec::new();
    reader
        .take(MAX_DECOMPRESSED_SIZE as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| FormatError::Decompression(format!("{codec}: {e}")))?;
    if out.len() > MAX_DECOMPRESSED_SIZE {
        return Err(too_large(codec));
    }
    Ok(out)
}

/// The error for output above [`MAX_DECOMPRESSED_SIZE`].
#[cfg(any(
    feature = "gzip",
    feature = "snappy",
    feature = "lz4",
    feature = "zstd"
))]
fn too_large(codec: &str) -> FormatError {
    FormatError::Decompression(format!(
        "{codec}: decompressed records exceed {MAX_DECOMPRESSED_SIZE} bytes"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn enabled(codec: Compression) -> bool {
        match codec {
            Compression::None => true,
            Compression::Gzip => cfg!(feature = "gzip"),
            Compression::Snappy => cfg!(feature = "snappy"),
            Compression::Lz4 => cfg!(feature = "lz4"),
            Compression::Zstd => cfg!(feature = "zstd"),
        }
    }

    #[test]
    fn round_trip_or_not_enabled() -> Result<(), FormatError> {
        let inputs: [Vec<u8>; 4] = [
            Vec::new(),
            b"x".to_vec(),
            (0..200_000u32).map(|i| (i % 251) as u8).collect(),
            (0..100_000u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
        ];
        for codec in ALL {
            for input in &inputs {
                let mut out = Vec::new();
                let compressed = compress(codec, input, &mut out);
                if enabled(codec) {
                    compressed?;
                    assert_eq!(&decompress(codec, &out)?, input, "{codec:?}");
                } else {
                    assert_eq!(compressed, Err(FormatError::CodecNotEnabled(codec.name())));
                    assert!(decompress(codec, &out).is_err());
                }
            }
        }
        Ok(())
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for codec in ALL.into_iter().skip(1) {
            for len in 0..64usize {
                let garbage: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
                let _ = decompress(codec, &garbage);
            }
        }
    }
}
