//! `SendFuture` as a `std::future::Future`: polled by a minimal executor
//! written here (no runtime), it sends its batch at once, wakes its task
//! when the batch is done, and yields what `wait` would. Driven by a manual
//! clock that never moves: nothing here sleeps or depends on timing.

mod producer_util;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::Duration;

use logbus::{
    Acks, Clock, Cluster, Error, ManualClock, NewTopic, Producer, ProducerConfig, ProducerRecord,
    Result,
};
use producer_util::{T0, batches, open_with_clock};

/// Wakes a parked thread.
struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` to completion on this thread, parking between polls.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}

/// Counts its wakes and reports each on a channel.
struct CountingWaker {
    wakes: AtomicUsize,
    woken: crossbeam_channel::Sender<()>,
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        let _ = self.woken.try_send(());
    }
}

fn counting_waker() -> (Arc<CountingWaker>, crossbeam_channel::Receiver<()>) {
    let (woken, rx) = crossbeam_channel::unbounded();
    let waker = Arc::new(CountingWaker {
        wakes: AtomicUsize::new(0),
        woken,
    });
    (waker, rx)
}

fn setup() -> Result<(tempfile::TempDir, ManualClock, Cluster)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0);
    let cluster = open_with_clock(dir.path(), &clock)?;
    cluster.create_topic(NewTopic::new("t", 1))?;
    Ok((dir, clock, cluster))
}

/// An hour of linger: on a clock that never moves, no batch is sent by it.
fn lingering() -> ProducerConfig {
    ProducerConfig::builder()
        .acks(Acks::Leader)
        .linger(Duration::from_secs(3_600))
        .build()
        .expect("config")
}

#[test]
fn awaiting_a_send_sends_its_batch_at_once() -> Result<()> {
    let (_dir, clock, cluster) = setup()?;
    let producer = Producer::new(&cluster, lingering())?;
    let offsets = block_on(async {
        let mut offsets = Vec::new();
        for i in 0..3 {
            let sent = producer.send(ProducerRecord::new("t", format!("v{i}")))?;
            offsets.push(sent.await?.offset());
        }
        Ok::<_, Error>(offsets)
    })?;
    assert_eq!(offsets, [Some(0), Some(1), Some(2)]);
    assert_eq!(batches(&cluster, "t", 0)?.len(), 3, "one batch per await");
    assert_eq!(clock.now_ms(), T0, "the clock never moved");
    producer.close()?;
    cluster.close()
}

#[test]
fn a_pending_future_is_woken_once_its_batch_is_done() -> Result<()> {
    let (_dir, _clock, cluster) = setup()?;
    // batch.size 0: every record is sealed at send, in send order.
    let producer = Producer::new(
        &cluster,
        ProducerConfig::builder()
            .acks(Acks::Leader)
            .batch_size(0)
            .build()?,
    )?;
    // Hold the sender inside the first record's callback, so the second
    // record cannot be done while the test polls it.
    let (entered_tx, entered) = crossbeam_channel::bounded(1);
    let (release, release_rx) = crossbeam_channel::bounded::<()>(1);
    producer.send_with_callback(ProducerRecord::new("t", "gate"), move |_| {
        entered_tx.send(()).expect("test alive");
        release_rx.recv().expect("test alive");
    })?;
    entered.recv().expect("sender held");
    let mut sent = producer.send(ProducerRecord::new("t", "v"))?;

    let (first, first_woken) = counting_waker();
    let (second, second_woken) = counting_waker();
    let first_waker = Waker::from(first.clone());
    let second_waker = Waker::from(second.clone());
    let mut pinned = Pin::new(&mut sent);
    assert!(
        pinned
            .as_mut()
            .poll(&mut Context::from_waker(&first_waker))
            .is_pending()
    );
    // Polled again with another waker: it replaces the first.
    assert!(
        pinned
            .as_mut()
            .poll(&mut Context::from_waker(&second_waker))
            .is_pending()
    );
    assert!(!sent.is_done());

    release.send(()).expect("sender waiting");
    second_woken.recv().expect("woken when done");
    assert!(sent.is_done());
    assert_eq!(second.wakes.load(Ordering::SeqCst), 1);
    assert_eq!(first.wakes.load(Ordering::SeqCst), 0, "the replaced waker");
    assert!(first_woken.try_recv().is_err());
    // Ready now, with the same result every time it is polled.
    let mut cx = Context::from_waker(&second_waker);
    for _ in 0..2 {
        match Pin::new(&mut sent).poll(&mut cx) {
            Poll::Ready(Ok(m)) => assert_eq!((m.partition(), m.offset()), (0, Some(1))),
            other => panic!("expected the record's metadata, got {other:?}"),
        }
    }
    producer.close()?;
    cluster.close()
}

#[test]
fn a_failed_batch_fails_the_future_as_it_fails_wait() -> Result<()> {
    let (_dir, clock, cluster) = setup()?;
    let producer = Producer::new(&cluster, lingering())?;
    let awaited = producer.send(ProducerRecord::new("t", "a"))?;
    let waited = producer.send(ProducerRecord::new("t", "b"))?;
    // The batch still lingers when its topic goes away.
    cluster.delete_topic("t")?;
    let from_future = block_on(awaited);
    let from_wait = waited.wait();
    match (&from_future, &from_wait) {
        (
            Err(Error::UnknownTopicOrPartition { topic, .. }),
            Err(Error::UnknownTopicOrPartition { topic: same, .. }),
        ) => assert_eq!((topic.as_str(), same.as_str()), ("t", "t")),
        other => panic!("expected UnknownTopicOrPartition twice, got {other:?}"),
    }
    assert_eq!(clock.now_ms(), T0);
    producer.close()?;
    cluster.close()
}
