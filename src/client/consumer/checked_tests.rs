//! `check.crcs=true` checks each batch's CRC once: batches this process
//! appended (or its recovery scanned) are returned without a CRC pass;
//! every other batch (written by another process or an earlier run, read
//! through a read-only view) is checked, and damage is found as before.
//! CRC passes are counted on the polling thread ([`crc_checks`]), with the
//! read-ahead off (its helper thread checks batches ahead of the polls:
//! `ahead_tests`).

use std::path::Path;
use std::time::Duration;

use super::fetch::crc_checks;
use crate::error::{Error, FormatError};
use crate::format::BatchBuilder;
use crate::{
    Cluster, ClusterConfig, Compression, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, TopicPartition,
};

/// Records per appended batch.
const PER_BATCH: u64 = 5;

fn tp() -> TopicPartition {
    TopicPartition::new("t", 0)
}

fn open(dir: &Path) -> Cluster {
    Cluster::open(dir, ClusterConfig::default()).expect("cluster")
}

/// The value of the record at `offset`.
fn value(offset: u64) -> Vec<u8> {
    format!("value-{offset:06}").into_bytes()
}

/// Appends `batches` batches of [`PER_BATCH`] records through the
/// partition handle (the client path, which validates every batch).
fn append(cluster: &Cluster, batches: u64) {
    let partition = cluster
        .topic("t")
        .expect("topic")
        .partition(0)
        .expect("partition");
    for _ in 0..batches {
        let first = partition.log_end_offset().expect("end");
        let mut builder = BatchBuilder::new(Compression::None);
        for offset in first..first + PER_BATCH {
            builder.append(1_700_000_000_000, None, Some(&value(offset)), &[]);
        }
        partition
            .append(&mut builder.build().expect("batch").to_vec())
            .expect("append");
    }
}

/// A consumer of `t-0` from the earliest offset, with `check.crcs=true`
/// (the default) and `max.poll.records` 3, so that batches span polls;
/// without read-ahead, so that every CRC pass is on the polling thread.
fn consumer(cluster: &Cluster) -> Consumer {
    let config = ConsumerConfig::builder()
        .auto_offset_reset(OffsetReset::Earliest)
        .max_poll_records(3)
        .build()
        .expect("config");
    assert!(config.check_crcs());
    let mut consumer = Consumer::new(cluster, config).expect("consumer");
    consumer.read_ahead_enabled = false;
    consumer.assign(&[tp()]).expect("assign");
    consumer
}

/// Polls until a poll returns nothing; the offsets and values, and how
/// many batch CRCs the polls checked.
fn drain(consumer: &mut Consumer) -> (Vec<(u64, Vec<u8>)>, u64) {
    let before = crc_checks();
    let mut records = Vec::new();
    loop {
        let polled = consumer.poll(Duration::ZERO).expect("poll");
        if polled.is_empty() {
            break;
        }
        records.extend(
            polled
                .iter()
                .map(|r| (r.offset(), r.value().expect("value").to_vec())),
        );
    }
    (records, crc_checks() - before)
}

fn expected(offsets: std::ops::Range<u64>) -> Vec<(u64, Vec<u8>)> {
    offsets.map(|o| (o, value(o))).collect()
}

#[test]
fn batches_this_process_appended_are_returned_without_a_crc_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = open(dir.path());
    cluster.create_topic(NewTopic::new("t", 1)).expect("topic");
    append(&cluster, 8);
    // And through the producer (batches it built, appended unvalidated).
    let producer = Producer::new(&cluster, ProducerConfig::default()).expect("producer");
    for offset in 40..47 {
        producer
            .send(ProducerRecord::new("t", value(offset)))
            .expect("send")
            .wait()
            .expect("ack");
    }
    producer.close().expect("close producer");
    let (records, checks) = drain(&mut consumer(&cluster));
    assert_eq!(records, expected(0..47));
    assert_eq!(checks, 0);
    cluster.close().expect("close");
}

#[test]
fn after_a_reopen_old_batches_are_checked_once_and_new_appends_are_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = open(dir.path());
    cluster.create_topic(NewTopic::new("t", 1)).expect("topic");
    append(&cluster, 6);
    cluster.close().expect("close");

    // Written by an earlier run: every batch is checked, once, though each
    // one spans two polls.
    let cluster = open(dir.path());
    append(&cluster, 4);
    let (records, checks) = drain(&mut consumer(&cluster));
    assert_eq!(records, expected(0..50));
    assert_eq!(checks, 6);
    // A second consumer checks the old batches again (nothing remembers a
    // consumer's checks), never the new ones.
    let (records, checks) = drain(&mut consumer(&cluster));
    assert_eq!(records.len(), 50);
    assert_eq!(checks, 6);
    cluster.close().expect("close");
}

#[test]
fn a_byte_flipped_while_the_log_was_closed_is_found_next_to_fresh_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = open(dir.path());
    // An index entry per batch, so that a read past the damage starts at
    // its batch instead of walking (and failing) from the segment's start.
    let config = crate::TopicConfig::new()
        .set("index.interval.bytes", "1")
        .expect("config");
    cluster
        .create_topic(NewTopic::new("t", 1).config(config))
        .expect("topic");
    append(&cluster, 3);
    cluster.close().expect("close");
    // Another process damages the second batch's value.
    let log = dir.path().join("broker-0/t-0/00000000000000000000.log");
    let mut bytes = std::fs::read(&log).expect("read");
    let at = bytes
        .windows(12)
        .position(|w| w == value(7).as_slice())
        .expect("value 7");
    bytes[at] = b'V';
    std::fs::write(&log, &bytes).expect("write");

    // Reopened (cleanly closed: nothing scanned), appended to, read.
    let cluster = open(dir.path());
    append(&cluster, 2);
    let mut consumer = consumer(&cluster);
    let before = crc_checks();
    let mut records = Vec::new();
    let err = loop {
        match consumer.poll(Duration::ZERO) {
            Ok(polled) => records.extend(polled.iter().map(|r| r.offset())),
            Err(e) => break e,
        }
    };
    assert_eq!(records, (0..5).collect::<Vec<_>>());
    assert!(
        matches!(
            err,
            Error::CorruptRecord {
                offset: 5,
                cause: FormatError::CrcMismatch { .. },
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(consumer.position(&tp()).expect("position"), 5);
    // Past the damage: the third old batch is checked, the new ones not.
    // (At its last offset, which its offset index entry names: a read at
    // an offset the index places in the damaged batch walks through it.)
    consumer.seek(&tp(), 14).expect("seek");
    let (records, checks) = drain(&mut consumer);
    assert_eq!(records, expected(14..25));
    assert_eq!(crc_checks() - before, 2 + checks);
    assert_eq!(checks, 1);
    cluster.close().expect("close");
}

#[test]
fn a_read_only_view_checks_every_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = open(dir.path());
    cluster.create_topic(NewTopic::new("t", 1)).expect("topic");
    append(&cluster, 4);
    // While `cluster` holds the directory and its bytes count as checked
    // in it.
    let view = Cluster::open_read_only(dir.path(), ClusterConfig::default()).expect("view");
    let (records, checks) = drain(&mut consumer(&view));
    assert_eq!(records, expected(0..20));
    assert_eq!(checks, 4);
    view.close().expect("close view");
    let (records, checks) = drain(&mut consumer(&cluster));
    assert_eq!(records, expected(0..20));
    assert_eq!(checks, 0);
    cluster.close().expect("close");
}
