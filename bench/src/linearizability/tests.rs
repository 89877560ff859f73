//! Hand-written histories: ones a correct store may produce, and the classic ways a broken
//! one fails. Times are in milliseconds; `None` = the client never heard back.

use super::*;

/// Builds a history in the order the lines are written.
#[derive(Default)]
struct Trace {
    history: History,
}

impl Trace {
    fn op(
        &mut self,
        client: u32,
        invoked_ms: u64,
        completed_ms: Option<u64>,
        command: Command,
        outcome: Outcome,
    ) -> &mut Self {
        self.history.push(
            ClientId(client),
            command,
            invoked_ms * 1_000_000,
            completed_ms.map(|ms| ms * 1_000_000),
            outcome,
        );
        self
    }

    fn check(&self) -> Report {
        check(&self.history, &CheckConfig::default())
    }
}

fn put(key: &str, value: &str) -> Command {
    Command::Put {
        key: key.into(),
        value: value.into(),
    }
}

fn delete(key: &str) -> Command {
    Command::Delete { key: key.into() }
}

fn get(key: &str) -> Command {
    Command::Get { key: key.into() }
}

fn cas(key: &str, expected_version: u64, value: &str) -> Command {
    Command::Cas {
        key: key.into(),
        expected_version,
        value: value.into(),
    }
}

fn cas_delete(key: &str, expected_version: u64) -> Command {
    Command::CasDelete {
        key: key.into(),
        expected_version,
    }
}

fn written(version: u64) -> Outcome {
    Outcome::Written { version }
}

fn read(value: &str, version: u64) -> Outcome {
    Outcome::Read {
        found: Some((value.into(), version)),
    }
}

fn absent() -> Outcome {
    Outcome::Read { found: None }
}

fn mismatch(current_version: u64) -> Outcome {
    Outcome::Mismatch { current_version }
}

#[track_caller]
fn assert_linearizable(trace: &Trace) {
    let report = trace.check();
    assert_eq!(report.verdict, Verdict::Linearizable, "{report}");
}

/// Asserts a violation and returns the ids of its minimal sub-history.
#[track_caller]
fn assert_violation(trace: &Trace) -> Vec<usize> {
    let report = trace.check();
    let Verdict::Violation(violation) = &report.verdict else {
        panic!("expected a violation, got {report}");
    };
    assert!(violation.minimal, "{report}");
    violation.operations.iter().map(|op| op.id.0).collect()
}

// Histories a correct store may produce.

#[test]
fn empty_history_is_linearizable() {
    assert_linearizable(&Trace::default());
}

#[test]
fn sequential_writes_and_reads() {
    let mut trace = Trace::default();
    trace
        .op(1, 0, Some(1), get("x"), absent())
        .op(1, 2, Some(3), put("x", "a"), written(4))
        .op(1, 4, Some(5), get("x"), read("a", 4))
        .op(1, 6, Some(7), delete("x"), Outcome::Deleted)
        .op(1, 8, Some(9), get("x"), absent())
        .op(1, 10, Some(11), put("x", "b"), written(9))
        .op(1, 12, Some(13), get("x"), read("b", 9));
    assert_linearizable(&trace);
}

#[test]
fn overlapping_writes_may_take_effect_in_either_order() {
    // Versions say b went first, then a, though a was invoked first.
    let mut trace = Trace::default();
    trace
        .op(1, 0, Some(10), put("x", "a"), written(3))
        .op(2, 5, Some(15), put("x", "b"), written(2))
        .op(3, 20, Some(30), get("x"), read("a", 3));
    assert_linearizable(&trace);
}

#[test]
fn reads_during_a_slow_write_switch_once_from_old_to_new() {
    let mut trace = Trace::default();
    trace
        .op(1, 0, Some(100), put("x", "a"), written(1))
        .op(2, 10, Some(20), get("x"), absent())
        .op(2, 30, Some(40), get("x"), read("a", 1))
        .op(3, 35, Some(45), get("x"), read("a", 1))
        .op(2, 50, Some(60), get("x"), read("a", 1));
    assert_linearizable(&trace);
}

