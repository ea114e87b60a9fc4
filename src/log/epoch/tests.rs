use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::format::{self, BatchBuilder};
use crate::storage::{FaultKind, FaultOp, FaultyStorage, Tear};
use crate::{Compression, Error, Log, LogConfig};

fn cache(entries: &[(i32, u64)]) -> LeaderEpochCache {
    let mut cache = LeaderEpochCache::default();
    for &(epoch, offset) in entries {
        cache.assign(epoch, offset);
    }
    cache
}

fn pairs(cache: &LeaderEpochCache) -> Vec<(i32, u64)> {
    cache
        .entries()
        .iter()
        .map(|e| (e.epoch, e.start_offset))
        .collect()
}

fn answer(epoch: i32, end_offset: i64) -> EpochEndOffset {
    EpochEndOffset { epoch, end_offset }
}

// ---- The cache's rules (Kafka's LeaderEpochFileCache) ----

#[test]
fn assign_keeps_the_first_start_of_an_epoch_and_ignores_later_batches_of_it() {
    let mut c = cache(&[(2, 6)]);
    assert!(!c.assign(2, 7), "another batch of the latest epoch");
    assert!(!c.assign(2, 10));
    assert_eq!(pairs(&c), [(2, 6)]);
    // The same epoch at an earlier offset moves its start down.
    assert!(c.assign(2, 4));
    assert_eq!(pairs(&c), [(2, 4)]);
}

#[test]
fn assign_removes_conflicting_later_entries_as_kafka_does() {
    // A newer epoch at the same start offset replaces the old one.
    assert_eq!(pairs(&cache(&[(2, 9), (3, 9)])), [(3, 9)]);
    // A newer epoch at a lower offset removes entries starting at or above it.
    assert_eq!(pairs(&cache(&[(2, 6), (3, 5)])), [(3, 5)]);
    // A lower epoch at a later offset removes the higher epochs (Kafka's
    // monotonicity rule): epoch 1 is latest again.
    let c = cache(&[(1, 5), (2, 6), (1, 7)]);
    assert_eq!(pairs(&c), [(1, 7)]);
    assert_eq!(c.latest_epoch(), Some(1));
    // The latest epoch at an earlier offset drops later entries too.
    let c = cache(&[(5, 11), (6, 12), (7, 13), (7, 12)]);
    assert_eq!(pairs(&c), [(5, 11), (7, 12)]);
    assert_eq!(c.end_offset_for(5, 0), answer(5, 12));
    assert_eq!(c.end_offset_for(6, 0), answer(5, 12));
}

#[test]
fn assign_ignores_entries_without_an_epoch_or_beyond_kafka_offsets() {
    let mut c = cache(&[(1, 0)]);
    assert!(!c.assign(-1, 5));
    assert!(!c.assign(UNDEFINED_EPOCH, 0));
    assert!(!c.assign(2, i64::MAX as u64 + 1));
    assert_eq!(pairs(&c), [(1, 0)]);
    assert!(c.assign(2, i64::MAX as u64));
}

#[test]
fn end_offset_for_follows_kafka_in_every_case() {
    let empty = LeaderEpochCache::default();
    assert_eq!(empty.end_offset_for(0, 0), EpochEndOffset::UNDEFINED);
    assert_eq!(empty.end_offset_for(7, 73), EpochEndOffset::UNDEFINED);
    assert_eq!(
        empty.end_offset_for(UNDEFINED_EPOCH, 73),
        EpochEndOffset::UNDEFINED
    );

    let c = cache(&[(0, 10), (2, 13), (4, 17)]);
    // Undefined asked: undefined, even with entries.
    assert_eq!(
        c.end_offset_for(UNDEFINED_EPOCH, 20),
        EpochEndOffset::UNDEFINED
    );
    // The latest epoch: the log end offset.
    assert_eq!(c.end_offset_for(4, 20), answer(4, 20));
    // A known earlier epoch: the next epoch's start.
    assert_eq!(c.end_offset_for(0, 20), answer(0, 13));
    assert_eq!(c.end_offset_for(2, 20), answer(2, 17));
    // An unknown epoch between two known ones: the epoch below it, and the
    // start of the one above it.
    assert_eq!(c.end_offset_for(1, 20), answer(0, 13));
    assert_eq!(c.end_offset_for(3, 20), answer(2, 17));
    // Below every known epoch: the one asked, and the first start offset.
    let c = cache(&[(5, 11), (6, 12), (7, 13)]);
    assert_eq!(c.end_offset_for(4, 0), answer(4, 11));
    // Newer than the latest: undefined.
    assert_eq!(c.end_offset_for(8, 100), EpochEndOffset::UNDEFINED);
    // A negative epoch other than UNDEFINED_EPOCH is below every epoch, as
    // in Kafka.
    assert_eq!(c.end_offset_for(-5, 100), answer(-5, 11));
}

#[test]
fn end_offsets_track_epochs_as_leadership_moves() {
    let mut c = cache(&[(0, 0), (1, 0)]);
    assert_eq!(pairs(&c), [(1, 0)]);
    assert_eq!(c.end_offset_for(1, 0), answer(1, 0));
    assert_eq!(c.end_offset_for(0, 0), answer(0, 0));
    assert_eq!(c.end_offset_for(1, 5), answer(1, 5));
    c.assign(2, 5);
    assert_eq!(c.end_offset_for(2, 10), answer(2, 10));
    assert_eq!(c.end_offset_for(1, 10), answer(1, 5));
    assert_eq!(c.end_offset_for(0, 10), answer(0, 0));
}

