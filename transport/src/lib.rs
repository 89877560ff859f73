//! `tessera-transport`: Tessera's wire format and raw TCP transport.
//!
//! - [`frame`]: length-prefixed frames and the sans-I/O [`FrameDecoder`].
//! - [`handshake`]: the [`Hello`] each side sends first (cluster id check).
//! - [`raft_codec`]: one [`RaftBatch`](raft_codec::RaftBatchHeader) frame carries many
//!   Regions' messages, converted to and from `tessera_core::Message`.
//! - [`client`], [`client_request_codec`] and [`client_response_codec`]: the client protocol as plain Rust enums.
//! - [`net`]: the glommio seam: per-peer outbound connections with batching and reconnect
//!   backoff, and a listener whose read loops verify every frame.
//!
//! Every decoder runs the FlatBuffers verifier with the configured [`DecodeLimits`] and then
//! checks semantic ranges, returning a [`TransportError`], never panicking, on any input.
//! The byte layout is documented in `docs/protocol.md`.

pub mod client;
pub mod client_request_codec;
pub mod client_response_codec;
pub mod error;
pub mod frame;
pub mod generated;
pub mod handshake;
pub mod ids;
pub mod limits;
pub mod net;
pub mod outbound;
pub mod raft_codec;
mod verify;

pub use client::{
    ClientError, ClientOp, ClientReply, ClientRequest, ClientResponse, KeyValue, Mode, NodeStatus,
    RegionDescriptor, RegionEpoch, RegionStatus, StoreDescriptor, VersionedValue,
};
pub use client_request_codec::{decode_client_request, encode_client_request};
pub use client_response_codec::{decode_client_response, encode_client_response};
pub use error::TransportError;
pub use frame::{encode_frame, Frame, FrameDecoder, FrameType, FRAME_HEADER_BYTES};
pub use handshake::{decode_hello, encode_hello, Hello, HelloRole, PROTOCOL_VERSION};
pub use ids::{ClusterId, CoreId};
pub use limits::DecodeLimits;
pub use outbound::{Backoff, OutboundLimits, OutboundQueue};
pub use raft_codec::{decode_raft_batch, encode_raft_batch, RaftBatchHeader};
