//! `Cluster::fail_disk`: a running broker's disk fails under it — every
//! I/O of the broker fails with `EIO` from that moment — and the broker
//! halts, fenced at once. Producers with `acks=all` follow the new leaders
//! and lose nothing acknowledged; a restart (a disk replaced with its
//! contents) brings the broker back into the ISRs with replicas equal to
//! the others'. Waits are on partition changes or records, each with a
//! generous real-time failure guard; nothing sleeps.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

mod common;

use common::replicated::*;
use logbus::{Cluster, ClusterConfig, Error, FaultyStorage, ManualClock, Producer, ProducerRecord};

/// Asserts that broker `failed` is fenced, not running, leads nothing and
/// is in no ISR.
fn assert_out(cluster: &Cluster, failed: u32) {
    assert!(cluster.is_broker_fenced(failed));
    assert!(!cluster.is_broker_running(failed));
    for p in &cluster.describe_topic(TOPIC).unwrap().partitions {
        assert!(p.leader.is_some(), "partition {}", p.partition);
        assert_ne!(p.leader, Some(failed), "partition {}", p.partition);
        assert!(!p.isr.contains(&failed), "partition {}", p.partition);
    }
}

/// Sends `numbers` one at a time and waits for each; every one must be
/// acknowledged.
fn send_acked(producer: &Producer, numbers: std::ops::Range<u64>) {
    for n in numbers {
        let text = n.to_string();
        producer
            .send(ProducerRecord::new(TOPIC, &text).with_key(text))
            .unwrap()
            .wait()
            .unwrap_or_else(|e| panic!("record {n}: {e}"));
    }
}

/// A producer sends without waiting while partition 0's leader's disk
/// fails under it: every send completes, each failure is retriable or the
/// failed disk's own error for a request that reached it just before it
/// halted, the broker is fenced and out of every ISR at once, sends go on
/// at the new leaders, every acknowledged record is consumed, and after a
/// restart the broker re-enters the ISRs and ends with the same segment
/// files as the others.
#[test]
fn a_leaders_disk_failing_mid_stream_loses_no_acked_record_and_a_restart_rejoins_it() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), builder().build().unwrap()).unwrap();
    create(&cluster, 3);
    create_offsets_topic(&cluster);
    let mut sends = BackgroundSends::start(&cluster);
    sends.await_more(300, "records are acknowledged");
    let failed = leader(&cluster, 0);
    let before = cluster.replication_stats();

    cluster.fail_disk(failed).unwrap();
    // Fenced at once (no session to wait for), its leaderships moved.
    assert_out(&cluster, failed);
    let after = cluster.replication_stats();
    assert!(after.leader_changes > before.leader_changes);
    assert!(after.isr_shrinks >= before.isr_shrinks + 3);
    assert!(matches!(
        cluster.fail_disk(failed),
        Err(Error::IllegalState(_))
    ));

    sends.await_more(300, "sends go on after the failover");
    cluster.restart_broker(failed).unwrap();
    assert!(!cluster.is_broker_fenced(failed));
    assert!(cluster.is_broker_running(failed));
    assert!(cluster.wait_until(GUARD, isr_complete));
    // A request caught inside the failed broker's log is answered as one
    // arriving after it halted: retriable (checked by `finish`).
    let acked = sends.finish();
    assert!(acked.len() >= 600, "{} acknowledged", acked.len());
    consume_all(&cluster, &acked);
    cluster.close().unwrap();
    assert_replicas_identical(dir.path(), 3);
}

/// A cluster on a manual clock (Kafka's default lag and session times):
/// nothing moves unless the test moves the clock.
fn manual(dir: &Path, storages: &[FaultyStorage]) -> (Cluster, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let mut config = ClusterConfig::builder().brokers(3).clock(clock.clone());
    for (id, storage) in (0..).zip(storages) {
        config = config.broker_storage(id, Arc::new(storage.clone()));
    }
    let cluster = Cluster::open(dir, config.build().unwrap()).unwrap();
    create(&cluster, 3);
    (cluster, clock)
}

