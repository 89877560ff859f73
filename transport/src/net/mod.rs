//! Raw TCP between nodes, one core at a time: [`PeerSender`] (outbound, batching, reconnect
//! with backoff) and [`serve_peers`] (inbound read loops that verify every frame).
//!
//! Only [`seam`] names glommio. The rest is plain async code over `futures_lite` traits, which
//! the node can also use for its client port ([`FrameReader`], [`write_frame`],
//! [`accept_handshake`]).
//!
//! Addressing: each core of a node listens on its own peer address, and a sender dials the
//! core that owns the Region, so the Hello names `(to_node, to_core)` and the acceptor refuses
//! anything else.

pub mod framed;
pub mod listener;
pub mod peer;
pub mod seam;

use std::time::Duration;

use tessera_core::NodeId;

use crate::{ClusterId, CoreId, DecodeLimits, OutboundLimits};

pub use framed::{accept_handshake, dial_handshake, write_frame, FrameReader};
pub use listener::{serve_peers, RaftBatchHandler};
pub use peer::{PeerSender, PeerStats};
pub use seam::{bind, local_addr, TcpListener, TcpStream};

/// Everything a core's transport needs to know. One per core, shared by its connections.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    pub cluster_id: ClusterId,
    pub node_id: NodeId,
    pub core: CoreId,
    /// What inbound frames may contain.
    pub limits: DecodeLimits,
    /// Bounds of each destination's queue and of outbound frames.
    pub outbound: OutboundLimits,
    pub connect_timeout: Duration,
    /// Time allowed for the Hello exchange, both directions.
    pub handshake_timeout: Duration,
    pub reconnect_backoff_initial: Duration,
    pub reconnect_backoff_max: Duration,
    /// Bytes read from a socket at a time (memory per connection: this plus one frame).
    pub read_buffer_bytes: usize,
    /// Most inbound peer connections served at once by one listener.
    pub inbound_connections_max: usize,
    /// The nodes allowed to connect as peers; `None` accepts any node of the cluster. A node
    /// sets it to the cluster's stores, so that a process that knows the cluster id but is not
    /// a member is refused at the Hello and cannot disturb elections. Shared with the
    /// node, which adds the stores that join later.
    pub members: Option<Members>,
}

/// The nodes allowed to connect as peers, shared by one core's listener and its owner.
pub type Members = std::rc::Rc<std::cell::RefCell<Vec<NodeId>>>;

impl TransportConfig {
    /// Defaults for `node_id`'s core `core` in `cluster_id`.
    pub fn new(cluster_id: ClusterId, node_id: NodeId, core: CoreId) -> TransportConfig {
        TransportConfig {
            cluster_id,
            node_id,
            core,
            limits: DecodeLimits::default(),
            outbound: OutboundLimits::default(),
            connect_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(2),
            reconnect_backoff_initial: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(2),
            read_buffer_bytes: 64 << 10,
            inbound_connections_max: 256,
            members: None,
        }
    }
}
