//! A [`Log`](crate::Log) over a [`WriteGate`]: what readers and other
//! writers see while an append's write to the active segment is parked
//! halfway (readers never wait behind a writer).

use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use super::{Log, LogRead};
use crate::error::Error;
use crate::format::BatchBuilder;
use crate::storage::StdStorage;
use crate::storage::{DiskSwitch, FailableStorage, WriteGate};
use crate::types::Compression;

/// A deadlock watchdog, not a timing assertion: a read that waited for
/// the parked append would wait forever.
const WATCHDOG: Duration = Duration::from_secs(300);

fn open(dir: &std::path::Path, gate: &WriteGate) -> Log {
    let storage =
        FailableStorage::with_gate(Arc::new(StdStorage), DiskSwitch::default(), gate.clone());
    Log::builder(dir).storage(Arc::new(storage)).open().unwrap()
}

/// A batch of `records` records, each value naming `tag`.
fn batch(records: usize, tag: u8) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Compression::None);
    for i in 0..records {
        builder.append(1_000 + i as i64, None, Some(&[tag; 200]), &[]);
    }
    builder.build().unwrap().to_vec()
}

/// The (base, last) offsets of the batches a read returned, each batch
/// checked whole (CRC and records).
fn spans(read: &LogRead) -> Vec<(i64, i64)> {
    read.batches()
        .map(|b| {
            let b = b.unwrap();
            b.validate_records().unwrap();
            (b.header().base_offset, b.header().last_offset())
        })
        .collect()
}

/// Runs `f` on another thread and returns its result, failing the test
/// if it never finishes (it waited for the parked write).
fn on_a_reader_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = mpsc::channel();
    thread::spawn(move || done.send(f()).unwrap());
    result
        .recv_timeout(WATCHDOG)
        .expect("a reader waited for the append parked in its write")
}

/// Three published batches, then a fourth whose write parks halfway:
/// reads on another thread complete meanwhile and return exactly the
/// three, never a byte of the fourth; once released, the fourth reads
/// back whole.
fn parked_append_is_invisible(follower: bool) {
    let dir = tempfile::tempdir().unwrap();
    let gate = WriteGate::default();
    let log = Arc::new(open(&dir.path().join("t-0"), &gate));
    let mut published = Vec::new();
    for (records, tag) in [(3, 1), (5, 2), (2, 3)] {
        let info = log.append(&mut batch(records, tag), 0).unwrap();
        published.push((info.first_offset() as i64, info.last_offset() as i64));
    }
    let end = log.log_end_offset();
    assert_eq!(end, 10);
    let size = log.size_bytes();

    gate.arm(".log");
    let appender = {
        let log = Arc::clone(&log);
        thread::spawn(move || {
            let mut bytes = batch(4, 4);
            if follower {
                crate::format::set_base_offset(&mut bytes, 10);
                crate::format::set_partition_leader_epoch(&mut bytes, 0);
                log.append_as_follower(&bytes)
            } else {
                log.append(&mut bytes, 0)
            }
        })
    };
    gate.wait_parked();

    let (read, committed, tail, past, leo, bytes) = on_a_reader_thread({
        let log = Arc::clone(&log);
        move || {
            (
                log.read(0, usize::MAX).unwrap(),
                log.read_committed(0, usize::MAX, u64::MAX).unwrap(),
                log.read(end, usize::MAX).unwrap(),
                log.read(end + 1, usize::MAX),
                log.log_end_offset(),
                log.size_bytes(),
            )
        }
    });
    assert_eq!(spans(&read), published, "exactly the published batches");
    assert_eq!(read.records().len() as u64, size);
    assert_eq!(read.log_end_offset(), end);
    assert_eq!(spans(&committed), published);
    assert!(tail.records().is_empty(), "nothing at the published end");
    assert!(
        matches!(past, Err(Error::OffsetOutOfRange { log_end: 10, .. })),
        "{past:?}"
    );
    assert_eq!(
        (leo, bytes),
        (end, size),
        "the end and size are the published ones"
    );
    // A read from the middle ends at the published end as well.
    assert_eq!(spans(&log.read(4, usize::MAX).unwrap()), published[1..]);

    gate.release();
    let info = appender.join().unwrap().unwrap();
    assert_eq!((info.first_offset(), info.last_offset()), (10, 13));
    let read = log.read(0, usize::MAX).unwrap();
    let mut all = published.clone();
    all.push((10, 13));
    assert_eq!(spans(&read), all);
    assert_eq!(spans(&log.read(10, usize::MAX).unwrap()), [(10, 13)]);
    assert_eq!(log.log_end_offset(), 14);

    // What the appends left on disk is what a reopen finds: no damage.
    Arc::try_unwrap(log).unwrap().close().unwrap();
    let log = open(&dir.path().join("t-0"), &gate);
    assert!(log.recovery_report().truncated.is_none());
    assert_eq!(spans(&log.read(0, usize::MAX).unwrap()), all);
    log.close().unwrap();
}

