//! Transactions in a partition log: transactional batches open a
//! transaction for their producer, markers (`Log::append_marker`, or copied
//! by a follower) close it, an ABORT goes to the segment's `.txnindex`
//! (Kafka's layout), the last stable offset bounds read_committed reads,
//! and all of it survives reopens, crashes, damage, truncation, retention
//! and cleaning.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use logbus::format::{BatchBuilder, Batches, ControlRecordType};
use logbus::{
    AbortedTransaction, Compression, Error, FaultyStorage, Log, LogConfig, LogRead, ManualClock,
    Result, Tear,
};
use proptest::prelude::*;

/// A log builder with a manual clock near the records' timestamps (a
/// marker is stamped with the clock; a time far from the data's would roll
/// segments by `segment.ms`).
fn builder(dir: &Path) -> logbus::LogBuilder {
    Log::builder(dir).clock(Arc::new(ManualClock::new(2_000)))
}

/// A transactional batch of producer `pid` at `epoch`, sequences
/// `seq..seq + count`, each value naming its producer and sequence.
fn txn_batch(pid: i64, epoch: i16, seq: i32, count: i32) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Compression::None)
        .producer(pid, epoch, seq)
        .transactional(true);
    for i in 0..count {
        let value = format!("{pid}/{}", seq + i);
        builder.append(1_000 + i64::from(i), None, Some(value.as_bytes()), &[]);
    }
    builder.build().expect("a small batch builds").to_vec()
}

/// A plain batch (no producer id) of one record valued `value`.
fn plain(value: &str) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Compression::None);
    builder.append(1_000, None, Some(value.as_bytes()), &[]);
    builder.build().expect("a small batch builds").to_vec()
}

/// What a read_committed consumer returns from `read` (Kafka's fetcher):
/// control batches dropped, and the batches of a producer in an aborted
/// transaction skipped from its first offset until its ABORT marker.
fn committed_values(read: &LogRead, from: u64) -> Result<Vec<(u64, String)>> {
    let mut aborted: Vec<AbortedTransaction> = read
        .aborted_transactions()
        .expect("a read_committed read lists aborted transactions")
        .to_vec();
    aborted.sort_by_key(|t| t.first_offset);
    let mut aborted = aborted.into_iter().peekable();
    let mut skipping = BTreeSet::new();
    let mut out = Vec::new();
    for batch in Batches::new(read.records().clone()) {
        let batch = batch?;
        let h = *batch.header();
        let base = u64::try_from(h.base_offset).expect("offsets");
        while let Some(t) = aborted
            .peek()
            .filter(|t| t.first_offset <= base + u64::try_from(h.last_offset_delta).expect("delta"))
        {
            skipping.insert(t.producer_id);
            aborted.next();
        }
        if h.is_control() {
            skipping.remove(&h.producer_id);
            continue;
        }
        if h.is_transactional() && skipping.contains(&h.producer_id) {
            continue;
        }
        for record in batch.records()? {
            let record = record?;
            let offset = u64::try_from(record.offset()).expect("offsets");
            if offset >= from {
                let value = record.value().map(|v| v.to_vec()).unwrap_or_default();
                out.push((offset, String::from_utf8(value).expect("utf-8 values")));
            }
        }
    }
    Ok(out)
}

/// Everything a read_committed consumer sees from the log start, read in
/// small steps (so aborted transactions span reads).
fn read_all_committed(log: &Log) -> Result<Vec<(u64, String)>> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    let lso = log.last_stable_offset();
    while next < lso {
        let read = log.read_committed(next, 1, u64::MAX)?;
        let mut end = next;
        for batch in Batches::new(read.records().clone()) {
            end = u64::try_from(batch?.header().next_offset()).expect("offsets");
        }
        assert!(end > next, "a read below the LSO returns a batch");
        out.extend(committed_values(&read, next)?);
        next = end;
    }
    Ok(out)
}

/// Every file in `dir` with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(|e| {
            let e = e.expect("entry");
            // A deleted segment's file may go (background removal) while
            // the directory is listed.
            let bytes = std::fs::read(e.path()).ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), bytes))
        })
        .filter(|(name, _)| !name.ends_with(".deleted"))
        .collect()
}

/// The `.txnindex` files in `dir`, by name.
fn txn_indexes(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    files(dir)
        .into_iter()
        .filter(|(name, _)| name.ends_with(".txnindex"))
        .collect()
}

