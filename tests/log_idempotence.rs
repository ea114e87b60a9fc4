//! The broker side of the idempotent producer: a partition log checks each
//! producer's batches (epoch, sequences), stores a retried batch once and
//! answers the retry with the original offsets, and keeps what it knows
//! about producers across reopens, crashes, truncations and replication.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use logbus::format::{BatchBuilder, Batches};
use logbus::{Compression, Error, FormatError, Log, LogConfig, ManualClock, Result, TimestampType};
use proptest::prelude::*;

/// A batch of producer `pid` at `epoch` whose records carry the sequences
/// `seq..seq + count`, each record's value naming its producer and sequence.
/// Stamped with the current time, as a producer stamps its records: a
/// producer whose last batch is older than `producer.id.expiration.ms`
/// (1 day) is forgotten when a reopen loads a producer snapshot.
fn pbatch(pid: i64, epoch: i16, seq: i32, count: i32) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let mut builder = BatchBuilder::new(Compression::None).producer(pid, epoch, seq);
    for i in 0..count {
        let value = format!("{pid}/{}", seq + i);
        builder.append(now + i64::from(i), None, Some(value.as_bytes()), &[]);
    }
    builder.build().expect("a small batch builds").to_vec()
}

/// Every record's (offset, value) from `from` to the log end.
fn records(log: &Log) -> Result<Vec<(u64, String)>> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    while next < log.log_end_offset() {
        let read = log.read(next, 1 << 20)?;
        for batch in Batches::new(read.records().clone()) {
            let batch = batch?;
            for record in batch.records()? {
                let record = record?;
                let offset = u64::try_from(record.offset()).expect("offsets");
                if offset >= next {
                    let value = record.value().map(|v| v.to_vec()).unwrap_or_default();
                    out.push((offset, String::from_utf8(value).expect("utf-8 values")));
                }
            }
            next = u64::try_from(batch.header().next_offset()).expect("offsets");
        }
    }
    Ok(out)
}

/// Every file in `dir` with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| {
            let e = e.expect("entry");
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).expect("read"),
            )
        })
        .collect()
}

fn open(dir: &Path) -> Result<Log> {
    Log::builder(dir).open()
}

#[test]
fn a_retried_batch_is_stored_once_and_answered_with_its_offsets() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path())?;
    let a = log.append(&mut pbatch(7, 0, 0, 3), 0)?;
    let b = log.append(&mut pbatch(7, 0, 3, 2), 0)?;
    assert_eq!((a.first_offset(), a.last_offset()), (0, 2));
    assert_eq!((b.first_offset(), b.last_offset()), (3, 4));
    assert!(!a.is_duplicate() && !b.is_duplicate());
    let before = files(dir.path());

    // Both retried, the older one first: nothing written, the originals'
    // offsets returned.
    let retry_a = log.append(&mut pbatch(7, 0, 0, 3), 0)?;
    let retry_b = log.append(&mut pbatch(7, 0, 3, 2), 0)?;
    assert!(retry_a.is_duplicate() && retry_b.is_duplicate());
    assert_eq!(
        (
            retry_a.first_offset(),
            retry_a.last_offset(),
            retry_a.record_count(),
            retry_a.bytes()
        ),
        (0, 2, 3, 0)
    );
    assert_eq!((retry_b.first_offset(), retry_b.last_offset()), (3, 4));
    assert_eq!(
        (retry_a.segment_base_offset(), retry_a.position()),
        (a.segment_base_offset(), a.position())
    );
    assert_eq!(
        (retry_b.segment_base_offset(), retry_b.position()),
        (b.segment_base_offset(), b.position())
    );
    assert_eq!(retry_a.max_timestamp(), a.max_timestamp());
    assert_eq!(log.log_end_offset(), 5);
    assert_eq!(files(dir.path()), before);

    // The producer goes on where it was.
    let c = log.append(&mut pbatch(7, 0, 5, 1), 0)?;
    assert_eq!((c.first_offset(), c.is_duplicate()), (5, false));
    let values: Vec<String> = records(&log)?.into_iter().map(|(_, v)| v).collect();
    assert_eq!(values, ["7/0", "7/1", "7/2", "7/3", "7/4", "7/5"]);
    log.close()
}

