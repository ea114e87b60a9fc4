//! The transaction coordinator's APIs driven with `kafka-protocol` request
//! structs over a real cluster: a transactional producer's whole flow,
//! with its records appended through the library's partition append, then
//! what a read_committed reader and the group see.

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;

use super::VERSIONS;
use crate::format::BatchBuilder;
use crate::replica::FetchBound;
use crate::server::groups::tests::{Fixture, G, lone_member, sb};
use crate::types::Compression;
use crate::{Clock, TopicPartition};

const NONE: i16 = 0;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_REQUEST: i16 = 42;
const ILLEGAL_GENERATION: i16 = 22;
const UNKNOWN_MEMBER_ID: i16 = 25;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const INVALID_TXN_STATE: i16 = 48;
const OPERATION_NOT_ATTEMPTED: i16 = 55;
const UNSTABLE_OFFSET_COMMIT: i16 = 88;
const PRODUCER_FENCED: i16 = 90;

const TX: &str = "app";
const GROUP: &str = "copier";

fn init(f: &Fixture, version: i16, id: Option<&str>) -> (i16, i64, i16) {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(id.map(|id| TransactionalId(sb(id))))
        .with_transaction_timeout_ms(60_000);
    let ResponseKind::InitProducerId(r) = f.call(version, RequestKind::InitProducerId(request))
    else {
        panic!()
    };
    (r.error_code, r.producer_id.0, r.producer_epoch)
}

fn add_partitions(f: &Fixture, pid: i64, epoch: i16, topics: &[(&str, &[i32])]) -> Vec<i16> {
    let request = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(sb(TX)))
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(
            topics
                .iter()
                .map(|(name, partitions)| {
                    AddPartitionsToTxnTopic::default()
                        .with_name(TopicName(sb(name)))
                        .with_partitions(partitions.to_vec())
                })
                .collect(),
        );
    let ResponseKind::AddPartitionsToTxn(r) = f.call(3, RequestKind::AddPartitionsToTxn(request))
    else {
        panic!()
    };
    r.results_by_topic_v3_and_below
        .iter()
        .flat_map(|t| {
            t.results_by_partition
                .iter()
                .map(|p| p.partition_error_code)
        })
        .collect()
}

fn add_offsets(f: &Fixture, pid: i64, epoch: i16) -> i16 {
    add_group_offsets(f, pid, epoch, GROUP)
}

fn add_group_offsets(f: &Fixture, pid: i64, epoch: i16, group: &str) -> i16 {
    let request = AddOffsetsToTxnRequest::default()
        .with_transactional_id(TransactionalId(sb(TX)))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_group_id(GroupId(sb(group)));
    let ResponseKind::AddOffsetsToTxn(r) = f.call(3, RequestKind::AddOffsetsToTxn(request)) else {
        panic!()
    };
    r.error_code
}

fn commit_offset(f: &Fixture, pid: i64, epoch: i16, offset: i64) -> i16 {
    let request = TxnOffsetCommitRequest::default()
        .with_group_id(GroupId(sb(GROUP)))
        .with_generation_id(-1);
    commit_offset_as(f, pid, epoch, offset, request)
}

/// A TxnOffsetCommit v3 of `t`-0 at `offset`, with `request`'s group and
/// member fields.
fn commit_offset_as(
    f: &Fixture,
    pid: i64,
    epoch: i16,
    offset: i64,
    request: TxnOffsetCommitRequest,
) -> i16 {
    let request = request
        .with_transactional_id(TransactionalId(sb(TX)))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_topics(vec![
            TxnOffsetCommitRequestTopic::default()
                .with_name(TopicName(sb("t")))
                .with_partitions(vec![
                    TxnOffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(offset)
                        .with_committed_metadata(Some(sb("txn"))),
                ]),
        ]);
    let ResponseKind::TxnOffsetCommit(r) = f.call(3, RequestKind::TxnOffsetCommit(request)) else {
        panic!()
    };
    r.topics[0].partitions[0].error_code
}

fn end(f: &Fixture, version: i16, pid: i64, epoch: i16, commit: bool) -> i16 {
    let request = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(sb(TX)))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    let ResponseKind::EndTxn(r) = f.call(version, RequestKind::EndTxn(request)) else {
        panic!()
    };
    r.error_code
}

