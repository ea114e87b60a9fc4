//! `isolation.level`: what read_committed and read_uncommitted consumers
//! return from a partition holding transactions, where their positions
//! go, and where a partition ends for each.
//!
//! There is no public transactional producer yet, so the tests write what
//! one would: transactional batches built with the format's builder
//! (producer id, epoch, sequences, the transactional flag) through the
//! partition's append path, and COMMIT/ABORT markers through the replica
//! manager, as the transaction coordinator's marker writer does.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use proptest::prelude::*;

use crate::cluster::TopicIdPartition;
use crate::format::{BatchBuilder, ControlRecordType};
use crate::{
    Cluster, ClusterConfig, Compression, Consumer, ConsumerConfig, IsolationLevel, NewTopic,
    OffsetReset, Partition, TopicConfig, TopicPartition,
};

use IsolationLevel::{ReadCommitted, ReadUncommitted};

/// A guard against a hang, never a timing assertion.
const GUARD: Duration = Duration::from_secs(60);

/// One partition and what a transactional producer and its coordinator
/// would write to it.
struct Fixture {
    _dir: tempfile::TempDir,
    cluster: Cluster,
    partition: Partition,
    key: TopicIdPartition,
    /// Each producer's next sequence.
    sequences: HashMap<i64, i32>,
}

fn tp() -> TopicPartition {
    TopicPartition::new("t", 0)
}

/// `(offset, value)` of the records, in the order returned.
type Seen = Vec<(u64, String)>;

impl Fixture {
    fn new() -> Self {
        Self::with_segment_bytes(None)
    }

    /// With `segment.bytes` set: small segments end reads early (a read
    /// never crosses a segment), so transactions and their markers land
    /// in different fetches.
    fn with_segment_bytes(segment_bytes: Option<u64>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = Cluster::open(dir.path(), ClusterConfig::default()).expect("cluster");
        let mut topic = NewTopic::new("t", 1);
        if let Some(bytes) = segment_bytes {
            topic = topic.config(
                TopicConfig::new()
                    .segment_bytes(bytes)
                    .expect("segment.bytes"),
            );
        }
        let partition = cluster
            .create_topic(topic)
            .expect("topic")
            .partition(0)
            .expect("partition");
        let key = cluster.inner.partition_key(&tp()).expect("key");
        Fixture {
            _dir: dir,
            cluster,
            partition,
            key,
            sequences: HashMap::new(),
        }
    }

    /// Appends one transactional batch of producer `pid` (epoch 0) holding
    /// `values`; returns its first offset.
    fn txn(&mut self, pid: i64, values: &[&str]) -> u64 {
        self.txn_compressed(pid, values, Compression::None)
    }

    /// [`Fixture::txn`] compressed with `compression`.
    fn txn_compressed(&mut self, pid: i64, values: &[&str], compression: Compression) -> u64 {
        let sequence = self.sequences.entry(pid).or_insert(0);
        let mut builder = BatchBuilder::new(compression)
            .producer(pid, 0, *sequence)
            .transactional(true);
        let now = self.cluster.inner.clock().now_ms();
        for value in values {
            builder.append(now, None, Some(value.as_bytes()), &[]);
        }
        *sequence += i32::try_from(values.len()).expect("few records");
        let mut batch = builder.build().expect("batch").to_vec();
        self.partition
            .append(&mut batch)
            .expect("append")
            .first_offset()
    }

    /// Appends one batch outside any transaction (no producer id);
    /// returns its first offset.
    fn plain(&self, values: &[&str]) -> u64 {
        let mut builder = BatchBuilder::new(Compression::None);
        let now = self.cluster.inner.clock().now_ms();
        for value in values {
            builder.append(now, None, Some(value.as_bytes()), &[]);
        }
        let mut batch = builder.build().expect("batch").to_vec();
        self.partition
            .append(&mut batch)
            .expect("append")
            .first_offset()
    }

    /// Writes producer `pid`'s COMMIT (or ABORT) marker; returns its
    /// offset.
    fn marker(&self, pid: i64, commit: bool) -> u64 {
        let kind = if commit {
            ControlRecordType::Commit
        } else {
            ControlRecordType::Abort
        };
        self.cluster
            .inner
            .replicas_for(&self.key)
            .expect("leader")
            .append_txn_marker(&self.key, pid, 0, kind, 0)
            .expect("marker")
            .first_offset()
    }

