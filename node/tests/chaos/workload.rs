//! The clients of a chaos run: threads doing strong reads, puts, compare-and-swaps,
//! deletes and compare-and-deletes on a small key space, every operation recorded with its
//! invocation and completion time and its outcome.
//!
//! Outcomes, from what the client library says:
//! - an answer: `ok` (`Written`, `Deleted`, `Read`) or a compare's `Mismatch`;
//! - `RetriesExhausted`: every attempt was refused before it was applied (not the leader,
//!   busy, unreachable), so the write did not happen: `Failed`;
//! - `OutcomeUnknown` (sent, answer lost) and anything else: `Unknown`, the write may or may
//!   not take effect, now or later. Unanswered reads are `Unknown` too (they constrain
//!   nothing).
//!
//! Keys rotate: every [`KEY_GENERATION`] the clients move to fresh keys, so each key's
//! history stays short enough for the checker's exponential search (a write with unknown
//! outcome stays a candidate until the key's history ends).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tessera_bench::linearizability::{ClientId, Command, History, Operation, Outcome, Recorder};
use tessera_node::client::{request_once, CasOutcome, Client, ClientError, ClientOptions};
use tessera_transport::client::{ClientOp, ClientReply, ClientRequest, Mode};

use crate::common::TestRng;

/// Key slots: half below "m" (the first Region), half above (the second).
const SLOTS: [&str; 6] = ["c0", "c1", "c2", "r3", "r4", "r5"];
/// How long the clients use one generation of keys.
pub const KEY_GENERATION: Duration = Duration::from_secs(4);
/// A request gives up (outcome unknown for a write) after this long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(1500);

/// How the clients send strong reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadRouting {
    /// Through the client library, to the Region's leader (the correct way).
    Leader,
    /// Straight to a random replica (only useful against the broken test-only mode, where
    /// followers answer strong reads).
    AnyReplica,
}

/// Counts of what the clients were told.
#[derive(Clone, Copy, Debug, Default)]
pub struct OutcomeCounts {
    pub ok: u64,
    pub mismatch: u64,
    pub failed: u64,
    pub unknown: u64,
}

impl OutcomeCounts {
    pub fn of(history: &History) -> OutcomeCounts {
        let mut counts = OutcomeCounts::default();
        for op in history.operations() {
            match op.outcome {
                Outcome::Written { .. } | Outcome::Deleted | Outcome::Read { .. } => counts.ok += 1,
                Outcome::Mismatch { .. } => counts.mismatch += 1,
                Outcome::Failed => counts.failed += 1,
                Outcome::Unknown => counts.unknown += 1,
            }
        }
        counts
    }
}

/// Running client threads.
pub struct Workload {
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Completed operations, for progress checks.
    pub completed: Arc<AtomicU64>,
}

impl Workload {
    /// Starts `clients` threads, client `c` seeded with `seeds[c % seeds.len()]` (a client
    /// address of some node).
    pub fn start(clients: u32, seeds: Vec<String>, routing: ReadRouting, rng_seed: u64) -> Self {
        let recorder = Arc::new(Recorder::new());
        let stop = Arc::new(AtomicBool::new(false));
        let completed = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let threads = (0..clients)
            .map(|c| {
                let worker = Worker {
                    id: ClientId(c),
                    seeds: seeds.clone(),
                    client: None,
                    rng: TestRng::from_seed(rng_seed ^ (u64::from(c) + 1) << 40),
                    recorder: recorder.clone(),
                    routing,
                    versions: BTreeMap::new(),
                    next_value: 0,
                    started,
                    completed: completed.clone(),
                };
                let stop = stop.clone();
                std::thread::Builder::new()
                    .name(format!("chaos-client-{c}"))
                    .spawn(move || worker.run(&stop))
                    .expect("spawn client")
            })
            .collect();
        Workload {
            recorder,
            stop,
            threads,
            completed,
        }
    }

    /// Stops the clients (each finishes its current operation) and returns the recorder.
    pub fn stop(mut self) -> Arc<Recorder> {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            thread.join().expect("client thread panicked");
        }
        self.recorder.clone()
    }
}

fn generation(started: Instant) -> u64 {
    (started.elapsed().as_millis() / KEY_GENERATION.as_millis()) as u64
}

fn key(slot: &str, generation: u64) -> Vec<u8> {
    format!("{slot}-g{generation}").into_bytes()
}

/// Options of every chaos client.
pub fn client_options() -> ClientOptions {
    ClientOptions {
        request_timeout: REQUEST_TIMEOUT,
        attempts_max: 20,
        backoff_initial: Duration::from_millis(5),
        backoff_max: Duration::from_millis(100),
        ..ClientOptions::default()
    }
}

struct Worker {
    id: ClientId,
    seeds: Vec<String>,
    client: Option<Client>,
    rng: TestRng,
    recorder: Arc<Recorder>,
    routing: ReadRouting,
    /// The latest version this client saw per key, for its compare-and-swaps.
    versions: BTreeMap<Vec<u8>, u64>,
    next_value: u64,
    started: Instant,
    completed: Arc<AtomicU64>,
}

