//! One seeded run: a fault phase (crashes, crashes during WAL writes, failed fsyncs,
//! partitions both ways and one-way, leadership flaps, a faulty network) with clients
//! running, then a healed
//! phase in which every node restarts, the cluster must converge and the clients finish,
//! then a strong read of every key, then the linearizability check of the whole history.

use tessera_bench::linearizability::{check, CheckConfig, Verdict};
use tessera_core::{NodeId, RegionId};

use super::clients::{ClientStats, Clients};
use super::cluster::{Cluster, ClusterStats, DiskFaults};
use super::digest;
use super::net::NetFaults;

/// Cores per node (each with its own Store and disk); the four Regions spread over them.
pub const CORES: usize = 2;
/// Clients: eight over four Regions put two or more writes in flight at one leader often
/// enough for a leadership flap to catch them uncommitted (see [`Flap`]).
pub const CLIENTS: usize = 8;
/// Steps the healed cluster may take to converge, and then to finish the final reads.
pub const LIVENESS_STEPS_MAX: u64 = 6_000;
/// With membership changes on, the simulated driver acts this often (steps).
pub const MOVE_STEP_EVERY: u64 = 25;
/// How long a flap's second cut lasts (steps): about one to three election timeouts; the
/// first lasts until another node leads, at most the range's end.
const FLAP_CUT_STEPS: std::ops::Range<u64> = 120..300;
/// How long a flap's successor has to hand leadership back, how often it is asked, and how
/// long the clients keep their focus on the Region once the first leader leads again.
const FLAP_HAND_BACK_STEPS: u64 = 300;
const FLAP_HAND_BACK_ASK_STEPS: u64 = 50;
const FLAP_RETURNED_STEPS: u64 = 200;

/// What one run did.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunStats {
    pub cluster: ClusterStats,
    pub clients: ClientStats,
    pub partitions: u64,
    /// Leadership flaps that cut off a second leader, and those whose second leader handed
    /// leadership back to the first (see [`Flap`]).
    pub flaps: u64,
    pub flaps_handed_back: u64,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    pub messages_duplicated: u64,
    pub operations_checked: u64,
    pub liveness_steps: u64,
    /// A digest of the history and the final states: equal for equal seeds.
    pub digest: u64,
}

/// Runs one seed. With `moves`, each Region has three replicas and they are moved between
/// the nodes during the fault phase (see `Cluster::drive_moves`).
///
/// # Panics
/// On any violated invariant, a recovery failure, a cluster that does not converge once
/// healed, or a history that is not linearizable.
pub fn run_with(seed: u64, nodes: u64, steps: u64, moves: bool) -> RunStats {
    let replicas = if moves { 3 } else { nodes as usize };
    let mut cluster = Cluster::new(seed, nodes, CORES, replicas);
    cluster.disk_faults = DiskFaults {
        crash_in_write_permille: 2,
        fsync_fail_permille: 1,
    };
    let mut clients = Clients::new(CLIENTS, cluster.regions.clone());
    let mut stats = RunStats::default();
    let mut flap = None;
    for i in 0..steps {
        fault_step(&mut cluster, &mut stats, &mut flap);
        flap_step(&mut cluster, &mut stats, &mut flap);
        clients.focus = flap.as_ref().map(|f| f.region);
        if moves && i % MOVE_STEP_EVERY == 0 {
            cluster.drive_moves();
        }
        step(&mut cluster, &mut clients);
    }
    stats.liveness_steps = heal_and_converge(&mut cluster, &mut clients, moves);
    final_reads(&mut cluster, &mut clients);
    clients.abandon_all(cluster.now);
    let states = cluster.final_states();
    for (region, replicas) in &states {
        let (_, applied, hash) = replicas[0];
        for (id, other_applied, other_hash) in replicas {
            assert!(
                (*other_applied, *other_hash) == (applied, hash),
                "{region:?}: replicas differ after convergence: {replicas:?}"
            );
            let _ = id;
        }
    }
    let report = check(
        &clients.history,
        &CheckConfig {
            states_per_key_max: 2_000_000,
            time_limit: None,
            shrink_checks_max: 2_000,
        },
    );
    match &report.verdict {
        Verdict::Linearizable => {}
        Verdict::Violation(_) => panic!("the history is not linearizable:\n{report}"),
        Verdict::Inconclusive { keys } => {
            panic!("the checker ran out of budget on keys {keys:?}: shorten the run or add budget")
        }
    }
    cluster.finish_stats();
    stats.cluster = cluster.stats;
    stats.clients = clients.stats;
    stats.operations_checked = report.operations_checked as u64;
    stats.messages_sent = cluster.net.sent;
    stats.messages_dropped = cluster.net.dropped;
    stats.messages_duplicated = cluster.net.duplicated;
    stats.digest = digest((format!("{:?}", clients.history.operations()), &states));
    stats
}

