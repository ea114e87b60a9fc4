//! The stage timeline (`logbus::timeline`): what a transactional
//! producer's commit records (on the committing thread, markers
//! included), and that only a recording keeps spans. One
//! test in its own process, since the timeline is the process's.
#![cfg(feature = "internals")]

use logbus::timeline::{self, Stage};
use logbus::{
    Acks, Cluster, ClusterConfig, NewTopic, Producer, ProducerConfig, ProducerRecord, Result,
};

#[test]
fn a_recording_times_a_commit_and_its_stages_and_keeps_nothing_else() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    cluster.create_topic(NewTopic::new("t", 2))?;
    let producer = Producer::new(
        &cluster,
        ProducerConfig::builder()
            .acks(Acks::All)
            .transactional_id("timed")
            .build()?,
    )?;
    producer.init_transactions()?;

    // Nothing recording: nothing kept, and a stop without a start is empty.
    producer.begin_transaction()?;
    drop(producer.send(ProducerRecord::new("t", "before"))?);
    producer.commit_transaction()?;
    assert!(timeline::stop().spans.is_empty());

    timeline::start();
    producer.begin_transaction()?;
    for i in 0..10 {
        drop(producer.send(ProducerRecord::new("t", format!("v{i}")).with_partition(i % 2))?);
    }
    producer.commit_transaction()?;
    producer.close()?;
    let recorded = timeline::stop();
    assert_eq!(recorded.dropped, 0);

    let of = |stage: Stage| -> Vec<_> {
        recorded
            .spans
            .iter()
            .filter(|s| s.stage == stage)
            .copied()
            .collect()
    };
    let commits = of(Stage::Commit);
    assert_eq!(commits.len(), 1, "one commit: {:?}", recorded.spans);
    let commit = commits[0];
    // Within the commit (the producer lingers, the default): the
    // transaction's two partitions added, its batches appended on the
    // committing thread, then its end, which wrote `PrepareCommit` and
    // the two markers itself.
    let within = |s: &timeline::Span| s.start >= commit.start && s.end() <= commit.end();
    let adds = of(Stage::AddPartitions);
    assert!(!adds.is_empty() && adds.iter().all(within), "{adds:?}");
    let appends = of(Stage::DirectAppend);
    assert_eq!(appends.len(), 2, "{:?}", recorded.spans);
    assert!(
        appends
            .iter()
            .all(|a| within(a) && a.thread == commit.thread)
    );
    let ends = of(Stage::EndTxn);
    assert_eq!(ends.len(), 1, "{:?}", recorded.spans);
    assert!(within(&ends[0]));
    assert!(appends.iter().all(|a| a.end() <= ends[0].start));
    let end_writes = of(Stage::FileWrite)
        .into_iter()
        .filter(|w| w.start >= ends[0].start && w.end() <= ends[0].end())
        .count();
    assert!(
        end_writes >= 3,
        "PrepareCommit and two markers: {:?}",
        recorded.spans
    );
    assert!(
        of(Stage::Markers).is_empty(),
        "no marker left to the sender"
    );
    // Data, the coordinator's states and the markers were all written.
    assert!(of(Stage::FileWrite).len() >= 4, "{:?}", recorded.spans);
    // Each stage's durations come shortest first.
    let writes = recorded.durations(Stage::FileWrite);
    assert!(writes.windows(2).all(|w| w[0] <= w[1]));

    // A new recording starts empty; stopping ends it.
    timeline::start();
    assert!(timeline::stop().spans.is_empty());
    assert!(timeline::stop().spans.is_empty());
    cluster.close()?;
    Ok(())
}
