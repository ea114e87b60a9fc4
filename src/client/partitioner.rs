//! Choosing a partition for each record, as Kafka's producer does.
//!
//! - A record with a key goes to [`partition_for_key`]: Kafka's murmur2 hash
//!   of the key bytes, so the same key lands on the same partition here, in
//!   Kafka's Java client and in any client that copies it.
//! - A record without a key goes to the topic's current "sticky" partition,
//!   which changes only when a batch for it completes (KIP-480/KIP-794), so
//!   keyless records fill whole batches instead of many small ones.
//! - A [`Partitioner`] set on the producer may override both.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::num::NonZeroU32;

use parking_lot::Mutex;

/// Kafka's 32-bit murmur2 hash, identical to the Java client's
/// `org.apache.kafka.common.utils.Utils.murmur2(byte[])`.
///
/// This is the hash Kafka's producer uses to map a record key to a partition
/// (see [`partition_for_key`]). It is MurmurHash2 with Kafka's fixed seed
/// `0x9747b28c`, reading the input as little-endian 4-byte words.
///
/// ```
/// // The values Kafka's own UtilsTest.testMurmur2 expects.
/// assert_eq!(logbus::murmur2(b"21"), -973_932_308);
/// assert_eq!(logbus::murmur2(b"foobar"), -790_332_482);
/// ```
#[must_use]
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // Java's `int length`: the low 32 bits (a Java array never exceeds them).
    let mut h = SEED ^ data.len() as u32;

    let mut words = data.chunks_exact(4);
    for word in &mut words {
        let mut k = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }

    // Java's `switch (length % 4)` with fallthrough from case 3 to case 1.
    let tail = words.remainder();
    if let Some(&b) = tail.get(2) {
        h ^= u32::from(b) << 16;
    }
    if let Some(&b) = tail.get(1) {
        h ^= u32::from(b) << 8;
    }
    if let Some(&b) = tail.first() {
        h ^= u32::from(b);
        h = h.wrapping_mul(M);
    }

    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h.cast_signed()
}

/// The partition Kafka's producer picks for a record with this key:
/// `Utils.toPositive(Utils.murmur2(key)) % numPartitions`, where `toPositive`
/// clears the sign bit (it is not `abs`).
///
/// The count is a [`NonZeroU32`], so this cannot divide by zero; the result
/// is always below it. For every count Kafka allows (up to `i32::MAX`) the
/// result is the partition Kafka's Java client chooses for the same key bytes.
///
/// ```
/// use std::num::NonZeroU32;
/// let count = NonZeroU32::new(100).unwrap();
/// // murmur2(b"21") is negative; toPositive keeps its low 31 bits.
/// assert_eq!(logbus::partition_for_key(b"21", count), 40);
/// ```
#[must_use]
pub fn partition_for_key(key: &[u8], partition_count: NonZeroU32) -> u32 {
    let positive = murmur2(key).cast_unsigned() & 0x7fff_ffff;
    positive % partition_count.get()
}

/// Chooses the partition for a record, in place of the producer's built-in
/// choice; the counterpart of Kafka's `org.apache.kafka.clients.producer.Partitioner`.
///
/// The producer calls [`partition`](Partitioner::partition) once per record
/// with the topic's current partition count. Returning `None` means "no
/// opinion": the producer then uses its built-in choice ([`partition_for_key`]
/// for a keyed record, else the topic's sticky partition). A returned
/// partition that is not below `partition_count` makes the producer reject
/// the record with an error; it is never clamped or wrapped.
///
/// Implementations are shared between threads and should be cheap: the
/// producer calls them on every send.
///
/// # Example
///
/// ```
/// use std::num::NonZeroU32;
/// use logbus::{Partitioner, partition_for_key};
///
/// /// Sends every `vip-` key to partition 0 and leaves the rest to the producer.
/// #[derive(Debug)]
/// struct VipFirst;
///
/// impl Partitioner for VipFirst {
///     fn partition(
///         &self,
///         _topic: &str,
///         key: Option<&[u8]>,
///         _value: Option<&[u8]>,
///         _partition_count: NonZeroU32,
///     ) -> Option<u32> {
///         key.filter(|k| k.starts_with(b"vip-")).map(|_| 0)
///     }
/// }
///
/// let count = NonZeroU32::new(12).unwrap();
/// assert_eq!(VipFirst.partition("orders", Some(b"vip-7"), None, count), Some(0));
/// assert_eq!(VipFirst.partition("orders", Some(b"order-7"), None, count), None);
/// assert!(partition_for_key(b"order-7", count) < 12); // what the producer uses then
/// ```
pub trait Partitioner: Send + Sync + std::fmt::Debug {
    /// The partition for a record of `topic` with this key and value, or
    /// `None` to let the producer choose. Must be below `partition_count`.
    fn partition(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        partition_count: NonZeroU32,
    ) -> Option<u32>;
}

