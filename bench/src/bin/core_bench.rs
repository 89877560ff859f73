//! `core-bench`: the Raft core alone, without I/O. Three in-memory `RaftCore`s in one
//! thread, messages handed over in-process, storage in `MemStorage`.
//!
//! Each Ready cycle:
//! 1. the leader takes `batch` proposals of 256 bytes;
//! 2. each node in turn steps the messages waiting for it, then handles its Ready in the
//!    documented order (send `messages`, persist into `MemStorage`, send `persisted_messages`,
//!    apply, `advance`);
//! 3. proposals the leader now knows committed are recorded: latency is from the cycle that
//!    proposed them to the cycle in which the leader's commit index passed them.
//!
//! Reported per batch size: committed proposals per second, latency p50/p99/p99.9/max
//! (HDR histogram), and heap allocations per committed entry on the steady path, counted by
//! a global allocator wrapper. The payload is allocated once and shared (`Payload` is an
//! `Arc`), so allocation counts are the core's and the in-process transport's, not the
//! client's buffer.
//!
//! Usage: `core-bench [--proposals N] [--batches 1,64]`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tessera_core::{
    ConfState, Config, LogIndex, MemStorage, Message, NodeId, Payload, RaftCore, Role,
};

/// Counts every allocation (and reallocation) made through the global allocator.
struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the wrapper only
// increments a counter.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const NODES: usize = 3;
const PAYLOAD_BYTES: usize = 256;
/// Compact every node's log every this many cycles, so memory stays bounded.
const COMPACT_EVERY_CYCLES: u64 = 1024;

struct Cluster {
    nodes: Vec<RaftCore<MemStorage>>,
    /// Messages waiting for each node (index = id - 1); capacity is reused across cycles.
    inboxes: Vec<Vec<Message>>,
    inbox_scratch: Vec<Message>,
}

fn node_index(id: NodeId) -> usize {
    (id.0 - 1) as usize
}

impl Cluster {
    fn new() -> Cluster {
        let voters = ConfState::with_voters((1..=NODES as u64).map(NodeId));
        let nodes = (1..=NODES as u64)
            .map(|id| {
                let mut config = Config::new(NodeId(id));
                config.uncommitted_entries_max = 1 << 20;
                RaftCore::new(config, MemStorage::new_with_conf(voters.clone()))
                    .expect("valid config")
            })
            .collect();
        Cluster {
            nodes,
            inboxes: (0..NODES).map(|_| Vec::new()).collect(),
            inbox_scratch: Vec::new(),
        }
    }

    /// Step 2 of the module docs for every node.
    fn cycle(&mut self) {
        for index in 0..NODES {
            std::mem::swap(&mut self.inbox_scratch, &mut self.inboxes[index]);
            let node = &mut self.nodes[index];
            for message in self.inbox_scratch.drain(..) {
                node.step(message);
            }
            if !node.has_ready() {
                continue;
            }
            let mut ready = node.ready();
            let advance = ready.advance();
            for message in ready.messages.drain(..) {
                self.inboxes[node_index(message.to)].push(message);
            }
            let storage = node.storage_mut();
            if let Some(snapshot) = ready.snapshot.take() {
                storage.apply_snapshot(snapshot);
            }
            storage.append(&ready.entries);
            if let Some(hard_state) = ready.hard_state {
                storage.set_hard_state(hard_state);
            }
            for message in ready.persisted_messages.drain(..) {
                self.inboxes[node_index(message.to)].push(message);
            }
            node.advance(advance);
        }
    }

    fn elect_node_1(&mut self) {
        self.nodes[0].campaign();
        for _ in 0..100 {
            self.cycle();
            let leader = &self.nodes[0];
            if leader.role() == Role::Leader && leader.committed() >= leader.last_index() {
                return;
            }
        }
        panic!("node 1 was not elected within 100 cycles");
    }

    /// Snapshots every node at the index all have applied, dropping the log before it.
    fn compact(&mut self) {
        let applied = self.nodes.iter().map(|n| n.applied()).min().unwrap();
        for node in &mut self.nodes {
            let conf = node.conf_state().clone();
            node.storage_mut()
                .create_snapshot(applied, conf, Vec::new());
        }
    }
}

