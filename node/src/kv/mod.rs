//! The key-value state machine: the commands a Region's log carries and the state they build.

pub mod command;
pub mod state;

pub use command::{CommandError, KvCommand};
pub use state::{KvOutcome, KvState, ScanItem, SnapshotError, Versioned};
