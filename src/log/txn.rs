//! Transactions in the log: markers (Kafka's `UnifiedLog` with
//! `AppendOrigin.COORDINATOR`), the aborted-transaction index and the last
//! stable offset.
//!
//! A transactional data batch opens a transaction for its producer at its
//! first offset (see `append.rs`). A marker (a control batch with one
//! COMMIT or ABORT record) closes it; an ABORT adds an entry to the
//! `.txnindex` of the segment the marker went to. The last stable offset
//! (LSO) is the first offset of the oldest transaction not yet complete
//! and replicated, or the high watermark: read_committed readers stop
//! there.

use crate::error::{Error, Result};
use crate::format::control::{EndTxnMarker, marker_batch_array};
use crate::format::txn_index::AbortedTxn;
use crate::format::{self, ControlRecordType};
use crate::log::producer_state::ProducerOrigin;
use crate::log::read::AbortedTransaction;
use crate::log::{AppendInfo, Log, LogInner, LogState};
use crate::storage::segment::BatchMeta;
use crate::types::TimestampType;
use std::sync::atomic::Ordering;

impl Log {
    /// Appends a transaction marker for producer `producer_id` (the
    /// transaction coordinator's leader path, Kafka's
    /// `appendAsLeader(origin = COORDINATOR)`): a control batch with one
    /// COMMIT or ABORT record carrying `coordinator_epoch`, stamped with the
    /// log's latest leader epoch and the clock's now (as a LogAppendTime
    /// batch when the topic's `message.timestamp.type` is `LogAppendTime`,
    /// as Kafka's broker stamps it). The producer's open transaction (if any)
    /// ends; an ABORT adds the transaction to the segment's `.txnindex`, so
    /// read_committed readers skip its records. Durable as
    /// [`Log::append`].
    ///
    /// # Errors
    /// [`Error::InvalidProducerEpoch`] for an epoch older than the
    /// producer's; [`Error::InvalidArgument`] for a negative producer id or
    /// a coordinator epoch older than the last marker's for this producer
    /// (a fenced coordinator); nothing is stored then. [`Error::Fenced`],
    /// [`Error::Io`] as [`Log::append`].
    pub fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        marker: ControlRecordType,
        coordinator_epoch: i32,
    ) -> Result<AppendInfo> {
        self.append_marker_in_epoch(producer_id, producer_epoch, marker, coordinator_epoch, None)
    }

    /// [`Log::append_marker`] stamped with `leader_epoch` (the partition
    /// leader's), or the log's latest epoch when `None`.
    pub(crate) fn append_marker_in_epoch(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        marker: ControlRecordType,
        coordinator_epoch: i32,
        leader_epoch: Option<i32>,
    ) -> Result<AppendInfo> {
        if producer_id < 0 {
            return Err(Error::InvalidArgument(format!(
                "a transaction marker needs a producer id, not {producer_id}"
            )));
        }
        let end = EndTxnMarker {
            commit: marker.is_commit(),
            coordinator_epoch,
        };
        let info = {
            let mut state = self.inner.state.write();
            self.inner.check_not_fenced()?;
            state.producers.check_marker(
                producer_id,
                producer_epoch,
                end,
                ProducerOrigin::Coordinator,
            )?;
            let leader_epoch = leader_epoch
                .or_else(|| state.epochs.latest_epoch())
                .unwrap_or(-1);
            if let Some(latest) = state.epochs.latest_epoch()
                && leader_epoch >= 0
                && leader_epoch < latest
            {
                return Err(Error::InvalidArgument(format!(
                    "leader epoch {leader_epoch} is older than the log's latest epoch {latest}: \
                     a leader of an older epoch must not append"
                )));
            }
            let now = self.inner.clock.now_ms();
            // A fixed-size batch on the stack, stamped in place.
            let mut bytes = marker_batch_array(producer_id, producer_epoch, end, now);
            // Kafka builds the marker with CreateTime; its LogValidator
            // then stamps it as any batch of a LogAppendTime topic (the
            // timestamp-type attribute and the append time as the batch's
            // max timestamp).
            let append_time = (self.inner.config().timestamp_type()
                == TimestampType::LogAppendTime)
                .then_some(now);
            if let Some(t) = append_time {
                format::set_log_append_time(&mut bytes, t);
            }
            let offset = state.log_end_offset;
            self.inner
                .assign_epochs(&mut state, std::iter::once((leader_epoch, offset)))?;
            format::set_base_offset(&mut bytes, offset as i64);
            format::set_partition_leader_epoch(&mut bytes, leader_epoch);
            let metas = [BatchMeta {
                position_in_buf: 0,
                size: bytes.len(),
                last_offset: offset,
                max_timestamp: now,
            }];
            let (segment_base_offset, position) = self
                .inner
                .append_locked(&mut state, &bytes, &metas, offset, now)?;
            let completed =
                state
                    .producers
                    .apply_marker(producer_id, producer_epoch, end, offset, now);
            if let Some(completed) = completed
                && let Some(aborted) = state.producers.finish_txn(&completed)
            {
                self.inner.index_aborted(&mut state, aborted)?;
            }
            prune_stable(&self.inner, &mut state);
            AppendInfo::stored(
                offset,
                offset,
                now,
                append_time,
                1,
                bytes.len() as u64,
                segment_base_offset,
                position,
            )
        };
        self.inner.after_append(info.last_offset() + 1)?;
        Ok(info)
    }

    /// The last stable offset (Kafka's `lastStableOffset`): the first
    /// offset of the oldest transaction that is open, or complete but with
    /// its marker not yet below the high watermark, else the high
    /// watermark ([`Log::update_high_watermark`]; the log end offset for a
    /// log no replica layer tells). A read_committed reader reads below
    /// it.
    #[must_use]
    pub fn last_stable_offset(&self) -> u64 {
        last_stable_offset(&self.inner, &self.inner.state.read())
    }

    /// Tells the log its partition's high watermark (the replica layer
    /// does, before it asks for the last stable offset or writes a
    /// marker): completed transactions whose marker lies below it become
    /// stable. Capped at the log end offset. A log never told uses its log
    /// end offset. Takes no lock.
    pub fn update_high_watermark(&self, high_watermark: u64) {
        self.inner
            .high_watermark
            .store(high_watermark.min(u64::MAX - 1), Ordering::Release);
    }

    /// The aborted transactions of the segments from the one holding
    /// `offset` on whose marker is at or after `offset` and whose first
    /// offset is below `upper` (Kafka's `collectAbortedTransactions`).
    #[must_use]
    pub fn aborted_transactions(&self, offset: u64, upper: u64) -> Vec<AbortedTransaction> {
        collect_aborted(&self.inner.state.read(), offset, upper)
    }
}

