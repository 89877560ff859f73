//! Two glommio executors on two threads exchange Raft batches over loopback TCP, while other
//! connections send garbage, a foreign cluster's Hello, a 4 GiB length prefix and valid
//! frames with out-of-range fields: each bad connection is closed, the good peer keeps going.
//!
//! Every wait is on a condition with a deadline; no test sleeps for a fixed time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use tessera_core::{
    ConfState, Entry, EntryKind, LogIndex, Message, MessageBody, NodeId, Payload, RegionId,
    Snapshot, SnapshotMetadata, Term,
};
use tessera_transport::net::{self, PeerSender, TransportConfig};
use tessera_transport::{
    encode_frame, encode_hello, encode_raft_batch, ClusterId, CoreId, FrameType, Hello, HelloRole,
    RaftBatchHeader, PROTOCOL_VERSION,
};

const CLUSTER: ClusterId = ClusterId(7);
const DEADLINE: Duration = Duration::from_secs(15);

type Received = (RaftBatchHeader, Vec<(RegionId, Message)>);

/// Logs to the test's output (shown on failure, or with `--nocapture`).
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "tessera_transport=warn".into()),
        )
        .with_test_writer()
        .try_init();
}

fn config(node: u64) -> TransportConfig {
    let mut config = TransportConfig::new(CLUSTER, NodeId(node), CoreId(0));
    config.reconnect_backoff_initial = Duration::from_millis(5);
    config.reconnect_backoff_max = Duration::from_millis(50);
    config.handshake_timeout = Duration::from_secs(5);
    config
}

/// Runs `body` on a new single-threaded glommio executor with a small io_memory (the machine's
/// locked-memory limit is 8 MiB), until `stop` is set.
fn spawn_executor<F, Fut>(name: &str, stop: Arc<AtomicBool>, body: F) -> std::thread::JoinHandle<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let handle = LocalExecutorBuilder::new(Placement::Unbound)
        .name(name)
        .io_memory(1 << 20)
        .spawn(move || async move {
            glommio::spawn_local(body()).detach();
            while !stop.load(Ordering::Relaxed) {
                glommio::timer::sleep(Duration::from_millis(2)).await;
            }
        })
        .expect("start executor");
    std::thread::spawn(move || handle.join().expect("executor thread"))
}

/// Node 1's core 0: listens on `addr` and forwards every batch to `batches`.
fn start_receiver(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    bound: mpsc::Sender<SocketAddr>,
    batches: mpsc::Sender<Received>,
) -> std::thread::JoinHandle<()> {
    spawn_executor("receiver", stop, move || async move {
        let listener = net::bind(addr).expect("bind");
        bound.send(net::local_addr(&listener).unwrap()).unwrap();
        let handler: net::RaftBatchHandler = Rc::new(move |header, messages| {
            let _ = batches.send((header, messages));
        });
        net::serve_peers(listener, Rc::new(config(1)), handler).await;
    })
}

/// Node 2's core 0: queues each set of messages `rounds` yields for node 1 in one go, and
/// reports its connect failures on `failures`.
fn start_sender(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    rounds: mpsc::Receiver<Vec<(RegionId, Message)>>,
    failures: mpsc::Sender<u64>,
) -> std::thread::JoinHandle<()> {
    spawn_executor("sender", stop, move || async move {
        let peer = PeerSender::spawn(Rc::new(config(2)), NodeId(1), CoreId(0), addr);
        loop {
            if let Ok(round) = rounds.try_recv() {
                for (region, message) in round {
                    peer.send(region, message).expect("queue has room");
                }
            }
            let _ = failures.send(peer.stats().connect_failures);
            glommio::timer::sleep(Duration::from_millis(2)).await;
        }
    })
}

