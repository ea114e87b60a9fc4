//! Assignor tests: cases ported from Kafka's `RangeAssignorTest`,
//! `RoundRobinAssignorTest` and `AbstractStickyAssignorTest`, then
//! properties every assignor must keep.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

type Assignment = BTreeMap<String, Vec<TopicPartition>>;

fn tp(topic: &str, partition: u32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

fn topics(counts: &[(&str, u32)]) -> BTreeMap<String, u32> {
    counts.iter().map(|(t, n)| (t.to_string(), *n)).collect()
}

fn sub(topics: &[&str]) -> Subscription {
    Subscription::new(topics.iter().copied())
}

fn owning(topics: &[&str], owned: &[TopicPartition], generation: i32) -> Subscription {
    sub(topics)
        .with_owned_partitions(owned.iter().cloned())
        .with_generation(generation)
}

fn members(list: Vec<(&str, Subscription)>) -> BTreeMap<String, Subscription> {
    list.into_iter().map(|(m, s)| (m.to_string(), s)).collect()
}

/// Every partition of every topic someone subscribes to.
fn all_subscribed_partitions(
    counts: &BTreeMap<String, u32>,
    group: &BTreeMap<String, Subscription>,
) -> BTreeSet<TopicPartition> {
    subscribed_topics(counts, group)
        .into_iter()
        .flat_map(|(t, n)| (0..n).map(move |p| TopicPartition::new(t.as_str(), p)))
        .collect()
}

fn set(list: &[TopicPartition]) -> BTreeSet<TopicPartition> {
    list.iter().cloned().collect()
}

fn all() -> Vec<Arc<dyn Assignor>> {
    ["range", "roundrobin", "sticky", "cooperative-sticky"]
        .iter()
        .map(|n| assignor_by_name(n).expect("built in"))
        .collect()
}

/// Structural validity: one entry per member, sorted lists, subscribed
/// topics only, no partition twice, nothing outside the topic's range; and
/// for eager assignors every subscribed partition assigned.
fn check_valid(
    assignor: &dyn Assignor,
    counts: &BTreeMap<String, u32>,
    group: &BTreeMap<String, Subscription>,
    out: &Assignment,
) -> Result<(), TestCaseError> {
    let name = assignor.name();
    prop_assert_eq!(
        out.keys().collect::<Vec<_>>(),
        group.keys().collect::<Vec<_>>(),
        "{}: members",
        name
    );
    let mut seen = BTreeSet::new();
    for (member, list) in out {
        prop_assert!(list.is_sorted(), "{}: {} unsorted", name, member);
        for p in list {
            prop_assert!(
                group[member].subscribes_to(&p.topic),
                "{}: {} got {}",
                name,
                member,
                p
            );
            prop_assert!(
                p.partition < counts[&p.topic],
                "{}: {} out of range",
                name,
                p
            );
            prop_assert!(seen.insert(p.clone()), "{}: {} assigned twice", name, p);
        }
    }
    if assignor.protocol() == RebalanceProtocol::Eager {
        let expected: BTreeSet<TopicPartition> = all_subscribed_partitions(counts, group);
        prop_assert_eq!(seen, expected, "{}: not every partition assigned", name);
    }
    Ok(())
}

fn valid(
    assignor: &dyn Assignor,
    counts: &BTreeMap<String, u32>,
    group: &BTreeMap<String, Subscription>,
) -> Assignment {
    let out = assignor.assign(counts, group);
    check_valid(assignor, counts, group, &out).unwrap();
    out
}

/// Kafka's `verifyValidityAndBalance`: two members whose loads differ by
/// more than one hold no partitions of a common topic.
fn check_kafka_balance(out: &Assignment) -> Result<(), TestCaseError> {
    for (a, la) in out {
        for (b, lb) in out {
            if la.len() > lb.len() + 1 {
                let ta: BTreeSet<&str> = la.iter().map(|p| p.topic.as_str()).collect();
                let tb: BTreeSet<&str> = lb.iter().map(|p| p.topic.as_str()).collect();
                prop_assert!(
                    ta.is_disjoint(&tb),
                    "{} could give {} some of {:?}",
                    a,
                    b,
                    ta
                );
            }
        }
    }
    Ok(())
}

fn spread(out: &Assignment) -> usize {
    let loads = out.values().map(Vec::len);
    loads.clone().max().unwrap_or(0) - loads.min().unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Names and the trait

#[test]
fn names_and_protocols() {
    let names: Vec<_> = all().iter().map(|a| a.name().to_string()).collect();
    assert_eq!(
        names,
        ["range", "roundrobin", "sticky", "cooperative-sticky"]
    );
    let protocols: Vec<_> = all().iter().map(|a| a.protocol()).collect();
    use RebalanceProtocol::{Cooperative, Eager};
    assert_eq!(protocols, [Eager, Eager, Eager, Cooperative]);
    assert!(Eager < Cooperative);
    for class in [
        "RangeAssignor",
        "RoundRobinAssignor",
        "StickyAssignor",
        "CooperativeStickyAssignor",
    ] {
        let a = assignor_by_name(&format!("org.apache.kafka.clients.consumer.{class}")).unwrap();
        assert_eq!(format!("{a:?}"), class);
    }
    assert!(assignor_by_name(" range ").is_some());
    assert!(assignor_by_name("Range").is_none());
    assert!(assignor_by_name("org.apache.kafka.clients.consumer.Nope").is_none());
}

#[test]
fn empty_group_gets_empty_assignment() {
    for a in all() {
        assert!(a.assign(&topics(&[("t", 3)]), &BTreeMap::new()).is_empty());
    }
}

// ---------------------------------------------------------------------------
// Cases every assignor agrees on (Kafka's tests of the same names)

#[test]
fn one_consumer_no_topic() {
    for a in all() {
        let out = valid(&*a, &topics(&[]), &members(vec![("c1", sub(&[]))]));
        assert_eq!(out["c1"], [], "{}", a.name());
    }
}

#[test]
fn one_consumer_nonexistent_topic() {
    for a in all() {
        let counts = topics(&[("other", 2), ("empty", 0)]);
        let out = valid(
            &*a,
            &counts,
            &members(vec![("c1", sub(&["topic", "empty"]))]),
        );
        assert_eq!(out["c1"], [], "{}", a.name());
    }
}

#[test]
fn one_consumer_one_topic_and_only_subscribed_topics() {
    for a in all() {
        let counts = topics(&[("topic", 3), ("other", 3)]);
        let out = valid(&*a, &counts, &members(vec![("c1", sub(&["topic"]))]));
        assert_eq!(
            out["c1"],
            [tp("topic", 0), tp("topic", 1), tp("topic", 2)],
            "{}",
            a.name()
        );
    }
}

#[test]
fn one_consumer_multiple_topics() {
    for a in all() {
        let counts = topics(&[("topic1", 1), ("topic2", 2)]);
        let out = valid(
            &*a,
            &counts,
            &members(vec![("c1", sub(&["topic1", "topic2"]))]),
        );
        assert_eq!(
            out["c1"],
            [tp("topic1", 0), tp("topic2", 0), tp("topic2", 1)],
            "{}",
            a.name()
        );
    }
}

#[test]
fn two_consumers_one_topic_one_or_two_partitions() {
    for a in all() {
        let group = members(vec![("c1", sub(&["topic"])), ("c2", sub(&["topic"]))]);
        let out = valid(&*a, &topics(&[("topic", 1)]), &group);
        assert_eq!(
            (&out["c1"][..], &out["c2"][..]),
            (&[tp("topic", 0)][..], &[][..]),
            "{}",
            a.name()
        );
        let out = valid(&*a, &topics(&[("topic", 2)]), &group);
        assert_eq!(out["c1"], [tp("topic", 0)], "{}", a.name());
        assert_eq!(out["c2"], [tp("topic", 1)], "{}", a.name());
    }
}

#[test]
fn member_without_subscription_gets_nothing() {
    for a in all() {
        let group = members(vec![
            ("a", sub(&[])),
            ("b", sub(&["t"])),
            ("c", sub(&["t"])),
        ]);
        let out = valid(&*a, &topics(&[("t", 4)]), &group);
        assert_eq!(out["a"], [], "{}", a.name());
        assert_eq!((out["b"].len(), out["c"].len()), (2, 2), "{}", a.name());
    }
}

// ---------------------------------------------------------------------------
// RangeAssignorTest

#[test]
fn range_multiple_consumers_mixed_topics() {
    let counts = topics(&[("topic1", 3), ("topic2", 2)]);
    let group = members(vec![
        ("consumer1", sub(&["topic1"])),
        ("consumer2", sub(&["topic1", "topic2"])),
        ("consumer3", sub(&["topic1"])),
    ]);
    let out = valid(&RangeAssignor, &counts, &group);
    assert_eq!(out["consumer1"], [tp("topic1", 0)]);
    assert_eq!(
        out["consumer2"],
        [tp("topic1", 1), tp("topic2", 0), tp("topic2", 1)]
    );
    assert_eq!(out["consumer3"], [tp("topic1", 2)]);
}

#[test]
fn range_two_consumers_two_topics_six_partitions() {
    let counts = topics(&[("topic1", 3), ("topic2", 3)]);
    let both = || sub(&["topic1", "topic2"]);
    let out = valid(
        &RangeAssignor,
        &counts,
        &members(vec![("consumer1", both()), ("consumer2", both())]),
    );
    assert_eq!(
        out["consumer1"],
        [
            tp("topic1", 0),
            tp("topic1", 1),
            tp("topic2", 0),
            tp("topic2", 1)
        ]
    );
    assert_eq!(out["consumer2"], [tp("topic1", 2), tp("topic2", 2)]);
}

#[test]
fn range_static_members_order_by_instance_id() {
    let counts = topics(&[("topic1", 3), ("topic2", 3)]);
    let both = || sub(&["topic1", "topic2"]);
    let first = [
        tp("topic1", 0),
        tp("topic1", 1),
        tp("topic2", 0),
        tp("topic2", 1),
    ];
    let second = [tp("topic1", 2), tp("topic2", 2)];
    // Two static members: "consumer-b" sorts first by instance id.
    let group = members(vec![
        ("consumer-b", both().with_group_instance_id("instance1")),
        ("consumer-a", both().with_group_instance_id("instance2")),
    ]);
    let out = valid(&RangeAssignor, &counts, &group);
    assert_eq!(
        (&out["consumer-b"][..], &out["consumer-a"][..]),
        (&first[..], &second[..])
    );
    // A static member sorts before a dynamic one.
    let group = members(vec![
        ("consumer-b", both().with_group_instance_id("instance1")),
        ("consumer-a", both()),
    ]);
    let out = valid(&RangeAssignor, &counts, &group);
    assert_eq!(
        (&out["consumer-b"][..], &out["consumer-a"][..]),
        (&first[..], &second[..])
    );
}

#[test]
fn range_static_assignment_persists_across_member_changes() {
    let counts = topics(&[("topic1", 5), ("topic2", 4)]);
    let both = || sub(&["topic1", "topic2"]);
    let mut group = members(vec![
        ("consumer1", both().with_group_instance_id("instance1")),
        ("consumer2", both().with_group_instance_id("instance2")),
        ("consumer3", both().with_group_instance_id("instance3")),
        ("consumer4", both()),
    ]);
    let expected = |last: &str| {
        BTreeMap::from([
            (
                "consumer1".to_string(),
                vec![tp("topic1", 0), tp("topic1", 1), tp("topic2", 0)],
            ),
            (
                "consumer2".to_string(),
                vec![tp("topic1", 2), tp("topic2", 1)],
            ),
            (
                "consumer3".to_string(),
                vec![tp("topic1", 3), tp("topic2", 2)],
            ),
            (last.to_string(), vec![tp("topic1", 4), tp("topic2", 3)]),
        ])
    };
    assert_eq!(
        valid(&RangeAssignor, &counts, &group),
        expected("consumer4")
    );
    // The dynamic member is replaced.
    group.remove("consumer4");
    group.insert("consumer5".into(), both());
    assert_eq!(
        valid(&RangeAssignor, &counts, &group),
        expected("consumer5")
    );
    // Static members rejoin under new member ids: same partitions per instance.
    let by_instance = |g: &BTreeMap<String, Subscription>,
                       out: &Assignment|
     -> BTreeMap<String, Vec<TopicPartition>> {
        out.iter()
            .filter_map(|(m, l)| g[m].group_instance_id.clone().map(|i| (i, l.clone())))
            .collect()
    };
    let before = by_instance(&group, &valid(&RangeAssignor, &counts, &group));
    let moved = group.remove("consumer3").unwrap();
    group.insert("consumer0".into(), moved);
    let moved = group.remove("consumer2").unwrap();
    group.insert("consumer9".into(), moved);
    assert_eq!(
        by_instance(&group, &valid(&RangeAssignor, &counts, &group)),
        before
    );
}

#[test]
fn range_co_partitions_topics_with_equal_partition_counts() {
    let counts = topics(&[("clicks", 5), ("users", 5)]);
    let both = || sub(&["clicks", "users"]);
    let out = valid(
        &RangeAssignor,
        &counts,
        &members(vec![("a", both()), ("b", both()), ("c", both())]),
    );
    for list in out.values() {
        let clicks: Vec<u32> = list
            .iter()
            .filter(|p| p.topic == "clicks")
            .map(|p| p.partition)
            .collect();
        let users: Vec<u32> = list
            .iter()
            .filter(|p| p.topic == "users")
            .map(|p| p.partition)
            .collect();
        assert_eq!(clicks, users);
    }
    assert_eq!(out["a"].len(), 4);
}

// ---------------------------------------------------------------------------
// RoundRobinAssignorTest

#[test]
fn round_robin_multiple_consumers_mixed_topics() {
    let counts = topics(&[("topic1", 3), ("topic2", 2)]);
    let group = members(vec![
        ("consumer1", sub(&["topic1"])),
        ("consumer2", sub(&["topic1", "topic2"])),
        ("consumer3", sub(&["topic1"])),
    ]);
    let out = valid(&RoundRobinAssignor, &counts, &group);
    assert_eq!(out["consumer1"], [tp("topic1", 0)]);
    assert_eq!(
        out["consumer2"],
        [tp("topic1", 1), tp("topic2", 0), tp("topic2", 1)]
    );
    assert_eq!(out["consumer3"], [tp("topic1", 2)]);
}

#[test]
fn round_robin_two_consumers_two_topics_six_partitions() {
    let counts = topics(&[("topic1", 3), ("topic2", 3)]);
    let both = || sub(&["topic1", "topic2"]);
    let first = [tp("topic1", 0), tp("topic1", 2), tp("topic2", 1)];
    let second = [tp("topic1", 1), tp("topic2", 0), tp("topic2", 2)];
    let out = valid(
        &RoundRobinAssignor,
        &counts,
        &members(vec![("consumer1", both()), ("consumer2", both())]),
    );
    assert_eq!(
        (&out["consumer1"][..], &out["consumer2"][..]),
        (&first[..], &second[..])
    );
    // Static members: by instance id, not member id.
    let group = members(vec![
        ("consumer-b", both().with_group_instance_id("instance1")),
        ("consumer-a", both().with_group_instance_id("instance2")),
    ]);
    let out = valid(&RoundRobinAssignor, &counts, &group);
    assert_eq!(
        (&out["consumer-b"][..], &out["consumer-a"][..]),
        (&first[..], &second[..])
    );
}

// ---------------------------------------------------------------------------
// AbstractStickyAssignorTest (both sticky assignors unless noted)

fn sticky_pair() -> [Arc<dyn Assignor>; 2] {
    [
        Arc::new(StickyAssignor),
        Arc::new(CooperativeStickyAssignor),
    ]
}

#[test]
fn sticky_multiple_consumers_mixed_topic_subscriptions() {
    let counts = topics(&[("topic1", 3), ("topic2", 2)]);
    let group = members(vec![
        ("consumer1", sub(&["topic1"])),
        ("consumer2", sub(&["topic1", "topic2"])),
        ("consumer3", sub(&["topic1"])),
    ]);
    for a in sticky_pair() {
        let out = valid(&*a, &counts, &group);
        assert_eq!(out["consumer1"], [tp("topic1", 0), tp("topic1", 2)]);
        assert_eq!(out["consumer2"], [tp("topic2", 0), tp("topic2", 1)]);
        assert_eq!(out["consumer3"], [tp("topic1", 1)]);
    }
}

#[test]
fn sticky_two_consumers_two_topics_six_partitions() {
    let counts = topics(&[("topic1", 3), ("topic2", 3)]);
    let both = || sub(&["topic1", "topic2"]);
    for a in sticky_pair() {
        let out = valid(
            &*a,
            &counts,
            &members(vec![("consumer1", both()), ("consumer2", both())]),
        );
        assert_eq!(
            out["consumer1"],
            [tp("topic1", 0), tp("topic1", 2), tp("topic2", 1)]
        );
        assert_eq!(
            out["consumer2"],
            [tp("topic1", 1), tp("topic2", 0), tp("topic2", 2)]
        );
    }
}

#[test]
fn sticky_consumer_owning_min_quota_expected_max_quota() {
    let counts = topics(&[("topic1", 2), ("topic2", 3)]);
    let t = ["topic1", "topic2"];
    let group = members(vec![
        (
            "consumer1",
            owning(&t, &[tp("topic1", 0), tp("topic2", 1)], 1),
        ),
        (
            "consumer2",
            owning(&t, &[tp("topic1", 1), tp("topic2", 2)], 1),
        ),
    ]);
    for a in sticky_pair() {
        let out = valid(&*a, &counts, &group);
        assert_eq!(
            out["consumer1"],
            [tp("topic1", 0), tp("topic2", 0), tp("topic2", 1)]
        );
        assert_eq!(out["consumer2"], [tp("topic1", 1), tp("topic2", 2)]);
    }
}

#[test]
fn sticky_max_quota_owners_exceed_members_expected_at_max() {
    let counts = topics(&[("topic1", 2), ("topic2", 2)]);
    let t = ["topic1", "topic2"];
    let group = members(vec![
        (
            "consumer1",
            owning(&t, &[tp("topic1", 0), tp("topic2", 0)], 1),
        ),
        (
            "consumer2",
            owning(&t, &[tp("topic1", 1), tp("topic2", 1)], 1),
        ),
        ("consumer3", owning(&t, &[], 1)),
    ]);
    // Only one of the two full owners may keep two partitions. Kafka visits
    // members in hash-map order; we visit them by member id, so consumer1
    // keeps both and consumer2 gives up topic2-1.
    let out = valid(&StickyAssignor, &counts, &group);
    assert_eq!(out["consumer1"], [tp("topic1", 0), tp("topic2", 0)]);
    assert_eq!(out["consumer2"], [tp("topic1", 1)]);
    assert_eq!(out["consumer3"], [tp("topic2", 1)]);
    // Cooperative: topic2-1 changes owner, so it waits for the next round.
    let out = valid(&CooperativeStickyAssignor, &counts, &group);
    assert_eq!(out["consumer1"], [tp("topic1", 0), tp("topic2", 0)]);
    assert_eq!(out["consumer2"], [tp("topic1", 1)]);
    assert_eq!(out["consumer3"], []);
}

#[test]
fn sticky_all_consumers_under_min_quota() {
    let counts = topics(&[("topic1", 2), ("topic2", 3)]);
    let t = ["topic1", "topic2"];
    let group = members(vec![
        ("consumer1", owning(&t, &[tp("topic1", 0)], 1)),
        ("consumer2", owning(&t, &[tp("topic1", 1)], 1)),
        ("consumer3", owning(&t, &[], 1)),
    ]);
    for a in sticky_pair() {
        let out = valid(&*a, &counts, &group);
        assert_eq!(out["consumer1"], [tp("topic1", 0), tp("topic2", 1)]);
        assert_eq!(out["consumer2"], [tp("topic1", 1), tp("topic2", 2)]);
        assert_eq!(out["consumer3"], [tp("topic2", 0)]);
    }
}

#[test]
fn sticky_add_remove_consumer_one_topic() {
    let counts = topics(&[("topic", 3)]);
    let t = ["topic"];
    let out = valid(
        &StickyAssignor,
        &counts,
        &members(vec![("consumer1", sub(&t))]),
    );
    assert_eq!(
        out["consumer1"],
        [tp("topic", 0), tp("topic", 1), tp("topic", 2)]
    );

    let group = members(vec![
        ("consumer1", owning(&t, &out["consumer1"], 1)),
        ("consumer2", owning(&t, &[], 1)),
    ]);
    let out = valid(&StickyAssignor, &counts, &group);
    assert_eq!(out["consumer1"], [tp("topic", 0), tp("topic", 1)]);
    assert_eq!(out["consumer2"], [tp("topic", 2)]);

    let group = members(vec![("consumer2", owning(&t, &out["consumer2"], 1))]);
    let out = valid(&StickyAssignor, &counts, &group);
    assert_eq!(
        out["consumer2"],
        [tp("topic", 0), tp("topic", 1), tp("topic", 2)]
    );
}

#[test]
fn sticky_topic_balance_after_reassignment() {
    let counts = topics(&[("topic1", 12), ("topic2", 12)]);
    let t = ["topic1", "topic2"];
    let per_topic = |out: &Assignment, n: usize| {
        for list in out.values() {
            for topic in t {
                assert_eq!(list.iter().filter(|p| p.topic == topic).count(), n);
            }
        }
    };
    for a in sticky_pair() {
        let mut out = valid(&*a, &counts, &members(vec![("consumer1", sub(&t))]));
        per_topic(&out, 12);
        // Grow to 2 then 4 members, then shrink to 2. Cooperative needs a
        // follow-up round after each growth.
        for (names, n) in [
            (&["consumer1", "consumer2"][..], 6),
            (&["consumer1", "consumer2", "consumer3", "consumer4"][..], 3),
            (&["consumer3", "consumer4"][..], 6),
        ] {
            for _round in 0..2 {
                let group: BTreeMap<String, Subscription> = names
                    .iter()
                    .map(|m| {
                        let owned = out.get(*m).cloned().unwrap_or_default();
                        (m.to_string(), owning(&t, &owned, 1))
                    })
                    .collect();
                out = valid(&*a, &counts, &group);
            }
            per_topic(&out, n);
        }
    }
}

#[test]
fn sticky_stickiness_when_a_member_leaves() {
    let counts = topics(&[("topic1", 3)]);
    let t = ["topic1"];
    let group = members(vec![
        ("consumer1", sub(&t)),
        ("consumer2", sub(&t)),
        ("consumer3", sub(&t)),
        ("consumer4", sub(&t)),
    ]);
    let first = valid(&StickyAssignor, &counts, &group);
    assert!(first.values().all(|l| l.len() <= 1));
    let group = members(
        ["consumer2", "consumer3", "consumer4"]
            .into_iter()
            .map(|m| (m, owning(&t, &first[m], 1)))
            .collect(),
    );
    for a in sticky_pair() {
        let out = valid(&*a, &counts, &group);
        for (m, list) in &out {
            assert_eq!(list.len(), 1, "{}", a.name());
            assert!(
                first[m].iter().all(|p| list.contains(p)),
                "{} moved {m}'s partition",
                a.name()
            );
        }
    }
}

#[test]
fn sticky_all_consumers_reach_expected_quota() {
    let counts = topics(&[("topic", 4)]);
    let t = ["topic"];
    let group = members(vec![
        (
            "consumer1",
            owning(&t, &[tp("topic", 0), tp("topic", 1)], 1),
        ),
        ("consumer2", owning(&t, &[tp("topic", 2)], 1)),
        ("consumer3", owning(&t, &[], 1)),
    ]);
    for a in sticky_pair() {
        let out = valid(&*a, &counts, &group);
        assert_eq!(out["consumer1"], [tp("topic", 0), tp("topic", 1)]);
        assert_eq!(out["consumer2"], [tp("topic", 2)]);
        assert_eq!(out["consumer3"], [tp("topic", 3)]);
    }
}

#[test]
fn sticky_claims_of_stale_or_missing_generation_lose() {
    let counts = topics(&[("topic", 3), ("topic2", 3)]);
    let t = ["topic", "topic2"];
    let claimed = [tp("topic", 0), tp("topic", 2), tp("topic2", 1)];
    let rest = [tp("topic", 1), tp("topic2", 0), tp("topic2", 2)];
    for stale in [Some(9), None] {
        let mut loser = owning(&t, &claimed, 0);
        loser.generation = stale;
        let group = members(vec![
            ("consumer1", owning(&t, &claimed, 10)),
            ("consumer2", loser),
        ]);
        for a in sticky_pair() {
            let out = valid(&*a, &counts, &group);
            assert_eq!(out["consumer1"], claimed, "{}", a.name());
            assert_eq!(out["consumer2"], rest, "{}", a.name());
        }
    }
}

#[test]
fn sticky_partition_claimed_twice_in_one_generation_is_transferred() {
    let counts = topics(&[("topic", 3)]);
    let t = ["topic"];
    let group = members(vec![
        (
            "consumer1",
            owning(&t, &[tp("topic", 0), tp("topic", 1)], 1),
        ),
        (
            "consumer2",
            owning(&t, &[tp("topic", 0), tp("topic", 2)], 1),
        ),
        ("consumer3", owning(&t, &[], 1)),
    ]);
    let out = valid(&StickyAssignor, &counts, &group);
    assert_eq!(out["consumer1"], [tp("topic", 1)]);
    assert_eq!(out["consumer2"], [tp("topic", 2)]);
    assert_eq!(out["consumer3"], [tp("topic", 0)]);
    // Cooperative: both claimants must revoke topic-0 first.
    let out = valid(&CooperativeStickyAssignor, &counts, &group);
    assert_eq!(out["consumer3"], []);
}

#[test]
fn sticky_partitions_go_to_highest_generation() {
    let counts = topics(&[("topic", 3), ("topic2", 3), ("topic3", 3)]);
    let t = ["topic", "topic2", "topic3"];
    let group = members(vec![
        (
            "consumer1",
            owning(&t, &[tp("topic", 0), tp("topic2", 0), tp("topic3", 0)], 10),
        ),
        (
            "consumer2",
            owning(&t, &[tp("topic", 1), tp("topic2", 1), tp("topic3", 1)], 9),
        ),
        (
            "consumer3",
            owning(&t, &[tp("topic2", 1), tp("topic3", 0), tp("topic3", 2)], 8),
        ),
    ]);
    for a in sticky_pair() {
        let out = valid(&*a, &counts, &group);
        assert_eq!(
            out["consumer1"],
            [tp("topic", 0), tp("topic2", 0), tp("topic3", 0)]
        );
        assert_eq!(
            out["consumer2"],
            [tp("topic", 1), tp("topic2", 1), tp("topic3", 1)]
        );
        assert_eq!(
            out["consumer3"],
            [tp("topic", 2), tp("topic2", 2), tp("topic3", 2)]
        );
    }
}

#[test]
fn sticky_no_reassignment_on_current_members() {
    let counts = topics(&[("topic", 3), ("topic1", 3), ("topic2", 3), ("topic3", 3)]);
    let t = ["topic", "topic2", "topic3", "topic1"];
    let group = members(vec![
        ("consumer1", sub(&t)),
        (
            "consumer2",
            owning(&t, &[tp("topic", 0), tp("topic2", 0), tp("topic1", 0)], 9),
        ),
        (
            "consumer3",
            owning(&t, &[tp("topic3", 2), tp("topic2", 2), tp("topic1", 1)], 8),
        ),
        (
            "consumer4",
            owning(&t, &[tp("topic3", 1), tp("topic", 1), tp("topic", 2)], 7),
        ),
    ]);
    for a in sticky_pair() {
        let out = valid(&*a, &counts, &group);
        assert_eq!(
            out["consumer1"],
            [tp("topic1", 2), tp("topic2", 1), tp("topic3", 0)]
        );
        assert_eq!(spread(&out), 0);
    }
}

#[test]
fn sticky_claims_across_generations() {
    let counts = topics(&[("topic", 3), ("topic2", 3)]);
    let t = ["topic", "topic2"];
    let group = members(vec![
        (
            "consumer1",
            owning(&t, &[tp("topic", 0), tp("topic2", 1), tp("topic", 1)], 10),
        ),
        (
            "consumer2",
            owning(&t, &[tp("topic", 0), tp("topic2", 1), tp("topic2", 2)], 8),
        ),
    ]);
    for a in sticky_pair() {
        let out = valid(&*a, &counts, &group);
        assert_eq!(
            out["consumer1"],
            [tp("topic", 0), tp("topic", 1), tp("topic2", 1)]
        );
        assert_eq!(
            out["consumer2"],
            [tp("topic", 2), tp("topic2", 0), tp("topic2", 2)]
        );
    }
}

#[test]
fn sticky_unequal_subscriptions_same_partition_in_three_generations() {
    let counts = topics(&[("topic", 6), ("topic1", 1)]);
    for g in [
        [1, 2, 3],
        [1, 3, 2],
        [2, 1, 3],
        [2, 3, 1],
        [3, 1, 2],
        [3, 2, 1],
    ] {
        let group = members(vec![
            (
                "consumer1",
                owning(&["topic"], &[tp("topic", 0), tp("topic", 2)], g[0]),
            ),
            (
                "consumer2",
                owning(
                    &["topic"],
                    &[tp("topic", 1), tp("topic", 2), tp("topic", 3)],
                    g[1],
                ),
            ),
            (
                "consumer3",
                owning(
                    &["topic"],
                    &[tp("topic", 2), tp("topic", 4), tp("topic", 5)],
                    g[2],
                ),
            ),
            ("consumer4", owning(&["topic1"], &[tp("topic1", 0)], 2)),
        ]);
        let out = valid(&StickyAssignor, &counts, &group);
        assert!(
            out.values().all(|l| (1..=2).contains(&l.len())),
            "{g:?}: {out:?}"
        );
    }
}

#[test]
fn sticky_poor_round_robin_scenario_and_moving_existing_assignments() {
    let counts: BTreeMap<String, u32> = (1..=5).map(|i| (format!("topic{i}"), i % 2 + 1)).collect();
    let five = ["topic1", "topic2", "topic3", "topic4", "topic5"];
    let three = ["topic1", "topic3", "topic5"];
    let group = members(vec![
        ("consumer1", sub(&five)),
        ("consumer2", sub(&three)),
        ("consumer3", sub(&three)),
        ("consumer4", sub(&five)),
    ]);
    for a in sticky_pair() {
        check_kafka_balance(&valid(&*a, &counts, &group)).unwrap();
    }

    let counts: BTreeMap<String, u32> = (1..=6).map(|i| (format!("topic{i}"), 1)).collect();
    let group = members(vec![
        (
            "consumer1",
            owning(&["topic1", "topic2"], &[tp("topic1", 0)], 1),
        ),
        (
            "consumer2",
            owning(
                &["topic1", "topic2", "topic3", "topic4"],
                &[tp("topic2", 0), tp("topic3", 0)],
                1,
            ),
        ),
        (
            "consumer3",
            owning(
                &["topic2", "topic3", "topic4", "topic5", "topic6"],
                &[tp("topic4", 0), tp("topic5", 0), tp("topic6", 0)],
                1,
            ),
        ),
    ]);
    for a in sticky_pair() {
        check_kafka_balance(&valid(&*a, &counts, &group)).unwrap();
    }
}

#[test]
fn sticky_reassignment_after_one_consumer_leaves_nested_subscriptions() {
    // consumer i subscribes to topic1..=topic i; topic i has i partitions.
    let counts: BTreeMap<String, u32> = (1..20).map(|i| (format!("topic{i:02}"), i)).collect();
    let subs = |i: u32| Subscription::new((1..=i).map(|j| format!("topic{j:02}")));
    let group: BTreeMap<String, Subscription> = (1..20)
        .map(|i| (format!("consumer{i:02}"), subs(i)))
        .collect();
    let out = valid(&StickyAssignor, &counts, &group);
    check_kafka_balance(&out).unwrap();
    let mut group: BTreeMap<String, Subscription> = group
        .into_iter()
        .map(|(m, s)| {
            let owned = out[&m].clone();
            (m, s.with_owned_partitions(owned).with_generation(1))
        })
        .collect();
    group.remove("consumer10");
    let after = valid(&StickyAssignor, &counts, &group);
    check_kafka_balance(&after).unwrap();
    // Only consumer10's partitions and what balance needs move: most stay.
    let kept: usize = after
        .iter()
        .map(|(m, l)| set(l).intersection(&set(&out[m])).count())
        .sum();
    let stayed: usize = out
        .iter()
        .filter(|(m, _)| *m != "consumer10")
        .map(|(_, l)| l.len())
        .sum();
    assert!(kept * 10 >= stayed * 8, "kept {kept} of {stayed}");
}

#[test]
fn sticky_large_group_uniform_subscription_is_balanced_and_fast() {
    let counts: BTreeMap<String, u32> = (0..20).map(|i| (format!("t{i}"), 50)).collect();
    let topics: Vec<&str> = counts.keys().map(String::as_str).collect();
    let group: BTreeMap<String, Subscription> = (0..150)
        .map(|i| (format!("c{i:03}"), sub(&topics)))
        .collect();
    let out = valid(&StickyAssignor, &counts, &group);
    assert!(spread(&out) <= 1);
}

#[test]
fn cooperative_unequal_subscriptions_withholds_moving_partitions() {
    // "a" owned everything; "b" joins subscribing to one of the two topics.
    let counts = topics(&[("x", 2), ("y", 2)]);
    let owned = [tp("x", 0), tp("x", 1), tp("y", 0), tp("y", 1)];
    let group = members(vec![
        ("a", owning(&["x", "y"], &owned, 1)),
        ("b", owning(&["x"], &[], 1)),
    ]);
    let sticky = valid(&StickyAssignor, &counts, &group);
    let first = valid(&CooperativeStickyAssignor, &counts, &group);
    assert_eq!(sticky["b"].len(), 2);
    assert_eq!(first["b"], []);
    assert_eq!(set(&first["a"]), set(&sticky["a"]));
    let group = members(vec![
        ("a", owning(&["x", "y"], &first["a"], 2)),
        ("b", owning(&["x"], &[], 2)),
    ]);
    let second = valid(&CooperativeStickyAssignor, &counts, &group);
    assert_eq!(second, sticky);
}

// ---------------------------------------------------------------------------
// Properties

const MEMBER_NAMES: [&str; 6] = ["m0", "m1", "m2", "m3", "m4", "m5"];
const TOPIC_NAMES: [&str; 4] = ["t0", "t1", "t2", "t3"];

fn counts_strategy() -> impl Strategy<Value = BTreeMap<String, u32>> {
    proptest::collection::vec(0u32..9, TOPIC_NAMES.len()).prop_map(|ns| {
        TOPIC_NAMES
            .iter()
            .zip(ns)
            .map(|(t, n)| (t.to_string(), n))
            .collect()
    })
}

/// A group of 1..=6 members with random subscriptions and instance ids.
fn group_strategy() -> impl Strategy<Value = BTreeMap<String, Subscription>> {
    proptest::collection::btree_map(
        0..MEMBER_NAMES.len(),
        (
            proptest::sample::subsequence(TOPIC_NAMES.to_vec(), 0..=TOPIC_NAMES.len()),
            proptest::option::weighted(0.3, 0..4usize),
        ),
        1..=MEMBER_NAMES.len(),
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(i, (topics, instance))| {
                let mut s = sub(&topics);
                s.group_instance_id = instance.map(|k| format!("static-{k}-{i}"));
                (MEMBER_NAMES[i].to_string(), s)
            })
            .collect()
    })
}

