//! The node's configuration: a TOML file plus command-line flags, with defaults that work on
//! one machine (data in `./tessera-data`, loopback ports, embedded placement driver, every
//! core).
//!
//! Ports: core `i` of a node listens for clients on `client_port + i` and for peers on
//! `peer_port + i`, so a client or a peer addresses the core that owns a Region directly.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything `tessera serve` needs. Field names are the TOML keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id, unique in the cluster, never 0.
    pub node_id: u64,
    /// Where the WAL, snapshots and metadata live.
    pub data_dir: PathBuf,
    /// The address to listen on (and advertise).
    pub listen_host: IpAddr,
    /// Core `i` serves clients on `client_port + i`.
    pub client_port: u16,
    /// Core `i` talks Raft with peers on `peer_port + i`.
    pub peer_port: u16,
    /// Executors (cores) to run; 0 means every available core.
    pub cores: usize,
    /// Which CPU each core's executor is pinned to: `"auto"` (core `i` on the `i`-th CPU this
    /// process may run on, so `taskset` chooses the set; not pinned when there are fewer CPUs
    /// than cores), `"none"` (not pinned; for several nodes sharing one machine), or a list
    /// such as `"2,3"` (core `i` on the `i`-th CPU listed).
    pub cpus: String,
    /// Length of one Raft tick.
    pub tick_ms: u64,
    /// Raft election timeout, in ticks (randomized up to twice this).
    pub election_timeout_ticks: u32,
    /// Raft heartbeat interval, in ticks.
    pub heartbeat_interval_ticks: u32,
    /// A leader tells followers a new commit index at once, in an AppendEntries of its own
    /// (true, the default), or with the next append or heartbeat (false: two messages and
    /// two follower wake-ups fewer per commit; followers apply up to a heartbeat interval
    /// later, which changes nothing the leader answers). See `Config::broadcast_commit`.
    /// On is the default because on this project's disk measurements (benchmarks.md, pass H)
    /// a 3-node cluster with the write-through WAL wrote faster with it.
    pub raft_broadcast_commit: bool,
    /// Take a Region snapshot (and compact its log) every this many applied entries, each
    /// node at its own phase of the interval (`store::snapshot_due`).
    pub snapshot_interval_entries: u64,
    /// WAL segment size in bytes.
    pub wal_segment_bytes: u64,
    /// WAL group commits as one `O_DSYNC` write (true) or a write and an fdatasync (false);
    /// see `WalOptions::write_through`.
    pub wal_write_through: bool,
    /// How a core's WAL writes its group commits: `"io-uring"` (through glommio's ring),
    /// `"blocking"` (blocking system calls on the core's thread, `WalOptions::blocking_writes`)
    /// or `"auto"` (the default: blocking when the core's executor parks between events, i.e.
    /// is not pinned or does not spin; through the ring when it spins). See [`WalWrites`].
    pub wal_writes: WalWrites,
    /// DMA memory registered with io_uring per core; counts against `ulimit -l`.
    pub io_memory_bytes: usize,
    /// An idle core polls this long before it parks, trading CPU for the wake-up a parked
    /// core pays when its next event (a message, a WAL completion) arrives; 0 disables it.
    /// The default measured best at concurrency 256 on the reference machine and no worse at
    /// concurrency 1 (docs/benchmarks.md, pass I).
    pub spin_before_park_us: u64,
    /// Client requests waiting for Raft per core, at most.
    pub pending_requests_max: usize,
    /// Split the key space into these Regions at bootstrap: the start keys of all but the
    /// first (default `["m"]`: two Regions, `["", "m")` and `["m", "")`).
    pub initial_split_keys: Vec<String>,
    /// Replicas per Region. With 1, the node bootstraps alone; with more, the placement
    /// driver waits for that many stores to join before it hands out the layout.
    pub replicas: usize,
    /// The placement driver to join ("host:port" of its client port). Empty: this node hosts
    /// the placement driver. A store that joins after the cluster was bootstrapped starts
    /// with no Regions; the driver moves some onto it (`pd_balance`).
    pub join: String,
    /// A static first layout for several nodes, the same list on every node:
    /// `"ID=HOST:CLIENT_PORT:PEER_PORT"` per node. Every node must run with the same `cores`.
    /// Empty: a single-node cluster.
    pub initial_cluster: Vec<String>,
    /// How often a store reports its Regions (sizes, leaders, epochs) to the placement
    /// driver.
    pub pd_heartbeat_interval_ms: u64,
    /// How often a store looks for Regions it leads that have grown past `split_size_bytes`.
    pub split_check_interval_ms: u64,
    /// A Region whose keys and values exceed this many bytes is split in two by its leader;
    /// 0 disables automatic splits (`tessera split` still works).
    pub split_size_bytes: u64,
    /// The placement driver moves Regions from the store with the most to the store with
    /// the fewest, one at a time, until their counts differ by at most one (only read by the
    /// node that hosts the driver; `tessera move` works either way).
    pub pd_balance: bool,
    /// With `pd_balance`, also move leadership from the store leading the most Regions to
    /// the one leading the fewest, one transfer at a time, until they differ by at most one.
    pub pd_balance_leaders: bool,
    /// The node moves Regions between its cores, one at a time, until the cores' Region
    /// counts differ by at most one (a split keeps the new Region on its parent's core).
    pub core_balance: bool,
    /// How often the node compares its cores' Region counts (with `core_balance`).
    pub core_balance_interval_ms: u64,
    /// Where this node dials other nodes' peer ports, overriding the address the cluster
    /// metadata gives: `"ID=HOST:PEER_PORT"` per overridden node (core `i` of that node at
    /// `PEER_PORT + i`). For a proxy or address translation between nodes; the chaos tests
    /// put a fault-injecting proxy on every link this way. Unlike `initial_cluster`, it may
    /// differ from node to node.
    pub peer_dial_addrs: Vec<String>,
}

