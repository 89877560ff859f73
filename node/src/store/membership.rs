//! Membership changes of a Region on the Store: moving a replica from one store to another,
//! one Raft conf change at a time, and destroying a replica that was removed.
//!
//! A move of Region R from store A to store B is a sequence of steps the leader takes one at
//! a time (`move_step`; the caller — the node's placement-driver worker — calls it again
//! until it answers `done`). Each call looks at the leader's current membership and
//! progress, so it is resumable after a leader change or a restart:
//! 1. B is not a member: propose `AddLearner(B)`. B's store gets an uninitialized peer from
//!    the leader's first message, and the leader's snapshot initializes it (B's log is empty,
//!    the leader's starts after a snapshot, so it is never a replay of the log);
//! 2. B is a learner: if the leader's newest snapshot predates B's addition, the leader takes
//!    one now (B is then seeded at a conf version above any tombstone B's store may hold for
//!    the Region from an earlier removal, and a bootstrap snapshot, which carries no Region
//!    envelope, is never what seeds it). Once the leader replicates to B (its snapshot
//!    installed) with a match index within `CATCH_UP_LAG_ENTRIES_MAX` of the commit index:
//!    propose `AddVoter(B)` (otherwise wait);
//! 3. B is a voter and A still a member: if A leads, transfer leadership to B (A cannot
//!    propose its own removal safely: it would step down at apply); else propose `Remove(A)`;
//! 4. B is a voter and A is gone: done.
//!
//! A learner never counts toward a quorum (the core's rule), and B votes only once it is
//! caught up, so a quorum of caught-up voters exists at every step.
//!
//! Applying a conf change (on every replica, in log order) updates the Region's peers (voters
//! and learners) and bumps its epoch's `conf_version`. A replica that applies its own removal
//! is destroyed; one that never sees its removal committed (the leader stops sending to it)
//! is destroyed when the placement driver reports the Region at a newer membership without
//! this store (`destroy_replica`). Destroying drops the Region's group, state and pending
//! requests and leaves a tombstone `(region, conf_version)`: the driver writes it durably
//! before freeing the snapshot files and the WAL share, recovery never brings the Region
//! back, and a stale leader's snapshot (at a conf version not above the tombstone's) never
//! initializes it again. A later re-add comes with a higher conf version and is accepted.

use std::collections::BTreeMap;

use tessera_core::progress::ProgressState;
use tessera_core::{ConfChange, ConfState, NodeId, RaftError, RegionId, Role, Storage};

use super::{Store, Token};
use crate::region::{Region, RegionEpoch};
use crate::request::{KvError, KvReply, KvResult};

/// A learner this close to the commit index (in entries) counts as caught up.
pub const CATCH_UP_LAG_ENTRIES_MAX: u64 = 64;

/// A destroyed replica: recovery must not bring back `region` at a conf version up to
/// `conf_version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tombstone {
    pub region: RegionId,
    pub conf_version: u64,
}

/// Applies a committed conf change to a replica's Region and membership mirror.
pub fn apply_conf_change(region: &mut Region, conf: &mut ConfState, change: ConfChange) {
    *conf = change.apply_to(conf);
    let mut peers: Vec<NodeId> = conf.members().collect();
    peers.sort_unstable();
    region.peers = peers;
    region.epoch.conf_version += 1;
}

impl Store {
    /// The tombstones of replicas destroyed on this core (recovery hands them back).
    pub fn tombstones(&self) -> &BTreeMap<RegionId, u64> {
        &self.tombstones
    }

    /// Records tombstones read back at recovery.
    pub fn restore_tombstones(&mut self, tombstones: impl IntoIterator<Item = Tombstone>) {
        for t in tombstones {
            let known = self.tombstones.entry(t.region).or_default();
            *known = (*known).max(t.conf_version);
        }
    }

    /// Tombstones of replicas destroyed since the last call: write them durably, then free
    /// the Region's snapshot files and WAL share.
    pub fn take_destroyed(&mut self) -> Vec<Tombstone> {
        std::mem::take(&mut self.destroyed)
    }

    /// True if a snapshot of `region` at `conf_version` would bring back a destroyed replica.
    pub(super) fn tombstoned(&self, region: RegionId, conf_version: u64) -> bool {
        self.tombstones
            .get(&region)
            .is_some_and(|dead| conf_version <= *dead)
    }

