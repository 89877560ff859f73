//! Membership changes, one node at a time, and leadership transfer.
//!
//! Safety of single-node changes rests on three rules:
//! 1. A change takes effect on each member when it applies the entry (the caller reports it
//!    applied through `advance`), so a member's configuration is always one its committed log
//!    justifies.
//! 2. A leader proposes a change only after it committed an entry of its own term (the fix for
//!    the bug in the original single-server algorithm), and only when every earlier change is
//!    applied: at most two adjacent configurations, whose majorities overlap, are ever in use.
//! 3. No member campaigns while a committed change is unapplied (see `election.rs`).
//!
//! A leader that applies its own removal (or demotion to learner) steps down; the remaining
//! voters elect a new leader. Transferring leadership first avoids the election pause.

use super::RaftCore;
use crate::error::RaftError;
use crate::progress::Progress;
use crate::ready::Role;
use crate::storage::Storage;
use crate::types::{ConfChange, EntryKind, LogIndex, MessageBody, NodeId};

impl<S: Storage> RaftCore<S> {
    /// Proposes a membership change. Returns the index of its entry.
    ///
    /// # Errors
    /// `NotLeader`; `ProposalDropped` while an earlier change is unapplied or before the
    /// leader committed in its term (rule 2); `InvalidConfChange` for a change that is a no-op
    /// or would leave no voter.
    pub fn propose_conf_change(&mut self, change: ConfChange) -> Result<LogIndex, RaftError> {
        self.check_can_propose()?;
        if self.log.term_or_zero(self.log.committed()) != self.term {
            return Err(RaftError::ProposalDropped {
                reason: "leader has not committed an entry of its term yet",
            });
        }
        if self.pending_conf_index > self.log.applied() {
            return Err(RaftError::ProposalDropped {
                reason: "an earlier membership change is not applied yet",
            });
        }
        validate_change(&self.conf, change)?;
        let index = self.append_entry(EntryKind::ConfChange, change.encode().into());
        self.pending_conf_index = index;
        Ok(index)
    }

    /// Rule 1: a change reported applied takes effect.
    pub(super) fn apply_conf_change(&mut self, change: ConfChange) {
        self.conf = change.apply_to(&self.conf);
        tracing::info!(id = ?self.config.id, ?change, conf = ?self.conf, "applied membership change");
        if self.role != Role::Leader {
            return;
        }
        if !self.conf.is_voter(self.config.id) {
            self.become_follower(self.term, None);
            return;
        }
        let next = self.log.last_index().next();
        let inflights_max = self.config.inflight_msgs_max;
        let members: Vec<NodeId> = self.conf.members().collect();
        self.progress.retain(|id, _| members.contains(id));
        for member in members {
            self.progress
                .entry(member)
                .or_insert_with(|| Progress::new(next, inflights_max));
        }
        if self.lead_transferee.is_some_and(|t| !self.conf.is_voter(t)) {
            self.lead_transferee = None;
        }
        if self.maybe_commit() {
            self.broadcast_pending = true;
        }
        self.broadcast_append();
        self.confirm_reads();
    }

    /// Hands leadership to `to`: stop taking proposals, bring `to` up to date, then tell it to
    /// campaign at once. Abandoned after an election timeout.
    ///
    /// # Errors
    /// `NotLeader` on a non-leader; `InvalidConfChange` if `to` is not another voter.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), RaftError> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader {
                leader: self.leader,
            });
        }
        if to == self.config.id || !self.conf.is_voter(to) {
            return Err(RaftError::InvalidConfChange {
                reason: "leadership can only go to another voter",
            });
        }
        if self.lead_transferee == Some(to) {
            return Ok(());
        }
        self.lead_transferee = Some(to);
        self.election_elapsed_ticks = 0;
        let caught_up = self
            .progress
            .get(&to)
            .is_some_and(|p| p.match_index == self.log.last_index());
        if caught_up {
            self.send(to, MessageBody::TimeoutNow);
        } else {
            self.send_append(to, true);
        }
        Ok(())
    }

    /// The caller reports whether a snapshot it sent to `to` arrived. A failure sends the
    /// member back to probing (which sends a snapshot again if still needed).
    pub fn report_snapshot(&mut self, to: NodeId, delivered: bool) {
        let Some(progress) = self.progress.get_mut(&to) else {
            return;
        };
        if let crate::progress::ProgressState::Snapshot { .. } = progress.state {
            if !delivered {
                progress.become_probe();
            }
        }
    }

    /// The member leadership is being transferred to, if any.
    pub fn lead_transferee(&self) -> Option<NodeId> {
        self.lead_transferee
    }
}

fn validate_change(conf: &crate::types::ConfState, change: ConfChange) -> Result<(), RaftError> {
    let invalid = |reason| Err(RaftError::InvalidConfChange { reason });
    match change {
        ConfChange::AddVoter(id) if conf.is_voter(id) => invalid("already a voter"),
        ConfChange::AddLearner(id) if conf.is_learner(id) => invalid("already a learner"),
        ConfChange::Remove(id) if !conf.contains(id) => invalid("not a member"),
        _ if change.node().0 == 0 => invalid("node id 0"),
        _ if change.apply_to(conf).voters.is_empty() => invalid("would leave no voter"),
        _ => Ok(()),
    }
}
