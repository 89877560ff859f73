//! One connection's event loop: keeps up to `in_flight` requests outstanding on non-blocking
//! sockets (one per leader address it needs), matches answers to requests by `request_id`
//! (they may come out of order), follows NotLeader hints, and records latency from each
//! request's intended send time (see `schedule`).
//!
//! Each iteration:
//! 1. send every request that is due and fits in the window (and retries whose pause ended);
//! 2. flush what the sockets accept;
//! 3. stop when the schedule is over and nothing is outstanding (or the drain time ran out);
//! 4. fail requests older than the timeout;
//! 5. wait in `ppoll` until a socket is readable (or writable with output pending) or the next
//!    request falls due;
//! 6. read and handle every complete answer.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_transport::client::{ClientError, ClientOp, ClientReply, ClientRequest, Mode};
use tessera_transport::{
    decode_client_response, encode_client_request, encode_frame, DecodeLimits, FrameDecoder,
    FrameType,
};

use crate::routing::Routing;
use crate::schedule::{latency_ns, Pacer};
use crate::stats::Stats;
use crate::workload::{key_bytes, KeyChooser, OpKind, OpMix, Rng};

/// What every connection sends; shared read-only.
pub struct Workload {
    pub mode: Mode,
    pub namespace: String,
    pub mix: OpMix,
    pub keys: KeyChooser,
    /// Keys are taken in order `0, 1, 2, ...` (modulo the key space) instead of drawn: used to
    /// load every key once before a read benchmark.
    pub sequential: bool,
    pub value: Vec<u8>,
    /// Requests outstanding per connection.
    pub in_flight: usize,
    /// Connections in the run (the stride of sequential keys).
    pub connections: usize,
    /// A request unanswered this long fails as `timeout`.
    pub timeout_ns: u64,
    /// Only requests intended at or after this moment are recorded (the end of the warm-up).
    pub measure_from_ns: u64,
    /// After the schedule ends, wait this long for outstanding answers.
    pub drain_ns: u64,
    /// Most sends of one request (refusals such as NotLeader are retried).
    pub attempts_max: u32,
}

/// Counters the progress line reads while the connections run.
pub struct Progress {
    pub start: Instant,
    pub completed: AtomicU64,
    pub errors: AtomicU64,
    /// Set on SIGINT/SIGTERM: stop sending, collect what is outstanding, report.
    pub stop: Arc<AtomicBool>,
}

