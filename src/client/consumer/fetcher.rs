//! The fetcher: positions resolved, fetches through the replica manager
//! (zero-copy, below the high watermark, or for read_committed below the
//! last stable offset with the aborted transactions), `fetch.min.bytes` and
//! `fetch.max.wait.ms`, partition EOFs, and draining buffered records into
//! a poll's result.

use std::ops::Range;

use super::ahead::ReadAhead;
use super::records::PartitionBuf;
use super::*;

impl Consumer {
    /// The position of assignment `i`, looked up if pending.
    pub(super) fn resolve(&mut self, i: usize) -> Result<u64> {
        let a = &mut self.assignment[i];
        let reset = match a.position {
            Position::At(offset) => return Ok(offset),
            Position::Reset(reset) => reset,
            Position::Unset => {
                // A group's committed offset comes first, as in Kafka; an
                // out-of-range one is reset at the fetch like any position.
                if let Some(group) = &self.config.group_id {
                    let committed = self.cluster.inner.group_offsets(group)?;
                    if let Some(meta) = committed.get(&a.tp) {
                        a.position = Position::At(meta.offset);
                        return Ok(meta.offset);
                    }
                }
                self.config.auto_offset_reset
            }
        };
        let offset = reset_offset(&self.cluster, a, reset, self.config.isolation_level)?;
        a.position = Position::At(offset);
        Ok(offset)
    }

    /// Fetches for every fetchable partition whose buffer is empty (or, while
    /// data is held back for `fetch.min.bytes`, every fetchable partition, to
    /// count what has arrived since), within `fetch.max.bytes`.
    pub(super) fn fill(&mut self) -> Result<()> {
        self.follow_leaders();
        let n = self.assignment.len();
        let max_total = byte_count(self.config.fetch_max_bytes);
        let mut used: usize = 0;
        if self.delivering {
            used = self
                .assignment
                .iter()
                .filter_map(|a| a.fetch.as_ref())
                .map(Fetch::remaining_bytes)
                .sum();
        }
        for k in 0..n {
            let i = (self.rotation + k) % n;
            if self.assignment[i].paused {
                continue;
            }
            if let Some(fetch) = &self.assignment[i].fetch
                && self.delivering
                && !fetch.is_drained()
            {
                continue;
            }
            self.assignment[i].fetch = None;
            if self.membership.is_some() && self.is_gone(&self.assignment[i]) {
                // Deleted: the group's next rebalance takes it away.
                continue;
            }
            // A partition whose leader is moving is skipped until the
            // metadata changes (which wakes a waiting poll), as Kafka's
            // fetcher waits for its metadata to name the new leader.
            let position = match self.resolve(i) {
                Err(e) if e.is_leadership_moving() => continue,
                resolved => resolved?,
            };
            if used > 0 && used >= max_total {
                continue;
            }
            let max_bytes = byte_count(self.config.max_partition_fetch_bytes)
                .min(max_total.saturating_sub(used));
            let (data, source, aborted, checked) = match self.read(i, position, max_bytes) {
                Err(e) if e.is_leadership_moving() => continue,
                read => read?,
            };
            let a = &mut self.assignment[i];
            // The read-ahead made for this read, if it read the same
            // position (`read` may have reset it).
            let ahead = match a.position {
                Position::At(at) => ReadAhead::take(a.ahead.take(), at),
                _ => None,
            };
            if data.is_empty() || (used > 0 && used + data.len() > max_total) {
                continue;
            }
            used += data.len();
            let next = super::ahead::next_position(&data);
            a.fetch = Some(
                Fetch::new(data, source, aborted)
                    .checked(checked)
                    .ahead(ahead),
            );
            // The next fetch of this partition, read ahead while this one
            // is drained and processed.
            if self.read_ahead_enabled
                && let Some(next) = next
            {
                let max_bytes = byte_count(self.config.max_partition_fetch_bytes);
                let bound = FetchBound::for_consumer(self.config.isolation_level);
                let key = &self.assignment[i].key;
                let job = self
                    .read_ahead
                    .post(&self.cluster.inner, key, next, max_bytes, bound);
                self.assignment[i].ahead = job;
            }
        }
        Ok(())
    }

