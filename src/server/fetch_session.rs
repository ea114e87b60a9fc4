//! Fetch sessions (KIP-227): a consumer sends its partition list once, and
//! later fetches send only what changed; the broker answers only the
//! partitions with something new.
//!
//! A Fetch (v7+) names a session and an epoch:
//! - id 0, epoch -1: no session, a full fetch (what v4–v6 always are);
//! - id 0, epoch 0: a full fetch that opens a session; the response names
//!   it (or 0 when the cache has no slot for it);
//! - id N, epoch 0: closes session N and opens another, as above;
//! - id N, epoch -1: closes session N and answers a full fetch without a
//!   session;
//! - id N, epoch E > 0: an incremental fetch. Its partitions are added to
//!   (or update) the session, its forgotten topics' partitions leave it,
//!   and the response holds only the session's partitions with records,
//!   an error, or a new high watermark or log start offset. An unknown N
//!   gets FETCH_SESSION_ID_NOT_FOUND, an E other than the session's next
//!   epoch INVALID_FETCH_SESSION_EPOCH, both with session id 0.
//!
//! Each broker keeps at most `max.incremental.fetch.session.cache.slots`
//! sessions (Kafka's default 1000). A new session takes the slot of the
//! least recently used one unused for 120 s (Kafka's
//! `MIN_INCREMENTAL_FETCH_SESSION_EVICTION_MS`), else of the session with
//! the fewest partitions (the least recently used of those) if it has
//! fewer than the new one; otherwise the fetch is answered without a
//! session. Times are the cluster's clock.

use std::collections::HashMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::FetchRequest;
use kafka_protocol::messages::fetch_response::PartitionData;
use parking_lot::Mutex;

/// Kafka's `max.incremental.fetch.session.cache.slots` default.
pub(crate) const DEFAULT_MAX_INCREMENTAL_FETCH_SESSION_CACHE_SLOTS: usize = 1000;

/// How long a session must go unused before any new session may take its
/// slot (Kafka's `MIN_INCREMENTAL_FETCH_SESSION_EVICTION_MS`).
const EVICTION_MS: i64 = 120_000;

/// The session id of a fetch without a session.
pub(crate) const INVALID_SESSION_ID: i32 = 0;
/// The epoch of a fetch that opens a session.
const INITIAL_EPOCH: i32 = 0;
/// The epoch of a fetch that closes its session (or has none).
const FINAL_EPOCH: i32 = -1;

/// The epoch after `epoch`: 1 after the initial one, back to 1 after
/// `i32::MAX`, as Kafka's `FetchMetadata.nextEpoch`.
fn next_epoch(epoch: i32) -> i32 {
    if epoch < 0 {
        // The final epoch stays final.
        FINAL_EPOCH
    } else if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

/// One partition of a session: what the consumer asked for last, and what
/// it was told last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionPartition {
    /// The topic's name.
    pub(crate) topic: String,
    /// The partition number, as the request has it.
    pub(crate) partition: i32,
    /// The offset to fetch from.
    pub(crate) fetch_offset: i64,
    /// The partition's `partition_max_bytes`.
    pub(crate) max_bytes: i32,
    /// The consumer's leader epoch for it (-1: not checked).
    pub(crate) current_leader_epoch: i32,
    /// The high watermark last answered (-1 before any answer).
    high_watermark: i64,
    /// The log start offset last answered (-1 before any answer).
    log_start_offset: i64,
}

impl SessionPartition {
    /// The partition as a request asks for it, not answered yet.
    pub(crate) fn requested(
        topic: &str,
        partition: i32,
        fetch_offset: i64,
        max_bytes: i32,
        current_leader_epoch: i32,
    ) -> Self {
        SessionPartition {
            topic: topic.to_string(),
            partition,
            fetch_offset,
            max_bytes,
            current_leader_epoch,
            high_watermark: -1,
            log_start_offset: -1,
        }
    }

    fn same_partition(&self, topic: &str, partition: i32) -> bool {
        self.partition == partition && self.topic == topic
    }

    /// Whether `data` (this partition's answer) tells the consumer
    /// something new, as Kafka's `CachedPartition.maybeUpdateResponseData`:
    /// records, an error, or another high watermark or log start offset.
    /// Remembers what it was told.
    fn must_respond(&mut self, data: &PartitionData) -> bool {
        let records = data.records.as_ref().is_some_and(|r| !r.is_empty());
        let mut respond = records || data.error_code != 0;
        if data.high_watermark != self.high_watermark {
            self.high_watermark = data.high_watermark;
            respond = true;
        }
        if data.log_start_offset != self.log_start_offset {
            self.log_start_offset = data.log_start_offset;
            respond = true;
        }
        respond
    }
}

