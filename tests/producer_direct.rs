//! A producer without transactions (acks=1 or acks=all, idempotent or
//! not) appends its sealed batches from the sending threads, joined per
//! partition, and hands the sender thread only what needs it (callbacks,
//! retries, what a flush or a wait asks for, what lingers). These tests
//! check what users see: every record once, in order per partition and per
//! sending thread, each handle with its record's offset, callbacks on the
//! sender thread, nothing left waiting for `linger.ms` when someone waits
//! for it, and, with idempotence, one producer id and consecutive
//! sequences in every partition. The manual clock never moves here, so no
//! `linger.ms` ever passes.

mod producer_util;

use std::sync::Arc;
use std::time::Duration;

use logbus::{Acks, Producer, ProducerConfig, ProducerRecord, RecordMetadata, Result};
use parking_lot::Mutex;
use producer_util::{manual_topic as setup, records};

fn config(batch_size: u64) -> ProducerConfig {
    ProducerConfig::builder()
        .acks(Acks::Leader)
        .linger(Duration::from_secs(3600))
        .batch_size(batch_size)
        .build()
        .expect("config")
}

fn values(cluster: &logbus::Cluster, partition: u32) -> Result<Vec<String>> {
    Ok(records(cluster, "t", partition)?
        .into_iter()
        .map(|r| String::from_utf8(r.value.expect("value")).expect("utf-8"))
        .collect())
}

#[test]
fn many_batches_from_one_thread_land_once_in_order_with_their_offsets() -> Result<()> {
    let (_dir, _clock, cluster) = setup(1)?;
    let producer = Producer::new(&cluster, config(1_024))?;
    let futures: Vec<_> = (0..5_000)
        .map(|i| producer.send(ProducerRecord::new("t", format!("{i:05}"))))
        .collect::<Result<_>>()?;
    producer.flush()?;
    for (i, future) in futures.into_iter().enumerate() {
        assert!(future.is_done(), "record {i} is done after the flush");
        assert_eq!(future.wait()?.offset(), Some(i as u64));
    }
    let expected: Vec<String> = (0..5_000).map(|i| format!("{i:05}")).collect();
    assert_eq!(values(&cluster, 0)?, expected);
    producer.close()?;
    cluster.close()
}

#[test]
fn callbacks_still_run_on_the_sender_thread_in_record_order() -> Result<()> {
    let (_dir, _clock, cluster) = setup(2)?;
    let producer = Producer::new(&cluster, config(512))?;
    let seen: Arc<Mutex<Vec<(u32, u64, String)>>> = Arc::default();
    for i in 0..3_000u32 {
        let seen = seen.clone();
        let record = ProducerRecord::new("t", format!("{i}")).with_partition(i % 2);
        producer.send_with_callback(record, move |result: Result<RecordMetadata>| {
            let metadata = result.expect("appended");
            let thread = std::thread::current().name().unwrap_or("").to_string();
            seen.lock().push((
                metadata.partition(),
                metadata.offset().expect("acks=1 has offsets"),
                thread,
            ));
        })?;
    }
    producer.flush()?;
    let seen = seen.lock();
    assert_eq!(seen.len(), 3_000);
    for p in 0..2 {
        let offsets: Vec<u64> = seen
            .iter()
            .filter(|(partition, _, _)| *partition == p)
            .map(|(_, offset, _)| *offset)
            .collect();
        assert_eq!(offsets, (0..1_500).collect::<Vec<u64>>(), "partition {p}");
    }
    assert!(
        seen.iter()
            .all(|(_, _, thread)| thread == "logbus-producer"),
        "every callback ran on the sender thread"
    );
    drop(seen);
    producer.close()?;
    cluster.close()
}

#[test]
fn threads_sharing_a_producer_keep_each_threads_order_on_one_partition() -> Result<()> {
    let (_dir, _clock, cluster) = setup(1)?;
    let producer = Producer::new(&cluster, config(700))?;
    const THREADS: usize = 4;
    const EACH: usize = 2_000;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let producer = producer.clone();
            s.spawn(move || {
                for i in 0..EACH {
                    let handle = producer
                        .send(ProducerRecord::new("t", format!("{t}-{i:04}")))
                        .expect("send");
                    // Odd threads now and then wait for a record, which
                    // hands the partition's held batches to the sender
                    // thread while the others go on appending their own.
                    if t % 2 == 1 && i % 97 == 0 {
                        handle.wait().expect("appended");
                    }
                }
            });
        }
    });
    producer.flush()?;
    let stored = values(&cluster, 0)?;
    assert_eq!(stored.len(), THREADS * EACH, "every record once");
    for t in 0..THREADS {
        let mine: Vec<&String> = stored
            .iter()
            .filter(|v| v.starts_with(&format!("{t}-")))
            .collect();
        let expected: Vec<String> = (0..EACH).map(|i| format!("{t}-{i:04}")).collect();
        assert_eq!(
            mine.into_iter().cloned().collect::<Vec<_>>(),
            expected,
            "thread {t}"
        );
    }
    producer.close()?;
    cluster.close()
}

