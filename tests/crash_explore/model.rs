//! What the explorer knows about one partition, and the checks it makes
//! after every reopen.
//!
//! Terms:
//! - *acknowledged*: an append that returned `Ok` before the crash;
//! - *promised*: what must survive the next crash: everything a reopen
//!   served (recovery makes what it keeps durable), and the acknowledged
//!   records below the promise bound the flush policy gives (see
//!   [`PartitionModel::bound`]);
//! - *candidates* at an offset: the records that may legitimately be there
//!   after the crash (appended there in this incarnation, or cut there by
//!   a truncation whose shrink may be lost).

use std::collections::{BTreeMap, HashMap, HashSet};

use logbus::format::BatchBuilder;
use logbus::{Compression, LogRead, Result, TruncatedTail};

/// A record as the model holds it. Values are unique within a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rec {
    pub(crate) offset: u64,
    pub(crate) timestamp: i64,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Vec<u8>,
}

/// A record before the log assigned its offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Draft {
    pub(crate) timestamp: i64,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Vec<u8>,
}

impl Draft {
    pub(crate) fn at(&self, offset: u64) -> Rec {
        Rec {
            offset,
            timestamp: self.timestamp,
            key: self.key.clone(),
            value: self.value.clone(),
        }
    }
}

/// One uncompressed batch of `drafts`.
pub(crate) fn build_batch(drafts: &[Draft]) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Compression::None);
    for d in drafts {
        builder.append(d.timestamp, d.key.as_deref(), Some(&d.value), &[]);
    }
    builder.build().expect("build batch").to_vec()
}

/// The tests' small deterministic generator (SplitMix64).
pub(crate) use crate::common::Rng;

impl Rng {
    /// A value in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent` / 100.
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Every record from `start` to `end` through `read` (`Log::read` or
/// `Partition::read`), checking that batches decode and offsets increase.
pub(crate) fn read_served(
    read: impl Fn(u64, usize) -> Result<LogRead>,
    start: u64,
    end: u64,
    compacted: bool,
) -> std::result::Result<Vec<Rec>, String> {
    let mut out: Vec<Rec> = Vec::new();
    let mut next = start;
    while next < end {
        let got = read(next, 64 * 1024).map_err(|e| format!("read({next}) failed: {e}"))?;
        // A compacted log may end with offsets no batch holds (as Kafka's
        // may: segments need not meet, and a power loss can take the
        // batches that ended one): an empty read there means no more
        // records. Elsewhere it is a hole.
        if got.records().is_empty() && compacted {
            break;
        }
        if got.records().is_empty() {
            return Err(format!(
                "read({next}) below the log end {end} returned nothing"
            ));
        }
        let before = next;
        for batch in got.batches() {
            let batch = batch.map_err(|e| format!("a batch read from {next} is invalid: {e}"))?;
            let records = batch
                .records()
                .map_err(|e| format!("records of a batch at {next}: {e}"))?;
            for record in records {
                let record = record.map_err(|e| format!("a record at {next}: {e}"))?;
                let offset = record.offset() as u64;
                if offset < next {
                    continue;
                }
                if let Some(last) = out.last()
                    && offset <= last.offset
                {
                    return Err(format!("offset {offset} served after {}", last.offset));
                }
                out.push(Rec {
                    offset,
                    timestamp: record.timestamp(),
                    key: record.key().map(|k| k.to_vec()),
                    value: record.value().map(|v| v.to_vec()).unwrap_or_default(),
                });
            }
            next = next.max(batch.header().next_offset() as u64);
        }
        if next <= before {
            return Err(format!("reads from {before} make no progress"));
        }
    }
    Ok(out)
}

/// What one successful check covered.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Checked {
    /// Promised records found in place.
    pub(crate) promised: u64,
    /// Acknowledged records the power loss took (not promised; records a
    /// compacted log's cleaner dropped for later ones aside).
    pub(crate) acked_lost: u64,
}

/// What the explorer knows about one partition.
#[derive(Debug, Default)]
pub(crate) struct PartitionModel {
    /// Compacted: the cleaner may drop records superseded by a later
    /// record with the same key, and offsets have gaps.
    pub(crate) compacted: bool,
    /// What reopens served, by offset (durable: recovery syncs what it
    /// keeps). Entries leave only by truncation.
    pub(crate) served: BTreeMap<u64, Rec>,
    /// Acknowledged in this incarnation: the current record at each offset.
    pub(crate) acked: BTreeMap<u64, Rec>,
    /// Records that may be at each offset after the crash.
    pub(crate) candidates: BTreeMap<u64, Vec<Rec>>,
    /// Appends whose outcome is unknown (failed around the crash): their
    /// records may appear at any offset, once.
    pub(crate) unknown: HashMap<Vec<u8>, Draft>,
    /// The policy's promise: acknowledged records below this offset
    /// survive a power loss.
    pub(crate) bound: u64,
    /// Values of records deleted for good (below a log start offset that
    /// was checkpointed, or cut by `truncate_to`, which makes the cut
    /// durable before it returns): never to be served again.
    pub(crate) deleted: HashSet<Vec<u8>>,
    /// The highest log start offset checkpointed: a reopened log that
    /// reaches it starts at or above it.
    pub(crate) persisted_start: u64,
}

impl PartitionModel {
    pub(crate) fn new(compacted: bool) -> Self {
        PartitionModel {
            compacted,
            ..PartitionModel::default()
        }
    }

