//! Batching, linger, sticky partitions, flush, close and callbacks, driven
//! by a manual clock: nothing here sleeps or depends on timing.

mod producer_util;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use logbus::{
    Acks, Clock, Error, NewTopic, Producer, ProducerConfig, ProducerRecord, RecordMetadata, Result,
};
use parking_lot::Mutex;
use producer_util::{T0, batches, manual_topic as setup, records};

const LINGER: u64 = 100;

fn config(batch_size: u64) -> ProducerConfig {
    ProducerConfig::builder()
        .acks(Acks::Leader)
        .linger(Duration::from_millis(LINGER))
        .batch_size(batch_size)
        .build()
        .expect("config")
}

/// Sends `record` with a callback and returns where its outcome arrives:
/// receiving from it blocks without sending the batch early, as waiting on
/// a handle would.
fn send_observed(
    producer: &Producer,
    record: ProducerRecord,
) -> Result<crossbeam_channel::Receiver<Result<RecordMetadata>>> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    producer.send_with_callback(record, move |r| {
        tx.send(r).expect("test alive");
    })?;
    Ok(rx)
}

#[test]
fn a_lone_record_is_appended_only_once_linger_has_passed() -> Result<()> {
    let (_dir, clock, cluster) = setup(1)?;
    let producer = Producer::new(&cluster, config(16_384))?;
    let sent = send_observed(&producer, ProducerRecord::new("t", "alone"))?;
    // The clock has not moved: the batch cannot have been sealed.
    clock.advance_ms(LINGER as i64 - 1);
    assert!(sent.try_recv().is_err());
    assert_eq!(cluster.topic("t")?.partition(0)?.high_watermark()?, 0);
    clock.advance_ms(1);
    let m = sent.recv().expect("called back")?;
    assert_eq!((m.offset(), m.timestamp()), (Some(0), T0));
    producer.close()?;
    cluster.close()
}

#[test]
fn waiting_on_a_lingering_record_sends_its_batch_at_once() -> Result<()> {
    let (_dir, clock, cluster) = setup(1)?;
    // An hour of linger on a clock that never moves in this test.
    let producer = Producer::new(
        &cluster,
        ProducerConfig::builder()
            .acks(Acks::Leader)
            .linger(Duration::from_secs(3_600))
            .build()?,
    )?;
    let sent: Vec<_> = (0..3)
        .map(|i| producer.send(ProducerRecord::new("t", format!("r{i}"))))
        .collect::<Result<_>>()?;
    assert!(sent.iter().all(|h| !h.is_done()), "lingering");
    // Waiting on the middle record sends the whole batch now.
    let mut sent = sent.into_iter();
    let (first, middle, last) = (sent.next(), sent.next(), sent.next());
    assert_eq!(middle.expect("sent").wait()?.offset(), Some(1));
    assert!(first.as_ref().is_some_and(logbus::SendFuture::is_done));
    assert_eq!(last.expect("sent").wait()?.offset(), Some(2));
    let stored = batches(&cluster, "t", 0)?;
    assert_eq!(stored.len(), 1, "one batch, sent as it was");
    assert_eq!(stored[0].header().records_count, 3);
    // Records sent afterwards start a new batch, which lingers again.
    let later = send_observed(&producer, ProducerRecord::new("t", "later"))?;
    assert!(later.try_recv().is_err());
    assert_eq!(clock.now_ms(), T0, "the clock never moved");
    producer.flush()?;
    assert_eq!(later.recv().expect("called back")?.offset(), Some(3));
    producer.close()?;
    cluster.close()
}

#[test]
fn a_send_then_wait_loop_does_not_wait_out_linger() -> Result<()> {
    let (_dir, clock, cluster) = setup(2)?;
    let producer = Producer::new(
        &cluster,
        ProducerConfig::builder()
            .acks(Acks::Leader)
            .linger(Duration::MAX)
            .build()?,
    )?;
    for i in 0..10_u64 {
        let record = ProducerRecord::new("t", format!("v{i}")).with_key(format!("k{i}"));
        let m = producer.send(record)?.wait()?;
        assert_eq!(m.timestamp(), T0);
    }
    // Each wait sent a batch of one record.
    let stored = batches(&cluster, "t", 0)?.len() + batches(&cluster, "t", 1)?.len();
    assert_eq!(stored, 10);
    assert_eq!(clock.now_ms(), T0);
    producer.close()?;
    cluster.close()
}