/// Spreads records over all partitions in turn, ignoring keys; Kafka's
/// `RoundRobinPartitioner`.
///
/// Each topic has its own turn, starting at partition 0. The turn follows the
/// partition count given on each call, so if the count shrinks the next
/// partition wraps into range. (Kafka's version skips partitions without a
/// leader; in-process every partition is available.)
///
/// ```
/// use std::num::NonZeroU32;
/// use logbus::{Partitioner, RoundRobinPartitioner};
///
/// let round_robin = RoundRobinPartitioner::default();
/// let three = NonZeroU32::new(3).unwrap();
/// let picks: Vec<_> = (0..4)
///     .map(|_| round_robin.partition("orders", Some(b"same-key"), None, three))
///     .collect();
/// assert_eq!(picks, [Some(0), Some(1), Some(2), Some(0)]);
/// // Another topic has its own turn.
/// assert_eq!(round_robin.partition("audit", None, None, three), Some(0));
/// ```
#[derive(Debug, Default)]
pub struct RoundRobinPartitioner {
    /// Per topic, the partition the next call returns (before wrapping).
    next: Mutex<HashMap<String, u32>>,
}

impl RoundRobinPartitioner {
    /// A round-robin partitioner with every topic's turn at partition 0.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

impl Partitioner for RoundRobinPartitioner {
    fn partition(
        &self,
        topic: &str,
        _key: Option<&[u8]>,
        _value: Option<&[u8]>,
        partition_count: NonZeroU32,
    ) -> Option<u32> {
        let mut next = self.next.lock();
        let turn = match next.get_mut(topic) {
            Some(turn) => turn,
            None => next.entry(topic.to_owned()).or_insert(0),
        };
        let partition = *turn % partition_count.get();
        // partition < count <= u32::MAX, so this cannot overflow.
        *turn = partition + 1;
        Some(partition)
    }
}

/// The producer's built-in choice for records without a key: per topic, one
/// "sticky" partition that changes only when a batch for it completes
/// (Kafka's KIP-480 sticky partitioner, with KIP-794's switch on batch
/// completion; simplified: no load-based weighting).
#[derive(Debug)]
pub(crate) struct StickyPartitions {
    state: Mutex<StickyState>,
}

#[derive(Debug)]
struct StickyState {
    /// Per topic, the current partition (may be stale if the count shrank).
    current: HashMap<String, u32>,
    /// splitmix64 state: random enough to spread topics, no dependency.
    rng: u64,
}

impl StickyState {
    fn next_u64(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift, bias below 2^-32).
    fn below(&mut self, n: u32) -> u32 {
        let r = self.next_u64() >> 32;
        // r < 2^32, so (r * n) >> 32 < n: the cast loses nothing.
        ((r * u64::from(n)) >> 32) as u32
    }

