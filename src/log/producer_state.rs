//! Producer state: what each idempotent or transactional producer last
//! wrote to one partition (Kafka's `ProducerStateManager`,
//! `ProducerAppendInfo` and `ProducerStateEntry`).
//!
//! Per producer id it keeps the current epoch, the sequence numbers and
//! offsets of the last [`BATCHES_TO_RETAIN`] batches (a retried batch among
//! them is a duplicate, answered with its original offsets and not stored
//! twice), the coordinator epoch of its last transaction marker, and the
//! first offset of its open transaction. Per partition it keeps the open
//! transactions (by first offset) and the completed ones whose marker is
//! not below the high watermark yet: together they give the first
//! unstable offset, below which a read_committed consumer may read.
//!
//! The rules are Kafka's (transaction version 0/1 markers):
//! - a client batch whose epoch is older than the producer's is
//!   `InvalidProducerEpoch`;
//! - in a new epoch the first sequence must be 0; in the same epoch it
//!   must follow the last one (with `i32::MAX` wrapping to 0);
//! - beyond Kafka, a producer the partition has no state for (new, or
//!   expired after `producer.id.expiration.ms`, or its batches removed by
//!   retention) must start at sequence 0, else `UnknownProducerId`: Kafka
//!   accepts any sequence there, which lets a batch that overtook a
//!   failed earlier one leave a gap;
//! - a non-transactional batch while a transaction is open is
//!   `InvalidTxnState`; a transactional one with none open begins one;
//! - a marker's epoch may not be older than the producer's, and its
//!   coordinator epoch not older than the last marker's;
//! - appends that come through replication are not validated (the leader
//!   did it), only applied.
//!
//! This is pure state: the log checks a batch under its write lock, writes
//! it, then applies it; snapshots and the rebuild from the log tail are
//! the log's.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::format::control::EndTxnMarker;
use crate::format::producer_snapshot::{SnapshotBatch, SnapshotEntry};
use crate::format::txn_index::AbortedTxn;

/// How many of a producer's last batches are kept for duplicate detection
/// (Kafka's `NUM_BATCHES_TO_RETAIN`, which is also the most requests a
/// producer may have in flight with idempotence).
pub(crate) const BATCHES_TO_RETAIN: usize = 5;

/// "No epoch" (Kafka's `NO_PRODUCER_EPOCH`).
const NO_EPOCH: i16 = -1;

/// Who is appending, which decides how much is checked (Kafka's
/// `AppendOrigin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProducerOrigin {
    /// A producer: epochs, sequences and transaction state are checked.
    Client,
    /// A coordinator writing markers or its own records: epochs only.
    Coordinator,
    /// A follower copying the leader's batches: nothing is checked.
    Replication,
}

/// Why a producer's batch or marker was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProducerStateError {
    /// The batch's epoch is older than the producer's current one.
    InvalidProducerEpoch {
        /// The producer.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The producer's current epoch.
        current: i16,
    },
    /// The batch's first sequence does not follow the producer's last one.
    OutOfOrderSequence {
        /// The producer.
        producer_id: i64,
        /// The batch's first sequence.
        first_sequence: i32,
        /// The sequence that would have been in order (0 in a new epoch).
        expected: i32,
    },
    /// A client batch from a producer this partition has no state for
    /// that does not start at sequence 0: its earlier batches may be
    /// missing. Stricter than Kafka, which accepts any sequence then; the
    /// producer starts a new epoch (KIP-360) and resends from 0.
    UnknownProducerId {
        /// The producer.
        producer_id: i64,
        /// The batch's first sequence.
        first_sequence: i32,
    },
    /// A non-transactional batch while the producer's transaction is open.
    InvalidTxnState {
        /// The producer.
        producer_id: i64,
    },
    /// A marker from a coordinator older than the last one to write one.
    CoordinatorFenced {
        /// The producer.
        producer_id: i64,
        /// The marker's coordinator epoch.
        coordinator_epoch: i32,
        /// The last marker's.
        current: i32,
    },
}

