//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions,
//! DescribeConfigs, AlterConfigs, IncrementalAlterConfigs and
//! DescribeCluster. Any broker's listener answers them (the cluster's
//! controller is in-process), through the same calls as the library's own
//! administration API.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, BrokerId, CreatePartitionsRequest,
    CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, DescribeClusterRequest, DescribeClusterResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    alter_configs_response, incremental_alter_configs_response,
};
use kafka_protocol::protocol::StrBytes;

use super::data::{controller_id, str_bytes, topic_name};
use super::{RequestContext, error_code};
use crate::cluster::{AlterConfigOp, NewTopic, TopicConfig};
use crate::error::{Error, Result};

/// Kafka's config resource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// Kafka's config sources (DescribeConfigs).
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;

/// The error message a response carries for `e`.
fn message(e: &Error) -> Option<StrBytes> {
    Some(str_bytes(e.to_string()))
}

/// CreateTopics: each topic created with its partition count, replication
/// factor (-1: the cluster's defaults) and configs; manual replica
/// assignments are refused. `validate_only` checks without creating.
pub(super) fn create_topics(
    ctx: &RequestContext<'_>,
    request: &CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut response = CreateTopicsResponse::default();
    response.topics = request
        .topics
        .iter()
        .map(|topic| {
            let name = topic.name.0.as_str();
            let mut r = CreatableTopicResult::default();
            r.name = topic.name.clone();
            r.num_partitions = -1;
            r.replication_factor = -1;
            match create_one(ctx, topic, request.validate_only) {
                Ok(()) if request.validate_only => {
                    r.num_partitions = topic.num_partitions;
                    r.replication_factor = topic.replication_factor;
                }
                Ok(()) => describe_created(ctx, name, &mut r),
                Err(e) => {
                    r.error_code = error_code(&e);
                    r.error_message = message(&e);
                }
            }
            r
        })
        .collect();
    response
}

fn create_one(
    ctx: &RequestContext<'_>,
    topic: &kafka_protocol::messages::create_topics_request::CreatableTopic,
    validate_only: bool,
) -> Result<()> {
    let name = topic.name.0.as_str();
    if !topic.assignments.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "topic {name}: manual replica assignments are not supported; give a partition count \
             and a replication factor"
        )));
    }
    let mut config = TopicConfig::new();
    for c in &topic.configs {
        if let Some(value) = &c.value {
            config = config.set(c.name.as_str(), value.as_str())?;
        }
    }
    let mut new = match topic.num_partitions {
        -1 => NewTopic::with_default_partitions(name),
        n => NewTopic::new(
            name,
            u32::try_from(n).map_err(|_| Error::InvalidPartitions {
                topic: name.to_string(),
                reason: format!("{n} partitions"),
            })?,
        ),
    }
    .config(config);
    if topic.replication_factor != -1 {
        let factor = u16::try_from(topic.replication_factor).map_err(|_| {
            Error::InvalidReplicationFactor {
                topic: name.to_string(),
                reason: format!("replication factor {}", topic.replication_factor),
            }
        })?;
        new = new.replication_factor(factor);
    }
    if validate_only {
        crate::cluster::validate_topic_name(name, false)?;
        if ctx.cluster.topic(name).is_ok() {
            return Err(Error::TopicAlreadyExists {
                topic: name.to_string(),
            });
        }
        return Ok(());
    }
    ctx.cluster.create_topic(new).map(|_| ())
}

/// Fills a created topic's id, partition count, replication factor and
/// configs into its result (CreateTopics v5+).
fn describe_created(ctx: &RequestContext<'_>, name: &str, r: &mut CreatableTopicResult) {
    let Ok(topic) = ctx.cluster.topic(name) else {
        return;
    };
    r.topic_id = super::data::topic_uuid(ctx, name);
    r.num_partitions = i32::try_from(topic.partition_count()).unwrap_or(i32::MAX);
    if let Ok(description) = topic.describe() {
        r.replication_factor = description
            .partitions
            .first()
            .map_or(-1, |p| i16::try_from(p.replicas.len()).unwrap_or(-1));
    }
    let overrides = topic.overrides();
    r.configs = Some(
        config_entries(&topic.config(), &overrides)
            .into_iter()
            .map(|(name, value, source)| {
                let mut c = CreatableTopicConfigs::default();
                c.name = str_bytes(name);
                c.value = Some(str_bytes(value));
                c.config_source = source;
                c
            })
            .collect(),
    );
}

/// Every supported topic config with its effective value and source.
fn config_entries(effective: &TopicConfig, overrides: &TopicConfig) -> Vec<(String, String, i8)> {
    TopicConfig::supported()
        .map(|(name, default)| {
            let value = effective.get(name).unwrap_or(default).to_string();
            let source = if overrides.get(name).is_some() {
                SOURCE_DYNAMIC_TOPIC
            } else {
                SOURCE_DEFAULT
            };
            (name.to_string(), value, source)
        })
        .collect()
}

