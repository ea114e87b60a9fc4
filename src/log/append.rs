//! Appends: as leader (the log assigns offsets) and as follower (the batches
//! keep the offsets they carry).

use crate::error::{Error, FormatError, Result};
use crate::format::{self, BatchHeader};
use crate::log::producer_state::{self, BatchMetadata, DataBatch, ProducerOrigin};
use crate::log::{AppendGuard, Log, LogInner, LogState, worker::Job};
use crate::storage::segment::{BatchMeta, Segment, SegmentLimits};
use crate::types::{Compression, TimestampType};

/// What an append stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    first_offset: u64,
    last_offset: u64,
    max_timestamp: i64,
    log_append_time: Option<i64>,
    records: u64,
    bytes: u64,
    segment_base_offset: u64,
    position: u64,
    duplicate: bool,
}

impl AppendInfo {
    /// What an append of new batches stored.
    #[expect(clippy::too_many_arguments, reason = "one field each")]
    pub(crate) fn stored(
        first_offset: u64,
        last_offset: u64,
        max_timestamp: i64,
        log_append_time: Option<i64>,
        records: u64,
        bytes: u64,
        segment_base_offset: u64,
        position: u64,
    ) -> Self {
        AppendInfo {
            first_offset,
            last_offset,
            max_timestamp,
            log_append_time,
            records,
            bytes,
            segment_base_offset,
            position,
            duplicate: false,
        }
    }

    /// Offset of the first appended record.
    #[must_use]
    pub fn first_offset(&self) -> u64 {
        self.first_offset
    }
    /// Offset of the last appended record.
    #[must_use]
    pub fn last_offset(&self) -> u64 {
        self.last_offset
    }
    /// Largest timestamp among the appended records (the append time under
    /// `LogAppendTime`).
    #[must_use]
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }
    /// The time the log stamped on the batches, when the log uses
    /// `LogAppendTime`.
    #[must_use]
    pub fn log_append_time(&self) -> Option<i64> {
        self.log_append_time
    }
    /// Number of records appended.
    #[must_use]
    pub fn record_count(&self) -> u64 {
        self.records
    }
    /// Bytes appended.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    /// Base offset of the segment the batches went to.
    #[must_use]
    pub fn segment_base_offset(&self) -> u64 {
        self.segment_base_offset
    }
    /// Byte position of the first batch in that segment's log file.
    #[must_use]
    pub fn position(&self) -> u64 {
        self.position
    }
    /// Whether the append was a retry of batches the log already holds (an
    /// idempotent producer's batches with the same producer id, epoch and
    /// sequences as one of its last five): nothing was written, and the
    /// offsets, timestamps and record count are the original batches'
    /// (Kafka answers such a retry with success and the original base
    /// offset). [`bytes`](Self::bytes) is 0 then; the segment and position
    /// are the original first batch's while it is stored, else the log
    /// end's.
    #[must_use]
    pub fn is_duplicate(&self) -> bool {
        self.duplicate
    }
}

/// Records in the checked batches.
fn record_count(checked: &[Checked]) -> u64 {
    checked.iter().map(|b| b.header.records_count as u64).sum()
}

/// One validated batch of an append buffer.
struct Checked {
    position: usize,
    header: BatchHeader,
}

impl Log {
    /// Appends one or more v2 record batches as the partition's leader.
    ///
    /// The log assigns offsets: it rewrites each batch's base offset in
    /// `batches`, stamps `leader_epoch` as the partition leader epoch, and,
    /// when the log uses `LogAppendTime`, sets the append time (recomputing
    /// the CRC). Returns once the append is as durable as the log's
    /// [`FlushPolicy`](crate::FlushPolicy) promises.
    ///
    /// The first append of a new `leader_epoch` records (epoch, first
    /// offset) in the log's leader epoch cache and rewrites its
    /// `leader-epoch-checkpoint` file (fsynced) before the batches are
    /// written, as Kafka does. A negative epoch (no epoch) is stamped but
    /// not recorded.
    ///
    /// A data batch with a producer id (>= 0: an idempotent producer's) is
    /// checked against what the log knows of that producer, as Kafka's
    /// broker does: its epoch may not be older than the producer's, and
    /// its first sequence must follow the producer's last one (0 in a new
    /// epoch or for a producer the log has no state for). A retry of one of
    /// the producer's last five batches (same epoch, same first and last
    /// sequence) is not written again: the append succeeds with the
    /// original batch's offsets and [`AppendInfo::is_duplicate`]. The
    /// batches of one append are checked together (each against the state
    /// the ones before it leave) and stored all or none. Batches without a
    /// producer id are not checked. A transactional batch opens a
    /// transaction for its producer (see [`Log::last_stable_offset`]);
    /// control batches (transaction markers) come only through
    /// [`Log::append_marker`], as Kafka refuses them from clients.
    ///
    /// # Errors
    /// [`Error::InvalidBatch`] for a malformed batch (bad CRC, structure or
    /// records, or a producer id without a base sequence) or a control
    /// batch,
    /// [`Error::RecordTooLarge`] for a batch over
    /// `max.message.bytes` or an append over `segment.bytes`,
    /// [`Error::InvalidArgument`] for a `leader_epoch` below the newest
    /// epoch that wrote to the log, or an append mixing retried batches
    /// with new ones; [`Error::OutOfOrderSequence`],
    /// [`Error::InvalidProducerEpoch`], [`Error::UnknownProducerId`] and
    /// [`Error::InvalidTxnState`] for a producer's batch its state refuses;
    /// in these cases nothing was stored.
    /// [`Error::Fenced`] after an earlier I/O failure; [`Error::Io`] if a
    /// write or fsync fails, the leader epoch file's included (which fences
    /// the log).
    pub fn append(&self, batches: &mut [u8], leader_epoch: i32) -> Result<AppendInfo> {
        let checked = validate(batches, &self.inner, 0..0)?;
        self.append_checked(batches, leader_epoch, &checked, ProducerOrigin::Client)
    }

