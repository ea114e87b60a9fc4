//! Producer errors: what `send` rejects (and then stores nothing), what
//! arrives through the handles, and that nothing panics or hangs.

mod producer_util;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use logbus::{
    Acks, Clock, ClusterConfig, Error, ManualClock, NewTopic, Partitioner, Producer,
    ProducerConfig, ProducerRecord, Result, TopicConfig,
};
use producer_util::{T0, open, open_with_clock, records};

fn lingering() -> ProducerConfig {
    ProducerConfig::builder()
        .acks(Acks::Leader)
        .linger(Duration::from_millis(3_600_000))
        .build()
        .expect("config")
}

#[test]
fn invalid_configs_name_the_kafka_setting() {
    let check = |result: Result<ProducerConfig>, setting: &str| match result {
        Err(Error::InvalidConfig(message)) => {
            assert!(message.contains(setting), "{message} should name {setting}");
        }
        other => panic!("expected InvalidConfig for {setting}, got {other:?}"),
    };
    check(
        ProducerConfig::builder().buffer_memory(0).build(),
        "buffer.memory",
    );
    check(
        ProducerConfig::builder().max_request_size(0).build(),
        "max.request.size",
    );
    check(
        ProducerConfig::builder()
            .batch_size(i32::MAX as u64 + 1)
            .build(),
        "batch.size",
    );
    let defaults = ProducerConfig::default();
    assert_eq!(
        (
            defaults.acks(),
            defaults.linger(),
            defaults.batch_size(),
            defaults.buffer_memory(),
            defaults.max_block(),
            defaults.max_request_size(),
        ),
        (
            Acks::All,
            Duration::from_millis(5),
            16_384,
            32 << 20,
            Duration::from_secs(60),
            1_048_576
        )
    );
}

#[test]
fn durations_are_whole_milliseconds_and_saturate() -> Result<()> {
    // Kafka keeps milliseconds: a Duration is rounded down to one, and one
    // beyond i64::MAX milliseconds saturates there instead of failing.
    let config = ProducerConfig::builder()
        .linger(Duration::from_micros(2_999))
        .max_block(Duration::from_nanos(999_999))
        .build()?;
    assert_eq!(config.linger(), Duration::from_millis(2));
    assert_eq!(config.max_block(), Duration::ZERO);
    let config = ProducerConfig::builder()
        .linger(Duration::MAX)
        .max_block(Duration::from_millis(u64::MAX))
        .build()?;
    let most = Duration::from_millis(i64::MAX as u64);
    assert_eq!((config.linger(), config.max_block()), (most, most));
    Ok(())
}

#[test]
fn unknown_topics_and_partitions_are_rejected_by_send() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = open(dir.path())?;
    cluster.create_topic(NewTopic::new("known", 2))?;
    let producer = Producer::new(&cluster, lingering())?;
    match producer.send(ProducerRecord::new("missing", "v")) {
        Err(Error::UnknownTopicOrPartition { topic, partition }) => {
            assert_eq!((topic.as_str(), partition), ("missing", None));
        }
        other => panic!("{other:?}"),
    }
    match producer.send(ProducerRecord::new("known", "v").with_partition(2)) {
        Err(Error::UnknownTopicOrPartition { topic, partition }) => {
            assert_eq!((topic.as_str(), partition), ("known", Some(2)));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        producer.send(ProducerRecord::new("known", "v").with_timestamp(-5)),
        Err(Error::InvalidArgument(_))
    ));
    producer.flush()?;
    for p in 0..2 {
        assert_eq!(cluster.topic("known")?.partition(p)?.high_watermark()?, 0);
    }
    producer.close()?;
    cluster.close()
}

#[derive(Debug)]
struct OutOfRange;

impl Partitioner for OutOfRange {
    fn partition(
        &self,
        _topic: &str,
        _key: Option<&[u8]>,
        _value: Option<&[u8]>,
        count: NonZeroU32,
    ) -> Option<u32> {
        Some(count.get())
    }
}

#[test]
fn a_custom_partition_out_of_range_is_an_invalid_argument() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = open(dir.path())?;
    cluster.create_topic(NewTopic::new("t", 3))?;
    let config = ProducerConfig::builder()
        .partitioner(Arc::new(OutOfRange))
        .build()?;
    let producer = Producer::new(&cluster, config)?;
    assert!(matches!(
        producer.send(ProducerRecord::new("t", "v")),
        Err(Error::InvalidArgument(_))
    ));
    producer.close()?;
    cluster.close()
}

