//! The seed corpus of the transport fuzz targets (`fuzz/seeds/frame_decoder`,
//! `fuzz/seeds/client_request`), made from real encoded frames so the fuzzer starts past the
//! verifier, deep in the decoders.
//!
//! This test checks that the committed seeds are exactly what the encoders produce today and
//! that every one of them decodes. After a deliberate change of the wire format, regenerate
//! them with `TESSERA_REGEN_FUZZ_SEEDS=1 cargo test -p tessera-transport --test fuzz_seeds`
//! and commit the result.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tessera_core::{
    ConfState, Entry, EntryKind, LogIndex, Message, MessageBody, NodeId, RegionId, Snapshot,
    SnapshotMetadata, Term,
};
use tessera_transport::snapshot_chunk::{decode_snapshot_chunk, encode_snapshot_chunk};
use tessera_transport::{
    decode_client_request, decode_client_response, decode_hello, decode_raft_batch,
    encode_client_request, encode_client_response, encode_frame, encode_hello, encode_raft_batch,
    ClientError, ClientOp, ClientReply, ClientRequest, ClientResponse, ClusterId, CoreId,
    DecodeLimits, FrameDecoder, FrameType, Hello, HelloRole, KeyValue, Mode, RaftBatchHeader,
    RegionDescriptor, RegionEpoch, StoreDescriptor, VersionedValue, PROTOCOL_VERSION,
};

/// The `frame_decoder` target reads its first byte as a chunk-size choice; 7 = 8-byte chunks.
const CHUNK_CHOICE: u8 = 7;

fn seeds_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target)
}

fn header() -> RaftBatchHeader {
    RaftBatchHeader {
        cluster_id: ClusterId(7),
        from_node: NodeId(1),
        from_core: CoreId(0),
        to_node: NodeId(2),
        to_core: CoreId(1),
    }
}

fn message(term: u64, body: MessageBody) -> Message {
    Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(term),
        body,
    }
}

fn entries(prev_index: u64, terms: &[u64]) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(i, &term)| Entry {
            term: Term(term),
            index: LogIndex(prev_index + 1 + i as u64),
            kind: if i == 1 {
                EntryKind::ConfChange
            } else {
                EntryKind::Normal
            },
            data: format!("put k{i} v{i}").into_bytes().into(),
        })
        .collect()
}

fn raft_batches() -> BTreeMap<&'static str, Vec<(RegionId, Message)>> {
    let region = RegionId(3);
    let snapshot = Snapshot {
        metadata: SnapshotMetadata {
            index: LogIndex(40),
            term: Term(4),
            conf_state: ConfState {
                voters: vec![NodeId(1), NodeId(2), NodeId(3)],
                learners: vec![NodeId(4)],
            },
        },
        data: b"key-value data of the region".to_vec().into(),
    };
    BTreeMap::from([
        (
            "raft_append_entries",
            vec![
                (
                    region,
                    message(
                        5,
                        MessageBody::AppendEntries {
                            prev_log_index: LogIndex(10),
                            prev_log_term: Term(4),
                            entries: entries(10, &[4, 5, 5]),
                            leader_commit: LogIndex(11),
                        },
                    ),
                ),
                (
                    RegionId(9),
                    message(
                        2,
                        MessageBody::AppendEntriesResponse {
                            reject: true,
                            index: LogIndex(8),
                            hint_index: LogIndex(6),
                            hint_term: Term(1),
                        },
                    ),
                ),
            ],
        ),
        (
            "raft_votes",
            vec![
                (
                    region,
                    message(
                        6,
                        MessageBody::RequestVote {
                            pre_vote: true,
                            last_log_index: LogIndex(12),
                            last_log_term: Term(5),
                            transfer: false,
                        },
                    ),
                ),
                (
                    RegionId(4),
                    message(
                        6,
                        MessageBody::RequestVoteResponse {
                            pre_vote: false,
                            granted: true,
                        },
                    ),
                ),
                (RegionId(5), message(6, MessageBody::TimeoutNow)),
            ],
        ),
        (
            "raft_heartbeats_and_reads",
            vec![
                (
                    region,
                    message(
                        5,
                        MessageBody::Heartbeat {
                            commit: LogIndex(11),
                            read_context: 77,
                        },
                    ),
                ),
                (
                    region,
                    message(5, MessageBody::HeartbeatResponse { read_context: 77 }),
                ),
                (
                    RegionId(6),
                    message(5, MessageBody::ReadIndexRequest { request_id: 9 }),
                ),
                (
                    RegionId(6),
                    message(
                        5,
                        MessageBody::ReadIndexResponse {
                            request_id: 9,
                            index: LogIndex(11),
                        },
                    ),
                ),
            ],
        ),
        (
            "raft_snapshot",
            vec![(
                region,
                message(5, MessageBody::InstallSnapshot { snapshot }),
            )],
        ),
    ])
}

