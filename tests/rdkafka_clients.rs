//! The `rdkafka` crate (librdkafka) as a real client of logbus's Kafka
//! listener (`Cluster::serve`) on a three-broker cluster served on
//! loopback port 0: synchronous clients only (`BaseProducer`,
//! `BaseConsumer`, and the `AdminClient` whose futures a tiny `block_on`
//! below drives; no async runtime).
//!
//! - The admin client creates topics (a duplicate is refused) and deletes
//!   one; keyed records produced with every compression codec are stored
//!   in that codec and consumed back byte-equal, each key in order.
//! - A consumer group rebalances: two members split the partitions, a
//!   third joins (the rebalance callbacks see the revocation and the new
//!   assignments), they commit and leave, and a fresh member resumes at
//!   the commits, neither re-reading below them nor skipping anything.
//! - An idempotent producer's batches carry its producer id and gapless
//!   sequences; a transactional producer's aborted records (and offsets)
//!   are hidden from a read_committed consumer, an open transaction holds
//!   that consumer at the last stable offset, committed records and
//!   `send_offsets_to_transaction`'s offsets land.
//! - The leader of a partition crashes mid-stream: an idempotent
//!   `acks=all` producer and a consumer follow the new leader, and every
//!   acknowledged record is read exactly once, each key in order.
//!
//! Nothing sleeps: every wait polls librdkafka with a short timeout in a
//! loop bounded by a deadline, until a condition holds.
#![cfg(all(feature = "server", feature = "kafka"))]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use logbus::{
    Cluster, ClusterConfig, ClusterConfigBuilder, Compression, GroupState, NewTopic, Server,
    TopicPartition,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic as KafkaTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers as _, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Message as _, Offset, TopicPartitionList};

type TestResult<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// How long any one wait on the clients may take before a test fails.
const DEADLINE: Duration = Duration::from_secs(30);

/// How long one `poll` of a client waits for something to happen.
const POLL: Duration = Duration::from_millis(50);

/// A three-broker cluster and its listener. Fields drop in order: the
/// listener first, then the cluster, then its directory.
struct Served {
    _server: Server,
    cluster: Cluster,
    /// Every broker's address, comma-separated: `bootstrap.servers`.
    bootstrap: String,
    _dir: tempfile::TempDir,
}

impl Served {
    fn start() -> TestResult<Served> {
        Served::start_with(|builder| builder)
    }

    /// A cluster whose configuration `tune` adjusts first.
    fn start_with(
        tune: impl FnOnce(ClusterConfigBuilder) -> ClusterConfigBuilder,
    ) -> TestResult<Served> {
        let dir = tempfile::tempdir()?;
        let config = tune(
            ClusterConfig::builder()
                .brokers(3)
                .group_min_session_timeout(Duration::from_secs(1)),
        )
        .build()?;
        let cluster = Cluster::open(dir.path(), config)?;
        let server = cluster.serve("127.0.0.1:0")?;
        let bootstrap = server
            .addresses()
            .values()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        Ok(Served {
            _server: server,
            cluster,
            bootstrap,
            _dir: dir,
        })
    }

    /// A client configuration reaching this cluster.
    fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        config
    }

    /// Each partition's log end offset, from the library's side.
    fn ends(&self, topic: &str) -> TestResult<BTreeMap<i32, i64>> {
        let mut ends = BTreeMap::new();
        for p in self.cluster.topic(topic)?.partitions()? {
            ends.insert(
                i32::try_from(p.partition())?,
                i64::try_from(p.log_end_offset()?)?,
            );
        }
        Ok(ends)
    }

    /// Every stored batch of `topic` (control batches included) with its
    /// records' values, per partition in offset order.
    fn stored_batches(&self, topic: &str) -> TestResult<Vec<StoredBatch>> {
        let mut out = Vec::new();
        for p in self.cluster.topic(topic)?.partitions()? {
            let end = p.log_end_offset()?;
            let mut offset = p.log_start_offset()?;
            while offset < end {
                let read = p.read(offset, 1 << 20)?;
                for batch in read.batches() {
                    let batch = batch?;
                    let header = *batch.header();
                    let mut values = Vec::new();
                    for record in batch.records()? {
                        values.push(record?.value().map(|v| v.to_vec()));
                    }
                    offset = u64::try_from(header.next_offset())?;
                    out.push(StoredBatch {
                        partition: p.partition(),
                        compression: header.compression()?,
                        producer_id: header.producer_id,
                        base_sequence: header.base_sequence,
                        transactional: header.is_transactional(),
                        control: header.is_control(),
                        values,
                    });
                }
            }
        }
        Ok(out)
    }
}

