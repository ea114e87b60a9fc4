//! The aborted-transaction index (`<base offset>.txnindex`, one per
//! segment): Kafka's `AbortedTxn` entries laid end to end, one per
//! transaction whose ABORT marker lies in the segment, in marker order.
//!
//! Each entry is 34 bytes, big-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 0..2 | `version: i16` (0) |
//! | 2..10 | `producer_id: i64` |
//! | 10..18 | `first_offset: i64`: the transaction's first offset in this partition |
//! | 18..26 | `last_offset: i64`: the offset of its ABORT marker |
//! | 26..34 | `last_stable_offset: i64`: the partition's LSO once the marker was written |
//!
//! A read_committed fetch asks the index for the aborted transactions that
//! overlap the range it returns, and skips their producer's records from
//! `first_offset` on.

/// The size of one entry.
pub(crate) const ABORTED_TXN_SIZE: usize = 34;

/// One aborted transaction (Kafka's `AbortedTxn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AbortedTxn {
    /// The transaction's producer id.
    pub(crate) producer_id: i64,
    /// Its first offset in the partition.
    pub(crate) first_offset: i64,
    /// The offset of its ABORT marker.
    pub(crate) last_offset: i64,
    /// The partition's last stable offset after the marker.
    pub(crate) last_stable_offset: i64,
}

impl AbortedTxn {
    /// The entry's bytes, version 0.
    pub(crate) fn encode(&self) -> [u8; ABORTED_TXN_SIZE] {
        let mut out = [0u8; ABORTED_TXN_SIZE];
        out[2..10].copy_from_slice(&self.producer_id.to_be_bytes());
        out[10..18].copy_from_slice(&self.first_offset.to_be_bytes());
        out[18..26].copy_from_slice(&self.last_offset.to_be_bytes());
        out[26..34].copy_from_slice(&self.last_stable_offset.to_be_bytes());
        out
    }

    /// Reads one entry.
    ///
    /// # Errors
    /// A reason for a version other than 0 (Kafka refuses a newer one) or
    /// impossible offsets (negative, or a first offset after the marker).
    /// The last stable offset may lie below the marker: another producer's
    /// transaction may have been open since before it.
    pub(crate) fn decode(bytes: &[u8; ABORTED_TXN_SIZE]) -> Result<Self, String> {
        let version = i16::from_be_bytes([bytes[0], bytes[1]]);
        if version != 0 {
            return Err(format!(
                "an aborted transaction entry has version {version}"
            ));
        }
        let long =
            |at: usize| i64::from_be_bytes(bytes[at..at + 8].try_into().expect("eight bytes"));
        let txn = AbortedTxn {
            producer_id: long(2),
            first_offset: long(10),
            last_offset: long(18),
            last_stable_offset: long(26),
        };
        if txn.first_offset < 0 || txn.first_offset > txn.last_offset || txn.last_stable_offset < 0
        {
            return Err(format!(
                "an aborted transaction entry has offsets out of order: first {}, last {}, last \
                 stable {}",
                txn.first_offset, txn.last_offset, txn.last_stable_offset
            ));
        }
        Ok(txn)
    }
}

/// What a `.txnindex` file holds: its entries up to the first damage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TxnIndexRead {
    /// The entries that decoded, in file order.
    pub(crate) entries: Vec<AbortedTxn>,
    /// The byte length they cover (a multiple of 34).
    pub(crate) valid_len: usize,
    /// Why reading stopped before the end of the file, if it did: a torn
    /// last entry, or one that does not decode, or entries whose markers
    /// go backwards.
    pub(crate) damage: Option<String>,
}

/// Reads a whole `.txnindex` file's bytes.
pub(crate) fn read_txn_index(bytes: &[u8]) -> TxnIndexRead {
    let mut entries: Vec<AbortedTxn> = Vec::with_capacity(bytes.len() / ABORTED_TXN_SIZE);
    let mut damage = None;
    for chunk in bytes.chunks(ABORTED_TXN_SIZE) {
        let Ok(chunk) = <&[u8; ABORTED_TXN_SIZE]>::try_from(chunk) else {
            damage = Some(format!("{} bytes after the last whole entry", chunk.len()));
            break;
        };
        match AbortedTxn::decode(chunk) {
            Ok(txn) => {
                if let Some(last) = entries.last()
                    && txn.last_offset <= last.last_offset
                {
                    damage = Some(format!(
                        "the marker at {} follows one at {}",
                        txn.last_offset, last.last_offset
                    ));
                    break;
                }
                entries.push(txn);
            }
            Err(reason) => {
                damage = Some(reason);
                break;
            }
        }
    }
    TxnIndexRead {
        valid_len: entries.len() * ABORTED_TXN_SIZE,
        entries,
        damage,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn kafkas_entry_layout() {
        let txn = AbortedTxn {
            producer_id: 0x0102_0304_0506_0708,
            first_offset: 10,
            last_offset: 20,
            last_stable_offset: 21,
        };
        let bytes = txn.encode();
        assert_eq!(&bytes[..2], &[0, 0]);
        assert_eq!(&bytes[2..10], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&bytes[10..18], &10i64.to_be_bytes());
        assert_eq!(&bytes[18..26], &20i64.to_be_bytes());
        assert_eq!(&bytes[26..], &21i64.to_be_bytes());
        assert_eq!(AbortedTxn::decode(&bytes), Ok(txn));
    }

    #[test]
    fn damage_stops_the_read_where_it_starts() {
        let a = AbortedTxn {
            producer_id: 1,
            first_offset: 0,
            last_offset: 4,
            last_stable_offset: 5,
        };
        let b = AbortedTxn {
            producer_id: 2,
            first_offset: 2,
            last_offset: 9,
            last_stable_offset: 10,
        };
        let mut file = [a.encode(), b.encode()].concat();
        let whole = read_txn_index(&file);
        assert_eq!(
            (whole.entries, whole.valid_len, whole.damage),
            (vec![a, b], 68, None)
        );
        // A torn entry.
        file.extend_from_slice(&[0; 7]);
        let torn = read_txn_index(&file);
        assert_eq!((torn.entries.len(), torn.valid_len), (2, 68));
        assert!(torn.damage.is_some());
        // A newer version is refused.
        let mut newer = a.encode();
        newer[1] = 1;
        assert!(AbortedTxn::decode(&newer).is_err());
        // Markers going backwards.
        let back = read_txn_index(&[b.encode(), a.encode()].concat());
        assert_eq!(back.entries, vec![b]);
        assert!(back.damage.is_some());
    }

    fn txn() -> impl Strategy<Value = AbortedTxn> {
        (any::<i64>(), 0..i64::MAX / 4, 0..i64::MAX / 4, 0..i64::MAX).prop_map(
            |(producer_id, first, span, last_stable_offset)| AbortedTxn {
                producer_id,
                first_offset: first,
                last_offset: first + span,
                last_stable_offset,
            },
        )
    }

    proptest! {
        #[test]
        fn entries_round_trip(t in txn()) {
            prop_assert_eq!(AbortedTxn::decode(&t.encode()), Ok(t));
        }

        #[test]
        fn any_bytes_read_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let read = read_txn_index(&bytes);
            prop_assert_eq!(read.valid_len, read.entries.len() * ABORTED_TXN_SIZE);
            prop_assert!(read.valid_len <= bytes.len());
            prop_assert_eq!(read.damage.is_none(), read.valid_len == bytes.len());
        }
    }
}
