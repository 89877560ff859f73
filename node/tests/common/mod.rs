//! Shared helpers for the tests that run real `tessera` processes on loopback.
//!
//! A [`Node`] owns one child process, its temporary data directory and its log. Every wait
//! polls a condition every few milliseconds until a deadline; nothing sleeps a fixed time.
//! Dropping a `Node` SIGKILLs the child, so a failing test never leaks a process, and when the
//! test is panicking the child's stderr is printed so the failure can be diagnosed.

#![allow(dead_code)] // each test binary uses a different subset

pub mod cluster;

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tessera_node::client::{Client, ClientOptions};

/// Cores every test node runs with, so the port layout and Region placement are predictable.
pub const CORES: usize = 2;
/// How long a node may take to start serving (WAL recovery, election, binding).
pub const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a node may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The poll interval of every wait.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// The `tessera` binary cargo built for these tests.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_tessera")
}

/// Polls `condition` every `POLL_INTERVAL` until it returns `Some`, or panics naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, condition: impl FnMut() -> Option<T>) -> T {
    wait_for_reporting(what, timeout, condition, String::new)
}

/// As [`wait_for`]; on timeout the panic message also holds `report()` (e.g. the nodes' logs).
pub fn wait_for_reporting<T>(
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut() -> Option<T>,
    report: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = condition() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                report()
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// A client-port range and a peer-port range, `CORES` ports each, free when chosen.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub client: u16,
    pub peer: u16,
}

