//! `Ready`: everything the caller must do after the core changed, and `Advance`: what the
//! caller reports back.
//!
//! The calling order for one group (the node does this for all of a core's groups at once):
//! 1. `let ready = core.ready();`
//! 2. Send `ready.messages` right away (a leader replicates while it persists its own copy).
//! 3. Persist, in one durable write: `ready.snapshot`, then `ready.entries` (replacing any
//!    stored entries at or after the first one's index), then `ready.hard_state`.
//! 4. Only then send `ready.persisted_messages` (votes and append acknowledgements promise
//!    durability, so they must not leave before it).
//! 5. Apply `ready.snapshot` and `ready.committed_entries` to the state machine; serve the
//!    reads of `ready.read_states` once applied reaches their index.
//! 6. `core.advance(ready.advance())` (or report less, if applying lags).

use crate::types::{Entry, HardState, LogIndex, Message, NodeId, Snapshot, Term};

/// A node's role in its group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// State that is not persisted but that callers want to know about when it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    pub leader: Option<NodeId>,
    pub role: Role,
}

/// A linearizable read that may be served once the applied index reaches `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub request_id: u64,
    pub index: LogIndex,
}

/// The work a `RaftCore` hands to its caller. See the module docs for the order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ready {
    /// Set when leader or role changed since the last `Ready`.
    pub soft_state: Option<SoftState>,
    /// Set when term, vote or commit changed; persist it.
    pub hard_state: Option<HardState>,
    /// A snapshot to persist and apply (a follower that fell behind the leader's log).
    pub snapshot: Option<Snapshot>,
    /// Entries to persist.
    pub entries: Vec<Entry>,
    /// Messages that may be sent right away.
    pub messages: Vec<Message>,
    /// Messages to send only after this `Ready`'s entries, hard state and snapshot are durable.
    pub persisted_messages: Vec<Message>,
    /// Committed entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    /// Reads confirmed by a quorum.
    pub read_states: Vec<ReadState>,
}

impl Ready {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.soft_state.is_none()
            && self.hard_state.is_none()
            && self.snapshot.is_none()
            && self.entries.is_empty()
            && self.messages.is_empty()
            && self.persisted_messages.is_empty()
            && self.committed_entries.is_empty()
            && self.read_states.is_empty()
    }

    /// The report for `advance` once all of this `Ready` was persisted and applied.
    pub fn advance(&self) -> Advance {
        Advance {
            persisted: self.entries.last().map(|e| (e.index, e.term)),
            snapshot_persisted: self.snapshot.as_ref().map(|s| s.metadata.index),
            applied: self
                .committed_entries
                .last()
                .map(|e| e.index)
                .or(self.snapshot.as_ref().map(|s| s.metadata.index)),
        }
    }
}

/// What the caller has done since the last `advance`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Advance {
    /// The last entry now durable, as (index, term).
    pub persisted: Option<(LogIndex, Term)>,
    /// The index of the snapshot now durable.
    pub snapshot_persisted: Option<LogIndex>,
    /// Everything up to this index is applied to the state machine.
    pub applied: Option<LogIndex>,
}
