//! The group coordinator's APIs driven with `kafka-protocol` request
//! structs over a real cluster in a temporary directory, on a
//! [`ManualClock`]. Members that park run on their own threads (each as a
//! connection's thread); the test waits for them through the coordinator's
//! condition variable, never by sleeping. Every response is encoded at its
//! request's version, as the listener will.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::delete_groups_request::DeleteGroupsRequest;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use tempfile::TempDir;

use super::{VERSIONS, handle};
use crate::server::RequestContext;
use crate::{Clock, Cluster, ClusterConfig, ManualClock, NewTopic};

pub(in crate::server) const G: &str = "g";
const SESSION: i32 = 10_000;
const REBALANCE: i32 = 30_000;

// Kafka's error codes the tests expect.
const NONE: i16 = 0;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const BROKER_NOT_AVAILABLE: i16 = 8;
const OFFSET_METADATA_TOO_LARGE: i16 = 12;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const ILLEGAL_GENERATION: i16 = 22;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const INVALID_GROUP_ID: i16 = 24;
const UNKNOWN_MEMBER_ID: i16 = 25;
const INVALID_SESSION_TIMEOUT: i16 = 26;
const REBALANCE_IN_PROGRESS: i16 = 27;
const INVALID_REQUEST: i16 = 42;
const NON_EMPTY_GROUP: i16 = 68;
const GROUP_ID_NOT_FOUND: i16 = 69;
const MEMBER_ID_REQUIRED: i16 = 79;
const FENCED_INSTANCE_ID: i16 = 82;

pub(in crate::server) fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// A cluster on a manual clock, and where its brokers' listeners are.
pub(in crate::server) struct Fixture {
    pub(in crate::server) cluster: Cluster,
    pub(in crate::server) clock: ManualClock,
    pub(in crate::server) advertised: BTreeMap<u32, (String, u16)>,
    _dir: TempDir,
}

impl Fixture {
    /// One broker, `group.initial.rebalance.delay.ms` = `delay_ms`, and a
    /// topic `t` of two partitions.
    pub(in crate::server) fn new(delay_ms: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000_000);
        let config = ClusterConfig::builder()
            .clock(Arc::new(clock.clone()))
            .group_initial_rebalance_delay(Duration::from_millis(delay_ms))
            .build()
            .unwrap();
        let cluster = Cluster::open(dir.path(), config).unwrap();
        cluster.create_topic(NewTopic::new("t", 2)).unwrap();
        let advertised = BTreeMap::from([(0, ("broker-0.test".to_string(), 9092))]);
        Fixture {
            cluster,
            clock,
            advertised,
            _dir: dir,
        }
    }

    fn ctx(&self, version: i16) -> RequestContext<'_> {
        RequestContext {
            cluster: &self.cluster,
            broker: 0,
            api_version: version,
            client_id: Some("test-client"),
            peer: "192.0.2.7:50123".parse().unwrap(),
            principal: None,
            advertised: &self.advertised,
        }
    }

    /// Answers `request` at `version` and checks the answer encodes at it.
    pub(in crate::server) fn call(&self, version: i16, request: RequestKind) -> ResponseKind {
        let response =
            crate::server::dispatch_coordinator(&self.ctx(version), api_of(&request), request)
                .expect("a coordinator API");
        let mut buf = BytesMut::new();
        response
            .encode(&mut buf, version)
            .unwrap_or_else(|e| panic!("{response:?} does not encode at v{version}: {e}"));
        response
    }

    fn join(&self, version: i16, request: JoinGroupRequest) -> JoinGroupResponse {
        match self.call(version, RequestKind::JoinGroup(request)) {
            ResponseKind::JoinGroup(r) => r,
            other => panic!("{other:?}"),
        }
    }

    /// A join with no member id, as a client sends it: at v4+, the member
    /// id the coordinator hands out first (MEMBER_ID_REQUIRED), then the
    /// join with it.
    fn join_new(&self, version: i16, request: JoinGroupRequest) -> JoinGroupResponse {
        let first = self.join(version, request.clone());
        if first.error_code != MEMBER_ID_REQUIRED {
            return first;
        }
        assert!(version >= 4);
        self.join(version, request.with_member_id(first.member_id))
    }

    fn sync(&self, version: i16, request: SyncGroupRequest) -> SyncGroupResponse {
        match self.call(version, RequestKind::SyncGroup(request)) {
            ResponseKind::SyncGroup(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn heartbeat(&self, member: &str, generation: i32, instance: Option<&str>) -> i16 {
        let request = HeartbeatRequest::default()
            .with_group_id(GroupId(sb(G)))
            .with_member_id(sb(member))
            .with_generation_id(generation)
            .with_group_instance_id(instance.map(sb));
        match self.call(4, RequestKind::Heartbeat(request)) {
            ResponseKind::Heartbeat(r) => r.error_code,
            other => panic!("{other:?}"),
        }
    }

    fn commit(&self, member: &str, generation: i32, offsets: &[(i32, i64, &str)]) -> Vec<i16> {
        let partitions = offsets
            .iter()
            .map(|(p, offset, metadata)| {
                OffsetCommitRequestPartition::default()
                    .with_partition_index(*p)
                    .with_committed_offset(*offset)
                    .with_committed_leader_epoch(3)
                    .with_committed_metadata(Some(sb(metadata)))
            })
            .collect();
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(sb(G)))
            .with_member_id(sb(member))
            .with_generation_id_or_member_epoch(generation)
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(sb("t")))
                    .with_partitions(partitions),
            ]);
        match self.call(8, RequestKind::OffsetCommit(request)) {
            ResponseKind::OffsetCommit(r) => r.topics[0]
                .partitions
                .iter()
                .map(|p| p.error_code)
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    /// OffsetFetch v7 of `t`'s partitions: (offset, epoch, metadata, error).
    pub(in crate::server) fn fetch_offsets(
        &self,
        group: &str,
        partitions: &[i32],
        require_stable: bool,
    ) -> Vec<(i64, i32, String, i16)> {
        let request = OffsetFetchRequest::default()
            .with_group_id(GroupId(sb(group)))
            .with_topics(Some(vec![
                OffsetFetchRequestTopic::default()
                    .with_name(TopicName(sb("t")))
                    .with_partition_indexes(partitions.to_vec()),
            ]))
            .with_require_stable(require_stable);
        match self.call(7, RequestKind::OffsetFetch(request)) {
            ResponseKind::OffsetFetch(r) => {
                assert_eq!(r.error_code, NONE);
                r.topics[0]
                    .partitions
                    .iter()
                    .map(|p| {
                        (
                            p.committed_offset,
                            p.committed_leader_epoch,
                            p.metadata.as_ref().map_or("", |m| m.as_str()).to_string(),
                            p.error_code,
                        )
                    })
                    .collect()
            }
            other => panic!("{other:?}"),
        }
    }

    /// Waits until group `G` has `count` members (joined on other threads).
    fn wait_members(&self, count: usize) {
        self.cluster.inner.groups.wait_for(
            G,
            || self.clock.now_ms(),
            |g| g.is_some_and(|g| g.members.len() == count),
        );
    }

    fn state(&self) -> crate::GroupState {
        let now = self.clock.now_ms();
        self.cluster
            .inner
            .groups
            .describe(G, now)
            .map_or(crate::GroupState::Dead, |g| g.state)
    }
}

