//! The consumer releases the pages of the log it has read past.

use std::time::Duration;

use crate::cluster::RELEASE_CHUNK;
use crate::format::BatchBuilder;
use crate::{
    Cluster, ClusterConfig, Compression, Consumer, ConsumerConfig, NewTopic, OffsetReset,
    TopicPartition,
};

const VALUE: usize = 1000;
const PER_BATCH: usize = 64;

fn value(offset: u64) -> Vec<u8> {
    (0..VALUE)
        .map(|i| (offset as usize * 31 + i) as u8)
        .collect()
}

/// Resident kB of the mappings of `path` in this process, from
/// `/proc/self/smaps`.
#[cfg(target_os = "linux")]
fn resident_kb_of(path: &std::path::Path) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
    let name = path.to_str().expect("utf-8 path");
    let mut inside = false;
    let mut total = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            inside = line.trim_end().ends_with(name);
        } else if inside && let Some(kb) = line.strip_prefix("Rss:") {
            total += kb
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .expect("kB");
        }
    }
    total
}

#[test]
fn records_kept_from_early_polls_stay_valid_after_reading_far_past_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = Cluster::open(dir.path(), ClusterConfig::default()).expect("cluster");
    let partition = cluster
        .create_topic(NewTopic::new("big", 1))
        .expect("topic")
        .partition(0)
        .expect("partition");
    // Four release chunks of records.
    let records = (4 * RELEASE_CHUNK / VALUE) as u64;
    let mut offset = 0;
    while offset < records {
        let mut batch = BatchBuilder::new(Compression::None);
        for i in 0..PER_BATCH as u64 {
            batch.append(1_700_000_000_000, None, Some(&value(offset + i)), &[]);
        }
        partition
            .append(&mut batch.build().expect("batch").to_vec())
            .expect("append");
        offset += PER_BATCH as u64;
    }
    let config = ConsumerConfig::builder()
        .auto_offset_reset(OffsetReset::Earliest)
        .build()
        .expect("config");
    let mut consumer = Consumer::new(&cluster, config).expect("consumer");
    consumer
        .assign(&[TopicPartition::new("big", 0)])
        .expect("assign");

    let early: Vec<_> = consumer
        .poll(Duration::ZERO)
        .expect("poll")
        .into_iter()
        .collect();
    assert!(!early.is_empty());
    let mut next = early.len() as u64;
    let mut kept = Vec::new();
    while next < offset {
        let polled = consumer.poll(Duration::ZERO).expect("poll");
        assert!(!polled.is_empty(), "ran dry at {next}");
        for record in polled {
            assert_eq!(record.offset(), next);
            assert_eq!(record.value().expect("value")[..], value(next)[..]);
            if next.is_multiple_of(5000) {
                kept.push(record);
            }
            next += 1;
        }
    }

    // Having read the whole log, the consumer holds little of it resident.
    #[cfg(target_os = "linux")]
    {
        let segment = dir.path().join("broker-0/big-0/00000000000000000000.log");
        let log_kb = std::fs::metadata(&segment).expect("segment").len() / 1024;
        let resident = resident_kb_of(&segment);
        assert!(
            resident < log_kb / 2,
            "{resident} kB of a {log_kb} kB log resident"
        );
    }

    // The records kept from before the releases read as they did.
    for record in early.iter().chain(&kept) {
        assert_eq!(
            record.value().expect("value")[..],
            value(record.offset())[..],
            "offset {}",
            record.offset()
        );
    }
}

#[test]
#[cfg(feature = "gzip")]
fn a_record_is_small_and_shares_its_batch() {
    assert!(std::mem::size_of::<crate::ConsumerRecord>() <= 64);
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = Cluster::open(dir.path(), ClusterConfig::default()).expect("cluster");
    for (topic, compression) in [("plain", Compression::None), ("gz", Compression::Gzip)] {
        let partition = cluster
            .create_topic(NewTopic::new(topic, 1))
            .expect("topic")
            .partition(0)
            .expect("partition");
        let mut batch = BatchBuilder::new(compression);
        batch.append(1, Some(b"k0"), Some(b"v0"), &[]);
        batch.append(2, None, None, &[]);
        partition
            .append(&mut batch.build().expect("batch").to_vec())
            .expect("append");
        let mut consumer = Consumer::new(
            &cluster,
            ConsumerConfig::builder()
                .auto_offset_reset(OffsetReset::Earliest)
                .build()
                .expect("config"),
        )
        .expect("consumer");
        consumer
            .assign(&[TopicPartition::new(topic, 0)])
            .expect("assign");
        let records: Vec<_> = consumer
            .poll(Duration::ZERO)
            .expect("poll")
            .into_iter()
            .collect();
        assert_eq!(records.len(), 2, "{topic}");
        assert_eq!(records[0].key_bytes().as_deref(), Some(&b"k0"[..]));
        assert_eq!(records[0].value_bytes().as_deref(), Some(&b"v0"[..]));
        assert_eq!(
            (records[1].key_bytes(), records[1].value_bytes()),
            (None, None)
        );
        assert_eq!(records[0].clone(), records[0]);
        assert_ne!(records[0], records[1]);
        let (key, value, headers) = records[0].clone().into_parts();
        assert_eq!(
            (key.as_deref(), value.as_deref()),
            (Some(&b"k0"[..]), Some(&b"v0"[..]))
        );
        assert!(headers.is_empty());
        assert_eq!(records[1].clone().into_parts(), (None, None, Vec::new()));
    }
}

