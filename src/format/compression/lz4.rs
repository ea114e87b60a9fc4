//! lz4 (codec 3): the LZ4 frame format as Kafka's `Lz4BlockOutputStream`
//! writes it.
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
//! Reading accepts what Kafka's `Lz4BlockInputStream` accepts: version 1,
//! independent blocks, block sizes 64 KiB to 4 MiB, an optional content
//! size (skipped), optional block checksums and content checksum (both
//! verified). The descriptor checksum HC is verified (Kafka only skips it for
//! magic 0 batches). Dependent (linked) blocks, reserved bits and bytes after
//! the end mark are refused.

use super::xxhash::xxh32;
use super::{MAX_DECOMPRESSED_SIZE, too_large};
use crate::error::FormatError;

const MAGIC: u32 = 0x184D_2204;
const FLG_VERSION_MASK: u8 = 0xC0;
const FLG_VERSION_1: u8 = 0x40;
const FLG_BLOCK_INDEPENDENCE: u8 = 0x20;
const FLG_BLOCK_CHECKSUM: u8 = 0x10;
const FLG_CONTENT_SIZE: u8 = 0x08;
const FLG_CONTENT_CHECKSUM: u8 = 0x04;
const FLG_RESERVED: u8 = 0x03;
/// Version 1, independent blocks, nothing else.
const FLG_WRITTEN: u8 = FLG_VERSION_1 | FLG_BLOCK_INDEPENDENCE;
/// Block maximum size code 4: 64 KiB.
const BD_WRITTEN: u8 = 4 << 4;
const BLOCK_SIZE: usize = 64 * 1024;
/// High bit of a block size: the block is stored uncompressed.
const UNCOMPRESSED: u32 = 0x8000_0000;

fn err(msg: impl std::fmt::Display) -> FormatError {
    FormatError::Decompression(format!("lz4: {msg}"))
}

/// The descriptor checksum byte of the descriptor bytes `desc`.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's frame header, byte for byte.
    const HEADER: [u8; 7] = [0x04, 0x22, 0x4d, 0x18, 0x60, 0x40, 0x82];

    /// An LZ4 block built by hand from the block format: a sequence with 3
    /// literals "abc" and a 9-byte match at offset 3, then a last sequence of
    /// 5 literals "hello".
    const BLOCK: [u8; 12] = [
        0x35, b'a', b'b', b'c', 0x03, 0x00, 0x50, b'h', b'e', b'l', b'l', b'o',
    ];

    fn frame(blocks: &[(&[u8], bool)]) -> Vec<u8> {
        let mut v = HEADER.to_vec();
        for &(data, stored) in blocks {
            let mut size = data.len() as u32;
            if stored {
                size |= UNCOMPRESSED;
            }
            v.extend(size.to_le_bytes());
            v.extend_from_slice(data);
        }
        v.extend([0, 0, 0, 0]);
        v
    }

    #[test]
    fn header_checksum_is_kafkas() {
        assert_eq!(header_checksum(&[FLG_WRITTEN, BD_WRITTEN]), 0x82);
    }

    #[test]
    fn decodes_hand_built_frame() -> Result<(), FormatError> {
        let f = frame(&[(&BLOCK, false), (b"raw!", true)]);
        assert_eq!(decompress(&f)?, b"abcabcabcabchelloraw!");
        Ok(())
    }

    #[test]
    fn decodes_optional_fields() -> Result<(), FormatError> {
        // Content size + block checksums + content checksum.
        let flg = FLG_WRITTEN | FLG_BLOCK_CHECKSUM | FLG_CONTENT_SIZE | FLG_CONTENT_CHECKSUM;
        let mut desc = vec![flg, BD_WRITTEN];
        desc.extend(4u64.to_le_bytes());
        let mut v = MAGIC.to_le_bytes().to_vec();
        v.extend(&desc);
        v.push(header_checksum(&desc));
        v.extend((4 | UNCOMPRESSED).to_le_bytes());
        v.extend(b"data");
        v.extend(xxh32(b"data", 0).to_le_bytes());
        v.extend(0u32.to_le_bytes());
        v.extend(xxh32(b"data", 0).to_le_bytes());
        assert_eq!(decompress(&v)?, b"data");
        let n = v.len();
        v[n - 1] ^= 1;
        assert!(decompress(&v).is_err());
        Ok(())
    }

    #[test]
    fn writes_kafkas_framing() -> Result<(), FormatError> {
        let input: Vec<u8> = (0..150_000u32).map(|i| (i % 7) as u8).collect();
        let mut out = Vec::new();
        compress(&input, &mut out)?;
        assert_eq!(out[..7], HEADER);
        assert_eq!(out[out.len() - 4..], [0, 0, 0, 0]);
        assert_eq!(decompress(&out)?, input);
        // Incompressible input is stored.
        let mut out = Vec::new();
        compress(b"xyz", &mut out)?;
        assert_eq!(out, frame(&[(b"xyz", true)]));
        Ok(())
    }

    #[test]
    fn refuses_what_kafka_refuses() {
        let good = frame(&[(&BLOCK, false)]);
        let mut bad_hc = good.clone();
        bad_hc[6] ^= 1;
        assert!(decompress(&bad_hc).is_err());
        let mut dependent = good.clone();
        dependent[4] = 0x40;
        dependent[6] = header_checksum(&[0x40, 0x40]);
        assert!(decompress(&dependent).is_err());
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decompress(&trailing).is_err());
        for cut in 0..good.len() {
            assert!(decompress(&good[..cut]).is_err(), "cut at {cut}");
        }
    }
}
