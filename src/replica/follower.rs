//! [`Replica`]: the leader's view of one replica of a partition.

/// What a partition's leader knows about one of its replicas: Kafka's
/// `Replica` (not the local partition state, which is
/// [`PartitionState`](super::PartitionState)). The leader tracks each
/// follower's log end offset and when it last caught up, to compute the
/// high watermark and shrink or grow the ISR. With one broker the only
/// replica is the leader itself, always caught up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Replica {
    /// The broker holding the replica.
    pub(crate) broker: u32,
    /// Its log end offset, as the leader last learned it.
    pub(crate) log_end_offset: u64,
    /// When (cluster clock, ms) it last fetched up to the leader's log end
    /// offset; `None` if never.
    pub(crate) last_caught_up_ms: Option<i64>,
}
