//! `MultiRaft`: all the Raft groups (Regions) of one core, driven together.
//!
//! One shared `tick` advances every group; `ready` gathers every group's `Ready` into one
//! `MultiReady` whose messages are batched per destination node, so the caller makes one
//! WAL write and one send per peer for the whole core.
//!
//! Today a tick visits every group. The design leaves room for quiescence (idle groups stop
//! ticking and heartbeating, and wake on a message or proposal) so that a tick costs in
//! proportion to the active groups; see DESIGN.md.

use std::collections::BTreeMap;

use crate::config::Config;
use crate::error::RaftError;
use crate::raft::RaftCore;
use crate::ready::{Advance, Ready};
use crate::storage::Storage;
use crate::types::{LogIndex, Message, NodeId, Payload, RegionId};

/// Messages for one destination node, from many groups.
pub type Batches = BTreeMap<NodeId, Vec<(RegionId, Message)>>;

/// Every group's work, with messages taken out of the per-group `Ready`s and batched.
#[derive(Debug, Default)]
pub struct MultiReady {
    /// Per group: the rest of its `Ready` (messages already moved to the batches).
    pub groups: Vec<(RegionId, Ready)>,
    /// Messages to send now, per destination node.
    pub messages: Batches,
    /// Messages to send after every group's `Ready` is durable, per destination node.
    pub persisted_messages: Batches,
}

impl MultiReady {
    /// True when no group has anything to do.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// The groups of one core. Groups are kept in id order so that runs are deterministic.
pub struct MultiRaft<S: Storage> {
    node: NodeId,
    groups: BTreeMap<RegionId, RaftCore<S>>,
}

impl<S: Storage> MultiRaft<S> {
    /// No groups yet, on node `node`.
    pub fn new(node: NodeId) -> MultiRaft<S> {
        MultiRaft {
            node,
            groups: BTreeMap::new(),
        }
    }

    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Adds a group. The config's seed is mixed with the region id, so groups on one node do
    /// not time out in lockstep.
    ///
    /// # Errors
    /// `GroupExists`, `InvalidConfig` (also when `config.id` is not this node), `Storage`.
    pub fn create_group(
        &mut self,
        region: RegionId,
        mut config: Config,
        storage: S,
    ) -> Result<(), RaftError> {
        if config.id != self.node {
            return Err(RaftError::InvalidConfig(
                "group config id differs from the node id",
            ));
        }
        if self.groups.contains_key(&region) {
            return Err(RaftError::GroupExists(region));
        }
        config.seed ^= region.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let core = RaftCore::new(config, storage)?;
        self.groups.insert(region, core);
        Ok(())
    }

    /// Removes a group, handing back its core.
    ///
    /// # Errors
    /// `UnknownGroup`.
    pub fn remove_group(&mut self, region: RegionId) -> Result<RaftCore<S>, RaftError> {
        self.groups
            .remove(&region)
            .ok_or(RaftError::UnknownGroup(region))
    }

    pub fn group(&self, region: RegionId) -> Option<&RaftCore<S>> {
        self.groups.get(&region)
    }

    pub fn group_mut(&mut self, region: RegionId) -> Option<&mut RaftCore<S>> {
        self.groups.get_mut(&region)
    }

    fn group_or_err(&mut self, region: RegionId) -> Result<&mut RaftCore<S>, RaftError> {
        self.groups
            .get_mut(&region)
            .ok_or(RaftError::UnknownGroup(region))
    }

    /// Region ids, in order.
    pub fn regions(&self) -> impl Iterator<Item = RegionId> + '_ {
        self.groups.keys().copied()
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// One tick for every group.
    pub fn tick(&mut self) {
        for core in self.groups.values_mut() {
            core.tick();
        }
    }

    /// Hands a message to its group.
    ///
    /// # Errors
    /// `UnknownGroup` when this core has no such group (the caller logs and drops it).
    pub fn step(&mut self, region: RegionId, message: Message) -> Result<(), RaftError> {
        self.group_or_err(region)?.step(message);
        Ok(())
    }

    /// Proposes a command to a group.
    ///
    /// # Errors
    /// `UnknownGroup`, or the group's `propose` errors.
    pub fn propose(&mut self, region: RegionId, data: Payload) -> Result<LogIndex, RaftError> {
        self.group_or_err(region)?.propose(data)
    }

    /// Asks a group for a linearizable read.
    ///
    /// # Errors
    /// `UnknownGroup`, or the group's `read_index` errors.
    pub fn read_index(&mut self, region: RegionId, request_id: u64) -> Result<(), RaftError> {
        self.group_or_err(region)?.read_index(request_id)
    }

    /// Gathers the work of every group that has some.
    pub fn ready(&mut self) -> MultiReady {
        let mut multi = MultiReady::default();
        for (region, core) in self.groups.iter_mut() {
            if !core.has_ready() {
                continue;
            }
            let mut ready = core.ready();
            for message in ready.messages.drain(..) {
                multi
                    .messages
                    .entry(message.to)
                    .or_default()
                    .push((*region, message));
            }
            for message in ready.persisted_messages.drain(..) {
                multi
                    .persisted_messages
                    .entry(message.to)
                    .or_default()
                    .push((*region, message));
            }
            multi.groups.push((*region, ready));
        }
        multi
    }

    /// Reports what the caller persisted and applied for one group.
    ///
    /// # Errors
    /// `UnknownGroup`.
    pub fn advance(&mut self, region: RegionId, advance: Advance) -> Result<(), RaftError> {
        self.group_or_err(region)?.advance(advance);
        Ok(())
    }
}
