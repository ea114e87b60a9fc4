//! The consumer's API: `Duration` and `u64` settings
//! and `set` by Kafka name; `enable.partition.eof` (a model test, with a
//! group and with manual assignment); and the documented behaviour of a
//! subscription to a topic that does not exist and of `auto.offset.reset`
//! on an out-of-range position.

use std::collections::BTreeMap;
use std::time::Duration;

use logbus::format::BatchBuilder;
use logbus::{
    Clock, Cluster, Compression, Consumer, ConsumerConfig, ConsumerRecords, Error, NewTopic,
    OffsetAndMetadata, OffsetReset, TopicPartition,
};
use proptest::prelude::*;

const T0: i64 = 1_700_000_000_000;

/// A poll timeout no test waits out: with a manual clock that never moves,
/// a poll given it returns only because it had something to return.
const FOREVER: Duration = Duration::from_secs(24 * 3600);

mod common;

use common::Fixture;

fn fixture() -> Fixture {
    common::fixture_at(T0)
}

fn tp(topic: &str, partition: u32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

/// Appends `n` records (one batch) to `topic`'s `partition`.
/// Creates `topic` with one partition and returns it.
fn one_partition(cluster: &Cluster, topic: &str) -> logbus::Partition {
    cluster
        .create_topic(NewTopic::new(topic, 1))
        .unwrap()
        .partition(0)
        .unwrap()
}

fn produce(cluster: &Cluster, topic: &str, partition: u32, n: usize) {
    let mut batch = BatchBuilder::new(Compression::None);
    for i in 0..n {
        batch.append(T0, None, Some(format!("v{i}").as_bytes()), &[]);
    }
    cluster
        .topic(topic)
        .unwrap()
        .partition(partition)
        .unwrap()
        .append(&mut batch.build().unwrap().to_vec())
        .unwrap();
}

fn offsets_of(records: &ConsumerRecords, partition: &TopicPartition) -> Vec<u64> {
    records
        .records(partition)
        .iter()
        .map(|r| r.offset())
        .collect()
}

// ---- settings ----

#[test]
fn typed_setters_and_set_store_the_same_values() {
    let typed = ConsumerConfig::builder()
        .fetch_min_bytes(10)
        .fetch_max_wait(Duration::from_millis(250))
        .max_partition_fetch_bytes(4096)
        .fetch_max_bytes(8192)
        .session_timeout(Duration::from_secs(10))
        .heartbeat_interval(Duration::from_secs(1))
        .max_poll_interval(Duration::from_secs(60))
        .auto_commit_interval(Duration::from_millis(1500))
        .enable_partition_eof(true)
        .max_poll_records(7)
        .auto_offset_reset(OffsetReset::Earliest)
        .check_crcs(false)
        .enable_auto_commit(false)
        .group_id("g")
        .group_instance_id("i")
        .client_id("c")
        .partition_assignment_strategy(["roundrobin", "range"])
        .build()
        .unwrap();
    let mut by_name = ConsumerConfig::builder();
    for (name, value) in [
        ("fetch.min.bytes", "10"),
        ("fetch.max.wait.ms", "250"),
        ("max.partition.fetch.bytes", "4096"),
        ("fetch.max.bytes", " 8192 "),
        ("session.timeout.ms", "10000"),
        ("heartbeat.interval.ms", "1000"),
        ("max.poll.interval.ms", "60000"),
        ("auto.commit.interval.ms", "1500"),
        ("enable.partition.eof", "true"),
        ("max.poll.records", "7"),
        ("auto.offset.reset", "earliest"),
        ("check.crcs", "false"),
        ("enable.auto.commit", "false"),
        ("group.id", "g"),
        ("group.instance.id", "i"),
        ("client.id", "c"),
        ("partition.assignment.strategy", "roundrobin, range"),
    ] {
        by_name = by_name.set(name, value).unwrap();
    }
    let by_name = by_name.build().unwrap();
    let view = |c: &ConsumerConfig| {
        (
            (
                c.fetch_min_bytes(),
                c.fetch_max_wait(),
                c.max_partition_fetch_bytes(),
                c.fetch_max_bytes(),
                c.session_timeout(),
                c.heartbeat_interval(),
                c.max_poll_interval(),
                c.auto_commit_interval(),
            ),
            (
                c.enable_partition_eof(),
                c.max_poll_records(),
                c.auto_offset_reset(),
                c.check_crcs(),
                c.enable_auto_commit(),
                c.group_id().map(str::to_owned),
                c.group_instance_id().map(str::to_owned),
                c.client_id().map(str::to_owned),
                c.assignors()
                    .iter()
                    .map(|a| a.name().to_string())
                    .collect::<Vec<_>>(),
            ),
        )
    };
    assert_eq!(view(&typed), view(&by_name));
    assert_eq!(view(&typed).1.8, ["roundrobin", "range"]);
}

#[test]
fn defaults_are_kafkas() {
    let c = ConsumerConfig::default();
    assert_eq!(c.fetch_max_wait(), Duration::from_millis(500));
    assert_eq!(c.session_timeout(), Duration::from_secs(45));
    assert_eq!(c.heartbeat_interval(), Duration::from_secs(3));
    assert_eq!(c.max_poll_interval(), Duration::from_secs(300));
    assert_eq!(c.auto_commit_interval(), Duration::from_secs(5));
    assert_eq!(c.fetch_min_bytes(), 1);
    assert_eq!(c.max_partition_fetch_bytes(), 1 << 20);
    assert_eq!(c.fetch_max_bytes(), 50 << 20);
    assert!(!c.enable_partition_eof());
}

#[test]
fn durations_are_kept_to_the_millisecond_rounded_down_and_saturate() {
    let c = ConsumerConfig::builder()
        .fetch_max_wait(Duration::from_micros(1_999))
        .auto_commit_interval(Duration::from_nanos(1_000_999_999))
        .build()
        .unwrap();
    assert_eq!(c.fetch_max_wait(), Duration::from_millis(1));
    assert_eq!(c.auto_commit_interval(), Duration::from_millis(1_000));
    // Below a millisecond is 0 ms: refused where 0 is.
    let err = ConsumerConfig::builder()
        .auto_commit_interval(Duration::from_micros(999))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("auto.commit.interval.ms"), "{err}");
    // Beyond i64::MAX ms saturates, then is refused as above i32::MAX.
    let err = ConsumerConfig::builder()
        .max_poll_interval(Duration::MAX)
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidConfig(m) if m.contains("max.poll.interval.ms") && m.contains(&i64::MAX.to_string())),
        "{err}"
    );
    // The largest value Kafka's int holds is accepted.
    let c = ConsumerConfig::builder()
        .fetch_max_bytes(i32::MAX as u64)
        .fetch_max_wait(Duration::from_millis(i32::MAX as u64))
        .build()
        .unwrap();
    assert_eq!(c.fetch_max_bytes(), i32::MAX as u64);
    assert_eq!(c.fetch_max_wait(), Duration::from_millis(i32::MAX as u64));
}

