//! The crate's one error type.
//!
//! Every fallible public function returns [`Result<T>`](crate::Result). I/O
//! failures keep their source, the operation and the path; damaged data is the
//! structured [`Error::Corrupt`] variant; malformed input batches are
//! [`Error::InvalidBatch`] carrying a [`FormatError`] that says what is wrong.

use std::io;
use std::path::PathBuf;

/// Shorthand for `std::result::Result<T, logbus::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in logbus.
///
/// The enum is `#[non_exhaustive]`: match the variants you handle and keep a
/// wildcard arm. [`Error::is_retriable`] tells whether retrying the same call
/// may succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O call failed.
    #[error("I/O error during {op} on {}: {source}", path.display())]
    Io {
        /// The operation that failed (`"write"`, `"fsync"`, `"rename"`, ...).
        op: &'static str,
        /// The file or directory it was applied to.
        path: PathBuf,
        /// The error the operating system returned.
        #[source]
        source: io::Error,
    },

    /// Stored data is damaged: a file holds bytes that cannot be what logbus
    /// wrote there. Nothing is cut or repaired silently; see
    /// [`CorruptionKind`] for what was found.
    #[error("corrupt data in {} at byte {position}: {kind}", path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte position in the file where the damage starts.
        position: u64,
        /// What was expected and what was found.
        kind: CorruptionKind,
    },

    /// A record batch handed to logbus is malformed. Nothing was stored.
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] FormatError),

    /// A batch (or a producer's record, counted as a batch of its own) is
    /// larger than a limit allows: the topic's `max.message.bytes`, the
    /// log's `segment.bytes`, or the producer's `max.request.size` or
    /// `buffer.memory`. Nothing was stored.
    #[error("record batch of {size} bytes exceeds {limit} of {max}")]
    RecordTooLarge {
        /// Size of the rejected batch in bytes.
        size: u64,
        /// The configured limit.
        max: u64,
        /// The setting that sets the limit (`"max.message.bytes"`,
        /// `"segment.bytes"`, `"max.request.size"`, `"buffer.memory"`).
        limit: &'static str,
    },

    /// A batch that already carries offsets does not continue the log: its
    /// first offset is below the log end offset, or its offsets are not
    /// increasing, or (in a log that is not compacted, whose offsets are
    /// contiguous) it leaves a gap. Nothing was stored.
    #[error("batch offsets {first}..={last} do not follow the log end offset {log_end}")]
    OffsetsOutOfOrder {
        /// First offset of the rejected batch.
        first: i64,
        /// Last offset of the rejected batch.
        last: i64,
        /// The log end offset the batch had to start at or after.
        log_end: u64,
    },

    /// An offset lies outside the log's range `[log_start, log_end]`.
    /// Nothing was read or changed.
    #[error("offset {offset} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        /// The offset that was asked for.
        offset: u64,
        /// The log start offset at the time of the call.
        log_start: u64,
        /// The log end offset at the time of the call.
        log_end: u64,
    },

    /// A configuration value is invalid. The message names the setting.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// The log refused the call because an earlier write or fsync failed.
    /// Data acknowledged before that failure is intact; everything after it
    /// was never acknowledged. Reopen the log to recover.
    #[error("log {} is fenced after an earlier I/O failure; reopen it", path.display())]
    Fenced {
        /// The log's directory.
        path: PathBuf,
    },

    /// Another opener holds the directory's lock.
    #[error("directory {} is already open (its lock is held)", path.display())]
    DirectoryLocked {
        /// The locked directory.
        path: PathBuf,
    },

    /// The cluster was opened with
    /// [`Cluster::open_read_only`](crate::Cluster::open_read_only) and the
    /// call would change it (create or delete a topic, produce, commit
    /// offsets, ...), or a read-only open found no cluster to read. Nothing
    /// was changed. Reopen with [`Cluster::open`](crate::Cluster::open) to
    /// write.
    #[error("{} is open read-only: {operation} would change it", path.display())]
    ReadOnly {
        /// The cluster's root directory.
        path: PathBuf,
        /// What was refused.
        operation: &'static str,
    },

    /// The path given to [`Cluster::open`](crate::Cluster::open) exists but
    /// is not a directory (a cluster's root must be a directory, or not
    /// exist yet).
    #[error("{} is not a directory: a cluster opens (or creates) a directory", path.display())]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },

    /// The topic, or the partition of an existing topic, does not exist: it
    /// was never created, or it was deleted (a handle to a deleted topic
    /// keeps returning this). Kafka's `UNKNOWN_TOPIC_OR_PARTITION`.
    #[error("{}", match partition {
        Some(p) => format!("unknown topic or partition: {topic}-{p}"),
        None => format!("unknown topic: {topic}"),
    })]
    UnknownTopicOrPartition {
        /// The topic's name.
        topic: String,
        /// The partition, when one was named.
        partition: Option<u32>,
    },

    /// The broker asked does not lead the partition (and, for a
    /// follower's fetch, does not follow it either): leadership moved.
    /// Kafka's `NOT_LEADER_OR_FOLLOWER`. Retriable: clients look the leader
    /// up again and retry. The cluster routes every request to the current
    /// leader's broker, so the public API returns it only when leadership
    /// moves while a request is under way (an election between routing and
    /// the append, or while an `acks=all` append waits).
    #[error("broker {broker} is not the leader of {topic}-{partition}")]
    NotLeaderOrFollower {
        /// The topic's name.
        topic: String,
        /// The partition.
        partition: u32,
        /// The broker that was asked.
        broker: u32,
    },

    /// The partition has no leader now: every in-sync replica's broker is
    /// down, and the topic does not allow an unclean election. Kafka's
    /// `LEADER_NOT_AVAILABLE`. Retriable: a leader is elected as soon as an
    /// in-sync replica's broker returns.
    #[error("{topic}-{partition} has no leader now")]
    LeaderNotAvailable {
        /// The topic's name.
        topic: String,
        /// The partition.
        partition: u32,
    },

    /// A request carried a leader epoch older than the partition's current
    /// one: its sender acted on stale leadership. Kafka's
    /// `FENCED_LEADER_EPOCH`. Retriable after looking the leader up again.
    /// A follower's fetch carrying an old epoch gets it.
    #[error(
        "leader epoch {epoch} of {topic}-{partition} is older than its current epoch {current}"
    )]
    FencedLeaderEpoch {
        /// The topic's name.
        topic: String,
        /// The partition.
        partition: u32,
        /// The epoch the request carried.
        epoch: i32,
        /// The partition's current leader epoch.
        current: i32,
    },

    /// An `acks=all` append was refused, before anything was appended,
    /// because fewer replicas are in sync than `min.insync.replicas`
    /// requires. Kafka's `NOT_ENOUGH_REPLICAS`. Retriable: the ISR grows
    /// back when followers catch up. With one broker (whose ISR is itself)
    /// it occurs only for a topic whose `min.insync.replicas` is above 1.
    #[error(
        "{topic}-{partition} has {in_sync} in-sync replicas; acks=all needs at least {required}"
    )]
    NotEnoughReplicas {
        /// The topic's name.
        topic: String,
        /// The partition.
        partition: u32,
        /// The replicas in sync.
        in_sync: usize,
        /// `min.insync.replicas`.
        required: usize,
    },

    /// An `acks=all` append was written to the leader's log, but the
    /// in-sync replicas dropped below `min.insync.replicas` before every
    /// one of them had it, so it is not acknowledged. Kafka's
    /// `NOT_ENOUGH_REPLICAS_AFTER_APPEND`. Retriable; the records may
    /// still be committed later (when the ISR grows back and the followers
    /// copy them), so a retry can duplicate them.
    #[error(
        "{topic}-{partition} was appended, but has {in_sync} in-sync replicas before every one \
         had it; acks=all needs at least {required}"
    )]
    NotEnoughReplicasAfterAppend {
        /// The topic's name.
        topic: String,
        /// The partition.
        partition: u32,
        /// The replicas in sync.
        in_sync: usize,
        /// `min.insync.replicas`.
        required: usize,
    },

    /// The group coordinator cannot serve the request yet: the internal
    /// `__consumer_offsets` topic does not exist, and fewer brokers are
    /// live than its replication factor (`offsets.topic.replication.factor`)
    /// needs to create it. Kafka's `COORDINATOR_NOT_AVAILABLE`. Retriable:
    /// the topic is created at the first commit after enough brokers are
    /// back.
    ///
    /// The transaction coordinator answers it too (`group` then holds the
    /// transactional id): `__transaction_state` cannot be created yet, or
    /// the transactional id's partition of it has no leader or too few
    /// in-sync replicas at the moment (a failover in progress).
    #[error("the coordinator of group {group} is not available: {reason}")]
    CoordinatorNotAvailable {
        /// The group whose request was refused.
        group: String,
        /// Why.
        reason: String,
    },

    /// A topic of that name already exists. Kafka's `TOPIC_ALREADY_EXISTS`.
    #[error("topic {topic} already exists")]
    TopicAlreadyExists {
        /// The topic's name.
        topic: String,
    },

    /// A topic name breaks Kafka's rules (`[a-zA-Z0-9._-]`, 1 to 249
    /// characters, not `.` or `..`), is reserved (starts with `__`), or
    /// collides with an existing name once `.` and `_` are treated alike.
    /// Kafka's `INVALID_TOPIC_EXCEPTION`.
    #[error("invalid topic name {topic:?}: {reason}")]
    InvalidTopic {
        /// The rejected name.
        topic: String,
        /// Which rule it breaks.
        reason: String,
    },

    /// A partition count is invalid: zero, not above the current count
    /// when adding partitions, above [`MAX_PARTITIONS_PER_TOPIC`](crate::MAX_PARTITIONS_PER_TOPIC),
    /// or above the cluster's limit
    /// ([`ClusterConfigBuilder::max_partitions`](crate::ClusterConfigBuilder::max_partitions),
    /// at most [`MAX_PARTITIONS_PER_CLUSTER`](crate::MAX_PARTITIONS_PER_CLUSTER));
    /// the reason names the limit. Nothing was stored. Kafka's
    /// `INVALID_PARTITIONS`.
    #[error("invalid partition count for topic {topic}: {reason}")]
    InvalidPartitions {
        /// The topic's name.
        topic: String,
        /// What is wrong with the count.
        reason: String,
    },

    /// A replication factor is invalid: zero, above the number of brokers,
    /// or above [`MAX_REPLICATION_FACTOR`](crate::MAX_REPLICATION_FACTOR);
    /// the reason says which. Nothing was stored. Kafka's
    /// `INVALID_REPLICATION_FACTOR`.
    #[error("invalid replication factor for topic {topic}: {reason}")]
    InvalidReplicationFactor {
        /// The topic's name.
        topic: String,
        /// What is wrong with the factor.
        reason: String,
    },

    /// The cluster's metadata log (`__cluster_metadata-0`, the topic
    /// registry) is missing or empty, yet the directory shows that it held
    /// topics: partition directories with a `partition.metadata` file, or a
    /// recovery point above zero. Starting with an empty registry would
    /// hide (and later overwrite) their data, so the open is refused and
    /// nothing is changed. Rebuild the registry from the partition
    /// directories with [`Cluster::rebuild_metadata`](crate::Cluster::rebuild_metadata).
    #[error(
        "the metadata log {} is missing or empty, but {evidence}; nothing was changed: \
         rebuild the registry from the partition directories with Cluster::rebuild_metadata",
        path.display()
    )]
    MetadataMissing {
        /// The metadata log's directory.
        path: PathBuf,
        /// What shows that topics existed.
        evidence: String,
    },

    /// A partition directory sits where a topic's partition must live, but
    /// nothing proves it belongs to that topic or to a deleted one: its
    /// `partition.metadata` names a topic id the registry does not know (or
    /// another live topic's id), is unreadable, or is missing while the
    /// directory holds segments. logbus never adopts such a directory (it
    /// could show another topic's records) and never deletes it (it could
    /// be the only copy of data). Move it out of the broker directory.
    #[error(
        "partition directory {} cannot be used: {reason}; logbus neither adopts nor deletes it: \
         move it out of the broker directory",
        path.display()
    )]
    PartitionDirConflict {
        /// The directory.
        path: PathBuf,
        /// What it holds and why that does not fit.
        reason: String,
    },

    /// The producer's `buffer.memory` stayed full for `max.block.ms`, so the
    /// record was not accepted. Retriable: the buffer drains as batches are
    /// appended. Kafka's `BufferExhaustedException`.
    #[error("producer buffer of {buffer_memory} bytes stayed full for {waited:?} (max.block.ms)")]
    BufferExhausted {
        /// The configured `buffer.memory`.
        buffer_memory: u64,
        /// How long `send` waited (whole milliseconds).
        waited: std::time::Duration,
    },

    /// An operation did not complete within its time limit. Retriable.
    /// Kafka's `TimeoutException`.
    #[error("{op} timed out after {waited:?}")]
    Timeout {
        /// What timed out.
        op: &'static str,
        /// How long it waited.
        waited: std::time::Duration,
    },

    /// The handle, or the cluster behind it, was closed.
    #[error("{0} is closed")]
    Closed(&'static str),

    /// A consumer's position is out of range (or it has none) and
    /// `auto.offset.reset` is `none`. Kafka's `NoOffsetForPartitionException`
    /// / `OffsetOutOfRangeException`.
    #[error("no valid offset for partition {topic}-{partition} and auto.offset.reset is none")]
    NoOffsetForPartition {
        /// The topic's name.
        topic: String,
        /// The partition.
        partition: u32,
    },

    /// A record batch a consumer fetched failed its checks: the CRC-32C
    /// (with `check.crcs`) or the structure of the batch or a record. The
    /// consumer's position stays at `offset`, so its polls keep returning
    /// this error for the partition until the application seeks past the
    /// batch. Kafka's `CorruptRecordException`.
    #[error("corrupt record batch in {topic}-{partition} at offset {offset}: {cause}")]
    CorruptRecord {
        /// The topic's name.
        topic: String,
        /// The partition.
        partition: u32,
        /// The consumer's position: the first offset it could not read.
        offset: u64,
        /// What is wrong with the batch.
        #[source]
        cause: FormatError,
    },

    /// A consumer group is rebalancing: the member must rejoin before it
    /// can sync or commit. Retriable: the consumer rejoins at its next
    /// `poll`. Kafka's `RebalanceInProgressException`.
    #[error("group {group} is rebalancing; rejoin first")]
    RebalanceInProgress {
        /// The group id.
        group: String,
    },

    /// A commit was refused because the committing member is no longer part
    /// of its group's current generation: the group rebalanced and the
    /// partitions may now belong to another member. Kafka's
    /// `CommitFailedException`.
    #[error("commit for group {group} failed: {reason}")]
    CommitFailed {
        /// The group id.
        group: String,
        /// Why the coordinator refused it.
        reason: String,
    },

    /// The member id is not (or no longer) in the group, for example after
    /// its session timed out. Kafka's `UNKNOWN_MEMBER_ID`.
    #[error("member {member_id} is not in group {group}")]
    UnknownMemberId {
        /// The group id.
        group: String,
        /// The member id sent.
        member_id: String,
    },

    /// The generation sent is not the group's current one. Kafka's
    /// `ILLEGAL_GENERATION`.
    #[error("generation {generation} is not the current generation of group {group}")]
    IllegalGeneration {
        /// The group id.
        group: String,
        /// The generation sent.
        generation: i32,
    },

    /// Another consumer joined with the same `group.instance.id` and took
    /// this one's place (static membership). Kafka's
    /// `FencedInstanceIdException`: fatal for the fenced consumer.
    #[error("group.instance.id {instance_id} of group {group} was taken over by another member")]
    FencedInstanceId {
        /// The group id.
        group: String,
        /// The static member's instance id.
        instance_id: String,
    },

    /// None of the assignors a consumer offers (`partition.assignment.strategy`)
    /// is offered by every member of the group it joins. Kafka's
    /// `InconsistentGroupProtocolException`.
    #[error("group {group} uses assignors none of {offered:?} matches")]
    InconsistentGroupProtocol {
        /// The group id.
        group: String,
        /// The assignor names the consumer offered.
        offered: Vec<String>,
    },

    /// The group has active members, so its offsets cannot be reset or
    /// altered and it cannot be deleted. Kafka's `GroupNotEmptyException`.
    #[error("group {group} has active members")]
    GroupNotEmpty {
        /// The group id.
        group: String,
    },

    /// An idempotent producer's batch does not follow the producer's last
    /// batch in this partition: its first sequence is not the last one
    /// plus 1 (or 0 in a new epoch), so an earlier batch is missing.
    /// Nothing was stored. Kafka's `OUT_OF_ORDER_SEQUENCE_NUMBER`
    /// (`OutOfOrderSequenceException`): not retriable as such (the same
    /// batch fails again); the idempotent producer recovers by bumping its
    /// epoch and resending from sequence 0 (KIP-360).
    #[error("producer {producer_id}: sequence {sequence} is out of order (expected {expected})")]
    OutOfOrderSequence {
        /// The producer id.
        producer_id: i64,
        /// The batch's first sequence.
        sequence: i32,
        /// The first sequence that would have been in order.
        expected: i32,
    },

    /// An idempotent producer's batch carries an epoch older than the
    /// producer's current one in this partition: a newer instance (or a
    /// bumped epoch) of the same producer id wrote since. Nothing was
    /// stored. Kafka's `INVALID_PRODUCER_EPOCH`: fatal for the batch, not
    /// retriable.
    #[error("producer {producer_id}: epoch {epoch} is older than the current epoch {current}")]
    InvalidProducerEpoch {
        /// The producer id.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The producer's current epoch in the partition.
        current: i16,
    },

    /// The partition has no state for this idempotent producer (new, or
    /// its state expired or was removed) and its batch does not start at
    /// sequence 0, so its earlier batches may be missing. Nothing was
    /// stored. Kafka's `UNKNOWN_PRODUCER_ID`
    /// (`UnknownProducerIdException`; logbus is stricter than Kafka, which
    /// accepts any sequence there): not retriable as such; the idempotent
    /// producer bumps its epoch and resends from sequence 0 (KIP-360).
    #[error(
        "producer {producer_id} is unknown to the partition and its batch starts at sequence \
         {sequence}, not 0"
    )]
    UnknownProducerId {
        /// The producer id.
        producer_id: i64,
        /// The batch's first sequence.
        sequence: i32,
    },

    /// A producer's batch does not fit its transaction state (a
    /// non-transactional batch while its transaction is open). Nothing was
    /// stored. Kafka's `INVALID_TXN_STATE`: not retriable.
    #[error("producer {producer_id}: the batch does not fit its transaction state")]
    InvalidTxnState {
        /// The producer id.
        producer_id: i64,
    },

    // --- Transaction coordinator ---
    /// A newer producer with the same `transactional.id` took over (its
    /// `init_transactions` bumped the epoch): this producer is a zombie and
    /// must stop. Nothing was changed. Kafka's `PRODUCER_FENCED` (90):
    /// fatal, not retriable.
    #[error(
        "transactional id {transactional_id}: producer epoch {epoch} is fenced by the newer epoch \
         {current}"
    )]
    ProducerFenced {
        /// The transactional id.
        transactional_id: String,
        /// The request's epoch.
        epoch: i16,
        /// The transactional id's current epoch.
        current: i16,
    },

    /// The request's producer id is not the one the transactional id uses
    /// (or the transactional id has no state: `init_transactions` never
    /// ran for it). Nothing was changed. Kafka's
    /// `INVALID_PRODUCER_ID_MAPPING` (49): not retriable.
    #[error("transactional id {transactional_id} does not use producer id {producer_id}")]
    InvalidProducerIdMapping {
        /// The transactional id.
        transactional_id: String,
        /// The request's producer id.
        producer_id: i64,
    },

    /// `transaction.timeout.ms` is not positive or is above the cluster's
    /// `transaction.max.timeout.ms`. Nothing was changed. Kafka's
    /// `INVALID_TRANSACTION_TIMEOUT` (50): not retriable.
    #[error(
        "transaction.timeout.ms={timeout_ms} must be between 1 and transaction.max.timeout.ms={max_ms}"
    )]
    InvalidTransactionTimeout {
        /// The requested timeout.
        timeout_ms: i64,
        /// The cluster's `transaction.max.timeout.ms`.
        max_ms: i64,
    },

    /// The transactional id's previous transaction is still completing
    /// (its markers are not all written yet). Nothing was changed. Kafka's
    /// `CONCURRENT_TRANSACTIONS` (51): retriable — the coordinator
    /// finishes the transaction and the same call then succeeds.
    #[error("transactional id {transactional_id}: the previous transaction is still completing")]
    ConcurrentTransactions {
        /// The transactional id.
        transactional_id: String,
    },
    /// A record sent in a transaction that was aborted
    /// ([`Producer::abort_transaction`](crate::Producer::abort_transaction))
    /// before the record was appended: it was never written. Kafka's
    /// `TransactionAbortedException`: not retriable (send it again in the
    /// next transaction).
    #[error(
        "transactional id {transactional_id}: the transaction was aborted before this record was sent"
    )]
    TransactionAborted {
        /// The producer's transactional id.
        transactional_id: String,
    },
    // --- end of the transaction coordinator's block ---
    /// An argument is invalid (a negative timestamp, a partition the
    /// consumer is not assigned, a record over `max.request.size`, ...).
    /// The message names it. Nothing was changed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The call is not allowed in the handle's current state (for example
    /// `poll` with no assigned partitions). The message says why.
    #[error("illegal state: {0}")]
    IllegalState(String),

    /// logbus broke one of its own internal rules: this is a bug in logbus.
    /// The message says which rule; the failed call changed nothing.
    #[error("internal error (a bug in logbus): {0}")]
    Internal(String),
}

