//! Consumer reads: round trips of everything appended, max.poll.records,
//! positions, seeks, offset lookups, pause/resume, auto.offset.reset,
//! compressed batches and bad input.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use logbus::format::{BatchBuilder, Header, set_log_append_time};
use logbus::{
    Cluster, ClusterConfig, Compression, Consumer, ConsumerConfig, ConsumerRecord, Error, NewTopic,
    OffsetReset, Partition, TimestampType, TopicPartition,
};

const TS: i64 = 1_700_000_000_000;

fn open(dir: &Path) -> Cluster {
    Cluster::open(dir, ClusterConfig::default()).unwrap()
}

fn tp(topic: &str, partition: u32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

/// Appends one batch of `values` (keys `k{i}`, timestamps `TS + first + i`
/// where `first` is the index of the first value in the log, so timestamp
/// and offset move together for single-batch-per-call tests).
fn append(partition: &Partition, values: &[&str], compression: Compression) -> u64 {
    let start = partition.log_end_offset().unwrap() as i64;
    let mut batch = BatchBuilder::new(compression);
    for (i, v) in values.iter().enumerate() {
        batch.append(
            TS + start + i as i64,
            Some(format!("k{}", start + i as i64).as_bytes()),
            Some(v.as_bytes()),
            &[],
        );
    }
    partition
        .append(&mut batch.build().unwrap().to_vec())
        .unwrap()
        .first_offset()
}

/// Appends `n` records with values `v{offset}` in batches of `per_batch`.
fn fill(partition: &Partition, n: usize, per_batch: usize) {
    let mut done = 0;
    while done < n {
        let start = partition.log_end_offset().unwrap() as usize;
        let values: Vec<String> = (start..start + per_batch.min(n - done))
            .map(|o| format!("v{o}"))
            .collect();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        append(partition, &refs, Compression::None);
        done += refs.len();
    }
}

fn consumer(cluster: &Cluster, reset: OffsetReset) -> Consumer {
    let config = ConsumerConfig::builder()
        .auto_offset_reset(reset)
        .build()
        .unwrap();
    Consumer::new(cluster, config).unwrap()
}

/// Polls without waiting until a poll comes back empty.
fn drain(consumer: &mut Consumer) -> Vec<ConsumerRecord> {
    let mut all = Vec::new();
    loop {
        let records = consumer.poll(Duration::ZERO).unwrap();
        if records.is_empty() {
            return all;
        }
        all.extend(records);
    }
}

fn offsets(records: &[ConsumerRecord]) -> Vec<u64> {
    records.iter().map(ConsumerRecord::offset).collect()
}

fn value(record: &ConsumerRecord) -> String {
    String::from_utf8(record.value().unwrap().to_vec()).unwrap()
}

#[test]
fn round_trip_of_every_field_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    let partition = cluster
        .create_topic(NewTopic::new("orders", 2))
        .unwrap()
        .partition(1)
        .unwrap();
    let mut batch = BatchBuilder::new(Compression::None);
    batch.append(
        TS,
        Some(b"key-0"),
        Some(b"value-0"),
        &[
            Header::new("trace", Some(b"abc")),
            Header::new("empty", None),
        ],
    );
    batch.append(TS - 5, None, None, &[]);
    batch.append(TS + 7, Some(b""), Some(b""), &[Header::new("ü", Some(b""))]);
    partition
        .append(&mut batch.build().unwrap().to_vec())
        .unwrap();
    // A second batch stamped with the log append time.
    let mut batch = BatchBuilder::new(Compression::None);
    batch.append(TS, None, Some(b"stamped"), &[]);
    let mut raw = batch.build().unwrap().to_vec();
    set_log_append_time(&mut raw, TS + 1000);
    partition.append(&mut raw).unwrap();

    let check = |records: &[ConsumerRecord]| {
        assert_eq!(offsets(records), [0, 1, 2, 3]);
        for r in records {
            assert_eq!((r.topic(), r.partition()), ("orders", 1));
            assert_eq!(r.topic_partition(), tp("orders", 1));
        }
        let r = &records[0];
        assert_eq!(r.key(), Some(&b"key-0"[..]));
        assert_eq!(r.value(), Some(&b"value-0"[..]));
        assert_eq!(
            r.headers(),
            [
                Header::new("trace", Some(b"abc")),
                Header::new("empty", None)
            ]
        );
        assert_eq!(
            (r.timestamp(), r.timestamp_type()),
            (TS, TimestampType::CreateTime)
        );
        assert_eq!((records[1].key(), records[1].value()), (None, None));
        assert!(records[1].headers().is_empty());
        assert_eq!(records[1].timestamp(), TS - 5);
        assert_eq!(records[2].key().map(<[u8]>::len), Some(0));
        assert_eq!(records[2].value().map(<[u8]>::len), Some(0));
        assert_eq!(records[2].headers(), [Header::new("ü", Some(b""))]);
        assert_eq!(records[2].timestamp(), TS + 7);
        assert_eq!(
            (records[3].timestamp(), records[3].timestamp_type()),
            (TS + 1000, TimestampType::LogAppendTime)
        );
        assert_eq!(value(&records[3]), "stamped");
    };

    let mut c = consumer(&cluster, OffsetReset::Earliest);
    c.assign(&[tp("orders", 1)]).unwrap();
    let records = drain(&mut c);
    check(&records);
    assert_eq!(c.position(&tp("orders", 1)).unwrap(), 4);
    // Zero copy: values are views of the segment's mapping, the same memory
    // a raw read of the partition returns.
    let raw = partition.read(0, 1 << 20).unwrap();
    let range =
        raw.records().as_ptr() as usize..raw.records().as_ptr() as usize + raw.records().len();
    for r in &records {
        if let Some(v) = r.value().filter(|v| !v.is_empty()) {
            assert!(range.contains(&(v.as_ptr() as usize)), "value copied");
        }
    }
    drop((c, records, raw, partition));
    cluster.close().unwrap();

    let cluster = open(dir.path());
    let mut c = consumer(&cluster, OffsetReset::Earliest);
    c.assign(&[tp("orders", 1)]).unwrap();
    check(&drain(&mut c));
}