#[test]
fn set_refuses_unknown_names_and_bad_values_naming_the_setting() {
    let err = ConsumerConfig::builder()
        .set("fetch.max.wait", "5")
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidConfig(m) if m.contains("unknown consumer config \"fetch.max.wait\"") && m.contains("fetch.max.wait.ms")),
        "{err}"
    );
    // Every name the error lists is one `set` knows.
    let listed = err.to_string();
    let listed = listed
        .split("supported: ")
        .nth(1)
        .unwrap()
        .trim_end_matches(')');
    assert_eq!(listed.split(", ").count(), 18);
    for name in listed.split(", ") {
        let err = ConsumerConfig::builder().set(name, "?").map(|_| ());
        assert!(
            !matches!(&err, Err(Error::InvalidConfig(m)) if m.contains("unknown")),
            "{name}: {err:?}"
        );
    }
    for (name, value) in [
        ("fetch.max.wait.ms", "-1"),
        ("fetch.max.wait.ms", "1.5"),
        ("session.timeout.ms", ""),
        ("fetch.min.bytes", "1k"),
        ("max.poll.records", "-3"),
        ("enable.partition.eof", "yes"),
        ("check.crcs", "1"),
        ("auto.offset.reset", "smallest"),
        ("isolation.level", "read_committed_only"),
    ] {
        let err = ConsumerConfig::builder().set(name, value).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidConfig(m) if m.contains(name)),
            "{name}={value:?}: {err}"
        );
    }
    // Ranges are checked by build, as for the typed setters.
    let err = ConsumerConfig::builder()
        .set("fetch.max.bytes", "2147483648")
        .unwrap()
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("fetch.max.bytes"), "{err}");
}

