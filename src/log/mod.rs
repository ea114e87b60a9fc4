//! L2: one partition's log: an ordered list of segments, the last of which
//! (the active segment) takes appends.
//!
//! The log assigns offsets, reads by offset and by timestamp, rolls
//! segments, recovers after a crash, truncates, enforces retention and makes
//! appends durable according to its [`FlushPolicy`](crate::FlushPolicy). It
//! knows offsets, not replicas.
//!
//! ## Locks
//! In order: `cleaner` (one cleaning pass at a time), then `state` (a
//! read-write lock over the segment list and the offsets), then
//! `durability`; the segment's own map lock is innermost. No I/O that can
//! take milliseconds (fsync, removing files) happens under `state`'s write
//! lock in the append path: fsyncs run in [`durability`] after the lock is
//! released, and flushing or removing sealed segments runs on a
//! [`scheduler`] thread.
//!
//! `state` is taken three ways:
//! - readers (`read`, `read_bounded`, `read_committed`, the offsets and
//!   sizes) take its read lock;
//! - appends ([`Log::append`], [`Log::append_as_follower`]) take its
//!   *upgradable* read ([`AppendGuard`]), which shares the lock with
//!   readers but excludes writers and other appends, so appends stay
//!   serialized in offset order. Under it an append validates, checks the
//!   producers, assigns offsets and writes its batches into the active
//!   segment's file past the segment's published size
//!   (`Segment::write_unpublished`); only then does it upgrade to the
//!   write lock, briefly, to publish: the index entries and the segment's
//!   size (`Segment::publish`), the log end offset, the producer state.
//!   Readers bound everything they return by the published size and log
//!   end offset, so they never wait for an append's write and never see a
//!   byte of a batch that is not wholly written. Rolls (a new segment, the
//!   producer snapshot) and leader epoch changes upgrade too, for the
//!   change of the segment list or the cache only;
//! - everything else that changes the log (transaction markers,
//!   which write under it, truncation, retention, the cleaner's swap, the
//!   durability step collecting files, fencing, close) takes the write
//!   lock, which waits for an append in progress to publish and excludes
//!   the next one until it is done.

mod append;
#[cfg(test)]
mod checked_tests;
mod checkpoint;
mod cleaner;
mod durability;
pub(crate) mod epoch;
mod fence;
mod marker;
mod open;
pub(crate) mod producer_state;
mod read;
#[cfg(test)]
mod read_during_append;
mod restart;
mod retention;
mod scheduler;
mod snapshot;
mod txn;
#[cfg(test)]
mod vectored_tests;
mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::clock::{Clock, SystemClock};
use crate::config::LogConfig;
use crate::error::{Error, Result};
use crate::storage::{DirLock, Storage, StorageFile};
use crate::storage::{StdStorage, segment::Segment};

pub use append::AppendInfo;
pub(crate) use checkpoint::REPLICATION_OFFSET_CHECKPOINT;
pub use checkpoint::{CheckpointRead, OffsetCheckpoint};
pub use cleaner::CleanReport;
pub use epoch::LeaderEpochsRebuilt;
pub use fence::FencedTruncation;
pub use open::{RecoveryReport, TruncatedTail};
pub use read::{AbortedTransaction, LogRead, TimestampOffset};
pub use retention::RetentionReport;

use durability::Durability;

/// The state lock's upgradable read, as an append holds it: it shares the
/// lock with readers but excludes every writer and every other append
/// (see the module docs).
pub(crate) type AppendGuard<'a> = parking_lot::RwLockUpgradableReadGuard<'a, LogState>;
pub(crate) use scheduler::{LogScheduler, SchedulerHandle};