#[test]
fn oversized_records_are_rejected_before_anything_is_stored() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = open(dir.path())?;
    cluster.create_topic(
        NewTopic::new("small", 1).config(TopicConfig::new().max_message_bytes(500).unwrap()),
    )?;
    cluster.create_topic(NewTopic::new("big", 1))?;
    let config = ProducerConfig::builder()
        .acks(Acks::Leader)
        .max_request_size(10_000)
        .buffer_memory(20_000)
        .build()?;
    let producer = Producer::new(&cluster, config)?;

    // max.request.size
    match producer.send(ProducerRecord::new("big", vec![0_u8; 10_000])) {
        Err(Error::RecordTooLarge { size, max, limit }) => {
            assert_eq!((max, limit), (10_000, "max.request.size"));
            assert!(size > 10_000);
        }
        other => panic!("{other:?}"),
    }
    // The topic's max.message.bytes
    let err = producer
        .send(ProducerRecord::new("small", vec![0_u8; 500]))
        .expect_err("over max.message.bytes");
    assert!(err.to_string().contains("max.message.bytes"), "{err}");
    assert!(matches!(
        err,
        Error::RecordTooLarge {
            max: 500,
            limit: "max.message.bytes",
            ..
        }
    ));
    // Records under the limits go through.
    let ok = producer.send(ProducerRecord::new("small", vec![0_u8; 400]))?;
    let big = producer.send(ProducerRecord::new("big", vec![0_u8; 9_000]))?;
    producer.flush()?;
    assert_eq!(ok.wait()?.offset(), Some(0));
    assert_eq!(big.wait()?.offset(), Some(0));
    assert_eq!(records(&cluster, "small", 0)?.len(), 1);
    assert_eq!(records(&cluster, "big", 0)?.len(), 1);
    producer.close()?;

    // buffer.memory smaller than max.request.size
    let config = ProducerConfig::builder().buffer_memory(1_000).build()?;
    let producer = Producer::new(&cluster, config)?;
    assert!(matches!(
        producer.send(ProducerRecord::new("big", vec![0_u8; 2_000])),
        Err(Error::RecordTooLarge {
            max: 1_000,
            limit: "buffer.memory",
            ..
        })
    ));
    producer.close()?;
    assert_eq!(records(&cluster, "big", 0)?.len(), 1, "nothing more stored");
    cluster.close()
}

/// A manual clock that reports every `subscribe` call, so a test knows
/// when a `send` has started to wait.
#[derive(Debug)]
struct SignallingClock {
    inner: ManualClock,
    subscribed: Sender<()>,
}

impl Clock for SignallingClock {
    fn now_ms(&self) -> i64 {
        self.inner.now_ms()
    }
    fn wait_hint(&self, deadline_ms: i64) -> Option<Duration> {
        self.inner.wait_hint(deadline_ms)
    }
    fn subscribe(&self) -> Receiver<()> {
        let _ = self.subscribed.send(());
        self.inner.subscribe()
    }
}

