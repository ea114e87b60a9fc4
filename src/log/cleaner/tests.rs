//! The cleaner and transaction markers (Kafka's `CleanedTransactionMetadata`
//! rules): a marker stays while a batch of its transaction is left, and
//! goes `delete.retention.ms` after the first pass that found it
//! removable; an ABORT marker's `.txnindex` entry goes with its data.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use crate::format::{BatchBuilder, ControlRecordType};
use crate::{AbortedTransaction, Compression, Log, LogConfig, LogRead, ManualClock, Result};

/// `delete.retention.ms` of the tests' logs.
const RETENTION: i64 = 100_000;
/// `segment.ms`: [`Fixture::roll`] moves the clock past it so the next
/// append starts a new segment.
const SEGMENT_MS: i64 = 100;
const START_MS: i64 = 1_000_000;

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig::builder()
        .segment_bytes(segment_bytes)
        .segment_time(Some(Duration::from_millis(SEGMENT_MS as u64)))
        .retention_time(None)
        .compact(true)
        .delete(false)
        .delete_retention(Duration::from_millis(RETENTION as u64))
        .min_cleanable_dirty_ratio(0.0)
        .build()
        .expect("config")
}

struct Fixture {
    dir: tempfile::TempDir,
    clock: ManualClock,
    log: Log,
    segment_bytes: u64,
}

/// A value: `None` is a tombstone.
type Value<'a> = Option<&'a str>;

impl Fixture {
    fn new(segment_bytes: u64) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new(START_MS);
        let log = open(dir.path(), &clock, segment_bytes);
        Fixture {
            dir,
            clock,
            log,
            segment_bytes,
        }
    }

    fn now(&self) -> i64 {
        crate::Clock::now_ms(&self.clock)
    }

    /// Appends one batch of `records` (producer `pid`'s transactional batch
    /// at `epoch` and sequence `seq`, or a plain one); its first offset.
    fn write(
        &self,
        producer: Option<(i64, i16, i32)>,
        records: &[(&str, Value<'_>)],
    ) -> Result<u64> {
        let now = self.now();
        let mut builder = BatchBuilder::new(Compression::None);
        if let Some((pid, epoch, seq)) = producer {
            builder = builder.producer(pid, epoch, seq).transactional(true);
        }
        for (key, value) in records {
            builder.append(now, Some(key.as_bytes()), value.map(str::as_bytes), &[]);
        }
        let mut bytes = builder.build().expect("a small batch builds").to_vec();
        Ok(self.log.append(&mut bytes, 0)?.first_offset())
    }

    fn marker(&self, pid: i64, epoch: i16, commit: bool) -> Result<u64> {
        let kind = if commit {
            ControlRecordType::Commit
        } else {
            ControlRecordType::Abort
        };
        Ok(self.log.append_marker(pid, epoch, kind, 0)?.first_offset())
    }

    /// The next append starts a new segment.
    fn roll(&self) {
        self.clock.advance_ms(SEGMENT_MS * 2);
    }

    /// Reopens the log with no producer snapshot and no recovery point:
    /// producer state and `.txnindex` files rebuilt from the batches.
    fn reopen_from_scratch(self) -> Result<Self> {
        let Fixture {
            dir,
            clock,
            log,
            segment_bytes,
        } = self;
        log.close()?;
        for entry in std::fs::read_dir(dir.path()).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "snapshot") {
                std::fs::remove_file(path).expect("remove snapshot");
            }
        }
        let log = open(dir.path(), &clock, segment_bytes);
        Ok(Fixture {
            dir,
            clock,
            log,
            segment_bytes,
        })
    }
}

fn open(dir: &Path, clock: &ManualClock, segment_bytes: u64) -> Log {
    Log::builder(dir)
        .config(config(segment_bytes))
        .clock(Arc::new(clock.clone()))
        .open()
        .expect("the log opens")
}

/// One control batch as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Marker {
    offset: u64,
    producer_id: i64,
    records: i32,
    horizon: Option<i64>,
}