/// One partition's log: an ordered list of segments of Kafka v2 record
/// batches, the last of which takes appends.
///
/// The log assigns offsets, reads by offset and by timestamp, rolls
/// segments, recovers after a crash, truncates, enforces retention and makes
/// appends durable as its [`FlushPolicy`](crate::FlushPolicy) says. A
/// background thread (`logbus-log-0`) flushes sealed segments, removes
/// deleted ones and runs interval flushes, retention checks and cleaning; a
/// log opened on its own has one of its own, stopped and joined by
/// [`Log::close`] or on drop (the logs of a [`Cluster`](crate::Cluster)
/// share the cluster's `background.threads`).
///
/// `Log` is `Send + Sync`: appends are serialized internally, reads run
/// concurrently with each other and with appends. Data a reader holds (a
/// [`LogRead`]) stays valid after the log deletes or truncates the segment
/// it came from.
///
/// ```
/// use logbus::{Log, LogConfig, format::BatchBuilder, Compression};
/// let dir = tempfile::tempdir()?;
/// let log = Log::builder(dir.path()).open()?;
/// let mut batch = BatchBuilder::new(Compression::None);
/// batch.append(1_700_000_000_000, Some(b"key"), Some(b"value"), &[]);
/// let mut bytes = batch.build()?.to_vec();
/// let info = log.append(&mut bytes, 0)?;
/// assert_eq!(info.first_offset(), 0);
/// let read = log.read(0, 1 << 20)?;
/// assert_eq!(read.records().len(), bytes.len());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Log {
    inner: Arc<LogInner>,
    /// The scheduler of a log opened without one, stopped on close.
    private: Mutex<Option<LogScheduler>>,
}

/// What a log's owner does before a truncation cuts below the log's
/// recovery point: lower the recovery point it checkpoints to at most the
/// first argument, durably, so that no open ever finds the checkpointed
/// recovery point past the shortened log (which it would refuse as lost
/// flushed data). The second argument is the log's truncation count once
/// the cut is done ([`Log::recovery_point_and_truncations`]): a recovery
/// point read before it is stale. An error stops the truncation before
/// anything changed.
#[derive(Clone)]
pub(crate) struct TruncationHook(pub(crate) Arc<dyn Fn(u64, u64) -> Result<()> + Send + Sync>);

impl std::fmt::Debug for TruncationHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TruncationHook")
    }
}

/// State shared between the handle and the scheduler's threads.
#[derive(Debug)]
pub(crate) struct LogInner {
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    /// The configuration, replaced whole by [`Log::set_config`]; every
    /// use reads it afresh ([`LogInner::config`]), so a change applies
    /// from the next append, roll, retention check or cleaning pass.
    config: RwLock<Arc<LogConfig>>,
    state: RwLock<LogState>,
    fenced: AtomicBool,
    /// Flush time and fencing, counted.
    stats: Arc<crate::metrics::LogStats>,
    durability: Durability,
    recovery: RecoveryReport,
    /// Held for a whole cleaning pass: one pass at a time. Taken before
    /// `state`.
    cleaner: Mutex<()>,
    /// The log's place in its scheduler: its job queue and timers.
    background: scheduler::Registration,
    /// The owner's step before a cut below the recovery point.
    truncation_hook: Option<TruncationHook>,
    /// The partition's high watermark as the replica layer last told it
    /// ([`Log::update_high_watermark`]); `u64::MAX` until then (the log
    /// end offset counts).
    high_watermark: std::sync::atomic::AtomicU64,
    _lock: DirLock,
}

/// Everything the `state` lock protects.
#[derive(Debug)]
pub(crate) struct LogState {
    /// Segments by increasing base offset; the last is active. Never empty.
    segments: Vec<Segment>,
    log_start_offset: u64,
    log_end_offset: u64,
    /// Log files of sealed segments not yet fsynced.
    unflushed: Vec<Arc<dyn StorageFile>>,
    /// Whether directory entries changed since the last directory sync.
    dir_dirty: bool,
    /// Whether the scheduler prepared a spare segment for the next roll.
    spare_ready: bool,
    /// Whether a spare was asked of the scheduler since the last roll.
    spare_requested: bool,
    /// The first offset the cleaner has not cleaned yet.
    cleaner_checkpoint: u64,
    /// Bumped whenever sealed segments are removed, cut or replaced, so a
    /// cleaning pass that read the segments before can tell its work is
    /// stale.
    generation: u64,
    /// Which leader epoch wrote which offsets (Kafka's leader epoch cache).
    epochs: epoch::LeaderEpochCache,
    /// Whether `epochs` is in its file (`leader-epoch-checkpoint`).
    epoch_file: EpochFile,
    /// What each idempotent producer last wrote (its epoch and last
    /// batches), checked and updated by appends.
    producers: producer_state::ProducerStateManager,
    /// The offsets of the producer-state snapshot files
    /// (`<offset>.snapshot`).
    snapshots: std::collections::BTreeSet<u64>,
    /// Whether reads may trust the segments' checked bytes
    /// (`Segment::checked`): only when this process holds the directory's
    /// lock, so that no other writer changes the files (not in a read-only
    /// view, whose files another process writes). See `read`'s module
    /// docs.
    trust_checked: bool,
}

