//! Kafka's AdminClient calls for consumer groups, as methods on
//! [`Cluster`]: list groups, read and change their committed offsets,
//! delete them.
//!
//! Changes to a group's offsets go through the coordinator's
//! `while_empty`, so they are refused while the group has members (whose
//! own commits would overwrite them), as Kafka's `GroupNotEmptyException`.

use std::collections::BTreeMap;

use crate::cluster::{Cluster, OffsetAndMetadata};
use crate::error::Result;
use crate::types::TopicPartition;

impl Cluster {
    /// Sets committed offsets of consumer group `group` (Kafka's
    /// `alterConsumerGroupOffsets`): the group's consumers resume from them.
    /// The commit is one record batch in `__consumer_offsets` (created on
    /// first use, 50 partitions), so it is applied whole or not at all; it
    /// is as durable as that topic's flush policy (page cache by default).
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use logbus::{Cluster, ClusterConfig, NewTopic, OffsetAndMetadata, TopicPartition};
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    /// cluster.create_topic(NewTopic::new("orders", 2))?;
    /// let tp = TopicPartition::new("orders", 1);
    /// let offsets = BTreeMap::from([(tp.clone(), OffsetAndMetadata::new(42))]);
    /// cluster.alter_group_offsets("billing", &offsets)?;
    /// assert_eq!(cluster.list_group_offsets("billing")?[&tp].offset, 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::GroupNotEmpty`] while the group has active members (their
    /// positions would overwrite the change); [`Error::InvalidArgument`]
    /// for an empty group id or over-long strings;
    /// [`Error::UnknownTopicOrPartition`] for a partition that does not
    /// exist; nothing is committed then.
    pub fn alter_group_offsets(
        &self,
        group: &str,
        offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>,
    ) -> Result<()> {
        let now = self.inner.clock().now_ms();
        self.inner
            .groups
            .while_empty(group, now, || self.inner.commit_offsets(group, offsets))
    }

    /// Every committed offset of `group` (Kafka's
    /// `listConsumerGroupOffsets`); empty for an unknown group.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty group id.
    pub fn list_group_offsets(
        &self,
        group: &str,
    ) -> Result<BTreeMap<TopicPartition, OffsetAndMetadata>> {
        self.inner.group_offsets(group)
    }

    /// Groups that have committed offsets, sorted.
    #[must_use]
    pub fn list_groups(&self) -> Vec<String> {
        self.inner.groups()
    }

    /// Deletes `group`'s committed offsets (tombstones in
    /// `__consumer_offsets`); returns how many were removed.
    ///
    /// # Errors
    /// [`Error::GroupNotEmpty`] while the group has active members;
    /// [`Error::InvalidArgument`] for an empty group id.
    pub fn delete_group(&self, group: &str) -> Result<usize> {
        self.inner.check_open()?;
        let now = self.inner.clock().now_ms();
        self.inner
            .groups
            .while_empty(group, now, || self.inner.delete_offsets(group, None))
    }
}
