//! A topic's configs change live (`Cluster::alter_topic_config`), and the
//! producer's checks follow them from the next send, although it keeps
//! the values it checks against with the topic's entry (read again only
//! when the topic's config version moves).

use std::sync::Arc;
use std::time::Duration;

use logbus::{
    Acks, AlterConfigOp, Cluster, ClusterConfig, Error, FormatError, ManualClock, NewTopic,
    Producer, ProducerConfig, ProducerRecord, Result,
};

const T0: i64 = 1_700_000_000_000;

#[test]
fn altered_cleanup_policy_and_max_message_bytes_apply_from_the_next_send() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    // A manual clock: batches linger (stay open) until the flush.
    let clock = ManualClock::new(T0);
    let cluster = Cluster::open(
        dir.path(),
        ClusterConfig::builder().clock(Arc::new(clock)).build()?,
    )?;
    cluster.create_topic(NewTopic::new("t", 1))?;
    let producer = Producer::new(
        &cluster,
        ProducerConfig::builder()
            .acks(Acks::Leader)
            .linger(Duration::from_secs(3600))
            .build()?,
    )?;
    // An open batch, held across the changes below.
    let mut sent = vec![producer.send(ProducerRecord::new("t", "before").with_key("k"))?];
    assert!(!sent[0].is_done());

    cluster.alter_topic_config("t", &[AlterConfigOp::set("cleanup.policy", "compact")])?;
    let refused = producer
        .send(ProducerRecord::new("t", "keyless, after"))
        .expect_err("a keyless record for a compacted topic");
    assert!(
        matches!(refused, Error::InvalidBatch(FormatError::InvalidRecord(_))),
        "{refused:?}"
    );
    sent.push(producer.send(ProducerRecord::new("t", "keyed").with_key("k"))?);

    cluster.alter_topic_config("t", &[AlterConfigOp::set("max.message.bytes", "300")])?;
    let too_large = producer
        .send(ProducerRecord::new("t", vec![7_u8; 400]).with_key("k"))
        .expect_err("over the new max.message.bytes");
    assert!(
        matches!(
            too_large,
            Error::RecordTooLarge {
                max: 300,
                limit: "max.message.bytes",
                ..
            }
        ),
        "{too_large:?}"
    );
    sent.push(producer.send(ProducerRecord::new("t", vec![8_u8; 100]).with_key("k"))?);

    // Back to the default: a record refused a moment ago goes through.
    cluster.alter_topic_config("t", &[AlterConfigOp::delete("max.message.bytes")])?;
    sent.push(producer.send(ProducerRecord::new("t", vec![7_u8; 400]).with_key("k"))?);

    producer.flush()?;
    let offsets = sent
        .into_iter()
        .map(|s| s.wait().map(|m| m.offset()))
        .collect::<Result<Vec<_>>>()?;
    assert_eq!(offsets, [Some(0), Some(1), Some(2), Some(3)]);
    producer.close()?;
    cluster.close()
}
