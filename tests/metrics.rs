//! Observability: `Cluster::metrics` reflects known activity (records and
//! bytes in and out per topic, group lag, failover counters), the
//! `metrics` facade sees the same values (a `DebuggingRecorder` installed
//! for one thread with `metrics::with_local_recorder`, so parallel tests
//! share nothing), and recovery traces what it cut.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::Captured;
use common::replicated::{GUARD, TOPIC, acks_all, builder, create, isr_complete, leader};
use logbus::format::BatchBuilder;
use logbus::{
    Cluster, ClusterConfig, Compression, Consumer, ConsumerConfig, Log, NewTopic,
    OffsetAndMetadata, OffsetReset, Producer, ProducerConfig, ProducerRecord, TopicPartition,
    metric_names,
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

/// Polls `consumer` until `n` records arrived (failing after `GUARD`).
fn consume(consumer: &mut Consumer, n: usize) -> usize {
    let started = Instant::now();
    let mut seen = 0;
    while seen < n {
        assert!(started.elapsed() < GUARD, "consumed {seen} of {n}");
        seen += consumer.poll(Duration::from_millis(100)).unwrap().count();
    }
    seen
}

/// A consumer of every partition of `topic` from the start.
fn reader(cluster: &Cluster, topic: &str, partitions: u32) -> Consumer {
    let config = ConsumerConfig::builder()
        .auto_offset_reset(OffsetReset::Earliest)
        .build()
        .unwrap();
    let mut consumer = Consumer::new(cluster, config).unwrap();
    let tps: Vec<_> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    consumer.assign(&tps).unwrap();
    consumer
}

/// The bytes of `topic`'s partitions' logs.
fn topic_bytes(cluster: &Cluster, topic: &str) -> u64 {
    let handle = cluster.topic(topic).unwrap();
    (0..handle.partition_count())
        .map(|p| handle.partition(p).unwrap().size_bytes().unwrap())
        .sum()
}

#[test]
fn produced_and_consumed_records_and_bytes_are_counted_per_topic() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), ClusterConfig::default()).unwrap();
    cluster.create_topic(NewTopic::new("orders", 3)).unwrap();
    cluster.create_topic(NewTopic::new("idle", 1)).unwrap();
    let producer = Producer::new(&cluster, ProducerConfig::default()).unwrap();
    let n = 250;
    let sent: Vec<_> = (0..n)
        .map(|i| {
            let record =
                ProducerRecord::new("orders", format!("value-{i}")).with_key(format!("k{i}"));
            producer.send(record).unwrap()
        })
        .collect();
    for future in sent {
        future.wait().unwrap();
    }
    let before = cluster.metrics();
    let orders = before.topics["orders"];
    assert_eq!(orders.records_in, n as u64);
    assert_eq!(orders.bytes_in, topic_bytes(&cluster, "orders"));
    assert!(orders.bytes_in > 0);
    assert_eq!((orders.records_out, orders.bytes_out), (0, 0));
    assert_eq!(before.topics["idle"], Default::default());
    // One timed append per batch the producer sent.
    assert!(before.produce_latency.count >= 3);
    assert!(before.produce_latency.count <= n as u64);

    let mut consumer = reader(&cluster, "orders", 3);
    assert_eq!(consume(&mut consumer, n), n);
    let after = cluster.metrics();
    let orders = after.topics["orders"];
    assert_eq!(orders.records_out, n as u64);
    // Each batch was fetched once: the bytes out are the bytes in.
    assert_eq!(orders.bytes_out, orders.bytes_in);
    assert!(after.fetch_latency.count >= 3);
    assert_eq!(after.topics["idle"], Default::default());

    // A raw append of a batch of known size counts exactly that.
    let mut batch = BatchBuilder::new(Compression::None);
    for i in 0..4 {
        batch.append(1_700_000_000_000 + i, None, Some(b"raw"), &[]);
    }
    let mut bytes = batch.build().unwrap().to_vec();
    let len = bytes.len() as u64;
    cluster
        .topic("idle")
        .unwrap()
        .partition(0)
        .unwrap()
        .append(&mut bytes)
        .unwrap();
    let idle = cluster.metrics().topics["idle"];
    assert_eq!((idle.records_in, idle.bytes_in), (4, len));
    drop((producer, consumer));
    cluster.close().unwrap();
}