/// Kafka's `AbortedTxn` entry bytes (version 0).
fn entry(pid: i64, first: i64, last: i64, lso: i64) -> Vec<u8> {
    let mut out = vec![0, 0];
    for v in [pid, first, last, lso] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out
}

fn abort(log: &Log, pid: i64, epoch: i16) -> Result<u64> {
    Ok(log
        .append_marker(pid, epoch, ControlRecordType::Abort, 0)?
        .first_offset())
}

fn commit(log: &Log, pid: i64, epoch: i16) -> Result<u64> {
    Ok(log
        .append_marker(pid, epoch, ControlRecordType::Commit, 0)?
        .first_offset())
}

#[test]
fn markers_end_transactions_and_move_the_last_stable_offset() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = builder(dir.path()).open()?;
    log.append(&mut plain("before"), 0)?; // 0
    log.append(&mut txn_batch(1, 0, 0, 2), 0)?; // 1..=2
    log.append(&mut txn_batch(2, 0, 0, 2), 0)?; // 3..=4
    log.append(&mut plain("during"), 0)?; // 5
    assert_eq!(log.last_stable_offset(), 1, "pid 1's transaction is open");
    assert_eq!(commit(&log, 1, 0)?, 6);
    assert_eq!(log.last_stable_offset(), 3, "pid 2's transaction is open");
    log.append(&mut txn_batch(1, 0, 2, 1), 0)?; // 7: pid 1's next transaction
    assert_eq!(abort(&log, 2, 0)?, 8);
    assert_eq!(log.last_stable_offset(), 7, "pid 1's second transaction");
    assert_eq!(commit(&log, 1, 0)?, 9);
    assert_eq!(log.last_stable_offset(), 10);

    // The aborted transaction is in the active segment's .txnindex, in
    // Kafka's layout; the LSO after its marker was 7 (pid 1 open again).
    let indexes = txn_indexes(dir.path());
    assert_eq!(
        indexes.get("00000000000000000000.txnindex"),
        Some(&entry(2, 3, 8, 7)),
        "{indexes:?}"
    );
    let read = log.read_committed(0, 1 << 20, u64::MAX)?;
    assert_eq!(
        read.aborted_transactions(),
        Some(
            &[AbortedTransaction {
                producer_id: 2,
                first_offset: 3
            }][..]
        )
    );
    assert_eq!(log.read(0, 1 << 20)?.aborted_transactions(), None);
    let values: Vec<String> = committed_values(&read, 0)?
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(values, ["before", "1/0", "1/1", "during", "1/2"]);
    // A read past the aborted transaction's marker does not list it.
    let after = log.read_committed(9, 1 << 20, u64::MAX)?;
    assert_eq!(after.aborted_transactions(), Some(&[][..]));
    Ok(())
}

#[test]
fn read_committed_stops_at_the_last_stable_offset() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = builder(dir.path()).open()?;
    log.append(&mut plain("a"), 0)?; // 0
    log.append(&mut txn_batch(1, 0, 0, 1), 0)?; // 1
    log.append(&mut plain("b"), 0)?; // 2
    let read = log.read_committed(0, 1 << 20, u64::MAX)?;
    assert_eq!(committed_values(&read, 0)?, [(0, "a".to_owned())]);
    // At or past the LSO: nothing, not an error.
    assert!(
        log.read_committed(1, 1 << 20, u64::MAX)?
            .records()
            .is_empty()
    );
    assert!(
        log.read_committed(2, 1 << 20, u64::MAX)?
            .records()
            .is_empty()
    );
    // read_uncommitted reads on.
    assert_eq!(
        Batches::new(log.read(0, 1 << 20)?.records().clone()).count(),
        3
    );
    Ok(())
}

#[test]
fn the_high_watermark_holds_a_completed_transaction_unstable() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = builder(dir.path()).open()?;
    log.update_high_watermark(0);
    log.append(&mut txn_batch(1, 0, 0, 2), 0)?; // 0..=1
    commit(&log, 1, 0)?; // 2
    assert_eq!(log.last_stable_offset(), 0);
    log.update_high_watermark(2);
    assert_eq!(log.last_stable_offset(), 0, "the marker is not replicated");
    log.update_high_watermark(3);
    assert_eq!(log.last_stable_offset(), 3);
    log.append(&mut plain("x"), 0)?; // 3
    assert_eq!(log.last_stable_offset(), 3, "the LSO is at most the HW");
    Ok(())
}

