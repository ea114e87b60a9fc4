//! The consumer protocol's embedded messages (Kafka's `ConsumerProtocol`):
//! what a consumer puts in JoinGroup's protocol metadata
//! (`ConsumerProtocolSubscription`) and the leader in SyncGroup's
//! assignments (`ConsumerProtocolAssignment`), each after an `i16` version.
//!
//! The coordinator never needs them to answer a Kafka client: it hands the
//! bytes back unchanged. They are read and written only where a wire
//! member meets an in-process one in the same group: an in-process leader
//! reads the wire members' subscriptions and its assignment is written for
//! the wire members; a wire leader's assignment is read for the in-process
//! members.

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as OwnedTopic;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::Subscription;
use crate::types::TopicPartition;

/// The highest `ConsumerProtocolSubscription` version this reads; a newer
/// one is read as this (its fields are appended, as Kafka's reader does).
const SUBSCRIPTION_MAX: i16 = 3;
/// The highest `ConsumerProtocolAssignment` version this reads.
const ASSIGNMENT_MAX: i16 = 3;
/// The version written for an in-process member's subscription: v1
/// (topics, user data, owned partitions), which every current client
/// reads.
const SUBSCRIPTION_WRITTEN: i16 = 1;
/// The version written for an in-process leader's assignment.
const ASSIGNMENT_WRITTEN: i16 = 0;

/// Reads the `i16` version in front of an embedded message.
fn version(bytes: &mut Bytes, max: i16) -> Option<i16> {
    if bytes.remaining() < 2 {
        return None;
    }
    let version = bytes.get_i16();
    (version >= 0).then_some(version.min(max))
}

/// Groups partitions by topic, topics and partitions in order.
fn by_topic(partitions: &[TopicPartition]) -> Vec<(String, Vec<i32>)> {
    let mut topics: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
    for tp in partitions {
        topics
            .entry(tp.topic.as_str())
            .or_default()
            .push(i32::try_from(tp.partition).unwrap_or(i32::MAX));
    }
    topics
        .into_iter()
        .map(|(t, mut p)| {
            p.sort_unstable();
            (t.to_string(), p)
        })
        .collect()
}

fn flatten<'a>(topic: &'a str, partitions: &'a [i32]) -> impl Iterator<Item = TopicPartition> + 'a {
    partitions.iter().filter_map(move |p| {
        u32::try_from(*p)
            .ok()
            .map(|p| TopicPartition::new(topic, p))
    })
}

/// A consumer's JoinGroup metadata as a [`Subscription`]; `None` if the
/// bytes are not a `ConsumerProtocolSubscription`.
pub(super) fn decode_subscription(metadata: &Bytes) -> Option<Subscription> {
    let mut bytes = metadata.clone();
    let version = version(&mut bytes, SUBSCRIPTION_MAX)?;
    let decoded = ConsumerProtocolSubscription::decode(&mut bytes, version).ok()?;
    let mut subscription = Subscription::new(decoded.topics.iter().map(|t| t.as_str()))
        .with_owned_partitions(
            decoded
                .owned_partitions
                .iter()
                .flat_map(|t| flatten(t.topic.as_str(), &t.partitions))
                .collect::<Vec<_>>(),
        );
    if version >= 2 && decoded.generation_id >= 0 {
        subscription = subscription.with_generation(decoded.generation_id);
    }
    if let Some(user_data) = decoded.user_data {
        subscription = subscription.with_user_data(user_data);
    }
    Some(subscription)
}

/// An in-process member's [`Subscription`] as a consumer's JoinGroup
/// metadata, for a leader on the wire.
pub(super) fn encode_subscription(subscription: &Subscription) -> Bytes {
    let message = ConsumerProtocolSubscription::default()
        .with_topics(
            subscription
                .topics
                .iter()
                .map(|t| StrBytes::from_string(t.clone()))
                .collect(),
        )
        .with_user_data(subscription.user_data.clone())
        .with_owned_partitions(
            by_topic(&subscription.owned_partitions)
                .into_iter()
                .map(|(topic, partitions)| {
                    OwnedTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(topic)))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&SUBSCRIPTION_WRITTEN.to_be_bytes());
    // Every field is valid at the version written: encoding cannot fail.
    if message.encode(&mut buf, SUBSCRIPTION_WRITTEN).is_err() {
        return Bytes::new();
    }
    buf.freeze()
}