#[test]
fn a_flush_racing_appends_from_other_threads_returns_only_once_they_are_done() -> Result<()> {
    let (_dir, _clock, cluster) = setup(2)?;
    let producer = Producer::new(&cluster, config(600))?;
    let handles: Mutex<Vec<logbus::SendFuture>> = Mutex::new(Vec::new());
    let sending = std::sync::atomic::AtomicBool::new(true);
    std::thread::scope(|s| {
        let mut senders = Vec::new();
        for p in 0..2u32 {
            let (producer, handles) = (producer.clone(), &handles);
            senders.push(s.spawn(move || {
                for i in 0..4_000 {
                    let record = ProducerRecord::new("t", format!("{i}")).with_partition(p);
                    let handle = producer.send(record).expect("send");
                    handles.lock().push(handle);
                }
            }));
        }
        let (producer, handles, sending) = (&producer, &handles, &sending);
        s.spawn(move || {
            while sending.load(std::sync::atomic::Ordering::Acquire) {
                // Every record whose send returned before the flush began
                // is done when it returns.
                let before = handles.lock().len();
                producer.flush().expect("flush");
                let handles = handles.lock();
                let undone = handles[..before].iter().filter(|h| !h.is_done()).count();
                assert_eq!(undone, 0, "records sent before the flush and not done");
            }
        });
        for sender in senders {
            sender.join().expect("sending thread");
        }
        sending.store(false, std::sync::atomic::Ordering::Release);
    });
    producer.close()?;
    cluster.close()
}

#[test]
fn a_sending_thread_never_appends_ahead_of_batches_given_to_the_sender() -> Result<()> {
    use std::future::Future;
    let (_dir, _clock, cluster) = setup(1)?;
    // Each record fills a batch of its own, sealed at its send.
    let producer = Producer::new(&cluster, config(100))?;
    let record = |i: u32| ProducerRecord::new("t", format!("{i}-{}", "x".repeat(80)));
    // The first batch's callback holds the sender thread until the gate
    // opens.
    let (entered_tx, entered) = crossbeam_channel::bounded::<()>(1);
    let (gate_tx, gate) = crossbeam_channel::bounded::<()>(0);
    producer.send_with_callback(record(0), move |_| {
        entered_tx.send(()).expect("test alive");
        let _ = gate.recv();
    })?;
    entered.recv().expect("the sender runs the callback");
    // The second is given to the sender (polling its handle asks for it at
    // once), which cannot append it yet.
    let second = producer.send(record(1))?;
    let mut second = std::pin::pin!(second);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(second.as_mut().poll(&mut cx).is_pending());
    // Then the partition streams for a while: its held batches become due
    // to be appended by this thread, and must wait for the second.
    let streaming = std::time::Instant::now();
    let mut sent = 2;
    while streaming.elapsed() < Duration::from_millis(3) {
        drop(producer.send(record(sent))?);
        sent += 1;
    }
    drop(gate_tx);
    producer.flush()?;
    let stored: Vec<u32> = values(&cluster, 0)?
        .into_iter()
        .map(|v| {
            v.split('-')
                .next()
                .expect("number")
                .parse()
                .expect("number")
        })
        .collect();
    assert_eq!(stored, (0..sent).collect::<Vec<u32>>());
    producer.close()?;
    cluster.close()
}

#[test]
fn a_sealed_batch_is_appended_without_a_flush_a_wait_or_linger() -> Result<()> {
    let (_dir, _clock, cluster) = setup(1)?;
    let producer = Producer::new(&cluster, config(1_024))?;
    // Enough records for many sealed batches, sent as fast as the thread
    // can: the partition streams, so its sealed batches are held to be
    // joined. The last full batch must not wait for `linger.ms` (an hour,
    // on a clock that never moves) once the sending stops.
    let (tx, rx) = crossbeam_channel::unbounded();
    for i in 0..2_000u32 {
        let tx = tx.clone();
        producer.send_with_callback(ProducerRecord::new("t", format!("{i:04}")), move |r| {
            tx.send((i, r.map(|m| m.offset()))).expect("test alive");
        })?;
    }
    // Watched through callbacks (waiting on a handle would ask for the
    // batch at once): everything up to the last sealed batch arrives.
    let sealed_before_last = 1_800;
    let mut done = 0;
    while done < sealed_before_last {
        let (i, offset) = rx.recv().expect("called back");
        assert_eq!(offset?, Some(u64::from(i)));
        done += 1;
    }
    producer.close()?;
    cluster.close()
}

mod model {
    //! Random sequences of sends (to two partitions, with and without
    //! callbacks, of random sizes), waits and flushes, against a model:
    //! every handle resolves to its record's offset, callbacks in order, and
    //! the log holds exactly the records sent, in send order per partition.

    use super::*;
    use producer_util::batches;
    use proptest::prelude::*;

    /// The producer's settings a case runs with.
    #[derive(Debug, Clone, Copy)]
    enum Mode {
        /// acks=1, idempotence off (it is off by default with acks=1).
        Plain,
        /// acks=all with idempotence off (idempotence needs acks=all).
        PlainAll,
        /// Kafka's defaults: acks=all with idempotence (one broker, so
        /// acknowledged at the append).
        IdempotentAll,
    }

