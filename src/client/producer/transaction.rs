//! The transactional producer's state: Kafka's `TransactionManager`.
//!
//! ```text
//! Uninitialized --init_transactions--> Ready --begin_transaction--> InTransaction
//! InTransaction --commit_transaction--> CommittingTransaction --> Ready
//! InTransaction | AbortableError --abort_transaction--> AbortingTransaction --> Ready
//! InTransaction | CommittingTransaction --a batch or request failed--> AbortableError
//! any --fenced (ProducerFenced, InvalidProducerEpoch) or InvalidTxnState--> FatalError
//! ```
//!
//! The manager lives in the [`Accumulator`](super::accumulator::Accumulator),
//! under the producer's one mutex, so a `send` checks the state and stamps
//! its batch with the transaction ([`TxnTag`]) under the lock it takes
//! anyway. The blocking calls (`init_transactions`, `commit_transaction`,
//! ...) mark the manager busy, release the lock, talk to the cluster's
//! transaction coordinator, and take the lock again to record the outcome.
//!
//! The sender thread adds each partition to the transaction (Kafka's
//! `AddPartitionsToTxn`) before the transaction's first batch to it is
//! appended, reports every failed batch of a transaction here (which makes
//! the transaction abortable, or the producer fatally fenced), and fails
//! the unsent batches of a transaction being aborted.
//!
//! `commit_transaction` hands the commit to the sender thread
//! ([`CommitJob`]), which ends the transaction at the coordinator as soon
//! as it finished the transaction's last batch: one hand-off between the
//! threads per commit rather than a flush followed by a wake-up for the
//! markers. PrepareCommit is written only after every batch of the
//! transaction was acknowledged (a crash after it completes the
//! transaction on restart). A retriable refusal is retried on the
//! caller's thread for `max.block.ms`, and a commit the sender cannot
//! answer (it stopped) runs there as a whole; inside a callback a commit
//! fails as a flush there does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::Ordering;

use super::Core;
use super::accumulator::{Accumulator, CommitJob};
use crate::client::consumer::ConsumerGroupMetadata;
use crate::cluster::{Markers, OffsetAndMetadata};
use crate::error::{Error, Result};
use crate::types::TopicPartition;

/// Which transaction a batch belongs to, with the producer id and epoch
/// it is written under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TxnTag {
    /// The producer's transaction number (from 1).
    pub(crate) number: u64,
    pub(crate) producer_id: i64,
    pub(crate) epoch: i16,
}

/// Kafka's `TransactionManager.State`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxnState {
    Uninitialized,
    Initializing,
    Ready,
    InTransaction,
    CommittingTransaction,
    AbortingTransaction,
    AbortableError,
    FatalError,
}

/// The transactional producer's state.
#[derive(Debug)]
pub(crate) struct TxnManager {
    pub(crate) transactional_id: Arc<str>,
    timeout_ms: i32,
    state: TxnState,
    producer_id: i64,
    epoch: i16,
    /// The current (or last) transaction's number; 0 before the first.
    number: u64,
    /// The coordinator knows the current transaction (a partition or a
    /// group's offsets were added to it): ending it needs `EndTxn`.
    started: bool,
    /// A batch of the current transaction failed: its partition's
    /// sequences may be off, so the abort takes a new epoch.
    bump_epoch: bool,
    /// Why the producer is in `AbortableError` or `FatalError`.
    error: Option<Error>,
    /// The transaction being aborted: the sender fails its unsent batches.
    pub(crate) aborting: Option<u64>,
    /// A blocking call runs (calls of clones wait for nothing: a second
    /// one is refused).
    busy: bool,
}

/// What a blocking call does, for the state checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Init,
    Begin,
    SendOffsets,
    Commit,
    Abort,
}

impl Call {
    fn name(self) -> &'static str {
        match self {
            Call::Init => "init_transactions",
            Call::Begin => "begin_transaction",
            Call::SendOffsets => "send_offsets_to_transaction",
            Call::Commit => "commit_transaction",
            Call::Abort => "abort_transaction",
        }
    }
}

