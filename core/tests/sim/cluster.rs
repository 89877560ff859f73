//! A simulated cluster: nodes running `RaftCore` over `MemStorage`, a network that drops,
//! duplicates, reorders and partitions, crashes that lose everything not persisted, and a
//! checker that verifies Raft's safety properties after every step.
//!
//! Everything random comes from one seeded generator, so a seed replays exactly.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tessera_core::rng::SplitMix64;
use tessera_core::{
    Advance, ConfState, Config, Entry, LogIndex, MemStorage, Message, NodeId, RaftCore, Role,
    Snapshot, Storage, Term,
};

use super::checker::Checker;

/// The state machine each node applies: a hash chain over the applied entries. Two nodes
/// with the same chain at an index applied the same entries up to it.
#[derive(Clone, Copy, Debug, Default)]
pub struct StateMachine {
    pub applied: LogIndex,
    pub chain: u64,
}

pub fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn hash_bytes(bytes: &[u8]) -> u64 {
    bytes.chunks(8).fold(bytes.len() as u64, |h, chunk| {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        mix(h, u64::from_le_bytes(word))
    })
}

fn entry_hash(entry: &Entry) -> u64 {
    mix(
        mix(entry.term.0, entry.kind.code() as u64),
        hash_bytes(&entry.data),
    )
}

/// One simulated node: running (`core`) or crashed (`down`, its durable storage kept).
pub struct SimNode {
    pub core: Option<RaftCore<MemStorage>>,
    pub down: Option<MemStorage>,
    pub config: Config,
    pub state: StateMachine,
}

/// Network fault knobs, in parts per thousand.
#[derive(Clone, Copy, Debug)]
pub struct NetworkFaults {
    pub drop_permille: u64,
    pub duplicate_permille: u64,
}

pub struct Cluster {
    pub rng: SplitMix64,
    pub nodes: BTreeMap<NodeId, SimNode>,
    /// Messages in flight, delivered in random order.
    pub in_flight: Vec<Message>,
    /// Directed links that drop everything: (from, to).
    pub blocked: BTreeSet<(NodeId, NodeId)>,
    pub faults: NetworkFaults,
    pub checker: Checker,
    pub next_node_id: u64,
    next_request_id: u64,
    /// Read requests waiting for their ReadState: id → the committed index they must see.
    pub pending_reads: HashMap<u64, LogIndex>,
    /// Proposals (by payload) a caller is waiting on.
    pub committed_payloads: BTreeSet<Vec<u8>>,
    /// Crash a node in the middle of handling its Ready: before or after persisting.
    pub crash_in_ready_permille: u64,
    /// Print every event (set by `TESSERA_SIM_TRACE=1` when replaying a seed).
    pub trace: bool,
    /// The pipeline window of this run: small windows fill up, large ones never do.
    inflight_msgs_max: usize,
}

const IN_FLIGHT_MAX: usize = 4096;

fn sim_config(id: NodeId, seed: u64, inflight_msgs_max: usize) -> Config {
    let mut config = Config::new(id);
    config.election_timeout_ticks = 10;
    config.heartbeat_interval_ticks = 2;
    config.inflight_msgs_max = inflight_msgs_max;
    config.msg_bytes_max = 4096;
    config.seed = seed;
    // Half the seeds tell commits at once, half with the next append or heartbeat.
    config.broadcast_commit = seed.is_multiple_of(2);
    config
}

impl Cluster {
    /// `voters` founding voters with ids 1..=voters.
    pub fn new(voters: u64, seed: u64) -> Cluster {
        let mut rng = SplitMix64::new(seed);
        let inflight_msgs_max = [1, 8, 256][rng.range(0, 3) as usize];
        let conf = ConfState::with_voters((1..=voters).map(NodeId));
        let mut nodes = BTreeMap::new();
        for id in (1..=voters).map(NodeId) {
            let config = sim_config(id, rng.next_u64(), inflight_msgs_max);
            let core = RaftCore::new(config.clone(), MemStorage::new_with_conf(conf.clone()))
                .expect("valid config");
            let state = StateMachine {
                applied: core.applied(),
                chain: 0,
            };
            nodes.insert(
                id,
                SimNode {
                    core: Some(core),
                    down: None,
                    config,
                    state,
                },
            );
        }
        Cluster {
            rng,
            nodes,
            in_flight: Vec::new(),
            blocked: BTreeSet::new(),
            faults: NetworkFaults {
                drop_permille: 0,
                duplicate_permille: 0,
            },
            checker: Checker::default(),
            next_node_id: voters + 1,
            next_request_id: 1,
            pending_reads: HashMap::new(),
            committed_payloads: BTreeSet::new(),
            crash_in_ready_permille: 0,
            inflight_msgs_max,
            trace: std::env::var("TESSERA_SIM_TRACE").is_ok_and(|v| v == "1"),
        }
    }