/// Every batch of the log from its start, in offset order.
fn batches(log: &Log) -> Result<Vec<crate::format::Batch>> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    while next < log.log_end_offset() {
        let read = log.read(next, 1 << 20)?;
        let before = next;
        for batch in read.batches() {
            let batch = batch?;
            let end = batch.header().next_offset() as u64;
            if end > next {
                next = end;
                out.push(batch);
            }
        }
        assert!(
            next > before,
            "a read at {before} below the log end moves on"
        );
    }
    Ok(out)
}

fn markers(log: &Log) -> Result<Vec<Marker>> {
    Ok(batches(log)?
        .iter()
        .map(|b| *b.header())
        .filter(|h| h.is_control())
        .map(|h| Marker {
            offset: h.base_offset as u64,
            producer_id: h.producer_id,
            records: h.records_count,
            horizon: h.has_delete_horizon().then_some(h.base_timestamp),
        })
        .collect())
}

fn marker_offsets(log: &Log) -> Result<Vec<u64>> {
    Ok(markers(log)?
        .into_iter()
        .filter(|m| m.records > 0)
        .map(|m| m.offset)
        .collect())
}

/// What a read_committed consumer (Kafka's fetcher) gets, in steps of one
/// batch from the log start up to the last stable offset: (offset, key,
/// value) of every record neither aborted nor control.
fn read_committed(log: &Log) -> Result<Vec<(u64, String, Option<String>)>> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    let lso = log.last_stable_offset();
    while next < lso {
        let read = log.read_committed(next, 1, u64::MAX)?;
        let end = committed_records(&read, next, &mut out)?;
        assert!(end > next, "a read below the LSO at {next} returns a batch");
        next = end;
    }
    Ok(out)
}

/// Appends the committed records of `read` at or after `from` to `out`;
/// returns the offset after its last batch.
fn committed_records(
    read: &LogRead,
    from: u64,
    out: &mut Vec<(u64, String, Option<String>)>,
) -> Result<u64> {
    let mut aborted: Vec<AbortedTransaction> = read
        .aborted_transactions()
        .expect("a read_committed read lists aborted transactions")
        .to_vec();
    aborted.sort_by_key(|t| t.first_offset);
    let mut aborted = aborted.into_iter().peekable();
    let mut skipping = BTreeSet::new();
    let mut end = from;
    for batch in read.batches() {
        let batch = batch?;
        let h = *batch.header();
        end = end.max(h.next_offset() as u64);
        while let Some(t) = aborted.next_if(|t| t.first_offset <= h.last_offset() as u64) {
            skipping.insert(t.producer_id);
        }
        if h.is_control() {
            // Kafka's `containsAbortMarker`: an ABORT record ends the
            // producer's aborted transaction; an empty batch does not.
            let first = batch.records()?.next().transpose()?;
            if let Some(record) = first
                && let Some(key) = record.key()
                && crate::format::control::decode_control_key(key)
                    == Ok(crate::format::control::ControlType::Abort)
            {
                skipping.remove(&h.producer_id);
            }
            continue;
        }
        if h.is_transactional() && skipping.contains(&h.producer_id) {
            continue;
        }
        for record in batch.records()? {
            let record = record?;
            let offset = record.offset() as u64;
            if offset >= from {
                let text = |b: &[u8]| String::from_utf8(b.to_vec()).expect("utf-8");
                out.push((
                    offset,
                    text(record.key().expect("keyed")),
                    record.value().map(|v| text(v)),
                ));
            }
        }
    }
    Ok(end)
}

/// The latest value of each key a read_committed reader sees (a tombstone
/// leaves the key out).
fn latest(log: &Log) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (_, key, value) in read_committed(log)? {
        match value {
            Some(v) => out.insert(key, v),
            None => out.remove(&key),
        };
    }
    Ok(out)
}

