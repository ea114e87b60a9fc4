//! Control records: the transaction markers a transaction coordinator
//! writes to every partition a transaction touched.
//!
//! A marker is a batch of its own with the control and transactional
//! attributes set, the producer id and epoch of the transaction, no base
//! sequence (-1), and exactly one record:
//!
//! - key, 4 bytes: `version: i16` (0) and `type: i16` — 0 ABORT, 1 COMMIT
//!   (Kafka's `ControlRecordType`; its other types, 2 and up, belong to
//!   KRaft's own logs and are never transaction markers);
//! - value, 6 bytes: `version: i16` (0) and `coordinator_epoch: i32`
//!   (Kafka's `EndTransactionMarker`).
//!
//! Readers accept a larger version and read the fields they know, as
//! Kafka does; a negative version is damage.

use bytes::Bytes;

#[cfg(test)]
use super::BatchBuilder;
#[cfg(test)]
use crate::error::FormatError;
#[cfg(test)]
use crate::types::Compression;

/// The size of a control record's key.
pub(crate) const CONTROL_KEY_SIZE: usize = 4;
/// The size of an end-transaction marker's value.
pub(crate) const MARKER_VALUE_SIZE: usize = 6;

/// The outcome a transaction marker records: Kafka's `ControlRecordType`
/// COMMIT (type 1) or ABORT (type 0), the two control record types a
/// transaction coordinator writes to a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControlRecordType {
    /// The transaction was aborted: its records are skipped by
    /// read_committed readers.
    Abort,
    /// The transaction was committed.
    Commit,
}

impl ControlRecordType {
    /// Whether this is [`ControlRecordType::Commit`].
    #[must_use]
    pub fn is_commit(self) -> bool {
        self == ControlRecordType::Commit
    }
}

/// The transaction marker a control batch holds (its one record's key and
/// value), or `None` if the batch is no transaction marker (another control
/// type, Kafka's KRaft records) or does not decode.
pub(crate) fn marker_of_batch(bytes: &[u8]) -> Option<EndTxnMarker> {
    let batch = super::Batch::from_bytes(Bytes::copy_from_slice(bytes)).ok()?;
    if !batch.header().is_control() {
        return None;
    }
    let record = batch.records().ok()?.next()?.ok()?;
    decode_marker(record.key.as_deref()?, record.value.as_deref()).ok()
}

/// A control record's type (Kafka's `ControlRecordType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ControlType {
    /// The transaction was aborted (type 0).
    Abort,
    /// The transaction was committed (type 1).
    Commit,
    /// Any other type (Kafka's KRaft records: leader change, snapshot
    /// header and footer, voters); not a transaction marker.
    Other(i16),
}

impl ControlType {
    fn code(self) -> i16 {
        match self {
            ControlType::Abort => 0,
            ControlType::Commit => 1,
            ControlType::Other(code) => code,
        }
    }

    fn from_code(code: i16) -> Self {
        match code {
            0 => ControlType::Abort,
            1 => ControlType::Commit,
            other => ControlType::Other(other),
        }
    }
}

/// An end-transaction marker: the outcome of one producer's transaction
/// on one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EndTxnMarker {
    /// Whether the transaction committed (else it aborted).
    pub(crate) commit: bool,
    /// The epoch of the transaction coordinator that wrote it.
    pub(crate) coordinator_epoch: i32,
}

/// The key of a control record of type `kind`, version 0.
pub(crate) fn encode_control_key(kind: ControlType) -> [u8; CONTROL_KEY_SIZE] {
    let mut key = [0u8; CONTROL_KEY_SIZE];
    key[2..].copy_from_slice(&kind.code().to_be_bytes());
    key
}

/// The type a control record's key names.
///
/// # Errors
/// A reason if the key is shorter than 4 bytes or its version is negative.
pub(crate) fn decode_control_key(key: &[u8]) -> Result<ControlType, String> {
    if key.len() < CONTROL_KEY_SIZE {
        return Err(format!(
            "a control record key has {} bytes, at least {CONTROL_KEY_SIZE} expected",
            key.len()
        ));
    }
    let version = i16::from_be_bytes([key[0], key[1]]);
    if version < 0 {
        return Err(format!("a control record key has version {version}"));
    }
    Ok(ControlType::from_code(i16::from_be_bytes([key[2], key[3]])))
}

/// The value of an end-transaction marker, version 0.
pub(crate) fn encode_marker_value(coordinator_epoch: i32) -> [u8; MARKER_VALUE_SIZE] {
    let mut value = [0u8; MARKER_VALUE_SIZE];
    value[2..].copy_from_slice(&coordinator_epoch.to_be_bytes());
    value
}

