//! A real `tessera serve` process on loopback, used through the Rust client and the CLI:
//! every key-value operation, scans across both default Regions (split at "m"), namespace
//! isolation, a clean SIGTERM shutdown, and a restart that reads back every acknowledged
//! write with its value and version. A data directory given as a relative path (the default
//! `./tessera-data`) works from a fresh start, across WAL segment rotations and a restart.

mod common;

use std::collections::BTreeMap;

use common::Node;
use tessera_node::client::{CasOutcome, Client};
use tessera_transport::client::Mode;

/// What the test expects to read back: (namespace, key) → (value, version); `None` when the
/// key was deleted.
type Expected = BTreeMap<(String, String), Option<(String, u64)>>;

fn put(client: &mut Client, expected: &mut Expected, ns: &str, key: &str, value: &str, mode: Mode) {
    let version = client.put(key.as_bytes(), value.as_bytes(), mode).unwrap();
    assert!(version > 0, "a put returns a version, got 0 for {key}");
    let previous = expected.insert(
        (ns.to_string(), key.to_string()),
        Some((value.to_string(), version)),
    );
    if let Some(Some((_, old))) = previous {
        assert!(version > old, "{key}: version went from {old} to {version}");
    }
}

fn check_all(node: &Node, expected: &Expected) {
    for ((ns, key), want) in expected {
        let mut client = node.client_in(ns);
        for mode in [Mode::Raw, Mode::Strong] {
            let got = client
                .get(key.as_bytes(), mode)
                .unwrap()
                .map(|v| (String::from_utf8(v.value).unwrap(), v.version));
            assert_eq!(&got, want, "namespace {ns:?} key {key:?} ({mode:?})");
        }
    }
}

fn keys(items: &[tessera_transport::client::KeyValue]) -> Vec<String> {
    items
        .iter()
        .map(|i| String::from_utf8(i.key.clone()).unwrap())
        .collect()
}