// ---- offset maps ----

#[test]
fn offset_maps_are_btree_maps_in_partition_order() {
    let f = fixture();
    f.cluster.create_topic(NewTopic::new("t", 3)).unwrap();
    for p in 0..3 {
        produce(&f.cluster, "t", p, 2 + p as usize);
    }
    let config = ConsumerConfig::builder().group_id("g").build().unwrap();
    let consumer = Consumer::new(&f.cluster, config).unwrap();
    let all = [tp("t", 2), tp("t", 0), tp("t", 1)];
    let end: BTreeMap<TopicPartition, u64> = consumer.end_offsets(&all).unwrap();
    assert_eq!(
        end.into_iter().collect::<Vec<_>>(),
        [(tp("t", 0), 2), (tp("t", 1), 3), (tp("t", 2), 4)]
    );
    let start: BTreeMap<TopicPartition, u64> = consumer.beginning_offsets(&all).unwrap();
    assert!(start.values().all(|&o| o == 0));
    let found = consumer
        .offsets_for_times(&BTreeMap::from([(tp("t", 1), T0)]))
        .unwrap();
    assert_eq!(found[&tp("t", 1)].map(|f| f.offset()), Some(0));
    f.cluster
        .alter_group_offsets(
            "g",
            &BTreeMap::from([(tp("t", 1), OffsetAndMetadata::new(1))]),
        )
        .unwrap();
    let committed: BTreeMap<TopicPartition, OffsetAndMetadata> = consumer.committed(&all).unwrap();
    assert_eq!(committed.keys().collect::<Vec<_>>(), [&tp("t", 1)]);
}

// ---- enable.partition.eof ----

#[test]
fn partition_eof_is_off_by_default() {
    let f = fixture();
    f.cluster.create_topic(NewTopic::new("t", 1)).unwrap();
    produce(&f.cluster, "t", 0, 3);
    let config = ConsumerConfig::builder()
        .auto_offset_reset(OffsetReset::Earliest)
        .build()
        .unwrap();
    let mut c = Consumer::new(&f.cluster, config).unwrap();
    c.assign(&[tp("t", 0)]).unwrap();
    let records = c.poll(Duration::ZERO).unwrap();
    assert_eq!(records.count(), 3);
    assert!(records.partition_eofs().is_empty());
    let records = c.poll(Duration::ZERO).unwrap();
    assert!(records.is_empty() && records.partition_eofs().is_empty());
}

