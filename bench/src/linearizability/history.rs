//! Recorded histories: what each client asked, when it asked, when it heard back and what it
//! was told.
//!
//! Invariants of every [`Operation`] in a [`History`] (checked by [`History::push`]):
//! 1. its [`Outcome`] fits its [`Command`] (a `Get` is answered with `Read`, a `Put` with
//!    `Written`, never the other way round);
//! 2. `completed_ns >= invoked_ns`;
//! 3. an operation that never completed has outcome `Unknown`.
//!
//! Times are nanoseconds on one monotonic clock (the [`Recorder`]'s, or any clock a
//! simulator keeps); only their order matters to the checker.

use std::fmt;
use std::sync::Mutex;
use std::time::Instant;

/// Index of an operation in its [`History`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub usize);

/// The client (thread, connection or simulated process) that issued an operation. Only used
/// to print histories; the checker does not assume a client's operations are sequential.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u32);

/// What a client asked for. Every command targets exactly one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    /// A strong (linearizable) read.
    Get {
        key: Vec<u8>,
    },
    /// Writes `value` only if the key's version equals `expected_version` (0: absent).
    Cas {
        key: Vec<u8>,
        expected_version: u64,
        value: Vec<u8>,
    },
    /// Deletes only if the key exists and its version equals `expected_version`.
    CasDelete {
        key: Vec<u8>,
        expected_version: u64,
    },
}

impl Command {
    /// The key the command targets.
    pub fn key(&self) -> &[u8] {
        match self {
            Command::Put { key, .. }
            | Command::Delete { key }
            | Command::Get { key }
            | Command::Cas { key, .. }
            | Command::CasDelete { key, .. } => key,
        }
    }
}

/// What the client was told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A `Put` or `Cas` took effect; the key's new version.
    Written { version: u64 },
    /// A `Delete` or `CasDelete` took effect.
    Deleted,
    /// A `Get`'s answer: the value and its version, or `None` when the key is absent.
    Read { found: Option<(Vec<u8>, u64)> },
    /// A `Cas` or `CasDelete` compared and failed; nothing changed.
    Mismatch { current_version: u64 },
    /// Definitely not applied: the server refused before proposing (e.g. not the leader).
    Failed,
    /// Timeout or lost connection: may have taken effect at any time after the invocation,
    /// even after the client gave up.
    Unknown,
}

impl Outcome {
    /// True if a server could answer `command` with this outcome.
    pub fn fits(&self, command: &Command) -> bool {
        match self {
            Outcome::Failed | Outcome::Unknown => true,
            Outcome::Written { .. } => {
                matches!(command, Command::Put { .. } | Command::Cas { .. })
            }
            Outcome::Deleted => {
                matches!(command, Command::Delete { .. } | Command::CasDelete { .. })
            }
            Outcome::Read { .. } => matches!(command, Command::Get { .. }),
            Outcome::Mismatch { .. } => {
                matches!(command, Command::Cas { .. } | Command::CasDelete { .. })
            }
        }
    }
}

/// One operation of a history: a command, its interval in real time and its outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub id: OpId,
    pub client: ClientId,
    pub command: Command,
    pub invoked_ns: u64,
    /// `None` if the client never heard back (then the outcome is `Unknown`).
    pub completed_ns: Option<u64>,
    pub outcome: Outcome,
}

/// A recorded history, in the order operations were invoked or pushed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    operations: Vec<Operation>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        History::default()
    }

    /// Appends one finished (or abandoned) operation and returns its id.
    ///
    /// # Panics
    /// If the operation breaks one of the module's invariants: the outcome does not fit the
    /// command, it completed before it was invoked, or it never completed yet has a definite
    /// outcome. These are bugs in whatever records the history.
    pub fn push(
        &mut self,
        client: ClientId,
        command: Command,
        invoked_ns: u64,
        completed_ns: Option<u64>,
        outcome: Outcome,
    ) -> OpId {
        let id = OpId(self.operations.len());
        let operation = Operation {
            id,
            client,
            command,
            invoked_ns,
            completed_ns,
            outcome,
        };
        assert_well_formed(&operation);
        self.operations.push(operation);
        id
    }

    /// The operations, indexed by [`OpId`].
    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    /// The number of operations.
    pub fn len(&self) -> usize {
        self.operations.len()
    }

    /// True if no operation was recorded.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }
}

