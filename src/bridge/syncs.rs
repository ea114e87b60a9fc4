//! Offset syncs (MirrorMaker 2's `OffsetSync`): pairs of a source offset and
//! the target offset its record was copied to, sampled at each checkpoint,
//! and the translation of a consumer group's offsets with them.
//!
//! They are kept in a logbus topic, `mirror-offset-syncs.<name>.internal`
//! (one partition), one record per sync: the key names the direction and
//! the source partition, the value the target partition and both offsets,
//! as text (`to-kafka|orders|3` → `orders|3|120|118`), so `logbus` tools
//! show them as they are.

use std::collections::{BTreeMap, HashMap};

use crate::TopicPartition;

/// Which way records flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// From a logbus topic to a Kafka topic.
    ToKafka,
    /// From a Kafka topic to a logbus topic.
    FromKafka,
}

impl Direction {
    /// The direction's name in sync records: `to-kafka` or `from-kafka`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Direction::ToKafka => "to-kafka",
            Direction::FromKafka => "from-kafka",
        }
    }

    fn parse(name: &str) -> Option<Direction> {
        match name {
            "to-kafka" => Some(Direction::ToKafka),
            "from-kafka" => Some(Direction::FromKafka),
            _ => None,
        }
    }
}

/// One offset sync: the record at `upstream_offset` of `source` was
/// copied to `downstream_offset` of `target` (MirrorMaker 2's
/// `OffsetSync`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetSync {
    /// Which way the record went.
    pub direction: Direction,
    /// The partition it was read from.
    pub source: TopicPartition,
    /// The partition it was written to.
    pub target: TopicPartition,
    /// Its offset in `source`.
    pub upstream_offset: u64,
    /// Its offset in `target`.
    pub downstream_offset: u64,
}

impl OffsetSync {
    /// The record key and value this sync is stored as.
    pub(crate) fn encode(&self) -> (String, String) {
        (
            format!(
                "{}|{}|{}",
                self.direction.name(),
                self.source.topic,
                self.source.partition
            ),
            format!(
                "{}|{}|{}|{}",
                self.target.topic,
                self.target.partition,
                self.upstream_offset,
                self.downstream_offset
            ),
        )
    }

    /// The sync a stored record holds, or `None` if it is not one (a
    /// record written by something else is skipped, never trusted).
    pub(crate) fn decode(key: &[u8], value: &[u8]) -> Option<OffsetSync> {
        let key = std::str::from_utf8(key).ok()?;
        let value = std::str::from_utf8(value).ok()?;
        let mut k = key.split('|');
        let direction = Direction::parse(k.next()?)?;
        let source_topic = k.next()?;
        let source_partition = k.next()?.parse().ok()?;
        let mut v = value.split('|');
        let target_topic = v.next()?;
        let target_partition = v.next()?.parse().ok()?;
        let upstream_offset = v.next()?.parse().ok()?;
        let downstream_offset = v.next()?.parse().ok()?;
        if k.next().is_some() || v.next().is_some() {
            return None;
        }
        if source_topic.is_empty() || target_topic.is_empty() {
            return None;
        }
        Some(OffsetSync {
            direction,
            source: TopicPartition::new(source_topic, source_partition),
            target: TopicPartition::new(target_topic, target_partition),
            upstream_offset,
            downstream_offset,
        })
    }
}

/// How many syncs are kept per source partition (the oldest are dropped):
/// enough to translate groups that lag the mirror by many checkpoints.
pub(crate) const SYNCS_PER_PARTITION: usize = 1024;

/// The syncs known, per direction and source partition, by upstream offset.
#[derive(Debug, Default)]
pub(crate) struct OffsetSyncs {
    by_source: HashMap<(Direction, TopicPartition), BTreeMap<u64, (TopicPartition, u64)>>,
}

impl OffsetSyncs {
    /// Adds a sync; a later sync of the same upstream offset (a record
    /// copied again after a restart) replaces the earlier one.
    pub(crate) fn add(&mut self, sync: &OffsetSync) {
        let entry = self
            .by_source
            .entry((sync.direction, sync.source.clone()))
            .or_default();
        entry.insert(
            sync.upstream_offset,
            (sync.target.clone(), sync.downstream_offset),
        );
        while entry.len() > SYNCS_PER_PARTITION {
            entry.pop_first();
        }
    }

