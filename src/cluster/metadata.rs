//! The controller's metadata log (`__cluster_metadata-0/`) and the topic
//! registry it replays into.
//!
//! Every change to the registry is one record batch (so a change is all or
//! nothing after a crash: a torn batch is cut by recovery) appended with an
//! fsync before the change is applied or acknowledged. Records have no key;
//! the value is `type: u8, version: u8` followed by the type's fields
//! (big-endian integers, strings as `u16` length + UTF-8). See
//! `docs/format.md`.
//!
//! The log's recovery point is kept in `<root>/recovery-point-offset-checkpoint`
//! (Kafka's checkpoint layout, one entry `__cluster_metadata 0 <offset>`),
//! rewritten after every commit and on close, so that damage to a change
//! that was acknowledged is found below the recovery point (and refused by
//! the log's recovery) instead of being cut as a torn tail.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use byteorder::{BigEndian, ReadBytesExt, WriteBytesExt};
use uuid::Uuid;

use crate::clock::Clock;
use crate::cluster::replay::replay_records;
use crate::config::{FlushPolicy, LogConfig};
use crate::error::{CorruptionKind, Error, Result};
use crate::format::{Batch, BatchBuilder};
use crate::log::{CheckpointRead, Log, OffsetCheckpoint, RecoveryReport};
use crate::replica::LeaderAndIsr;
use crate::storage::segment::{LOG_SUFFIX, parse_segment_file};
use crate::storage::{OpenMode, Storage};
use crate::types::Compression;

/// The file in the cluster's root holding the metadata log's recovery point.
pub(crate) const METADATA_CHECKPOINT: &str = "recovery-point-offset-checkpoint";
/// The metadata log's topic name in that file (Kafka's KRaft name).
const METADATA_TOPIC: &str = "__cluster_metadata";

const TOPIC: u8 = 1;
const PARTITION: u8 = 2;
const CONFIG: u8 = 3;
const REMOVE_TOPIC: u8 = 4;
const REGISTER_BROKER: u8 = 5;
const PARTITION_CHANGE: u8 = 6;
const PRODUCER_IDS: u8 = 7;
/// The version every record type is written in, except `Partition`.
const VERSION: u8 = 0;
/// `Partition` records are written in version 1 (with the ISR); version 0
/// (no ISR: the ISR is the replicas) is still read.
const PARTITION_VERSION: u8 = 1;
/// `PartitionChange` records of a partition being reassigned are written
/// in version 1 (with the adding and removing replicas); the others in
/// version 0 (no reassignment), which every version reads.
const PARTITION_CHANGE_MOVE_VERSION: u8 = 1;

/// One change to the cluster's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MetadataRecord {
    /// A topic was created with this id.
    Topic { name: String, id: Uuid },
    /// A partition exists, with its replicas (broker ids, the preferred
    /// leader first), its leader (`None`: Kafka's -1, no leader), leader
    /// epoch and in-sync replicas: in the spirit of KRaft's
    /// `PartitionRecord`.
    Partition {
        topic_id: Uuid,
        partition: u32,
        replicas: Vec<u32>,
        leader: Option<u32>,
        leader_epoch: i32,
        isr: Vec<u32>,
    },
    /// A topic config was set (`Some`) or removed (`None`).
    Config {
        topic_id: Uuid,
        key: String,
        value: Option<String>,
    },
    /// A topic was deleted.
    RemoveTopic { topic_id: Uuid },
    /// A broker joined the cluster (KRaft's `RegisterBrokerRecord`, with
    /// only the id): the cluster cannot open with fewer brokers afterwards.
    RegisterBroker { broker_id: u32 },
    /// An existing partition's whole new state (an election, an ISR
    /// change, a reassignment's steps): in the spirit of KRaft's
    /// `PartitionChangeRecord`, but carrying every field rather than only
    /// those that changed. The partition epoch must grow and the leader
    /// epoch may not go back. `adding` and `removing` (KRaft's
    /// `addingReplicas` / `removingReplicas`) are the replicas a
    /// reassignment under way adds and drops: its target is the replicas
    /// without `removing`. Both empty: no reassignment under way.
    PartitionChange {
        topic_id: Uuid,
        partition: u32,
        replicas: Vec<u32>,
        leader: Option<u32>,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<u32>,
        adding: Vec<u32>,
        removing: Vec<u32>,
    },
    /// A block of producer ids was handed to the cluster's producers (in
    /// the spirit of KRaft's `ProducerIdsRecord`): every id below
    /// `next_producer_id` may be in use, so a reopen allocates from it on
    /// and no id is ever given twice.
    ProducerIds { next_producer_id: i64 },
}

/// A reassignment under way, as the metadata log records it (the
/// `adding` and `removing` replicas of the partition's last
/// `PartitionChange`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Reassignment {
    /// The target replica list: the replicas without `removing`, in order
    /// (the first is the preferred leader).
    pub(crate) target: Vec<u32>,
    /// Target replicas that were not replicas when the reassignment began.
    pub(crate) adding: Vec<u32>,
    /// Replicas that the reassignment drops once it completes.
    pub(crate) removing: Vec<u32>,
}

