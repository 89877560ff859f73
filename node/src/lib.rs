//! `tessera-node`: the Tessera storage node: the per-core Store (Regions, Raft, the
//! key-value state machine), the executors and client service (`server`), the placement
//! driver's metadata (`placement`), configuration, and the Rust client.

pub mod balance;
pub mod client;
pub mod config;
pub mod fake_node;
pub mod kv;
pub mod latency;
pub mod meta;
pub mod placement;
pub mod region;
pub mod request;
pub mod server;
pub mod split;
pub mod store;
