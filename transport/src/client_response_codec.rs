//! Client responses to and from `tessera.client.ClientResponse` (schema
//! `transport/schema/client.fbs`), frame type [`crate::FrameType::ClientResponse`].
//!
//! Decoding (done by the client library) verifies the buffer with the configured
//! [`DecodeLimits`] and then checks: the outcome is known and present; keys, values, texts and
//! lists are within their limits; Region descriptors have a Region id other than 0, no peer 0,
//! and `start_key < end_key` unless `end_key` is empty; stores have a node id other than 0.

use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, UnionWIPOffset, Vector, WIPOffset};
use tessera_core::{LogIndex, NodeId, RegionId, Term};

use crate::client::{
    ClientError, ClientReply, ClientResponse, KeyValue, MoveOrder, NodeStatus, PdStatus,
    RegionDescriptor, RegionEpoch, RegionReport, RegionStatus, StoreDescriptor, StoreReport,
    VersionedValue,
};
use crate::client_request_codec::CLIENT_IDENTIFIER;
use crate::generated::client as fb;
use crate::verify::{bytes, node_id, text, verified_root};
use crate::{ClusterId, CoreId, DecodeLimits, TransportError};

const FRAME: &str = "ClientResponse";

type Union = WIPOffset<UnionWIPOffset>;

/// Encodes a response payload. Never fails; the receiver checks the limits.
pub fn encode_client_response(response: &ClientResponse) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(256);
    let (outcome_type, outcome) = match &response.result {
        Ok(reply) => encode_reply(&mut fbb, reply),
        Err(error) => encode_error(&mut fbb, error),
    };
    let args = fb::ClientResponseArgs {
        request_id: response.request_id,
        outcome_type,
        outcome: Some(outcome),
    };
    let root = fb::ClientResponse::create(&mut fbb, &args);
    fbb.finish(root, Some(CLIENT_IDENTIFIER));
    fbb.finished_data().to_vec()
}

fn encode_reply(fbb: &mut FlatBufferBuilder<'_>, reply: &ClientReply) -> (fb::Outcome, Union) {
    match reply {
        ClientReply::Written { version } => {
            let table = fb::Written::create(fbb, &fb::WrittenArgs { version: *version });
            (fb::Outcome::Written, table.as_union_value())
        }
        ClientReply::Value { value } => {
            let args = match value {
                Some(found) => fb::ValueArgs {
                    found: true,
                    value: Some(fbb.create_vector(&found.value)),
                    version: found.version,
                },
                None => fb::ValueArgs::default(),
            };
            (
                fb::Outcome::Value,
                fb::Value::create(fbb, &args).as_union_value(),
            )
        }
        ClientReply::Scan { items, more } => {
            let offsets: Vec<_> = items
                .iter()
                .map(|item| encode_key_value(fbb, item))
                .collect();
            let items = Some(fbb.create_vector(&offsets));
            let args = fb::ScanResultArgs { items, more: *more };
            (
                fb::Outcome::ScanResult,
                fb::ScanResult::create(fbb, &args).as_union_value(),
            )
        }
        ClientReply::Regions { regions, stores } => {
            let regions = Some(encode_regions(fbb, regions));
            let offsets: Vec<_> = stores
                .iter()
                .map(|store| encode_store(fbb, store))
                .collect();
            let stores = Some(fbb.create_vector(&offsets));
            let table = fb::RegionsResult::create(fbb, &fb::RegionsResultArgs { regions, stores });
            (fb::Outcome::RegionsResult, table.as_union_value())
        }
        ClientReply::Status(status) => (fb::Outcome::StatusResult, encode_status(fbb, status)),
        ClientReply::Joined {
            ready,
            cluster_id,
            regions,
            stores,
        } => {
            let regions = Some(encode_regions(fbb, regions));
            let offsets: Vec<_> = stores.iter().map(|s| encode_store(fbb, s)).collect();
            let stores = Some(fbb.create_vector(&offsets));
            let args = fb::JoinResultArgs {
                ready: *ready,
                cluster_id: cluster_id.0,
                regions,
                stores,
            };
            let table = fb::JoinResult::create(fbb, &args);
            (fb::Outcome::JoinResult, table.as_union_value())
        }
        ClientReply::Ack => {
            let table = fb::Ack::create(fbb, &fb::AckArgs {});
            (fb::Outcome::Ack, table.as_union_value())
        }
        ClientReply::SplitIds { new_region_id } => {
            let args = fb::SplitIdsArgs {
                new_region_id: new_region_id.get(),
            };
            let table = fb::SplitIds::create(fbb, &args);
            (fb::Outcome::SplitIds, table.as_union_value())
        }
        ClientReply::Pd(status) => (fb::Outcome::PdStatusResult, encode_pd_status(fbb, status)),
        ClientReply::MoveStep { done, detail } => {
            let detail = Some(fbb.create_string(detail));
            let args = fb::MoveStepResultArgs {
                done: *done,
                detail,
            };
            let table = fb::MoveStepResult::create(fbb, &args);
            (fb::Outcome::MoveStepResult, table.as_union_value())
        }
        ClientReply::Heartbeat {
            moves,
            stale,
            stores,
        } => (
            fb::Outcome::HeartbeatResult,
            encode_heartbeat(fbb, moves, stale, stores),
        ),
    }
}

