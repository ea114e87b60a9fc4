//! Replication tests: two or three replica managers in one process, a
//! fake controller applying ISR and leadership decisions to every one of
//! them, a manual clock, and fetches driven step by step.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use uuid::Uuid;

use super::*;
use crate::clock::{Clock, ManualClock};
use crate::config::{FlushPolicy, LogConfig};
use crate::error::{Error, Result};
use crate::format::BatchBuilder;
use crate::log::Log;
use crate::replica::fetcher::Throttle;
use crate::types::Compression;

/// The controller as the tests play it: it holds the partition's state,
/// takes ISR proposals made against the current state, and hands every
/// decision to every live manager.
#[derive(Debug)]
struct FakeController {
    state: Mutex<LeaderAndIsr>,
    managers: Mutex<BTreeMap<u32, Weak<ReplicaManager>>>,
    /// Every ISR it accepted, in order.
    accepted: Mutex<Vec<Vec<u32>>>,
}

impl FakeController {
    fn apply(&self, key: &TopicIdPartition, state: &LeaderAndIsr) {
        let managers: Vec<Arc<ReplicaManager>> = self
            .managers
            .lock()
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for manager in managers {
            let _ = manager.apply_leader_and_isr(key, state.clone());
        }
    }

    /// Elects `leader` (or none) with `isr`, in a new leader epoch.
    fn elect(&self, key: &TopicIdPartition, leader: Option<u32>, isr: Vec<u32>) -> LeaderAndIsr {
        let state = {
            let mut state = self.state.lock();
            state.leader = leader;
            state.isr = isr;
            state.leader_epoch += 1;
            state.partition_epoch += 1;
            state.clone()
        };
        self.apply(key, &state);
        state
    }
}

impl AlterPartition for FakeController {
    fn alter_partition(
        &self,
        key: &TopicIdPartition,
        leader: u32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<u32>,
    ) -> Result<LeaderAndIsr> {
        let state = {
            let mut state = self.state.lock();
            if state.leader != Some(leader)
                || state.leader_epoch != leader_epoch
                || state.partition_epoch != partition_epoch
            {
                return Err(Error::FencedLeaderEpoch {
                    topic: key.topic.to_string(),
                    partition: key.partition,
                    epoch: leader_epoch,
                    current: state.leader_epoch,
                });
            }
            state.isr = isr.clone();
            state.partition_epoch += 1;
            state.clone()
        };
        self.accepted.lock().push(isr);
        self.apply(key, &state);
        Ok(state)
    }
}

/// `n` brokers each hosting a replica of partition `t-0` (broker 0
/// leading in epoch 0, every replica in sync), on one manual clock.
struct Rig {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    config: LogConfig,
    min_insync: usize,
    registry: Arc<ReplicaRegistry>,
    managers: Vec<Arc<ReplicaManager>>,
    controller: Arc<FakeController>,
    key: TopicIdPartition,
}

impl Rig {
    fn new(n: u32, config: LogConfig, min_insync: usize) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let replicas: Vec<u32> = (0..n).collect();
        let controller = Arc::new(FakeController {
            state: Mutex::new(LeaderAndIsr::new(replicas)),
            managers: Mutex::new(BTreeMap::new()),
            accepted: Mutex::new(Vec::new()),
        });
        let key = TopicIdPartition {
            topic_id: Uuid::from_u128(7),
            topic: Arc::from("t"),
            partition: 0,
        };
        let mut rig = Rig {
            dir,
            clock,
            config,
            min_insync,
            registry: Arc::new(ReplicaRegistry::default()),
            managers: Vec::new(),
            controller,
            key,
        };
        for b in 0..n {
            let manager = rig.start(b);
            rig.managers.push(manager);
        }
        rig
    }

    fn log_dir(&self, broker: u32) -> PathBuf {
        self.dir.path().join(format!("broker-{broker}")).join("t-0")
    }

    /// Starts broker `broker`'s manager over its log (as the controller's
    /// state says) and registers it.
    fn start(&self, broker: u32) -> Arc<ReplicaManager> {
        let mut replica_config = ReplicaConfig::new(self.clock.clone() as Arc<dyn Clock>);
        replica_config.ack_timeout_ms = 60_000;
        let manager = Arc::new(ReplicaManager::with_config(broker, replica_config));
        let clock: Arc<dyn Clock> = self.clock.clone();
        let log = Log::builder(self.log_dir(broker))
            .config(self.config.clone())
            .clock(clock)
            .open()
            .unwrap();
        let roles = self.controller.state.lock().clone();
        manager
            .host(
                &self.key.topic,
                self.key.topic_id,
                0,
                roles,
                self.min_insync,
                log,
            )
            .unwrap();
        manager.set_alter_partition(self.controller.clone());
        self.registry.register(&manager);
        self.controller
            .managers
            .lock()
            .insert(broker, Arc::downgrade(&manager));
        manager
    }

    /// Closes broker `broker` cleanly and starts it again over the same
    /// files, its high watermark restored from what it closed with (its
    /// `replication-offset-checkpoint` entry).
    fn restart(&mut self, broker: u32) {
        let closed = self.managers[broker as usize].shutdown();
        let offsets = closed[0].2.as_ref().unwrap().unwrap();
        let manager = self.start(broker);
        manager
            .restore_high_watermark(&self.key, offsets.high_watermark)
            .unwrap();
        self.managers[broker as usize] = manager;
    }

    fn m(&self, broker: u32) -> &ReplicaManager {
        &self.managers[broker as usize]
    }

    /// One fetch round of `follower` from `leader`.
    fn fetch(&self, follower: u32, leader: u32) -> FetchRound {
        let round = fetch_once(self.m(follower), self.m(leader));
        assert!(
            round
                .errors
                .iter()
                .all(|(_, e)| matches!(e, Error::FencedLeaderEpoch { .. })),
            "{:?}",
            round.errors
        );
        round
    }

    /// Fetches every follower from the leader until nothing moves.
    fn sync(&self) {
        let leader = self.controller.state.lock().leader.unwrap();
        for _ in 0..100 {
            let mut moved = false;
            for f in 0..self.managers.len() as u32 {
                if f != leader {
                    let before = self.offsets(f);
                    self.fetch(f, leader);
                    moved |= self.offsets(f) != before;
                }
            }
            if !moved {
                return;
            }
        }
        panic!("replication did not settle");
    }

    fn append(&self, broker: u32, records: usize) -> crate::log::AppendInfo {
        self.m(broker)
            .append(
                &self.key,
                &mut batch(records, "v"),
                AppendOrigin::Client,
                AppendAcks::Leader,
            )
            .unwrap()
    }

    fn append_all(&self, records: usize) -> Result<(crate::log::AppendInfo, Option<PendingAck>)> {
        let leader = self.controller.state.lock().leader.unwrap();
        self.m(leader).append_pending(
            &self.key,
            &mut batch(records, "v"),
            AppendOrigin::Client,
            AppendAcks::All,
        )
    }

    fn offsets(&self, broker: u32) -> PartitionOffsets {
        self.m(broker).offsets(&self.key).unwrap()
    }

    fn hw(&self, broker: u32) -> u64 {
        self.offsets(broker).high_watermark
    }

    fn leo(&self, broker: u32) -> u64 {
        self.offsets(broker).log_end
    }

    fn isr(&self) -> Vec<u32> {
        self.controller.state.lock().isr.clone()
    }

    /// Values of every record of broker `broker`'s log, with each batch's
    /// leader epoch.
    fn contents(&self, broker: u32) -> Vec<(u64, i32, Vec<u8>)> {
        self.m(broker)
            .with_log(&self.key, |log| {
                let read = log.read(log.log_start_offset(), usize::MAX)?;
                let mut out = Vec::new();
                for batch in read.batches() {
                    let batch = batch?;
                    let epoch = batch.header().partition_leader_epoch;
                    let base = batch.header().base_offset as u64;
                    for (i, record) in batch.records().unwrap().enumerate() {
                        let record = record.unwrap();
                        out.push((base + i as u64, epoch, record.value().unwrap().to_vec()));
                    }
                }
                Ok(out)
            })
            .unwrap()
    }

    /// A consumer's read from the leader (bounded by the high watermark):
    /// the offsets it gets.
    fn consume(&self, broker: u32, from: u64) -> Vec<u64> {
        let fetched = self
            .m(broker)
            .fetch(&self.key, from, usize::MAX, FetchBound::HighWatermark)
            .unwrap();
        fetched
            .into_log_read()
            .batches()
            .flat_map(|b| {
                let h = *b.unwrap().header();
                (h.base_offset as u64)..=(h.last_offset() as u64)
            })
            .collect()
    }

    fn shutdown_all(&self) {
        for m in &self.managers {
            for (_, _, closed) in m.shutdown() {
                closed.unwrap();
            }
        }
    }
}

