//! Regions balanced across the cores of one node, with real processes: splits keep every new
//! Region on its parent's core, so a node whose Regions descend from one Region runs them
//! all on one core; the node hands Regions to its idle core until the cores' counts differ
//! by at most one, while a client writes. Every acknowledged write reads back, also after a
//! restart, which keeps the assignment; a crash at each step of a hand-off (a test-only
//! switch aborts the process there) loses nothing and leaves every Region on exactly one core.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::cluster::{Cluster, FAST_CONFIG};
use common::{wait_for, Node};
use tessera_node::client::{Client, ClientOptions};
use tessera_transport::client::Mode;

/// How long balancing may take on a loaded machine.
const BALANCE_TIMEOUT: Duration = Duration::from_secs(60);

fn config() -> String {
    format!(
        "{FAST_CONFIG}core_balance_interval_ms = 200\nsnapshot_interval_entries = 64\n\
         split_size_bytes = 0\npd_heartbeat_interval_ms = 100\n"
    )
}

fn node() -> Node {
    Node::new().with_config(&config())
}

fn client(node: &Node) -> Client {
    let options = ClientOptions {
        request_timeout: Duration::from_secs(20),
        attempts_max: 200,
        ..ClientOptions::default()
    };
    Client::connect(&node.client_addr(0), options).expect("connect")
}

/// Region id → the cores that report it in their status; `None` if a core does not answer.
fn cores_of(node: &Node) -> Option<BTreeMap<u64, Vec<usize>>> {
    let mut found: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (core, addr) in node.client_addrs().iter().enumerate() {
        let options = ClientOptions {
            request_timeout: Duration::from_millis(500),
            attempts_max: 1,
            ..ClientOptions::default()
        };
        let status = Client::connect(addr, options)
            .ok()?
            .status(Some(addr))
            .ok()?;
        for region in status.regions {
            assert_eq!(
                region.core.0 as usize, core,
                "a core reports another's region"
            );
            found.entry(region.region_id.0).or_default().push(core);
        }
    }
    Some(found)
}

/// Waits until at least `regions` Regions are each on exactly one core and the cores'
/// counts differ by at most one; returns Region → core.
fn wait_balanced(node: &Node, regions: usize) -> BTreeMap<u64, usize> {
    wait_for(
        &format!("{regions} regions balanced across the cores"),
        BALANCE_TIMEOUT,
        || {
            let found = cores_of(node)?;
            if found.len() < regions || found.values().any(|cores| cores.len() != 1) {
                return None;
            }
            let mut counts = vec![0usize; node.spec.cores];
            for cores in found.values() {
                counts[cores[0]] += 1;
            }
            let (most, fewest) = (counts.iter().max()?, counts.iter().min()?);
            (most - fewest <= 1).then(|| found.iter().map(|(r, c)| (*r, c[0])).collect())
        },
    )
}

