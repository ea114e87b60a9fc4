//! Random runs of up to five clients joining, syncing (the leader assigns
//! partitions round-robin), heartbeating, committing, leaving, restarting
//! and letting the clock run, with the group's invariants checked after
//! every step against the coordinator's own state.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;

const CLIENTS: usize = 5;
const PARTITIONS: u32 = 6;
/// Clients `d` and `e` are static members.
const NAMES: [&str; CLIENTS] = ["a", "b", "c", "d", "e"];
const INSTANCES: [Option<&str>; CLIENTS] = [None, None, None, Some("worker-d"), Some("worker-e")];

#[derive(Debug, Clone)]
enum Op {
    /// What a consumer's poll loop would do next: join if it must, sync
    /// if it has not, heartbeat otherwise.
    Poll(usize),
    Join(usize),
    Sync(usize),
    Heartbeat(usize),
    Commit(usize),
    Leave(usize),
    /// The process restarts: it forgets its member id without leaving.
    Restart(usize),
    /// The process a static member's restart replaced calls in.
    Zombie(usize),
    Advance(i64),
}

/// An operation by one of the first `clients` clients.
fn op(clients: usize) -> impl Strategy<Value = Op> {
    let client = move || 0..clients;
    prop_oneof![
        8 => client().prop_map(Op::Poll),
        4 => client().prop_map(Op::Join),
        4 => client().prop_map(Op::Sync),
        2 => client().prop_map(Op::Heartbeat),
        1 => client().prop_map(Op::Commit),
        1 => client().prop_map(Op::Leave),
        1 => client().prop_map(Op::Restart),
        1 => client().prop_map(Op::Zombie),
        2 => prop_oneof![0i64..3_000, 3_000i64..12_000].prop_map(Op::Advance),
    ]
}

/// What one client process knows.
struct Sim {
    index: usize,
    client: Client,
    member_id: Option<String>,
    generation: i32,
    /// The members to assign to, when the last join named this client the
    /// leader.
    leads: Option<Vec<String>>,
    /// Whether the client knows it must (re)join.
    rejoin: bool,
    /// The generation the client last got an assignment for.
    synced: Option<i32>,
    /// A static member's id from before a restart, until its replacement
    /// has joined.
    restarted_from: Option<(String, i32)>,
    /// The id a static restart replaced: it must never work again.
    zombie: Option<(String, i32)>,
}

impl Sim {
    fn new(index: usize) -> Self {
        let client = match INSTANCES[index] {
            Some(instance) => Client::with_instance(NAMES[index], instance),
            None => Client::new(NAMES[index]),
        };
        Sim {
            index,
            client,
            member_id: None,
            generation: -1,
            leads: None,
            rejoin: true,
            synced: None,
            restarted_from: None,
            zombie: None,
        }
    }

    fn request(&self, member_id: Option<&str>) -> JoinRequest {
        let i = self.index;
        let protocols = if i.is_multiple_of(2) {
            ["range", "roundrobin"]
        } else {
            ["roundrobin", "range"]
        };
        JoinRequest {
            session_timeout_ms: 6_000 + 1_000 * i as i64,
            rebalance_timeout_ms: 8_000,
            protocols: protocols.map(String::from).to_vec(),
            ..self.client.request(member_id)
        }
    }

    fn forget(&mut self) {
        self.member_id = None;
        self.generation = -1;
        self.leads = None;
        self.rejoin = true;
        self.synced = None;
    }
}

/// The harness: the clients, the clock and what leaders assigned.
struct Harness {
    c: GroupCoordinator,
    sims: Vec<Sim>,
    now: i64,
    /// Per generation of the group's current incarnation: the partition
    /// lists the leader's accepted sync handed out.
    sent: BTreeMap<i32, Vec<Vec<TopicPartition>>>,
    last_generation: Option<i32>,
}

fn round_robin(members: &[String]) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut out: BTreeMap<String, Vec<TopicPartition>> =
        members.iter().map(|m| (m.clone(), Vec::new())).collect();
    for p in 0..PARTITIONS {
        let owner = &members[p as usize % members.len()];
        out.get_mut(owner).expect("a member").push(tp(p));
    }
    out
}

/// The group as the coordinator holds it, without applying the clock.
struct Raw {
    state: GroupState,
    generation: i32,
    members: BTreeMap<String, Vec<TopicPartition>>,
}