fn encode_heartbeat(
    fbb: &mut FlatBufferBuilder<'_>,
    moves: &[MoveOrder],
    stale: &[RegionDescriptor],
    stores: &[StoreDescriptor],
) -> Union {
    let moves = Some(encode_moves(fbb, moves));
    let stale = Some(encode_regions(fbb, stale));
    let offsets: Vec<_> = stores.iter().map(|s| encode_store(fbb, s)).collect();
    let stores = Some(fbb.create_vector(&offsets));
    let args = fb::HeartbeatResultArgs {
        moves,
        stale,
        stores,
    };
    fb::HeartbeatResult::create(fbb, &args).as_union_value()
}

fn encode_moves<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    moves: &[MoveOrder],
) -> WIPOffset<Vector<'a, ForwardsUOffset<fb::MoveOrder<'a>>>> {
    let offsets: Vec<_> = moves
        .iter()
        .map(|m| {
            let args = fb::MoveOrderArgs {
                region_id: m.region_id.0,
                from: m.from.0,
                to: m.to.0,
                rollback: m.rollback,
            };
            fb::MoveOrder::create(fbb, &args)
        })
        .collect();
    fbb.create_vector(&offsets)
}

fn decode_moves(
    moves: Vector<'_, ForwardsUOffset<fb::MoveOrder<'_>>>,
    limits: &DecodeLimits,
) -> Result<Vec<MoveOrder>, TransportError> {
    TransportError::check_count(FRAME, "moves", moves.len(), limits.regions_max)?;
    moves
        .iter()
        .map(|m| {
            Ok(MoveOrder {
                region_id: nonzero_region(m.region_id())?,
                from: node_id(FRAME, "move.from", m.from())?,
                to: node_id(FRAME, "move.to", m.to())?,
                rollback: m.rollback(),
            })
        })
        .collect()
}

fn decode_heartbeat(
    result: fb::HeartbeatResult<'_>,
    limits: &DecodeLimits,
) -> Result<ClientReply, TransportError> {
    Ok(ClientReply::Heartbeat {
        moves: decode_moves(result.moves().unwrap_or_default(), limits)?,
        stale: decode_regions(result.stale().unwrap_or_default(), limits)?,
        stores: decode_stores(result.stores().unwrap_or_default(), limits)?,
    })
}

fn encode_pd_status(fbb: &mut FlatBufferBuilder<'_>, status: &PdStatus) -> Union {
    let offsets: Vec<_> = status
        .stores
        .iter()
        .map(|report| {
            let store = Some(encode_store(fbb, &report.store));
            let args = fb::StoreReportArgs {
                store,
                heartbeat_age_ms: report.heartbeat_age_ms.unwrap_or(u64::MAX),
                heartbeats: report.heartbeats,
            };
            fb::StoreReport::create(fbb, &args)
        })
        .collect();
    let stores = Some(fbb.create_vector(&offsets));
    let regions = Some(encode_reports(fbb, &status.regions));
    let moves = Some(encode_moves(fbb, &status.moves));
    let args = fb::PdStatusResultArgs {
        cluster_id: status.cluster_id.get(),
        next_region_id: status.next_region_id,
        stores,
        regions,
        moves,
    };
    fb::PdStatusResult::create(fbb, &args).as_union_value()
}

