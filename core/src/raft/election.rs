//! Elections: timeouts, pre-votes, votes, term handling, the leader lease and check-quorum.
//!
//! Rules, in the Raft paper's terms:
//! 1. A message with a higher term makes the receiver a follower in that term, except
//!    (a) pre-vote requests and granted pre-vote responses, which carry a term nobody is in
//!    yet, and (b) vote requests that arrive while the receiver heard from a leader within an
//!    election timeout (the lease, with check-quorum on), unless the leader itself asked for
//!    the campaign (leadership transfer).
//! 2. A vote is granted at most once per term, and only to a candidate whose log is at least
//!    as up to date (§5.4.1). A pre-vote is granted on the log alone.
//! 3. A member campaigns only if it is a voter, has no snapshot waiting to be persisted, and
//!    has applied every committed conf change (it must know the membership it campaigns in).

use super::RaftCore;
use crate::quorum::{self, VoteResult};
use crate::ready::Role;
use crate::storage::Storage;
use crate::types::{EntryKind, LogIndex, Message, MessageBody, NodeId, Term};

impl<S: Storage> RaftCore<S> {
    pub(super) fn tick_election(&mut self) {
        self.election_elapsed_ticks = self.election_elapsed_ticks.saturating_add(1);
        if self.election_elapsed_ticks >= self.randomized_election_timeout_ticks {
            self.election_elapsed_ticks = 0;
            self.reset_election_timer();
            self.hup(false);
        }
    }

    pub(super) fn tick_leader(&mut self) {
        self.heartbeat_elapsed_ticks += 1;
        self.election_elapsed_ticks += 1;
        if self.election_elapsed_ticks >= self.config.election_timeout_ticks {
            self.election_elapsed_ticks = 0;
            if self.config.check_quorum && !self.quorum_recently_active() {
                tracing::info!(id = ?self.config.id, term = ?self.term, "stepping down: quorum not heard from");
                self.become_follower(self.term, None);
                return;
            }
            for progress in self.progress.values_mut() {
                progress.on_election_round();
            }
            if let Some(transferee) = self.lead_transferee.take() {
                tracing::info!(id = ?self.config.id, ?transferee, "leadership transfer timed out");
            }
        }
        if self.heartbeat_elapsed_ticks >= self.config.heartbeat_interval_ticks {
            self.heartbeat_elapsed_ticks = 0;
            self.broadcast_heartbeat();
        }
    }

    /// True if a quorum was heard from during the last election timeout; starts a new round.
    fn quorum_recently_active(&mut self) -> bool {
        let id = self.config.id;
        let progress = &self.progress;
        let active = quorum::has_quorum(&self.conf.voters, |voter| {
            voter == id || progress.get(&voter).is_some_and(|p| p.recent_active)
        });
        for (member, progress) in self.progress.iter_mut() {
            progress.recent_active = *member == id;
        }
        active
    }

    /// True if this member may campaign (rule 3 of the module docs).
    pub(super) fn promotable(&self) -> bool {
        self.conf.is_voter(self.config.id) && !self.log.has_pending_snapshot()
    }

    /// True if a committed conf change has not been applied yet.
    fn has_unapplied_conf_change(&self) -> bool {
        if !self.conf_changes_applying.is_empty() {
            return true;
        }
        let low = self.log.applying().next();
        let high = self.log.committed().next();
        match self.log.entries(low, high, usize::MAX) {
            Ok(entries) => entries.iter().any(|e| e.kind == EntryKind::ConfChange),
            Err(_) => true, // cannot tell: be safe
        }
    }

    /// The election timeout fired (or a leader asked us to take over, `transfer`).
    pub(super) fn hup(&mut self, transfer: bool) {
        if self.role == Role::Leader || !self.promotable() {
            return;
        }
        if self.has_unapplied_conf_change() {
            tracing::info!(id = ?self.config.id, "not campaigning: a committed conf change is unapplied");
            return;
        }
        let pre_vote = self.config.pre_vote && !transfer;
        self.start_campaign(pre_vote, transfer);
    }

    fn start_campaign(&mut self, pre_vote: bool, transfer: bool) {
        let campaign_term = if pre_vote {
            self.role = Role::PreCandidate;
            self.leader = None;
            self.reset_role_state();
            Term(self.term.0 + 1)
        } else {
            self.become_follower(Term(self.term.0 + 1), None);
            self.role = Role::Candidate;
            self.vote = Some(self.config.id);
            self.term
        };
        self.votes.insert(self.config.id, true);
        tracing::debug!(id = ?self.config.id, ?campaign_term, pre_vote, "campaigning");
        if self.tally_votes() != VoteResult::Pending {
            return;
        }
        let voters: Vec<NodeId> = self.conf.voters.clone();
        let last_log_index = self.log.last_index();
        let last_log_term = self.log.last_term();
        let id = self.config.id;
        for voter in voters.into_iter().filter(|v| *v != id) {
            let body = MessageBody::RequestVote {
                pre_vote,
                last_log_index,
                last_log_term,
                transfer,
            };
            if pre_vote {
                self.send_with_term(voter, campaign_term, body);
            } else {
                // Our own vote must be durable before anyone else's can elect us.
                self.send_after_persist(voter, campaign_term, body);
            }
        }
    }

