//! The Store: one core's Regions, as a state machine without I/O.
//!
//! It takes events — ticks, Raft message batches, client requests — and hands back actions:
//! what to persist, what to send, which clients to answer. The glommio driver (`server`)
//! only moves bytes between sockets, the WAL and the Store, so every decision here is
//! testable without a runtime, and a simulator can run whole nodes.
//!
//! One round of the driver, for all the core's Regions at once (group commit):
//! 1. feed events: `on_tick`, `on_raft_messages`, `on_request`;
//! 2. `let ready = store.ready()`: send `ready.messages_now()` at once, and write
//!    `ready.groups()` (entries, hard states, snapshots) to the WAL in ONE write + fdatasync;
//! 3. `store.on_persisted(ready)`: the Store mirrors what is durable into each Region's Raft
//!    storage, applies committed commands, and returns the messages that had to wait for
//!    durability plus the snapshots it took (write them to files, then compact the WAL;
//!    the periodic ones may be written off the core's thread, `server::snapshot_queue`);
//! 4. answer `store.take_replies()`.
//!
//! Splits (see `split.rs`): the leader proposes a `SplitCommand`; every replica applies it in
//! log order, shrinking the Region and creating the new one on this core (its id is owned by
//! the same core, see `placement.rs`) from an initial snapshot at `BOOTSTRAP_INDEX` holding
//! the upper half of the data. That snapshot is handed to the driver like any other and
//! written to a file before the WAL records anything of the new Region, so recovery finds
//! the new Region either in its snapshot file or, if the crash came first, by replaying the
//! split from the parent's log. Commands that were proposed before a split but apply after
//! it are checked against the Region's current range and refused (`KeyNotInRegion`), and
//! reads are checked against the epoch their client saw when they are served. A replica
//! that missed a split (compacted away, caught up by the parent's snapshot) gets the new
//! Region as an uninitialized peer created by a message from its leader and initialized by
//! the leader's snapshot (`on_raft_messages`).
//!
//! Membership changes (moving a replica to another store, destroying a removed replica and
//! its tombstone) are in `membership.rs`.
//!
//! Each Region's Raft log is kept in memory (`MemStorage`) between snapshots, mirroring the
//! WAL; the WAL is read only at recovery. The log is compacted into a snapshot every
//! `snapshot_interval_entries` applied entries, which bounds that memory; each node at its
//! own phase of the interval (`snapshot_due`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use tessera_core::multi::Batches;
use tessera_core::{
    ConfChange, ConfState, Config, EntryKind, LogIndex, MemStorage, Message, MessageBody,
    MultiRaft, MultiReady, NodeId, Payload, RaftError, Ready, RegionId, Role, Snapshot,
    SnapshotMetadata, Storage, Term, BOOTSTRAP_INDEX, BOOTSTRAP_TERM,
};

use crate::kv::state::prefix_successor;
use crate::kv::{KvCommand, KvOutcome, KvState};
use crate::region::{owning_core, Region, RegionEpoch};
use crate::request::{KvError, KvOp, KvReply, KvRequest, KvResult, Mode};
use crate::split::{self, SplitCommand, SPLIT_FORMAT};

pub mod handoff;
pub mod membership;
pub use membership::Tombstone;

/// Identifies a client request to the driver (connection and request id).
pub type Token = u64;

/// Tuning of one core's Store. Every bound is named.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub node: NodeId,
    /// Raft timing and pipelining, shared by all Regions (`id` and `seed` are set per node).
    pub raft: Config,
    /// Take a snapshot and compact the log every this many applied entries, at this node's
    /// phase (`snapshot_due`).
    pub snapshot_interval_entries: u64,
    /// At most this many client requests wait for Raft at once; more get `ServerBusy`.
    pub pending_requests_max: usize,
    /// BROKEN ON PURPOSE, for tests only: every replica, followers included, answers strong
    /// reads from its local state at once, without ReadIndex, so reads can be stale. Set only
    /// from `config::UNSAFE_FOLLOWER_READS_ENV`; the chaos tests use it to show their
    /// linearizability checker catches stale reads.
    pub unsafe_local_strong_reads: bool,
    /// This core's index and the node's core count: a message creates a peer only for a
    /// Region this core owns (`owning_core`).
    pub core: usize,
    pub cores: usize,
}

impl StoreConfig {
    /// Defaults for `node`: 100 ms ticks assumed, snapshots every 10,000 entries, commit
    /// indexes carried by the next append or heartbeat (`Config::broadcast_commit` off; the
    /// node sets it from `raft_broadcast_commit`, on by default).
    pub fn new(node: NodeId) -> StoreConfig {
        StoreConfig {
            node,
            raft: Config {
                broadcast_commit: false,
                ..Config::new(node)
            },
            snapshot_interval_entries: 10_000,
            pending_requests_max: 100_000,
            unsafe_local_strong_reads: false,
            core: 0,
            cores: 1,
        }
    }
}

/// Whether a Region whose last snapshot is at `last` takes its next periodic one once
/// `applied`: when `applied` crosses the next index at this node's phase of the interval
/// (`snapshot_phase`). Consecutive snapshots are `interval` entries apart, as a fixed
/// threshold would make them, but the replicas of a Region reach theirs at different
/// indexes. With a fixed threshold all of them took their snapshot at the same entry, so a
/// write waited for the leader's and both followers' pauses at once (benchmarks.md, Node,
/// pass P); now a follower's pause is hidden by the other follower's acknowledgement.
/// An interval of 0 or 1 takes one after every applied entry.
fn snapshot_due(last: u64, applied: u64, interval: u64, node: NodeId) -> bool {
    let interval = interval.max(1);
    let phase = snapshot_phase(interval, node);
    (applied + phase) / interval > (last + phase) / interval
}