#[test]
fn markers_are_fenced_and_clients_may_not_write_them() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = builder(dir.path()).open()?;
    log.append(&mut txn_batch(1, 3, 0, 1), 0)?;
    log.append_marker(1, 3, ControlRecordType::Commit, 5)?;
    log.flush()?;
    let before = files(dir.path());
    assert!(matches!(
        log.append_marker(1, 2, ControlRecordType::Abort, 5),
        Err(Error::InvalidProducerEpoch {
            producer_id: 1,
            epoch: 2,
            current: 3
        })
    ));
    assert!(matches!(
        log.append_marker(1, 3, ControlRecordType::Abort, 4),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        log.append_marker(-1, 0, ControlRecordType::Abort, 5),
        Err(Error::InvalidArgument(_))
    ));
    // A producer's own control batch.
    let mut control = BatchBuilder::new(Compression::None)
        .producer(1, 3, -1)
        .transactional(true)
        .control(true);
    control.append(1_000, Some(&[0, 0, 0, 0]), Some(&[0, 0, 0, 0, 0, 5]), &[]);
    let mut control = control.build().expect("builds").to_vec();
    assert!(matches!(
        log.append(&mut control, 0),
        Err(Error::InvalidBatch(_))
    ));
    assert_eq!(files(dir.path()), before, "nothing stored");
    // A non-transactional batch while a transaction is open is refused.
    log.append(&mut txn_batch(1, 3, 1, 1), 0)?;
    let mut idempotent = BatchBuilder::new(Compression::None).producer(1, 3, 2);
    idempotent.append(1_000, None, Some(b"x"), &[]);
    assert!(matches!(
        log.append(&mut idempotent.build().expect("builds").to_vec(), 0),
        Err(Error::InvalidTxnState { producer_id: 1 })
    ));
    // A newer epoch's marker (the coordinator bumped it to abort) is fine.
    log.append_marker(1, 4, ControlRecordType::Abort, 5)?;
    assert_eq!(log.last_stable_offset(), log.log_end_offset());
    Ok(())
}

#[test]
fn a_follower_copies_markers_and_its_txnindex_equals_the_leaders() -> Result<()> {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let follower_dir = tempfile::tempdir().expect("tempdir");
    let leader = builder(leader_dir.path()).open()?;
    let follower = builder(follower_dir.path()).open()?;
    leader.append(&mut txn_batch(1, 0, 0, 2), 0)?;
    leader.append(&mut txn_batch(2, 0, 0, 1), 0)?;
    abort(&leader, 1, 0)?;
    leader.append(&mut txn_batch(1, 0, 2, 1), 0)?;
    let read = leader.read(0, 1 << 20)?;
    follower.append_as_follower(read.records())?;
    assert_eq!(follower.last_stable_offset(), leader.last_stable_offset());
    assert_eq!(follower.last_stable_offset(), 2);
    assert_eq!(
        txn_indexes(follower_dir.path()),
        txn_indexes(leader_dir.path())
    );
    assert_eq!(
        follower
            .read_committed(0, 1 << 20, u64::MAX)?
            .aborted_transactions(),
        leader
            .read_committed(0, 1 << 20, u64::MAX)?
            .aborted_transactions(),
    );
    Ok(())
}

