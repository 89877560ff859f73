//! `tessera-bench`: a load generator for a Tessera cluster, with latency in HDR histograms.
//!
//! Connections (`--connections`) each keep up to `--in-flight` requests outstanding, either as
//! fast as answers come back (closed loop) or at a fixed total `--rate` (open loop, latency
//! measured from each request's intended send time, so a stall is not hidden: see
//! `schedule`). Keys come from a uniform or zipfian distribution over `--keys`; operations from
//! the `--mix` of reads, writes and compare-and-swaps. With `--spawn` it starts a node or a
//! 3-node cluster on loopback itself and stops it afterwards.
//!
//! Output: a one-screen report (or `--json`), a progress line on stderr during the run, the
//! full percentile distribution per operation in HdrHistogram text format (`--hgrm`), a
//! latency-by-percentile SVG (`--svg`) and the run second by second (`--timeline`). See
//! docs/benchmarks.md for measured figures.

mod driver;
mod placement;
mod routing;
mod schedule;
mod spawn;
mod stats;
mod svg;
mod timeline;
mod workload;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use serde_json::json;
use tessera_transport::client::Mode;

use crate::driver::{run_connection, Progress, Workload};
use crate::routing::Routing;
use crate::schedule::{per_second, Pacer};
use crate::spawn::Topology;
use crate::stats::Stats;
use crate::workload::{KeyChooser, KeyDistribution, OpKind, OpMix};

