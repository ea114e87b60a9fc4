//! The bridge to Kafka (`bridge::Mirror`) against librdkafka's mock
//! cluster: in-process Kafka brokers, no network beyond loopback.
//!
//! Waiting on the Kafka side polls with a timeout in a loop bounded by a
//! deadline (an external system); the mirror's own threads are never
//! waited for by sleeping.
#![cfg(feature = "kafka")]

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use logbus::bridge::{Direction, Mirror, MirrorBuilder, MirrorError};
use logbus::{
    Cluster, ClusterConfig, Consumer, ConsumerConfig, Header, IsolationLevel, NewTopic,
    OffsetAndMetadata, OffsetReset, Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header as KafkaHeader, Headers as _, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};

/// How long anything on the Kafka side may take before a test fails.
const DEADLINE: Duration = Duration::from_secs(60);

/// One record as both sides see it: partition, key, value, headers,
/// timestamp.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rec {
    partition: u32,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp: i64,
}

fn open(dir: &tempfile::TempDir) -> Cluster {
    Cluster::open(dir.path(), ClusterConfig::default()).expect("open cluster")
}

fn mock() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    MockCluster::new(3).expect("mock cluster")
}

/// The `i`th test record: keyed (every 7th without a key), headers with a
/// repeated key and a null value, every 11th value null, explicit
/// timestamps.
fn record(topic: &str, i: usize) -> ProducerRecord {
    let value = (i % 11 != 5).then(|| format!("value-{i}").into_bytes());
    let mut r = ProducerRecord::new(topic, Vec::new())
        .with_value(value)
        .with_timestamp(1_700_000_000_000 + i as i64)
        .with_headers(vec![
            Header {
                key: "trace".into(),
                value: Some(format!("t{i}").into_bytes().into()),
            },
            Header {
                key: "trace".into(),
                value: Some(vec![0, 1, 2, (i % 256) as u8].into()),
            },
            Header {
                key: "empty".into(),
                value: None,
            },
        ]);
    if i % 7 != 3 {
        r = r.with_key(format!("key-{}", i % 13));
    }
    r
}

/// Produces `range` of the test records to a logbus topic.
fn produce_logbus(cluster: &Cluster, topic: &str, range: std::ops::Range<usize>) {
    let producer = Producer::new(cluster, ProducerConfig::default()).expect("producer");
    let sent: Vec<_> = range
        .map(|i| producer.send(record(topic, i)).expect("send"))
        .collect();
    for s in sent {
        s.wait().expect("appended");
    }
    producer.close().expect("close");
}

/// Produces `range` of the test records to a Kafka topic with `partitions`
/// partitions (partition chosen by key hash, as logbus would).
fn produce_kafka(bootstrap: &str, topic: &str, partitions: u32, range: std::ops::Range<usize>) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("kafka producer");
    for i in range {
        let r = record(topic, i);
        let partition = match r.key() {
            Some(k) => logbus::partition_for_key(k, NonZeroU32::new(partitions).unwrap()),
            None => (i as u32) % partitions,
        };
        let mut headers = OwnedHeaders::new();
        for h in r.headers() {
            headers = headers.insert(KafkaHeader {
                key: &h.key,
                value: h.value.as_deref(),
            });
        }
        let mut br = BaseRecord::<[u8], [u8]>::to(topic)
            .partition(partition as i32)
            .timestamp(r.timestamp().unwrap())
            .headers(headers);
        if let Some(k) = r.key() {
            br = br.key(&k[..]);
        }
        if let Some(v) = r.value() {
            br = br.payload(&v[..]);
        }
        producer.send(br).map_err(|(e, _)| e).expect("kafka send");
    }
    producer.flush(DEADLINE).expect("kafka flush");
}

/// `builder`'s mirror, which stops as a killed process would after
/// `crash` records when given.
fn built_crashing_after(builder: MirrorBuilder, crash: Option<u64>) -> Mirror {
    match crash {
        Some(n) => builder.crash_after_records(n),
        None => builder,
    }
    .build()
    .unwrap()
}

/// Every record of a logbus topic, per partition in offset order.
fn read_logbus(cluster: &Cluster, topic: &str) -> Vec<Rec> {
    read_logbus_as(cluster, topic, IsolationLevel::ReadUncommitted)
}

/// Every record of a logbus topic a consumer of this isolation level reads.
fn read_logbus_as(cluster: &Cluster, topic: &str, isolation: IsolationLevel) -> Vec<Rec> {
    let partitions = cluster.topic(topic).expect("topic").partition_count();
    let tps: Vec<_> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    let mut consumer = Consumer::new(
        cluster,
        ConsumerConfig::builder()
            .auto_offset_reset(OffsetReset::Earliest)
            .isolation_level(isolation)
            .build()
            .unwrap(),
    )
    .unwrap();
    consumer.assign(&tps).unwrap();
    let ends = consumer.end_offsets(&tps).unwrap();
    let mut out = Vec::new();
    while tps
        .iter()
        .any(|tp| consumer.position(tp).unwrap() < ends[tp])
    {
        for r in consumer.poll(Duration::from_millis(100)).unwrap().iter() {
            out.push(Rec {
                partition: r.partition(),
                key: r.key().map(<[u8]>::to_vec),
                value: r.value().map(<[u8]>::to_vec),
                headers: r
                    .headers()
                    .iter()
                    .map(|h| (h.key.clone(), h.value.as_ref().map(|v| v.to_vec())))
                    .collect(),
                timestamp: r.timestamp(),
            });
        }
    }
    out.sort_by_key(|r| r.partition); // stable: offset order within a partition
    out
}

