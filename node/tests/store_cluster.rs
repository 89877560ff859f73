//! Whole nodes' Stores (three of them, two Regions) over an in-process network, driven round
//! by round exactly as the glommio driver does, without any runtime: elections, writes,
//! linearizable reads, typed errors, snapshots catching up a node that fell behind, splits,
//! and moving a replica to a fourth store (learner seeded by snapshot, promotion, removal).

use std::collections::BTreeMap;

use tessera_core::{NodeId, RegionId, Role};
use tessera_node::kv::KvState;
use tessera_node::region::{Region, RegionEpoch};
use tessera_node::request::{KvError, KvOp, KvReply, KvRequest, KvResult, Mode};
use tessera_node::store::{Store, StoreConfig, Token};

struct Cluster {
    stores: BTreeMap<NodeId, Store>,
    down: Vec<NodeId>,
    replies: BTreeMap<Token, KvResult>,
    next_token: Token,
}

fn layout() -> Vec<Region> {
    let peers = vec![NodeId(1), NodeId(2), NodeId(3)];
    vec![
        Region {
            id: RegionId(1),
            start_key: vec![],
            end_key: b"m".to_vec(),
            epoch: RegionEpoch::default(),
            peers: peers.clone(),
        },
        Region {
            id: RegionId(2),
            start_key: b"m".to_vec(),
            end_key: vec![],
            epoch: RegionEpoch::default(),
            peers,
        },
    ]
}

impl Cluster {
    fn new(snapshot_interval_entries: u64) -> Cluster {
        let mut stores = BTreeMap::new();
        for id in 1..=3 {
            let mut config = StoreConfig::new(NodeId(id));
            config.snapshot_interval_entries = snapshot_interval_entries;
            let mut store = Store::new(config);
            for region in layout() {
                let storage = Store::bootstrap_storage(&region);
                store
                    .add_region(region, storage, KvState::default())
                    .unwrap();
            }
            stores.insert(NodeId(id), store);
        }
        Cluster {
            stores,
            down: Vec::new(),
            replies: BTreeMap::new(),
            next_token: 1,
        }
    }

    /// One driver round on every node, delivering all messages, until quiet.
    fn run_rounds(&mut self, rounds: usize) {
        for _ in 0..rounds {
            let mut mail: Vec<(NodeId, Vec<(RegionId, tessera_core::Message)>)> = Vec::new();
            for (id, store) in self.stores.iter_mut() {
                if self.down.contains(id) {
                    continue;
                }
                while let Some(mut ready) = store.ready() {
                    mail.extend(ready.messages_now());
                    let persisted = store.on_persisted(ready);
                    mail.extend(persisted.messages);
                }
                for (token, reply) in store.take_replies() {
                    self.replies.insert(token, reply);
                }
            }
            if mail.is_empty() {
                return;
            }
            for (to, batch) in mail {
                if self.down.contains(&to) {
                    continue;
                }
                self.stores.get_mut(&to).unwrap().on_raft_messages(batch);
            }
        }
    }

    fn tick(&mut self, ticks: usize) {
        for _ in 0..ticks {
            for (id, store) in self.stores.iter_mut() {
                if !self.down.contains(id) {
                    store.on_tick();
                }
            }
            self.run_rounds(50);
        }
    }

    fn leader(&self, region: RegionId) -> Option<NodeId> {
        self.stores
            .iter()
            .filter(|(id, _)| !self.down.contains(id))
            .find(|(_, s)| s.raft(region).is_some_and(|r| r.role() == Role::Leader))
            .map(|(id, _)| *id)
    }

    /// Ticks until both Regions have a leader (deadline: 200 ticks).
    fn elect(&mut self) {
        for _ in 0..200 {
            if self.leader(RegionId(1)).is_some() && self.leader(RegionId(2)).is_some() {
                return;
            }
            self.tick(1);
        }
        panic!("no leaders elected within 200 ticks");
    }

    fn request(&mut self, node: NodeId, region: RegionId, mode: Mode, op: KvOp) -> KvResult {
        let request = KvRequest {
            namespace: "test".into(),
            mode,
            region,
            epoch: RegionEpoch::default(),
            op,
        };
        let token = self.send(node, request);
        self.wait(token)
    }

    /// Hands a request to `node` without running any round.
    fn send(&mut self, node: NodeId, request: KvRequest) -> Token {
        let token = self.next_token;
        self.next_token += 1;
        self.stores
            .get_mut(&node)
            .unwrap()
            .on_request(token, request);
        token
    }

    /// Runs rounds and ticks until `token` is answered.
    fn wait(&mut self, token: Token) -> KvResult {
        for _ in 0..100 {
            self.run_rounds(50);
            if let Some(reply) = self.replies.remove(&token) {
                return reply;
            }
            self.tick(1);
        }
        panic!("request {token} not answered within 100 ticks");
    }

    fn put(&mut self, region: RegionId, key: &str, value: &str) -> KvResult {
        let leader = self.leader(region).expect("leader");
        let op = KvOp::Put {
            key: key.into(),
            value: value.into(),
        };
        self.request(leader, region, Mode::Raw, op)
    }

    fn strong_get(&mut self, region: RegionId, key: &str) -> Option<(Vec<u8>, u64)> {
        let leader = self.leader(region).expect("leader");
        match self.request(leader, region, Mode::Strong, KvOp::Get { key: key.into() }) {
            Ok(KvReply::Value { found }) => found,
            other => panic!("unexpected get reply {other:?}"),
        }
    }
}

