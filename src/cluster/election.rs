//! Leader elections and ISR changes as pure functions of a partition's
//! state and the brokers that are live: Kafka's rules, as KRaft's
//! `PartitionChangeBuilder` applies them.
//!
//! - **A broker is fenced**: every partition whose ISR holds it drops it
//!   from the ISR, except its last member, which stays (so that a clean
//!   election is possible when it returns). If it led, the leader becomes
//!   the first replica (in replica order) that is in the ISR and live; if
//!   there is none, the first live replica when
//!   `unclean.leader.election.enable` is set (the ISR is reset to it: the
//!   records it lacks are lost), else no leader.
//! - **A broker returns**: a leaderless partition whose ISR holds it
//!   elects it (a leaderless partition may also elect it uncleanly, if
//!   allowed); then, with `auto.leader.rebalance.enable`, preferred-leader
//!   election for the partitions it prefers.
//! - **Preferred-leader election**: the first replica leads if it is live,
//!   in the ISR and not leading already.
//!
//! Every change of leader (to none included) bumps the leader epoch; every
//! change bumps the partition epoch; an ISR-only change keeps the leader
//! epoch. A function returns `None` when the partition does not change.

use crate::replica::LeaderAndIsr;

/// The brokers that are live (not fenced), by id.
pub(crate) trait Live {
    /// Whether broker `id` is live.
    fn is_live(&self, id: u32) -> bool;
}

impl<F: Fn(u32) -> bool> Live for F {
    fn is_live(&self, id: u32) -> bool {
        self(id)
    }
}

/// `state` with `leader` and `isr`, its epochs bumped as Kafka bumps them;
/// `None` if nothing changes.
fn change(state: &LeaderAndIsr, leader: Option<u32>, isr: Vec<u32>) -> Option<LeaderAndIsr> {
    if leader == state.leader && isr == state.isr {
        return None;
    }
    let leader_epoch = if leader == state.leader {
        state.leader_epoch
    } else {
        state.leader_epoch.saturating_add(1)
    };
    Some(LeaderAndIsr {
        replicas: state.replicas.clone(),
        leader,
        leader_epoch,
        partition_epoch: state.partition_epoch.saturating_add(1),
        isr,
    })
}

/// The first replica, in replica order, in `isr` and live.
fn first_clean(state: &LeaderAndIsr, isr: &[u32], live: &impl Live) -> Option<u32> {
    state
        .replicas
        .iter()
        .copied()
        .find(|&b| isr.contains(&b) && live.is_live(b))
}

/// The leader and ISR for a partition that needs a new leader: the first
/// live ISR member in replica order, else (if `unclean`) the first live
/// replica with itself as the whole ISR, else none (the ISR kept).
fn elect(
    state: &LeaderAndIsr,
    isr: Vec<u32>,
    live: &impl Live,
    unclean: bool,
) -> (Option<u32>, Vec<u32>) {
    if let Some(leader) = first_clean(state, &isr, live) {
        return (Some(leader), isr);
    }
    if unclean && let Some(leader) = state.replicas.iter().copied().find(|&b| live.is_live(b)) {
        return (Some(leader), vec![leader]);
    }
    (None, isr)
}

/// The change to `state` when broker `fenced` is fenced (`live` already
/// says it is not live).
pub(crate) fn on_fenced(
    state: &LeaderAndIsr,
    fenced: u32,
    live: &impl Live,
    unclean: bool,
) -> Option<LeaderAndIsr> {
    if !state.replicas.contains(&fenced) {
        return None;
    }
    let mut isr = state.isr.clone();
    if isr.len() > 1 {
        isr.retain(|&b| b != fenced);
    }
    if state.leader == Some(fenced) {
        let (leader, isr) = elect(state, isr, live, unclean);
        change(state, leader, isr)
    } else {
        change(state, state.leader, isr)
    }
}

/// The change to `state` when broker `returned` is live again (`live`
/// already says so): a leaderless partition elects a leader (`returned`
/// if it is the first live ISR member, or uncleanly if allowed); then,
/// with `rebalance`, `returned` takes back the leadership if it is the
/// preferred replica.
pub(crate) fn on_unfenced(
    state: &LeaderAndIsr,
    returned: u32,
    live: &impl Live,
    unclean: bool,
    rebalance: bool,
) -> Option<LeaderAndIsr> {
    if !state.replicas.contains(&returned) {
        return None;
    }
    let elected = if state.leader.is_none() {
        let (leader, isr) = elect(state, state.isr.clone(), live, unclean);
        change(state, leader, isr)
    } else {
        None
    };
    if rebalance && state.replicas.first() == Some(&returned) {
        let base = elected.as_ref().unwrap_or(state);
        if let Some(preferred) = preferred(base, live) {
            // One change, its epochs bumped once from `state`.
            return change(state, preferred.leader, preferred.isr);
        }
    }
    elected
}

