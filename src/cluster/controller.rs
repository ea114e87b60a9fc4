//! The controller: the topic registry and the metadata log behind the
//! cluster's `controller` lock, and the changes it makes under it (create,
//! delete and grow topics, opening a topic's partitions).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use uuid::Uuid;

use super::metadata::{MetadataLog, MetadataRecord, Registry};
use super::topic_config::collision_key;
use super::{
    ClusterInner, MAX_PARTITIONS_PER_CLUSTER, MAX_PARTITIONS_PER_TOPIC, NewTopic, TopicConfig,
    TopicState, validate_topic_name,
};
use crate::error::{Error, Result};

#[derive(Debug)]
pub(super) struct Controller {
    pub(super) metadata: Option<MetadataLog>,
    pub(super) registry: Registry,
}

impl ClusterInner {
    pub(super) fn open_topic(
        &self,
        name: &str,
        id: Uuid,
        overrides: TopicConfig,
        partitions: u32,
    ) -> Result<Arc<TopicState>> {
        let effective = overrides.overlaid_on(&self.config.topic_defaults);
        let log_config = effective
            .log_config()?
            .with_retention_check_interval_ms(self.config.retention_check_interval_ms);
        let name: Arc<str> = Arc::from(name);
        for p in 0..partitions {
            if let Err(e) = self.broker.open_partition(&name, id, p, log_config.clone()) {
                // Those opened so far are closed again.
                let _ = self.broker.replicas.unhost_topic(&name);
                return Err(e);
            }
        }
        Ok(Arc::new(TopicState {
            internal: name.starts_with("__"),
            name,
            id,
            overrides,
            effective,
            log_config,
            count: AtomicU32::new(partitions),
            deleted: AtomicBool::new(false),
        }))
    }

    /// Checks a topic's new partition count `total` (it has `current`)
    /// against [`MAX_PARTITIONS_PER_TOPIC`] and the cluster's limit.
    fn check_partition_limits(
        &self,
        registry: &Registry,
        topic: &str,
        current: u32,
        total: u32,
    ) -> Result<()> {
        check_topic_limit(topic, total)?;
        let held: u64 = registry
            .topics
            .values()
            .map(|t| u64::from(t.partitions))
            .sum();
        let after = held - u64::from(current) + u64::from(total);
        let limit = self.config.max_partitions;
        if after > u64::from(limit) {
            return Err(Error::InvalidPartitions {
                topic: topic.to_string(),
                reason: format!(
                    "the cluster would hold {after} partitions, above its limit of {limit} \
                     (ClusterConfig::max_partitions, at most \
                     logbus::MAX_PARTITIONS_PER_CLUSTER = {MAX_PARTITIONS_PER_CLUSTER})"
                ),
            });
        }
        Ok(())
    }

    /// Creates a topic (`internal` allows reserved names); with
    /// `if_not_exists`, an existing topic of the name is returned instead
    /// of [`Error::TopicAlreadyExists`].
    pub(crate) fn create_topic(
        &self,
        topic: NewTopic,
        internal: bool,
        if_not_exists: bool,
    ) -> Result<Arc<TopicState>> {
        self.check_open()?;
        let NewTopic {
            name,
            partitions,
            config: overrides,
        } = topic;
        validate_topic_name(&name, internal)?;
        let partitions = partitions.unwrap_or(self.config.num_partitions);
        if partitions == 0 {
            return Err(Error::InvalidPartitions {
                topic: name,
                reason: "a topic needs at least one partition".into(),
            });
        }
        check_topic_limit(&name, partitions)?;
        overrides
            .overlaid_on(&self.config.topic_defaults)
            .log_config()?;
        let mut controller = self.controller.lock();
        let Controller { metadata, registry } = &mut *controller;
        let metadata = metadata.as_mut().ok_or(Error::Closed("cluster"))?;
        if registry.topics.contains_key(&name) {
            if if_not_exists && let Some(state) = self.topics.read().get(&name) {
                return Ok(state.clone());
            }
            return Err(Error::TopicAlreadyExists { topic: name });
        }
        let key = collision_key(&name);
        if let Some(other) = registry.topics.keys().find(|t| collision_key(t) == key) {
            return Err(Error::InvalidTopic {
                reason: format!(
                    "it collides with existing topic {other} ('.' and '_' are treated alike)"
                ),
                topic: name,
            });
        }
        self.check_partition_limits(registry, &name, 0, partitions)?;
        let id = Uuid::new_v4();
        // A deleted predecessor's directories go before anything is
        // stored; a directory of an unknown topic refuses the creation.
        for p in 0..partitions {
            self.broker.prepare_path(&name, p, id, registry)?;
        }
        let mut records = vec![MetadataRecord::Topic {
            name: name.clone(),
            id,
        }];
        records.extend((0..partitions).map(|p| partition_record(id, p)));
        records.extend(overrides.entries().map(|(k, v)| MetadataRecord::Config {
            topic_id: id,
            key: k.to_string(),
            value: Some(v.to_string()),
        }));
        metadata.commit(registry, &records)?;
        match self.open_topic(&name, id, overrides, partitions) {
            Ok(state) => {
                self.topics.write().insert(name, state.clone());
                self.metadata_changed();
                Ok(state)
            }
            Err(e) => {
                // Best effort: take the half-created topic back out of the
                // registry. Its removal is the evidence on which a later
                // open removes whatever directories are left.
                let _ = metadata.commit(registry, &[MetadataRecord::RemoveTopic { topic_id: id }]);
                let _ = self.broker.replicas.delete_topic(&name);
                for p in 0..partitions {
                    let _ = self.broker.delete_partition(&name, p, id);
                }
                Err(e)
            }
        }
    }

