//! The running node: one pinned glommio executor per core, each with its own WAL, Regions,
//! listeners and peer connections. Cores share nothing but the read-only cluster metadata and
//! a shutdown flag (an atomic, never a lock on the request path).
//!
//! Startup order:
//! 1. validate the config, lock the data directory, load or create its metadata;
//! 2. check the locked-memory limit covers every core's io_uring memory;
//! 3. start the cores; each opens its WAL, recovers its Regions, binds its ports, and reports
//!    ready (or the error that stopped it) before the node counts as started;
//! 4. on SIGINT/SIGTERM: each core stops accepting, finishes its round (the WAL is synced at
//!    the end of every round), closes its WAL, and the process exits 0.

pub mod bootstrap;
pub mod clients;
pub mod core;
pub mod cross_core;
pub mod handoff_files;
pub mod heartbeat;
pub mod pd;
pub mod pd_host;
pub mod round;
pub mod snapshot_files;
pub mod snapshot_queue;
pub mod ticks;

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use glommio::Placement;
use tessera_core::NodeId;
use tessera_transport::net::{bind, serve_peers, RaftBatchHandler, TransportConfig};
use tessera_transport::{ClusterId, CoreId, DecodeLimits};
use tessera_wal::{FaultInjection, FaultSpec, Wal, WalError, WalOptions};

use crate::config::{ConfigError, NodeConfig};
use crate::meta::{lock_data_dir, DataMeta, MetaError};
use crate::store::{Store, StoreConfig};

use self::core::{CoreLoop, Event};

/// Why the node could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Bootstrap(#[from] bootstrap::BootstrapError),
    #[error("core {core}: {message}")]
    Core { core: usize, message: String },
    #[error("the locked-memory limit (ulimit -l) is {limit_bytes} bytes, but {cores} cores need {needed_bytes} bytes of io_uring memory; raise the limit (e.g. `ulimit -l unlimited`) or lower io_memory_bytes / --cores")]
    MemlockTooLow {
        limit_bytes: u64,
        needed_bytes: u64,
        cores: usize,
    },
}

/// What a started core reports back.
type Started = Result<(), String>;