#[test]
fn truncate_from_end_drops_entries_starting_at_or_after_the_end() {
    let mut c = cache(&[(2, 6), (3, 8), (4, 11)]);
    assert!(!c.truncate_from_end(12));
    assert!(c.truncate_from_end(9));
    assert_eq!(pairs(&c), [(2, 6), (3, 8)]);
    assert!(c.truncate_from_end(8));
    assert_eq!(pairs(&c), [(2, 6)]);
    assert!(c.truncate_from_end(0));
    assert!(c.entries().is_empty());
    assert!(!c.truncate_from_end(7), "an empty cache stays empty");
}

#[test]
fn truncate_from_start_keeps_the_epoch_covering_the_new_start() {
    let base = [(2, 6), (3, 8), (4, 11)];
    let cut = |start: u64| {
        let mut c = cache(&base);
        let changed = c.truncate_from_start(start);
        (changed, pairs(&c))
    };
    assert_eq!(cut(1), (false, base.to_vec()), "below every entry");
    assert_eq!(cut(6), (false, base.to_vec()), "at the first start");
    assert_eq!(cut(8), (true, vec![(3, 8), (4, 11)]));
    assert_eq!(cut(9), (true, vec![(3, 9), (4, 11)]));
    assert_eq!(cut(11), (true, vec![(4, 11)]));
    assert_eq!(cut(15), (true, vec![(4, 15)]), "past the latest start");
    let mut c = cache(&[(0, 0), (1, 7), (2, 10)]);
    assert!(c.truncate_from_start(5));
    assert_eq!(pairs(&c), [(0, 5), (1, 7), (2, 10)]);
    let mut empty = LeaderEpochCache::default();
    assert!(!empty.truncate_from_start(7));
}

#[test]
fn epoch_for_offset_is_the_epoch_of_the_last_entry_at_or_before_it() {
    let c = cache(&[(2, 6), (3, 8), (4, 11)]);
    assert_eq!(c.epoch_for_offset(5), None);
    assert_eq!(c.epoch_for_offset(6), Some(2));
    assert_eq!(c.epoch_for_offset(7), Some(2));
    assert_eq!(c.epoch_for_offset(8), Some(3));
    assert_eq!(c.epoch_for_offset(10), Some(3));
    assert_eq!(c.epoch_for_offset(11), Some(4));
    assert_eq!(c.epoch_for_offset(u64::MAX), Some(4));
}

// ---- KIP-101 and KIP-279 lookups, as the leader's cache answers them ----

/// KIP-101, scenario 1 (a follower restarts and must not truncate to its
/// stale high watermark): leader A holds m1, m2 (offsets 0, 1) in epoch 0,
/// follower B restarts holding m1 and asks A for the end of its latest
/// epoch, 0. A answers its log end, 2, so B keeps everything it has and
/// fetches m2 instead of truncating to its high watermark (1) and losing
/// m2 when it becomes leader.
#[test]
fn kip_101_a_restarted_follower_keeps_what_the_leader_has() {
    let leader = cache(&[(0, 0)]);
    let leader_end = 2;
    let follower = cache(&[(0, 0)]);
    let follower_end = 1;
    let asked = follower.latest_epoch().expect("an epoch");
    let reply = leader.end_offset_for(asked, leader_end);
    assert_eq!(reply, answer(0, 2));
    let truncate_to = follower_end.min(reply.end_offset as u64);
    assert_eq!(truncate_to, 1, "nothing is truncated");
}

/// KIP-101, scenario 2 (divergence after both crash): A held m1, m2 in
/// epoch 0; B held m1. B comes back first, becomes leader in epoch 1 and
/// writes m3 at offset 1. A comes back as follower and asks B for the end
/// of epoch 0: B answers 1 (where epoch 1 starts), so A truncates m2 and
/// then fetches m3: the logs agree again.
#[test]
fn kip_101_a_diverged_follower_truncates_to_the_start_of_the_next_epoch() {
    let b = cache(&[(0, 0), (1, 1)]);
    let b_end = 2;
    let a = cache(&[(0, 0)]);
    let a_end = 2;
    let reply = b.end_offset_for(a.latest_epoch().expect("an epoch"), b_end);
    assert_eq!(reply, answer(0, 1));
    assert_eq!(a_end.min(reply.end_offset as u64), 1, "m2 is cut");
    // B's own view of its current epoch is its log end.
    assert_eq!(b.end_offset_for(1, b_end), answer(1, 2));
}

/// KIP-279 (fast leader fail-over, divergence over several epochs): the
/// leader answers with the largest epoch it has at or below the one asked,
/// and the follower then truncates to the smaller of the leader's end
/// offset and its own end offset for that epoch. Leader B wrote epochs 0
/// (offsets 0-1), 1 (2-3) and 3 (4-5); follower A wrote epochs 0, 1 (2)
/// and 2 (3-4), which B never saw. A asks for epoch 2; B has no epoch 2 and
/// answers (1, 4); A's own end for epoch 1 is 3, so A truncates to 3, the
/// last offset both wrote in the same epoch, never to 4 (which would keep
/// A's epoch-2 record at offset 3 under B's epoch-1 record).
#[test]
fn kip_279_the_leader_answers_with_the_epoch_it_knows_and_the_follower_takes_the_smaller_end() {
    let b = cache(&[(0, 0), (1, 2), (3, 4)]);
    let b_end = 6;
    let a = cache(&[(0, 0), (1, 2), (2, 3)]);
    let a_end = 5;
    let reply = b.end_offset_for(a.latest_epoch().expect("an epoch"), b_end);
    assert_eq!(reply, answer(1, 4));
    let own = a.end_offset_for(reply.epoch, a_end);
    assert_eq!(own, answer(1, 3));
    let truncate_to = (reply.end_offset.min(own.end_offset)) as u64;
    assert_eq!(truncate_to, 3);
    let mut a = a;
    a.truncate_from_end(truncate_to);
    assert_eq!(pairs(&a), [(0, 0), (1, 2)]);
    // After fetching B's batches from offset 3, A's cache is B's.
    a.assign(1, 3);
    a.assign(3, 4);
    assert_eq!(pairs(&a), pairs(&b));
}

