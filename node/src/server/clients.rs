//! The client port of one core: accepts connections, reads and verifies request frames,
//! hands them to the core loop, and writes the answers back.
//!
//! A connection carries `ClientRequest` frames one way and `ClientResponse` frames the other
//! (docs/protocol.md). A frame that fails verification closes that connection with a logged
//! reason; the core keeps serving everyone else.

use std::cell::Cell;
use std::rc::Rc;

use futures_lite::AsyncWriteExt;
use glommio::channels::local_channel::{self, LocalSender};
use tessera_transport::client::{
    ClientError, ClientOp, ClientReply, ClientRequest, ClientResponse, KeyValue, Mode as WireMode,
    RegionEpoch as WireEpoch, VersionedValue,
};
use tessera_transport::net::{FrameReader, TcpListener, TcpStream};
use tessera_transport::{
    decode_client_request, encode_client_response, encode_frame, DecodeLimits, FrameType,
};

use crate::region::RegionEpoch;
use crate::request::{KvError, KvOp, KvReply, KvRequest, KvResult, Mode};

use super::core::{Event, Inbox};

/// Answers waiting to be written to one connection, at most this many.
const CONNECTION_ANSWERS_MAX: usize = 4096;
/// Client connections one core serves at once.
const CONNECTIONS_MAX: usize = 4096;
/// Answers queued for one connection are gathered into one write up to this many bytes.
const ANSWER_WRITE_BYTES_MAX: usize = 64 << 10;

/// Where an answer goes: the connection's writer queue and the request's id.
#[derive(Clone)]
pub struct ReplyTo {
    pub answers: Rc<LocalSender<Vec<u8>>>,
    pub request_id: u64,
}

impl ReplyTo {
    /// Encodes and queues an answer; dropped (and logged) if the client stopped reading.
    pub fn send(&self, result: Result<ClientReply, ClientError>) {
        self.send_frame(encode_response(self.request_id, result));
    }

    /// Queues an encoded answer frame.
    pub fn send_frame(&self, frame: Vec<u8>) {
        tracing::debug!(target: crate::latency::TARGET, request_id = self.request_id, "answer_queued");
        if self.answers.try_send(frame).is_err() {
            tracing::warn!(
                request_id = self.request_id,
                "client answer queue full or closed; dropping the answer"
            );
        }
    }
}

/// The response frame for `request_id`.
pub fn encode_response(request_id: u64, result: Result<ClientReply, ClientError>) -> Vec<u8> {
    let response = ClientResponse { request_id, result };
    encode_frame(
        FrameType::ClientResponse,
        &encode_client_response(&response),
    )
}

/// Accepts client connections forever.
pub async fn serve_clients(listener: TcpListener, inbox: Inbox, limits: Rc<DecodeLimits>) {
    let active = Rc::new(Cell::new(0usize));
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "client accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if active.get() >= CONNECTIONS_MAX {
            tracing::warn!(
                limit = CONNECTIONS_MAX,
                "too many client connections; closing a new one"
            );
            continue;
        }
        let _ = stream.set_nodelay(true);
        active.set(active.get() + 1);
        let (inbox, limits, active) = (inbox.clone(), limits.clone(), active.clone());
        glommio::spawn_local(async move {
            serve_connection(stream, inbox, limits).await;
            active.set(active.get() - 1);
        })
        .detach();
    }
}

async fn serve_connection(stream: TcpStream, inbox: Inbox, limits: Rc<DecodeLimits>) {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "unknown".to_string(), |a| a.to_string());
    let (answers, pending) = local_channel::new_bounded::<Vec<u8>>(CONNECTION_ANSWERS_MAX);
    let answers = Rc::new(answers);
    let mut reader = FrameReader::new(stream, limits.frame_bytes_max, 64 << 10, peer.clone());
    let writer_stream = reader.stream_mut().clone_for_writing();
    let writer = glommio::spawn_local(write_answers(writer_stream, pending, peer.clone()));
    loop {
        let frame = match reader.next_frame().await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(error) => {
                tracing::warn!(%peer, %error, "closing client connection");
                break;
            }
        };
        if frame.frame_type != FrameType::ClientRequest {
            tracing::warn!(%peer, frame = frame.frame_type.name(), "closing client connection: unexpected frame type");
            break;
        }
        let request = match decode_client_request(&frame.payload, &limits) {
            Ok(request) => request,
            Err(error) => {
                tracing::warn!(%peer, %error, "closing client connection: bad request frame");
                break;
            }
        };
        tracing::debug!(target: crate::latency::TARGET, request_id = request.request_id, "client_in");
        let reply_to = ReplyTo {
            answers: answers.clone(),
            request_id: request.request_id,
        };
        if inbox
            .try_send(Event::Client {
                reply_to: reply_to.clone(),
                request,
            })
            .is_err()
        {
            reply_to.send(Err(ClientError::ServerBusy));
        }
    }
    drop(answers);
    writer.await;
}

async fn write_answers(
    mut stream: WriteHalf,
    pending: local_channel::LocalReceiver<Vec<u8>>,
    peer: String,
) {
    while let Some(mut buffer) = pending.recv().await {
        // The answers of one round go out in one write (one send system call per connection
        // and round instead of one per answer).
        while buffer.len() < ANSWER_WRITE_BYTES_MAX {
            match futures_lite::future::poll_once(pending.recv()).await {
                Some(Some(frame)) => buffer.extend_from_slice(&frame),
                _ => break,
            }
        }
        if let Err(error) = stream.write_all(&buffer).await {
            tracing::debug!(%peer, %error, "client went away");
            return;
        }
        tracing::debug!(target: crate::latency::TARGET, bytes = buffer.len(), "client_out");
    }
}

/// The writing side of a client connection.
pub type WriteHalf = glommio::net::TcpStream;

