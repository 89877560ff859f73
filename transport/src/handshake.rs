//! The handshake: the first frame each side sends on a connection.
//!
//! ```text
//!  dialer                                 acceptor
//!    | -- Hello{cluster, me, to_node, to_core} --> |  checks cluster, to_node, to_core
//!    | <-- Hello{cluster, acceptor node, core} --- |  (or closes the connection)
//!    | -- RaftBatch / ClientRequest frames ------> |
//! ```
//!
//! A node refuses a peer from another cluster or one that addresses another node, so a
//! misconfigured address never delivers Raft messages into the wrong group.

use tessera_core::NodeId;

use crate::generated::handshake as fb;
use crate::verify::verified_root;
use crate::{ClusterId, CoreId, DecodeLimits, TransportError};

/// The protocol version this build speaks (bump on incompatible schema changes).
pub const PROTOCOL_VERSION: u16 = 1;

const FRAME: &str = "Hello";
const IDENTIFIER: &str = "TSHK";

/// Who opened a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HelloRole {
    /// Another node, sending Raft batches.
    Peer,
    /// A client, sending requests.
    Client,
}

/// A decoded handshake.
///
/// Invariants after decoding: `cluster_id` is not 0; a peer's `node_id` is not 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub protocol_version: u16,
    pub cluster_id: ClusterId,
    pub role: HelloRole,
    /// The sender; `NodeId(0)` for a client.
    pub node_id: NodeId,
    pub core: CoreId,
    /// The node the sender wants to reach; `NodeId(0)` when it does not know (a client).
    pub to_node: NodeId,
    pub to_core: CoreId,
}

/// Encodes a handshake payload (frame type [`crate::FrameType::Hello`]).
pub fn encode_hello(hello: &Hello) -> Vec<u8> {
    let mut fbb = flatbuffers::FlatBufferBuilder::with_capacity(128);
    let role = match hello.role {
        HelloRole::Peer => fb::Role::Peer,
        HelloRole::Client => fb::Role::Client,
    };
    let root = fb::Hello::create(
        &mut fbb,
        &fb::HelloArgs {
            protocol_version: hello.protocol_version,
            cluster_id: hello.cluster_id.get(),
            role,
            node_id: hello.node_id.get(),
            core: hello.core.get(),
            to_node: hello.to_node.get(),
            to_core: hello.to_core.get(),
        },
    );
    fbb.finish(root, Some(IDENTIFIER));
    fbb.finished_data().to_vec()
}

/// Verifies and decodes a handshake payload.
///
/// # Errors
/// Verification errors; [`TransportError::UnsupportedVersion`]; [`TransportError::InvalidField`]
/// for cluster id 0, an unknown role, or a peer with node id 0.
pub fn decode_hello(payload: &[u8], limits: &DecodeLimits) -> Result<Hello, TransportError> {
    let root = verified_root::<fb::Hello>(FRAME, IDENTIFIER, payload, limits)?;
    if root.protocol_version() != PROTOCOL_VERSION {
        return Err(TransportError::UnsupportedVersion {
            got: root.protocol_version(),
            supported: PROTOCOL_VERSION,
        });
    }
    if root.cluster_id() == 0 {
        return Err(TransportError::invalid(
            FRAME,
            "cluster_id",
            "cluster id 0 is reserved",
        ));
    }
    let role = match root.role() {
        fb::Role::Peer => HelloRole::Peer,
        fb::Role::Client => HelloRole::Client,
        other => {
            return Err(TransportError::invalid(
                FRAME,
                "role",
                format!("unknown role {}", other.0),
            ))
        }
    };
    if role == HelloRole::Peer && root.node_id() == 0 {
        return Err(TransportError::invalid(
            FRAME,
            "node_id",
            "a peer must name its node",
        ));
    }
    Ok(Hello {
        protocol_version: root.protocol_version(),
        cluster_id: ClusterId(root.cluster_id()),
        role,
        node_id: NodeId(root.node_id()),
        core: CoreId(root.core()),
        to_node: NodeId(root.to_node()),
        to_core: CoreId(root.to_core()),
    })
}

impl Hello {
    /// Checks a received Hello against this node: same cluster and, when the sender named a
    /// destination, this node and core.
    ///
    /// # Errors
    /// [`TransportError::ClusterMismatch`] or [`TransportError::WrongPeer`].
    pub fn check_addressed_to(
        &self,
        cluster_id: ClusterId,
        node_id: NodeId,
        core: CoreId,
    ) -> Result<(), TransportError> {
        if self.cluster_id != cluster_id {
            return Err(TransportError::ClusterMismatch {
                ours: cluster_id,
                theirs: self.cluster_id,
            });
        }
        if self.to_node.get() != 0 && (self.to_node, self.to_core) != (node_id, core) {
            return Err(TransportError::WrongPeer {
                expected: format!("{node_id} {core}"),
                got: format!("{} {}", self.to_node, self.to_core),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer_hello() -> Hello {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            cluster_id: ClusterId(7),
            role: HelloRole::Peer,
            node_id: NodeId(1),
            core: CoreId(0),
            to_node: NodeId(2),
            to_core: CoreId(3),
        }
    }

    #[test]
    fn hello_round_trips() {
        let hello = peer_hello();
        let limits = DecodeLimits::default();
        assert_eq!(decode_hello(&encode_hello(&hello), &limits).unwrap(), hello);
    }

    #[test]
    fn hello_from_another_cluster_or_for_another_node_is_refused() {
        let hello = peer_hello();
        assert!(hello
            .check_addressed_to(ClusterId(7), NodeId(2), CoreId(3))
            .is_ok());
        assert!(matches!(
            hello.check_addressed_to(ClusterId(8), NodeId(2), CoreId(3)),
            Err(TransportError::ClusterMismatch { .. })
        ));
        assert!(matches!(
            hello.check_addressed_to(ClusterId(7), NodeId(2), CoreId(0)),
            Err(TransportError::WrongPeer { .. })
        ));
    }

    #[test]
    fn hello_with_reserved_values_is_refused() {
        let limits = DecodeLimits::default();
        let mut hello = peer_hello();
        hello.cluster_id = ClusterId(0);
        assert!(decode_hello(&encode_hello(&hello), &limits).is_err());
        let mut hello = peer_hello();
        hello.node_id = NodeId(0);
        assert!(decode_hello(&encode_hello(&hello), &limits).is_err());
        let mut hello = peer_hello();
        hello.protocol_version = 9;
        assert!(matches!(
            decode_hello(&encode_hello(&hello), &limits),
            Err(TransportError::UnsupportedVersion { got: 9, .. })
        ));
    }
}
