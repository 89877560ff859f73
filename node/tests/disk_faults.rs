//! Disk faults on a real `tessera serve` process:
//!
//! - a failed fdatasync (injected with `TESSERA_TEST_WAL_FAULT`, through the WAL's real write
//!   path) stops the node with a non-zero exit and a log line saying why, and a restart finds
//!   every write that was acknowledged before it;
//! - a damaged record in the middle of a WAL stops the node at startup with a message naming
//!   segment and offset and pointing to `tessera-wal verify`.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::Node;
use tessera_node::client::{Client, ClientOptions};
use tessera_node::server::WAL_FAULT_ENV;
use tessera_transport::client::Mode;
use tessera_wal::scan::{list_segments, SegmentReader, Step};

const STOP_TIMEOUT: Duration = Duration::from_secs(60);

fn impatient_client(node: &Node) -> Option<Client> {
    let options = ClientOptions {
        request_timeout: Duration::from_secs(2),
        attempts_max: 3,
        ..ClientOptions::default()
    };
    Client::connect(&node.client_addr(0), options).ok()
}

#[test]
fn a_failed_fdatasync_stops_the_node_and_a_restart_keeps_every_acknowledged_write() {
    let mut node = Node::new();
    // Startup takes a handful of fdatasyncs per core; every write after it takes one or two.
    node.env
        .push((WAL_FAULT_ENV.to_string(), "fdatasync:40:EIO".to_string()));
    node.start();
    let mut client = impatient_client(&node).expect("connect");
    let mut acked = Vec::new();
    let mut attempt = 0u64;
    let deadline = Instant::now() + STOP_TIMEOUT;
    let status = loop {
        if let Some(status) = node.try_wait() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the node kept running after {} writes",
            acked.len()
        );
        attempt += 1;
        let key = format!("k{attempt:08}");
        if client
            .put(key.as_bytes(), key.as_bytes(), Mode::Strong)
            .is_ok()
        {
            acked.push(key);
        }
    };
    assert!(!status.success(), "exit status {status}");
    let log = node.last_log();
    for expected in [
        "TESSERA_TEST_WAL_FAULT is set",
        "core stopped on a disk error",
        "WAL append failed",
        "fdatasync",
        "Input/output error",
        "restart the node",
    ] {
        assert!(
            log.contains(expected),
            "{expected:?} not in the log:\n{log}"
        );
    }
    assert!(
        !acked.is_empty(),
        "no write was acknowledged before the fault"
    );

    node.env.clear();
    node.start();
    let mut client = node.client();
    for key in &acked {
        let value = client.get(key.as_bytes(), Mode::Strong).unwrap();
        assert_eq!(
            value.map(|v| v.value),
            Some(key.clone().into_bytes()),
            "acknowledged write {key} lost ({} acknowledged)",
            acked.len()
        );
    }
    node.stop_cleanly();
}

/// A core's WAL directory, its newest segment, and that segment's records (offset, length).
type WalRecords = (PathBuf, PathBuf, Vec<(u64, u64)>);

/// The WAL of the core whose newest segment holds the most records.
fn busiest_wal(node: &Node) -> WalRecords {
    let mut best: Option<WalRecords> = None;
    for core in 0..node.spec.cores {
        let dir = node.spec.data_dir.join(format!("core-{core}")).join("wal");
        let segment = list_segments(&dir).unwrap().pop().unwrap();
        let reader = SegmentReader::open(&segment).unwrap();
        let mut records = Vec::new();
        let mut offset = reader.first_record_offset();
        while let Step::Record(record) = reader.step(offset) {
            records.push((offset, record.len()));
            offset += record.len();
        }
        if best.as_ref().is_none_or(|b| b.2.len() < records.len()) {
            best = Some((dir, segment.path, records));
        }
    }
    best.unwrap()
}

#[test]
fn a_damaged_record_mid_log_stops_startup_with_a_pointer_to_tessera_wal_verify() {
    let mut node = Node::started();
    let mut client = node.client();
    for i in 0..20 {
        let key = format!("k{i:03}");
        client.put(key.as_bytes(), b"value", Mode::Strong).unwrap();
    }
    drop(client);
    node.stop_cleanly();

    let (wal_dir, segment, records) = busiest_wal(&node);
    assert!(records.len() >= 5, "only {} records", records.len());
    let (offset, len) = records[records.len() / 2];
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&segment)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset + len - 1).unwrap();
    file.write_all_at(&[byte[0] ^ 0x20], offset + len - 1)
        .unwrap();
    file.sync_all().unwrap();

    node.spawn();
    let status = node
        .wait_exit(STOP_TIMEOUT)
        .expect("the node must not start on a damaged WAL");
    assert!(!status.success(), "exit status {status}");
    let log = node.last_log();
    for expected in [
        "corruption in segment".to_string(),
        format!("at byte offset {offset}"),
        format!("tessera-wal verify {}", wal_dir.display()),
    ] {
        assert!(
            log.contains(&expected),
            "{expected:?} not in the log:\n{log}"
        );
    }
}