#[test]
fn two_regions_elect_leaders_and_serve_writes_and_linearizable_reads() {
    let mut cluster = Cluster::new(10_000);
    cluster.elect();
    assert!(matches!(
        cluster.put(RegionId(1), "apple", "red"),
        Ok(KvReply::Written { .. })
    ));
    assert!(matches!(
        cluster.put(RegionId(2), "pear", "green"),
        Ok(KvReply::Written { .. })
    ));
    assert_eq!(cluster.strong_get(RegionId(1), "apple").unwrap().0, b"red");
    assert_eq!(cluster.strong_get(RegionId(2), "pear").unwrap().0, b"green");
    assert_eq!(cluster.strong_get(RegionId(1), "absent"), None);
    // Every replica applied the writes.
    cluster.run_rounds(50);
    cluster.tick(3);
    for store in cluster.stores.values() {
        assert_eq!(
            store
                .kv(RegionId(1))
                .unwrap()
                .get("test", b"apple")
                .unwrap()
                .value,
            b"red"
        );
    }
}

#[test]
fn typed_errors_for_followers_foreign_keys_stale_epochs_and_failed_compares() {
    let mut cluster = Cluster::new(10_000);
    cluster.elect();
    let leader = cluster.leader(RegionId(1)).unwrap();
    let follower = NodeId(if leader.0 == 1 { 2 } else { 1 });
    let get = KvOp::Get { key: b"a".to_vec() };
    match cluster.request(follower, RegionId(1), Mode::Strong, get.clone()) {
        Err(KvError::NotLeader { leader: hint, .. }) => assert_eq!(hint, Some(leader)),
        other => panic!("expected NotLeader, got {other:?}"),
    }
    let foreign = KvOp::Get {
        key: b"zebra".to_vec(),
    };
    assert!(matches!(
        cluster.request(leader, RegionId(1), Mode::Strong, foreign),
        Err(KvError::KeyNotInRegion { .. })
    ));
    assert!(matches!(
        cluster.request(leader, RegionId(9), Mode::Strong, get),
        Err(KvError::RegionNotFound(RegionId(9)))
    ));
    let cas = |expected_version| KvOp::Cas {
        key: b"k".to_vec(),
        expected_version,
        value: b"v".to_vec(),
    };
    let Ok(KvReply::Written { version }) =
        cluster.request(leader, RegionId(1), Mode::Strong, cas(0))
    else {
        panic!("create must succeed");
    };
    match cluster.request(leader, RegionId(1), Mode::Strong, cas(0)) {
        Err(KvError::VersionMismatch { current_version }) => assert_eq!(current_version, version),
        other => panic!("expected VersionMismatch, got {other:?}"),
    }
    let delete = KvOp::CasDelete {
        key: b"k".to_vec(),
        expected_version: version,
    };
    assert!(matches!(
        cluster.request(leader, RegionId(1), Mode::Strong, delete),
        Ok(KvReply::Written { version: 0 })
    ));
    assert_eq!(cluster.strong_get(RegionId(1), "k"), None);
}

#[test]
fn a_node_that_missed_compacted_entries_catches_up_by_snapshot() {
    let mut cluster = Cluster::new(20);
    cluster.elect();
    let leader = cluster.leader(RegionId(1)).unwrap();
    let lagging = NodeId(if leader.0 == 3 { 2 } else { 3 });
    cluster.down.push(lagging);
    for i in 0..100 {
        let reply = cluster.put(RegionId(1), &format!("k{i:03}"), &format!("v{i}"));
        assert!(reply.is_ok(), "{reply:?}");
    }
    assert!(cluster.stores[&leader].stats().snapshots_taken > 0);
    cluster.down.clear();
    for _ in 0..200 {
        cluster.tick(1);
        let kv = cluster.stores[&lagging].kv(RegionId(1)).unwrap();
        if kv.get("test", b"k099").is_some() {
            break;
        }
    }
    let store = &cluster.stores[&lagging];
    assert!(store.stats().snapshots_installed > 0, "caught up without a snapshot: {:?} leader={leader:?} lagging={lagging:?} first={:?} n3 term={:?} role={:?} commit={:?} leaderprog={:?}", store.stats(), store.raft(RegionId(1)).unwrap().log().first_index(), store.raft(RegionId(1)).unwrap().term(), store.raft(RegionId(1)).unwrap().role(), store.raft(RegionId(1)).unwrap().committed(), cluster.stores[&leader].raft(RegionId(1)).unwrap().progress(lagging));
    assert_eq!(
        store
            .kv(RegionId(1))
            .unwrap()
            .get("test", b"k099")
            .unwrap()
            .value,
        b"v99"
    );
    assert_eq!(store.kv(RegionId(1)).unwrap().len(), 100);
}

impl Cluster {
    /// Hands a request to `node` without running any round, at the epoch `node` has.
    fn submit(&mut self, node: NodeId, region: RegionId, op: KvOp) -> Token {
        let epoch = self.stores[&node]
            .regions()
            .find(|r| r.id == region)
            .map_or_else(RegionEpoch::default, |r| r.epoch);
        self.submit_at(node, region, epoch, op)
    }

    fn submit_at(&mut self, node: NodeId, region: RegionId, epoch: RegionEpoch, op: KvOp) -> Token {
        let request = KvRequest {
            namespace: "test".into(),
            mode: Mode::Strong,
            region,
            epoch,
            op,
        };
        self.send(node, request)
    }
}