/// This node's offset into the snapshot interval: `interval` × the fractional part of
/// `node` × the golden ratio, which spreads consecutive node ids evenly (ids 1, 2, 3 at 62 %,
/// 24 % and 85 % of the interval).
fn snapshot_phase(interval: u64, node: NodeId) -> u64 {
    const GOLDEN_FRACTION: u64 = 0x9E37_79B9_7F4A_7C15; // 2^64 / φ
    let fraction = node.0.wrapping_mul(GOLDEN_FRACTION);
    ((u128::from(fraction) * u128::from(interval)) >> 64) as u64
}

/// A snapshot the Store took; the driver writes it to a file, then compacts the WAL.
#[derive(Clone, Debug)]
pub struct SnapshotTaken {
    pub region: RegionId,
    pub index: LogIndex,
    pub term: Term,
    pub conf_state: ConfState,
    /// Shared with the Raft storage's snapshot: one copy of a Region's data, not one each.
    pub data: Payload,
}

/// What `on_persisted` hands back.
#[derive(Debug, Default)]
pub struct Persisted {
    /// Messages that waited for durability, per destination node.
    pub messages: Batches,
    /// Snapshots whose files must be durable before the next WAL batch: Regions a split
    /// created (the batch may hold their entries), snapshots seeding a learner.
    pub snapshots: Vec<SnapshotTaken>,
    /// Snapshots taken every `snapshot_interval_entries`: their files may be written in the
    /// background (see `server::snapshot_queue`); only their compaction marks must wait.
    pub periodic_snapshots: Vec<SnapshotTaken>,
}

/// The work of one round; see the module docs.
#[derive(Debug)]
pub struct StoreReady {
    multi: MultiReady,
    /// Per group (same order as `groups`): whether anything must be durable before the
    /// round goes on (a snapshot, entries, a new term or vote). A group whose hard state
    /// only raised its commit index needs no fdatasync: the commit index is a hint that
    /// recovery may find lower (the leader tells it again), never a promise made to a peer.
    needs_sync: Vec<bool>,
    /// See `is_barrier`.
    barrier: bool,
}

impl StoreReady {
    /// Messages to send right away, per destination node.
    pub fn messages_now(&mut self) -> Batches {
        std::mem::take(&mut self.multi.messages)
    }

    /// Per Region, what to persist: `snapshot`, `entries`, `hard_state`.
    pub fn groups(&self) -> &[(RegionId, Ready)] {
        &self.multi.groups
    }

    /// True if applying this round may change which groups exist or who leads them (a
    /// snapshot, a split, a membership change, a role change): a driver that takes the next
    /// round before this one is persisted (pipelining) must wait until it is.
    pub fn is_barrier(&self) -> bool {
        self.barrier
    }

    /// True if the `i`-th group of `groups()` has a snapshot, entries, or a hard state with
    /// a new term or vote to make durable; false if at most its commit index moved.
    pub fn group_needs_sync(&self, i: usize) -> bool {
        self.needs_sync[i]
    }
}

/// A proposal waiting to be applied.
#[derive(Clone, Copy, Debug)]
struct Proposal {
    index: LogIndex,
    term: Term,
    token: Token,
}

/// A strong read waiting for its ReadIndex, then for the applied index to reach it.
#[derive(Clone, Debug)]
struct PendingRead {
    token: Token,
    namespace: String,
    /// The epoch the client saw: a read served after a split it did not know of is refused.
    epoch: RegionEpoch,
    op: KvOp,
}

/// What applying one committed entry did.
enum Applied {
    Kv(KvOutcome),
    /// A KV command whose key left the Region (a split applied first): not applied.
    NotInRegion,
    Split(Result<(Region, Region), String>),
}

/// One Region's replica on this core.
struct Peer {
    /// False for a peer created by a message (see `on_raft_messages`) until a snapshot gives
    /// it its range, epoch and data: `region` is then only a placeholder with the id.
    initialized: bool,
    region: Region,
    /// The membership as of the applied log (the core's own changes at `advance`, a little
    /// later): a split gives the new Region exactly this, learners included.
    conf: ConfState,
    kv: KvState,
    proposals: VecDeque<Proposal>,
    // Ordered, so that the replies failed at a step-down come out in one order (the
    // simulation replays seeds exactly).
    reads_waiting_index: BTreeMap<u64, PendingRead>,
    reads_waiting_apply: VecDeque<(LogIndex, PendingRead)>,
}

/// Counters for status and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub unknown_region_messages: u64,
    pub applied_commands: u64,
    pub snapshots_taken: u64,
    pub snapshots_installed: u64,
    pub splits_applied: u64,
    /// Peers created by a message from their Region's leader (this replica missed the split
    /// that made the Region).
    pub peers_created_by_message: u64,
    /// Messages an uninitialized peer refused: votes, and snapshots overlapping a Region
    /// this core still holds.
    pub uninitialized_refused: u64,
    /// Membership changes applied.
    pub conf_changes_applied: u64,
    /// Replicas destroyed after their removal.
    pub replicas_destroyed: u64,
    /// Snapshots refused because they would bring back a destroyed replica.
    pub tombstone_refused: u64,
    /// Queued proposals of an earlier term answered "dropped" when this replica, leading
    /// again with a shorter log, proposed at or below their index (see `propose`): the shape
    /// of the duplicate write in docs/reliability.md.
    pub proposals_replaced_on_propose: u64,
}

/// A Region's state, for status reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionStatus {
    pub region: Region,
    pub role: Role,
    pub leader: Option<NodeId>,
    pub term: Term,
    pub committed: LogIndex,
    pub applied: LogIndex,
    pub keys: usize,
    pub approximate_bytes: usize,
    /// The members of `region.peers` that are learners.
    pub learners: Vec<NodeId>,
}

