//! Client frames: property round trips for requests and responses, and refusal of valid
//! buffers whose fields are out of range.

use proptest::prelude::*;
use tessera_core::{LogIndex, NodeId, RegionId, Term};
use tessera_transport::client::MoveOrder;
use tessera_transport::generated::client as fb;
use tessera_transport::{
    decode_client_request, decode_client_response, encode_client_request, encode_client_response,
    ClientError, ClientOp, ClientReply, ClientRequest, ClientResponse, ClusterId, CoreId,
    DecodeLimits, KeyValue, Mode, NodeStatus, PdStatus, RegionDescriptor, RegionEpoch,
    RegionReport, RegionStatus, StoreDescriptor, StoreReport, TransportError, VersionedValue,
};

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn epoch() -> impl Strategy<Value = RegionEpoch> {
    (any::<u64>(), any::<u64>()).prop_map(|(version, conf_version)| RegionEpoch {
        version,
        conf_version,
    })
}

fn op() -> impl Strategy<Value = ClientOp> {
    let limit = 1..=10_000u32;
    prop_oneof![
        (bytes(16), bytes(32)).prop_map(|(key, value)| ClientOp::Put { key, value }),
        bytes(16).prop_map(|key| ClientOp::Get { key }),
        bytes(16).prop_map(|key| ClientOp::Delete { key }),
        (bytes(8), bytes(8), limit.clone()).prop_map(|(a, b, limit)| {
            let (start, end) = if a < b { (a, b) } else { (b, Vec::new()) };
            ClientOp::Scan { start, end, limit }
        }),
        (bytes(8), limit).prop_map(|(prefix, limit)| ClientOp::ScanPrefix { prefix, limit }),
        (bytes(16), any::<u64>(), bytes(32)).prop_map(|(key, expected_version, value)| {
            ClientOp::Cas {
                key,
                expected_version,
                value,
            }
        }),
        (bytes(16), any::<u64>()).prop_map(|(key, expected_version)| ClientOp::CasDelete {
            key,
            expected_version
        }),
        Just(ClientOp::Regions),
        Just(ClientOp::Status),
        store().prop_map(|store| ClientOp::Join { store }),
        ((1..=u64::MAX), prop::collection::vec(report(), 0..4)).prop_map(|(node, regions)| {
            ClientOp::StoreHeartbeat {
                node_id: NodeId(node),
                regions,
            }
        }),
        Just(ClientOp::AskSplit),
        (bytes(16), 1..=u64::MAX).prop_map(|(key, id)| ClientOp::Split {
            key,
            new_region_id: RegionId(id)
        }),
        Just(ClientOp::PdStatus),
        (any::<u64>(), 1..=u64::MAX).prop_map(|(from, to)| ClientOp::MoveRegion {
            from: NodeId(from),
            to: NodeId(to)
        }),
        Just(ClientOp::CancelMove),
        (1..=u64::MAX, 1..=u64::MAX).prop_map(|(from, to)| ClientOp::MoveStep {
            from: NodeId(from),
            to: NodeId(to)
        }),
        Just(ClientOp::DestroyReplica),
    ]
}

fn report() -> impl Strategy<Value = RegionReport> {
    (region(), any::<u64>(), any::<u64>()).prop_map(|(region, approximate_bytes, keys)| {
        RegionReport {
            region,
            approximate_bytes,
            keys,
        }
    })
}

fn move_order() -> impl Strategy<Value = MoveOrder> {
    (1..=u64::MAX, 1..=u64::MAX, 1..=u64::MAX, any::<bool>()).prop_map(
        |(region, from, to, rollback)| MoveOrder {
            region_id: RegionId(region),
            from: NodeId(from),
            to: NodeId(to),
            rollback,
        },
    )
}

