//! The nemesis: faults injected one after another, drawn from a seeded schedule.
//!
//! The seed fixes the sequence of fault kinds, durations, pauses between faults and the
//! random choices of nodes; "the leader" is whichever node leads the chosen Region at that
//! moment, so a replay injects the same schedule into a cluster that may have elected
//! differently. Every fault is undone before the next one starts (restart, SIGCONT, heal).
//!
//! ```text
//!   healthy (gap) ─► inject ─► hold (duration) ─► undo ─► healthy (gap) ─► ...
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::cluster::Cluster;
use crate::common::{wait_for, TestRng};
use crate::proxy::Mesh;

/// How long a killed node's ports may stay bound.
const PORTS_FREE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a (re)started node may take to serve.
const SERVING_TIMEOUT: Duration = Duration::from_secs(90);

/// What can go wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// SIGKILL a random node, restart it after the duration.
    KillNode,
    /// SIGKILL the leader of a Region, restart it after the duration.
    KillLeader,
    /// SIGSTOP a random node for the duration (longer than an election timeout), then SIGCONT.
    PauseNode,
    /// SIGSTOP the leader of a Region, then SIGCONT.
    PauseLeader,
    /// Cut a random minority (1 of 3, 2 of 5) from the majority, both ways.
    PartitionMinority,
    /// Cut the leader of a Region from every other node, both ways.
    IsolateLeader,
    /// The leader's messages to the others are lost; theirs still reach it.
    LeaderCannotSend,
    /// The others' messages to the leader are lost; its messages still reach them.
    LeaderCannotReceive,
    /// SIGKILL every node at once, restart them all.
    RestartAll,
}

impl FaultKind {
    pub const ALL: [FaultKind; 9] = [
        FaultKind::KillNode,
        FaultKind::KillLeader,
        FaultKind::PauseNode,
        FaultKind::PauseLeader,
        FaultKind::PartitionMinority,
        FaultKind::IsolateLeader,
        FaultKind::LeaderCannotSend,
        FaultKind::LeaderCannotReceive,
        FaultKind::RestartAll,
    ];

    /// Kinds that leave a running replica cut off from the Region's leader while clients can
    /// still reach it (for the broken-mode test, where reads go to any replica and a stale
    /// one must be reachable).
    pub const STALE_REPLICAS: [FaultKind; 2] =
        [FaultKind::PartitionMinority, FaultKind::IsolateLeader];
}

/// One drawn fault.
#[derive(Clone, Copy, Debug)]
struct Step {
    kind: FaultKind,
    /// Picks the node (or Region, or minority) among the candidates.
    pick: u64,
    duration: Duration,
    gap: Duration,
}

/// Injects faults into `cluster` (whose links go through `mesh`) until `deadline`.
pub struct Nemesis<'a> {
    pub cluster: &'a mut Cluster,
    pub mesh: &'a Mesh,
    pub rng: TestRng,
    pub kinds: &'a [FaultKind],
    /// Times in the printed log are from here (the workload's start).
    pub started: Instant,
    pub injected: BTreeMap<FaultKind, u32>,
}

