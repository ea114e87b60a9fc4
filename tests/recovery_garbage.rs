//! Recovery when the last segment ends in garbage, and bit flips inside
//! batches: garbage is never accepted, damage is never silently skipped, and
//! a failed open changes nothing on disk.

mod common;

use std::path::Path;

use common::{
    Files, Rec, Rng, append_model, closed_log, drafts, open_at, read_records, restore,
    segment_name, small_config, snapshot, snapshot_bases, spans,
};
use logbus::format::{self, BatchBuilder};
use logbus::{Compression, CorruptionKind, Error, LogConfig, Result};

const SEGMENT_BYTES: u64 = 700;

fn written_log() -> Result<(Files, Vec<Rec>, LogConfig)> {
    let config = small_config(SEGMENT_BYTES);
    let (files, model) = closed_log(&config, 4, 8)?;
    Ok((files, model, config))
}

fn last_log_name(files: &Files) -> String {
    segment_name(*snapshot_bases(files).last().expect("segments"), "log")
}

/// Restores `files` with `tail` appended to the last segment's log file,
/// opens the log and checks that the tail was cut and reported, the records
/// are the model's, and appends continue.
fn check_tail_cut(files: &Files, model: &[Rec], config: &LogConfig, tail: &[u8]) -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    restore(dir.path(), files);
    let name = last_log_name(files);
    let original = files[&name].len() as u64;
    let mut bytes = files[&name].clone();
    bytes.extend_from_slice(tail);
    std::fs::write(dir.path().join(&name), &bytes).expect("write tail");

    let log = open_at(dir.path(), config, 0)?;
    let report = log.recovery_report().truncated.clone();
    let cut = report.unwrap_or_else(|| panic!("a tail of {} bytes is reported", tail.len()));
    assert_eq!(cut.path, dir.path().join(&name));
    assert_eq!((cut.position, cut.bytes), (original, tail.len() as u64));
    assert_eq!(read_records(&log, 0, 1 << 16)?, model);
    let mut model = model.to_vec();
    append_model(&log, &mut model, &drafts("after", 3, 50_000))?;
    log.close()?;
    let log = open_at(dir.path(), config, 0)?;
    assert!(log.recovery_report().truncated.is_none());
    assert_eq!(read_records(&log, 0, 1 << 16)?, model);
    Ok(())
}

/// Restores `files` with `damage` applied, opens the log and expects
/// [`Error::Corrupt`] with the disk left exactly as it was.
fn expect_corrupt(
    files: &Files,
    config: &LogConfig,
    damage: impl FnOnce(&mut Files),
    what: &str,
) -> Result<Error> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut damaged = files.clone();
    damage(&mut damaged);
    restore(dir.path(), &damaged);
    let err = match open_at(dir.path(), config, 0) {
        Ok(log) => panic!(
            "{what}: open succeeded with records {:?}",
            read_records(&log, 0, 1 << 16).map(|r| r.len())
        ),
        Err(e) => e,
    };
    assert!(matches!(err, Error::Corrupt { .. }), "{what}: {err}");
    // The log files at least; `a_failed_open_changes_no_file` checks the
    // indexes too.
    assert_disk_unchanged(dir.path(), &damaged, true, what);
    Ok(err)
}

fn assert_disk_unchanged(dir: &Path, before: &Files, logs_only: bool, what: &str) {
    let after = snapshot(dir);
    let names = |f: &Files| f.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&after),
        names(before),
        "{what}: files after a failed open"
    );
    for (name, bytes) in before
        .iter()
        .filter(|(n, _)| !logs_only || n.ends_with(".log"))
    {
        assert!(
            after[name] == *bytes,
            "{what}: a failed open changed {name} ({} -> {} bytes)",
            bytes.len(),
            after[name].len()
        );
    }
}

#[test]
fn zero_tails_are_cut() -> Result<()> {
    let (files, model, config) = written_log()?;
    for len in [1, 7, 8, 11, 12, 17, 60, 61, 62, 100, 700, 4096] {
        check_tail_cut(&files, &model, &config, &vec![0; len])?;
    }
    Ok(())
}

