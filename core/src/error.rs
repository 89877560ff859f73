//! The core's typed errors.
//!
//! Errors are what a caller can cause or must handle (a proposal to a follower, an unknown
//! group). Anything a *peer* can send is never an error here: a stale or malformed message is
//! ignored or answered with a rejection, because a remote node must not be able to make a
//! local call fail.

use crate::types::{LogIndex, NodeId, RegionId};

/// Why a storage read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The requested index is below the first index: it was compacted into a snapshot.
    #[error("log compacted: requested index {requested} is below first index {first}")]
    Compacted {
        requested: LogIndex,
        first: LogIndex,
    },
    /// The requested index is past the last index.
    #[error("log unavailable: requested index {requested} is past last index {last}")]
    Unavailable { requested: LogIndex, last: LogIndex },
    /// No snapshot can be produced right now; the core retries later.
    #[error("snapshot temporarily unavailable")]
    SnapshotTemporarilyUnavailable,
    /// The backing store failed.
    #[error("storage failed: {0}")]
    Other(String),
}

/// Errors of the core's public calls.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftError {
    /// Proposals and leader-only calls go to the leader; `leader` is who this node believes
    /// leads (if anyone), for the caller to retry there.
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// The proposal was refused; `reason` says why (leadership transfer in progress, too many
    /// uncommitted entries, a conf change already pending, ...). Retrying later may succeed.
    #[error("proposal dropped: {reason}")]
    ProposalDropped { reason: &'static str },
    /// A conf change that makes no sense for the current configuration.
    #[error("invalid membership change: {reason}")]
    InvalidConfChange { reason: &'static str },
    /// `MultiRaft` has no group with this id.
    #[error("unknown group {0}")]
    UnknownGroup(RegionId),
    /// `MultiRaft::create_group` for an id that already exists.
    #[error("group {0} already exists")]
    GroupExists(RegionId),
    /// Configuration values that cannot work.
    #[error("invalid config: {0}")]
    InvalidConfig(&'static str),
    /// Storage failed while the core read from it.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A snapshot or entry index that is not in the log.
    #[error("index {index} is out of range (first {first}, last {last})")]
    IndexOutOfRange {
        index: LogIndex,
        first: LogIndex,
        last: LogIndex,
    },
}
