//! Quickstart: create a topic, produce keyed records, consume them back.
//!
//! ```text
//! cargo run --release --example quickstart [DIR]
//! ```
//!
//! Writes into `DIR` (default: a fresh temporary directory, whose path is
//! printed) and leaves the data there: `DIR/broker-0/orders-*/` hold Kafka
//! segment files. Run it again on the same directory to append more.

#![allow(clippy::print_stdout, reason = "an example prints its results")]

use std::error::Error;
use std::path::PathBuf;
use std::time::Duration;

use logbus::{
    Cluster, ClusterConfig, Compression, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, TopicConfig, TopicPartition,
};

fn main() -> Result<(), Box<dyn Error>> {
    let dir = match std::env::args_os().nth(1) {
        Some(dir) => PathBuf::from(dir),
        None => tempfile::Builder::new()
            .prefix("logbus-quickstart-")
            .tempdir()?
            .keep(),
    };
    println!("data directory: {}", dir.display());

    // One in-process cluster per directory; topics persist across runs.
    let cluster = Cluster::open(&dir, ClusterConfig::default())?;
    let config = TopicConfig::new().retention_time(Some(Duration::from_secs(7 * 24 * 3600)));
    let topic = cluster.create_topic_if_not_exists(NewTopic::new("orders", 3).config(config))?;
    let start: Vec<u64> = topic
        .partitions()?
        .iter()
        .map(|p| p.log_end_offset())
        .collect::<Result<_, _>>()?;

    // Records with the same key land on the same partition (Kafka's murmur2).
    let producer = Producer::new(
        &cluster,
        ProducerConfig::builder()
            .compression(Compression::Lz4)
            .build()?,
    )?;
    let mut sent = Vec::new();
    for (customer, event) in [
        ("alice", "order created"),
        ("bob", "order created"),
        ("alice", "order paid"),
        ("carol", "order created"),
        ("bob", "order cancelled"),
        ("alice", "order shipped"),
    ] {
        let record = ProducerRecord::new("orders", event)
            .with_key(customer)
            .with_header("source", "quickstart");
        sent.push(producer.send(record)?);
    }
    for handle in sent {
        let meta = handle.wait()?;
        println!(
            "produced to {}-{} at offset {}",
            meta.topic(),
            meta.partition(),
            meta.offset().unwrap_or_default()
        );
    }
    producer.close()?;

    // A consumer assigned every partition reads this run's records back.
    let mut consumer = Consumer::new(
        &cluster,
        ConsumerConfig::builder()
            .auto_offset_reset(OffsetReset::Earliest)
            .build()?,
    )?;
    let partitions: Vec<TopicPartition> = (0..topic.partition_count())
        .map(|p| TopicPartition::new("orders", p))
        .collect();
    consumer.assign(&partitions)?;
    for (tp, offset) in partitions.iter().zip(&start) {
        consumer.seek(tp, *offset)?;
    }
    let mut received = 0;
    while received < 6 {
        let records = consumer.poll(Duration::from_secs(5))?;
        if records.is_empty() {
            return Err("no records arrived within 5 s".into());
        }
        for record in &records {
            received += 1;
            let key = record
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned());
            let value = record
                .value()
                .map(|v| String::from_utf8_lossy(v).into_owned());
            println!(
                "consumed {}-{}@{}: {} = {}",
                record.topic(),
                record.partition(),
                record.offset(),
                key.unwrap_or_default(),
                value.unwrap_or_default()
            );
        }
    }
    drop(consumer);
    cluster.close()?;
    println!("done; the data is in {}", dir.display());
    Ok(())
}