fn api_of(request: &RequestKind) -> ApiKey {
    match request {
        RequestKind::FindCoordinator(_) => ApiKey::FindCoordinator,
        RequestKind::JoinGroup(_) => ApiKey::JoinGroup,
        RequestKind::SyncGroup(_) => ApiKey::SyncGroup,
        RequestKind::Heartbeat(_) => ApiKey::Heartbeat,
        RequestKind::LeaveGroup(_) => ApiKey::LeaveGroup,
        RequestKind::OffsetCommit(_) => ApiKey::OffsetCommit,
        RequestKind::OffsetFetch(_) => ApiKey::OffsetFetch,
        RequestKind::ListGroups(_) => ApiKey::ListGroups,
        RequestKind::DescribeGroups(_) => ApiKey::DescribeGroups,
        RequestKind::DeleteGroups(_) => ApiKey::DeleteGroups,
        RequestKind::InitProducerId(_) => ApiKey::InitProducerId,
        RequestKind::AddPartitionsToTxn(_) => ApiKey::AddPartitionsToTxn,
        RequestKind::AddOffsetsToTxn(_) => ApiKey::AddOffsetsToTxn,
        RequestKind::EndTxn(_) => ApiKey::EndTxn,
        RequestKind::TxnOffsetCommit(_) => ApiKey::TxnOffsetCommit,
        other => panic!("not a coordinator request: {other:?}"),
    }
}

/// A JoinGroup of protocol type `custom` (not the consumer protocol: the
/// bytes mean nothing to the coordinator) with one protocol `p`.
fn join_request(
    member_id: &str,
    instance: Option<&str>,
    metadata: &'static [u8],
) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(sb(G)))
        .with_session_timeout_ms(SESSION)
        .with_rebalance_timeout_ms(REBALANCE)
        .with_member_id(sb(member_id))
        .with_group_instance_id(instance.map(sb))
        .with_protocol_type(sb("custom"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(sb("p"))
                .with_metadata(Bytes::from_static(metadata)),
        ])
}