/// Encodes Region reports (shared with the request codec's `StoreHeartbeat`).
pub(crate) fn encode_reports<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    reports: &[RegionReport],
) -> WIPOffset<Vector<'a, ForwardsUOffset<fb::RegionReport<'a>>>> {
    let offsets: Vec<_> = reports
        .iter()
        .map(|report| {
            let region = Some(encode_region(fbb, &report.region));
            let args = fb::RegionReportArgs {
                region,
                approximate_bytes: report.approximate_bytes,
                keys: report.keys,
            };
            fb::RegionReport::create(fbb, &args)
        })
        .collect();
    fbb.create_vector(&offsets)
}

/// Decodes Region reports (shared with the request codec's `StoreHeartbeat`).
pub(crate) fn decode_reports(
    list: Vector<'_, ForwardsUOffset<fb::RegionReport<'_>>>,
    limits: &DecodeLimits,
) -> Result<Vec<RegionReport>, TransportError> {
    TransportError::check_count(FRAME, "reports", list.len(), limits.regions_max)?;
    list.iter()
        .map(|report| {
            Ok(RegionReport {
                region: decode_region(present(report.region())?, limits)?,
                approximate_bytes: report.approximate_bytes(),
                keys: report.keys(),
            })
        })
        .collect()
}

fn decode_pd_status(
    status: fb::PdStatusResult<'_>,
    limits: &DecodeLimits,
) -> Result<PdStatus, TransportError> {
    let list = status.stores().unwrap_or_default();
    TransportError::check_count(FRAME, "pd.stores", list.len(), limits.stores_max)?;
    let stores = list
        .iter()
        .map(|report| {
            Ok(StoreReport {
                store: decode_store(present(report.store())?, limits)?,
                heartbeat_age_ms: (report.heartbeat_age_ms() != u64::MAX)
                    .then_some(report.heartbeat_age_ms()),
                heartbeats: report.heartbeats(),
            })
        })
        .collect::<Result<Vec<_>, TransportError>>()?;
    Ok(PdStatus {
        cluster_id: ClusterId(status.cluster_id()),
        next_region_id: status.next_region_id(),
        stores,
        regions: decode_reports(status.regions().unwrap_or_default(), limits)?,
        moves: decode_moves(status.moves().unwrap_or_default(), limits)?,
    })
}

fn encode_key_value<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    item: &KeyValue,
) -> WIPOffset<fb::KeyValue<'a>> {
    let key = Some(fbb.create_vector(&item.key));
    let value = Some(fbb.create_vector(&item.value));
    let args = fb::KeyValueArgs {
        key,
        value,
        version: item.version,
    };
    fb::KeyValue::create(fbb, &args)
}

fn encode_regions<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    regions: &[RegionDescriptor],
) -> WIPOffset<Vector<'a, ForwardsUOffset<fb::RegionDescriptor<'a>>>> {
    let offsets: Vec<_> = regions
        .iter()
        .map(|region| encode_region(fbb, region))
        .collect();
    fbb.create_vector(&offsets)
}

fn encode_region<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    region: &RegionDescriptor,
) -> WIPOffset<fb::RegionDescriptor<'a>> {
    let start_key = Some(fbb.create_vector(&region.start_key));
    let end_key = Some(fbb.create_vector(&region.end_key));
    let peers: Vec<u64> = region.peers.iter().map(|id| id.get()).collect();
    let peers = Some(fbb.create_vector(&peers));
    let epoch = fb::RegionEpoch::new(region.epoch.version, region.epoch.conf_version);
    let args = fb::RegionDescriptorArgs {
        region_id: region.region_id.get(),
        start_key,
        end_key,
        epoch: Some(&epoch),
        peers,
        leader: region.leader.map_or(0, NodeId::get),
    };
    fb::RegionDescriptor::create(fbb, &args)
}

/// Encodes one store descriptor (shared with the request codec's `Join`).
pub(crate) fn encode_store<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    store: &StoreDescriptor,
) -> WIPOffset<fb::StoreDescriptor<'a>> {
    let mut strings = |list: &[String]| {
        let offsets: Vec<_> = list.iter().map(|a| fbb.create_string(a)).collect();
        fbb.create_vector(&offsets)
    };
    let client_addrs = Some(strings(&store.client_addrs));
    let peer_addrs = Some(strings(&store.peer_addrs));
    let args = fb::StoreDescriptorArgs {
        node_id: store.node_id.get(),
        client_addrs,
        cores: store.cores,
        peer_addrs,
    };
    fb::StoreDescriptor::create(fbb, &args)
}

