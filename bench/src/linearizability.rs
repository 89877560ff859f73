//! A linearizability checker for histories of Tessera's key-value operations, recorded by
//! chaos tests and simulations.
//!
//! # The model
//!
//! Each key holds a value and a version; version 0 means absent. Every write gives the key a
//! version strictly greater than any it held before (deletes included), taken from a
//! per-Region counter, so versions are not consecutive (see `node/src/kv/state.rs`). The
//! store starts empty. The operations and what a correct store may answer:
//!
//! | command                      | answers                                                    |
//! |------------------------------|------------------------------------------------------------|
//! | `Put{key, value}`            | `Written{version}` greater than the key's before           |
//! | `Delete{key}`                | `Deleted` (also for an absent key)                         |
//! | `Get{key}`                   | `Read{found}`: the latest write's value and version        |
//! | `Cas{key, expected, value}`  | `Written{version}` if the version equals `expected`, else `Mismatch{current}` with the true version |
//! | `CasDelete{key, expected}`   | `Deleted` if the key exists at version `expected`, else `Mismatch{current}` |
//!
//! Any command may also end `Failed` (the server says it was not applied) or `Unknown`
//! (timeout, lost connection).
//!
//! # The check
//!
//! A history is linearizable if each operation can be given a point in time between its
//! invocation and its completion such that, in that order, every answer is what the model
//! gives. Keys are independent in the model, so the history is split by key and each key is
//! checked alone (P-compositionality, as in Knossos and Porcupine); this keeps the search
//! exponential only in one key's concurrency, not the whole history's.
//!
//! Per key, the search is Wing & Gong's with Lowe's memoization (`search.rs`): a depth-first
//! walk that repeatedly picks an operation that may go next (no pending operation completed
//! before it was invoked), applies it to the model (`model.rs`), and backtracks when an answer
//! does not fit; a configuration (set of linearized operations, model state) seen before is
//! not explored twice.
//!
//! How outcomes are treated:
//! 1. `Failed` operations did not happen: dropped.
//! 2. `Get`s that failed or timed out constrain nothing: dropped.
//! 3. `Unknown` writes (put, delete, CAS, compare-and-delete) may take effect at any point
//!    after their invocation, even after the client gave up (their completion is +infinity),
//!    or never: the search may leave them out. An unknown write's new version is unknown; the
//!    first later operation that reports the key's version fixes it (it must exceed the
//!    versions before it).
//! 4. A `Mismatch` must report the key's version at the point it is linearized.
//!
//! # On a violation
//!
//! The first key (in key order) with no linearization is reported with a minimal failing
//! sub-history of its operations (`shrink.rs`): operations that have no linearization even if
//! each of the key's other writes may or may not have taken effect (within its interval), so
//! the sub-history is a proof against the full history and not an artifact of leaving writes
//! out. It keeps the writes of the values and versions it observes, for context. Printed with
//! times, e.g.:
//!
//! ```text
//! NOT linearizable (1 keys, 5 operations, 6 states explored)
//! key "x": no linearization of these 3 of its 5 operations, whichever of its other writes took effect (minimal)
//!     op  client  invoked_ms  completed_ms  command        outcome
//!     #0  c1           0.000         0.010  put "x" = "a"  ok v1
//!     #1  c2           0.020         0.030  put "x" = "b"  ok v2
//!     #2  c1           0.040         0.050  get "x"        ok "a" v1
//! ```
//!
//! # Limits
//!
//! - The search is exponential in the worst case (many concurrent operations on one key, and
//!   above all many `Unknown` writes, each of which may or may not have happened). It stops
//!   after [`CheckConfig::states_per_key_max`] configurations of one key, or
//!   [`CheckConfig::time_limit`], and answers [`Verdict::Inconclusive`] instead of hanging.
//!   Keep workloads to a few keys' worth of concurrent clients and bound client timeouts.
//! - Only single-key operations; scans are not modelled.
//! - The checker proves the history wrong, not the store: a linearizable history is only as
//!   good as the workload and faults that produced it.
//!
//! # Example
//!
//! ```
//! use tessera_bench::linearizability::{check, CheckConfig, ClientId, Command, Outcome, Recorder};
//!
//! let recorder = Recorder::new();
//! let key = b"k".to_vec();
//! let put = recorder.invoke(ClientId(1), Command::Put { key: key.clone(), value: b"a".to_vec() });
//! recorder.complete(put, Outcome::Written { version: 1 });
//! let get = recorder.invoke(ClientId(2), Command::Get { key });
//! recorder.complete(get, Outcome::Read { found: None }); // stale: the put had completed
//!
//! let report = check(&recorder.history(), &CheckConfig::default());
//! assert!(report.verdict.is_violation());
//! println!("{report}");
//! ```

mod history;
mod model;
mod search;
mod shrink;

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

pub use history::{ClientId, Command, History, OpId, Operation, Outcome, Recorder};

use history::Bytes;
use model::{Step, ValueId};
use search::{Budget, Entry, SearchResult};