/// The environment variable that turns on a deliberately broken mode, for tests only: every
/// replica (followers included) answers strong reads from its local state at once, without a
/// ReadIndex round, so reads can be stale and are NOT linearizable. The chaos tests use it to
/// prove their checker catches such a bug. It is not a config key, so no config file can turn
/// it on; only the exact value [`UNSAFE_FOLLOWER_READS_VALUE`] does, any other value stops the
/// node at startup, and a node running in this mode says so in an error line at startup.
pub const UNSAFE_FOLLOWER_READS_ENV: &str = "TESSERA_UNSAFE_FOLLOWER_READS";
/// The one value of [`UNSAFE_FOLLOWER_READS_ENV`] that turns the broken mode on.
pub const UNSAFE_FOLLOWER_READS_VALUE: &str = "break-linearizability-for-tests";

/// Whether the environment asks for the broken test-only read mode (see
/// [`UNSAFE_FOLLOWER_READS_ENV`]).
///
/// # Errors
/// `Invalid` when the variable is set to anything but [`UNSAFE_FOLLOWER_READS_VALUE`].
pub fn unsafe_follower_reads_from_env() -> Result<bool, ConfigError> {
    match std::env::var_os(UNSAFE_FOLLOWER_READS_ENV) {
        None => Ok(false),
        Some(value) if value == UNSAFE_FOLLOWER_READS_VALUE => Ok(true),
        Some(value) => Err(ConfigError::Invalid(format!(
            "{UNSAFE_FOLLOWER_READS_ENV}={value:?}: this test-only switch breaks \
             linearizability; unset it (only the value {UNSAFE_FOLLOWER_READS_VALUE:?} turns it on)"
        ))),
    }
}

/// A node id in a config entry: a number, never 0.
fn parse_node_id(text: &str) -> Option<u64> {
    text.trim().parse().ok().filter(|id| *id != 0)
}

/// One entry of `peer_dial_addrs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerDialAddr {
    pub node_id: u64,
    pub host: String,
    pub peer_port: u16,
}

