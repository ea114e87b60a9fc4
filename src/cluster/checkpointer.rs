//! The cluster's checkpoint thread: every
//! `log.flush.offset.checkpoint.interval.ms` it records each partition's
//! recovery point and log start offset in the broker's checkpoint files, so
//! that recovery after a crash scans only what may be incomplete.
//!
//! A pass reads each partition's offsets under the broker's checkpoint lock
//! and the noted entries only move forward (see `broker.rs`), so a pass
//! racing `Partition::delete_records` never writes an older log start over
//! the newer one `delete_records` wrote, and a pass racing a topic deletion
//! never brings the deleted partition's entry back.
//!
//! The thread is named `logbus-checkpoint`, holds a weak reference to the
//! cluster, waits on its shutdown channel, the clock's wake-ups and a
//! timeout derived from the clock (never a sleep), and is joined on close.

use std::thread::JoinHandle;

use crossbeam_channel::{Sender, select};

use crate::error::{Error, Result};

/// Handle to the checkpoint thread.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    stop: Sender<()>,
    handle: JoinHandle<()>,
}

impl Checkpointer {
    pub(crate) fn spawn(cluster: super::WeakCluster, interval_ms: i64) -> Result<Checkpointer> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let (clock, root) = {
            let inner = cluster.upgrade().ok_or_else(|| {
                Error::Internal("checkpointer spawned for a dropped cluster".into())
            })?;
            (inner.clock().clone(), inner.root.clone())
        };
        let ticks = clock.subscribe();
        let mut deadline = clock.now_ms().saturating_add(interval_ms);
        let handle = std::thread::Builder::new()
            .name("logbus-checkpoint".into())
            .spawn(move || {
                loop {
                    let timeout = match clock.wait_hint(deadline) {
                        Some(wait) => crossbeam_channel::after(wait),
                        None => crossbeam_channel::never(),
                    };
                    select! {
                        recv(stopped) -> _ => return,
                        recv(ticks) -> _ => {}
                        recv(timeout) -> _ => {}
                    }
                    let now = clock.now_ms();
                    if now < deadline {
                        continue;
                    }
                    deadline = now.saturating_add(interval_ms);
                    let Some(inner) = cluster.upgrade() else {
                        return;
                    };
                    // A failed write is retried at the next interval; the
                    // files it would have replaced stay valid meanwhile.
                    let _ = inner.checkpoint();
                }
            })
            .map_err(|e| Error::io("spawn checkpoint thread", root, e))?;
        Ok(Checkpointer { stop, handle })
    }

    /// Stops the thread and joins it (unless called on the thread itself,
    /// which happens when it held the last reference to the cluster).
    pub(crate) fn stop(self) {
        let _ = self.stop.try_send(());
        if self.handle.thread().id() != std::thread::current().id() {
            let _ = self.handle.join();
        }
    }
}
