//! The data path: Metadata, Produce, Fetch (with long polling and fetch
//! sessions),
//! ListOffsets, OffsetForLeaderEpoch and DeleteRecords.
//!
//! Reads and writes go to the replica manager of the broker whose listener
//! took the request, as a Kafka broker serves only what it leads: another
//! broker's partition answers NOT_LEADER_OR_FOLLOWER and the client asks
//! Metadata for the leader.

use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    BrokerId, DeleteRecordsRequest, DeleteRecordsResponse, FetchRequest, FetchResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ProduceRequest, ProduceResponse,
    ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::fetch_session::{FetchContext, INVALID_SESSION_ID, SessionPartition};
use super::listener::Shared;
use super::{RequestContext, error_code};
use crate::cluster::TopicState;
use crate::error::{Error, Result};
use crate::replica::{AppendAcks, AppendOrigin, FetchBound, ReplicaManager, TopicIdPartition};
use crate::types::IsolationLevel;

/// A topic name as the protocol carries it.
pub(super) fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// A string as the protocol carries it.
pub(super) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// A partition number from the wire: negative ones do not exist.
fn partition_number(p: i32) -> Option<u32> {
    u32::try_from(p).ok()
}

/// The broker clients send controller requests to: the lowest broker not
/// fenced (every broker's listener answers them; the cluster's controller
/// is in-process).
pub(super) fn controller_id(ctx: &RequestContext<'_>) -> i32 {
    let inner = &ctx.cluster.inner;
    (0..inner.broker_count())
        .find(|b| !inner.is_broker_fenced(*b))
        .and_then(|b| i32::try_from(b).ok())
        .unwrap_or(-1)
}

/// The replica manager of the broker that took the request. A stopped
/// broker leads nothing: its partitions answer NOT_LEADER_OR_FOLLOWER.
fn local_manager(ctx: &RequestContext<'_>, key: &TopicIdPartition) -> Result<Arc<ReplicaManager>> {
    match ctx.cluster.inner.broker(ctx.broker) {
        Ok(broker) => Ok(broker.replicas.clone()),
        Err(Error::IllegalState(_)) => Err(Error::NotLeaderOrFollower {
            topic: key.topic.to_string(),
            partition: key.partition,
            broker: ctx.broker,
        }),
        Err(e) => Err(e),
    }
}

/// The code of `e`, an error of this broker's manager about a partition
/// the cluster has: one the broker does not host is one it does not lead
/// (as Kafka's broker answers for a partition in its metadata but not on
/// it).
fn local_code(e: &Error) -> i16 {
    match e {
        Error::UnknownTopicOrPartition { .. } => ResponseError::NotLeaderOrFollower.code(),
        e => error_code(e),
    }
}

/// The partition `partition` of topic `topic` and this broker's manager,
/// which must lead it; with the client's `current_leader_epoch` (-1: not
/// checked) checked against the leader's (KIP-320).
fn led_partition(
    ctx: &RequestContext<'_>,
    topic: &str,
    partition: i32,
    current_leader_epoch: i32,
) -> std::result::Result<(TopicIdPartition, Arc<ReplicaManager>, i32), i16> {
    let unknown = ResponseError::UnknownTopicOrPartition.code();
    let state = ctx
        .cluster
        .inner
        .topic_state(topic)
        .map_err(|e| error_code(&e))?;
    let key = partition_number(partition)
        .ok_or(unknown)
        .and_then(|p| state.key(p).map_err(|e| error_code(&e)))?;
    let manager = local_manager(ctx, &key).map_err(|e| error_code(&e))?;
    let roles = manager.leader_roles(&key).map_err(|e| local_code(&e))?;
    if current_leader_epoch >= 0 {
        if current_leader_epoch < roles.leader_epoch {
            return Err(ResponseError::FencedLeaderEpoch.code());
        }
        if current_leader_epoch > roles.leader_epoch {
            return Err(ResponseError::UnknownLeaderEpoch.code());
        }
    }
    Ok((key, manager, roles.leader_epoch))
}