fn pd_status() -> impl Strategy<Value = PdStatus> {
    let store_report = (store(), prop::option::of(0..u64::MAX), any::<u64>()).prop_map(
        |(store, heartbeat_age_ms, heartbeats)| StoreReport {
            store,
            heartbeat_age_ms,
            heartbeats,
        },
    );
    (
        any::<u64>(),
        any::<u64>(),
        prop::collection::vec(store_report, 0..3),
        prop::collection::vec(report(), 0..4),
        prop::collection::vec(move_order(), 0..3),
    )
        .prop_map(
            |(cluster, next_region_id, stores, regions, moves)| PdStatus {
                cluster_id: ClusterId(cluster),
                next_region_id,
                stores,
                regions,
                moves,
            },
        )
}

fn request() -> impl Strategy<Value = ClientRequest> {
    (
        any::<u64>(),
        "[a-z/]{0,16}",
        any::<bool>(),
        1..=u64::MAX,
        epoch(),
        op(),
    )
        .prop_map(
            |(request_id, namespace, strong, region, epoch, op)| ClientRequest {
                request_id,
                namespace,
                mode: if strong { Mode::Strong } else { Mode::Raw },
                region_id: RegionId(region),
                epoch,
                op,
            },
        )
}

fn optional_node() -> impl Strategy<Value = Option<NodeId>> {
    prop::option::of((1..=u64::MAX).prop_map(NodeId))
}

fn region() -> impl Strategy<Value = RegionDescriptor> {
    let peers = prop::collection::vec((1..=u64::MAX).prop_map(NodeId), 0..5);
    (
        1..=u64::MAX,
        bytes(8),
        bytes(8),
        epoch(),
        peers,
        optional_node(),
    )
        .prop_map(|(id, a, b, epoch, peers, leader)| {
            let (start_key, end_key) = if a < b { (a, b) } else { (b, Vec::new()) };
            RegionDescriptor {
                region_id: RegionId(id),
                start_key,
                end_key,
                epoch,
                peers,
                leader,
            }
        })
}

fn store() -> impl Strategy<Value = StoreDescriptor> {
    let addrs = prop::collection::vec("[0-9.:]{1,21}", 0..3);
    (1..=u64::MAX, addrs.clone(), any::<u32>(), addrs).prop_map(
        |(node, client_addrs, cores, peer_addrs)| StoreDescriptor {
            node_id: NodeId(node),
            client_addrs,
            cores,
            peer_addrs,
        },
    )
}

fn status() -> impl Strategy<Value = NodeStatus> {
    let region_status = (
        1..=u64::MAX,
        any::<u32>(),
        optional_node(),
        any::<[u64; 5]>(),
        prop::option::of(region()),
        prop::collection::vec((1..=u64::MAX).prop_map(NodeId), 0..3),
    )
        .prop_map(
            |(id, core, leader, [term, commit, applied, bytes, keys], region, learners)| {
                RegionStatus {
                    region_id: RegionId(id),
                    core: CoreId(core),
                    leader,
                    term: Term(term),
                    commit_index: LogIndex(commit),
                    applied_index: LogIndex(applied),
                    region,
                    approximate_bytes: bytes,
                    keys,
                    learners,
                }
            },
        );
    let regions = prop::collection::vec(region_status, 0..4);
    (1..=u64::MAX, any::<u64>(), any::<u32>(), regions).prop_map(
        |(node, cluster, cores, regions)| NodeStatus {
            node_id: NodeId(node),
            cluster_id: ClusterId(cluster),
            cores,
            regions,
        },
    )
}