#[test]
fn random_tails_are_cut() -> Result<()> {
    let (files, model, config) = written_log()?;
    let mut rng = Rng(0x5eed);
    for len in [1, 12, 60, 61, 62, 63, 200, 1000, 3000] {
        for _ in 0..3 {
            let mut tail = rng.bytes(len);
            if len > 16 && rng.below(2) == 0 {
                // Make it look more like a batch: magic 2 in place.
                tail[format::MAGIC_OFFSET] = 2;
            }
            check_tail_cut(&files, &model, &config, &tail)?;
        }
    }
    Ok(())
}

#[test]
fn stale_copies_of_earlier_batches_are_cut() -> Result<()> {
    let (files, model, config) = written_log()?;
    let bases = snapshot_bases(&files);
    let last = &files[&last_log_name(&files)];
    let last_spans = spans(last);
    // The last segment's own first, middle and last batch, and a batch of
    // an earlier segment.
    let first_seg = &files[&segment_name(bases[0], "log")];
    let first_span = spans(first_seg)[0];
    let copies: Vec<Vec<u8>> = vec![
        last[last_spans[0].start..last_spans[0].end].to_vec(),
        {
            let s = last_spans[last_spans.len() / 2];
            last[s.start..s.end].to_vec()
        },
        {
            let s = last_spans[last_spans.len() - 1];
            last[s.start..s.end].to_vec()
        },
        first_seg[first_span.start..first_span.end].to_vec(),
    ];
    for copy in &copies {
        check_tail_cut(&files, &model, &config, copy)?;
        // Behind a torn half batch, a stale copy is still no continuation.
        let mut tail = copy[..copy.len() / 2].to_vec();
        tail.extend_from_slice(copy);
        check_tail_cut(&files, &model, &config, &tail)?;
        let mut tail = vec![0; 33];
        tail.extend_from_slice(copy);
        tail.extend_from_slice(copy);
        check_tail_cut(&files, &model, &config, &tail)?;
    }
    Ok(())
}

/// A valid batch (good CRC) of `count` records carrying `base` as its base
/// offset.
fn batch_at(base: u64, count: usize, tag: &str) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Compression::None).base_offset(base as i64);
    for i in 0..count {
        builder.append(
            5_000 + i as i64,
            None,
            Some(format!("{tag}{i}").as_bytes()),
            &[],
        );
    }
    let bytes = builder.build().expect("batch").to_vec();
    format::check_batch(&bytes).expect("valid batch");
    bytes
}

#[test]
fn valid_batches_whose_offsets_go_backwards_are_cut() -> Result<()> {
    let (files, model, config) = written_log()?;
    let leo = model.last().expect("records").offset + 1;
    let last_base = *snapshot_bases(&files).last().expect("segments");
    for base in [leo - 1, leo - 3, last_base, last_base.saturating_sub(5), 0] {
        check_tail_cut(&files, &model, &config, &batch_at(base, 2, "back"))?;
    }
    // A batch whose last offset reaches the log end offset but starts
    // below it overlaps the log: not a continuation either.
    check_tail_cut(&files, &model, &config, &batch_at(leo - 1, 5, "overlap"))?;
    Ok(())
}

#[test]
fn garbage_followed_by_a_continuing_batch_is_interior_corruption() -> Result<()> {
    let (files, model, config) = written_log()?;
    let leo = model.last().expect("records").offset + 1;
    let name = last_log_name(&files);
    for garbage in [vec![0u8; 1], vec![0; 61], Rng(3).bytes(150)] {
        for base in [leo, leo + 10] {
            let err = expect_corrupt(
                &files,
                &config,
                |f| {
                    let log = f.get_mut(&name).expect("log");
                    log.extend_from_slice(&garbage);
                    log.extend_from_slice(&batch_at(base, 2, "next"));
                },
                "garbage then a continuing batch",
            )?;
            let original = files[&name].len() as u64;
            match err {
                Error::Corrupt {
                    position,
                    kind: CorruptionKind::Interior { next_valid, .. },
                    ..
                } => {
                    assert_eq!(position, original);
                    assert_eq!(next_valid, original + garbage.len() as u64);
                }
                other => panic!("expected interior corruption, got {other}"),
            }
        }
    }
    Ok(())
}

