//! The steps: each a seeded choice from the world's state, applied
//! through the cluster's own step functions (no thread runs but the
//! simulation's).

use std::fmt;

use bytes::Bytes;

use super::world::{
    Health, InFlight, MAX_FAILED, Part, SESSION_MS, TOPICS, Tracked, Violation, World,
};
use crate::error::Error;
use crate::format::BatchBuilder;
use crate::replica::{AppendAcks, AppendOrigin, FetchBound, fetch_once};
use crate::types::Compression;

use super::world::LAG_MS;

/// One step of the simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Appends `records` records to `part` at broker `to`.
    Append {
        part: Part,
        to: u32,
        records: u32,
        acks_all: bool,
    },
    /// Follower `follower` runs one fetch round from `leader`.
    Fetch {
        follower: u32,
        leader: u32,
    },
    /// Every running, unpaused broker runs one fetch round from every
    /// other running broker.
    FetchAll,
    /// Broker `broker`'s leaders expire lagging followers from their ISRs.
    ShrinkIsr {
        broker: u32,
    },
    /// The controller's liveness tick (heartbeats, fencing, elections).
    Tick,
    /// The clock moves on.
    Advance {
        ms: i64,
    },
    /// Broker `broker` crashes (its page cache kept), and with
    /// `power_loss` its unsynced pages are lost as well.
    Crash {
        broker: u32,
        power_loss: bool,
    },
    /// A broker that is down loses power (its unsynced pages).
    PowerLoss {
        broker: u32,
    },
    /// A clean stop.
    Stop {
        broker: u32,
    },
    /// Its disk fails (a crash, its directory reopened only at restart).
    FailDisk {
        broker: u32,
    },
    Restart {
        broker: u32,
    },
    CutOff {
        broker: u32,
    },
    Reconnect {
        broker: u32,
    },
    Pause {
        broker: u32,
    },
    Resume {
        broker: u32,
    },
    ElectPreferred,
    /// A consumer reads `part` from the leader, below the high watermark.
    Consume {
        part: Part,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Step::Append {
                part,
                to,
                records,
                acks_all,
            } => write!(
                f,
                "append {records} to {}-{} at broker {to} (acks={})",
                TOPICS[part.0].name,
                part.1,
                if acks_all { "all" } else { "1" }
            ),
            Step::Consume { part } => write!(f, "consume {}-{}", TOPICS[part.0].name, part.1),
            other => write!(f, "{other:?}"),
        }
    }
}

impl World {
    /// Chooses the next step from the seed and the world's state.
    pub(super) fn choose(&mut self) -> Step {
        let n = self.brokers;
        let running: Vec<u32> = (0..n).filter(|&b| self.running(b)).collect();
        let down: Vec<u32> = (0..n).filter(|&b| !self.running(b)).collect();
        let can_fail = self.failed() < MAX_FAILED;
        let parts = self.parts();
        let roll = self.rng.below(100);
        match roll {
            0..=27 => {
                let part = self.rng.pick(&parts);
                let leader = self.roles(part).leader;
                let to = match leader {
                    Some(l) if self.rng.chance(85) => l,
                    _ => self.rng.below(u64::from(n)) as u32,
                };
                Step::Append {
                    part,
                    to,
                    records: 1 + self.rng.below(3) as u32,
                    acks_all: self.rng.chance(85),
                }
            }
            28..=44 => {
                let follower = self.rng.below(u64::from(n)) as u32;
                let leader = self.rng.below(u64::from(n)) as u32;
                Step::Fetch { follower, leader }
            }
            45..=54 => Step::FetchAll,
            55..=58 => Step::ShrinkIsr {
                broker: self.rng.below(u64::from(n)) as u32,
            },
            59..=65 => Step::Tick,
            66..=71 => {
                let ms = match self.rng.below(4) {
                    0 => SESSION_MS + 1,
                    1 => LAG_MS + 1,
                    _ => 1 + self.rng.below(2_000) as i64,
                };
                Step::Advance { ms }
            }
            72..=75 if can_fail && !running.is_empty() => Step::Crash {
                broker: self.rng.pick(&running),
                power_loss: self.rng.chance(50),
            },
            76..=77 if can_fail && !running.is_empty() => Step::Stop {
                broker: self.rng.pick(&running),
            },
            78 if can_fail && !running.is_empty() => Step::FailDisk {
                broker: self.rng.pick(&running),
            },
            79..=80 if !down.is_empty() => Step::PowerLoss {
                broker: self.rng.pick(&down),
            },
            81..=85 if !down.is_empty() => Step::Restart {
                broker: self.rng.pick(&down),
            },
            86 if can_fail => {
                let live: Vec<u32> = running
                    .iter()
                    .copied()
                    .filter(|&b| !self.cut_off[b as usize])
                    .collect();
                if live.is_empty() {
                    Step::Tick
                } else {
                    Step::CutOff {
                        broker: self.rng.pick(&live),
                    }
                }
            }
            87..=88 => {
                let cut: Vec<u32> = (0..n).filter(|&b| self.cut_off[b as usize]).collect();
                if cut.is_empty() {
                    Step::Tick
                } else {
                    Step::Reconnect {
                        broker: self.rng.pick(&cut),
                    }
                }
            }
            89 if !running.is_empty() => Step::Pause {
                broker: self.rng.pick(&running),
            },
            90..=91 => {
                let paused: Vec<u32> = (0..n).filter(|&b| self.paused[b as usize]).collect();
                if paused.is_empty() {
                    Step::FetchAll
                } else {
                    Step::Resume {
                        broker: self.rng.pick(&paused),
                    }
                }
            }
            92 => Step::ElectPreferred,
            93..=99 => Step::Consume {
                part: self.rng.pick(&parts),
            },
            _ => Step::FetchAll,
        }
    }

