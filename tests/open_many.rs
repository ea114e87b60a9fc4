//! Opens that cost what lies past the recovery point: the active segment a
//! crash left (its offset index preallocated, untrimmed) is checked batch
//! by batch only from the batch its index places last below the recovery
//! point, with the same outcome (records, cuts, refusals) as a scan of the
//! whole segment wherever that batch and the ones after it are concerned.
//! And a topic of many partitions, whose partitions open on several
//! threads.

mod common;

use common::{
    Files, Rec, append_model, drafts, open_at, read_records, restore, segment_name, snapshot, spans,
};
use logbus::{Error, LogConfig, RecoveryReport, Result};

/// One segment (1 MiB), an index entry every 1 KiB, indexes of 64 KiB.
fn config() -> LogConfig {
    LogConfig::builder()
        .segment_bytes(1 << 20)
        .index_interval_bytes(1024)
        .segment_index_bytes(64 << 10)
        .segment_time(None)
        .retention_time(None)
        .build()
        .expect("valid config")
}

/// A log's files as a crash leaves them: `before` batches of 5 records,
/// a flush (the recovery point), `after` more batches, copied while the log
/// is open (its index files preallocated). Returns the files, the model,
/// the recovery point and the log file's name.
fn crashed(before: usize, after: usize) -> Result<(Files, Vec<Rec>, u64, String)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_at(dir.path(), &config(), 0)?;
    let mut model = Vec::new();
    for i in 0..before + after {
        if i == before {
            log.flush()?;
        }
        append_model(&log, &mut model, &drafts(&format!("b{i}"), 5, i as i64))?;
    }
    let recovery_point = log.recovery_point();
    assert_eq!(recovery_point, before as u64 * 5);
    let files = snapshot(dir.path());
    log.close()?;
    let name = segment_name(0, "log");
    assert_eq!(
        files[&segment_name(0, "index")].len(),
        64 << 10,
        "the index is preallocated, as a crash leaves it"
    );
    Ok((files, model, recovery_point, name))
}

/// Opens a copy of `files` at `recovery_point`: the outcome, with the
/// directory's path taken out of it, and the records.
fn open_copy(files: &Files, recovery_point: u64) -> (Result<RecoveryReport>, Vec<Rec>) {
    let dir = tempfile::tempdir().expect("tempdir");
    restore(dir.path(), files);
    let outcome = open_at(dir.path(), &config(), recovery_point);
    let strip = |text: String| text.replace(&dir.path().display().to_string(), "DIR");
    match outcome {
        Ok(log) => {
            let records = read_records(&log, 0, 1 << 20).expect("read");
            let mut report = log.recovery_report().clone();
            if let Some(cut) = report.truncated.as_mut() {
                cut.path = cut.path.file_name().expect("a file").into();
                for removed in &mut cut.removed_segments {
                    *removed = removed.file_name().expect("a file").into();
                }
            }
            log.close().expect("close");
            (Ok(report), records)
        }
        Err(e) => (Err(Error::Internal(strip(format!("{e:?}")))), Vec::new()),
    }
}

fn without_index(files: &Files) -> Files {
    let mut files = files.clone();
    files.remove(&segment_name(0, "index"));
    files
}

#[test]
fn a_crashed_active_segment_is_checked_only_past_the_recovery_point() -> Result<()> {
    let (files, model, recovery_point, name) = crashed(2000, 20)?;
    let len = files[&name].len() as u64;
    let past: u64 = spans(&files[&name])
        .iter()
        .filter(|s| s.last_offset >= recovery_point)
        .map(|s| (s.end - s.start) as u64)
        .sum();

    let (report, records) = open_copy(&files, recovery_point);
    let report = report?;
    assert_eq!(records, model);
    assert_eq!(report.segments_scanned, 1);
    assert!(report.truncated.is_none());
    // The entry is at most the index's unwritten run (64 entries, one per
    // KiB here) and a batch below the recovery point.
    assert!(
        report.bytes_scanned >= past && report.bytes_scanned < past + 70_000,
        "{} bytes checked; {past} lie past the recovery point, of {len}",
        report.bytes_scanned
    );
    assert!(report.bytes_scanned < len / 3);

    // Without the index nothing says where the recovery point lies: the
    // whole segment is scanned, to the same records.
    let (report, records) = open_copy(&without_index(&files), recovery_point);
    assert_eq!(records, model);
    assert_eq!(report?.bytes_scanned, len);
    Ok(())
}

