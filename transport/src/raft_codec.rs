//! Raft batches: many Regions' messages from one core of a node to one core of another, in
//! one `tessera.raft.RaftBatch` FlatBuffer (schema `transport/schema/raft.fbs`).
//!
//! Encoding converts `tessera_core::Message` values one to one. Decoding verifies the buffer
//! with the configured [`DecodeLimits`] and then checks what the verifier cannot know:
//!
//! 1. the header: cluster id and both node ids are not 0;
//! 2. each message: its Region id is not 0, its `from`/`to` are the batch's nodes (a peer
//!    cannot speak for a third node), and its term is at most `term_max`;
//! 3. each body: the union is set and known; entries have a known kind, consecutive indexes
//!    starting right after `prev_log_index`, non-decreasing terms no older than
//!    `prev_log_term` and no newer than the message's term;
//! 4. each snapshot: index and term are not 0, the term is no newer than the message's, and
//!    its configuration has voters, with both lists sorted, duplicate-free, disjoint, without
//!    node 0, and within `conf_members_max`.

use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, UnionWIPOffset, Vector, WIPOffset};
use tessera_core::{
    ConfState, Entry, EntryKind, LogIndex, Message, MessageBody, NodeId, Payload, RegionId,
    Snapshot, SnapshotMetadata, Term,
};

use crate::generated::raft as fb;
use crate::verify::{node_id, verified_root};
use crate::{ClusterId, CoreId, DecodeLimits, TransportError};

const FRAME: &str = "RaftBatch";
const IDENTIFIER: &str = "TRFT";

/// Who sent a batch and which core of which node it is for.
///
/// Invariants after decoding: `cluster_id`, `from_node` and `to_node` are not 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RaftBatchHeader {
    pub cluster_id: ClusterId,
    pub from_node: NodeId,
    pub from_core: CoreId,
    pub to_node: NodeId,
    pub to_core: CoreId,
}

/// Bytes of framing overhead per message assumed when sizing batches, on top of
/// `MessageBody::size_bytes`.
pub const MESSAGE_OVERHEAD_BYTES: usize = 64;

/// Encodes a batch payload (frame type [`crate::FrameType::RaftBatch`]). Never fails: any
/// value the core can build has an encoding; whether the receiver accepts it is checked there.
pub fn encode_raft_batch(header: &RaftBatchHeader, messages: &[(RegionId, Message)]) -> Vec<u8> {
    let capacity_bytes = 128
        + messages
            .iter()
            .map(|(_, m)| m.body.size_bytes() + MESSAGE_OVERHEAD_BYTES)
            .sum::<usize>();
    let mut fbb = FlatBufferBuilder::with_capacity(capacity_bytes);
    let offsets: Vec<_> = messages
        .iter()
        .map(|(region_id, message)| encode_message(&mut fbb, *region_id, message))
        .collect();
    let messages = fbb.create_vector(&offsets);
    let root = fb::RaftBatch::create(
        &mut fbb,
        &fb::RaftBatchArgs {
            cluster_id: header.cluster_id.get(),
            from_node: header.from_node.get(),
            from_core: header.from_core.get(),
            to_node: header.to_node.get(),
            to_core: header.to_core.get(),
            messages: Some(messages),
        },
    );
    fbb.finish(root, Some(IDENTIFIER));
    fbb.finished_data().to_vec()
}

fn encode_message<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    region_id: RegionId,
    message: &Message,
) -> WIPOffset<fb::RegionMessage<'a>> {
    let (body_type, body) = encode_body(fbb, &message.body);
    fb::RegionMessage::create(
        fbb,
        &fb::RegionMessageArgs {
            region_id: region_id.get(),
            from: message.from.get(),
            to: message.to.get(),
            term: message.term.get(),
            body_type,
            body: Some(body),
        },
    )
}

