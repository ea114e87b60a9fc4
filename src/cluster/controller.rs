//! The controller: the topic registry, the metadata log and the brokers'
//! liveness behind the cluster's `controller` lock, and the changes it
//! makes under it (create, delete and grow topics, opening a topic's
//! partitions; fencing and unfencing brokers with the elections they
//! cause; preferred-leader election; the leaders' ISR proposals).
//!
//! A new partition's replicas are placed over the live brokers as Kafka
//! places them ([`Placement`]), recorded in its `Partition` record
//! (replicas, leader = the first replica, leader epoch 0, ISR = the
//! replicas) and hosted by each replica's broker: the leader's as the
//! leader, the others as followers.
//!
//! Every later change of a partition's state is decided by the pure
//! functions of [`election`], persisted as `PartitionChange` records (one
//! metadata batch for all the partitions one event changes), and only then
//! applied: to the routing table (`TopicState::assignments`) and to every
//! live replica's broker (`ReplicaManager::apply_leader_and_isr`). A failed
//! metadata write changes nothing.
//!
//! ## Locks
//! `controller` is held across the whole of a change, the calls into the
//! replica managers included; `topics` and a topic's `assignments` are
//! taken under it, briefly, one after the other, and released before a
//! manager is called. A manager's `apply_leader_and_isr` takes its table
//! lock shared and then the partition's `roles` lock exclusively (waiting
//! for appends in flight), so no caller of
//! [`AlterPartition`](crate::replica::AlterPartition) (a partition's
//! leader) may hold a partition lock while it proposes, and no append may
//! wait for anything the controller does while it holds `roles`.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use uuid::Uuid;

use parking_lot::{Mutex, RwLock};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::election;
use super::liveness::{Liveness, RunState};
use super::metadata::{MetadataLog, MetadataRecord, Reassignment, Registry, TopicMeta};
use super::placement::Placement;
use super::topic_config::collision_key;
use super::{
    AlterConfigOp, Cluster, ClusterConfig, ClusterInner, MAX_PARTITIONS_PER_CLUSTER,
    MAX_PARTITIONS_PER_TOPIC, MAX_REPLICATION_FACTOR, NewTopic, TopicConfig, TopicConfigs,
    TopicIdPartition, TopicState, validate_topic_name,
};
use crate::error::{Error, Result};
use crate::replica::{AlterPartition, LeaderAndIsr};
use crate::types::TopicPartition;

#[derive(Debug)]
pub(super) struct Controller {
    pub(super) metadata: Option<MetadataLog>,
    pub(super) registry: Registry,
    /// The brokers' heartbeats and fencing (runtime state only).
    pub(super) liveness: Liveness,
    /// Brokers that returned and may not lead every partition they prefer
    /// yet (they re-enter its ISR first): each liveness step gives them
    /// back those where they are in the ISR, with
    /// `auto.leader.rebalance.enable`.
    rebalance_pending: BTreeSet<u32>,
}

impl Controller {
    /// The controller over an opened metadata log and its registry, every
    /// configured broker live as of now.
    pub(super) fn new(metadata: MetadataLog, registry: Registry, config: &ClusterConfig) -> Self {
        Controller {
            metadata: Some(metadata),
            registry,
            liveness: Liveness::new(
                config.brokers,
                config.clock.now_ms(),
                config.broker_session_timeout_ms,
                config.broker_heartbeat_interval_ms,
            ),
            rebalance_pending: BTreeSet::new(),
        }
    }
}

/// Topics of at least this many partitions open them on several threads
/// (`ClusterInner::host_partitions_in_parallel`); smaller ones, the
/// internal topics among them, on the calling thread, in partition order.
pub(crate) const PARALLEL_OPEN_MIN_PARTITIONS: usize = 64;

