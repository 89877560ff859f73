//! The client protocol as plain Rust values: what the node's client service and the client
//! library exchange. The FlatBuffers encoding lives in `client_request_codec` and
//! `client_response_codec`; nothing here knows about bytes.
//!
//! A client sends a [`ClientRequest`] naming the Region (and the epoch of it) it believes
//! holds the key; the node answers with a [`ClientResponse`] carrying the same `request_id`
//! and either a [`ClientReply`] or a typed [`ClientError`] whose hints (leader, current Region
//! descriptors, owning core) let the client retry at the right place.

use tessera_core::{LogIndex, NodeId, RegionId, Term};

use crate::{ClusterId, CoreId};

/// How a request is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Last writer wins; reads may be served by the leader without a ReadIndex round.
    Raw,
    /// Versioned keys, compare-and-swap, linearizable reads (ReadIndex).
    Strong,
}

/// A Region's epoch as a client saw it: `version` bumps on split or merge, `conf_version` on a
/// membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct RegionEpoch {
    pub version: u64,
    pub conf_version: u64,
}

/// One client request.
///
/// Invariants after decoding: `namespace`, keys and values are within the limits; a key-value
/// operation names a Region other than 0; scan limits are between 1 and `scan_limit_max`; a
/// scan's `start < end` unless `end` is empty (unbounded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRequest {
    /// Chosen by the client, echoed in the response.
    pub request_id: u64,
    pub namespace: String,
    pub mode: Mode,
    /// The Region the client believes holds the key; `RegionId(0)` for Regions and Status.
    pub region_id: RegionId,
    pub epoch: RegionEpoch,
    pub op: ClientOp,
}

/// What a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientOp {
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
    /// Keys in `[start, end)`; an empty `end` means the end of the key space.
    Scan {
        start: Vec<u8>,
        end: Vec<u8>,
        limit: u32,
    },
    ScanPrefix {
        prefix: Vec<u8>,
        limit: u32,
    },
    /// Write `value` if the key's version is `expected_version` (0: the key must not exist).
    Cas {
        key: Vec<u8>,
        expected_version: u64,
        value: Vec<u8>,
    },
    /// Delete the key if its version is `expected_version`.
    CasDelete {
        key: Vec<u8>,
        expected_version: u64,
    },
    /// The routing table.
    Regions,
    /// The node's status.
    Status,
    /// Asks the placement driver to add this store to the cluster.
    Join {
        store: StoreDescriptor,
    },
    /// A store's heartbeat to the placement driver: its replicas as it sees them.
    StoreHeartbeat {
        node_id: NodeId,
        regions: Vec<RegionReport>,
    },
    /// Asks the placement driver for the id of the new Region when the request's Region
    /// splits.
    AskSplit,
    /// Splits the request's Region at `key` (empty: the middle of its data); the upper half
    /// becomes `new_region_id`. Served by the Region's leader.
    Split {
        key: Vec<u8>,
        new_region_id: RegionId,
    },
    /// The placement driver's metadata.
    PdStatus,
    /// Asks the placement driver to move the request's Region's replica from store `from`
    /// (`NodeId(0)`: the driver picks one) to store `to`.
    MoveRegion {
        from: NodeId,
        to: NodeId,
    },
    /// Asks the placement driver to cancel the move of the request's Region (a move not
    /// begun is dropped; one whose target is a member already is rolled back).
    CancelMove,
    /// Asks the Region's leader for the next step of moving the replica on `from` to `to`.
    MoveStep {
        from: NodeId,
        to: NodeId,
    },
    /// Destroys this node's replica of the request's Region, removed at the request's epoch.
    DestroyReplica,
    /// Tells a core of the cluster's stores (a store joined after the bootstrap).
    LearnStores {
        stores: Vec<StoreDescriptor>,
    },
}

impl ClientOp {
    /// True for operations that address one Region (all but Regions and Status).
    pub fn targets_region(&self) -> bool {
        !matches!(
            self,
            ClientOp::Regions
                | ClientOp::Status
                | ClientOp::Join { .. }
                | ClientOp::StoreHeartbeat { .. }
                | ClientOp::PdStatus
                | ClientOp::LearnStores { .. }
        )
    }

    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            ClientOp::Put { .. } => "Put",
            ClientOp::Get { .. } => "Get",
            ClientOp::Delete { .. } => "Delete",
            ClientOp::Scan { .. } => "Scan",
            ClientOp::ScanPrefix { .. } => "ScanPrefix",
            ClientOp::Cas { .. } => "Cas",
            ClientOp::CasDelete { .. } => "CasDelete",
            ClientOp::Regions => "Regions",
            ClientOp::Status => "Status",
            ClientOp::Join { .. } => "Join",
            ClientOp::StoreHeartbeat { .. } => "StoreHeartbeat",
            ClientOp::AskSplit => "AskSplit",
            ClientOp::Split { .. } => "Split",
            ClientOp::PdStatus => "PdStatus",
            ClientOp::MoveRegion { .. } => "MoveRegion",
            ClientOp::CancelMove => "CancelMove",
            ClientOp::MoveStep { .. } => "MoveStep",
            ClientOp::DestroyReplica => "DestroyReplica",
            ClientOp::LearnStores { .. } => "LearnStores",
        }
    }
}