fn encode_body(
    fbb: &mut FlatBufferBuilder<'_>,
    body: &MessageBody,
) -> (fb::MessageBody, WIPOffset<UnionWIPOffset>) {
    use fb::MessageBody as Tag;
    match body {
        MessageBody::RequestVote {
            pre_vote,
            last_log_index,
            last_log_term,
            transfer,
        } => {
            let args = fb::RequestVoteArgs {
                pre_vote: *pre_vote,
                last_log_index: last_log_index.get(),
                last_log_term: last_log_term.get(),
                transfer: *transfer,
            };
            let table = fb::RequestVote::create(fbb, &args);
            (Tag::RequestVote, table.as_union_value())
        }
        MessageBody::RequestVoteResponse { pre_vote, granted } => {
            let args = fb::RequestVoteResponseArgs {
                pre_vote: *pre_vote,
                granted: *granted,
            };
            let table = fb::RequestVoteResponse::create(fbb, &args);
            (Tag::RequestVoteResponse, table.as_union_value())
        }
        MessageBody::AppendEntries { .. } => (Tag::AppendEntries, encode_append(fbb, body)),
        MessageBody::AppendEntriesResponse {
            reject,
            index,
            hint_index,
            hint_term,
        } => {
            let args = fb::AppendEntriesResponseArgs {
                reject: *reject,
                index: index.get(),
                hint_index: hint_index.get(),
                hint_term: hint_term.get(),
            };
            let table = fb::AppendEntriesResponse::create(fbb, &args);
            (Tag::AppendEntriesResponse, table.as_union_value())
        }
        MessageBody::InstallSnapshot { snapshot } => {
            let snapshot = encode_snapshot(fbb, snapshot);
            let args = fb::InstallSnapshotArgs {
                snapshot: Some(snapshot),
            };
            let table = fb::InstallSnapshot::create(fbb, &args);
            (Tag::InstallSnapshot, table.as_union_value())
        }
        _ => encode_small_body(fbb, body),
    }
}

/// The bodies made of at most two scalars.
fn encode_small_body(
    fbb: &mut FlatBufferBuilder<'_>,
    body: &MessageBody,
) -> (fb::MessageBody, WIPOffset<UnionWIPOffset>) {
    use fb::MessageBody as Tag;
    match body {
        MessageBody::Heartbeat {
            commit,
            read_context,
        } => {
            let args = fb::HeartbeatArgs {
                commit: commit.get(),
                read_context: *read_context,
            };
            let table = fb::Heartbeat::create(fbb, &args);
            (Tag::Heartbeat, table.as_union_value())
        }
        MessageBody::HeartbeatResponse { read_context } => {
            let args = fb::HeartbeatResponseArgs {
                read_context: *read_context,
            };
            let table = fb::HeartbeatResponse::create(fbb, &args);
            (Tag::HeartbeatResponse, table.as_union_value())
        }
        MessageBody::TimeoutNow => {
            let table = fb::TimeoutNow::create(fbb, &fb::TimeoutNowArgs {});
            (Tag::TimeoutNow, table.as_union_value())
        }
        MessageBody::ReadIndexRequest { request_id } => {
            let args = fb::ReadIndexRequestArgs {
                request_id: *request_id,
            };
            let table = fb::ReadIndexRequest::create(fbb, &args);
            (Tag::ReadIndexRequest, table.as_union_value())
        }
        MessageBody::ReadIndexResponse { request_id, index } => {
            let args = fb::ReadIndexResponseArgs {
                request_id: *request_id,
                index: index.get(),
            };
            let table = fb::ReadIndexResponse::create(fbb, &args);
            (Tag::ReadIndexResponse, table.as_union_value())
        }
        other => unreachable!("encode_body handles {}", other.name()),
    }
}

fn encode_append(fbb: &mut FlatBufferBuilder<'_>, body: &MessageBody) -> WIPOffset<UnionWIPOffset> {
    let MessageBody::AppendEntries {
        prev_log_index,
        prev_log_term,
        entries,
        leader_commit,
    } = body
    else {
        unreachable!("encode_append called with {}", body.name());
    };
    let offsets: Vec<_> = entries
        .iter()
        .map(|entry| {
            let data = fbb.create_vector(entry.data.as_slice());
            let kind = match entry.kind {
                EntryKind::Normal => fb::EntryKind::Normal,
                EntryKind::ConfChange => fb::EntryKind::ConfChange,
            };
            let args = fb::EntryArgs {
                term: entry.term.get(),
                index: entry.index.get(),
                kind,
                data: Some(data),
            };
            fb::Entry::create(fbb, &args)
        })
        .collect();
    let entries = fbb.create_vector(&offsets);
    let args = fb::AppendEntriesArgs {
        prev_log_index: prev_log_index.get(),
        prev_log_term: prev_log_term.get(),
        entries: Some(entries),
        leader_commit: leader_commit.get(),
    };
    fb::AppendEntries::create(fbb, &args).as_union_value()
}

