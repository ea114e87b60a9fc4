//! L3: the partitions a broker hosts, over their logs, behind one seam.
//!
//! Named as in Kafka: [`ReplicaManager`] owns the partitions its broker
//! hosts and is the only way in (append with acks, fetch with an explicit
//! bound, offsets, `delete_records`, retention and cleaning);
//! [`PartitionState`] is one hosted partition's local state (Kafka's
//! `Partition`; the public handle already has that name); [`Replica`] is
//! the leader's view of one replica of a partition (a follower's log end
//! offset and when it last caught up).
//!
//! Replication, as Kafka's: followers' fetchers ([`ReplicaFetcherManager`],
//! [`fetch_once`]) copy their leader's batches with the leader's offsets
//! and epochs, truncating on a diverging epoch (KIP-101, KIP-279,
//! KIP-320); the leader tracks each follower ([`Replica`]), keeps the high
//! watermark at the minimum log end offset over the ISR (durable offset,
//! for topics that fsync every append), grows and shrinks the ISR through
//! the controller ([`AlterPartition`]) and completes `acks=all` appends
//! once the high watermark passes them (`purgatory`).

mod config;
mod fetch;
mod fetcher;
mod follower;
mod manager;
mod partition;
mod purgatory;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use uuid::Uuid;

#[cfg(test)]
pub(crate) use config::InjectedBug;
pub(crate) use config::ReplicaConfig;
#[cfg(test)]
pub(crate) use fetch::RELEASE_CHUNK;
pub(crate) use fetch::{FetchBound, FetchedData, ReadReleaser, ReadSource};
#[cfg_attr(
    not(test),
    expect(unused_imports, reason = "the step functions a simulation drives")
)]
pub(crate) use fetcher::{FetchRound, fetch_once};
pub(crate) use fetcher::{ReplicaFetcherManager, ReplicaRegistry};
pub(crate) use follower::Replica;
pub(crate) use manager::{AppendAcks, AppendOrigin, ReplicaManager};
#[cfg_attr(
    not(test),
    expect(unused_imports, reason = "the step functions a simulation drives")
)]
pub(crate) use partition::{FollowerFetchRequest, FollowerFetchResponse};
pub(crate) use partition::{LeaderAndIsr, PartitionOffsets, PartitionState};
pub(crate) use purgatory::PendingAck;

/// The controller, as a partition's leader sees it: where it proposes ISR
/// changes (Kafka's `AlterPartition` request).
pub(crate) trait AlterPartition: Send + Sync + std::fmt::Debug {
    /// Asks the controller to set `key`'s ISR to `isr`, as proposed by its
    /// leader `leader` holding the state of epochs `leader_epoch` and
    /// `partition_epoch`. Returns the state the controller settled on, which
    /// it has already given to every replica's manager
    /// ([`ReplicaManager::apply_leader_and_isr`]); so the caller must hold
    /// no lock of the partition while it calls.
    ///
    /// # Errors
    /// [`Error::FencedLeaderEpoch`](crate::Error::FencedLeaderEpoch) or
    /// [`Error::NotLeaderOrFollower`](crate::Error::NotLeaderOrFollower)
    /// when the proposal was made against a state that is no longer
    /// current (the caller learns the new one from its manager);
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for an ISR
    /// naming a broker that holds no replica or is fenced.
    fn alter_partition(
        &self,
        key: &TopicIdPartition,
        leader: u32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<u32>,
    ) -> crate::error::Result<LeaderAndIsr>;
}

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