impl Harness {
    fn raw(&self) -> Option<Raw> {
        let groups = self.c.groups.lock();
        groups.get(G).map(|g| Raw {
            state: g.state,
            generation: g.generation,
            members: g
                .members
                .iter()
                .map(|(id, m)| (id.clone(), m.assignment.clone()))
                .collect(),
        })
    }

    fn is_member(&self, id: &str) -> bool {
        self.raw().is_some_and(|r| r.members.contains_key(id))
    }

    fn apply(&mut self, op: &Op) {
        let now = self.now;
        match *op {
            Op::Advance(ms) => self.now += ms,
            Op::Join(i) => self.join(i, now),
            Op::Sync(i) => self.sync(i, now),
            Op::Heartbeat(i) => self.heartbeat(i, now),
            Op::Poll(i) => {
                let sim = &self.sims[i];
                if sim.rejoin || sim.member_id.is_none() {
                    self.join(i, now);
                } else if sim.synced != Some(sim.generation) {
                    self.sync(i, now);
                } else {
                    self.heartbeat(i, now);
                }
            }
            Op::Commit(i) => {
                let sim = &self.sims[i];
                let Some(id) = sim.member_id.clone() else {
                    return;
                };
                let generation = sim.generation;
                let result = commit(&self.c, Some((&id, generation)), now);
                let raw = self.raw();
                match result {
                    Ok(()) => {
                        let raw = raw.expect("a commit succeeded, so the group exists");
                        assert!(raw.members.contains_key(&id));
                        assert_eq!(raw.generation, generation);
                        assert_ne!(raw.state, GroupState::CompletingRebalance);
                    }
                    Err(Error::RebalanceInProgress { .. }) => {
                        assert_eq!(raw.map(|r| r.state), Some(GroupState::CompletingRebalance));
                    }
                    Err(Error::CommitFailed { .. }) => {
                        assert!(raw.is_none_or(
                            |r| r.generation != generation || !r.members.contains_key(&id)
                        ));
                    }
                    Err(e) => panic!("commit: {e}"),
                }
            }
            Op::Leave(i) => {
                if let Some(id) = self.sims[i].member_id.clone() {
                    self.c.leave(G, &id, now);
                    assert!(!self.is_member(&id));
                    self.sims[i].forget();
                }
            }
            Op::Restart(i) => {
                let sim = &mut self.sims[i];
                if INSTANCES[i].is_some()
                    && let Some(id) = sim.member_id.clone()
                {
                    sim.restarted_from = Some((id, sim.generation));
                }
                sim.forget();
            }
            Op::Zombie(i) => {
                let Some((old, generation)) = self.sims[i].zombie.clone() else {
                    return;
                };
                let instance = INSTANCES[i];
                // Apply the clock first: only the zombie's effect counts.
                self.c.snapshot(G, now);
                let before = self.raw().map(|r| (r.state, r.generation, r.members));
                assert!(
                    self.c
                        .heartbeat(G, &old, instance, generation, now)
                        .is_err()
                );
                assert!(self.c.sync(G, &old, generation, None, now).is_err());
                assert!(commit(&self.c, Some((&old, generation)), now).is_err());
                let err = self
                    .c
                    .join(G, self.sims[i].request(Some(&old)), now)
                    .expect_err("a replaced static member cannot rejoin");
                assert!(
                    matches!(
                        err,
                        Error::FencedInstanceId { .. } | Error::UnknownMemberId { .. }
                    ),
                    "{err}"
                );
                let after = self.raw().map(|r| (r.state, r.generation, r.members));
                assert_eq!(before, after, "the zombie changed the group");
            }
        }
    }