/// One batch as logbus stored it.
#[derive(Debug)]
struct StoredBatch {
    partition: u32,
    compression: Compression,
    producer_id: i64,
    base_sequence: i32,
    transactional: bool,
    control: bool,
    values: Vec<Option<Vec<u8>>>,
}

/// Drives `future` to completion on this thread: it parks until the
/// future's waker (rdkafka's admin polling thread, answering a request)
/// unparks it.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}

/// One record as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rec {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Rec {
    fn of(m: &impl rdkafka::Message) -> Rec {
        Rec {
            partition: m.partition(),
            offset: m.offset(),
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
        }
    }

    fn value_str(&self) -> String {
        String::from_utf8_lossy(self.value.as_deref().unwrap_or_default()).into_owned()
    }
}

/// A producer context recording every delivery report: the records
/// acknowledged (with their partition and offset) and the failures.
#[derive(Debug, Clone, Default)]
struct Deliveries {
    acked: Arc<Mutex<Vec<Rec>>>,
    failed: Arc<Mutex<Vec<String>>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => lock(&self.acked).push(Rec::of(m)),
            Err((e, m)) => lock(&self.failed).push(format!(
                "{e} (key {:?})",
                m.key().map(String::from_utf8_lossy)
            )),
        }
    }
}

impl Deliveries {
    fn acked(&self) -> Vec<Rec> {
        lock(&self.acked).clone()
    }