fn encode_status(fbb: &mut FlatBufferBuilder<'_>, status: &NodeStatus) -> Union {
    let offsets: Vec<_> = status
        .regions
        .iter()
        .map(|region| {
            let descriptor = region.region.as_ref().map(|r| encode_region(fbb, r));
            let learners: Vec<u64> = region.learners.iter().map(|id| id.get()).collect();
            let learners = Some(fbb.create_vector(&learners));
            let args = fb::RegionStatusArgs {
                region_id: region.region_id.get(),
                core: region.core.get(),
                leader: region.leader.map_or(0, NodeId::get),
                term: region.term.get(),
                commit_index: region.commit_index.get(),
                applied_index: region.applied_index.get(),
                region: descriptor,
                approximate_bytes: region.approximate_bytes,
                keys: region.keys,
                learners,
            };
            fb::RegionStatus::create(fbb, &args)
        })
        .collect();
    let regions = Some(fbb.create_vector(&offsets));
    let args = fb::StatusResultArgs {
        node_id: status.node_id.get(),
        cluster_id: status.cluster_id.get(),
        cores: status.cores,
        regions,
    };
    fb::StatusResult::create(fbb, &args).as_union_value()
}

fn encode_error(fbb: &mut FlatBufferBuilder<'_>, error: &ClientError) -> (fb::Outcome, Union) {
    match error {
        ClientError::NotLeader {
            leader,
            leader_addr,
        } => {
            let leader_addr = leader_addr.as_deref().map(|a| fbb.create_string(a));
            let args = fb::NotLeaderArgs {
                leader: leader.map_or(0, NodeId::get),
                leader_addr,
            };
            (
                fb::Outcome::NotLeader,
                fb::NotLeader::create(fbb, &args).as_union_value(),
            )
        }
        ClientError::StaleEpoch { regions } => {
            let regions = Some(encode_regions(fbb, regions));
            let table = fb::StaleEpoch::create(fbb, &fb::StaleEpochArgs { regions });
            (fb::Outcome::StaleEpoch, table.as_union_value())
        }
        ClientError::KeyNotInRegion {
            key,
            region_id,
            start_key,
            end_key,
        } => {
            let args = fb::KeyNotInRegionArgs {
                key: Some(fbb.create_vector(key)),
                region_id: region_id.get(),
                start_key: Some(fbb.create_vector(start_key)),
                end_key: Some(fbb.create_vector(end_key)),
            };
            let table = fb::KeyNotInRegion::create(fbb, &args);
            (fb::Outcome::KeyNotInRegion, table.as_union_value())
        }
        ClientError::RegionNotFound { region_id } => {
            let args = fb::RegionNotFoundArgs {
                region_id: region_id.get(),
            };
            let table = fb::RegionNotFound::create(fbb, &args);
            (fb::Outcome::RegionNotFound, table.as_union_value())
        }
        _ => encode_simple_error(fbb, error),
    }
}

fn encode_simple_error(
    fbb: &mut FlatBufferBuilder<'_>,
    error: &ClientError,
) -> (fb::Outcome, Union) {
    match error {
        ClientError::WrongCore { core } => {
            let table = fb::WrongCore::create(fbb, &fb::WrongCoreArgs { core: core.get() });
            (fb::Outcome::WrongCore, table.as_union_value())
        }
        ClientError::VersionMismatch { current_version } => {
            let args = fb::VersionMismatchArgs {
                current_version: *current_version,
            };
            let table = fb::VersionMismatch::create(fbb, &args);
            (fb::Outcome::VersionMismatch, table.as_union_value())
        }
        ClientError::ServerBusy => {
            let table = fb::ServerBusy::create(fbb, &fb::ServerBusyArgs {});
            (fb::Outcome::ServerBusy, table.as_union_value())
        }
        ClientError::InvalidRequest { message } => {
            let message = Some(fbb.create_string(message));
            let table = fb::InvalidRequest::create(fbb, &fb::InvalidRequestArgs { message });
            (fb::Outcome::InvalidRequest, table.as_union_value())
        }
        ClientError::Internal { message } => {
            let message = Some(fbb.create_string(message));
            let table = fb::Internal::create(fbb, &fb::InternalArgs { message });
            (fb::Outcome::Internal, table.as_union_value())
        }
        ClientError::OutcomeUnknown { message } => {
            let message = Some(fbb.create_string(message));
            let table = fb::OutcomeUnknown::create(fbb, &fb::OutcomeUnknownArgs { message });
            (fb::Outcome::OutcomeUnknown, table.as_union_value())
        }
        other => unreachable!("encode_error handles {other}"),
    }
}