impl TxnManager {
    pub(crate) fn new(transactional_id: &str, timeout_ms: i64) -> Self {
        TxnManager {
            transactional_id: transactional_id.into(),
            // `ProducerConfigBuilder::build` checked it fits.
            timeout_ms: i32::try_from(timeout_ms).unwrap_or(i32::MAX),
            state: TxnState::Uninitialized,
            producer_id: -1,
            epoch: -1,
            number: 0,
            started: false,
            bump_epoch: false,
            error: None,
            aborting: None,
            busy: false,
        }
    }

    fn illegal(&self, what: &str) -> Error {
        Error::IllegalState(format!(
            "transactional id {}: cannot {what} in state {:?}",
            self.transactional_id, self.state
        ))
    }

    /// The error a call gets in `FatalError` or `AbortableError`.
    fn current_error(&self) -> Error {
        self.error.as_ref().map_or_else(
            || Error::Internal("a transactional producer failed without an error".into()),
            Error::duplicate,
        )
    }

    /// Checks that `call` may start now and marks the manager busy.
    fn enter(&mut self, call: Call) -> Result<()> {
        if self.state == TxnState::FatalError {
            return Err(self.current_error());
        }
        if self.busy {
            return Err(Error::IllegalState(format!(
                "transactional id {}: {} while another transactional call is in progress",
                self.transactional_id,
                call.name()
            )));
        }
        let allowed = match call {
            Call::Init => matches!(self.state, TxnState::Uninitialized | TxnState::Initializing),
            Call::Begin => self.state == TxnState::Ready,
            Call::SendOffsets => self.state == TxnState::InTransaction,
            // A commit or abort that timed out is retried by calling it again.
            Call::Commit => matches!(
                self.state,
                TxnState::InTransaction | TxnState::CommittingTransaction
            ),
            Call::Abort => matches!(
                self.state,
                TxnState::InTransaction | TxnState::AbortableError | TxnState::AbortingTransaction
            ),
        };
        if !allowed {
            if self.state == TxnState::AbortableError {
                // Kafka's "cannot commit: the transaction must be aborted".
                return Err(self.current_error());
            }
            return Err(self.illegal(call.name()));
        }
        if call != Call::Begin {
            self.busy = true;
        }
        // In the same critical section as the checks: a batch failure the
        // sender reports in between must not be overwritten.
        match call {
            Call::Commit => self.state = TxnState::CommittingTransaction,
            Call::Abort => {
                self.state = TxnState::AbortingTransaction;
                self.aborting = Some(self.number);
            }
            _ => {}
        }
        Ok(())
    }

    /// The tag of a batch sent now, or why a send is refused.
    pub(crate) fn check_send(&self) -> Result<TxnTag> {
        match self.state {
            TxnState::InTransaction => Ok(TxnTag {
                number: self.number,
                producer_id: self.producer_id,
                epoch: self.epoch,
            }),
            TxnState::FatalError | TxnState::AbortableError => Err(self.current_error()),
            _ => Err(self.illegal("send outside a transaction (call begin_transaction first)")),
        }
    }

    /// What ends the current transaction, its batches all finished: its
    /// error if it must be aborted; `None` if the coordinator never heard
    /// of it (nothing to end); else the id, producer id and epoch of its
    /// `EndTxn`.
    fn commit_ready(&self) -> Result<Option<(Arc<str>, i64, i16)>> {
        if matches!(self.state, TxnState::AbortableError | TxnState::FatalError) {
            // A send of the transaction failed: it must be aborted.
            return Err(self.current_error());
        }
        if !self.started {
            return Ok(None);
        }
        Ok(Some((
            self.transactional_id.clone(),
            self.producer_id,
            self.epoch,
        )))
    }

    /// The coordinator added a partition of transaction `number`.
    pub(crate) fn started(&mut self, number: u64) {
        if number == self.number {
            self.started = true;
        }
    }