/// One data batch as producer state sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DataBatch {
    /// The producer id (non-negative).
    pub(crate) producer_id: i64,
    /// Its epoch.
    pub(crate) epoch: i16,
    /// The first record's sequence.
    pub(crate) first_sequence: i32,
    /// The last record's sequence.
    pub(crate) last_sequence: i32,
    /// The first record's offset.
    pub(crate) first_offset: u64,
    /// The last record's offset.
    pub(crate) last_offset: u64,
    /// The batch's max timestamp.
    pub(crate) max_timestamp: i64,
    /// Whether the batch is part of a transaction.
    pub(crate) transactional: bool,
}

/// A batch a producer wrote: enough to answer its retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchMetadata {
    /// The first record's sequence.
    pub(crate) first_sequence: i32,
    /// The last record's sequence.
    pub(crate) last_sequence: i32,
    /// The first record's offset.
    pub(crate) first_offset: u64,
    /// The last record's offset.
    pub(crate) last_offset: u64,
    /// The batch's max timestamp.
    pub(crate) max_timestamp: i64,
}

/// One producer's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProducerEntry {
    /// The current epoch (-1 before any batch or marker).
    pub(crate) epoch: i16,
    /// Its last batches of the current epoch, oldest first.
    pub(crate) batches: VecDeque<BatchMetadata>,
    /// The coordinator epoch of its last marker (-1 before any).
    pub(crate) coordinator_epoch: i32,
    /// The timestamp of its last write.
    pub(crate) last_timestamp: i64,
    /// The first offset of its open transaction.
    pub(crate) current_txn_first_offset: Option<u64>,
}

impl ProducerEntry {
    fn empty() -> Self {
        ProducerEntry {
            epoch: NO_EPOCH,
            batches: VecDeque::new(),
            coordinator_epoch: -1,
            last_timestamp: -1,
            current_txn_first_offset: None,
        }
    }

    fn last_sequence(&self) -> Option<i32> {
        self.batches.back().map(|b| b.last_sequence)
    }

    fn add_batch(&mut self, epoch: i16, batch: BatchMetadata) {
        if epoch != self.epoch {
            self.batches.clear();
            self.epoch = epoch;
        }
        if self.batches.len() == BATCHES_TO_RETAIN {
            self.batches.pop_front();
        }
        self.batches.push_back(batch);
        self.last_timestamp = batch.max_timestamp;
    }
}

/// A transaction whose marker was just applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CompletedTxn {
    /// Its producer.
    pub(crate) producer_id: i64,
    /// Its first offset in the partition.
    pub(crate) first_offset: u64,
    /// The offset of its marker.
    pub(crate) last_offset: u64,
    /// Whether it aborted.
    pub(crate) aborted: bool,
}

/// The producer state of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProducerStateManager {
    producers: HashMap<i64, ProducerEntry>,
    /// Open transactions: first offset → producer id.
    ongoing: BTreeMap<u64, i64>,
    /// Completed transactions whose marker is at or above the high
    /// watermark: first offset → marker offset.
    unreplicated: BTreeMap<u64, u64>,
    /// The offset up to which the state covers the log.
    map_end_offset: u64,
}

fn in_sequence(last: i32, next: i32) -> bool {
    i64::from(next) == i64::from(last) + 1 || (next == 0 && last == i32::MAX)
}

/// `sequence - by` in sequence space, where `i32::MAX` is followed by 0
/// (Kafka's `decrementSequence`).
fn decrement_sequence(sequence: i32, by: i32) -> i32 {
    if sequence < by {
        i32::MAX - (by - sequence) + 1
    } else {
        sequence - by
    }
}

