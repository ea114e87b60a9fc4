//! The deterministic replication simulation over a whole cluster.
//!
//! A [`World`](world::World) is a cluster of 3 or 4 brokers on a manual
//! clock, with no controller thread and no fetcher threads (so every
//! follower fetch, ISR expiration, liveness tick and election is a step
//! the simulation takes), each broker on a `FaultyStorage` of its own (so
//! a crash can lose exactly that broker's unsynced pages), with two
//! topics of replication factor 3 and `min.insync.replicas` 2, unclean
//! election off: `cache` (the page-cache flush policy) and `durable`
//! (`flush.messages=1`, whose high watermark is the minimum *durable*
//! offset over the ISR).
//!
//! A seed picks each step ([`steps::Step`]) from the world's state:
//! appends (`acks=all`, some `acks=1`, mostly to the leader, some to any
//! replica — a zombie leader cut off from the controller accepts them),
//! one follower's fetch round from one leader or every follower's, the
//! leaders' ISR expiration, a liveness tick, clock advances (small, and
//! past `broker.session.timeout.ms` or `replica.lag.time.max.ms`), a
//! broker's crash (its page cache kept), a crash with a power loss of
//! that broker's unsynced pages, a power loss of a broker that is down, a
//! clean stop, a failed disk, a restart, a cut-off from the controller and
//! a reconnection, a pause and a resume of a broker's fetching, a
//! preferred leader election and consumer reads below the high
//! watermark. At most RF − 1 = 2 brokers are down or cut off at once.
//! Every step takes a millisecond of the clock, and a liveness tick runs
//! before each fault, so brokers heartbeat until they fail (as with the
//! controller thread).
//!
//! After every step the world observes every running replica (its log,
//! offsets and leadership as its broker sees them) and checks
//! ([`invariants`]):
//! 1. **acks=all**: an acknowledged record is, whenever the partition's
//!    leader runs, in the leader's log at its acknowledged offset with the
//!    same content — unless, at some earlier step, no ISR member held it
//!    any more (every holder in the ISR lost it to a power loss before it
//!    was synced), or every ISR member was down or cut off from the
//!    controller (which fences it) and one of them had lost it (the
//!    README's bound for page-cache topics: the failure of up to
//!    |ISR| − 1 brokers). For a `flush.messages=1` topic the first
//!    exemption itself is a violation: there an acknowledged record
//!    survives any allowed failure.
//! 2. **committed prefixes**: every running replica's batches below the
//!    leader's high watermark (and below its own log end; for a replica
//!    outside the ISR also below its own high watermark, and none for a
//!    replica whose broker lost power since it was last in the ISR) are
//!    the leader's, byte for byte.
//! 3. **the HW never moves back** within a leader epoch, as seen at the
//!    broker leading in that epoch.
//! 4. **no consumer reads a record later truncated**: everything read is
//!    still on the current leader at its offset (same exemption as 1).
//! 5. **one leader per epoch**: the controller never names two leaders
//!    for one partition and epoch, and no running broker believes it
//!    leads an epoch the controller gave to another.
//!
//! At the end of a seed the world heals (reconnects, resumes, restarts
//! every broker), replicates until every ISR is complete and every
//! replica has the leader's log, checks that every acknowledged record
//! (not exempt) is on every replica, closes the cluster cleanly and
//! compares every replica's segment files byte for byte.
//!
//! A failure prints the seed, the topics' placement, the invariant, the
//! last 30 steps and the state of every replica; a seed with its
//! placement replays the same run (`tests::replay_one_seed`).
//! `LOGBUS_CLUSTER_SIM_SEEDS` and
//! `LOGBUS_CLUSTER_SIM_STEPS` (default 300) set the long run; CI runs a
//! bounded count. The self-test injects known bugs (per cluster, through
//! `ClusterConfig::injected_bug`) and asserts the simulation catches them.

mod invariants;
mod steps;
mod tests;
mod world;

/// SplitMix64: a small seeded generator, so every run of a seed is the
/// same.
#[derive(Debug, Clone)]
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// `true` with probability `percent` / 100.
    pub(super) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One element of a non-empty slice.
    pub(super) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}
