//! Kafka's `AbstractStickyAssignor` and its two faces, `StickyAssignor` and
//! `CooperativeStickyAssignor`.
//!
//! Two algorithms, as in Kafka:
//!
//! - [`constrained`]: when every member subscribes to the same topics. Each
//!   member keeps up to its quota of the partitions it owned, and the rest
//!   are dealt round-robin to members under quota.
//! - [`General`]: otherwise. Owned partitions are kept, unassigned ones go to
//!   the least loaded eligible member, then partitions are moved one at a
//!   time from members with at least two more partitions than another
//!   eligible member, until balanced; a round that does not improve the
//!   balance score is undone.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use super::{Assignor, RebalanceProtocol, Subscription, empty_assignment, subscribed_topics};
use crate::types::TopicPartition;

/// Kafka's `DEFAULT_GENERATION`: the generation of a member that never took
/// part in one.
const NO_GENERATION: i32 = -1;

type Assignment = BTreeMap<String, Vec<TopicPartition>>;

/// A balanced assignment that moves as few partitions as possible: Kafka's
/// `StickyAssignor` (`"sticky"`), for the eager protocol.
///
/// - **Balance**: no member can take a partition from a member that has two
///   or more partitions more than it (when all members subscribe to the same
///   topics: every member has ⌊P/M⌋ or ⌈P/M⌉ partitions).
/// - **Stickiness**: within that balance, members keep as many of their
///   [`owned_partitions`](Subscription::owned_partitions) as they can. When
///   two members claim the same partition, the one with the higher
///   [`generation`](Subscription::generation) keeps it; two claims in the
///   same generation are both dropped.
///
/// ```
/// use std::collections::BTreeMap;
/// use logbus::{Assignor, StickyAssignor, Subscription, TopicPartition};
///
/// let tp = TopicPartition::new;
/// let topics = BTreeMap::from([("t".to_string(), 3)]);
/// // "a" owned all three partitions; "b" joins.
/// let members = BTreeMap::from([
///     ("a".to_string(), Subscription::new(["t"])
///         .with_owned_partitions([tp("t", 0), tp("t", 1), tp("t", 2)])
///         .with_generation(1)),
///     ("b".to_string(), Subscription::new(["t"])),
/// ]);
/// let assignment = StickyAssignor.assign(&topics, &members);
/// // "a" keeps two of its partitions; only one moves.
/// assert_eq!(assignment["a"], [tp("t", 0), tp("t", 1)]);
/// assert_eq!(assignment["b"], [tp("t", 2)]);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct StickyAssignor;

impl StickyAssignor {
    /// `"sticky"`.
    pub const NAME: &'static str = "sticky";
}

impl Assignor for StickyAssignor {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, u32>,
        members: &BTreeMap<String, Subscription>,
    ) -> Assignment {
        sticky_assign(partitions_per_topic, members).assignment
    }
}

/// [`StickyAssignor`]'s assignment for the cooperative protocol: Kafka's
/// `CooperativeStickyAssignor` (`"cooperative-sticky"`).
///
/// It computes the sticky assignment, then leaves out every partition that
/// would move from one member to another while its previous owner still
/// claims it. The previous owner finds the partition missing from its
/// assignment and revokes it; the other members keep consuming throughout.
///
/// **Who triggers the follow-up rebalance**: the member that revoked
/// partitions. As in Kafka's `ConsumerCoordinator`, a member whose new
/// assignment lacks some of its owned partitions revokes them and then
/// rejoins the group at once; in that second rebalance nobody claims those
/// partitions any more, so the assignor hands them to their new owners.
/// Partitions nobody owned (new partitions, or those of members that left)
/// are assigned in the first round.
///
/// ```
/// use std::collections::BTreeMap;
/// use logbus::{Assignor, CooperativeStickyAssignor, Subscription, TopicPartition};
///
/// let tp = TopicPartition::new;
/// let topics = BTreeMap::from([("t".to_string(), 2)]);
/// let sub = |owned: Vec<TopicPartition>| {
///     Subscription::new(["t"]).with_owned_partitions(owned).with_generation(1)
/// };
/// // Round 1: "b" joins while "a" owns both partitions.
/// let round1 = BTreeMap::from([
///     ("a".to_string(), sub(vec![tp("t", 0), tp("t", 1)])),
///     ("b".to_string(), sub(vec![])),
/// ]);
/// let first = CooperativeStickyAssignor.assign(&topics, &round1);
/// assert_eq!(first["a"], [tp("t", 0)]); // "a" must revoke t-1 ...
/// assert!(first["b"].is_empty()); // ... before "b" may have it.
///
/// // Round 2: "a" revoked t-1 and rejoined.
/// let round2 = BTreeMap::from([
///     ("a".to_string(), sub(first["a"].clone())),
///     ("b".to_string(), sub(vec![])),
/// ]);
/// let second = CooperativeStickyAssignor.assign(&topics, &round2);
/// assert_eq!(second["a"], [tp("t", 0)]);
/// assert_eq!(second["b"], [tp("t", 1)]);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct CooperativeStickyAssignor;

