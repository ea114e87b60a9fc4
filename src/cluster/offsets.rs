//! Committed offsets as records of the internal topic `__consumer_offsets`,
//! in Kafka's own record layout, so Kafka's tools could read them.
//!
//! A commit is a record whose key is `OffsetCommitKey` (key version 1, then
//! group, topic and partition) and whose value is `OffsetCommitValue`
//! version 3 (offset, leader epoch, metadata, commit timestamp); a deleted
//! group's offsets are tombstones (null values) under the same keys. A
//! group's records all go to partition `abs(javaHashCode(group)) % 50`
//! (`offsets.topic.num.partitions`), as Kafka places them.

use std::io::{Cursor, Read};

use byteorder::{BigEndian, ReadBytesExt, WriteBytesExt};

use crate::types::TopicPartition;

/// The internal topic holding committed offsets.
pub(crate) const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Kafka's `offsets.topic.num.partitions` default.
pub(crate) const OFFSETS_PARTITIONS: u32 = 50;

/// Key version of an offset commit (Kafka's `OffsetCommitKey` api key).
const KEY_VERSION: i16 = 1;
/// The value layout written (Kafka's `OffsetCommitValue` v3).
const VALUE_VERSION: i16 = 3;

/// A committed offset: Kafka's `OffsetAndMetadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetAndMetadata {
    /// The offset of the next record to consume.
    pub offset: u64,
    /// The leader epoch of the last consumed record, if known.
    pub leader_epoch: Option<i32>,
    /// Free-form text stored with the commit.
    pub metadata: String,
    /// When the commit was made (ms since the Unix epoch, the cluster's
    /// clock); set by the coordinator.
    pub commit_timestamp: i64,
}

impl OffsetAndMetadata {
    /// An offset with no metadata.
    #[must_use]
    pub fn new(offset: u64) -> Self {
        OffsetAndMetadata {
            offset,
            leader_epoch: None,
            metadata: String::new(),
            commit_timestamp: 0,
        }
    }

    /// The same offset with `metadata`.
    #[must_use]
    pub fn with_metadata(mut self, metadata: impl Into<String>) -> Self {
        self.metadata = metadata.into();
        self
    }
}

/// Java's `String.hashCode`: `h = 31 * h + c` over UTF-16 code units.
fn java_hash_code(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The `__consumer_offsets` partition of a group: Kafka's
/// `Utils.abs(groupId.hashCode()) % partitions`.
pub(crate) fn partition_for_group(group: &str, partitions: u32) -> u32 {
    let h = java_hash_code(group);
    let abs = if h == i32::MIN { 0 } else { h.unsigned_abs() };
    abs % partitions.max(1)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Callers bound every string to i16::MAX bytes.
    let len = i16::try_from(s.len()).expect("strings are checked to fit an i16 length");
    out.write_i16::<BigEndian>(len).expect("writing to a Vec");
    out.extend_from_slice(s.as_bytes());
}

fn get_str(cur: &mut Cursor<&[u8]>) -> std::io::Result<String> {
    let len = cur.read_i16::<BigEndian>()?;
    let len = usize::try_from(len)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "negative length"))?;
    let mut buf = vec![0; len];
    cur.read_exact(&mut buf)?;
    String::from_utf8(buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// The longest group id, topic or metadata string a commit can carry.
pub(crate) const MAX_STRING: usize = i16::MAX as usize;

/// Encodes the key of a commit of `group`'s offset for `tp`.
pub(crate) fn encode_key(group: &str, tp: &TopicPartition) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + group.len() + tp.topic.len());
    out.write_i16::<BigEndian>(KEY_VERSION).expect("vec");
    put_str(&mut out, group);
    put_str(&mut out, &tp.topic);
    out.write_i32::<BigEndian>(tp.partition as i32)
        .expect("vec");
    out
}

/// Encodes a commit's value.
pub(crate) fn encode_value(offset: &OffsetAndMetadata) -> Vec<u8> {
    let mut out = Vec::with_capacity(26 + offset.metadata.len());
    out.write_i16::<BigEndian>(VALUE_VERSION).expect("vec");
    out.write_i64::<BigEndian>(offset.offset as i64)
        .expect("vec");
    out.write_i32::<BigEndian>(offset.leader_epoch.unwrap_or(-1))
        .expect("vec");
    put_str(&mut out, &offset.metadata);
    out.write_i64::<BigEndian>(offset.commit_timestamp)
        .expect("vec");
    out
}

/// What a `__consumer_offsets` key holds. Group metadata keys (versions 2
/// and 3, written by Kafka's coordinator) are recognised and skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OffsetsKey {
    /// An offset commit of `group` for `partition`.
    Commit {
        group: String,
        partition: TopicPartition,
    },
    /// A key of another kind (group metadata), ignored by replay.
    Other,
}

