//! The transaction coordinator's APIs: InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn and
//! TxnOffsetCommit.

use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};

use super::RequestContext;

/// The versions of each API this module answers, as (API, lowest, highest).
pub(super) const VERSIONS: &[(ApiKey, i16, i16)] = &[];

/// Answers `request`, a request of one of the APIs in [`VERSIONS`] (at a
/// version in its range); `None` for any other request.
pub(super) fn handle(ctx: &RequestContext<'_>, request: RequestKind) -> Option<ResponseKind> {
    let _ = (ctx, request);
    None
}
