//! lz4 (codec 3): the LZ4 frame format as Kafka's `Lz4BlockOutputStream`
//! writes it, through `lz4_flex`'s frame module.
//!
//! ```text
//! magic        u32 LE  0x184D2204           bytes 04 22 4D 18
//! FLG          u8      0x60: version 01, block independence, no checksums,
//!                      no content size
//! BD           u8      0x40: block maximum size 64 KiB
//! HC           u8      (XXH32(FLG, BD; seed 0) >> 8) & 0xFF = 0x82
//! blocks       u32 LE size, high bit set = stored uncompressed; then data
//! end mark     u32 LE 0
//! ```
//!
//! A block that does not compress to fewer bytes than it holds is stored,
//! as Kafka stores it.
//!
//! Reading accepts what Kafka's `Lz4BlockInputStream` accepts: version 1,
//! independent blocks, block sizes 64 KiB to 4 MiB, an optional content
//! size (checked against the output), optional block checksums and content
//! checksum (all verified by `lz4_flex`). The descriptor checksum HC is
//! verified (Kafka only skips it for magic 0 batches). Two checks are made
//! here because `lz4_flex` does not make them: dependent (linked) blocks are
//! refused, as Kafka refuses them, and the input must be exactly one frame
//! (a frame cut short, even at a block boundary, or bytes after the end mark
//! are errors). Output is bounded by [`MAX_DECOMPRESSED_SIZE`] as it is
//! produced, so a frame that expands without bound fails without allocating
//! more than the limit (plus one block).
//!
//! [`MAX_DECOMPRESSED_SIZE`]: super::MAX_DECOMPRESSED_SIZE

use std::io::{self, Read, Write};

use lz4_flex::frame::{BlockMode, BlockSize, FrameDecoder, FrameEncoder, FrameInfo};

use super::read_bounded;
use crate::error::FormatError;

const MAGIC: [u8; 4] = 0x184D_2204_u32.to_le_bytes();
const FLG_VERSION_MASK: u8 = 0xC0;
const FLG_VERSION_1: u8 = 0x40;
const FLG_BLOCK_INDEPENDENCE: u8 = 0x20;

fn err(msg: impl std::fmt::Display) -> FormatError {
    FormatError::Decompression(format!("lz4: {msg}"))
}

/// The frame Kafka writes: 64 KiB independent blocks, no block or content
/// checksum, no content size.
fn kafka_frame() -> FrameInfo {
    FrameInfo::new()
        .block_size(BlockSize::Max64KB)
        .block_mode(BlockMode::Independent)
        .block_checksums(false)
        .content_checksum(false)
        .content_size(None)
}

pub(super) fn compress(input: &[u8], out: &mut Vec<u8>) -> Result<(), FormatError> {
    let mut encoder = FrameEncoder::with_frame_info(kafka_frame(), out);
    encoder
        .write_all(input)
        .map_err(|e| err(format!("compression failed: {e}")))?;
    encoder
        .finish()
        .map_err(|e| err(format!("compression failed: {e}")))?;
    Ok(())
}

/// The compressed input as the decoder reads it. Reading past its end is an
/// error rather than end of file: `lz4_flex` takes end of file where a block
/// or a frame would start as the end of the stream, which would accept a
/// frame cut short at a block boundary.
struct OneFrame<'a> {
    rest: &'a [u8],
}

impl Read for OneFrame<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.rest.is_empty() && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "frame ends prematurely",
            ));
        }
        self.rest.read(buf)
    }
}

