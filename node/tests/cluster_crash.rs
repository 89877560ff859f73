//! Crashes under load in a 3-node cluster of real `tessera serve` processes on loopback.
//!
//! A writer thread with its own client keeps doing strong puts, compare-and-swaps and strong
//! reads on a few keys in both Regions, recording every acknowledged write and version. The
//! test SIGKILLs a node (a Region's leader every other round) six times, each time waiting
//! until the writer makes progress without it before restarting it; then kills all three at
//! once and restarts them. At the end every key is read back through every node:
//!
//! - the value of the last acknowledged write is there, at its version, unless a later write
//!   whose answer never arrived (timed out or errored; it may or may not have taken effect)
//!   replaced it at a higher version;
//! - versions never go backwards: each acknowledgement, each version a CAS mismatch reports
//!   and each strong read is at or above every version acknowledged before it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, CLUSTER_TIMEOUT, FAST_CONFIG};
use common::{TestRng, CORES, POLL_INTERVAL};
use tessera_node::client::{CasOutcome, Client, ClientOptions};
use tessera_transport::client::Mode;

/// Keys the writer works on: half in each Region (`["", "m")` and `["m", "")`).
const KEYS: [&str; 8] = ["a0", "a1", "f2", "k3", "m4", "q5", "u6", "z7"];
/// Single-node kill rounds before the whole cluster is killed at once.
const KILL_ROUNDS: usize = 6;
/// Acknowledged writes the cluster must make with a node down (and after a restart).
const PROGRESS_WRITES: u64 = 15;
/// A write's answer arrives within this or counts as unacknowledged.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the writer knows of one key.
#[derive(Debug, Default)]
struct KeyModel {
    /// Acknowledged writes in the order they were acknowledged: (version, value).
    acked: Vec<(u64, String)>,
    /// Values of writes whose answer never came: they may or may not have taken effect.
    unacknowledged: BTreeSet<String>,
    /// The version the next CAS expects (from the latest answer about this key).
    expected_version: u64,
}

impl KeyModel {
    fn last_acked_version(&self) -> u64 {
        self.acked.last().map_or(0, |(version, _)| *version)
    }

    /// Records an acknowledged write; versions must rise with every acknowledgement.
    fn on_acked(&mut self, key: &str, version: u64, value: String) {
        let previous = self.last_acked_version();
        assert!(
            version > previous,
            "{key}: write of {value:?} acknowledged at version {version}, but version \
             {previous} was acknowledged before it"
        );
        self.acked.push((version, value));
        self.expected_version = version;
    }

    /// Checks a linearizable observation of the key: at or after the last acknowledgement.
    fn check_observed(&self, key: &str, observed: Option<(u64, &[u8])>, what: &str) {
        let Some((last_version, last_value)) = self.acked.last() else {
            return; // nothing acknowledged: anything the unacknowledged writes made is fine
        };
        let Some((version, value)) = observed else {
            panic!("{key}: {what} found nothing, but {last_value:?} was acknowledged at version {last_version}");
        };
        let value = String::from_utf8_lossy(value);
        assert!(
            version >= *last_version,
            "{key}: {what} saw version {version} ({value:?}) below the acknowledged {last_version}"
        );
        let explained = value == *last_value
            || (version > *last_version && self.unacknowledged.contains(value.as_ref()));
        assert!(
            explained,
            "{key}: {what} saw {value:?} at version {version}; the last acknowledged write was \
             {last_value:?} at {last_version} and no unacknowledged write wrote {value:?}"
        );
    }
}

type Model = BTreeMap<&'static str, KeyModel>;

/// The writer thread: one client, one request at a time, until `stop`.
struct Writer {
    client: Client,
    model: Model,
    rng: TestRng,
    acked: Arc<AtomicU64>,
    next_value: u64,
    failures: u64,
}

impl Writer {
    fn run(mut self, stop: &AtomicBool) -> (Model, u64) {
        while !stop.load(Ordering::Relaxed) {
            let key = KEYS[self.rng.range(0, KEYS.len() as u64) as usize];
            match self.rng.range(0, 10) {
                0..=3 => self.put(key),
                4..=7 => self.cas(key),
                _ => self.read(key),
            }
        }
        (self.model, self.failures)
    }

    fn value(&mut self, key: &str) -> String {
        self.next_value += 1;
        format!("{key}#{}", self.next_value)
    }

    fn put(&mut self, key: &'static str) {
        let value = self.value(key);
        match self
            .client
            .put(key.as_bytes(), value.as_bytes(), Mode::Strong)
        {
            Ok(version) => self.acknowledged(key, version, value),
            Err(_) => self.unacknowledged(key, value),
        }
    }

    fn cas(&mut self, key: &'static str) {
        let value = self.value(key);
        let model = self.model.entry(key).or_default();
        let expected = model.expected_version;
        match self.client.cas(key.as_bytes(), expected, value.as_bytes()) {
            Ok(CasOutcome::Done { version }) => self.acknowledged(key, version, value),
            Ok(CasOutcome::Mismatch { current_version }) => {
                let model = self.model.entry(key).or_default();
                let acked = model.last_acked_version();
                assert!(
                    current_version >= acked,
                    "{key}: CAS mismatch reports version {current_version}, below the \
                     acknowledged {acked}"
                );
                model.expected_version = current_version;
                // An earlier attempt of this CAS may have taken effect before its answer was
                // lost (the client retried it): the value is unacknowledged, not absent.
                model.unacknowledged.insert(value);
            }
            Err(_) => self.unacknowledged(key, value),
        }
    }

