//! Helpers shared by the producer tests.
#![allow(dead_code, reason = "each test file uses a different subset")]

use std::path::Path;
use std::sync::Arc;

use logbus::format::{Batch, Batches, Header};
use logbus::{Cluster, ClusterConfig, ManualClock, Result};

/// The manual clock's start: a plausible wall-clock time.
pub(crate) const T0: i64 = 1_700_000_000_000;

/// One stored record as the tests compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) offset: u64,
    pub(crate) timestamp: i64,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) headers: Vec<(String, Option<Vec<u8>>)>,
}

/// A cluster in `dir` on the system clock.
pub(crate) fn open(dir: &Path) -> Result<Cluster> {
    Cluster::open(dir, ClusterConfig::default())
}

/// A cluster in `dir` driven by `clock`.
pub(crate) fn open_with_clock(dir: &Path, clock: &ManualClock) -> Result<Cluster> {
    Cluster::open(
        dir,
        ClusterConfig::builder()
            .clock(Arc::new(clock.clone()))
            .build()?,
    )
}

/// A cluster in a new temporary directory on a manual clock at [`T0`],
/// with topic `t` of `partitions` partitions.
pub(crate) fn manual_topic(partitions: u32) -> Result<(tempfile::TempDir, ManualClock, Cluster)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0);
    let cluster = open_with_clock(dir.path(), &clock)?;
    cluster.create_topic(logbus::NewTopic::new("t", partitions))?;
    Ok((dir, clock, cluster))
}

/// Every batch of a partition, from offset 0.
pub(crate) fn batches(cluster: &Cluster, topic: &str, partition: u32) -> Result<Vec<Batch>> {
    let p = cluster.topic(topic)?.partition(partition)?;
    if p.high_watermark()? == 0 {
        return Ok(Vec::new());
    }
    let read = p.read(0, usize::MAX / 2)?;
    Ok(Batches::new(read.records().clone()).collect::<std::result::Result<Vec<_>, _>>()?)
}

/// Every record of a partition, from offset 0.
pub(crate) fn records(cluster: &Cluster, topic: &str, partition: u32) -> Result<Vec<Stored>> {
    let mut out = Vec::new();
    for batch in batches(cluster, topic, partition)? {
        for record in batch.records()? {
            let record = record?;
            out.push(Stored {
                offset: u64::try_from(record.offset()).expect("offset"),
                timestamp: record.timestamp(),
                key: record.key().map(|k| k.to_vec()),
                value: record.value().map(|v| v.to_vec()),
                headers: record
                    .headers()
                    .iter()
                    .map(|h: &Header| (h.key.clone(), h.value.as_ref().map(|v| v.to_vec())))
                    .collect(),
            });
        }
    }
    Ok(out)
}