/// KIP-279: a follower whose latest epoch is newer than anything the
/// leader has (it led an epoch that the new leader never saw, after an
/// unclean election) gets no answer from the cache: Kafka's leader answers
/// FENCED_LEADER_EPOCH or the follower retries with its previous epoch;
/// asking for that previous epoch then yields a usable end offset.
#[test]
fn kip_279_an_epoch_newer_than_the_leaders_is_undefined_and_the_previous_one_answers() {
    let leader = cache(&[(0, 0), (1, 5)]);
    let follower = cache(&[(0, 0), (1, 5), (2, 8)]);
    assert_eq!(leader.end_offset_for(2, 7), EpochEndOffset::UNDEFINED);
    let reply = leader.end_offset_for(1, 7);
    assert_eq!(reply, answer(1, 7));
    let own = follower.end_offset_for(1, 10);
    assert_eq!(own, answer(1, 8));
    assert_eq!(reply.end_offset.min(own.end_offset), 7);
}

/// KIP-101: a follower whose every epoch is older than the leader's first
/// one (the leader's retention removed them) is told the leader's first
/// start offset, with its own epoch.
#[test]
fn kip_101_an_epoch_the_leader_retained_nothing_of_answers_the_leaders_start() {
    let mut leader = cache(&[(0, 0), (3, 40), (5, 90)]);
    leader.truncate_from_start(60);
    assert_eq!(pairs(&leader), [(3, 60), (5, 90)]);
    assert_eq!(leader.end_offset_for(1, 120), answer(1, 60));
}

// ---- The cache against a simple model ----

/// The model: epoch → start offset, every operation written the obvious
/// way over the whole map.
#[derive(Debug, Clone, Default)]
struct Model(BTreeMap<i32, u64>);

impl Model {
    fn assign(&mut self, epoch: i32, start: u64) {
        if epoch < 0 {
            return;
        }
        if let Some((&e, &s)) = self.0.iter().next_back()
            && e == epoch
            && start >= s
        {
            return;
        }
        self.0.retain(|&e, &mut s| e < epoch && s < start);
        self.0.insert(epoch, start);
    }
    fn truncate_from_end(&mut self, end: u64) {
        self.0.retain(|_, &mut s| s < end);
    }
    fn truncate_from_start(&mut self, start: u64) {
        let covering = self
            .0
            .iter()
            .filter(|&(_, &s)| s <= start)
            .max_by_key(|&(_, &s)| s)
            .map(|(&e, _)| e);
        if let Some(epoch) = covering {
            self.0.retain(|_, &mut s| s > start);
            self.0.insert(epoch, start);
        }
    }
    fn end_offset_for(&self, requested: i32, leo: u64) -> EpochEndOffset {
        if requested == UNDEFINED_EPOCH {
            return EpochEndOffset::UNDEFINED;
        }
        if self.0.keys().next_back() == Some(&requested) {
            return answer(requested, leo as i64);
        }
        let higher = self.0.iter().find(|&(&e, _)| e > requested);
        let floor = self.0.iter().rfind(|&(&e, _)| e <= requested);
        match (floor, higher) {
            (_, None) => EpochEndOffset::UNDEFINED,
            (None, Some((_, &s))) => answer(requested, s as i64),
            (Some((&e, _)), Some((_, &s))) => answer(e, s as i64),
        }
    }
    fn epoch_for_offset(&self, offset: u64) -> Option<i32> {
        self.0
            .iter()
            .filter(|&(_, &s)| s <= offset)
            .max_by_key(|&(_, &s)| s)
            .map(|(&e, _)| e)
    }
}