#[test]
fn a_retry_under_log_append_time_gets_the_original_time() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(50_000);
    let log = Log::builder(dir.path())
        .config(
            LogConfig::builder()
                .timestamp_type(TimestampType::LogAppendTime)
                .build()?,
        )
        .clock(Arc::new(clock.clone()))
        .open()?;
    let first = log.append(&mut pbatch(1, 0, 0, 2), 0)?;
    assert_eq!(first.log_append_time(), Some(50_000));
    clock.advance_ms(7_000);
    let retry = log.append(&mut pbatch(1, 0, 0, 2), 0)?;
    assert!(retry.is_duplicate());
    assert_eq!(
        (retry.log_append_time(), retry.max_timestamp()),
        (Some(50_000), 50_000)
    );
    log.close()
}

#[test]
fn a_gap_is_out_of_order_and_stores_nothing() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path())?;
    log.append(&mut pbatch(3, 0, 0, 2), 0)?;
    let before = files(dir.path());
    let err = log
        .append(&mut pbatch(3, 0, 5, 1), 0)
        .expect_err("sequences 2..4 are missing");
    assert!(
        matches!(
            err,
            Error::OutOfOrderSequence {
                producer_id: 3,
                sequence: 5,
                expected: 2
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_retriable());
    // A refused append under a new leader epoch records no epoch either.
    let err = log
        .append(&mut pbatch(3, 0, 1, 1), 4)
        .expect_err("sequence 1 is already past");
    assert!(matches!(err, Error::OutOfOrderSequence { .. }), "{err:?}");
    assert_eq!(files(dir.path()), before);
    assert_eq!(log.log_end_offset(), 2);
    // The batch in order is still accepted.
    assert_eq!(log.append(&mut pbatch(3, 0, 2, 1), 0)?.first_offset(), 2);
    log.close()
}

#[test]
fn epochs_fence_older_producers_and_restart_sequences() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path())?;
    log.append(&mut pbatch(9, 0, 0, 2), 0)?;
    log.append(&mut pbatch(9, 1, 0, 1), 0)?;
    let before = files(dir.path());
    let err = log
        .append(&mut pbatch(9, 0, 2, 1), 0)
        .expect_err("epoch 0 is fenced by epoch 1");
    assert!(
        matches!(
            err,
            Error::InvalidProducerEpoch {
                producer_id: 9,
                epoch: 0,
                current: 1
            }
        ),
        "{err:?}"
    );
    // A new epoch starts at sequence 0.
    let err = log
        .append(&mut pbatch(9, 2, 1, 1), 0)
        .expect_err("a new epoch starts at 0");
    assert!(
        matches!(
            err,
            Error::OutOfOrderSequence {
                sequence: 1,
                expected: 0,
                ..
            }
        ),
        "{err:?}"
    );
    // A retry of epoch 0's batch is no duplicate any more: its epoch is old.
    let err = log
        .append(&mut pbatch(9, 0, 0, 2), 0)
        .expect_err("epoch 0 is fenced");
    assert!(matches!(err, Error::InvalidProducerEpoch { .. }), "{err:?}");
    assert_eq!(files(dir.path()), before);
    assert_eq!(log.append(&mut pbatch(9, 2, 0, 1), 0)?.first_offset(), 3);
    log.close()
}

