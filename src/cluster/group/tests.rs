//! Unit tests of the membership state machine, on a hand-driven clock.

use super::*;

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
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 30_000,
        protocols: vec!["range".into()],
        subscription: Subscription::new(["t"]),
        waker: waker.clone(),
    }
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