    /// An acknowledged append.
    pub(crate) fn acked(&mut self, recs: &[Rec]) {
        for r in recs {
            self.acked.insert(r.offset, r.clone());
            self.candidates.entry(r.offset).or_default().push(r.clone());
        }
    }

    /// An append whose offsets are known but whose acknowledgement came
    /// after the crash began: candidates only.
    pub(crate) fn unacked(&mut self, recs: &[Rec]) {
        for r in recs {
            self.candidates.entry(r.offset).or_default().push(r.clone());
        }
    }

    /// An append that failed (around the crash): it may or may not be
    /// there.
    pub(crate) fn unknown(&mut self, drafts: &[Draft]) {
        for d in drafts {
            self.unknown.insert(d.value.clone(), d.clone());
        }
    }

    pub(crate) fn raise_bound(&mut self, offset: u64) {
        self.bound = self.bound.max(offset);
    }

    /// `truncate_to` ended the log at `end`.
    pub(crate) fn truncated(&mut self, end: u64) {
        for (_, r) in self.served.split_off(&end) {
            self.deleted.insert(r.value);
        }
        for (_, rs) in self.candidates.split_off(&end) {
            self.deleted.extend(rs.into_iter().map(|r| r.value));
        }
        self.acked.split_off(&end);
        self.bound = self.bound.min(end);
    }

    /// A log start offset was checkpointed: every record below it is
    /// deleted for good.
    pub(crate) fn start_persisted(&mut self, start: u64) {
        self.persisted_start = self.persisted_start.max(start);
        let below = |m: &BTreeMap<u64, Rec>| -> Vec<Vec<u8>> {
            m.range(..start).map(|(_, r)| r.value.clone()).collect()
        };
        let mut gone = below(&self.served);
        gone.extend(below(&self.acked));
        for (_, rs) in self.candidates.range(..start) {
            gone.extend(rs.iter().map(|r| r.value.clone()));
        }
        self.deleted.extend(gone);
    }

    /// The records that must be there after a crash whose recovery point
    /// (read before it) was `recovery_point`; `everything` after a process
    /// kill or a clean close (the page cache survives).
    pub(crate) fn promised(&self, recovery_point: u64, everything: bool) -> BTreeMap<u64, Rec> {
        let bound = if everything {
            u64::MAX
        } else {
            self.bound.max(recovery_point)
        };
        let mut out = self.served.clone();
        for (o, r) in self.acked.range(..bound) {
            out.insert(*o, r.clone());
        }
        out
    }