#[test]
fn an_unknown_producer_must_start_at_sequence_zero() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path())?;
    let before = files(dir.path());
    let err = log
        .append(&mut pbatch(11, 0, 4, 1), 0)
        .expect_err("no state for producer 11");
    assert!(
        matches!(
            err,
            Error::UnknownProducerId {
                producer_id: 11,
                sequence: 4
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_retriable());
    assert_eq!(files(dir.path()), before);
    assert_eq!(log.log_end_offset(), 0);
    log.append(&mut pbatch(11, 0, 0, 1), 0)?;
    log.close()
}

#[test]
fn batches_without_a_producer_id_are_never_duplicates() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path())?;
    let plain = || {
        let mut b = BatchBuilder::new(Compression::None);
        b.append(5, None, Some(b"same"), &[]);
        b.build().expect("builds").to_vec()
    };
    let first = log.append(&mut plain(), 0)?;
    let second = log.append(&mut plain(), 0)?;
    assert_eq!((first.first_offset(), second.first_offset()), (0, 1));
    assert!(!second.is_duplicate());
    // Nor are they checked in between a producer's batches.
    log.append(&mut pbatch(1, 0, 0, 1), 0)?;
    log.append(&mut plain(), 0)?;
    assert!(log.append(&mut pbatch(1, 0, 0, 1), 0)?.is_duplicate());
    assert_eq!(log.log_end_offset(), 4);
    log.close()
}

#[test]
fn a_producer_batch_without_a_sequence_is_invalid() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path())?;
    let err = log
        .append(&mut pbatch(2, 0, -1, 1), 0)
        .expect_err("a producer id needs a sequence");
    assert!(
        matches!(err, Error::InvalidBatch(FormatError::InvalidRecord(_))),
        "{err:?}"
    );
    assert_eq!(log.log_end_offset(), 0);
    log.close()
}

#[test]
fn several_batches_in_one_append_are_checked_together() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path())?;
    let two = |s0: i32, s1: i32| {
        let mut buf = pbatch(4, 0, s0, 2);
        buf.extend(pbatch(4, 0, s1, 1));
        buf
    };
    let info = log.append(&mut two(0, 2), 0)?;
    assert_eq!((info.first_offset(), info.last_offset()), (0, 2));
    // The second batch is out of order: the whole append is refused.
    let before = files(dir.path());
    let err = log.append(&mut two(3, 9), 0).expect_err("a gap");
    assert!(matches!(err, Error::OutOfOrderSequence { .. }), "{err:?}");
    // A retry of both is answered with both batches' offsets.
    let retry = log.append(&mut two(0, 2), 0)?;
    assert!(retry.is_duplicate());
    assert_eq!((retry.first_offset(), retry.last_offset()), (0, 2));
    // A retry mixed with a new batch is refused as a whole.
    let mut mixed = pbatch(4, 0, 2, 1);
    mixed.extend(pbatch(4, 0, 3, 1));
    let err = log.append(&mut mixed, 0).expect_err("mixed");
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert_eq!(files(dir.path()), before);
    assert_eq!(log.log_end_offset(), 3);
    log.close()
}

#[test]
fn producer_state_survives_a_reopen_and_a_crash() -> Result<()> {
    for crash in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path())?;
        for i in 0..4 {
            log.append(&mut pbatch(5, 2, i * 2, 2), 0)?;
        }
        log.append(&mut pbatch(6, 0, 0, 1), 0)?;
        if crash {
            drop(log);
        } else {
            log.close()?;
        }
        let log = open(dir.path())?;
        let before = files(dir.path());
        let retry = log.append(&mut pbatch(5, 2, 6, 2), 0)?;
        assert!(retry.is_duplicate(), "crash {crash}");
        assert_eq!((retry.first_offset(), retry.last_offset()), (6, 7));
        let retry = log.append(&mut pbatch(5, 2, 0, 2), 0)?;
        assert_eq!((retry.is_duplicate(), retry.first_offset()), (true, 0));
        assert!(log.append(&mut pbatch(6, 0, 0, 1), 0)?.is_duplicate());
        let err = log
            .append(&mut pbatch(5, 1, 8, 1), 0)
            .expect_err("epoch 1 is older");
        assert!(matches!(err, Error::InvalidProducerEpoch { .. }), "{err:?}");
        let err = log.append(&mut pbatch(6, 0, 3, 1), 0).expect_err("a gap");
        assert!(matches!(err, Error::OutOfOrderSequence { .. }), "{err:?}");
        assert_eq!(files(dir.path()), before);
        assert_eq!(log.append(&mut pbatch(5, 2, 8, 1), 0)?.first_offset(), 9);
        log.close()?;
    }
    Ok(())
}