/// Clients act, then the cluster steps, then answers reach the clients.
fn step(cluster: &mut Cluster, clients: &mut Clients) {
    let nodes = cluster.ids();
    let now = cluster.now;
    for envelope in clients.step(now, &mut cluster.rng, &nodes) {
        cluster.send_request(envelope);
    }
    cluster.step();
    for (client, attempt, result) in std::mem::take(&mut cluster.client_inbox) {
        clients.on_reply(client, attempt, result, cluster.now);
    }
}

/// At most one fault per step, each with a small probability (per ten thousand).
fn fault_step(cluster: &mut Cluster, stats: &mut RunStats, flap: &mut Option<Flap>) {
    let roll = cluster.rng.range(0, 10_000);
    let ids = cluster.ids();
    match roll {
        0..=19 => {
            let up = cluster.up_ids();
            if let Some(id) = cluster.pick(&up) {
                cluster.crash(id);
            }
        }
        20..=79 => {
            let down = cluster.down_ids();
            if let Some(id) = cluster.pick(&down) {
                cluster.restart(id);
            }
        }
        80..=89 => {
            let size = cluster.rng.range(1, ids.len() as u64 / 2 + 1);
            let mut side: Vec<NodeId> = Vec::new();
            while (side.len() as u64) < size {
                let id = cluster.pick(&ids).expect("nodes");
                if !side.contains(&id) {
                    side.push(id);
                }
            }
            cluster.net.partition(&ids, &side);
            stats.partitions += 1;
        }
        90..=94 => {
            let (from, to) = (cluster.pick(&ids), cluster.pick(&ids));
            if let (Some(from), Some(to)) = (from, to) {
                if from != to {
                    cluster.net.block_one_way(from, to);
                    stats.partitions += 1;
                }
            }
        }
        95..=99 => {
            let region = cluster.regions[cluster.rng.range(0, 4) as usize].id;
            if let Some(leader) = cluster.leader(region) {
                cluster.net.partition(&ids, &[leader]);
                stats.partitions += 1;
            }
        }
        100..=149 => cluster.net.heal(),
        152..=201 if flap.is_none() => {
            let region = cluster.regions[cluster.rng.range(0, 4) as usize].id;
            if let Some(leader) = cluster.leader(region) {
                cluster.net.partition(&ids, &[leader]);
                stats.partitions += 1;
                *flap = Some(Flap {
                    region,
                    first: leader,
                    phase: FlapPhase::FirstCut,
                    until: cluster.now + FLAP_CUT_STEPS.end,
                });
            }
        }
        150..=151 => {
            for id in &ids {
                cluster.crash(*id);
            }
            for id in &ids {
                cluster.restart(*id);
            }
        }
        _ => {}
    }
}