impl CooperativeStickyAssignor {
    /// `"cooperative-sticky"`.
    pub const NAME: &'static str = "cooperative-sticky";
}

impl Assignor for CooperativeStickyAssignor {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Cooperative
    }

    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, u32>,
        members: &BTreeMap<String, Subscription>,
    ) -> Assignment {
        let StickyOutcome {
            mut assignment,
            transferring,
        } = sticky_assign(partitions_per_topic, members);
        let transferring =
            transferring.unwrap_or_else(|| partitions_changing_owner(members, &assignment));
        for (tp, new_owner) in transferring {
            if let Some(list) = assignment.get_mut(&new_owner) {
                list.retain(|p| *p != tp);
            }
        }
        assignment
    }
}

/// Partitions assigned to a member that did not own them while another
/// present member that owned them loses them: Kafka's
/// `computePartitionsTransferringOwnership`.
fn partitions_changing_owner(
    members: &BTreeMap<String, Subscription>,
    assignment: &Assignment,
) -> BTreeMap<TopicPartition, String> {
    let mut added = BTreeMap::new();
    let mut revoked = HashSet::new();
    for (member, assigned) in assignment {
        let owned: HashSet<&TopicPartition> = members[member].owned_partitions.iter().collect();
        let assigned_set: HashSet<&TopicPartition> = assigned.iter().collect();
        for tp in assigned.iter().filter(|tp| !owned.contains(tp)) {
            added.insert(tp.clone(), member.clone());
        }
        revoked.extend(owned.into_iter().filter(|tp| !assigned_set.contains(tp)));
    }
    added.retain(|tp, _| revoked.contains(tp));
    added
}

/// The sticky assignment, and for the constrained algorithm the partitions
/// it moved between members (`None`: compute them from the subscriptions).
struct StickyOutcome {
    assignment: Assignment,
    transferring: Option<BTreeMap<TopicPartition, String>>,
}

fn sticky_assign(
    partitions_per_topic: &BTreeMap<String, u32>,
    members: &BTreeMap<String, Subscription>,
) -> StickyOutcome {
    let topics = subscribed_topics(partitions_per_topic, members);
    let owned = OwnedPartitions::resolve(&topics, members);
    let mut outcome = if members.is_empty() {
        StickyOutcome {
            assignment: Assignment::new(),
            transferring: Some(BTreeMap::new()),
        }
    } else if all_subscriptions_equal(members) {
        constrained(&topics, owned)
    } else {
        StickyOutcome {
            assignment: General::new(&topics, members, owned).build(members),
            transferring: None,
        }
    };
    for list in outcome.assignment.values_mut() {
        list.sort_unstable();
    }
    outcome
}

/// Whether every member subscribes to the same set of topics.
fn all_subscriptions_equal(members: &BTreeMap<String, Subscription>) -> bool {
    let mut sets = members
        .values()
        .map(|s| s.topics.iter().map(String::as_str).collect::<BTreeSet<_>>());
    match sets.next() {
        Some(first) => sets.all(|s| s == first),
        None => true,
    }
}

/// Each member's claims on existing partitions, conflicts resolved as in
/// Kafka's `allSubscriptionsEqual`.
struct OwnedPartitions {
    /// Per member (every member present): the claims it keeps.
    by_member: Assignment,
    /// Partitions claimed by two members in the same generation: nobody
    /// keeps them.
    disputed: BTreeSet<TopicPartition>,
    /// The highest generation among the members.
    max_generation: i32,
}