    /// [`Log::append`] for batches logbus's own producer built with
    /// [`BatchBuilder`](crate::format::BatchBuilder): their structure and
    /// sizes are checked, but not their CRC or records, which the builder
    /// wrote correctly an instant ago in the same process.
    pub(crate) fn append_trusted(
        &self,
        batches: &mut [u8],
        leader_epoch: i32,
    ) -> Result<AppendInfo> {
        let checked = validate(batches, &self.inner, 0..batches.len())?;
        self.append_checked(batches, leader_epoch, &checked, ProducerOrigin::Client)
    }

    /// [`Log::append_trusted`] of the concatenation of `pieces`, each of
    /// which holds whole batches: the same bytes are stored, at the same
    /// offsets, with the same checks, indexes and durability, but written
    /// with one vectored write, without copying the pieces into one
    /// buffer first. Each batch's fields are rewritten in its piece.
    pub(crate) fn append_trusted_vectored(
        &self,
        pieces: &mut [&mut [u8]],
        leader_epoch: i32,
    ) -> Result<AppendInfo> {
        let checked = validate_pieces(pieces, &self.inner)?;
        self.append_validated(pieces, leader_epoch, &checked, ProducerOrigin::Client, true)
    }

    /// [`Log::append_trusted`] for a coordinator's records to its
    /// compacted topic, each of which it built with a key: a compacted
    /// log's rule that every record has a key is not checked record by
    /// record (in debug builds it still is, as an assertion).
    pub(crate) fn append_trusted_keyed(
        &self,
        batches: &mut [u8],
        leader_epoch: i32,
    ) -> Result<AppendInfo> {
        let checked = validate_keyed(batches, &self.inner, 0..batches.len(), true)?;
        self.append_checked(batches, leader_epoch, &checked, ProducerOrigin::Client)
    }

    /// [`Log::append_trusted`] that leaves the fsync its flush policy asks
    /// for to the caller: the batches are written and visible to readers,
    /// but the append returns without waiting for durability. Before it
    /// acknowledges them, the caller must call
    /// [`Log::sync_for_ack`] with the returned last offset + 1 (from any
    /// thread; meanwhile it may append more, which the same fsync then
    /// covers: the producer's sender writes its next group while the
    /// previous one is synced, as Kafka's log flusher overlaps appends).
    ///
    /// The batches are the concatenation of `pieces` (each holding whole
    /// batches), written as [`Log::append_trusted_vectored`] writes them.
    pub(crate) fn append_trusted_deferred(
        &self,
        pieces: &mut [&mut [u8]],
        leader_epoch: i32,
    ) -> Result<AppendInfo> {
        let checked = validate_pieces(pieces, &self.inner)?;
        self.append_validated(
            pieces,
            leader_epoch,
            &checked,
            ProducerOrigin::Client,
            false,
        )
    }

    /// Makes an append ending before `next_offset` as durable as the flush
    /// policy promises before an acknowledgement (what [`Log::append`] does
    /// before it returns): under `flush.messages=N`, if N or more offsets
    /// below `next_offset` are not on disk, runs an fsync covering them or
    /// waits for the one in flight (group commit).
    ///
    /// # Errors
    /// [`Error::Fenced`] after an earlier I/O failure; [`Error::Io`] if the
    /// fsync fails (which fences the log).
    pub(crate) fn sync_for_ack(&self, next_offset: u64) -> Result<()> {
        self.inner.after_append(next_offset)
    }