/// 100 messages of every shape, for Regions `round * 1000 + 1..`.
fn round_messages(round: u64) -> Vec<(RegionId, Message)> {
    (1..=100u64)
        .map(|i| {
            let body = match i % 4 {
                0 => MessageBody::Heartbeat {
                    commit: LogIndex(i),
                    read_context: round,
                },
                1 => MessageBody::AppendEntries {
                    prev_log_index: LogIndex(i),
                    prev_log_term: Term(1),
                    entries: vec![Entry {
                        term: Term(2),
                        index: LogIndex(i + 1),
                        kind: EntryKind::Normal,
                        data: Payload::from(vec![i as u8; 300]),
                    }],
                    leader_commit: LogIndex(i),
                },
                2 => MessageBody::InstallSnapshot {
                    snapshot: Snapshot {
                        metadata: SnapshotMetadata {
                            index: LogIndex(i),
                            term: Term(2),
                            conf_state: ConfState::with_voters([NodeId(1), NodeId(2)]),
                        },
                        data: Payload::from(vec![7; 1000]),
                    },
                },
                _ => MessageBody::TimeoutNow,
            };
            let message = Message {
                from: NodeId(2),
                to: NodeId(1),
                term: Term(3),
                body,
            };
            (RegionId(round * 1000 + i), message)
        })
        .collect()
}

/// Collects batches until `count` messages arrived; returns them and the number of frames.
fn receive(batches: &mpsc::Receiver<Received>, count: usize) -> (Vec<(RegionId, Message)>, usize) {
    let deadline = Instant::now() + DEADLINE;
    let (mut messages, mut frames) = (Vec::new(), 0);
    while messages.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        let (header, batch) = batches
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("only {} of {count} messages arrived", messages.len()));
        assert_eq!((header.from_node, header.to_node), (NodeId(2), NodeId(1)));
        frames += 1;
        messages.extend(batch);
    }
    (messages, frames)
}

/// Writes `bytes` on a fresh connection, then reads until the server closes it.
fn assert_closed_after(addr: SocketAddr, bytes: &[u8], what: &str) {
    let mut stream = StdTcpStream::connect(addr).expect("connect");
    let _ = stream.write_all(bytes);
    let deadline = Instant::now() + DEADLINE;
    let mut buffer = [0u8; 256];
    loop {
        assert!(Instant::now() < deadline, "{what}: connection still open");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(err) if err.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(_) => return,
        }
    }
}

fn hello_frame(cluster: u64, node: u64) -> Vec<u8> {
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        cluster_id: ClusterId(cluster),
        role: HelloRole::Peer,
        node_id: NodeId(node),
        core: CoreId(0),
        to_node: NodeId(1),
        to_core: CoreId(0),
    };
    encode_frame(FrameType::Hello, &encode_hello(&hello))
}

fn send_bad_inputs(addr: SocketAddr) {
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert_closed_after(addr, &garbage, "random bytes");
    assert_closed_after(addr, &hello_frame(8, 3), "hello from another cluster");
    let mut huge = hello_frame(7, 3);
    huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, FrameType::RaftBatch.code()]);
    assert_closed_after(addr, &huge, "4 GiB length prefix");
    let mut truncated = hello_frame(7, 3);
    truncated.extend_from_slice(&encode_frame(
        FrameType::RaftBatch,
        &[1, 2, 3, 4, 5, 6, 7, 8, 9],
    ));
    assert_closed_after(addr, &truncated, "unverifiable payload");
    let header = RaftBatchHeader {
        cluster_id: CLUSTER,
        from_node: NodeId(3),
        from_core: CoreId(0),
        to_node: NodeId(1),
        to_core: CoreId(0),
    };
    let mut spoof = round_messages(9)[0].clone();
    spoof.1.from = NodeId(3);
    spoof.0 = RegionId(0);
    let mut out_of_range = hello_frame(7, 3);
    out_of_range.extend_from_slice(&encode_frame(
        FrameType::RaftBatch,
        &encode_raft_batch(&header, &[spoof]),
    ));
    assert_closed_after(addr, &out_of_range, "region id 0");
}

/// A receiver (node 1) and a sender (node 2) on loopback, each on its own executor.
struct Pair {
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    rounds: mpsc::Sender<Vec<(RegionId, Message)>>,
    batches: mpsc::Receiver<Received>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Pair {
    fn start() -> Pair {
        init_logs();
        let stop = Arc::new(AtomicBool::new(false));
        let (bound_tx, bound_rx) = mpsc::channel();
        let (batches_tx, batches) = mpsc::channel();
        let receiver = start_receiver(
            "127.0.0.1:0".parse().unwrap(),
            stop.clone(),
            bound_tx,
            batches_tx,
        );
        let addr = bound_rx.recv_timeout(DEADLINE).expect("receiver bound");
        let (rounds, rounds_rx) = mpsc::channel();
        let (failures_tx, _failures_rx) = mpsc::channel();
        let sender = start_sender(addr, stop.clone(), rounds_rx, failures_tx);
        Pair {
            stop,
            addr,
            rounds,
            batches,
            threads: vec![receiver, sender],
        }
    }

    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
    }
}

