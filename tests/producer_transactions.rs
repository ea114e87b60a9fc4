//! The transactional producer: records of several partitions and topics
//! committed or aborted together (COMMIT / ABORT control batches after
//! the data in every partition), offsets committed with the transaction,
//! fencing of a zombie by a newer instance, Kafka's state machine (calls
//! out of order are refused), the coordinator's transaction timeout on a
//! manual clock, a crash mid-transaction cleaned up by the next instance,
//! and a commit across a leader failover. Waits are on the manual clock,
//! handles and `Cluster::wait_until` (a guard, never a timing assertion).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use logbus::{
    Acks, Cluster, ClusterConfig, Consumer, ConsumerConfig, Error, ManualClock, NewTopic,
    OffsetAndMetadata, Producer, ProducerConfig, ProducerRecord, TopicConfig, TopicPartition,
};

/// A guard against a hang, never a timing assertion.
const GUARD: Duration = Duration::from_secs(60);

/// One batch of a partition's log, as the tests look at it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// A data batch: its values, transactional flag, producer id, epoch
    /// and base sequence.
    Data {
        values: Vec<String>,
        transactional: bool,
        producer_id: i64,
        epoch: i16,
        base_sequence: i32,
    },
    /// A control batch: COMMIT (true) or ABORT (false), of a producer id.
    Marker { commit: bool, producer_id: i64 },
}

/// Every batch of `topic`-`partition` below the high watermark, in order.
fn log(cluster: &Cluster, topic: &str, partition: u32) -> Vec<Entry> {
    let partition = cluster.topic(topic).unwrap().partition(partition).unwrap();
    let mut out = Vec::new();
    let mut offset = partition.log_start_offset().unwrap();
    while offset < partition.high_watermark().unwrap() {
        let read = partition.read(offset, 1 << 20).unwrap();
        let mut any = false;
        for batch in read.batches() {
            let batch = batch.unwrap();
            let h = *batch.header();
            let last = u64::try_from(h.base_offset + i64::from(h.last_offset_delta)).unwrap();
            if last < offset {
                continue;
            }
            any = true;
            offset = last + 1;
            let records: Vec<_> = batch.records().unwrap().map(Result::unwrap).collect();
            if h.is_control() {
                let key = records[0].key().unwrap();
                let kind = i16::from_be_bytes([key[2], key[3]]);
                out.push(Entry::Marker {
                    commit: kind == 1,
                    producer_id: h.producer_id,
                });
            } else {
                out.push(Entry::Data {
                    values: records
                        .iter()
                        .map(|r| String::from_utf8(r.value().unwrap().to_vec()).unwrap())
                        .collect(),
                    transactional: h.is_transactional(),
                    producer_id: h.producer_id,
                    epoch: h.producer_epoch,
                    base_sequence: h.base_sequence,
                });
            }
        }
        if !any {
            break;
        }
    }
    out
}

/// The values of the data batches of a partition, and its markers as
/// `"COMMIT"` / `"ABORT"`, in log order.
fn shape(cluster: &Cluster, topic: &str, partition: u32) -> Vec<String> {
    log(cluster, topic, partition)
        .into_iter()
        .flat_map(|e| match e {
            Entry::Data { values, .. } => values,
            Entry::Marker { commit: true, .. } => vec!["COMMIT".to_string()],
            Entry::Marker { commit: false, .. } => vec!["ABORT".to_string()],
        })
        .collect()
}

struct Setup {
    dir: tempfile::TempDir,
    clock: ManualClock,
}

impl Setup {
    fn new() -> Self {
        Setup {
            dir: tempfile::tempdir().unwrap(),
            clock: ManualClock::new(1_000_000),
        }
    }

    fn open(&self) -> Cluster {
        let config = ClusterConfig::builder()
            .clock(Arc::new(self.clock.clone()))
            .transaction_abort_interval(Duration::from_secs(1))
            .transaction_state_log_num_partitions(4)
            .build()
            .unwrap();
        let cluster = Cluster::open(self.dir.path(), config).unwrap();
        cluster.create_topic(NewTopic::new("a", 2)).unwrap();
        cluster.create_topic(NewTopic::new("b", 1)).unwrap();
        cluster
    }
}

fn txn_producer(cluster: &Cluster, id: &str) -> Producer {
    Producer::new(
        cluster,
        ProducerConfig::builder()
            .transactional_id(id)
            .build()
            .unwrap(),
    )
    .unwrap()
}

fn record(topic: &str, partition: u32, value: &str) -> ProducerRecord {
    ProducerRecord::new(topic, value.to_string()).with_partition(partition)
}

