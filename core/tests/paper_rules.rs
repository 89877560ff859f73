//! The rules of the Raft paper (Ongaro and Ousterhout, "In Search of an Understandable
//! Consensus Algorithm", Figure 2 and §5), one test each, written to read as the rule they
//! check. Then a property test: no message a peer can send, however stale or malformed,
//! makes a node panic or break its invariants, in any role.
//!
//! Every group here is bootstrapped like a real one: a snapshot at index 5, term 5, with
//! voters 1, 2 and 3. Node 1 is the node under test.

use proptest::prelude::*;
use tessera_core::{
    ConfState, Config, Entry, EntryKind, HardState, LogIndex, MemStorage, Message, MessageBody,
    NodeId, RaftCore, Ready, Role, Snapshot, SnapshotMetadata, Term,
};

const ME: NodeId = NodeId(1);

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        kind: EntryKind::Normal,
        data: vec![index as u8].into(),
    }
}

/// Node 1 of voters (1,2,3) in `term`, with the entries `(index, term)` after the bootstrap
/// snapshot persisted, `commit` committed. Pre-vote and check-quorum are off unless a test
/// is about them, so each rule shows on its own.
fn node(term: u64, log: &[(u64, u64)], commit: u64) -> RaftCore<MemStorage> {
    let mut config = Config::new(ME);
    config.pre_vote = false;
    config.check_quorum = false;
    node_with(config, term, log, commit)
}

fn node_with(config: Config, term: u64, log: &[(u64, u64)], commit: u64) -> RaftCore<MemStorage> {
    let voters = ConfState::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
    let mut storage = MemStorage::new_with_conf(voters);
    let entries: Vec<Entry> = log.iter().map(|(i, t)| entry(*i, *t)).collect();
    storage.append(&entries);
    storage.set_hard_state(HardState {
        term: Term(term),
        vote: None,
        commit: LogIndex(commit),
    });
    RaftCore::new(config, storage).expect("valid config")
}

fn message(from: u64, term: u64, body: MessageBody) -> Message {
    Message {
        from: NodeId(from),
        to: ME,
        term: Term(term),
        body,
    }
}

fn vote_request(from: u64, term: u64, last_index: u64, last_term: u64) -> Message {
    message(
        from,
        term,
        MessageBody::RequestVote {
            pre_vote: false,
            last_log_index: LogIndex(last_index),
            last_log_term: Term(last_term),
            transfer: false,
        },
    )
}

fn append(from: u64, term: u64, prev: (u64, u64), entries: &[(u64, u64)], commit: u64) -> Message {
    message(
        from,
        term,
        MessageBody::AppendEntries {
            prev_log_index: LogIndex(prev.0),
            prev_log_term: Term(prev.1),
            entries: entries.iter().map(|(i, t)| entry(*i, *t)).collect(),
            leader_commit: LogIndex(commit),
        },
    )
}

fn append_response(from: u64, term: u64, index: u64) -> Message {
    message(
        from,
        term,
        MessageBody::AppendEntriesResponse {
            reject: false,
            index: LogIndex(index),
            hint_index: LogIndex(0),
            hint_term: Term(0),
        },
    )
}

/// Handles one Ready in the documented order, persisting into the node's MemStorage, and
/// returns it for inspection.
fn handle_ready(node: &mut RaftCore<MemStorage>) -> Ready {
    let ready = node.ready();
    let storage = node.storage_mut();
    if let Some(snapshot) = &ready.snapshot {
        storage.apply_snapshot(snapshot.clone());
    }
    storage.append(&ready.entries);
    if let Some(hard_state) = ready.hard_state {
        storage.set_hard_state(hard_state);
    }
    node.advance(ready.advance());
    ready
}

/// Every message the node sent in its next Ready, immediate or after persisting.
fn sent(node: &mut RaftCore<MemStorage>) -> Vec<Message> {
    let ready = handle_ready(node);
    ready
        .messages
        .into_iter()
        .chain(ready.persisted_messages)
        .collect()
}