#[derive(Debug, Clone)]
enum Op {
    Assign(i32, u64),
    TruncateFromEnd(u64),
    TruncateFromStart(u64),
    EndOffsetFor(i32, u64),
    EpochForOffset(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (-2..12i32, 0..60u64).prop_map(|(e, o)| Op::Assign(e, o)),
        1 => (0..60u64).prop_map(Op::TruncateFromEnd),
        1 => (0..60u64).prop_map(Op::TruncateFromStart),
        2 => (-2..14i32, 0..70u64).prop_map(|(e, o)| Op::EndOffsetFor(e, o)),
        1 => (0..70u64).prop_map(Op::EpochForOffset),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_cache_behaves_as_the_model(ops in prop::collection::vec(op(), 0..60)) {
        let mut cache = LeaderEpochCache::default();
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Assign(e, o) => {
                    let before = cache.clone();
                    let changed = cache.assign(e, o);
                    model.assign(e, o);
                    prop_assert_eq!(changed, before != cache, "assign({}, {}) reports a change", e, o);
                }
                Op::TruncateFromEnd(o) => {
                    let before = cache.clone();
                    let changed = cache.truncate_from_end(o);
                    model.truncate_from_end(o);
                    prop_assert_eq!(changed, before != cache);
                }
                Op::TruncateFromStart(o) => {
                    let before = cache.clone();
                    let changed = cache.truncate_from_start(o);
                    model.truncate_from_start(o);
                    prop_assert_eq!(changed, before != cache);
                }
                Op::EndOffsetFor(e, leo) => {
                    prop_assert_eq!(cache.end_offset_for(e, leo), model.end_offset_for(e, leo));
                }
                Op::EpochForOffset(o) => {
                    prop_assert_eq!(cache.epoch_for_offset(o), model.epoch_for_offset(o));
                }
            }
            let expected: Vec<(i32, u64)> = model.0.iter().map(|(&e, &s)| (e, s)).collect();
            prop_assert_eq!(pairs(&cache), expected);
            // Both columns strictly increase, always.
            prop_assert!(LeaderEpochCache::from_entries(cache.entries().to_vec()).is_some());
            prop_assert_eq!(cache.latest_epoch(), model.0.keys().next_back().copied());
        }
    }

    /// Against the log itself: a log written by leaders of non-decreasing
    /// epochs, truncated at either end, whose cache is fed as appends feed
    /// it. Every epoch that still wrote an offset ends where the next epoch
    /// starts (or at the log end), and the epoch of every offset is the one
    /// that wrote it.
    #[test]
    fn the_cache_describes_the_log_it_follows(
        steps in prop::collection::vec((0..4u8, 1..5u64, 0..3i32), 1..40)
    ) {
        // The epoch of each offset from `start` on.
        let mut start = 0u64;
        let mut written: Vec<i32> = Vec::new();
        let mut epoch = 0;
        let mut cache = LeaderEpochCache::default();
        for (kind, n, bump) in steps {
            let end = start + written.len() as u64;
            match kind {
                0 | 1 => {
                    epoch += bump;
                    cache.assign(epoch, end);
                    written.extend(std::iter::repeat_n(epoch, n as usize));
                }
                2 => {
                    let cut = n.min(written.len() as u64);
                    written.truncate(written.len() - cut as usize);
                    cache.truncate_from_end(start + written.len() as u64);
                }
                _ => {
                    let cut = n.min(written.len() as u64);
                    written.drain(..cut as usize);
                    start += cut;
                    cache.truncate_from_start(start);
                }
            }
            let end = start + written.len() as u64;
            for (i, &e) in written.iter().enumerate() {
                prop_assert_eq!(cache.epoch_for_offset(start + i as u64), Some(e));
                let epoch_end = written
                    .iter()
                    .position(|&later| later > e)
                    .map_or(end, |p| start + p as u64);
                prop_assert_eq!(cache.end_offset_for(e, end), answer(e, epoch_end as i64));
            }
        }
    }
}

// ---- The file ----

#[test]
fn the_file_is_kafkas_text_and_round_trips() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = crate::storage::StdStorage::new();
    assert_eq!(read_checkpoint(&storage, dir.path())?, None);
    let c = cache(&[
        (0, 0),
        (3, 120),
        (7, 5000),
        (2_147_483_647, i64::MAX as u64),
    ]);
    write_checkpoint(&storage, dir.path(), &c)?;
    let path = dir.path().join("leader-epoch-checkpoint");
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        "0\n4\n0 0\n3 120\n7 5000\n2147483647 9223372036854775807\n"
    );
    assert_eq!(read_checkpoint(&storage, dir.path())?, Some(c));
    // An empty cache is an empty checkpoint.
    write_checkpoint(&storage, dir.path(), &LeaderEpochCache::default())?;
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "0\n0\n");
    assert_eq!(
        read_checkpoint(&storage, dir.path())?,
        Some(LeaderEpochCache::default())
    );
    // A file as Kafka writes it.
    std::fs::write(&path, "0\n2\n0 1\n1 2\n").expect("write");
    assert_eq!(
        read_checkpoint(&storage, dir.path())?.map(|c| pairs(&c)),
        Some(vec![(0, 1), (1, 2)])
    );
    Ok(())
}

#[test]
fn a_damaged_file_is_a_corruption_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = crate::storage::StdStorage::new();
    let path = dir.path().join("leader-epoch-checkpoint");
    for bad in [
        "",
        "1\n0\n",
        "0\n",
        "0\n2\n0 0\n",
        "0\n1\n0 0\n1 5\n",
        "0\n1\n0\n",
        "0\n1\n0 0 0\n",
        "0\n1\nx 0\n",
        "0\n1\n-1 0\n",
        "0\n1\n0 -1\n",
        "0\n1\n2147483648 0\n",
        "0\n1\n0 9223372036854775808\n",
        "0\n2\n1 0\n1 5\n",
        "0\n2\n1 5\n2 5\n",
        "0\n2\n2 0\n1 5\n",
        "0\n1\n0  0\n",
        "\u{0}\u{0}\u{0}\u{0}",
    ] {
        std::fs::write(&path, bad).expect("write");
        match read_checkpoint(&storage, dir.path()) {
            Err(Error::Corrupt {
                path: named,
                kind: CorruptionKind::Checkpoint(_),
                ..
            }) => assert_eq!(named, path, "{bad:?}"),
            other => panic!("{bad:?} must be refused, got {other:?}"),
        }
    }
    std::fs::write(&path, [0xff, 0xfe, b'\n']).expect("write");
    assert!(matches!(
        read_checkpoint(&storage, dir.path()),
        Err(Error::Corrupt { .. })
    ));
}

// ---- The log's hooks ----

/// A batch of `records` records stamped with `epoch` and based at `base`
/// (for follower appends).
fn batch(records: usize, epoch: i32, base: u64) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Compression::None);
    for i in 0..records {
        builder.append(1_000 + i as i64, Some(b"k"), Some(b"v"), &[]);
    }
    let mut bytes = builder.build().expect("build").to_vec();
    format::set_base_offset(&mut bytes, base as i64);
    format::set_partition_leader_epoch(&mut bytes, epoch);
    bytes
}