    pub(super) fn delete_topic(&self, name: &str) -> Result<()> {
        self.check_open()?;
        if name.starts_with("__") {
            return Err(Error::InvalidTopic {
                topic: name.to_string(),
                reason: "internal topics cannot be deleted".into(),
            });
        }
        let mut controller = self.controller.lock();
        let Controller { metadata, registry } = &mut *controller;
        let metadata = metadata.as_mut().ok_or(Error::Closed("cluster"))?;
        let meta = registry.topic(name)?;
        let (id, partitions) = (meta.id, meta.partitions);
        // The decision, durable before anything else changes.
        metadata.commit(registry, &[MetadataRecord::RemoveTopic { topic_id: id }])?;
        let state = self.topics.write().remove(name);
        let mut first_error = None;
        if let Some(state) = state {
            state.deleted.store(true, Ordering::Release);
        }
        if let Err(e) = self.broker.replicas.delete_topic(name) {
            first_error.get_or_insert(e);
        }
        // Every partition the registry had, whether or not it was open.
        for p in 0..partitions {
            if let Err(e) = self.broker.delete_partition(name, p, id) {
                first_error.get_or_insert(e);
            }
        }
        self.metadata_changed();
        if let Err(e) = self.broker.write_checkpoints() {
            first_error.get_or_insert(e);
        }
        // A re-created topic must not inherit its predecessor's commits.
        for group in self.groups_with_offsets_for(name) {
            if let Err(e) = self.delete_offsets(&group, Some(name)) {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub(super) fn create_partitions(&self, name: &str, total: u32) -> Result<()> {
        self.check_open()?;
        let mut controller = self.controller.lock();
        let Controller { metadata, registry } = &mut *controller;
        let metadata = metadata.as_mut().ok_or(Error::Closed("cluster"))?;
        let meta = registry.topic(name)?;
        let (id, current) = (meta.id, meta.partitions);
        let state = self.topic_state(name)?;
        state.refuse_internal("adding partitions to")?;
        if total <= current {
            return Err(Error::InvalidPartitions {
                topic: name.to_string(),
                reason: format!(
                    "the topic has {current} partitions; the new count {total} must be larger"
                ),
            });
        }
        self.check_partition_limits(registry, name, current, total)?;
        for p in current..total {
            self.broker.prepare_path(name, p, id, registry)?;
        }
        let records: Vec<MetadataRecord> =
            (current..total).map(|p| partition_record(id, p)).collect();
        metadata.commit(registry, &records)?;
        for p in current..total {
            self.broker
                .open_partition(&state.name, id, p, state.log_config.clone())?;
            state.count.store(p + 1, Ordering::Release);
            self.metadata_changed();
        }
        Ok(())
    }
}

/// Checks a topic's partition count against [`MAX_PARTITIONS_PER_TOPIC`].
pub(super) fn check_topic_limit(topic: &str, partitions: u32) -> Result<()> {
    if partitions > MAX_PARTITIONS_PER_TOPIC {
        return Err(Error::InvalidPartitions {
            topic: topic.to_string(),
            reason: format!(
                "{partitions} partitions exceed the per-topic limit of {MAX_PARTITIONS_PER_TOPIC} \
                 (logbus::MAX_PARTITIONS_PER_TOPIC)"
            ),
        });
    }
    Ok(())
}

pub(super) fn partition_record(topic_id: Uuid, partition: u32) -> MetadataRecord {
    MetadataRecord::Partition {
        topic_id,
        partition,
        replicas: vec![0],
        leader: 0,
        leader_epoch: 0,
    }
}
