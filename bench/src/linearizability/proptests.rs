//! Property tests: histories generated from a sequential execution of a reference store are
//! linearizable by construction, and the checker must accept them; corrupting one read in a
//! way no linearization can explain must be rejected.
//!
//! Construction: operation `i` takes effect at `t_i = SPACING_NS * (i + 1)`, in the order
//! generated, against a reference store with a per-Region version counter (so versions skip).
//! Its recorded interval is `[t_i - before, t_i + after]`, so whenever one operation completed
//! before another was invoked, it also took effect first: the execution is a witness.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

const SPACING_NS: u64 = 20;

/// One generated operation, before execution.
#[derive(Clone, Debug)]
struct Plan {
    key: u8,
    kind: u8,
    value: u8,
    /// Cas/CasDelete: expect the current version (true) or a stale one.
    expect_current: bool,
    /// How the client hears back: 0..=16 definite, 17 unknown-applied, 18 unknown-not-applied,
    /// 19 failed.
    fate: u8,
    before_ns: u64,
    after_ns: u64,
    /// Versions the counter skips before this operation (other keys of the Region).
    skip: u64,
}

fn plan(concurrent: bool, faults: bool) -> impl Strategy<Value = Plan> {
    let jitter_ns_max = if concurrent {
        3 * SPACING_NS
    } else {
        SPACING_NS / 2 - 1
    };
    let fate_max: u8 = if faults { 19 } else { 16 };
    (
        0..3u8,
        0..5u8,
        0..4u8,
        any::<bool>(),
        0..=fate_max,
        0..=jitter_ns_max,
        0..=jitter_ns_max,
        0..3u64,
    )
        .prop_map(
            |(key, kind, value, expect_current, fate, before_ns, after_ns, skip)| Plan {
                key,
                kind,
                value,
                expect_current,
                fate,
                before_ns,
                after_ns,
                skip,
            },
        )
}

/// The reference store: one Region's version counter and its keys.
#[derive(Default)]
struct Store {
    counter: u64,
    items: HashMap<Vec<u8>, (Vec<u8>, u64)>,
}

impl Store {
    fn version(&self, key: &[u8]) -> u64 {
        self.items.get(key).map_or(0, |(_, version)| *version)
    }

    fn next_version(&mut self, skip: u64) -> u64 {
        self.counter += 1 + skip;
        self.counter
    }

    /// Applies `command` and returns the answer.
    fn apply(&mut self, command: &Command, skip: u64) -> Outcome {
        let current = self.version(command.key());
        match command {
            Command::Get { key } => Outcome::Read {
                found: self.items.get(key).cloned(),
            },
            Command::Put { key, value } => self.write(key, value, skip),
            Command::Cas {
                key,
                expected_version,
                value,
            } => {
                if *expected_version == current {
                    self.write(key, value, skip)
                } else {
                    Outcome::Mismatch {
                        current_version: current,
                    }
                }
            }
            Command::Delete { key } => self.delete(key, skip),
            Command::CasDelete {
                key,
                expected_version,
            } => {
                if *expected_version == current && current != 0 {
                    self.delete(key, skip)
                } else {
                    Outcome::Mismatch {
                        current_version: current,
                    }
                }
            }
        }
    }

    fn write(&mut self, key: &[u8], value: &[u8], skip: u64) -> Outcome {
        let version = self.next_version(skip);
        self.items.insert(key.to_vec(), (value.to_vec(), version));
        Outcome::Written { version }
    }

    fn delete(&mut self, key: &[u8], skip: u64) -> Outcome {
        self.next_version(skip);
        self.items.remove(key);
        Outcome::Deleted
    }
}

/// Executes the plans in order and records the history they produce.
fn execute(plans: &[Plan]) -> History {
    let mut store = Store::default();
    let mut history = History::new();
    for (index, plan) in plans.iter().enumerate() {
        let key = vec![b'k', b'0' + plan.key];
        let value = vec![b'v', b'0' + plan.value];
        let current = store.version(&key);
        let expected_version = if plan.expect_current {
            current
        } else {
            current + 1 + plan.skip
        };
        let command = match plan.kind {
            0 => Command::Get { key },
            1 => Command::Put { key, value },
            2 => Command::Delete { key },
            3 => Command::Cas {
                key,
                expected_version,
                value,
            },
            _ => Command::CasDelete {
                key,
                expected_version,
            },
        };
        let effect_ns = SPACING_NS * (index as u64 + 1);
        let invoked_ns = effect_ns.saturating_sub(plan.before_ns);
        let completed_ns = Some(effect_ns + plan.after_ns);
        let (outcome, completed_ns) = match plan.fate {
            0..=16 => (store.apply(&command, plan.skip), completed_ns),
            17 => {
                store.apply(&command, plan.skip);
                (
                    Outcome::Unknown,
                    completed_ns.filter(|_| plan.value % 2 == 0),
                )
            }
            18 => (Outcome::Unknown, None),
            _ => (Outcome::Failed, completed_ns),
        };
        history.push(
            ClientId(index as u32),
            command,
            invoked_ns,
            completed_ns,
            outcome,
        );
    }
    history
}

