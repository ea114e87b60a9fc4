//! The controller: the topic registry and the metadata log behind the
//! cluster's `controller` lock, and the changes it makes under it (create,
//! delete and grow topics, opening a topic's partitions).
//!
//! A new partition's replicas are placed over the brokers as Kafka places
//! them ([`Placement`]), recorded in its `Partition` record (replicas,
//! leader = the first replica, leader epoch 0, ISR = the replicas) and
//! hosted by each replica's broker: the leader's as the leader, the others
//! as followers, whose logs stay empty until fetchers feed them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use uuid::Uuid;

use parking_lot::RwLock;

use super::metadata::{MetadataLog, MetadataRecord, Registry};
use super::placement::Placement;
use super::topic_config::collision_key;
use super::{
    ClusterInner, MAX_PARTITIONS_PER_CLUSTER, MAX_PARTITIONS_PER_TOPIC, MAX_REPLICATION_FACTOR,
    NewTopic, TopicConfig, TopicState, validate_topic_name,
};
use crate::error::{Error, Result};
use crate::replica::LeaderAndIsr;

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
        assignments: Vec<LeaderAndIsr>,
    ) -> Result<Arc<TopicState>> {
        let effective = overrides.overlaid_on(&self.config.topic_defaults);
        let log_config = effective
            .log_config()?
            .with_retention_check_interval_ms(self.config.retention_check_interval_ms);
        let name: Arc<str> = Arc::from(name);
        for (p, roles) in (0..).zip(&assignments) {
            if let Err(e) = self.host_partition(&name, id, p, &log_config, &effective, roles) {
                // Those opened so far are closed again.
                for broker in self.brokers() {
                    let _ = broker.replicas.unhost_topic(&name);
                }
                return Err(e);
            }
        }
        let partitions =
            u32::try_from(assignments.len()).expect("at most MAX_PARTITIONS_PER_TOPIC");
        Ok(Arc::new(TopicState {
            internal: name.starts_with("__"),
            name,
            id,
            overrides,
            effective,
            log_config,
            count: AtomicU32::new(partitions),
            assignments: RwLock::new(assignments),
            deleted: AtomicBool::new(false),
        }))
    }

    /// Opens partition `partition`'s replica on every broker `roles` names.
    fn host_partition(
        &self,
        name: &Arc<str>,
        id: Uuid,
        partition: u32,
        log_config: &crate::config::LogConfig,
        effective: &TopicConfig,
        roles: &LeaderAndIsr,
    ) -> Result<()> {
        let min_insync = usize::try_from(effective.min_insync()).unwrap_or(usize::MAX);
        for &broker in &roles.replicas {
            self.broker(broker)?.open_partition(
                name,
                id,
                partition,
                log_config.clone(),
                roles.clone(),
                min_insync,
            )?;
        }
        Ok(())
    }

    /// Makes the paths of new partitions ready on every broker that will
    /// hold one of their replicas (see `Broker::prepare_path`).
    fn prepare_paths(
        &self,
        name: &str,
        id: Uuid,
        first: u32,
        assignments: &[LeaderAndIsr],
        registry: &Registry,
    ) -> Result<()> {
        for (p, roles) in (first..).zip(assignments) {
            for &broker in &roles.replicas {
                self.broker(broker)?.prepare_path(name, p, id, registry)?;
            }
        }
        Ok(())
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
            replication_factor,
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
        let brokers = u32::try_from(self.brokers().len()).expect("at most MAX_BROKERS");
        let factor = replication_factor.unwrap_or(self.config.default_replication_factor);
        check_replication_factor(&name, factor, brokers)?;
        check_min_insync(&name, &overrides, factor)?;
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
        let assignments: Vec<LeaderAndIsr> = Placement::for_new_topic(id, brokers)
            .assign(brokers, factor, 0, partitions)
            .into_iter()
            .map(LeaderAndIsr::new)
            .collect();
        // A deleted predecessor's directories go before anything is
        // stored; a directory of an unknown topic refuses the creation.
        self.prepare_paths(&name, id, 0, &assignments, registry)?;
        let mut records = vec![MetadataRecord::Topic {
            name: name.clone(),
            id,
        }];
        records.extend((0..).zip(&assignments).map(|(p, a)| a.record(id, p)));
        records.extend(overrides.entries().map(|(k, v)| MetadataRecord::Config {
            topic_id: id,
            key: k.to_string(),
            value: Some(v.to_string()),
        }));
        metadata.commit(registry, &records)?;
        match self.open_topic(&name, id, overrides, assignments) {
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
                for broker in self.brokers() {
                    let _ = broker.replicas.delete_topic(&name);
                    for p in 0..partitions {
                        let _ = broker.delete_partition(&name, p, id);
                    }
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
        for broker in self.brokers() {
            if let Err(e) = broker.replicas.delete_topic(name) {
                first_error.get_or_insert(e);
            }
        }
        // Every partition the registry had, whether or not it was open, on
        // every broker (a directory a broker should not hold goes too).
        for broker in self.brokers() {
            for p in 0..partitions {
                if let Err(e) = broker.delete_partition(name, p, id) {
                    first_error.get_or_insert(e);
                }
            }
        }
        self.metadata_changed();
        for broker in self.brokers() {
            if let Err(e) = broker.write_checkpoints() {
                first_error.get_or_insert(e);
            }
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
        let first = meta.assignments.first().ok_or_else(|| {
            Error::Internal(format!("topic {name} has no partition 0 in the registry"))
        })?;
        let factor = u16::try_from(first.replicas.len()).expect("checked when replayed");
        let first_leader = first.replicas[0];
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
        let brokers = u32::try_from(self.brokers().len()).expect("at most MAX_BROKERS");
        let assignments: Vec<LeaderAndIsr> =
            Placement::for_added_partitions(id, brokers, first_leader)
                .assign(brokers, factor, current, total - current)
                .into_iter()
                .map(LeaderAndIsr::new)
                .collect();
        self.prepare_paths(name, id, current, &assignments, registry)?;
        let records: Vec<MetadataRecord> = (current..)
            .zip(&assignments)
            .map(|(p, a)| a.record(id, p))
            .collect();
        metadata.commit(registry, &records)?;
        for (p, roles) in (current..).zip(assignments) {
            self.host_partition(
                &state.name,
                id,
                p,
                &state.log_config,
                &state.effective,
                &roles,
            )?;
            state.assignments.write().push(roles);
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

/// Checks a topic's replication factor: 1 to the number of brokers and to
/// [`MAX_REPLICATION_FACTOR`].
fn check_replication_factor(topic: &str, factor: u16, brokers: u32) -> Result<()> {
    let reason = if factor == 0 {
        "it must be at least 1".to_string()
    } else if factor > MAX_REPLICATION_FACTOR {
        format!(
            "{factor} is above the limit of {MAX_REPLICATION_FACTOR} \
             (logbus::MAX_REPLICATION_FACTOR)"
        )
    } else if u32::from(factor) > brokers {
        format!("{factor} is larger than the number of brokers ({brokers})")
    } else {
        return Ok(());
    };
    Err(Error::InvalidReplicationFactor {
        topic: topic.to_string(),
        reason,
    })
}

/// Refuses a topic whose own `min.insync.replicas` exceeds its replication
/// factor: no `acks=all` append could ever succeed. (One inherited from the
/// cluster's defaults is allowed, as Kafka allows it.)
fn check_min_insync(topic: &str, overrides: &TopicConfig, factor: u16) -> Result<()> {
    if overrides.get("min.insync.replicas").is_some() && overrides.min_insync() > u64::from(factor)
    {
        return Err(Error::InvalidConfig(format!(
            "topic {topic}: min.insync.replicas={} is above its replication factor {factor}: \
             no acks=all append could succeed",
            overrides.min_insync()
        )));
    }
    Ok(())
}