    /// A batch of transaction `number` (or a request for it) failed with
    /// `error`.
    pub(crate) fn batch_failed(&mut self, number: u64, error: &Error) {
        if self.state == TxnState::FatalError {
            return;
        }
        if let Some(fatal) = self.fatal(error) {
            self.state = TxnState::FatalError;
            self.error = Some(fatal);
            return;
        }
        if number != self.number {
            return;
        }
        self.bump_epoch = true;
        if matches!(
            self.state,
            TxnState::InTransaction | TxnState::CommittingTransaction
        ) {
            self.state = TxnState::AbortableError;
            self.error = Some(error.duplicate());
        }
    }

    /// The error a fatal failure leaves, or `None` if `error` is not
    /// fatal. A stale epoch is fencing, whoever noticed it.
    fn fatal(&self, error: &Error) -> Option<Error> {
        match error {
            Error::ProducerFenced { .. } | Error::InvalidTxnState { .. } => Some(error.duplicate()),
            Error::InvalidProducerEpoch { epoch, current, .. } => Some(Error::ProducerFenced {
                transactional_id: self.transactional_id.to_string(),
                epoch: *epoch,
                current: *current,
            }),
            _ => None,
        }
    }

    /// Records the failure of a blocking call: fatal errors make the
    /// producer fatal; timeouts, retriable errors, a closed cluster and
    /// bad arguments change nothing (the call may be retried); any other
    /// error of a call inside a transaction makes it abortable.
    fn call_failed(&mut self, call: Call, error: Error) -> Error {
        if let Some(fatal) = self.fatal(&error) {
            self.state = TxnState::FatalError;
            self.error = Some(fatal.duplicate());
            return fatal;
        }
        let harmless =
            error.is_retriable() || matches!(error, Error::Closed(_) | Error::InvalidArgument(_));
        if call == Call::Init {
            if !harmless {
                // Kafka: INVALID_TRANSACTION_TIMEOUT and the like are fatal.
                self.state = TxnState::FatalError;
                self.error = Some(error.duplicate());
            } else {
                self.state = TxnState::Uninitialized;
            }
        } else if !harmless && self.state != TxnState::FatalError {
            self.state = TxnState::AbortableError;
            self.error = Some(error.duplicate());
        }
        error
    }
}

/// The manager of a transactional producer, or why there is none.
fn manager(acc: &mut Accumulator) -> Result<&mut TxnManager> {
    acc.txn.as_mut().ok_or_else(|| {
        Error::IllegalState(
            "transactional calls need a transactional.id in the producer's config".into(),
        )
    })
}

impl Core {
    /// Starts `call`: the producer must be open and transactional, and
    /// the state must allow it. Returns the transactional id.
    fn enter(&self, call: Call) -> Result<Arc<str>> {
        let mut acc = self.acc.lock();
        self.check_open(&acc)?;
        let txn = manager(&mut acc)?;
        txn.enter(call)?;
        Ok(txn.transactional_id.clone())
    }

    /// Ends a blocking call with `result`, recording a failure.
    fn leave<T>(&self, call: Call, result: Result<T>) -> Result<T> {
        let mut acc = self.acc.lock();
        let txn = manager(&mut acc)?;
        txn.busy = false;
        result.map_err(|e| txn.call_failed(call, e))
    }

    /// Runs `f` until it succeeds or fails with an error that is not
    /// retriable, waiting `retry.backoff.ms` of clock time between tries,
    /// for at most `max.block.ms`.
    fn retrying<T>(&self, op: &'static str, mut f: impl FnMut() -> Result<T>) -> Result<T> {
        let ticks = self.clock.subscribe();
        let start = self.clock.now_ms();
        let deadline = start.saturating_add(self.max_block_ms);
        loop {
            match f() {
                Err(e) if e.is_retriable() => {}
                done => return done,
            }
            let retry_at = self.clock.now_ms().saturating_add(self.retry_backoff_ms);
            loop {
                let now = self.clock.now_ms();
                if now >= deadline {
                    return Err(Error::Timeout {
                        op,
                        waited: Duration::from_millis(now.saturating_sub(start).unsigned_abs()),
                    });
                }
                if now >= retry_at {
                    break;
                }
                let timer = match self.clock.wait_hint(retry_at.min(deadline)) {
                    Some(d) => crossbeam_channel::after(d),
                    None => crossbeam_channel::never(),
                };
                crossbeam_channel::select! {
                    recv(ticks) -> _ => {}
                    recv(timer) -> _ => {}
                }
            }
            self.cluster.check_open()?;
        }
    }

