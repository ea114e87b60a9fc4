//! Compression of a batch's records section (codecs are added next).

use crate::error::FormatError;
use crate::types::Compression;

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
        other => Err(FormatError::CodecNotEnabled(other.name())),
    }
}

/// Decompresses a records section compressed with `codec`.
pub(crate) fn decompress(codec: Compression, input: &[u8]) -> Result<Vec<u8>, FormatError> {
    match codec {
        Compression::None => Ok(input.to_vec()),
        other => Err(FormatError::CodecNotEnabled(other.name())),
    }
}