#[test]
fn wait_timeout_sends_at_once_but_a_zero_timeout_only_looks() -> Result<()> {
    let (_dir, clock, cluster) = setup(1)?;
    let producer = Producer::new(&cluster, config(16_384))?;
    let sent = producer.send(ProducerRecord::new("t", "v"))?;
    // A look: the batch keeps lingering (the manual clock never moves).
    assert!(sent.wait_timeout(Duration::ZERO).is_none());
    assert!(sent.wait_timeout(Duration::ZERO).is_none());
    assert!(!sent.is_done());
    assert_eq!(cluster.topic("t")?.partition(0)?.high_watermark()?, 0);
    // A wait with a timeout sends the batch and gets its outcome in time,
    // though the clock does not move towards either deadline.
    let m = sent
        .wait_timeout(Duration::from_secs(1))
        .expect("sent at once")?;
    assert_eq!(m.offset(), Some(0));
    assert_eq!(clock.now_ms(), T0);
    producer.close()?;
    cluster.close()
}

#[test]
fn records_sent_within_linger_land_in_one_batch() -> Result<()> {
    let (_dir, clock, cluster) = setup(1)?;
    let producer = Producer::new(&cluster, config(16_384))?;
    let sent: Vec<_> = (0..50)
        .map(|i| producer.send(ProducerRecord::new("t", format!("r{i}"))))
        .collect::<Result<_>>()?;
    clock.advance_ms(LINGER as i64);
    for (i, handle) in (0_u64..).zip(sent) {
        assert_eq!(handle.wait()?.offset(), Some(i));
    }
    let stored = batches(&cluster, "t", 0)?;
    assert_eq!(stored.len(), 1, "one batch");
    assert_eq!(stored[0].header().records_count, 50);
    producer.close()?;
    cluster.close()
}

#[test]
fn a_full_batch_goes_without_waiting_for_linger() -> Result<()> {
    let (_dir, _clock, cluster) = setup(1)?;
    // Linger never passes: the clock is never moved in this test.
    let producer = Producer::new(&cluster, config(1_000))?;
    let value = vec![b'x'; 100];
    // The first record's outcome is watched through a callback: waiting on
    // its handle would send its batch whether full or not.
    let first = send_observed(&producer, ProducerRecord::new("t", value.clone()))?;
    let sent: Vec<_> = (0..29)
        .map(|_| producer.send(ProducerRecord::new("t", value.clone())))
        .collect::<Result<_>>()?;
    // The first records filled a batch; it is appended with no clock move.
    assert_eq!(first.recv().expect("called back")?.offset(), Some(0));
    assert!(
        !sent.last().expect("sent").is_done(),
        "the last batch lingers"
    );
    drop(sent);
    producer.flush()?;
    for batch in batches(&cluster, "t", 0)? {
        assert!(
            batch.size() <= 1_000,
            "batch.size respected: {}",
            batch.size()
        );
        assert!(batch.header().records_count > 1, "records were batched");
    }
    producer.close()?;
    cluster.close()
}

#[test]
fn a_record_larger_than_batch_size_goes_alone_at_once() -> Result<()> {
    let (_dir, _clock, cluster) = setup(1)?;
    let producer = Producer::new(&cluster, config(100))?;
    let m = producer
        .send(ProducerRecord::new("t", vec![7_u8; 500]))?
        .wait()?;
    assert_eq!(m.offset(), Some(0));
    let stored = batches(&cluster, "t", 0)?;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].header().records_count, 1);
    producer.close()?;
    cluster.close()
}

