//! L3: the partitions a broker hosts, over their logs, behind one seam.
//!
//! Named as in Kafka: [`ReplicaManager`] owns the partitions its broker
//! hosts and is the only way in (append with acks, fetch with an explicit
//! bound, offsets, `delete_records`, retention and cleaning);
//! [`PartitionState`] is one hosted partition's local state (Kafka's
//! `Partition`; the public handle already has that name); [`Replica`] is
//! the leader's view of one replica of a partition (a follower's log end
//! offset and when it last caught up).

mod fetch;
mod follower;
mod manager;
mod partition;

use std::sync::Arc;

use uuid::Uuid;

#[cfg(test)]
pub(crate) use fetch::RELEASE_CHUNK;
pub(crate) use fetch::{FetchBound, FetchedData, ReadReleaser, ReadSource};
pub(crate) use follower::Replica;
pub(crate) use manager::{AppendAcks, AppendOrigin, ReplicaManager};
pub(crate) use partition::{LeaderAndIsr, PartitionOffsets, PartitionState};

/// A partition named by its topic's name, its topic's id and its number:
/// Kafka's `TopicIdPartition`. The id tells a re-created topic from the
/// deleted one of the same name, so a caller holding a key of the old
/// topic gets [`Error::UnknownTopicOrPartition`](crate::Error::UnknownTopicOrPartition)
/// rather than the new topic's data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TopicIdPartition {
    /// The topic's id.
    pub(crate) topic_id: Uuid,
    /// The topic's name.
    pub(crate) topic: Arc<str>,
    /// The partition number.
    pub(crate) partition: u32,
}