    fn failed(&self) -> Vec<String> {
        lock(&self.failed).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A producer reporting to a fresh [`Deliveries`], with `settings`.
fn producer(
    served: &Served,
    settings: &[(&str, &str)],
) -> TestResult<(BaseProducer<Deliveries>, Deliveries)> {
    let mut config = served.config();
    for (k, v) in settings {
        config.set(*k, *v);
    }
    let deliveries = Deliveries::default();
    let producer = config.create_with_context(deliveries.clone())?;
    Ok((producer, deliveries))
}

/// Sends one record, waiting (by polling the producer for delivery
/// reports) while its queue is full.
fn send(producer: &BaseProducer<Deliveries>, mut record: BaseRecord<'_, [u8], [u8]>) -> TestResult {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                assert!(Instant::now() < deadline, "the producer's queue stays full");
                record = r;
                producer.poll(POLL);
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

/// Flushes `producer`; every record it sent must be acknowledged.
fn flush_all(producer: &BaseProducer<Deliveries>, deliveries: &Deliveries) -> TestResult {
    producer.flush(DEADLINE)?;
    let failed = deliveries.failed();
    assert!(failed.is_empty(), "records not acknowledged: {failed:?}");
    Ok(())
}

/// Polls `consumer` (a [`reader`] of a topic of `partitions` partitions)
/// until each partition reported its end (`enable.partition.eof`: at the
/// high watermark, or at the last stable offset under read_committed);
/// the records read, in (partition, offset) order.
fn read_to_eof(consumer: &BaseConsumer, partitions: usize) -> Vec<Rec> {
    let mut eof = vec![false; partitions];
    let mut out = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while eof.iter().any(|e| !e) {
        assert!(Instant::now() < deadline, "no end of partitions {eof:?}");
        match consumer.poll(POLL) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => eof[usize::try_from(p).unwrap()] = true,
            Some(Err(e)) => panic!("consume: {e}"),
            Some(Ok(m)) => out.push(Rec::of(&m)),
        }
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    out
}

/// A consumer of no group subscription, assigned every partition of
/// `topic` from the beginning, reporting each partition's end.
fn reader(
    served: &Served,
    topic: &str,
    partitions: i32,
    isolation: &str,
) -> TestResult<BaseConsumer> {
    let consumer: BaseConsumer = served
        .config()
        .set("group.id", "rdkafka-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation)
        // An empty fetch long-polls this long before the end is reported.
        .set("fetch.wait.max.ms", "100")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

/// Each key's values, in the order read (partition then offset order).
fn values_per_key(records: &[Rec]) -> BTreeMap<Vec<u8>, Vec<String>> {
    let mut per_key: BTreeMap<Vec<u8>, Vec<String>> = BTreeMap::new();
    for r in records {
        per_key
            .entry(r.key.clone().unwrap_or_default())
            .or_default()
            .push(r.value_str());
    }
    per_key
}

/// The number a value `PREFIX-N` ends with.
fn seq(value: &str) -> u64 {
    value
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Asserts that each key's records were read in the order sent (their
/// values end in increasing numbers) and that every key lives in one
/// partition.
fn assert_in_order_per_key(records: &[Rec]) {
    let mut partition_of = BTreeMap::new();
    for r in records {
        let p = *partition_of.entry(r.key.clone()).or_insert(r.partition);
        assert_eq!(p, r.partition, "key {:?} in two partitions", r.key);
    }
    for (key, values) in values_per_key(records) {
        let numbers: Vec<_> = values.iter().map(|v| seq(v)).collect();
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "key {:?} out of order: {values:?}",
            String::from_utf8_lossy(&key)
        );
    }
}

const CODECS: [(&str, Compression); 5] = [
    ("none", Compression::None),
    ("gzip", Compression::Gzip),
    ("snappy", Compression::Snappy),
    ("lz4", Compression::Lz4),
    ("zstd", Compression::Zstd),
];

/// The `i`th value of `codec`'s records: compressible text (librdkafka
/// sends a batch uncompressed when compressing does not shrink it) with
/// bytes of every value from 0 to 255 in it, ending in `-i`.
fn codec_value(codec: &str, i: usize) -> Vec<u8> {
    let mut v = format!("{codec} record, padded to compress well: ").into_bytes();
    v.extend(std::iter::repeat_n(b"abcdefgh".as_slice(), 16).flatten());
    v.extend((0..=255u8).map(|b| b.wrapping_add(i as u8)));
    v.extend(format!("-{i}").into_bytes());
    v
}

#[test]
fn admin_creates_topics_and_every_codec_round_trips_byte_equal() -> TestResult {
    let served = Served::start()?;
    let admin: AdminClient<DefaultClientContext> = served.config().create()?;
    let options = AdminOptions::new()
        .request_timeout(Some(DEADLINE))
        .operation_timeout(Some(DEADLINE));
    let codecs =
        KafkaTopic::new("codecs", 3, TopicReplication::Fixed(2)).set("min.insync.replicas", "2");
    let doomed = KafkaTopic::new("doomed", 1, TopicReplication::Fixed(3));
    let created = block_on(admin.create_topics([&codecs, &doomed], &options))?;
    assert_eq!(
        created,
        [Ok("codecs".to_string()), Ok("doomed".to_string())]
    );
    let described = served.cluster.describe_topic("codecs")?;
    assert_eq!(described.partitions.len(), 3);
    assert!(described.partitions.iter().all(|p| p.replicas.len() == 2));
    assert_eq!(described.config.get("min.insync.replicas"), Some("2"));
    // Again: TOPIC_ALREADY_EXISTS, the topic unchanged.
    let again = block_on(admin.create_topics(
        [&KafkaTopic::new("codecs", 5, TopicReplication::Fixed(1))],
        &options,
    ))?;
    assert_eq!(
        again,
        [Err((
            "codecs".to_string(),
            RDKafkaErrorCode::TopicAlreadyExists
        ))]
    );
    assert_eq!(served.cluster.describe_topic("codecs")?.partitions.len(), 3);
    let deleted = block_on(admin.delete_topics(&["doomed"], &options))?;
    assert_eq!(deleted, [Ok("doomed".to_string())]);
    let topics = served.cluster.list_topics();
    assert!(!topics.contains(&"doomed".to_string()), "{topics:?}");

    // 40 keyed records per codec, each codec from its own producer.
    const PER_CODEC: usize = 40;
    let mut sent = Vec::new();
    for (codec, _) in CODECS {
        let (producer, deliveries) = producer(
            &served,
            &[
                ("compression.type", codec),
                ("linger.ms", "5"),
                ("acks", "all"),
            ],
        )?;
        for i in 0..PER_CODEC {
            let key = format!("{codec}-key-{}", i % 5).into_bytes();
            let value = codec_value(codec, i);
            let headers = OwnedHeaders::new().insert(Header {
                key: "codec",
                value: Some(codec),
            });
            send(
                &producer,
                BaseRecord::to("codecs")
                    .key(&key[..])
                    .payload(&value[..])
                    .headers(headers),
            )?;
            sent.push((key, value, codec));
        }
        flush_all(&producer, &deliveries)?;
        assert_eq!(deliveries.acked().len(), PER_CODEC);
    }

    // Stored in the codec each producer asked for.
    let stored = served.stored_batches("codecs")?;
    let mut seen = BTreeSet::new();
    for batch in &stored {
        let first = batch.values[0].as_deref().unwrap_or_default();
        let (_, expected) = CODECS
            .iter()
            .find(|(name, _)| first.starts_with(format!("{name} record").as_bytes()))
            .ok_or("a record of no codec")?;
        assert_eq!(
            batch.compression, *expected,
            "partition {}",
            batch.partition
        );
        seen.insert(format!("{:?}", batch.compression));
    }
    assert_eq!(seen.len(), CODECS.len(), "every codec stored: {seen:?}");

    // Consumed back byte-equal, each key in order.
    let consumer = reader(&served, "codecs", 3, "read_uncommitted")?;
    let read = read_to_eof(&consumer, 3);
    let mut got: Vec<_> = read
        .iter()
        .map(|r| {
            assert_eq!(r.headers.len(), 1);
            let codec = String::from_utf8(r.headers[0].1.clone().unwrap_or_default()).unwrap();
            (r.key.clone().unwrap(), r.value.clone().unwrap(), codec)
        })
        .collect();
    let mut expected: Vec<_> = sent
        .into_iter()
        .map(|(k, v, c)| (k, v, c.to_string()))
        .collect();
    got.sort();
    expected.sort();
    assert_eq!(got.len(), expected.len());
    assert!(
        got == expected,
        "the records read back differ from those sent"
    );
    assert_in_order_per_key(&read);
    Ok(())
}

/// What a member's rebalance callbacks saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Assign(Vec<i32>),
    Revoke(Vec<i32>),
}

/// A consumer context recording every rebalance.
#[derive(Debug, Clone, Default)]
struct Rebalances(Arc<Mutex<Vec<Event>>>);

impl ClientContext for Rebalances {}

impl ConsumerContext for Rebalances {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let partitions = |tpl: &TopicPartitionList| {
            let mut ps: Vec<_> = tpl.elements().iter().map(|e| e.partition()).collect();
            ps.sort_unstable();
            ps
        };
        let event = match rebalance {
            Rebalance::Assign(tpl) => Event::Assign(partitions(tpl)),
            Rebalance::Revoke(tpl) => Event::Revoke(partitions(tpl)),
            Rebalance::Error(e) => panic!("rebalance error: {e}"),
        };
        lock(&self.0).push(event);
    }
}

const GROUP: &str = "rdkafka-group";
const GROUP_TOPIC: &str = "grouped";
const GROUP_PARTITIONS: i32 = 4;

/// One member of [`GROUP`], polled by the test's thread.
struct Member {
    consumer: BaseConsumer<Rebalances>,
    rebalances: Rebalances,
    records: Vec<Rec>,
}

impl Member {
    fn join(served: &Served) -> TestResult<Member> {
        let rebalances = Rebalances::default();
        let consumer: BaseConsumer<Rebalances> = served
            .config()
            .set("group.id", GROUP)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "range")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "200")
            .create_with_context(rebalances.clone())?;
        consumer.subscribe(&[GROUP_TOPIC])?;
        Ok(Member {
            consumer,
            rebalances,
            records: Vec::new(),
        })
    }

    fn poll(&mut self) {
        match self.consumer.poll(POLL) {
            None => {}
            Some(Ok(m)) => self.records.push(Rec::of(&m)),
            Some(Err(e)) => panic!("member poll: {e}"),
        }
    }

    fn owned(&self) -> Vec<i32> {
        let mut ps: Vec<_> = self
            .consumer
            .assignment()
            .expect("assignment")
            .elements()
            .iter()
            .map(|e| e.partition())
            .collect();
        ps.sort_unstable();
        ps
    }

    /// Its position in each partition it owns (the offset after the last
    /// record it read; none before its first record there).
    fn positions(&self) -> BTreeMap<i32, i64> {
        self.consumer
            .position()
            .expect("position")
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect()
    }

    fn events(&self) -> Vec<Event> {
        lock(&self.rebalances.0).clone()
    }
}

/// Polls every member in turn until `done` holds.
fn poll_until(members: &mut [&mut Member], what: &str, done: impl Fn(&[&mut Member]) -> bool) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        for m in members.iter_mut() {
            m.poll();
        }
        if done(members) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
    }
}