impl ProducerStateManager {
    /// An empty state covering the log up to `start_offset`.
    pub(crate) fn new(start_offset: u64) -> Self {
        ProducerStateManager {
            producers: HashMap::new(),
            ongoing: BTreeMap::new(),
            unreplicated: BTreeMap::new(),
            map_end_offset: start_offset,
        }
    }

    /// The offset up to which the state covers the log.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "the log uses it once transactions (markers) or producer snapshots land"
        )
    )]
    pub(crate) fn map_end_offset(&self) -> u64 {
        self.map_end_offset
    }

    /// One producer's state.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "the log uses it once transactions (markers) or producer snapshots land"
        )
    )]
    pub(crate) fn producer(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Each producer's last write as the cleaner needs it (Kafka's
    /// `lastRecordsOfActiveProducers`): producer id → (the last offset of
    /// its last data batch in its current epoch, if any; its epoch).
    pub(crate) fn last_records(&self) -> HashMap<i64, (Option<u64>, i16)> {
        self.producers
            .iter()
            .map(|(&id, e)| (id, (e.batches.back().map(|b| b.last_offset), e.epoch)))
            .collect()
    }

    /// How many producers the state holds.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "the log uses it once transactions (markers) or producer snapshots land"
        )
    )]
    pub(crate) fn producer_count(&self) -> usize {
        self.producers.len()
    }

    /// The earlier batch a client's batch repeats, if it is a retry of one
    /// of the producer's last batches in the same epoch (same first and
    /// last sequence): its offsets answer the retry, and nothing is
    /// written.
    pub(crate) fn find_duplicate(&self, batch: &DataBatch) -> Option<BatchMetadata> {
        let entry = self.producers.get(&batch.producer_id)?;
        if entry.epoch != batch.epoch {
            return None;
        }
        entry
            .batches
            .iter()
            .find(|b| {
                b.first_sequence == batch.first_sequence && b.last_sequence == batch.last_sequence
            })
            .copied()
    }

    /// Checks a data batch from `origin` (not a duplicate: see
    /// [`find_duplicate`](Self::find_duplicate)) against the producer's
    /// state.
    ///
    /// # Errors
    /// As the module docs list.
    pub(crate) fn check_data(
        &self,
        batch: &DataBatch,
        origin: ProducerOrigin,
    ) -> Result<(), ProducerStateError> {
        if origin == ProducerOrigin::Replication {
            return Ok(());
        }
        let empty = ProducerEntry::empty();
        let entry = self.producers.get(&batch.producer_id).unwrap_or(&empty);
        if batch.epoch < entry.epoch {
            return Err(ProducerStateError::InvalidProducerEpoch {
                producer_id: batch.producer_id,
                epoch: batch.epoch,
                current: entry.epoch,
            });
        }
        if origin == ProducerOrigin::Client {
            if entry.epoch == NO_EPOCH {
                if batch.first_sequence != 0 {
                    return Err(ProducerStateError::UnknownProducerId {
                        producer_id: batch.producer_id,
                        first_sequence: batch.first_sequence,
                    });
                }
            } else if batch.epoch != entry.epoch {
                if batch.first_sequence != 0 {
                    return Err(ProducerStateError::OutOfOrderSequence {
                        producer_id: batch.producer_id,
                        first_sequence: batch.first_sequence,
                        expected: 0,
                    });
                }
            } else {
                // No batch left in this epoch (only a marker): the next
                // starts at 0, as after -1.
                let last = entry.last_sequence().unwrap_or(-1);
                if !in_sequence(last, batch.first_sequence) {
                    return Err(ProducerStateError::OutOfOrderSequence {
                        producer_id: batch.producer_id,
                        first_sequence: batch.first_sequence,
                        expected: if last == i32::MAX { 0 } else { last + 1 },
                    });
                }
            }
        }
        if entry.current_txn_first_offset.is_some() && !batch.transactional {
            return Err(ProducerStateError::InvalidTxnState {
                producer_id: batch.producer_id,
            });
        }
        Ok(())
    }

    /// Applies a data batch the log has written (checked first, unless it
    /// came through replication).
    pub(crate) fn apply_data(&mut self, batch: &DataBatch) {
        let entry = self
            .producers
            .entry(batch.producer_id)
            .or_insert_with(ProducerEntry::empty);
        entry.add_batch(
            batch.epoch,
            BatchMetadata {
                first_sequence: batch.first_sequence,
                last_sequence: batch.last_sequence,
                first_offset: batch.first_offset,
                last_offset: batch.last_offset,
                max_timestamp: batch.max_timestamp,
            },
        );
        if batch.transactional && entry.current_txn_first_offset.is_none() {
            entry.current_txn_first_offset = Some(batch.first_offset);
            self.ongoing.insert(batch.first_offset, batch.producer_id);
        }
        self.map_end_offset = self.map_end_offset.max(batch.last_offset + 1);
    }

    /// Checks a transaction marker for producer `producer_id` at `epoch`.
    ///
    /// # Errors
    /// `InvalidProducerEpoch` for an epoch older than the producer's,
    /// `CoordinatorFenced` for a coordinator epoch older than the last
    /// marker's; neither from replication.
    pub(crate) fn check_marker(
        &self,
        producer_id: i64,
        epoch: i16,
        marker: EndTxnMarker,
        origin: ProducerOrigin,
    ) -> Result<(), ProducerStateError> {
        if origin == ProducerOrigin::Replication {
            return Ok(());
        }
        let Some(entry) = self.producers.get(&producer_id) else {
            return Ok(());
        };
        if epoch < entry.epoch {
            return Err(ProducerStateError::InvalidProducerEpoch {
                producer_id,
                epoch,
                current: entry.epoch,
            });
        }
        if marker.coordinator_epoch < entry.coordinator_epoch {
            return Err(ProducerStateError::CoordinatorFenced {
                producer_id,
                coordinator_epoch: marker.coordinator_epoch,
                current: entry.coordinator_epoch,
            });
        }
        Ok(())
    }

    /// Applies a marker the log has written at `offset`: the producer's
    /// transaction (if one was open) ends. Returns it, so the log can
    /// record an aborted one in the `.txnindex` (with
    /// [`last_stable_offset_after`](Self::last_stable_offset_after)) and
    /// then call [`complete_txn`](Self::complete_txn).
    pub(crate) fn apply_marker(
        &mut self,
        producer_id: i64,
        epoch: i16,
        marker: EndTxnMarker,
        offset: u64,
        timestamp: i64,
    ) -> Option<CompletedTxn> {
        let entry = self
            .producers
            .entry(producer_id)
            .or_insert_with(ProducerEntry::empty);
        let completed = entry.current_txn_first_offset.map(|first| CompletedTxn {
            producer_id,
            first_offset: first,
            last_offset: offset,
            aborted: !marker.commit,
        });
        if epoch != entry.epoch {
            entry.batches.clear();
            entry.epoch = epoch;
        }
        entry.coordinator_epoch = marker.coordinator_epoch;
        entry.last_timestamp = timestamp;
        entry.current_txn_first_offset = None;
        self.map_end_offset = self.map_end_offset.max(offset + 1);
        completed
    }

    /// The last stable offset once `completed` is complete (Kafka's
    /// `lastStableOffset(CompletedTxn)`): the first offset of the oldest
    /// other open transaction, or the offset after its marker.
    pub(crate) fn last_stable_offset_after(&self, completed: &CompletedTxn) -> u64 {
        self.ongoing
            .iter()
            .find(|&(_, &pid)| pid != completed.producer_id)
            .map_or(completed.last_offset + 1, |(&first, _)| first)
    }

    /// Marks `completed` as complete: it stays unstable until the high
    /// watermark passes its marker.
    pub(crate) fn complete_txn(&mut self, completed: &CompletedTxn) {
        if self.ongoing.remove(&completed.first_offset).is_some() {
            self.unreplicated
                .insert(completed.first_offset, completed.last_offset);
        }
    }

    /// The high watermark moved to `hw`: completed transactions whose
    /// marker lies below it are stable.
    pub(crate) fn on_high_watermark(&mut self, hw: u64) {
        self.unreplicated.retain(|_, &mut marker| marker >= hw);
    }

    /// The first offset a read_committed reader may not read yet: the
    /// first offset of the oldest open transaction, or of the oldest
    /// completed one whose marker is not below the high watermark.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "the log uses it once transactions (markers) or producer snapshots land"
        )
    )]
    pub(crate) fn first_unstable_offset(&self) -> Option<u64> {
        let ongoing = self.ongoing.keys().next().copied();
        let unreplicated = self.unreplicated.keys().next().copied();
        match (ongoing, unreplicated) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Removes producers without an open transaction whose last write is
    /// `expiration_ms` or more before `now_ms`
    /// (`producer.id.expiration.ms`). Returns how many were removed.
    pub(crate) fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            e.current_txn_first_offset.is_some()
                || now_ms.saturating_sub(e.last_timestamp) < expiration_ms
        });
        before - self.producers.len()
    }

    /// Forgets everything and covers the log from `offset` on (a log
    /// truncated fully, or a state to be rebuilt).
    pub(crate) fn truncate_fully_and_start_at(&mut self, offset: u64) {
        *self = ProducerStateManager::new(offset);
    }

    /// The state as a snapshot records it, producers in id order.
    pub(crate) fn snapshot(&self) -> Vec<SnapshotEntry> {
        let mut ids: Vec<i64> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        ids.into_iter()
            .map(|id| {
                let e = &self.producers[&id];
                SnapshotEntry {
                    producer_id: id,
                    epoch: e.epoch,
                    last_batch: e.batches.back().map(|b| SnapshotBatch {
                        last_sequence: b.last_sequence,
                        last_offset: i64::try_from(b.last_offset).unwrap_or(i64::MAX),
                        offset_delta: i32::try_from(b.last_offset - b.first_offset)
                            .unwrap_or(i32::MAX),
                    }),
                    timestamp: e.last_timestamp,
                    coordinator_epoch: e.coordinator_epoch,
                    current_txn_first_offset: e
                        .current_txn_first_offset
                        .map(|o| i64::try_from(o).unwrap_or(i64::MAX)),
                }
            })
            .collect()
    }

    /// The state a snapshot taken at `offset` records, without the
    /// producers expired at `now_ms` (Kafka drops them at load). Only each
    /// producer's last batch survives a snapshot, as in Kafka.
    pub(crate) fn from_snapshot(
        entries: &[SnapshotEntry],
        offset: u64,
        now_ms: i64,
        expiration_ms: i64,
    ) -> Self {
        let mut state = ProducerStateManager::new(offset);
        for s in entries {
            let current = s
                .current_txn_first_offset
                .and_then(|o| u64::try_from(o).ok());
            if current.is_none() && now_ms.saturating_sub(s.timestamp) >= expiration_ms {
                continue;
            }
            let mut batches = VecDeque::new();
            if let Some(b) = s.last_batch
                && let Ok(last) = u64::try_from(b.last_offset)
            {
                let delta = u64::try_from(b.offset_delta).unwrap_or(0).min(last);
                let records = i32::try_from(delta).unwrap_or(i32::MAX);
                batches.push_back(BatchMetadata {
                    first_sequence: decrement_sequence(b.last_sequence, records),
                    last_sequence: b.last_sequence,
                    first_offset: last - delta,
                    last_offset: last,
                    max_timestamp: s.timestamp,
                });
            }
            if let Some(first) = current {
                state.ongoing.insert(first, s.producer_id);
            }
            state.producers.insert(
                s.producer_id,
                ProducerEntry {
                    epoch: s.epoch,
                    batches,
                    coordinator_epoch: s.coordinator_epoch,
                    last_timestamp: s.timestamp,
                    current_txn_first_offset: current,
                },
            );
        }
        state
    }
}