impl PeerDialAddr {
    /// Parses `"ID=HOST:PEER_PORT"`.
    ///
    /// # Errors
    /// `Invalid` quoting the entry.
    pub fn parse(entry: &str) -> Result<PeerDialAddr, ConfigError> {
        let bad = || {
            ConfigError::Invalid(format!(
                "peer_dial_addrs entry {entry:?}: expected ID=HOST:PEER_PORT"
            ))
        };
        let (id, rest) = entry.split_once('=').ok_or_else(bad)?;
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let node_id = parse_node_id(id).ok_or_else(bad)?;
        let peer_port = port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?;
        if host.is_empty() {
            return Err(bad());
        }
        Ok(PeerDialAddr {
            node_id,
            host: host.to_string(),
            peer_port,
        })
    }
}

/// One member of `initial_cluster`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialMember {
    pub node_id: u64,
    pub host: String,
    pub client_port: u16,
    pub peer_port: u16,
}

impl InitialMember {
    /// Parses `"ID=HOST:CLIENT_PORT:PEER_PORT"`.
    ///
    /// # Errors
    /// `Invalid` quoting the entry.
    pub fn parse(entry: &str) -> Result<InitialMember, ConfigError> {
        let bad = || {
            ConfigError::Invalid(format!(
                "initial_cluster entry {entry:?}: expected ID=HOST:CLIENT_PORT:PEER_PORT"
            ))
        };
        let (id, rest) = entry.split_once('=').ok_or_else(bad)?;
        let mut parts = rest.rsplitn(3, ':');
        let peer_port = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let client_port = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let host = parts
            .next()
            .filter(|h| !h.is_empty())
            .ok_or_else(bad)?
            .to_string();
        let node_id = parse_node_id(id).ok_or_else(bad)?;
        Ok(InitialMember {
            node_id,
            host,
            client_port,
            peer_port,
        })
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            node_id: 1,
            data_dir: PathBuf::from("tessera-data"),
            listen_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            client_port: 7400,
            peer_port: 7500,
            cores: 0,
            cpus: "auto".to_string(),
            tick_ms: 100,
            election_timeout_ticks: 10,
            heartbeat_interval_ticks: 2,
            raft_broadcast_commit: true,
            snapshot_interval_entries: 10_000,
            wal_segment_bytes: 64 << 20,
            wal_write_through: true,
            wal_writes: WalWrites::Auto,
            io_memory_bytes: 1 << 20,
            spin_before_park_us: 1000,
            pending_requests_max: 100_000,
            initial_split_keys: vec!["m".to_string()],
            replicas: 1,
            join: String::new(),
            pd_heartbeat_interval_ms: 30_000,
            split_check_interval_ms: 10_000,
            split_size_bytes: 96 << 20,
            pd_balance: true,
            pd_balance_leaders: false,
            core_balance: true,
            core_balance_interval_ms: 10_000,
            initial_cluster: Vec::new(),
            peer_dial_addrs: Vec::new(),
        }
    }
}

