//! A bridge to a real Kafka cluster (feature `kafka`): a [`Mirror`], as
//! Kafka's MirrorMaker, copies chosen logbus topics to a Kafka cluster and
//! chosen Kafka topics into logbus, through librdkafka (the `rdkafka`
//! crate), so an application can start embedded and move its data to a
//! cluster, or feed itself from one.
//!
//! # What is copied
//! Every record's key, value (null stays null), headers (in order, null
//! values kept) and timestamp (as the record's create time). Partitions:
//! when the target topic has as many partitions as the source, a record
//! keeps its partition number; otherwise a keyed record goes to Kafka's
//! default partition for its key (`murmur2(key) & 0x7fffffff % count`, as
//! Kafka's Java client and [`partition_for_key`](crate::partition_for_key))
//! and a record without a key to `source partition % count`
//! ([`target_partition`]). Offsets are not kept (the target assigns its
//! own): they are translated, see below. Topics of logbus that a mirror
//! fills from Kafka are created with the source's partition count if
//! missing; topics of Kafka must exist (create them with the source's
//! partition count to keep partition numbers). Partitions added to a
//! mirrored logbus topic are picked up by the next run; partitions added
//! to a mirrored Kafka topic, when the mirror is built again.
//!
//! # Progress and guarantees
//! - **logbus → Kafka, at-least-once** (default): records go through an
//!   idempotent producer (`acks=all`); only after Kafka acknowledged all of
//!   them are their source positions committed to the logbus consumer
//!   group `__mirror-<name>`. A mirror that dies before that commit copies
//!   those records again when it restarts: nothing is lost, some records
//!   may be duplicated.
//! - **logbus → Kafka, exactly-once** ([`MirrorBuilder::exactly_once`]):
//!   records go in Kafka transactions (`transactional.id`
//!   `__mirror-<name>`); each transaction also commits the source positions
//!   to the Kafka group `__mirror-<name>` (`send_offsets_to_transaction`),
//!   stored under the target topic's partition of the same number (so the
//!   Kafka topic needs at least as many partitions as the logbus topic),
//!   with metadata `logbus:<source topic>`. Records and progress commit
//!   together or not at all: a `read_committed` Kafka consumer sees every
//!   source record once. A restarted mirror resumes from the later of
//!   Kafka's position and the logbus group's (written after each Kafka
//!   commit, so it lags by at most one transaction, and stands in when
//!   Kafka lost the group's offsets: `offsets.retention.minutes`);
//!   its `init_transactions` aborts what a dead predecessor left open, and
//!   fences an older mirror of the same name that is still running (its
//!   calls fail with [`MirrorError::Fenced`]).
//! - **Kafka → logbus, at-least-once** (default): records are read
//!   `read_committed` (aborted transactions never copied) and sent by an
//!   idempotent logbus producer; only after logbus appended all of them are
//!   the source positions committed to the Kafka consumer group
//!   `__mirror-<name>`.
//! - **Kafka → logbus, exactly-once** ([`MirrorBuilder::exactly_once`]):
//!   records go in logbus transactions (`transactional.id`
//!   `__mirror-<name>-from-kafka`), each committing the source positions
//!   to the logbus group `__mirror-<name>` with it (under the logbus
//!   topic's partition of the same number, metadata `kafka:<source
//!   topic>`), so a `read_committed` logbus consumer sees every source
//!   record once; the positions are then also committed to the Kafka group
//!   (for Kafka's tools, and to resume if the logbus group is deleted). A
//!   restarted mirror resumes from the later of the two.
//!
//! Each checkpoint ([`MirrorBuilder::records_per_checkpoint`], and the
//! end of each run) also records offset syncs ([`OffsetSync`],
//! MirrorMaker 2's): for each partition copied, the source and target
//! offsets of its first record, of one record every
//! [`offset_lag_max`](MirrorBuilder::offset_lag_max) offsets, and of its
//! last record, in the logbus topic
//! `mirror-offset-syncs.<name>.internal`. With them,
//! [`Mirror::translate_offsets`] tells where a consumer group's position
//! on one side is on the other, so a group can move across with its
//! position ([`Mirror::sync_group_offsets`]).
//!
//! # Running it
//! [`Mirror::run_once`] copies what is there now (up to each partition's
//! end as the run starts) and returns; [`Mirror::start`] runs it on a
//! background thread until [`MirrorHandle::stop`].
//!
//! ```no_run
//! use logbus::bridge::Mirror;
//! use logbus::{Cluster, ClusterConfig};
//!
//! let cluster = Cluster::open("/var/lib/app/logbus", ClusterConfig::default())?;
//! let mirror = Mirror::builder(&cluster, "prod")
//!     .bootstrap_servers("kafka-1:9092")
//!     .to_kafka("orders")
//!     .exactly_once(true)
//!     .build()?;
//! let running = mirror.start(); // copies as records arrive
//! // ... the application produces to logbus ...
//! running.stop()?; // finishes the run in progress, commits, joins
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod kafka;
mod mirror;
mod syncs;