/// One core's Regions. See the module docs.
pub struct Store {
    config: StoreConfig,
    raft: MultiRaft<MemStorage>,
    peers: BTreeMap<RegionId, Peer>,
    next_read_id: u64,
    pending_requests: usize,
    replies: Vec<(Token, KvResult)>,
    stats: StoreStats,
    /// Snapshots of Regions created by splits in this round, written before anything else.
    created: Vec<SnapshotTaken>,
    /// Regions whose range or epoch changed (or that were created) since the last call.
    changed_regions: Vec<Region>,
    /// Uninitialized peers a split replaced during this `on_persisted`: their pending
    /// `Ready` belongs to the group that is gone.
    replaced: BTreeSet<RegionId>,
    /// Destroyed Regions: no snapshot at or below this conf version initializes them again.
    tombstones: BTreeMap<RegionId, u64>,
    /// Tombstones made since the driver last took them.
    destroyed: Vec<Tombstone>,
    /// Regions another core of this node hosts (handed off): a split replayed from a
    /// parent's log, or a message, never creates them here.
    elsewhere: BTreeSet<RegionId>,
    /// The other cores' Regions as they last told them (see `handoff.rs`); only those in
    /// `elsewhere` count.
    other_cores: BTreeMap<RegionId, Region>,
}

impl Store {
    pub fn new(config: StoreConfig) -> Store {
        Store {
            raft: MultiRaft::new(config.node),
            config,
            peers: BTreeMap::new(),
            next_read_id: 1,
            pending_requests: 0,
            replies: Vec::new(),
            stats: StoreStats::default(),
            created: Vec::new(),
            changed_regions: Vec::new(),
            replaced: BTreeSet::new(),
            tombstones: BTreeMap::new(),
            destroyed: Vec::new(),
            elsewhere: BTreeSet::new(),
            other_cores: BTreeMap::new(),
        }
    }

    /// True if another core of this node hosts `region` (see `set_elsewhere`).
    pub fn is_elsewhere(&self, region: RegionId) -> bool {
        self.elsewhere.contains(&region)
    }

    /// Regions whose range or epoch changed, or that splits created, since the last call.
    pub fn take_changed_regions(&mut self) -> Vec<Region> {
        std::mem::take(&mut self.changed_regions)
    }

    pub fn node(&self) -> NodeId {
        self.config.node
    }

    pub fn stats(&self) -> StoreStats {
        self.stats
    }

    /// Adds a Region replica: `storage` holds its durable Raft state (a bootstrap snapshot
    /// for a new Region, or what recovery read back) and `kv` the state as of its snapshot.
    ///
    /// # Errors
    /// When the Region is already here or its Raft state cannot be loaded.
    pub fn add_region(
        &mut self,
        region: Region,
        storage: MemStorage,
        kv: KvState,
    ) -> Result<(), RaftError> {
        self.insert_peer(region, storage, kv, true)
    }

    fn insert_peer(
        &mut self,
        region: Region,
        storage: MemStorage,
        kv: KvState,
        initialized: bool,
    ) -> Result<(), RaftError> {
        let mut config = self.config.raft.clone();
        config.id = self.config.node;
        let (_, conf) = storage.initial_state()?;
        self.raft.create_group(region.id, config, storage)?;
        self.peers.insert(
            region.id,
            Peer {
                initialized,
                region,
                conf,
                kv,
                proposals: VecDeque::new(),
                reads_waiting_index: BTreeMap::new(),
                reads_waiting_apply: VecDeque::new(),
            },
        );
        Ok(())
    }

    /// A bootstrap storage for a new Region whose founding voters are its peers.
    pub fn bootstrap_storage(region: &Region) -> MemStorage {
        MemStorage::new_with_conf(ConfState::with_voters(region.peers.iter().copied()))
    }

    /// The Regions on this core (uninitialized peers have no range yet and are left out).
    pub fn regions(&self) -> impl Iterator<Item = &Region> {
        self.peers
            .values()
            .filter(|p| p.initialized)
            .map(|p| &p.region)
    }

    /// True if this core has a peer of `region` that a message created and no snapshot has
    /// initialized yet.
    pub fn is_uninitialized(&self, region: RegionId) -> bool {
        self.peers.get(&region).is_some_and(|p| !p.initialized)
    }

