//! A static multi-node cluster of real `tessera serve` processes on loopback, built on
//! [`Node`]: every node gets the same `initial_cluster` list (in its config file), its own
//! temporary data directory and fresh ports. Helpers read each node's status from every core
//! and its snapshot files from disk, so tests can ask "who leads Region r", "has node i
//! applied what the leader committed", "did the leader compact past what node i holds".
//!
//! Node `i` of [`Cluster::nodes`] (from 0) has node id `i + 1`. Dropping the cluster drops
//! every `Node`, which SIGKILLs its process and prints its log tail when the test failed.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use tessera_node::client::{Client, ClientOptions};
use tessera_transport::client::RegionStatus;

use super::{free_ports, wait_for, Node, POLL_INTERVAL};

/// How long a cluster may take to elect leaders or let a node catch up.
pub const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);

/// Config keys that make elections fast on loopback: 20 ms ticks, so a dead leader is
/// replaced within 200-400 ms; no spinning, since the cluster's cores share a small machine.
pub const FAST_CONFIG: &str = "tick_ms = 20\nelection_timeout_ticks = 10\n\
                               heartbeat_interval_ticks = 2\nspin_before_park_us = 0\n";

/// Some nodes started with the same `initial_cluster`.
pub struct Cluster {
    pub nodes: Vec<Node>,
}