/// The answer to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientResponse {
    pub request_id: u64,
    pub result: Result<ClientReply, ClientError>,
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientReply {
    /// A write took effect; `version` is the key's new version (0 after a delete).
    Written { version: u64 },
    /// A get: `None` when the key does not exist.
    Value { value: Option<VersionedValue> },
    /// A scan, in key order; `more` when the limit cut it short.
    Scan { items: Vec<KeyValue>, more: bool },
    /// The routing table.
    Regions {
        regions: Vec<RegionDescriptor>,
        stores: Vec<StoreDescriptor>,
    },
    /// The node's status.
    Status(NodeStatus),
    /// The placement driver's answer to `Join`: not `ready` while it waits for more stores;
    /// then the cluster id and the layout to start from.
    Joined {
        ready: bool,
        cluster_id: ClusterId,
        regions: Vec<RegionDescriptor>,
        stores: Vec<StoreDescriptor>,
    },
    /// The placement driver recorded a heartbeat.
    Ack,
    /// The placement driver's answer to `AskSplit`.
    SplitIds { new_region_id: RegionId },
    /// The placement driver's metadata.
    Pd(PdStatus),
    /// What a `MoveStep` did; `done` once the move is complete.
    MoveStep { done: bool, detail: String },
    /// The placement driver's answer to a heartbeat: moves in progress, the reporting
    /// store's replicas to destroy (their Region at the driver's newer membership), and the
    /// cluster's stores.
    Heartbeat {
        moves: Vec<MoveOrder>,
        stale: Vec<RegionDescriptor>,
        stores: Vec<StoreDescriptor>,
    },
}

/// A move the placement driver orders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MoveOrder {
    pub region_id: RegionId,
    pub from: NodeId,
    pub to: NodeId,
    /// The move undoes a cancelled one (and cannot be cancelled itself).
    pub rollback: bool,
}

/// One Region as a store reports it to the placement driver, and as the driver records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionReport {
    pub region: RegionDescriptor,
    /// Bytes of keys and values in the Region's state machine.
    pub approximate_bytes: u64,
    pub keys: u64,
}

/// One store as the placement driver records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreReport {
    pub store: StoreDescriptor,
    /// Milliseconds since its last heartbeat; `None` when none arrived since the driver
    /// started.
    pub heartbeat_age_ms: Option<u64>,
    /// Heartbeats received since the driver started.
    pub heartbeats: u64,
}

/// The placement driver's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PdStatus {
    pub cluster_id: ClusterId,
    /// The next Region id the driver may hand out.
    pub next_region_id: u64,
    pub stores: Vec<StoreReport>,
    pub regions: Vec<RegionReport>,
    /// The moves in progress.
    pub moves: Vec<MoveOrder>,
}

/// A value and its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionedValue {
    pub value: Vec<u8>,
    pub version: u64,
}

/// One scanned key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub version: u64,
}

/// A Region as the routing table describes it.
///
/// Invariants after decoding: `region_id` is not 0; `start_key < end_key` unless `end_key` is
/// empty (unbounded); no peer is node 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionDescriptor {
    pub region_id: RegionId,
    pub start_key: Vec<u8>,
    pub end_key: Vec<u8>,
    pub epoch: RegionEpoch,
    pub peers: Vec<NodeId>,
    pub leader: Option<NodeId>,
}

/// A node as the routing table describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreDescriptor {
    pub node_id: NodeId,
    /// Client addresses ("host:port"): one per core, or a single shared one.
    pub client_addrs: Vec<String>,
    pub cores: u32,
    /// Peer (Raft) addresses ("host:port"), one per core; empty when not needed.
    pub peer_addrs: Vec<String>,
}

/// What `status` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    pub node_id: NodeId,
    pub cluster_id: ClusterId,
    pub cores: u32,
    pub regions: Vec<RegionStatus>,
}

/// One Region's replica on the answering node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionStatus {
    pub region_id: RegionId,
    pub core: CoreId,
    pub leader: Option<NodeId>,
    pub term: Term,
    pub commit_index: LogIndex,
    pub applied_index: LogIndex,
    /// The replica's view of its Region (range, epoch, peers, leader).
    pub region: Option<RegionDescriptor>,
    /// Bytes of keys and values in the Region's state machine.
    pub approximate_bytes: u64,
    pub keys: u64,
    /// The peers of `region` that are learners (they do not vote or count toward a quorum).
    pub learners: Vec<NodeId>,
}

/// A typed refusal. Each carries what the client needs to retry correctly.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// This replica is not the leader; retry at `leader` (when known).
    #[error("not the leader; leader is {leader:?} at {leader_addr:?}")]
    NotLeader {
        leader: Option<NodeId>,
        leader_addr: Option<String>,
    },
    /// The client's epoch is old; `regions` are the current descriptors of the Regions that
    /// now cover the requested range.
    #[error("stale region epoch; {} current region descriptors attached", regions.len())]
    StaleEpoch { regions: Vec<RegionDescriptor> },
    /// The key is outside the Region's range `[start_key, end_key)`.
    #[error("key is not in region {region_id}")]
    KeyNotInRegion {
        key: Vec<u8>,
        region_id: RegionId,
        start_key: Vec<u8>,
        end_key: Vec<u8>,
    },
    /// No replica of this Region on this node.
    #[error("region {region_id} not found on this node")]
    RegionNotFound { region_id: RegionId },
    /// The Region lives on another core of this node (sent when forwarding is impossible).
    #[error("region lives on core {core}")]
    WrongCore { core: CoreId },
    /// A compare-and-swap found another version.
    #[error("version mismatch; current version is {current_version}")]
    VersionMismatch { current_version: u64 },
    /// Too much load; retry later.
    #[error("server busy")]
    ServerBusy,
    /// The request itself is wrong (e.g. an empty key where one is needed).
    #[error("invalid request: {message}")]
    InvalidRequest { message: String },
    /// Something failed inside the node.
    #[error("internal error: {message}")]
    Internal { message: String },
    /// A write was accepted but whether it took effect is unknown: it may have applied, may
    /// still apply, or never will. Sending it again could apply it twice; read the key.
    #[error("outcome unknown: {message}")]
    OutcomeUnknown { message: String },
}
