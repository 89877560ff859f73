//! The outbound side: one [`PeerSender`] per destination (node, core), owned by one core.
//!
//! ```text
//!            send() ──► OutboundQueue (bounded) ──ring──► connection task
//!                                                          │
//!   ┌──────────────► connect (timeout) ── handshake ──► write loop: take_batch → one frame
//!   │                    │ fails                           │ write fails
//!   └── sleep(backoff) ◄─┴─────────────────────────────────┘
//! ```
//!
//! Each wake-up takes everything queued (up to the batch bounds) into one `RaftBatch` frame,
//! so the messages a core produces in one loop turn leave in one write. Messages queued while
//! the peer is down wait within the queue's bounds; a batch whose write failed is dropped
//! (Raft resends). Dropping the `PeerSender` flushes what is queued if connected, then ends
//! the task.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;

use tessera_core::{Message, MessageBody, NodeId, RegionId};
use tracing::{debug, warn};

use crate::net::framed::{dial_handshake, write_frame, FrameReader};
use crate::net::seam::{self, DoorbellRing, DoorbellWait, TcpStream};
use crate::net::TransportConfig;
use crate::snapshot_chunk::{encode_snapshot_chunk, is_streamed};
use crate::{
    encode_raft_batch, Backoff, CoreId, FrameType, OutboundQueue, RaftBatchHeader, TransportError,
};

/// Counters of one outbound connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    pub batches_sent: u64,
    pub messages_sent: u64,
    /// Messages lost with a failed write or refused as too large after encoding.
    pub messages_dropped: u64,
    pub connects: u64,
    pub connect_failures: u64,
    /// `SnapshotChunk` frames written (large snapshots are streamed in chunks).
    pub snapshot_chunks_sent: u64,
}

struct PeerShared {
    queue: RefCell<OutboundQueue>,
    stats: Cell<PeerStats>,
    connected: Cell<bool>,
    closed: Cell<bool>,
}

impl PeerShared {
    fn update_stats(&self, change: impl FnOnce(&mut PeerStats)) {
        let mut stats = self.stats.get();
        change(&mut stats);
        self.stats.set(stats);
    }
}

/// Where a connection goes.
#[derive(Clone, Debug)]
struct Destination {
    node: NodeId,
    core: CoreId,
    addr: SocketAddr,
    label: String,
}

/// The handle a core keeps per destination. Must be created and used inside the glommio
/// executor of that core.
pub struct PeerSender {
    shared: Rc<PeerShared>,
    ring: DoorbellRing,
}

impl PeerSender {
    /// Starts the connection task towards core `to_core` of node `to_node` at `addr`.
    pub fn spawn(
        config: Rc<TransportConfig>,
        to_node: NodeId,
        to_core: CoreId,
        addr: SocketAddr,
    ) -> PeerSender {
        let shared = Rc::new(PeerShared {
            queue: RefCell::new(OutboundQueue::new(
                to_node,
                to_core,
                config.outbound.clone(),
            )),
            stats: Cell::new(PeerStats::default()),
            connected: Cell::new(false),
            closed: Cell::new(false),
        });
        let (ring, wait) = seam::doorbell();
        let destination = Destination {
            node: to_node,
            core: to_core,
            addr,
            label: format!("{to_node} {to_core} at {addr}"),
        };
        seam::spawn(run_connection(shared.clone(), wait, config, destination));
        PeerSender { shared, ring }
    }

    /// Queues one message; it leaves in the next batch.
    ///
    /// # Errors
    /// [`TransportError::QueueFull`] or [`TransportError::MessageTooLarge`]; the message is
    /// not queued (Raft will resend what matters).
    pub fn send(&self, region_id: RegionId, message: Message) -> Result<(), TransportError> {
        self.shared.queue.borrow_mut().push(region_id, message)?;
        self.ring.ring();
        Ok(())
    }

    /// True while a connection is established and handshaken.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.get()
    }

    /// Messages waiting.
    pub fn queued_messages(&self) -> usize {
        self.shared.queue.borrow().len()
    }

    /// Counters so far.
    pub fn stats(&self) -> PeerStats {
        self.shared.stats.get()
    }
}

impl Drop for PeerSender {
    fn drop(&mut self) {
        self.shared.closed.set(true);
    }
}

async fn run_connection(
    shared: Rc<PeerShared>,
    wait: DoorbellWait,
    config: Rc<TransportConfig>,
    destination: Destination,
) {
    let mut backoff = Backoff::new(
        config.reconnect_backoff_initial,
        config.reconnect_backoff_max,
    );
    loop {
        match connect(&config, &destination).await {
            Ok(stream) => {
                backoff.reset();
                shared.connected.set(true);
                shared.update_stats(|s| s.connects += 1);
                debug!(peer = %destination.label, "connected");
                let outcome = write_loop(&shared, &wait, stream, &config, &destination).await;
                shared.connected.set(false);
                match outcome {
                    Ok(()) => return,
                    Err(err) => warn!(peer = %destination.label, reason = %err, "connection lost"),
                }
            }
            Err(err) => {
                shared.update_stats(|s| s.connect_failures += 1);
                warn!(peer = %destination.label, reason = %err, "connect failed");
            }
        }
        if shared.closed.get() {
            return;
        }
        seam::sleep(backoff.next_delay()).await;
    }
}

