//! `Cluster::open_read_only`: a view of a cluster directory that takes no
//! lock and changes no byte — on a cleanly closed directory, while another
//! `Cluster` holds it and appends, and on a damaged one (recovered in
//! memory only) — and refuses every change with `Error::ReadOnly`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use logbus::{
    Cluster, ClusterConfig, Consumer, ConsumerConfig, Error, ManualClock, NewTopic,
    OffsetAndMetadata, OffsetReset, Producer, ProducerConfig, ProducerRecord, TopicConfig,
    TopicPartition,
};

/// Every file and directory below `dir` with its bytes (`None` for a
/// directory).
type Snapshot = BTreeMap<PathBuf, Option<Vec<u8>>>;

fn snapshot(dir: &Path) -> Snapshot {
    let mut all = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                all.insert(path.clone(), None);
                todo.push(path);
            } else {
                all.insert(path.clone(), Some(fs::read(&path).unwrap()));
            }
        }
    }
    all
}

/// Panics naming the first path that differs.
fn assert_unchanged(before: &Snapshot, after: &Snapshot) {
    for (path, content) in before {
        match after.get(path) {
            None => panic!("{} disappeared", path.display()),
            Some(now) if now != content => panic!("{} changed", path.display()),
            Some(_) => {}
        }
    }
    for path in after.keys() {
        assert!(before.contains_key(path), "{} appeared", path.display());
    }
}

/// A manual clock: nothing of a writer fires on its own (checkpoints,
/// retention), so its files change only when the test appends.
fn config(clock: &Arc<ManualClock>) -> ClusterConfig {
    ClusterConfig::builder()
        .clock(clock.clone())
        .build()
        .unwrap()
}

fn small_segments() -> TopicConfig {
    TopicConfig::new()
        .segment_bytes(1024)
        .unwrap()
        .index_interval_bytes(128)
        .unwrap()
}

/// `n` records `"{prefix}-{i}"` on partition `p` of `topic`, each
/// acknowledged before the next is sent (a batch each: with small
/// segments, several segments and index entries).
fn produce(cluster: &Cluster, topic: &str, p: u32, prefix: &str, n: usize) {
    let producer = Producer::new(cluster, ProducerConfig::default()).unwrap();
    for i in 0..n {
        producer
            .send(ProducerRecord::new(topic, format!("{prefix}-{i}")).with_partition(p))
            .unwrap()
            .wait()
            .unwrap();
    }
    producer.close().unwrap();
}

/// Every record of `tp` from offset 0, read by a consumer outside any group.
fn read_all(cluster: &Cluster, tp: &TopicPartition) -> Vec<(u64, String)> {
    let config = ConsumerConfig::builder()
        .auto_offset_reset(OffsetReset::Earliest)
        .build()
        .unwrap();
    let mut consumer = Consumer::new(cluster, config).unwrap();
    consumer.assign(std::slice::from_ref(tp)).unwrap();
    let mut all = Vec::new();
    loop {
        let records = consumer.poll(Duration::ZERO).unwrap();
        if records.is_empty() {
            break;
        }
        for r in &records {
            let value = String::from_utf8(r.value().unwrap().to_vec()).unwrap();
            all.push((r.offset(), value));
        }
    }
    consumer.close().unwrap();
    all
}

fn commits(entries: &[(&str, u32, u64)]) -> BTreeMap<TopicPartition, OffsetAndMetadata> {
    entries
        .iter()
        .map(|&(t, p, o)| (TopicPartition::new(t, p), OffsetAndMetadata::new(o)))
        .collect()
}

/// A cluster with topic `orders` (2 partitions, small segments: several
/// segments and index entries), 40 + 25 records, and group `g`'s commits.
fn populate(cluster: &Cluster) {
    cluster
        .create_topic(NewTopic::new("orders", 2).config(small_segments()))
        .unwrap();
    produce(cluster, "orders", 0, "a", 40);
    produce(cluster, "orders", 1, "b", 25);
    cluster
        .alter_group_offsets("g", &commits(&[("orders", 0, 30), ("orders", 1, 7)]))
        .unwrap();
}