/// DeleteTopics: by name (every version) or by id (v6).
pub(super) fn delete_topics(
    ctx: &RequestContext<'_>,
    request: &DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let by_name = request.topic_names.iter().map(|n| (Some(n.clone()), None));
    let by_state = request
        .topics
        .iter()
        .map(|t| (t.name.clone(), Some(t.topic_id)));
    let mut response = DeleteTopicsResponse::default();
    response.responses = by_name
        .chain(by_state)
        .map(|(name, id)| {
            let mut r = DeletableTopicResult::default();
            let name = match (name, id) {
                (Some(name), _) => Some(name.0.as_str().to_string()),
                (None, Some(id)) => ctx
                    .cluster
                    .inner
                    .topic_states()
                    .into_iter()
                    .find(|t| t.id == id)
                    .map(|t| t.name.to_string()),
                (None, None) => None,
            };
            match name {
                Some(name) => {
                    r.topic_id = super::data::topic_uuid(ctx, &name);
                    r.name = Some(topic_name(&name));
                    if let Err(e) = ctx.cluster.delete_topic(&name) {
                        r.error_code = error_code(&e);
                        r.error_message = message(&e);
                    }
                }
                None => {
                    r.topic_id = id.unwrap_or_default();
                    r.error_code = ResponseError::UnknownTopicId.code();
                }
            }
            r
        })
        .collect();
    response
}

/// CreatePartitions: each topic's partition count raised to `count`;
/// manual assignments are refused.
pub(super) fn create_partitions(
    ctx: &RequestContext<'_>,
    request: &CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut response = CreatePartitionsResponse::default();
    response.results = request
        .topics
        .iter()
        .map(|topic| {
            let name = topic.name.0.as_str();
            let mut r = CreatePartitionsTopicResult::default();
            r.name = topic.name.clone();
            let done = (|| -> Result<()> {
                if topic.assignments.is_some() {
                    return Err(Error::InvalidArgument(format!(
                        "topic {name}: manual replica assignments are not supported"
                    )));
                }
                let count = u32::try_from(topic.count).map_err(|_| Error::InvalidPartitions {
                    topic: name.to_string(),
                    reason: format!("{} partitions", topic.count),
                })?;
                if request.validate_only {
                    let current = ctx.cluster.topic(name)?.partition_count();
                    if count <= current {
                        return Err(Error::InvalidPartitions {
                            topic: name.to_string(),
                            reason: format!(
                                "the topic has {current} partitions; {count} is not more"
                            ),
                        });
                    }
                    return Ok(());
                }
                ctx.cluster.create_partitions(name, count)
            })();
            if let Err(e) = done {
                r.error_code = error_code(&e);
                r.error_message = message(&e);
            }
            r
        })
        .collect();
    response
}

/// DescribeConfigs: a topic's configs (every supported one, with its
/// effective value and whether the topic sets it); a broker's is answered
/// empty (its settings are the cluster's, not Kafka configs).
pub(super) fn describe_configs(
    ctx: &RequestContext<'_>,
    request: &DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let mut response = DescribeConfigsResponse::default();
    response.results = request
        .resources
        .iter()
        .map(|resource| {
            let mut r = DescribeConfigsResult::default();
            r.resource_type = resource.resource_type;
            r.resource_name = resource.resource_name.clone();
            match resource.resource_type {
                RESOURCE_TOPIC => match ctx.cluster.topic(resource.resource_name.as_str()) {
                    Ok(topic) => {
                        // Null or empty: every config.
                        let wanted = resource
                            .configuration_keys
                            .as_ref()
                            .filter(|k| !k.is_empty());
                        r.configs = config_entries(&topic.config(), &topic.overrides())
                            .into_iter()
                            .filter(|(name, _, _)| {
                                wanted.is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
                            })
                            .map(|(name, value, source)| {
                                let mut c = DescribeConfigsResourceResult::default();
                                c.name = str_bytes(name);
                                c.value = Some(str_bytes(value));
                                c.config_source = source;
                                c
                            })
                            .collect();
                    }
                    Err(e) => {
                        r.error_code = error_code(&e);
                        r.error_message = message(&e);
                    }
                },
                RESOURCE_BROKER => {}
                other => {
                    r.error_code = ResponseError::InvalidRequest.code();
                    r.error_message = Some(str_bytes(format!(
                        "config resource type {other} is not served"
                    )));
                }
            }
            r
        })
        .collect();
    response
}