/// How the leader epoch file stands against the cache in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EpochFile {
    /// The file holds the cache.
    Written,
    /// Only the first entry moved up (retention, `delete_records`): the
    /// file is rewritten on close or with the next change. A file left
    /// stale by a crash is corrected by the next open, which cuts the
    /// cache to the log start offset.
    StaleStart,
    /// Entries were removed from the end (`truncate_to`): the file must be
    /// rewritten before anything is appended, or a crash could leave it
    /// naming an epoch for offsets that another epoch wrote.
    StaleEnd,
    /// An epoch was added at or past the recovery point (a new leader
    /// epoch's first append): the file is rewritten by the next flush,
    /// before the recovery point may pass the new entry's start offset, as
    /// Kafka does since KAFKA-15046, and by close. A file left behind by a
    /// crash is caught up by the next open, which assigns the epochs of the
    /// batches past the recovery point, as Kafka's recovery does.
    StaleAppend,
}

impl LogState {
    fn active(&self) -> &Segment {
        self.segments
            .last()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("a log always has an active segment")
    }

    /// Index of the segment that would hold `offset`: the last one whose
    /// base offset is `<= offset` (the first one if none is).
    fn segment_index_for(&self, offset: u64) -> usize {
        self.segments
            .partition_point(|s| s.base_offset() <= offset)
            .saturating_sub(1)
    }

    fn size_bytes(&self) -> u64 {
        self.segments.iter().map(Segment::size).sum()
    }

    /// Cuts the leader epoch cache to the log start offset after it moved
    /// up; the file catches up lazily ([`EpochFile::StaleStart`]).
    fn epochs_follow_start(&mut self) {
        if self.epochs.truncate_from_start(self.log_start_offset)
            && self.epoch_file == EpochFile::Written
        {
            self.epoch_file = EpochFile::StaleStart;
        }
    }

    /// Cuts the leader epoch cache to the log end offset after a
    /// truncation; the file must catch up before the next append
    /// ([`EpochFile::StaleEnd`]).
    fn epochs_follow_end(&mut self) {
        if self.epochs.truncate_from_end(self.log_end_offset) {
            self.epoch_file = EpochFile::StaleEnd;
        }
    }
}

/// Opens a [`Log`]. Every setting has a default; see each method.
#[derive(Debug)]
#[must_use]
pub struct LogBuilder {
    dir: PathBuf,
    config: LogConfig,
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    recovery_point: u64,
    log_start_offset: u64,
    cleaner_checkpoint: u64,
    scheduler: Option<SchedulerHandle>,
    truncation_hook: Option<TruncationHook>,
    stats: Option<Arc<crate::metrics::LogStats>>,
}

impl LogBuilder {
    /// The owner's step before a truncation cuts below the recovery point
    /// (see [`TruncationHook`]).
    pub(crate) fn truncation_hook(mut self, hook: TruncationHook) -> Self {
        self.truncation_hook = Some(hook);
        self
    }

