//! Client requests to and from `tessera.client.ClientRequest` (schema
//! `transport/schema/client.fbs`), frame type [`crate::FrameType::ClientRequest`].
//!
//! Decoding verifies the buffer with the configured [`DecodeLimits`] and then checks:
//!
//! 1. the namespace, keys and values are within `namespace_bytes_max`, `key_bytes_max` and
//!    `value_bytes_max`;
//! 2. the mode and the operation are known and present;
//! 3. an operation on keys names a Region other than 0;
//! 4. scan limits are in `1..=scan_limit_max`, and a scan's `start < end` unless `end` is
//!    empty (unbounded).

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};
use tessera_core::{NodeId, RegionId};

use crate::client::{ClientOp, ClientRequest, Mode, RegionEpoch};
use crate::generated::client as fb;
use crate::verify::{bytes, text, verified_root};
use crate::{DecodeLimits, TransportError};

const FRAME: &str = "ClientRequest";
/// The file identifier of both client frames.
pub(crate) const CLIENT_IDENTIFIER: &str = "TCLI";

/// Encodes a request payload. Never fails; the receiver checks the limits.
pub fn encode_client_request(request: &ClientRequest) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(128 + op_size_bytes(&request.op));
    let namespace = fbb.create_string(&request.namespace);
    let (op_type, op) = encode_op(&mut fbb, &request.op);
    let epoch = fb::RegionEpoch::new(request.epoch.version, request.epoch.conf_version);
    let mode = match request.mode {
        Mode::Raw => fb::Mode::Raw,
        Mode::Strong => fb::Mode::Strong,
    };
    let root = fb::ClientRequest::create(
        &mut fbb,
        &fb::ClientRequestArgs {
            request_id: request.request_id,
            namespace: Some(namespace),
            mode,
            region_id: request.region_id.get(),
            epoch: Some(&epoch),
            op_type,
            op: Some(op),
        },
    );
    fbb.finish(root, Some(CLIENT_IDENTIFIER));
    fbb.finished_data().to_vec()
}

fn op_size_bytes(op: &ClientOp) -> usize {
    match op {
        ClientOp::Put { key, value } | ClientOp::Cas { key, value, .. } => key.len() + value.len(),
        ClientOp::Get { key } | ClientOp::Delete { key } | ClientOp::CasDelete { key, .. } => {
            key.len()
        }
        ClientOp::Scan { start, end, .. } => start.len() + end.len(),
        ClientOp::ScanPrefix { prefix, .. } => prefix.len(),
        ClientOp::Regions
        | ClientOp::Status
        | ClientOp::AskSplit
        | ClientOp::PdStatus
        | ClientOp::MoveRegion { .. }
        | ClientOp::CancelMove
        | ClientOp::MoveStep { .. }
        | ClientOp::DestroyReplica => 0,
        ClientOp::LearnStores { stores } => 128 * stores.len(),
        ClientOp::Join { store } => 64 * (store.client_addrs.len() + store.peer_addrs.len()),
        ClientOp::StoreHeartbeat { regions, .. } => 128 * regions.len(),
        ClientOp::Split { key, .. } => key.len(),
    }
}