/// The same group with every member subscribing to the same topics.
fn uniform(
    group: &BTreeMap<String, Subscription>,
    topics: &[&str],
) -> BTreeMap<String, Subscription> {
    group
        .iter()
        .map(|(m, s)| {
            (
                m.clone(),
                Subscription {
                    topics: topics.iter().map(|t| t.to_string()).collect(),
                    ..s.clone()
                },
            )
        })
        .collect()
}

/// Ownership from `previous` for members of `group`, as the coordinator
/// reports it after generation `generation`.
fn with_ownership(
    group: &BTreeMap<String, Subscription>,
    previous: &Assignment,
    generation: i32,
) -> BTreeMap<String, Subscription> {
    group
        .iter()
        .map(|(m, s)| {
            let owned = previous.get(m).cloned().unwrap_or_default();
            (
                m.clone(),
                s.clone()
                    .with_owned_partitions(owned)
                    .with_generation(generation),
            )
        })
        .collect()
}

/// Cooperative rounds until nothing is withheld (at most `max` rounds).
fn cooperative_until_complete(
    counts: &BTreeMap<String, u32>,
    group: &BTreeMap<String, Subscription>,
    mut previous: Assignment,
    max: usize,
) -> Result<(Assignment, usize), TestCaseError> {
    let expected = all_subscribed_partitions(counts, group);
    for round in 1..=max {
        let input = with_ownership(group, &previous, round as i32);
        let out = CooperativeStickyAssignor.assign(counts, &input);
        check_valid(&CooperativeStickyAssignor, counts, &input, &out)?;
        // Never hand a partition to a new owner while its owner still claims it.
        for (m, list) in &out {
            for p in list {
                for (other, s) in &input {
                    prop_assert!(
                        other == m || !s.owned_partitions.contains(p),
                        "round {}: {} given to {} while {} owns it",
                        round,
                        p,
                        m,
                        other
                    );
                }
            }
        }
        let assigned: BTreeSet<TopicPartition> = out.values().flatten().cloned().collect();
        if assigned == expected {
            return Ok((out, round));
        }
        previous = out;
    }
    Err(TestCaseError::fail(format!(
        "not complete after {max} rounds"
    )))
}

