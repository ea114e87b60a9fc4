//! Removing data: retention, `delete_records`, `truncate_to` and
//! `truncate_fully_and_start_at`.

use crate::error::{Error, Result};
use crate::log::epoch::LeaderEpochCache;
use crate::log::{EpochFile, Log, LogInner, LogState, restart, worker::Job};
use crate::storage::segment::Segment;

/// Which rules [`LogInner::delete_segments`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retention {
    /// `retention.ms`, `retention.bytes` and the log start offset.
    All,
    /// Only the log start offset (`delete_records`).
    BelowLogStart,
}

/// What [`Log::enforce_retention`] deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionReport {
    /// Segments deleted.
    pub segments: usize,
    /// Bytes of batches deleted.
    pub bytes: u64,
}

impl Log {
    /// Deletes the oldest sealed segments that are past `retention.ms` (by
    /// their newest record's timestamp), that push the log over
    /// `retention.bytes`, or that lie wholly below the log start offset. The
    /// active segment is never deleted. The log's background thread runs this
    /// every `retention_check_interval`; call it to enforce retention now.
    ///
    /// Readers still holding data of a deleted segment keep reading it
    /// safely: its files are renamed `.deleted` and removed in the background
    /// once their maps are gone.
    ///
    /// # Errors
    /// [`Error::Io`] if renaming a segment's files fails.
    pub fn enforce_retention(&self) -> Result<RetentionReport> {
        self.inner.enforce_retention()
    }

    /// Advances the log start offset to `offset` (Kafka's `DeleteRecords`):
    /// records below it can no longer be read, and segments wholly below it
    /// are deleted. Returns the new log start offset. Persist it in the
    /// owner's checkpoint and pass it to
    /// [`LogBuilder::log_start_offset`](crate::LogBuilder::log_start_offset)
    /// on reopen.
    ///
    /// # Errors
    /// [`Error::OffsetOutOfRange`] if `offset` is above the log end offset.
    pub fn delete_records(&self, offset: u64) -> Result<u64> {
        {
            let mut state = self.inner.state.write();
            if offset > state.log_end_offset {
                return Err(Error::OffsetOutOfRange {
                    offset,
                    log_start: state.log_start_offset,
                    log_end: state.log_end_offset,
                });
            }
            state.log_start_offset = state.log_start_offset.max(offset);
            state.epochs_follow_start();
        }
        self.inner.delete_segments(Retention::BelowLogStart)?;
        Ok(self.log_start_offset())
    }

    /// Removes every record at or after `offset`, as a follower does when it
    /// diverged from its leader. A batch holding `offset` is removed whole, so
    /// the new log end offset is the start of that batch (equal to `offset`
    /// when `offset` is a batch boundary, as replication uses it). Returns
    /// the new log end offset. Truncating at or past the log end cuts no
    /// record, but drops a leader epoch that starts at the log end (one
    /// that wrote nothing: its leader recorded it, then lost the
    /// leadership before appending), as Kafka's `truncateTo` does. The
    /// producers' state forgets the cut batches (it is rebuilt from the
    /// batches kept), so a producer's retry of a cut batch is stored again.
    /// The cut is on disk (fsynced, with the directory) when this returns. A cut
    /// below the recovery point makes a stale checkpointed one lie past
    /// the log's end: a cluster's broker lowers its checkpoint first (the
    /// log's truncation step); a standalone log's owner must checkpoint
    /// [`Log::recovery_point`] before a crash can reopen it. The leader epoch cache loses the
    /// epochs that started at or after the new end, and its file is
    /// rewritten after the cut is durable.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Corrupt`]; an I/O error fences the log.
    pub fn truncate_to(&self, offset: u64) -> Result<u64> {
        let end = {
            let mut state = self.inner.state.write();
            self.inner.check_not_fenced()?;
            if offset >= state.log_end_offset {
                // Nothing to cut, but an epoch that starts at the log end
                // wrote nothing (a leader recorded it, then lost the
                // leadership before appending): it goes, as in Kafka's
                // `truncateTo`, so a follower stops naming it.
                state.epochs_follow_end();
                let end = state.log_end_offset;
                return self.inner.write_epochs_locked(&mut state).map(|()| end);
            }
            // The segment holding `offset` is cut at a batch boundary at or
            // above its base: the owner lowers its checkpointed recovery
            // point to that base first (a little more to scan at the next
            // open, never a recovery point past the end).
            let floor = state
                .segments
                .iter()
                .rev()
                .map(Segment::base_offset)
                .find(|&base| base <= offset)
                .unwrap_or(offset);
            self.inner.before_cut(floor)?;
            let result = self.inner.truncate_locked(&mut state, offset);
            if result.is_err() {
                self.inner.fence();
            }
            result?
        };
        // The cut must be durable before anything is appended past it: the
        // durable offset already covers the kept part, so no later flush
        // would sync the shortened file, and a power loss that undid the
        // cut would bring the cut batches back below a recovery point that
        // later flushes raise over the new ones (which recovery refuses).
        self.inner.sync_now()?;
        // Then the leader epoch file, so it never lacks an epoch of the
        // durable batches (a crash before this leaves entries past the
        // end, which the next open cuts). A failure fences the log.
        self.inner.write_epochs_if_stale()?;
        Ok(end)
    }