fn assert_well_formed(operation: &Operation) {
    assert!(
        operation.outcome.fits(&operation.command),
        "operation {:?}: outcome {:?} cannot answer {:?}",
        operation.id,
        operation.outcome,
        operation.command
    );
    if let Some(completed_ns) = operation.completed_ns {
        assert!(
            completed_ns >= operation.invoked_ns,
            "operation {:?} completed at {completed_ns} ns, before its invocation at {} ns",
            operation.id,
            operation.invoked_ns
        );
    } else {
        assert!(
            operation.outcome == Outcome::Unknown,
            "operation {:?} never completed but has outcome {:?}",
            operation.id,
            operation.outcome
        );
    }
}

/// Records a history from many client threads at once, stamping each invocation and
/// completion with a monotonic clock read under one lock (so the stamps' order is the order
/// the events were recorded in).
///
/// Calling order for each operation:
/// 1. `invoke` just before the request is sent;
/// 2. `complete` just after the answer arrives (or the client gives up: `Outcome::Unknown`).
///
/// An operation never completed stays in the history with outcome `Unknown`.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    history: Mutex<History>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// A recorder whose clock starts now (time 0).
    pub fn new() -> Self {
        Recorder {
            start: Instant::now(),
            history: Mutex::new(History::new()),
        }
    }

    /// Records that `client` is about to send `command`.
    pub fn invoke(&self, client: ClientId, command: Command) -> OpId {
        let mut history = self.history.lock().expect("recorder lock poisoned");
        let invoked_ns = self.now_ns();
        history.push(client, command, invoked_ns, None, Outcome::Unknown)
    }

    /// Records the answer to operation `id`.
    ///
    /// # Panics
    /// If `id` is not an invoked operation, was already completed, or `outcome` does not fit
    /// its command.
    pub fn complete(&self, id: OpId, outcome: Outcome) {
        let mut history = self.history.lock().expect("recorder lock poisoned");
        let completed_ns = self.now_ns();
        let operation = history
            .operations
            .get_mut(id.0)
            .unwrap_or_else(|| panic!("operation {id:?} was never invoked"));
        assert!(
            operation.completed_ns.is_none(),
            "operation {id:?} completed twice"
        );
        operation.completed_ns = Some(completed_ns);
        operation.outcome = outcome;
        assert_well_formed(operation);
    }

    /// A copy of everything recorded so far.
    pub fn history(&self) -> History {
        self.history.lock().expect("recorder lock poisoned").clone()
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).expect("recorder clock overflowed u64 ns")
    }
}

/// Writes bytes as a quoted, escaped string: `"a\xffb"`.
pub(super) struct Bytes<'a>(pub &'a [u8]);

impl fmt::Display for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Put { key, value } => write!(f, "put {} = {}", Bytes(key), Bytes(value)),
            Command::Delete { key } => write!(f, "delete {}", Bytes(key)),
            Command::Get { key } => write!(f, "get {}", Bytes(key)),
            Command::Cas {
                key,
                expected_version,
                value,
            } => write!(
                f,
                "cas {} if v{expected_version} = {}",
                Bytes(key),
                Bytes(value)
            ),
            Command::CasDelete {
                key,
                expected_version,
            } => write!(f, "cas-delete {} if v{expected_version}", Bytes(key)),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Written { version } => write!(f, "ok v{version}"),
            Outcome::Deleted => write!(f, "ok deleted"),
            Outcome::Read { found: None } => write!(f, "ok absent"),
            Outcome::Read {
                found: Some((value, version)),
            } => write!(f, "ok {} v{version}", Bytes(value)),
            Outcome::Mismatch { current_version } => {
                write!(f, "mismatch current v{current_version}")
            }
            Outcome::Failed => write!(f, "failed"),
            Outcome::Unknown => write!(f, "unknown"),
        }
    }
}
