//! Producer round trips: what is sent is what is stored, where Kafka would
//! store it.

mod producer_util;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use logbus::format::Header;
use logbus::{
    Acks, Compression, ManualClock, NewTopic, Partitioner, Producer, ProducerConfig,
    ProducerRecord, Result, TimestampType, TopicConfig, partition_for_key,
};
use producer_util::{Stored, T0, batches, open, open_with_clock, records};

fn acks1() -> ProducerConfig {
    ProducerConfig::builder()
        .acks(Acks::Leader)
        .build()
        .expect("config")
}

#[test]
fn keyed_unkeyed_and_explicit_records_round_trip_with_their_metadata() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0);
    let cluster = open_with_clock(dir.path(), &clock)?;
    cluster.create_topic(NewTopic::new("orders", 3))?;
    let producer = Producer::new(&cluster, acks1())?;

    // Every kind of key and value: &'static str, String, Vec<u8>, Bytes.
    let keyed = producer.send(
        ProducerRecord::new("orders", String::from("created"))
            .with_key("order-1")
            .with_header("source", "web")
            .with_header("trace", vec![1_u8, 2, 3])
            .with_timestamp(T0 - 10),
    )?;
    let explicit = producer.send(
        ProducerRecord::new("orders", Bytes::from_static(b"audit"))
            .with_partition(2)
            .with_headers(vec![Header::new("null-valued", None)]),
    )?;
    let unkeyed = producer.send(ProducerRecord::new("orders", vec![0xff_u8, 0]))?;
    let tombstone = producer.send(ProducerRecord::tombstone("orders", "order-1"))?;
    producer.flush()?;

    let keyed = keyed.wait()?;
    let count = NonZeroU32::new(3).expect("3");
    assert_eq!(keyed.topic(), "orders");
    assert_eq!(keyed.partition(), partition_for_key(b"order-1", count));
    assert_eq!(keyed.timestamp(), T0 - 10, "the record's own timestamp");
    let explicit = explicit.wait()?;
    assert_eq!(explicit.partition(), 2);
    assert_eq!(explicit.timestamp(), T0, "no timestamp: the clock's now");
    let unkeyed = unkeyed.wait()?;
    assert_eq!(unkeyed.timestamp(), T0);
    let tombstone = tombstone.wait()?;
    assert_eq!(
        tombstone.partition(),
        keyed.partition(),
        "same key, same partition"
    );

    let stored = records(&cluster, "orders", keyed.partition())?;
    let first = stored
        .iter()
        .find(|r| Some(r.offset) == keyed.offset())
        .expect("keyed record stored at its offset");
    assert_eq!(
        first,
        &Stored {
            offset: keyed.offset().expect("acks=1 has an offset"),
            timestamp: T0 - 10,
            key: Some(b"order-1".to_vec()),
            value: Some(b"created".to_vec()),
            headers: vec![
                ("source".into(), Some(b"web".to_vec())),
                ("trace".into(), Some(vec![1, 2, 3])),
            ],
        }
    );
    let tomb = stored
        .iter()
        .find(|r| Some(r.offset) == tombstone.offset())
        .expect("tombstone stored");
    assert_eq!(
        (tomb.key.as_deref(), tomb.value.as_deref()),
        (Some(&b"order-1"[..]), None)
    );

    let audit = records(&cluster, "orders", 2)?;
    let audit = audit
        .iter()
        .find(|r| Some(r.offset) == explicit.offset())
        .expect("explicit record stored");
    assert_eq!(audit.value.as_deref(), Some(&b"audit"[..]));
    assert_eq!(audit.headers, vec![("null-valued".to_string(), None)]);

    let plain = records(&cluster, "orders", unkeyed.partition())?;
    let plain = plain
        .iter()
        .find(|r| Some(r.offset) == unkeyed.offset())
        .expect("unkeyed record stored");
    assert_eq!(
        (plain.key.as_deref(), plain.value.as_deref()),
        (None, Some(&[0xff_u8, 0][..]))
    );
    producer.close()?;
    cluster.close()
}

