//! Crash recovery of a real `tessera serve` process: SIGKILL at random moments while a writer
//! keeps writing, restart on the same data directory, and read back every acknowledged write
//! with its value and version. Also a restart whose recovery goes through a Region snapshot
//! plus the WAL entries after it.
//!
//! The writer is sequential (one request in flight), so after it stops the node's state must
//! equal its model exactly: a put whose answer was lost is retried with the same value until
//! one attempt is acknowledged, and that acknowledgement carries the final version.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Node, TestRng};
use tessera_node::client::{CasOutcome, Client, ClientOptions};
use tessera_transport::client::Mode;

/// Key → (value, version) as last acknowledged.
type Model = BTreeMap<String, (String, u64)>;

/// How long the writer keeps retrying one operation (the node restarts well within this).
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// A client that reconnects until `OPERATION_TIMEOUT` while the node is down.
struct Writer {
    addr: String,
    client: Option<Client>,
    model: Model,
    /// Operations acknowledged so far (the test's clock for choosing kill moments).
    acked: Arc<AtomicU64>,
    /// Failed attempts (connection errors while the node was down), for the report.
    errors: u64,
}

impl Writer {
    fn client(&mut self, deadline: Instant) -> &mut Client {
        while self.client.is_none() {
            let options = ClientOptions {
                request_timeout: Duration::from_secs(5),
                ..ClientOptions::default()
            };
            match Client::connect(&self.addr, options) {
                Ok(client) => self.client = Some(client),
                Err(error) => {
                    assert!(Instant::now() < deadline, "cannot reconnect: {error}");
                    self.errors += 1;
                    std::thread::sleep(common::POLL_INTERVAL);
                }
            }
        }
        self.client.as_mut().expect("connected above")
    }

    /// Drops the client after an error, so the next attempt reconnects from scratch.
    fn failed(&mut self, key: &str, error: impl std::fmt::Display, deadline: Instant) {
        assert!(
            Instant::now() < deadline,
            "{key}: no success within {OPERATION_TIMEOUT:?}; last error: {error}"
        );
        self.errors += 1;
        self.client = None;
    }

    fn record(&mut self, key: &str, value: String, version: u64) {
        if let Some((_, previous)) = self.model.get(key) {
            assert!(
                version > *previous,
                "{key}: version went backwards or stood still: {previous} then {version}"
            );
        }
        self.model.insert(key.to_string(), (value, version));
        self.acked.fetch_add(1, Ordering::Relaxed);
    }

    /// A strong put, retried with the same value until acknowledged.
    fn put(&mut self, key: &str, value: String) {
        let deadline = Instant::now() + OPERATION_TIMEOUT;
        loop {
            match self
                .client(deadline)
                .put(key.as_bytes(), value.as_bytes(), Mode::Strong)
            {
                Ok(version) => return self.record(key, value, version),
                Err(error) => self.failed(key, error, deadline),
            }
        }
    }

    /// A strong get, retried until answered.
    fn get(&mut self, key: &str) -> Option<(String, u64)> {
        let deadline = Instant::now() + OPERATION_TIMEOUT;
        loop {
            match self.client(deadline).get(key.as_bytes(), Mode::Strong) {
                Ok(found) => {
                    return found.map(|v| (String::from_utf8(v.value).unwrap(), v.version))
                }
                Err(error) => self.failed(key, error, deadline),
            }
        }
    }

    /// Compare-and-swap from the last acknowledged version to a unique `value`. A mismatch or
    /// an error is resolved with a strong read: either our swap took effect on an attempt
    /// whose answer was lost, or the key must still hold exactly what was last acknowledged.
    fn cas(&mut self, key: &str, value: String) {
        let deadline = Instant::now() + OPERATION_TIMEOUT;
        loop {
            let expected = self.model.get(key).map_or(0, |(_, v)| *v);
            let outcome = self
                .client(deadline)
                .cas(key.as_bytes(), expected, value.as_bytes());
            match outcome {
                Ok(CasOutcome::Done { version }) => return self.record(key, value, version),
                Ok(CasOutcome::Mismatch { .. }) => {}
                Err(error) => self.failed(key, error, deadline),
            }
            let current = self.get(key);
            if let Some((found, version)) = &current {
                if *found == value {
                    return self.record(key, value, *version);
                }
            }
            assert_eq!(
                current,
                self.model.get(key).cloned(),
                "{key}: the node lost an acknowledged write"
            );
        }
    }
}

/// Puts to keys on both sides of the split key "m", and every fifth operation a
/// compare-and-swap, until `stop`.
fn write_until(mut writer: Writer, stop: &AtomicBool) -> Writer {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let slot = (i / 2) % 40;
        if i % 5 == 4 {
            writer.cas(&format!("cas/{}", i % 7), format!("c{i}"));
        } else if i.is_multiple_of(2) {
            writer.put(&format!("a/{slot:02}"), format!("v{i}"));
        } else {
            writer.put(&format!("w/{slot:02}"), format!("v{i}"));
        }
        i += 1;
    }
    writer
}

/// Every key of `model` reads back (strong) with exactly its value and version, and a scan
/// finds no other keys.
fn check_model(node: &Node, model: &Model) {
    let mut client = node.client();
    for (key, (value, version)) in model {
        let found = client
            .get(key.as_bytes(), Mode::Strong)
            .unwrap()
            .unwrap_or_else(|| panic!("{key}: acknowledged as {value} v{version}, now missing"));
        let found = (String::from_utf8(found.value).unwrap(), found.version);
        assert_eq!(
            found,
            (value.clone(), *version),
            "{key}: value or version differs from the last acknowledged write"
        );
    }
    let scanned = client.scan(b"", b"", 10_000, Mode::Strong).unwrap();
    let keys: Vec<String> = scanned
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect();
    let expected: Vec<String> = model.keys().cloned().collect();
    assert_eq!(keys, expected, "a scan finds exactly the written keys");
}