fn sync_request(
    member: &str,
    generation: i32,
    assignments: &[(&str, &'static [u8])],
) -> SyncGroupRequest {
    SyncGroupRequest::default()
        .with_group_id(GroupId(sb(G)))
        .with_member_id(sb(member))
        .with_generation_id(generation)
        .with_protocol_type(Some(sb("custom")))
        .with_protocol_name(Some(sb("p")))
        .with_assignments(
            assignments
                .iter()
                .map(|(id, bytes)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(sb(id))
                        .with_assignment(Bytes::from_static(bytes))
                })
                .collect(),
        )
}

/// One member, alone in a stable group (no initial delay): its id and
/// generation.
pub(in crate::server) fn lone_member(f: &Fixture, instance: Option<&str>) -> (String, i32) {
    let joined = f.join_new(7, join_request("", instance, b"meta-a"));
    assert_eq!(joined.error_code, NONE);
    let id = joined.member_id.as_str().to_string();
    assert_eq!(joined.leader.as_str(), id);
    let synced = f.sync(
        5,
        sync_request(&id, joined.generation_id, &[(&id, b"assign-a")]),
    );
    assert_eq!(synced.error_code, NONE);
    assert_eq!(&synced.assignment[..], b"assign-a");
    (id, joined.generation_id)
}

#[test]
fn find_coordinator_names_the_leader_of_the_keys_partition_at_every_version() {
    let f = Fixture::new(0);
    let expected = f.cluster.inner.group_coordinator(G).unwrap().unwrap();
    assert_eq!(expected, 0, "one broker leads every partition");
    for version in 0..=3 {
        let request = FindCoordinatorRequest::default().with_key(sb(G));
        let ResponseKind::FindCoordinator(r) =
            f.call(version, RequestKind::FindCoordinator(request))
        else {
            panic!()
        };
        assert_eq!(r.error_code, NONE, "v{version}");
        assert_eq!(
            (r.node_id.0, r.host.as_str(), r.port),
            (0, "broker-0.test", 9092),
            "v{version}"
        );
    }
    // A transactional id (v1+: key types).
    let request = FindCoordinatorRequest::default()
        .with_key(sb("tx"))
        .with_key_type(1);
    let ResponseKind::FindCoordinator(r) = f.call(3, RequestKind::FindCoordinator(request)) else {
        panic!()
    };
    assert_eq!((r.error_code, r.node_id.0), (NONE, 0));
    // v4: a batch, each key answered on its own.
    let request = FindCoordinatorRequest::default()
        .with_key_type(0)
        .with_coordinator_keys(vec![sb(G), sb("")]);
    let ResponseKind::FindCoordinator(r) = f.call(4, RequestKind::FindCoordinator(request)) else {
        panic!()
    };
    let answers: Vec<(&str, i16, i32)> = r
        .coordinators
        .iter()
        .map(|c| (c.key.as_str(), c.error_code, c.node_id.0))
        .collect();
    assert_eq!(answers, [(G, NONE, 0), ("", INVALID_GROUP_ID, -1)]);
    let request = FindCoordinatorRequest::default()
        .with_key_type(7)
        .with_coordinator_keys(vec![sb("x")]);
    let ResponseKind::FindCoordinator(r) = f.call(4, RequestKind::FindCoordinator(request)) else {
        panic!()
    };
    assert_eq!(r.coordinators[0].error_code, INVALID_REQUEST);
}

#[test]
fn a_coordinator_without_a_listener_is_not_available() {
    let mut f = Fixture::new(0);
    f.advertised.clear();
    let request = FindCoordinatorRequest::default()
        .with_key_type(0)
        .with_coordinator_keys(vec![sb(G)]);
    let ResponseKind::FindCoordinator(r) = f.call(4, RequestKind::FindCoordinator(request)) else {
        panic!()
    };
    let c = &r.coordinators[0];
    assert_eq!(
        (c.error_code, c.node_id.0, c.port),
        (COORDINATOR_NOT_AVAILABLE, -1, -1)
    );
}

#[test]
fn two_members_joining_concurrently_park_until_the_join_phase_ends_and_sync_verbatim() {
    let f = Fixture::new(3_000);
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| f.join_new(7, join_request("", None, b"meta-a")));
        let b = s.spawn(|| f.join_new(7, join_request("", None, b"meta-b")));
        f.wait_members(2);
        // Both are in, and both wait: the initial delay has not passed.
        assert!(!a.is_finished() && !b.is_finished());
        assert_eq!(f.state(), crate::GroupState::PreparingRebalance);
        f.clock.advance_ms(3_000);
        (a.join().unwrap(), b.join().unwrap())
    });
    for r in [&a, &b] {
        assert_eq!(r.error_code, NONE);
        assert_eq!(r.generation_id, 1);
        assert_eq!(r.protocol_name.as_ref().map(StrBytes::as_str), Some("p"));
        assert_eq!(
            r.protocol_type.as_ref().map(StrBytes::as_str),
            Some("custom")
        );
        assert_eq!(r.leader, a.leader);
    }
    let (leader, follower) = if a.leader == a.member_id {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert_eq!(leader.leader, leader.member_id);
    assert!(
        follower.members.is_empty(),
        "only the leader sees the members"
    );
    let metadata: BTreeMap<&str, &[u8]> = leader
        .members
        .iter()
        .map(|m| (m.member_id.as_str(), &m.metadata[..]))
        .collect();
    let expected: BTreeMap<&str, &[u8]> = BTreeMap::from([
        (a.member_id.as_str(), &b"meta-a"[..]),
        (b.member_id.as_str(), &b"meta-b"[..]),
    ]);
    assert_eq!(metadata, expected, "each member's metadata, verbatim");

    // The follower's sync waits for the leader's assignment.
    let (leader_id, follower_id) = (leader.member_id.as_str(), follower.member_id.as_str());
    let (to_leader, to_follower) = std::thread::scope(|s| {
        let follower_sync = s.spawn(|| f.sync(5, sync_request(follower_id, 1, &[])));
        let leader_sync = f.sync(
            5,
            sync_request(
                leader_id,
                1,
                &[
                    (leader_id, b"\x00to-leader"),
                    (follower_id, b"\xffto-follower"),
                ],
            ),
        );
        (leader_sync, follower_sync.join().unwrap())
    });
    assert_eq!(
        (to_leader.error_code, &to_leader.assignment[..]),
        (NONE, &b"\x00to-leader"[..])
    );
    assert_eq!(
        (to_follower.error_code, &to_follower.assignment[..]),
        (NONE, &b"\xffto-follower"[..])
    );
    assert_eq!(
        to_follower.protocol_name.as_ref().map(StrBytes::as_str),
        Some("p")
    );
    assert_eq!(f.state(), crate::GroupState::Stable);
    assert_eq!(f.heartbeat(leader_id, 1, None), NONE);
    assert_eq!(f.heartbeat(follower_id, 1, None), NONE);
}