/// Verifies and decodes a response payload.
///
/// # Errors
/// Verification errors, [`TransportError::TooMany`] past a limit, and
/// [`TransportError::InvalidField`] for the checks in the module documentation.
pub fn decode_client_response(
    payload: &[u8],
    limits: &DecodeLimits,
) -> Result<ClientResponse, TransportError> {
    let root = verified_root::<fb::ClientResponse>(FRAME, CLIENT_IDENTIFIER, payload, limits)?;
    let result = match root.outcome_type() {
        fb::Outcome::Written
        | fb::Outcome::Value
        | fb::Outcome::ScanResult
        | fb::Outcome::RegionsResult
        | fb::Outcome::StatusResult
        | fb::Outcome::JoinResult
        | fb::Outcome::Ack
        | fb::Outcome::SplitIds
        | fb::Outcome::PdStatusResult
        | fb::Outcome::MoveStepResult
        | fb::Outcome::HeartbeatResult => Ok(decode_reply(&root, limits)?),
        _ => Err(decode_error(&root, limits)?),
    };
    Ok(ClientResponse {
        request_id: root.request_id(),
        result,
    })
}

fn present<T>(value: Option<T>) -> Result<T, TransportError> {
    value.ok_or_else(|| TransportError::invalid(FRAME, "outcome", "union value does not match tag"))
}

fn decode_reply(
    root: &fb::ClientResponse<'_>,
    limits: &DecodeLimits,
) -> Result<ClientReply, TransportError> {
    let reply = match root.outcome_type() {
        fb::Outcome::Written => ClientReply::Written {
            version: present(root.outcome_as_written())?.version(),
        },
        fb::Outcome::Value => {
            let value = present(root.outcome_as_value())?;
            let found = value.found().then(|| -> Result<_, TransportError> {
                Ok(VersionedValue {
                    value: bytes(FRAME, "value", value.value(), limits.value_bytes_max)?,
                    version: value.version(),
                })
            });
            ClientReply::Value {
                value: found.transpose()?,
            }
        }
        fb::Outcome::ScanResult => {
            let scan = present(root.outcome_as_scan_result())?;
            let items = decode_items(scan.items().unwrap_or_default(), limits)?;
            ClientReply::Scan {
                items,
                more: scan.more(),
            }
        }
        fb::Outcome::RegionsResult => {
            let result = present(root.outcome_as_regions_result())?;
            ClientReply::Regions {
                regions: decode_regions(result.regions().unwrap_or_default(), limits)?,
                stores: decode_stores(result.stores().unwrap_or_default(), limits)?,
            }
        }
        fb::Outcome::JoinResult => {
            let result = present(root.outcome_as_join_result())?;
            ClientReply::Joined {
                ready: result.ready(),
                cluster_id: crate::ClusterId(result.cluster_id()),
                regions: decode_regions(result.regions().unwrap_or_default(), limits)?,
                stores: decode_stores(result.stores().unwrap_or_default(), limits)?,
            }
        }
        fb::Outcome::Ack => {
            present(root.outcome_as_ack())?;
            ClientReply::Ack
        }
        fb::Outcome::SplitIds => ClientReply::SplitIds {
            new_region_id: nonzero_region(present(root.outcome_as_split_ids())?.new_region_id())?,
        },
        fb::Outcome::PdStatusResult => ClientReply::Pd(decode_pd_status(
            present(root.outcome_as_pd_status_result())?,
            limits,
        )?),
        fb::Outcome::MoveStepResult => {
            let result = present(root.outcome_as_move_step_result())?;
            ClientReply::MoveStep {
                done: result.done(),
                detail: text(FRAME, "move.detail", result.detail(), limits.text_bytes_max)?,
            }
        }
        fb::Outcome::HeartbeatResult => {
            decode_heartbeat(present(root.outcome_as_heartbeat_result())?, limits)?
        }
        _ => ClientReply::Status(decode_status(
            present(root.outcome_as_status_result())?,
            limits,
        )?),
    };
    Ok(reply)
}

