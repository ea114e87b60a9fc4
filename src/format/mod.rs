//! L0: bytes only. Kafka's v2 record batch (magic 2): header, records,
//! varints, CRC-32C and compression codecs. No files, locks or threads.
//!
//! `docs/format.md` is the byte-level specification; the layout constants
//! re-exported here (`RECORDS_OFFSET`, ...) mirror it.
//!
//! - [`BatchBuilder`] encodes records into a batch.
//! - [`Batch`] is one batch whose structure and CRC are checked;
//!   [`Batch::records`] iterates over its [`Record`]s and
//!   [`Batch::validate_records`] checks them all without building them.
//! - [`Batches`] iterates over batches laid end to end.
//! - [`varint`] holds Kafka's zigzag varints.

mod batch;
mod builder;
mod compression;
// The transaction markers, the aborted-transaction index and producer
// snapshots: Kafka's layouts, which the idempotent producer and
// transactions build on.
pub(crate) mod control;
pub(crate) mod header;
pub(crate) mod producer_snapshot;
mod record;
pub(crate) mod txn_index;
mod validate;
pub mod varint;

pub use batch::{Batch, Batches, RecordData, RecordIter, RecordViews};
pub(crate) use batch::{bad_delta, decode_batch_at};
pub use builder::BatchBuilder;
pub use compression::MAX_DECOMPRESSED_SIZE;
pub(crate) use compression::compress;
pub use control::ControlRecordType;
pub use header::*;
pub use record::{Header, HeaderViews, Record, RecordView};
pub(crate) use record::{decode_headers, encode_record, parse_record, short_varint};
pub use validate::validate_batch_records;