    /// Applies `step`.
    ///
    /// # Errors
    /// A violation for an error no step may meet (an I/O error, a
    /// failed restart).
    pub(super) fn apply(&mut self, step: Step) -> Result<(), Violation> {
        self.step_no += 1;
        self.note(step.to_string());
        // Every step takes a millisecond: brokers failing at different
        // steps are last heard from at different times.
        self.clock.advance_ms(1);
        let cluster = &self.cluster;
        let unexpected = |what: &str, e: Error| Violation::new("step", format!("{what}: {e}"));
        if let Step::Crash { .. }
        | Step::FailDisk { .. }
        | Step::Stop { .. }
        | Step::CutOff { .. } = step
        {
            // A broker heartbeats until it fails (every
            // `broker.heartbeat.interval.ms`, and the controller thread
            // ticks at every fault): the tick the thread would have run
            // records it, so that sessions end in the order the brokers
            // failed, as in a cluster with its controller thread.
            cluster
                .inner
                .liveness_tick()
                .map_err(|e| unexpected("liveness tick", e))?;
        }
        match step {
            Step::Append {
                part,
                to,
                records,
                acks_all,
            } => self.append(part, to, records, acks_all)?,
            Step::Fetch { follower, leader } => {
                if follower != leader
                    && !self.paused[follower as usize]
                    && let (Some(f), Some(l)) = (self.manager(follower), self.manager(leader))
                {
                    let round = fetch_once(&f, &l);
                    self.check_fetch_errors(&round.errors)?;
                }
            }
            Step::FetchAll => self.fetch_all()?,
            Step::ShrinkIsr { broker } => {
                if let Some(m) = self.manager(broker) {
                    m.maybe_shrink_isr();
                }
            }
            Step::Tick => {
                cluster
                    .inner
                    .liveness_tick()
                    .map_err(|e| unexpected("liveness tick", e))?;
            }
            Step::Advance { ms } => self.clock.advance_ms(ms),
            Step::Crash { broker, power_loss } => {
                cluster
                    .crash_broker(broker)
                    .map_err(|e| unexpected("crash", e))?;
                self.down(broker, Health::Crashed);
                if power_loss {
                    self.power_loss(broker)?;
                }
            }
            Step::FailDisk { broker } => {
                cluster
                    .fail_disk(broker)
                    .map_err(|e| unexpected("fail_disk", e))?;
                self.down(broker, Health::Crashed);
            }
            Step::PowerLoss { broker } => self.power_loss(broker)?,
            Step::Stop { broker } => {
                cluster
                    .stop_broker(broker)
                    .map_err(|e| unexpected("stop", e))?;
                self.down(broker, Health::Stopped);
                for ((_, b), view) in &mut self.views {
                    if *b == broker {
                        view.synced_all = true;
                    }
                }
            }
            Step::Restart { broker } => {
                cluster
                    .restart_broker(broker)
                    .map_err(|e| unexpected("restart", e))?;
                self.health[broker as usize] = Health::Running;
                self.paused[broker as usize] = false;
            }
            Step::CutOff { broker } => {
                cluster
                    .cut_off_broker(broker)
                    .map_err(|e| unexpected("cut off", e))?;
                self.cut_off[broker as usize] = true;
            }
            Step::Reconnect { broker } => {
                cluster
                    .reconnect_broker(broker)
                    .map_err(|e| unexpected("reconnect", e))?;
                self.cut_off[broker as usize] = false;
            }
            // The fetchers are the simulation's: a paused broker's fetch
            // steps do nothing.
            Step::Pause { broker } => self.paused[broker as usize] = true,
            Step::Resume { broker } => self.paused[broker as usize] = false,
            Step::ElectPreferred => {
                cluster
                    .inner
                    .elect_preferred_leaders()
                    .map_err(|e| unexpected("preferred election", e))?;
            }
            Step::Consume { part } => self.consume(part)?,
        }
        self.poll_acks();
        Ok(())
    }