#[test]
fn a_split_applies_once_on_every_replica_and_writes_that_lost_their_range_are_refused() {
    let mut cluster = Cluster::new(10_000);
    cluster.elect();
    for key in ["m1", "n2", "p3", "t4", "w5", "y6"] {
        assert!(cluster.put(RegionId(2), key, "v").is_ok());
    }
    let leader = cluster.leader(RegionId(2)).unwrap();
    let split = |key: &str, id: u64| KvOp::Split {
        key: key.into(),
        new_region: RegionId(id),
    };
    // Proposed together: the split, the same split again (at the same epoch, as a deposed
    // leader or a retry would), and a write to the upper half that was checked against the
    // old range but applies after the split.
    let first = cluster.submit(leader, RegionId(2), split("t", 4));
    let again = cluster.submit(leader, RegionId(2), split("p", 6));
    let late_write = cluster.submit(
        leader,
        RegionId(2),
        KvOp::Put {
            key: b"w9".to_vec(),
            value: b"lost".to_vec(),
        },
    );
    let Ok(KvReply::Split { left, right }) = cluster.wait(first) else {
        panic!("the first split must apply");
    };
    assert_eq!(
        (left.end_key.as_slice(), right.start_key.as_slice()),
        (&b"t"[..], &b"t"[..])
    );
    assert_eq!((left.epoch.version, right.epoch.version), (1, 1));
    assert!(matches!(
        cluster.wait(again),
        Err(KvError::StaleEpoch { .. })
    ));
    assert!(matches!(
        cluster.wait(late_write),
        Err(KvError::KeyNotInRegion { .. })
    ));
    cluster.tick(3);
    for (id, store) in &cluster.stores {
        let regions: Vec<&Region> = store.regions().collect();
        assert_eq!(
            regions.len(),
            3,
            "node {id:?}: exactly one new region, not two"
        );
        let keys = |region: u64| -> Vec<Vec<u8>> {
            let kv = store.kv(RegionId(region)).unwrap();
            kv.scan("test", b"", b"", 100)
                .0
                .into_iter()
                .map(|i| i.key)
                .collect()
        };
        assert_eq!(
            keys(2),
            vec![b"m1".to_vec(), b"n2".to_vec(), b"p3".to_vec()]
        );
        assert_eq!(
            keys(4),
            vec![b"t4".to_vec(), b"w5".to_vec(), b"y6".to_vec()]
        );
        assert_eq!(store.stats().splits_applied, 1);
    }
    // The new Region elects a leader and serves; the old one refuses its former keys.
    for _ in 0..200 {
        if cluster.leader(RegionId(4)).is_some() {
            break;
        }
        cluster.tick(1);
    }
    let new_leader = cluster
        .leader(RegionId(4))
        .expect("the new region elects a leader");
    // A retry of the applied split (its answer lost), routed to either half, gets the same
    // answer and splits nothing.
    for region in [2, 4] {
        let leader = cluster.leader(RegionId(region)).unwrap();
        let retry = cluster.submit(leader, RegionId(region), split("t", 4));
        let Ok(KvReply::Split { left: l, right: r }) = cluster.wait(retry) else {
            panic!("a retried split is answered");
        };
        assert_eq!((l, r), (left.clone(), right.clone()));
    }
    let token = cluster.submit(
        new_leader,
        RegionId(4),
        KvOp::Put {
            key: b"z7".to_vec(),
            value: b"v".to_vec(),
        },
    );
    let Ok(KvReply::Written { version }) = cluster.wait(token) else {
        panic!("the new region serves writes");
    };
    assert!(version > 6, "versions continue from the parent");
    // A client that routed with the old layout gets the current descriptor back.
    let old_leader = cluster.leader(RegionId(2)).unwrap();
    let stale = cluster.submit_at(
        old_leader,
        RegionId(2),
        RegionEpoch::default(),
        split("n", 8),
    );
    let Err(KvError::StaleEpoch { current }) = cluster.wait(stale) else {
        panic!("an old epoch is refused");
    };
    assert_eq!(current.end_key, b"t");
}

/// A leader proposes a write, replicates it to the followers and is cut off before it learns
/// that it committed; the others elect a new leader, commit the write and compact it into a
/// snapshot. When the old leader comes back it catches up by that snapshot, so it never sees
/// its entry committed. It must not then tell the client the write was dropped (the client
/// would retry it: a put applied twice, a compare-and-swap reported as a mismatch although it
/// succeeded); the outcome is unknown to it, and it must say so.
#[test]
fn a_write_covered_by_an_installed_snapshot_is_not_reported_as_dropped() {
    let mut cluster = Cluster::new(20);
    cluster.elect();
    let old_leader = cluster.leader(RegionId(1)).unwrap();
    let request = KvRequest {
        namespace: "test".into(),
        mode: Mode::Strong,
        region: RegionId(1),
        epoch: RegionEpoch::default(),
        op: KvOp::Cas {
            key: b"cas".to_vec(),
            expected_version: 0,
            value: b"first".to_vec(),
        },
    };
    let token = cluster.send(old_leader, request);
    // One round: the old leader sends its entry to the followers, which step it.
    cluster.run_rounds(1);
    cluster.down.push(old_leader);
    for _ in 0..200 {
        if cluster.leader(RegionId(1)).is_some() {
            break;
        }
        cluster.tick(1);
    }
    let new_leader = cluster.leader(RegionId(1)).expect("a new leader");
    for i in 0..100 {
        let reply = cluster.put(RegionId(1), &format!("k{i:03}"), &format!("v{i}"));
        assert!(reply.is_ok(), "{reply:?}");
    }
    let committed = cluster.strong_get(RegionId(1), "cas");
    assert_eq!(
        committed.as_ref().map(|(value, _)| value.as_slice()),
        Some(&b"first"[..]),
        "the new leader {new_leader:?} committed the old leader's write"
    );
    cluster.down.clear();
    for _ in 0..200 {
        cluster.tick(1);
        let kv = cluster.stores[&old_leader].kv(RegionId(1)).unwrap();
        if kv.get("test", b"k099").is_some() {
            break;
        }
    }
    assert!(cluster.stores[&old_leader].stats().snapshots_installed > 0);
    for _ in 0..3 {
        let reply = cluster.put(RegionId(1), "after", "x");
        assert!(reply.is_ok(), "{reply:?}");
    }
    cluster.tick(5);
    match cluster.replies.remove(&token) {
        Some(Err(KvError::Dropped(message))) => {
            panic!("the write took effect but the client was told it was dropped: {message}")
        }
        Some(Err(KvError::OutcomeUnknown(_))) => {}
        other => panic!("expected an unknown outcome, got {other:?}"),
    }
}

