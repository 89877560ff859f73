//! Raft batch encoding: property round trips over arbitrary core messages, and decoding of
//! valid buffers whose fields are out of range.

use std::collections::BTreeSet;

use proptest::prelude::*;
use tessera_core::{
    ConfState, Entry, EntryKind, LogIndex, Message, MessageBody, NodeId, Payload, RegionId,
    Snapshot, SnapshotMetadata, Term,
};
use tessera_transport::generated::raft as fb;
use tessera_transport::{
    decode_raft_batch, encode_raft_batch, ClusterId, CoreId, DecodeLimits, RaftBatchHeader,
    TransportError,
};

fn header_strategy() -> impl Strategy<Value = RaftBatchHeader> {
    (
        1..=u64::MAX,
        1..=u64::MAX,
        any::<u32>(),
        1..=u64::MAX,
        any::<u32>(),
    )
        .prop_map(|(cluster, from, from_core, to, to_core)| RaftBatchHeader {
            cluster_id: ClusterId(cluster),
            from_node: NodeId(from),
            from_core: CoreId(from_core),
            to_node: NodeId(to),
            to_core: CoreId(to_core),
        })
}

fn payload_strategy() -> impl Strategy<Value = Payload> {
    prop::collection::vec(any::<u8>(), 0..64).prop_map(Payload::from)
}

/// Entries after `(prev_index, prev_term)` with terms up to `term`, as a leader sends them.
fn entries_strategy(prev_index: u64, prev_term: u64, term: u64) -> BoxedStrategy<Vec<Entry>> {
    let kinds = prop_oneof![Just(EntryKind::Normal), Just(EntryKind::ConfChange)];
    prop::collection::vec((0..=2u64, kinds, payload_strategy()), 0..6)
        .prop_map(move |raw| {
            let mut entry_term = prev_term;
            raw.into_iter()
                .enumerate()
                .map(|(i, (bump, kind, data))| {
                    entry_term = (entry_term + bump).min(term);
                    Entry {
                        term: Term(entry_term),
                        index: LogIndex(prev_index + 1 + i as u64),
                        kind,
                        data,
                    }
                })
                .collect()
        })
        .boxed()
}

fn conf_state_strategy() -> impl Strategy<Value = ConfState> {
    (
        prop::collection::btree_set(1..20u64, 1..5),
        prop::collection::btree_set(1..20u64, 0..3),
    )
        .prop_map(
            |(voters, learners): (BTreeSet<u64>, BTreeSet<u64>)| ConfState {
                learners: learners.difference(&voters).map(|id| NodeId(*id)).collect(),
                voters: voters.into_iter().map(NodeId).collect(),
            },
        )
}

fn snapshot_strategy(term: u64) -> impl Strategy<Value = Snapshot> {
    (
        1..=u64::MAX,
        1..=term,
        conf_state_strategy(),
        payload_strategy(),
    )
        .prop_map(|(index, snapshot_term, conf_state, data)| Snapshot {
            metadata: SnapshotMetadata {
                index: LogIndex(index),
                term: Term(snapshot_term),
                conf_state,
            },
            data,
        })
}

fn append_strategy(term: u64) -> BoxedStrategy<MessageBody> {
    (0..1_000_000u64, 0..=term, any::<u64>())
        .prop_flat_map(move |(prev_index, prev_term, commit)| {
            entries_strategy(prev_index, prev_term, term).prop_map(move |entries| {
                MessageBody::AppendEntries {
                    prev_log_index: LogIndex(prev_index),
                    prev_log_term: Term(prev_term),
                    entries,
                    leader_commit: LogIndex(commit),
                }
            })
        })
        .boxed()
}

fn body_strategy(term: u64) -> BoxedStrategy<MessageBody> {
    prop_oneof![
        (any::<bool>(), any::<u64>(), any::<u64>(), any::<bool>()).prop_map(
            |(pre_vote, index, log_term, transfer)| MessageBody::RequestVote {
                pre_vote,
                last_log_index: LogIndex(index),
                last_log_term: Term(log_term),
                transfer,
            }
        ),
        (any::<bool>(), any::<bool>())
            .prop_map(|(pre_vote, granted)| MessageBody::RequestVoteResponse { pre_vote, granted }),
        append_strategy(term),
        (any::<bool>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(reject, index, hint_index, hint_term)| MessageBody::AppendEntriesResponse {
                reject,
                index: LogIndex(index),
                hint_index: LogIndex(hint_index),
                hint_term: Term(hint_term),
            }
        ),
        (any::<u64>(), any::<u64>()).prop_map(|(commit, read_context)| MessageBody::Heartbeat {
            commit: LogIndex(commit),
            read_context,
        }),
        any::<u64>().prop_map(|read_context| MessageBody::HeartbeatResponse { read_context }),
        snapshot_strategy(term.max(1))
            .prop_map(|snapshot| MessageBody::InstallSnapshot { snapshot }),
        Just(MessageBody::TimeoutNow),
        any::<u64>().prop_map(|request_id| MessageBody::ReadIndexRequest { request_id }),
        (any::<u64>(), any::<u64>()).prop_map(|(request_id, index)| {
            MessageBody::ReadIndexResponse {
                request_id,
                index: LogIndex(index),
            }
        }),
    ]
    .boxed()
}