impl Reassignment {
    /// The reassignment of a partition whose replicas are `replicas`
    /// towards `target` (every target replica among them), adding
    /// `adding`.
    pub(crate) fn new(replicas: &[u32], target: Vec<u32>, adding: Vec<u32>) -> Self {
        let removing = replicas
            .iter()
            .copied()
            .filter(|b| !target.contains(b))
            .collect();
        Reassignment {
            target,
            adding,
            removing,
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).expect("metadata strings are checked to fit in u16");
    out.write_u16::<BigEndian>(len).expect("writing to a Vec");
    out.extend_from_slice(s.as_bytes());
}

fn get_str(cur: &mut Cursor<&[u8]>) -> std::io::Result<String> {
    let len = cur.read_u16::<BigEndian>()?;
    let mut buf = vec![0; usize::from(len)];
    cur.read_exact(&mut buf)?;
    String::from_utf8(buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Writes a list of broker ids: `u16` count, then each `u32`.
fn put_brokers(out: &mut Vec<u8>, brokers: &[u32]) {
    let n = u16::try_from(brokers.len()).expect("at most MAX_BROKERS brokers");
    out.write_u16::<BigEndian>(n).expect("writing to a Vec");
    for b in brokers {
        out.write_u32::<BigEndian>(*b).expect("writing to a Vec");
    }
}

fn get_brokers(cur: &mut Cursor<&[u8]>) -> std::io::Result<Vec<u32>> {
    let n = cur.read_u16::<BigEndian>()?;
    let mut brokers = Vec::with_capacity(usize::from(n.min(16)));
    for _ in 0..n {
        brokers.push(cur.read_u32::<BigEndian>()?);
    }
    Ok(brokers)
}

fn get_uuid(cur: &mut Cursor<&[u8]>) -> std::io::Result<Uuid> {
    Ok(Uuid::from_u128(cur.read_u128::<BigEndian>()?))
}

impl MetadataRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        let w = &mut out;
        match self {
            MetadataRecord::Topic { name, id } => {
                w.extend_from_slice(&[TOPIC, VERSION]);
                put_str(w, name);
                w.write_u128::<BigEndian>(id.as_u128()).expect("vec");
            }
            MetadataRecord::Partition {
                topic_id,
                partition,
                replicas,
                leader,
                leader_epoch,
                isr,
            } => {
                w.extend_from_slice(&[PARTITION, PARTITION_VERSION]);
                w.write_u128::<BigEndian>(topic_id.as_u128()).expect("vec");
                w.write_u32::<BigEndian>(*partition).expect("vec");
                put_brokers(w, replicas);
                // Kafka's -1 for "no leader"; a broker id otherwise (ids are
                // below 64, so version 1's unsigned field reads the same).
                w.write_i32::<BigEndian>(leader.map_or(-1, |b| b as i32))
                    .expect("vec");
                w.write_i32::<BigEndian>(*leader_epoch).expect("vec");
                put_brokers(w, isr);
            }
            MetadataRecord::Config {
                topic_id,
                key,
                value,
            } => {
                w.extend_from_slice(&[CONFIG, VERSION]);
                w.write_u128::<BigEndian>(topic_id.as_u128()).expect("vec");
                put_str(w, key);
                match value {
                    Some(v) => {
                        w.push(1);
                        put_str(w, v);
                    }
                    None => w.push(0),
                }
            }
            MetadataRecord::RemoveTopic { topic_id } => {
                w.extend_from_slice(&[REMOVE_TOPIC, VERSION]);
                w.write_u128::<BigEndian>(topic_id.as_u128()).expect("vec");
            }
            MetadataRecord::RegisterBroker { broker_id } => {
                w.extend_from_slice(&[REGISTER_BROKER, VERSION]);
                w.write_u32::<BigEndian>(*broker_id).expect("vec");
            }
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                replicas,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
                adding,
                removing,
            } => {
                // Version 0 unless a reassignment is under way, so logs of
                // clusters that never reassign stay readable by versions
                // before it.
                let moving = !adding.is_empty() || !removing.is_empty();
                let version = if moving {
                    PARTITION_CHANGE_MOVE_VERSION
                } else {
                    VERSION
                };
                w.extend_from_slice(&[PARTITION_CHANGE, version]);
                w.write_u128::<BigEndian>(topic_id.as_u128()).expect("vec");
                w.write_u32::<BigEndian>(*partition).expect("vec");
                put_brokers(w, replicas);
                w.write_i32::<BigEndian>(leader.map_or(-1, |b| b as i32))
                    .expect("vec");
                w.write_i32::<BigEndian>(*leader_epoch).expect("vec");
                w.write_i32::<BigEndian>(*partition_epoch).expect("vec");
                put_brokers(w, isr);
                if moving {
                    put_brokers(w, adding);
                    put_brokers(w, removing);
                }
            }
            MetadataRecord::ProducerIds { next_producer_id } => {
                w.extend_from_slice(&[PRODUCER_IDS, VERSION]);
                w.write_i64::<BigEndian>(*next_producer_id).expect("vec");
            }
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        let mut cur = Cursor::new(bytes);
        let parsed = (|| -> std::io::Result<std::result::Result<Self, String>> {
            let kind = cur.read_u8()?;
            let version = cur.read_u8()?;
            let newest = match kind {
                PARTITION => PARTITION_VERSION,
                PARTITION_CHANGE => PARTITION_CHANGE_MOVE_VERSION,
                _ => VERSION,
            };
            if version > newest {
                return Ok(Err(format!(
                    "record type {kind} has version {version}; this logbus reads versions up \
                     to {newest}"
                )));
            }
            let record = match kind {
                TOPIC => MetadataRecord::Topic {
                    name: get_str(&mut cur)?,
                    id: get_uuid(&mut cur)?,
                },
                PARTITION => {
                    let topic_id = get_uuid(&mut cur)?;
                    let partition = cur.read_u32::<BigEndian>()?;
                    let replicas = get_brokers(&mut cur)?;
                    let leader = u32::try_from(cur.read_i32::<BigEndian>()?).ok();
                    let leader_epoch = cur.read_i32::<BigEndian>()?;
                    // Version 0 (one broker) has no ISR: every replica is in sync.
                    let isr = if version == 0 {
                        replicas.clone()
                    } else {
                        get_brokers(&mut cur)?
                    };
                    MetadataRecord::Partition {
                        topic_id,
                        partition,
                        replicas,
                        leader,
                        leader_epoch,
                        isr,
                    }
                }
                CONFIG => {
                    let topic_id = get_uuid(&mut cur)?;
                    let key = get_str(&mut cur)?;
                    let value = match cur.read_u8()? {
                        0 => None,
                        _ => Some(get_str(&mut cur)?),
                    };
                    MetadataRecord::Config {
                        topic_id,
                        key,
                        value,
                    }
                }
                REMOVE_TOPIC => MetadataRecord::RemoveTopic {
                    topic_id: get_uuid(&mut cur)?,
                },
                REGISTER_BROKER => MetadataRecord::RegisterBroker {
                    broker_id: cur.read_u32::<BigEndian>()?,
                },
                PARTITION_CHANGE => {
                    let topic_id = get_uuid(&mut cur)?;
                    let partition = cur.read_u32::<BigEndian>()?;
                    let replicas = get_brokers(&mut cur)?;
                    let leader = match cur.read_i32::<BigEndian>()? {
                        -1 => None,
                        id => match u32::try_from(id) {
                            Ok(id) => Some(id),
                            Err(_) => return Ok(Err(format!("leader {id} is not a broker id"))),
                        },
                    };
                    let leader_epoch = cur.read_i32::<BigEndian>()?;
                    let partition_epoch = cur.read_i32::<BigEndian>()?;
                    let isr = get_brokers(&mut cur)?;
                    // Version 0: no reassignment under way.
                    let (adding, removing) = if version == 0 {
                        (Vec::new(), Vec::new())
                    } else {
                        (get_brokers(&mut cur)?, get_brokers(&mut cur)?)
                    };
                    MetadataRecord::PartitionChange {
                        topic_id,
                        partition,
                        replicas,
                        leader,
                        leader_epoch,
                        partition_epoch,
                        isr,
                        adding,
                        removing,
                    }
                }
                PRODUCER_IDS => {
                    let next_producer_id = cur.read_i64::<BigEndian>()?;
                    if next_producer_id < 0 {
                        return Ok(Err(format!("producer id block ends at {next_producer_id}")));
                    }
                    MetadataRecord::ProducerIds { next_producer_id }
                }
                other => return Ok(Err(format!("unknown metadata record type {other}"))),
            };
            Ok(Ok(record))
        })();
        match parsed {
            Ok(Ok(record)) if cur.position() as usize == bytes.len() => Ok(record),
            Ok(Ok(_)) => Err("trailing bytes after a metadata record".to_string()),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(format!("truncated metadata record: {e}")),
        }
    }
}

impl LeaderAndIsr {
    /// The `PartitionChange` record that sets partition `partition` of
    /// topic `topic_id` to this state.
    #[cfg(test)]
    pub(crate) fn change_record(&self, topic_id: Uuid, partition: u32) -> MetadataRecord {
        self.change_record_moving(topic_id, partition, None)
    }