impl Error {
    /// Whether the same call may succeed if retried later without any other
    /// change: true for [`Error::BufferExhausted`], [`Error::Timeout`],
    /// [`Error::RebalanceInProgress`], [`Error::NotLeaderOrFollower`],
    /// [`Error::LeaderNotAvailable`], [`Error::FencedLeaderEpoch`],
    /// [`Error::NotEnoughReplicas`], [`Error::NotEnoughReplicasAfterAppend`],
    /// [`Error::CoordinatorNotAvailable`] and
    /// [`Error::ConcurrentTransactions`].
    /// I/O errors, corruption, bad input, unknown topics (logbus's metadata
    /// is never stale, unlike a Kafka client's), fencing and the idempotent
    /// producer's refusals ([`Error::OutOfOrderSequence`],
    /// [`Error::InvalidProducerEpoch`], [`Error::UnknownProducerId`],
    /// [`Error::InvalidTxnState`]) are not retriable.
    #[must_use]
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            Error::BufferExhausted { .. }
                | Error::Timeout { .. }
                | Error::RebalanceInProgress { .. }
                | Error::NotLeaderOrFollower { .. }
                | Error::LeaderNotAvailable { .. }
                | Error::FencedLeaderEpoch { .. }
                | Error::NotEnoughReplicas { .. }
                | Error::NotEnoughReplicasAfterAppend { .. }
                | Error::CoordinatorNotAvailable { .. }
                | Error::ConcurrentTransactions { .. }
        )
    }

    /// Whether the error says a partition's leadership is moving: the
    /// request reached a broker that no longer (or not yet) leads, or no
    /// leader is elected.
    pub(crate) fn is_leadership_moving(&self) -> bool {
        matches!(
            self,
            Error::NotLeaderOrFollower { .. }
                | Error::LeaderNotAvailable { .. }
                | Error::FencedLeaderEpoch { .. }
        )
    }

    /// Builds an [`Error::Io`] from an I/O error, the operation and the path.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// A copy of this error, for when one failure must reach several
    /// receivers (every record of a failed producer batch). `Error` is not
    /// `Clone` because `std::io::Error` is not: the copy of an
    /// [`Error::Io`] keeps the OS error code when there is one, else the
    /// kind and the message; every other variant is copied field by field.
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Io { op, path, source } => Error::Io {
                op,
                path: path.clone(),
                source: match source.raw_os_error() {
                    Some(code) => io::Error::from_raw_os_error(code),
                    None => io::Error::new(source.kind(), source.to_string()),
                },
            },
            Error::Corrupt {
                path,
                position,
                kind,
            } => Error::Corrupt {
                path: path.clone(),
                position: *position,
                kind: kind.clone(),
            },
            Error::InvalidBatch(e) => Error::InvalidBatch(e.clone()),
            Error::RecordTooLarge { size, max, limit } => Error::RecordTooLarge {
                size: *size,
                max: *max,
                limit,
            },
            Error::OffsetsOutOfOrder {
                first,
                last,
                log_end,
            } => Error::OffsetsOutOfOrder {
                first: *first,
                last: *last,
                log_end: *log_end,
            },
            Error::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            } => Error::OffsetOutOfRange {
                offset: *offset,
                log_start: *log_start,
                log_end: *log_end,
            },
            Error::InvalidConfig(m) => Error::InvalidConfig(m.clone()),
            Error::Fenced { path } => Error::Fenced { path: path.clone() },
            Error::DirectoryLocked { path } => Error::DirectoryLocked { path: path.clone() },
            Error::NotADirectory { path } => Error::NotADirectory { path: path.clone() },
            Error::ReadOnly { path, operation } => Error::ReadOnly {
                path: path.clone(),
                operation,
            },
            Error::UnknownTopicOrPartition { topic, partition } => Error::UnknownTopicOrPartition {
                topic: topic.clone(),
                partition: *partition,
            },
            Error::NotLeaderOrFollower {
                topic,
                partition,
                broker,
            } => Error::NotLeaderOrFollower {
                topic: topic.clone(),
                partition: *partition,
                broker: *broker,
            },
            Error::LeaderNotAvailable { topic, partition } => Error::LeaderNotAvailable {
                topic: topic.clone(),
                partition: *partition,
            },
            Error::FencedLeaderEpoch {
                topic,
                partition,
                epoch,
                current,
            } => Error::FencedLeaderEpoch {
                topic: topic.clone(),
                partition: *partition,
                epoch: *epoch,
                current: *current,
            },
            Error::NotEnoughReplicas {
                topic,
                partition,
                in_sync,
                required,
            } => Error::NotEnoughReplicas {
                topic: topic.clone(),
                partition: *partition,
                in_sync: *in_sync,
                required: *required,
            },
            Error::NotEnoughReplicasAfterAppend {
                topic,
                partition,
                in_sync,
                required,
            } => Error::NotEnoughReplicasAfterAppend {
                topic: topic.clone(),
                partition: *partition,
                in_sync: *in_sync,
                required: *required,
            },
            Error::CoordinatorNotAvailable { group, reason } => Error::CoordinatorNotAvailable {
                group: group.clone(),
                reason: reason.clone(),
            },
            Error::TopicAlreadyExists { topic } => Error::TopicAlreadyExists {
                topic: topic.clone(),
            },
            Error::InvalidTopic { topic, reason } => Error::InvalidTopic {
                topic: topic.clone(),
                reason: reason.clone(),
            },
            Error::InvalidPartitions { topic, reason } => Error::InvalidPartitions {
                topic: topic.clone(),
                reason: reason.clone(),
            },
            Error::InvalidReplicationFactor { topic, reason } => Error::InvalidReplicationFactor {
                topic: topic.clone(),
                reason: reason.clone(),
            },
            Error::MetadataMissing { path, evidence } => Error::MetadataMissing {
                path: path.clone(),
                evidence: evidence.clone(),
            },
            Error::PartitionDirConflict { path, reason } => Error::PartitionDirConflict {
                path: path.clone(),
                reason: reason.clone(),
            },
            Error::BufferExhausted {
                buffer_memory,
                waited,
            } => Error::BufferExhausted {
                buffer_memory: *buffer_memory,
                waited: *waited,
            },
            Error::Timeout { op, waited } => Error::Timeout {
                op,
                waited: *waited,
            },
            Error::Closed(what) => Error::Closed(what),
            Error::RebalanceInProgress { group } => Error::RebalanceInProgress {
                group: group.clone(),
            },
            Error::CommitFailed { group, reason } => Error::CommitFailed {
                group: group.clone(),
                reason: reason.clone(),
            },
            Error::UnknownMemberId { group, member_id } => Error::UnknownMemberId {
                group: group.clone(),
                member_id: member_id.clone(),
            },
            Error::IllegalGeneration { group, generation } => Error::IllegalGeneration {
                group: group.clone(),
                generation: *generation,
            },
            Error::FencedInstanceId { group, instance_id } => Error::FencedInstanceId {
                group: group.clone(),
                instance_id: instance_id.clone(),
            },
            Error::InconsistentGroupProtocol { group, offered } => {
                Error::InconsistentGroupProtocol {
                    group: group.clone(),
                    offered: offered.clone(),
                }
            }
            Error::GroupNotEmpty { group } => Error::GroupNotEmpty {
                group: group.clone(),
            },

            Error::NoOffsetForPartition { topic, partition } => Error::NoOffsetForPartition {
                topic: topic.clone(),
                partition: *partition,
            },
            Error::CorruptRecord {
                topic,
                partition,
                offset,
                cause,
            } => Error::CorruptRecord {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
                cause: cause.clone(),
            },
            Error::OutOfOrderSequence {
                producer_id,
                sequence,
                expected,
            } => Error::OutOfOrderSequence {
                producer_id: *producer_id,
                sequence: *sequence,
                expected: *expected,
            },
            Error::InvalidProducerEpoch {
                producer_id,
                epoch,
                current,
            } => Error::InvalidProducerEpoch {
                producer_id: *producer_id,
                epoch: *epoch,
                current: *current,
            },
            Error::UnknownProducerId {
                producer_id,
                sequence,
            } => Error::UnknownProducerId {
                producer_id: *producer_id,
                sequence: *sequence,
            },
            Error::InvalidTxnState { producer_id } => Error::InvalidTxnState {
                producer_id: *producer_id,
            },
            // --- Transaction coordinator ---
            Error::ProducerFenced {
                transactional_id,
                epoch,
                current,
            } => Error::ProducerFenced {
                transactional_id: transactional_id.clone(),
                epoch: *epoch,
                current: *current,
            },
            Error::InvalidProducerIdMapping {
                transactional_id,
                producer_id,
            } => Error::InvalidProducerIdMapping {
                transactional_id: transactional_id.clone(),
                producer_id: *producer_id,
            },
            Error::InvalidTransactionTimeout { timeout_ms, max_ms } => {
                Error::InvalidTransactionTimeout {
                    timeout_ms: *timeout_ms,
                    max_ms: *max_ms,
                }
            }
            Error::ConcurrentTransactions { transactional_id } => Error::ConcurrentTransactions {
                transactional_id: transactional_id.clone(),
            },
            Error::TransactionAborted { transactional_id } => Error::TransactionAborted {
                transactional_id: transactional_id.clone(),
            },
            // --- end of the transaction coordinator's block ---
            Error::InvalidArgument(m) => Error::InvalidArgument(m.clone()),
            Error::IllegalState(m) => Error::IllegalState(m.clone()),
            Error::Internal(m) => Error::Internal(m.clone()),
        }
    }

    /// Builds an [`Error::Corrupt`].
    pub(crate) fn corrupt(path: impl Into<PathBuf>, position: u64, kind: CorruptionKind) -> Self {
        Error::Corrupt {
            path: path.into(),
            position,
            kind,
        }
    }
}