fn file_pairs(dir: &Path) -> Option<Vec<(i32, u64)>> {
    read_checkpoint(&crate::storage::StdStorage::new(), dir)
        .expect("readable")
        .map(|c| pairs(&c))
}

fn entry_pairs(log: &Log) -> Vec<(i32, u64)> {
    log.epoch_entries()
        .iter()
        .map(|e| (e.epoch, e.start_offset))
        .collect()
}

#[test]
fn leader_appends_record_each_new_epoch_at_its_first_offset() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::builder(dir.path()).open()?;
    assert_eq!(log.latest_epoch(), None);
    assert_eq!(log.end_offset_for_epoch(0), EpochEndOffset::UNDEFINED);
    assert_eq!(file_pairs(dir.path()), None, "a new log writes no file");
    log.append(&mut batch(3, -1, 0), 0)?;
    log.append(&mut batch(2, -1, 0), 0)?;
    assert_eq!(entry_pairs(&log), [(0, 0)]);
    // The file follows with the next flush, not the append.
    assert_eq!(file_pairs(dir.path()), None);
    log.flush()?;
    assert_eq!(file_pairs(dir.path()), Some(vec![(0, 0)]));
    log.append(&mut batch(1, -1, 0), 4)?;
    log.append(&mut batch(4, -1, 0), 4)?;
    log.append(&mut batch(2, -1, 0), 6)?;
    assert_eq!(entry_pairs(&log), [(0, 0), (4, 5), (6, 10)]);
    assert_eq!(file_pairs(dir.path()), Some(vec![(0, 0)]));
    log.flush()?;
    assert_eq!(file_pairs(dir.path()), Some(vec![(0, 0), (4, 5), (6, 10)]));
    assert_eq!(log.latest_epoch(), Some(6));
    assert_eq!(log.end_offset_for_epoch(6), answer(6, 12));
    assert_eq!(log.end_offset_for_epoch(5), answer(4, 10));
    assert_eq!(log.end_offset_for_epoch(0), answer(0, 5));
    // The batches carry the epochs.
    let read = log.read(5, 1 << 20)?;
    let first = read.batches().next().expect("a batch")?;
    assert_eq!(first.header().partition_leader_epoch, 4);

    // An older epoch may not append: nothing is stored.
    let refused = log.append(&mut batch(1, -1, 0), 5);
    assert!(
        matches!(refused, Err(Error::InvalidArgument(_))),
        "{refused:?}"
    );
    assert_eq!(log.log_end_offset(), 12);
    // No epoch (-1) is stamped but not recorded.
    log.append(&mut batch(1, -1, 0), -1)?;
    assert_eq!(log.log_end_offset(), 13);
    assert_eq!(entry_pairs(&log), [(0, 0), (4, 5), (6, 10)]);

    // A reopen reads the file back.
    log.close()?;
    let log = Log::builder(dir.path()).open()?;
    assert_eq!(log.recovery_report().leader_epochs_rebuilt, None);
    assert_eq!(entry_pairs(&log), [(0, 0), (4, 5), (6, 10)]);
    Ok(())
}

#[test]
fn follower_appends_record_the_leaders_epochs() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::builder(dir.path()).open()?;
    let mut buf = batch(2, 1, 0);
    buf.extend(batch(3, 1, 2));
    buf.extend(batch(1, 3, 5));
    log.append_as_follower(&buf)?;
    log.append_as_follower(&batch(2, -1, 6))?;
    log.append_as_follower(&batch(2, 4, 8))?;
    assert_eq!(entry_pairs(&log), [(1, 0), (3, 5), (4, 8)]);
    log.flush()?;
    assert_eq!(file_pairs(dir.path()), Some(vec![(1, 0), (3, 5), (4, 8)]));
    Ok(())
}

#[test]
fn truncation_cuts_the_cache_and_its_file() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::builder(dir.path()).open()?;
    for (records, epoch) in [(5, 0), (5, 1), (5, 2)] {
        log.append(&mut batch(records, -1, 0), epoch)?;
    }
    assert_eq!(log.truncate_to(7)?, 5, "the batch holding 7 goes whole");
    assert_eq!(entry_pairs(&log), [(0, 0)]);
    assert_eq!(file_pairs(dir.path()), Some(vec![(0, 0)]));
    assert_eq!(log.latest_epoch(), Some(0));
    assert_eq!(log.end_offset_for_epoch(0), answer(0, 5));
    // The follower then copies its new leader's epoch-1 history.
    log.append_as_follower(&batch(4, 1, 5))?;
    assert_eq!(entry_pairs(&log), [(0, 0), (1, 5)]);
    Ok(())
}

#[test]
fn a_truncation_whose_file_write_failed_fences_and_the_next_open_cuts_the_file() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = FaultyStorage::new();
    let log = Log::builder(dir.path())
        .storage(Arc::new(storage.clone()))
        .open()?;
    log.append(&mut batch(5, -1, 0), 0)?;
    log.append(&mut batch(5, -1, 0), 1)?;
    log.flush()?;
    // The epoch file is replaced by rename: make that fail once the cut is
    // on disk.
    storage.fail_nth(FaultOp::Rename, 1, FaultKind::Eio);
    assert!(matches!(log.truncate_to(5), Err(Error::Io { .. })));
    assert!(log.is_fenced());
    assert_eq!(log.log_end_offset(), 5, "the log was cut");
    assert_eq!(entry_pairs(&log), [(0, 0)], "the cache follows the log");
    assert_eq!(file_pairs(dir.path()), Some(vec![(0, 0), (1, 5)]), "stale");
    assert!(matches!(
        log.append(&mut batch(2, -1, 0), 0),
        Err(Error::Fenced { .. })
    ));
    drop(log);
    let log = Log::builder(dir.path()).open()?;
    assert_eq!(log.log_end_offset(), 5);
    assert_eq!(entry_pairs(&log), [(0, 0)]);
    assert_eq!(file_pairs(dir.path()), Some(vec![(0, 0)]));
    Ok(())
}