    /// [`Log::append_trusted`] for a coordinator's own records (Kafka's
    /// `AppendOrigin.COORDINATOR`: the group coordinator's transactional
    /// offset commits): a producer's batch is checked for its epoch and
    /// transaction state only, neither for its sequence nor as a retry, as
    /// the coordinator numbers none of its batches.
    pub(crate) fn append_coordinator(
        &self,
        batches: &mut [u8],
        leader_epoch: i32,
    ) -> Result<AppendInfo> {
        let checked = validate(batches, &self.inner, 0..batches.len())?;
        self.append_checked(batches, leader_epoch, &checked, ProducerOrigin::Coordinator)
    }

    fn append_checked(
        &self,
        mut batches: &mut [u8],
        leader_epoch: i32,
        checked: &[Checked],
        origin: ProducerOrigin,
    ) -> Result<AppendInfo> {
        self.append_validated(
            std::slice::from_mut(&mut batches),
            leader_epoch,
            checked,
            origin,
            true,
        )
    }

    /// The append behind [`Log::append_checked`], of the batches in
    /// `pieces` (in order; `checked` holds their positions in the
    /// concatenation, and no batch spans two pieces); with `sync` false
    /// the fsync the flush policy asks for is left to the caller
    /// ([`Log::sync_for_ack`]).
    fn append_validated(
        &self,
        pieces: &mut [&mut [u8]],
        leader_epoch: i32,
        checked: &[Checked],
        origin: ProducerOrigin,
        sync: bool,
    ) -> Result<AppendInfo> {
        let info = {
            // The upgradable read: readers go on; writers and other
            // appends wait (see the module docs of `log`).
            let mut state = self.inner.state.upgradable_read();
            self.inner.check_not_fenced()?;
            if let Some(latest) = state.epochs.latest_epoch()
                && leader_epoch >= 0
                && leader_epoch < latest
            {
                return Err(Error::InvalidArgument(format!(
                    "leader epoch {leader_epoch} is older than the log's latest epoch {latest}: \
                     a leader of an older epoch must not append"
                )));
            }
            let now = self.inner.clock.now_ms();
            let append_time = (self.inner.config().timestamp_type()
                == TimestampType::LogAppendTime)
                .then_some(now);
            // Producer state first: a refused batch or a retry changes
            // nothing, the leader epoch file included.
            let producer_batches = match check_producers(
                &state,
                checked,
                state.log_end_offset,
                append_time,
                origin,
            )? {
                ProducerCheck::Fresh(batches) => batches,
                ProducerCheck::Duplicate { first, last } => {
                    let info = self
                        .inner
                        .duplicate_info(&state, checked, first, last, append_time);
                    drop(state);
                    if sync {
                        self.inner.after_append(info.last_offset + 1)?;
                    }
                    return Ok(info);
                }
            };
            let first = state.log_end_offset;
            self.inner
                .assign_epochs_upgradable(&mut state, std::iter::once((leader_epoch, first)))?;
            let mut next = state.log_end_offset;
            let mut metas = Vec::with_capacity(checked.len());
            let mut max_timestamp = format::NO_TIMESTAMP;
            let total: usize = pieces.iter().map(|p| p.len()).sum();
            // The piece holding the batch at hand, and where it starts in
            // the concatenation.
            let (mut piece, mut piece_start) = (0, 0);
            for (i, batch) in checked.iter().enumerate() {
                let end = checked.get(i + 1).map_or(total, |b| b.position);
                while batch.position >= piece_start + pieces[piece].len() {
                    piece_start += pieces[piece].len();
                    piece += 1;
                }
                let bytes = &mut pieces[piece][batch.position - piece_start..end - piece_start];
                format::set_base_offset(bytes, next as i64);
                format::set_partition_leader_epoch(bytes, leader_epoch);
                let batch_max = match append_time {
                    Some(t) => {
                        format::set_log_append_time(bytes, t);
                        t
                    }
                    None => batch.header.max_timestamp,
                };
                max_timestamp = max_timestamp.max(batch_max);
                let last = next + batch.header.last_offset_delta as u64;
                metas.push(BatchMeta {
                    position_in_buf: batch.position,
                    size: end - batch.position,
                    last_offset: last,
                    max_timestamp: batch_max,
                });
                next = last + 1;
            }
            let first_offset = state.log_end_offset;
            let bufs: Vec<&[u8]> = pieces.iter().map(|p| &**p).collect();
            let (segment_base_offset, position) = self.inner.append_upgradable(
                &mut state,
                &bufs,
                &metas,
                first_offset,
                now,
                |_, state| {
                    for batch in &producer_batches {
                        state.producers.apply_data(batch);
                    }
                    Ok(())
                },
            )?;
            AppendInfo {
                first_offset,
                last_offset: next - 1,
                max_timestamp,
                log_append_time: append_time,
                records: record_count(checked),
                bytes: total as u64,
                segment_base_offset,
                position,
                duplicate: false,
            }
        };
        if sync {
            self.inner.after_append(info.last_offset + 1)?;
        }
        Ok(info)
    }