#[test]
fn recovery_rebuilds_a_lost_or_damaged_txnindex() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig::builder().segment_bytes(300).build()?;
    let log = builder(dir.path()).config(config.clone()).open()?;
    for round in 0..6 {
        log.append(&mut txn_batch(1, 0, round, 1), 0)?;
        log.append(&mut txn_batch(2, 0, round, 1), 0)?;
        abort(&log, 1, 0)?;
        commit(&log, 2, 0)?;
    }
    assert!(log.segment_count() > 2, "the test needs several segments");
    let expected = read_all_committed(&log)?;
    assert_eq!(expected.len(), 6, "pid 2's records only");
    log.close()?;
    let indexes = txn_indexes(dir.path());
    assert!(indexes.len() > 1, "{indexes:?}");

    // Every .txnindex removed, and one torn: recovery from offset 0 scans
    // every segment and rebuilds them from the markers.
    let (first, _) = indexes.iter().next().expect("one");
    std::fs::write(dir.path().join(first), [0u8; 20]).expect("write");
    for name in indexes.keys().skip(1) {
        std::fs::remove_file(dir.path().join(name)).expect("remove");
    }
    let log = builder(dir.path()).config(config.clone()).open()?;
    assert_eq!(txn_indexes(dir.path()), indexes);
    assert_eq!(read_all_committed(&log)?, expected);
    let end = log.log_end_offset();
    log.close()?;

    // Below the recovery point a segment's indexes are trusted: a damaged
    // .txnindex tail is cut, the whole entries before it kept.
    let (name, bytes) = indexes.iter().next().expect("one");
    let mut damaged = bytes.clone();
    damaged.extend_from_slice(&[7u8; 10]);
    std::fs::write(dir.path().join(name), &damaged).expect("write");
    let log = builder(dir.path())
        .config(config.clone())
        .recovery_point(end)
        .open()?;
    assert_eq!(txn_indexes(dir.path()).get(name), Some(bytes));
    assert_eq!(read_all_committed(&log)?, expected);
    log.close()?;

    // A well-formed entry naming a marker past its segment's end (a cut
    // whose index change was lost) is dropped too.
    let mut stale = bytes.clone();
    stale.extend_from_slice(&entry(2, 900, 1_000, 1_000));
    std::fs::write(dir.path().join(name), &stale).expect("write");
    let log = builder(dir.path())
        .config(config)
        .recovery_point(end)
        .open()?;
    assert_eq!(txn_indexes(dir.path()).get(name), Some(bytes));
    assert_eq!(log.aborted_transactions(0, u64::MAX).len(), 6);
    Ok(())
}

#[test]
fn a_crash_keeps_the_aborted_transactions_of_what_survives() -> Result<()> {
    for tear in [Tear::None, Tear::KeepPrefix(20), Tear::Random(7)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = FaultyStorage::new();
        let config = LogConfig::builder().segment_bytes(400).build()?;
        let open = |recovery_point| {
            builder(dir.path())
                .storage(Arc::new(storage.clone()))
                .config(config.clone())
                .recovery_point(recovery_point)
                .open()
        };
        let log = open(0)?;
        for round in 0..4 {
            log.append(&mut txn_batch(1, 0, round * 2, 2), 0)?;
            abort(&log, 1, 0)?;
        }
        log.flush()?;
        let durable = log.recovery_point();
        let flushed = read_all_committed(&log)?;
        for round in 4..8 {
            log.append(&mut txn_batch(1, 0, round * 2, 2), 0)?;
            abort(&log, 1, 0)?;
        }
        storage.crash(tear)?;
        drop(log);
        let log = open(durable)?;
        assert!(log.log_end_offset() >= durable);
        // Every record of producer 1 was aborted: a read_committed reader
        // sees none, however much of the tail survived.
        assert_eq!(read_all_committed(&log)?, flushed);
        assert!(flushed.is_empty());
        let aborted = log.aborted_transactions(0, log.log_end_offset());
        assert!(aborted.len() >= 4, "{tear:?}: {aborted:?}");
        // Each surviving transaction is listed once.
        let firsts: BTreeSet<u64> = aborted.iter().map(|t| t.first_offset).collect();
        assert_eq!(firsts.len(), aborted.len());
    }
    Ok(())
}

#[test]
fn truncation_retention_and_cleaning_keep_the_txnindex_with_its_segment() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig::builder().segment_bytes(300).build()?;
    let log = builder(dir.path()).config(config).open()?;
    let mut markers = Vec::new();
    for round in 0..6 {
        log.append(&mut txn_batch(1, 0, round, 1), 0)?;
        markers.push(abort(&log, 1, 0)?);
    }
    let all = log.aborted_transactions(0, u64::MAX);
    assert_eq!(all.len(), 6);
    // Truncation cuts the entries whose marker goes.
    log.truncate_to(markers[4])?;
    let kept = log.aborted_transactions(0, u64::MAX);
    assert_eq!(kept, all[..4]);
    let entries: usize = txn_indexes(dir.path()).values().map(|b| b.len() / 34).sum();
    assert_eq!(entries, 4);
    // The cut marker's transaction is open again; abort it anew.
    assert_eq!(log.last_stable_offset(), markers[4] - 1);
    abort(&log, 1, 0)?;
    // Retention: deleting the first segments deletes their .txnindex.
    let bases = log.segment_base_offsets();
    log.delete_records(bases[2])?;
    log.enforce_retention()?;
    let names: Vec<String> = txn_indexes(dir.path()).into_keys().collect();
    for base in &bases[..2] {
        assert!(
            !names.contains(&format!("{base:020}.txnindex")),
            "{names:?}"
        );
    }
    assert_eq!(
        log.aborted_transactions(log.log_start_offset(), u64::MAX)
            .len(),
        log.aborted_transactions(0, u64::MAX).len()
    );
    Ok(())
}

