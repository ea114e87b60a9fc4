//! The sender thread (`logbus-producer`): takes sealed batches in seal
//! order, builds them (compression, CRC) and appends them to their
//! partitions, then completes their records.

use std::collections::VecDeque;

use crossbeam_channel::Receiver;

use super::accumulator::{Batch, SENDER_RUNNING};
use super::future::Outcome;
use super::{Acks, Core, Msg};
use crate::error::{Error, Result};
use crate::log::AppendInfo;

/// The thread's loop: runs until the producer is closed and everything
/// pending is delivered.
pub(super) fn run(core: &Core, work: &Receiver<Msg>, ticks: &Receiver<()>) {
    let _guard = ExitGuard(core);
    let mut taken: VecDeque<Batch> = VecDeque::new();
    let mut stopping = false;
    loop {
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
                if (stopping || acc.closed) && acc.open == 0 {
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
            while let Some(batch) = taken.pop_front() {
                core.process(batch);
            }
            continue;
        }
        let timer = match deadline.and_then(|d| core.clock.wait_hint(d)) {
            Some(d) => crossbeam_channel::after(d),
            None => crossbeam_channel::never(),
        };
        crossbeam_channel::select! {
            recv(work) -> msg => {
                if !matches!(msg, Ok(Msg::Wake)) {
                    stopping = true;
                }
            }
            recv(ticks) -> _ => {}
            recv(timer) -> _ => {}
        }
    }
}

impl Core {
    /// Appends one sealed batch and completes its records.
    fn process(&self, mut batch: Batch) {
        let acks_none = self.config.acks() == Acks::None;
        if acks_none {
            batch.finish(Outcome::Sent {
                base_offset: None,
                log_append_time: None,
            });
        }
        let outcome = match self.append_batch(&mut batch) {
            Ok(info) => Outcome::Sent {
                base_offset: Some(info.first_offset()),
                log_append_time: info.log_append_time(),
            },
            Err(e) => Outcome::Failed(e),
        };
        // A no-op with acks=0: the records were completed above.
        batch.finish(outcome);
        let mut acc = self.acc.lock();
        acc.used -= batch.reserved;
        acc.done_seq = batch.seq;
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

    /// Builds the batch and appends it. The batch's buffer is freed here,
    /// before the records are completed.
    fn append_batch(&self, batch: &mut Batch) -> Result<AppendInfo> {
        let builder = batch
            .builder
            .take()
            .ok_or_else(|| Error::Internal("a sealed batch was appended twice".into()))?;
        let mut bytes = Vec::from(builder.build()?);
        let replica = batch.topic.replica(batch.partition)?;
        replica.append_trusted(&mut bytes)
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
