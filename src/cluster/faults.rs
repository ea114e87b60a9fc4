//! The fault API: stop, crash and restart brokers, fail a broker's disk,
//! pause or slow down a follower's fetching, cut a broker off from the
//! controller — so that users can test their own failover in one process
//! — and the replication counters ([`ReplicationStats`]).
//!
//! A broker's slot in `ClusterInner::brokers` holds its running
//! incarnation (`Arc<Broker>`) or nothing. Stopping or crashing takes the
//! broker out of its slot and out of the `ReplicaRegistry` (followers'
//! fetchers no longer reach it), then joins its threads and closes (or
//! drops) its logs with no cluster lock held. A restart opens a new
//! incarnation from its directory under `controller` (so no partition
//! change is published between its hosting and its installation), hosts
//! every partition the registry places on it with the current state,
//! registers it and starts its fetchers; then a liveness step unfences it.
//!
//! A disk failure ([`Cluster::fail_disk`]) throws the switch of the
//! broker's `FailableStorage` (every I/O of it fails with `EIO` from then
//! on), then halts the broker as Kafka's halts when its last log directory
//! fails: out of its slot, fenced at once (`RunState::DiskFailed`), its
//! threads joined and its logs dropped. A restart wraps the storage anew.
//!
//! Requests routed to a broker that is not running get the retriable
//! [`Error::NotLeaderOrFollower`] (until the controller moves the
//! leadership) — never a panic or a hang.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::cluster::broker::Broker;
use crate::cluster::{Cluster, ClusterInner, broker_dir};
use crate::error::{Error, Result};
use crate::replica::LeaderAndIsr;

/// Counts of the partition changes the controller applied since the
/// cluster opened (see [`Cluster::replication_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicationStats {
    /// Partitions whose leader changed (to another broker, or to none).
    pub leader_changes: u64,
    /// ISR changes that dropped at least one member.
    pub isr_shrinks: u64,
    /// ISR changes that added at least one member.
    pub isr_expands: u64,
}

/// The controller's counters behind [`ReplicationStats`].
#[derive(Debug, Default)]
pub(crate) struct ReplicationCounters {
    leader_changes: AtomicU64,
    isr_shrinks: AtomicU64,
    isr_expands: AtomicU64,
}