#[derive(Debug)]
struct Session {
    /// The epoch the next fetch must carry.
    next_epoch: i32,
    /// In the order they are read: those that answered records move to
    /// the end, so that a full response budget does not starve the last.
    partitions: Vec<SessionPartition>,
    /// When the session was last used, on the cluster's clock.
    last_used: i64,
}

/// What to answer a Fetch with, as its session fields say.
#[derive(Debug)]
pub(crate) enum FetchContext {
    /// A full fetch without a session (response session id 0).
    Sessionless,
    /// A full fetch that opens a session once answered
    /// ([`FetchSessions::open`]).
    Full,
    /// An incremental fetch of session `id`: read these partitions, then
    /// [`FetchSessions::answered`].
    Incremental {
        id: i32,
        partitions: Vec<SessionPartition>,
    },
    /// Refused with this top-level error code (session id 0).
    Error(i16),
}

/// One broker listener's fetch session cache (Kafka's
/// `FetchSessionCache`), every broker's by broker id.
#[derive(Debug)]
pub(crate) struct FetchSessions {
    /// `max.incremental.fetch.session.cache.slots`, per broker.
    slots: usize,
    sessions: Mutex<HashMap<(u32, i32), Session>>,
}

impl FetchSessions {
    /// A cache of `slots` sessions per broker (0: no sessions).
    pub(crate) fn new(slots: usize) -> Self {
        FetchSessions {
            slots,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Reads a Fetch's session fields (v7+; `sessions` false below):
    /// closes the session a full fetch names, and applies an incremental
    /// fetch's changes to its session (the epoch advances).
    pub(crate) fn begin(
        &self,
        broker: u32,
        request: &FetchRequest,
        sessions: bool,
        now: i64,
    ) -> FetchContext {
        if !sessions {
            return FetchContext::Sessionless;
        }
        let (id, epoch) = (request.session_id, request.session_epoch);
        let mut cache = self.sessions.lock();
        if epoch == INITIAL_EPOCH || epoch == FINAL_EPOCH {
            if id != INVALID_SESSION_ID {
                cache.remove(&(broker, id));
            }
            return if epoch == FINAL_EPOCH {
                FetchContext::Sessionless
            } else {
                FetchContext::Full
            };
        }
        let Some(session) = cache.get_mut(&(broker, id)) else {
            return FetchContext::Error(ResponseError::FetchSessionIdNotFound.code());
        };
        if session.next_epoch != epoch {
            return FetchContext::Error(ResponseError::InvalidFetchSessionEpoch.code());
        }
        for forgotten in &request.forgotten_topics_data {
            let topic = forgotten.topic.0.as_str();
            session
                .partitions
                .retain(|p| !(p.topic == topic && forgotten.partitions.contains(&p.partition)));
        }
        for topic in &request.topics {
            let name = topic.topic.0.as_str();
            for p in &topic.partitions {
                let existing = session
                    .partitions
                    .iter_mut()
                    .find(|s| s.same_partition(name, p.partition));
                match existing {
                    Some(s) => {
                        s.fetch_offset = p.fetch_offset;
                        s.max_bytes = p.partition_max_bytes;
                        s.current_leader_epoch = p.current_leader_epoch;
                    }
                    None => session.partitions.push(SessionPartition::requested(
                        name,
                        p.partition,
                        p.fetch_offset,
                        p.partition_max_bytes,
                        p.current_leader_epoch,
                    )),
                }
            }
        }
        session.next_epoch = next_epoch(epoch);
        session.last_used = now;
        FetchContext::Incremental {
            id,
            partitions: session.partitions.clone(),
        }
    }

    /// Opens a session on `broker` for a full fetch's `partitions`, each
    /// with its answer in `answers` (same order); returns its id, or 0
    /// when no slot is free nor may be taken.
    pub(crate) fn open(
        &self,
        broker: u32,
        mut partitions: Vec<SessionPartition>,
        answers: &[&PartitionData],
        now: i64,
    ) -> i32 {
        if self.slots == 0 {
            return INVALID_SESSION_ID;
        }
        for (p, data) in partitions.iter_mut().zip(answers) {
            p.must_respond(data);
        }
        let mut cache = self.sessions.lock();
        let on_broker = cache.keys().filter(|(b, _)| *b == broker).count();
        if on_broker >= self.slots {
            let Some(evicted) = evictable(&cache, broker, partitions.len(), now) else {
                return INVALID_SESSION_ID;
            };
            cache.remove(&(broker, evicted));
        }
        let id = loop {
            // Positive and not in use on this broker.
            let id = (uuid::Uuid::new_v4().as_u128() as u32 & 0x7fff_ffff) as i32;
            if id != INVALID_SESSION_ID && !cache.contains_key(&(broker, id)) {
                break id;
            }
        };
        cache.insert(
            (broker, id),
            Session {
                next_epoch: next_epoch(INITIAL_EPOCH),
                partitions,
                last_used: now,
            },
        );
        id
    }

    /// Records an incremental fetch's answers (`answers[i]` is
    /// `partitions[i]`'s, as [`begin`](Self::begin) returned them) in
    /// session `id`: returns, for each, whether the response keeps it. The
    /// partitions that answered records move to the end of the session's
    /// order.
    pub(crate) fn answered(
        &self,
        broker: u32,
        id: i32,
        partitions: &[SessionPartition],
        answers: &[&PartitionData],
    ) -> Vec<bool> {
        let mut cache = self.sessions.lock();
        let mut session = cache.get_mut(&(broker, id));
        let mut with_records = Vec::new();
        let keep = partitions
            .iter()
            .zip(answers)
            .map(|(asked, data)| {
                let cached = session.as_mut().and_then(|s| {
                    s.partitions
                        .iter_mut()
                        .find(|p| p.same_partition(&asked.topic, asked.partition))
                });
                // A session evicted meanwhile: compare with what this
                // fetch started from.
                let mut fallback = asked.clone();
                let keep = cached.unwrap_or(&mut fallback).must_respond(data);
                if data.records.as_ref().is_some_and(|r| !r.is_empty()) {
                    with_records.push((asked.topic.clone(), asked.partition));
                }
                keep
            })
            .collect();
        if let Some(session) = session {
            for (topic, partition) in with_records {
                if let Some(i) = session
                    .partitions
                    .iter()
                    .position(|p| p.same_partition(&topic, partition))
                {
                    let moved = session.partitions.remove(i);
                    session.partitions.push(moved);
                }
            }
        }
        keep
    }

    /// The number of sessions `broker` holds.
    #[cfg(test)]
    pub(crate) fn count(&self, broker: u32) -> usize {
        self.sessions
            .lock()
            .keys()
            .filter(|(b, _)| *b == broker)
            .count()
    }
}

/// The session of `broker` a new session of `size` partitions may
/// replace: the least recently used one unused for [`EVICTION_MS`], else
/// the one with the fewest partitions (least recently used first) if it
/// has fewer than `size`.
fn evictable(
    cache: &HashMap<(u32, i32), Session>,
    broker: u32,
    size: usize,
    now: i64,
) -> Option<i32> {
    let on_broker = || cache.iter().filter(move |((b, _), _)| *b == broker);
    let stale = on_broker()
        .filter(|(_, s)| s.last_used.saturating_add(EVICTION_MS) <= now)
        .min_by_key(|((_, id), s)| (s.last_used, *id))
        .map(|((_, id), _)| *id);
    stale.or_else(|| {
        on_broker()
            .min_by_key(|((_, id), s)| (s.partitions.len(), s.last_used, *id))
            .filter(|(_, s)| s.partitions.len() < size)
            .map(|((_, id), _)| *id)
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::messages::FetchRequest;
    use kafka_protocol::messages::fetch_response::PartitionData;

    use super::{FINAL_EPOCH, FetchContext, FetchSessions, SessionPartition, next_epoch};

    fn incremental(id: i32, epoch: i32) -> FetchRequest {
        let mut request = FetchRequest::default();
        request.session_id = id;
        request.session_epoch = epoch;
        request
    }

    fn order(context: FetchContext) -> (Vec<i32>, Vec<SessionPartition>) {
        let FetchContext::Incremental { partitions, .. } = context else {
            panic!("not incremental: {context:?}")
        };
        (partitions.iter().map(|p| p.partition).collect(), partitions)
    }

    #[test]
    fn partitions_that_answered_records_go_to_the_back() {
        let sessions = FetchSessions::new(10);
        let asked: Vec<SessionPartition> = (0..3)
            .map(|p| SessionPartition::requested("t", p, 0, 1024, -1))
            .collect();
        let quiet = PartitionData::default();
        let id = sessions.open(0, asked, &[&quiet, &quiet, &quiet], 0);
        assert_ne!(id, 0);
        // Another broker does not know the session.
        assert!(matches!(
            sessions.begin(1, &incremental(id, 1), true, 0),
            FetchContext::Error(70)
        ));
        let (first, partitions) = order(sessions.begin(0, &incremental(id, 1), true, 0));
        assert_eq!(first, [0, 1, 2]);
        let mut news = PartitionData::default();
        news.records = Some(Bytes::from_static(b"batch"));
        let keep = sessions.answered(0, id, &partitions, &[&news, &quiet, &quiet]);
        assert_eq!(keep, [true, false, false]);
        let (second, _) = order(sessions.begin(0, &incremental(id, 2), true, 0));
        assert_eq!(second, [1, 2, 0]);
        assert_eq!(sessions.count(0), 1);
    }

    #[test]
    fn epochs_advance_and_wrap_to_one() {
        assert_eq!(next_epoch(0), 1);
        assert_eq!(next_epoch(7), 8);
        assert_eq!(next_epoch(i32::MAX), 1);
        assert_eq!(next_epoch(FINAL_EPOCH), FINAL_EPOCH);
    }
}
