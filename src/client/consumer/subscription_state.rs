//! The subscription state (Kafka's `SubscriptionState`): the assigned
//! partitions with their positions and pause flags, and the calls that set
//! them (`assign`, `seek`, `pause`, `position`).

use std::collections::HashSet;

use super::*;

impl Consumer {
    /// Sets the partitions to read, replacing the previous assignment
    /// (Kafka's `assign`). Partitions that stay assigned keep their
    /// position, pause state and buffered records; new ones get a position
    /// from `auto.offset.reset` at the next [`poll`](Consumer::poll) or
    /// [`position`](Consumer::position), unless [`seek`](Consumer::seek)
    /// sets one first. A partition whose topic was deleted and created
    /// again starts afresh. Duplicates are ignored; an empty list unassigns
    /// everything.
    ///
    /// # Errors
    /// [`Error::UnknownTopicOrPartition`] if a topic or partition does not
    /// exist; [`Error::IllegalState`] while subscribed (call
    /// [`unsubscribe`](Consumer::unsubscribe) first); [`Error::Closed`].
    /// The assignment is unchanged then.
    pub fn assign(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        if self.membership.is_some() {
            return Err(Error::IllegalState(
                "Subscription to topics, partitions and pattern are mutually exclusive: \
                 unsubscribe first"
                    .into(),
            ));
        }
        self.assign_exact(partitions)
    }

    /// The assignment a group handed out: partitions of topics deleted
    /// meanwhile are left out (the next rebalance drops them anyway).
    pub(super) fn set_assignment(&mut self, partitions: &[TopicPartition]) {
        let live: Vec<TopicPartition> = partitions
            .iter()
            .filter(|tp| {
                self.index
                    .get(*tp)
                    .is_some_and(|&i| !self.is_gone(&self.assignment[i]))
                    || self.lookup(tp).is_ok()
            })
            .cloned()
            .collect();
        // Only a topic deleted between the filter and here can fail; it
        // is dropped at the next rebalance.
        let _ = self.assign_exact(&live);
    }

    pub(super) fn assign_exact(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        let mut seen = HashSet::with_capacity(partitions.len());
        let mut fresh: HashMap<TopicPartition, TopicIdPartition> = HashMap::new();
        for tp in partitions {
            if !seen.insert(tp) {
                continue;
            }
            let kept = self.index.get(tp).map(|&i| &self.assignment[i]);
            if kept.is_none_or(|a| self.is_gone(a)) {
                fresh.insert(tp.clone(), self.lookup(tp)?);
            }
        }
        let mut old: HashMap<TopicPartition, Assigned> = self
            .assignment
            .drain(..)
            .map(|a| (a.tp.clone(), a))
            .collect();
        seen.clear();
        for tp in partitions {
            if !seen.insert(tp) {
                continue;
            }
            let kept = old.remove(tp);
            let assigned = match (kept, fresh.remove(tp)) {
                (Some(kept), None) => kept,
                (kept, Some(key)) => {
                    // New, or re-created after its topic was deleted.
                    let cluster = &self.cluster.inner;
                    if let Some(stale) = kept {
                        cluster.unwatch(&stale.key, &self.waker_tx);
                    }
                    cluster.watch_leader(&key, &self.waker_tx);
                    Assigned {
                        tp: tp.clone(),
                        stats: cluster.metrics.topic(&key.topic),
                        key,
                        position: Position::Unset,
                        paused: false,
                        fetch: None,
                        eof_at: None,
                        releaser: ReadReleaser::default(),
                        ahead: None,
                    }
                }
                (None, None) => {
                    return Err(Error::Internal(format!(
                        "{tp} was neither assigned nor looked up"
                    )));
                }
            };
            self.assignment.push(assigned);
        }
        for dropped in old.into_values() {
            self.cluster.inner.unwatch(&dropped.key, &self.waker_tx);
        }
        self.index = self
            .assignment
            .iter()
            .enumerate()
            .map(|(i, a)| (a.tp.clone(), i))
            .collect();
        self.rotation = 0;
        if self.assignment.iter().all(|a| a.fetch.is_none()) {
            self.delivering = false;
            self.pending_since = None;
        }
        Ok(())
    }