/// The bounds on a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckConfig {
    /// Configurations explored for one key before that key is declared inconclusive. Memory
    /// grows with it: roughly (operations of the key / 8 + 64) bytes per configuration.
    pub states_per_key_max: u64,
    /// Wall-clock limit for the search over all keys (shrinking excluded); `None` relies on
    /// the state bound alone, which keeps the check deterministic.
    pub time_limit: Option<Duration>,
    /// Sub-histories checked while shrinking a violation.
    pub shrink_checks_max: usize,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            states_per_key_max: 1_000_000,
            time_limit: None,
            shrink_checks_max: 10_000,
        }
    }
}

/// What a check found, with the work it took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub verdict: Verdict,
    /// Keys searched (fewer than the history's when a violation ended the check early).
    pub keys_checked: usize,
    /// Operations of those keys that constrain the result (failed operations and unanswered
    /// reads excluded).
    pub operations_checked: usize,
    /// Configurations explored over all keys searched.
    pub states_explored: u64,
}

/// The answer of a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No linearization exists for one key.
    Violation(Box<Violation>),
    /// The search ran out of budget on these keys (and found no violation elsewhere).
    Inconclusive {
        keys: Vec<Vec<u8>>,
    },
}

impl Verdict {
    /// True for [`Verdict::Violation`].
    pub fn is_violation(&self) -> bool {
        matches!(self, Verdict::Violation(_))
    }
}

/// A key whose operations have no linearization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub key: Vec<u8>,
    /// Operations of the key, in invocation order, with no linearization even when each of the
    /// key's other writes may or may not have taken effect within its interval.
    pub operations: Vec<Operation>,
    /// True if removing any one of `operations` makes it linearizable (or leaves a read
    /// without the write it read); false if the shrink budget ran out first.
    pub minimal: bool,
    /// The key's operations in the history (failed ones and unanswered reads excluded).
    pub key_operations: usize,
}

/// Checks `history` for linearizability against the model in the module docs.
pub fn check(history: &History, config: &CheckConfig) -> Report {
    let deadline = config.time_limit.map(|limit| Instant::now() + limit);
    let mut report = Report {
        verdict: Verdict::Linearizable,
        keys_checked: 0,
        operations_checked: 0,
        states_explored: 0,
    };
    let mut inconclusive = Vec::new();
    for (key, operations) in partition_by_key(history) {
        let budget = Budget {
            states_max: config.states_per_key_max,
            deadline,
        };
        report.keys_checked += 1;
        report.operations_checked += operations.len();
        match search::search(&compile(&operations, &[]), budget) {
            SearchResult::Linearizable { states, .. } => report.states_explored += states,
            SearchResult::Inconclusive { states } => {
                report.states_explored += states;
                inconclusive.push(key.to_vec());
            }
            SearchResult::NotLinearizable { states } => {
                report.states_explored += states;
                let violation = shrink_violation(key, operations, config);
                report.verdict = Verdict::Violation(Box::new(violation));
                return report;
            }
        }
    }
    if !inconclusive.is_empty() {
        report.verdict = Verdict::Inconclusive { keys: inconclusive };
    }
    report
}

/// The operations that constrain the result, by key, each key's in invocation order.
fn partition_by_key(history: &History) -> BTreeMap<&[u8], Vec<&Operation>> {
    let mut by_key: BTreeMap<&[u8], Vec<&Operation>> = BTreeMap::new();
    for operation in history.operations() {
        let unanswered_read = matches!(operation.command, Command::Get { .. })
            && operation.outcome == Outcome::Unknown;
        if operation.outcome == Outcome::Failed || unanswered_read {
            continue;
        }
        by_key
            .entry(operation.command.key())
            .or_default()
            .push(operation);
    }
    for operations in by_key.values_mut() {
        operations.sort_by_key(|operation| (operation.invoked_ns, operation.id));
    }
    by_key
}

fn shrink_violation(key: &[u8], operations: Vec<&Operation>, config: &CheckConfig) -> Violation {
    let key_operations = operations.len();
    // Deterministic: the shrink relies on the state bound only, never the clock.
    let budget = Budget {
        states_max: config.states_per_key_max,
        deadline: None,
    };
    let all = operations.clone();
    let shrunk = shrink::shrink(operations, config.shrink_checks_max, |candidate| {
        let background: Vec<&Operation> = all
            .iter()
            .filter(|operation| !candidate.iter().any(|kept| kept.id == operation.id))
            .copied()
            .collect();
        matches!(
            search::search(&compile(candidate, &background), budget),
            SearchResult::NotLinearizable { .. }
        )
    });
    Violation {
        key: key.to_vec(),
        operations: shrunk.operations.into_iter().cloned().collect(),
        minimal: shrunk.minimal,
        key_operations,
    }
}