struct Outcome {
    committed: u64,
    elapsed: Duration,
    latency_ns: Histogram<u64>,
    allocations: u64,
    cycles: u64,
}

/// Runs `proposals` proposals in batches of `batch` per cycle, after a warm-up.
fn run(batch: u64, proposals: u64) -> Outcome {
    let mut cluster = Cluster::new();
    cluster.elect_node_1();
    let payload: Payload = vec![0xA5u8; PAYLOAD_BYTES].into();
    let mut latency_ns = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    // Batches in flight: (last index of the batch, proposals in it, when proposed).
    let mut in_flight: std::collections::VecDeque<(LogIndex, u64, Instant)> =
        std::collections::VecDeque::with_capacity(1024);

    let warm_up = (proposals / 10).max(batch * 100);
    let mut proposed = 0u64;
    let mut committed = 0u64;
    let mut cycles = 0u64;
    let mut start = Instant::now();
    let mut allocations_at_start = ALLOCATIONS.load(Ordering::Relaxed);
    let mut cycles_at_start = 0;
    let mut measuring = false;
    while committed < warm_up + proposals {
        if !measuring && committed >= warm_up {
            measuring = true;
            latency_ns.reset();
            committed = warm_up;
            start = Instant::now();
            allocations_at_start = ALLOCATIONS.load(Ordering::Relaxed);
            cycles_at_start = cycles;
        }
        if proposed < warm_up + proposals {
            let now = Instant::now();
            let mut last = LogIndex(0);
            for _ in 0..batch {
                last = cluster.nodes[0]
                    .propose(payload.clone())
                    .expect("the leader takes proposals");
            }
            proposed += batch;
            in_flight.push_back((last, batch, now));
        }
        cluster.cycle();
        cycles += 1;
        let leader_commit = cluster.nodes[0].committed();
        let now = Instant::now();
        while let Some(&(last, count, at)) = in_flight.front() {
            if last > leader_commit {
                break;
            }
            in_flight.pop_front();
            let nanos = now.duration_since(at).as_nanos() as u64;
            latency_ns.record_n(nanos.max(1), count).unwrap();
            committed += count;
        }
        if cycles.is_multiple_of(COMPACT_EVERY_CYCLES) {
            cluster.compact();
        }
    }
    Outcome {
        committed: proposals,
        elapsed: start.elapsed(),
        latency_ns,
        allocations: ALLOCATIONS.load(Ordering::Relaxed) - allocations_at_start,
        cycles: cycles - cycles_at_start,
    }
}

fn parse_args() -> (u64, Vec<u64>) {
    let mut proposals = 2_000_000;
    let mut batches = vec![1, 64];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--proposals" => proposals = value.parse().expect("--proposals N"),
            "--batches" => {
                batches = value
                    .split(',')
                    .map(|b| b.parse().expect("--batches 1,64"))
                    .collect()
            }
            other => {
                panic!("unknown flag {other}; usage: core-bench [--proposals N] [--batches 1,64]")
            }
        }
    }
    (proposals, batches)
}

fn main() {
    let (proposals, batches) = parse_args();
    println!(
        "core-bench: {NODES} in-memory nodes, one thread, {PAYLOAD_BYTES}-byte proposals, \
         {proposals} measured proposals per batch size (after a warm-up)"
    );
    println!(
        "{:>6} {:>14} {:>10} {:>10} {:>10} {:>10} {:>13} {:>13}",
        "batch",
        "committed/s",
        "p50_us",
        "p99_us",
        "p99.9_us",
        "max_us",
        "allocs/entry",
        "allocs/cycle"
    );
    for batch in batches {
        let outcome = run(batch, proposals);
        let per_second = outcome.committed as f64 / outcome.elapsed.as_secs_f64();
        let us = |q: f64| outcome.latency_ns.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{:>6} {:>14.0} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>13.3} {:>13.2}",
            batch,
            per_second,
            us(0.5),
            us(0.99),
            us(0.999),
            outcome.latency_ns.max() as f64 / 1000.0,
            outcome.allocations as f64 / outcome.committed as f64,
            outcome.allocations as f64 / outcome.cycles as f64
        );
    }
}