    /// The producer id and epoch, and the transaction's number.
    fn current(&self) -> Result<(i64, i16, u64, bool, bool)> {
        let mut acc = self.acc.lock();
        let txn = manager(&mut acc)?;
        Ok((
            txn.producer_id,
            txn.epoch,
            txn.number,
            txn.started,
            txn.bump_epoch,
        ))
    }

    pub(crate) fn init_transactions(&self) -> Result<()> {
        let id = self.enter(Call::Init)?;
        {
            let mut acc = self.acc.lock();
            manager(&mut acc)?.state = TxnState::Initializing;
        }
        let timeout = {
            let mut acc = self.acc.lock();
            manager(&mut acc)?.timeout_ms
        };
        let result = self.retrying("init_transactions (max.block.ms)", || {
            self.cluster.init_producer_id(&id, timeout)
        });
        let (producer_id, epoch) = self.leave(Call::Init, result)?;
        let mut acc = self.acc.lock();
        let txn = manager(&mut acc)?;
        txn.producer_id = producer_id;
        txn.epoch = epoch;
        txn.state = TxnState::Ready;
        Ok(())
    }

    pub(crate) fn begin_transaction(&self) -> Result<()> {
        let mut acc = self.acc.lock();
        self.check_open(&acc)?;
        let txn = manager(&mut acc)?;
        txn.enter(Call::Begin)?;
        txn.state = TxnState::InTransaction;
        txn.number += 1;
        txn.started = false;
        txn.bump_epoch = false;
        txn.error = None;
        Ok(())
    }

    pub(crate) fn send_offsets_to_transaction(
        &self,
        offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>,
        metadata: &ConsumerGroupMetadata,
    ) -> Result<()> {
        let group = metadata.group_id();
        let id = self.enter(Call::SendOffsets)?;
        let result = self
            .current()
            .and_then(|(producer_id, epoch, number, _, _)| {
                self.retrying("send_offsets_to_transaction (max.block.ms)", || {
                    self.cluster
                        .add_offsets_to_txn(&id, producer_id, epoch, group)
                })?;
                {
                    let mut acc = self.acc.lock();
                    manager(&mut acc)?.started(number);
                }
                self.retrying("send_offsets_to_transaction (max.block.ms)", || {
                    self.cluster.txn_offset_commit_as(
                        &id,
                        producer_id,
                        epoch,
                        group,
                        metadata.member(),
                        offsets,
                    )
                })
            });
        self.leave(Call::SendOffsets, result)
    }

    pub(crate) fn commit_transaction(&self) -> Result<()> {
        let id = self.enter(Call::Commit)?;
        let own = !self.on_sender_thread() && {
            let mut acc = self.acc.lock();
            let own = acc.direct;
            if own {
                self.append_own(&mut acc);
            }
            own
        };
        let result = if own {
            self.commit_own(&id)
        } else {
            self.commit_on_sender_or_here(&id)
        };
        self.leave(Call::Commit, result)?;
        let mut acc = self.acc.lock();
        manager(&mut acc)?.state = TxnState::Ready;
        Ok(())
    }

    /// The commit without [`Accumulator::direct`]: handed to the sender
    /// thread, or run here when it cannot answer.
    fn commit_on_sender_or_here(&self, id: &str) -> Result<()> {
        match self.commit_on_sender() {
            // The sender could not (it is gone), or the coordinator asked
            // for a retry: the retries (and their max.block.ms) run here.
            None => self.commit_here(id, Markers::Sender),
            Some(Err(e)) if e.is_retriable() => self.commit_here(id, Markers::Sender),
            Some(done) => done,
        }
    }