/// Sends a record whose outcome the test reads from the log.
fn put(producer: &Producer, record: ProducerRecord) {
    let _outcome = producer.send(record).unwrap();
}

fn is_fenced<T: std::fmt::Debug>(result: Result<T, Error>) -> bool {
    matches!(result, Err(Error::ProducerFenced { .. }))
}

fn is_illegal<T: std::fmt::Debug>(result: Result<T, Error>) -> bool {
    matches!(result, Err(Error::IllegalState(_)))
}

#[test]
fn a_commit_marks_every_partition_of_the_transaction_after_its_data() {
    let setup = Setup::new();
    let cluster = setup.open();
    let producer = txn_producer(&cluster, "tx");
    producer.init_transactions().unwrap();
    producer.begin_transaction().unwrap();
    for (topic, partition, value) in [("a", 0, "a0"), ("a", 1, "a1"), ("b", 0, "b0")] {
        put(&producer, record(topic, partition, value));
    }
    producer.flush().unwrap();
    // Written, but not decided: no marker yet, and the batches carry the
    // transactional flag, the producer id and epoch, sequence 0.
    let before = log(&cluster, "a", 0);
    let [
        Entry::Data {
            transactional: true,
            producer_id,
            epoch: 0,
            base_sequence: 0,
            ..
        },
    ] = before.as_slice()
    else {
        panic!("one transactional batch expected, got {before:?}");
    };
    assert!(*producer_id >= 0);
    assert_eq!(shape(&cluster, "b", 0), ["b0"]);

    producer.commit_transaction().unwrap();
    for (topic, partition, value) in [("a", 0, "a0"), ("a", 1, "a1"), ("b", 0, "b0")] {
        assert_eq!(shape(&cluster, topic, partition), [value, "COMMIT"]);
        let entries = log(&cluster, topic, partition);
        assert_eq!(
            entries[1],
            Entry::Marker {
                commit: true,
                producer_id: *producer_id
            }
        );
    }

    // The next transaction continues the sequences in the same epoch, and
    // only touches the partitions it writes to.
    producer.begin_transaction().unwrap();
    put(&producer, record("a", 0, "a0-2"));
    producer.commit_transaction().unwrap();
    assert_eq!(shape(&cluster, "a", 0), ["a0", "COMMIT", "a0-2", "COMMIT"]);
    assert_eq!(shape(&cluster, "a", 1), ["a1", "COMMIT"]);
    let Entry::Data { base_sequence, .. } = &log(&cluster, "a", 0)[2] else {
        panic!("data expected");
    };
    assert_eq!(*base_sequence, 1);

    // A transaction with no records commits without the coordinator.
    producer.begin_transaction().unwrap();
    producer.commit_transaction().unwrap();
    producer.close().unwrap();
    cluster.close().unwrap();
}

#[test]
fn an_abort_marks_what_was_written_and_drops_what_was_not() {
    let setup = Setup::new();
    let cluster = setup.open();
    let producer = txn_producer(&cluster, "tx");
    producer.init_transactions().unwrap();
    producer.begin_transaction().unwrap();
    producer
        .send(record("a", 0, "written"))
        .unwrap()
        .wait()
        .unwrap();
    // Lingers in its batch on the manual clock: never sent.
    let unsent = producer.send(record("b", 0, "unsent")).unwrap();
    producer.abort_transaction().unwrap();
    assert!(matches!(
        unsent.wait(),
        Err(Error::TransactionAborted { transactional_id }) if transactional_id == "tx"
    ));
    assert_eq!(shape(&cluster, "a", 0), ["written", "ABORT"]);
    assert!(
        shape(&cluster, "b", 0).is_empty(),
        "never added, never marked"
    );

    // The producer goes on with a new transaction.
    producer.begin_transaction().unwrap();
    put(&producer, record("b", 0, "next"));
    producer.commit_transaction().unwrap();
    assert_eq!(shape(&cluster, "b", 0), ["next", "COMMIT"]);
    producer.close().unwrap();
    cluster.close().unwrap();
}

/// Sends `count` records of about 1 KB each to `topic`-`partition`,
/// each reporting on `done` (with its value) when its batch completes.
fn send_kilobytes(
    producer: &Producer,
    topic: &str,
    partition: u32,
    prefix: &str,
    count: usize,
    done: &std::sync::mpsc::Sender<(String, bool)>,
) -> Vec<String> {
    let mut values = Vec::new();
    for i in 0..count {
        let value = format!("{prefix}{i:02}-{}", "x".repeat(1000));
        let done = done.clone();
        let reported = value.clone();
        producer
            .send_with_callback(record(topic, partition, &value), move |result| {
                let _ = done.send((reported, result.is_ok()));
            })
            .unwrap();
        values.push(value);
    }
    values
}