/// The (pre-)vote answer the node sent to `to`, if any.
fn vote_answer(node: &mut RaftCore<MemStorage>, to: u64) -> Option<bool> {
    sent(node).into_iter().find_map(|m| match m.body {
        MessageBody::RequestVoteResponse { granted, .. } if m.to == NodeId(to) => Some(granted),
        _ => None,
    })
}

/// The term and positions of the node's log after the bootstrap snapshot.
fn log_of(node: &RaftCore<MemStorage>) -> Vec<(u64, u64)> {
    let log = node.log();
    log.entries(LogIndex(6), log.last_index().next(), usize::MAX)
        .expect("log readable")
        .iter()
        .map(|e| (e.index.0, e.term.0))
        .collect()
}

/// Makes node 1 leader of `term + 1` with node 2's vote, and persists its first entry.
fn elect(node: &mut RaftCore<MemStorage>) {
    node.campaign();
    assert_eq!(node.role(), Role::Candidate);
    handle_ready(node);
    let term = node.term().0;
    node.step(message(
        2,
        term,
        MessageBody::RequestVoteResponse {
            pre_vote: false,
            granted: true,
        },
    ));
    assert_eq!(node.role(), Role::Leader);
    handle_ready(node);
}

// ---- RequestVote: "grant a vote once per term, to a candidate at least as up to date" ----

#[test]
fn a_vote_is_granted_to_at_most_one_candidate_per_term() {
    let mut node = node(5, &[], 5);
    node.step(vote_request(2, 6, 5, 5));
    assert_eq!(vote_answer(&mut node, 2), Some(true));
    assert_eq!(node.vote(), Some(NodeId(2)));

    node.step(vote_request(3, 6, 5, 5));
    assert_eq!(
        vote_answer(&mut node, 3),
        Some(false),
        "second candidate, same term"
    );

    // The same candidate asking again (a retransmission) gets the same answer.
    node.step(vote_request(2, 6, 5, 5));
    assert_eq!(vote_answer(&mut node, 2), Some(true));

    // A new term frees the vote.
    node.step(vote_request(3, 7, 5, 5));
    assert_eq!(vote_answer(&mut node, 3), Some(true));
    assert_eq!(node.vote(), Some(NodeId(3)));
}

#[test]
fn a_vote_is_granted_only_to_a_log_at_least_as_up_to_date() {
    // Our log ends at (7, 6). "Up to date": a higher last term wins; with equal last terms,
    // the longer log wins (§5.4.1).
    let cases = [
        ((7, 5), false), // older last term, even if as long
        ((9, 5), false), // older last term, even if longer
        ((6, 6), false), // same last term, shorter
        ((7, 6), true),  // identical
        ((8, 6), true),  // same last term, longer
        ((6, 7), true),  // newer last term, even if shorter
    ];
    for ((last_index, last_term), granted) in cases {
        let mut node = node(6, &[(6, 6), (7, 6)], 5);
        node.step(vote_request(2, 8, last_index, last_term));
        assert_eq!(
            vote_answer(&mut node, 2),
            Some(granted),
            "candidate log ending at ({last_index},{last_term})"
        );
        // Whether granted or not, the higher term was adopted.
        assert_eq!(node.term(), Term(8));
    }
}

#[test]
fn a_granted_vote_is_persisted_before_it_is_sent() {
    let mut node = node(5, &[], 5);
    node.step(vote_request(2, 6, 5, 5));
    let ready = node.ready();
    assert!(ready.messages.iter().all(|m| m.to != NodeId(2)));
    assert!(matches!(
        ready.persisted_messages[0].body,
        MessageBody::RequestVoteResponse { granted: true, .. }
    ));
    let hard_state = ready.hard_state.expect("the vote is in the hard state");
    assert_eq!(
        (hard_state.term, hard_state.vote),
        (Term(6), Some(NodeId(2)))
    );
}

