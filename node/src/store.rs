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
//!    durability plus the snapshots it took (write them to files, then compact the WAL);
//! 4. answer `store.take_replies()`.
//!
//! Each Region's Raft log is kept in memory (`MemStorage`) between snapshots, mirroring the
//! WAL; the WAL is read only at recovery. The log is compacted into a snapshot every
//! `snapshot_interval_entries` applied entries, which bounds that memory.

use std::collections::{BTreeMap, HashMap, VecDeque};

use tessera_core::multi::Batches;
use tessera_core::{
    ConfState, Config, EntryKind, LogIndex, MemStorage, Message, MultiRaft, MultiReady, NodeId,
    RaftError, Ready, RegionId, Role, Snapshot, Storage, Term,
};

use crate::kv::state::prefix_successor;
use crate::kv::{KvCommand, KvOutcome, KvState};
use crate::region::Region;
use crate::request::{KvError, KvOp, KvReply, KvRequest, KvResult, Mode};

/// Identifies a client request to the driver (connection and request id).
pub type Token = u64;

/// Tuning of one core's Store. Every bound is named.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub node: NodeId,
    /// Raft timing and pipelining, shared by all Regions (`id` and `seed` are set per node).
    pub raft: Config,
    /// Take a snapshot and compact the log after this many applied entries.
    pub snapshot_interval_entries: u64,
    /// At most this many client requests wait for Raft at once; more get `ServerBusy`.
    pub pending_requests_max: usize,
}

impl StoreConfig {
    /// Defaults for `node`: 100 ms ticks assumed, snapshots every 10,000 entries.
    pub fn new(node: NodeId) -> StoreConfig {
        StoreConfig {
            node,
            raft: Config::new(node),
            snapshot_interval_entries: 10_000,
            pending_requests_max: 100_000,
        }
    }
}

/// A snapshot the Store took; the driver writes it to a file, then compacts the WAL.
#[derive(Clone, Debug)]
pub struct SnapshotTaken {
    pub region: RegionId,
    pub index: LogIndex,
    pub term: Term,
    pub conf_state: ConfState,
    pub data: Vec<u8>,
}

/// What `on_persisted` hands back.
#[derive(Debug, Default)]
pub struct Persisted {
    /// Messages that waited for durability, per destination node.
    pub messages: Batches,
    pub snapshots: Vec<SnapshotTaken>,
}

/// The work of one round; see the module docs.
#[derive(Debug)]
pub struct StoreReady {
    multi: MultiReady,
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
    op: KvOp,
}

/// One Region's replica on this core.
struct Peer {
    region: Region,
    kv: KvState,
    proposals: VecDeque<Proposal>,
    reads_waiting_index: HashMap<u64, PendingRead>,
    reads_waiting_apply: VecDeque<(LogIndex, PendingRead)>,
}

