//! Recovery when a segment ends in garbage, and bit flips inside batches:
//! garbage is never accepted, damage is never silently skipped, damage at
//! or above the recovery point is cut and reported, damage below it
//! refuses the open, and a refused open changes nothing on disk.

mod common;

use std::path::Path;

use common::{
    Files, Rec, Rng, append_model, closed_log, drafts, open_at, read_records, restore,
    segment_name, small_config, snapshot, snapshot_bases, spans,
};
use logbus::format::{self, BatchBuilder};
use logbus::{Compression, CorruptionKind, Error, LogConfig, Result, TruncatedTail};

const SEGMENT_BYTES: u64 = 700;

fn written_log() -> Result<(Files, Vec<Rec>, LogConfig)> {
    let config = small_config(SEGMENT_BYTES);
    let (files, model) = closed_log(&config, 4, 8)?;
    Ok((files, model, config))
}

fn last_log_name(files: &Files) -> String {
    segment_name(*snapshot_bases(files).last().expect("segments"), "log")
}

fn leo_of(model: &[Rec]) -> u64 {
    model.last().expect("records").offset + 1
}

/// Restores `files` with `tail` appended to the last segment's log file,
/// opens the log (recovery point 0) and checks that the tail was cut and
/// reported as a torn write, the records are the model's, and appends
/// continue.
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
    assert_eq!(cut.first_lost_offset, leo_of(model));
    assert_eq!(cut.recovery_point, 0);
    assert!(
        !cut.followed_by_valid_data(),
        "nothing valid follows: {cut:?}"
    );
    assert_eq!(cut.lost_end_offset, None);
    assert_eq!(read_records(&log, 0, 1 << 16)?, model);
    let mut model = model.to_vec();
    append_model(&log, &mut model, &drafts("after", 3, 50_000))?;
    log.close()?;
    let log = open_at(dir.path(), config, 0)?;
    assert!(log.recovery_report().truncated.is_none());
    assert_eq!(read_records(&log, 0, 1 << 16)?, model);
    Ok(())
}

/// Restores `files` with `damage` applied, opens the log with recovery
/// point `rp` and expects [`Error::Corrupt`] with the disk left exactly as
/// it was.
fn expect_corrupt(
    files: &Files,
    config: &LogConfig,
    rp: u64,
    damage: impl FnOnce(&mut Files),
    what: &str,
) -> Result<Error> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut damaged = files.clone();
    damage(&mut damaged);
    restore(dir.path(), &damaged);
    let err = match open_at(dir.path(), config, rp) {
        Ok(log) => panic!(
            "{what}: open succeeded with records {:?}",
            read_records(&log, 0, 1 << 16).map(|r| r.len())
        ),
        Err(e) => e,
    };
    assert!(matches!(err, Error::Corrupt { .. }), "{what}: {err}");
    assert_disk_unchanged(dir.path(), &damaged, what);
    Ok(err)
}

fn assert_disk_unchanged(dir: &Path, before: &Files, what: &str) {
    let after = snapshot(dir);
    let names = |f: &Files| f.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&after),
        names(before),
        "{what}: files after a failed open"
    );
    for (name, bytes) in before {
        assert!(
            after[name] == *bytes,
            "{what}: a failed open changed {name} ({} -> {} bytes)",
            bytes.len(),
            after[name].len()
        );
    }
}

/// The position and offset of a refused open's damage, checking it is
/// below the recovery point `rp`.
fn refused_at(err: &Error, rp: u64, what: &str) -> (u64, u64, Option<u64>) {
    match err {
        Error::Corrupt {
            position,
            kind:
                CorruptionKind::BelowRecoveryPoint {
                    offset,
                    recovery_point,
                    next_valid,
                    ..
                },
            ..
        } => {
            assert_eq!(*recovery_point, rp, "{what}");
            assert!(*offset < rp, "{what}: {err}");
            (*position, *offset, *next_valid)
        }
        other => panic!("{what}: expected damage below the recovery point, got {other}"),
    }
}