    /// The assigned partitions, in the order given to
    /// [`assign`](Consumer::assign).
    #[must_use]
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.assignment.iter().map(|a| a.tp.clone()).collect()
    }

    pub(super) fn clear_assignment(&mut self) {
        for a in self.assignment.drain(..) {
            self.cluster.inner.unwatch(&a.key, &self.waker_tx);
        }
        self.index.clear();
        self.delivering = false;
        self.pending_since = None;
    }

    /// Sets the position of an assigned partition: the next poll returns
    /// records from `offset` on (Kafka's `seek`). Buffered records of the
    /// partition are dropped. An offset outside the log is accepted here and
    /// handled by `auto.offset.reset` at the next poll, as in Kafka.
    ///
    /// # Errors
    /// [`Error::IllegalState`] if the partition is not assigned (nothing
    /// changes).
    pub fn seek(&mut self, partition: &TopicPartition, offset: u64) -> Result<()> {
        let i = self.assigned(partition)?;
        self.set_position(i, Position::At(offset));
        Ok(())
    }

    /// Moves the partitions' positions to their log start offsets, looked
    /// up at the next [`poll`](Consumer::poll) or
    /// [`position`](Consumer::position) (Kafka's `seekToBeginning`). An
    /// empty list means every assigned partition.
    ///
    /// # Errors
    /// [`Error::IllegalState`] if a partition is not assigned (nothing
    /// changes).
    pub fn seek_to_beginning(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.seek_all(partitions, Position::Reset(OffsetReset::Earliest))
    }

    /// Moves the partitions' positions to their ends (the high watermarks;
    /// under read_committed the last stable offsets, see
    /// [`ConsumerConfig::isolation_level`](crate::ConsumerConfig::isolation_level)),
    /// looked up at the next [`poll`](Consumer::poll) or
    /// [`position`](Consumer::position) (Kafka's `seekToEnd`). An empty list
    /// means every assigned partition.
    ///
    /// # Errors
    /// [`Error::IllegalState`] if a partition is not assigned (nothing
    /// changes).
    pub fn seek_to_end(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.seek_all(partitions, Position::Reset(OffsetReset::Latest))
    }

    /// The offset of the next record the consumer will return for an
    /// assigned partition (Kafka's `position`). Looks it up first if it is
    /// pending (a new assignment, or after `seek_to_beginning/end`); if the
    /// partition's leader is moving meanwhile, the lookup waits for the new
    /// leader, as Kafka's does, up to `default.api.timeout.ms` (60 s) of
    /// the cluster's clock.
    ///
    /// # Errors
    /// [`Error::IllegalState`] if the partition is not assigned;
    /// [`Error::NoOffsetForPartition`] if it has no position and
    /// `auto.offset.reset` is `none`; [`Error::UnknownTopicOrPartition`] if
    /// the topic was deleted; the retriable [`Error::NotLeaderOrFollower`]
    /// or [`Error::LeaderNotAvailable`] if no new leader came within the
    /// timeout.
    pub fn position(&mut self, partition: &TopicPartition) -> Result<u64> {
        let i = self.assigned(partition)?;
        let cluster = self.cluster.clone();
        cluster.inner.retry_while_leader_moves(|| self.resolve(i))
    }

    /// Stops returning records of the partitions, keeping their positions
    /// and buffered records, until [`resume`](Consumer::resume) (Kafka's
    /// `pause`).
    ///
    /// # Errors
    /// [`Error::IllegalState`] if a partition is not assigned (nothing
    /// changes).
    pub fn pause(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.set_paused(partitions, true)
    }

    /// Returns records of paused partitions again (Kafka's `resume`).
    /// Resuming a partition that is not paused does nothing.
    ///
    /// # Errors
    /// [`Error::IllegalState`] if a partition is not assigned (nothing
    /// changes).
    pub fn resume(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.set_paused(partitions, false)
    }

    /// The paused partitions, in assignment order (Kafka's `paused`).
    #[must_use]
    pub fn paused(&self) -> Vec<TopicPartition> {
        self.assignment
            .iter()
            .filter(|a| a.paused)
            .map(|a| a.tp.clone())
            .collect()
    }

    pub(super) fn assigned(&self, tp: &TopicPartition) -> Result<usize> {
        self.index
            .get(tp)
            .copied()
            .ok_or_else(|| Error::IllegalState(format!("No current assignment for partition {tp}")))
    }

    pub(super) fn set_position(&mut self, i: usize, position: Position) {
        let a = &mut self.assignment[i];
        a.position = position;
        a.fetch = None;
        a.eof_at = None;
    }

    pub(super) fn seek_all(
        &mut self,
        partitions: &[TopicPartition],
        position: Position,
    ) -> Result<()> {
        let targets: Vec<usize> = if partitions.is_empty() {
            (0..self.assignment.len()).collect()
        } else {
            partitions
                .iter()
                .map(|tp| self.assigned(tp))
                .collect::<Result<_>>()?
        };
        for i in targets {
            self.set_position(i, position);
        }
        Ok(())
    }

    pub(super) fn set_paused(&mut self, partitions: &[TopicPartition], paused: bool) -> Result<()> {
        let targets = partitions
            .iter()
            .map(|tp| self.assigned(tp))
            .collect::<Result<Vec<_>>>()?;
        for i in targets {
            self.assignment[i].paused = paused;
        }
        Ok(())
    }
}
