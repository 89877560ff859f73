//! Simulated clients: each runs one operation at a time (strong get, put, delete, CAS,
//! compare-and-delete on a small key space) and sends it to the node it believes leads the
//! key's Region, following the retry rules of the client library (`node/src/client.rs`,
//! `Client::execute`):
//!
//! - `NotLeader` with a hint: sent again at once to the hinted leader; without one (or
//!   `Dropped`, which the wire turns into `NotLeader` without a hint): sent again after a
//!   backoff, to a random node (the library tries its routing table's leader or the next
//!   peer);
//! - `StaleEpoch` (with the newer epoch), `KeyNotInRegion`, `RegionNotFound`, `ServerBusy`:
//!   sent again after a backoff;
//! - `OutcomeUnknown` or no answer within [`TIMEOUT_STEPS`]: a write is never sent again
//!   (its outcome is unknown), a read is;
//! - any other answer is final.
//!
//! A resent operation is one logical operation, recorded once in the history the way the
//! real client sees it: invoked at its first send, its outcome the final answer. One that
//! runs out of attempts or time while refused ("retries exhausted") did not take effect:
//! every answer was a refusal that says so. Times are one counter bumped at every invocation
//! and completion, so they order events exactly as the simulation saw them.

use std::collections::BTreeMap;

use tessera_bench::linearizability::{ClientId, Command, History, Outcome};
use tessera_core::rng::SplitMix64;
use tessera_core::{NodeId, RegionId};
use tessera_node::region::Region;
use tessera_node::request::{KvError, KvOp, KvReply, KvRequest, KvResult, Mode};

use super::net::{Endpoint, Envelope, Payload};

/// The keys, spread over the four Regions (split at "f", "n", "u").
pub const KEYS: [&[u8]; 8] = [b"a", b"c", b"g", b"k", b"p", b"r", b"v", b"y"];
/// Steps a client waits for the answer to one send before it counts the answer lost.
pub const TIMEOUT_STEPS: u64 = 120;
/// Sends of one operation at most (the library's `attempts_max`).
pub const ATTEMPTS_MAX: u32 = 50;
/// Steps after its invocation past which an operation is not sent again (the library's
/// `request_timeout`).
pub const OPERATION_STEPS_MAX: u64 = 600;
/// The first backoff after a refusal without a leader hint, doubling up to the maximum (the
/// library's `backoff_initial` and `backoff_max`, in steps).
pub const BACKOFF_INITIAL_STEPS: u64 = 2;
pub const BACKOFF_MAX_STEPS: u64 = 32;
const NAMESPACE: &str = "sim";

/// Where a logical operation stands between its sends.
enum Phase {
    /// One send to `node` is out; its answer is expected by `deadline`.
    Sent {
        attempt: u64,
        node: NodeId,
        deadline: u64,
    },
    /// Refused; sent again at step `at`.
    Backoff { at: u64 },
}

struct Pending {
    command: Command,
    region: RegionId,
    invoked: u64,
    invoked_step: u64,
    sends: u32,
    backoff_steps: u64,
    phase: Phase,
}

struct Client {
    pending: Option<Pending>,
    next_op_at: u64,
    leader_guess: BTreeMap<RegionId, NodeId>,
    /// Last version this client saw per key (CAS expectations come from it).
    versions: BTreeMap<Vec<u8>, u64>,
    /// Keys left to read in the final phase.
    final_reads: Vec<Vec<u8>>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct ClientStats {
    pub invoked: u64,
    pub ok: u64,
    pub failed: u64,
    pub unknown: u64,
    /// Sends after the first, and those of writes answered `Dropped` before.
    pub resent: u64,
    pub resent_after_dropped: u64,
    /// Operations that ran out of attempts or time while refused.
    pub retries_exhausted: u64,
}

pub struct Clients {
    clients: Vec<Client>,
    regions: Vec<Region>,
    pub history: History,
    clock: u64,
    next_attempt: u64,
    next_value: u64,
    /// False once the workload stops issuing new operations.
    pub issuing: bool,
    /// A Region most new operations go to (three in four), while set: during a leadership
    /// flap, so that its leader holds several uncommitted writes when it is cut off and
    /// takes new ones when it leads again.
    pub focus: Option<RegionId>,
    pub stats: ClientStats,
}

impl Clients {
    pub fn new(count: usize, regions: Vec<Region>) -> Clients {
        let clients = (0..count)
            .map(|_| Client {
                pending: None,
                next_op_at: 0,
                leader_guess: BTreeMap::new(),
                versions: BTreeMap::new(),
                final_reads: Vec::new(),
            })
            .collect();
        Clients {
            clients,
            regions,
            history: History::new(),
            clock: 0,
            next_attempt: 1,
            next_value: 1,
            issuing: true,
            focus: None,
            stats: ClientStats::default(),
        }
    }