/// The changes that make a topic's own configs exactly `set` (Kafka's
/// non-incremental AlterConfigs replaces them all).
fn replace_all(
    ctx: &RequestContext<'_>,
    topic: &str,
    set: &[(String, String)],
) -> Result<Vec<AlterConfigOp>> {
    let current = ctx.cluster.topic(topic)?.overrides();
    let mut ops: Vec<AlterConfigOp> = current
        .entries()
        .filter(|(name, _)| !set.iter().any(|(n, _)| n == name))
        .map(|(name, _)| AlterConfigOp::delete(name))
        .collect();
    ops.extend(
        set.iter()
            .map(|(n, v)| AlterConfigOp::set(n.clone(), v.clone())),
    );
    Ok(ops)
}

/// Applies `ops` to `topic` (or, with `validate_only`, checks them).
fn apply(
    ctx: &RequestContext<'_>,
    resource_type: i8,
    topic: &str,
    ops: Result<Vec<AlterConfigOp>>,
    validate_only: bool,
) -> Result<()> {
    if resource_type != RESOURCE_TOPIC {
        return Err(Error::InvalidArgument(format!(
            "config resource type {resource_type}: only topic configs (type 2) can be altered"
        )));
    }
    let ops = ops?;
    if validate_only {
        let topic = ctx.cluster.topic(topic)?;
        topic.overrides().altered(&ops)?;
        return Ok(());
    }
    ctx.cluster.alter_topic_config(topic, &ops)
}

/// AlterConfigs: a topic's own configs replaced by those given.
pub(super) fn alter_configs(
    ctx: &RequestContext<'_>,
    request: &AlterConfigsRequest,
) -> AlterConfigsResponse {
    let mut response = AlterConfigsResponse::default();
    response.responses = request
        .resources
        .iter()
        .map(|resource| {
            let name = resource.resource_name.as_str();
            let set: Vec<(String, String)> = resource
                .configs
                .iter()
                .filter_map(|c| {
                    Some((
                        c.name.as_str().to_string(),
                        c.value.as_ref()?.as_str().to_string(),
                    ))
                })
                .collect();
            let ops = if resource.resource_type == RESOURCE_TOPIC {
                replace_all(ctx, name, &set)
            } else {
                Ok(Vec::new())
            };
            let mut r = alter_configs_response::AlterConfigsResourceResponse::default();
            r.resource_type = resource.resource_type;
            r.resource_name = resource.resource_name.clone();
            if let Err(e) = apply(
                ctx,
                resource.resource_type,
                name,
                ops,
                request.validate_only,
            ) {
                r.error_code = error_code(&e);
                r.error_message = message(&e);
            }
            r
        })
        .collect();
    response
}

/// IncrementalAlterConfigs: SET (0) and DELETE (1) of a topic's own
/// configs, as `Cluster::alter_topic_config`; APPEND and SUBTRACT (list
/// configs) are refused.
pub(super) fn incremental_alter_configs(
    ctx: &RequestContext<'_>,
    request: &IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut response = IncrementalAlterConfigsResponse::default();
    response.responses = request
        .resources
        .iter()
        .map(|resource| {
            let name = resource.resource_name.as_str();
            let ops: Result<Vec<AlterConfigOp>> = resource
                .configs
                .iter()
                .map(|c| match (c.config_operation, &c.value) {
                    (0, Some(value)) => Ok(AlterConfigOp::set(c.name.as_str(), value.as_str())),
                    (1, _) => Ok(AlterConfigOp::delete(c.name.as_str())),
                    (op, _) => Err(Error::InvalidArgument(format!(
                        "config {}: operation {op} is not served (SET 0 with a value, DELETE 1 are)",
                        c.name.as_str()
                    ))),
                })
                .collect();
            let mut r = incremental_alter_configs_response::AlterConfigsResourceResponse::default();
            r.resource_type = resource.resource_type;
            r.resource_name = resource.resource_name.clone();
            if let Err(e) = apply(ctx, resource.resource_type, name, ops, request.validate_only) {
                r.error_code = error_code(&e);
                r.error_message = message(&e);
            }
            r
        })
        .collect();
    response
}

/// DescribeCluster: the cluster id, the controller and every broker with
/// its advertised address and whether it is fenced.
pub(super) fn describe_cluster(
    ctx: &RequestContext<'_>,
    request: &DescribeClusterRequest,
) -> DescribeClusterResponse {
    let _ = request;
    let inner = &ctx.cluster.inner;
    let mut response = DescribeClusterResponse::default();
    response.cluster_id = str_bytes(ctx.cluster.cluster_id());
    response.controller_id = BrokerId(controller_id(ctx));
    response.brokers = ctx
        .advertised
        .iter()
        .map(|(id, (host, port))| {
            let mut b = DescribeClusterBroker::default();
            b.broker_id = BrokerId(i32::try_from(*id).unwrap_or(-1));
            b.host = str_bytes(host.clone());
            b.port = i32::from(*port);
            b.is_fenced = inner.is_broker_fenced(*id);
            b
        })
        .collect();
    response
}
