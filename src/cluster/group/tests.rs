//! Unit tests of the membership state machine, on a hand-driven clock:
//! every call gets an explicit `now`, and every expectation (generation,
//! leader, deadline) is worked out by hand from Kafka's rules.

use std::cell::Cell;

use crossbeam_channel::Receiver;

use super::*;

mod model;

const G: &str = "g";
const SESSION: i64 = 10_000;
const REBALANCE: i64 = 30_000;

fn limits() -> GroupLimits {
    GroupLimits {
        min_session_timeout_ms: 0,
        max_session_timeout_ms: 1_800_000,
        initial_rebalance_delay_ms: 0,
    }
}

fn request(member_id: Option<&str>, waker: &Sender<()>) -> JoinRequest {
    JoinRequest {
        member_id: member_id.map(str::to_string),
        instance_id: None,
        client_id: "c".into(),
        session_timeout_ms: SESSION,
        rebalance_timeout_ms: REBALANCE,
        protocols: vec!["range".into()],
        subscription: Subscription::new(["t"]),
        waker: waker.clone(),
    }
}

fn tp(partition: u32) -> TopicPartition {
    TopicPartition::new("t", partition)
}

/// One consumer process: its client id (member ids start with it, so
/// clients "a" < "b" < "c" order their members the same way) and the
/// channel the coordinator wakes it on.
struct Client {
    name: &'static str,
    instance: Option<&'static str>,
    tx: Sender<()>,
    rx: Receiver<()>,
}

impl Client {
    fn new(name: &'static str) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(1);
        Client {
            name,
            instance: None,
            tx,
            rx,
        }
    }

    /// A static member (`group.instance.id`).
    fn with_instance(name: &'static str, instance: &'static str) -> Self {
        Client {
            instance: Some(instance),
            ..Client::new(name)
        }
    }

    fn request(&self, member_id: Option<&str>) -> JoinRequest {
        JoinRequest {
            client_id: self.name.into(),
            instance_id: self.instance.map(str::to_string),
            ..request(member_id, &self.tx)
        }
    }

    /// Whether a wake-up was sent since the last call (and takes it).
    fn woken(&self) -> bool {
        self.rx.try_recv().is_ok()
    }
}

fn joined(response: Result<JoinResponse>) -> Joined {
    match response {
        Ok(JoinResponse::Joined(joined)) => joined,
        other => panic!("expected a completed join, got {other:?}"),
    }
}

fn pending(response: Result<JoinResponse>) -> String {
    match response {
        Ok(JoinResponse::Pending { member_id }) => member_id,
        other => panic!("expected a pending join, got {other:?}"),
    }
}

fn snapshot(c: &GroupCoordinator, now: i64) -> GroupSnapshot {
    c.snapshot(G, now).expect("the group has members")
}

fn state(c: &GroupCoordinator, now: i64) -> GroupState {
    snapshot(c, now).state
}

fn member_ids(c: &GroupCoordinator, now: i64) -> Vec<String> {
    snapshot(c, now)
        .members
        .into_iter()
        .map(|m| m.member_id)
        .collect()
}

fn assignment_of(c: &GroupCoordinator, member: &str, now: i64) -> Vec<TopicPartition> {
    snapshot(c, now)
        .members
        .into_iter()
        .find(|m| m.member_id == member)
        .map(|m| m.assignment)
        .unwrap_or_else(|| panic!("{member} is not a member"))
}

/// Commits for `member` and checks that the commit closure ran exactly
/// when the coordinator allowed it.
fn commit(c: &GroupCoordinator, member: Option<(&str, i32)>, now: i64) -> Result<()> {
    let ran = Cell::new(false);
    let out = c.commit(G, member, now, || {
        ran.set(true);
        Ok(())
    });
    assert_eq!(ran.get(), out.is_ok(), "{out:?}");
    out
}

fn assign(entries: &[(&str, &[u32])]) -> BTreeMap<String, Vec<TopicPartition>> {
    entries
        .iter()
        .map(|(id, ps)| (id.to_string(), ps.iter().copied().map(tp).collect()))
        .collect()
}

/// Forms a Stable group of `a` (the leader) and `b` at generation 2 at
/// time `now`: `a` owns t-0, `b` owns t-1. Returns their member ids.
fn stable_pair(c: &GroupCoordinator, a: &Client, b: &Client, now: i64) -> (String, String) {
    let first = joined(c.join(G, a.request(None), now));
    let a_id = first.member_id;
    let b_id = pending(c.join(G, b.request(None), now));
    let lead = joined(c.join(G, a.request(Some(&a_id)), now));
    assert_eq!((lead.generation, lead.leader.as_str()), (2, a_id.as_str()));
    joined(c.join(G, b.request(Some(&b_id)), now));
    let all = assign(&[(&a_id, &[0]), (&b_id, &[1])]);
    c.sync(G, &a_id, 2, Some(all), now).unwrap();
    c.sync(G, &b_id, 2, None, now).unwrap();
    assert_eq!(state(c, now), GroupState::Stable);
    a.woken();
    b.woken();
    (a_id, b_id)
}