/// A transactional producer with a transaction begun and `count`
/// records of about 1 KB sent to `a`-0, each reporting to `reports`.
struct Begun {
    cluster: Cluster,
    producer: Producer,
    values: Vec<String>,
    done: std::sync::mpsc::Sender<(String, bool)>,
    reports: std::sync::mpsc::Receiver<(String, bool)>,
    _setup: Setup,
}

fn begin_with_kilobytes(count: usize) -> Begun {
    let setup = Setup::new();
    let cluster = setup.open();
    let producer = txn_producer(&cluster, "tx");
    producer.init_transactions().unwrap();
    producer.begin_transaction().unwrap();
    let (done, reports) = std::sync::mpsc::channel();
    let values = send_kilobytes(&producer, "a", 0, "v", count, &done);
    Begun {
        cluster,
        producer,
        values,
        done,
        reports,
        _setup: setup,
    }
}

#[test]
fn a_commit_appends_its_batches_in_order_and_runs_their_callbacks_first() {
    // 40 records of 1 KB: three batches of the default 16 KiB, appended
    // by the commit (or, the first, by the sender thread when it was
    // sealed: the partition had sealed nothing just before).
    let Begun {
        cluster,
        producer,
        values,
        done: _done,
        reports,
        _setup,
    } = begin_with_kilobytes(40);
    producer.commit_transaction().unwrap();
    let mut want = values.clone();
    want.push("COMMIT".into());
    assert_eq!(shape(&cluster, "a", 0), want);
    // Written in more than one batch, transactional, with consecutive
    // sequences.
    let entries = log(&cluster, "a", 0);
    let mut next = 0;
    let mut batches = 0;
    for entry in &entries {
        if let Entry::Data {
            values,
            base_sequence,
            transactional,
            ..
        } = entry
        {
            assert!(transactional);
            assert_eq!(*base_sequence, next);
            next += i32::try_from(values.len()).unwrap();
            batches += 1;
        }
    }
    assert!(batches > 1, "{entries:?}");
    // Every callback ran before the commit returned, in send order.
    let mut completed = Vec::new();
    while let Ok((value, ok)) = reports.try_recv() {
        assert!(ok);
        completed.push(value);
    }
    assert_eq!(completed, values);
    producer.close().unwrap();
    cluster.close().unwrap();
}

#[test]
fn an_abort_marks_what_was_appended_and_fails_what_was_not() {
    let Begun {
        cluster,
        producer,
        values,
        done,
        reports,
        _setup,
    } = begin_with_kilobytes(12);
    // A flush inside the transaction appends what was sent so far.
    producer.flush().unwrap();
    let mut appended = Vec::new();
    while let Ok((value, ok)) = reports.try_recv() {
        assert!(ok, "{value}");
        appended.push(value);
    }
    assert_eq!(appended, values);
    // More records, which stay in their open batch until the abort.
    let late = send_kilobytes(&producer, "a", 0, "w", 3, &done);
    producer.abort_transaction().unwrap();
    let mut failed = Vec::new();
    while let Ok((value, ok)) = reports.try_recv() {
        assert!(!ok, "{value}");
        failed.push(value);
    }
    assert_eq!(failed, late);
    let mut aborted = values.clone();
    aborted.push("ABORT".into());
    assert_eq!(shape(&cluster, "a", 0), aborted);
    // A read_committed consumer sees none of it.
    let mut consumer = Consumer::new(
        &cluster,
        ConsumerConfig::builder()
            .isolation_level(logbus::IsolationLevel::ReadCommitted)
            .build()
            .unwrap(),
    )
    .unwrap();
    consumer.assign(&[TopicPartition::new("a", 0)]).unwrap();
    consumer
        .seek_to_beginning(&[TopicPartition::new("a", 0)])
        .unwrap();
    let seen = consumer.poll(Duration::ZERO).unwrap();
    assert_eq!(seen.count(), 0);
    // The next transaction commits after the ABORT marker.
    producer.begin_transaction().unwrap();
    put(&producer, record("a", 0, "next"));
    producer.commit_transaction().unwrap();
    let after = shape(&cluster, "a", 0);
    assert_eq!(after[aborted.len()..], ["next", "COMMIT"]);
    producer.close().unwrap();
    cluster.close().unwrap();
}

