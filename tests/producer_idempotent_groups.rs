//! An idempotent producer (Kafka's defaults: acks=all, idempotence on) on
//! one broker holds its sealed batches back per partition and hands them to
//! the sender thread a group at a time, as a producer without idempotence
//! does; the sender thread numbers them: every batch of a partition
//! carries the producer's one id, epoch 0 and the sequence after the batch
//! before it, whether it went over in a group, alone or because someone
//! waited for it.
//!
//! The partition's `.log` files run on a storage that notes which thread
//! wrote each time and how many pieces (batches) each write joined, so the
//! test sees that only the sender thread wrote and that it joined a
//! group's batches.

use std::path::Path;
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::Duration;

use logbus::{
    Cluster, ClusterConfig, NewTopic, Producer, ProducerConfig, ProducerRecord, Result, StdStorage,
};
use parking_lot::Mutex;

mod common;

use common::hooked::{FileHooks, HookedStorage};
use common::shm_tempdir as tempdir;

/// The threads that wrote to the `.log` files of partition 0 of `t`, and
/// the most pieces one write joined.
#[derive(Debug, Default)]
struct Writers(Mutex<(Vec<(ThreadId, String)>, usize)>);

impl Writers {
    fn note(&self, pieces: usize) {
        let me = std::thread::current();
        let mut seen = self.0.lock();
        if !seen.0.iter().any(|(id, _)| *id == me.id()) {
            seen.0.push((me.id(), me.name().unwrap_or("").to_string()));
        }
        seen.1 = seen.1.max(pieces);
    }

    fn wrote(&self, id: ThreadId) -> bool {
        self.0.lock().0.iter().any(|(t, _)| *t == id)
    }

    /// Whether every write came from the producer's sender thread.
    fn only_sender_wrote(&self) -> bool {
        self.0
            .lock()
            .0
            .iter()
            .all(|(_, name)| name == "logbus-producer")
    }

    fn most_pieces(&self) -> usize {
        self.0.lock().1
    }
}

impl FileHooks for Writers {
    fn wraps(&self, path: &Path) -> bool {
        let parent = path.parent().and_then(Path::file_name);
        path.extension().is_some_and(|e| e == "log") && parent.is_some_and(|p| p == "t-0")
    }

    fn before_write(&self, _path: &Path, bufs: &[&[u8]]) {
        self.note(bufs.len());
    }
}

/// A batch's producer id, epoch, base sequence and record count.
type Numbering = (i64, i16, i32, i32);

/// Every batch of partition 0 of `t` as its [`Numbering`], and its
/// values in order.
fn stored(cluster: &Cluster) -> Result<(Vec<Numbering>, Vec<String>)> {
    let partition = cluster.topic("t")?.partition(0)?;
    let read = partition.read(0, 1 << 30)?;
    let mut headers = Vec::new();
    let mut values = Vec::new();
    for batch in read.batches() {
        let batch = batch?;
        let h = *batch.header();
        headers.push((
            h.producer_id,
            h.producer_epoch,
            h.base_sequence,
            h.records_count,
        ));
        for record in batch.records()? {
            let value = record?.value().map(|v| v.to_vec()).unwrap_or_default();
            values.push(String::from_utf8(value).expect("utf-8"));
        }
    }
    Ok((headers, values))
}

#[test]
fn batches_handed_over_in_groups_alone_or_waited_for_share_one_numbering() -> Result<()> {
    let dir = tempdir();
    let writers = Arc::new(Writers::default());
    let storage = HookedStorage::new(Arc::new(StdStorage::new()), writers.clone());
    let cluster = Cluster::open(
        dir.path(),
        ClusterConfig::builder()
            .storage(Arc::new(storage))
            .build()?,
    )?;
    cluster.create_topic(NewTopic::new("t", 1))?;
    // Kafka's defaults but small batches and a linger that never passes
    // in the test: only seals, waits and callbacks move batches.
    let config = ProducerConfig::builder()
        .batch_size(1_024)
        .linger(Duration::from_secs(3600))
        .build()?;
    assert!(config.enable_idempotence());
    let producer = Producer::new(&cluster, config)?;
    let me = std::thread::current().id();
    let mut sent = Vec::new();
    let (called_tx, called) = crossbeam_channel::unbounded();
    // Rounds of streaming sends: the partition's sealed batches are held
    // and handed to the sender thread in groups; a wait hands the held
    // batches over at once, and callbacks run on the sender thread. How
    // many batches a group joins is a matter of timing: rounds go on until
    // a write joined several.
    for round in 0..200 {
        for i in 0..2_000 {
            let value = format!("{round:03}-{i:04}-{}", "x".repeat(40));
            let record = ProducerRecord::new("t", value.as_str()).with_partition(0);
            sent.push(value);
            if i % 500 == 250 {
                let called = called_tx.clone();
                producer.send_with_callback(record, move |r| {
                    called.send(r.map(|m| m.offset())).expect("test alive");
                })?;
            } else if i % 500 == 499 {
                producer.send(record)?.wait()?;
            } else {
                drop(producer.send(record)?);
            }
        }
        producer.flush()?;
        if round > 0 && writers.most_pieces() > 1 {
            break;
        }
    }
    assert!(!writers.wrote(me), "this thread appended: {writers:?}");
    assert!(writers.only_sender_wrote(), "{writers:?}");
    assert!(writers.most_pieces() > 1, "no group joined: {writers:?}");
    drop(called_tx);
    for result in called.iter() {
        assert!(result?.is_some(), "called back with an offset");
    }
    let (headers, values) = stored(&cluster)?;
    assert_eq!(values, sent, "every record once, in order");
    let id = headers[0].0;
    assert!(id >= 0, "{:?}", headers[0]);
    let mut next = 0;
    for (b, &(producer_id, epoch, sequence, count)) in headers.iter().enumerate() {
        assert_eq!((producer_id, epoch, sequence), (id, 0, next), "batch {b}");
        next += count;
    }
    producer.close()?;
    cluster.close()
}
