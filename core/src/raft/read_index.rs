//! ReadIndex: linearizable reads without writing to the log.
//!
//! 1. A read arrives at the leader (from its own caller, or forwarded by a follower).
//! 2. If the leader has not yet committed an entry of its current term, it does not know the
//!    true commit index: the read waits (bounded by `pending_reads_max`).
//! 3. Otherwise the read joins the next heartbeat round, remembering the commit index now.
//!    All reads queued between two `ready` calls share one round.
//! 4. When a quorum of voters acknowledged a heartbeat of that round or a later one, the
//!    leader was still leader when the read arrived: the read is confirmed at its index.
//! 5. The caller serves it once its applied index reaches that index.
//!
//! Round ids ("contexts") are the leader's own counter, never the caller's request id, so a
//! retried request can never be confirmed by the acknowledgement of an older round.

use std::collections::VecDeque;

use super::RaftCore;
use crate::error::RaftError;
use crate::quorum;
use crate::ready::{ReadState, Role};
use crate::storage::Storage;
use crate::types::{LogIndex, MessageBody, NodeId};

/// A read waiting for confirmation.
#[derive(Clone, Copy, Debug)]
struct PendingRead {
    request_id: u64,
    /// `None` for the leader's own caller, else the follower that forwarded it.
    origin: Option<NodeId>,
    index: LogIndex,
    context: u64,
}

/// The leader's bookkeeping of reads.
#[derive(Debug)]
pub(super) struct ReadOnly {
    /// Reads waiting for the leader's first commit in its term (rule 2).
    waiting_for_commit: VecDeque<(u64, Option<NodeId>)>,
    /// Reads queued for the next round (rule 3).
    next_round: Vec<(u64, Option<NodeId>)>,
    /// Reads in a round, oldest first; contexts never decrease along the queue.
    in_flight: VecDeque<PendingRead>,
    last_context: u64,
    reads_max: usize,
}

impl ReadOnly {
    pub(super) fn new(reads_max: usize) -> ReadOnly {
        ReadOnly {
            waiting_for_commit: VecDeque::new(),
            next_round: Vec::new(),
            in_flight: VecDeque::new(),
            last_context: 0,
            reads_max,
        }
    }

    /// Drops every pending read (leadership lost); their callers time out and retry.
    pub(super) fn clear(&mut self) {
        self.waiting_for_commit.clear();
        self.next_round.clear();
        self.in_flight.clear();
    }

    pub(super) fn round_pending(&self) -> bool {
        !self.next_round.is_empty()
    }

    pub(super) fn last_context(&self) -> u64 {
        self.last_context
    }

    fn len(&self) -> usize {
        self.waiting_for_commit.len() + self.next_round.len() + self.in_flight.len()
    }
}

impl<S: Storage> RaftCore<S> {
    /// Asks for a linearizable read. The answer comes as a `ReadState` with this
    /// `request_id` in a later `Ready`. Use a fresh id for every attempt.
    ///
    /// # Errors
    /// `NotLeader` when no leader is known; `ProposalDropped` when too many reads wait.
    pub fn read_index(&mut self, request_id: u64) -> Result<(), RaftError> {
        match self.role {
            Role::Leader => self.leader_read(request_id, None),
            _ => match self.leader {
                Some(leader) => {
                    self.send(leader, MessageBody::ReadIndexRequest { request_id });
                    Ok(())
                }
                None => Err(RaftError::NotLeader { leader: None }),
            },
        }
    }

    pub(super) fn on_read_request(&mut self, from: NodeId, request_id: u64) {
        if self.leader_read(request_id, Some(from)).is_err() {
            let body = MessageBody::ReadIndexResponse {
                request_id,
                index: LogIndex(0),
            };
            self.send(from, body);
        }
    }

    fn leader_read(&mut self, request_id: u64, origin: Option<NodeId>) -> Result<(), RaftError> {
        if self.read_only.len() >= self.read_only.reads_max {
            return Err(RaftError::ProposalDropped {
                reason: "too many pending reads",
            });
        }
        let committed_in_term = self.log.term_or_zero(self.log.committed()) == self.term;
        if !committed_in_term {
            self.read_only
                .waiting_for_commit
                .push_back((request_id, origin));
        } else if self.conf.voters == [self.config.id] {
            // A single voter is its own quorum.
            let index = self.log.committed();
            self.answer_read(request_id, origin, index);
        } else {
            self.read_only.next_round.push((request_id, origin));
        }
        Ok(())
    }

    /// Rule 2 → 3: the leader's first commit in its term releases the waiting reads.
    pub(super) fn on_first_commit_in_term(&mut self) {
        let waiting: Vec<_> = self.read_only.waiting_for_commit.drain(..).collect();
        for (request_id, origin) in waiting {
            let _ = self.leader_read(request_id, origin);
        }
    }

    /// Rule 3: starts one heartbeat round for every read queued since the last one.
    pub(super) fn start_read_round(&mut self) {
        self.read_only.last_context += 1;
        let context = self.read_only.last_context;
        let index = self.log.committed();
        for (request_id, origin) in std::mem::take(&mut self.read_only.next_round) {
            self.read_only.in_flight.push_back(PendingRead {
                request_id,
                origin,
                index,
                context,
            });
        }
        let id = self.config.id;
        if let Some(progress) = self.progress.get_mut(&id) {
            progress.read_context_acked = context;
        }
        self.broadcast_heartbeat();
    }

    /// Rule 4: answers every read whose round a quorum acknowledged.
    pub(super) fn confirm_reads(&mut self) {
        while let Some(read) = self.read_only.in_flight.front().copied() {
            let progress = &self.progress;
            let confirmed = quorum::has_quorum(&self.conf.voters, |voter| {
                progress
                    .get(&voter)
                    .is_some_and(|p| p.read_context_acked >= read.context)
            });
            if !confirmed {
                break;
            }
            self.read_only.in_flight.pop_front();
            self.answer_read(read.request_id, read.origin, read.index);
        }
    }

    fn answer_read(&mut self, request_id: u64, origin: Option<NodeId>, index: LogIndex) {
        match origin {
            None => self.read_states.push(ReadState { request_id, index }),
            Some(follower) => self.send(
                follower,
                MessageBody::ReadIndexResponse { request_id, index },
            ),
        }
    }
}