/// More partitions than `buffer.memory` holds full batches for (40 of 16
/// KiB in 320 KiB): batches opened past half of it start smaller and grow,
/// so every partition's batch still takes all its records. (Were each
/// batch opened at full size, the 20th would find `buffer.memory` taken,
/// and a send would have to wait for room, sending every open batch as it
/// is; here, with `max.block.ms` 0, it would fail.)
#[test]
fn more_partitions_than_full_batches_in_buffer_memory_still_batch_their_records() -> Result<()> {
    const PARTITIONS: u32 = 40;
    const RECORDS: i32 = 30;
    let (_dir, _clock, cluster) = setup(PARTITIONS)?;
    let producer = Producer::new(
        &cluster,
        ProducerConfig::builder()
            .acks(Acks::Leader)
            .linger(Duration::from_millis(LINGER))
            .batch_size(16_384)
            .buffer_memory(320 * 1024)
            .max_block(Duration::ZERO)
            .build()?,
    )?;
    // Round robin over the partitions, as keyed records spread.
    for _ in 0..RECORDS {
        for p in 0..PARTITIONS {
            drop(producer.send(ProducerRecord::new("t", vec![b'v'; 100]).with_partition(p))?);
        }
    }
    // The clock never moves: only the flush seals the batches.
    producer.flush()?;
    for p in 0..PARTITIONS {
        let stored = batches(&cluster, "t", p)?;
        assert_eq!(stored.len(), 1, "partition {p}: one batch");
        assert_eq!(stored[0].header().records_count, RECORDS, "partition {p}");
    }
    producer.close()?;
    cluster.close()
}

#[test]
fn keyless_records_stick_to_one_partition_until_its_batch_is_sealed() -> Result<()> {
    let (_dir, _clock, cluster) = setup(4)?;
    let producer = Producer::new(&cluster, config(1_000))?;
    let value = vec![b'v'; 90];
    let mut partitions = Vec::new();
    let mut handles = Vec::new();
    for _ in 0..40 {
        let h = producer.send(ProducerRecord::new("t", value.clone()))?;
        partitions.push(h.partition());
        handles.push(h);
    }
    // Runs of one partition, each run one full batch, each switch to another.
    let mut runs: Vec<(u32, usize)> = Vec::new();
    for p in &partitions {
        match runs.last_mut() {
            Some((last, n)) if last == p => *n += 1,
            _ => runs.push((*p, 1)),
        }
    }
    assert!(runs.len() >= 3, "{runs:?}");
    for pair in runs.windows(2) {
        assert_ne!(pair[0].0, pair[1].0, "a switch picks another partition");
    }
    // Every completed run is exactly one stored batch.
    let first_run = runs[0];
    for h in handles.into_iter().take(first_run.1) {
        h.wait()?;
    }
    let stored = batches(&cluster, "t", first_run.0)?;
    assert_eq!(stored[0].header().records_count as usize, first_run.1);
    producer.close()?;
    cluster.close()
}

#[test]
fn flush_delivers_pending_records_without_waiting_for_linger() -> Result<()> {
    let (_dir, _clock, cluster) = setup(3)?;
    let producer = Producer::new(&cluster, config(16_384))?;
    let called = Arc::new(AtomicUsize::new(0));
    let sent: Vec<_> = (0..30_u32)
        .map(|i| producer.send(ProducerRecord::new("t", format!("{i}")).with_partition(i % 3)))
        .collect::<Result<_>>()?;
    for i in 0..30_u32 {
        let called = called.clone();
        producer.send_with_callback(
            ProducerRecord::new("t", format!("cb{i}")).with_partition(i % 3),
            move |r| {
                assert!(r.is_ok());
                called.fetch_add(1, Ordering::SeqCst);
            },
        )?;
    }
    assert!(sent.iter().all(|h| !h.is_done()), "linger never passes");
    producer.flush()?;
    assert!(sent.iter().all(|h| h.is_done()));
    assert_eq!(
        called.load(Ordering::SeqCst),
        30,
        "callbacks ran before flush returned"
    );
    for p in 0..3 {
        assert_eq!(records(&cluster, "t", p)?.len(), 20);
    }
    // A flush with nothing pending returns at once.
    producer.flush()?;
    producer.close()?;
    cluster.close()
}

