//! Tests of the transaction coordinator (`txn_coordinator.rs`) through a
//! real cluster, with a fake marker writer that records every marker (and
//! can be told to fail): the state machine end to end, the
//! `__transaction_state` topic, replay on reopen, completion of prepared
//! transactions, zombie fencing, timeouts on a manual clock, transactional
//! offsets and failover of the state partition's leader.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::config::TestMarkers;
use super::offsets::{OFFSETS_TOPIC, partition_for_group};
use super::txn_coordinator::{
    DEFAULT_TRANSACTION_TIMEOUT_MS, MarkerWriter, Markers, TXN_TOPIC, TimerDue,
};
use super::txn_log::{TxnStatus, partition_for_transactional_id};
use super::*;
use crate::clock::ManualClock;
use crate::replica::FetchBound;

/// A guard against a hang, never a timing assertion.
const GUARD: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Marker {
    topic: String,
    partition: u32,
    producer_id: i64,
    epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
}

/// Records the markers it is asked to write; fails every marker while
/// `fail_all` is set, and those of the partitions in `fail`.
///
/// Once [`Setup::open_backed`] installs the cluster's own writer in
/// `real`, a marker that does not fail is also written to the log through
/// it (so replay finds it).
#[derive(Default)]
struct FakeMarkers {
    written: Mutex<Vec<Marker>>,
    fail_all: AtomicBool,
    fail: Mutex<BTreeSet<(String, u32)>>,
    real: Mutex<Option<super::txn_coordinator::ReplicaMarkers>>,
    /// When set, markers written by any other thread fail: the timer
    /// thread's asynchronous completions (after a metadata change it
    /// noticed late, say) never land between a model's steps.
    only_thread: Mutex<Option<std::thread::ThreadId>>,
    /// When set, each marker first waits (up to `GUARD`) for a message
    /// here, and fails if none comes.
    gate: Mutex<Option<crossbeam_channel::Receiver<()>>>,
}

impl MarkerWriter for FakeMarkers {
    fn write_marker(
        &self,
        topic: &str,
        partition: u32,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
    ) -> Result<()> {
        let gate = self.gate.lock().clone();
        if let Some(gate) = gate
            && gate.recv_timeout(GUARD).is_err()
        {
            return Err(Error::Internal("the test's gate stayed shut".into()));
        }
        let other_thread = self
            .only_thread
            .lock()
            .is_some_and(|t| t != std::thread::current().id());
        if other_thread
            || self.fail_all.load(Ordering::SeqCst)
            || self.fail.lock().contains(&(topic.to_string(), partition))
        {
            return Err(Error::NotLeaderOrFollower {
                topic: topic.to_string(),
                partition,
                broker: 0,
            });
        }
        if let Some(real) = self.real.lock().as_ref() {
            real.write_marker(
                topic,
                partition,
                producer_id,
                producer_epoch,
                commit,
                coordinator_epoch,
            )?;
        }
        self.written.lock().push(Marker {
            topic: topic.to_string(),
            partition,
            producer_id,
            epoch: producer_epoch,
            commit,
            coordinator_epoch,
        });
        Ok(())
    }
}

impl FakeMarkers {
    fn take(&self) -> Vec<Marker> {
        std::mem::take(&mut *self.written.lock())
    }
}

struct Setup {
    dir: tempfile::TempDir,
    clock: ManualClock,
    brokers: u32,
    txn_partitions: u32,
    /// `transactional.id.expiration.ms` (Kafka's 7 days by default).
    id_expiration: Duration,
    /// `transaction.remove.expired.transaction.cleanup.interval.ms`
    /// (Kafka's 1 hour by default).
    remove_interval: Duration,
}

impl Setup {
    fn new(brokers: u32) -> Self {
        Setup {
            dir: tempfile::tempdir().unwrap(),
            clock: ManualClock::new(1_000_000),
            brokers,
            txn_partitions: 50,
            id_expiration: Duration::from_secs(7 * 24 * 3600),
            remove_interval: Duration::from_secs(3600),
        }
    }

    /// Ids expire after `ID_EXPIRATION_MS`; the timer removes them at each
    /// of its passes (both of its intervals are 10 s, so every advance of
    /// 10 s or more runs both).
    fn expiring(brokers: u32) -> Self {
        Setup {
            id_expiration: Duration::from_millis(ID_EXPIRATION_MS as u64),
            remove_interval: Duration::from_secs(10),
            ..Setup::new(brokers)
        }
    }

    fn config(&self) -> ClusterConfig {
        ClusterConfig::builder()
            .brokers(self.brokers)
            .clock(Arc::new(self.clock.clone()))
            .transaction_abort_interval(Duration::from_secs(10))
            .transaction_state_log_num_partitions(self.txn_partitions)
            .transaction_max_timeout(Duration::from_secs(600))
            .transactional_id_expiration(self.id_expiration)
            .transaction_remove_expired_interval(self.remove_interval)
            .build()
            .unwrap()
    }

    /// Opens the cluster with a fresh fake writer installed.
    fn open(&self) -> (Cluster, Arc<FakeMarkers>) {
        let markers = Arc::new(FakeMarkers::default());
        let mut config = self.config();
        config.test_markers = Some(TestMarkers(markers.clone()));
        let cluster = Cluster::open(self.dir.path(), config).unwrap();
        (cluster, markers)
    }

    /// Opens the cluster with a fake writer backed by the cluster's own
    /// (markers reach the logs). The timer's pass at the open fails every
    /// marker (a transaction replayed as prepared stays so until the test
    /// moves the clock).
    fn open_backed(&self) -> (Cluster, Arc<FakeMarkers>) {
        let markers = Arc::new(FakeMarkers::default());
        markers.fail_all.store(true, Ordering::SeqCst);
        let mut config = self.config();
        config.test_markers = Some(TestMarkers(markers.clone()));
        let cluster = Cluster::open(self.dir.path(), config).unwrap();
        assert!(cluster.inner.wait_for_txn_pass(self.clock.now_ms(), GUARD));
        *markers.real.lock() = Some(super::txn_coordinator::ReplicaMarkers::new(&cluster.inner));
        markers.fail_all.store(false, Ordering::SeqCst);
        (cluster, markers)
    }
}