    /// The log's configuration. Default: [`LogConfig::default`].
    pub fn config(mut self, config: LogConfig) -> Self {
        self.config = config;
        self
    }
    /// The file layer. Default: the real file system ([`StdStorage`]).
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = storage;
        self
    }
    /// The clock for timestamps, rolling and retention. Default:
    /// [`SystemClock`].
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
    /// The recovery point from the owner's checkpoint ([`Log::recovery_point`]
    /// when it was last written): every offset below it was flushed.
    /// Segments wholly below it are not scanned on open, and damage below
    /// it refuses the open ([`CorruptionKind::BelowRecoveryPoint`](crate::CorruptionKind::BelowRecoveryPoint))
    /// where damage at or above it (never flushed: what a power loss can
    /// leave) is cut and reported ([`RecoveryReport::truncated`]). A log
    /// that ends below it refuses the open too, so before
    /// [`Log::truncate_to`] cuts below the recovery point the owner must
    /// persist a lowered one (a cluster's brokers do it from the log's
    /// truncation step, before the cut).
    /// Default 0: every segment is scanned and any damage is cut.
    pub fn recovery_point(mut self, offset: u64) -> Self {
        self.recovery_point = offset;
        self
    }
    /// The log start offset from the owner's checkpoint (it survives
    /// [`Log::delete_records`]). Default 0; never below the first segment.
    pub fn log_start_offset(mut self, offset: u64) -> Self {
        self.log_start_offset = offset;
        self
    }

    /// The cleaner checkpoint from the owner's `cleaner-offset-checkpoint`
    /// (see [`Log::cleaner_checkpoint`]): the first offset the cleaner has
    /// not cleaned. Default 0: the next pass treats the whole log as dirty.
    pub fn cleaner_checkpoint(mut self, offset: u64) -> Self {
        self.cleaner_checkpoint = offset;
        self
    }

    /// Runs the log's background work on a shared scheduler, whose clock
    /// drives the log's timers (pass the same clock to [`Self::clock`]).
    /// Default: a private one-thread scheduler.
    pub(crate) fn scheduler(mut self, scheduler: SchedulerHandle) -> Self {
        self.scheduler = Some(scheduler);
        self
    }

    /// Counts the log's flushes and fencing into `stats` (its cluster's).
    /// Default: counters of its own, reported nowhere.
    pub(crate) fn stats(mut self, stats: Arc<crate::metrics::LogStats>) -> Self {
        self.stats = Some(stats);
        self
    }

    /// Opens the log, creating the directory if needed and recovering it if
    /// it holds segments.
    ///
    /// What recovery did is in [`Log::recovery_report`]; the rules are in
    /// [`RecoveryReport`]'s and the recovery point's docs. A refused open
    /// changes no file.
    ///
    /// # Errors
    /// [`Error::DirectoryLocked`] if the directory is open elsewhere;
    /// [`Error::Corrupt`] for damage below the recovery point
    /// ([`CorruptionKind::BelowRecoveryPoint`](crate::CorruptionKind::BelowRecoveryPoint)),
    /// a log ending below it
    /// ([`CorruptionKind::RecoveryPointBeyondEnd`](crate::CorruptionKind::RecoveryPointBeyondEnd))
    /// or a damaged `.swap` file an interrupted cleaning pass left;
    /// [`Error::Io`] for I/O failures.
    pub fn open(self) -> Result<Log> {
        open::open(self)
    }
}

impl Log {
    /// A builder to open the log stored in `dir`.
    pub fn builder(dir: impl AsRef<Path>) -> LogBuilder {
        LogBuilder {
            dir: dir.as_ref().to_path_buf(),
            config: LogConfig::default(),
            storage: Arc::new(StdStorage::new()),
            clock: Arc::new(SystemClock),
            recovery_point: 0,
            log_start_offset: 0,
            cleaner_checkpoint: 0,
            scheduler: None,
            truncation_hook: None,
            stats: None,
        }
    }

    /// The log's directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The log's configuration, as of now (see [`Log::set_config`]).
    #[must_use]
    pub fn config(&self) -> Arc<LogConfig> {
        self.inner.config()
    }