    /// Removes every segment and starts the log again, empty, at `offset`
    /// (Kafka's `truncateFullyAndStartAt`): a follower does it when its
    /// leader's log starts above this log's end, because the leader
    /// deleted (retention, `delete_records`) records the follower never
    /// fetched. The log start and end offsets, the recovery point and the
    /// cleaner's checkpoint become `offset`, and the leader epoch cache and
    /// the producers' state are emptied (the next fetched batches fill
    /// them). Update the owner's
    /// checkpoints too (log start, recovery point); an open with older
    /// ones still starts at `offset`.
    ///
    /// Crash-safe: a durable `restart-offset` marker is the commit point.
    /// A crash before it leaves the old log; after it, the next open
    /// finishes the restart (the old segments go, an empty one at `offset`
    /// is created), so a reopen finds the old log or the new one, never a
    /// mix. Everything is durable when this returns. Readers holding data
    /// of the old segments keep reading it (the files are renamed
    /// `.deleted` and removed once unreferenced).
    ///
    /// ```
    /// use logbus::{Log, format::BatchBuilder, Compression};
    /// let dir = tempfile::tempdir()?;
    /// let log = Log::builder(dir.path()).open()?;
    /// let mut batch = BatchBuilder::new(Compression::None);
    /// batch.append(0, None, Some(b"v"), &[]);
    /// log.append(&mut batch.build()?.to_vec(), 0)?;
    /// log.truncate_fully_and_start_at(100)?;
    /// assert_eq!((log.log_start_offset(), log.log_end_offset()), (100, 100));
    /// assert_eq!(log.segment_base_offsets(), [100]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Io`], which fences the log (reopen it: it then holds the
    /// old log or the new one, whichever the marker says).
    pub fn truncate_fully_and_start_at(&self, offset: u64) -> Result<()> {
        let mut state = self.inner.state.write();
        self.inner.check_not_fenced()?;
        self.inner.before_cut(offset)?;
        let result = self.inner.restart_locked(&mut state, offset);
        if result.is_err() {
            self.inner.fence();
        }
        result
    }
}

impl LogInner {
    /// Runs the owner's [`TruncationHook`](super::TruncationHook) if a cut
    /// leaving the log at `floor` or above would go below the recovery
    /// point. Called under the state lock, before anything changes.
    fn before_cut(&self, floor: u64) -> Result<()> {
        let Some(hook) = &self.truncation_hook else {
            return Ok(());
        };
        let (durable, truncations) = self.durability.durable_offset_and_truncations();
        if floor < durable {
            (hook.0)(floor, truncations + 1)?;
        }
        Ok(())
    }

    fn truncate_locked(&self, state: &mut LogState, offset: u64) -> Result<u64> {
        // Segments starting at or before `offset` stay; the last of them is
        // cut and becomes active.
        let keep = state
            .segments
            .partition_point(|s| s.base_offset() <= offset);
        let mut removed = Vec::new();
        if keep == 0 {
            // Everything goes: start afresh at `offset`, which is below every
            // existing segment, so the new files collide with none.
            let mut fresh =
                Segment::create(&self.storage, &self.dir, offset, self.segment_limits())?;
            fresh.set_created_ms(self.clock.now_ms());
            removed.append(&mut state.segments);
            state.segments.push(fresh);
            state.log_start_offset = offset;
        } else {
            removed.extend(state.segments.drain(keep..));
            let active = state.active_mut();
            if active.is_sealed() {
                active.unseal()?;
            }
            active.truncate_to(offset)?;
        }
        for segment in &removed {
            self.schedule(Job::RemoveFiles(segment.mark_deleted()?));
        }
        state.generation += 1;
        state.log_end_offset = state.active().next_offset();
        state.cleaner_checkpoint = state.cleaner_checkpoint.min(state.log_end_offset);
        state.log_start_offset = state.log_start_offset.min(state.log_end_offset);
        state.epochs_follow_end();
        state.epochs_follow_start();
        state.dir_dirty = true;
        self.durability.truncate(state.log_end_offset);
        // The cut batches' producers forget them: reloaded from the newest
        // snapshot at or below the cut, then the batches kept after it.
        self.remove_snapshots_above(state, state.log_end_offset)?;
        self.reload_producers(state)?;
        Ok(state.log_end_offset)
    }