    fn config(isolation: IsolationLevel) -> crate::ConsumerConfigBuilder {
        ConsumerConfig::builder()
            .isolation_level(isolation)
            .auto_offset_reset(OffsetReset::Earliest)
    }

    /// A consumer at `isolation` assigned the partition from its start;
    /// `small` fetches one batch and returns one record at a time.
    fn consumer(&self, isolation: IsolationLevel, small: bool) -> Consumer {
        let mut config = Self::config(isolation);
        if small {
            config = config.max_partition_fetch_bytes(1).max_poll_records(1);
        }
        self.consumer_with(config)
    }

    fn consumer_with(&self, config: crate::ConsumerConfigBuilder) -> Consumer {
        let mut consumer =
            Consumer::new(&self.cluster, config.build().expect("config")).expect("consumer");
        consumer.assign(&[tp()]).expect("assign");
        consumer
    }
}

/// What one poll returned.
fn poll(consumer: &mut Consumer) -> Seen {
    consumer
        .poll(Duration::ZERO)
        .expect("poll")
        .iter()
        .map(|r| {
            let value = String::from_utf8(r.value().expect("a value").to_vec()).expect("utf-8");
            (r.offset(), value)
        })
        .collect()
}

/// Polls until the consumer's position reaches the partition's end for
/// it (`end_offsets`, by its isolation level); returns what it got.
fn read_to_end(consumer: &mut Consumer) -> Seen {
    let mut seen = Vec::new();
    for _ in 0..10_000 {
        let end = consumer.end_offsets(&[tp()]).expect("end")[&tp()];
        if consumer.position(&tp()).expect("position") == end {
            return seen;
        }
        seen.extend(poll(consumer));
    }
    panic!("the consumer never reached the end; it read {seen:?}");
}

/// Polls until a poll reports a partition's end; returns how many records
/// the polls returned and that report. (A marker in a segment of its own
/// takes a poll of its own.)
fn until_eof(consumer: &mut Consumer) -> (usize, Vec<(TopicPartition, u64)>) {
    let mut count = 0;
    for _ in 0..100 {
        let records = consumer.poll(Duration::ZERO).expect("poll");
        count += records.count();
        if !records.partition_eofs().is_empty() {
            return (count, records.partition_eofs().to_vec());
        }
    }
    panic!("no end of partition reported after {count} records");
}

fn values(seen: &Seen) -> Vec<&str> {
    seen.iter().map(|(_, v)| v.as_str()).collect()
}

/// Three producers interleaved with records outside transactions: p1
/// commits then aborts, p2 aborts then commits a second transaction, p3
/// stays open, then commits.
fn interleaved(f: &mut Fixture) -> Vec<u64> {
    let (p1, p2, p3) = (1001, 1002, 1003);
    let mut markers = Vec::new();
    f.plain(&["a"]);
    f.txn(p1, &["p1-1"]);
    f.txn(p2, &["p2-1", "p2-2"]);
    f.plain(&["b"]);
    markers.push(f.marker(p1, true));
    f.txn(p3, &["p3-1"]);
    markers.push(f.marker(p2, false));
    f.txn(p2, &["p2-3"]);
    f.txn(p1, &["p1-2"]);
    f.txn(p3, &["p3-2"]);
    markers.push(f.marker(p2, true));
    f.plain(&["c"]);
    markers.push(f.marker(p1, false));
    markers
}

#[test]
fn read_committed_returns_only_committed_and_plain_records_up_to_the_lso() {
    for small in [false, true] {
        let mut f = Fixture::new();
        let markers = interleaved(&mut f);
        let mut consumer = f.consumer(ReadCommitted, small);
        // p3's open transaction (from offset 6) holds the LSO.
        let seen = read_to_end(&mut consumer);
        assert_eq!(values(&seen), ["a", "p1-1", "b"], "small fetches: {small}");
        assert_eq!(consumer.position(&tp()).expect("position"), 6);
        assert!(poll(&mut consumer).is_empty(), "nothing past the LSO");

        let commit = f.marker(1003, true);
        let seen = read_to_end(&mut consumer);
        assert_eq!(
            values(&seen),
            ["p3-1", "p2-3", "p3-2", "c"],
            "small fetches: {small}"
        );
        assert_eq!(consumer.position(&tp()).expect("position"), commit + 1);
        for marker in markers.iter().chain([&commit]) {
            assert!(
                seen.iter().all(|(o, _)| o != marker),
                "marker {marker} returned"
            );
        }
    }
}