#[test]
fn an_empty_partition_reports_its_end_at_once_and_again_after_a_seek() {
    let f = fixture();
    f.cluster.create_topic(NewTopic::new("t", 2)).unwrap();
    produce(&f.cluster, "t", 1, 2);
    let config = ConsumerConfig::builder()
        .set("enable.partition.eof", "true")
        .unwrap()
        .auto_offset_reset(OffsetReset::Earliest)
        .max_poll_records(1)
        .build()
        .unwrap();
    let mut c = Consumer::new(&f.cluster, config).unwrap();
    c.assign(&[tp("t", 0), tp("t", 1)]).unwrap();
    // Partition 0 is empty: its end comes with the first poll's record.
    let records = c.poll(FOREVER).unwrap();
    assert_eq!(offsets_of(&records, &tp("t", 1)), [0]);
    assert_eq!(records.partition_eofs(), [(tp("t", 0), 0)]);
    // The last record of partition 1 comes with its end.
    let records = c.poll(FOREVER).unwrap();
    assert_eq!(offsets_of(&records, &tp("t", 1)), [1]);
    assert_eq!(records.partition_eofs(), [(tp("t", 1), 2)]);
    // Nothing more: a poll waits out its timeout (the clock is manual).
    let records = c.poll(Duration::ZERO).unwrap();
    assert!(records.is_empty() && records.partition_eofs().is_empty());
    // A seek to the end reports the end again, at once.
    c.seek(&tp("t", 1), 2).unwrap();
    let records = c.poll(FOREVER).unwrap();
    assert!(records.is_empty());
    assert_eq!(records.partition_eofs(), [(tp("t", 1), 2)]);
    // seek_to_end of an empty partition too, and a re-assignment keeps the
    // partitions' state: no new report for partition 1.
    c.seek_to_end(&[tp("t", 0)]).unwrap();
    c.assign(&[tp("t", 1), tp("t", 0)]).unwrap();
    let records = c.poll(FOREVER).unwrap();
    assert_eq!(records.partition_eofs(), [(tp("t", 0), 0)]);
    // A paused partition at its end is reported once resumed.
    produce(&f.cluster, "t", 0, 1);
    c.pause(&[tp("t", 1)]).unwrap();
    c.seek(&tp("t", 1), 2).unwrap();
    let records = c.poll(FOREVER).unwrap();
    assert_eq!(offsets_of(&records, &tp("t", 0)), [0]);
    assert_eq!(records.partition_eofs(), [(tp("t", 0), 1)]);
    assert!(c.poll(Duration::ZERO).unwrap().partition_eofs().is_empty());
    c.resume(&[tp("t", 1)]).unwrap();
    let records = c.poll(FOREVER).unwrap();
    assert_eq!(records.partition_eofs(), [(tp("t", 1), 2)]);
}

#[test]
fn a_waiting_poll_returns_records_appended_after_the_end_then_the_end_again() {
    let f = fixture();
    f.cluster.create_topic(NewTopic::new("t", 1)).unwrap();
    let config = ConsumerConfig::builder()
        .enable_partition_eof(true)
        .build()
        .unwrap();
    let mut c = Consumer::new(&f.cluster, config).unwrap();
    c.assign(&[tp("t", 0)]).unwrap();
    assert_eq!(c.poll(FOREVER).unwrap().partition_eofs(), [(tp("t", 0), 0)]);
    let cluster = f.cluster.clone();
    let producer = std::thread::spawn(move || produce(&cluster, "t", 0, 2));
    // With a manual clock this poll can only return because records came.
    let mut seen = Vec::new();
    let mut eofs = Vec::new();
    while eofs.is_empty() {
        let records = c.poll(FOREVER).unwrap();
        seen.extend(offsets_of(&records, &tp("t", 0)));
        eofs.extend_from_slice(records.partition_eofs());
    }
    producer.join().unwrap();
    assert_eq!(seen, [0, 1]);
    assert_eq!(eofs, [(tp("t", 0), 2)]);
    assert_eq!(f.clock.now_ms(), T0);
}

/// One step of the model test.
#[derive(Debug, Clone)]
enum Op {
    /// Appends `n` records to partition `p`.
    Produce { p: u32, n: usize },
    /// Polls without waiting (a wrong implementation fails the model
    /// rather than hang; the tests above show that a poll with only
    /// signals to deliver does not wait).
    Poll,
    /// Seeks partition `p` to `pick % (high watermark + 1)`.
    Seek { p: u32, pick: u64 },
    /// Pauses or resumes partition `p`.
    TogglePause { p: u32 },
}