#[derive(Parser, Debug)]
#[command(
    name = "tessera-bench",
    about = "Load generator for Tessera: closed or open loop, HDR latency per operation"
)]
struct Args {
    /// Any node's client address (ignored with --spawn).
    #[arg(long, default_value = "127.0.0.1:7400")]
    addr: String,
    /// Start a local node or 3-node cluster on loopback for the run, and stop it after.
    #[arg(long, value_enum)]
    spawn: Option<Topology>,
    /// First port of spawned nodes (clients; peers at +500; node i at +10*i).
    #[arg(long, default_value_t = 27000)]
    spawn_port: u16,
    /// Cores per spawned node.
    #[arg(long, default_value_t = 1)]
    node_cores: usize,
    /// A node config file (TOML) passed to spawned nodes.
    #[arg(long)]
    node_config: Option<PathBuf>,
    /// The `RUST_LOG` filter of spawned nodes; `warn,tessera::latency=debug` logs the trace
    /// points that `bench/scripts/write_breakdown.py` turns into a write's breakdown.
    #[arg(long, default_value = "warn")]
    node_log_filter: String,
    /// Write the spawned nodes' logs (`node-<i>.log`) into this directory and keep them.
    #[arg(long)]
    node_log_dir: Option<PathBuf>,
    /// The `tessera` binary to spawn (default: next to this one).
    #[arg(long)]
    tessera_bin: Option<PathBuf>,
    /// Where spawned nodes keep their (temporary) data.
    #[arg(long)]
    data_dir_parent: Option<PathBuf>,
    /// Which CPUs the nodes of a spawned cluster run on: `leader-apart` gives the node that
    /// leads the most Regions the CPU taking the disk's interrupts and the others the other
    /// CPUs; `auto` does so when the nodes' cores outnumber the CPUs; `os` leaves it to the
    /// scheduler.
    #[arg(long, value_enum, default_value = "auto")]
    spawn_placement: placement::SpawnPlacement,
    /// Pin the generator's own threads to these CPUs (a list like `1` or `0,1`), once the
    /// spawned nodes are started and placed, so the nodes keep their own placement. Default:
    /// the OS places them.
    #[arg(long)]
    generator_cpus: Option<String>,
    /// Client connections, each driven by its own thread.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Requests outstanding per connection (concurrency = connections × in-flight).
    #[arg(long, default_value_t = 1)]
    in_flight: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration_secs: f64,
    /// Stop after this many requests in total instead of after a duration.
    #[arg(long)]
    requests: Option<u64>,
    /// Seconds run before measuring starts (not recorded).
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// Open loop: total requests per second over all connections (default: closed loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Size of the key space.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    #[arg(long, value_enum, default_value_t = Distribution::Uniform)]
    distribution: Distribution,
    /// Exponent of the zipfian distribution.
    #[arg(long, default_value_t = 0.99)]
    zipf_theta: f64,
    /// Bytes per written value.
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    /// Percentages READ:WRITE:CAS.
    #[arg(long, default_value = "0:100:0")]
    mix: String,
    /// Raw (last writer wins, leader reads) or strong (versioned, linearizable reads).
    #[arg(long, value_enum, default_value_t = ModeArg::Strong)]
    mode: ModeArg,
    /// Write every key once before the run (so reads find values).
    #[arg(long)]
    preload: bool,
    /// Namespace of the keys.
    #[arg(long, default_value = "")]
    namespace: String,
    /// A request unanswered this long counts as a `timeout` error.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Seed of the key and operation choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the full percentile distribution of each operation to PREFIX.<op>.hgrm.
    #[arg(long)]
    hgrm: Option<PathBuf>,
    /// Write the latency-by-percentile plot to this SVG file.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Print a JSON summary instead of the text report.
    #[arg(long)]
    json: bool,
    /// Add the run second by second (requests intended and completed, latency of the
    /// intended ones) to the report or the JSON summary.
    #[arg(long)]
    timeline: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Distribution {
    Uniform,
    Zipfian,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeArg {
    Raw,
    Strong,
}

/// What one phase (the preload or the measured run) produced.
struct PhaseResult {
    stats: Stats,
    /// From the end of the warm-up to the last recorded completion.
    measured_ns: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mix = OpMix::parse(&args.mix).map_err(anyhow::Error::msg)?;
    if args.connections == 0 || args.in_flight == 0 || args.keys == 0 {
        bail!("--connections, --in-flight and --keys must be at least 1");
    }
    if args.rate.is_some_and(|r| r <= 0.0 || !r.is_finite()) {
        bail!("--rate must be a positive number of requests per second");
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    let generator_cpus = args
        .generator_cpus
        .as_deref()
        .map(|list| placement::generator_cpus(list, &placement::allowed_cpus()))
        .transpose()?;
    let cluster = match args.spawn {
        Some(topology) => Some(spawn_cluster(&args, topology)?),
        None => None,
    };
    if let Some(cpus) = &generator_cpus {
        placement::pin_process(std::process::id(), cpus).context("pinning the generator")?;
    }
    let addr = cluster
        .as_ref()
        .map_or(args.addr.clone(), |c| c.seed_addr.clone());
    let routing = Routing::load(&addr)?;
    let distribution = match args.distribution {
        Distribution::Uniform => KeyDistribution::Uniform,
        Distribution::Zipfian => KeyDistribution::Zipfian {
            theta: args.zipf_theta,
        },
    };
    let mut workload = Workload {
        mode: match args.mode {
            ModeArg::Raw => Mode::Raw,
            ModeArg::Strong => Mode::Strong,
        },
        namespace: args.namespace.clone(),
        mix,
        keys: KeyChooser::new(args.keys, distribution),
        sequential: false,
        value: (0..args.value_bytes)
            .map(|i| b'a' + (i % 26) as u8)
            .collect(),
        in_flight: args.in_flight,
        connections: args.connections,
        timeout_ns: args.timeout_ms * 1_000_000,
        measure_from_ns: 0,
        drain_ns: args.timeout_ms * 1_000_000,
        attempts_max: 20,
    };
    if args.preload {
        workload.sequential = true;
        let pacers = split_requests(args.keys, args.connections)
            .map(|n| Pacer::closed_loop(u64::MAX, Some(n)))
            .collect();
        let preload = run_phase(&workload, &routing, pacers, args.seed, "preload", &stop)?;
        eprintln!(
            "preloaded {} keys in {:.1} s, {} errors",
            preload.stats.completed(),
            preload.measured_ns as f64 / 1e9,
            preload.stats.errors.values().sum::<u64>()
        );
        workload.sequential = false;
    }
    let warmup_ns = (args.warmup_secs * 1e9) as u64;
    workload.measure_from_ns = warmup_ns;
    let stop_ns = if args.requests.is_some() {
        u64::MAX
    } else {
        warmup_ns + (args.duration_secs * 1e9) as u64
    };
    let shares: Vec<Option<u64>> = match args.requests {
        Some(total) => split_requests(total, args.connections).map(Some).collect(),
        None => vec![None; args.connections],
    };
    let pacers = shares
        .into_iter()
        .enumerate()
        .map(|(i, share)| match args.rate {
            None => Pacer::closed_loop(stop_ns, share),
            Some(rate) => Pacer::open_loop(rate, args.connections, i, 0, stop_ns, share),
        })
        .collect();
    let cpu_before = cpu_snapshot(cluster.as_ref());
    let wall = std::time::Instant::now();
    let run = run_phase(&workload, &routing, pacers, args.seed, "run", &stop)?;
    let cpu = cpu_percent(&cpu_before, &cpu_snapshot(cluster.as_ref()), wall.elapsed());
    let mut config = config_json(&args, &addr, &routing);
    config["cpu_percent_of_one_core"] = json!({
        "generator": cpu[0],
        "nodes": cpu[1..],
    });
    config["placement"] = json!(cluster.as_ref().and_then(|c| c.placement.clone()));
    // Read back, not echoed: the CPUs the generator's threads may run on now.
    config["generator_cpus"] = json!(generator_cpus.is_some().then(placement::allowed_cpus));
    write_outputs(&args, &run, &config)?;
    if args.json {
        let mut summary = stats::stats_json(&run.stats, run.measured_ns);
        summary["config"] = config;
        if args.timeline {
            summary["timeline"] = run.stats.timeline.json();
        }
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", text_report(&args, &run, &config));
    }
    drop(cluster);
    Ok(())
}

/// CPU seconds used so far by this process, then by each spawned node.
fn cpu_snapshot(cluster: Option<&spawn::LocalCluster>) -> Vec<f64> {
    let mut seconds = vec![spawn::process_cpu_seconds(std::process::id())];
    if let Some(cluster) = cluster {
        seconds.extend(cluster.cpu_seconds());
    }
    seconds
}

/// Percent of one core each process used between two snapshots.
fn cpu_percent(before: &[f64], after: &[f64], wall: Duration) -> Vec<f64> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| ((a - b) / wall.as_secs_f64() * 100.0).round())
        .collect()
}

fn spawn_cluster(args: &Args, topology: Topology) -> anyhow::Result<spawn::LocalCluster> {
    let binary = match &args.tessera_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("locating the tessera binary")?
            .join("tessera"),
    };
    let parent = args
        .data_dir_parent
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    eprintln!("starting {topology:?} on 127.0.0.1:{} ...", args.spawn_port);
    if let Some(dir) = &args.node_log_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    spawn::spawn(spawn::SpawnOptions {
        topology,
        binary: &binary,
        base_port: args.spawn_port,
        cores: args.node_cores,
        node_config: args.node_config.as_deref(),
        data_parent: &parent,
        log_filter: &args.node_log_filter,
        log_dir: args.node_log_dir.as_deref(),
        ready_timeout: Duration::from_secs(30),
        placement: args.spawn_placement,
    })
}