    /// Appends batches that already carry their offsets, byte for byte, as a
    /// follower copying its leader does.
    ///
    /// Each batch's `partitionLeaderEpoch` goes into the log's leader epoch
    /// cache as Kafka's follower does it (see [`Log::append`]): a new epoch
    /// is recorded at its first batch's base offset, the file rewritten
    /// before the batches are written. Producers' batches update the log's
    /// producer state without being checked (the leader checked them), so
    /// a follower that becomes leader recognises the producers' retries;
    /// transaction markers end their producer's transaction and an ABORT
    /// goes to the segment's `.txnindex`, as on the leader.
    ///
    /// # Errors
    /// As [`Log::append`], plus [`Error::OffsetsOutOfOrder`] when the first
    /// batch starts below the log end offset or the batches' offsets do not
    /// increase, or, in a log that is not compacted, leave a gap (a
    /// compacted leader leaves gaps; recovery and reads treat a gap in a log
    /// that is not compacted as damage); nothing is stored then.
    pub fn append_as_follower(&self, batches: &[u8]) -> Result<AppendInfo> {
        self.append_replicated(batches, 0..0)
    }

    /// [`Log::append_as_follower`] for batches read from a leader's log in
    /// this process: those within `checked` (the read's
    /// [`LogRead::checked`](super::LogRead::checked) range, bytes this
    /// process checked or built before) get their structure and offsets
    /// checked but not their CRC or records again. The rest are validated
    /// in full. A follower's copy of a 100-byte record cost about 190
    /// instructions, 160 of them validation.
    pub(crate) fn append_as_follower_checked(
        &self,
        batches: &[u8],
        checked: std::ops::Range<usize>,
    ) -> Result<AppendInfo> {
        self.append_replicated(batches, checked)
    }

    fn append_replicated(
        &self,
        batches: &[u8],
        trusted: std::ops::Range<usize>,
    ) -> Result<AppendInfo> {
        let checked = validate(batches, &self.inner, trusted)?;
        let contiguous = !self.inner.config().compact();
        let info = {
            // As a leader append: readers go on until the publish.
            let mut state = self.inner.state.upgradable_read();
            self.inner.check_not_fenced()?;
            let mut expected = state.log_end_offset as i64;
            let mut metas = Vec::with_capacity(checked.len());
            let mut max_timestamp = format::NO_TIMESTAMP;
            for (i, batch) in checked.iter().enumerate() {
                let header = &batch.header;
                // A negative base offset, or one whose last offset overflows,
                // is no offset at all.
                header.checked_offsets()?;
                if header.base_offset < expected || (contiguous && header.base_offset != expected) {
                    let first = checked[0].header.base_offset;
                    let last = checked[checked.len() - 1].header.last_offset();
                    return Err(Error::OffsetsOutOfOrder {
                        first,
                        last,
                        log_end: state.log_end_offset,
                    });
                }
                let end = checked.get(i + 1).map_or(batches.len(), |b| b.position);
                max_timestamp = max_timestamp.max(header.max_timestamp);
                metas.push(BatchMeta {
                    position_in_buf: batch.position,
                    size: end - batch.position,
                    last_offset: header.last_offset() as u64,
                    max_timestamp: header.max_timestamp,
                });
                expected = header.next_offset();
            }
            self.inner.assign_epochs_upgradable(
                &mut state,
                checked
                    .iter()
                    .map(|b| (b.header.partition_leader_epoch, b.header.base_offset as u64)),
            )?;
            let now = self.inner.clock.now_ms();
            let first_offset = checked[0].header.base_offset as u64;
            let (segment_base_offset, position) = self.inner.append_upgradable(
                &mut state,
                &[batches],
                &metas,
                first_offset,
                now,
                |inner, state| {
                    // The leader checked the producers' batches: applied
                    // unchecked (`ProducerOrigin::Replication`). Markers end
                    // their producer's transaction; an aborted one goes to
                    // the `.txnindex` of the segment the batches went to.
                    for (i, batch) in checked.iter().enumerate() {
                        let header = &batch.header;
                        if header.is_control() {
                            if header.producer_id < 0 {
                                continue;
                            }
                            let end = checked.get(i + 1).map_or(batches.len(), |b| b.position);
                            if let Some(aborted) = producer_state::apply_control(
                                &mut state.producers,
                                header,
                                &batches[batch.position..end],
                                header.base_offset as u64,
                            ) {
                                inner.index_aborted(state, aborted)?;
                            }
                        } else if let Some(data) = producer_state::data_batch(
                            header,
                            header.base_offset as u64,
                            header.max_timestamp,
                        ) {
                            state.producers.apply_data(&data);
                        }
                    }
                    super::txn::prune_stable(inner, state);
                    Ok(())
                },
            )?;
            AppendInfo {
                first_offset,
                last_offset: expected as u64 - 1,
                max_timestamp,
                log_append_time: None,
                records: record_count(&checked),
                bytes: batches.len() as u64,
                segment_base_offset,
                position,
                duplicate: false,
            }
        };
        self.inner.after_append(info.last_offset + 1)?;
        Ok(info)
    }
}

