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
//! are errors). One deviation from the format: a block that decodes to no
//! bytes (which neither Kafka's writer nor the reference library writes)
//! looks like the end mark through `lz4_flex`'s reader, so a frame holding
//! one is refused ("bytes after the end mark"). Output is bounded by [`MAX_DECOMPRESSED_SIZE`] block by
//! block as it is produced, so a frame that expands without bound fails
//! before the output grows past the limit; the decoder's own buffers are one
//! block each (at most 4 MiB, by the frame's declared block maximum).

use std::io::{self, BufRead, Read, Write};

use lz4_flex::frame::{BlockMode, BlockSize, FrameDecoder, FrameEncoder, FrameInfo};

use super::{MAX_DECOMPRESSED_SIZE, too_large};
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
    let mut decoder = FrameDecoder::new(&mut frame);
    let mut out = Vec::new();
    // One decoded block at a time; an empty one is the end mark, after
    // which the decoder reads nothing more.
    loop {
        let block = decoder.fill_buf().map_err(err)?;
        if block.is_empty() {
            break;
        }
        if block.len() > MAX_DECOMPRESSED_SIZE - out.len() {
            return Err(too_large("lz4"));
        }
        out.extend_from_slice(block);
        let n = block.len();
        decoder.consume(n);
    }
    drop(decoder);
    if !frame.rest.is_empty() {
        return Err(err("bytes after the end mark"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::samples::{random, text};
    use super::*;

    /// Kafka's frame header, byte for byte.
    const HEADER: [u8; 7] = [0x04, 0x22, 0x4d, 0x18, 0x60, 0x40, 0x82];
    /// High bit of a block size: the block is stored uncompressed.
    const STORED: u32 = 0x8000_0000;
    const BLOCK_SIZE: usize = 64 << 10;

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

    /// The input of the golden frames: a byte counter modulo 251.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    fn compressed(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        compress(input, &mut out).expect("compresses");
        out
    }

    /// Frames written by the hand-written writer this module replaced (the
    /// framing of Kafka's `Lz4BlockOutputStream` around `lz4_flex::block`),
    /// with their inputs. The current writer was compared with it on these
    /// and on text and random inputs before it was removed: identical bytes
    /// except one byte of a later block of 1 MiB of text (the frame encoder
    /// keeps its match table across independent blocks), and each reader
    /// read the other writer's frames.
    fn golden() -> [(&'static str, Vec<u8>, &'static [u8]); 5] {
        [
            (
                "empty",
                Vec::new(),
                include_bytes!("../../../tests/fixtures/lz4/empty.lz4"),
            ),
            (
                "1 byte",
                b"x".to_vec(),
                include_bytes!("../../../tests/fixtures/lz4/1-byte.lz4"),
            ),
            (
                "64 KiB",
                pattern(BLOCK_SIZE),
                include_bytes!("../../../tests/fixtures/lz4/64KiB.lz4"),
            ),
            (
                "64 KiB + 1",
                pattern(BLOCK_SIZE + 1),
                include_bytes!("../../../tests/fixtures/lz4/64KiB+1.lz4"),
            ),
            (
                "1 MiB",
                pattern(1 << 20),
                include_bytes!("../../../tests/fixtures/lz4/1MiB.lz4"),
            ),
        ]
    }

    /// Splits a frame with Kafka's header into its blocks (size field, data).
    fn blocks(frame: &[u8]) -> Vec<(u32, &[u8])> {
        assert_eq!(frame[..7], HEADER);
        let mut rest = &frame[7..];
        let mut out = Vec::new();
        loop {
            let size = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes"));
            rest = &rest[4..];
            if size == 0 {
                assert!(rest.is_empty(), "bytes after the end mark");
                return out;
            }
            let len = (size & !STORED) as usize;
            out.push((size, &rest[..len]));
            rest = &rest[len..];
        }
    }

    #[test]
    fn empty_input_is_kafkas_header_and_end_mark() {
        assert_eq!(compressed(b""), [&HEADER[..], &[0, 0, 0, 0]].concat());
    }

    #[test]
    fn golden_frames_are_written_and_read() -> Result<(), FormatError> {
        for (name, input, frame) in golden() {
            assert_eq!(compressed(&input), frame, "{name}: written");
            assert_eq!(decompress(frame)?, input, "{name}: read");
        }
        Ok(())
    }

    #[test]
    fn incompressible_blocks_are_stored() {
        for len in [1, BLOCK_SIZE, BLOCK_SIZE + 1, 1 << 20] {
            let input = random(len);
            let chunks: Vec<(&[u8], bool)> = input.chunks(BLOCK_SIZE).map(|c| (c, true)).collect();
            assert_eq!(compressed(&input), frame(&chunks), "{len} random bytes");
        }
    }

    #[test]
    fn blocks_are_independent_64_kib_chunks() -> Result<(), FormatError> {
        for len in [BLOCK_SIZE, BLOCK_SIZE + 1, 1 << 20] {
            let input = text(len);
            let frame = compressed(&input);
            let blocks = blocks(&frame);
            assert_eq!(blocks.len(), len.div_ceil(BLOCK_SIZE), "{len}");
            // Each block decodes alone to its own 64 KiB of the input.
            for ((size, data), chunk) in blocks.iter().zip(input.chunks(BLOCK_SIZE)) {
                if chunk.len() == 1 {
                    // One byte does not compress: stored.
                    assert_eq!((*size, *data), (1 | STORED, chunk), "{len}");
                    continue;
                }
                assert_eq!(size & STORED, 0, "{len}: text is compressed");
                let block = lz4_flex::block::decompress(data, BLOCK_SIZE)
                    .map_err(|e| err(format!("{e}")))?;
                assert_eq!(block, chunk, "{len}");
            }
            assert_eq!(decompress(&frame)?, input, "{len}");
        }
        Ok(())
    }

    #[test]
    fn decodes_hand_built_frame() -> Result<(), FormatError> {
        let f = frame(&[(&BLOCK, false), (b"raw!", true)]);
        assert_eq!(decompress(&f)?, b"abcabcabcabchelloraw!");
        Ok(())
    }

    /// A frame of `input` with `info`, by lz4_flex's encoder.
    fn encoded(info: FrameInfo, input: &[u8]) -> Vec<u8> {
        let mut encoder = FrameEncoder::with_frame_info(info, Vec::new());
        encoder.write_all(input).expect("writes");
        encoder.finish().expect("finishes")
    }

    #[test]
    fn decodes_and_verifies_optional_fields() -> Result<(), FormatError> {
        let input = text(BLOCK_SIZE + 100);
        let info = kafka_frame()
            .content_size(Some(input.len() as u64))
            .block_checksums(true)
            .content_checksum(true);
        let good = encoded(info, &input);
        assert_eq!(good[4], 0x60 | 0x10 | 0x08 | 0x04);
        assert_eq!(decompress(&good)?, input);
        // The content checksum is the last 4 bytes, the last block's checksum
        // the 4 before the end mark.
        let n = good.len();
        for at in [n - 1, n - 9] {
            let mut bad = good.clone();
            bad[at] ^= 1;
            assert!(decompress(&bad).is_err(), "checksum byte {at} flipped");
        }
        Ok(())
    }

    #[test]
    fn refuses_what_kafka_refuses() {
        let good = frame(&[(&BLOCK, false)]);
        let mut bad_hc = good.clone();
        bad_hc[6] ^= 1;
        assert!(decompress(&bad_hc).is_err());
        let dependent = encoded(kafka_frame().block_mode(BlockMode::Linked), b"data");
        assert_eq!(dependent[4], 0x40);
        assert_eq!(
            decompress(&dependent),
            Err(err(
                "dependent blocks are not supported (Kafka refuses them too)"
            ))
        );
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(decompress(&trailing), Err(err("bytes after the end mark")));
        assert!(decompress(&[good.clone(), good.clone()].concat()).is_err());
        for cut in 0..good.len() {
            assert!(decompress(&good[..cut]).is_err(), "cut at {cut}");
        }
        // A frame cut exactly at a block boundary, before its end mark.
        let two = frame(&[(b"raw!", true), (&BLOCK, false)]);
        assert!(decompress(&two[..7 + 8]).is_err());
        assert!(decompress(&two[..two.len() - 4]).is_err());
        // The legacy frame and a skippable frame are not Kafka's.
        let legacy = [0x02, 0x21, 0x4c, 0x18, 0, 0, 0, 0];
        assert!(decompress(&legacy).is_err());
        let skippable = [0x50, 0x2a, 0x4d, 0x18, 0, 0, 0, 0];
        assert!(decompress(&skippable).is_err());
    }

    /// `blocks` copies of a compressed block of 64 KiB of zeros.
    fn zeros_frame(blocks: usize) -> Vec<u8> {
        let block = lz4_flex::block::compress(&[0; BLOCK_SIZE]);
        let mut v = HEADER.to_vec();
        for _ in 0..blocks {
            v.extend((block.len() as u32).to_le_bytes());
            v.extend_from_slice(&block);
        }
        v.extend([0, 0, 0, 0]);
        v
    }

    #[test]
    fn output_is_bounded() {
        let at_limit = zeros_frame(MAX_DECOMPRESSED_SIZE / BLOCK_SIZE);
        assert_eq!(
            decompress(&at_limit).map(|v| v.len()),
            Ok(MAX_DECOMPRESSED_SIZE)
        );
        let over = zeros_frame(MAX_DECOMPRESSED_SIZE / BLOCK_SIZE + 1);
        assert_eq!(decompress(&over), Err(too_large("lz4")));
        // An empty stored block, valid in the format but written by no one,
        // is refused (see the module docs).
        assert_eq!(
            decompress(&frame(&[(b"", true), (b"raw!", true)])),
            Err(err("bytes after the end mark"))
        );
        // A block claiming more than the frame's block maximum.
        let mut big = HEADER.to_vec();
        big.extend((BLOCK_SIZE as u32 + 1).to_le_bytes());
        big.extend(vec![0; BLOCK_SIZE + 1]);
        big.extend([0, 0, 0, 0]);
        assert!(decompress(&big).is_err());
        // A content size claiming far more than the frame holds is an error,
        // and nothing is allocated for the claim. lz4_flex's encoder writes
        // the header and block before it refuses to end such a frame.
        let mut claim = Vec::new();
        let mut encoder =
            FrameEncoder::with_frame_info(kafka_frame().content_size(Some(u64::MAX)), &mut claim);
        encoder.write_all(b"data").expect("writes");
        assert!(encoder.try_finish().is_err());
        drop(encoder);
        claim.extend([0, 0, 0, 0]);
        assert_eq!(claim[4], 0x68);
        assert!(decompress(&claim).is_err());
    }
}
