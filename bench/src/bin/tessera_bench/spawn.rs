//! `--spawn`: start a single node or a 3-node cluster on loopback for the run, wait until every
//! Region has a leader that accepts writes, and stop the processes (SIGTERM, then SIGKILL after
//! a grace period) and delete their data when dropped — also when the run fails.
//!
//! Ports: node `i` (from 0) serves clients on `base_port + 10 * i` (+ core) and peers on
//! `base_port + 500 + 10 * i`, the scheme of `tessera cluster`.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tessera_node::client::{Client, ClientOptions};
use tessera_transport::client::Mode;

use crate::placement::{self, SpawnPlacement};
use crate::routing::Routing;

/// What to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Topology {
    /// One node, one replica per Region.
    Single,
    /// Three nodes, three replicas per Region.
    Cluster3,
}

/// Nodes started for the run; stopped and deleted on drop.
pub struct LocalCluster {
    children: Vec<Child>,
    /// A client address of node 1.
    pub seed_addr: String,
    /// Where the data live.
    pub dir: tempfile::TempDir,
    /// Where the nodes' logs are (`dir` unless asked otherwise).
    log_dir: std::path::PathBuf,
    /// The CPUs the nodes were given (`--spawn-placement`), one line; `None`: the OS places
    /// them.
    pub placement: Option<String>,
}

/// How to start the nodes.
pub struct SpawnOptions<'a> {
    pub topology: Topology,
    pub binary: &'a Path,
    pub base_port: u16,
    pub cores: usize,
    pub node_config: Option<&'a Path>,
    pub data_parent: &'a Path,
    /// The nodes' `RUST_LOG` (e.g. `warn,tessera::latency=debug` for the write breakdown).
    pub log_filter: &'a str,
    /// Where the nodes write `node-<i>.log` (kept after the run); `None`: beside their data.
    pub log_dir: Option<&'a Path>,
    pub ready_timeout: Duration,
    pub placement: SpawnPlacement,
}

/// Starts the nodes and waits up to `ready_timeout` for leaders that accept writes.
///
/// # Errors
/// When a process cannot start, exits, or the cluster is not ready in time.
pub fn spawn(options: SpawnOptions<'_>) -> anyhow::Result<LocalCluster> {
    let SpawnOptions {
        topology,
        binary,
        base_port,
        cores,
        node_config,
        data_parent,
        log_filter,
        log_dir,
        ready_timeout,
        placement,
    } = options;
    let nodes = match topology {
        Topology::Single => 1,
        Topology::Cluster3 => 3,
    };
    let dir = tempfile::Builder::new()
        .prefix("tessera-bench-")
        .tempdir_in(data_parent)
        .with_context(|| format!("creating a data directory in {}", data_parent.display()))?;
    let ports = |i: usize| (base_port + 10 * i as u16, base_port + 500 + 10 * i as u16);
    let members: Vec<String> = (0..nodes)
        .map(|i| format!("{}=127.0.0.1:{}:{}", i + 1, ports(i).0, ports(i).1))
        .collect();
    let mut cluster = LocalCluster {
        children: Vec::new(),
        seed_addr: format!("127.0.0.1:{}", base_port),
        log_dir: log_dir.unwrap_or(dir.path()).to_path_buf(),
        dir,
        placement: None,
    };
    for i in 0..nodes {
        let (client_port, peer_port) = ports(i);
        let log_path = cluster.log_dir.join(format!("node-{}.log", i + 1));
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let mut command = Command::new(binary);
        command
            .args(["serve", "--node-id", &(i + 1).to_string()])
            .arg("--data-dir")
            .arg(cluster.dir.path().join(format!("node-{}", i + 1)))
            .args(["--client-port", &client_port.to_string()])
            .args(["--peer-port", &peer_port.to_string()])
            .args(["--cores", &cores.to_string()])
            // One node keeps the default placement (pinned); several share the machine's
            // CPUs through the OS scheduler, since pinned they would stack on the same CPUs.
            .args(["--cpus", if nodes > 1 { "none" } else { "auto" }])
            .env("RUST_LOG", log_filter)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if nodes > 1 {
            command.args(["--initial-cluster", &members.join(",")]);
        }
        if let Some(config) = node_config {
            command.arg("--config").arg(config);
        }
        // SAFETY: prctl is async-signal-safe and touches only the child. A node gets SIGTERM
        // if the generator dies without running `Drop` (e.g. SIGKILL), so none is left behind.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = command.spawn().with_context(|| {
            format!(
                "starting {} (build it with `cargo build --release -p tessera-node`)",
                binary.display()
            )
        })?;
        cluster.children.push(child);
    }
    cluster.wait_ready(ready_timeout)?;
    let allowed = placement::allowed_cpus();
    let place = match placement {
        SpawnPlacement::Os => false,
        SpawnPlacement::LeaderApart => true,
        SpawnPlacement::Auto => placement::oversubscribed(allowed.len(), nodes, cores),
    };
    if place && nodes > 1 {
        cluster.place(&allowed, cores)?;
    }
    Ok(cluster)
}

