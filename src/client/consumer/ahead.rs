//! The consumer's read-ahead: while the application processes one poll's
//! records, a helper thread reads the bytes the next fetch of each
//! partition will return, checks their batches' CRCs and brings their
//! pages in, as Kafka's consumer has its next fetch in flight while the
//! application works.
//!
//! The helper never hands records to the consumer and never reports an
//! error. Its work is only ever a shortcut the poll thread may take:
//!
//! - **Pages.** Its read maps the pages of the next fetch into the process
//!   (page faults) and its pass over them brings their bytes into the
//!   shared cache, so the poll thread's own read and decoding of the same
//!   bytes find them there.
//! - **CRCs.** For each batch, from the first on, whose CRC it found
//!   valid it extends the job's verified prefix ([`AheadJob`]). The poll
//!   thread's fetch of the same position gets the job
//!   ([`ReadAhead::take`]); if that fetch's bytes start *at the same
//!   address* as the helper's (the same pages of the same map, which the
//!   job keeps alive and which never change while mapped: see
//!   `storage::mmap`), its batches are the helper's, and those in the
//!   verified prefix are not checked again. Any other batch (past the
//!   prefix, a different map, a damaged batch, on which the helper stops)
//!   is checked by the poll thread exactly as before, so a damaged batch
//!   gives the same typed error at the same offset in the same poll.
//!
//! So with `check.crcs=true` every batch a poll returns still had its CRC
//! checked, once in the usual case: when the poll thread reaches a batch
//! the helper has not finished, it stops the helper's work on that job
//! ([`AheadJob::fence`]) and does the rest itself, so that the two do not
//! both check (or bring in) the rest; only the batch the helper is on at
//! that moment may be checked twice. A helper that falls behind (no free
//! core) thus wastes little.
//!
//! The helper is bounded: one thread per consumer, started with its first
//! job, waiting on a condition variable when idle (no spinning), with at
//! most one queued job per partition (a newer job for a partition
//! replaces the queued one), and stopped and joined when the consumer is
//! dropped or closed. A job whose fetch the consumer no longer holds
//! (seek, reassignment) is skipped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};

use crate::cluster::{ClusterInner, FetchBound, TopicIdPartition, WeakCluster};
use crate::format::{BatchHeader, decode_batch_at, verify_crc};

/// One read ahead: a partition's next fetch, at `position`, and what the
/// helper found in it.
#[derive(Debug)]
pub(super) struct AheadJob {
    key: TopicIdPartition,
    position: u64,
    max_bytes: usize,
    bound: FetchBound,
    /// The bytes the helper read (kept alive, so that their addresses
    /// name them for as long as the job lives).
    data: OnceLock<Bytes>,
    /// The batches of `data` wholly below this position had their CRC
    /// checked and found valid by the helper (a prefix of whole batches).
    verified: AtomicUsize,
    /// The poll thread checks this job's batches itself from now on: the
    /// helper stops.
    fenced: AtomicBool,
}

impl AheadJob {
    /// A job at `position` that read `data` and found its first
    /// `verified` bytes' batches valid (for tests of the poll side).
    #[cfg(test)]
    pub(super) fn finished(data: Bytes, position: u64, verified: usize) -> Arc<AheadJob> {
        Arc::new(AheadJob {
            key: TopicIdPartition {
                topic_id: uuid::Uuid::nil(),
                topic: Arc::from("t"),
                partition: 0,
            },
            position,
            max_bytes: data.len(),
            bound: FetchBound::HighWatermark,
            data: OnceLock::from(data),
            verified: AtomicUsize::new(verified),
            fenced: AtomicBool::new(false),
        })
    }

    /// Whether the poll thread stopped the helper's work on this job.
    #[cfg(test)]
    pub(super) fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Relaxed)
    }

    /// The position the job reads at.
    pub(super) fn position(&self) -> u64 {
        self.position
    }

    /// Whether the CRC of the batch at `batch` of `data` (the poll
    /// thread's fetch of the job's position) was found valid by the
    /// helper: `data` starts at the address the helper's bytes start at
    /// (the same bytes of the same map, walked batch by batch from the
    /// same start, so its batches are the helper's), and the batch lies
    /// within the verified prefix.
    pub(super) fn verified(&self, data: &[u8], batch: &std::ops::Range<usize>) -> bool {
        self.data
            .get()
            .is_some_and(|read| std::ptr::eq(read.as_ptr(), data.as_ptr()))
            && batch.end <= self.verified.load(Ordering::Acquire)
    }

    /// Stops the helper's work on this job (the poll thread checks the
    /// rest itself).
    pub(super) fn fence(&self) {
        self.fenced.store(true, Ordering::Relaxed);
    }

    /// The helper's work: reads the job's bytes, then checks their batches
    /// in order, extending [`verified`](AheadJob::verified) after each
    /// valid one, until the end, the first damaged batch or a fence. The
    /// bytes of `checked` (which this process checked before, see
    /// `log::read`) are not checked again, only brought into the cache.
    fn run(&self, cluster: &ClusterInner) {
        if self.fenced.load(Ordering::Relaxed) {
            return;
        }
        let Ok(fetched) = cluster
            .replicas_for(&self.key)
            .and_then(|r| r.fetch(&self.key, self.position, self.max_bytes, self.bound))
        else {
            return;
        };
        let checked = fetched.checked();
        let data = self.data.get_or_init(|| fetched.records().clone());
        verify_prefix(data, &checked, &self.verified, &self.fenced);
    }
}