/// A leadership flap: a Region's leader is cut off from the other nodes (clients still
/// reach it, and it takes their writes until it notices it lost its quorum) until another
/// node leads the Region; then, a coin toss, either that successor is cut off in turn (so
/// leadership may go back to the first leader, once a third node has led), or everything
/// heals and the successor is asked to hand leadership back to the first leader (a
/// leadership transfer, as the placement driver orders to balance leaders), which then
/// leads again for a while. That is the shape of the duplicate write of
/// docs/reliability.md: a replica leads again after the leader in between replaced its
/// uncommitted writes with a shorter log, and proposes new writes below its old, queued
/// ones. While a flap lasts, most new client operations go to its Region
/// ([`Clients::focus`]), so the first leader holds several uncommitted writes when it is
/// cut off, and its successor, in office briefly, few.
pub struct Flap {
    region: RegionId,
    /// The leader cut off first.
    first: NodeId,
    phase: FlapPhase,
    /// The step at which the phase ends at the latest.
    until: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FlapPhase {
    /// The first leader is cut off, until another node leads the Region.
    FirstCut,
    /// That successor is cut off.
    SecondCut,
    /// Healed; the Region's leader is asked to hand leadership back to the first one.
    HandBack,
    /// The first leader leads again; the clients keep their focus on the Region.
    Returned,
}

/// Moves a flap on (see [`Flap`]) when its phase is due.
fn flap_step(cluster: &mut Cluster, stats: &mut RunStats, flap: &mut Option<Flap>) {
    let Some(current) = flap.as_mut() else {
        return;
    };
    let now = cluster.now;
    let due = now >= current.until;
    let leader = cluster.leader(current.region);
    match current.phase {
        FlapPhase::FirstCut => {
            let successor = leader.filter(|l| *l != current.first);
            if successor.is_none() && !due {
                return;
            }
            cluster.net.heal();
            let Some(successor) = successor else {
                *flap = None;
                return;
            };
            if cluster.rng.range(0, 2) == 0 {
                let ids = cluster.ids();
                cluster.net.partition(&ids, &[successor]);
                stats.partitions += 1;
                stats.flaps += 1;
                current.phase = FlapPhase::SecondCut;
                current.until = now + cluster.rng.range(FLAP_CUT_STEPS.start, FLAP_CUT_STEPS.end);
            } else {
                current.phase = FlapPhase::HandBack;
                current.until = now + FLAP_HAND_BACK_STEPS;
                cluster.transfer_leader(current.region, current.first);
            }
        }
        FlapPhase::HandBack if leader == Some(current.first) => {
            stats.flaps_handed_back += 1;
            current.phase = FlapPhase::Returned;
            current.until = now + FLAP_RETURNED_STEPS;
        }
        FlapPhase::HandBack if !due => {
            // Asked again now and then, as the driver repeats an order not carried out yet.
            if (current.until - now).is_multiple_of(FLAP_HAND_BACK_ASK_STEPS) {
                cluster.transfer_leader(current.region, current.first);
            }
        }
        FlapPhase::SecondCut if due => {
            cluster.net.heal();
            *flap = None;
        }
        FlapPhase::SecondCut => {}
        FlapPhase::HandBack | FlapPhase::Returned if due => *flap = None,
        FlapPhase::HandBack | FlapPhase::Returned => {}
    }
}

/// Heals everything, restarts every node, stops new operations, and steps until the
/// clients are idle and every Region's replicas applied their leader's commit index.
fn heal_and_converge(cluster: &mut Cluster, clients: &mut Clients, moves: bool) -> u64 {
    cluster.net.heal();
    cluster.net.faults = NetFaults::healed();
    cluster.disk_faults = DiskFaults::default();
    for id in cluster.down_ids() {
        cluster.restart(id);
    }
    clients.issuing = false;
    for taken in 0..LIVENESS_STEPS_MAX {
        if clients.idle() && cluster.converged() {
            return taken;
        }
        if moves && taken % MOVE_STEP_EVERY == 0 {
            // The move in progress completes; no new one starts once it is done.
            cluster.finish_moves();
        }
        step(cluster, clients);
    }
    panic!(
        "Liveness: not converged {LIVENESS_STEPS_MAX} steps after the faults stopped (clients idle: {})\n{}",
        clients.idle(),
        cluster.describe()
    );
}

/// One strong read of every key, retried until it succeeds, so that a lost write shows up
/// in the history.
fn final_reads(cluster: &mut Cluster, clients: &mut Clients) {
    clients.start_final_reads();
    for _ in 0..LIVENESS_STEPS_MAX {
        if clients.idle() {
            return;
        }
        step(cluster, clients);
    }
    panic!(
        "Liveness: the final reads did not finish in {LIVENESS_STEPS_MAX} steps\n{}",
        cluster.describe()
    );
}
