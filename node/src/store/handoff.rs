//! Handing a Region from one core of a node to another (the Store's side; the driver's side,
//! with the durable steps, is `server::core::handoff`).
//!
//! The source core takes the Region out of its Store once it is idle (`is_idle`: no client
//! write or read waits on it) and no round in flight touches it; `take_for_hand_off`
//! captures everything a replica must keep:
//! 1. the state machine at the applied index, as a snapshot (range, epoch, key-value data);
//! 2. the membership as of that snapshot;
//! 3. the durable hard state (term, vote, commit);
//! 4. the durable log entries after the applied index (a follower may have acknowledged
//!    them, so they must not be lost).
//!
//! Entries the Raft core holds but has not persisted yet are dropped with the group: no peer
//! was told they are durable here, exactly as after a crash. The target core rebuilds the
//! replica from this state (`add_handed_off`) after making it durable; the Raft peers on other
//! nodes see the same member (the store), so no membership change is needed.

use tessera_core::{
    ConfState, Entry, HardState, LogIndex, MemStorage, RegionId, Role, Snapshot, SnapshotMetadata,
    Storage, Term,
};

use super::Store;
use crate::region::Region;
use crate::split;

/// A Region replica in transit between two cores of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandOffState {
    pub region: Region,
    /// The snapshot: the applied index and its term, the membership, and the encoded
    /// envelope (`split::encode_envelope`) of the state machine at that index.
    pub index: LogIndex,
    pub term: Term,
    pub conf_state: ConfState,
    pub data: Vec<u8>,
    /// The durable hard state; its commit index is at least `index`.
    pub hard_state: HardState,
    /// The durable entries after `index`, consecutive.
    pub entries: Vec<Entry>,
    /// The replica led its Region: the target campaigns at once, so that a Region this node
    /// led is not left without a leader for an election timeout.
    pub was_leader: bool,
}

impl Store {
    /// True if nothing waits on `region` here: no proposal, no read. A hand-off takes the
    /// Region only then, so no client is left without an answer.
    pub fn is_idle(&self, region: RegionId) -> bool {
        self.peers.get(&region).is_some_and(|p| {
            p.initialized
                && p.proposals.is_empty()
                && p.reads_waiting_index.is_empty()
                && p.reads_waiting_apply.is_empty()
        })
    }

    /// Takes `region` out of this Store for a hand-off to another core (see the module
    /// docs). `None` if it is not here, not initialized, or not idle.
    pub fn take_for_hand_off(&mut self, region: RegionId) -> Option<HandOffState> {
        if !self.is_idle(region) {
            return None;
        }
        let peer = self.peers.remove(&region).expect("checked");
        self.set_elsewhere(region, true);
        let core = self.raft.remove_group(region).expect("a peer has a group");
        let index = core.applied();
        let term = core.log().term_or_zero(index);
        let storage = core.storage();
        let last = storage.last_index();
        let entries = if last > index {
            storage
                .entries(index.next(), last.next(), usize::MAX)
                .expect("the durable log holds every entry after the applied index")
        } else {
            Vec::new()
        };
        let mut hard_state = storage.hard_state();
        hard_state.commit = hard_state.commit.max(index);
        tracing::info!(region = %peer.region, index = index.0, entries = entries.len(), "region taken for a hand-off to another core");
        Some(HandOffState {
            data: split::encode_envelope(&peer.region, &peer.kv),
            region: peer.region,
            index,
            term,
            conf_state: core.conf_state().clone(),
            hard_state,
            entries,
            was_leader: core.role() == Role::Leader,
        })
    }

    /// Adds a Region handed over by another core (its state is durable here already), and
    /// campaigns for it if the other core led it.
    ///
    /// # Errors
    /// When the Region is here already or its state does not load.
    pub fn add_handed_off(&mut self, state: &HandOffState) -> Result<(), String> {
        if self.peers.contains_key(&state.region.id) {
            return Err(format!("{} is on this core already", state.region));
        }
        let (_, kv) = split::decode_envelope(&state.data)?;
        let storage = handed_off_storage(state);
        let region = state.region.id;
        self.add_region(state.region.clone(), storage, kv)
            .map_err(|e| e.to_string())?;
        self.set_elsewhere(region, false);
        if state.was_leader {
            if let Some(core) = self.raft.group_mut(region) {
                core.campaign();
            }
        }
        Ok(())
    }
}