/// A leader's SyncGroup assignment bytes as partitions, for an in-process
/// member; `None` if they are not a `ConsumerProtocolAssignment`.
pub(super) fn decode_assignment(assignment: &Bytes) -> Option<Vec<TopicPartition>> {
    let mut bytes = assignment.clone();
    let version = version(&mut bytes, ASSIGNMENT_MAX)?;
    let decoded = ConsumerProtocolAssignment::decode(&mut bytes, version).ok()?;
    Some(
        decoded
            .assigned_partitions
            .iter()
            .flat_map(|t| flatten(t.topic.as_str(), &t.partitions))
            .collect(),
    )
}

/// An in-process leader's assignment for a member on the wire.
pub(super) fn encode_assignment(partitions: &[TopicPartition]) -> Bytes {
    let message = ConsumerProtocolAssignment::default().with_assigned_partitions(
        by_topic(partitions)
            .into_iter()
            .map(|(topic, partitions)| {
                AssignedTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic)))
                    .with_partitions(partitions)
            })
            .collect(),
    );
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&ASSIGNMENT_WRITTEN.to_be_bytes());
    if message.encode(&mut buf, ASSIGNMENT_WRITTEN).is_err() {
        return Bytes::new();
    }
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_in_process_subscription_reads_back_as_written() {
        let sub = Subscription::new(["b", "a"])
            .with_owned_partitions([TopicPartition::new("a", 2), TopicPartition::new("a", 0)])
            .with_user_data(Bytes::from_static(b"u"));
        let read = decode_subscription(&encode_subscription(&sub)).unwrap();
        assert_eq!(read.topics, ["b", "a"]);
        assert_eq!(
            read.owned_partitions,
            [TopicPartition::new("a", 0), TopicPartition::new("a", 2)]
        );
        assert_eq!(read.user_data.as_deref(), Some(&b"u"[..]));
        assert_eq!(read.generation, None, "v1 has no generation");
    }

    #[test]
    fn a_newer_subscription_version_is_read_for_the_fields_known() {
        // A v3 subscription (generation, rack) under a version header of 9.
        let message = ConsumerProtocolSubscription::default()
            .with_topics(vec![StrBytes::from_static_str("t")])
            .with_generation_id(4)
            .with_rack_id(Some(StrBytes::from_static_str("r1")));
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&9_i16.to_be_bytes());
        message.encode(&mut buf, 3).unwrap();
        let read = decode_subscription(&buf.freeze()).unwrap();
        assert_eq!(read.topics, ["t"]);
        assert_eq!(read.generation, Some(4));
    }

    #[test]
    fn garbage_is_not_a_subscription_or_an_assignment() {
        for bytes in [
            &b""[..],
            b"\x00",
            b"\xff\xff",
            b"\x00\x00\x00\x00\x00\x05ab",
        ] {
            let bytes = Bytes::copy_from_slice(bytes);
            assert_eq!(decode_subscription(&bytes), None, "{bytes:?}");
            assert_eq!(decode_assignment(&bytes), None, "{bytes:?}");
        }
    }

    #[test]
    fn an_assignment_reads_back_as_written() {
        let parts = [
            TopicPartition::new("t", 1),
            TopicPartition::new("s", 0),
            TopicPartition::new("t", 0),
        ];
        let read = decode_assignment(&encode_assignment(&parts)).unwrap();
        assert_eq!(
            read,
            [
                TopicPartition::new("s", 0),
                TopicPartition::new("t", 0),
                TopicPartition::new("t", 1)
            ]
        );
    }
}