/// Every record of a Kafka topic (with their offsets), per partition in
/// offset order, read until every partition's end.
fn read_kafka(bootstrap: &str, topic: &str, isolation: &str) -> Vec<(i64, Rec)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation)
        .create()
        .expect("kafka consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), DEADLINE)
        .expect("metadata");
    let partitions = metadata.topics()[0].partitions().len();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p as i32, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let mut eof = vec![false; partitions];
    let mut out = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while eof.iter().any(|e| !e) {
        assert!(
            Instant::now() < deadline,
            "Kafka topic {topic} not read in time"
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => eof[p as usize] = true,
            Some(Err(e)) => panic!("consume: {e}"),
            Some(Ok(m)) => out.push((
                m.offset(),
                Rec {
                    partition: m.partition() as u32,
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    headers: m
                        .headers()
                        .map(|hs| {
                            hs.iter()
                                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                                .collect()
                        })
                        .unwrap_or_default(),
                    timestamp: m.timestamp().to_millis().unwrap(),
                },
            )),
        }
    }
    out.sort_by_key(|(o, r)| (r.partition, *o));
    out
}

fn records_only(kafka: Vec<(i64, Rec)>) -> Vec<Rec> {
    kafka.into_iter().map(|(_, r)| r).collect()
}

#[test]
fn round_trip_logbus_to_kafka_to_logbus_is_byte_equal() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(&dir_a), open(&dir_b));
    a.create_topic(NewTopic::new("orders", 3)).unwrap();
    produce_logbus(&a, "orders", 0..90);
    let kafka = mock();
    kafka.create_topic("orders", 3, 1).unwrap();

    let out = Mirror::builder(&a, "out")
        .bootstrap_servers(kafka.bootstrap_servers())
        .to_kafka("orders")
        .records_per_checkpoint(25)
        .build()
        .unwrap();
    let report = out.run_once().unwrap();
    assert_eq!(
        (report.records_to_kafka, report.records_from_kafka),
        (90, 0)
    );
    let source = read_logbus(&a, "orders");
    assert_eq!(source.len(), 90);
    assert!(source.iter().any(|r| r.value.is_none()) && source.iter().any(|r| r.key.is_none()));
    let in_kafka = records_only(read_kafka(
        &kafka.bootstrap_servers(),
        "orders",
        "read_committed",
    ));
    assert_eq!(
        in_kafka, source,
        "Kafka holds the same records in the same partitions"
    );

    let back = Mirror::builder(&b, "in")
        .bootstrap_servers(kafka.bootstrap_servers())
        .from_kafka_as("orders", "orders-copy")
        .records_per_checkpoint(25)
        .build()
        .unwrap();
    assert_eq!(back.run_once().unwrap().records_from_kafka, 90);
    assert_eq!(b.topic("orders-copy").unwrap().partition_count(), 3);
    assert_eq!(
        read_logbus(&b, "orders-copy"),
        source,
        "byte-equal after the round trip"
    );

    // Both resume where they stopped: nothing is copied twice.
    assert_eq!(out.run_once().unwrap().total(), 0);
    assert_eq!(back.run_once().unwrap().total(), 0);
    produce_logbus(&a, "orders", 90..100);
    assert_eq!(out.run_once().unwrap().records_to_kafka, 10);
    assert_eq!(back.run_once().unwrap().records_from_kafka, 10);
    assert_eq!(read_logbus(&b, "orders-copy"), read_logbus(&a, "orders"));

    // Progress lives in the mirrors' groups.
    let committed = a.list_group_offsets("__mirror-out").unwrap();
    let ends: u64 = committed.values().map(|o| o.offset).sum();
    assert_eq!(ends, 100);
}

#[test]
fn partition_counts_that_differ_place_records_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir);
    a.create_topic(NewTopic::new("events", 2)).unwrap();
    produce_logbus(&a, "events", 0..40);
    let kafka = mock();
    kafka.create_topic("events-wide", 5, 1).unwrap();
    let mirror = Mirror::builder(&a, "wide")
        .bootstrap_servers(kafka.bootstrap_servers())
        .to_kafka_as("events", "events-wide")
        .build()
        .unwrap();
    assert_eq!(mirror.run_once().unwrap().records_to_kafka, 40);
    let source = read_logbus(&a, "events");
    let in_kafka = read_kafka(&kafka.bootstrap_servers(), "events-wide", "read_committed");
    assert_eq!(in_kafka.len(), 40);
    let five = NonZeroU32::new(5).unwrap();
    for (_, r) in &in_kafka {
        let original = source
            .iter()
            .find(|s| s.value == r.value && s.timestamp == r.timestamp)
            .expect("a source record");
        let expected = match &original.key {
            Some(k) => logbus::partition_for_key(k, five),
            None => original.partition % 5,
        };
        assert_eq!(r.partition, expected, "{r:?}");
        assert_eq!((&r.key, &r.headers), (&original.key, &original.headers));
    }
    // Offsets of records spread by key do not translate.
    let tp = TopicPartition::new("events", 0);
    a.alter_group_offsets("app", &BTreeMap::from([(tp, OffsetAndMetadata::new(3))]))
        .unwrap();
    assert!(mirror.translate_offsets("app").unwrap().is_empty());
}

