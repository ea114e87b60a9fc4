//! Transaction states as records of the internal topic
//! `__transaction_state`, in Kafka's record layout (`TransactionLogKey`
//! and `TransactionLogValue`), so Kafka's tools could read them.
//!
//! The key is version 0 (`i16`) and the transactional id (an `i16`-length
//! string); the value is version 0:
//!
//! | field | type |
//! |---|---|
//! | version | `i16` (0) |
//! | producer id | `i64` |
//! | producer epoch | `i16` |
//! | transaction timeout ms | `i32` |
//! | status | `i8`: 0 Empty, 1 Ongoing, 2 PrepareCommit, 3 PrepareAbort, 4 CompleteCommit, 5 CompleteAbort, 6 Dead, 7 PrepareEpochFence |
//! | partitions | nullable array (`i32` count, -1 null) of topic (`i16`-length string) and partition ids (`i32` count, `i32`s) |
//! | last update timestamp ms | `i64` |
//! | start timestamp ms | `i64` |
//!
//! A transactional id whose state expired is a tombstone (null value)
//! under its key. Its records go to partition
//! `abs(javaHashCode(transactional id)) % 50`
//! (`transaction.state.log.num.partitions`), as Kafka places them. Kafka
//! writes value version 1 (a flexible version with tagged fields) only for
//! its transactions version 2, which logbus does not use.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};

use byteorder::{BigEndian, ReadBytesExt, WriteBytesExt};

use super::offsets::partition_for_group;

/// Kafka's `transaction.state.log.num.partitions` default.
pub(crate) const TXN_PARTITIONS: u32 = 50;

const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 0;

/// The state of a transactional id (Kafka's `TransactionState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxnStatus {
    /// No transaction yet, or none since the last one ended.
    Empty,
    /// Partitions were added: a transaction is open.
    Ongoing,
    /// The producer asked to commit; markers are being written.
    PrepareCommit,
    /// The producer (or a timeout, or a fencing) asked to abort; markers
    /// are being written.
    PrepareAbort,
    /// Every commit marker is written.
    CompleteCommit,
    /// Every abort marker is written.
    CompleteAbort,
    /// The id expired and is being removed.
    Dead,
    /// An epoch bump is fencing an older producer.
    PrepareEpochFence,
}

impl TxnStatus {
    fn code(self) -> i8 {
        match self {
            TxnStatus::Empty => 0,
            TxnStatus::Ongoing => 1,
            TxnStatus::PrepareCommit => 2,
            TxnStatus::PrepareAbort => 3,
            TxnStatus::CompleteCommit => 4,
            TxnStatus::CompleteAbort => 5,
            TxnStatus::Dead => 6,
            TxnStatus::PrepareEpochFence => 7,
        }
    }

    fn from_code(code: i8) -> Option<Self> {
        Some(match code {
            0 => TxnStatus::Empty,
            1 => TxnStatus::Ongoing,
            2 => TxnStatus::PrepareCommit,
            3 => TxnStatus::PrepareAbort,
            4 => TxnStatus::CompleteCommit,
            5 => TxnStatus::CompleteAbort,
            6 => TxnStatus::Dead,
            7 => TxnStatus::PrepareEpochFence,
            _ => return None,
        })
    }
}

/// One transactional id's state, as a `__transaction_state` record holds
/// it (Kafka's `TxnTransitMetadata` as the log sees it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TxnLogValue {
    /// The producer id the transactional id uses.
    pub(crate) producer_id: i64,
    /// Its epoch.
    pub(crate) producer_epoch: i16,
    /// `transaction.timeout.ms`.
    pub(crate) timeout_ms: i32,
    /// The state.
    pub(crate) status: TxnStatus,
    /// The partitions of the open transaction, by topic (empty when none).
    pub(crate) partitions: BTreeMap<String, Vec<u32>>,
    /// When the state last changed.
    pub(crate) last_update_ms: i64,
    /// When the transaction started (-1 when none is open).
    pub(crate) start_ms: i64,
}

/// The partition of `__transaction_state` a transactional id's records go
/// to (Kafka's `partitionFor`: the same hash as a group's).
pub(crate) fn partition_for_transactional_id(id: &str, partitions: u32) -> u32 {
    partition_for_group(id, partitions)
}