/// Runs the node until `shutdown` becomes true (the binary sets it on SIGINT/SIGTERM), or a
/// core fails. `on_ready` is called once every core serves.
///
/// # Errors
/// A `ServerError` naming what could not start or why a core stopped.
pub fn run(
    config: NodeConfig,
    shutdown: Arc<AtomicBool>,
    on_ready: impl FnOnce(&DataMeta),
) -> Result<(), ServerError> {
    config.validate()?;
    let unsafe_follower_reads = crate::config::unsafe_follower_reads_from_env()?;
    if unsafe_follower_reads {
        tracing::error!(
            "UNSAFE TEST-ONLY MODE ({}): every replica answers strong reads from its local \
             state without ReadIndex; reads may be stale and are NOT linearizable. Never run \
             this in production.",
            crate::config::UNSAFE_FOLLOWER_READS_ENV
        );
    }
    let _lock = lock_data_dir(&config.data_dir)?;
    let Some(meta) = bootstrap::load_or_create_meta(&config, &shutdown)? else {
        return Ok(()); // asked to stop while waiting for the cluster to form
    };
    let cores = meta.cores;
    check_memlock(config.io_memory_bytes, cores)?;
    let owners = handoff_files::owners(&config.data_dir, cores)
        .map_err(|message| ServerError::Core { core: 0, message })?;
    let region_cores = handoff_files::placement(&config.data_dir, cores, &owners)
        .map_err(|message| ServerError::Core { core: 0, message })?;
    let cpus = config.cpu_placement()?;
    tracing::info!(cpus = ?cpus, "executor placement (None: not pinned)");
    let (started_tx, started_rx) = mpsc::channel::<(usize, Started)>();
    let mut handles = Vec::new();
    for (core, ends) in cross_core::mesh(cores).into_iter().enumerate() {
        let (config, meta, shutdown, started) = (
            config.clone(),
            meta.clone(),
            shutdown.clone(),
            started_tx.clone(),
        );
        let (owners, region_cores) = (owners.clone(), region_cores.clone());
        let pinned = cpus[core].is_some();
        let placement = match cpus[core] {
            Some(cpu) => Placement::Fixed(cpu),
            None => Placement::Unbound,
        };
        let handle = std::thread::Builder::new()
            .name(format!("tessera-core-{core}"))
            .spawn(move || {
                // A core that stops for any reason, a panic included, stops the whole node.
                let _stop_all = StopOnExit(shutdown.clone());
                let name = format!("tessera-core-{core}");
                let io_memory = config.io_memory_bytes;
                let spin = Duration::from_micros(config.spin_before_park_us);
                match tessera_wal::executor::build_executor_spinning(
                    &name, placement, io_memory, spin,
                ) {
                    Ok(executor) => {
                        let core_args = CoreArgs {
                            core,
                            config,
                            meta,
                            pinned,
                            unsafe_follower_reads,
                            owners,
                            region_cores,
                        };
                        executor.run(run_core(core_args, ends, shutdown, started))
                    }
                    Err(error) => {
                        let message = error.to_string();
                        let _ = started.send((core, Err(message.clone())));
                        Err(message)
                    }
                }
            })
            .map_err(|e| ServerError::Core {
                core,
                message: format!("cannot start thread: {e}"),
            })?;
        handles.push(handle);
    }
    drop(started_tx);
    let mut first_error = None;
    for _ in 0..cores {
        match started_rx.recv() {
            Ok((_, Ok(()))) => {}
            Ok((core, Err(message))) => {
                first_error.get_or_insert(ServerError::Core { core, message });
                shutdown.store(true, Ordering::Relaxed);
            }
            Err(_) => break,
        }
    }
    let mut heartbeat = None;
    if first_error.is_none() {
        on_ready(&meta);
        heartbeat = meta.pd_addr().map(|pd_addr| {
            heartbeat::spawn(heartbeat_config(&config, &meta, pd_addr), shutdown.clone())
        });
    }
    for (core, handle) in handles.into_iter().enumerate() {
        let outcome = handle
            .join()
            .unwrap_or_else(|_| Err("panicked".to_string()));
        if let Err(message) = outcome {
            first_error.get_or_insert(ServerError::Core { core, message });
            shutdown.store(true, Ordering::Relaxed);
        }
    }
    if let Some(heartbeat) = heartbeat {
        let _ = heartbeat.join();
    }
    first_error.map_or(Ok(()), Err)
}

fn heartbeat_config(
    config: &NodeConfig,
    meta: &DataMeta,
    pd_addr: String,
) -> heartbeat::HeartbeatConfig {
    heartbeat::HeartbeatConfig {
        node: NodeId(config.node_id),
        own_addrs: (0..meta.cores)
            .map(|c| config.client_addr(c).to_string())
            .collect(),
        pd_addr,
        heartbeat_interval: Duration::from_millis(config.pd_heartbeat_interval_ms),
        split_check_interval: Duration::from_millis(config.split_check_interval_ms),
        split_size_bytes: config.split_size_bytes,
        known_stores: meta.stores.iter().map(|s| s.node_id).collect(),
        data_dir: config.data_dir.clone(),
    }
}

/// Sets the shutdown flag when dropped, also while unwinding from a panic.
struct StopOnExit(Arc<AtomicBool>);

