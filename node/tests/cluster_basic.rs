//! A static 3-node cluster of real `tessera serve` processes on loopback, two Regions
//! (`["", "m")` and `["m", "")`) each replicated on all three nodes:
//!
//! 1. both Regions elect a leader, every node names the same one, and so does the routing
//!    table a client loads from any core of any node;
//! 2. writes and linearizable reads on both Regions work through any node and any core (the
//!    client follows NotLeader and wrong-core hints);
//! 3. with a follower down the cluster keeps serving, and the leaders compact their logs past
//!    what the follower holds (`snapshot_interval_entries = 20`), so when it returns it can
//!    only catch up by snapshot;
//! 4. with a Region's leader down the cluster elects another and keeps serving;
//! 5. the returned node holds everything: with the other up-to-date node down and a node that
//!    missed the latest writes back, Raft's election rule leaves the returned node the only
//!    possible leader of both Regions, and every key is read back through it.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::cluster::{Cluster, CLUSTER_TIMEOUT, FAST_CONFIG};
use common::{wait_for, CORES};
use tessera_node::client::{Client, ClientError, ClientOptions};
use tessera_transport::client::Mode;

/// Entries between Region snapshots: small, so a node that misses a few dozen writes can only
/// be caught up by a snapshot.
const SNAPSHOT_INTERVAL_ENTRIES: u64 = 20;

/// What the test wrote: key → value.
type Written = BTreeMap<String, String>;

/// Writes `count` keys into each Region through `client`, named `{tag}-{n}`.
fn write_both_regions(client: &mut Client, tag: &str, count: usize, written: &mut Written) {
    for n in 0..count {
        for prefix in ["a", "z"] {
            let key = format!("{prefix}/{tag}-{n:03}");
            let value = format!("value of {key}");
            // A put whose answer was lost (the node died under it) is sent again: writing
            // the same value twice is harmless here, and the final value is what is checked.
            wait_for(&format!("put {key}"), CLUSTER_TIMEOUT, || {
                match client.put(key.as_bytes(), value.as_bytes(), Mode::Strong) {
                    Ok(_) => Some(()),
                    Err(ClientError::OutcomeUnknown { .. }) => None,
                    Err(e) => panic!("put {key}: {e}"),
                }
            });
            written.insert(key, value);
        }
    }
}

/// Reads every written key back with a linearizable read through `client`.
fn read_all(client: &mut Client, written: &Written, through: &str) {
    for (key, value) in written {
        let found = client
            .get(key.as_bytes(), Mode::Strong)
            .unwrap_or_else(|e| panic!("strong get {key} through {through}: {e}"))
            .unwrap_or_else(|| panic!("{key} missing when read through {through}"));
        assert_eq!(found.value, value.as_bytes(), "{key} through {through}");
    }
}

fn options() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(15),
        attempts_max: 200,
        ..ClientOptions::default()
    }
}