mod heartbeats {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use crate::{
        Clock, Cluster, ClusterConfig, Consumer, ConsumerConfig, ConsumerRebalanceListener,
        ManualClock, NewTopic, TopicPartition,
    };

    const T0: i64 = 1_700_000_000_000;

    fn cluster(clock: &ManualClock) -> (tempfile::TempDir, Cluster) {
        let dir = tempfile::tempdir().unwrap();
        let config = ClusterConfig::builder()
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap();
        let cluster = Cluster::open(dir.path(), config).unwrap();
        cluster.create_topic(NewTopic::new("t", 2)).unwrap();
        (dir, cluster)
    }

    fn member(cluster: &Cluster) -> Consumer {
        let config = ConsumerConfig::builder()
            .group_id("g")
            .session_timeout(Duration::from_millis(10_000))
            .heartbeat_interval(Duration::from_millis(1_000))
            .max_poll_interval(Duration::from_millis(30_000))
            .build()
            .unwrap();
        let mut consumer = Consumer::new(cluster, config).unwrap();
        consumer.subscribe(["t"]).unwrap();
        consumer.poll(Duration::ZERO).unwrap();
        assert_eq!(consumer.generation(), Some(1));
        consumer
    }

    #[derive(Debug, Default, Clone)]
    struct Lost(Arc<Mutex<Vec<TopicPartition>>>);

    impl ConsumerRebalanceListener for Lost {
        fn on_partitions_lost(&mut self, _: &mut Consumer, partitions: &[TopicPartition]) {
            self.0.lock().unwrap().extend_from_slice(partitions);
        }
    }

    #[test]
    fn the_heartbeat_thread_keeps_a_member_that_does_not_poll_in_its_group() {
        let clock = ManualClock::new(T0);
        let (_dir, cluster) = cluster(&clock);
        let mut consumer = member(&cluster);
        let lost = Lost::default();
        consumer.set_rebalance_listener(lost.clone());
        // 24 s without a poll: past the 10 s session, within the 30 s poll
        // interval. Only the thread's heartbeats keep the member in.
        for _ in 0..4 {
            clock.advance_ms(6_000);
            consumer.wait_for_heartbeat_at(clock.now_ms());
        }
        let snapshot = cluster.inner.groups.snapshot("g", clock.now_ms()).unwrap();
        assert_eq!(snapshot.members.len(), 1);
        consumer.poll(Duration::ZERO).unwrap();
        assert_eq!(consumer.generation(), Some(1));
        assert!(lost.0.lock().unwrap().is_empty());
    }

    #[test]
    fn a_member_that_stops_polling_leaves_and_finds_its_partitions_lost() {
        let clock = ManualClock::new(T0);
        let (_dir, cluster) = cluster(&clock);
        let mut consumer = member(&cluster);
        let lost = Lost::default();
        consumer.set_rebalance_listener(lost.clone());
        // 30 s exactly is still within max.poll.interval.ms.
        for _ in 0..5 {
            clock.advance_ms(6_000);
            consumer.wait_for_heartbeat_at(clock.now_ms());
        }
        assert!(cluster.inner.groups.snapshot("g", clock.now_ms()).is_some());
        clock.advance_ms(1);
        consumer.wait_for_heartbeat_at(clock.now_ms());
        // The thread sent the leave: the group is gone at once.
        assert!(cluster.inner.groups.snapshot("g", clock.now_ms()).is_none());
        // The next poll reports the partitions lost and joins afresh.
        consumer.poll(Duration::ZERO).unwrap();
        let mut gone = lost.0.lock().unwrap().clone();
        gone.sort();
        assert_eq!(
            gone,
            vec![TopicPartition::new("t", 0), TopicPartition::new("t", 1)]
        );
        assert_eq!(consumer.assignment().len(), 2);
        assert!(consumer.generation().is_some());
    }

    /// A consumer waiting inside one long `poll` is still polling: its
    /// heartbeat thread must not leave the group for it, however long the
    /// wait (Kafka restarts the poll timer on every pass of poll's loop).
    #[test]
    fn waiting_inside_poll_is_not_a_missed_poll() {
        let clock = ManualClock::new(T0);
        let (_dir, cluster) = cluster(&clock);
        let consumer = member(&cluster);
        let id = consumer.member_id().unwrap().to_string();
        // What poll's loop notes while it waits: inside, as of the start.
        consumer.note_poll(clock.now_ms(), true);
        for _ in 0..10 {
            clock.advance_ms(6_000);
            consumer.wait_for_heartbeat_at(clock.now_ms());
        }
        // 60 s inside poll, twice max.poll.interval.ms: still a member.
        let snapshot = cluster.inner.groups.snapshot("g", clock.now_ms()).unwrap();
        assert_eq!(snapshot.members.len(), 1);
        assert_eq!(snapshot.members[0].member_id, id);
        // Out of poll, the interval counts again.
        consumer.note_poll(clock.now_ms(), false);
        for _ in 0..6 {
            clock.advance_ms(6_000);
            consumer.wait_for_heartbeat_at(clock.now_ms());
        }
        assert!(cluster.inner.groups.snapshot("g", clock.now_ms()).is_none());
    }
}