impl Drop for StopOnExit {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn check_memlock(io_memory_bytes: usize, cores: usize) -> Result<(), ServerError> {
    let needed_bytes = (io_memory_bytes * cores) as u64;
    match tessera_wal::executor::memlock_limit_bytes() {
        Some(limit_bytes) if limit_bytes < needed_bytes => Err(ServerError::MemlockTooLow {
            limit_bytes,
            needed_bytes,
            cores,
        }),
        _ => Ok(()),
    }
}

/// What one core starts from.
struct CoreArgs {
    core: usize,
    config: NodeConfig,
    meta: DataMeta,
    /// The core's executor is pinned to a CPU (glommio spins only then).
    pinned: bool,
    /// The test-only broken read mode (`config::UNSAFE_FOLLOWER_READS_ENV`).
    unsafe_follower_reads: bool,
    /// The owners of handed-off Regions and where every Region lives (`handoff_files`).
    owners: handoff_files::Owners,
    region_cores: handoff_files::Owners,
}

/// One core, from startup to shutdown. Reports readiness (or the startup error) on `started`.
async fn run_core(
    args: CoreArgs,
    ends: cross_core::Ends,
    shutdown: Arc<AtomicBool>,
    started: mpsc::Sender<(usize, Started)>,
) -> Result<(), String> {
    let core = args.core;
    let core_loop = match start_core(args, ends, shutdown.clone()).await {
        Ok(parts) => parts,
        Err(message) => {
            let _ = started.send((core, Err(message.clone())));
            return Err(message);
        }
    };
    let (core_loop, events) = core_loop;
    let _ = started.send((core, Ok(())));
    let wal = core_loop.run(events).await.map_err(|error| {
        tracing::error!(core, %error, "core stopped on a disk error; the node exits");
        error.to_string()
    })?;
    wal.close()
        .await
        .map_err(|e| format!("closing the WAL: {e}"))?;
    tracing::info!(core, "core stopped cleanly");
    Ok(())
}

async fn start_core(
    args: CoreArgs,
    ends: cross_core::Ends,
    shutdown: Arc<AtomicBool>,
) -> Result<
    (
        CoreLoop,
        glommio::channels::local_channel::LocalReceiver<Event>,
    ),
    String,
> {
    let CoreArgs {
        core,
        ref config,
        meta,
        pinned,
        unsafe_follower_reads,
        owners,
        region_cores,
    } = args;
    let core_dir = bootstrap::core_dir(&config.data_dir, core);
    let mut wal_options = WalOptions::new(core_dir.join("wal"));
    wal_options.segment_size_bytes = config.wal_segment_bytes;
    wal_options.write_through = config.wal_write_through;
    wal_options.blocking_writes = config.blocking_wal_writes(pinned);
    wal_options.faults = wal_faults_from_env()?;
    let (wal, report) = Wal::open(wal_options)
        .await
        .map_err(|error| wal_open_error(error, &core_dir.join("wal")))?;
    tracing::info!(core, ?report, "WAL recovered");
    let mut store_config = StoreConfig::new(NodeId(config.node_id));
    store_config.raft.election_timeout_ticks = config.election_timeout_ticks;
    store_config.raft.heartbeat_interval_ticks = config.heartbeat_interval_ticks;
    store_config.raft.broadcast_commit = config.raft_broadcast_commit;
    store_config.raft.seed = config.node_id ^ ((core as u64) << 32) ^ meta.cluster_id;
    store_config.snapshot_interval_entries = config.snapshot_interval_entries;
    store_config.pending_requests_max = config.pending_requests_max;
    store_config.unsafe_local_strong_reads = unsafe_follower_reads;
    store_config.core = core;
    store_config.cores = meta.cores;
    let mut store = Store::new(store_config);
    let snapshot_dir = core_dir.join("snapshots");
    let markers = handoff_files::recover(core, &core_dir, &owners, &wal, &snapshot_dir).await?;
    let elsewhere: std::collections::BTreeSet<_> = region_cores
        .iter()
        .filter(|(_, (owner, _))| *owner != core)
        .map(|(region, _)| *region)
        .collect();
    for region in &elsewhere {
        store.set_elsewhere(*region, true);
    }
    let regions = meta.regions(&config.data_dir).map_err(|e| e.to_string())?;
    let summary = bootstrap::recover_store(
        &mut store,
        &regions,
        core,
        meta.cores,
        &wal,
        snapshot_dir.as_path(),
    )?;
    handoff_files::discard(&wal, &snapshot_dir, &elsewhere).await?;
    tracing::info!(core, ?summary, "regions recovered");
    for region in store.tombstones().keys() {
        if store.raft(*region).is_none() {
            // A crash may have come between the tombstone and freeing the files.
            snapshot_files::remove_region(&snapshot_dir, *region)?;
        }
    }
    bootstrap::complete_recovery(&wal, &store).await?;
    let client_listener = bind(config.client_addr(core))
        .map_err(|e| format!("client port: {e} (is another node running?)"))?;
    let peer_listener = bind(config.peer_addr(core))
        .map_err(|e| format!("peer port: {e} (is another node running?)"))?;
    let mut transport = TransportConfig::new(
        ClusterId(meta.cluster_id),
        NodeId(config.node_id),
        CoreId(core as u32),
    );
    let members: tessera_transport::net::Members = Rc::new(std::cell::RefCell::new(
        meta.stores.iter().map(|s| NodeId(s.node_id)).collect(),
    ));
    transport.members = Some(members.clone());
    let transport = Rc::new(transport);
    let (inbox, events) = self::core::inbox();
    let links = cross_core::connect(ends, inbox.clone()).await;
    let pd = if core == 0 && pd_host::hosts_pd(&meta) {
        let mut pd = pd_host::PdHost::open(&config.data_dir, &meta)?;
        // A store silent for three heartbeat intervals is not counted as alive.
        pd.configure(
            config.pd_balance,
            config.pd_balance_leaders,
            3 * config.pd_heartbeat_interval_ms,
        );
        Some(pd)
    } else {
        None
    };
    spawn_listeners(
        inbox.clone(),
        transport.clone(),
        client_listener,
        peer_listener,
    );
    let ticks = self::ticks::TickClock::new(config.tick(), std::time::Instant::now());
    ticks.spawn_timer(inbox.clone(), shutdown.clone());
    let balance_interval_ticks = (core == 0 && meta.cores > 1 && config.core_balance)
        .then(|| (config.core_balance_interval_ms / config.tick_ms.max(1)).max(1));
    let hand_offs =
        self::core::HandOffs::new(core_dir, &region_cores, markers, balance_interval_ticks);
    let meta = Rc::new(meta);
    Ok((
        CoreLoop::new(self::core::CoreParts {
            core,
            meta,
            store,
            wal,
            snapshot_dir,
            transport,
            shutdown,
            links,
            pd,
            inbox,
            peer_dial_addrs: config.peer_dial_overrides().map_err(|e| e.to_string())?,
            members: Some(members),
            hand_offs,
            ticks,
        }),
        events,
    ))
}

/// Name of the environment variable that arms an injected WAL fault in every core (tests
/// only; syntax in `tessera_wal::faults`, e.g. `fdatasync:40:EIO`).
pub const WAL_FAULT_ENV: &str = "TESSERA_TEST_WAL_FAULT";

/// The fault `WAL_FAULT_ENV` asks for, with a fresh count for this core's WAL.
fn wal_faults_from_env() -> Result<FaultInjection, String> {
    match std::env::var(WAL_FAULT_ENV) {
        Err(_) => Ok(FaultInjection::none()),
        Ok(spec) => {
            let spec: FaultSpec = spec.parse().map_err(|e| format!("{WAL_FAULT_ENV}: {e}"))?;
            tracing::warn!(
                ?spec,
                "{WAL_FAULT_ENV} is set: a WAL fault is injected (test only)"
            );
            Ok(FaultInjection::armed(spec))
        }
    }
}

/// The message for a WAL that cannot be opened; damage points to the inspection tool.
fn wal_open_error(error: WalError, dir: &std::path::Path) -> String {
    match error {
        WalError::Corruption { .. }
        | WalError::MissingSegment { .. }
        | WalError::MisnamedSegment { .. } => format!(
            "{error}. The WAL in {dir} is damaged beyond a torn tail, so the node does not \
             start; inspect it with `tessera-wal verify {dir}` (see docs/operations.md, \
             \"Disk faults\")",
            dir = dir.display()
        ),
        error => error.to_string(),
    }
}

fn spawn_listeners(
    inbox: self::core::Inbox,
    transport: Rc<TransportConfig>,
    client_listener: tessera_transport::net::TcpListener,
    peer_listener: tessera_transport::net::TcpListener,
) {
    let raft_inbox = inbox.clone();
    let handler: RaftBatchHandler = Rc::new(move |_header, batch| {
        if raft_inbox.try_send(Event::Raft(batch)).is_err() {
            tracing::warn!("core inbox full; dropping a Raft batch (Raft resends)");
        }
    });
    glommio::spawn_local(serve_peers(peer_listener, transport.clone(), handler)).detach();
    let limits = Rc::new(DecodeLimits::default());
    glommio::spawn_local(clients::serve_clients(client_listener, inbox, limits)).detach();
}
