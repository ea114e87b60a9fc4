//! Recovery of files far larger than their segment could need: a log file
//! over 4 GiB, index files of many GiB (sparse, so cheap to make). No panic,
//! no memory or time that grows with what the files merely claim. And, run
//! by hand, the time to open a damaged 1 GiB segment.

mod common;

use common::shm_tempdir as tempdir;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::{
    Files, Rec, check_every_offset, open_at, restore, segment_name, small_config, snapshot_bases,
};
use logbus::format::{self, BatchBuilder};
use logbus::{Compression, CorruptionKind, LogConfig, Result};

const GIB: u64 = 1 << 30;

/// A closed log with `config` (see [`common::closed_log`]) restored into a
/// new directory: the directory, its files, the log's records and its end
/// offset.
fn restored(
    config: &LogConfig,
    segments: usize,
    in_last: usize,
) -> Result<(tempfile::TempDir, Files, Vec<Rec>, u64)> {
    let (files, model) = common::closed_log(config, segments, in_last)?;
    let leo = model.last().expect("records").offset + 1;
    let dir = tempdir();
    restore(dir.path(), &files);
    Ok((dir, files, model, leo))
}

/// The last segment's log file in `dir`, and its length.
fn last_log(dir: &Path, files: &Files) -> (PathBuf, u64) {
    let last = *snapshot_bases(files).last().expect("segments");
    let path = dir.join(segment_name(last, "log"));
    let len = std::fs::metadata(&path).expect("log").len();
    (path, len)
}

/// Sets the length of `path`, or `None` where the file system refuses
/// (no sparse files): the caller skips, saying so.
fn set_len(path: &Path, len: u64) -> Option<()> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open");
    match file.set_len(len) {
        Ok(()) => Some(()),
        Err(e) => {
            eprintln!("skipped: no sparse file of {len} bytes here: {e}");
            None
        }
    }
}

/// A segment file over 4 GiB holding a valid batch that continues the log
/// beyond 4 GiB, after a sparse hole: no batch may start beyond 2^31 − 1
/// (Kafka's index positions are 32-bit signed integers), so the hole is
/// damage (above the recovery point here: cut and reported) and the batch
/// past it is never indexed; nothing converts a position with a panic.
#[test]
fn a_batch_beyond_4_gib_is_damage_not_a_panic() -> Result<()> {
    let config = small_config(700);
    let (dir, files, model, leo) = restored(&config, 2, 3)?;
    let (path, valid) = last_log(dir.path(), &files);
    let mut beyond = BatchBuilder::new(Compression::None).base_offset(leo as i64);
    beyond.append(0, None, Some(b"beyond"), &[]);
    let beyond = beyond.build().expect("batch");
    let at = 4 * GIB + 100;
    let Some(()) = set_len(&path, at) else {
        return Ok(());
    };
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        file.write_all_at(&beyond, at).expect("write");
    }
    let log = open_at(dir.path(), &config, leo)?;
    let cut = log.recovery_report().truncated.clone().expect("reported");
    assert_eq!(cut.position, valid);
    assert_eq!(cut.bytes, at + beyond.len() as u64 - valid);
    assert_eq!(cut.first_lost_offset, leo);
    assert!(
        matches!(cut.cause, CorruptionKind::Batch(_)),
        "{:?}",
        cut.cause
    );
    assert_eq!(log.log_end_offset(), leo);
    assert_eq!(std::fs::metadata(&path).expect("log").len(), valid);
    check_every_offset(&log, &model)?;
    Ok(())
}

/// A log file with a sparse zero tail past 4 GiB behind its batches (a
/// file extended but never written, as a crash can leave it): the tail is
/// cut and reported, looking past it for valid data costs a page compare
/// per 4 KiB of zeros, and the batches stay.
#[test]
fn a_zero_tail_past_4_gib_is_cut() -> Result<()> {
    let config = small_config(700);
    let (dir, files, model, leo) = restored(&config, 2, 3)?;
    let (path, valid) = last_log(dir.path(), &files);
    let Some(()) = set_len(&path, 4 * GIB + 123) else {
        return Ok(());
    };
    let log = open_at(dir.path(), &config, leo)?;
    let cut = log.recovery_report().truncated.clone().expect("reported");
    assert_eq!((cut.position, cut.bytes), (valid, 4 * GIB + 123 - valid));
    assert_eq!(cut.first_lost_offset, leo);
    assert!(!cut.followed_by_valid_data());
    check_every_offset(&log, &model)?;
    Ok(())
}

