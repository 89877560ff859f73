//! A request that reaches a core which does not own its Region is forwarded to the owning
//! core over the cross-core channels and answered, instead of failing with WrongCore.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tessera_core::RegionId;
use tessera_transport::client::{
    ClientOp, ClientReply, ClientRequest, ClientResponse, Mode, RegionEpoch,
};
use tessera_transport::{
    decode_client_response, encode_client_request, encode_frame, DecodeLimits, FrameDecoder,
    FrameType,
};

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port `p` such that `p` and `p + 1` are free right now.
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port < 65_000
            && TcpListener::bind(("127.0.0.1", port + 1)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port pair");
}

fn call(
    stream: &mut TcpStream,
    decoder: &mut FrameDecoder,
    request: &ClientRequest,
) -> ClientResponse {
    let frame = encode_frame(FrameType::ClientRequest, &encode_client_request(request));
    stream.write_all(&frame).unwrap();
    let mut buffer = [0u8; 4096];
    loop {
        if let Some(frame) = decoder.next_frame().unwrap() {
            return decode_client_response(&frame.payload, &DecodeLimits::default()).unwrap();
        }
        let read = stream.read(&mut buffer).unwrap();
        assert!(read > 0, "server closed the connection");
        decoder.push(&buffer[..read]).unwrap();
    }
}

#[test]
fn a_request_on_the_wrong_core_is_forwarded_to_the_owner() {
    let dir = tempfile::tempdir().unwrap();
    let client_port = free_port_pair();
    let peer_port = free_port_pair();
    let child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "serve",
            "--cores",
            "2",
            "--client-port",
            &client_port.to_string(),
            "--peer-port",
            &peer_port.to_string(),
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = KillOnDrop(child);
    // With 2 cores, Region 1 (keys below "m") lives on core 1; talk to core 0.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut attempt = 0;
    loop {
        assert!(
            Instant::now() < deadline,
            "node did not serve a forwarded write in time"
        );
        attempt += 1;
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", client_port)) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut decoder = FrameDecoder::new(1 << 20);
        let put = ClientRequest {
            request_id: attempt,
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
        assert_eq!(response.request_id, attempt);
        match response.result {
            Ok(ClientReply::Written { .. }) => {}
            // The Region may not have elected its leader yet.
            Err(tessera_transport::client::ClientError::NotLeader { .. }) => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            other => panic!("expected the forwarded write to succeed, got {other:?}"),
        }
        let get = ClientRequest {
            request_id: attempt + 1000,
            op: ClientOp::Get {
                key: b"apple".to_vec(),
            },
            ..put
        };
        let response = call(&mut stream, &mut decoder, &get);
        assert_eq!(response.request_id, attempt + 1000);
        match response.result {
            Ok(ClientReply::Value { value: Some(found) }) => assert_eq!(found.value, b"red"),
            other => panic!("expected the forwarded read to find the value, got {other:?}"),
        }
        return;
    }
}
