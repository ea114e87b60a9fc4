//! The sender thread (`logbus-producer`): takes sealed batches in seal
//! order, builds them (compression, CRC) and appends them to their
//! partitions, then completes their records.
//!
//! With `acks=all` on a partition whose followers still lack a batch, the
//! append returns a pending acknowledgement (the replica manager's
//! `DelayedProduce`); the sender keeps it in flight and goes on with the
//! next batches, completing each one's records when its acknowledgement
//! arrives (in seal order per partition, as the high watermark only
//! grows), so one partition's replication round trip never holds up the
//! others. In-flight batches keep their `buffer.memory` until then.

use std::collections::VecDeque;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Select};

use super::accumulator::{Batch, SENDER_RUNNING};
use super::future::Outcome;
use super::{Acks, Core, Msg};
use crate::cluster::{AppendAcks, AppendOrigin, PendingAck};
use crate::error::{Error, Result};
use crate::log::AppendInfo;

/// At most this many bytes of consecutive batches of one partition are
/// written by one append (a quarter of `segment.bytes` if smaller; one batch
/// always goes alone).
const MAX_GROUP_BYTES: usize = 1 << 20;

/// Batches appended whose `acks=all` acknowledgement has not arrived.
struct InFlight {
    batches: Vec<Batch>,
    /// Each batch's outcome once acknowledged.
    outcomes: Vec<Outcome>,
    ack: PendingAck,
}

/// What the sender tracks between batches.
#[derive(Default)]
struct Progress {
    /// In seal order.
    in_flight: VecDeque<InFlight>,
    /// Seal number of the last batch appended.
    appended_seq: u64,
}