#[test]
fn max_poll_records_is_respected_and_positions_advance_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    let topic = cluster.create_topic(NewTopic::new("t", 2)).unwrap();
    fill(&topic.partition(0).unwrap(), 25, 4);
    fill(&topic.partition(1).unwrap(), 9, 9);
    let config = ConsumerConfig::builder()
        .max_poll_records(7)
        .auto_offset_reset(OffsetReset::Earliest)
        .build()
        .unwrap();
    let mut c = Consumer::new(&cluster, config).unwrap();
    c.assign(&[tp("t", 0), tp("t", 1)]).unwrap();
    let mut seen: HashMap<u32, Vec<u64>> = HashMap::new();
    let mut polls = 0;
    loop {
        let records = c.poll(Duration::ZERO).unwrap();
        if records.is_empty() {
            break;
        }
        polls += 1;
        assert!(records.count() <= 7);
        assert_eq!(records.iter().count(), records.count());
        for p in records.partitions() {
            let list = records.records(p);
            assert!(!list.is_empty());
            let got = seen.entry(p.partition).or_default();
            // Each partition continues exactly where it stopped.
            assert_eq!(
                list.first().unwrap().offset(),
                got.last().map_or(0, |o| o + 1)
            );
            got.extend(offsets(&list.to_vec()));
            assert_eq!(c.position(p).unwrap(), list.last().unwrap().offset() + 1);
        }
        for r in &records {
            assert_eq!(value(&r.to_record()), format!("v{}", r.offset()));
        }
    }
    assert_eq!(polls, 5); // 34 records, 7 at a time
    assert_eq!(seen[&0], (0..25).collect::<Vec<_>>());
    assert_eq!(seen[&1], (0..9).collect::<Vec<_>>());
    assert_eq!(c.position(&tp("t", 0)).unwrap(), 25);
    let empty = c.poll(Duration::ZERO).unwrap();
    assert!(empty.is_empty() && empty.records(&tp("t", 0)).is_empty());
    assert_eq!(empty.partitions().len(), 0);
}

