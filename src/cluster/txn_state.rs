//! A transactional id's state machine, as Kafka's transaction coordinator
//! runs it (`TransactionMetadata`, `TransactionCoordinator`), as pure
//! functions: each request either is refused with the error Kafka answers,
//! or yields the next state, which the coordinator writes to
//! `__transaction_state` before it acts on it.
//!
//! ```text
//! Empty ──add partitions──▶ Ongoing ──end(commit)──▶ PrepareCommit ──markers──▶ CompleteCommit
//!   ▲                          │      ──end(abort)───▶ PrepareAbort  ──markers──▶ CompleteAbort
//!   └────── init (epoch + 1) ◀─┴─ timeout or init: epoch + 1, PrepareAbort
//! ```
//!
//! Markers are written with the producer's epoch (Kafka's transactions
//! version 0/1); a fencing bump raises the epoch before the abort, so the
//! old producer's later requests are refused as fenced.

use std::collections::BTreeSet;

use super::txn_log::{TxnLogValue, TxnStatus};

/// The largest epoch a producer id is used with; past it a new producer
/// id is allocated (Kafka: `Short.MAX_VALUE - 1`, keeping one bump for a
/// fencing).
pub(crate) const MAX_EPOCH: i16 = i16::MAX - 1;

/// Why the coordinator refused a request (Kafka's error codes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TxnRefusal {
    /// The request carried an older epoch: a newer producer with the same
    /// transactional id took over (`PRODUCER_FENCED`).
    ProducerFenced {
        /// The request's epoch.
        epoch: i16,
        /// The current one.
        current: i16,
    },
    /// The request carried another producer id than the transactional
    /// id's (`INVALID_PRODUCER_ID_MAPPING`).
    InvalidProducerIdMapping,
    /// The previous transaction is still completing; retry
    /// (`CONCURRENT_TRANSACTIONS`, retriable).
    ConcurrentTransactions,
    /// The request does not fit the state (`INVALID_TXN_STATE`): ending a
    /// transaction that is not open, committing one that is aborting.
    InvalidTxnState(TxnStatus),
}

/// One transactional id's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TxnMetadata {
    /// The producer id in use.
    pub(crate) producer_id: i64,
    /// Its epoch (-1 before the first init).
    pub(crate) epoch: i16,
    /// `transaction.timeout.ms`.
    pub(crate) timeout_ms: i32,
    /// The state.
    pub(crate) status: TxnStatus,
    /// The partitions of the open (or completing) transaction.
    pub(crate) partitions: BTreeSet<(String, u32)>,
    /// When the open transaction started (-1 if none).
    pub(crate) start_ms: i64,
    /// When the state last changed.
    pub(crate) last_update_ms: i64,
}

/// What an init asks of the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InitOutcome {
    /// The new state: the epoch bumped (or a new producer id at epoch 0),
    /// `Empty`. Answer the producer with its id and epoch once written.
    Ready(TxnMetadata),
    /// A transaction is open: fence it first. The new state (epoch
    /// bumped, `PrepareAbort`) is written and its abort markers sent; the
    /// producer retries its init, which then succeeds.
    FenceAndAbort(TxnMetadata),
}

impl TxnMetadata {
    /// A new transactional id's state before its first init.
    pub(crate) fn new(producer_id: i64, timeout_ms: i32, now_ms: i64) -> Self {
        TxnMetadata {
            producer_id,
            epoch: -1,
            timeout_ms,
            status: TxnStatus::Empty,
            partitions: BTreeSet::new(),
            start_ms: -1,
            last_update_ms: now_ms,
        }
    }

    pub(crate) fn check_producer(&self, producer_id: i64, epoch: i16) -> Result<(), TxnRefusal> {
        if producer_id != self.producer_id {
            return Err(TxnRefusal::InvalidProducerIdMapping);
        }
        if epoch != self.epoch {
            return Err(TxnRefusal::ProducerFenced {
                epoch,
                current: self.epoch,
            });
        }
        Ok(())
    }