/// Whether the members' assignments split every partition between them,
/// each member owning at least one.
fn split(members: &[&mut Member]) -> bool {
    let owned: Vec<_> = members.iter().map(|m| m.owned()).collect();
    let mut all: Vec<i32> = owned.iter().flatten().copied().collect();
    all.sort_unstable();
    owned.iter().all(|o| !o.is_empty()) && all == (0..GROUP_PARTITIONS).collect::<Vec<_>>()
}

/// Whether each partition's owner has read it to `ends`.
fn caught_up(members: &[&mut Member], ends: &BTreeMap<i32, i64>) -> bool {
    ends.iter().all(|(p, end)| {
        members
            .iter()
            .any(|m| m.owned().contains(p) && m.positions().get(p) == Some(end))
    })
}

/// Sends `count` records `PREFIX-i` to [`GROUP_TOPIC`]: key `k(i % 8)`,
/// in partition `(i % 8) % 4`, so every partition gets records and each
/// key stays in one partition.
fn produce_group_records(served: &Served, prefix: &str, count: usize) -> TestResult {
    let (producer, deliveries) = producer(served, &[("enable.idempotence", "true")])?;
    for i in 0..count {
        let key = format!("k{}", i % 8);
        let value = format!("{prefix}-{i}");
        send(
            &producer,
            BaseRecord::to(GROUP_TOPIC)
                .key(key.as_bytes())
                .payload(value.as_bytes())
                .partition(i32::try_from(i % 8 % 4)?),
        )?;
    }
    flush_all(&producer, &deliveries)
}

