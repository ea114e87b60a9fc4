//! The invariants checked after every step (see the module docs of
//! `cluster::sim`), and the final convergence and byte-for-byte check.

use std::collections::BTreeMap;
use std::path::Path;

use super::world::{Part, TOPICS, Violation, World};
use crate::cluster::broker_dir;

/// Names of the invariants, as reported.
pub(super) const ACKED: &str = "1: acks=all record lost";
pub(super) const PREFIX: &str = "2: committed prefixes differ";
pub(super) const HW_BACK: &str = "3: HW moved back within an epoch";
pub(super) const CONSUMED: &str = "4: a consumed record was truncated";
pub(super) const LEADERS: &str = "5: two leaders in one epoch";
pub(super) const FINAL: &str = "final: replicas differ after convergence";

impl World {
    /// Observes every running replica, then checks every invariant.
    ///
    /// # Errors
    /// The first violation found.
    pub(super) fn check(&mut self) -> Result<(), Violation> {
        self.observe()?;
        self.check_leaders()?;
        self.check_high_watermarks()?;
        self.check_prefixes()?;
        self.check_tracked(false)?;
        self.check_tracked(true)?;
        self.update_exemptions()?;
        Ok(())
    }

    /// 5: the controller names one leader per (partition, epoch), and no
    /// running broker believes it leads an epoch given to another.
    fn check_leaders(&mut self) -> Result<(), Violation> {
        for part in self.parts() {
            let roles = self.roles(part);
            let entry = (part, roles.leader_epoch);
            match self.epoch_leaders.get(&entry) {
                Some(&leader) if leader != roles.leader => {
                    return Err(Violation::new(
                        LEADERS,
                        format!(
                            "{part:?} epoch {}: the controller named {leader:?}, now {:?}",
                            roles.leader_epoch, roles.leader
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    let previous = self
                        .epoch_leaders
                        .range((part, i32::MIN)..(part, roles.leader_epoch))
                        .next_back()
                        .map(|(_, &l)| l);
                    if previous.is_some() && previous != Some(roles.leader) {
                        self.counts.leader_changes += 1;
                    }
                    self.epoch_leaders.insert(entry, roles.leader);
                }
            }
            for b in 0..self.brokers {
                if !self.running(b) {
                    continue;
                }
                let Some(view) = self.views.get(&(part, b)) else {
                    continue;
                };
                if view.leader != Some(b) {
                    continue;
                }
                match self.epoch_leaders.get(&(part, view.leader_epoch)) {
                    Some(&Some(l)) if l == b => {}
                    other => {
                        return Err(Violation::new(
                            LEADERS,
                            format!(
                                "{part:?}: broker {b} acts as leader of epoch {}, which the \
                                 controller gave to {other:?}",
                                view.leader_epoch
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// 3: the HW never moves back within an epoch at its leader.
    fn check_high_watermarks(&mut self) -> Result<(), Violation> {
        for part in self.parts() {
            for b in 0..self.brokers {
                if !self.running(b) {
                    continue;
                }
                let Some(view) = self.views.get(&(part, b)) else {
                    continue;
                };
                if view.leader != Some(b) {
                    continue;
                }
                let max = self.max_hw.entry((part, view.leader_epoch)).or_insert(0);
                if view.high_watermark < *max {
                    return Err(Violation::new(
                        HW_BACK,
                        format!(
                            "{part:?} epoch {} at broker {b}: HW {} after {}",
                            view.leader_epoch, view.high_watermark, *max
                        ),
                    ));
                }
                *max = view.high_watermark;
                let ever = self.hw_ever.entry(part).or_insert(0);
                *ever = (*ever).max(view.high_watermark);
            }
        }
        Ok(())
    }

    /// 2: every running replica agrees with the leader below the HW.
    fn check_prefixes(&mut self) -> Result<(), Violation> {
        for part in self.parts() {
            let roles = self.roles(part);
            let Some(leader) = roles.leader.filter(|&l| self.running(l)) else {
                continue;
            };
            let Some(lv) = self.views.get(&(part, leader)) else {
                continue;
            };
            let ever = self.hw_ever.get(&part).copied().unwrap_or(0);
            if lv.log_end < ever {
                if TOPICS[part.0].durable {
                    return Err(Violation::new(
                        PREFIX,
                        format!(
                            "{part:?}: leader {leader} (epoch {}) ends at {}, below the committed \
                             {ever}, on a flush.messages=1 topic",
                            lv.leader_epoch, lv.log_end
                        ),
                    ));
                }
                let rewinds = self.rewinds.entry(part).or_default();
                if !rewinds.iter().any(|&(e, _)| e == lv.leader_epoch) {
                    rewinds.push((lv.leader_epoch, lv.log_end));
                }
            }
            let rewinds = self.rewinds.get(&part).cloned().unwrap_or_default();
            let lv = &self.views[&(part, leader)];
            for &b in &roles.replicas {
                if b == leader || !self.running(b) || self.suspect.contains(&(part, b)) {
                    continue;
                }
                let Some(v) = self.views.get(&(part, b)) else {
                    continue;
                };
                let mut bound = v.log_end.min(lv.high_watermark);
                if !roles.isr.contains(&b) {
                    bound = bound.min(v.high_watermark);
                }
                for (base, (last, bytes)) in v.batches.range(..bound) {
                    if *last >= bound {
                        break;
                    }
                    let epoch = batch_epoch(bytes);
                    if rewinds.iter().any(|&(e, at)| epoch < e && *last >= at) {
                        // Committed data the leader lost (page cache, every
                        // ISR member's power lost): this follower truncates
                        // it at its next fetch.
                        continue;
                    }
                    if lv.batches.get(base).map(|(_, b)| b) != Some(bytes) {
                        return Err(Violation::new(
                            PREFIX,
                            format!(
                                "{part:?}: broker {b}'s batch at {base} (below {bound}) is not \
                                 leader {leader}'s (leader HW {}, in ISR: {})",
                                lv.high_watermark,
                                roles.isr.contains(&b)
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// 1 and 4: every acknowledged (or consumed) record not exempt is on
    /// the running leader at its offset.
    fn check_tracked(&self, consumed: bool) -> Result<(), Violation> {
        let (tracked, name) = if consumed {
            (&self.consumed, CONSUMED)
        } else {
            (&self.acked, ACKED)
        };
        for (&part, records) in tracked {
            let roles = self.roles(part);
            let Some(leader) = roles.leader.filter(|&l| self.running(l)) else {
                continue;
            };
            let Some(view) = self.views.get(&(part, leader)) else {
                continue;
            };
            for (offset, t) in records {
                if t.exempt {
                    continue;
                }
                if view.records.get(offset) != Some(&t.value) {
                    return Err(Violation::new(
                        name,
                        format!(
                            "{part:?} offset {offset} ({:?}): leader {leader} (epoch {}) holds \
                             {:?}; log end {}",
                            t.value,
                            roles.leader_epoch,
                            view.records.get(offset),
                            view.log_end
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// A record no ISR member holds any more may be lost: exempt from now
    /// on — but not on a `flush.messages=1` topic, where that is a
    /// violation.
    fn update_exemptions(&mut self) -> Result<(), Violation> {
        for consumed in [false, true] {
            let parts: Vec<Part> = if consumed {
                self.consumed.keys().copied().collect()
            } else {
                self.acked.keys().copied().collect()
            };
            for part in parts {
                let isr = self.roles(part).isr;
                let records = if consumed {
                    &self.consumed[&part]
                } else {
                    &self.acked[&part]
                };
                // The README's bound: the failure of every ISR member voids
                // the page-cache promise — the member kept last (the one
                // heard from last) leads again, and if it lost the record
                // to a power loss, a member that failed earlier holding it
                // does not count. A member cut off from the controller has
                // failed as far as the cluster can tell: it is fenced and
                // leaves the ISR at the next liveness tick, which may be the
                // step that restarts the member kept and makes it lead, so
                // the exemption must be known by then.
                let all_down = !TOPICS[part.0].durable
                    && isr
                        .iter()
                        .all(|&b| !self.running(b) || self.cut_off[b as usize]);
                let newly: Vec<u64> = records
                    .iter()
                    .filter(|(_, t)| !t.exempt)
                    .filter(|(o, t)| {
                        let held = |b: u32| self.holds(part, b, **o, &t.value);
                        !isr.iter().any(|&b| held(b)) || (all_down && !isr.iter().all(|&b| held(b)))
                    })
                    .map(|(o, _)| *o)
                    .collect();
                if let Some(first) = newly.first()
                    && TOPICS[part.0].durable
                {
                    return Err(Violation::new(
                        if consumed { CONSUMED } else { ACKED },
                        format!(
                            "{part:?} offset {first}: no member of the ISR {isr:?} holds it on a \
                             flush.messages=1 topic"
                        ),
                    ));
                }
                self.counts.exempt += newly.len() as u64;
                let records = if consumed {
                    self.consumed.get_mut(&part)
                } else {
                    self.acked.get_mut(&part)
                };
                if let Some(records) = records {
                    for o in newly {
                        if let Some(t) = records.get_mut(&o) {
                            t.exempt = true;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Heals everything, replicates until every ISR is complete and every
    /// replica holds the leader's log, checks every acknowledged record
    /// (not exempt) on every replica, closes the cluster and compares the
    /// replicas' segment files byte for byte.
    ///
    /// # Errors
    /// The first violation found.
    pub(super) fn converge_and_close(
        mut self,
    ) -> Result<super::world::Counts, (Violation, String)> {
        let healed = self.heal();
        if let Err(v) = healed {
            let report = self.report(&v);
            return Err((v, report));
        }
        let counts = self.counts;
        let dir = self.dir.path().to_path_buf();
        let config = self.cluster.config().clone();
        let placement: Vec<(Part, Vec<u32>)> = self
            .parts()
            .into_iter()
            .map(|p| (p, self.roles(p).replicas))
            .collect();
        if let Err(e) = self.cluster.close() {
            let v = Violation::new(FINAL, format!("close: {e}"));
            return Err((v.clone(), self.report(&v)));
        }
        for (part, replicas) in placement {
            let name = format!("{}-{}", TOPICS[part.0].name, part.1);
            let mut first: Option<(u32, BTreeMap<String, Vec<u8>>)> = None;
            for b in replicas {
                let files = segment_files(&broker_dir(&dir, &config, b).join(&name));
                match &first {
                    None => first = Some((b, files)),
                    Some((a, expected)) if *expected != files => {
                        let v = Violation::new(
                            FINAL,
                            format!(
                                "{name}: broker {b}'s segment files differ from broker {a}'s \
                                 ({:?} vs {:?} bytes)",
                                files.values().map(Vec::len).collect::<Vec<_>>(),
                                expected.values().map(Vec::len).collect::<Vec<_>>()
                            ),
                        );
                        return Err((v.clone(), self.report(&v)));
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(counts)
    }

    fn heal(&mut self) -> Result<(), Violation> {
        self.note("heal".into());
        for b in 0..self.brokers {
            if self.cut_off[b as usize] {
                self.apply(super::steps::Step::Reconnect { broker: b })?;
            }
            self.paused[b as usize] = false;
        }
        for b in 0..self.brokers {
            if !self.running(b) {
                self.apply(super::steps::Step::Restart { broker: b })?;
                self.check()?;
            }
        }
        for _ in 0..100 {
            self.fetch_all()?;
            self.clock.advance_ms(100);
            self.cluster
                .inner
                .liveness_tick()
                .map_err(|e| Violation::new("step", format!("liveness tick: {e}")))?;
            self.poll_acks();
            self.check()?;
            if self.converged() {
                return self.check_everywhere();
            }
        }
        Err(Violation::new(
            FINAL,
            "no convergence after 100 rounds of fetches and ticks",
        ))
    }

    /// Every ISR complete, every replica at the leader's log end and HW.
    fn converged(&self) -> bool {
        self.parts().into_iter().all(|part| {
            let roles = self.roles(part);
            let Some(leader) = roles.leader else {
                return false;
            };
            let Some(lv) = self.views.get(&(part, leader)) else {
                return false;
            };
            roles.isr.len() == roles.replicas.len()
                && lv.high_watermark == lv.log_end
                && roles.replicas.iter().all(|&b| {
                    self.views
                        .get(&(part, b))
                        .is_some_and(|v| v.log_end == lv.log_end && v.high_watermark == lv.log_end)
                })
        })
    }

    /// Every acknowledged record (not exempt) on every replica.
    fn check_everywhere(&self) -> Result<(), Violation> {
        for (&part, records) in &self.acked {
            for &b in &self.roles(part).replicas {
                let view = &self.views[&(part, b)];
                for (offset, t) in records.iter().filter(|(_, t)| !t.exempt) {
                    if view.records.get(offset) != Some(&t.value) {
                        return Err(Violation::new(
                            ACKED,
                            format!("{part:?} offset {offset}: missing on broker {b} at the end"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The partition leader epoch of a batch (bytes 12..16 of its header).
fn batch_epoch(batch: &[u8]) -> i32 {
    batch
        .get(12..16)
        .and_then(|b| b.try_into().ok())
        .map_or(i32::MIN, i32::from_be_bytes)
}

/// The segment (`.log`) files of a partition directory, by name (the
/// leader epoch file differs legitimately: a replica records only the
/// epochs whose batches it holds).
fn segment_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".log"))
        .map(|n| {
            let bytes = std::fs::read(dir.join(&n)).unwrap_or_default();
            (n, bytes)
        })
        .collect()
}