    fn down(&mut self, broker: u32, health: Health) {
        self.health[broker as usize] = health;
        self.counts.crashes += u64::from(health == Health::Crashed);
    }

    /// Broker `broker` (down) loses its unsynced pages.
    fn power_loss(&mut self, broker: u32) -> Result<(), Violation> {
        let seed = self.rng.next_u64();
        self.storages[broker as usize]
            .power_loss(seed)
            .map_err(|e| Violation::new("step", format!("power loss: {e}")))?;
        self.counts.power_losses += 1;
        for ((part, b), view) in &mut self.views {
            if *b == broker {
                view.lost_unsynced = true;
                self.suspect.insert((*part, broker));
            }
        }
        Ok(())
    }

    /// Fetch errors are the retriable ones a moving leadership causes.
    fn check_fetch_errors(
        &self,
        errors: &[(crate::replica::TopicIdPartition, Error)],
    ) -> Result<(), Violation> {
        for (key, e) in errors {
            if !retriable(e) {
                return Err(Violation::new(
                    "step",
                    format!("fetch of {}-{}: {e}", key.topic, key.partition),
                ));
            }
        }
        Ok(())
    }

    /// Every running, unpaused broker fetches once from every other
    /// running broker.
    pub(super) fn fetch_all(&mut self) -> Result<(), Violation> {
        for follower in 0..self.brokers {
            if self.paused[follower as usize] {
                continue;
            }
            for leader in 0..self.brokers {
                if follower == leader {
                    continue;
                }
                if let (Some(f), Some(l)) = (self.manager(follower), self.manager(leader)) {
                    let round = fetch_once(&f, &l);
                    self.check_fetch_errors(&round.errors)?;
                }
            }
        }
        Ok(())
    }

    fn append(
        &mut self,
        part: Part,
        to: u32,
        records: u32,
        acks_all: bool,
    ) -> Result<(), Violation> {
        let Some(manager) = self.manager(to) else {
            return Ok(());
        };
        let mut builder = BatchBuilder::new(Compression::None);
        let mut values = Vec::new();
        for _ in 0..records {
            let value = self.next_value(part);
            builder.append(self.clock_ms(), None, Some(&value), &[]);
            values.push(value);
        }
        let mut batch = builder.build().expect("a batch").to_vec();
        let acks = if acks_all {
            AppendAcks::All
        } else {
            AppendAcks::Leader
        };
        let key = self.key(part).clone();
        match manager.append_pending(&key, &mut batch, AppendOrigin::Client, acks) {
            Ok((info, pending)) => {
                let first = info.first_offset();
                let records: Vec<(u64, Bytes)> = (first..).zip(values).collect();
                self.note(format!("  appended at {first}..={}", info.last_offset()));
                if acks_all {
                    match pending {
                        Some(ack) => self.in_flight.push(InFlight { part, records, ack }),
                        None => self.track_acked(part, records),
                    }
                }
                Ok(())
            }
            Err(e) if retriable(&e) => Ok(()),
            Err(e) => Err(Violation::new("step", format!("append: {e}"))),
        }
    }