/// Duplicating a glommio stream for a separate writer task.
trait CloneForWriting {
    fn clone_for_writing(&self) -> WriteHalf;
}

impl CloneForWriting for TcpStream {
    fn clone_for_writing(&self) -> WriteHalf {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: dup gives the writer its own descriptor for the same socket, so each task
        // owns (and closes) one descriptor; reads and writes on a TCP socket are independent.
        unsafe {
            let fd = libc::dup(self.as_raw_fd());
            assert!(fd >= 0, "dup of a client socket failed");
            WriteHalf::from_raw_fd(fd)
        }
    }
}

/// The Store's view of a key-value request.
///
/// # Errors
/// `InvalidRequest` for operations that do not address a Region.
pub fn to_kv_request(request: &ClientRequest) -> Result<KvRequest, ClientError> {
    let op = match &request.op {
        ClientOp::Put { key, value } => KvOp::Put {
            key: key.clone(),
            value: value.clone(),
        },
        ClientOp::Get { key } => KvOp::Get { key: key.clone() },
        ClientOp::Delete { key } => KvOp::Delete { key: key.clone() },
        ClientOp::Scan { start, end, limit } => KvOp::Scan {
            start: start.clone(),
            end: end.clone(),
            limit: *limit,
        },
        ClientOp::ScanPrefix { prefix, limit } => KvOp::ScanPrefix {
            prefix: prefix.clone(),
            limit: *limit,
        },
        ClientOp::Cas {
            key,
            expected_version,
            value,
        } => KvOp::Cas {
            key: key.clone(),
            expected_version: *expected_version,
            value: value.clone(),
        },
        ClientOp::CasDelete {
            key,
            expected_version,
        } => KvOp::CasDelete {
            key: key.clone(),
            expected_version: *expected_version,
        },
        ClientOp::Split { key, new_region_id } => KvOp::Split {
            key: key.clone(),
            new_region: *new_region_id,
        },
        ClientOp::MoveStep { from, to } => KvOp::MoveStep {
            from: *from,
            to: *to,
        },
        ClientOp::DestroyReplica => KvOp::DestroyReplica,
        ClientOp::Regions
        | ClientOp::Status
        | ClientOp::Join { .. }
        | ClientOp::StoreHeartbeat { .. }
        | ClientOp::AskSplit
        | ClientOp::PdStatus
        | ClientOp::MoveRegion { .. }
        | ClientOp::CancelMove
        | ClientOp::LearnStores { .. } => {
            return Err(ClientError::InvalidRequest {
                message: "not a key-value operation".into(),
            })
        }
    };
    Ok(KvRequest {
        namespace: request.namespace.clone(),
        mode: match request.mode {
            WireMode::Raw => Mode::Raw,
            WireMode::Strong => Mode::Strong,
        },
        region: request.region_id,
        epoch: from_wire_epoch(request.epoch),
        op,
    })
}

pub fn from_wire_epoch(epoch: WireEpoch) -> RegionEpoch {
    RegionEpoch {
        version: epoch.version,
        conf_version: epoch.conf_version,
    }
}

pub fn to_wire_epoch(epoch: RegionEpoch) -> WireEpoch {
    WireEpoch {
        version: epoch.version,
        conf_version: epoch.conf_version,
    }
}

/// The wire form of the Store's answer. `describe` turns a Region into its descriptor.
pub fn to_wire_result(
    result: KvResult,
    describe: impl Fn(&crate::region::Region) -> tessera_transport::client::RegionDescriptor,
    address_of: impl Fn(tessera_core::NodeId, tessera_core::RegionId) -> Option<String>,
) -> Result<ClientReply, ClientError> {
    match result {
        Ok(KvReply::Written { version }) => Ok(ClientReply::Written { version }),
        Ok(KvReply::Value { found }) => Ok(ClientReply::Value {
            value: found.map(|(value, version)| VersionedValue { value, version }),
        }),
        Ok(KvReply::Scan { items, more }) => Ok(ClientReply::Scan {
            items: items
                .into_iter()
                .map(|i| KeyValue {
                    key: i.key,
                    value: i.value,
                    version: i.version,
                })
                .collect(),
            more,
        }),
        Ok(KvReply::Split { left, right }) => Ok(ClientReply::Regions {
            regions: vec![describe(&left), describe(&right)],
            stores: Vec::new(),
        }),
        Ok(KvReply::MoveStep { done, detail }) => Ok(ClientReply::MoveStep { done, detail }),
        Ok(KvReply::Destroyed) => Ok(ClientReply::Ack),
        Err(error) => Err(match error {
            KvError::NotLeader { leader, region } => ClientError::NotLeader {
                leader_addr: leader.and_then(|node| address_of(node, region)),
                leader,
            },
            KvError::StaleEpoch { current } => ClientError::StaleEpoch {
                regions: vec![describe(&current)],
            },
            KvError::KeyNotInRegion { region } => ClientError::KeyNotInRegion {
                key: Vec::new(),
                region_id: region.id,
                start_key: region.start_key,
                end_key: region.end_key,
            },
            KvError::RegionNotFound(region_id) => ClientError::RegionNotFound { region_id },
            KvError::VersionMismatch { current_version } => {
                ClientError::VersionMismatch { current_version }
            }
            KvError::ServerBusy(_) => ClientError::ServerBusy,
            KvError::InvalidRequest(message) => ClientError::InvalidRequest { message },
            // Not applied and never will be: the client retries at the (new) leader.
            KvError::Dropped(_) => ClientError::NotLeader {
                leader: None,
                leader_addr: None,
            },
            // Never retried by the client: the write may have taken effect.
            KvError::OutcomeUnknown(message) => ClientError::OutcomeUnknown { message },
        }),
    }
}