impl Store {
    /// Records whether another core of this node hosts `region`: a split replayed from a
    /// parent's log, a message, or recovery never creates it on this core, and an
    /// uninitialized peer of it that a message created here first is dropped (the Region's
    /// messages go to the other core).
    pub fn set_elsewhere(&mut self, region: RegionId, elsewhere: bool) {
        if !elsewhere {
            self.elsewhere.remove(&region);
            self.other_cores.remove(&region);
            return;
        }
        self.elsewhere.insert(region);
        if self.is_uninitialized(region) {
            self.peers.remove(&region);
            let _ = self.raft.remove_group(region);
            tracing::info!(
                region = region.0,
                "dropping an uninitialized peer: another core hosts the region"
            );
        }
    }

    /// Takes the other cores' Regions (newer epochs win), so that a snapshot never
    /// initializes a Region here whose range another core's Region still covers (a split
    /// that has not applied there yet).
    pub fn learn_other_core_regions(&mut self, regions: Vec<Region>) {
        crate::region::keep_newest(&mut self.other_cores, regions);
    }

    /// True if a Region another core hosts (other than `region`) matches `older`.
    pub(super) fn overlaps_other_core(
        &self,
        region: RegionId,
        older: impl Fn(&Region) -> bool,
    ) -> bool {
        self.other_cores
            .values()
            .any(|r| r.id != region && self.elsewhere.contains(&r.id) && older(r))
    }
}

