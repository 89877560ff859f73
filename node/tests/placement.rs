//! The placement driver on real processes: stores report their Regions on an interval, the
//! driver records sizes, leaders and epochs, and its metadata survives a restart of its node.

mod common;

use std::time::Duration;

use common::cluster::{Cluster, CLUSTER_TIMEOUT, FAST_CONFIG};
use common::wait_for;
use tessera_node::client::{Client, ClientOptions};
use tessera_transport::client::{Mode, PdStatus};

/// Heartbeats every 100 ms; no automatic splits.
fn config() -> String {
    format!("{FAST_CONFIG}pd_heartbeat_interval_ms = 100\nsplit_size_bytes = 0\n")
}

fn quick_client(cluster: &Cluster, i: usize) -> Option<Client> {
    let options = ClientOptions {
        request_timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    };
    Client::connect(&cluster.nodes[i].client_addr(0), options).ok()
}

#[test]
fn heartbeats_give_the_driver_sizes_and_leaders_and_it_keeps_them_across_a_restart() {
    let mut cluster = Cluster::start(3, 2, &config());
    let mut client = cluster.client_via(1, 0, ClientOptions::default());
    // Sizes count key and value bytes (plus one byte of namespace framing per key).
    let mut expected = [0u64; 2];
    for i in 0..40 {
        for (region, prefix) in ["a", "p"].iter().enumerate() {
            let key = format!("{prefix}-key-{i:03}");
            let value = vec![b'v'; 10 + i];
            client.put(key.as_bytes(), &value, Mode::Raw).unwrap();
            expected[region] += (key.len() + 1 + value.len()) as u64;
        }
    }
    let leaders = cluster.wait_agreed_leaders();
    // An id handed out for a split (none is made here) must never be handed out again.
    let handed_out = client.ask_split(b"a").unwrap();
    let recorded: PdStatus = wait_for(
        "the driver to record sizes and leaders",
        CLUSTER_TIMEOUT,
        || {
            let status = client.pd_status().ok()?;
            let sizes: Vec<u64> = status.regions.iter().map(|r| r.approximate_bytes).collect();
            let leaders_known = status.regions.iter().all(|r| {
                r.region.leader.map(|l| l.get() as usize - 1)
                    == leaders.get(&r.region.region_id.get()).copied()
            });
            let all_stores = status.stores.iter().all(|s| s.heartbeats > 0);
            (sizes == expected && leaders_known && all_stores).then_some(status)
        },
    );
    assert_eq!(recorded.stores.len(), 3);
    assert!(recorded.stores.iter().all(|s| s.heartbeat_age_ms.is_some()));
    assert_eq!(
        recorded.regions.iter().map(|r| r.keys).collect::<Vec<_>>(),
        vec![40, 40]
    );

    // The CLI shows the same.
    let (ok, text) = cluster.nodes[2].cli(&["pd", "status", "--json"]);
    assert!(ok, "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["regions"][0]["bytes"], expected[0]);
    assert_eq!(json["regions"][1]["keys"], 40);
    let (ok, text) = cluster.nodes[2].cli(&["regions", "--json"]);
    assert!(ok, "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["regions"][1]["bytes"], expected[1]);
    for (i, region) in json["regions"].as_array().unwrap().iter().enumerate() {
        let leader = leaders[&(i as u64 + 1)] as u64 + 1;
        assert_eq!(
            region["leader"], leader,
            "leaders of every core's Regions are shown"
        );
    }

    // Every node stops; the driver's node comes back alone. Without a quorum no replica leads,
    // and the driver takes no follower's word at an epoch it knows: whatever it shows now
    // comes from its file.
    for i in 0..3 {
        cluster.kill(i);
    }
    cluster.nodes[0].spawn();
    let after = wait_for(
        "the driver to answer after its restart",
        CLUSTER_TIMEOUT,
        || quick_client(&cluster, 0)?.pd_status().ok(),
    );
    assert_eq!(after.cluster_id, recorded.cluster_id);
    assert_eq!(after.next_region_id, recorded.next_region_id);
    assert!(after.next_region_id > handed_out.get());
    let mut restarted = quick_client(&cluster, 0).unwrap();
    let next = restarted.ask_split(b"a").unwrap();
    assert!(
        next.get() > handed_out.get(),
        "{next:?} was handed out before the restart"
    );
    assert_eq!(
        next.get() % 2,
        handed_out.get() % 2,
        "same core as the parent"
    );
    // A leader may change (an election on a loaded machine) between the recording above and
    // the kills, and its heartbeat then updates the file: a leader that survives must be a
    // peer, everything else exactly what was recorded (placement.rs unit tests check that
    // leaders are written to the file and read back).
    let without_leader = |regions: &[tessera_transport::client::RegionReport]| {
        let mut regions = regions.to_vec();
        for r in &mut regions {
            r.region.leader = None;
        }
        regions
    };
    assert_eq!(
        without_leader(&after.regions),
        without_leader(&recorded.regions),
        "sizes, ranges, peers and epochs survive"
    );
    for r in &after.regions {
        if let Some(leader) = r.region.leader {
            assert!(r.region.peers.contains(&leader), "{r:?}");
        }
    }
    let stores: Vec<_> = after.stores.iter().map(|s| s.store.clone()).collect();
    let before: Vec<_> = recorded.stores.iter().map(|s| s.store.clone()).collect();
    assert_eq!(stores, before);
    assert!(
        after.stores[1..]
            .iter()
            .all(|s| s.heartbeats == 0 && s.heartbeat_age_ms.is_none()),
        "liveness is about now, not persisted"
    );
}