/// How many threads open a topic of `partitions` partitions: the machine's
/// parallelism, at least 2 (opening waits on the file system as much as it
/// computes), at most 8, and at most one per 16 partitions.
fn open_threads(partitions: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    cores.clamp(2, 8).min(partitions.div_ceil(16)).max(1)
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
            .with_retention_check_interval_ms(self.config.retention_check_interval_ms)
            .with_producer_id_expiration_ms(self.config.producer_id_expiration_ms);
        let name: Arc<str> = Arc::from(name);
        let opened = if assignments.len() >= PARALLEL_OPEN_MIN_PARTITIONS {
            self.host_partitions_in_parallel(&name, id, &log_config, &effective, &assignments)
        } else {
            (0..).zip(&assignments).try_for_each(|(p, roles)| {
                self.host_partition(&name, id, p, &log_config, &effective, roles)
            })
        };
        if let Err(e) = opened {
            // Those opened so far are closed again.
            for broker in self.brokers() {
                let _ = broker.replicas.unhost_topic(&name);
            }
            return Err(e);
        }
        let partitions =
            u32::try_from(assignments.len()).expect("at most MAX_PARTITIONS_PER_TOPIC");
        Ok(Arc::new(TopicState {
            internal: name.starts_with("__"),
            name,
            id,
            config: RwLock::new(Arc::new(TopicConfigs {
                overrides,
                effective,
                log_config,
            })),
            count: AtomicU32::new(partitions),
            assignments: RwLock::new(assignments),
            deleted: AtomicBool::new(false),
            config_version: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// Opens the replicas of every partition `assignments` places, on
    /// [`open_threads`] threads that take the partitions in turn (as
    /// Kafka's `num.recovery.threads.per.data.dir` threads do): opening a
    /// partition is a few dozen small file operations (and, for a new one,
    /// fsyncs), which then overlap, and a topic of many partitions opens
    /// in a fraction of the time. After a failure no further partition is
    /// started; the error of the lowest partition that failed is returned.
    fn host_partitions_in_parallel(
        &self,
        name: &Arc<str>,
        id: Uuid,
        log_config: &crate::config::LogConfig,
        effective: &TopicConfig,
        assignments: &[LeaderAndIsr],
    ) -> Result<()> {
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let first_error: Mutex<Option<(usize, Error)>> = Mutex::new(None);
        let work = || {
            while !failed.load(Ordering::Relaxed) {
                let p = next.fetch_add(1, Ordering::Relaxed);
                let Some(roles) = assignments.get(p) else {
                    return;
                };
                let partition = u32::try_from(p).expect("at most MAX_PARTITIONS_PER_TOPIC");
                if let Err(e) =
                    self.host_partition(name, id, partition, log_config, effective, roles)
                {
                    failed.store(true, Ordering::Relaxed);
                    let mut first = first_error.lock();
                    if first.as_ref().is_none_or(|(q, _)| p < *q) {
                        *first = Some((p, e));
                    }
                }
            }
        };
        let spawned = std::thread::scope(|scope| {
            let mut handles = Vec::new();
            for _ in 1..open_threads(assignments.len()) {
                match std::thread::Builder::new()
                    .name("logbus-open".into())
                    .spawn_scoped(scope, work)
                {
                    Ok(handle) => handles.push(handle),
                    // Fewer threads: the calling thread opens the rest.
                    Err(_) => break,
                }
            }
            work();
            handles.into_iter().all(|h| h.join().is_ok())
        });
        if let Some((_, e)) = first_error.into_inner() {
            return Err(e);
        }
        if !spawned {
            return Err(Error::Internal(format!(
                "a thread opening the partitions of {name} panicked"
            )));
        }
        Ok(())
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
            // A stopped or crashed broker opens its replica when it
            // restarts (`restart_broker` hosts what the registry places).
            let Some(broker) = self.running_broker(broker) else {
                continue;
            };
            broker.open_partition(
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
                if let Some(broker) = self.running_broker(broker) {
                    broker.prepare_path(name, p, id, registry)?;
                }
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
        let Controller {
            metadata,
            registry,
            liveness,
            ..
        } = &mut *controller;
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
        let live = live_brokers(&name, factor, brokers, liveness)?;
        let n = u32::try_from(live.len()).expect("at most MAX_BROKERS");
        let assignments = on_live(
            &live,
            Placement::for_new_topic(id, n).assign(n, factor, 0, partitions),
        );
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
        let Controller {
            metadata, registry, ..
        } = &mut *controller;
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
        let Controller {
            metadata,
            registry,
            liveness,
            ..
        } = &mut *controller;
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
        let live = live_brokers(name, factor, brokers, liveness)?;
        let n = u32::try_from(live.len()).expect("at most MAX_BROKERS");
        // Partition 0's leader's place among the live brokers (the next
        // one if it is fenced).
        let first_leader = (0..n)
            .find(|&i| live[i as usize] >= first_leader)
            .unwrap_or(0);
        let assignments = on_live(
            &live,
            Placement::for_added_partitions(id, n, first_leader).assign(
                n,
                factor,
                current,
                total - current,
            ),
        );
        self.prepare_paths(name, id, current, &assignments, registry)?;
        let records: Vec<MetadataRecord> = (current..)
            .zip(&assignments)
            .map(|(p, a)| a.record(id, p))
            .collect();
        metadata.commit(registry, &records)?;
        let configs = state.configs();
        for (p, roles) in (current..).zip(assignments) {
            self.host_partition(
                &state.name,
                id,
                p,
                &configs.log_config,
                &configs.effective,
                &roles,
            )?;
            state.assignments.write().push(roles);
            state.count.store(p + 1, Ordering::Release);
            self.metadata_changed();
        }
        Ok(())
    }
}

impl ClusterInner {
    /// Changes a topic's configs (`Cluster::alter_topic_config`): checks
    /// every op and the result first, stores the changed keys as `Config`
    /// records in one metadata batch, then gives the topic's state and the
    /// logs of every live replica the new configuration.
    pub(super) fn alter_topic_config(&self, name: &str, ops: &[AlterConfigOp]) -> Result<()> {
        self.check_open()?;
        let mut controller = self.controller.lock();
        let Controller {
            metadata, registry, ..
        } = &mut *controller;
        let metadata = metadata.as_mut().ok_or(Error::Closed("cluster"))?;
        let meta = registry.topic(name)?;
        let id = meta.id;
        let factor = meta.assignments.first().map_or(1, |a| a.replicas.len());
        let factor = u16::try_from(factor).expect("checked when replayed");
        let state = self.topic_state(name)?;
        state.refuse_internal("altering the configs of")?;
        let before = state.configs();
        let overrides = before.overrides.altered(ops)?;
        check_min_insync(name, &overrides, factor)?;
        let effective = overrides.overlaid_on(&self.config.topic_defaults);
        let log_config = effective
            .log_config()?
            .with_retention_check_interval_ms(self.config.retention_check_interval_ms)
            .with_producer_id_expiration_ms(self.config.producer_id_expiration_ms);
        if before.log_config.compact() && !log_config.compact() {
            return Err(Error::InvalidConfig(format!(
                "topic {name}: cleanup.policy={}: a compacted topic cannot stop being \
                 compacted (its logs may hold the offset gaps compaction leaves, which \
                 logbus checks as damage in a log that is not compacted); create a new \
                 topic instead",
                effective.get("cleanup.policy").unwrap_or("delete")
            )));
        }
        // Only the keys whose stored value changes.
        let records: Vec<MetadataRecord> = ops
            .iter()
            .filter_map(|op| {
                let key = op.key();
                let (old, new) = (before.overrides.get(key), overrides.get(key));
                (old != new).then(|| MetadataRecord::Config {
                    topic_id: id,
                    key: key.to_string(),
                    value: new.map(str::to_string),
                })
            })
            .collect();
        if records.is_empty() {
            return Ok(());
        }
        metadata.commit(registry, &records)?;
        let min_insync = usize::try_from(effective.min_insync()).unwrap_or(usize::MAX);
        *state.config.write() = Arc::new(TopicConfigs {
            overrides,
            effective,
            log_config: log_config.clone(),
        });
        state
            .config_version
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        let mut first_error = None;
        for broker in self.brokers() {
            if let Err(e) = broker
                .replicas
                .set_topic_config(name, id, &log_config, min_insync)
            {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// The live brokers new replicas may be placed on (Kafka places replicas
/// on unfenced brokers only), at least `factor` of them.
///
/// # Errors
/// [`Error::InvalidReplicationFactor`] if fewer than `factor` are live.
fn live_brokers(topic: &str, factor: u16, brokers: u32, liveness: &Liveness) -> Result<Vec<u32>> {
    let live: Vec<u32> = (0..brokers).filter(|&b| liveness.is_live(b)).collect();
    if live.len() < usize::from(factor) {
        return Err(Error::InvalidReplicationFactor {
            topic: topic.to_string(),
            reason: format!(
                "{factor} is larger than the number of live brokers ({} of {brokers}; the \
                 others are fenced)",
                live.len()
            ),
        });
    }
    Ok(live)
}

/// New partitions' states from a placement over the live brokers'
/// indexes (`live[i]` is the `i`-th live broker's id; with every broker
/// live, the identity).
fn on_live(live: &[u32], placed: Vec<Vec<u32>>) -> Vec<LeaderAndIsr> {
    placed
        .into_iter()
        .map(|replicas| LeaderAndIsr::new(replicas.iter().map(|&i| live[i as usize]).collect()))
        .collect()
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

/// One partition's new state, as the controller decided it.
#[derive(Debug, Clone)]
struct Decided {
    topic_id: Uuid,
    topic: String,
    partition: u32,
    roles: LeaderAndIsr,
}

/// The decided changes, by topic name and partition (so a batch of
/// records and the updates to the brokers come in a stable order).
type Changes = BTreeMap<(String, u32), Decided>;

/// Whether topic `meta` allows unclean leader election (its own config
/// over the cluster's `defaults`).
fn unclean_allowed(meta: &TopicMeta, defaults: &TopicConfig) -> bool {
    TopicConfig::from_stored(&meta.config)
        .map(|own| own.overlaid_on(defaults).unclean_leader_election())
        .unwrap_or(false)
}

/// Runs `decide` (given a partition's state and whether its topic allows
/// unclean election) over every partition the registry holds, starting
/// from the state `changes` already decided for it, and records what
/// changes in `changes`.
fn decide_all(
    registry: &Registry,
    defaults: &TopicConfig,
    changes: &mut Changes,
    mut decide: impl FnMut(&LeaderAndIsr, bool) -> Option<LeaderAndIsr>,
) {
    for meta in registry.topics.values() {
        let unclean = unclean_allowed(meta, defaults);
        for (p, stored) in (0..).zip(&meta.assignments) {
            let slot = (meta.name.clone(), p);
            let current = changes.get(&slot).map_or(stored, |d| &d.roles);
            if let Some(roles) = decide(current, unclean) {
                changes.insert(
                    slot,
                    Decided {
                        topic_id: meta.id,
                        topic: meta.name.clone(),
                        partition: p,
                        roles,
                    },
                );
            }
        }
    }
}

/// The `PartitionChange` records electing a leader for every partition the
/// registry holds without one, as the cluster opens (every broker live).
pub(super) fn elect_leaderless_at_open(
    registry: &Registry,
    defaults: &TopicConfig,
) -> Vec<MetadataRecord> {
    let mut changes = Changes::new();
    decide_all(registry, defaults, &mut changes, |state, unclean| {
        election::at_open(state, &|_| true, unclean)
    });
    change_records(registry, &changes)
}

/// The `PartitionChange` records of `changes`, each carrying the
/// reassignment under way of its partition (the record holds a
/// partition's whole state, so a change that omitted it would end it).
fn change_records(registry: &Registry, changes: &Changes) -> Vec<MetadataRecord> {
    changes
        .values()
        .map(|d| {
            let moving = registry.reassignments.get(&(d.topic_id, d.partition));
            d.roles
                .change_record_moving(d.topic_id, d.partition, moving)
        })
        .collect()
}

impl ClusterInner {
    /// Persists `changes` as one metadata batch of `PartitionChange`
    /// records (applied to `registry` once durable).
    fn commit_changes(
        metadata: &mut MetadataLog,
        registry: &mut Registry,
        changes: &Changes,
    ) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let records = change_records(registry, changes);
        metadata.commit(registry, &records)
    }

    /// Persists one partition's change that starts, re-targets or ends
    /// (`moving` `None`) its reassignment.
    fn commit_move(
        metadata: &mut MetadataLog,
        registry: &mut Registry,
        decided: &Decided,
        moving: Option<&Reassignment>,
    ) -> Result<()> {
        let record =
            decided
                .roles
                .change_record_moving(decided.topic_id, decided.partition, moving);
        metadata.commit(registry, &[record])
    }

    /// Makes committed changes take effect: first the routing table
    /// (`TopicState::assignments`, under `topics` shared and then the
    /// topic's `assignments`, each briefly), then every replica's broker
    /// that `send_to` names, the live ones
    /// ([`ReplicaManager::apply_leader_and_isr`], with no lock but
    /// `controller` held). Wakes the clients watching metadata. Every
    /// change is applied; the first error is returned.
    ///
    /// [`ReplicaManager::apply_leader_and_isr`]: crate::replica::ReplicaManager::apply_leader_and_isr
    fn publish<'a>(
        &self,
        changes: impl IntoIterator<Item = &'a Decided>,
        send_to: impl Fn(u32) -> bool,
    ) -> Result<()> {
        let mut first_error = None;
        let mut any = false;
        for d in changes {
            any = true;
            let state = self.topics.read().get(&d.topic).cloned();
            let name: Arc<str> = match &state {
                Some(state) if state.id == d.topic_id => {
                    if let Some(slot) = state.assignments.write().get_mut(d.partition as usize) {
                        self.partition_changed(&d.topic, d.partition, slot, &d.roles);
                        *slot = d.roles.clone();
                    }
                    state.name.clone()
                }
                _ => Arc::from(d.topic.as_str()),
            };
            let key = TopicIdPartition {
                topic_id: d.topic_id,
                topic: name,
                partition: d.partition,
            };
            for &b in d.roles.replicas.iter().filter(|&&b| send_to(b)) {
                // A stopped or crashed broker (not fenced yet) learns the
                // current state when it restarts.
                let Some(broker) = self.running_broker(b) else {
                    continue;
                };
                if let Err(e) = broker.replicas.apply_leader_and_isr(&key, d.roles.clone()) {
                    first_error.get_or_insert(e);
                }
            }
        }
        if any {
            self.metadata_changed();
            self.publish_under_replicated();
        }
        first_error.map_or(Ok(()), Err)
    }

    /// One liveness step at the clock's now (see [`Liveness::tick`]):
    /// fences the brokers whose session expired or that stopped, and
    /// unfences those that heartbeat again. Returns when the next step is
    /// due. The controller thread calls it; so may a deterministic test.
    ///
    /// # Errors
    /// [`Error::Closed`]; [`Error::Io`] from the metadata log (nothing was
    /// marked: the next step tries again); the first error of a broker
    /// taking the new state (the change stands).
    pub(crate) fn liveness_tick(&self) -> Result<i64> {
        self.check_open()?;
        let mut controller = self.controller.lock();
        let now = self.clock().now_ms();
        let verdict = controller.liveness.tick(now);
        if !verdict.fence.is_empty() {
            self.fence_brokers(&mut controller, &verdict.fence)?;
        }
        if !verdict.unfence.is_empty() {
            self.unfence_brokers(&mut controller, &verdict.unfence)?;
        }
        if self.config.auto_leader_rebalance_enable && !controller.rebalance_pending.is_empty() {
            self.rebalance_returned(&mut controller)?;
        }
        self.complete_reassignments(&mut controller)?;
        Ok(controller.liveness.next_deadline(now))
    }

    /// Completes every reassignment under way whose target replicas are
    /// all in the ISR: one whose last step a crash or a close cut off (the
    /// ISR grew, then the cluster stopped before the switch), reopened.
    /// The others complete as their leaders propose the target replicas
    /// into the ISR.
    fn complete_reassignments(&self, controller: &mut Controller) -> Result<()> {
        let Controller {
            metadata,
            registry,
            liveness,
            ..
        } = controller;
        let metadata = metadata.as_mut().ok_or(Error::Closed("cluster"))?;
        let ready: Vec<TopicIdPartition> = registry
            .reassignments
            .iter()
            .filter_map(|(&(id, partition), moving)| {
                let meta = registry.topic_by_id(&id)?;
                let current = meta.assignments.get(partition as usize)?;
                moving
                    .target
                    .iter()
                    .all(|b| current.isr.contains(b))
                    .then(|| TopicIdPartition {
                        topic_id: id,
                        topic: Arc::from(meta.name.as_str()),
                        partition,
                    })
            })
            .collect();
        let mut first_error = None;
        for key in ready {
            if let Err(e) = self.complete_reassignment(metadata, registry, liveness, &key) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Kafka's automatic leader rebalance, for the brokers that returned:
    /// each takes back the leadership of the partitions it prefers where
    /// it is live and in the ISR again; a broker leaves the pending set
    /// once it leads all of them.
    fn rebalance_returned(&self, controller: &mut Controller) -> Result<()> {
        let Controller {
            metadata,
            registry,
            liveness,
            rebalance_pending,
            ..
        } = controller;
        let metadata = metadata.as_mut().ok_or(Error::Closed("cluster"))?;
        rebalance_pending.retain(|&b| liveness.is_live(b));
        let live = |b: u32| liveness.is_live(b);
        let mut changes = Changes::new();
        decide_all(
            registry,
            &self.config.topic_defaults,
            &mut changes,
            |state, _| match state.replicas.first() {
                Some(first) if rebalance_pending.contains(first) => {
                    election::preferred(state, &live)
                }
                _ => None,
            },
        );
        Self::commit_changes(metadata, registry, &changes)?;
        let published = self.publish(changes.values(), live);
        rebalance_pending.retain(|&b| {
            registry.topics.values().any(|meta| {
                meta.assignments
                    .iter()
                    .any(|a| a.replicas.first() == Some(&b) && a.leader != Some(b))
            })
        });
        published
    }

    /// Fences `ids`: every partition they are in the ISR of drops them
    /// (but its last member), and those they led elect a new leader; the
    /// changes are one metadata batch, then take effect.
    fn fence_brokers(&self, controller: &mut Controller, ids: &[u32]) -> Result<()> {
        let changes = self.set_fenced(controller, ids, true, |state, id, live, unclean| {
            election::on_fenced(state, id, &live, unclean)
        })?;
        let liveness = &controller.liveness;
        self.publish(changes.values(), |b| liveness.is_live(b))
    }

    /// Marks `ids` fenced (or not), with the elections `decide` makes for
    /// each of them (given a partition's state, the broker, who is live
    /// afterwards and whether unclean election is allowed): the changes are
    /// one metadata batch, then the liveness changes. Returns the changes,
    /// for the caller to publish.
    fn set_fenced(
        &self,
        controller: &mut Controller,
        ids: &[u32],
        fenced: bool,
        decide: impl Fn(&LeaderAndIsr, u32, &dyn Fn(u32) -> bool, bool) -> Option<LeaderAndIsr>,
    ) -> Result<Changes> {
        let Controller {
            metadata,
            registry,
            liveness,
            ..
        } = controller;
        let metadata = metadata.as_mut().ok_or(Error::Closed("cluster"))?;
        let mut after = liveness.clone();
        for &id in ids {
            after.set_fenced(id, fenced);
        }
        let live = |b: u32| after.is_live(b);
        let mut changes = Changes::new();
        for &id in ids {
            decide_all(
                registry,
                &self.config.topic_defaults,
                &mut changes,
                |state, unclean| decide(state, id, &live, unclean),
            );
        }
        Self::commit_changes(metadata, registry, &changes)?;
        *liveness = after;
        tracing::warn!(
            brokers = ?ids,
            partitions_changed = changes.len(),
            "brokers {}",
            if fenced { "fenced" } else { "unfenced" }
        );
        Ok(changes)
    }

    /// Unfences `ids`: leaderless partitions elect them, and (with
    /// `auto.leader.rebalance.enable`) they take back the partitions they
    /// prefer where they are in the ISR. Then each gets the current state
    /// of every partition it holds a replica of (it missed the changes
    /// made while it was fenced).
    fn unfence_brokers(&self, controller: &mut Controller, ids: &[u32]) -> Result<()> {
        let rebalance = self.config.auto_leader_rebalance_enable;
        let changes = self.set_fenced(controller, ids, false, |state, id, live, unclean| {
            election::on_unfenced(state, id, &live, unclean, rebalance)
        })?;
        let Controller {
            registry,
            liveness,
            rebalance_pending,
            ..
        } = controller;
        if rebalance {
            rebalance_pending.extend(ids);
        }
        let mut first_error = self
            .publish(changes.values(), |b| liveness.is_live(b))
            .err();
        // Catch the returning brokers up on everything else they hold.
        let mut catch_up = Vec::new();
        for meta in registry.topics.values() {
            for (p, roles) in (0..).zip(&meta.assignments) {
                if !changes.contains_key(&(meta.name.clone(), p))
                    && roles.replicas.iter().any(|b| ids.contains(b))
                {
                    catch_up.push(Decided {
                        topic_id: meta.id,
                        topic: meta.name.clone(),
                        partition: p,
                        roles: roles.clone(),
                    });
                }
            }
        }
        // Only the returning brokers need them; the others hold them.
        if let Err(e) = self.publish(&catch_up, |b| ids.contains(&b)) {
            first_error.get_or_insert(e);
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// The fault API's hooks: what a broker's process side does, as the
/// controller learns it through heartbeats.
impl ClusterInner {
    /// Sets broker `id`'s run state and wakes the controller thread.
    /// Wakes the controller thread for a liveness step now.
    fn poke_controller(&self) {
        if let Some(thread) = &*self.controller_thread.lock() {
            thread.poke();
        }
    }

    /// Broker `id` stopped cleanly: as Kafka's controlled shutdown, it is
    /// fenced (its leaderships moved, it leaves the ISRs) before this
    /// returns.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown broker; those of
    /// [`ClusterInner::liveness_tick`].
    pub(crate) fn mark_broker_stopped(&self, id: u32) -> Result<()> {
        self.fence_now(id, RunState::Stopped)
    }

    /// Broker `id`'s disk failed: as a stopped broker, it is fenced (its
    /// leaderships moved, it leaves the ISRs) before this returns.
    ///
    /// # Errors
    /// As [`ClusterInner::mark_broker_stopped`].
    pub(crate) fn mark_broker_disk_failed(&self, id: u32) -> Result<()> {
        self.fence_now(id, RunState::DiskFailed)
    }

    /// Puts broker `id` in a run state the controller fences at once, and
    /// runs the liveness step that fences it.
    fn fence_now(&self, id: u32, state: RunState) -> Result<()> {
        self.controller.lock().liveness.set_run_state(id, state)?;
        self.liveness_tick().map(drop)
    }

    /// Broker `id` crashed: its heartbeats stop, so it is fenced once its
    /// session expires. On a clock that runs by itself the controller
    /// thread is woken to wait for that expiry. On a clock that only moves
    /// by hand it is not: the expiry needs a clock move, which wakes it,
    /// and a step now could only do what is pending at a moment nobody
    /// chose (such as moving a restarted broker's preferred leaderships
    /// back under `acks=all` appends, whose retries then wait for a clock
    /// that only the test moves).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown broker.
    pub(crate) fn mark_broker_crashed(&self, id: u32) -> Result<()> {
        self.controller
            .lock()
            .liveness
            .set_run_state(id, RunState::Crashed)?;
        if self.clock().wait_hint(i64::MAX).is_some() {
            self.poke_controller();
        }
        Ok(())
    }

    /// Broker `id` runs again: it heartbeats, and is unfenced at the next
    /// liveness step, which the caller runs at once (as
    /// `Cluster::restart_broker` does). The controller thread is not woken:
    /// its own step would come at a moment nobody chose — on a manual clock,
    /// possibly after the broker is back in the ISRs, moving its preferred
    /// leaderships back (`auto.leader.rebalance.enable`) under `acks=all`
    /// appends in flight, whose retries then wait for a clock that only
    /// the test moves.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown broker.
    pub(crate) fn mark_broker_running(&self, id: u32) -> Result<()> {
        self.controller
            .lock()
            .liveness
            .set_run_state(id, RunState::Running)
    }

    /// Cuts broker `id` off from the controller (`true`: its heartbeats
    /// are lost, so it is fenced once its session expires, while it goes
    /// on running) or reconnects it (`false`: unfenced at the next step).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown broker.
    pub(crate) fn set_broker_cut_off(&self, id: u32, cut_off: bool) -> Result<()> {
        self.controller.lock().liveness.set_cut_off(id, cut_off)?;
        self.poke_controller();
        Ok(())
    }

    /// Whether the controller has fenced broker `id`.
    pub(crate) fn is_broker_fenced(&self, id: u32) -> bool {
        self.controller.lock().liveness.is_fenced(id)
    }

    /// Preferred-leader election over every partition: the first replica
    /// leads wherever it is live, in the ISR and not leading yet. Returns
    /// the partitions whose leader moved, in topic and partition order.
    ///
    /// # Errors
    /// [`Error::Closed`]; [`Error::Io`] from the metadata log (nothing
    /// moved); the first error of a broker taking its new state.
    pub(crate) fn elect_preferred_leaders(&self) -> Result<Vec<TopicPartition>> {
        self.check_open()?;
        let mut controller = self.controller.lock();
        let Controller {
            metadata,
            registry,
            liveness,
            ..
        } = &mut *controller;
        let metadata = metadata.as_mut().ok_or(Error::Closed("cluster"))?;
        let mut changes = Changes::new();
        decide_all(
            registry,
            &self.config.topic_defaults,
            &mut changes,
            |state, _| election::preferred(state, &|b| liveness.is_live(b)),
        );
        Self::commit_changes(metadata, registry, &changes)?;
        self.publish(changes.values(), |b| liveness.is_live(b))?;
        Ok(changes
            .into_keys()
            .map(|(topic, p)| TopicPartition::new(topic, p))
            .collect())
    }

    /// A leader's proposal of a new ISR for `key` (Kafka's
    /// `AlterPartition`), checked against the current state: the proposer
    /// must lead it in `leader_epoch` and hold its `partition_epoch`, and
    /// the ISR must hold the leader and only live replicas, each once. A
    /// proposal of the current ISR changes nothing. Otherwise the new state
    /// (the partition epoch bumped, the leader epoch kept) is persisted,
    /// applied to the routing table and every live replica's broker, and
    /// returned.
    ///
    /// # Errors
    /// [`Error::UnknownTopicOrPartition`]; [`Error::FencedLeaderEpoch`]
    /// for an older leader epoch, or a partition epoch other than the
    /// current one (the error then carries the partition epochs);
    /// [`Error::NotLeaderOrFollower`] if `leader` does not lead it;
    /// [`Error::InvalidArgument`] for a leader epoch the controller never
    /// gave, or an ISR that is empty, names a broker twice, a broker
    /// holding no replica or a fenced one, or lacks the leader;
    /// [`Error::Closed`]; [`Error::Io`] from the metadata log (nothing
    /// changed).
    pub(crate) fn alter_partition(
        &self,
        key: &TopicIdPartition,
        leader: u32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<u32>,
    ) -> Result<LeaderAndIsr> {
        self.check_open()?;
        let mut controller = self.controller.lock();
        let Controller {
            metadata,
            registry,
            liveness,
            ..
        } = &mut *controller;
        let metadata = metadata.as_mut().ok_or(Error::Closed("cluster"))?;
        let (topic, partition) = (key.topic.to_string(), key.partition);
        let current = registry
            .topic_by_id(&key.topic_id)
            .filter(|meta| meta.name == topic)
            .and_then(|meta| meta.assignments.get(partition as usize))
            .cloned()
            .ok_or_else(|| Error::UnknownTopicOrPartition {
                topic: topic.clone(),
                partition: Some(partition),
            })?;
        if leader_epoch < current.leader_epoch {
            return Err(Error::FencedLeaderEpoch {
                topic,
                partition,
                epoch: leader_epoch,
                current: current.leader_epoch,
            });
        }
        if current.leader != Some(leader) {
            return Err(Error::NotLeaderOrFollower {
                topic,
                partition,
                broker: leader,
            });
        }
        if leader_epoch > current.leader_epoch {
            return Err(Error::InvalidArgument(format!(
                "AlterPartition for {topic}-{partition} names leader epoch {leader_epoch}; the \
                 controller's is {}",
                current.leader_epoch
            )));
        }
        if partition_epoch != current.partition_epoch {
            return Err(Error::FencedLeaderEpoch {
                topic,
                partition,
                epoch: partition_epoch,
                current: current.partition_epoch,
            });
        }
        let distinct = isr.iter().collect::<std::collections::BTreeSet<_>>().len() == isr.len();
        let problem = if isr.is_empty() || !distinct {
            Some("it is empty or names a broker twice".to_string())
        } else if let Some(b) = isr.iter().find(|b| !current.replicas.contains(b)) {
            Some(format!("broker {b} holds no replica"))
        } else if let Some(b) = isr.iter().find(|&&b| liveness.is_fenced(b)) {
            Some(format!("broker {b} is fenced"))
        } else if !isr.contains(&leader) {
            Some(format!("it lacks the leader {leader}"))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(Error::InvalidArgument(format!(
                "AlterPartition for {topic}-{partition}: the ISR {isr:?} is refused: {problem} \
                 (replicas {:?})",
                current.replicas
            )));
        }
        if isr == current.isr {
            return Ok(current);
        }
        let next = LeaderAndIsr {
            isr,
            partition_epoch: current.partition_epoch.saturating_add(1),
            ..current
        };
        let decided = Decided {
            topic_id: key.topic_id,
            topic: topic.clone(),
            partition,
            roles: next.clone(),
        };
        let changes = Changes::from([((topic, partition), decided)]);
        Self::commit_changes(metadata, registry, &changes)?;
        self.publish(changes.values(), |b| liveness.is_live(b))?;
        // A grown ISR may complete a reassignment.
        let done = self.complete_reassignment(metadata, registry, liveness, key)?;
        Ok(done.unwrap_or(next))
    }

    /// Starts moving `tp` to the replicas `target` (the first one its
    /// preferred leader), as Kafka's online reassignment: the partition's
    /// replicas become `target` followed by the current ones it drops,
    /// the added replicas are created empty and fetch from the leader, and
    /// once every target replica is in the ISR (the leader proposes each
    /// as it catches up) the replicas become `target`: a leader outside it
    /// hands over to the first target replica, and the dropped replicas'
    /// logs are deleted. Replaces a reassignment of `tp` under way. The
    /// target is in the metadata log (`adding`/`removing` of the
    /// partition's `PartitionChange` records, carried by every later change
    /// until the switch), so a reopen resumes it; each liveness step
    /// completes those whose target replicas are all in sync.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty target, a broker named
    /// twice or not in the cluster, more than [`MAX_REPLICATION_FACTOR`]
    /// replicas, or an added broker that is fenced;
    /// [`Error::LeaderNotAvailable`] while `tp` has no leader;
    /// [`Error::UnknownTopicOrPartition`]; [`Error::Closed`];
    /// [`Error::PartitionDirConflict`] if an added broker holds a foreign
    /// directory at the partition's path; [`Error::Io`].
    pub(crate) fn reassign_partition(&self, tp: &TopicPartition, target: Vec<u32>) -> Result<()> {
        self.check_open()?;
        let mut controller = self.controller.lock();
        let Controller {
            metadata,
            registry,
            liveness,
            ..
        } = &mut *controller;
        let metadata = metadata.as_mut().ok_or(Error::Closed("cluster"))?;
        let unknown = || Error::UnknownTopicOrPartition {
            topic: tp.topic.clone(),
            partition: Some(tp.partition),
        };
        let meta = registry.topic(&tp.topic)?;
        let id = meta.id;
        let current = meta
            .assignments
            .get(tp.partition as usize)
            .cloned()
            .ok_or_else(unknown)?;
        let state = self.topic_state(&tp.topic)?;
        let distinct = target.iter().collect::<BTreeSet<_>>().len() == target.len();
        let brokers = self.brokers().len();
        let problem = if target.is_empty() || !distinct {
            Some("it is empty or names a broker twice".to_string())
        } else if target.len() > usize::from(MAX_REPLICATION_FACTOR) {
            Some(format!("more than {MAX_REPLICATION_FACTOR} replicas"))
        } else if let Some(b) = target.iter().find(|&&b| b as usize >= brokers) {
            Some(format!("the cluster has no broker {b} ({brokers} brokers)"))
        } else {
            target
                .iter()
                .find(|&&b| !current.replicas.contains(&b) && liveness.is_fenced(b))
                .map(|b| format!("broker {b} is fenced"))
        };
        if let Some(problem) = problem {
            return Err(Error::InvalidArgument(format!(
                "reassigning {}-{} to {target:?} is refused: {problem}",
                tp.topic, tp.partition
            )));
        }
        if current.leader.is_none() {
            return Err(Error::LeaderNotAvailable {
                topic: tp.topic.clone(),
                partition: tp.partition,
            });
        }
        // The brokers that get a new replica now.
        let hosting: Vec<u32> = target
            .iter()
            .copied()
            .filter(|b| !current.replicas.contains(b))
            .collect();
        for &b in &hosting {
            self.broker(b)?
                .prepare_path(&tp.topic, tp.partition, id, registry)?;
        }
        let mut replicas = target.clone();
        replicas.extend(current.replicas.iter().filter(|b| !target.contains(b)));
        let key = TopicIdPartition {
            topic_id: id,
            topic: state.name.clone(),
            partition: tp.partition,
        };
        // Adding: target replicas that were not replicas before the
        // reassignment under way, if any, began (Kafka's
        // `addingReplicas`); removing: the replicas the target drops.
        let previous = registry.reassignments.get(&(id, tp.partition)).cloned();
        let adding: Vec<u32> = target
            .iter()
            .copied()
            .filter(|b| {
                !current.replicas.contains(b)
                    || previous.as_ref().is_some_and(|p| p.adding.contains(b))
            })
            .collect();
        let moving = Reassignment::new(&replicas, target.clone(), adding);
        let moving = (!moving.adding.is_empty() || !moving.removing.is_empty()).then_some(moving);
        if replicas != current.replicas || moving != previous {
            let next = LeaderAndIsr {
                replicas,
                partition_epoch: current.partition_epoch.saturating_add(1),
                ..current
            };
            let decided = Decided {
                topic_id: id,
                topic: tp.topic.clone(),
                partition: tp.partition,
                roles: next.clone(),
            };
            Self::commit_move(metadata, registry, &decided, moving.as_ref())?;
            let changes = Changes::from([((tp.topic.clone(), tp.partition), decided)]);
            let configs = state.configs();
            let min_insync = usize::try_from(configs.effective.min_insync()).unwrap_or(usize::MAX);
            for &b in &hosting {
                self.broker(b)?.open_partition(
                    &state.name,
                    id,
                    tp.partition,
                    configs.log_config.clone(),
                    next.clone(),
                    min_insync,
                )?;
            }
            self.publish(changes.values(), |b| {
                liveness.is_live(b) && !hosting.contains(&b)
            })?;
        }
        self.complete_reassignment(metadata, registry, liveness, &key)
            .map(drop)
    }

    /// The reassignments under way: each partition's target replicas.
    pub(crate) fn partition_reassignments(&self) -> BTreeMap<TopicPartition, Vec<u32>> {
        let controller = self.controller.lock();
        let registry = &controller.registry;
        registry
            .reassignments
            .iter()
            .filter_map(|((id, p), moving)| {
                let meta = registry.topic_by_id(id)?;
                Some((
                    TopicPartition::new(meta.name.clone(), *p),
                    moving.target.clone(),
                ))
            })
            .collect()
    }

    /// Completes `key`'s reassignment if every target replica is in the
    /// ISR: the replicas become the target, the ISR keeps only target
    /// replicas, a leader outside the target hands over to the first
    /// target replica in the ISR (leader epoch + 1), and the dropped
    /// replicas are removed from their brokers with their logs. Returns
    /// the new state if it completed.
    fn complete_reassignment(
        &self,
        metadata: &mut MetadataLog,
        registry: &mut Registry,
        liveness: &Liveness,
        key: &TopicIdPartition,
    ) -> Result<Option<LeaderAndIsr>> {
        let slot = (key.topic_id, key.partition);
        let Some(target) = registry
            .reassignments
            .get(&slot)
            .map(|moving| moving.target.clone())
        else {
            return Ok(None);
        };
        // (A deleted topic's reassignment went with its records.)
        let Some(current) = registry
            .topic_by_id(&key.topic_id)
            .and_then(|meta| meta.assignments.get(key.partition as usize))
            .cloned()
        else {
            return Ok(None);
        };
        if !target.iter().all(|b| current.isr.contains(b)) {
            return Ok(None);
        }
        let isr: Vec<u32> = current
            .isr
            .iter()
            .copied()
            .filter(|b| target.contains(b))
            .collect();
        let leader = match current.leader {
            Some(l) if target.contains(&l) => Some(l),
            _ => target
                .iter()
                .copied()
                .find(|&b| isr.contains(&b) && liveness.is_live(b)),
        };
        let removed: Vec<u32> = current
            .replicas
            .iter()
            .copied()
            .filter(|b| !target.contains(b))
            .collect();
        // Also when nothing is removed (a pure addition): the change ends
        // the reassignment the metadata log holds.
        let next = LeaderAndIsr {
            leader_epoch: current
                .leader_epoch
                .saturating_add(i32::from(leader != current.leader)),
            partition_epoch: current.partition_epoch.saturating_add(1),
            replicas: target,
            leader,
            isr,
        };
        let decided = Decided {
            topic_id: key.topic_id,
            topic: key.topic.to_string(),
            partition: key.partition,
            roles: next.clone(),
        };
        Self::commit_move(metadata, registry, &decided, None)?;
        let changes = Changes::from([((key.topic.to_string(), key.partition), decided)]);
        let published = self.publish(changes.values(), |b| liveness.is_live(b));
        let mut first_error = published.err();
        for b in removed {
            // A dropped replica on a broker that is down keeps its
            // directory: its restart reports it as unknown (data is
            // deleted only on evidence a running broker acts on).
            let Some(broker) = self.running_broker(b) else {
                continue;
            };
            broker.replicas.unhost(key);
            if let Err(e) = broker.delete_partition(&key.topic, key.partition, key.topic_id) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(Some(next)), Err)
    }

    /// The controller as partition leaders see it: where they propose ISR
    /// changes. Holds the cluster weakly: after the cluster is gone every
    /// proposal fails with [`Error::Closed`].
    pub(crate) fn controller_channel(self: &Arc<Self>) -> Arc<dyn AlterPartition> {
        Arc::new(ControllerChannel {
            cluster: super::WeakCluster::new(self),
        })
    }
}

/// [`AlterPartition`] over the cluster's controller.
#[derive(Debug)]
struct ControllerChannel {
    cluster: super::WeakCluster,
}

impl AlterPartition for ControllerChannel {
    fn alter_partition(
        &self,
        key: &TopicIdPartition,
        leader: u32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<u32>,
    ) -> Result<LeaderAndIsr> {
        self.cluster
            .upgrade()
            .ok_or(Error::Closed("cluster"))?
            .alter_partition(key, leader, leader_epoch, partition_epoch, isr)
    }
}

impl Cluster {
    /// Runs preferred-leader election now (Kafka's
    /// `kafka-leader-election.sh --election-type PREFERRED`): every
    /// partition whose first replica is live, in the ISR and not leading
    /// moves its leadership there (a new leader epoch). Returns the
    /// partitions that moved. With `auto.leader.rebalance.enable` (the
    /// default) a returning broker takes back its preferred partitions by
    /// itself.
    ///
    /// # Errors
    /// [`Error::Closed`]; [`Error::Io`] if the metadata log cannot be
    /// written (no leader moved).
    pub fn elect_preferred_leaders(&self) -> Result<Vec<TopicPartition>> {
        self.inner.elect_preferred_leaders()
    }
}

#[cfg(test)]
mod tests;