impl From<ProducerStateError> for crate::Error {
    fn from(e: ProducerStateError) -> Self {
        use crate::Error;
        match e {
            ProducerStateError::InvalidProducerEpoch {
                producer_id,
                epoch,
                current,
            } => Error::InvalidProducerEpoch {
                producer_id,
                epoch,
                current,
            },
            ProducerStateError::OutOfOrderSequence {
                producer_id,
                first_sequence,
                expected,
            } => Error::OutOfOrderSequence {
                producer_id,
                sequence: first_sequence,
                expected,
            },
            ProducerStateError::UnknownProducerId {
                producer_id,
                first_sequence,
            } => Error::UnknownProducerId {
                producer_id,
                sequence: first_sequence,
            },
            ProducerStateError::InvalidTxnState { producer_id } => {
                Error::InvalidTxnState { producer_id }
            }
            // Only markers (`Log::append_marker`) are checked against the
            // coordinator epoch: a fenced coordinator's request.
            ProducerStateError::CoordinatorFenced {
                producer_id,
                coordinator_epoch,
                current,
            } => Error::InvalidArgument(format!(
                "producer {producer_id}: a marker of coordinator epoch {coordinator_epoch} is \
                 older than the last one ({current}): the coordinator was fenced"
            )),
        }
    }
}