/// Reads an end-transaction marker from a control record's key and value.
///
/// # Errors
/// A reason if the key is not a COMMIT or ABORT key, or the value is
/// missing, shorter than 6 bytes or of a negative version.
pub(crate) fn decode_marker(key: &[u8], value: Option<&[u8]>) -> Result<EndTxnMarker, String> {
    let commit = match decode_control_key(key)? {
        ControlType::Commit => true,
        ControlType::Abort => false,
        ControlType::Other(code) => {
            return Err(format!(
                "control record type {code} is not a transaction marker"
            ));
        }
    };
    let value = value.ok_or("a transaction marker has no value")?;
    if value.len() < MARKER_VALUE_SIZE {
        return Err(format!(
            "a transaction marker value has {} bytes, at least {MARKER_VALUE_SIZE} expected",
            value.len()
        ));
    }
    let version = i16::from_be_bytes([value[0], value[1]]);
    if version < 0 {
        return Err(format!("a transaction marker value has version {version}"));
    }
    let coordinator_epoch = i32::from_be_bytes([value[2], value[3], value[4], value[5]]);
    Ok(EndTxnMarker {
        commit,
        coordinator_epoch,
    })
}

/// The batch carrying one end-transaction marker for producer
/// `producer_id` at `producer_epoch`, stamped `timestamp` (offsets and the
/// leader epoch are assigned at the append).
///
/// The reference encoding [`marker_batch_array`] is checked against.
///
/// # Errors
/// Those of [`BatchBuilder::build`] (none for one small record).
#[cfg(test)]
pub(crate) fn marker_batch(
    producer_id: i64,
    producer_epoch: i16,
    marker: EndTxnMarker,
    timestamp: i64,
) -> Result<Bytes, FormatError> {
    let kind = if marker.commit {
        ControlType::Commit
    } else {
        ControlType::Abort
    };
    let mut builder = BatchBuilder::new(Compression::None)
        .producer(producer_id, producer_epoch, -1)
        .transactional(true)
        .control(true);
    builder.append(
        timestamp,
        Some(&encode_control_key(kind)),
        Some(&encode_marker_value(marker.coordinator_epoch)),
        &[],
    );
    builder.build()
}

/// The size of a transaction marker batch: the 61-byte batch header and
/// one 17-byte record (its length, attributes, timestamp and offset
/// deltas, a 4-byte key, a 6-byte value, no headers).
pub(crate) const MARKER_BATCH_SIZE: usize = super::RECORDS_OFFSET + MARKER_RECORD_SIZE;

/// The size of a marker's one record, its length varint included.
const MARKER_RECORD_SIZE: usize = 1 + MARKER_RECORD_BODY;

/// The marker record's body: attributes (1), timestamp delta (1), offset
/// delta (1), key length (1), key, value length (1), value, header count
/// (1).
const MARKER_RECORD_BODY: usize = 5 + CONTROL_KEY_SIZE + 1 + MARKER_VALUE_SIZE;

