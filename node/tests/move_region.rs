//! Replica moves with real processes on loopback: a store joins a running cluster (it starts
//! with no Regions), `tessera move` moves a Region onto it while a client writes, and the
//! placement driver's balancer fills it until Region counts differ by at most one, then spreads
//! the leaders. Every
//! acknowledged write is read back afterwards, and the source store's replica is gone from
//! its status, also after a restart (its tombstone). A move whose target is cut off by a
//! network partition leaves the Region serving and completes after healing; a cancelled move
//! is rolled back. While the balancer works, every Region keeps a quorum of caught-up voters.

mod common;
#[path = "chaos/proxy.rs"]
mod proxy;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::cluster::{Cluster, CLUSTER_TIMEOUT, FAST_CONFIG};
use common::{free_ports, wait_for, Node};
use proxy::Mesh;
use tessera_node::client::{Client, ClientOptions};
use tessera_transport::client::{Mode, PdStatus, RegionStatus};

/// The tests of this file run one at a time: each runs four nodes and a writer, and on the
/// 2-CPU machine three such clusters at once starve each other's cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How long a move or a balancing round may take on a loaded machine.
const MOVE_TIMEOUT: Duration = Duration::from_secs(90);

fn node(id: u64, config: &str) -> Node {
    Node::one_core(id, config)
}

fn config(extra: &str) -> String {
    format!(
        "{FAST_CONFIG}pd_heartbeat_interval_ms = 100\nsnapshot_interval_entries = 64\n\
         split_size_bytes = 0\n{extra}"
    )
}

fn client_of(node: &Node) -> Option<Client> {
    let options = ClientOptions {
        request_timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    };
    Client::connect(&node.client_addr(0), options).ok()
}

/// Three stores bootstrapped through node 1's placement driver, then a fourth that joins the
/// running cluster (it serves with no Regions).
fn cluster_and_joiner(extra: &str) -> Cluster {
    cluster_and_joiner_through(extra, None)
}

/// `cluster_and_joiner`, with every node's peer traffic through `mesh` (built for 4 nodes
/// of one core on the peer ports of `ports`) when given.
fn cluster_and_joiner_through(extra: &str, mesh: Option<(&Mesh, &[common::Ports])>) -> Cluster {
    let config = config(extra);
    let node = |id: u64, config: &str| {
        let Some((mesh, ports)) = mesh else {
            return node(id, config);
        };
        let i = (id - 1) as usize;
        let dial: Vec<String> = (0..ports.len())
            .filter(|j| *j != i)
            .map(|j| format!("\"{}=127.0.0.1:{}\"", j + 1, mesh.port(i, j)))
            .collect();
        let config = format!("{config}peer_dial_addrs = [{}]\n", dial.join(", "));
        let mut node = node(id, &config);
        node.spec.ports = ports[i];
        node
    };
    let mut pd = node(1, &format!("{config}replicas = 3\n"));
    pd.spawn();
    let join = format!("{config}join = \"{}\"\n", pd.client_addr(0));
    let mut nodes = vec![pd, node(2, &join), node(3, &join)];
    for node in &mut nodes[1..] {
        node.spawn();
    }
    for node in &nodes {
        wait_answering(node);
    }
    let mut joiner = node(4, &join);
    joiner.spawn();
    wait_answering(&joiner);
    nodes.push(joiner);
    Cluster { nodes }
}

/// Waits until the node answers `status` (a multi-node store need not lead anything).
fn wait_answering(node: &Node) {
    wait_for("the node to answer", CLUSTER_TIMEOUT, || {
        client_of(node)?.status(Some(&node.client_addr(0))).ok()
    });
}

fn pd_status(cluster: &Cluster) -> Option<PdStatus> {
    client_of(&cluster.nodes[0])?.pd_status().ok()
}