#[test]
fn offsets_sent_to_a_transaction_are_committed_only_with_it() {
    let setup = Setup::new();
    let cluster = setup.open();
    let producer = txn_producer(&cluster, "tx");
    producer.init_transactions().unwrap();
    let tp = TopicPartition::new("a", 0);
    let offsets = |at: u64| BTreeMap::from([(tp.clone(), OffsetAndMetadata::new(at))]);

    producer.begin_transaction().unwrap();
    put(&producer, record("b", 0, "out-1"));
    producer
        .send_offsets_to_transaction(&offsets(10), "g")
        .unwrap();
    assert!(cluster.list_group_offsets("g").unwrap().is_empty());
    producer.abort_transaction().unwrap();
    assert!(cluster.list_group_offsets("g").unwrap().is_empty());

    producer.begin_transaction().unwrap();
    put(&producer, record("b", 0, "out-2"));
    producer
        .send_offsets_to_transaction(&offsets(20), "g")
        .unwrap();
    assert!(cluster.list_group_offsets("g").unwrap().is_empty());
    producer.commit_transaction().unwrap();
    assert_eq!(cluster.list_group_offsets("g").unwrap()[&tp].offset, 20);

    // Offsets alone make a transaction too.
    producer.begin_transaction().unwrap();
    producer
        .send_offsets_to_transaction(&offsets(30), "g")
        .unwrap();
    producer.commit_transaction().unwrap();
    assert_eq!(cluster.list_group_offsets("g").unwrap()[&tp].offset, 30);

    // A bad group id is refused and changes nothing.
    producer.begin_transaction().unwrap();
    assert!(matches!(
        producer.send_offsets_to_transaction(&offsets(40), ""),
        Err(Error::InvalidArgument(_))
    ));
    producer.commit_transaction().unwrap();
    assert_eq!(cluster.list_group_offsets("g").unwrap()[&tp].offset, 30);
    producer.close().unwrap();
    cluster.close().unwrap();
}

#[test]
fn a_new_instance_fences_the_old_one_and_aborts_its_transaction() {
    let setup = Setup::new();
    let cluster = setup.open();
    let zombie = txn_producer(&cluster, "tx");
    zombie.init_transactions().unwrap();
    zombie.begin_transaction().unwrap();
    zombie
        .send(record("a", 0, "zombie"))
        .unwrap()
        .wait()
        .unwrap();

    let fresh = txn_producer(&cluster, "tx");
    fresh.init_transactions().unwrap();
    // The zombie's open transaction was aborted by the takeover.
    assert_eq!(shape(&cluster, "a", 0), ["zombie", "ABORT"]);

    // Its next record to the partition is refused (a stale epoch), and
    // the producer is fatally fenced from then on.
    let late = zombie.send(record("a", 0, "late")).unwrap();
    assert!(matches!(
        late.wait(),
        Err(Error::InvalidProducerEpoch { .. } | Error::ProducerFenced { .. })
    ));
    assert!(is_fenced(zombie.commit_transaction()));
    assert!(is_fenced(zombie.begin_transaction()));
    assert!(is_fenced(zombie.send(record("a", 0, "later"))));
    assert!(is_fenced(zombie.abort_transaction()));
    assert!(is_fenced(zombie.init_transactions()));
    assert_eq!(shape(&cluster, "a", 0), ["zombie", "ABORT"]);

    fresh.begin_transaction().unwrap();
    put(&fresh, record("a", 0, "fresh"));
    fresh.commit_transaction().unwrap();
    assert_eq!(
        shape(&cluster, "a", 0),
        ["zombie", "ABORT", "fresh", "COMMIT"]
    );
    zombie.close().unwrap();
    fresh.close().unwrap();
    cluster.close().unwrap();
}

#[test]
fn a_fenced_producer_cannot_commit_even_without_sending_again() {
    let setup = Setup::new();
    let cluster = setup.open();
    let zombie = txn_producer(&cluster, "tx");
    zombie.init_transactions().unwrap();
    zombie.begin_transaction().unwrap();
    zombie
        .send(record("b", 0, "zombie"))
        .unwrap()
        .wait()
        .unwrap();
    let fresh = txn_producer(&cluster, "tx");
    fresh.init_transactions().unwrap();
    assert!(is_fenced(zombie.commit_transaction()));
    assert!(is_fenced(zombie.send(record("b", 0, "x"))));
    assert_eq!(shape(&cluster, "b", 0), ["zombie", "ABORT"]);
    fresh.close().unwrap();
    cluster.close().unwrap();
}

