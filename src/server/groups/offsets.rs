//! OffsetCommit and OffsetFetch.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::{non_empty, str_bytes};
use crate::server::{RequestContext, error_code};
use crate::{OffsetAndMetadata, TopicPartition};

/// Kafka's `offset.metadata.max.bytes` default: longer commit metadata is
/// refused with OFFSET_METADATA_TOO_LARGE.
pub(in crate::server) const OFFSET_METADATA_MAX_BYTES: usize = 4096;

/// One partition of a commit request, checked on its own as Kafka does:
/// its offset and metadata, or the error it is answered with.
pub(crate) fn commit_entry(
    ctx: &RequestContext<'_>,
    topic: &str,
    partition: i32,
    offset: i64,
    leader_epoch: i32,
    metadata: Option<&StrBytes>,
) -> Result<(TopicPartition, OffsetAndMetadata), i16> {
    let metadata = metadata.map_or("", StrBytes::as_str);
    if metadata.len() > OFFSET_METADATA_MAX_BYTES {
        return Err(ResponseError::OffsetMetadataTooLarge.code());
    }
    let Ok(partition) = u32::try_from(partition) else {
        return Err(ResponseError::UnknownTopicOrPartition.code());
    };
    let Ok(offset) = u64::try_from(offset) else {
        return Err(ResponseError::InvalidRequest.code());
    };
    let tp = TopicPartition::new(topic, partition);
    let mut meta = OffsetAndMetadata::new(offset);
    meta.leader_epoch = (leader_epoch >= 0).then_some(leader_epoch);
    meta.metadata = metadata.to_string();
    let one = BTreeMap::from([(tp.clone(), meta.clone())]);
    ctx.cluster
        .inner
        .check_commit_offsets(&one)
        .map_err(|e| error_code(&e))?;
    Ok((tp, meta))
}

/// A partition of a commit request and its answer so far (the error code
/// it is refused with).
pub(crate) type PartitionAnswer = (i32, Result<(), i16>);

