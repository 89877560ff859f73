//! `tessera-transport`: the wire format and the raw TCP transport.
pub mod generated;