impl Cluster {
    /// Elects leaders, writes six keys to Region 2, then, with one follower of Region 2 down,
    /// splits it at "t" into Region 4 and waits for Region 4's leader. Returns Region 2's
    /// leader and the node that is down.
    fn split_with_one_replica_down(&mut self) -> (NodeId, NodeId) {
        self.elect();
        for key in ["m1", "n2", "p3", "t4", "w5", "y6"] {
            assert!(self.put(RegionId(2), key, "v").is_ok());
        }
        let leader = self.leader(RegionId(2)).unwrap();
        let down = NodeId(if leader.0 == 3 { 2 } else { 3 });
        self.down.push(down);
        let op = KvOp::Split {
            key: b"t".to_vec(),
            new_region: RegionId(4),
        };
        let split = self.submit(leader, RegionId(2), op);
        assert!(matches!(self.wait(split), Ok(KvReply::Split { .. })));
        for _ in 0..200 {
            if self.leader(RegionId(4)).is_some() {
                return (leader, down);
            }
            self.tick(1);
        }
        panic!("the new region elected no leader within 200 ticks");
    }

    /// A write to `region`'s leader at the epoch that leader has.
    fn put_at_current_epoch(&mut self, region: RegionId, key: &str) -> KvResult {
        let leader = self.leader(region).expect("leader");
        let op = KvOp::Put {
            key: key.into(),
            value: b"v".to_vec(),
        };
        let token = self.submit(leader, region, op);
        self.wait(token)
    }
}

/// The keys of `region` on `node`.
fn keys_of(cluster: &Cluster, node: NodeId, region: u64) -> Vec<Vec<u8>> {
    let kv = cluster.stores[&node].kv(RegionId(region)).unwrap();
    kv.scan("test", b"", b"", 1_000)
        .0
        .into_iter()
        .map(|i| i.key)
        .collect()
}

#[test]
fn a_replica_that_missed_a_split_by_compaction_gets_the_new_region_from_its_leader() {
    let mut cluster = Cluster::new(20);
    let (leader, missing) = cluster.split_with_one_replica_down();
    // Enough writes to both halves that each leader compacts its log past what the missing
    // replica has: it can only catch up by snapshots, and never applies the split itself.
    for i in 0..50 {
        for (region, key) in [(2, format!("n{i:03}")), (4, format!("x{i:03}"))] {
            let written = cluster.put_at_current_epoch(RegionId(region), &key);
            assert!(written.is_ok(), "{written:?}");
        }
    }
    let leader2 = cluster.leader(RegionId(2)).unwrap();
    let leader4 = cluster.leader(RegionId(4)).unwrap();
    assert!(
        cluster.stores[&leader2]
            .raft(RegionId(2))
            .unwrap()
            .log()
            .first_index()
            .0
            > 30
    );
    assert!(
        cluster.stores[&leader4]
            .raft(RegionId(4))
            .unwrap()
            .log()
            .first_index()
            .0
            > 30
    );

    cluster.down.clear();
    for _ in 0..300 {
        let store = &cluster.stores[&missing];
        let caught_up = store.regions().any(|r| r.id == RegionId(4))
            && store
                .kv(RegionId(4))
                .unwrap()
                .get("test", b"x049")
                .is_some()
            && store
                .kv(RegionId(2))
                .unwrap()
                .get("test", b"n049")
                .is_some();
        if caught_up {
            break;
        }
        cluster.tick(1);
    }
    let store = &cluster.stores[&missing];
    let stats = store.stats();
    assert_eq!(
        stats.splits_applied, 0,
        "the replica never applied the split"
    );
    assert_eq!(stats.peers_created_by_message, 1, "{stats:?}");
    assert!(!store.is_uninitialized(RegionId(4)));
    let mut regions: Vec<Region> = store.regions().cloned().collect();
    regions.sort_by_key(|r| r.id);
    let expected: Vec<Region> = cluster.stores[&leader]
        .regions()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(regions, expected, "the same layout as the leader's node");
    assert_eq!(keys_of(&cluster, missing, 4), keys_of(&cluster, leader4, 4));
    assert_eq!(keys_of(&cluster, missing, 2), keys_of(&cluster, leader2, 2));
    assert!(keys_of(&cluster, missing, 2)
        .iter()
        .all(|k| k.as_slice() < b"t".as_slice()));

    // A full replica: with the new Region's leader down, the missing replica and the third
    // node elect a leader and commit writes.
    cluster.down.push(leader4);
    for _ in 0..300 {
        if cluster.leader(RegionId(4)).is_some() {
            break;
        }
        cluster.tick(1);
    }
    assert!(
        cluster.leader(RegionId(4)).is_some(),
        "no quorum without the old leader"
    );
    let written = cluster.put_at_current_epoch(RegionId(4), "z9");
    assert!(written.is_ok(), "{written:?}");
    assert!(cluster.stores[&missing]
        .kv(RegionId(4))
        .unwrap()
        .get("test", b"z9")
        .is_some());
}

