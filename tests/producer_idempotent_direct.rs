//! An idempotent producer (Kafka's defaults: acks=all, idempotence on) on
//! one broker holds its sealed batches back per partition and hands each
//! due group to the sender thread, or, while the sender thread is behind
//! the partition, appends the groups on the sending thread, as a producer
//! without idempotence does, and numbers them there: the sending threads
//! and the sender thread share each partition's sequences, so every batch
//! of a partition carries the producer's one id, epoch 0 and the sequence
//! after the batch before it, whichever thread appended it.
//!
//! The partition's `.log` files run on a storage that notes which thread
//! wrote each time, so the test sees that both did. A flush, and a
//! transactional producer's commit, append what is held on the calling
//! thread (the commit its markers too); the callbacks still run on the
//! sender thread, before the call returns.

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

/// The threads that wrote to the `.log` files of partition 0 of `t`.
#[derive(Debug, Default)]
struct Writers(Mutex<Vec<(ThreadId, String)>>);

impl Writers {
    fn note(&self) {
        let me = std::thread::current();
        let mut seen = self.0.lock();
        if !seen.iter().any(|(id, _)| *id == me.id()) {
            seen.push((me.id(), me.name().unwrap_or("").to_string()));
        }
    }

    fn wrote(&self, id: ThreadId) -> bool {
        self.0.lock().iter().any(|(t, _)| *t == id)
    }

    fn sender_wrote(&self) -> bool {
        self.0
            .lock()
            .iter()
            .any(|(_, name)| name == "logbus-producer")
    }
}

impl FileHooks for Writers {
    fn wraps(&self, path: &Path) -> bool {
        let parent = path.parent().and_then(Path::file_name);
        path.extension().is_some_and(|e| e == "log") && parent.is_some_and(|p| p == "t-0")
    }

