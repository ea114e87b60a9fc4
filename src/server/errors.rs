//! logbus's errors as Kafka's protocol error codes.
//!
//! Every handler answers a failed call with the code a Kafka broker would
//! send for the same failure, so a client retries exactly what it would
//! retry against Kafka (its retriable set is Kafka's, not ours).

use kafka_protocol::ResponseError;

use crate::error::Error;

/// The Kafka error a broker answers for `error`.
///
/// Errors without a Kafka counterpart map to the nearest code a client
/// treats the same way: damaged or unwritable storage is
/// `KAFKA_STORAGE_ERROR` (retriable: the client looks for a new leader), a
/// refused call on a read-only view is `POLICY_VIOLATION` (not retriable),
/// a closed cluster is `BROKER_NOT_AVAILABLE`, and a bug is
/// `UNKNOWN_SERVER_ERROR`.
pub(crate) fn response_error(error: &Error) -> ResponseError {
    use ResponseError as K;
    match error {
        Error::Io { .. } | Error::Corrupt { .. } | Error::Fenced { .. } => K::KafkaStorageError,
        Error::InvalidBatch(_) | Error::CorruptRecord { .. } => K::CorruptMessage,
        Error::RecordTooLarge { .. } => K::MessageTooLarge,
        Error::OffsetsOutOfOrder { .. } => K::InvalidRecord,
        Error::OffsetOutOfRange { .. } | Error::NoOffsetForPartition { .. } => K::OffsetOutOfRange,
        Error::InvalidConfig(_) => K::InvalidConfig,
        Error::ReadOnly { .. } => K::PolicyViolation,
        Error::UnknownTopicOrPartition { .. } => K::UnknownTopicOrPartition,
        Error::NotLeaderOrFollower { .. } => K::NotLeaderOrFollower,
        Error::LeaderNotAvailable { .. } => K::LeaderNotAvailable,
        Error::FencedLeaderEpoch { .. } => K::FencedLeaderEpoch,
        Error::NotEnoughReplicas { .. } => K::NotEnoughReplicas,
        Error::NotEnoughReplicasAfterAppend { .. } => K::NotEnoughReplicasAfterAppend,
        Error::CoordinatorNotAvailable { .. } => K::CoordinatorNotAvailable,
        Error::TopicAlreadyExists { .. } => K::TopicAlreadyExists,
        Error::InvalidTopic { .. } => K::InvalidTopicException,
        Error::InvalidPartitions { .. } => K::InvalidPartitions,
        Error::InvalidReplicationFactor { .. } => K::InvalidReplicationFactor,
        Error::Timeout { .. } => K::RequestTimedOut,
        Error::Closed(_) => K::BrokerNotAvailable,
        Error::RebalanceInProgress { .. } => K::RebalanceInProgress,
        Error::CommitFailed { .. } | Error::IllegalGeneration { .. } => K::IllegalGeneration,
        Error::UnknownMemberId { .. } => K::UnknownMemberId,
        Error::FencedInstanceId { .. } => K::FencedInstanceId,
        Error::InconsistentGroupProtocol { .. } => K::InconsistentGroupProtocol,
        Error::GroupNotEmpty { .. } => K::NonEmptyGroup,
        Error::OutOfOrderSequence { .. } => K::OutOfOrderSequenceNumber,
        Error::InvalidProducerEpoch { .. } => K::InvalidProducerEpoch,
        Error::UnknownProducerId { .. } => K::UnknownProducerId,
        Error::InvalidTxnState { .. } => K::InvalidTxnState,
        Error::ProducerFenced { .. } => K::ProducerFenced,
        Error::InvalidProducerIdMapping { .. } => K::InvalidProducerIdMapping,
        Error::InvalidTransactionTimeout { .. } => K::InvalidTransactionTimeout,
        Error::ConcurrentTransactions { .. } => K::ConcurrentTransactions,
        Error::TransactionAborted { .. } => K::TransactionAbortable,
        Error::InvalidArgument(_) => K::InvalidRequest,
        // Client-side conditions a broker never reports, and bugs.
        _ => K::UnknownServerError,
    }
}

/// [`response_error`] as the `i16` a response carries.
pub(crate) fn error_code(error: &Error) -> i16 {
    response_error(error).code()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retriable_errors_stay_retriable_for_kafka_clients() {
        let cases = [
            Error::NotLeaderOrFollower {
                topic: "t".into(),
                partition: 0,
                broker: 1,
            },
            Error::NotEnoughReplicas {
                topic: "t".into(),
                partition: 0,
                in_sync: 1,
                required: 2,
            },
            Error::CoordinatorNotAvailable {
                group: "g".into(),
                reason: "starting".into(),
            },
        ];
        for error in &cases {
            assert!(error.is_retriable(), "{error}");
            assert!(response_error(error).is_retriable(), "{error}");
        }
    }

    #[test]
    fn refusals_map_to_kafka_codes() {
        let fenced = Error::ProducerFenced {
            transactional_id: "tx".into(),
            epoch: 1,
            current: 2,
        };
        assert_eq!(error_code(&fenced), 90);
        let exists = Error::TopicAlreadyExists { topic: "t".into() };
        assert_eq!(error_code(&exists), 36);
        assert_eq!(error_code(&Error::Internal("bug".into())), -1);
    }
}