#[test]
fn a_pre_vote_is_answered_on_the_log_alone_and_changes_no_state() {
    let mut config = Config::new(ME);
    config.check_quorum = false;
    let mut node = node_with(config, 5, &[(6, 5)], 5);
    let pre_vote = |last_index, last_term| {
        message(
            2,
            7,
            MessageBody::RequestVote {
                pre_vote: true,
                last_log_index: LogIndex(last_index),
                last_log_term: Term(last_term),
                transfer: false,
            },
        )
    };
    node.step(pre_vote(6, 5));
    assert_eq!(vote_answer(&mut node, 2), Some(true));
    node.step(pre_vote(5, 5));
    assert_eq!(vote_answer(&mut node, 2), Some(false), "shorter log");
    assert_eq!((node.term(), node.vote()), (Term(5), None));
}

// ---- Terms: "if a message has a higher term, adopt it and become a follower; a message
// ---- with a lower term is stale" ----

#[test]
fn a_higher_term_turns_a_leader_into_a_follower_of_that_term() {
    let mut node = node(5, &[], 5);
    elect(&mut node);
    assert_eq!(node.term(), Term(6));
    node.step(append(3, 9, (5, 5), &[], 5));
    assert_eq!(node.role(), Role::Follower);
    assert_eq!(node.term(), Term(9));
    assert_eq!(node.vote(), None, "the vote belongs to the old term");
    assert_eq!(node.leader(), Some(NodeId(3)));
}

#[test]
fn a_candidate_that_hears_a_leader_of_its_term_follows_it() {
    let mut node = node(5, &[], 5);
    node.campaign();
    assert_eq!((node.role(), node.term()), (Role::Candidate, Term(6)));
    node.step(append(2, 6, (5, 5), &[(6, 6)], 5));
    assert_eq!(node.role(), Role::Follower);
    assert_eq!(node.leader(), Some(NodeId(2)));
    assert_eq!(
        node.vote(),
        Some(ME),
        "a vote, once cast, stands for the term"
    );
}

#[test]
fn a_stale_leader_changes_nothing_and_is_told_the_current_term() {
    let mut config = Config::new(ME);
    config.pre_vote = false;
    let mut node = node_with(config, 7, &[(6, 6)], 5);
    node.step(append(2, 6, (6, 6), &[(7, 6)], 7));
    assert_eq!(log_of(&node), vec![(6, 6)]);
    assert_eq!(node.committed(), LogIndex(5));
    let reply = sent(&mut node);
    assert_eq!(reply.len(), 1);
    assert_eq!(reply[0].term, Term(7));
    assert_eq!(
        reply[0].body,
        MessageBody::AppendEntriesResponse {
            reject: false,
            index: LogIndex(0),
            hint_index: LogIndex(0),
            hint_term: Term(0)
        },
        "the reply tells the term and acknowledges nothing"
    );
}

#[test]
fn a_stale_vote_request_is_not_granted() {
    let mut node = node(7, &[], 5);
    node.step(vote_request(2, 6, 100, 6));
    assert_ne!(vote_answer(&mut node, 2), Some(true));
    assert_eq!((node.term(), node.vote()), (Term(7), None));
}

// ---- AppendEntries: "reply false if the log has no entry at prevLogIndex with
// ---- prevLogTerm; delete a conflicting entry and all that follow it; append new entries" ----

