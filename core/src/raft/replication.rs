//! Log replication: AppendEntries on both sides, commit by counting, snapshots.
//!
//! Rules:
//! 1. A leader commits an index only when a majority of voters match it *and* the entry there
//!    is of the leader's current term (§5.4.2); earlier entries commit with it.
//! 2. A leader counts its own log only up to what the caller reported persisted.
//! 3. A follower acknowledges entries only after they are durable: its responses go out with
//!    `Ready::persisted_messages`.
//! 4. A follower never rewrites a committed entry; an AppendEntries whose entries are not
//!    consecutive, whose terms go backwards, or whose terms exceed the sender's, is ignored.
//! 5. A rejection carries a hint `(index, term)` so the leader skips a whole term of
//!    mismatching entries per round trip instead of one entry.

use super::RaftCore;
use crate::progress::ProgressState;
use crate::quorum;
use crate::storage::Storage;
use crate::types::{Entry, LogIndex, MessageBody, NodeId, Snapshot, Term};

impl<S: Storage> RaftCore<S> {
    /// Sends new entries (or just the commit index) to every member.
    pub(super) fn broadcast_append(&mut self) {
        let members: Vec<NodeId> = self.progress.keys().copied().collect();
        let id = self.config.id;
        for member in members.into_iter().filter(|m| *m != id) {
            self.send_append(member, true);
        }
    }