/// The last sequence of a batch whose first is `base` and whose offsets
/// span `last_offset_delta` (Kafka's `incrementSequence`: `i32::MAX` is
/// followed by 0).
pub(crate) fn last_sequence(base: i32, last_offset_delta: i32) -> i32 {
    let wrapped = (i64::from(base) + i64::from(last_offset_delta)) % (i64::from(i32::MAX) + 1);
    i32::try_from(wrapped).unwrap_or(i32::MAX)
}

/// The data batch producer state sees in a batch of `header` whose first
/// offset is `first_offset` and whose largest timestamp (after any
/// `LogAppendTime` stamping) is `max_timestamp`; `None` for a batch
/// without a producer id, a control batch (markers are not tracked yet)
/// or one without a sequence.
pub(crate) fn data_batch(
    header: &crate::format::BatchHeader,
    first_offset: u64,
    max_timestamp: i64,
) -> Option<DataBatch> {
    if header.producer_id < 0 || header.is_control() || header.base_sequence < 0 {
        return None;
    }
    let delta = u64::try_from(header.last_offset_delta).ok()?;
    Some(DataBatch {
        producer_id: header.producer_id,
        epoch: header.producer_epoch,
        first_sequence: header.base_sequence,
        last_sequence: last_sequence(header.base_sequence, header.last_offset_delta),
        first_offset,
        last_offset: first_offset + delta,
        max_timestamp,
        transactional: header.is_transactional(),
    })
}

