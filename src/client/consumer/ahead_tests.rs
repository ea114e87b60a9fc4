//! The read-ahead (`ahead`): what its helper checks, what the poll thread
//! then skips (only batches verified at the same addresses), that damage
//! is reported by the poll that reaches it exactly as without read-ahead,
//! and that the helper thread stops with its consumer.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;

use super::ahead::{AheadJob, ReadAhead, next_position, verify_prefix};
use super::fetch::{Fetch, Sink, crc_checks};
use super::records::PartitionBuf;
use crate::cluster::ReadSource;
use crate::error::{Error, FormatError};
use crate::format::BatchBuilder;
use crate::{
    Cluster, ClusterConfig, Compression, Consumer, ConsumerConfig, NewTopic, OffsetReset,
    TopicPartition,
};

/// Records per batch.
const PER_BATCH: u64 = 4;

fn value(offset: u64) -> Vec<u8> {
    format!("value-{offset:06}").into_bytes()
}

/// `batches` batches of [`PER_BATCH`] records from offset 0, laid end to
/// end as a fetch returns them; and where each batch ends.
fn batches(batches: u64) -> (Vec<u8>, Vec<usize>) {
    let mut data = Vec::new();
    let mut ends = Vec::new();
    for b in 0..batches {
        let mut builder = BatchBuilder::new(Compression::None);
        for offset in b * PER_BATCH..(b + 1) * PER_BATCH {
            builder.append(1_700_000_000_000, None, Some(&value(offset)), &[]);
        }
        let mut batch = builder.build().expect("batch").to_vec();
        batch[..8].copy_from_slice(&((b * PER_BATCH) as i64).to_be_bytes());
        data.extend_from_slice(&batch);
        ends.push(data.len());
    }
    (data, ends)
}

/// Flips a byte of the value of the record at `offset` (its CRC no longer
/// matches).
fn damage(data: &mut [u8], offset: u64) {
    let at = data
        .windows(12)
        .position(|w| w == value(offset).as_slice())
        .expect("value");
    data[at] = b'V';
}

/// Drains `fetch` from offset 0 with `check.crcs=true`, one poll of
/// unlimited size: the offsets returned, the result, and the CRC passes
/// this thread made.
fn drain(fetch: &mut Fetch) -> (Vec<u64>, Result<(), FormatError>, u64) {
    let topic: Arc<str> = Arc::from("t");
    let before = crc_checks();
    let mut out = PartitionBuf::default();
    let mut position = 0;
    let result = fetch.drain(
        &mut position,
        Sink {
            topic: &topic,
            partition: 0,
            check_crcs: true,
            max: usize::MAX,
            out: &mut out,
        },
    );
    let records = super::ConsumerRecords::new(vec![(TopicPartition::new("t", 0), out)]);
    let offsets = records.iter().map(|r| r.offset()).collect();
    (offsets, result, crc_checks() - before)
}

#[test]
fn the_helper_verifies_a_prefix_of_whole_batches_up_to_the_first_damaged_one() {
    let (mut data, ends) = batches(5);
    let none = 0..0;
    let run = |data: &Bytes, checked: &std::ops::Range<usize>, fenced: bool| {
        let verified = AtomicUsize::new(0);
        verify_prefix(data, checked, &verified, &AtomicBool::new(fenced));
        verified.load(Ordering::Relaxed)
    };
    assert_eq!(run(&Bytes::from(data.clone()), &none, false), ends[4]);
    assert_eq!(run(&Bytes::from(data.clone()), &none, true), 0);
    damage(&mut data, 2 * PER_BATCH + 1);
    let damaged = Bytes::from(data.clone());
    assert_eq!(run(&damaged, &none, false), ends[1]);
    // Bytes this process checked before are not checked again, only
    // touched: the damage is not the helper's to find there.
    assert_eq!(run(&damaged, &(0..ends[4]), false), ends[4]);
    assert_eq!(run(&damaged, &(0..ends[2] - 1), false), ends[1]);
    // A cut last batch ends the prefix.
    assert_eq!(run(&damaged.slice(..ends[0] + 20), &none, false), ends[0]);
    assert_eq!(next_position(&data), Some(5 * PER_BATCH));
    assert_eq!(next_position(&data[..ends[3] + 20]), Some(4 * PER_BATCH));
    assert_eq!(next_position(&data[..20]), None);
}