#[test]
fn a_full_buffer_blocks_send_until_max_block_ms_then_fails() -> Result<()> {
    const MAX_BLOCK: u64 = 2_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let manual = ManualClock::new(T0);
    let (subscribed, subscriptions) = crossbeam_channel::unbounded();
    let clock = Arc::new(SignallingClock {
        inner: manual.clone(),
        subscribed,
    });
    let cluster =
        logbus::Cluster::open(dir.path(), ClusterConfig::builder().clock(clock).build()?)?;
    cluster.create_topic(NewTopic::new("t", 1))?;
    let config = ProducerConfig::builder()
        .acks(Acks::Leader)
        .linger(Duration::from_millis(3_600_000))
        .buffer_memory(4_000)
        .max_block(Duration::from_millis(MAX_BLOCK))
        .build()?;
    let producer = Producer::new(&cluster, config)?;

    // Stall the sender thread inside a callback, so nothing drains.
    let (entered_tx, entered) = crossbeam_channel::bounded(1);
    let (release, release_rx) = crossbeam_channel::bounded::<()>(1);
    producer.send_with_callback(ProducerRecord::new("t", "first"), move |r| {
        assert!(r.is_ok());
        entered_tx.send(()).expect("test alive");
        release_rx.recv().expect("test alive");
    })?;
    manual.advance_ms(3_600_000); // the first record's linger passes
    entered.recv().expect("callback entered");
    // Everything subscribed so far (logs, the producer) is not a blocked send.
    while subscriptions.try_recv().is_ok() {}

    let filler = producer.clone();
    let sending = std::thread::spawn(move || {
        let mut accepted = Vec::new();
        for _ in 0..20 {
            match filler.send(ProducerRecord::new("t", vec![b'f'; 500])) {
                Ok(handle) => accepted.push(handle),
                Err(e) => return (accepted, Some(e)),
            }
        }
        (accepted, None)
    });
    // A send blocked: it subscribed to the clock. Move past max.block.ms.
    subscriptions.recv().expect("a send waits for room");
    manual.advance_ms(MAX_BLOCK as i64);
    let (accepted, error) = sending.join().expect("sending thread");
    let error = error.expect("the buffer filled up");
    assert!(error.is_retriable());
    match error {
        Error::BufferExhausted {
            buffer_memory,
            waited,
        } => {
            assert_eq!(buffer_memory, 4_000);
            assert_eq!(waited, Duration::from_millis(MAX_BLOCK));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !accepted.is_empty() && accepted.len() < 8,
        "{}",
        accepted.len()
    );

    // Let the sender go: everything accepted is delivered.
    release.send(()).expect("callback waiting");
    producer.flush()?;
    for handle in accepted.iter() {
        assert!(handle.is_done());
    }
    let n = accepted.len();
    for handle in accepted {
        handle.wait()?;
    }
    assert_eq!(records(&cluster, "t", 0)?.len(), 1 + n);
    producer.close()?;
    cluster.close()
}

#[test]
fn max_block_ms_zero_fails_at_once_when_full() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0);
    let cluster = open_with_clock(dir.path(), &clock)?;
    cluster.create_topic(NewTopic::new("t", 1))?;
    let config = ProducerConfig::builder()
        .linger(Duration::from_millis(3_600_000))
        .buffer_memory(1_000)
        .max_block(Duration::ZERO)
        .build()?;
    let producer = Producer::new(&cluster, config)?;
    let (entered_tx, entered) = crossbeam_channel::bounded(1);
    let (release, release_rx) = crossbeam_channel::bounded::<()>(1);
    producer.send_with_callback(ProducerRecord::new("t", vec![0_u8; 600]), move |_| {
        entered_tx.send(()).expect("test alive");
        release_rx.recv().expect("test alive");
    })?;
    clock.advance_ms(3_600_000);
    entered.recv().expect("callback entered");
    assert!(matches!(
        producer.send(ProducerRecord::new("t", vec![0_u8; 600])),
        Err(Error::BufferExhausted {
            waited: Duration::ZERO,
            ..
        })
    ));
    release.send(()).expect("callback waiting");
    producer.close()?;
    assert_eq!(records(&cluster, "t", 0)?.len(), 1);
    cluster.close()
}

#[test]
fn a_topic_deleted_with_records_pending_fails_them_through_handles_and_callbacks() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0);
    let cluster = open_with_clock(dir.path(), &clock)?;
    cluster.create_topic(NewTopic::new("t", 2))?;
    let producer = Producer::new(&cluster, lingering())?;
    let handles: Vec<_> = (0..10_u32)
        .map(|i| producer.send(ProducerRecord::new("t", "v").with_partition(i % 2)))
        .collect::<Result<_>>()?;
    let (tx, rx) = crossbeam_channel::unbounded();
    for _ in 0..3 {
        let tx = tx.clone();
        producer.send_with_callback(
            ProducerRecord::new("t", "cb").with_partition(0),
            move |r| {
                tx.send(r).expect("test alive");
            },
        )?;
    }
    drop(tx);
    cluster.delete_topic("t")?;
    producer.flush()?;
    // One failed batch, an error for every record.
    for handle in handles {
        let p = handle.partition();
        match handle.wait() {
            Err(Error::UnknownTopicOrPartition { topic, partition }) => {
                assert_eq!((topic.as_str(), partition), ("t", Some(p)));
            }
            other => panic!("{other:?}"),
        }
    }
    let called: Vec<_> = rx.iter().collect();
    assert_eq!(called.len(), 3, "each callback once");
    assert!(
        called
            .iter()
            .all(|r| matches!(r, Err(Error::UnknownTopicOrPartition { .. })))
    );
    // Later sends are rejected by send itself...
    assert!(matches!(
        producer.send(ProducerRecord::new("t", "v")),
        Err(Error::UnknownTopicOrPartition {
            partition: None,
            ..
        })
    ));
    // ...until a topic of that name exists again: a new, empty topic.
    cluster.create_topic(NewTopic::new("t", 1))?;
    let m = producer.send(ProducerRecord::new("t", "again"))?;
    producer.flush()?;
    assert_eq!(m.wait()?.offset(), Some(0));
    producer.close()?;
    cluster.close()
}

