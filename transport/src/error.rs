//! The one error type of the transport crate.
//!
//! Decoding errors name the frame kind and the field that was wrong, so a log line says why a
//! connection was closed; none of them is ever a panic. I/O errors carry the operation and the
//! peer address.

use std::time::Duration;

use tessera_core::{NodeId, RegionId};

use crate::{ClusterId, CoreId};

/// Everything that can go wrong while framing, decoding, encoding or moving bytes.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A frame header announced more payload than the receiver accepts. Nothing was allocated.
    #[error("frame of {length_bytes} bytes exceeds frame_bytes_max of {max_bytes} bytes")]
    FrameTooLarge { length_bytes: u64, max_bytes: u32 },

    /// A frame header named a frame type this version does not know.
    #[error("unknown frame type {code}")]
    UnknownFrameType { code: u8 },

    /// A known frame type arrived where the protocol does not allow it.
    #[error("unexpected {got} frame, expected {expected}")]
    UnexpectedFrame {
        got: &'static str,
        expected: &'static str,
    },

    /// The stream ended inside a frame.
    #[error("connection closed inside a frame ({buffered_bytes} bytes buffered)")]
    TruncatedFrame { buffered_bytes: usize },

    /// The FrameDecoder holds more unread bytes than one maximal frame plus one read; the
    /// caller did not drain frames after pushing bytes.
    #[error("frame decoder backlog of {buffered_bytes} bytes exceeds {max_bytes} bytes")]
    DecoderBacklog {
        buffered_bytes: usize,
        max_bytes: usize,
    },

    /// The payload does not carry the schema's file identifier.
    #[error("{frame}: missing file identifier {expected:?}")]
    BadIdentifier {
        frame: &'static str,
        expected: &'static str,
    },

    /// The FlatBuffers verifier refused the payload (bounds, alignment, depth, size, UTF-8).
    #[error("{frame}: flatbuffer verification failed: {source}")]
    Verification {
        frame: &'static str,
        #[source]
        source: flatbuffers::InvalidFlatbuffer,
    },

    /// A verified payload has a field whose value is out of range.
    #[error("{frame}: invalid {field}: {reason}")]
    InvalidField {
        frame: &'static str,
        field: &'static str,
        reason: String,
    },

    /// A list in a verified payload is longer than the configured limit.
    #[error("{frame}: {field} has {count} items or bytes, limit {max}")]
    TooMany {
        frame: &'static str,
        field: &'static str,
        count: usize,
        max: usize,
    },

    /// The peer speaks a protocol version this build does not.
    #[error("unsupported protocol version {got}, this node speaks {supported}")]
    UnsupportedVersion { got: u16, supported: u16 },

    /// The peer belongs to (or expects) another cluster.
    #[error("cluster id mismatch: this node is in {ours}, the peer says {theirs}")]
    ClusterMismatch { ours: ClusterId, theirs: ClusterId },

    /// The peer is not the node (or core) this side expected.
    #[error("wrong peer: expected {expected}, got {got}")]
    WrongPeer { expected: String, got: String },

    /// The outbound queue towards a peer is at its bound; the message was not queued.
    #[error(
        "outbound queue to {to_node} core {to_core} is full \
         ({queued_messages} messages, {queued_bytes} bytes queued)"
    )]
    QueueFull {
        to_node: NodeId,
        to_core: CoreId,
        queued_messages: usize,
        queued_bytes: usize,
    },

    /// A single message is larger than a batch may ever be.
    #[error(
        "message for region {region_id} of {size_bytes} bytes exceeds batch_bytes_max {max_bytes}"
    )]
    MessageTooLarge {
        region_id: RegionId,
        size_bytes: usize,
        max_bytes: usize,
    },

    /// The connection task behind a sender has stopped.
    #[error("sender to {to_node} core {to_core} is closed")]
    Closed { to_node: NodeId, to_core: CoreId },

    /// An I/O operation on a socket failed.
    #[error("{op} {addr}: {source}")]
    Io {
        op: &'static str,
        addr: String,
        #[source]
        source: std::io::Error,
    },

    /// An operation on a socket took longer than its deadline.
    #[error("{op} {addr} timed out after {after:?}")]
    Timeout {
        op: &'static str,
        addr: String,
        after: Duration,
    },
}

impl TransportError {
    /// Shorthand for [`TransportError::InvalidField`].
    pub(crate) fn invalid(
        frame: &'static str,
        field: &'static str,
        reason: impl Into<String>,
    ) -> TransportError {
        TransportError::InvalidField {
            frame,
            field,
            reason: reason.into(),
        }
    }

    /// Fails with [`TransportError::TooMany`] when `count` exceeds `max`.
    pub(crate) fn check_count(
        frame: &'static str,
        field: &'static str,
        count: usize,
        max: usize,
    ) -> Result<(), TransportError> {
        if count > max {
            return Err(TransportError::TooMany {
                frame,
                field,
                count,
                max,
            });
        }
        Ok(())
    }
}