impl OwnedPartitions {
    fn resolve(topics: &BTreeMap<String, u32>, members: &BTreeMap<String, Subscription>) -> Self {
        let mut by_member: Assignment = empty_assignment(members);
        let mut disputed = BTreeSet::new();
        let mut claimant: HashMap<TopicPartition, &str> = HashMap::new();
        let mut max_generation = NO_GENERATION;
        for (member, sub) in members {
            let generation = sub.valid_generation().unwrap_or(NO_GENERATION);
            max_generation = max_generation.max(generation);
            let mut seen = HashSet::new();
            for tp in &sub.owned_partitions {
                let exists = topics.get(&tp.topic).is_some_and(|&n| tp.partition < n);
                if !exists || !seen.insert(tp) {
                    continue;
                }
                match claimant.get(tp).copied() {
                    None => {
                        by_member.get_mut(member).expect("present").push(tp.clone());
                        claimant.insert(tp.clone(), member);
                    }
                    Some(other) => {
                        let other_generation =
                            members[other].valid_generation().unwrap_or(NO_GENERATION);
                        if generation >= other_generation {
                            by_member
                                .get_mut(other)
                                .expect("present")
                                .retain(|p| p != tp);
                            claimant.insert(tp.clone(), member);
                            if generation == other_generation {
                                disputed.insert(tp.clone());
                            } else {
                                by_member.get_mut(member).expect("present").push(tp.clone());
                            }
                        }
                    }
                }
            }
        }
        OwnedPartitions {
            by_member,
            disputed,
            max_generation,
        }
    }
}

/// All partitions of `topics`, by topic name then partition.
fn all_partitions(topics: &BTreeMap<String, u32>) -> impl Iterator<Item = TopicPartition> + '_ {
    topics
        .iter()
        .flat_map(|(t, &n)| (0..n).map(move |p| TopicPartition::new(t.as_str(), p)))
}

/// Kafka's `ConstrainedAssignmentBuilder`: every member subscribes to every
/// topic in `topics`, and `members` is not empty.
fn constrained(topics: &BTreeMap<String, u32>, owned: OwnedPartitions) -> StickyOutcome {
    let OwnedPartitions {
        by_member,
        disputed,
        ..
    } = owned;
    let total: usize = topics.values().map(|&n| n as usize).sum();
    let n_members = by_member.len();
    let min_quota = total / n_members;
    let max_quota = total.div_ceil(n_members);
    let expected_over_min = total % n_members;
    let mut over_min = 0;

    let mut assignment: Assignment = by_member.keys().map(|m| (m.clone(), Vec::new())).collect();
    let mut assigned: HashSet<TopicPartition> = HashSet::new();
    // Owned partitions given up for balance, with who gave them up.
    let mut maybe_revoked: HashMap<TopicPartition, String> = HashMap::new();
    let mut under_min: Vec<String> = Vec::new();
    let mut at_min: VecDeque<String> = VecDeque::new();

    // 1. Members keep owned partitions, up to their quota.
    for (member, claims) in by_member {
        let mut claims: Vec<TopicPartition> = claims
            .into_iter()
            .filter(|tp| !disputed.contains(tp))
            .collect();
        claims.sort_by(|a, b| (a.partition, &a.topic).cmp(&(b.partition, &b.topic)));
        let keep = if claims.len() < min_quota {
            under_min.push(member.clone());
            claims.len()
        } else if claims.len() >= max_quota && over_min < expected_over_min {
            over_min += 1;
            if over_min == expected_over_min {
                at_min.clear();
            }
            max_quota
        } else {
            if over_min < expected_over_min {
                at_min.push_back(member.clone());
            }
            min_quota
        };
        for tp in claims.drain(keep..) {
            maybe_revoked.insert(tp, member.clone());
        }
        assigned.extend(claims.iter().cloned());
        *assignment.get_mut(&member).expect("present") = claims;
    }

    // 2. Deal the rest round-robin: first to members under the minimum
    //    quota, then to members at it, up to the number of members that may
    //    hold one more.
    let unassigned: Vec<TopicPartition> = all_partitions(topics)
        .filter(|tp| !assigned.contains(tp))
        .collect();
    under_min.sort();
    at_min.make_contiguous().sort();
    let mut transferring = BTreeMap::new();
    let mut next = 0;
    for tp in unassigned {
        let (member, from_under) = if next < under_min.len() {
            (under_min[next].clone(), true)
        } else if !under_min.is_empty() {
            next = 0;
            (under_min[0].clone(), true)
        } else if let Some(member) = at_min.pop_front() {
            (member, false)
        } else {
            // Unreachable: the quotas add up to the number of partitions.
            // Kafka throws here; stay total and give it to the least loaded.
            debug_assert!(false, "no member left under quota for {tp}");
            let member = assignment
                .iter()
                .min_by_key(|(m, l)| (l.len(), *m))
                .map(|(m, _)| m.clone())
                .expect("members is not empty");
            (member, false)
        };
        let moved = maybe_revoked.get(&tp).is_some_and(|old| *old != member);
        if moved || disputed.contains(&tp) {
            transferring.insert(tp.clone(), member.clone());
        }
        let list = assignment.get_mut(&member).expect("present");
        list.push(tp);
        let count = list.len();
        if count == min_quota {
            if from_under {
                under_min.remove(next);
            }
            at_min.push_back(member);
        } else if from_under {
            next += 1;
        }
    }
    StickyOutcome {
        assignment,
        transferring: Some(transferring),
    }
}