/// The group's committed offsets, from the library's side.
fn committed(served: &Served) -> TestResult<BTreeMap<i32, i64>> {
    let mut out = BTreeMap::new();
    for (tp, o) in served.cluster.list_group_offsets(GROUP)? {
        assert_eq!(tp.topic, GROUP_TOPIC);
        out.insert(i32::try_from(tp.partition)?, i64::try_from(o.offset)?);
    }
    Ok(out)
}

#[test]
fn a_group_rebalances_commits_and_a_fresh_member_resumes_at_the_commits() -> TestResult {
    let served = Served::start()?;
    served
        .cluster
        .create_topic(NewTopic::new(GROUP_TOPIC, 4).replication_factor(3))?;
    produce_group_records(&served, "first", 40)?;
    let ends = served.ends(GROUP_TOPIC)?;
    assert_eq!(ends.values().sum::<i64>(), 40);

    // Two members split the partitions and read them to the end (a
    // partition that moved before anything was committed may be read
    // twice: at least once).
    let mut a = Member::join(&served)?;
    let mut b = Member::join(&served)?;
    poll_until(
        &mut [&mut a, &mut b],
        "two members to split and read",
        |ms| split(ms) && caught_up(ms, &ends),
    );
    let read: BTreeSet<_> = a
        .records
        .iter()
        .chain(&b.records)
        .map(Rec::value_str)
        .collect();
    assert_eq!(read, (0..40).map(|i| format!("first-{i}")).collect());
    for m in [&a, &b] {
        assert!(matches!(m.events().last(), Some(Event::Assign(ps)) if *ps == m.owned()));
        m.consumer.commit_consumer_state(CommitMode::Sync)?;
    }
    assert_eq!(committed(&served)?, ends);
    let before = served.cluster.describe_group(GROUP)?;
    assert_eq!(
        (before.state, before.members.len()),
        (GroupState::Stable, 2)
    );

    // A third member joins: the group rebalances; the first two see their
    // partitions revoked (all of them: the eager protocol of the range
    // assignor) and get new ones, the three share the partitions.
    let owned_by_two = [a.owned(), b.owned()];
    let seen_by_two = [a.events().len(), b.events().len()];
    let mut c = Member::join(&served)?;
    poll_until(
        &mut [&mut a, &mut b, &mut c],
        "three members to share",
        split,
    );
    for ((m, owned), seen) in [&a, &b].into_iter().zip(owned_by_two).zip(seen_by_two) {
        let events = m.events();
        assert_eq!(
            events[seen..],
            [Event::Revoke(owned), Event::Assign(m.owned())],
            "{events:?}"
        );
    }
    assert_eq!(c.events(), [Event::Assign(c.owned())]);
    let after = served.cluster.describe_group(GROUP)?;
    assert_eq!((after.state, after.members.len()), (GroupState::Stable, 3));
    assert!(after.generation > before.generation, "{after:?}");

    // More records, read by their new owners from the commits, committed.
    produce_group_records(&served, "second", 20)?;
    let ends = served.ends(GROUP_TOPIC)?;
    poll_until(
        &mut [&mut a, &mut b, &mut c],
        "three members to read",
        |ms| caught_up(ms, &ends),
    );
    let second: Vec<_> = [&a, &b, &c]
        .iter()
        .flat_map(|m| {
            m.records
                .iter()
                .filter(|r| r.value_str().starts_with("second"))
        })
        .map(Rec::value_str)
        .collect();
    let mut sorted = second.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 20, "every new record read");
    assert_eq!(second.len(), 20, "each new record read once: {second:?}");
    for m in [&a, &b, &c] {
        m.consumer.commit_consumer_state(CommitMode::Sync)?;
    }
    assert_eq!(committed(&served)?, ends);

    // All leave (closing sends LeaveGroup): the group is empty, its
    // offsets kept.
    drop((a, b, c));
    let left = served.cluster.describe_group(GROUP)?;
    assert_eq!((left.state, left.members.len()), (GroupState::Empty, 0));

    // A fresh member resumes at the commits: it reads exactly the records
    // written since, from the committed offset of each partition on.
    produce_group_records(&served, "third", 20)?;
    let commits = committed(&served)?;
    let ends3 = served.ends(GROUP_TOPIC)?;
    let mut fresh = Member::join(&served)?;
    poll_until(&mut [&mut fresh], "a fresh member to read", |ms| {
        ms[0].owned().len() == 4 && caught_up(ms, &ends3)
    });
    let seen = fresh.consumer.committed(DEADLINE)?;
    for e in seen.elements() {
        assert_eq!(
            Some(&e.offset()),
            commits
                .get(&e.partition())
                .map(|o| Offset::Offset(*o))
                .as_ref()
        );
    }
    let mut firsts = BTreeMap::new();
    for r in &fresh.records {
        firsts.entry(r.partition).or_insert(r.offset);
    }
    assert_eq!(firsts, commits, "each partition resumed at its commit");
    let mut values: Vec<_> = fresh.records.iter().map(Rec::value_str).collect();
    assert_eq!(values.len(), 20, "{values:?}");
    values.sort_by_key(|v| seq(v));
    assert_eq!(
        values,
        (0..20).map(|i| format!("third-{i}")).collect::<Vec<_>>()
    );
    assert_in_order_per_key(&fresh.records);
    Ok(())
}

