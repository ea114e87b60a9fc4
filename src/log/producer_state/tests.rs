//! Producer state: Kafka's sequence, epoch and transaction rules one by
//! one, the last stable offset with overlapping transactions, snapshots,
//! and a property test of retrying producers: whatever order and however
//! often their in-flight batches arrive, each is stored once, in order,
//! and every retry is answered with the original offsets.

use proptest::prelude::*;

use super::*;

const P: i64 = 7;

fn data(epoch: i16, first_sequence: i32, records: i32, first_offset: u64) -> DataBatch {
    DataBatch {
        producer_id: P,
        epoch,
        first_sequence,
        last_sequence: first_sequence + (records - 1),
        first_offset,
        last_offset: first_offset + u64::try_from(records - 1).unwrap(),
        max_timestamp: 100,
        transactional: false,
    }
}

fn txn(batch: DataBatch) -> DataBatch {
    DataBatch {
        transactional: true,
        ..batch
    }
}

fn marker(commit: bool, coordinator_epoch: i32) -> EndTxnMarker {
    EndTxnMarker {
        commit,
        coordinator_epoch,
    }
}

/// Checks and applies, as the log does for a client batch.
fn append(state: &mut ProducerStateManager, batch: DataBatch) -> Result<(), ProducerStateError> {
    state.check_data(&batch, ProducerOrigin::Client)?;
    state.apply_data(&batch);
    Ok(())
}

#[test]
fn sequences_must_follow_within_an_epoch() {
    let mut s = ProducerStateManager::new(0);
    // An unknown producer starts at 0 (Kafka would take any sequence).
    assert_eq!(
        s.check_data(&data(0, 10, 2, 0), ProducerOrigin::Client),
        Err(ProducerStateError::UnknownProducerId {
            producer_id: P,
            first_sequence: 10
        })
    );
    append(&mut s, data(0, 0, 2, 0)).unwrap();
    assert_eq!(
        s.check_data(&data(0, 3, 1, 2), ProducerOrigin::Client),
        Err(ProducerStateError::OutOfOrderSequence {
            producer_id: P,
            first_sequence: 3,
            expected: 2
        })
    );
    append(&mut s, data(0, 2, 1, 2)).unwrap();
    assert_eq!(s.producer(P).unwrap().batches.len(), 2);
    assert_eq!(s.map_end_offset(), 3);
}

#[test]
fn sequences_wrap_from_i32_max_to_zero() {
    let mut s = ProducerStateManager::new(0);
    // A follower applies what its leader accepted, whatever the sequence.
    s.apply_data(&data(0, i32::MAX - 1, 1, 0));
    append(&mut s, data(0, i32::MAX, 1, 0)).unwrap();
    append(&mut s, data(0, 0, 1, 1)).unwrap();
    assert!(
        s.check_data(&data(0, 2, 1, 2), ProducerOrigin::Client)
            .is_err()
    );
}

#[test]
fn epochs_fence_old_writers_and_restart_sequences() {
    let mut s = ProducerStateManager::new(0);
    append(&mut s, data(3, 0, 5, 0)).unwrap();
    assert_eq!(
        s.check_data(&data(2, 5, 1, 5), ProducerOrigin::Client),
        Err(ProducerStateError::InvalidProducerEpoch {
            producer_id: P,
            epoch: 2,
            current: 3
        })
    );
    // The coordinator's own writes are checked for the epoch only.
    assert!(
        s.check_data(&data(2, 5, 1, 5), ProducerOrigin::Coordinator)
            .is_err()
    );
    // A new epoch starts at sequence 0.
    assert!(matches!(
        s.check_data(&data(4, 5, 1, 5), ProducerOrigin::Client),
        Err(ProducerStateError::OutOfOrderSequence { expected: 0, .. })
    ));
    append(&mut s, data(4, 0, 1, 5)).unwrap();
    // Its old batches are forgotten: no duplicate of epoch 3 any more.
    assert_eq!(s.producer(P).unwrap().batches.len(), 1);
    assert_eq!(s.find_duplicate(&data(3, 0, 5, 9)), None);
}

#[test]
fn replication_applies_without_checking() {
    let mut s = ProducerStateManager::new(0);
    append(&mut s, data(3, 0, 1, 0)).unwrap();
    let stale = data(1, 40, 1, 1);
    assert_eq!(s.check_data(&stale, ProducerOrigin::Replication), Ok(()));
}

#[test]
fn the_last_five_batches_answer_retries() {
    let mut s = ProducerStateManager::new(0);
    for i in 0..7 {
        append(&mut s, data(0, i * 2, 2, u64::try_from(i).unwrap() * 2)).unwrap();
    }
    // Batches 2..7 are kept; a retry of batch 2 gets its offsets back.
    let retry = data(0, 4, 2, 99);
    assert_eq!(
        s.find_duplicate(&retry)
            .map(|b| (b.first_offset, b.last_offset)),
        Some((4, 5))
    );
    // Batch 1 is too old to be recognised (a producer never has more than
    // five in flight, so it never retries it).
    assert_eq!(s.find_duplicate(&data(0, 2, 2, 99)), None);
    // The same first sequence with another length is not the same batch.
    assert_eq!(s.find_duplicate(&data(0, 4, 1, 99)), None);
    assert_eq!(s.find_duplicate(&data(1, 4, 2, 99)), None);
}