const PARTITIONS: u32 = 3;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..PARTITIONS, 1usize..6).prop_map(|(p, n)| Op::Produce { p, n }),
        6 => Just(Op::Poll),
        1 => (0..PARTITIONS, any::<u64>()).prop_map(|(p, pick)| Op::Seek { p, pick }),
        1 => (0..PARTITIONS).prop_map(|p| Op::TogglePause { p }),
    ]
}

/// What the consumer must report: per partition, the high watermark, the
/// position, whether it is paused, and the position its end was last
/// reported at since the position was last set.
#[derive(Debug, Default, Clone, Copy)]
struct PartitionModel {
    end: u64,
    position: u64,
    paused: bool,
    reported_at: Option<u64>,
}

impl PartitionModel {
    fn owes_eof(&self) -> bool {
        !self.paused && self.position == self.end && self.reported_at != Some(self.position)
    }

    fn has_something(&self) -> bool {
        !self.paused && (self.position < self.end || self.owes_eof())
    }
}

struct Harness {
    f: Fixture,
    consumer: Consumer,
    model: Vec<PartitionModel>,
}

impl Harness {
    fn new(group: bool) -> Harness {
        let f = fixture();
        f.cluster
            .create_topic(NewTopic::new("t", PARTITIONS))
            .unwrap();
        let mut builder = ConsumerConfig::builder()
            .enable_partition_eof(true)
            .auto_offset_reset(OffsetReset::Earliest)
            .max_poll_records(4);
        if group {
            builder = builder.group_id("g").enable_auto_commit(false);
        }
        let consumer = Consumer::new(&f.cluster, builder.build().unwrap()).unwrap();
        let mut h = Harness {
            model: vec![PartitionModel::default(); PARTITIONS as usize],
            consumer,
            f,
        };
        if group {
            h.consumer.subscribe(["t"]).unwrap();
            // Join: every poll on the way is checked too (partitions are
            // reported at their ends from the poll that assigns them).
            for _ in 0..20 {
                h.poll(Duration::ZERO);
                if h.consumer.assignment().len() == PARTITIONS as usize {
                    break;
                }
            }
            assert_eq!(h.consumer.assignment().len(), PARTITIONS as usize);
        } else {
            let all: Vec<_> = (0..PARTITIONS).map(|p| tp("t", p)).collect();
            h.consumer.assign(&all).unwrap();
        }
        h
    }

    fn poll(&mut self, timeout: Duration) {
        let records = self.consumer.poll(timeout).unwrap();
        for partition in records.partitions() {
            let m = &mut self.model[partition.partition as usize];
            assert!(!m.paused, "records of paused {partition}");
            let got = offsets_of(&records, partition);
            let expected: Vec<u64> = (m.position..m.position + got.len() as u64).collect();
            assert_eq!(got, expected, "records of {partition}");
            m.position += got.len() as u64;
        }
        let mut expected = Vec::new();
        for partition in self.consumer.assignment() {
            let m = &mut self.model[partition.partition as usize];
            if m.owes_eof() {
                expected.push((partition.clone(), m.position));
                m.reported_at = Some(m.position);
            }
        }
        let mut got = records.partition_eofs().to_vec();
        got.sort();
        expected.sort();
        assert_eq!(got, expected, "end-of-partition signals");
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Produce { p, n } => {
                produce(&self.f.cluster, "t", p, n);
                self.model[p as usize].end += n as u64;
            }
            Op::Poll => self.poll(Duration::ZERO),
            Op::Seek { p, pick } => {
                let m = &mut self.model[p as usize];
                m.position = pick % (m.end + 1);
                m.reported_at = None;
                self.consumer.seek(&tp("t", p), m.position).unwrap();
            }
            Op::TogglePause { p } => {
                let m = &mut self.model[p as usize];
                m.paused = !m.paused;
                let partition = [tp("t", p)];
                if m.paused {
                    self.consumer.pause(&partition).unwrap();
                } else {
                    self.consumer.resume(&partition).unwrap();
                }
            }
        }
    }

    /// Resumes everything and polls until the model has nothing left to
    /// deliver: every partition is then reported at its end, once.
    fn catch_up(&mut self) {
        let all: Vec<_> = (0..PARTITIONS).map(|p| tp("t", p)).collect();
        self.consumer.resume(&all).unwrap();
        for m in &mut self.model {
            m.paused = false;
        }
        let most = self.model.iter().map(|m| m.end).sum::<u64>() + 2;
        for _ in 0..most {
            if !self.model.iter().any(PartitionModel::has_something) {
                break;
            }
            self.poll(Duration::ZERO);
        }
        for (p, m) in self.model.iter().enumerate() {
            assert_eq!(m.position, m.end, "partition {p} caught up");
            assert_eq!(m.reported_at, Some(m.end), "partition {p} reported");
        }
        // Nothing more to say.
        self.poll(Duration::ZERO);
    }
}

