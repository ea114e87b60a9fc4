//! The controller's metadata log (`__cluster_metadata-0/`) and the topic
//! registry it replays into.
//!
//! Every change to the registry is one record batch (so a change is all or
//! nothing after a crash: a torn batch is cut by recovery) appended with an
//! fsync before the change is applied or acknowledged. Records have no key;
//! the value is `type: u8, version: u8` followed by the type's fields
//! (big-endian integers, strings as `u16` length + UTF-8). See
//! `docs/format.md`.

use std::collections::{BTreeMap, HashMap};
use std::io::{Cursor, Read};
use std::path::PathBuf;
use std::sync::Arc;

use byteorder::{BigEndian, ReadBytesExt, WriteBytesExt};
use uuid::Uuid;

use crate::clock::Clock;
use crate::cluster::replay::replay_records;
use crate::config::{FlushPolicy, LogConfig};
use crate::error::{Error, Result};
use crate::format::BatchBuilder;
use crate::log::Log;
use crate::storage::Storage;
use crate::types::Compression;

const TOPIC: u8 = 1;
const PARTITION: u8 = 2;
const CONFIG: u8 = 3;
const REMOVE_TOPIC: u8 = 4;
const VERSION: u8 = 0;

/// One change to the cluster's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MetadataRecord {
    /// A topic was created with this id.
    Topic { name: String, id: Uuid },
    /// A partition exists, with its replicas and leader (broker ids).
    Partition {
        topic_id: Uuid,
        partition: u32,
        replicas: Vec<u32>,
        leader: u32,
        leader_epoch: i32,
    },
    /// A topic config was set (`Some`) or removed (`None`).
    Config {
        topic_id: Uuid,
        key: String,
        value: Option<String>,
    },
    /// A topic was deleted.
    RemoveTopic { topic_id: Uuid },
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
            } => {
                w.extend_from_slice(&[PARTITION, VERSION]);
                w.write_u128::<BigEndian>(topic_id.as_u128()).expect("vec");
                w.write_u32::<BigEndian>(*partition).expect("vec");
                let n = u16::try_from(replicas.len()).expect("at most 10 replicas");
                w.write_u16::<BigEndian>(n).expect("vec");
                for r in replicas {
                    w.write_u32::<BigEndian>(*r).expect("vec");
                }
                w.write_u32::<BigEndian>(*leader).expect("vec");
                w.write_i32::<BigEndian>(*leader_epoch).expect("vec");
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
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        let mut cur = Cursor::new(bytes);
        let parsed = (|| -> std::io::Result<std::result::Result<Self, String>> {
            let kind = cur.read_u8()?;
            let version = cur.read_u8()?;
            if version != VERSION {
                return Ok(Err(format!(
                    "record type {kind} has version {version}; this logbus reads version {VERSION}"
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
                    let n = cur.read_u16::<BigEndian>()?;
                    let mut replicas = Vec::with_capacity(usize::from(n.min(16)));
                    for _ in 0..n {
                        replicas.push(cur.read_u32::<BigEndian>()?);
                    }
                    MetadataRecord::Partition {
                        topic_id,
                        partition,
                        replicas,
                        leader: cur.read_u32::<BigEndian>()?,
                        leader_epoch: cur.read_i32::<BigEndian>()?,
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

/// What the registry knows of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicMeta {
    pub(crate) name: String,
    pub(crate) id: Uuid,
    pub(crate) partitions: u32,
    pub(crate) config: BTreeMap<String, String>,
}

/// The topic registry: the state the metadata log's records add up to.
#[derive(Debug, Default, Clone)]
pub(crate) struct Registry {
    pub(crate) topics: BTreeMap<String, TopicMeta>,
    names: HashMap<Uuid, String>,
}

impl Registry {
    /// Applies one record; a record that does not fit the state so far is
    /// reported as a message.
    pub(crate) fn apply(&mut self, record: &MetadataRecord) -> std::result::Result<(), String> {
        match record {
            MetadataRecord::Topic { name, id } => {
                if self.topics.contains_key(name) || self.names.contains_key(id) {
                    return Err(format!("topic {name} ({id}) created twice"));
                }
                self.names.insert(*id, name.clone());
                self.topics.insert(
                    name.clone(),
                    TopicMeta {
                        name: name.clone(),
                        id: *id,
                        partitions: 0,
                        config: BTreeMap::new(),
                    },
                );
            }
            MetadataRecord::Partition {
                topic_id,
                partition,
                ..
            } => {
                let topic = self.topic_mut(topic_id)?;
                if *partition != topic.partitions {
                    return Err(format!(
                        "partition {partition} of {} out of order (has {})",
                        topic.name, topic.partitions
                    ));
                }
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

/// The metadata log and the registry replayed from it.
#[derive(Debug)]
pub(crate) struct MetadataLog {
    log: Log,
    clock: Arc<dyn Clock>,
    dir: PathBuf,
}

impl MetadataLog {
    /// Opens (or creates) the metadata log and replays it.
    pub(crate) fn open(
        dir: PathBuf,
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
    ) -> Result<(MetadataLog, Registry)> {
        let config = LogConfig::builder()
            .segment_bytes(64 * 1024 * 1024)
            .segment_index_bytes(64 * 1024)
            .retention_ms(None)
            .segment_ms(None)
            .flush(FlushPolicy::every_append())
            .build()?;
        let log = Log::builder(&dir)
            .config(config)
            .storage(storage)
            .clock(clock.clone())
            .open()?;
        let metadata = MetadataLog { log, clock, dir };
        let registry = metadata.replay()?;
        Ok((metadata, registry))
    }

    fn replay(&self) -> Result<Registry> {
        let mut registry = Registry::default();
        replay_records(
            &self.dir,
            self.log.log_start_offset(),
            self.log.log_end_offset(),
            |offset| self.log.read(offset, 1 << 20),
            |_, _, value| {
                let value = value.map_or(&[][..], |v| &v[..]);
                let parsed = MetadataRecord::decode(value)?;
                registry.apply(&parsed)
            },
        )?;
        Ok(registry)
    }

    /// Appends `records` as one batch, durably, and applies them to
    /// `registry` (which is unchanged if anything fails).
    pub(crate) fn commit(&self, registry: &mut Registry, records: &[MetadataRecord]) -> Result<()> {
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
        Ok(())
    }

    pub(crate) fn close(self) -> Result<()> {
        self.log.close()
    }
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
                leader: 0,
                leader_epoch: 3,
            },
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
            leader: 0,
            leader_epoch: 0,
        };
        assert!(r.apply(&p1).is_err(), "partition 1 before partition 0");
        assert!(
            r.apply(&MetadataRecord::RemoveTopic {
                topic_id: Uuid::from_u128(8)
            })
            .is_err()
        );
    }
}
