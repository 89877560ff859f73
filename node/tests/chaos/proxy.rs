//! A fault-injecting TCP proxy on every directed link between the cluster's nodes.
//!
//! Node `i` dials node `j`'s peer ports through the link `i → j` (its config's
//! `peer_dial_addrs` point there). Tessera's peer connections carry Raft traffic one way only
//! (each node dials its own connection to every peer it sends to), so blocking the link
//! `i → j` silences `i` towards `j` and nothing else: partitions can be one-way.
//!
//! A blocked link is a black hole, like a network that drops packets: connections are still
//! accepted, and every byte read from either side of a connection that was open while the
//! link was blocked is discarded. When the link heals, those connections are closed (their
//! byte streams have holes, so they cannot carry frames any more) and the sender reconnects.
//!
//! ```text
//!  node i core c ──► link (i→j) listener, port base+c ──► node j peer port + c
//!                    pump i→j, pump j→i (threads), both discard while poisoned
//! ```

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::common::{free_ports, Ports};

/// How often an idle accept loop looks for a new connection or a stop request.
const ACCEPT_POLL: Duration = Duration::from_millis(2);

/// One proxied connection: the two sockets (clones, to shut them down) and whether bytes
/// were dropped from it.
struct Connection {
    sockets: [TcpStream; 2],
    poisoned: Arc<AtomicBool>,
    finished: Arc<AtomicBool>,
}

impl Connection {
    fn close(&self) {
        for socket in &self.sockets {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

/// The shared state of one directed link.
#[derive(Default)]
struct LinkState {
    blocked: AtomicBool,
    stop: AtomicBool,
    connections: Mutex<Vec<Connection>>,
}

/// One directed link `from → to`: `cores` listening ports mirroring `to`'s peer ports.
struct Link {
    ports: Ports,
    state: Arc<LinkState>,
    acceptors: Vec<JoinHandle<()>>,
}

/// Every directed link between `nodes` nodes, by (from, to) index.
pub struct Mesh {
    links: BTreeMap<(usize, usize), Link>,
}

impl Mesh {
    /// Starts a link for every ordered pair of distinct nodes; `peer_ports[j]` is node `j`'s
    /// first peer port.
    pub fn start(peer_ports: &[u16], cores: usize) -> Mesh {
        let mut links = BTreeMap::new();
        for from in 0..peer_ports.len() {
            for (to, target) in peer_ports.iter().enumerate() {
                if from != to {
                    links.insert((from, to), Link::start(*target, cores));
                }
            }
        }
        Mesh { links }
    }

    /// The first port of the link `from → to` (core `c` at `port + c`).
    pub fn port(&self, from: usize, to: usize) -> u16 {
        self.links[&(from, to)].ports.peer
    }

    /// Blocks or heals the link `from → to`.
    pub fn set_blocked(&self, from: usize, to: usize, blocked: bool) {
        let link = &self.links[&(from, to)];
        link.state.blocked.store(blocked, Ordering::SeqCst);
        if !blocked {
            // Close what lost bytes; the senders reconnect.
            let mut connections = lock(&link.state.connections);
            connections.retain(|c| {
                let keep = !c.poisoned.load(Ordering::SeqCst) && !c.finished.load(Ordering::SeqCst);
                if !keep {
                    c.close();
                }
                keep
            });
        }
    }

    /// Blocks every link between a node of `side_a` and one of `side_b`, both ways.
    pub fn partition(&self, side_a: &[usize], side_b: &[usize]) {
        for a in side_a {
            for b in side_b {
                self.set_blocked(*a, *b, true);
                self.set_blocked(*b, *a, true);
            }
        }
    }

    /// Heals every link.
    pub fn heal(&self) {
        for (from, to) in self.links.keys() {
            self.set_blocked(*from, *to, false);
        }
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for link in self.links.values_mut() {
            link.state.stop.store(true, Ordering::SeqCst);
            for connection in lock(&link.state.connections).iter() {
                connection.close();
            }
            for acceptor in link.acceptors.drain(..) {
                let _ = acceptor.join();
            }
        }
    }
}

impl Link {
    fn start(target_peer_port: u16, cores: usize) -> Link {
        let ports = free_ports(cores);
        let state = Arc::new(LinkState::default());
        let acceptors = (0..cores)
            .map(|core| {
                let listener = TcpListener::bind(("127.0.0.1", ports.peer + core as u16))
                    .expect("bind a proxy port");
                listener
                    .set_nonblocking(true)
                    .expect("nonblocking listener");
                let target = target_peer_port + core as u16;
                let state = state.clone();
                std::thread::Builder::new()
                    .name(format!("proxy-accept-{}", ports.peer + core as u16))
                    .spawn(move || accept_loop(&listener, target, &state))
                    .expect("spawn proxy thread")
            })
            .collect();
        Link {
            ports,
            state,
            acceptors,
        }
    }
}

fn accept_loop(listener: &TcpListener, target: u16, state: &Arc<LinkState>) {
    while !state.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((inbound, _)) => proxy_connection(inbound, target, state),
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(ACCEPT_POLL);
            }
            Err(error) => panic!("proxy accept failed: {error}"),
        }
    }
}

/// Connects `inbound` to the target port and starts the two pumps; drops `inbound` (the
/// sender sees a closed connection) when the target is down.
fn proxy_connection(inbound: TcpStream, target: u16, state: &Arc<LinkState>) {
    inbound.set_nonblocking(false).expect("blocking socket");
    let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)) else {
        return;
    };
    inbound.set_nodelay(true).ok();
    outbound.set_nodelay(true).ok();
    let poisoned = Arc::new(AtomicBool::new(state.blocked.load(Ordering::SeqCst)));
    let finished = Arc::new(AtomicBool::new(false));
    let clone = |s: &TcpStream| s.try_clone().expect("clone socket");
    let connection = Connection {
        sockets: [clone(&inbound), clone(&outbound)],
        poisoned: poisoned.clone(),
        finished: finished.clone(),
    };
    let mut connections = lock(&state.connections);
    connections.retain(|c| !c.finished.load(Ordering::SeqCst));
    connections.push(connection);
    drop(connections);
    let pumps = [
        (clone(&inbound), clone(&outbound)),
        (clone(&outbound), clone(&inbound)),
    ];
    for (source, sink) in pumps {
        let (state, poisoned, finished) = (state.clone(), poisoned.clone(), finished.clone());
        std::thread::Builder::new()
            .name("proxy-pump".into())
            .spawn(move || {
                pump(source, sink, &state, &poisoned);
                finished.store(true, Ordering::SeqCst);
            })
            .expect("spawn proxy pump");
    }
}

/// Copies `source` to `sink` until either side closes; discards everything once the link
/// was blocked during this connection's life.
fn pump(mut source: TcpStream, mut sink: TcpStream, state: &LinkState, poisoned: &AtomicBool) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match source.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if state.blocked.load(Ordering::SeqCst) {
            poisoned.store(true, Ordering::SeqCst);
        }
        if poisoned.load(Ordering::SeqCst) {
            continue;
        }
        if sink.write_all(&buffer[..read]).is_err() {
            break;
        }
    }
    let _ = source.shutdown(Shutdown::Both);
    let _ = sink.shutdown(Shutdown::Both);
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
