//! Whole nodes in one thread: each node runs one `Store` per core over a simulated disk,
//! driven round by round in the order of the glommio driver (`node/src/server/core.rs`):
//!
//! 1. deliver what the network has due (one batch of Raft messages per core, then client
//!    requests) and tick on each node's own clock;
//! 2. while the Store has work: send `messages_now`, write received snapshots' files, write
//!    the round's batch (`round_batch`, shared with the driver) as ONE WAL record and sync
//!    it, `on_persisted`, send what waited for durability, write the files of the snapshots
//!    that must precede the next batch (a split's new Region, a learner's seed) and queue
//!    the periodic ones (`SnapshotQueue`, shared with the driver);
//! 3. answer clients.
//!
//! The periodic snapshot files are written "in the background" as in the driver: one at a
//! time per core, the write finishing in a later step (a coin toss per step) while rounds go
//! on; only then does the file reach the disk and its compaction mark the next batch. A
//! crash before that loses the file being written (the old one stays), a crash after it
//! the mark if no batch carried it yet. A destroyed Region waits for the write in progress.
//!
//! A crash (at any time, or during a WAL write) drops the Store and every request it held;
//! the disk keeps what `SimDisk::crash` says. A failed fsync stops the node at once: nothing
//! of that round or later is answered. A restart rebuilds each Store through the node's
//! recovery (`recover_store` over the recovered `MemLog` and the snapshot files).
//!
//! With membership changes on (`Cluster::new` with fewer replicas than nodes), `drive_moves`
//! plays the placement driver: it moves one Region at a time to a node outside its
//! membership (`MoveStep` at the Region's leader, one conf change per call) and tells a
//! replica that its Region left it (`DestroyReplica`, at the leader's newer epoch); a
//! destroyed replica's tombstone and snapshot removal go to the simulated disk and its WAL
//! removal in the next batch, as the driver does. Convergence and the final comparison are
//! over each Region's current members.

use std::collections::BTreeMap;

use tessera_core::rng::SplitMix64;
use tessera_core::{LogIndex, NodeId, RegionId, Role, Term};
use tessera_node::kv::KvState;
use tessera_node::region::{owning_core, Region, RegionEpoch};
use tessera_node::request::{KvOp, KvRequest, KvResult, Mode};
use tessera_node::server::bootstrap::{initial_layout, recover_store, recovery_batch};
use tessera_node::server::core::ROUNDS_IN_FLIGHT_MAX;
use tessera_node::server::round::{round_batch, Carried};
use tessera_node::server::snapshot_queue::SnapshotQueue;
use tessera_node::store::{SnapshotTaken, Store, StoreConfig, StoreReady, StoreStats, Token};
use tessera_wal::{MemLog, SegmentSeq};

use super::digest;
use super::disk::{SimDisk, TailFate, SEGMENT_BYTES};
use super::net::{Endpoint, Envelope, Network, Payload};

/// Steps between two ticks of a node (plus up to `TICK_JITTER_STEPS`): clocks drift.
pub const TICK_STEPS: u64 = 10;
const TICK_JITTER_STEPS: u64 = 3;
/// Rounds one core may need to go idle in one step before the simulation calls it a bug.
const ROUNDS_PER_STEP_MAX: usize = 1_000;

/// Disk fault rates, per WAL write, in permille.
#[derive(Clone, Copy, Debug, Default)]
pub struct DiskFaults {
    /// The node crashes while the write is in flight (before fdatasync returns).
    pub crash_in_write_permille: u64,
    /// fdatasync fails: the node must stop without acknowledging anything further.
    pub fsync_fail_permille: u64,
}

/// Counters over one run.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClusterStats {
    pub crashes: u64,
    pub crashes_in_write: u64,
    pub fsync_failures: u64,
    pub torn_tails: u64,
    pub tails_lost: u64,
    pub restarts: u64,
    pub wal_records: u64,
    /// Rounds taken while earlier rounds of their core were not synced yet.
    pub rounds_pipelined: u64,
    pub rotations: u64,
    pub snapshots_taken: u64,
    pub snapshots_installed: u64,
    /// Periodic snapshot files written in the background, and rounds taken while one was
    /// being written.
    pub snapshot_files_background: u64,
    pub rounds_during_snapshot_write: u64,
    pub replies_withheld: u64,
    /// Queued proposals a leader answered "dropped" because it proposed at or below their
    /// index, leading again with a shorter log (`StoreStats::proposals_replaced_on_propose`):
    /// how often the duplicate-write shape came up.
    pub proposals_replaced_on_propose: u64,
    pub moves_started: u64,
    pub moves_done: u64,
    pub replicas_destroyed: u64,
}