#[test]
fn every_operation_works_and_survives_a_clean_restart() {
    let mut node = Node::started();
    let mut expected = Expected::new();
    let mut client = node.client();

    // Raw and strong puts and gets, on both sides of the split key "m".
    put(&mut client, &mut expected, "", "apple", "red", Mode::Raw);
    put(
        &mut client,
        &mut expected,
        "",
        "banana",
        "yellow",
        Mode::Strong,
    );
    put(&mut client, &mut expected, "", "melon", "green", Mode::Raw);
    put(
        &mut client,
        &mut expected,
        "",
        "zucchini",
        "long",
        Mode::Strong,
    );
    put(
        &mut client,
        &mut expected,
        "",
        "apple",
        "green",
        Mode::Strong,
    );
    check_all(&node, &expected);

    // Delete.
    put(&mut client, &mut expected, "", "doomed", "x", Mode::Raw);
    client.delete(b"doomed", Mode::Strong).unwrap();
    expected.insert((String::new(), "doomed".into()), None);
    assert_eq!(client.get(b"doomed", Mode::Strong).unwrap(), None);

    // Compare-and-swap: create with 0, update with the returned version, refuse a stale one.
    let CasOutcome::Done { version: v1 } = client.cas(b"cherry", 0, b"c1").unwrap() else {
        panic!("creating a new key with expected version 0 must succeed");
    };
    assert_eq!(
        client.cas(b"cherry", 0, b"again").unwrap(),
        CasOutcome::Mismatch {
            current_version: v1
        },
        "creating an existing key must fail, reporting its version"
    );
    let CasOutcome::Done { version: v2 } = client.cas(b"cherry", v1, b"c2").unwrap() else {
        panic!("cas with the current version must succeed");
    };
    assert!(v2 > v1);
    assert_eq!(
        client.cas(b"cherry", v1, b"c3").unwrap(),
        CasOutcome::Mismatch {
            current_version: v2
        }
    );
    expected.insert((String::new(), "cherry".into()), Some(("c2".into(), v2)));

    // Compare-and-delete on the other Region.
    let CasOutcome::Done { version: p1 } = client.cas(b"plum", 0, b"p").unwrap() else {
        panic!("cas create plum");
    };
    assert_eq!(
        client.cas_delete(b"plum", p1 + 100).unwrap(),
        CasOutcome::Mismatch {
            current_version: p1
        }
    );
    assert_eq!(
        client.cas_delete(b"plum", p1).unwrap(),
        CasOutcome::Done { version: 0 }
    );
    assert_eq!(
        client.cas_delete(b"plum", p1).unwrap(),
        CasOutcome::Mismatch { current_version: 0 },
        "deleting an absent key must fail with version 0"
    );
    expected.insert((String::new(), "plum".into()), None);
    check_all(&node, &expected);

    // Scans cross the Region boundary at "m", in key order, honouring limits and bounds.
    for key in ["k/1", "k/2", "p/1", "p/2", "p/3"] {
        put(&mut client, &mut expected, "", key, key, Mode::Raw);
    }
    let live: Vec<String> = expected
        .iter()
        .filter(|((ns, _), v)| ns.is_empty() && v.is_some())
        .map(|((_, k), _)| k.clone())
        .collect();
    for mode in [Mode::Raw, Mode::Strong] {
        let all = client.scan(b"", b"", 1000, mode).unwrap();
        assert_eq!(keys(&all), live, "full scan ({mode:?})");
        for item in &all {
            let key = String::from_utf8(item.key.clone()).unwrap();
            let want = expected[&(String::new(), key)].clone().unwrap();
            assert_eq!(
                (String::from_utf8(item.value.clone()).unwrap(), item.version),
                want
            );
        }
        let middle = client.scan(b"b", b"p/2", 1000, mode).unwrap();
        assert_eq!(
            keys(&middle),
            ["banana", "cherry", "k/1", "k/2", "melon", "p/1"],
            "scan [b, p/2) ({mode:?})"
        );
        let limited = client.scan(b"k/2", b"", 3, mode).unwrap();
        assert_eq!(
            keys(&limited),
            ["k/2", "melon", "p/1"],
            "limit 3 across the split"
        );
        let prefixed = client.scan_prefix(b"p/", 100, mode).unwrap();
        assert_eq!(keys(&prefixed), ["p/1", "p/2", "p/3"]);
        let prefixed = client.scan_prefix(b"k/", 1, mode).unwrap();
        assert_eq!(keys(&prefixed), ["k/1"]);
    }

    // Namespaces are isolated: the same key in two namespaces, invisible to the default one.
    let mut blue = node.client_in("blue");
    let mut green = node.client_in("green");
    put(
        &mut blue,
        &mut expected,
        "blue",
        "shared",
        "b",
        Mode::Strong,
    );
    put(
        &mut green,
        &mut expected,
        "green",
        "shared",
        "g",
        Mode::Strong,
    );
    put(&mut green, &mut expected, "green", "zz", "g2", Mode::Raw);
    assert_eq!(client.get(b"shared", Mode::Strong).unwrap(), None);
    assert_eq!(blue.get(b"zz", Mode::Strong).unwrap(), None);
    assert_eq!(
        keys(&blue.scan(b"", b"", 100, Mode::Raw).unwrap()),
        ["shared"]
    );
    assert_eq!(
        keys(&green.scan(b"", b"", 100, Mode::Strong).unwrap()),
        ["shared", "zz"]
    );
    assert_eq!(keys(&client.scan(b"", b"", 1000, Mode::Raw).unwrap()), live);

    // The CLI reads and writes the same data.
    let (ok, out) = node.cli(&["put", "cli-key", "cli-value", "--json"]);
    assert!(ok, "tessera put failed: {out}");
    let version: u64 = json_field(&out, "version").parse().unwrap();
    expected.insert(
        (String::new(), "cli-key".into()),
        Some(("cli-value".into(), version)),
    );
    let (ok, out) = node.cli(&["get", "apple", "--strong", "--json"]);
    assert!(
        ok && out.contains("\"value\":\"green\""),
        "tessera get: {out}"
    );
    let (ok, out) = node.cli(&["get", "doomed"]);
    assert!(
        !ok && out.contains("not found"),
        "get of a deleted key: {out}"
    );
    let (ok, out) = node.cli(&["cas", "cherry", &v1.to_string(), "nope"]);
    assert!(!ok && out.contains(&v2.to_string()), "stale cas: {out}");
    let (ok, out) = node.cli(&["status"]);
    assert!(ok && out.lines().count() >= 3, "status: {out}");
    check_all(&node, &expected);

    // SIGTERM: exit 0 and a clean-shutdown line; then everything is back after a restart.
    drop((client, blue, green));
    node.stop_cleanly();
    node.start();
    check_all(&node, &expected);
    let mut client = node.client();
    let live: Vec<String> = expected
        .iter()
        .filter(|((ns, _), v)| ns.is_empty() && v.is_some())
        .map(|((_, k), _)| k.clone())
        .collect();
    assert_eq!(
        keys(&client.scan(b"", b"", 1000, Mode::Strong).unwrap()),
        live
    );
    // Versions keep growing after the restart: a new write is newer than all before it.
    let newest = expected.values().flatten().map(|(_, v)| *v).max().unwrap();
    let after = client.put(b"apple", b"again", Mode::Strong).unwrap();
    assert!(
        after > newest,
        "version {after} after restart, {newest} before"
    );
    node.stop_cleanly();
}