#[test]
fn a_commit_marker_goes_after_its_data_and_its_delete_horizon() -> Result<()> {
    let f = Fixture::new(1 << 20);
    let a = f.write(Some((1, 0, 0)), &[("k1", Some("a"))])?;
    let c1 = f.marker(1, 0, true)?;
    // Producer 1's last batch (kept whole for its sequence), and its marker.
    f.write(Some((1, 0, 1)), &[("k2", Some("b"))])?;
    let c2 = f.marker(1, 0, true)?;
    f.write(None, &[("k1", Some("z"))])?;
    f.write(None, &[("end", Some("e"))])?;
    f.roll();
    f.write(None, &[("active", Some("x"))])?;
    assert_eq!(f.log.segment_count(), 2);
    let view = latest(&f.log)?;

    // Pass 1: "a" goes; its batch was met in this pass, so C1 stays.
    let report = f.log.clean()?;
    assert_eq!(
        (report.records_superseded, report.markers_removed),
        (1, 0),
        "{report:?}"
    );
    assert_eq!(marker_offsets(&f.log)?, [c1, c2]);
    assert!(markers(&f.log)?.iter().all(|m| m.horizon.is_none()));
    assert!(read_committed(&f.log)?.iter().all(|r| r.0 != a));

    // Pass 2: nothing of C1's transaction is left: C1 gets its horizon.
    let report = f.log.clean()?;
    assert_eq!(report.markers_removed, 0, "{report:?}");
    let stamped = markers(&f.log)?;
    assert_eq!(stamped.len(), 2);
    assert_eq!(stamped[0].offset, c1);
    assert_eq!(stamped[0].horizon, Some(f.now() + RETENTION));
    assert_eq!(stamped[1].horizon, None, "C2's transaction has a record");
    let horizon = stamped[0].horizon.expect("stamped");

    // Before the horizon: kept (a pass changes nothing).
    f.clock.set_ms(horizon - 1);
    let report = f.log.clean()?;
    assert_eq!(
        (report.segments_cleaned, report.markers_removed),
        (0, 0),
        "{report:?}"
    );
    assert_eq!(marker_offsets(&f.log)?, [c1, c2]);

    // At the horizon: C1 goes; C2 stays for good.
    f.clock.set_ms(horizon);
    let report = f.log.clean()?;
    assert_eq!(report.markers_removed, 1, "{report:?}");
    assert_eq!(marker_offsets(&f.log)?, [c2]);
    f.clock.advance_ms(10 * RETENTION);
    for _ in 0..2 {
        f.log.clean()?;
    }
    assert_eq!(marker_offsets(&f.log)?, [c2]);
    assert_eq!(latest(&f.log)?, view);
    Ok(())
}

/// The transactional offset commits of `__consumer_offsets` are applied at
/// their COMMIT marker when the coordinator replays the log: a marker whose
/// transaction still has a record must never go.
#[test]
fn a_marker_whose_transaction_still_has_a_record_stays() -> Result<()> {
    let mut f = Fixture::new(1 << 20);
    // One batch, two keys: "k1" is superseded below, "k2" never is.
    f.write(Some((1, 0, 0)), &[("k1", Some("a")), ("k2", Some("b"))])?;
    let c1 = f.marker(1, 0, true)?;
    // Two transactions in one: batches from two keys, one superseded whole.
    f.write(Some((2, 0, 0)), &[("k3", Some("c"))])?;
    f.write(Some((2, 0, 1)), &[("k4", Some("d"))])?;
    let c2 = f.marker(2, 0, true)?;
    f.write(None, &[("k1", Some("z")), ("k3", Some("y"))])?;
    // Later transactions of both producers (their last batches).
    f.write(Some((1, 0, 2)), &[("k5", Some("e"))])?;
    let c3 = f.marker(1, 0, true)?;
    f.write(Some((2, 0, 2)), &[("k6", Some("f"))])?;
    let c4 = f.marker(2, 0, true)?;
    f.write(None, &[("end", Some("e"))])?;
    f.roll();
    f.write(None, &[("active", Some("x"))])?;
    let view = latest(&f.log)?;
    for _ in 0..3 {
        f.log.clean()?;
        f.clock.advance_ms(2 * RETENTION);
    }
    let report = f.log.clean()?;
    assert_eq!(report.markers_removed, 0, "{report:?}");
    assert_eq!(marker_offsets(&f.log)?, [c1, c2, c3, c4]);
    assert!(markers(&f.log)?.iter().all(|m| m.horizon.is_none()));
    assert_eq!(latest(&f.log)?, view);
    f = f.reopen_from_scratch()?;
    assert_eq!(f.log.last_stable_offset(), f.log.log_end_offset());
    assert_eq!(latest(&f.log)?, view);
    Ok(())
}

