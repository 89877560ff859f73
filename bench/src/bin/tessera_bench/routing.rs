//! Where each key goes: the Regions (ranges, epochs, leaders) and every store's client
//! addresses, loaded through the client library and updated from the hints the node returns.
//!
//! Each connection keeps its own copy, so routing takes no lock on the hot path.

use std::collections::HashMap;

use anyhow::Context;
use tessera_core::{NodeId, RegionId};
use tessera_node::client::{Client, ClientOptions};
use tessera_transport::client::{RegionDescriptor, RegionEpoch};

/// A copy of the cluster's routing table.
#[derive(Clone, Debug)]
pub struct Routing {
    /// Sorted by start key.
    regions: Vec<RegionDescriptor>,
    client_addrs: HashMap<NodeId, Vec<String>>,
    seed_addr: String,
}

/// Where one request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub region_id: RegionId,
    pub epoch: RegionEpoch,
    /// The leader's client address for the core owning the Region, or a replica's when no
    /// leader is known (it answers NotLeader with a hint).
    pub addr: String,
}

impl Routing {
    /// Loads the routing table from the node at `seed_addr`.
    ///
    /// # Errors
    /// When the node does not answer.
    pub fn load(seed_addr: &str) -> anyhow::Result<Routing> {
        let client = Client::connect(seed_addr, ClientOptions::default())
            .with_context(|| format!("loading the routing table from {seed_addr}"))?;
        let (regions, stores) = client.routing();
        let mut regions = regions.to_vec();
        regions.sort_by(|a, b| a.start_key.cmp(&b.start_key));
        Ok(Routing {
            regions,
            client_addrs: stores
                .into_iter()
                .map(|s| (s.node_id, s.client_addrs.clone()))
                .collect(),
            seed_addr: seed_addr.to_string(),
        })
    }

    /// Reloads from the seed node (after a stale epoch or an unknown leader).
    ///
    /// # Errors
    /// When the node does not answer.
    pub fn refresh(&mut self) -> anyhow::Result<()> {
        *self = Routing::load(&self.seed_addr.clone())?;
        Ok(())
    }

    pub fn regions(&self) -> &[RegionDescriptor] {
        &self.regions
    }

    /// The Region holding `key` and the address to send to; `attempt` rotates over the
    /// replicas when the leader is unknown.
    pub fn target(&self, key: &[u8], attempt: u32) -> Option<Target> {
        let region = self.regions.iter().find(|r| {
            key >= r.start_key.as_slice() && (r.end_key.is_empty() || key < r.end_key.as_slice())
        })?;
        let node = region.leader.or_else(|| {
            region
                .peers
                .get(attempt as usize % region.peers.len().max(1))
                .copied()
        })?;
        let addrs = self.client_addrs.get(&node)?;
        let core = (region.region_id.0 % addrs.len().max(1) as u64) as usize;
        Some(Target {
            region_id: region.region_id,
            epoch: region.epoch,
            addr: addrs.get(core).or(addrs.last())?.clone(),
        })
    }

    /// Follows a NotLeader hint: `leader` now leads `region_id` (or nobody known, `None`).
    pub fn set_leader(&mut self, region_id: RegionId, leader: Option<NodeId>) {
        if let Some(region) = self.regions.iter_mut().find(|r| r.region_id == region_id) {
            region.leader = leader;
        }
    }
}