fn encode_snapshot<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    snapshot: &Snapshot,
) -> WIPOffset<fb::Snapshot<'a>> {
    let metadata = encode_snapshot_metadata(fbb, &snapshot.metadata);
    let data = fbb.create_vector(snapshot.data.as_slice());
    fb::Snapshot::create(
        fbb,
        &fb::SnapshotArgs {
            metadata: Some(metadata),
            data: Some(data),
        },
    )
}

/// A snapshot's index, term and configuration (shared with `SnapshotChunk`).
pub(crate) fn encode_snapshot_metadata<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    metadata: &SnapshotMetadata,
) -> WIPOffset<fb::SnapshotMetadata<'a>> {
    let conf = &metadata.conf_state;
    let voters: Vec<u64> = conf.voters.iter().map(|id| id.get()).collect();
    let learners: Vec<u64> = conf.learners.iter().map(|id| id.get()).collect();
    let voters = fbb.create_vector(&voters);
    let learners = fbb.create_vector(&learners);
    let conf_state = fb::ConfState::create(
        fbb,
        &fb::ConfStateArgs {
            voters: Some(voters),
            learners: Some(learners),
        },
    );
    fb::SnapshotMetadata::create(
        fbb,
        &fb::SnapshotMetadataArgs {
            index: metadata.index.get(),
            term: metadata.term.get(),
            conf_state: Some(conf_state),
        },
    )
}

/// Verifies and decodes a batch payload.
///
/// # Errors
/// Verification errors, [`TransportError::TooMany`] past a limit, and
/// [`TransportError::InvalidField`] for any check listed in the module documentation.
pub fn decode_raft_batch(
    payload: &[u8],
    limits: &DecodeLimits,
) -> Result<(RaftBatchHeader, Vec<(RegionId, Message)>), TransportError> {
    let root = verified_root::<fb::RaftBatch>(FRAME, IDENTIFIER, payload, limits)?;
    let header = decode_header(
        FRAME,
        root.cluster_id(),
        (root.from_node(), root.from_core()),
        (root.to_node(), root.to_core()),
    )?;
    let list = root.messages().unwrap_or_default();
    TransportError::check_count(FRAME, "messages", list.len(), limits.batch_messages_max)?;
    let mut messages = Vec::with_capacity(list.len());
    for message in list.iter() {
        messages.push(decode_message(&header, &message, limits)?);
    }
    Ok((header, messages))
}

/// Check 1 of the module documentation on the header fields of a batch or a snapshot chunk
/// (whose errors name `frame`).
pub(crate) fn decode_header(
    frame: &'static str,
    cluster_id: u64,
    (from_node, from_core): (u64, u32),
    (to_node, to_core): (u64, u32),
) -> Result<RaftBatchHeader, TransportError> {
    if cluster_id == 0 {
        return Err(TransportError::invalid(
            frame,
            "cluster_id",
            "cluster id 0 is reserved",
        ));
    }
    Ok(RaftBatchHeader {
        cluster_id: ClusterId(cluster_id),
        from_node: node_id(frame, "from_node", from_node)?,
        from_core: CoreId(from_core),
        to_node: node_id(frame, "to_node", to_node)?,
        to_core: CoreId(to_core),
    })
}

fn decode_message(
    header: &RaftBatchHeader,
    message: &fb::RegionMessage<'_>,
    limits: &DecodeLimits,
) -> Result<(RegionId, Message), TransportError> {
    if message.region_id() == 0 {
        return Err(TransportError::invalid(
            FRAME,
            "region_id",
            "region id 0 is reserved",
        ));
    }
    let from = node_id(FRAME, "from", message.from())?;
    let to = node_id(FRAME, "to", message.to())?;
    if from != header.from_node || to != header.to_node {
        return Err(TransportError::invalid(
            FRAME,
            "from/to",
            format!(
                "message {from}->{to} in a batch {}->{}",
                header.from_node, header.to_node
            ),
        ));
    }
    let term = Term(message.term());
    if term.get() > limits.term_max {
        let reason = format!("{term} is above term_max {}", limits.term_max);
        return Err(TransportError::invalid(FRAME, "term", reason));
    }
    let body = decode_body(message, term, limits)?;
    Ok((
        RegionId(message.region_id()),
        Message {
            from,
            to,
            term,
            body,
        },
    ))
}

/// The union value, present because the verifier checked the tag and value agree.
fn present<T>(value: Option<T>) -> Result<T, TransportError> {
    value.ok_or_else(|| TransportError::invalid(FRAME, "body", "union value does not match tag"))
}

