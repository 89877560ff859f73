//! The deterministic simulation of whole nodes (see `node_simulation.rs`).

pub mod clients;
pub mod cluster;
pub mod disk;
pub mod net;
pub mod run;

use std::hash::{DefaultHasher, Hash, Hasher};

/// A deterministic hash of `values` (`DefaultHasher::new` uses fixed keys): seeds for the
/// Raft cores and digests of runs.
pub fn digest(values: impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    values.hash(&mut hasher);
    hasher.finish()
}
