//! The fault schedule: one random action per step during the fault phase, then a liveness
//! phase with a healed network in which the cluster must elect a leader and commit.

use tessera_core::{ConfChange, NodeId, Role};

use super::cluster::Cluster;

/// What one seeded run did, for the summary line.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunStats {
    pub steps: u64,
    pub crashes: u64,
    pub partitions: u64,
    pub conf_changes: u64,
    pub transfers: u64,
    pub committed_proposals: u64,
    pub liveness_ticks: u64,
    pub elections: u64,
}

/// Ticks the healed cluster may take to elect a leader and commit a proposal.
pub const LIVENESS_TICKS_MAX: u64 = 400;
const MEMBERS_MAX_EXTRA: u64 = 3;
const VOTERS_MIN: usize = 3;

/// Runs one seed: `steps` faulty steps on a cluster of `voters`, then the liveness phase.
///
/// # Panics
/// On any safety violation, or if the cluster does not recover in time.
pub fn run(seed: u64, voters: u64, steps: u64) -> RunStats {
    let mut cluster = Cluster::new(voters, seed);
    cluster.faults.drop_permille = 50;
    cluster.faults.duplicate_permille = 20;
    cluster.crash_in_ready_permille = 1;
    let mut stats = RunStats {
        steps,
        ..RunStats::default()
    };
    let mut proposal = 0u64;
    for _ in 0..steps {
        fault_step(&mut cluster, voters, &mut stats, &mut proposal);
    }
    stats.liveness_ticks = liveness(&mut cluster, seed);
    stats.committed_proposals = cluster.committed_payloads.len() as u64;
    stats.elections = cluster.checker.elections;
    stats
}

fn fault_step(cluster: &mut Cluster, voters: u64, stats: &mut RunStats, proposal: &mut u64) {
    let roll = cluster.rng.range(0, 1000);
    let ids = cluster.ids();
    match roll {
        0..=399 => {
            cluster.deliver_one();
        }
        400..=599 => cluster.tick_all(),
        600..=719 => {
            *proposal += 1;
            cluster.propose(format!("p{proposal}").into_bytes());
        }
        720..=769 => {
            if let Some(id) = cluster.pick(&ids) {
                cluster.read(id);
            }
        }
        770..=774 => {
            if let Some(id) = cluster.pick(&ids) {
                stats.crashes += 1;
                cluster.crash(id);
            }
        }
        775..=829 => {
            if let Some(id) = cluster.pick(&ids) {
                cluster.restart(id);
            }
        }
        830..=839 => {
            stats.partitions += 1;
            cluster.partition();
        }
        840..=849 => {
            stats.partitions += 1;
            cluster.asymmetric_partition();
        }
        850..=899 => cluster.heal(),
        900..=914 => {
            if conf_change(cluster, voters) {
                stats.conf_changes += 1;
            }
        }
        915..=929 => {
            if transfer(cluster) {
                stats.transfers += 1;
            }
        }
        930..=959 => {
            if let Some(id) = cluster.pick(&ids) {
                cluster.compact(id);
            }
        }
        _ => {
            if let Some(id) = cluster.pick(&ids) {
                cluster.process_ready(id);
            }
        }
    }
}

/// Asks the leader for a membership change: add a learner (a blank node seeded by snapshot),
/// promote a learner, or remove a member (the leader included).
fn conf_change(cluster: &mut Cluster, founding_voters: u64) -> bool {
    let Some(leader) = cluster.leader() else {
        return false;
    };
    let conf = cluster
        .core(leader)
        .expect("leader runs")
        .conf_state()
        .clone();
    let members = (conf.voters.len() + conf.learners.len()) as u64;
    let roll = cluster.rng.range(0, 3);
    let change = if roll == 0 && !conf.learners.is_empty() {
        let learner = cluster.pick(&conf.learners).expect("non-empty");
        ConfChange::AddVoter(learner)
    } else if roll <= 1
        && members < founding_voters + MEMBERS_MAX_EXTRA
        && cluster.next_node_id < founding_voters + 8
    {
        ConfChange::AddLearner(cluster.add_blank_node())
    } else if conf.voters.len() > VOTERS_MIN {
        let target = if cluster.chance(300) {
            leader
        } else {
            cluster.pick(&conf.voters).expect("non-empty")
        };
        ConfChange::Remove(target)
    } else if let Some(learner) = cluster.pick(&conf.learners) {
        ConfChange::Remove(learner)
    } else {
        return false;
    };
    let core = cluster.core_mut(leader).expect("leader runs");
    let ok = core.propose_conf_change(change).is_ok();
    cluster.process_ready(leader);
    ok
}