/// Source offsets of test records are found back by their unique
/// timestamps.
fn by_timestamp(records: &[Rec]) -> BTreeMap<i64, usize> {
    let mut count = BTreeMap::new();
    for r in records {
        *count.entry(r.timestamp).or_insert(0) += 1;
    }
    count
}

#[test]
fn mirror_to_kafka_killed_midway_resumes_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir);
    a.create_topic(NewTopic::new("orders", 3)).unwrap();
    produce_logbus(&a, "orders", 0..100);
    let kafka = mock();
    kafka.create_topic("orders", 3, 1).unwrap();
    let build = |crash: Option<u64>| {
        built_crashing_after(
            Mirror::builder(&a, "m")
                .bootstrap_servers(kafka.bootstrap_servers())
                .to_kafka("orders")
                .records_per_checkpoint(10),
            crash,
        )
    };
    let first = build(Some(35));
    assert!(matches!(first.run_once(), Err(MirrorError::Crashed)));
    assert!(
        matches!(first.run_once(), Err(MirrorError::Crashed)),
        "a crashed mirror stays down"
    );
    // Three checkpoints of 10 were committed before the crash.
    let committed: u64 = a
        .list_group_offsets("__mirror-m")
        .unwrap()
        .values()
        .map(|o| o.offset)
        .sum();
    assert_eq!(committed, 30);
    drop(first); // killed: no stop, no final checkpoint

    let second = build(None);
    assert_eq!(second.run_once().unwrap().records_to_kafka, 70);
    let in_kafka = records_only(read_kafka(
        &kafka.bootstrap_servers(),
        "orders",
        "read_committed",
    ));
    let seen = by_timestamp(&in_kafka);
    let source = read_logbus(&a, "orders");
    assert!(
        source.iter().all(|r| seen.contains_key(&r.timestamp)),
        "every record reached Kafka"
    );
    // Only the 5 records sent after the last checkpoint came twice.
    assert_eq!(in_kafka.len(), 105);
    assert_eq!(seen.values().filter(|&&n| n == 2).count(), 5);
    // Deduplicated, Kafka holds exactly the source.
    let mut dedup = in_kafka.clone();
    dedup.sort();
    dedup.dedup();
    let mut expected = source.clone();
    expected.sort();
    assert_eq!(dedup, expected);
}

#[test]
fn mirror_from_kafka_killed_midway_resumes_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir);
    let kafka = mock();
    kafka.create_topic("clicks", 3, 1).unwrap();
    produce_kafka(&kafka.bootstrap_servers(), "clicks", 3, 0..100);
    let build = |crash: Option<u64>| {
        built_crashing_after(
            Mirror::builder(&b, "in")
                .bootstrap_servers(kafka.bootstrap_servers())
                .from_kafka("clicks")
                .records_per_checkpoint(10),
            crash,
        )
    };
    let first = build(Some(35));
    assert!(matches!(first.run_once(), Err(MirrorError::Crashed)));
    drop(first);
    let second = build(None);
    let copied = second.run_once().unwrap().records_from_kafka;
    assert_eq!(copied, 70, "resumed at the last checkpoint (30 records)");
    let in_logbus = read_logbus(&b, "clicks");
    assert_eq!(in_logbus.len(), 105);
    let in_kafka = records_only(read_kafka(
        &kafka.bootstrap_servers(),
        "clicks",
        "read_committed",
    ));
    let seen = by_timestamp(&in_logbus);
    assert!(in_kafka.iter().all(|r| seen.contains_key(&r.timestamp)));
    let mut dedup = in_logbus;
    dedup.sort();
    dedup.dedup();
    let mut expected = in_kafka;
    expected.sort();
    assert_eq!(dedup, expected);
}