#[test]
fn three_nodes_serve_both_regions_through_any_node_survive_a_down_node_and_catch_it_up_by_snapshot()
{
    let config = format!("{FAST_CONFIG}snapshot_interval_entries = {SNAPSHOT_INTERVAL_ENTRIES}\n");
    let mut cluster = Cluster::start(3, CORES, &config);

    // 1. Both Regions have a leader, and all nodes agree on it. The routing table any core
    // of any node hands a client names those leaders, also for the Regions of the node's
    // other core, so a client's first request goes to the right node.
    let leaders = cluster.wait_agreed_leaders();
    assert_eq!(leaders.len(), 2, "two Regions: {leaders:?}");
    for i in 0..3 {
        for core in 0..CORES {
            wait_for(
                &format!(
                    "node {} core {core}'s routing table to name {leaders:?}",
                    i + 1
                ),
                CLUSTER_TIMEOUT,
                || {
                    let client = cluster.client_via(i, core, options());
                    let named: BTreeMap<u64, usize> = client
                        .routing()
                        .0
                        .iter()
                        .filter_map(|r| Some((r.region_id.get(), r.leader?.get() as usize - 1)))
                        .collect();
                    (named == leaders).then_some(())
                },
            );
        }
    }

    // 2. Writes and strong reads through every node and every core.
    let mut written = Written::new();
    for i in 0..3 {
        for core in 0..CORES {
            let mut client = cluster.client_via(i, core, options());
            let (regions, stores) = client.routing();
            assert_eq!((regions.len(), stores.len()), (2, 3));
            write_both_regions(&mut client, &format!("n{i}c{core}"), 2, &mut written);
        }
    }
    for i in 0..3 {
        let mut client = cluster.client_via(i, 0, options());
        read_all(&mut client, &written, &format!("node {}", i + 1));
    }

    // 3. A follower goes down; the other two keep serving and compact past it.
    let leaders = cluster.wait_agreed_leaders();
    // Two Regions, three nodes: at least one node leads neither.
    let follower = (0..3)
        .find(|i| !leaders.values().any(|l| l == i))
        .expect("a node that leads no Region");
    let applied_before = cluster.status(follower).expect("follower status");
    cluster.kill(follower);
    let live: Vec<usize> = cluster.running();
    let mut client = cluster.client_via(live[0], 0, options());
    write_both_regions(&mut client, "while-follower-down", 60, &mut written);
    let mut client = cluster.client_via(live[1], 1 % CORES, options());
    read_all(&mut client, &written, "a live node, follower down");
    // Every live node has a snapshot past what the follower applied: the entries it misses
    // are gone from their logs, so only a snapshot can bring it up to date.
    for &i in &live {
        let snapshots = wait_for(
            "the live nodes to snapshot past the follower",
            CLUSTER_TIMEOUT,
            || {
                let snapshots = cluster.snapshot_indexes(i);
                applied_before
                    .iter()
                    .all(|(region, status)| {
                        snapshots
                            .get(region)
                            .is_some_and(|index| *index > status.applied_index.0)
                    })
                    .then_some(snapshots)
            },
        );
        eprintln!(
            "node {} snapshots {snapshots:?}; follower node {} had applied {:?}",
            i + 1,
            follower + 1,
            applied_before
                .iter()
                .map(|(r, s)| (*r, s.applied_index.0))
                .collect::<Vec<_>>()
        );
    }

    // The follower returns and catches up.
    cluster.restart(follower);
    cluster.wait_caught_up(follower);
    let snapshots = cluster.snapshot_indexes(follower);
    for (region, status) in &applied_before {
        assert!(
            snapshots
                .get(region)
                .is_some_and(|index| *index > status.applied_index.0),
            "node {}: Region {region} has no snapshot past index {} (it had applied that \
             before going down); snapshots: {snapshots:?}",
            follower + 1,
            status.applied_index.0
        );
    }

    // 4. The leader of a Region (not the returned node) goes down; the others keep serving.
    let leaders = cluster.wait_agreed_leaders();
    let leader = leaders
        .values()
        .copied()
        .find(|l| *l != follower)
        .unwrap_or_else(|| (0..3).find(|i| *i != follower).expect("another node"));
    let other = (0..3)
        .find(|i| *i != follower && *i != leader)
        .expect("a third node");
    cluster.kill(leader);
    let mut client = cluster.client_via(other, 0, options());
    write_both_regions(&mut client, "while-leader-down", 10, &mut written);
    let mut client = cluster.client_via(follower, 0, options());
    read_all(&mut client, &written, "the returned node, a leader down");

    // 5. The other up-to-date node goes down and the old leader, which missed the latest
    // writes, comes back: it cannot win an election against the returned node's longer log,
    // so the returned node must lead both Regions and serve every read from its own data.
    cluster.kill(other);
    cluster.restart(leader);
    let leaders = cluster.wait_agreed_leaders();
    assert!(
        leaders.values().all(|l| *l == follower),
        "the returned node {} must lead every Region, leaders: {leaders:?}",
        follower + 1
    );
    let mut client = cluster.client_via(leader, 0, options());
    read_all(
        &mut client,
        &written,
        "the old leader, served by the returned node",
    );
    cluster.wait_caught_up(leader);
}

/// A static `initial_cluster` of four nodes with three replicas per Region: the fourth node
/// is no Region's peer, so it creates no replica at startup or at restart (an idle replica
/// would never learn a leader), yet it serves clients: its routing table sends them to the
/// Regions' peers. (Balancing is off: it would move Regions onto the fourth node, see
/// `move_region.rs`.)
#[test]
fn a_node_outside_every_regions_peers_holds_no_replica_and_still_routes_clients() {
    let mut cluster = Cluster::start(4, CORES, &format!("{FAST_CONFIG}pd_balance = false\n"));
    let outsider = 3;
    for restart in [false, true] {
        if restart {
            cluster.kill(outsider);
            cluster.restart(outsider);
        }
        let held = cluster.status(outsider).expect("the fourth node answers");
        assert!(
            held.is_empty(),
            "node 4 is no Region's peer but holds replicas (restarted: {restart}): {held:?}"
        );
        for i in 0..3 {
            let held = cluster.status(i).expect("status");
            assert_eq!(held.len(), 2, "node {} holds both Regions: {held:?}", i + 1);
        }
        let mut client = cluster.client_via(outsider, CORES - 1, options());
        let (regions, stores) = client.routing();
        assert_eq!((regions.len(), stores.len()), (2, 4));
        let mut written = Written::new();
        write_both_regions(&mut client, &format!("via-4-{restart}"), 2, &mut written);
        read_all(&mut client, &written, "node 4");
    }
}