/// The high watermark the log goes by: the one it was told, else its log
/// end offset; never past the log end.
fn high_watermark(inner: &LogInner, state: &LogState) -> u64 {
    inner
        .high_watermark
        .load(Ordering::Acquire)
        .min(state.log_end_offset)
}

/// [`Log::last_stable_offset`] under the state lock.
pub(crate) fn last_stable_offset(inner: &LogInner, state: &LogState) -> u64 {
    let hw = high_watermark(inner, state);
    state
        .producers
        .first_unstable_offset_at(hw)
        .map_or(hw, |first| first.min(hw))
}

/// Drops the completed transactions whose marker lies below the high
/// watermark from the unstable ones (memory only: the last stable offset
/// is computed against the high watermark anyway).
pub(crate) fn prune_stable(inner: &LogInner, state: &mut LogState) {
    let hw = high_watermark(inner, state);
    state.producers.on_high_watermark(hw);
}

/// [`Log::aborted_transactions`] under the state lock.
pub(crate) fn collect_aborted(
    state: &LogState,
    offset: u64,
    upper: u64,
) -> Vec<AbortedTransaction> {
    let mut out = Vec::new();
    for segment in &state.segments[state.segment_index_for(offset)..] {
        for txn in segment.aborted_txns() {
            let (Ok(first), Ok(last)) = (
                u64::try_from(txn.first_offset),
                u64::try_from(txn.last_offset),
            ) else {
                continue;
            };
            if last >= offset && first < upper {
                out.push(AbortedTransaction {
                    producer_id: txn.producer_id,
                    first_offset: first,
                });
            }
        }
    }
    out
}

impl LogInner {
    /// Adds an aborted transaction to the `.txnindex` of the active
    /// segment (where its marker just went). The file is fsynced with the
    /// segment's log (its first entry also makes the directory dirty). A
    /// failed write fences the log.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub(crate) fn index_aborted(&self, state: &mut LogState, txn: AbortedTxn) -> Result<()> {
        match state.active_mut().append_aborted(txn) {
            Ok((file, created)) => {
                state.unflushed.push(file);
                state.dir_dirty |= created;
                Ok(())
            }
            Err(e) => {
                self.fence();
                Err(e)
            }
        }
    }
}
