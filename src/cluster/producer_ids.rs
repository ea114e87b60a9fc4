//! Producer ids for idempotent and transactional producers, handed out by
//! the controller in blocks recorded in the metadata log (Kafka's
//! `ProducerIdManager` with KRaft's `ProducerIdsRecord`): a block's record
//! is durable before any id of it is given, and a reopen starts at the
//! end of the last block, so no id is ever given twice, even across a
//! crash.

use super::ClusterInner;
use super::controller::Controller;
use super::metadata::MetadataRecord;
use crate::error::{Error, Result};

/// Ids per block (Kafka's `PRODUCER_ID_BLOCK_SIZE`).
pub(crate) const PRODUCER_ID_BLOCK: i64 = 1000;

impl ClusterInner {
    /// A producer id never given before.
    ///
    /// # Errors
    /// [`Error::Closed`]; [`Error::Io`] from the metadata log when a new
    /// block must be recorded (no id is given then).
    pub(crate) fn allocate_producer_id(&self) -> Result<i64> {
        self.check_open()?;
        let mut controller = self.controller.lock();
        let Controller {
            metadata, registry, ..
        } = &mut *controller;
        let metadata = metadata.as_mut().ok_or(Error::Closed("cluster"))?;
        let next = registry
            .next_producer_id
            .unwrap_or(registry.producer_ids_end);
        if next >= registry.producer_ids_end {
            let end = next
                .checked_add(PRODUCER_ID_BLOCK)
                .ok_or_else(|| Error::Internal("producer ids are exhausted".into()))?;
            metadata.commit(
                registry,
                &[MetadataRecord::ProducerIds {
                    next_producer_id: end,
                }],
            )?;
        }
        registry.next_producer_id = Some(next + 1);
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Cluster, ClusterConfig};

    #[test]
    fn ids_are_never_given_twice_even_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = Cluster::open(dir.path(), ClusterConfig::default()).unwrap();
        let first: Vec<i64> = (0..3)
            .map(|_| cluster.inner.allocate_producer_id().unwrap())
            .collect();
        assert_eq!(first, [0, 1, 2]);
        assert_eq!(
            cluster.inner.controller.lock().registry.producer_ids_end,
            1000
        );
        cluster.close().unwrap();

        // The reopened cluster does not know how far the block was used:
        // it starts a new one.
        let cluster = Cluster::open(dir.path(), ClusterConfig::default()).unwrap();
        assert_eq!(cluster.inner.allocate_producer_id().unwrap(), 1000);
        // A whole block, then the next one.
        for expected in 1001..2001 {
            assert_eq!(cluster.inner.allocate_producer_id().unwrap(), expected);
        }
        assert_eq!(
            cluster.inner.controller.lock().registry.producer_ids_end,
            3000
        );
        drop(cluster); // as a crash: no close
        let cluster = Cluster::open(dir.path(), ClusterConfig::default()).unwrap();
        assert_eq!(cluster.inner.allocate_producer_id().unwrap(), 3000);
        cluster.close().unwrap();
        assert!(matches!(
            cluster.inner.allocate_producer_id(),
            Err(Error::Closed(_))
        ));
    }
}