/// What a view shows of `populate`'s cluster, checked: topics, offsets,
/// groups, committed offsets and the records.
fn check_view(view: &Cluster, records: (usize, usize)) {
    assert_eq!(view.list_topics(), ["orders"]);
    let orders = view.describe_topic("orders").unwrap();
    let ends: Vec<(u64, u64, u64)> = orders
        .partitions
        .iter()
        .map(|p| (p.log_start_offset, p.high_watermark, p.log_end_offset))
        .collect();
    let (a, b) = (records.0 as u64, records.1 as u64);
    assert_eq!(ends, [(0, a, a), (0, b, b)]);
    assert_eq!(view.list_groups(), ["g"]);
    let committed = view.list_group_offsets("g").unwrap();
    let plain: Vec<(u32, u64)> = committed
        .iter()
        .map(|(tp, m)| (tp.partition, m.offset))
        .collect();
    assert_eq!(plain, [(0, 30), (1, 7)]);
    let group = view.describe_group("g").unwrap();
    let lags: Vec<(u32, Option<u64>)> = group
        .offsets
        .iter()
        .map(|l| (l.partition.partition, l.lag))
        .collect();
    assert_eq!(lags, [(0, Some(a - 30)), (1, Some(b - 7))]);
    let first = read_all(view, &TopicPartition::new("orders", 0));
    let expected: Vec<(u64, String)> = (0..records.0)
        .map(|i| (i as u64, format!("a-{i}")))
        .collect();
    assert_eq!(first, expected);
    assert_eq!(
        read_all(view, &TopicPartition::new("orders", 1)).len(),
        records.1
    );
}

#[test]
fn a_closed_directory_is_read_and_left_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let cluster = Cluster::open(dir.path(), config(&clock)).unwrap();
    populate(&cluster);
    cluster.close().unwrap();
    // No lock file either: the view must not make one.
    fs::remove_file(dir.path().join(".lock")).unwrap();
    let before = snapshot(dir.path());
    assert!(
        before.len() > 20,
        "segments, indexes, checkpoints: {before:?}"
    );

    let view = Cluster::open_read_only(dir.path(), config(&clock)).unwrap();
    assert!(view.is_read_only());
    check_view(&view, (40, 25));
    assert!(view.recovery_report().truncations().next().is_none());
    view.close().unwrap();
    assert_unchanged(&before, &snapshot(dir.path()));

    // A normal open afterwards finds everything as it was.
    let cluster = Cluster::open(dir.path(), config(&clock)).unwrap();
    assert!(!cluster.is_read_only());
    check_view(&cluster, (40, 25));
    cluster.close().unwrap();
}

#[test]
fn a_directory_another_cluster_holds_is_read_while_it_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let writer = Cluster::open(dir.path(), config(&clock)).unwrap();
    populate(&writer);
    // The writer holds the lock: a normal open is refused...
    match Cluster::open(dir.path(), config(&clock)) {
        Err(Error::DirectoryLocked { path }) => assert_eq!(path, dir.path()),
        other => panic!("expected DirectoryLocked, got {other:?}"),
    }
    // ... a read-only one sees what it wrote so far, and changes nothing.
    let before = snapshot(dir.path());
    let view = Cluster::open_read_only(dir.path(), config(&clock)).unwrap();
    check_view(&view, (40, 25));
    assert_unchanged(&before, &snapshot(dir.path()));

    // The writer goes on; the view is what the files held at its open.
    produce(&writer, "orders", 0, "a-late", 5);
    let orders = view.describe_topic("orders").unwrap();
    assert_eq!(orders.partitions[0].log_end_offset, 40);
    assert_eq!(read_all(&view, &TopicPartition::new("orders", 0)).len(), 40);
    let during = snapshot(dir.path());
    view.close().unwrap();
    assert_unchanged(&during, &snapshot(dir.path()));

    // A new view sees the later records; the writer's data is intact.
    let again = Cluster::open_read_only(dir.path(), config(&clock)).unwrap();
    assert_eq!(
        again.describe_topic("orders").unwrap().partitions[0].log_end_offset,
        45
    );
    again.close().unwrap();
    writer.close().unwrap();
    let reopened = Cluster::open(dir.path(), config(&clock)).unwrap();
    assert!(reopened.recovery_report().truncations().next().is_none());
    assert_eq!(
        read_all(&reopened, &TopicPartition::new("orders", 0)).len(),
        45
    );
    reopened.close().unwrap();
}

#[test]
fn views_opened_while_a_writer_appends_see_a_clean_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Cluster::open(dir.path(), ClusterConfig::default()).unwrap();
    writer
        .create_topic(NewTopic::new("stream", 1).config(small_segments()))
        .unwrap();
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let appender = {
        let (writer, acked, stop) = (writer.clone(), acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let producer = Producer::new(&writer, ProducerConfig::default()).unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::Acquire) {
                producer
                    .send(ProducerRecord::new("stream", format!("r-{i}")))
                    .unwrap()
                    .wait()
                    .unwrap();
                i += 1;
                acked.store(i, Ordering::Release);
            }
            producer.close().unwrap();
        })
    };
    let tp = TopicPartition::new("stream", 0);
    // Views opened mid-append (a batch half written is a torn tail to
    // them, cut in memory): each sees at least what was acknowledged
    // before it opened, as one gapless run of the writer's records.
    let mut seen = 0;
    for _ in 0..20 {
        let floor = acked.load(Ordering::Acquire);
        let view = Cluster::open_read_only(dir.path(), ClusterConfig::default()).unwrap();
        let records = read_all(&view, &tp);
        assert!(records.len() as u64 >= floor, "{} < {floor}", records.len());
        for (i, (offset, value)) in records.iter().enumerate() {
            assert_eq!(
                (*offset, value.as_str()),
                (i as u64, format!("r-{i}").as_str())
            );
        }
        assert!(records.len() >= seen);
        seen = records.len();
        view.close().unwrap();
    }
    stop.store(true, Ordering::Release);
    appender.join().unwrap();
    let total = acked.load(Ordering::Acquire);
    writer.close().unwrap();
    // The writer's files were never touched by the views.
    let reopened = Cluster::open(dir.path(), ClusterConfig::default()).unwrap();
    assert!(reopened.recovery_report().truncations().next().is_none());
    assert_eq!(read_all(&reopened, &tp).len() as u64, total);
    reopened.close().unwrap();
}