/// `total` requests over `parts` connections, the remainder to the first ones.
fn split_requests(total: u64, parts: usize) -> impl Iterator<Item = u64> {
    let parts = parts as u64;
    (0..parts).map(move |i| total / parts + u64::from(i < total % parts))
}

/// Runs one connection per pacer on its own thread, with a progress line on stderr.
fn run_phase(
    workload: &Workload,
    routing: &Routing,
    pacers: Vec<Pacer>,
    seed: u64,
    label: &str,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<PhaseResult> {
    let progress = Progress::new(stop.clone());
    let done = AtomicBool::new(false);
    let results = std::thread::scope(|scope| {
        let progress = &progress;
        let done = &done;
        let reporter = scope.spawn(move || report_progress(progress, done, label));
        let handles: Vec<_> = pacers
            .into_iter()
            .enumerate()
            .map(|(i, pacer)| {
                let routing = routing.clone();
                std::thread::Builder::new()
                    .name(format!("conn-{i}"))
                    .spawn_scoped(scope, move || {
                        run_connection(i, workload, progress, routing, pacer, seed)
                    })
            })
            .collect::<Result<_, _>>()?;
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("a connection thread panicked"))
            .collect();
        done.store(true, Ordering::Relaxed);
        reporter.join().expect("the progress thread panicked");
        anyhow::Ok(results)
    })?;
    let mut stats = Stats::new();
    let mut last_ns = 0;
    for result in &results {
        stats.merge(&result.stats);
        last_ns = last_ns.max(result.last_recorded_ns);
    }
    Ok(PhaseResult {
        stats,
        measured_ns: last_ns.saturating_sub(workload.measure_from_ns),
    })
}