    /// Sends `to` the entries it lacks, as far as its progress allows. With `allow_empty`, an
    /// up-to-date member still gets an empty AppendEntries carrying the commit index. Returns
    /// true if a message was queued.
    pub(super) fn send_append(&mut self, to: NodeId, allow_empty: bool) -> bool {
        let Some(progress) = self.progress.get(&to) else {
            return false;
        };
        if progress.is_paused() {
            return false;
        }
        let next = progress.next_index;
        let prev_log_index = next.prev();
        let last = self.log.last_index();
        let prev_log_term = self.log.term(prev_log_index);
        let entries = self
            .log
            .entries(next, last.next(), self.config.msg_bytes_max);
        let (Ok(prev_log_term), Ok(entries)) = (prev_log_term, entries) else {
            return self.send_snapshot(to);
        };
        let replicating = progress.state == ProgressState::Replicate;
        if entries.is_empty() && replicating && !allow_empty {
            return false;
        }
        let last_sent = entries.last().map_or(prev_log_index, |e| e.index);
        let entries_sent = !entries.is_empty();
        let body = MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit: self.log.committed(),
        };
        self.send(to, body);
        if let Some(progress) = self.progress.get_mut(&to) {
            progress.on_sent(last_sent, entries_sent);
        }
        true
    }

    /// Sends the storage's snapshot to a member that needs compacted entries.
    fn send_snapshot(&mut self, to: NodeId) -> bool {
        let snapshot = match self.log.storage().snapshot() {
            Ok(snapshot) if snapshot.metadata.index.0 > 0 => snapshot,
            Ok(_) | Err(_) => {
                tracing::debug!(id = ?self.config.id, ?to, "snapshot not available yet");
                return false;
            }
        };
        let index = snapshot.metadata.index;
        self.send(to, MessageBody::InstallSnapshot { snapshot });
        if let Some(progress) = self.progress.get_mut(&to) {
            progress.become_snapshot(index);
        }
        true
    }

    /// Keeps sending to `to` while its pipeline has room and entries remain.
    fn send_while_room(&mut self, to: NodeId) {
        let mut budget = self.config.inflight_msgs_max;
        while budget > 0 && self.send_append(to, false) {
            budget -= 1;
            let more = self.progress.get(&to).is_some_and(|p| {
                p.state == ProgressState::Replicate && p.next_index <= self.log.last_index()
            });
            if !more {
                break;
            }
        }
    }

    pub(super) fn on_append_response(
        &mut self,
        from: NodeId,
        reject: bool,
        index: LogIndex,
        hint_index: LogIndex,
        hint_term: Term,
    ) {
        let last = self.log.last_index();
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        progress.recent_active = true;
        if reject {
            let next_probe = if hint_term.0 > 0 {
                self.log.find_conflict_by_term(hint_index, hint_term)
            } else {
                hint_index
            };
            let progress = self.progress.get_mut(&from).expect("checked above");
            if progress.maybe_decrease_to(index, next_probe) {
                if progress.state == ProgressState::Replicate {
                    progress.become_probe();
                }
                self.send_append(from, true);
            }
            return;
        }
        if index > last {
            tracing::warn!(id = ?self.config.id, ?from, ?index, ?last, "ignoring acknowledgement past our log");
            return;
        }
        let was_paused = progress.is_paused();
        if !progress.maybe_update(index) {
            return;
        }
        match progress.state {
            ProgressState::Probe => progress.become_replicate(),
            ProgressState::Snapshot { pending_index } if progress.match_index >= pending_index => {
                progress.become_probe();
                progress.become_replicate();
            }
            ProgressState::Snapshot { .. } => {}
            ProgressState::Replicate => progress.free_inflights_to(index),
        }
        let match_index = progress.match_index;
        let committed_before = self.log.committed();
        // Without `broadcast_commit` the commit rides on the next append or heartbeat, but a
        // conf change (and the new leader's first entry, `pending_conf_index` then) is told
        // at once: members act on it.
        if self.maybe_commit()
            && (self.config.broadcast_commit || self.pending_conf_index > committed_before)
        {
            self.broadcast_pending = true;
        }
        if was_paused
            || self
                .progress
                .get(&from)
                .is_some_and(|p| p.next_index <= last)
        {
            self.send_while_room(from);
        }
        if self.lead_transferee == Some(from) && match_index == self.log.last_index() {
            self.send(from, MessageBody::TimeoutNow);
        }
    }

    /// Rule 1 and 2: advances the commit index if a quorum matches an entry of this term.
    pub(super) fn maybe_commit(&mut self) -> bool {
        let progress = &self.progress;
        let candidate = quorum::committed_index(&self.conf.voters, |voter| {
            progress.get(&voter).map_or(LogIndex(0), |p| p.match_index)
        });
        if candidate <= self.log.committed() || self.log.term_or_zero(candidate) != self.term {
            return false;
        }
        let first_in_term = self.log.term_or_zero(self.log.committed()) != self.term;
        self.log.commit_to(candidate);
        if first_in_term {
            self.on_first_commit_in_term();
        }
        true
    }

    pub(super) fn broadcast_heartbeat(&mut self) {
        let read_context = self.read_only.last_context();
        let committed = self.log.committed();
        let targets: Vec<(NodeId, LogIndex)> = self
            .progress
            .iter()
            .filter(|(id, _)| **id != self.config.id)
            .map(|(id, p)| (*id, p.match_index.min(committed)))
            .collect();
        for (to, commit) in targets {
            let body = MessageBody::Heartbeat {
                commit,
                read_context,
            };
            self.send(to, body);
        }
    }

    pub(super) fn on_heartbeat_response(&mut self, from: NodeId, read_context: u64) {
        let last = self.log.last_index();
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        progress.recent_active = true;
        progress.probe_sent = false;
        if progress.state == ProgressState::Replicate && progress.is_paused() {
            progress.free_first_inflight();
        }
        progress.read_context_acked = progress.read_context_acked.max(read_context);
        if progress.match_index < last {
            // Even with nothing new to send, an empty append probes the follower's log: if
            // appends in flight were lost, it rejects and replication restarts from its match
            // point (the store test of a node returning from an outage found this).
            self.send_append(from, true);
        }
        self.confirm_reads();
    }

    /// Follower side of AppendEntries (rules 3 and 4).
    pub(super) fn on_append(
        &mut self,
        from: NodeId,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
    ) {
        if !entries_well_formed(prev_log_index, prev_log_term, self.term, &entries) {
            tracing::warn!(id = ?self.config.id, ?from, "ignoring malformed AppendEntries");
            return;
        }
        let committed = self.log.committed();
        if prev_log_index < committed {
            // Everything up to our commit index already matches the leader's log.
            let body = append_ack(committed);
            self.send_after_persist(from, self.term, body);
            return;
        }
        match self
            .log
            .maybe_append(prev_log_index, prev_log_term, &entries)
        {
            Some(last_new) => {
                self.log.commit_to(leader_commit.min(last_new));
                self.send_after_persist(from, self.term, append_ack(last_new));
            }
            None => {
                let hint_index = self.log.find_conflict_by_term(
                    prev_log_index.min(self.log.last_index()),
                    prev_log_term,
                );
                let body = MessageBody::AppendEntriesResponse {
                    reject: true,
                    index: prev_log_index,
                    hint_index,
                    hint_term: self.log.term_or_zero(hint_index),
                };
                self.send_after_persist(from, self.term, body);
            }
        }
    }

    pub(super) fn on_heartbeat(&mut self, from: NodeId, commit: LogIndex, read_context: u64) {
        let commit = commit.min(self.log.last_index());
        self.log.commit_to(commit);
        self.send(from, MessageBody::HeartbeatResponse { read_context });
    }

    /// Follower side of InstallSnapshot.
    pub(super) fn on_snapshot(&mut self, from: NodeId, mut snapshot: Snapshot) {
        let index = snapshot.metadata.index;
        let term = snapshot.metadata.term;
        if index.0 == 0 || term.0 == 0 || term > self.term {
            tracing::warn!(id = ?self.config.id, ?from, "ignoring malformed snapshot");
            return;
        }
        let committed = self.log.committed();
        if index <= committed {
            self.send_after_persist(from, self.term, append_ack(committed));
            return;
        }
        if self.log.match_term(index, term) {
            // We already have the entries it covers: just learn they are committed.
            self.log.commit_to(index);
            self.send_after_persist(from, self.term, append_ack(index));
            return;
        }
        snapshot.metadata.conf_state.normalize();
        tracing::info!(id = ?self.config.id, ?index, ?term, "installing snapshot");
        self.conf = snapshot.metadata.conf_state.clone();
        self.conf_changes_applying.clear();
        self.log.restore(snapshot);
        self.send_after_persist(from, self.term, append_ack(index));
    }
}

fn append_ack(index: LogIndex) -> MessageBody {
    MessageBody::AppendEntriesResponse {
        reject: false,
        index,
        hint_index: LogIndex(0),
        hint_term: Term(0),
    }
}

/// Rule 4: entries follow `prev` consecutively, terms never decrease and never exceed the
/// sender's term.
fn entries_well_formed(
    prev_index: LogIndex,
    prev_term: Term,
    sender_term: Term,
    entries: &[Entry],
) -> bool {
    let mut expected_index = prev_index.next();
    let mut last_term = prev_term;
    if prev_term > sender_term {
        return false;
    }
    for entry in entries {
        if entry.index != expected_index
            || entry.term.0 == 0
            || entry.term < last_term
            || entry.term > sender_term
        {
            return false;
        }
        expected_index = expected_index.next();
        last_term = entry.term;
    }
    true
}