#[test]
fn calls_out_of_order_are_refused_and_change_nothing() {
    let setup = Setup::new();
    let cluster = setup.open();

    // The config: a transactional id needs idempotence.
    for builder in [
        ProducerConfig::builder()
            .transactional_id("tx")
            .enable_idempotence(false),
        ProducerConfig::builder()
            .transactional_id("tx")
            .acks(Acks::Leader),
        ProducerConfig::builder().transactional_id("tx").retries(0),
        ProducerConfig::builder().transactional_id(""),
    ] {
        assert!(matches!(builder.build(), Err(Error::InvalidConfig(_))));
    }
    let by_name = ProducerConfig::builder()
        .set("transactional.id", "tx")
        .unwrap()
        .set("transaction.timeout.ms", "5000")
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(by_name.transactional_id(), Some("tx"));
    assert_eq!(by_name.transaction_timeout(), Duration::from_secs(5));
    assert_eq!(
        ProducerConfig::default().transaction_timeout(),
        Duration::from_secs(60)
    );

    // Without a transactional id, the transactional calls are refused.
    let plain = Producer::new(&cluster, ProducerConfig::default()).unwrap();
    assert!(is_illegal(plain.init_transactions()));
    assert!(is_illegal(plain.begin_transaction()));
    assert!(is_illegal(plain.commit_transaction()));
    plain.close().unwrap();

    let producer = txn_producer(&cluster, "tx");
    let offsets = BTreeMap::from([(TopicPartition::new("a", 0), OffsetAndMetadata::new(1))]);
    // Uninitialized.
    assert!(is_illegal(producer.begin_transaction()));
    assert!(is_illegal(producer.send(record("a", 0, "x"))));
    assert!(is_illegal(producer.commit_transaction()));
    assert!(is_illegal(producer.abort_transaction()));
    assert!(is_illegal(
        producer.send_offsets_to_transaction(&offsets, "g")
    ));
    producer.init_transactions().unwrap();
    // Ready.
    assert!(is_illegal(producer.init_transactions()));
    assert!(is_illegal(producer.send(record("a", 0, "x"))));
    assert!(is_illegal(producer.commit_transaction()));
    assert!(is_illegal(producer.abort_transaction()));
    assert!(is_illegal(
        producer.send_offsets_to_transaction(&offsets, "g")
    ));
    producer.begin_transaction().unwrap();
    // InTransaction.
    assert!(is_illegal(producer.begin_transaction()));
    assert!(is_illegal(producer.init_transactions()));
    put(&producer, record("a", 0, "x"));
    producer.commit_transaction().unwrap();
    // Ready again.
    assert!(is_illegal(producer.commit_transaction()));
    assert!(is_illegal(producer.send(record("a", 0, "y"))));
    assert_eq!(shape(&cluster, "a", 0), ["x", "COMMIT"]);
    assert!(cluster.list_group_offsets("g").unwrap().is_empty());
    producer.close().unwrap();
    cluster.close().unwrap();
}

#[test]
fn a_failed_send_makes_the_transaction_abortable_and_the_commit_fails() {
    let setup = Setup::new();
    let cluster = setup.open();
    let producer = Producer::new(
        &cluster,
        ProducerConfig::builder()
            .transactional_id("tx")
            .delivery_timeout(Duration::from_millis(40_000))
            .request_timeout(Duration::from_millis(30_000))
            .build()
            .unwrap(),
    )
    .unwrap();
    producer.init_transactions().unwrap();
    producer.begin_transaction().unwrap();
    producer.send(record("a", 0, "ok")).unwrap().wait().unwrap();
    // A record whose topic disappears before it is sent fails.
    let doomed = producer.send(record("b", 0, "doomed")).unwrap();
    cluster.delete_topic("b").unwrap();
    assert!(doomed.wait().is_err());
    let commit = producer.commit_transaction();
    assert!(commit.is_err(), "{commit:?}");
    assert!(!is_illegal(commit), "the failed record's error");
    // Still abortable, not committable.
    assert!(producer.commit_transaction().is_err());
    assert!(producer.send(record("a", 0, "more")).is_err());
    producer.abort_transaction().unwrap();
    assert_eq!(shape(&cluster, "a", 0), ["ok", "ABORT"]);

    // After the abort the producer has a new epoch and starts over.
    producer.begin_transaction().unwrap();
    put(&producer, record("a", 0, "again"));
    producer.commit_transaction().unwrap();
    assert_eq!(shape(&cluster, "a", 0), ["ok", "ABORT", "again", "COMMIT"]);
    let Entry::Data {
        epoch,
        base_sequence,
        ..
    } = &log(&cluster, "a", 0)[2]
    else {
        panic!("data expected");
    };
    assert_eq!((*epoch, *base_sequence), (1, 0));
    producer.close().unwrap();
    cluster.close().unwrap();
}