/// The value of `field` in one line of the CLI's JSON output.
fn json_field(line: &str, field: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    value[field].to_string()
}

/// The default `data_dir` is relative (`tessera-data`): the WAL's directory fsyncs must not
/// depend on it being absolute (glommio opened directories at no base directory and failed a
/// fresh start with EBADF). Small segments make the WAL rotate, which fsyncs the directory again.
#[test]
fn a_relative_data_dir_serves_from_a_fresh_start_across_segment_rotations_and_a_restart() {
    let mut node = Node::new().with_config("wal_segment_bytes = 65536\n");
    node.spec.data_dir = std::path::PathBuf::from("tessera-data");
    node.start();
    let value = "v".repeat(1000);
    let mut client = node.client();
    for n in 0..200 {
        client
            .put(
                format!("key-{n:03}").as_bytes(),
                value.as_bytes(),
                Mode::Strong,
            )
            .unwrap();
    }
    let segments = |core: usize| {
        let wal = node
            .dir
            .path()
            .join(format!("tessera-data/core-{core}/wal"));
        std::fs::read_dir(&wal)
            .unwrap_or_else(|e| panic!("{}: {e}", wal.display()))
            .count()
    };
    assert!(
        segments(0) + segments(1) > 4,
        "the WALs did not rotate: {} and {} files",
        segments(0),
        segments(1)
    );
    node.stop_cleanly();
    node.start();
    let mut client = node.client();
    for n in [0, 99, 199] {
        let found = client
            .get(format!("key-{n:03}").as_bytes(), Mode::Strong)
            .unwrap();
        assert_eq!(found.map(|v| v.value), Some(value.clone().into_bytes()));
    }
    node.stop_cleanly();
    // Nothing went wrong, so nothing is logged as an error (the WAL's deliberate failure of
    // glommio's polled-ring probe included, see tessera_wal::io_poll).
    let log = node.log();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "errors logged: {errors:#?}");
}

/// A raw read reads the node's applied state; right after a restart that state must already
/// hold every write acknowledged before it (the recovered committed entries are applied
/// before the first request is taken), not only once the node has led again.
#[test]
fn a_raw_read_right_after_a_restart_sees_every_acknowledged_write() {
    let mut node = Node::started();
    let mut client = node.client();
    let keys: Vec<String> = (0..64).map(|i| format!("key-{i:02}")).collect();
    for key in &keys {
        client.put(key.as_bytes(), b"v", Mode::Raw).unwrap();
    }
    drop(client);
    for restart in 0..3 {
        node.stop_cleanly();
        node.spawn();
        // The first answer to a raw read after the restart, whatever it is, must hold the
        // write (no waiting for the node to be ready first).
        let options = tessera_node::client::ClientOptions {
            request_timeout: std::time::Duration::from_millis(500),
            attempts_max: 1,
            ..Default::default()
        };
        let key = &keys[(restart * 21) % keys.len()];
        let found = common::wait_for("a raw read to be answered", common::START_TIMEOUT, || {
            let mut client = Client::connect(&node.client_addr(0), options.clone()).ok()?;
            client.get(key.as_bytes(), Mode::Raw).ok()
        });
        assert!(
            found.is_some(),
            "restart {restart}: {key} was acknowledged but a raw read missed it"
        );
        node.wait_ready();
    }
}