/// Where partitions moved during the balancing of [`General`], by topic and
/// (from, to) pair: Kafka's `PartitionMovements`. Used to move back a
/// partition that went the opposite way rather than a second one, so that
/// no partition of a topic travels in both directions between two members.
#[derive(Default)]
struct Movements {
    by_partition: HashMap<TopicPartition, (String, String)>,
    by_topic: HashMap<String, BTreeMap<(String, String), BTreeSet<TopicPartition>>>,
}

impl Movements {
    fn remove(&mut self, tp: &TopicPartition) -> Option<(String, String)> {
        let pair = self.by_partition.remove(tp)?;
        if let Some(topic) = self.by_topic.get_mut(&tp.topic) {
            if let Some(set) = topic.get_mut(&pair) {
                set.remove(tp);
                if set.is_empty() {
                    topic.remove(&pair);
                }
            }
            if topic.is_empty() {
                self.by_topic.remove(&tp.topic);
            }
        }
        Some(pair)
    }

    fn add(&mut self, tp: TopicPartition, pair: (String, String)) {
        self.by_topic
            .entry(tp.topic.clone())
            .or_default()
            .entry(pair.clone())
            .or_default()
            .insert(tp.clone());
        self.by_partition.insert(tp, pair);
    }

    fn record(&mut self, tp: &TopicPartition, from: &str, to: &str) {
        match self.remove(tp) {
            // Moving back to where it started: no movement left.
            Some((origin, _)) if origin == to => {}
            Some((origin, _)) => self.add(tp.clone(), (origin, to.to_string())),
            None => self.add(tp.clone(), (from.to_string(), to.to_string())),
        }
    }

    /// The partition to move from `from` to `to` instead of `tp`: one that
    /// earlier moved from `to` towards `from`, if any.
    fn partition_to_move(&self, tp: &TopicPartition, from: &str, to: &str) -> TopicPartition {
        let Some(topic) = self.by_topic.get(&tp.topic) else {
            return tp.clone();
        };
        let from = self
            .by_partition
            .get(tp)
            .map_or(from, |(origin, _)| origin.as_str());
        topic
            .get(&(to.to_string(), from.to_string()))
            .and_then(|set| set.first())
            .cloned()
            .unwrap_or_else(|| tp.clone())
    }
}

/// Kafka's `GeneralAssignmentBuilder`, for members with different
/// subscriptions.
struct General<'a> {
    topics: &'a BTreeMap<String, u32>,
    /// Per topic, the members subscribing to it (by member id).
    topic_members: BTreeMap<&'a str, Vec<&'a str>>,
    /// Per member, the topics of `topics` it subscribes to.
    member_topics: BTreeMap<&'a str, BTreeSet<&'a str>>,
    current: Assignment,
    owner: HashMap<TopicPartition, String>,
    /// Members by (number of partitions, member id).
    by_load: BTreeSet<(usize, String)>,
    /// All partitions, topics with fewer subscribers first.
    sorted_partitions: Vec<TopicPartition>,
    /// Per partition, its owner in an older generation than the newest.
    previous: HashMap<TopicPartition, (String, i32)>,
    movements: Movements,
    revocation_required: bool,
    max_generation: i32,
}

