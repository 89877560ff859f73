//! The value types every layer shares: identifiers, log entries, hard state, messages,
//! configurations and snapshots.
//!
//! These are plain Rust values. The wire format (FlatBuffers, in `tessera-transport`) and the
//! disk format (WAL records, in `tessera-wal`) convert to and from them at the edge; the core
//! never sees bytes except as opaque entry payloads and snapshot data.
//!
//! Invariants that hold for values the core produces, and that the edges must check for values
//! arriving from a peer or the disk, are documented on each type. The core itself never panics
//! on a message whose fields are out of range: it ignores or rejects it.

use std::fmt;
use std::sync::Arc;

macro_rules! id_newtype {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw number, for encoders.
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    };
}

id_newtype!(
    /// A node (store) of the cluster. `NodeId(0)` is never a valid node; it means "none".
    NodeId,
    "n"
);
id_newtype!(
    /// A Region, which is one Raft group. Region ids are allocated by the placement driver.
    RegionId,
    "r"
);
id_newtype!(
    /// A Raft term. Terms only grow on a node.
    Term,
    "t"
);
id_newtype!(
    /// A position in the Raft log. Index 0 is the empty prefix; the first entry has index 1.
    LogIndex,
    "i"
);

impl Term {
    /// The highest term a member accepts from a peer. Far beyond any real election count, it
    /// leaves room to campaign (`term + 1`) after adopting it; a message above it is dropped.
    pub const MAX_ACCEPTED: Term = Term(u64::MAX / 2);
}

impl LogIndex {
    /// The index after this one.
    pub const fn next(self) -> LogIndex {
        LogIndex(self.0 + 1)
    }

    /// The index before this one, saturating at zero.
    pub const fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }
}

/// Immutable, cheaply cloned bytes: an entry's payload or a snapshot's data.
///
/// Entries are sent to every follower and kept in the unstable log at the same time, so
/// cloning must not copy the bytes.
#[derive(Clone, PartialEq, Eq, Default, Hash)]
pub struct Payload(Arc<[u8]>);

impl Payload {
    /// An empty payload (no allocation is shared across calls, but it holds no bytes).
    pub fn empty() -> Payload {
        Payload(Arc::from(&[][..]))
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

impl std::ops::Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Payload {
        Payload(Arc::from(bytes))
    }
}

impl From<&[u8]> for Payload {
    fn from(bytes: &[u8]) -> Payload {
        Payload(Arc::from(bytes))
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(text) if text.len() <= 32 => write!(f, "{text:?}"),
            _ => write!(f, "<{} bytes>", self.0.len()),
        }
    }
}

/// What an entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A client command (or the empty entry a new leader appends), opaque to the core.
    Normal,
    /// A membership change; the payload is a [`ConfChange`] in its own encoding.
    ConfChange,
}

impl EntryKind {
    /// The number used by encoders.
    pub const fn code(self) -> u8 {
        match self {
            EntryKind::Normal => 0,
            EntryKind::ConfChange => 1,
        }
    }

    /// The kind for an encoded number, or `None` for an unknown code.
    pub const fn from_code(code: u8) -> Option<EntryKind> {
        match code {
            0 => Some(EntryKind::Normal),
            1 => Some(EntryKind::ConfChange),
            _ => None,
        }
    }
}

/// One entry of the replicated log.
///
/// Invariant: within a log, indexes are consecutive and terms never decrease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub term: Term,
    pub index: LogIndex,
    pub kind: EntryKind,
    pub data: Payload,
}

impl Entry {
    /// Approximate size in bytes, used for the per-message byte budget.
    pub fn size_bytes(&self) -> usize {
        self.data.len() + 24
    }
}

/// The state a node must persist before it answers anything that depends on it.
///
/// Invariant: `vote`, when set, was granted in `term`; `commit` never decreases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HardState {
    pub term: Term,
    pub vote: Option<NodeId>,
    pub commit: LogIndex,
}