#[test]
fn a_parked_join_ends_when_the_cluster_closes() {
    let f = Fixture::new(3_000);
    let answer = std::thread::scope(|s| {
        let a = s.spawn(|| f.join_new(7, join_request("", None, b"meta-a")));
        f.wait_members(1);
        f.cluster.close().unwrap();
        a.join().unwrap()
    });
    // The clock never moved: only the close could end the wait.
    assert_eq!(answer.error_code, BROKER_NOT_AVAILABLE);
}

#[test]
fn a_new_member_rebalances_the_group_and_heartbeats_say_so() {
    let f = Fixture::new(0);
    let (a, generation) = lone_member(&f, None);
    assert_eq!(generation, 1);
    // B waits for A to rejoin; A learns of it from its heartbeat.
    let (a2, b) = std::thread::scope(|s| {
        let b = s.spawn(|| f.join_new(7, join_request("", None, b"meta-b")));
        f.wait_members(2);
        assert_eq!(f.heartbeat(&a, 1, None), REBALANCE_IN_PROGRESS);
        let a2 = f.join(7, join_request(&a, None, b"meta-a"));
        (a2, b.join().unwrap())
    });
    assert_eq!((a2.error_code, a2.generation_id), (NONE, 2));
    assert_eq!((b.error_code, b.generation_id), (NONE, 2));
    assert_eq!(a2.member_id.as_str(), a, "a known member keeps its id");
    let b = b.member_id.as_str().to_string();

    // A third member: both others must rejoin.
    let answers = std::thread::scope(|s| {
        let c = s.spawn(|| f.join_new(7, join_request("", None, b"meta-c")));
        f.wait_members(3);
        assert_eq!(f.heartbeat(&a, 2, None), REBALANCE_IN_PROGRESS);
        assert_eq!(f.heartbeat(&b, 2, None), REBALANCE_IN_PROGRESS);
        let a3 = s.spawn(|| f.join(7, join_request(&a, None, b"meta-a")));
        let b3 = f.join(7, join_request(&b, None, b"meta-b"));
        [a3.join().unwrap(), b3, c.join().unwrap()]
    });
    for r in &answers {
        assert_eq!((r.error_code, r.generation_id), (NONE, 3));
    }
    let leader = answers.iter().find(|r| r.leader == r.member_id).unwrap();
    assert_eq!(leader.members.len(), 3);
    // A stale generation is refused, for a heartbeat as for a sync.
    assert_eq!(f.heartbeat(&a, 2, None), ILLEGAL_GENERATION);
    let stale = f.sync(5, sync_request(&a, 2, &[]));
    assert_eq!(stale.error_code, ILLEGAL_GENERATION);
}

#[test]
fn a_new_member_joins_with_the_member_id_it_is_handed_from_v4() {
    let f = Fixture::new(0);
    let first = f.join(4, join_request("", None, b"meta-a"));
    assert_eq!(first.error_code, MEMBER_ID_REQUIRED);
    let id = first.member_id.as_str().to_string();
    assert!(id.starts_with("test-client-"), "{id}");
    assert_eq!(f.state(), crate::GroupState::Dead, "not a member yet");
    let joined = f.join(4, join_request(&id, None, b"meta-a"));
    assert_eq!(
        (joined.error_code, joined.member_id.as_str()),
        (NONE, id.as_str())
    );
    assert_eq!(joined.leader.as_str(), id);
    // An id handed out and not used within the session timeout is void.
    let unused = f.join(9, join_request("", None, b"meta-b")).member_id;
    f.clock.advance_ms(i64::from(SESSION) + 1);
    let late = f.join(9, join_request(unused.as_str(), None, b"meta-b"));
    assert_eq!(late.error_code, UNKNOWN_MEMBER_ID);
    // Before v4 a new member joins at once; a static member at any version.
    let f = Fixture::new(0);
    assert_eq!(f.join(3, join_request("", None, b"m")).error_code, NONE);
    let f = Fixture::new(0);
    assert_eq!(
        f.join(5, join_request("", Some("i"), b"m")).error_code,
        NONE
    );
}