/// Metadata: every broker's advertised address, the controller, and the
/// topics asked for (all with a null list) with each partition's leader,
/// leader epoch, replicas and ISR. Topics are never created by it.
pub(super) fn metadata(ctx: &RequestContext<'_>, request: &MetadataRequest) -> MetadataResponse {
    let inner = &ctx.cluster.inner;
    let mut response = MetadataResponse::default();
    // The brokers clients can reach: not fenced (a stopped broker is
    // listed until the controller fences it, as in Kafka).
    response.brokers = ctx
        .advertised
        .iter()
        .filter(|(id, _)| !inner.is_broker_fenced(**id))
        .map(|(id, (host, port))| {
            let mut b = MetadataResponseBroker::default();
            b.node_id = BrokerId(i32::try_from(*id).unwrap_or(-1));
            b.host = str_bytes(host.clone());
            b.port = i32::from(*port);
            b
        })
        .collect();
    response.cluster_id = Some(str_bytes(ctx.cluster.cluster_id()));
    response.controller_id = BrokerId(controller_id(ctx));
    let all = inner.topic_states();
    let asked: Option<&Vec<_>> = match &request.topics {
        // v0 reads an empty list as "every topic".
        Some(list) if list.is_empty() && ctx.api_version == 0 => None,
        Some(list) => Some(list),
        None => None,
    };
    response.topics = match asked {
        None => all.iter().map(|t| topic_metadata(ctx, t)).collect(),
        Some(list) => list
            .iter()
            .map(|asked| {
                let found = match &asked.name {
                    Some(name) => all.iter().find(|t| *t.name == *name.0.as_str()),
                    None => all.iter().find(|t| t.id == asked.topic_id),
                };
                match found {
                    Some(t) => topic_metadata(ctx, t),
                    None => {
                        let mut t = MetadataResponseTopic::default();
                        t.name = asked.name.clone();
                        t.topic_id = asked.topic_id;
                        t.error_code = if asked.name.is_some() {
                            ResponseError::UnknownTopicOrPartition.code()
                        } else {
                            ResponseError::UnknownTopicId.code()
                        };
                        t
                    }
                }
            })
            .collect(),
    };
    response
}

fn broker_ids(ids: &[u32]) -> Vec<BrokerId> {
    ids.iter()
        .map(|b| BrokerId(i32::try_from(*b).unwrap_or(-1)))
        .collect()
}

fn topic_metadata(ctx: &RequestContext<'_>, state: &TopicState) -> MetadataResponseTopic {
    let inner = &ctx.cluster.inner;
    let mut topic = MetadataResponseTopic::default();
    topic.name = Some(topic_name(&state.name));
    topic.topic_id = state.id;
    topic.is_internal = state.internal;
    topic.partitions = (0..state.partition_count())
        .filter_map(|p| {
            let roles = state.roles(p)?;
            let mut m = MetadataResponsePartition::default();
            m.partition_index = i32::try_from(p).unwrap_or(i32::MAX);
            match roles.leader {
                Some(leader) => m.leader_id = BrokerId(i32::try_from(leader).unwrap_or(-1)),
                None => {
                    m.leader_id = BrokerId(-1);
                    m.error_code = ResponseError::LeaderNotAvailable.code();
                }
            }
            m.leader_epoch = roles.leader_epoch;
            m.replica_nodes = broker_ids(&roles.replicas);
            m.isr_nodes = broker_ids(&roles.isr);
            let offline: Vec<u32> = roles
                .replicas
                .iter()
                .copied()
                .filter(|b| inner.is_broker_fenced(*b))
                .collect();
            m.offline_replicas = broker_ids(&offline);
            Some(m)
        })
        .collect();
    topic
}

