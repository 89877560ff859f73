//! Client requests and replies as the Store sees them: plain Rust values. The server converts
//! them to and from the wire format (`tessera-transport`).

use tessera_core::{NodeId, RegionId};

use crate::kv::ScanItem;
use crate::region::{Region, RegionEpoch};

/// How a request is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Writes are unconditional; reads are served from the leader's applied state without a
    /// ReadIndex round (fast, but may miss a write acknowledged by a newer leader during a
    /// leadership change).
    Raw,
    /// Reads are linearizable (ReadIndex); writes may compare versions.
    Strong,
}

/// One operation on a Region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Get {
        key: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    /// Keys in `[start, end)`, empty `end` = to the end of the Region.
    Scan {
        start: Vec<u8>,
        end: Vec<u8>,
        limit: u32,
    },
    ScanPrefix {
        prefix: Vec<u8>,
        limit: u32,
    },
    /// `expected_version` 0: the key must not exist.
    Cas {
        key: Vec<u8>,
        expected_version: u64,
        value: Vec<u8>,
    },
    CasDelete {
        key: Vec<u8>,
        expected_version: u64,
    },
    /// Split the Region at `key` (empty: the middle of its data); the upper half becomes
    /// `new_region`. Served by the leader, applied by every replica.
    Split {
        key: Vec<u8>,
        new_region: RegionId,
    },
    /// Take the next step of moving the Region's replica on `from` to `to` (see
    /// `store::membership`). Served by the leader; each call proposes at most one change.
    MoveStep {
        from: NodeId,
        to: NodeId,
    },
    /// Destroy this replica: the placement driver saw the Region at a newer membership
    /// (the request's epoch) that no longer includes this store.
    DestroyReplica,
}

impl KvOp {
    /// True for operations that only read.
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            KvOp::Get { .. } | KvOp::Scan { .. } | KvOp::ScanPrefix { .. }
        )
    }

    /// The single key this operation targets, if it has one.
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            KvOp::Put { key, .. }
            | KvOp::Get { key }
            | KvOp::Delete { key }
            | KvOp::Cas { key, .. }
            | KvOp::CasDelete { key, .. } => Some(key),
            KvOp::Scan { .. }
            | KvOp::ScanPrefix { .. }
            | KvOp::Split { .. }
            | KvOp::MoveStep { .. }
            | KvOp::DestroyReplica => None,
        }
    }
}

/// A request routed to one Region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvRequest {
    pub namespace: String,
    pub mode: Mode,
    pub region: RegionId,
    /// The epoch the client's routing table has for the Region.
    pub epoch: RegionEpoch,
    pub op: KvOp,
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvReply {
    /// A write took effect; `version` is the key's new version (0 after a delete).
    Written { version: u64 },
    /// A get; `None` when the key is absent.
    Value { found: Option<(Vec<u8>, u64)> },
    /// A scan, in key order; `more` when the limit cut it short.
    Scan { items: Vec<ScanItem>, more: bool },
    /// A split was applied: the shrunk Region and the new one.
    Split { left: Region, right: Region },
    /// What a `MoveStep` did; `done` once `to` is a voter and `from` is gone.
    MoveStep { done: bool, detail: String },
    /// A replica was destroyed.
    Destroyed,
}

/// Why a request was not served. Every variant tells the client what to do next.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// Retry on the leader (if known).
    #[error("not the leader of region {region:?} (leader: {leader:?})")]
    NotLeader {
        region: RegionId,
        leader: Option<NodeId>,
    },
    /// The client's routing is out of date; here is the current Region.
    #[error("stale epoch for {}", current)]
    StaleEpoch { current: Region },
    /// The key is outside the Region's range: refresh the routing table.
    #[error("key not in {}", region)]
    KeyNotInRegion { region: Region },
    /// No such Region on this node.
    #[error("region {0:?} not found on this node")]
    RegionNotFound(RegionId),
    /// A compare failed.
    #[error("version mismatch (current version {current_version})")]
    VersionMismatch { current_version: u64 },
    /// A bound was reached; retry later.
    #[error("server busy: {0}")]
    ServerBusy(String),
    /// The request is malformed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The write was not applied and never will be (its log entry was replaced after a
    /// leadership change); safe to retry.
    #[error("proposal dropped: {0}")]
    Dropped(String),
    /// The write may or may not have been applied and this replica cannot tell (its log
    /// entry was compacted into a snapshot it installed before seeing the entry committed);
    /// not safe to retry blindly.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
}

/// The Store's answer to one request.
pub type KvResult = Result<KvReply, KvError>;