#[test]
fn a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() {
    let f = Fixture::new(0);
    let (a, _) = lone_member(&f, None);
    // B's session (60 s) outlives the rebalance timeout (30 s).
    let b = std::thread::scope(|s| {
        let b = s.spawn(|| {
            f.join_new(
                7,
                join_request("", None, b"meta-b").with_session_timeout_ms(60_000),
            )
        });
        f.wait_members(2);
        let a2 = f.join(7, join_request(&a, None, b"meta-a"));
        assert_eq!(a2.generation_id, 2);
        b.join().unwrap()
    });
    let b = b.member_id.as_str().to_string();
    // C joins; A rejoins; B stays silent. Both parked joins outlive A's
    // 10 s session: a member waiting for its answer does not expire.
    let (a3, c) = std::thread::scope(|s| {
        let c = s.spawn(|| f.join_new(7, join_request("", None, b"meta-c")));
        f.wait_members(3);
        let a3 = s.spawn(|| f.join(7, join_request(&a, None, b"meta-a")));
        // Both joins parked: A's and C's.
        f.cluster.inner.groups.wait_for(
            G,
            || f.clock.now_ms(),
            |g| g.is_some_and(|g| g.members.iter().filter(|m| m.awaiting).count() == 2),
        );
        f.clock.advance_ms(i64::from(REBALANCE) - 1);
        assert!(!c.is_finished());
        f.clock.advance_ms(1);
        (a3.join().unwrap(), c.join().unwrap())
    });
    assert_eq!((a3.error_code, a3.generation_id), (NONE, 3));
    assert_eq!((c.error_code, c.generation_id), (NONE, 3));
    let leader = if a3.leader == a3.member_id { &a3 } else { &c };
    let members: Vec<&str> = leader
        .members
        .iter()
        .map(|m| m.member_id.as_str())
        .collect();
    assert!(!members.contains(&b.as_str()), "{members:?}");
    assert_eq!(members.len(), 2);
    assert_eq!(f.heartbeat(&b, 2, None), UNKNOWN_MEMBER_ID);
}

#[test]
fn a_silent_member_expires_after_its_session_timeout() {
    let f = Fixture::new(0);
    let (a, generation) = lone_member(&f, None);
    f.clock.advance_ms(i64::from(SESSION));
    assert_eq!(
        f.heartbeat(&a, generation, None),
        NONE,
        "at the timeout: alive"
    );
    f.clock.advance_ms(i64::from(SESSION) + 1);
    assert_eq!(f.heartbeat(&a, generation, None), UNKNOWN_MEMBER_ID);
    assert_eq!(f.state(), crate::GroupState::Empty);
}

#[test]
fn leaving_one_member_or_a_batch_answers_each_and_rebalances() {
    let f = Fixture::new(0);
    let (a, _) = lone_member(&f, None);
    let (b, c) = std::thread::scope(|s| {
        let b = s.spawn(|| f.join_new(7, join_request("", Some("static-b"), b"meta-b")));
        let c = s.spawn(|| f.join_new(7, join_request("", None, b"meta-c")));
        f.wait_members(3);
        let a2 = f.join(7, join_request(&a, None, b"meta-a"));
        assert_eq!(a2.error_code, NONE);
        (b.join().unwrap(), c.join().unwrap())
    });
    let (b, c) = (
        b.member_id.as_str().to_string(),
        c.member_id.as_str().to_string(),
    );

    // v0–v2: one member.
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(sb(G)))
        .with_member_id(sb(&c));
    let ResponseKind::LeaveGroup(r) = f.call(2, RequestKind::LeaveGroup(leave.clone())) else {
        panic!()
    };
    assert_eq!(r.error_code, NONE);
    let ResponseKind::LeaveGroup(r) = f.call(2, RequestKind::LeaveGroup(leave)) else {
        panic!()
    };
    assert_eq!(r.error_code, UNKNOWN_MEMBER_ID, "already gone");
    assert_eq!(f.heartbeat(&a, 2, None), REBALANCE_IN_PROGRESS);

    // v3+: a batch, each answered on its own; a static member by its
    // instance id alone; an instance id held by another member is fenced.
    let member = |id: &str, instance: Option<&str>| {
        MemberIdentity::default()
            .with_member_id(sb(id))
            .with_group_instance_id(instance.map(sb))
    };
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(sb(G)))
        .with_members(vec![
            member(&a, Some("static-b")),
            member("nobody", None),
            member("", Some("static-b")),
        ]);
    let ResponseKind::LeaveGroup(r) = f.call(5, RequestKind::LeaveGroup(leave)) else {
        panic!()
    };
    let codes: Vec<i16> = r.members.iter().map(|m| m.error_code).collect();
    assert_eq!(r.error_code, NONE);
    assert_eq!(codes, [FENCED_INSTANCE_ID, UNKNOWN_MEMBER_ID, NONE]);
    // Its instance id is free again.
    assert_eq!(f.heartbeat(&b, 2, Some("static-b")), UNKNOWN_MEMBER_ID);
    let ids: Vec<String> = f
        .cluster
        .inner
        .groups
        .describe(G, f.clock.now_ms())
        .unwrap()
        .members
        .into_iter()
        .map(|m| m.member_id)
        .collect();
    assert_eq!(ids, [a]);
}