fn request(request_id: u64, mode: Mode, op: ClientOp) -> ClientRequest {
    ClientRequest {
        request_id,
        namespace: if request_id.is_multiple_of(2) {
            String::new()
        } else {
            "app".to_string()
        },
        mode,
        region_id: RegionId(2),
        epoch: RegionEpoch {
            version: 3,
            conf_version: 1,
        },
        op,
    }
}

fn store() -> StoreDescriptor {
    StoreDescriptor {
        node_id: NodeId(2),
        client_addrs: vec!["127.0.0.1:7410".to_string()],
        cores: 2,
        peer_addrs: vec!["127.0.0.1:7411".to_string()],
    }
}

fn client_requests() -> BTreeMap<&'static str, ClientRequest> {
    let key = b"hello".to_vec();
    BTreeMap::from([
        (
            "put",
            request(
                1,
                Mode::Raw,
                ClientOp::Put {
                    key: key.clone(),
                    value: b"world".to_vec(),
                },
            ),
        ),
        (
            "get_strong",
            request(2, Mode::Strong, ClientOp::Get { key: key.clone() }),
        ),
        (
            "delete",
            request(3, Mode::Raw, ClientOp::Delete { key: key.clone() }),
        ),
        (
            "scan",
            request(
                4,
                Mode::Strong,
                ClientOp::Scan {
                    start: b"a".to_vec(),
                    end: b"m".to_vec(),
                    limit: 100,
                },
            ),
        ),
        (
            "scan_prefix",
            request(
                5,
                Mode::Raw,
                ClientOp::ScanPrefix {
                    prefix: b"he".to_vec(),
                    limit: 10,
                },
            ),
        ),
        (
            "cas",
            request(
                6,
                Mode::Strong,
                ClientOp::Cas {
                    key: key.clone(),
                    expected_version: 1,
                    value: b"there".to_vec(),
                },
            ),
        ),
        (
            "cas_delete",
            request(
                7,
                Mode::Strong,
                ClientOp::CasDelete {
                    key,
                    expected_version: 2,
                },
            ),
        ),
        ("regions", request(8, Mode::Raw, ClientOp::Regions)),
        ("status", request(9, Mode::Raw, ClientOp::Status)),
        (
            "join",
            request(10, Mode::Raw, ClientOp::Join { store: store() }),
        ),
    ])
}

fn client_responses() -> Vec<ClientResponse> {
    let region = RegionDescriptor {
        region_id: RegionId(2),
        start_key: b"m".to_vec(),
        end_key: Vec::new(),
        epoch: RegionEpoch {
            version: 3,
            conf_version: 1,
        },
        peers: vec![NodeId(1), NodeId(2), NodeId(3)],
        leader: Some(NodeId(2)),
    };
    let results = [
        Ok(ClientReply::Written { version: 2 }),
        Ok(ClientReply::Value {
            value: Some(VersionedValue {
                value: b"world".to_vec(),
                version: 1,
            }),
        }),
        Ok(ClientReply::Scan {
            items: vec![KeyValue {
                key: b"hello".to_vec(),
                value: b"world".to_vec(),
                version: 1,
            }],
            more: true,
        }),
        Ok(ClientReply::Regions {
            regions: vec![region.clone()],
            stores: vec![store()],
        }),
        Err(ClientError::NotLeader {
            leader: Some(NodeId(3)),
            leader_addr: Some("127.0.0.1:7420".to_string()),
        }),
        Err(ClientError::StaleEpoch {
            regions: vec![region],
        }),
        Err(ClientError::VersionMismatch { current_version: 4 }),
    ];
    results
        .into_iter()
        .enumerate()
        .map(|(i, result)| ClientResponse {
            request_id: i as u64 + 1,
            result,
        })
        .collect()
}

fn hello(role: HelloRole) -> Vec<u8> {
    let (node_id, core) = match role {
        HelloRole::Peer => (NodeId(1), CoreId(0)),
        HelloRole::Client => (NodeId(0), CoreId(0)),
    };
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        cluster_id: ClusterId(7),
        role,
        node_id,
        core,
        to_node: NodeId(2),
        to_core: CoreId(1),
    };
    encode_frame(FrameType::Hello, &encode_hello(&hello))
}

