//! [`Replica`]: the leader's view of one replica of a partition.

/// What a partition's leader knows about one of its replicas: Kafka's
/// `Replica` (not the local partition state, which is
/// [`PartitionState`](super::PartitionState)). The leader tracks each
/// follower's log end offset, when it last fetched and last caught up, and
/// the offset it reports durable, to compute the high watermark and shrink
/// or grow the ISR. The state is reset whenever a broker becomes the
/// partition's leader (Kafka's `makeLeader`): a follower's log end offset
/// is unknown until its first fetch. With one broker the only replica is
/// the leader itself, always caught up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Replica {
    /// The broker holding the replica.
    pub(crate) broker: u32,
    /// Its log end offset, as the leader last learned it (its last fetch
    /// offset); `None` until it fetched from this leader.
    pub(crate) log_end_offset: Option<u64>,
    /// Every offset below this is on its disk, as it last reported;
    /// `None` until it fetched from this leader.
    pub(crate) durable_offset: Option<u64>,
    /// When (cluster clock, ms) it last fetched up to the leader's log end
    /// offset, or up to the log end offset the leader had at its previous
    /// fetch (Kafka's `lastCaughtUpTimeMs`); `None` if never.
    pub(crate) last_caught_up_ms: Option<i64>,
    /// When (cluster clock, ms) it last fetched; `None` if never.
    pub(crate) last_fetch_ms: Option<i64>,
    /// The leader's log end offset at its last fetch (Kafka's
    /// `lastFetchLeaderLogEndOffset`).
    pub(crate) last_fetch_leader_log_end: u64,
}

impl Replica {
    /// A follower's state when its broker becomes the leader: nothing
    /// known but, for a member of the ISR, that it was caught up now (so
    /// it is given `replica.lag.time.max.ms` to fetch before it leaves).
    pub(crate) fn reset(broker: u32, in_sync: bool, now_ms: i64) -> Self {
        Replica {
            broker,
            log_end_offset: None,
            durable_offset: None,
            last_caught_up_ms: in_sync.then_some(now_ms),
            last_fetch_ms: None,
            last_fetch_leader_log_end: 0,
        }
    }

    /// Notes a fetch from `fetch_offset` (its log end), reporting
    /// `durable_offset`, made at `now_ms` while the leader's log ended at
    /// `leader_log_end` (Kafka's `updateFetchStateOrThrow`).
    pub(crate) fn update_fetch_state(
        &mut self,
        fetch_offset: u64,
        durable_offset: u64,
        leader_log_end: u64,
        now_ms: i64,
    ) {
        let caught_up_at = if fetch_offset >= leader_log_end {
            Some(now_ms)
        } else if fetch_offset >= self.last_fetch_leader_log_end {
            self.last_fetch_ms
        } else {
            None
        };
        if let Some(at) = caught_up_at {
            self.last_caught_up_ms = Some(self.last_caught_up_ms.map_or(at, |t| t.max(at)));
        }
        self.log_end_offset = Some(fetch_offset);
        self.durable_offset = Some(durable_offset.min(fetch_offset));
        self.last_fetch_leader_log_end = leader_log_end;
        self.last_fetch_ms = Some(now_ms);
    }

    /// Whether it is caught up at `now_ms`: its log ends where the
    /// leader's does, or it caught up within `lag_time_max_ms` (Kafka's
    /// `isCaughtUp`).
    pub(crate) fn is_caught_up(
        &self,
        leader_log_end: u64,
        now_ms: i64,
        lag_time_max_ms: i64,
    ) -> bool {
        self.log_end_offset == Some(leader_log_end)
            || self
                .last_caught_up_ms
                .is_some_and(|t| now_ms.saturating_sub(t) <= lag_time_max_ms)
    }
}