    /// Hands the commit to the sender thread ([`CommitJob`]) and waits for
    /// its answer; `None` if the sender cannot answer (called on the
    /// sender thread, or the sender stopped).
    fn commit_on_sender(&self) -> Option<Result<()>> {
        if self.on_sender_thread() {
            return None;
        }
        let mut acc = self.acc.lock();
        let number = acc.txn.as_ref()?.number;
        if acc.done_seq == u64::MAX {
            return None;
        }
        acc.seal_all(&self.sticky);
        let target = acc.sealed_seq;
        acc.commit = Some(CommitJob {
            number,
            target,
            answer: None,
        });
        acc.pending_wake = false;
        drop(acc);
        self.wake_sender();
        self.spin
            .until(|| self.commit_answered.load(Ordering::Acquire) >= number);
        let mut acc = self.acc.lock();
        loop {
            if let Some(job) = acc.commit.as_mut()
                && job.number == number
                && let Some(answer) = job.answer.take()
            {
                acc.commit = None;
                return Some(answer);
            }
            if acc.done_seq == u64::MAX {
                // The sender stopped without answering.
                acc.commit = None;
                return None;
            }
            self.finished.wait(&mut acc);
        }
    }

    /// Answers the commit handed to the sender thread (on that thread)
    /// once every batch of its transaction is finished; whether it did.
    /// The failures of those batches reached the transaction manager
    /// before (`report_txn`), so a failed batch makes the commit fail as
    /// the transaction's error; only then is PrepareCommit written. The
    /// markers are written right after the answer.
    pub(crate) fn answer_commit(&self) -> bool {
        let acc = self.acc.lock();
        let Some(job) = acc.commit.as_ref() else {
            return false;
        };
        if job.answer.is_some() || acc.done_seq < job.target {
            return false;
        }
        let number = job.number;
        let end = match acc.txn.as_ref() {
            None => Ok(None),
            Some(txn) if number != txn.number => Err(txn.illegal("commit_transaction")),
            Some(txn) => txn.commit_ready(),
        };
        drop(acc);
        let result = end.and_then(|end| match end {
            None => Ok(false),
            Some((id, producer_id, epoch)) => self
                .cluster
                .end_txn(&id, producer_id, epoch, true, Markers::Sender)
                .map(|()| true),
        });
        let ended = matches!(result, Ok(true));
        let mut acc = self.acc.lock();
        if let Some(job) = acc.commit.as_mut()
            && job.number == number
        {
            job.answer = Some(result.map(|_| ()));
        }
        self.commit_answered.store(number, Ordering::Release);
        drop(acc);
        self.finished.notify_all();
        if ended {
            // Off the caller's path now (see `Markers::Sender`).
            self.cluster.complete_txns_for_sender();
        }
        true
    }

    /// The commit of a producer with direct appends
    /// ([`Accumulator::direct`](super::accumulator::Accumulator::direct)),
    /// on the caller's thread, after it appended the transaction's held
    /// batches itself (`append_own`). If all that is left of the
    /// transaction's batches is their completion on the sender thread
    /// (callbacks; each appended and acknowledged), the coordinator
    /// records the commit and writes the markers while the sender runs
    /// them, and the call returns once they ran; otherwise (batches the
    /// sender took, acknowledgements to wait for, failures) the commit
    /// waits for every batch first, as [`Core::commit_here`]. Either way
    /// the markers are written before the call returns.
    fn commit_own(&self, id: &str) -> Result<()> {
        let appended = {
            let mut acc = self.acc.lock();
            acc.seal_all(&self.sticky);
            let target = acc.sealed_seq;
            acc.only_completions_left(target)
        };
        if !appended {
            return self.commit_here(id, Markers::Inline);
        }
        let ended = self.end_here(id, Markers::Inline);
        // The callbacks run before the call returns, as after a flush.
        let flushed = self.flush();
        ended.and(flushed)
    }