#[test]
fn read_uncommitted_returns_every_data_record_but_no_marker() {
    for small in [false, true] {
        let mut f = Fixture::new();
        let markers = interleaved(&mut f);
        let mut consumer = f.consumer(ReadUncommitted, small);
        let seen = read_to_end(&mut consumer);
        assert_eq!(
            values(&seen),
            [
                "a", "p1-1", "p2-1", "p2-2", "b", "p3-1", "p2-3", "p1-2", "p3-2", "c"
            ],
            "small fetches: {small}"
        );
        assert!(seen.iter().all(|(o, _)| !markers.contains(o)));
        // Past the last marker: the position never points at one.
        assert_eq!(
            consumer.position(&tp()).expect("position"),
            markers.last().expect("markers") + 1
        );
    }
}

#[test]
fn a_poll_that_finds_only_markers_and_aborted_data_returns_nothing_but_moves_past_them() {
    let mut f = Fixture::new();
    f.txn(7, &["x", "y"]);
    f.marker(7, false);
    f.txn(8, &["z"]);
    let abort = f.marker(8, false);
    let committed = Fixture::config(ReadCommitted).group_id("g");
    let mut consumer = f.consumer_with(committed.enable_auto_commit(false));
    assert!(poll(&mut consumer).is_empty());
    assert_eq!(consumer.position(&tp()).expect("position"), abort + 1);
    // The committed position is past the markers, not at one.
    consumer.commit_sync().expect("commit");
    let committed = consumer.committed(&[tp()]).expect("committed");
    assert_eq!(committed[&tp()].offset, abort + 1);

    // Read uncommitted: the aborted data, then a poll that sees only the
    // trailing marker moves past it.
    let mut consumer = f.consumer(ReadUncommitted, true);
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.extend(poll(&mut consumer));
    }
    assert_eq!(values(&seen), ["x", "y", "z"]);
    assert_eq!(consumer.position(&tp()).expect("position"), abort);
    assert!(poll(&mut consumer).is_empty());
    assert_eq!(consumer.position(&tp()).expect("position"), abort + 1);
}

#[test]
fn end_offsets_seek_to_end_latest_and_eof_use_the_lso_under_read_committed() {
    let mut f = Fixture::new();
    f.plain(&["a", "b"]);
    let first = f.txn(5, &["t1", "t2"]);
    let end = |isolation| {
        let consumer = f.consumer(isolation, false);
        consumer.end_offsets(&[tp()]).expect("end offsets")[&tp()]
    };
    assert_eq!((end(ReadUncommitted), end(ReadCommitted)), (4, first));

    // `auto.offset.reset = latest`, and seek_to_end.
    let latest = |isolation| {
        let config = ConsumerConfig::builder()
            .isolation_level(isolation)
            .auto_offset_reset(OffsetReset::Latest);
        let mut consumer = f.consumer_with(config);
        let reset = consumer.position(&tp()).expect("position");
        consumer.seek(&tp(), 0).expect("seek");
        consumer.seek_to_end(&[tp()]).expect("seek to end");
        (reset, consumer.position(&tp()).expect("position"))
    };
    assert_eq!(latest(ReadUncommitted), (4, 4));
    assert_eq!(latest(ReadCommitted), (first, first));

    // enable.partition.eof reports the end at the LSO.
    let mut eof = f.consumer_with(Fixture::config(ReadCommitted).enable_partition_eof(true));
    assert_eq!(until_eof(&mut eof), (2, vec![(tp(), first)]));

    let commit = f.marker(5, true);
    assert_eq!(
        (end(ReadUncommitted), end(ReadCommitted)),
        (commit + 1, commit + 1)
    );
    assert_eq!(until_eof(&mut eof), (2, vec![(tp(), commit + 1)]));
}