/// How a core's WAL writes its group commits (`wal_writes`).
///
/// An executor that parks while its write is in flight is woken by the completion, which on
/// the reference VM costs more than the write saves by not blocking: a parked core pays glommio's
/// wake-up (several system calls) and the kernel worker that finishes an `O_DSYNC` write through
/// io_uring, where a blocking `pwrite` finishes it in the writing thread. A spinning executor
/// (pinned, `spin_before_park_us > 0`) sees the completion without parking, so the ring is
/// faster there. docs/benchmarks.md, pass L, has the measurements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WalWrites {
    /// Blocking when the executor does not spin, through the ring when it does.
    #[default]
    Auto,
    /// Through glommio's io_uring ring: the core runs other tasks while the write is in flight.
    IoUring,
    /// Blocking system calls on the core's thread: the core waits for the disk.
    Blocking,
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl NodeConfig {
    /// Reads a TOML file; keys it leaves out keep their defaults.
    ///
    /// # Errors
    /// `Read` or `Parse`, naming the file.
    pub fn from_file(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// The core count in force: `cores`, or every available core when 0.
    pub fn core_count(&self) -> usize {
        if self.cores > 0 {
            return self.cores;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// The CPU each core's executor is pinned to (`None`: not pinned), from `cpus`.
    ///
    /// # Errors
    /// `Invalid` when `cpus` is not `auto`, `none` or a list of distinct CPUs this process
    /// may run on, at least one per core.
    pub fn cpu_placement(&self) -> Result<Vec<Option<usize>>, ConfigError> {
        let cores = self.core_count();
        let allowed = allowed_cpus();
        match self.cpus.trim() {
            "none" => Ok(vec![None; cores]),
            "auto" if allowed.len() >= cores => {
                Ok(allowed[..cores].iter().copied().map(Some).collect())
            }
            "auto" => Ok(vec![None; cores]),
            list => {
                let invalid = |why: String| {
                    ConfigError::Invalid(format!(
                        "cpus = {list:?}: {why} (use \"auto\", \"none\" or a list like \"0,1\")"
                    ))
                };
                let cpus = parse_cpu_list(list, &allowed).map_err(invalid)?;
                if cpus.len() < cores {
                    return Err(invalid(format!("{} CPUs for {cores} cores", cpus.len())));
                }
                Ok(cpus[..cores].iter().copied().map(Some).collect())
            }
        }
    }

    /// Whether a core's WAL writes block its thread (`wal_writes`), for a core whose executor
    /// is `pinned` (glommio spins only on a pinned executor).
    pub fn blocking_wal_writes(&self, pinned: bool) -> bool {
        match self.wal_writes {
            WalWrites::IoUring => false,
            WalWrites::Blocking => true,
            WalWrites::Auto => !(pinned && self.spin_before_park_us > 0),
        }
    }

    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms)
    }

    pub fn client_addr(&self, core: usize) -> SocketAddr {
        SocketAddr::new(self.listen_host, self.client_port + core as u16)
    }

    pub fn peer_addr(&self, core: usize) -> SocketAddr {
        SocketAddr::new(self.listen_host, self.peer_port + core as u16)
    }

    /// The parsed `peer_dial_addrs`.
    ///
    /// # Errors
    /// `Invalid` naming a malformed entry or a node listed twice.
    pub fn peer_dial_overrides(&self) -> Result<Vec<PeerDialAddr>, ConfigError> {
        let entries = self
            .peer_dial_addrs
            .iter()
            .map(|e| PeerDialAddr::parse(e))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, entry) in entries.iter().enumerate() {
            if entries[..i].iter().any(|e| e.node_id == entry.node_id) {
                return Err(ConfigError::Invalid(format!(
                    "peer_dial_addrs lists node {} twice",
                    entry.node_id
                )));
            }
        }
        Ok(entries)
    }

    /// The parsed `initial_cluster`, checked: distinct ids, and this node listed with its
    /// own ports.
    ///
    /// # Errors
    /// `Invalid` naming the problem.
    pub fn initial_members(&self) -> Result<Vec<InitialMember>, ConfigError> {
        let members = self
            .initial_cluster
            .iter()
            .map(|e| InitialMember::parse(e))
            .collect::<Result<Vec<_>, _>>()?;
        if members.is_empty() {
            return Ok(members);
        }
        let mut ids: Vec<u64> = members.iter().map(|m| m.node_id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != members.len() {
            return Err(ConfigError::Invalid(
                "initial_cluster lists a node id twice".into(),
            ));
        }
        let me = members
            .iter()
            .find(|m| m.node_id == self.node_id)
            .ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "initial_cluster does not list this node ({})",
                    self.node_id
                ))
            })?;
        if (me.client_port, me.peer_port) != (self.client_port, self.peer_port) {
            return Err(ConfigError::Invalid(format!(
                "initial_cluster gives node {} ports {}/{}, but it listens on {}/{}",
                self.node_id, me.client_port, me.peer_port, self.client_port, self.peer_port
            )));
        }
        Ok(members)
    }

    /// Checks the values can work together.
    ///
    /// # Errors
    /// `Invalid` naming the first bad value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.node_id == 0 {
            return invalid("node_id must not be 0".into());
        }
        let cores = self.core_count();
        if cores > 256 {
            return invalid(format!("cores = {cores}: at most 256"));
        }
        for (name, port) in [
            ("client_port", self.client_port),
            ("peer_port", self.peer_port),
        ] {
            if port == 0 || u32::from(port) + cores as u32 > 65_536 {
                return invalid(format!("{name} = {port} leaves no room for {cores} cores"));
            }
        }
        let client = u32::from(self.client_port)..u32::from(self.client_port) + cores as u32;
        let peer = u32::from(self.peer_port)..u32::from(self.peer_port) + cores as u32;
        if client.start < peer.end && peer.start < client.end {
            return invalid("client and peer port ranges overlap".into());
        }
        if self.tick_ms == 0 || self.heartbeat_interval_ticks == 0 {
            return invalid("tick_ms and heartbeat_interval_ticks must be > 0".into());
        }
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks {
            return invalid("election_timeout_ticks must exceed heartbeat_interval_ticks".into());
        }
        if self.pd_heartbeat_interval_ms == 0 || self.split_check_interval_ms == 0 {
            return invalid(
                "pd_heartbeat_interval_ms and split_check_interval_ms must be at least 1".into(),
            );
        }
        if self.replicas == 0 {
            return invalid("replicas must be at least 1".into());
        }
        self.initial_members()?;
        self.cpu_placement()?;
        self.peer_dial_overrides()?;
        let mut keys = self.initial_split_keys.clone();
        keys.sort();
        keys.dedup();
        if keys.len() != self.initial_split_keys.len() || keys.iter().any(String::is_empty) {
            return invalid("initial_split_keys must be distinct and non-empty".into());
        }
        Ok(())
    }
}