/// Index files of many GiB (sparse): far more than their segment could
/// need, so they are not read (no memory or time in proportion to their
/// size) but rebuilt; the rebuilt indexes are trimmed to their entries and
/// every lookup answers as before.
#[test]
fn sparse_multi_gib_index_files_are_rebuilt_not_read() -> Result<()> {
    let config = small_config(700);
    let (dir, files, model, leo) = restored(&config, 3, 4)?;
    let bases = snapshot_bases(&files);
    for &base in &[bases[0], *bases.last().expect("segments")] {
        for (suffix, len) in [("index", 8 * GIB), ("timeindex", 6 * GIB + 4)] {
            let path = dir.path().join(segment_name(base, suffix));
            let Some(()) = set_len(&path, len) else {
                return Ok(());
            };
        }
    }
    let log = open_at(dir.path(), &config, leo)?;
    assert!(log.recovery_report().truncated.is_none());
    assert!(log.recovery_report().indexes_rebuilt >= 2);
    check_every_offset(&log, &model)?;
    common::check_timestamps(&log, &model, 0, (990..1400).step_by(17))?;
    for suffix in ["index", "timeindex"] {
        let sealed = std::fs::metadata(dir.path().join(segment_name(bases[0], suffix)))
            .expect("index")
            .len();
        assert!(
            sealed > 0 && sealed <= 4096,
            "{suffix} rebuilt and trimmed: {sealed} bytes"
        );
        let active = std::fs::metadata(
            dir.path()
                .join(segment_name(*bases.last().expect("segments"), suffix)),
        )
        .expect("index")
        .len();
        assert!(
            active <= 4096,
            "{suffix} preallocated again: {active} bytes"
        );
    }
    Ok(())
}

/// Run by hand in release (`cargo test --release --test recovery_scale --
/// --ignored --nocapture`): the time to open a 1 GiB segment damaged near
/// its start, (a) followed by valid batches, (b) followed by 1 GiB of
/// random bytes (stale blocks a file system can show after a power loss),
/// where looking for valid data after the damage used to run a CRC over
/// nearly every candidate position. Prints the times; asserts only the
/// outcome.
#[test]
#[ignore = "timing, run by hand in release"]
fn open_a_damaged_1_gib_segment() -> Result<()> {
    let mut builder = BatchBuilder::new(Compression::None);
    for i in 0..64 {
        builder.append(1_000 + i, Some(b"key"), Some(&[b'v'; 1000]), &[]);
    }
    let batch = builder.build().expect("batch").to_vec();
    let per_batch = batch.len() as u64;
    for scenario in ["valid batches", "random bytes"] {
        let dir = tempdir();
        let path = dir.path().join(segment_name(0, "log"));
        let mut bytes = Vec::with_capacity(GIB as usize + batch.len());
        let mut base = 0i64;
        while (bytes.len() as u64) < GIB {
            if scenario == "random bytes" && bytes.len() as u64 >= 2 * per_batch {
                let mut state = 0x9e37_79b9_7f4a_7c15u64;
                while (bytes.len() as u64) < GIB {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    bytes.extend_from_slice(&state.to_le_bytes());
                }
                break;
            }
            let start = bytes.len();
            bytes.extend_from_slice(&batch);
            format::set_base_offset(&mut bytes[start..], base);
            base += 64;
        }
        // Damage in the second batch: a byte the CRC covers.
        bytes[per_batch as usize + 100] ^= 0x40;
        std::fs::write(&path, &bytes).expect("write");
        drop(bytes);
        let started = Instant::now();
        let log = open_at(dir.path(), &LogConfig::default(), 0)?;
        let elapsed = started.elapsed();
        let cut = log.recovery_report().truncated.clone().expect("reported");
        assert_eq!((cut.position, cut.first_lost_offset), (per_batch, 64));
        eprintln!(
            "open of a 1 GiB segment damaged near its start, then {scenario}: {:.2} s \
             (valid data after the damage at {:?})",
            elapsed.as_secs_f64(),
            cut.valid_after
        );
    }
    Ok(())
}