#[test]
fn a_poll_skips_the_crcs_of_exactly_the_batches_the_helper_verified() {
    let (data, ends) = batches(5);
    let data = Bytes::from(data);
    let all: Vec<u64> = (0..5 * PER_BATCH).collect();
    for (verified, passes) in [(0, 5), (ends[1], 3), (ends[1] + 1, 3), (ends[4], 0)] {
        let job = AheadJob::finished(data.clone(), 0, verified);
        let mut fetch = Fetch::new(data.clone(), ReadSource::default(), None).ahead(Some(job));
        let (offsets, result, checks) = drain(&mut fetch);
        assert_eq!(offsets, all);
        assert_eq!(result, Ok(()));
        assert_eq!(checks, passes, "verified {verified}");
    }
    // The same content at other addresses (another map of the file, a
    // copy) was not what the helper checked: every batch is checked.
    let copy = Bytes::from(data.to_vec());
    let job = AheadJob::finished(copy, 0, ends[4]);
    let mut fetch = Fetch::new(data.clone(), ReadSource::default(), None).ahead(Some(job));
    assert_eq!(drain(&mut fetch).2, 5);
    // A smaller fetch of the same position: a prefix of the helper's
    // bytes.
    let job = AheadJob::finished(data.clone(), 0, ends[4]);
    let prefix = data.slice(..ends[2]);
    let mut fetch = Fetch::new(prefix, ReadSource::default(), None).ahead(Some(Arc::clone(&job)));
    let (offsets, _, checks) = drain(&mut fetch);
    assert_eq!(offsets, (0..3 * PER_BATCH).collect::<Vec<_>>());
    assert_eq!(checks, 0);
    assert!(!job.is_fenced());
    // Bytes starting elsewhere in the helper's are not its batches.
    let part = data.slice(ends[0]..);
    let mut fetch = Fetch::new(part, ReadSource::default(), None).ahead(Some(Arc::clone(&job)));
    let (offsets, _, checks) = drain(&mut fetch);
    assert_eq!(offsets, (PER_BATCH..5 * PER_BATCH).collect::<Vec<_>>());
    assert_eq!(checks, 4);
    assert!(job.is_fenced());
}

#[test]
fn damage_past_the_verified_prefix_is_the_polls_own_error() {
    let (mut data, ends) = batches(5);
    damage(&mut data, 3 * PER_BATCH + 2);
    let data = Bytes::from(data);
    let mut plain = Fetch::new(data.clone(), ReadSource::default(), None);
    let without = drain(&mut plain);
    assert!(matches!(without.1, Err(FormatError::CrcMismatch { .. })));
    assert_eq!(without.0, (0..3 * PER_BATCH).collect::<Vec<_>>());
    // What the helper would have left: the prefix before the damage.
    let verified = AtomicUsize::new(0);
    verify_prefix(&data, &(0..0), &verified, &AtomicBool::new(false));
    assert_eq!(verified.load(Ordering::Relaxed), ends[2]);
    for verified in [0, ends[0], ends[2]] {
        let job = AheadJob::finished(data.clone(), 0, verified);
        let mut fetch =
            Fetch::new(data.clone(), ReadSource::default(), None).ahead(Some(Arc::clone(&job)));
        let (offsets, result, checks) = drain(&mut fetch);
        assert_eq!((offsets, result), (without.0.clone(), without.1.clone()));
        // The poll checked from the first unverified batch on, and told
        // the helper to stop.
        assert_eq!(checks, 4 - (verified / ends[0]) as u64);
        assert!(job.is_fenced());
    }
}

fn open(dir: &Path) -> Cluster {
    Cluster::open(dir, ClusterConfig::default()).expect("cluster")
}

/// `t` with one partition holding `n` batches of [`PER_BATCH`] records,
/// closed and reopened (so that its batches count as another run's and
/// their CRCs are checked), with the record at `damaged` (if any) damaged
/// in between.
fn reopened(dir: &Path, n: u64, damaged: Option<u64>) -> Cluster {
    let cluster = open(dir);
    // An index entry per batch: a clean open looks at the last batch only.
    let config = crate::TopicConfig::new()
        .set("index.interval.bytes", "1")
        .expect("config");
    cluster
        .create_topic(NewTopic::new("t", 1).config(config))
        .expect("topic");
    let partition = cluster
        .topic("t")
        .expect("topic")
        .partition(0)
        .expect("partition");
    let (data, ends) = batches(n);
    let mut start = 0;
    for end in ends {
        partition
            .append(&mut data[start..end].to_vec())
            .expect("append");
        start = end;
    }
    drop(partition);
    cluster.close().expect("close");
    if let Some(offset) = damaged {
        let log = dir.join("broker-0/t-0/00000000000000000000.log");
        let mut bytes = std::fs::read(&log).expect("read");
        damage(&mut bytes, offset);
        std::fs::write(&log, &bytes).expect("write");
    }
    open(dir)
}