/// The files without the index files of the segment at `base`, so that its
/// indexes cannot be trusted and recovery scans it.
fn without_indexes(files: &mut Files, base: u64) {
    files.remove(&segment_name(base, "index"));
    files.remove(&segment_name(base, "timeindex"));
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

/// Checks a cut reported for damage at `position` of `name` (batch offsets
/// from `first_lost`), with later segments `removed`.
fn check_cut(
    cut: &TruncatedTail,
    dir: &Path,
    name: &str,
    (position, first_lost): (u64, u64),
    removed: &[u64],
    what: &str,
) {
    assert_eq!(cut.path, dir.join(name), "{what}");
    assert_eq!(
        (cut.position, cut.first_lost_offset),
        (position, first_lost),
        "{what}"
    );
    let removed: Vec<_> = removed
        .iter()
        .map(|&b| dir.join(segment_name(b, "log")))
        .collect();
    assert_eq!(cut.removed_segments, removed, "{what}");
    for path in &removed {
        assert!(!path.exists(), "{what}: {} removed", path.display());
    }
    assert_eq!(
        std::fs::metadata(dir.join(name)).expect("cut file").len(),
        position,
        "{what}: the file ends at the damage"
    );
}

#[test]
fn garbage_followed_by_a_continuing_batch_is_cut_above_the_recovery_point() -> Result<()> {
    // Lost pages followed by valid-looking ones, as a power loss that wrote
    // pages back out of order leaves them: never fsynced, so cut, and the
    // report says that valid data followed the damage, where, and which
    // offsets it held.
    let (files, model, config) = written_log()?;
    let leo = leo_of(&model);
    let name = last_log_name(&files);
    let original = files[&name].len() as u64;
    for garbage in [vec![0u8; 1], vec![0; 61], Rng(3).bytes(150)] {
        for base in [leo, leo + 10] {
            for rp in [0, leo] {
                let what = format!("{} garbage bytes, batch at {base}, rp {rp}", garbage.len());
                let dir = tempfile::tempdir().expect("tempdir");
                let mut damaged = files.clone();
                let log = damaged.get_mut(&name).expect("log");
                log.extend_from_slice(&garbage);
                let next = batch_at(base, 2, "next");
                log.extend_from_slice(&next);
                restore(dir.path(), &damaged);
                let opened = open_at(dir.path(), &config, rp)?;
                let cut = opened
                    .recovery_report()
                    .truncated
                    .clone()
                    .unwrap_or_else(|| panic!("{what}: reported"));
                check_cut(&cut, dir.path(), &name, (original, leo), &[], &what);
                assert_eq!(cut.bytes, (garbage.len() + next.len()) as u64, "{what}");
                assert_eq!(
                    cut.valid_after,
                    Some(original + garbage.len() as u64),
                    "{what}"
                );
                assert_eq!(cut.lost_end_offset, Some(base + 2), "{what}");
                assert!(cut.followed_by_valid_data(), "{what}");
                assert!(matches!(cut.cause, CorruptionKind::Batch(_)), "{what}");
                assert_eq!(read_records(&opened, 0, 1 << 16)?, model, "{what}");
            }
        }
    }
    Ok(())
}

#[test]
fn garbage_followed_by_a_continuing_batch_below_the_recovery_point_is_refused() -> Result<()> {
    // The same bytes, but the recovery point says the continuing batch was
    // flushed: no power loss explains damage before it.
    let (files, model, config) = written_log()?;
    let leo = leo_of(&model);
    let name = last_log_name(&files);
    let original = files[&name].len() as u64;
    for garbage in [vec![0u8; 1], vec![0; 61], Rng(3).bytes(150)] {
        let what = format!("{} garbage bytes", garbage.len());
        let err = expect_corrupt(
            &files,
            &config,
            leo + 2,
            |f| {
                let log = f.get_mut(&name).expect("log");
                log.extend_from_slice(&garbage);
                log.extend_from_slice(&batch_at(leo, 2, "next"));
            },
            &what,
        )?;
        assert_eq!(
            refused_at(&err, leo + 2, &what),
            (original, leo, Some(original + garbage.len() as u64)),
            "{what}"
        );
    }
    Ok(())
}

/// Byte positions of a batch worth flipping: everything the CRC covers,
/// the CRC itself, the length, the magic byte and the base offset (not
/// covered by the CRC, checked by its place). The partition leader epoch
/// is not covered by the CRC either and carries no offsets; it is left out.
fn flip_positions(start: usize, end: usize, step: usize) -> impl Iterator<Item = usize> {
    let base_offset = start..(start + format::BATCH_LENGTH_OFFSET);
    let length = (start + format::BATCH_LENGTH_OFFSET)..(start + format::LOG_OVERHEAD);
    let magic_and_crc = (start + format::MAGIC_OFFSET)..(start + format::ATTRIBUTES_OFFSET);
    let covered = (start + format::ATTRIBUTES_OFFSET..end).step_by(step);
    base_offset
        .chain(length)
        .chain(magic_and_crc)
        .chain(covered)
}

#[test]
fn bit_flips_in_the_last_segment_are_cut_above_the_recovery_point() -> Result<()> {
    let (files, model, config) = written_log()?;
    let leo = leo_of(&model);
    let name = last_log_name(&files);
    let bytes = &files[&name];
    let batches = spans(bytes);
    let mut checked = 0;
    for (i, span) in batches.iter().enumerate() {
        let is_last = i + 1 == batches.len();
        for position in flip_positions(span.start, span.end, if is_last { 1 } else { 3 }) {
            let bit = 1u8 << (position % 8);
            let what = format!("flip at byte {position} (batch {i})");
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
                .unwrap_or_else(|| panic!("{what}: the damaged batch is cut"));
            check_cut(
                &cut,
                dir.path(),
                &name,
                (span.start as u64, span.base_offset),
                &[],
                &what,
            );
            // The batches after the damaged one are valid and continue the
            // log: the report says so.
            if is_last {
                assert_eq!(
                    (cut.valid_after, cut.lost_end_offset),
                    (None, None),
                    "{what}"
                );
            } else {
                assert_eq!(cut.valid_after, Some(span.end as u64), "{what}");
                assert_eq!(cut.lost_end_offset, Some(leo), "{what}");
            }
            let expected: Vec<Rec> = model
                .iter()
                .filter(|r| r.offset < span.base_offset)
                .cloned()
                .collect();
            assert_eq!(read_records(&log, 0, 1 << 16)?, expected, "{what}");
            checked += 1;
        }
    }
    assert!(checked > 150, "{checked} flips");
    Ok(())
}

#[test]
fn bit_flips_below_the_recovery_point_are_refused_and_change_nothing() -> Result<()> {
    // Every segment, with its indexes gone so that recovery scans it (a
    // segment whose indexes pass their checks is trusted without reading
    // it all; `a_flipped_batch_is_never_read_on_the_clean_load_path` covers
    // that case).
    let (files, model, config) = written_log()?;
    let leo = leo_of(&model);
    let bases = snapshot_bases(&files);
    let mut cases = 0;
    for &base in &bases {
        let name = segment_name(base, "log");
        let bytes = &files[&name];
        for (i, span) in spans(bytes).iter().enumerate() {
            for position in flip_positions(span.start, span.end, 11) {
                let bit = 1u8 << (position % 8);
                let what = format!("flip at byte {position} of {name} (batch {i})");
                let err = expect_corrupt(
                    &files,
                    &config,
                    leo,
                    |f| {
                        without_indexes(f, base);
                        f.get_mut(&name).expect("log")[position] ^= bit;
                    },
                    &what,
                )?;
                let (at, offset, _) = refused_at(&err, leo, &what);
                assert_eq!(
                    (at, offset),
                    (span.start as u64, span.base_offset),
                    "{what}"
                );
                let Error::Corrupt { path, .. } = &err else {
                    unreachable!()
                };
                assert!(path.ends_with(&name), "{what}: {}", path.display());
                cases += 1;
            }
        }
    }
    assert!(cases > 150, "{cases} flips");
    Ok(())
}

#[test]
fn damage_in_a_sealed_segment_is_cut_with_every_later_segment_above_the_recovery_point()
-> Result<()> {
    let (files, model, config) = written_log()?;
    let leo = leo_of(&model);
    let bases = snapshot_bases(&files);
    for (k, &base) in bases[..bases.len() - 1].iter().enumerate() {
        let name = segment_name(base, "log");
        let bytes = &files[&name];
        let batches = spans(bytes);
        let later = &bases[k + 1..];
        let later_bytes: u64 = later
            .iter()
            .map(|&b| files[&segment_name(b, "log")].len() as u64)
            .sum();
        let mut cases: Vec<(String, Files, u64, u64)> = Vec::new();
        let middle = batches[batches.len() / 2];
        let position = middle.start + format::ATTRIBUTES_OFFSET + 3;
        let mut flipped = files.clone();
        flipped.get_mut(&name).expect("log")[position] ^= 0x10;
        cases.push((
            format!("flip at byte {position} of {name}"),
            flipped,
            middle.start as u64,
            middle.base_offset,
        ));
        let last = batches[batches.len() - 1];
        for cut in [last.start + 1, last.start + 30, last.end - 1] {
            let mut torn = files.clone();
            torn.get_mut(&name).expect("log").truncate(cut);
            cases.push((
                format!("{name} cut at {cut}"),
                torn,
                last.start as u64,
                last.base_offset,
            ));
        }
        let mut zeros = files.clone();
        zeros
            .get_mut(&name)
            .expect("log")
            .extend_from_slice(&[0; 80]);
        cases.push((
            format!("zeros after {name}"),
            zeros,
            bytes.len() as u64,
            last.last_offset + 1,
        ));
        for (what, damaged, position, first_lost) in cases {
            let dir = tempfile::tempdir().expect("tempdir");
            restore(dir.path(), &damaged);
            let log = open_at(dir.path(), &config, first_lost)?;
            let cut = log
                .recovery_report()
                .truncated
                .clone()
                .unwrap_or_else(|| panic!("{what}: reported"));
            check_cut(
                &cut,
                dir.path(),
                &name,
                (position, first_lost),
                later,
                &what,
            );
            assert_eq!(cut.removed_bytes, later_bytes, "{what}");
            assert_eq!(cut.lost_end_offset, Some(leo), "{what}");
            assert!(cut.followed_by_valid_data(), "{what}");
            assert_eq!(log.segment_base_offsets(), bases[..=k].to_vec(), "{what}");
            let expected: Vec<Rec> = model
                .iter()
                .filter(|r| r.offset < first_lost)
                .cloned()
                .collect();
            assert_eq!(read_records(&log, 0, 1 << 16)?, expected, "{what}");
            // Appends continue from the cut, and a reopen keeps all of it.
            let mut model = expected;
            append_model(&log, &mut model, &drafts("after", 2, 70_000))?;
            log.close()?;
            let log = open_at(
                dir.path(),
                &config,
                model.last().map_or(0, |r| r.offset + 1),
            )?;
            assert!(log.recovery_report().truncated.is_none(), "{what}");
            assert_eq!(read_records(&log, 0, 1 << 16)?, model, "{what}");

            // One offset higher and the same damage lies below the recovery
            // point: refused, nothing changed.
            if first_lost < leo {
                let err = expect_corrupt(&damaged, &config, first_lost + 1, |_| {}, &what)?;
                assert_eq!(
                    refused_at(&err, first_lost + 1, &what).0,
                    position,
                    "{what}"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn a_flipped_batch_is_never_read_on_the_clean_load_path() -> Result<()> {
    // With a recovery point at the log end offset, sealed segments are
    // trusted on their indexes without reading them all, so damage may go
    // unnoticed until a read; the read must then fail (or its batches fail
    // their CRC), never return other records or skip any.
    let (files, model, config) = written_log()?;
    let leo = leo_of(&model);
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
                    Err(Error::Corrupt { .. }) => {
                        assert!(
                            rec.offset >= span.base_offset,
                            "{what}: read({}) before the damage failed",
                            rec.offset
                        );
                        continue;
                    }
                    Err(e) => panic!("{what}: read({}): {e}", rec.offset),
                };
                let mut next = rec.offset;
                'batches: for batch in read.batches() {
                    let Ok(batch) = batch else { break };
                    let Ok(records) = batch.records() else { break };
                    for record in records {
                        let Ok(record) = record else {
                            break 'batches;
                        };
                        let offset = record.offset() as u64;
                        if offset < next {
                            continue;
                        }
                        assert_eq!(offset, next, "{what}: read({}) skipped", rec.offset);
                        let expected = model.iter().find(|r| r.offset == offset);
                        let got = Rec {
                            offset,
                            timestamp: record.timestamp(),
                            key: record.key().map(|k| k.to_vec()),
                            value: record.value().map(|v| v.to_vec()),
                        };
                        assert_eq!(Some(&got), expected, "{what}: read({})", rec.offset);
                        next = offset + 1;
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
    // Index files and leftovers included: a refused open must leave the
    // directory as it found it, so that the operator can inspect or repair
    // it. Leftovers that a successful open would remove (a deleted
    // segment, a cleaner's unfinished file, a spare, an orphaned index)
    // stay too.
    let (files, model, config) = written_log()?;
    let leo = leo_of(&model);
    let bases = snapshot_bases(&files);
    let sealed = segment_name(bases[1], "log");
    let last = last_log_name(&files);
    let leftovers = |f: &mut Files| {
        f.insert(
            format!("{}.deleted", segment_name(bases[0], "log")),
            vec![1; 10],
        );
        f.insert(
            format!("{}.cleaned", segment_name(bases[1], "log")),
            vec![2; 10],
        );
        f.insert("segment.log.spare".into(), Vec::new());
        f.insert(segment_name(99_999, "index"), vec![0; 16]);
    };
    let cases: Vec<(&str, u64, Damage<'_>)> = vec![
        (
            "flip in a sealed segment whose indexes are gone",
            leo,
            Box::new(|f: &mut Files| {
                without_indexes(f, bases[1]);
                f.get_mut(&sealed).expect("log")[70] ^= 0x10;
            }),
        ),
        (
            "a sealed segment torn",
            leo,
            Box::new(|f: &mut Files| {
                let log = f.get_mut(&sealed).expect("log");
                log.truncate(log.len() - 3);
            }),
        ),
        (
            "a missing middle segment",
            leo,
            Box::new(|f: &mut Files| {
                f.remove(&sealed);
            }),
        ),
        (
            "flip in the last batch",
            leo,
            Box::new(|f: &mut Files| {
                let log = f.get_mut(&last).expect("log");
                let at = log.len() - 5;
                log[at] ^= 0x10;
            }),
        ),
        (
            "garbage then a continuing batch",
            leo + 1,
            Box::new(|f: &mut Files| {
                let log = f.get_mut(&last).expect("log");
                log.extend_from_slice(&[0; 20]);
                log.extend_from_slice(&batch_at(leo, 1, "next"));
            }),
        ),
        (
            "a log shorter than its recovery point",
            leo + 5,
            Box::new(|_: &mut Files| {}),
        ),
    ];
    let mut failures = Vec::new();
    for (what, rp, damage) in &cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut damaged = files.clone();
        damage(&mut damaged);
        leftovers(&mut damaged);
        restore(dir.path(), &damaged);
        match open_at(dir.path(), &config, *rp) {
            Err(Error::Corrupt { .. }) => {}
            Err(e) => panic!("{what}: {e}"),
            Ok(_) => panic!("{what}: open succeeded"),
        }
        let after = snapshot(dir.path());
        if after.len() != damaged.len() {
            failures.push(format!(
                "{what}: files {:?}",
                after.keys().collect::<Vec<_>>()
            ));
        }
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
