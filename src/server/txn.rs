//! The transaction coordinator's APIs: InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn and
//! TxnOffsetCommit.
//!
//! Each answers through the library's transaction coordinator, the one
//! in-process transactional producers use. Versions are those before
//! KIP-890's second phase (which changes what EndTxn and the epochs mean),
//! the ones librdkafka 2.x, the Java client 3.x and kafka-python 3.0
//! negotiate.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, ApiKey, EndTxnRequest, EndTxnResponse, InitProducerIdRequest,
    InitProducerIdResponse, ProducerId, RequestKind, ResponseKind, TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
};

use super::groups::{PartitionAnswer, commit_entry};
use super::{RequestContext, error_code};
use crate::TopicPartition;
use crate::cluster::Markers;
use crate::error::{Error, Result};

#[cfg(test)]
mod tests;

/// The versions of each API this module answers, as (API, lowest, highest).
pub(super) const VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
];

/// Answers `request`, a request of one of the APIs in [`VERSIONS`] (at a
/// version in its range); `None` for any other request.
pub(super) fn handle(ctx: &RequestContext<'_>, request: RequestKind) -> Option<ResponseKind> {
    Some(match request {
        RequestKind::InitProducerId(r) => ResponseKind::InitProducerId(init_producer_id(ctx, &r)),
        RequestKind::AddPartitionsToTxn(r) => {
            ResponseKind::AddPartitionsToTxn(add_partitions_to_txn(ctx, &r))
        }
        RequestKind::AddOffsetsToTxn(r) => {
            ResponseKind::AddOffsetsToTxn(add_offsets_to_txn(ctx, &r))
        }
        RequestKind::EndTxn(r) => ResponseKind::EndTxn(end_txn(ctx, &r)),
        RequestKind::TxnOffsetCommit(r) => {
            ResponseKind::TxnOffsetCommit(txn_offset_commit(ctx, &r))
        }
        _ => return None,
    })
}

/// The code answered for `error` to a request at `version` of an API that
/// learned PRODUCER_FENCED at `fenced_since` (KIP-588): older clients get
/// INVALID_PRODUCER_EPOCH for it, as from Kafka.
fn txn_error_code(error: &Error, version: i16, fenced_since: i16) -> i16 {
    match error {
        Error::ProducerFenced { .. } if version < fenced_since => {
            ResponseError::InvalidProducerEpoch.code()
        }
        e => error_code(e),
    }
}

/// A result as a response's error code.
fn code_of(result: Result<()>, version: i16, fenced_since: i16) -> i16 {
    match result {
        Ok(()) => 0,
        Err(e) => txn_error_code(&e, version, fenced_since),
    }
}

/// Answers InitProducerId (v0–v4): a transactional producer's id and new
/// epoch (fencing earlier instances of the id), or, without a
/// transactional id, an idempotent producer's new id at epoch 0.
fn init_producer_id(
    ctx: &RequestContext<'_>,
    request: &InitProducerIdRequest,
) -> InitProducerIdResponse {
    let version = ctx.api_version;
    let inner = &ctx.cluster.inner;
    let answer = match request.transactional_id.as_ref().map(|id| id.as_str()) {
        None => inner
            .check_open()
            .and_then(|()| inner.allocate_producer_id())
            .map(|id| (id, 0)),
        Some("") => Err(Error::InvalidArgument(
            "an empty transactional id (send none for an idempotent producer)".into(),
        )),
        Some(id) => {
            // v3+ (KIP-360): a producer that holds an id and epoch bumps it.
            let expected = (version >= 3 && request.producer_id.0 >= 0)
                .then_some((request.producer_id.0, request.producer_epoch));
            inner.init_producer_id_expecting(id, request.transaction_timeout_ms, expected)
        }
    };
    match answer {
        Ok((producer_id, epoch)) => InitProducerIdResponse::default()
            .with_error_code(0)
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch),
        Err(e) => InitProducerIdResponse::default()
            .with_error_code(txn_error_code(&e, version, 4))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    }
}

