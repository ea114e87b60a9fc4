//! What a fetch asks for and what it gets: [`FetchBound`], [`FetchedData`],
//! and [`ReadReleaser`], which gives back the pages a reader is done with.

use bytes::Bytes;

use crate::log::LogRead;
#[cfg(test)]
pub(crate) use crate::storage::mmap::RELEASE_CHUNK;
use crate::storage::mmap::{MapRange, Releaser};

/// How far a fetch may read: Kafka's `FetchIsolation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FetchBound {
    /// Up to the log end offset: what a follower replicating the leader
    /// reads (Kafka's `FetchLogEnd`).
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "followers arrive with replication")
    )]
    LogEnd,
    /// Below the high watermark: what read_uncommitted consumers read
    /// (Kafka's `FetchHighWatermark`).
    HighWatermark,
    /// Below the last stable offset, with the aborted transactions
    /// overlapping the records: what read_committed consumers read
    /// (Kafka's `FetchTxnCommitted`).
    TxnCommitted,
}

impl FetchBound {
    /// The bound of a consumer's fetch at `isolation`.
    pub(crate) fn for_consumer(isolation: crate::types::IsolationLevel) -> Self {
        match isolation {
            crate::types::IsolationLevel::ReadUncommitted => FetchBound::HighWatermark,
            crate::types::IsolationLevel::ReadCommitted => FetchBound::TxnCommitted,
        }
    }
}

/// The result of a fetch: whole batches, zero-copy views of a segment's
/// memory map, the partition's offsets when it ran, and where the bytes lie
/// in the map so that a reader can give their pages back
/// ([`ReadReleaser`]) once it is done with them.
#[derive(Debug, Clone)]
pub(crate) struct FetchedData {
    read: LogRead,
    high_watermark: u64,
}

impl FetchedData {
    pub(crate) fn new(read: LogRead, high_watermark: u64) -> Self {
        FetchedData {
            read,
            high_watermark,
        }
    }

    /// The batches' bytes, laid end to end as stored; empty when nothing
    /// is readable at the offset below the fetch's bound.
    pub(crate) fn records(&self) -> &Bytes {
        self.read.records()
    }

    /// For a read_committed fetch ([`FetchBound::TxnCommitted`]), the
    /// aborted transactions overlapping the records (Kafka's
    /// `FetchResponse.abortedTransactions`): the reader skips each one's
    /// producer's transactional records from its first offset up to the
    /// producer's next ABORT marker, and every control batch. `None` for
    /// other fetches.
    pub(crate) fn aborted_transactions(&self) -> Option<&[crate::log::AbortedTransaction]> {
        self.read.aborted_transactions()
    }

    /// The high watermark when the fetch ran.
    #[cfg_attr(not(test), expect(dead_code, reason = "read by followers later"))]
    pub(crate) fn high_watermark(&self) -> u64 {
        self.high_watermark
    }

    /// The part of [`FetchedData::records`] this process checked before
    /// (see [`LogRead`]'s checked range): a batch wholly within it needs no
    /// CRC check.
    pub(crate) fn checked(&self) -> std::ops::Range<usize> {
        self.read.checked()
    }

    /// Where the bytes lie, for [`ReadReleaser::done_with`].
    pub(crate) fn source(&self) -> ReadSource {
        ReadSource(self.read.source().cloned())
    }

    /// The read as the log returned it (for the public `Partition::read`).
    pub(crate) fn into_log_read(self) -> LogRead {
        self.read
    }
}

/// Where a fetch's bytes lie in a segment's memory map, held weakly (it
/// keeps no map alive). Empty for an empty fetch.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReadSource(Option<MapRange>);

/// Gives back ("releases", `madvise(MADV_DONTNEED)`-style) the pages of the
/// fetches a reader is done with, in chunks, so that reading a log from end
/// to end keeps a bounded number of its pages resident. One per partition
/// a reader reads in order. Bytes still held stay valid: their pages fault
/// in again.
#[derive(Debug, Default)]
pub(crate) struct ReadReleaser(Releaser);

impl ReadReleaser {
    /// Notes that the reader is done with the bytes of `source`.
    pub(crate) fn done_with(&mut self, source: &ReadSource) {
        if let Some(range) = &source.0 {
            self.0.done_with(range);
        }
    }
}
