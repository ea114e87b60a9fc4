//! The bad-input catalogue (docs/bad-input.md): one test per row. Each
//! feeds one kind of bad input through the public API or puts it on disk,
//! checks the exact error (or, for damage a reopen tolerates, what recovery
//! did), and checks that nothing stored changed: every file byte for byte,
//! and, after a close and a reopen, every topic, config, offset and record.
//!
//! Test names start with the row's number, so `cargo test --test bad_input`
//! reads as the catalogue.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use logbus::format::{BatchBuilder, compute_crc};
use logbus::{
    Acks, CleanupPolicy, Cluster, ClusterConfig, Compression, Consumer, ConsumerConfig,
    CorruptionKind, Error, FormatError, Log, LogConfig, ManualClock, NewTopic, OffsetAndMetadata,
    OffsetReset, OffsetSpec, Partition, Producer, ProducerConfig, ProducerRecord, TopicConfig,
    TopicPartition,
};

// ---------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------

/// Time of the fixture's manual clock; nothing in these tests advances it,
/// so no background timer (checkpoints, retention, flushes) ever fires.
const T0: i64 = 1_700_000_000_000;

/// Every file and directory under `dir`: relative path → `None` for a
/// directory, a file's length and bytes; leaving out the `.lock` files,
/// which exist only while the directory is open. Only the first 16 MiB of
/// a file are read (the rows' huge files are sparse holes past that).
type Tree = BTreeMap<PathBuf, Option<(u64, Vec<u8>)>>;

/// Bytes of each file a [`Tree`] holds.
const TREE_READ_LIMIT: u64 = 16 << 20;

fn tree(dir: &Path) -> Tree {
    let mut out = Tree::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().is_some_and(|n| n == ".lock") {
                continue;
            }
            let rel = path.strip_prefix(dir).unwrap().to_path_buf();
            if path.is_dir() {
                stack.push(path);
                out.insert(rel, None);
            } else {
                use std::io::Read;
                let file = std::fs::File::open(&path).unwrap();
                let len = file.metadata().unwrap().len();
                let mut bytes = Vec::new();
                file.take(TREE_READ_LIMIT).read_to_end(&mut bytes).unwrap();
                out.insert(rel, Some((len, bytes)));
            }
        }
    }
    out
}

/// Compares two trees, naming the first path that differs.
#[track_caller]
fn assert_same_tree(before: &Tree, after: &Tree, what: &str) {
    let paths = |t: &Tree| t.keys().cloned().collect::<Vec<_>>();
    assert_eq!(paths(before), paths(after), "{what}: the files changed");
    for (path, bytes) in before {
        let now = &after[path];
        if bytes != now {
            let len = |b: &Option<(u64, Vec<u8>)>| b.as_ref().map_or(0, |(len, _)| *len);
            panic!(
                "{what}: {} changed ({} bytes before, {} after)",
                path.display(),
                len(bytes),
                len(now)
            );
        }
    }
}

/// What the cluster stores, as a reader sees it: every topic with its id,
/// partition count and overrides, and every partition's offsets and
/// records; plus the committed offsets of the groups named.
#[derive(Debug, PartialEq, Eq)]
struct State {
    /// Name, id, partition count, overrides.
    topics: Vec<(String, String, u32, Overrides)>,
    /// Topic, partition, log start, log end, records.
    partitions: Vec<(String, u32, u64, u64, Vec<Rec>)>,
    /// Group, (topic, partition, committed offset).
    groups: Vec<(String, Commits)>,
}

/// A topic's overrides, by name.
type Overrides = Vec<(String, String)>;

/// A group's committed offsets: topic, partition, offset.
type Commits = Vec<(String, u32, u64)>;

/// A record: offset, key, value.
type Rec = (u64, Option<Vec<u8>>, Option<Vec<u8>>);

fn state(cluster: &Cluster, groups: &[&str]) -> State {
    let mut topics = Vec::new();
    let mut partitions = Vec::new();
    for name in cluster.list_topics() {
        let topic = cluster.topic(&name).unwrap();
        let overrides = topic
            .overrides()
            .entries()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        topics.push((name.clone(), topic.id(), topic.partition_count(), overrides));
        for p in topic.partitions().unwrap() {
            let start = p.log_start_offset().unwrap();
            let end = p.log_end_offset().unwrap();
            partitions.push((name.clone(), p.partition(), start, end, records(&p)));
        }
    }
    let groups = groups
        .iter()
        .map(|g| {
            let offsets = cluster
                .list_group_offsets(g)
                .unwrap()
                .into_iter()
                .map(|(tp, o)| (tp.topic, tp.partition, o.offset))
                .collect();
            (g.to_string(), offsets)
        })
        .collect();
    State {
        topics,
        partitions,
        groups,
    }
}

/// Every record of a partition from its log start.
fn records(p: &Partition) -> Vec<Rec> {
    let mut out = Vec::new();
    let (mut next, end) = (p.log_start_offset().unwrap(), p.high_watermark().unwrap());
    while next < end {
        let read = p.read(next, 1 << 20).unwrap();
        for batch in read.batches() {
            let batch = batch.unwrap();
            for record in batch.records().unwrap() {
                let record = record.unwrap();
                let offset = record.offset() as u64;
                if offset >= next {
                    out.push((
                        offset,
                        record.key().map(|k| k.to_vec()),
                        record.value().map(|v| v.to_vec()),
                    ));
                }
            }
            next = next.max(batch.header().next_offset() as u64);
        }
    }
    out
}

fn cluster_config(clock: &ManualClock) -> ClusterConfig {
    cluster_config_builder(clock).build().unwrap()
}

/// What [`cluster_config`] builds, before it is built.
fn cluster_config_builder(clock: &ManualClock) -> logbus::ClusterConfigBuilder {
    ClusterConfig::builder()
        .clock(Arc::new(clock.clone()))
        // Small preallocated indexes keep the snapshots cheap.
        .topic_defaults(
            TopicConfig::new()
                .set("segment.index.bytes", "4096")
                .unwrap(),
        )
}

/// Makes the file at `path` 1 TiB long: a sparse hole after its contents.
fn make_sparse_tib(path: impl AsRef<Path>) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
}

/// One batch of `(key, value)` records at `T0`.
fn batch(records: &[(Option<&[u8]>, &[u8])]) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Compression::None);
    for (key, value) in records {
        builder.append(T0, *key, Some(value), &[]);
    }
    builder.build().unwrap().to_vec()
}

fn values(values: &[&str]) -> Vec<u8> {
    let records: Vec<(Option<&[u8]>, &[u8])> =
        values.iter().map(|v| (None, v.as_bytes())).collect();
    batch(&records)
}

/// A cluster directory holding data of every kind the rows touch: topic
/// `t` (2 partitions; records deleted below 1 in `t-0`), topic `a.b`,
/// compacted topic `c`, topic `s` with small segments (several sealed
/// ones, an index entry for every batch) and, with `groups`, group `g`'s
/// commit in `__consumer_offsets`. Built, then closed.
struct Fixture {
    dir: tempfile::TempDir,
    clock: ManualClock,
    groups: bool,
    /// Every file as the close left it.
    closed: Tree,
    /// What the cluster stored, read before the close.
    state: State,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::build(false)
    }

    fn with_groups() -> Fixture {
        Fixture::build(true)
    }

    fn build(groups: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let cluster = Cluster::open(dir.path(), cluster_config(&clock)).unwrap();
        let t = cluster.create_topic(NewTopic::new("t", 2)).unwrap();
        let t0 = t.partition(0).unwrap();
        t0.append(&mut values(&["t0-a", "t0-b", "t0-c"])).unwrap();
        t0.delete_records(1).unwrap();
        let t1 = t.partition(1).unwrap();
        t1.append(&mut values(&["t1-a"])).unwrap();
        t1.append(&mut values(&["t1-b"])).unwrap();
        let ab = cluster.create_topic(NewTopic::new("a.b", 1)).unwrap();
        ab.partition(0)
            .unwrap()
            .append(&mut values(&["ab"]))
            .unwrap();
        let compacted = TopicConfig::new().cleanup_policy(CleanupPolicy::Compact);
        let c = cluster
            .create_topic(NewTopic::new("c", 1).config(compacted))
            .unwrap();
        c.partition(0)
            .unwrap()
            .append(&mut batch(&[(Some(b"k1"), b"v1"), (Some(b"k2"), b"v2")]))
            .unwrap();
        let small = TopicConfig::new()
            .set("segment.bytes", "300")
            .unwrap()
            .set("index.interval.bytes", "0")
            .unwrap();
        let s = cluster
            .create_topic(NewTopic::new("s", 1).config(small))
            .unwrap();
        let s0 = s.partition(0).unwrap();
        for i in 0..12 {
            let value = format!("s-{i:02}-{}", "x".repeat(40));
            s0.append(&mut values(&[&value])).unwrap();
        }
        if groups {
            let offsets =
                BTreeMap::from([(TopicPartition::new("t", 1), OffsetAndMetadata::new(1))]);
            cluster.alter_group_offsets("g", &offsets).unwrap();
        }
        let group_names: &[&str] = if groups { &["g"] } else { &[] };
        let state = state(&cluster, group_names);
        cluster.close().unwrap();
        drop(cluster);
        let closed = tree(dir.path());
        Fixture {
            dir,
            clock,
            groups,
            closed,
            state,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn broker(&self) -> PathBuf {
        self.path().join("broker-0")
    }

    fn open(&self) -> logbus::Result<Cluster> {
        Cluster::open(self.path(), cluster_config(&self.clock))
    }

    fn group_names(&self) -> &'static [&'static str] {
        if self.groups { &["g"] } else { &[] }
    }

    /// Opens the cluster and records its files.
    fn live(&self) -> Live {
        let cluster = self.open().unwrap();
        assert_eq!(state(&cluster, self.group_names()), self.state);
        let files = tree(self.path());
        Live { cluster, files }
    }

    /// Opens the cluster, which must succeed, and checks that it stores
    /// everything the fixture stored.
    #[track_caller]
    fn open_intact(&self, what: &str) -> Cluster {
        let cluster = self
            .open()
            .unwrap_or_else(|e| panic!("{what}: the open failed: {e}"));
        assert_eq!(
            state(&cluster, self.group_names()),
            self.state,
            "{what}: the stored state changed"
        );
        cluster
    }

    /// The open is refused with an error `check` accepts, and every file
    /// stays as it was before the open.
    #[track_caller]
    fn assert_open_refused(&self, what: &str, check: impl FnOnce(&Error) -> bool) -> Error {
        let before = tree(self.path());
        let e = match self.open() {
            Ok(_) => panic!("{what}: the open succeeded"),
            Err(e) => e,
        };
        assert!(check(&e), "{what}: unexpected error {e:?} ({e})");
        assert_same_tree(&before, &tree(self.path()), what);
        e
    }

    /// Writes `bytes` over the file at `rel` (relative to the root).
    fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) {
        std::fs::write(self.path().join(rel), bytes).unwrap();
    }

    /// The file at `rel` as the fixture's close left it.
    fn closed_bytes(&self, rel: &str) -> Vec<u8> {
        self.closed[Path::new(rel)].clone().unwrap().1
    }
}