/// The Raft storage a handed-off Region restarts from: its snapshot, entries and hard state.
pub fn handed_off_storage(state: &HandOffState) -> MemStorage {
    let mut storage = MemStorage::new_with_conf(state.conf_state.clone());
    storage.apply_snapshot(Snapshot {
        metadata: SnapshotMetadata {
            index: state.index,
            term: state.term,
            conf_state: state.conf_state.clone(),
        },
        data: state.data.clone().into(),
    });
    storage.append(&state.entries);
    storage.set_hard_state(state.hard_state);
    storage
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::RegionEpoch;
    use crate::request::{KvOp, KvReply, KvRequest, Mode};
    use crate::store::StoreConfig;
    use tessera_core::{Message, MessageBody, NodeId};

    fn store(core: usize) -> Store {
        let mut config = StoreConfig::new(NodeId(1));
        config.core = core;
        config.cores = 2;
        Store::new(config)
    }

    /// Runs rounds as a driver would (persist, apply) until the Store has no work.
    fn settle(store: &mut Store) {
        for _ in 0..100 {
            let Some(mut ready) = store.ready() else {
                return;
            };
            let _ = ready.messages_now();
            let _ = store.on_persisted(ready);
        }
        panic!("the store did not settle");
    }

    fn request(mode: Mode, op: KvOp) -> KvRequest {
        KvRequest {
            region: RegionId(1),
            epoch: EPOCH,
            namespace: String::new(),
            mode,
            op,
        }
    }

    fn put(store: &mut Store, token: u64, key: &str, value: &str) {
        let (key, value) = (key.as_bytes().to_vec(), value.as_bytes().to_vec());
        store.on_request(token, request(Mode::Raw, KvOp::Put { key, value }));
    }

    fn get(store: &mut Store, token: u64, key: &str) -> Option<Vec<u8>> {
        let key = key.as_bytes().to_vec();
        store.on_request(token, request(Mode::Strong, KvOp::Get { key }));
        settle(store);
        let replies = store.take_replies();
        let (_, reply) = replies.into_iter().find(|(t, _)| *t == token).unwrap();
        match reply.unwrap() {
            KvReply::Value { found } => found.map(|(value, _)| value),
            other => panic!("not a value: {other:?}"),
        }
    }

    const EPOCH: RegionEpoch = RegionEpoch {
        version: 1,
        conf_version: 1,
    };

    fn single_node_region() -> Region {
        Region {
            id: RegionId(1),
            start_key: Vec::new(),
            end_key: Vec::new(),
            epoch: EPOCH,
            peers: vec![NodeId(1)],
        }
    }

    #[test]
    fn a_region_handed_to_another_store_keeps_its_data_and_serves_writes_there() {
        let mut source = store(1);
        let region = single_node_region();
        source
            .add_region(
                region.clone(),
                Store::bootstrap_storage(&region),
                Default::default(),
            )
            .unwrap();
        source.campaign_all();
        settle(&mut source);
        for i in 0..20 {
            put(&mut source, i, &format!("k{i:02}"), &format!("v{i}"));
        }
        // Not idle while writes wait for their round: the hand-off waits.
        assert!(!source.is_idle(RegionId(1)));
        assert!(source.take_for_hand_off(RegionId(1)).is_none());
        settle(&mut source);
        assert_eq!(source.take_replies().len(), 20);
        let state = source.take_for_hand_off(RegionId(1)).expect("idle now");
        assert!(source.raft(RegionId(1)).is_none() && source.kv(RegionId(1)).is_none());
        assert!(state.was_leader && state.hard_state.commit >= state.index);

        let mut target = store(0);
        target.add_handed_off(&state).unwrap();
        assert!(target.add_handed_off(&state).is_err(), "added twice");
        settle(&mut target);
        let raft = target.raft(RegionId(1)).unwrap();
        assert_eq!(raft.role(), Role::Leader, "the target campaigned at once");
        assert!(raft.term() >= state.hard_state.term);
        assert_eq!(get(&mut target, 100, "k07"), Some(b"v7".to_vec()));
        put(&mut target, 101, "k99", "after");
        settle(&mut target);
        assert!(target.take_replies().iter().all(|(_, r)| r.is_ok()));
        assert_eq!(get(&mut target, 102, "k99"), Some(b"after".to_vec()));
        assert_eq!(get(&mut target, 103, "k00"), Some(b"v0".to_vec()));
    }

    #[test]
    fn durable_entries_after_the_applied_index_travel_with_the_region() {
        let region = single_node_region();
        let mut storage = Store::bootstrap_storage(&region);
        // Two entries durable but not committed (a follower that acknowledged them).
        let entries: Vec<Entry> = (6..=7)
            .map(|i| Entry {
                term: Term(6),
                index: LogIndex(i),
                kind: tessera_core::EntryKind::Normal,
                data: Default::default(),
            })
            .collect();
        storage.append(&entries);
        storage.set_hard_state(HardState {
            term: Term(6),
            vote: Some(NodeId(1)),
            commit: LogIndex(5),
        });
        let mut source = store(1);
        source
            .add_region(region, storage, Default::default())
            .unwrap();
        let state = source.take_for_hand_off(RegionId(1)).unwrap();
        assert_eq!(state.index, LogIndex(5));
        assert_eq!(state.entries, entries);
        assert_eq!(state.hard_state.vote, Some(NodeId(1)));
        let rebuilt = handed_off_storage(&state);
        assert_eq!(rebuilt.last_index(), LogIndex(7));
        assert_eq!(rebuilt.hard_state(), state.hard_state);
    }

    #[test]
    fn a_snapshot_never_initializes_a_region_another_core_still_covers() {
        let mut store = store(1);
        let parent = |version, end: &str| Region {
            id: RegionId(1),
            start_key: Vec::new(),
            end_key: end.as_bytes().to_vec(),
            epoch: RegionEpoch {
                version,
                conf_version: 1,
            },
            peers: vec![NodeId(1), NodeId(2)],
        };
        // Core 0 hosts Region 1 (handed there), not yet split.
        store.set_elsewhere(RegionId(1), true);
        store.learn_other_core_regions(vec![parent(1, "")]);
        let message = |body| Message {
            from: NodeId(2),
            to: NodeId(1),
            term: Term(7),
            body,
        };
        let heartbeat = MessageBody::Heartbeat {
            commit: LogIndex(0),
            read_context: 0,
        };
        // Region 3, made by a split of Region 1 at "m", is led from node 2.
        store.on_raft_messages(vec![(RegionId(3), message(heartbeat.clone()))]);
        assert!(store.is_uninitialized(RegionId(3)));
        let child = Region {
            id: RegionId(3),
            start_key: b"m".to_vec(),
            epoch: RegionEpoch {
                version: 2,
                conf_version: 1,
            },
            ..parent(2, "")
        };
        let data = split::encode_envelope(&child, &Default::default());
        let snapshot = MessageBody::InstallSnapshot {
            snapshot: Snapshot {
                metadata: SnapshotMetadata {
                    index: LogIndex(20),
                    term: Term(7),
                    conf_state: ConfState::with_voters([NodeId(1), NodeId(2)]),
                },
                data: data.into(),
            },
        };
        store.on_raft_messages(vec![(RegionId(3), message(snapshot.clone()))]);
        assert_eq!(
            store.stats().uninitialized_refused,
            1,
            "core 0 still covers it"
        );
        // Core 0 applied the split (it makes Region 3 there): the peer here goes.
        store.learn_other_core_regions(vec![parent(2, "m")]);
        store.set_elsewhere(RegionId(3), true);
        assert!(store.raft(RegionId(3)).is_none() && !store.is_uninitialized(RegionId(3)));
        store.on_raft_messages(vec![(RegionId(3), message(heartbeat))]);
        assert!(store.raft(RegionId(3)).is_none(), "not created again here");
        // Had core 0's parent shrunk without making Region 3, the snapshot is taken.
        store.set_elsewhere(RegionId(3), false);
        store.on_raft_messages(vec![(RegionId(3), message(snapshot))]);
        assert_eq!(store.stats().uninitialized_refused, 1);
        assert!(store.raft(RegionId(3)).is_some());
    }
}