fn reply() -> impl Strategy<Value = ClientReply> {
    let item = (bytes(8), bytes(8), any::<u64>()).prop_map(|(key, value, version)| KeyValue {
        key,
        value,
        version,
    });
    let found =
        (bytes(16), any::<u64>()).prop_map(|(value, version)| VersionedValue { value, version });
    prop_oneof![
        any::<u64>().prop_map(|version| ClientReply::Written { version }),
        prop::option::of(found).prop_map(|value| ClientReply::Value { value }),
        (prop::collection::vec(item, 0..5), any::<bool>())
            .prop_map(|(items, more)| ClientReply::Scan { items, more }),
        (
            prop::collection::vec(region(), 0..4),
            prop::collection::vec(store(), 0..3)
        )
            .prop_map(|(regions, stores)| ClientReply::Regions { regions, stores }),
        status().prop_map(ClientReply::Status),
        (
            any::<bool>(),
            1..=u64::MAX,
            prop::collection::vec(region(), 0..4),
            prop::collection::vec(store(), 0..3)
        )
            .prop_map(|(ready, cluster, regions, stores)| ClientReply::Joined {
                ready,
                cluster_id: tessera_transport::ClusterId(cluster),
                regions,
                stores,
            }),
        Just(ClientReply::Ack),
        (1..=u64::MAX).prop_map(|id| ClientReply::SplitIds {
            new_region_id: RegionId(id)
        }),
        pd_status().prop_map(ClientReply::Pd),
        (
            prop::collection::vec(move_order(), 0..3),
            prop::collection::vec(region(), 0..3),
            prop::collection::vec(store(), 0..3)
        )
            .prop_map(|(moves, stale, stores)| ClientReply::Heartbeat {
                moves,
                stale,
                stores
            }),
        (any::<bool>(), "[a-z ]{0,20}")
            .prop_map(|(done, detail)| ClientReply::MoveStep { done, detail }),
    ]
}

fn error() -> impl Strategy<Value = ClientError> {
    prop_oneof![
        (optional_node(), prop::option::of("[a-z0-9.:]{0,20}")).prop_map(
            |(leader, leader_addr)| ClientError::NotLeader {
                leader,
                leader_addr
            }
        ),
        prop::collection::vec(region(), 0..3)
            .prop_map(|regions| ClientError::StaleEpoch { regions }),
        (bytes(8), 1..=u64::MAX, bytes(8), bytes(8)).prop_map(|(key, id, start_key, end_key)| {
            ClientError::KeyNotInRegion {
                key,
                region_id: RegionId(id),
                start_key,
                end_key,
            }
        }),
        (1..=u64::MAX).prop_map(|id| ClientError::RegionNotFound {
            region_id: RegionId(id)
        }),
        any::<u32>().prop_map(|core| ClientError::WrongCore { core: CoreId(core) }),
        any::<u64>().prop_map(|current_version| ClientError::VersionMismatch { current_version }),
        Just(ClientError::ServerBusy),
        ".{0,40}".prop_map(|message| ClientError::InvalidRequest { message }),
        ".{0,40}".prop_map(|message| ClientError::Internal { message }),
        ".{0,40}".prop_map(|message| ClientError::OutcomeUnknown { message }),
    ]
}

fn response() -> impl Strategy<Value = ClientResponse> {
    let result = prop_oneof![reply().prop_map(Ok), error().prop_map(Err)];
    (any::<u64>(), result).prop_map(|(request_id, result)| ClientResponse { request_id, result })
}

