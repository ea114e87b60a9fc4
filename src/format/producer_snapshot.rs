//! Producer state snapshots (`<offset>.snapshot` in a partition's
//! directory): the idempotent producers' state as of an offset, so an
//! open rebuilds it from the newest snapshot plus the log after it instead
//! of the whole log. Kafka's `ProducerStateManager` layout, version 1,
//! big-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 0..2 | `version: i16` (1) |
//! | 2..6 | `crc: u32`: CRC-32C of every byte from 6 to the end |
//! | 6..10 | `count: i32`: the number of entries |
//! | then | `count` entries of 46 bytes each |
//!
//! An entry:
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | `producer_id: i64` |
//! | 8..10 | `epoch: i16` |
//! | 10..14 | `last_sequence: i32` (-1 with no batch) |
//! | 14..22 | `last_offset: i64`: the last data offset (-1 with no batch) |
//! | 22..26 | `offset_delta: i32`: last minus first offset of that batch |
//! | 26..34 | `timestamp: i64`: its max timestamp |
//! | 34..38 | `coordinator_epoch: i32` (-1 before any marker) |
//! | 38..46 | `current_txn_first_offset: i64` (-1 with no open transaction) |

/// The version this codec writes and the only one it reads (Kafka's
/// `PRODUCER_SNAPSHOT_VERSION`).
pub(crate) const SNAPSHOT_VERSION: i16 = 1;
/// The size of the header: version, CRC and entry count.
pub(crate) const SNAPSHOT_HEADER_SIZE: usize = 10;
/// The size of one entry.
pub(crate) const SNAPSHOT_ENTRY_SIZE: usize = 46;
/// Where the bytes the CRC covers begin.
const CRC_START: usize = 6;

/// A producer's last written batch, as a snapshot records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SnapshotBatch {
    /// The sequence number of its last record.
    pub(crate) last_sequence: i32,
    /// The offset of its last record (non-negative).
    pub(crate) last_offset: i64,
    /// Its last offset minus its first.
    pub(crate) offset_delta: i32,
}

/// One producer's state in a snapshot (Kafka's `ProducerStateEntry`, as
/// far as snapshots keep it: only the last batch, not the last five).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SnapshotEntry {
    /// The producer id.
    pub(crate) producer_id: i64,
    /// Its current epoch.
    pub(crate) epoch: i16,
    /// Its last data batch; `None` if only a marker of it is in the log.
    pub(crate) last_batch: Option<SnapshotBatch>,
    /// The max timestamp of its last write.
    pub(crate) timestamp: i64,
    /// The coordinator epoch of its last marker (-1 before any).
    pub(crate) coordinator_epoch: i32,
    /// The first offset of its open transaction, if one is open.
    pub(crate) current_txn_first_offset: Option<i64>,
}