fn batch(records: usize, value: &str) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Compression::None);
    for _ in 0..records {
        builder.append(1, None, Some(value.as_bytes()), &[]);
    }
    builder.build().unwrap().to_vec()
}

fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn log_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut all = files(dir);
    all.retain(|name, _| name.ends_with(".log") || name == "leader-epoch-checkpoint");
    all
}

/// A follower copies the leader's batches with their offsets and epochs;
/// after a clean close its segment files and leader epoch file are the
/// leader's, byte for byte, across a segment roll and a change of epoch.
#[test]
fn a_follower_catches_up_and_its_segment_files_match_the_leaders() {
    let config = LogConfig::builder().segment_bytes(2048).build().unwrap();
    let rig = Rig::new(3, config, 1);
    for i in 0..20 {
        rig.append(0, 1 + i % 4);
        if i % 7 == 0 {
            rig.sync();
        }
    }
    rig.sync();
    // A new epoch with the same leader (re-elected).
    rig.controller.elect(&rig.key, Some(0), vec![0, 1, 2]);
    for _ in 0..10 {
        rig.append(0, 3);
    }
    rig.sync();
    let end = rig.leo(0);
    assert!(
        rig.m(0)
            .with_log(&rig.key, |l| Ok(l.segment_count()))
            .unwrap()
            > 1
    );
    for b in 1..3 {
        assert_eq!(rig.leo(b), end);
        assert_eq!(rig.contents(b), rig.contents(0));
    }
    assert_eq!(rig.hw(0), end);
    rig.shutdown_all();
    let leader = log_files(&rig.log_dir(0));
    assert!(leader.len() > 2, "{:?}", leader.keys());
    for b in 1..3 {
        assert_eq!(log_files(&rig.log_dir(b)), leader, "broker {b}");
    }
}

/// A follower's fetcher is woken by appends at the leader, not by moves
/// of the high watermark (it learns those at its next fetch, as Kafka's
/// followers do); a consumer is woken by both.
#[test]
fn fetchers_wake_on_appends_and_consumers_also_on_high_watermark_moves() {
    let rig = Rig::new(3, LogConfig::default(), 1);
    let (fetcher_tx, fetcher_rx) = crossbeam_channel::bounded(1);
    let (consumer_tx, consumer_rx) = crossbeam_channel::bounded(1);
    rig.m(0).watch_as_follower(&rig.key, &fetcher_tx);
    rig.m(0).watch(&rig.key, &consumer_tx);
    rig.append(0, 5);
    assert!(fetcher_rx.try_recv().is_ok(), "an append wakes a fetcher");
    assert!(consumer_rx.try_recv().is_ok(), "and a consumer");
    // Both followers fetch the batch and report their log ends: the high
    // watermark moves.
    for b in [1, 2] {
        rig.fetch(b, 0);
        rig.fetch(b, 0);
    }
    assert_eq!(rig.hw(0), 5);
    assert!(consumer_rx.try_recv().is_ok(), "a move wakes a consumer");
    assert!(fetcher_rx.try_recv().is_err(), "but no fetcher");
    // A follower learns it at its next fetch all the same.
    rig.fetch(1, 0);
    assert_eq!(rig.hw(1), 5);
    // Unwatched, neither is woken.
    rig.m(0).unwatch(&rig.key, &fetcher_tx);
    rig.m(0).unwatch(&rig.key, &consumer_tx);
    rig.append(0, 1);
    assert!(fetcher_rx.try_recv().is_err() && consumer_rx.try_recv().is_err());
}

/// The leader's high watermark is the minimum log end offset over the
/// ISR, the leader's own included; a follower not heard from holds it;
/// it never moves back; consumers read below it only and are woken when
/// it moves; a follower's high watermark is min(leader's, own log end).
#[test]
fn the_high_watermark_is_the_minimum_log_end_over_the_isr_and_bounds_consumers() {
    let rig = Rig::new(3, LogConfig::default(), 1);
    let (tx, rx) = crossbeam_channel::bounded(1);
    rig.m(0).watch(&rig.key, &tx);
    rig.append(0, 5);
    let _ = rx.try_recv();
    assert_eq!((rig.hw(0), rig.leo(0)), (0, 5));
    assert!(rig.consume(0, 0).is_empty(), "nothing committed yet");
    // Follower 1 fetches the batch, then reports its log end.
    rig.fetch(1, 0);
    rig.fetch(1, 0);
    assert_eq!(rig.hw(0), 0, "follower 2 is in the ISR and not heard from");
    rig.fetch(2, 0);
    assert_eq!(rig.hw(0), 0);
    assert!(rx.try_recv().is_err(), "no move, no wake-up");
    rig.fetch(2, 0);
    assert_eq!(rig.hw(0), 5);
    assert!(rx.try_recv().is_ok(), "consumers are woken when it moves");
    assert_eq!(rig.consume(0, 0), [0, 1, 2, 3, 4]);
    // Follower 1 learns it on its next fetch; follower 2 already did.
    assert_eq!((rig.hw(1), rig.hw(2)), (0, 5));
    rig.fetch(1, 0);
    assert_eq!(rig.hw(1), 5);

    rig.append(0, 3);
    rig.fetch(1, 0);
    rig.fetch(1, 0);
    assert_eq!(rig.hw(0), 5, "follower 2 lacks 5..8");
    assert_eq!(rig.consume(0, 0), [0, 1, 2, 3, 4]);
    assert!(rig.consume(0, 5).is_empty());
    // Out of the ISR, follower 2 no longer holds it.
    rig.clock.advance_ms(30_001);
    rig.fetch(1, 0);
    assert_eq!(rig.m(0).maybe_shrink_isr(), 1);
    assert_eq!(rig.isr(), [0, 1]);
    assert_eq!(rig.hw(0), 8);
    assert_eq!(rig.consume(0, 5), [5, 6, 7]);
    let info = rig.m(0).describe(&rig.key).unwrap();
    assert_eq!(info.offsets.high_watermark, 8);
    let f2 = info.replicas.iter().find(|r| r.broker == 2).unwrap();
    assert_eq!(f2.log_end_offset, Some(5));
}

/// `acks=all` completes only once every ISR member has the batch; `acks=1`
/// at the leader's append.
#[test]
fn acks_all_completes_only_once_every_isr_member_has_the_batch() {
    let rig = Rig::new(3, LogConfig::default(), 2);
    let (info, pending) = rig.append_all(4).unwrap();
    assert_eq!(info.last_offset(), 3);
    let pending = pending.expect("followers lack the batch");
    assert!(pending.try_result().is_none());
    rig.fetch(1, 0);
    rig.fetch(1, 0);
    assert!(pending.try_result().is_none(), "follower 2 lacks it");
    rig.fetch(2, 0);
    assert!(pending.try_result().is_none(), "follower 2 has not said so");
    rig.fetch(2, 0);
    assert!(matches!(pending.try_result(), Some(Ok(()))));
    for b in 0..3 {
        assert!(rig.leo(b) >= 4);
    }
    let (_, none) = rig
        .m(0)
        .append_pending(
            &rig.key,
            &mut batch(1, "x"),
            AppendOrigin::Client,
            AppendAcks::Leader,
        )
        .unwrap();
    assert!(none.is_none(), "acks=1 does not wait");
    // A blocking acks=all append returns once the followers have it.
    let managers = rig.managers.clone();
    let key = rig.key.clone();
    let appender = std::thread::spawn(move || {
        managers[0].append(
            &key,
            &mut batch(2, "y"),
            AppendOrigin::Client,
            AppendAcks::All,
        )
    });
    while !appender.is_finished() {
        rig.fetch(1, 0);
        rig.fetch(2, 0);
        // Wait for the appender's next step without sleeping.
        std::thread::yield_now();
    }
    let info = appender.join().unwrap().unwrap();
    assert!(rig.hw(0) > info.last_offset());
    assert!(rig.leo(1) > info.last_offset() && rig.leo(2) > info.last_offset());
}

/// With one replica, acks=all completes at the append: nothing waits.
#[test]
fn one_replica_acks_all_is_acks_1() {
    let rig = Rig::new(1, LogConfig::default(), 1);
    let (_, pending) = rig.append_all(3).unwrap();
    assert!(pending.is_none());
    assert_eq!(rig.hw(0), 3);
}