async fn connect(
    config: &TransportConfig,
    destination: &Destination,
) -> Result<TcpStream, TransportError> {
    let stream = seam::connect(destination.addr, config.connect_timeout).await?;
    let mut reader = FrameReader::new(
        stream,
        config.limits.frame_bytes_max,
        config.read_buffer_bytes,
        destination.label.clone(),
    );
    let handshake = dial_handshake(&mut reader, config, destination.node, destination.core);
    seam::with_timeout(
        config.handshake_timeout,
        "handshake",
        &destination.label,
        handshake,
    )
    .await?;
    Ok(reader.into_stream())
}

/// A snapshot being streamed as chunks, and how much of it has been written.
struct SnapshotStream {
    region_id: RegionId,
    message: Message,
    offset: usize,
}

/// Sends batches until the sender is dropped and the queue drained (`Ok`) or a write fails.
///
/// Snapshots larger than `snapshot_chunk_bytes` are taken out of their batch and written one
/// chunk per turn, after that turn's batch, so other messages are never stuck behind them.
async fn write_loop(
    shared: &PeerShared,
    wait: &DoorbellWait,
    mut stream: TcpStream,
    config: &TransportConfig,
    destination: &Destination,
) -> Result<(), TransportError> {
    let header = RaftBatchHeader {
        cluster_id: config.cluster_id,
        from_node: config.node_id,
        from_core: config.core,
        to_node: destination.node,
        to_core: destination.core,
    };
    let chunk_bytes = config.outbound.snapshot_chunk_bytes;
    let mut snapshots: VecDeque<SnapshotStream> = VecDeque::new();
    loop {
        let mut batch = shared.queue.borrow_mut().take_batch();
        for (region_id, message) in batch.extract_if(.., |(_, m)| is_streamed(m, chunk_bytes)) {
            if snapshot_len(&message) as u64 > config.limits.snapshot_bytes_max {
                warn!(peer = %destination.label, %region_id, bytes = snapshot_len(&message), "snapshot exceeds snapshot_bytes_max; dropped");
                shared.update_stats(|s| s.messages_dropped += 1);
                continue;
            }
            snapshots.push_back(SnapshotStream {
                region_id,
                message,
                offset: 0,
            });
        }
        if batch.is_empty() && snapshots.is_empty() {
            if shared.closed.get() || !wait.wait().await {
                return Ok(());
            }
            continue;
        }
        if !batch.is_empty() {
            write_batch(shared, &mut stream, config, destination, &header, &batch).await?;
        }
        if let Some(snapshot) = snapshots.front_mut() {
            write_chunk(
                shared,
                &mut stream,
                destination,
                &header,
                snapshot,
                chunk_bytes,
            )
            .await?;
            if snapshot.offset == snapshot_len(&snapshot.message) {
                snapshots.pop_front();
            }
        }
    }
}

fn snapshot_len(message: &Message) -> usize {
    match &message.body {
        MessageBody::InstallSnapshot { snapshot } => snapshot.data.len(),
        _ => 0,
    }
}

async fn write_batch(
    shared: &PeerShared,
    stream: &mut TcpStream,
    config: &TransportConfig,
    destination: &Destination,
    header: &RaftBatchHeader,
    batch: &[(RegionId, Message)],
) -> Result<(), TransportError> {
    let count = batch.len() as u64;
    let payload = encode_raft_batch(header, batch);
    if payload.len() > config.limits.frame_bytes_max as usize {
        warn!(peer = %destination.label, bytes = payload.len(), "batch exceeds frame_bytes_max; dropped");
        shared.update_stats(|s| s.messages_dropped += count);
        return Ok(());
    }
    let written = write_frame(stream, FrameType::RaftBatch, &payload, &destination.label).await;
    if let Err(err) = written {
        shared.update_stats(|s| s.messages_dropped += count);
        return Err(err);
    }
    tracing::debug!(target: "tessera::latency", to = destination.node.0, messages = count, bytes = payload.len(), "frame_out");
    shared.update_stats(|s| {
        s.batches_sent += 1;
        s.messages_sent += count;
    });
    Ok(())
}

/// Writes the next chunk of `snapshot`; the message counts as sent with its last chunk.
async fn write_chunk(
    shared: &PeerShared,
    stream: &mut TcpStream,
    destination: &Destination,
    header: &RaftBatchHeader,
    snapshot: &mut SnapshotStream,
    chunk_bytes: usize,
) -> Result<(), TransportError> {
    let MessageBody::InstallSnapshot { snapshot: data } = &snapshot.message.body else {
        unreachable!("only snapshots are streamed");
    };
    let end = (snapshot.offset + chunk_bytes).min(data.data.len());
    let payload = encode_snapshot_chunk(
        header,
        snapshot.region_id,
        snapshot.message.term,
        data,
        snapshot.offset..end,
    );
    let written = write_frame(
        stream,
        FrameType::SnapshotChunk,
        &payload,
        &destination.label,
    )
    .await;
    if let Err(err) = written {
        shared.update_stats(|s| s.messages_dropped += 1);
        return Err(err);
    }
    snapshot.offset = end;
    if end == data.data.len() {
        shared.update_stats(|s| s.messages_sent += 1);
    }
    shared.update_stats(|s| s.snapshot_chunks_sent += 1);
    Ok(())
}