fn decode_items(
    list: Vector<'_, ForwardsUOffset<fb::KeyValue<'_>>>,
    limits: &DecodeLimits,
) -> Result<Vec<KeyValue>, TransportError> {
    TransportError::check_count(FRAME, "scan.items", list.len(), limits.scan_items_max)?;
    list.iter()
        .map(|item| {
            Ok(KeyValue {
                key: bytes(FRAME, "scan.key", item.key(), limits.key_bytes_max)?,
                value: bytes(FRAME, "scan.value", item.value(), limits.value_bytes_max)?,
                version: item.version(),
            })
        })
        .collect()
}

fn decode_regions(
    list: Vector<'_, ForwardsUOffset<fb::RegionDescriptor<'_>>>,
    limits: &DecodeLimits,
) -> Result<Vec<RegionDescriptor>, TransportError> {
    TransportError::check_count(FRAME, "regions", list.len(), limits.regions_max)?;
    list.iter()
        .map(|region| decode_region(region, limits))
        .collect()
}

fn decode_region(
    region: fb::RegionDescriptor<'_>,
    limits: &DecodeLimits,
) -> Result<RegionDescriptor, TransportError> {
    let region_id = nonzero_region(region.region_id())?;
    let start_key = bytes(
        FRAME,
        "region.start_key",
        region.start_key(),
        limits.key_bytes_max,
    )?;
    let end_key = bytes(
        FRAME,
        "region.end_key",
        region.end_key(),
        limits.key_bytes_max,
    )?;
    if !end_key.is_empty() && start_key >= end_key {
        return Err(TransportError::invalid(
            FRAME,
            "region.end_key",
            "end is not after start",
        ));
    }
    let peers = region.peers().unwrap_or_default();
    TransportError::check_count(FRAME, "region.peers", peers.len(), limits.conf_members_max)?;
    let peers = peers
        .iter()
        .map(|raw| node_id(FRAME, "region.peers", raw))
        .collect::<Result<Vec<_>, _>>()?;
    let epoch = region
        .epoch()
        .map_or_else(RegionEpoch::default, |e| RegionEpoch {
            version: e.version(),
            conf_version: e.conf_version(),
        });
    Ok(RegionDescriptor {
        region_id,
        start_key,
        end_key,
        epoch,
        peers,
        leader: optional_node(region.leader()),
    })
}

pub(crate) fn decode_stores(
    list: Vector<'_, ForwardsUOffset<fb::StoreDescriptor<'_>>>,
    limits: &DecodeLimits,
) -> Result<Vec<StoreDescriptor>, TransportError> {
    TransportError::check_count(FRAME, "stores", list.len(), limits.stores_max)?;
    list.iter()
        .map(|store| decode_store(store, limits))
        .collect()
}