#[test]
fn a_transaction_opens_with_its_first_batch_and_ends_with_its_marker() {
    let mut s = ProducerStateManager::new(0);
    append(&mut s, txn(data(0, 0, 2, 10))).unwrap();
    append(&mut s, txn(data(0, 2, 1, 12))).unwrap();
    assert_eq!(s.producer(P).unwrap().current_txn_first_offset, Some(10));
    assert_eq!(s.first_unstable_offset(), Some(10));
    // A plain batch in the middle of a transaction is refused.
    assert_eq!(
        s.check_data(&data(0, 3, 1, 13), ProducerOrigin::Client),
        Err(ProducerStateError::InvalidTxnState { producer_id: P })
    );
    s.check_marker(P, 0, marker(false, 1), ProducerOrigin::Coordinator)
        .unwrap();
    let done = s.apply_marker(P, 0, marker(false, 1), 13, 200).unwrap();
    assert_eq!(
        done,
        CompletedTxn {
            producer_id: P,
            first_offset: 10,
            last_offset: 13,
            aborted: true
        }
    );
    assert_eq!(s.last_stable_offset_after(&done), 14);
    s.complete_txn(&done);
    // Complete, but unstable until the high watermark passes the marker.
    assert_eq!(s.first_unstable_offset(), Some(10));
    s.on_high_watermark(13);
    assert_eq!(s.first_unstable_offset(), Some(10));
    s.on_high_watermark(14);
    assert_eq!(s.first_unstable_offset(), None);
    // A marker with no open transaction completes nothing.
    assert_eq!(s.apply_marker(P, 0, marker(true, 1), 14, 201), None);
    // Older coordinators and epochs are fenced.
    assert_eq!(
        s.check_marker(P, 0, marker(true, 0), ProducerOrigin::Coordinator),
        Err(ProducerStateError::CoordinatorFenced {
            producer_id: P,
            coordinator_epoch: 0,
            current: 1
        })
    );
    append(&mut s, data(1, 0, 1, 15)).unwrap();
    assert!(matches!(
        s.check_marker(P, 0, marker(true, 1), ProducerOrigin::Coordinator),
        Err(ProducerStateError::InvalidProducerEpoch { .. })
    ));
}

#[test]
fn overlapping_transactions_hold_the_last_stable_offset_back() {
    let mut s = ProducerStateManager::new(0);
    let a = |b: DataBatch| DataBatch {
        producer_id: 1,
        ..txn(b)
    };
    let b = |b: DataBatch| DataBatch {
        producer_id: 2,
        ..txn(b)
    };
    append(&mut s, a(data(0, 0, 1, 0))).unwrap();
    append(&mut s, b(data(0, 0, 1, 1))).unwrap();
    // A ends first: the LSO stops at B's first offset.
    let done_a = s.apply_marker(1, 0, marker(true, 0), 2, 0).unwrap();
    assert_eq!(s.last_stable_offset_after(&done_a), 1);
    s.complete_txn(&done_a);
    s.on_high_watermark(3);
    assert_eq!(s.first_unstable_offset(), Some(1));
    let done_b = s.apply_marker(2, 0, marker(false, 0), 3, 0).unwrap();
    assert_eq!(s.last_stable_offset_after(&done_b), 4);
    s.complete_txn(&done_b);
    s.on_high_watermark(4);
    assert_eq!(s.first_unstable_offset(), None);
}

#[test]
fn idle_producers_expire_but_not_inside_a_transaction() {
    let mut s = ProducerStateManager::new(0);
    append(&mut s, data(0, 0, 1, 0)).unwrap();
    let open = DataBatch {
        producer_id: 8,
        ..txn(data(0, 0, 1, 1))
    };
    append(&mut s, open).unwrap();
    assert_eq!(s.remove_expired(100 + 999, 1000), 0);
    assert_eq!(s.remove_expired(100 + 1000, 1000), 1);
    assert!(s.producer(P).is_none() && s.producer(8).is_some());
    s.truncate_fully_and_start_at(50);
    assert_eq!((s.producer_count(), s.map_end_offset()), (0, 50));
    assert_eq!(s.first_unstable_offset(), None);
}