fn run_model(group: bool, ops: &[Op]) {
    let mut h = Harness::new(group);
    for op in ops {
        h.apply(op);
    }
    h.catch_up();
    // One more round after catching up: reported again only once more.
    h.apply(&Op::Produce { p: 1, n: 2 });
    h.catch_up();
    if group {
        h.consumer.close().unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn partition_eof_model_with_manual_assignment(ops in prop::collection::vec(op(), 0..40)) {
        run_model(false, &ops);
    }

    #[test]
    fn partition_eof_model_with_a_group(ops in prop::collection::vec(op(), 0..40)) {
        run_model(true, &ops);
    }
}

#[test]
fn records_produced_in_rounds_report_the_end_exactly_when_caught_up() {
    for group in [false, true] {
        let rounds = [
            vec![Op::Poll],
            vec![
                Op::Produce { p: 0, n: 5 },
                Op::Produce { p: 2, n: 3 },
                Op::Poll,
                Op::Poll,
                Op::Poll,
            ],
            vec![Op::Produce { p: 0, n: 1 }, Op::Poll, Op::Poll],
            vec![
                Op::Produce { p: 1, n: 9 },
                Op::Produce { p: 1, n: 2 },
                Op::Poll,
                Op::Produce { p: 1, n: 1 },
                Op::Poll,
                Op::Poll,
                Op::Poll,
                Op::Poll,
            ],
        ];
        let ops: Vec<Op> = rounds.into_iter().flatten().collect();
        run_model(group, &ops);
    }
}

// ---- documented behaviour: missing topics and auto.offset.reset ----

#[test]
fn a_subscription_to_a_missing_topic_is_silent_until_the_topic_is_created() {
    for reset in [OffsetReset::Earliest, OffsetReset::Latest] {
        let f = fixture();
        f.cluster.create_topic(NewTopic::new("other", 1)).unwrap();
        let config = ConsumerConfig::builder()
            .group_id("g")
            .auto_offset_reset(reset)
            .build()
            .unwrap();
        let mut c = Consumer::new(&f.cluster, config).unwrap();
        c.subscribe(["later"]).unwrap();
        // No error: the member joins with no partitions; nothing is
        // created.
        let records = c.poll(Duration::ZERO).unwrap();
        assert!(records.is_empty());
        assert!(c.generation().is_some());
        assert!(c.assignment().is_empty());
        assert_eq!(c.subscription(), ["later"]);
        assert!(matches!(
            f.cluster.topic("later"),
            Err(Error::UnknownTopicOrPartition { .. })
        ));
        // Created (and written to) between two polls: the next poll
        // rebalances and assigns its partitions.
        f.cluster.create_topic(NewTopic::new("later", 2)).unwrap();
        produce(&f.cluster, "later", 0, 3);
        let records = c.poll(Duration::ZERO).unwrap();
        let mut assigned = c.assignment();
        assigned.sort();
        assert_eq!(assigned, [tp("later", 0), tp("later", 1)]);
        // Positions come from auto.offset.reset (there is no committed
        // offset) when the partitions are assigned, not when the topic was
        // created: with latest, the records written before are skipped.
        let got = offsets_of(&records, &tp("later", 0));
        match reset {
            OffsetReset::Earliest => assert_eq!(got, [0, 1, 2]),
            _ => {
                assert!(got.is_empty());
                assert_eq!(c.position(&tp("later", 0)).unwrap(), 3);
            }
        }
        produce(&f.cluster, "later", 0, 1);
        let records = c.poll(Duration::ZERO).unwrap();
        assert_eq!(offsets_of(&records, &tp("later", 0)), [3]);
        c.close().unwrap();
    }
}

#[test]
fn auto_offset_reset_moves_an_out_of_range_position_at_the_next_fetch() {
    let t0 = tp("t", 0);
    for (reset, reset_to) in [(OffsetReset::Earliest, 4), (OffsetReset::Latest, 10)] {
        let f = fixture();
        let partition = one_partition(&f.cluster, "t");
        produce(&f.cluster, "t", 0, 10);
        partition.delete_records(4).unwrap();
        let config = ConsumerConfig::builder()
            .auto_offset_reset(reset)
            .enable_partition_eof(true)
            .build()
            .unwrap();
        let mut c = Consumer::new(&f.cluster, config).unwrap();
        c.assign(std::slice::from_ref(&t0)).unwrap();
        // Below the log start, and above the high watermark: both reset
        // to the same offset.
        for seek in [1, 11] {
            c.seek(&t0, seek).unwrap();
            // Not at the seek, nor at position(): only a fetch finds it out
            // of range.
            assert_eq!(c.position(&t0).unwrap(), seek);
            let records = c.poll(Duration::ZERO).unwrap();
            let got = offsets_of(&records, &t0);
            assert_eq!(
                got,
                (reset_to..10).collect::<Vec<_>>(),
                "{reset:?} from {seek}"
            );
            assert_eq!(records.partition_eofs(), [(t0.clone(), 10)]);
            assert_eq!(c.position(&t0).unwrap(), 10);
        }
        // The high watermark itself is in range: no reset.
        c.seek(&t0, 10).unwrap();
        produce(&f.cluster, "t", 0, 1);
        let records = c.poll(Duration::ZERO).unwrap();
        assert_eq!(offsets_of(&records, &t0), [10]);
    }
}

#[test]
fn an_out_of_range_committed_offset_is_reset_too() {
    let f = fixture();
    let partition = one_partition(&f.cluster, "t");
    produce(&f.cluster, "t", 0, 6);
    let t0 = tp("t", 0);
    f.cluster
        .alter_group_offsets(
            "g",
            &BTreeMap::from([(t0.clone(), OffsetAndMetadata::new(2))]),
        )
        .unwrap();
    partition.delete_records(5).unwrap();
    let config = ConsumerConfig::builder()
        .group_id("g")
        .auto_offset_reset(OffsetReset::Earliest)
        .build()
        .unwrap();
    let mut c = Consumer::new(&f.cluster, config).unwrap();
    c.assign(std::slice::from_ref(&t0)).unwrap();
    assert_eq!(c.position(&t0).unwrap(), 2);
    let records = c.poll(Duration::ZERO).unwrap();
    assert_eq!(offsets_of(&records, &t0), [5]);
    // With none, the poll fails and the position stays until a seek.
    let config = ConsumerConfig::builder()
        .group_id("g")
        .auto_offset_reset(OffsetReset::None)
        .build()
        .unwrap();
    let mut c = Consumer::new(&f.cluster, config).unwrap();
    c.assign(std::slice::from_ref(&t0)).unwrap();
    for _ in 0..2 {
        assert!(matches!(
            c.poll(Duration::ZERO),
            Err(Error::NoOffsetForPartition { partition: 0, .. })
        ));
        assert_eq!(c.position(&t0).unwrap(), 2);
    }
    c.seek(&t0, 5).unwrap();
    assert_eq!(offsets_of(&c.poll(Duration::ZERO).unwrap(), &t0), [5]);
}
