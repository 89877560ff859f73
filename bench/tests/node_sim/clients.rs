//! Simulated clients: each runs one operation at a time (strong get, put, delete, CAS,
//! compare-and-delete on a small key space), sends it to the node it believes leads the
//! key's Region, and gives up after a timeout (outcome unknown). Every operation goes into a
//! history for the linearizability checker; times are one counter bumped at every
//! invocation and completion, so they order events exactly as the simulation saw them.

use std::collections::BTreeMap;

use tessera_bench::linearizability::{ClientId, Command, History, Outcome};
use tessera_core::rng::SplitMix64;
use tessera_core::{NodeId, RegionId};
use tessera_node::region::Region;
use tessera_node::request::{KvError, KvOp, KvReply, KvRequest, KvResult, Mode};

use super::net::{Endpoint, Envelope, Payload};

/// The keys, spread over the four Regions (split at "f", "n", "u").
pub const KEYS: [&[u8]; 8] = [b"a", b"c", b"g", b"k", b"p", b"r", b"v", b"y"];
/// Steps a client waits for an answer before it gives up.
pub const TIMEOUT_STEPS: u64 = 120;
const NAMESPACE: &str = "sim";

struct Pending {
    attempt: u64,
    command: Command,
    invoked: u64,
    deadline: u64,
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

    /// Times out what waited too long, then starts new operations; returns the requests.
    pub fn step(&mut self, now: u64, rng: &mut SplitMix64, nodes: &[NodeId]) -> Vec<Envelope> {
        let mut out = Vec::new();
        for index in 0..self.clients.len() {
            let timed_out = self.clients[index]
                .pending
                .as_ref()
                .is_some_and(|p| now >= p.deadline);
            if timed_out {
                self.abandon(index);
                self.clients[index].leader_guess.clear();
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
            out.push(self.invoke(index, command, now, rng, nodes));
        }
        out
    }

    fn random_command(&mut self, index: usize, rng: &mut SplitMix64) -> Command {
        let key = KEYS[rng.range(0, KEYS.len() as u64) as usize].to_vec();
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

    fn invoke(
        &mut self,
        index: usize,
        command: Command,
        now: u64,
        rng: &mut SplitMix64,
        nodes: &[NodeId],
    ) -> Envelope {
        let region = self
            .regions
            .iter()
            .find(|r| r.contains(command.key()))
            .expect("every key has a Region")
            .clone();
        let guess = self.clients[index].leader_guess.get(&region.id).copied();
        let node = guess.unwrap_or_else(|| nodes[rng.range(0, nodes.len() as u64) as usize]);
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        self.stats.invoked += 1;
        let request = KvRequest {
            namespace: NAMESPACE.to_string(),
            mode: Mode::Strong,
            region: region.id,
            epoch: region.epoch,
            op: to_op(&command),
        };
        let invoked = self.tick_clock();
        self.clients[index].pending = Some(Pending {
            attempt,
            command,
            invoked,
            deadline: now + TIMEOUT_STEPS,
        });
        Envelope {
            from: Endpoint::Client(index),
            to: Endpoint::Node(node),
            payload: Payload::Request { attempt, request },
        }
    }

    /// An answer arrived; answers to attempts the client gave up on are ignored.
    pub fn on_reply(&mut self, index: usize, attempt: u64, result: KvResult, now: u64) {
        let client = &mut self.clients[index];
        if client.pending.as_ref().map(|p| p.attempt) != Some(attempt) {
            return;
        }
        let pending = client.pending.take().expect("checked");
        let region = self
            .regions
            .iter()
            .find(|r| r.contains(pending.command.key()))
            .expect("region")
            .id;
        if let Err(KvError::NotLeader { leader, .. }) = &result {
            match leader {
                Some(leader) => client.leader_guess.insert(region, *leader),
                None => client.leader_guess.remove(&region),
            };
        }
        if let Err(KvError::RegionNotFound(_)) = &result {
            // The Region left that node (a move): ask another.
            client.leader_guess.remove(&region);
        }
        if let Err(KvError::StaleEpoch { current }) = &result {
            // A membership change bumped the conf version: route with the newer epoch.
            if let Some(known) = self.regions.iter_mut().find(|r| r.id == current.id) {
                known.epoch = known.epoch.max(current.epoch);
            }
        }
        let outcome = outcome(&pending.command, result);
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

    /// Operations still waiting when the run ends: unknown.
    pub fn abandon_all(&mut self) {
        for index in 0..self.clients.len() {
            self.abandon(index);
        }
    }

    /// The client gives up waiting: the outcome is unknown.
    fn abandon(&mut self, index: usize) {
        if let Some(pending) = self.clients[index].pending.take() {
            self.stats.unknown += 1;
            self.history.push(
                ClientId(index as u32),
                pending.command,
                pending.invoked,
                None,
                Outcome::Unknown,
            );
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