fn tp(topic: &str, partition: u32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

fn status(cluster: &Cluster, id: &str) -> TxnStatus {
    cluster.inner.txn_metadata(id).unwrap().status
}

/// The leader epoch of `id`'s `__transaction_state` partition.
fn coordinator_epoch(cluster: &Cluster, id: &str) -> i32 {
    let p = partition_for_transactional_id(id, 50);
    cluster.describe_topic(TXN_TOPIC).unwrap().partitions[p as usize].leader_epoch
}

fn marker(topic: &str, partition: u32, pid: i64, epoch: i16, commit: bool, ce: i32) -> Marker {
    Marker {
        topic: topic.into(),
        partition,
        producer_id: pid,
        epoch,
        commit,
        coordinator_epoch: ce,
    }
}

#[test]
fn a_commit_writes_every_marker_then_completes_and_a_retry_succeeds() {
    let setup = Setup::new(1);
    let (cluster, markers) = setup.open();
    cluster.create_topic(NewTopic::new("t", 3)).unwrap();
    let inner = &cluster.inner;
    let (pid, epoch) = inner
        .init_producer_id("app", DEFAULT_TRANSACTION_TIMEOUT_MS)
        .unwrap();
    assert_eq!(epoch, 0);
    assert_eq!(status(&cluster, "app"), TxnStatus::Empty);
    inner
        .add_partitions_to_txn("app", pid, epoch, &[tp("t", 0), tp("t", 2)])
        .unwrap();
    inner
        .add_partitions_to_txn("app", pid, epoch, &[tp("t", 2)])
        .unwrap();
    let meta = inner.txn_metadata("app").unwrap();
    assert_eq!(meta.status, TxnStatus::Ongoing);
    assert_eq!(meta.partitions.len(), 2);
    assert!(markers.take().is_empty(), "no marker before the end");

    inner.end_txn_marked("app", pid, epoch, true).unwrap();
    let ce = coordinator_epoch(&cluster, "app");
    assert_eq!(
        markers.take(),
        [
            marker("t", 0, pid, epoch, true, ce),
            marker("t", 2, pid, epoch, true, ce)
        ]
    );
    assert_eq!(status(&cluster, "app"), TxnStatus::CompleteCommit);
    // A retry of the finished commit succeeds and writes nothing; the
    // other outcome is refused.
    inner.end_txn_marked("app", pid, epoch, true).unwrap();
    assert!(markers.take().is_empty());
    assert!(matches!(
        inner.end_txn_marked("app", pid, epoch, false),
        Err(Error::InvalidTxnState { producer_id }) if producer_id == pid
    ));

    // The next transaction, aborted.
    inner
        .add_partitions_to_txn("app", pid, epoch, &[tp("t", 1)])
        .unwrap();
    inner.end_txn_marked("app", pid, epoch, false).unwrap();
    assert_eq!(markers.take(), [marker("t", 1, pid, epoch, false, ce)]);
    assert_eq!(status(&cluster, "app"), TxnStatus::CompleteAbort);
    cluster.close().unwrap();
}

#[test]
fn requests_that_do_not_fit_are_refused_and_change_nothing() {
    let setup = Setup::new(1);
    let (cluster, markers) = setup.open();
    cluster.create_topic(NewTopic::new("t", 1)).unwrap();
    let inner = &cluster.inner;
    for bad in [0, -1, 600_001] {
        assert!(matches!(
            inner.init_producer_id("app", bad),
            Err(Error::InvalidTransactionTimeout { timeout_ms, max_ms: 600_000 })
                if timeout_ms == i64::from(bad)
        ));
    }
    assert!(matches!(
        inner.init_producer_id("", 1000),
        Err(Error::InvalidArgument(_))
    ));
    assert!(
        inner.topic_state(TXN_TOPIC).is_err(),
        "refused requests create nothing"
    );
    // Unknown transactional id.
    assert!(matches!(
        inner.add_partitions_to_txn("nobody", 7, 0, &[tp("t", 0)]),
        Err(Error::InvalidProducerIdMapping { producer_id: 7, .. })
    ));
    assert!(matches!(
        inner.end_txn_marked("nobody", 7, 0, true),
        Err(Error::InvalidProducerIdMapping { .. })
    ));
    let (pid, epoch) = inner.init_producer_id("app", 1000).unwrap();
    let before = inner.txn_metadata("app").unwrap();
    assert!(matches!(
        inner.add_partitions_to_txn("app", pid + 1, epoch, &[tp("t", 0)]),
        Err(Error::InvalidProducerIdMapping { .. })
    ));
    assert!(matches!(
        inner.add_partitions_to_txn("app", pid, epoch + 1, &[tp("t", 0)]),
        Err(Error::ProducerFenced {
            epoch: 1,
            current: 0,
            ..
        })
    ));
    assert!(matches!(
        inner.add_partitions_to_txn("app", pid, epoch, &[tp("t", 1)]),
        Err(Error::UnknownTopicOrPartition { .. })
    ));
    assert!(matches!(
        inner.add_partitions_to_txn("app", pid, epoch, &[tp(TXN_TOPIC, 0)]),
        Err(Error::InvalidTopic { .. })
    ));
    // Nothing is open: ending is refused.
    assert!(matches!(
        inner.end_txn_marked("app", pid, epoch, true),
        Err(Error::InvalidTxnState { .. })
    ));
    assert_eq!(inner.txn_metadata("app").unwrap(), before);
    assert!(markers.take().is_empty());
    cluster.close().unwrap();
}

#[test]
fn a_reinit_fences_the_older_producer_and_aborts_its_transaction() {
    let setup = Setup::new(1);
    let (cluster, markers) = setup.open();
    cluster.create_topic(NewTopic::new("t", 2)).unwrap();
    cluster.create_topic(NewTopic::new("in", 1)).unwrap();
    let inner = &cluster.inner;
    let (pid, zombie) = inner.init_producer_id("app", 60_000).unwrap();
    inner
        .add_partitions_to_txn("app", pid, zombie, &[tp("t", 1)])
        .unwrap();
    inner.add_offsets_to_txn("app", pid, zombie, "g").unwrap();
    let offsets = BTreeMap::from([(tp("in", 0), OffsetAndMetadata::new(4))]);
    inner
        .txn_offset_commit("app", pid, zombie, "g", &offsets)
        .unwrap();

    // The new instance: its init aborts the open transaction with a
    // fencing bump (epoch 1), then takes epoch 2.
    let (same_pid, epoch) = inner.init_producer_id("app", 60_000).unwrap();
    assert_eq!((same_pid, epoch), (pid, 2));
    let ce = coordinator_epoch(&cluster, "app");
    let group_partition = partition_for_group("g", 50);
    let mut written = markers.take();
    written.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    assert_eq!(
        written,
        [
            marker(OFFSETS_TOPIC, group_partition, pid, 1, false, ce),
            marker("t", 1, pid, 1, false, ce)
        ]
    );
    assert_eq!(status(&cluster, "app"), TxnStatus::Empty);
    assert!(
        inner.group_offsets("g").unwrap().is_empty(),
        "the aborted offsets are dropped"
    );

    // Every request of the zombie is fenced.
    assert!(matches!(
        inner.add_partitions_to_txn("app", pid, zombie, &[tp("t", 0)]),
        Err(Error::ProducerFenced {
            epoch: 0,
            current: 2,
            ..
        })
    ));
    assert!(matches!(
        inner.end_txn_marked("app", pid, zombie, true),
        Err(Error::ProducerFenced { .. })
    ));
    assert!(matches!(
        inner.txn_offset_commit("app", pid, zombie, "g", &offsets),
        Err(Error::ProducerFenced { .. })
    ));
    assert!(
        !Error::ProducerFenced {
            transactional_id: "app".into(),
            epoch: 0,
            current: 2
        }
        .is_retriable()
    );
    // The new one works.
    inner
        .add_partitions_to_txn("app", pid, epoch, &[tp("t", 0)])
        .unwrap();
    inner.end_txn_marked("app", pid, epoch, true).unwrap();
    assert_eq!(markers.take(), [marker("t", 0, pid, epoch, true, ce)]);
    cluster.close().unwrap();
}

/// KIP-360: a producer bumping its own epoch names the epoch it holds; a
/// zombie's bump is fenced and changes nothing, its successor's goes on.
#[test]
fn an_epoch_bump_from_an_older_epoch_is_fenced() {
    let setup = Setup::new(1);
    let (cluster, _markers) = setup.open();
    let inner = &cluster.inner;
    let (pid, zombie) = inner.init_producer_id("app", 60_000).unwrap();
    let (same, current) = inner.init_producer_id("app", 60_000).unwrap();
    assert_eq!((same, current), (pid, zombie + 1));
    let before = inner.txn_metadata("app").unwrap();
    assert!(matches!(
        inner.init_producer_id_expecting("app", 60_000, Some((pid, zombie))),
        Err(Error::ProducerFenced { epoch, current: c, .. }) if epoch == zombie && c == current
    ));
    assert!(matches!(
        inner.init_producer_id_expecting("app", 60_000, Some((pid + 1, current))),
        Err(Error::ProducerFenced { .. })
    ));
    assert_eq!(inner.txn_metadata("app").unwrap(), before);
    assert_eq!(
        inner
            .init_producer_id_expecting("app", 60_000, Some((pid, current)))
            .unwrap(),
        (pid, current + 1)
    );
    cluster.close().unwrap();
}

/// A marker that could not be written is written as soon as the
/// metadata changes (as when its partition gets a leader again), without
/// waiting for the timer's next pass: no clock time passes here.
#[test]
fn a_missing_marker_is_written_at_the_next_metadata_change() {
    let setup = Setup::new(1);
    let (cluster, markers) = setup.open();
    cluster.create_topic(NewTopic::new("t", 2)).unwrap();
    let inner = &cluster.inner;
    let (pid, epoch) = inner.init_producer_id("app", 60_000).unwrap();
    inner
        .add_partitions_to_txn("app", pid, epoch, &[tp("t", 0), tp("t", 1)])
        .unwrap();
    markers.fail.lock().insert(("t".into(), 1));
    inner.end_txn_marked("app", pid, epoch, true).unwrap();
    assert_eq!(status(&cluster, "app"), TxnStatus::PrepareCommit);
    markers.fail.lock().clear();
    cluster.create_topic(NewTopic::new("other", 1)).unwrap();
    assert!(cluster.wait_until(GUARD, |c| status(c, "app") == TxnStatus::CompleteCommit));
    let written: Vec<u32> = markers.take().iter().map(|m| m.partition).collect();
    assert_eq!(written, [0, 1]);
    cluster.close().unwrap();
}

#[test]
fn markers_that_fail_are_retried_and_each_partition_is_marked_once() {
    let setup = Setup::new(1);
    let (cluster, markers) = setup.open();
    cluster.create_topic(NewTopic::new("t", 3)).unwrap();
    let inner = &cluster.inner;
    let (pid, epoch) = inner.init_producer_id("app", 60_000).unwrap();
    let all = [tp("t", 0), tp("t", 1), tp("t", 2)];
    inner
        .add_partitions_to_txn("app", pid, epoch, &all)
        .unwrap();
    markers.fail.lock().insert(("t".into(), 1));
    // The commit is decided (recorded) even though a marker fails.
    inner.end_txn_marked("app", pid, epoch, true).unwrap();
    assert_eq!(status(&cluster, "app"), TxnStatus::PrepareCommit);
    let first: Vec<u32> = markers.take().iter().map(|m| m.partition).collect();
    assert_eq!(first, [0], "stops at the failed marker");
    // While it cannot complete, the producer's next requests are told to
    // retry.
    let busy = inner
        .add_partitions_to_txn("app", pid, epoch, &[tp("t", 0)])
        .unwrap_err();
    assert!(matches!(busy, Error::ConcurrentTransactions { .. }));
    assert!(busy.is_retriable());
    assert!(matches!(
        inner.end_txn_marked("app", pid, epoch, true),
        Err(Error::ConcurrentTransactions { .. })
    ));
    assert!(matches!(
        inner.init_producer_id("app", 60_000),
        Err(Error::ConcurrentTransactions { .. })
    ));
    // The other outcome is refused outright.
    assert!(matches!(
        inner.end_txn_marked("app", pid, epoch, false),
        Err(Error::InvalidTxnState { .. })
    ));
    assert_eq!(status(&cluster, "app"), TxnStatus::PrepareCommit);
    let retried: Vec<u32> = markers.take().iter().map(|m| m.partition).collect();
    assert!(retried.is_empty(), "{retried:?}");

    // The partition is back: a retry of the end completes, writing only
    // the markers still missing.
    markers.fail.lock().clear();
    inner.end_txn_marked("app", pid, epoch, true).unwrap();
    let rest: Vec<u32> = markers.take().iter().map(|m| m.partition).collect();
    assert_eq!(rest, [1, 2]);
    assert_eq!(status(&cluster, "app"), TxnStatus::CompleteCommit);
    cluster.close().unwrap();
}

#[test]
fn the_timer_completes_a_prepared_transaction_when_markers_can_be_written() {
    let setup = Setup::new(1);
    let (cluster, markers) = setup.open();
    cluster.create_topic(NewTopic::new("t", 1)).unwrap();
    let inner = &cluster.inner;
    let (pid, epoch) = inner.init_producer_id("app", 60_000).unwrap();
    inner
        .add_partitions_to_txn("app", pid, epoch, &[tp("t", 0)])
        .unwrap();
    markers.fail_all.store(true, Ordering::SeqCst);
    inner.end_txn_marked("app", pid, epoch, false).unwrap();
    assert_eq!(status(&cluster, "app"), TxnStatus::PrepareAbort);
    markers.fail_all.store(false, Ordering::SeqCst);
    setup.clock.advance_ms(10_000);
    assert!(inner.wait_for_txn_pass(setup.clock.now_ms(), GUARD));
    assert_eq!(status(&cluster, "app"), TxnStatus::CompleteAbort);
    assert_eq!(markers.take().len(), 1);
    cluster.close().unwrap();
}

#[test]
fn a_transaction_open_past_its_timeout_is_aborted_and_its_producer_fenced() {
    let setup = Setup::new(1);
    let (cluster, markers) = setup.open();
    cluster.create_topic(NewTopic::new("t", 1)).unwrap();
    let inner = &cluster.inner;
    let (pid, epoch) = inner.init_producer_id("app", 15_000).unwrap();
    inner
        .add_partitions_to_txn("app", pid, epoch, &[tp("t", 0)])
        .unwrap();
    // Within its timeout: a pass leaves it open.
    setup.clock.advance_ms(10_000);
    assert!(inner.wait_for_txn_pass(setup.clock.now_ms(), GUARD));
    assert_eq!(status(&cluster, "app"), TxnStatus::Ongoing);
    assert!(markers.take().is_empty());
    // Past it: the next pass aborts it with a fencing bump.
    setup.clock.advance_ms(10_000);
    assert!(inner.wait_for_txn_pass(setup.clock.now_ms(), GUARD));
    let meta = inner.txn_metadata("app").unwrap();
    assert_eq!((meta.status, meta.epoch), (TxnStatus::CompleteAbort, 1));
    let ce = coordinator_epoch(&cluster, "app");
    assert_eq!(markers.take(), [marker("t", 0, pid, 1, false, ce)]);
    assert!(matches!(
        inner.end_txn_marked("app", pid, epoch, true),
        Err(Error::ProducerFenced {
            epoch: 0,
            current: 1,
            ..
        })
    ));
    // A new instance carries on at the next epoch.
    assert_eq!(inner.init_producer_id("app", 15_000).unwrap(), (pid, 2));
    cluster.close().unwrap();
}

#[test]
fn transactional_offsets_become_committed_only_with_the_commit() {
    let setup = Setup::new(1);
    let (cluster, markers) = setup.open_backed();
    cluster.create_topic(NewTopic::new("in", 2)).unwrap();
    cluster.create_topic(NewTopic::new("out", 1)).unwrap();
    let inner = &cluster.inner;
    let (pid, epoch) = inner.init_producer_id("app", 60_000).unwrap();
    let offsets = |a, b| {
        BTreeMap::from([
            (tp("in", 0), OffsetAndMetadata::new(a)),
            (tp("in", 1), OffsetAndMetadata::new(b)),
        ])
    };
    inner
        .add_partitions_to_txn("app", pid, epoch, &[tp("out", 0)])
        .unwrap();
    // Offsets need the group's partition in the transaction first.
    assert!(matches!(
        inner.txn_offset_commit("app", pid, epoch, "g", &offsets(1, 1)),
        Err(Error::InvalidTxnState { .. })
    ));
    inner.add_offsets_to_txn("app", pid, epoch, "g").unwrap();
    assert!(matches!(
        inner.txn_offset_commit(
            "app",
            pid,
            epoch,
            "g",
            &BTreeMap::from([(tp("in", 5), OffsetAndMetadata::new(1))])
        ),
        Err(Error::UnknownTopicOrPartition { .. })
    ));
    inner
        .txn_offset_commit("app", pid, epoch, "g", &offsets(3, 4))
        .unwrap();
    inner
        .txn_offset_commit("app", pid, epoch, "g", &offsets(5, 4))
        .unwrap();
    assert!(
        inner.group_offsets("g").unwrap().is_empty(),
        "not visible before the commit"
    );
    inner.end_txn_marked("app", pid, epoch, true).unwrap();
    let committed = |c: &Cluster| -> Vec<u64> {
        c.inner
            .group_offsets("g")
            .unwrap()
            .values()
            .map(|m| m.offset)
            .collect()
    };
    assert_eq!(committed(&cluster), [5, 4]);
    let written = markers.take();
    assert!(
        written
            .iter()
            .any(|m| m.topic == OFFSETS_TOPIC && m.partition == partition_for_group("g", 50)),
        "{written:?}"
    );
    // The next transaction aborts: its offsets never show.
    inner.add_offsets_to_txn("app", pid, epoch, "g").unwrap();
    inner
        .txn_offset_commit("app", pid, epoch, "g", &offsets(9, 9))
        .unwrap();
    inner.end_txn_marked("app", pid, epoch, false).unwrap();
    assert_eq!(committed(&cluster), [5, 4]);
    cluster.close().unwrap();

    // The committed offsets and their COMMIT marker are in the log: they
    // survive a reopen; the aborted ones stay dropped.
    let (cluster, _) = setup.open_backed();
    assert_eq!(committed(&cluster), [5, 4]);
    cluster.close().unwrap();
}

/// `group`'s committed offsets, as (topic partition, offset) pairs.
fn committed_offsets(cluster: &Cluster, group: &str) -> Vec<(TopicPartition, u64)> {
    cluster
        .inner
        .group_offsets(group)
        .unwrap()
        .into_iter()
        .map(|(tp, m)| (tp, m.offset))
        .collect()
}

/// Offsets of partitions of topic "in".
fn in_offsets(pairs: &[(u32, u64)]) -> BTreeMap<TopicPartition, OffsetAndMetadata> {
    pairs
        .iter()
        .map(|&(p, o)| (tp("in", p), OffsetAndMetadata::new(o)))
        .collect()
}

/// The key of `group`'s `__consumer_offsets` partition.
fn offsets_key(cluster: &Cluster, group: &str) -> crate::replica::TopicIdPartition {
    cluster
        .inner
        .partition_key(&tp(OFFSETS_TOPIC, partition_for_group(group, 50)))
        .unwrap()
}

/// The last stable offset and the log end offset of `group`'s
/// `__consumer_offsets` partition.
fn offsets_lso_and_end(cluster: &Cluster, group: &str) -> (u64, u64) {
    let key = offsets_key(cluster, group);
    let replicas = cluster.inner.replicas_for(&key).unwrap();
    (
        replicas.last_stable_offset(&key).unwrap(),
        replicas.offsets(&key).unwrap().log_end,
    )
}

/// Kafka's layout: a transaction's offsets are a transactional batch of
/// its producer in the group's partition at once, holding that
/// partition's last stable offset until the COMMIT marker, which makes
/// them committed.
#[test]
fn transactional_offsets_are_a_transactional_batch_until_the_marker() {
    let setup = Setup::new(1);
    let (cluster, _markers) = setup.open_backed();
    cluster.create_topic(NewTopic::new("in", 1)).unwrap();
    let inner = &cluster.inner;
    let (pid, epoch) = inner.init_producer_id("app", 60_000).unwrap();
    inner.add_offsets_to_txn("app", pid, epoch, "g").unwrap();
    for offset in [3, 4] {
        inner
            .txn_offset_commit("app", pid, epoch, "g", &in_offsets(&[(0, offset)]))
            .unwrap();
    }
    assert_eq!(offsets_lso_and_end(&cluster, "g"), (0, 2));
    let key = offsets_key(&cluster, "g");
    let fetched = inner
        .replicas_for(&key)
        .unwrap()
        .fetch(&key, 0, 1 << 20, FetchBound::HighWatermark)
        .unwrap();
    let headers: Vec<crate::format::BatchHeader> =
        crate::format::Batches::new(fetched.records().clone())
            .map(|b| *b.unwrap().header())
            .collect();
    assert_eq!(headers.len(), 2);
    for h in &headers {
        assert!(h.is_transactional() && !h.is_control(), "{h:?}");
        assert_eq!((h.producer_id, h.producer_epoch), (pid, epoch));
    }
    assert!(committed_offsets(&cluster, "g").is_empty());
    assert!(inner.groups().is_empty(), "a pending group is not listed");
    inner.end_txn_marked("app", pid, epoch, true).unwrap();
    // Two batches and the COMMIT marker, all stable.
    assert_eq!(offsets_lso_and_end(&cluster, "g"), (3, 3));
    assert_eq!(committed_offsets(&cluster, "g"), [(tp("in", 0), 4)]);
    assert_eq!(inner.groups(), ["g"]);
    // The log checks a coordinator batch's epoch: once a new producer
    // fenced the old one (its ABORT marker carries the new epoch), a
    // batch of the old epoch is refused and nothing is pending.
    let (_, bumped) = inner.init_producer_id("app", 60_000).unwrap();
    inner.add_offsets_to_txn("app", pid, bumped, "g").unwrap();
    inner.end_txn_marked("app", pid, bumped, false).unwrap();
    assert!(matches!(
        inner.commit_txn_offsets("g", pid, epoch, &in_offsets(&[(0, 9)])),
        Err(Error::InvalidProducerEpoch { .. })
    ));
    inner.add_offsets_to_txn("app", pid, bumped, "g").unwrap();
    inner.end_txn_marked("app", pid, bumped, true).unwrap();
    assert_eq!(committed_offsets(&cluster, "g"), [(tp("in", 0), 4)]);
    cluster.close().unwrap();
}

/// The window the in-memory design lost: `PrepareCommit` is recorded, the
/// data partition's marker written, the group's not, then a crash. The
/// reopen finds the offsets pending in `__consumer_offsets`; the marker
/// written after it makes them committed, and they stay so.
#[test]
fn a_crash_after_prepare_commit_completes_the_commit_with_its_offsets() {
    for brokers in [1, 3] {
        crash_after_prepare_commit(brokers);
    }
}

fn crash_after_prepare_commit(brokers: u32) {
    let setup = Setup::new(brokers);
    let (cluster, markers) = setup.open_backed();
    cluster.create_topic(NewTopic::new("in", 1)).unwrap();
    // Sorted before `__consumer_offsets`: its marker is written first.
    cluster.create_topic(NewTopic::new("OUT", 1)).unwrap();
    let inner = &cluster.inner;
    inner.commit_offsets("g", &in_offsets(&[(0, 2)])).unwrap();
    let (pid, epoch) = inner.init_producer_id("app", 60_000).unwrap();
    inner
        .add_partitions_to_txn("app", pid, epoch, &[tp("OUT", 0)])
        .unwrap();
    inner.add_offsets_to_txn("app", pid, epoch, "g").unwrap();
    inner
        .txn_offset_commit("app", pid, epoch, "g", &in_offsets(&[(0, 7)]))
        .unwrap();
    let group_partition = (OFFSETS_TOPIC.to_string(), partition_for_group("g", 50));
    markers.fail.lock().insert(group_partition.clone());
    inner.end_txn_marked("app", pid, epoch, true).unwrap();
    assert_eq!(status(&cluster, "app"), TxnStatus::PrepareCommit);
    assert_eq!(markers.take(), [marker("OUT", 0, pid, epoch, true, 0)]);
    assert_eq!(committed_offsets(&cluster, "g"), [(tp("in", 0), 2)]);
    drop(cluster); // no close: as a crash of the process

    let (cluster, markers) = setup.open_backed();
    assert_eq!(status(&cluster, "app"), TxnStatus::PrepareCommit);
    assert_eq!(
        committed_offsets(&cluster, "g"),
        [(tp("in", 0), 2)],
        "pending until the group's marker"
    );
    setup.clock.advance_ms(10_000);
    assert!(cluster.inner.wait_for_txn_pass(setup.clock.now_ms(), GUARD));
    assert_eq!(status(&cluster, "app"), TxnStatus::CompleteCommit);
    let written = markers.take();
    assert!(
        written.contains(&marker(
            OFFSETS_TOPIC,
            group_partition.1,
            pid,
            epoch,
            true,
            0
        )),
        "{written:?}"
    );
    assert_eq!(committed_offsets(&cluster, "g"), [(tp("in", 0), 7)]);
    let (lso, end) = offsets_lso_and_end(&cluster, "g");
    assert_eq!(lso, end, "the transaction is closed in the partition");
    cluster.close().unwrap();

    let (cluster, _) = setup.open_backed();
    assert_eq!(status(&cluster, "app"), TxnStatus::CompleteCommit);
    assert_eq!(committed_offsets(&cluster, "g"), [(tp("in", 0), 7)]);
    assert!(cluster.recovery_report().skipped_records.is_empty());
    cluster.close().unwrap();
}

/// Offsets of an aborted transaction, and of one left open by a crash and
/// aborted by the timer at its timeout, never become committed, before
/// or after a reopen.
#[test]
fn offsets_of_aborted_and_timed_out_transactions_never_appear() {
    let setup = Setup::new(1);
    let (cluster, _markers) = setup.open_backed();
    cluster.create_topic(NewTopic::new("in", 1)).unwrap();
    let inner = &cluster.inner;
    inner.commit_offsets("g", &in_offsets(&[(0, 1)])).unwrap();
    let (pid, epoch) = inner.init_producer_id("app", 60_000).unwrap();
    inner.add_offsets_to_txn("app", pid, epoch, "g").unwrap();
    inner
        .txn_offset_commit("app", pid, epoch, "g", &in_offsets(&[(0, 5)]))
        .unwrap();
    inner.end_txn_marked("app", pid, epoch, false).unwrap();
    assert_eq!(committed_offsets(&cluster, "g"), [(tp("in", 0), 1)]);
    // The next transaction is open at the crash.
    inner.add_offsets_to_txn("app", pid, epoch, "g").unwrap();
    inner
        .txn_offset_commit("app", pid, epoch, "g", &in_offsets(&[(0, 6)]))
        .unwrap();
    drop(cluster);

    let (cluster, _markers) = setup.open_backed();
    assert_eq!(status(&cluster, "app"), TxnStatus::Ongoing);
    assert_eq!(committed_offsets(&cluster, "g"), [(tp("in", 0), 1)]);
    let (lso, end) = offsets_lso_and_end(&cluster, "g");
    assert!(lso < end, "the open transaction holds the LSO");
    setup.clock.advance_ms(70_000);
    assert!(cluster.inner.wait_for_txn_pass(setup.clock.now_ms(), GUARD));
    assert_eq!(status(&cluster, "app"), TxnStatus::CompleteAbort);
    assert_eq!(committed_offsets(&cluster, "g"), [(tp("in", 0), 1)]);
    let (lso, end) = offsets_lso_and_end(&cluster, "g");
    assert_eq!(lso, end);
    cluster.close().unwrap();

    let (cluster, _) = setup.open_backed();
    assert_eq!(committed_offsets(&cluster, "g"), [(tp("in", 0), 1)]);
    cluster.close().unwrap();
}

/// Kafka's rule for a plain commit made while a transactional one of the
/// same partition is pending: the later in the log wins when the
/// transaction commits; the same after a reopen.
#[test]
fn the_later_commit_in_the_log_wins_over_a_pending_transactional_one() {
    let setup = Setup::new(1);
    let (cluster, _markers) = setup.open_backed();
    cluster.create_topic(NewTopic::new("in", 2)).unwrap();
    let inner = &cluster.inner;
    let (pid, epoch) = inner.init_producer_id("app", 60_000).unwrap();
    inner.add_offsets_to_txn("app", pid, epoch, "g").unwrap();
    inner
        .txn_offset_commit("app", pid, epoch, "g", &in_offsets(&[(0, 5), (1, 5)]))
        .unwrap();
    inner.commit_offsets("g", &in_offsets(&[(0, 9)])).unwrap();
    assert_eq!(committed_offsets(&cluster, "g"), [(tp("in", 0), 9)]);
    inner.end_txn_marked("app", pid, epoch, true).unwrap();
    assert_eq!(
        committed_offsets(&cluster, "g"),
        [(tp("in", 0), 9), (tp("in", 1), 5)]
    );
    // A plain commit before the transactional one loses to it.
    inner.commit_offsets("g", &in_offsets(&[(1, 3)])).unwrap();
    inner.add_offsets_to_txn("app", pid, epoch, "g").unwrap();
    inner
        .txn_offset_commit("app", pid, epoch, "g", &in_offsets(&[(1, 8)]))
        .unwrap();
    assert_eq!(
        committed_offsets(&cluster, "g"),
        [(tp("in", 0), 9), (tp("in", 1), 3)]
    );
    inner.end_txn_marked("app", pid, epoch, true).unwrap();
    let expected = [(tp("in", 0), 9), (tp("in", 1), 8)];
    assert_eq!(committed_offsets(&cluster, "g"), expected);
    cluster.close().unwrap();

    let (cluster, _) = setup.open_backed();
    assert_eq!(committed_offsets(&cluster, "g"), expected);
    cluster.close().unwrap();
}

/// Deleting a group's offsets removes those pending in a transaction too:
/// its commit brings nothing back, live or replayed.
#[test]
fn deleting_offsets_removes_pending_transactional_ones() {
    let setup = Setup::new(1);
    let (cluster, _markers) = setup.open_backed();
    cluster.create_topic(NewTopic::new("in", 1)).unwrap();
    let inner = &cluster.inner;
    let (pid, epoch) = inner.init_producer_id("app", 60_000).unwrap();
    inner.add_offsets_to_txn("app", pid, epoch, "g").unwrap();
    inner
        .txn_offset_commit("app", pid, epoch, "g", &in_offsets(&[(0, 5)]))
        .unwrap();
    assert_eq!(inner.groups_with_offsets_for("in"), ["g"]);
    assert_eq!(inner.delete_offsets("g", None).unwrap(), 1);
    inner.end_txn_marked("app", pid, epoch, true).unwrap();
    assert!(committed_offsets(&cluster, "g").is_empty());
    cluster.close().unwrap();

    let (cluster, _) = setup.open_backed();
    assert!(committed_offsets(&cluster, "g").is_empty());
    cluster.close().unwrap();
}

/// Compacting `__consumer_offsets` removes the aborted transaction's
/// record and superseded ones, and keeps what replay needs: a reopen
/// after it finds the same committed offsets.
#[test]
fn compacting_the_offsets_partition_keeps_the_committed_offsets() {
    let setup = Setup::new(1);
    let (cluster, _markers) = setup.open_backed();
    cluster.create_topic(NewTopic::new("in", 3)).unwrap();
    let inner = &cluster.inner;
    inner
        .commit_offsets("g", &in_offsets(&[(0, 1), (1, 1)]))
        .unwrap();
    let (pid, epoch) = inner.init_producer_id("app", 60_000).unwrap();
    let txn = |pairs: &[(u32, u64)], commit: bool| {
        inner.add_offsets_to_txn("app", pid, epoch, "g").unwrap();
        inner
            .txn_offset_commit("app", pid, epoch, "g", &in_offsets(pairs))
            .unwrap();
        inner.end_txn_marked("app", pid, epoch, commit).unwrap();
    };
    txn(&[(0, 5), (1, 6)], true);
    txn(&[(0, 9)], false);
    // A transaction whose offset loses to a later plain commit.
    inner.add_offsets_to_txn("app", pid, epoch, "g").unwrap();
    inner
        .txn_offset_commit("app", pid, epoch, "g", &in_offsets(&[(1, 7)]))
        .unwrap();
    inner.commit_offsets("g", &in_offsets(&[(1, 2)])).unwrap();
    inner.end_txn_marked("app", pid, epoch, true).unwrap();
    // Past `segment.ms` (7 days): the next commit rolls the segment, so
    // everything above is cleanable.
    setup.clock.advance_ms(8 * 24 * 3600 * 1000);
    inner.commit_offsets("g", &in_offsets(&[(2, 3)])).unwrap();
    let expected = [(tp("in", 0), 5), (tp("in", 1), 2), (tp("in", 2), 3)];
    assert_eq!(committed_offsets(&cluster, "g"), expected);
    let key = offsets_key(&cluster, "g");
    let replicas = inner.replicas_for(&key).unwrap();
    // The log's own thread may have cleaned it already (the clock moved).
    replicas.clean(&key).unwrap();
    assert_eq!(replicas.clean(&key).unwrap().cleaned_up_to, 10);
    let start = replicas.offsets(&key).unwrap().log_start;
    let fetched = replicas
        .fetch(&key, start, 1 << 20, FetchBound::HighWatermark)
        .unwrap();
    let (mut values, mut markers) = (BTreeSet::new(), 0);
    for batch in crate::format::Batches::new(fetched.records().clone()) {
        let batch = batch.unwrap();
        if batch.header().is_control() {
            markers += 1;
            continue;
        }
        for record in batch.records().unwrap() {
            let record = record.unwrap();
            let value = super::offsets::decode_value(record.value().unwrap()).unwrap();
            values.insert(value.offset);
        }
    }
    assert_eq!(markers, 3, "the cleaner keeps every marker");
    for gone in [1, 6, 9] {
        assert!(!values.contains(&gone), "{gone} in {values:?}");
    }
    // (The fetch stops at the end of the cleaned segment.)
    for kept in [5, 2] {
        assert!(values.contains(&kept), "{kept} not in {values:?}");
    }
    assert_eq!(committed_offsets(&cluster, "g"), expected);
    cluster.close().unwrap();

    let (cluster, _) = setup.open_backed();
    assert_eq!(committed_offsets(&cluster, "g"), expected);
    assert!(cluster.recovery_report().skipped_records.is_empty());
    cluster.close().unwrap();
}

#[test]
fn the_state_topic_is_kafkas_and_states_survive_a_reopen() {
    let setup = Setup::new(3);
    let (cluster, markers) = setup.open();
    cluster
        .create_topic(NewTopic::new("t", 2).replication_factor(3))
        .unwrap();
    let inner = &cluster.inner;
    let (pid, epoch) = inner.init_producer_id("app", 30_000).unwrap();
    let (other_pid, _) = inner.init_producer_id("other", 30_000).unwrap();
    assert_ne!(pid, other_pid);
    inner
        .add_partitions_to_txn("app", pid, epoch, &[tp("t", 0), tp("t", 1)])
        .unwrap();
    let before = inner.txn_metadata("app").unwrap();

    let description = cluster.describe_topic(TXN_TOPIC).unwrap();
    assert_eq!(description.partitions.len(), 50);
    assert!(description.partitions.iter().all(|p| p.replicas.len() == 3));
    let config = inner
        .topic_state(TXN_TOPIC)
        .unwrap()
        .configs()
        .effective
        .clone();
    assert_eq!(config.get("cleanup.policy"), Some("compact"));
    assert_eq!(config.min_insync(), 2);
    assert_eq!(config.get("segment.bytes"), Some("104857600"));
    assert!(!cluster.list_topics().contains(&TXN_TOPIC.to_string()));
    // Only the coordinator writes it.
    assert!(matches!(
        cluster.delete_topic(TXN_TOPIC),
        Err(Error::InvalidTopic { .. })
    ));
    cluster.close().unwrap();

    let (cluster, markers2) = setup.open();
    drop(markers);
    let inner = &cluster.inner;
    assert_eq!(inner.txn_metadata("app").unwrap(), before);
    assert_eq!(status(&cluster, "other"), TxnStatus::Empty);
    assert!(cluster.recovery_report().skipped_records.is_empty());
    // The producer carries on after the reopen.
    inner.end_txn_marked("app", pid, epoch, true).unwrap();
    assert_eq!(markers2.take().len(), 2);
    // A fresh id after the reopen never reuses a producer id.
    let (third, _) = inner.init_producer_id("third", 30_000).unwrap();
    assert!(third != pid && third != other_pid);
    cluster.close().unwrap();

    let (cluster, _) = setup.open();
    assert_eq!(status(&cluster, "app"), TxnStatus::CompleteCommit);
    cluster.close().unwrap();
}

#[test]
fn a_crash_between_prepare_and_complete_finishes_the_transaction_after_reopen() {
    let setup = Setup::new(3);
    let (cluster, markers) = setup.open();
    cluster
        .create_topic(NewTopic::new("t", 2).replication_factor(3))
        .unwrap();
    let inner = &cluster.inner;
    let (pid, epoch) = inner.init_producer_id("app", 60_000).unwrap();
    inner
        .add_partitions_to_txn("app", pid, epoch, &[tp("t", 0), tp("t", 1)])
        .unwrap();
    markers.fail_all.store(true, Ordering::SeqCst);
    inner.end_txn_marked("app", pid, epoch, true).unwrap();
    assert_eq!(status(&cluster, "app"), TxnStatus::PrepareCommit);
    drop(cluster); // no close: as a crash of the process

    let (cluster, markers) = setup.open();
    let inner = &cluster.inner;
    // The open replayed the decision; the coordinator's timer writes the
    // markers at its first pass, which runs as the open ends (so the state
    // may be either PrepareCommit or CompleteCommit here), and passes
    // again at the next interval.
    setup.clock.advance_ms(10_000);
    assert!(inner.wait_for_txn_pass(setup.clock.now_ms(), GUARD));
    assert_eq!(status(&cluster, "app"), TxnStatus::CompleteCommit);
    let ce = coordinator_epoch(&cluster, "app");
    assert_eq!(
        markers.take(),
        [
            marker("t", 0, pid, epoch, true, ce),
            marker("t", 1, pid, epoch, true, ce)
        ]
    );
    // The producer's retry of its commit succeeds.
    inner.end_txn_marked("app", pid, epoch, true).unwrap();
    assert!(markers.take().is_empty());
    cluster.close().unwrap();

    let (cluster, markers) = setup.open();
    assert_eq!(status(&cluster, "app"), TxnStatus::CompleteCommit);
    setup.clock.advance_ms(10_000);
    assert!(cluster.inner.wait_for_txn_pass(setup.clock.now_ms(), GUARD));
    assert!(markers.take().is_empty(), "a completed transaction is done");
    cluster.close().unwrap();
}

#[test]
fn a_zombie_is_fenced_across_a_reopen() {
    let setup = Setup::new(1);
    let (cluster, _) = setup.open();
    cluster.create_topic(NewTopic::new("t", 1)).unwrap();
    let (pid, zombie) = cluster.inner.init_producer_id("app", 60_000).unwrap();
    cluster.close().unwrap();
    let (cluster, _) = setup.open();
    let inner = &cluster.inner;
    assert_eq!(inner.init_producer_id("app", 60_000).unwrap(), (pid, 1));
    assert!(matches!(
        inner.add_partitions_to_txn("app", pid, zombie, &[tp("t", 0)]),
        Err(Error::ProducerFenced {
            epoch: 0,
            current: 1,
            ..
        })
    ));
    cluster.close().unwrap();
}

#[test]
fn the_coordinator_fails_over_with_the_state_partitions_leader() {
    let setup = Setup::new(3);
    let (cluster, markers) = setup.open();
    cluster
        .create_topic(NewTopic::new("t", 1).replication_factor(3))
        .unwrap();
    let inner = &cluster.inner;
    let (pid, epoch) = inner.init_producer_id("app", 60_000).unwrap();
    inner
        .add_partitions_to_txn("app", pid, epoch, &[tp("t", 0)])
        .unwrap();
    let p = partition_for_transactional_id("app", 50) as usize;
    let state = |c: &Cluster| c.describe_topic(TXN_TOPIC).unwrap().partitions[p].clone();
    let before = state(&cluster);
    let leader = before.leader.unwrap();

    // The leader stops: another in-sync replica leads, with the state.
    cluster.stop_broker(leader).unwrap();
    let after = state(&cluster);
    assert_ne!(after.leader, Some(leader));
    assert!(after.leader_epoch > before.leader_epoch);
    inner.end_txn_marked("app", pid, epoch, true).unwrap();
    assert_eq!(
        markers.take(),
        [marker("t", 0, pid, epoch, true, after.leader_epoch)],
        "markers carry the new coordinator epoch"
    );

    // A second broker stops: one in-sync replica is below
    // transaction.state.log.min.isr, so the coordinator is unavailable
    // (retriable) and nothing changes.
    let second = after.leader.unwrap();
    cluster.stop_broker(second).unwrap();
    let refused = inner.init_producer_id("app", 60_000).unwrap_err();
    assert!(
        matches!(&refused, Error::CoordinatorNotAvailable { group, .. } if group == "app"),
        "{refused:?}"
    );
    assert!(refused.is_retriable());
    assert_eq!(status(&cluster, "app"), TxnStatus::CompleteCommit);
    assert_eq!(inner.txn_metadata("app").unwrap().epoch, epoch);

    // One comes back and catches up: the retry works.
    cluster.restart_broker(leader).unwrap();
    assert!(cluster.wait_until(GUARD, |c| {
        c.describe_topic(TXN_TOPIC)
            .is_ok_and(|d| d.partitions[p].isr.len() >= 2)
    }));
    // (A preferred-leader election may move the partition back
    // meanwhile: a client retries a retriable answer, so does this.)
    let mut answer = None;
    assert!(cluster.wait_until(GUARD, |_| {
        match inner.init_producer_id("app", 60_000) {
            Ok(got) => answer = Some(got),
            Err(e) => assert!(e.is_retriable(), "{e:?}"),
        }
        answer.is_some()
    }));
    assert_eq!(answer, Some((pid, epoch + 1)));
    cluster.close().unwrap();
}

#[test]
fn a_crashed_coordinator_is_unavailable_until_its_session_expires_then_works() {
    let setup = Setup::new(3);
    let (cluster, markers) = setup.open();
    cluster
        .create_topic(NewTopic::new("t", 1).replication_factor(3))
        .unwrap();
    let inner = &cluster.inner;
    let (pid, epoch) = inner.init_producer_id("app", 60_000).unwrap();
    inner
        .add_partitions_to_txn("app", pid, epoch, &[tp("t", 0)])
        .unwrap();
    let p = partition_for_transactional_id("app", 50) as usize;
    // A description fails while the crashed leader is still the leader.
    let leader_of = |c: &Cluster| {
        c.describe_topic(TXN_TOPIC)
            .ok()
            .and_then(|d| d.partitions[p].leader)
    };
    let leader = leader_of(&cluster).unwrap();
    cluster.crash_broker(leader).unwrap();
    // Until the controller fences it, its partition's leader is gone:
    // the coordinator is unavailable, retriably, and nothing changes.
    let refused = inner.end_txn_marked("app", pid, epoch, true).unwrap_err();
    assert!(
        matches!(&refused, Error::CoordinatorNotAvailable { group, .. } if group == "app"),
        "{refused:?}"
    );
    assert!(refused.is_retriable());
    assert_eq!(status(&cluster, "app"), TxnStatus::Ongoing);
    assert!(markers.take().is_empty());
    // Its session expires on the clock: another replica leads, and the
    // retry commits.
    setup.clock.advance_ms(9_001);
    assert!(cluster.wait_until(GUARD, |c| leader_of(c).is_some_and(|l| l != leader)));
    inner.end_txn_marked("app", pid, epoch, true).unwrap();
    assert_eq!(status(&cluster, "app"), TxnStatus::CompleteCommit);
    assert_eq!(markers.take().len(), 1);
    cluster.close().unwrap();
}

#[test]
fn concurrent_inits_of_one_id_get_distinct_epochs() {
    let setup = Setup::new(1);
    let (cluster, _) = setup.open();
    let epochs: Vec<(i64, i16)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| cluster.inner.init_producer_id("app", 60_000).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let pids: BTreeSet<i64> = epochs.iter().map(|e| e.0).collect();
    assert_eq!(pids.len(), 1);
    let mut seen: Vec<i16> = epochs.iter().map(|e| e.1).collect();
    seen.sort_unstable();
    assert_eq!(seen, [0, 1, 2, 3]);
    cluster.close().unwrap();
}

#[test]
fn replay_passes_over_transaction_markers_in_the_internal_topics() {
    use crate::format::ControlRecordType;
    let setup = Setup::new(1);
    let (cluster, _) = setup.open();
    cluster.create_topic(NewTopic::new("in", 1)).unwrap();
    let offsets = BTreeMap::from([(tp("in", 0), OffsetAndMetadata::new(7))]);
    cluster.inner.commit_offsets("g", &offsets).unwrap();
    cluster.inner.init_producer_id("app", 60_000).unwrap();
    // A COMMIT marker in the group's partition and in the id's partition,
    // written as the coordinator's writer writes them.
    for (topic, partition) in [
        (OFFSETS_TOPIC, partition_for_group("g", 50)),
        (TXN_TOPIC, partition_for_transactional_id("app", 50)),
    ] {
        let key = cluster.inner.partition_key(&tp(topic, partition)).unwrap();
        cluster
            .inner
            .replicas_for(&key)
            .unwrap()
            .append_txn_marker(&key, 42, 0, ControlRecordType::Commit, 0)
            .unwrap();
    }
    cluster.close().unwrap();
    let (cluster, _) = setup.open();
    assert_eq!(
        cluster.recovery_report().skipped_records,
        [],
        "a control record is not an unreadable record"
    );
    assert_eq!(
        cluster.inner.group_offsets("g").unwrap()[&tp("in", 0)].offset,
        7
    );
    assert_eq!(status(&cluster, "app"), TxnStatus::Empty);
    cluster.close().unwrap();
}

/// The model-based test: random request sequences of one transactional
/// id — its current producer and a zombie (an older epoch), markers
/// failing and recovering, the timer's passes as the clock moves, reopens —
/// against a simple model of Kafka's coordinator. Every answer, every
/// marker written, the recorded state and the group's committed offsets
/// must match the model's; offsets committed in a transaction survive a
/// reopen pending, and become committed with the transaction's COMMIT
/// marker even when it is written after the reopen.
mod model {
    use proptest::prelude::*;

    use super::*;

    const TIMEOUT_MS: i32 = 10_000;

    #[derive(Debug, Clone)]
    enum Op {
        Init,
        Add {
            partition: u32,
            zombie: bool,
        },
        AddOffsets {
            zombie: bool,
        },
        Offsets {
            offset: u64,
            zombie: bool,
        },
        /// A plain (non-transactional) commit of the same partition.
        Plain(u64),
        End {
            commit: bool,
            zombie: bool,
        },
        FailMarkers(bool),
        Tick(i64),
        /// The clock moves by `transactional.id.expiration.ms` and a pass
        /// both aborts and removes expired ids.
        Expire,
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            1 => Just(Op::Init),
            4 => (0..3u32, zombie())
                .prop_map(|(partition, zombie)| Op::Add { partition, zombie }),
            3 => zombie().prop_map(|zombie| Op::AddOffsets { zombie }),
            3 => (0..100u64, zombie())
                .prop_map(|(offset, zombie)| Op::Offsets { offset, zombie }),
            1 => (0..100u64).prop_map(Op::Plain),
            4 => (any::<bool>(), zombie())
                .prop_map(|(commit, zombie)| Op::End { commit, zombie }),
            1 => any::<bool>().prop_map(Op::FailMarkers),
            1 => (0..12_000i64).prop_map(Op::Tick),
            1 => Just(Op::Expire),
            1 => Just(Op::Reopen),
        ]
    }

    /// Whether a request comes from the zombie (an older epoch): one in
    /// five.
    fn zombie() -> impl Strategy<Value = bool> {
        proptest::bool::weighted(0.2)
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Answer {
        Ok,
        Fenced,
        Mapping,
        Concurrent,
        InvalidState,
    }

    fn answer(r: &Result<()>) -> Answer {
        match r {
            Ok(()) => Answer::Ok,
            Err(Error::ProducerFenced { .. }) => Answer::Fenced,
            Err(Error::InvalidProducerIdMapping { .. }) => Answer::Mapping,
            Err(Error::ConcurrentTransactions { .. }) => Answer::Concurrent,
            Err(Error::InvalidTxnState { .. }) => Answer::InvalidState,
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }

    #[derive(Debug, Default)]
    struct Model {
        pid: Option<i64>,
        /// Producer ids of the id before it expired: never handed out
        /// again; requests keep using the last one until the next init.
        retired: Vec<i64>,
        epoch: i16,
        status: Option<TxnStatus>,
        parts: BTreeSet<(String, u32)>,
        start_ms: i64,
        /// The pending transactional offset and the number of the
        /// `__consumer_offsets` append that wrote it.
        pending: Option<(u64, u64)>,
        /// The committed offset and the number of its append.
        committed: Option<(u64, u64)>,
        /// Appends to the group's `__consumer_offsets` partition so far.
        appends: u64,
        fail: bool,
        markers: Vec<Marker>,
    }

    impl Model {
        fn group_partition() -> (String, u32) {
            (OFFSETS_TOPIC.to_string(), partition_for_group("g", 50))
        }

        fn prepared(&self) -> bool {
            matches!(
                self.status,
                Some(TxnStatus::PrepareCommit | TxnStatus::PrepareAbort)
            )
        }

        /// Writes the markers of a prepared transaction, if they can be.
        fn finish(&mut self, ce: i32) {
            if !self.prepared() || self.fail {
                return;
            }
            let commit = self.status == Some(TxnStatus::PrepareCommit);
            for (topic, partition) in std::mem::take(&mut self.parts) {
                self.markers.push(marker(
                    &topic,
                    partition,
                    self.pid.unwrap(),
                    self.epoch,
                    commit,
                    ce,
                ));
                // The last commit in log order wins.
                if commit
                    && (topic.clone(), partition) == Self::group_partition()
                    && let Some(pending) = self.pending
                    && self.committed.is_none_or(|c| c.1 < pending.1)
                {
                    self.committed = Some(pending);
                }
            }
            self.pending = None;
            self.status = Some(if commit {
                TxnStatus::CompleteCommit
            } else {
                TxnStatus::CompleteAbort
            });
        }

        fn prepare(&mut self, commit: bool) {
            self.status = Some(if commit {
                TxnStatus::PrepareCommit
            } else {
                self.pending = None;
                TxnStatus::PrepareAbort
            });
        }

        /// The producer check every request but init makes.
        fn check(&self, zombie: bool) -> Option<Answer> {
            if self.pid.is_none() {
                Some(Answer::Mapping)
            } else if zombie {
                Some(Answer::Fenced)
            } else {
                None
            }
        }

        fn add(&mut self, part: (String, u32), zombie: bool, now: i64, ce: i32) -> Answer {
            if let Some(a) = self.check(zombie) {
                return a;
            }
            if self.prepared() {
                self.finish(ce);
                if self.prepared() {
                    return Answer::Concurrent;
                }
            }
            if self.status == Some(TxnStatus::Ongoing) {
                self.parts.insert(part);
            } else {
                self.status = Some(TxnStatus::Ongoing);
                self.parts = BTreeSet::from([part]);
                self.start_ms = now;
            }
            Answer::Ok
        }
    }

    struct Run {
        setup: Setup,
        cluster: Option<Cluster>,
        markers: Arc<FakeMarkers>,
    }

    impl Run {
        fn open(setup: &Setup, fail: bool) -> (Cluster, Arc<FakeMarkers>) {
            let mut config = setup.config();
            // Passes run only when the test asks (one at the open).
            config.txn_abort_interval_ms = 1 << 40;
            config.txn_remove_expired_interval_ms = 1 << 40;
            // The pass at the open fails every marker (the model expects
            // prepared transactions to stay prepared until a step asks).
            let markers = Arc::new(FakeMarkers::default());
            markers.fail_all.store(true, Ordering::SeqCst);
            config.test_markers = Some(TestMarkers(markers.clone()));
            let cluster = Cluster::open(setup.dir.path(), config).unwrap();
            assert!(cluster.inner.wait_for_txn_pass(setup.clock.now_ms(), GUARD));
            // Markers reach the logs, so offsets replay as they were.
            *markers.real.lock() = Some(super::super::txn_coordinator::ReplicaMarkers::new(
                &cluster.inner,
            ));
            // Only the model's steps complete transactions: the timer
            // thread reacts to metadata changes whenever it gets a CPU.
            *markers.only_thread.lock() = Some(std::thread::current().id());
            markers.fail_all.store(fail, Ordering::SeqCst);
            (cluster, markers)
        }

        fn cluster(&self) -> &Cluster {
            self.cluster.as_ref().unwrap()
        }
    }

    fn run(ops: &[Op]) {
        // Fewer state partitions: quicker to create.
        let setup = Setup {
            txn_partitions: 3,
            id_expiration: Duration::from_secs(30),
            ..Setup::new(1)
        };
        let (cluster, markers) = Run::open(&setup, false);
        cluster.create_topic(NewTopic::new("t", 3)).unwrap();
        cluster.create_topic(NewTopic::new("in", 1)).unwrap();
        let mut run = Run {
            setup,
            cluster: Some(cluster),
            markers,
        };
        let mut m = Model::default();
        let offsets = |o| BTreeMap::from([(tp("in", 0), OffsetAndMetadata::new(o))]);
        for (i, op) in ops.iter().enumerate() {
            let inner = run.cluster().inner.clone();
            let now = run.setup.clock.now_ms();
            // The coordinator epoch (one broker: fixed once the topic exists).
            let ce = run.cluster().describe_topic(TXN_TOPIC).map_or(0, |d| {
                d.partitions[partition_for_transactional_id("app", 3) as usize].leader_epoch
            });
            let epoch_of = |zombie: bool| {
                if zombie {
                    m.epoch.wrapping_sub(1)
                } else {
                    m.epoch
                }
            };
            let pid = m.pid.or(m.retired.last().copied()).unwrap_or(-7);
            match op {
                Op::Init => {
                    let got = inner.init_producer_id("app", TIMEOUT_MS);
                    let mut expected = Answer::Ok;
                    if m.status == Some(TxnStatus::Ongoing) {
                        m.epoch += 1;
                        m.prepare(false);
                    }
                    m.finish(ce);
                    if m.prepared() {
                        expected = Answer::Concurrent;
                    } else {
                        match m.pid {
                            None => {
                                let fresh = got.as_ref().map_or(-1, |r| r.0);
                                assert!(!m.retired.contains(&fresh), "op {i}: {fresh} reused");
                                m.pid = Some(fresh);
                            }
                            Some(_) => m.epoch += 1,
                        }
                        m.status = Some(TxnStatus::Empty);
                        m.parts.clear();
                    }
                    let got_answer = answer(&got.as_ref().map(|_| ()).map_err(Error::duplicate));
                    assert_eq!(got_answer, expected, "op {i} {op:?}");
                    if let Ok(got) = got {
                        assert_eq!(got, (m.pid.unwrap(), m.epoch), "op {i}");
                    }
                }
                Op::Add { partition, zombie } => {
                    let got = inner.add_partitions_to_txn(
                        "app",
                        pid,
                        epoch_of(*zombie),
                        &[tp("t", *partition)],
                    );
                    let expected = m.add(("t".into(), *partition), *zombie, now, ce);
                    assert_eq!(answer(&got), expected, "op {i} {op:?}");
                }
                Op::AddOffsets { zombie } => {
                    let got = inner.add_offsets_to_txn("app", pid, epoch_of(*zombie), "g");
                    let expected = m.add(Model::group_partition(), *zombie, now, ce);
                    assert_eq!(answer(&got), expected, "op {i} {op:?}");
                }
                Op::Offsets { offset, zombie } => {
                    let got = inner.txn_offset_commit(
                        "app",
                        pid,
                        epoch_of(*zombie),
                        "g",
                        &offsets(*offset),
                    );
                    let expected = m.check(*zombie).unwrap_or_else(|| {
                        if m.status == Some(TxnStatus::Ongoing)
                            && m.parts.contains(&Model::group_partition())
                        {
                            m.appends += 1;
                            m.pending = Some((*offset, m.appends));
                            Answer::Ok
                        } else {
                            Answer::InvalidState
                        }
                    });
                    assert_eq!(answer(&got), expected, "op {i} {op:?}");
                }
                Op::End { commit, zombie } => {
                    let got = inner.end_txn_marked("app", pid, epoch_of(*zombie), *commit);
                    let expected = m.check(*zombie).unwrap_or_else(|| {
                        let done = if *commit {
                            TxnStatus::CompleteCommit
                        } else {
                            TxnStatus::CompleteAbort
                        };
                        let prepared = if *commit {
                            TxnStatus::PrepareCommit
                        } else {
                            TxnStatus::PrepareAbort
                        };
                        match m.status {
                            Some(TxnStatus::Ongoing) => {
                                m.prepare(*commit);
                                m.finish(ce);
                                Answer::Ok
                            }
                            Some(s) if s == done => Answer::Ok,
                            Some(s) if s == prepared => {
                                m.finish(ce);
                                if m.prepared() {
                                    Answer::Concurrent
                                } else {
                                    Answer::Ok
                                }
                            }
                            _ => Answer::InvalidState,
                        }
                    });
                    assert_eq!(answer(&got), expected, "op {i} {op:?}");
                }
                Op::Plain(offset) => {
                    inner.commit_offsets("g", &offsets(*offset)).unwrap();
                    m.appends += 1;
                    m.committed = Some((*offset, m.appends));
                }
                Op::FailMarkers(fail) => {
                    m.fail = *fail;
                    run.markers.fail_all.store(*fail, Ordering::SeqCst);
                }
                Op::Tick(ms) => {
                    run.setup.clock.advance_ms(*ms);
                    let now = run.setup.clock.now_ms();
                    inner.txn_timer_pass(TimerDue {
                        abort: true,
                        expire: false,
                    });
                    if m.status == Some(TxnStatus::Ongoing)
                        && now - m.start_ms > i64::from(TIMEOUT_MS)
                    {
                        m.epoch += 1;
                        m.prepare(false);
                    }
                    m.finish(ce);
                }
                Op::Expire => {
                    let idle = matches!(
                        m.status,
                        Some(
                            TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort
                        )
                    );
                    let expiration = i64::try_from(run.setup.id_expiration.as_millis()).unwrap();
                    run.setup.clock.advance_ms(expiration);
                    let now = run.setup.clock.now_ms();
                    inner.txn_timer_pass(TimerDue {
                        abort: true,
                        expire: true,
                    });
                    // An open transaction is past its timeout (shorter
                    // than the expiration): aborted, so updated now.
                    if m.status == Some(TxnStatus::Ongoing)
                        && now - m.start_ms > i64::from(TIMEOUT_MS)
                    {
                        m.epoch += 1;
                        m.prepare(false);
                    }
                    m.finish(ce);
                    // Only a state unchanged since before the jump is
                    // that old; a prepared one never expires.
                    if idle {
                        m.retired.extend(m.pid.take());
                        m.status = None;
                        m.epoch = 0;
                        m.parts.clear();
                    }
                }
                Op::Reopen => {
                    run.cluster.take().unwrap().close().unwrap();
                    let (cluster, markers) = Run::open(&run.setup, m.fail);
                    run.cluster = Some(cluster);
                    // Pending offsets replay from `__consumer_offsets`:
                    // the model's stay as they are.
                    run.markers = markers;
                }
            }
            let inner = &run.cluster().inner;
            let meta = inner.txn_metadata("app");
            assert_eq!(meta.as_ref().map(|x| x.status), m.status, "op {i} {op:?}");
            if let Some(meta) = meta {
                assert_eq!(
                    (Some(meta.producer_id), meta.epoch),
                    (m.pid, m.epoch),
                    "op {i}"
                );
                if !matches!(
                    meta.status,
                    TxnStatus::CompleteAbort | TxnStatus::CompleteCommit | TxnStatus::Empty
                ) && !m.prepared()
                {
                    assert_eq!(meta.partitions, m.parts, "op {i}");
                }
            }
            assert_eq!(
                run.markers.take(),
                std::mem::take(&mut m.markers),
                "op {i} {op:?}"
            );
            let committed = inner
                .group_offsets("g")
                .unwrap()
                .get(&tp("in", 0))
                .map(|o| o.offset);
            assert_eq!(committed, m.committed.map(|c| c.0), "op {i} {op:?}");
        }
        run.cluster.take().unwrap().close().unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn the_coordinator_follows_the_model(ops in proptest::collection::vec(op(), 1..40)) {
            // Mostly a producer that initialised first; sometimes not.
            let mut ops = ops;
            if ops.len() % 4 != 0 {
                ops.insert(0, Op::Init);
            }
            run(&ops);
        }
    }
}

/// A transactional batch of `count` records of producer `pid`.
fn txn_batch(pid: i64, epoch: i16, seq: i32, count: i32) -> Vec<u8> {
    let mut builder = crate::format::BatchBuilder::new(crate::types::Compression::None)
        .producer(pid, epoch, seq)
        .transactional(true);
    for i in 0..count {
        builder.append(1_000_000, None, Some(format!("{seq}+{i}").as_bytes()), &[]);
    }
    builder.build().unwrap().to_vec()
}

/// The cluster's own writer (installed by `Cluster::open`), end to end:
/// the markers land in the data partitions' logs on every replica and in
/// the group's `__consumer_offsets` partition, the last stable offset
/// moves past a committed transaction, and a read_committed fetch lists
/// the aborted one.
#[test]
fn the_clusters_writer_puts_markers_in_every_replica_and_moves_the_lso() {
    let setup = Setup::new(3);
    let cluster = Cluster::open(setup.dir.path(), setup.config()).unwrap();
    let out = cluster
        .create_topic(NewTopic::new("out", 2).replication_factor(3))
        .unwrap();
    let inner = &cluster.inner;
    let (pid, epoch) = inner.init_producer_id("app", 60_000).unwrap();
    let key = |p| inner.partition_key(&tp("out", p)).unwrap();
    let lso = |p| {
        inner
            .replicas_for(&key(p))
            .unwrap()
            .last_stable_offset(&key(p))
            .unwrap()
    };

    // A committed transaction over both partitions and the group's offsets.
    inner
        .add_partitions_to_txn("app", pid, epoch, &[tp("out", 0), tp("out", 1)])
        .unwrap();
    out.partition(0)
        .unwrap()
        .append(&mut txn_batch(pid, epoch, 0, 3))
        .unwrap();
    out.partition(1)
        .unwrap()
        .append(&mut txn_batch(pid, epoch, 0, 2))
        .unwrap();
    assert_eq!((lso(0), lso(1)), (0, 0), "open transaction holds the LSO");
    inner.add_offsets_to_txn("app", pid, epoch, "g").unwrap();
    inner
        .txn_offset_commit(
            "app",
            pid,
            epoch,
            "g",
            &BTreeMap::from([(tp("out", 0), OffsetAndMetadata::new(7))]),
        )
        .unwrap();
    inner.end_txn_marked("app", pid, epoch, true).unwrap();
    assert_eq!(status(&cluster, "app"), TxnStatus::CompleteCommit);
    // Three records + the COMMIT marker; two + the marker.
    assert_eq!((lso(0), lso(1)), (4, 3));
    assert_eq!(inner.group_offsets("g").unwrap()[&tp("out", 0)].offset, 7);

    // An aborted transaction on partition 0.
    inner
        .add_partitions_to_txn("app", pid, epoch, &[tp("out", 0)])
        .unwrap();
    out.partition(0)
        .unwrap()
        .append(&mut txn_batch(pid, epoch, 3, 2))
        .unwrap();
    inner.end_txn_marked("app", pid, epoch, false).unwrap();
    assert_eq!(lso(0), 7);
    let fetched = inner
        .replicas_for(&key(0))
        .unwrap()
        .fetch(&key(0), 0, 1 << 20, FetchBound::TxnCommitted)
        .unwrap();
    let aborted: Vec<(i64, u64)> = fetched
        .aborted_transactions()
        .unwrap()
        .iter()
        .map(|a| (a.producer_id, a.first_offset))
        .collect();
    assert_eq!(aborted, [(pid, 4)]);
    cluster.close().unwrap();

    // Every replica of both partitions holds the same batches, markers
    // included (the control batches at offsets 3 and 6 of partition 0).
    for p in 0..2u32 {
        let mut seen = Vec::new();
        for b in 0..3 {
            let path = setup
                .dir
                .path()
                .join(format!("broker-{b}/out-{p}/00000000000000000000.log"));
            let bytes = bytes::Bytes::from(std::fs::read(&path).unwrap());
            let controls: Vec<(u64, bool)> = crate::format::Batches::new(bytes)
                .map(|batch| {
                    let batch = batch.unwrap();
                    (
                        batch.header().base_offset as u64,
                        batch.header().is_control(),
                    )
                })
                .collect();
            seen.push(controls);
        }
        assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
        let expected: Vec<(u64, bool)> = if p == 0 {
            vec![(0, false), (3, true), (4, false), (6, true)]
        } else {
            vec![(0, false), (2, true)]
        };
        assert_eq!(seen[0], expected, "partition {p}");
    }
}

/// `transactional.id.expiration.ms` of [`Setup::expiring`].
const ID_EXPIRATION_MS: i64 = 60_000;

/// The records of `id` in its `__transaction_state` partition, in log
/// order: its states, and `None` for a tombstone.
fn txn_records(cluster: &Cluster, id: &str) -> Vec<Option<TxnStatus>> {
    let inner = &cluster.inner;
    let p = partition_for_transactional_id(id, inner.config.transaction_state_log_num_partitions());
    let key = inner.partition_key(&tp(TXN_TOPIC, p)).unwrap();
    let fetched = inner
        .replicas_for(&key)
        .unwrap()
        .fetch(&key, 0, 1 << 24, FetchBound::HighWatermark)
        .unwrap();
    let mut out = Vec::new();
    for batch in crate::format::Batches::new(fetched.records().clone()) {
        let batch = batch.unwrap();
        if batch.header().is_control() {
            continue;
        }
        for record in batch.records().unwrap() {
            let record = record.unwrap();
            if super::txn_log::decode_key(record.key.as_deref().unwrap()).unwrap() != id {
                continue;
            }
            out.push(
                record
                    .value
                    .as_deref()
                    .map(|v| super::txn_log::decode_value(v).unwrap().status),
            );
        }
    }
    out
}

/// Moves the clock by `ms` and waits for the timer's pass at the new time.
fn tick(setup: &Setup, cluster: &Cluster, ms: i64) {
    setup.clock.advance_ms(ms);
    assert!(cluster.inner.wait_for_txn_pass(setup.clock.now_ms(), GUARD));
}

/// Kafka's `removeExpiredTransactionalIds`: an id idle for
/// `transactional.id.expiration.ms` with no transaction in flight gets a
/// tombstone in `__transaction_state` and is forgotten; an id with an open
/// transaction, or one whose state changed recently, is kept. The old
/// producer is refused, a reopen does not know the id, and its next init
/// starts afresh with a new producer id.
#[test]
fn an_idle_transactional_id_expires_and_starts_afresh() {
    let setup = Setup::expiring(1);
    let (cluster, markers) = setup.open();
    cluster.create_topic(NewTopic::new("t", 1)).unwrap();
    let inner = &cluster.inner;
    // "idle" commits a transaction and goes quiet.
    let (idle_pid, idle_epoch) = inner.init_producer_id("idle", 60_000).unwrap();
    inner
        .add_partitions_to_txn("idle", idle_pid, idle_epoch, &[tp("t", 0)])
        .unwrap();
    inner
        .end_txn_marked("idle", idle_pid, idle_epoch, true)
        .unwrap();
    assert_eq!(status(&cluster, "idle"), TxnStatus::CompleteCommit);
    // "busy" leaves a transaction open (its timeout is beyond the
    // expiration); "recent" re-inits half-way.
    let (busy_pid, busy_epoch) = inner.init_producer_id("busy", 600_000).unwrap();
    inner
        .add_partitions_to_txn("busy", busy_pid, busy_epoch, &[tp("t", 0)])
        .unwrap();
    let (recent_pid, _) = inner.init_producer_id("recent", 60_000).unwrap();
    markers.take();

    tick(&setup, &cluster, ID_EXPIRATION_MS / 2);
    assert!(inner.txn_metadata("idle").is_some(), "not idle long enough");
    assert_eq!(
        inner.init_producer_id("recent", 60_000).unwrap(),
        (recent_pid, 1)
    );
    // Just short of the expiration: kept (Kafka's rule is inclusive).
    tick(&setup, &cluster, ID_EXPIRATION_MS / 2 - 10_000);
    assert!(inner.txn_metadata("idle").is_some());
    tick(&setup, &cluster, 10_000);

    assert_eq!(inner.txn_metadata("idle"), None, "expired");
    assert_eq!(
        txn_records(&cluster, "idle"),
        [
            Some(TxnStatus::Empty),
            Some(TxnStatus::Ongoing),
            Some(TxnStatus::PrepareCommit),
            Some(TxnStatus::CompleteCommit),
            None
        ],
        "its last record is a tombstone"
    );
    assert_eq!(status(&cluster, "busy"), TxnStatus::Ongoing);
    assert_eq!(status(&cluster, "recent"), TxnStatus::Empty);
    assert!(!txn_records(&cluster, "busy").contains(&None));
    assert!(!txn_records(&cluster, "recent").contains(&None));
    assert!(markers.take().is_empty(), "an expiry writes no marker");
    // The forgotten producer is refused, and the refusal stores nothing.
    assert!(matches!(
        inner.add_partitions_to_txn("idle", idle_pid, idle_epoch, &[tp("t", 0)]),
        Err(Error::InvalidProducerIdMapping { producer_id, .. }) if producer_id == idle_pid
    ));
    assert!(matches!(
        inner.end_txn_marked("idle", idle_pid, idle_epoch, true),
        Err(Error::InvalidProducerIdMapping { .. })
    ));
    assert_eq!(inner.txn_metadata("idle"), None);
    // The open transaction still completes, long past the expiration.
    tick(&setup, &cluster, 4 * ID_EXPIRATION_MS);
    inner
        .end_txn_marked("busy", busy_pid, busy_epoch, true)
        .unwrap();
    assert_eq!(status(&cluster, "busy"), TxnStatus::CompleteCommit);
    cluster.close().unwrap();

    let (cluster, _) = setup.open();
    let inner = &cluster.inner;
    assert_eq!(
        inner.txn_metadata("idle"),
        None,
        "the replay honours the tombstone"
    );
    assert_eq!(status(&cluster, "busy"), TxnStatus::CompleteCommit);
    let (pid, epoch) = inner.init_producer_id("idle", 60_000).unwrap();
    assert_ne!(pid, idle_pid, "a new producer id");
    assert_eq!(epoch, 0);
    assert!(![busy_pid, recent_pid].contains(&pid));
    assert_eq!(
        txn_records(&cluster, "idle").last(),
        Some(&Some(TxnStatus::Empty))
    );
    cluster.close().unwrap();

    // The new state, written after the tombstone, wins at the next replay.
    let (cluster, _) = setup.open();
    let meta = cluster.inner.txn_metadata("idle").unwrap();
    assert_eq!(
        (meta.producer_id, meta.epoch, meta.status),
        (pid, 0, TxnStatus::Empty)
    );
    cluster.close().unwrap();
}

/// Expiry interleaved with reopens: an id that passed its expiration
/// while the cluster was closed is known after the replay until the
/// first removal pass (one interval after the open), removed then; the
/// next open does not know it; its next init starts afresh, and that
/// state survives the next reopen.
#[test]
fn expiry_interleaves_with_reopens() {
    let setup = Setup::expiring(3);
    let (cluster, _) = setup.open();
    cluster
        .create_topic(NewTopic::new("t", 1).replication_factor(3))
        .unwrap();
    let (old_pid, _) = cluster.inner.init_producer_id("a", 60_000).unwrap();
    let (b_pid, _) = cluster.inner.init_producer_id("b", 60_000).unwrap();
    cluster.close().unwrap();

    // Closed past the expiration.
    setup.clock.advance_ms(2 * ID_EXPIRATION_MS);
    let (cluster, _) = setup.open();
    let inner = &cluster.inner;
    assert!(inner.wait_for_txn_pass(setup.clock.now_ms(), GUARD));
    // The pass at the open only aborts and completes: it removes nothing.
    assert_eq!(status(&cluster, "a"), TxnStatus::Empty);
    assert_eq!(status(&cluster, "b"), TxnStatus::Empty);
    // "b" is used again before the first removal pass: it stays.
    assert_eq!(inner.init_producer_id("b", 60_000).unwrap(), (b_pid, 1));
    tick(&setup, &cluster, 10_000);
    assert_eq!(inner.txn_metadata("a"), None);
    assert_eq!(status(&cluster, "b"), TxnStatus::Empty);
    cluster.close().unwrap();

    let (cluster, _) = setup.open();
    let inner = &cluster.inner;
    assert_eq!(inner.txn_metadata("a"), None);
    assert_eq!(txn_records(&cluster, "a").last(), Some(&None));
    let (new_pid, epoch) = inner.init_producer_id("a", 60_000).unwrap();
    assert!(new_pid != old_pid && new_pid != b_pid && epoch == 0);
    // Not idle now: the next pass keeps it.
    tick(&setup, &cluster, 10_000);
    assert_eq!(status(&cluster, "a"), TxnStatus::Empty);
    cluster.close().unwrap();

    let (cluster, _) = setup.open();
    let meta = cluster.inner.txn_metadata("a").unwrap();
    assert_eq!((meta.producer_id, meta.epoch), (new_pid, 0));
    assert_eq!(cluster.inner.txn_metadata("b").unwrap().producer_id, b_pid);
    assert!(cluster.recovery_report().skipped_records.is_empty());
    cluster.close().unwrap();
}

/// A tombstone that cannot be written (the state partition has too few
/// in-sync replicas) leaves the id as it was, and the next pass removes
/// it once the partition is writable again.
#[test]
fn an_expiry_whose_tombstone_fails_is_retried_at_the_next_pass() {
    let setup = Setup::expiring(3);
    let (cluster, _) = setup.open();
    let inner = &cluster.inner;
    inner.init_producer_id("a", 60_000).unwrap();
    let before = inner.txn_metadata("a").unwrap();
    // Two of the three replicas stop: min.insync.replicas (2) fails.
    cluster.stop_broker(1).unwrap();
    cluster.stop_broker(2).unwrap();
    tick(&setup, &cluster, ID_EXPIRATION_MS);
    assert_eq!(inner.txn_metadata("a"), Some(before));
    assert!(!txn_records(&cluster, "a").contains(&None));
    cluster.restart_broker(1).unwrap();
    cluster.restart_broker(2).unwrap();
    let p = partition_for_transactional_id("a", 50) as usize;
    assert!(cluster.wait_until(GUARD, |c| {
        c.describe_topic(TXN_TOPIC)
            .is_ok_and(|d| d.partitions[p].isr.len() >= 2)
    }));
    // (A preferred-leader election may move the partition under a pass's
    // write: that pass fails too, and a later one removes the id.)
    for _ in 0..5 {
        tick(&setup, &cluster, 10_000);
        if inner.txn_metadata("a").is_none() {
            break;
        }
    }
    assert_eq!(inner.txn_metadata("a"), None);
    assert_eq!(txn_records(&cluster, "a").last(), Some(&None));
    cluster.close().unwrap();
}
/// Kafka builds a COMMIT or ABORT marker as a CreateTime batch; its
/// LogValidator then stamps it as any batch appended to a LogAppendTime
/// topic: the timestamp-type attribute set and the append time as the
/// batch's max timestamp. A CreateTime topic's marker keeps CreateTime.
#[test]
fn markers_in_a_log_append_time_topic_carry_the_append_time() {
    use crate::types::TimestampType;
    let setup = Setup::new(1);
    let cluster = Cluster::open(setup.dir.path(), setup.config()).unwrap();
    let append_time = TopicConfig::new().timestamp_type(TimestampType::LogAppendTime);
    cluster
        .create_topic(NewTopic::new("lat", 1).config(append_time))
        .unwrap();
    cluster.create_topic(NewTopic::new("ct", 1)).unwrap();
    let inner = &cluster.inner;
    let (pid, epoch) = inner.init_producer_id("app", 60_000).unwrap();
    for (commit, seq) in [(true, 0), (false, 1)] {
        inner
            .add_partitions_to_txn("app", pid, epoch, &[tp("lat", 0), tp("ct", 0)])
            .unwrap();
        for topic in ["lat", "ct"] {
            cluster
                .topic(topic)
                .unwrap()
                .partition(0)
                .unwrap()
                .append(&mut txn_batch(pid, epoch, seq, 1))
                .unwrap();
        }
        setup.clock.advance_ms(5_000);
        inner.end_txn_marked("app", pid, epoch, commit).unwrap();
    }
    let controls = |topic: &str| {
        let key = inner.partition_key(&tp(topic, 0)).unwrap();
        let fetched = inner
            .replicas_for(&key)
            .unwrap()
            .fetch(&key, 0, 1 << 20, FetchBound::HighWatermark)
            .unwrap();
        crate::format::Batches::new(fetched.records().clone())
            .map(|b| b.unwrap())
            .filter(|b| b.header().is_control())
            .map(|b| {
                let h = b.header();
                let record = b.records().unwrap().next().unwrap().unwrap();
                (
                    h.timestamp_type(),
                    h.base_timestamp,
                    h.max_timestamp,
                    record.timestamp(),
                )
            })
            .collect::<Vec<_>>()
    };
    let (first, second) = (1_005_000, 1_010_000);
    assert_eq!(
        controls("lat"),
        [
            (TimestampType::LogAppendTime, first, first, first),
            (TimestampType::LogAppendTime, second, second, second),
        ]
    );
    assert_eq!(
        controls("ct"),
        [
            (TimestampType::CreateTime, first, first, first),
            (TimestampType::CreateTime, second, second, second),
        ]
    );
    cluster.close().unwrap();
}

/// The client's side of an expiry (Kafka's KIP-360 path): a producer
/// whose transactional id expired while it sat idle finds out at its next
/// transaction, which fails with the abortable
/// `InvalidProducerIdMapping`; the abort takes a new producer id from the
/// coordinator and the next transaction commits. Nothing of the failed
/// one reaches the partition.
#[test]
fn a_producer_whose_id_expired_recovers_after_an_abort() {
    use crate::ProducerRecord;
    let setup = Setup::expiring(1);
    let cluster = Cluster::open(setup.dir.path(), setup.config()).unwrap();
    cluster.create_topic(NewTopic::new("t", 1)).unwrap();
    let producer = app_producer(&cluster);
    let record = |v: &str| ProducerRecord::new("t", v.to_string()).with_partition(0);
    producer.begin_transaction().unwrap();
    let _sent = producer.send(record("v1")).unwrap();
    producer.commit_transaction().unwrap();
    // The markers the timer thread writes after the answer.
    cluster.inner.complete_answered_txns();
    let old_pid = cluster.inner.txn_metadata("app").unwrap().producer_id;
    tick(&setup, &cluster, ID_EXPIRATION_MS);
    assert_eq!(cluster.inner.txn_metadata("app"), None);
    let partition = cluster.topic("t").unwrap().partition(0).unwrap();
    assert_eq!(partition.log_end_offset().unwrap(), 2, "v1 and its marker");

    producer.begin_transaction().unwrap();
    let _sent = producer.send(record("v2")).unwrap();
    assert!(matches!(
        producer.commit_transaction(),
        Err(Error::InvalidProducerIdMapping { producer_id, .. }) if producer_id == old_pid
    ));
    assert_eq!(partition.log_end_offset().unwrap(), 2, "v2 never appended");
    producer.abort_transaction().unwrap();
    producer.begin_transaction().unwrap();
    let _sent = producer.send(record("v3")).unwrap();
    producer.commit_transaction().unwrap();
    cluster.inner.complete_answered_txns();
    let meta = cluster.inner.txn_metadata("app").unwrap();
    assert_ne!(meta.producer_id, old_pid);
    assert_eq!(meta.status, TxnStatus::CompleteCommit);
    assert_eq!(partition.log_end_offset().unwrap(), 4, "v3 and its marker");
    producer.close().unwrap();
    cluster.close().unwrap();
}

/// Dropping the last handle releases the directory before the drop
/// returns, even while one of the cluster's threads holds the cluster for
/// a moment (here the transaction timer, woken by its own pass and by the
/// clock): an immediate reopen is never refused as locked.
#[test]
fn a_reopen_right_after_the_last_drop_finds_the_directory_free() {
    let setup = Setup::new(1);
    for _ in 0..10 {
        let (cluster, _markers) = setup.open();
        setup.clock.advance_ms(10_000);
        assert!(cluster.inner.wait_for_txn_pass(setup.clock.now_ms(), GUARD));
        drop(cluster);
    }
    let (cluster, _markers) = setup.open();
    cluster.close().unwrap();
}

/// A producer that lingers adds a transaction's partitions when their
/// batches are appended, here by the commit, which seals them: not at the
/// send (Kafka's producer sends AddPartitionsToTxn as `send` meets a new
/// partition; here that cost a wake of the sender thread per
/// transaction). A producer without linger hands each batch to the sender
/// thread at once, which adds the partition first.
#[test]
fn a_lingering_transactions_partitions_are_added_when_its_batches_are_appended() {
    let setup = Setup::new(1);
    let (cluster, _markers) = setup.open();
    cluster.create_topic(NewTopic::new("t", 2)).unwrap();
    for linger in [Duration::from_secs(3600), Duration::ZERO] {
        let config = crate::ProducerConfig::builder()
            .transactional_id("app")
            .linger(linger)
            .build()
            .unwrap();
        let producer = crate::Producer::new(&cluster, config).unwrap();
        producer.init_transactions().unwrap();
        producer.begin_transaction().unwrap();
        let sent = [0, 1].map(|p| {
            producer
                .send(crate::ProducerRecord::new("t", "v").with_partition(p))
                .unwrap()
        });
        let added = |c: &Cluster| {
            c.inner
                .txn_metadata("app")
                .is_some_and(|m| m.status == TxnStatus::Ongoing && m.partitions.len() == 2)
        };
        if linger.is_zero() {
            assert!(cluster.wait_until(GUARD, added));
        } else {
            // An hour of linger on a clock that stands still: neither
            // batch is sealed, and neither partition is added.
            assert!(!added(&cluster));
            let meta = cluster.inner.txn_metadata("app").unwrap();
            assert!(meta.partitions.is_empty(), "{meta:?}");
        }
        producer.commit_transaction().unwrap();
        for (p, s) in sent.into_iter().enumerate() {
            assert_eq!(s.wait().unwrap().partition(), p as u32);
        }
        cluster.inner.complete_answered_txns();
        assert_eq!(status(&cluster, "app"), TxnStatus::CompleteCommit);
        producer.close().unwrap();
    }
}

/// A completed state is not appended on its own: it goes into the batch
/// of the id's next record, so a transaction that follows another costs
/// one write less. A close appends the states still waiting, so a reopen
/// finds the transaction complete and writes no marker again (a crash
/// before that leaves `PrepareCommit` last, as a crash between the
/// markers and `CompleteCommit` always could:
/// `a_crash_between_prepare_and_complete_finishes_the_transaction_after_reopen`).
/// The timer's pass appends a state that waited for a whole interval.
#[test]
fn a_completed_state_is_appended_with_the_next_record_or_at_close() {
    use TxnStatus::{CompleteCommit, Empty, Ongoing, PrepareCommit};
    let setup = Setup::new(1);
    let (cluster, markers) = setup.open();
    cluster.create_topic(NewTopic::new("t", 1)).unwrap();
    let inner = &cluster.inner;
    let (pid, epoch) = inner.init_producer_id("app", 60_000).unwrap();
    for round in 1..=2 {
        inner
            .add_partitions_to_txn("app", pid, epoch, &[tp("t", 0)])
            .unwrap();
        inner.end_txn_marked("app", pid, epoch, true).unwrap();
        assert_eq!(markers.take().len(), 1, "round {round}");
        assert_eq!(
            status(&cluster, "app"),
            CompleteCommit,
            "answered as complete"
        );
    }
    // The first transaction's completion went in with the second's
    // Ongoing; the second's waits.
    let records = txn_records(&cluster, "app");
    assert_eq!(
        records,
        [
            Some(Empty),
            Some(Ongoing),
            Some(PrepareCommit),
            Some(CompleteCommit),
            Some(Ongoing),
            Some(PrepareCommit)
        ]
    );
    cluster.close().unwrap();

    let (cluster, markers) = setup.open();
    assert_eq!(
        txn_records(&cluster, "app").last(),
        Some(&Some(CompleteCommit)),
        "the close appended it"
    );
    assert_eq!(status(&cluster, "app"), CompleteCommit);
    tick(&setup, &cluster, 10_000);
    assert!(markers.take().is_empty(), "nothing to complete again");

    // Another, then the timer: its next pass appends the completion.
    let inner = &cluster.inner;
    inner
        .add_partitions_to_txn("app", pid, epoch, &[tp("t", 0)])
        .unwrap();
    inner.end_txn_marked("app", pid, epoch, true).unwrap();
    assert_eq!(
        txn_records(&cluster, "app").last(),
        Some(&Some(PrepareCommit))
    );
    tick(&setup, &cluster, 10_000);
    assert_eq!(
        txn_records(&cluster, "app").last(),
        Some(&Some(CompleteCommit))
    );
    cluster.close().unwrap();
}

/// `end_txn` answers once `PrepareCommit` is recorded, as Kafka's
/// coordinator does; the timer thread writes the markers after, with no
/// further request and no clock movement.
#[test]
fn an_end_is_answered_once_prepared_and_the_timer_thread_writes_the_markers() {
    let setup = Setup::new(1);
    let (cluster, markers) = setup.open();
    cluster.create_topic(NewTopic::new("t", 2)).unwrap();
    let inner = &cluster.inner;
    let (pid, epoch) = inner
        .init_producer_id("app", DEFAULT_TRANSACTION_TIMEOUT_MS)
        .unwrap();
    inner
        .add_partitions_to_txn("app", pid, epoch, &[tp("t", 0), tp("t", 1)])
        .unwrap();
    let (open, gate) = crossbeam_channel::bounded(0);
    *markers.gate.lock() = Some(gate);
    // Each marker waits at the gate, so an end that wrote them itself
    // would not return before the gate opens below.
    inner
        .end_txn("app", pid, epoch, true, Markers::Timer)
        .unwrap();
    assert!(markers.take().is_empty(), "answered before any marker");
    // Another thread is waiting to write them.
    for _ in 0..2 {
        open.send_timeout((), GUARD).unwrap();
    }
    assert!(cluster.wait_until(GUARD, |c| {
        c.inner
            .txn_metadata("app")
            .is_some_and(|m| m.status == TxnStatus::CompleteCommit)
    }));
    let ce = coordinator_epoch(&cluster, "app");
    assert_eq!(
        markers.take(),
        [
            marker("t", 0, pid, epoch, true, ce),
            marker("t", 1, pid, epoch, true, ce)
        ]
    );
    cluster.close().unwrap();
}

/// A read in the same process after `commit_transaction` returned sees
/// the commit even while nobody has written the markers yet (the
/// producer's sender and the timer thread are held here): the read writes
/// them first.
#[test]
fn a_read_after_the_commit_writes_the_markers_it_would_wait_for() {
    use crate::{Consumer, ConsumerConfig, IsolationLevel, ProducerRecord};
    let setup = Setup::new(1);
    let cluster = Cluster::open(setup.dir.path(), setup.config()).unwrap();
    cluster.create_topic(NewTopic::new("t", 1)).unwrap();
    cluster.create_topic(NewTopic::new("u", 1)).unwrap();
    // The sender path, whose markers follow the commit's return.
    let producer = app_producer_lingering(&cluster, Duration::ZERO);
    let ends = |topic: &str| end_and_lso(&cluster, topic, 0);
    cluster.inner.txn.hold_queue.store(true, Ordering::SeqCst);
    cluster.inner.txn.hold_senders.store(true, Ordering::SeqCst);
    producer.begin_transaction().unwrap();
    let _sent = producer
        .send(ProducerRecord::new("t", "a").with_partition(0))
        .unwrap();
    let _sent = producer
        .send(ProducerRecord::new("u", "b").with_partition(0))
        .unwrap();
    producer.commit_transaction().unwrap();
    assert_eq!(status(&cluster, "app"), TxnStatus::PrepareCommit);
    assert_eq!(ends("t"), (1, 0), "no marker yet: the LSO holds");
    assert_eq!(ends("u"), (1, 0));

    // A read_committed consumer's poll writes both markers first.
    let mut consumer = Consumer::new(
        &cluster,
        ConsumerConfig::builder()
            .isolation_level(IsolationLevel::ReadCommitted)
            .build()
            .unwrap(),
    )
    .unwrap();
    consumer.assign(&[tp("t", 0)]).unwrap();
    consumer.seek_to_beginning(&[tp("t", 0)]).unwrap();
    let values: Vec<Vec<u8>> = consumer
        .poll(Duration::ZERO)
        .unwrap()
        .iter()
        .map(|r| r.value().unwrap().to_vec())
        .collect();
    assert_eq!(values, [b"a".to_vec()]);
    assert_eq!(ends("t"), (2, 2));
    assert_eq!(ends("u"), (2, 2), "every marker of the transaction");
    assert_eq!(status(&cluster, "app"), TxnStatus::CompleteCommit);

    // So does a partition handle's read (here the high watermark).
    producer.begin_transaction().unwrap();
    let _sent = producer
        .send(ProducerRecord::new("t", "c").with_partition(0))
        .unwrap();
    producer.commit_transaction().unwrap();
    assert_eq!(ends("t"), (3, 2));
    let partition = cluster.topic("t").unwrap().partition(0).unwrap();
    assert_eq!(partition.high_watermark().unwrap(), 4);
    assert_eq!(ends("t"), (4, 4));
    consumer.close().unwrap();
    producer.close().unwrap();
    cluster.close().unwrap();
}

/// A producer's `commit_transaction` returns once the commit is recorded;
/// its sender thread then writes the markers, with no read, no timer pass
/// (the clock stands still) and no further call.
#[test]
fn the_producers_sender_writes_the_markers_after_the_commit_returns() {
    use crate::ProducerRecord;
    let setup = Setup::new(1);
    let cluster = Cluster::open(setup.dir.path(), setup.config()).unwrap();
    cluster.create_topic(NewTopic::new("t", 2)).unwrap();
    let producer = app_producer_lingering(&cluster, Duration::ZERO);
    // Not the timer thread: only the sender can write them.
    cluster.inner.txn.hold_queue.store(true, Ordering::SeqCst);
    for commit in [true, false] {
        producer.begin_transaction().unwrap();
        for p in 0..2 {
            let _sent = producer
                .send(ProducerRecord::new("t", "v").with_partition(p))
                .unwrap();
        }
        if commit {
            producer.commit_transaction().unwrap();
        } else {
            producer.flush().unwrap();
            producer.abort_transaction().unwrap();
        }
        let done = if commit {
            TxnStatus::CompleteCommit
        } else {
            TxnStatus::CompleteAbort
        };
        assert!(
            cluster.wait_until(GUARD, |c| {
                c.inner
                    .txn_metadata("app")
                    .is_some_and(|m| m.status == done)
            }),
            "commit {commit}: the markers were never written"
        );
    }
    for p in 0..2 {
        assert_eq!(
            end_and_lso(&cluster, "t", p),
            (4, 4),
            "2 records, 2 markers"
        );
    }
    producer.close().unwrap();
    cluster.close().unwrap();
}

/// A producer that lingers (the default) commits on the calling thread:
/// when `commit_transaction` returns, the transaction's records and its
/// markers are in every partition's log, with neither the sender thread
/// nor the timer thread to write them (both held) and no read to write
/// them first (the offsets are the replica manager's).
#[test]
fn a_lingering_producers_commit_writes_the_markers_before_it_returns() {
    use crate::ProducerRecord;
    let setup = Setup::new(1);
    let cluster = Cluster::open(setup.dir.path(), setup.config()).unwrap();
    cluster.create_topic(NewTopic::new("t", 2)).unwrap();
    let producer = app_producer(&cluster);
    cluster.inner.txn.hold_queue.store(true, Ordering::SeqCst);
    cluster.inner.txn.hold_senders.store(true, Ordering::SeqCst);
    for (round, values) in [1_u64, 3].into_iter().enumerate() {
        producer.begin_transaction().unwrap();
        for p in 0..2 {
            for _ in 0..values {
                let _sent = producer
                    .send(ProducerRecord::new("t", "v").with_partition(p))
                    .unwrap();
            }
        }
        producer.commit_transaction().unwrap();
        assert_eq!(status(&cluster, "app"), TxnStatus::CompleteCommit);
        let end = if round == 0 { 2 } else { 2 + values + 1 };
        for p in 0..2 {
            assert_eq!(end_and_lso(&cluster, "t", p), (end, end), "round {round}");
        }
    }
    producer.close().unwrap();
    cluster.close().unwrap();
}

/// A producer of transactional id `app`, its transactions initialised.
fn app_producer(cluster: &Cluster) -> crate::Producer {
    app_producer_lingering(cluster, Duration::from_millis(5))
}

/// [`app_producer`] with `linger.ms` `linger`: 0 hands every batch and
/// the commit to the sender thread, which writes the markers after the
/// commit returns; above 0 (the default) the committing thread appends
/// the transaction's batches and writes the markers itself.
fn app_producer_lingering(cluster: &Cluster, linger: Duration) -> crate::Producer {
    let config = crate::ProducerConfig::builder()
        .transactional_id("app")
        .linger(linger)
        .build()
        .unwrap();
    let producer = crate::Producer::new(cluster, config).unwrap();
    producer.init_transactions().unwrap();
    producer
}

/// The log end and last stable offsets of `topic`'s `partition`, read
/// from its replica manager (not through the public API, whose reads
/// first write the answered transactions' markers).
fn end_and_lso(cluster: &Cluster, topic: &str, partition: u32) -> (u64, u64) {
    let key = cluster.inner.partition_key(&tp(topic, partition)).unwrap();
    let replicas = cluster.inner.replicas_for(&key).unwrap();
    (
        replicas.offsets(&key).unwrap().log_end,
        replicas.last_stable_offset(&key).unwrap(),
    )
}