    /// After a metadata change (a cluster of several brokers), puts every
    /// assigned partition's watch on its current leader, so that appends
    /// there wake a waiting poll.
    fn follow_leaders(&mut self) {
        if !self.follows_leaders {
            return;
        }
        let inner = &self.cluster.inner;
        let epoch = inner.metadata_epoch();
        if epoch == self.leaders_seen {
            return;
        }
        // A change after the epoch was read wakes the poll, which comes
        // back here.
        self.leaders_seen = epoch;
        for a in &self.assignment {
            inner.watch_leader(&a.key, &self.waker_tx);
        }
    }

    /// Reads from assignment `i` at `position`, resetting the position by
    /// `auto.offset.reset` when it is outside the log. Under read_committed
    /// the read stops at the last stable offset and comes with the aborted
    /// transactions its batches may hold. Also returns the part of the
    /// bytes this process checked before (see [`Fetch::checked`]).
    pub(super) fn read(
        &mut self,
        i: usize,
        mut position: u64,
        max_bytes: usize,
    ) -> Result<(bytes::Bytes, ReadSource, Option<Aborted>, Range<usize>)> {
        let reset = self.config.auto_offset_reset;
        let isolation = self.config.isolation_level;
        let bound = FetchBound::for_consumer(isolation);
        if isolation == IsolationLevel::ReadCommitted {
            // Every commit answered so far is visible to this read.
            self.cluster.inner.complete_answered_txns();
        }
        let a = &mut self.assignment[i];
        // The log start may move again between the reset and the read; a
        // few tries settle any realistic race.
        for _ in 0..4 {
            let fetched = self
                .cluster
                .inner
                .replicas_for(&a.key)
                .and_then(|r| r.fetch(&a.key, position, max_bytes, bound));
            match fetched {
                Ok(fetched) => {
                    let aborted = fetched.aborted_transactions().map(|list| {
                        Aborted::new(
                            list.iter()
                                .map(|t| (t.producer_id, t.first_offset))
                                .collect(),
                        )
                    });
                    return Ok((
                        fetched.records().clone(),
                        fetched.source(),
                        aborted,
                        fetched.checked(),
                    ));
                }
                Err(Error::OffsetOutOfRange { .. }) => {
                    position = reset_offset(&self.cluster, a, reset, isolation)?;
                    a.position = Position::At(position);
                }
                // The log checks the batch it starts the read at; report its
                // damage as the consumer's own check would.
                Err(Error::Corrupt {
                    kind: CorruptionKind::Batch(cause),
                    ..
                }) => {
                    return Err(Error::CorruptRecord {
                        topic: a.tp.topic.clone(),
                        partition: a.tp.partition,
                        offset: position,
                        cause,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Ok((bytes::Bytes::new(), ReadSource::default(), None, 0..0))
    }

    /// Whether buffered records may be returned now, by `fetch.min.bytes`
    /// and `fetch.max.wait.ms`.
    pub(super) fn ready(&mut self, now: i64) -> bool {
        if self.delivering {
            return true;
        }
        let buffered: usize = self
            .assignment
            .iter()
            .filter(|a| !a.paused)
            .filter_map(|a| a.fetch.as_ref())
            .map(Fetch::remaining_bytes)
            .sum();
        if buffered == 0 {
            self.pending_since = None;
            return false;
        }
        let since = *self.pending_since.get_or_insert(now);
        let waited = now.saturating_sub(since);
        if buffered >= byte_count(self.config.fetch_min_bytes)
            || waited >= self.config.fetch_max_wait_ms
        {
            self.delivering = true;
            self.pending_since = None;
        }
        self.delivering
    }

    /// With `enable.partition.eof`, the fetchable partitions whose position
    /// is at their end (the high watermark; the last stable offset under
    /// read_committed) and not yet reported there; marks them reported. Never fails, so that records drained before it are
    /// returned: a partition whose offsets cannot be read is left for the
    /// next fetch to report.
    pub(super) fn partition_eofs(&mut self) -> Vec<(TopicPartition, u64)> {
        if !self.config.enable_partition_eof {
            return Vec::new();
        }
        let mut eofs = Vec::new();
        let isolation = self.config.isolation_level;
        for a in &mut self.assignment {
            let Position::At(position) = a.position else {
                continue;
            };
            if a.paused || a.eof_at == Some(position) {
                continue;
            }
            // A position above the high watermark is out of range: the
            // next fetch resets it and it is reported from there. A
            // partition gone has no offsets.
            if end_offset(&self.cluster, &a.key, isolation).is_ok_and(|end| end == position) {
                a.eof_at = Some(position);
                eofs.push((a.tp.clone(), position));
            }
        }
        eofs
    }

    /// Takes up to `max.poll.records` buffered records, partition by
    /// partition from the rotation point, advancing positions; also says
    /// whether any position moved.
    pub(super) fn drain(&mut self) -> Result<(ConsumerRecords, bool)> {
        let n = self.assignment.len();
        let mut remaining = self.config.max_poll_records;
        let mut parts = Vec::new();
        let mut failure = None;
        let mut last = None;
        let mut moved = false;
        for k in 0..n {
            if remaining == 0 {
                break;
            }
            let i = (self.rotation + k) % n;
            let a = &mut self.assignment[i];
            if a.paused {
                continue;
            }
            let (Some(fetch), Position::At(mut position)) = (a.fetch.as_mut(), a.position) else {
                continue;
            };
            let mut out = PartitionBuf::with_capacity(fetch.records_left(remaining));
            let result = fetch.drain(
                &mut position,
                Sink {
                    topic: &a.key.topic,
                    partition: a.tp.partition,
                    check_crcs: self.config.check_crcs,
                    max: remaining,
                    out: &mut out,
                },
            );
            moved |= a.position != Position::At(position);
            a.position = Position::At(position);
            if fetch.is_drained() {
                a.releaser.done_with(fetch.source());
                a.fetch = None;
            }
            if !out.is_empty() {
                a.stats.consumed(out.len() as u64);
                remaining -= out.len();
                parts.push((a.tp.clone(), out));
                last = Some(i);
            }
            if let Err(cause) = result {
                failure = Some(Error::CorruptRecord {
                    topic: a.tp.topic.clone(),
                    partition: a.tp.partition,
                    offset: position,
                    cause,
                });
                break;
            }
        }
        if let Some(last) = last {
            self.rotation = (last + 1) % n;
        }
        if self
            .assignment
            .iter()
            .all(|a| a.paused || a.fetch.is_none())
        {
            self.delivering = false;
        }
        match failure {
            // The partition's fetch was emptied, so the next poll reads the
            // damaged batch again and reports it then.
            Some(e) if parts.is_empty() => Err(e),
            _ => Ok((ConsumerRecords::new(parts), moved)),
        }
    }
}

/// The end of `key`'s partition for a consumer at `isolation`: the high
/// watermark, or under read_committed the last stable offset (Kafka's
/// `ListOffsets` for the latest offset at that isolation level).
pub(super) fn end_offset(
    cluster: &Cluster,
    key: &TopicIdPartition,
    isolation: IsolationLevel,
) -> Result<u64> {
    let replicas = cluster.inner.replicas_for(key)?;
    match isolation {
        IsolationLevel::ReadUncommitted => Ok(replicas.offsets(key)?.high_watermark),
        IsolationLevel::ReadCommitted => {
            cluster.inner.complete_answered_txns();
            replicas.last_stable_offset(key)
        }
    }
}

/// The offset `reset` points to in `a`'s partition, for a consumer at
/// `isolation` (`latest` is [`end_offset`]).
pub(super) fn reset_offset(
    cluster: &Cluster,
    a: &Assigned,
    reset: OffsetReset,
    isolation: IsolationLevel,
) -> Result<u64> {
    match reset {
        OffsetReset::Earliest => Ok(cluster
            .inner
            .replicas_for(&a.key)?
            .offsets(&a.key)?
            .log_start),
        OffsetReset::Latest => end_offset(cluster, &a.key, isolation),
        OffsetReset::None => Err(Error::NoOffsetForPartition {
            topic: a.tp.topic.clone(),
            partition: a.tp.partition,
        }),
    }
}
