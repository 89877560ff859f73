//! Raft's safety properties, checked incrementally as the simulated cluster runs.
//!
//! 1. Election Safety: at most one leader per term.
//! 2. Log Matching: an entry is identified by (index, term): every log that holds it holds
//!    the same payload, preceded by an entry of the same term. By induction the logs are
//!    identical up to it.
//! 3. Leader Completeness: a new leader's log holds every entry committed before it won.
//! 4. State Machine Safety: no two nodes apply different entries at one index (checked on
//!    the applied hash chain, so snapshots are covered too).
//!
//! Any violation panics with a description; the simulation driver adds the seed.

use std::collections::{BTreeMap, HashMap};

use tessera_core::{LogIndex, MemStorage, NodeId, RaftCore, Storage, Term};

#[derive(Default)]
pub struct Checker {
    leaders: HashMap<Term, NodeId>,
    /// (index, term) → (payload hash, term of the entry before it).
    entries: HashMap<(LogIndex, Term), (u64, Term)>,
    /// Committed entries: index → (term, payload hash).
    committed: BTreeMap<LogIndex, (Term, u64)>,
    /// The applied hash chain at each index, and the payload applied there.
    applied: HashMap<LogIndex, (Option<u64>, u64)>,
    /// Per node: the commit index up to which its log was recorded as committed.
    recorded_commit: HashMap<NodeId, LogIndex>,
    pub elections: u64,
}

impl Checker {
    /// Property 1 and 3, when `id` just became leader.
    pub fn on_leader(&mut self, id: NodeId, core: &RaftCore<MemStorage>) {
        let term = core.term();
        self.elections += 1;
        if let Some(other) = self.leaders.insert(term, id) {
            assert_eq!(
                other, id,
                "Election Safety: {other:?} and {id:?} both lead term {term:?}"
            );
        }
        let first = core.log().first_index();
        for (index, (committed_term, _)) in self.committed.range(first..) {
            let held = core.log().term_or_zero(*index);
            assert_eq!(
                held, *committed_term,
                "Leader Completeness: new leader {id:?} of {term:?} lacks committed entry {index:?}/{committed_term:?}"
            );
        }
    }

    /// Property 2, for an entry a node just persisted.
    pub fn on_persisted_entry(
        &mut self,
        id: NodeId,
        index: LogIndex,
        term: Term,
        hash: u64,
        prev_term: Term,
    ) {
        match self.entries.get(&(index, term)) {
            Some(&(known_hash, known_prev)) => {
                assert_eq!(
                    known_hash, hash,
                    "Log Matching: {id:?} holds a different payload at {index:?}/{term:?}"
                );
                assert_eq!(
                    known_prev, prev_term,
                    "Log Matching: {id:?} holds {index:?}/{term:?} after a different entry"
                );
            }
            None => {
                self.entries.insert((index, term), (hash, prev_term));
            }
        }
    }

    /// Property 4: the applied chain at `index` is the same on every node.
    pub fn on_applied(&mut self, id: NodeId, index: LogIndex, payload: Option<u64>, chain: u64) {
        match self.applied.get(&index) {
            Some(&(known_payload, known_chain)) => {
                assert_eq!(
                    known_chain, chain,
                    "State Machine Safety: {id:?} applied a different history up to {index:?}"
                );
                if let (Some(a), Some(b)) = (known_payload, payload) {
                    assert_eq!(
                        a, b,
                        "State Machine Safety: {id:?} applied another entry at {index:?}"
                    );
                }
            }
            None => {
                self.applied.insert(index, (payload, chain));
            }
        }
    }

    /// Records newly committed entries of `id` and checks they agree with earlier records,
    /// plus the core's own invariants.
    pub fn after_step(&mut self, id: NodeId, core: &RaftCore<MemStorage>) {
        if let Err(broken) = core.invariants() {
            panic!("invariant broken on {id:?}: {broken}");
        }
        let committed = core.committed();
        let recorded = self.recorded_commit.entry(id).or_default();
        let from = (*recorded).max(core.log().first_index().prev());
        if committed <= from {
            return;
        }
        *recorded = committed;
        let entries = core
            .log()
            .entries(from.next(), committed.next(), usize::MAX)
            .expect("committed entries readable");
        for entry in entries {
            let record = (entry.term, super::cluster::mix(entry.term.0, entry.index.0));
            match self.committed.get(&entry.index) {
                Some(known) => assert_eq!(
                    known.0, record.0,
                    "two different entries committed at {:?} ({id:?} has term {:?}, earlier {:?})",
                    entry.index, record.0, known.0
                ),
                None => {
                    self.committed.insert(entry.index, record);
                }
            }
        }
        let storage_first = core.storage().first_index();
        debug_assert!(storage_first.0 >= 1);
    }

    /// The highest index known committed anywhere.
    pub fn max_committed(&self) -> LogIndex {
        self.committed
            .keys()
            .next_back()
            .copied()
            .unwrap_or(LogIndex(0))
    }
}