#[test]
fn a_lone_member_joins_syncs_and_is_stable() {
    let coordinator = GroupCoordinator::new(limits());
    let (tx, _rx) = crossbeam_channel::bounded(1);
    let JoinResponse::Joined(joined) = coordinator.join("g", request(None, &tx), 0).unwrap() else {
        panic!("a lone member completes the join at once");
    };
    assert_eq!(joined.generation, 1);
    assert_eq!(joined.leader, joined.member_id);
    let assignment =
        BTreeMap::from([(joined.member_id.clone(), vec![TopicPartition::new("t", 0)])]);
    let synced = coordinator
        .sync("g", &joined.member_id, 1, Some(assignment), 0)
        .unwrap();
    assert_eq!(
        synced,
        SyncResponse::Assigned(vec![TopicPartition::new("t", 0)])
    );
    assert_eq!(
        coordinator.snapshot("g", 0).unwrap().state,
        GroupState::Stable
    );
    coordinator.leave("g", &joined.member_id, 0);
    assert!(coordinator.snapshot("g", 0).is_none());
}

#[test]
fn a_second_member_rebalances_the_group_through_every_state() {
    let c = GroupCoordinator::new(limits());
    let (a, b) = (Client::new("a"), Client::new("b"));
    let first = joined(c.join(G, a.request(None), 0));
    let a_id = first.member_id.clone();
    assert_eq!(first.generation, 1);
    assert_eq!(first.protocol, "range");
    assert_eq!(
        first.members,
        BTreeMap::from([(a_id.clone(), Subscription::new(["t"]))])
    );
    assert_eq!(state(&c, 0), GroupState::CompletingRebalance);
    // Kafka answers a heartbeat while the leader computes the assignment.
    c.heartbeat(G, &a_id, None, 1, 10).unwrap();
    let synced = c.sync(G, &a_id, 1, Some(assign(&[(&a_id, &[0, 1])])), 10);
    assert_eq!(synced.unwrap(), SyncResponse::Assigned(vec![tp(0), tp(1)]));
    assert_eq!(state(&c, 10), GroupState::Stable);

    // b's join starts a rebalance; a learns it from its heartbeat.
    let b_id = pending(c.join(G, b.request(None), 100));
    assert_ne!(a_id, b_id);
    let s = snapshot(&c, 100);
    assert_eq!((s.state, s.generation), (GroupState::PreparingRebalance, 1));
    assert!(matches!(
        c.heartbeat(G, &a_id, None, 1, 200),
        Err(Error::RebalanceInProgress { .. })
    ));
    assert!(matches!(
        c.sync(G, &a_id, 1, None, 200),
        Err(Error::RebalanceInProgress { .. })
    ));
    // The join phase waits for a, however often b asks.
    assert_eq!(pending(c.join(G, b.request(Some(&b_id)), 300)), b_id);
    assert_eq!(state(&c, 300), GroupState::PreparingRebalance);

    // a rejoins: the phase completes; only the leader sees subscriptions.
    let lead = joined(c.join(G, a.request(Some(&a_id)), 400));
    assert_eq!(lead.generation, 2);
    assert_eq!(lead.leader, a_id, "the old leader keeps the lead");
    assert_eq!(
        lead.members.keys().cloned().collect::<Vec<_>>(),
        [a_id.clone(), b_id.clone()]
    );
    assert_eq!(state(&c, 400), GroupState::CompletingRebalance);
    let follower = joined(c.join(G, b.request(Some(&b_id)), 500));
    assert_eq!(
        (follower.generation, follower.leader.as_str()),
        (2, a_id.as_str())
    );
    assert!(follower.members.is_empty());

    // The follower waits for the leader's assignment.
    assert_eq!(
        c.sync(G, &b_id, 2, None, 600).unwrap(),
        SyncResponse::Pending
    );
    let all = assign(&[(&a_id, &[0]), (&b_id, &[1])]);
    assert_eq!(
        c.sync(G, &a_id, 2, Some(all), 700).unwrap(),
        SyncResponse::Assigned(vec![tp(0)])
    );
    assert_eq!(
        c.sync(G, &b_id, 2, None, 800).unwrap(),
        SyncResponse::Assigned(vec![tp(1)])
    );
    let s = snapshot(&c, 800);
    assert_eq!(
        (s.state, s.generation, s.rebalances),
        (GroupState::Stable, 2, 2)
    );
    assert_eq!(s.leader.as_deref(), Some(a_id.as_str()));
    assert_eq!(s.protocol.as_deref(), Some("range"));
    let members: Vec<(String, Vec<TopicPartition>)> = s
        .members
        .iter()
        .map(|m| (m.member_id.clone(), m.assignment.clone()))
        .collect();
    assert_eq!(
        members,
        [(a_id.clone(), vec![tp(0)]), (b_id.clone(), vec![tp(1)])]
    );
    c.heartbeat(G, &a_id, None, 2, 900).unwrap();
    c.heartbeat(G, &b_id, None, 2, 900).unwrap();
}

#[test]
fn a_follower_rejoining_unchanged_keeps_the_generation_but_the_leader_rebalances() {
    let c = GroupCoordinator::new(limits());
    let (a, b) = (Client::new("a"), Client::new("b"));
    let (a_id, b_id) = stable_pair(&c, &a, &b, 0);
    let again = joined(c.join(G, b.request(Some(&b_id)), 10));
    assert_eq!(
        (again.generation, again.leader.as_str()),
        (2, a_id.as_str())
    );
    assert_eq!(state(&c, 10), GroupState::Stable);
    assert!(!a.woken());

    // A follower whose subscription changed starts a rebalance.
    let mut changed = b.request(Some(&b_id));
    changed.subscription = Subscription::new(["t", "u"]);
    assert_eq!(pending(c.join(G, changed, 20)), b_id);
    assert_eq!(state(&c, 20), GroupState::PreparingRebalance);
    assert!(a.woken());
    let lead = joined(c.join(G, a.request(Some(&a_id)), 30));
    assert_eq!(lead.generation, 3);
    assert_eq!(lead.members[&b_id].topics, ["t", "u"]);
    let all = assign(&[(&a_id, &[0]), (&b_id, &[1])]);
    c.sync(G, &a_id, 3, Some(all), 30).unwrap();

    // Kafka: the leader rejoining a Stable group forces a rebalance.
    assert_eq!(pending(c.join(G, a.request(Some(&a_id)), 40)), a_id);
    assert_eq!(state(&c, 40), GroupState::PreparingRebalance);
    assert!(b.woken());
}