/// `NotEnoughReplicas` refuses an `acks=all` append before it is written
/// while the ISR is below `min.insync.replicas`; an append waiting when
/// the ISR shrinks below it fails with `NotEnoughReplicasAfterAppend`
/// (retriable); leadership lost fails it with `NotLeaderOrFollower`; the
/// wait is bounded on the clock.
#[test]
fn not_enough_replicas_before_and_after_the_append() {
    let rig = Rig::new(3, LogConfig::default(), 2);
    let (_, pending) = rig.append_all(1).unwrap();
    let pending = pending.unwrap();
    // Nobody fetches: after the lag time the ISR shrinks to the leader.
    rig.clock.advance_ms(30_001);
    assert_eq!(rig.m(0).maybe_shrink_isr(), 1);
    assert_eq!(rig.isr(), [0]);
    let failed = pending.try_result().unwrap().unwrap_err();
    assert!(
        matches!(
            failed,
            Error::NotEnoughReplicasAfterAppend {
                in_sync: 1,
                required: 2,
                ..
            }
        ),
        "{failed:?}"
    );
    assert!(failed.is_retriable());
    assert!(matches!(
        failed.duplicate(),
        Error::NotEnoughReplicasAfterAppend { .. }
    ));
    let end = rig.leo(0);
    let refused = rig.append_all(1).unwrap_err();
    assert!(
        matches!(
            refused,
            Error::NotEnoughReplicas {
                in_sync: 1,
                required: 2,
                ..
            }
        ),
        "{refused:?}"
    );
    assert_eq!(rig.leo(0), end, "nothing appended");
    // Follower 1 catches up and is added back; acks=all works again.
    rig.fetch(1, 0);
    rig.fetch(1, 0);
    assert_eq!(rig.isr(), [0, 1]);
    let (_, pending) = rig.append_all(1).unwrap();
    let pending = pending.unwrap();
    // Leadership moves: the waiting ack fails with NotLeaderOrFollower.
    rig.controller.elect(&rig.key, Some(1), vec![1]);
    assert!(matches!(
        pending.try_result(),
        Some(Err(Error::NotLeaderOrFollower { broker: 0, .. }))
    ));
    // The wait is bounded on the clock.
    rig.controller.elect(&rig.key, Some(1), vec![1, 0]);
    let (_, pending) = rig.append_all(1).unwrap();
    let pending = pending.unwrap();
    let pending = pending.with_timeout(rig.clock.now_ms(), 1_000);
    let clock: Arc<dyn Clock> = rig.clock.clone();
    let clock2 = rig.clock.clone();
    let waiter = std::thread::spawn(move || pending.wait(&clock));
    while !waiter.is_finished() {
        clock2.advance_ms(100);
        std::thread::yield_now();
    }
    assert!(matches!(waiter.join().unwrap(), Err(Error::Timeout { .. })));
    assert_eq!(rig.m(1).pending_acks(&rig.key), 1, "nobody waits for it");
    // The timed-out ack leaves the purgatory when the next one is parked.
    let (_, next) = rig.append_all(1).unwrap();
    assert!(next.is_some());
    assert_eq!(rig.m(1).pending_acks(&rig.key), 1);
}

/// A follower that stops fetching leaves the ISR once it has not caught
/// up for `replica.lag.time.max.ms` on the clock (not before), and comes
/// back when it reaches the high watermark.
#[test]
fn isr_shrinks_after_the_lag_time_and_expands_when_caught_up() {
    let rig = Rig::new(3, LogConfig::default(), 1);
    rig.append(0, 5);
    rig.sync();
    assert_eq!(rig.hw(0), 5);
    // Follower 2 pauses; follower 1 keeps fetching.
    rig.append(0, 2);
    rig.clock.advance_ms(20_000);
    rig.fetch(1, 0);
    rig.fetch(1, 0);
    assert_eq!(rig.m(0).maybe_shrink_isr(), 0);
    rig.clock.advance_ms(10_000);
    assert_eq!(rig.m(0).maybe_shrink_isr(), 0, "exactly the lag: still in");
    rig.clock.advance_ms(1);
    assert_eq!(rig.m(0).maybe_shrink_isr(), 1);
    assert_eq!(rig.isr(), [0, 1]);
    assert_eq!(rig.m(0).describe(&rig.key).unwrap().isr, [0, 1]);
    assert_eq!(rig.m(2).describe(&rig.key).unwrap().isr, [0, 1]);
    assert_eq!(rig.hw(0), 7);
    // Follower 1, caught up and idle, stays in.
    rig.clock.advance_ms(60_000);
    assert_eq!(rig.m(0).maybe_shrink_isr(), 0);
    // Follower 2 resumes: added back once it reaches the high watermark.
    rig.fetch(2, 0);
    assert_eq!(rig.isr(), [0, 1], "fetched from 5, below the HW 7");
    rig.fetch(2, 0);
    assert_eq!(rig.isr(), [0, 1, 2]);
    assert_eq!(
        rig.controller.accepted.lock().clone(),
        [vec![0, 1], vec![0, 1, 2]]
    );
}

/// An `AlterPartition` that runs a hook while the proposal is in flight
/// (before the controller decides), then answers as the fake controller.
type Hook = Box<dyn FnOnce() + Send>;

struct InFlightHook {
    controller: Arc<FakeController>,
    hook: Mutex<Option<Hook>>,
}

impl InFlightHook {
    /// The rig's controller, with `hook` run before the next proposal
    /// is answered.
    fn new(rig: &Rig, hook: Hook) -> Arc<Self> {
        Arc::new(InFlightHook {
            controller: rig.controller.clone(),
            hook: Mutex::new(Some(hook)),
        })
    }
}

/// Five records on every replica, then two more that only follower 1
/// fetches; past the lag time follower 1 fetches again, so follower 2 is
/// the one lagging (the next shrink drops it).
fn lag_follower_2(rig: &Rig) {
    rig.append(0, 5);
    rig.sync();
    rig.append(0, 2);
    rig.fetch(1, 0);
    rig.fetch(1, 0);
    rig.clock.advance_ms(30_001);
    rig.fetch(1, 0);
}

impl std::fmt::Debug for InFlightHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InFlightHook")
    }
}

impl AlterPartition for InFlightHook {
    fn alter_partition(
        &self,
        key: &TopicIdPartition,
        leader: u32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<u32>,
    ) -> Result<LeaderAndIsr> {
        let hook = self.hook.lock().take();
        if let Some(hook) = hook {
            hook();
        }
        self.controller
            .alter_partition(key, leader, leader_epoch, partition_epoch, isr)
    }
}

/// A follower that catches up while a shrink is in flight gets no
/// expansion proposed then; once the shrink is answered the leader wakes
/// the long-polling fetchers, so an idle partition's follower fetches
/// again and is added back (else an ISR below `min.insync.replicas` could
/// never grow: its `acks=all` appends are refused, and nothing else would
/// wake the follower on a still clock).
#[test]
fn a_follower_caught_up_during_a_shrink_is_woken_to_rejoin() {
    let rig = Arc::new(Rig::new(3, LogConfig::default(), 2));
    // Follower 2 falls behind by two records and past the lag time.
    lag_follower_2(&rig);
    let (tx, rx) = crossbeam_channel::bounded(1);
    rig.m(0).watch(&rig.key, &tx);
    let inner = rig.clone();
    let drained = rx.clone();
    let hooked = InFlightHook::new(
        &rig,
        Box::new(move || {
            // While the shrink is in flight follower 2 catches up: no
            // expansion can be proposed now.
            inner.fetch(2, 0);
            inner.fetch(2, 0);
            while drained.try_recv().is_ok() {}
        }),
    );
    rig.m(0).set_alter_partition(hooked);
    assert_eq!(rig.m(0).maybe_shrink_isr(), 1);
    assert_eq!(rig.isr(), [0, 1]);
    assert!(
        rx.try_recv().is_ok(),
        "the answered proposal woke the fetchers"
    );
    // The woken follower's fetch (nothing new to read) proposes it back.
    rig.fetch(2, 0);
    assert_eq!(rig.isr(), [0, 1, 2]);
}

/// While an expansion is in flight the high watermark waits for the
/// joining follower too (Kafka's `maximalIsr`): records the rest of the
/// ISR takes meanwhile are not acknowledged until it has them, so no
/// member of the new ISR (which may be elected leader next) lacks an
/// acknowledged record.
#[test]
fn the_high_watermark_waits_for_a_follower_joining_the_isr() {
    let rig = Arc::new(Rig::new(3, LogConfig::default(), 1));
    // Follower 2 falls behind and out of the ISR.
    lag_follower_2(&rig);
    assert_eq!(rig.m(0).maybe_shrink_isr(), 1);
    assert_eq!(rig.isr(), [0, 1]);
    assert_eq!(rig.hw(0), 7);
    rig.fetch(2, 0);
    assert_eq!(rig.leo(2), 7);
    let inner = rig.clone();
    let acked = Arc::new(Mutex::new(None));
    let seen = acked.clone();
    let hooked = InFlightHook::new(
        &rig,
        Box::new(move || {
            // While follower 2's expansion is in flight, an acks=all
            // append reaches follower 1, the rest of the current ISR.
            let (_, ack) = inner.append_all(3).unwrap();
            inner.fetch(1, 0);
            inner.fetch(1, 0);
            *seen.lock() = Some((inner.hw(0), ack.and_then(|a| a.try_result()).is_some()));
        }),
    );
    rig.m(0).set_alter_partition(hooked);
    // Follower 2's fetch at the high watermark proposes it back.
    rig.fetch(2, 0);
    assert_eq!(rig.isr(), [0, 1, 2]);
    assert_eq!(
        *acked.lock(),
        Some((7, false)),
        "the high watermark passed the joining follower's log end"
    );
    assert!(rig.hw(0) <= rig.leo(2), "{} > {}", rig.hw(0), rig.leo(2));
    // Once follower 2 has the records, they are acknowledged.
    rig.sync();
    assert_eq!(rig.hw(0), 10);
}