#[test]
fn a_failed_epoch_file_write_fences_and_the_next_open_takes_the_epoch_from_the_batches()
-> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = FaultyStorage::new();
    let log = Log::builder(dir.path())
        .storage(Arc::new(storage.clone()))
        .open()?;
    log.append(&mut batch(2, -1, 0), 0)?;
    log.flush()?;
    // A new epoch: the append leaves the file to the flush.
    log.append(&mut batch(2, -1, 0), 1)?;
    assert_eq!(entry_pairs(&log), [(0, 0), (1, 2)]);
    storage.fail_nth(FaultOp::SyncDir, 1, FaultKind::Enospc);
    assert!(matches!(log.flush(), Err(Error::Io { .. })));
    assert!(log.is_fenced());
    assert_eq!(
        log.recovery_point(),
        2,
        "the recovery point stays below epoch 1"
    );
    drop(log);
    // Whether or not the rename reached the disk, the reopen finds epoch 1
    // in the batch past the recovery point, if that batch is still there.
    let log = Log::builder(dir.path()).recovery_point(2).open()?;
    // The failed fsync may have taken the unsynced batch with it.
    let expected = if log.log_end_offset() == 4 {
        vec![(0, 0), (1, 2)]
    } else {
        assert_eq!(log.log_end_offset(), 2);
        vec![(0, 0)]
    };
    assert_eq!(entry_pairs(&log), expected);
    assert_eq!(log.recovery_report().leader_epochs_rebuilt, None);
    assert_eq!(file_pairs(dir.path()), Some(expected));
    Ok(())
}

/// A crash before the flush that would have written a new epoch's entry:
/// the reopen takes it from the batches past the recovery point (and a
/// power loss that took those batches takes the epoch with them).
#[test]
fn an_epoch_the_file_lacks_after_a_crash_comes_back_from_the_batches() -> Result<()> {
    for power in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = FaultyStorage::new();
        let log = Log::builder(dir.path())
            .storage(Arc::new(storage.clone()))
            .open()?;
        log.append(&mut batch(3, -1, 0), 0)?;
        log.flush()?;
        log.append(&mut batch(2, -1, 0), 1)?;
        log.append(&mut batch(2, -1, 0), 3)?;
        assert_eq!(file_pairs(dir.path()), Some(vec![(0, 0)]));
        let recovery_point = log.recovery_point();
        assert_eq!(recovery_point, 3);
        if power {
            storage.power_loss(0)?;
        } else {
            storage.crash(Tear::Random(recovery_point))?;
        }
        log.abandon();
        let log = Log::builder(dir.path())
            .storage(Arc::new(storage.clone()))
            .recovery_point(recovery_point)
            .open()?;
        let mut expected = vec![(0, 0)];
        if log.log_end_offset() > 3 {
            expected.push((1, 3));
        }
        if log.log_end_offset() > 5 {
            expected.push((3, 5));
        }
        assert_eq!(entry_pairs(&log), expected, "power loss: {power}");
        assert_eq!(log.recovery_report().leader_epochs_rebuilt, None);
        drop(log);
        assert_eq!(file_pairs(dir.path()), Some(expected));
    }
    Ok(())
}

fn small_segments() -> LogConfig {
    LogConfig::builder()
        .segment_bytes(1024)
        .build()
        .expect("config")
}

#[test]
fn retention_and_delete_records_move_the_first_entry_up() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::builder(dir.path()).config(small_segments()).open()?;
    for epoch in 0..4 {
        for _ in 0..6 {
            log.append(&mut batch(4, -1, 0), epoch)?;
        }
    }
    assert_eq!(entry_pairs(&log), [(0, 0), (1, 24), (2, 48), (3, 72)]);
    assert_eq!(log.delete_records(30)?, 30);
    assert_eq!(entry_pairs(&log), [(1, 30), (2, 48), (3, 72)]);
    // The file catches up lazily: on close.
    log.close()?;
    assert_eq!(
        file_pairs(dir.path()),
        Some(vec![(1, 30), (2, 48), (3, 72)])
    );
    let log = Log::builder(dir.path())
        .config(small_segments())
        .log_start_offset(30)
        .open()?;
    assert_eq!(entry_pairs(&log), [(1, 30), (2, 48), (3, 72)]);
    assert_eq!(log.end_offset_for_epoch(0), answer(0, 30));
    Ok(())
}

#[test]
fn a_stale_file_is_cut_to_the_log_on_open() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::builder(dir.path()).config(small_segments()).open()?;
    for epoch in 0..3 {
        for _ in 0..6 {
            log.append(&mut batch(4, -1, 0), epoch)?;
        }
    }
    log.close()?;
    // As a crash can leave it: entries past the end (a truncation not yet
    // in the file) and below the start (retention not yet in the file).
    let storage = crate::storage::StdStorage::new();
    write_checkpoint(
        &storage,
        dir.path(),
        &cache(&[(0, 0), (1, 24), (2, 48), (5, 72), (6, 100)]),
    )?;
    let log = Log::builder(dir.path())
        .config(small_segments())
        .log_start_offset(30)
        .open()?;
    assert_eq!(log.recovery_report().leader_epochs_rebuilt, None);
    assert_eq!(entry_pairs(&log), [(1, 30), (2, 48)]);
    assert_eq!(file_pairs(dir.path()), Some(vec![(1, 30), (2, 48)]));
    Ok(())
}