/// Ports handed out in this process, so tests running in parallel threads never share one.
static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Finds two free ranges of `cores` ports. Ports come from 20000..32000, below Linux's
/// ephemeral range, so outgoing connections (which take ephemeral ports) cannot grab them
/// between this check and the node's bind.
pub fn free_ports(cores: usize) -> Ports {
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let taken = taken.get_or_insert_with(HashSet::new);
    let mut seed = u64::from(std::process::id()) << 32
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    for _ in 0..1000 {
        seed = splitmix(seed);
        let client = 20_000 + (seed % 6_000) as u16 * 2;
        let peer = client + 64;
        let range = (client..client + cores as u16).chain(peer..peer + cores as u16);
        let ports: Vec<u16> = range.collect();
        if ports.iter().any(|p| taken.contains(p)) {
            continue;
        }
        if ports
            .iter()
            .all(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        {
            taken.extend(ports);
            return Ports { client, peer };
        }
    }
    panic!("no free port ranges found in 20000..32000");
}

fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A small deterministic random source for tests (seeded from the clock, seed printed).
pub struct TestRng(u64);

impl TestRng {
    pub fn from_clock(name: &str) -> TestRng {
        let seed = std::env::var("TESSERA_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("{name}: seed {seed} (rerun with TESSERA_TEST_SEED={seed})");
        TestRng(seed)
    }

    /// A source that replays `seed`.
    pub fn from_seed(seed: u64) -> TestRng {
        TestRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = splitmix(self.0);
        self.0
    }

    /// A number in `low..high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low)
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// How to start a node.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub node_id: u64,
    pub cores: usize,
    pub ports: Ports,
    pub data_dir: PathBuf,
    /// A TOML config file passed with `--config`.
    pub config: Option<PathBuf>,
    /// `--cpus`: `none` unless a test sets it. Tests run many nodes at once on a small
    /// machine; pinned, they would all put their core 0 on the same CPU.
    pub cpus: String,
}

/// One `tessera serve` process (or none, between a stop and the next start), its data
/// directory and its logs.
pub struct Node {
    pub spec: NodeSpec,
    child: Option<Child>,
    /// Holds the data directory and the logs; removed on drop.
    pub dir: tempfile::TempDir,
    /// One log file per start, in order.
    logs: Vec<PathBuf>,
    /// Extra environment variables of the process (e.g. an injected WAL fault).
    pub env: Vec<(String, String)>,
}

impl Node {
    /// A node in a fresh temporary directory on fresh ports, not started yet.
    pub fn new() -> Node {
        let dir = tempfile::Builder::new()
            .prefix("tessera-node-test")
            .tempdir()
            .expect("temp dir");
        let spec = NodeSpec {
            node_id: 1,
            cores: CORES,
            ports: free_ports(CORES),
            data_dir: dir.path().join("data"),
            config: None,
            cpus: "none".into(),
        };
        Node {
            spec,
            child: None,
            dir,
            logs: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Writes `toml` to a config file in the node's directory and passes it on every start.
    pub fn with_config(mut self, toml: &str) -> Node {
        let path = self.dir.path().join("tessera.toml");
        std::fs::write(&path, toml).expect("write config");
        self.spec.config = Some(path);
        self
    }

    /// Node `id` with one core on fresh ports, started with the config keys in `toml`.
    pub fn one_core(id: u64, toml: &str) -> Node {
        let mut node = Node::new().with_config(toml);
        node.spec.node_id = id;
        node.spec.cores = 1;
        node.spec.ports = free_ports(1);
        node
    }

    /// A fresh node, started and serving.
    pub fn started() -> Node {
        let mut node = Node::new();
        node.start();
        node
    }

    /// The command line of `serve` for the current spec.
    pub fn serve_args(&self) -> Vec<String> {
        let spec = &self.spec;
        let mut args = vec![
            "serve".to_string(),
            "--node-id".into(),
            spec.node_id.to_string(),
            "--data-dir".into(),
            spec.data_dir.display().to_string(),
            "--client-port".into(),
            spec.ports.client.to_string(),
            "--peer-port".into(),
            spec.ports.peer.to_string(),
            "--cores".into(),
            spec.cores.to_string(),
            "--cpus".into(),
            spec.cpus.clone(),
        ];
        if let Some(config) = &spec.config {
            args.push("--config".into());
            args.push(config.display().to_string());
        }
        args
    }

    /// Starts the process without waiting for it to serve.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "node already running");
        self.wait_ports_free();
        let log = self
            .dir
            .path()
            .join(format!("node-{}.log", self.logs.len() + 1));
        let file = File::create(&log).expect("create log file");
        // Run in the node's own directory, so that a relative `data_dir` (as in the README's
        // `tessera serve`) lands there.
        let child = Command::new(binary())
            .args(self.serve_args())
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn tessera");
        self.logs.push(log);
        self.child = Some(child);
    }

    /// Starts the process and waits until every core answers `status` with a leader for
    /// each of its Regions.
    ///
    /// # Panics
    /// If the process exits or does not serve within `START_TIMEOUT`.
    pub fn start(&mut self) {
        self.spawn();
        self.wait_ready();
    }

    /// Waits until every port of the node can be bound. A listener of a process that just
    /// exited can outlive it briefly (io_uring tears down its ring, and the accept pending on
    /// the listener, asynchronously), so a restart right after an exit would find it in use.
    pub fn wait_ports_free(&self) {
        let ports = self.spec.ports;
        let cores = self.spec.cores as u16;
        wait_for("the node's ports to be free", STOP_TIMEOUT, || {
            (ports.client..ports.client + cores)
                .chain(ports.peer..ports.peer + cores)
                .all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok())
                .then_some(())
        });
    }

    /// Waits until every core serves its Regions as leader.
    pub fn wait_ready(&mut self) {
        let addrs = self.client_addrs();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.try_wait() {
                panic!(
                    "tessera exited with {status} before serving; log:\n{}",
                    self.log()
                );
            }
            if addrs.iter().all(|addr| core_has_leaders(addr)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "tessera did not serve within {START_TIMEOUT:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The process id of the running child.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("node running").id() as i32
    }

    /// Reaps the child if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().expect("try_wait")?;
        self.child = None;
        Some(status)
    }

    /// Waits for the child to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the pid of a child we have not reaped yet, so it is still ours.
        let result = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(result, 0, "kill({}, {signal}) failed", self.pid());
    }

    /// SIGTERM, then waits for the exit status (SIGKILL and panic after `STOP_TIMEOUT`).
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        if let Some(status) = self.wait_exit(STOP_TIMEOUT) {
            return status;
        }
        self.kill();
        panic!(
            "tessera did not exit within {STOP_TIMEOUT:?} of SIGTERM; log:\n{}",
            self.log()
        );
    }

    /// SIGKILL, and reaps the child.
    pub fn kill(&mut self) {
        if self.child.is_none() {
            return;
        }
        self.signal(libc::SIGKILL);
        self.wait_exit(STOP_TIMEOUT)
            .expect("a SIGKILLed child exits");
    }

    /// SIGTERM and checks the node exited 0 after logging a clean shutdown.
    pub fn stop_cleanly(&mut self) {
        let status = self.terminate();
        let log = self.last_log();
        assert!(
            status.success(),
            "tessera exited with {status} after SIGTERM; log:\n{log}"
        );
        assert!(
            log.contains("shut down cleanly"),
            "no clean-shutdown line in the log:\n{log}"
        );
    }

    /// The client address of core `core`.
    pub fn client_addr(&self, core: usize) -> String {
        format!("127.0.0.1:{}", self.spec.ports.client as usize + core)
    }

    /// The peer address of core `core`.
    pub fn peer_addr(&self, core: usize) -> String {
        format!("127.0.0.1:{}", self.spec.ports.peer as usize + core)
    }

    pub fn client_addrs(&self) -> Vec<String> {
        (0..self.spec.cores).map(|c| self.client_addr(c)).collect()
    }

    /// A client of this node in the default namespace.
    pub fn client(&self) -> Client {
        self.client_in("")
    }

    /// A client of this node in `namespace`.
    pub fn client_in(&self, namespace: &str) -> Client {
        let options = ClientOptions {
            namespace: namespace.to_string(),
            ..ClientOptions::default()
        };
        Client::connect(&self.client_addr(0), options).unwrap_or_else(|e| {
            panic!(
                "connect to {}: {e}; log:\n{}",
                self.client_addr(0),
                self.log()
            )
        })
    }

    /// Runs a client subcommand of the binary against core 0 and returns (success, stdout).
    pub fn cli(&self, args: &[&str]) -> (bool, String) {
        let output = Command::new(binary())
            .args(args)
            .arg("--addr")
            .arg(self.client_addr(0))
            .output()
            .expect("run tessera client");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        (output.status.success(), stdout)
    }

    /// The log of the latest start.
    pub fn last_log(&self) -> String {
        self.logs
            .last()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .unwrap_or_default()
    }

    /// Every start's log, concatenated, with a header per start.
    pub fn log(&self) -> String {
        let mut all = String::new();
        for (i, path) in self.logs.iter().enumerate() {
            all.push_str(&format!(
                "----- start {} ({}) -----\n",
                i + 1,
                path.display()
            ));
            all.push_str(&std::fs::read_to_string(path).unwrap_or_default());
        }
        all
    }
}

