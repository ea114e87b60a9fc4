//! Replica placement: which brokers hold each partition's replicas, as
//! Kafka's `AdminUtils.assignReplicasToBrokers` places them when racks are
//! not used.
//!
//! Partition `p`'s first replica (its preferred leader) is broker
//! `(p + start) % n`, so leaders go round-robin over the brokers. The other
//! replicas follow it at a distance `1 + (shift + j) % (n - 1)` (the `j`-th
//! follower), and `shift` grows by one each time the partitions wrap around
//! the brokers, so the followers of one broker's partitions spread over the
//! others instead of always landing on its neighbour.
//!
//! Kafka picks `start` and `shift` at random; here they come from the
//! topic id (random itself), so a placement can be recomputed and tests
//! that fix the id are reproducible. Partitions added later continue from
//! partition 0's leader, as Kafka's `createPartitions` does.

use uuid::Uuid;

/// Where a topic's placement starts: Kafka's `startIndex` and
/// `nextReplicaShift`, drawn from the topic id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placement {
    /// The broker index partition 0's first replica goes to.
    pub(crate) start: u32,
    /// The initial distance of the followers from the first replica.
    pub(crate) shift: u32,
}

impl Placement {
    /// The placement of a new topic with id `id` over `brokers` brokers.
    pub(crate) fn for_new_topic(id: Uuid, brokers: u32) -> Self {
        let bits = id.as_u128();
        let low = u64::try_from(bits & u128::from(u64::MAX)).expect("masked to 64 bits");
        let high = u64::try_from(bits >> 64).expect("shifted to 64 bits");
        let n = u64::from(brokers.max(1));
        Placement {
            start: u32::try_from(low % n).expect("below a u32 broker count"),
            shift: u32::try_from(high % n).expect("below a u32 broker count"),
        }
    }

    /// The placement partitions added to an existing topic continue: from
    /// partition 0's first replica `first_leader`, with the topic's shift.
    pub(crate) fn for_added_partitions(id: Uuid, brokers: u32, first_leader: u32) -> Self {
        Placement {
            start: first_leader % brokers.max(1),
            ..Placement::for_new_topic(id, brokers)
        }
    }

    /// The replicas of partitions `first..first + count` over brokers
    /// `0..brokers`, `factor` each (the preferred leader first). The caller
    /// checks `1 <= factor <= brokers`.
    pub(crate) fn assign(self, brokers: u32, factor: u16, first: u32, count: u32) -> Vec<Vec<u32>> {
        let n = u64::from(brokers);
        let shift = u64::from(self.shift);
        let mut out = Vec::with_capacity(count as usize);
        for p in first..first.saturating_add(count) {
            let p = u64::from(p);
            // Kafka bumps the shift at each wrap past the first partition
            // of this call; counting wraps from partition 0 instead makes
            // the placement of a partition independent of how the topic
            // grew to it.
            let wraps = p / n;
            let first_replica = (p + u64::from(self.start)) % n;
            let mut replicas = Vec::with_capacity(usize::from(factor));
            replicas.push(first_replica);
            for j in 0..u64::from(factor).saturating_sub(1) {
                let distance = 1 + (shift + wraps + j) % (n - 1);
                replicas.push((first_replica + distance) % n);
            }
            out.push(
                replicas
                    .into_iter()
                    .map(|b| u32::try_from(b).expect("below a u32 broker count"))
                    .collect(),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    #[test]
    fn kafkas_example_placement() {
        // Kafka's AdminUtils comment: 5 brokers, 10 partitions, factor 3,
        // start index 0 and shift 0 (there the shift starts at the random
        // value and grows at each wrap).
        let p = Placement { start: 0, shift: 0 };
        let got = p.assign(5, 3, 0, 10);
        let expected: Vec<Vec<u32>> = vec![
            vec![0, 1, 2],
            vec![1, 2, 3],
            vec![2, 3, 4],
            vec![3, 4, 0],
            vec![4, 0, 1],
            vec![0, 2, 3],
            vec![1, 3, 4],
            vec![2, 4, 0],
            vec![3, 0, 1],
            vec![4, 1, 2],
        ];
        assert_eq!(got, expected);
    }

    #[test]
    fn replicas_are_distinct_and_leaders_spread_evenly() {
        for brokers in 1..=12u32 {
            for factor in 1..=brokers.min(10) {
                for seed in 0..20u128 {
                    let id = Uuid::from_u128(
                        seed.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835),
                    );
                    let p = Placement::for_new_topic(id, brokers);
                    let factor = u16::try_from(factor).unwrap();
                    let all = p.assign(brokers, factor, 0, 3 * brokers);
                    let mut leaders: BTreeMap<u32, u32> = BTreeMap::new();
                    let mut held: BTreeMap<u32, u32> = BTreeMap::new();
                    for replicas in &all {
                        assert_eq!(replicas.len(), usize::from(factor));
                        let distinct: BTreeSet<_> = replicas.iter().collect();
                        assert_eq!(distinct.len(), replicas.len(), "{replicas:?}");
                        assert!(replicas.iter().all(|&b| b < brokers));
                        *leaders.entry(replicas[0]).or_default() += 1;
                        for &b in replicas {
                            *held.entry(b).or_default() += 1;
                        }
                    }
                    // 3 partitions per broker: each leads exactly 3 and
                    // holds exactly 3 * factor replicas.
                    assert_eq!(leaders.len() as u32, brokers);
                    assert!(leaders.values().all(|&n| n == 3), "{leaders:?}");
                    assert!(
                        held.values().all(|&n| n == 3 * u32::from(factor)),
                        "{held:?}"
                    );
                    // Growing a topic places the new partitions as if they
                    // had been there from the start.
                    let grown = Placement::for_added_partitions(id, brokers, all[0][0]).assign(
                        brokers,
                        factor,
                        brokers,
                        2 * brokers,
                    );
                    assert_eq!(grown, all[brokers as usize..]);
                }
            }
        }
    }

    #[test]
    fn the_placement_is_a_function_of_the_topic_id() {
        let id = Uuid::from_u128(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210);
        let a = Placement::for_new_topic(id, 7).assign(7, 3, 0, 20);
        let b = Placement::for_new_topic(id, 7).assign(7, 3, 0, 20);
        assert_eq!(a, b);
        assert_eq!(
            Placement::for_new_topic(id, 7),
            Placement {
                start: (0xfedc_ba98_7654_3210u64 % 7) as u32,
                shift: (0x0123_4567_89ab_cdefu64 % 7) as u32,
            }
        );
    }
}