#[test]
fn deleting_a_topic_while_a_thread_sends_to_it_never_panics_or_hangs() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = open(dir.path())?;
    cluster.create_topic(NewTopic::new("doomed", 2))?;
    let config = ProducerConfig::builder()
        .acks(Acks::Leader)
        .linger(Duration::ZERO)
        .batch_size(1_000)
        .build()?;
    let producer = Producer::new(&cluster, config)?;
    let (started_tx, started) = crossbeam_channel::bounded(1);
    let sender = producer.clone();
    let thread = std::thread::spawn(move || {
        let mut handles = Vec::new();
        let mut started_tx = Some(started_tx);
        loop {
            match sender.send(ProducerRecord::new("doomed", vec![1_u8; 64])) {
                Ok(handle) => handles.push(handle),
                Err(Error::UnknownTopicOrPartition { .. }) => return handles,
                Err(other) => panic!("unexpected send error: {other}"),
            }
            if handles.len() == 1_000
                && let Some(tx) = started_tx.take()
            {
                // The first thousand are appended before the delete.
                sender.flush().expect("flush");
                tx.send(()).expect("test alive");
            }
        }
    });
    started.recv().expect("sending");
    cluster.delete_topic("doomed")?;
    let handles = thread.join().expect("no panic in the sending thread");
    let (mut ok, mut failed) = (0, 0);
    for handle in handles {
        match handle.wait() {
            Ok(_) => ok += 1,
            Err(Error::UnknownTopicOrPartition { .. }) => failed += 1,
            Err(other) => panic!("unexpected append error: {other}"),
        }
    }
    assert!(ok >= 1_000, "{ok} appended before the delete");
    let _ = failed; // how many depends on timing; each got an answer
    producer.close()?;
    cluster.close()
}

#[test]
fn a_closing_cluster_delivers_pending_records_and_fails_later_sends() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0);
    let cluster = open_with_clock(dir.path(), &clock)?;
    cluster.create_topic(NewTopic::new("t", 1))?;
    let producer = Producer::new(&cluster, lingering())?;
    let pending = producer.send(ProducerRecord::new("t", "v"))?;
    // The close flushes the producer before it closes the logs.
    cluster.close()?;
    assert_eq!(pending.wait()?.offset(), Some(0));
    assert!(matches!(
        producer.send(ProducerRecord::new("t", "v")),
        Err(Error::Closed("cluster"))
    ));
    assert!(matches!(
        Producer::new(&cluster, lingering()),
        Err(Error::Closed("cluster"))
    ));
    producer.close()
}

#[test]
fn wait_timeout_follows_the_clusters_clock() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0);
    let cluster = open_with_clock(dir.path(), &clock)?;
    cluster.create_topic(NewTopic::new("t", 1))?;
    let producer = Producer::new(&cluster, lingering())?;
    let pending = producer.send(ProducerRecord::new("t", "v"))?;
    // A zero timeout on a manual clock: the deadline has passed at once.
    assert!(pending.wait_timeout(Duration::ZERO).is_none());
    producer.flush()?;
    let m = pending
        .wait_timeout(Duration::from_secs(1))
        .expect("done")?;
    assert_eq!(m.offset(), Some(0));
    producer.close()?;
    cluster.close()
}

/// A partitioner that counts its calls.
#[derive(Debug, Default)]
struct Counting(std::sync::atomic::AtomicUsize);

impl Partitioner for Counting {
    fn partition(
        &self,
        _topic: &str,
        _key: Option<&[u8]>,
        _value: Option<&[u8]>,
        _partitions: NonZeroU32,
    ) -> Option<u32> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        None
    }
}