    /// The commit on the caller's thread: waits for the transaction's
    /// batches, then ends it at the coordinator (retrying for
    /// `max.block.ms`); `markers`: who writes the markers
    /// ([`Markers::Sender`]: the sender thread, woken here).
    fn commit_here(&self, id: &str, markers: Markers) -> Result<()> {
        self.flush().and_then(|()| self.end_here(id, markers))
    }

    /// Ends the transaction, its batches appended and acknowledged, at the
    /// coordinator (retrying for `max.block.ms`), unless one of them
    /// failed (the transaction must be aborted) or the coordinator never
    /// heard of it (nothing to end).
    fn end_here(&self, id: &str, markers: Markers) -> Result<()> {
        let mut acc = self.acc.lock();
        let txn = manager(&mut acc)?;
        if matches!(txn.state, TxnState::AbortableError | TxnState::FatalError) {
            // A send of the transaction failed: it must be aborted.
            return Err(txn.current_error());
        }
        let (producer_id, epoch, started) = (txn.producer_id, txn.epoch, txn.started);
        drop(acc);
        if !started {
            return Ok(());
        }
        self.retrying("commit_transaction (max.block.ms)", || {
            self.cluster.end_txn(id, producer_id, epoch, true, markers)
        })?;
        if markers == Markers::Sender {
            self.markers_due();
        }
        Ok(())
    }

    pub(crate) fn abort_transaction(&self) -> Result<()> {
        let id = self.enter(Call::Abort)?;
        let number = {
            let mut acc = self.acc.lock();
            manager(&mut acc)?.number
        };
        // The sender fails what it has not sent of the transaction, and
        // finishes what it sent: nothing of it may be appended after the
        // ABORT marker.
        let flushed = self.flush();
        {
            let mut acc = self.acc.lock();
            manager(&mut acc)?.aborting = None;
        }
        let result = flushed.and_then(|()| {
            let (producer_id, epoch, current, started, bump) = self.current()?;
            {
                let mut acc = self.acc.lock();
                let txn = manager(&mut acc)?;
                if txn.state == TxnState::FatalError {
                    return Err(txn.current_error());
                }
            }
            if started && current == number {
                self.retrying("abort_transaction (max.block.ms)", || {
                    self.cluster
                        .end_txn(&id, producer_id, epoch, false, Markers::Sender)
                })?;
                self.markers_due();
            }
            if bump {
                // A failed batch may have left a partition's sequences
                // behind: a new epoch starts every partition from 0
                // (Kafka's epoch bump after an abortable error, KIP-360).
                let timeout = {
                    let mut acc = self.acc.lock();
                    manager(&mut acc)?.timeout_ms
                };
                // Only from the epoch this producer holds: a zombie is
                // fenced rather than fencing its successor (KIP-360).
                let (producer_id, epoch) =
                    self.retrying("abort_transaction (max.block.ms)", || {
                        self.cluster.init_producer_id_expecting(
                            &id,
                            timeout,
                            Some((producer_id, epoch)),
                        )
                    })?;
                let mut acc = self.acc.lock();
                let txn = manager(&mut acc)?;
                txn.producer_id = producer_id;
                txn.epoch = epoch;
            }
            Ok(())
        });
        self.leave(Call::Abort, result)?;
        let mut acc = self.acc.lock();
        let txn = manager(&mut acc)?;
        txn.state = TxnState::Ready;
        txn.error = None;
        Ok(())
    }

    /// Has the sender thread write the markers of the transaction just
    /// ended (off the caller's path; see `Markers::Sender`).
    fn markers_due(&self) {
        self.acc.lock().markers_due = true;
        self.wake_sender();
    }

