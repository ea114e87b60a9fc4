//! The stage timeline (`logbus::timeline`): what a transactional
//! producer's commit records, and that only a recording keeps spans. One
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
    // The sender writes the markers after the commit's answer; a close
    // waits for them.
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
    // The transaction's two partitions were added, its end decided within
    // the commit, and its markers written after it.
    assert!(!of(Stage::AddPartitions).is_empty());
    let ends = of(Stage::EndTxn);
    assert_eq!(ends.len(), 1, "{:?}", recorded.spans);
    assert!(ends[0].start >= commit.start && ends[0].end() <= commit.end());
    let markers = of(Stage::Markers);
    assert!(!markers.is_empty());
    assert!(markers.iter().any(|m| m.start >= ends[0].end()));
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