    /// Checks what a reopen serves (`now`, from `start` to `end`) against
    /// the model, then makes it the new durable knowledge. `pre_start` is
    /// the log start offset the crashed log had.
    pub(crate) fn check_reopen(
        &mut self,
        now: &[Rec],
        start: u64,
        end: u64,
        pre_start: u64,
        promised: &BTreeMap<u64, Rec>,
    ) -> std::result::Result<Checked, String> {
        if start > end {
            return Err(format!("log start {start} above log end {end}"));
        }
        if start > pre_start {
            return Err(format!(
                "the reopened log starts at {start}, after the crashed log's start {pre_start}: \
                 not a prefix"
            ));
        }
        if end >= self.persisted_start && start < self.persisted_start {
            return Err(format!(
                "the reopened log starts at {start}, below the checkpointed log start {}",
                self.persisted_start
            ));
        }
        if let Some(first) = now.first()
            && first.offset < start
        {
            return Err(format!(
                "offset {} served below the log start {start}",
                first.offset
            ));
        }
        if let Some(last) = now.last()
            && last.offset >= end
        {
            return Err(format!(
                "offset {} served at or past the log end {end}",
                last.offset
            ));
        }
        if !self.compacted {
            for (i, r) in now.iter().enumerate() {
                if r.offset != start + i as u64 {
                    return Err(format!(
                        "a gap: offset {} served where {} was due",
                        r.offset,
                        start + i as u64
                    ));
                }
            }
            if now.len() as u64 != end - start {
                return Err(format!(
                    "{} records served between {start} and {end}",
                    now.len()
                ));
            }
        }
        let mut values = HashSet::new();
        let mut unknown_used = HashSet::new();
        for r in now {
            if !values.insert(r.value.clone()) {
                return Err(format!("record {} served twice", show(r)));
            }
            if self.deleted.contains(&r.value) {
                return Err(format!(
                    "record {} served again after it was deleted (below a checkpointed log start, \
                     or cut by a truncation)",
                    show(r)
                ));
            }
            if let Some(before) = self.served.get(&r.offset) {
                if before != r {
                    return Err(format!(
                        "offset {} served as {} after an earlier reopen served {}",
                        r.offset,
                        show(r),
                        show(before)
                    ));
                }
                continue;
            }
            let candidate = self
                .candidates
                .get(&r.offset)
                .is_some_and(|c| c.contains(r));
            if candidate {
                continue;
            }
            if let Some(d) = self.unknown.get(&r.value)
                && d.at(r.offset) == *r
                && unknown_used.insert(r.value.clone())
            {
                continue;
            }
            return Err(format!(
                "offset {} holds {}, which was never appended there",
                r.offset,
                show(r)
            ));
        }
        let by_offset: BTreeMap<u64, &Rec> = now.iter().map(|r| (r.offset, r)).collect();
        for (o, r) in promised.range(start..) {
            match by_offset.get(o) {
                Some(got) if *got == r => {}
                None if self.compacted && superseded(r, now) => {}
                Some(got) => {
                    return Err(format!(
                        "offset {o}: promised {} but {} is there",
                        show(r),
                        show(got)
                    ));
                }
                None => {
                    // A compacted log: was it dropped for a later record
                    // of its key that did not survive?
                    let later = self
                        .candidates
                        .range(o + 1..)
                        .flat_map(|(_, rs)| rs)
                        .chain(self.served.range(o + 1..).map(|(_, r)| r))
                        .find(|n| self.compacted && n.key.is_some() && n.key == r.key);
                    let why = later.map_or(String::new(), |n| {
                        format!("; a later record of its key, {}, is gone too", show(n))
                    });
                    return Err(format!(
                        "promised record {} lost (log now [{start}, {end})){why}",
                        show(r)
                    ));
                }
            }
        }
        let served: HashSet<&[u8]> = now.iter().map(|r| r.value.as_slice()).collect();
        Ok(Checked {
            promised: promised.range(start..).count() as u64,
            acked_lost: self
                .acked
                .range(start..)
                .filter(|(_, r)| {
                    let cleaned = self.compacted && superseded(r, now);
                    !(served.contains(r.value.as_slice()) || cleaned)
                })
                .count() as u64,
        })
    }

    /// After a successful check: what was served is durable knowledge now;
    /// the new incarnation starts with nothing in flight.
    pub(crate) fn reopened(&mut self, now: &[Rec], end: u64) {
        for r in now {
            self.served.insert(r.offset, r.clone());
        }
        // Offsets at or past the new end hold nothing any more.
        self.served.split_off(&end);
        // A log that recovered to below its checkpointed start restarts
        // at its end.
        self.persisted_start = self.persisted_start.min(end);
        self.acked.clear();
        self.candidates.clear();
        self.unknown.clear();
        self.bound = 0;
    }
}

/// Whether the served log holds a later record with the key of `r` (the
/// cleaner may have dropped `r`).
fn superseded(r: &Rec, now: &[Rec]) -> bool {
    r.key.is_some() && now.iter().any(|n| n.offset > r.offset && n.key == r.key)
}

/// A short description of a record.
pub(crate) fn show(r: &Rec) -> String {
    let value = String::from_utf8_lossy(&r.value);
    let value: String = value.chars().take(24).collect();
    let key = r.key.as_ref().map_or_else(
        || "-".to_string(),
        |k| String::from_utf8_lossy(k).into_owned(),
    );
    format!("@{} key {key} value {value:?}", r.offset)
}

/// Checks that a reported cut agrees with what the reopened log holds: the
/// cut file ends where the report says, the removed segments are gone, the
/// log ends at the first lost offset, at or above the recovery point
/// (`recovery_point`: the one the owner passed, when known).
pub(crate) fn check_cut(
    cut: &TruncatedTail,
    end: u64,
    recovery_point: Option<u64>,
) -> std::result::Result<(), String> {
    let len = std::fs::metadata(&cut.path).map(|m| m.len()).ok();
    let mut wrong = Vec::new();
    if len != Some(cut.position) {
        wrong.push(format!("the cut file is {len:?} bytes long"));
    }
    if let Some(gone) = cut.removed_segments.iter().find(|p| p.exists()) {
        wrong.push(format!("{} was reported removed", gone.display()));
    }
    if cut.first_lost_offset != end {
        wrong.push(format!(
            "the log ends at {end}, not at the first lost offset"
        ));
    }
    if cut.first_lost_offset < cut.recovery_point {
        wrong.push("the cut lies below the recovery point".into());
    }
    if let Some(rp) = recovery_point
        && rp != cut.recovery_point
    {
        wrong.push(format!("the log was opened with recovery point {rp}"));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("implausible cut {cut:?}: {}", wrong.join("; ")))
    }
}
