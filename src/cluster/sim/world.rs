//! The cluster under test and the simulation's model of it: what each
//! replica held when last seen, the acknowledged and consumed records, the
//! leaders by epoch and the highest high watermark by epoch.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::Rng;
use crate::clock::ManualClock;
use crate::cluster::placement::Placement;
use crate::cluster::{Cluster, ClusterConfig, NewTopic, TopicConfig};
use crate::config::FlushPolicy;
use crate::error::Error;
use crate::format::Batches;
use crate::replica::{
    FetchBound, InjectedBug, LeaderAndIsr, PendingAck, ReplicaManager, TopicIdPartition,
};
use crate::storage::{FaultyStorage, Storage};

/// `broker.session.timeout.ms`.
pub(super) const SESSION_MS: i64 = 9_000;
/// `replica.lag.time.max.ms`.
pub(super) const LAG_MS: i64 = 10_000;
/// The replication factor of every topic.
pub(super) const RF: usize = 3;
/// At most this many brokers are down or cut off at once (RF − 1).
pub(super) const MAX_FAILED: usize = RF - 1;
/// Steps kept for the report of a failure.
const HISTORY: usize = 30;

/// A topic of the simulation.
#[derive(Debug, Clone, Copy)]
pub(super) struct TopicSpec {
    pub(super) name: &'static str,
    /// `flush.messages=1` (else the page-cache policy).
    pub(super) durable: bool,
    pub(super) partitions: u32,
}

pub(super) const TOPICS: [TopicSpec; 2] = [
    TopicSpec {
        name: "cache",
        durable: false,
        partitions: 3,
    },
    TopicSpec {
        name: "durable",
        durable: true,
        partitions: 2,
    },
];

/// A partition: index into [`TOPICS`], partition number.
pub(super) type Part = (usize, u32);

/// Whether a broker's process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Health {
    Running,
    Crashed,
    Stopped,
}

/// One replica as last seen while its broker ran.
#[derive(Debug, Clone, Default)]
pub(super) struct LogView {
    /// Batches by base offset: (last offset, bytes).
    pub(super) batches: BTreeMap<u64, (u64, Bytes)>,
    /// Record values by offset.
    pub(super) records: BTreeMap<u64, Bytes>,
    pub(super) log_end: u64,
    pub(super) high_watermark: u64,
    pub(super) recovery_point: u64,
    /// The leader and leader epoch as this replica's broker knows them.
    pub(super) leader: Option<u32>,
    pub(super) leader_epoch: i32,
    /// Its broker lost power since: only what was synced is still held.
    pub(super) lost_unsynced: bool,
    /// Its broker stopped cleanly since: everything was synced.
    pub(super) synced_all: bool,
}

/// An acknowledged or consumed record.
#[derive(Debug, Clone)]
pub(super) struct Tracked {
    pub(super) value: Bytes,
    /// No ISR member held it any more at some step: it may be lost.
    pub(super) exempt: bool,
}

/// An `acks=all` append waiting for its acknowledgement.
#[derive(Debug)]
pub(super) struct InFlight {
    pub(super) part: Part,
    pub(super) records: Vec<(u64, Bytes)>,
    pub(super) ack: PendingAck,
}

/// A broken invariant.
#[derive(Debug, Clone)]
pub(super) struct Violation {
    pub(super) invariant: &'static str,
    pub(super) detail: String,
}

impl Violation {
    pub(super) fn new(invariant: &'static str, detail: impl Into<String>) -> Self {
        Violation {
            invariant,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.invariant, self.detail)
    }
}

/// What a run did, for the long run's report.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Counts {
    pub(super) acked: u64,
    pub(super) consumed: u64,
    pub(super) crashes: u64,
    pub(super) power_losses: u64,
    pub(super) leader_changes: u64,
    pub(super) exempt: u64,
    /// A hash of every step and outcome noted (to check that a seed
    /// replays the same run).
    pub(super) fingerprint: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.acked += o.acked;
        self.consumed += o.consumed;
        self.crashes += o.crashes;
        self.power_losses += o.power_losses;
        self.leader_changes += o.leader_changes;
        self.exempt += o.exempt;
        self.fingerprint ^= o.fingerprint;
    }
}

