//! Which driver rounds write (and fdatasync) the WAL: three nodes' Stores over an in-process
//! network, each round's batch built by `round_batch` with the node's `Carried` and appended
//! to an in-memory WAL (`MemLog`), as the glommio driver does.
//!
//! What it proves: a round in which only commit indexes moved writes nothing (so a leader
//! answers a write after ONE fdatasync of its own, not two), its hard state is carried into
//! the next batch or a shutdown's, and a new term or vote is always written in its own round.

use std::collections::BTreeMap;

use tessera_core::{NodeId, RegionId, Role};
use tessera_node::kv::KvState;
use tessera_node::region::{Region, RegionEpoch};
use tessera_node::request::{KvOp, KvReply, KvRequest, KvResult, Mode};
use tessera_node::server::bootstrap::recovery_batch;
use tessera_node::server::round::{round_batch, Carried};
use tessera_node::store::{Store, StoreConfig, Token};
use tessera_wal::{LogRead, MemLog};

const REGION: RegionId = RegionId(1);

struct Node {
    store: Store,
    carried: Carried,
    log: MemLog,
    /// WAL appends (each one write + one fdatasync in the driver).
    syncs: usize,
}

struct Cluster {
    nodes: BTreeMap<NodeId, Node>,
    replies: BTreeMap<Token, KvResult>,
}

impl Cluster {
    fn new() -> Cluster {
        let region = Region {
            id: REGION,
            start_key: vec![],
            end_key: vec![],
            epoch: RegionEpoch::default(),
            peers: vec![NodeId(1), NodeId(2), NodeId(3)],
        };
        let mut nodes = BTreeMap::new();
        for id in 1..=3 {
            let mut store = Store::new(StoreConfig::new(NodeId(id)));
            let storage = Store::bootstrap_storage(&region);
            store
                .add_region(region.clone(), storage, KvState::default())
                .unwrap();
            let mut log = MemLog::create(1 << 20);
            log.append(&recovery_batch(&log, &store));
            let node = Node {
                store,
                carried: Carried::default(),
                log,
                syncs: 0,
            };
            nodes.insert(NodeId(id), node);
        }
        Cluster {
            nodes,
            replies: BTreeMap::new(),
        }
    }

    /// Driver rounds on every node, delivering every message, until no message moves.
    fn run(&mut self) {
        for _ in 0..100 {
            let mut mail = Vec::new();
            for node in self.nodes.values_mut() {
                while let Some(mut ready) = node.store.ready() {
                    mail.extend(ready.messages_now());
                    let round = round_batch(&ready, &mut node.carried);
                    if !round.batch.is_empty() {
                        node.log.append(&round.batch);
                        node.syncs += 1;
                    }
                    let persisted = node.store.on_persisted(ready);
                    mail.extend(persisted.messages);
                }
                self.replies.extend(node.store.take_replies());
            }
            if mail.is_empty() {
                return;
            }
            for (to, batch) in mail {
                self.nodes
                    .get_mut(&to)
                    .unwrap()
                    .store
                    .on_raft_messages(batch);
            }
        }
        panic!("the cluster did not go quiet within 100 rounds");
    }

    fn elect(&mut self) -> NodeId {
        self.nodes.get_mut(&NodeId(1)).unwrap().store.campaign_all();
        self.run();
        assert_eq!(self.role(NodeId(1)), Role::Leader);
        NodeId(1)
    }

    fn role(&self, id: NodeId) -> Role {
        self.nodes[&id].store.raft(REGION).unwrap().role()
    }

    fn syncs(&self) -> BTreeMap<NodeId, usize> {
        self.nodes.iter().map(|(id, n)| (*id, n.syncs)).collect()
    }

    fn put(&mut self, leader: NodeId, token: Token, key: &str) {
        let request = KvRequest {
            region: REGION,
            epoch: RegionEpoch::default(),
            namespace: String::new(),
            mode: Mode::Strong,
            op: KvOp::Put {
                key: key.as_bytes().to_vec(),
                value: b"v".to_vec(),
            },
        };
        self.nodes
            .get_mut(&leader)
            .unwrap()
            .store
            .on_request(token, request);
        self.run();
        assert!(
            matches!(self.replies.get(&token), Some(Ok(KvReply::Written { .. }))),
            "the write was not answered: {:?}",
            self.replies.get(&token)
        );
    }

    /// The hard state the node's WAL would give back at recovery.
    fn logged_hard_state(&self, id: NodeId) -> tessera_core::HardState {
        self.nodes[&id].log.hard_state(REGION).unwrap().unwrap()
    }
}

#[test]
fn a_write_costs_every_node_one_wal_sync() {
    let mut cluster = Cluster::new();
    let leader = cluster.elect();
    let before = cluster.syncs();
    cluster.put(leader, 1, "a");
    let after = cluster.syncs();
    // The leader: its entry. Each follower: the entry. The commit that follows (on the leader
    // when the quorum answers, on the followers when the leader tells them) writes nothing.
    for (id, count) in &after {
        assert_eq!(
            count - before[id],
            1,
            "{id:?} synced {} times",
            count - before[id]
        );
    }
}

#[test]
fn a_commit_only_hard_state_is_carried_into_the_next_batch() {
    let mut cluster = Cluster::new();
    let leader = cluster.elect();
    cluster.put(leader, 1, "a");
    let committed = cluster.nodes[&leader]
        .store
        .raft(REGION)
        .unwrap()
        .committed();
    // Not written yet: the WAL still has the commit of an earlier batch.
    assert!(cluster.logged_hard_state(leader).commit < committed);
    cluster.put(leader, 2, "b");
    // The second write's batch carried the first one's commit (at least).
    assert!(cluster.logged_hard_state(leader).commit >= committed);
    // A shutdown writes what is carried: then the WAL has the newest commit on every node.
    for node in cluster.nodes.values_mut() {
        let batch = node.carried.take_batch();
        if !batch.is_empty() {
            node.log.append(&batch);
        }
        assert!(
            node.carried.take_batch().is_empty(),
            "take_batch empties it"
        );
    }
    for id in [NodeId(1), NodeId(2), NodeId(3)] {
        let store_commit = cluster.nodes[&id].store.raft(REGION).unwrap().committed();
        assert_eq!(cluster.logged_hard_state(id).commit, store_commit, "{id:?}");
    }
}

#[test]
fn a_new_term_and_vote_are_written_in_their_own_round() {
    let mut cluster = Cluster::new();
    let leader = cluster.elect();
    // No write after the election: whatever the WAL holds came from the election's rounds.
    for id in [NodeId(1), NodeId(2), NodeId(3)] {
        let core = cluster.nodes[&id].store.raft(REGION).unwrap();
        let logged = cluster.logged_hard_state(id);
        assert_eq!(logged.term, core.term(), "{id:?}");
        assert_eq!(logged.vote, Some(leader), "{id:?} voted for the leader");
    }
}