#[test]
fn close_delivers_everything_and_later_sends_fail() -> Result<()> {
    let (_dir, _clock, cluster) = setup(2)?;
    let producer = Producer::new(&cluster, config(16_384))?;
    let clone = producer.clone();
    let sent: Vec<_> = (0..100)
        .map(|i| producer.send(ProducerRecord::new("t", format!("{i}")).with_key(format!("{i}"))))
        .collect::<Result<_>>()?;
    let called = Arc::new(AtomicUsize::new(0));
    let c = called.clone();
    producer.send_with_callback(ProducerRecord::new("t", "last"), move |r| {
        assert!(r.is_ok());
        c.fetch_add(1, Ordering::SeqCst);
    })?;
    producer.close()?;
    assert_eq!(called.load(Ordering::SeqCst), 1);
    for h in sent {
        assert!(h.is_done());
        assert!(h.wait()?.offset().is_some());
    }
    let total: usize = (0..2)
        .map(|p| records(&cluster, "t", p).map(|r| r.len()))
        .sum::<Result<usize>>()?;
    assert_eq!(total, 101);
    for p in [&producer, &clone] {
        assert!(matches!(
            p.send(ProducerRecord::new("t", "late")),
            Err(Error::Closed("producer"))
        ));
        assert!(matches!(
            p.send_with_callback(ProducerRecord::new("t", "late"), |_| {
                panic!("never called")
            }),
            Err(Error::Closed("producer"))
        ));
    }
    clone.close()?; // a second close is a no-op
    producer.flush()?; // nothing pending
    cluster.close()
}

#[test]
fn dropping_the_last_clone_delivers_everything() -> Result<()> {
    let (_dir, _clock, cluster) = setup(1)?;
    let producer = Producer::new(&cluster, config(16_384))?;
    let sent = producer.send(ProducerRecord::new("t", "pending"))?;
    let clone = producer.clone();
    drop(producer);
    assert!(!sent.is_done(), "a clone is still alive");
    drop(clone);
    assert_eq!(sent.wait()?.offset(), Some(0));
    cluster.close()
}

#[test]
fn callbacks_run_once_per_record_in_order_with_their_metadata() -> Result<()> {
    let (_dir, clock, cluster) = setup(2)?;
    let producer = Producer::new(&cluster, config(16_384))?;
    let seen: Arc<Mutex<Vec<(u32, RecordMetadata)>>> = Arc::default();
    for i in 0..200_u32 {
        let seen = seen.clone();
        producer.send_with_callback(
            ProducerRecord::new("t", format!("{i}"))
                .with_partition(i % 2)
                .with_timestamp(T0 + i64::from(i)),
            move |r| seen.lock().push((i, r.expect("appended"))),
        )?;
    }
    clock.advance_ms(LINGER as i64);
    producer.flush()?;
    let seen = seen.lock();
    assert_eq!(seen.len(), 200);
    let mut next = [0_u64; 2];
    let mut ids: Vec<u32> = seen.iter().map(|(i, _)| *i).collect();
    for (i, m) in seen.iter() {
        let p = i % 2;
        assert_eq!(m.partition(), p);
        assert_eq!(m.topic(), "t");
        assert_eq!(m.timestamp(), T0 + i64::from(*i));
        assert_eq!(
            m.offset(),
            Some(next[p as usize]),
            "in send order per partition"
        );
        next[p as usize] += 1;
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 200, "each callback exactly once");
    drop(seen);
    producer.close()?;
    cluster.close()
}

#[test]
fn a_panicking_callback_does_not_stop_the_producer() -> Result<()> {
    let (_dir, _clock, cluster) = setup(1)?;
    let producer = Producer::new(&cluster, config(0))?;
    producer.send_with_callback(ProducerRecord::new("t", "boom"), |_| {
        panic!("user callback panics");
    })?;
    producer.flush()?;
    let m = producer.send(ProducerRecord::new("t", "after"))?.wait()?;
    assert_eq!(m.offset(), Some(1));
    producer.close()?;
    cluster.close()
}