proptest! {
    #[test]
    fn client_requests_round_trip(request in request()) {
        let payload = encode_client_request(&request);
        prop_assert_eq!(decode_client_request(&payload, &DecodeLimits::default()).unwrap(), request);
    }

    #[test]
    fn client_responses_round_trip(response in response()) {
        let payload = encode_client_response(&response);
        prop_assert_eq!(decode_client_response(&payload, &DecodeLimits::default()).unwrap(), response);
    }

    #[test]
    fn mangled_client_frames_never_panic(
        response in response(),
        request in request(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        xor in 1..=255u8,
    ) {
        let limits = DecodeLimits::default();
        for payload in [encode_client_request(&request), encode_client_response(&response)] {
            let _ = decode_client_request(&payload[..cut.index(payload.len())], &limits);
            let _ = decode_client_response(&payload[..cut.index(payload.len())], &limits);
            let mut flipped = payload.clone();
            flipped[flip.index(payload.len())] ^= xor;
            let _ = decode_client_request(&flipped, &limits);
            let _ = decode_client_response(&flipped, &limits);
        }
    }
}

fn get(region: u64, key: Vec<u8>) -> ClientRequest {
    ClientRequest {
        request_id: 1,
        namespace: "ns".into(),
        mode: Mode::Strong,
        region_id: RegionId(region),
        epoch: RegionEpoch::default(),
        op: ClientOp::Get { key },
    }
}

fn refused(request: &ClientRequest, limits: &DecodeLimits) -> TransportError {
    decode_client_request(&encode_client_request(request), limits).unwrap_err()
}

#[test]
fn out_of_range_requests_are_typed_errors() {
    let limits = DecodeLimits {
        key_bytes_max: 4,
        namespace_bytes_max: 3,
        ..DecodeLimits::default()
    };
    assert!(matches!(
        refused(&get(0, b"k".to_vec()), &limits),
        TransportError::InvalidField {
            field: "region_id",
            ..
        }
    ));
    assert!(matches!(
        refused(&get(1, b"kkkkk".to_vec()), &limits),
        TransportError::TooMany { field: "key", .. }
    ));
    let mut long_namespace = get(1, b"k".to_vec());
    long_namespace.namespace = "abcd".into();
    assert!(matches!(
        refused(&long_namespace, &limits),
        TransportError::TooMany {
            field: "namespace",
            ..
        }
    ));
    let mut scan = get(1, Vec::new());
    for (start, end, limit, field) in [
        (b"b".to_vec(), b"a".to_vec(), 10, "scan.end"),
        (b"a".to_vec(), b"a".to_vec(), 10, "scan.end"),
        (b"a".to_vec(), Vec::new(), 0, "scan.limit"),
        (b"a".to_vec(), Vec::new(), 10_001, "scan.limit"),
    ] {
        scan.op = ClientOp::Scan { start, end, limit };
        match refused(&scan, &DecodeLimits::default()) {
            TransportError::InvalidField { field: got, .. } => assert_eq!(got, field),
            other => panic!("expected {field}, got {other}"),
        }
    }
    let mut routing = get(0, Vec::new());
    routing.op = ClientOp::Regions;
    assert!(decode_client_request(&encode_client_request(&routing), &limits).is_ok());
}

#[test]
fn unknown_mode_or_missing_op_is_refused() {
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let root = fb::ClientRequest::create(
        &mut fbb,
        &fb::ClientRequestArgs {
            request_id: 1,
            mode: fb::Mode(9),
            region_id: 1,
            ..Default::default()
        },
    );
    fbb.finish(root, Some("TCLI"));
    let err = decode_client_request(fbb.finished_data(), &DecodeLimits::default()).unwrap_err();
    assert!(matches!(
        err,
        TransportError::InvalidField { field: "mode", .. }
    ));
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let root = fb::ClientRequest::create(&mut fbb, &fb::ClientRequestArgs::default());
    fbb.finish(root, Some("TCLI"));
    let err = decode_client_request(fbb.finished_data(), &DecodeLimits::default()).unwrap_err();
    assert!(matches!(
        err,
        TransportError::InvalidField { field: "op", .. }
    ));
}

#[test]
fn bad_region_descriptors_in_responses_are_refused() {
    let bad = RegionDescriptor {
        region_id: RegionId(1),
        start_key: b"m".to_vec(),
        end_key: b"a".to_vec(),
        epoch: RegionEpoch::default(),
        peers: vec![NodeId(1)],
        leader: None,
    };
    let response = ClientResponse {
        request_id: 3,
        result: Err(ClientError::StaleEpoch { regions: vec![bad] }),
    };
    let err = decode_client_response(&encode_client_response(&response), &DecodeLimits::default());
    assert!(matches!(
        err,
        Err(TransportError::InvalidField {
            field: "region.end_key",
            ..
        })
    ));
}