/// Produce: each partition's batches appended by its leader (this broker)
/// with a client's full validation (CRC, offsets, sizes, producer id and
/// sequence, transaction state), acknowledged as `acks` asks (`-1`: every
/// in-sync replica). `acks=0` gets no response, as Kafka sends none; if
/// it failed, `Err` (the connection is closed, as Kafka closes it).
pub(super) fn produce(
    ctx: &RequestContext<'_>,
    request: ProduceRequest,
) -> std::result::Result<Option<ProduceResponse>, String> {
    let inner = &ctx.cluster.inner;
    let acks = match request.acks {
        0 | 1 => Some(AppendAcks::Leader),
        -1 => Some(AppendAcks::All),
        _ => None,
    };
    let refused = if acks.is_none() {
        Some(ResponseError::InvalidRequiredAcks.code())
    } else {
        inner
            .check_writable("appending to a partition")
            .err()
            .map(|e| error_code(&e))
    };
    let mut waiting = Vec::new();
    let mut topics = Vec::new();
    for topic in request.topic_data {
        let name = topic.name.0.as_str().to_string();
        let mut partitions = Vec::new();
        for data in topic.partition_data {
            let mut r = PartitionProduceResponse::default();
            r.index = data.index;
            r.base_offset = -1;
            r.log_append_time_ms = -1;
            r.log_start_offset = -1;
            let appended = match (refused, acks) {
                (None, Some(acks)) => append_one(ctx, &name, data.index, data.records, acks),
                _ => Err(refused.unwrap_or(ResponseError::InvalidRequiredAcks.code())),
            };
            match appended {
                Ok((info, log_start, pending)) => {
                    r.base_offset = i64::try_from(info.first_offset()).unwrap_or(i64::MAX);
                    r.log_append_time_ms = info.log_append_time().unwrap_or(-1);
                    r.log_start_offset = log_start;
                    if let Some(pending) = pending {
                        waiting.push((topics.len(), partitions.len(), pending));
                    }
                }
                Err(code) => r.error_code = code,
            }
            partitions.push(r);
        }
        let mut t = TopicProduceResponse::default();
        t.name = topic.name;
        t.partition_responses = partitions;
        topics.push(t);
    }
    // `acks=all`: every partition appended; now wait for their replicas.
    let clock = inner.clock().clone();
    for (t, p, pending) in waiting {
        if let Err(e) = pending.wait(&clock) {
            let r = &mut topics[t].partition_responses[p];
            r.error_code = error_code(&e);
        }
    }
    if request.acks == 0 {
        // No response: a failure is told by closing the connection, as
        // Kafka's broker does, so the client refreshes its metadata.
        let failed = topics
            .iter()
            .flat_map(|t| t.partition_responses.iter().map(move |p| (t, p)))
            .find(|(_, p)| p.error_code != 0);
        return match failed {
            Some((t, p)) => Err(format!(
                "an acks=0 produce to {}-{} failed with error {}",
                t.name.0.as_str(),
                p.index,
                p.error_code
            )),
            None => Ok(None),
        };
    }
    let mut response = ProduceResponse::default();
    response.responses = topics;
    Ok(Some(response))
}

type Appended = (
    crate::log::AppendInfo,
    i64,
    Option<crate::replica::PendingAck>,
);

/// Appends one partition's batches as a client's.
fn append_one(
    ctx: &RequestContext<'_>,
    topic: &str,
    partition: i32,
    records: Option<Bytes>,
    acks: AppendAcks,
) -> std::result::Result<Appended, i16> {
    let inner = &ctx.cluster.inner;
    let state = inner.topic_state(topic).map_err(|e| error_code(&e))?;
    state
        .refuse_internal("appending to")
        .map_err(|e| error_code(&e))?;
    let key = partition_number(partition)
        .ok_or(ResponseError::UnknownTopicOrPartition.code())
        .and_then(|p| state.key(p).map_err(|e| error_code(&e)))?;
    let manager = local_manager(ctx, &key).map_err(|e| error_code(&e))?;
    let Some(records) = records.filter(|r| !r.is_empty()) else {
        return Err(ResponseError::InvalidRecord.code());
    };
    // The log assigns offsets in place: the request's bytes are copied once.
    let mut batches = records.to_vec();
    let (info, pending) = manager
        .append_pending(&key, &mut batches, AppendOrigin::Client, acks)
        .map_err(|e| local_code(&e))?;
    let log_start = manager
        .offsets(&key)
        .map_or(-1, |o| i64::try_from(o.log_start).unwrap_or(i64::MAX));
    Ok((info, log_start, pending))
}

