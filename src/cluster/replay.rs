//! Replaying an internal log from its start: the controller's metadata log
//! on open, and each `__consumer_offsets` partition.

use std::path::Path;

use bytes::Bytes;

use crate::error::{CorruptionKind, Error, Result};
use crate::format::Batches;

/// Reads every record in `[start, end)` through `read` (the whole batches
/// from an offset: a log's `read` or a replica manager's `fetch`) and hands its offset, key and value
/// to `apply`, in offset order. A damaged batch is reported as
/// [`Error::Corrupt`] at `path` and the offset being read. A record `apply`
/// rejects is the same error, unless `skipped` collects such records
/// (offset and reason) so that replay goes on past them.
pub(crate) fn replay_records(
    path: &Path,
    start: u64,
    end: u64,
    mut read: impl FnMut(u64) -> Result<Bytes>,
    mut apply: impl FnMut(u64, Option<&Bytes>, Option<&Bytes>) -> std::result::Result<(), String>,
    mut skipped: Option<&mut Vec<(u64, String)>>,
) -> Result<()> {
    let batch_error = |at: u64, e| Error::corrupt(path, at, CorruptionKind::Batch(e));
    let mut next = start;
    while next < end {
        let records = read(next)?;
        if records.is_empty() {
            break;
        }
        for batch in Batches::new(records) {
            let batch = batch.map_err(|e| batch_error(next, e))?;
            // Transaction markers (control batches) are not state.
            if batch.header().is_control() {
                next = batch.header().next_offset() as u64;
                continue;
            }
            for record in batch.records().map_err(|e| batch_error(next, e))? {
                let record = record.map_err(|e| batch_error(next, e))?;
                let at = record.offset() as u64;
                // A read starts at the batch holding `next`, which may
                // begin below it.
                if at < next {
                    continue;
                }
                if let Err(e) = apply(at, record.key(), record.value()) {
                    match skipped.as_deref_mut() {
                        Some(skipped) => skipped.push((at, e)),
                        None => {
                            return Err(Error::corrupt(
                                path,
                                at,
                                CorruptionKind::Metadata(format!("record at offset {at}: {e}")),
                            ));
                        }
                    }
                }
            }
            next = batch.header().next_offset() as u64;
        }
    }
    Ok(())
}
