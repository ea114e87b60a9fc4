//! logbus: Apache Kafka's design as an embeddable Rust library.
//!
//! Topics, partitions and append-only logs in Kafka's own on-disk format,
//! inside your process, behind a synchronous API: no broker process, no
//! sockets, no ZooKeeper.
//!
//! A [`Cluster`] is one directory holding Kafka's layout: a metadata log
//! with the topic registry and one data directory per in-process broker,
//! with one log per partition replica. Partitions are replicated across
//! those brokers as Kafka replicates them (leaders, followers, in-sync
//! replicas, leader epochs, `acks=all`, `min.insync.replicas`, failover). [`Producer`] and [`Consumer`] work as Kafka's
//! clients do, in-process: keyed partitioning identical to Kafka's Java
//! client, batching with `linger.ms`, compression, blocking `poll` woken by
//! appends, seeks, `offsetsForTimes`. Below them, [`Partition`] and [`Log`]
//! give raw access to record batches, and [`format`](mod@format) builds and
//! decodes them byte for byte as Kafka does.
//!
//! # Quickstart
//!
//! ```
//! use std::time::Duration;
//! use logbus::{
//!     Cluster, ClusterConfig, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer,
//!     ProducerConfig, ProducerRecord, TopicPartition,
//! };
//!
//! let dir = tempfile::tempdir()?; // any directory; the cluster creates it
//! let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
//! cluster.create_topic(NewTopic::new("orders", 3))?;
//!
//! // Records with the same key go to the same partition (murmur2, as Kafka).
//! let producer = Producer::new(&cluster, ProducerConfig::default())?;
//! let sent = producer.send(ProducerRecord::new("orders", "created").with_key("order-1"))?;
//! let metadata = sent.wait()?; // appended: offset assigned
//! producer.send(ProducerRecord::new("orders", "paid").with_key("order-1"))?;
//! producer.flush()?;
//!
//! let mut consumer = Consumer::new(
//!     &cluster,
//!     ConsumerConfig::builder().auto_offset_reset(OffsetReset::Earliest).build()?,
//! )?;
//! consumer.assign(&[TopicPartition::new("orders", metadata.partition())])?;
//! let records = consumer.poll(Duration::from_secs(1))?; // blocks until data
//! let values: Vec<_> = records.iter().map(|r| r.value_bytes().unwrap()).collect();
//! assert_eq!(values, ["created", "paid"]);
//!
//! // Everything persists: topics, configs and offsets survive a reopen.
//! drop((producer, consumer));
//! cluster.close()?;
//! let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
//! assert_eq!(cluster.list_topics(), ["orders"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Consumer groups
//!
//! Consumers that share a `group.id` and [`subscribe`](Consumer::subscribe)
//! split the partitions between them, rebalance when members come and go,
//! and commit their positions to `__consumer_offsets`, where a restarted
//! process resumes:
//!
//! ```
//! use std::time::Duration;
//! use logbus::{Cluster, ClusterConfig, Consumer, ConsumerConfig, NewTopic, OffsetReset};
//!
//! let dir = tempfile::tempdir()?;
//! let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
//! cluster.create_topic(NewTopic::new("jobs", 4))?;
//! let member = || -> logbus::Result<Consumer> {
//!     let config = ConsumerConfig::builder()
//!         .group_id("workers")
//!         .auto_offset_reset(OffsetReset::Earliest)
//!         .build()?;
//!     let mut consumer = Consumer::new(&cluster, config)?;
//!     consumer.subscribe(["jobs"])?;
//!     Ok(consumer)
//! };
//! let (mut a, mut b) = (member()?, member()?);
//! // Each poll is also a step of the group protocol: a few settle it.
//! for _ in 0..3 {
//!     a.poll(Duration::ZERO)?;
//!     b.poll(Duration::ZERO)?;
//! }
//! assert_eq!((a.assignment().len(), b.assignment().len()), (2, 2));
//! b.close()?; // commits, revokes, leaves: a takes over at its next poll
//! a.poll(Duration::ZERO)?;
//! assert_eq!(a.assignment().len(), 4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Below the clients, a single partition [`Log`] can be used on its own:
//!
//! ```
//! use logbus::format::BatchBuilder;
//! use logbus::{Compression, FlushPolicy, Log, LogConfig};
//!
//! let dir = tempfile::tempdir()?; // any directory; the log creates it
//! let config = LogConfig::builder()
//!     .segment_bytes(64 * 1024 * 1024)
//!     .flush(FlushPolicy::every_append()) // acknowledged = on disk
//!     .build()?;
//! let log = Log::builder(dir.path().join("orders-0")).config(config).open()?;
//!
//! let mut batch = BatchBuilder::new(Compression::Lz4);
//! batch.append(1_700_000_000_000, Some(b"order-1"), Some(b"created"), &[]);
//! batch.append(1_700_000_000_001, Some(b"order-1"), Some(b"paid"), &[]);
//! let mut bytes = batch.build()?.to_vec();
//! let appended = log.append(&mut bytes, 0)?;
//! assert_eq!((appended.first_offset(), appended.last_offset()), (0, 1));
//! let read = log.read(0, 1024 * 1024)?; // whole batches, zero-copy
//! assert_eq!(read.batches().count(), 1);
//! let found = log.offset_for_timestamp(1_700_000_000_001)?;
//! assert_eq!(found.map(|t| t.offset), Some(1));
//! log.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Kafka clients (feature `server`)
//!
//! With the `server` feature, `Cluster::serve("127.0.0.1:0")` runs Kafka's
//! wire protocol on the cluster, one port per broker: any Kafka client
//! (librdkafka and what is built on it, the Java client, kafka-python,
//! kcat) produces to it, fetches from it and administers its topics
//! unchanged. `Server::addresses` gives the ports; the command line's
//! `logbus serve --dir D --listen 127.0.0.1:9092` does the same for a data
//! directory.
//!
//! # Guarantees
//!
//! - **Format**: segments are Kafka's `.log`/`.index`/`.timeindex` files;
//!   see `docs/format.md` in the repository.
//! - **Durability**: what an acknowledged record survives depends on the
//!   topic's [`FlushPolicy`] (`flush.messages` / `flush.ms`); see the
//!   README's durability section.
//! - **Threads**: [`Cluster`] and [`Producer`] are `Send + Sync` and cheap
//!   to clone; a [`Consumer`] is used from one thread at a time, as Kafka's.
//! - **Delivery**: the idempotent producer (on by default) stores a retried
//!   batch once; transactions ([`Producer::begin_transaction`]) with
//!   `read_committed` consumers give exactly once from input to output.
//!   Plain group consumption is at least once; a member removed from its
//!   group can no longer commit ([`Error::CommitFailed`]).
//! - **Recovery**: damage at or above a log's recovery point (never
//!   fsynced, as a power loss leaves it) is cut and reported in
//!   [`Log::recovery_report`] (per partition: [`Partition::recovery_report`]
//!   and [`Cluster::recovery_report`]); damage below it (fsynced data)
//!   refuses the open with [`Error::Corrupt`] and changes no file. Nothing
//!   is cut silently, and a batch whose offsets do not fit its place is
//!   never served. Data is deleted only on positive evidence (a topic
//!   deletion recorded in the metadata log); a lost or damaged metadata log
//!   refuses the open and is rebuilt from the partitions with
//!   [`Cluster::rebuild_metadata`].
//! - **Errors**: one [`Error`] enum; bad input is rejected before anything
//!   is stored.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "kafka")]
#[cfg_attr(docsrs, doc(cfg(feature = "kafka")))]
pub mod bridge;
mod client;
mod clock;
mod cluster;
mod config;
mod error;
pub mod format;
pub mod inspect;
mod log;
mod metrics;
mod replica;
#[cfg(feature = "server")]
mod server;
mod storage;
#[cfg(feature = "internals")]
#[cfg_attr(docsrs, doc(cfg(feature = "internals")))]
pub mod timeline;
#[cfg(not(feature = "internals"))]
mod timeline;
mod types;