/// The active segment's files of `orders-0` in broker 0's directory.
fn active_segment(dir: &Path) -> (PathBuf, PathBuf) {
    let part = dir.join("broker-0/orders-0");
    let mut logs: Vec<PathBuf> = fs::read_dir(&part)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    let log = logs.pop().unwrap();
    (log.clone(), log.with_extension("index"))
}

#[test]
fn damage_is_recovered_in_memory_and_the_files_stay_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let cluster = Cluster::open(dir.path(), config(&clock)).unwrap();
    populate(&cluster);
    cluster.close().unwrap();
    // A torn tail on the active segment, its index gone, a sealed
    // segment's index gone, leftovers of a crash mid-replace and of a
    // topic deletion.
    let (log, index) = active_segment(dir.path());
    let mut bytes = fs::read(&log).unwrap();
    let torn_from = bytes.len() as u64;
    bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 40, 0, 0, 0, 9, 1, 2, 3]);
    fs::write(&log, &bytes).unwrap();
    fs::remove_file(&index).unwrap();
    let part = dir.path().join("broker-0/orders-0");
    let first_index = part.join("00000000000000000000.index");
    assert!(first_index.exists() && first_index != index);
    fs::remove_file(&first_index).unwrap();
    let tmp = dir
        .path()
        .join("broker-0/recovery-point-offset-checkpoint.tmp");
    fs::write(&tmp, b"half a checkpoint").unwrap();
    let deleted = dir
        .path()
        .join("broker-0/gone-0.0123456789abcdef0123456789abcdef-delete");
    fs::create_dir(&deleted).unwrap();
    fs::write(deleted.join("00000000000000000000.log"), b"old").unwrap();
    let before = snapshot(dir.path());

    let view = Cluster::open_read_only(dir.path(), config(&clock)).unwrap();
    check_view(&view, (40, 25));
    let report = view.recovery_report();
    let cut: Vec<_> = report
        .truncations()
        .map(|(tp, r)| (tp, r.truncated.as_ref().map(|t| t.position)))
        .collect();
    assert_eq!(cut, [(TopicPartition::new("orders", 0), Some(torn_from))]);
    assert!(report.partitions[&TopicPartition::new("orders", 0)].indexes_rebuilt >= 1);
    assert_eq!(report.removed_dirs, std::slice::from_ref(&deleted));
    // Looked up through the rebuilt index of the first segment.
    let p0 = view.topic("orders").unwrap().partition(0).unwrap();
    let read = p0.read(3, 1 << 20).unwrap();
    assert!(!read.records().is_empty());
    view.close().unwrap();
    assert_unchanged(&before, &snapshot(dir.path()));

    // The damage was real: a normal open repairs the files.
    let cluster = Cluster::open(dir.path(), config(&clock)).unwrap();
    check_view(&cluster, (40, 25));
    cluster.close().unwrap();
    assert_eq!(fs::metadata(&log).unwrap().len(), torn_from);
    assert!(index.exists() && first_index.exists());
    assert!(!tmp.exists() && !deleted.exists());
}