/// Answers OffsetCommit (v2–v8): every partition answered on its own; the
/// valid ones are committed in one batch, if the member may commit.
pub(in crate::server) fn offset_commit(
    ctx: &RequestContext<'_>,
    request: &OffsetCommitRequest,
) -> OffsetCommitResponse {
    let version = ctx.api_version;
    let inner = &ctx.cluster.inner;
    let group = request.group_id.as_str();
    let group_error = if group.is_empty() {
        Some(ResponseError::InvalidGroupId.code())
    } else {
        inner.check_open().err().map(|e| error_code(&e))
    };
    let mut answers: Vec<(TopicName, Vec<PartitionAnswer>)> = Vec::new();
    let mut valid = BTreeMap::new();
    for topic in &request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            let epoch = if version >= 6 {
                p.committed_leader_epoch
            } else {
                -1
            };
            let entry = match group_error {
                Some(code) => Err(code),
                None => commit_entry(
                    ctx,
                    topic.name.as_str(),
                    p.partition_index,
                    p.committed_offset,
                    epoch,
                    p.committed_metadata.as_ref(),
                ),
            };
            let answer = entry.map(|(tp, meta)| {
                valid.insert(tp, meta);
            });
            partitions.push((p.partition_index, answer));
        }
        answers.push((topic.name.clone(), partitions));
    }
    let instance = if version >= 7 {
        non_empty(request.group_instance_id.as_ref())
    } else {
        None
    };
    let committed = if valid.is_empty() {
        Ok(())
    } else {
        inner
            .groups
            .commit_wire(
                group,
                request.member_id.as_str(),
                instance,
                request.generation_id_or_member_epoch,
                inner.clock().now_ms(),
                || inner.commit_offsets(group, &valid),
            )
            .map_err(|e| error_code(&e))
    };
    let topics = answers
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(index, answer)| {
                    let code = match answer.and(committed) {
                        Ok(()) => 0,
                        Err(code) => code,
                    };
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(index)
                        .with_error_code(code)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// One partition's answer to a fetch: (index, offset, leader epoch,
/// metadata, error).
type FetchedPartition = (i32, i64, i32, String, i16);

/// `group`'s committed offsets for `topics` (every partition it has an
/// offset for if `None`), by topic; or the group's error.
fn fetch_group(
    ctx: &RequestContext<'_>,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Result<Vec<(String, Vec<FetchedPartition>)>, i16> {
    if group.is_empty() {
        return Err(ResponseError::InvalidGroupId.code());
    }
    let inner = &ctx.cluster.inner;
    let committed = inner.group_offsets(group).map_err(|e| error_code(&e))?;
    let topics = topics.unwrap_or_else(|| {
        let mut all: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for tp in committed.keys() {
            all.entry(tp.topic.clone())
                .or_default()
                .push(i32::try_from(tp.partition).unwrap_or(i32::MAX));
        }
        all.into_iter().collect()
    });
    Ok(topics
        .into_iter()
        .map(|(topic, partitions)| {
            let answers = partitions
                .into_iter()
                .map(|index| {
                    let tp = u32::try_from(index)
                        .ok()
                        .map(|p| TopicPartition::new(topic.clone(), p));
                    if require_stable
                        && tp
                            .as_ref()
                            .is_some_and(|tp| inner.has_pending_offset(group, tp))
                    {
                        let code = ResponseError::UnstableOffsetCommit.code();
                        return (index, -1, -1, String::new(), code);
                    }
                    match tp.as_ref().and_then(|tp| committed.get(tp)) {
                        Some(meta) => (
                            index,
                            i64::try_from(meta.offset).unwrap_or(i64::MAX),
                            meta.leader_epoch.unwrap_or(-1),
                            meta.metadata.clone(),
                            0,
                        ),
                        None => (index, -1, -1, String::new(), 0),
                    }
                })
                .collect();
            (topic, answers)
        })
        .collect())
}

/// Answers OffsetFetch: one group (v1–v7) or a batch of groups (v8+).
pub(in crate::server) fn offset_fetch(
    ctx: &RequestContext<'_>,
    request: &OffsetFetchRequest,
) -> OffsetFetchResponse {
    let version = ctx.api_version;
    let require_stable = version >= 7 && request.require_stable;
    if version >= 8 {
        let groups = request
            .groups
            .iter()
            .map(|g| {
                let topics = g.topics.as_ref().map(|topics| {
                    topics
                        .iter()
                        .map(|t| (t.name.as_str().to_string(), t.partition_indexes.clone()))
                        .collect()
                });
                let answer = match fetch_group(ctx, g.group_id.as_str(), topics, require_stable) {
                    Ok(topics) => OffsetFetchResponseGroup::default().with_topics(
                        topics
                            .into_iter()
                            .map(|(name, partitions)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(TopicName(str_bytes(name)))
                                    .with_partitions(
                                        partitions
                                            .into_iter()
                                            .map(|(i, offset, epoch, metadata, code)| {
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(i)
                                                    .with_committed_offset(offset)
                                                    .with_committed_leader_epoch(epoch)
                                                    .with_metadata(Some(str_bytes(metadata)))
                                                    .with_error_code(code)
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    ),
                    Err(code) => OffsetFetchResponseGroup::default().with_error_code(code),
                };
                answer.with_group_id(g.group_id.clone())
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    // v1 always lists the partitions (it has no "every partition" form),
    // and has no top-level error: a group's error is each partition's.
    let asked: Option<Vec<(String, Vec<i32>)>> = match request.topics.as_ref() {
        Some(topics) => Some(
            topics
                .iter()
                .map(|t| (t.name.as_str().to_string(), t.partition_indexes.clone()))
                .collect(),
        ),
        None if version < 2 => Some(Vec::new()),
        None => None,
    };
    let to_partition = |(i, offset, epoch, metadata, code): FetchedPartition| {
        OffsetFetchResponsePartition::default()
            .with_partition_index(i)
            .with_committed_offset(offset)
            .with_committed_leader_epoch(if version >= 5 { epoch } else { -1 })
            .with_metadata(Some(str_bytes(metadata)))
            .with_error_code(code)
    };
    let to_topic = |(name, partitions): (String, Vec<FetchedPartition>)| {
        OffsetFetchResponseTopic::default()
            .with_name(TopicName(str_bytes(name)))
            .with_partitions(partitions.into_iter().map(to_partition).collect())
    };
    match fetch_group(
        ctx,
        request.group_id.as_str(),
        asked.clone(),
        require_stable,
    ) {
        Ok(topics) => OffsetFetchResponse::default()
            .with_topics(topics.into_iter().map(to_topic).collect())
            .with_error_code(0),
        Err(code) if version >= 2 => OffsetFetchResponse::default().with_error_code(code),
        Err(code) => {
            let topics = asked
                .unwrap_or_default()
                .into_iter()
                .map(|(name, partitions)| {
                    let failed = partitions
                        .into_iter()
                        .map(|i| (i, -1, -1, String::new(), code))
                        .collect();
                    to_topic((name, failed))
                })
                .collect();
            OffsetFetchResponse::default().with_topics(topics)
        }
    }
}