/// Byte positions of a batch worth flipping: everything the CRC covers,
/// the CRC itself, the length and the magic byte. (The base offset and the
/// partition leader epoch are not covered by the CRC, by Kafka's design.)
fn flip_positions(start: usize, end: usize, step: usize) -> impl Iterator<Item = usize> {
    let length = (start + format::BATCH_LENGTH_OFFSET)..(start + format::LOG_OVERHEAD);
    let magic_and_crc = (start + format::MAGIC_OFFSET)..(start + format::ATTRIBUTES_OFFSET);
    let covered = (start + format::ATTRIBUTES_OFFSET..end).step_by(step);
    length.chain(magic_and_crc).chain(covered)
}

#[test]
fn bit_flips_in_the_last_segment_are_cut_or_refused_never_read() -> Result<()> {
    let (files, model, config) = written_log()?;
    let name = last_log_name(&files);
    let bytes = &files[&name];
    let batches = spans(bytes);
    let mut checked = 0;
    for (i, span) in batches.iter().enumerate() {
        let is_last = i + 1 == batches.len();
        for position in flip_positions(span.start, span.end, if is_last { 1 } else { 2 }) {
            let bit = 1u8 << (position % 8);
            let what = format!("flip at byte {position} (batch {i})");
            if is_last {
                let dir = tempfile::tempdir().expect("tempdir");
                restore(dir.path(), &files);
                let mut damaged = bytes.clone();
                damaged[position] ^= bit;
                std::fs::write(dir.path().join(&name), &damaged).expect("write");
                let log = open_at(dir.path(), &config, 0)?;
                let cut = log
                    .recovery_report()
                    .truncated
                    .clone()
                    .unwrap_or_else(|| panic!("{what}: the damaged last batch is cut"));
                assert_eq!(cut.position, span.start as u64, "{what}");
                let expected: Vec<Rec> = model
                    .iter()
                    .filter(|r| r.offset < span.base_offset)
                    .cloned()
                    .collect();
                assert_eq!(read_records(&log, 0, 1 << 16)?, expected, "{what}");
            } else {
                let err = expect_corrupt(
                    &files,
                    &config,
                    |f| f.get_mut(&name).expect("log")[position] ^= bit,
                    &what,
                )?;
                let Error::Corrupt { position: at, .. } = err else {
                    unreachable!()
                };
                assert_eq!(at, span.start as u64, "{what}: the damage is located");
            }
            checked += 1;
        }
    }
    assert!(checked > 150, "{checked} flips");
    Ok(())
}

#[test]
fn damage_in_a_sealed_segment_is_refused_and_changes_nothing() -> Result<()> {
    let (files, _, config) = written_log()?;
    let bases = snapshot_bases(&files);
    let mut cases = 0;
    for &base in &bases[..bases.len() - 1] {
        let name = segment_name(base, "log");
        let bytes = &files[&name];
        let batches = spans(bytes);
        for span in &batches {
            for position in flip_positions(span.start, span.end, 17) {
                let bit = 1u8 << (position % 8);
                expect_corrupt(
                    &files,
                    &config,
                    |f| f.get_mut(&name).expect("log")[position] ^= bit,
                    &format!("flip at byte {position} of {name}"),
                )?;
                cases += 1;
            }
        }
        // A torn tail of a sealed segment is no torn tail: later segments
        // exist, so it was complete once.
        let last = batches[batches.len() - 1];
        for cut in [last.start + 1, last.start + 30, last.end - 1] {
            expect_corrupt(
                &files,
                &config,
                |f| f.get_mut(&name).expect("log").truncate(cut),
                &format!("{name} cut at {cut}"),
            )?;
        }
        // Garbage after the last batch of a sealed segment.
        expect_corrupt(
            &files,
            &config,
            |f| f.get_mut(&name).expect("log").extend_from_slice(&[0; 80]),
            &format!("zeros after {name}"),
        )?;
    }
    assert!(cases > 50);
    Ok(())
}