proptest! {
    #[test]
    fn prop_every_assignor_is_valid_and_deterministic(counts in counts_strategy(), group in group_strategy()) {
        for a in all() {
            let out = a.assign(&counts, &group);
            check_valid(&*a, &counts, &group, &out)?;
            prop_assert_eq!(&out, &a.assign(&counts, &group), "{} not deterministic", a.name());
        }
    }

    #[test]
    fn prop_identical_subscriptions_are_balanced(counts in counts_strategy(), group in group_strategy()) {
        let group = uniform(&group, &["t0", "t1", "t2"]);
        for a in all() {
            let out = a.assign(&counts, &group);
            check_valid(&*a, &counts, &group, &out)?;
            match a.name() {
                // Range balances each topic on its own.
                "range" => for topic in ["t0", "t1", "t2"] {
                    let per: Vec<usize> = out.values().map(|l| l.iter().filter(|p| p.topic == topic).count()).collect();
                    prop_assert!(per.iter().max().unwrap() - per.iter().min().unwrap() <= 1);
                },
                _ => prop_assert!(spread(&out) <= 1, "{}: {:?}", a.name(), out),
            }
        }
    }

    #[test]
    fn prop_range_co_partitions(n in 0u32..12, group in group_strategy()) {
        // Two topics with the same partition count and the same subscribers.
        let group = uniform(&group, &["t0", "t1"]);
        let counts = topics(&[("t0", n), ("t1", n), ("t2", n + 1)]);
        let out = RangeAssignor.assign(&counts, &group);
        for list in out.values() {
            let t0: Vec<u32> = list.iter().filter(|p| p.topic == "t0").map(|p| p.partition).collect();
            let t1: Vec<u32> = list.iter().filter(|p| p.topic == "t1").map(|p| p.partition).collect();
            prop_assert_eq!(t0, t1);
        }
    }

    #[test]
    fn prop_sticky_general_case_is_balanced(counts in counts_strategy(), group in group_strategy(), previous in group_strategy()) {
        // Ownership from an earlier assignment of another random group.
        let before = StickyAssignor.assign(&counts, &previous);
        let group = with_ownership(&group, &before, 1);
        for a in sticky_pair() {
            let out = a.assign(&counts, &group);
            check_valid(&*a, &counts, &group, &out)?;
            if a.protocol() == RebalanceProtocol::Eager {
                check_kafka_balance(&out)?;
            }
        }
    }

    #[test]
    fn prop_sticky_survives_conflicting_claims(
        counts in counts_strategy(),
        group in group_strategy(),
        claims in proptest::collection::vec((0..6usize, 0..4usize, 0u32..10, proptest::option::of(-2i32..4)), 0..24),
    ) {
        // Arbitrary claims: duplicates, unknown partitions, mixed generations.
        let mut group = group;
        for (m, t, p, generation) in claims {
            if let Some(s) = group.get_mut(MEMBER_NAMES[m]) {
                s.owned_partitions.push(tp(TOPIC_NAMES[t], p));
                s.generation = generation;
            }
        }
        for a in sticky_pair() {
            let out = a.assign(&counts, &group);
            check_valid(&*a, &counts, &group, &out)?;
        }
    }

    #[test]
    fn prop_sticky_moves_only_what_balance_needs(
        counts in counts_strategy(),
        before in group_strategy(),
        after in group_strategy(),
    ) {
        // All members subscribe to the same topics; some leave, some join.
        let topics = ["t0", "t1", "t2", "t3"];
        let before = uniform(&before, &topics);
        let previous = StickyAssignor.assign(&counts, &before);
        let group = with_ownership(&uniform(&after, &topics), &previous, 1);
        let out = StickyAssignor.assign(&counts, &group);
        check_valid(&StickyAssignor, &counts, &group, &out)?;
        prop_assert!(spread(&out) <= 1);
        for (m, list) in &out {
            let owned = set(&group[m].owned_partitions);
            let kept = set(list).intersection(&owned).count();
            // A member keeps as many of its partitions as its new share
            // allows: it loses only |owned - share| when it had too many.
            prop_assert_eq!(kept, owned.len().min(list.len()), "{} kept {} of {:?}: {:?}", m, kept, owned, list);
        }
        // Same input again: nothing moves.
        let again = StickyAssignor.assign(&counts, &with_ownership(&group, &out, 2));
        prop_assert_eq!(again, out);
    }

    #[test]
    fn prop_cooperative_reaches_sticky_balance_in_two_rounds(
        counts in counts_strategy(),
        before in group_strategy(),
        after in group_strategy(),
    ) {
        let topics = ["t0", "t1", "t2", "t3"];
        let previous = StickyAssignor.assign(&counts, &uniform(&before, &topics));
        let group = uniform(&after, &topics);
        let (out, rounds) = cooperative_until_complete(&counts, &group, previous.clone(), 2)?;
        prop_assert!(rounds <= 2);
        prop_assert!(spread(&out) <= 1);
        let sticky = StickyAssignor.assign(&counts, &with_ownership(&group, &previous, 1));
        let loads = |a: &Assignment| { let mut v: Vec<usize> = a.values().map(Vec::len).collect(); v.sort(); v };
        prop_assert_eq!(loads(&out), loads(&sticky));
    }

    #[test]
    fn prop_cooperative_general_case_converges(
        counts in counts_strategy(),
        before in group_strategy(),
        after in group_strategy(),
    ) {
        let previous = StickyAssignor.assign(&counts, &before);
        let (out, _) = cooperative_until_complete(&counts, &after, previous, 4)?;
        check_kafka_balance(&out)?;
    }
}
