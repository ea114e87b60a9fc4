//! The AdminClient group calls: describe a group (state and lag), reset its
//! offsets to each kind of target, list groups; bad input changes nothing;
//! reset offsets survive a reopen. (Refusals while a group has members
//! need a member, so they are unit tests in `src/cluster/admin.rs`.)

mod common;

use std::collections::BTreeMap;

use logbus::{
    Cluster, ClusterConfig, Error, GroupState, NewTopic, OffsetAndMetadata, OffsetSpec, Result,
    TopicPartition,
};

use common::batch_with_timestamps;

type Offsets = BTreeMap<TopicPartition, OffsetAndMetadata>;
type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn open(dir: &std::path::Path) -> Result<Cluster> {
    Cluster::open(dir, ClusterConfig::default())
}

fn tp(topic: &str, partition: u32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

/// Topic `t`: partition 0 holds offsets 0..10 with timestamps 1 000,
/// 1 010, ..., 1 090; partition 1 holds offsets 0..5 at 2 000..2 004.
/// Topic `u`: one partition with 3 records.
fn topics(cluster: &Cluster) -> Result<()> {
    let t = cluster.create_topic(NewTopic::new("t", 2))?;
    let stamps: Vec<i64> = (0..10).map(|i| 1_000 + 10 * i).collect();
    t.partition(0)?
        .append(&mut batch_with_timestamps(&stamps))?;
    t.partition(1)?.append(&mut batch_with_timestamps(&[
        2_000, 2_001, 2_002, 2_003, 2_004,
    ]))?;
    cluster
        .create_topic(NewTopic::new("u", 1))?
        .partition(0)?
        .append(&mut batch_with_timestamps(&[1, 2, 3]))?;
    Ok(())
}

fn commits(entries: &[(&str, u32, u64)]) -> Offsets {
    entries
        .iter()
        .map(|&(t, p, o)| (tp(t, p), OffsetAndMetadata::new(o).with_metadata("old")))
        .collect()
}

fn offsets_of(cluster: &Cluster, group: &str) -> Result<Vec<(TopicPartition, u64)>> {
    Ok(cluster
        .list_group_offsets(group)?
        .into_iter()
        .map(|(tp, m)| (tp, m.offset))
        .collect())
}

/// `(partition, committed, log end offset, lag)`: a row of a description.
type LagRow = (TopicPartition, Option<u64>, u64, Option<u64>);

/// The lag rows of `group`'s description.
fn lag_rows(cluster: &Cluster, group: &str) -> Result<Vec<LagRow>> {
    Ok(cluster
        .describe_group(group)?
        .offsets
        .into_iter()
        .map(|l| {
            let committed = l.committed.map(|c| c.offset);
            (l.partition, committed, l.log_end_offset, l.lag)
        })
        .collect())
}

/// Records in `__consumer_offsets`, to show that a refused call wrote
/// nothing.
fn offsets_topic_records(cluster: &Cluster) -> Result<u64> {
    let Ok(topic) = cluster.topic("__consumer_offsets") else {
        return Ok(0);
    };
    topic.partitions()?.iter().map(|p| p.high_watermark()).sum()
}

#[test]
fn a_group_with_neither_members_nor_offsets_is_dead() -> TestResult {
    let dir = tempfile::tempdir()?;
    let cluster = open(dir.path())?;
    topics(&cluster)?;
    let d = cluster.describe_group("nobody")?;
    assert_eq!(d.group_id, "nobody");
    assert_eq!(d.state, GroupState::Dead);
    assert_eq!(d.protocol_type, "");
    assert_eq!((d.assignor, d.generation), (None, 0));
    assert!(d.members.is_empty() && d.offsets.is_empty());
    assert!(cluster.list_groups().is_empty());
    let err = cluster.describe_group("").unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");

    // A deleted group is dead again.
    cluster.alter_group_offsets("g", &commits(&[("t", 0, 1)]))?;
    assert_eq!(cluster.describe_group("g")?.state, GroupState::Empty);
    cluster.delete_group("g")?;
    assert_eq!(cluster.describe_group("g")?.state, GroupState::Dead);
    Ok(())
}

#[test]
fn a_group_with_only_commits_is_empty_and_lags_behind_appends() -> TestResult {
    let dir = tempfile::tempdir()?;
    let cluster = open(dir.path())?;
    topics(&cluster)?;
    // u-0 is committed past its end (3): its lag is 0, not negative.
    cluster.alter_group_offsets("g", &commits(&[("t", 0, 4), ("t", 1, 5), ("u", 0, 7)]))?;
    let d = cluster.describe_group("g")?;
    assert_eq!(d.state, GroupState::Empty);
    assert_eq!(d.protocol_type, "");
    assert!(d.members.is_empty());
    assert_eq!(
        d.offsets[0].committed.as_ref().map(|c| c.metadata.as_str()),
        Some("old")
    );
    assert_eq!(
        lag_rows(&cluster, "g")?,
        [
            (tp("t", 0), Some(4), 10, Some(6)),
            (tp("t", 1), Some(5), 5, Some(0)),
            (tp("u", 0), Some(7), 3, Some(0)),
        ]
    );
    // New records raise the lag.
    cluster
        .topic("t")?
        .partition(1)?
        .append(&mut batch_with_timestamps(&[3_000, 3_001, 3_002]))?;
    assert_eq!(
        lag_rows(&cluster, "g")?[1],
        (tp("t", 1), Some(5), 8, Some(3))
    );
    assert_eq!(cluster.list_groups(), ["g"]);
    Ok(())
}

#[test]
fn resets_move_offsets_to_each_kind_of_target() -> TestResult {
    let dir = tempfile::tempdir()?;
    let cluster = open(dir.path())?;
    topics(&cluster)?;
    assert_eq!(cluster.topic("t")?.partition(0)?.delete_records(3)?, 3);
    cluster.alter_group_offsets("g", &commits(&[("t", 0, 5), ("t", 1, 2)]))?;
    let (t0, t1) = (tp("t", 0), tp("t", 1));
    let reset = |partitions: &[TopicPartition], to| -> Result<Vec<(TopicPartition, u64)>> {
        Ok(cluster
            .reset_group_offsets("g", partitions, to)?
            .into_iter()
            .collect())
    };

    // No partitions named: every partition with a commit.
    let earliest = reset(&[], OffsetSpec::Earliest)?;
    assert_eq!(earliest, [(t0.clone(), 3), (t1.clone(), 0)]);
    assert_eq!(offsets_of(&cluster, "g")?, earliest);
    let stored = cluster.list_group_offsets("g")?;
    assert!(stored.values().all(|m| m.metadata.is_empty()), "{stored:?}");

    assert_eq!(
        reset(&[], OffsetSpec::Latest)?,
        [(t0.clone(), 10), (t1.clone(), 5)]
    );
    // Offsets are clamped into [log start, high watermark].
    assert_eq!(
        reset(&[], OffsetSpec::Offset(7))?,
        [(t0.clone(), 7), (t1.clone(), 5)]
    );
    assert_eq!(
        reset(std::slice::from_ref(&t0), OffsetSpec::Offset(1))?,
        [(t0.clone(), 3)]
    );
    assert_eq!(
        offsets_of(&cluster, "g")?,
        [(t0.clone(), 3), (t1.clone(), 5)],
        "only the named partition moved"
    );
    assert_eq!(
        reset(std::slice::from_ref(&t0), OffsetSpec::Offset(10))?,
        [(t0.clone(), 10)]
    );

    // Timestamps: the first record at or after the time, from the log start.
    assert_eq!(
        reset(std::slice::from_ref(&t0), OffsetSpec::Timestamp(1_045))?,
        [(t0.clone(), 5)]
    );
    assert_eq!(
        reset(std::slice::from_ref(&t0), OffsetSpec::Timestamp(1_050))?,
        [(t0.clone(), 5)]
    );
    assert_eq!(
        reset(std::slice::from_ref(&t0), OffsetSpec::Timestamp(0))?,
        [(t0.clone(), 3)]
    );
    assert_eq!(
        reset(&[t1.clone(), t1.clone()], OffsetSpec::Timestamp(2_002))?,
        [(t1.clone(), 2)]
    );
    // After the last record: the high watermark.
    assert_eq!(
        reset(&[], OffsetSpec::Timestamp(5_000))?,
        [(t0.clone(), 10), (t1.clone(), 5)]
    );
    // A partition the group never committed gets a commit.
    assert_eq!(reset(&[tp("u", 0)], OffsetSpec::Latest)?, [(tp("u", 0), 3)]);
    assert_eq!(
        offsets_of(&cluster, "g")?,
        [(t0, 10), (t1, 5), (tp("u", 0), 3)]
    );

    // A group without commits has nothing to reset, and is not created.
    let written = offsets_topic_records(&cluster)?;
    assert!(
        cluster
            .reset_group_offsets("h", &[], OffsetSpec::Earliest)?
            .is_empty()
    );
    assert_eq!(cluster.list_groups(), ["g"]);
    assert_eq!(offsets_topic_records(&cluster)?, written);
    Ok(())
}

#[test]
fn shifts_and_dry_runs_plan_from_the_committed_offsets() -> TestResult {
    let dir = tempfile::tempdir()?;
    let cluster = open(dir.path())?;
    topics(&cluster)?;
    assert_eq!(cluster.topic("t")?.partition(0)?.delete_records(3)?, 3);
    cluster.alter_group_offsets("g", &commits(&[("t", 0, 5), ("t", 1, 2)]))?;
    let (t0, t1) = (tp("t", 0), tp("t", 1));
    let written = offsets_topic_records(&cluster)?;
    let plan = |partitions: &[TopicPartition], to| -> Result<Vec<(TopicPartition, u64)>> {
        Ok(cluster
            .reset_group_offsets_dry_run("g", partitions, to)?
            .into_iter()
            .collect())
    };

    // Shifts move from each committed offset, clamped into [log start,
    // high watermark]; a dry run commits nothing.
    assert_eq!(
        plan(&[], OffsetSpec::ShiftBy(-1))?,
        [(t0.clone(), 4), (t1.clone(), 1)]
    );
    assert_eq!(
        plan(&[], OffsetSpec::ShiftBy(-4))?,
        [(t0.clone(), 3), (t1.clone(), 0)]
    );
    assert_eq!(
        plan(&[], OffsetSpec::ShiftBy(4))?,
        [(t0.clone(), 9), (t1.clone(), 5)]
    );
    assert_eq!(
        plan(&[], OffsetSpec::ShiftBy(i64::MAX))?,
        [(t0.clone(), 10), (t1.clone(), 5)]
    );
    assert_eq!(
        plan(&[], OffsetSpec::Latest)?,
        [(t0.clone(), 10), (t1.clone(), 5)]
    );
    assert_eq!(
        offsets_of(&cluster, "g")?,
        [(t0.clone(), 5), (t1.clone(), 2)]
    );
    assert_eq!(offsets_topic_records(&cluster)?, written);

    // The same plan, executed.
    let executed: Vec<_> = cluster
        .reset_group_offsets("g", &[], OffsetSpec::ShiftBy(-1))?
        .into_iter()
        .collect();
    assert_eq!(executed, [(t0.clone(), 4), (t1.clone(), 1)]);
    assert_eq!(offsets_of(&cluster, "g")?, executed);

    // Shifting a partition without a commit spoils the whole reset.
    let written = offsets_topic_records(&cluster)?;
    for dry_run in [true, false] {
        let partitions = [t0.clone(), tp("u", 0)];
        let err = if dry_run {
            cluster.reset_group_offsets_dry_run("g", &partitions, OffsetSpec::ShiftBy(1))
        } else {
            cluster.reset_group_offsets("g", &partitions, OffsetSpec::ShiftBy(1))
        }
        .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }
    assert_eq!(offsets_of(&cluster, "g")?, executed);
    assert_eq!(offsets_topic_records(&cluster)?, written);

    // A read-only view plans; it cannot reset.
    cluster.close()?;
    let view = Cluster::open_read_only(dir.path(), ClusterConfig::default())?;
    let planned: Vec<_> = view
        .reset_group_offsets_dry_run("g", &[], OffsetSpec::Earliest)?
        .into_iter()
        .collect();
    assert_eq!(planned, [(t0, 3), (t1, 0)]);
    let err = view
        .reset_group_offsets("g", &[], OffsetSpec::Earliest)
        .unwrap_err();
    assert!(matches!(err, Error::ReadOnly { .. }), "{err}");
    assert_eq!(offsets_of(&view, "g")?, executed);
    Ok(())
}

#[test]
fn bad_resets_are_refused_and_change_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let cluster = open(dir.path())?;
    topics(&cluster)?;
    cluster.alter_group_offsets("g", &commits(&[("t", 0, 4), ("t", 1, 2)]))?;
    let before = cluster.list_group_offsets("g")?;
    let written = offsets_topic_records(&cluster)?;
    let unchanged = |cluster: &Cluster| -> TestResult {
        assert_eq!(cluster.list_group_offsets("g")?, before);
        assert_eq!(cluster.list_groups(), ["g"]);
        assert_eq!(offsets_topic_records(cluster)?, written);
        Ok(())
    };

    for partitions in [vec![], vec![tp("t", 0)]] {
        let err = cluster
            .reset_group_offsets("g", &partitions, OffsetSpec::Timestamp(-1))
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }
    unchanged(&cluster)?;
    // One unknown partition spoils the whole reset.
    let err = cluster
        .reset_group_offsets("g", &[tp("t", 0), tp("t", 7)], OffsetSpec::Earliest)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnknownTopicOrPartition {
                partition: Some(7),
                ..
            }
        ),
        "{err}"
    );
    let err = cluster
        .reset_group_offsets("g", &[tp("nope", 0), tp("t", 1)], OffsetSpec::Latest)
        .unwrap_err();
    assert!(
        matches!(err, Error::UnknownTopicOrPartition { .. }),
        "{err}"
    );
    unchanged(&cluster)?;
    let err = cluster
        .reset_group_offsets("", &[tp("t", 0)], OffsetSpec::Earliest)
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    unchanged(&cluster)?;

    // A topic deleted under the group: its commits go, the reset of the
    // rest works, and naming it is refused.
    cluster.delete_topic("u")?;
    let err = cluster
        .reset_group_offsets("g", &[tp("u", 0)], OffsetSpec::Earliest)
        .unwrap_err();
    assert!(
        matches!(err, Error::UnknownTopicOrPartition { .. }),
        "{err}"
    );
    unchanged(&cluster)?;

    cluster.close()?;
    let err = cluster
        .reset_group_offsets("g", &[], OffsetSpec::Earliest)
        .unwrap_err();
    assert!(matches!(err, Error::Closed(_)), "{err}");
    let cluster = open(dir.path())?;
    unchanged(&cluster)?;
    Ok(())
}

#[test]
fn reset_offsets_survive_a_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let cluster = open(dir.path())?;
    topics(&cluster)?;
    cluster.alter_group_offsets("g", &commits(&[("t", 0, 9), ("t", 1, 1)]))?;
    cluster.reset_group_offsets("g", &[tp("t", 0)], OffsetSpec::Timestamp(1_020))?;
    cluster.reset_group_offsets("g", &[tp("t", 1)], OffsetSpec::Offset(4))?;
    let before = cluster.list_group_offsets("g")?;
    let rows = lag_rows(&cluster, "g")?;
    assert_eq!(
        rows,
        [
            (tp("t", 0), Some(2), 10, Some(8)),
            (tp("t", 1), Some(4), 5, Some(1)),
        ]
    );
    cluster.close()?;

    let cluster = open(dir.path())?;
    assert_eq!(cluster.list_group_offsets("g")?, before);
    assert_eq!(lag_rows(&cluster, "g")?, rows);
    assert_eq!(cluster.describe_group("g")?.state, GroupState::Empty);
    assert_eq!(cluster.list_groups(), ["g"]);
    Ok(())
}