#[test]
fn stale_generations_are_rejected() {
    let c = GroupCoordinator::new(limits());
    let (a, b) = (Client::new("a"), Client::new("b"));
    let (a_id, b_id) = stable_pair(&c, &a, &b, 0);
    for generation in [1, 3] {
        let err = c.sync(G, &b_id, generation, None, 10).unwrap_err();
        assert!(
            matches!(err, Error::IllegalGeneration { generation: g, .. } if g == generation),
            "{err}"
        );
        let err = c.heartbeat(G, &a_id, None, generation, 10).unwrap_err();
        assert!(matches!(err, Error::IllegalGeneration { .. }), "{err}");
        let err = commit(&c, Some((&a_id, generation)), 10).unwrap_err();
        assert!(matches!(err, Error::CommitFailed { .. }), "{err}");
    }
    // The current generation is fine, and a stale sync assigned nothing.
    commit(&c, Some((&a_id, 2)), 10).unwrap();
    assert_eq!(
        c.sync(G, &b_id, 2, None, 10).unwrap(),
        SyncResponse::Assigned(vec![tp(1)])
    );

    // A leader's sync for a stale generation cannot install an assignment.
    pending(c.join(G, a.request(Some(&a_id)), 20));
    joined(c.join(G, b.request(Some(&b_id)), 20));
    assert_eq!(state(&c, 20), GroupState::CompletingRebalance);
    let grab = assign(&[(&a_id, &[0, 1]), (&b_id, &[])]);
    let err = c.sync(G, &a_id, 2, Some(grab), 20).unwrap_err();
    assert!(matches!(
        err,
        Error::IllegalGeneration { generation: 2, .. }
    ));
    assert_eq!(state(&c, 20), GroupState::CompletingRebalance);
    assert!(assignment_of(&c, &a_id, 20).is_empty());
}

#[test]
fn unknown_members_are_refused_and_change_nothing() {
    let c = GroupCoordinator::new(limits());
    let (a, b) = (Client::new("a"), Client::new("b"));
    let (a_id, _) = stable_pair(&c, &a, &b, 0);
    let before = snapshot(&c, 0);
    let is_unknown =
        |e: &Error| matches!(e, Error::UnknownMemberId { member_id, .. } if member_id == "ghost");
    assert!(is_unknown(&c.sync(G, "ghost", 2, None, 1).unwrap_err()));
    assert!(is_unknown(
        &c.heartbeat(G, "ghost", None, 2, 1).unwrap_err()
    ));
    assert!(is_unknown(
        &c.join(G, a.request(Some("ghost")), 1).unwrap_err()
    ));
    assert!(matches!(
        commit(&c, Some(("ghost", 2)), 1),
        Err(Error::CommitFailed { .. })
    ));
    c.leave(G, "ghost", 1);
    assert_eq!(snapshot(&c, 1), before);
    assert!(!a.woken() && !b.woken());
    // A member of another group is unknown here.
    assert!(c.heartbeat("other", &a_id, None, 2, 1).is_err());
    assert!(c.snapshot("other", 1).is_none());
    // Joining a group that does not exist with a member id is refused too.
    assert!(c.join("other", a.request(Some(&a_id)), 1).is_err());
    assert!(c.snapshot("other", 1).is_none());
}

#[test]
fn a_silent_member_expires_after_its_session_timeout_and_the_group_rebalances() {
    let c = GroupCoordinator::new(limits());
    let (a, b) = (Client::new("a"), Client::new("b"));
    let (a_id, b_id) = stable_pair(&c, &a, &b, 0);
    c.heartbeat(G, &a_id, None, 2, 9_000).unwrap();
    // Expiry is `now - last_seen > session.timeout.ms`: b, last seen at 0,
    // is still in at 10 000 and gone at 10 001; a, seen at 9 000, stays.
    assert_eq!(member_ids(&c, SESSION), [a_id.clone(), b_id.clone()]);
    assert_eq!(state(&c, SESSION), GroupState::Stable);
    assert!(!a.woken());
    let s = snapshot(&c, SESSION + 1);
    assert_eq!(
        (s.state, s.generation, s.members.len()),
        (GroupState::PreparingRebalance, 2, 1)
    );
    assert!(a.woken(), "the survivor is told to rejoin");
    let err = c.heartbeat(G, &b_id, None, 2, SESSION + 1).unwrap_err();
    assert!(matches!(err, Error::UnknownMemberId { .. }), "{err}");
    let err = commit(&c, Some((&b_id, 2)), SESSION + 1).unwrap_err();
    assert!(matches!(err, Error::CommitFailed { .. }), "{err}");
    assert!(matches!(
        c.heartbeat(G, &a_id, None, 2, SESSION + 2),
        Err(Error::RebalanceInProgress { .. })
    ));
    let alone = joined(c.join(G, a.request(Some(&a_id)), SESSION + 3));
    assert_eq!((alone.generation, alone.leader), (3, a_id.clone()));
    assert_eq!(alone.members.len(), 1);
    // The expired member must join afresh.
    let err = c.join(G, b.request(Some(&b_id)), SESSION + 4).unwrap_err();
    assert!(matches!(err, Error::UnknownMemberId { .. }), "{err}");
}