    /// Acts on the votes so far; returns where the vote stands.
    fn tally_votes(&mut self) -> VoteResult {
        let result = quorum::vote_result(&self.conf.voters, &self.votes);
        match (result, self.role) {
            (VoteResult::Won, Role::PreCandidate) => self.start_campaign(false, false),
            (VoteResult::Won, Role::Candidate) => self.become_leader(),
            (VoteResult::Lost, _) => self.become_follower(self.term, None),
            _ => {}
        }
        result
    }

    pub(super) fn on_vote_response(&mut self, from: NodeId, pre_vote: bool, granted: bool) {
        let expected = if pre_vote {
            Role::PreCandidate
        } else {
            Role::Candidate
        };
        if self.role != expected {
            return;
        }
        self.votes.entry(from).or_insert(granted);
        self.tally_votes();
    }

    /// Term handling for every message (rule 1). Returns false if the message is done with.
    pub(super) fn step_term(&mut self, message: &Message) -> bool {
        if message.term > self.term {
            return self.step_higher_term(message);
        }
        if message.term < self.term {
            self.step_lower_term(message);
            return false;
        }
        true
    }

    fn step_higher_term(&mut self, message: &Message) -> bool {
        match message.body {
            MessageBody::RequestVote {
                pre_vote, transfer, ..
            } => {
                if !transfer && self.in_leader_lease() {
                    tracing::debug!(id = ?self.config.id, from = ?message.from, "ignoring vote request inside the leader lease");
                    return false;
                }
                if !pre_vote {
                    self.become_follower(message.term, None);
                }
            }
            MessageBody::RequestVoteResponse {
                pre_vote: true,
                granted: true,
            } => {}
            MessageBody::AppendEntries { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                self.become_follower(message.term, Some(message.from))
            }
            _ => self.become_follower(message.term, None),
        }
        true
    }

    /// A message from an older term. Tell a stale leader or pre-candidate about our term, so
    /// that a member that was cut off can rejoin (with check-quorum or pre-vote on, our term
    /// may have moved on without it noticing).
    fn step_lower_term(&mut self, message: &Message) {
        let stale_leader = matches!(
            message.body,
            MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. }
        );
        if stale_leader && (self.config.check_quorum || self.config.pre_vote) {
            // Index 0 acknowledges nothing: should this reach the sender after it rose to
            // our term, it must not count as a match (the simulator found that one).
            let body = MessageBody::AppendEntriesResponse {
                reject: false,
                index: LogIndex(0),
                hint_index: LogIndex(0),
                hint_term: Term(0),
            };
            self.send(message.from, body);
        } else if let MessageBody::RequestVote { pre_vote: true, .. } = message.body {
            let body = MessageBody::RequestVoteResponse {
                pre_vote: true,
                granted: false,
            };
            self.send(message.from, body);
        }
    }

    /// True while a leader was heard from within the election timeout (check-quorum on).
    fn in_leader_lease(&self) -> bool {
        self.config.check_quorum
            && self.leader.is_some()
            && self.election_elapsed_ticks < self.config.election_timeout_ticks
    }

    /// Vote granting (rule 2). The term was already handled by `step_term`.
    pub(super) fn on_vote_request(&mut self, message: Message) {
        let MessageBody::RequestVote {
            pre_vote,
            last_log_index,
            last_log_term,
            ..
        } = message.body
        else {
            return;
        };
        let from = message.from;
        let can_vote = self.vote == Some(from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre_vote && message.term > self.term);
        let granted = can_vote && self.log.is_up_to_date(last_log_index, last_log_term);
        let body = MessageBody::RequestVoteResponse { pre_vote, granted };
        if pre_vote {
            // A granted pre-vote answers in the term the candidate proposed.
            let term = if granted { message.term } else { self.term };
            self.send_with_term(from, term, body);
        } else {
            if granted {
                self.election_elapsed_ticks = 0;
                self.vote = Some(from);
            }
            self.send_after_persist(from, self.term, body);
        }
    }

    /// The leader asked us to take over: campaign now, without pre-vote.
    pub(super) fn on_timeout_now(&mut self, from: NodeId) {
        tracing::info!(id = ?self.config.id, ?from, "leadership transferred to us");
        self.hup(true);
    }

    pub(super) fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.reset_role_state();
        let next = self.log.last_index().next();
        let members: Vec<NodeId> = self.conf.members().collect();
        for member in members {
            let mut progress = crate::progress::Progress::new(next, self.config.inflight_msgs_max);
            if member == self.config.id {
                progress.maybe_update(self.log.persisted());
                progress.become_replicate();
                progress.recent_active = true;
            }
            self.progress.insert(member, progress);
        }
        // An entry of our own term: committing it commits everything before it (§5.4.2), and
        // until it commits we serve no reads and accept no conf change.
        let index = self.append_entry(EntryKind::Normal, crate::types::Payload::empty());
        self.pending_conf_index = index;
        tracing::info!(id = ?self.config.id, term = ?self.term, "became leader");
    }
}
