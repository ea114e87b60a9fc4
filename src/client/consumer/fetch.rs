//! One partition's fetched bytes and the cursor that turns them into
//! [`ConsumerRecord`]s, lazily, a batch at a time.

use std::sync::Arc;

use bytes::Bytes;

use super::records::ConsumerRecord;
use crate::error::FormatError;
use crate::format::{RecordIter, decode_batch_at};
use crate::types::TimestampType;

/// Whole record batches read from one partition (zero-copy views of a
/// segment's memory map), and how far the consumer has taken records from
/// them. A consumer holds at most one per partition.
#[derive(Debug)]
pub(super) struct Fetch {
    data: Bytes,
    /// Position of the next batch in `data`.
    pos: usize,
    /// The batch records are being taken from.
    current: Option<Current>,
}

#[derive(Debug)]
struct Current {
    records: RecordIter,
    timestamp_type: TimestampType,
    next_offset: u64,
}

/// Where [`Fetch::drain`] puts its records, and what they share.
pub(super) struct Sink<'a> {
    pub(super) topic: &'a Arc<str>,
    pub(super) partition: u32,
    pub(super) check_crcs: bool,
    pub(super) max: usize,
    pub(super) out: &'a mut Vec<ConsumerRecord>,
}

impl Fetch {
    pub(super) fn new(data: Bytes) -> Self {
        Fetch {
            data,
            pos: 0,
            current: None,
        }
    }

    /// Bytes of batches not yet started (what `fetch.min.bytes` and
    /// `fetch.max.bytes` count).
    pub(super) fn remaining_bytes(&self) -> usize {
        self.data.len() - self.pos
    }

    /// Whether every record has been taken.
    pub(super) fn is_drained(&self) -> bool {
        self.current.is_none() && self.pos >= self.data.len()
    }

    /// Moves records at or above `*position` into `sink.out` until it holds
    /// `sink.max` records or the fetch is drained, advancing `*position`
    /// past each record taken and past batches that end below it (control
    /// batches, records removed by compaction).
    ///
    /// On a damaged batch the fetch is emptied and the error returned;
    /// `*position` stays at the first record not taken.
    pub(super) fn drain(&mut self, position: &mut u64, sink: Sink<'_>) -> Result<(), FormatError> {
        let result = self.drain_inner(position, sink);
        if result.is_err() {
            self.current = None;
            self.pos = self.data.len();
        }
        result
    }

    #[inline]
    fn drain_inner(&mut self, position: &mut u64, sink: Sink<'_>) -> Result<(), FormatError> {
        let Sink {
            topic,
            partition,
            check_crcs,
            max,
            out,
        } = sink;
        while out.len() < max {
            if let Some(current) = &mut self.current {
                match current.records.next() {
                    Some(record) => {
                        let record = record?;
                        // Stored offsets are never negative.
                        let offset = record.offset as u64;
                        if offset < *position {
                            continue;
                        }
                        *position = offset + 1;
                        out.push(ConsumerRecord {
                            topic: Arc::clone(topic),
                            partition,
                            offset,
                            timestamp: record.timestamp,
                            timestamp_type: current.timestamp_type,
                            key: record.key,
                            value: record.value,
                            headers: record.headers,
                        });
                    }
                    None => {
                        *position = (*position).max(current.next_offset);
                        self.current = None;
                    }
                }
                continue;
            }
            if self.pos >= self.data.len() {
                break;
            }
            let (batch, size) = decode_batch_at(&self.data, self.pos, check_crcs)?;
            self.pos += size;
            let header = batch.header();
            let next_offset = header.next_offset() as u64;
            if next_offset <= *position {
                // Wholly below the position: the first batch of a read may
                // start before the offset asked for.
                continue;
            }
            if header.is_control() {
                // Transaction markers are not records for the application.
                *position = next_offset;
                continue;
            }
            self.current = Some(Current {
                timestamp_type: header.timestamp_type(),
                next_offset,
                records: batch.records()?,
            });
        }
        Ok(())
    }
}
