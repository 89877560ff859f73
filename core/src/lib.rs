//! `tessera-core`: the Raft consensus algorithm as pure logic.
//!
//! Work in progress; see the README's Status section.

pub mod types;

pub use types::*;