    fn clock_ms(&self) -> i64 {
        crate::clock::Clock::now_ms(&self.clock)
    }

    fn track_acked(&mut self, part: Part, records: Vec<(u64, Bytes)>) {
        self.note(format!(
            "  acked {}-{} {:?}",
            TOPICS[part.0].name,
            part.1,
            records.iter().map(|r| r.0).collect::<Vec<_>>()
        ));
        let acked = self.acked.entry(part).or_default();
        for (offset, value) in records {
            self.counts.acked += 1;
            acked.insert(
                offset,
                Tracked {
                    value,
                    exempt: false,
                },
            );
        }
    }

    /// Collects the acknowledgements that arrived.
    pub(super) fn poll_acks(&mut self) {
        let now = self.clock_ms();
        let mut done = Vec::new();
        self.in_flight.retain_mut(|f| match f.ack.poll(now) {
            None => true,
            Some(result) => {
                done.push((f.part, std::mem::take(&mut f.records), result));
                false
            }
        });
        for (part, records, result) in done {
            match result {
                Ok(()) => self.track_acked(part, records),
                Err(e) => self.note(format!(
                    "  ack of {}-{} {:?} failed: {e}",
                    TOPICS[part.0].name,
                    part.1,
                    records.first().map(|r| r.0)
                )),
            }
        }
    }

    /// A consumer of `part` reads from the leader the controller names,
    /// from where it stopped, below the high watermark.
    fn consume(&mut self, part: Part) -> Result<(), Violation> {
        let Some(leader) = self.roles(part).leader else {
            return Ok(());
        };
        let Some(manager) = self.manager(leader) else {
            return Ok(());
        };
        let key = self.key(part).clone();
        let pos = self.consumer_pos.get(&part).copied().unwrap_or(0);
        let data = match manager.fetch(&key, pos, 1 << 20, FetchBound::HighWatermark) {
            Ok(data) => data,
            Err(Error::OffsetOutOfRange { .. }) => {
                // The new leader's log is shorter (records nobody acknowledged
                // or read): start over from its high watermark.
                let hw = manager.offsets(&key).map(|o| o.high_watermark).unwrap_or(0);
                self.consumer_pos.insert(part, hw.min(pos));
                return Ok(());
            }
            Err(e) if retriable(&e) => return Ok(()),
            Err(e) => return Err(Violation::new("step", format!("consume: {e}"))),
        };
        let bytes = Bytes::copy_from_slice(data.records());
        drop(data);
        let mut read = Vec::new();
        let mut next = pos;
        for batch in crate::format::Batches::new(bytes) {
            let batch =
                batch.map_err(|e| Violation::new("step", format!("consumed batch: {e}")))?;
            for record in batch
                .records()
                .map_err(|e| Violation::new("step", format!("consumed batch: {e}")))?
            {
                let record =
                    record.map_err(|e| Violation::new("step", format!("consumed record: {e}")))?;
                let offset = record.offset() as u64;
                if offset >= pos {
                    read.push((offset, record.value().cloned().unwrap_or_default()));
                }
            }
            next = next.max(batch.header().last_offset() as u64 + 1);
        }
        self.consumer_pos.insert(part, next);
        if let (Some(first), Some(last)) = (read.first(), read.last()) {
            self.note(format!("  read {}..={}", first.0, last.0));
        }
        let consumed = self.consumed.entry(part).or_default();
        for (offset, value) in read {
            self.counts.consumed += 1;
            consumed.insert(
                offset,
                Tracked {
                    value,
                    exempt: false,
                },
            );
        }
        Ok(())
    }
}

/// Errors a step meets when leadership moves or a broker is down.
fn retriable(e: &Error) -> bool {
    matches!(
        e,
        Error::NotLeaderOrFollower { .. }
            | Error::FencedLeaderEpoch { .. }
            | Error::NotEnoughReplicas { .. }
            | Error::UnknownTopicOrPartition { .. }
            | Error::OffsetOutOfRange { .. }
    )
}
