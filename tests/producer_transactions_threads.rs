//! Several threads send into one transaction of a shared transactional
//! producer while another thread commits or aborts it: nothing of the
//! transaction is appended after its marker, a committed transaction holds
//! exactly the records whose sends were accepted, and read_committed sees
//! exactly the committed ones. The partitions' `.log` files run on a
//! storage that notes, in order, what was written where, so the test also
//! sees that a partition is added to each transaction (its
//! `__transaction_state` record) before the transaction's first batch
//! lands there. The manual clock never moves: no `linger.ms` passes,
//! nothing times out. Waits are on channels (a guard, never a timing
//! assertion).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use logbus::{
    Cluster, ClusterConfig, Consumer, ConsumerConfig, IsolationLevel, ManualClock, NewTopic,
    Producer, ProducerConfig, ProducerRecord, Result, StdStorage, TopicPartition,
};
use parking_lot::Mutex;

mod common;

use common::hooked::{FileHooks, HookedStorage};
use common::shm_tempdir as tempdir;

/// The topic written to: its name is looked for in the coordinator's
/// records.
const TOPIC: &str = "orders";

/// A guard against a hang, never a timing assertion.
const GUARD: Duration = Duration::from_secs(60);

/// One write to a `.log` file.
#[derive(Debug, Clone)]
struct Write {
    /// The partition directory (`orders-0`, `__transaction_state-3`).
    dir: String,
    /// The first batch written is a control batch (a marker).
    control: bool,
    /// The bytes mention [`TOPIC`].
    mentions_topic: bool,
}

#[derive(Debug, Default)]
struct Writes(Mutex<Vec<Write>>);

impl Writes {
    fn note(&self, dir: &str, bufs: &[&[u8]]) {
        let bytes: Vec<u8> = bufs.concat();
        // A record batch's attributes follow its base offset, length,
        // leader epoch, magic and CRC; bit 5 marks a control batch.
        let control = bytes.len() > 22 && bytes[22] & 0x20 != 0;
        let mentions_topic = bytes.windows(TOPIC.len()).any(|w| w == TOPIC.as_bytes());
        self.0.lock().push(Write {
            dir: dir.to_string(),
            control,
            mentions_topic,
        });
    }

    fn all(&self) -> Vec<Write> {
        self.0.lock().clone()
    }
}

/// The partition directory's name of a file at `path`.
fn dir_of(path: &Path) -> &str {
    path.parent()
        .and_then(Path::file_name)
        .and_then(|d| d.to_str())
        .unwrap_or("")
}

impl FileHooks for Writes {
    fn wraps(&self, path: &Path) -> bool {
        let dir = dir_of(path);
        path.extension().is_some_and(|e| e == "log")
            && (dir.starts_with(TOPIC) || dir.starts_with("__transaction_state"))
    }

    fn before_write(&self, path: &Path, bufs: &[&[u8]]) {
        self.note(dir_of(path), bufs);
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    cluster: Cluster,
    writes: Arc<Writes>,
}

fn setup(partitions: u32) -> Result<Setup> {
    let dir = tempdir();
    let writes = Arc::new(Writes::default());
    let storage = HookedStorage::new(Arc::new(StdStorage::new()), writes.clone());
    let cluster = Cluster::open(
        dir.path(),
        ClusterConfig::builder()
            .storage(Arc::new(storage))
            .clock(Arc::new(ManualClock::new(1_000_000)))
            .transaction_state_log_num_partitions(4)
            .build()?,
    )?;
    cluster.create_topic(NewTopic::new(TOPIC, partitions))?;
    Ok(Setup {
        _dir: dir,
        cluster,
        writes,
    })
}

/// A transactional producer (Kafka's defaults: acks=all, idempotence)
/// whose batches never linger out on the manual clock.
fn txn_producer(cluster: &Cluster, batch_size: u64) -> Result<Producer> {
    Producer::new(
        cluster,
        ProducerConfig::builder()
            .transactional_id("tx")
            .batch_size(batch_size)
            .linger(Duration::from_secs(3600))
            .build()?,
    )
}

fn record(partition: u32, value: &str) -> ProducerRecord {
    ProducerRecord::new(TOPIC, value.to_string()).with_partition(partition)
}

/// One batch of a partition's log.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// Its values, and whether it is transactional.
    Data {
        values: Vec<String>,
        transactional: bool,
    },
    /// COMMIT (true) or ABORT (false).
    Marker(bool),
}

/// Every batch of partition `partition` below the high watermark.
fn log(cluster: &Cluster, partition: u32) -> Result<Vec<Entry>> {
    let partition = cluster.topic(TOPIC)?.partition(partition)?;
    let read = partition.read(0, 1 << 30)?;
    let mut out = Vec::new();
    for batch in read.batches() {
        let batch = batch?;
        let h = *batch.header();
        let records: Vec<_> = batch.records()?.collect::<std::result::Result<_, _>>()?;
        if h.is_control() {
            let key = records[0].key().expect("a marker has a key");
            out.push(Entry::Marker(i16::from_be_bytes([key[2], key[3]]) == 1));
        } else {
            out.push(Entry::Data {
                values: records
                    .iter()
                    .map(|r| String::from_utf8(r.value().expect("value").to_vec()).expect("utf-8"))
                    .collect(),
                transactional: h.is_transactional(),
            });
        }
    }
    Ok(out)
}