/// The CPUs of a comma-separated list like `"0,1"`, in its order.
///
/// # Errors
/// Why the list cannot be used: an entry that is not a CPU number, a CPU listed twice, or
/// one outside `allowed` (the CPUs this process may run on).
pub fn parse_cpu_list(list: &str, allowed: &[usize]) -> Result<Vec<usize>, String> {
    let cpus = list
        .split(',')
        .map(|c| c.trim().parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if let Some(cpu) = cpus.iter().find(|c| !allowed.contains(c)) {
        return Err(format!(
            "CPU {cpu} is not one this process may run on ({allowed:?})"
        ));
    }
    let mut distinct = cpus.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() != cpus.len() {
        return Err("a CPU is listed twice".into());
    }
    Ok(cpus)
}

/// The CPUs this process may run on (its affinity mask), ascending.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `set` is a plain bit set that sched_getaffinity fills; CPU_ISSET only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|cpu| libc::CPU_ISSET(*cpu, &set))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_writes_block_unless_the_executor_spins_or_as_set() {
        let config = |toml: &str| -> NodeConfig { toml::from_str(toml).unwrap() };
        let default = NodeConfig::default();
        assert_eq!(default.wal_writes, WalWrites::Auto);
        assert!(
            !default.blocking_wal_writes(true),
            "pinned and spinning: the ring"
        );
        assert!(
            default.blocking_wal_writes(false),
            "not pinned: glommio does not spin"
        );
        let no_spin = config("spin_before_park_us = 0");
        assert!(no_spin.blocking_wal_writes(true));
        let ring = config("wal_writes = \"io-uring\"");
        assert!(!ring.blocking_wal_writes(false) && !ring.blocking_wal_writes(true));
        let blocking = config("wal_writes = \"blocking\"");
        assert!(blocking.blocking_wal_writes(false) && blocking.blocking_wal_writes(true));
        let error = toml::from_str::<NodeConfig>("wal_writes = \"sometimes\"").unwrap_err();
        assert!(error.to_string().contains("unknown variant"), "{error}");
    }

    #[test]
    fn cpus_pin_each_core_to_an_allowed_cpu_or_are_refused_with_a_reason() {
        let allowed = allowed_cpus();
        assert!(!allowed.is_empty(), "this process may run on some CPU");
        let config = |cpus: &str, cores: usize| NodeConfig {
            cpus: cpus.to_string(),
            cores,
            ..NodeConfig::default()
        };
        assert_eq!(config("none", 2).cpu_placement().unwrap(), vec![None, None]);
        assert_eq!(
            config("auto", 1).cpu_placement().unwrap(),
            vec![Some(allowed[0])]
        );
        // More cores than CPUs: auto leaves them unpinned rather than stacking them.
        let many = allowed.len() + 1;
        assert_eq!(
            config("auto", many).cpu_placement().unwrap(),
            vec![None; many]
        );
        let last = *allowed.last().unwrap();
        assert_eq!(
            config(&format!(" {last} "), 1).cpu_placement().unwrap(),
            vec![Some(last)]
        );
        for (cpus, cores, why) in [
            ("0,x", 1, "invalid digit"),
            (&format!("{last}"), 2, "1 CPUs for 2 cores"),
            (&format!("{last},{last}"), 2, "listed twice"),
            ("100000", 1, "not one this process may run on"),
        ] {
            let error = config(cpus, cores).validate().unwrap_err().to_string();
            assert!(error.contains(why), "cpus = {cpus:?}: {error}");
        }
    }

    #[test]
    fn defaults_are_valid_and_a_partial_file_keeps_them() {
        NodeConfig::default().validate().unwrap();
        let config: NodeConfig = toml::from_str("node_id = 3\nclient_port = 9000").unwrap();
        assert_eq!(config.node_id, 3);
        assert_eq!(config.client_port, 9000);
        assert_eq!(config.peer_port, NodeConfig::default().peer_port);
    }

    #[test]
    fn initial_cluster_entries_parse_and_must_list_this_node() {
        let member = InitialMember::parse("2=127.0.0.1:7410:7510").unwrap();
        assert_eq!(
            (member.node_id, member.client_port, member.peer_port),
            (2, 7410, 7510)
        );
        assert!(InitialMember::parse("2=127.0.0.1:7410").is_err());
        assert!(InitialMember::parse("0=h:1:2").is_err());
        let config = NodeConfig {
            initial_cluster: vec!["2=127.0.0.1:7410:7510".into()],
            ..NodeConfig::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("does not list this node"));
        let config = NodeConfig {
            initial_cluster: vec![
                "1=127.0.0.1:7400:7500".into(),
                "2=127.0.0.1:7410:7510".into(),
            ],
            ..NodeConfig::default()
        };
        config.validate().unwrap();
    }

    #[test]
    fn the_unsafe_read_mode_needs_its_exact_value_and_refuses_any_other() {
        // The only test in this crate touching the variable, so no other thread races it.
        std::env::remove_var(UNSAFE_FOLLOWER_READS_ENV);
        assert!(!unsafe_follower_reads_from_env().unwrap());
        std::env::set_var(UNSAFE_FOLLOWER_READS_ENV, "1");
        let error = unsafe_follower_reads_from_env().unwrap_err().to_string();
        assert!(error.contains("breaks linearizability"), "{error}");
        std::env::set_var(UNSAFE_FOLLOWER_READS_ENV, UNSAFE_FOLLOWER_READS_VALUE);
        assert!(unsafe_follower_reads_from_env().unwrap());
        std::env::remove_var(UNSAFE_FOLLOWER_READS_ENV);
    }

    #[test]
    fn peer_dial_addrs_parse_and_refuse_duplicates() {
        let entry = PeerDialAddr::parse("3=127.0.0.1:31000").unwrap();
        assert_eq!((entry.node_id, entry.peer_port), (3, 31000));
        assert_eq!(entry.host, "127.0.0.1");
        for bad in ["3=127.0.0.1", "0=h:1", "3=:1", "x=h:1", "3=h:0"] {
            assert!(PeerDialAddr::parse(bad).is_err(), "{bad}");
        }
        let config = NodeConfig {
            peer_dial_addrs: vec!["2=127.0.0.1:31000".into(), "2=127.0.0.1:31002".into()],
            ..NodeConfig::default()
        };
        assert!(config.validate().unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_a_reason() {
        assert!(toml::from_str::<NodeConfig>("nodeid = 3").is_err());
        let config = NodeConfig {
            node_id: 0,
            ..NodeConfig::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("node_id"));
        let config = NodeConfig {
            cores: 4,
            client_port: 7400,
            peer_port: 7402,
            ..NodeConfig::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("overlap"));
    }
}