/// One partition a fetch asks for, resolved once.
struct FetchTarget {
    /// Its topic's index in the response's topics.
    topic: usize,
    partition: i32,
    offset: i64,
    max_bytes: i32,
    /// The partition and its manager, or the error to answer.
    led: std::result::Result<(TopicIdPartition, Arc<ReplicaManager>), i16>,
}

/// What every pass of one fetch reads with.
struct FetchPlan {
    /// The response's topics, in order.
    topics: Vec<(TopicName, Uuid)>,
    targets: Vec<FetchTarget>,
    isolation: IsolationLevel,
    max_bytes: usize,
    min_bytes: usize,
    /// When the long poll ends, on the cluster's clock.
    deadline: i64,
}

/// Fetch: whole batches from each partition's leader (this broker), as
/// stored (segment bytes, not re-encoded), below the high watermark, or
/// under read_committed below the last stable offset with the aborted
/// transactions. Waits up to `max_wait_ms` (woken by appends) until
/// `min_bytes` are there. From v7, with fetch sessions (KIP-227, see
/// `fetch_session`): a full fetch may open one, an incremental fetch
/// reads its session's partitions and answers those with news.
pub(super) fn fetch(
    ctx: &RequestContext<'_>,
    shared: &Shared,
    request: &FetchRequest,
) -> FetchResponse {
    let inner = &ctx.cluster.inner;
    let isolation = if request.isolation_level == 1 {
        // Every commit answered so far is visible to this read.
        inner.complete_answered_txns();
        IsolationLevel::ReadCommitted
    } else {
        IsolationLevel::ReadUncommitted
    };
    let max_bytes = usize::try_from(request.max_bytes)
        .unwrap_or(0)
        .min(shared.config.fetch_max_bytes);
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let clock = inner.clock().clone();
    let now = clock.now_ms();
    let deadline = now.saturating_add(i64::from(request.max_wait_ms.max(0)));
    let sessions = &shared.fetch_sessions;
    let context = sessions.begin(ctx.broker, request, ctx.api_version >= 7, now);
    let mut plan = FetchPlan {
        topics: Vec::new(),
        targets: Vec::new(),
        isolation,
        max_bytes,
        min_bytes,
        deadline,
    };
    match context {
        FetchContext::Error(code) => {
            let mut response = FetchResponse::default();
            response.error_code = code;
            response.session_id = INVALID_SESSION_ID;
            response
        }
        FetchContext::Sessionless | FetchContext::Full => {
            let mut asked = Vec::new();
            for (t, topic) in request.topics.iter().enumerate() {
                plan.topics.push((topic.topic.clone(), topic.topic_id));
                let name = topic.topic.0.as_str();
                for p in &topic.partitions {
                    plan.targets.push(target(
                        ctx,
                        t,
                        name,
                        p.partition,
                        p.fetch_offset,
                        p.partition_max_bytes,
                        p.current_leader_epoch,
                    ));
                    asked.push(SessionPartition::requested(
                        name,
                        p.partition,
                        p.fetch_offset,
                        p.partition_max_bytes,
                        p.current_leader_epoch,
                    ));
                }
            }
            let mut response = fetch_waiting(shared, &clock, &plan);
            if matches!(context, FetchContext::Full) {
                let answers: Vec<&PartitionData> = response
                    .responses
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .collect();
                response.session_id = sessions.open(ctx.broker, asked, &answers, clock.now_ms());
            }
            response
        }
        FetchContext::Incremental { id, partitions } => {
            // Consecutive partitions of a topic share its entry, as in
            // Kafka's responses.
            for p in &partitions {
                if plan
                    .topics
                    .last()
                    .is_none_or(|(name, _)| name.0.as_str() != p.topic)
                {
                    plan.topics.push((topic_name(&p.topic), Uuid::nil()));
                }
                let t = plan.topics.len() - 1;
                plan.targets.push(target(
                    ctx,
                    t,
                    &p.topic,
                    p.partition,
                    p.fetch_offset,
                    p.max_bytes,
                    p.current_leader_epoch,
                ));
            }
            let mut response = fetch_waiting(shared, &clock, &plan);
            let answers: Vec<&PartitionData> = response
                .responses
                .iter()
                .flat_map(|t| &t.partitions)
                .collect();
            let keep = sessions.answered(ctx.broker, id, &partitions, &answers);
            let mut keep = keep.into_iter();
            for topic in &mut response.responses {
                topic.partitions.retain(|_| keep.next().unwrap_or(true));
            }
            response.responses.retain(|t| !t.partitions.is_empty());
            response.session_id = id;
            response
        }
    }
}

