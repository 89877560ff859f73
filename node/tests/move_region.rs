//! Replica moves with real processes on loopback: a store joins a running cluster (it starts
//! with no Regions), `tessera move` moves a Region onto it while a client writes, and the
//! placement driver's balancer fills it until Region counts differ by at most one, then spreads
//! the leaders. Every
//! acknowledged write is read back afterwards, and the source store's replica is gone from
//! its status, also after a restart (its tombstone).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::cluster::{Cluster, CLUSTER_TIMEOUT, FAST_CONFIG};
use common::{wait_for, Node};
use tessera_node::client::{Client, ClientOptions};
use tessera_transport::client::{Mode, PdStatus};

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
    let config = config(extra);
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
    let cluster = cluster_and_joiner(
        "initial_split_keys = [\"f\", \"m\", \"t\"]\npd_balance_leaders = true\n",
    );
    let stop = Arc::new(AtomicBool::new(false));
    wait_serving(&cluster);
    let writes = writer(&cluster.nodes[0], stop.clone(), Arc::default());
    // Four Regions on three stores (12 replicas) become three per store, and the four
    // leaders (all on store 1 at the start) one per store.
    wait_for("the stores to be balanced", MOVE_TIMEOUT, || {
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
    for i in 0..3 {
        wait_for("old replicas to be destroyed", MOVE_TIMEOUT, || {
            (cluster.status(i)?.len() == 3).then_some(())
        });
    }
    stop.store(true, Ordering::Relaxed);
    let acknowledged = writes.join().expect("writer");
    check_writes(&cluster, &acknowledged);
}