#[test]
fn append_is_rejected_when_the_previous_entry_does_not_match() {
    let mut node = node(7, &[(6, 6), (7, 6)], 5);
    node.step(append(2, 7, (7, 7), &[(8, 7)], 5));
    assert_eq!(log_of(&node), vec![(6, 6), (7, 6)], "log untouched");
    let reply = sent(&mut node);
    match reply[0].body {
        MessageBody::AppendEntriesResponse {
            reject: true,
            index,
            hint_index,
            hint_term,
        } => {
            assert_eq!(index, LogIndex(7));
            // Our last entry with a term at most 7 is (7, 6): the leader may skip to there.
            assert_eq!((hint_index, hint_term), (LogIndex(7), Term(6)));
        }
        ref other => panic!("expected a rejection, got {other:?}"),
    }
    // Past the end of our log: the hint points at our last entry.
    node.step(append(2, 7, (12, 7), &[], 5));
    match sent(&mut node)[0].body {
        MessageBody::AppendEntriesResponse {
            reject, hint_index, ..
        } => assert!(reject && hint_index == LogIndex(7)),
        ref other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn a_conflicting_suffix_is_replaced_and_a_matching_prefix_kept() {
    let mut node = node(7, &[(6, 6), (7, 6), (8, 6)], 5);
    node.step(append(2, 7, (6, 6), &[(7, 7)], 5));
    assert_eq!(log_of(&node), vec![(6, 6), (7, 7)]);

    // A delayed, shorter copy of what we already have must not truncate the log.
    let mut node = node_with(Config::new(ME), 7, &[(6, 6), (7, 6), (8, 6)], 5);
    node.step(append(2, 7, (5, 5), &[(6, 6)], 5));
    assert_eq!(log_of(&node), vec![(6, 6), (7, 6), (8, 6)]);
    let acked = sent(&mut node).into_iter().find_map(|m| match m.body {
        MessageBody::AppendEntriesResponse {
            reject: false,
            index,
            ..
        } => Some(index),
        _ => None,
    });
    assert_eq!(
        acked,
        Some(LogIndex(6)),
        "acknowledge only what the message proved"
    );
}

#[test]
fn committed_entries_are_never_rewritten() {
    let mut node = node(7, &[(6, 6), (7, 6)], 7);
    node.step(append(2, 9, (6, 6), &[(7, 9)], 7));
    assert_eq!(log_of(&node), vec![(6, 6), (7, 6)]);
}

#[test]
fn an_append_acknowledgement_waits_for_persistence() {
    let mut node = node(7, &[(6, 6)], 5);
    node.step(append(2, 7, (6, 6), &[(7, 7)], 5));
    let ready = node.ready();
    assert_eq!(ready.entries.len(), 1);
    assert!(ready.messages.is_empty(), "nothing leaves before the write");
    assert!(matches!(
        ready.persisted_messages[0].body,
        MessageBody::AppendEntriesResponse { reject: false, index, .. } if index == LogIndex(7)
    ));
}

// ---- Commit: "a leader commits an entry of its current term once a majority stores it;
// ---- earlier entries are committed indirectly with it" (§5.4.2, Figure 8) ----

#[test]
fn a_leader_never_commits_an_earlier_term_entry_by_counting_replicas() {
    // Entries 6 and 7 are from term 6 and were never committed; node 1 now leads term 8.
    let mut node = node(7, &[(6, 6), (7, 6)], 5);
    elect(&mut node);
    assert_eq!((node.term(), node.last_index()), (Term(8), LogIndex(8)));

    // A majority (1 and 2) stores entry 7 of term 6: not enough.
    node.step(append_response(2, 8, 7));
    assert_eq!(node.committed(), LogIndex(5));

    // Once a majority stores the term-8 entry, it and everything before it commit.
    node.step(append_response(2, 8, 8));
    assert_eq!(node.committed(), LogIndex(8));
}

#[test]
fn a_leader_counts_its_own_log_only_once_persisted() {
    let mut node = node(5, &[], 5);
    elect(&mut node);
    node.step(append_response(2, 6, 6));
    assert_eq!(node.committed(), LogIndex(6));
    let index = node.propose(b"x".to_vec().into()).expect("leader");
    let ready = node.ready(); // not persisted yet
    node.step(append_response(2, 6, index.0));
    assert_eq!(
        node.committed(),
        LogIndex(6),
        "one durable copy of two needed"
    );
    node.step(append_response(3, 6, index.0));
    assert_eq!(node.committed(), index, "followers 2 and 3 are a majority");
    node.advance(ready.advance());
}

/// The empty AppendEntries (commit notices) among `messages`, as (to, leader commit).
fn commit_notices(messages: &[Message]) -> Vec<(NodeId, LogIndex)> {
    messages
        .iter()
        .filter_map(|m| match &m.body {
            MessageBody::AppendEntries {
                entries,
                leader_commit,
                ..
            } if entries.is_empty() => Some((m.to, *leader_commit)),
            _ => None,
        })
        .collect()
}

/// Not a rule of the paper but of how a commit reaches followers: with
/// `Config::broadcast_commit` an acknowledgement that commits sends every follower a commit
/// notice at once; without it the commit travels with the next append or heartbeat, except
/// the first commit of a term (the new leader's entry, after which conf changes are
/// accepted) and a conf change's, and `broadcast_commit()` asks for one notice.
#[test]
fn without_broadcast_commit_a_commit_travels_with_the_next_append_or_heartbeat() {
    let both = |index: LogIndex| vec![(NodeId(2), index), (NodeId(3), index)];
    for broadcast in [true, false] {
        let mut config = Config::new(ME);
        config.pre_vote = false;
        config.check_quorum = false;
        config.broadcast_commit = broadcast;
        let heartbeat_ticks = config.heartbeat_interval_ticks;
        let mut node = node_with(config, 5, &[], 5);
        elect(&mut node);
        node.step(append_response(2, 6, 6));
        assert_eq!(node.committed(), LogIndex(6));
        let notices = commit_notices(&sent(&mut node));
        assert!(
            notices.contains(&(NodeId(2), LogIndex(6))),
            "broadcast {broadcast}: the first commit of a term is told at once: {notices:?}"
        );
        node.step(append_response(3, 6, 6));
        sent(&mut node);

        // A client entry commits on node 2's acknowledgement.
        let index = node.propose(b"x".to_vec().into()).expect("leader");
        sent(&mut node);
        node.step(append_response(2, 6, index.0));
        assert_eq!(node.committed(), index);
        let notices = commit_notices(&sent(&mut node));
        if broadcast {
            assert_eq!(notices, both(index), "a notice to each follower at once");
        } else {
            assert!(notices.is_empty(), "no notice of its own: {notices:?}");
        }

        // The next append carries it.
        let next = node.propose(b"y".to_vec().into()).expect("leader");
        let carried = sent(&mut node).into_iter().any(|m| {
            matches!(&m.body, MessageBody::AppendEntries { entries, leader_commit, .. }
                if m.to == NodeId(3) && entries.last().map(|e| e.index) == Some(next)
                    && *leader_commit == index)
        });
        assert!(
            carried,
            "broadcast {broadcast}: the next append carries commit {index:?}"
        );

        // So does the heartbeat, up to what the follower matched.
        node.step(append_response(2, 6, next.0));
        node.step(append_response(3, 6, next.0));
        sent(&mut node);
        for _ in 0..heartbeat_ticks {
            node.tick();
        }
        let heartbeats: Vec<(NodeId, LogIndex)> = sent(&mut node)
            .into_iter()
            .filter_map(|m| match m.body {
                MessageBody::Heartbeat { commit, .. } => Some((m.to, commit)),
                _ => None,
            })
            .collect();
        assert_eq!(heartbeats, both(next), "broadcast {broadcast}");

        // A conf change's commit is told at once either way.
        let change = tessera_core::ConfChange::AddLearner(NodeId(4));
        let conf_index = node.propose_conf_change(change).expect("accepted");
        sent(&mut node);
        node.step(append_response(2, 6, conf_index.0));
        assert_eq!(node.committed(), conf_index);
        let notices = commit_notices(&sent(&mut node));
        assert!(
            notices.contains(&(NodeId(2), conf_index)),
            "broadcast {broadcast}: a conf change is told at once: {notices:?}"
        );

        // And `broadcast_commit()` asks for notices.
        node.broadcast_commit();
        let notices = commit_notices(&sent(&mut node));
        assert!(
            notices.contains(&(NodeId(2), conf_index)),
            "broadcast {broadcast}: asked for: {notices:?}"
        );
    }
}

#[test]
fn a_follower_commits_up_to_the_leader_commit_but_not_past_what_it_matched() {
    let mut node = node(7, &[(6, 6), (7, 6), (8, 6)], 5);
    // The leader says 10 is committed, but this message proves only up to 7.
    node.step(append(2, 7, (6, 6), &[(7, 6)], 10));
    assert_eq!(node.committed(), LogIndex(7));
    // A heartbeat's commit is capped by our log.
    node.step(message(
        2,
        7,
        MessageBody::Heartbeat {
            commit: LogIndex(50),
            read_context: 0,
        },
    ));
    assert_eq!(node.committed(), LogIndex(8));
}

// ---- Membership: "a new leader commits an entry of its own term before changing the
// ---- membership" (the fix to single-server changes) ----

/// Regression: the refusal used to name "an earlier membership change is not applied yet"
/// when the real reason was the leader's missing commit in its term.
#[test]
fn a_new_leader_refuses_a_conf_change_until_it_commits_in_its_term() {
    let mut node = node(5, &[], 5);
    elect(&mut node);
    let change = tessera_core::ConfChange::AddLearner(NodeId(4));
    assert_eq!(
        node.propose_conf_change(change),
        Err(tessera_core::RaftError::ProposalDropped {
            reason: "leader has not committed an entry of its term yet"
        })
    );
    node.step(append_response(2, 6, 6));
    assert_eq!(node.committed(), LogIndex(6));
    handle_ready(&mut node); // apply the leader's first entry
    assert_eq!(node.propose_conf_change(change), Ok(LogIndex(7)));
}

// ---- Robustness: nothing a peer sends makes a node panic or break its invariants ----

fn arbitrary_entries() -> impl Strategy<Value = Vec<Entry>> {
    prop::collection::vec((0u64..16, 0u64..10, any::<bool>()), 0..5).prop_map(|raw| {
        raw.into_iter()
            .map(|(index, term, conf)| Entry {
                term: Term(term),
                index: LogIndex(index),
                kind: if conf {
                    EntryKind::ConfChange
                } else {
                    EntryKind::Normal
                },
                data: vec![conf as u8, index as u8].into(),
            })
            .collect()
    })
}

fn arbitrary_body() -> impl Strategy<Value = MessageBody> {
    let index = || (0u64..18).prop_map(LogIndex);
    let term = || (0u64..11).prop_map(Term);
    prop_oneof![
        (any::<bool>(), index(), term(), any::<bool>()).prop_map(|(pre_vote, i, t, transfer)| {
            MessageBody::RequestVote {
                pre_vote,
                last_log_index: i,
                last_log_term: t,
                transfer,
            }
        }),
        (any::<bool>(), any::<bool>())
            .prop_map(|(pre_vote, granted)| MessageBody::RequestVoteResponse { pre_vote, granted }),
        (index(), term(), arbitrary_entries(), index()).prop_map(|(i, t, entries, c)| {
            MessageBody::AppendEntries {
                prev_log_index: i,
                prev_log_term: t,
                entries,
                leader_commit: c,
            }
        }),
        (any::<bool>(), index(), index(), term()).prop_map(|(reject, i, hi, ht)| {
            MessageBody::AppendEntriesResponse {
                reject,
                index: i,
                hint_index: hi,
                hint_term: ht,
            }
        }),
        (index(), 0u64..4).prop_map(|(commit, read_context)| MessageBody::Heartbeat {
            commit,
            read_context
        }),
        (0u64..4).prop_map(|read_context| MessageBody::HeartbeatResponse { read_context }),
        (
            index(),
            term(),
            prop::collection::vec(0u64..6, 0..4),
            prop::collection::vec(0u64..6, 0..3)
        )
            .prop_map(|(i, t, voters, learners)| MessageBody::InstallSnapshot {
                snapshot: Snapshot {
                    metadata: SnapshotMetadata {
                        index: i,
                        term: t,
                        conf_state: ConfState {
                            voters: voters.into_iter().map(NodeId).collect(),
                            learners: learners.into_iter().map(NodeId).collect(),
                        },
                    },
                    data: vec![1, 2, 3].into(),
                },
            }),
        Just(MessageBody::TimeoutNow),
        (0u64..4).prop_map(|request_id| MessageBody::ReadIndexRequest { request_id }),
        (0u64..4, index())
            .prop_map(|(request_id, index)| MessageBody::ReadIndexResponse { request_id, index }),
    ]
}

/// Mostly addressed to node 1 from members, sometimes from strangers, node 0, or itself.
fn arbitrary_message() -> impl Strategy<Value = Message> {
    let from = prop_oneof![8 => 2u64..4, 1 => 0u64..2, 1 => 4u64..9];
    let to = prop_oneof![9 => Just(1u64), 1 => 0u64..4];
    (from, to, 0u64..11, arbitrary_body()).prop_map(|(from, to, term, body)| Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(term),
        body,
    })
}

#[derive(Clone, Debug)]
enum Op {
    Step(Message),
    Tick,
    HandleReady,
    Propose,
    ReadIndex(u64),
    Campaign,
    /// Snapshot the applied state and compact the log there.
    Compact,
    /// Crash and restart from what was persisted.
    Restart,
}

fn arbitrary_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => arbitrary_message().prop_map(Op::Step),
        3 => Just(Op::Tick),
        3 => Just(Op::HandleReady),
        1 => Just(Op::Propose),
        1 => (0u64..4).prop_map(Op::ReadIndex),
        1 => Just(Op::Campaign),
        1 => Just(Op::Compact),
        1 => Just(Op::Restart),
    ]
}