#[test]
fn exactly_once_mirror_commits_in_transactions_and_resumes_after_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir);
    a.create_topic(NewTopic::new("payments", 2)).unwrap();
    produce_logbus(&a, "payments", 0..60);
    let kafka = mock();
    kafka.create_topic("payments", 2, 1).unwrap();
    let build = |crash: Option<u64>| {
        built_crashing_after(
            Mirror::builder(&a, "eos")
                .bootstrap_servers(kafka.bootstrap_servers())
                .to_kafka("payments")
                .exactly_once(true)
                .records_per_checkpoint(10),
            crash,
        )
    };
    let first = build(Some(25));
    assert!(matches!(first.run_once(), Err(MirrorError::Crashed)));
    drop(first); // its third transaction (5 records) is left open

    let second = build(None);
    assert_eq!(
        second.run_once().unwrap().records_to_kafka,
        40,
        "resumed after 2 transactions"
    );
    let in_kafka = records_only(read_kafka(
        &kafka.bootstrap_servers(),
        "payments",
        "read_committed",
    ));
    let seen = by_timestamp(&in_kafka);
    let source = read_logbus(&a, "payments");
    assert!(source.iter().all(|r| seen.contains_key(&r.timestamp)));
    // A Kafka broker hides the 5 records of the transaction the second
    // mirror's init_transactions aborted from read_committed readers;
    // librdkafka's mock cluster writes no transaction markers and serves
    // them, so here they show as the only duplicates.
    assert_eq!(in_kafka.len(), 65);
    assert_eq!(seen.values().filter(|&&n| n == 2).count(), 5);
    assert_eq!(second.run_once().unwrap().total(), 0);
}

/// librdkafka's mock cluster gives every `InitProducerId` a new producer id
/// instead of bumping the epoch, so a newer mirror does not fence an older
/// one there: the fencing is injected as the coordinator's answer.
#[test]
fn a_fenced_mirror_refuses_to_run_and_its_successor_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir);
    a.create_topic(NewTopic::new("ledger", 1)).unwrap();
    produce_logbus(&a, "ledger", 0..10);
    let kafka = mock();
    kafka.create_topic("ledger", 1, 1).unwrap();
    let build = || {
        Mirror::builder(&a, "ledger")
            .bootstrap_servers(kafka.bootstrap_servers())
            .to_kafka("ledger")
            .exactly_once(true)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    };
    let old = build();
    assert_eq!(old.run_once().unwrap().records_to_kafka, 10);
    produce_logbus(&a, "ledger", 10..15);
    kafka.request_errors(
        RDKafkaApiKey::EndTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED],
    );
    let err = old.run_once().unwrap_err();
    assert!(matches!(err, MirrorError::Fenced { .. }), "{err}");
    assert!(
        matches!(old.run_once(), Err(MirrorError::Fenced { .. })),
        "a fenced mirror stays down"
    );
    // Its last transaction was not checkpointed: the successor copies it.
    let committed = a.list_group_offsets("__mirror-ledger").unwrap();
    assert_eq!(committed[&TopicPartition::new("ledger", 0)].offset, 10);
    let new = build();
    assert_eq!(new.run_once().unwrap().records_to_kafka, 5);
    assert_eq!(new.run_once().unwrap().total(), 0);
}

#[test]
fn offsets_translate_to_kafka_and_a_group_moves_across() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir);
    a.create_topic(NewTopic::new("orders", 3)).unwrap();
    produce_logbus(&a, "orders", 0..20);
    let kafka = mock();
    // Kafka's partitions already hold other records: offsets differ.
    kafka.create_topic("orders", 3, 1).unwrap();
    produce_kafka(&kafka.bootstrap_servers(), "orders", 3, 1000..1017);
    let mirror = Mirror::builder(&a, "t")
        .bootstrap_servers(kafka.bootstrap_servers())
        .to_kafka("orders")
        .records_per_checkpoint(1) // a sync for every record: exact translation
        .build()
        .unwrap();
    mirror.run_once().unwrap();
    let syncs = mirror.offset_syncs();
    assert_eq!(syncs.len(), 20);
    assert!(syncs.iter().all(|s| s.direction == Direction::ToKafka));

    // A logbus group somewhere in each partition.
    let source = read_logbus(&a, "orders");
    let in_kafka = read_kafka(&kafka.bootstrap_servers(), "orders", "read_committed");
    let counts: Vec<u64> = (0..3)
        .map(|p| source.iter().filter(|r| r.partition == p).count() as u64)
        .collect();
    let positions = [counts[0] / 2, 0, counts[2]];
    let group: BTreeMap<_, _> = positions
        .iter()
        .enumerate()
        .map(|(p, &o)| {
            (
                TopicPartition::new("orders", p as u32),
                OffsetAndMetadata::new(o),
            )
        })
        .collect();
    a.alter_group_offsets("billing", &group).unwrap();

    let translated = mirror.translate_offsets("billing").unwrap();
    for (p, &o) in positions.iter().enumerate() {
        let p = p as u32;
        let in_partition: Vec<&(i64, Rec)> =
            in_kafka.iter().filter(|(_, r)| r.partition == p).collect();
        // The Kafka offset of the record at source offset `o`, or the end.
        let expected = if o < counts[p as usize] {
            let wanted = source
                .iter()
                .filter(|r| r.partition == p)
                .nth(o as usize)
                .unwrap();
            in_partition
                .iter()
                .find(|(_, r)| r == wanted)
                .map(|(off, _)| *off as u64)
                .unwrap()
        } else {
            in_partition.last().map(|(off, _)| *off as u64 + 1).unwrap()
        };
        assert_eq!(
            translated[&TopicPartition::new("orders", p)],
            expected,
            "partition {p}"
        );
    }

    // The group moves: its Kafka positions are the translated ones.
    assert_eq!(mirror.sync_group_offsets("billing").unwrap(), translated);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .set("group.id", "billing")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition("orders", p);
    }
    let committed = consumer.committed_offsets(tpl, DEADLINE).unwrap();
    for e in committed.elements() {
        let tp = TopicPartition::new("orders", e.partition() as u32);
        assert_eq!(e.offset(), Offset::Offset(translated[&tp] as i64));
    }
}

