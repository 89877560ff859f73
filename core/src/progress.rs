//! What a leader knows about each follower's log, and how it paces replication to it.
//!
//! ```text
//!            reject / heartbeat resp            snapshot acked
//!   Probe ◄────────────────────────── Replicate ◄──────────── Snapshot
//!     │  first success                   ▲                      ▲
//!     └──────────────────────────────────┘   entries compacted  │
//!     └─────────────────────────────────────────────────────────┘
//! ```
//!
//! - Probe: one AppendEntries at a time, until the follower's match point is found.
//! - Replicate: AppendEntries are pipelined, at most `inflight_msgs_max` unacknowledged.
//! - Snapshot: a snapshot was sent; nothing else is sent until the follower acknowledges it.
//!
//! Invariant: `match_index < next_index`.

use std::collections::VecDeque;

use crate::types::LogIndex;

/// Replication state of one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    Probe,
    Replicate,
    Snapshot { pending_index: LogIndex },
}

/// The leader's view of one member (the leader has one for itself too).
#[derive(Clone, Debug)]
pub struct Progress {
    /// The highest index known to be replicated on the member.
    pub match_index: LogIndex,
    /// The next index to send.
    pub next_index: LogIndex,
    pub state: ProgressState,
    /// In Probe: a probe is out, wait for its answer (or a heartbeat answer) before the next.
    pub probe_sent: bool,
    /// The member was heard from since the last check-quorum round.
    pub recent_active: bool,
    /// Last indexes of AppendEntries in flight, oldest first.
    inflights: VecDeque<LogIndex>,
    inflights_max: usize,
    /// The highest ReadIndex round this member acknowledged.
    pub read_context_acked: u64,
    /// Check-quorum rounds spent in the Snapshot state without an answer.
    snapshot_rounds: u32,
}

impl Progress {
    /// A member about to be probed from `next_index`.
    pub fn new(next_index: LogIndex, inflights_max: usize) -> Progress {
        Progress {
            match_index: LogIndex(0),
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            recent_active: false,
            inflights: VecDeque::new(),
            inflights_max,
            read_context_acked: 0,
            snapshot_rounds: 0,
        }
    }

    fn reset_to(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.state = state;
        self.inflights.clear();
    }

    /// Back to probing from just after the match point.
    pub fn become_probe(&mut self) {
        if let ProgressState::Snapshot { pending_index } = self.state {
            self.next_index = (self.match_index.max(pending_index)).next();
        } else {
            self.next_index = self.match_index.next();
        }
        self.reset_to(ProgressState::Probe);
    }

    /// Start pipelining after the match point.
    pub fn become_replicate(&mut self) {
        self.next_index = self.match_index.next();
        self.reset_to(ProgressState::Replicate);
    }

    /// A snapshot at `pending_index` was sent.
    pub fn become_snapshot(&mut self, pending_index: LogIndex) {
        self.snapshot_rounds = 0;
        self.reset_to(ProgressState::Snapshot { pending_index });
    }

    /// Called once per election timeout on the leader. A snapshot that went unanswered for a
    /// whole round is presumed lost: back to probing, which sends it again. Without this a
    /// lost snapshot message would stall the member forever.
    pub fn on_election_round(&mut self) {
        if let ProgressState::Snapshot { .. } = self.state {
            self.snapshot_rounds += 1;
            if self.snapshot_rounds >= 2 {
                self.become_probe();
            }
        }
    }

    /// The member acknowledged entries up to `index`. Returns true if that is news.
    pub fn maybe_update(&mut self, index: LogIndex) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index.next());
        updated
    }

    /// The member rejected an append whose previous index was `rejected`, hinting that its log
    /// may agree up to `hint`. Returns false for a stale rejection.
    pub fn maybe_decrease_to(&mut self, rejected: LogIndex, hint: LogIndex) -> bool {
        if self.state == ProgressState::Replicate {
            // Only a rejection of what we sent after the match point is news.
            if rejected <= self.match_index {
                return false;
            }
            self.next_index = self.match_index.next();
            return true;
        }
        if self.next_index.prev() != rejected {
            return false;
        }
        self.next_index = hint.next().min(rejected).max(self.match_index.next());
        self.probe_sent = false;
        true
    }

    /// True if nothing more should be sent now.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.len() >= self.inflights_max,
            ProgressState::Snapshot { .. } => true,
        }
    }

    /// An append ending at `last_index` was sent (for pipelining and probing).
    pub fn on_sent(&mut self, last_index: LogIndex, entries_sent: bool) {
        match self.state {
            ProgressState::Replicate if entries_sent => {
                self.next_index = last_index.next();
                self.inflights.push_back(last_index);
            }
            ProgressState::Probe => self.probe_sent = true,
            _ => {}
        }
    }

    /// Frees the in-flight slots of appends acknowledged up to `index`.
    pub fn free_inflights_to(&mut self, index: LogIndex) {
        while self.inflights.front().is_some_and(|last| *last <= index) {
            self.inflights.pop_front();
        }
    }

    /// Frees one slot so a heartbeat answer can unblock a full pipeline (the follower is alive
    /// but some appends were lost).
    pub fn free_first_inflight(&mut self) {
        self.inflights.pop_front();
    }

    /// Number of appends in flight.
    pub fn inflight_count(&self) -> usize {
        self.inflights.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_pauses_at_the_inflight_bound_and_resumes_on_ack() {
        let mut progress = Progress::new(LogIndex(1), 2);
        progress.become_replicate();
        progress.on_sent(LogIndex(3), true);
        progress.on_sent(LogIndex(5), true);
        assert!(progress.is_paused());
        assert!(progress.maybe_update(LogIndex(3)));
        progress.free_inflights_to(LogIndex(3));
        assert!(!progress.is_paused());
        assert_eq!(progress.next_index, LogIndex(6));
    }

    #[test]
    fn probe_backtracks_to_the_hint_but_not_below_match() {
        let mut progress = Progress::new(LogIndex(11), 4);
        progress.match_index = LogIndex(3);
        progress.on_sent(LogIndex(10), false);
        assert!(progress.is_paused());
        assert!(progress.maybe_decrease_to(LogIndex(10), LogIndex(6)));
        assert_eq!(progress.next_index, LogIndex(7));
        assert!(!progress.is_paused());
        // A stale rejection of an earlier probe changes nothing.
        assert!(!progress.maybe_decrease_to(LogIndex(10), LogIndex(1)));
        assert!(progress.maybe_decrease_to(LogIndex(6), LogIndex(0)));
        assert_eq!(progress.next_index, LogIndex(4));
    }
}