/// A fetch's partition `partition` of topic `name` (the response's topic
/// `topic`), resolved to its leader here or the error to answer.
fn target(
    ctx: &RequestContext<'_>,
    topic: usize,
    name: &str,
    partition: i32,
    offset: i64,
    max_bytes: i32,
    current_leader_epoch: i32,
) -> FetchTarget {
    let led = led_partition(ctx, name, partition, current_leader_epoch)
        .map(|(key, manager, _)| (key, manager));
    FetchTarget {
        topic,
        partition,
        offset,
        max_bytes,
        led,
    }
}

/// Reads `plan`'s partitions until `min_bytes` are there, a partition
/// fails, the deadline passes or the server stops; waits on the
/// partitions' watchers and the clock in between.
fn fetch_waiting(
    shared: &Shared,
    clock: &Arc<dyn crate::Clock>,
    plan: &FetchPlan,
) -> FetchResponse {
    let (wake_tx, wake_rx): (Sender<()>, Receiver<()>) = crossbeam_channel::bounded(1);
    // The clock's jumps, heard once the fetch waits (most answer at once).
    let mut ticks = crossbeam_channel::never();
    let mut watching = false;
    let response = loop {
        let (response, bytes, failed) = fetch_once(plan);
        let now = clock.now_ms();
        if bytes >= plan.min_bytes || failed || now >= plan.deadline {
            break response;
        }
        if !watching {
            // Watch, then read again: an append between the read and the
            // watch is not missed.
            for target in &plan.targets {
                if let Ok((key, manager)) = &target.led {
                    manager.watch(key, &wake_tx);
                }
            }
            ticks = clock.subscribe();
            watching = true;
            continue;
        }
        let timer = clock
            .wait_hint(plan.deadline)
            .map_or_else(crossbeam_channel::never, crossbeam_channel::after);
        crossbeam_channel::select! {
            recv(wake_rx) -> _ => {}
            recv(ticks) -> _ => {}
            recv(timer) -> _ => {}
            recv(shared.stop_rx) -> _ => {
                break fetch_once(plan).0;
            }
        }
    };
    if watching {
        for target in &plan.targets {
            if let Ok((key, manager)) = &target.led {
                manager.unwatch(key, &wake_tx);
            }
        }
    }
    response
}

/// One pass over a fetch's partitions: the response, its record bytes,
/// and whether a partition failed (which answers at once).
fn fetch_once(plan: &FetchPlan) -> (FetchResponse, usize, bool) {
    let (isolation, max_bytes) = (plan.isolation, plan.max_bytes);
    let bound = FetchBound::for_consumer(isolation);
    let mut used = 0usize;
    let mut failed = false;
    let mut topics: Vec<FetchableTopicResponse> = plan
        .topics
        .iter()
        .map(|(name, id)| {
            let mut r = FetchableTopicResponse::default();
            r.topic = name.clone();
            r.topic_id = *id;
            r
        })
        .collect();
    for target in &plan.targets {
        let mut data = PartitionData::default();
        data.partition_index = target.partition;
        data.high_watermark = -1;
        data.last_stable_offset = -1;
        data.log_start_offset = -1;
        data.records = Some(Bytes::new());
        match &target.led {
            Err(code) => {
                data.error_code = *code;
                failed = true;
            }
            Ok((key, manager)) => {
                let remaining = max_bytes.saturating_sub(used);
                let limit = usize::try_from(target.max_bytes)
                    .unwrap_or(0)
                    .min(remaining);
                match read_partition(manager, key, target.offset, limit, bound, &mut data) {
                    Ok(records) => {
                        // Past the response's budget, only the first
                        // partition may go over (one whole batch).
                        if !records.is_empty() && (used == 0 || records.len() <= remaining) {
                            used += records.len();
                            if isolation == IsolationLevel::ReadUncommitted {
                                data.aborted_transactions = None;
                            }
                            data.records = Some(records);
                        } else {
                            data.aborted_transactions = None;
                        }
                    }
                    Err(e) => {
                        data.error_code = error_code(&e);
                        failed = true;
                    }
                }
            }
        }
        topics[target.topic].partitions.push(data);
    }
    let mut response = FetchResponse::default();
    response.responses = topics;
    (response, used, failed)
}