    pub fn chance(&mut self, permille: u64) -> bool {
        self.rng.range(0, 1000) < permille
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        if items.is_empty() {
            return None;
        }
        Some(items[self.rng.range(0, items.len() as u64) as usize])
    }

    pub fn core(&self, id: NodeId) -> Option<&RaftCore<MemStorage>> {
        self.nodes.get(&id).and_then(|n| n.core.as_ref())
    }

    pub fn core_mut(&mut self, id: NodeId) -> Option<&mut RaftCore<MemStorage>> {
        self.nodes.get_mut(&id).and_then(|n| n.core.as_mut())
    }

    /// The current leader with the highest term, if any node leads.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|(id, n)| n.core.as_ref().map(|c| (*id, c)))
            .filter(|(_, c)| c.role() == Role::Leader)
            .max_by_key(|(_, c)| c.term())
            .map(|(id, _)| id)
    }

    /// Adds a fresh node (empty storage, no membership) that waits to be seeded by snapshot.
    pub fn add_blank_node(&mut self) -> NodeId {
        let id = NodeId(self.next_node_id);
        self.next_node_id += 1;
        let config = sim_config(id, self.rng.next_u64(), self.inflight_msgs_max);
        let core = RaftCore::new(config.clone(), MemStorage::default()).expect("valid config");
        self.nodes.insert(
            id,
            SimNode {
                core: Some(core),
                down: None,
                config,
                state: StateMachine::default(),
            },
        );
        id
    }

    pub fn tick_all(&mut self) {
        for id in self.ids() {
            if let Some(core) = self.core_mut(id) {
                core.tick();
            }
        }
        for id in self.ids() {
            self.process_ready(id);
        }
    }

    fn enqueue(&mut self, messages: Vec<Message>) {
        for message in messages {
            if self.in_flight.len() < IN_FLIGHT_MAX {
                self.in_flight.push(message);
            }
        }
    }

    /// Delivers one random in-flight message (or drops or duplicates it). Returns false when
    /// nothing was in flight.
    pub fn deliver_one(&mut self) -> bool {
        if self.in_flight.is_empty() {
            return false;
        }
        let position = self.rng.range(0, self.in_flight.len() as u64) as usize;
        let message = if self.chance(self.faults.duplicate_permille) {
            self.in_flight[position].clone()
        } else {
            self.in_flight.swap_remove(position)
        };
        if self.blocked.contains(&(message.from, message.to))
            || self.chance(self.faults.drop_permille)
        {
            return true;
        }
        let to = message.to;
        if self.trace {
            println!("deliver {message:?}");
        }
        if let Some(core) = self.core_mut(to) {
            core.step(message);
            self.process_ready(to);
        }
        true
    }

    /// Carries out one node's Ready in the documented order, checking safety as it goes.
    pub fn process_ready(&mut self, id: NodeId) {
        for _ in 0..16 {
            let Some(core) = self.core_mut(id) else {
                return;
            };
            if !core.has_ready() {
                return;
            }
            let ready = core.ready();
            if self.trace {
                println!(
                    "ready {id:?}: soft={:?} hard={:?} snap={:?} entries={:?} committed={:?}",
                    ready.soft_state,
                    ready.hard_state,
                    ready.snapshot.as_ref().map(|s| &s.metadata),
                    ready
                        .entries
                        .iter()
                        .map(|e| (e.index.0, e.term.0))
                        .collect::<Vec<_>>(),
                    ready
                        .committed_entries
                        .iter()
                        .map(|e| (e.index.0, e.term.0, e.data.clone()))
                        .collect::<Vec<_>>()
                );
            }
            if ready.soft_state.is_some_and(|s| s.role == Role::Leader) {
                let core = self.nodes[&id].core.as_ref().expect("running");
                self.checker.on_leader(id, core);
            }
            self.enqueue(ready.messages.clone());
            if self.chance(self.crash_in_ready_permille) {
                self.crash(id); // before persisting: the Ready is lost
                return;
            }
            self.persist(id, &ready);
            if self.chance(self.crash_in_ready_permille) {
                self.crash(id); // persisted, but nothing acknowledged or applied
                return;
            }
            self.enqueue(ready.persisted_messages.clone());
            self.apply(id, ready.snapshot.as_ref(), &ready.committed_entries);
            self.check_reads(id, &ready.read_states);
            let advance: Advance = ready.advance();
            let core = self.core_mut(id).expect("running");
            core.advance(advance);
            let core = self.nodes[&id].core.as_ref().expect("running");
            self.checker.after_step(id, core);
        }
    }

    fn persist(&mut self, id: NodeId, ready: &tessera_core::Ready) {
        let core = self.core_mut(id).expect("running");
        core.storage_mut().persist_ready(ready);
        let storage = self.nodes[&id].core.as_ref().expect("running").storage();
        for entry in &ready.entries {
            let prev_term = storage.term(entry.index.prev()).unwrap_or(Term(0));
            self.checker.on_persisted_entry(
                id,
                entry.index,
                entry.term,
                entry_hash(entry),
                prev_term,
            );
        }
    }

    fn apply(&mut self, id: NodeId, snapshot: Option<&Snapshot>, entries: &[Entry]) {
        let node = self.nodes.get_mut(&id).expect("exists");
        if let Some(snapshot) = snapshot {
            node.state = StateMachine {
                applied: snapshot.metadata.index,
                chain: decode_chain(&snapshot.data),
            };
            self.checker
                .on_applied(id, snapshot.metadata.index, None, node.state.chain);
        }
        for entry in entries {
            let node = self.nodes.get_mut(&id).expect("exists");
            assert_eq!(
                entry.index,
                node.state.applied.next(),
                "{id:?} applies out of order"
            );
            node.state.applied = entry.index;
            node.state.chain = mix(node.state.chain, entry_hash(entry));
            let chain = node.state.chain;
            self.checker
                .on_applied(id, entry.index, Some(entry_hash(entry)), chain);
            if !entry.data.is_empty() {
                self.committed_payloads.insert(entry.data.to_vec());
            }
        }
    }

    fn check_reads(&mut self, id: NodeId, read_states: &[tessera_core::ReadState]) {
        for read in read_states {
            if let Some(required) = self.pending_reads.remove(&read.request_id) {
                assert!(
                    read.index >= required,
                    "{id:?}: ReadIndex {:?} for request {} is below {:?}, committed before the read began",
                    read.index,
                    read.request_id,
                    required
                );
            }
        }
    }

    /// Starts a linearizable read on `id`, remembering what it must observe.
    pub fn read(&mut self, id: NodeId) {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let required = self.checker.max_committed();
        let Some(core) = self.core_mut(id) else {
            return;
        };
        if core.read_index(request_id).is_ok() {
            self.pending_reads.insert(request_id, required);
            self.process_ready(id);
        }
    }

    /// Drops the node's volatile state; keeps what it persisted.
    pub fn crash(&mut self, id: NodeId) {
        if self.trace {
            println!("crash {id:?}");
        }
        let node = self.nodes.get_mut(&id).expect("exists");
        if let Some(core) = node.core.take() {
            node.down = Some(core.storage().clone());
        }
    }

    /// Restarts a crashed node from its durable storage; its state machine restarts from the
    /// snapshot and replays the log.
    pub fn restart(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("exists");
        let Some(storage) = node.down.take() else {
            return;
        };
        if self.trace {
            println!("restart {id:?}");
        }
        let snapshot = storage.snapshot().expect("mem storage");
        node.state = StateMachine {
            applied: snapshot.metadata.index,
            chain: decode_chain(&snapshot.data),
        };
        let core = RaftCore::new(node.config.clone(), storage).expect("restart");
        node.core = Some(core);
        self.process_ready(id);
    }

    /// Compacts a node's log into a snapshot of its applied state.
    pub fn compact(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("exists");
        let state = node.state;
        let Some(core) = node.core.as_mut() else {
            return;
        };
        let first = core.storage().first_index();
        if state.applied.0 < first.0 + 4 || state.applied != core.applied() {
            return;
        }
        let conf = core.conf_state().clone();
        core.storage_mut()
            .create_snapshot(state.applied, conf, state.chain.to_le_bytes().to_vec());
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Splits the nodes into two random sides.
    pub fn partition(&mut self) {
        let ids = self.ids();
        let side: Vec<bool> = ids.iter().map(|_| self.chance(500)).collect();
        for (a, side_a) in ids.iter().zip(&side) {
            for (b, side_b) in ids.iter().zip(&side) {
                if side_a != side_b {
                    self.blocked.insert((*a, *b));
                }
            }
        }
    }

    /// Cuts one node off in one direction only (it hears nobody, or nobody hears it).
    pub fn asymmetric_partition(&mut self) {
        let ids = self.ids();
        let Some(victim) = self.pick(&ids) else {
            return;
        };
        let inbound = self.chance(500);
        for other in ids.into_iter().filter(|o| *o != victim) {
            if inbound {
                self.blocked.insert((other, victim));
            } else {
                self.blocked.insert((victim, other));
            }
        }
    }

    /// Proposes a unique payload on the leader, if there is one.
    pub fn propose(&mut self, payload: Vec<u8>) -> bool {
        let Some(leader) = self.leader() else {
            return false;
        };
        let core = self.core_mut(leader).expect("leader runs");
        let ok = core.propose(payload.into()).is_ok();
        self.process_ready(leader);
        ok
    }
}

fn decode_chain(data: &[u8]) -> u64 {
    data.try_into().map(u64::from_le_bytes).unwrap_or(0)
}
