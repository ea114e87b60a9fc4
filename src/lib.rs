//! logbus: Apache Kafka's design as an embeddable library.
//!
//! (Crate docs: see the quickstart below once the public API is complete.)
#![cfg_attr(docsrs, feature(doc_cfg))]

mod clock;
mod config;
mod error;
pub mod format;
mod log;
mod storage;
mod types;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{FlushPolicy, LogConfig, LogConfigBuilder};
pub use error::{CorruptionKind, Error, FormatError, Result};
pub use log::{
    AppendInfo, CheckpointRead, Log, LogBuilder, LogRead, OffsetCheckpoint, RecoveryReport,
    RetentionReport, TimestampOffset, TruncatedTail,
};
pub use storage::{DirLock, OpenMode, ReadMap, StdStorage, Storage, StorageFile, slice_bytes};
#[cfg(any(test, feature = "internals"))]
pub use storage::{FaultKind, FaultOp, FaultyStorage, Tear};
pub use types::{Compression, TimestampType};