impl LocalCluster {
    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut last = String::from("not tried");
        while started.elapsed() < timeout {
            for (i, child) in self.children.iter_mut().enumerate() {
                if let Some(status) = child.try_wait()? {
                    bail!("node {} exited with {status}\n{}", i + 1, self.log_tails(8));
                }
            }
            match self.probe() {
                Ok(()) => return Ok(()),
                Err(error) => last = format!("{error:#}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "cluster not ready after {timeout:?}: {last}\n{}",
            self.log_tails(8)
        )
    }

    /// The last `lines` lines of every node's log, for error messages.
    fn log_tails(&self, lines: usize) -> String {
        (1..=self.children.len())
            .map(|i| {
                let path = self.log_dir.join(format!("node-{i}.log"));
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let all: Vec<&str> = text.lines().collect();
                let tail = all[all.len().saturating_sub(lines)..].join("\n");
                format!("--- node {i} log (last {lines} lines):\n{tail}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `leader-apart` (see `placement`): pins the node leading the most Regions to the data
    /// disk's interrupt CPU and the others to the remaining CPUs.
    fn place(&mut self, allowed: &[usize], cores: usize) -> anyhow::Result<()> {
        // Leaders as the seed node knows them; one it does not know (a Region of another of
        // its cores, with several cores per node) just does not count.
        let mut led = vec![0; self.children.len()];
        for region in Routing::load(&self.seed_addr)?.regions() {
            let node = region.leader.and_then(|l| (l.0 as usize).checked_sub(1));
            if let Some(count) = node.and_then(|n| led.get_mut(n)) {
                *count += 1;
            }
        }
        if led.iter().all(|&count| count == 0) {
            eprintln!("placement: no leader known yet; the OS places the nodes");
            return Ok(());
        }
        let interrupt_cpu = placement::disk_interrupt_cpu(self.dir.path());
        let Some(plan) = placement::leader_apart(allowed, interrupt_cpu, &led, cores) else {
            return Ok(());
        };
        for (child, cpus) in self.children.iter().zip(&plan.cpus) {
            placement::pin_process(child.id(), cpus)
                .with_context(|| format!("pinning node process {} to CPUs {cpus:?}", child.id()))?;
        }
        self.placement = Some(plan.summary);
        Ok(())
    }

    /// Every Region has a leader and takes a write.
    fn probe(&self) -> anyhow::Result<()> {
        // Not `Routing::all_led`: a node's routing answer may not know the leader of a
        // Region owned by another of its cores; a write to every Region (following NotLeader
        // hints) is the real test.
        let routing = Routing::load(&self.seed_addr)?;
        let options = ClientOptions {
            request_timeout: Duration::from_secs(2),
            ..ClientOptions::default()
        };
        let mut client = Client::connect(&self.seed_addr, options)?;
        for region in routing.regions() {
            let mut key = region.start_key.clone();
            key.push(0);
            client.put(&key, b"ready", Mode::Strong)?;
        }
        Ok(())
    }
}

impl LocalCluster {
    /// CPU seconds (user + system) each node has used so far, from `/proc/<pid>/stat`.
    pub fn cpu_seconds(&self) -> Vec<f64> {
        self.children
            .iter()
            .map(|c| process_cpu_seconds(c.id()))
            .collect()
    }
}

/// User + system CPU seconds of process `pid`; 0 when unreadable.
pub fn process_cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th
    // fields of the whole line, so the 12th and 13th after it.
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    ticks as f64 / per_second as f64
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in &self.children {
            // SAFETY: kill(2) on a child we started and have not yet reaped.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for child in &mut self.children {
            while Instant::now() < deadline {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}