#[test]
fn concurrent_reads_may_straddle_a_write() {
    // Two reads overlapping the write and each other: one saw it, one did not.
    let mut trace = Trace::default();
    trace
        .op(1, 0, Some(5), put("x", "a"), written(1))
        .op(1, 10, Some(30), put("x", "b"), written(2))
        .op(2, 12, Some(25), get("x"), read("b", 2))
        .op(3, 14, Some(28), get("x"), read("a", 1));
    assert_linearizable(&trace);
}

#[test]
fn unknown_write_that_took_effect_after_the_client_gave_up() {
    let mut trace = Trace::default();
    trace
        .op(1, 0, Some(10), put("x", "a"), written(1))
        .op(2, 20, Some(30), put("x", "b"), Outcome::Unknown)
        .op(3, 40, Some(50), get("x"), read("a", 1))
        .op(3, 60, Some(70), get("x"), read("b", 7));
    assert_linearizable(&trace);
}

#[test]
fn unknown_write_that_never_took_effect() {
    let mut trace = Trace::default();
    trace
        .op(1, 0, Some(10), put("x", "a"), written(1))
        .op(2, 20, None, put("x", "b"), Outcome::Unknown)
        .op(2, 25, None, delete("x"), Outcome::Unknown)
        .op(3, 40, Some(50), get("x"), read("a", 1))
        .op(3, 60, Some(70), put("x", "c"), written(5))
        .op(3, 80, Some(90), get("x"), read("c", 5));
    assert_linearizable(&trace);
}

#[test]
fn failed_operations_did_not_happen() {
    let mut trace = Trace::default();
    trace
        .op(1, 0, Some(10), put("x", "a"), written(1))
        .op(2, 20, Some(30), put("x", "b"), Outcome::Failed)
        .op(2, 31, Some(32), delete("x"), Outcome::Failed)
        .op(2, 33, Some(34), get("x"), Outcome::Failed)
        .op(2, 35, None, get("x"), Outcome::Unknown)
        .op(3, 40, Some(50), get("x"), read("a", 1));
    assert_linearizable(&trace);
}

#[test]
fn cas_chain_with_mismatches_and_compare_and_delete() {
    let mut trace = Trace::default();
    trace
        .op(1, 0, Some(10), cas("x", 0, "a"), written(1))
        .op(1, 20, Some(30), cas("x", 1, "b"), written(4))
        .op(2, 25, Some(35), cas("x", 1, "c"), mismatch(4))
        .op(2, 40, Some(50), cas_delete("x", 1), mismatch(4))
        .op(1, 40, Some(50), cas_delete("x", 4), Outcome::Deleted)
        .op(2, 60, Some(70), cas_delete("x", 0), mismatch(0))
        .op(2, 80, Some(90), cas("x", 0, "d"), written(9))
        .op(3, 100, Some(110), get("x"), read("d", 9));
    assert_linearizable(&trace);
}

#[test]
fn unknown_cas_pinned_by_a_later_cas() {
    // The unknown CAS happened; its version is only learnt from the next CAS's expectation.
    let mut trace = Trace::default();
    trace
        .op(1, 0, Some(10), put("x", "a"), written(2))
        .op(1, 20, Some(30), cas("x", 2, "b"), Outcome::Unknown)
        .op(2, 40, Some(50), cas("x", 6, "c"), written(8))
        .op(3, 60, Some(70), get("x"), read("c", 8));
    assert_linearizable(&trace);
}

#[test]
fn keys_are_independent() {
    let mut trace = Trace::default();
    trace
        .op(1, 0, Some(10), put("x", "a"), written(2))
        .op(2, 0, Some(10), put("y", "a"), written(1))
        .op(1, 20, Some(30), get("y"), read("a", 1))
        .op(2, 20, Some(30), get("x"), read("a", 2));
    assert_linearizable(&trace);
}

// Violations.