fn decode_body(
    message: &fb::RegionMessage<'_>,
    term: Term,
    limits: &DecodeLimits,
) -> Result<MessageBody, TransportError> {
    use fb::MessageBody as Tag;
    let body = match message.body_type() {
        Tag::RequestVote => {
            let b = present(message.body_as_request_vote())?;
            MessageBody::RequestVote {
                pre_vote: b.pre_vote(),
                last_log_index: LogIndex(b.last_log_index()),
                last_log_term: Term(b.last_log_term()),
                transfer: b.transfer(),
            }
        }
        Tag::RequestVoteResponse => {
            let b = present(message.body_as_request_vote_response())?;
            MessageBody::RequestVoteResponse {
                pre_vote: b.pre_vote(),
                granted: b.granted(),
            }
        }
        Tag::AppendEntries => {
            decode_append(present(message.body_as_append_entries())?, term, limits)?
        }
        Tag::AppendEntriesResponse => {
            let b = present(message.body_as_append_entries_response())?;
            MessageBody::AppendEntriesResponse {
                reject: b.reject(),
                index: LogIndex(b.index()),
                hint_index: LogIndex(b.hint_index()),
                hint_term: Term(b.hint_term()),
            }
        }
        Tag::InstallSnapshot => {
            let b = present(message.body_as_install_snapshot())?;
            let snapshot = b
                .snapshot()
                .ok_or_else(|| TransportError::invalid(FRAME, "snapshot", "missing"))?;
            MessageBody::InstallSnapshot {
                snapshot: decode_snapshot(snapshot, term, limits)?,
            }
        }
        _ => decode_small_body(message)?,
    };
    Ok(body)
}

fn decode_small_body(message: &fb::RegionMessage<'_>) -> Result<MessageBody, TransportError> {
    use fb::MessageBody as Tag;
    let body = match message.body_type() {
        Tag::Heartbeat => {
            let b = present(message.body_as_heartbeat())?;
            MessageBody::Heartbeat {
                commit: LogIndex(b.commit()),
                read_context: b.read_context(),
            }
        }
        Tag::HeartbeatResponse => {
            let b = present(message.body_as_heartbeat_response())?;
            MessageBody::HeartbeatResponse {
                read_context: b.read_context(),
            }
        }
        Tag::TimeoutNow => {
            present(message.body_as_timeout_now())?;
            MessageBody::TimeoutNow
        }
        Tag::ReadIndexRequest => {
            let b = present(message.body_as_read_index_request())?;
            MessageBody::ReadIndexRequest {
                request_id: b.request_id(),
            }
        }
        Tag::ReadIndexResponse => {
            let b = present(message.body_as_read_index_response())?;
            MessageBody::ReadIndexResponse {
                request_id: b.request_id(),
                index: LogIndex(b.index()),
            }
        }
        Tag::NONE => return Err(TransportError::invalid(FRAME, "body", "missing")),
        other => {
            return Err(TransportError::invalid(
                FRAME,
                "body",
                format!("unknown message body tag {}", other.0),
            ))
        }
    };
    Ok(body)
}

fn decode_append(
    body: fb::AppendEntries<'_>,
    term: Term,
    limits: &DecodeLimits,
) -> Result<MessageBody, TransportError> {
    let prev_log_index = LogIndex(body.prev_log_index());
    let prev_log_term = Term(body.prev_log_term());
    let entries = decode_entries(
        body.entries().unwrap_or_default(),
        prev_log_index,
        prev_log_term,
        term,
        limits,
    )?;
    Ok(MessageBody::AppendEntries {
        prev_log_index,
        prev_log_term,
        entries,
        leader_commit: LogIndex(body.leader_commit()),
    })
}