/// Every seed of both targets: (target, file name, bytes).
fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (name, messages) in raft_batches() {
        let mut stream = vec![CHUNK_CHOICE];
        stream.extend(hello(HelloRole::Peer));
        let payload = encode_raft_batch(&header(), &messages);
        stream.extend(encode_frame(FrameType::RaftBatch, &payload));
        seeds.push(("frame_decoder", format!("peer_{name}"), stream));
    }
    let mut chunks = vec![CHUNK_CHOICE];
    chunks.extend(hello(HelloRole::Peer));
    let snapshot = Snapshot {
        metadata: SnapshotMetadata {
            index: LogIndex(90),
            term: Term(6),
            conf_state: ConfState {
                voters: vec![NodeId(1), NodeId(2), NodeId(3)],
                learners: Vec::new(),
            },
        },
        data: (0..200u8).collect::<Vec<u8>>().into(),
    };
    for range in [0..128, 128..200] {
        let payload = encode_snapshot_chunk(&header(), RegionId(3), Term(6), &snapshot, range);
        chunks.extend(encode_frame(FrameType::SnapshotChunk, &payload));
    }
    seeds.push(("frame_decoder", "peer_snapshot_chunks".to_string(), chunks));
    let mut client_stream = vec![CHUNK_CHOICE];
    client_stream.extend(hello(HelloRole::Client));
    for (name, request) in client_requests() {
        let payload = encode_client_request(&request);
        client_stream.extend(encode_frame(FrameType::ClientRequest, &payload));
        seeds.push(("client_request", name.to_string(), payload));
    }
    seeds.push((
        "frame_decoder",
        "client_requests".to_string(),
        client_stream,
    ));
    let mut responses = vec![CHUNK_CHOICE];
    for response in client_responses() {
        let payload = encode_client_response(&response);
        responses.extend(encode_frame(FrameType::ClientResponse, &payload));
    }
    seeds.push(("frame_decoder", "client_responses".to_string(), responses));
    seeds
}

/// Decodes a `frame_decoder` seed completely; panics on anything refused.
fn decode_stream(seed: &[u8], limits: &DecodeLimits) -> usize {
    let mut decoder = FrameDecoder::new(limits.frame_bytes_max);
    decoder.push(&seed[1..]).unwrap();
    let mut frames = 0;
    while let Some(frame) = decoder.next_frame().unwrap() {
        let payload = frame.payload.as_slice();
        match frame.frame_type {
            FrameType::Hello => drop(decode_hello(payload, limits).unwrap()),
            FrameType::RaftBatch => drop(decode_raft_batch(payload, limits).unwrap()),
            FrameType::ClientRequest => drop(decode_client_request(payload, limits).unwrap()),
            FrameType::ClientResponse => drop(decode_client_response(payload, limits).unwrap()),
            FrameType::SnapshotChunk => drop(decode_snapshot_chunk(payload, limits).unwrap()),
        }
        frames += 1;
    }
    decoder.finish().unwrap();
    frames
}

#[test]
fn committed_seeds_are_the_encoders_output_and_decode() {
    let regenerate = std::env::var_os("TESSERA_REGEN_FUZZ_SEEDS").is_some();
    let limits = DecodeLimits::default();
    for target in ["frame_decoder", "client_request"] {
        let dir = seeds_dir(target);
        let expected: BTreeMap<String, Vec<u8>> = seeds()
            .into_iter()
            .filter(|(t, _, _)| *t == target)
            .map(|(_, name, bytes)| (name, bytes))
            .collect();
        if regenerate {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            for (name, bytes) in &expected {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
        }
        let committed: BTreeMap<String, Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| {
                let entry = entry.unwrap();
                let name = entry.file_name().into_string().unwrap();
                (name, std::fs::read(entry.path()).unwrap())
            })
            .collect();
        assert!(
            committed == expected,
            "{} is stale; regenerate it with TESSERA_REGEN_FUZZ_SEEDS=1 cargo test -p \
             tessera-transport --test fuzz_seeds",
            dir.display()
        );
        for (name, bytes) in &committed {
            if target == "frame_decoder" {
                assert!(decode_stream(bytes, &limits) >= 2, "{target}/{name}");
            } else {
                decode_client_request(bytes, &limits).unwrap();
            }
        }
    }
}