impl ClusterStats {
    /// Adds the counters of a Store that is going away (a crash, the end of the run).
    fn add_store(&mut self, store: &StoreStats) {
        self.snapshots_taken += store.snapshots_taken;
        self.snapshots_installed += store.snapshots_installed;
        self.proposals_replaced_on_propose += store.proposals_replaced_on_propose;
    }
}

struct SimCore {
    store: Option<Store>,
    disk: SimDisk,
    /// What a crash left on disk, until the restart recovers from it.
    crashed: Option<Vec<(SegmentSeq, Vec<u8>)>>,
    /// Compaction marks and commit-only hard states for the next batch (lost in a crash).
    carried: Carried,
    /// Periodic snapshots waiting for their files, and the one being written (lost in a
    /// crash: its file never reached the disk).
    snapshots: SnapshotQueue,
    snapshot_writing: Option<SnapshotTaken>,
    /// Rounds taken whose batches are written but not synced yet, oldest first: they stay
    /// in flight across steps (a slow disk), while events keep arriving (lost in a crash).
    in_flight: Vec<StoreReady>,
    /// Bytes written since the last sync.
    unsynced: bool,
    /// Requests waiting for the Store: token → (client, attempt).
    waiting: BTreeMap<Token, (usize, u64)>,
    next_token: Token,
}

struct SimNode {
    up: bool,
    incarnation: u64,
    next_tick: u64,
    cores: Vec<SimCore>,
}

/// A fault that stops a node in the middle of a round.
enum Stop {
    CrashInWrite,
    FsyncFailed,
}

pub struct Cluster {
    pub rng: SplitMix64,
    pub seed: u64,
    pub now: u64,
    pub net: Network,
    pub disk_faults: DiskFaults,
    pub regions: Vec<Region>,
    pub cores: usize,
    nodes: BTreeMap<NodeId, SimNode>,
    invariants: Invariants,
    pub stats: ClusterStats,
    /// Replies for clients, collected as nodes answer (client, attempt, result).
    pub client_inbox: Vec<(usize, u64, KvResult)>,
    /// The move in progress (Region, from, to), when membership changes are on.
    active_move: Option<(RegionId, NodeId, NodeId)>,
}