#[test]
fn a_consumer_blocked_at_the_lso_gets_the_records_once_the_commit_lands() {
    let mut f = Fixture::new();
    f.plain(&["before"]);
    f.txn(9, &["in-txn"]);
    let mut consumer = f.consumer(ReadCommitted, false);
    assert_eq!(values(&poll(&mut consumer)), ["before"]);
    assert!(poll(&mut consumer).is_empty());
    assert_eq!(consumer.position(&tp()).expect("position"), 1);

    // A poll waits at the LSO; the COMMIT marker wakes it (whether it
    // lands before or during the wait).
    let waiting = std::thread::spawn(move || {
        let records = consumer.poll(GUARD).expect("poll");
        let seen: Vec<_> = records.iter().map(|r| r.offset()).collect();
        (seen, consumer)
    });
    let commit = f.marker(9, true);
    let (seen, mut consumer) = waiting.join().expect("poll thread");
    assert_eq!(seen, [1]);
    assert!(poll(&mut consumer).is_empty());
    assert_eq!(consumer.position(&tp()).expect("position"), commit + 1);
}

#[test]
fn a_seek_into_an_aborted_transaction_skips_the_rest_of_it_under_read_committed() {
    let mut f = Fixture::new();
    f.txn(4, &["a", "b"]);
    f.txn(4, &["c"]);
    f.marker(4, false);
    f.plain(&["d"]);
    let mut committed = f.consumer(ReadCommitted, false);
    for from in [1, 2] {
        committed.seek(&tp(), from).expect("seek");
        assert_eq!(values(&read_to_end(&mut committed)), ["d"], "from {from}");
    }
    let mut uncommitted = f.consumer(ReadUncommitted, false);
    uncommitted.seek(&tp(), 1).expect("seek");
    assert_eq!(values(&read_to_end(&mut uncommitted)), ["b", "c", "d"]);
}

#[test]
fn isolation_level_by_kafka_name() {
    let config = ConsumerConfig::builder()
        .set("isolation.level", " read_committed ")
        .expect("set")
        .build()
        .expect("config");
    assert_eq!(config.isolation_level(), ReadCommitted);
    let config = ConsumerConfig::builder()
        .set("isolation.level", "read_uncommitted")
        .expect("set")
        .build()
        .expect("config");
    assert_eq!(config.isolation_level(), ReadUncommitted);
    assert_eq!(ConsumerConfig::default().isolation_level(), ReadUncommitted);
    let err = ConsumerConfig::builder()
        .set("isolation.level", "READ_COMMITTED")
        .unwrap_err();
    assert!(err.to_string().contains("isolation.level"), "{err}");
}

/// One step of the model test on one partition.
#[derive(Debug, Clone)]
enum Op {
    /// Producer `p` appends a batch of `n` records to its transaction,
    /// beginning one if none is open; gzip-compressed if the flag is set.
    Append(usize, usize, bool),
    /// Producer `p` commits (true) or aborts its open transaction, if any.
    End(usize, bool),
    /// A batch of `n` records outside transactions.
    Plain(usize),
    /// Each consumer polls once.
    Poll,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 1..4usize, any::<bool>()).prop_map(|(p, n, z)| Op::Append(p, n, z)),
        3 => (0..3usize, any::<bool>()).prop_map(|(p, c)| Op::End(p, c)),
        2 => (1..3usize).prop_map(Op::Plain),
        2 => Just(Op::Poll),
    ]
}

/// What the partition holds: every data record's offset, value and
/// transaction (`None` outside one), and each transaction's outcome.
#[derive(Debug, Default)]
struct Model {
    next_offset: u64,
    records: Vec<(u64, String, Option<usize>)>,
    /// Per transaction: `None` while open, else whether it committed.
    outcomes: Vec<Option<bool>>,
    /// Each producer's open transaction and its first offset.
    open: BTreeMap<usize, (usize, u64)>,
}

impl Model {
    /// The last stable offset: the first offset of the oldest open
    /// transaction, else the log end (a single broker's high watermark).
    fn lso(&self) -> u64 {
        self.open
            .values()
            .map(|&(_, first)| first)
            .min()
            .unwrap_or(self.next_offset)
    }