#[test]
fn a_groups_lag_is_the_log_end_minus_its_committed_offset() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), ClusterConfig::default()).unwrap();
    cluster.create_topic(NewTopic::new("jobs", 2)).unwrap();
    let producer = Producer::new(&cluster, ProducerConfig::default()).unwrap();
    let sent: Vec<_> = (0..10)
        .map(|i| {
            producer
                .send(ProducerRecord::new("jobs", "x").with_partition(i % 2))
                .unwrap()
        })
        .collect();
    for future in sent {
        future.wait().unwrap();
    }
    let (p0, p1) = (
        TopicPartition::new("jobs", 0),
        TopicPartition::new("jobs", 1),
    );
    cluster
        .alter_group_offsets(
            "billing",
            &BTreeMap::from([
                (p0.clone(), OffsetAndMetadata::new(2)),
                (p1.clone(), OffsetAndMetadata::new(5)),
            ]),
        )
        .unwrap();
    let metrics = cluster.metrics();
    let billing = &metrics.groups["billing"];
    assert_eq!(
        billing.lag,
        BTreeMap::from([(p0.clone(), 3), (p1.clone(), 0)])
    );
    assert_eq!(billing.rebalances, 0);

    // More records raise the lag; a commit lowers it.
    producer
        .send(ProducerRecord::new("jobs", "y").with_partition(1))
        .unwrap()
        .wait()
        .unwrap();
    cluster
        .alter_group_offsets(
            "billing",
            &BTreeMap::from([(p0.clone(), OffsetAndMetadata::new(5))]),
        )
        .unwrap();
    let billing = cluster.metrics().groups["billing"].clone();
    assert_eq!(billing.lag, BTreeMap::from([(p0, 0), (p1, 1)]));
    drop(producer);
    cluster.close().unwrap();
}

#[test]
fn a_group_members_rebalances_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let config = ClusterConfig::builder()
        .group_initial_rebalance_delay(Duration::ZERO)
        .build()
        .unwrap();
    let cluster = Cluster::open(dir.path(), config).unwrap();
    cluster.create_topic(NewTopic::new("jobs", 2)).unwrap();
    let member = || {
        let config = ConsumerConfig::builder()
            .group_id("workers")
            .build()
            .unwrap();
        let mut consumer = Consumer::new(&cluster, config).unwrap();
        consumer.subscribe(["jobs"]).unwrap();
        consumer
    };
    let started = Instant::now();
    let mut a = member();
    while a.assignment().len() != 2 {
        assert!(started.elapsed() < GUARD, "a never got both partitions");
        a.poll(Duration::ZERO).unwrap();
    }
    assert_eq!(cluster.metrics().groups["workers"].rebalances, 1);
    let mut b = member();
    while a.assignment().len() != 1 || b.assignment().len() != 1 {
        assert!(started.elapsed() < GUARD, "the partitions were never split");
        a.poll(Duration::ZERO).unwrap();
        b.poll(Duration::ZERO).unwrap();
    }
    // One completed rebalance per generation (the group never emptied).
    let generation = cluster.describe_group("workers").unwrap().generation;
    assert!(generation >= 2);
    assert_eq!(
        cluster.metrics().groups["workers"].rebalances,
        u64::try_from(generation).unwrap()
    );
    drop((a, b));
    cluster.close().unwrap();
}

#[test]
fn a_failover_counts_isr_shrinks_and_expands_leader_elections_and_under_replication() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), builder().build().unwrap()).unwrap();
    create(&cluster, 3);
    let start = cluster.metrics();
    let producer = acks_all(&cluster);
    producer
        .send(ProducerRecord::new(TOPIC, "before"))
        .unwrap()
        .wait()
        .unwrap();

    let victim = leader(&cluster, 0);
    cluster.crash_broker(victim).unwrap();
    assert!(cluster.wait_until(GUARD, |c| c.is_broker_fenced(victim)));
    let down = cluster.metrics();
    // The victim left the ISR of all 3 partitions and lost its leadership
    // of at least partition 0.
    assert_eq!(down.under_replicated_partitions, 3);
    assert!(down.isr_shrinks >= start.isr_shrinks + 3);
    assert!(down.leader_elections > start.leader_elections);
    // The counters agree with the cluster's replication statistics.
    let stats = cluster.replication_stats();
    assert_eq!(
        (down.leader_elections, down.isr_shrinks, down.isr_expands),
        (stats.leader_changes, stats.isr_shrinks, stats.isr_expands)
    );

    cluster.restart_broker(victim).unwrap();
    // The gauge reads 0 once every ISR is complete again.
    assert!(cluster.wait_until(GUARD, |c| {
        isr_complete(c) && c.metrics().under_replicated_partitions == 0
    }));
    let up = cluster.metrics();
    assert!(up.isr_expands >= down.isr_expands + 3);
    producer.close().unwrap();
    cluster.close().unwrap();
}

/// The value of counter or gauge `name` with `labels` in `snapshot`.
fn facade_value(
    snapshot: &[(metrics_util::CompositeKey, DebugValue)],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    snapshot.iter().find_map(|(key, value)| {
        let key = key.key();
        let matches = key.name() == name
            && key.labels().count() == labels.len()
            && labels
                .iter()
                .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v));
        if !matches {
            return None;
        }
        #[expect(clippy::cast_precision_loss, reason = "small test counts")]
        match value {
            DebugValue::Counter(n) => Some(*n as f64),
            DebugValue::Gauge(g) => Some(g.0),
            DebugValue::Histogram(h) => Some(h.len() as f64),
        }
    })
}

