//! `tessera`: run a node (`serve`) or talk to one (put, get, delete, cas, cas-delete, scan,
//! scan-prefix, regions, status, split, move, pd status).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use tessera_core::{NodeId, RegionId};
use tessera_node::client::{CasOutcome, Client, ClientError, ClientOptions};
use tessera_node::config::NodeConfig;
use tessera_transport::client::{KeyValue, Mode, PdStatus};

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "A thread-per-core, multi-Raft key-value store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (defaults: data in ./tessera-data, client port 7400, peer port 7500,
    /// embedded placement driver, every core).
    Serve(ServeArgs),
    /// Start a local cluster of several nodes on loopback, for trying Tessera out.
    Cluster(ClusterArgs),
    /// Write a value.
    Put {
        key: String,
        value: String,
        #[command(flatten)]
        common: ClientArgs,
    },
    /// Read a value and its version.
    Get {
        key: String,
        #[command(flatten)]
        common: ClientArgs,
    },
    /// Delete a key.
    Delete {
        key: String,
        #[command(flatten)]
        common: ClientArgs,
    },
    /// Write a value only if the key's version is EXPECTED_VERSION (0: must not exist).
    Cas {
        key: String,
        expected_version: u64,
        value: String,
        #[command(flatten)]
        common: ClientArgs,
    },
    /// Delete a key only if its version is EXPECTED_VERSION.
    CasDelete {
        key: String,
        expected_version: u64,
        #[command(flatten)]
        common: ClientArgs,
    },
    /// List keys in [START, END) (END empty: to the end).
    Scan {
        #[arg(default_value = "")]
        start: String,
        #[arg(default_value = "")]
        end: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        common: ClientArgs,
    },
    /// List keys starting with PREFIX.
    ScanPrefix {
        prefix: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        common: ClientArgs,
    },
    /// Show the routing table: Regions, their ranges, peers and leaders.
    Regions {
        #[command(flatten)]
        common: ClientArgs,
    },
    /// Show each core's Regions with their Raft state.
    Status {
        #[command(flatten)]
        common: ClientArgs,
    },
    /// Split the Region holding KEY at KEY (KEY becomes the new Region's first key).
    Split {
        key: String,
        #[command(flatten)]
        common: ClientArgs,
    },
    /// Move a Region's replica to store TO (from store FROM, or one the placement driver
    /// picks): the driver records the move and the Region's leader carries it out (add a
    /// learner on TO, seed it by snapshot, promote it, remove the old replica). With
    /// `--cancel`, cancel the Region's move in progress instead (rolled back if its target
    /// joined the Region already).
    Move {
        region: u64,
        #[arg(long, required_unless_present = "cancel")]
        to: Option<u64>,
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Cancel the move in progress instead of ordering one.
        #[arg(long, conflicts_with_all = ["to", "from"])]
        cancel: bool,
        #[command(flatten)]
        common: ClientArgs,
    },
    /// Ask the placement driver.
    Pd {
        #[command(subcommand)]
        command: PdCommand,
    },
}

#[derive(Subcommand)]
enum PdCommand {
    /// The placement driver's metadata: stores (with heartbeat ages), Regions (with sizes,
    /// leaders and epochs), the next Region id.
    Status {
        #[command(flatten)]
        common: ClientArgs,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// A TOML config file; flags override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    node_id: Option<u64>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Core i serves clients on client-port + i.
    #[arg(long)]
    client_port: Option<u16>,
    /// Core i talks to peers on peer-port + i.
    #[arg(long)]
    peer_port: Option<u16>,
    /// Executors to run (default: every core).
    #[arg(long)]
    cores: Option<usize>,
    /// CPU of each core's executor: auto (the i-th CPU this process may run on), none (not
    /// pinned, for several nodes on one machine), or a list like 2,3.
    #[arg(long)]
    cpus: Option<String>,
    /// A static first layout for several nodes, the same on each:
    /// ID=HOST:CLIENT_PORT:PEER_PORT,...
    #[arg(long, value_delimiter = ',')]
    initial_cluster: Vec<String>,
    /// Host the placement driver and wait for this many stores (this one included) to join
    /// before handing out the first layout.
    #[arg(long)]
    replicas: Option<usize>,
    /// Join the cluster whose placement driver listens at this client address (host:port).
    #[arg(long)]
    join: Option<String>,
}

#[derive(Args)]
struct ClusterArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Parent directory of the nodes' data directories.
    #[arg(long, default_value = "tessera-cluster")]
    data_dir: PathBuf,
    /// Node i (from 0) serves clients on client-port + 10*i (+ core).
    #[arg(long, default_value_t = 7400)]
    client_port: u16,
    /// Node i (from 0) talks to peers on peer-port + 10*i (+ core).
    #[arg(long, default_value_t = 7500)]
    peer_port: u16,
    /// Cores per node.
    #[arg(long, default_value_t = 1)]
    cores: usize,
}

