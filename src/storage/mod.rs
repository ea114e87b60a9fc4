//! L1: files. The file layer ([`Storage`]), memory maps (the only module with
//! `unsafe`), the offset and time indexes, and the segment.

mod file;
pub(crate) mod mmap;

pub use file::{DirLock, OpenMode, Storage, StorageFile};