#[test]
fn a_read_during_a_parked_append_returns_only_the_earlier_batches() {
    parked_append_is_invisible(false);
}

#[test]
fn a_read_during_a_parked_follower_append_returns_only_the_earlier_batches() {
    parked_append_is_invisible(true);
}

/// Appends stay serialized: a second append and a truncation started
/// while the first is parked in its write run after it, in order, and
/// the log holds the batches contiguously.
#[test]
fn writers_wait_for_a_parked_append() {
    let dir = tempfile::tempdir().unwrap();
    let gate = WriteGate::default();
    let log = Arc::new(open(&dir.path().join("t-0"), &gate));
    log.append(&mut batch(2, 1), 0).unwrap();

    gate.arm(".log");
    let first = {
        let log = Arc::clone(&log);
        thread::spawn(move || log.append(&mut batch(3, 2), 0).unwrap())
    };
    gate.wait_parked();
    let (started, started_rx) = mpsc::channel();
    let second = {
        let log = Arc::clone(&log);
        thread::spawn(move || {
            started.send(()).unwrap();
            log.append(&mut batch(4, 3), 0).unwrap()
        })
    };
    started_rx.recv().unwrap();
    // Whether or not the second append reached the lock yet, the parked
    // one is still unpublished: readers see the first batch only.
    let read = on_a_reader_thread({
        let log = Arc::clone(&log);
        move || log.read(0, usize::MAX).unwrap()
    });
    assert_eq!(spans(&read), [(0, 1)]);

    gate.release();
    let (a, b) = (first.join().unwrap(), second.join().unwrap());
    assert_eq!((a.first_offset(), a.last_offset()), (2, 4));
    assert_eq!((b.first_offset(), b.last_offset()), (5, 8));
    assert_eq!(b.position(), a.position() + a.bytes(), "written end to end");
    assert_eq!(
        spans(&log.read(0, usize::MAX).unwrap()),
        [(0, 1), (2, 4), (5, 8)]
    );

    // A truncation waits for an append parked in its write as well,
    // then cuts what it published.
    gate.arm(".log");
    let third = {
        let log = Arc::clone(&log);
        thread::spawn(move || log.append(&mut batch(1, 4), 0).unwrap())
    };
    gate.wait_parked();
    let (started, started_rx) = mpsc::channel();
    let cut = {
        let log = Arc::clone(&log);
        thread::spawn(move || {
            started.send(()).unwrap();
            log.truncate_to(5).unwrap()
        })
    };
    started_rx.recv().unwrap();
    gate.release();
    let c = third.join().unwrap();
    assert_eq!(c.first_offset(), 9);
    cut.join().unwrap();
    assert_eq!(log.log_end_offset(), 5);
    assert_eq!(spans(&log.read(0, usize::MAX).unwrap()), [(0, 1), (2, 4)]);
    let d = log.append(&mut batch(2, 5), 0).unwrap();
    assert_eq!((d.first_offset(), d.last_offset()), (5, 6));
    Arc::try_unwrap(log).unwrap().close().unwrap();
    let log = open(&dir.path().join("t-0"), &gate);
    assert!(log.recovery_report().truncated.is_none());
    assert_eq!(
        spans(&log.read(0, usize::MAX).unwrap()),
        [(0, 1), (2, 4), (5, 6)]
    );
    log.close().unwrap();
}