/// Answers AddPartitionsToTxn (v0–v3). As Kafka: if some partitions do not
/// exist, they are answered UNKNOWN_TOPIC_OR_PARTITION and the others
/// OPERATION_NOT_ATTEMPTED; otherwise every partition gets the outcome.
fn add_partitions_to_txn(
    ctx: &RequestContext<'_>,
    request: &AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let version = ctx.api_version;
    let inner = &ctx.cluster.inner;
    let asked: Vec<(TopicPartition, i32)> = request
        .v3_and_below_topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                (
                    TopicPartition::new(t.name.as_str(), u32::try_from(*p).unwrap_or(u32::MAX)),
                    *p,
                )
            })
        })
        .collect();
    let unknown: Vec<bool> = asked
        .iter()
        .map(|(tp, index)| *index < 0 || inner.partition_key(tp).is_err())
        .collect();
    let codes: Vec<i16> = if unknown.iter().any(|u| *u) {
        unknown
            .iter()
            .map(|u| {
                if *u {
                    ResponseError::UnknownTopicOrPartition.code()
                } else {
                    ResponseError::OperationNotAttempted.code()
                }
            })
            .collect()
    } else {
        let partitions: Vec<TopicPartition> = asked.iter().map(|(tp, _)| tp.clone()).collect();
        let code = code_of(
            inner.add_partitions_to_txn(
                request.v3_and_below_transactional_id.as_str(),
                request.v3_and_below_producer_id.0,
                request.v3_and_below_producer_epoch,
                &partitions,
            ),
            version,
            2,
        );
        vec![code; asked.len()]
    };
    let mut by_topic: BTreeMap<&str, Vec<AddPartitionsToTxnPartitionResult>> = BTreeMap::new();
    for ((tp, index), code) in asked.iter().zip(codes) {
        by_topic.entry(tp.topic.as_str()).or_default().push(
            AddPartitionsToTxnPartitionResult::default()
                .with_partition_index(*index)
                .with_partition_error_code(code),
        );
    }
    let results = request
        .v3_and_below_topics
        .iter()
        .filter_map(|t| {
            by_topic.remove(t.name.as_str()).map(|partitions| {
                AddPartitionsToTxnTopicResult::default()
                    .with_name(t.name.clone())
                    .with_results_by_partition(partitions)
            })
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
}

/// Answers AddOffsetsToTxn (v0–v3): the group's `__consumer_offsets`
/// partition joins the transaction.
fn add_offsets_to_txn(
    ctx: &RequestContext<'_>,
    request: &AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let group = request.group_id.as_str();
    let code = if group.is_empty() {
        ResponseError::InvalidGroupId.code()
    } else {
        code_of(
            ctx.cluster.inner.add_offsets_to_txn(
                request.transactional_id.as_str(),
                request.producer_id.0,
                request.producer_epoch,
                group,
            ),
            ctx.api_version,
            2,
        )
    };
    AddOffsetsToTxnResponse::default().with_error_code(code)
}

/// Answers EndTxn (v0–v3): commits or aborts the open transaction.
fn end_txn(ctx: &RequestContext<'_>, request: &EndTxnRequest) -> EndTxnResponse {
    let code = code_of(
        ctx.cluster.inner.end_txn(
            request.transactional_id.as_str(),
            request.producer_id.0,
            request.producer_epoch,
            request.committed,
            Markers::Timer,
        ),
        ctx.api_version,
        2,
    );
    EndTxnResponse::default().with_error_code(code)
}

/// Answers TxnOffsetCommit (v0–v3): each partition checked on its own, the
/// valid ones committed pending in the transaction; from v3, with a
/// generation, as the group member it names (KIP-447).
fn txn_offset_commit(
    ctx: &RequestContext<'_>,
    request: &TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let version = ctx.api_version;
    let group = request.group_id.as_str();
    let mut answers = Vec::with_capacity(request.topics.len());
    let mut valid = BTreeMap::new();
    for topic in &request.topics {
        let partitions: Vec<PartitionAnswer> = topic
            .partitions
            .iter()
            .map(|p| {
                if group.is_empty() {
                    return (p.partition_index, Err(ResponseError::InvalidGroupId.code()));
                }
                let epoch = if version >= 2 {
                    p.committed_leader_epoch
                } else {
                    -1
                };
                let entry = commit_entry(
                    ctx,
                    topic.name.as_str(),
                    p.partition_index,
                    p.committed_offset,
                    epoch,
                    p.committed_metadata.as_ref(),
                );
                (
                    p.partition_index,
                    entry.map(|(tp, meta)| {
                        valid.insert(tp, meta);
                    }),
                )
            })
            .collect();
        answers.push((topic.name.clone(), partitions));
    }
    let member = (version >= 3 && request.generation_id >= 0).then(|| {
        (
            request.member_id.as_str(),
            super::groups::non_empty(request.group_instance_id.as_ref()),
            request.generation_id,
        )
    });
    let committed = if valid.is_empty() {
        Ok(())
    } else {
        ctx.cluster
            .inner
            .txn_offset_commit_wire(
                request.transactional_id.as_str(),
                request.producer_id.0,
                request.producer_epoch,
                group,
                member,
                &valid,
            )
            .map_err(|e| txn_error_code(&e, version, 3))
    };
    let topics = answers
        .into_iter()
        .map(|(name, partitions)| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(index, answer)| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(index)
                                .with_error_code(match answer.and(committed) {
                                    Ok(()) => 0,
                                    Err(code) => code,
                                })
                        })
                        .collect(),
                )
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}