/// The thread's loop: runs until the producer is closed and everything
/// pending is delivered.
pub(super) fn run(core: &Core, work: &Receiver<Msg>, ticks: &Receiver<()>) {
    let _guard = ExitGuard(core);
    let mut taken: VecDeque<Batch> = VecDeque::new();
    let mut group: Vec<Batch> = Vec::new();
    let mut joined: Vec<u8> = Vec::new();
    let mut stopping = false;
    let mut progress = Progress::default();
    loop {
        core.complete_acknowledged(&mut progress);
        let deadline = {
            let mut acc = core.acc.lock();
            acc.sender_wakes_at = SENDER_RUNNING;
            if acc.ready.is_empty() && acc.open > 0 {
                let all = stopping || acc.closed || acc.blocked > 0;
                let now = core.clock.now_ms();
                acc.seal_expired(now, core.linger_ms, all, &core.sticky);
            }
            acc.pending_wake = false;
            std::mem::swap(&mut taken, &mut acc.ready);
            if taken.is_empty() {
                if (stopping || acc.closed) && acc.open == 0 && progress.in_flight.is_empty() {
                    return;
                }
                let deadline = acc.next_deadline(core.linger_ms);
                acc.sender_wakes_at = deadline.unwrap_or(i64::MAX);
                deadline
            } else {
                None
            }
        };
        if !taken.is_empty() {
            while let Some(first) = taken.pop_front() {
                // Consecutive batches of one partition go in one append:
                // fewer, larger writes when the sender has fallen behind.
                let segment_bytes =
                    usize::try_from(first.topic.log_config.segment_bytes()).unwrap_or(usize::MAX);
                let limit = MAX_GROUP_BYTES.min(segment_bytes / 4);
                let mut bytes = first.size();
                group.push(first);
                while let Some(next) = taken.front()
                    && Arc::ptr_eq(&next.topic, &group[0].topic)
                    && next.partition == group[0].partition
                    && bytes + next.size() <= limit
                {
                    bytes += next.size();
                    group.extend(taken.pop_front());
                }
                core.process(&mut group, &mut joined, &mut progress);
                core.complete_acknowledged(&mut progress);
            }
            continue;
        }
        let ack_deadline = progress.in_flight.iter().map(|f| f.ack.deadline_ms()).min();
        let deadline = match (deadline, ack_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let timer = match deadline.and_then(|d| core.clock.wait_hint(d)) {
            Some(d) => crossbeam_channel::after(d),
            None => crossbeam_channel::never(),
        };
        // Work, the clock, the timer and every acknowledgement in flight.
        let mut select = Select::new();
        let work_index = (!stopping).then(|| select.recv(work));
        select.recv(ticks);
        select.recv(&timer);
        for f in &progress.in_flight {
            select.recv(f.ack.receiver());
        }
        let ready = select.ready();
        if Some(ready) == work_index {
            match work.try_recv() {
                Ok(Msg::Wake) | Err(crossbeam_channel::TryRecvError::Empty) => {}
                Ok(_) | Err(crossbeam_channel::TryRecvError::Disconnected) => stopping = true,
            }
        } else {
            // A tick or the timer is drained here; an acknowledgement is
            // taken by `complete_acknowledged`.
            let _ = ticks.try_recv();
            let _ = timer.try_recv();
        }
    }
}

impl Core {
    /// Appends a group of consecutive sealed batches of one partition and
    /// completes their records, in order, or puts them in flight until
    /// their `acks=all` acknowledgement arrives. Leaves `group` empty.
    fn process(&self, group: &mut Vec<Batch>, joined: &mut Vec<u8>, progress: &mut Progress) {
        if self.config.acks() == Acks::None {
            for batch in group.iter_mut() {
                batch.finish(Outcome::Sent {
                    base_offset: None,
                    log_append_time: None,
                });
            }
        }
        let (outcomes, ack) = if let [batch] = group.as_mut_slice() {
            match self.append_one(batch) {
                Ok((info, ack)) => (
                    vec![Outcome::Sent {
                        base_offset: Some(info.first_offset()),
                        log_append_time: info.log_append_time(),
                    }],
                    ack,
                ),
                Err(e) => (vec![Outcome::Failed(e)], None),
            }
        } else {
            self.append_group(group, joined)
        };
        progress.appended_seq = group.last().map_or(progress.appended_seq, |b| b.seq);
        if let Some(ack) = ack {
            progress.in_flight.push_back(InFlight {
                batches: std::mem::take(group),
                outcomes,
                ack,
            });
            return;
        }
        // A no-op with acks=0: the records were completed above.
        for (batch, outcome) in group.iter_mut().zip(outcomes) {
            batch.finish(outcome);
        }
        let reserved: usize = group.iter().map(|b| b.reserved).sum();
        self.account(reserved, progress);
        // Every batch is finished: dropping them runs no user code.
        group.clear();
    }

    /// Completes the records of every in-flight group whose acknowledgement
    /// arrived (or timed out).
    fn complete_acknowledged(&self, progress: &mut Progress) {
        if progress.in_flight.is_empty() {
            return;
        }
        let now = self.clock.now_ms();
        let mut reserved = 0;
        let mut i = 0;
        while i < progress.in_flight.len() {
            let Some(result) = progress.in_flight[i].ack.poll(now) else {
                i += 1;
                continue;
            };
            let Some(mut done) = progress.in_flight.remove(i) else {
                break;
            };
            for (batch, outcome) in done.batches.iter_mut().zip(done.outcomes) {
                let outcome = match (&result, outcome) {
                    (Err(e), Outcome::Sent { .. }) => Outcome::Failed(e.duplicate()),
                    (_, outcome) => outcome,
                };
                batch.finish(outcome);
            }
            reserved += done.batches.iter().map(|b| b.reserved).sum::<usize>();
        }
        if reserved > 0 {
            self.account(reserved, progress);
        }
    }

    /// Gives back `reserved` bytes of `buffer.memory` and notes how far
    /// the batches are finished: up to the first one still in flight.
    fn account(&self, reserved: usize, progress: &Progress) {
        let done = progress
            .in_flight
            .front()
            .and_then(|f| f.batches.first())
            .map_or(progress.appended_seq, |b| b.seq.saturating_sub(1));
        let mut acc = self.acc.lock();
        acc.used -= reserved;
        acc.done_seq = acc.done_seq.max(done);
        acc.wake_space_waiters();
        let flushed = acc.done_seq >= acc.flush_target;
        if flushed {
            acc.flush_target = u64::MAX;
        }
        drop(acc);
        if flushed {
            self.finished.notify_all();
        }
    }

    /// Builds one batch and appends it without copying. Its buffer is
    /// freed here, before the records are completed.
    fn append_one(&self, batch: &mut Batch) -> Result<(AppendInfo, Option<PendingAck>)> {
        let builder = batch
            .builder
            .take()
            .ok_or_else(|| Error::Internal("a sealed batch was appended twice".into()))?;
        let mut bytes = Vec::from(builder.build()?);
        let key = batch.topic.key(batch.partition)?;
        self.cluster.replicas_for(&key)?.append_pending(
            &key,
            &mut bytes,
            AppendOrigin::Trusted,
            self.append_acks(),
        )
    }

    /// What the replica manager waits for before it acknowledges.
    fn append_acks(&self) -> AppendAcks {
        match self.config.acks() {
            // The append is the same; only the producer completes earlier.
            Acks::None | Acks::Leader => AppendAcks::Leader,
            Acks::All => AppendAcks::All,
        }
    }

    /// Builds several batches into `joined` and appends them in one call;
    /// each batch's records get offsets from where the one before ended.
    /// Returns each batch's outcome and the acknowledgement to wait for.
    fn append_group(
        &self,
        group: &mut [Batch],
        joined: &mut Vec<u8>,
    ) -> (Vec<Outcome>, Option<PendingAck>) {
        joined.clear();
        let mut failed: Vec<Option<Error>> = Vec::with_capacity(group.len());
        let mut counts: Vec<u64> = Vec::with_capacity(group.len());
        for batch in group.iter_mut() {
            let Some(builder) = batch.builder.take() else {
                failed.push(Some(Error::Internal(
                    "a sealed batch was appended twice".into(),
                )));
                counts.push(0);
                continue;
            };
            counts.push(builder.len() as u64);
            match builder.build() {
                Ok(bytes) => {
                    joined.extend_from_slice(&bytes);
                    failed.push(None);
                }
                Err(e) => failed.push(Some(e.into())),
            }
        }
        let appended = if joined.is_empty() {
            None
        } else {
            let key = group[0].topic.key(group[0].partition);
            Some(key.and_then(|key| {
                self.cluster.replicas_for(&key)?.append_pending(
                    &key,
                    joined,
                    AppendOrigin::Trusted,
                    self.append_acks(),
                )
            }))
        };
        let (appended, ack) = match appended {
            Some(Ok((info, ack))) => (Some(Ok(info)), ack),
            Some(Err(e)) => (Some(Err(e)), None),
            None => (None, None),
        };
        let mut next = match &appended {
            Some(Ok(info)) => info.first_offset(),
            _ => 0,
        };
        let mut outcomes = Vec::with_capacity(group.len());
        for (failed, count) in failed.into_iter().zip(counts) {
            let outcome = match (failed, &appended) {
                (Some(e), _) => Outcome::Failed(e),
                (None, Some(Ok(info))) => {
                    let base = next;
                    next += count;
                    Outcome::Sent {
                        base_offset: Some(base),
                        log_append_time: info.log_append_time(),
                    }
                }
                (None, Some(Err(e))) => Outcome::Failed(e.duplicate()),
                (None, None) => Outcome::Failed(Error::Internal("batch not appended".into())),
            };
            outcomes.push(outcome);
        }
        if joined.capacity() > 2 * MAX_GROUP_BYTES {
            *joined = Vec::new();
        }
        (outcomes, ack)
    }
}

/// Runs when the sender thread exits, normally or by a panic: no send may
/// be accepted or wait any more, and every record still held is failed.
struct ExitGuard<'a>(&'a Core);

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        let core = self.0;
        let leftovers = {
            let mut acc = core.acc.lock();
            acc.closed = true;
            acc.wake_space_waiters();
            acc.drain_all()
        };
        // Dropping a batch that is not done fails its records (and runs
        // their callbacks), so this happens outside the lock.
        drop(leftovers);
        core.acc.lock().done_seq = u64::MAX;
        core.finished.notify_all();
    }
}