impl Progress {
    pub fn new(stop: Arc<AtomicBool>) -> Progress {
        Progress {
            start: Instant::now(),
            completed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            stop,
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

/// What one connection measured, and when its last recorded request completed.
pub struct ConnectionResult {
    pub stats: Stats,
    pub last_recorded_ns: u64,
}

struct Socket {
    addr: String,
    stream: TcpStream,
    decoder: FrameDecoder,
    output: Vec<u8>,
}

struct Pending {
    op: OpKind,
    key_index: u64,
    intended_ns: u64,
    sent_ns: u64,
    attempts: u32,
    socket: usize,
}

struct Driver<'a> {
    workload: &'a Workload,
    progress: &'a Progress,
    routing: Routing,
    rng: Rng,
    sockets: Vec<Option<Socket>>,
    pending: HashMap<u64, Pending>,
    /// Refused requests waiting to be sent again, with the moment they may go.
    retries: Vec<(u64, Pending)>,
    cas_versions: HashMap<u64, u64>,
    next_request_id: u64,
    next_sequential_key: u64,
    stats: Stats,
    last_recorded_ns: u64,
    limits: DecodeLimits,
}

/// Runs one connection until its schedule is over and every answer is in (or timed out).
pub fn run_connection(
    index: usize,
    workload: &Workload,
    progress: &Progress,
    routing: Routing,
    mut pacer: Pacer,
    seed: u64,
) -> ConnectionResult {
    let mut driver = Driver {
        workload,
        progress,
        routing,
        rng: Rng::new(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        sockets: Vec::new(),
        pending: HashMap::new(),
        retries: Vec::new(),
        cas_versions: HashMap::new(),
        next_request_id: 1,
        next_sequential_key: index as u64,
        stats: Stats::new(),
        last_recorded_ns: 0,
        limits: DecodeLimits::default(),
    };
    driver.run(&mut pacer);
    ConnectionResult {
        stats: driver.stats,
        last_recorded_ns: driver.last_recorded_ns,
    }
}

impl Driver<'_> {
    fn run(&mut self, pacer: &mut Pacer) {
        let mut drain_deadline = None;
        let mut next_timeout_check = 0;
        loop {
            let now = self.progress.now_ns();
            if self.progress.stop.load(Ordering::Relaxed) {
                *pacer = Pacer::closed_loop(0, Some(0));
            }
            self.send_due(pacer, now);
            self.flush();
            if pacer.is_over(now) {
                if self.pending.is_empty() && self.retries.is_empty() {
                    return;
                }
                let deadline = *drain_deadline.get_or_insert(now + self.workload.drain_ns);
                if now >= deadline {
                    self.fail_all_outstanding("unanswered");
                    return;
                }
            }
            if now >= next_timeout_check {
                self.fail_timed_out(now);
                next_timeout_check = now + 10_000_000;
            }
            let wake_ns = self.next_wake_ns(pacer, now);
            self.wait(wake_ns.saturating_sub(now));
            self.read_all();
        }
    }

    fn outstanding(&self) -> usize {
        self.pending.len() + self.retries.len()
    }

    /// Sends due retries, then new requests while the window has room.
    fn send_due(&mut self, pacer: &mut Pacer, now: u64) {
        if !self.retries.is_empty() {
            let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retries)
                .into_iter()
                .partition(|(at, _)| *at <= now);
            self.retries = waiting;
            for (_, pending) in ready {
                self.send(pending, now);
            }
        }
        while self.outstanding() < self.workload.in_flight {
            let Some(intended_ns) = pacer.take_due(now) else {
                break;
            };
            let key_index = if self.workload.sequential {
                let key = self.next_sequential_key;
                // Connections take interleaved keys: connection i of n loads i, i + n, ...
                self.next_sequential_key += self.workload.connections as u64;
                key % self.workload.keys.key_count()
            } else {
                self.workload.keys.next(&mut self.rng)
            };
            let op = if self.workload.sequential {
                OpKind::Write
            } else {
                self.workload.mix.next(&mut self.rng)
            };
            let pending = Pending {
                op,
                key_index,
                intended_ns,
                sent_ns: now,
                attempts: 0,
                socket: 0,
            };
            self.send(pending, now);
        }
    }

    /// Encodes and queues one request on the socket for its Region's leader.
    fn send(&mut self, mut pending: Pending, now: u64) {
        pending.attempts += 1;
        if pending.attempts > self.workload.attempts_max {
            self.fail(&pending, "retries_exhausted");
            return;
        }
        let key = key_bytes(pending.key_index);
        let Some(target) = self.routing.target(&key, pending.attempts) else {
            self.fail(&pending, "no_route");
            return;
        };
        let Some(socket) = self.socket_for(&target.addr) else {
            self.fail(&pending, "connect");
            return;
        };
        let workload = self.workload;
        let (mode, op) = match pending.op {
            OpKind::Read => (workload.mode, ClientOp::Get { key }),
            OpKind::Write => (
                workload.mode,
                ClientOp::Put {
                    key,
                    value: workload.value.clone(),
                },
            ),
            OpKind::Cas => (
                Mode::Strong,
                ClientOp::Cas {
                    key,
                    expected_version: self
                        .cas_versions
                        .get(&pending.key_index)
                        .copied()
                        .unwrap_or(0),
                    value: workload.value.clone(),
                },
            ),
        };
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let request = ClientRequest {
            request_id,
            namespace: workload.namespace.clone(),
            mode,
            region_id: target.region_id,
            epoch: target.epoch,
            op,
        };
        let frame = encode_frame(FrameType::ClientRequest, &encode_client_request(&request));
        let slot = self.sockets[socket]
            .as_mut()
            .expect("socket_for returns a live socket");
        slot.output.extend_from_slice(&frame);
        pending.socket = socket;
        pending.sent_ns = now;
        self.pending.insert(request_id, pending);
    }

    /// The index of a live socket to `addr`, connecting if needed.
    fn socket_for(&mut self, addr: &str) -> Option<usize> {
        if let Some(i) = self
            .sockets
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.addr == addr))
        {
            return Some(i);
        }
        let socket_addr: SocketAddr = addr.to_socket_addrs().ok()?.next()?;
        let stream = match TcpStream::connect_timeout(&socket_addr, Duration::from_secs(2)) {
            Ok(stream) => stream,
            Err(_) => {
                // Do not spin on a node that is down.
                std::thread::sleep(Duration::from_millis(10));
                return None;
            }
        };
        stream.set_nodelay(true).ok()?;
        stream.set_nonblocking(true).ok()?;
        let socket = Socket {
            addr: addr.to_string(),
            stream,
            decoder: FrameDecoder::new(self.limits.frame_bytes_max),
            output: Vec::new(),
        };
        match self.sockets.iter().position(Option::is_none) {
            Some(free) => {
                self.sockets[free] = Some(socket);
                Some(free)
            }
            None => {
                self.sockets.push(Some(socket));
                Some(self.sockets.len() - 1)
            }
        }
    }

    fn flush(&mut self) {
        for i in 0..self.sockets.len() {
            let Some(socket) = self.sockets[i].as_mut() else {
                continue;
            };
            let mut written = 0;
            let mut broken = false;
            while written < socket.output.len() {
                match socket.stream.write(&socket.output[written..]) {
                    Ok(0) => {
                        broken = true;
                        break;
                    }
                    Ok(n) => written += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        broken = true;
                        break;
                    }
                }
            }
            socket.output.drain(..written);
            if broken {
                self.drop_socket(i, "connection");
            }
        }
    }

    /// When to wake at the latest: the next request due (if the window has room), the next
    /// retry, or a timeout check.
    fn next_wake_ns(&self, pacer: &Pacer, now: u64) -> u64 {
        let mut wake = now + 10_000_000;
        if self.outstanding() < self.workload.in_flight {
            if let Some(due) = pacer.next_due_ns() {
                wake = wake.min(due);
            }
        }
        for (at, _) in &self.retries {
            wake = wake.min(*at);
        }
        wake
    }

    fn wait(&mut self, timeout_ns: u64) {
        let mut fds: Vec<libc::pollfd> = self
            .sockets
            .iter()
            .flatten()
            .map(|s| libc::pollfd {
                fd: s.stream.as_raw_fd(),
                events: libc::POLLIN
                    | if s.output.is_empty() {
                        0
                    } else {
                        libc::POLLOUT
                    },
                revents: 0,
            })
            .collect();
        let timeout = libc::timespec {
            tv_sec: (timeout_ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
        };
        if fds.is_empty() {
            std::thread::sleep(Duration::from_nanos(timeout_ns));
            return;
        }
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs that outlives the call,
        // and `timeout` a valid timespec; a null sigmask leaves the signal mask alone.
        unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                &timeout,
                std::ptr::null(),
            );
        }
    }

    /// Reads whatever each socket has and handles every complete answer.
    fn read_all(&mut self) {
        let mut buffer = [0u8; 64 * 1024];
        for i in 0..self.sockets.len() {
            let mut responses = Vec::new();
            let mut broken = false;
            if let Some(socket) = self.sockets[i].as_mut() {
                loop {
                    match socket.stream.read(&mut buffer) {
                        Ok(0) => {
                            broken = true;
                            break;
                        }
                        Ok(n) => {
                            if socket.decoder.push(&buffer[..n]).is_err() {
                                broken = true;
                                break;
                            }
                            while let Ok(Some(frame)) = socket.decoder.next_frame() {
                                match decode_client_response(&frame.payload, &self.limits) {
                                    Ok(response) => responses.push(response),
                                    Err(_) => broken = true,
                                }
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => {
                            broken = true;
                            break;
                        }
                    }
                }
            }
            let now = self.progress.now_ns();
            for response in responses {
                if let Some(pending) = self.pending.remove(&response.request_id) {
                    self.on_response(pending, response.result, now);
                }
            }
            if broken {
                self.drop_socket(i, "connection");
            }
        }
    }

    fn on_response(
        &mut self,
        pending: Pending,
        result: Result<ClientReply, ClientError>,
        now: u64,
    ) {
        match result {
            Ok(reply) => {
                match reply {
                    ClientReply::Written { version } if pending.op == OpKind::Cas => {
                        self.cas_versions.insert(pending.key_index, version);
                    }
                    ClientReply::Value { value: Some(v) } if self.workload.mix.cas_percent > 0 => {
                        self.cas_versions.insert(pending.key_index, v.version);
                    }
                    _ => {}
                }
                self.complete(&pending, now);
            }
            Err(ClientError::VersionMismatch { current_version }) => {
                // The CAS was served; another connection won the race.
                self.cas_versions.insert(pending.key_index, current_version);
                if pending.intended_ns >= self.workload.measure_from_ns {
                    self.stats.cas_mismatches += 1;
                }
                self.complete(&pending, now);
            }
            Err(ClientError::NotLeader { leader, .. }) => {
                let key = key_bytes(pending.key_index);
                if let Some(target) = self.routing.target(&key, 0) {
                    self.routing.set_leader(target.region_id, leader);
                }
                self.retry(pending, "not_leader", now, leader.is_none());
            }
            Err(
                ClientError::StaleEpoch { .. }
                | ClientError::KeyNotInRegion { .. }
                | ClientError::RegionNotFound { .. }
                | ClientError::WrongCore { .. },
            ) => {
                let _ = self.routing.refresh();
                self.retry(pending, "stale_route", now, false);
            }
            Err(ClientError::ServerBusy) => self.retry(pending, "server_busy", now, true),
            Err(ClientError::InvalidRequest { .. }) => self.fail(&pending, "invalid_request"),
            Err(ClientError::Internal { .. }) => self.fail(&pending, "internal"),
            // Not sent again: it may have taken effect.
            Err(ClientError::OutcomeUnknown { .. }) => self.fail(&pending, "outcome_unknown"),
        }
    }

    /// Sends a refused request again, at once or after a short pause (no leader known yet,
    /// or the server is busy); its latency still counts from the first intended time.
    fn retry(&mut self, pending: Pending, kind: &'static str, now: u64, pause: bool) {
        self.stats.count_retry(kind);
        let at = if pause { now + 10_000_000 } else { now };
        self.retries.push((at, pending));
    }

    fn complete(&mut self, pending: &Pending, now: u64) {
        self.progress.completed.fetch_add(1, Ordering::Relaxed);
        if pending.intended_ns >= self.workload.measure_from_ns {
            self.stats
                .record_ns(pending.op, latency_ns(pending.intended_ns, now));
            let from = self.workload.measure_from_ns;
            self.stats
                .timeline
                .record(pending.intended_ns - from, now.saturating_sub(from));
            self.last_recorded_ns = self.last_recorded_ns.max(now);
        }
    }

    fn fail(&mut self, _pending: &Pending, kind: &'static str) {
        self.progress.errors.fetch_add(1, Ordering::Relaxed);
        self.stats.count_error(kind);
    }

    fn fail_timed_out(&mut self, now: u64) {
        let timeout = self.workload.timeout_ns;
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_sub(p.sent_ns) > timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(pending) = self.pending.remove(&id) {
                self.fail(&pending, "timeout");
            }
        }
    }

    fn fail_all_outstanding(&mut self, kind: &'static str) {
        let pending: Vec<Pending> = self.pending.drain().map(|(_, p)| p).collect();
        let retries: Vec<Pending> = self.retries.drain(..).map(|(_, p)| p).collect();
        for p in pending.iter().chain(&retries) {
            self.fail(p, kind);
        }
    }

    /// Closes a broken socket; its outstanding requests fail with `kind`.
    fn drop_socket(&mut self, index: usize, kind: &'static str) {
        self.sockets[index] = None;
        let lost: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.socket == index)
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            if let Some(pending) = self.pending.remove(&id) {
                self.fail(&pending, kind);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::sync::atomic::AtomicU32;

    use tessera_core::{NodeId, RegionId};
    use tessera_transport::client::{
        ClientResponse, RegionDescriptor, RegionEpoch, StoreDescriptor,
    };
    use tessera_transport::{decode_client_request, encode_client_response};

    use super::*;
    use crate::workload::KeyDistribution;

    /// A node stand-in on loopback: one Region, answers each read's worth of requests in
    /// reverse order (so answers arrive out of order) and refuses the very first write with
    /// NotLeader pointing at itself. Serves `connections` connections, then stops.
    fn fake_node(connections: usize, writes_seen: Arc<AtomicU32>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let own = addr.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(connections) {
                let (own, writes_seen) = (own.clone(), writes_seen.clone());
                std::thread::spawn(move || serve(stream.unwrap(), &own, &writes_seen));
            }
        });
        addr
    }

    fn serve(mut stream: TcpStream, own: &str, writes_seen: &AtomicU32) {
        let limits = DecodeLimits::default();
        let mut decoder = FrameDecoder::new(limits.frame_bytes_max);
        let mut buffer = [0u8; 64 * 1024];
        loop {
            let n = match stream.read(&mut buffer) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            decoder.push(&buffer[..n]).unwrap();
            let mut answers = Vec::new();
            while let Some(frame) = decoder.next_frame().unwrap() {
                let request = decode_client_request(&frame.payload, &limits).unwrap();
                let result = match request.op {
                    ClientOp::Regions => Ok(ClientReply::Regions {
                        regions: vec![RegionDescriptor {
                            region_id: RegionId(1),
                            start_key: Vec::new(),
                            end_key: Vec::new(),
                            epoch: RegionEpoch::default(),
                            peers: vec![NodeId(1)],
                            leader: Some(NodeId(1)),
                        }],
                        stores: vec![StoreDescriptor {
                            node_id: NodeId(1),
                            client_addrs: vec![own.to_string()],
                            cores: 1,
                            peer_addrs: Vec::new(),
                        }],
                    }),
                    ClientOp::Put { .. } if writes_seen.fetch_add(1, Ordering::Relaxed) == 0 => {
                        Err(ClientError::NotLeader {
                            leader: Some(NodeId(1)),
                            leader_addr: Some(own.to_string()),
                        })
                    }
                    _ => Ok(ClientReply::Written { version: 1 }),
                };
                answers.push(ClientResponse {
                    request_id: request.request_id,
                    result,
                });
            }
            for answer in answers.iter().rev() {
                let frame =
                    encode_frame(FrameType::ClientResponse, &encode_client_response(answer));
                stream.write_all(&frame).unwrap();
            }
        }
    }

    #[test]
    fn pipelined_connection_matches_out_of_order_answers_and_follows_not_leader() {
        let writes_seen = Arc::new(AtomicU32::new(0));
        let addr = fake_node(2, writes_seen.clone());
        let routing = Routing::load(&addr).unwrap();
        let workload = Workload {
            mode: Mode::Strong,
            namespace: String::new(),
            mix: OpMix::parse("0:100:0").unwrap(),
            keys: KeyChooser::new(1000, KeyDistribution::Uniform),
            sequential: false,
            value: vec![b'v'; 256],
            in_flight: 8,
            connections: 1,
            timeout_ns: 10_000_000_000,
            measure_from_ns: 0,
            drain_ns: 10_000_000_000,
            attempts_max: 5,
        };
        let progress = Progress::new(Arc::new(AtomicBool::new(false)));
        let pacer = Pacer::closed_loop(u64::MAX, Some(200));
        let result = run_connection(0, &workload, &progress, routing, pacer, 1);
        let stats = result.stats;
        assert_eq!(stats.latency_us[OpKind::Write.index()].len(), 200);
        assert!(stats.errors.is_empty(), "{:?}", stats.errors);
        assert_eq!(stats.retries.get("not_leader"), Some(&1));
        assert_eq!(
            writes_seen.load(Ordering::Relaxed),
            201,
            "one refused, then resent"
        );
        assert_eq!(progress.completed.load(Ordering::Relaxed), 200);
    }
}