impl Worker {
    fn run(mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::SeqCst) {
            if self.client.is_none() && !self.connect() {
                continue;
            }
            let slot = SLOTS[self.rng.range(0, SLOTS.len() as u64) as usize];
            let key = key(slot, generation(self.started));
            let command = self.command(key);
            let id = self.recorder.invoke(self.id, command.clone());
            let outcome = self.execute(&command);
            if let Some(version) = observed_version(&outcome) {
                self.versions.insert(command.key().to_vec(), version);
            }
            self.recorder.complete(id, outcome);
            self.completed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Connects through the seeds in turn; false (after a pause) if none answers.
    fn connect(&mut self) -> bool {
        let first = self.rng.range(0, self.seeds.len() as u64) as usize;
        for i in 0..self.seeds.len() {
            let seed = &self.seeds[(first + i) % self.seeds.len()];
            if let Ok(client) = Client::connect(seed, client_options()) {
                self.client = Some(client);
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
        false
    }

    fn command(&mut self, key: Vec<u8>) -> Command {
        self.next_value += 1;
        let value = format!("c{}-{}", self.id.0, self.next_value).into_bytes();
        let known = self.versions.get(&key).copied().unwrap_or(0);
        // Mostly the version last seen, sometimes a guess, so both outcomes of a compare occur.
        let expected_version = match self.rng.range(0, 4) {
            0 => 0,
            1 => known + 1,
            _ => known,
        };
        match self.rng.range(0, 20) {
            0..=7 => Command::Get { key },
            8..=11 => Command::Put { key, value },
            12..=16 => Command::Cas {
                key,
                expected_version,
                value,
            },
            17..=18 => Command::CasDelete {
                key,
                expected_version,
            },
            _ => Command::Delete { key },
        }
    }

    fn execute(&mut self, command: &Command) -> Outcome {
        if let (Command::Get { key }, ReadRouting::AnyReplica) = (command, self.routing) {
            return self.read_any_replica(key);
        }
        let client = self.client.as_mut().expect("connected");
        let result = match command {
            Command::Get { key } => client.get(key, Mode::Strong).map(|found| Outcome::Read {
                found: found.map(|v| (v.value, v.version)),
            }),
            Command::Put { key, value } => client
                .put(key, value, Mode::Strong)
                .map(|version| Outcome::Written { version }),
            Command::Delete { key } => client.delete(key, Mode::Strong).map(|()| Outcome::Deleted),
            Command::Cas {
                key,
                expected_version,
                value,
            } => client
                .cas(key, *expected_version, value)
                .map(|answer| match answer {
                    CasOutcome::Done { version } => Outcome::Written { version },
                    CasOutcome::Mismatch { current_version } => {
                        Outcome::Mismatch { current_version }
                    }
                }),
            Command::CasDelete {
                key,
                expected_version,
            } => client
                .cas_delete(key, *expected_version)
                .map(|answer| match answer {
                    CasOutcome::Done { .. } => Outcome::Deleted,
                    CasOutcome::Mismatch { current_version } => {
                        Outcome::Mismatch { current_version }
                    }
                }),
        };
        result.unwrap_or_else(|error| match error {
            ClientError::RetriesExhausted { .. } => Outcome::Failed,
            _ => Outcome::Unknown,
        })
    }

    /// A strong read sent straight to a random node (which forwards it to the core that
    /// owns the Region), bypassing the client's routing to the leader.
    fn read_any_replica(&mut self, key: &[u8]) -> Outcome {
        let client = self.client.as_ref().expect("connected");
        let (regions, _) = client.routing();
        let Some(region) = regions.iter().find(|r| {
            key >= r.start_key.as_slice() && (r.end_key.is_empty() || key < r.end_key.as_slice())
        }) else {
            return Outcome::Unknown;
        };
        let request = ClientRequest {
            request_id: 1,
            namespace: String::new(),
            mode: Mode::Strong,
            region_id: region.region_id,
            epoch: region.epoch,
            op: ClientOp::Get { key: key.to_vec() },
        };
        let addr = &self.seeds[self.rng.range(0, self.seeds.len() as u64) as usize];
        match request_once(addr, &request, REQUEST_TIMEOUT) {
            Ok(Ok(ClientReply::Value { value })) => Outcome::Read {
                found: value.map(|v| (v.value, v.version)),
            },
            _ => Outcome::Unknown,
        }
    }
}

/// The version an outcome reports the key to hold now, if any.
fn observed_version(outcome: &Outcome) -> Option<u64> {
    match outcome {
        Outcome::Written { version } => Some(*version),
        Outcome::Deleted => Some(0),
        Outcome::Read { found } => Some(found.as_ref().map_or(0, |(_, version)| *version)),
        Outcome::Mismatch { current_version } => Some(*current_version),
        Outcome::Failed | Outcome::Unknown => None,
    }
}

/// Acknowledged writes the final state contradicts: for each key, the final strong read
/// (`finals`) must show a version at or above every acknowledged put or CAS, unless a delete
/// that may have come after that write explains an absent key.
pub fn lost_acknowledged_writes(
    history: &History,
    finals: &BTreeMap<Vec<u8>, Option<(Vec<u8>, u64)>>,
) -> Vec<Operation> {
    let mut lost = Vec::new();
    for op in history.operations() {
        let Outcome::Written { version } = op.outcome else {
            continue;
        };
        let Some(fin) = finals.get(op.command.key()) else {
            continue;
        };
        let survived = match fin {
            Some((_, final_version)) => *final_version >= version,
            None => history.operations().iter().any(|other| {
                let deletes = matches!(
                    other.command,
                    Command::Delete { .. } | Command::CasDelete { .. }
                ) && matches!(other.outcome, Outcome::Deleted | Outcome::Unknown);
                // The delete may be ordered after the write unless it completed before
                // the write was invoked (an unknown outcome may take effect any time).
                deletes
                    && other.command.key() == op.command.key()
                    && (other.outcome == Outcome::Unknown
                        || other.completed_ns.is_none_or(|c| c >= op.invoked_ns))
            }),
        };
        if !survived {
            lost.push(op.clone());
        }
    }
    lost
}