/// The threaded ISR expiration and the fetchers' pause: a paused follower
/// is dropped by the expiration thread when the manual clock passes the
/// lag time.
#[test]
fn the_expiration_thread_drops_a_paused_follower() {
    let rig = Rig::new(2, LogConfig::default(), 1);
    let leader_fetchers =
        ReplicaFetcherManager::start(&rig.managers[0], rig.registry.clone()).unwrap();
    let follower_fetchers = ReplicaFetcherManager::manual(&rig.managers[1], rig.registry.clone());
    follower_fetchers.set_paused(true);
    rig.append(0, 1);
    assert_eq!(
        follower_fetchers.fetch_once_from(0).unwrap().partitions,
        0,
        "paused"
    );
    assert_eq!(rig.hw(0), 0, "follower 1 is in the ISR");
    let (tx, rx) = crossbeam_channel::bounded(1);
    rig.m(0).watch(&rig.key, &tx);
    rig.clock.advance_ms(45_001);
    // The shrink moves the high watermark, which wakes watchers (the
    // bound only turns a hang into a failure).
    rx.recv_timeout(std::time::Duration::from_secs(60)).unwrap();
    assert_eq!(rig.isr(), [0]);
    assert_eq!(rig.hw(0), 1);
    follower_fetchers.set_paused(false);
    assert_eq!(follower_fetchers.fetch_once_from(0).unwrap().appended, 1);
    // A leader that stopped is out of reach.
    rig.registry.remove(0);
    assert!(follower_fetchers.fetch_once_from(0).is_none());
    leader_fetchers.shutdown();
}

/// Threaded fetchers feed followers by themselves (long-polling the
/// leader), and a blocking acks=all append returns once they have it.
#[test]
fn fetcher_threads_replicate_and_complete_acks_all() {
    let rig = Rig::new(3, LogConfig::default(), 2);
    let fetchers: Vec<_> = rig
        .managers
        .iter()
        .map(|m| ReplicaFetcherManager::start(m, rig.registry.clone()).unwrap())
        .collect();
    for i in 0..20 {
        let info = rig
            .m(0)
            .append(
                &rig.key,
                &mut batch(1 + i % 3, "z"),
                AppendOrigin::Client,
                AppendAcks::All,
            )
            .unwrap();
        assert!(rig.hw(0) > info.last_offset());
        assert!(rig.leo(1) > info.last_offset() && rig.leo(2) > info.last_offset());
    }
    for f in &fetchers {
        f.shutdown();
    }
    assert_eq!(rig.contents(1), rig.contents(0));
    assert_eq!(rig.contents(2), rig.contents(0));
}

/// Where the topic fsyncs every append before acknowledging it, the high
/// watermark is the minimum over the ISR of the durable offsets: a
/// follower that holds the batch only in its page cache holds it back.
#[test]
fn the_durable_high_watermark_waits_for_every_isr_members_fsync() {
    let durable = LogConfig::builder()
        .flush(FlushPolicy::every_append())
        .build()
        .unwrap();
    let rig = Rig::new(2, durable, 1);
    // Reopen the follower's log without fsync-before-ack, so its durable
    // offset lags its log end and the rule shows.
    let closed = rig.managers[1].shutdown();
    closed[0].2.as_ref().unwrap();
    let mut rig = rig;
    rig.config = LogConfig::default();
    let follower = rig.start(1);
    rig.managers[1] = follower;
    rig.append(0, 3);
    assert_eq!(rig.offsets(0).recovery_point, 3, "the leader fsynced");
    rig.fetch(1, 0);
    rig.fetch(1, 0);
    assert_eq!(rig.leo(1), 3);
    assert_eq!(rig.hw(0), 0, "the follower has not fsynced");
    rig.m(1).with_log(&rig.key, |log| log.flush()).unwrap();
    rig.fetch(1, 0);
    assert_eq!(rig.hw(0), 3);
    assert_eq!(rig.consume(0, 0), [0, 1, 2]);
}

/// A page-cache topic's high watermark follows log ends, not fsyncs.
#[test]
fn a_page_cache_high_watermark_follows_log_ends() {
    let rig = Rig::new(2, LogConfig::default(), 1);
    rig.append(0, 3);
    rig.fetch(1, 0);
    rig.fetch(1, 0);
    assert!(rig.offsets(1).recovery_point < 3);
    assert_eq!(rig.hw(0), 3);
}

/// Follower fetches carry epochs: a stale one is fenced, a fetch from a
/// broker that does not lead is refused.
#[test]
fn follower_fetches_are_fenced_by_epoch() {
    let rig = Rig::new(2, LogConfig::default(), 1);
    rig.controller.elect(&rig.key, Some(0), vec![0, 1]);
    let stale = FollowerFetchRequest {
        follower: 1,
        fetch_offset: 0,
        last_fetched_epoch: None,
        current_leader_epoch: 0,
        durable_offset: 0,
        max_bytes: 1 << 20,
    };
    assert!(matches!(
        rig.m(0).fetch_as_follower(&rig.key, &stale),
        Err(Error::FencedLeaderEpoch {
            epoch: 0,
            current: 1,
            ..
        })
    ));
    rig.append(0, 2);
    let current = FollowerFetchRequest {
        current_leader_epoch: 1,
        ..stale
    };
    let response: FollowerFetchResponse = rig.m(0).fetch_as_follower(&rig.key, &current).unwrap();
    assert_eq!((response.log_start, response.log_end), (0, 2));
    assert_eq!(response.high_watermark, 0);
    assert!(response.diverging.is_none());
    assert_eq!(response.records.batches().count(), 1);
    assert!(matches!(
        rig.m(1).fetch_as_follower(&rig.key, &current),
        Err(Error::NotLeaderOrFollower { broker: 1, .. })
    ));
}

/// KIP-101, scenario 1: a follower that restarts with a high watermark
/// below its log end must not truncate to it: it asks the leader with its
/// last epoch, keeps the record, and still has it after it becomes the
/// leader when the old leader fails.
#[test]
fn kip101_a_restarted_follower_does_not_truncate_to_its_high_watermark() {
    let mut rig = Rig::new(2, LogConfig::default(), 1);
    rig.append(0, 1); // m1 at 0
    rig.fetch(1, 0);
    rig.fetch(1, 0);
    assert_eq!((rig.hw(0), rig.hw(1)), (1, 1));
    rig.append(0, 1); // m2 at 1
    rig.fetch(1, 0);
    assert_eq!((rig.leo(1), rig.hw(1)), (2, 1), "m2 copied, HW not yet");
    rig.restart(1);
    assert_eq!((rig.leo(1), rig.hw(1)), (2, 1));
    let round = rig.fetch(1, 0);
    assert_eq!(round.truncated, 0);
    assert_eq!(rig.leo(1), 2, "m2 kept");
    assert_eq!(rig.hw(0), 2, "m2 committed");
    // The leader fails; the follower takes over with m2.
    rig.controller.elect(&rig.key, Some(1), vec![1]);
    assert_eq!(rig.hw(1), 2);
    assert_eq!(rig.consume(1, 0), [0, 1]);
}