#[test]
fn a_reopened_log_appends_and_reopens_cleanly_after_the_partial_check() -> Result<()> {
    let (files, mut model, recovery_point, _) = crashed(2000, 10)?;
    let dir = tempfile::tempdir().expect("tempdir");
    restore(dir.path(), &files);
    let log = open_at(dir.path(), &config(), recovery_point)?;
    assert!(log.recovery_report().bytes_scanned > 0);
    append_model(&log, &mut model, &drafts("after", 5, 9_000))?;
    log.flush()?;
    let recovery_point = log.recovery_point();
    log.close()?;
    let log = open_at(dir.path(), &config(), recovery_point)?;
    assert_eq!(log.recovery_report().segments_scanned, 0);
    assert_eq!(read_records(&log, 0, 1 << 20)?, model);
    log.close()
}

#[test]
fn damage_past_the_index_entry_is_judged_as_a_whole_scan_judges_it() -> Result<()> {
    // Torn tails and bit flips in every batch from a little below the
    // recovery point on: the partial check cuts (or refuses) exactly where,
    // and as, a scan of the whole segment (no index) does.
    let (files, _, recovery_point, name) = crashed(2000, 12)?;
    let all = spans(&files[&name]);
    let first = all
        .iter()
        .position(|s| s.last_offset + 8 >= recovery_point)
        .expect("batches near the recovery point");
    let mut cases = 0;
    let mut check = |damaged: Files, what: &str| {
        let (partial, partial_records) = open_copy(&damaged, recovery_point);
        let (whole, whole_records) = open_copy(&without_index(&damaged), recovery_point);
        match (partial, whole) {
            (Ok(partial), Ok(whole)) => {
                assert_eq!(partial.truncated, whole.truncated, "{what}");
                assert!(partial.bytes_scanned <= whole.bytes_scanned, "{what}");
            }
            (Err(partial), Err(whole)) => {
                assert_eq!(partial.to_string(), whole.to_string(), "{what}");
            }
            (partial, whole) => panic!("{what}: {partial:?} against {whole:?}"),
        }
        assert_eq!(partial_records, whole_records, "{what}");
        cases += 1;
    };
    for span in &all[first..] {
        for position in [span.start, span.start + 8, span.start + 20, span.end - 1] {
            let mut damaged = files.clone();
            damaged.get_mut(&name).expect("log")[position] ^= 0x10;
            check(
                damaged,
                &format!("flip at byte {position} (batch at {})", span.start),
            );
        }
        let mut torn = files.clone();
        torn.get_mut(&name)
            .expect("log")
            .truncate(span.start + (span.end - span.start) / 2);
        check(torn, &format!("torn in the batch at {}", span.start));
    }
    let mut garbage = files.clone();
    garbage
        .get_mut(&name)
        .expect("log")
        .extend_from_slice(&[0xab; 40]);
    check(garbage, "garbage after the last batch");
    assert!(cases > 40, "{cases} cases");
    Ok(())
}