#[test]
fn a_callback_may_send_but_not_flush_or_wait() -> Result<()> {
    let (_dir, _clock, cluster) = setup(1)?;
    let producer = Producer::new(&cluster, config(0))?;
    let inner = producer.clone();
    let (tx, rx) = crossbeam_channel::bounded(1);
    producer.send_with_callback(ProducerRecord::new("t", "first"), move |r| {
        assert!(r.is_ok());
        let flushed = inner.flush();
        let chained = inner.send(ProducerRecord::new("t", "chained"));
        let waited = match chained {
            Ok(handle) => handle.wait().map(|_| ()),
            Err(e) => Err(e),
        };
        tx.send((flushed, waited)).expect("test alive");
    })?;
    let (flushed, waited) = rx.recv().expect("callback ran");
    assert!(
        matches!(flushed, Err(Error::IllegalState(_))),
        "{flushed:?}"
    );
    assert!(matches!(waited, Err(Error::IllegalState(_))), "{waited:?}");
    producer.flush()?;
    let values: Vec<_> = records(&cluster, "t", 0)?
        .into_iter()
        .map(|r| r.value.expect("value"))
        .collect();
    assert_eq!(values, vec![b"first".to_vec(), b"chained".to_vec()]);
    producer.close()?;
    cluster.close()
}

#[test]
fn close_inside_a_callback_does_not_deadlock() -> Result<()> {
    let (_dir, _clock, cluster) = setup(1)?;
    let producer = Producer::new(&cluster, config(0))?;
    let inner = producer.clone();
    let (tx, rx) = crossbeam_channel::bounded(1);
    producer.send_with_callback(ProducerRecord::new("t", "x"), move |_| {
        tx.send(inner.close()).expect("test alive");
        // `inner` drops here too, on the sender thread.
    })?;
    assert!(rx.recv().expect("callback ran").is_ok());
    assert!(matches!(
        producer.send(ProducerRecord::new("t", "late")),
        Err(Error::Closed("producer"))
    ));
    producer.close()?; // joins the sender thread
    assert_eq!(records(&cluster, "t", 0)?.len(), 1);
    cluster.close()
}

#[test]
fn batches_queued_behind_a_busy_sender_are_appended_together_in_order() -> Result<()> {
    let (_dir, clock, cluster) = setup(2)?;
    let producer = Producer::new(&cluster, config(300))?;
    // Stall the sender inside a callback so that sealed batches queue up.
    let (entered_tx, entered) = crossbeam_channel::bounded(1);
    let (release, release_rx) = crossbeam_channel::bounded::<()>(1);
    producer.send_with_callback(
        ProducerRecord::new("t", "gate").with_partition(1),
        move |_| {
            entered_tx.send(()).expect("test alive");
            release_rx.recv().expect("test alive");
        },
    )?;
    clock.advance_ms(LINGER as i64);
    entered.recv().expect("sender stalled");
    let order: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut handles = Vec::new();
    for i in 0..400_u32 {
        let record = ProducerRecord::new("t", format!("value-{i:04}")).with_partition(0);
        if i % 7 == 0 {
            let order = order.clone();
            producer.send_with_callback(record, move |r| {
                order
                    .lock()
                    .push(r.expect("appended").offset().expect("offset"));
            })?;
            handles.push(None);
        } else {
            handles.push(Some(producer.send(record)?));
        }
    }
    release.send(()).expect("sender waiting");
    producer.flush()?;
    for (i, handle) in (0_u64..).zip(handles) {
        if let Some(handle) = handle {
            assert_eq!(handle.wait()?.offset(), Some(i));
        }
    }
    let order = order.lock().clone();
    assert_eq!(order, (0..400).step_by(7).collect::<Vec<u64>>());
    let stored = records(&cluster, "t", 0)?;
    assert_eq!(stored.len(), 400);
    for (i, r) in (0_u64..).zip(&stored) {
        assert_eq!(r.offset, i);
        assert_eq!(r.value.as_deref(), Some(format!("value-{i:04}").as_bytes()));
    }
    let stored_batches = batches(&cluster, "t", 0)?;
    assert!(
        stored_batches.len() > 10,
        "batch.size kept: {}",
        stored_batches.len()
    );
    assert!(stored_batches.iter().all(|b| b.size() <= 300));
    producer.close()?;
    cluster.close()
}

