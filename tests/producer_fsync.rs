//! A producer on a topic that fsyncs every append (`flush.messages=1`):
//! a record is acknowledged only once an fsync that covers it returned,
//! and the sender writes the next group of batches while the previous
//! group's fsync runs (pipelined group commit), so the fsyncs follow each
//! other without the sender's work between them.
//!
//! The partition's `.log` files run on a storage whose fsyncs can be held:
//! each one waits at a gate the test opens, and every write and fsync is
//! reported on a channel, so the test sees exactly what was written and
//! synced before each acknowledgement.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use logbus::{
    Acks, Cluster, ClusterConfig, FaultKind, FaultOp, FaultyStorage, NewTopic, Producer,
    ProducerConfig, ProducerRecord, StdStorage, Storage, TopicConfig,
};
use parking_lot::{Condvar, Mutex};

mod common;

use common::hooked::{FileHooks, HookedStorage};
use common::shm_tempdir as tempdir;

/// Generous bound on waits that end as soon as the condition holds.
const PATIENCE: Duration = Duration::from_secs(60);

const TOPIC: &str = "t";

/// What the gated files report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// A write of this many bytes returned.
    Wrote(usize),
    /// An fsync began (and waits at the gate while it is held).
    SyncStarted,
    /// An fsync returned.
    Synced,
}

/// The gate the gated files' fsyncs pass: while `held`, an fsync waits
/// until `passes` lets one more through.
#[derive(Debug, Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    held: bool,
    /// Fsyncs let through while held.
    passes: u64,
    /// Fsyncs that waited at the held gate so far.
    arrived: u64,
}

impl Gate {
    fn hold(&self) {
        self.state.lock().held = true;
    }

    /// Lets one more fsync through.
    fn pass_one(&self) {
        self.state.lock().passes += 1;
        self.changed.notify_all();
    }

    fn open(&self) {
        self.state.lock().held = false;
        self.changed.notify_all();
    }

    fn wait_turn(&self) {
        let mut state = self.state.lock();
        if !state.held {
            return;
        }
        state.arrived += 1;
        let ticket = state.arrived;
        while state.held && state.passes < ticket {
            self.changed.wait(&mut state);
        }
    }
}

/// What a storage does around the `*.log` files of partition 0 of
/// [`TOPIC`]: reports their writes and fsyncs and passes the gate before
/// each fsync.
#[derive(Debug)]
struct Gated {
    gate: Arc<Gate>,
    events: Sender<Event>,
}

impl FileHooks for Gated {
    fn wraps(&self, path: &Path) -> bool {
        let parent = path.parent().and_then(Path::file_name);
        path.extension().is_some_and(|e| e == "log")
            && parent.is_some_and(|p| p == format!("{TOPIC}-0").as_str())
    }

    fn after_write(&self, _path: &Path, bytes: usize) {
        let _ = self.events.send(Event::Wrote(bytes));
    }

    fn before_sync(&self, _path: &Path) {
        let _ = self.events.send(Event::SyncStarted);
        self.gate.wait_turn();
    }

    fn after_sync(&self, _path: &Path) {
        let _ = self.events.send(Event::Synced);
    }
}

/// A one-broker cluster on `inner` gated with topic [`TOPIC`] (one
/// partition, `flush.messages=1`), and a producer with `acks`, no linger
/// and no retries.
struct Rig {
    _dir: tempfile::TempDir,
    cluster: Cluster,
    producer: Producer,
    gate: Arc<Gate>,
    events: Receiver<Event>,
}

impl Rig {
    fn new(acks: Acks) -> Rig {
        Rig::on(Arc::new(StdStorage::new()), acks)
    }

    fn on(inner: Arc<dyn Storage>, acks: Acks) -> Rig {
        let dir = tempdir();
        let gate = Arc::new(Gate::default());
        let (tx, events) = crossbeam_channel::unbounded();
        let hooks = Gated {
            gate: Arc::clone(&gate),
            events: tx,
        };
        let storage = HookedStorage::new(inner, Arc::new(hooks));
        let config = ClusterConfig::builder()
            .storage(Arc::new(storage))
            .build()
            .expect("config");
        let cluster = Cluster::open(dir.path(), config).expect("open");
        let topic = TopicConfig::new()
            .set("flush.messages", "1")
            .expect("flush.messages");
        cluster
            .create_topic(NewTopic::new(TOPIC, 1).config(topic))
            .expect("create topic");
        let producer = Producer::new(
            &cluster,
            ProducerConfig::builder()
                .acks(acks)
                .linger(Duration::ZERO)
                .retries(0)
                .build()
                .expect("producer config"),
        )
        .expect("producer");
        // What creating the topic wrote and synced is not the test's.
        while events.try_recv().is_ok() {}
        Rig {
            _dir: dir,
            cluster,
            producer,
            gate,
            events,
        }
    }