/// Once a second: elapsed time, completions in the last second, total, errors.
fn report_progress(progress: &Progress, done: &AtomicBool, label: &str) {
    let terminal = std::io::stderr().is_terminal();
    let mut last_completed = 0;
    let mut next = Duration::from_secs(1);
    while !done.load(Ordering::Relaxed) {
        let elapsed = progress.start.elapsed();
        if elapsed < next {
            std::thread::sleep((next - elapsed).min(Duration::from_millis(50)));
            continue;
        }
        let completed = progress.completed.load(Ordering::Relaxed);
        let errors = progress.errors.load(Ordering::Relaxed);
        let line = format!(
            "[{label} {:>5.1} s] {:>8} ops/s   {:>10} done   {errors} errors",
            elapsed.as_secs_f64(),
            completed - last_completed,
            completed
        );
        if terminal {
            eprint!("\r{line}");
        } else {
            eprintln!("{line}");
        }
        last_completed = completed;
        next += Duration::from_secs(1);
    }
    if terminal {
        eprintln!();
    }
}

/// The configuration of the run, as recorded next to every result.
fn config_json(args: &Args, addr: &str, routing: &Routing) -> serde_json::Value {
    let load_average = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string));
    json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "target": addr,
        "spawn": args.spawn.map(|t| format!("{t:?}").to_lowercase()),
        "node_cores": args.node_cores,
        "regions": routing.regions().len(),
        "loop": if args.rate.is_some() { "open" } else { "closed" },
        "rate_per_second": args.rate,
        "connections": args.connections,
        "in_flight": args.in_flight,
        "concurrency": args.connections * args.in_flight,
        "duration_seconds": args.requests.is_none().then_some(args.duration_secs),
        "requests": args.requests,
        "warmup_seconds": args.warmup_secs,
        "keys": args.keys,
        "distribution": format!("{:?}", args.distribution).to_lowercase(),
        "value_bytes": args.value_bytes,
        "mix_read_write_cas": args.mix,
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "load_average_1m_at_end": load_average,
    })
}

