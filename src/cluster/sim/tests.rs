//! The simulation's runs: a bounded count in CI, the long run behind
//! `LOGBUS_CLUSTER_SIM_SEEDS` (and `LOGBUS_CLUSTER_SIM_STEPS`), the replay
//! of one seed, and the self-test with injected bugs.

use super::invariants::{ACKED, CONSUMED};
use super::world::{Counts, World};
use crate::replica::InjectedBug;

/// Seeds × steps in CI (a debug build on 2 cores stays well under a
/// minute).
const CI_SEEDS: u64 = 12;
const CI_STEPS: usize = 150;

/// Runs `seed` for `steps` steps with `bug` injected; the report of the
/// first violation (seed, invariant, last steps) on failure, with the
/// invariant's name.
fn run(
    seed: u64,
    steps: usize,
    bug: Option<InjectedBug>,
) -> Result<Counts, (&'static str, String)> {
    let mut world = World::new(seed, bug);
    if let Err(v) = world.check() {
        return Err((v.invariant, world.report(&v)));
    }
    for _ in 0..steps {
        let step = world.choose();
        let outcome = world.apply(step).and_then(|()| world.check());
        if let Err(v) = outcome {
            return Err((v.invariant, world.report(&v)));
        }
    }
    world
        .converge_and_close()
        .map_err(|(v, report)| (v.invariant, report))
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
    })
}

/// Runs seeds `0..seeds`, panicking with the report of the first failure.
fn run_seeds(seeds: u64, steps: usize) -> Counts {
    let mut total = Counts::default();
    for seed in 0..seeds {
        match run(seed, steps, None) {
            Ok(counts) => total += counts,
            Err((_, report)) => panic!("{report}"),
        }
    }
    total
}

/// The simulation over a bounded count of seeds (CI), or over
/// `LOGBUS_CLUSTER_SIM_SEEDS` seeds of `LOGBUS_CLUSTER_SIM_STEPS` steps
/// (default 300): no invariant breaks after any step, and every run ends
/// with identical replicas. It must also have done what it is for:
/// acknowledged and consumed records, crashes, power losses and leader
/// changes.
#[test]
fn replication_survives_seeded_failures() {
    let (seeds, steps) = match env_number("LOGBUS_CLUSTER_SIM_SEEDS") {
        Some(seeds) => (
            seeds,
            env_number("LOGBUS_CLUSTER_SIM_STEPS").map_or(300, |s| s as usize),
        ),
        None => (CI_SEEDS, CI_STEPS),
    };
    let started = std::time::Instant::now();
    let total = run_seeds(seeds, steps);
    eprintln!(
        "cluster simulation: {seeds} seeds x {steps} steps in {:.1?}: {total:?}",
        started.elapsed()
    );
    assert!(total.acked > 0 && total.consumed > 0, "{total:?}");
    assert!(total.crashes > 0 && total.power_losses > 0, "{total:?}");
    assert!(total.leader_changes > 0, "{total:?}");
}

/// Replays one seed (`LOGBUS_CLUSTER_SIM_SEED`, default 0), printing its
/// report on failure.
#[test]
fn replay_one_seed() {
    let seed = env_number("LOGBUS_CLUSTER_SIM_SEED").unwrap_or(0);
    let steps = env_number("LOGBUS_CLUSTER_SIM_STEPS").map_or(300, |s| s as usize);
    match run(seed, steps, None) {
        Ok(counts) => eprintln!("seed {seed}: {counts:?}"),
        Err((_, report)) => panic!("{report}"),
    }
}

/// Runs seeds until one reports a violation; returns its invariant.
fn first_violation(bug: InjectedBug) -> (&'static str, String) {
    for seed in 0..40 {
        if let Err(found) = run(seed, 300, Some(bug)) {
            return found;
        }
    }
    panic!("the simulation did not catch {bug:?} in 40 seeds");
}

/// Self-test: acknowledging `acks=all` before the followers have the
/// batch loses acknowledged records when the leader fails, and the
/// simulation reports it (invariant 1).
#[test]
fn the_simulation_catches_an_ack_before_replication() {
    let (invariant, report) = first_violation(InjectedBug::AckBeforeReplication);
    eprintln!("{report}");
    assert_eq!(invariant, ACKED, "{report}");
}

/// Self-test: consumers reading past the high watermark read records a
/// failover truncates, and the simulation reports it (invariant 4).
#[test]
fn the_simulation_catches_reads_past_the_high_watermark() {
    let (invariant, report) = first_violation(InjectedBug::ReadPastHighWatermark);
    eprintln!("{report}");
    assert_eq!(invariant, CONSUMED, "{report}");
}