#[test]
fn every_call_counts_as_a_sign_of_life() {
    let c = GroupCoordinator::new(limits());
    let (a, b) = (Client::new("a"), Client::new("b"));
    let (a_id, b_id) = stable_pair(&c, &a, &b, 0);
    // a syncs, commits and heartbeats just in time, b heartbeats.
    c.sync(G, &a_id, 2, None, 10_000).unwrap();
    c.heartbeat(G, &b_id, None, 2, 10_000).unwrap();
    commit(&c, Some((&a_id, 2)), 20_000).unwrap();
    c.heartbeat(G, &b_id, None, 2, 20_000).unwrap();
    c.heartbeat(G, &a_id, None, 2, 30_000).unwrap();
    c.heartbeat(G, &b_id, None, 2, 30_000).unwrap();
    assert_eq!(state(&c, 40_000), GroupState::Stable);
    // Both silent since 30 000: both gone at 40 001, and the group with them.
    assert!(c.snapshot(G, 40_001).is_none());
    assert!(c.active_groups(40_001).is_empty());
}

#[test]
fn the_leader_expiring_hands_the_lead_to_a_survivor() {
    let c = GroupCoordinator::new(limits());
    let (a, b) = (Client::new("a"), Client::new("b"));
    let (a_id, b_id) = stable_pair(&c, &a, &b, 0);
    c.heartbeat(G, &b_id, None, 2, 5_000).unwrap();
    let s = snapshot(&c, SESSION + 1);
    assert_eq!(s.state, GroupState::PreparingRebalance);
    assert_eq!(s.leader, None);
    let j = joined(c.join(G, b.request(Some(&b_id)), SESSION + 1));
    assert_eq!((j.generation, j.leader), (3, b_id.clone()));
    assert!(!member_ids(&c, SESSION + 1).contains(&a_id));
}

#[test]
fn the_rebalance_deadline_removes_members_that_did_not_rejoin() {
    let c = GroupCoordinator::new(limits());
    let long = |client: &Client, id: Option<&str>| JoinRequest {
        session_timeout_ms: 60_000,
        ..client.request(id)
    };
    let (a, b, newcomer) = (Client::new("a"), Client::new("b"), Client::new("c"));
    let a_id = joined(c.join(G, long(&a, None), 0)).member_id;
    let b_id = pending(c.join(G, long(&b, None), 0));
    joined(c.join(G, long(&a, Some(&a_id)), 0));
    joined(c.join(G, long(&b, Some(&b_id)), 0));
    c.sync(
        G,
        &a_id,
        2,
        Some(assign(&[(&a_id, &[0]), (&b_id, &[1])])),
        0,
    )
    .unwrap();

    // c joins at 1 000: the deadline is 1 000 + rebalance.timeout.ms.
    let c_id = pending(c.join(G, long(&newcomer, None), 1_000));
    let deadline = 1_000 + REBALANCE;
    pending(c.join(G, long(&a, Some(&a_id)), 2_000));
    // b stays alive (heartbeats) but never rejoins.
    for now in [10_000, 20_000, deadline - 1] {
        assert!(matches!(
            c.heartbeat(G, &b_id, None, 2, now),
            Err(Error::RebalanceInProgress { .. })
        ));
    }
    let s = snapshot(&c, deadline - 1);
    assert_eq!(
        (s.state, s.members.len()),
        (GroupState::PreparingRebalance, 3)
    );
    let s = snapshot(&c, deadline);
    assert_eq!(
        (s.state, s.generation, s.leader.as_deref()),
        (GroupState::CompletingRebalance, 3, Some(a_id.as_str()))
    );
    assert_eq!(member_ids(&c, deadline), [a_id.clone(), c_id.clone()]);
    let err = c.heartbeat(G, &b_id, None, 2, deadline).unwrap_err();
    assert!(matches!(err, Error::UnknownMemberId { .. }), "{err}");
    assert_eq!(
        joined(c.join(G, long(&a, Some(&a_id)), deadline)).generation,
        3
    );
    assert_eq!(
        joined(c.join(G, long(&newcomer, Some(&c_id)), deadline)).generation,
        3
    );
}

