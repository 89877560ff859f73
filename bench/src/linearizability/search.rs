//! The search for a linearization of one key's operations (Wing & Gong, with Lowe's
//! memoization of visited configurations).
//!
//! A configuration is the set of operations already decided (a bitset) and the model state
//! they lead to. From a configuration, an operation may be linearized next when it is
//! pending and no pending required operation completed before it was invoked:
//! `invoked_ns <= min(completed_ns of every pending required operation)`. Entries are sorted
//! by invocation, so the candidates are a prefix of the pending entries. The search is a
//! depth-first walk over configurations; a configuration seen before (same set, same state)
//! cannot lead anywhere new and is skipped. It succeeds when every required operation is
//! linearized: optional ones may be left out.
//!
//! Optional operations come in two kinds:
//! 1. unknown outcomes: `completed_ns == u64::MAX`, they may take effect at any later time;
//! 2. writes the shrinker weakens (acknowledged, but treated as "may or may not have
//!    happened"): they keep their completion time. Once an operation invoked after that time
//!    is linearized, such a write can no longer take effect; it is marked decided ("dead"),
//!    so that configurations that differ only in which dead writes were skipped are one.

use std::collections::HashSet;
use std::time::Instant;

use super::model::{KeyState, Step};

/// One operation of a key, compiled for the search.
#[derive(Clone, Copy, Debug)]
pub(super) struct Entry {
    pub(super) invoked_ns: u64,
    /// `u64::MAX` for operations with unknown outcome: they may take effect at any time.
    pub(super) completed_ns: u64,
    /// False for operations that may be left out (unknown outcome, or weakened).
    pub(super) required: bool,
    pub(super) step: Step,
}

/// The limits on one search.
#[derive(Clone, Copy, Debug)]
pub(super) struct Budget {
    pub(super) states_max: u64,
    pub(super) deadline: Option<Instant>,
}

/// How one search ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum SearchResult {
    /// `order` lists entry indexes in linearization order.
    Linearizable {
        order: Vec<usize>,
        states: u64,
    },
    NotLinearizable {
        states: u64,
    },
    /// The budget ran out first.
    Inconclusive {
        states: u64,
    },
}

type Bits = Box<[u64]>;

struct Frame {
    /// Linearized or dead operations.
    linearized: Bits,
    state: KeyState,
    /// The next entry to try from this configuration.
    cursor: usize,
    /// The earliest completion among pending required entries: later invocations must wait.
    pending_completed_ns_min: u64,
    required_pending: usize,
    /// The entry linearized to reach this configuration (none for the root).
    via: Option<usize>,
}

/// Searches for a linearization of `entries`, which must be sorted by `invoked_ns`.
///
/// # Panics
/// If `entries` is not sorted by invocation time.
pub(super) fn search(entries: &[Entry], budget: Budget) -> SearchResult {
    assert!(
        entries
            .windows(2)
            .all(|w| w[0].invoked_ns <= w[1].invoked_ns),
        "entries must be sorted by invocation time"
    );
    let words = entries.len().div_ceil(64);
    let root = Frame {
        linearized: vec![0; words].into_boxed_slice(),
        state: KeyState::absent(),
        cursor: 0,
        pending_completed_ns_min: pending_completed_ns_min(entries, &vec![0; words]),
        required_pending: entries.iter().filter(|entry| entry.required).count(),
        via: None,
    };
    let mut seen: HashSet<(Bits, KeyState)> = HashSet::new();
    seen.insert((root.linearized.clone(), root.state));
    let mut states: u64 = 1;
    let mut stack = vec![root];
    while let Some(top) = stack.last_mut() {
        if top.required_pending == 0 {
            let order = stack.iter().filter_map(|frame| frame.via).collect();
            return SearchResult::Linearizable { order, states };
        }
        match next_configuration(entries, top, &mut seen) {
            Some(frame) => {
                states += 1;
                if states > budget.states_max || past_deadline(budget, states) {
                    return SearchResult::Inconclusive { states };
                }
                stack.push(frame);
            }
            None => {
                stack.pop();
            }
        }
    }
    SearchResult::NotLinearizable { states }
}

/// Advances `top`'s cursor to the next candidate that leads to an unseen configuration.
fn next_configuration(
    entries: &[Entry],
    top: &mut Frame,
    seen: &mut HashSet<(Bits, KeyState)>,
) -> Option<Frame> {
    while top.cursor < entries.len() {
        let index = top.cursor;
        top.cursor += 1;
        let entry = &entries[index];
        if entry.invoked_ns > top.pending_completed_ns_min {
            // Sorted by invocation: no later entry is a candidate either.
            top.cursor = entries.len();
            return None;
        }
        if is_set(&top.linearized, index) {
            continue;
        }
        let Some(state) = entry.step.apply(top.state) else {
            continue;
        };
        let mut linearized = top.linearized.clone();
        set(&mut linearized, index);
        mark_dead(entries, &mut linearized, entry.invoked_ns);
        if !seen.insert((linearized.clone(), state)) {
            continue;
        }
        return Some(Frame {
            pending_completed_ns_min: pending_completed_ns_min(entries, &linearized),
            linearized,
            state,
            cursor: 0,
            required_pending: top.required_pending - usize::from(entry.required),
            via: Some(index),
        });
    }
    None
}

/// Marks pending optional entries that completed before `invoked_ns` as decided: an
/// operation invoked then has been linearized, so they can no longer take effect.
fn mark_dead(entries: &[Entry], linearized: &mut [u64], invoked_ns: u64) {
    for (index, entry) in entries.iter().enumerate() {
        if !entry.required && entry.completed_ns < invoked_ns && !is_set(linearized, index) {
            set(linearized, index);
        }
    }
}

fn pending_completed_ns_min(entries: &[Entry], linearized: &[u64]) -> u64 {
    entries
        .iter()
        .enumerate()
        .filter(|(index, entry)| entry.required && !is_set(linearized, *index))
        .map(|(_, entry)| entry.completed_ns)
        .min()
        .unwrap_or(u64::MAX)
}

/// Reads the clock only every 4,096 states: cheap enough, and a deadline is coarse anyway.
fn past_deadline(budget: Budget, states: u64) -> bool {
    match budget.deadline {
        Some(deadline) => states.is_multiple_of(4096) && Instant::now() >= deadline,
        None => false,
    }
}

fn is_set(bits: &[u64], index: usize) -> bool {
    bits[index / 64] & (1 << (index % 64)) != 0
}

fn set(bits: &mut [u64], index: usize) {
    bits[index / 64] |= 1 << (index % 64);
}
