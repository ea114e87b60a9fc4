//! Kafka's `RangeAssignor`.

use std::collections::BTreeMap;

use super::{Assignor, Subscription, empty_assignment, members_in_kafka_order, subscribed_topics};
use crate::types::TopicPartition;

/// Assigns each topic on its own, in contiguous ranges: Kafka's
/// `RangeAssignor` (`"range"`, the default of Kafka's consumer).
///
/// For each topic, the members subscribing to it are ordered (static members
/// by `group.instance.id` first, then dynamic members by member id) and the
/// partitions are cut into as many contiguous ranges, the first
/// `partitions % members` ranges one longer than the rest.
///
/// Because every topic is cut the same way, topics with the same partition
/// count and the same subscribers are *co-partitioned*: partition `p` of
/// each goes to the same member, which is what joins of keyed topics need.
/// The price is balance across topics: the first members get the extra
/// partition of every topic.
///
/// ```
/// use std::collections::BTreeMap;
/// use logbus::{Assignor, RangeAssignor, Subscription, TopicPartition};
///
/// // Kafka's example: two members, two topics of three partitions.
/// let topics = BTreeMap::from([("t0".to_string(), 3), ("t1".to_string(), 3)]);
/// let members = BTreeMap::from([
///     ("c0".to_string(), Subscription::new(["t0", "t1"])),
///     ("c1".to_string(), Subscription::new(["t0", "t1"])),
/// ]);
/// let tp = TopicPartition::new;
/// let assignment = RangeAssignor.assign(&topics, &members);
/// assert_eq!(assignment["c0"], [tp("t0", 0), tp("t0", 1), tp("t1", 0), tp("t1", 1)]);
/// assert_eq!(assignment["c1"], [tp("t0", 2), tp("t1", 2)]);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct RangeAssignor;

impl RangeAssignor {
    /// `"range"`.
    pub const NAME: &'static str = "range";
}

impl Assignor for RangeAssignor {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, u32>,
        members: &BTreeMap<String, Subscription>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        let mut assignment = empty_assignment(members);
        let order = members_in_kafka_order(members);
        for (topic, &count) in &subscribed_topics(partitions_per_topic, members) {
            let consumers: Vec<&str> = order
                .iter()
                .copied()
                .filter(|m| members[*m].subscribes_to(topic))
                .collect();
            let n = consumers.len() as u32; // > 0: the topic is subscribed
            let (per_member, with_extra) = (count / n, count % n);
            for (i, member) in (0u32..).zip(&consumers) {
                let start = per_member * i + i.min(with_extra);
                let len = per_member + u32::from(i < with_extra);
                let list = assignment
                    .get_mut(*member)
                    .expect("every member has an entry");
                list.extend((start..start + len).map(|p| TopicPartition::new(topic.as_str(), p)));
            }
        }
        // Topics were visited in name order, so each list is already sorted.
        assignment
    }
}