#[test]
fn an_uninitialized_peer_never_votes_campaigns_or_serves() {
    use tessera_core::{LogIndex, Message, MessageBody, Term};
    let mut store = Store::new(StoreConfig::new(NodeId(3)));
    let vote = |region: u64, term: u64| {
        (
            RegionId(region),
            Message {
                from: NodeId(2),
                to: NodeId(3),
                term: Term(term),
                body: MessageBody::RequestVote {
                    pre_vote: false,
                    last_log_index: LogIndex(100),
                    last_log_term: Term(term),
                    transfer: false,
                },
            },
        )
    };
    // A vote request creates nothing.
    store.on_raft_messages(vec![vote(7, 5)]);
    assert!(store.raft(RegionId(7)).is_none());
    assert_eq!(store.stats().unknown_region_messages, 1);
    // A heartbeat from the Region's leader creates an uninitialized peer.
    let heartbeat = Message {
        from: NodeId(1),
        to: NodeId(3),
        term: Term(5),
        body: MessageBody::Heartbeat {
            commit: LogIndex(40),
            read_context: 0,
        },
    };
    store.on_raft_messages(vec![(RegionId(7), heartbeat)]);
    assert!(store.is_uninitialized(RegionId(7)));
    assert_eq!(store.regions().count(), 0, "no range yet");
    assert!(store.status().is_empty());
    let drain = |store: &mut Store| {
        let mut sent = Vec::new();
        while let Some(mut ready) = store.ready() {
            sent.extend(ready.messages_now().into_values().flatten());
            sent.extend(store.on_persisted(ready).messages.into_values().flatten());
        }
        sent
    };
    let sent = drain(&mut store);
    assert!(sent
        .iter()
        .all(|(_, m)| matches!(m.body, MessageBody::HeartbeatResponse { .. })));
    // A vote request from another node, in a newer term, is neither granted nor answered.
    store.on_raft_messages(vec![vote(7, 6)]);
    let sent = drain(&mut store);
    assert!(sent.is_empty(), "{sent:?}");
    assert_eq!(store.raft(RegionId(7)).unwrap().vote(), None);
    assert_eq!(store.stats().uninitialized_refused, 1);
    // Long past any election timeout it has not campaigned.
    for _ in 0..200 {
        store.on_tick();
        let sent = drain(&mut store);
        assert!(sent.is_empty(), "{sent:?}");
    }
    assert_eq!(store.raft(RegionId(7)).unwrap().role(), Role::Follower);
    // And it serves nothing.
    let request = KvRequest {
        namespace: "test".into(),
        mode: Mode::Raw,
        region: RegionId(7),
        epoch: RegionEpoch::default(),
        op: KvOp::Get { key: b"a".to_vec() },
    };
    store.on_request(1, request);
    let replies = store.take_replies();
    assert!(matches!(
        replies[..],
        [(1, Err(KvError::RegionNotFound(_)))]
    ));
}

#[test]
fn a_split_applied_after_a_message_created_its_region_replaces_the_uninitialized_peer() {
    let mut cluster = Cluster::new(10_000);
    let (_, late) = cluster.split_with_one_replica_down();
    for i in 0..5 {
        let written = cluster.put_at_current_epoch(RegionId(4), &format!("x{i}"));
        assert!(written.is_ok(), "{written:?}");
    }
    // The late replica hears from the new Region's leader in the same batch that brings the
    // split: the message creates the peer first, then the split applies and replaces it.
    cluster.down.clear();
    let leader4 = cluster.leader(RegionId(4)).unwrap();
    for _ in 0..300 {
        let store = &cluster.stores[&late];
        if store
            .kv(RegionId(4))
            .is_some_and(|kv| kv.get("test", b"x4").is_some())
        {
            break;
        }
        cluster.tick(1);
    }
    let stats = cluster.stores[&late].stats();
    assert_eq!(stats.peers_created_by_message, 1, "{stats:?}");
    assert_eq!(stats.splits_applied, 1, "{stats:?}");
    assert!(!cluster.stores[&late].is_uninitialized(RegionId(4)));
    let regions: Vec<Region> = cluster.stores[&late].regions().cloned().collect();
    let expected: Vec<Region> = cluster.stores[&leader4].regions().cloned().collect();
    assert_eq!(regions, expected, "one new region, as on the other nodes");
    assert_eq!(keys_of(&cluster, late, 4), keys_of(&cluster, leader4, 4));
    assert_eq!(keys_of(&cluster, late, 2), keys_of(&cluster, leader4, 2));
}

impl Cluster {
    /// A store that holds no Region yet (a store that joined the running cluster).
    fn add_empty_store(&mut self, id: u64, snapshot_interval_entries: u64) {
        let mut config = StoreConfig::new(NodeId(id));
        config.snapshot_interval_entries = snapshot_interval_entries;
        self.stores.insert(NodeId(id), Store::new(config));
    }

    /// One `MoveStep` at the Region's current leader.
    fn move_step(&mut self, region: RegionId, from: u64, to: u64) -> KvResult {
        let leader = self.leader(region).expect("leader");
        let op = KvOp::MoveStep {
            from: NodeId(from),
            to: NodeId(to),
        };
        let token = self.submit(leader, region, op);
        self.wait(token)
    }

    fn conf(&self, node: u64, region: RegionId) -> tessera_core::ConfState {
        let store = &self.stores[&NodeId(node)];
        store.raft(region).unwrap().conf_state().clone()
    }
}

/// Three stores holding both Regions and a fourth holding none, `writes` keys written to
/// region 1, snapshots every `snapshot_interval_entries`.
fn four_stores_with_writes(snapshot_interval_entries: u64, writes: usize) -> Cluster {
    let mut cluster = Cluster::new(snapshot_interval_entries);
    cluster.add_empty_store(4, snapshot_interval_entries);
    cluster.elect();
    for i in 0..writes {
        assert!(cluster.put(RegionId(1), &format!("a{i:03}"), "v").is_ok());
    }
    cluster
}

/// Every replica of region 1 holds the same keys (and `count` of them).
fn assert_replicas_hold(cluster: &Cluster, nodes: &[u64], count: usize) {
    let expected = keys_of(cluster, NodeId(nodes[0]), 1);
    assert_eq!(expected.len(), count);
    for node in nodes {
        assert_eq!(keys_of(cluster, NodeId(*node), 1), expected, "node {node}");
    }
}