    /// [`LeaderAndIsr::change_record`] with the reassignment under way
    /// (`None`: none, or it ends with this change).
    pub(crate) fn change_record_moving(
        &self,
        topic_id: Uuid,
        partition: u32,
        moving: Option<&Reassignment>,
    ) -> MetadataRecord {
        MetadataRecord::PartitionChange {
            topic_id,
            partition,
            replicas: self.replicas.clone(),
            leader: self.leader,
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            isr: self.isr.clone(),
            adding: moving.map(|m| m.adding.clone()).unwrap_or_default(),
            removing: moving.map(|m| m.removing.clone()).unwrap_or_default(),
        }
    }

    /// The `Partition` record of partition `partition` of topic `topic_id`.
    pub(crate) fn record(&self, topic_id: Uuid, partition: u32) -> MetadataRecord {
        MetadataRecord::Partition {
            topic_id,
            partition,
            replicas: self.replicas.clone(),
            leader: self.leader,
            leader_epoch: self.leader_epoch,
            isr: self.isr.clone(),
        }
    }
}

/// What the registry knows of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicMeta {
    pub(crate) name: String,
    pub(crate) id: Uuid,
    pub(crate) partitions: u32,
    /// Each partition's assignment, by partition number.
    pub(crate) assignments: Vec<LeaderAndIsr>,
    pub(crate) config: BTreeMap<String, String>,
}

/// The topic registry: the state the metadata log's records add up to.
#[derive(Debug, Default, Clone)]
pub(crate) struct Registry {
    pub(crate) topics: BTreeMap<String, TopicMeta>,
    names: HashMap<Uuid, String>,
    /// Ids of deleted topics, with the name each had: the positive
    /// evidence that lets a partition directory naming one be removed.
    pub(crate) removed: BTreeMap<Uuid, String>,
    /// The brokers registered (`RegisterBroker` records).
    pub(crate) brokers: BTreeSet<u32>,
    /// The reassignments under way, by topic id and partition (the
    /// `adding`/`removing` replicas of each partition's last
    /// `PartitionChange`).
    pub(crate) reassignments: BTreeMap<(Uuid, u32), Reassignment>,
    /// The end of the last block of producer ids (`ProducerIds` records):
    /// every id below it may have been handed out.
    pub(crate) producer_ids_end: i64,
    /// The next producer id to hand out in the current block; `None`
    /// after an open (the next allocation starts a new block).
    pub(crate) next_producer_id: Option<i64>,
}