pub use crate::metrics::{
    GroupMetrics, LatencySummary, MetricsSnapshot, TopicMetrics, names as metric_names,
};
pub use client::assignor::{
    Assignor, CooperativeStickyAssignor, RangeAssignor, RebalanceProtocol, RoundRobinAssignor,
    StickyAssignor, assignor_by_name,
};
pub use client::consumer::{
    CommittedOffsets, Consumer, ConsumerConfig, ConsumerConfigBuilder, ConsumerGroupMetadata,
    ConsumerRebalanceListener, ConsumerRecord, ConsumerRecordRef, ConsumerRecords,
    OffsetAndTimestamp, OffsetReset, PartitionRecords, PartitionRecordsIter, RecordsIntoIter,
    RecordsIter,
};
pub use client::partitioner::{Partitioner, RoundRobinPartitioner, murmur2, partition_for_key};
pub use client::producer::{
    Acks, IntoBytes, IntoTopic, Producer, ProducerConfig, ProducerConfigBuilder, ProducerRecord,
    RecordMetadata, SendFuture, TopicName,
};
#[cfg(feature = "internals")]
pub use client::producer::{ProduceFault, ProduceFaults};
pub use clock::{Clock, ManualClock, SystemClock};
pub use cluster::{
    AlterConfigOp, CleanupPolicy, Cluster, ClusterConfig, ClusterConfigBuilder,
    ClusterRecoveryReport, GroupDescription, GroupState, MAX_BROKERS, MAX_PARTITIONS_PER_CLUSTER,
    MAX_PARTITIONS_PER_TOPIC, MAX_REPLICATION_FACTOR, MAX_TOPIC_NAME_LEN, MemberDescription,
    NewTopic, OffsetAndMetadata, OffsetSpec, Partition, PartitionDescription, PartitionLag,
    RebuildReport, RebuiltTopic, ReplicaDescription, ReplicationStats, SkippedRecord, Subscription,
    Topic, TopicConfig, TopicDescription, UnknownPartitionDir,
};
pub use config::{FlushPolicy, LogConfig, LogConfigBuilder};
pub use error::{CorruptionKind, Error, FormatError, Result};
pub use log::{
    AbortedTransaction, AppendInfo, CheckpointRead, CleanReport, FencedTruncation,
    LeaderEpochsRebuilt, Log, LogBuilder, LogRead, OffsetCheckpoint, RecoveryReport,
    RetentionReport, TimestampOffset, TruncatedTail,
};
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub use server::TlsConfig;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub use server::{SecurityProtocol, Server, ServerConfig, ServerConfigBuilder};
pub use storage::{
    DirLock, OpenMode, OverlayStorage, ReadMap, StdStorage, Storage, StorageFile, slice_bytes,
};
#[cfg(any(test, feature = "internals"))]
pub use storage::{
    FaultKind, FaultOp, FaultyStorage, PowerLossReport, Tear, TornPages, UnsyncedSummary,
};
pub use types::{Compression, IsolationLevel, TimestampType, TopicPartition};

/// A cheaply cloneable, sliceable chunk of bytes (from the `bytes` crate),
/// re-exported so that record keys and values need no extra dependency.
pub use bytes::Bytes;
/// A record header (a key and an optional value), re-exported from
/// [`format`](mod@format).
pub use format::Header;

/// The README's code blocks, compiled (and, unless marked `no_run`, run)
/// as doc tests, so that they build as written.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