/// KIP-101, scenario 2: after a double failure the new leader wrote a
/// different record at the offset only the old leader had; when the old
/// leader returns as a follower, the epochs show the divergence and it
/// truncates to where the leader's epoch ended, then copies the leader.
#[test]
fn kip101_replicas_diverged_after_a_double_failure_are_reconciled_by_epoch() {
    let rig = Rig::new(2, LogConfig::default(), 1);
    rig.append(0, 1); // m1 at 0, on both
    rig.sync();
    rig.m(0)
        .append(
            &rig.key,
            &mut batch(1, "m2"),
            AppendOrigin::Client,
            AppendAcks::Leader,
        )
        .unwrap(); // m2 at 1, only on broker 0
    // Both fail; broker 1 returns first and leads; broker 0 is offline.
    rig.controller.elect(&rig.key, None, vec![1]);
    rig.controller.elect(&rig.key, Some(1), vec![1]);
    rig.m(1)
        .append(
            &rig.key,
            &mut batch(1, "m3"),
            AppendOrigin::Client,
            AppendAcks::Leader,
        )
        .unwrap(); // m3 at 1, epoch 2
    assert_ne!(rig.contents(0), rig.contents(1));
    // Broker 0 returns as a follower.
    let round = rig.fetch(0, 1);
    assert_eq!(round.truncated, 1);
    assert_eq!(rig.leo(0), 1, "m2 cut where epoch 0 ended on the leader");
    rig.sync();
    assert_eq!(rig.contents(0), rig.contents(1));
    let values: Vec<Vec<u8>> = rig.contents(0).into_iter().map(|(_, _, v)| v).collect();
    assert_eq!(values, [b"v".to_vec(), b"m3".to_vec()]);
    assert_eq!(rig.isr(), [1, 0], "back in the ISR");
    rig.shutdown_all();
    assert_eq!(log_files(&rig.log_dir(0)), log_files(&rig.log_dir(1)));
}

/// KIP-279: several fast leader changes leave a follower with epochs the
/// leader never had; it walks back epoch by epoch (each answer names an
/// epoch it lacks, so it truncates to where its own older epoch ends and
/// asks again) until the logs agree, then copies the leader.
#[test]
fn kip279_a_follower_walks_back_epoch_by_epoch_after_fast_leader_changes() {
    let rig = Rig::new(2, LogConfig::default(), 1);
    rig.append(0, 1); // epoch 0: offset 0 on both
    rig.sync();
    // Leadership flips with no replication in between: each leader writes
    // one record at the same offsets as the other.
    let mut leader = 0;
    for _ in 0..4 {
        leader = 1 - leader;
        let other = 1 - leader;
        rig.controller.elect(&rig.key, Some(other), vec![0, 1]);
        rig.append(other, 1);
    }
    // Broker 0 wrote epochs 1 and 3, broker 1 epochs 2 and 4.
    let epochs = |b: u32| -> Vec<i32> { rig.contents(b).iter().map(|c| c.1).collect() };
    assert_eq!(epochs(0), [0, 1, 3]);
    assert_eq!(epochs(1), [0, 2, 4]);
    // Epoch 5: broker 0 leads again and writes; broker 1 follows.
    rig.controller.elect(&rig.key, Some(0), vec![0, 1]);
    rig.append(0, 1);
    assert_eq!(epochs(0), [0, 1, 3, 5]);
    let mut ends = vec![rig.leo(1)];
    loop {
        let round = rig.fetch(1, 0);
        ends.push(rig.leo(1));
        if round.truncated == 0 {
            break;
        }
    }
    assert_eq!(ends, [3, 2, 1, 4], "walked back one epoch per round");
    assert_eq!(rig.contents(1), rig.contents(0));
}

/// A follower follows the leader's log start offset (moved by
/// `delete_records`), as far as its own high watermark.
#[test]
fn a_follower_follows_the_leaders_log_start() {
    let rig = Rig::new(2, LogConfig::default(), 1);
    rig.append(0, 5);
    rig.sync();
    rig.m(0).delete_records(&rig.key, 3).unwrap();
    rig.fetch(1, 0);
    assert_eq!(rig.offsets(1).log_start, 3);
    assert_eq!(rig.contents(1), rig.contents(0));
}

/// A broker elected leader that wrote nothing in its epoch recorded the
/// epoch's start at its log end; as a follower again it drops that empty
/// epoch on the leader's diverging answer (as Kafka's `truncateTo` does)
/// instead of naming it forever, and catches up.
#[test]
fn an_empty_epoch_of_a_former_leader_is_dropped_and_the_follower_catches_up() {
    let rig = Rig::new(2, LogConfig::default(), 1);
    rig.append(0, 1);
    rig.sync();
    rig.controller.elect(&rig.key, Some(1), vec![0, 1]);
    rig.controller.elect(&rig.key, Some(0), vec![0, 1]);
    rig.append(0, 2);
    let epochs = |b: u32| -> Vec<i32> {
        rig.m(b)
            .with_log(&rig.key, |l| Ok(l.epoch_entries()))
            .unwrap()
            .iter()
            .map(|e| e.epoch)
            .collect()
    };
    assert_eq!(epochs(1), [0, 1], "epoch 1 recorded, nothing written");
    let round = rig.fetch(1, 0);
    assert_eq!((round.truncated, rig.leo(1)), (1, 1));
    assert_eq!(epochs(1), [0]);
    rig.sync();
    assert_eq!(rig.contents(1), rig.contents(0));
    assert_eq!(epochs(1), [0, 2]);
}

/// A high watermark restored from the replication offset checkpoint is
/// capped at the log end offset.
#[test]
fn a_restored_high_watermark_is_capped_at_the_log_end() {
    let rig = Rig::new(2, LogConfig::default(), 1);
    rig.append(0, 2);
    rig.fetch(1, 0);
    rig.m(1).restore_high_watermark(&rig.key, 100).unwrap();
    assert_eq!(rig.hw(1), 2);
    rig.m(1).restore_high_watermark(&rig.key, 1).unwrap();
    assert_eq!(rig.hw(1), 2, "never moved back by a restore");
}

/// A small seeded simulation: random interleavings of `acks=all` appends,
/// follower fetches, clock advances with ISR expiration, and clean leader
/// elections (from the ISR) on three managers with `min.insync.replicas`
/// 2. After every step: every acknowledged record is in the current
/// leader's log at its offset; the leader's high watermark never moves
/// back within an epoch; every replica's log agrees with the leader's
/// below its own high watermark. At the end, with everyone fetching, every
/// log is the leader's.
#[test]
fn seeded_interleavings_keep_every_acknowledged_record() {
    // `LOGBUS_REPL_SEEDS=400` for a longer run (400 × 120 steps passed).
    let seeds: u64 = std::env::var("LOGBUS_REPL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    for seed in 1..=seeds {
        run_interleaving(seed, 120);
    }
}

fn run_interleaving(seed: u64, steps: usize) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut rig = Rig::new(3, LogConfig::default(), 2);
    let mut pending: Vec<(u64, Vec<u8>, PendingAck)> = Vec::new();
    let mut acked: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut hw_seen: (i32, u64) = (0, 0);
    let mut written = 0u64;
    for step in 0..steps {
        let leader = rig.controller.state.lock().leader.unwrap();
        match next(12) {
            0..=3 => {
                written += 1;
                let value = format!("s{seed}-{written}").into_bytes();
                let mut bytes = {
                    let mut builder = BatchBuilder::new(Compression::None);
                    builder.append(1, None, Some(&value), &[]);
                    builder.build().unwrap().to_vec()
                };
                match rig.m(leader).append_pending(
                    &rig.key,
                    &mut bytes,
                    AppendOrigin::Client,
                    AppendAcks::All,
                ) {
                    Ok((info, Some(ack))) => pending.push((info.first_offset(), value, ack)),
                    Ok((info, None)) => acked.push((info.first_offset(), value)),
                    Err(Error::NotEnoughReplicas { .. }) => {}
                    Err(e) => panic!("seed {seed} step {step}: {e:?}"),
                }
            }
            4..=7 => {
                let follower = (leader + 1 + next(2) as u32) % 3;
                rig.fetch(follower, leader);
            }
            8 => {
                rig.clock.advance_ms(i64::try_from(next(20_000)).unwrap());
                rig.m(leader).maybe_shrink_isr();
            }
            9 => {
                // A clean election: the ISR stays.
                let isr = rig.isr();
                let candidates: Vec<u32> = isr.iter().copied().filter(|&b| b != leader).collect();
                if !candidates.is_empty() {
                    let new = candidates[next(candidates.len() as u64) as usize];
                    rig.controller.elect(&rig.key, Some(new), isr);
                }
            }
            10 => {
                // The leader fails over: another ISR member leads and the
                // old leader leaves the ISR (it comes back by fetching).
                let isr = rig.isr();
                let candidates: Vec<u32> = isr.iter().copied().filter(|&b| b != leader).collect();
                if !candidates.is_empty() {
                    let new = candidates[next(candidates.len() as u64) as usize];
                    let rest = isr.into_iter().filter(|&b| b != leader).collect();
                    rig.controller.elect(&rig.key, Some(new), rest);
                }
            }
            _ => {
                // A follower restarts (clean close, reopen, its HW from
                // the checkpoint).
                let follower = (leader + 1 + next(2) as u32) % 3;
                rig.restart(follower);
            }
        }
        pending.retain(|(offset, value, ack)| match ack.try_result() {
            Some(Ok(())) => {
                acked.push((*offset, value.clone()));
                false
            }
            Some(Err(_)) => false,
            None => true,
        });
        let roles = rig.controller.state.lock().clone();
        let leader = roles.leader.unwrap();
        let leader_log = rig.contents(leader);
        for (offset, value) in &acked {
            let found = leader_log.iter().find(|(o, _, _)| o == offset);
            assert_eq!(
                found.map(|(_, _, v)| v),
                Some(value),
                "seed {seed} step {step}: acknowledged offset {offset} lost"
            );
        }
        let hw = rig.hw(leader);
        if hw_seen.0 == roles.leader_epoch {
            assert!(hw >= hw_seen.1, "seed {seed} step {step}: HW moved back");
        }
        hw_seen = (roles.leader_epoch, hw);
        for b in 0..3 {
            let below: Vec<_> = rig
                .contents(b)
                .into_iter()
                .filter(|(o, _, _)| *o < rig.hw(b))
                .collect();
            let leaders: Vec<_> = leader_log
                .iter()
                .filter(|(o, _, _)| *o < rig.hw(b))
                .cloned()
                .collect();
            assert_eq!(
                below, leaders,
                "seed {seed} step {step}: broker {b} disagrees"
            );
        }
    }
    // Everyone fetches until the ISR is whole and the logs settle.
    let leader = rig.controller.state.lock().leader.unwrap();
    for _ in 0..5 {
        rig.sync();
    }
    for b in 0..3 {
        assert_eq!(
            rig.contents(b),
            rig.contents(leader),
            "seed {seed}: broker {b}"
        );
    }
    assert_eq!(rig.isr().len(), 3, "seed {seed}");
    for (_, _, ack) in &pending {
        assert!(
            ack.try_result().is_some(),
            "seed {seed}: an ack still waits"
        );
    }
}