#[test]
fn lagging_translation_never_skips_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir);
    a.create_topic(NewTopic::new("orders", 1)).unwrap();
    produce_logbus(&a, "orders", 0..50);
    let kafka = mock();
    kafka.create_topic("orders", 1, 1).unwrap();
    let mirror = Mirror::builder(&a, "lag")
        .bootstrap_servers(kafka.bootstrap_servers())
        .to_kafka("orders")
        .records_per_checkpoint(20)
        .offset_lag_max(8)
        .build()
        .unwrap();
    mirror.run_once().unwrap();
    // Per checkpoint: the first record, every 8 offsets, the last.
    let ups: Vec<u64> = mirror
        .offset_syncs()
        .iter()
        .map(|s| s.upstream_offset)
        .collect();
    assert_eq!(ups, [0, 8, 16, 19, 20, 28, 36, 39, 40, 48, 49]);
    for (o, expected) in [(0, 0), (5, 1), (19, 19), (25, 21), (30, 29), (50, 50)] {
        let tp = TopicPartition::new("orders", 0);
        a.alter_group_offsets(
            "g",
            &BTreeMap::from([(tp.clone(), OffsetAndMetadata::new(o))]),
        )
        .unwrap();
        let t = mirror.translate_offsets("g").unwrap()[&tp];
        assert_eq!(t, expected, "group at {o}");
        assert!(t <= o, "never past the group's position");
    }
}

#[test]
fn offsets_translate_from_kafka_and_syncs_survive_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir);
    b.create_topic(NewTopic::new("clicks-local", 2)).unwrap();
    // The logbus topic already holds records: offsets differ.
    let p = Producer::new(&b, ProducerConfig::default()).unwrap();
    for i in 0..7 {
        p.send(ProducerRecord::new("clicks-local", "old").with_partition(i % 2))
            .unwrap()
            .wait()
            .unwrap();
    }
    p.flush().unwrap();
    let kafka = mock();
    kafka.create_topic("clicks", 2, 1).unwrap();
    produce_kafka(&kafka.bootstrap_servers(), "clicks", 2, 0..30);
    let build = || {
        Mirror::builder(&b, "c")
            .bootstrap_servers(kafka.bootstrap_servers())
            .from_kafka_as("clicks", "clicks-local")
            .records_per_checkpoint(1)
            .build()
            .unwrap()
    };
    let mirror = build();
    assert_eq!(mirror.run_once().unwrap().records_from_kafka, 30);
    // A Kafka group at offset 2 of each partition.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .set("group.id", "analytics")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("clicks", 0, Offset::Offset(2))
        .unwrap();
    tpl.add_partition_offset("clicks", 1, Offset::Offset(2))
        .unwrap();
    consumer.commit(&tpl, CommitMode::Sync).unwrap();
    drop(mirror);
    let mirror = build(); // syncs reloaded from their topic
    let translated = mirror.translate_offsets("analytics").unwrap();
    // Partition p already had 4 (p=0) or 3 (p=1) records: Kafka offset 2 is
    // logbus offset 2 + that.
    assert_eq!(
        translated,
        BTreeMap::from([
            (TopicPartition::new("clicks-local", 0), 6),
            (TopicPartition::new("clicks-local", 1), 5),
        ])
    );
    mirror.sync_group_offsets("analytics").unwrap();
    let committed = b.list_group_offsets("analytics").unwrap();
    assert_eq!(committed[&TopicPartition::new("clicks-local", 0)].offset, 6);
    assert_eq!(committed[&TopicPartition::new("clicks-local", 1)].offset, 5);
}

#[test]
fn background_mirror_copies_until_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir);
    a.create_topic(NewTopic::new("orders", 2)).unwrap();
    produce_logbus(&a, "orders", 0..30);
    let kafka = mock();
    kafka.create_topic("orders", 2, 1).unwrap();
    let mirror = Mirror::builder(&a, "bg")
        .bootstrap_servers(kafka.bootstrap_servers())
        .to_kafka("orders")
        .build()
        .unwrap();
    let running = mirror.start();
    // Wait on the Kafka side (an external system) for all 30.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let n = read_kafka(&kafka.bootstrap_servers(), "orders", "read_committed").len();
        if n == 30 {
            break;
        }
        assert!(Instant::now() < deadline, "only {n} of 30 records mirrored");
    }
    running.stop().unwrap();
    // Stopped after checkpointing everything: a run now copies nothing.
    assert_eq!(mirror.run_once().unwrap().total(), 0);
}