impl Default for Node {
    fn default() -> Self {
        Node::new()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let tail = tail(&self.log(), 200);
            eprintln!("tessera node log (last 200 lines):\n{tail}");
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// True when the core at `addr` answers `status` and leads each of its Regions (one node).
fn core_has_leaders(addr: &str) -> bool {
    let options = ClientOptions {
        request_timeout: Duration::from_millis(500),
        attempts_max: 1,
        ..ClientOptions::default()
    };
    let Ok(mut client) = Client::connect(addr, options) else {
        return false;
    };
    match client.status(Some(addr)) {
        Ok(status) => status
            .regions
            .iter()
            .all(|r| r.leader == Some(status.node_id)),
        Err(_) => false,
    }
}

/// Runs `tessera serve` with `args` to completion (it must fail fast) and returns its exit
/// status and stderr.
pub fn serve_expecting_exit(args: &[String], timeout: Duration) -> (ExitStatus, String) {
    serve_expecting_exit_with(args, timeout, |_| {})
}

/// As [`serve_expecting_exit`], with `prepare` changing the command first (e.g. a resource
/// limit set in the child).
pub fn serve_expecting_exit_with(
    args: &[String],
    timeout: Duration,
    prepare: impl FnOnce(&mut Command),
) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("stderr.log");
    let mut command = Command::new(binary());
    prepare(&mut command);
    let mut child = command
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(File::create(&log).expect("log file")))
        .spawn()
        .expect("spawn tessera");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "tessera {args:?} kept running for {timeout:?}; stderr:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    (status, std::fs::read_to_string(&log).unwrap_or_default())
}

/// Opens a raw TCP connection with a read timeout, for sending bytes by hand.
pub fn raw_connection(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Reads until the server closes the connection, or panics after `timeout`. Whatever bytes
/// the server sent before closing are returned.
pub fn read_until_closed(stream: &mut TcpStream, timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return received, // reset: closed too
        }
        assert!(
            Instant::now() < deadline,
            "the server kept the connection open for {timeout:?} (received {} bytes)",
            received.len()
        );
    }
}

/// Writes `bytes`, ignoring a reset (the server may close before reading everything).
pub fn write_ignoring_reset(stream: &mut TcpStream, bytes: &[u8]) {
    let _ = stream.write_all(bytes);
}