/// The producer state the batches of `segments` build when applied in
/// order (as a follower applies them: unchecked), up to the first
/// damaged batch. The state covers the log from `start_offset` at least.
///
/// # Errors
/// [`crate::Error::Io`] if a segment cannot be read.
#[cfg(test)]
pub(crate) fn rebuild(
    segments: &[crate::storage::segment::Segment],
    start_offset: u64,
) -> crate::Result<ProducerStateManager> {
    let mut state = ProducerStateManager::new(start_offset);
    for segment in segments {
        if !replay_segment(&mut state, segment, 0, |_| {})? {
            break;
        }
    }
    Ok(state)
}

/// Applies the batches of `segment` whose last offset is at or after
/// `from_offset` to `state`, unchecked, as a follower applies them: data
/// batches, and transaction markers (which complete their producer's
/// transaction; `aborted` gets each aborted one as its `.txnindex` entry).
/// The walk starts at the batch holding `from_offset` (found through the
/// offset index) and reads headers only, as Kafka's producer-state
/// rebuild does: the batches were checked whole when they were written,
/// or by the open's recovery past the recovery point. Returns `false` if
/// it stopped at a damaged batch.
///
/// # Errors
/// [`crate::Error::Io`] if the segment cannot be read.
pub(crate) fn replay_segment(
    state: &mut ProducerStateManager,
    segment: &crate::storage::segment::Segment,
    from_offset: u64,
    mut aborted: impl FnMut(AbortedTxn),
) -> crate::Result<bool> {
    let start = if from_offset > segment.base_offset() {
        match segment.find_batch(from_offset) {
            Ok(Some((position, _))) => position,
            // Nothing at or after it here.
            Ok(None) => return Ok(true),
            Err(crate::Error::Corrupt { .. }) => return Ok(false),
            Err(e) => return Err(e),
        }
    } else {
        0
    };
    for batch in segment.headers_from(start)? {
        let Ok((position, header)) = batch else {
            return Ok(false);
        };
        // The walk checked the offsets: never negative.
        let (Ok(base), Ok(last)) = (
            u64::try_from(header.base_offset),
            u64::try_from(header.last_offset()),
        ) else {
            return Ok(false);
        };
        if last < from_offset {
            continue;
        }
        if header.is_control() {
            if header.producer_id < 0 {
                continue;
            }
            let end = position + header.total_size() as u64;
            let bytes = segment.slice(position, end)?;
            if let Some(txn) = apply_control(state, &header, &bytes, base) {
                aborted(txn);
            }
        } else if let Some(data) = data_batch(&header, base, header.max_timestamp) {
            state.apply_data(&data);
        }
    }
    Ok(true)
}