/// What kind of damage [`Error::Corrupt`] found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CorruptionKind {
    /// A record batch failed validation: its CRC, its structure, or offsets
    /// that do not fit where it lies ([`FormatError::OffsetsOutOfSequence`]).
    #[error("invalid record batch: {0}")]
    Batch(FormatError),
    /// Damage in data the recovery point says was flushed (fsynced) before
    /// the log was closed or crashed. An interrupted write or a power loss
    /// cannot explain it, so the open refuses instead of cutting, and
    /// changes no file. `cause` says what was found; the error's path and
    /// position say where.
    ///
    /// Damage at or above the recovery point is never refused: recovery cuts
    /// the log there and reports it in
    /// [`RecoveryReport::truncated`](crate::RecoveryReport::truncated).
    #[error(
        "damage at offset {offset}, below the recovery point {recovery_point} (flushed data is \
         never cut){}: {cause}",
        next_valid.map(|p| format!("; valid-looking data follows at byte {p}")).unwrap_or_default()
    )]
    BelowRecoveryPoint {
        /// The first offset the damage concerns: the offset the damaged
        /// batch had to start at.
        offset: u64,
        /// The recovery point the log was opened with.
        recovery_point: u64,
        /// What is wrong there.
        cause: Box<CorruptionKind>,
        /// Where in the same file a valid-looking batch continuing the log
        /// follows the damage, if one does.
        next_valid: Option<u64>,
    },
    /// A segment's first offset is below the end of the segment before it:
    /// two segments claim the same offsets.
    #[error("segment base offset {base} is not above previous last offset {previous_last}")]
    OffsetsNotIncreasing {
        /// Last offset of the previous segment.
        previous_last: i64,
        /// Base offset of the later segment.
        base: i64,
    },
    /// No segment file holds the offsets from `expected` up to `next_base`:
    /// the next segment starts above where the previous one ends, in a log
    /// that is not compacted (where offsets are contiguous). A segment file
    /// is missing, or the previous one lost its end.
    #[error(
        "no segment holds offsets {expected}..{next_base}: a segment file is missing or cut short"
    )]
    MissingSegment {
        /// Where the previous segment ends (the next offset it would hold).
        expected: u64,
        /// The base offset of the next segment file.
        next_base: u64,
    },
    /// The log ends below the recovery point it was opened with: data the
    /// recovery point says was flushed is missing.
    #[error(
        "the log ends at offset {log_end}, below its recovery point {recovery_point}: flushed data is missing"
    )]
    RecoveryPointBeyondEnd {
        /// The recovery point the log was opened with.
        recovery_point: u64,
        /// Where the log's valid data ends.
        log_end: u64,
    },
    /// A batch starts beyond the largest byte position a segment can hold:
    /// Kafka's index positions are 32-bit signed integers, and no writer
    /// (logbus or Kafka, whose `segment.bytes` is at most 2 GiB) puts a
    /// batch there.
    #[error("batch position beyond the largest segment position {limit}")]
    PositionOutOfRange {
        /// The largest position a batch may start at.
        limit: u64,
    },
    /// A batch lies outside the offset range its segment's name allows
    /// (offsets from the base offset up to 2^32 − 1 above it, which
    /// Kafka's index files can address).
    #[error("batch offset {offset} is outside its segment starting at {segment_base}")]
    OffsetOutsideSegment {
        /// The batch offset outside the range.
        offset: i64,
        /// The segment's base offset.
        segment_base: u64,
    },
    /// A checkpoint or other metadata file cannot be parsed.
    #[error("unreadable checkpoint: {0}")]
    Checkpoint(String),
    /// A record of the cluster's metadata log (or a `meta.properties` /
    /// `partition.metadata` file) cannot be understood.
    #[error("unreadable cluster metadata: {0}")]
    Metadata(String),
}

