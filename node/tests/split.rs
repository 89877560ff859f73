//! Online splits on real processes (three nodes, two cores each): Regions that grow past
//! `split_size_bytes` split while a client keeps writing and reading; a split racing a
//! leader change splits exactly once; a crash right after a split recovers both Regions.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, CLUSTER_TIMEOUT, FAST_CONFIG};
use common::wait_for;
use tessera_node::client::{Client, ClientOptions};
use tessera_transport::client::{Mode, RegionDescriptor};

const CORES: usize = 2;

fn config(split_size_bytes: u64) -> String {
    format!(
        "{FAST_CONFIG}pd_heartbeat_interval_ms = 100\nsplit_check_interval_ms = 100\n\
         split_size_bytes = {split_size_bytes}\n"
    )
}

fn client(cluster: &Cluster, i: usize) -> Client {
    let options = ClientOptions {
        request_timeout: Duration::from_secs(10),
        attempts_max: 100,
        ..ClientOptions::default()
    };
    cluster.client_via(i, 0, options)
}

/// The routing table as node `i` answers it, sorted by start key.
fn layout(cluster: &Cluster, i: usize) -> Option<Vec<RegionDescriptor>> {
    let options = ClientOptions {
        request_timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    };
    let client = Client::connect(&cluster.nodes[i].client_addr(0), options).ok()?;
    Some(client.routing().0.to_vec())
}

/// Checks that `regions` tile the key space: sorted, adjacent, from "" to the end.
fn assert_tiles(regions: &[RegionDescriptor]) {
    assert_eq!(
        regions.first().map(|r| r.start_key.clone()),
        Some(Vec::new())
    );
    assert_eq!(regions.last().map(|r| r.end_key.clone()), Some(Vec::new()));
    for pair in regions.windows(2) {
        assert_eq!(pair[0].end_key, pair[1].start_key, "{regions:#?}");
    }
}

