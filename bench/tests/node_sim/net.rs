//! The simulated network: every Raft message, client request and reply is an envelope with a
//! delivery time. Loss (of anything) and duplication (of Raft messages) are decided when a
//! message is sent; reordering comes
//! from random delays (and occasional long ones); partitions (symmetric or one-way) are
//! checked at delivery, so a partition also cuts what is already in flight. Clients reach
//! every node (their links only lose and delay).

use std::collections::{BTreeMap, BTreeSet};

use tessera_core::rng::SplitMix64;
use tessera_core::{Message, NodeId, RegionId};
use tessera_node::request::{KvRequest, KvResult};

/// Who sends or receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Endpoint {
    Node(NodeId),
    Client(usize),
}

#[derive(Clone, Debug)]
pub enum Payload {
    Raft(RegionId, Message),
    Request { attempt: u64, request: KvRequest },
    Reply { attempt: u64, result: KvResult },
}

#[derive(Clone, Debug)]
pub struct Envelope {
    pub from: Endpoint,
    pub to: Endpoint,
    pub payload: Payload,
}

/// Fault rates in permille, and delays in steps.
#[derive(Clone, Copy, Debug)]
pub struct NetFaults {
    pub drop_permille: u64,
    pub duplicate_permille: u64,
    pub long_delay_permille: u64,
    pub delay_steps_max: u64,
    pub long_delay_steps_max: u64,
}

impl NetFaults {
    pub fn faulty() -> NetFaults {
        NetFaults {
            drop_permille: 40,
            duplicate_permille: 20,
            long_delay_permille: 30,
            delay_steps_max: 4,
            long_delay_steps_max: 40,
        }
    }

    pub fn healed() -> NetFaults {
        NetFaults {
            drop_permille: 0,
            duplicate_permille: 0,
            long_delay_permille: 0,
            delay_steps_max: 2,
            long_delay_steps_max: 2,
        }
    }
}

pub struct Network {
    pub faults: NetFaults,
    /// Directed node pairs whose messages are dropped at delivery.
    blocked: BTreeSet<(NodeId, NodeId)>,
    /// (delivery step, sequence number) → envelope.
    in_flight: BTreeMap<(u64, u64), Envelope>,
    next_seq: u64,
    pub sent: u64,
    pub dropped: u64,
    pub duplicated: u64,
}

impl Network {
    pub fn new() -> Network {
        Network {
            faults: NetFaults::faulty(),
            blocked: BTreeSet::new(),
            in_flight: BTreeMap::new(),
            next_seq: 0,
            sent: 0,
            dropped: 0,
            duplicated: 0,
        }
    }

    pub fn send(&mut self, rng: &mut SplitMix64, now: u64, envelope: Envelope) {
        self.sent += 1;
        if rng.range(0, 1000) < self.faults.drop_permille {
            self.dropped += 1;
            return;
        }
        // Only Raft messages are duplicated: a client's request sent twice would be two
        // operations, and the history records one.
        let between_nodes = matches!(
            (envelope.from, envelope.to),
            (Endpoint::Node(_), Endpoint::Node(_))
        );
        if between_nodes && rng.range(0, 1000) < self.faults.duplicate_permille {
            self.duplicated += 1;
            self.schedule(rng, now, envelope.clone());
        }
        self.schedule(rng, now, envelope);
    }

    fn schedule(&mut self, rng: &mut SplitMix64, now: u64, envelope: Envelope) {
        let max = if rng.range(0, 1000) < self.faults.long_delay_permille {
            self.faults.long_delay_steps_max
        } else {
            self.faults.delay_steps_max
        };
        let at = now + rng.range(1, max + 1);
        self.next_seq += 1;
        self.in_flight.insert((at, self.next_seq), envelope);
    }

    /// Everything due at `now`, in delivery order, minus what a partition cuts.
    pub fn due(&mut self, now: u64) -> Vec<Envelope> {
        let later = self.in_flight.split_off(&(now + 1, 0));
        let due = std::mem::replace(&mut self.in_flight, later);
        due.into_values()
            .filter(|e| match (e.from, e.to) {
                (Endpoint::Node(a), Endpoint::Node(b)) => !self.blocked.contains(&(a, b)),
                _ => true,
            })
            .collect()
    }

    /// Cuts `side` from the other nodes, both ways.
    pub fn partition(&mut self, nodes: &[NodeId], side: &[NodeId]) {
        for a in nodes {
            for b in nodes {
                if side.contains(a) != side.contains(b) {
                    self.blocked.insert((*a, *b));
                }
            }
        }
    }

    /// Drops messages from `from` to `to` only.
    pub fn block_one_way(&mut self, from: NodeId, to: NodeId) {
        self.blocked.insert((from, to));
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
    }
}