impl<'a> General<'a> {
    fn new(
        topics: &'a BTreeMap<String, u32>,
        members: &'a BTreeMap<String, Subscription>,
        owned: OwnedPartitions,
    ) -> Self {
        let mut topic_members: BTreeMap<&str, Vec<&str>> =
            topics.keys().map(|t| (t.as_str(), Vec::new())).collect();
        let mut member_topics = BTreeMap::new();
        for (member, sub) in members {
            let mine: BTreeSet<&str> = sub
                .topics
                .iter()
                .map(String::as_str)
                .filter(|t| topics.contains_key(*t))
                .collect();
            for t in &mine {
                topic_members
                    .get_mut(t)
                    .expect("a known topic")
                    .push(member);
            }
            member_topics.insert(member.as_str(), mine);
        }
        let mut by_subscribers: Vec<&str> = topic_members.keys().copied().collect();
        by_subscribers.sort_by_key(|t| (topic_members[t].len(), *t));
        let sorted_partitions = by_subscribers
            .into_iter()
            .flat_map(|t| (0..topics[t]).map(move |p| TopicPartition::new(t, p)))
            .collect();
        General {
            topics,
            topic_members,
            member_topics,
            current: owned.by_member,
            owner: HashMap::new(),
            by_load: BTreeSet::new(),
            sorted_partitions,
            previous: HashMap::new(),
            movements: Movements::default(),
            revocation_required: false,
            max_generation: owned.max_generation,
        }
    }

    fn build(mut self, members: &BTreeMap<String, Subscription>) -> Assignment {
        self.record_previous_owners(members);
        // Keep owned partitions of still-subscribed topics.
        for (member, list) in &mut self.current {
            let subscribed = &self.member_topics[member.as_str()];
            list.retain(|tp| {
                let keep = subscribed.contains(tp.topic.as_str());
                self.revocation_required |= !keep;
                keep
            });
            for tp in list.iter() {
                self.owner.insert(tp.clone(), member.clone());
            }
        }
        let unassigned: Vec<TopicPartition> = self
            .sorted_partitions
            .iter()
            .filter(|tp| !self.owner.contains_key(*tp))
            .cloned()
            .collect();
        self.by_load = self
            .current
            .iter()
            .map(|(m, l)| (l.len(), m.clone()))
            .collect();
        self.balance(unassigned);
        self.current
    }

    /// Kafka's `prepopulateCurrentAssignments`: owners of a partition in a
    /// generation older than the newest one, so balancing can move a
    /// partition back to its owner before last.
    fn record_previous_owners(&mut self, members: &BTreeMap<String, Subscription>) {
        for (member, sub) in members {
            let generation = match sub.valid_generation() {
                Some(g) if g < self.max_generation => g,
                None if self.max_generation > NO_GENERATION => NO_GENERATION,
                _ => continue,
            };
            for tp in &sub.owned_partitions {
                let newer = self.previous.get(tp).is_none_or(|(_, g)| generation > *g);
                if newer {
                    self.previous
                        .insert(tp.clone(), (member.clone(), generation));
                }
            }
        }
    }

    fn load(&self, member: &str) -> Option<usize> {
        self.current.get(member).map(Vec::len)
    }

    fn max_assignment_size(&self, member: &str) -> usize {
        self.member_topics[member]
            .iter()
            .map(|t| self.topics[*t] as usize)
            .sum()
    }

    fn give(&mut self, tp: TopicPartition, member: &str) {
        let list = self.current.get_mut(member).expect("a balanced member");
        self.by_load.remove(&(list.len(), member.to_string()));
        list.push(tp.clone());
        self.by_load.insert((list.len(), member.to_string()));
        self.owner.insert(tp, member.to_string());
    }

    fn take(&mut self, tp: &TopicPartition, member: &str) {
        let list = self.current.get_mut(member).expect("a balanced member");
        self.by_load.remove(&(list.len(), member.to_string()));
        list.retain(|p| p != tp);
        self.by_load.insert((list.len(), member.to_string()));
    }

    /// The least loaded member subscribing to `topic`.
    fn least_loaded_for(&self, topic: &str) -> Option<String> {
        self.by_load
            .iter()
            .find(|(_, m)| self.member_topics[m.as_str()].contains(topic))
            .map(|(_, m)| m.clone())
    }

    fn topic_is_movable(&self, topic: &str) -> bool {
        self.topic_members[topic].len() >= 2
    }

    fn member_is_movable(&self, member: &str) -> bool {
        let list = &self.current[member];
        list.len() < self.max_assignment_size(member)
            || list.iter().any(|tp| self.topic_is_movable(&tp.topic))
    }

