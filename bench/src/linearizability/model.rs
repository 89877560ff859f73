//! The sequential model of one key, and operations compiled into steps against it.
//!
//! The model follows `node/src/kv/state.rs`: a key holds a value and a version, version 0
//! meaning absent; every write takes a number from a per-Region counter, so a key's version
//! is strictly greater than every version it held before, deletes included, but versions are
//! not consecutive. The model therefore does not know the next version; it checks that the
//! version a write reports exceeds [`KeyState::floor`].
//!
//! A write whose outcome is unknown gives the key a version nobody has seen yet
//! ([`Version::Unobserved`]: some number above `floor`). The first operation that reports the
//! key's version (a read, a CAS's expected version, a mismatch's current version) pins it.
//!
//! Invariants of a [`KeyState`]:
//! 1. `value == None` exactly when `version == Known(0)`;
//! 2. for `Known(v)`, `v <= floor`; for `Unobserved`, the true version is `> floor`.

/// A value, interned per key so states are small and cheap to hash.
pub(super) type ValueId = u32;

/// The key's current version as far as the model knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Version {
    Known(u64),
    /// Written by an operation with unknown outcome and not observed since: greater than the
    /// state's `floor`, otherwise free.
    Unobserved,
}

/// The state of one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct KeyState {
    value: Option<ValueId>,
    version: Version,
    /// A lower bound every version this key held so far is at or below (when `Known`), or
    /// strictly above which the current one lies (when `Unobserved`).
    floor: u64,
}

impl KeyState {
    /// An absent key that was never written (the store starts empty).
    pub(super) fn absent() -> Self {
        KeyState {
            value: None,
            version: Version::Known(0),
            floor: 0,
        }
    }

    /// The state with its version equal to `version`, if that is possible.
    fn observe(self, version: u64) -> Option<KeyState> {
        match self.version {
            Version::Known(current) => (current == version).then_some(self),
            Version::Unobserved => (version > self.floor).then_some(KeyState {
                version: Version::Known(version),
                floor: version,
                ..self
            }),
        }
    }

    /// Every later write's version must be strictly greater than this.
    fn next_floor(self) -> u64 {
        match self.version {
            Version::Known(_) => self.floor,
            // The current version is at least floor + 1, and the next must exceed it.
            Version::Unobserved => self.floor + 1,
        }
    }

    /// Writes `value`; `version` is the one the server reported, `None` if unknown.
    fn write(self, value: ValueId, version: Option<u64>) -> Option<KeyState> {
        let floor = self.next_floor();
        match version {
            Some(version) => (version > floor).then_some(KeyState {
                value: Some(value),
                version: Version::Known(version),
                floor: version,
            }),
            None => Some(KeyState {
                value: Some(value),
                version: Version::Unobserved,
                floor,
            }),
        }
    }

    fn delete(self) -> KeyState {
        KeyState {
            value: None,
            version: Version::Known(0),
            floor: self.next_floor(),
        }
    }

    fn check_invariants(self) {
        match self.version {
            Version::Known(version) => {
                assert_eq!(self.value.is_none(), version == 0, "{self:?}");
                assert!(version <= self.floor, "{self:?}");
            }
            Version::Unobserved => assert!(self.value.is_some(), "{self:?}"),
        }
    }
}

/// What linearizing one operation checks and does. Unknown-outcome writes compile to the
/// "it took effect" step; "it did not" is the search leaving them out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// `version` as reported, `None` if unknown.
    Put {
        value: ValueId,
        version: Option<u64>,
    },
    /// Acknowledged or unknown: the effect is the same.
    Delete,
    Get {
        found: Option<(ValueId, u64)>,
    },
    /// A CAS that took effect; `version` as reported, `None` if unknown.
    Cas {
        expected_version: u64,
        value: ValueId,
        version: Option<u64>,
    },
    CasMismatch {
        expected_version: u64,
        current_version: u64,
    },
    /// A compare-and-delete that took effect (acknowledged or unknown).
    CasDelete {
        expected_version: u64,
    },
    CasDeleteMismatch {
        expected_version: u64,
        current_version: u64,
    },
}

impl Step {
    /// The state after this step, or `None` if the step cannot happen in `state`.
    pub(super) fn apply(self, state: KeyState) -> Option<KeyState> {
        let next = match self {
            Step::Put { value, version } => state.write(value, version),
            Step::Delete => Some(state.delete()),
            Step::Get { found: None } => (state.value.is_none()).then_some(state),
            Step::Get {
                found: Some((value, version)),
            } => {
                if state.value == Some(value) {
                    state.observe(version)
                } else {
                    None
                }
            }
            Step::Cas {
                expected_version,
                value,
                version,
            } => state
                .observe(expected_version)
                .and_then(|state| state.write(value, version)),
            Step::CasMismatch {
                expected_version,
                current_version,
            } => {
                if expected_version == current_version {
                    None
                } else {
                    state.observe(current_version)
                }
            }
            Step::CasDelete { expected_version } => {
                if expected_version == 0 {
                    None
                } else {
                    state.observe(expected_version).map(KeyState::delete)
                }
            }
            Step::CasDeleteMismatch {
                expected_version,
                current_version,
            } => {
                // The server refuses a compare-and-delete of an absent key even when the
                // expected version is 0.
                if expected_version == current_version && current_version != 0 {
                    None
                } else {
                    state.observe(current_version)
                }
            }
        };
        if cfg!(debug_assertions) {
            if let Some(next) = next {
                next.check_invariants();
            }
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(steps: &[Step]) -> Option<KeyState> {
        steps
            .iter()
            .try_fold(KeyState::absent(), |state, step| step.apply(state))
    }

    #[test]
    fn versions_must_grow_across_deletes() {
        let put = |version| Step::Put {
            value: 1,
            version: Some(version),
        };
        assert!(run(&[put(3), Step::Delete, put(4)]).is_some());
        assert!(run(&[put(3), Step::Delete, put(3)]).is_none());
        assert!(run(&[put(3), Step::Delete, put(2)]).is_none());
    }

    #[test]
    fn unobserved_version_is_pinned_by_the_first_observation() {
        let unknown_put = Step::Put {
            value: 1,
            version: None,
        };
        let read = |version| Step::Get {
            found: Some((1, version)),
        };
        let after_put = run(&[
            Step::Put {
                value: 0,
                version: Some(5),
            },
            unknown_put,
        ])
        .unwrap();
        assert!(read(5).apply(after_put).is_none(), "must exceed 5");
        let pinned = read(9).apply(after_put).unwrap();
        assert!(read(9).apply(pinned).is_some());
        assert!(read(10).apply(pinned).is_none());
    }

    #[test]
    fn a_write_after_an_unobserved_write_needs_room_for_it() {
        // v1, then an unknown write (some v in 2..), then a write reporting 2: impossible,
        // the unknown write's version would have to lie strictly between 1 and 2.
        let steps = |last| {
            [
                Step::Put {
                    value: 0,
                    version: Some(1),
                },
                Step::Put {
                    value: 1,
                    version: None,
                },
                Step::Put {
                    value: 2,
                    version: Some(last),
                },
            ]
        };
        assert!(run(&steps(2)).is_none());
        assert!(run(&steps(3)).is_some());
    }

    #[test]
    fn cas_delete_of_absent_key_is_a_mismatch_even_at_version_zero() {
        let mismatch = Step::CasDeleteMismatch {
            expected_version: 0,
            current_version: 0,
        };
        assert!(run(&[mismatch]).is_some());
        assert!(run(&[Step::CasDelete {
            expected_version: 0
        }])
        .is_none());
    }
}