/// Preferred-leader election: the first replica leads if it is live, in
/// the ISR and not leading yet.
pub(crate) fn preferred(state: &LeaderAndIsr, live: &impl Live) -> Option<LeaderAndIsr> {
    let &first = state.replicas.first()?;
    if state.leader == Some(first) || !state.isr.contains(&first) || !live.is_live(first) {
        return None;
    }
    change(state, Some(first), state.isr.clone())
}

/// The election a partition found leaderless when the cluster opens (every
/// broker live) needs, if any.
pub(crate) fn at_open(
    state: &LeaderAndIsr,
    live: &impl Live,
    unclean: bool,
) -> Option<LeaderAndIsr> {
    if state.leader.is_some() {
        return None;
    }
    let (leader, isr) = elect(state, state.isr.clone(), live, unclean);
    change(state, leader, isr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(replicas: &[u32], leader: Option<u32>, isr: &[u32]) -> LeaderAndIsr {
        LeaderAndIsr {
            replicas: replicas.to_vec(),
            leader,
            leader_epoch: 5,
            partition_epoch: 10,
            isr: isr.to_vec(),
        }
    }

    /// The expected result: leader, leader epoch, ISR (partition epoch
    /// always 11).
    fn after(
        replicas: &[u32],
        leader: Option<u32>,
        leader_epoch: i32,
        isr: &[u32],
    ) -> LeaderAndIsr {
        LeaderAndIsr {
            replicas: replicas.to_vec(),
            leader,
            leader_epoch,
            partition_epoch: 11,
            isr: isr.to_vec(),
        }
    }

    /// (case, state, fenced broker, live brokers after, unclean, expected)
    type FenceCase = (
        &'static str,
        LeaderAndIsr,
        u32,
        &'static [u32],
        bool,
        Option<LeaderAndIsr>,
    );

    /// (case, state, returned broker, live brokers, unclean, rebalance,
    /// expected)
    type ReturnCase = (
        &'static str,
        LeaderAndIsr,
        u32,
        &'static [u32],
        bool,
        bool,
        Option<LeaderAndIsr>,
    );

    fn live_set(ids: &'static [u32]) -> impl Live {
        move |b| ids.contains(&b)
    }

    #[test]
    fn fencing_follows_kafkas_rules() {
        let r = [0, 1, 2];
        // (case, state, fenced broker, live brokers after, unclean, expected)
        let cases: Vec<FenceCase> = vec![
            (
                "a follower leaves the ISR; the leader epoch stays",
                state(&r, Some(0), &[0, 1, 2]),
                1,
                &[0, 2],
                false,
                Some(after(&r, Some(0), 5, &[0, 2])),
            ),
            (
                "the leader's fencing elects the first live ISR member in replica order",
                state(&r, Some(0), &[0, 2, 1]),
                0,
                &[1, 2],
                false,
                Some(after(&r, Some(1), 6, &[2, 1])),
            ),
            (
                "an ISR member that is not live is skipped",
                state(&r, Some(0), &[0, 1, 2]),
                0,
                &[2],
                false,
                Some(after(&r, Some(2), 6, &[1, 2])),
            ),
            (
                "the last ISR member stays in the ISR; no leader without unclean election",
                state(&r, Some(0), &[0]),
                0,
                &[1, 2],
                false,
                Some(after(&r, None, 6, &[0])),
            ),
            (
                "unclean election: the first live replica, alone in the ISR",
                state(&r, Some(0), &[0]),
                0,
                &[2, 1],
                true,
                Some(after(&r, Some(1), 6, &[1])),
            ),
            (
                "unclean election with no live replica: no leader",
                state(&r, Some(0), &[0]),
                0,
                &[],
                true,
                Some(after(&r, None, 6, &[0])),
            ),
            (
                "a broker outside the ISR changes nothing",
                state(&r, Some(0), &[0, 1]),
                2,
                &[0, 1],
                false,
                None,
            ),
            (
                "a broker holding no replica changes nothing",
                state(&[0, 1], Some(0), &[0, 1]),
                2,
                &[0, 1],
                false,
                None,
            ),
            (
                "a leaderless partition's last ISR member stays",
                state(&r, None, &[1]),
                1,
                &[0],
                false,
                None,
            ),
            (
                "a leaderless partition loses a fenced ISR member that is not the last",
                state(&r, None, &[1, 2]),
                1,
                &[0],
                false,
                Some(after(&r, None, 5, &[2])),
            ),
        ];
        for (case, before, fenced, live, unclean, expected) in cases {
            let got = on_fenced(&before, fenced, &live_set(live), unclean);
            assert_eq!(got, expected, "{case}");
        }
    }

    #[test]
    fn a_return_elects_leaderless_partitions_and_the_preferred_leader() {
        let r = [0, 1, 2];
        // (case, state, returned broker, live brokers, unclean, rebalance, expected)
        let cases: Vec<ReturnCase> = vec![
            (
                "a leaderless partition whose ISR holds it elects it",
                state(&r, None, &[1]),
                1,
                &[1],
                false,
                true,
                Some(after(&r, Some(1), 6, &[1])),
            ),
            (
                "a leaderless partition whose ISR lacks it stays leaderless",
                state(&r, None, &[1]),
                2,
                &[2],
                false,
                true,
                None,
            ),
            (
                "... unless unclean election is allowed",
                state(&r, None, &[1]),
                2,
                &[2],
                true,
                true,
                Some(after(&r, Some(2), 6, &[2])),
            ),
            (
                "the preferred replica in the ISR takes the leadership back",
                state(&r, Some(1), &[1, 2, 0]),
                0,
                &[0, 1, 2],
                false,
                true,
                Some(after(&r, Some(0), 6, &[1, 2, 0])),
            ),
            (
                "not without auto.leader.rebalance.enable",
                state(&r, Some(1), &[1, 2, 0]),
                0,
                &[0, 1, 2],
                false,
                false,
                None,
            ),
            (
                "not while it is out of the ISR",
                state(&r, Some(1), &[1, 2]),
                0,
                &[0, 1, 2],
                false,
                true,
                None,
            ),
            (
                "a broker that is not the preferred replica takes nothing",
                state(&r, Some(0), &[0, 1]),
                2,
                &[0, 1, 2],
                false,
                true,
                None,
            ),
            (
                "leaderless, its ISR the preferred replica alone: one change, one bump",
                state(&r, None, &[0]),
                0,
                &[0, 1, 2],
                false,
                true,
                Some(after(&r, Some(0), 6, &[0])),
            ),
        ];
        for (case, before, returned, live, unclean, rebalance, expected) in cases {
            let got = on_unfenced(&before, returned, &live_set(live), unclean, rebalance);
            assert_eq!(got, expected, "{case}");
        }
    }

    #[test]
    fn preferred_leader_election() {
        let r = [2, 0, 1];
        let all = live_set(&[0, 1, 2]);
        assert_eq!(
            preferred(&state(&r, Some(0), &[0, 2]), &all),
            Some(after(&r, Some(2), 6, &[0, 2]))
        );
        assert_eq!(preferred(&state(&r, Some(2), &[0, 2]), &all), None, "leads");
        assert_eq!(
            preferred(&state(&r, Some(0), &[0, 1]), &all),
            None,
            "not in ISR"
        );
        assert_eq!(
            preferred(&state(&r, Some(0), &[0, 2]), &live_set(&[0, 1])),
            None,
            "not live"
        );
        assert_eq!(
            preferred(&state(&r, None, &[2]), &all),
            Some(after(&r, Some(2), 6, &[2])),
            "a leaderless partition too"
        );
    }

    #[test]
    fn at_open_only_leaderless_partitions_elect() {
        let r = [0, 1, 2];
        let all = live_set(&[0, 1, 2]);
        assert_eq!(at_open(&state(&r, Some(1), &[1]), &all, false), None);
        assert_eq!(
            at_open(&state(&r, None, &[2]), &all, false),
            Some(after(&r, Some(2), 6, &[2]))
        );
    }

    use proptest::prelude::Strategy;

    #[derive(Debug, Clone)]
    enum Op {
        Fence(u32),
        Unfence(u32),
        Preferred,
        /// The leader drops the `n`-th other ISR member (AlterPartition).
        Shrink(usize),
        /// The leader adds the `n`-th live replica outside the ISR.
        Expand(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            (0..5u32).prop_map(Op::Fence),
            (0..5u32).prop_map(Op::Unfence),
            Just(Op::Preferred),
            (0..4usize).prop_map(Op::Shrink),
            (0..4usize).prop_map(Op::Expand),
        ]
    }

    /// The leader is live and in the ISR; a leaderless partition has no
    /// live ISR member (and, with unclean election, no live replica).
    fn invariant(
        state: &LeaderAndIsr,
        live: &std::collections::BTreeSet<u32>,
        unclean: bool,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        use proptest::prop_assert;
        match state.leader {
            Some(l) => prop_assert!(live.contains(&l) && state.isr.contains(&l), "{:?}", state),
            None => {
                prop_assert!(state.isr.iter().all(|b| !live.contains(b)), "{:?}", state);
                if unclean {
                    prop_assert!(
                        state.replicas.iter().all(|b| !live.contains(b)),
                        "{:?}",
                        state
                    );
                }
            }
        }
        Ok(())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Random sequences of fencing, returns, preferred elections and
        /// the leader's ISR changes, over one partition: every change is
        /// one the metadata replay accepts, its epochs bumped as Kafka
        /// bumps them; the leader is live and in the ISR; a partition is
        /// leaderless only when no (clean, or with unclean election any)
        /// live replica could lead; without unclean election every new
        /// leader comes from the ISR before it; no leader epoch has two
        /// leaders.
        #[test]
        fn elections_keep_kafkas_invariants(
            replicas in proptest::sample::subsequence(vec![0u32, 1, 2, 3, 4], 1..=4)
                .prop_shuffle(),
            unclean in proptest::bool::ANY,
            rebalance in proptest::bool::ANY,
            ops in proptest::collection::vec(op(), 1..60),
        ) {
            use std::collections::{BTreeMap, BTreeSet};
            use crate::cluster::metadata::{MetadataRecord, Registry};
            use proptest::prelude::*;
            let id = uuid::Uuid::from_u128(1);
            let mut registry = Registry::default();
            registry.apply(&MetadataRecord::Topic { name: "t".into(), id }).unwrap();
            let mut state = LeaderAndIsr::new(replicas.clone());
            registry.apply(&state.record(id, 0)).unwrap();
            let mut live: BTreeSet<u32> = (0..5).collect();
            let mut leaders = BTreeMap::from([(state.leader_epoch, state.leader)]);
            for op in ops {
                invariant(&state, &live, unclean)?;
                let next = match op {
                    Op::Fence(b) => {
                        if !live.remove(&b) { continue; }
                        on_fenced(&state, b, &|x| live.contains(&x), unclean)
                    }
                    Op::Unfence(b) => {
                        if !live.insert(b) { continue; }
                        on_unfenced(&state, b, &|x| live.contains(&x), unclean, rebalance)
                    }
                    Op::Preferred => preferred(&state, &|x| live.contains(&x)),
                    Op::Shrink(n) => {
                        let Some(leader) = state.leader else { continue };
                        let others: Vec<u32> =
                            state.isr.iter().copied().filter(|&b| b != leader).collect();
                        let Some(&gone) = others.get(n) else { continue };
                        let isr = state.isr.iter().copied().filter(|&b| b != gone).collect();
                        change(&state, state.leader, isr)
                    }
                    Op::Expand(n) => {
                        if state.leader.is_none() { continue; }
                        let outside: Vec<u32> = state.replicas.iter().copied()
                            .filter(|b| !state.isr.contains(b) && live.contains(b)).collect();
                        let Some(&back) = outside.get(n) else { continue };
                        let mut isr = state.isr.clone();
                        isr.push(back);
                        change(&state, state.leader, isr)
                    }
                };
                let Some(next) = next else { continue };
                prop_assert_eq!(next.partition_epoch, state.partition_epoch + 1);
                prop_assert_eq!(
                    next.leader_epoch,
                    state.leader_epoch + i32::from(next.leader != state.leader)
                );
                if let Err(e) = registry.apply(&next.change_record(id, 0)) {
                    prop_assert!(false, "replay refused {:?} after {:?}: {}", next, state, e);
                }
                if !unclean
                    && next.leader != state.leader
                    && let Some(l) = next.leader
                {
                    prop_assert!(state.isr.contains(&l), "unclean: {:?} -> {:?}", state, next);
                }
                if let Some(previous) = leaders.insert(next.leader_epoch, next.leader) {
                    prop_assert_eq!(previous, next.leader, "two leaders in one epoch");
                }
                state = next;
            }
            invariant(&state, &live, unclean)?;
        }
    }
}