/// A copy of `history` with operation `index`'s outcome replaced.
fn with_outcome(history: &History, index: usize, outcome: Outcome) -> History {
    let mut mutated = History::new();
    for operation in history.operations() {
        let outcome = if operation.id.0 == index {
            outcome.clone()
        } else {
            operation.outcome.clone()
        };
        mutated.push(
            operation.client,
            operation.command.clone(),
            operation.invoked_ns,
            operation.completed_ns,
            outcome,
        );
    }
    mutated
}

/// Indexes of the reads that were answered.
fn answered_reads(history: &History) -> Vec<usize> {
    history
        .operations()
        .iter()
        .filter(|operation| matches!(operation.outcome, Outcome::Read { .. }))
        .map(|operation| operation.id.0)
        .collect()
}

proptest! {
    #[test]
    fn executions_with_concurrency_and_faults_are_accepted(
        plans in prop::collection::vec(plan(true, true), 0..60)
    ) {
        let history = execute(&plans);
        let report = check(&history, &CheckConfig::default());
        prop_assert_eq!(&report.verdict, &Verdict::Linearizable, "{}", report);
    }

    /// Without concurrency or unknown outcomes the order and every state are forced, so any
    /// other answer to a read is a violation.
    #[test]
    fn a_changed_read_without_concurrency_is_rejected(
        plans in prop::collection::vec(plan(false, false), 1..40),
        pick in any::<prop::sample::Index>(),
        mutation in 0..3u8,
        delta in 1..5u64,
    ) {
        let history = execute(&plans);
        let reads = answered_reads(&history);
        prop_assume!(!reads.is_empty());
        let index = reads[pick.index(reads.len())];
        let Outcome::Read { found } = &history.operations()[index].outcome else {
            unreachable!()
        };
        let found = match (found, mutation) {
            (Some((value, version)), 0) => Some((value.clone(), version + delta)),
            (Some((value, version)), 1) if *version > delta => {
                Some((value.clone(), version - delta))
            }
            (Some(_), _) => None,
            (None, 0) => Some((b"v0".to_vec(), delta)),
            (None, _) => Some((b"never written".to_vec(), delta)),
        };
        let mutated = with_outcome(&history, index, Outcome::Read { found });
        let report = check(&mutated, &CheckConfig::default());
        prop_assert!(report.verdict.is_violation(), "{}", report);
    }

    /// Even with concurrency and faults, a value no operation wrote cannot be read.
    #[test]
    fn a_read_of_a_never_written_value_is_rejected(
        plans in prop::collection::vec(plan(true, true), 1..60),
        pick in any::<prop::sample::Index>(),
    ) {
        let history = execute(&plans);
        let reads = answered_reads(&history);
        prop_assume!(!reads.is_empty());
        let index = reads[pick.index(reads.len())];
        // A version no write produced either, so the read alone is unexplained.
        let found = Some((b"never written".to_vec(), 1_000_000));
        let mutated = with_outcome(&history, index, Outcome::Read { found });
        let report = check(&mutated, &CheckConfig::default());
        let Verdict::Violation(violation) = &report.verdict else {
            panic!("expected a violation: {report}");
        };
        // The read alone is the minimal failing sub-history.
        prop_assert_eq!(violation.operations.len(), 1, "{}", report);
        prop_assert_eq!(violation.operations[0].id.0, index);
    }
}

/// A deterministic many-key history (xorshift-generated plans, no proptest shrinking): the
/// check must complete and accept it. Speed is not asserted.
#[test]
fn many_keys_and_hundreds_of_operations_check() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |bound: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound
    };
    let plans: Vec<Plan> = (0..600)
        .map(|_| Plan {
            key: next(40) as u8,
            kind: next(5) as u8,
            value: next(4) as u8,
            expect_current: next(4) != 0,
            fate: next(20) as u8,
            before_ns: next(4 * SPACING_NS),
            after_ns: next(4 * SPACING_NS),
            skip: next(3),
        })
        .collect();
    let history = execute(&plans);
    let report = check(&history, &CheckConfig::default());
    assert_eq!(report.verdict, Verdict::Linearizable, "{report}");
    assert_eq!(report.keys_checked, 40);
}

/// Found by `a_read_of_a_never_written_value_is_rejected`: shrinking by plain removal left
/// out the delete between a put and a CAS that saw the key absent, and reported that pair
/// (a failure of the sub-history only) instead of the corrupted read.
#[test]
fn shrinking_blames_the_corrupted_read_not_a_write_it_left_out() {
    let step = |kind, before_ns| Plan {
        key: 2,
        kind,
        value: 0,
        expect_current: false,
        fate: 0,
        before_ns,
        after_ns: 0,
        skip: 0,
    };
    let plans = [
        step(0, 0),
        step(0, 0),
        step(1, 20),
        step(0, 0),
        step(3, 0),
        step(3, 0),
        step(0, 3),
        step(2, 0),
        step(3, 0),
    ];
    let history = execute(&plans);
    assert_eq!(
        check(&history, &CheckConfig::default()).verdict,
        Verdict::Linearizable
    );
    let found = Some((b"never written".to_vec(), 1_000_000));
    let mutated = with_outcome(&history, 6, Outcome::Read { found });
    let report = check(&mutated, &CheckConfig::default());
    let Verdict::Violation(violation) = &report.verdict else {
        panic!("expected a violation: {report}");
    };
    let blamed: Vec<usize> = violation.operations.iter().map(|op| op.id.0).collect();
    assert_eq!(blamed, vec![6], "{report}");
}