#[test]
fn a_restarted_static_member_takes_its_place_and_assignment_without_a_rebalance() {
    let f = Fixture::new(0);
    let (old, generation) = lone_member(&f, Some("worker-1"));
    let again = f.join_new(7, join_request("", Some("worker-1"), b"meta-a"));
    assert_eq!(again.error_code, NONE);
    assert_eq!(again.generation_id, generation, "no rebalance");
    let new = again.member_id.as_str();
    assert_ne!(new, old);
    let synced = f.sync(5, sync_request(new, generation, &[]));
    assert_eq!(
        (synced.error_code, &synced.assignment[..]),
        (NONE, &b"assign-a"[..])
    );
    // The process it replaced is fenced.
    assert_eq!(
        f.heartbeat(&old, generation, Some("worker-1")),
        FENCED_INSTANCE_ID
    );
    let rejoin = f.join(7, join_request(&old, Some("worker-1"), b"meta-a"));
    assert_eq!(rejoin.error_code, FENCED_INSTANCE_ID);
    assert_eq!(f.heartbeat(new, generation, Some("worker-1")), NONE);
}

#[test]
fn joins_that_break_the_groups_rules_are_refused() {
    let f = Fixture::new(0);
    let (_, _) = lone_member(&f, None);
    let other_type = join_request("", None, b"m").with_protocol_type(sb("connect"));
    assert_eq!(
        f.join(7, other_type).error_code,
        INCONSISTENT_GROUP_PROTOCOL
    );
    let no_protocols = join_request("", None, b"m").with_protocols(Vec::new());
    assert_eq!(
        f.join(7, no_protocols).error_code,
        INCONSISTENT_GROUP_PROTOCOL
    );
    let short_session = join_request("", None, b"m").with_session_timeout_ms(1);
    assert_eq!(f.join(7, short_session).error_code, INVALID_SESSION_TIMEOUT);
    let no_group = join_request("", None, b"m").with_group_id(GroupId(sb("")));
    assert_eq!(f.join(2, no_group).error_code, INVALID_GROUP_ID);
    let unknown = join_request("ghost", None, b"m");
    assert_eq!(f.join(7, unknown).error_code, UNKNOWN_MEMBER_ID);
    assert_eq!(
        f.cluster
            .inner
            .groups
            .describe(G, f.clock.now_ms())
            .unwrap()
            .members
            .len(),
        1,
        "nothing joined"
    );
}

#[test]
fn committed_offsets_come_back_with_their_epoch_and_metadata() {
    let f = Fixture::new(0);
    let (a, generation) = lone_member(&f, None);
    let long = "x".repeat(super::offsets::OFFSET_METADATA_MAX_BYTES + 1);
    let codes = f.commit(&a, generation, &[(0, 5, "m"), (1, 7, &long), (9, 1, "")]);
    assert_eq!(
        codes,
        [NONE, OFFSET_METADATA_TOO_LARGE, UNKNOWN_TOPIC_OR_PARTITION]
    );
    assert_eq!(
        f.fetch_offsets(G, &[0, 1], false),
        [(5, 3, "m".to_string(), NONE), (-1, -1, String::new(), NONE)]
    );
    // v8: several groups, every partition of each (topics null).
    let request = OffsetFetchRequest::default().with_groups(vec![
        OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(sb(G)))
            .with_topics(None),
        OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(sb("other")))
            .with_topics(None),
        OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(sb("")))
            .with_topics(None),
    ]);
    let ResponseKind::OffsetFetch(r) = f.call(8, RequestKind::OffsetFetch(request)) else {
        panic!()
    };
    let g = &r.groups[0];
    assert_eq!((g.error_code, g.topics.len()), (NONE, 1));
    let p = &g.topics[0].partitions;
    assert_eq!(
        (p.len(), p[0].partition_index, p[0].committed_offset),
        (1, 0, 5)
    );
    assert!(r.groups[1].topics.is_empty());
    assert_eq!(r.groups[2].error_code, INVALID_GROUP_ID);
    // v1: no leader epoch in the answer.
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(sb(G)))
        .with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(TopicName(sb("t")))
                .with_partition_indexes(vec![0]),
        ]));
    let ResponseKind::OffsetFetch(r) = f.call(1, RequestKind::OffsetFetch(request)) else {
        panic!()
    };
    let p = &r.topics[0].partitions[0];
    assert_eq!((p.committed_offset, p.committed_leader_epoch), (5, -1));
}