/// The cluster under test and the model.
pub(super) struct World {
    pub(super) seed: u64,
    /// Each topic's placement (start, shift), as `LOGBUS_CLUSTER_SIM_PLACEMENT`
    /// names it for a replay.
    pub(super) placements: Vec<(u32, u32)>,
    pub(super) rng: Rng,
    pub(super) clock: ManualClock,
    pub(super) cluster: Cluster,
    pub(super) brokers: u32,
    pub(super) storages: Vec<Arc<FaultyStorage>>,
    pub(super) health: Vec<Health>,
    pub(super) cut_off: Vec<bool>,
    pub(super) paused: Vec<bool>,
    pub(super) keys: BTreeMap<Part, TopicIdPartition>,
    /// Each replica as last seen, by (partition, broker).
    pub(super) views: BTreeMap<(Part, u32), LogView>,
    /// Replicas whose broker lost power since they were last in the ISR.
    pub(super) suspect: BTreeSet<(Part, u32)>,
    pub(super) in_flight: Vec<InFlight>,
    pub(super) acked: BTreeMap<Part, BTreeMap<u64, Tracked>>,
    pub(super) consumed: BTreeMap<Part, BTreeMap<u64, Tracked>>,
    pub(super) consumer_pos: BTreeMap<Part, u64>,
    /// The leader the controller named for each (partition, epoch).
    pub(super) epoch_leaders: BTreeMap<(Part, i32), Option<u32>>,
    /// The highest high watermark seen at the leader of each (partition,
    /// epoch).
    pub(super) max_hw: BTreeMap<(Part, i32), u64>,
    /// The highest high watermark seen at any leader of each partition.
    pub(super) hw_ever: BTreeMap<Part, u64>,
    /// Where a leader's log ended below `hw_ever` (committed data lost to
    /// power losses of every ISR member, page-cache topics only): (leader
    /// epoch, its log end). Followers' batches of older epochs from there
    /// on are not the committed prefix any more.
    pub(super) rewinds: BTreeMap<Part, Vec<(i32, u64)>>,
    pub(super) history: VecDeque<String>,
    pub(super) step_no: usize,
    pub(super) next_value: u64,
    pub(super) counts: Counts,
    /// Kept last: the directory outlives the cluster.
    pub(super) dir: tempfile::TempDir,
}

impl fmt::Debug for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("World")
            .field("seed", &self.seed)
            .field("step", &self.step_no)
            .finish_non_exhaustive()
    }
}

impl World {
    /// A new cluster for `seed` (3 or 4 brokers), with the topics
    /// created, and `bug` injected into every broker.
    pub(super) fn new(
        seed: u64,
        bug: Option<InjectedBug>,
        placement: Option<&[(u32, u32)]>,
    ) -> World {
        let mut rng = Rng::new(seed);
        let brokers = if rng.chance(50) { 3 } else { 4 };
        // In memory where there is a tmpfs: the runs fsync a lot, and what
        // a disk would hold is FaultyStorage's business, not the disk's.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("temporary directory");
        let clock = ManualClock::new(1_000_000);
        let storages: Vec<Arc<FaultyStorage>> = (0..brokers)
            .map(|_| Arc::new(FaultyStorage::new()))
            .collect();
        let mut builder = ClusterConfig::builder()
            .brokers(brokers)
            .clock(Arc::new(clock.clone()))
            .controller_thread(false)
            .replica_fetchers(false)
            .broker_session_timeout(Duration::from_millis(SESSION_MS as u64))
            .replica_lag_time_max(Duration::from_millis(LAG_MS as u64))
            .checkpoint_interval(Duration::from_secs(10 * 365 * 86_400))
            .retention_check_interval(Duration::from_secs(10 * 365 * 86_400))
            .background_threads(1);
        for (id, storage) in (0..).zip(&storages) {
            let storage: Arc<dyn Storage> = storage.clone();
            builder = builder.broker_storage(id, storage);
        }
        let mut config = builder.build().expect("simulation config");
        config.injected_bug = bug;
        let cluster = Cluster::open(dir.path(), config).expect("open the cluster");
        let mut keys = BTreeMap::new();
        let mut placements = Vec::new();
        for (t, spec) in TOPICS.iter().enumerate() {
            let mut config = TopicConfig::new()
                .min_insync_replicas(2)
                .expect("min.insync.replicas")
                .unclean_leader_election_enable(false);
            if spec.durable {
                config = config.flush(FlushPolicy::every_append());
            }
            // The placement comes from the topic's random id. A run takes
            // the one it gets and reports it; a replay names it
            // (`LOGBUS_CLUSTER_SIM_PLACEMENT`) and the topic is created
            // again until it has it, so that it replays the same run.
            let wanted = placement.and_then(|p| p.get(t).copied());
            let mut attempts = 0;
            let (state, got) = loop {
                cluster
                    .create_topic(
                        NewTopic::new(spec.name, spec.partitions)
                            .replication_factor(RF as u16)
                            .config(config.clone()),
                    )
                    .expect("create a topic");
                let state = cluster.inner.topic_state(spec.name).expect("topic state");
                let placed: Vec<Vec<u32>> = state
                    .assignments
                    .read()
                    .iter()
                    .map(|r| r.replicas.clone())
                    .collect();
                let got = (0..brokers)
                    .flat_map(|start| (0..brokers).map(move |shift| (start, shift)))
                    .find(|&(start, shift)| {
                        Placement { start, shift }.assign(brokers, RF as u16, 0, spec.partitions)
                            == placed
                    })
                    .expect("the controller places as Placement does");
                if wanted.is_none_or(|w| w == got) {
                    break (state, got);
                }
                attempts += 1;
                assert!(
                    attempts < 1_000,
                    "no topic id gave the placement {wanted:?}"
                );
                cluster.delete_topic(spec.name).expect("delete a topic");
            };
            placements.push(got);
            for p in 0..spec.partitions {
                keys.insert((t, p), state.key(p).expect("partition key"));
            }
        }
        World {
            seed,
            placements,
            rng,
            clock,
            cluster,
            brokers,
            storages,
            health: vec![Health::Running; brokers as usize],
            cut_off: vec![false; brokers as usize],
            paused: vec![false; brokers as usize],
            keys,
            views: BTreeMap::new(),
            suspect: BTreeSet::new(),
            in_flight: Vec::new(),
            acked: BTreeMap::new(),
            consumed: BTreeMap::new(),
            consumer_pos: BTreeMap::new(),
            epoch_leaders: BTreeMap::new(),
            max_hw: BTreeMap::new(),
            hw_ever: BTreeMap::new(),
            rewinds: BTreeMap::new(),
            history: VecDeque::new(),
            step_no: 0,
            next_value: 0,
            counts: Counts::default(),
            dir,
        }
    }