#[test]
fn the_cleaner_carries_the_aborted_transactions_over() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig::builder()
        .segment_bytes(300)
        .compact(true)
        .delete(false)
        .min_cleanable_dirty_ratio(0.0)
        .build()?;
    let log = builder(dir.path()).config(config.clone()).open()?;
    for round in 0..6 {
        let mut b = BatchBuilder::new(Compression::None)
            .producer(1, 0, round)
            .transactional(true);
        b.append(1_000, Some(b"k"), Some(format!("v{round}").as_bytes()), &[]);
        log.append(&mut b.build().expect("builds").to_vec(), 0)?;
        if round % 2 == 0 {
            abort(&log, 1, 0)?;
        } else {
            commit(&log, 1, 0)?;
        }
    }
    let before = log.aborted_transactions(0, u64::MAX);
    assert_eq!(before.len(), 3);
    let report = log.clean()?;
    assert!(report.segments_cleaned > 0, "{report:?}");
    assert_eq!(log.aborted_transactions(0, u64::MAX), before);
    let last: Vec<String> = read_all_committed(&log)?
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    // The active segment is not cleaned: v5 there, v3 the last before it.
    assert_eq!(last, ["v3", "v5"]);
    let end = log.log_end_offset();
    log.close()?;
    // The cleaned segments' .txnindex files were swapped in with them.
    let log = builder(dir.path())
        .config(config)
        .recovery_point(end)
        .open()?;
    assert_eq!(log.aborted_transactions(0, u64::MAX), before);
    Ok(())
}

// ---- the model ------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    /// A transactional batch of `count` records from producer `pid`.
    Data { pid: usize, count: i32 },
    /// A plain batch.
    Plain,
    /// End producer `pid`'s transaction.
    End { pid: usize, commit: bool },
    /// Truncate to a fraction of the log end.
    Truncate { permille: u64 },
    /// Close and reopen: cleanly, or flush and crash (a process crash, or
    /// a power loss that may also lose pending directory operations).
    Reopen { crash: bool, power: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..3usize, 1..4i32).prop_map(|(pid, count)| Op::Data { pid, count }),
        2 => Just(Op::Plain),
        4 => (0..3usize, any::<bool>()).prop_map(|(pid, commit)| Op::End { pid, commit }),
        1 => (0..1000u64).prop_map(|permille| Op::Truncate { permille }),
        1 => (any::<bool>(), any::<bool>()).prop_map(|(crash, power)| Op::Reopen { crash, power }),
    ]
}

/// What the log should hold: each stored batch, in offset order.
#[derive(Debug, Clone)]
enum Stored {
    Data {
        pid: usize,
        first: u64,
        values: Vec<String>,
    },
    Plain {
        offset: u64,
        value: String,
    },
    Marker {
        pid: usize,
        offset: u64,
        commit: bool,
    },
}

impl Stored {
    fn first(&self) -> u64 {
        match self {
            Stored::Data { first, .. } => *first,
            Stored::Plain { offset, .. } | Stored::Marker { offset, .. } => *offset,
        }
    }
}

/// The model's answers: the LSO, the aborted transactions (pid, first,
/// marker) and the committed values, from the stored batches alone.
struct Expected {
    lso: u64,
    /// (producer id, first offset) of each aborted transaction, by marker.
    aborted: Vec<(i64, u64)>,
    committed: Vec<(u64, String)>,
}

fn model(stored: &[Stored], end: u64) -> Expected {
    let mut open: BTreeMap<usize, u64> = BTreeMap::new();
    let mut txn_values: BTreeMap<usize, Vec<(u64, String)>> = BTreeMap::new();
    let mut aborted = Vec::new();
    let mut committed = Vec::new();
    for s in stored {
        match s {
            Stored::Data { pid, first, values } => {
                open.entry(*pid).or_insert(*first);
                let list = txn_values.entry(*pid).or_default();
                for (i, v) in values.iter().enumerate() {
                    list.push((*first + i as u64, v.clone()));
                }
            }
            Stored::Plain { offset, value } => committed.push((*offset, value.clone())),
            Stored::Marker { pid, commit, .. } => {
                if let Some(first) = open.remove(pid) {
                    let values = txn_values.remove(pid).unwrap_or_default();
                    if *commit {
                        committed.extend(values);
                    } else {
                        aborted.push((*pid as i64 + 100, first));
                    }
                }
            }
        }
    }
    let lso = open.values().copied().min().unwrap_or(end);
    // Only what lies below the LSO is visible.
    committed.retain(|(o, _)| *o < lso);
    committed.sort();
    Expected {
        lso,
        aborted,
        committed,
    }
}