/// The membership of a group: who votes and who only receives the log.
///
/// Invariant: `voters` and `learners` are sorted, have no duplicates, and are disjoint.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ConfState {
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
}

impl ConfState {
    /// A configuration of voters only.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> ConfState {
        let mut conf = ConfState {
            voters: voters.into_iter().collect(),
            learners: Vec::new(),
        };
        conf.normalize();
        conf
    }

    /// Sorts and deduplicates both lists; a node listed as both is a voter.
    pub fn normalize(&mut self) {
        self.voters.sort_unstable();
        self.voters.dedup();
        self.learners.sort_unstable();
        self.learners.dedup();
        let voters = &self.voters;
        self.learners.retain(|id| voters.binary_search(id).is_err());
    }

    /// True if `id` is a voter.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.binary_search(&id).is_ok()
    }

    /// True if `id` is a learner.
    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.binary_search(&id).is_ok()
    }

    /// True if `id` is a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Every member, voters first.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }
}

/// One membership change. Tessera changes membership one node at a time; see
/// `conf_change.rs` for the rules that make that safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfChange {
    /// Add a node that receives the log but does not vote (or demote a voter to learner).
    AddLearner(NodeId),
    /// Add a voter, or promote a learner to voter.
    AddVoter(NodeId),
    /// Remove a voter or learner.
    Remove(NodeId),
}

impl ConfChange {
    /// Encoded length in bytes.
    pub const ENCODED_LEN: usize = 9;

    /// The node the change is about.
    pub fn node(self) -> NodeId {
        match self {
            ConfChange::AddLearner(id) | ConfChange::AddVoter(id) | ConfChange::Remove(id) => id,
        }
    }

    /// Encodes as one kind byte then the node id, little-endian.
    pub fn encode(self) -> Vec<u8> {
        let (kind, id) = match self {
            ConfChange::AddLearner(id) => (0u8, id),
            ConfChange::AddVoter(id) => (1u8, id),
            ConfChange::Remove(id) => (2u8, id),
        };
        let mut bytes = Vec::with_capacity(Self::ENCODED_LEN);
        bytes.push(kind);
        bytes.extend_from_slice(&id.0.to_le_bytes());
        bytes
    }

    /// Decodes what [`ConfChange::encode`] wrote; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<ConfChange> {
        if bytes.len() != Self::ENCODED_LEN {
            return None;
        }
        let id = NodeId(u64::from_le_bytes(bytes[1..9].try_into().ok()?));
        if id.0 == 0 {
            return None;
        }
        match bytes[0] {
            0 => Some(ConfChange::AddLearner(id)),
            1 => Some(ConfChange::AddVoter(id)),
            2 => Some(ConfChange::Remove(id)),
            _ => None,
        }
    }

    /// The configuration after applying this change to `conf`.
    pub fn apply_to(self, conf: &ConfState) -> ConfState {
        let mut next = conf.clone();
        let id = self.node();
        next.voters.retain(|v| *v != id);
        next.learners.retain(|l| *l != id);
        match self {
            ConfChange::AddLearner(_) => next.learners.push(id),
            ConfChange::AddVoter(_) => next.voters.push(id),
            ConfChange::Remove(_) => {}
        }
        next.normalize();
        next
    }
}

/// Where a snapshot cuts the log, and the membership at that point.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SnapshotMetadata {
    pub index: LogIndex,
    pub term: Term,
    pub conf_state: ConfState,
}

/// A state-machine snapshot: everything applied up to `metadata.index`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub metadata: SnapshotMetadata,
    pub data: Payload,
}

/// A Raft message between two members of one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    /// The sender's term. Every message carries it; see `RaftCore::step` for term handling.
    pub term: Term,
    pub body: MessageBody,
}

