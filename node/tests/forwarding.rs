//! A request that reaches a core which does not own its Region is forwarded to the owning
//! core over the cross-core channels and answered, instead of failing with WrongCore.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Node;
use tessera_core::RegionId;
use tessera_transport::client::{
    ClientOp, ClientReply, ClientRequest, ClientResponse, Mode, RegionEpoch,
};
use tessera_transport::{
    decode_client_response, encode_client_request, encode_frame, DecodeLimits, FrameDecoder,
    FrameType,
};

/// Sends one request and waits (with a deadline) for its answer.
fn call(
    stream: &mut TcpStream,
    decoder: &mut FrameDecoder,
    request: &ClientRequest,
) -> ClientResponse {
    let frame = encode_frame(FrameType::ClientRequest, &encode_client_request(request));
    stream.write_all(&frame).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buffer = [0u8; 4096];
    loop {
        if let Some(frame) = decoder.next_frame().unwrap() {
            return decode_client_response(&frame.payload, &DecodeLimits::default()).unwrap();
        }
        assert!(Instant::now() < deadline, "no answer within 10 s");
        match stream.read(&mut buffer) {
            Ok(0) => panic!("server closed the connection"),
            Ok(read) => decoder.push(&buffer[..read]).unwrap(),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

#[test]
fn a_request_on_the_wrong_core_is_forwarded_to_the_owner() {
    // Two cores (the harness default): Region 1 (keys below "m") lives on core 1.
    let node = Node::started();
    let mut stream = common::raw_connection(&node.client_addr(0));
    let mut decoder = FrameDecoder::new(1 << 20);
    let put = ClientRequest {
        request_id: 1,
        namespace: String::new(),
        mode: Mode::Strong,
        region_id: RegionId(1),
        epoch: RegionEpoch {
            version: 1,
            conf_version: 1,
        },
        op: ClientOp::Put {
            key: b"apple".to_vec(),
            value: b"red".to_vec(),
        },
    };
    let response = call(&mut stream, &mut decoder, &put);
    assert_eq!(response.request_id, 1);
    assert!(
        matches!(response.result, Ok(ClientReply::Written { .. })),
        "expected the forwarded write to succeed, got {:?}",
        response.result
    );
    let get = ClientRequest {
        request_id: 2,
        op: ClientOp::Get {
            key: b"apple".to_vec(),
        },
        ..put
    };
    let response = call(&mut stream, &mut decoder, &get);
    assert_eq!(response.request_id, 2);
    match response.result {
        Ok(ClientReply::Value { value: Some(found) }) => assert_eq!(found.value, b"red"),
        other => panic!("expected the forwarded read to find the value, got {other:?}"),
    }
}