/// An open fixture cluster with its files as the open left them.
struct Live {
    cluster: Cluster,
    files: Tree,
}

impl Live {
    /// Nothing stored changed: every file is as it was; the close leaves
    /// the same files the fixture's close left, byte for byte; and a
    /// reopen finds every topic, config, offset and record.
    #[track_caller]
    fn assert_unchanged(self, fx: &Fixture, what: &str) {
        assert_same_tree(&self.files, &tree(fx.path()), what);
        assert_eq!(
            state(&self.cluster, fx.group_names()),
            fx.state,
            "{what}: the live state changed"
        );
        self.cluster.close().unwrap();
        drop(self.cluster);
        assert_same_tree(
            &fx.closed,
            &tree(fx.path()),
            &format!("{what} (after close)"),
        );
        fx.open_intact(what).close().unwrap();
    }
}

/// Asserts that `result` is an error matching `pattern`, printing it
/// otherwise; evaluates to the error.
macro_rules! expect_err {
    ($result:expr, $pattern:pat $(if $guard:expr)?) => {
        match $result {
            Err(e @ $pattern) $(if $guard)? => e,
            Err(other) => panic!(
                "expected {}, got {other:?} ({other})",
                stringify!($pattern)
            ),
            Ok(_) => panic!("expected {}, got Ok", stringify!($pattern)),
        }
    };
}

// ---------------------------------------------------------------------------
// Topic names
// ---------------------------------------------------------------------------

/// `create_topic(name)` is refused with `InvalidTopic` naming the name and
/// the rule it breaks; nothing stored changes.
#[track_caller]
fn refused_name(names: &[&str], reason: &str) {
    let fx = Fixture::new();
    let live = fx.live();
    for name in names {
        let e = expect_err!(
            live.cluster.create_topic(NewTopic::new(*name, 1)),
            Error::InvalidTopic { .. }
        );
        let Error::InvalidTopic { topic, reason: why } = &e else {
            unreachable!()
        };
        assert_eq!(topic, name);
        assert!(
            why.contains(reason),
            "{name:?}: {why:?} should say {reason:?}"
        );
    }
    live.assert_unchanged(&fx, &format!("create_topic({names:?})"));
}

#[test]
fn row01_name_empty() {
    refused_name(&[""], "empty");
}

#[test]
fn row02_name_dot_or_dot_dot() {
    refused_name(&[".", ".."], "'.' and '..'");
}

#[test]
fn row03_name_of_250_characters() {
    refused_name(&[&"x".repeat(250), &"x".repeat(10_000)], "longer than 249");
    // 249 is the longest accepted (Kafka's limit).
    let fx = Fixture::new();
    let cluster = fx.open().unwrap();
    cluster
        .create_topic(NewTopic::new("x".repeat(249), 1))
        .unwrap();
}

#[test]
fn row04_name_with_characters_kafka_forbids() {
    refused_name(
        &[
            "a b", "a/b", "a\\b", "a:b", "a\0b", "a*", " t", "t\n", "t\t",
        ],
        "is not allowed",
    );
}

#[test]
fn row05_name_not_ascii() {
    refused_name(&["tópico", "топик", "t\u{200b}", "😀"], "is not allowed");
}

#[test]
fn row06_name_reserved_for_internal_topics() {
    refused_name(
        &["__x", "__consumer_offsets", "__cluster_metadata"],
        "reserved",
    );
}

#[test]
fn row07_name_colliding_through_dot_and_underscore() {
    // `a.b` exists: `a_b` would share its metric names.
    refused_name(&["a_b"], "collides with existing topic a.b");
}

#[test]
fn row08_name_of_an_existing_topic() {
    let fx = Fixture::new();
    let live = fx.live();
    for name in ["t", "a.b"] {
        let e = expect_err!(
            live.cluster.create_topic(NewTopic::new(name, 5)),
            Error::TopicAlreadyExists { .. }
        );
        assert!(matches!(&e, Error::TopicAlreadyExists { topic } if topic == name));
    }
    live.assert_unchanged(&fx, "create_topic(existing)");
}

#[test]
fn row09_unknown_topic_name() {
    let fx = Fixture::new();
    let live = fx.live();
    let unknown = |e: Error, partition: Option<u32>| {
        assert!(
            matches!(&e, Error::UnknownTopicOrPartition { topic, partition: p }
                if topic == "nope" && *p == partition),
            "{e:?}"
        );
    };
    let c = &live.cluster;
    unknown(c.topic("nope").map(|_| ()).unwrap_err(), None);
    unknown(c.describe_topic("nope").map(|_| ()).unwrap_err(), None);
    unknown(c.delete_topic("nope").unwrap_err(), None);
    unknown(c.create_partitions("nope", 4).unwrap_err(), None);
    let producer = Producer::new(c, ProducerConfig::default()).unwrap();
    unknown(
        producer
            .send(ProducerRecord::new("nope", "v"))
            .map(|_| ())
            .unwrap_err(),
        None,
    );
    producer.close().unwrap();
    let mut consumer = Consumer::new(c, ConsumerConfig::default()).unwrap();
    unknown(
        consumer
            .assign(&[TopicPartition::new("nope", 0)])
            .unwrap_err(),
        None,
    );
    unknown(
        consumer
            .offsets_for_times(&BTreeMap::from([(TopicPartition::new("nope", 0), 0)]))
            .map(|_| ())
            .unwrap_err(),
        None,
    );
    drop(consumer);
    live.assert_unchanged(&fx, "unknown topic");
}

#[test]
fn row10_delete_or_grow_an_internal_topic() {
    let fx = Fixture::with_groups();
    let live = fx.live();
    let internal = |e: Error| {
        assert!(
            matches!(&e, Error::InvalidTopic { topic, .. } if topic == "__consumer_offsets"),
            "{e:?}"
        );
    };
    internal(live.cluster.delete_topic("__consumer_offsets").unwrap_err());
    internal(
        live.cluster
            .create_partitions("__consumer_offsets", 51)
            .unwrap_err(),
    );
    // An internal-looking name that does not exist is refused the same way.
    expect_err!(
        live.cluster.delete_topic("__nope"),
        Error::InvalidTopic { .. }
    );
    live.assert_unchanged(&fx, "delete_topic(__consumer_offsets)");
}

#[test]
fn row11_subscription_to_invalid_names_or_patterns() {
    let fx = Fixture::new();
    let live = fx.live();
    let config = ConsumerConfig::builder().group_id("sub").build().unwrap();
    let mut consumer = Consumer::new(&live.cluster, config).unwrap();
    for name in ["", "..", "a b", "tópico"] {
        expect_err!(consumer.subscribe([name]), Error::InvalidTopic { .. });
    }
    let e = expect_err!(consumer.subscribe_pattern("t(("), Error::InvalidArgument(_));
    assert!(e.to_string().contains("t(("), "{e}");
    assert!(consumer.subscription().is_empty());
    drop(consumer);
    live.assert_unchanged(&fx, "subscribe");
}

// ---------------------------------------------------------------------------
// Counts
// ---------------------------------------------------------------------------

/// The error is `InvalidPartitions` for `topic` whose reason mentions `why`.
#[track_caller]
fn invalid_partitions(e: Error, topic: &str, why: &str) {
    match &e {
        Error::InvalidPartitions { topic: t, reason } if t == topic => {
            assert!(reason.contains(why), "{reason:?} should mention {why:?}");
        }
        other => panic!("expected InvalidPartitions for {topic}, got {other:?}"),
    }
}

#[test]
fn row12_zero_partitions() {
    let fx = Fixture::new();
    let live = fx.live();
    invalid_partitions(
        live.cluster
            .create_topic(NewTopic::new("zero", 0))
            .map(|_| ())
            .unwrap_err(),
        "zero",
        "at least one partition",
    );
    live.assert_unchanged(&fx, "create_topic(0 partitions)");
}

#[test]
fn row13_partition_count_above_the_per_topic_limit() {
    let fx = Fixture::new();
    let live = fx.live();
    for count in [u32::MAX, logbus::MAX_PARTITIONS_PER_TOPIC + 1] {
        invalid_partitions(
            live.cluster
                .create_topic(NewTopic::new("huge", count))
                .map(|_| ())
                .unwrap_err(),
            "huge",
            "MAX_PARTITIONS_PER_TOPIC",
        );
        invalid_partitions(
            live.cluster.create_partitions("t", count).unwrap_err(),
            "t",
            "MAX_PARTITIONS_PER_TOPIC",
        );
    }
    live.assert_unchanged(&fx, "partition count above the topic limit");
}

#[test]
fn row14_partition_count_above_the_cluster_limit() {
    let fx = Fixture::new();
    // The fixture holds 5 partitions.
    let config = cluster_config_builder(&fx.clock)
        .max_partitions(6)
        .build()
        .unwrap();
    let cluster = Cluster::open(fx.path(), config).unwrap();
    let files = tree(fx.path());
    invalid_partitions(
        cluster
            .create_topic(NewTopic::new("big", 3))
            .map(|_| ())
            .unwrap_err(),
        "big",
        "max_partitions",
    );
    invalid_partitions(
        cluster.create_partitions("t", 4).unwrap_err(),
        "t",
        "max_partitions",
    );
    let live = Live { cluster, files };
    live.assert_unchanged(&fx, "partition count above the cluster limit");
}

#[test]
fn row15_create_partitions_not_above_the_current_count() {
    let fx = Fixture::new();
    let live = fx.live();
    for total in [0, 1, 2] {
        invalid_partitions(
            live.cluster.create_partitions("t", total).unwrap_err(),
            "t",
            "must be larger",
        );
    }
    live.assert_unchanged(&fx, "create_partitions(<= current)");
}

#[test]
fn row16_partition_index_out_of_range() {
    let fx = Fixture::new();
    let live = fx.live();
    let out = |e: Error| {
        assert!(
            matches!(&e, Error::UnknownTopicOrPartition { topic, partition: Some(2) } if topic == "t"),
            "{e:?}"
        );
    };
    let topic = live.cluster.topic("t").unwrap();
    out(topic.partition(2).map(|_| ()).unwrap_err());
    let producer = Producer::new(&live.cluster, ProducerConfig::default()).unwrap();
    out(producer
        .send(ProducerRecord::new("t", "v").with_partition(2))
        .map(|_| ())
        .unwrap_err());
    producer.close().unwrap();
    let mut consumer = Consumer::new(&live.cluster, ConsumerConfig::default()).unwrap();
    out(consumer
        .assign(&[TopicPartition::new("t", 0), TopicPartition::new("t", 2)])
        .unwrap_err());
    assert!(
        consumer.assignment().is_empty(),
        "the assignment is unchanged"
    );
    out(consumer
        .end_offsets(&[TopicPartition::new("t", 2)])
        .map(|_| ())
        .unwrap_err());
    drop(consumer);
    let offsets = BTreeMap::from([(TopicPartition::new("t", 2), OffsetAndMetadata::new(0))]);
    out(live
        .cluster
        .alter_group_offsets("g2", &offsets)
        .unwrap_err());
    assert!(live.cluster.list_groups().is_empty());
    live.assert_unchanged(&fx, "partition out of range");
}

// ---------------------------------------------------------------------------
// Topic configs
// ---------------------------------------------------------------------------