/// What a message says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// A (pre-)vote request. A pre-vote carries the term the candidate would campaign in and
    /// changes no state on the receiver.
    RequestVote {
        pre_vote: bool,
        last_log_index: LogIndex,
        last_log_term: Term,
        /// Set when the current leader asked for this campaign (leadership transfer), which
        /// lets it through the receiver's leader lease.
        transfer: bool,
    },
    /// The answer to a (pre-)vote request.
    RequestVoteResponse { pre_vote: bool, granted: bool },
    /// Entries following `(prev_log_index, prev_log_term)`; empty as a probe.
    AppendEntries {
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
    },
    /// On success `index` is the last index the follower now matches. On rejection `index`
    /// is the rejected `prev_log_index`, and `(hint_index, hint_term)` is the follower's best
    /// guess of where the logs may agree, for fast backtracking.
    AppendEntriesResponse {
        reject: bool,
        index: LogIndex,
        hint_index: LogIndex,
        hint_term: Term,
    },
    /// Keeps followers' election timers reset and carries a ReadIndex round id.
    Heartbeat { commit: LogIndex, read_context: u64 },
    /// The answer to a heartbeat, echoing its ReadIndex round id.
    HeartbeatResponse { read_context: u64 },
    /// The leader's snapshot, sent when a follower needs entries already compacted.
    InstallSnapshot { snapshot: Snapshot },
    /// Sent by a leader transferring leadership: campaign now, skipping pre-vote.
    TimeoutNow,
    /// A follower asks the leader for a read index on behalf of its client.
    ReadIndexRequest { request_id: u64 },
    /// The leader's answer: reads at `request_id` may be served once `index` is applied.
    /// An `index` of zero means the leader could not serve it (it is not ready yet).
    ReadIndexResponse { request_id: u64, index: LogIndex },
}

impl MessageBody {
    /// A short name for logs and traces.
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::RequestVote { pre_vote: true, .. } => "PreVote",
            MessageBody::RequestVote { .. } => "Vote",
            MessageBody::RequestVoteResponse { pre_vote: true, .. } => "PreVoteResp",
            MessageBody::RequestVoteResponse { .. } => "VoteResp",
            MessageBody::AppendEntries { .. } => "App",
            MessageBody::AppendEntriesResponse { .. } => "AppResp",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResp",
            MessageBody::InstallSnapshot { .. } => "Snapshot",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::ReadIndexRequest { .. } => "ReadIndex",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResp",
        }
    }

    /// Approximate size in bytes, for batching budgets.
    pub fn size_bytes(&self) -> usize {
        match self {
            MessageBody::AppendEntries { entries, .. } => {
                48 + entries.iter().map(Entry::size_bytes).sum::<usize>()
            }
            MessageBody::InstallSnapshot { snapshot } => 64 + snapshot.data.len(),
            _ => 48,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_change_round_trips_and_rejects_garbage() {
        for change in [
            ConfChange::AddLearner(NodeId(4)),
            ConfChange::AddVoter(NodeId(u64::MAX)),
            ConfChange::Remove(NodeId(1)),
        ] {
            assert_eq!(ConfChange::decode(&change.encode()), Some(change));
        }
        assert_eq!(ConfChange::decode(&[]), None);
        assert_eq!(ConfChange::decode(&[7, 1, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(ConfChange::decode(&[1, 0, 0, 0, 0, 0, 0, 0, 0]), None);
    }

    #[test]
    fn conf_change_moves_a_node_between_roles() {
        let conf = ConfState::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
        let conf = ConfChange::AddLearner(NodeId(4)).apply_to(&conf);
        assert!(conf.is_learner(NodeId(4)));
        let conf = ConfChange::AddVoter(NodeId(4)).apply_to(&conf);
        assert!(conf.is_voter(NodeId(4)) && !conf.is_learner(NodeId(4)));
        let conf = ConfChange::Remove(NodeId(1)).apply_to(&conf);
        assert_eq!(conf.voters, vec![NodeId(2), NodeId(3), NodeId(4)]);
        assert!(conf.learners.is_empty());
    }
}
