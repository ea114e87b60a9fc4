//! Committing positions for the consumer's group: `commit_sync`,
//! `commit_async`, auto-commit, and reading committed offsets back.

use std::collections::BTreeMap;

use super::*;

impl Consumer {
    /// Commits the current position of every assigned partition for the
    /// consumer's `group.id` (Kafka's `commitSync()`): the offsets after the
    /// records `poll` returned, or set by `seek`. Partitions without a
    /// position yet are left out. One batch in `__consumer_offsets`: applied
    /// whole or not at all.
    ///
    /// A subscribed consumer commits as a member of its group's current
    /// generation; once the group has rebalanced without it, the commit
    /// fails with [`Error::CommitFailed`] rather than overwrite the new
    /// owner's progress. A consumer with assigned partitions commits only
    /// while its group has no members. Runs the callbacks of earlier
    /// [`commit_async`](Consumer::commit_async) calls first.
    ///
    /// # Errors
    /// [`Error::ReadOnly`](crate::Error::ReadOnly) on a cluster opened with
    /// [`Cluster::open_read_only`](crate::Cluster::open_read_only) (nothing changes);
    /// [`Error::IllegalState`] without a `group.id`;
    /// [`Error::CommitFailed`]; [`Error::RebalanceInProgress`] while the
    /// group waits for its leader's assignment (retriable: poll, then
    /// commit again); the errors of
    /// [`Cluster::alter_group_offsets`](crate::Cluster::alter_group_offsets).
    /// While the group's `__consumer_offsets` partition has no leader (its
    /// broker crashed and is not fenced yet, or a new leader is taking
    /// over) the commit waits for one, as Kafka's client retries a moving
    /// coordinator, for up to 60 s (Kafka's `default.api.timeout.ms`);
    /// then [`Error::NotLeaderOrFollower`].
    pub fn commit_sync(&mut self) -> Result<()> {
        self.run_commit_callbacks();
        let offsets = self.consumed_offsets();
        self.commit_offsets(&offsets)
    }

    /// Commits the current positions (as [`commit_sync`](Consumer::commit_sync))
    /// and hands the outcome to `callback` (Kafka's `commitAsync`). The
    /// commit itself is an in-process append and is done when this
    /// returns; the callback runs, as Kafka's, on the consumer's thread at
    /// the next [`poll`](Consumer::poll), `commit_sync` or
    /// [`close`](Consumer::close), callbacks in the order of their commits.
    ///
    /// ```
    /// use logbus::{Cluster, ClusterConfig, Consumer, ConsumerConfig, NewTopic, TopicPartition};
    /// use std::sync::{Arc, Mutex};
    /// use std::time::Duration;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    /// cluster.create_topic(NewTopic::new("orders", 1))?;
    /// let config = ConsumerConfig::builder().group_id("audit").build()?;
    /// let mut consumer = Consumer::new(&cluster, config)?;
    /// let tp = TopicPartition::new("orders", 0);
    /// consumer.assign(&[tp.clone()])?;
    /// consumer.seek(&tp, 0)?;
    /// let outcome = Arc::new(Mutex::new(None));
    /// let seen = outcome.clone();
    /// consumer.commit_async(move |offsets, result| {
    ///     *seen.lock().unwrap() = Some((offsets.len(), result.is_ok()));
    /// });
    /// consumer.poll(Duration::ZERO)?; // runs the callback
    /// assert_eq!(*outcome.lock().unwrap(), Some((1, true)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn commit_async(
        &mut self,
        callback: impl FnOnce(&CommittedOffsets, Result<()>) + Send + 'static,
    ) {
        let offsets = self.consumed_offsets();
        self.commit_offsets_async(offsets, callback);
    }

    /// Commits the given offsets and hands the outcome to `callback`, as
    /// [`commit_async`](Consumer::commit_async).
    pub fn commit_offsets_async(
        &mut self,
        offsets: CommittedOffsets,
        callback: impl FnOnce(&CommittedOffsets, Result<()>) + Send + 'static,
    ) {
        let result = self.commit_offsets(&offsets);
        self.callbacks
            .completed
            .push((offsets, result, Box::new(callback)));
    }

    /// Runs the callbacks of finished asynchronous commits, in order.
    pub(super) fn run_commit_callbacks(&mut self) {
        for (offsets, result, callback) in std::mem::take(&mut self.callbacks.completed) {
            callback(&offsets, result);
        }
    }

    /// The position of every assigned partition that has one: the offsets
    /// after the records `poll` returned.
    pub(super) fn consumed_offsets(&self) -> CommittedOffsets {
        self.assignment
            .iter()
            .filter_map(|a| match a.position {
                Position::At(offset) => Some((a.tp.clone(), OffsetAndMetadata::new(offset))),
                _ => None,
            })
            .collect()
    }

    /// With `enable.auto.commit`, commits the consumed positions when
    /// `auto.commit.interval.ms` has passed. Failures are dropped, as
    /// Kafka's client logs and drops them: the next commit covers them.
    pub(super) fn maybe_auto_commit(&mut self, now: i64) {
        if !self.config.enable_auto_commit || self.config.group_id.is_none() {
            return;
        }
        if now < self.next_auto_commit {
            return;
        }
        let interval = self.config.auto_commit_interval_ms;
        let _ = self.maybe_auto_commit_sync();
        self.next_auto_commit = now.saturating_add(interval);
    }

    /// With `enable.auto.commit` and a `group.id`, commits the consumed
    /// positions now.
    pub(super) fn maybe_auto_commit_sync(&mut self) -> Result<()> {
        if !self.config.enable_auto_commit || self.config.group_id.is_none() {
            return Ok(());
        }
        let offsets = self.consumed_offsets();
        if offsets.is_empty() {
            return Ok(());
        }
        self.commit_offsets(&offsets)
    }

    /// Commits the given offsets for the consumer's `group.id` (Kafka's
    /// `commitSync(offsets)`); each is the offset of the next record to
    /// read.
    ///
    /// # Errors
    /// As [`Consumer::commit_sync`].
    pub fn commit_offsets(
        &mut self,
        offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>,
    ) -> Result<()> {
        let group = self.group()?;
        if let Some(refusal) = self
            .membership
            .as_ref()
            .and_then(Membership::commit_refusal)
        {
            return Err(refusal);
        }
        if offsets.is_empty() {
            return Ok(());
        }
        let member = self
            .membership
            .as_ref()
            .and_then(Membership::commit_identity);
        // Kafka's client retries a commit whose coordinator moves
        // (`NOT_COORDINATOR`) until `default.api.timeout.ms`: here, while
        // the group's `__consumer_offsets` partition changes leader.
        let inner = &self.cluster.inner;
        inner.retry_while_leader_moves(|| inner.commit_offsets_as(&group, member, offsets))
    }

    /// The committed offsets of the consumer's group for `partitions`
    /// (Kafka's `committed`); partitions without one are left out.
    ///
    /// # Errors
    /// [`Error::IllegalState`] without a `group.id`.
    pub fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, OffsetAndMetadata>> {
        let group = self.group()?;
        let all = self.cluster.inner.group_offsets(&group)?;
        Ok(partitions
            .iter()
            .filter_map(|tp| all.get(tp).map(|m| (tp.clone(), m.clone())))
            .collect())
    }

    pub(super) fn group(&self) -> Result<String> {
        self.config.group_id.clone().ok_or_else(|| {
            Error::IllegalState("committing or reading committed offsets needs a group.id".into())
        })
    }
}
