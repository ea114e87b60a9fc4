//! Partition assignors: how a consumer group splits the partitions of the
//! topics its members subscribe to, as Kafka's consumer-side assignors do
//! (`partition.assignment.strategy`).
//!
//! An [`Assignor`] is pure logic: given the partition count of each topic and
//! every member's [`Subscription`], it returns each member's partitions. The
//! group coordinator elects one member's assignor (Kafka: the group leader's)
//! and calls [`Assignor::assign`] once per rebalance.
//!
//! | name                   | type                          | protocol      |
//! |------------------------|-------------------------------|---------------|
//! | `range`                | [`RangeAssignor`]             | eager         |
//! | `roundrobin`           | [`RoundRobinAssignor`]        | eager         |
//! | `sticky`               | [`StickyAssignor`]            | eager         |
//! | `cooperative-sticky`   | [`CooperativeStickyAssignor`] | cooperative   |
//!
//! [`assignor_by_name`] maps these names (and Kafka's class names) to an
//! assignor.
//!
//! What every built-in assignor guarantees, for any input:
//!
//! - every member of the input appears in the output, possibly with no
//!   partitions;
//! - a member gets only partitions of topics it subscribes to, and each
//!   member's list is sorted by topic, then partition;
//! - partitions of topics nobody subscribes to, and topics missing from the
//!   partition counts (or with zero partitions), are not assigned;
//! - every partition of a subscribed topic goes to exactly one member, except
//!   that [`CooperativeStickyAssignor`] leaves out partitions whose owner
//!   changes (see its docs);
//! - the same input gives the same output.
//!
//! Rack-aware assignment (`client.rack`) is not implemented: logbus has one
//! broker, so every replica is on every rack.

mod range;
mod round_robin;
mod sticky;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::types::TopicPartition;

pub(crate) use crate::cluster::Subscription;
pub use range::RangeAssignor;
pub use round_robin::RoundRobinAssignor;
pub use sticky::{CooperativeStickyAssignor, StickyAssignor};

/// How members give up partitions during a rebalance: Kafka's
/// `ConsumerPartitionAssignor.RebalanceProtocol`.
///
/// The variants are ordered: `Eager < Cooperative`. A coordinator that
/// supports several assignors picks the highest protocol all of them share,
/// as Kafka's `ConsumerCoordinator` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum RebalanceProtocol {
    /// Every member revokes all of its partitions before rejoining; the new
    /// assignment is then handed out in one go ("stop the world").
    #[default]
    Eager,
    /// Members keep their partitions while the group rebalances and revoke
    /// only those the new assignment takes away from them. A partition that
    /// changes owner is therefore withheld for one round: its old owner
    /// revokes it, rejoins, and the follow-up rebalance hands it to the new
    /// owner (KIP-429).
    Cooperative,
}

/// A partition assignment strategy: Kafka's `ConsumerPartitionAssignor`.
///
/// Implement it to plug a custom strategy into a consumer group. An assignor
/// is shared between threads and must be deterministic: the same input must
/// give the same output.
///
/// ```
/// use std::collections::BTreeMap;
/// use logbus::{Assignor, Subscription, TopicPartition};
///
/// /// Gives every partition to the member with the smallest id.
/// #[derive(Debug)]
/// struct AllToFirst;
///
/// impl Assignor for AllToFirst {
///     fn name(&self) -> &str {
///         "all-to-first"
///     }
///
///     fn assign(
///         &self,
///         partitions_per_topic: &BTreeMap<String, u32>,
///         members: &BTreeMap<String, Subscription>,
///     ) -> BTreeMap<String, Vec<TopicPartition>> {
///         let mut out: BTreeMap<_, _> =
///             members.keys().map(|m| (m.clone(), Vec::new())).collect();
///         if let Some((first, sub)) = members.iter().next() {
///             for (topic, &count) in partitions_per_topic {
///                 if sub.subscribes_to(topic) {
///                     let mine = out.get_mut(first).expect("every member is in `out`");
///                     mine.extend((0..count).map(|p| TopicPartition::new(topic, p)));
///                 }
///             }
///         }
///         out
///     }
/// }
///
/// let topics = BTreeMap::from([("orders".to_string(), 2)]);
/// let members = BTreeMap::from([
///     ("a".to_string(), Subscription::new(["orders"])),
///     ("b".to_string(), Subscription::new(["orders"])),
/// ]);
/// let assignment = AllToFirst.assign(&topics, &members);
/// assert_eq!(assignment["a"].len(), 2);
/// assert!(assignment["b"].is_empty());
/// ```
pub trait Assignor: Send + Sync + std::fmt::Debug {
    /// The strategy's unique name, as listed in `partition.assignment.strategy`
    /// and sent in the group's join protocol (e.g. `"range"`).
    fn name(&self) -> &str;

