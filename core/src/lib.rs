//! `tessera-core`: the Raft consensus algorithm as pure logic.
//!
//! No I/O, no async, no clock, no threads: the caller drives a [`RaftCore`] with logical
//! ticks and messages, and carries out the [`Ready`] it hands back. The same inputs always
//! give the same outputs, so a whole cluster can be simulated and any failing run replayed
//! from its seed.
//!
//! A single-node group, from creation to a committed proposal:
//!
//! ```
//! use tessera_core::{Config, ConfState, MemStorage, NodeId, RaftCore, Role};
//!
//! let storage = MemStorage::new_with_conf(ConfState::with_voters([NodeId(1)]));
//! let mut node = RaftCore::new(Config::new(NodeId(1)), storage).unwrap();
//!
//! // Tick until the election timeout fires; a lone voter elects itself.
//! while node.role() != Role::Leader {
//!     node.tick();
//! }
//! let index = node.propose(b"hello".to_vec().into()).unwrap();
//!
//! // Handle Ready until the proposal comes back committed.
//! let mut applied = Vec::new();
//! while applied.last().map_or(true, |i| *i < index) {
//!     let ready = node.ready();
//!     // 1. send ready.messages (none: no peers)  2. persist:
//!     node.storage_mut().append(&ready.entries);
//!     if let Some(hard_state) = ready.hard_state {
//!         node.storage_mut().set_hard_state(hard_state);
//!     }
//!     // 3. send ready.persisted_messages  4. apply:
//!     applied.extend(ready.committed_entries.iter().map(|e| e.index));
//!     node.advance(ready.advance());
//! }
//! assert!(node.committed() >= index);
//! ```
//!
//! [`MultiRaft`] runs many groups on one core with one shared tick and batches their
//! messages per destination node.

pub mod config;
pub mod error;
pub mod multi;
pub mod progress;
pub mod quorum;
mod raft;
pub mod raft_log;
pub mod ready;
pub mod rng;
pub mod storage;
pub mod types;

pub use config::Config;
pub use error::{RaftError, StorageError};
pub use multi::{MultiRaft, MultiReady};
pub use raft::RaftCore;
pub use ready::{Advance, ReadState, Ready, Role, SoftState};
pub use storage::{MemStorage, Storage, BOOTSTRAP_INDEX, BOOTSTRAP_TERM};
pub use types::*;
