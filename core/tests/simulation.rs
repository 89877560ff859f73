//! Randomized, deterministic simulation of whole clusters (3 and 5 voters) under message
//! loss, duplication, reordering, partitions, crash-restarts, membership changes and
//! leadership transfers, checking Raft's safety properties after every step and liveness
//! once the faults stop.
//!
//! - `cargo test -p tessera-core --test simulation` runs the CI budget (1,000 seeds of 5,000
//!   steps; override with `TESSERA_SIM_SEEDS` and `TESSERA_SIM_STEPS`).
//! - `TESSERA_SIM_SEED=<seed>` replays exactly one seed.
//! - The soak: `TESSERA_SIM_SEEDS=100000 cargo test --release -p tessera-core --test simulation`.

mod sim;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use sim::schedule::{run, RunStats};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}"))
    })
}

fn voters_for(seed: u64) -> u64 {
    if seed.is_multiple_of(2) {
        3
    } else {
        5
    }
}

/// Runs one seed, turning a panic into an error that names the seed and how to replay it.
fn run_checked(seed: u64, steps: u64) -> Result<RunStats, String> {
    catch_unwind(AssertUnwindSafe(|| run(seed, voters_for(seed), steps))).map_err(|panic| {
        let reason = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!(
            "simulation failed for seed {seed} ({} voters, {steps} steps): {reason}\n\
             replay: TESSERA_SIM_SEED={seed} cargo test -p tessera-core --test simulation",
            voters_for(seed)
        )
    })
}

#[test]
fn simulated_clusters_stay_safe_and_recover() {
    let steps = env_u64("TESSERA_SIM_STEPS").unwrap_or(5_000);
    if let Some(seed) = env_u64("TESSERA_SIM_SEED") {
        let stats = run_checked(seed, steps).unwrap_or_else(|e| panic!("{e}"));
        println!("seed {seed}: {stats:?}");
        return;
    }
    let seeds = env_u64("TESSERA_SIM_SEEDS").unwrap_or(1_000);
    let next = AtomicU64::new(0);
    let failures = Mutex::new(Vec::new());
    let totals = Mutex::new(RunStats::default());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= seeds || !failures.lock().unwrap().is_empty() {
                    return;
                }
                match run_checked(seed, steps) {
                    Ok(stats) => add(&mut totals.lock().unwrap(), &stats),
                    Err(error) => failures.lock().unwrap().push(error),
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let totals = totals.into_inner().unwrap();
    println!("{seeds} seeds x {steps} steps: {totals:?}");
    // The schedule must actually exercise the faults it claims to.
    assert!(totals.crashes > seeds && totals.partitions > seeds && totals.elections > seeds);
    assert!(totals.conf_changes > seeds / 4 && totals.transfers > seeds / 4);
}

fn add(totals: &mut RunStats, run: &RunStats) {
    totals.steps += run.steps;
    totals.crashes += run.crashes;
    totals.partitions += run.partitions;
    totals.conf_changes += run.conf_changes;
    totals.transfers += run.transfers;
    totals.committed_proposals += run.committed_proposals;
    totals.liveness_ticks = totals.liveness_ticks.max(run.liveness_ticks);
    totals.elections += run.elections;
}