/// Compiles one key's operations (failed ones and unanswered reads already dropped) into
/// search entries sorted by invocation, interning values.
///
/// `background` operations are weakened: writes that took effect may or may not have (within
/// their interval), observations are left out. A weakened history admits every linearization
/// the full one does, so when it has none, neither has the full history.
fn compile(operations: &[&Operation], background: &[&Operation]) -> Vec<Entry> {
    let weakened = background
        .iter()
        .filter(|operation| takes_effect(operation))
        .map(|operation| (*operation, true));
    let mut all: Vec<(&Operation, bool)> = operations
        .iter()
        .map(|operation| (*operation, false))
        .chain(weakened)
        .collect();
    all.sort_by_key(|(operation, _)| (operation.invoked_ns, operation.id));
    let mut values: Vec<Vec<u8>> = Vec::new();
    let mut intern = |value: &[u8]| -> ValueId {
        let index = match values.iter().position(|known| known == value) {
            Some(index) => index,
            None => {
                values.push(value.to_vec());
                values.len() - 1
            }
        };
        ValueId::try_from(index).expect("fewer than 2^32 values per key")
    };
    all.into_iter()
        .map(|(operation, weakened)| {
            let step = compile_step(operation, &mut intern);
            let unknown = operation.outcome == Outcome::Unknown;
            Entry {
                invoked_ns: operation.invoked_ns,
                completed_ns: match (unknown, operation.completed_ns) {
                    (false, Some(completed_ns)) => completed_ns,
                    _ => u64::MAX,
                },
                required: !unknown && !weakened,
                step,
            }
        })
        .collect()
}

/// True for writes that took effect or may have.
fn takes_effect(operation: &Operation) -> bool {
    !matches!(operation.command, Command::Get { .. })
        && matches!(
            operation.outcome,
            Outcome::Written { .. } | Outcome::Deleted | Outcome::Unknown
        )
}

fn compile_step(operation: &Operation, intern: &mut impl FnMut(&[u8]) -> ValueId) -> Step {
    let reported = |outcome: &Outcome| match outcome {
        Outcome::Written { version } => Some(*version),
        _ => None,
    };
    match (&operation.command, &operation.outcome) {
        (Command::Put { value, .. }, outcome) => Step::Put {
            value: intern(value),
            version: reported(outcome),
        },
        (Command::Delete { .. }, _) => Step::Delete,
        (Command::Get { .. }, Outcome::Read { found }) => Step::Get {
            found: found
                .as_ref()
                .map(|(value, version)| (intern(value), *version)),
        },
        (
            Command::Cas {
                expected_version, ..
            }
            | Command::CasDelete {
                expected_version, ..
            },
            Outcome::Mismatch { current_version },
        ) => {
            let (expected_version, current_version) = (*expected_version, *current_version);
            if matches!(operation.command, Command::Cas { .. }) {
                Step::CasMismatch {
                    expected_version,
                    current_version,
                }
            } else {
                Step::CasDeleteMismatch {
                    expected_version,
                    current_version,
                }
            }
        }
        (
            Command::Cas {
                expected_version,
                value,
                ..
            },
            outcome,
        ) => Step::Cas {
            expected_version: *expected_version,
            value: intern(value),
            version: reported(outcome),
        },
        (
            Command::CasDelete {
                expected_version, ..
            },
            _,
        ) => Step::CasDelete {
            expected_version: *expected_version,
        },
        (Command::Get { .. }, outcome) => {
            unreachable!("unanswered reads are dropped before compiling, got {outcome:?}")
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match &self.verdict {
            Verdict::Linearizable => "linearizable",
            Verdict::Violation(_) => "NOT linearizable",
            Verdict::Inconclusive { .. } => "inconclusive",
        };
        write!(
            f,
            "{verdict} ({} keys, {} operations, {} states explored)",
            self.keys_checked, self.operations_checked, self.states_explored
        )?;
        match &self.verdict {
            Verdict::Linearizable => Ok(()),
            Verdict::Violation(violation) => write!(f, "\n{violation}"),
            Verdict::Inconclusive { keys } => {
                write!(f, ": search budget exhausted on keys")?;
                keys.iter().try_for_each(|key| write!(f, " {}", Bytes(key)))
            }
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {}: no linearization of these {} of its {} operations, whichever of its other \
             writes took effect ({})",
            Bytes(&self.key),
            self.operations.len(),
            self.key_operations,
            if self.minimal {
                "minimal"
            } else {
                "shrink budget exhausted"
            },
        )?;
        let commands: Vec<String> = self
            .operations
            .iter()
            .map(|op| op.command.to_string())
            .collect();
        let width = commands
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(0)
            .max("command".len());
        writeln!(
            f,
            "    op  client  invoked_ms  completed_ms  {:width$}  outcome",
            "command"
        )?;
        for (operation, command) in self.operations.iter().zip(&commands) {
            let completed = operation
                .completed_ns
                .map_or_else(|| "-".to_string(), format_ms);
            writeln!(
                f,
                "{:>6}  {:<6}  {:>10}  {:>12}  {command:width$}  {}",
                format!("#{}", operation.id.0),
                format!("c{}", operation.client.0),
                format_ms(operation.invoked_ns),
                completed,
                operation.outcome
            )?;
        }
        Ok(())
    }
}

fn format_ms(ns: u64) -> String {
    format!("{}.{:03}", ns / 1_000_000, (ns / 1_000) % 1_000)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