#[test]
fn stale_read_after_a_completed_write_is_caught() {
    // A follower served the read from its local state without ReadIndex.
    let mut trace = Trace::default();
    trace
        .op(1, 0, Some(10), put("x", "a"), written(1))
        .op(9, 1, Some(2), put("y", "z"), written(2))
        .op(2, 12, Some(14), get("x"), read("a", 1))
        .op(1, 20, Some(30), put("x", "b"), written(3))
        .op(3, 32, Some(34), get("y"), read("z", 2))
        .op(2, 40, Some(50), get("x"), read("a", 1))
        .op(2, 60, Some(70), get("x"), read("b", 3));
    // The minimal sub-history keeps both writes: the stale read and the one it missed.
    assert_eq!(assert_violation(&trace), vec![0, 3, 5]);
}

#[test]
fn read_of_a_never_written_value_is_caught() {
    let mut trace = Trace::default();
    trace.op(1, 0, Some(10), put("x", "a"), written(1));
    trace.op(2, 20, Some(30), get("x"), read("ghost", 1));
    // The put stays: it wrote the version the read reports.
    assert_eq!(assert_violation(&trace), vec![0, 1]);
}

#[test]
fn lost_acknowledged_write_is_caught() {
    let mut trace = Trace::default();
    trace
        .op(1, 0, Some(10), put("x", "a"), written(1))
        .op(2, 20, Some(30), get("x"), read("a", 1))
        .op(1, 40, Some(50), put("x", "b"), written(2))
        .op(2, 60, Some(70), get("x"), read("a", 1));
    assert_eq!(assert_violation(&trace), vec![0, 2, 3]);
}

#[test]
fn acknowledged_write_read_as_absent_is_caught() {
    let mut trace = Trace::default();
    trace
        .op(1, 0, Some(10), put("x", "a"), written(1))
        .op(2, 20, Some(30), get("x"), absent());
    assert_eq!(assert_violation(&trace), vec![0, 1]);
}

#[test]
fn versions_going_backwards_are_caught() {
    let mut trace = Trace::default();
    trace.op(1, 0, Some(10), put("x", "a"), written(5));
    trace.op(1, 20, Some(30), put("x", "b"), written(3));
    assert_eq!(assert_violation(&trace), vec![0, 1]);
}

#[test]
fn version_reused_after_delete_is_caught() {
    let mut trace = Trace::default();
    trace
        .op(1, 0, Some(10), put("x", "a"), written(5))
        .op(1, 20, Some(30), delete("x"), Outcome::Deleted)
        .op(1, 40, Some(50), put("x", "b"), written(5));
    assert_violation(&trace);
}

#[test]
fn read_reporting_a_different_version_than_written_is_caught() {
    let mut trace = Trace::default();
    trace
        .op(1, 0, Some(10), put("x", "a"), written(5))
        .op(2, 20, Some(30), get("x"), read("a", 6));
    assert_violation(&trace);
}

#[test]
fn two_cas_on_the_same_version_both_succeeding_is_caught() {
    let mut trace = Trace::default();
    trace
        .op(1, 0, Some(10), put("x", "a"), written(1))
        .op(2, 20, Some(40), cas("x", 1, "b"), written(2))
        .op(3, 21, Some(41), cas("x", 1, "c"), written(3));
    assert_eq!(assert_violation(&trace), vec![0, 1, 2]);
}

#[test]
fn mismatch_with_a_wrong_current_version_is_caught() {
    let mut trace = Trace::default();
    trace.op(1, 0, Some(10), put("x", "a"), written(3));
    trace.op(2, 20, Some(30), cas("x", 1, "b"), mismatch(2));
    assert_violation(&trace);
}

#[test]
fn mismatch_reporting_the_expected_version_is_caught() {
    let mut trace = Trace::default();
    trace.op(1, 0, Some(10), put("x", "a"), written(3));
    trace.op(2, 20, Some(30), cas("x", 3, "b"), mismatch(3));
    assert_violation(&trace);
}