/// [`marker_batch`] written into a fixed-size array (a marker's size never
/// varies): the same bytes, with nothing allocated, for the log to stamp
/// with its offset and leader epoch and write (a transaction's COMMIT
/// markers are written one per partition per transaction).
pub(crate) fn marker_batch_array(
    producer_id: i64,
    producer_epoch: i16,
    marker: EndTxnMarker,
    timestamp: i64,
) -> [u8; MARKER_BATCH_SIZE] {
    use super::{
        ATTRIBUTES_OFFSET, BASE_SEQUENCE_OFFSET, BASE_TIMESTAMP_OFFSET, BATCH_LENGTH_OFFSET,
        CONTROL_FLAG_MASK, CRC_OFFSET, LAST_OFFSET_DELTA_OFFSET, LOG_OVERHEAD, MAGIC_OFFSET,
        MAGIC_V2, MAX_TIMESTAMP_OFFSET, NO_PARTITION_LEADER_EPOCH, NO_SEQUENCE,
        PARTITION_LEADER_EPOCH_OFFSET, PRODUCER_EPOCH_OFFSET, PRODUCER_ID_OFFSET,
        RECORDS_COUNT_OFFSET, RECORDS_OFFSET, TRANSACTIONAL_FLAG_MASK, compute_crc,
    };
    let kind = if marker.commit {
        ControlType::Commit
    } else {
        ControlType::Abort
    };
    let mut out = [0u8; MARKER_BATCH_SIZE];
    let put = |out: &mut [u8; MARKER_BATCH_SIZE], at: usize, bytes: &[u8]| {
        out[at..at + bytes.len()].copy_from_slice(bytes);
    };
    // The header; the base offset stays 0 (the append assigns it).
    put(
        &mut out,
        BATCH_LENGTH_OFFSET,
        &((MARKER_BATCH_SIZE - LOG_OVERHEAD) as i32).to_be_bytes(),
    );
    put(
        &mut out,
        PARTITION_LEADER_EPOCH_OFFSET,
        &NO_PARTITION_LEADER_EPOCH.to_be_bytes(),
    );
    out[MAGIC_OFFSET] = MAGIC_V2 as u8;
    put(
        &mut out,
        ATTRIBUTES_OFFSET,
        &(TRANSACTIONAL_FLAG_MASK | CONTROL_FLAG_MASK).to_be_bytes(),
    );
    put(&mut out, LAST_OFFSET_DELTA_OFFSET, &0i32.to_be_bytes());
    put(&mut out, BASE_TIMESTAMP_OFFSET, &timestamp.to_be_bytes());
    put(&mut out, MAX_TIMESTAMP_OFFSET, &timestamp.to_be_bytes());
    put(&mut out, PRODUCER_ID_OFFSET, &producer_id.to_be_bytes());
    put(
        &mut out,
        PRODUCER_EPOCH_OFFSET,
        &producer_epoch.to_be_bytes(),
    );
    put(&mut out, BASE_SEQUENCE_OFFSET, &NO_SEQUENCE.to_be_bytes());
    put(&mut out, RECORDS_COUNT_OFFSET, &1i32.to_be_bytes());
    // The record; its varints are zigzag-encoded and each fits one byte.
    let zigzag = |n: usize| (n as u8) << 1;
    let mut at = RECORDS_OFFSET;
    for byte in [
        zigzag(MARKER_RECORD_BODY),
        0,
        0,
        0,
        zigzag(CONTROL_KEY_SIZE),
    ] {
        out[at] = byte;
        at += 1;
    }
    put(&mut out, at, &encode_control_key(kind));
    at += CONTROL_KEY_SIZE;
    out[at] = zigzag(MARKER_VALUE_SIZE);
    at += 1;
    put(&mut out, at, &encode_marker_value(marker.coordinator_epoch));
    at += MARKER_VALUE_SIZE;
    out[at] = 0; // no headers
    debug_assert_eq!(at + 1, MARKER_BATCH_SIZE);
    let crc = compute_crc(&out);
    put(&mut out, CRC_OFFSET, &crc.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::format::Batch;

    #[test]
    fn kafkas_marker_bytes() {
        // Kafka's ControlRecordType.COMMIT key (version 0, type 1) and an
        // EndTransactionMarker value (version 0, coordinator epoch 5).
        assert_eq!(encode_control_key(ControlType::Commit), [0, 0, 0, 1]);
        assert_eq!(encode_control_key(ControlType::Abort), [0, 0, 0, 0]);
        assert_eq!(encode_marker_value(5), [0, 0, 0, 0, 0, 5]);
        // Kafka's LEADER_CHANGE (2) is a control record, not a marker.
        assert_eq!(decode_control_key(&[0, 0, 0, 2]), Ok(ControlType::Other(2)));
        assert!(decode_marker(&[0, 0, 0, 2], Some(&[0; 6])).is_err());
    }

    #[test]
    fn damaged_keys_and_values_are_refused() {
        assert!(decode_control_key(&[0, 0, 1]).is_err());
        assert!(decode_control_key(&[0xff, 0xff, 0, 1]).is_err());
        assert!(decode_marker(&[0, 0, 0, 1], None).is_err());
        assert!(decode_marker(&[0, 0, 0, 1], Some(&[0, 0, 0, 0, 1])).is_err());
        assert!(decode_marker(&[0, 0, 0, 1], Some(&[0x80, 0, 0, 0, 0, 1])).is_err());
        // A newer version is read as far as version 0 goes, as Kafka does.
        assert_eq!(
            decode_marker(&[0, 1, 0, 0, 9], Some(&[0, 3, 0, 0, 0, 7, 42])),
            Ok(EndTxnMarker {
                commit: false,
                coordinator_epoch: 7
            })
        );
    }

    #[test]
    fn a_marker_batch_is_one_transactional_control_record() {
        let marker = EndTxnMarker {
            commit: true,
            coordinator_epoch: 3,
        };
        let bytes = marker_batch(17, 2, marker, 1_000).unwrap();
        let batch = Batch::from_bytes(bytes).unwrap();
        let h = batch.header();
        assert!(h.is_control() && h.is_transactional());
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (17, 2, -1)
        );
        let records: Vec<_> = batch.records().unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!(
            decode_marker(r.key.as_deref().unwrap(), r.value.as_deref()),
            Ok(marker)
        );
    }

    proptest! {
        #[test]
        fn markers_round_trip(commit: bool, coordinator_epoch: i32) {
            let kind = if commit { ControlType::Commit } else { ControlType::Abort };
            let key = encode_control_key(kind);
            let value = encode_marker_value(coordinator_epoch);
            prop_assert_eq!(
                decode_marker(&key, Some(&value)),
                Ok(EndTxnMarker { commit, coordinator_epoch })
            );
        }

        #[test]
        fn the_marker_array_is_the_builders_batch(
            producer_id in 0i64..=i64::MAX,
            producer_epoch in 0i16..=i16::MAX,
            commit: bool,
            coordinator_epoch: i32,
            timestamp: i64,
        ) {
            let marker = EndTxnMarker { commit, coordinator_epoch };
            let built = marker_batch(producer_id, producer_epoch, marker, timestamp).unwrap();
            let array = marker_batch_array(producer_id, producer_epoch, marker, timestamp);
            prop_assert_eq!(&built[..], &array[..]);
        }

        #[test]
        fn any_bytes_decode_or_are_refused(key: Vec<u8>, value: Option<Vec<u8>>) {
            // Never a panic; a result either way.
            let _ = decode_marker(&key, value.as_deref());
            let _ = decode_control_key(&key);
        }
    }
}