/// A snapshot file's bytes.
pub(crate) fn encode_snapshot(entries: &[SnapshotEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER_SIZE + entries.len() * SNAPSHOT_ENTRY_SIZE);
    out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    let count = i32::try_from(entries.len()).expect("fewer than 2^31 producers");
    out.extend_from_slice(&count.to_be_bytes());
    for e in entries {
        let (last_sequence, last_offset, offset_delta) = match e.last_batch {
            Some(b) => (b.last_sequence, b.last_offset, b.offset_delta),
            None => (-1, -1, 0),
        };
        out.extend_from_slice(&e.producer_id.to_be_bytes());
        out.extend_from_slice(&e.epoch.to_be_bytes());
        out.extend_from_slice(&last_sequence.to_be_bytes());
        out.extend_from_slice(&last_offset.to_be_bytes());
        out.extend_from_slice(&offset_delta.to_be_bytes());
        out.extend_from_slice(&e.timestamp.to_be_bytes());
        out.extend_from_slice(&e.coordinator_epoch.to_be_bytes());
        out.extend_from_slice(&e.current_txn_first_offset.unwrap_or(-1).to_be_bytes());
    }
    let crc = crate::format::header::crc32c(&out[CRC_START..]);
    out[2..CRC_START].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Reads a snapshot file's bytes. Kafka discards a snapshot it cannot
/// read and rebuilds the state from the log; so will the caller.
///
/// # Errors
/// A reason for a short file, an unknown version, a CRC mismatch, a
/// negative count or a length that does not match it.
pub(crate) fn decode_snapshot(bytes: &[u8]) -> Result<Vec<SnapshotEntry>, String> {
    if bytes.len() < SNAPSHOT_HEADER_SIZE {
        return Err(format!(
            "a producer snapshot of {} bytes is shorter than its {SNAPSHOT_HEADER_SIZE}-byte header",
            bytes.len()
        ));
    }
    let version = i16::from_be_bytes([bytes[0], bytes[1]]);
    if version != SNAPSHOT_VERSION {
        return Err(format!("a producer snapshot has version {version}"));
    }
    let stored = u32::from_be_bytes(bytes[2..CRC_START].try_into().expect("four bytes"));
    let computed = crate::format::header::crc32c(&bytes[CRC_START..]);
    if stored != computed {
        return Err(format!(
            "a producer snapshot's CRC is {stored:#010x}, its bytes give {computed:#010x}"
        ));
    }
    let count = i32::from_be_bytes(bytes[6..10].try_into().expect("four bytes"));
    let count = usize::try_from(count)
        .map_err(|_| format!("a producer snapshot counts {count} entries"))?;
    let body = &bytes[SNAPSHOT_HEADER_SIZE..];
    if Some(body.len()) != count.checked_mul(SNAPSHOT_ENTRY_SIZE) {
        return Err(format!(
            "a producer snapshot counts {count} entries in {} bytes",
            body.len()
        ));
    }
    Ok(body
        .chunks_exact(SNAPSHOT_ENTRY_SIZE)
        .map(decode_entry)
        .collect())
}

fn decode_entry(e: &[u8]) -> SnapshotEntry {
    let long = |at: usize| i64::from_be_bytes(e[at..at + 8].try_into().expect("eight bytes"));
    let int = |at: usize| i32::from_be_bytes(e[at..at + 4].try_into().expect("four bytes"));
    let last_offset = long(14);
    // As Kafka reads it: a batch only where the offset is one.
    let last_batch = (last_offset >= 0).then(|| SnapshotBatch {
        last_sequence: int(10),
        last_offset,
        offset_delta: int(22),
    });
    let current = long(38);
    SnapshotEntry {
        producer_id: long(0),
        epoch: i16::from_be_bytes([e[8], e[9]]),
        last_batch,
        timestamp: long(26),
        coordinator_epoch: int(34),
        current_txn_first_offset: (current >= 0).then_some(current),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn entry() -> impl Strategy<Value = SnapshotEntry> {
        let batch = (any::<i32>(), 0..i64::MAX, any::<i32>()).prop_map(
            |(last_sequence, last_offset, offset_delta)| SnapshotBatch {
                last_sequence,
                last_offset,
                offset_delta,
            },
        );
        (
            any::<i64>(),
            any::<i16>(),
            proptest::option::of(batch),
            any::<i64>(),
            any::<i32>(),
            proptest::option::of(0..i64::MAX),
        )
            .prop_map(
                |(producer_id, epoch, last_batch, timestamp, coordinator_epoch, current)| {
                    SnapshotEntry {
                        producer_id,
                        epoch,
                        last_batch,
                        timestamp,
                        coordinator_epoch,
                        current_txn_first_offset: current,
                    }
                },
            )
    }

    #[test]
    fn kafkas_layout() {
        let e = SnapshotEntry {
            producer_id: 7,
            epoch: 2,
            last_batch: Some(SnapshotBatch {
                last_sequence: 9,
                last_offset: 100,
                offset_delta: 4,
            }),
            timestamp: 1_000,
            coordinator_epoch: -1,
            current_txn_first_offset: None,
        };
        let bytes = encode_snapshot(&[e]);
        assert_eq!(bytes.len(), SNAPSHOT_HEADER_SIZE + SNAPSHOT_ENTRY_SIZE);
        assert_eq!(&bytes[..2], &[0, 1]);
        assert_eq!(&bytes[6..10], &[0, 0, 0, 1]);
        let entry = &bytes[SNAPSHOT_HEADER_SIZE..];
        assert_eq!(&entry[..8], &7i64.to_be_bytes());
        assert_eq!(&entry[8..10], &2i16.to_be_bytes());
        assert_eq!(&entry[10..14], &9i32.to_be_bytes());
        assert_eq!(&entry[14..22], &100i64.to_be_bytes());
        assert_eq!(&entry[22..26], &4i32.to_be_bytes());
        assert_eq!(&entry[26..34], &1_000i64.to_be_bytes());
        assert_eq!(&entry[34..38], &(-1i32).to_be_bytes());
        assert_eq!(&entry[38..46], &(-1i64).to_be_bytes());
        assert_eq!(decode_snapshot(&bytes), Ok(vec![e]));
        // An empty snapshot: header only, count 0.
        assert_eq!(decode_snapshot(&encode_snapshot(&[])), Ok(vec![]));
    }

    #[test]
    fn a_producer_with_only_a_marker_has_no_batch() {
        let e = SnapshotEntry {
            producer_id: 1,
            epoch: 0,
            last_batch: None,
            timestamp: 5,
            coordinator_epoch: 3,
            current_txn_first_offset: None,
        };
        let bytes = encode_snapshot(&[e]);
        let entry = &bytes[SNAPSHOT_HEADER_SIZE..];
        assert_eq!(&entry[10..14], &(-1i32).to_be_bytes());
        assert_eq!(&entry[14..22], &(-1i64).to_be_bytes());
        assert_eq!(decode_snapshot(&bytes), Ok(vec![e]));
    }

    proptest! {
        #[test]
        fn snapshots_round_trip(entries in proptest::collection::vec(entry(), 0..20)) {
            prop_assert_eq!(decode_snapshot(&encode_snapshot(&entries)), Ok(entries));
        }

        #[test]
        fn any_changed_byte_or_length_is_refused(
            entries in proptest::collection::vec(entry(), 1..5),
            at: usize,
            flip in 1..=255u8,
            cut in 1..50usize,
        ) {
            let bytes = encode_snapshot(&entries);
            let mut flipped = bytes.clone();
            let at = at % flipped.len();
            flipped[at] ^= flip;
            prop_assert!(decode_snapshot(&flipped).is_err());
            let cut = cut.min(bytes.len());
            prop_assert!(decode_snapshot(&bytes[..bytes.len() - cut]).is_err());
            let mut longer = bytes;
            longer.push(0);
            prop_assert!(decode_snapshot(&longer).is_err());
        }
    }
}