fn batch_strategy() -> impl Strategy<Value = (RaftBatchHeader, Vec<(RegionId, Message)>)> {
    header_strategy().prop_flat_map(|header| {
        let message = (1..=u64::MAX, 1..1000u64).prop_flat_map(move |(region, term)| {
            body_strategy(term).prop_map(move |body| {
                let message = Message {
                    from: header.from_node,
                    to: header.to_node,
                    term: Term(term),
                    body,
                };
                (RegionId(region), message)
            })
        });
        (Just(header), prop::collection::vec(message, 0..12))
    })
}

proptest! {
    #[test]
    fn raft_batches_round_trip((header, messages) in batch_strategy()) {
        let payload = encode_raft_batch(&header, &messages);
        let (got_header, got_messages) =
            decode_raft_batch(&payload, &DecodeLimits::default()).unwrap();
        prop_assert_eq!(got_header, header);
        prop_assert_eq!(got_messages, messages);
    }

    #[test]
    fn truncated_or_flipped_batches_never_panic(
        (header, messages) in batch_strategy(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        xor in 1..=255u8,
    ) {
        let payload = encode_raft_batch(&header, &messages);
        let limits = DecodeLimits::default();
        let cut = cut.index(payload.len());
        let _ = decode_raft_batch(&payload[..cut], &limits);
        let mut flipped = payload.clone();
        let at = flip.index(flipped.len());
        flipped[at] ^= xor;
        let _ = decode_raft_batch(&flipped, &limits);
    }
}

fn header() -> RaftBatchHeader {
    RaftBatchHeader {
        cluster_id: ClusterId(9),
        from_node: NodeId(1),
        from_core: CoreId(0),
        to_node: NodeId(2),
        to_core: CoreId(1),
    }
}

fn message(body: MessageBody) -> Message {
    Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(5),
        body,
    }
}

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        kind: EntryKind::Normal,
        data: Payload::from(&b"x"[..]),
    }
}

fn append(prev_index: u64, prev_term: u64, entries: Vec<Entry>) -> MessageBody {
    MessageBody::AppendEntries {
        prev_log_index: LogIndex(prev_index),
        prev_log_term: Term(prev_term),
        entries,
        leader_commit: LogIndex(0),
    }
}

fn snapshot(voters: Vec<u64>, learners: Vec<u64>) -> MessageBody {
    MessageBody::InstallSnapshot {
        snapshot: Snapshot {
            metadata: SnapshotMetadata {
                index: LogIndex(10),
                term: Term(3),
                conf_state: ConfState {
                    voters: voters.into_iter().map(NodeId).collect(),
                    learners: learners.into_iter().map(NodeId).collect(),
                },
            },
            data: Payload::empty(),
        },
    }
}

fn decode_one(header: RaftBatchHeader, region: u64, message: Message) -> TransportError {
    let payload = encode_raft_batch(&header, &[(RegionId(region), message)]);
    match decode_raft_batch(&payload, &DecodeLimits::default()) {
        Ok(decoded) => panic!("accepted {decoded:?}"),
        Err(err) => err,
    }
}

fn assert_invalid(err: TransportError, expected_field: &str) {
    match err {
        TransportError::InvalidField { field, .. } => assert_eq!(field, expected_field),
        other => panic!("expected InvalidField({expected_field}), got {other}"),
    }
}

#[test]
fn reserved_ids_are_refused() {
    let ok = message(MessageBody::TimeoutNow);
    let mut zero_cluster = header();
    zero_cluster.cluster_id = ClusterId(0);
    assert_invalid(decode_one(zero_cluster, 1, ok.clone()), "cluster_id");
    let mut zero_node = header();
    zero_node.from_node = NodeId(0);
    assert_invalid(decode_one(zero_node, 1, ok.clone()), "from_node");
    assert_invalid(decode_one(header(), 0, ok.clone()), "region_id");
    let mut spoofed = ok;
    spoofed.from = NodeId(3);
    assert_invalid(decode_one(header(), 1, spoofed), "from/to");
}