impl Cluster {
    /// Starts `size` nodes with `cores` cores each and the config keys in `extra_config`,
    /// and waits until every node knows a leader for each of its Regions.
    pub fn start(size: usize, cores: usize, extra_config: &str) -> Cluster {
        let ports: Vec<_> = (0..size).map(|_| free_ports(cores)).collect();
        let members: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("\"{}=127.0.0.1:{}:{}\"", i + 1, p.client, p.peer))
            .collect();
        let config = format!(
            "{extra_config}\ninitial_cluster = [{}]\n",
            members.join(", ")
        );
        let nodes = ports
            .into_iter()
            .enumerate()
            .map(|(i, ports)| {
                let mut node = Node::new().with_config(&config);
                node.spec.node_id = i as u64 + 1;
                node.spec.cores = cores;
                node.spec.ports = ports;
                node
            })
            .collect();
        let mut cluster = Cluster { nodes };
        cluster.spawn_all();
        cluster.wait_ready_all();
        cluster
    }

    /// Spawns every stopped node without waiting.
    pub fn spawn_all(&mut self) {
        for node in self.nodes.iter_mut().filter(|n| !n.is_running()) {
            node.spawn();
        }
    }

    /// Waits until every running node knows a leader for each of its Regions.
    pub fn wait_ready_all(&mut self) {
        for i in self.running() {
            self.wait_ready(i);
        }
    }

    /// Waits until node `i` answers `status` on every core and knows a leader for each of
    /// its Regions ([`Node::wait_ready`] wants a single node that leads them all). A node
    /// that is no Region's peer (a static cluster larger than `replicas`) holds none and is
    /// ready once it answers.
    ///
    /// # Panics
    /// If the process exits or does not get there within `CLUSTER_TIMEOUT`.
    pub fn wait_ready(&mut self, i: usize) {
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        loop {
            if let Some(status) = self.nodes[i].try_wait() {
                panic!(
                    "node {} exited with {status} before serving; log:\n{}",
                    i + 1,
                    self.nodes[i].log()
                );
            }
            let ready = self.status(i).is_some_and(|regions| {
                regions.values().all(|r| r.leader.is_some())
                    && (!regions.is_empty() || self.peer_of_no_region(i))
            });
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not serve within {CLUSTER_TIMEOUT:?}; its threads:\n{}",
                i + 1,
                threads_report(self.nodes[i].pid())
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// True when node `i`'s routing table lists it as a peer of no Region.
    pub fn peer_of_no_region(&self, i: usize) -> bool {
        let addr = self.nodes[i].client_addr(0);
        let options = ClientOptions {
            request_timeout: Duration::from_millis(500),
            attempts_max: 1,
            ..ClientOptions::default()
        };
        let node = tessera_core::NodeId(i as u64 + 1);
        Client::connect(&addr, options).is_ok_and(|client| {
            let (regions, _) = client.routing();
            !regions.is_empty() && regions.iter().all(|r| !r.peers.contains(&node))
        })
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Restarts node `i` on its data directory and waits until it knows its Regions' leaders.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].spawn();
        self.wait_ready(i);
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_running())
            .collect()
    }

    /// A client seeded with node `i`'s core `core`.
    pub fn client_via(&self, i: usize, core: usize, options: ClientOptions) -> Client {
        let addr = self.nodes[i].client_addr(core);
        Client::connect(&addr, options).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    /// Every Region replica of node `i`, from the status of each of its cores; `None` when a
    /// core does not answer.
    pub fn status(&self, i: usize) -> Option<BTreeMap<u64, RegionStatus>> {
        let node = &self.nodes[i];
        if !node.is_running() {
            return None;
        }
        let mut regions = BTreeMap::new();
        for addr in node.client_addrs() {
            let options = ClientOptions {
                request_timeout: Duration::from_millis(500),
                attempts_max: 1,
                ..ClientOptions::default()
            };
            let status = Client::connect(&addr, options)
                .ok()?
                .status(Some(&addr))
                .ok()?;
            for region in status.regions {
                regions.insert(region.region_id.0, region);
            }
        }
        Some(regions)
    }

    /// Waits until every running node names the same leader, a running node, for each
    /// Region, and returns Region id → leader's index in `nodes`.
    pub fn wait_agreed_leaders(&self) -> BTreeMap<u64, usize> {
        wait_for("agreed leaders on every node", CLUSTER_TIMEOUT, || {
            self.agreed_leaders()
        })
    }

    fn agreed_leaders(&self) -> Option<BTreeMap<u64, usize>> {
        let mut agreed: Option<BTreeMap<u64, usize>> = None;
        for i in self.running() {
            let leaders = self
                .status(i)?
                .into_iter()
                .map(|(region, s)| Some((region, s.leader?.get() as usize - 1)))
                .collect::<Option<BTreeMap<u64, usize>>>()?;
            if leaders.values().any(|l| !self.nodes[*l].is_running()) {
                return None;
            }
            match &agreed {
                Some(previous) if *previous != leaders => return None,
                _ => agreed = Some(leaders),
            }
        }
        agreed.filter(|a| !a.is_empty())
    }

    /// Waits until node `i` has applied, in every Region, at least what that Region's
    /// leader had committed when the wait began.
    pub fn wait_caught_up(&self, i: usize) {
        let leaders = self.wait_agreed_leaders();
        let targets: BTreeMap<u64, u64> = leaders
            .iter()
            .map(|(region, leader)| {
                let status = wait_for("the leader's status", CLUSTER_TIMEOUT, || {
                    self.status(*leader)
                });
                (*region, status[region].commit_index.0)
            })
            .collect();
        wait_for(
            &format!("node {} to apply up to {targets:?}", i + 1),
            CLUSTER_TIMEOUT,
            || {
                let status = self.status(i)?;
                targets
                    .iter()
                    .all(|(region, target)| {
                        status
                            .get(region)
                            .is_some_and(|s| s.applied_index.0 >= *target)
                    })
                    .then_some(())
            },
        );
    }

    /// Region id → index of node `i`'s newest snapshot file of it, over all its cores.
    pub fn snapshot_indexes(&self, i: usize) -> BTreeMap<u64, u64> {
        snapshot_indexes(&self.nodes[i].spec.data_dir)
    }
}

/// Region id → newest snapshot index, from the `core-*/snapshots/*.snap` files under
/// `data_dir` (file names are `REGION-INDEX-TERM.snap`, zero-padded).
pub fn snapshot_indexes(data_dir: &Path) -> BTreeMap<u64, u64> {
    let mut newest = BTreeMap::new();
    let Ok(cores) = std::fs::read_dir(data_dir) else {
        return newest;
    };
    for core in cores.flatten() {
        let name = core.file_name();
        if !name.to_string_lossy().starts_with("core-") {
            continue;
        }
        let Ok(files) = std::fs::read_dir(core.path().join("snapshots")) else {
            continue;
        };
        for file in files.flatten() {
            let name = file.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".snap")) else {
                continue;
            };
            let parts: Vec<u64> = stem.split('-').filter_map(|p| p.parse().ok()).collect();
            if let [region, index, _term] = parts[..] {
                let entry = newest.entry(region).or_insert(index);
                *entry = (*entry).max(index);
            }
        }
    }
    newest
}

/// Each thread of process `pid`: name, state and the kernel function it waits in, so a node
/// that hangs shows where.
pub fn threads_report(pid: i32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return format!("process {pid} has no /proc entry");
    };
    let mut lines = Vec::new();
    for task in tasks.flatten() {
        let path = task.path();
        let read = |name: &str| {
            std::fs::read_to_string(path.join(name))
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        let state = read("status")
            .lines()
            .find(|l| l.starts_with("State:"))
            .unwrap_or_default()
            .to_string();
        lines.push(format!(
            "  {} {:?} {state} wchan={} {}",
            task.file_name().to_string_lossy(),
            read("comm"),
            read("wchan"),
            read("syscall")
        ));
    }
    lines.sort();
    lines.join("\n")
}