#[test]
fn a_failed_group_of_batches_fails_every_record() -> Result<()> {
    let (_dir, clock, cluster) = setup(1)?;
    let producer = Producer::new(&cluster, config(300))?;
    let (entered_tx, entered) = crossbeam_channel::bounded(1);
    let (release, release_rx) = crossbeam_channel::bounded::<()>(1);
    producer.send_with_callback(ProducerRecord::new("t", "gate"), move |_| {
        entered_tx.send(()).expect("test alive");
        release_rx.recv().expect("test alive");
    })?;
    clock.advance_ms(LINGER as i64);
    entered.recv().expect("sender stalled");
    let handles: Vec<_> = (0..100)
        .map(|i| producer.send(ProducerRecord::new("t", format!("value-{i:04}"))))
        .collect::<Result<_>>()?;
    cluster.delete_topic("t")?;
    release.send(()).expect("sender waiting");
    producer.flush()?;
    for handle in handles {
        assert!(matches!(
            handle.wait(),
            Err(Error::UnknownTopicOrPartition { .. })
        ));
    }
    producer.close()?;
    cluster.close()
}

/// On the system clock (the one test here that uses it) the sender parks on its doorbell between batches:
/// a lingering batch must still go by itself when its `linger.ms` passes
/// (the doorbell's timeout), and a second one after the sender slept again.
#[test]
fn on_the_system_clock_a_lingering_batch_goes_by_itself() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = logbus::Cluster::open(dir.path(), logbus::ClusterConfig::default())?;
    cluster.create_topic(NewTopic::new("t", 1))?;
    let producer = Producer::new(
        &cluster,
        ProducerConfig::builder()
            .acks(Acks::Leader)
            .linger(Duration::from_millis(2))
            .build()?,
    )?;
    for expected in 0..2 {
        let outcome = send_observed(&producer, ProducerRecord::new("t", "v"))?;
        // A bound, not a timing assertion: without the timer's wake-up the
        // callback never comes.
        let metadata = outcome
            .recv_timeout(Duration::from_secs(60))
            .expect("the lingering batch was sent without a flush")?;
        assert_eq!(metadata.offset(), Some(expected));
    }
    producer.close()?;
    // With an hour of linger only the doorbell wakes the sender: waiting on
    // a handle seals its batch and rings it.
    let patient = Producer::new(
        &cluster,
        ProducerConfig::builder()
            .acks(Acks::Leader)
            .linger(Duration::from_secs(3600))
            .build()?,
    )?;
    let sent = patient.send(ProducerRecord::new("t", "v"))?;
    assert_eq!(sent.wait()?.offset(), Some(2));
    patient.close()
}

/// Sends blocked on a full `buffer.memory` are woken one at a time, each
/// passing the wake-up on as it leaves its wait: none may be forgotten.
/// Four threads push 16 times the buffer through it; a lost wake-up would
/// leave a send waiting out `max.block.ms` and failing with
/// `BufferExhausted`.
#[test]
fn every_send_blocked_on_buffer_memory_gets_through() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = logbus::Cluster::open(dir.path(), logbus::ClusterConfig::default())?;
    cluster.create_topic(NewTopic::new("t", 2))?;
    let producer = Producer::new(
        &cluster,
        ProducerConfig::builder()
            .acks(Acks::Leader)
            .batch_size(8 * 1024)
            .buffer_memory(64 * 1024)
            .max_block(Duration::from_secs(60))
            .build()?,
    )?;
    let value = vec![7u8; 1000];
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let producer = producer.clone();
            let value = value.clone();
            std::thread::spawn(move || -> Result<()> {
                for i in 0..256u32 {
                    let record =
                        ProducerRecord::new("t", value.clone()).with_key(format!("{t}-{i}"));
                    drop(producer.send(record)?);
                }
                Ok(())
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("sending thread")?;
    }
    producer.flush()?;
    let topic = cluster.topic("t")?;
    let total = topic.partition(0)?.high_watermark()? + topic.partition(1)?.high_watermark()?;
    assert_eq!(total, 4 * 256);
    producer.close()
}
