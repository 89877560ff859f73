//! A scripted stand-in for one node's client port, for tests of the client library and the
//! CLI: it answers the routing table with one Region (the whole key space, led by node 1 at
//! the fake's own address) and every other request as its script says. It is how tests show
//! what a client does with answers a real node gives only in rare races (a lost answer, an
//! `OutcomeUnknown` refusal).
//!
//! Plain threads and blocking sockets: it runs outside any executor.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tessera_core::{NodeId, RegionId};
use tessera_transport::client::{
    ClientError, ClientOp, ClientReply, ClientRequest, RegionDescriptor, RegionEpoch,
    StoreDescriptor,
};
use tessera_transport::{
    decode_client_request, encode_client_response, encode_frame, ClientResponse, DecodeLimits,
    FrameDecoder, FrameType,
};

/// What the fake does with a request other than the routing table.
#[derive(Clone, Debug)]
pub enum Answer {
    /// Answer it.
    Reply(Result<ClientReply, ClientError>),
    /// Close the connection without answering (the answer is lost).
    CloseUnanswered,
}

/// A running fake node; its thread lives as long as the test process.
pub struct FakeNode {
    /// Its client address, `127.0.0.1:PORT`.
    pub addr: String,
    requests: Arc<AtomicU32>,
}

impl FakeNode {
    /// Starts a fake node on a free loopback port that answers each request other than the
    /// routing table with `script(request)`.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub fn spawn(script: impl Fn(&ClientRequest) -> Answer + Send + 'static) -> FakeNode {
        FakeNode::start(false, script)
    }

    /// As [`FakeNode::spawn`], but every connection is closed after its first answer (the
    /// routing table's included), as by a node restarting between requests.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub fn spawn_closing_after_each_answer(
        script: impl Fn(&ClientRequest) -> Answer + Send + 'static,
    ) -> FakeNode {
        FakeNode::start(true, script)
    }

    fn start(
        close_after_answer: bool,
        script: impl Fn(&ClientRequest) -> Answer + Send + 'static,
    ) -> FakeNode {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address").to_string();
        let requests = Arc::new(AtomicU32::new(0));
        let (own_addr, counter) = (addr.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                serve_connection(stream, &own_addr, &counter, close_after_answer, &script);
            }
        });
        FakeNode { addr, requests }
    }

    /// Requests received other than the routing table.
    pub fn requests(&self) -> u32 {
        self.requests.load(Ordering::SeqCst)
    }
}

fn serve_connection(
    mut stream: std::net::TcpStream,
    own_addr: &str,
    counter: &AtomicU32,
    close_after_answer: bool,
    script: &impl Fn(&ClientRequest) -> Answer,
) {
    let limits = DecodeLimits::default();
    let mut decoder = FrameDecoder::new(limits.frame_bytes_max);
    let mut buffer = [0u8; 4096];
    while let Ok(read) = stream.read(&mut buffer) {
        if read == 0 || decoder.push(&buffer[..read]).is_err() {
            return;
        }
        while let Ok(Some(frame)) = decoder.next_frame() {
            let Ok(request) = decode_client_request(&frame.payload, &limits) else {
                return;
            };
            let result = if request.op == ClientOp::Regions {
                Ok(routing_table(own_addr))
            } else {
                counter.fetch_add(1, Ordering::SeqCst);
                match script(&request) {
                    Answer::Reply(result) => result,
                    Answer::CloseUnanswered => return,
                }
            };
            let response = ClientResponse {
                request_id: request.request_id,
                result,
            };
            let frame = encode_frame(
                FrameType::ClientResponse,
                &encode_client_response(&response),
            );
            if stream.write_all(&frame).is_err() || close_after_answer {
                return;
            }
        }
    }
}

/// One Region over the whole key space, on node 1 at `own_addr`, which leads it.
fn routing_table(own_addr: &str) -> ClientReply {
    ClientReply::Regions {
        regions: vec![RegionDescriptor {
            region_id: RegionId(1),
            start_key: vec![],
            end_key: vec![],
            epoch: RegionEpoch::default(),
            peers: vec![NodeId(1)],
            leader: Some(NodeId(1)),
        }],
        stores: vec![StoreDescriptor {
            node_id: NodeId(1),
            client_addrs: vec![own_addr.to_string()],
            cores: 1,
            peer_addrs: vec![],
        }],
    }
}