#[test]
fn a_transaction_left_open_past_its_timeout_is_aborted_and_its_producer_fenced() {
    let setup = Setup::new();
    let cluster = setup.open();
    let producer = Producer::new(
        &cluster,
        ProducerConfig::builder()
            .transactional_id("slow")
            .transaction_timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
    )
    .unwrap();
    producer.init_transactions().unwrap();
    producer.begin_transaction().unwrap();
    producer
        .send(record("a", 1, "slow"))
        .unwrap()
        .wait()
        .unwrap();
    setup.clock.advance_ms(6_000);
    // The coordinator's timer (every second of clock time) aborts it.
    assert!(cluster.wait_until(GUARD, |c| shape(c, "a", 1) == ["slow", "ABORT"]));
    assert!(is_fenced(producer.commit_transaction()));
    assert!(is_fenced(producer.begin_transaction()));
    assert!(is_fenced(producer.send(record("a", 1, "late"))));
    assert_eq!(shape(&cluster, "a", 1), ["slow", "ABORT"]);

    // A new instance works.
    let next = txn_producer(&cluster, "slow");
    next.init_transactions().unwrap();
    next.begin_transaction().unwrap();
    put(&next, record("a", 1, "next"));
    next.commit_transaction().unwrap();
    assert_eq!(shape(&cluster, "a", 1), ["slow", "ABORT", "next", "COMMIT"]);
    next.close().unwrap();
    cluster.close().unwrap();
}

#[test]
fn the_next_instance_aborts_what_a_crashed_one_left_open() {
    let setup = Setup::new();
    let cluster = setup.open();
    let crashed = txn_producer(&cluster, "tx");
    crashed.init_transactions().unwrap();
    crashed.begin_transaction().unwrap();
    put(&crashed, record("a", 0, "left"));
    put(&crashed, record("b", 0, "left"));
    // Dropped without close: the records are delivered, the transaction
    // stays open (no marker).
    drop(crashed);
    assert_eq!(shape(&cluster, "a", 0), ["left"]);
    assert_eq!(shape(&cluster, "b", 0), ["left"]);

    let next = txn_producer(&cluster, "tx");
    next.init_transactions().unwrap();
    assert_eq!(shape(&cluster, "a", 0), ["left", "ABORT"]);
    assert_eq!(shape(&cluster, "b", 0), ["left", "ABORT"]);
    next.begin_transaction().unwrap();
    put(&next, record("a", 0, "new"));
    next.commit_transaction().unwrap();
    assert_eq!(shape(&cluster, "a", 0), ["left", "ABORT", "new", "COMMIT"]);

    // Closing with a transaction open aborts it, as Kafka's close does.
    next.begin_transaction().unwrap();
    next.send(record("b", 0, "closing"))
        .unwrap()
        .wait()
        .unwrap();
    next.close().unwrap();
    assert_eq!(
        shape(&cluster, "b", 0),
        ["left", "ABORT", "closing", "ABORT"]
    );
    cluster.close().unwrap();
}

#[test]
fn a_transaction_commits_exactly_once_across_a_leader_failover() {
    let dir = tempfile::tempdir().unwrap();
    let config = ClusterConfig::builder()
        .brokers(2)
        .default_replication_factor(2)
        .broker_session_timeout(Duration::from_millis(500))
        .broker_heartbeat_interval(Duration::from_millis(100))
        .replica_lag_time_max(Duration::from_millis(500))
        .replica_fetch_wait_max(Duration::from_millis(100))
        .transaction_state_log_num_partitions(4)
        .transaction_state_log_min_isr(1)
        .build()
        .unwrap();
    let cluster = Cluster::open(dir.path(), config).unwrap();
    cluster
        .create_topic(
            NewTopic::new("t", 1)
                .replication_factor(2)
                .config(TopicConfig::new().min_insync_replicas(1).unwrap()),
        )
        .unwrap();
    let full = |c: &Cluster| {
        c.describe_topic("t").is_ok_and(|d| {
            d.partitions
                .iter()
                .all(|p| p.leader.is_some() && p.isr.len() == 2)
        })
    };
    assert!(cluster.wait_until(GUARD, full));
    let producer = txn_producer(&cluster, "tx");
    producer.init_transactions().unwrap();
    producer.begin_transaction().unwrap();
    let mut handles = Vec::new();
    for i in 0..10 {
        handles.push(producer.send(record("t", 0, &format!("v{i}"))).unwrap());
    }
    producer.flush().unwrap();
    let leader = cluster.describe_topic("t").unwrap().partitions[0]
        .leader
        .unwrap();
    cluster.stop_broker(leader).unwrap();
    for i in 10..20 {
        handles.push(producer.send(record("t", 0, &format!("v{i}"))).unwrap());
    }
    producer.commit_transaction().unwrap();
    for handle in handles {
        handle.wait().unwrap();
    }
    let values = shape(&cluster, "t", 0);
    let expected: Vec<String> = (0..20)
        .map(|i| format!("v{i}"))
        .chain(["COMMIT".to_string()])
        .collect();
    assert_eq!(values, expected, "every record once, then the marker");
    producer.close().unwrap();
    cluster.close().unwrap();
}

