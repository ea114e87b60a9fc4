//! What the log-level and the cluster-level runs share: the kinds of
//! crash, the history a failure reports, the loop of steps and crash
//! states, and the plumbing of appender threads.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use crate::gate::Gate;
use crate::model::{Draft, Rec, Rng};
use crate::{Failure, Policy};

/// What a crash is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Crash {
    /// `FaultyStorage::power_loss(seed)`.
    PowerLoss(u64),
    /// The process dies; the page cache survives.
    Kill,
}

impl Crash {
    /// A process kill one time in ten, else a power loss with a random
    /// seed.
    pub(crate) fn pick(rng: &mut Rng) -> Crash {
        if rng.chance(10) {
            Crash::Kill
        } else {
            Crash::PowerLoss(rng.next_u64())
        }
    }

    /// Crashes the process behind `gate`; returns what happened, for the
    /// history.
    pub(crate) fn strike(self, gate: &Gate) -> Result<String, String> {
        match self {
            Crash::PowerLoss(seed) => {
                let report = gate
                    .crash(seed)
                    .map_err(|e| format!("power_loss({seed}) failed: {e}"))?;
                Ok(format!("power loss {seed:#x}: {report:?}"))
            }
            Crash::Kill => {
                gate.kill();
                Ok("process killed".into())
            }
        }
    }
}

/// Which run this is and what it did: what a failure reports.
#[derive(Debug)]
pub(crate) struct Trail {
    pub(crate) level: &'static str,
    pub(crate) policy: Policy,
    pub(crate) seed: u64,
    history: Vec<String>,
}

impl Trail {
    pub(crate) fn new(level: &'static str, policy: Policy, seed: u64) -> Self {
        Trail {
            level,
            policy,
            seed,
            history: Vec::new(),
        }
    }

    pub(crate) fn note(&mut self, what: String) {
        self.history.push(what);
    }

    pub(crate) fn fail(&self, crash: u64, message: String) -> Failure {
        Failure {
            level: self.level,
            policy: self.policy,
            seed: self.seed,
            crash,
            message,
            history: self.history.clone(),
        }
    }
}

/// A run of random steps and crash states.
pub(crate) trait Explorer {
    fn trail(&self) -> &Trail;
    fn rng(&mut self) -> &mut Rng;
    /// One random operation.
    fn step(&mut self) -> Result<(), String>;
    /// A crash and the checks of the reopen after it.
    fn crash_state(&mut self) -> Result<(), String>;

    /// `crashes` crash states, each after 1 to 14 steps.
    fn crash_states(&mut self, crashes: u64) -> Result<(), Failure> {
        for crash in 0..crashes {
            let steps = self.rng().range(1, 14);
            for _ in 0..steps {
                if let Err(e) = self.step() {
                    return Err(self.trail().fail(crash, e));
                }
            }
            if let Err(e) = self.crash_state() {
                return Err(self.trail().fail(crash, e));
            }
        }
        Ok(())
    }
}

/// The records `drafts` became, appended as one batch at `first_offset`.
pub(crate) fn placed(drafts: &[Draft], first_offset: u64) -> Vec<Rec> {
    drafts
        .iter()
        .enumerate()
        .map(|(i, d)| d.at(first_offset + i as u64))
        .collect()
}

/// The events from `rx` until `acks` of them are acknowledgements (or
/// every sender is gone).
pub(crate) fn until_acks<E>(
    rx: &mpsc::Receiver<E>,
    acks: u64,
    is_ack: impl Fn(&E) -> bool,
) -> Vec<E> {
    let mut events = Vec::new();
    let mut seen = 0;
    while seen < acks {
        let Ok(event) = rx.recv() else { break };
        if is_ack(&event) {
            seen += 1;
        }
        events.push(event);
    }
    events
}

/// Starts one thread per list in `work`: each appends its items in order
/// with `append` and sends the event it returns to `tx`, until nobody
/// listens. `append` reads `crashed` (set when the crash came) after its
/// append returned: an acknowledgement the crash may have overtaken is
/// late.
pub(crate) fn spawn_appenders<W, E>(
    work: Vec<Vec<W>>,
    crashed: &Arc<AtomicBool>,
    tx: &mpsc::Sender<E>,
    append: impl Fn(W, &AtomicBool) -> E + Clone + Send + 'static,
) -> Vec<JoinHandle<()>>
where
    W: Send + 'static,
    E: Send + 'static,
{
    work.into_iter()
        .map(|mine| {
            let (tx, crashed, append) = (tx.clone(), Arc::clone(crashed), append.clone());
            std::thread::spawn(move || {
                for item in mine {
                    if tx.send(append(item, &crashed)).is_err() {
                        return;
                    }
                }
            })
        })
        .collect()
}

/// Waits for every appender thread.
pub(crate) fn join_appenders(handles: Vec<JoinHandle<()>>) -> Result<(), String> {
    for h in handles {
        h.join()
            .map_err(|_| "an appender thread panicked".to_string())?;
    }
    Ok(())
}