#[test]
fn settings_are_checked_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir);
    a.create_topic(NewTopic::new("t", 2)).unwrap();
    let base = || Mirror::builder(&a, "x").bootstrap_servers("127.0.0.1:1");
    let config_err = |r: Result<Mirror, MirrorError>| matches!(r, Err(MirrorError::Config(_)));
    assert!(config_err(Mirror::builder(&a, "x").to_kafka("t").build()));
    assert!(config_err(base().build()));
    assert!(config_err(
        Mirror::builder(&a, "bad name")
            .bootstrap_servers("h:1")
            .to_kafka("t")
            .build()
    ));
    assert!(config_err(
        Mirror::builder(&a, "")
            .bootstrap_servers("h:1")
            .to_kafka("t")
            .build()
    ));
    assert!(config_err(
        base().to_kafka_as("t", "u").to_kafka_as("v", "u").build()
    ));
    assert!(config_err(
        base().to_kafka("t").records_per_checkpoint(0).build()
    ));
    assert!(config_err(
        base().to_kafka("t").timeout(Duration::ZERO).build()
    ));
    // Nothing was made for the refused mirrors.
    assert_eq!(a.list_topics(), ["t"]);

    let kafka = mock();
    kafka.create_topic("narrow", 1, 1).unwrap();
    let eos = Mirror::builder(&a, "x")
        .bootstrap_servers(kafka.bootstrap_servers())
        .to_kafka_as("t", "narrow")
        .exactly_once(true)
        .build()
        .unwrap();
    assert!(matches!(eos.run_once(), Err(MirrorError::Config(_))));
    assert!(a.list_group_offsets("__mirror-x").unwrap().is_empty());
}

#[test]
fn a_refused_delivery_checkpoints_nothing_and_the_next_run_copies_all() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir);
    a.create_topic(NewTopic::new("orders", 1)).unwrap();
    produce_logbus(&a, "orders", 0..20);
    let kafka = mock();
    kafka.create_topic("orders", 1, 1).unwrap();
    let mirror = Mirror::builder(&a, "refused")
        .bootstrap_servers(kafka.bootstrap_servers())
        .to_kafka("orders")
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // The broker refuses the first produce request for good.
    kafka.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED],
    );
    let err = mirror.run_once().unwrap_err();
    assert!(matches!(err, MirrorError::Delivery { .. }), "{err}");
    assert!(a.list_group_offsets("__mirror-refused").unwrap().is_empty());
    assert!(mirror.offset_syncs().is_empty());
    // The next run starts again from the last checkpoint (none): all 20.
    assert_eq!(mirror.run_once().unwrap().records_to_kafka, 20);
    let in_kafka = records_only(read_kafka(
        &kafka.bootstrap_servers(),
        "orders",
        "read_committed",
    ));
    let mut expected = read_logbus(&a, "orders");
    let mut got = in_kafka;
    expected.sort();
    got.sort();
    got.dedup();
    assert_eq!(got, expected);
}

#[test]
fn only_committed_logbus_transactions_are_mirrored() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir);
    a.create_topic(NewTopic::new("orders", 2)).unwrap();
    let producer = Producer::new(
        &a,
        ProducerConfig::builder()
            .transactional_id("app")
            .build()
            .unwrap(),
    )
    .unwrap();
    producer.init_transactions().unwrap();
    producer.begin_transaction().unwrap();
    for i in 0..10 {
        drop(producer.send(record("orders", i)).unwrap());
    }
    producer.commit_transaction().unwrap();
    producer.begin_transaction().unwrap();
    for i in 10..15 {
        drop(producer.send(record("orders", i)).unwrap());
    }
    producer.flush().unwrap();
    producer.abort_transaction().unwrap();
    producer.begin_transaction().unwrap();
    for i in 15..18 {
        drop(producer.send(record("orders", i)).unwrap());
    }
    producer.commit_transaction().unwrap();
    let kafka = mock();
    kafka.create_topic("orders", 2, 1).unwrap();
    let mirror = Mirror::builder(&a, "txn")
        .bootstrap_servers(kafka.bootstrap_servers())
        .to_kafka("orders")
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // The run ends at the partitions' ends, past the transaction markers.
    assert_eq!(mirror.run_once().unwrap().records_to_kafka, 13);
    let stamps: Vec<i64> = records_only(read_kafka(
        &kafka.bootstrap_servers(),
        "orders",
        "read_committed",
    ))
    .iter()
    .map(|r| r.timestamp - 1_700_000_000_000)
    .collect();
    let mut stamps = stamps;
    stamps.sort_unstable();
    let expected: Vec<i64> = (0..10).chain(15..18).collect();
    assert_eq!(stamps, expected, "aborted records stay behind");
    assert_eq!(mirror.run_once().unwrap().total(), 0);
}