/// Entries after `(prev_log_index, prev_log_term)` sent in `term`: see the module docs.
fn decode_entries(
    list: Vector<'_, ForwardsUOffset<fb::Entry<'_>>>,
    prev_log_index: LogIndex,
    prev_log_term: Term,
    term: Term,
    limits: &DecodeLimits,
) -> Result<Vec<Entry>, TransportError> {
    TransportError::check_count(FRAME, "entries", list.len(), limits.message_entries_max)?;
    let mut entries: Vec<Entry> = Vec::with_capacity(list.len());
    let mut expected_index = prev_log_index.get();
    let mut previous_term = prev_log_term;
    for entry in list.iter() {
        expected_index = expected_index
            .checked_add(1)
            .ok_or_else(|| TransportError::invalid(FRAME, "entry.index", "overflows u64"))?;
        if entry.index() != expected_index {
            return Err(TransportError::invalid(
                FRAME,
                "entry.index",
                format!("{} where {expected_index} was expected", entry.index()),
            ));
        }
        let entry_term = Term(entry.term());
        if entry_term < previous_term || entry_term > term {
            return Err(TransportError::invalid(
                FRAME,
                "entry.term",
                format!("{entry_term} after {previous_term} in a message of {term}"),
            ));
        }
        previous_term = entry_term;
        let kind = EntryKind::from_code(entry.kind().0).ok_or_else(|| {
            TransportError::invalid(
                FRAME,
                "entry.kind",
                format!("unknown kind {}", entry.kind().0),
            )
        })?;
        let data = entry.data().map(|v| v.bytes()).unwrap_or_default();
        entries.push(Entry {
            term: entry_term,
            index: LogIndex(expected_index),
            kind,
            data: Payload::from(data),
        });
    }
    Ok(entries)
}

fn decode_snapshot(
    snapshot: fb::Snapshot<'_>,
    term: Term,
    limits: &DecodeLimits,
) -> Result<Snapshot, TransportError> {
    let metadata = decode_snapshot_metadata(FRAME, snapshot.metadata(), term, limits)?;
    let data = snapshot.data().map(|v| v.bytes()).unwrap_or_default();
    Ok(Snapshot {
        metadata,
        data: Payload::from(data),
    })
}

/// Checks 4 of the module documentation, for a snapshot in a message of `term` (shared with
/// `SnapshotChunk`, whose errors name `frame`).
pub(crate) fn decode_snapshot_metadata(
    frame: &'static str,
    metadata: Option<fb::SnapshotMetadata<'_>>,
    term: Term,
    limits: &DecodeLimits,
) -> Result<SnapshotMetadata, TransportError> {
    let metadata =
        metadata.ok_or_else(|| TransportError::invalid(frame, "snapshot.metadata", "missing"))?;
    if metadata.index() == 0 || metadata.term() == 0 || Term(metadata.term()) > term {
        return Err(TransportError::invalid(
            frame,
            "snapshot.metadata",
            format!(
                "index {} term {} in a message of {term}",
                metadata.index(),
                metadata.term()
            ),
        ));
    }
    let conf = metadata
        .conf_state()
        .ok_or_else(|| TransportError::invalid(frame, "snapshot.conf_state", "missing"))?;
    Ok(SnapshotMetadata {
        index: LogIndex(metadata.index()),
        term: Term(metadata.term()),
        conf_state: decode_conf_state(frame, conf, limits)?,
    })
}

fn decode_conf_state(
    frame: &'static str,
    conf: fb::ConfState<'_>,
    limits: &DecodeLimits,
) -> Result<ConfState, TransportError> {
    let voters = conf.voters().unwrap_or_default();
    let learners = conf.learners().unwrap_or_default();
    TransportError::check_count(
        frame,
        "conf_state members",
        voters.len() + learners.len(),
        limits.conf_members_max,
    )?;
    let voters = sorted_node_ids(frame, "conf_state.voters", voters)?;
    let learners = sorted_node_ids(frame, "conf_state.learners", learners)?;
    if voters.is_empty() {
        return Err(TransportError::invalid(frame, "conf_state.voters", "empty"));
    }
    if let Some(both) = learners.iter().find(|id| voters.binary_search(id).is_ok()) {
        return Err(TransportError::invalid(
            frame,
            "conf_state.learners",
            format!("{both} is also a voter"),
        ));
    }
    Ok(ConfState { voters, learners })
}

/// Node ids, none 0, strictly increasing.
fn sorted_node_ids(
    frame: &'static str,
    field: &'static str,
    raw: Vector<'_, u64>,
) -> Result<Vec<NodeId>, TransportError> {
    let mut ids: Vec<NodeId> = Vec::with_capacity(raw.len());
    for value in raw.iter() {
        let id = node_id(frame, field, value)?;
        if ids.last().is_some_and(|last| *last >= id) {
            return Err(TransportError::invalid(
                frame,
                field,
                "not sorted or has duplicates",
            ));
        }
        ids.push(id);
    }
    Ok(ids)
}
