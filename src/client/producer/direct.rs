//! Appends from the sending threads: a producer with
//! [`DirectAppends`](super::accumulator::DirectAppends) appends a
//! partition's due group of sealed batches on the thread that sealed them,
//! in one (vectored) write, while the sender thread is behind the partition
//! (`Held::own_groups`; a sender that keeps up is handed the groups
//! instead). The sender thread then finishes only what needs it
//! (callbacks, acknowledgements not given at the append, retries).
//!
//! An idempotent producer's sending thread numbers the batches it
//! appends from the partition's sequences, which it shares with the
//! sender thread ([`PartitionShared`], which explains why the two never
//! number a partition at once); a refused sequence goes to the sender as
//! any failed append does, which retries (or renumbers) as it would have.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::MutexGuard;

use super::accumulator::{Accumulator, Batch, Handoff, PartitionShared, SENDER_RUNNING, Sequences};
use super::sender::{append_group, encode, group_limit, outcomes, stamp};
use super::{Acks, Core};
use crate::cluster::TopicState;
use crate::error::Result;
use crate::timeline::Stage;

/// How many groups one send appends at most before it returns (others
/// may keep sealing into the partition meanwhile): the rest waits for a
/// later seal or its `linger.ms`.
const MAX_ROUNDS: usize = 4;

/// What became of a group a sending thread appended.
enum Written {
    /// Appended and completed here: their seal numbers, the
    /// `buffer.memory` they held and their buffers, to keep for new
    /// batches.
    Done {
        seqs: Vec<u64>,
        released: usize,
        spare: Vec<Vec<u8>>,
    },
    /// For the sender thread to finish.
    Handoff(Handoff),
}

impl Core {
    /// Appends the held batches a seal of this send found due
    /// (`Accumulator::direct_due`), on this thread; the lock is released
    /// while they are written.
    pub(super) fn append_held(&self, acc: &mut MutexGuard<'_, Accumulator>) {
        if let Some((ti, partition)) = acc.direct_due.take() {
            self.append_partition(acc, ti, partition);
        }
    }

    /// Appends the held batches of `partition` of entry `ti` on this
    /// thread, up to [`MAX_ROUNDS`] groups, while it may.
    fn append_partition(&self, acc: &mut MutexGuard<'_, Accumulator>, ti: usize, partition: u32) {
        let Some(topic) = acc.topics.get(ti).map(|e| e.state.clone()) else {
            return;
        };
        let limit = group_limit(&topic);
        for _ in 0..MAX_ROUNDS {
            let bound = self.in_flight_bound(ti, partition, acc);
            let Some((group, shared)) = acc.take_group(ti, partition, limit, bound) else {
                return;
            };
            let written =
                MutexGuard::unlocked(acc, || self.write_group(&topic, partition, group, &shared));
            let handoff = match written {
                Written::Done {
                    seqs,
                    released,
                    mut spare,
                } => {
                    acc.finished_outside(seqs);
                    acc.used -= released;
                    acc.spare.keep(&mut spare);
                    acc.wake_one_space_waiter();
                    self.publish_done(acc);
                    None
                }
                Written::Handoff(handoff) => Some(handoff),
            };
            if !acc.end_writing(ti, partition, &topic, &shared, handoff) {
                return;
            }
        }
        // Still due: the sender must know their linger deadline.
        if acc
            .held_deadline(ti, partition, self.linger_ms)
            .is_some_and(|d| d < acc.sender_wakes_at)
        {
            acc.pending_wake = true;
        }
    }

    /// Seals the open batches and appends, on this thread, the held
    /// batches of every partition it may append now (nothing of the
    /// partition with the sender thread or being appended elsewhere), as
    /// due groups are: for a flush or a commit, which waits for them,
    /// instead of handing them to the sender thread and waiting for its
    /// answer (and leaving their buffers' lines in its CPU's cache for the
    /// next batches). A transaction's partitions are added to it first
    /// (a no-op at the coordinator for those added already); if that
    /// fails, the sender thread takes the batches and handles the refusal
    /// as for any batch of the transaction. What stays held (more than
    /// the rounds of [`MAX_ROUNDS`] groups take, or partitions not free)
    /// is left to the caller's flush, which hands it to the sender thread.
    ///
    /// Batches with callbacks still need the sender thread, which runs
    /// them: if it sleeps, it is woken before the writes (a thread woken
    /// from a park takes tens of microseconds to run on a virtual
    /// machine, which the writes then hide), and it is handed the appended
    /// batches as soon as they are written, so that a commit records its
    /// decision while the callbacks run.
    pub(super) fn append_own(&self, acc: &mut MutexGuard<'_, Accumulator>) {
        let (parts, callbacks) = acc.seal_to_held(&self.sticky);
        if parts.is_empty() {
            return;
        }
        if callbacks && acc.sender_wakes_at != SENDER_RUNNING {
            self.wake_sender();
        }
        if acc.txn.is_none() || self.add_own_partitions(acc, &parts) {
            for (ti, partition) in parts {
                self.append_partition(acc, ti, partition);
            }
        }
        if std::mem::take(&mut acc.pending_wake) {
            self.wake_sender();
        }
    }