    /// The partition's high watermark: what consumers may read.
    fn high_watermark(&self) -> u64 {
        self.cluster
            .topic(TOPIC)
            .and_then(|t| t.partition(0))
            .and_then(|p| p.high_watermark())
            .expect("high watermark")
    }

    /// The next event the gated files report.
    fn next(&self) -> Event {
        self.events
            .recv_timeout(PATIENCE)
            .expect("the gated files report an event")
    }
}

impl Drop for Rig {
    /// Opens the gate first, so that a failing test ends instead of
    /// waiting forever for the producer's close, which waits for a held
    /// fsync.
    fn drop(&mut self) {
        self.gate.open();
    }
}

/// Under `acks`: a record is not acknowledged while the fsync covering it
/// is held, the next record is written meanwhile (not after), and each
/// acknowledgement comes after its own fsync returned.
fn acknowledgement_follows_its_fsync_and_the_next_write_overlaps_it(acks: Acks) {
    let rig = Rig::new(acks);
    rig.gate.hold();
    let first = rig
        .producer
        .send(ProducerRecord::new(TOPIC, "first"))
        .expect("send");
    assert!(matches!(rig.next(), Event::Wrote(_)));
    assert_eq!(rig.next(), Event::SyncStarted);
    // The first fsync is held: the second record is written while it
    // waits.
    let second = rig
        .producer
        .send(ProducerRecord::new(TOPIC, "second"))
        .expect("send");
    assert!(matches!(rig.next(), Event::Wrote(_)));
    assert!(!first.is_done(), "acknowledged before its fsync returned");
    assert!(!second.is_done(), "acknowledged before any fsync returned");
    assert_eq!(rig.high_watermark(), 0, "consumers see unsynced records");
    // The first fsync returns: it covered the first record only (it began
    // before the second was written).
    rig.gate.pass_one();
    assert_eq!(rig.next(), Event::Synced);
    let first = first.wait().expect("first acknowledged");
    assert_eq!(first.offset(), Some(0));
    assert_eq!(rig.high_watermark(), 1);
    assert_eq!(rig.next(), Event::SyncStarted);
    assert!(
        !second.is_done(),
        "acknowledged while the fsync covering it is held"
    );
    rig.gate.pass_one();
    assert_eq!(rig.next(), Event::Synced);
    let second = second.wait().expect("second acknowledged");
    assert_eq!(second.offset(), Some(1));
    assert_eq!(rig.high_watermark(), 2);
    rig.gate.open();
}

#[test]
fn with_acks_1_an_ack_follows_its_fsync_and_the_next_write_overlaps_it() {
    acknowledgement_follows_its_fsync_and_the_next_write_overlaps_it(Acks::Leader);
}

#[test]
fn with_acks_all_an_ack_follows_its_fsync_and_the_next_write_overlaps_it() {
    acknowledgement_follows_its_fsync_and_the_next_write_overlaps_it(Acks::All);
}

/// A failed fsync fails the records it was to cover (their acknowledgement
/// never comes), and the log stays fenced: what a successful fsync covered
/// before stays acknowledged.
#[test]
fn a_failed_fsync_fails_the_records_it_was_to_cover() {
    let faulty = FaultyStorage::new();
    let rig = Rig::on(Arc::new(faulty.clone()), Acks::Leader);
    let kept = rig
        .producer
        .send(ProducerRecord::new(TOPIC, "kept"))
        .expect("send")
        .wait()
        .expect("kept acknowledged");
    assert_eq!(kept.offset(), Some(0));
    while rig.events.try_recv().is_ok() {}
    rig.gate.hold();
    let lost = rig
        .producer
        .send(ProducerRecord::new(TOPIC, "lost"))
        .expect("send");
    assert!(matches!(rig.next(), Event::Wrote(_)));
    assert_eq!(rig.next(), Event::SyncStarted);
    faulty.fail_all_from_now(FaultOp::Sync, FaultKind::Eio);
    rig.gate.pass_one();
    let outcome = lost.wait();
    assert!(
        outcome.is_err(),
        "acknowledged a record whose fsync failed: {outcome:?}"
    );
    // Fenced: a later record fails too, without a successful fsync.
    faulty.clear_faults();
    rig.gate.open();
    let later = rig
        .producer
        .send(ProducerRecord::new(TOPIC, "later"))
        .expect("send")
        .wait();
    assert!(
        later.is_err(),
        "acknowledged a record of a fenced log: {later:?}"
    );
}