    /// Starts an election, at startup, in every Region whose first peer is this node, so a
    /// new cluster serves without waiting for an election timeout (on a restart into a live
    /// cluster the pre-vote fails harmlessly).
    pub fn campaign_all(&mut self) {
        let node = self.config.node;
        let regions: Vec<RegionId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.region.peers.first() == Some(&node))
            .map(|(id, _)| *id)
            .collect();
        for region in regions {
            if let Some(core) = self.raft.group_mut(region) {
                core.campaign();
            }
        }
    }

    /// One logical tick for every Region.
    pub fn on_tick(&mut self) {
        self.raft.tick();
    }

    /// Steps a batch of Raft messages from a peer node.
    ///
    /// A message from a Region's leader (append, heartbeat, snapshot) for a Region this core
    /// owns but does not have creates an *uninitialized* peer for it: this replica missed
    /// the split that made the Region (its log was compacted past it and it caught up by the
    /// parent's snapshot). The peer has no range, an empty log and no membership, so it never
    /// campaigns; it refuses votes and serves nothing until the leader's snapshot, which
    /// carries the range and epoch, initializes it. Other messages for unknown Regions are
    /// dropped and counted. The transport accepts batches from the cluster's members only.
    pub fn on_raft_messages(&mut self, batch: Vec<(RegionId, Message)>) {
        for (region, message) in batch {
            if !self.peers.contains_key(&region) && !self.maybe_create_peer(region, &message) {
                self.stats.unknown_region_messages += 1;
                tracing::debug!(?region, "dropping a message for a region not on this core");
                continue;
            }
            if self.is_uninitialized(region) && !self.uninitialized_accepts(region, &message) {
                self.stats.uninitialized_refused += 1;
                self.stats.tombstone_refused += u64::from(self.tombstones.contains_key(&region));
                continue;
            }
            self.raft.step(region, message).expect("the peer exists");
        }
    }

    /// Creates an uninitialized peer of `region` if `message` comes from its leader and the
    /// Region belongs on this core. Returns true if the peer exists now.
    fn maybe_create_peer(&mut self, region: RegionId, message: &Message) -> bool {
        let from_leader = matches!(
            message.body,
            MessageBody::AppendEntries { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. }
        );
        let ours = owning_core(region, self.config.cores) == self.config.core
            && !self.elsewhere.contains(&region);
        if !from_leader || !ours || message.from == self.config.node || region.0 == 0 {
            return false;
        }
        let placeholder = Region {
            id: region,
            start_key: Vec::new(),
            end_key: Vec::new(),
            epoch: RegionEpoch::default(),
            peers: Vec::new(),
        };
        // Index 0, no membership: the leader finds the log empty and sends its snapshot.
        if let Err(error) = self.insert_peer(
            placeholder,
            MemStorage::default(),
            KvState::default(),
            false,
        ) {
            tracing::warn!(?region, %error, "cannot create a peer for a message");
            return false;
        }
        self.stats.peers_created_by_message += 1;
        tracing::info!(
            region = region.0,
            leader = message.from.0,
            "peer created by a message from the region's leader"
        );
        true
    }

    /// What an uninitialized peer steps: no votes (it must not help elect anyone before it
    /// knows the Region), and no snapshot whose range overlaps a Region this core still holds
    /// (the split that shrinks it has not applied here yet; the leader resends later).
    fn uninitialized_accepts(&self, region: RegionId, message: &Message) -> bool {
        match &message.body {
            MessageBody::RequestVote { .. } => false,
            MessageBody::InstallSnapshot { snapshot } => {
                match split::decode_envelope_region(&snapshot.data) {
                    // A Region here whose range overlaps with a version not above the
                    // snapshot's is older: the split that shrinks it has not applied here
                    // yet. One with a higher version came from a later split of this Region
                    // (the leader's stored snapshot predates it); replaying the log after
                    // the snapshot applies that split again, which then creates nothing.
                    Ok(Some(described))
                        if described.id == region
                            && self.tombstoned(region, described.epoch.conf_version) =>
                    {
                        false
                    }
                    Ok(Some(described)) if described.id == region => {
                        let older = |r: &Region| {
                            r.overlaps(&described) && r.epoch.version <= described.epoch.version
                        };
                        !self
                            .peers
                            .values()
                            .any(|p| p.initialized && older(&p.region))
                            && !self.overlaps_other_core(region, older)
                    }
                    _ => false,
                }
            }
            _ => true,
        }
    }

    /// Handles a client request: answers at once when it can (errors, raw reads), otherwise
    /// starts a proposal or a ReadIndex round and answers when it completes.
    pub fn on_request(&mut self, token: Token, request: KvRequest) {
        if let Err(error) = self.start_request(token, request) {
            self.replies.push((token, Err(error)));
        }
    }

    fn start_request(&mut self, token: Token, request: KvRequest) -> Result<(), KvError> {
        let peer = self
            .peers
            .get(&request.region)
            .filter(|p| p.initialized)
            .ok_or(KvError::RegionNotFound(request.region))?;
        if peer.region.epoch.is_stale(request.epoch) {
            return Err(KvError::StaleEpoch {
                current: peer.region.clone(),
            });
        }
        if request
            .op
            .key()
            .is_some_and(|key| !peer.region.contains(key))
        {
            return Err(KvError::KeyNotInRegion {
                region: peer.region.clone(),
            });
        }
        if request.op == KvOp::DestroyReplica {
            let reply = self.destroy_replica(request.region, request.epoch);
            self.replies.push((token, reply));
            return Ok(());
        }
        if self.pending_requests >= self.config.pending_requests_max {
            return Err(KvError::ServerBusy("too many requests in flight".into()));
        }
        if self.config.unsafe_local_strong_reads && request.op.is_read() {
            // The test-only broken mode: no leader check, no ReadIndex round.
            let peer = self.peers.get(&request.region).expect("checked");
            let read = PendingRead {
                token,
                namespace: request.namespace,
                epoch: request.epoch,
                op: request.op,
            };
            self.replies.push((token, serve_read(peer, &read)));
            return Ok(());
        }
        let core = self.raft.group(request.region).expect("peer has a group");
        if core.role() != Role::Leader {
            return Err(KvError::NotLeader {
                region: request.region,
                leader: core.leader(),
            });
        }
        if request.op.is_read() {
            return self.start_read(token, request);
        }
        self.start_write(token, request)
    }

    fn start_read(&mut self, token: Token, request: KvRequest) -> Result<(), KvError> {
        let read = PendingRead {
            token,
            namespace: request.namespace,
            epoch: request.epoch,
            op: request.op,
        };
        let peer = self.peers.get_mut(&request.region).expect("checked");
        if request.mode == Mode::Raw {
            let reply = serve_read(peer, &read);
            self.replies.push((token, reply));
            return Ok(());
        }
        let read_id = self.next_read_id;
        self.next_read_id += 1;
        self.raft
            .read_index(request.region, read_id)
            .map_err(|e| raft_error(request.region, e))?;
        peer.reads_waiting_index.insert(read_id, read);
        self.pending_requests += 1;
        Ok(())
    }

    fn start_write(&mut self, token: Token, request: KvRequest) -> Result<(), KvError> {
        if let KvOp::MoveStep { from, to } = request.op {
            let reply = self.move_step(request.region, from, to);
            self.replies.push((token, reply));
            return Ok(());
        }
        if let KvOp::Split { key, new_region } = &request.op {
            if let Some(done) = self.split_done(request.region, key, *new_region) {
                // A retry of a split that applied already (its answer was lost, e.g. to a
                // leader change): the same answer again.
                self.replies.push((token, Ok(done)));
                return Ok(());
            }
            let command = self.split_command(request.region, key, *new_region)?;
            return self.propose(token, request.region, command.encode());
        }
        let namespace = request.namespace;
        let command = match request.op {
            KvOp::Put { key, value } => KvCommand::Put {
                namespace,
                key,
                value,
            },
            KvOp::Delete { key } => KvCommand::Delete { namespace, key },
            KvOp::Cas {
                key,
                expected_version,
                value,
            } => KvCommand::Cas {
                namespace,
                key,
                expected_version,
                value,
            },
            KvOp::CasDelete {
                key,
                expected_version,
            } => KvCommand::CasDelete {
                namespace,
                key,
                expected_version,
            },
            KvOp::Get { .. }
            | KvOp::Scan { .. }
            | KvOp::ScanPrefix { .. }
            | KvOp::Split { .. }
            | KvOp::MoveStep { .. }
            | KvOp::DestroyReplica => {
                unreachable!("reads are routed to start_read, the others handled above")
            }
        };
        command
            .validate()
            .map_err(|e| KvError::InvalidRequest(e.to_string()))?;
        self.propose(token, request.region, command.encode())
    }

    /// The answer to a split of `region` into `new_region` (at `key`, if not empty) that
    /// this store has applied already.
    fn split_done(&self, region: RegionId, key: &[u8], new_region: RegionId) -> Option<KvReply> {
        // After the split the client may route the retry to either half.
        let right = &self
            .peers
            .get(&new_region)
            .filter(|p| p.initialized)?
            .region;
        if !key.is_empty() && key != right.start_key {
            return None;
        }
        let left = self
            .peers
            .values()
            .filter(|p| p.initialized)
            .map(|p| &p.region)
            .find(|r| r.id != new_region && r.end_key == right.start_key)?;
        (region == left.id || region == new_region).then(|| KvReply::Split {
            left: left.clone(),
            right: right.clone(),
        })
    }

    /// The split command for `region` at `key` (empty: the middle of its data), checked
    /// against the Region as it is now.
    fn split_command(
        &self,
        region: RegionId,
        key: &[u8],
        new_region: RegionId,
    ) -> Result<SplitCommand, KvError> {
        let peer = self
            .peers
            .get(&region)
            .ok_or(KvError::RegionNotFound(region))?;
        let key = if key.is_empty() {
            peer.kv.middle_key(&peer.region.start_key).ok_or_else(|| {
                KvError::InvalidRequest(format!("{} has too few keys to split", peer.region))
            })?
        } else {
            key.to_vec()
        };
        if self.peers.contains_key(&new_region) {
            return Err(KvError::InvalidRequest(format!(
                "region {} exists already",
                new_region.0
            )));
        }
        let command = SplitCommand {
            region,
            epoch: peer.region.epoch,
            new_region,
            key,
        };
        split::check_split(&peer.region, &command).map_err(KvError::InvalidRequest)?;
        Ok(command)
    }

    fn propose(&mut self, token: Token, region: RegionId, data: Vec<u8>) -> Result<(), KvError> {
        let index = self
            .raft
            .propose(region, data.into())
            .map_err(|e| raft_error(region, e))?;
        let term = self.raft.group(region).expect("exists").term();
        tracing::debug!(target: crate::latency::TARGET, region = region.0, index = index.0, token, "proposed");
        let peer = self.peers.get_mut(&region).expect("checked");
        // The new entry went right after this leader's last entry. A proposal still waiting at
        // or above its index is from an earlier term of this replica, and its entry was replaced
        // (the log now ends below it); it can never commit, since a leader's log holds every
        // committed entry. Answer it now: left in place it would sit ahead of this proposal in
        // `proposals`, whose index order the apply loop relies on, and this write, once
        // applied, would be answered "dropped" and sent again by the client (a duplicate).
        while let Some(stale) = peer.proposals.back().copied() {
            if stale.index < index {
                break;
            }
            debug_assert!(stale.term < term, "two proposals at one index in one term");
            peer.proposals.pop_back();
            self.pending_requests -= 1;
            self.stats.proposals_replaced_on_propose += 1;
            self.replies.push((stale.token, Err(replaced_write())));
        }
        peer.proposals.push_back(Proposal { index, term, token });
        self.pending_requests += 1;
        Ok(())
    }

    /// Answers produced since the last call.
    pub fn take_replies(&mut self) -> Vec<(Token, KvResult)> {
        std::mem::take(&mut self.replies)
    }

    /// The work of this round, or `None` when there is none.
    pub fn ready(&mut self) -> Option<StoreReady> {
        let multi = self.raft.ready();
        if multi.is_empty() {
            return None;
        }
        let needs_sync = multi
            .groups
            .iter()
            .map(|(region, ready)| self.needs_sync(*region, ready))
            .collect();
        let barrier = multi.groups.iter().any(|(_, ready)| is_barrier(ready));
        Some(StoreReady {
            multi,
            needs_sync,
            barrier,
        })
    }

    /// See `StoreReady::needs_sync`. The storage holds the hard state last handed to the
    /// WAL; its term and vote are always durable, since a change of either needs a sync.
    fn needs_sync(&self, region: RegionId, ready: &Ready) -> bool {
        if ready.snapshot.is_some() || !ready.entries.is_empty() {
            return true;
        }
        let Some(hard_state) = ready.hard_state else {
            return false;
        };
        let stored = self
            .raft
            .group(region)
            .map(|core| core.storage().hard_state());
        stored.is_none_or(|stored| stored.term != hard_state.term || stored.vote != hard_state.vote)
    }

    /// The round's WAL write is durable: mirror it into the Raft storages, apply, answer,
    /// advance. See the module docs.
    pub fn on_persisted(&mut self, ready: StoreReady) -> Persisted {
        let MultiReady {
            groups,
            persisted_messages,
            ..
        } = ready.multi;
        let mut persisted = Persisted {
            messages: persisted_messages,
            snapshots: Vec::new(),
            periodic_snapshots: Vec::new(),
        };
        for (region, ready) in groups {
            if self.replaced.contains(&region) || !self.peers.contains_key(&region) {
                // The group this Ready came from was replaced by a split in this round, or
                // destroyed.
                continue;
            }
            self.persist_group(region, &ready);
            let removed_here = self.apply_group(region, &ready);
            self.raft
                .advance(region, ready.advance())
                .expect("group exists");
            if removed_here {
                self.destroy(region, 0);
                continue;
            }
            self.serve_applied_reads(region);
            // A Region a split created is durable (its file) before its parent's newer
            // snapshot could make the split's log entry go away.
            persisted.snapshots.append(&mut self.created);
            if let Some(taken) = self.maybe_snapshot(region, false) {
                persisted.periodic_snapshots.push(taken);
            }
        }
        self.replaced.clear();
        persisted
    }

    fn persist_group(&mut self, region: RegionId, ready: &Ready) {
        let core = self.raft.group_mut(region).expect("group exists");
        core.storage_mut().persist_ready(ready);
    }

    /// Applies a round's committed entries; true if they removed this replica (and no
    /// later one in the round added it back).
    fn apply_group(&mut self, region: RegionId, ready: &Ready) -> bool {
        let node = self.config.node;
        let mut removed_here = false;
        let leader_here = self
            .raft
            .group(region)
            .is_some_and(|c| c.role() == Role::Leader);
        let peer = self.peers.get_mut(&region).expect("peer exists");
        let mut splits = Vec::new();
        if let Some(snapshot) = &ready.snapshot {
            let was_initialized = peer.initialized;
            install_snapshot(peer, snapshot);
            peer.conf = snapshot.metadata.conf_state.clone();
            if !was_initialized {
                tracing::info!(region = %peer.region, "peer created by a message initialized by a snapshot");
            }
            self.changed_regions.push(peer.region.clone());
            self.stats.snapshots_installed += 1;
            // Proposals the snapshot covers will never be seen committed here: their entries
            // may be in it (proposed while leader, committed by the next one) or may have
            // been replaced. Neither "dropped" nor "done" is known, so say exactly that.
            while let Some(proposal) = peer.proposals.front().copied() {
                if proposal.index > snapshot.metadata.index {
                    break;
                }
                peer.proposals.pop_front();
                self.pending_requests -= 1;
                let error = KvError::OutcomeUnknown(format!(
                    "the entry at {:?} was compacted into a snapshot installed before it was \
                     seen committed",
                    proposal.index
                ));
                self.replies.push((proposal.token, Err(error)));
            }
        }
        for entry in &ready.committed_entries {
            let outcome = match entry.kind {
                EntryKind::Normal if !entry.data.is_empty() => {
                    apply_entry(peer, &entry.data, &mut splits)
                }
                EntryKind::ConfChange => {
                    if let Some(change) = ConfChange::decode(&entry.data) {
                        membership::apply_conf_change(&mut peer.region, &mut peer.conf, change);
                        self.stats.conf_changes_applied += 1;
                        self.changed_regions.push(peer.region.clone());
                        removed_here |= change == ConfChange::Remove(node);
                    }
                    None
                }
                _ => None,
            };
            self.stats.applied_commands += u64::from(outcome.is_some());
            while let Some(proposal) = peer.proposals.front().copied() {
                if proposal.index > entry.index {
                    break;
                }
                peer.proposals.pop_front();
                self.pending_requests -= 1;
                tracing::debug!(target: crate::latency::TARGET, region = region.0, index = proposal.index.0, token = proposal.token, "applied");
                let result = match &outcome {
                    Some(outcome)
                        if proposal.index == entry.index && proposal.term == entry.term =>
                    {
                        applied_reply(outcome, &peer.region)
                    }
                    _ => Err(replaced_write()),
                };
                self.replies.push((proposal.token, result));
            }
        }
        for read in &ready.read_states {
            if let Some(pending) = peer.reads_waiting_index.remove(&read.request_id) {
                peer.reads_waiting_apply.push_back((read.index, pending));
            }
        }
        if !splits.is_empty() {
            self.changed_regions.push(peer.region.clone());
            if leader_here {
                // Followers split when they learn the commit; without `broadcast_commit` that
                // would wait for the next append or heartbeat, and the new Region's first
                // election for replicas that do not exist yet.
                if let Some(core) = self.raft.group_mut(region) {
                    core.broadcast_commit();
                }
            }
        }
        let conf = peer.conf.clone();
        for (upper, kv) in splits {
            self.create_split_region(upper, kv, &conf, leader_here);
        }
        let peer = self.peers.get_mut(&region).expect("peer exists");
        let lost_leadership = ready.soft_state.is_some_and(|s| s.role != Role::Leader);
        if lost_leadership {
            // The core drops its ReadIndex rounds when it steps down: fail them now.
            let leader = ready.soft_state.and_then(|s| s.leader);
            for (_, read) in std::mem::take(&mut peer.reads_waiting_index) {
                self.pending_requests -= 1;
                let error = KvError::NotLeader { region, leader };
                self.replies.push((read.token, Err(error)));
            }
        }
        // A removal followed in the same round by a re-add (a lagging replica applying both)
        // leaves this replica a member: only the membership at the end counts.
        removed_here && !peer.conf.contains(node)
    }

    /// Creates the Region a split made (rule 3 of `split.rs`) from an initial snapshot of its
    /// data, unless an initialized peer of it exists already (recovery replaying a split
    /// whose new Region was recovered from its own files, or a peer a message created that
    /// the leader's newer snapshot initialized first: the newer one wins). An uninitialized
    /// peer a message created is replaced, keeping its term. The parent's leader campaigns
    /// for it at once.
    fn create_split_region(
        &mut self,
        region: Region,
        kv: KvState,
        conf_state: &ConfState,
        campaign: bool,
    ) {
        self.stats.splits_applied += 1;
        if self.elsewhere.contains(&region.id) {
            tracing::info!(%region, "split applied; the new region lives on another core");
            return;
        }
        let mut term = BOOTSTRAP_TERM;
        match self.peers.get(&region.id) {
            Some(peer) if peer.initialized => {
                tracing::info!(
                    region = region.id.0,
                    "split applied; the new region exists already"
                );
                return;
            }
            Some(_) => {
                let old = self
                    .raft
                    .remove_group(region.id)
                    .expect("a peer has a group");
                self.peers.remove(&region.id);
                self.replaced.insert(region.id);
                // It never voted, but terms must not go back.
                term = term.max(old.term());
                tracing::info!(%region, "split replaces the uninitialized peer a message created");
            }
            None => {}
        }
        let data = Payload::from(split::encode_envelope(&region, &kv));
        let conf_state = conf_state.clone();
        let mut storage = MemStorage::new_with_conf(conf_state.clone());
        storage.apply_snapshot(Snapshot {
            metadata: SnapshotMetadata {
                index: BOOTSTRAP_INDEX,
                term: BOOTSTRAP_TERM,
                conf_state: conf_state.clone(),
            },
            data: data.clone(),
        });
        if term > BOOTSTRAP_TERM {
            let mut hard_state = storage.hard_state();
            hard_state.term = term;
            storage.set_hard_state(hard_state);
        }
        let id = region.id;
        self.changed_regions.push(region.clone());
        tracing::info!(%region, "created by a split");
        self.add_region(region, storage, kv)
            .expect("a new region's bootstrap state loads");
        self.created.push(SnapshotTaken {
            region: id,
            index: BOOTSTRAP_INDEX,
            term: BOOTSTRAP_TERM,
            conf_state,
            data,
        });
        if campaign {
            if let Some(core) = self.raft.group_mut(id) {
                core.campaign();
            }
        }
    }

    fn serve_applied_reads(&mut self, region: RegionId) {
        let applied = self.raft.group(region).expect("exists").applied();
        let peer = self.peers.get_mut(&region).expect("exists");
        while peer
            .reads_waiting_apply
            .front()
            .is_some_and(|(index, _)| *index <= applied)
        {
            let (_, read) = peer.reads_waiting_apply.pop_front().expect("checked");
            self.pending_requests -= 1;
            let reply = serve_read(peer, &read);
            self.replies.push((read.token, reply));
        }
    }

    /// Compacts the log into a snapshot once enough entries were applied since the last one
    /// (or, with `force`, if anything was applied since).
    fn maybe_snapshot(&mut self, region: RegionId, force: bool) -> Option<SnapshotTaken> {
        let core = self.raft.group_mut(region).expect("exists");
        let applied = core.applied();
        let first = core.storage().first_index();
        // `first` is one past the current snapshot: forced, one applied entry suffices.
        let last = first.0 - 1;
        let due = if force {
            applied.0 > last
        } else {
            snapshot_due(
                last,
                applied.0,
                self.config.snapshot_interval_entries,
                self.config.node,
            )
        };
        if !due {
            return None;
        }
        // Timed only for the trace point: the Store's behaviour never reads a clock.
        let started = crate::latency::enabled().then(std::time::Instant::now);
        let peer = self.peers.get(&region).expect("exists");
        let data = Payload::from(split::encode_envelope(&peer.region, &peer.kv));
        let conf_state = core.conf_state().clone();
        let term = core.log().term_or_zero(applied);
        core.storage_mut()
            .create_snapshot(applied, conf_state.clone(), data.clone());
        self.stats.snapshots_taken += 1;
        if let Some(started) = started {
            // On the core's thread: encoding the Region's data and compacting its log.
            tracing::debug!(
                target: crate::latency::TARGET,
                region = region.0,
                index = applied.0,
                bytes = data.len(),
                elapsed_us = started.elapsed().as_micros() as u64,
                "snapshot_taken"
            );
        }
        Some(SnapshotTaken {
            region,
            index: applied,
            term,
            conf_state,
            data,
        })
    }

    /// The state of every Region on this core.
    pub fn status(&self) -> Vec<RegionStatus> {
        self.peers
            .iter()
            .filter(|(_, peer)| peer.initialized)
            .map(|(id, peer)| {
                let core = self.raft.group(*id).expect("exists");
                RegionStatus {
                    region: peer.region.clone(),
                    role: core.role(),
                    leader: core.leader(),
                    term: core.term(),
                    committed: core.committed(),
                    applied: core.applied(),
                    keys: peer.kv.len(),
                    approximate_bytes: peer.kv.approximate_bytes(),
                    learners: core.conf_state().learners.clone(),
                }
            })
            .collect()
    }

    /// Read access to a Region's applied state (tests and status).
    pub fn kv(&self, region: RegionId) -> Option<&KvState> {
        self.peers.get(&region).map(|p| &p.kv)
    }

    /// The Raft member of a Region (tests and status).
    pub fn raft(&self, region: RegionId) -> Option<&tessera_core::RaftCore<MemStorage>> {
        self.raft.group(region)
    }
}