#[derive(Args)]
struct ClientArgs {
    /// Any node's client address.
    #[arg(long, default_value = "127.0.0.1:7400", global = true)]
    addr: String,
    /// Namespace of the keys.
    #[arg(long, default_value = "", global = true)]
    namespace: String,
    /// Linearizable reads and versioned writes (default for reads: raw, served by the leader).
    #[arg(long, global = true)]
    strong: bool,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Cluster(args) => cluster(args),
        command => client_command(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", error_chain(&error));
            if error
                .downcast_ref::<ClientError>()
                .is_some_and(|e| matches!(e, ClientError::OutcomeUnknown { .. }))
            {
                ExitCode::from(EXIT_OUTCOME_UNKNOWN)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The exit code of a client command whose write may or may not have taken effect (1 is
/// any other failure), so that scripts can tell "not done" from "unknown".
const EXIT_OUTCOME_UNKNOWN: u8 = 3;

/// The error and its causes, `: `-separated, skipping a cause whose text the message already
/// quotes (typed errors often print their source, which `{:#}` would then print twice).
fn error_chain(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
                .add_directive(
                    tessera_wal::io_poll::GLOMMIO_PROBE_LOG_DIRECTIVE
                        .parse()
                        .expect("a valid filter directive"),
                ),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut config = match &args.config {
        Some(path) => NodeConfig::from_file(path)?,
        None => NodeConfig::default(),
    };
    if let Some(v) = args.node_id {
        config.node_id = v;
    }
    if let Some(v) = args.data_dir {
        config.data_dir = v;
    }
    if let Some(v) = args.client_port {
        config.client_port = v;
    }
    if let Some(v) = args.peer_port {
        config.peer_port = v;
    }
    if let Some(v) = args.cores {
        config.cores = v;
    }
    if let Some(v) = args.cpus {
        config.cpus = v;
    }
    if !args.initial_cluster.is_empty() {
        config.initial_cluster = args.initial_cluster;
    }
    if let Some(v) = args.replicas {
        config.replicas = v;
    }
    if let Some(v) = args.join {
        config.join = v;
    }
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, shutdown.clone())
            .context("installing signal handlers")?;
    }
    let client_addr = config.client_addr(0);
    tessera_node::server::run(config, shutdown, |meta| {
        tracing::info!(
            node = meta.node_id,
            cluster = meta.cluster_id,
            cores = meta.cores,
            regions = meta.regions.len(),
            %client_addr,
            "serving; try `tessera put hello world` and `tessera get hello`"
        );
    })?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Runs `nodes` child `tessera serve` processes until SIGINT/SIGTERM, then stops them.
fn cluster(args: ClusterArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.nodes > 9 {
        bail!("--nodes must be between 1 and 9");
    }
    let ports = |i: usize| {
        (
            args.client_port + 10 * i as u16,
            args.peer_port + 10 * i as u16,
        )
    };
    let exe = std::env::current_exe().context("finding the tessera binary")?;
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, shutdown.clone())
            .context("installing signal handlers")?;
    }
    let mut children = Vec::new();
    for i in 0..args.nodes {
        let (client, peer) = ports(i);
        let data_dir = args.data_dir.join(format!("node-{}", i + 1));
        let child = std::process::Command::new(&exe)
            .args(["serve", "--node-id", &(i + 1).to_string()])
            .arg("--data-dir")
            .arg(&data_dir)
            .args([
                "--client-port",
                &client.to_string(),
                "--peer-port",
                &peer.to_string(),
            ])
            .args(["--cores", &args.cores.to_string()])
            // Nodes sharing a machine are left to the OS scheduler: pinned, every node's
            // core 0 would sit on the same CPU.
            .args(["--cpus", "none"])
            // Node 1 hosts the placement driver; the others join it by address.
            .args(if i == 0 {
                vec!["--replicas".to_string(), args.nodes.min(3).to_string()]
            } else {
                vec![
                    "--join".to_string(),
                    format!("127.0.0.1:{}", args.client_port),
                ]
            })
            .spawn()
            .with_context(|| format!("starting node {}", i + 1))?;
        println!(
            "node {} serving clients on 127.0.0.1:{client} (data in {})",
            i + 1,
            data_dir.display()
        );
        children.push(child);
    }
    println!(
        "try: tessera put hello world --addr 127.0.0.1:{}",
        args.client_port
    );
    // A node that exits is reported, and the others keep serving (so you can watch the
    // cluster survive it); stop everything with Ctrl-C.
    let mut exited = vec![false; children.len()];
    while !shutdown.load(std::sync::atomic::Ordering::Relaxed) && exited.iter().any(|e| !e) {
        std::thread::sleep(std::time::Duration::from_millis(100));
        for (i, child) in children.iter_mut().enumerate() {
            if !exited[i] {
                if let Ok(Some(status)) = child.try_wait() {
                    eprintln!("node {} exited with {status}", i + 1);
                    exited[i] = true;
                }
            }
        }
    }
    let failed = exited
        .iter()
        .all(|e| *e)
        .then(|| "every node exited".to_string());
    for child in &children {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    }
    for child in &mut children {
        let _ = child.wait();
    }
    match failed {
        Some(reason) => bail!(reason),
        None => Ok(()),
    }
}

fn common(command: &Command) -> &ClientArgs {
    match command {
        Command::Put { common, .. }
        | Command::Get { common, .. }
        | Command::Delete { common, .. }
        | Command::Cas { common, .. }
        | Command::CasDelete { common, .. }
        | Command::Scan { common, .. }
        | Command::ScanPrefix { common, .. }
        | Command::Regions { common }
        | Command::Status { common }
        | Command::Split { common, .. }
        | Command::Move { common, .. }
        | Command::Pd {
            command: PdCommand::Status { common },
        } => common,
        Command::Serve(_) | Command::Cluster(_) => unreachable!("not a client command"),
    }
}

fn client_command(command: Command) -> anyhow::Result<()> {
    let args = common(&command);
    let options = ClientOptions {
        namespace: args.namespace.clone(),
        ..ClientOptions::default()
    };
    let mut client = Client::connect(&args.addr, options)
        .with_context(|| format!("connecting to {}", args.addr))?;
    let mode = if args.strong { Mode::Strong } else { Mode::Raw };
    let json = args.json;
    match &command {
        Command::Put { key, value, .. } => {
            let version = client.put(key.as_bytes(), value.as_bytes(), mode)?;
            print(
                json,
                json!({"ok": true, "version": version}),
                format!("OK (version {version})"),
            );
        }
        Command::Get { key, .. } => match client.get(key.as_bytes(), mode)? {
            Some(found) => {
                let value = String::from_utf8_lossy(&found.value);
                print(
                    json,
                    json!({"found": true, "value": value, "version": found.version}),
                    format!("{value}\t(version {})", found.version),
                );
            }
            None => {
                print(json, json!({"found": false}), "(not found)".to_string());
                bail_quietly()?;
            }
        },
        Command::Delete { key, .. } => {
            client.delete(key.as_bytes(), mode)?;
            print(json, json!({"ok": true}), "OK".to_string());
        }
        Command::Cas {
            key,
            expected_version,
            value,
            ..
        } => cas_result(
            json,
            client.cas(key.as_bytes(), *expected_version, value.as_bytes())?,
        )?,
        Command::CasDelete {
            key,
            expected_version,
            ..
        } => cas_result(json, client.cas_delete(key.as_bytes(), *expected_version)?)?,
        Command::Scan {
            start, end, limit, ..
        } => {
            print_items(
                json,
                &client.scan(start.as_bytes(), end.as_bytes(), *limit, mode)?,
            );
        }
        Command::ScanPrefix { prefix, limit, .. } => {
            print_items(json, &client.scan_prefix(prefix.as_bytes(), *limit, mode)?);
        }
        Command::Regions { .. } => print_regions(json, &mut client),
        Command::Status { .. } => print_status(json, &mut client)?,
        Command::Split { key, .. } => {
            let regions = client.split(key.as_bytes())?;
            let ids: Vec<u64> = regions.iter().map(|r| r.region_id.get()).collect();
            print(
                json,
                json!({"ok": true, "regions": ids}),
                format!("OK: split into regions {ids:?}"),
            );
        }
        Command::Move {
            region,
            cancel: true,
            ..
        } => {
            let what = client.cancel_move(RegionId(*region))?;
            print(
                json,
                json!({"ok": true, "region": region, "cancelled": what}),
                format!("OK: {what}"),
            );
        }
        Command::Move {
            region, to, from, ..
        } => {
            let to = to.expect("clap requires --to without --cancel");
            client.move_region(RegionId(*region), NodeId(*from), NodeId(to))?;
            print(
                json,
                json!({"ok": true, "region": region, "to": to}),
                format!("OK: the placement driver moves region {region} to store {to}"),
            );
        }
        Command::Pd { .. } => print_pd_status(json, &client.pd_status()?),
        Command::Serve(_) | Command::Cluster(_) => unreachable!(),
    }
    Ok(())
}

/// Exit non-zero without another message (the answer was already printed).
fn bail_quietly() -> anyhow::Result<()> {
    std::process::exit(1);
}

fn print(json: bool, value: serde_json::Value, text: String) {
    if json {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

fn cas_result(json: bool, outcome: CasOutcome) -> anyhow::Result<()> {
    match outcome {
        CasOutcome::Done { version } => {
            print(
                json,
                json!({"ok": true, "version": version}),
                format!("OK (version {version})"),
            );
            Ok(())
        }
        CasOutcome::Mismatch { current_version } => {
            print(
                json,
                json!({"ok": false, "current_version": current_version}),
                format!("version mismatch: the key's version is {current_version}"),
            );
            bail!("compare failed")
        }
    }
}

fn print_items(json: bool, items: &[KeyValue]) {
    if json {
        let list: Vec<_> = items
            .iter()
            .map(|i| json!({"key": String::from_utf8_lossy(&i.key), "value": String::from_utf8_lossy(&i.value), "version": i.version}))
            .collect();
        println!("{}", serde_json::Value::Array(list));
        return;
    }
    for item in items {
        println!(
            "{}\t{}\t(version {})",
            String::from_utf8_lossy(&item.key),
            String::from_utf8_lossy(&item.value),
            item.version
        );
    }
    println!("({} keys)", items.len());
}

/// The client address of every core of every store.
fn every_core(client: &Client) -> Vec<String> {
    let stores = client.routing().1;
    stores.iter().flat_map(|s| s.client_addrs.clone()).collect()
}

/// Per Region as its replicas report it: keys, bytes and leader, from the leader's replica
/// when it answers (else any replica).
fn region_sizes(client: &mut Client) -> HashMap<u64, (u64, u64, Option<u64>)> {
    let addrs = every_core(client);
    let mut sizes = HashMap::new();
    for addr in &addrs {
        let Ok(status) = client.status(Some(addr)) else {
            continue;
        };
        for r in status.regions {
            let from_leader = r.leader == Some(status.node_id);
            if from_leader || !sizes.contains_key(&r.region_id.get()) {
                let leader = r.leader.map(|l| l.get());
                sizes.insert(r.region_id.get(), (r.keys, r.approximate_bytes, leader));
            }
        }
    }
    sizes
}

fn show_key(k: &[u8], open: &str) -> String {
    if k.is_empty() {
        open.to_string()
    } else {
        format!("{:?}", String::from_utf8_lossy(k))
    }
}

fn print_pd_status(json: bool, status: &PdStatus) {
    if json {
        let stores: Vec<_> = status.stores.iter().map(|s| json!({"node": s.store.node_id.get(), "client_addrs": s.store.client_addrs, "heartbeat_age_ms": s.heartbeat_age_ms, "heartbeats": s.heartbeats})).collect();
        let moves: Vec<_> = status.moves.iter().map(|m| json!({"region": m.region_id.get(), "from": m.from.get(), "to": m.to.get(), "rollback": m.rollback})).collect();
        let regions: Vec<_> = status.regions.iter().map(|r| json!({"id": r.region.region_id.get(), "start": String::from_utf8_lossy(&r.region.start_key), "end": String::from_utf8_lossy(&r.region.end_key), "version": r.region.epoch.version, "conf_version": r.region.epoch.conf_version, "peers": r.region.peers.iter().map(|p| p.get()).collect::<Vec<_>>(), "leader": r.region.leader.map(|l| l.get()), "keys": r.keys, "bytes": r.approximate_bytes})).collect();
        println!(
            "{}",
            json!({"cluster_id": status.cluster_id.get(), "next_region_id": status.next_region_id, "stores": stores, "regions": regions, "moves": moves})
        );
        return;
    }
    println!(
        "cluster {}  next region id {}",
        status.cluster_id.get(),
        status.next_region_id
    );
    println!("STORE  ADDRESS               HEARTBEATS  LAST");
    for s in &status.stores {
        let age = s
            .heartbeat_age_ms
            .map_or("never".to_string(), |ms| format!("{ms} ms ago"));
        let addr = s.store.client_addrs.first().cloned().unwrap_or_default();
        println!(
            "{:<6} {:<21} {:<11} {age}",
            s.store.node_id.get(),
            addr,
            s.heartbeats
        );
    }
    println!("REGION  RANGE                 EPOCH  PEERS      LEADER  KEYS      BYTES");
    for r in &status.regions {
        let d = &r.region;
        let range = format!(
            "[{}, {})",
            show_key(&d.start_key, "\"\""),
            show_key(&d.end_key, "+inf")
        );
        let peers: Vec<String> = d.peers.iter().map(|p| p.get().to_string()).collect();
        let leader = d.leader.map_or("?".to_string(), |l| l.get().to_string());
        println!(
            "{:<7} {:<21} {}/{}    {:<10} {:<7} {:<9} {}",
            d.region_id.get(),
            range,
            d.epoch.version,
            d.epoch.conf_version,
            peers.join(","),
            leader,
            r.keys,
            r.approximate_bytes
        );
    }
    if status.moves.is_empty() {
        println!("no move in progress");
        return;
    }
    println!("MOVE   REGION  FROM   TO");
    for m in &status.moves {
        let kind = match (m.from == m.to, m.rollback) {
            (true, _) => "leader",
            (false, true) => "undo",
            (false, false) => "move",
        };
        println!(
            "{kind:<6} {:<7} {:<6} {}",
            m.region_id.get(),
            m.from.get(),
            m.to.get()
        );
    }
}

fn print_regions(json: bool, client: &mut Client) {
    let sizes = region_sizes(client);
    let (regions, stores) = client.routing();
    if json {
        let list: Vec<_> = regions
            .iter()
            .map(|r| {
                let (keys, bytes, reported) = sizes.get(&r.region_id.get()).copied().unwrap_or_default();
                let leader = reported.or(r.leader.map(|l| l.get()));
                json!({"id": r.region_id.get(), "start": String::from_utf8_lossy(&r.start_key), "end": String::from_utf8_lossy(&r.end_key), "version": r.epoch.version, "conf_version": r.epoch.conf_version, "peers": r.peers.iter().map(|p| p.get()).collect::<Vec<_>>(), "leader": leader, "keys": keys, "bytes": bytes})
            })
            .collect();
        let stores: Vec<_> = stores
            .iter()
            .map(|s| json!({"node": s.node_id.get(), "client_addrs": s.client_addrs}))
            .collect();
        println!("{}", json!({"regions": list, "stores": stores}));
        return;
    }
    println!("REGION  RANGE                 EPOCH  PEERS      LEADER  KEYS      BYTES");
    for r in regions {
        let range = format!(
            "[{}, {})",
            show_key(&r.start_key, "\"\""),
            show_key(&r.end_key, "+inf")
        );
        let peers: Vec<String> = r.peers.iter().map(|p| p.get().to_string()).collect();
        let (keys, bytes, reported) = sizes.get(&r.region_id.get()).copied().unwrap_or_default();
        let leader = reported
            .or(r.leader.map(|l| l.get()))
            .map_or("?".to_string(), |l| l.to_string());
        println!(
            "{:<7} {:<21} {}/{}    {:<10} {:<7} {:<9} {}",
            r.region_id.get(),
            range,
            r.epoch.version,
            r.epoch.conf_version,
            peers.join(","),
            leader,
            keys,
            bytes
        );
    }
}

fn print_status(json: bool, client: &mut Client) -> anyhow::Result<()> {
    let addrs = every_core(client);
    let mut rows = Vec::new();
    let mut unreachable = Vec::new();
    for addr in &addrs {
        match client.status(Some(addr)) {
            Ok(status) => rows.extend(status.regions.into_iter().map(|r| (status.node_id, r))),
            Err(error) => unreachable.push(format!("{addr}: {error}")),
        }
    }
    for line in &unreachable {
        eprintln!("unreachable: {line}");
    }
    if json {
        let list: Vec<_> = rows
            .iter()
            .map(|(node, r)| json!({"node": node.get(), "region": r.region_id.get(), "core": r.core.0, "leader": r.leader.map(|l| l.get()), "term": r.term.get(), "commit": r.commit_index.get(), "applied": r.applied_index.get()}))
            .collect();
        println!("{}", serde_json::Value::Array(list));
        return Ok(());
    }
    println!("NODE  REGION  CORE  LEADER  TERM  COMMIT  APPLIED");
    for (node, r) in rows {
        let leader = r.leader.map_or("?".to_string(), |l| l.get().to_string());
        println!(
            "{:<5} {:<7} {:<5} {:<7} {:<5} {:<7} {}",
            node.get(),
            r.region_id.get(),
            r.core.0,
            leader,
            r.term.get(),
            r.commit_index.get(),
            r.applied_index.get()
        );
    }
    Ok(())
}