/// A log of several epochs (and segments), closed.
fn written_log(dir: &Path, storage: &Arc<dyn Storage>) -> Result<Vec<(i32, u64)>> {
    let log = Log::builder(dir)
        .config(small_segments())
        .storage(storage.clone())
        .open()?;
    for (epoch, appends) in [(0, 3), (2, 5), (3, 1), (7, 4)] {
        for _ in 0..appends {
            log.append(&mut batch(3, -1, 0), epoch)?;
        }
    }
    let entries = entry_pairs(&log);
    assert_eq!(entries, [(0, 0), (2, 9), (3, 24), (7, 27)]);
    log.close()?;
    Ok(entries)
}

#[test]
fn a_missing_file_is_rebuilt_from_the_batches_and_reported() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage: Arc<dyn Storage> = Arc::new(crate::storage::StdStorage::new());
    let entries = written_log(dir.path(), &storage)?;
    let path = dir.path().join("leader-epoch-checkpoint");
    std::fs::remove_file(&path).expect("remove");
    // Not reported when every epoch starts at or past the recovery point:
    // a log never flushed since its first epoch has no file yet.
    let log = Log::builder(dir.path())
        .config(small_segments())
        .recovery_point(0)
        .open()?;
    assert_eq!(log.recovery_report().leader_epochs_rebuilt, None);
    assert_eq!(entry_pairs(&log), entries);
    drop(log);
    std::fs::remove_file(&path).expect("remove");
    let end = entries.last().map_or(0, |e| e.1) + 12;
    let log = Log::builder(dir.path())
        .config(small_segments())
        .recovery_point(end)
        .open()?;
    assert_eq!(
        log.recovery_report().leader_epochs_rebuilt,
        Some(LeaderEpochsRebuilt {
            path: path.clone(),
            damage: None,
            entries: 4
        })
    );
    assert_eq!(entry_pairs(&log), entries);
    assert_eq!(file_pairs(dir.path()), Some(entries.clone()));
    log.close()?;
    let log = Log::builder(dir.path())
        .config(small_segments())
        .recovery_point(end)
        .open()?;
    assert_eq!(log.recovery_report().leader_epochs_rebuilt, None);
    assert_eq!(entry_pairs(&log), entries);
    Ok(())
}

#[test]
fn a_damaged_file_is_rebuilt_from_the_batches_and_reported() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage: Arc<dyn Storage> = Arc::new(crate::storage::StdStorage::new());
    let entries = written_log(dir.path(), &storage)?;
    let path = dir.path().join("leader-epoch-checkpoint");
    for garbage in [
        &b"0\n4\n0 0\n2 9\n"[..],
        b"\xde\xad\xbe\xef",
        b"0\n2\n3 0\n2 9\n",
        b"",
    ] {
        std::fs::write(&path, garbage).expect("write");
        let log = Log::builder(dir.path()).config(small_segments()).open()?;
        let rebuilt = log
            .recovery_report()
            .leader_epochs_rebuilt
            .clone()
            .expect("rebuilt");
        assert_eq!(rebuilt.path, path);
        assert!(
            matches!(rebuilt.damage, Some(CorruptionKind::Checkpoint(_))),
            "{rebuilt:?}"
        );
        assert_eq!(rebuilt.entries, 4);
        assert_eq!(entry_pairs(&log), entries);
        assert_eq!(file_pairs(dir.path()), Some(entries.clone()));
        log.close()?;
    }
    // A damaged file of an empty log is replaced by an empty one.
    let empty = tempfile::tempdir().expect("tempdir");
    std::fs::write(empty.path().join("leader-epoch-checkpoint"), "junk").expect("write");
    let log = Log::builder(empty.path()).open()?;
    let rebuilt = log.recovery_report().leader_epochs_rebuilt.clone();
    assert_eq!(rebuilt.map(|r| r.entries), Some(0));
    assert_eq!(file_pairs(empty.path()), Some(vec![]));
    Ok(())
}

#[test]
fn a_rebuild_starts_at_the_log_start_offset() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage: Arc<dyn Storage> = Arc::new(crate::storage::StdStorage::new());
    written_log(dir.path(), &storage)?;
    std::fs::remove_file(dir.path().join("leader-epoch-checkpoint")).expect("remove");
    let log = Log::builder(dir.path())
        .config(small_segments())
        .log_start_offset(12)
        .open()?;
    assert_eq!(entry_pairs(&log), [(2, 12), (3, 24), (7, 27)]);
    Ok(())
}

// ---- Power loss ----