/// Why a record batch's bytes are not a valid Kafka v2 batch.
///
/// Returned when decoding (inside [`Error::InvalidBatch`] for input, inside
/// [`CorruptionKind::Batch`] for stored data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The buffer ends before the structure does.
    #[error("truncated: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes the structure needs.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The magic byte is not 2 (only v2 batches are supported).
    #[error("unsupported magic byte {0} (only v2 record batches are supported)")]
    UnsupportedMagic(i8),
    /// The batch length field is impossible.
    #[error("invalid batch length {0}")]
    InvalidBatchLength(i32),
    /// The CRC-32C over attributes..end does not match.
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// The CRC stored in the batch.
        stored: u32,
        /// The CRC computed over the bytes.
        computed: u32,
    },
    /// The attributes name a compression codec that does not exist.
    #[error("unknown compression codec id {0}")]
    UnknownCompression(u8),
    /// The codec exists but this build was compiled without its feature.
    #[error("compression codec {0} is not enabled in this build")]
    CodecNotEnabled(&'static str),
    /// Decompressing the records failed.
    #[error("decompression failed: {0}")]
    Decompression(String),
    /// A varint is longer than its type allows.
    #[error("malformed varint")]
    MalformedVarint,
    /// A record inside the batch is malformed; the text says which field.
    #[error("invalid record: {0}")]
    InvalidRecord(&'static str),
    /// The batch declares a different number of records than it holds.
    #[error("batch declares {declared} records but holds {actual}")]
    RecordCountMismatch {
        /// The records count field.
        declared: i32,
        /// Records actually decoded.
        actual: usize,
    },
    /// Record offset deltas are not 0, 1, 2, ... or disagree with
    /// lastOffsetDelta.
    #[error("invalid offset delta: {0}")]
    InvalidOffsetDelta(&'static str),
    /// A batch holds no records where at least one is required.
    #[error("batch holds no records")]
    Empty,
    /// A batch's base offset is negative, or its last offset (base offset +
    /// lastOffsetDelta) does not fit a 64-bit signed offset.
    #[error(
        "invalid batch offsets: base offset {base_offset}, lastOffsetDelta {last_offset_delta}"
    )]
    InvalidBaseOffset {
        /// The stored base offset.
        base_offset: i64,
        /// The stored lastOffsetDelta.
        last_offset_delta: i32,
    },
    /// A stored batch's offsets do not fit where it lies. The CRC does not
    /// cover the base offset, so its place is the check: in a log that is
    /// not compacted each batch starts exactly after the one before it (the
    /// first at its segment's base offset); in a compacted one it starts
    /// above the one before it, and ends at the offset an offset index entry
    /// for its position names; a read gets the batch holding the offset it
    /// asked for (or, compacted, the first one ending at or after it).
    #[error("batch offsets {base}..={last} do not fit offset {expected}: {rule}")]
    OffsetsOutOfSequence {
        /// The batch's base offset.
        base: i64,
        /// The batch's last offset.
        last: i64,
        /// The offset the rule compares the batch's offsets with (see
        /// `rule`).
        expected: i64,
        /// The rule the batch breaks.
        rule: &'static str,
    },
}