#[test]
fn leaving_completes_a_pending_join_and_the_last_one_out_removes_the_group() {
    let c = GroupCoordinator::new(limits());
    let (a, b, newcomer) = (Client::new("a"), Client::new("b"), Client::new("c"));
    let (a_id, b_id) = stable_pair(&c, &a, &b, 0);
    let c_id = pending(c.join(G, newcomer.request(None), 10));
    pending(c.join(G, a.request(Some(&a_id)), 10));
    // b was the only one missing: its leave ends the join phase.
    c.leave(G, &b_id, 20);
    let s = snapshot(&c, 20);
    assert_eq!(
        (s.state, s.generation),
        (GroupState::CompletingRebalance, 3)
    );
    assert!(a.woken() && newcomer.woken());
    let lead = joined(c.join(G, a.request(Some(&a_id)), 20));
    assert_eq!(
        lead.members.keys().cloned().collect::<Vec<_>>(),
        [a_id.clone(), c_id.clone()]
    );
    c.sync(
        G,
        &a_id,
        3,
        Some(assign(&[(&a_id, &[0]), (&c_id, &[1])])),
        20,
    )
    .unwrap();
    // A leave in Stable starts a rebalance for the others.
    c.leave(G, &a_id, 30);
    assert_eq!(state(&c, 30), GroupState::PreparingRebalance);
    assert!(newcomer.woken());
    assert_eq!(c.active_groups(30), [G]);
    c.leave(G, &c_id, 40);
    assert!(c.snapshot(G, 40).is_none());
    assert!(c.active_groups(40).is_empty());
    // A new member starts a new group.
    let fresh = joined(c.join(G, a.request(None), 50));
    assert_ne!(fresh.member_id, a_id);
    assert_eq!(fresh.leader, fresh.member_id);
}

#[test]
fn wakers_hear_every_state_change() {
    let c = GroupCoordinator::new(limits());
    let (a, b) = (Client::new("a"), Client::new("b"));
    let a_id = joined(c.join(G, a.request(None), 0)).member_id;
    assert!(
        a.woken(),
        "Empty -> PreparingRebalance -> CompletingRebalance"
    );
    c.sync(G, &a_id, 1, Some(assign(&[(&a_id, &[0])])), 0)
        .unwrap();
    assert!(a.woken(), "CompletingRebalance -> Stable");
    c.heartbeat(G, &a_id, None, 1, 1).unwrap();
    assert!(!a.woken(), "a heartbeat changes nothing");

    let b_id = pending(c.join(G, b.request(None), 2));
    assert!(a.woken() && b.woken(), "Stable -> PreparingRebalance");
    pending(c.join(G, b.request(Some(&b_id)), 3));
    assert!(!a.woken() && !b.woken(), "still waiting for a");
    joined(c.join(G, a.request(Some(&a_id)), 4));
    assert!(a.woken() && b.woken(), "-> CompletingRebalance");
    assert_eq!(c.sync(G, &b_id, 2, None, 5).unwrap(), SyncResponse::Pending);
    assert!(!b.woken());
    c.sync(
        G,
        &a_id,
        2,
        Some(assign(&[(&a_id, &[0]), (&b_id, &[1])])),
        6,
    )
    .unwrap();
    assert!(
        a.woken() && b.woken(),
        "the follower learns its assignment is ready"
    );
    c.leave(G, &a_id, 7);
    assert!(b.woken(), "a leave starts a rebalance");
    assert!(!a.woken(), "the member that left is not woken");
    // A member expiring wakes the others too.
    let c2 = GroupCoordinator::new(limits());
    let (x, y) = (Client::new("x"), Client::new("y"));
    let (_, y_id) = stable_pair(&c2, &x, &y, 0);
    c2.heartbeat(G, &y_id, None, 2, SESSION).unwrap();
    assert!(!y.woken());
    c2.heartbeat(G, &y_id, None, 2, SESSION + 1).unwrap_err();
    assert!(y.woken(), "x expired");
}

#[test]
fn a_restarted_static_member_takes_its_place_without_a_rebalance() {
    let c = GroupCoordinator::new(limits());
    let a = Client::with_instance("a", "worker-a");
    let b = Client::with_instance("b", "worker-b");
    let (a_id, b_id) = stable_pair(&c, &a, &b, 0);
    assert!(a_id.starts_with("worker-a-"), "{a_id}");
    let before = snapshot(&c, 0);

    // worker-b restarts: a new process, no member id, same instance id.
    let b2 = Client::with_instance("b", "worker-b");
    let back = joined(c.join(G, b2.request(None), 100));
    assert_ne!(back.member_id, b_id);
    assert_eq!((back.generation, back.leader.as_str()), (2, a_id.as_str()));
    assert!(back.members.is_empty());
    let after = snapshot(&c, 100);
    assert_eq!(
        (after.state, after.generation, after.rebalances),
        (GroupState::Stable, 2, before.rebalances)
    );
    assert_eq!(member_ids(&c, 100), [a_id.clone(), back.member_id.clone()]);
    assert_eq!(
        after.members[1].instance_id.as_deref(),
        Some("worker-b"),
        "{after:?}"
    );
    assert!(!a.woken(), "nobody else has to do anything");
    assert_eq!(
        c.sync(G, &back.member_id, 2, None, 100).unwrap(),
        SyncResponse::Assigned(vec![tp(1)])
    );
    c.heartbeat(G, &a_id, Some("worker-a"), 2, 100).unwrap();
    c.heartbeat(G, &back.member_id, Some("worker-b"), 2, 100)
        .unwrap();
    commit(&c, Some((&back.member_id, 2)), 100).unwrap();

    // The old process is fenced.
    let err = c.heartbeat(G, &b_id, Some("worker-b"), 2, 200).unwrap_err();
    assert!(
        matches!(&err, Error::FencedInstanceId { instance_id, .. } if instance_id == "worker-b"),
        "{err}"
    );
    let err = commit(&c, Some((&b_id, 2)), 200).unwrap_err();
    assert!(matches!(err, Error::CommitFailed { .. }), "{err}");
    let err = c.sync(G, &b_id, 2, None, 200).unwrap_err();
    assert!(matches!(err, Error::UnknownMemberId { .. }), "{err}");
    assert_eq!(state(&c, 200), GroupState::Stable);
}