/// Every record of broker `broker`'s log, from its log start to its end
/// (a read returns one segment's batches: read on until the end).
fn all_contents(rig: &Rig, broker: u32) -> Vec<(u64, i32)> {
    rig.m(broker)
        .with_log(&rig.key, |log| {
            let mut out = Vec::new();
            let mut next = log.log_start_offset();
            while next < log.log_end_offset() {
                for batch in log.read(next, usize::MAX)?.batches() {
                    let h = *batch?.header();
                    for offset in h.base_offset..=h.last_offset() {
                        out.push((offset as u64, h.partition_leader_epoch));
                    }
                    next = h.last_offset() as u64 + 1;
                }
            }
            Ok(out)
        })
        .unwrap()
}

/// A follower that fell behind the leader's log start (the leader deleted,
/// by `delete_records` and then retention, records the follower never
/// fetched) gets `OffsetOutOfRange` from the leader; it empties its log,
/// starts again at the leader's log start (Kafka's
/// `truncateFullyAndStartAt`), catches up, and rejoins the ISR. A reopen
/// keeps the restarted log.
#[test]
fn a_follower_below_the_leaders_log_start_restarts_there_and_rejoins_the_isr() {
    let config = LogConfig::builder().segment_bytes(1024).build().unwrap();
    let mut rig = Rig::new(3, config, 1);
    rig.append(0, 5);
    rig.sync();
    // Follower 2 stops fetching and drops out of the ISR.
    for _ in 0..20 {
        rig.append(0, 5);
    }
    let catch_up_1 = |rig: &Rig| {
        while rig.leo(1) < rig.leo(0) {
            rig.fetch(1, 0);
        }
        rig.fetch(1, 0);
    };
    catch_up_1(&rig);
    rig.clock.advance_ms(30_001);
    catch_up_1(&rig);
    assert_eq!(rig.m(0).maybe_shrink_isr(), 1);
    assert_eq!(rig.isr(), [0, 1]);
    assert_eq!(rig.leo(2), 5);
    // The leader deletes up to 60, well past follower 2's log end.
    rig.m(0).delete_records(&rig.key, 60).unwrap();
    rig.m(0).enforce_retention(&rig.key).unwrap();
    let leader_start = rig.offsets(0).log_start;
    assert_eq!(leader_start, 60);
    let old_segments = rig
        .m(2)
        .with_log(&rig.key, |log| Ok(log.segment_base_offsets()))
        .unwrap();

    let round = rig.fetch(2, 0);
    assert_eq!(round.truncated, 1, "the restart is progress");
    let offsets = rig.offsets(2);
    assert_eq!((offsets.log_start, offsets.log_end), (60, 60));
    assert_eq!(offsets.high_watermark, 60);
    rig.sync();
    assert_eq!(rig.leo(2), rig.leo(0));
    assert_eq!(all_contents(&rig, 2), all_contents(&rig, 0));
    assert_eq!(all_contents(&rig, 2).len() as u64, rig.leo(0) - 60);
    assert_eq!(rig.isr(), [0, 1, 2], "caught up: back in the ISR");
    assert_eq!(rig.hw(0), rig.leo(0));
    let new_segments = rig
        .m(2)
        .with_log(&rig.key, |log| Ok(log.segment_base_offsets()))
        .unwrap();
    assert_eq!(new_segments[0], 60);
    assert!(new_segments.iter().all(|b| !old_segments.contains(b)));

    // A restart of the broker keeps the restarted log.
    rig.restart(2);
    let offsets = rig.offsets(2);
    assert_eq!((offsets.log_start, offsets.log_end), (60, rig.leo(0)));
    assert_eq!(all_contents(&rig, 2), all_contents(&rig, 0));
    rig.shutdown_all();
}

/// A follower whose fetch offset lies past the leader's log end and that
/// names no epoch (its log was restarted, empty, above where a new
/// leader's log ends) is truncated to the leader's end, as Kafka's
/// `handleOffsetOutOfRange` does, instead of failing every round.
#[test]
fn a_follower_past_the_leaders_end_without_an_epoch_truncates_to_it() {
    let rig = Rig::new(2, LogConfig::default(), 1);
    rig.append(0, 3);
    rig.sync();
    // Follower 1's log restarted at 10 (empty, no epoch), past the end.
    rig.m(1)
        .with_log(&rig.key, |log| log.truncate_fully_and_start_at(10))
        .unwrap();
    let round = rig.fetch(1, 0);
    assert_eq!(round.truncated, 1);
    assert_eq!(rig.leo(1), 3);
    rig.append(0, 2);
    rig.sync();
    assert_eq!(rig.leo(1), 5);
    // Its log restarted above 3, so it starts at 3 now.
    assert_eq!(rig.offsets(1).log_start, 3);
    assert_eq!(rig.contents(1), rig.contents(0)[3..]);
}

/// The fetch throttle's token bucket on the clock: a full second of the
/// rate at first, charged by what a fetch got (possibly below zero), the
/// wait until it holds something again, and refills capped at a second.
#[test]
fn the_fetch_throttle_is_a_token_bucket_on_the_clock() {
    let mut throttle = Throttle::new(1000, 0);
    assert_eq!(throttle.allowance(0), Ok(1000));
    throttle.charge(1500);
    // 500 bytes owed at 1 byte per ms: nothing until 501 ms.
    assert_eq!(throttle.allowance(0), Err(501));
    assert_eq!(throttle.allowance(500), Err(501));
    assert_eq!(throttle.allowance(501), Ok(1), "less than a byte: one");
    assert_eq!(throttle.allowance(800), Ok(300));
    // Idle time fills it up to one second of the rate, no more.
    assert_eq!(throttle.allowance(60_000), Ok(1000));
    // A clock that went back adds nothing.
    throttle.charge(1000);
    assert_eq!(throttle.allowance(10), Err(60_001));
    // A slow rate waits longer.
    let mut slow = Throttle::new(3, 0);
    slow.charge(10);
    assert_eq!(slow.allowance(0), Err(2_334));
    assert!(slow.allowance(2_334).is_ok());
}

