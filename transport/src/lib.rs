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
//!
//! # A batch from encoding to delivery
//!
//! ```
//! use tessera_core::{LogIndex, Message, MessageBody, NodeId, RegionId, Term};
//! use tessera_transport::{
//!     decode_raft_batch, encode_frame, encode_raft_batch, ClusterId, CoreId, DecodeLimits,
//!     FrameDecoder, FrameType, RaftBatchHeader,
//! };
//!
//! // 1. The sender encodes everything its core has for node 2's core 1 into one frame.
//! let header = RaftBatchHeader {
//!     cluster_id: ClusterId(7),
//!     from_node: NodeId(1),
//!     from_core: CoreId(0),
//!     to_node: NodeId(2),
//!     to_core: CoreId(1),
//! };
//! let heartbeat = Message {
//!     from: NodeId(1),
//!     to: NodeId(2),
//!     term: Term(3),
//!     body: MessageBody::Heartbeat { commit: LogIndex(9), read_context: 0 },
//! };
//! let messages = vec![(RegionId(10), heartbeat.clone()), (RegionId(11), heartbeat)];
//! let wire = encode_frame(FrameType::RaftBatch, &encode_raft_batch(&header, &messages));
//!
//! // 2. The receiver feeds bytes as they arrive, in any chunks, and gets whole frames.
//! let limits = DecodeLimits::default();
//! let mut decoder = FrameDecoder::new(limits.frame_bytes_max);
//! let (first, rest) = wire.split_at(3);
//! decoder.push(first)?;
//! assert!(decoder.next_frame()?.is_none());
//! decoder.push(rest)?;
//! let frame = decoder.next_frame()?.expect("a whole frame");
//!
//! // 3. Verified and range-checked, it is core messages again.
//! assert_eq!(frame.frame_type, FrameType::RaftBatch);
//! let (got_header, got_messages) = decode_raft_batch(&frame.payload, &limits)?;
//! assert_eq!((got_header, got_messages), (header, messages));
//! # Ok::<(), tessera_transport::TransportError>(())
//! ```

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
pub mod snapshot_chunk;
mod verify;

pub use client::{
    ClientError, ClientOp, ClientReply, ClientRequest, ClientResponse, KeyValue, Mode, NodeStatus,
    PdStatus, RegionDescriptor, RegionEpoch, RegionReport, RegionStatus, StoreDescriptor,
    StoreReport, VersionedValue,
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