#[test]
fn a_fenced_static_member_cannot_rejoin_under_its_old_member_id() {
    let c = GroupCoordinator::new(limits());
    let a = Client::with_instance("a", "worker-a");
    let b = Client::with_instance("b", "worker-b");
    let (_, b_id) = stable_pair(&c, &a, &b, 0);
    let b2 = Client::with_instance("b", "worker-b");
    let new_id = joined(c.join(G, b2.request(None), 100)).member_id;
    // The old process, told to rejoin, sends its old member id: Kafka
    // answers FENCED_INSTANCE_ID and the new process keeps its place.
    let err = c.join(G, b.request(Some(&b_id)), 200).unwrap_err();
    assert!(
        matches!(&err, Error::FencedInstanceId { instance_id, .. } if instance_id == "worker-b"),
        "{err}"
    );
    let s = snapshot(&c, 200);
    assert_eq!((s.state, s.generation), (GroupState::Stable, 2));
    assert!(s.members.iter().any(|m| m.member_id == new_id));
    c.heartbeat(G, &new_id, Some("worker-b"), 2, 200).unwrap();
}

#[test]
fn a_static_leader_replaced_keeps_the_lead_and_cannot_reassign_a_stable_group() {
    let c = GroupCoordinator::new(limits());
    let a = Client::with_instance("a", "worker-a");
    let b = Client::with_instance("b", "worker-b");
    let (a_id, b_id) = stable_pair(&c, &a, &b, 0);
    let a2 = Client::with_instance("a", "worker-a");
    let back = joined(c.join(G, a2.request(None), 100));
    let s = snapshot(&c, 100);
    assert_eq!(s.leader.as_deref(), Some(back.member_id.as_str()));
    assert_eq!((s.state, s.generation), (GroupState::Stable, 2));
    // Whatever it sends, a Stable group's assignment stays as it is.
    let grab = assign(&[(&back.member_id, &[0, 1]), (&b_id, &[])]);
    assert_eq!(
        c.sync(G, &back.member_id, 2, Some(grab), 100).unwrap(),
        SyncResponse::Assigned(vec![tp(0)])
    );
    assert_eq!(assignment_of(&c, &b_id, 100), [tp(1)]);
    assert!(!b.woken());
    let err = c.heartbeat(G, &a_id, Some("worker-a"), 2, 100).unwrap_err();
    assert!(matches!(err, Error::FencedInstanceId { .. }), "{err}");
}

#[test]
fn a_static_member_back_with_another_subscription_rebalances() {
    let c = GroupCoordinator::new(limits());
    let a = Client::with_instance("a", "worker-a");
    let b = Client::with_instance("b", "worker-b");
    let (a_id, _) = stable_pair(&c, &a, &b, 0);
    let b2 = Client::with_instance("b", "worker-b");
    let mut changed = b2.request(None);
    changed.subscription = Subscription::new(["t", "u"]);
    let new_id = pending(c.join(G, changed, 100));
    let s = snapshot(&c, 100);
    assert_eq!((s.state, s.generation), (GroupState::PreparingRebalance, 2));
    assert!(a.woken());
    let lead = joined(c.join(G, a.request(Some(&a_id)), 200));
    assert_eq!(lead.generation, 3);
    assert_eq!(lead.members[&new_id].topics, ["t", "u"]);
    assert!(assignment_of(&c, &new_id, 200).is_empty());
}

#[test]
fn the_same_topics_in_another_order_are_not_a_change() {
    let c = GroupCoordinator::new(limits());
    let a = Client::with_instance("a", "worker-a");
    let b = Client::with_instance("b", "worker-b");
    let with_topics = |client: &Client, id: Option<&str>, topics: &[&str]| JoinRequest {
        subscription: Subscription::new(topics.iter().copied()),
        ..client.request(id)
    };
    let a_id = joined(c.join(G, with_topics(&a, None, &["t", "u"]), 0)).member_id;
    let b_id = pending(c.join(G, with_topics(&b, None, &["t", "u"]), 0));
    joined(c.join(G, with_topics(&a, Some(&a_id), &["t", "u"]), 0));
    joined(c.join(G, with_topics(&b, Some(&b_id), &["t", "u"]), 0));
    c.sync(
        G,
        &a_id,
        2,
        Some(assign(&[(&a_id, &[0]), (&b_id, &[1])])),
        0,
    )
    .unwrap();
    // A follower rejoining with its topics reordered (and repeated).
    let again = joined(c.join(G, with_topics(&b, Some(&b_id), &["u", "t", "u"]), 10));
    assert_eq!(again.generation, 2);
    assert_eq!(state(&c, 10), GroupState::Stable);
    // A static member restarting with its topics reordered.
    let b2 = Client::with_instance("b", "worker-b");
    let back = joined(c.join(G, with_topics(&b2, None, &["u", "t"]), 20));
    assert_eq!(back.generation, 2);
    assert_eq!(state(&c, 20), GroupState::Stable);
    assert_eq!(assignment_of(&c, &back.member_id, 20), [tp(1)]);
}