fn check(log: &Log, stored: &[Stored]) -> std::result::Result<(), TestCaseError> {
    let expected = model(stored, log.log_end_offset());
    prop_assert_eq!(log.last_stable_offset(), expected.lso);
    let got: Vec<(i64, u64)> = log
        .aborted_transactions(0, u64::MAX)
        .iter()
        .map(|t| (t.producer_id, t.first_offset))
        .collect();
    prop_assert_eq!(got, expected.aborted);
    let seen = read_all_committed(log).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(seen, expected.committed);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn transactions_match_the_model(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = FaultyStorage::new();
        let config = LogConfig::builder().segment_bytes(350).build().expect("config");
        let open = |recovery_point: u64| {
            builder(dir.path())
                .storage(Arc::new(storage.clone()))
                .config(config.clone())
                .recovery_point(recovery_point)
                .open()
                .expect("open")
        };
        let mut log = open(0);
        let mut stored: Vec<Stored> = Vec::new();
        let mut seqs = [0i32; 3];
        for op in ops {
            match op {
                Op::Data { pid, count } => {
                    let id = pid as i64 + 100;
                    let info = log.append(&mut txn_batch(id, 0, seqs[pid], count), 0).expect("append");
                    let values = (0..count).map(|i| format!("{id}/{}", seqs[pid] + i)).collect();
                    seqs[pid] += count;
                    stored.push(Stored::Data { pid, first: info.first_offset(), values });
                }
                Op::Plain => {
                    let value = format!("p{}", log.log_end_offset());
                    let info = log.append(&mut plain(&value), 0).expect("append");
                    stored.push(Stored::Plain { offset: info.first_offset(), value });
                }
                Op::End { pid, commit } => {
                    let kind = if commit { ControlRecordType::Commit } else { ControlRecordType::Abort };
                    let info = log.append_marker(pid as i64 + 100, 0, kind, 0).expect("marker");
                    stored.push(Stored::Marker { pid, offset: info.first_offset(), commit });
                }
                Op::Truncate { permille } => {
                    let target = log.log_end_offset() * permille / 1000;
                    log.truncate_to(target).expect("truncate");
                    let end = log.log_end_offset();
                    stored.retain(|s| s.first() < end);
                    // A truncation never splits a batch here (cut at a batch start).
                    let whole = stored.iter().all(|s| match s {
                        Stored::Data { first, values, .. } => first + values.len() as u64 <= end,
                        _ => true,
                    });
                    prop_assert!(whole);
                    // Producers' sequences restart from what is kept: use a
                    // new epoch-free way, the next expected sequence.
                    for (pid, seq) in seqs.iter_mut().enumerate() {
                        *seq = stored.iter().filter_map(|s| match s {
                            Stored::Data { pid: p, values, .. } if *p == pid => Some(values.len() as i32),
                            _ => None,
                        }).sum();
                    }
                }
                Op::Reopen { crash, power } => {
                    if crash {
                        log.flush().expect("flush");
                        let durable = log.recovery_point();
                        if power {
                            storage.power_loss(durable).expect("power loss");
                        } else {
                            storage.crash(Tear::None).expect("crash");
                        }
                        drop(log);
                        log = open(durable);
                    } else {
                        log.close().expect("close");
                        log = open(0);
                    }
                }
            }
            check(&log, &stored)?;
        }
    }
}