#[test]
fn seeks_and_positions() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    let partition = cluster
        .create_topic(NewTopic::new("t", 1))
        .unwrap()
        .partition(0)
        .unwrap();
    fill(&partition, 10, 3);
    let t0 = tp("t", 0);

    // Default auto.offset.reset is latest, as in Kafka.
    let mut c = Consumer::new(&cluster, ConsumerConfig::default()).unwrap();
    c.assign(std::slice::from_ref(&t0)).unwrap();
    assert_eq!(c.position(&t0).unwrap(), 10);
    assert!(drain(&mut c).is_empty());

    c.seek_to_beginning(&[]).unwrap();
    assert_eq!(c.position(&t0).unwrap(), 0);
    c.seek(&t0, 4).unwrap();
    assert_eq!(c.position(&t0).unwrap(), 4);
    // Offset 4 sits inside the batch 3..=5: records below 4 are skipped.
    assert_eq!(offsets(&drain(&mut c)), (4..10).collect::<Vec<_>>());
    c.seek(&t0, 7).unwrap();
    let records = c.poll(Duration::ZERO).unwrap();
    assert_eq!(records.iter().next().map(|r| r.offset()), Some(7));
    // A seek drops what was buffered.
    c.seek(&t0, 1).unwrap();
    assert_eq!(offsets(&drain(&mut c)), (1..10).collect::<Vec<_>>());
    c.seek_to_beginning(std::slice::from_ref(&t0)).unwrap();
    c.seek_to_end(std::slice::from_ref(&t0)).unwrap();
    fill(&partition, 2, 2);
    // seek_to_end is looked up lazily, as in Kafka.
    assert_eq!(c.position(&t0).unwrap(), 12);
    assert!(drain(&mut c).is_empty());
    fill(&partition, 1, 1);
    assert_eq!(offsets(&drain(&mut c)), [12]);
}

#[test]
fn offsets_for_times_and_beginning_and_end_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    let topic = cluster.create_topic(NewTopic::new("t", 2)).unwrap();
    let p0 = topic.partition(0).unwrap();
    fill(&p0, 10, 4); // timestamps TS + offset
    p0.delete_records(3).unwrap();
    let c = Consumer::new(&cluster, ConsumerConfig::default()).unwrap();
    let (t0, t1) = (tp("t", 0), tp("t", 1));
    let both = [t0.clone(), t1.clone()];
    assert_eq!(
        c.beginning_offsets(&both).unwrap(),
        BTreeMap::from([(t0.clone(), 3), (t1.clone(), 0)])
    );
    assert_eq!(
        c.end_offsets(&both).unwrap(),
        BTreeMap::from([(t0.clone(), 10), (t1.clone(), 0)])
    );
    let found = c
        .offsets_for_times(&BTreeMap::from([(t0.clone(), TS + 5), (t1.clone(), 0)]))
        .unwrap();
    let hit = found[&t0].unwrap();
    assert_eq!((hit.offset(), hit.timestamp()), (5, TS + 5));
    assert_eq!(found[&t1], None);
    // Below the log start: the first readable record.
    let found = c
        .offsets_for_times(&BTreeMap::from([(t0.clone(), 0)]))
        .unwrap();
    assert_eq!(found[&t0].map(|f| f.offset()), Some(3));
    let found = c
        .offsets_for_times(&BTreeMap::from([(t0.clone(), TS + 10)]))
        .unwrap();
    assert_eq!(found[&t0], None);
}

#[test]
fn paused_partitions_return_nothing_and_keep_positions() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    let topic = cluster.create_topic(NewTopic::new("t", 2)).unwrap();
    fill(&topic.partition(0).unwrap(), 6, 3);
    fill(&topic.partition(1).unwrap(), 6, 3);
    let (t0, t1) = (tp("t", 0), tp("t", 1));
    let config = ConsumerConfig::builder()
        .max_poll_records(2)
        .auto_offset_reset(OffsetReset::Earliest)
        .build()
        .unwrap();
    let mut c = Consumer::new(&cluster, config).unwrap();
    c.assign(&[t0.clone(), t1.clone()]).unwrap();
    // Buffer records of both partitions, then pause one mid-fetch.
    let first = c.poll(Duration::ZERO).unwrap();
    assert_eq!(first.count(), 2);
    c.pause(std::slice::from_ref(&t0)).unwrap();
    assert_eq!(c.paused(), std::slice::from_ref(&t0));
    let before = c.position(&t0).unwrap();
    let rest = drain(&mut c);
    assert!(rest.iter().all(|r| r.partition() == 1));
    assert_eq!(c.position(&t0).unwrap(), before);
    assert_eq!(c.position(&t1).unwrap(), 6);
    // Still nothing while paused, even after more appends.
    fill(&topic.partition(0).unwrap(), 2, 2);
    assert!(c.poll(Duration::ZERO).unwrap().is_empty());
    c.resume(std::slice::from_ref(&t0)).unwrap();
    assert!(c.paused().is_empty());
    let resumed = drain(&mut c);
    assert_eq!(offsets(&resumed), (before..8).collect::<Vec<_>>());
    assert!(resumed.iter().all(|r| r.partition() == 0));
}