    /// Replaces the log's configuration while it is open (Kafka's dynamic
    /// topic configs): every setting applies from the next time it is
    /// used. `segment.bytes`, `segment.ms`, `segment.index.bytes` decide
    /// the next roll (the active segment keeps the index it preallocated);
    /// `max.message.bytes` and `message.timestamp.type` the next append;
    /// `index.interval.bytes` the next index entry; retention and
    /// compaction settings the next retention check or cleaning pass;
    /// `flush.messages` the next append, and a changed `flush.ms` restarts
    /// the interval flush, its first deadline counted from now.
    ///
    /// Compaction may be turned on (the segments then admit the offset gaps
    /// a cleaned log has), but not off: a log that was compacted may have
    /// gaps that recovery and reads of a log that is not compacted take for
    /// damage.
    ///
    /// ```
    /// use logbus::{Log, LogConfig};
    /// let dir = tempfile::tempdir()?;
    /// let log = Log::builder(dir.path()).open()?;
    /// log.set_config(LogConfig::builder().segment_bytes(4096).build()?)?;
    /// assert_eq!(log.config().segment_bytes(), 4096);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a configuration that turns compaction
    /// off, or that changes `retention.check.interval.ms` or
    /// `producer.id.expiration.ms` (the owner's settings, fixed at the
    /// open); nothing changes then.
    pub fn set_config(&self, config: LogConfig) -> Result<()> {
        let old = self.inner.config();
        if old.compact() && !config.compact() {
            return Err(Error::InvalidConfig(format!(
                "cleanup.policy={}: a compacted log cannot stop being compacted (its \
                 segments may hold the offset gaps compaction leaves)",
                if config.delete() { "delete" } else { "none" }
            )));
        }
        if old.retention_check_interval_ms() != config.retention_check_interval_ms()
            || old.producer_id_expiration_ms() != config.producer_id_expiration_ms()
        {
            return Err(Error::InvalidConfig(
                "retention.check.interval.ms and producer.id.expiration.ms are fixed when \
                 the log opens"
                    .into(),
            ));
        }
        let limits_before = LogInner::limits_for(&old);
        let limits_after = LogInner::limits_for(&config);
        let flush_before = self.inner.flush_interval_ms();
        {
            // Under the state lock: an append or roll sees the old
            // configuration with the old segments, or the new with the new.
            let mut state = self.inner.state.write();
            *self.inner.config.write() = Arc::new(config);
            if limits_before != limits_after {
                for segment in &mut state.segments {
                    segment.update_limits(limits_after.order, limits_after.index_interval_bytes);
                }
            }
        }
        if limits_before.index_bytes != limits_after.index_bytes {
            // A spare prepared with the old index size is not used.
            self.inner.remove_spare();
            self.inner.state.write().spare_requested = false;
        }
        let flush_after = self.inner.flush_interval_ms();
        if flush_before != flush_after {
            self.inner.background.restart_timers(
                flush_after,
                self.inner.config().retention_check_interval_ms(),
            );
        }
        Ok(())
    }

    /// The first offset that can be read.
    #[must_use]
    pub fn log_start_offset(&self) -> u64 {
        self.inner.state.read().log_start_offset
    }

    /// The offset the next appended record will get.
    #[must_use]
    pub fn log_end_offset(&self) -> u64 {
        self.inner.state.read().log_end_offset
    }

    /// Every offset below this is on disk (fsynced). Persist it in the
    /// owner's checkpoint and pass it to [`LogBuilder::recovery_point`].
    #[must_use]
    pub fn recovery_point(&self) -> u64 {
        self.inner.durability.durable_offset()
    }

    /// [`Log::recovery_point`] and the number of truncations (cuts and
    /// restarts) so far, read together: an owner noting recovery points
    /// for its checkpoint keeps the one of the latest truncation count, so
    /// a value read before a truncation never raises the lowered one (see
    /// [`TruncationHook`]).
    pub(crate) fn recovery_point_and_truncations(&self) -> (u64, u64) {
        self.inner.durability.durable_offset_and_truncations()
    }

    /// Bytes of record batches in all segments.
    #[must_use]
    pub fn size_bytes(&self) -> u64 {
        self.inner.state.read().size_bytes()
    }

    /// Number of segments, the active one included.
    #[must_use]
    pub fn segment_count(&self) -> usize {
        self.inner.state.read().segments.len()
    }