pub(super) fn decompress(input: &[u8]) -> Result<Vec<u8>, FormatError> {
    if let Some(magic) = input.get(..4)
        && magic != MAGIC
    {
        // Also refuses the legacy and skippable frames lz4_flex would read.
        return Err(err("not an LZ4 frame (bad magic)"));
    }
    if let Some(&flg) = input.get(4)
        && flg & FLG_VERSION_MASK == FLG_VERSION_1
        && flg & FLG_BLOCK_INDEPENDENCE == 0
    {
        return Err(err(
            "dependent blocks are not supported (Kafka refuses them too)",
        ));
    }
    let mut frame = OneFrame { rest: input };
    // The decoder stops at the first end mark, so what is left is not part
    // of the frame.
    let out = read_bounded(FrameDecoder::new(&mut frame), "lz4")?;
    if !frame.rest.is_empty() {
        return Err(err("bytes after the end mark"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer this module replaced (hand-written framing around
    /// `lz4_flex::block`), kept while its output is compared with the new one.
    mod old {
        use crate::error::FormatError;
        use crate::format::compression::xxhash::xxh32;
        use crate::format::compression::{MAX_DECOMPRESSED_SIZE, too_large};

        pub(super) const MAGIC: u32 = 0x184D_2204;
        const FLG_VERSION_MASK: u8 = 0xC0;
        const FLG_VERSION_1: u8 = 0x40;
        const FLG_BLOCK_INDEPENDENCE: u8 = 0x20;
        const FLG_BLOCK_CHECKSUM: u8 = 0x10;
        const FLG_CONTENT_SIZE: u8 = 0x08;
        const FLG_CONTENT_CHECKSUM: u8 = 0x04;
        const FLG_RESERVED: u8 = 0x03;
        const FLG_WRITTEN: u8 = FLG_VERSION_1 | FLG_BLOCK_INDEPENDENCE;
        const BD_WRITTEN: u8 = 4 << 4;
        const BLOCK_SIZE: usize = 64 * 1024;
        pub(super) const UNCOMPRESSED: u32 = 0x8000_0000;

        fn err(msg: impl std::fmt::Display) -> FormatError {
            FormatError::Decompression(format!("lz4: {msg}"))
        }

        fn header_checksum(desc: &[u8]) -> u8 {
            (xxh32(desc, 0) >> 8) as u8
        }

        pub(super) fn compress(input: &[u8], out: &mut Vec<u8>) -> Result<(), FormatError> {
            out.extend_from_slice(&MAGIC.to_le_bytes());
            out.extend_from_slice(&[FLG_WRITTEN, BD_WRITTEN]);
            out.push(header_checksum(&[FLG_WRITTEN, BD_WRITTEN]));
            for chunk in input.chunks(BLOCK_SIZE) {
                let size_at = out.len();
                out.extend_from_slice(&[0; 4]);
                let start = out.len();
                out.resize(
                    start + lz4_flex::block::get_maximum_output_size(chunk.len()),
                    0,
                );
                let written = lz4_flex::block::compress_into(chunk, &mut out[start..])
                    .map_err(|e| err(format!("compression failed: {e}")))?;
                // Chunks are at most 64 KiB, so the sizes fit in 31 bits.
                let size = if written < chunk.len() {
                    out.truncate(start + written);
                    written as u32
                } else {
                    // Incompressible: store as is, like Kafka does.
                    out.truncate(start);
                    out.extend_from_slice(chunk);
                    chunk.len() as u32 | UNCOMPRESSED
                };
                out[size_at..start].copy_from_slice(&size.to_le_bytes());
            }
            out.extend_from_slice(&0u32.to_le_bytes());
            Ok(())
        }

        /// Splits `n` bytes off the front of `rest`.
        fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], FormatError> {
            if rest.len() < n {
                return Err(err("frame ends prematurely"));
            }
            let (head, tail) = rest.split_at(n);
            *rest = tail;
            Ok(head)
        }

        fn take_u32(rest: &mut &[u8]) -> Result<u32, FormatError> {
            let b = take(rest, 4)?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        }

        pub(super) fn decompress(input: &[u8]) -> Result<Vec<u8>, FormatError> {
            let mut rest = input;
            if take_u32(&mut rest)? != MAGIC {
                return Err(err("not an LZ4 frame (bad magic)"));
            }
            let desc_start = rest;
            let flg = take(&mut rest, 1)?[0];
            let bd = take(&mut rest, 1)?[0];
            if flg & FLG_VERSION_MASK != FLG_VERSION_1 {
                return Err(err("unsupported frame version"));
            }
            if flg & FLG_RESERVED != 0 || bd & 0x8F != 0 {
                return Err(err("reserved descriptor bits are set"));
            }
            if flg & FLG_BLOCK_INDEPENDENCE == 0 {
                return Err(err(
                    "dependent blocks are not supported (Kafka refuses them too)",
                ));
            }
            let block_max = match (bd >> 4) & 0x07 {
                code @ 4..=7 => 1usize << (2 * code + 8),
                _ => return Err(err("invalid block maximum size")),
            };
            if flg & FLG_CONTENT_SIZE != 0 {
                take(&mut rest, 8)?;
            }
            let desc_len = desc_start.len() - rest.len();
            let hc = take(&mut rest, 1)?[0];
            if hc != header_checksum(&desc_start[..desc_len]) {
                return Err(err("frame descriptor checksum mismatch"));
            }

            let mut out = Vec::new();
            loop {
                let size = take_u32(&mut rest)?;
                if size == 0 {
                    break;
                }
                let stored = size & UNCOMPRESSED != 0;
                let len = (size & !UNCOMPRESSED) as usize;
                if len > block_max {
                    return Err(err(format!(
                        "block of {len} bytes exceeds the maximum {block_max}"
                    )));
                }
                let block = take(&mut rest, len)?;
                if flg & FLG_BLOCK_CHECKSUM != 0 && take_u32(&mut rest)? != xxh32(block, 0) {
                    return Err(err("block checksum mismatch"));
                }
                let start = out.len();
                if stored {
                    if len > MAX_DECOMPRESSED_SIZE - start {
                        return Err(too_large("lz4"));
                    }
                    out.extend_from_slice(block);
                } else {
                    if block_max > MAX_DECOMPRESSED_SIZE - start {
                        // The block may expand to block_max; refuse only if it does.
                        let room = MAX_DECOMPRESSED_SIZE - start;
                        out.resize(start + room, 0);
                        let n = lz4_flex::block::decompress_into(block, &mut out[start..])
                            .map_err(|_| too_large("lz4"))?;
                        out.truncate(start + n);
                        continue;
                    }
                    out.resize(start + block_max, 0);
                    let n = lz4_flex::block::decompress_into(block, &mut out[start..])
                        .map_err(|e| err(format!("corrupt block: {e}")))?;
                    out.truncate(start + n);
                }
            }
            if flg & FLG_CONTENT_CHECKSUM != 0 && take_u32(&mut rest)? != xxh32(&out, 0) {
                return Err(err("content checksum mismatch"));
            }
            if !rest.is_empty() {
                return Err(err("bytes after the end mark"));
            }
            Ok(out)
        }

    }

    /// Kafka's frame header, byte for byte.
    const HEADER: [u8; 7] = [0x04, 0x22, 0x4d, 0x18, 0x60, 0x40, 0x82];
    /// High bit of a block size: the block is stored uncompressed.
    const STORED: u32 = 0x8000_0000;

    /// An LZ4 block built by hand from the block format: a sequence with 3
    /// literals "abc" and a 9-byte match at offset 3, then a last sequence of
    /// 5 literals "hello".
    const BLOCK: [u8; 12] = [
        0x35, b'a', b'b', b'c', 0x03, 0x00, 0x50, b'h', b'e', b'l', b'l', b'o',
    ];

    /// A frame with Kafka's header holding `blocks` (data, stored?).
    fn frame(blocks: &[(&[u8], bool)]) -> Vec<u8> {
        let mut v = HEADER.to_vec();
        for &(data, stored) in blocks {
            let mut size = data.len() as u32;
            if stored {
                size |= STORED;
            }
            v.extend(size.to_le_bytes());
            v.extend_from_slice(data);
        }
        v.extend([0, 0, 0, 0]);
        v
    }

    /// Text-like bytes: words from a small vocabulary in a seeded order.
    fn compressible(len: usize) -> Vec<u8> {
        const WORDS: [&str; 8] = [
            "offset ", "partition ", "leader ", "epoch ", "segment ", "index ", "batch ",
            "record ",
        ];
        let mut state = 0x2545_f491_u32;
        let mut out = Vec::with_capacity(len + 16);
        while out.len() < len {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            out.extend_from_slice(WORDS[(state % 8) as usize].as_bytes());
        }
        out.truncate(len);
        out
    }

    /// Seeded random bytes (xorshift64).
    fn random(len: usize) -> Vec<u8> {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }

    fn inputs() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("empty", Vec::new()),
            ("1 byte", b"x".to_vec()),
            ("64 KiB", compressible(64 << 10)),
            ("64 KiB + 1", compressible((64 << 10) + 1)),
            ("1 MiB compressible", compressible(1 << 20)),
            ("1 MiB random", random(1 << 20)),
            ("64 KiB + 1 random", random((64 << 10) + 1)),
        ]
    }

    fn compressed(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        compress(input, &mut out).expect("compresses");
        out
    }

    #[test]
    fn compare_with_the_old_writer() -> Result<(), FormatError> {
        for (name, input) in inputs() {
            let new = compressed(&input);
            let mut old = Vec::new();
            old::compress(&input, &mut old)?;
            assert_eq!(old::decompress(&new)?, input, "{name}: old reads new");
            assert_eq!(decompress(&old)?, input, "{name}: new reads old");
            eprintln!(
                "{name}: new {} bytes, old {} bytes, identical {}",
                new.len(),
                old.len(),
                new == old
            );
        }
        Ok(())
    }

    /// `blocks` copies of a compressed block of 64 KiB of zeros.
    fn zeros_frame(blocks: usize) -> Vec<u8> {
        let block = lz4_flex::block::compress(&[0; 64 << 10]);
        let mut v = HEADER.to_vec();
        for _ in 0..blocks {
            v.extend((block.len() as u32).to_le_bytes());
            v.extend_from_slice(&block);
        }
        v.extend([0, 0, 0, 0]);
        v
    }

    #[test]
    fn compare_the_bound_with_the_old_decoder() {
        let limit = crate::format::compression::MAX_DECOMPRESSED_SIZE;
        let at_limit = zeros_frame(limit / (64 << 10));
        assert_eq!(decompress(&at_limit).map(|v| v.len()), Ok(limit));
        assert_eq!(old::decompress(&at_limit).map(|v| v.len()), Ok(limit));
        let over = zeros_frame(limit / (64 << 10) + 1);
        let expected = Err(crate::format::compression::too_large("lz4"));
        assert_eq!(decompress(&over), expected);
        assert_eq!(old::decompress(&over), expected);
    }

    /// Writes the old writer's frames as golden test vectors.
    #[test]
    fn write_golden_frames() -> Result<(), FormatError> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lz4");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let pattern = |len: usize| (0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>();
        for (name, input) in [
            ("empty", Vec::new()),
            ("1-byte", b"x".to_vec()),
            ("64KiB", pattern(64 << 10)),
            ("64KiB+1", pattern((64 << 10) + 1)),
            ("1MiB", pattern(1 << 20)),
        ] {
            let mut old = Vec::new();
            old::compress(&input, &mut old)?;
            let new = compressed(&input);
            eprintln!("{name}: {} bytes, identical {}", old.len(), old == new);
            std::fs::write(dir.join(format!("{name}.lz4")), &old).expect("write");
        }
        Ok(())
    }
}