#[test]
fn auto_offset_reset_after_delete_records() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    let partition = cluster
        .create_topic(NewTopic::new("t", 1))
        .unwrap()
        .partition(0)
        .unwrap();
    fill(&partition, 10, 2);
    let t0 = tp("t", 0);
    let mut consumers: Vec<Consumer> = [
        OffsetReset::Earliest,
        OffsetReset::Latest,
        OffsetReset::None,
    ]
    .into_iter()
    .map(|reset| {
        let mut c = consumer(&cluster, reset);
        c.assign(std::slice::from_ref(&t0)).unwrap();
        c.seek(&t0, 2).unwrap();
        c
    })
    .collect();
    partition.delete_records(6).unwrap();
    let earliest = drain(&mut consumers[0]);
    assert_eq!(offsets(&earliest), (6..10).collect::<Vec<_>>());
    assert!(drain(&mut consumers[1]).is_empty());
    assert_eq!(consumers[1].position(&t0).unwrap(), 10);
    let err = consumers[2].poll(Duration::ZERO).unwrap_err();
    assert!(
        matches!(&err, Error::NoOffsetForPartition { topic, partition: 0 } if topic == "t"),
        "{err}"
    );
    // The position is unchanged; a seek into the log clears the error.
    assert_eq!(consumers[2].position(&t0).unwrap(), 2);
    consumers[2].seek(&t0, 8).unwrap();
    assert_eq!(offsets(&drain(&mut consumers[2])), [8, 9]);

    // A position above the high watermark is out of range too.
    consumers[0].seek(&t0, 50).unwrap();
    assert_eq!(
        offsets(&drain(&mut consumers[0])),
        (6..10).collect::<Vec<_>>()
    );

    // A new assignment with reset=none has no position at all.
    let mut none = consumer(&cluster, OffsetReset::None);
    none.assign(std::slice::from_ref(&t0)).unwrap();
    assert!(matches!(
        none.position(&t0),
        Err(Error::NoOffsetForPartition { .. })
    ));
    assert!(matches!(
        none.poll(Duration::ZERO),
        Err(Error::NoOffsetForPartition { .. })
    ));
}

#[test]
fn compressed_batches_of_every_codec_decode() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    let partition = cluster
        .create_topic(NewTopic::new("t", 1))
        .unwrap()
        .partition(0)
        .unwrap();
    let codecs = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    for codec in codecs {
        append(&partition, &[codec.name(), "second", "third"], codec);
    }
    let mut c = consumer(&cluster, OffsetReset::Earliest);
    c.assign(&[tp("t", 0)]).unwrap();
    c.seek(&tp("t", 0), 4).unwrap(); // inside the gzip batch
    let records = drain(&mut c);
    assert_eq!(offsets(&records), (4..15).collect::<Vec<_>>());
    let values: Vec<String> = records.iter().map(value).collect();
    assert_eq!(
        values,
        [
            "second", "third", "snappy", "second", "third", "lz4", "second", "third", "zstd",
            "second", "third"
        ]
    );
    for r in &records {
        assert_eq!(r.key().unwrap(), format!("k{}", r.offset()).as_bytes());
        assert_eq!(r.timestamp(), TS + r.offset() as i64);
    }
}