/// What the producer state says about a leader append.
enum ProducerCheck {
    /// New batches: the producers' ones (possibly none), to apply once
    /// written.
    Fresh(Vec<DataBatch>),
    /// Every batch repeats one the log holds: the originals of the first
    /// and the last.
    Duplicate {
        first: BatchMetadata,
        last: BatchMetadata,
    },
}

/// Checks the producers' batches of a leader append whose first offset
/// will be `first_offset`, each against the state the ones before it leave
/// (a working copy when there are several), before anything is written.
///
/// # Errors
/// The producer state's refusals ([`Error::OutOfOrderSequence`],
/// [`Error::InvalidProducerEpoch`], [`Error::UnknownProducerId`],
/// [`Error::InvalidTxnState`]); [`Error::InvalidBatch`] for a producer's
/// data batch without a sequence; [`Error::InvalidArgument`] for an append
/// mixing retried batches with others.
fn check_producers(
    state: &LogState,
    checked: &[Checked],
    first_offset: u64,
    append_time: Option<i64>,
    origin: ProducerOrigin,
) -> Result<ProducerCheck> {
    let mut batches = Vec::new();
    let mut next = first_offset;
    for batch in checked {
        let header = &batch.header;
        if header.is_control() {
            // As Kafka's LogValidator: markers come from the coordinator
            // (`Log::append_marker`), never from a producer.
            return Err(Error::InvalidBatch(FormatError::InvalidRecord(
                "clients may not write control batches (transaction markers go through \
                 Log::append_marker)",
            )));
        }
        if header.producer_id >= 0 && header.base_sequence < 0 {
            return Err(Error::InvalidBatch(FormatError::InvalidRecord(
                "a batch with a producer id must carry a base sequence (>= 0)",
            )));
        }
        let max_timestamp = append_time.unwrap_or(header.max_timestamp);
        if let Some(data) = producer_state::data_batch(header, next, max_timestamp) {
            batches.push(data);
        }
        next += header.last_offset_delta as u64 + 1;
    }
    if origin != ProducerOrigin::Client {
        // A coordinator's batches are never retries: each is checked
        // against the state the ones before it leave.
        let mut working = state.producers.clone();
        for batch in &batches {
            working.check_data(batch, origin)?;
            working.apply_data(batch);
        }
        return Ok(ProducerCheck::Fresh(batches));
    }
    if let [only] = batches.as_slice() {
        if let Some(original) = state.producers.find_duplicate(only) {
            if checked.len() > 1 {
                return Err(mixed_retry());
            }
            return Ok(ProducerCheck::Duplicate {
                first: original,
                last: original,
            });
        }
        state.producers.check_data(only, ProducerOrigin::Client)?;
        return Ok(ProducerCheck::Fresh(batches));
    }
    if batches.is_empty() {
        return Ok(ProducerCheck::Fresh(batches));
    }
    let mut working = state.producers.clone();
    let mut originals = Vec::new();
    for batch in &batches {
        if let Some(original) = working.find_duplicate(batch) {
            originals.push(original);
        } else {
            working.check_data(batch, ProducerOrigin::Client)?;
            working.apply_data(batch);
        }
    }
    match (originals.first(), originals.last()) {
        (None, _) | (_, None) => Ok(ProducerCheck::Fresh(batches)),
        (Some(&first), Some(&last)) if originals.len() == checked.len() => {
            Ok(ProducerCheck::Duplicate { first, last })
        }
        _ => Err(mixed_retry()),
    }
}

fn mixed_retry() -> Error {
    Error::InvalidArgument(
        "an append mixes retried producer batches with new ones: send a retry on its own"
            .to_owned(),
    )
}