use std::num::NonZeroU32;
use std::time::Duration;

pub use config::{MirrorBuilder, RESERVED_KAFKA_CONFIGS, TopicRoute};
pub use mirror::{Mirror, MirrorHandle, MirrorReport};
pub use syncs::{Direction, OffsetSync};

/// The bridge's errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MirrorError {
    /// A logbus call failed.
    #[error("logbus: {0}")]
    Logbus(#[from] crate::Error),
    /// A Kafka call failed.
    #[error("kafka: {operation}: {source}")]
    Kafka {
        /// What the mirror was doing.
        operation: &'static str,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// Another mirror of the same name (same `transactional.id`) took
    /// over: this one can no longer write to Kafka, and refuses to run.
    #[error("fenced by a newer mirror of the same name ({operation}): {reason}")]
    Fenced {
        /// What the mirror was doing.
        operation: &'static str,
        /// librdkafka's message.
        reason: String,
    },
    /// A record could not be written to the target; nothing of its
    /// checkpoint was committed.
    #[error("delivery to {topic} failed: {reason}")]
    Delivery {
        /// The target topic.
        topic: String,
        /// The target's reason.
        reason: String,
    },
    /// A Kafka topic to mirror does not exist.
    #[error("Kafka topic {topic:?} does not exist")]
    UnknownKafkaTopic {
        /// The topic's name.
        topic: String,
    },
    /// The settings are not usable; nothing was started.
    #[error("invalid mirror configuration: {0}")]
    Config(String),
    /// A run made no progress for the mirror's timeout.
    #[error("no progress for {0:?}")]
    Timeout(Duration),
    /// The mirror stopped at an injected crash (a test hook) and refuses to
    /// run again.
    #[error("the mirror crashed (injected) and must be rebuilt")]
    Crashed,
    /// The background thread panicked.
    #[error("the mirror's thread panicked")]
    Panicked,
}

/// The target partition of a record (see the module's documentation):
/// the source partition when the counts match, else Kafka's default
/// partition for the key, else `source_partition % target_count`.
///
/// ```
/// use std::num::NonZeroU32;
/// use logbus::bridge::target_partition;
/// let n = |v| NonZeroU32::new(v).unwrap();
/// assert_eq!(target_partition(Some(b"k"), 5, n(8), n(8)), 5);
/// assert_eq!(target_partition(None, 5, n(8), n(3)), 2);
/// // Keyed, counts differ: as Kafka's producer would place it.
/// assert_eq!(
///     target_partition(Some(b"order-1"), 5, n(8), n(3)),
///     logbus::partition_for_key(b"order-1", n(3)),
/// );
/// ```
#[must_use]
pub fn target_partition(
    key: Option<&[u8]>,
    source_partition: u32,
    source_count: NonZeroU32,
    target_count: NonZeroU32,
) -> u32 {
    if source_count == target_count {
        return source_partition;
    }
    match key {
        Some(key) => crate::partition_for_key(key, target_count),
        None => source_partition % target_count.get(),
    }
}