    fn balance(&mut self, mut unassigned: Vec<TopicPartition>) {
        let initializing = self.current.values().all(Vec::is_empty);
        for tp in &unassigned {
            if let Some(member) = self.least_loaded_for(&tp.topic) {
                self.give(tp.clone(), &member);
            }
        }
        // Only partitions of topics with two or more subscribers can move ...
        let fixed_topics: HashSet<String> = self
            .topics
            .keys()
            .filter(|t| !self.topic_is_movable(t))
            .cloned()
            .collect();
        self.sorted_partitions
            .retain(|tp| !fixed_topics.contains(&tp.topic));
        unassigned.retain(|tp| !fixed_topics.contains(&tp.topic));
        // ... and only members that could gain or lose one take part.
        let fixed_members: Vec<String> = self
            .current
            .keys()
            .filter(|m| !self.member_is_movable(m))
            .cloned()
            .collect();
        let mut fixed = Assignment::new();
        for member in fixed_members {
            let list = self.current.remove(&member).expect("present");
            self.by_load.remove(&(list.len(), member.clone()));
            fixed.insert(member, list);
        }

        let before = self.current.clone();
        let owners_before = self.owner.clone();
        if !self.revocation_required {
            // First try moving only the partitions nobody owned.
            self.reassign(&unassigned);
        }
        let sorted = std::mem::take(&mut self.sorted_partitions);
        let moved = self.reassign(&sorted);
        if !initializing && moved && balance_score(&self.current) >= balance_score(&before) {
            self.current = before;
            self.owner = owners_before;
        }
        self.current.extend(fixed);
    }

    /// Kafka's `performReassignments`: moves partitions until balanced or
    /// nothing moves. Whether anything moved.
    fn reassign(&mut self, partitions: &[TopicPartition]) -> bool {
        let mut moved_any = false;
        loop {
            let mut moved = false;
            for tp in partitions {
                if self.is_balanced() {
                    break;
                }
                let Some(owner) = self.owner.get(tp).cloned() else {
                    continue;
                };
                let Some(owner_load) = self.load(&owner) else {
                    continue;
                };
                // Back to its owner before last, if that one has room.
                if let Some((prev, _)) = self.previous.get(tp).cloned()
                    && self.load(&prev).is_some_and(|l| owner_load > l + 1)
                    && self.member_topics[prev.as_str()].contains(tp.topic.as_str())
                {
                    self.move_partition(tp, &owner, &prev);
                    moved = true;
                    continue;
                }
                let has_lighter = self.topic_members[tp.topic.as_str()]
                    .iter()
                    .any(|other| self.load(other).is_some_and(|l| owner_load > l + 1));
                if has_lighter && let Some(target) = self.least_loaded_for(&tp.topic) {
                    self.move_partition(tp, &owner, &target);
                    moved = true;
                }
            }
            moved_any |= moved;
            if !moved {
                return moved_any;
            }
        }
    }

    fn move_partition(&mut self, tp: &TopicPartition, from: &str, to: &str) {
        let tp = self.movements.partition_to_move(tp, from, to);
        let Some(from) = self.owner.get(&tp).cloned() else {
            return;
        };
        self.movements.record(&tp, &from, to);
        self.take(&tp, &from);
        self.give(tp, to);
    }

    /// Kafka's `isBalanced`: loads differ by at most one, or no member could
    /// take a partition it subscribes to from a member with two or more
    /// partitions more.
    fn is_balanced(&self) -> bool {
        let (Some((min, _)), Some((max, _))) = (self.by_load.first(), self.by_load.last()) else {
            return true;
        };
        if *min + 1 >= *max {
            return true;
        }
        for (load, member) in &self.by_load {
            if *load == self.max_assignment_size(member) {
                continue;
            }
            let mine: HashSet<&TopicPartition> = self.current[member].iter().collect();
            for topic in &self.member_topics[member.as_str()] {
                for p in 0..self.topics[*topic] {
                    let tp = TopicPartition::new(*topic, p);
                    if mine.contains(&tp) {
                        continue;
                    }
                    let other_load = self.owner.get(&tp).and_then(|o| self.load(o));
                    if other_load.is_some_and(|l| load + 1 < l) {
                        return false;
                    }
                }
            }
        }
        true
    }
}

/// Sum over all pairs of members of the difference of their loads; 0 when
/// perfectly balanced.
fn balance_score(assignment: &Assignment) -> usize {
    let loads: Vec<usize> = assignment.values().map(Vec::len).collect();
    let mut score = 0;
    for (i, a) in loads.iter().enumerate() {
        for b in &loads[i + 1..] {
            score += a.abs_diff(*b);
        }
    }
    score
}