fn text_report(args: &Args, run: &PhaseResult, config: &serde_json::Value) -> String {
    let mut out = String::new();
    let loop_kind = match args.rate {
        Some(rate) => format!("open loop at {rate} req/s (latency from intended send time)"),
        None => "closed loop".to_string(),
    };
    out += &format!("command     {}\n", config["command"].as_str().unwrap_or(""));
    out += &format!(
        "workload    {loop_kind}, {} conn x {} in flight, {} mode, mix r:w:cas {}, {} keys {}, {} B values\n",
        args.connections,
        args.in_flight,
        config["mode"].as_str().unwrap_or(""),
        args.mix,
        args.keys,
        config["distribution"].as_str().unwrap_or(""),
        args.value_bytes
    );
    out += &format!(
        "target      {} ({} Regions{}), load average {}\n",
        config["target"].as_str().unwrap_or(""),
        config["regions"],
        args.spawn.map_or(String::new(), |t| format!(
            ", spawned {t:?} x {} core",
            args.node_cores
        )),
        config["load_average_1m_at_end"].as_str().unwrap_or("?")
    );
    if let Some(placement) = config["placement"].as_str() {
        out += &format!("placement   {placement}\n");
    }
    if let Some(cpus) = config["generator_cpus"].as_array() {
        let list: Vec<String> = cpus.iter().map(ToString::to_string).collect();
        out += &format!("generator   pinned to CPU {}\n", list.join(", "));
    }
    let cpu = &config["cpu_percent_of_one_core"];
    out += &format!(
        "cpu         generator {}%, nodes {} (percent of one core over the run, warm-up included)\n",
        cpu["generator"],
        cpu["nodes"]
    );
    let completed = run.stats.completed();
    out += &format!(
        "throughput  {:.0} ops/s ({completed} ops in {:.2} s after {} s warm-up)\n",
        per_second(completed, run.measured_ns),
        run.measured_ns as f64 / 1e9,
        args.warmup_secs
    );
    let tally = |map: &std::collections::BTreeMap<&str, u64>| {
        if map.is_empty() {
            "none".to_string()
        } else {
            map.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    out += &format!("errors      {}\n", tally(&run.stats.errors));
    out += &format!("retried     {}\n", tally(&run.stats.retries));
    if run.stats.cas_mismatches > 0 {
        out += &format!(
            "cas         {} version mismatches\n",
            run.stats.cas_mismatches
        );
    }
    out.push('\n');
    out += &stats::latency_table(&run.stats, run.measured_ns);
    if args.timeline {
        out += "\nsecond by second after the warm-up (latency of the requests intended in it):\n";
        out += &run.stats.timeline.table();
    }
    out
}

fn write_outputs(args: &Args, run: &PhaseResult, config: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(prefix) = &args.hgrm {
        for (op, histogram) in run.stats.present() {
            let path = PathBuf::from(format!("{}.{}.hgrm", prefix.display(), op.name()));
            std::fs::write(&path, stats::percentile_distribution(histogram))
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    if let Some(path) = &args.svg {
        let series: Vec<svg::Series<'_>> = OpKind::ALL
            .iter()
            .map(|op| svg::Series {
                name: op.name(),
                latency_us: &run.stats.latency_us[op.index()],
            })
            .filter(|s| !s.latency_us.is_empty())
            .collect();
        let title = format!(
            "tessera-bench: {} conn x {} in flight, {} loop, {:.0} ops/s",
            args.connections,
            args.in_flight,
            config["loop"].as_str().unwrap_or(""),
            per_second(run.stats.completed(), run.measured_ns)
        );
        std::fs::write(path, svg::latency_plot(&title, &series))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_split_evenly_with_the_remainder_first() {
        assert_eq!(split_requests(10, 3).collect::<Vec<_>>(), vec![4, 3, 3]);
        assert_eq!(split_requests(2, 4).sum::<u64>(), 2);
    }

    #[test]
    fn cli_parses_a_documented_command() {
        let args = Args::try_parse_from([
            "tessera-bench",
            "--spawn",
            "cluster3",
            "--connections",
            "16",
            "--in-flight",
            "16",
            "--rate",
            "5000",
            "--mix",
            "50:40:10",
            "--distribution",
            "zipfian",
            "--generator-cpus",
            "1",
        ])
        .unwrap();
        assert_eq!(args.spawn, Some(Topology::Cluster3));
        assert_eq!(args.generator_cpus.as_deref(), Some("1"));
        assert_eq!(args.connections * args.in_flight, 256);
        assert_eq!(args.rate, Some(5000.0));
    }
}