/// Applies the control batch `bytes` (header `header`) stored at `offset`:
/// a transaction marker completes its producer's transaction. Returns the
/// `.txnindex` entry of a transaction it aborted. A control batch that is
/// no transaction marker (or does not decode) changes nothing.
pub(crate) fn apply_control(
    state: &mut ProducerStateManager,
    header: &crate::format::BatchHeader,
    bytes: &[u8],
    offset: u64,
) -> Option<AbortedTxn> {
    let marker = crate::format::control::marker_of_batch(bytes)?;
    let completed = state.apply_marker(
        header.producer_id,
        header.producer_epoch,
        marker,
        offset,
        header.max_timestamp,
    )?;
    state.finish_txn(&completed)
}

impl ProducerStateManager {
    /// Completes a transaction whose marker was applied
    /// ([`complete_txn`](Self::complete_txn)) and returns its `.txnindex`
    /// entry if it aborted, with the last stable offset once it is
    /// complete.
    pub(crate) fn finish_txn(&mut self, completed: &CompletedTxn) -> Option<AbortedTxn> {
        let lso = self.last_stable_offset_after(completed);
        self.complete_txn(completed);
        completed.aborted.then(|| AbortedTxn {
            producer_id: completed.producer_id,
            first_offset: i64::try_from(completed.first_offset).unwrap_or(i64::MAX),
            last_offset: i64::try_from(completed.last_offset).unwrap_or(i64::MAX),
            last_stable_offset: i64::try_from(lso).unwrap_or(i64::MAX),
        })
    }

    /// The first unstable offset once the high watermark is `hw`
    /// ([`first_unstable_offset`](Self::first_unstable_offset) without
    /// moving the state): the oldest open transaction's first offset, or
    /// the oldest completed one's whose marker is at or above `hw`.
    pub(crate) fn first_unstable_offset_at(&self, hw: u64) -> Option<u64> {
        let ongoing = self.ongoing.keys().next().copied();
        let unreplicated = self
            .unreplicated
            .iter()
            .find(|&(_, &marker)| marker >= hw)
            .map(|(&first, _)| first);
        match (ongoing, unreplicated) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests;