#[test]
fn commits_from_stale_or_unknown_members_are_refused_and_store_nothing() {
    let f = Fixture::new(0);
    let (a, generation) = lone_member(&f, None);
    assert_eq!(f.commit(&a, generation, &[(0, 5, "")]), [NONE]);
    assert_eq!(
        f.commit(&a, generation + 1, &[(0, 6, ""), (1, 6, "")]),
        [ILLEGAL_GENERATION; 2]
    );
    assert_eq!(
        f.commit("ghost", generation, &[(0, 6, "")]),
        [UNKNOWN_MEMBER_ID]
    );
    // A consumer outside the group may commit only while it has no members.
    assert_eq!(f.commit("", -1, &[(0, 6, "")]), [UNKNOWN_MEMBER_ID]);
    assert_eq!(
        f.fetch_offsets(G, &[0, 1], false),
        [(5, 3, String::new(), NONE), (-1, -1, String::new(), NONE)]
    );
    let sync = f.sync(5, sync_request("ghost", generation, &[]));
    assert_eq!(sync.error_code, UNKNOWN_MEMBER_ID);
    let sync = f.sync(
        5,
        sync_request(&a, generation, &[]).with_protocol_name(Some(sb("q"))),
    );
    assert_eq!(sync.error_code, INCONSISTENT_GROUP_PROTOCOL);
    // Once the group is empty, a simple commit goes through.
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(sb(G)))
        .with_member_id(sb(&a));
    f.call(0, RequestKind::LeaveGroup(leave));
    assert_eq!(f.commit("", -1, &[(0, 6, "")]), [NONE]);
    assert_eq!(f.fetch_offsets(G, &[0], false)[0].0, 6);
}

#[test]
fn groups_are_listed_described_and_deleted_as_kafka_shows_them() {
    let f = Fixture::new(0);
    let (a, _) = lone_member(&f, None);
    let list = |version: i16, states: &[&str]| -> Vec<(String, String, String)> {
        let request =
            ListGroupsRequest::default().with_states_filter(states.iter().map(|s| sb(s)).collect());
        let ResponseKind::ListGroups(r) = f.call(version, RequestKind::ListGroups(request)) else {
            panic!()
        };
        assert_eq!(r.error_code, NONE);
        r.groups
            .iter()
            .map(|g| {
                (
                    g.group_id.as_str().to_string(),
                    g.protocol_type.as_str().to_string(),
                    g.group_state.as_str().to_string(),
                )
            })
            .collect()
    };
    // Each broker lists the groups it coordinates: broker 1 none here.
    let mut other = f.ctx(4);
    other.broker = 1;
    let Some(ResponseKind::ListGroups(r)) = handle(
        &other,
        RequestKind::ListGroups(ListGroupsRequest::default()),
    ) else {
        panic!()
    };
    assert!(r.groups.is_empty(), "{r:?}");
    let stable = ("g".to_string(), "custom".to_string(), "Stable".to_string());
    assert_eq!(list(4, &[]), std::slice::from_ref(&stable));
    assert_eq!(list(4, &["stable"]), [stable]);
    assert!(list(4, &["Empty"]).is_empty());
    assert_eq!(list(0, &[]), [("g".into(), "custom".into(), String::new())]);

    let describe = |groups: &[&str]| {
        let request = DescribeGroupsRequest::default()
            .with_groups(groups.iter().map(|g| GroupId(sb(g))).collect());
        let ResponseKind::DescribeGroups(r) = f.call(5, RequestKind::DescribeGroups(request))
        else {
            panic!()
        };
        r.groups
    };
    let described = describe(&[G, "nope"]);
    let g = &described[0];
    assert_eq!(
        (
            g.error_code,
            g.group_state.as_str(),
            g.protocol_type.as_str(),
            g.protocol_data.as_str()
        ),
        (NONE, "Stable", "custom", "p")
    );
    let m = &g.members[0];
    assert_eq!(m.member_id.as_str(), a);
    assert_eq!(m.client_id.as_str(), "test-client");
    assert_eq!(m.client_host.as_str(), "/192.0.2.7");
    assert_eq!(
        (&m.member_metadata[..], &m.member_assignment[..]),
        (&b"meta-a"[..], &b"assign-a"[..])
    );
    assert_eq!(
        (described[1].error_code, described[1].group_state.as_str()),
        (NONE, "Dead")
    );

    let delete = |groups: &[&str]| -> Vec<i16> {
        let request = DeleteGroupsRequest::default()
            .with_groups_names(groups.iter().map(|g| GroupId(sb(g))).collect());
        let ResponseKind::DeleteGroups(r) = f.call(2, RequestKind::DeleteGroups(request)) else {
            panic!()
        };
        r.results.iter().map(|r| r.error_code).collect()
    };
    assert_eq!(
        delete(&[G, "nope", ""]),
        [NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND, INVALID_GROUP_ID]
    );
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(sb(G)))
        .with_member_id(sb(&a));
    f.call(1, RequestKind::LeaveGroup(leave));
    assert_eq!(describe(&[G])[0].group_state.as_str(), "Empty");
    assert_eq!(delete(&[G]), [NONE]);
    assert_eq!(describe(&[G])[0].group_state.as_str(), "Dead");
    assert!(list(4, &[]).is_empty());
}