fn sigkill_while_writing(node: &mut Node, kills: usize, rng: &mut TestRng) {
    node.start();
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = Writer {
        addr: node.client_addr(0),
        client: None,
        model: Model::new(),
        acked: acked.clone(),
        errors: 0,
    };
    let writer_stop = stop.clone();
    let handle = std::thread::spawn(move || write_until(writer, &writer_stop));
    // Writer failures show up as a finished thread; stop waiting then, and let join report.
    let wait_acked = |target: u64, handle: &std::thread::JoinHandle<Writer>| {
        common::wait_for("the writer's acknowledgements", OPERATION_TIMEOUT, || {
            (acked.load(Ordering::Relaxed) >= target || handle.is_finished()).then_some(())
        });
    };
    for _ in 0..kills {
        let target = acked.load(Ordering::Relaxed) + rng.range(5, 120);
        wait_acked(target, &handle);
        if handle.is_finished() {
            break;
        }
        node.kill();
        node.start();
    }
    let target = acked.load(Ordering::Relaxed) + 20;
    wait_acked(target, &handle);
    stop.store(true, Ordering::Relaxed);
    let writer = match handle.join() {
        Ok(writer) => writer,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    eprintln!(
        "{} operations acknowledged over {kills} kills, {} failed attempts while down",
        writer.acked.load(Ordering::Relaxed),
        writer.errors
    );
    check_model(node, &writer.model);
    // And once more after a last crash with nothing in flight.
    node.kill();
    node.start();
    check_model(node, &writer.model);
}

#[test]
fn acknowledged_writes_survive_repeated_sigkills() {
    let mut rng = TestRng::from_clock("acknowledged_writes_survive_repeated_sigkills");
    let mut node = Node::new();
    sigkill_while_writing(&mut node, 5, &mut rng);
}

/// The same with each way of writing the WAL (`wal_writes`): group commits through io_uring
/// and as blocking system calls on the core's thread are equally durable. (The default,
/// `auto`, picks one by the executor's placement; these name each.)
#[test]
fn acknowledged_writes_survive_repeated_sigkills_whichever_way_the_wal_writes() {
    for mode in ["blocking", "io-uring"] {
        let mut rng = TestRng::from_clock(&format!("acknowledged_writes_survive_sigkills_{mode}"));
        let mut node = Node::new().with_config(&format!("wal_writes = \"{mode}\"\n"));
        sigkill_while_writing(&mut node, 3, &mut rng);
    }
}

#[test]
fn acknowledged_writes_survive_sigkills_between_frequent_snapshots() {
    let mut rng =
        TestRng::from_clock("acknowledged_writes_survive_sigkills_between_frequent_snapshots");
    let mut node = Node::new().with_config("snapshot_interval_entries = 17\n");
    sigkill_while_writing(&mut node, 5, &mut rng);
    assert!(
        recovered_snapshots(&node.last_log()) > 0,
        "no Region recovered from a snapshot:\n{}",
        node.last_log()
    );
}

/// The sum of `snapshots: N` over the log's "regions recovered" lines.
fn recovered_snapshots(log: &str) -> usize {
    log.lines()
        .filter(|line| line.contains("regions recovered"))
        .filter_map(|line| {
            let rest = &line[line.find("snapshots: ")? + "snapshots: ".len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum()
}

/// More than `snapshot_interval_entries` writes per Region, then a crash: each Region comes
/// back from its snapshot plus the WAL tail after it, with every value and version.
#[test]
fn recovery_goes_through_a_snapshot_and_the_wal_tail() {
    let mut node = Node::new().with_config("snapshot_interval_entries = 50\n");
    node.start();
    let mut client = node.client();
    let mut model = Model::new();
    // 2 x 130 writes: each Region passes two snapshot points and keeps a tail of ~30 entries.
    for i in 0..130 {
        for prefix in ["b", "x"] {
            let key = format!("{prefix}/{:03}", i % 90);
            let value = format!("{prefix}{i}");
            let version = client
                .put(key.as_bytes(), value.as_bytes(), Mode::Strong)
                .unwrap();
            model.insert(key, (value, version));
        }
    }
    drop(client);
    node.kill();
    let snapshots: Vec<_> = (0..common::CORES)
        .map(|core| node.spec.data_dir.join(format!("core-{core}/snapshots")))
        .collect();
    for dir in &snapshots {
        let files = std::fs::read_dir(dir).map_or(0, |d| d.count());
        assert!(files > 0, "no snapshot file in {}", dir.display());
    }
    node.start();
    let log = node.last_log();
    assert_eq!(
        recovered_snapshots(&log),
        2,
        "both Regions must recover from a snapshot:\n{log}"
    );
    check_model(&node, &model);

    // A second round: more writes on top of the recovered snapshot, a clean stop this time.
    let mut client = node.client();
    for i in 0..40 {
        let key = format!("b/{i:03}");
        let version = client.put(key.as_bytes(), b"late", Mode::Strong).unwrap();
        assert!(
            version > model[&key].1,
            "{key}: version went backwards after recovery"
        );
        model.insert(key, ("late".to_string(), version));
    }
    drop(client);
    node.stop_cleanly();
    node.start();
    check_model(&node, &model);
}
