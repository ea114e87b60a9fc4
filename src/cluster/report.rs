//! What opening a cluster found and did ([`ClusterRecoveryReport`]), and
//! what [`Cluster::rebuild_metadata`](crate::Cluster::rebuild_metadata)
//! did ([`RebuildReport`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::log::RecoveryReport;
use crate::types::TopicPartition;

/// What [`Cluster::open`](crate::Cluster::open) found and did, from
/// [`Cluster::recovery_report`](crate::Cluster::recovery_report).
///
/// Recovery deletes data only on positive evidence (a topic removal in the
/// metadata log, a `-delete` directory). Everything else it could not
/// explain is kept and listed here, so a clean report after a crash is an
/// empty [`unknown_dirs`](Self::unknown_dirs) and
/// [`skipped_records`](Self::skipped_records) and no
/// [`truncated`](RecoveryReport::truncated) tail in any log.
///
/// ```
/// use logbus::{Cluster, ClusterConfig, NewTopic};
/// let dir = tempfile::tempdir()?;
/// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
/// cluster.create_topic(NewTopic::new("orders", 2))?;
/// cluster.close()?;
///
/// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
/// let report = cluster.recovery_report();
/// assert_eq!(report.partitions.len(), 2);
/// assert!(report.truncations().next().is_none(), "a clean close leaves no torn tail");
/// assert!(report.unknown_dirs.is_empty() && report.skipped_records.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterRecoveryReport {
    /// Recovery of the metadata log (`__cluster_metadata-0`).
    pub metadata: RecoveryReport,
    /// Recovery of every partition the open restored, by topic and
    /// partition (internal topics included). The same report is
    /// [`Partition::recovery_report`](crate::Partition::recovery_report).
    pub partitions: BTreeMap<TopicPartition, RecoveryReport>,
    /// Partition directories the registry does not explain: kept on disk,
    /// not opened.
    pub unknown_dirs: Vec<UnknownPartitionDir>,
    /// Directories removed on positive evidence: `-delete` directories and
    /// partition directories of topics the metadata log records as deleted
    /// (a deletion a crash interrupted).
    pub removed_dirs: Vec<PathBuf>,
    /// Records of internal topics (`__consumer_offsets`) that replay could
    /// not read and skipped, as Kafka skips unknown record versions.
    pub skipped_records: Vec<SkippedRecord>,
}

impl ClusterRecoveryReport {
    /// The logs whose torn tail recovery cut: the metadata log (as
    /// `__cluster_metadata-0`) and any partition.
    pub fn truncations(&self) -> impl Iterator<Item = (TopicPartition, &RecoveryReport)> {
        let metadata = self
            .metadata
            .truncated
            .is_some()
            .then(|| (TopicPartition::new("__cluster_metadata", 0), &self.metadata));
        metadata.into_iter().chain(
            self.partitions
                .iter()
                .filter(|(_, r)| r.truncated.is_some())
                .map(|(tp, r)| (tp.clone(), r)),
        )
    }
}

/// A partition directory that recovery kept without opening it, because
/// nothing proves which live topic it belongs to or that its topic was
/// deleted. Inspect it, then move it away or delete it by hand; or, if the
/// metadata log was lost, rebuild the registry with
/// [`Cluster::rebuild_metadata`](crate::Cluster::rebuild_metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnknownPartitionDir {
    /// The directory.
    pub path: PathBuf,
    /// The topic id its `partition.metadata` names (Kafka's base64 form),
    /// if it has a readable one.
    pub topic_id: Option<String>,
    /// Why it was not attributed to a live topic.
    pub reason: String,
}

/// A record of an internal topic that replay could not read and skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SkippedRecord {
    /// The topic and partition holding it.
    pub partition: TopicPartition,
    /// Its offset.
    pub offset: u64,
    /// What is wrong with it.
    pub reason: String,
}

/// What [`Cluster::rebuild_metadata`](crate::Cluster::rebuild_metadata) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RebuildReport {
    /// Where the old metadata log directory was moved
    /// (`__cluster_metadata-0.damaged-<n>`); `None` if there was none.
    /// It is never deleted.
    pub moved_aside: Option<PathBuf>,
    /// Records read from the readable prefix of the old metadata log, the
    /// source of the topic configs.
    pub old_records_read: u64,
    /// Every topic written to the new metadata log, by name.
    pub topics: Vec<RebuiltTopic>,
    /// Directories in the broker directory that were left out: no
    /// `partition.metadata`, or a name that is not `<topic>-<partition>`
    /// with a valid topic name. Left as they are.
    pub skipped_dirs: Vec<UnknownPartitionDir>,
}

/// One topic in a [`RebuildReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RebuiltTopic {
    /// The topic's name (from its directories' names, else the old log).
    pub name: String,
    /// The topic id (from `partition.metadata`), Kafka's base64 form.
    pub id: String,
    /// The partition count written: one more than the highest partition
    /// directory found, or the count the old log recorded if higher.
    pub partitions: u32,
    /// Partitions below that count that had no directory; the next open
    /// creates them empty. All of them for a topic only the old metadata
    /// log knew.
    pub missing_partitions: Vec<u32>,
    /// Whether the topic's configs came from the old metadata log; if not,
    /// the topic has no configs of its own (the cluster's defaults apply;
    /// `__consumer_offsets` gets its usual compacted configs).
    pub config_recovered: bool,
    /// The old metadata log records this topic as deleted: it is written
    /// as created and removed again, so the next open removes its
    /// directories (positive evidence, as before the damage).
    pub removed: bool,
}