    /// Whether a transaction is open that `close` should abort.
    pub(crate) fn open_transaction(&self) -> bool {
        let acc = self.acc.lock();
        acc.txn.as_ref().is_some_and(|t| {
            !t.busy && matches!(t.state, TxnState::InTransaction | TxnState::AbortableError)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fenced() -> Error {
        Error::ProducerFenced {
            transactional_id: "t".into(),
            epoch: 0,
            current: 1,
        }
    }

    #[test]
    fn the_state_machine_refuses_calls_out_of_order() {
        let mut m = TxnManager::new("t", 60_000);
        assert!(matches!(m.enter(Call::Begin), Err(Error::IllegalState(_))));
        assert!(matches!(m.check_send(), Err(Error::IllegalState(_))));
        m.enter(Call::Init).unwrap();
        assert!(matches!(m.enter(Call::Commit), Err(Error::IllegalState(_))));
        m.busy = false;
        m.state = TxnState::Ready;
        m.enter(Call::Begin).unwrap();
        m.state = TxnState::InTransaction;
        m.number = 1;
        assert_eq!(m.check_send().unwrap().number, 1);
        m.batch_failed(
            1,
            &Error::Timeout {
                op: "x",
                waited: Duration::ZERO,
            },
        );
        assert_eq!(m.state, TxnState::AbortableError);
        assert!(matches!(m.enter(Call::Commit), Err(Error::Timeout { .. })));
        m.enter(Call::Abort).unwrap();
    }

    #[test]
    fn a_commit_or_abort_enters_its_state_with_its_checks() {
        // The sender may report a failure as soon as the checks are done:
        // the state the call enters must already be set, so the report
        // lands on it (and a fatal one is seen by the call) instead of
        // being overwritten afterwards.
        for call in [Call::Commit, Call::Abort] {
            let mut m = TxnManager::new("t", 60_000);
            m.state = TxnState::InTransaction;
            m.number = 1;
            m.enter(call).unwrap();
            let entered = if call == Call::Commit {
                TxnState::CommittingTransaction
            } else {
                TxnState::AbortingTransaction
            };
            assert_eq!(m.state, entered);
            m.batch_failed(
                1,
                &Error::ProducerFenced {
                    transactional_id: "t".into(),
                    epoch: 0,
                    current: 1,
                },
            );
            assert_eq!(m.state, TxnState::FatalError, "{call:?}");
        }
    }

    #[test]
    fn the_sender_ends_only_a_transaction_that_can_commit() {
        // What the sender checks once the transaction's batches are all
        // finished, before it writes PrepareCommit.
        let mut m = TxnManager::new("t", 60_000);
        m.state = TxnState::InTransaction;
        m.number = 1;
        m.producer_id = 7;
        m.epoch = 2;
        m.enter(Call::Commit).unwrap();
        // The coordinator never heard of it: nothing to end.
        assert!(m.commit_ready().unwrap().is_none());
        m.started(1);
        let (id, producer_id, epoch) = m.commit_ready().unwrap().unwrap();
        assert_eq!((&*id, producer_id, epoch), ("t", 7, 2));
        // A failed batch: the commit fails with its error, nothing ends.
        m.batch_failed(
            1,
            &Error::Timeout {
                op: "x",
                waited: Duration::ZERO,
            },
        );
        assert!(matches!(m.commit_ready(), Err(Error::Timeout { .. })));
        // Fencing wins over it.
        m.batch_failed(1, &fenced());
        assert!(matches!(
            m.commit_ready(),
            Err(Error::ProducerFenced { .. })
        ));
    }

    #[test]
    fn fencing_is_fatal_and_sticks() {
        let mut m = TxnManager::new("t", 60_000);
        m.state = TxnState::InTransaction;
        m.number = 1;
        m.batch_failed(
            1,
            &Error::InvalidProducerEpoch {
                producer_id: 7,
                epoch: 0,
                current: 1,
            },
        );
        assert_eq!(m.state, TxnState::FatalError);
        for call in [Call::Init, Call::Begin, Call::Commit, Call::Abort] {
            assert!(matches!(m.enter(call), Err(Error::ProducerFenced { .. })));
        }
        assert!(matches!(m.check_send(), Err(Error::ProducerFenced { .. })));
        // A later abortable error does not hide the fencing.
        m.batch_failed(1, &fenced());
        assert_eq!(m.state, TxnState::FatalError);
    }
}