/// Appends `count` transactional records of the producer to `t`-1, as a
/// produce request's batch would be.
fn produce(f: &Fixture, pid: i64, epoch: i16, seq: i32, count: i32) {
    let mut builder = BatchBuilder::new(Compression::None)
        .producer(pid, epoch, seq)
        .transactional(true);
    for i in 0..count {
        builder.append(
            f.clock.now_ms(),
            None,
            Some(format!("r{i}").as_bytes()),
            &[],
        );
    }
    let mut batch = builder.build().unwrap().to_vec();
    f.cluster
        .topic("t")
        .unwrap()
        .partition(1)
        .unwrap()
        .append(&mut batch)
        .unwrap();
}

/// `t`-1's last stable offset and the producers of the aborted
/// transactions a read_committed fetch from 0 lists.
fn read_committed(f: &Fixture) -> (u64, Vec<i64>) {
    let inner = &f.cluster.inner;
    // As the listener's read_committed Fetch does.
    inner.complete_answered_txns();
    let key = inner.partition_key(&TopicPartition::new("t", 1)).unwrap();
    let replicas = inner.replicas_for(&key).unwrap();
    let lso = replicas.last_stable_offset(&key).unwrap();
    let fetched = replicas
        .fetch(&key, 0, 1 << 20, FetchBound::TxnCommitted)
        .unwrap();
    let aborted = fetched
        .aborted_transactions()
        .unwrap_or_default()
        .iter()
        .map(|a| a.producer_id)
        .collect();
    (lso, aborted)
}

#[test]
fn a_committed_transaction_is_read_committed_and_commits_the_groups_offset() {
    let f = Fixture::new(0);
    let (code, pid, epoch) = init(&f, 4, Some(TX));
    assert_eq!(code, NONE);
    assert_eq!(add_partitions(&f, pid, epoch, &[("t", &[1])]), [NONE]);
    produce(&f, pid, epoch, 0, 3);
    assert_eq!(
        read_committed(&f).0,
        0,
        "the open transaction holds the LSO"
    );
    assert_eq!(add_offsets(&f, pid, epoch), NONE);
    assert_eq!(commit_offset(&f, pid, epoch, 3), NONE);
    // Pending in the transaction: not committed, and unstable.
    assert_eq!(f.fetch_offsets(GROUP, &[0], false)[0].0, -1);
    assert_eq!(
        f.fetch_offsets(GROUP, &[0], true)[0].3,
        UNSTABLE_OFFSET_COMMIT
    );

    assert_eq!(end(&f, 3, pid, epoch, true), NONE);
    // Three records and the COMMIT marker, none aborted.
    assert_eq!(read_committed(&f), (4, vec![]));
    let fetched = f.fetch_offsets(GROUP, &[0], true);
    assert_eq!(
        (fetched[0].0, fetched[0].2.as_str(), fetched[0].3),
        (3, "txn", NONE)
    );
}

#[test]
fn an_aborted_transaction_is_hidden_and_its_offsets_dropped() {
    let f = Fixture::new(0);
    let (_, pid, epoch) = init(&f, 4, Some(TX));
    assert_eq!(add_partitions(&f, pid, epoch, &[("t", &[1])]), [NONE]);
    produce(&f, pid, epoch, 0, 2);
    assert_eq!(add_offsets(&f, pid, epoch), NONE);
    assert_eq!(commit_offset(&f, pid, epoch, 2), NONE);
    assert_eq!(end(&f, 3, pid, epoch, false), NONE);
    assert_eq!(read_committed(&f), (3, vec![pid]));
    let fetched = f.fetch_offsets(GROUP, &[0], true);
    assert_eq!((fetched[0].0, fetched[0].3), (-1, NONE));
    // Ended: a second end of the other kind is refused.
    assert_eq!(end(&f, 3, pid, epoch, true), INVALID_TXN_STATE);
}