#[test]
fn a_flipped_batch_is_never_read_on_the_clean_load_path() -> Result<()> {
    // With a recovery point at the log end offset, sealed segments are not
    // scanned on open, so damage may go unnoticed until a read; the read must
    // then fail (or its batches fail their CRC), never return other records.
    let (files, model, config) = written_log()?;
    let leo = model.last().expect("records").offset + 1;
    let bases = snapshot_bases(&files);
    let name = segment_name(bases[1], "log");
    let bytes = &files[&name];
    for span in spans(bytes) {
        for position in flip_positions(span.start, span.end, 13) {
            let dir = tempfile::tempdir().expect("tempdir");
            restore(dir.path(), &files);
            let mut damaged = bytes.clone();
            damaged[position] ^= 1 << (position % 8);
            std::fs::write(dir.path().join(&name), &damaged).expect("write");
            let what = format!("flip at byte {position} of {name}");
            let log = match open_at(dir.path(), &config, leo) {
                Ok(log) => log,
                Err(Error::Corrupt { .. }) => continue,
                Err(e) => panic!("{what}: {e}"),
            };
            for rec in &model {
                let read = match log.read(rec.offset, 1 << 16) {
                    Ok(read) => read,
                    Err(Error::Corrupt { .. }) => continue,
                    Err(e) => panic!("{what}: read({}): {e}", rec.offset),
                };
                'batches: for batch in read.batches() {
                    let Ok(batch) = batch else { break };
                    let Ok(records) = batch.records() else { break };
                    for record in records {
                        let Ok(record) = record else {
                            break 'batches;
                        };
                        let offset = record.offset() as u64;
                        let expected = model.iter().find(|r| r.offset == offset);
                        let got = Rec {
                            offset,
                            timestamp: record.timestamp(),
                            key: record.key().map(|k| k.to_vec()),
                            value: record.value().map(|v| v.to_vec()),
                        };
                        assert_eq!(Some(&got), expected, "{what}: read({})", rec.offset);
                    }
                }
            }
        }
    }
    Ok(())
}

/// A change made to a copy of the log's files.
type Damage<'a> = Box<dyn Fn(&mut Files) + 'a>;

#[test]
fn a_failed_open_changes_no_file() -> Result<()> {
    // Index files included: a refused open must leave the directory as it
    // found it, so that the operator can inspect or repair it.
    let (files, model, config) = written_log()?;
    let leo = model.last().expect("records").offset + 1;
    let bases = snapshot_bases(&files);
    let sealed = segment_name(bases[1], "log");
    let last = last_log_name(&files);
    let cases: Vec<(&str, Damage<'_>)> = vec![
        (
            "flip in a sealed segment",
            Box::new(|f: &mut Files| f.get_mut(&sealed).expect("log")[70] ^= 0x10),
        ),
        (
            "flip in the first batch of the last segment",
            Box::new(|f: &mut Files| f.get_mut(&last).expect("log")[70] ^= 0x10),
        ),
        (
            "garbage then a continuing batch",
            Box::new(|f: &mut Files| {
                let log = f.get_mut(&last).expect("log");
                log.extend_from_slice(&[0; 20]);
                log.extend_from_slice(&batch_at(leo, 1, "next"));
            }),
        ),
    ];
    let mut failures = Vec::new();
    for (what, damage) in &cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut damaged = files.clone();
        damage(&mut damaged);
        restore(dir.path(), &damaged);
        match open_at(dir.path(), &config, 0) {
            Err(Error::Corrupt { .. }) => {}
            Err(e) => panic!("{what}: {e}"),
            Ok(_) => panic!("{what}: open succeeded"),
        }
        let after = snapshot(dir.path());
        for (name, bytes) in &damaged {
            if after.get(name) != Some(bytes) {
                failures.push(format!(
                    "{what}: {name} changed ({} -> {:?} bytes)",
                    bytes.len(),
                    after.get(name).map(Vec::len)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    Ok(())
}