#[test]
fn offsets_are_consecutive_per_partition_and_survive_a_reopen() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let cluster = open(dir.path())?;
        cluster.create_topic(NewTopic::new("events", 2))?;
        let producer = Producer::new(&cluster, acks1())?;
        let sent: Vec<_> = (0..100)
            .map(|i| {
                producer.send(
                    ProducerRecord::new("events", format!("v{i}"))
                        .with_partition(i % 2)
                        .with_timestamp(T0 + i64::from(i)),
                )
            })
            .collect::<Result<_>>()?;
        for (i, handle) in (0_u32..).zip(sent) {
            let metadata = handle.wait()?;
            assert_eq!(metadata.partition(), i % 2);
            assert_eq!(metadata.offset(), Some(u64::from(i / 2)));
        }
        // Dropping the last clone closes the producer; then the cluster.
        drop(producer);
        cluster.close()?;
    }
    let cluster = open(dir.path())?;
    for p in 0..2_u32 {
        let stored = records(&cluster, "events", p)?;
        assert_eq!(stored.len(), 50);
        for (j, record) in (0_u32..).zip(&stored) {
            let i = j * 2 + p;
            assert_eq!(record.offset, u64::from(j));
            assert_eq!(record.value.as_deref(), Some(format!("v{i}").as_bytes()));
            assert_eq!(record.timestamp, T0 + i64::from(i));
        }
    }
    // A new producer continues after the stored offsets.
    let producer = Producer::new(&cluster, acks1())?;
    let next = producer
        .send(ProducerRecord::new("events", "again").with_partition(1))?
        .wait()?;
    assert_eq!(next.offset(), Some(50));
    producer.close()?;
    cluster.close()
}

#[test]
fn keys_go_to_the_partition_kafkas_murmur2_chooses() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = open(dir.path())?;
    cluster.create_topic(NewTopic::new("keyed", 7))?;
    let producer = Producer::new(&cluster, acks1())?;
    let count = NonZeroU32::new(7).expect("7");
    let keys: Vec<String> = (0..200).map(|i| format!("customer-{i}")).collect();
    let sent: Vec<_> = keys
        .iter()
        .map(|k| producer.send(ProducerRecord::new("keyed", "v").with_key(k.clone())))
        .collect::<Result<_>>()?;
    for (key, handle) in keys.iter().zip(sent) {
        let expected = partition_for_key(key.as_bytes(), count);
        assert_eq!(handle.partition(), expected, "{key}");
        assert_eq!(handle.wait()?.partition(), expected, "{key}");
    }
    // Every stored record sits in its key's partition.
    for p in 0..7 {
        for record in records(&cluster, "keyed", p)? {
            let key = record.key.expect("keyed");
            assert_eq!(partition_for_key(&key, count), p);
        }
    }
    // More partitions: keys are hashed over the new count at once.
    cluster.create_partitions("keyed", 11)?;
    let eleven = NonZeroU32::new(11).expect("11");
    for key in &keys[..20] {
        let m = producer
            .send(ProducerRecord::new("keyed", "v").with_key(key.clone()))?
            .wait()?;
        assert_eq!(m.partition(), partition_for_key(key.as_bytes(), eleven));
    }
    producer.close()?;
    cluster.close()
}

/// Sends `even-*` keys to partition 0, has no opinion on the rest.
#[derive(Debug)]
struct EvenToZero;

impl Partitioner for EvenToZero {
    fn partition(
        &self,
        _topic: &str,
        key: Option<&[u8]>,
        _value: Option<&[u8]>,
        _count: NonZeroU32,
    ) -> Option<u32> {
        key.filter(|k| k.starts_with(b"even-")).map(|_| 0)
    }
}

#[test]
fn a_custom_partitioner_is_consulted_first_and_its_none_falls_back() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = open(dir.path())?;
    cluster.create_topic(NewTopic::new("t", 5))?;
    let config = ProducerConfig::builder()
        .acks(Acks::Leader)
        .partitioner(Arc::new(EvenToZero))
        .build()?;
    let producer = Producer::new(&cluster, config)?;
    let count = NonZeroU32::new(5).expect("5");
    for i in 0..50 {
        let key = format!("{}-{i}", if i % 2 == 0 { "even" } else { "odd" });
        let m = producer
            .send(ProducerRecord::new("t", "v").with_key(key.clone()))?
            .wait()?;
        let expected = if i % 2 == 0 {
            0
        } else {
            partition_for_key(key.as_bytes(), count)
        };
        assert_eq!(m.partition(), expected, "{key}");
    }
    // An explicit partition beats the custom partitioner.
    let m = producer
        .send(
            ProducerRecord::new("t", "v")
                .with_key("even-x")
                .with_partition(3),
        )?
        .wait()?;
    assert_eq!(m.partition(), 3);
    producer.close()?;
    cluster.close()
}

