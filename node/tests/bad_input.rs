//! Garbage against a real `tessera serve` process, on its client and peer ports. Each bad
//! connection must be closed by the node (a read returns 0 or an error within a deadline) or
//! answered with a typed error; afterwards the process is still running, a normal client
//! still works, and nothing written before is lost.

mod common;

use std::io::Write;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use common::{raw_connection, read_until_closed, write_ignoring_reset, Node, TestRng};
use tessera_core::{Message, MessageBody, NodeId, RegionId, Term};
use tessera_node::client::Client;
use tessera_node::region::owning_core;
use tessera_transport::client::{
    ClientError, ClientOp, ClientReply, ClientRequest, Mode, RegionDescriptor, RegionEpoch,
};
use tessera_transport::{
    decode_client_response, encode_client_request, encode_frame, encode_hello, encode_raft_batch,
    ClusterId, CoreId, DecodeLimits, FrameDecoder, FrameType, Hello, HelloRole, RaftBatchHeader,
    PROTOCOL_VERSION,
};

/// How long the node may take to close a bad connection. The peer port's handshake timeout
/// is 2 s, so a silent peer connection is closed within it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A node with some data in both Regions, and that data.
fn node_with_data() -> (Node, Vec<(String, String, u64)>) {
    let node = Node::started();
    let mut client = node.client();
    let mut written = Vec::new();
    for i in 0..20 {
        let key = format!("{}/{i:02}", if i % 2 == 0 { "c" } else { "t" });
        let value = format!("value-{i}");
        let version = client
            .put(key.as_bytes(), value.as_bytes(), Mode::Strong)
            .unwrap();
        written.push((key, value, version));
    }
    (node, written)
}

/// The node still runs, serves a fresh client, and returns everything written before.
fn assert_healthy(node: &mut Node, written: &[(String, String, u64)], after: &str) {
    if let Some(status) = node.try_wait() {
        panic!(
            "the node exited ({status}) after {after}; log:\n{}",
            node.log()
        );
    }
    let mut client = node.client();
    for (key, value, version) in written {
        let found = client
            .get(key.as_bytes(), Mode::Strong)
            .unwrap_or_else(|e| panic!("get {key} after {after}: {e}"))
            .unwrap_or_else(|| panic!("{key} lost after {after}"));
        assert_eq!(
            (found.value.as_slice(), found.version),
            (value.as_bytes(), *version),
            "{key} after {after}"
        );
    }
    let version = client.put(b"probe", after.as_bytes(), Mode::Strong);
    assert!(version.is_ok(), "a write after {after} failed: {version:?}");
}

/// Sends `bytes` and expects the node to close the connection on its own (no half-close
/// from us), returning what it sent before closing.
fn expect_closed(addr: &str, bytes: &[u8], what: &str) -> Vec<u8> {
    let mut stream = raw_connection(addr);
    write_ignoring_reset(&mut stream, bytes);
    let started = Instant::now();
    let received = read_until_closed(&mut stream, CLOSE_TIMEOUT);
    eprintln!(
        "{what}: closed after {:?} ({} bytes back)",
        started.elapsed(),
        received.len()
    );
    received
}

/// Sends `bytes`, half-closes, and expects the node to close too.
fn expect_closed_after_eof(addr: &str, bytes: &[u8]) {
    let mut stream = raw_connection(addr);
    write_ignoring_reset(&mut stream, bytes);
    let _ = stream.shutdown(Shutdown::Write);
    read_until_closed(&mut stream, CLOSE_TIMEOUT);
}

fn request(region: &RegionDescriptor, op: ClientOp) -> ClientRequest {
    ClientRequest {
        request_id: 77,
        namespace: String::new(),
        mode: Mode::Strong,
        region_id: region.region_id,
        epoch: region.epoch,
        op,
    }
}

fn request_frame(request: &ClientRequest) -> Vec<u8> {
    encode_frame(FrameType::ClientRequest, &encode_client_request(request))
}