/// What a read_committed consumer reads of `partition` from the start.
fn committed(cluster: &Cluster, partition: u32) -> Result<Vec<String>> {
    let mut consumer = Consumer::new(
        cluster,
        ConsumerConfig::builder()
            .isolation_level(IsolationLevel::ReadCommitted)
            .build()?,
    )?;
    let tp = TopicPartition::new(TOPIC, partition);
    consumer.assign(std::slice::from_ref(&tp))?;
    consumer.seek_to_beginning(std::slice::from_ref(&tp))?;
    let mut values = Vec::new();
    loop {
        let records = consumer.poll(Duration::ZERO)?;
        if records.count() == 0 {
            return Ok(values);
        }
        for r in records.iter() {
            values.push(String::from_utf8(r.value().expect("value").to_vec()).expect("utf-8"));
        }
    }
}

/// Every data write to [`TOPIC`]'s partitions has a write to
/// `__transaction_state` mentioning the topic (the transaction's record
/// listing the partition) since the partition's marker before it: a
/// partition is added to each transaction before the transaction's first
/// batch is appended there.
fn check_added_before_appended(writes: &[Write]) {
    // Per partition directory: whether such a record was written since
    // its last marker (before its first marker: since the start).
    let mut added: std::collections::HashMap<String, bool> = Default::default();
    let mut mentioned = false;
    for w in writes {
        if w.dir.starts_with("__transaction_state") {
            if w.mentions_topic {
                mentioned = true;
                added.values_mut().for_each(|v| *v = true);
            }
            continue;
        }
        let seen = added.get(&w.dir).copied().unwrap_or(mentioned);
        if w.control {
            // The next transaction adds the partition again.
            added.insert(w.dir.clone(), false);
        } else {
            assert!(
                seen,
                "a batch appended to {} before its partition was added: {writes:?}",
                w.dir
            );
        }
    }
}

#[test]
fn threads_sending_into_one_transaction_while_another_ends_it_leave_nothing_after_its_marker()
-> Result<()> {
    let s = setup(2)?;
    // Small batches: many seals, from both sending threads, to both
    // partitions, while the transaction ends.
    let producer = txn_producer(&s.cluster, 512)?;
    producer.init_transactions()?;
    let rounds = 16;
    let mut committed_values: [Vec<String>; 2] = Default::default();
    for round in 0..rounds {
        let commit = round % 2 == 0;
        producer.begin_transaction()?;
        let (started_tx, started) = crossbeam_channel::unbounded();
        let senders: Vec<_> = (0..2)
            .map(|t| {
                let producer = producer.clone();
                let started = started_tx.clone();
                std::thread::spawn(move || {
                    let mut accepted: [Vec<String>; 2] = Default::default();
                    for i in 0.. {
                        let p = (i % 2) as u32;
                        let value = format!("r{round:02}-t{t}-{i:06}-{}", "y".repeat(40));
                        match producer.send(record(p, &value)) {
                            Ok(_) => accepted[p as usize].push(value),
                            // The transaction is ending: no more sends.
                            Err(_) => break,
                        }
                        if i == 200 {
                            started.send(()).expect("test alive");
                        }
                    }
                    accepted
                })
            })
            .collect();
        // Both threads are sending: end the transaction meanwhile.
        for _ in 0..2 {
            started.recv_timeout(GUARD).expect("a sender started");
        }
        if commit {
            producer.commit_transaction()?;
        } else {
            producer.abort_transaction()?;
        }
        let mut accepted: [Vec<String>; 2] = Default::default();
        for sender in senders {
            let got = sender.join().expect("sender");
            for p in 0..2 {
                accepted[p].extend(got[p].iter().cloned());
            }
        }
        if commit {
            for p in 0..2 {
                committed_values[p].extend(accepted[p].iter().cloned());
            }
        }
        // In every partition, the round's data is one run of batches
        // before the round's marker: nothing of it after.
        for p in 0..2u32 {
            let mut round_data = Vec::new();
            let mut after_marker = false;
            for entry in log(&s.cluster, p)? {
                match entry {
                    Entry::Data {
                        values,
                        transactional,
                    } => {
                        assert!(transactional);
                        let mine = values[0].starts_with(&format!("r{round:02}-"));
                        if mine {
                            assert!(!after_marker, "round {round}: data after its marker");
                            round_data.extend(values);
                        } else {
                            assert!(round_data.is_empty(), "round {round}: mixed with another");
                        }
                    }
                    Entry::Marker(kind) => {
                        if !round_data.is_empty() {
                            assert_eq!(kind, commit, "round {round}");
                            after_marker = true;
                        }
                    }
                }
            }
            if !round_data.is_empty() {
                assert!(after_marker, "round {round}: a marker after its data");
            }
            if commit {
                // Exactly the accepted records, each thread's in the order
                // it sent them.
                let mut got = round_data.clone();
                got.sort();
                let mut want = accepted[p as usize].clone();
                want.sort();
                assert_eq!(got, want, "round {round} partition {p}");
                for t in 0..2 {
                    let mine = format!("r{round:02}-t{t}-");
                    let of_thread = |values: &[String]| -> Vec<String> {
                        values
                            .iter()
                            .filter(|v| v.starts_with(&mine))
                            .cloned()
                            .collect()
                    };
                    assert_eq!(
                        of_thread(&round_data),
                        of_thread(&accepted[p as usize]),
                        "round {round} partition {p}: thread {t}'s order"
                    );
                }
            }
        }
    }
    for p in 0..2u32 {
        let mut got = committed(&s.cluster, p)?;
        let mut want = committed_values[p as usize].clone();
        got.sort();
        want.sort();
        assert_eq!(got, want, "read_committed of partition {p}");
    }
    check_added_before_appended(&s.writes.all());
    producer.close()?;
    s.cluster.close()
}