    /// `InitProducerId` (from `init_transactions`): bumps the epoch, which
    /// fences any older producer of this transactional id. `new_producer_id`
    /// is called for a fresh producer id when the epoch is exhausted.
    ///
    /// # Errors
    /// `ConcurrentTransactions` while a transaction is completing.
    pub(crate) fn init(
        &self,
        timeout_ms: i32,
        now_ms: i64,
        new_producer_id: impl FnOnce() -> i64,
    ) -> Result<InitOutcome, TxnRefusal> {
        match self.status {
            TxnStatus::PrepareCommit
            | TxnStatus::PrepareAbort
            | TxnStatus::PrepareEpochFence
            | TxnStatus::Dead => Err(TxnRefusal::ConcurrentTransactions),
            TxnStatus::Ongoing => Ok(InitOutcome::FenceAndAbort(self.fenced(now_ms))),
            TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort => {
                let (producer_id, epoch) = if self.epoch >= MAX_EPOCH {
                    (new_producer_id(), 0)
                } else {
                    (self.producer_id, self.epoch + 1)
                };
                Ok(InitOutcome::Ready(TxnMetadata {
                    producer_id,
                    epoch,
                    timeout_ms,
                    status: TxnStatus::Empty,
                    partitions: BTreeSet::new(),
                    start_ms: -1,
                    last_update_ms: now_ms,
                }))
            }
        }
    }

    /// The open transaction aborted by the coordinator (a timeout, or an
    /// init from a newer producer): the epoch bumped so the old producer is
    /// fenced, `PrepareAbort`.
    fn fenced(&self, now_ms: i64) -> TxnMetadata {
        TxnMetadata {
            epoch: self.epoch.saturating_add(1),
            status: TxnStatus::PrepareAbort,
            last_update_ms: now_ms,
            ..self.clone()
        }
    }