    fn before_write(&self, _path: &Path, _bufs: &[&[u8]]) {
        self.note();
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

/// A one-partition topic `t` on a cluster whose partition's `.log` files
/// note their writers, and an idempotent producer with Kafka's defaults
/// but small batches and a linger that never passes in the test: only
/// seals, waits and callbacks move batches.
fn setup() -> Result<(tempfile::TempDir, Arc<Writers>, Cluster, Producer)> {
    setup_with(1_024)
}

/// [`setup`] with batches of `batch_size` bytes.
fn setup_with(batch_size: u64) -> Result<(tempfile::TempDir, Arc<Writers>, Cluster, Producer)> {
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
    let config = ProducerConfig::builder()
        .batch_size(batch_size)
        .linger(Duration::from_secs(3600))
        .build()?;
    assert!(config.enable_idempotence());
    let producer = Producer::new(&cluster, config)?;
    Ok((dir, writers, cluster, producer))
}

/// Checks that partition 0 of `t` holds `sent`, in order, in batches of
/// one producer id, epoch 0 and consecutive sequences.
fn check_stored(cluster: &Cluster, sent: &[String]) -> Result<()> {
    let (headers, values) = stored(cluster)?;
    assert_eq!(values, sent, "every record once, in order");
    let id = headers[0].0;
    assert!(id >= 0, "{:?}", headers[0]);
    let mut next = 0;
    for (b, &(producer_id, epoch, sequence, count)) in headers.iter().enumerate() {
        assert_eq!((producer_id, epoch, sequence), (id, 0, next), "batch {b}");
        next += count;
    }
    Ok(())
}

#[test]
fn batches_appended_by_the_sending_thread_and_the_sender_share_one_numbering() -> Result<()> {
    let (_dir, writers, cluster, producer) = setup()?;
    let me = std::thread::current().id();
    let mut sent = Vec::new();
    // First the sender thread falls behind: a callback holds it while this
    // thread seals more than a whole group (1 MiB) behind that batch, so
    // the next groups are this thread's to append.
    let (entered_tx, entered) = crossbeam_channel::bounded::<()>(1);
    let (gate_tx, gate) = crossbeam_channel::bounded::<()>(0);
    let record = |value: &str| ProducerRecord::new("t", value).with_partition(0);
    let first = format!("gate-{}", "x".repeat(40));
    producer.send_with_callback(record(&first), move |_| {
        entered_tx.send(()).expect("test alive");
        let _ = gate.recv();
    })?;
    sent.push(first);
    let mut i = 0;
    let mut held_back = 0;
    while held_back < 3 << 19 {
        let value = format!("behind-{i:06}-{}", "x".repeat(40));
        drop(producer.send(record(&value))?);
        i += 1;
        if held_back > 0 || entered.try_recv().is_ok() {
            held_back += value.len();
        }
        sent.push(value);
    }
    drop(gate_tx);
    let (called_tx, called) = crossbeam_channel::unbounded();
    // Rounds of streaming sends: this thread appends the partition's due
    // groups while it has own groups left, then hands them to the sender
    // again; a callback now and then makes it hand an appended group to
    // the sender to complete, and a wait hands the held batches to the
    // sender, which numbers and appends them itself. Which thread gets to
    // append what is a matter of timing: rounds go on until each of the
    // two appended some.
    // (Each round ends waiting on its last handle, not with a flush,
    // which would append what is held on this thread.)
    for round in 0..200 {
        for i in 0..2_000 {
            let value = format!("{round:03}-{i:04}-{}", "x".repeat(40));
            sent.push(value.clone());
            if i % 500 == 250 {
                let called = called_tx.clone();
                producer.send_with_callback(record(&value), move |r| {
                    called.send(r.map(|m| m.offset())).expect("test alive");
                })?;
            } else if i % 500 == 499 {
                producer.send(record(&value))?.wait()?;
            } else {
                drop(producer.send(record(&value))?);
            }
        }
        if round > 0 && writers.wrote(me) && writers.sender_wrote() {
            break;
        }
    }
    assert!(writers.wrote(me), "this thread appended: {writers:?}");
    assert!(writers.sender_wrote(), "the sender appended: {writers:?}");
    drop(called_tx);
    for result in called.iter() {
        assert!(result?.is_some(), "called back with an offset");
    }
    check_stored(&cluster, &sent)?;
    producer.close()?;
    cluster.close()
}

#[test]
fn a_sender_that_keeps_up_is_handed_every_group() -> Result<()> {
    let (_dir, writers, cluster, producer) = setup()?;
    let me = std::thread::current().id();
    let mut sent = Vec::new();
    // Rounds of streaming sends, each under a group's worth (1 MiB) and
    // waited for (its last handle; a flush would append what is held on
    // this thread): the sender thread can never fall a whole group
    // behind, so every due group goes to it and this thread never writes.
    for round in 0..20 {
        for i in 0..5_000 {
            let value = format!("{round:03}-{i:04}-{}", "x".repeat(40));
            let sending =
                producer.send(ProducerRecord::new("t", value.as_str()).with_partition(0))?;
            sent.push(value);
            if i == 4_999 {
                sending.wait()?;
            }
        }
    }
    assert!(!writers.wrote(me), "this thread appended: {writers:?}");
    assert!(writers.sender_wrote(), "the sender appended: {writers:?}");
    check_stored(&cluster, &sent)?;
    producer.close()?;
    cluster.close()
}

/// What [`report_thread`] sends: whether the record was sent, and the
/// name of the thread its callback ran on.
type Report = (bool, Option<String>);

/// A callback that reports to `to` whether its record was sent and which
/// thread it ran on.
fn report_thread(
    to: &crossbeam_channel::Sender<Report>,
) -> impl FnOnce(Result<logbus::RecordMetadata>) + Send + 'static {
    let to = to.clone();
    move |result| {
        let on = std::thread::current().name().map(str::to_string);
        to.send((result.is_ok(), on)).expect("test alive");
    }
}

/// A record sent and called back on the sender thread.
fn on_the_sender() -> Option<Report> {
    Some((true, Some("logbus-producer".to_string())))
}

#[test]
fn a_flush_appends_what_is_held_on_the_calling_thread() -> Result<()> {
    // One batch, which never fills and whose linger never passes: it
    // stays open until the flush, which appends it here; a callback
    // still runs on the sender thread, before the flush returns.
    let (_dir, writers, cluster, producer) = setup_with(64 << 10)?;
    let me = std::thread::current().id();
    let mut sent = Vec::new();
    let (called_tx, called) = crossbeam_channel::unbounded();
    for i in 0..200 {
        let value = format!("{i:04}-{}", "x".repeat(40));
        let record = ProducerRecord::new("t", value.as_str()).with_partition(0);
        if i == 100 {
            producer.send_with_callback(record, report_thread(&called_tx))?;
        } else {
            drop(producer.send(record)?);
        }
        sent.push(value);
    }
    producer.flush()?;
    assert_eq!(called.try_recv().ok(), on_the_sender());
    assert!(writers.wrote(me), "this thread appended: {writers:?}");
    assert!(!writers.sender_wrote(), "the sender appended: {writers:?}");
    check_stored(&cluster, &sent)?;
    producer.close()?;
    cluster.close()
}

#[test]
fn a_commit_appends_its_transaction_and_the_marker_on_the_calling_thread() -> Result<()> {
    // Each transaction fits one batch whose linger never passes: only the
    // commit seals it, and appends it here, then its marker.
    let (_dir, writers, cluster, idempotent) = setup()?;
    idempotent.close()?;
    let me = std::thread::current().id();
    let producer = Producer::new(
        &cluster,
        ProducerConfig::builder()
            .transactional_id("direct")
            .batch_size(64 << 10)
            .linger(Duration::from_secs(3600))
            .build()?,
    )?;
    producer.init_transactions()?;
    let (called_tx, called) = crossbeam_channel::unbounded();
    let mut sent = Vec::new();
    for round in 0..3 {
        producer.begin_transaction()?;
        for i in 0..50 {
            let value = format!("{round}-{i:02}-{}", "x".repeat(40));
            let record = ProducerRecord::new("t", value.as_str()).with_partition(0);
            producer.send_with_callback(record, report_thread(&called_tx))?;
            sent.push(value);
        }
        producer.commit_transaction()?;
        // Every callback ran on the sender thread before the commit
        // returned.
        for _ in 0..50 {
            assert_eq!(called.try_recv().ok(), on_the_sender());
        }
        assert!(called.try_recv().is_err());
    }
    assert!(writers.wrote(me), "this thread appended: {writers:?}");
    assert!(!writers.sender_wrote(), "the sender appended: {writers:?}");
    // Three transactions of data, each followed by its COMMIT marker
    // (written by this thread too: nothing else wrote to the log).
    let partition = cluster.topic("t")?.partition(0)?;
    let read = partition.read(0, 1 << 30)?;
    let mut values = Vec::new();
    let mut markers = 0;
    for batch in read.batches() {
        let batch = batch?;
        if batch.header().is_control() {
            markers += 1;
            continue;
        }
        assert!(batch.header().is_transactional());
        for record in batch.records()? {
            let value = record?.value().map(|v| v.to_vec()).unwrap_or_default();
            values.push(String::from_utf8(value).expect("utf-8"));
        }
    }
    assert_eq!(markers, 3);
    assert_eq!(values, sent);
    producer.close()?;
    cluster.close()
}
