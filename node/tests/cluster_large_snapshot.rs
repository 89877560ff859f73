//! A follower that missed more than a frame's worth of data (24 MiB against a 16 MiB
//! `frame_bytes_max`) is caught up by a snapshot streamed in chunks: three real processes on
//! loopback, the follower down while 48 values of 512 KiB are written and the live nodes
//! compact past it, then back; it must apply everything, and the values it holds must be the
//! ones written (read through it once the old leader is gone).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::cluster::{Cluster, CLUSTER_TIMEOUT, FAST_CONFIG};
use common::{wait_for, CORES};
use tessera_node::client::ClientOptions;
use tessera_transport::client::Mode;
use tessera_transport::DecodeLimits;

const VALUES: usize = 48;
const VALUE_BYTES: usize = 512 << 10;

fn options() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(10),
        attempts_max: 200,
        ..ClientOptions::default()
    }
}

fn value(n: usize) -> Vec<u8> {
    (0..VALUE_BYTES)
        .map(|i| ((i * 31 + n * 7) % 253) as u8)
        .collect()
}

#[test]
fn a_follower_is_caught_up_by_a_snapshot_larger_than_one_frame() {
    let config = format!("{FAST_CONFIG}snapshot_interval_entries = 8\n");
    let mut cluster = Cluster::start(3, CORES, &config);
    let leaders = cluster.wait_agreed_leaders();
    let follower = (0..3)
        .find(|i| !leaders.values().any(|l| l == i))
        .expect("two Regions, three nodes: a node leads neither");
    let applied_before = cluster.status(follower).expect("follower status");
    cluster.kill(follower);

    let live = cluster.running();
    let mut client = cluster.client_via(live[0], 0, options());
    let region = client
        .routing()
        .0
        .iter()
        .find(|r| r.start_key.is_empty())
        .expect("a Region starting at the empty key")
        .region_id
        .get();
    for n in 0..VALUES {
        let key = format!("big-{n:02}");
        client
            .put(key.as_bytes(), &value(n), Mode::Strong)
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }
    let total = VALUES * VALUE_BYTES;
    assert!(total > DecodeLimits::default().frame_bytes_max as usize);
    // The live nodes compact past what the follower applied, so only a snapshot can bring it
    // up to date, and that snapshot holds more than 32 of the values (over 16 MiB).
    let applied = applied_before[&region].applied_index.0;
    for &i in &live {
        wait_for(
            "the live nodes to snapshot past the follower",
            CLUSTER_TIMEOUT,
            || (cluster.snapshot_indexes(i).get(&region).copied()? > applied + 32).then_some(()),
        );
    }

    cluster.restart(follower);
    cluster.wait_caught_up(follower);
    let snapshot = *cluster
        .snapshot_indexes(follower)
        .get(&region)
        .expect("the follower holds a snapshot of the Region");
    assert!(
        snapshot > applied + 32,
        "node {}: snapshot of Region {region} at {snapshot}, had applied {applied} before",
        follower + 1
    );

    // Without the Region's leader, the follower is one of the two voters left, so the Region
    // serves only with it: as leader from its own copy, or as the follower that confirms the
    // other node's leadership.
    let leaders: BTreeMap<u64, usize> = cluster.wait_agreed_leaders();
    cluster.kill(leaders[&region]);
    let mut client = cluster.client_via(follower, 0, options());
    for n in 0..VALUES {
        let key = format!("big-{n:02}");
        let found = client
            .get(key.as_bytes(), Mode::Strong)
            .unwrap_or_else(|e| panic!("strong get {key}: {e}"))
            .unwrap_or_else(|| panic!("{key} missing after the catch-up"));
        assert!(found.value == value(n), "{key} differs after the catch-up");
    }
}