#[test]
fn a_static_member_restarting_mid_rebalance_takes_part_in_it() {
    let c = GroupCoordinator::new(limits());
    let a = Client::with_instance("a", "worker-a");
    let b = Client::with_instance("b", "worker-b");
    let newcomer = Client::new("c");
    let (a_id, b_id) = stable_pair(&c, &a, &b, 0);
    let c_id = pending(c.join(G, newcomer.request(None), 10));
    pending(c.join(G, a.request(Some(&a_id)), 10));
    // b restarts before rejoining: its replacement counts as rejoined.
    let b2 = Client::with_instance("b", "worker-b");
    let back = joined(c.join(G, b2.request(None), 20));
    assert_eq!(back.generation, 3);
    assert!(!member_ids(&c, 20).contains(&b_id));
    let mut expected = vec![a_id.clone(), c_id, back.member_id.clone()];
    expected.sort();
    assert_eq!(member_ids(&c, 20), expected);
    let lead = joined(c.join(G, a.request(Some(&a_id)), 20));
    assert!(lead.members.contains_key(&back.member_id));
}

/// Forms a group of members offering `protocols` (client ids "a", "b", ...
/// in order) and returns the protocol the coordinator chose.
fn chosen(protocols: &[&[&str]]) -> String {
    let c = GroupCoordinator::new(limits());
    let names = ["a", "b", "c", "d"];
    let clients: Vec<Client> = names[..protocols.len()]
        .iter()
        .map(|n| Client::new(n))
        .collect();
    let requests = |i: usize, id: Option<&str>| JoinRequest {
        protocols: protocols[i].iter().map(|p| p.to_string()).collect(),
        ..clients[i].request(id)
    };
    let mut ids = Vec::new();
    for i in 0..clients.len() {
        ids.push(match c.join(G, requests(i, None), 0).unwrap() {
            JoinResponse::Pending { member_id } => member_id,
            JoinResponse::Joined(j) => j.member_id,
        });
    }
    let mut protocol: Option<String> = None;
    for (i, id) in ids.iter().enumerate() {
        if let JoinResponse::Joined(j) = c.join(G, requests(i, Some(id)), 0).unwrap() {
            assert!(protocol.as_ref().is_none_or(|p| *p == j.protocol));
            protocol = Some(j.protocol);
        }
    }
    let s = snapshot(&c, 0);
    assert_eq!(s.state, GroupState::CompletingRebalance);
    assert_eq!(s.protocol, protocol);
    protocol.expect("the join completed")
}

#[test]
fn the_protocol_is_chosen_by_vote_among_those_every_member_supports() {
    // One vote each: the tie goes to the earlier candidate in the first
    // member's (by member id) order.
    assert_eq!(
        chosen(&[&["range", "roundrobin"], &["roundrobin", "range"]]),
        "range"
    );
    assert_eq!(
        chosen(&[&["roundrobin", "range"], &["range", "roundrobin"]]),
        "roundrobin"
    );
    // Two votes beat one.
    assert_eq!(
        chosen(&[
            &["range", "roundrobin"],
            &["roundrobin", "range"],
            &["roundrobin", "range"]
        ]),
        "roundrobin"
    );
    // Only protocols every member supports count: c's one vote decides.
    assert_eq!(
        chosen(&[
            &["sticky", "range", "roundrobin"],
            &["sticky", "roundrobin", "range"],
            &["range", "roundrobin"]
        ]),
        "range"
    );
    assert_eq!(
        chosen(&[
            &["sticky", "range"],
            &["sticky", "roundrobin", "range"],
            &["range"]
        ]),
        "range"
    );
    assert_eq!(
        chosen(&[&["cooperative-sticky", "range"]]),
        "cooperative-sticky"
    );
}

#[test]
fn a_member_with_no_assignor_in_common_is_refused() {
    let c = GroupCoordinator::new(limits());
    let (a, b) = (Client::new("a"), Client::new("b"));
    let (a_id, b_id) = stable_pair(&c, &a, &b, 0);
    let before = snapshot(&c, 0);
    let mut odd = Client::new("c").request(None);
    odd.protocols = vec!["roundrobin".into(), "sticky".into()];
    let err = c.join(G, odd, 10).unwrap_err();
    assert!(
        matches!(err, Error::InconsistentGroupProtocol { .. }),
        "{err}"
    );
    assert_eq!(snapshot(&c, 10), before);
    assert!(!a.woken() && !b.woken());
    // A member may not switch to an assignor the others lack either...
    let mut switched = b.request(Some(&b_id));
    switched.protocols = vec!["roundrobin".into()];
    let err = c.join(G, switched, 10).unwrap_err();
    assert!(
        matches!(err, Error::InconsistentGroupProtocol { .. }),
        "{err}"
    );
    // ...but may add one, as long as a common one remains.
    let mut added = b.request(Some(&b_id));
    added.protocols = vec!["roundrobin".into(), "range".into()];
    pending(c.join(G, added, 10));
    let lead = joined(c.join(G, a.request(Some(&a_id)), 10));
    assert_eq!(lead.protocol, "range");
    // No assignor at all is refused outright.
    let mut none = Client::new("d").request(None);
    none.protocols.clear();
    let err = c.join(G, none, 10).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
}