    /// What a consumer at `isolation` returns, in offset order.
    fn expected(&self, isolation: IsolationLevel) -> Seen {
        let lso = self.lso();
        self.records
            .iter()
            .filter(|(offset, _, txn)| match isolation {
                ReadUncommitted => true,
                ReadCommitted => {
                    *offset < lso && txn.is_none_or(|t| self.outcomes[t] == Some(true))
                }
            })
            .map(|(offset, value, _)| (*offset, value.clone()))
            .collect()
    }
}

fn run(ops: &[Op], max_poll_records: usize, small_segments: bool) {
    let mut f = Fixture::with_segment_bytes(small_segments.then_some(256));
    let mut model = Model::default();
    // Read committed and uncommitted, each with whole fetches and with
    // one-batch fetches that split transactions across fetches.
    let mut consumers: Vec<(IsolationLevel, Consumer, Seen)> = Vec::new();
    for isolation in [ReadCommitted, ReadUncommitted] {
        for fetch_bytes in [1 << 20, 1] {
            let config = Fixture::config(isolation)
                .max_partition_fetch_bytes(fetch_bytes)
                .max_poll_records(max_poll_records);
            consumers.push((isolation, f.consumer_with(config), Vec::new()));
        }
    }
    for op in ops {
        match *op {
            Op::Append(p, n, compressed) => {
                let pid = 2000 + p as i64;
                let txn = match model.open.get(&p) {
                    Some(&(txn, _)) => txn,
                    None => {
                        model.outcomes.push(None);
                        let txn = model.outcomes.len() - 1;
                        model.open.insert(p, (txn, model.next_offset));
                        txn
                    }
                };
                let values: Vec<String> = (0..n)
                    .map(|i| format!("p{p}@{}", model.next_offset + i as u64))
                    .collect();
                let refs: Vec<&str> = values.iter().map(String::as_str).collect();
                let compression = if compressed {
                    Compression::Gzip
                } else {
                    Compression::None
                };
                assert_eq!(f.txn_compressed(pid, &refs, compression), model.next_offset);
                for value in values {
                    model.records.push((model.next_offset, value, Some(txn)));
                    model.next_offset += 1;
                }
            }
            Op::End(p, commit) => {
                if let Some((txn, _)) = model.open.remove(&p) {
                    assert_eq!(f.marker(2000 + p as i64, commit), model.next_offset);
                    model.outcomes[txn] = Some(commit);
                    model.next_offset += 1;
                }
            }
            Op::Plain(n) => {
                let values: Vec<String> = (0..n)
                    .map(|i| format!("plain@{}", model.next_offset + i as u64))
                    .collect();
                let refs: Vec<&str> = values.iter().map(String::as_str).collect();
                assert_eq!(f.plain(&refs), model.next_offset);
                for value in values {
                    model.records.push((model.next_offset, value, None));
                    model.next_offset += 1;
                }
            }
            Op::Poll => {
                for (_, consumer, seen) in &mut consumers {
                    seen.extend(poll(consumer));
                }
            }
        }
    }
    for (isolation, consumer, seen) in &mut consumers {
        seen.extend(read_to_end(consumer));
        assert_eq!(*seen, model.expected(*isolation), "{isolation:?}");
        let end = match isolation {
            ReadCommitted => model.lso(),
            ReadUncommitted => model.next_offset,
        };
        assert_eq!(consumer.end_offsets(&[tp()]).expect("end")[&tp()], end);
        assert_eq!(consumer.position(&tp()).expect("position"), end);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random transactions of three producers, aborted or committed or
    /// left open, among records outside transactions, with polls between,
    /// in one segment or many small ones: each consumer (read_committed and
    /// read_uncommitted, with whole and one-batch fetches, 1 to 3 records a
    /// poll) returns exactly what its isolation level lets through, in
    /// offset order, and stops at the partition's end for it.
    #[test]
    fn consumers_return_what_their_isolation_level_allows(
        ops in proptest::collection::vec(op(), 0..40),
        max_poll_records in 1..4usize,
        small_segments in any::<bool>(),
    ) {
        run(&ops, max_poll_records, small_segments);
    }
}