fn encode_op(
    fbb: &mut FlatBufferBuilder<'_>,
    op: &ClientOp,
) -> (fb::Op, WIPOffset<UnionWIPOffset>) {
    match op {
        ClientOp::Put { key, value } => {
            let key = Some(fbb.create_vector(key));
            let value = Some(fbb.create_vector(value));
            let table = fb::Put::create(fbb, &fb::PutArgs { key, value });
            (fb::Op::Put, table.as_union_value())
        }
        ClientOp::Get { key } => {
            let key = Some(fbb.create_vector(key));
            (
                fb::Op::Get,
                fb::Get::create(fbb, &fb::GetArgs { key }).as_union_value(),
            )
        }
        ClientOp::Delete { key } => {
            let key = Some(fbb.create_vector(key));
            let table = fb::Delete::create(fbb, &fb::DeleteArgs { key });
            (fb::Op::Delete, table.as_union_value())
        }
        ClientOp::Scan { start, end, limit } => {
            let start = Some(fbb.create_vector(start));
            let end = Some(fbb.create_vector(end));
            let args = fb::ScanArgs {
                start,
                end,
                limit: *limit,
            };
            (fb::Op::Scan, fb::Scan::create(fbb, &args).as_union_value())
        }
        ClientOp::ScanPrefix { prefix, limit } => {
            let prefix = Some(fbb.create_vector(prefix));
            let args = fb::ScanPrefixArgs {
                prefix,
                limit: *limit,
            };
            (
                fb::Op::ScanPrefix,
                fb::ScanPrefix::create(fbb, &args).as_union_value(),
            )
        }
        ClientOp::Cas { .. } | ClientOp::CasDelete { .. } => encode_cas(fbb, op),
        ClientOp::Regions => {
            let table = fb::Regions::create(fbb, &fb::RegionsArgs {});
            (fb::Op::Regions, table.as_union_value())
        }
        ClientOp::Status => {
            let table = fb::Status::create(fbb, &fb::StatusArgs {});
            (fb::Op::Status, table.as_union_value())
        }
        ClientOp::Join { store } => {
            let store = Some(crate::client_response_codec::encode_store(fbb, store));
            let table = fb::Join::create(fbb, &fb::JoinArgs { store });
            (fb::Op::Join, table.as_union_value())
        }
        _ => encode_placement_op(fbb, op),
    }
}

/// The operations addressed to the placement driver, and `Split`.
fn encode_placement_op(
    fbb: &mut FlatBufferBuilder<'_>,
    op: &ClientOp,
) -> (fb::Op, WIPOffset<UnionWIPOffset>) {
    match op {
        ClientOp::StoreHeartbeat { node_id, regions } => {
            let regions = Some(crate::client_response_codec::encode_reports(fbb, regions));
            let args = fb::StoreHeartbeatArgs {
                node_id: node_id.get(),
                regions,
            };
            let table = fb::StoreHeartbeat::create(fbb, &args);
            (fb::Op::StoreHeartbeat, table.as_union_value())
        }
        ClientOp::AskSplit => {
            let table = fb::AskSplit::create(fbb, &fb::AskSplitArgs {});
            (fb::Op::AskSplit, table.as_union_value())
        }
        ClientOp::Split { key, new_region_id } => {
            let key = Some(fbb.create_vector(key));
            let args = fb::SplitArgs {
                key,
                new_region_id: new_region_id.get(),
            };
            (
                fb::Op::Split,
                fb::Split::create(fbb, &args).as_union_value(),
            )
        }
        ClientOp::PdStatus => {
            let table = fb::PdStatus::create(fbb, &fb::PdStatusArgs {});
            (fb::Op::PdStatus, table.as_union_value())
        }
        _ => encode_membership_op(fbb, op),
    }
}

/// The operations that move replicas and add stores.
fn encode_membership_op(
    fbb: &mut FlatBufferBuilder<'_>,
    op: &ClientOp,
) -> (fb::Op, WIPOffset<UnionWIPOffset>) {
    match op {
        ClientOp::MoveRegion { from, to } => {
            let args = fb::MoveRegionArgs {
                from: from.0,
                to: to.0,
            };
            let table = fb::MoveRegion::create(fbb, &args);
            (fb::Op::MoveRegion, table.as_union_value())
        }
        ClientOp::MoveStep { from, to } => {
            let args = fb::MoveStepArgs {
                from: from.0,
                to: to.0,
            };
            let table = fb::MoveStep::create(fbb, &args);
            (fb::Op::MoveStep, table.as_union_value())
        }
        ClientOp::DestroyReplica => {
            let table = fb::DestroyReplica::create(fbb, &fb::DestroyReplicaArgs {});
            (fb::Op::DestroyReplica, table.as_union_value())
        }
        ClientOp::CancelMove => {
            let table = fb::CancelMove::create(fbb, &fb::CancelMoveArgs {});
            (fb::Op::CancelMove, table.as_union_value())
        }
        ClientOp::LearnStores { stores } => {
            let offsets: Vec<_> = stores
                .iter()
                .map(|s| crate::client_response_codec::encode_store(fbb, s))
                .collect();
            let stores = Some(fbb.create_vector(&offsets));
            let table = fb::LearnStores::create(fbb, &fb::LearnStoresArgs { stores });
            (fb::Op::LearnStores, table.as_union_value())
        }
        other => unreachable!("encode_placement_op called with {}", other.name()),
    }
}