#[test]
fn a_wire_consumer_and_an_in_process_leader_share_a_group() {
    use crate::cluster::JoinRequest;
    let f = Fixture::new(0);
    // An in-process member joins first and leads.
    let (waker, _wake) = crossbeam_channel::bounded(1);
    let inner = &f.cluster.inner;
    let in_process = |member_id: Option<String>| JoinRequest {
        member_id,
        instance_id: None,
        client_id: "in-process".into(),
        session_timeout_ms: i64::from(SESSION),
        rebalance_timeout_ms: i64::from(REBALANCE),
        protocols: vec!["range".into()],
        subscription: crate::Subscription::new(["t"]),
        waker: waker.clone(),
    };
    let crate::cluster::JoinResponse::Joined(first) = inner
        .groups
        .join(G, in_process(None), f.clock.now_ms())
        .unwrap()
    else {
        panic!()
    };
    let leader = first.member_id.clone();
    // A consumer on the wire subscribes to `t` with the consumer protocol.
    let subscription =
        super::consumer_protocol::encode_subscription(&crate::Subscription::new(["t"]));
    let wire_join = JoinGroupRequest::default()
        .with_group_id(GroupId(sb(G)))
        .with_session_timeout_ms(SESSION)
        .with_rebalance_timeout_ms(REBALANCE)
        .with_member_id(sb(""))
        .with_protocol_type(sb("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(sb("range"))
                .with_metadata(subscription),
        ]);
    let (joined, wire) = std::thread::scope(|s| {
        let wire = s.spawn(|| f.join_new(9, wire_join));
        f.wait_members(2);
        let crate::cluster::JoinResponse::Joined(joined) = inner
            .groups
            .join(G, in_process(Some(leader.clone())), f.clock.now_ms())
            .unwrap()
        else {
            panic!("the wire member has joined: the join phase is over")
        };
        (joined, wire.join().unwrap())
    });
    assert_eq!(joined.leader, leader);
    let wire_id = wire.member_id.as_str().to_string();
    // The in-process leader read the wire member's subscription.
    assert_eq!(joined.members[&wire_id].topics, ["t"]);
    let assignment = BTreeMap::from([
        (leader.clone(), vec![crate::TopicPartition::new("t", 0)]),
        (wire_id.clone(), vec![crate::TopicPartition::new("t", 1)]),
    ]);
    inner
        .groups
        .sync(
            G,
            &leader,
            joined.generation,
            Some(assignment),
            f.clock.now_ms(),
        )
        .unwrap();
    let synced = f.sync(
        3,
        sync_request(&wire_id, joined.generation, &[])
            .with_protocol_type(None)
            .with_protocol_name(None),
    );
    assert_eq!(synced.error_code, NONE);
    assert_eq!(
        super::consumer_protocol::decode_assignment(&synced.assignment).unwrap(),
        [crate::TopicPartition::new("t", 1)]
    );
}

#[test]
fn every_api_answers_an_empty_request_at_every_version_with_an_encodable_response() {
    let f = Fixture::new(0);
    for &(api, low, high) in VERSIONS {
        for version in low..=high {
            let request = match api {
                ApiKey::FindCoordinator => RequestKind::FindCoordinator(Default::default()),
                ApiKey::JoinGroup => RequestKind::JoinGroup(Default::default()),
                ApiKey::SyncGroup => RequestKind::SyncGroup(Default::default()),
                ApiKey::Heartbeat => RequestKind::Heartbeat(Default::default()),
                ApiKey::LeaveGroup => RequestKind::LeaveGroup(Default::default()),
                ApiKey::OffsetCommit => RequestKind::OffsetCommit(Default::default()),
                ApiKey::OffsetFetch => RequestKind::OffsetFetch(Default::default()),
                ApiKey::ListGroups => RequestKind::ListGroups(Default::default()),
                ApiKey::DescribeGroups => RequestKind::DescribeGroups(Default::default()),
                ApiKey::DeleteGroups => RequestKind::DeleteGroups(Default::default()),
                other => panic!("{other:?} is not a group API"),
            };
            // `call` checks the answer encodes at the version.
            f.call(version, request);
        }
    }
    assert!(handle(&f.ctx(0), RequestKind::ApiVersions(Default::default())).is_none());
}