#[test]
fn idempotent_and_transactional_producers_with_read_committed_consumers() -> TestResult {
    let served = Served::start()?;
    served
        .cluster
        .create_topic(NewTopic::new("idem", 2).replication_factor(3))?;
    served
        .cluster
        .create_topic(NewTopic::new("txn", 1).replication_factor(3))?;

    // Idempotent: batches carry the producer id and gapless sequences.
    let (idem, deliveries) = producer(
        &served,
        &[("enable.idempotence", "true"), ("linger.ms", "5")],
    )?;
    for i in 0..60 {
        let key = format!("k{}", i % 6);
        let value = format!("idem-{i}");
        send(
            &idem,
            BaseRecord::to("idem")
                .key(key.as_bytes())
                .payload(value.as_bytes()),
        )?;
    }
    flush_all(&idem, &deliveries)?;
    drop(idem);
    let mut next_sequence: BTreeMap<u32, i32> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for batch in served.stored_batches("idem")? {
        assert!(batch.producer_id >= 0 && !batch.transactional && !batch.control);
        ids.insert(batch.producer_id);
        let next = next_sequence.entry(batch.partition).or_insert(0);
        assert_eq!(batch.base_sequence, *next, "partition {}", batch.partition);
        *next += i32::try_from(batch.values.len())?;
    }
    assert_eq!(ids.len(), 1, "one producer id: {ids:?}");
    let read = read_to_eof(&reader(&served, "idem", 2, "read_committed")?, 2);
    let mut values: Vec<_> = read.iter().map(Rec::value_str).collect();
    values.sort_by_key(|v| seq(v));
    assert_eq!(
        values,
        (0..60).map(|i| format!("idem-{i}")).collect::<Vec<_>>()
    );
    assert_in_order_per_key(&read);

    // Transactional: an aborted transaction (records and offsets), then a
    // committed one with `send_offsets_to_transaction`.
    let (tx, deliveries) = producer(&served, &[("transactional.id", "rdkafka-tx")])?;
    tx.init_transactions(DEADLINE)?;
    let group_member: BaseConsumer = served
        .config()
        .set("group.id", "rdkafka-tx-group")
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = group_member.group_metadata().ok_or("no group metadata")?;
    let offsets = |offset: i64| -> TestResult<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("idem", 0, Offset::Offset(offset))?;
        Ok(tpl)
    };
    let send_tx = |value: &str| {
        send(
            &tx,
            BaseRecord::to("txn")
                .key(b"tx".as_slice())
                .payload(value.as_bytes()),
        )
    };
    tx.begin_transaction()?;
    for i in 0..5 {
        send_tx(&format!("aborted-{i}"))?;
    }
    tx.send_offsets_to_transaction(&offsets(3)?, &metadata, DEADLINE)?;
    // Written before the abort: stored, then hidden by the marker.
    flush_all(&tx, &deliveries)?;
    tx.abort_transaction(DEADLINE)?;
    assert!(
        served
            .cluster
            .list_group_offsets("rdkafka-tx-group")?
            .is_empty(),
        "aborted offsets are not committed"
    );
    tx.begin_transaction()?;
    for i in 0..5 {
        send_tx(&format!("committed-{i}"))?;
    }
    tx.send_offsets_to_transaction(&offsets(7)?, &metadata, DEADLINE)?;
    tx.commit_transaction(DEADLINE)?;
    let group_offsets = served.cluster.list_group_offsets("rdkafka-tx-group")?;
    assert_eq!(group_offsets[&TopicPartition::new("idem", 0)].offset, 7);

    // An open transaction: read_committed stops at the last stable offset.
    tx.begin_transaction()?;
    send_tx("open-0")?;
    flush_all(&tx, &deliveries)?;
    let committed: Vec<_> = (0..5).map(|i| format!("committed-{i}")).collect();
    let read = read_to_eof(&reader(&served, "txn", 1, "read_committed")?, 1);
    assert_eq!(
        read.iter().map(Rec::value_str).collect::<Vec<_>>(),
        committed
    );
    // read_uncommitted sees every record stored.
    let all = read_to_eof(&reader(&served, "txn", 1, "read_uncommitted")?, 1);
    let all: Vec<_> = all.iter().map(Rec::value_str).collect();
    let mut expected: Vec<_> = (0..5).map(|i| format!("aborted-{i}")).collect();
    expected.extend(committed.iter().cloned());
    expected.push("open-0".into());
    assert_eq!(all, expected);
    // Committed: the open transaction's record becomes visible.
    tx.commit_transaction(DEADLINE)?;
    let read = read_to_eof(&reader(&served, "txn", 1, "read_committed")?, 1);
    let mut visible = committed;
    visible.push("open-0".into());
    assert_eq!(read.iter().map(Rec::value_str).collect::<Vec<_>>(), visible);
    // The log holds the records in transactional batches of one producer
    // id, and the three markers (abort, commit, commit).
    let stored = served.stored_batches("txn")?;
    let (markers, data): (Vec<_>, Vec<_>) = stored.iter().partition(|b| b.control);
    assert_eq!(markers.len(), 3);
    assert!(data.iter().all(|b| b.transactional));
    let ids: BTreeSet<_> = stored.iter().map(|b| b.producer_id).collect();
    assert_eq!(ids.len(), 1, "one producer id: {ids:?}");
    Ok(())
}