impl ReplicationCounters {
    /// Counts the change of one partition from `old` to `new`.
    pub(crate) fn count(&self, old: &LeaderAndIsr, new: &LeaderAndIsr) {
        if old.leader != new.leader {
            self.leader_changes.fetch_add(1, Ordering::Relaxed);
        }
        if old.isr.iter().any(|b| !new.isr.contains(b)) {
            self.isr_shrinks.fetch_add(1, Ordering::Relaxed);
        }
        if new.isr.iter().any(|b| !old.isr.contains(b)) {
            self.isr_expands.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> ReplicationStats {
        ReplicationStats {
            leader_changes: self.leader_changes.load(Ordering::Relaxed),
            isr_shrinks: self.isr_shrinks.load(Ordering::Relaxed),
            isr_expands: self.isr_expands.load(Ordering::Relaxed),
        }
    }
}

impl ClusterInner {
    /// Checks that the fault API may act on broker `id`.
    fn check_fault_target(&self, id: u32) -> Result<()> {
        self.check_open()?;
        if self.brokers.len() < 2 {
            return Err(Error::InvalidArgument(
                "the fault API needs a cluster of several brokers (ClusterConfigBuilder::brokers)"
                    .into(),
            ));
        }
        if id as usize >= self.brokers.len() {
            return Err(Error::InvalidArgument(format!(
                "no broker {id}: the cluster has brokers 0..{}",
                self.brokers.len()
            )));
        }
        Ok(())
    }

    /// Takes broker `id` out of its slot and out of the replica registry.
    fn take_broker(&self, id: u32) -> Result<Arc<Broker>> {
        let broker = self.brokers[id as usize]
            .write()
            .take()
            .ok_or_else(|| Error::IllegalState(format!("broker {id} is not running")))?;
        self.registry.remove(id);
        Ok(broker)
    }

    fn crash_broker(&self, id: u32) -> Result<()> {
        self.check_fault_target(id)?;
        let broker = self.take_broker(id)?;
        // Threads gone, logs dropped; no cluster lock is held.
        let closed = broker.shut_down(false);
        self.mark_broker_crashed(id)?;
        closed
    }

    fn fail_disk(&self, id: u32) -> Result<()> {
        self.check_fault_target(id)?;
        let running = self
            .running_broker(id)
            .ok_or_else(|| Error::IllegalState(format!("broker {id} is not running")))?;
        // The disk fails under whatever the broker is doing now.
        running.fail_disk();
        drop(running);
        // It halts (Kafka: `ReplicaManager.handleLogDirFailure` with no
        // log directory left): no more requests reach it...
        let broker = self.take_broker(id)?;
        // ...the controller fences it at once...
        let fenced = self.mark_broker_disk_failed(id);
        // ...and its threads stop, its logs dropped (nothing could be
        // written now anyway; no cluster lock is held).
        let closed = broker.shut_down(false);
        fenced.and(closed)
    }

    fn restart_broker(self: &Arc<Self>, id: u32) -> Result<()> {
        self.check_fault_target(id)?;
        if self.running_broker(id).is_some() {
            return Err(Error::IllegalState(format!("broker {id} is running")));
        }
        // A new incarnation: if its session has not expired yet (it
        // crashed moments ago), it is fenced now, so that no leadership
        // stays with a log that may have lost unsynced records (as Kafka's
        // controller fences a broker that registers with a new epoch).
        if !self.is_broker_fenced(id) {
            self.mark_broker_stopped(id)?;
        }
        {
            let controller = self.controller.lock();
            let registry = &controller.registry;
            let (broker, _scan) = Broker::open(
                id,
                broker_dir(&self.root, &self.config, id),
                &self.cluster_id,
                self.config.broker_storage(id),
                registry,
                self.config.background_threads,
                crate::replica::ReplicaConfig {
                    metrics: self.metrics.clone(),
                    ..self.config.replica_config()
                },
            )?;
            let broker = Arc::new(broker);
            let topics: Vec<_> = self.topics.read().values().cloned().collect();
            let mut hosted = Ok(());
            'topics: for state in topics {
                let Some(meta) = registry
                    .topics
                    .get(&*state.name)
                    .filter(|m| m.id == state.id)
                else {
                    continue;
                };
                let configs = state.configs();
                let min_insync =
                    usize::try_from(configs.effective.min_insync()).unwrap_or(usize::MAX);
                for (p, roles) in (0..).zip(&meta.assignments) {
                    if !roles.replicas.contains(&id) {
                        continue;
                    }
                    hosted = broker.open_partition(
                        &state.name,
                        state.id,
                        p,
                        configs.log_config.clone(),
                        roles.clone(),
                        min_insync,
                    );
                    if hosted.is_err() {
                        break 'topics;
                    }
                }
            }
            if let Err(e) = hosted {
                drop(controller);
                let _ = broker.shut_down(true);
                return Err(e);
            }
            broker
                .replicas
                .set_alter_partition(self.controller_channel());
            self.registry.register(&broker.replicas);
            if self.config.replica_fetchers
                && let Err(e) = broker.start_fetchers(self.registry.clone())
            {
                self.registry.remove(id);
                drop(controller);
                let _ = broker.shut_down(true);
                return Err(e);
            }
            *self.brokers[id as usize].write() = Some(broker.clone());
            drop(controller);
            // A close that began meanwhile may have stopped the fetchers
            // before this incarnation was installed: stop its own (with
            // no lock held), as the close would have.
            if self.check_open().is_err() {
                broker.stop_fetchers();
                return Err(Error::Closed("cluster"));
            }
        }
        // It heartbeats: unfenced (and sent every partition's state) by
        // this step, the only one the restart makes: the next comes on the
        // controller's own schedule (its heartbeat timer or a clock move).
        self.mark_broker_running(id)?;
        self.liveness_tick().map(drop)
    }
}

/// The fault API (see the module documentation of `cluster::faults`).
impl Cluster {
    /// Stops broker `id` cleanly, as Kafka's controlled shutdown: the
    /// controller fences it at once (its leaderships move to in-sync
    /// replicas on other brokers, it leaves every ISR) before this returns;
    /// then its fetcher threads stop, its logs are flushed and closed and
    /// its checkpoint files written. Requests for partitions it led get
    /// retriable errors until they reach the new leader.
    /// [`Cluster::restart_broker`] brings it back.
    ///
    /// ```
    /// use logbus::{Cluster, ClusterConfig, NewTopic};
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterConfig::builder().brokers(3).build()?)?;
    /// cluster.create_topic(NewTopic::new("t", 3).replication_factor(3))?;
    /// cluster.stop_broker(1)?;
    /// assert!(cluster.is_broker_fenced(1));
    /// let leaders: Vec<_> =
    ///     cluster.describe_topic("t")?.partitions.iter().map(|p| p.leader).collect();
    /// assert!(leaders.iter().all(|&l| l != Some(1)));
    /// cluster.restart_broker(1)?;
    /// assert!(!cluster.is_broker_fenced(1));
    /// cluster.close()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown broker or a cluster of one
    /// broker; [`Error::IllegalState`] if it is not running;
    /// [`Error::Closed`]; [`Error::Io`] from the metadata log (nothing
    /// changed) or from closing its logs (it is stopped all the same).
    pub fn stop_broker(&self, id: u32) -> Result<()> {
        let inner = &self.inner;
        inner.check_fault_target(id)?;
        if inner.running_broker(id).is_none() {
            return Err(Error::IllegalState(format!("broker {id} is not running")));
        }
        inner.mark_broker_stopped(id)?;
        let broker = inner.take_broker(id)?;
        broker.shut_down(true)
    }