#[test]
fn an_abort_marker_and_its_txnindex_entry_go_after_its_data() -> Result<()> {
    let mut f = Fixture::new(1 << 20);
    let first = f.write(Some((1, 0, 0)), &[("k1", Some("aborted"))])?;
    let a1 = f.marker(1, 0, false)?;
    f.write(Some((1, 0, 1)), &[("k2", Some("b"))])?;
    let c2 = f.marker(1, 0, true)?;
    f.write(None, &[("end", Some("e"))])?;
    f.roll();
    f.write(None, &[("active", Some("x"))])?;
    let entry = [AbortedTransaction {
        producer_id: 1,
        first_offset: first,
    }];
    assert_eq!(f.log.aborted_transactions(0, u64::MAX), entry);
    let view = latest(&f.log)?;

    // Pass 1: the aborted record goes; marker and entry stay this pass.
    let report = f.log.clean()?;
    assert_eq!(
        (report.aborted_removed, report.markers_removed),
        (1, 0),
        "{report:?}"
    );
    assert_eq!(f.log.aborted_transactions(0, u64::MAX), entry);
    assert_eq!(marker_offsets(&f.log)?, [a1, c2]);

    // Pass 2: no batch of it left: the entry goes, the marker is stamped.
    f.log.clean()?;
    assert_eq!(f.log.aborted_transactions(0, u64::MAX), []);
    let stamped = markers(&f.log)?;
    assert_eq!(stamped[0].offset, a1);
    let horizon = stamped[0].horizon.expect("stamped");
    assert_eq!(latest(&f.log)?, view);

    f.clock.set_ms(horizon);
    let report = f.log.clean()?;
    assert_eq!(report.markers_removed, 1, "{report:?}");
    assert_eq!(marker_offsets(&f.log)?, [c2]);
    assert_eq!(latest(&f.log)?, view);

    // Rebuilt from the batches: no entry, no transaction left open.
    f = f.reopen_from_scratch()?;
    assert_eq!(f.log.aborted_transactions(0, u64::MAX), []);
    assert_eq!(f.log.last_stable_offset(), f.log.log_end_offset());
    assert_eq!(latest(&f.log)?, view);
    Ok(())
}

/// An aborted batch that is its producer's last is kept, emptied (Kafka's
/// `RETAIN_EMPTY`): it still counts as a batch of its transaction, so the
/// ABORT marker and its entry stay, and a rebuild closes the transaction.
#[test]
fn an_abort_marker_after_the_producers_last_batch_stays() -> Result<()> {
    let mut f = Fixture::new(1 << 20);
    let first = f.write(Some((1, 0, 0)), &[("k1", Some("aborted"))])?;
    let a1 = f.marker(1, 0, false)?;
    f.write(None, &[("end", Some("e"))])?;
    f.roll();
    f.write(None, &[("active", Some("x"))])?;
    for _ in 0..3 {
        f.log.clean()?;
        f.clock.advance_ms(2 * RETENTION);
    }
    assert_eq!(marker_offsets(&f.log)?, [a1]);
    let entry = [AbortedTransaction {
        producer_id: 1,
        first_offset: first,
    }];
    assert_eq!(f.log.aborted_transactions(0, u64::MAX), entry);
    let kept: Vec<_> = batches(&f.log)?
        .iter()
        .map(|b| *b.header())
        .filter(|h| h.producer_id == 1 && !h.is_control())
        .map(|h| (h.base_offset as u64, h.records_count))
        .collect();
    assert_eq!(kept, [(first, 0)], "emptied, kept");
    f = f.reopen_from_scratch()?;
    assert_eq!(f.log.aborted_transactions(0, u64::MAX), entry);
    assert_eq!(f.log.last_stable_offset(), f.log.log_end_offset());
    Ok(())
}