#[test]
fn every_change_is_refused_with_read_only_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let cluster = Cluster::open(dir.path(), config(&clock)).unwrap();
    populate(&cluster);
    cluster.close().unwrap();
    let before = snapshot(dir.path());

    let view = Cluster::open_read_only(dir.path(), config(&clock)).unwrap();
    let p0 = view.topic("orders").unwrap().partition(0).unwrap();
    let mut batch = logbus::format::BatchBuilder::new(logbus::Compression::None);
    batch.append(1_700_000_000_000, None, Some(b"x"), &[]);
    let mut batch = batch.build().unwrap().to_vec();
    let tp0 = TopicPartition::new("orders", 0);
    let refusals: Vec<(&str, Result<(), Error>)> = vec![
        (
            "create_topic",
            view.create_topic(NewTopic::new("new", 1)).map(drop),
        ),
        (
            "create_topic_if_not_exists",
            view.create_topic_if_not_exists(NewTopic::new("orders", 1))
                .map(drop),
        ),
        ("delete_topic", view.delete_topic("orders")),
        ("create_partitions", view.create_partitions("orders", 3)),
        ("checkpoint", view.checkpoint()),
        (
            "Producer::new",
            Producer::new(&view, ProducerConfig::default()).map(drop),
        ),
        ("append", p0.append(&mut batch).map(drop)),
        ("delete_records", p0.delete_records(10).map(drop)),
        ("enforce_retention", p0.enforce_retention().map(drop)),
        ("clean", p0.clean().map(drop)),
        (
            "alter_group_offsets",
            view.alter_group_offsets("g", &commits(&[("orders", 0, 1)])),
        ),
        ("delete_group", view.delete_group("g").map(drop)),
        ("reassign_partition", view.reassign_partition(&tp0, &[0])),
    ];
    for (call, result) in refusals {
        match result {
            Err(Error::ReadOnly { path, .. }) => assert_eq!(path, dir.path(), "{call}"),
            other => panic!("{call}: expected ReadOnly, got {other:?}"),
        }
    }
    // A group member's commit is refused too.
    let config = ConsumerConfig::builder()
        .group_id("g2")
        .enable_auto_commit(false)
        .auto_offset_reset(OffsetReset::Earliest)
        .build()
        .unwrap();
    let mut consumer = Consumer::new(&view, config).unwrap();
    consumer.assign(std::slice::from_ref(&tp0)).unwrap();
    assert!(!consumer.poll(Duration::ZERO).unwrap().is_empty());
    let err = consumer.commit_sync().unwrap_err();
    assert!(matches!(err, Error::ReadOnly { .. }), "{err}");
    assert!(
        err.to_string().contains("is open read-only"),
        "a plain message: {err}"
    );
    drop(consumer);
    // Nothing changed in the view either.
    check_view(&view, (40, 25));
    assert!(view.list_group_offsets("g2").unwrap().is_empty());
    view.close().unwrap();
    assert_unchanged(&before, &snapshot(dir.path()));
}

#[test]
fn a_read_only_open_takes_no_lock_and_creates_no_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    // Nothing there: refused, and nothing made.
    let missing = dir.path().join("none");
    match Cluster::open_read_only(&missing, config(&clock)) {
        Err(Error::ReadOnly { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected ReadOnly, got {other:?}"),
    }
    assert!(!missing.exists());
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    assert!(matches!(
        Cluster::open_read_only(&empty, config(&clock)),
        Err(Error::ReadOnly { .. })
    ));
    assert_eq!(fs::read_dir(&empty).unwrap().count(), 0);

    // A view held open does not keep a writer out.
    let root = dir.path().join("cluster");
    let cluster = Cluster::open(&root, config(&clock)).unwrap();
    populate(&cluster);
    cluster.close().unwrap();
    let view = Cluster::open_read_only(&root, config(&clock)).unwrap();
    let writer = Cluster::open(&root, config(&clock)).unwrap();
    // And the writer's lock still keeps a second writer out.
    assert!(matches!(
        Cluster::open(&root, config(&clock)),
        Err(Error::DirectoryLocked { .. })
    ));
    check_view(&view, (40, 25));
    writer.close().unwrap();
    view.close().unwrap();
}

#[test]
fn a_cluster_of_several_brokers_is_read_with_its_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let config = || {
        ClusterConfig::builder()
            .brokers(3)
            .clock(clock.clone())
            .build()
            .unwrap()
    };
    let cluster = Cluster::open(dir.path(), config()).unwrap();
    cluster
        .create_topic(NewTopic::new("orders", 2).replication_factor(3))
        .unwrap();
    let p = cluster.topic("orders").unwrap().partition(1).unwrap();
    let mut batch = logbus::format::BatchBuilder::new(logbus::Compression::None);
    batch.append(1_700_000_000_000, None, Some(b"x"), &[]);
    p.append(&mut batch.build().unwrap().to_vec()).unwrap();
    let described = cluster.describe_topic("orders").unwrap();
    cluster.close().unwrap();
    let before = snapshot(dir.path());

    let view = Cluster::open_read_only(dir.path(), config()).unwrap();
    let seen = view.describe_topic("orders").unwrap();
    let roles = |d: &logbus::TopicDescription| -> Vec<(Option<u32>, Vec<u32>, u64)> {
        d.partitions
            .iter()
            .map(|p| (p.leader, p.replicas.clone(), p.log_end_offset))
            .collect()
    };
    assert_eq!(roles(&seen), roles(&described));
    assert_eq!(seen.partitions[1].log_end_offset, 1);
    view.close().unwrap();
    assert_unchanged(&before, &snapshot(dir.path()));
}
