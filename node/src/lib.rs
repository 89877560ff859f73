//! `tessera-node`: the Tessera storage node.
//!
//! Work in progress: the Region layer and the key-value state machine exist; the per-core
//! Store, the executors, the client service and the placement driver come next.

pub mod client;
pub mod config;
pub mod kv;
pub mod meta;
pub mod region;
pub mod request;
pub mod server;
pub mod store;