fn install_snapshot(peer: &mut Peer, snapshot: &Snapshot) {
    match split::decode_envelope(&snapshot.data) {
        Ok((region, kv)) => {
            peer.kv = kv;
            if let Some(region) = region.filter(|r| r.id == peer.region.id) {
                if peer.initialized && region.end_key != peer.region.end_key {
                    // A split this replica never applied: the new Region's leader creates
                    // its peer here by a message (see `on_raft_messages`).
                    tracing::info!(from = %peer.region, to = %region, "snapshot changes the region's range");
                }
                peer.region = region;
                peer.initialized = true;
            }
        }
        // The leader's snapshot passed the transport's checks yet does not decode: the
        // replicated state is corrupt, and applying anything further would diverge.
        Err(error) => panic!(
            "region {:?}: snapshot at {:?} does not decode: {error}",
            peer.region.id, snapshot.metadata.index
        ),
    }
}

/// See `StoreReady::is_barrier`.
fn is_barrier(ready: &Ready) -> bool {
    ready.snapshot.is_some()
        || ready.soft_state.is_some()
        || ready.committed_entries.iter().any(|entry| {
            entry.kind == EntryKind::ConfChange || entry.data.first() == Some(&SPLIT_FORMAT)
        })
}

/// Applies one committed entry's payload; a split's new Region goes to `splits`.
fn apply_entry(
    peer: &mut Peer,
    data: &[u8],
    splits: &mut Vec<(Region, KvState)>,
) -> Option<Applied> {
    if data.first() == Some(&SPLIT_FORMAT) {
        return match SplitCommand::decode(data) {
            Ok(command) => {
                let result = split::apply_split(&mut peer.region, &mut peer.kv, &command);
                Some(Applied::Split(result.map(|(upper, kv)| {
                    splits.push((upper.clone(), kv));
                    (peer.region.clone(), upper)
                })))
            }
            Err(error) => {
                tracing::error!(region = ?peer.region.id, %error, "skipping a split entry that does not decode");
                None
            }
        };
    }
    match KvCommand::decode(data) {
        Ok(command) if !peer.region.contains(command.target().1) => Some(Applied::NotInRegion),
        Ok(command) => Some(Applied::Kv(peer.kv.apply(&command))),
        Err(error) => {
            // Every replica skips the same entry, so they stay identical.
            tracing::error!(region = ?peer.region.id, %error, "skipping a committed entry that does not decode");
            None
        }
    }
}