fn encode_cas(
    fbb: &mut FlatBufferBuilder<'_>,
    op: &ClientOp,
) -> (fb::Op, WIPOffset<UnionWIPOffset>) {
    match op {
        ClientOp::Cas {
            key,
            expected_version,
            value,
        } => {
            let key = Some(fbb.create_vector(key));
            let value = Some(fbb.create_vector(value));
            let args = fb::CasArgs {
                key,
                expected_version: *expected_version,
                value,
            };
            (fb::Op::Cas, fb::Cas::create(fbb, &args).as_union_value())
        }
        ClientOp::CasDelete {
            key,
            expected_version,
        } => {
            let key = Some(fbb.create_vector(key));
            let args = fb::CasDeleteArgs {
                key,
                expected_version: *expected_version,
            };
            (
                fb::Op::CasDelete,
                fb::CasDelete::create(fbb, &args).as_union_value(),
            )
        }
        other => unreachable!("encode_cas called with {}", other.name()),
    }
}

/// Verifies and decodes a request payload.
///
/// # Errors
/// Verification errors, [`TransportError::TooMany`] past a size limit, and
/// [`TransportError::InvalidField`] for the checks in the module documentation.
pub fn decode_client_request(
    payload: &[u8],
    limits: &DecodeLimits,
) -> Result<ClientRequest, TransportError> {
    let root = verified_root::<fb::ClientRequest>(FRAME, CLIENT_IDENTIFIER, payload, limits)?;
    let namespace = text(
        FRAME,
        "namespace",
        root.namespace(),
        limits.namespace_bytes_max,
    )?;
    let mode = match root.mode() {
        fb::Mode::Raw => Mode::Raw,
        fb::Mode::Strong => Mode::Strong,
        other => {
            let reason = format!("unknown mode {}", other.0);
            return Err(TransportError::invalid(FRAME, "mode", reason));
        }
    };
    let op = decode_op(&root, limits)?;
    if op.targets_region() && root.region_id() == 0 {
        return Err(TransportError::invalid(
            FRAME,
            "region_id",
            "region id 0 is reserved",
        ));
    }
    let epoch = root
        .epoch()
        .map_or_else(RegionEpoch::default, |e| RegionEpoch {
            version: e.version(),
            conf_version: e.conf_version(),
        });
    Ok(ClientRequest {
        request_id: root.request_id(),
        namespace,
        mode,
        region_id: RegionId(root.region_id()),
        epoch,
        op,
    })
}

fn present<T>(value: Option<T>) -> Result<T, TransportError> {
    value.ok_or_else(|| TransportError::invalid(FRAME, "op", "union value does not match tag"))
}