    fn read(&mut self, key: &'static str) {
        match self.client.get(key.as_bytes(), Mode::Strong) {
            Ok(found) => {
                let model = self.model.entry(key).or_default();
                let observed = found.as_ref().map(|v| (v.version, v.value.as_slice()));
                model.check_observed(key, observed, "a strong read during the crashes");
                model.expected_version = found.map_or(0, |v| v.version);
            }
            Err(_) => self.failures += 1,
        }
    }

    fn acknowledged(&mut self, key: &'static str, version: u64, value: String) {
        self.model
            .entry(key)
            .or_default()
            .on_acked(key, version, value);
        self.acked.fetch_add(1, Ordering::Relaxed);
    }

    fn unacknowledged(&mut self, key: &'static str, value: String) {
        self.failures += 1;
        self.model
            .entry(key)
            .or_default()
            .unacknowledged
            .insert(value);
    }
}

fn client_options(request_timeout: Duration) -> ClientOptions {
    ClientOptions {
        request_timeout,
        attempts_max: 1000,
        backoff_max: Duration::from_millis(50),
        ..ClientOptions::default()
    }
}

/// The writer's thread, its acknowledgement counter and its stop flag.
struct RunningWriter {
    handle: Option<JoinHandle<(Model, u64)>>,
    acked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RunningWriter {
    fn start(client: Client, rng: TestRng) -> RunningWriter {
        let acked = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            client,
            model: Model::new(),
            rng,
            acked: acked.clone(),
            next_value: 0,
            failures: 0,
        };
        let flag = stop.clone();
        let handle = std::thread::spawn(move || writer.run(&flag));
        RunningWriter {
            handle: Some(handle),
            acked,
            stop,
        }
    }

    /// Waits until `count` more writes are acknowledged; a writer that panicked (a broken
    /// invariant) fails the test with its message.
    fn wait_progress(&mut self, count: u64, what: &str) {
        let target = self.acked.load(Ordering::Relaxed) + count;
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        while self.acked.load(Ordering::Relaxed) < target {
            if self.handle.as_ref().is_some_and(JoinHandle::is_finished) {
                self.finish();
            }
            assert!(
                Instant::now() < deadline,
                "no {count} acknowledged writes within {CLUSTER_TIMEOUT:?} {what}"
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Stops the writer and returns its model and failure count.
    fn finish(&mut self) -> (Model, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let handle = self.handle.take().expect("writer running");
        handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl Drop for RunningWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The node to kill: a Region's leader on even rounds, any node on odd ones.
fn choose_victim(cluster: &Cluster, round: usize, rng: &mut TestRng) -> usize {
    if round.is_multiple_of(2) {
        let leaders = cluster.wait_agreed_leaders();
        let leaders: Vec<usize> = leaders.into_values().collect();
        leaders[rng.range(0, leaders.len() as u64) as usize]
    } else {
        rng.range(0, cluster.nodes.len() as u64) as usize
    }
}

#[test]
fn acknowledged_writes_and_cas_versions_survive_repeated_sigkills_of_any_node_and_of_all() {
    let started = Instant::now();
    let mut rng = TestRng::from_clock("cluster_crash");
    // Snapshots every 50 entries: restarts recover from a snapshot plus the WAL, and a node
    // that was down may need a snapshot to catch up.
    let config = format!("{FAST_CONFIG}snapshot_interval_entries = 50\n");
    let mut cluster = Cluster::start(3, CORES, &config);
    cluster.wait_agreed_leaders();
    let client = cluster.client_via(0, 0, client_options(WRITE_TIMEOUT));
    let mut writer = RunningWriter::start(client, TestRng::from_clock("cluster_crash writer"));
    writer.wait_progress(PROGRESS_WRITES, "before any crash");

    for round in 0..KILL_ROUNDS {
        let victim = choose_victim(&cluster, round, &mut rng);
        // Kill at a random moment: after a random number of further writes.
        writer.wait_progress(rng.range(0, 10), "before a kill");
        eprintln!(
            "{:?} round {round}: SIGKILL node {}",
            started.elapsed(),
            victim + 1
        );
        cluster.kill(victim);
        writer.wait_progress(PROGRESS_WRITES, &format!("with node {} down", victim + 1));
        cluster.restart(victim);
        eprintln!("{:?} node {} serves again", started.elapsed(), victim + 1);
        writer.wait_progress(
            PROGRESS_WRITES,
            &format!("after node {} restarted", victim + 1),
        );
    }

    eprintln!("{:?} SIGKILL all nodes", started.elapsed());
    for i in 0..cluster.nodes.len() {
        cluster.kill(i);
    }
    cluster.spawn_all();
    cluster.wait_ready_all();
    writer.wait_progress(PROGRESS_WRITES, "after the whole cluster restarted");

    let (model, failures) = writer.finish();
    let acked: usize = model.values().map(|m| m.acked.len()).sum();
    eprintln!("{acked} acknowledged writes, {failures} failed requests");
    for i in 0..cluster.nodes.len() {
        let mut client = cluster.client_via(i, 0, client_options(CLUSTER_TIMEOUT));
        for (key, key_model) in &model {
            let found = client
                .get(key.as_bytes(), Mode::Strong)
                .unwrap_or_else(|e| {
                    panic!("final strong read of {key} through node {}: {e}", i + 1)
                });
            let observed = found.as_ref().map(|v| (v.version, v.value.as_slice()));
            key_model.check_observed(
                key,
                observed,
                &format!("the final read through node {}", i + 1),
            );
        }
    }
    eprintln!("cluster_crash took {:?}", started.elapsed());
}