fn put_str(out: &mut Vec<u8>, s: &str) -> Result<(), String> {
    let len = i16::try_from(s.len()).map_err(|_| format!("{} bytes is too long", s.len()))?;
    out.write_i16::<BigEndian>(len).expect("writing to a Vec");
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn get_str(cur: &mut Cursor<&[u8]>) -> std::io::Result<String> {
    let len = cur.read_i16::<BigEndian>()?;
    let len = usize::try_from(len).map_err(|_| invalid("a negative string length"))?;
    let mut buf = vec![0; len];
    cur.read_exact(&mut buf)?;
    String::from_utf8(buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// The key of `id`'s records.
///
/// # Errors
/// A reason if the id is longer than `i16::MAX` bytes.
#[cfg(test)]
pub(crate) fn encode_key(id: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(4 + id.len());
    encode_key_into(id, &mut out)?;
    Ok(out)
}

/// [`encode_key`] appended to `out` (a buffer the caller reuses).
///
/// # Errors
/// As [`encode_key`]; `out` may hold part of the key then.
pub(crate) fn encode_key_into(id: &str, out: &mut Vec<u8>) -> Result<(), String> {
    out.write_i16::<BigEndian>(KEY_VERSION).expect("vec");
    put_str(out, id).map_err(|e| format!("transactional.id: {e}"))
}

/// The transactional id a key names.
///
/// # Errors
/// A reason for another version, a short or damaged key, or trailing
/// bytes.
pub(crate) fn decode_key(bytes: &[u8]) -> Result<String, String> {
    let mut cur = Cursor::new(bytes);
    let parsed = (|| -> std::io::Result<String> {
        let version = cur.read_i16::<BigEndian>()?;
        if version != KEY_VERSION {
            return Err(invalid(&format!("key version {version}")));
        }
        get_str(&mut cur)
    })();
    match parsed {
        Ok(id) if cur.position() as usize == bytes.len() => Ok(id),
        Ok(_) => Err("trailing bytes after a transaction log key".into()),
        Err(e) => Err(format!("unreadable transaction log key: {e}")),
    }
}

/// The value of a state, version 0.
///
/// # Errors
/// A reason if a topic name is longer than `i16::MAX` bytes or a count
/// does not fit an `i32`.
#[cfg(test)]
pub(crate) fn encode_value(v: &TxnLogValue) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(64);
    let head = (v.producer_id, v.producer_epoch, v.timeout_ms, v.status);
    write_value_head(head, v.partitions.len(), &mut out)?;
    for (topic, ids) in &v.partitions {
        write_group(topic, ids, &mut out)?;
    }
    write_value_tail(v.last_update_ms, v.start_ms, &mut out);
    Ok(out)
}

/// The value of `meta`'s state, version 0, appended to `out` (a buffer
/// the caller reuses): the bytes of [`encode_value`] of
/// `meta.to_log_value()`, without building that value (a map of topics
/// and their lists of partitions) or a buffer of its own.
///
/// # Errors
/// As [`encode_value`]; `out` may hold part of the value then.
pub(crate) fn encode_metadata_into(
    meta: &super::txn_state::TxnMetadata,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    // The partitions are ordered by topic, then partition: each topic's
    // run is one group, its partitions ascending (as `to_log_value`'s
    // lists hold them).
    let parts = &meta.partitions;
    let topics = parts
        .iter()
        .zip(parts.iter().skip(1))
        .filter(|(a, b)| a.0 != b.0)
        .count()
        + usize::from(!parts.is_empty());
    let head = (meta.producer_id, meta.epoch, meta.timeout_ms, meta.status);
    write_value_head(head, topics, out)?;
    let mut iter = parts.iter().peekable();
    while let Some((topic, first)) = iter.next() {
        put_str(out, topic).map_err(|e| format!("topic: {e}"))?;
        let at = out.len();
        out.write_i32::<BigEndian>(0).expect("vec");
        let mut n = 0;
        for p in std::iter::once(first).chain(std::iter::from_fn(|| {
            iter.next_if(|(t, _)| t == topic).map(|(_, p)| p)
        })) {
            put_partition(out, *p)?;
            n += 1;
        }
        let n = count(n)?.to_be_bytes();
        out[at..at + 4].copy_from_slice(&n);
    }
    write_value_tail(meta.last_update_ms, meta.start_ms, out);
    Ok(())
}

fn count(n: usize) -> Result<i32, String> {
    i32::try_from(n).map_err(|_| format!("{n} entries are too many"))
}

/// A value's fields before its partitions (producer id, epoch, timeout,
/// status), then the count of `topics`.
fn write_value_head(
    (producer_id, epoch, timeout_ms, status): (i64, i16, i32, TxnStatus),
    topics: usize,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    out.write_i16::<BigEndian>(VALUE_VERSION).expect("vec");
    out.write_i64::<BigEndian>(producer_id).expect("vec");
    out.write_i16::<BigEndian>(epoch).expect("vec");
    out.write_i32::<BigEndian>(timeout_ms).expect("vec");
    out.write_i8(status.code()).expect("vec");
    out.write_i32::<BigEndian>(count(topics)?).expect("vec");
    Ok(())
}

/// One topic of a value's partitions.
#[cfg(test)]
fn write_group(topic: &str, ids: &[u32], out: &mut Vec<u8>) -> Result<(), String> {
    put_str(out, topic).map_err(|e| format!("topic: {e}"))?;
    out.write_i32::<BigEndian>(count(ids.len())?).expect("vec");
    for &p in ids {
        put_partition(out, p)?;
    }
    Ok(())
}

fn put_partition(out: &mut Vec<u8>, p: u32) -> Result<(), String> {
    let p = i32::try_from(p).map_err(|_| format!("partition {p} is above i32::MAX"))?;
    out.write_i32::<BigEndian>(p).expect("vec");
    Ok(())
}

/// A value's fields after its partitions.
fn write_value_tail(last_update_ms: i64, start_ms: i64, out: &mut Vec<u8>) {
    out.write_i64::<BigEndian>(last_update_ms).expect("vec");
    out.write_i64::<BigEndian>(start_ms).expect("vec");
}

/// A state from its value, version 0.
///
/// # Errors
/// A reason for another version (1 is Kafka's transactions version 2),
/// an unknown status, a negative partition, damage or trailing bytes.
pub(crate) fn decode_value(bytes: &[u8]) -> Result<TxnLogValue, String> {
    let mut cur = Cursor::new(bytes);
    let parsed = (|| -> std::io::Result<TxnLogValue> {
        let version = cur.read_i16::<BigEndian>()?;
        if version != VALUE_VERSION {
            return Err(invalid(&format!(
                "value version {version} is not supported"
            )));
        }
        let producer_id = cur.read_i64::<BigEndian>()?;
        let producer_epoch = cur.read_i16::<BigEndian>()?;
        let timeout_ms = cur.read_i32::<BigEndian>()?;
        let code = cur.read_i8()?;
        let status =
            TxnStatus::from_code(code).ok_or_else(|| invalid(&format!("status {code}")))?;
        let topics = cur.read_i32::<BigEndian>()?;
        let mut partitions = BTreeMap::new();
        // -1 is a null array: no partitions.
        for _ in 0..topics.max(0) {
            let topic = get_str(&mut cur)?;
            let n = cur.read_i32::<BigEndian>()?;
            let n = usize::try_from(n).map_err(|_| invalid("a negative partition count"))?;
            // Each id takes 4 bytes: a count beyond the bytes left is damage,
            // refused before anything is allocated for it.
            let left = bytes.len().saturating_sub(cur.position() as usize);
            if n > left / 4 {
                return Err(invalid("a partition count beyond the record"));
            }
            let mut ids = Vec::with_capacity(n);
            for _ in 0..n {
                let p = cur.read_i32::<BigEndian>()?;
                ids.push(u32::try_from(p).map_err(|_| invalid("a negative partition"))?);
            }
            partitions.insert(topic, ids);
        }
        let last_update_ms = cur.read_i64::<BigEndian>()?;
        let start_ms = cur.read_i64::<BigEndian>()?;
        Ok(TxnLogValue {
            producer_id,
            producer_epoch,
            timeout_ms,
            status,
            partitions,
            last_update_ms,
            start_ms,
        })
    })();
    match parsed {
        Ok(v) if cur.position() as usize == bytes.len() => Ok(v),
        Ok(_) => Err("trailing bytes after a transaction log value".into()),
        Err(e) => Err(format!("unreadable transaction log value: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn status() -> impl Strategy<Value = TxnStatus> {
        (0..8i8).prop_map(|c| TxnStatus::from_code(c).unwrap())
    }

    fn value() -> impl Strategy<Value = TxnLogValue> {
        (
            any::<i64>(),
            any::<i16>(),
            any::<i32>(),
            status(),
            proptest::collection::btree_map(
                "[a-z._-]{1,20}",
                proptest::collection::vec(0..=i32::MAX as u32, 0..5),
                0..4,
            ),
            any::<i64>(),
            any::<i64>(),
        )
            .prop_map(
                |(producer_id, producer_epoch, timeout_ms, status, partitions, last, start)| {
                    TxnLogValue {
                        producer_id,
                        producer_epoch,
                        timeout_ms,
                        status,
                        partitions,
                        last_update_ms: last,
                        start_ms: start,
                    }
                },
            )
    }

    #[test]
    fn kafkas_layout() {
        assert_eq!(encode_key("tx").unwrap(), [0, 0, 0, 2, b't', b'x']);
        let v = TxnLogValue {
            producer_id: 5,
            producer_epoch: 1,
            timeout_ms: 60_000,
            status: TxnStatus::Ongoing,
            partitions: BTreeMap::from([("t".to_string(), vec![0, 3])]),
            last_update_ms: 7,
            start_ms: 6,
        };
        let bytes = encode_value(&v).unwrap();
        let mut expected = vec![0, 0];
        expected.extend_from_slice(&5i64.to_be_bytes());
        expected.extend_from_slice(&1i16.to_be_bytes());
        expected.extend_from_slice(&60_000i32.to_be_bytes());
        expected.push(1);
        expected.extend_from_slice(&1i32.to_be_bytes());
        expected.extend_from_slice(&[0, 1, b't']);
        expected.extend_from_slice(&2i32.to_be_bytes());
        expected.extend_from_slice(&0i32.to_be_bytes());
        expected.extend_from_slice(&3i32.to_be_bytes());
        expected.extend_from_slice(&7i64.to_be_bytes());
        expected.extend_from_slice(&6i64.to_be_bytes());
        assert_eq!(bytes, expected);
        assert_eq!(decode_value(&bytes), Ok(v));
    }

    #[test]
    fn a_null_partition_array_is_no_partitions() {
        let v = TxnLogValue {
            producer_id: 1,
            producer_epoch: 0,
            timeout_ms: 1,
            status: TxnStatus::Empty,
            partitions: BTreeMap::new(),
            last_update_ms: 0,
            start_ms: -1,
        };
        let mut bytes = encode_value(&v).unwrap();
        // Kafka writes an empty state's partitions as null (-1).
        bytes[17..21].copy_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(decode_value(&bytes), Ok(v));
    }

    #[test]
    fn ids_go_where_kafka_puts_them() {
        // Java: Math.abs("my-txn".hashCode()) % 50.
        let h = "my-txn"
            .encode_utf16()
            .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
        let expected = h.unsigned_abs() % 50;
        assert_eq!(
            partition_for_transactional_id("my-txn", TXN_PARTITIONS),
            expected
        );
    }

    #[test]
    fn other_versions_and_damage_are_refused() {
        assert!(decode_key(&[0, 1, 0, 0]).is_err());
        assert!(decode_key(&[0, 0, 0, 3, b'a']).is_err());
        assert!(decode_key(&[0, 0, 0, 1, b'a', 0]).is_err());
        let v = TxnLogValue {
            producer_id: 1,
            producer_epoch: 0,
            timeout_ms: 1,
            status: TxnStatus::Ongoing,
            partitions: BTreeMap::from([("t".to_string(), vec![1])]),
            last_update_ms: 0,
            start_ms: 0,
        };
        let bytes = encode_value(&v).unwrap();
        let mut v1 = bytes.clone();
        v1[1] = 1;
        assert!(decode_value(&v1).unwrap_err().contains("version 1"));
        let mut bad_status = bytes.clone();
        bad_status[16] = 9;
        assert!(decode_value(&bad_status).is_err());
        let mut huge = bytes.clone();
        huge[24..28].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(decode_value(&huge).is_err());
        assert!(decode_value(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes;
        longer.push(0);
        assert!(decode_value(&longer).is_err());
    }

    proptest! {
        #[test]
        fn values_round_trip(v in value()) {
            prop_assert_eq!(decode_value(&encode_value(&v).unwrap()), Ok(v));
        }

        #[test]
        fn metadata_encodes_as_its_log_value(
            v in value(),
            parts in proptest::collection::btree_set(
                ("[a-c]{1,3}", 0..=i32::MAX as u32),
                0..8,
            ),
            prefix in proptest::collection::vec(any::<u8>(), 0..4),
        ) {
            let meta = crate::cluster::txn_state::TxnMetadata {
                producer_id: v.producer_id,
                epoch: v.producer_epoch,
                timeout_ms: v.timeout_ms,
                status: v.status,
                partitions: parts,
                start_ms: v.start_ms,
                last_update_ms: v.last_update_ms,
            };
            // Appended after what the buffer holds.
            let mut out = prefix.clone();
            encode_metadata_into(&meta, &mut out).unwrap();
            prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
            prop_assert_eq!(
                &out[prefix.len()..],
                &encode_value(&meta.to_log_value()).unwrap()[..]
            );
            let mut key = prefix.clone();
            encode_key_into("tx", &mut key).unwrap();
            prop_assert_eq!(&key[prefix.len()..], &encode_key("tx").unwrap()[..]);
        }

        #[test]
        fn keys_round_trip(id in "\\PC{0,40}") {
            prop_assert_eq!(decode_key(&encode_key(&id).unwrap()), Ok(id));
        }

        #[test]
        fn any_bytes_decode_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = decode_value(&bytes);
            let _ = decode_key(&bytes);
        }
    }
}
