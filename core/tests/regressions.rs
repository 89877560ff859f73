//! Regression tests for bugs the simulator found, each named after what it proves.

use tessera_core::{
    ConfState, Config, Entry, EntryKind, HardState, LogIndex, MemStorage, Message, MessageBody,
    NodeId, RaftCore, Role, Term,
};

fn follower_at_term(id: u64, term: u64, last_index: u64) -> RaftCore<MemStorage> {
    let voters = ConfState::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
    let mut storage = MemStorage::new_with_conf(voters);
    let entries: Vec<Entry> = (6..=last_index)
        .map(|index| Entry {
            term: Term(term),
            index: LogIndex(index),
            kind: EntryKind::Normal,
            data: b"x".to_vec().into(),
        })
        .collect();
    storage.append(&entries);
    storage.set_hard_state(HardState {
        term: Term(term),
        vote: None,
        commit: LogIndex(5),
    });
    RaftCore::new(Config::new(NodeId(id)), storage).unwrap()
}

/// Seed 261: a follower answered a stale leader's heartbeat with an acknowledgement of its
/// whole log; delivered late to the same node leading in a newer term, it counted as a match
/// and committed entries the follower did not share.
#[test]
fn reply_to_a_stale_term_acknowledges_nothing() {
    let mut follower = follower_at_term(2, 9, 12);
    follower.step(Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(7),
        body: MessageBody::Heartbeat {
            commit: LogIndex(0),
            read_context: 0,
        },
    });
    let ready = follower.ready();
    let reply = ready
        .messages
        .iter()
        .find(|m| m.to == NodeId(1))
        .expect("the stale leader is told our term");
    assert_eq!(reply.term, Term(9));
    match reply.body {
        MessageBody::AppendEntriesResponse { reject, index, .. } => {
            assert!(!reject);
            assert_eq!(
                index,
                LogIndex(0),
                "a stale-term reply must not acknowledge entries"
            );
        }
        ref other => panic!("unexpected reply {other:?}"),
    }
}

/// Seed 6926: a snapshot message lost on the way left the member in the Snapshot state
/// forever, and with it the quorum. An unanswered snapshot is now sent again.
#[test]
fn a_lost_snapshot_is_sent_again() {
    let voters = ConfState::with_voters([NodeId(1), NodeId(2)]);
    let mut config = Config::new(NodeId(1));
    config.check_quorum = false;
    let mut leader = RaftCore::new(config.clone(), MemStorage::new_with_conf(voters)).unwrap();
    // Win the election with node 2's vote.
    while leader.role() != Role::Candidate && leader.role() != Role::PreCandidate {
        leader.tick();
    }
    for _ in 0..2 {
        let term = leader.term();
        let pre_vote = leader.role() == Role::PreCandidate;
        let _ = leader.ready();
        leader.step(Message {
            from: NodeId(2),
            to: NodeId(1),
            term: if pre_vote { Term(term.0 + 1) } else { term },
            body: MessageBody::RequestVoteResponse {
                pre_vote,
                granted: true,
            },
        });
    }
    assert_eq!(leader.role(), Role::Leader);
    // Node 2 says its log is empty: it needs the bootstrap snapshot.
    let term = leader.term();
    let reject_from_empty_log = Message {
        from: NodeId(2),
        to: NodeId(1),
        term,
        body: MessageBody::AppendEntriesResponse {
            reject: true,
            index: LogIndex(5),
            hint_index: LogIndex(0),
            hint_term: Term(0),
        },
    };
    // Node 2 answers every probe as a member with an empty log would.
    let sent_snapshot = |leader: &mut RaftCore<MemStorage>| {
        let ready = leader.ready();
        leader.advance(ready.advance());
        for message in &ready.messages {
            if let MessageBody::AppendEntries { prev_log_index, .. } = message.body {
                let mut reply = reject_from_empty_log.clone();
                if let MessageBody::AppendEntriesResponse { ref mut index, .. } = reply.body {
                    *index = prev_log_index;
                }
                leader.step(reply);
            }
        }
        ready
            .messages
            .iter()
            .any(|m| matches!(m.body, MessageBody::InstallSnapshot { .. }))
            || leader
                .ready()
                .messages
                .iter()
                .any(|m| matches!(m.body, MessageBody::InstallSnapshot { .. }))
    };
    leader.step(reject_from_empty_log.clone());
    assert!(sent_snapshot(&mut leader), "the first snapshot goes out");
    // The snapshot is lost. Within a few election timeouts it must go out again.
    let mut resent = false;
    for _ in 0..(4 * config.election_timeout_ticks) {
        leader.tick();
        if sent_snapshot(&mut leader) {
            resent = true;
            break;
        }
        // Heartbeat answers keep node 2 looking alive.
        leader.step(Message {
            from: NodeId(2),
            to: NodeId(1),
            term,
            body: MessageBody::HeartbeatResponse { read_context: 0 },
        });
    }
    assert!(resent, "a lost snapshot must be sent again");
}

/// Found by the node's bad-input test: a vote request of term u64::MAX made a node adopt the
/// term, and its next campaign overflowed `term + 1`. Such a message is now dropped.
#[test]
fn a_message_with_an_absurd_term_is_dropped_and_the_node_can_still_campaign() {
    let mut node = follower_at_term(2, 9, 12);
    node.step(Message {
        from: NodeId(3),
        to: NodeId(2),
        term: Term(u64::MAX),
        body: MessageBody::RequestVote {
            pre_vote: false,
            last_log_index: LogIndex(u64::MAX),
            last_log_term: Term(u64::MAX),
            transfer: true,
        },
    });
    assert_eq!(node.term(), Term(9), "the absurd term must not be adopted");
    for _ in 0..100 {
        node.tick();
    }
    assert_ne!(node.role(), Role::Follower, "the node still campaigns");
    assert!(node.term() < Term(u64::MAX / 2));
}