/// Sends one request frame and returns the node's answer.
fn round_trip(addr: &str, request: &ClientRequest) -> Result<ClientReply, ClientError> {
    let mut stream = raw_connection(addr);
    stream.write_all(&request_frame(request)).unwrap();
    let limits = DecodeLimits::default();
    let mut decoder = FrameDecoder::new(limits.frame_bytes_max);
    let deadline = Instant::now() + CLOSE_TIMEOUT;
    let mut buffer = [0u8; 4096];
    loop {
        if let Some(frame) = decoder.next_frame().unwrap() {
            assert_eq!(frame.frame_type, FrameType::ClientResponse);
            let response = decode_client_response(&frame.payload, &limits).unwrap();
            assert_eq!(response.request_id, request.request_id);
            return response.result;
        }
        assert!(Instant::now() < deadline, "no answer from {addr}");
        match std::io::Read::read(&mut stream, &mut buffer) {
            Ok(0) => panic!("{addr} closed the connection instead of answering"),
            Ok(n) => decoder.push(&buffer[..n]).unwrap(),
            Err(_) => {} // read timeout: poll again
        }
    }
}

fn regions(node: &Node) -> Vec<RegionDescriptor> {
    node.client().routing().0.to_vec()
}

/// The core of `node` that serves `region`.
fn addr_of(node: &Node, region: &RegionDescriptor) -> String {
    node.client_addr(owning_core(region.region_id, common::CORES))
}

#[test]
fn client_port_garbage_closes_the_connection_and_harms_nothing() {
    let mut rng = TestRng::from_clock("client_port_garbage");
    let (mut node, written) = node_with_data();
    let addr = node.client_addr(0);
    let layout = regions(&node);
    let get = |key: &[u8]| request(&layout[0], ClientOp::Get { key: key.to_vec() });

    for len in [1, 7, 100, 70_000] {
        expect_closed_after_eof(&addr, &rng.bytes(len));
    }
    assert_healthy(&mut node, &written, "random bytes");

    // Frames the node can refuse from the header alone, without waiting for more bytes.
    expect_closed(&addr, &[0xff, 0xff, 0xff, 0xff, 3], "a 4 GiB length prefix");
    expect_closed(
        &addr,
        &[4, 0, 0, 0, 0xee, 1, 2, 3, 4],
        "an unknown frame type",
    );
    expect_closed(&addr, &[0, 0, 0, 0, 0], "the reserved frame type 0");
    let mut garbage = vec![100, 0, 0, 0, FrameType::ClientRequest as u8];
    garbage.extend(rng.bytes(100));
    expect_closed(
        &addr,
        &garbage,
        "a ClientRequest header with a garbage payload",
    );
    expect_closed(&addr, &[0, 0, 0, 0, 3], "an empty ClientRequest payload");
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        cluster_id: ClusterId(1),
        role: HelloRole::Client,
        node_id: NodeId(0),
        core: CoreId(0),
        to_node: NodeId(0),
        to_core: CoreId(0),
    };
    expect_closed(
        &addr,
        &encode_frame(FrameType::Hello, &encode_hello(&hello)),
        "a Hello on the client port",
    );
    assert_healthy(&mut node, &written, "bad frame headers");

    // A truncated frame, then our side closes.
    let frame = request_frame(&get(b"c/00"));
    expect_closed_after_eof(&addr, &frame[..frame.len() / 2]);
    expect_closed_after_eof(&addr, &frame[..3]);

    // Well-formed frames with values the decoder refuses.
    let mut zero_region = get(b"c/00");
    zero_region.region_id = RegionId(0);
    expect_closed(&addr, &request_frame(&zero_region), "a Get for Region 0");
    let scan = |start: &[u8], end: &[u8], limit| {
        let op = ClientOp::Scan {
            start: start.to_vec(),
            end: end.to_vec(),
            limit,
        };
        request_frame(&request(&layout[0], op))
    };
    expect_closed(&addr, &scan(b"a", b"", 0), "a scan with limit 0");
    expect_closed(&addr, &scan(b"a", b"", 10_000_000), "a scan over the limit");
    expect_closed(
        &addr,
        &scan(b"b", b"a", 10),
        "a scan whose end is before its start",
    );
    let long_key = get(&vec![b'c'; 100 << 10]);
    expect_closed(&addr, &request_frame(&long_key), "a 100 KiB key");
    let mut long_namespace = get(b"c/00");
    long_namespace.namespace = "n".repeat(1000);
    expect_closed(
        &addr,
        &request_frame(&long_namespace),
        "a 1000-byte namespace",
    );
    // A good request after a bad one on the same connection is never served.
    let mut both = request_frame(&zero_region);
    both.extend(request_frame(&get(b"c/00")));
    let back = expect_closed(&addr, &both, "a bad request followed by a good one");
    assert!(back.is_empty(), "an answer came after a refused frame");
    assert_healthy(&mut node, &written, "refused requests");

    // Well-formed requests the node answers with a typed error.
    let (low, high) = (&layout[0], &layout[1]);
    assert!(low.end_key.as_slice() == b"m" && high.start_key.as_slice() == b"m");
    let outside = request(
        high,
        ClientOp::Get {
            key: b"c/00".to_vec(),
        },
    );
    match round_trip(&addr_of(&node, high), &outside) {
        Err(ClientError::KeyNotInRegion {
            region_id,
            start_key,
            end_key,
            ..
        }) => {
            assert_eq!(region_id, high.region_id);
            assert_eq!(
                (start_key, end_key),
                (high.start_key.clone(), high.end_key.clone())
            );
        }
        other => panic!("a key outside its Region: {other:?}"),
    }
    let mut missing = request(
        low,
        ClientOp::Get {
            key: b"c/00".to_vec(),
        },
    );
    missing.region_id = RegionId(999);
    match round_trip(&addr, &missing) {
        Err(ClientError::RegionNotFound { region_id }) => assert_eq!(region_id, RegionId(999)),
        other => panic!("an unknown Region: {other:?}"),
    }
    let mut stale = request(
        low,
        ClientOp::Put {
            key: b"c/00".to_vec(),
            value: b"stale".to_vec(),
        },
    );
    stale.epoch = RegionEpoch {
        version: 0,
        conf_version: 0,
    };
    match round_trip(&addr_of(&node, low), &stale) {
        Err(ClientError::StaleEpoch { regions }) => {
            assert_eq!(regions.first().map(|r| r.region_id), Some(low.region_id));
        }
        other => panic!("an old epoch: {other:?}"),
    }
    let wrong_core = request(
        low,
        ClientOp::Get {
            key: b"c/00".to_vec(),
        },
    );
    let other_core = node.client_addr(1 - owning_core(low.region_id, common::CORES));
    let answer = round_trip(&other_core, &wrong_core);
    assert!(
        matches!(
            &answer,
            Ok(ClientReply::Value { value: Some(v) }) if v.value == b"value-0"
        ) || matches!(&answer, Err(ClientError::WrongCore { .. })),
        "a request at the wrong core is forwarded or redirected: {answer:?}"
    );
    assert_healthy(&mut node, &written, "requests answered with typed errors");
    node.stop_cleanly();
}