/// Node 1 with a log (6/6, 7/6, 8/7) of which 6 is committed, in `role`.
fn node_in_role(role: Role, pre_vote: bool, check_quorum: bool) -> RaftCore<MemStorage> {
    let mut config = Config::new(ME);
    config.pre_vote = match role {
        Role::PreCandidate => true,
        Role::Candidate => false,
        Role::Follower | Role::Leader => pre_vote,
    };
    config.check_quorum = check_quorum;
    config.inflight_msgs_max = 2;
    config.msg_bytes_max = 64;
    let mut node = node_with(config, 7, &[(6, 6), (7, 6), (8, 7)], 6);
    match role {
        Role::Follower => {}
        Role::PreCandidate | Role::Candidate => node.campaign(),
        Role::Leader => {
            node.campaign();
            for _ in 0..2 {
                let pre_vote = node.role() == Role::PreCandidate;
                let term = if pre_vote {
                    node.term().0 + 1
                } else {
                    node.term().0
                };
                handle_ready(&mut node);
                node.step(message(
                    2,
                    term,
                    MessageBody::RequestVoteResponse {
                        pre_vote,
                        granted: true,
                    },
                ));
            }
        }
    }
    assert_eq!(node.role(), role);
    node
}

fn arbitrary_role() -> impl Strategy<Value = Role> {
    prop_oneof![
        Just(Role::Follower),
        Just(Role::PreCandidate),
        Just(Role::Candidate),
        Just(Role::Leader),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random, stale and malformed messages (indexes past the log, unknown peers, term 0,
    /// entries with gaps or backward terms, snapshots with odd memberships), interleaved with
    /// ticks, proposals and Ready handling: the node never panics and its invariants hold
    /// after every step.
    #[test]
    fn no_message_makes_a_node_panic_or_break_an_invariant(
        role in arbitrary_role(),
        pre_vote in any::<bool>(),
        check_quorum in any::<bool>(),
        ops in prop::collection::vec(arbitrary_op(), 1..100),
    ) {
        let mut node = node_in_role(role, pre_vote, check_quorum);
        for op in ops {
            match op {
                Op::Step(message) => node.step(message),
                Op::Tick => node.tick(),
                Op::HandleReady => { handle_ready(&mut node); }
                Op::Propose => { let _ = node.propose(b"p".to_vec().into()); }
                Op::ReadIndex(id) => { let _ = node.read_index(id); }
                Op::Campaign => node.campaign(),
                Op::Compact => {
                    let (applied, conf) = (node.applied(), node.conf_state().clone());
                    node.storage_mut().create_snapshot(applied, conf, b"state".to_vec());
                }
                Op::Restart => {
                    let (config, storage) = (node.config().clone(), node.storage().clone());
                    node = RaftCore::new(config, storage).expect("restart");
                }
            }
            if let Err(broken) = node.invariants() {
                return Err(TestCaseError::fail(format!("invariant broken: {broken}")));
            }
        }
        // And it can still hand out and absorb everything it has.
        for _ in 0..3 {
            handle_ready(&mut node);
        }
        prop_assert!(node.invariants().is_ok());
    }
}