#[test]
fn a_replica_moves_to_a_new_store_as_a_learner_seeded_by_snapshot_then_promoted_and_the_old_one_destroyed(
) {
    let mut cluster = four_stores_with_writes(10, 40);
    let leader = cluster.leader(RegionId(1)).unwrap();
    assert!(
        cluster.stores[&leader]
            .raft(RegionId(1))
            .unwrap()
            .log()
            .first_index()
            .0
            > 20,
        "the leader's log is compacted: the new replica cannot be caught up by a replay"
    );
    // Move the replica of a follower (the leader's own is the other test's case).
    let from = if leader.0 == 1 { 2 } else { 1 };
    let epoch_before = cluster.stores[&leader]
        .regions()
        .find(|r| r.id == RegionId(1))
        .unwrap()
        .epoch;

    // Step 1: a learner on store 4, created by the leader's message, seeded by its snapshot.
    let first = cluster.move_step(RegionId(1), from, 4).unwrap();
    assert!(
        matches!(&first, KvReply::MoveStep { done: false, detail } if detail.contains("AddLearner")),
        "{first:?}"
    );
    cluster.tick(5);
    assert!(cluster.conf(leader.0, RegionId(1)).is_learner(NodeId(4)));
    let new = &cluster.stores[&NodeId(4)];
    assert_eq!(new.stats().peers_created_by_message, 1);
    assert_eq!(
        new.stats().snapshots_installed,
        1,
        "seeded by exactly one snapshot"
    );
    assert!(
        new.raft(RegionId(1))
            .unwrap()
            .storage()
            .snapshot_metadata()
            .index
            .0
            > 20,
        "the learner's log starts at the leader's snapshot, not at the beginning"
    );
    assert_replicas_hold(&cluster, &[leader.0, 4], 40);

    // A learner never counts toward the quorum: with the two other voters down, the leader
    // and the learner (two of four members) cannot commit a write.
    let others: Vec<NodeId> = [1, 2, 3]
        .into_iter()
        .map(NodeId)
        .filter(|n| *n != leader)
        .collect();
    cluster.down.extend(others.iter().copied());
    let token = cluster.submit(
        leader,
        RegionId(1),
        KvOp::Put {
            key: b"b000".to_vec(),
            value: b"v".to_vec(),
        },
    );
    for _ in 0..3 {
        cluster.tick(1);
    }
    assert!(
        !cluster.replies.contains_key(&token),
        "committed without a quorum of voters"
    );
    let committed = cluster.stores[&leader]
        .raft(RegionId(1))
        .unwrap()
        .committed();
    let learner_match = cluster.stores[&leader]
        .raft(RegionId(1))
        .unwrap()
        .progress(NodeId(4))
        .unwrap()
        .match_index;
    assert!(
        learner_match > committed,
        "the learner has the entry ({learner_match:?}) but it did not commit ({committed:?})"
    );
    cluster.down.clear();
    assert!(cluster.wait(token).is_ok());

    // Steps 2 and 3: promotion once caught up, then removal of the old replica.
    let mut steps = Vec::new();
    for _ in 0..20 {
        match cluster.move_step(RegionId(1), from, 4).unwrap() {
            KvReply::MoveStep { done: true, .. } => break,
            KvReply::MoveStep { detail, .. } => steps.push(detail),
            other => panic!("{other:?}"),
        }
        cluster.tick(2);
    }
    assert!(
        steps.iter().any(|s| s.contains("AddVoter")) && steps.iter().any(|s| s.contains("Remove")),
        "{steps:?}"
    );
    cluster.tick(5);
    let remaining: Vec<u64> = [1, 2, 3, 4].into_iter().filter(|n| *n != from).collect();
    for node in &remaining {
        let region = cluster.stores[&NodeId(*node)]
            .regions()
            .find(|r| r.id == RegionId(1))
            .unwrap()
            .clone();
        let expected: Vec<NodeId> = remaining.iter().copied().map(NodeId).collect();
        assert_eq!(region.peers, expected, "node {node}");
        assert_eq!(
            region.epoch.conf_version,
            epoch_before.conf_version + 3,
            "one bump per change"
        );
        assert_eq!(region.epoch.version, epoch_before.version);
        assert!(cluster.conf(*node, RegionId(1)).is_voter(NodeId(4)));
    }
    assert_replicas_hold(&cluster, &remaining, 41);

    // The removed replica applied its removal and was destroyed, with a tombstone.
    let source = cluster.stores.get_mut(&NodeId(from)).unwrap();
    assert!(source.raft(RegionId(1)).is_none() && source.kv(RegionId(1)).is_none());
    assert_eq!(source.stats().replicas_destroyed, 1);
    let destroyed = source.take_destroyed();
    assert_eq!(destroyed.len(), 1);
    assert_eq!(destroyed[0].region, RegionId(1));
    assert_eq!(destroyed[0].conf_version, epoch_before.conf_version + 3);
    assert!(source.regions().all(|r| r.id != RegionId(1)));
    let served = cluster.put_at_current_epoch(RegionId(1), "c000");
    assert!(served.is_ok(), "the moved Region serves: {served:?}");
}

#[test]
fn moving_the_leaders_own_replica_transfers_leadership_first() {
    let mut cluster = four_stores_with_writes(1000, 10);
    let old_leader = cluster.leader(RegionId(1)).unwrap();
    let mut transferred = false;
    for _ in 0..40 {
        match cluster.move_step(RegionId(1), old_leader.0, 4).unwrap() {
            KvReply::MoveStep { done: true, .. } => break,
            KvReply::MoveStep { detail, .. } => transferred |= detail.contains("transferring"),
            other => panic!("{other:?}"),
        }
        cluster.tick(2);
    }
    assert!(
        transferred,
        "the leader handed its leadership over before its removal"
    );
    cluster.tick(5);
    let new_leader = cluster.leader(RegionId(1)).expect("a leader");
    assert_ne!(new_leader, old_leader);
    assert!(
        cluster.stores[&old_leader].raft(RegionId(1)).is_none(),
        "the old leader's replica is destroyed"
    );
    let remaining: Vec<u64> = [1, 2, 3, 4]
        .into_iter()
        .filter(|n| *n != old_leader.0)
        .collect();
    assert_replicas_hold(&cluster, &remaining, 10);
}