    fn heartbeat(&mut self, i: usize, now: i64) {
        let sim = &self.sims[i];
        let Some(id) = sim.member_id.clone() else {
            return;
        };
        let result = self.c.heartbeat(G, &id, INSTANCES[i], sim.generation, now);
        let raw = self.raw();
        match result {
            Ok(()) => {
                let raw = raw.expect("a heartbeat succeeded, so the group exists");
                assert!(raw.members.contains_key(&id));
                assert_eq!(raw.generation, self.sims[i].generation);
                assert!(matches!(
                    raw.state,
                    GroupState::CompletingRebalance | GroupState::Stable
                ));
            }
            Err(Error::RebalanceInProgress { .. }) => {
                assert_eq!(raw.map(|r| r.state), Some(GroupState::PreparingRebalance));
                self.sims[i].rejoin = true;
            }
            Err(Error::IllegalGeneration { .. }) => {
                assert_ne!(raw.map(|r| r.generation), Some(self.sims[i].generation));
                self.sims[i].rejoin = true;
            }
            Err(Error::UnknownMemberId { .. } | Error::FencedInstanceId { .. }) => {
                assert!(!self.is_member(&id));
                self.sims[i].forget();
            }
            Err(e) => panic!("heartbeat: {e}"),
        }
    }

    fn join(&mut self, i: usize, now: i64) {
        let sim = &self.sims[i];
        let known = sim.member_id.clone();
        let result = self.c.join(G, sim.request(known.as_deref()), now);
        let sim = &mut self.sims[i];
        let id = match result {
            Ok(JoinResponse::Pending { member_id }) => {
                sim.leads = None;
                sim.rejoin = true;
                member_id
            }
            Ok(JoinResponse::Joined(j)) => {
                sim.rejoin = false;
                assert!(["range", "roundrobin"].contains(&j.protocol.as_str()));
                sim.generation = j.generation;
                if j.leader == j.member_id {
                    sim.leads = Some(j.members.keys().cloned().collect());
                } else {
                    assert!(j.members.is_empty(), "only the leader sees subscriptions");
                    sim.leads = None;
                }
                j.member_id
            }
            Err(Error::UnknownMemberId { .. } | Error::FencedInstanceId { .. }) => {
                assert!(known.is_some());
                sim.forget();
                return;
            }
            Err(e) => panic!("join: {e}"),
        };
        if let Some(known) = &known {
            assert_eq!(&id, known, "a member keeps its id");
        }
        sim.member_id = Some(id.clone());
        if let Some((old, generation)) = sim.restarted_from.take()
            && old != id
        {
            sim.zombie = Some((old, generation));
        }
        assert!(self.is_member(&id));
    }

    fn sync(&mut self, i: usize, now: i64) {
        let sim = &self.sims[i];
        let Some(id) = sim.member_id.clone() else {
            return;
        };
        let generation = sim.generation;
        let assignment = sim.leads.as_deref().map(round_robin);
        let result = self.c.sync(G, &id, generation, assignment.clone(), now);
        let raw = self.raw();
        match result {
            Ok(SyncResponse::Assigned(parts)) => {
                let raw = raw.expect("a sync succeeded, so the group exists");
                assert_eq!(raw.state, GroupState::Stable);
                assert_eq!(raw.generation, generation);
                assert_eq!(raw.members[&id], parts);
                self.sims[i].synced = Some(generation);
                if let Some(assignment) = assignment {
                    self.sent
                        .entry(generation)
                        .or_insert_with(|| assignment.into_values().collect());
                }
            }
            Ok(SyncResponse::Pending) => {
                let raw = raw.expect("a sync is pending, so the group exists");
                assert_eq!(raw.state, GroupState::CompletingRebalance);
                assert!(
                    self.sims[i].leads.is_none(),
                    "the leader's sync never waits"
                );
            }
            Err(Error::RebalanceInProgress { .. }) => {
                assert_eq!(raw.map(|r| r.state), Some(GroupState::PreparingRebalance));
                self.sims[i].rejoin = true;
            }
            Err(Error::IllegalGeneration { .. }) => {
                assert_ne!(raw.map(|r| r.generation), Some(generation));
                self.sims[i].rejoin = true;
            }
            Err(Error::UnknownMemberId { .. }) => {
                assert!(!self.is_member(&id));
                self.sims[i].forget();
            }
            Err(e) => panic!("sync: {e}"),
        }
    }

    fn actor(op: &Op) -> Option<usize> {
        match *op {
            Op::Poll(i)
            | Op::Join(i)
            | Op::Sync(i)
            | Op::Heartbeat(i)
            | Op::Commit(i)
            | Op::Leave(i)
            | Op::Restart(i)
            | Op::Zombie(i) => Some(i),
            Op::Advance(_) => None,
        }
    }

