//! Memory maps: the only module allowed `unsafe`. (Stub; the storage helper fills it in.)

/// A read-only memory map of a file prefix.
#[derive(Debug)]
pub struct ReadMap;
