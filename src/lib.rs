//! logbus: Apache Kafka's design as an embeddable Rust library.
//!
//! Topics, partitions and replicated append-only logs in Kafka's own on-disk
//! format, inside your process, behind a synchronous API: no broker, no
//! sockets, no ZooKeeper.
//!
//! This release provides the storage engine every later layer stands on: the
//! partition [`Log`] (segments of Kafka v2 record batches with their offset
//! and time indexes, crash recovery, retention, durability policies) and the
//! [`format`](mod@format) module (record batches, byte for byte as Kafka writes them,
//! with gzip, snappy, lz4 and zstd compression). Producers, consumers and
//! topics build on it next.
//!
//! # Quickstart
//!
//! ```
//! use logbus::format::BatchBuilder;
//! use logbus::{Compression, FlushPolicy, Log, LogConfig};
//!
//! let dir = tempfile::tempdir()?; // any directory; the log creates it
//! let config = LogConfig::builder()
//!     .segment_bytes(64 * 1024 * 1024)
//!     .flush(FlushPolicy::EveryAppend) // acknowledged = on disk
//!     .build()?;
//! let log = Log::builder(dir.path().join("orders-0")).config(config).open()?;
//!
//! // Producers send record batches; the log assigns the offsets.
//! let mut batch = BatchBuilder::new(Compression::Lz4);
//! batch.append(1_700_000_000_000, Some(b"order-1"), Some(b"created"), &[]);
//! batch.append(1_700_000_000_001, Some(b"order-1"), Some(b"paid"), &[]);
//! let mut bytes = batch.build()?.to_vec();
//! let appended = log.append(&mut bytes, 0)?;
//! assert_eq!((appended.first_offset(), appended.last_offset()), (0, 1));
//!
//! // Consumers read whole batches from an offset; values are zero-copy views.
//! let read = log.read(0, 1024 * 1024)?;
//! for batch in read.batches() {
//!     for record in batch?.records()? {
//!         let record = record?;
//!         println!("{} {:?}", record.offset(), record.value());
//!     }
//! }
//!
//! // Find records by time, as Kafka's offsetsForTimes does.
//! let found = log.offset_for_timestamp(1_700_000_000_001)?;
//! assert_eq!(found.map(|t| t.offset), Some(1));
//! log.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Guarantees
//!
//! - **Format**: segments are Kafka's `.log`/`.index`/`.timeindex` files;
//!   see `docs/format.md` in the repository.
//! - **Durability**: what an acknowledged append survives depends on the
//!   [`FlushPolicy`]; see the README's durability section.
//! - **Recovery**: a torn tail of the last segment is cut and reported in
//!   [`Log::recovery_report`]; any other damage is an [`Error::Corrupt`],
//!   never cut silently.
//! - **Errors**: one [`Error`] enum; bad input is rejected before anything
//!   is stored.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod clock;
mod cluster;
mod config;
mod error;
pub mod format;
mod log;
mod replica;
mod storage;
mod types;

pub use client::consumer::{
    Consumer, ConsumerConfig, ConsumerConfigBuilder, ConsumerRecord, ConsumerRecords,
    OffsetAndTimestamp, OffsetReset, RecordsIntoIter, RecordsIter,
};
pub use client::partitioner::{Partitioner, RoundRobinPartitioner, murmur2, partition_for_key};
pub use client::producer::{
    Acks, Producer, ProducerConfig, ProducerConfigBuilder, ProducerRecord, RecordMetadata,
    SendFuture,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use cluster::{
    CleanupPolicy, Cluster, ClusterConfig, ClusterConfigBuilder, MAX_TOPIC_NAME_LEN, NewTopic,
    Partition, PartitionDescription, Topic, TopicConfig, TopicDescription,
};
pub use config::{FlushPolicy, LogConfig, LogConfigBuilder};
pub use error::{CorruptionKind, Error, FormatError, Result};
pub use log::{
    AppendInfo, CheckpointRead, Log, LogBuilder, LogRead, OffsetCheckpoint, RecoveryReport,
    RetentionReport, TimestampOffset, TruncatedTail,
};
pub use storage::{DirLock, OpenMode, ReadMap, StdStorage, Storage, StorageFile, slice_bytes};
#[cfg(any(test, feature = "internals"))]
pub use storage::{FaultKind, FaultOp, FaultyStorage, Tear};
pub use types::{Compression, TimestampType, TopicPartition};