fn decode_op(
    root: &fb::ClientRequest<'_>,
    limits: &DecodeLimits,
) -> Result<ClientOp, TransportError> {
    let key = |v| bytes(FRAME, "key", v, limits.key_bytes_max);
    let value = |v| bytes(FRAME, "value", v, limits.value_bytes_max);
    let op = match root.op_type() {
        fb::Op::Put => {
            let op = present(root.op_as_put())?;
            ClientOp::Put {
                key: key(op.key())?,
                value: value(op.value())?,
            }
        }
        fb::Op::Get => ClientOp::Get {
            key: key(present(root.op_as_get())?.key())?,
        },
        fb::Op::Delete => ClientOp::Delete {
            key: key(present(root.op_as_delete())?.key())?,
        },
        fb::Op::Scan => {
            let op = present(root.op_as_scan())?;
            let start = key(op.start())?;
            let end = key(op.end())?;
            if !end.is_empty() && start >= end {
                return Err(TransportError::invalid(
                    FRAME,
                    "scan.end",
                    "end is not after start",
                ));
            }
            ClientOp::Scan {
                start,
                end,
                limit: scan_limit(op.limit(), limits)?,
            }
        }
        fb::Op::ScanPrefix => {
            let op = present(root.op_as_scan_prefix())?;
            let prefix = key(op.prefix())?;
            ClientOp::ScanPrefix {
                prefix,
                limit: scan_limit(op.limit(), limits)?,
            }
        }
        fb::Op::Cas => {
            let op = present(root.op_as_cas())?;
            let expected_version = op.expected_version();
            ClientOp::Cas {
                key: key(op.key())?,
                expected_version,
                value: value(op.value())?,
            }
        }
        fb::Op::CasDelete => {
            let op = present(root.op_as_cas_delete())?;
            ClientOp::CasDelete {
                key: key(op.key())?,
                expected_version: op.expected_version(),
            }
        }
        fb::Op::Regions => ClientOp::Regions,
        fb::Op::Status => ClientOp::Status,
        fb::Op::Join => {
            let join = present(root.op_as_join())?;
            let store = present(join.store())?;
            ClientOp::Join {
                store: crate::client_response_codec::decode_store(store, limits)?,
            }
        }
        fb::Op::StoreHeartbeat => {
            let heartbeat = present(root.op_as_store_heartbeat())?;
            ClientOp::StoreHeartbeat {
                node_id: crate::verify::node_id(FRAME, "heartbeat.node_id", heartbeat.node_id())?,
                regions: crate::client_response_codec::decode_reports(
                    heartbeat.regions().unwrap_or_default(),
                    limits,
                )?,
            }
        }
        fb::Op::AskSplit => {
            present(root.op_as_ask_split())?;
            ClientOp::AskSplit
        }
        fb::Op::Split => {
            let split = present(root.op_as_split())?;
            if split.new_region_id() == 0 {
                return Err(TransportError::invalid(
                    FRAME,
                    "split.new_region_id",
                    "region id 0 is reserved",
                ));
            }
            ClientOp::Split {
                key: key(split.key())?,
                new_region_id: RegionId(split.new_region_id()),
            }
        }
        fb::Op::PdStatus => {
            present(root.op_as_pd_status())?;
            ClientOp::PdStatus
        }
        fb::Op::MoveRegion => {
            let op = present(root.op_as_move_region())?;
            ClientOp::MoveRegion {
                from: NodeId(op.from()),
                to: crate::verify::node_id(FRAME, "move.to", op.to())?,
            }
        }
        fb::Op::MoveStep => {
            let op = present(root.op_as_move_step())?;
            ClientOp::MoveStep {
                from: crate::verify::node_id(FRAME, "move_step.from", op.from())?,
                to: crate::verify::node_id(FRAME, "move_step.to", op.to())?,
            }
        }
        fb::Op::DestroyReplica => {
            present(root.op_as_destroy_replica())?;
            ClientOp::DestroyReplica
        }
        fb::Op::CancelMove => {
            present(root.op_as_cancel_move())?;
            ClientOp::CancelMove
        }
        fb::Op::LearnStores => {
            let op = present(root.op_as_learn_stores())?;
            ClientOp::LearnStores {
                stores: crate::client_response_codec::decode_stores(
                    op.stores().unwrap_or_default(),
                    limits,
                )?,
            }
        }
        fb::Op::NONE => return Err(TransportError::invalid(FRAME, "op", "missing")),
        other => {
            let reason = format!("unknown operation tag {}", other.0);
            return Err(TransportError::invalid(FRAME, "op", reason));
        }
    };
    Ok(op)
}

fn scan_limit(limit: u32, limits: &DecodeLimits) -> Result<u32, TransportError> {
    if limit == 0 || limit > limits.scan_limit_max {
        let reason = format!("{limit} is not in 1..={}", limits.scan_limit_max);
        return Err(TransportError::invalid(FRAME, "scan.limit", reason));
    }
    Ok(limit)
}