#[test]
fn entries_out_of_order_or_from_the_future_are_refused() {
    let gap = append(4, 2, vec![entry(2, 5), entry(2, 7)]);
    assert_invalid(decode_one(header(), 1, message(gap)), "entry.index");
    let wrong_start = append(4, 2, vec![entry(2, 4)]);
    assert_invalid(decode_one(header(), 1, message(wrong_start)), "entry.index");
    let falling_term = append(4, 2, vec![entry(3, 5), entry(2, 6)]);
    assert_invalid(decode_one(header(), 1, message(falling_term)), "entry.term");
    let future_term = append(4, 2, vec![entry(6, 5)]);
    assert_invalid(decode_one(header(), 1, message(future_term)), "entry.term");
    let overflow = append(u64::MAX, 2, vec![entry(2, 0)]);
    assert_invalid(decode_one(header(), 1, message(overflow)), "entry.index");
}

#[test]
fn bad_configurations_in_snapshots_are_refused() {
    let cases = [
        (vec![], vec![], "conf_state.voters"),
        (vec![2, 1], vec![], "conf_state.voters"),
        (vec![1, 1], vec![], "conf_state.voters"),
        (vec![0, 1], vec![], "conf_state.voters"),
        (vec![1, 2], vec![2], "conf_state.learners"),
    ];
    for (voters, learners, field) in cases {
        let body = snapshot(voters, learners);
        assert_invalid(decode_one(header(), 1, message(body)), field);
    }
    let mut too_big = message(snapshot(vec![1], vec![]));
    too_big.term = Term(2);
    assert_invalid(decode_one(header(), 1, too_big), "snapshot.metadata");
}

#[test]
fn a_term_above_term_max_is_refused_so_adopting_it_cannot_overflow() {
    let mut huge = message(MessageBody::TimeoutNow);
    huge.term = Term(u64::MAX);
    assert_invalid(decode_one(header(), 1, huge), "term");
    let mut largest = message(MessageBody::TimeoutNow);
    largest.term = Term(DecodeLimits::default().term_max);
    let payload = encode_raft_batch(&header(), &[(RegionId(1), largest)]);
    assert!(decode_raft_batch(&payload, &DecodeLimits::default()).is_ok());
}

#[test]
fn limits_on_lists_are_enforced() {
    let entries = (1..=10).map(|i| entry(1, i)).collect();
    let payload = encode_raft_batch(&header(), &[(RegionId(1), message(append(0, 0, entries)))]);
    let limits = DecodeLimits {
        message_entries_max: 9,
        ..DecodeLimits::default()
    };
    assert!(matches!(
        decode_raft_batch(&payload, &limits),
        Err(TransportError::TooMany {
            field: "entries",
            count: 10,
            max: 9,
            ..
        })
    ));
    let many: Vec<_> = (1..=5)
        .map(|r| (RegionId(r), message(MessageBody::TimeoutNow)))
        .collect();
    let payload = encode_raft_batch(&header(), &many);
    let limits = DecodeLimits {
        batch_messages_max: 4,
        ..DecodeLimits::default()
    };
    assert!(matches!(
        decode_raft_batch(&payload, &limits),
        Err(TransportError::TooMany {
            field: "messages",
            ..
        })
    ));
    let tight = DecodeLimits {
        verifier_tables_max: 3,
        ..DecodeLimits::default()
    };
    assert!(matches!(
        decode_raft_batch(&payload, &tight),
        Err(TransportError::Verification { .. })
    ));
}

/// A batch built by hand with the generated API, for values the core types cannot express.
fn handmade_batch(body_type: fb::MessageBody, entry_kind: u8) -> Vec<u8> {
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let entry = fb::Entry::create(
        &mut fbb,
        &fb::EntryArgs {
            term: 1,
            index: 1,
            kind: fb::EntryKind(entry_kind),
            data: None,
        },
    );
    let entries = fbb.create_vector(&[entry]);
    let append = fb::AppendEntries::create(
        &mut fbb,
        &fb::AppendEntriesArgs {
            entries: Some(entries),
            ..Default::default()
        },
    );
    let message = fb::RegionMessage::create(
        &mut fbb,
        &fb::RegionMessageArgs {
            region_id: 1,
            from: 1,
            to: 2,
            term: 5,
            body_type,
            body: Some(append.as_union_value()),
        },
    );
    let messages = fbb.create_vector(&[message]);
    let root = fb::RaftBatch::create(
        &mut fbb,
        &fb::RaftBatchArgs {
            cluster_id: 9,
            from_node: 1,
            to_node: 2,
            messages: Some(messages),
            ..Default::default()
        },
    );
    fbb.finish(root, Some("TRFT"));
    fbb.finished_data().to_vec()
}

#[test]
fn unknown_entry_kinds_and_union_tags_are_refused() {
    let limits = DecodeLimits::default();
    assert!(decode_raft_batch(&handmade_batch(fb::MessageBody::AppendEntries, 0), &limits).is_ok());
    let err = decode_raft_batch(&handmade_batch(fb::MessageBody::AppendEntries, 7), &limits);
    assert_invalid(err.unwrap_err(), "entry.kind");
    let err = decode_raft_batch(&handmade_batch(fb::MessageBody(42), 0), &limits);
    assert_invalid(err.unwrap_err(), "body");
}