    /// One step of a move (see the module docs), or with `from == to` a leadership transfer
    /// to `to` (done once `to` leads). The caller checked this replica leads.
    pub(super) fn move_step(&mut self, region: RegionId, from: NodeId, to: NodeId) -> KvResult {
        if from == to && to != self.config.node {
            let core = self.raft.group_mut(region).expect("the peer has a group");
            return match core.transfer_leader(to) {
                Ok(()) => Ok(KvReply::MoveStep {
                    done: false,
                    detail: format!("transferring leadership to {}", to.0),
                }),
                Err(error) => Err(super::raft_error(region, error)),
            };
        }
        if from == to {
            return Ok(KvReply::MoveStep {
                done: true,
                detail: format!("node {} leads", to.0),
            });
        }
        if from.0 == 0 || to.0 == 0 {
            return Err(KvError::InvalidRequest(format!(
                "cannot move a replica from node {} to node {}",
                from.0, to.0
            )));
        }
        let node = self.config.node;
        let core = self.raft.group(region).expect("the peer has a group");
        let conf = core.conf_state().clone();
        // The newest snapshot seeds the learner only if it was taken after the learner's
        // addition (the last conf change): an older one may predate a removal of `to`,
        // whose tombstone refuses it.
        let snapshot_conf_version = core
            .storage()
            .snapshot()
            .ok()
            .and_then(|s| crate::split::decode_envelope_region(&s.data).ok().flatten())
            .map(|r| r.epoch.conf_version);
        let current = self.peers.get(&region).map(|p| p.region.epoch.conf_version);
        let seeded = snapshot_conf_version.is_some() && snapshot_conf_version == current;
        if conf.is_learner(to) && !seeded {
            let Some(taken) = self.maybe_snapshot(region, true) else {
                return Ok(KvReply::MoveStep {
                    done: false,
                    detail: "waiting: nothing applied to snapshot yet".into(),
                });
            };
            // Written to its file with the round's other new snapshots.
            self.created.push(taken);
            return Ok(KvReply::MoveStep {
                done: false,
                detail: "took a snapshot that includes the learner".into(),
            });
        }
        let core = self.raft.group_mut(region).expect("the peer has a group");
        let step = |detail: String| {
            Ok(KvReply::MoveStep {
                done: false,
                detail,
            })
        };
        let change = if !conf.contains(to) {
            ConfChange::AddLearner(to)
        } else if conf.is_learner(to) {
            let progress = core.progress(to);
            let replicating = progress.is_some_and(|p| p.state == ProgressState::Replicate);
            let matched = progress.map_or(0, |p| p.match_index.0);
            let committed = core.committed().0;
            if !replicating || matched + CATCH_UP_LAG_ENTRIES_MAX < committed {
                return step(format!(
                    "learner {} catching up: match {matched}, commit {committed}",
                    to.0
                ));
            }
            ConfChange::AddVoter(to)
        } else if conf.contains(from) {
            if from == node {
                return match core.transfer_leader(to) {
                    Ok(()) => step(format!("transferring leadership to {}", to.0)),
                    Err(error) => Err(super::raft_error(region, error)),
                };
            }
            ConfChange::Remove(from)
        } else {
            return Ok(KvReply::MoveStep {
                done: true,
                detail: format!("node {} replaced node {}", to.0, from.0),
            });
        };
        match core.propose_conf_change(change) {
            Ok(index) => step(format!("proposed {change:?} at index {}", index.0)),
            Err(RaftError::ProposalDropped { reason }) => step(format!("waiting: {reason}")),
            Err(error) => Err(super::raft_error(region, error)),
        }
    }

    /// Destroys this replica if the driver's view (`seen`, the Region's newer epoch) shows a
    /// membership that no longer has this store. The driver only learns such an epoch from a
    /// replica that applied this store's removal.
    pub(super) fn destroy_replica(&mut self, region: RegionId, seen: RegionEpoch) -> KvResult {
        let peer = self
            .peers
            .get(&region)
            .ok_or(KvError::RegionNotFound(region))?;
        if peer.initialized && seen.conf_version <= peer.region.epoch.conf_version {
            return Err(KvError::InvalidRequest(format!(
                "{} is at conf version {}, not behind {}",
                peer.region, peer.region.epoch.conf_version, seen.conf_version
            )));
        }
        let core = self.raft.group(region).expect("the peer has a group");
        if core.role() == Role::Leader {
            return Err(KvError::InvalidRequest(format!(
                "region {} is led here; a leader is never destroyed",
                region.0
            )));
        }
        self.destroy(region, seen.conf_version);
        Ok(KvReply::Destroyed)
    }

    /// Drops a replica and leaves a tombstone (see the module docs). Requests waiting on it
    /// are answered: a write whose entry was proposed here may still commit elsewhere.
    pub(super) fn destroy(&mut self, region: RegionId, conf_version: u64) {
        let Some(peer) = self.peers.remove(&region) else {
            return;
        };
        let _ = self.raft.remove_group(region);
        let conf_version = conf_version.max(peer.region.epoch.conf_version);
        let mut failed: Vec<Token> = peer.proposals.iter().map(|p| p.token).collect();
        let reads = peer.reads_waiting_index.values();
        let reads = reads.chain(peer.reads_waiting_apply.iter().map(|(_, r)| r));
        let read_tokens: Vec<Token> = reads.map(|r| r.token).collect();
        self.pending_requests -= failed.len() + read_tokens.len();
        for token in failed.drain(..) {
            let error = KvError::OutcomeUnknown(format!(
                "region {} was removed from this store before the write was seen committed",
                region.0
            ));
            self.replies.push((token, Err(error)));
        }
        for token in read_tokens {
            self.replies
                .push((token, Err(KvError::RegionNotFound(region))));
        }
        let known = self.tombstones.entry(region).or_default();
        *known = (*known).max(conf_version);
        self.destroyed.push(Tombstone {
            region,
            conf_version,
        });
        self.stats.replicas_destroyed += 1;
        tracing::info!(region = %peer.region, conf_version, "replica destroyed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conf_change_updates_peers_and_bumps_the_conf_version() {
        let mut region = Region {
            id: RegionId(1),
            start_key: Vec::new(),
            end_key: Vec::new(),
            epoch: RegionEpoch {
                version: 3,
                conf_version: 1,
            },
            peers: vec![NodeId(1), NodeId(2), NodeId(3)],
        };
        let mut conf = ConfState::with_voters(region.peers.iter().copied());
        apply_conf_change(&mut region, &mut conf, ConfChange::AddLearner(NodeId(4)));
        assert_eq!(region.peers.len(), 4);
        assert!(conf.is_learner(NodeId(4)));
        apply_conf_change(&mut region, &mut conf, ConfChange::AddVoter(NodeId(4)));
        apply_conf_change(&mut region, &mut conf, ConfChange::Remove(NodeId(1)));
        assert_eq!(region.peers, vec![NodeId(2), NodeId(3), NodeId(4)]);
        assert_eq!(conf.voters, region.peers);
        assert_eq!(region.epoch.conf_version, 4);
        assert_eq!(
            region.epoch.version, 3,
            "a conf change never moves the range"
        );
    }
}
