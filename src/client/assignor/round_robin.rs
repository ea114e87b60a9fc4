//! Kafka's `RoundRobinAssignor`.

use std::collections::BTreeMap;

use super::{Assignor, Subscription, empty_assignment, members_in_kafka_order, subscribed_topics};
use crate::types::TopicPartition;

/// Deals all partitions out one at a time: Kafka's `RoundRobinAssignor`
/// (`"roundrobin"`).
///
/// All partitions of all subscribed topics are laid out by topic name, then
/// partition number, and dealt to the members in a circle (static members by
/// `group.instance.id` first, then dynamic members by member id), skipping a
/// member for a partition of a topic it does not subscribe to.
///
/// When every member subscribes to the same topics, no member gets more
/// than one partition more than another.
///
/// ```
/// use std::collections::BTreeMap;
/// use logbus::{Assignor, RoundRobinAssignor, Subscription, TopicPartition};
///
/// // Kafka's example: two members, two topics of three partitions.
/// let topics = BTreeMap::from([("t0".to_string(), 3), ("t1".to_string(), 3)]);
/// let members = BTreeMap::from([
///     ("c0".to_string(), Subscription::new(["t0", "t1"])),
///     ("c1".to_string(), Subscription::new(["t0", "t1"])),
/// ]);
/// let tp = TopicPartition::new;
/// let assignment = RoundRobinAssignor.assign(&topics, &members);
/// assert_eq!(assignment["c0"], [tp("t0", 0), tp("t0", 2), tp("t1", 1)]);
/// assert_eq!(assignment["c1"], [tp("t0", 1), tp("t1", 0), tp("t1", 2)]);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundRobinAssignor;

impl RoundRobinAssignor {
    /// `"roundrobin"`.
    pub const NAME: &'static str = "roundrobin";
}

impl Assignor for RoundRobinAssignor {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, u32>,
        members: &BTreeMap<String, Subscription>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        let mut assignment = empty_assignment(members);
        let circle = members_in_kafka_order(members);
        let mut next = 0;
        for (topic, &count) in &subscribed_topics(partitions_per_topic, members) {
            for partition in 0..count {
                // Someone subscribes to `topic`, so this stops within one lap.
                while !members[circle[next]].subscribes_to(topic) {
                    next = (next + 1) % circle.len();
                }
                let list = assignment
                    .get_mut(circle[next])
                    .expect("every member has an entry");
                list.push(TopicPartition::new(topic.as_str(), partition));
                next = (next + 1) % circle.len();
            }
        }
        assignment
    }
}