fn applied_reply(applied: &Applied, region: &Region) -> KvResult {
    match applied {
        Applied::Kv(outcome) => outcome_reply(*outcome),
        Applied::NotInRegion => Err(KvError::KeyNotInRegion {
            region: region.clone(),
        }),
        Applied::Split(Ok((left, right))) => Ok(KvReply::Split {
            left: left.clone(),
            right: right.clone(),
        }),
        Applied::Split(Err(_)) => Err(KvError::StaleEpoch {
            current: region.clone(),
        }),
    }
}

fn outcome_reply(outcome: KvOutcome) -> KvResult {
    match outcome {
        KvOutcome::Written { version } => Ok(KvReply::Written { version }),
        KvOutcome::VersionMismatch { current_version } => {
            Err(KvError::VersionMismatch { current_version })
        }
    }
}

fn serve_read(peer: &Peer, read: &PendingRead) -> KvResult {
    let region = &peer.region;
    if region.epoch.is_stale(read.epoch) {
        return Err(KvError::StaleEpoch {
            current: region.clone(),
        });
    }
    match &read.op {
        KvOp::Get { key } => Ok(KvReply::Value {
            found: peer
                .kv
                .get(&read.namespace, key)
                .map(|v| (v.value.clone(), v.version)),
        }),
        KvOp::Scan { start, end, limit } => {
            let (start, end) = region.clamp(start, end);
            Ok(scan(peer, &read.namespace, start, end, *limit))
        }
        KvOp::ScanPrefix { prefix, limit } => {
            let successor = prefix_successor(prefix).unwrap_or_default();
            let (start, end) = region.clamp(prefix, &successor);
            Ok(scan(peer, &read.namespace, start, end, *limit))
        }
        _ => Err(KvError::InvalidRequest("not a read".into())),
    }
}