/// How long each hand-off in `log` paused its Region (taken out of the source's Store until
/// it served on the target), in microseconds.
fn pauses_us(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|line| line.contains("region handed over from another core"))
        .filter_map(|line| {
            line.split("paused_us=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

fn key(i: u64) -> Vec<u8> {
    // Mostly below "m" (Region 1, the one that is split), some above it.
    let prefix = if i % 5 == 4 { "s" } else { "k" };
    format!("{prefix}{:06}", (i * 7919) % 1_000_000).into_bytes()
}

fn assert_all_read_back(node: &Node, acked: &Acked) {
    let mut reader = client(node);
    for (key, value) in acked {
        let found = reader
            .get(key, Mode::Strong)
            .unwrap_or_else(|e| panic!("read {key:?}: {e}; log:\n{}", node.log()));
        assert_eq!(
            found.map(|v| v.value).as_ref(),
            Some(value),
            "an acknowledged write of {:?} is lost",
            String::from_utf8_lossy(key)
        );
    }
}

/// Region 1 `["", "m")` is on core 1, Region 2 on core 0; splitting Region 1 at these keys
/// puts every new Region on core 1.
const SPLIT_KEYS: [&str; 4] = ["k2", "k4", "k6", "k8"];

#[test]
fn split_regions_spread_over_the_cores_while_a_client_writes_and_stay_after_a_restart() {
    let mut node = node();
    node.start();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let writer = spawn_writer(client(&node), stop.clone(), count.clone());
    let mut splitter = client(&node);
    for split_key in SPLIT_KEYS {
        // The driver learns a new Region from the next heartbeat: until then it refuses ids.
        wait_for(&format!("a split at {split_key}"), BALANCE_TIMEOUT, || {
            splitter.split(split_key.as_bytes()).ok()
        });
    }
    let placed = wait_balanced(&node, 2 + SPLIT_KEYS.len());
    // Keep writing a little while the Regions serve from their new cores.
    let moved_log = node.log();
    assert!(
        !pauses_us(&moved_log).is_empty(),
        "no hand-off happened; log:\n{moved_log}"
    );
    wait_more_writes(&count, 20);
    stop.store(true, Ordering::Relaxed);
    let (acked, attempts, failures) = writer.join().unwrap();
    eprintln!(
        "core balance: {attempts} writes, {failures} failed, placement {placed:?}, {} keys, \
         hand-off pauses {:?} us",
        acked.len(),
        pauses_us(&node.log())
    );
    assert!(
        failures * 100 <= attempts,
        "{failures} of {attempts} writes failed"
    );
    assert_all_read_back(&node, &acked);

    node.stop_cleanly();
    node.start();
    let found = cores_of(&node).expect("status after the restart");
    let after: BTreeMap<u64, usize> = found
        .iter()
        .map(|(region, cores)| {
            assert_eq!(cores.len(), 1, "region {region} on cores {cores:?}");
            (*region, cores[0])
        })
        .collect();
    assert_eq!(after, placed, "the restart changed the assignment");
    assert_all_read_back(&node, &acked);
}

/// Acknowledged writes: key → value.
type Acked = BTreeMap<Vec<u8>, Vec<u8>>;

/// Writes from a thread until `stop`; returns the acknowledged writes, attempts and failures.
/// A writer of distinct keys until `stop`, counting its acknowledged writes in `count`.
/// Waits until the writer has `more` further writes acknowledged (after balancing: writes
/// served from the Regions' new cores).
fn wait_more_writes(count: &AtomicU64, more: u64) {
    let before = count.load(Ordering::Relaxed);
    wait_for(
        "writes acknowledged after balancing",
        BALANCE_TIMEOUT,
        || (count.load(Ordering::Relaxed) >= before + more).then_some(()),
    );
}

fn spawn_writer(
    mut writer: Client,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
) -> std::thread::JoinHandle<(Acked, u64, u64)> {
    std::thread::spawn(move || {
        let (mut acked, mut i, mut failures) = (BTreeMap::new(), 0u64, 0u64);
        while !stop.load(Ordering::Relaxed) {
            let value = format!("v{i}").into_bytes();
            match writer.put(&key(i), &value, Mode::Raw) {
                Ok(_) => {
                    acked.insert(key(i), value);
                    count.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => failures += 1,
            }
            i += 1;
        }
        (acked, i, failures)
    })
}

#[test]
fn on_three_nodes_every_node_balances_its_cores_and_no_acknowledged_write_is_lost() {
    let cluster = Cluster::start(3, 2, &config());
    let stop = Arc::new(AtomicBool::new(false));
    let options = ClientOptions {
        request_timeout: Duration::from_secs(20),
        attempts_max: 200,
        ..ClientOptions::default()
    };
    let count = Arc::new(AtomicU64::new(0));
    let writer = spawn_writer(
        cluster.client_via(1, 0, options.clone()),
        stop.clone(),
        count.clone(),
    );
    let mut splitter = cluster.client_via(0, 0, options);
    for split_key in SPLIT_KEYS {
        wait_for(&format!("a split at {split_key}"), BALANCE_TIMEOUT, || {
            splitter.split(split_key.as_bytes()).ok()
        });
    }
    // Followers' replicas move too: the leader's messages reach their default core and are
    // passed on to the core that hosts them.
    let placements: Vec<BTreeMap<u64, usize>> = cluster
        .nodes
        .iter()
        .map(|node| wait_balanced(node, 2 + SPLIT_KEYS.len()))
        .collect();
    wait_more_writes(&count, 20);
    stop.store(true, Ordering::Relaxed);
    let (acked, attempts, failures) = writer.join().unwrap();
    let pauses: Vec<Vec<u64>> = cluster.nodes.iter().map(|n| pauses_us(&n.log())).collect();
    eprintln!(
        "3 nodes: {attempts} writes, {failures} failed; placements {placements:?}; hand-off \
         pauses per node {pauses:?} us"
    );
    assert!(
        failures * 100 <= attempts,
        "{failures} of {attempts} writes failed"
    );
    for (node, pauses) in cluster.nodes.iter().zip(&pauses) {
        assert!(
            !pauses.is_empty(),
            "node {} handed nothing over",
            node.spec.node_id
        );
    }
    assert_all_read_back(&cluster.nodes[0], &acked);
    // Every replica applied the same writes, wherever its core.
    for i in 0..cluster.nodes.len() {
        cluster.wait_caught_up(i);
    }
}

/// Writes `count` keys, all acknowledged, and returns them.
fn write_keys(node: &Node, count: u64) -> Acked {
    let mut writer = client(node);
    let mut acked = BTreeMap::new();
    for i in 0..count {
        let value = format!("v{i}").into_bytes();
        writer
            .put(&key(i), &value, Mode::Raw)
            .unwrap_or_else(|e| panic!("write {i}: {e}"));
        acked.insert(key(i), value);
    }
    acked
}

#[test]
fn a_crash_at_any_step_of_a_hand_off_loses_nothing_and_keeps_each_region_on_one_core() {
    // What the restart's log shows for each step: the incoming copy never committed (the
    // source keeps the Region), was committed but not installed (recovery installs it), or
    // was installed and serving while the source still held its copy (recovery frees it).
    let steps = [
        ("incoming", None),
        ("committed", Some("finished installing a handed-off region")),
        (
            "installed",
            Some("freeing the copy of a region handed to another core"),
        ),
        (
            "done",
            Some("freeing the copy of a region handed to another core"),
        ),
    ];
    for (step, recovery_line) in steps {
        let mut node = node();
        node.env
            .push(("TESSERA_TEST_HANDOFF_CRASH".to_string(), step.to_string()));
        node.start();
        let acked = write_keys(&node, 200);
        let mut splitter = client(&node);
        let mut splits = 0;
        for split_key in SPLIT_KEYS {
            let split = wait_for(&format!("a split at {split_key}"), BALANCE_TIMEOUT, || {
                let crashed = !node.is_running() || node.try_wait().is_some();
                match splitter.split(split_key.as_bytes()) {
                    Ok(_) => Some(true),
                    Err(_) if crashed => Some(false),
                    Err(_) => None,
                }
            });
            if !split {
                break;
            }
            splits += 1;
        }
        if node.is_running() {
            let status = node
                .wait_exit(BALANCE_TIMEOUT)
                .unwrap_or_else(|| panic!("step {step}: no crash; log:\n{}", node.log()));
            assert!(!status.success(), "step {step}: exited with {status}");
        }
        assert!(
            node.last_log().contains("crashing mid-hand-off"),
            "step {step}: the node stopped elsewhere; log:\n{}",
            node.last_log()
        );
        assert!(splits >= 2, "step {step}: crashed before two splits");
        node.env.clear();
        node.start();
        if let Some(line) = recovery_line {
            assert!(
                node.last_log().contains(line),
                "step {step}: recovery did not log {line:?}; log:\n{}",
                node.last_log()
            );
        }
        wait_balanced(&node, 2 + splits);
        assert_all_read_back(&node, &acked);
        // Every Region still takes writes.
        let more = write_keys(&node, 50);
        assert_all_read_back(&node, &more);
        node.stop_cleanly();
    }
}
