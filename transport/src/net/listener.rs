//! The inbound side: a listener per core whose connections each run a read loop.
//!
//! Each connection must open with a Hello from a peer of this cluster addressed to this node
//! and core (within `handshake_timeout`); then every frame must be a `RaftBatch` or a
//! `SnapshotChunk` whose header matches that Hello (chunks are reassembled per connection, see
//! [`crate::snapshot_chunk`]). Any framing, verification or semantic error closes that connection with
//! a logged reason; the listener and the other connections carry on. At most
//! `inbound_connections_max` connections are served at once; more are closed on accept.

use std::cell::Cell;
use std::rc::Rc;

use tessera_core::{Message, RegionId};
use tracing::{debug, warn};

use crate::net::framed::{accept_handshake, FrameReader};
use crate::net::seam::{self, TcpListener, TcpStream};
use crate::net::TransportConfig;
use crate::snapshot_chunk::{decode_snapshot_chunk, SnapshotAssembler};
use crate::{decode_raft_batch, FrameType, Hello, HelloRole, RaftBatchHeader, TransportError};

/// Receives every verified batch. It runs on the listener's core, synchronously inside the
/// read loop: it should only queue the messages (in a bounded inbox) and return.
pub type RaftBatchHandler = Rc<dyn Fn(RaftBatchHeader, Vec<(RegionId, Message)>)>;

/// Accepts peer connections forever, spawning a read loop per connection on this core.
///
/// # Errors
/// Never returns on its own; an accept error is logged and retried after
/// `reconnect_backoff_initial`, so a full file table does not spin the core.
pub async fn serve_peers(
    listener: TcpListener,
    config: Rc<TransportConfig>,
    handler: RaftBatchHandler,
) {
    let active = Rc::new(Cell::new(0usize));
    loop {
        let (stream, peer) = match seam::accept(&listener).await {
            Ok(accepted) => accepted,
            Err(err) => {
                warn!(reason = %err, "accept failed");
                seam::sleep(config.reconnect_backoff_initial).await;
                continue;
            }
        };
        if active.get() >= config.inbound_connections_max {
            warn!(%peer, limit = config.inbound_connections_max, "too many inbound connections; closing");
            continue;
        }
        active.set(active.get() + 1);
        let (config, handler, active) = (config.clone(), handler.clone(), active.clone());
        seam::spawn(async move {
            match read_peer(stream, &config, &handler, peer.clone()).await {
                Ok(()) => debug!(%peer, "peer closed the connection"),
                Err(err) => warn!(%peer, reason = %err, "closing peer connection"),
            }
            active.set(active.get() - 1);
        });
    }
}

async fn read_peer(
    stream: TcpStream,
    config: &TransportConfig,
    handler: &RaftBatchHandler,
    peer: String,
) -> Result<(), TransportError> {
    let mut reader = FrameReader::new(
        stream,
        config.limits.frame_bytes_max,
        config.read_buffer_bytes,
        peer.clone(),
    );
    let handshake = accept_handshake(&mut reader, config);
    let hello = seam::with_timeout(config.handshake_timeout, "handshake", &peer, handshake).await?;
    if hello.role != HelloRole::Peer {
        return Err(TransportError::invalid(
            "Hello",
            "role",
            "a client on the peer port",
        ));
    }
    let mut snapshots = SnapshotAssembler::default();
    while let Some(frame) = reader.next_frame().await? {
        match frame.frame_type {
            FrameType::RaftBatch => {
                let (header, messages) = decode_raft_batch(&frame.payload, &config.limits)?;
                check_header(&header, &hello, config)?;
                tracing::debug!(target: "tessera::latency", from = header.from_node.0, messages = messages.len(), bytes = frame.payload.len(), "frame_in");
                handler(header, messages);
            }
            FrameType::SnapshotChunk => {
                let chunk = decode_snapshot_chunk(&frame.payload, &config.limits)?;
                check_header(&chunk.header, &hello, config)?;
                let header = chunk.header;
                if let Some(message) = snapshots.push(chunk)? {
                    handler(header, vec![message]);
                }
            }
            other => {
                return Err(TransportError::UnexpectedFrame {
                    got: other.name(),
                    expected: "RaftBatch or SnapshotChunk",
                })
            }
        }
    }
    Ok(())
}

/// A batch must come from the node that said Hello and go to this node and core.
fn check_header(
    header: &RaftBatchHeader,
    hello: &Hello,
    config: &TransportConfig,
) -> Result<(), TransportError> {
    let expected = (hello.cluster_id, hello.node_id, config.node_id, config.core);
    let got = (
        header.cluster_id,
        header.from_node,
        header.to_node,
        header.to_core,
    );
    if got != expected {
        return Err(TransportError::WrongPeer {
            expected: format!("{expected:?}"),
            got: format!("{got:?}"),
        });
    }
    Ok(())
}