fn transfer(cluster: &mut Cluster) -> bool {
    let Some(leader) = cluster.leader() else {
        return false;
    };
    let voters = cluster
        .core(leader)
        .expect("leader")
        .conf_state()
        .voters
        .clone();
    let Some(target) = cluster.pick(&voters) else {
        return false;
    };
    let ok = cluster
        .core_mut(leader)
        .expect("leader")
        .transfer_leader(target)
        .is_ok();
    cluster.process_ready(leader);
    ok
}

/// True when every member of the leader's configuration applied the leader's commit index:
/// the leader must bring lagging members up to date without waiting for new proposals.
fn all_members_caught_up(cluster: &Cluster) -> bool {
    let Some(leader) = cluster.leader() else {
        return false;
    };
    let core = cluster.core(leader).expect("leader runs");
    let committed = core.committed();
    core.conf_state().members().all(|member| {
        cluster
            .core(member)
            .is_some_and(|c| c.applied() >= committed)
    })
}

/// Heals everything and waits for a leader that commits a fresh proposal and brings every
/// member up to date. Returns the ticks it took.
fn liveness(cluster: &mut Cluster, seed: u64) -> u64 {
    cluster.heal();
    cluster.faults.drop_permille = 0;
    cluster.faults.duplicate_permille = 0;
    cluster.crash_in_ready_permille = 0;
    for id in cluster.ids() {
        cluster.restart(id);
    }
    // First, without any new proposal: the leader must bring every member up to its commit
    // index on its own (lost appends are re-sent on heartbeat answers).
    let mut caught_up_at = None;
    for tick in 0..LIVENESS_TICKS_MAX {
        cluster.tick_all();
        let mut budget = 10_000;
        while budget > 0 && cluster.deliver_one() {
            budget -= 1;
        }
        if all_members_caught_up(cluster) {
            caught_up_at = Some(tick);
            break;
        }
    }
    if caught_up_at.is_none() {
        panic!(
            "Liveness: members not caught up within {LIVENESS_TICKS_MAX} ticks after the faults stopped\n{}",
            describe(cluster)
        );
    }
    let payload = format!("liveness-{seed}").into_bytes();
    let mut proposed = false;
    for tick in 0..LIVENESS_TICKS_MAX {
        cluster.tick_all();
        let mut budget = 10_000;
        while budget > 0 && cluster.deliver_one() {
            budget -= 1;
        }
        if cluster.committed_payloads.contains(&payload) && all_members_caught_up(cluster) {
            return tick;
        }
        if !proposed || tick.is_multiple_of(20) {
            if let Some(leader) = cluster.leader() {
                let is_voter = cluster
                    .core(leader)
                    .is_some_and(|c| c.role() == Role::Leader && c.conf_state().is_voter(leader));
                if is_voter {
                    proposed |= cluster.propose(payload.clone());
                }
            }
        }
    }
    panic!(
        "Liveness: no proposal committed within {LIVENESS_TICKS_MAX} ticks after the faults stopped\n{}",
        describe(cluster)
    );
}

fn describe(cluster: &Cluster) -> String {
    let states: Vec<String> = cluster
        .ids()
        .into_iter()
        .map(|id: NodeId| match cluster.core(id) {
            Some(c) => format!(
                "{id:?}: {:?} {:?} leader={:?} commit={:?} applied={:?} last={:?} conf={:?}",
                c.role(),
                c.term(),
                c.leader(),
                c.committed(),
                c.applied(),
                c.last_index(),
                c.conf_state()
            ),
            None => format!("{id:?}: down"),
        })
        .collect();
    states.join("\n")
}
