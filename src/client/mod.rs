//! L5: the public clients (producer, consumer) and what they share.

pub(crate) mod assignor;
pub(crate) mod consumer;
pub(crate) mod partitioner;
pub(crate) mod producer;