/// `TopicConfig::set(key, value)` is refused with `InvalidConfig` naming
/// the key; creating a topic with the typed equivalent stores nothing.
#[track_caller]
fn refused_value(key: &str, value: &str) {
    let e = expect_err!(TopicConfig::new().set(key, value), Error::InvalidConfig(_));
    assert!(e.to_string().contains(key), "{key}={value:?}: {e}");
}

/// The values of each kind that no key takes.
const GARBAGE: &[&str] = &["", " ", "x", "1 2", "0x10", "1e3", "\u{0}", "١"];

#[test]
fn row17_every_topic_config_key_with_garbage() {
    for (key, _) in TopicConfig::supported() {
        for value in GARBAGE {
            refused_value(key, value);
        }
    }
}

#[test]
fn row18_unknown_topic_config_key() {
    for key in [
        "retention",
        "Retention.ms",
        " retention.ms",
        "retention.ms ",
        "log.retention.ms",
        "",
    ] {
        let e = expect_err!(TopicConfig::new().set(key, "1"), Error::InvalidConfig(_));
        assert!(
            e.to_string().contains("unknown topic config"),
            "{key:?}: {e}"
        );
        assert!(
            e.to_string().contains("retention.ms"),
            "lists the supported keys: {e}"
        );
    }
}

#[test]
fn row19_whitespace_padded_values_are_accepted_in_canonical_form() {
    let fx = Fixture::new();
    let cluster = fx.open().unwrap();
    let config = TopicConfig::new()
        .set("retention.ms", "  3600000\t")
        .unwrap()
        .set("cleanup.policy", " delete , compact ")
        .unwrap()
        .set("segment.bytes", "+0067108864")
        .unwrap()
        .set("min.cleanable.dirty.ratio", " 0.25 ")
        .unwrap()
        .set("message.timestamp.type", "\nLogAppendTime ")
        .unwrap();
    cluster
        .create_topic(NewTopic::new("padded", 1).config(config))
        .unwrap();
    cluster.close().unwrap();
    drop(cluster);
    let cluster = fx.open().unwrap();
    let stored: Vec<(String, String)> = cluster
        .topic("padded")
        .unwrap()
        .overrides()
        .entries()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    let expected = [
        ("cleanup.policy", "compact,delete"),
        ("message.timestamp.type", "LogAppendTime"),
        ("min.cleanable.dirty.ratio", "0.25"),
        ("retention.ms", "3600000"),
        ("segment.bytes", "67108864"),
    ];
    assert_eq!(
        stored,
        expected.map(|(k, v)| (k.to_string(), v.to_string()))
    );
}

#[test]
fn row20_integer_overflow_in_a_topic_config() {
    for (key, _) in TopicConfig::supported() {
        for value in [
            "99999999999999999999",
            "9223372036854775808",
            "-9223372036854775809",
            "18446744073709551616",
        ] {
            refused_value(key, value);
        }
    }
    // Within i64 but above the key's own maximum (2^31 - 1).
    for key in [
        "segment.bytes",
        "segment.index.bytes",
        "max.message.bytes",
        "index.interval.bytes",
    ] {
        refused_value(key, "2147483648");
    }
}

#[test]
fn row21_negative_topic_config_values() {
    for key in [
        "delete.retention.ms",
        "flush.messages",
        "flush.ms",
        "index.interval.bytes",
        "max.message.bytes",
        "min.compaction.lag.ms",
        "segment.bytes",
        "segment.index.bytes",
        "segment.ms",
        "min.cleanable.dirty.ratio",
    ] {
        refused_value(key, "-1");
    }
    // -1 means unlimited for these two; nothing below it is accepted.
    for key in ["retention.ms", "retention.bytes"] {
        refused_value(key, "-2");
        TopicConfig::new().set(key, "-1").unwrap();
    }
}

#[test]
fn row22_topic_config_values_below_their_minimum() {
    for (key, value) in [
        ("segment.bytes", "127"),
        ("segment.index.bytes", "23"),
        ("max.message.bytes", "60"),
        ("flush.messages", "0"),
        ("segment.ms", "0"),
    ] {
        refused_value(key, value);
    }
    for (key, value) in [
        ("min.cleanable.dirty.ratio", "1.01"),
        ("min.cleanable.dirty.ratio", "NaN"),
        ("cleanup.policy", "compact,compact"),
        ("cleanup.policy", "Delete"),
        ("message.timestamp.type", "createtime"),
    ] {
        refused_value(key, value);
    }
}

#[test]
fn row23_typed_topic_config_setter_out_of_range() {
    // Refused when called, in the words `set` uses for the same value; a
    // topic is never created from them.
    let new = TopicConfig::new;
    for (result, key, text) in [
        (new().segment_bytes(1), "segment.bytes", "1"),
        (
            new().segment_bytes(u64::MAX),
            "segment.bytes",
            "18446744073709551615",
        ),
        (
            new().segment_time(Some(Duration::from_micros(10))),
            "segment.ms",
            "0",
        ),
        (
            new().retention_bytes(Some(u64::MAX)),
            "retention.bytes",
            "18446744073709551615",
        ),
        (new().max_message_bytes(10), "max.message.bytes", "10"),
        (
            new().min_cleanable_dirty_ratio(-0.5),
            "min.cleanable.dirty.ratio",
            "-0.5",
        ),
    ] {
        let e = expect_err!(result, Error::InvalidConfig(_));
        assert!(e.to_string().contains(key), "{key}: {e}");
        let by_name = new().set(key, text).unwrap_err();
        assert_eq!(e.to_string(), by_name.to_string(), "{key}");
    }
}

#[test]
fn row24_bad_cluster_wide_topic_defaults() {
    let fx = Fixture::new();
    let before = tree(fx.path());
    // Each default is checked when set; together they must make a valid
    // log configuration (compaction off and deletion off is none).
    let defaults = TopicConfig::new().set("cleanup.policy", "compact").unwrap();
    ClusterConfig::builder()
        .topic_defaults(defaults)
        .build()
        .unwrap();
    let e = expect_err!(TopicConfig::new().segment_bytes(5), Error::InvalidConfig(_));
    assert!(e.to_string().contains("segment.bytes"), "{e}");
    assert_same_tree(&before, &tree(fx.path()), "topic_defaults");
}

// ---------------------------------------------------------------------------
// Client and cluster configs
// ---------------------------------------------------------------------------

/// The result is `InvalidConfig` whose message names `key`.
#[track_caller]
fn names_key<T: std::fmt::Debug>(result: logbus::Result<T>, key: &str) {
    let e = expect_err!(result, Error::InvalidConfig(_));
    assert!(e.to_string().contains(key), "{key}: {e}");
}

#[test]
fn row25_producer_config_out_of_range() {
    let b = ProducerConfig::builder;
    names_key(b().buffer_memory(0).build(), "buffer.memory");
    names_key(b().max_request_size(0).build(), "max.request.size");
    names_key(b().batch_size(i32::MAX as u64 + 1).build(), "batch.size");
    // The bounds themselves are fine; durations saturate at i64::MAX ms.
    b().batch_size(i32::MAX as u64)
        .linger(std::time::Duration::MAX)
        .max_block(std::time::Duration::ZERO)
        .build()
        .unwrap();
}

#[test]
fn row26_consumer_config_out_of_range() {
    let b = ConsumerConfig::builder;
    names_key(b().max_poll_records(0).build(), "max.poll.records");
    names_key(
        b().heartbeat_interval(Duration::from_millis(0)).build(),
        "heartbeat.interval.ms",
    );
    names_key(
        b().session_timeout(Duration::from_millis(3000))
            .heartbeat_interval(Duration::from_millis(3000))
            .build(),
        "heartbeat.interval.ms",
    );
    names_key(
        b().max_poll_interval(Duration::from_millis(0)).build(),
        "max.poll.interval.ms",
    );
    names_key(
        b().auto_commit_interval(Duration::from_millis(0)).build(),
        "auto.commit.interval.ms",
    );
    names_key(b().group_id("").build(), "group.id");
    names_key(b().group_instance_id("").build(), "group.instance.id");
    let long = "g".repeat(32_768);
    names_key(b().group_id(long.clone()).build(), "group.id");
    names_key(b().group_instance_id(long).build(), "group.instance.id");
    b().group_id("g".repeat(32_767)).build().unwrap();
    names_key(
        b().partition_assignment_strategy(["range", "nope"]).build(),
        "partition.assignment.strategy",
    );
    names_key(
        b().partition_assignment_strategy(Vec::<String>::new())
            .build(),
        "partition.assignment.strategy",
    );
    let above = i32::MAX as u64 + 1;
    names_key(
        b().fetch_max_wait(Duration::from_millis(above)).build(),
        "fetch.max.wait.ms",
    );
    names_key(b().fetch_max_bytes(above).build(), "fetch.max.bytes");
    names_key(
        b().max_partition_fetch_bytes(u64::MAX).build(),
        "max.partition.fetch.bytes",
    );
    names_key(b().fetch_min_bytes(u64::MAX).build(), "fetch.min.bytes");
    names_key(b().max_poll_records(usize::MAX).build(), "max.poll.records");
    names_key(
        b().session_timeout(Duration::from_millis(above)).build(),
        "session.timeout.ms",
    );
    names_key(
        b().max_poll_interval(Duration::from_millis(u64::MAX))
            .build(),
        "max.poll.interval.ms",
    );
    names_key(
        b().auto_commit_interval(Duration::from_millis(above))
            .build(),
        "auto.commit.interval.ms",
    );
}

#[test]
fn row27_cluster_config_out_of_range() {
    let b = ClusterConfig::builder;
    names_key(b().brokers(0).build(), "brokers");
    names_key(b().brokers(logbus::MAX_BROKERS + 1).build(), "brokers");
    names_key(
        b().default_replication_factor(0).build(),
        "default.replication.factor",
    );
    names_key(
        b().brokers(2).default_replication_factor(3).build(),
        "default.replication.factor",
    );
    names_key(b().broker_dir(1, "/x").build(), "broker_dir");
    names_key(b().num_partitions(0).build(), "num.partitions");
    names_key(
        b().num_partitions(logbus::MAX_PARTITIONS_PER_TOPIC + 1)
            .build(),
        "num.partitions",
    );
    names_key(b().max_partitions(0).build(), "max.partitions");
    names_key(
        b().max_partitions(logbus::MAX_PARTITIONS_PER_CLUSTER + 1)
            .build(),
        "max.partitions",
    );
    names_key(
        b().checkpoint_interval(Duration::from_millis(0)).build(),
        "log.flush.offset.checkpoint.interval.ms",
    );
    names_key(
        b().checkpoint_interval(Duration::from_micros(999)).build(),
        "log.flush.offset.checkpoint.interval.ms",
    );
    names_key(
        b().retention_check_interval(Duration::ZERO).build(),
        "log.retention.check.interval.ms",
    );
    names_key(
        b().group_min_session_timeout(Duration::from_millis(10_000))
            .group_max_session_timeout(Duration::from_millis(9_999))
            .build(),
        "group.max.session.timeout.ms",
    );
    names_key(b().background_threads(0).build(), "background.threads");
    names_key(b().background_threads(1025).build(), "background.threads");
    names_key(
        b().background_threads(usize::MAX).build(),
        "background.threads",
    );
    b().background_threads(1024).build().unwrap();
}