#[test]
fn the_facade_sees_the_same_values_as_the_snapshot() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let dir = tempfile::tempdir().unwrap();
    // Everything that registers handles (the cluster's open, topic
    // creation, the group's first rebalance) runs on this thread, with the
    // local recorder in force; the producer's and the cluster's own
    // threads count through the handles registered here.
    let ours = metrics::with_local_recorder(&recorder, || {
        let config = ClusterConfig::builder()
            .group_initial_rebalance_delay(Duration::ZERO)
            .build()
            .unwrap();
        let cluster = Cluster::open(dir.path(), config).unwrap();
        cluster.create_topic(NewTopic::new("orders", 2)).unwrap();
        let producer = Producer::new(&cluster, ProducerConfig::default()).unwrap();
        let sent: Vec<_> = (0..40)
            .map(|i| {
                let record =
                    ProducerRecord::new("orders", format!("v{i}")).with_key(format!("k{i}"));
                producer.send(record).unwrap()
            })
            .collect();
        for future in sent {
            future.wait().unwrap();
        }
        let config = ConsumerConfig::builder()
            .group_id("billing")
            .auto_offset_reset(OffsetReset::Earliest)
            .build()
            .unwrap();
        let mut consumer = Consumer::new(&cluster, config).unwrap();
        consumer.subscribe(["orders"]).unwrap();
        consume(&mut consumer, 40);
        consumer.commit_sync().unwrap();
        producer
            .send(ProducerRecord::new("orders", "late").with_partition(0))
            .unwrap()
            .wait()
            .unwrap();
        let ours = cluster.metrics(); // also sets the lag gauges
        drop((producer, consumer));
        cluster.close().unwrap();
        ours
    });
    let snapshot: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key, value))
        .collect();
    let orders = ours.topics["orders"];
    assert_eq!(orders.records_in, 41);
    assert_eq!(orders.records_out, 40);
    let topic = [("topic", "orders")];
    #[expect(clippy::cast_precision_loss, reason = "small test counts")]
    let expected = [
        (
            metric_names::RECORDS_IN,
            &topic[..],
            orders.records_in as f64,
        ),
        (metric_names::BYTES_IN, &topic[..], orders.bytes_in as f64),
        (
            metric_names::RECORDS_OUT,
            &topic[..],
            orders.records_out as f64,
        ),
        (metric_names::BYTES_OUT, &topic[..], orders.bytes_out as f64),
        (
            metric_names::PRODUCE_SECONDS,
            &[][..],
            ours.produce_latency.count as f64,
        ),
        (
            metric_names::FETCH_SECONDS,
            &[][..],
            ours.fetch_latency.count as f64,
        ),
        (metric_names::UNDER_REPLICATED, &[][..], 0.0),
        (
            metric_names::REBALANCES,
            &[("group", "billing")][..],
            ours.groups["billing"].rebalances as f64,
        ),
        (
            metric_names::CONSUMER_GROUP_LAG,
            &[
                ("group", "billing"),
                ("topic", "orders"),
                ("partition", "0"),
            ][..],
            1.0,
        ),
        (
            metric_names::CONSUMER_GROUP_LAG,
            &[
                ("group", "billing"),
                ("topic", "orders"),
                ("partition", "1"),
            ][..],
            0.0,
        ),
    ];
    for (name, labels, value) in expected {
        assert_eq!(
            facade_value(&snapshot, name, labels),
            Some(value),
            "{name} {labels:?}"
        );
    }
    assert_eq!(ours.groups["billing"].rebalances, 1);
    assert_eq!(
        ours.groups["billing"].lag[&TopicPartition::new("orders", 0)],
        1
    );
}

#[test]
fn recovery_of_a_torn_tail_emits_an_event_naming_the_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders-0");
    let log = Log::builder(&path).open().unwrap();
    let mut first_len = 0;
    for tag in [&b"first"[..], b"second"] {
        let mut batch = BatchBuilder::new(Compression::None);
        batch.append(1_700_000_000_000, None, Some(tag), &[]);
        let mut bytes = batch.build().unwrap().to_vec();
        if first_len == 0 {
            first_len = bytes.len() as u64;
        }
        log.append(&mut bytes, 0).unwrap();
    }
    log.close().unwrap();
    // Tear the second batch: its last 5 bytes never reached the disk.
    let segment = path.join("00000000000000000000.log");
    let len = std::fs::metadata(&segment).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(len - 5)
        .unwrap();

    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let log = tracing::subscriber::with_default(subscriber, || Log::builder(&path).open().unwrap());
    let cut = log.recovery_report().truncated.clone().expect("a cut");
    assert_eq!(cut.position, first_len);
    log.close().unwrap();

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("recovery cut a damaged tail"))
        .unwrap_or_else(|| panic!("no recovery event in {text:?}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains(&format!("file={}", segment.display())),
        "{line}"
    );
    assert!(line.contains(&format!("position={first_len}")), "{line}");
    assert!(line.contains("first_lost_offset=1"), "{line}");

    // A clean open emits no warning.
    let quiet = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(quiet.clone())
        .with_max_level(tracing::Level::WARN)
        .finish();
    let log = tracing::subscriber::with_default(subscriber, || Log::builder(&path).open().unwrap());
    log.close().unwrap();
    assert!(quiet.0.lock().unwrap().is_empty());
}