    /// Crashes broker `id`: its threads stop and its logs are dropped
    /// without a flush. What it wrote stays in the page cache — unless the
    /// cluster runs on fault-injecting storage, whose power loss (see
    /// `FaultyStorage::power_loss`, `internals` feature, and
    /// [`ClusterConfigBuilder::broker_storage`](crate::ClusterConfigBuilder::broker_storage)
    /// for one broker's own storage) can then take its unsynced data. Its
    /// heartbeats stop: the controller fences it after
    /// `broker.session.timeout.ms`, and until then requests for partitions
    /// it led get the retriable [`Error::NotLeaderOrFollower`].
    ///
    /// ```
    /// use logbus::{Cluster, ClusterConfig, NewTopic};
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterConfig::builder().brokers(3).build()?)?;
    /// cluster.create_topic(NewTopic::new("t", 1).replication_factor(3))?;
    /// cluster.crash_broker(2)?;
    /// assert!(!cluster.is_broker_running(2));
    /// cluster.restart_broker(2)?; // recovery runs as at an open
    /// cluster.close()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`Cluster::stop_broker`] (nothing is flushed, so no flush error).
    pub fn crash_broker(&self, id: u32) -> Result<()> {
        self.inner.crash_broker(id)
    }

    /// Fails broker `id`'s disk while it runs: from this moment every I/O
    /// of the broker (appends, flushes, fetches that read from its files,
    /// checkpoint writes, segment rolls) fails with [`Error::Io`] (`EIO`,
    /// "log directory failed (fail_disk)"); memory maps made before keep
    /// reading. A log fences itself at its first failed write or fsync.
    /// Then, as Kafka's broker does when its last log directory fails, the
    /// broker halts: it leaves its slot (requests for it get the retriable
    /// [`Error::NotLeaderOrFollower`]), the controller fences it before
    /// this returns (its leaderships move to in-sync replicas on other
    /// brokers, it leaves every ISR), and its threads are joined and its
    /// logs dropped with nothing flushed or written. What it wrote before
    /// stays as a crash leaves it (its unsynced data is gone only after a
    /// `FaultyStorage::power_loss` of its own storage).
    ///
    /// A request caught inside the broker's log when its disk fails gets
    /// the retriable [`Error::NotLeaderOrFollower`] too (Kafka answers the
    /// retriable `KAFKA_STORAGE_ERROR`); nothing it carried was
    /// acknowledged, and a resend goes to the new leader.
    /// [`Cluster::restart_broker`] brings the broker back
    /// with its directory as it was (a disk replaced with its contents):
    /// recovery judges what reached it.
    ///
    /// ```
    /// use logbus::{Cluster, ClusterConfig, NewTopic};
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterConfig::builder().brokers(3).build()?)?;
    /// cluster.create_topic(NewTopic::new("t", 3).replication_factor(3))?;
    /// cluster.fail_disk(0)?;
    /// assert!(cluster.is_broker_fenced(0) && !cluster.is_broker_running(0));
    /// let leaders: Vec<_> =
    ///     cluster.describe_topic("t")?.partitions.iter().map(|p| p.leader).collect();
    /// assert!(leaders.iter().all(|&l| l != Some(0)));
    /// cluster.restart_broker(0)?;
    /// assert!(!cluster.is_broker_fenced(0));
    /// cluster.close()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown broker or a cluster of one
    /// broker; [`Error::IllegalState`] if it is not running (nothing
    /// changed); [`Error::Closed`]; [`Error::Io`] from the metadata log
    /// (the broker is down all the same, and the controller fences it at
    /// its next step).
    pub fn fail_disk(&self, id: u32) -> Result<()> {
        self.inner.fail_disk(id)
    }

    /// Restarts broker `id` after a stop, crash or disk failure: its
    /// directory is reopened (recovery runs as at [`Cluster::open`]), every partition the
    /// controller places on it is hosted — as a follower of the current
    /// leader, or as leader where the controller elects it (a partition
    /// left without a live in-sync replica, or, with
    /// `auto.leader.rebalance.enable`, its preferred partitions once it is
    /// back in their ISR) — and its fetchers start. If its session had not
    /// expired yet it is fenced first (a new incarnation never keeps the
    /// old one's leaderships); then it is unfenced before this returns. It
    /// re-enters each ISR when its fetcher has caught up with the leader.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown broker or a cluster of one
    /// broker; [`Error::IllegalState`] if it is running; [`Error::Closed`];
    /// those of [`Cluster::open`] for its directory (it then stays down).
    pub fn restart_broker(&self, id: u32) -> Result<()> {
        self.inner.restart_broker(id)
    }

    /// Pauses broker `id`'s fetching: its followers stop copying from their
    /// leaders (it keeps serving what it leads), so after
    /// `replica.lag.time.max.ms` the leaders drop it from their ISRs.
    /// [`Cluster::resume_fetching`] undoes it; a restart also does.
    ///
    /// # Errors
    /// As [`Cluster::stop_broker`].
    pub fn pause_fetching(&self, id: u32) -> Result<()> {
        self.set_fetching_paused(id, true)
    }

    /// Resumes broker `id`'s fetching after [`Cluster::pause_fetching`]: it
    /// catches up and re-enters the ISRs.
    ///
    /// # Errors
    /// As [`Cluster::stop_broker`].
    pub fn resume_fetching(&self, id: u32) -> Result<()> {
        self.set_fetching_paused(id, false)
    }

    fn set_fetching_paused(&self, id: u32, paused: bool) -> Result<()> {
        self.inner.check_fault_target(id)?;
        let broker = self.inner.broker(id)?;
        broker.set_fetching_paused(paused);
        Ok(())
    }

    /// Cuts broker `id` off from the controller: its threads run on (it
    /// serves and fetches), but its heartbeats are lost, so the controller
    /// fences it after `broker.session.timeout.ms` and moves its
    /// leaderships. As in Kafka, the broker itself is not told; followers
    /// fetching with the new leader epoch refuse it, and its pending
    /// `acks=all` appends end with an error.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown broker or a cluster of one
    /// broker; [`Error::Closed`].
    pub fn cut_off_broker(&self, id: u32) -> Result<()> {
        self.inner.check_fault_target(id)?;
        self.inner.set_broker_cut_off(id, true)
    }

    /// Reconnects broker `id` to the controller after
    /// [`Cluster::cut_off_broker`]: its next heartbeat unfences it.
    ///
    /// # Errors
    /// As [`Cluster::cut_off_broker`].
    pub fn reconnect_broker(&self, id: u32) -> Result<()> {
        self.inner.check_fault_target(id)?;
        self.inner.set_broker_cut_off(id, false)
    }

    /// Whether the controller has fenced broker `id` (stopped, crashed,
    /// its disk failed, or cut off past its session). `false` for an
    /// unknown broker.
    #[must_use]
    pub fn is_broker_fenced(&self, id: u32) -> bool {
        self.inner.is_broker_fenced(id)
    }

    /// Whether broker `id` runs (not stopped, crashed or halted by a disk
    /// failure). `false` for an unknown broker.
    #[must_use]
    pub fn is_broker_running(&self, id: u32) -> bool {
        self.inner.running_broker(id).is_some()
    }

    /// Waits until `condition` holds, checking it now and again each time
    /// the controller applies a partition change (a leader, leader epoch or
    /// ISR change, a broker fenced or unfenced with partitions on it), when
    /// the topics change, when a transaction gains partitions, and after
    /// each pass of the transaction coordinator's timer (which aborts
    /// transactions past their `transaction.timeout.ms`); gives up after `timeout` of real time (a failure
    /// guard: nothing else here reads the wall clock) or when the cluster
    /// closes. Returns whether it holds. Made for failover tests: wait for
    /// a fencing, a new leader or a complete ISR without polling.
    ///
    /// ```
    /// use std::time::Duration;
    /// use logbus::{Cluster, ClusterConfig, NewTopic};
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterConfig::builder().brokers(3).build()?)?;
    /// cluster.create_topic(NewTopic::new("t", 3).replication_factor(3))?;
    /// cluster.stop_broker(2)?;
    /// cluster.restart_broker(2)?;
    /// // Broker 2 re-enters each ISR once its fetcher has caught up.
    /// let complete = |c: &Cluster| {
    ///     c.describe_topic("t")
    ///         .is_ok_and(|d| d.partitions.iter().all(|p| p.isr.len() == 3))
    /// };
    /// assert!(cluster.wait_until(Duration::from_secs(30), complete));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&Cluster) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.inner.watch_metadata(&tx);
        self.inner.watch_state(&tx);
        let held = loop {
            if condition(self) {
                break true;
            }
            if self.inner.check_open().is_err() {
                break false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || rx.recv_timeout(left).is_err() {
                break condition(self);
            }
        };
        self.inner.unwatch_metadata(&tx);
        self.inner.unwatch_state(&tx);
        held
    }

    /// The partition changes the controller applied since the cluster
    /// opened: leader changes and ISR shrinks and expansions.
    ///
    /// ```
    /// use logbus::{Cluster, ClusterConfig, NewTopic};
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterConfig::builder().brokers(3).build()?)?;
    /// cluster.create_topic(NewTopic::new("t", 3).replication_factor(3))?;
    /// cluster.stop_broker(0)?;
    /// let stats = cluster.replication_stats();
    /// assert_eq!(stats.leader_changes, 1); // the partition broker 0 led
    /// assert_eq!(stats.isr_shrinks, 3); // it left every ISR
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn replication_stats(&self) -> ReplicationStats {
        self.inner.stats.snapshot()
    }

    /// Slows broker `id`'s fetching down: all its fetcher threads together
    /// copy at most `bytes_per_second` bytes of batches per second from
    /// their leaders, measured on the cluster's clock, or as fast as they
    /// can again with `None` (in the spirit of Kafka's replication quota
    /// `follower.replication.throttled.rate`, which however spares
    /// in-sync replicas; this throttles every partition the broker
    /// follows). A fetch still returns at least one whole batch, so a
    /// burst may pass the rate briefly; the next fetch then waits until
    /// the average is back under it. A follower slowed below its leader's
    /// rate of appends falls behind, leaves the ISR after
    /// `replica.lag.time.max.ms`, and re-enters it once it catches up.
    /// A restart of the broker ([`Cluster::restart_broker`]) lifts the
    /// throttle, as it ends a pause.
    ///
    /// ```
    /// use std::time::Duration;
    /// use logbus::{Acks, Cluster, ClusterConfig, NewTopic, Producer, ProducerConfig, ProducerRecord};
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterConfig::builder().brokers(3).build()?)?;
    /// cluster.create_topic(NewTopic::new("t", 1).replication_factor(3))?;
    /// // Broker 2 copies 1 KiB per second at most.
    /// cluster.throttle_fetching(2, Some(1024))?;
    /// let producer = Producer::new(&cluster, ProducerConfig::builder().acks(Acks::Leader).build()?)?;
    /// for i in 0..100 {
    ///     producer.send(ProducerRecord::new("t", format!("record {i}")))?.wait()?;
    /// }
    /// // Full speed again: it catches up, in the ISR (or back in it, had
    /// // it fallen behind for `replica.lag.time.max.ms`).
    /// cluster.throttle_fetching(2, None)?;
    /// let in_isr = |c: &Cluster| c.describe_topic("t").is_ok_and(|d| d.partitions[0].isr.contains(&2));
    /// assert!(cluster.wait_until(Duration::from_secs(30), in_isr));
    /// producer.close()?;
    /// cluster.close()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`Cluster::stop_broker`]; [`Error::InvalidArgument`] for a rate
    /// of 0 (that is [`Cluster::pause_fetching`]). Nothing changes then.
    pub fn throttle_fetching(&self, id: u32, bytes_per_second: Option<u64>) -> Result<()> {
        self.inner.check_fault_target(id)?;
        if bytes_per_second == Some(0) {
            return Err(Error::InvalidArgument(
                "a fetch throttle of 0 bytes per second fetches nothing: use pause_fetching".into(),
            ));
        }
        let broker = self.inner.broker(id)?;
        if let Some(fetchers) = broker.replicas.fetchers() {
            fetchers.set_throttle(bytes_per_second);
        }
        Ok(())
    }
}