#[test]
fn row28_cluster_directory_that_is_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"precious").unwrap();
    let e = expect_err!(
        Cluster::open(&file, ClusterConfig::default()),
        Error::NotADirectory { .. }
    );
    assert!(
        matches!(&e, Error::NotADirectory { path } if *path == file),
        "{e:?}"
    );
    assert!(e.to_string().contains("is not a directory"), "{e}");
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn row29_standalone_log_config_out_of_range() {
    let b = LogConfig::builder;
    names_key(b().segment_bytes(0).build(), "segment.bytes");
    names_key(b().segment_bytes(1 << 31).build(), "segment.bytes");
    names_key(b().segment_index_bytes(8).build(), "segment.index.bytes");
    names_key(
        b().index_interval_bytes(u64::MAX).build(),
        "index.interval.bytes",
    );
    names_key(
        b().segment_time(Some(Duration::from_millis(0))).build(),
        "segment.ms",
    );
    names_key(b().max_message_bytes(60).build(), "max.message.bytes");
    names_key(
        b().min_cleanable_dirty_ratio(f64::NAN).build(),
        "min.cleanable.dirty.ratio",
    );
    names_key(
        b().retention_check_interval(Duration::ZERO).build(),
        "log.retention.check.interval.ms",
    );
}

#[test]
fn row30_session_timeout_outside_the_clusters_group_limits() {
    let fx = Fixture::new();
    let live = fx.live();
    // The cluster allows [6000, 1800000]; 5000 is a valid consumer config.
    let config = ConsumerConfig::builder()
        .group_id("short")
        .session_timeout(Duration::from_millis(5_000))
        .heartbeat_interval(Duration::from_millis(1_000))
        .build()
        .unwrap();
    let mut consumer = Consumer::new(&live.cluster, config).unwrap();
    consumer.subscribe(["t"]).unwrap();
    let e = expect_err!(
        consumer.poll(std::time::Duration::ZERO),
        Error::InvalidConfig(_)
    );
    assert!(e.to_string().contains("session.timeout.ms"), "{e}");
    assert!(consumer.assignment().is_empty());
    drop(consumer);
    assert!(
        live.cluster.list_groups().is_empty(),
        "{:?}",
        live.cluster.list_groups()
    );
    live.assert_unchanged(&fx, "session.timeout.ms out of the group limits");
}

// ---------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------