/// Region replicas per store, as the placement driver records them.
fn counts(status: &PdStatus) -> BTreeMap<u64, usize> {
    let mut counts: BTreeMap<u64, usize> = status
        .stores
        .iter()
        .map(|s| (s.store.node_id.get(), 0))
        .collect();
    for report in &status.regions {
        for peer in &report.region.peers {
            *counts.entry(peer.get()).or_default() += 1;
        }
    }
    counts
}

/// A client that writes distinct keys across the key space until stopped, counting the
/// acknowledged writes in `acked` as it goes, and hands them back.
fn writer(
    node: &Node,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> JoinHandle<Vec<(String, String)>> {
    let addr = node.client_addr(0);
    std::thread::spawn(move || {
        let options = ClientOptions {
            request_timeout: Duration::from_secs(2),
            ..ClientOptions::default()
        };
        let mut client = None;
        let mut acknowledged = Vec::new();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let key = format!("{}{i:06}", (b'a' + (i % 26) as u8) as char);
            let value = format!("v{i}");
            if client.is_none() {
                client = Client::connect(&addr, options.clone()).ok();
            }
            let Some(c) = client.as_mut() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            match c.put(key.as_bytes(), value.as_bytes(), Mode::Raw) {
                Ok(_) => {
                    acknowledged.push((key, value));
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => client = None,
            }
        }
        acknowledged
    })
}

fn wait_serving(cluster: &Cluster) {
    wait_for("the cluster to take writes", CLUSTER_TIMEOUT, || {
        client_of(&cluster.nodes[0])?
            .put(b"warmup", b"1", Mode::Raw)
            .ok()
    });
}

/// The Region's status at its leader: the replica (`statuses[i]` is node `i + 1`'s) that names
/// its own node as leader, at the highest term if two do.
fn at_leader(statuses: &[BTreeMap<u64, RegionStatus>], region: u64) -> Option<&RegionStatus> {
    statuses
        .iter()
        .enumerate()
        .filter_map(|(i, regions)| Some((i as u64 + 1, regions.get(&region)?)))
        .filter(|(node, s)| s.leader.is_some_and(|leader| leader.get() == *node))
        .map(|(_, s)| s)
        .max_by_key(|s| s.term)
}

/// How far (in entries) a voter's applied index may trail its leader's commit index and
/// still count as caught up here: the statuses of the four nodes are read one after the
/// other while a client writes, so a sample lags by the writes of those few milliseconds;
/// a voter that was never seeded trails by the whole log.
const CAUGHT_UP_SLACK: u64 = 200;

/// Checks that every Region the leaders report has a quorum of caught-up voters: of the
/// Region's voters (its peers without the leader's learners), a majority have applied up to
/// within `CAUGHT_UP_SLACK` of the leader's commit index. `None` when a node did not answer.
fn check_quorums(cluster: &Cluster) -> Option<usize> {
    let statuses: Vec<BTreeMap<u64, RegionStatus>> = (0..cluster.nodes.len())
        .map(|i| cluster.status(i))
        .collect::<Option<_>>()?;
    let regions: std::collections::BTreeSet<u64> =
        statuses.iter().flat_map(|s| s.keys().copied()).collect();
    let mut checked = 0;
    for region in regions {
        let Some(leader) = at_leader(&statuses, region) else {
            continue;
        };
        let descriptor = leader.region.as_ref()?;
        let voters: Vec<u64> = descriptor
            .peers
            .iter()
            .filter(|p| !leader.learners.contains(p))
            .map(|p| p.get())
            .collect();
        let caught_up = voters
            .iter()
            .filter(|v| {
                statuses
                    .get((**v - 1) as usize)
                    .and_then(|s| s.get(&region))
                    .is_some_and(|s| {
                        s.applied_index.get() + CAUGHT_UP_SLACK >= leader.commit_index.get()
                    })
            })
            .count();
        assert!(
            caught_up > voters.len() / 2,
            "region {region} lacks a quorum of caught-up voters: voters {voters:?}, {caught_up} \
             caught up, leader {leader:?}; all: {statuses:?}"
        );
        checked += 1;
    }
    Some(checked)
}

/// Reads every acknowledged write back, linearizably.
fn check_writes(cluster: &Cluster, acknowledged: &[(String, String)]) {
    assert!(
        acknowledged.len() > 50,
        "too few writes went through: {}",
        acknowledged.len()
    );
    let mut client = wait_for("a client", CLUSTER_TIMEOUT, || client_of(&cluster.nodes[0]));
    for (key, value) in acknowledged {
        let found = wait_for("a strong read", CLUSTER_TIMEOUT, || {
            client.get(key.as_bytes(), Mode::Strong).ok()
        });
        let found = found.unwrap_or_else(|| panic!("acknowledged write {key} lost"));
        assert_eq!(found.value, value.as_bytes(), "key {key}");
    }
}

#[test]
fn a_region_moves_to_a_store_that_joined_while_a_client_writes_and_the_old_replica_is_gone() {
    let _serial = one_at_a_time();
    let mut cluster = cluster_and_joiner("pd_balance = false\n");
    // The joiner was registered by the driver and holds nothing yet.
    let status = wait_for("the driver to know 4 stores", CLUSTER_TIMEOUT, || {
        pd_status(&cluster).filter(|s| s.stores.len() == 4)
    });
    assert_eq!(counts(&status)[&4], 0);
    assert_eq!(cluster.status(3).expect("node 4 answers").len(), 0);

    let stop = Arc::new(AtomicBool::new(false));
    wait_serving(&cluster);
    let acked = Arc::new(AtomicU64::new(0));
    let writes = writer(&cluster.nodes[0], stop.clone(), acked.clone());
    wait_for(
        "writes to be acknowledged before the move",
        CLUSTER_TIMEOUT,
        || (acked.load(Ordering::Relaxed) >= 20).then_some(()),
    );
    let (ok, out) = cluster.nodes[1].cli(&["move", "1", "--to", "4"]);
    assert!(ok, "tessera move failed: {out}");
    let moved = wait_for("region 1 to move onto store 4", MOVE_TIMEOUT, || {
        let status = pd_status(&cluster)?;
        let region = status
            .regions
            .iter()
            .find(|r| r.region.region_id.get() == 1)?;
        let peers: Vec<u64> = region.region.peers.iter().map(|p| p.get()).collect();
        (peers.len() == 3 && peers.contains(&4)).then_some(peers)
    });
    let source = (1..=3)
        .find(|n| !moved.contains(n))
        .expect("one store left the region");
    let source_index = (source - 1) as usize;
    wait_for("the source replica to be destroyed", MOVE_TIMEOUT, || {
        cluster
            .status(source_index)?
            .contains_key(&1)
            .then_some(())
            .xor(Some(()))
    });
    wait_for("store 4 to serve region 1", MOVE_TIMEOUT, || {
        let region = cluster.status(3)?.remove(&1)?;
        (region.applied_index.get() > 0).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    let acknowledged = writes.join().expect("writer");
    assert!(
        cluster.nodes[3].log().contains("initialized by a snapshot"),
        "store 4's replica was seeded by a snapshot"
    );
    check_writes(&cluster, &acknowledged);

    // The tombstone keeps the destroyed replica from coming back after a restart.
    cluster.nodes[source_index].kill();
    cluster.nodes[source_index].spawn();
    wait_answering(&cluster.nodes[source_index]);
    let regions = cluster
        .status(source_index)
        .expect("restarted source answers");
    assert!(
        !regions.contains_key(&1),
        "region 1 came back on store {source}: {regions:?}"
    );
}

#[test]
fn the_driver_balances_regions_onto_a_joined_store_while_a_client_writes() {
    let _serial = one_at_a_time();
    let cluster = cluster_and_joiner(
        "initial_split_keys = [\"f\", \"m\", \"t\"]\npd_balance_leaders = true\n",
    );
    let stop = Arc::new(AtomicBool::new(false));
    wait_serving(&cluster);
    let writes = writer(&cluster.nodes[0], stop.clone(), Arc::default());
    // Four Regions on three stores (12 replicas) become three per store, and the four
    // leaders (all on store 1 at the start) one per store. Meanwhile every Region keeps a
    // quorum of caught-up voters, at each look.
    let mut quorum_checks = 0;
    wait_for("the stores to be balanced", MOVE_TIMEOUT, || {
        quorum_checks += check_quorums(&cluster).unwrap_or(0);
        let status = pd_status(&cluster)?;
        let counts = counts(&status);
        let balanced = counts.len() == 4 && counts.values().all(|n| *n == 3);
        let mut leading = BTreeMap::<u64, usize>::new();
        for report in &status.regions {
            *leading.entry(report.region.leader?.get()).or_default() += 1;
        }
        let leaders_spread = leading.len() == 4;
        let on_four = cluster.status(3)?.len();
        (balanced && leaders_spread && on_four == 3).then_some(())
    });
    assert!(
        quorum_checks >= 4,
        "the quorums were looked at only {quorum_checks} times"
    );
    for i in 0..3 {
        wait_for("old replicas to be destroyed", MOVE_TIMEOUT, || {
            (cluster.status(i)?.len() == 3).then_some(())
        });
    }
    stop.store(true, Ordering::Relaxed);
    let acknowledged = writes.join().expect("writer");
    check_writes(&cluster, &acknowledged);
}

/// Waits until `more` further writes are acknowledged; on a timeout prints the nodes' logs.
fn wait_acked(cluster: &Cluster, acked: &AtomicU64, more: u64, what: &str) {
    let before = acked.load(Ordering::Relaxed);
    common::wait_for_reporting(
        &format!("{what} ({more} more writes acknowledged)"),
        CLUSTER_TIMEOUT,
        || (acked.load(Ordering::Relaxed) >= before + more).then_some(()),
        || {
            let mut report = format!(
                "{} of {more} more writes acknowledged; the nodes:\n",
                acked.load(Ordering::Relaxed) - before
            );
            for (i, n) in cluster.nodes.iter().enumerate() {
                let threads = common::cluster::threads_report(n.pid());
                report.push_str(&format!(
                    "===== node {} =====\n{}\n{threads}\n",
                    i + 1,
                    n.log()
                ));
            }
            report
        },
    );
}

/// The Region's leader's status, once a leader is known and `accept` holds for it.
fn leader_status(
    cluster: &Cluster,
    region: u64,
    accept: impl Fn(&RegionStatus) -> bool,
) -> Option<RegionStatus> {
    // A node that does not answer counts as holding nothing (indexes stay node ids - 1).
    let statuses: Vec<BTreeMap<u64, RegionStatus>> = (0..cluster.nodes.len())
        .map(|i| cluster.status(i).unwrap_or_default())
        .collect();
    at_leader(&statuses, region).filter(|s| accept(s)).cloned()
}

/// Orders the move of `region` to store 4 (cut off) and waits until store 4 is its learner.
fn move_to_4_until_learner(cluster: &Cluster, region: u64) {
    let (ok, out) = cluster.nodes[1].cli(&["move", &region.to_string(), "--to", "4"]);
    assert!(ok, "tessera move failed: {out}");
    wait_for("store 4 to become a learner", MOVE_TIMEOUT, || {
        leader_status(cluster, region, |s| has_learner(s, 4))
    });
}

fn has_learner(status: &RegionStatus, store: u64) -> bool {
    status.learners.iter().any(|l| l.get() == store)
}

fn has_peer(status: &RegionStatus, store: u64) -> bool {
    status
        .region
        .as_ref()
        .is_some_and(|r| r.peers.iter().any(|p| p.get() == store))
}

#[test]
fn a_partition_mid_move_leaves_the_region_serving_until_healed_and_a_cancelled_move_rolls_back() {
    let _serial = one_at_a_time();
    let ports: Vec<common::Ports> = (0..4).map(|_| free_ports(1)).collect();
    let peer_ports: Vec<u16> = ports.iter().map(|p| p.peer).collect();
    let mesh = Mesh::start(&peer_ports, 1);
    let cluster = cluster_and_joiner_through("pd_balance = false\n", Some((&mesh, &ports)));
    wait_serving(&cluster);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writes = writer(&cluster.nodes[0], stop.clone(), acked.clone());

    // Store 4 is cut off from the other stores' peer traffic (the driver still hears it).
    mesh.partition(&[3], &[0, 1, 2]);
    move_to_4_until_learner(&cluster, 1);
    // The Region serves on: writes keep being acknowledged, the learner stays a learner
    // (it cannot catch up) and store 4 holds no initialized replica.
    wait_acked(
        &cluster,
        &acked,
        100,
        "writes acknowledged during the partition",
    );
    let cut_off = leader_status(&cluster, 1, |_| true).expect("region 1 has a leader");
    assert!(
        has_learner(&cut_off, 4),
        "store 4 was promoted while cut off: {cut_off:?}"
    );
    assert!(
        !cluster.status(3).expect("node 4 answers").contains_key(&1),
        "store 4 was seeded while cut off"
    );

    // Healed, the move completes: store 4 is seeded by a snapshot, promoted, and a source
    // replica is removed.
    mesh.heal();
    wait_for("region 1 to move onto store 4", MOVE_TIMEOUT, || {
        leader_status(&cluster, 1, |s| {
            let peers = s.region.as_ref().map_or(0, |r| r.peers.len());
            has_peer(s, 4) && !has_learner(s, 4) && peers == 3
        })
    });
    assert!(
        cluster.nodes[3].log().contains("initialized by a snapshot"),
        "store 4's replica was seeded by a snapshot"
    );

    // A move of region 2 to store 4, cut off again, is cancelled: the learner is removed
    // (no need to reach it), the Region keeps its three voters, and serves.
    mesh.partition(&[3], &[0, 1, 2]);
    move_to_4_until_learner(&cluster, 2);
    // The cancel rolls the move back once the driver knows the learner joined.
    wait_for(
        "the driver to see store 4 in region 2",
        MOVE_TIMEOUT,
        || {
            let status = pd_status(&cluster)?;
            let region = status
                .regions
                .iter()
                .find(|r| r.region.region_id.get() == 2)?;
            region
                .region
                .peers
                .iter()
                .any(|p| p.get() == 4)
                .then_some(())
        },
    );
    let (ok, out) = cluster.nodes[2].cli(&["move", "2", "--cancel"]);
    assert!(ok && out.contains("rolling back"), "cancel: {out}");
    let rolled_back = wait_for("the learner on store 4 to be removed", MOVE_TIMEOUT, || {
        leader_status(&cluster, 2, |s| !has_peer(s, 4))
    });
    assert_eq!(
        rolled_back.region.as_ref().map(|r| r.peers.len()),
        Some(3),
        "{rolled_back:?}"
    );
    assert!(rolled_back.learners.is_empty(), "{rolled_back:?}");
    // Cancelling again is refused (the rollback cannot be cancelled, or it is over): it must
    // not start the move again.
    let (ok, out) = cluster.nodes[2].cli(&["move", "2", "--cancel"]);
    assert!(!ok, "a second cancel was taken: {out}");
    wait_for("the driver to forget the move", MOVE_TIMEOUT, || {
        pd_status(&cluster)?.moves.is_empty().then_some(())
    });
    let after = leader_status(&cluster, 2, |_| true).expect("region 2 has a leader");
    assert!(!has_peer(&after, 4), "the move started again: {after:?}");
    mesh.heal();
    wait_acked(
        &cluster,
        &acked,
        100,
        "writes acknowledged after the rollback",
    );
    stop.store(true, Ordering::Relaxed);
    let acknowledged = writes.join().expect("writer");
    check_writes(&cluster, &acknowledged);
}