/// A compacted log's cleaner removes aborted records (they never supersede
/// a committed one), and does not clean past the last stable offset (an
/// open transaction's record may still abort): a read_committed reader
/// keeps the last committed value of each key.
#[test]
fn the_cleaner_drops_aborted_records_and_stops_at_the_lso() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig::builder()
        .segment_bytes(200)
        .compact(true)
        .delete(false)
        .min_cleanable_dirty_ratio(0.0)
        .build()?;
    let log = builder(dir.path()).config(config).open()?;
    let keyed = |pid: i64, seq: i32, value: &str| {
        let mut b = BatchBuilder::new(Compression::None)
            .producer(pid, 0, seq)
            .transactional(true);
        b.append(1_000, Some(b"k"), Some(value.as_bytes()), &[]);
        b.build().expect("builds").to_vec()
    };
    let filler = |i: u32| {
        let mut b = BatchBuilder::new(Compression::None);
        b.append(1_000, Some(format!("f{i}").as_bytes()), Some(&[0; 40]), &[]);
        b.build().expect("builds").to_vec()
    };
    log.append(&mut keyed(1, 0, "committed"), 0)?;
    commit(&log, 1, 0)?;
    log.append(&mut keyed(2, 0, "aborted"), 0)?;
    abort(&log, 2, 0)?;
    log.append(&mut keyed(3, 0, "open"), 0)?;
    for i in 0..6 {
        log.append(&mut filler(i), 0)?;
    }
    assert!(log.segment_count() > 2, "{:?}", log.segment_base_offsets());
    let value_of_k = |log: &Log| -> Result<Vec<String>> {
        // Everything, past the LSO too: what a read_committed reader
        // would see once the open transaction ends.
        let read = log.read_committed(0, 1 << 20, u64::MAX)?;
        Ok(committed_values(&read, 0)?
            .into_iter()
            .map(|(_, v)| v)
            .filter(|v| !v.starts_with('\0'))
            .collect())
    };
    let report = log.clean()?;
    assert_eq!(report.aborted_removed, 1, "{report:?}");
    // The open transaction's record did not supersede the committed one.
    assert_eq!(value_of_k(&log)?, ["committed"]);
    let before_abort = log.read(0, 1 << 20)?.records().len();
    assert!(before_abort > 0);
    abort(&log, 3, 0)?;
    for i in 6..12 {
        log.append(&mut filler(i), 0)?;
    }
    let report = log.clean()?;
    assert_eq!(
        report.aborted_removed, 1,
        "the open one, now aborted: {report:?}"
    );
    assert_eq!(value_of_k(&log)?, ["committed"]);
    Ok(())
}

/// The cleaner keeps each producer's last batch (Kafka does too), so a
/// rebuild of producer state from the cleaned log (here an open that reads
/// every batch) still knows the producer and its last sequence.
#[test]
fn the_cleaner_keeps_each_producers_last_batch() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig::builder()
        .segment_bytes(300)
        .compact(true)
        .delete(false)
        .min_cleanable_dirty_ratio(0.0)
        .build()?;
    let log = builder(dir.path()).config(config.clone()).open()?;
    let keyed = |pid: Option<i64>, seq: i32, value: &str| {
        let mut b = BatchBuilder::new(Compression::None);
        if let Some(pid) = pid {
            b = b.producer(pid, 0, seq);
        }
        b.append(1_000, Some(b"k"), Some(value.as_bytes()), &[]);
        b.build().expect("builds").to_vec()
    };
    log.append(&mut keyed(Some(7), 0, "p0"), 0)?;
    log.append(&mut keyed(Some(7), 1, "p1"), 0)?; // producer 7's last batch
    // (Not at a segment's end, where the cleaner keeps an empty batch in
    // any case.)
    for i in 0..8 {
        log.append(&mut keyed(None, 0, &format!("plain{i}")), 0)?;
    }
    assert!(log.segment_count() > 2);
    let first_segment_end = log.segment_base_offsets()[1];
    assert!(first_segment_end > 2, "p1 is followed by plain batches");
    let report = log.clean()?;
    assert!(report.records_superseded > 0, "{report:?}");
    let producer_batches: Vec<i32> = Batches::new(log.read(0, 1 << 20)?.records().clone())
        .map(|b| b.expect("batch").header().base_sequence)
        .filter(|&s| s >= 0)
        .collect();
    assert_eq!(producer_batches, [1], "p0 cleaned, the last batch kept");
    log.close()?;
    // Recovery point 0: no snapshot, every batch read.
    let log = builder(dir.path()).config(config).open()?;
    assert_eq!(log.recovery_report().producer_snapshot, None);
    log.append(&mut keyed(Some(7), 2, "p2"), 0)?;
    assert!(matches!(
        log.append(&mut keyed(Some(7), 9, "gap"), 0),
        Err(Error::OutOfOrderSequence {
            producer_id: 7,
            expected: 3,
            ..
        })
    ));
    Ok(())
}