#[test]
fn a_second_init_fences_the_first_producer() {
    let f = Fixture::new(0);
    let (_, pid, first) = init(&f, 4, Some(TX));
    assert_eq!(add_partitions(&f, pid, first, &[("t", &[1])]), [NONE]);
    produce(&f, pid, first, 0, 1);
    let (code, again, second) = init(&f, 4, Some(TX));
    assert_eq!((code, again), (NONE, pid));
    assert!(second > first);
    // The fenced producer's open transaction was aborted.
    assert_eq!(read_committed(&f), (2, vec![pid]));
    assert_eq!(end(&f, 3, pid, first, true), PRODUCER_FENCED);
    // Clients before KIP-588 know the fence as INVALID_PRODUCER_EPOCH.
    assert_eq!(end(&f, 1, pid, first, true), INVALID_PRODUCER_EPOCH);
    assert_eq!(add_offsets(&f, pid, first), PRODUCER_FENCED);
    assert_eq!(
        end(&f, 3, pid, second, true),
        INVALID_TXN_STATE,
        "nothing open"
    );
}

#[test]
fn a_member_commits_in_a_transaction_only_at_its_generation() {
    let f = Fixture::new(0);
    let (member, generation) = lone_member(&f, None);
    let (_, pid, epoch) = init(&f, 4, Some(TX));
    assert_eq!(add_group_offsets(&f, pid, epoch, G), NONE);
    let as_member = |member: &str, generation: i32| {
        TxnOffsetCommitRequest::default()
            .with_group_id(GroupId(sb(G)))
            .with_member_id(sb(member))
            .with_generation_id(generation)
    };
    assert_eq!(
        commit_offset_as(&f, pid, epoch, 4, as_member(&member, generation + 1)),
        ILLEGAL_GENERATION
    );
    assert_eq!(
        commit_offset_as(&f, pid, epoch, 4, as_member("ghost", generation)),
        UNKNOWN_MEMBER_ID
    );
    assert_eq!(
        commit_offset_as(&f, pid, epoch, 4, as_member(&member, generation)),
        NONE
    );
    assert_eq!(end(&f, 3, pid, epoch, true), NONE);
    assert_eq!(f.fetch_offsets(G, &[0], true)[0].0, 4);
}

#[test]
fn an_idempotent_producer_gets_a_fresh_id_at_epoch_zero() {
    let f = Fixture::new(0);
    let (code, a, epoch) = init(&f, 0, None);
    assert_eq!((code, epoch), (NONE, 0));
    let (_, b, _) = init(&f, 4, None);
    assert!(a >= 0 && b >= 0 && a != b);
    let (code, pid, epoch) = init(&f, 4, Some(""));
    assert_eq!((code, pid, epoch), (INVALID_REQUEST, -1, -1));
}

#[test]
fn partitions_are_added_all_or_none() {
    let f = Fixture::new(0);
    let (_, pid, epoch) = init(&f, 4, Some(TX));
    let codes = add_partitions(&f, pid, epoch, &[("t", &[0, 5]), ("nope", &[0])]);
    assert_eq!(
        codes,
        [
            OPERATION_NOT_ATTEMPTED,
            UNKNOWN_TOPIC_OR_PARTITION,
            UNKNOWN_TOPIC_OR_PARTITION
        ]
    );
    let meta = f.cluster.inner.txn_metadata(TX).unwrap();
    assert!(meta.partitions.is_empty(), "nothing was added");
    assert_eq!(
        add_partitions(&f, pid, epoch, &[("t", &[0, 1])]),
        [NONE, NONE]
    );
}

#[test]
fn every_txn_api_answers_an_empty_request_at_every_version_with_an_encodable_response() {
    let f = Fixture::new(0);
    for &(api, low, high) in VERSIONS {
        for version in low..=high {
            let request = match api {
                ApiKey::InitProducerId => RequestKind::InitProducerId(Default::default()),
                ApiKey::AddPartitionsToTxn => RequestKind::AddPartitionsToTxn(Default::default()),
                ApiKey::AddOffsetsToTxn => RequestKind::AddOffsetsToTxn(Default::default()),
                ApiKey::EndTxn => RequestKind::EndTxn(Default::default()),
                ApiKey::TxnOffsetCommit => RequestKind::TxnOffsetCommit(Default::default()),
                other => panic!("{other:?} is not a transaction API"),
            };
            f.call(version, request);
        }
    }
}