/// A throttled follower (manual fetchers, manual clock) copies no more
/// than the rate allows per second of the clock (plus the one batch a
/// fetch always returns), so a burst of appends leaves it behind: it
/// leaves the ISR after `replica.lag.time.max.ms`, and once the throttle
/// is lifted it catches up at once and re-enters the ISR.
#[test]
fn a_throttled_follower_falls_out_of_the_isr_and_returns_when_lifted() {
    let rig = Rig::new(2, LogConfig::default(), 1);
    let fetchers = ReplicaFetcherManager::manual(&rig.managers[1], rig.registry.clone());
    rig.append(0, 1);
    assert_eq!(fetchers.fetch_once_from(0).unwrap().appended, 1);
    const RATE: u64 = 200;
    fetchers.set_throttle(Some(RATE));
    // About 12 KB at 200 bytes per second: about a minute to copy.
    for _ in 0..150 {
        rig.append(0, 5);
    }
    let batch_bytes = batch(5, "v").len() as u64;
    let start = rig.clock.now_ms();
    let mut fetched = 0;
    let mut seconds = 0;
    let mut left_isr_at = None;
    while rig.leo(1) < rig.leo(0) && seconds < 35 {
        // Fetch until the throttle says wait; then it fetches nothing.
        let mut this_second = 0;
        loop {
            let round = fetchers.fetch_once_from(0).unwrap();
            this_second += round.bytes;
            if let Some(until) = round.throttled_until {
                assert!(until > rig.clock.now_ms());
                let again = fetchers.fetch_once_from(0).unwrap();
                assert_eq!((again.partitions, again.bytes), (0, 0), "throttled");
                break;
            }
        }
        fetched += this_second;
        assert!(
            this_second <= RATE + batch_bytes,
            "{this_second} in second {seconds}"
        );
        assert!(
            fetched <= RATE * (seconds + 1) + batch_bytes,
            "{fetched} after {seconds} s"
        );
        rig.m(0).maybe_shrink_isr();
        if left_isr_at.is_none() && rig.isr() == [0] {
            left_isr_at = Some(rig.clock.now_ms() - start);
        }
        rig.clock.advance_ms(1000);
        seconds += 1;
    }
    assert!(rig.leo(1) < rig.leo(0), "still behind after {seconds} s");
    assert!(batch_bytes * 150 > RATE * 40, "the burst outlasts the loop");
    assert!(fetched >= RATE * 30, "it kept fetching: {fetched}");
    let left = left_isr_at.expect("it left the ISR");
    assert!(left > 30_000, "not before the lag time: {left}");

    // Lifted: it catches up without the clock moving, and is back in.
    fetchers.set_throttle(None);
    while rig.leo(1) < rig.leo(0) {
        let round = fetchers.fetch_once_from(0).unwrap();
        assert_eq!(round.throttled_until, None);
    }
    fetchers.fetch_once_from(0).unwrap();
    assert_eq!(rig.isr(), [0, 1]);
    assert_eq!(all_contents(&rig, 1), all_contents(&rig, 0));
}

/// Seeded interleavings of appends, fetches by either follower, the
/// leader deleting records (up to its high watermark, so often past a
/// lagging follower's end), ISR expiration, clean elections, failovers and
/// follower restarts, on 1 KiB segments: no fetch ever fails with anything
/// but a stale epoch (a follower below its leader's log start restarts
/// there instead of failing), and once everyone fetches, every replica
/// holds the leader's records from the highest log start on, and the ISR
/// is whole. `LOGBUS_REPL_SEEDS` runs more seeds.
#[test]
fn seeded_interleavings_with_deleted_records_converge() {
    let seeds: u64 = std::env::var("LOGBUS_REPL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    for seed in 1..=seeds {
        run_deleting_interleaving(seed, 150);
    }
}

fn run_deleting_interleaving(seed: u64, steps: usize) {
    let mut state = seed.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let config = LogConfig::builder().segment_bytes(1024).build().unwrap();
    let mut rig = Rig::new(3, config, 1);
    for step in 0..steps {
        let leader = rig.controller.state.lock().leader.unwrap();
        let follower = (leader + 1 + next(2) as u32) % 3;
        match next(14) {
            0..=4 => {
                rig.append(leader, 1 + next(4) as usize);
            }
            5..=7 => {
                rig.fetch(follower, leader);
            }
            8 | 9 => {
                let (start, hw) = (rig.offsets(leader).log_start, rig.hw(leader));
                if hw > start {
                    let to = start + 1 + next(hw - start);
                    rig.m(leader).delete_records(&rig.key, to).unwrap();
                }
            }
            10 => {
                rig.clock.advance_ms(i64::try_from(next(40_000)).unwrap());
                rig.m(leader).maybe_shrink_isr();
            }
            11 => {
                let isr = rig.isr();
                let candidates: Vec<u32> = isr.iter().copied().filter(|&b| b != leader).collect();
                if !candidates.is_empty() {
                    let new = candidates[next(candidates.len() as u64) as usize];
                    let rest = if next(2) == 0 {
                        isr
                    } else {
                        isr.into_iter().filter(|&b| b != leader).collect()
                    };
                    rig.controller.elect(&rig.key, Some(new), rest);
                }
            }
            _ => rig.restart(follower),
        }
        let roles = rig.controller.state.lock().clone();
        let leader = roles.leader.unwrap();
        for b in roles.isr.iter().copied().filter(|&b| b != leader) {
            let (offsets, lead) = (rig.offsets(b), rig.offsets(leader));
            assert!(
                offsets.high_watermark <= lead.log_end,
                "seed {seed} step {step}: broker {b} {offsets:?} leader {lead:?}"
            );
        }
    }
    let leader = rig.controller.state.lock().leader.unwrap();
    for _ in 0..5 {
        rig.sync();
    }
    let start = (0..3).map(|b| rig.offsets(b).log_start).max().unwrap();
    let from = |b: u32| -> Vec<(u64, i32)> {
        all_contents(&rig, b)
            .into_iter()
            .filter(|(o, _)| *o >= start)
            .collect()
    };
    for b in 0..3 {
        assert_eq!(rig.leo(b), rig.leo(leader), "seed {seed}: broker {b}");
        assert_eq!(from(b), from(leader), "seed {seed}: broker {b}");
    }
    assert_eq!(rig.isr().len(), 3, "seed {seed}");
    rig.shutdown_all();
}

/// A follower that diverged from its leader where the leader's epoch
/// history no longer reaches (the leader deleted the records around the
/// divergence, so its epoch cache starts after it and answers "no
/// divergence"), and whose log end lies inside one of the leader's
/// batches, cuts its log back to that batch's start and copies it, rather
/// than failing every fetch with `OffsetsOutOfOrder`.
#[test]
fn a_follower_diverged_below_the_leaders_epoch_history_cuts_back_to_the_batch() {
    let rig = Rig::new(3, LogConfig::default(), 1);
    rig.append(0, 5);
    rig.sync();
    // Broker 2 copies 5..=8 of epoch 0; broker 1 does not.
    rig.append(0, 4);
    rig.fetch(2, 0);
    assert_eq!((rig.leo(1), rig.leo(2)), (5, 9));
    // Broker 1 is elected (clean: it is in the ISR) and writes 5..=10 in
    // epoch 1: broker 2's 5..=8 of epoch 0 diverge.
    rig.controller.elect(&rig.key, Some(1), vec![0, 1, 2]);
    rig.append(1, 6);
    let catch_up_0 = |rig: &Rig| {
        while rig.leo(0) != rig.leo(1) {
            rig.fetch(0, 1);
        }
        rig.fetch(0, 1);
    };
    catch_up_0(&rig);
    // Broker 2 drops out of the ISR; the leader deletes up to 9, broker
    // 2's log end: its epoch cache now starts at (1, 9).
    rig.clock.advance_ms(30_001);
    catch_up_0(&rig);
    assert_eq!(rig.m(1).maybe_shrink_isr(), 1);
    assert_eq!(rig.isr(), [0, 1]);
    assert_eq!(rig.hw(1), 11);
    rig.m(1).delete_records(&rig.key, 9).unwrap();

    // Broker 2 asks from 9 with epoch 0: no divergence in the leader's
    // eyes, and the batch holding 9 is 5..=10.
    let round = rig.fetch(2, 1);
    assert_eq!(round.appended, 1, "{round:?}");
    assert_eq!(rig.leo(2), 11);
    let from_9 = |b: u32| -> Vec<(u64, i32)> {
        all_contents(&rig, b)
            .into_iter()
            .filter(|(o, _)| *o >= 9)
            .collect()
    };
    assert_eq!(from_9(2), from_9(1));
    assert!(from_9(2).iter().all(|&(_, epoch)| epoch == 1));
    rig.fetch(2, 1);
    assert_eq!(rig.isr(), [0, 1, 2]);
}

/// A leader's log start inside a batch (`delete_records` deletes by
/// offset): the follower restarted there gets the whole batch holding it,
/// which starts below its (empty) log; it starts its log again at the
/// batch's base offset, as Kafka's follower does, copies it, and its log
/// start then follows the leader's.
#[test]
fn a_follower_restarted_inside_a_batch_starts_at_the_batch() {
    let rig = Rig::new(2, LogConfig::default(), 1);
    rig.append(0, 5);
    rig.sync();
    for _ in 0..3 {
        rig.append(0, 5);
    }
    rig.clock.advance_ms(30_001);
    assert_eq!(rig.m(0).maybe_shrink_isr(), 1);
    rig.m(0).delete_records(&rig.key, 12).unwrap();
    // Below the leader's start: restart at 12.
    rig.fetch(1, 0);
    assert_eq!((rig.offsets(1).log_start, rig.leo(1)), (12, 12));
    // The batch holding 12 is 10..=14: start again at 10, copy it (and
    // the one after it).
    let round = rig.fetch(1, 0);
    assert_eq!(round.appended, 1);
    assert_eq!(rig.leo(1), 20);
    let bases = rig
        .m(1)
        .with_log(&rig.key, |log| Ok(log.segment_base_offsets()))
        .unwrap();
    assert_eq!(bases, [10]);
    rig.sync();
    assert_eq!(rig.offsets(1).log_start, 12, "follows the leader's start");
    assert_eq!(all_contents(&rig, 1), all_contents(&rig, 0));
    assert_eq!(rig.isr(), [0, 1]);
}