#[test]
fn a_snapshot_keeps_each_producers_last_batch_and_open_transaction() {
    let mut s = ProducerStateManager::new(0);
    for i in 0..3 {
        append(&mut s, data(2, i * 3, 3, u64::try_from(i).unwrap() * 3)).unwrap();
    }
    let open = DataBatch {
        producer_id: 9,
        ..txn(data(0, 0, 2, 9))
    };
    append(&mut s, open).unwrap();
    let loaded = ProducerStateManager::from_snapshot(&s.snapshot(), s.map_end_offset(), 100, 1000);
    assert_eq!(loaded.map_end_offset(), 11);
    assert_eq!(loaded.snapshot(), s.snapshot());
    assert_eq!(loaded.first_unstable_offset(), Some(9));
    let last = loaded.producer(P).unwrap().batches.back().copied().unwrap();
    assert_eq!(last, *s.producer(P).unwrap().batches.back().unwrap());
    // The next batch is in order after the load as before it.
    assert_eq!(
        loaded.check_data(&data(2, 9, 1, 11), ProducerOrigin::Client),
        Ok(())
    );
    // Expired producers are dropped at load, open transactions kept.
    let late = ProducerStateManager::from_snapshot(&s.snapshot(), 11, 100 + 1000, 1000);
    assert!(late.producer(P).is_none() && late.producer(9).is_some());
}

#[test]
fn a_snapshot_batch_across_the_sequence_wrap_loads() {
    let mut s = ProducerStateManager::new(0);
    let wrapping = DataBatch {
        last_sequence: 1,
        ..data(0, i32::MAX - 1, 1, 0)
    };
    let wrapping = DataBatch {
        last_offset: 3,
        ..wrapping
    };
    s.apply_data(&wrapping);
    let loaded = ProducerStateManager::from_snapshot(&s.snapshot(), 4, 0, 1000);
    assert_eq!(
        loaded.find_duplicate(&wrapping).map(|b| b.first_offset),
        Some(0)
    );
}

/// One producer's batches: (first sequence, record count).
fn batches(counts: &[u8]) -> Vec<(i32, i32)> {
    let mut next = 0;
    counts
        .iter()
        .map(|&c| {
            let c = i32::from(c);
            let b = (next, c);
            next += c;
            b
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Three producers, each with up to five batches in flight, whose
    /// batches reach the log in any order and any number of times (lost,
    /// retried, reordered). The state stores each producer's batches once
    /// and in order, refuses a batch ahead of a gap, and answers every
    /// retry of a stored batch with the offsets it was stored at.
    #[test]
    fn retried_and_reordered_batches_are_stored_once_in_order(
        counts in proptest::collection::vec(proptest::collection::vec(1..4u8, 1..30), 3),
        deliveries in proptest::collection::vec((0..3usize, 0..5usize, any::<bool>()), 1..300),
    ) {
        let streams: Vec<Vec<(i32, i32)>> = counts.iter().map(|c| batches(c)).collect();
        let mut s = ProducerStateManager::new(0);
        let mut log_end = 0u64;
        // Per producer: where each stored batch went, and how many batches
        // the producer has seen acknowledged (its window starts there).
        let mut stored: Vec<Vec<(u64, u64)>> = vec![Vec::new(); 3];
        let mut acked = [0usize; 3];
        for (p, pick, response_arrives) in deliveries {
            let j = acked[p] + pick;
            let Some(&(first_sequence, records)) = streams[p].get(j) else { continue };
            let batch = DataBatch {
                producer_id: i64::try_from(p).unwrap(),
                epoch: 0,
                first_sequence,
                last_sequence: first_sequence + (records - 1),
                first_offset: log_end,
                last_offset: log_end + u64::try_from(records - 1).unwrap(),
                max_timestamp: 0,
                transactional: false,
            };
            let success = if let Some(dup) = s.find_duplicate(&batch) {
                prop_assert!(j < stored[p].len(), "a duplicate of a batch never stored");
                prop_assert_eq!((dup.first_offset, dup.last_offset), stored[p][j]);
                true
            } else {
                // Within the window every stored batch is recognised.
                prop_assert!(j >= stored[p].len(), "batch {} of {} stored twice", j, p);
                match s.check_data(&batch, ProducerOrigin::Client) {
                    Ok(()) => {
                        prop_assert_eq!(j, stored[p].len(), "accepted out of order");
                        s.apply_data(&batch);
                        stored[p].push((batch.first_offset, batch.last_offset));
                        log_end = batch.last_offset + 1;
                        true
                    }
                    Err(ProducerStateError::OutOfOrderSequence { expected, .. }) => {
                        prop_assert!(j > stored[p].len(), "the next batch was refused");
                        let next = streams[p][stored[p].len()].0;
                        prop_assert_eq!(expected, next);
                        false
                    }
                    Err(ProducerStateError::UnknownProducerId { .. }) => {
                        prop_assert!(stored[p].is_empty() && j > 0);
                        false
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("{e:?}"))),
                }
            };
            // The producer moves its window on when the oldest in-flight
            // batch is answered successfully.
            if success && response_arrives && j == acked[p] {
                acked[p] += 1;
            }
        }
        prop_assert_eq!(s.map_end_offset(), log_end);
    }
}

#[test]
fn a_batch_header_gives_its_last_sequence_across_the_wrap() {
    assert_eq!(last_sequence(5, 3), 8);
    assert_eq!(last_sequence(i32::MAX, 0), i32::MAX);
    assert_eq!(last_sequence(i32::MAX - 1, 2), 0);
    assert_eq!(last_sequence(i32::MAX, 4), 3);
}