fn offset_i64(offset: u64) -> i64 {
    i64::try_from(offset).unwrap_or(i64::MAX)
}

/// Reads one partition into `data`'s offsets and aborted transactions;
/// returns the record bytes (empty when `limit` is 0).
fn read_partition(
    manager: &ReplicaManager,
    key: &TopicIdPartition,
    offset: i64,
    limit: usize,
    bound: FetchBound,
    data: &mut PartitionData,
) -> Result<Bytes> {
    let offsets = manager.offsets(key)?;
    data.high_watermark = offset_i64(offsets.high_watermark);
    data.log_start_offset = offset_i64(offsets.log_start);
    data.last_stable_offset = offset_i64(manager.last_stable_offset(key)?);
    let Ok(offset) = u64::try_from(offset) else {
        return Err(Error::OffsetOutOfRange {
            offset: 0,
            log_start: offsets.log_start,
            log_end: offsets.log_end,
        });
    };
    if limit == 0 {
        return Ok(Bytes::new());
    }
    let fetched = manager.fetch(key, offset, limit, bound)?;
    data.aborted_transactions = fetched.aborted_transactions().map(|list| {
        list.iter()
            .map(|t| {
                let mut a = AbortedTransaction::default();
                a.producer_id = ProducerId(t.producer_id);
                a.first_offset = offset_i64(t.first_offset);
                a
            })
            .collect()
    });
    Ok(fetched.records().clone())
}

/// ListOffsets: the earliest (-2) or latest (-1) offset, or the first
/// offset at or after a timestamp, of each partition at its leader; the
/// latest is the high watermark, or under read_committed the last stable
/// offset.
pub(super) fn list_offsets(
    ctx: &RequestContext<'_>,
    request: &ListOffsetsRequest,
) -> ListOffsetsResponse {
    let isolation = if request.isolation_level == 1 {
        ctx.cluster.inner.complete_answered_txns();
        IsolationLevel::ReadCommitted
    } else {
        IsolationLevel::ReadUncommitted
    };
    let mut response = ListOffsetsResponse::default();
    response.topics = request
        .topics
        .iter()
        .map(|topic| {
            let mut t = ListOffsetsTopicResponse::default();
            t.name = topic.name.clone();
            t.partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let mut r = ListOffsetsPartitionResponse::default();
                    r.partition_index = p.partition_index;
                    r.timestamp = -1;
                    r.offset = -1;
                    r.leader_epoch = -1;
                    let found = led_partition(
                        ctx,
                        topic.name.0.as_str(),
                        p.partition_index,
                        p.current_leader_epoch,
                    )
                    .and_then(|(key, manager, epoch)| {
                        offset_at(&manager, &key, p.timestamp, isolation, epoch)
                            .map_err(|e| error_code(&e))
                    });
                    match found {
                        Ok(Some((offset, timestamp, epoch))) => {
                            r.offset = offset;
                            r.timestamp = timestamp;
                            r.leader_epoch = epoch;
                        }
                        Ok(None) => {}
                        Err(code) => r.error_code = code,
                    }
                    r
                })
                .collect();
            t
        })
        .collect();
    response
}