#[test]
fn peers_exchange_batches_and_bad_connections_are_closed_without_harm() {
    let pair = Pair::start();
    let (addr, rounds_tx, batches_rx) = (pair.addr, &pair.rounds, &pair.batches);

    rounds_tx.send(round_messages(1)).unwrap();
    let (messages, frames) = receive(batches_rx, 100);
    assert_eq!(messages, round_messages(1));
    assert!(
        frames <= 2,
        "100 messages queued at once took {frames} frames"
    );

    send_bad_inputs(addr);

    rounds_tx.send(round_messages(2)).unwrap();
    let (messages, _) = receive(batches_rx, 100);
    assert_eq!(messages, round_messages(2));

    pair.finish();
}

#[test]
fn sender_reconnects_with_backoff_when_the_listener_comes_late() {
    init_logs();
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (rounds_tx, rounds_rx) = mpsc::channel();
    let (failures_tx, failures_rx) = mpsc::channel();
    let sender = start_sender(addr, stop.clone(), rounds_rx, failures_tx);
    rounds_tx.send(round_messages(4)).unwrap();
    let deadline = Instant::now() + DEADLINE;
    while failures_rx.recv_timeout(DEADLINE).expect("sender alive") < 2 {
        assert!(Instant::now() < deadline, "sender never failed to connect");
    }

    let (bound_tx, bound_rx) = mpsc::channel();
    let (batches_tx, batches_rx) = mpsc::channel();
    let receiver = start_receiver(addr, stop.clone(), bound_tx, batches_tx);
    bound_rx.recv_timeout(DEADLINE).expect("receiver bound");
    let (messages, _) = receive(&batches_rx, 100);
    assert_eq!(messages, round_messages(4));

    stop.store(true, Ordering::Relaxed);
    receiver.join().unwrap();
    sender.join().unwrap();
}

/// A snapshot of 40 MiB — more than two frames' worth (`frame_bytes_max` is 16 MiB) — arrives
/// whole, as one `InstallSnapshot`, streamed in 1 MiB chunks; a heartbeat queued right after
/// it is not stuck behind it.
#[test]
fn a_snapshot_larger_than_a_frame_is_streamed_in_chunks_and_arrives_whole() {
    let pair = Pair::start();
    let (rounds_tx, batches_rx) = (&pair.rounds, &pair.batches);

    let bytes = 40 << 20;
    assert!(bytes > tessera_transport::DecodeLimits::default().frame_bytes_max as usize * 2);
    let data: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
    let snapshot = Message {
        from: NodeId(2),
        to: NodeId(1),
        term: Term(3),
        body: MessageBody::InstallSnapshot {
            snapshot: Snapshot {
                metadata: SnapshotMetadata {
                    index: LogIndex(500),
                    term: Term(3),
                    conf_state: ConfState::with_voters([NodeId(1), NodeId(2)]),
                },
                data: Payload::from(data),
            },
        },
    };
    let heartbeat = Message {
        from: NodeId(2),
        to: NodeId(1),
        term: Term(3),
        body: MessageBody::Heartbeat {
            commit: LogIndex(500),
            read_context: 0,
        },
    };
    rounds_tx
        .send(vec![
            (RegionId(1), snapshot.clone()),
            (RegionId(2), heartbeat.clone()),
        ])
        .unwrap();
    let (messages, frames) = receive(batches_rx, 2);
    assert_eq!(messages.len(), 2);
    assert_eq!(
        messages[0],
        (RegionId(2), heartbeat),
        "the heartbeat waits for no snapshot"
    );
    assert!(
        messages[1] == (RegionId(1), snapshot),
        "the reassembled snapshot differs from the one sent"
    );
    assert_eq!(frames, 2, "the handler saw the snapshot once, whole");

    pair.finish();
}