#[test]
fn a_replica_the_driver_reports_removed_is_destroyed_and_a_stale_snapshot_never_brings_it_back() {
    let mut cluster = Cluster::new(10);
    cluster.elect();
    for i in 0..30 {
        assert!(cluster.put(RegionId(1), &format!("a{i:03}"), "v").is_ok());
    }
    let leader = cluster.leader(RegionId(1)).unwrap();
    let follower = NodeId(if leader.0 == 1 { 2 } else { 1 });
    let epoch = cluster.stores[&follower]
        .regions()
        .find(|r| r.id == RegionId(1))
        .unwrap()
        .epoch;
    // The driver's view is not newer: refused.
    let token = cluster.submit_at(follower, RegionId(1), epoch, KvOp::DestroyReplica);
    assert!(matches!(
        cluster.wait(token),
        Err(KvError::InvalidRequest(_))
    ));
    // A leader is never destroyed.
    let newer = RegionEpoch {
        conf_version: epoch.conf_version + 1,
        ..epoch
    };
    let token = cluster.submit_at(leader, RegionId(1), newer, KvOp::DestroyReplica);
    assert!(matches!(
        cluster.wait(token),
        Err(KvError::InvalidRequest(_))
    ));
    let token = cluster.submit_at(follower, RegionId(1), newer, KvOp::DestroyReplica);
    assert_eq!(cluster.wait(token), Ok(KvReply::Destroyed));
    assert!(cluster.stores[&follower].raft(RegionId(1)).is_none());
    // Here the leader still counts the follower as a member and keeps sending to it: its
    // messages create an uninitialized peer, and its snapshot (at a conf version the
    // tombstone covers) is refused, so the destroyed replica never comes back.
    for i in 0..5 {
        assert!(
            cluster.put(RegionId(1), &format!("b{i}"), "v").is_ok(),
            "two voters commit"
        );
        cluster.tick(5);
    }
    let store = &cluster.stores[&follower];
    assert!(store.stats().tombstone_refused > 0, "{:?}", store.stats());
    assert!(store.regions().all(|r| r.id != RegionId(1)));
    assert!(store.kv(RegionId(1)).is_none_or(|kv| kv.is_empty()));
    assert!(
        cluster.put(RegionId(1), "b", "v").is_ok(),
        "two voters still commit"
    );
}

#[test]
fn a_move_cut_off_mid_way_leaves_the_region_serving_and_resumes_under_a_new_leader_after_healing() {
    let mut cluster = four_stores_with_writes(10, 30);
    let first_leader = cluster.leader(RegionId(1)).unwrap();
    let from = if first_leader.0 == 3 { 2 } else { 3 };
    // The learner is added, then store 4 is cut off before it could be promoted.
    cluster.down.push(NodeId(4));
    let step = cluster.move_step(RegionId(1), from, 4).unwrap();
    assert!(
        matches!(&step, KvReply::MoveStep { detail, .. } if detail.contains("snapshot") || detail.contains("AddLearner")),
        "{step:?}"
    );
    for _ in 0..5 {
        let _ = cluster.move_step(RegionId(1), from, 4).unwrap();
        cluster.tick(2);
    }
    let conf = cluster.conf(first_leader.0, RegionId(1));
    assert!(
        conf.is_learner(NodeId(4)),
        "never promoted while cut off: {conf:?}"
    );
    // The Region keeps serving with its three voters.
    for i in 0..5 {
        assert!(cluster
            .put_at_current_epoch(RegionId(1), &format!("b{i:03}"))
            .is_ok());
    }
    // The leader crashes mid-move; another voter takes over.
    cluster.down.push(first_leader);
    for _ in 0..200 {
        if cluster
            .leader(RegionId(1))
            .is_some_and(|l| l != first_leader)
        {
            break;
        }
        cluster.tick(1);
    }
    let second_leader = cluster.leader(RegionId(1)).expect("a new leader");
    assert_ne!(second_leader, first_leader);
    // Healed: the new leader picks the move up from the replicated membership and ends it.
    cluster.down.clear();
    let mut done = false;
    for _ in 0..40 {
        if let KvReply::MoveStep { done: true, .. } =
            cluster.move_step(RegionId(1), from, 4).unwrap()
        {
            done = true;
            break;
        }
        cluster.tick(2);
    }
    assert!(done, "the move resumed and completed under the new leader");
    cluster.tick(5);
    let remaining: Vec<u64> = [1, 2, 3, 4].into_iter().filter(|n| *n != from).collect();
    assert_replicas_hold(&cluster, &remaining, 35);
    assert!(cluster.stores[&NodeId(from)].raft(RegionId(1)).is_none());
}

impl Cluster {
    /// Takes `MoveStep`s at the leader (ticking between them) until the move is done.
    fn move_until_done(&mut self, from: u64, to: u64) {
        for _ in 0..60 {
            if let KvReply::MoveStep { done: true, .. } =
                self.move_step(RegionId(1), from, to).unwrap()
            {
                return;
            }
            self.tick(2);
        }
        panic!("moving region 1 from {from} to {to} did not finish");
    }
}