#[test]
fn regions_past_the_threshold_split_while_a_client_keeps_writing_and_reading() {
    let cluster = Cluster::start(3, CORES, &config(48 << 10));
    let mut writer = client(&cluster, 1);
    let mut acked: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let (mut attempts, mut failures) = (0u32, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut writes_after_split: Option<u32> = None;
    let mut i = 0u64;
    // For the report: when the data written passed the threshold, when a split was seen.
    let (mut written_bytes, mut crossed, mut first_split) = (0usize, None, None);
    // Keys in both first Regions (below and above "m"), so both cores split.
    while writes_after_split != Some(0) {
        assert!(
            Instant::now() < deadline,
            "no split within 90 s ({} regions)",
            writer.routing().0.len()
        );
        let prefix = if i.is_multiple_of(2) { "c" } else { "r" };
        let key = format!("{prefix}-{:06}", (i * 7919) % 1_000_000).into_bytes();
        let value = format!("value-{i:06}-{}", "x".repeat(90)).into_bytes();
        attempts += 1;
        written_bytes += key.len() + 1 + value.len();
        if crossed.is_none() && written_bytes / 2 >= 48 << 10 {
            crossed = Some(Instant::now());
        }
        match writer.put(&key, &value, Mode::Raw) {
            Ok(_) => {
                acked.insert(key.clone(), value.clone());
            }
            Err(error) => failures.push(error.to_string()),
        }
        if i.is_multiple_of(10) {
            let read = writer.get(&key, Mode::Strong);
            if let Ok(Some(found)) = &read {
                assert_eq!(
                    Some(&found.value),
                    acked.get(&key),
                    "a read returned another value"
                );
            }
        }
        i += 1;
        if writes_after_split.is_none() && i.is_multiple_of(50) {
            writer.refresh_routing().unwrap();
            if first_split.is_none() && writer.routing().0.len() > 2 {
                first_split = Some(Instant::now());
            }
            if writer.routing().0.len() >= 4 {
                writes_after_split = Some(300);
            }
        }
        if let Some(left) = writes_after_split.as_mut() {
            *left = left.saturating_sub(1);
        }
    }
    let success = 1.0 - failures.len() as f64 / f64::from(attempts);
    let (crossed, first_split) = (crossed.unwrap(), first_split.unwrap());
    eprintln!(
        "split under load: first split seen {} ms after the data passed the threshold; \
         {attempts} writes, {} failed ({:.2}% success), {} regions",
        first_split.saturating_duration_since(crossed).as_millis(),
        failures.len(),
        success * 100.0,
        writer.routing().0.len()
    );
    assert!(
        success >= 0.99,
        "{} of {attempts} writes failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );

    // Every node agrees on a layout that tiles the key space; new Regions live on their
    // parent's core (same id modulo the core count).
    let regions = wait_for(
        "every node to know the same split layout",
        CLUSTER_TIMEOUT,
        || {
            let first = layout(&cluster, 0)?;
            let same = (1..3)
                .all(|i| layout(&cluster, i).as_ref().map(|l| strip(l)) == Some(strip(&first)));
            same.then_some(first)
        },
    );
    assert!(regions.len() >= 4, "{regions:#?}");
    assert_tiles(&regions);
    for region in &regions {
        let parent = if region.start_key.as_slice() < b"m".as_slice() {
            1
        } else {
            2
        };
        assert_eq!(
            region.region_id.get() % CORES as u64,
            parent % CORES as u64,
            "{region:?}"
        );
        assert!(region.epoch.version >= 1);
    }

    // Every acknowledged write is readable, through a fresh client of another node.
    let mut reader = client(&cluster, 2);
    for (key, value) in &acked {
        let found = reader
            .get(key, Mode::Strong)
            .unwrap()
            .expect("acknowledged key is missing");
        assert_eq!(&found.value, value);
    }
    let scanned = reader.scan(b"", b"", 10_000, Mode::Strong).unwrap();
    assert_eq!(
        scanned.len(),
        acked.len(),
        "a scan across the split Regions sees every key once"
    );

    // The driver learned the new layout from heartbeats.
    wait_for("the driver to record every region", CLUSTER_TIMEOUT, || {
        let status = reader.pd_status().ok()?;
        let ids: Vec<u64> = status
            .regions
            .iter()
            .map(|r| r.region.region_id.get())
            .collect();
        let mut expected: Vec<u64> = regions.iter().map(|r| r.region_id.get()).collect();
        expected.sort_unstable();
        (ids == expected).then_some(())
    });
}

/// A layout without the leaders (which differ between nodes' answers).
fn strip(regions: &[RegionDescriptor]) -> Vec<RegionDescriptor> {
    regions
        .iter()
        .map(|r| RegionDescriptor {
            leader: None,
            ..r.clone()
        })
        .collect()
}

/// Writes `count` keys `PREFIX-00000`, ... and returns them.
fn fill(client: &mut Client, prefix: &str, count: usize) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut written = BTreeMap::new();
    for i in 0..count {
        let key = format!("{prefix}-{i:05}").into_bytes();
        let value = format!("v{i}").into_bytes();
        client.put(&key, &value, Mode::Raw).unwrap();
        written.insert(key, value);
    }
    written
}

fn assert_readable(client: &mut Client, written: &BTreeMap<Vec<u8>, Vec<u8>>) {
    for (key, value) in written {
        let found = client
            .get(key, Mode::Strong)
            .unwrap()
            .expect("a written key is missing");
        assert_eq!(&found.value, value);
    }
}

#[test]
fn a_split_racing_a_leader_change_splits_exactly_once() {
    let mut cluster = Cluster::start(3, CORES, &config(0));
    let mut writer = client(&cluster, 0);
    let mut written = fill(&mut writer, "p", 100);
    written.extend(fill(&mut writer, "u", 100));
    let leader = cluster.wait_agreed_leaders()[&2];
    // The operator splits Region 2 at "t": the id comes from the driver first (it may run on
    // the leader's node), then the split order goes out while the Region's leader is killed,
    // so the command is in flight, committed or lost when the leadership changes. The
    // client retries at the new leader; a split that committed is answered, not reapplied.
    let new_region = writer.ask_split(b"t").unwrap();
    let splitter_options = ClientOptions {
        request_timeout: Duration::from_secs(20),
        attempts_max: 200,
        ..ClientOptions::default()
    };
    let seed = cluster.nodes[(leader + 1) % 3].client_addr(0);
    let splitter = std::thread::spawn(move || {
        let mut client = Client::connect(&seed, splitter_options).unwrap();
        client.split_as(b"t", new_region)
    });
    cluster.kill(leader);
    let regions = splitter
        .join()
        .unwrap()
        .expect("the split is served by the new leader");
    assert_eq!(regions.len(), 2);
    assert_eq!(regions[1].region_id, new_region);
    cluster.restart(leader);
    let regions = wait_for(
        "every node to agree on one split at t",
        CLUSTER_TIMEOUT,
        || {
            let first = layout(&cluster, 0)?;
            let same = (1..3)
                .all(|i| layout(&cluster, i).as_ref().map(|l| strip(l)) == Some(strip(&first)));
            (same && first.len() == 3).then_some(first)
        },
    );
    assert_tiles(&regions);
    let starts: Vec<&[u8]> = regions.iter().map(|r| r.start_key.as_slice()).collect();
    assert_eq!(
        starts,
        vec![&b""[..], b"m", b"t"],
        "exactly one split, at t"
    );
    assert_eq!(regions[2].epoch.version, 2);
    let mut reader = client(&cluster, leader);
    assert_readable(&mut reader, &written);
    let scanned = reader.scan(b"", b"", 10_000, Mode::Strong).unwrap();
    assert_eq!(scanned.len(), written.len());
}

#[test]
fn a_crash_right_after_a_split_recovers_both_regions() {
    let mut cluster = Cluster::start(3, CORES, &config(0));
    let mut writer = client(&cluster, 0);
    let mut written = fill(&mut writer, "q", 200);
    let regions = writer.split(b"q-00100").unwrap();
    assert_eq!(regions.len(), 2);
    let new_region = regions[1].region_id;
    // Every node dies the moment the split is acknowledged: some replicas have applied it
    // (and written the new Region's first snapshot), some may only have it in their log.
    for i in 0..3 {
        cluster.kill(i);
    }
    cluster.spawn_all();
    cluster.wait_ready_all();
    let layouts = wait_for(
        "every node to recover both regions",
        CLUSTER_TIMEOUT,
        || {
            let all: Vec<_> = (0..3).map(|i| layout(&cluster, i)).collect::<Option<_>>()?;
            let ok = all.iter().all(|l: &Vec<RegionDescriptor>| {
                l.len() == 3
                    && l.iter()
                        .any(|r| r.region_id == new_region && r.start_key == b"q-00100")
            });
            ok.then_some(all)
        },
    );
    for layout in &layouts {
        assert_tiles(layout);
    }
    let mut client = client(&cluster, 2);
    assert_readable(&mut client, &written);
    // Both Regions take writes after recovery.
    written.extend(fill(&mut client, "n", 5)); // the shrunk Region
    written.extend(fill(&mut client, "r", 5)); // the new one
    assert_readable(&mut client, &written);
    for i in 0..3 {
        let status = cluster.status(i).expect("every core answers");
        assert!(
            status.contains_key(&new_region.get()),
            "node {} lost the new region",
            i + 1
        );
    }
}

#[test]
fn the_operator_splits_a_region_from_the_command_line() {
    let node = common::Node::started();
    let mut client = node.client();
    let written = fill(&mut client, "k", 20);
    let (ok, text) = node.cli(&["split", "k-00010", "--json"]);
    assert!(ok, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["regions"][0], 1, "{text}");
    let new_region = answer["regions"][1].as_u64().unwrap();
    assert_eq!(new_region % 2, 1, "owned by the parent's core");
    let (ok, text) = node.cli(&["regions", "--json"]);
    assert!(ok, "{text}");
    let table: serde_json::Value = serde_json::from_str(&text).unwrap();
    let regions = table["regions"].as_array().unwrap();
    assert_eq!(regions.len(), 3);
    let new = regions.iter().find(|r| r["id"] == new_region).unwrap();
    assert_eq!(
        (new["start"].as_str(), new["end"].as_str()),
        (Some("k-00010"), Some("m"))
    );
    assert_eq!(
        (new["keys"].as_u64(), new["version"].as_u64()),
        (Some(10), Some(2))
    );
    // Splitting at a Region's first key is refused with a reason.
    let (ok, _) = node.cli(&["split", "k-00010"]);
    assert!(!ok, "a second split at the same key must be refused");
    let mut client = node.client();
    assert_readable(&mut client, &written);
}