    /// A random partition below `count`, never `avoid` when another exists.
    fn choose_avoiding(&mut self, count: NonZeroU32, avoid: u32) -> u32 {
        let count = count.get();
        if count == 1 {
            0
        } else if avoid >= count {
            self.below(count)
        } else {
            let pick = self.below(count - 1);
            if pick >= avoid { pick + 1 } else { pick }
        }
    }
}

impl StickyPartitions {
    /// No topic has a sticky partition yet; each gets a random one on first use.
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(StickyState {
                current: HashMap::new(),
                rng: RandomState::new().hash_one(0x6c6f_6762_7573_u64),
            }),
        }
    }

    /// The partition for a keyless record of `topic`: the current sticky one,
    /// chosen at random on first use or when the count shrank below it.
    pub(crate) fn partition(&self, topic: &str, partition_count: NonZeroU32) -> u32 {
        let mut state = self.state.lock();
        if let Some(&current) = state.current.get(topic)
            && current < partition_count.get()
        {
            return current;
        }
        let chosen = state.below(partition_count.get());
        match state.current.get_mut(topic) {
            Some(current) => *current = chosen,
            None => {
                state.current.insert(topic.to_owned(), chosen);
            }
        }
        chosen
    }

    /// A batch for `completed` of `topic` is complete: move the topic to a
    /// different random partition, unless it has already moved (another
    /// caller completed the same batch first).
    pub(crate) fn on_batch_complete(
        &self,
        topic: &str,
        partition_count: NonZeroU32,
        completed: u32,
    ) {
        let mut state = self.state.lock();
        match state.current.get(topic) {
            Some(&current) if current != completed => {}
            _ => {
                let chosen = state.choose_avoiding(partition_count, completed);
                match state.current.get_mut(topic) {
                    Some(current) => *current = chosen,
                    None => {
                        state.current.insert(topic.to_owned(), chosen);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn count(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    // The cases of Kafka's own test, clients/src/test/java/org/apache/kafka/
    // common/utils/UtilsTest.java, testMurmur2.
    #[test]
    fn murmur2_matches_kafka_utils_test() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key), expected, "{}", String::from_utf8_lossy(key));
        }
    }

    // Computed with kafka-python 3.0.12's kafka.partitioner.default.murmur2
    // (a port of the Java client's, which agrees on every UtilsTest case),
    // read as a signed 32-bit int. Covers every tail length (0..=3 bytes after
    // the 4-byte words) and bytes >= 0x80, which Java sees as negative.
    #[test]
    fn murmur2_matches_kafka_python_on_every_tail_length_and_high_bytes() {
        let all_bytes: Vec<u8> = (0..=255).collect();
        let cases: [(&[u8], i32); 14] = [
            (b"", 275_646_681),
            (b"a", -1_563_381_124),
            (b"ab", 316_155_434),
            (b"abcd", -1_323_649_548),
            (b"abcde", 461_995_741),
            (&[0xff], -311_467_685),
            (&[0x80, 0xff], -80_095_470),
            (&[0xff, 0xfe, 0xfd], 998_637_092),
            (&[0xff; 4], 644_171_429),
            (&[0x80, 0x81, 0x82, 0x83, 0x84], -1_665_622_439),
            ("héllo wörld".as_bytes(), 439_213_890),
            ("日本語".as_bytes(), 1_431_860_170),
            (&all_bytes, -1_948_347_274),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key), expected, "{key:02x?}");
        }
    }

    // Expected partitions from kafka-python 3.0.12's DefaultPartitioner
    // arithmetic, (murmur2(key) & 0x7fffffff) % count, for counts 1, 3, 7, 100.
    #[test]
    fn partition_for_key_matches_kafka() {
        let cases: [(&[u8], [u32; 4]); 11] = [
            (b"", [0, 0, 2, 81]),
            (b"a", [0, 1, 5, 24]),
            (b"abcd", [0, 2, 5, 0]),
            (b"21", [0, 0, 3, 40]),
            (b"foobar", [0, 0, 0, 66]),
            (b"a-little-bit-long-string", [0, 2, 1, 12]),
            (b"a-little-bit-longer-string", [0, 2, 0, 19]),
            (&[0xff], [0, 0, 5, 63]),
            (&[0x80, 0xff], [0, 2, 2, 78]),
            ("héllo wörld".as_bytes(), [0, 0, 3, 90]),
            ("日本語".as_bytes(), [0, 1, 6, 70]),
        ];
        for (key, expected) in cases {
            let got = [1, 3, 7, 100].map(|n| partition_for_key(key, count(n)));
            assert_eq!(got, expected, "{key:02x?}");
        }
    }

    #[test]
    fn partition_for_key_clears_the_sign_bit_rather_than_taking_abs() {
        // murmur2(b"21") is negative; |h| % 100 would be 8.
        assert!(murmur2(b"21") < 0);
        assert_eq!(murmur2(b"21").unsigned_abs() % 100, 8);
        assert_eq!(partition_for_key(b"21", count(100)), 40);
        // A count above every possible hash leaves the masked hash as is.
        let masked = murmur2(b"21").cast_unsigned() & 0x7fff_ffff;
        assert_eq!(partition_for_key(b"21", count(u32::MAX)), masked);
    }

    #[test]
    fn round_robin_cycles_per_topic_and_ignores_keys() {
        let rr = RoundRobinPartitioner::new();
        let picks: Vec<_> = (0..7)
            .map(|i| {
                let key = format!("key-{i}");
                rr.partition("a", Some(key.as_bytes()), None, count(3))
            })
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0].map(Some));
        assert_eq!(rr.partition("b", None, None, count(3)), Some(0));
        assert_eq!(rr.partition("a", None, None, count(3)), Some(1));
    }

    #[test]
    fn round_robin_wraps_into_a_shrunk_count() {
        let rr = RoundRobinPartitioner::new();
        for _ in 0..5 {
            rr.partition("t", None, None, count(8));
        }
        // Next turn would be 5; with 4 partitions it wraps to 1.
        assert_eq!(rr.partition("t", None, None, count(4)), Some(1));
        assert_eq!(rr.partition("t", None, None, count(4)), Some(2));
        assert_eq!(rr.partition("t", None, None, count(1)), Some(0));
        assert_eq!(rr.partition("t", None, None, count(4)), Some(1));
    }

    #[test]
    fn sticky_keeps_one_partition_until_its_batch_completes() {
        let sticky = StickyPartitions::new();
        let first = sticky.partition("t", count(5));
        assert!(first < 5);
        for _ in 0..100 {
            assert_eq!(sticky.partition("t", count(5)), first);
        }
        sticky.on_batch_complete("t", count(5), first);
        let second = sticky.partition("t", count(5));
        assert_ne!(second, first);
        assert!(second < 5);
    }

    #[test]
    fn sticky_ignores_a_completion_for_a_partition_it_already_left() {
        let sticky = StickyPartitions::new();
        let first = sticky.partition("t", count(4));
        sticky.on_batch_complete("t", count(4), first);
        let second = sticky.partition("t", count(4));
        // A second caller reports the same completed batch: no second switch.
        sticky.on_batch_complete("t", count(4), first);
        assert_eq!(sticky.partition("t", count(4)), second);
    }

    #[test]
    fn sticky_with_one_partition_stays_on_it() {
        let sticky = StickyPartitions::new();
        assert_eq!(sticky.partition("t", count(1)), 0);
        sticky.on_batch_complete("t", count(1), 0);
        assert_eq!(sticky.partition("t", count(1)), 0);
    }

    #[test]
    fn sticky_rechooses_when_the_count_shrinks_below_it() {
        let sticky = StickyPartitions::new();
        // Move until the sticky partition is one a shrink to 2 must drop.
        while sticky.partition("t", count(10)) < 2 {
            let current = sticky.partition("t", count(10));
            sticky.on_batch_complete("t", count(10), current);
        }
        let after = sticky.partition("t", count(2));
        assert!(after < 2);
        assert_eq!(sticky.partition("t", count(10)), after, "stays sticky");
    }

    #[test]
    fn sticky_completion_before_first_use_still_avoids_the_partition() {
        let sticky = StickyPartitions::new();
        sticky.on_batch_complete("t", count(2), 1);
        assert_eq!(sticky.partition("t", count(2)), 0);
    }

    #[test]
    fn sticky_switches_reach_every_partition() {
        let sticky = StickyPartitions::new();
        let mut seen = [false; 3];
        for _ in 0..1000 {
            let current = sticky.partition("t", count(3));
            seen[current as usize] = true;
            sticky.on_batch_complete("t", count(3), current);
        }
        // Each switch picks one of the two others at random: missing one
        // partition for 1000 switches has probability about 2^-1000.
        assert_eq!(seen, [true; 3]);
    }

    #[test]
    fn partitioners_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<RoundRobinPartitioner>();
        check::<StickyPartitions>();
        check::<Box<dyn Partitioner>>();
    }

    proptest! {
        #[test]
        fn partition_for_key_is_below_the_count(
            key in proptest::collection::vec(any::<u8>(), 0..64),
            n in 1..=u32::MAX,
        ) {
            prop_assert!(partition_for_key(&key, count(n)) < n);
        }

        #[test]
        fn sticky_partition_is_below_the_count(
            counts in proptest::collection::vec(1..50_u32, 1..40),
        ) {
            let sticky = StickyPartitions::new();
            for n in counts {
                let p = sticky.partition("t", count(n));
                prop_assert!(p < n);
                sticky.on_batch_complete("t", count(n), p);
            }
        }

        #[test]
        fn sticky_never_switches_back_to_the_completed_partition(
            n in 2..1000_u32,
            switches in 1..50_usize,
        ) {
            let sticky = StickyPartitions::new();
            for _ in 0..switches {
                let completed = sticky.partition("t", count(n));
                sticky.on_batch_complete("t", count(n), completed);
                let next = sticky.partition("t", count(n));
                prop_assert_ne!(next, completed);
                prop_assert!(next < n);
            }
        }

        #[test]
        fn round_robin_visits_every_partition_once_per_count_calls(
            n in 1..200_u32,
            earlier in 0..500_u32,
            rounds in 1..4_u32,
        ) {
            let rr = RoundRobinPartitioner::new();
            for _ in 0..earlier {
                rr.partition("t", None, None, count(n));
            }
            for _ in 0..rounds {
                let mut hits = vec![0_u32; n as usize];
                for _ in 0..n {
                    let p = rr.partition("t", None, None, count(n)).unwrap();
                    hits[p as usize] += 1;
                }
                prop_assert!(hits.iter().all(|&h| h == 1), "{hits:?}");
            }
        }
    }
}