/// An operation of the model test.
#[derive(Debug, Clone)]
enum Op {
    Begin,
    /// A record to partition `0..3` of topic `a`/`b` (0, 1: `a`; 2: `b`).
    Send(u32),
    /// Flush: the records sent so far are written (inside the transaction).
    Flush,
    Commit,
    Abort,
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        2 => Just(Op::Begin),
        5 => (0u32..3).prop_map(Op::Send),
        2 => Just(Op::Flush),
        2 => Just(Op::Commit),
        2 => Just(Op::Abort),
    ]
}

fn target(p: u32) -> (&'static str, u32) {
    if p < 2 { ("a", p) } else { ("b", 0) }
}

/// Runs `ops` against a producer and a model of Kafka's rules: calls out
/// of order are refused; a commit writes every record of the
/// transaction and a COMMIT marker in each of its partitions; an abort
/// keeps what was written, marks it ABORT, and drops what was not sent.
/// A partition a transaction sent to but wrote nothing in may hold a bare
/// ABORT marker: the producer adds a partition to the transaction as its
/// first record meets it, from its sender thread, so whether the
/// coordinator knew of it when the abort came depends on timing (Kafka
/// writes a marker to every partition added to the transaction).
fn run_model(ops: &[Op]) {
    let setup = Setup::new();
    let cluster = setup.open();
    let producer = txn_producer(&cluster, "model");
    producer.init_transactions().unwrap();
    let mut in_txn = false;
    let mut expected: Vec<Vec<String>> = vec![Vec::new(); 3];
    // Per partition: records written in the open transaction, and sent
    // but not yet written.
    let mut written: Vec<Vec<String>> = vec![Vec::new(); 3];
    let mut unsent: Vec<Vec<String>> = vec![Vec::new(); 3];
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Begin => {
                let result = producer.begin_transaction();
                assert_eq!(result.is_ok(), !in_txn, "{op:?}: {result:?}");
                in_txn = true;
            }
            Op::Send(p) => {
                let (topic, partition) = target(*p);
                let value = format!("r{i}");
                let result = producer.send(record(topic, partition, &value));
                assert_eq!(result.is_ok(), in_txn, "{op:?}: {result:?}");
                if in_txn {
                    unsent[*p as usize].push(value);
                }
            }
            Op::Flush => {
                producer.flush().unwrap();
                for p in 0..3 {
                    let sent = std::mem::take(&mut unsent[p]);
                    written[p].extend(sent);
                }
            }
            Op::Commit | Op::Abort => {
                let commit = matches!(op, Op::Commit);
                let result = if commit {
                    producer.commit_transaction()
                } else {
                    producer.abort_transaction()
                };
                assert_eq!(result.is_ok(), in_txn, "{op:?}: {result:?}");
                if !in_txn {
                    continue;
                }
                in_txn = false;
                for p in 0..3 {
                    let mut records = std::mem::take(&mut written[p]);
                    let sent = std::mem::take(&mut unsent[p]);
                    let dropped = !commit && !sent.is_empty();
                    if commit {
                        records.extend(sent);
                    }
                    if !records.is_empty() {
                        expected[p].extend(records);
                        expected[p].push(if commit { "COMMIT" } else { "ABORT" }.to_string());
                    } else if dropped {
                        expected[p].push(MAYBE_ABORT.to_string());
                    }
                }
            }
        }
    }
    // A transaction left open shows its written records, undecided.
    for p in 0..3 {
        let (topic, partition) = target(p);
        let mut want = expected[p as usize].clone();
        want.extend(written[p as usize].iter().cloned());
        let got = shape(&cluster, topic, partition);
        assert!(
            matches_model(&got, &want),
            "partition {p}: {got:?} against {want:?}"
        );
    }
    producer.close().unwrap();
    cluster.close().unwrap();
}

/// In the model's expectation: an ABORT marker that may or may not be
/// there (see [`run_model`]).
const MAYBE_ABORT: &str = "ABORT?";