/// A producer whose last write is a marker that bumped its epoch (no data
/// batch in its current epoch): Kafka keeps its markers of that epoch, and
/// empties one once it is removable and past its horizon.
#[test]
fn a_marker_that_is_its_producers_last_write_is_emptied_not_removed() -> Result<()> {
    let f = Fixture::new(1 << 20);
    f.write(Some((1, 0, 0)), &[("k1", Some("aborted"))])?;
    // The coordinator aborted it with a bumped epoch (a timeout).
    let a1 = f.marker(1, 1, false)?;
    f.write(None, &[("end", Some("e"))])?;
    f.roll();
    f.write(None, &[("active", Some("x"))])?;
    f.log.clean()?;
    f.log.clean()?;
    assert_eq!(f.log.aborted_transactions(0, u64::MAX), []);
    let horizon = markers(&f.log)?[0].horizon.expect("stamped");
    f.clock.set_ms(horizon);
    let report = f.log.clean()?;
    assert_eq!(report.markers_removed, 1, "{report:?}");
    let kept = markers(&f.log)?;
    assert_eq!(kept.len(), 1);
    assert_eq!((kept[0].offset, kept[0].records), (a1, 0));
    let header = *batches(&f.log)?
        .iter()
        .find(|b| b.header().is_control())
        .expect("kept")
        .header();
    assert_eq!((header.producer_id, header.producer_epoch), (1, 1));
    // Later passes keep the empty batch as it is.
    let report = f.log.clean()?;
    assert_eq!(report.segments_cleaned, 0, "{report:?}");
    Ok(())
}

/// Nothing at or above the last stable offset is cleaned: the markers of
/// transactions completed after an open one stay untouched.
#[test]
fn markers_past_the_last_stable_offset_are_untouched() -> Result<()> {
    let f = Fixture::new(1 << 20);
    f.write(Some((1, 0, 0)), &[("k1", Some("a"))])?;
    f.marker(1, 0, true)?;
    f.write(None, &[("k1", Some("z"))])?;
    f.write(Some((1, 0, 1)), &[("k9", Some("q"))])?;
    let c1b = f.marker(1, 0, true)?;
    f.roll();
    // Producer 2's transaction stays open.
    let open = f.write(Some((2, 0, 0)), &[("k2", Some("open"))])?;
    let c = f.write(Some((3, 0, 0)), &[("k3", Some("c"))])?;
    let c3 = f.marker(3, 0, true)?;
    f.roll();
    f.write(None, &[("k3", Some("y"))])?;
    f.roll();
    f.write(None, &[("active", Some("x"))])?;
    assert_eq!(f.log.last_stable_offset(), open);
    for _ in 0..3 {
        f.log.clean()?;
        f.clock.advance_ms(2 * RETENTION);
    }
    assert_eq!(
        marker_offsets(&f.log)?,
        [c1b, c3],
        "the first marker went, C3 is past the LSO"
    );
    assert!(markers(&f.log)?.iter().all(|m| m.horizon.is_none()));
    let left: Vec<u64> = batches(&f.log)?
        .iter()
        .map(|b| b.header().base_offset as u64)
        .collect();
    assert!(left.contains(&c), "superseded, but past the LSO: {left:?}");
    Ok(())
}

// ---- the model -------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    /// A transactional batch from producer `pid` (opens its transaction).
    Txn { pid: usize, keys: Vec<(u8, bool)> },
    /// A plain batch.
    Plain { keys: Vec<(u8, bool)> },
    /// Producer `pid`'s marker (with or without an open transaction).
    End { pid: usize, commit: bool },
    /// A cleaning pass.
    Clean,
    /// The clock moves on.
    Advance { ms: i64 },
}

fn op() -> impl Strategy<Value = Op> {
    let keys = prop::collection::vec((0u8..5, prop::bool::weighted(0.15)), 1..3);
    prop_oneof![
        4 => (0usize..3, keys.clone()).prop_map(|(pid, keys)| Op::Txn { pid, keys }),
        2 => keys.prop_map(|keys| Op::Plain { keys }),
        3 => (0usize..3, any::<bool>()).prop_map(|(pid, commit)| Op::End { pid, commit }),
        2 => Just(Op::Clean),
        1 => (0..2 * RETENTION).prop_map(|ms| Op::Advance { ms }),
    ]
}

/// A transaction as written: producer, its data batches' records, and its
/// marker's offset once written.
#[derive(Debug, Default)]
struct Txn {
    pid: i64,
    records: Vec<u64>,
    marker: Option<u64>,
    commit: bool,
}

struct Model {
    seq: [i32; 3],
    open: [Option<usize>; 3],
    txns: Vec<Txn>,
    value_id: u32,
}