impl Nemesis<'_> {
    /// Runs the schedule until `deadline` has passed and at least `faults_min` faults were
    /// injected (on a slow machine restarts take longer, so the run is stretched rather than
    /// thinned), but never past `deadline + hard_extra`; returns the number of faults.
    pub fn run_until(&mut self, deadline: Instant, faults_min: u32, hard_extra: Duration) -> u32 {
        let mut count = 0;
        while (Instant::now() < deadline || count < faults_min)
            && Instant::now() < deadline + hard_extra
        {
            let step = self.draw();
            std::thread::sleep(step.gap);
            self.inject(step);
            count += 1;
        }
        count
    }

    fn draw(&mut self) -> Step {
        let kind = self.kinds[self.rng.range(0, self.kinds.len() as u64) as usize];
        let duration_ms = match kind {
            // Longer than an election timeout (500-1000 ms with the chaos config).
            FaultKind::PauseNode | FaultKind::PauseLeader => self.rng.range(1200, 2500),
            FaultKind::RestartAll => self.rng.range(50, 500),
            _ => self.rng.range(500, 2500),
        };
        Step {
            kind,
            pick: self.rng.next_u64(),
            duration: Duration::from_millis(duration_ms),
            gap: Duration::from_millis(self.rng.range(100, 600)),
        }
    }

    fn inject(&mut self, step: Step) {
        *self.injected.entry(step.kind).or_default() += 1;
        let n = self.cluster.nodes.len();
        let random_node = (step.pick % n as u64) as usize;
        let target = match step.kind {
            FaultKind::KillLeader
            | FaultKind::PauseLeader
            | FaultKind::IsolateLeader
            | FaultKind::LeaderCannotSend
            | FaultKind::LeaderCannotReceive => self.leader(step.pick).unwrap_or(random_node),
            _ => random_node,
        };
        let others: Vec<usize> = (0..n).filter(|i| *i != target).collect();
        self.log(format!(
            "{:?} on node {} for {} ms",
            step.kind,
            target + 1,
            step.duration.as_millis()
        ));
        match step.kind {
            FaultKind::KillNode | FaultKind::KillLeader => {
                self.cluster.kill(target);
                std::thread::sleep(step.duration);
                self.wait_ports_free(target);
                self.cluster.nodes[target].spawn();
                self.wait_serving(target);
            }
            FaultKind::PauseNode | FaultKind::PauseLeader => {
                let pid = self.cluster.nodes[target].pid();
                signal(pid, libc::SIGSTOP);
                std::thread::sleep(step.duration);
                signal(pid, libc::SIGCONT);
            }
            FaultKind::PartitionMinority => {
                let minority = minority(n, step.pick);
                let majority: Vec<usize> = (0..n).filter(|i| !minority.contains(i)).collect();
                self.log(format!("  minority {:?}", one_based(&minority)));
                self.mesh.partition(&minority, &majority);
                std::thread::sleep(step.duration);
                self.mesh.heal();
            }
            FaultKind::IsolateLeader => {
                self.mesh.partition(&[target], &others);
                std::thread::sleep(step.duration);
                self.mesh.heal();
            }
            FaultKind::LeaderCannotSend | FaultKind::LeaderCannotReceive => {
                for other in &others {
                    let (from, to) = if step.kind == FaultKind::LeaderCannotSend {
                        (target, *other)
                    } else {
                        (*other, target)
                    };
                    self.mesh.set_blocked(from, to, true);
                }
                std::thread::sleep(step.duration);
                self.mesh.heal();
            }
            FaultKind::RestartAll => {
                for i in 0..n {
                    self.cluster.kill(i);
                }
                std::thread::sleep(step.duration);
                for i in 0..n {
                    self.wait_ports_free(i);
                }
                self.cluster.spawn_all();
                for i in 0..n {
                    self.wait_serving(i);
                }
            }
        }
    }

    /// Waits until node `i`'s ports can be bound again after a SIGKILL. The kernel releases
    /// a killed node's listeners when it tears down its io_uring rings, asynchronously; on a
    /// loaded machine that took more than the harness's 10 s, so the wait here is longer and
    /// a slow release is logged.
    fn wait_ports_free(&self, i: usize) {
        let spec = &self.cluster.nodes[i].spec;
        let cores = spec.cores as u16;
        let ports: Vec<u16> = (spec.ports.client..spec.ports.client + cores)
            .chain(spec.ports.peer..spec.ports.peer + cores)
            .collect();
        let started = Instant::now();
        let busy = || {
            ports
                .iter()
                .copied()
                .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_err())
        };
        wait_for(
            &format!("node {}'s ports to be free", i + 1),
            PORTS_FREE_TIMEOUT,
            || busy().is_none().then_some(()),
        );
        if started.elapsed() > Duration::from_secs(2) {
            self.log(format!(
                "  node {}'s ports took {:?} to be free after the kill",
                i + 1,
                started.elapsed()
            ));
        }
    }

    /// Waits until node `i` knows a leader for each of its Regions. A restarted node can
    /// stall in the kernel for tens of seconds on a loaded machine (threads in D state in
    /// `synchronize_rcu` / `expand_files` while io_uring rings of killed processes are torn
    /// down), longer than the harness's 30 s, so the wait here is longer and a slow start is
    /// logged.
    pub fn wait_serving(&mut self, i: usize) {
        let started = Instant::now();
        let cluster = &mut *self.cluster;
        wait_for(&format!("node {} to serve", i + 1), SERVING_TIMEOUT, || {
            if let Some(status) = cluster.nodes[i].try_wait() {
                panic!("node {} exited with {status}", i + 1);
            }
            cluster
                .status(i)
                .is_some_and(|r| !r.is_empty() && r.values().all(|s| s.leader.is_some()))
                .then_some(())
        });
        if started.elapsed() > Duration::from_secs(5) {
            self.log(format!(
                "  node {} took {:?} to serve after its start",
                i + 1,
                started.elapsed()
            ));
        }
    }

    /// The node leading one of the Regions (chosen by `pick`), as that node itself says.
    fn leader(&self, pick: u64) -> Option<usize> {
        let mut leaders = BTreeMap::new();
        for i in self.cluster.running() {
            // A node that does not answer (busy, restarting) leads nothing we can see.
            let Some(regions) = self.cluster.status(i) else {
                continue;
            };
            for (region, status) in regions {
                if status.leader.map(|l| l.get()) == Some(i as u64 + 1) {
                    leaders.insert(region, i);
                }
            }
        }
        let regions: Vec<usize> = leaders.into_values().collect();
        (!regions.is_empty()).then(|| regions[(pick % regions.len() as u64) as usize])
    }

    fn log(&self, what: String) {
        eprintln!(
            "chaos: t={:>7.3}s {what}",
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// A minority of `n` nodes (`(n - 1) / 2` of them) chosen by `pick`.
fn minority(n: usize, pick: u64) -> Vec<usize> {
    let mut nodes: Vec<usize> = (0..n).collect();
    let mut pick = pick;
    // A partial Fisher-Yates shuffle driven by `pick`'s digits.
    for i in 0..(n - 1) / 2 {
        let j = i + (pick % (n - i) as u64) as usize;
        pick /= (n - i) as u64;
        nodes.swap(i, j);
    }
    nodes.truncate((n - 1) / 2);
    nodes.sort_unstable();
    nodes
}

fn one_based(nodes: &[usize]) -> Vec<usize> {
    nodes.iter().map(|i| i + 1).collect()
}

fn signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) on the pid of a child the cluster has not reaped yet.
    let result = unsafe { libc::kill(pid, signal) };
    assert_eq!(result, 0, "kill({pid}, {signal}) failed");
}
