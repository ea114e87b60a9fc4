//! L3: the partitions a broker hosts, over their logs.

mod partition;

pub(crate) use partition::{Replica, ReplicaOffsets};