/// A consumer of `t-0` from the start, fetching about two batches at a
/// time (so that each poll's fetch was read ahead by the one before).
fn consumer(cluster: &Cluster, read_ahead: bool) -> Consumer {
    let config = ConsumerConfig::builder()
        .auto_offset_reset(OffsetReset::Earliest)
        .max_partition_fetch_bytes(300)
        .build()
        .expect("config");
    let mut consumer = Consumer::new(cluster, config).expect("consumer");
    consumer.read_ahead_enabled = read_ahead;
    consumer
        .assign(&[TopicPartition::new("t", 0)])
        .expect("assign");
    consumer
}

/// Polls until a poll returns nothing or fails: offsets and values, and
/// the error.
fn poll_all(consumer: &mut Consumer) -> (Vec<(u64, Vec<u8>)>, Option<Error>) {
    let mut records = Vec::new();
    loop {
        match consumer.poll(Duration::ZERO) {
            Ok(polled) if polled.is_empty() => return (records, None),
            Ok(polled) => records.extend(
                polled
                    .iter()
                    .map(|r| (r.offset(), r.value().expect("value").to_vec())),
            ),
            Err(e) => return (records, Some(e)),
        }
    }
}

#[test]
fn with_read_ahead_a_consumer_returns_the_same_records_and_the_same_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = reopened(dir.path(), 12, None);
    let mut with = consumer(&cluster, true);
    let (records, error) = poll_all(&mut with);
    assert!(error.is_none(), "{error:?}");
    let expected: Vec<(u64, Vec<u8>)> = (0..12 * PER_BATCH).map(|o| (o, value(o))).collect();
    assert_eq!(records, expected);
    assert!(with.read_ahead.is_running());
    let helper = with.read_ahead.helper_handle();
    with.close().expect("close");
    // The helper thread ended (and dropped its share) before close
    // returned.
    assert!(helper.upgrade().is_none());
    cluster.close().expect("close");

    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = reopened(dir.path(), 12, Some(7 * PER_BATCH + 1));
    let (records, error) = poll_all(&mut consumer(&cluster, false));
    let (ahead_records, ahead_error) = poll_all(&mut consumer(&cluster, true));
    assert_eq!(ahead_records, records);
    assert_eq!(records.len() as u64, 7 * PER_BATCH);
    let (Some(error), Some(ahead_error)) = (error, ahead_error) else {
        panic!("the damage was not reported");
    };
    assert_eq!(ahead_error.to_string(), error.to_string());
    assert!(
        matches!(
            ahead_error,
            Error::CorruptRecord {
                offset,
                cause: FormatError::CrcMismatch { .. },
                ..
            } if offset == 7 * PER_BATCH
        ),
        "{ahead_error}"
    );
    // A consumer dropped without close stops its helper too.
    let mut dropped = consumer(&cluster, true);
    let _ = poll_all(&mut dropped);
    let helper = dropped.read_ahead.helper_handle();
    drop(dropped);
    assert!(helper.upgrade().is_none());
    cluster.close().expect("close");
}

#[test]
fn a_job_for_another_position_is_not_used() {
    let (data, ends) = batches(2);
    let data = Bytes::from(data);
    let job = AheadJob::finished(data.clone(), 0, ends[1]);
    assert!(ReadAhead::take(Some(Arc::clone(&job)), 4).is_none());
    assert!(ReadAhead::take(Some(job), 0).is_some());
    assert!(ReadAhead::take(None, 0).is_none());
}

#[test]
fn a_poll_that_overtakes_the_helper_stops_it_even_where_no_crc_is_due() {
    let (data, ends) = batches(3);
    let data = Bytes::from(data);
    // Bytes this process checked before: no CRC is due either way.
    for (verified, fenced) in [(0, true), (ends[0], true), (ends[2], false)] {
        let job = AheadJob::finished(data.clone(), 0, verified);
        let mut fetch = Fetch::new(data.clone(), ReadSource::default(), None)
            .checked(0..data.len())
            .ahead(Some(Arc::clone(&job)));
        let (offsets, result, checks) = drain(&mut fetch);
        assert_eq!(offsets, (0..3 * PER_BATCH).collect::<Vec<_>>());
        assert_eq!((result, checks), (Ok(()), 0));
        assert_eq!(job.is_fenced(), fenced, "verified {verified}");
    }
}