fn peer_hello(cluster_id: ClusterId, role: HelloRole, from: u64) -> Vec<u8> {
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        cluster_id,
        role,
        node_id: NodeId(from),
        core: CoreId(0),
        to_node: NodeId(1),
        to_core: CoreId(0),
    };
    encode_frame(FrameType::Hello, &encode_hello(&hello))
}

fn cluster_id(node: &Node) -> ClusterId {
    let mut client: Client = node.client();
    client.status(None).unwrap().cluster_id
}

#[test]
fn peer_port_garbage_closes_the_connection_and_harms_nothing() {
    let mut rng = TestRng::from_clock("peer_port_garbage");
    let (mut node, written) = node_with_data();
    let addr = node.peer_addr(0);
    let cluster = cluster_id(&node);

    for len in [1, 7, 100, 70_000] {
        expect_closed_after_eof(&addr, &rng.bytes(len));
    }
    expect_closed(
        &addr,
        &[0xff, 0xff, 0xff, 0xff, 1],
        "a 4 GiB prefix on the peer port",
    );
    let mut garbage = vec![64, 0, 0, 0, FrameType::Hello as u8];
    garbage.extend(rng.bytes(64));
    expect_closed(&addr, &garbage, "a Hello header with a garbage payload");
    let back = expect_closed(
        &addr,
        &peer_hello(ClusterId(cluster.0 ^ 0x5a5a), HelloRole::Peer, 2),
        "a Hello from another cluster",
    );
    assert!(
        back.is_empty(),
        "the node answered a Hello from another cluster"
    );
    expect_closed(
        &addr,
        &peer_hello(cluster, HelloRole::Client, 0),
        "a client Hello on the peer port",
    );
    expect_closed(
        &addr,
        &encode_frame(FrameType::ClientRequest, &[0; 16]),
        "a ClientRequest instead of a Hello",
    );
    expect_closed(&addr, &[], "a connection that never says Hello");
    assert_healthy(&mut node, &written, "bad handshakes");

    // A good Hello (from a member: in a one-node cluster only node 1 is one), then garbage:
    // the node answers the Hello and closes on the garbage.
    let mut then_garbage = peer_hello(cluster, HelloRole::Peer, 1);
    then_garbage.extend([50, 0, 0, 0, FrameType::RaftBatch as u8]);
    then_garbage.extend(rng.bytes(50));
    expect_closed(&addr, &then_garbage, "a RaftBatch with a garbage payload");
    let mut then_client = peer_hello(cluster, HelloRole::Peer, 1);
    then_client.extend(encode_frame(FrameType::ClientRequest, &[0; 16]));
    expect_closed(&addr, &then_client, "a ClientRequest after a peer Hello");
    // A well-formed batch whose header names another sender than the Hello did.
    let header = RaftBatchHeader {
        cluster_id: cluster,
        from_node: NodeId(3),
        from_core: CoreId(0),
        to_node: NodeId(1),
        to_core: CoreId(0),
    };
    let message = Message {
        from: NodeId(3),
        to: NodeId(1),
        term: Term(1),
        body: MessageBody::HeartbeatResponse { read_context: 0 },
    };
    let mut spoofed = peer_hello(cluster, HelloRole::Peer, 1);
    spoofed.extend(encode_frame(
        FrameType::RaftBatch,
        &encode_raft_batch(&header, &[(RegionId(2), message)]),
    ));
    expect_closed(
        &addr,
        &spoofed,
        "a batch whose sender differs from the Hello's",
    );
    assert_healthy(&mut node, &written, "garbage after a good Hello");
    node.stop_cleanly();
}