#[test]
fn truncation_forgets_the_cut_batches() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::builder(dir.path())
        .config(LogConfig::builder().segment_bytes(200).build()?)
        .open()?;
    for i in 0..6 {
        log.append(&mut pbatch(8, 0, i, 1), 0)?;
    }
    assert!(log.segment_count() > 1, "the cut spans segments");
    assert_eq!(log.truncate_to(3)?, 3);
    // Batch 3 was cut: appended again, at its old offset; batch 2 is kept.
    assert!(log.append(&mut pbatch(8, 0, 2, 1), 0)?.is_duplicate());
    let again = log.append(&mut pbatch(8, 0, 3, 1), 0)?;
    assert_eq!((again.is_duplicate(), again.first_offset()), (false, 3));
    let err = log
        .append(&mut pbatch(8, 0, 5, 1), 0)
        .expect_err("4 is missing now");
    assert!(matches!(err, Error::OutOfOrderSequence { .. }), "{err:?}");

    log.truncate_fully_and_start_at(100)?;
    let err = log
        .append(&mut pbatch(8, 0, 4, 1), 0)
        .expect_err("nothing is known after a full truncation");
    assert!(matches!(err, Error::UnknownProducerId { .. }), "{err:?}");
    assert_eq!(log.append(&mut pbatch(8, 0, 0, 1), 0)?.first_offset(), 100);
    log.close()
}

#[test]
fn a_follower_takes_over_its_leaders_producer_state() -> Result<()> {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let follower_dir = tempfile::tempdir().expect("tempdir");
    let leader = open(leader_dir.path())?;
    let follower = open(follower_dir.path())?;
    leader.append(&mut pbatch(12, 3, 0, 2), 5)?;
    leader.append(&mut pbatch(12, 3, 2, 2), 5)?;
    let read = leader.read(0, 1 << 20)?;
    follower.append_as_follower(read.records())?;
    assert_eq!(follower.log_end_offset(), 4);
    // The follower becomes the leader: the producer's retry is known.
    let retry = follower.append(&mut pbatch(12, 3, 2, 2), 6)?;
    assert_eq!((retry.is_duplicate(), retry.first_offset()), (true, 2));
    let err = follower
        .append(&mut pbatch(12, 2, 4, 1), 6)
        .expect_err("an older epoch");
    assert!(matches!(err, Error::InvalidProducerEpoch { .. }), "{err:?}");
    assert_eq!(
        follower.append(&mut pbatch(12, 3, 4, 1), 6)?.first_offset(),
        4
    );
    leader.close()?;
    follower.close()
}