    /// Every sync, in (direction, source partition, upstream offset) order.
    pub(crate) fn all(&self) -> Vec<OffsetSync> {
        let mut out: Vec<OffsetSync> = self
            .by_source
            .iter()
            .flat_map(|((direction, source), syncs)| {
                syncs
                    .iter()
                    .map(|(&upstream, (target, downstream))| OffsetSync {
                        direction: *direction,
                        source: source.clone(),
                        target: target.clone(),
                        upstream_offset: upstream,
                        downstream_offset: *downstream,
                    })
            })
            .collect();
        out.sort_by(|a, b| {
            (a.direction, &a.source, a.upstream_offset).cmp(&(
                b.direction,
                &b.source,
                b.upstream_offset,
            ))
        });
        out
    }

    /// Where a consumer whose next source offset is `offset` resumes on the
    /// target (MirrorMaker 2's rule): with the newest sync `(u, d)` at or
    /// below `offset`, `d` when `offset == u` (the record at `u` is next,
    /// and it is at `d`), else `d + 1` (everything after `u` was copied
    /// after `d`; this may re-deliver some records, never skips one).
    /// `None` without such a sync, or when the sync's target partition is
    /// not the source's number (records of one source partition were
    /// spread by key: no single target position stands for the group's).
    pub(crate) fn translate(
        &self,
        direction: Direction,
        source: &TopicPartition,
        offset: u64,
    ) -> Option<(TopicPartition, u64)> {
        let syncs = self.by_source.get(&(direction, source.clone()))?;
        let (&upstream, (target, downstream)) = syncs.range(..=offset).next_back()?;
        if target.partition != source.partition {
            return None;
        }
        let step = u64::from(offset != upstream);
        Some((target.clone(), downstream + step))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync(up: u64, down: u64) -> OffsetSync {
        OffsetSync {
            direction: Direction::ToKafka,
            source: TopicPartition::new("orders", 2),
            target: TopicPartition::new("orders-remote", 2),
            upstream_offset: up,
            downstream_offset: down,
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let s = sync(120, 118);
        let (k, v) = s.encode();
        assert_eq!(k, "to-kafka|orders|2");
        assert_eq!(v, "orders-remote|2|120|118");
        assert_eq!(OffsetSync::decode(k.as_bytes(), v.as_bytes()), Some(s));
    }

    #[test]
    fn decode_rejects_foreign_records() {
        for (k, v) in [
            ("to-kafka|orders|2", "orders|2|1"),
            ("to-kafka|orders|2", "orders|2|1|2|3"),
            ("sideways|orders|2", "orders|2|1|2"),
            ("to-kafka|orders|x", "orders|2|1|2"),
            ("to-kafka||2", "orders|2|1|2"),
            ("to-kafka|orders|2", "orders|2|-1|2"),
        ] {
            assert_eq!(
                OffsetSync::decode(k.as_bytes(), v.as_bytes()),
                None,
                "{k} {v}"
            );
        }
        assert_eq!(OffsetSync::decode(&[0xff], b"a|1|2|3"), None);
    }

    #[test]
    fn translation_follows_mirrormaker_rule() {
        let mut syncs = OffsetSyncs::default();
        syncs.add(&sync(10, 5));
        syncs.add(&sync(20, 15));
        let tp = TopicPartition::new("orders", 2);
        let target = TopicPartition::new("orders-remote", 2);
        // Before the first sync: unknown.
        assert_eq!(syncs.translate(Direction::ToKafka, &tp, 9), None);
        // Exactly at a sync: the record there.
        assert_eq!(
            syncs.translate(Direction::ToKafka, &tp, 10),
            Some((target.clone(), 5))
        );
        // Between syncs: one past the older one.
        assert_eq!(
            syncs.translate(Direction::ToKafka, &tp, 14),
            Some((target.clone(), 6))
        );
        assert_eq!(
            syncs.translate(Direction::ToKafka, &tp, 21),
            Some((target.clone(), 16))
        );
        // Another direction or partition knows nothing.
        assert_eq!(syncs.translate(Direction::FromKafka, &tp, 21), None);
        // A later copy of the same upstream offset wins.
        syncs.add(&sync(20, 40));
        assert_eq!(
            syncs.translate(Direction::ToKafka, &tp, 21),
            Some((target, 41))
        );
    }

    #[test]
    fn spread_partitions_are_not_translated() {
        let mut syncs = OffsetSyncs::default();
        let mut s = sync(10, 5);
        s.target.partition = 0;
        syncs.add(&s);
        assert_eq!(
            syncs.translate(Direction::ToKafka, &TopicPartition::new("orders", 2), 11),
            None
        );
    }

    #[test]
    fn history_is_bounded() {
        let mut syncs = OffsetSyncs::default();
        for i in 0..(SYNCS_PER_PARTITION as u64 + 10) {
            syncs.add(&sync(i, i));
        }
        let all = syncs.all();
        assert_eq!(all.len(), SYNCS_PER_PARTITION);
        assert_eq!(all[0].upstream_offset, 10);
    }
}