/// Whether `got` is `want`, each [`MAYBE_ABORT`] matching an ABORT marker
/// or nothing. Greedy: a certain ABORT always follows a record, so an
/// optional one never takes the marker a later entry needs.
fn matches_model(got: &[String], want: &[String]) -> bool {
    let mut got = got.iter().peekable();
    for w in want {
        if w == MAYBE_ABORT {
            if got.peek().is_some_and(|g| *g == "ABORT") {
                got.next();
            }
        } else if got.next() != Some(w) {
            return false;
        }
    }
    got.next().is_none()
}

#[test]
fn the_model_matches_an_optional_abort_marker_or_nothing() {
    let v = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let want = v(&["r1", "ABORT", MAYBE_ABORT, "r5", "COMMIT"]);
    assert!(matches_model(&v(&["r1", "ABORT", "r5", "COMMIT"]), &want));
    assert!(matches_model(
        &v(&["r1", "ABORT", "ABORT", "r5", "COMMIT"]),
        &want
    ));
    assert!(!matches_model(&v(&["r1", "r5", "COMMIT"]), &want));
    assert!(!matches_model(
        &v(&["r1", "ABORT", "COMMIT", "r5", "COMMIT"]),
        &want
    ));
    assert!(!matches_model(
        &v(&["r1", "ABORT", "r5", "COMMIT", "ABORT"]),
        &want
    ));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..Default::default() })]

    #[test]
    fn transactions_match_the_model(ops in proptest::collection::vec(op(), 1..30)) {
        run_model(&ops);
    }
}

#[test]
fn offsets_from_a_member_whose_generation_ended_are_refused() {
    let setup = Setup::new();
    let cluster = setup.open();
    let config = || {
        ConsumerConfig::builder()
            .group_id("g")
            .enable_auto_commit(false)
            .session_timeout(Duration::from_secs(10))
            .heartbeat_interval(Duration::from_secs(1))
            .build()
            .unwrap()
    };
    let a0 = TopicPartition::new("a", 0);
    let committed = |cluster: &Cluster| cluster.list_group_offsets("g").unwrap()[&a0].offset;
    let mut first = Consumer::new(&cluster, config()).unwrap();
    first.subscribe(["a"]).unwrap();
    first.poll(Duration::ZERO).unwrap();
    let old = first.group_metadata().unwrap();
    assert_eq!((old.group_id(), old.generation_id()), ("g", 1));
    assert_eq!(Some(old.member_id()), first.member_id());

    let producer = txn_producer(&cluster, "tx");
    producer.init_transactions().unwrap();
    producer.begin_transaction().unwrap();
    let offsets = BTreeMap::from([(a0.clone(), OffsetAndMetadata::new(5))]);
    producer
        .send_offsets_to_transaction(&offsets, &old)
        .unwrap();
    producer.commit_transaction().unwrap();
    assert_eq!(committed(&cluster), 5);

    // A second member joins: the group rebalances into generation 2.
    let mut second = Consumer::new(&cluster, config()).unwrap();
    second.subscribe(["a"]).unwrap();
    for _ in 0..20 {
        first.poll(Duration::ZERO).unwrap();
        second.poll(Duration::ZERO).unwrap();
        if first.generation() == Some(2) && second.generation() == Some(2) {
            break;
        }
    }
    assert_eq!(
        (first.generation(), second.generation()),
        (Some(2), Some(2))
    );

    // The metadata of generation 1 is refused (KIP-447): the transaction
    // must be aborted, and the group's offset does not move.
    producer.begin_transaction().unwrap();
    let later = BTreeMap::from([(a0.clone(), OffsetAndMetadata::new(9))]);
    let refused = producer.send_offsets_to_transaction(&later, &old);
    assert!(
        matches!(refused, Err(Error::CommitFailed { .. })),
        "{refused:?}"
    );
    assert!(producer.commit_transaction().is_err());
    producer.abort_transaction().unwrap();
    assert_eq!(committed(&cluster), 5);

    // The member's current metadata is accepted; a bare group id is never
    // checked.
    producer.begin_transaction().unwrap();
    producer
        .send_offsets_to_transaction(&later, first.group_metadata().unwrap())
        .unwrap();
    producer.commit_transaction().unwrap();
    assert_eq!(committed(&cluster), 9);
    producer.begin_transaction().unwrap();
    let bare = BTreeMap::from([(a0.clone(), OffsetAndMetadata::new(11))]);
    producer.send_offsets_to_transaction(&bare, "g").unwrap();
    producer.commit_transaction().unwrap();
    assert_eq!(committed(&cluster), 11);

    producer.close().unwrap();
    first.close().unwrap();
    second.close().unwrap();
    cluster.close().unwrap();
}
