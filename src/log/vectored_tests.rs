//! A group of batches appended as the pieces of their concatenation (one
//! vectored write: `Log::append_trusted_vectored`, and
//! `Log::append_trusted_deferred` followed by `Log::sync_for_ack`) stores
//! exactly what the append of the joined buffer stores: the same segment
//! files byte for byte (log, offset index, time index, leader epochs,
//! producer snapshots), the same `AppendInfo`, the same bytes rewritten in
//! the pieces, through rolls, producers' batches and `LogAppendTime`; and a
//! group the joined append refuses is refused alike, with nothing stored.

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;

use super::Log;
use crate::clock::{Clock, ManualClock};
use crate::config::LogConfig;
use crate::format::BatchBuilder;
use crate::types::{Compression, TimestampType};

/// One batch of a group: its record count and value length, and whether
/// an idempotent producer wrote it.
#[derive(Debug, Clone)]
struct Spec {
    records: usize,
    value_len: usize,
    producer: bool,
}

fn spec() -> impl Strategy<Value = Spec> {
    (1usize..6, 0usize..48, any::<bool>()).prop_map(|(records, value_len, producer)| Spec {
        records,
        value_len,
        producer,
    })
}

/// How the vectored log appends a group.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// `append_trusted_vectored`.
    Vectored,
    /// `append_trusted_deferred`, then `sync_for_ack`.
    Deferred,
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::Vectored), Just(Mode::Deferred)]
}

fn open(dir: &Path, config: &LogConfig, clock: &ManualClock) -> Log {
    let clock: Arc<dyn Clock> = Arc::new(clock.clone());
    Log::builder(dir)
        .config(config.clone())
        .clock(clock)
        .open()
        .expect("open")
}

/// The batches of a group, encoded; `sequence` is the producer's next.
fn build(group: &[Spec], group_index: usize, sequence: &mut i32) -> Vec<Vec<u8>> {
    group
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let mut builder = BatchBuilder::new(Compression::None);
            let value = vec![u8::try_from(i).unwrap_or(0); spec.value_len];
            for r in 0..spec.records {
                let timestamp = 1_000 + (group_index * 10 + r) as i64;
                builder.append(timestamp, Some(b"k"), Some(&value), &[]);
            }
            if spec.producer {
                builder = builder.producer(7, 0, *sequence);
                *sequence += i32::try_from(spec.records).unwrap_or(0);
            }
            builder.build().expect("batch").to_vec()
        })
        .collect()
}

/// Every file of `dir` (but the lock), by name, with its bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("list")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.is_file())
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("read"))
        })
        .filter(|(name, _)| name != ".lock")
        .collect();
    files.sort();
    files
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn vectored_group_stores_what_the_joined_group_stores(
        groups in prop::collection::vec(
            (prop::collection::vec(spec(), 1..7), mode()),
            1..10,
        ),
        segment_bytes in prop_oneof![Just(700u64), Just(1_500u64), Just(1u64 << 20)],
        log_append_time in any::<bool>(),
    ) {
        let config = LogConfig::builder()
            .segment_bytes(segment_bytes)
            .index_interval_bytes(100)
            .timestamp_type(if log_append_time {
                TimestampType::LogAppendTime
            } else {
                TimestampType::CreateTime
            })
            .build()
            .expect("config");
        let clock = ManualClock::new(1_700_000_000_000);
        let (joined_dir, vectored_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
        let joined_log = open(joined_dir.path(), &config, &clock);
        let vectored_log = open(vectored_dir.path(), &config, &clock);
        let (mut joined_sequence, mut vectored_sequence) = (0, 0);
        for (g, (group, mode)) in groups.iter().enumerate() {
            let epoch = 1 + i32::try_from(g / 3).unwrap_or(0);
            let before = joined_sequence;
            let mut joined = build(group, g, &mut joined_sequence).concat();
            let mut pieces = build(group, g, &mut vectored_sequence);
            let expected = joined_log.append_trusted(&mut joined, epoch);
            let mut slices: Vec<&mut [u8]> = pieces.iter_mut().map(Vec::as_mut_slice).collect();
            let got = match mode {
                Mode::Vectored => vectored_log.append_trusted_vectored(&mut slices, epoch),
                Mode::Deferred => vectored_log
                    .append_trusted_deferred(&mut slices, epoch)
                    .and_then(|info| {
                        vectored_log.sync_for_ack(info.last_offset() + 1)?;
                        Ok(info)
                    }),
            };
            match (&expected, &got) {
                (Ok(expected), Ok(got)) => prop_assert_eq!(expected, got),
                (Err(expected), Err(got)) => {
                    prop_assert_eq!(expected.to_string(), got.to_string());
                    // Nothing stored: the producer's next sequence is as before.
                    joined_sequence = before;
                    vectored_sequence = before;
                }
                _ => prop_assert!(false, "joined {:?}, vectored {:?}", expected, got),
            }
            prop_assert_eq!(&pieces.concat(), &joined, "the batches as rewritten in place");
            prop_assert_eq!(joined_log.log_end_offset(), vectored_log.log_end_offset());
        }
        joined_log.close()?;
        vectored_log.close()?;
        let (joined_files, vectored_files) = (files(joined_dir.path()), files(vectored_dir.path()));
        let names = |files: &[(String, Vec<u8>)]| files.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
        prop_assert_eq!(names(&joined_files), names(&vectored_files));
        for (joined, vectored) in joined_files.iter().zip(&vectored_files) {
            prop_assert!(joined.1 == vectored.1, "{} differs", joined.0);
        }
    }
}