    /// `AddPartitionsToTxn` (a send to a new partition, or
    /// `send_offsets_to_transaction`'s offsets partition).
    ///
    /// # Errors
    /// `ProducerFenced` / `InvalidProducerIdMapping` for another producer;
    /// `ConcurrentTransactions` while the previous transaction completes.
    pub(crate) fn add_partitions(
        &self,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, u32)],
        now_ms: i64,
    ) -> Result<TxnMetadata, TxnRefusal> {
        self.check_producer(producer_id, epoch)?;
        match self.status {
            TxnStatus::PrepareCommit
            | TxnStatus::PrepareAbort
            | TxnStatus::PrepareEpochFence
            | TxnStatus::Dead => Err(TxnRefusal::ConcurrentTransactions),
            TxnStatus::Ongoing => {
                let mut next = self.clone();
                next.partitions.extend(partitions.iter().cloned());
                next.last_update_ms = now_ms;
                Ok(next)
            }
            TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort => {
                Ok(TxnMetadata {
                    status: TxnStatus::Ongoing,
                    partitions: partitions.iter().cloned().collect(),
                    start_ms: now_ms,
                    last_update_ms: now_ms,
                    ..self.clone()
                })
            }
        }
    }

    /// `EndTxn`: commit or abort. `Ok(None)` answers a retry of an end
    /// that already completed the same way (nothing to write).
    ///
    /// # Errors
    /// `ProducerFenced` / `InvalidProducerIdMapping` for another producer;
    /// `ConcurrentTransactions` while this very end is still completing;
    /// `InvalidTxnState` when no transaction is open or the retry asks the
    /// other outcome.
    pub(crate) fn end(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        now_ms: i64,
    ) -> Result<Option<TxnMetadata>, TxnRefusal> {
        self.check_producer(producer_id, epoch)?;
        match (self.status, commit) {
            (TxnStatus::Ongoing, _) => Ok(Some(TxnMetadata {
                status: if commit {
                    TxnStatus::PrepareCommit
                } else {
                    TxnStatus::PrepareAbort
                },
                last_update_ms: now_ms,
                ..self.clone()
            })),
            (TxnStatus::CompleteCommit, true) | (TxnStatus::CompleteAbort, false) => Ok(None),
            (TxnStatus::PrepareCommit, true) | (TxnStatus::PrepareAbort, false) => {
                Err(TxnRefusal::ConcurrentTransactions)
            }
            (status, _) => Err(TxnRefusal::InvalidTxnState(status)),
        }
    }

    /// Every marker of a `Prepare*` state is written: the transaction is
    /// complete. `None` from any other state (nothing to complete).
    pub(crate) fn complete(&self, now_ms: i64) -> Option<TxnMetadata> {
        let status = match self.status {
            TxnStatus::PrepareCommit => TxnStatus::CompleteCommit,
            TxnStatus::PrepareAbort => TxnStatus::CompleteAbort,
            _ => return None,
        };
        // Field by field: `..self.clone()` would copy the partitions only
        // to drop them.
        Some(TxnMetadata {
            producer_id: self.producer_id,
            epoch: self.epoch,
            timeout_ms: self.timeout_ms,
            status,
            partitions: BTreeSet::new(),
            start_ms: self.start_ms,
            last_update_ms: now_ms,
        })
    }

    /// The coordinator's timeout check: an open transaction older than its
    /// timeout is aborted with a fencing bump.
    pub(crate) fn expire(&self, now_ms: i64) -> Option<TxnMetadata> {
        (self.status == TxnStatus::Ongoing
            && now_ms.saturating_sub(self.start_ms) > i64::from(self.timeout_ms))
        .then(|| self.fenced(now_ms))
    }

    /// Whether the transactional id has expired (Kafka's
    /// `TransactionStateManager.shouldExpire`): its state allows it — no
    /// transaction open or completing (`Empty`, `CompleteCommit`,
    /// `CompleteAbort`; Kafka's `isExpirationAllowed`) — and its last
    /// change is at least `expiration_ms` old
    /// (`txnLastUpdateTimestamp <= now - transactional.id.expiration.ms`).
    /// The coordinator then writes its tombstone and forgets it.
    pub(crate) fn id_expired(&self, now_ms: i64, expiration_ms: i64) -> bool {
        matches!(
            self.status,
            TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort
        ) && self.last_update_ms <= now_ms.saturating_sub(expiration_ms)
    }

    /// The record value of this state.
    #[cfg(test)]
    pub(crate) fn to_log_value(&self) -> TxnLogValue {
        let mut partitions: std::collections::BTreeMap<String, Vec<u32>> =
            std::collections::BTreeMap::new();
        for (topic, p) in &self.partitions {
            partitions.entry(topic.clone()).or_default().push(*p);
        }
        TxnLogValue {
            producer_id: self.producer_id,
            producer_epoch: self.epoch,
            timeout_ms: self.timeout_ms,
            status: self.status,
            partitions,
            last_update_ms: self.last_update_ms,
            start_ms: self.start_ms,
        }
    }

    /// The state a record value holds (at replay).
    pub(crate) fn from_log_value(v: &TxnLogValue) -> Self {
        TxnMetadata {
            producer_id: v.producer_id,
            epoch: v.producer_epoch,
            timeout_ms: v.timeout_ms,
            status: v.status,
            partitions: v
                .partitions
                .iter()
                .flat_map(|(t, ps)| ps.iter().map(move |&p| (t.clone(), p)))
                .collect(),
            start_ms: v.start_ms,
            last_update_ms: v.last_update_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn tp(p: u32) -> (String, u32) {
        ("t".to_string(), p)
    }

    fn ready(outcome: InitOutcome) -> TxnMetadata {
        match outcome {
            InitOutcome::Ready(m) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_transaction_commits_through_prepare() {
        let m = ready(
            TxnMetadata::new(4, 60_000, 0)
                .init(60_000, 1, || 99)
                .unwrap(),
        );
        assert_eq!((m.producer_id, m.epoch, m.status), (4, 0, TxnStatus::Empty));
        let m = m.add_partitions(4, 0, &[tp(0)], 2).unwrap();
        let m = m.add_partitions(4, 0, &[tp(1), tp(0)], 3).unwrap();
        assert_eq!(m.status, TxnStatus::Ongoing);
        assert_eq!(m.start_ms, 2);
        assert_eq!(m.partitions.len(), 2);
        let prepared = m.end(4, 0, true, 4).unwrap().unwrap();
        assert_eq!(prepared.status, TxnStatus::PrepareCommit);
        // A retry while the markers are written waits; the other outcome
        // is refused.
        assert_eq!(
            prepared.end(4, 0, true, 5),
            Err(TxnRefusal::ConcurrentTransactions)
        );
        assert_eq!(
            prepared.end(4, 0, false, 5),
            Err(TxnRefusal::InvalidTxnState(TxnStatus::PrepareCommit))
        );
        let done = prepared.complete(6).unwrap();
        assert_eq!(done.status, TxnStatus::CompleteCommit);
        assert!(done.partitions.is_empty());
        // A retry of the finished commit succeeds with nothing to do.
        assert_eq!(done.end(4, 0, true, 7), Ok(None));
        assert!(done.end(4, 0, false, 7).is_err());
        // The next transaction starts from a complete state.
        let next = done.add_partitions(4, 0, &[tp(2)], 8).unwrap();
        assert_eq!((next.status, next.start_ms), (TxnStatus::Ongoing, 8));
    }

    #[test]
    fn an_init_fences_the_older_producer() {
        let m = ready(TxnMetadata::new(4, 1000, 0).init(1000, 0, || 99).unwrap());
        let open = m.add_partitions(4, 0, &[tp(0)], 1).unwrap();
        // A second instance with the same transactional id.
        let fencing = match open.init(1000, 2, || 99).unwrap() {
            InitOutcome::FenceAndAbort(m) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (fencing.epoch, fencing.status),
            (1, TxnStatus::PrepareAbort)
        );
        assert_eq!(
            fencing.init(1000, 3, || 99),
            Err(TxnRefusal::ConcurrentTransactions)
        );
        // The zombie's requests are fenced from now on.
        assert_eq!(
            fencing.add_partitions(4, 0, &[tp(1)], 3),
            Err(TxnRefusal::ProducerFenced {
                epoch: 0,
                current: 1
            })
        );
        let aborted = fencing.complete(4).unwrap();
        let m = ready(aborted.init(1000, 5, || 99).unwrap());
        assert_eq!((m.producer_id, m.epoch), (4, 2));
        assert_eq!(
            m.end(5, 2, true, 6),
            Err(TxnRefusal::InvalidProducerIdMapping)
        );
        assert_eq!(
            m.end(4, 2, true, 6),
            Err(TxnRefusal::InvalidTxnState(TxnStatus::Empty))
        );
    }

    #[test]
    fn an_exhausted_epoch_takes_a_new_producer_id() {
        let mut m = TxnMetadata::new(4, 1000, 0);
        m.epoch = MAX_EPOCH;
        let m = ready(m.init(1000, 1, || 77).unwrap());
        assert_eq!((m.producer_id, m.epoch), (77, 0));
    }

    #[test]
    fn a_transaction_left_open_expires_into_an_abort() {
        let m = ready(TxnMetadata::new(4, 1000, 0).init(1000, 0, || 99).unwrap());
        let open = m.add_partitions(4, 0, &[tp(0)], 100).unwrap();
        assert_eq!(open.expire(1100), None);
        let aborting = open.expire(1101).unwrap();
        assert_eq!(
            (aborting.epoch, aborting.status),
            (1, TxnStatus::PrepareAbort)
        );
        assert_eq!(m.expire(1_000_000), None);
    }

    #[test]
    fn an_id_expires_only_idle_and_with_no_transaction_in_flight() {
        let m = ready(TxnMetadata::new(4, 1000, 0).init(1000, 50, || 99).unwrap());
        // Kafka's rule is inclusive: last update <= now - expiration.
        assert!(!m.id_expired(149, 100));
        assert!(m.id_expired(150, 100));
        let open = m.add_partitions(4, 0, &[tp(0)], 60).unwrap();
        assert!(!open.id_expired(1_000_000, 100), "an open transaction");
        let prepared = open.end(4, 0, true, 70).unwrap().unwrap();
        assert!(!prepared.id_expired(1_000_000, 100), "a completing one");
        let fencing = open.expire(2000).unwrap();
        assert!(!fencing.id_expired(1_000_000, 100));
        let done = prepared.complete(80).unwrap();
        assert!(!done.id_expired(179, 100));
        assert!(done.id_expired(180, 100));
        assert!(fencing.complete(90).unwrap().id_expired(190, 100));
        let dead = TxnMetadata {
            status: TxnStatus::Dead,
            ..done
        };
        assert!(!dead.id_expired(1_000_000, 100));
        // No overflow at the clock's extremes.
        assert!(!m.id_expired(i64::MIN, i64::MAX));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Init,
        Add(u32),
        End(bool),
        Complete,
        Expire,
        Stale,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            Just(Op::Init),
            (0..4u32).prop_map(Op::Add),
            any::<bool>().prop_map(Op::End),
            Just(Op::Complete),
            Just(Op::Expire),
            Just(Op::Stale),
        ]
    }

    proptest! {
        /// Any sequence of requests: the epoch never goes back, a
        /// transaction completes only the way it was prepared, a complete
        /// or empty state holds no partitions, a producer with an older
        /// epoch is always refused, and every state survives its record.
        #[test]
        fn the_state_machine_keeps_its_invariants(ops in proptest::collection::vec(op(), 1..60)) {
            let mut m = TxnMetadata::new(1, 500, 0);
            let mut next_id = 2;
            let mut now = 0;
            for op in ops {
                now += 100;
                let before = m.clone();
                let after = match op {
                    Op::Init => match m.init(500, now, || { next_id += 1; next_id }) {
                        Ok(InitOutcome::Ready(n)) => Some(n),
                        Ok(InitOutcome::FenceAndAbort(n)) => {
                            prop_assert_eq!(before.status, TxnStatus::Ongoing);
                            Some(n)
                        }
                        Err(_) => None,
                    },
                    Op::Add(p) => m.add_partitions(m.producer_id, m.epoch, &[tp(p)], now).ok(),
                    Op::End(commit) => m.end(m.producer_id, m.epoch, commit, now).ok().flatten(),
                    Op::Complete => m.complete(now),
                    Op::Expire => m.expire(now),
                    Op::Stale => {
                        if m.epoch > 0 {
                            let stale = m.add_partitions(m.producer_id, m.epoch - 1, &[tp(0)], now);
                            let fenced = matches!(stale, Err(TxnRefusal::ProducerFenced { .. }));
                            prop_assert!(fenced);
                        }
                        None
                    }
                };
                if let Some(n) = after {
                    if n.producer_id == before.producer_id {
                        prop_assert!(n.epoch >= before.epoch);
                    } else {
                        prop_assert_eq!(n.epoch, 0);
                    }
                    match n.status {
                        TxnStatus::CompleteCommit => {
                            prop_assert_eq!(before.status, TxnStatus::PrepareCommit);
                        }
                        TxnStatus::CompleteAbort => {
                            prop_assert_eq!(before.status, TxnStatus::PrepareAbort);
                        }
                        TxnStatus::PrepareCommit => {
                            prop_assert_eq!(before.status, TxnStatus::Ongoing);
                        }
                        _ => {}
                    }
                    if matches!(n.status, TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort) {
                        prop_assert!(n.partitions.is_empty());
                    } else {
                        // A transaction open or completing never lets its
                        // id expire, however old.
                        prop_assert!(!n.id_expired(i64::MAX, 1));
                    }
                    // A state just changed is never expired.
                    prop_assert!(!n.id_expired(now, 1));
                    prop_assert_eq!(TxnMetadata::from_log_value(&n.to_log_value()), n.clone());
                    m = n;
                }
            }
        }
    }
}
