//! Identifiers the transport adds to the core's: the cluster and a node's core.

use std::fmt;

/// The cluster a node belongs to, chosen when the cluster is created. `ClusterId(0)` is never
/// valid; a node refuses a peer or client whose handshake names another cluster.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ClusterId(pub u64);

/// One core (executor) of a node, counted from 0. Which core owns a Region is a pure function
/// of the Region id and the node's core count, so a sender addresses the owning core directly.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CoreId(pub u32);

impl ClusterId {
    /// The raw number, for encoders.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl CoreId {
    /// The raw number, for encoders.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Debug for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cluster{}", self.0)
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl fmt::Debug for CoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

impl fmt::Display for CoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