    impl Mode {
        fn config(self, batch_size: u64) -> ProducerConfig {
            let builder = ProducerConfig::builder()
                .linger(Duration::from_secs(3600))
                .batch_size(batch_size);
            match self {
                Mode::Plain => builder.acks(Acks::Leader),
                Mode::PlainAll => builder.enable_idempotence(false),
                Mode::IdempotentAll => builder,
            }
            .build()
            .expect("config")
        }

        fn idempotent(self) -> bool {
            matches!(self, Mode::IdempotentAll)
        }
    }

    fn mode() -> impl Strategy<Value = Mode> {
        prop_oneof![
            Just(Mode::Plain),
            Just(Mode::PlainAll),
            Just(Mode::IdempotentAll)
        ]
    }

    /// Every batch of `partition` carries the producer id `id` (none
    /// without idempotence), epoch 0 and the sequence after the batch
    /// before it (from 0); returns the producer id.
    fn check_sequences(
        cluster: &logbus::Cluster,
        partition: u32,
        idempotent: bool,
        id: Option<i64>,
    ) -> Result<Option<i64>> {
        let mut id = id;
        let mut next = 0i32;
        for batch in batches(cluster, "t", partition)? {
            let h = *batch.header();
            if !idempotent {
                assert_eq!((h.producer_id, h.base_sequence), (-1, -1), "{h:?}");
                continue;
            }
            let pid = *id.get_or_insert(h.producer_id);
            assert!(pid >= 0, "{h:?}");
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (pid, 0, next),
                "partition {partition}"
            );
            next += h.records_count;
        }
        Ok(id)
    }

    #[derive(Debug, Clone)]
    enum Op {
        Send {
            partition: u32,
            size: usize,
            callback: bool,
        },
        WaitLast,
        Flush,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            20 => (0..2u32, 1..600usize, any::<bool>())
                .prop_map(|(partition, size, callback)| Op::Send { partition, size, callback }),
            1 => Just(Op::WaitLast),
            1 => Just(Op::Flush),
        ]
    }

    fn run(ops: &[Op], batch_size: u64, mode: Mode) -> Result<()> {
        let (_dir, _clock, cluster) = setup(2)?;
        let producer = Producer::new(&cluster, mode.config(batch_size))?;
        let mut sent: [Vec<String>; 2] = [Vec::new(), Vec::new()];
        let mut handles = Vec::new();
        let called: Arc<Mutex<Vec<(u32, u64)>>> = Arc::default();
        for (n, op) in ops.iter().enumerate() {
            match *op {
                Op::Send {
                    partition,
                    size,
                    callback,
                } => {
                    let value = format!("{n:06}{}", "x".repeat(size));
                    let record = ProducerRecord::new("t", value.clone()).with_partition(partition);
                    let index = sent[partition as usize].len() as u64;
                    sent[partition as usize].push(value);
                    if callback {
                        let called = called.clone();
                        producer.send_with_callback(record, move |r| {
                            let offset = r.expect("appended").offset().expect("offset");
                            called.lock().push((partition, offset));
                        })?;
                        handles.push((partition, index, None));
                    } else {
                        handles.push((partition, index, Some(producer.send(record)?)));
                    }
                }
                Op::WaitLast => {
                    if let Some((_, index, handle)) = handles.last_mut()
                        && let Some(handle) = handle.take()
                    {
                        assert_eq!(handle.wait()?.offset(), Some(*index));
                    }
                }
                Op::Flush => producer.flush()?,
            }
        }
        producer.flush()?;
        for (partition, index, handle) in handles {
            if let Some(handle) = handle {
                let metadata = handle.wait()?;
                assert_eq!(
                    (metadata.partition(), metadata.offset()),
                    (partition, Some(index))
                );
            }
        }
        let mut id = None;
        for p in 0..2u32 {
            assert_eq!(values(&cluster, p)?, sent[p as usize], "partition {p}");
            id = check_sequences(&cluster, p, mode.idempotent(), id)?;
            let calls: Vec<u64> = called
                .lock()
                .iter()
                .filter(|(partition, _)| *partition == p)
                .map(|(_, offset)| *offset)
                .collect();
            assert!(
                calls.windows(2).all(|w| w[0] < w[1]),
                "callbacks in order: {calls:?}"
            );
        }
        producer.close()?;
        cluster.close()
    }

    proptest! {
        // 24 cases in CI; LOGBUS_DIRECT_CASES=N for a long run.
        #![proptest_config(ProptestConfig {
            cases: std::env::var("LOGBUS_DIRECT_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(24),
            ..ProptestConfig::default()
        })]
        #[test]
        fn random_sends_waits_and_flushes_match_the_model(
            ops in proptest::collection::vec(op(), 1..400),
            batch_size in prop_oneof![Just(256u64), Just(1_024), Just(16_384)],
            mode in mode(),
        ) {
            run(&ops, batch_size, mode).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
    }
}