    /// Base offsets of the segments, oldest first.
    #[must_use]
    pub fn segment_base_offsets(&self) -> Vec<u64> {
        self.inner
            .state
            .read()
            .segments
            .iter()
            .map(Segment::base_offset)
            .collect()
    }

    /// What recovery found when the log was opened.
    #[must_use]
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// The newest leader epoch that wrote to this log (Kafka's
    /// `latestEpoch`); `None` before any batch with an epoch.
    pub(crate) fn latest_epoch(&self) -> Option<i32> {
        self.inner.state.read().epochs.latest_epoch()
    }

    /// Where `epoch`'s offsets end in this log (Kafka's `endOffsetFor`,
    /// answering `OffsetForLeaderEpoch`): see
    /// [`LeaderEpochCache::end_offset_for`](epoch::LeaderEpochCache::end_offset_for);
    /// the latest epoch ends at the log end offset.
    pub(crate) fn end_offset_for_epoch(&self, epoch: i32) -> epoch::EpochEndOffset {
        let state = self.inner.state.read();
        state.epochs.end_offset_for(epoch, state.log_end_offset)
    }

    /// The leader epoch cache's entries, oldest first.
    pub(crate) fn epoch_entries(&self) -> Vec<epoch::EpochEntry> {
        self.inner.state.read().epochs.entries().to_vec()
    }

    /// Records that leader epoch `epoch` starts at the log end offset, as
    /// a new leader does before it takes appends (Kafka's
    /// `maybeAssignEpochStartOffset` in `makeLeader`), so that a follower
    /// asking about an epoch this log never wrote is answered with where
    /// the older epochs end. Does nothing unless `epoch` is newer than the
    /// latest epoch. The `leader-epoch-checkpoint` file follows with the
    /// next flush (see [`EpochFile::StaleAppend`]).
    ///
    /// # Errors
    /// [`Error::Fenced`](crate::Error::Fenced); [`Error::Io`](crate::Error::Io)
    /// if the file cannot be written (which fences the log).
    pub(crate) fn assign_leader_epoch(&self, epoch: i32) -> Result<()> {
        let mut state = self.inner.state.write();
        self.inner.check_not_fenced()?;
        if state
            .epochs
            .latest_epoch()
            .is_some_and(|latest| latest >= epoch)
        {
            return Ok(());
        }
        let start = state.log_end_offset;
        self.inner
            .assign_epochs(&mut state, std::iter::once((epoch, start)))
    }

    /// Whether an earlier I/O failure fenced the log (every append fails
    /// until it is reopened).
    #[must_use]
    pub fn is_fenced(&self) -> bool {
        self.inner.is_fenced()
    }

    /// Flushes everything appended so far to disk and advances the recovery
    /// point to the log end offset.
    ///
    /// # Errors
    /// [`Error::Fenced`] or the [`Error::Io`] of a failed fsync (which fences
    /// the log).
    pub fn flush(&self) -> Result<()> {
        let leo = self.log_end_offset();
        self.inner.sync_to(leo)
    }

    /// Waits until `done(finished work items, finished retention checks)`
    /// holds for this log's background work, at most `timeout`.
    #[cfg(test)]
    pub(crate) fn wait_for_background(
        &self,
        timeout: std::time::Duration,
        done: impl Fn(u64, u64) -> bool,
    ) -> bool {
        self.inner.background.wait_for(timeout, done)
    }