#[test]
fn producer_and_consumer_follow_a_leader_that_crashes_mid_stream() -> TestResult {
    const TOPIC: &str = "failover";
    const HALF: usize = 300;
    // The controller fences a crashed broker (and moves its leaderships)
    // once its heartbeats stop for `broker.session.timeout.ms`: 3 s here,
    // not 9, to keep the test short.
    let served = Served::start_with(|builder| {
        builder
            .broker_heartbeat_interval(Duration::from_millis(300))
            .broker_session_timeout(Duration::from_secs(3))
    })?;
    let config = logbus::TopicConfig::new().min_insync_replicas(2)?;
    served
        .cluster
        .create_topic(NewTopic::new(TOPIC, 3).replication_factor(3).config(config))?;
    let (producer, deliveries) = producer(
        &served,
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "5"),
            ("message.timeout.ms", "30000"),
        ],
    )?;
    // Sends records `v-i` with key `k(i % 10)`, serving delivery reports
    // as it goes.
    let produce = |range: std::ops::Range<usize>| -> TestResult {
        for i in range {
            let key = format!("k{}", i % 10);
            let value = format!("v-{i}");
            send(
                &producer,
                BaseRecord::to(TOPIC)
                    .key(key.as_bytes())
                    .payload(value.as_bytes()),
            )?;
            producer.poll(Duration::ZERO);
        }
        Ok(())
    };
    // A consumer reads along from the start.
    let consumer: BaseConsumer = served
        .config()
        .set("group.id", "rdkafka-failover-reader")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut read = Vec::new();
    let read_one = |read: &mut Vec<Rec>| match consumer.poll(POLL) {
        None | Some(Err(_)) => {} // transient: the crashed broker
        Some(Ok(m)) => read.push(Rec::of(&m)),
    };

    // Mid-stream: the first half is sent, not flushed; once part of it is
    // acknowledged and read, partition 0's leader crashes (what is still
    // in flight or queued is retried), and the second half follows.
    produce(0..HALF)?;
    let deadline = Instant::now() + DEADLINE;
    while deliveries.acked().len() < HALF / 3 || read.len() < HALF / 6 {
        assert!(
            Instant::now() < deadline,
            "the first records not acknowledged and read"
        );
        producer.poll(Duration::ZERO);
        read_one(&mut read);
    }
    let leader = served.cluster.describe_topic(TOPIC)?.partitions[0]
        .leader
        .ok_or("partition 0 has a leader")?;
    served.cluster.crash_broker(leader)?;
    produce(HALF..2 * HALF)?;
    flush_all(&producer, &deliveries)?;
    let described = served.cluster.describe_topic(TOPIC)?;
    assert_ne!(described.partitions[0].leader, Some(leader), "a new leader");
    let ends = served.ends(TOPIC)?;
    let deadline = Instant::now() + DEADLINE;
    let read_to_end = |read: &Vec<Rec>| {
        ends.iter().all(|(p, end)| {
            *end == 0
                || read
                    .iter()
                    .any(|r| r.partition == *p && r.offset == end - 1)
        })
    };
    while !read_to_end(&read) {
        assert!(Instant::now() < deadline, "not read to {ends:?}");
        read_one(&mut read);
    }

    // Every acknowledged record exactly once, each key in order; the log
    // holds nothing else.
    let acked = deliveries.acked();
    assert_eq!(acked.len(), 2 * HALF);
    assert_eq!(ends.values().sum::<i64>(), i64::try_from(2 * HALF)?);
    read.sort_by_key(|r| (r.partition, r.offset));
    let mut values: Vec<_> = read.iter().map(Rec::value_str).collect();
    values.sort_by_key(|v| seq(v));
    assert_eq!(
        values,
        (0..2 * HALF).map(|i| format!("v-{i}")).collect::<Vec<_>>()
    );
    let mut acked_at: Vec<_> = acked.iter().map(|r| (r.partition, r.offset)).collect();
    acked_at.sort_unstable();
    let read_at: Vec<_> = read.iter().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(
        acked_at, read_at,
        "each record where its acknowledgement said"
    );
    assert_in_order_per_key(&read);
    Ok(())
}