/// Power losses at every point of a run of epoch changes, truncations and
/// retention: the file is never half-written (it reads, and holds what one
/// of the writes so far put there), and the reopened log's cache is exactly
/// what its surviving batches say.
#[test]
fn power_loss_never_leaves_a_half_written_file_or_a_cache_that_disagrees_with_the_log() -> Result<()>
{
    for seed in 0..64u64 {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = FaultyStorage::new();
        let config = LogConfig::builder()
            .segment_bytes(1024)
            .build()
            .expect("config");
        let open = |recovery_point: u64, log_start: u64| {
            Log::builder(dir.path())
                .config(config.clone())
                .storage(Arc::new(storage.clone()))
                .recovery_point(recovery_point)
                .log_start_offset(log_start)
                .open()
        };
        let log = open(0, 0)?;
        let mut contents: Vec<Option<Vec<(i32, u64)>>> = vec![None];
        let mut epoch = 0;
        let steps = 4 + seed % 12;
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        for _ in 0..steps {
            match next(6) {
                0..=2 => {
                    epoch += i32::try_from(next(2)).expect("small");
                    log.append(&mut batch(1 + next(4) as usize, -1, 0), epoch)?;
                }
                3 => {
                    let end = log.log_end_offset();
                    let _ = log.truncate_to(end.saturating_sub(next(6)))?;
                }
                4 => log.flush()?,
                _ => {
                    let end = log.log_end_offset();
                    log.delete_records(end.saturating_sub(next(10)).max(log.log_start_offset()))?;
                }
            }
            let now = file_pairs(dir.path());
            if contents.last() != Some(&now) {
                contents.push(now);
            }
        }
        let (recovery_point, log_start) = (log.recovery_point(), log.log_start_offset());
        storage.power_loss(seed)?;
        drop(log);
        // Never half-written: readable, and one of the contents written.
        let survived = read_checkpoint(&storage, dir.path())
            .unwrap_or_else(|e| panic!("seed {seed}: the file is damaged: {e}"))
            .map(|c| pairs(&c));
        assert!(
            contents.contains(&survived),
            "seed {seed}: {survived:?} was never written ({contents:?})"
        );
        let log = open(recovery_point, log_start)?;
        assert_eq!(
            log.recovery_report().leader_epochs_rebuilt,
            None,
            "seed {seed}: the file was readable"
        );
        // The cache is what the batches say (a rebuild). An empty log's
        // cache is either empty or remembers only the epoch at its start
        // (Kafka keeps the entry covering a new log start even when no
        // batch follows; batches below the start prove nothing).
        let (start, end) = (log.log_start_offset(), log.log_end_offset());
        let mut rebuilt = rebuild(&log.inner.state.read().segments)?;
        rebuilt.truncate_from_end(end);
        rebuilt.truncate_from_start(start);
        let entries = entry_pairs(&log);
        let empty_log_ok =
            start == end && (entries.is_empty() || (entries.len() == 1 && entries[0].1 == start));
        assert!(
            entries == pairs(&rebuilt) || empty_log_ok,
            "seed {seed}: the cache {entries:?} disagrees with the batches {:?}",
            pairs(&rebuilt)
        );
    }
    Ok(())
}

/// A power loss in the middle of each step of the atomic replace (the
/// temporary file's write or fsync, the rename, the directory fsync): the
/// file holds the old entries or the new ones, never anything else.
#[test]
fn power_loss_during_a_file_write_leaves_the_old_or_the_new_entries() -> Result<()> {
    for (op, nth) in [
        (FaultOp::Write, 1),
        (FaultOp::Sync, 1),
        (FaultOp::Rename, 1),
        (FaultOp::SyncDir, 1),
    ] {
        for seed in 0..16 {
            let dir = tempfile::tempdir().expect("tempdir");
            let storage = FaultyStorage::new();
            let old = cache(&[(0, 0), (1, 10)]);
            let new = cache(&[(0, 0), (1, 10), (2, 20)]);
            write_checkpoint(&storage, dir.path(), &old)?;
            storage.fail_nth(op, nth, FaultKind::Eio);
            let result = write_checkpoint(&storage, dir.path(), &new);
            assert!(result.is_err(), "{op:?}: the write failed");
            storage.power_loss(seed)?;
            let survived = read_checkpoint(&storage, dir.path())
                .unwrap_or_else(|e| panic!("{op:?} seed {seed}: damaged: {e}"));
            assert!(
                survived == Some(old.clone()) || survived == Some(new.clone()),
                "{op:?} seed {seed}: {survived:?}"
            );
        }
    }
    Ok(())
}

/// A rebuild that walks into damage recovery trusted (below the recovery
/// point, before the segment's last index entry) stops there: the open is
/// not refused after its repairs changed files, and the read that reaches
/// the damage refuses it, as for any damage there.
#[test]
fn a_rebuild_stops_at_damage_that_recovery_trusted() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    // An index entry for every batch: recovery checks only the batch of the
    // last entry and trusts the rest on the index.
    let config = LogConfig::builder().index_interval_bytes(0).build()?;
    let log = Log::builder(dir.path()).config(config.clone()).open()?;
    for epoch in [0, 1, 2] {
        log.append(&mut batch(2, -1, 0), epoch)?;
    }
    let recovery_point = log.log_end_offset();
    log.close()?;
    std::fs::remove_file(checkpoint_path(dir.path())).expect("remove");
    // A byte of the second batch's value: its CRC no longer matches.
    let segment = dir.path().join("00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).expect("read");
    let second = bytes.len() / 3;
    let position = second + crate::format::RECORD_BATCH_OVERHEAD + 5;
    bytes[position] ^= 0x40;
    std::fs::write(&segment, &bytes).expect("write");

    let log = Log::builder(dir.path())
        .config(config)
        .recovery_point(recovery_point)
        .open()?;
    let rebuilt = log.recovery_report().leader_epochs_rebuilt.clone();
    assert!(rebuilt.is_some(), "{:?}", log.recovery_report());
    assert_eq!(entry_pairs(&log), [(0, 0)], "up to the damage");
    assert!(log.read(0, 1 << 20).is_ok());
    assert!(matches!(log.read(2, 1 << 20), Err(Error::Corrupt { .. })));
    log.close()?;
    Ok(())
}
