//! L0: bytes only. Kafka's v2 record batch (magic 2): header, records,
//! varints, CRC-32C and compression codecs. No files, locks or threads.
//!
//! `docs/format.md` is the byte-level specification; the constants in
//! [`header`] mirror it.

pub(crate) mod header;

pub use header::*;