/// Checks the CRCs of `data`'s batches in order (the bytes of `checked`
/// only touched), storing after each valid batch where it ends in
/// `verified`; stops at the first batch that does not decode or whose CRC
/// is wrong, or once `fenced` is set.
pub(super) fn verify_prefix(
    data: &Bytes,
    checked: &std::ops::Range<usize>,
    verified: &AtomicUsize,
    fenced: &AtomicBool,
) {
    let mut pos = 0;
    while pos < data.len() && !fenced.load(Ordering::Relaxed) {
        let Ok((batch, size)) = decode_batch_at(data, pos, false) else {
            return;
        };
        let bytes = batch.as_bytes();
        if checked.start <= pos && pos + size <= checked.end {
            touch(bytes);
        } else if verify_crc(bytes).is_err() {
            return;
        }
        pos += size;
        verified.store(pos, Ordering::Release);
    }
}

/// Reads one byte of every cache line of `bytes` (faulting its pages in
/// and bringing it into the cache) for the poll thread that decodes it
/// next.
fn touch(bytes: &[u8]) {
    let mut sum = 0u8;
    for line in bytes.chunks(64) {
        sum ^= line[0];
    }
    std::hint::black_box(sum);
}

/// The position after the last whole batch of `data` (the next fetch's
/// position), if `data` starts with a batch.
pub(super) fn next_position(data: &[u8]) -> Option<u64> {
    let mut pos = 0;
    let mut next = None;
    while let Ok(header) = BatchHeader::parse(data.get(pos..).unwrap_or_default()) {
        let size = header.total_size();
        if pos + size > data.len() {
            break;
        }
        next = u64::try_from(header.next_offset()).ok();
        pos += size;
    }
    next
}

/// The queue between a consumer and its helper thread.
#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// At most one job per partition.
    jobs: VecDeque<Arc<AheadJob>>,
    stop: bool,
}

/// A consumer's read-ahead helper (see the module docs): started with its
/// first job, stopped and joined on drop.
#[derive(Debug, Default)]
pub(super) struct ReadAhead {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl ReadAhead {
    /// Queues a read of `key` at `position` (`max_bytes`, `bound`, as the
    /// poll thread's next fetch will read) in place of any job queued for
    /// `key`, starting the helper if needed; returns the job, which the
    /// caller keeps for its next fetch of `key` ([`ReadAhead::take`]).
    /// `None` if the helper could not be started (the consumer then simply
    /// reads without it).
    pub(super) fn post(
        &mut self,
        cluster: &Arc<ClusterInner>,
        key: &TopicIdPartition,
        position: u64,
        max_bytes: usize,
        bound: FetchBound,
    ) -> Option<Arc<AheadJob>> {
        if self.thread.is_none() {
            let shared = Arc::clone(&self.shared);
            // A counted momentary reference per job, as the cluster's own
            // threads hold it: the helper never keeps a closed cluster
            // open nor stops its last handle's drop from closing it.
            let cluster = WeakCluster::new(cluster);
            self.thread = Some(
                std::thread::Builder::new()
                    .name("logbus-consumer-read-ahead".into())
                    .spawn(move || helper(&shared, &cluster))
                    .ok()?,
            );
        }
        let job = Arc::new(AheadJob {
            key: key.clone(),
            position,
            max_bytes,
            bound,
            data: OnceLock::new(),
            verified: AtomicUsize::new(0),
            fenced: AtomicBool::new(false),
        });
        let mut state = self.shared.state.lock();
        state.jobs.retain(|queued| queued.key != *key);
        state.jobs.push_back(Arc::clone(&job));
        drop(state);
        self.shared.wake.notify_one();
        Some(job)
    }

    /// Whether the helper thread was started.
    #[cfg(test)]
    pub(super) fn is_running(&self) -> bool {
        self.thread.is_some()
    }

    /// What the helper thread holds of its consumer (gone once it exits).
    #[cfg(test)]
    pub(super) fn helper_handle(&self) -> std::sync::Weak<impl Sized + use<>> {
        Arc::downgrade(&self.shared)
    }

    /// `job` if it reads at `position` (the poll thread's fetch of the same
    /// partition), else `None` (the job is dropped, and skipped by the
    /// helper if still queued).
    pub(super) fn take(job: Option<Arc<AheadJob>>, position: u64) -> Option<Arc<AheadJob>> {
        job.filter(|job| job.position() == position)
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.shared.state.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            // The helper only reads: nothing to report if it panicked.
            let _ = thread.join();
        }
    }
}

/// The helper thread: runs queued jobs in order until told to stop.
fn helper(shared: &Shared, cluster: &WeakCluster) {
    loop {
        let job = {
            let mut state = shared.state.lock();
            loop {
                if state.stop {
                    return;
                }
                if let Some(job) = state.jobs.pop_front() {
                    break job;
                }
                shared.wake.wait(&mut state);
            }
        };
        // Only the queue held it: the consumer moved on.
        if Arc::strong_count(&job) > 1
            && let Some(cluster) = cluster.upgrade()
        {
            job.run(&cluster);
        }
    }
}
