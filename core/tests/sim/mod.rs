//! The deterministic cluster simulator shared by the simulation tests.

pub mod checker;
pub mod cluster;
pub mod schedule;