/// A transactional batch of producer `pid` (epoch 0) with sequences
/// `seq..seq + records`.
fn txn_batch(pid: i64, seq: i32, records: usize) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Compression::None)
        .producer(pid, 0, seq)
        .transactional(true);
    for _ in 0..records {
        builder.append(1, None, Some(b"t"), &[]);
    }
    builder.build().unwrap().to_vec()
}

/// A marker goes to the leader only, returns once the in-sync replicas
/// have it (as acks=all), reaches the followers' logs (their last stable
/// offset and `.txnindex` follow), and a read_committed fetch stops at the
/// last stable offset with the aborted transactions; a read_uncommitted
/// fetch stops at the high watermark as before.
#[test]
fn txn_markers_are_replicated_and_read_committed_fetches_stop_at_the_lso() {
    use crate::format::ControlRecordType;
    use crate::types::IsolationLevel;
    let rig = Rig::new(3, LogConfig::default(), 2);
    let append = |bytes: &mut Vec<u8>| {
        rig.m(0)
            .append(&rig.key, bytes, AppendOrigin::Client, AppendAcks::Leader)
            .unwrap()
    };
    append(&mut batch(1, "a")); // 0
    append(&mut txn_batch(5, 0, 2)); // 1..=2
    append(&mut txn_batch(6, 0, 1)); // 3
    rig.sync();
    assert_eq!(rig.hw(0), 4);
    let committed = FetchBound::for_consumer(IsolationLevel::ReadCommitted);
    let uncommitted = FetchBound::for_consumer(IsolationLevel::ReadUncommitted);
    assert_eq!(uncommitted, FetchBound::HighWatermark);
    assert_eq!(rig.m(0).last_stable_offset(&rig.key).unwrap(), 1);
    let fetched = rig.m(0).fetch(&rig.key, 0, usize::MAX, committed).unwrap();
    assert_eq!(
        fetched.clone().into_log_read().batches().count(),
        1,
        "below the LSO only"
    );
    assert_eq!(fetched.aborted_transactions(), Some(&[][..]));
    let all = rig
        .m(0)
        .fetch(&rig.key, 0, usize::MAX, uncommitted)
        .unwrap();
    assert_eq!(all.aborted_transactions(), None);
    assert_eq!(all.clone().into_log_read().batches().count(), 3);

    // Followers refuse markers; the leader's waits for the ISR.
    assert!(matches!(
        rig.m(1)
            .append_txn_marker(&rig.key, 5, 0, ControlRecordType::Abort, 0),
        Err(Error::NotLeaderOrFollower { .. })
    ));
    let write_marker = |pid: i64, kind: ControlRecordType| {
        let managers = rig.managers.clone();
        let key = rig.key.clone();
        let writer =
            std::thread::spawn(move || managers[0].append_txn_marker(&key, pid, 0, kind, 0));
        while !writer.is_finished() {
            rig.fetch(1, 0);
            rig.fetch(2, 0);
            std::thread::yield_now();
        }
        writer.join().unwrap()
    };
    let info = write_marker(5, ControlRecordType::Abort).unwrap();
    assert_eq!(info.first_offset(), 4);
    assert!(rig.hw(0) > 4, "acknowledged once replicated");
    // pid 6 is still open: the LSO is its first offset.
    assert_eq!(rig.m(0).last_stable_offset(&rig.key).unwrap(), 3);
    let fetched = rig.m(0).fetch(&rig.key, 0, usize::MAX, committed).unwrap();
    assert_eq!(
        fetched.aborted_transactions(),
        Some(
            &[crate::log::AbortedTransaction {
                producer_id: 5,
                first_offset: 1
            }][..]
        )
    );
    write_marker(6, ControlRecordType::Commit).unwrap();
    rig.sync();
    for b in 0..3 {
        let (lso, aborted) = rig
            .m(b)
            .with_log(&rig.key, |log| {
                Ok((
                    log.last_stable_offset(),
                    log.aborted_transactions(0, u64::MAX),
                ))
            })
            .unwrap();
        assert_eq!(lso, 6, "broker {b}");
        assert_eq!(aborted.len(), 1, "broker {b}");
    }
    // A fenced coordinator epoch or producer epoch writes nothing.
    let end = rig.leo(0);
    assert!(
        rig.m(0)
            .append_txn_marker(&rig.key, 5, 0, ControlRecordType::Abort, -1)
            .is_err()
    );
    assert_eq!(rig.leo(0), end);
    rig.shutdown_all();
}

/// A marker is refused while the ISR is below `min.insync.replicas`,
/// as an acks=all append.
#[test]
fn a_txn_marker_needs_min_insync_replicas() {
    use crate::format::ControlRecordType;
    let rig = Rig::new(3, LogConfig::default(), 2);
    rig.controller.elect(&rig.key, Some(0), vec![0]);
    let end = rig.leo(0);
    assert!(matches!(
        rig.m(0)
            .append_txn_marker(&rig.key, 5, 0, ControlRecordType::Commit, 0),
        Err(Error::NotEnoughReplicas {
            in_sync: 1,
            required: 2,
            ..
        })
    ));
    assert_eq!(rig.leo(0), end);
    rig.shutdown_all();
}

/// A deferred fsync's acknowledgement completes when its offsets are
/// durable even if the fsync its caller runs fails. The race: another
/// fsync (a roll's, the flush scheduler's) collects the log's files after
/// a first batch, a second batch is appended (its high watermark
/// recomputation sees neither durable yet), the other fsync ends (the
/// first batch durable, the high watermark not moved), a failed write
/// fences the log, and the caller's fsync for both (the producer's
/// flusher joins requests) fails. The first batch's acknowledgement must
/// complete (its records are on disk; nothing else would ever complete it:
/// a producer waited for it forever); a batch not durable fails. Here the
/// second batch is written straight to the log, which is what its append
/// looks like to the high watermark in that order of events.
#[test]
fn a_failed_deferred_fsync_completes_the_acks_already_durable() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let faulty = crate::storage::FaultyStorage::new();
    let config = LogConfig::builder()
        .flush(FlushPolicy::every_append())
        .build()
        .unwrap();
    let log = Log::builder(dir.path().join("t-0"))
        .config(config)
        .clock(clock.clone() as Arc<dyn Clock>)
        .storage(Arc::new(faulty.clone()))
        .open()
        .unwrap();
    let key = TopicIdPartition {
        topic_id: Uuid::from_u128(7),
        topic: Arc::from("t"),
        partition: 0,
    };
    let manager = ReplicaManager::with_config(0, ReplicaConfig::new(clock as Arc<dyn Clock>));
    manager
        .host(
            &key.topic,
            key.topic_id,
            0,
            LeaderAndIsr::new(vec![0]),
            1,
            log,
        )
        .unwrap();
    let mut first = batch(3, "v");
    let (_, first, sync) = manager
        .append_deferred(&key, &mut [first.as_mut_slice()], AppendAcks::All)
        .unwrap();
    let first = first.expect("the acknowledgement waits for the fsync");
    assert_eq!(sync, Some(3), "the fsync is left to the caller");
    // The other fsync covers the first batch; the high watermark stays.
    manager.with_log(&key, Log::flush).unwrap();
    let mut second = batch(2, "w");
    manager
        .with_log(&key, |log| {
            log.append_trusted_deferred(&mut [second.as_mut_slice()], 0)
        })
        .unwrap();
    assert!(first.try_result().is_none());
    // A failed write fences the log.
    faulty.fail_all_from_now(
        crate::storage::FaultOp::Write,
        crate::storage::FaultKind::Eio,
    );
    let mut third = batch(1, "x");
    assert!(
        manager
            .append_deferred(&key, &mut [third.as_mut_slice()], AppendAcks::All)
            .is_err()
    );
    // The caller's fsync of both fails.
    assert!(manager.sync_for_ack(&key, 5).is_err());
    assert!(
        matches!(first.try_result(), Some(Ok(()))),
        "the durable batch: {:?}",
        first.try_result()
    );
}