#[test]
fn keyless_records_to_a_compacted_topic_are_refused_by_send() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = open(dir.path())?;
    let compacted = TopicConfig::new().cleanup_policy(logbus::CleanupPolicy::Compact);
    let topic = cluster.create_topic(NewTopic::new("c", 2).config(compacted))?;
    // The error the log gives for a keyless record (what the handle used
    // to carry), to compare with what `send` now says.
    let mut keyless = {
        let mut b = logbus::format::BatchBuilder::new(logbus::Compression::None);
        b.append(T0, None, Some(b"v"), &[]);
        b.build().expect("batch").to_vec()
    };
    let from_log = topic
        .partition(0)?
        .append(&mut keyless)
        .expect_err("keyless");
    assert!(matches!(
        from_log,
        Error::InvalidBatch(logbus::FormatError::InvalidRecord(_))
    ));

    let partitioner = Arc::new(Counting::default());
    let producer = Producer::new(
        &cluster,
        ProducerConfig::builder()
            .acks(Acks::Leader)
            .partitioner(partitioner.clone())
            .build()?,
    )?;
    let refused = [
        ProducerRecord::new("c", "no key"),
        ProducerRecord::new("c", "no key").with_partition(1),
        ProducerRecord::new("c", "no key").with_header("h", "v"),
    ];
    for record in refused {
        let e = producer.send(record.clone()).expect_err("refused by send");
        assert!(
            matches!(
                e,
                Error::InvalidBatch(logbus::FormatError::InvalidRecord(_))
            ),
            "{e:?}"
        );
        assert_eq!(e.to_string(), from_log.to_string());
        assert!(e.to_string().contains("cleanup.policy=compact"), "{e}");
        let called = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = called.clone();
        let e = producer
            .send_with_callback(record, move |_| flag.store(true, Ordering::SeqCst))
            .expect_err("refused by send_with_callback");
        assert_eq!(e.to_string(), from_log.to_string());
        producer.flush()?;
        assert!(
            !called.load(Ordering::SeqCst),
            "no callback for a refused record"
        );
    }
    assert_eq!(
        partitioner.0.load(Ordering::SeqCst),
        0,
        "refused before the partitioner ran"
    );
    // Nothing was enqueued: keyed records and tombstones go on from offset 0.
    let keyed = producer
        .send(
            ProducerRecord::new("c", "v")
                .with_key("k")
                .with_partition(0),
        )?
        .wait()?;
    let tombstone = producer
        .send(ProducerRecord::tombstone("c", "k").with_partition(0))?
        .wait()?;
    assert_eq!((keyed.offset(), tombstone.offset()), (Some(0), Some(1)));
    assert!(records(&cluster, "c", 1)?.is_empty());
    // A topic that is not compacted still takes keyless records.
    cluster.create_topic(NewTopic::new("plain", 1))?;
    producer.send(ProducerRecord::new("plain", "v"))?.wait()?;
    producer.close()?;
    cluster.close()
}

/// The settings a test can compare.
fn settings(
    c: &ProducerConfig,
) -> (
    Acks,
    Duration,
    u64,
    logbus::Compression,
    u64,
    Duration,
    u64,
    String,
) {
    (
        c.acks(),
        c.linger(),
        c.batch_size(),
        c.compression(),
        c.buffer_memory(),
        c.max_block(),
        c.max_request_size(),
        c.client_id().to_string(),
    )
}

#[test]
fn set_by_kafka_name_stores_what_the_typed_setters_store() -> Result<()> {
    let by_name = ProducerConfig::builder()
        .set("acks", " -1 ")?
        .set("linger.ms", "25")?
        .set("batch.size", "32768")?
        .set("compression.type", "gzip")?
        .set("buffer.memory", "1048576")?
        .set("max.block.ms", "1500")?
        .set("max.request.size", "65536")?
        .set("client.id", "billing")?
        .build()?;
    let typed = ProducerConfig::builder()
        .acks(Acks::All)
        .linger(Duration::from_millis(25))
        .batch_size(32768)
        .compression(logbus::Compression::Gzip)
        .buffer_memory(1 << 20)
        .max_block(Duration::from_millis(1500))
        .max_request_size(65536)
        .client_id("billing")
        .build()?;
    assert_eq!(settings(&by_name), settings(&typed));
    for (acks, expected) in [("0", Acks::None), ("1", Acks::Leader), ("all", Acks::All)] {
        let c = ProducerConfig::builder().set("acks", acks)?.build()?;
        assert_eq!(c.acks(), expected);
    }
    for (name, value) in [
        ("acks", "2"),
        ("linger.ms", "-1"),
        ("linger.ms", "soon"),
        ("batch.size", "1.5"),
        ("compression.type", "brotli"),
        ("max.block.ms", ""),
    ] {
        let err = ProducerConfig::builder().set(name, value).unwrap_err();
        assert!(
            matches!(err, Error::InvalidConfig(_)),
            "{name}={value}: {err}"
        );
        assert!(err.to_string().contains(name), "{name}={value}: {err}");
    }
    let err = ProducerConfig::builder()
        .set("interceptor.classes", "com.example.Audit")
        .unwrap_err();
    assert!(err.to_string().contains("unknown producer config"), "{err}");
    // Ranges are checked by build, as for the typed setters.
    let err = ProducerConfig::builder()
        .set("buffer.memory", "0")?
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("buffer.memory"), "{err}");
    Ok(())
}
