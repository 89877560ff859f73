//! Frames over any async byte stream, and the handshake both ends run first.
//!
//! [`FrameReader`] couples a stream with a [`FrameDecoder`] and a read buffer of a fixed
//! size, so the memory of a connection is bounded by one maximal frame plus one read.

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tessera_core::NodeId;

use crate::net::TransportConfig;
use crate::{
    decode_hello, encode_frame, encode_hello, CoreId, Frame, FrameDecoder, FrameType, Hello,
    HelloRole, TransportError, PROTOCOL_VERSION,
};

/// Largest Hello payload accepted; a real one is under 100 bytes.
const HELLO_BYTES_MAX: usize = 1024;

/// Reads whole frames from a stream.
pub struct FrameReader<S> {
    stream: S,
    decoder: FrameDecoder,
    buffer: Vec<u8>,
    peer: String,
}

impl<S: AsyncRead + Unpin> FrameReader<S> {
    /// A reader accepting frames up to `frame_bytes_max`, reading `read_buffer_bytes` at a
    /// time; `peer` names the other end in errors.
    pub fn new(stream: S, frame_bytes_max: u32, read_buffer_bytes: usize, peer: String) -> Self {
        FrameReader {
            stream,
            decoder: FrameDecoder::new(frame_bytes_max),
            buffer: vec![0; read_buffer_bytes.max(64)],
            peer,
        }
    }

    /// The next frame, or `None` when the peer closed the stream between frames.
    ///
    /// # Errors
    /// Framing errors, [`TransportError::TruncatedFrame`] when the stream ends inside a frame,
    /// and [`TransportError::Io`].
    pub async fn next_frame(&mut self) -> Result<Option<Frame>, TransportError> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(Some(frame));
            }
            let read =
                self.stream
                    .read(&mut self.buffer)
                    .await
                    .map_err(|source| TransportError::Io {
                        op: "read",
                        addr: self.peer.clone(),
                        source,
                    })?;
            if read == 0 {
                self.decoder.finish()?;
                return Ok(None);
            }
            self.decoder.push(&self.buffer[..read])?;
        }
    }

    /// The other end's address, for logs.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The stream, e.g. to write answers on it.
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// The stream back. Bytes already read but not yet returned as frames are lost, so call
    /// it only where the peer sends nothing more (the dialer, after the handshake).
    pub fn into_stream(self) -> S {
        self.stream
    }
}

/// Writes one frame and flushes.
///
/// # Errors
/// [`TransportError::Io`] naming `peer`.
pub async fn write_frame<S: AsyncWrite + Unpin>(
    stream: &mut S,
    frame_type: FrameType,
    payload: &[u8],
    peer: &str,
) -> Result<(), TransportError> {
    let frame = encode_frame(frame_type, payload);
    let io = |source| TransportError::Io {
        op: "write",
        addr: peer.to_owned(),
        source,
    };
    stream.write_all(&frame).await.map_err(io)?;
    stream.flush().await.map_err(io)
}

/// This node's Hello, addressed to `(to_node, to_core)` (`NodeId(0)` when answering).
pub(crate) fn own_hello(config: &TransportConfig, to_node: NodeId, to_core: CoreId) -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        cluster_id: config.cluster_id,
        role: HelloRole::Peer,
        node_id: config.node_id,
        core: config.core,
        to_node,
        to_core,
    }
}

/// Reads the first frame, which must be a Hello for this cluster, node and core, and answers
/// with this node's Hello. Returns the peer's Hello: the caller checks its role.
///
/// # Errors
/// Framing and decoding errors, [`TransportError::UnexpectedFrame`],
/// [`TransportError::ClusterMismatch`], [`TransportError::WrongPeer`], I/O errors.
pub async fn accept_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    reader: &mut FrameReader<S>,
    config: &TransportConfig,
) -> Result<Hello, TransportError> {
    let frame = reader
        .next_frame()
        .await?
        .ok_or(TransportError::TruncatedFrame { buffered_bytes: 0 })?;
    let hello = decode_first_hello(&frame, config)?;
    hello.check_addressed_to(config.cluster_id, config.node_id, config.core)?;
    if let Some(members) = &config.members {
        let members = members.borrow();
        if hello.role == HelloRole::Peer && !members.contains(&hello.node_id) {
            return Err(TransportError::WrongPeer {
                expected: format!("a member of the cluster (nodes {members:?})"),
                got: format!("{}", hello.node_id),
            });
        }
    }
    let answer = encode_hello(&own_hello(config, NodeId(0), CoreId(0)));
    let peer = reader.peer().to_owned();
    write_frame(reader.stream_mut(), FrameType::Hello, &answer, &peer).await?;
    Ok(hello)
}

/// Sends this node's Hello to `(to_node, to_core)` and checks the answer comes from there.
///
/// # Errors
/// As [`accept_handshake`].
pub async fn dial_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    reader: &mut FrameReader<S>,
    config: &TransportConfig,
    to_node: NodeId,
    to_core: CoreId,
) -> Result<(), TransportError> {
    let hello = encode_hello(&own_hello(config, to_node, to_core));
    let peer = reader.peer().to_owned();
    write_frame(reader.stream_mut(), FrameType::Hello, &hello, &peer).await?;
    let frame = reader
        .next_frame()
        .await?
        .ok_or(TransportError::TruncatedFrame { buffered_bytes: 0 })?;
    let answer = decode_first_hello(&frame, config)?;
    answer.check_addressed_to(config.cluster_id, NodeId(0), CoreId(0))?;
    if (answer.node_id, answer.core) != (to_node, to_core) {
        return Err(TransportError::WrongPeer {
            expected: format!("{to_node} {to_core}"),
            got: format!("{} {}", answer.node_id, answer.core),
        });
    }
    Ok(())
}

fn decode_first_hello(frame: &Frame, config: &TransportConfig) -> Result<Hello, TransportError> {
    if frame.frame_type != FrameType::Hello {
        return Err(TransportError::UnexpectedFrame {
            got: frame.frame_type.name(),
            expected: "Hello",
        });
    }
    TransportError::check_count("Hello", "payload", frame.payload.len(), HELLO_BYTES_MAX)?;
    decode_hello(&frame.payload, &config.limits)
}