#[test]
fn read_of_an_unknown_write_invoked_after_the_read_completed_is_caught() {
    let mut trace = Trace::default();
    trace.op(1, 0, Some(10), get("x"), read("b", 2));
    trace.op(2, 20, None, put("x", "b"), Outcome::Unknown);
    assert_violation(&trace);
}

#[test]
fn violation_is_printed_with_times() {
    let mut trace = Trace::default();
    trace
        .op(1, 0, Some(10), put("x", "a"), written(1))
        .op(1, 20, Some(30), put("x", "b"), written(2))
        .op(2, 40, None, put("x", "c"), Outcome::Unknown)
        .op(2, 41, Some(50), get("x"), read("a", 1));
    let report = trace.check();
    let expected = "\
NOT linearizable (1 keys, 4 operations, 4 states explored)
key \"x\": no linearization of these 3 of its 4 operations, whichever of its other writes took effect (minimal)
    op  client  invoked_ms  completed_ms  command        outcome
    #0  c1           0.000        10.000  put \"x\" = \"a\"  ok v1
    #1  c1          20.000        30.000  put \"x\" = \"b\"  ok v2
    #3  c2          41.000        50.000  get \"x\"        ok \"a\" v1
";
    assert_eq!(report.to_string(), expected, "\n{report}");
}

#[test]
fn search_budget_exhausted_is_inconclusive() {
    // Twenty concurrent unknown puts and a read no subset of them explains.
    let mut trace = Trace::default();
    for client in 0..20 {
        trace.op(
            client,
            0,
            None,
            put("x", &client.to_string()),
            Outcome::Unknown,
        );
    }
    trace.op(99, 1, Some(2), get("x"), read("nobody", 1));
    let config = CheckConfig {
        states_per_key_max: 1_000,
        ..CheckConfig::default()
    };
    let report = check(&trace.history, &config);
    assert_eq!(
        report.verdict,
        Verdict::Inconclusive {
            keys: vec![b"x".to_vec()]
        },
        "{report}"
    );
}

#[test]
fn recorder_history_from_concurrent_clients_against_an_atomic_store_is_linearizable() {
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// Version counter and items.
    type Store = (u64, HashMap<Vec<u8>, (Vec<u8>, u64)>);
    // A store that applies each operation atomically, between invoke and complete.
    let store: Mutex<Store> = Mutex::new((0, HashMap::new()));
    let recorder = Recorder::new();
    std::thread::scope(|scope| {
        for client in 0..4u32 {
            let (store, recorder) = (&store, &recorder);
            scope.spawn(move || {
                for round in 0..50u32 {
                    let key = vec![b'a' + (round % 3) as u8];
                    let command = if (round + client) % 2 == 0 {
                        Command::Get { key: key.clone() }
                    } else {
                        Command::Put {
                            key: key.clone(),
                            value: format!("{client}-{round}").into_bytes(),
                        }
                    };
                    let id = recorder.invoke(ClientId(client), command.clone());
                    let outcome = {
                        let mut store = store.lock().unwrap();
                        match command {
                            Command::Put { key, value } => {
                                store.0 += 1;
                                let version = store.0;
                                store.1.insert(key, (value, version));
                                Outcome::Written { version }
                            }
                            _ => Outcome::Read {
                                found: store.1.get(&key).cloned(),
                            },
                        }
                    };
                    recorder.complete(id, outcome);
                }
            });
        }
    });
    let history = recorder.history();
    assert_eq!(history.len(), 200);
    let report = check(&history, &CheckConfig::default());
    assert_eq!(report.verdict, Verdict::Linearizable, "{report}");
    assert_eq!(report.operations_checked, 200);
}

#[test]
#[should_panic(expected = "completed twice")]
fn recorder_refuses_a_second_completion() {
    let recorder = Recorder::new();
    let id = recorder.invoke(ClientId(1), get("x"));
    recorder.complete(id, absent());
    recorder.complete(id, absent());
}

#[test]
#[should_panic(expected = "cannot answer")]
fn history_refuses_an_outcome_that_does_not_fit_the_command() {
    History::new().push(ClientId(1), get("x"), 0, Some(1), written(1));
}