fn scan(peer: &Peer, namespace: &str, start: &[u8], end: &[u8], limit: u32) -> KvReply {
    if !end.is_empty() && start >= end {
        return KvReply::Scan {
            items: Vec::new(),
            more: false,
        };
    }
    let (items, more) = peer.kv.scan(namespace, start, end, limit as usize);
    KvReply::Scan { items, more }
}

/// The answer to a write whose log entry another leader replaced: it never takes effect.
fn replaced_write() -> KvError {
    KvError::Dropped("leadership changed before the write committed".into())
}

fn raft_error(region: RegionId, error: RaftError) -> KvError {
    match error {
        RaftError::NotLeader { leader } => KvError::NotLeader { region, leader },
        RaftError::ProposalDropped { reason } => KvError::ServerBusy(reason.into()),
        RaftError::UnknownGroup(region) => KvError::RegionNotFound(region),
        other => KvError::InvalidRequest(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The indexes at which `node` takes its periodic snapshots while entries are applied
    /// one at a time from `start` (its last snapshot) to `end`.
    fn snapshot_indexes(node: u64, interval: u64, start: u64, end: u64) -> Vec<u64> {
        let mut last = start;
        let mut taken = Vec::new();
        for applied in start + 1..=end {
            if snapshot_due(last, applied, interval, NodeId(node)) {
                taken.push(applied);
                last = applied;
            }
        }
        taken
    }

    #[test]
    fn consecutive_snapshots_are_one_interval_apart_and_the_first_within_one() {
        for node in 1..=7 {
            for start in [0, 1, 9_999, 123_457] {
                let taken = snapshot_indexes(node, 10_000, start, start + 100_000);
                assert!(
                    taken[0] - start <= 10_000,
                    "node {node}: first at {}",
                    taken[0]
                );
                assert_eq!(taken.len(), 10, "node {node}, start {start}: {taken:?}");
                for pair in taken.windows(2) {
                    assert_eq!(pair[1] - pair[0], 10_000, "node {node}: {taken:?}");
                }
            }
        }
    }

    #[test]
    fn the_replicas_of_a_region_snapshot_far_apart() {
        let interval = 10_000;
        let phases: Vec<u64> = (1..=3)
            .map(|node| snapshot_indexes(node, interval, 0, 3 * interval)[1] % interval)
            .collect();
        for (i, a) in phases.iter().enumerate() {
            for b in &phases[i + 1..] {
                let gap = a.abs_diff(*b).min(interval - a.abs_diff(*b));
                assert!(gap >= interval / 5, "phases {phases:?}");
            }
        }
    }

    #[test]
    fn an_interval_of_zero_or_one_snapshots_after_every_entry() {
        for interval in [0, 1] {
            assert_eq!(snapshot_indexes(2, interval, 5, 9), vec![6, 7, 8, 9]);
        }
        assert!(!snapshot_due(9, 9, 1, NodeId(2)));
    }
}