    /// Adds the partitions `parts` (entry index, partition) whose held
    /// batches this thread is about to append to their transaction; whether
    /// the coordinator did (all of them hold batches of one transaction).
    fn add_own_partitions(
        &self,
        acc: &mut MutexGuard<'_, Accumulator>,
        parts: &[(usize, u32)],
    ) -> bool {
        let Some(id) = self.config.transactional_id() else {
            return false;
        };
        let mut tag = None;
        let mut partitions = Vec::with_capacity(parts.len());
        for &(ti, partition) in parts {
            let entry = &acc.topics[ti];
            let first = entry
                .held
                .get(partition as usize)
                .and_then(|h| h.batches.front())
                .and_then(|b| b.txn);
            match (first, tag) {
                (Some(t), None) => tag = Some(t),
                (Some(t), Some(other)) if t == other => {}
                _ => return false,
            }
            partitions.push(crate::types::TopicPartition::new(
                &*entry.state.name,
                partition,
            ));
        }
        let Some(tag) = tag else {
            return false;
        };
        let added = MutexGuard::unlocked(acc, || {
            self.cluster
                .add_partitions_to_txn(id, tag.producer_id, tag.epoch, &partitions)
        });
        if added.is_err() {
            return false;
        }
        if let Some(txn) = acc.txn.as_mut() {
            txn.started(tag.number);
        }
        true
    }

    /// With acks=all, how many batches of `partition` of entry `ti` may
    /// wait for their acknowledgement (`max.in.flight`, as the sender
    /// bounds them: a resend after a failed acknowledgement is recognised
    /// as a duplicate only among the partition's last 5 batches). Not
    /// bounded on a cluster of one broker while the partition's appends
    /// from the sending threads are acknowledged at once: every partition
    /// has one replica there, so an acknowledgement waits only for an
    /// fsync (a topic that fsyncs every append, whose groups stay bounded
    /// once one append waited).
    fn in_flight_bound(&self, ti: usize, partition: u32, acc: &Accumulator) -> Option<usize> {
        if self.config.acks() != Acks::All {
            return None;
        }
        let immediate = self.one_broker
            && acc
                .topics
                .get(ti)
                .and_then(|e| e.held.get(partition as usize))
                .is_some_and(|h| !h.shared.acks_wait.load(Ordering::Relaxed));
        (!immediate).then_some(self.max_in_flight)
    }

    /// Encodes (numbers, with idempotence) and appends `group` (batches
    /// of `partition` of `topic`, in seal order) as the sender would, and
    /// completes them here when nothing else is needed: no callback (they
    /// run on the sender thread), an acknowledgement at the append, and no
    /// batch of the partition with the sender still to complete or to send
    /// again (`shared`). Runs without the producer's lock.
    fn write_group(
        &self,
        topic: &Arc<TopicState>,
        partition: u32,
        mut group: Vec<Batch>,
        shared: &PartitionShared,
    ) -> Written {
        {
            // Only this thread numbers the partition now (see
            // `PartitionShared`): the lock is never contended.
            let mut seqs = shared.sequences.lock();
            if let Some(tag) = group.first().and_then(|b| b.txn) {
                // As the sender numbers a transaction's batches (see
                // `Core::build`): from 0 in a new epoch.
                if (seqs.producer_id, seqs.epoch) != (tag.producer_id, tag.epoch) {
                    *seqs = Sequences {
                        producer_id: tag.producer_id,
                        epoch: tag.epoch,
                        next_sequence: 0,
                    };
                }
            } else if self.idempotent && self.start_sequences(&mut seqs).is_err() {
                // The sender asks for the producer id again, and fails the
                // batches with its error.
                return Written::Handoff(Handoff::Unsent(group));
            }
            for batch in &mut group {
                let transactional = batch.txn.is_some();
                let stamped = encode(batch, |builder, records| {
                    stamp(&mut seqs, builder, records, transactional)
                });
                if stamped.is_err() {
                    // The sender fails the batch that cannot be encoded.
                    return Written::Handoff(Handoff::Unsent(group));
                }
            }
        }
        for batch in &mut group {
            batch.attempts += 1;
        }
        let appended = (|| -> Result<_> {
            let key = topic.key(partition)?;
            let replicas = self.cluster.replicas_for(&key)?;
            let (info, ack, sync) = crate::timeline::timed(Stage::DirectAppend, || {
                append_group(&replicas, &key, &mut group, self.append_acks())
            })?;
            Ok((info, ack, sync.map(|next| (replicas, key, next))))
        })();
        let (info, ack, sync) = match appended {
            Ok(appended) => appended,
            Err(error) => {
                return Written::Handoff(Handoff::Failed {
                    batches: group,
                    error,
                });
            }
        };
        let outcomes = outcomes(&info, &group);
        shared
            .acks_wait
            .store(ack.is_some() || sync.is_some(), Ordering::Relaxed);
        if ack.is_some()
            || sync.is_some()
            || group.iter().any(|b| !b.callbacks.is_empty())
            // `completing` first: a batch moving from it to `with_sender`
            // is counted in `with_sender` before it leaves `completing`.
            || shared.completing.load(Ordering::Acquire) > 0
            || shared.with_sender.load(Ordering::Acquire) > 0
        {
            return Written::Handoff(Handoff::Appended {
                batches: group,
                outcomes,
                ack,
                sync,
            });
        }
        let mut seqs = Vec::with_capacity(group.len());
        let mut released = 0;
        let mut spare = Vec::with_capacity(group.len());
        for (mut batch, outcome) in group.into_iter().zip(outcomes) {
            // Completing wakes the tasks awaiting the handles (user code):
            // a panic there must not leave the partition marked as being
            // written, which would keep its batches and a close waiting.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                batch.finish(outcome);
            }));
            seqs.push(batch.seq);
            released += batch.reserved;
            spare.extend(batch.bytes.take());
        }
        Written::Done {
            seqs,
            released,
            spare,
        }
    }
}