#[test]
fn batches_before_the_index_entry_are_trusted_as_the_index_is() -> Result<()> {
    // The batches before the entry below the recovery point were fsynced:
    // as in a segment wholly below the recovery point, their CRCs are not
    // computed at the open. A flipped value byte there goes unnoticed until
    // a read, which then fails, never returning other records.
    let (files, model, recovery_point, name) = crashed(2000, 12)?;
    let all = spans(&files[&name]);
    let victim = all[all.len() / 4];
    let mut damaged = files.clone();
    damaged.get_mut(&name).expect("log")[victim.end - 2] ^= 0x01;
    let dir = tempfile::tempdir().expect("tempdir");
    restore(dir.path(), &damaged);
    let log = open_at(dir.path(), &config(), recovery_point)?;
    assert!(log.recovery_report().truncated.is_none());
    assert_eq!(log.log_end_offset(), model.len() as u64);
    let mut noticed = false;
    match log.read(victim.base_offset, 1 << 10) {
        Err(Error::Corrupt { .. }) => noticed = true,
        Err(e) => panic!("read: {e}"),
        Ok(read) => {
            'batches: for batch in read.batches() {
                let Ok(batch) = batch else {
                    noticed = true;
                    break;
                };
                let Ok(records) = batch.records() else {
                    noticed = true;
                    break;
                };
                for record in records {
                    let Ok(record) = record else {
                        noticed = true;
                        break 'batches;
                    };
                    let expected = &model[record.offset() as usize];
                    assert_eq!(record.value().map(|v| v.to_vec()), expected.value);
                }
            }
        }
    }
    assert!(noticed, "the flipped batch is never served as valid");
    // Without the index the whole segment is checked, and the flip below
    // the recovery point refuses the open.
    let dir = tempfile::tempdir().expect("tempdir");
    restore(dir.path(), &without_index(&damaged));
    assert!(matches!(
        open_at(dir.path(), &config(), recovery_point),
        Err(Error::Corrupt { .. })
    ));
    Ok(())
}

/// A cluster whose topic `wide` has `partitions` partitions, each holding
/// one record naming it, closed cleanly.
fn wide_cluster(dir: &std::path::Path, partitions: u32) -> Result<()> {
    use logbus::format::BatchBuilder;
    use logbus::{Cluster, ClusterConfig, Compression, NewTopic};
    let cluster = Cluster::open(dir, ClusterConfig::default())?;
    let topic = cluster.create_topic(NewTopic::new("wide", partitions))?;
    for p in 0..partitions {
        let mut batch = BatchBuilder::new(Compression::None);
        batch.append(0, None, Some(format!("p{p}").as_bytes()), &[]);
        topic.partition(p)?.append(&mut batch.build()?.to_vec())?;
    }
    cluster.close()
}

#[test]
fn a_topic_of_many_partitions_opens_each_of_them() -> Result<()> {
    // 100 partitions: opened on several threads (at least 64), at creation
    // and at the reopen.
    use logbus::{Cluster, ClusterConfig};
    let dir = tempfile::tempdir().expect("tempdir");
    wide_cluster(dir.path(), 100)?;
    let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    let topic = cluster.topic("wide")?;
    assert_eq!(topic.partition_count(), 100);
    for p in 0..100 {
        let partition = topic.partition(p)?;
        assert_eq!(partition.log_end_offset()?, 1, "partition {p}");
        assert_eq!(partition.recovery_report().segments_scanned, 0);
        let read = partition.read(0, 1 << 10)?;
        let batch = read.batches().next().expect("a batch")?;
        let record = batch.records()?.next().expect("a record")?;
        assert_eq!(
            record.value().map(|v| v.to_vec()),
            Some(format!("p{p}").into_bytes())
        );
    }
    cluster.close()
}

#[test]
fn a_failed_partition_of_many_fails_the_open_with_the_lowest_partitions_error() -> Result<()> {
    use logbus::{Cluster, ClusterConfig};
    let dir = tempfile::tempdir().expect("tempdir");
    wide_cluster(dir.path(), 100)?;
    let broker = dir.path().join("broker-0");
    for p in [90, 70] {
        std::fs::write(
            broker.join(format!("wide-{p}/partition.metadata")),
            b"garbage",
        )
        .expect("write");
    }
    match Cluster::open(dir.path(), ClusterConfig::default()) {
        Err(Error::PartitionDirConflict { path, .. }) => {
            assert_eq!(path, broker.join("wide-70"));
        }
        other => panic!("expected the conflict of wide-70, got {other:?}"),
    }
    // Repaired, the cluster opens again with every partition.
    for p in [90, 70] {
        std::fs::copy(
            broker.join("wide-0/partition.metadata"),
            broker.join(format!("wide-{p}/partition.metadata")),
        )
        .expect("copy");
    }
    let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    assert_eq!(cluster.topic("wide")?.partition(70)?.log_end_offset()?, 1);
    cluster.close()
}