#[test]
fn a_missing_kafka_topic_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir);
    a.create_topic(NewTopic::new("orders", 1)).unwrap();
    let kafka = mock();
    let mirror = Mirror::builder(&a, "missing")
        .bootstrap_servers(kafka.bootstrap_servers())
        .from_kafka("nowhere")
        .kafka_config("allow.auto.create.topics", "false")
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let err = mirror.run_once().unwrap_err();
    assert!(
        matches!(&err, MirrorError::UnknownKafkaTopic { topic } if topic == "nowhere"),
        "{err}"
    );
    assert!(a.topic("nowhere").is_err(), "no logbus topic made for it");
}

#[test]
fn mirrors_and_handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Mirror>();
    send_sync::<logbus::bridge::MirrorHandle>();
    send_sync::<MirrorError>();
}

#[test]
fn partitions_added_to_a_logbus_topic_are_mirrored() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir);
    a.create_topic(NewTopic::new("orders", 2)).unwrap();
    produce_logbus(&a, "orders", 0..10);
    let kafka = mock();
    kafka.create_topic("orders", 4, 1).unwrap();
    let mirror = Mirror::builder(&a, "grow")
        .bootstrap_servers(kafka.bootstrap_servers())
        .to_kafka("orders")
        .build()
        .unwrap();
    assert_eq!(mirror.run_once().unwrap().records_to_kafka, 10);
    a.create_partitions("orders", 4).unwrap();
    let producer = Producer::new(&a, ProducerConfig::default()).unwrap();
    for i in 0..3 {
        producer
            .send(ProducerRecord::new("orders", format!("new-{i}")).with_partition(3))
            .unwrap()
            .wait()
            .unwrap();
    }
    // Counts now match: the new partition's records keep their number.
    assert_eq!(mirror.run_once().unwrap().records_to_kafka, 3);
    let in_kafka = records_only(read_kafka(
        &kafka.bootstrap_servers(),
        "orders",
        "read_committed",
    ));
    let new: Vec<u32> = in_kafka
        .iter()
        .filter(|r| r.value.as_ref().is_some_and(|v| v.starts_with(b"new-")))
        .map(|r| r.partition)
        .collect();
    assert_eq!(new, [3, 3, 3]);
    assert_eq!(in_kafka.len(), 13);
}

#[test]
fn a_background_mirror_retries_a_failed_run_and_stops_on_a_fatal_one() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir);
    a.create_topic(NewTopic::new("orders", 1)).unwrap();
    produce_logbus(&a, "orders", 0..20);
    let kafka = mock();
    kafka.create_topic("orders", 1, 1).unwrap();
    kafka.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED],
    );
    let mirror = Mirror::builder(&a, "retry")
        .bootstrap_servers(kafka.bootstrap_servers())
        .to_kafka("orders")
        .idle_wait(Duration::from_millis(10))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let running = mirror.start();
    // Wait on the Kafka side for every record (the first run's delivery
    // was refused; the thread tries again from the last checkpoint).
    let deadline = Instant::now() + DEADLINE;
    let expected: Vec<i64> = (0..20).map(|i| 1_700_000_000_000 + i).collect();
    loop {
        let got = by_timestamp(&records_only(read_kafka(
            &kafka.bootstrap_servers(),
            "orders",
            "read_committed",
        )));
        if got.keys().copied().collect::<Vec<_>>() == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of 20 mirrored",
            got.len()
        );
    }
    assert!(running.failed_runs() >= 1);
    let last = running.last_error().expect("the refused run's error");
    assert!(last.contains("delivery"), "{last}");
    running.stop().unwrap();

    // A failure that will not pass ends the thread: stop returns it.
    produce_logbus(&a, "orders", 20..25);
    let doomed = Mirror::builder(&a, "retry")
        .bootstrap_servers(kafka.bootstrap_servers())
        .to_kafka("orders")
        .crash_after_records(1)
        .build()
        .unwrap();
    let running = doomed.start();
    // The crash happens once its one record reached Kafka: wait for it.
    let deadline = Instant::now() + DEADLINE;
    while !read_kafka(&kafka.bootstrap_servers(), "orders", "read_committed")
        .iter()
        .any(|(_, r)| r.timestamp == 1_700_000_000_020)
    {
        assert!(
            Instant::now() < deadline,
            "the doomed mirror copied nothing"
        );
    }
    assert!(matches!(running.stop(), Err(MirrorError::Crashed)));
}