/// Counters for status and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub unknown_region_messages: u64,
    pub applied_commands: u64,
    pub snapshots_taken: u64,
    pub snapshots_installed: u64,
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
        }
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
        let mut config = self.config.raft.clone();
        config.id = self.config.node;
        self.raft.create_group(region.id, config, storage)?;
        self.peers.insert(
            region.id,
            Peer {
                region,
                kv,
                proposals: VecDeque::new(),
                reads_waiting_index: HashMap::new(),
                reads_waiting_apply: VecDeque::new(),
            },
        );
        Ok(())
    }

    /// A bootstrap storage for a new Region whose founding voters are its peers.
    pub fn bootstrap_storage(region: &Region) -> MemStorage {
        MemStorage::new_with_conf(ConfState::with_voters(region.peers.iter().copied()))
    }

    /// The Regions on this core.
    pub fn regions(&self) -> impl Iterator<Item = &Region> {
        self.peers.values().map(|p| &p.region)
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

    /// Steps a batch of Raft messages from a peer node. Messages for Regions not on this core
    /// are dropped and counted.
    pub fn on_raft_messages(&mut self, batch: Vec<(RegionId, Message)>) {
        for (region, message) in batch {
            if self.raft.step(region, message).is_err() {
                self.stats.unknown_region_messages += 1;
                tracing::debug!(?region, "dropping a message for a region not on this core");
            }
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
        if self.pending_requests >= self.config.pending_requests_max {
            return Err(KvError::ServerBusy("too many requests in flight".into()));
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
            KvOp::Get { .. } | KvOp::Scan { .. } | KvOp::ScanPrefix { .. } => {
                unreachable!("reads are routed to start_read")
            }
        };
        command
            .validate()
            .map_err(|e| KvError::InvalidRequest(e.to_string()))?;
        let region = request.region;
        let index = self
            .raft
            .propose(region, command.encode().into())
            .map_err(|e| raft_error(region, e))?;
        let term = self.raft.group(region).expect("exists").term();
        let peer = self.peers.get_mut(&region).expect("checked");
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
        Some(StoreReady { multi })
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
        };
        for (region, ready) in groups {
            self.persist_group(region, &ready);
            self.apply_group(region, &ready);
            self.raft
                .advance(region, ready.advance())
                .expect("group exists");
            self.serve_applied_reads(region);
            if let Some(taken) = self.maybe_snapshot(region) {
                persisted.snapshots.push(taken);
            }
        }
        persisted
    }

    fn persist_group(&mut self, region: RegionId, ready: &Ready) {
        let core = self.raft.group_mut(region).expect("group exists");
        core.storage_mut().persist_ready(ready);
    }

    fn apply_group(&mut self, region: RegionId, ready: &Ready) {
        let peer = self.peers.get_mut(&region).expect("peer exists");
        if let Some(snapshot) = &ready.snapshot {
            install_snapshot(peer, snapshot);
            self.stats.snapshots_installed += 1;
        }
        for entry in &ready.committed_entries {
            let outcome = match entry.kind {
                EntryKind::Normal if !entry.data.is_empty() => apply_command(peer, &entry.data),
                _ => None,
            };
            self.stats.applied_commands += u64::from(outcome.is_some());
            while let Some(proposal) = peer.proposals.front().copied() {
                if proposal.index > entry.index {
                    break;
                }
                peer.proposals.pop_front();
                self.pending_requests -= 1;
                let result = match outcome {
                    Some(outcome)
                        if proposal.index == entry.index && proposal.term == entry.term =>
                    {
                        outcome_reply(outcome)
                    }
                    _ => Err(KvError::Dropped(
                        "leadership changed before the write committed".into(),
                    )),
                };
                self.replies.push((proposal.token, result));
            }
        }
        for read in &ready.read_states {
            if let Some(pending) = peer.reads_waiting_index.remove(&read.request_id) {
                peer.reads_waiting_apply.push_back((read.index, pending));
            }
        }
        let lost_leadership = ready.soft_state.is_some_and(|s| s.role != Role::Leader);
        if lost_leadership {
            // The core drops its ReadIndex rounds when it steps down: fail them now.
            let leader = ready.soft_state.and_then(|s| s.leader);
            for (_, read) in peer.reads_waiting_index.drain() {
                self.pending_requests -= 1;
                let error = KvError::NotLeader { region, leader };
                self.replies.push((read.token, Err(error)));
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

    /// Compacts the log into a snapshot once enough entries were applied since the last one.
    fn maybe_snapshot(&mut self, region: RegionId) -> Option<SnapshotTaken> {
        let core = self.raft.group_mut(region).expect("exists");
        let applied = core.applied();
        let first = core.storage().first_index();
        if applied.0 < first.0 + self.config.snapshot_interval_entries {
            return None;
        }
        let peer = self.peers.get(&region).expect("exists");
        let data = peer.kv.encode_snapshot();
        let conf_state = core.conf_state().clone();
        let term = core.log().term_or_zero(applied);
        core.storage_mut()
            .create_snapshot(applied, conf_state.clone(), data.clone());
        self.stats.snapshots_taken += 1;
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
    match KvState::decode_snapshot(&snapshot.data) {
        Ok(kv) => peer.kv = kv,
        // The leader's snapshot passed the transport's checks yet does not decode: the
        // replicated state is corrupt, and applying anything further would diverge.
        Err(error) => panic!(
            "region {:?}: snapshot at {:?} does not decode: {error}",
            peer.region.id, snapshot.metadata.index
        ),
    }
}

fn apply_command(peer: &mut Peer, data: &[u8]) -> Option<KvOutcome> {
    match KvCommand::decode(data) {
        Ok(command) => Some(peer.kv.apply(&command)),
        Err(error) => {
            // Every replica skips the same entry, so they stay identical.
            tracing::error!(region = ?peer.region.id, %error, "skipping a committed entry that does not decode");
            None
        }
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

fn raft_error(region: RegionId, error: RaftError) -> KvError {
    match error {
        RaftError::NotLeader { leader } => KvError::NotLeader { region, leader },
        RaftError::ProposalDropped { reason } => KvError::ServerBusy(reason.into()),
        RaftError::UnknownGroup(region) => KvError::RegionNotFound(region),
        other => KvError::InvalidRequest(other.to_string()),
    }
}