#[test]
fn max_partition_fetch_bytes_and_fetch_max_bytes_bound_fetches() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    let topic = cluster.create_topic(NewTopic::new("t", 3)).unwrap();
    for p in 0..3 {
        fill(&topic.partition(p).unwrap(), 40, 4);
    }
    // Tiny limits: every fetch still makes progress (a batch larger than the
    // limit is fetched whole) and nothing is lost or repeated.
    let config = ConsumerConfig::builder()
        .max_partition_fetch_bytes(1)
        .fetch_max_bytes(1)
        .auto_offset_reset(OffsetReset::Earliest)
        .build()
        .unwrap();
    let mut c = Consumer::new(&cluster, config).unwrap();
    c.assign(&[tp("t", 0), tp("t", 1), tp("t", 2)]).unwrap();
    let mut per_partition: HashMap<u32, Vec<u64>> = HashMap::new();
    loop {
        let records = c.poll(Duration::ZERO).unwrap();
        if records.is_empty() {
            break;
        }
        // fetch.max.bytes of 1: one batch per poll.
        assert_eq!(records.count(), 4);
        for r in records {
            per_partition
                .entry(r.partition())
                .or_default()
                .push(r.offset());
        }
    }
    for p in 0..3 {
        assert_eq!(per_partition[&p], (0..40).collect::<Vec<_>>());
    }
}

#[test]
fn corrupt_batches_fail_with_check_crcs_and_pass_without() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    // Three one-record batches fill a segment; the fourth rolls a new one.
    // With an index entry per batch recovery trusts the sealed segment
    // (it checks only its last batch), so the damaged second batch is left
    // for the consumer to find, inside a read that starts at offset 0.
    let config = logbus::TopicConfig::new()
        .segment_bytes(240)
        .unwrap()
        .set("index.interval.bytes", "1")
        .unwrap();
    let partition = cluster
        .create_topic(NewTopic::new("t", 1).config(config))
        .unwrap()
        .partition(0)
        .unwrap();
    append(&partition, &["good"], Compression::None);
    append(&partition, &["payload"], Compression::None);
    append(&partition, &["after"], Compression::None);
    append(&partition, &["next"], Compression::None);
    assert_eq!(partition.log_start_offset().unwrap(), 0);
    drop(partition);
    cluster.close().unwrap();
    // Flip one byte of the second batch's value on disk.
    let log = dir.path().join("broker-0/t-0/00000000000000000000.log");
    let mut bytes = std::fs::read(&log).unwrap();
    let at = bytes.windows(7).position(|w| w == b"payload").unwrap();
    bytes[at] = b'P';
    std::fs::write(&log, &bytes).unwrap();

    let cluster = open(dir.path());
    let mut c = consumer(&cluster, OffsetReset::Earliest);
    c.assign(&[tp("t", 0)]).unwrap();
    let first = c.poll(Duration::ZERO).unwrap();
    assert_eq!(offsets(&first.into_iter().collect::<Vec<_>>()), [0]);
    for _ in 0..2 {
        let err = c.poll(Duration::ZERO).unwrap_err();
        assert!(
            matches!(err, Error::CorruptRecord { ref topic, partition: 0, offset: 1, .. } if topic == "t"),
            "{err}"
        );
        assert_eq!(c.position(&tp("t", 0)).unwrap(), 1);
    }
    // Seeking past the damage reads on.
    c.seek(&tp("t", 0), 2).unwrap();
    assert_eq!(
        drain(&mut c).iter().map(value).collect::<Vec<_>>(),
        ["after", "next"]
    );
    let config = ConsumerConfig::builder()
        .check_crcs(false)
        .auto_offset_reset(OffsetReset::Earliest)
        .build()
        .unwrap();
    let mut unchecked = Consumer::new(&cluster, config).unwrap();
    unchecked.assign(&[tp("t", 0)]).unwrap();
    let records = drain(&mut unchecked);
    assert_eq!(
        records.iter().map(value).collect::<Vec<_>>(),
        ["good", "Payload", "after", "next"]
    );
}