#[test]
fn the_mirror_follows_kafka_leader_changes() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(&dir_a), open(&dir_b));
    a.create_topic(NewTopic::new("orders", 2)).unwrap();
    produce_logbus(&a, "orders", 0..20);
    let kafka = mock();
    kafka.create_topic("orders", 2, 3).unwrap();
    let out = Mirror::builder(&a, "out")
        .bootstrap_servers(kafka.bootstrap_servers())
        .to_kafka("orders")
        .exactly_once(true)
        .build()
        .unwrap();
    let back = Mirror::builder(&b, "back")
        .bootstrap_servers(kafka.bootstrap_servers())
        .from_kafka("orders")
        .build()
        .unwrap();
    assert_eq!(out.run_once().unwrap().records_to_kafka, 20);
    assert_eq!(back.run_once().unwrap().records_from_kafka, 20);
    // Every partition's leadership moves to another broker.
    let leaders = || -> Vec<i32> {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", kafka.bootstrap_servers())
            .create()
            .unwrap();
        let metadata = client.fetch_metadata(Some("orders"), DEADLINE).unwrap();
        metadata.topics()[0]
            .partitions()
            .iter()
            .map(|p| p.leader())
            .collect()
    };
    let before = leaders();
    for (partition, leader) in before.iter().enumerate() {
        kafka
            .partition_leader("orders", partition as i32, Some(leader % 3 + 1))
            .unwrap();
    }
    let after = leaders();
    assert!(
        before.iter().zip(&after).all(|(b, a)| b != a),
        "{before:?} {after:?}"
    );
    produce_logbus(&a, "orders", 20..40);
    assert_eq!(out.run_once().unwrap().records_to_kafka, 20);
    assert_eq!(back.run_once().unwrap().records_from_kafka, 20);
    assert_eq!(read_logbus(&b, "orders"), read_logbus(&a, "orders"));
}

#[test]
fn exactly_once_from_kafka_killed_midway_gives_each_record_once_to_read_committed() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&dir);
    let kafka = mock();
    kafka.create_topic("clicks", 3, 1).unwrap();
    produce_kafka(&kafka.bootstrap_servers(), "clicks", 3, 0..100);
    let build = |crash: Option<u64>| {
        built_crashing_after(
            Mirror::builder(&b, "in-eos")
                .bootstrap_servers(kafka.bootstrap_servers())
                .from_kafka("clicks")
                .exactly_once(true)
                .records_per_checkpoint(10),
            crash,
        )
    };
    let first = build(Some(35));
    assert!(matches!(first.run_once(), Err(MirrorError::Crashed)));
    // Three transactions of 10 committed, with their positions.
    let committed: u64 = b
        .list_group_offsets("__mirror-in-eos")
        .unwrap()
        .values()
        .map(|o| o.offset)
        .sum();
    assert_eq!(committed, 30);
    drop(first); // killed: its fourth transaction (5 records) left open
    let second = build(None);
    assert_eq!(second.run_once().unwrap().records_from_kafka, 70);
    let in_kafka = records_only(read_kafka(
        &kafka.bootstrap_servers(),
        "clicks",
        "read_committed",
    ));
    let committed = read_logbus_as(&b, "clicks", IsolationLevel::ReadCommitted);
    assert_eq!(
        committed, in_kafka,
        "each record once, in place, to read_committed"
    );
    // The 5 records of the aborted transaction are in the log, hidden.
    assert_eq!(read_logbus(&b, "clicks").len(), 105);
    assert_eq!(second.run_once().unwrap().total(), 0);
}

/// The bridge against logbus's own listener instead of the mock: cluster
/// `a` mirrors to cluster `b` over Kafka's wire protocol with Kafka
/// transactions (librdkafka's transactional producer: InitProducerId,
/// AddPartitionsToTxn, transactional Produce, AddOffsetsToTxn,
/// TxnOffsetCommit, EndTxn), and cluster `c` mirrors `b` back with a
/// read_committed consumer. Unlike the mock, `b` writes real markers, so
/// "each record once to a read_committed reader" is checked end to end.
#[cfg(feature = "server")]
#[test]
fn exactly_once_through_logbus_own_listener_is_byte_equal() {
    let dirs = [(); 3].map(|()| tempfile::tempdir().unwrap());
    let (a, b, c) = (open(&dirs[0]), open(&dirs[1]), open(&dirs[2]));
    a.create_topic(NewTopic::new("orders", 3)).unwrap();
    b.create_topic(NewTopic::new("orders", 3)).unwrap();
    produce_logbus(&a, "orders", 0..60);
    let server = b.serve("127.0.0.1:0").unwrap();
    let bootstrap = server.addresses()[&0].to_string();

    let out = Mirror::builder(&a, "to-b")
        .bootstrap_servers(bootstrap.clone())
        .to_kafka("orders")
        .exactly_once(true)
        .records_per_checkpoint(25)
        .build()
        .unwrap();
    assert_eq!(out.run_once().unwrap().records_to_kafka, 60);
    let source = read_logbus(&a, "orders");
    assert_eq!(
        read_logbus_as(&b, "orders", IsolationLevel::ReadCommitted),
        source,
        "b holds every record once, committed, in the same partitions"
    );
    assert_eq!(
        records_only(read_kafka(&bootstrap, "orders", "read_committed")),
        source,
        "and serves them so over the wire"
    );

    let back = Mirror::builder(&c, "from-b")
        .bootstrap_servers(bootstrap)
        .from_kafka("orders")
        .exactly_once(true)
        .build()
        .unwrap();
    assert_eq!(back.run_once().unwrap().records_from_kafka, 60);
    assert_eq!(
        read_logbus_as(&c, "orders", IsolationLevel::ReadCommitted),
        source
    );
    // Nothing is copied twice.
    assert_eq!(out.run_once().unwrap().total(), 0);
    assert_eq!(back.run_once().unwrap().total(), 0);
    drop(server);
}