/// Checks every batch in `buf` (structure, and unless it lies within
/// `trusted`, bytes this process built or checked before, also the CRC and
/// every record) and its size against the log's limits, before anything is
/// stored.
fn validate(buf: &[u8], inner: &LogInner, trusted: std::ops::Range<usize>) -> Result<Vec<Checked>> {
    validate_keyed(buf, inner, trusted, false)
}

/// [`validate`] of batches this process built, given as the pieces of
/// their concatenation (each piece whole batches): every piece is checked
/// as [`validate`] checks a buffer of trusted bytes, and the concatenation
/// against `segment.bytes`. Positions are in the concatenation.
fn validate_pieces(pieces: &[&mut [u8]], inner: &LogInner) -> Result<Vec<Checked>> {
    if let [only] = pieces {
        return validate(only, inner, 0..only.len());
    }
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    if total == 0 {
        return Err(Error::InvalidBatch(FormatError::Empty));
    }
    let segment_bytes = inner.config().segment_bytes();
    if total as u64 > segment_bytes {
        return Err(Error::RecordTooLarge {
            size: total as u64,
            max: segment_bytes,
            limit: "segment.bytes",
        });
    }
    let mut checked = Vec::new();
    let mut start = 0;
    for piece in pieces.iter().filter(|p| !p.is_empty()) {
        let first = checked.len();
        checked.extend(validate(piece, inner, 0..piece.len())?);
        for batch in &mut checked[first..] {
            batch.position += start;
        }
        start += piece.len();
    }
    Ok(checked)
}

/// [`validate`]; with `keyed`, the caller built every record with a key,
/// and a compacted log does not check each record for one (a debug
/// assertion does).
fn validate_keyed(
    buf: &[u8],
    inner: &LogInner,
    trusted: std::ops::Range<usize>,
    keyed: bool,
) -> Result<Vec<Checked>> {
    if buf.is_empty() {
        return Err(Error::InvalidBatch(FormatError::Empty));
    }
    // One configuration for the whole check (`Log::set_config` may swap it).
    let config = inner.config();
    let max = config.max_batch_len();
    if buf.len() as u64 > config.segment_bytes() {
        return Err(Error::RecordTooLarge {
            size: buf.len() as u64,
            max: config.segment_bytes(),
            limit: "segment.bytes",
        });
    }
    let mut checked = Vec::new();
    let mut position = 0;
    while position < buf.len() {
        let rest = &buf[position..];
        let header = BatchHeader::parse(rest)?;
        if header.total_size() > max {
            return Err(Error::RecordTooLarge {
                size: header.total_size() as u64,
                max: config.max_message_bytes(),
                limit: "max.message.bytes",
            });
        }
        let end = position.saturating_add(header.total_size());
        if position < trusted.start || end > trusted.end {
            let header = format::check_batch(rest)?;
            format::validate_batch_records(&rest[..header.total_size()], &header)?;
        } else if rest.len() < header.total_size() || header.last_offset_delta < 0 {
            return Err(Error::Internal(format!(
                "a batch this process built or checked is malformed: {header:?}"
            )));
        }
        if config.compact() {
            if keyed {
                debug_assert!(
                    require_keys(&rest[..header.total_size()], &header).is_ok(),
                    "a coordinator's batch with a record without a key"
                );
            } else {
                require_keys(&rest[..header.total_size()], &header)?;
            }
        }
        checked.push(Checked { position, header });
        position += header.total_size();
    }
    Ok(checked)
}

/// Kafka's rule for compacted topics: every record (outside control
/// batches) has a key, since the cleaner keeps records by key.
fn require_keys(batch: &[u8], header: &BatchHeader) -> Result<()> {
    let keyless = || {
        Error::InvalidBatch(FormatError::InvalidRecord(
            "a compacted log (cleanup.policy=compact) accepts only records with a key",
        ))
    };
    if header.is_control() {
        return Ok(());
    }
    if header.compression()? != Compression::None {
        let batch = format::Batch::from_bytes(bytes::Bytes::copy_from_slice(batch))?;
        for record in batch.records()? {
            if record?.key().is_none() {
                return Err(keyless());
            }
        }
        return Ok(());
    }
    // Uncompressed: the records where they lie, nothing copied or built
    // (the coordinators' writes to their compacted topics come here).
    let data = batch.get(format::RECORDS_OFFSET..).unwrap_or_default();
    let mut position = 0;
    for _ in 0..header.records_count.max(0) {
        let record = format::parse_record(data, position)?;
        if record.key.is_none() {
            return Err(keyless());
        }
        position = record.end;
    }
    Ok(())
}