/// Recomputes a batch's CRC-32C after an edit of the bytes it covers.
fn reseal(batch: &mut [u8]) {
    let crc = compute_crc(batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// The batch `raw_batch` makes of one record whose bytes after its
/// length are `body` (under 64 bytes).
fn body_batch(body: &[u8]) -> Vec<u8> {
    let mut record = vec![(body.len() * 2) as u8];
    record.extend_from_slice(body);
    raw_batch(&record, 1)
}

/// `bytes` with `field` written at `at`, the CRC recomputed.
fn resealed(mut bytes: Vec<u8>, at: usize, field: &[u8]) -> Vec<u8> {
    bytes[at..at + field.len()].copy_from_slice(field);
    reseal(&mut bytes);
    bytes
}

/// A record's bytes: no key, value `v`, no headers, offset delta `delta`
/// (below 64), timestamp delta 0.
fn record(delta: u8) -> Vec<u8> {
    // length 7, attributes, timestampDelta 0, offsetDelta, key -1,
    // value length 1, `v`, 0 headers (zig-zag varints).
    vec![0x0e, 0x00, 0x00, delta * 2, 0x01, 0x02, b'v', 0x00]
}

/// A batch with `records` as its record bytes, `count` as recordsCount
/// and `count - 1` as lastOffsetDelta, the CRC sealed: the header of a
/// valid one-record batch at `T0`.
fn raw_batch(records: &[u8], count: i32) -> Vec<u8> {
    let mut b = values(&["v"]);
    b.truncate(61);
    b.extend_from_slice(records);
    let length = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&length.to_be_bytes());
    b[23..27].copy_from_slice(&(count - 1).max(0).to_be_bytes());
    b[57..61].copy_from_slice(&count.to_be_bytes());
    reseal(&mut b);
    b
}

#[test]
fn check_raw_batch_helpers() {
    // The helpers above build what the builder builds.
    assert_eq!(raw_batch(&record(0), 1), values(&["v"]));
    let two = [record(0), record(1)].concat();
    let b = raw_batch(&two, 2);
    let header = logbus::format::check_batch(&b).unwrap();
    assert_eq!(logbus::format::validate_batch_records(&b, &header), Ok(2));
}

/// Bad appends to one partition of a fixture (the fullest partition of
/// `topic`): each is refused with the error its check accepts and changes
/// no file; [`Appends::finish`] then checks that nothing stored changed.
struct Appends {
    fx: Fixture,
    live: Live,
    partition: Partition,
}

impl Appends {
    fn on(topic: &str) -> Appends {
        let fx = if topic.starts_with("__") {
            Fixture::with_groups()
        } else {
            Fixture::new()
        };
        let live = fx.live();
        let t = live.cluster.topic(topic).unwrap();
        let partition = (0..t.partition_count())
            .map(|p| t.partition(p).unwrap())
            .max_by_key(|p| p.log_end_offset().unwrap())
            .unwrap();
        Appends {
            fx,
            live,
            partition,
        }
    }

    #[track_caller]
    fn refuse(&self, mut bytes: Vec<u8>, check: impl Fn(&Error) -> bool, what: &str) {
        let e = self.partition.append(&mut bytes).map(|_| ()).unwrap_err();
        assert!(check(&e), "{what}: unexpected error {e:?} ({e})");
        assert_same_tree(&self.live.files, &tree(self.fx.path()), what);
    }

    #[track_caller]
    fn finish(self, what: &str) {
        let Appends {
            fx,
            live,
            partition,
        } = self;
        drop(partition);
        live.assert_unchanged(&fx, what);
    }
}

/// The error is `InvalidBatch(cause)`.
fn invalid(cause: FormatError) -> impl Fn(&Error) -> bool {
    move |e| matches!(e, Error::InvalidBatch(c) if *c == cause)
}

#[test]
fn row31_batch_over_max_message_bytes() {
    let a = Appends::on("t");
    let big = vec![7_u8; 1_048_588];
    let bytes = batch(&[(None, &big)]);
    let size = bytes.len() as u64;
    a.refuse(
        bytes,
        |e| {
            matches!(e, Error::RecordTooLarge { size: s, max: 1_048_588, limit: "max.message.bytes" }
                if *s == size)
        },
        "append over max.message.bytes",
    );
    a.finish("row31_batch_over_max_message_bytes");
}

#[test]
fn row32_append_over_segment_bytes() {
    let a = Appends::on("s");
    // `s` rolls at 300 bytes: one append may not exceed a segment.
    let value = vec![7_u8; 400];
    let bytes = batch(&[(None, &value)]);
    a.refuse(
        bytes,
        |e| {
            matches!(
                e,
                Error::RecordTooLarge {
                    max: 300,
                    limit: "segment.bytes",
                    ..
                }
            )
        },
        "append over segment.bytes",
    );
    a.finish("row32_append_over_segment_bytes");
}

#[test]
fn row33_batch_with_a_bad_crc() {
    let a = Appends::on("t");
    let mut bytes = values(&["t0-d"]);
    let last = bytes.len() - 2;
    bytes[last] ^= 0x20;
    a.refuse(
        bytes,
        |e| matches!(e, Error::InvalidBatch(FormatError::CrcMismatch { .. })),
        "bad CRC",
    );
    a.finish("row33_batch_with_a_bad_crc");
}

#[test]
fn row34_record_with_a_malformed_varint() {
    let a = Appends::on("t");
    // A record length of six continuation bytes: longer than any varint.
    let records = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    a.refuse(
        raw_batch(&records, 1),
        invalid(FormatError::MalformedVarint),
        "malformed varint",
    );
    // A varint cut by the end of the batch.
    a.refuse(
        raw_batch(&[0x0e, 0x00, 0x80], 1),
        |e| {
            matches!(
                e,
                Error::InvalidBatch(FormatError::MalformedVarint | FormatError::InvalidRecord(_))
            )
        },
        "varint cut short",
    );
    a.finish("row34_record_with_a_malformed_varint");
}

#[test]
fn row35_batch_with_the_wrong_magic_byte() {
    let a = Appends::on("t");
    for magic in [0_u8, 1, 3, 0xff] {
        let mut bytes = values(&["v"]);
        bytes[16] = magic;
        a.refuse(
            bytes,
            invalid(FormatError::UnsupportedMagic(magic as i8)),
            "wrong magic",
        );
    }
    a.finish("row35_batch_with_the_wrong_magic_byte");
}

#[test]
fn row36_batch_with_a_negative_or_too_small_length() {
    let a = Appends::on("t");
    for length in [-1_i32, i32::MIN, 0, 48] {
        let mut bytes = values(&["v"]);
        bytes[8..12].copy_from_slice(&length.to_be_bytes());
        a.refuse(
            bytes,
            invalid(FormatError::InvalidBatchLength(length)),
            "bad batch length",
        );
    }
    a.finish("row36_batch_with_a_negative_or_too_small_length");
}

#[test]
fn row37_batch_length_past_the_buffer() {
    let a = Appends::on("t");
    // The length claims more bytes than were handed over: a truncated batch.
    let full = values(&["t0-d", "t0-e"]);
    for cut in [1, 10, full.len() - 62] {
        let bytes = full[..full.len() - cut].to_vec();
        let available = bytes.len();
        a.refuse(
            bytes,
            invalid(FormatError::Truncated {
                needed: full.len(),
                available,
            }),
            "truncated batch",
        );
    }
    // Shorter than a header.
    a.refuse(
        full[..60].to_vec(),
        invalid(FormatError::Truncated {
            needed: 61,
            available: 60,
        }),
        "shorter than a header",
    );
    a.finish("row37_batch_length_past_the_buffer");
}

#[test]
fn row38_record_with_a_negative_length() {
    let a = Appends::on("t");
    // Length -2 (zig-zag 0x03), then the usual fields.
    let mut records = record(0);
    records[0] = 0x03;
    a.refuse(
        raw_batch(&records, 1),
        invalid(FormatError::InvalidRecord("negative record length")),
        "negative record length",
    );
    a.finish("row38_record_with_a_negative_length");
}

#[test]
fn row39_record_with_an_absurd_header_count() {
    let a = Appends::on("t");
    // attributes, timestampDelta, offsetDelta, key -1, value `v`, then a
    // header count of i32::MAX (zig-zag) with no headers behind it.
    let body = [
        0x00, 0x00, 0x00, 0x01, 0x02, b'v', 0xfe, 0xff, 0xff, 0xff, 0x0f,
    ];
    a.refuse(
        body_batch(&body),
        |e| {
            matches!(
                e,
                Error::InvalidBatch(FormatError::InvalidRecord(_) | FormatError::MalformedVarint)
            )
        },
        "absurd header count",
    );
    // A negative header count (-5).
    let body = [0x00, 0x00, 0x00, 0x01, 0x02, b'v', 0x09];
    a.refuse(
        body_batch(&body),
        invalid(FormatError::InvalidRecord("negative header count")),
        "negative header count",
    );
    a.finish("row39_record_with_an_absurd_header_count");
}

#[test]
fn row40_records_count_not_matching_last_offset_delta() {
    let a = Appends::on("t");
    let two = [record(0), record(1)].concat();
    let bytes = resealed(raw_batch(&two, 2), 23, &5_i32.to_be_bytes());
    a.refuse(
        bytes,
        invalid(FormatError::InvalidOffsetDelta(
            "lastOffsetDelta does not match the last record",
        )),
        "lastOffsetDelta mismatch",
    );
    // A negative lastOffsetDelta.
    let bytes = resealed(raw_batch(&two, 2), 23, &(-1_i32).to_be_bytes());
    a.refuse(
        bytes,
        invalid(FormatError::InvalidOffsetDelta(
            "lastOffsetDelta is negative",
        )),
        "negative lastOffsetDelta",
    );
    a.finish("row40_records_count_not_matching_last_offset_delta");
}

#[test]
fn row41_records_count_not_matching_the_records() {
    let a = Appends::on("t");
    let two = [record(0), record(1)].concat();
    a.refuse(
        raw_batch(&two, 3),
        invalid(FormatError::RecordCountMismatch {
            declared: 3,
            actual: 2,
        }),
        "more records declared than held",
    );
    a.refuse(
        raw_batch(&two, 1),
        invalid(FormatError::InvalidRecord(
            "bytes left after the last record",
        )),
        "fewer records declared than held",
    );
    a.refuse(
        raw_batch(&two, -1),
        invalid(FormatError::InvalidRecord("negative recordsCount")),
        "negative records count",
    );
    // Offset deltas 0, 0 instead of 0, 1.
    let same = [record(0), record(0)].concat();
    a.refuse(
        raw_batch(&same, 2),
        invalid(FormatError::InvalidOffsetDelta(
            "record offset deltas are not 0, 1, 2, ...",
        )),
        "repeated offset delta",
    );
    a.finish("row41_records_count_not_matching_the_records");
}

#[test]
fn row42_empty_buffer_or_batch_without_records() {
    let a = Appends::on("t");
    a.refuse(Vec::new(), invalid(FormatError::Empty), "empty buffer");
    a.refuse(raw_batch(&[], 0), invalid(FormatError::Empty), "no records");
    a.finish("row42_empty_buffer_or_batch_without_records");
}

#[test]
fn row43_valid_batch_followed_by_a_bad_one_or_garbage() {
    let a = Appends::on("t");
    // Nothing of the valid first batch is stored either.
    let mut bad = values(&["t0-e"]);
    bad[70] ^= 1;
    a.refuse(
        [values(&["t0-d"]), bad].concat(),
        |e| matches!(e, Error::InvalidBatch(FormatError::CrcMismatch { .. })),
        "second batch damaged",
    );
    a.refuse(
        [values(&["t0-d"]), vec![0xab; 10]].concat(),
        invalid(FormatError::Truncated {
            needed: 61,
            available: 10,
        }),
        "trailing garbage",
    );
    a.finish("row43_valid_batch_followed_by_a_bad_one_or_garbage");
}

#[test]
fn row44_timestamps_or_header_keys_the_batch_cannot_hold() {
    let a = Appends::on("t");
    // maxTimestamp (CreateTime) is not the largest record timestamp.
    let bytes = resealed(values(&["v"]), 35, &(T0 + 5).to_be_bytes());
    a.refuse(
        bytes,
        invalid(FormatError::InvalidRecord(
            "maxTimestamp is not the largest record timestamp",
        )),
        "maxTimestamp mismatch",
    );
    // A header key that is not UTF-8.
    let body = [0x00, 0x00, 0x00, 0x01, 0x02, b'v', 0x02, 0x02, 0xff, 0x01];
    a.refuse(
        body_batch(&body),
        invalid(FormatError::InvalidRecord("header key is not valid UTF-8")),
        "header key not UTF-8",
    );
    a.finish("row44_timestamps_or_header_keys_the_batch_cannot_hold");
}

#[test]
fn row45_unknown_codec_or_undecodable_compressed_records() {
    let a = Appends::on("t");
    for codec in [5_u8, 6, 7] {
        let bytes = resealed(values(&["v"]), 22, &[codec]);
        a.refuse(
            bytes,
            invalid(FormatError::UnknownCompression(codec)),
            "unknown codec",
        );
    }
    for codec in [1_u8, 2, 3, 4] {
        // The records of an uncompressed batch are not a valid stream of
        // any codec.
        let bytes = resealed(
            values(&["some value long enough to not be a frame"]),
            22,
            &[codec],
        );
        a.refuse(
            bytes,
            |e| matches!(e, Error::InvalidBatch(FormatError::Decompression(_))),
            &format!("garbage for codec {codec}"),
        );
    }
    // A snappy block announcing 70 MiB of records: refused before anything
    // is allocated for them (the limit is 64 MiB).
    let mut block = Vec::new();
    let mut len = 70_u32 << 20;
    while len >= 0x80 {
        block.push((len as u8) | 0x80);
        len >>= 7;
    }
    block.push(len as u8);
    block.extend_from_slice(&[0x00, b'v']);
    let bytes = resealed(raw_batch(&block, 1), 22, &[2]); // snappy
    a.refuse(
        bytes,
        |e| matches!(e, Error::InvalidBatch(FormatError::Decompression(m)) if m.contains("exceed")),
        "decompression bomb",
    );
    a.finish("row45_unknown_codec_or_undecodable_compressed_records");
}

#[test]
fn row46_keyless_record_on_a_compacted_topic() {
    let a = Appends::on("c");
    a.refuse(
        batch(&[(Some(b"k3"), b"v3"), (None, b"no key")]),
        |e| matches!(e, Error::InvalidBatch(FormatError::InvalidRecord(m)) if m.contains("compact")),
        "keyless record on a compacted topic",
    );
    a.finish("row46_keyless_record_on_a_compacted_topic");
}

#[test]
fn row47_append_to_an_internal_topic() {
    let a = Appends::on("__consumer_offsets");
    a.refuse(
        batch(&[(Some(b"k"), b"v")]),
        |e| matches!(e, Error::InvalidTopic { topic, .. } if topic == "__consumer_offsets"),
        "append to __consumer_offsets",
    );
    a.finish("row47_append_to_an_internal_topic");
}

#[test]
fn row48_producer_record_over_max_request_size_or_buffer_memory() {
    let fx = Fixture::new();
    let live = fx.live();
    let config = ProducerConfig::builder()
        .acks(Acks::Leader)
        .max_request_size(1_000)
        .build()
        .unwrap();
    let producer = Producer::new(&live.cluster, config).unwrap();
    let e = expect_err!(
        producer.send(ProducerRecord::new("t", vec![0_u8; 1_000])),
        Error::RecordTooLarge {
            max: 1_000,
            limit: "max.request.size",
            ..
        }
    );
    assert!(e.to_string().contains("max.request.size"), "{e}");
    producer.close().unwrap();
    let config = ProducerConfig::builder()
        .buffer_memory(500)
        .build()
        .unwrap();
    let producer = Producer::new(&live.cluster, config).unwrap();
    expect_err!(
        producer.send(ProducerRecord::new("t", vec![0_u8; 600]).with_partition(1)),
        Error::RecordTooLarge {
            max: 500,
            limit: "buffer.memory",
            ..
        }
    );
    producer.flush().unwrap();
    producer.close().unwrap();
    live.assert_unchanged(&fx, "producer record too large");
}

#[test]
fn row49_producer_record_with_a_negative_timestamp() {
    let fx = Fixture::new();
    let live = fx.live();
    let producer = Producer::new(&live.cluster, ProducerConfig::default()).unwrap();
    for ts in [-1, i64::MIN] {
        let e = expect_err!(
            producer.send(ProducerRecord::new("t", "v").with_timestamp(ts)),
            Error::InvalidArgument(_)
        );
        assert!(e.to_string().contains("timestamp"), "{e}");
    }
    producer.close().unwrap();
    live.assert_unchanged(&fx, "negative producer timestamp");
}

// ---------------------------------------------------------------------------
// Offsets
// ---------------------------------------------------------------------------

/// The error is `OffsetOutOfRange` with these fields.
#[track_caller]
fn out_of_range(e: Error, offset: u64, log_start: u64, log_end: u64) {
    match e {
        Error::OffsetOutOfRange {
            offset: o,
            log_start: s,
            log_end: n,
        } => assert_eq!((o, s, n), (offset, log_start, log_end)),
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
}

#[test]
fn row50_read_below_the_log_start_or_past_the_end() {
    let fx = Fixture::new();
    let live = fx.live();
    // t-0 holds offsets [1, 3) after the fixture's delete_records(1).
    let p = live.cluster.topic("t").unwrap().partition(0).unwrap();
    out_of_range(p.read(0, 1 << 20).map(|_| ()).unwrap_err(), 0, 1, 3);
    out_of_range(p.read(4, 1 << 20).map(|_| ()).unwrap_err(), 4, 1, 3);
    out_of_range(
        p.read(i64::MAX as u64, 1 << 20).map(|_| ()).unwrap_err(),
        i64::MAX as u64,
        1,
        3,
    );
    // At the log end a read is empty, not an error (Kafka's fetch at the
    // high watermark).
    assert_eq!(p.read(3, 1 << 20).unwrap().batches().count(), 0);
    drop(p);
    live.assert_unchanged(&fx, "read out of range");
}

#[test]
fn row51_read_at_an_offset_above_i64_max() {
    let fx = Fixture::new();
    let live = fx.live();
    let p = live.cluster.topic("t").unwrap().partition(0).unwrap();
    for offset in [1_u64 << 63, u64::MAX] {
        let e = p.read(offset, 1 << 20).map(|_| ()).unwrap_err();
        // The error reports the offset asked for, not a negative one.
        out_of_range(e, offset, 1, 3);
    }
    drop(p);
    live.assert_unchanged(&fx, "read above i64::MAX");
}

#[test]
fn row52_delete_records_past_the_high_watermark() {
    let fx = Fixture::new();
    let live = fx.live();
    let p = live.cluster.topic("t").unwrap().partition(0).unwrap();
    out_of_range(p.delete_records(4).unwrap_err(), 4, 1, 3);
    out_of_range(p.delete_records(u64::MAX).unwrap_err(), u64::MAX, 1, 3);
    // Below the log start it is a no-op that answers the current start.
    assert_eq!(p.delete_records(0).unwrap(), 1);
    drop(p);
    live.assert_unchanged(&fx, "delete_records out of range");
}

#[test]
fn row53_seek_or_position_of_a_partition_not_assigned() {
    let fx = Fixture::new();
    let live = fx.live();
    let mut consumer = Consumer::new(&live.cluster, ConsumerConfig::default()).unwrap();
    let tp = TopicPartition::new("t", 0);
    // Nothing assigned: nothing to poll.
    expect_err!(
        consumer.poll(std::time::Duration::ZERO),
        Error::IllegalState(_)
    );
    consumer.assign(&[TopicPartition::new("t", 1)]).unwrap();
    for e in [
        consumer.seek(&tp, 0).unwrap_err(),
        consumer.position(&tp).map(|_| ()).unwrap_err(),
        consumer.pause(std::slice::from_ref(&tp)).unwrap_err(),
        consumer.seek_to_end(std::slice::from_ref(&tp)).unwrap_err(),
    ] {
        assert!(matches!(e, Error::IllegalState(_)), "{e:?}");
    }
    assert_eq!(consumer.assignment(), [TopicPartition::new("t", 1)]);
    drop(consumer);
    live.assert_unchanged(&fx, "seek on an unassigned partition");
}

#[test]
fn row54_seek_below_the_log_start_or_past_the_end() {
    let fx = Fixture::new();
    let live = fx.live();
    let tp = TopicPartition::new("t", 0);
    let config = |reset| {
        ConsumerConfig::builder()
            .auto_offset_reset(reset)
            .build()
            .unwrap()
    };
    // auto.offset.reset=none: the next poll says there is no valid offset.
    let mut consumer = Consumer::new(&live.cluster, config(OffsetReset::None)).unwrap();
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    for offset in [0, 4, u64::MAX] {
        consumer.seek(&tp, offset).unwrap();
        let e = expect_err!(
            consumer.poll(std::time::Duration::ZERO),
            Error::NoOffsetForPartition { .. }
        );
        assert!(
            matches!(&e, Error::NoOffsetForPartition { topic, partition: 0 } if topic == "t"),
            "{e:?}"
        );
    }
    drop(consumer);
    // earliest: the position moves to the log start and the records come.
    let mut consumer = Consumer::new(&live.cluster, config(OffsetReset::Earliest)).unwrap();
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    consumer.seek(&tp, u64::MAX).unwrap();
    let records = consumer.poll(std::time::Duration::ZERO).unwrap();
    let offsets: Vec<u64> = records.iter().map(|r| r.offset()).collect();
    assert_eq!(offsets, [1, 2]);
    drop(consumer);
    live.assert_unchanged(&fx, "seek out of range");
}

#[test]
fn row55_commit_for_an_unknown_topic_or_partition() {
    let fx = Fixture::with_groups();
    let live = fx.live();
    for tp in [TopicPartition::new("t", 2), TopicPartition::new("nope", 0)] {
        let offsets = BTreeMap::from([
            (TopicPartition::new("t", 0), OffsetAndMetadata::new(2)),
            (tp.clone(), OffsetAndMetadata::new(0)),
        ]);
        let e = expect_err!(
            live.cluster.alter_group_offsets("g", &offsets),
            Error::UnknownTopicOrPartition { .. }
        );
        assert!(
            matches!(&e, Error::UnknownTopicOrPartition { topic, .. } if *topic == tp.topic),
            "{e:?}"
        );
        let config = ConsumerConfig::builder().group_id("g").build().unwrap();
        let mut consumer = Consumer::new(&live.cluster, config).unwrap();
        expect_err!(
            consumer.commit_offsets(&offsets),
            Error::UnknownTopicOrPartition { .. }
        );
    }
    live.assert_unchanged(&fx, "commit for an unknown partition");
}

#[test]
fn row56_commit_of_an_offset_above_i64_max_or_a_negative_epoch() {
    // Kafka's offsets are signed 64-bit: the u64 analogue of a negative
    // offset is one above i64::MAX, which the stored layout cannot hold.
    let fx = Fixture::with_groups();
    let live = fx.live();
    for offset in [1_u64 << 63, u64::MAX] {
        let offsets =
            BTreeMap::from([(TopicPartition::new("t", 0), OffsetAndMetadata::new(offset))]);
        let e = expect_err!(
            live.cluster.alter_group_offsets("g", &offsets),
            Error::InvalidArgument(_)
        );
        assert!(e.to_string().contains("t-0"), "{e}");
        let config = ConsumerConfig::builder().group_id("g").build().unwrap();
        let mut consumer = Consumer::new(&live.cluster, config).unwrap();
        expect_err!(consumer.commit_offsets(&offsets), Error::InvalidArgument(_));
        // A position set by seek is committed under the same rule.
        let tp = TopicPartition::new("t", 0);
        consumer.assign(std::slice::from_ref(&tp)).unwrap();
        consumer.seek(&tp, offset).unwrap();
        expect_err!(consumer.commit_sync(), Error::InvalidArgument(_));
    }
    // A negative leader epoch (stored as -1, "unknown") would not come
    // back as committed.
    let offsets = BTreeMap::from([(
        TopicPartition::new("t", 0),
        OffsetAndMetadata {
            leader_epoch: Some(-5),
            ..OffsetAndMetadata::new(1)
        },
    )]);
    let e = expect_err!(
        live.cluster.alter_group_offsets("g", &offsets),
        Error::InvalidArgument(_)
    );
    assert!(e.to_string().contains("leader epoch"), "{e}");
    live.assert_unchanged(&fx, "commit above i64::MAX or with a negative epoch");
}

#[test]
fn row57_group_id_or_commit_metadata_out_of_range() {
    let fx = Fixture::with_groups();
    let live = fx.live();
    let offsets = BTreeMap::from([(TopicPartition::new("t", 0), OffsetAndMetadata::new(1))]);
    let c = &live.cluster;
    expect_err!(
        c.alter_group_offsets("", &offsets),
        Error::InvalidArgument(_)
    );
    let long = "g".repeat(40_000);
    expect_err!(
        c.alter_group_offsets(&long, &offsets),
        Error::InvalidArgument(_)
    );
    expect_err!(c.list_group_offsets(""), Error::InvalidArgument(_));
    expect_err!(c.delete_group(""), Error::InvalidArgument(_));
    expect_err!(c.describe_group(""), Error::InvalidArgument(_));
    expect_err!(
        c.reset_group_offsets("", &[], OffsetSpec::Earliest),
        Error::InvalidArgument(_)
    );

    let big = BTreeMap::from([(
        TopicPartition::new("t", 0),
        OffsetAndMetadata::new(1).with_metadata("m".repeat(40_000)),
    )]);
    let e = expect_err!(c.alter_group_offsets("g", &big), Error::InvalidArgument(_));
    assert!(e.to_string().contains("metadata"), "{e}");
    live.assert_unchanged(&fx, "bad group id or metadata");
}

#[test]
fn row58_offsets_for_times_or_reset_with_a_negative_timestamp() {
    let fx = Fixture::with_groups();
    let live = fx.live();
    let consumer = Consumer::new(&live.cluster, ConsumerConfig::default()).unwrap();
    for ts in [-1, -2, i64::MIN] {
        let request = BTreeMap::from([
            (TopicPartition::new("t", 1), 0),
            (TopicPartition::new("t", 0), ts),
        ]);
        let e = expect_err!(
            consumer.offsets_for_times(&request),
            Error::InvalidArgument(_)
        );
        assert!(e.to_string().contains("t-0"), "{e}");
        expect_err!(
            live.cluster
                .reset_group_offsets("g", &[], OffsetSpec::Timestamp(ts)),
            Error::InvalidArgument(_)
        );
    }
    drop(consumer);
    live.assert_unchanged(&fx, "negative timestamp");
}

#[test]
fn row59_partition_offset_for_a_negative_timestamp() {
    let fx = Fixture::new();
    let live = fx.live();
    let p = live.cluster.topic("t").unwrap().partition(1).unwrap();
    for ts in [-1, -2, i64::MIN] {
        expect_err!(p.offset_for_timestamp(ts), Error::InvalidArgument(_));
    }
    drop(p);
    live.assert_unchanged(&fx, "Partition::offset_for_timestamp(negative)");
}

// ---------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------

const RECOVERY_POINT: &str = "broker-0/recovery-point-offset-checkpoint";
const LOG_START: &str = "broker-0/log-start-offset-checkpoint";
const CLEANER: &str = "broker-0/cleaner-offset-checkpoint";

/// Damaged versions of a checkpoint file (Kafka's text layout: version,
/// count, `topic partition offset` lines).
fn damaged_checkpoints(good: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let text = String::from_utf8(good.to_vec()).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let (version, count) = (lines[0], lines[1]);
    assert_eq!(version, "0");
    let first = lines[2].to_string();
    let mut out = vec![
        ("empty", Vec::new()),
        ("truncated mid-entry", good[..good.len() - 3].to_vec()),
        ("cut after the count", format!("0\n{count}\n").into_bytes()),
        ("binary garbage", vec![0xde, 0xad, 0xbe, 0xef, 0x00, 0xff]),
        ("not UTF-8", [good, &[0xff, 0xfe][..]].concat()),
        ("text garbage", b"hello world\n".to_vec()),
        ("unknown version", text.replacen('0', "7", 1).into_bytes()),
        (
            "absurd entry count",
            text.replacen(&format!("\n{count}\n"), "\n18446744073709551615\n", 1)
                .into_bytes(),
        ),
        (
            "count too large for the file",
            text.replacen(&format!("\n{count}\n"), "\n99999\n", 1)
                .into_bytes(),
        ),
        ("negative offset", {
            let (tp, _) = first.rsplit_once(' ').unwrap();
            text.replacen(&first, &format!("{tp} -1"), 1).into_bytes()
        }),
        ("offset above i64::MAX", {
            let (tp, _) = first.rsplit_once(' ').unwrap();
            text.replacen(&first, &format!("{tp} 9223372036854775808"), 1)
                .into_bytes()
        }),
        ("offset above u64::MAX", {
            let (tp, _) = first.rsplit_once(' ').unwrap();
            text.replacen(&first, &format!("{tp} 99999999999999999999999"), 1)
                .into_bytes()
        }),
        ("negative partition", {
            let mut fields: Vec<&str> = first.split(' ').collect();
            fields[1] = "-1";
            text.replacen(&first, &fields.join(" "), 1).into_bytes()
        }),
        (
            "four fields",
            text.replacen(&first, &format!("{first} 7"), 1).into_bytes(),
        ),
    ];
    lines.push(&first);
    let duplicate = format!("0\n{}\n{}\n", lines.len() - 2, lines[2..].join("\n"));
    out.push(("duplicate entry", duplicate.into_bytes()));
    out
}

/// Every damaged version of `file` refuses the open with `Corrupt` naming
/// the file, and no file changes.
#[track_caller]
fn refused_checkpoint(file: &str) {
    let fx = Fixture::new();
    let good = fx.closed_bytes(file);
    for (what, bytes) in damaged_checkpoints(&good) {
        fx.write(file, &bytes);
        let what = format!("{file}: {what}");
        let e = fx.assert_open_refused(&what, |e| {
            matches!(e, Error::Corrupt { path, kind: CorruptionKind::Checkpoint(_), .. }
                if path.ends_with(file))
        });
        drop(e);
    }
    fx.write(file, &good);
    fx.open_intact(file).close().unwrap();
    assert_same_tree(&fx.closed, &tree(fx.path()), file);
}

/// Every damaged version of `file` is tolerated: the open succeeds, loses
/// no record, and rewrites the file; the next clean close leaves exactly
/// the files the fixture's close left.
#[track_caller]
fn tolerated_checkpoint(file: &str, check: impl Fn(&Cluster, &str)) {
    let fx = Fixture::new();
    let good = fx.closed_bytes(file);
    for (what, bytes) in damaged_checkpoints(&good) {
        fx.write(file, &bytes);
        let what = format!("{file}: {what}");
        let cluster = fx.open_intact(&what);
        check(&cluster, &what);
        cluster.close().unwrap();
        drop(cluster);
        assert_same_tree(&fx.closed, &tree(fx.path()), &what);
    }
}

#[test]
fn row60_damaged_recovery_point_checkpoint() {
    // A lost recovery point costs a scan of every segment, nothing more.
    tolerated_checkpoint(RECOVERY_POINT, |cluster, what| {
        let report = cluster.recovery_report();
        let s0 = &report.partitions[&TopicPartition::new("s", 0)];
        assert!(s0.segments_scanned >= 3, "{what}: {s0:?}");
        assert!(report.truncations().next().is_none(), "{what}: nothing cut");
    });
}

#[test]
fn row61_damaged_metadata_recovery_point_checkpoint() {
    // The metadata log's own recovery point, in the root: the whole
    // metadata log is scanned instead.
    tolerated_checkpoint("recovery-point-offset-checkpoint", |cluster, what| {
        let report = &cluster.recovery_report().metadata;
        assert_eq!(report.segments_scanned, 1, "{what}: {report:?}");
        assert!(report.truncated.is_none(), "{what}: {report:?}");
    });
}

#[test]
fn row62_damaged_log_start_checkpoint() {
    // Records below a lost log start offset would come back: refused.
    refused_checkpoint(LOG_START);
}

#[test]
fn row63_damaged_cleaner_checkpoint() {
    // A lost cleaner checkpoint makes the next cleaning pass longer.
    let fx = Fixture::new();
    let good = fx.closed_bytes(CLEANER);
    assert!(String::from_utf8_lossy(&good).contains("c 0 "), "{good:?}");
    drop(fx);
    tolerated_checkpoint(CLEANER, |_, _| {});
}

#[test]
fn row64_huge_sparse_checkpoint_file() {
    let fx = Fixture::new();
    for file in [
        RECOVERY_POINT,
        LOG_START,
        CLEANER,
        "recovery-point-offset-checkpoint",
    ] {
        let path = fx.path().join(file);
        let good = std::fs::read(&path).unwrap();
        // A hole of 1 TiB after the real contents.
        make_sparse_tib(&path);
        if file == LOG_START {
            fx.assert_open_refused(file, |e| {
                matches!(e, Error::Corrupt { path, kind: CorruptionKind::Checkpoint(_), .. }
                    if path.ends_with(file))
            });
        } else {
            fx.open_intact(file).close().unwrap();
        }
        std::fs::write(&path, good).unwrap();
    }
    fx.open_intact("restored").close().unwrap();
    assert_same_tree(&fx.closed, &tree(fx.path()), "restored");
}

#[test]
fn row65_checkpoint_entries_for_partitions_that_do_not_exist() {
    // Entries of unknown topics and partitions (Kafka writes them for
    // partitions it no longer hosts) are dropped.
    let fx = Fixture::new();
    for file in [RECOVERY_POINT, LOG_START, CLEANER] {
        let text = String::from_utf8(fx.closed_bytes(file)).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.push("gone 0 5".into());
        lines.push("t 7 9".into());
        lines[1] = (lines.len() - 2).to_string();
        fx.write(file, lines.join("\n") + "\n");
    }
    let cluster = fx.open_intact("extra entries");
    cluster.close().unwrap();
    drop(cluster);
    assert_same_tree(&fx.closed, &tree(fx.path()), "extra entries are dropped");
}

#[test]
fn row66_log_start_checkpoint_past_the_log_end() {
    // An in-range offset cannot be told from a real one: as after a power
    // loss that lost records `delete_records` had already deleted, the log
    // starts at its end. The records stay in the segment files.
    let fx = Fixture::new();
    let text = String::from_utf8(fx.closed_bytes(LOG_START)).unwrap();
    fx.write(LOG_START, text.replace("t 1 0", "t 1 1000"));
    let cluster = fx.open().unwrap();
    let p = cluster.topic("t").unwrap().partition(1).unwrap();
    assert_eq!(
        (p.log_start_offset().unwrap(), p.log_end_offset().unwrap()),
        (2, 2)
    );
    let other = cluster.topic("t").unwrap().partition(0).unwrap();
    assert_eq!(
        other.log_start_offset().unwrap(),
        1,
        "other partitions keep theirs"
    );
    drop((p, other));
    cluster.close().unwrap();
}

#[test]
fn row67_garbage_meta_properties() {
    let fx = Fixture::new();
    let good = fx.closed_bytes("meta.properties");
    let text = String::from_utf8(good.clone()).unwrap();
    for (what, bytes) in [
        ("empty", Vec::new()),
        ("binary garbage", vec![0xde, 0xad, 0xbe, 0xef, 0, 0xff]),
        ("truncated", good[..20].to_vec()),
        ("1 TiB sparse", vec![0; 1]),
        (
            "no format version",
            text.lines()
                .filter(|l| !l.starts_with("logbus.format.version"))
                .collect::<Vec<_>>()
                .join("\n")
                .into_bytes(),
        ),
        (
            "no cluster id",
            text.lines()
                .filter(|l| !l.starts_with("cluster.id"))
                .collect::<Vec<_>>()
                .join("\n")
                .into_bytes(),
        ),
    ] {
        fx.write("meta.properties", &bytes);
        if what == "1 TiB sparse" {
            // Only its first 64 KiB are read.
            make_sparse_tib(fx.path().join("meta.properties"));
        }
        fx.assert_open_refused(&format!("meta.properties: {what}"), |e| {
            matches!(e, Error::Corrupt { path, kind: CorruptionKind::Metadata(_), .. }
                if path.ends_with("meta.properties"))
        });
    }
    fx.write("meta.properties", &good);
    fx.open_intact("restored").close().unwrap();
}

#[test]
fn row68_meta_properties_of_a_newer_format_version() {
    let fx = Fixture::new();
    let text = String::from_utf8(fx.closed_bytes("meta.properties")).unwrap();
    for version in ["2", "999", "x", ""] {
        fx.write(
            "meta.properties",
            text.replace(
                "logbus.format.version=1",
                &format!("logbus.format.version={version}"),
            ),
        );
        let e = fx.assert_open_refused(&format!("format version {version:?}"), |e| {
            matches!(e, Error::InvalidConfig(_))
        });
        assert!(e.to_string().contains("logbus.format.version"), "{e}");
    }
}

/// The relative path of partition `topic-p`'s `partition.metadata`.
fn partition_metadata(topic: &str, p: u32) -> String {
    format!("broker-0/{topic}-{p}/partition.metadata")
}

#[test]
fn row69_garbage_partition_metadata() {
    let fx = Fixture::new();
    let file = partition_metadata("t", 1);
    let good = fx.closed_bytes(&file);
    for (what, bytes) in [
        ("empty", Vec::new()),
        ("binary garbage", vec![0xde, 0xad, 0xbe, 0xef, 0, 0xff]),
        ("truncated", good[..good.len() / 2].to_vec()),
        (
            "bad topic id",
            b"version: 0\ntopic_id: not-base64!\n".to_vec(),
        ),
        ("1 TiB sparse", vec![0; 1]),
    ] {
        fx.write(&file, &bytes);
        if what == "1 TiB sparse" {
            // Only its first 4 KiB are read.
            make_sparse_tib(fx.path().join(&file));
        }
        fx.assert_open_refused(&format!("partition.metadata: {what}"), |e| {
            matches!(e, Error::PartitionDirConflict { path, reason }
                if path.ends_with("t-1") && reason.contains("unreadable"))
        });
    }
    fx.write(&file, &good);
    fx.open_intact("restored").close().unwrap();
}

#[test]
fn row70_partition_metadata_of_another_topic() {
    let fx = Fixture::new();
    let file = partition_metadata("t", 1);
    let good = fx.closed_bytes(&file);
    // `a.b`'s id in `t-1`.
    fx.write(&file, fx.closed_bytes(&partition_metadata("a.b", 0)));
    fx.assert_open_refused(
        "foreign topic id",
        |e| matches!(e, Error::PartitionDirConflict { path, .. } if path.ends_with("t-1")),
    );
    // A missing one, in a directory holding segments.
    std::fs::remove_file(fx.path().join(&file)).unwrap();
    fx.assert_open_refused("missing partition.metadata", |e| {
        matches!(e, Error::PartitionDirConflict { path, reason }
            if path.ends_with("t-1") && reason.contains("no partition.metadata"))
    });
    fx.write(&file, &good);
    fx.open_intact("restored").close().unwrap();
}

#[test]
fn row71_damaged_metadata_log() {
    // A bit flipped inside the batch that created `a.b`, below the
    // metadata log's recovery point: the registry cannot be trusted.
    let fx = Fixture::new();
    let file = "__cluster_metadata-0/00000000000000000000.log";
    let mut bytes = fx.closed_bytes(file);
    let at = bytes.windows(3).position(|w| w == b"a.b").unwrap();
    bytes[at + 1] ^= 0x01;
    fx.write(file, &bytes);
    fx.assert_open_refused("damaged metadata log", |e| {
        matches!(e, Error::Corrupt { path, .. }
            if path.starts_with(fx.path().join("__cluster_metadata-0")))
    });
}

#[test]
fn row72_lost_metadata_log() {
    // Partition directories prove topics existed: starting with an empty
    // registry would hide them.
    let fx = Fixture::new();
    std::fs::remove_dir_all(fx.path().join("__cluster_metadata-0")).unwrap();
    let e = fx.assert_open_refused("lost metadata log", |e| {
        matches!(e, Error::MetadataMissing { path, .. }
            if path.ends_with("__cluster_metadata-0"))
    });
    assert!(e.to_string().contains("rebuild_metadata"), "{e}");
}

/// A sealed segment of `s-0` and the last one.
const SEALED: &str = "broker-0/s-0/00000000000000000002";
const ACTIVE: &str = "broker-0/s-0/00000000000000000010";

/// The open tolerates damaged index files of `s-0`: every record is
/// there, lookups answer as before, the segment was scanned and its
/// indexes rebuilt (and reported); and the next clean close leaves
/// exactly the files the fixture's close left.
#[track_caller]
fn tolerated_index_damage(fx: &Fixture, what: &str) {
    let cluster = fx.open_intact(what);
    let report = &cluster.recovery_report().partitions[&TopicPartition::new("s", 0)];
    let done = (report.segments_scanned, report.indexes_rebuilt);
    assert_eq!(done, (1, 1), "{what}: {report:?}");
    assert!(report.truncated.is_none(), "{what}: {report:?}");
    // Lookups by offset and by time answer as before.
    let p = cluster.topic("s").unwrap().partition(0).unwrap();
    for offset in 0..12 {
        let read = p.read(offset, 1).unwrap();
        let first = read.batches().next().unwrap().unwrap();
        assert_eq!(
            first.header().base_offset as u64,
            offset,
            "{what}: read({offset})"
        );
    }
    let found = p.offset_for_timestamp(T0).unwrap().unwrap();
    assert_eq!((found.offset, found.timestamp), (0, T0), "{what}");
    drop(p);
    cluster.close().unwrap();
    drop(cluster);
    assert_same_tree(&fx.closed, &tree(fx.path()), what);
}

/// Offset index entries (relative offset, position), 8 bytes each.
fn index_entries(entries: impl IntoIterator<Item = (u32, u32)>) -> Vec<u8> {
    entries
        .into_iter()
        .flat_map(|(o, p)| [o.to_be_bytes(), p.to_be_bytes()].concat())
        .collect()
}

#[test]
fn row73_offset_index_larger_than_its_segment() {
    for segment in [SEALED, ACTIVE] {
        let fx = Fixture::new();
        let file = format!("{segment}.index");
        // 100 entries for a segment of two batches (226 bytes), pointing
        // past its end.
        fx.write(&file, index_entries((1..=100).map(|i| (i, i * 100))));
        tolerated_index_damage(&fx, &format!("{file}: 100 entries"));
        // The real entry, then zeros up to `segment.index.bytes` (4096
        // here), and up to 10 MiB: the preallocated shape of an index a
        // crash left untrimmed. Only a trimmed index is trusted, so both
        // are rebuilt from the segment without reading their slots.
        let mut padded = fx.closed_bytes(&file);
        for len in [4096, 10 << 20] {
            padded.resize(len, 0);
            fx.write(&file, &padded);
            tolerated_index_damage(&fx, &format!("{file}: zero padded to {len}"));
        }
    }
}

/// A 1 TiB sparse `suffix` file for a sealed and for the active segment
/// of `s-0`: rebuilt without reading it.
fn huge_sparse_index(suffix: &str) {
    for segment in [SEALED, ACTIVE] {
        let fx = Fixture::new();
        let file = format!("{segment}.{suffix}");
        make_sparse_tib(fx.path().join(&file));
        tolerated_index_damage(&fx, &format!("{file}: 1 TiB sparse"));
    }
}

#[test]
fn row74_huge_sparse_offset_index() {
    huge_sparse_index("index");
}

#[test]
fn row75_garbage_offset_or_time_index() {
    for segment in [SEALED, ACTIVE] {
        for suffix in ["index", "timeindex"] {
            let fx = Fixture::new();
            let file = format!("{segment}.{suffix}");
            let len = if suffix == "index" { 80 } else { 120 };
            let garbage: Vec<u8> = (0..len)
                .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect();
            fx.write(&file, &garbage);
            tolerated_index_damage(&fx, &format!("{file}: garbage"));
            // A length no whole number of entries makes.
            let mut odd = fx.closed_bytes(&file);
            odd.push(1);
            fx.write(&file, odd);
            tolerated_index_damage(&fx, &format!("{file}: partial entry"));
        }
    }
}

#[test]
fn row76_huge_sparse_time_index() {
    huge_sparse_index("timeindex");
}

#[test]
fn row77_directory_lock_held_by_another_opener() {
    let fx = Fixture::new();
    let live = fx.live();
    let e = expect_err!(fx.open(), Error::DirectoryLocked { .. });
    assert!(
        matches!(&e, Error::DirectoryLocked { path } if path == fx.path()),
        "{e:?}"
    );
    // A partition's own directory is locked too, against a raw `Log`.
    let partition = fx.broker().join("t-1");
    let e = expect_err!(
        Log::builder(&partition).open(),
        Error::DirectoryLocked { .. }
    );
    assert!(
        matches!(&e, Error::DirectoryLocked { path } if *path == partition),
        "{e:?}"
    );
    live.assert_unchanged(&fx, "second opener");
}

#[test]
fn row78_damaged_batch_in_a_sealed_segment() {
    let fx = Fixture::new();
    let file = format!("{SEALED}.log");
    let mut bytes = fx.closed_bytes(&file);
    // A bit of the first batch's value: data followed by a valid batch.
    bytes[80] ^= 0x10;
    fx.write(&file, &bytes);
    fx.assert_open_refused(
        "damaged sealed segment",
        |e| matches!(e, Error::Corrupt { path, .. } if path.ends_with(&file)),
    );
}

#[test]
fn row79_garbage_after_the_last_batch() {
    // The shape of a write torn by a crash: cut and reported.
    let fx = Fixture::new();
    let file = format!("{ACTIVE}.log");
    let good = fx.closed_bytes(&file);
    fx.write(&file, [&good[..], &[0xab; 100][..]].concat());
    let cluster = fx.open_intact("torn tail");
    let cut: Vec<_> = cluster.recovery_report().truncations().collect();
    assert_eq!(cut.len(), 1, "{cut:?}");
    let (tp, report) = &cut[0];
    assert_eq!(*tp, TopicPartition::new("s", 0));
    let tail = report.truncated.as_ref().unwrap();
    assert_eq!((tail.position, tail.bytes), (good.len() as u64, 100));
    assert!(tail.path.ends_with(&file));
    cluster.close().unwrap();
    drop(cluster);
    assert_same_tree(&fx.closed, &tree(fx.path()), "torn tail cut");
}

#[test]
fn row80_damaged_fenced_offset_marker() {
    let fx = Fixture::new();
    let file = "broker-0/t-1/fenced-offset";
    for (what, bytes) in [
        ("empty", Vec::new()),
        ("garbage", b"fenced-offset v1 12 0\n".to_vec()),
        ("too long", vec![b'x'; 4096]),
    ] {
        fx.write(file, &bytes);
        fx.assert_open_refused(&format!("fenced-offset: {what}"), |e| {
            matches!(e, Error::Corrupt { path, kind: CorruptionKind::Checkpoint(_), .. }
                if path.ends_with(file))
        });
    }
    std::fs::remove_file(fx.path().join(file)).unwrap();
    fx.open_intact("marker removed").close().unwrap();
}

#[test]
fn row81_empty_segment_named_above_i64_max() {
    let fx = Fixture::new();
    let absurd = "broker-0/t-1/09223372036854775808";
    // An empty one is an empty trailing segment: removed (it holds nothing).
    fx.write(&format!("{absurd}.log"), b"");
    let cluster = fx.open_intact("empty segment named above i64::MAX");
    let p = cluster.topic("t").unwrap().partition(1).unwrap();
    p.append(&mut values(&["t1-c"])).unwrap();
    assert_eq!(p.log_end_offset().unwrap(), 3);
    drop(p);
    cluster.close().unwrap();
    drop(cluster);
    assert!(!fx.path().join(format!("{absurd}.log")).exists());
}

#[test]
fn row82_segment_with_data_named_above_i64_max() {
    // Past the recovery point no segment holds offsets 2 up to its base:
    // everything from there was never flushed, so it is cut like a torn
    // tail, and reported.
    let fx = Fixture::new();
    let absurd = "broker-0/t-1/09223372036854775808.log";
    fx.write(
        absurd,
        fx.closed_bytes("broker-0/t-1/00000000000000000000.log"),
    );
    let cluster = fx.open_intact("segment named above i64::MAX");
    let report = &cluster.recovery_report().partitions[&TopicPartition::new("t", 1)];
    let tail = report.truncated.as_ref().unwrap();
    assert_eq!(tail.first_lost_offset, 2, "{tail:?}");
    assert_eq!(tail.removed_segments.len(), 1, "{tail:?}");
    assert!(tail.removed_segments[0].ends_with(absurd), "{tail:?}");
    cluster.close().unwrap();
    drop(cluster);
    assert_same_tree(&fx.closed, &tree(fx.path()), "the segment removed");
}

#[test]
fn row83_files_and_directories_logbus_does_not_know() {
    let fx = Fixture::new();
    let extra = [
        ("broker-0/t-1/notes.txt", "kept"),
        ("broker-0/t-1/00000000000000000000.log.bak", "kept"),
        ("broker-0/README", "kept"),
        ("broker-0/junk-dir/x", "kept"),
        ("broker-0/t-99999999999/x", "kept"),
        ("notes.txt", "kept"),
    ];
    for (file, text) in extra {
        let path = fx.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let before = tree(fx.path());
    let cluster = fx.open_intact("unknown files");
    assert!(cluster.recovery_report().unknown_dirs.is_empty());
    cluster.close().unwrap();
    drop(cluster);
    assert_same_tree(&before, &tree(fx.path()), "unknown files are kept");
}

#[test]
fn row84_missing_sealed_segment() {
    // A sealed segment's files are gone: its offsets are not in any file.
    let fx = Fixture::new();
    for suffix in ["log", "index", "timeindex"] {
        std::fs::remove_file(fx.path().join(format!("{SEALED}.{suffix}"))).unwrap();
    }
    fx.assert_open_refused(
        "missing sealed segment",
        |e| matches!(e, Error::Corrupt { path, .. } if path.starts_with(fx.broker().join("s-0"))),
    );
}

// ---------------------------------------------------------------------------
// Lifecycle and follower appends
// ---------------------------------------------------------------------------

#[test]
fn row85_calls_on_a_closed_cluster() {
    let fx = Fixture::new();
    let cluster = fx.open().unwrap();
    let p = cluster.topic("t").unwrap().partition(1).unwrap();
    let producer = Producer::new(&cluster, ProducerConfig::default()).unwrap();
    cluster.close().unwrap();
    let closed = |e: Error| assert!(matches!(e, Error::Closed(_)), "{e:?}");
    closed(
        cluster
            .create_topic(NewTopic::new("late", 1))
            .map(|_| ())
            .unwrap_err(),
    );
    closed(cluster.delete_topic("t").unwrap_err());
    closed(cluster.create_partitions("t", 3).unwrap_err());
    closed(cluster.topic("t").map(|_| ()).unwrap_err());
    closed(p.append(&mut values(&["late"])).map(|_| ()).unwrap_err());
    closed(p.delete_records(2).map(|_| ()).unwrap_err());
    closed(
        producer
            .send(ProducerRecord::new("t", "late"))
            .map(|_| ())
            .unwrap_err(),
    );
    closed(
        Consumer::new(&cluster, ConsumerConfig::default())
            .map(|_| ())
            .unwrap_err(),
    );
    drop((p, producer, cluster));
    assert_same_tree(&fx.closed, &tree(fx.path()), "calls after close");
    fx.open_intact("calls after close").close().unwrap();
}

#[test]
fn row86_follower_batches_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::builder(dir.path())
        .clock(Arc::new(ManualClock::new(T0)))
        .open()
        .unwrap();
    log.append(&mut values(&["a", "b", "c"]), 0).unwrap();
    let files = tree(dir.path());
    let at = |base: i64, vals: &[&str]| {
        let mut b = values(vals);
        logbus::format::set_base_offset(&mut b, base);
        b
    };
    // A negative base offset is no offset at all.
    expect_err!(
        log.append_as_follower(&at(-5, &["x"])),
        Error::InvalidBatch(FormatError::InvalidBaseOffset {
            base_offset: -5,
            ..
        })
    );
    // Below the log end (3), and a second batch going backwards.
    for (bytes, first) in [
        (at(1, &["x"]), 1),
        ([at(3, &["x", "y"]), at(4, &["z"])].concat(), 3),
    ] {
        let e = expect_err!(
            log.append_as_follower(&bytes),
            Error::OffsetsOutOfOrder { .. }
        );
        assert!(
            matches!(e, Error::OffsetsOutOfOrder { first: f, log_end: 3, .. } if f == first),
            "{e:?}"
        );
        assert_same_tree(&files, &tree(dir.path()), "follower append out of order");
    }
    assert_eq!(log.log_end_offset(), 3);
    log.close().unwrap();
}
