//! Snapshot files (placeholder).