/// The offset ListOffsets answers for `timestamp`, with the timestamp and
/// leader epoch it reports; `None` when no record is that recent.
fn offset_at(
    manager: &ReplicaManager,
    key: &TopicIdPartition,
    timestamp: i64,
    isolation: IsolationLevel,
    leader_epoch: i32,
) -> Result<Option<(i64, i64, i32)>> {
    let offsets = manager.offsets(key)?;
    let end = match isolation {
        IsolationLevel::ReadUncommitted => offsets.high_watermark,
        IsolationLevel::ReadCommitted => manager.last_stable_offset(key)?,
    };
    match timestamp {
        -2 => Ok(Some((offset_i64(offsets.log_start), -1, -1))),
        -1 => Ok(Some((offset_i64(end), -1, leader_epoch))),
        t if t < 0 => Err(Error::InvalidArgument(format!(
            "ListOffsets timestamp {t} is neither -1, -2 nor a time"
        ))),
        t => Ok(manager
            .offset_for_timestamp(key, t)?
            .filter(|found| found.offset < end)
            .map(|found| (offset_i64(found.offset), found.timestamp, -1))),
    }
}

/// OffsetForLeaderEpoch: where each asked epoch ends in the leader's log
/// (KIP-101), so a consumer can tell whether its position was truncated.
pub(super) fn offsets_for_leader_epoch(
    ctx: &RequestContext<'_>,
    request: &OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut response = OffsetForLeaderEpochResponse::default();
    response.topics = request
        .topics
        .iter()
        .map(|topic| {
            let mut t = OffsetForLeaderTopicResult::default();
            t.topic = topic.topic.clone();
            t.partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let mut r = EpochEndOffset::default();
                    r.partition = p.partition;
                    r.leader_epoch = -1;
                    r.end_offset = -1;
                    let found = led_partition(
                        ctx,
                        topic.topic.0.as_str(),
                        p.partition,
                        p.current_leader_epoch,
                    )
                    .and_then(|(key, manager, _)| {
                        manager
                            .end_offset_for_epoch(&key, p.leader_epoch)
                            .map_err(|e| error_code(&e))
                    });
                    match found {
                        Ok((epoch, end)) => {
                            r.leader_epoch = epoch;
                            r.end_offset = end;
                        }
                        Err(code) => r.error_code = code,
                    }
                    r
                })
                .collect();
            t
        })
        .collect();
    response
}

/// DeleteRecords: each partition's log start advanced to the offset asked
/// (-1: the high watermark), as `Partition::delete_records`.
pub(super) fn delete_records(
    ctx: &RequestContext<'_>,
    request: &DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let mut response = DeleteRecordsResponse::default();
    response.topics = request
        .topics
        .iter()
        .map(|topic| {
            let mut t = DeleteRecordsTopicResult::default();
            t.name = topic.name.clone();
            t.partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let mut r = DeleteRecordsPartitionResult::default();
                    r.partition_index = p.partition_index;
                    r.low_watermark = -1;
                    match delete_one(ctx, topic.name.0.as_str(), p.partition_index, p.offset) {
                        Ok(start) => r.low_watermark = offset_i64(start),
                        Err(e) => r.error_code = error_code(&e),
                    }
                    r
                })
                .collect();
            t
        })
        .collect();
    response
}

fn delete_one(ctx: &RequestContext<'_>, topic: &str, partition: i32, offset: i64) -> Result<u64> {
    let unknown = || Error::UnknownTopicOrPartition {
        topic: topic.to_string(),
        partition: None,
    };
    let p = partition_number(partition).ok_or_else(unknown)?;
    let handle = ctx.cluster.topic(topic)?.partition(p)?;
    let offset = match offset {
        -1 => handle.high_watermark()?,
        // Below -1: out of range, as Kafka answers it.
        o => u64::try_from(o).map_err(|_| Error::OffsetOutOfRange {
            offset: 0,
            log_start: 0,
            log_end: 0,
        })?,
    };
    handle.delete_records(offset)
}

/// The id of a topic as Metadata and CreateTopics report it.
pub(super) fn topic_uuid(ctx: &RequestContext<'_>, name: &str) -> Uuid {
    ctx.cluster
        .inner
        .topic_state(name)
        .map_or(Uuid::nil(), |t| t.id)
}
