//! Shrinking a non-linearizable history of one key to a minimal sub-history that still fails.
//!
//! "Still fails" is decided by the caller; `check` asks it of the sub-history together with
//! the key's other writes weakened to "may or may not have happened" (leaving a write out
//! entirely could make a correct history fail: a read of absent needs the delete before it).
//!
//! Removal proceeds like delta debugging: first chunks of half the operations, then of a
//! quarter, and so on down to single operations, repeated until no single operation can go
//! (the result is 1-minimal: removing any one operation makes it linearizable, or unexplained).
//!
//! "Unexplained" is the one rule beyond "still fails", for readability: a sub-history keeps, for every value or
//! version one of its operations observes, at least one operation that wrote it, if the full
//! history had one. Otherwise a stale read would shrink to the read alone ("a value nobody
//! wrote"), which is true but hides the write it read.

use super::history::{Command, Operation, Outcome};

/// A shrunk sub-history and whether it is known to be 1-minimal (false when the check budget
/// ran out first).
pub(super) struct Shrunk<'a> {
    pub(super) operations: Vec<&'a Operation>,
    pub(super) minimal: bool,
}

/// Shrinks `failing` (which `fails`) while it keeps failing. `fails` must be deterministic.
pub(super) fn shrink<'a>(
    failing: Vec<&'a Operation>,
    checks_max: usize,
    mut fails: impl FnMut(&[&Operation]) -> bool,
) -> Shrunk<'a> {
    let original = failing.clone();
    let mut current = failing;
    let mut checks = 0;
    let mut chunk = (current.len() / 2).max(1);
    loop {
        let mut removed_any = false;
        let mut start = 0;
        while start < current.len() {
            if checks >= checks_max {
                return Shrunk {
                    operations: current,
                    minimal: false,
                };
            }
            let end = (start + chunk).min(current.len());
            let candidate: Vec<&Operation> = current[..start]
                .iter()
                .chain(&current[end..])
                .copied()
                .collect();
            checks += 1;
            if explained(&candidate, &original) && fails(&candidate) {
                current = candidate;
                removed_any = true;
            } else {
                start = end;
            }
        }
        if chunk > 1 {
            chunk /= 2;
        } else if !removed_any {
            return Shrunk {
                operations: current,
                minimal: true,
            };
        }
    }
}

/// True if every value and version an operation of `candidate` observes is written by one of
/// its operations, or by none of `original`'s.
fn explained(candidate: &[&Operation], original: &[&Operation]) -> bool {
    candidate.iter().all(|operation| {
        let (value, version) = observed(operation);
        let value_ok = value.is_none_or(|value| {
            let writes = |op: &Operation| written_value(op) == Some(value);
            candidate.iter().any(|op| writes(op)) || !original.iter().any(|op| writes(op))
        });
        let version_ok = version.is_none_or(|version| {
            let writes = |op: &Operation| written_version(op) == Some(version);
            candidate.iter().any(|op| writes(op)) || !original.iter().any(|op| writes(op))
        });
        value_ok && version_ok
    })
}

/// The value and the (non-zero) version an operation reports the key to hold.
fn observed(operation: &Operation) -> (Option<&[u8]>, Option<u64>) {
    let nonzero = |version: u64| (version != 0).then_some(version);
    match (&operation.command, &operation.outcome) {
        (
            Command::Get { .. },
            Outcome::Read {
                found: Some((value, version)),
            },
        ) => (Some(value), nonzero(*version)),
        (
            Command::Cas { .. } | Command::CasDelete { .. },
            Outcome::Mismatch { current_version },
        ) => (None, nonzero(*current_version)),
        (
            Command::Cas {
                expected_version, ..
            }
            | Command::CasDelete {
                expected_version, ..
            },
            _,
        ) => (None, nonzero(*expected_version)),
        _ => (None, None),
    }
}

fn written_value(operation: &Operation) -> Option<&[u8]> {
    match &operation.command {
        Command::Put { value, .. } | Command::Cas { value, .. } => Some(value),
        _ => None,
    }
}

fn written_version(operation: &Operation) -> Option<u64> {
    match operation.outcome {
        Outcome::Written { version } => Some(version),
        _ => None,
    }
}