/// Checks the invariants after a pass: a read_committed reader sees the
/// same latest value of each key as before it, no marker of a transaction
/// with a record left went, and each aborted transaction with a record
/// left still has its `.txnindex` entry.
fn check(f: &Fixture, model: &Model, view: &BTreeMap<String, String>) -> Result<()> {
    assert_eq!(&latest(&f.log)?, view, "the read_committed view changed");
    let all = batches(&f.log)?;
    let mut records = BTreeSet::new();
    let mut kept_markers = BTreeSet::new();
    for batch in &all {
        if batch.header().is_control() {
            if batch.header().records_count > 0 {
                kept_markers.insert(batch.header().base_offset as u64);
            }
            continue;
        }
        for record in batch.records()? {
            records.insert(record?.offset() as u64);
        }
    }
    let entries: BTreeSet<(i64, u64)> = f
        .log
        .aborted_transactions(0, u64::MAX)
        .into_iter()
        .map(|t| (t.producer_id, t.first_offset))
        .collect();
    for txn in &model.txns {
        let (Some(marker), Some(&first)) = (txn.marker, txn.records.first()) else {
            continue;
        };
        if txn.records.iter().any(|r| records.contains(r)) {
            assert!(
                kept_markers.contains(&marker),
                "the marker at {marker} went while its transaction {txn:?} has a record"
            );
            if !txn.commit {
                assert!(
                    entries.contains(&(txn.pid, first)),
                    "the .txnindex entry of {txn:?} went while it has a record: {entries:?}"
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn cleaning_keeps_the_committed_view_and_the_markers_it_needs(
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let mut f = Fixture::new(400);
        let mut model = Model { seq: [0; 3], open: [None; 3], txns: Vec::new(), value_id: 0 };
        let value = |model: &mut Model| {
            model.value_id += 1;
            format!("v{}", model.value_id)
        };
        for op in ops {
            match op {
                Op::Txn { pid, keys } => {
                    let values: Vec<(String, Option<String>)> = keys
                        .iter()
                        .map(|&(k, tomb)| (format!("k{k}"), (!tomb).then(|| value(&mut model))))
                        .collect();
                    let records: Vec<(&str, Value<'_>)> =
                        values.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
                    let id = pid as i64 + 1;
                    let first = f.write(Some((id, 0, model.seq[pid])), &records).expect("append");
                    model.seq[pid] += records.len() as i32;
                    let txn = *model.open[pid].get_or_insert_with(|| {
                        model.txns.push(Txn { pid: id, ..Txn::default() });
                        model.txns.len() - 1
                    });
                    model.txns[txn].records.extend(first..first + records.len() as u64);
                }
                Op::Plain { keys } => {
                    let values: Vec<(String, Option<String>)> = keys
                        .iter()
                        .map(|&(k, tomb)| (format!("k{k}"), (!tomb).then(|| value(&mut model))))
                        .collect();
                    let records: Vec<(&str, Value<'_>)> =
                        values.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
                    f.write(None, &records).expect("append");
                }
                Op::End { pid, commit } => {
                    let offset = f.marker(pid as i64 + 1, 0, commit).expect("marker");
                    if let Some(txn) = model.open[pid].take() {
                        model.txns[txn].marker = Some(offset);
                        model.txns[txn].commit = commit;
                    }
                }
                Op::Clean => {
                    let view = latest(&f.log).expect("read");
                    f.log.clean().expect("clean");
                    check(&f, &model, &view).expect("check");
                }
                Op::Advance { ms } => f.clock.advance_ms(ms),
            }
        }
        // Every transaction ends; passes until the horizons pass.
        for pid in 0..3 {
            if let Some(txn) = model.open[pid].take() {
                let offset = f.marker(pid as i64 + 1, 0, false).expect("marker");
                model.txns[txn].marker = Some(offset);
            }
        }
        f.roll();
        f.write(None, &[("last", Some("x"))]).expect("append");
        let view = latest(&f.log).expect("read");
        for _ in 0..3 {
            f.log.clean().expect("clean");
            check(&f, &model, &view).expect("check");
            f.clock.advance_ms(RETENTION);
        }
        // Rebuilt from the cleaned batches: the same view, no transaction
        // left open.
        f = f.reopen_from_scratch().expect("reopen");
        prop_assert_eq!(f.log.last_stable_offset(), f.log.log_end_offset());
        prop_assert_eq!(latest(&f.log).expect("read"), view);
    }
}