#[test]
fn commits_follow_kafkas_generation_rules() {
    let c = GroupCoordinator::new(limits());
    let (a, b, newcomer) = (Client::new("a"), Client::new("b"), Client::new("c"));
    let (a_id, b_id) = stable_pair(&c, &a, &b, 0);
    // Outside the membership ("simple" commits) only with no members.
    let err = commit(&c, None, 0).unwrap_err();
    assert!(matches!(err, Error::CommitFailed { .. }), "{err}");

    // PreparingRebalance: members of the current generation may still
    // commit what they consumed before rejoining.
    let c_id = pending(c.join(G, newcomer.request(None), 10));
    assert_eq!(state(&c, 10), GroupState::PreparingRebalance);
    commit(&c, Some((&a_id, 2)), 10).unwrap();
    commit(&c, Some((&b_id, 2)), 10).unwrap();

    // CompletingRebalance: generation 3 exists but has no assignment yet.
    pending(c.join(G, a.request(Some(&a_id)), 20));
    joined(c.join(G, b.request(Some(&b_id)), 20));
    let lead = joined(c.join(G, a.request(Some(&a_id)), 20));
    assert_eq!(
        (lead.generation, state(&c, 20)),
        (3, GroupState::CompletingRebalance)
    );
    let err = commit(&c, Some((&a_id, 3)), 20).unwrap_err();
    assert!(matches!(err, Error::RebalanceInProgress { .. }), "{err}");
    let err = commit(&c, Some((&b_id, 2)), 20).unwrap_err();
    assert!(matches!(err, Error::CommitFailed { .. }), "{err}");
    let all = assign(&[(&a_id, &[0]), (&b_id, &[1]), (&c_id, &[2])]);
    c.sync(G, &a_id, 3, Some(all), 30).unwrap();
    commit(&c, Some((&c_id, 3)), 30).unwrap();
    let err = commit(&c, Some((&c_id, 2)), 30).unwrap_err();
    assert!(matches!(err, Error::CommitFailed { .. }), "{err}");

    // Admin changes wait for an empty group.
    let err = c.while_empty(G, 30, || Ok(())).unwrap_err();
    assert!(matches!(err, Error::GroupNotEmpty { .. }), "{err}");
    for id in [&a_id, &b_id, &c_id] {
        c.leave(G, id, 40);
    }
    commit(&c, None, 40).unwrap();
    assert_eq!(c.while_empty(G, 40, || Ok(7)).unwrap(), 7);
    // The commit's own error comes back as it is.
    let err = c
        .commit(G, None, 40, || -> Result<()> {
            Err(Error::Closed("cluster"))
        })
        .unwrap_err();
    assert!(matches!(err, Error::Closed(_)), "{err}");
}

#[test]
fn session_timeouts_outside_the_clusters_limits_are_refused() {
    let c = GroupCoordinator::new(GroupLimits {
        min_session_timeout_ms: 6_000,
        max_session_timeout_ms: 300_000,
        initial_rebalance_delay_ms: 0,
    });
    let a = Client::new("a");
    for session in [0, 5_999, 300_001, -1] {
        let err = c
            .join(
                G,
                JoinRequest {
                    session_timeout_ms: session,
                    ..a.request(None)
                },
                0,
            )
            .unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{session}: {err}");
        assert!(c.snapshot(G, 0).is_none());
    }
    for session in [6_000, 300_000] {
        let id = joined(c.join(
            G,
            JoinRequest {
                session_timeout_ms: session,
                ..a.request(None)
            },
            0,
        ))
        .member_id;
        c.leave(G, &id, 0);
    }
}

#[test]
fn the_initial_rebalance_delay_holds_a_new_groups_first_join() {
    let c = GroupCoordinator::new(GroupLimits {
        initial_rebalance_delay_ms: 3_000,
        ..limits()
    });
    let (a, b, newcomer) = (Client::new("a"), Client::new("b"), Client::new("c"));
    let a_id = pending(c.join(G, a.request(None), 1_000));
    let b_id = pending(c.join(G, b.request(None), 2_000));
    a.woken();
    b.woken();
    assert_eq!(pending(c.join(G, a.request(Some(&a_id)), 3_999)), a_id);
    let s = snapshot(&c, 3_999);
    assert_eq!((s.state, s.generation), (GroupState::PreparingRebalance, 0));
    assert!(!a.woken() && !b.woken());
    // The delay runs from the first join: 1 000 + 3 000. The clock alone
    // completes the join at the next call.
    let s = snapshot(&c, 4_000);
    assert_eq!(
        (s.state, s.generation),
        (GroupState::CompletingRebalance, 1)
    );
    assert!(a.woken() && b.woken());
    let lead = joined(c.join(G, a.request(Some(&a_id)), 4_000));
    assert_eq!(lead.members.len(), 2);
    joined(c.join(G, b.request(Some(&b_id)), 4_000));
    c.sync(
        G,
        &a_id,
        1,
        Some(assign(&[(&a_id, &[0]), (&b_id, &[1])])),
        4_000,
    )
    .unwrap();
    // Later rebalances of the same group are not delayed.
    pending(c.join(G, newcomer.request(None), 5_000));
    pending(c.join(G, a.request(Some(&a_id)), 5_000));
    assert_eq!(
        joined(c.join(G, b.request(Some(&b_id)), 5_000)).generation,
        2
    );
}

#[test]
fn expiry_during_the_initial_delay_leaves_a_new_group_empty() {
    let c = GroupCoordinator::new(GroupLimits {
        initial_rebalance_delay_ms: 3_000,
        ..limits()
    });
    let a = Client::new("a");
    pending(c.join(
        G,
        JoinRequest {
            session_timeout_ms: 1_000,
            ..a.request(None)
        },
        0,
    ));
    assert_eq!(state(&c, 1_000), GroupState::PreparingRebalance);
    assert!(c.snapshot(G, 1_001).is_none());
    assert!(c.active_groups(1_001).is_empty());
}
