//! Placeholder; see DESIGN.md.
pub mod linearizability;
