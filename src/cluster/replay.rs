//! Replaying an internal log from its start: the controller's metadata log
//! on open, `__transaction_state` and each `__consumer_offsets` partition.

use std::path::Path;

use bytes::Bytes;

use crate::error::{CorruptionKind, Error, Result};
use crate::format::Batches;
use crate::format::control::marker_of_batch;

/// One entry of a replayed log, as [`replay_log`] hands it over.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Replayed<'a> {
    /// A record of a data batch.
    Record {
        /// The record's offset.
        offset: u64,
        /// The base offset of its batch (Kafka's `appendedBatchOffset`).
        batch_offset: u64,
        /// The producer of a transactional batch (`None` outside
        /// transactions).
        txn_producer: Option<i64>,
        /// The record's key.
        key: Option<&'a Bytes>,
        /// The record's value (`None`: a tombstone).
        value: Option<&'a Bytes>,
    },
    /// A transaction marker: `producer_id`'s transaction ends, committed
    /// or aborted.
    Marker {
        /// The producer whose transaction it ends.
        producer_id: i64,
        /// Whether the transaction committed.
        commit: bool,
    },
}

/// Reads every record in `[start, end)` through `read` (the whole batches
/// from an offset: a log's `read` or a replica manager's `fetch`) and hands its offset, key and value
/// to `apply`, in offset order, passing over transaction markers. A damaged batch is reported as
/// [`Error::Corrupt`] at `path` and the offset being read. A record `apply`
/// rejects is the same error, unless `skipped` collects such records
/// (offset and reason) so that replay goes on past them.
pub(crate) fn replay_records(
    path: &Path,
    start: u64,
    end: u64,
    read: impl FnMut(u64) -> Result<Bytes>,
    mut apply: impl FnMut(u64, Option<&Bytes>, Option<&Bytes>) -> std::result::Result<(), String>,
    skipped: Option<&mut Vec<(u64, String)>>,
) -> Result<()> {
    replay_log(
        path,
        start,
        end,
        read,
        |entry| match entry {
            Replayed::Record {
                offset, key, value, ..
            } => apply(offset, key, value),
            // Transaction markers are not state.
            Replayed::Marker { .. } => Ok(()),
        },
        skipped,
    )
}

/// [`replay_records`] that also hands over each record's batch (its base
/// offset, its producer when transactional) and each transaction marker
/// (a control batch that is no marker is passed over), for a log written
/// in transactions (`__consumer_offsets`).
pub(crate) fn replay_log(
    path: &Path,
    start: u64,
    end: u64,
    mut read: impl FnMut(u64) -> Result<Bytes>,
    mut apply: impl FnMut(Replayed<'_>) -> std::result::Result<(), String>,
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
            let header = *batch.header();
            let batch_offset = header.base_offset as u64;
            if header.is_control() {
                if let Some(marker) = marker_of_batch(batch.as_bytes())
                    && batch_offset >= next
                {
                    let marker = Replayed::Marker {
                        producer_id: header.producer_id,
                        commit: marker.commit,
                    };
                    settle(path, batch_offset, apply(marker), skipped.as_deref_mut())?;
                }
                next = header.next_offset() as u64;
                continue;
            }
            let txn_producer = header.is_transactional().then_some(header.producer_id);
            for record in batch.records().map_err(|e| batch_error(next, e))? {
                let record = record.map_err(|e| batch_error(next, e))?;
                let at = record.offset() as u64;
                // A read starts at the batch holding `next`, which may
                // begin below it.
                if at < next {
                    continue;
                }
                let entry = Replayed::Record {
                    offset: at,
                    batch_offset,
                    txn_producer,
                    key: record.key(),
                    value: record.value(),
                };
                settle(path, at, apply(entry), skipped.as_deref_mut())?;
            }
            next = header.next_offset() as u64;
        }
    }
    Ok(())
}

/// What `apply` said of the entry at `at`: a refusal is collected in
/// `skipped` if there is one, else it is [`Error::Corrupt`].
fn settle(
    path: &Path,
    at: u64,
    applied: std::result::Result<(), String>,
    skipped: Option<&mut Vec<(u64, String)>>,
) -> Result<()> {
    match (applied, skipped) {
        (Ok(()), _) => Ok(()),
        (Err(e), Some(skipped)) => {
            skipped.push((at, e));
            Ok(())
        }
        (Err(e), None) => Err(Error::corrupt(
            path,
            at,
            CorruptionKind::Metadata(format!("record at offset {at}: {e}")),
        )),
    }
}