/// One producer's batches: (first sequence, record count).
fn stream(counts: &[u8]) -> Vec<(i32, i32)> {
    let mut next = 0;
    counts
        .iter()
        .map(|&c| {
            let b = (next, i32::from(c));
            next += i32::from(c);
            b
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Three producers with up to five batches in flight, whose batches
    /// reach the log in any order and any number of times (lost, retried,
    /// reordered), with a close and reopen in between. The log stores each
    /// producer's batches once and in order, answers each retry of a stored
    /// batch with its offsets, and what it holds is exactly that.
    #[test]
    fn retried_appends_store_each_batch_once_in_order(
        counts in proptest::collection::vec(proptest::collection::vec(1..4u8, 1..12), 3),
        deliveries in proptest::collection::vec(
            (0..3usize, 0..5usize, any::<bool>(), 0..40u8),
            1..80,
        ),
    ) {
        let streams: Vec<Vec<(i32, i32)>> = counts.iter().map(|c| stream(c)).collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path())?;
        let mut model: Vec<(u64, String)> = Vec::new();
        let mut stored: Vec<Vec<(u64, u64)>> = vec![Vec::new(); 3];
        let mut acked = [0usize; 3];
        for (p, pick, response_arrives, reopen) in deliveries {
            if reopen == 0 {
                log.close()?;
                log = open(dir.path())?;
            }
            let j = acked[p] + pick;
            let Some(&(seq, count)) = streams[p].get(j) else { continue };
            let pid = i64::try_from(p).expect("small");
            let result = log.append(&mut pbatch(pid, 0, seq, count), 0);
            let success = match result {
                Ok(info) if info.is_duplicate() => {
                    prop_assert!(j < stored[p].len(), "a duplicate of a batch never stored");
                    prop_assert_eq!((info.first_offset(), info.last_offset()), stored[p][j]);
                    true
                }
                Ok(info) => {
                    prop_assert_eq!(j, stored[p].len(), "stored out of order or twice");
                    stored[p].push((info.first_offset(), info.last_offset()));
                    for i in 0..count {
                        model.push((info.first_offset() + u64::try_from(i).expect("small"),
                                    format!("{pid}/{}", seq + i)));
                    }
                    true
                }
                Err(Error::OutOfOrderSequence { expected, .. }) => {
                    prop_assert!(j > stored[p].len(), "the next batch was refused");
                    prop_assert_eq!(expected, streams[p][stored[p].len()].0);
                    false
                }
                Err(Error::UnknownProducerId { .. }) => {
                    prop_assert!(stored[p].is_empty() && j > 0);
                    false
                }
                Err(e) => return Err(TestCaseError::fail(format!("{e:?}"))),
            };
            if success && response_arrives && j == acked[p] {
                acked[p] += 1;
            }
        }
        prop_assert_eq!(records(&log)?, model);
        log.close()?;
    }
}

#[test]
fn a_retry_to_a_new_leader_is_still_a_duplicate() -> Result<()> {
    use logbus::{Cluster, ClusterConfig, NewTopic};
    let dir = tempfile::tempdir().expect("tempdir");
    let config = || ClusterConfig::builder().brokers(3).build();
    let cluster = Cluster::open(dir.path(), config()?)?;
    let topic = cluster.create_topic(NewTopic::new("t", 1).replication_factor(3))?;
    let partition = topic.partition(0)?;
    // Acknowledged as acks=all: every replica holds both batches.
    partition.append(&mut pbatch(21, 0, 0, 2))?;
    let last = partition.append(&mut pbatch(21, 0, 2, 3))?;
    let leader = cluster.describe_topic("t")?.partitions[0]
        .leader
        .expect("a leader");
    cluster.stop_broker(leader)?;
    let now = cluster.describe_topic("t")?.partitions[0].leader;
    assert!(now.is_some() && now != Some(leader), "{now:?}");

    // The producer never saw the answer and retries at the new leader.
    let retry = partition.append(&mut pbatch(21, 0, 2, 3))?;
    assert!(retry.is_duplicate());
    assert_eq!(
        (retry.first_offset(), retry.last_offset()),
        (last.first_offset(), last.last_offset())
    );
    let err = partition
        .append(&mut pbatch(21, 0, 9, 1))
        .expect_err("a gap");
    assert!(matches!(err, Error::OutOfOrderSequence { .. }), "{err:?}");
    assert_eq!(
        partition.append(&mut pbatch(21, 0, 5, 1))?.first_offset(),
        5
    );
    cluster.close()?;

    // And after the whole cluster reopens.
    let cluster = Cluster::open(dir.path(), config()?)?;
    let partition = cluster.topic("t")?.partition(0)?;
    assert!(partition.append(&mut pbatch(21, 0, 5, 1))?.is_duplicate());
    assert_eq!(partition.log_end_offset()?, 6);
    cluster.close()
}