impl Registry {
    /// Applies one record; a record that does not fit the state so far is
    /// reported as a message.
    pub(crate) fn apply(&mut self, record: &MetadataRecord) -> std::result::Result<(), String> {
        match record {
            MetadataRecord::Topic { name, id } => {
                if self.topics.contains_key(name)
                    || self.names.contains_key(id)
                    || self.removed.contains_key(id)
                {
                    return Err(format!("topic {name} ({id}) created twice"));
                }
                self.names.insert(*id, name.clone());
                self.topics.insert(
                    name.clone(),
                    TopicMeta {
                        name: name.clone(),
                        id: *id,
                        partitions: 0,
                        assignments: Vec::new(),
                        config: BTreeMap::new(),
                    },
                );
            }
            MetadataRecord::Partition {
                topic_id,
                partition,
                replicas,
                leader,
                leader_epoch,
                isr,
            } => {
                let topic = self.topic_mut(topic_id)?;
                if *partition != topic.partitions {
                    return Err(format!(
                        "partition {partition} of {} out of order (has {})",
                        topic.name, topic.partitions
                    ));
                }
                let distinct: BTreeSet<&u32> = replicas.iter().collect();
                if replicas.is_empty()
                    || distinct.len() != replicas.len()
                    || leader.is_some_and(|l| !replicas.contains(&l))
                    || !isr.iter().all(|b| replicas.contains(b))
                {
                    return Err(format!(
                        "partition {partition} of {} has an impossible assignment: replicas \
                         {replicas:?}, leader {leader:?}, ISR {isr:?}",
                        topic.name
                    ));
                }
                topic.assignments.push(LeaderAndIsr {
                    replicas: replicas.clone(),
                    leader: *leader,
                    leader_epoch: *leader_epoch,
                    partition_epoch: 0,
                    isr: isr.clone(),
                });
                topic.partitions += 1;
            }
            MetadataRecord::Config {
                topic_id,
                key,
                value,
            } => {
                let topic = self.topic_mut(topic_id)?;
                match value {
                    Some(v) => topic.config.insert(key.clone(), v.clone()),
                    None => topic.config.remove(key),
                };
            }
            MetadataRecord::RemoveTopic { topic_id } => {
                let name = self
                    .names
                    .remove(topic_id)
                    .ok_or_else(|| format!("removal of unknown topic id {topic_id}"))?;
                self.topics.remove(&name);
                self.removed.insert(*topic_id, name);
                self.reassignments.retain(|(id, _), _| id != topic_id);
            }
            MetadataRecord::RegisterBroker { broker_id } => {
                self.brokers.insert(*broker_id);
            }
            MetadataRecord::ProducerIds { next_producer_id } => {
                if *next_producer_id <= self.producer_ids_end {
                    return Err(format!(
                        "producer id block ending at {next_producer_id} does not follow the \
                         one ending at {}",
                        self.producer_ids_end
                    ));
                }
                self.producer_ids_end = *next_producer_id;
            }
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                replicas,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
                adding,
                removing,
            } => {
                let topic = self.topic_mut(topic_id)?;
                let name = &topic.name;
                let Some(current) = topic.assignments.get_mut(*partition as usize) else {
                    return Err(format!(
                        "change of partition {partition} of {name}, which has {} partitions",
                        topic.partitions
                    ));
                };
                let next = LeaderAndIsr {
                    replicas: replicas.clone(),
                    leader: *leader,
                    leader_epoch: *leader_epoch,
                    partition_epoch: *partition_epoch,
                    isr: isr.clone(),
                };
                let why = impossible_change(current, &next)
                    .or_else(|| impossible_move(replicas, adding, removing));
                if let Some(why) = why {
                    return Err(format!(
                        "partition {partition} of {name} has an impossible change ({why}): \
                         replicas {replicas:?}, leader {leader:?}, leader epoch {leader_epoch}, \
                         partition epoch {partition_epoch}, ISR {isr:?} after replicas {:?}, \
                         leader {:?}, leader epoch {}, partition epoch {}, ISR {:?}",
                        current.replicas,
                        current.leader,
                        current.leader_epoch,
                        current.partition_epoch,
                        current.isr
                    ));
                }
                *current = next;
                let slot = (*topic_id, *partition);
                if adding.is_empty() && removing.is_empty() {
                    self.reassignments.remove(&slot);
                } else {
                    let target = replicas
                        .iter()
                        .copied()
                        .filter(|b| !removing.contains(b))
                        .collect();
                    self.reassignments.insert(
                        slot,
                        Reassignment {
                            target,
                            adding: adding.clone(),
                            removing: removing.clone(),
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// The topic named `name`.
    pub(crate) fn topic(&self, name: &str) -> Result<&TopicMeta> {
        self.topics
            .get(name)
            .ok_or_else(|| Error::UnknownTopicOrPartition {
                topic: name.to_string(),
                partition: None,
            })
    }

    /// The brokers the metadata knows of: those registered and those any
    /// partition's replicas name (a log from before registrations names
    /// broker 0 only there).
    pub(crate) fn known_brokers(&self) -> BTreeSet<u32> {
        let mut known = self.brokers.clone();
        for topic in self.topics.values() {
            for a in &topic.assignments {
                known.extend(a.replicas.iter().copied());
            }
        }
        known
    }

    /// The live topic with id `id`.
    pub(crate) fn topic_by_id(&self, id: &Uuid) -> Option<&TopicMeta> {
        self.names.get(id).and_then(|name| self.topics.get(name))
    }

    fn topic_mut(&mut self, id: &Uuid) -> std::result::Result<&mut TopicMeta, String> {
        let name = self
            .names
            .get(id)
            .ok_or_else(|| format!("record for unknown topic id {id}"))?;
        Ok(self
            .topics
            .get_mut(name)
            .expect("names and topics are kept in step"))
    }
}

/// Why `next` cannot follow `current` as a partition's state, if it cannot:
/// the partition epoch must grow, the leader epoch may not go back, the
/// replicas must be distinct and not empty, and the leader and every ISR
/// member (distinct, at least one) must be replicas, the leader in the ISR.
fn impossible_change(current: &LeaderAndIsr, next: &LeaderAndIsr) -> Option<&'static str> {
    let distinct = |list: &[u32]| list.iter().collect::<BTreeSet<_>>().len() == list.len();
    if next.partition_epoch <= current.partition_epoch {
        Some("the partition epoch does not grow")
    } else if next.leader_epoch < current.leader_epoch {
        Some("the leader epoch goes back")
    } else if next.replicas.is_empty() || !distinct(&next.replicas) {
        Some("no replicas, or one twice")
    } else if next.isr.is_empty() || !distinct(&next.isr) {
        Some("an empty ISR, or a member twice")
    } else if !next.isr.iter().all(|b| next.replicas.contains(b)) {
        Some("an ISR member is not a replica")
    } else if next.leader.is_some_and(|l| !next.isr.contains(&l)) {
        Some("the leader is not an in-sync replica")
    } else if next.leader != current.leader && next.leader_epoch == current.leader_epoch {
        Some("the leader changes without a new leader epoch")
    } else {
        None
    }
}

/// Why a reassignment's `adding` and `removing` replicas cannot go with
/// `replicas`, if they cannot: each must name replicas, each once, none in
/// both, and the target (the replicas without `removing`) may not be
/// empty.
fn impossible_move(replicas: &[u32], adding: &[u32], removing: &[u32]) -> Option<&'static str> {
    let distinct = |list: &[u32]| list.iter().collect::<BTreeSet<_>>().len() == list.len();
    if !distinct(adding) || !distinct(removing) {
        Some("an adding or removing replica twice")
    } else if !adding.iter().chain(removing).all(|b| replicas.contains(b)) {
        Some("an adding or removing broker is not a replica")
    } else if adding.iter().any(|b| removing.contains(b)) {
        Some("a replica both adding and removing")
    } else if !removing.is_empty() && removing.len() == replicas.len() {
        Some("every replica removing")
    } else {
        None
    }
}

/// The metadata log and the registry replayed from it.
#[derive(Debug)]
pub(crate) struct MetadataLog {
    log: Log,
    clock: Arc<dyn Clock>,
    dir: PathBuf,
    /// `<root>/recovery-point-offset-checkpoint`; `None` for a log being
    /// built aside (a rebuild), which has no recovery point to keep yet.
    checkpoint: Option<OffsetCheckpoint>,
    /// The recovery point the checkpoint file holds, if it is known to
    /// hold the latest one.
    checkpointed: Option<u64>,
}

/// The metadata log's checkpoint file in `root`.
pub(crate) fn metadata_checkpoint(storage: &Arc<dyn Storage>, root: &Path) -> OffsetCheckpoint {
    OffsetCheckpoint::with_storage(root.join(METADATA_CHECKPOINT), storage.clone())
}

/// The metadata log's recovery point from its checkpoint file in `root`:
/// `None` if the file is missing, damaged or has no entry for it (then the
/// whole log is scanned on open, as Kafka does without a checkpoint).
///
/// # Errors
/// [`Error::Io`] when the file cannot be read.
pub(crate) fn read_recovery_point(storage: &Arc<dyn Storage>, root: &Path) -> Result<Option<u64>> {
    match metadata_checkpoint(storage, root).read() {
        Ok(CheckpointRead::Present(entries)) => {
            Ok(entries.get(&(METADATA_TOPIC.to_string(), 0)).copied())
        }
        Ok(CheckpointRead::Missing) | Err(Error::Corrupt { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes the metadata log's recovery point to its checkpoint file.
pub(crate) fn write_recovery_point(
    storage: &Arc<dyn Storage>,
    root: &Path,
    offset: u64,
) -> Result<()> {
    let entries = BTreeMap::from([((METADATA_TOPIC.to_string(), 0), offset)]);
    metadata_checkpoint(storage, root).write(&entries)
}

fn metadata_log_config() -> Result<LogConfig> {
    LogConfig::builder()
        .segment_bytes(64 * 1024 * 1024)
        .segment_index_bytes(64 * 1024)
        // One batch per change: a topic with the most partitions a topic
        // may have (`MAX_PARTITIONS_PER_TOPIC`) takes ~0.5 MiB.
        .max_message_bytes(8 * 1024 * 1024)
        .retention_time(None)
        .segment_time(None)
        .flush(FlushPolicy::every_append())
        .build()
}

impl MetadataLog {
    /// Opens (or creates) the metadata log in `dir` with `recovery_point`
    /// (from [`read_recovery_point`]), replays it, and brings the
    /// checkpoint file in `root` (if given) up to date.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the log is damaged below its recovery point
    /// (the log layer refuses it) or ends below it (acknowledged changes
    /// are missing), or a record cannot be replayed; [`Error::Io`].
    pub(crate) fn open(
        dir: PathBuf,
        root: Option<&Path>,
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        recovery_point: Option<u64>,
    ) -> Result<(MetadataLog, Registry)> {
        let log = Log::builder(&dir)
            .config(metadata_log_config()?)
            .storage(storage.clone())
            .clock(clock.clone())
            .recovery_point(recovery_point.unwrap_or(0))
            .open()?;
        // A new log's first segment files: their entries must survive a
        // power loss before the first change is acknowledged.
        storage.sync_dir(&dir)?;
        if let Some(point) = recovery_point
            && log.log_end_offset() < point
        {
            let end = log.log_end_offset();
            let segment = log
                .segment_base_offsets()
                .last()
                .map_or_else(|| dir.clone(), |base| dir.join(format!("{base:020}.log")));
            drop(log);
            return Err(Error::corrupt(
                segment,
                0,
                CorruptionKind::Metadata(format!(
                    "the metadata log ends at offset {end}, below its recovery point {point}: \
                     acknowledged topic changes are missing; rebuild the registry with \
                     Cluster::rebuild_metadata"
                )),
            ));
        }
        let mut metadata = MetadataLog {
            log,
            clock,
            dir,
            checkpoint: root.map(|root| metadata_checkpoint(&storage, root)),
            checkpointed: recovery_point,
        };
        let registry = metadata.replay()?;
        metadata.write_checkpoint()?;
        Ok((metadata, registry))
    }

    fn replay(&self) -> Result<Registry> {
        let mut registry = Registry::default();
        replay_records(
            &self.dir,
            self.log.log_start_offset(),
            self.log.log_end_offset(),
            |offset| Ok(self.log.read(offset, 1 << 20)?.records().clone()),
            |_, _, value| {
                let value = value.map_or(&[][..], |v| &v[..]);
                let parsed = MetadataRecord::decode(value)?;
                registry.apply(&parsed)
            },
            None,
        )?;
        Ok(registry)
    }

    /// The offset the next change gets: 0 for an empty log.
    pub(crate) fn log_end_offset(&self) -> u64 {
        self.log.log_end_offset()
    }

    /// What recovery did when the log was opened.
    pub(crate) fn recovery_report(&self) -> &RecoveryReport {
        self.log.recovery_report()
    }

    /// Writes the log's recovery point to the checkpoint file unless it
    /// holds it already.
    fn write_checkpoint(&mut self) -> Result<()> {
        let point = self.log.recovery_point();
        let Some(checkpoint) = &self.checkpoint else {
            return Ok(());
        };
        if self.checkpointed == Some(point) {
            return Ok(());
        }
        self.checkpointed = None;
        let entries = BTreeMap::from([((METADATA_TOPIC.to_string(), 0), point)]);
        checkpoint.write(&entries)?;
        self.checkpointed = Some(point);
        Ok(())
    }

    /// Appends `records` as one batch, durably, and applies them to
    /// `registry` (which is unchanged if anything fails). Then moves the
    /// recovery point in the checkpoint file over the new batch; if that
    /// write fails the change still stands (it is in the log, fsynced) and
    /// the next commit or the close writes the checkpoint again: until
    /// then, damage to the newest batch would be cut as a torn tail rather
    /// than refused.
    pub(crate) fn commit(
        &mut self,
        registry: &mut Registry,
        records: &[MetadataRecord],
    ) -> Result<()> {
        let mut next = registry.clone();
        for record in records {
            next.apply(record).map_err(Error::Internal)?;
        }
        let now = self.clock.now_ms();
        let mut builder = BatchBuilder::new(Compression::None);
        let encoded: Vec<Vec<u8>> = records.iter().map(MetadataRecord::encode).collect();
        for value in &encoded {
            builder.append(now, None, Some(value), &[]);
        }
        let mut bytes = builder.build()?.to_vec();
        self.log.append(&mut bytes, 0)?;
        *registry = next;
        // Not fatal: see above.
        let _ = self.write_checkpoint();
        Ok(())
    }

    /// Closes the log and writes its final recovery point.
    pub(crate) fn close(mut self) -> Result<()> {
        let flushed = self.log.flush();
        let checkpointed = self.write_checkpoint();
        let closed = self.log.close();
        flushed.and(checkpointed).and(closed)
    }
}

/// What the readable prefix of a (possibly damaged) metadata log says:
/// read straight from its segment files, without opening (and so without
/// recovering) the log.
#[derive(Debug, Default)]
pub(crate) struct MetadataPrefix {
    /// The registry the readable records add up to.
    pub(crate) registry: Registry,
    /// Partition counts of every topic id ever created, removed ones too.
    pub(crate) partitions: HashMap<Uuid, u32>,
    /// Configs of every topic id ever created, removed ones too.
    pub(crate) configs: HashMap<Uuid, BTreeMap<String, String>>,
    /// Records applied.
    pub(crate) records: u64,
}

/// Reads the metadata log in `dir` from its first segment until the first
/// batch or record that cannot be read or applied. A missing directory
/// reads as empty.
pub(crate) fn read_prefix(storage: &dyn Storage, dir: &Path) -> Result<MetadataPrefix> {
    let mut prefix = MetadataPrefix::default();
    if !storage.exists(dir) {
        return Ok(prefix);
    }
    let mut segments: Vec<(u64, PathBuf)> = storage
        .list_dir(dir)?
        .into_iter()
        .filter_map(|path| parse_segment_file(&path, LOG_SUFFIX).map(|base| (base, path)))
        .collect();
    segments.sort();
    'segments: for (_, path) in segments {
        let file = storage.open(&path, OpenMode::Existing)?;
        let len = usize::try_from(file.len()?).unwrap_or(usize::MAX);
        let mut bytes = vec![0; len];
        file.read_exact_at(&mut bytes, 0)?;
        let bytes = bytes::Bytes::from(bytes);
        let mut position = 0;
        while position < bytes.len() {
            let Ok((batch, used)) = Batch::decode(&bytes.slice(position..)) else {
                break 'segments;
            };
            position += used;
            let Ok(records) = batch.records() else {
                break 'segments;
            };
            for record in records {
                let Ok(record) = record else {
                    break 'segments;
                };
                let value = record.value().map_or(&[][..], |v| &v[..]);
                let Ok(parsed) = MetadataRecord::decode(value) else {
                    break 'segments;
                };
                if prefix.registry.apply(&parsed).is_err() {
                    break 'segments;
                }
                prefix.records += 1;
                match parsed {
                    MetadataRecord::Partition { topic_id, .. } => {
                        *prefix.partitions.entry(topic_id).or_default() += 1;
                    }
                    MetadataRecord::Config {
                        topic_id,
                        key,
                        value,
                    } => {
                        let config = prefix.configs.entry(topic_id).or_default();
                        match value {
                            Some(v) => config.insert(key, v),
                            None => config.remove(&key),
                        };
                    }
                    MetadataRecord::Topic { id, .. } => {
                        prefix.configs.entry(id).or_default();
                    }
                    MetadataRecord::RemoveTopic { .. }
                    | MetadataRecord::RegisterBroker { .. }
                    | MetadataRecord::PartitionChange { .. }
                    | MetadataRecord::ProducerIds { .. } => {}
                }
            }
        }
    }
    Ok(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_is_an_error() {
        let id = Uuid::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let records = [
            MetadataRecord::Topic {
                name: "orders".into(),
                id,
            },
            MetadataRecord::Partition {
                topic_id: id,
                partition: 0,
                replicas: vec![0, 1],
                leader: Some(0),
                leader_epoch: 3,
                isr: vec![1],
            },
            MetadataRecord::RegisterBroker { broker_id: 7 },
            MetadataRecord::Config {
                topic_id: id,
                key: "retention.ms".into(),
                value: Some("1000".into()),
            },
            MetadataRecord::Config {
                topic_id: id,
                key: "retention.ms".into(),
                value: None,
            },
            MetadataRecord::RemoveTopic { topic_id: id },
            MetadataRecord::PartitionChange {
                topic_id: id,
                partition: 2,
                replicas: vec![2, 0, 1],
                leader: Some(1),
                leader_epoch: 4,
                partition_epoch: 9,
                isr: vec![1, 0],
                adding: vec![2],
                removing: vec![1],
            },
            MetadataRecord::PartitionChange {
                topic_id: id,
                partition: 0,
                replicas: vec![1],
                leader: None,
                leader_epoch: 1,
                partition_epoch: 1,
                isr: vec![1],
                adding: vec![],
                removing: vec![],
            },
            MetadataRecord::ProducerIds {
                next_producer_id: 2000,
            },
        ];
        for r in &records {
            let bytes = r.encode();
            assert_eq!(&MetadataRecord::decode(&bytes).unwrap(), r);
            for cut in 0..bytes.len() {
                assert!(MetadataRecord::decode(&bytes[..cut]).is_err());
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(MetadataRecord::decode(&longer).is_err());
        }
        assert!(MetadataRecord::decode(&[9, 0]).is_err());
        assert!(MetadataRecord::decode(&[1, 1]).is_err());
    }

    /// A `Partition` record of version 0 (written before several brokers:
    /// no ISR) still reads, with every replica in sync.
    #[test]
    fn version_0_partition_records_read_with_the_isr_as_the_replicas() {
        let id = Uuid::from_u128(42);
        let mut v0 = vec![PARTITION, 0];
        v0.extend_from_slice(&id.as_u128().to_be_bytes());
        v0.extend_from_slice(&3u32.to_be_bytes());
        v0.extend_from_slice(&1u16.to_be_bytes());
        v0.extend_from_slice(&0u32.to_be_bytes());
        v0.extend_from_slice(&0u32.to_be_bytes());
        v0.extend_from_slice(&0i32.to_be_bytes());
        assert_eq!(
            MetadataRecord::decode(&v0).unwrap(),
            MetadataRecord::Partition {
                topic_id: id,
                partition: 3,
                replicas: vec![0],
                leader: Some(0),
                leader_epoch: 0,
                isr: vec![0],
            }
        );
        // Version 1 is what is written now; version 2 is refused.
        let written = LeaderAndIsr::new(vec![2, 0]).record(id, 3).encode();
        assert_eq!(&written[..2], &[PARTITION, 1]);
        let mut v2 = written.clone();
        v2[1] = 2;
        assert!(MetadataRecord::decode(&v2).is_err());
    }

    /// A `PartitionChange` record's bytes, field by field (the layout
    /// `docs/format.md` describes), and the checks of its version and
    /// leader.
    #[test]
    fn partition_change_records_have_the_documented_layout() {
        let id = Uuid::from_u128(0xabcd);
        let record = LeaderAndIsr {
            replicas: vec![2, 0],
            leader: None,
            leader_epoch: 5,
            partition_epoch: 7,
            isr: vec![0],
        }
        .change_record(id, 3);
        let mut expected = vec![PARTITION_CHANGE, 0];
        expected.extend_from_slice(&id.as_u128().to_be_bytes());
        expected.extend_from_slice(&3u32.to_be_bytes());
        expected.extend_from_slice(&2u16.to_be_bytes());
        expected.extend_from_slice(&2u32.to_be_bytes());
        expected.extend_from_slice(&0u32.to_be_bytes());
        expected.extend_from_slice(&(-1i32).to_be_bytes());
        expected.extend_from_slice(&5i32.to_be_bytes());
        expected.extend_from_slice(&7i32.to_be_bytes());
        expected.extend_from_slice(&1u16.to_be_bytes());
        expected.extend_from_slice(&0u32.to_be_bytes());
        assert_eq!(record.encode(), expected);
        let mut bad_leader = expected.clone();
        bad_leader[32..36].copy_from_slice(&(-2i32).to_be_bytes());
        assert!(MetadataRecord::decode(&bad_leader).is_err());

        // With a reassignment under way: version 1, the adding and then
        // the removing replicas after the ISR.
        let moving = Reassignment::new(&[2, 0], vec![2], vec![2]);
        assert_eq!(moving.removing, [0]);
        let record = LeaderAndIsr {
            replicas: vec![2, 0],
            leader: None,
            leader_epoch: 5,
            partition_epoch: 7,
            isr: vec![0],
        }
        .change_record_moving(id, 3, Some(&moving));
        let mut v1 = expected.clone();
        v1[1] = 1;
        v1.extend_from_slice(&1u16.to_be_bytes());
        v1.extend_from_slice(&2u32.to_be_bytes());
        v1.extend_from_slice(&1u16.to_be_bytes());
        v1.extend_from_slice(&0u32.to_be_bytes());
        assert_eq!(record.encode(), v1);
        assert_eq!(MetadataRecord::decode(&v1), Ok(record));
        // Version 1 without its lists is truncated; version 2 is refused.
        let mut cut = expected.clone();
        cut[1] = 1;
        assert!(MetadataRecord::decode(&cut).is_err());
        let mut v2 = v1.clone();
        v2[1] = 2;
        assert!(
            MetadataRecord::decode(&v2)
                .unwrap_err()
                .contains("version 2")
        );
    }

    /// Replay keeps the reassignment a partition's last `PartitionChange`
    /// names: set by a version-1 record, kept by the next one, ended by a
    /// version-0 record (as logs written before reassignments were
    /// persisted hold only those, which still replay as they did);
    /// impossible adding/removing lists are refused and change nothing;
    /// deleting the topic forgets it.
    #[test]
    fn partition_changes_replay_the_reassignment_under_way() {
        let id = Uuid::from_u128(21);
        let mut r = Registry::default();
        r.apply(&MetadataRecord::Topic {
            name: "t".into(),
            id,
        })
        .unwrap();
        r.apply(&LeaderAndIsr::new(vec![0]).record(id, 0)).unwrap();
        let state = |replicas: Vec<u32>, pe: i32, isr: Vec<u32>| LeaderAndIsr {
            replicas,
            leader: Some(0),
            leader_epoch: 0,
            partition_epoch: pe,
            isr,
        };
        // A version-0 record, as bytes an older logbus wrote.
        let mut v0 = vec![PARTITION_CHANGE, 0];
        v0.extend_from_slice(&id.as_u128().to_be_bytes());
        v0.extend_from_slice(&0u32.to_be_bytes());
        v0.extend_from_slice(&1u16.to_be_bytes());
        v0.extend_from_slice(&0u32.to_be_bytes());
        v0.extend_from_slice(&0i32.to_be_bytes());
        v0.extend_from_slice(&0i32.to_be_bytes());
        v0.extend_from_slice(&1i32.to_be_bytes());
        v0.extend_from_slice(&1u16.to_be_bytes());
        v0.extend_from_slice(&0u32.to_be_bytes());
        r.apply(&MetadataRecord::decode(&v0).unwrap()).unwrap();
        assert_eq!(
            r.topic("t").unwrap().assignments[0],
            state(vec![0], 1, vec![0])
        );
        assert!(r.reassignments.is_empty());

        // Move [0] to [1, 2]: replicas [1, 2, 0], adding 1 and 2, removing 0.
        let moving = Reassignment::new(&[1, 2, 0], vec![1, 2], vec![1, 2]);
        r.apply(&state(vec![1, 2, 0], 2, vec![0]).change_record_moving(id, 0, Some(&moving)))
            .unwrap();
        assert_eq!(r.reassignments.get(&(id, 0)), Some(&moving));
        assert_eq!(moving.target, [1, 2]);
        // An ISR change carrying it keeps it.
        r.apply(&state(vec![1, 2, 0], 3, vec![0, 1]).change_record_moving(id, 0, Some(&moving)))
            .unwrap();
        assert_eq!(r.reassignments.get(&(id, 0)), Some(&moving));
        let impossible = [
            ("adding twice", vec![1, 1], vec![0]),
            ("not a replica", vec![3], vec![0]),
            ("both", vec![1], vec![1]),
            ("removing all", vec![], vec![1, 2, 0]),
        ];
        for (why, adding, removing) in impossible {
            let record = MetadataRecord::PartitionChange {
                topic_id: id,
                partition: 0,
                replicas: vec![1, 2, 0],
                leader: Some(0),
                leader_epoch: 0,
                partition_epoch: 4,
                isr: vec![0, 1],
                adding,
                removing,
            };
            assert!(r.apply(&record).is_err(), "{why}");
            assert_eq!(r.reassignments.get(&(id, 0)), Some(&moving), "{why}");
            assert_eq!(r.topic("t").unwrap().assignments[0].partition_epoch, 3);
        }
        // The switch: version 0 again, nothing under way.
        let done = LeaderAndIsr {
            leader: Some(1),
            leader_epoch: 1,
            ..state(vec![1, 2], 4, vec![1, 2])
        };
        let record = done.change_record(id, 0);
        assert_eq!(record.encode()[1], 0);
        r.apply(&record).unwrap();
        assert!(r.reassignments.is_empty());
        // Deleting the topic forgets a reassignment under way (here one
        // that only adds broker 0).
        let adding_0 = Reassignment::new(&[1, 2, 0], vec![1, 2, 0], vec![0]);
        let record = LeaderAndIsr {
            replicas: vec![1, 2, 0],
            partition_epoch: 5,
            ..done
        }
        .change_record_moving(id, 0, Some(&adding_0));
        r.apply(&record).unwrap();
        assert_eq!(r.reassignments.get(&(id, 0)), Some(&adding_0));
        r.apply(&MetadataRecord::RemoveTopic { topic_id: id })
            .unwrap();
        assert!(r.reassignments.is_empty());
    }

    /// Replaying `PartitionChange` records: the state replaces the
    /// partition's whole; impossible changes are refused and change
    /// nothing.
    #[test]
    fn partition_changes_replace_the_state_and_impossible_ones_are_refused() {
        let id = Uuid::from_u128(11);
        let mut r = Registry::default();
        r.apply(&MetadataRecord::Topic {
            name: "t".into(),
            id,
        })
        .unwrap();
        r.apply(&LeaderAndIsr::new(vec![0, 1, 2]).record(id, 0))
            .unwrap();
        let state = |leader: Option<u32>, le: i32, pe: i32, isr: Vec<u32>| LeaderAndIsr {
            replicas: vec![0, 1, 2],
            leader,
            leader_epoch: le,
            partition_epoch: pe,
            isr,
        };
        let moved = state(Some(1), 1, 1, vec![1, 2]);
        r.apply(&moved.change_record(id, 0)).unwrap();
        assert_eq!(r.topic("t").unwrap().assignments[0], moved);
        let refused = [
            (
                "unknown partition",
                state(Some(1), 1, 2, vec![1]).change_record(id, 1),
            ),
            (
                "unknown topic",
                state(Some(1), 1, 2, vec![1]).change_record(Uuid::from_u128(12), 0),
            ),
            (
                "same partition epoch",
                state(Some(1), 1, 1, vec![1]).change_record(id, 0),
            ),
            (
                "leader epoch back",
                state(Some(1), 0, 2, vec![1]).change_record(id, 0),
            ),
            ("leader not a replica", {
                let mut s = state(Some(3), 2, 2, vec![3]);
                s.isr = vec![1];
                s.change_record(id, 0)
            }),
            (
                "ISR member not a replica",
                state(Some(1), 1, 2, vec![1, 5]).change_record(id, 0),
            ),
            (
                "leader outside the ISR",
                state(Some(0), 2, 2, vec![1]).change_record(id, 0),
            ),
            (
                "new leader, same epoch",
                state(Some(2), 1, 2, vec![2]).change_record(id, 0),
            ),
            ("empty ISR", state(None, 2, 2, vec![]).change_record(id, 0)),
            (
                "ISR member twice",
                state(Some(1), 1, 2, vec![1, 1]).change_record(id, 0),
            ),
            ("no replicas", {
                let mut s = state(None, 2, 2, vec![1]);
                s.replicas = vec![];
                s.change_record(id, 0)
            }),
            ("replica twice", {
                let mut s = state(Some(1), 1, 2, vec![1]);
                s.replicas = vec![1, 1, 2];
                s.change_record(id, 0)
            }),
        ];
        for (what, record) in refused {
            let err = r.apply(&record).expect_err(what);
            assert!(
                err.contains("impossible change")
                    || err.contains("unknown topic id")
                    || err.contains("has 1 partitions"),
                "{what}: {err}"
            );
            assert_eq!(r.topic("t").unwrap().assignments[0], moved, "{what}");
        }
        // An ISR-only change keeps the leader epoch; leaderless is fine.
        let shrunk = state(Some(1), 1, 2, vec![1]);
        r.apply(&shrunk.change_record(id, 0)).unwrap();
        let leaderless = state(None, 2, 3, vec![1]);
        r.apply(&leaderless.change_record(id, 0)).unwrap();
        assert_eq!(r.topic("t").unwrap().assignments[0], leaderless);
    }

    #[test]
    fn known_brokers_are_the_registered_ones_and_every_replica() {
        let id = Uuid::from_u128(9);
        let mut r = Registry::default();
        assert!(r.known_brokers().is_empty());
        r.apply(&MetadataRecord::Topic {
            name: "t".into(),
            id,
        })
        .unwrap();
        r.apply(&LeaderAndIsr::new(vec![0]).record(id, 0)).unwrap();
        assert_eq!(r.known_brokers(), BTreeSet::from([0]));
        r.apply(&MetadataRecord::RegisterBroker { broker_id: 4 })
            .unwrap();
        r.apply(&LeaderAndIsr::new(vec![2, 1]).record(id, 1))
            .unwrap();
        assert_eq!(r.known_brokers(), BTreeSet::from([0, 1, 2, 4]));
        assert_eq!(r.topic("t").unwrap().assignments[1].leader, Some(2));
    }

    #[test]
    fn producer_id_blocks_only_move_forward() {
        let mut r = Registry::default();
        let block = |end| MetadataRecord::ProducerIds {
            next_producer_id: end,
        };
        r.apply(&block(1000)).unwrap();
        assert_eq!(r.producer_ids_end, 1000);
        assert!(r.apply(&block(1000)).is_err());
        assert!(r.apply(&block(500)).is_err());
        r.apply(&block(2000)).unwrap();
        assert_eq!(r.producer_ids_end, 2000);
        let mut negative = block(5).encode();
        negative[2..].copy_from_slice(&(-1i64).to_be_bytes());
        assert!(MetadataRecord::decode(&negative).is_err());
    }

    #[test]
    fn registry_rejects_records_that_do_not_fit() {
        let id = Uuid::from_u128(7);
        let mut r = Registry::default();
        let topic = MetadataRecord::Topic {
            name: "t".into(),
            id,
        };
        r.apply(&topic).unwrap();
        assert!(r.apply(&topic).is_err());
        let p1 = MetadataRecord::Partition {
            topic_id: id,
            partition: 1,
            replicas: vec![0],
            leader: Some(0),
            leader_epoch: 0,
            isr: vec![0],
        };
        assert!(r.apply(&p1).is_err(), "partition 1 before partition 0");
        let bad = |replicas: Vec<u32>, leader: u32, isr: Vec<u32>| MetadataRecord::Partition {
            topic_id: id,
            partition: 0,
            replicas,
            leader: Some(leader),
            leader_epoch: 0,
            isr,
        };
        assert!(r.apply(&bad(vec![], 0, vec![])).is_err(), "no replicas");
        assert!(r.apply(&bad(vec![1, 1], 1, vec![1])).is_err(), "twice");
        assert!(r.apply(&bad(vec![1, 2], 3, vec![1])).is_err(), "leader");
        assert!(r.apply(&bad(vec![1, 2], 1, vec![3])).is_err(), "isr");
        assert_eq!(r.topic("t").unwrap().partitions, 0);
        assert!(
            r.apply(&MetadataRecord::RemoveTopic {
                topic_id: Uuid::from_u128(8)
            })
            .is_err()
        );
    }

    proptest::proptest! {
        /// Any `PartitionChange` record (with or without a reassignment,
        /// so in version 0 or 1) decodes to itself; every cut of it, and it
        /// with a byte more, is refused.
        #[test]
        fn partition_change_records_round_trip(
            id in proptest::num::u128::ANY,
            partition in proptest::num::u32::ANY,
            replicas in proptest::collection::vec(0u32..64, 0..12),
            leader in proptest::option::of(0u32..64),
            leader_epoch in proptest::num::i32::ANY,
            partition_epoch in proptest::num::i32::ANY,
            isr in proptest::collection::vec(0u32..64, 0..12),
            adding in proptest::collection::vec(0u32..64, 0..12),
            removing in proptest::collection::vec(0u32..64, 0..12),
        ) {
            let record = MetadataRecord::PartitionChange {
                topic_id: Uuid::from_u128(id),
                partition,
                replicas,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
                adding,
                removing,
            };
            let bytes = record.encode();
            proptest::prop_assert_eq!(MetadataRecord::decode(&bytes), Ok(record));
            for cut in 0..bytes.len() {
                proptest::prop_assert!(MetadataRecord::decode(&bytes[..cut]).is_err());
            }
            let mut longer = bytes;
            longer.push(0);
            proptest::prop_assert!(MetadataRecord::decode(&longer).is_err());
        }
    }
}