impl Cluster {
    pub fn new(seed: u64, node_count: u64, cores: usize, replicas: usize) -> Cluster {
        let ids: Vec<NodeId> = (1..=node_count).map(NodeId).collect();
        let split_keys = ["f", "n", "u"].map(String::from);
        let regions = initial_layout(&split_keys, &ids, replicas);
        let mut cluster = Cluster {
            rng: SplitMix64::new(seed),
            seed,
            now: 0,
            net: Network::new(),
            disk_faults: DiskFaults::default(),
            regions,
            cores,
            nodes: BTreeMap::new(),
            invariants: Invariants::default(),
            stats: ClusterStats::default(),
            client_inbox: Vec::new(),
            active_move: None,
        };
        for id in ids {
            let cores = (0..cores)
                .map(|_| SimCore {
                    store: None,
                    disk: SimDisk::new(),
                    crashed: None,
                    carried: Carried::default(),
                    snapshots: SnapshotQueue::default(),
                    snapshot_writing: None,
                    in_flight: Vec::new(),
                    unsynced: false,
                    waiting: BTreeMap::new(),
                    next_token: 1,
                })
                .collect();
            let next_tick = cluster.rng.range(1, TICK_STEPS + 1);
            let node = SimNode {
                up: false,
                incarnation: 0,
                next_tick,
                cores,
            };
            cluster.nodes.insert(id, node);
            cluster.start(id);
        }
        cluster
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    pub fn up_ids(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.up)
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn down_ids(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| !n.up)
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn pick(&mut self, ids: &[NodeId]) -> Option<NodeId> {
        (!ids.is_empty()).then(|| ids[self.rng.range(0, ids.len() as u64) as usize])
    }

    /// Starts (or restarts) a node: each core recovers from its disk, records in its WAL
    /// what recovery found (`recovery_batch`), and campaigns where it is the first peer, as `server::start_core` does.
    fn start(&mut self, id: NodeId) {
        let regions = self.regions.clone();
        let cores = self.cores;
        self.invariants
            .last_checked
            .retain(|(node, _), _| *node != id);
        let node = self.nodes.get_mut(&id).expect("known node");
        assert!(!node.up, "{id:?} is already up");
        node.incarnation += 1;
        for (index, core) in node.cores.iter_mut().enumerate() {
            if let Some(segments) = core.crashed.take() {
                let (log, torn) = MemLog::recover(SEGMENT_BYTES, segments).unwrap_or_else(|e| {
                    panic!("{id:?} core {index}: WAL recovery failed after a crash: {e}")
                });
                self.stats.torn_tails += u64::from(torn.is_some());
                core.disk.recovered(log);
            }
            let mut config = StoreConfig::new(id);
            config.snapshot_interval_entries = 16;
            config.raft.seed = digest((self.seed, id.0, node.incarnation));
            let mut store = Store::new(config);
            let disk = &core.disk;
            recover_store(&mut store, &regions, index, cores, &disk.log, disk)
                .unwrap_or_else(|e| panic!("{id:?} core {index}: recovery failed: {e}"));
            let batch = recovery_batch(&core.disk.log, &store);
            core.disk.write(&batch);
            core.disk.sync();
            store.campaign_all();
            core.store = Some(store);
        }
        node.up = true;
    }

    /// Crashes `id`: every core loses its Store and unanswered requests; each disk keeps
    /// what the crash leaves.
    pub fn crash(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        if !node.up {
            return;
        }
        node.up = false;
        self.stats.crashes += 1;
        for core in &mut node.cores {
            if let Some(store) = core.store.take() {
                self.stats.add_store(&store.stats());
            }
            core.waiting.clear();
            core.carried = Carried::default();
            core.snapshots = SnapshotQueue::default();
            core.snapshot_writing = None;
            core.in_flight.clear();
            core.unsynced = false;
            let (segments, fate) = core.disk.crash(&mut self.rng);
            match fate {
                TailFate::Lost => self.stats.tails_lost += 1,
                TailFate::Torn | TailFate::Kept => {}
            }
            core.crashed = Some(segments);
        }
    }

    pub fn restart(&mut self, id: NodeId) {
        if self.nodes[&id].up {
            return;
        }
        self.stats.restarts += 1;
        self.start(id);
    }

    /// The Region's leader among running nodes (the one of the highest term).
    pub fn leader(&self, region: RegionId) -> Option<NodeId> {
        let core = owning_core(region, self.cores);
        self.nodes
            .iter()
            .filter_map(|(id, n)| {
                let raft = n.cores[core].store.as_ref()?.raft(region)?;
                (raft.role() == Role::Leader).then_some((raft.term(), *id))
            })
            .max()
            .map(|(_, id)| id)
    }

    /// One step: deliver, tick, run every core's rounds, answer clients, check invariants.
    pub fn step(&mut self) {
        self.now += 1;
        for envelope in self.net.due(self.now) {
            self.deliver(envelope);
        }
        for id in self.ids() {
            let node = self.nodes.get_mut(&id).expect("known");
            if !node.up || self.now < node.next_tick {
                continue;
            }
            node.next_tick = self.now + TICK_STEPS + self.rng.range(0, TICK_JITTER_STEPS + 1);
            for core in &mut node.cores {
                core.store.as_mut().expect("up").on_tick();
            }
        }
        for id in self.ids() {
            for core in 0..self.cores {
                if !self.nodes[&id].up {
                    break;
                }
                match self.run_rounds(id, core) {
                    Ok(()) => self.answer_clients(id, core),
                    Err(stop) => self.stop(id, core, stop),
                }
            }
        }
        self.check_invariants();
    }

    fn deliver(&mut self, envelope: Envelope) {
        let Endpoint::Node(id) = envelope.to else {
            if let (Endpoint::Client(client), Payload::Reply { attempt, result }) =
                (envelope.to, envelope.payload)
            {
                self.client_inbox.push((client, attempt, result));
            }
            return;
        };
        let cores = self.cores;
        let node = self.nodes.get_mut(&id).expect("known node");
        if !node.up {
            return;
        }
        match envelope.payload {
            Payload::Raft(region, message) => {
                let core = &mut node.cores[owning_core(region, cores)];
                core.store
                    .as_mut()
                    .expect("up")
                    .on_raft_messages(vec![(region, message)]);
            }
            Payload::Request { attempt, request } => {
                let Endpoint::Client(client) = envelope.from else {
                    return;
                };
                let core = &mut node.cores[owning_core(request.region, cores)];
                let token = core.next_token;
                core.next_token += 1;
                core.waiting.insert(token, (client, attempt));
                core.store.as_mut().expect("up").on_request(token, request);
            }
            Payload::Reply { .. } => {}
        }
    }

    /// Step 2 of the module docs, until the Store is idle, a fault stops the node, or the
    /// disk is "still syncing".
    ///
    /// Pipelined like the driver (`CoreLoop::run`): the core takes rounds while it has room
    /// (`ROUNDS_IN_FLIGHT_MAX`, never past a barrier round), writing each batch; the sync
    /// that makes them durable finishes now or (a coin toss) only in a later step, so the
    /// rounds stay in flight while messages and requests are stepped into the Store and
    /// further rounds are taken. Synced rounds complete in order.
    fn run_rounds(&mut self, id: NodeId, index: usize) -> Result<(), Stop> {
        if self.rng.range(0, 2) == 0 {
            self.finish_snapshot_write(id, index);
        }
        for _ in 0..ROUNDS_PER_STEP_MAX {
            self.free_destroyed(id, index);
            let took = self.take_round(id, index)?;
            let core = &self.nodes[&id].cores[index];
            if took && core.in_flight.len() < ROUNDS_IN_FLIGHT_MAX {
                continue;
            }
            if core.in_flight.is_empty() {
                return Ok(());
            }
            if self.rng.range(0, 3) == 0 {
                return Ok(()); // the sync is not done yet: the rounds stay in flight
            }
            self.complete_rounds(id, index)?;
        }
        panic!(
            "{id:?} core {index}: the Store did not go idle within {ROUNDS_PER_STEP_MAX} rounds"
        );
    }

    /// Tombstones of replicas the Store destroyed go to the disk (durable), their snapshot
    /// files go, and their WAL removal rides the next batch, as `CoreLoop::free_destroyed`.
    fn free_destroyed(&mut self, id: NodeId, index: usize) {
        let core = &mut self.nodes.get_mut(&id).expect("known").cores[index];
        let store = core.store.as_mut().expect("up");
        let destroyed = store.take_destroyed();
        if destroyed.is_empty() {
            return;
        }
        // The driver waits for the snapshot file being written first.
        self.finish_snapshot_write(id, index);
        let core = &mut self.nodes.get_mut(&id).expect("known").cores[index];
        for tombstone in destroyed {
            self.stats.replicas_destroyed += 1;
            core.disk.destroyed(tombstone);
            core.snapshots.forget(tombstone.region);
            core.carried.removed(tombstone.region);
        }
    }

    /// The periodic snapshot file being written (if any) is durable: it reaches the disk and
    /// its compaction mark the next batch; the next queued one starts.
    fn finish_snapshot_write(&mut self, id: NodeId, index: usize) {
        let core = &mut self.nodes.get_mut(&id).expect("known").cores[index];
        if let Some(taken) = core.snapshot_writing.take() {
            core.disk.write_snapshot(&taken);
            core.snapshots.written(&mut core.carried);
            self.stats.snapshot_files_background += 1;
        }
        core.snapshot_writing = core.snapshots.start();
    }

    /// Takes one round if the pipeline has room and the Store has work: writes its batch
    /// (not synced yet) and sends what may leave at once. Returns whether it took one.
    fn take_round(&mut self, id: NodeId, index: usize) -> Result<bool, Stop> {
        let core = &mut self.nodes.get_mut(&id).expect("known").cores[index];
        let room = core.in_flight.len() < ROUNDS_IN_FLIGHT_MAX
            && !core.in_flight.iter().any(StoreReady::is_barrier);
        let store = core.store.as_mut().expect("up");
        let Some(mut ready) = room.then(|| store.ready()).flatten() else {
            return Ok(false);
        };
        self.stats.rounds_pipelined += u64::from(!core.in_flight.is_empty());
        self.stats.rounds_during_snapshot_write += u64::from(core.snapshot_writing.is_some());
        let now = ready.messages_now();
        let round = round_batch(&ready, &mut core.carried);
        for received in &round.received_snapshots {
            core.disk.write_snapshot(received);
            core.snapshots.forget(received.region);
        }
        let mut crashed = false;
        if !round.batch.is_empty() {
            self.stats.wal_records += 1;
            self.stats.rotations += u64::from(core.disk.write(&round.batch));
            core.unsynced = true;
            crashed = self.rng.range(0, 1000) < self.disk_faults.crash_in_write_permille;
        }
        core.in_flight.push(ready);
        // Messages that need no durability left before the write (a leader sends its
        // appends while persisting its own copy), even if the write then fails.
        self.send_raft(id, now);
        if crashed {
            return Err(Stop::CrashInWrite);
        }
        Ok(true)
    }

    /// The sync of everything written finished: the rounds in flight complete in order.
    fn complete_rounds(&mut self, id: NodeId, index: usize) -> Result<(), Stop> {
        let core = &mut self.nodes.get_mut(&id).expect("known").cores[index];
        if core.unsynced {
            if self.rng.range(0, 1000) < self.disk_faults.fsync_fail_permille {
                return Err(Stop::FsyncFailed);
            }
            core.disk.sync();
            core.unsynced = false;
        }
        for ready in std::mem::take(&mut core.in_flight) {
            let core = &mut self.nodes.get_mut(&id).expect("known").cores[index];
            let store = core.store.as_mut().expect("up");
            let persisted = store.on_persisted(ready);
            for taken in &persisted.snapshots {
                core.disk.write_snapshot(taken);
                core.snapshots.forget(taken.region);
                core.carried
                    .compacted(taken.region, taken.index, taken.term);
            }
            for taken in persisted.periodic_snapshots {
                core.snapshots.push(taken);
            }
            if core.snapshot_writing.is_none() {
                core.snapshot_writing = core.snapshots.start();
            }
            self.send_raft(id, persisted.messages);
        }
        Ok(())
    }

    fn stop(&mut self, id: NodeId, index: usize, stop: Stop) {
        match stop {
            Stop::CrashInWrite => self.stats.crashes_in_write += 1,
            Stop::FsyncFailed => {
                // The node stops: replies the Store holds are never sent (the driver answers
                // clients only after a round's fdatasync succeeded).
                self.stats.fsync_failures += 1;
                let core = &mut self.nodes.get_mut(&id).expect("known").cores[index];
                let withheld = core.store.as_mut().expect("up").take_replies();
                self.stats.replies_withheld += withheld.len() as u64;
            }
        }
        self.crash(id);
    }

    fn send_raft(&mut self, from: NodeId, batches: tessera_core::multi::Batches) {
        for (to, messages) in batches {
            for (region, message) in messages {
                let envelope = Envelope {
                    from: Endpoint::Node(from),
                    to: Endpoint::Node(to),
                    payload: Payload::Raft(region, message),
                };
                self.net.send(&mut self.rng, self.now, envelope);
            }
        }
    }

    fn answer_clients(&mut self, id: NodeId, index: usize) {
        let core = &mut self.nodes.get_mut(&id).expect("known").cores[index];
        let mut replies = core.store.as_mut().expect("up").take_replies();
        replies.sort_by_key(|(token, _)| *token);
        let mut out = Vec::new();
        for (token, result) in replies {
            if let Some((client, attempt)) = core.waiting.remove(&token) {
                out.push(Envelope {
                    from: Endpoint::Node(id),
                    to: Endpoint::Client(client),
                    payload: Payload::Reply { attempt, result },
                });
            }
        }
        for envelope in out {
            self.net.send(&mut self.rng, self.now, envelope);
        }
    }

    /// Sends a client's request into the network.
    pub fn send_request(&mut self, envelope: Envelope) {
        self.net.send(&mut self.rng, self.now, envelope);
    }

    fn check_invariants(&mut self) {
        for (id, node) in &self.nodes {
            for core in node.cores.iter().filter_map(|c| c.store.as_ref()) {
                self.invariants.check_store(*id, core);
            }
            for core in &node.cores {
                if node.up {
                    core.disk.log.invariants();
                }
            }
        }
    }

    /// The members (voters and learners) of `region` as its leader's Store sees them.
    fn members(&self, region: RegionId) -> Option<Vec<NodeId>> {
        let leader = self.leader(region)?;
        let core = owning_core(region, self.cores);
        let store = self.nodes[&leader].cores[core].store.as_ref()?;
        // The Region's peers with its epoch, as a heartbeat reports them to the driver.
        Some(store.regions().find(|r| r.id == region)?.peers.clone())
    }

    /// True when every Region has a leader, no membership change is in flight, and every
    /// member applied the leader's commit index.
    pub fn converged(&self) -> bool {
        self.active_move.is_none()
            && self.regions.iter().all(|region| {
                let Some(leader) = self.leader(region.id) else {
                    return false;
                };
                let core = owning_core(region.id, self.cores);
                let store = self.nodes[&leader].cores[core].store.as_ref().expect("up");
                let committed = store.raft(region.id).expect("region").committed();
                let members = self.members(region.id).expect("a leader");
                self.nodes.iter().all(|(id, node)| {
                    let store = node.cores[core].store.as_ref();
                    if !members.contains(id) {
                        // A removed replica must be gone too.
                        return store.is_none_or(|s| s.regions().all(|r| r.id != region.id));
                    }
                    store
                        .and_then(|s| s.raft(region.id))
                        .is_some_and(|r| r.applied() >= committed && r.committed() >= committed)
                })
            })
    }

    /// After the faults: the move in progress completes (no new one starts), and removed
    /// replicas are destroyed.
    pub fn finish_moves(&mut self) {
        if self.active_move.is_some() {
            self.drive_moves();
        } else {
            self.destroy_removed();
        }
    }

    /// Plays the placement driver for membership changes (see the module docs): starts a
    /// move when none is in progress, takes its next step, and destroys replicas whose
    /// Region left them.
    pub fn drive_moves(&mut self) {
        if let Some((region, from, to)) = self.active_move {
            let Some(members) = self.members(region) else {
                return;
            };
            let leader = self.leader(region).expect("members come from a leader");
            let core = owning_core(region, self.cores);
            let raft = self.nodes[&leader].cores[core].store.as_ref().expect("up");
            let conf = raft.raft(region).expect("region").conf_state().clone();
            if conf.is_voter(to) && !members.contains(&from) {
                self.active_move = None;
                self.stats.moves_done += 1;
                return;
            }
            self.request(leader, region, KvOp::MoveStep { from, to });
            return;
        }
        self.destroy_removed();
        let region = self.regions[self.rng.range(0, self.regions.len() as u64) as usize].id;
        let Some(members) = self.members(region) else {
            return;
        };
        // A target must be up and hold no replica of the Region, not even a stale one: a
        // stale replica that acknowledged the re-add's entries and then applied its own
        // removal would leave the leader believing in a log the store no longer has.
        let core = owning_core(region, self.cores);
        let outside: Vec<NodeId> = self
            .up_ids()
            .into_iter()
            .filter(|id| !members.contains(id))
            .filter(|id| {
                let store = self.nodes[id].cores[core].store.as_ref();
                store.is_some_and(|s| s.raft(region).is_none())
            })
            .collect();
        let (Some(to), Some(from)) = (self.pick(&outside), self.pick(&members)) else {
            return;
        };
        self.active_move = Some((region, from, to));
        self.stats.moves_started += 1;
    }

    /// `DestroyReplica` to every running replica whose Region's leader has a newer conf
    /// version without it (what the driver tells a store from its heartbeat).
    fn destroy_removed(&mut self) {
        for region in self.regions.iter().map(|r| r.id).collect::<Vec<_>>() {
            let (Some(members), Some(leader)) = (self.members(region), self.leader(region)) else {
                continue;
            };
            let core = owning_core(region, self.cores);
            let store = self.nodes[&leader].cores[core].store.as_ref().expect("up");
            let Some(epoch) = store.regions().find(|r| r.id == region).map(|r| r.epoch) else {
                continue;
            };
            for id in self.up_ids() {
                let held = self.nodes[&id].cores[core]
                    .store
                    .as_ref()
                    .and_then(|s| s.regions().find(|r| r.id == region).map(|r| r.epoch));
                let stale = held.is_some_and(|e| e.conf_version < epoch.conf_version);
                if stale && !members.contains(&id) {
                    self.request_at(id, region, epoch, KvOp::DestroyReplica);
                }
            }
        }
    }

    fn request(&mut self, node: NodeId, region: RegionId, op: KvOp) {
        let core = owning_core(region, self.cores);
        let Some(store) = self.nodes[&node].cores[core].store.as_ref() else {
            return;
        };
        let Some(epoch) = store.regions().find(|r| r.id == region).map(|r| r.epoch) else {
            return;
        };
        self.request_at(node, region, epoch, op);
    }

    /// Asks the Region's leader to hand leadership to `to` (a leadership transfer, as the
    /// placement driver orders to balance leaders): the leader sends `to` what it lacks and
    /// then tells it to campaign at once.
    pub fn transfer_leader(&mut self, region: RegionId, to: NodeId) {
        if let Some(leader) = self.leader(region) {
            self.request(leader, region, KvOp::MoveStep { from: to, to });
        }
    }

    /// Hands the driver's request to a node's core; its answer is not awaited (the token is
    /// no client's), as the driver's worker only looks at the replicated membership.
    fn request_at(&mut self, node: NodeId, region: RegionId, epoch: RegionEpoch, op: KvOp) {
        let core =
            &mut self.nodes.get_mut(&node).expect("known").cores[owning_core(region, self.cores)];
        let Some(store) = core.store.as_mut() else {
            return;
        };
        let token = core.next_token;
        core.next_token += 1;
        let request = KvRequest {
            namespace: String::new(),
            mode: Mode::Strong,
            region,
            epoch,
            op,
        };
        store.on_request(token, request);
    }

    /// Per Region: (applied index, hash of the state) on every member; all must agree.
    pub fn final_states(&self) -> BTreeMap<RegionId, Vec<(NodeId, LogIndex, u64)>> {
        let mut out: BTreeMap<RegionId, Vec<(NodeId, LogIndex, u64)>> = BTreeMap::new();
        for region in &self.regions {
            let core = owning_core(region.id, self.cores);
            let members = self.members(region.id).expect("converged: a leader");
            for (id, node) in &self.nodes {
                let Some(store) = node.cores[core]
                    .store
                    .as_ref()
                    .filter(|_| members.contains(id))
                else {
                    continue;
                };
                let applied = store.raft(region.id).expect("region").applied();
                let hash = state_hash(store.kv(region.id).expect("region"));
                out.entry(region.id).or_default().push((*id, applied, hash));
            }
        }
        out
    }

    /// Adds the counters of the Stores still running.
    pub fn finish_stats(&mut self) {
        for node in self.nodes.values() {
            for store in node.cores.iter().filter_map(|c| c.store.as_ref()) {
                self.stats.add_store(&store.stats());
            }
        }
    }

    pub fn describe(&self) -> String {
        let mut lines = vec![format!("move in progress: {:?}", self.active_move)];
        for (id, node) in &self.nodes {
            for store in node.cores.iter().filter_map(|c| c.store.as_ref()) {
                for s in store.status() {
                    lines.push(format!(
                        "{id:?} {:?}: {:?} {:?} leader={:?} commit={:?} applied={:?}",
                        s.region.id, s.role, s.term, s.leader, s.committed, s.applied
                    ));
                }
            }
            if !node.up {
                lines.push(format!("{id:?}: down"));
            }
        }
        lines.join("\n")
    }
}

fn state_hash(kv: &KvState) -> u64 {
    digest(kv.encode_snapshot())
}

/// The core simulator's invariants, where a whole node makes them observable:
/// 1. Election Safety: at most one leader per term per Region;
/// 2. State Machine Safety: every replica that applied a Region up to index i holds the same
///    state there (compared as a hash of the encoded state);
/// 3. each Raft member's own invariants.
#[derive(Default)]
struct Invariants {
    leaders: BTreeMap<(RegionId, Term), NodeId>,
    applied: BTreeMap<(RegionId, LogIndex), (NodeId, u64)>,
    last_checked: BTreeMap<(NodeId, RegionId), LogIndex>,
}

impl Invariants {
    fn check_store(&mut self, id: NodeId, store: &Store) {
        for region in store.regions().map(|r| r.id).collect::<Vec<_>>() {
            let raft = store.raft(region).expect("region");
            if let Err(broken) = raft.invariants() {
                panic!("{id:?} {region:?}: Raft invariant broken: {broken}");
            }
            if raft.role() == Role::Leader {
                let known = *self.leaders.entry((region, raft.term())).or_insert(id);
                assert_eq!(
                    known,
                    id,
                    "Election Safety: {known:?} and {id:?} both lead {region:?} in {:?}",
                    raft.term()
                );
            }
            let applied = raft.applied();
            if self.last_checked.insert((id, region), applied) == Some(applied) {
                continue;
            }
            let hash = state_hash(store.kv(region).expect("region"));
            let (first, known) = *self.applied.entry((region, applied)).or_insert((id, hash));
            assert_eq!(
                known, hash,
                "State Machine Safety: {id:?} and {first:?} hold different states of {region:?} at applied index {applied:?}"
            );
        }
    }
}