    /// Waits until every offset below `offset` is on disk (the recovery
    /// point reached it), at most `timeout` in real time; returns whether it
    /// did. Returns `false` as soon as the log is fenced (a failed fsync
    /// fences it, and nothing is flushed after that). With a `flush.ms` bound
    /// ([`FlushPolicy::interval`](crate::FlushPolicy::interval)) this waits
    /// for the background flush; it never starts one itself (see
    /// [`Log::flush`]).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let log = logbus::Log::builder(dir.path()).open()?;
    /// log.flush()?;
    /// assert!(log.wait_for_flush(log.log_end_offset(), std::time::Duration::ZERO));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn wait_for_flush(&self, offset: u64, timeout: std::time::Duration) -> bool {
        self.inner.wait_durable(offset, timeout)
    }

    /// Stops the log's background work (waiting for work in progress),
    /// flushes the log and releases the directory lock. Dropping the log
    /// does the same but ignores errors.
    ///
    /// # Errors
    /// The [`Error::Io`] of a failed flush.
    pub fn close(self) -> Result<()> {
        self.shutdown()
    }

    /// Drops the log as a crash leaves it: it is fenced first, so its
    /// background work stops and nothing is flushed or trimmed (the active
    /// segment's index files stay preallocated; the next open recovers
    /// them as after a kill). What is not durable stays only in the page
    /// cache — or, with fault-injecting storage, is lost at its power loss.
    pub(crate) fn abandon(self) {
        self.inner.fence();
        // `shutdown` (from drop) sees the fence and returns before flushing.
        drop(self);
    }

    fn shutdown(&self) -> Result<()> {
        let Some(unrun) = self.inner.background.close() else {
            return Ok(());
        };
        // No scheduler thread touches the log any more.
        for job in unrun {
            worker::run_unqueued(&self.inner, job);
        }
        if let Some(private) = self.private.lock().take() {
            private.stop();
        }
        self.inner.remove_spare();
        if self.inner.is_fenced() {
            return Err(Error::Fenced {
                path: self.inner.dir.clone(),
            });
        }
        self.inner.close_active()?;
        self.inner.write_epochs_if_stale()?;
        {
            // The producer state at the log end: the next open replays
            // nothing (once the flush below makes it durable).
            let mut state = self.inner.state.write();
            let end = state.log_end_offset;
            if let Err(e) = self.inner.write_snapshot(&mut state, end) {
                drop(state);
                self.inner.fence();
                return Err(e);
            }
        }
        self.flush()
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        // Errors are reported by `close`; dropping cannot return them.
        let _ = self.shutdown();
    }
}

impl LogInner {
    /// The configuration as of now (one read of the lock, then an `Arc`
    /// the caller holds: a whole configuration, never half of two).
    pub(crate) fn config(&self) -> Arc<LogConfig> {
        self.config.read().clone()
    }

    fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }

    /// Fences the log after an I/O failure: every later append fails, and
    /// threads waiting for a flush stop waiting. Not called with the
    /// durability lock held (see [`LogInner::mark_fenced`]).
    fn fence(&self) {
        self.mark_fenced();
        self.durability.wake_waiters();
    }

    /// Sets the fenced flag only; the caller wakes the waiters.
    fn mark_fenced(&self) {
        if !self.fenced.swap(true, Ordering::AcqRel) {
            self.stats.fenced();
            tracing::error!(
                dir = %self.dir.display(),
                "log fenced after an I/O failure: appends fail until it is reopened"
            );
        }
    }

    fn check_not_fenced(&self) -> Result<()> {
        if self.is_fenced() {
            Err(Error::Fenced {
                path: self.dir.clone(),
            })
        } else {
            Ok(())
        }
    }

    /// Removes a prepared spare segment's files (on close; a leftover spare
    /// is also removed by the next open).
    fn remove_spare(&self) {
        let mut state = self.state.write();
        if std::mem::replace(&mut state.spare_ready, false) {
            for suffix in [
                crate::storage::segment::LOG_SUFFIX,
                crate::storage::segment::INDEX_SUFFIX,
                crate::storage::segment::TIME_INDEX_SUFFIX,
            ] {
                // Best effort: the next open removes what is left.
                let _ = self
                    .storage
                    .remove_file(&crate::storage::spare::spare_file(&self.dir, suffix));
            }
        }
    }

    /// Rewrites the leader epoch file if it lags the cache (see
    /// [`EpochFile`]).
    ///
    /// # Errors
    /// [`Error::Io`], which fences the log; the file stays marked stale.
    fn write_epochs_if_stale(&self) -> Result<()> {
        let mut state = self.state.write();
        self.write_epochs_locked(&mut state)
    }

    /// [`Self::write_epochs_if_stale`] under the state lock.
    fn write_epochs_locked(&self, state: &mut LogState) -> Result<()> {
        if state.epoch_file != EpochFile::Written {
            self.write_epoch_file(&state.epochs)?;
            state.epoch_file = EpochFile::Written;
        }
        Ok(())
    }

    /// Rewrites the leader epoch file with `epochs`. A failure fences the
    /// log, as every failed write of the append path does: the rename or
    /// the directory fsync may or may not have reached the disk, and
    /// nothing is retried after a failed fsync.
    fn write_epoch_file(&self, epochs: &epoch::LeaderEpochCache) -> Result<()> {
        let result = epoch::write_checkpoint(self.storage.as_ref(), &self.dir, epochs);
        if result.is_err() {
            self.fence();
        }
        result
    }

    /// Records the leader epochs of batches about to be appended
    /// (`(partitionLeaderEpoch, base offset)` in offset order) before they
    /// are written. A new epoch changes the cache in memory and leaves the
    /// file to the next flush ([`EpochFile::StaleAppend`]): the file on
    /// disk names every epoch of the batches below the recovery point, and
    /// an open assigns those of the batches past it. Only a file that must
    /// catch up with a truncation ([`EpochFile::StaleEnd`]) is rewritten
    /// first (fsynced), since a crash could otherwise leave it naming an
    /// epoch for offsets another epoch wrote. Batches without an epoch
    /// (negative) change nothing.
    ///
    /// # Errors
    /// [`Error::Io`] from writing the file, which fences the log: nothing
    /// is appended then, and the cache is unchanged.
    fn assign_epochs(
        &self,
        state: &mut LogState,
        batches: impl Iterator<Item = (i32, u64)> + Clone,
    ) -> Result<()> {
        let changes = batches
            .clone()
            .any(|(epoch, offset)| state.epochs.needs_assign(epoch, offset));
        if !changes {
            if state.epoch_file == EpochFile::StaleEnd {
                return self.write_epochs_locked(state);
            }
            return Ok(());
        }
        let mut updated = state.epochs.clone();
        for (epoch, offset) in batches {
            updated.assign(epoch, offset);
        }
        if state.epoch_file == EpochFile::StaleEnd {
            self.write_epoch_file(&updated)?;
            state.epochs = updated;
            state.epoch_file = EpochFile::Written;
        } else {
            state.epochs = updated;
            state.epoch_file = EpochFile::StaleAppend;
        }
        Ok(())
    }

    /// [`Self::assign_epochs`] for an append holding the state lock's
    /// upgradable read ([`AppendGuard`]): a leader epoch file that must
    /// catch up with a truncation is rewritten (fsynced) with only that
    /// held, so readers go on meanwhile, and the write lock is taken only
    /// to put the new cache in place. Nothing else can change the cache in
    /// between: every other writer takes the write lock, which the
    /// upgradable read excludes.
    ///
    /// # Errors
    /// As [`Self::assign_epochs`].
    fn assign_epochs_upgradable(
        &self,
        state: &mut AppendGuard<'_>,
        batches: impl Iterator<Item = (i32, u64)> + Clone,
    ) -> Result<()> {
        let changes = batches
            .clone()
            .any(|(epoch, offset)| state.epochs.needs_assign(epoch, offset));
        let stale_end = state.epoch_file == EpochFile::StaleEnd;
        if !changes && !stale_end {
            return Ok(());
        }
        let mut updated = state.epochs.clone();
        for (epoch, offset) in batches {
            updated.assign(epoch, offset);
        }
        if stale_end {
            self.write_epoch_file(&updated)?;
        }
        state.with_upgraded(|state| {
            state.epochs = updated;
            state.epoch_file = if stale_end {
                EpochFile::Written
            } else {
                EpochFile::StaleAppend
            };
        });
        Ok(())
    }

    /// Seals the active segment on clean close (final time index entry,
    /// trimmed indexes), as Kafka does, so a reopen trusts its indexes.
    fn close_active(&self) -> Result<()> {
        let mut state = self.state.write();
        let result = state.active_mut().seal();
        if result.is_err() {
            self.fence();
        }
        result
    }
}