    fn tick_clock(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// True when no client waits for an answer or has final reads left.
    pub fn idle(&self) -> bool {
        self.clients
            .iter()
            .all(|c| c.pending.is_none() && c.final_reads.is_empty())
    }

    /// The final phase: client 0 reads every key strongly (until each read succeeds).
    pub fn start_final_reads(&mut self) {
        self.issuing = false;
        self.clients[0].final_reads = KEYS.iter().rev().map(|k| k.to_vec()).collect();
    }

    /// Handles lost answers and due resends, then starts new operations; returns the
    /// requests.
    pub fn step(&mut self, now: u64, rng: &mut SplitMix64, nodes: &[NodeId]) -> Vec<Envelope> {
        let mut out = Vec::new();
        for index in 0..self.clients.len() {
            let due = match self.clients[index].pending.as_ref().map(|p| &p.phase) {
                Some(Phase::Sent { deadline, .. }) if now >= *deadline => {
                    self.clients[index].leader_guess.clear();
                    self.on_answer_lost(index, now)
                }
                Some(Phase::Backoff { at }) => now >= *at,
                _ => false,
            };
            if due {
                out.extend(self.send(index, now, rng, nodes));
                continue;
            }
            let client = &self.clients[index];
            let wants_final = !client.final_reads.is_empty();
            if client.pending.is_some() || now < client.next_op_at {
                continue;
            }
            if !self.issuing && !wants_final {
                continue;
            }
            let command = match self.clients[index].final_reads.last() {
                Some(key) => Command::Get { key: key.clone() },
                None => self.random_command(index, rng),
            };
            let region = self
                .regions
                .iter()
                .find(|r| r.contains(command.key()))
                .expect("every key has a Region")
                .id;
            self.stats.invoked += 1;
            let invoked = self.tick_clock();
            self.clients[index].pending = Some(Pending {
                command,
                region,
                invoked,
                invoked_step: now,
                sends: 0,
                backoff_steps: BACKOFF_INITIAL_STEPS,
                phase: Phase::Backoff { at: now },
            });
            out.extend(self.send(index, now, rng, nodes));
        }
        out
    }

    fn random_command(&mut self, index: usize, rng: &mut SplitMix64) -> Command {
        let focused: Vec<&[u8]> = match self.focus {
            Some(focus) if rng.range(0, 4) != 0 => {
                let region = self.regions.iter().find(|r| r.id == focus);
                let keys = KEYS
                    .iter()
                    .filter(|k| region.is_some_and(|r| r.contains(k)));
                keys.copied().collect()
            }
            _ => Vec::new(),
        };
        let keys = if focused.is_empty() {
            &KEYS[..]
        } else {
            &focused[..]
        };
        let key = keys[rng.range(0, keys.len() as u64) as usize].to_vec();
        let known = self.clients[index].versions.get(&key).copied().unwrap_or(0);
        let expected_version = match rng.range(0, 4) {
            0 => rng.range(0, known + 2),
            _ => known,
        };
        let value = format!("v{}", self.next_value).into_bytes();
        match rng.range(0, 100) {
            0..=29 => Command::Get { key },
            30..=54 => {
                self.next_value += 1;
                Command::Put { key, value }
            }
            55..=79 => {
                self.next_value += 1;
                Command::Cas {
                    key,
                    expected_version,
                    value,
                }
            }
            80..=89 => Command::CasDelete {
                key,
                expected_version,
            },
            _ => Command::Delete { key },
        }
    }

    /// Sends the pending operation (again), to the guessed leader or a random node; or ends
    /// it as "retries exhausted" when it is out of attempts or time.
    fn send(
        &mut self,
        index: usize,
        now: u64,
        rng: &mut SplitMix64,
        nodes: &[NodeId],
    ) -> Option<Envelope> {
        let pending = self.clients[index].pending.as_ref().expect("pending");
        if pending.sends >= ATTEMPTS_MAX || now >= pending.invoked_step + OPERATION_STEPS_MAX {
            self.stats.retries_exhausted += 1;
            self.complete(index, Outcome::Failed, now);
            return None;
        }
        let region = self
            .regions
            .iter()
            .find(|r| r.id == pending.region)
            .expect("known Region")
            .clone();
        let guess = self.clients[index].leader_guess.get(&region.id).copied();
        let node = guess.unwrap_or_else(|| nodes[rng.range(0, nodes.len() as u64) as usize]);
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        let pending = self.clients[index].pending.as_mut().expect("pending");
        if pending.sends > 0 {
            self.stats.resent += 1;
        }
        pending.sends += 1;
        pending.phase = Phase::Sent {
            attempt,
            node,
            deadline: now + TIMEOUT_STEPS,
        };
        let request = KvRequest {
            namespace: NAMESPACE.to_string(),
            mode: Mode::Strong,
            region: region.id,
            epoch: region.epoch,
            op: to_op(&pending.command),
        };
        Some(Envelope {
            from: Endpoint::Client(index),
            to: Endpoint::Node(node),
            payload: Payload::Request { attempt, request },
        })
    }

    /// The answer to the last send did not come in time. A write may have taken effect and
    /// is not sent again: its outcome is unknown. A read is sent again. Returns whether to
    /// send now.
    fn on_answer_lost(&mut self, index: usize, now: u64) -> bool {
        let pending = self.clients[index].pending.as_ref().expect("pending");
        if matches!(pending.command, Command::Get { .. }) {
            return true;
        }
        self.complete(index, Outcome::Unknown, now);
        false
    }

    /// An answer arrived; answers to sends the client no longer waits for are ignored.
    pub fn on_reply(&mut self, index: usize, attempt: u64, result: KvResult, now: u64) {
        let waiting = self.clients[index].pending.as_ref().map(|p| &p.phase);
        let Some(&Phase::Sent {
            attempt: sent,
            node,
            ..
        }) = waiting
        else {
            return;
        };
        if sent != attempt {
            return;
        }
        match self.retry_after(index, node, &result) {
            Some(wait_steps) => {
                if matches!(result, Err(KvError::Dropped(_))) {
                    self.stats.resent_after_dropped += 1;
                }
                let pending = self.clients[index].pending.as_mut().expect("pending");
                pending.phase = Phase::Backoff {
                    at: now + wait_steps,
                };
            }
            None => {
                let command = &self.clients[index]
                    .pending
                    .as_ref()
                    .expect("pending")
                    .command;
                let outcome = outcome(command, result);
                self.complete(index, outcome, now);
            }
        }
    }

    /// If the client library sends the operation again after `result` (from node `asked`),
    /// the steps it waits first; `None` when `result` is final. Learns what the answer tells
    /// about routing.
    fn retry_after(&mut self, index: usize, asked: NodeId, result: &KvResult) -> Option<u64> {
        let client = &mut self.clients[index];
        let pending = client.pending.as_mut().expect("pending");
        let region = pending.region;
        let read = matches!(pending.command, Command::Get { .. });
        let backoff = pending.backoff_steps;
        let mut waited = || {
            pending.backoff_steps = (backoff * 2).min(BACKOFF_MAX_STEPS);
            Some(backoff)
        };
        match result {
            Ok(_) => None,
            Err(KvError::NotLeader {
                leader: Some(leader),
                ..
            }) if *leader != asked => {
                client.leader_guess.insert(region, *leader);
                Some(0)
            }
            Err(KvError::NotLeader { .. } | KvError::Dropped(_)) => {
                client.leader_guess.remove(&region);
                waited()
            }
            Err(KvError::StaleEpoch { current }) => {
                // A membership change bumped the conf version: route with the newer epoch.
                if let Some(known) = self.regions.iter_mut().find(|r| r.id == current.id) {
                    known.epoch = known.epoch.max(current.epoch);
                }
                client.leader_guess.remove(&region);
                waited()
            }
            Err(KvError::RegionNotFound(_) | KvError::KeyNotInRegion { .. }) => {
                // The Region left that node (a move): ask another.
                client.leader_guess.remove(&region);
                waited()
            }
            Err(KvError::ServerBusy(_)) => waited(),
            Err(KvError::OutcomeUnknown(_)) if read => {
                client.leader_guess.remove(&region);
                Some(0)
            }
            Err(
                KvError::OutcomeUnknown(_)
                | KvError::VersionMismatch { .. }
                | KvError::InvalidRequest(_),
            ) => None,
        }
    }

    /// Ends the pending operation with its final `outcome` and records it.
    fn complete(&mut self, index: usize, outcome: Outcome, now: u64) {
        let client = &mut self.clients[index];
        let pending = client.pending.take().expect("pending");
        let key = pending.command.key().to_vec();
        match &outcome {
            Outcome::Failed => self.stats.failed += 1,
            Outcome::Unknown => self.stats.unknown += 1,
            _ => self.stats.ok += 1,
        }
        match &outcome {
            Outcome::Written { version } => {
                client.versions.insert(key.clone(), *version);
            }
            Outcome::Read { found } => {
                client
                    .versions
                    .insert(key.clone(), found.as_ref().map_or(0, |f| f.1));
                if client.final_reads.last() == Some(&key) {
                    client.final_reads.pop();
                }
            }
            Outcome::Mismatch { current_version } => {
                client.versions.insert(key.clone(), *current_version);
            }
            _ => {}
        }
        client.next_op_at = now + 1;
        // An unknown outcome may take effect at any time after the invocation.
        let completed = (outcome != Outcome::Unknown).then(|| self.tick_clock());
        self.history.push(
            ClientId(index as u32),
            pending.command,
            pending.invoked,
            completed,
            outcome,
        );
    }

    /// Operations still under way when the run ends: a write with a send out is unknown; one
    /// waiting to be sent again was refused every time so far (failed); so is a read.
    pub fn abandon_all(&mut self, now: u64) {
        for index in 0..self.clients.len() {
            let Some(pending) = &self.clients[index].pending else {
                continue;
            };
            let outcome = match pending.phase {
                Phase::Sent { .. } => Outcome::Unknown,
                Phase::Backoff { .. } => Outcome::Failed,
            };
            self.complete(index, outcome, now);
        }
    }
}
fn to_op(command: &Command) -> KvOp {
    match command.clone() {
        Command::Put { key, value } => KvOp::Put { key, value },
        Command::Delete { key } => KvOp::Delete { key },
        Command::Get { key } => KvOp::Get { key },
        Command::Cas {
            key,
            expected_version,
            value,
        } => KvOp::Cas {
            key,
            expected_version,
            value,
        },
        Command::CasDelete {
            key,
            expected_version,
        } => KvOp::CasDelete {
            key,
            expected_version,
        },
    }
}

/// What the Store's answer tells the checker. `OutcomeUnknown` is unknown; every other error
/// but a version mismatch means the request was refused before it was proposed, or its entry
/// was replaced: not applied.
fn outcome(command: &Command, result: KvResult) -> Outcome {
    match (command, result) {
        (Command::Get { .. }, Ok(KvReply::Value { found })) => Outcome::Read { found },
        (Command::Put { .. } | Command::Cas { .. }, Ok(KvReply::Written { version })) => {
            Outcome::Written { version }
        }
        (Command::Delete { .. } | Command::CasDelete { .. }, Ok(KvReply::Written { .. })) => {
            Outcome::Deleted
        }
        (
            Command::Cas { .. } | Command::CasDelete { .. },
            Err(KvError::VersionMismatch { current_version }),
        ) => Outcome::Mismatch { current_version },
        // The Store cannot tell whether the write took effect (a snapshot covered it).
        (_, Err(KvError::OutcomeUnknown(_))) => Outcome::Unknown,
        (_, Err(_)) => Outcome::Failed,
        (command, Ok(reply)) => panic!("{command:?} answered with {reply:?}"),
    }
}