    /// The invariants, on the coordinator's state after a step.
    fn check(&mut self, before: Option<(GroupState, i32)>, op: &Op) {
        let groups = self.c.groups.lock();
        let Some(g) = groups.get(G) else {
            // Only a group that never formed a generation is dropped.
            assert_eq!(
                self.last_generation.unwrap_or(0),
                0,
                "a formed group was dropped"
            );
            self.sent.clear();
            return;
        };
        assert_ne!(g.state, GroupState::Dead);
        if let Some(last) = self.last_generation {
            assert!(g.generation >= last, "generation went back");
        }
        self.last_generation = Some(g.generation);
        if g.members.is_empty() {
            // An emptied group keeps its generation, so a new member's
            // generations continue from it.
            assert_eq!(g.state, GroupState::Empty);
            assert!(
                g.generation > 0,
                "a group without members and generations is dropped"
            );
            assert!(g.leader.is_none());
            self.sent.clear();
            return;
        }
        assert_ne!(g.state, GroupState::Empty);

        // At most one leader, and it is a member.
        if let Some(leader) = &g.leader {
            assert!(g.members.contains_key(leader), "the leader is not a member");
        }
        let believers: Vec<&String> = self
            .sims
            .iter()
            .filter(|s| s.leads.is_some() && s.generation == g.generation)
            .filter_map(|s| s.member_id.as_ref())
            .filter(|id| g.members.contains_key(*id))
            .collect();
        assert!(believers.len() <= 1, "two leaders: {believers:?}");
        if let Some(believer) = believers.first() {
            assert_eq!(g.leader.as_ref(), Some(*believer));
        }

        // Static members and the instance table agree.
        for (instance, id) in &g.instances {
            assert_eq!(
                g.members[id].instance_id.as_deref(),
                Some(instance.as_str())
            );
        }
        for (id, m) in &g.members {
            if let Some(instance) = &m.instance_id {
                assert_eq!(g.instances.get(instance), Some(id));
            }
        }

        match g.state {
            GroupState::CompletingRebalance | GroupState::Stable => {
                assert!(g.leader.is_some());
                assert!(g.protocol.is_some());
                assert!(g.members.values().all(|m| m.joined));
            }
            _ => {}
        }
        if g.state == GroupState::CompletingRebalance {
            assert!(g.members.values().all(|m| m.assignment.is_empty()));
        }
        if g.state == GroupState::Stable {
            // Every assignment is the leader's for this generation, and
            // no partition has two owners.
            let mut have: Vec<Vec<TopicPartition>> =
                g.members.values().map(|m| m.assignment.clone()).collect();
            have.sort();
            let mut want = self
                .sent
                .get(&g.generation)
                .cloned()
                .expect("a Stable generation had its leader's sync");
            want.sort();
            assert_eq!(have, want);
            let all: Vec<&TopicPartition> = have.iter().flatten().collect();
            let unique: BTreeSet<&TopicPartition> = all.iter().copied().collect();
            assert_eq!(all.len(), unique.len(), "a partition has two owners");
        }

        // A state change wakes every other member.
        if before != Some((g.state, g.generation)) {
            let actor = Self::actor(op);
            let woken: BTreeSet<usize> = g
                .members
                .values()
                .filter_map(|m| {
                    self.sims
                        .iter()
                        .position(|s| s.client.tx.same_channel(&m.waker))
                })
                .filter(|&s| Some(s) != actor)
                .collect();
            for s in woken {
                assert!(
                    self.sims[s].client.woken(),
                    "client {} was not woken",
                    NAMES[s]
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn membership_invariants_hold_after_every_step(
        delay in prop_oneof![Just(0i64), Just(2_000i64)],
        ops in (1..=CLIENTS).prop_flat_map(|n| proptest::collection::vec(op(n), 1..80)),
    ) {
        let mut h = Harness {
            c: GroupCoordinator::new(GroupLimits {
                initial_rebalance_delay_ms: delay,
                ..limits()
            }),
            sims: (0..CLIENTS).map(Sim::new).collect(),
            now: 0,
            sent: BTreeMap::new(),
            last_generation: None,
        };
        for op in &ops {
            let before = h.raw().map(|r| (r.state, r.generation));
            for sim in &h.sims {
                sim.client.woken();
            }
            h.apply(op);
            h.check(before, op);
        }
    }
}