/// On a clock that never moves, `fail_disk` fences the broker and moves
/// its leaderships before it returns (a crash would wait for its
/// session); `acks=all` goes on with the two others (min ISR 2); the fault
/// API refuses the halted broker typed; a restart brings it back into
/// every ISR, where it takes back its preferred leaderships only at the
/// controller's next step, which a move of the clock brings (never under
/// the sends made before: their retries would wait for this clock); after
/// a clean close every replica's segment files are equal.
#[test]
fn on_a_manual_clock_a_failed_disk_fences_at_once_and_a_restart_rejoins_the_isr() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, clock) = manual(dir.path(), &[]);
    let producer = acks_all(&cluster);
    send_acked(&producer, 0..100);
    let failed = leader(&cluster, 1);
    let preferred = cluster.describe_topic(TOPIC).unwrap().partitions[1].replicas[0];
    assert_eq!(
        preferred, failed,
        "partition 1 starts at its preferred leader"
    );

    cluster.fail_disk(failed).unwrap();
    assert_out(&cluster, failed);
    for refused in [
        cluster.fail_disk(failed),
        cluster.stop_broker(failed),
        cluster.crash_broker(failed),
        cluster.pause_fetching(failed),
    ] {
        assert!(
            matches!(refused, Err(Error::IllegalState(_))),
            "{refused:?}"
        );
    }
    assert!(matches!(
        cluster.fail_disk(3),
        Err(Error::InvalidArgument(_))
    ));
    send_acked(&producer, 100..200);

    cluster.restart_broker(failed).unwrap();
    assert!(!cluster.is_broker_fenced(failed));
    assert!(cluster.wait_until(GUARD, isr_complete));
    let changes = cluster.replication_stats().leader_changes;
    send_acked(&producer, 200..300);
    // The restart's own liveness step ran before the broker was back in
    // any ISR, and the clock has not moved since: no later step took its
    // preferred leaderships back under the sends above (one would fail an
    // `acks=all` append in flight with a retriable error, whose retry
    // waits `retry.backoff.ms` on this clock: the send would never end).
    assert_eq!(cluster.replication_stats().leader_changes, changes);
    assert_ne!(leader(&cluster, 1), failed);
    // The next step, which a move of the clock brings, gives them back.
    clock.advance_ms(1);
    assert!(cluster.wait_until(GUARD, |c| leader(c, 1) == failed));
    producer.close().unwrap();
    cluster.close().unwrap();
    assert_replicas_identical(dir.path(), 3);
    // The next open finds every record acknowledged.
    let reopened = Cluster::open(dir.path(), builder().build().unwrap()).unwrap();
    let expected: BTreeSet<u64> = (0..300).collect();
    consume_all(&reopened, &expected);
    reopened.close().unwrap();
}

/// A follower's disk fails while it holds unsynced records, then its
/// machine loses power: its log is shorter when the disk comes back, yet
/// every acknowledged record is on the others, the restarted broker
/// catches up into the ISR, and its replica ends equal to the others'.
#[test]
fn a_failed_disk_then_a_power_loss_loses_no_acked_record() {
    let dir = tempfile::tempdir().unwrap();
    let storages: Vec<FaultyStorage> = (0..3).map(|_| FaultyStorage::new()).collect();
    let (cluster, _clock) = manual(dir.path(), &storages);
    let producer = acks_all(&cluster);
    send_acked(&producer, 0..300);
    let lead = leader(&cluster, 0);
    let victim = (lead + 1) % 3;
    assert!(storages[victim as usize].unsynced_summary().dirty_pages > 0);

    cluster.fail_disk(victim).unwrap();
    assert_out(&cluster, victim);
    // Nothing was written after the failure: the halted broker's unsynced
    // pages are what it had, and the power loss takes them.
    storages[victim as usize].power_loss(11).unwrap();
    send_acked(&producer, 300..400);

    cluster.restart_broker(victim).unwrap();
    assert!(cluster.wait_until(GUARD, isr_complete));
    producer.close().unwrap();
    cluster.close().unwrap();
    assert_replicas_identical(dir.path(), 3);
}