    /// [`Log::truncate_fully_and_start_at`] under the state lock. The
    /// state in memory changes only once the new segment exists, so a
    /// failure before that leaves the old segments readable (the caller
    /// fences the log).
    fn restart_locked(&self, state: &mut LogState, offset: u64) -> Result<()> {
        // The commit point: from here on every open finishes the restart.
        restart::write_marker(self.storage.as_ref(), &self.dir, offset)?;
        // The old files go before the new ones come, so a segment at
        // `offset` already (an empty log restarted where it is) never
        // collides with the new one.
        // The producer snapshots describe the old log.
        self.remove_all_snapshots(state)?;
        let mut deleted = Vec::with_capacity(state.segments.len());
        for segment in &state.segments {
            deleted.push(segment.mark_deleted()?);
        }
        let mut fresh = Segment::create(&self.storage, &self.dir, offset, self.segment_limits())?;
        fresh.set_created_ms(self.clock.now_ms());
        self.storage.sync_dir(&self.dir)?;
        state.segments = vec![fresh];
        state.unflushed.clear();
        state.dir_dirty = false;
        state.generation += 1;
        state.log_start_offset = offset;
        state.log_end_offset = offset;
        state.cleaner_checkpoint = offset;
        state.epochs = LeaderEpochCache::default();
        state.producers.truncate_fully_and_start_at(offset);
        self.durability.restart_at(offset);
        for paths in deleted {
            self.schedule(Job::RemoveFiles(paths));
        }
        // An empty epoch file before the marker goes (a later open without
        // the marker must not read the old epochs).
        self.write_epoch_file(&state.epochs)?;
        state.epoch_file = EpochFile::Written;
        restart::remove_marker(self.storage.as_ref(), &self.dir)
    }

    pub(crate) fn enforce_retention(&self) -> Result<RetentionReport> {
        self.delete_segments(Retention::All)
    }

    /// Deletes the oldest sealed segments that `which` rules expire.
    fn delete_segments(&self, which: Retention) -> Result<RetentionReport> {
        let now = self.clock.now_ms();
        let mut state = self.state.write();
        // Under `cleanup.policy=compact` alone, time and size delete nothing.
        let all = which == Retention::All && self.config().delete();
        let mut excess = match self.config().retention_bytes() {
            Some(limit) if all => state.size_bytes().saturating_sub(limit),
            _ => 0,
        };
        let sealed = state.segments.len().saturating_sub(1);
        let mut count = 0;
        while count < sealed {
            let segment = &state.segments[count];
            let next_base = state.segments[count + 1].base_offset();
            let below_start = next_base <= state.log_start_offset;
            let expired = match self.config().retention_ms() {
                Some(ms) if all => {
                    segment.max_timestamp() >= 0 && now.saturating_sub(segment.max_timestamp()) > ms
                }
                _ => false,
            };
            let over_size = excess > 0 && excess >= segment.size();
            if !(below_start || expired || over_size) {
                break;
            }
            if over_size {
                excess -= segment.size();
            }
            count += 1;
        }
        if count == 0 {
            return Ok(RetentionReport::default());
        }
        let mut report = RetentionReport::default();
        let removed: Vec<Segment> = state.segments.drain(..count).collect();
        state.generation += 1;
        state.log_start_offset = state.log_start_offset.max(state.segments[0].base_offset());
        state.epochs_follow_start();
        state.dir_dirty = true;
        // Snapshots below the first segment describe deleted batches.
        let first = state.segments[0].base_offset();
        let below: Vec<u64> = state.snapshots.range(..first).copied().collect();
        self.remove_snapshots(&mut state, &below);
        for segment in &removed {
            report.segments += 1;
            report.bytes += segment.size();
            // Oldest first, each rename durable before the next one (this
            // pass's or a later one's): a power loss then brings back at
            // most the newest deleted segment, next to the ones kept.
            // Renames lost out of order could bring back an older one with
            // a hole after it, below the recovery point, where recovery
            // must refuse the open. The last rename is synced with the
            // directory later (`dir_dirty`), or before the next deletion.
            self.storage.sync_dir(&self.dir)?;
            self.schedule(Job::RemoveFiles(segment.mark_deleted()?));
        }
        tracing::info!(
            dir = %self.dir.display(),
            segments = report.segments,
            bytes = report.bytes,
            log_start_offset = state.log_start_offset,
            rule = ?which,
            "retention deleted segments"
        );
        Ok(report)
    }
}