#[test]
fn bad_input_gives_the_documented_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    let partition = cluster
        .create_topic(NewTopic::new("t", 2))
        .unwrap()
        .partition(0)
        .unwrap();
    fill(&partition, 5, 5);
    let mut c = consumer(&cluster, OffsetReset::Earliest);
    let (t0, t1, nowhere) = (tp("t", 0), tp("t", 1), tp("t", 9));

    let poll = c.poll(Duration::ZERO).unwrap_err();
    assert!(matches!(poll, Error::IllegalState(_)), "{poll}");
    for err in [
        c.assign(&[t0.clone(), nowhere.clone()]).unwrap_err(),
        c.assign(&[tp("missing", 0)]).unwrap_err(),
    ] {
        assert!(
            matches!(err, Error::UnknownTopicOrPartition { .. }),
            "{err}"
        );
    }
    assert!(c.assignment().is_empty());

    c.assign(&[t0.clone(), t0.clone()]).unwrap();
    assert_eq!(c.assignment(), std::slice::from_ref(&t0));
    c.seek(&t0, 3).unwrap();
    let errors = [
        c.seek(&t1, 0).unwrap_err(),
        c.position(&t1).unwrap_err(),
        c.pause(&[t0.clone(), t1.clone()]).unwrap_err(),
        c.resume(std::slice::from_ref(&t1)).unwrap_err(),
        c.seek_to_beginning(&[t0.clone(), t1.clone()]).unwrap_err(),
        c.seek_to_end(std::slice::from_ref(&t1)).unwrap_err(),
    ];
    for err in errors {
        assert!(
            matches!(&err, Error::IllegalState(m) if m.contains("No current assignment for partition t-1")),
            "{err}"
        );
    }
    assert!(c.paused().is_empty());
    assert_eq!(c.position(&t0).unwrap(), 3);

    let negative = c
        .offsets_for_times(&BTreeMap::from([(t0.clone(), 0), (t1.clone(), -1)]))
        .unwrap_err();
    assert!(matches!(negative, Error::InvalidArgument(_)), "{negative}");
    let unknown = c.end_offsets(std::slice::from_ref(&nowhere)).unwrap_err();
    assert!(matches!(unknown, Error::UnknownTopicOrPartition { .. }));
    let unknown = c.beginning_offsets(&[tp("missing", 0)]).unwrap_err();
    assert!(matches!(unknown, Error::UnknownTopicOrPartition { .. }));

    for (config, setting) in [
        (
            ConsumerConfig::builder().max_poll_records(0),
            "max.poll.records",
        ),
        (
            ConsumerConfig::builder().fetch_max_wait(Duration::from_millis(1 << 40)),
            "fetch.max.wait.ms",
        ),
        (
            ConsumerConfig::builder().fetch_max_bytes(u64::MAX),
            "fetch.max.bytes",
        ),
    ] {
        let err = config.build().unwrap_err();
        assert!(
            matches!(&err, Error::InvalidConfig(m) if m.contains(setting)),
            "{err}"
        );
    }
    assert!(matches!(
        "sometimes".parse::<OffsetReset>(),
        Err(Error::InvalidConfig(_))
    ));

    // Nothing above changed what the consumer reads.
    assert_eq!(offsets(&drain(&mut c)), [3, 4]);
    // Unassigning everything makes poll illegal again.
    c.assign(&[]).unwrap();
    assert!(matches!(
        c.poll(Duration::ZERO),
        Err(Error::IllegalState(_))
    ));
}

#[test]
fn reassignment_keeps_positions_of_partitions_that_stay() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = open(dir.path());
    let topic = cluster.create_topic(NewTopic::new("t", 2)).unwrap();
    fill(&topic.partition(0).unwrap(), 5, 5);
    fill(&topic.partition(1).unwrap(), 5, 5);
    let (t0, t1) = (tp("t", 0), tp("t", 1));
    let mut c = consumer(&cluster, OffsetReset::Earliest);
    c.assign(std::slice::from_ref(&t0)).unwrap();
    c.seek(&t0, 2).unwrap();
    c.assign(&[t1.clone(), t0.clone()]).unwrap();
    assert_eq!(c.assignment(), [t1.clone(), t0.clone()]);
    assert_eq!(c.position(&t0).unwrap(), 2);
    assert_eq!(c.position(&t1).unwrap(), 0);
    assert_eq!(drain(&mut c).len(), 8);
    c.unsubscribe();
    assert!(c.assignment().is_empty());
    assert!(c.client_id().starts_with("consumer-"));
}