/// Found by the node simulation: a lagging replica that applied its removal and its re-add
/// in one round destroyed itself although it was a member again.
#[test]
fn a_replica_removed_and_added_back_in_one_round_is_kept() {
    let mut cluster = four_stores_with_writes(1000, 10);
    let leader = cluster.leader(RegionId(1)).unwrap();
    let lagging = if leader.0 == 1 { 2 } else { 1 };
    // Store 4 becomes a voter with the lagging replica up; the lagging one then misses its
    // removal.
    for _ in 0..60 {
        if cluster.conf(leader.0, RegionId(1)).is_voter(NodeId(4)) {
            break;
        }
        let _ = cluster.move_step(RegionId(1), lagging, 4).unwrap();
        cluster.tick(2);
    }
    cluster.down.push(NodeId(lagging));
    cluster.move_until_done(lagging, 4);
    // Back again: the lagging replica, still down, is added as a learner.
    let step = cluster.move_step(RegionId(1), 4, lagging).unwrap();
    assert!(
        matches!(&step, KvReply::MoveStep { detail, .. } if detail.contains("AddLearner")),
        "{step:?}"
    );
    // It comes back and, before the next step, receives its removal and its re-add
    // together (the log is not compacted, so by appends).
    cluster.down.clear();
    cluster.tick(3);
    assert_eq!(
        cluster.stores[&NodeId(lagging)].stats().snapshots_installed,
        0
    );
    cluster.move_until_done(4, lagging);
    cluster.tick(5);
    let store = &cluster.stores[&NodeId(lagging)];
    assert_eq!(store.stats().replicas_destroyed, 0);
    assert!(store.tombstones().is_empty());
    let remaining: Vec<u64> = [1, 2, 3].into_iter().collect();
    assert_replicas_hold(&cluster, &remaining, 10);
}

/// Found by the node simulation: moving a Region back onto a store that destroyed its old
/// replica, in a Region without new writes, must seed it with a snapshot newer than the
/// tombstone (an older one is refused forever), even with a single entry to cover.
#[test]
fn a_region_moved_back_onto_a_store_with_its_tombstone_is_seeded_by_a_newer_snapshot() {
    let mut cluster = four_stores_with_writes(10, 30);
    let leader = cluster.leader(RegionId(1)).unwrap();
    let from = if leader.0 == 1 { 2 } else { 1 };
    cluster.move_until_done(from, 4);
    cluster.tick(5);
    assert_eq!(cluster.stores[&NodeId(from)].stats().replicas_destroyed, 1);
    assert!(cluster.stores[&NodeId(from)]
        .tombstones()
        .contains_key(&RegionId(1)));
    cluster.move_until_done(4, from);
    cluster.tick(5);
    let back = &cluster.stores[&NodeId(from)];
    assert!(back.regions().any(|r| r.id == RegionId(1)), "seeded again");
    let remaining: Vec<u64> = [1, 2, 3].into_iter().collect();
    assert_replicas_hold(&cluster, &remaining, 30);
}

/// A leader that lost leadership with writes still uncommitted, whose entries the next leader
/// replaced, and that then led again with a shorter log: its new writes land at indexes below
/// its old proposals. Each write must get its own answer: the old ones "dropped" (their entries
/// are gone), the new ones their outcome once applied — never "dropped" for a write that took
/// effect (the client would send it again: a duplicate, seen once by the chaos suite as one
/// put at two versions).
#[test]
fn a_leader_again_with_a_shorter_log_answers_each_new_write_with_its_own_outcome() {
    let mut cluster = Cluster::new(100_000);
    let a = NodeId(1);
    cluster.stores.get_mut(&a).unwrap().campaign_all();
    cluster.run_rounds(50);
    assert_eq!(cluster.leader(RegionId(1)), Some(a));
    assert!(cluster.put(RegionId(1), "before", "0").is_ok());
    let put = |key: &str| KvRequest {
        namespace: "test".into(),
        mode: Mode::Raw,
        region: RegionId(1),
        epoch: RegionEpoch::default(),
        op: KvOp::Put {
            key: key.into(),
            value: b"v".to_vec(),
        },
    };
    // Cut off from its followers, A appends ten writes nobody else sees.
    cluster.down = vec![NodeId(2), NodeId(3)];
    let stale: Vec<Token> = (0..10)
        .map(|i| cluster.send(a, put(&format!("a-stale-{i}"))))
        .collect();
    cluster.run_rounds(5);
    // A goes down; the others elect a leader that commits one write (its log ends below A's).
    cluster.down = vec![a];
    for _ in 0..200 {
        if cluster.leader(RegionId(1)).is_some() {
            break;
        }
        cluster.tick(1);
    }
    assert!(cluster.leader(RegionId(1)).is_some_and(|b| b != a));
    assert!(cluster.put(RegionId(1), "between", "1").is_ok());
    // A is back and catches up (its ten entries replaced), then leads again with the other
    // leader down.
    cluster.down.clear();
    cluster.tick(3);
    let other = cluster.leader(RegionId(1)).unwrap();
    cluster.down = vec![other];
    for _ in 0..200 {
        cluster.stores.get_mut(&a).unwrap().campaign_all();
        cluster.run_rounds(50);
        if cluster.leader(RegionId(1)) == Some(a) {
            break;
        }
        cluster.tick(1);
    }
    assert_eq!(cluster.leader(RegionId(1)), Some(a), "A leads again");
    // New writes at A, in flight together as from concurrent clients: each is answered with
    // its own outcome.
    let new: Vec<(String, Token)> = (0..12)
        .map(|i| {
            let key = format!("a-new-{i}");
            let token = cluster.send(a, put(&key));
            (key, token)
        })
        .collect();
    for (key, token) in new {
        let reply = cluster.wait(token);
        assert!(
            matches!(reply, Ok(KvReply::Written { .. })),
            "{key}: {reply:?} for a write that was applied"
        );
    }
    for token in stale {
        match cluster.replies.remove(&token) {
            Some(Err(KvError::Dropped(_))) => {}
            other => panic!("a replaced write: expected dropped, got {other:?}"),
        }
    }
    // Some of them were answered when the first new write went below them (the counter the
    // whole-node simulation reads to know it reached this shape).
    let replaced = cluster.stores[&a].stats().proposals_replaced_on_propose;
    assert!(
        (1..=10).contains(&replaced),
        "{replaced} replaced on propose"
    );
    for i in 0..10 {
        let key = format!("a-stale-{i}");
        assert_eq!(
            cluster.strong_get(RegionId(1), &key),
            None,
            "{key} was dropped"
        );
    }
}