    /// The rebalance protocol the assignor's output is meant for.
    /// [`RebalanceProtocol::Eager`] unless overridden.
    fn protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Eager
    }

    /// Assigns partitions to members.
    ///
    /// `partitions_per_topic` holds the partition count of each topic known
    /// to the cluster (it may hold topics nobody subscribes to);
    /// `members` maps each member id to its subscription. The result must
    /// hold one entry per member of `members` (possibly empty) and nothing
    /// else.
    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, u32>,
        members: &BTreeMap<String, Subscription>,
    ) -> BTreeMap<String, Vec<TopicPartition>>;
}

/// The built-in assignor named `name` in `partition.assignment.strategy`:
/// `range`, `roundrobin`, `sticky` or `cooperative-sticky`. Kafka's Java
/// class names (`org.apache.kafka.clients.consumer.RangeAssignor`, …) are
/// accepted too. `None` for any other name.
///
/// ```
/// use logbus::{RebalanceProtocol, assignor_by_name};
///
/// let assignor = assignor_by_name("cooperative-sticky").unwrap();
/// assert_eq!(assignor.name(), "cooperative-sticky");
/// assert_eq!(assignor.protocol(), RebalanceProtocol::Cooperative);
/// assert!(assignor_by_name("org.apache.kafka.clients.consumer.RangeAssignor").is_some());
/// assert!(assignor_by_name("fastest").is_none());
/// ```
#[must_use]
pub fn assignor_by_name(name: &str) -> Option<Arc<dyn Assignor>> {
    const PREFIX: &str = "org.apache.kafka.clients.consumer.";
    let assignor: Arc<dyn Assignor> = match name.trim() {
        RangeAssignor::NAME => Arc::new(RangeAssignor),
        RoundRobinAssignor::NAME => Arc::new(RoundRobinAssignor),
        StickyAssignor::NAME => Arc::new(StickyAssignor),
        CooperativeStickyAssignor::NAME => Arc::new(CooperativeStickyAssignor),
        other => match other.strip_prefix(PREFIX)? {
            "RangeAssignor" => Arc::new(RangeAssignor),
            "RoundRobinAssignor" => Arc::new(RoundRobinAssignor),
            "StickyAssignor" => Arc::new(StickyAssignor),
            "CooperativeStickyAssignor" => Arc::new(CooperativeStickyAssignor),
            _ => return None,
        },
    };
    Some(assignor)
}

/// The topics someone subscribes to that have at least one partition, with
/// their counts: what Kafka's `AbstractPartitionAssignor` hands to `assign`.
fn subscribed_topics(
    partitions_per_topic: &BTreeMap<String, u32>,
    members: &BTreeMap<String, Subscription>,
) -> BTreeMap<String, u32> {
    members
        .values()
        .flat_map(|s| s.topics.iter())
        .filter_map(|t| match partitions_per_topic.get(t) {
            Some(&n) if n > 0 => Some((t.clone(), n)),
            _ => None,
        })
        .collect()
}

/// An output map with an empty list for every member.
fn empty_assignment(
    members: &BTreeMap<String, Subscription>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    members.keys().map(|m| (m.clone(), Vec::new())).collect()
}

/// Members in Kafka's `MemberInfo` order: static members first, by group
/// instance id; then dynamic members by member id. Ties (two members with
/// one instance id, which a coordinator should not allow) break by member id.
fn members_in_kafka_order(members: &BTreeMap<String, Subscription>) -> Vec<&str> {
    let mut order: Vec<(&str, Option<&str>)> = members
        .iter()
        .map(|(id, s)| (id.as_str(), s.group_instance_id.as_deref()))
        .collect();
    order.sort_by(|(a_id, a_inst), (b_id, b_inst)| match (a_inst, b_inst) {
        (Some(a), Some(b)) => a.cmp(b).then(a_id.cmp(b_id)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a_id.cmp(b_id),
    });
    order.into_iter().map(|(id, _)| id).collect()
}