impl LogInner {
    /// The answer to a retry: the original batches' offsets, found where
    /// they are stored.
    fn duplicate_info(
        &self,
        state: &LogState,
        checked: &[Checked],
        first: BatchMetadata,
        last: BatchMetadata,
        append_time: Option<i64>,
    ) -> AppendInfo {
        let stored = (first.first_offset >= state.log_start_offset)
            .then(|| &state.segments[state.segment_index_for(first.first_offset)])
            .and_then(|segment| {
                let found = segment.find_batch(first.first_offset).ok().flatten()?;
                Some((segment.base_offset(), found.0))
            });
        let (segment_base_offset, position) =
            stored.unwrap_or_else(|| (state.active().base_offset(), state.active().size()));
        AppendInfo {
            first_offset: first.first_offset,
            last_offset: last.last_offset,
            max_timestamp: first.max_timestamp.max(last.max_timestamp),
            log_append_time: append_time.map(|_| last.max_timestamp),
            records: record_count(checked),
            bytes: 0,
            segment_base_offset,
            position,
            duplicate: true,
        }
    }

    /// Writes validated batches with known offsets to the active segment,
    /// rolling first if they do not fit, and advances the log end offset,
    /// all under the state write lock (transaction markers; appends use
    /// [`Self::append_upgradable`]). Returns the segment's base offset and
    /// the position written at. Any I/O error fences the log.
    pub(super) fn append_locked(
        &self,
        state: &mut LogState,
        buf: &[u8],
        metas: &[BatchMeta],
        first_offset: u64,
        now: i64,
    ) -> Result<(u64, u64)> {
        let last_offset = metas.last().map_or(first_offset, |m| m.last_offset);
        let result = (|| {
            if self.roll_needed(state, buf.len() as u64, metas, last_offset, now) {
                self.roll(state, first_offset, now)?;
            }
            let segment = state.active_mut();
            let position = segment.append(buf, metas)?;
            Ok((segment.base_offset(), position))
        })();
        match result {
            Ok(written) => {
                self.published(state, last_offset);
                Ok(written)
            }
            Err(e) => {
                self.fence();
                Err(e)
            }
        }
    }

    /// [`Self::append_locked`] for an append holding the state lock's
    /// upgradable read: readers go on while the batches are written. The
    /// roll, if one is needed, upgrades to the write lock for itself; the
    /// batches are then written past the active segment's published size
    /// with only the upgradable read held ([`Segment::write_unpublished`]),
    /// and the write lock is taken once more, briefly, to publish them:
    /// the segment indexes them and counts them in its size, the log end
    /// offset moves, and `publish` runs (the producer state the batches
    /// change), so a reader sees all of that at once or none of it.
    /// Returns the segment's base offset and the position written at. Any
    /// I/O error fences the log; an error of `publish` comes after the log
    /// end offset moved, as in [`Self::append_locked`]'s callers.
    pub(super) fn append_upgradable(
        &self,
        state: &mut AppendGuard<'_>,
        bufs: &[&[u8]],
        metas: &[BatchMeta],
        first_offset: u64,
        now: i64,
        publish: impl FnOnce(&LogInner, &mut LogState) -> Result<()>,
    ) -> Result<(u64, u64)> {
        let last_offset = metas.last().map_or(first_offset, |m| m.last_offset);
        let len: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        let written = (|| {
            // The whole group goes to one segment: rolled for together.
            if self.roll_needed(state, len, metas, last_offset, now) {
                state.with_upgraded(|state| self.roll(state, first_offset, now))?;
            }
            // Past the published size: no reader sees these bytes yet, and
            // no other writer runs until the upgradable read is released.
            state.active().write_unpublished(bufs)
        })();
        let position = match written {
            Ok(position) => position,
            Err(e) => {
                self.fence();
                return Err(e);
            }
        };
        state.with_upgraded(|state| {
            let segment = state.active_mut();
            if let Err(e) = segment.publish(position, len, metas) {
                self.fence();
                return Err(e);
            }
            let base_offset = segment.base_offset();
            self.published(state, last_offset);
            publish(self, state)?;
            Ok((base_offset, position))
        })
    }

    /// Whether the `len` bytes of batches `metas` describes (ending at
    /// `last_offset`) need a new active segment ([`Self::should_roll`]).
    fn roll_needed(
        &self,
        state: &LogState,
        len: u64,
        metas: &[BatchMeta],
        last_offset: u64,
        now: i64,
    ) -> bool {
        let max_timestamp = metas
            .iter()
            .map(|m| m.max_timestamp)
            .max()
            .unwrap_or(format::NO_TIMESTAMP);
        self.should_roll(state.active(), len, last_offset, max_timestamp, now)
    }