#[test]
fn every_codec_round_trips() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = open(dir.path())?;
    let codecs = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    for codec in codecs {
        let topic = format!("codec-{}", codec.name());
        cluster.create_topic(NewTopic::new(topic.clone(), 1))?;
        let config = ProducerConfig::builder()
            .acks(Acks::All)
            .compression(codec)
            .linger(Duration::from_millis(60_000))
            .build()?;
        let producer = Producer::new(&cluster, config)?;
        let values: Vec<String> = (0..300)
            .map(|i| format!("{codec:?} record {i} {}", "x".repeat(i % 50)))
            .collect();
        let sent: Vec<_> = values
            .iter()
            .map(|v| producer.send(ProducerRecord::new(topic.clone(), v.clone()).with_key("k")))
            .collect::<Result<_>>()?;
        producer.flush()?;
        for (i, handle) in (0_u64..).zip(sent) {
            assert_eq!(handle.wait()?.offset(), Some(i));
        }
        let stored = batches(&cluster, &topic, 0)?;
        assert!(!stored.is_empty());
        for batch in &stored {
            assert_eq!(batch.header().compression()?, codec);
        }
        let got: Vec<Vec<u8>> = records(&cluster, &topic, 0)?
            .into_iter()
            .map(|r| r.value.expect("value"))
            .collect();
        let want: Vec<Vec<u8>> = values.into_iter().map(String::into_bytes).collect();
        assert_eq!(got, want, "{codec:?}");
        producer.close()?;
    }
    cluster.close()
}

#[test]
fn acks_zero_completes_without_an_offset_and_still_stores() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = open(dir.path())?;
    cluster.create_topic(NewTopic::new("fire", 1))?;
    let config = ProducerConfig::builder().acks(Acks::None).build()?;
    let producer = Producer::new(&cluster, config)?;
    let sent: Vec<_> = (0..10)
        .map(|i| producer.send(ProducerRecord::new("fire", format!("{i}")).with_timestamp(T0 + i)))
        .collect::<Result<_>>()?;
    for (i, handle) in (0_i64..).zip(sent) {
        let m = handle.wait()?;
        assert_eq!(m.offset(), None, "Kafka reports -1");
        assert_eq!((m.partition(), m.timestamp()), (0, T0 + i));
    }
    producer.flush()?; // flush still waits for the appends
    assert_eq!(records(&cluster, "fire", 0)?.len(), 10);
    producer.close()?;
    cluster.close()
}

#[test]
fn log_append_time_topics_report_the_append_time() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0);
    let cluster = open_with_clock(dir.path(), &clock)?;
    cluster.create_topic(
        NewTopic::new("stamped", 1)
            .config(TopicConfig::new().timestamp_type(TimestampType::LogAppendTime)),
    )?;
    let config = ProducerConfig::builder().linger(Duration::ZERO).build()?;
    let producer = Producer::new(&cluster, config)?;
    clock.advance_ms(1_000);
    let m = producer
        .send(ProducerRecord::new("stamped", "v").with_timestamp(5))?
        .wait()?;
    assert_eq!(
        m.timestamp(),
        T0 + 1_000,
        "the log's time, not the record's"
    );
    let stored = records(&cluster, "stamped", 0)?;
    assert_eq!(stored[0].timestamp, T0 + 1_000);
    producer.close()?;
    cluster.close()
}

#[test]
fn producers_are_clone_send_and_sync_and_share_one_buffer() -> Result<()> {
    fn check<T: Clone + Send + Sync>() {}
    check::<Producer>();
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = open(dir.path())?;
    cluster.create_topic(NewTopic::new("shared", 4))?;
    let producer = Producer::new(&cluster, acks1())?;
    let threads: Vec<_> = (0..4_u32)
        .map(|t| {
            let producer = producer.clone();
            std::thread::spawn(move || -> Result<Vec<u64>> {
                let sent: Vec<_> = (0..500)
                    .map(|i| {
                        producer.send(
                            ProducerRecord::new("shared", format!("{t}-{i}")).with_partition(t),
                        )
                    })
                    .collect::<Result<_>>()?;
                sent.into_iter()
                    .map(|h| h.wait().map(|m| m.offset().expect("offset")))
                    .collect()
            })
        })
        .collect();
    for (t, thread) in (0_u32..).zip(threads) {
        let offsets = thread.join().expect("thread")?;
        assert_eq!(offsets, (0..500).collect::<Vec<u64>>(), "thread {t}");
        let stored = records(&cluster, "shared", t)?;
        let values: Vec<_> = stored
            .into_iter()
            .map(|r| r.value.expect("value"))
            .collect();
        let want: Vec<_> = (0..500).map(|i| format!("{t}-{i}").into_bytes()).collect();
        assert_eq!(values, want, "send order is partition order");
    }
    producer.close()?;
    cluster.close()
}