/// Decodes one store descriptor (shared with the request codec's `Join`).
pub(crate) fn decode_store(
    store: fb::StoreDescriptor<'_>,
    limits: &DecodeLimits,
) -> Result<StoreDescriptor, TransportError> {
    let strings = |field: &'static str, list: Option<Vector<'_, ForwardsUOffset<&str>>>| {
        let list = list.unwrap_or_default();
        TransportError::check_count(FRAME, field, list.len(), limits.stores_max)?;
        list.iter()
            .map(|addr| text(FRAME, field, Some(addr), limits.text_bytes_max))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(StoreDescriptor {
        node_id: node_id(FRAME, "store.node_id", store.node_id())?,
        client_addrs: strings("store.client_addrs", store.client_addrs())?,
        cores: store.cores(),
        peer_addrs: strings("store.peer_addrs", store.peer_addrs())?,
    })
}

fn decode_status(
    status: fb::StatusResult<'_>,
    limits: &DecodeLimits,
) -> Result<NodeStatus, TransportError> {
    let list = status.regions().unwrap_or_default();
    TransportError::check_count(FRAME, "status.regions", list.len(), limits.regions_max)?;
    let regions = list
        .iter()
        .map(|region| {
            let learners = region.learners().unwrap_or_default();
            TransportError::check_count(
                FRAME,
                "status.learners",
                learners.len(),
                limits.conf_members_max,
            )?;
            let learners = learners
                .iter()
                .map(|raw| node_id(FRAME, "status.learners", raw))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(RegionStatus {
                region_id: nonzero_region(region.region_id())?,
                core: CoreId(region.core()),
                leader: optional_node(region.leader()),
                term: Term(region.term()),
                commit_index: LogIndex(region.commit_index()),
                applied_index: LogIndex(region.applied_index()),
                region: region
                    .region()
                    .map(|r| decode_region(r, limits))
                    .transpose()?,
                approximate_bytes: region.approximate_bytes(),
                keys: region.keys(),
                learners,
            })
        })
        .collect::<Result<Vec<_>, TransportError>>()?;
    Ok(NodeStatus {
        node_id: node_id(FRAME, "status.node_id", status.node_id())?,
        cluster_id: ClusterId(status.cluster_id()),
        cores: status.cores(),
        regions,
    })
}

fn decode_error(
    root: &fb::ClientResponse<'_>,
    limits: &DecodeLimits,
) -> Result<ClientError, TransportError> {
    let message = |v| text(FRAME, "message", v, limits.text_bytes_max);
    let error = match root.outcome_type() {
        fb::Outcome::NotLeader => {
            let e = present(root.outcome_as_not_leader())?;
            let leader_addr = e.leader_addr().map(|a| message(Some(a))).transpose()?;
            ClientError::NotLeader {
                leader: optional_node(e.leader()),
                leader_addr,
            }
        }
        fb::Outcome::StaleEpoch => {
            let e = present(root.outcome_as_stale_epoch())?;
            ClientError::StaleEpoch {
                regions: decode_regions(e.regions().unwrap_or_default(), limits)?,
            }
        }
        fb::Outcome::KeyNotInRegion => {
            let e = present(root.outcome_as_key_not_in_region())?;
            let key = |field, v| bytes(FRAME, field, v, limits.key_bytes_max);
            ClientError::KeyNotInRegion {
                key: key("key", e.key())?,
                region_id: nonzero_region(e.region_id())?,
                start_key: key("start_key", e.start_key())?,
                end_key: key("end_key", e.end_key())?,
            }
        }
        fb::Outcome::RegionNotFound => {
            let e = present(root.outcome_as_region_not_found())?;
            ClientError::RegionNotFound {
                region_id: nonzero_region(e.region_id())?,
            }
        }
        fb::Outcome::WrongCore => ClientError::WrongCore {
            core: CoreId(present(root.outcome_as_wrong_core())?.core()),
        },
        fb::Outcome::VersionMismatch => {
            let e = present(root.outcome_as_version_mismatch())?;
            ClientError::VersionMismatch {
                current_version: e.current_version(),
            }
        }
        fb::Outcome::ServerBusy => {
            present(root.outcome_as_server_busy())?;
            ClientError::ServerBusy
        }
        fb::Outcome::InvalidRequest => ClientError::InvalidRequest {
            message: message(present(root.outcome_as_invalid_request())?.message())?,
        },
        fb::Outcome::Internal => ClientError::Internal {
            message: message(present(root.outcome_as_internal())?.message())?,
        },
        fb::Outcome::OutcomeUnknown => ClientError::OutcomeUnknown {
            message: message(present(root.outcome_as_outcome_unknown())?.message())?,
        },
        fb::Outcome::NONE => return Err(TransportError::invalid(FRAME, "outcome", "missing")),
        other => {
            let reason = format!("unknown outcome tag {}", other.0);
            return Err(TransportError::invalid(FRAME, "outcome", reason));
        }
    };
    Ok(error)
}

fn nonzero_region(raw: u64) -> Result<RegionId, TransportError> {
    if raw == 0 {
        return Err(TransportError::invalid(
            FRAME,
            "region_id",
            "region id 0 is reserved",
        ));
    }
    Ok(RegionId(raw))
}

fn optional_node(raw: u64) -> Option<NodeId> {
    (raw != 0).then_some(NodeId(raw))
}
