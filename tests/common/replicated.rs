//! Helpers of the failover tests: a 3-broker cluster with short session
//! and lag times, a topic of replication factor 3 and min ISR 2, and the
//! checks those tests share.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use logbus::{
    Acks, Cluster, ClusterConfig, ClusterConfigBuilder, Consumer, ConsumerConfig, NewTopic,
    OffsetReset, Producer, ProducerConfig, TopicConfig,
};

pub(crate) const GUARD: Duration = Duration::from_secs(60);
pub(crate) const TOPIC: &str = "t";

pub(crate) fn builder() -> ClusterConfigBuilder {
    ClusterConfig::builder()
        .brokers(3)
        .default_replication_factor(3)
        .broker_session_timeout(Duration::from_millis(500))
        .broker_heartbeat_interval(Duration::from_millis(100))
        .replica_lag_time_max(Duration::from_millis(500))
        .replica_fetch_wait_max(Duration::from_millis(100))
        .group_min_session_timeout(Duration::from_millis(500))
        .group_initial_rebalance_delay(Duration::ZERO)
}

pub(crate) fn create(cluster: &Cluster, partitions: u32) {
    let config = TopicConfig::new().min_insync_replicas(2).unwrap();
    cluster
        .create_topic(
            NewTopic::new(TOPIC, partitions)
                .replication_factor(3)
                .config(config),
        )
        .unwrap();
}

pub(crate) fn isr_complete(cluster: &Cluster) -> bool {
    cluster.describe_topic(TOPIC).is_ok_and(|d| {
        d.partitions
            .iter()
            .all(|p| p.leader.is_some() && p.isr.len() == p.replicas.len())
    })
}

pub(crate) fn leader(cluster: &Cluster, partition: u32) -> u32 {
    cluster.describe_topic(TOPIC).unwrap().partitions[partition as usize]
        .leader
        .unwrap()
}

pub(crate) fn acks_all(cluster: &Cluster) -> Producer {
    Producer::new(
        cluster,
        ProducerConfig::builder().acks(Acks::All).build().unwrap(),
    )
    .unwrap()
}

/// Makes the cluster create `__consumer_offsets` while every broker runs
/// (it is created at a group's first request, on live brokers only: with
/// one of three down a replication factor of 3 is refused).
pub(crate) fn create_offsets_topic(cluster: &Cluster) {
    let config = ConsumerConfig::builder().group_id("g").build().unwrap();
    let mut consumer = Consumer::new(cluster, config).unwrap();
    consumer.subscribe([TOPIC]).unwrap();
    consumer.poll(Duration::ZERO).unwrap();
    consumer.close().unwrap();
    assert!(cluster.topic("__consumer_offsets").is_ok());
}

/// Consumes (group `g`) until every number of `expected` was seen.
pub(crate) fn consume_all(cluster: &Cluster, expected: &BTreeSet<u64>) -> BTreeSet<u64> {
    let config = ConsumerConfig::builder()
        .group_id("g")
        .auto_offset_reset(OffsetReset::Earliest)
        .session_timeout(Duration::from_millis(1_000))
        .heartbeat_interval(Duration::from_millis(200))
        .build()
        .unwrap();
    let mut consumer = Consumer::new(cluster, config).unwrap();
    consumer.subscribe([TOPIC]).unwrap();
    let started = Instant::now();
    let mut seen = BTreeSet::new();
    while !expected.is_subset(&seen) {
        assert!(
            started.elapsed() < GUARD,
            "not consumed: {:?}",
            expected.difference(&seen).take(10).collect::<Vec<_>>()
        );
        match consumer.poll(Duration::from_millis(100)) {
            Ok(records) => {
                for r in &records {
                    let n = std::str::from_utf8(r.value().unwrap())
                        .unwrap()
                        .parse()
                        .unwrap();
                    seen.insert(n);
                }
            }
            Err(e) if e.is_retriable() => {}
            Err(e) => panic!("poll: {e}"),
        }
    }
    consumer.close().unwrap();
    seen
}

/// The segment files of a partition directory. (Leader epoch files may
/// differ: a leader elected without writing records records an epoch its
/// followers never see, as in Kafka.)
pub(crate) fn log_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".log"))
        .map(|n| {
            let bytes = std::fs::read(dir.join(&n)).unwrap();
            (n, bytes)
        })
        .collect()
}

pub(crate) fn assert_replicas_identical(root: &Path, partitions: u32) {
    for p in 0..partitions {
        let files: Vec<_> = (0..3)
            .map(|b| log_files(&root.join(format!("broker-{b}/{TOPIC}-{p}"))))
            .collect();
        assert!(!files[0].is_empty());
        assert_eq!(files[0], files[1], "partition {p}: brokers 0 and 1 differ");
        assert_eq!(files[0], files[2], "partition {p}: brokers 0 and 2 differ");
    }
}

/// A thread sending numbered records (key and value: the number) to
/// [`TOPIC`] with `acks=all`, without waiting, every outcome reported to
/// the test thread.
pub(crate) struct BackgroundSends {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    outcomes: std::sync::mpsc::Receiver<(u64, logbus::Result<()>)>,
    sender: std::thread::JoinHandle<u64>,
    /// The outcomes received so far, in arrival order.
    pub(crate) received: Vec<(u64, logbus::Result<()>)>,
}

impl BackgroundSends {
    pub(crate) fn start(cluster: &Cluster) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, outcomes) = std::sync::mpsc::channel();
        let sender = {
            let (cluster, stop) = (cluster.clone(), stop.clone());
            std::thread::spawn(move || {
                let producer = acks_all(&cluster);
                let mut n = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let tx = tx.clone();
                    let text = n.to_string();
                    producer
                        .send_with_callback(
                            logbus::ProducerRecord::new(TOPIC, &text).with_key(text),
                            move |result| {
                                let _ = tx.send((n, result.map(drop)));
                            },
                        )
                        .unwrap();
                    n += 1;
                    if n.is_multiple_of(100) {
                        producer.flush().unwrap();
                    }
                }
                producer.close().unwrap();
                n
            })
        };
        BackgroundSends {
            stop,
            outcomes,
            sender,
            received: Vec::new(),
        }
    }

    /// Waits for `count` more outcomes (`why` names what is awaited).
    pub(crate) fn await_more(&mut self, count: usize, why: &str) {
        let target = self.received.len() + count;
        while self.received.len() < target {
            let outcome = self.outcomes.recv_timeout(GUARD).expect(why);
            self.received.push(outcome);
        }
    }

    /// Stops the thread and returns the acknowledged numbers, after
    /// checking that every send completed and every failure is retriable.
    pub(crate) fn finish(mut self) -> BTreeSet<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        let sent = self.sender.join().unwrap();
        self.received.extend(self.outcomes.iter());
        assert_eq!(self.received.len() as u64, sent, "every send completed");
        let mut acked = BTreeSet::new();
        for (n, outcome) in self.received {
            match outcome {
                Ok(()) => {
                    acked.insert(n);
                }
                Err(e) => assert!(e.is_retriable(), "record {n}: {e}"),
            }
        }
        acked
    }
}