/// Each Region's (term, leader) as the node reports them.
fn terms_and_leaders(node: &Node) -> Vec<(RegionId, Term, Option<NodeId>)> {
    let mut client: Client = node.client();
    let mut regions: Vec<_> = client
        .status(None)
        .unwrap()
        .regions
        .into_iter()
        .map(|r| (r.region_id, r.term, r.leader))
        .collect();
    regions.sort_by_key(|r| r.0);
    regions
}

/// A process that knows the cluster id but is not one of its stores is refused at the Hello,
/// so its messages — here votes and heartbeats with terms up to the top of the range — never
/// reach Raft: the node answers nothing, keeps its terms and leaders, and keeps serving.
/// (Before, a stranger's RequestVote with term u64::MAX was adopted, and the next campaign
/// overflowed `term + 1`; terms above `term_max` are also refused by the decoder and the core,
/// see `transport/tests/raft_codec.rs` and `core/tests/regressions.rs`.)
#[test]
fn a_stranger_with_the_cluster_id_is_refused_and_cannot_raise_terms() {
    let (mut node, written) = node_with_data();
    let cluster = cluster_id(&node);
    let before = terms_and_leaders(&node);
    let term_max = DecodeLimits::default().term_max;
    let vote = |term| {
        let body = MessageBody::RequestVote {
            pre_vote: false,
            last_log_index: tessera_core::LogIndex(u64::MAX),
            last_log_term: Term(term),
            transfer: true,
        };
        (term, body)
    };
    let heartbeat = |term| {
        let body = MessageBody::Heartbeat {
            commit: tessera_core::LogIndex(u64::MAX),
            read_context: 0,
        };
        (term, body)
    };
    for (term, body) in [
        vote(u64::MAX),
        heartbeat(u64::MAX),
        vote(term_max),
        heartbeat(term_max),
        vote(before[0].1 .0 + 10),
    ] {
        let header = RaftBatchHeader {
            cluster_id: cluster,
            from_node: NodeId(2),
            from_core: CoreId(0),
            to_node: NodeId(1),
            to_core: CoreId(0),
        };
        let message = Message {
            from: NodeId(2),
            to: NodeId(1),
            term: Term(term),
            body,
        };
        let mut bytes = peer_hello(cluster, HelloRole::Peer, 2);
        bytes.extend(encode_frame(
            FrameType::RaftBatch,
            &encode_raft_batch(&header, &[(RegionId(2), message)]),
        ));
        let what = format!("a message of term {term} from a stranger");
        let back = expect_closed(&node.peer_addr(0), &bytes, &what);
        assert!(
            back.is_empty(),
            "the node answered the Hello of a stranger ({what})"
        );
        assert_healthy(&mut node, &written, &what);
    }
    assert_eq!(
        terms_and_leaders(&node),
        before,
        "a stranger's messages changed a Region's term or leader"
    );
    node.stop_cleanly();
}