    /// After batches ending at `last_offset` went into the active segment:
    /// moves the log end offset, and asks for a spare segment once the
    /// active one is half full (so the roll finds one ready; a log that
    /// never rolls never has one).
    fn published(&self, state: &mut LogState, last_offset: u64) {
        state.log_end_offset = last_offset + 1;
        self.durability.set_log_end(state.log_end_offset);
        if !state.spare_requested && state.active().size() > self.config().segment_bytes() / 2 {
            state.spare_requested = true;
            self.schedule(Job::PrepareSpare);
        }
    }

    /// Kafka's roll rules: the append would overflow `segment.bytes`, the
    /// segment spans more than `segment.ms`, an index is full, or the offsets
    /// would not fit the segment's relative offsets.
    ///
    /// As in Kafka, the time a segment spans is measured from its first
    /// batch's timestamp to the incoming batch's largest timestamp, and only
    /// falls back to wall-clock time since the segment was created when the
    /// first batch has no timestamp.
    fn should_roll(
        &self,
        active: &Segment,
        append_bytes: u64,
        last_offset: u64,
        incoming_timestamp: i64,
        now: i64,
    ) -> bool {
        if active.is_empty() {
            return !active.can_append(last_offset);
        }
        let too_big = active.size() + append_bytes > self.config().segment_bytes();
        let waited = match active.rolling_timestamp() {
            Some(first) if first >= 0 => incoming_timestamp.saturating_sub(first),
            _ => now.saturating_sub(active.created_ms()),
        };
        let too_old = self.config().segment_ms().is_some_and(|ms| waited > ms);
        too_big || too_old || !active.can_append(last_offset)
    }

    /// Seals the active segment and starts a new one at `base_offset`. The
    /// sealed segment's fsync runs on a scheduler thread (or in the next
    /// group commit), not here.
    fn roll(&self, state: &mut LogState, base_offset: u64, now: i64) -> Result<()> {
        let limits = self.segment_limits();
        state.spare_requested = false;
        let adopted = if std::mem::replace(&mut state.spare_ready, false) {
            Segment::from_spare(&self.storage, &self.dir, base_offset, limits).ok()
        } else {
            None
        };
        let mut fresh = match adopted {
            Some(segment) => segment,
            None => Segment::create(&self.storage, &self.dir, base_offset, limits)?,
        };
        fresh.set_created_ms(now);
        if state.active().is_empty() {
            // An empty active segment whose base cannot hold these offsets is
            // replaced rather than kept as an empty sealed segment.
            let empty = std::mem::replace(state.active_mut(), fresh);
            self.schedule(Job::RemoveFiles(empty.mark_deleted()?));
        } else {
            state.active_mut().seal()?;
            let sealed_file = state.active().file().clone();
            state.unflushed.push(sealed_file);
            state.segments.push(fresh);
            // Under flush.messages=1 the append's own fsync covers the
            // sealed file; otherwise it is flushed in the background.
            if !self.config().flush().is_every_append() {
                self.schedule(Job::Flush(base_offset));
            }
        }
        state.dir_dirty = true;
        tracing::debug!(dir = %self.dir.display(), base_offset, "segment rolled");
        // The producer state covers the log up to the new segment (the
        // batches about to be written are applied after the write).
        self.write_snapshot(state, base_offset)
    }

    pub(crate) fn segment_limits(&self) -> SegmentLimits {
        Self::limits_for(&self.config())
    }

    pub(crate) fn limits_for(config: &crate::LogConfig) -> SegmentLimits {
        SegmentLimits {
            index_bytes: config.segment_index_bytes(),
            index_interval_bytes: config.index_interval_bytes(),
            order: crate::format::header::OffsetOrder::of_log(config.compact()),
        }
    }

    /// Waits for durability as the flush policy requires, for an append
    /// that ended at `next_offset`.
    ///
    /// `flush.messages=N`, as Kafka's `UnifiedLog.append`: once the append
    /// is written, if the unflushed offsets (its end minus the recovery
    /// point) number N or more, an fsync covering the append runs (or the
    /// one in flight is waited for) before it is acknowledged. Otherwise
    /// fewer than N offsets below its end are unsynced, and the recovery
    /// point only grows (a truncation lowers it only together with the log
    /// end). So when an append returns, every offset below its end minus
    /// N − 1 is on disk. `flush.ms` is the scheduler's timer (`worker.rs`).
    pub(super) fn after_append(&self, next_offset: u64) -> Result<()> {
        let Some(every) = self.config().flush().messages() else {
            return Ok(());
        };
        let unflushed = next_offset.saturating_sub(self.durability.durable_offset());
        if unflushed >= every {
            self.sync_to(next_offset)
        } else {
            Ok(())
        }
    }
}
