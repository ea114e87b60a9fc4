//! Mirror: copy a logbus topic to a Kafka cluster and back, and move a
//! consumer group's position across.
//!
//! ```text
//! cargo run --release --features kafka --example mirror [DIR [BOOTSTRAP_SERVERS]]
//! ```
//!
//! Writes into `DIR` (default: a fresh temporary directory, whose path is
//! printed). Without `BOOTSTRAP_SERVERS`, the Kafka cluster is librdkafka's
//! in-process mock cluster (nothing leaves the machine); with them, the
//! Kafka topic `orders` must exist there with 3 partitions (exactly-once
//! keeps the mirror's progress under the same partition numbers). Run it
//! again on the same directory and Kafka cluster: the mirrors resume where
//! they stopped and copy only the new records.

#![allow(clippy::print_stdout, reason = "an example prints its results")]

use std::collections::BTreeMap;
use std::error::Error;
use std::path::PathBuf;

use logbus::bridge::Mirror;
use logbus::{
    Cluster, ClusterConfig, NewTopic, OffsetAndMetadata, Producer, ProducerConfig, ProducerRecord,
    TopicPartition,
};
use rdkafka::mocking::MockCluster;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let dir = match args.next() {
        Some(dir) => PathBuf::from(dir),
        None => tempfile::Builder::new()
            .prefix("logbus-mirror-")
            .tempdir()?
            .keep(),
    };
    println!("data directory: {}", dir.display());

    // The Kafka cluster: the one named, or a mock in this process.
    let mock;
    let bootstrap = match args.next() {
        Some(servers) => servers,
        None => {
            mock = MockCluster::new(3)?;
            mock.create_topic("orders", 3, 1)?;
            println!(
                "Kafka: librdkafka's mock cluster at {}",
                mock.bootstrap_servers()
            );
            mock.bootstrap_servers()
        }
    };

    // Some records in logbus.
    let cluster = Cluster::open(&dir, ClusterConfig::default())?;
    cluster.create_topic_if_not_exists(NewTopic::new("orders", 3))?;
    let producer = Producer::new(&cluster, ProducerConfig::default())?;
    let mut sent = Vec::new();
    for i in 0..1000 {
        let record = ProducerRecord::new("orders", format!("order {i} created"))
            .with_key(format!("customer-{}", i % 37))
            .with_header("source", "example");
        sent.push(producer.send(record)?);
    }
    for s in sent {
        s.wait()?;
    }

    // logbus -> Kafka, exactly once (Kafka transactions).
    let out = Mirror::builder(&cluster, "example-out")
        .bootstrap_servers(bootstrap.as_str())
        .to_kafka("orders")
        .exactly_once(true)
        .build()?;
    let report = out.run_once()?;
    println!("copied {} records to Kafka", report.records_to_kafka);

    // Kafka -> logbus, into another topic.
    let back = Mirror::builder(&cluster, "example-back")
        .bootstrap_servers(bootstrap.as_str())
        .from_kafka_as("orders", "orders-from-kafka")
        .build()?;
    let report = back.run_once()?;
    println!(
        "copied {} records from Kafka into orders-from-kafka",
        report.records_from_kafka
    );

    // A logbus consumer group halfway through partition 0 moves to Kafka.
    let tp = TopicPartition::new("orders", 0);
    let halfway = cluster.topic("orders")?.partitions()?[0].log_end_offset()? / 2;
    cluster.alter_group_offsets(
        "billing",
        &BTreeMap::from([(tp, OffsetAndMetadata::new(halfway))]),
    )?;
    for (tp, offset) in out.sync_group_offsets("billing")? {
        println!("group billing resumes in Kafka at {tp} offset {offset}");
    }
    for sync in out.offset_syncs().iter().rev().take(3) {
        println!(
            "offset sync: {} @{} -> {} @{}",
            sync.source, sync.upstream_offset, sync.target, sync.downstream_offset
        );
    }
    drop(producer);
    cluster.close()?;
    Ok(())
}