    /// Every partition.
    pub(super) fn parts(&self) -> Vec<Part> {
        self.keys.keys().copied().collect()
    }

    pub(super) fn key(&self, part: Part) -> &TopicIdPartition {
        &self.keys[&part]
    }

    /// The partition's state as the controller holds it.
    pub(super) fn roles(&self, part: Part) -> LeaderAndIsr {
        let state = self
            .cluster
            .inner
            .topic_state(TOPICS[part.0].name)
            .expect("topic state");
        state.assignments.read()[part.1 as usize].clone()
    }

    pub(super) fn running(&self, b: u32) -> bool {
        self.health[b as usize] == Health::Running
    }

    /// Brokers down or cut off from the controller.
    pub(super) fn failed(&self) -> usize {
        (0..self.brokers)
            .filter(|&b| !self.running(b) || self.cut_off[b as usize])
            .count()
    }

    /// Broker `b`'s replica manager, if it runs.
    pub(super) fn manager(&self, b: u32) -> Option<Arc<ReplicaManager>> {
        if !self.running(b) {
            return None;
        }
        self.cluster
            .inner
            .running_broker(b)
            .map(|broker| broker.replicas.clone())
    }

    /// Notes a step for the report of a failure.
    pub(super) fn note(&mut self, line: String) {
        // FNV-1a over the line (its step number included).
        let mut hash = self.counts.fingerprint ^ 0xcbf2_9ce4_8422_2325;
        for byte in format!("{}:{line}", self.step_no).bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        self.counts.fingerprint = hash;
        let keep = std::env::var("LOGBUS_CLUSTER_SIM_HISTORY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(HISTORY);
        while self.history.len() >= keep.max(1) {
            self.history.pop_front();
        }
        self.history.push_back(format!("#{} {line}", self.step_no));
    }

    /// A report of a failure: the seed, the violation, the last steps.
    pub(super) fn report(&self, violation: &Violation) -> String {
        let placement: Vec<String> = self
            .placements
            .iter()
            .map(|(start, shift)| format!("{start}.{shift}"))
            .collect();
        let placement = placement.join(",");
        let mut out = format!(
            "cluster simulation: seed {} ({} brokers, placement {placement}) failed at step {}: \
             {violation}\n\
             replay: LOGBUS_CLUSTER_SIM_SEED={} LOGBUS_CLUSTER_SIM_PLACEMENT={placement} cargo \
             test --all-features --lib cluster::sim::tests::replay_one_seed -- --ignored \
             --nocapture\nlast steps:\n",
            self.seed, self.brokers, self.step_no, self.seed
        );
        for line in &self.history {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
        out.push_str(&self.state_dump());
        out
    }

    /// The controller's state of every partition and each replica as last
    /// seen.
    pub(super) fn state_dump(&self) -> String {
        let mut out = String::from("state (controller; each replica as last seen):\n");
        for part in self.parts() {
            let roles = self.roles(part);
            out.push_str(&format!(
                "  {}-{}: leader {:?} epoch {} isr {:?}\n",
                TOPICS[part.0].name, part.1, roles.leader, roles.leader_epoch, roles.isr
            ));
            for &b in &roles.replicas {
                if let Some(v) = self.views.get(&(part, b)) {
                    out.push_str(&format!(
                        "    broker {b} ({:?}{}): log end {} HW {} recovery point {} leader {:?} \
                         epoch {}{}{}\n",
                        self.health[b as usize],
                        if self.cut_off[b as usize] {
                            ", cut off"
                        } else {
                            ""
                        },
                        v.log_end,
                        v.high_watermark,
                        v.recovery_point,
                        v.leader,
                        v.leader_epoch,
                        if v.lost_unsynced {
                            ", power lost since"
                        } else {
                            ""
                        },
                        if self.suspect.contains(&(part, b)) {
                            ", suspect"
                        } else {
                            ""
                        },
                    ));
                }
            }
        }
        out
    }

    /// Whether broker `b` still holds `value` at `offset` of `part`, as
    /// last seen (a down broker: unless a power loss took it unsynced).
    pub(super) fn holds(&self, part: Part, b: u32, offset: u64, value: &Bytes) -> bool {
        let Some(view) = self.views.get(&(part, b)) else {
            return false;
        };
        if view.records.get(&offset) != Some(value) {
            return false;
        }
        !view.lost_unsynced || view.synced_all || offset < view.recovery_point
    }

    /// Reads every running replica's log, offsets and leadership into
    /// `views`.
    ///
    /// # Errors
    /// A violation if a running replica cannot be read.
    pub(super) fn observe(&mut self) -> Result<(), Violation> {
        for part in self.parts() {
            let roles = self.roles(part);
            for &b in &roles.replicas {
                let Some(manager) = self.manager(b) else {
                    continue;
                };
                let view = read_replica(&manager, self.key(part)).map_err(|e| {
                    Violation::new(
                        "observe",
                        format!("broker {b} cannot read its replica of {part:?}: {e}"),
                    )
                })?;
                self.views.insert((part, b), view);
                if roles.isr.contains(&b) {
                    self.suspect.remove(&(part, b));
                }
            }
        }
        Ok(())
    }

    /// A fresh value for a record.
    pub(super) fn next_value(&mut self, part: Part) -> Bytes {
        self.next_value += 1;
        Bytes::from(format!(
            "{}-{}#{}",
            TOPICS[part.0].name, part.1, self.next_value
        ))
    }
}

/// One replica's log (every batch from its log start), offsets and
/// leadership.
fn read_replica(manager: &ReplicaManager, key: &TopicIdPartition) -> Result<LogView, Error> {
    let info = manager.describe(key)?;
    let mut view = LogView {
        log_end: info.offsets.log_end,
        high_watermark: info.offsets.high_watermark,
        recovery_point: info.offsets.recovery_point,
        leader: info.leader,
        leader_epoch: info.leader_epoch,
        ..LogView::default()
    };
    let mut offset = info.offsets.log_start;
    while offset < view.log_end {
        let data = manager.fetch(key, offset, 1 << 20, FetchBound::LogEnd)?;
        let bytes = Bytes::copy_from_slice(data.records());
        drop(data);
        if bytes.is_empty() {
            break;
        }
        for batch in Batches::new(bytes) {
            let batch = batch.map_err(|e| Error::Internal(format!("a batch: {e}")))?;
            let header = batch.header();
            let (base, last) = (header.base_offset as u64, header.last_offset() as u64);
            for record in batch
                .records()
                .map_err(|e| Error::Internal(format!("records: {e}")))?
            {
                let record = record.map_err(|e| Error::Internal(format!("a record: {e}")))?;
                let value = record.value().cloned().unwrap_or_default();
                view.records.insert(record.offset() as u64, value);
            }
            view.batches.insert(base, (last, batch.as_bytes().clone()));
            offset = last + 1;
        }
    }
    Ok(view)
}