/// Decodes a `__consumer_offsets` key.
pub(crate) fn decode_key(bytes: &[u8]) -> Result<OffsetsKey, String> {
    let mut cur = Cursor::new(bytes);
    let parsed = (|| -> std::io::Result<OffsetsKey> {
        match cur.read_i16::<BigEndian>()? {
            0 | 1 => {
                let group = get_str(&mut cur)?;
                let topic = get_str(&mut cur)?;
                let partition = cur.read_i32::<BigEndian>()?;
                let partition = u32::try_from(partition).map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "negative partition")
                })?;
                Ok(OffsetsKey::Commit {
                    group,
                    partition: TopicPartition::new(topic, partition),
                })
            }
            // Kafka's group metadata (members, generation): not kept.
            2 | 3 => Ok(OffsetsKey::Other),
            version => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("key version {version} is unknown"),
            )),
        }
    })();
    match parsed {
        Ok(OffsetsKey::Commit { .. }) if cur.position() as usize != bytes.len() => {
            Err("trailing bytes after an offset commit key".into())
        }
        Ok(key) => Ok(key),
        Err(e) => Err(format!("unreadable offset commit key: {e}")),
    }
}

/// Decodes an `OffsetCommitValue` of versions 0 to 3.
pub(crate) fn decode_value(bytes: &[u8]) -> Result<OffsetAndMetadata, String> {
    let mut cur = Cursor::new(bytes);
    let parsed = (|| -> std::io::Result<Result<OffsetAndMetadata, String>> {
        let version = cur.read_i16::<BigEndian>()?;
        if !(0..=3).contains(&version) {
            return Ok(Err(format!(
                "offset commit value version {version} is not supported"
            )));
        }
        let offset = cur.read_i64::<BigEndian>()?;
        let leader_epoch = if version >= 3 {
            Some(cur.read_i32::<BigEndian>()?).filter(|e| *e >= 0)
        } else {
            None
        };
        let metadata = get_str(&mut cur)?;
        let commit_timestamp = cur.read_i64::<BigEndian>()?;
        if version == 1 {
            cur.read_i64::<BigEndian>()?; // expireTimestamp, unused since Kafka 2.1
        }
        let Ok(offset) = u64::try_from(offset) else {
            return Ok(Err(format!("negative committed offset {offset}")));
        };
        Ok(Ok(OffsetAndMetadata {
            offset,
            leader_epoch,
            metadata,
            commit_timestamp,
        }))
    })();
    match parsed {
        Ok(Ok(v)) if cur.position() as usize == bytes.len() => Ok(v),
        Ok(Ok(_)) => Err("trailing bytes after an offset commit value".into()),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(format!("unreadable offset commit value: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_map_to_kafkas_partitions() {
        // Computed with Java's String.hashCode and Kafka's Utils.abs.
        for (group, hash, partition) in [
            ("my-group", -1_906_497_762, 12),
            ("group-1", 293_427_299, 49),
            ("", 0, 0),
            ("orders-consumers", 1_307_682_389, 39),
            ("ü-gruppe", 1_147_213_612, 12),
            (
                "a-very-long-group-name-for-hashing-purposes",
                689_085_920,
                20,
            ),
        ] {
            assert_eq!(java_hash_code(group), hash, "{group}");
            assert_eq!(partition_for_group(group, 50), partition, "{group}");
        }
    }

    #[test]
    fn keys_and_values_round_trip_and_reject_garbage() {
        let tp = TopicPartition::new("orders", 7);
        let key = encode_key("g", &tp);
        assert_eq!(
            key,
            [
                0, 1, 0, 1, b'g', 0, 6, b'o', b'r', b'd', b'e', b'r', b's', 0, 0, 0, 7
            ]
        );
        assert_eq!(
            decode_key(&key).unwrap(),
            OffsetsKey::Commit {
                group: "g".into(),
                partition: tp
            }
        );
        assert_eq!(decode_key(&[0, 2, 0, 0]).unwrap(), OffsetsKey::Other);
        assert_eq!(decode_key(&[0, 3]).unwrap(), OffsetsKey::Other);
        assert!(decode_key(&[0, 4]).unwrap_err().contains("key version 4"));
        assert!(decode_key(&[0xff, 0xff]).is_err());
        for cut in 0..key.len() {
            assert!(decode_key(&key[..cut]).is_err(), "cut at {cut}");
        }
        let value = OffsetAndMetadata {
            offset: 42,
            leader_epoch: Some(3),
            metadata: "note".into(),
            commit_timestamp: 1_700_000_000_000,
        };
        let bytes = encode_value(&value);
        assert_eq!(&bytes[..2], &[0, 3]);
        assert_eq!(decode_value(&bytes).unwrap(), value);
        for cut in 0..bytes.len() {
            assert!(decode_value(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let no_epoch = OffsetAndMetadata::new(5);
        assert_eq!(decode_value(&encode_value(&no_epoch)).unwrap(), no_epoch);
        // Version 1 carried an expire timestamp after the commit timestamp.
        let mut v1 = vec![0, 1];
        v1.extend_from_slice(&9i64.to_be_bytes());
        v1.extend_from_slice(&[0, 0]);
        v1.extend_from_slice(&1i64.to_be_bytes());
        v1.extend_from_slice(&(-1i64).to_be_bytes());
        assert_eq!(decode_value(&v1).unwrap().offset, 9);
        assert!(decode_value(&[0, 9, 0, 0]).is_err());
    }
}
