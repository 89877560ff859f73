//! The Rust client: a blocking library that keeps the routing table (Regions and stores),
//! sends each request to the leader of the key's Region on the core that owns it, and retries
//! with the hints the server returns (NotLeader, stale epoch, wrong core, busy).
//!
//! Connections carry length-prefixed `ClientRequest` / `ClientResponse` frames (see
//! docs/protocol.md); one request is in flight per connection at a time.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use tessera_core::{NodeId, RegionId};
use tessera_transport::client::{
    ClientError as WireError, ClientOp, ClientReply, ClientRequest, KeyValue, Mode, NodeStatus,
    PdStatus, RegionDescriptor, RegionEpoch, StoreDescriptor, VersionedValue,
};
use tessera_transport::{
    decode_client_response, encode_client_request, encode_frame, DecodeLimits, FrameDecoder,
    FrameType,
};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("connection to {addr} failed: {reason}")]
    Connection { addr: String, reason: String },
    /// The server refused the request for a reason retrying will not fix.
    #[error("{0}")]
    Server(WireError),
    #[error("no region covers the key (routing table has {regions} regions)")]
    NoRegion { regions: usize },
    /// The node reset the connection with the request unread: it was not processed.
    #[error("connection to {addr} was reset before the request was read: {reason}")]
    Reset { addr: String, reason: String },
    /// A write was sent but whether it took effect is unknown: its answer never came (the
    /// connection failed or timed out after the request left), or the node answered
    /// `OutcomeUnknown` (it accepted the write but cannot tell). It may or may not take
    /// effect, now or later. The client does not retry it, since retrying a put or a
    /// compare-and-swap that did take effect would apply it twice or report a mismatch for a
    /// write that succeeded.
    #[error("outcome unknown: the write sent to {addr} may or may not have taken effect ({reason}); read the key to find out")]
    OutcomeUnknown { addr: String, reason: String },
    #[error("gave up after {attempts} attempts over {elapsed_ms} ms; last error: {last}")]
    RetriesExhausted {
        attempts: u32,
        elapsed_ms: u128,
        last: String,
    },
}

/// The outcome of a compare-and-swap or compare-and-delete that reached the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    /// It took effect; the key's new version (0 after a delete).
    Done { version: u64 },
    /// The key's version was not the expected one.
    Mismatch { current_version: u64 },
}

/// Tuning of retries and timeouts.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub namespace: String,
    /// Give up on a request after this long.
    pub request_timeout: Duration,
    /// Most attempts per request.
    pub attempts_max: u32,
    /// First backoff after a retryable error; doubles up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            namespace: String::new(),
            request_timeout: Duration::from_secs(10),
            attempts_max: 50,
            backoff_initial: Duration::from_millis(5),
            backoff_max: Duration::from_millis(200),
        }
    }
}

struct Connection {
    stream: TcpStream,
    decoder: FrameDecoder,
}

/// A client of one Tessera cluster. Not thread-safe: give each thread its own.
pub struct Client {
    seeds: Vec<SocketAddr>,
    options: ClientOptions,
    regions: Vec<RegionDescriptor>,
    stores: HashMap<NodeId, StoreDescriptor>,
    connections: HashMap<String, Connection>,
    limits: DecodeLimits,
    next_request_id: u64,
}

impl Client {
    /// Connects to any node of the cluster (`host:port` of its client port) and loads the
    /// routing table.
    ///
    /// # Errors
    /// When no seed answers.
    pub fn connect(addr: &str, options: ClientOptions) -> Result<Client, ClientError> {
        let seeds: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|source| ClientError::Connect {
                addr: addr.to_string(),
                source,
            })?
            .collect();
        let mut client = Client {
            seeds,
            options,
            regions: Vec::new(),
            stores: HashMap::new(),
            connections: HashMap::new(),
            limits: DecodeLimits::default(),
            next_request_id: 1,
        };
        client.refresh_routing()?;
        Ok(client)
    }

    /// The routing table as last loaded.
    pub fn routing(&self) -> (&[RegionDescriptor], Vec<&StoreDescriptor>) {
        (&self.regions, self.stores.values().collect())
    }

    /// Reloads the routing table from any reachable node.
    ///
    /// # Errors
    /// When no node answers.
    pub fn refresh_routing(&mut self) -> Result<(), ClientError> {
        let mut last = None;
        let mut addrs: Vec<String> = self.seeds.iter().map(|a| a.to_string()).collect();
        addrs.extend(
            self.stores
                .values()
                .filter_map(|s| s.client_addrs.first().cloned()),
        );
        for addr in addrs {
            match self.call(
                &addr,
                RegionId(0),
                RegionEpoch::default(),
                Mode::Raw,
                ClientOp::Regions,
            ) {
                Ok(Ok(ClientReply::Regions {
                    mut regions,
                    stores,
                })) => {
                    regions.sort_by(|a, b| a.start_key.cmp(&b.start_key));
                    self.regions = regions;
                    self.stores = stores.into_iter().map(|s| (s.node_id, s)).collect();
                    return Ok(());
                }
                Ok(Ok(other)) => last = Some(format!("unexpected reply {other:?}")),
                Ok(Err(error)) => last = Some(error.to_string()),
                Err(error) => last = Some(error.to_string()),
            }
        }
        Err(ClientError::Connection {
            addr: format!("{:?}", self.seeds),
            reason: last.unwrap_or_else(|| "no address".into()),
        })
    }

    /// Writes `value` unconditionally. Returns the key's new version.
    ///
    /// # Errors
    /// When the request cannot be served before the timeout.
    pub fn put(&mut self, key: &[u8], value: &[u8], mode: Mode) -> Result<u64, ClientError> {
        let op = ClientOp::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        };
        expect_written(self.execute(key, mode, op)?)
    }

    /// Reads a key: its value and version, or `None`.
    ///
    /// # Errors
    /// When the request cannot be served before the timeout.
    pub fn get(&mut self, key: &[u8], mode: Mode) -> Result<Option<VersionedValue>, ClientError> {
        match self.execute(key, mode, ClientOp::Get { key: key.to_vec() })? {
            Ok(ClientReply::Value { value }) => Ok(value),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes a key unconditionally.
    ///
    /// # Errors
    /// When the request cannot be served before the timeout.
    pub fn delete(&mut self, key: &[u8], mode: Mode) -> Result<(), ClientError> {
        expect_written(self.execute(key, mode, ClientOp::Delete { key: key.to_vec() })?).map(|_| ())
    }

    /// Writes `value` if the key's version is `expected_version` (0: must not exist).
    ///
    /// # Errors
    /// When the request cannot be served before the timeout.
    pub fn cas(
        &mut self,
        key: &[u8],
        expected_version: u64,
        value: &[u8],
    ) -> Result<CasOutcome, ClientError> {
        let op = ClientOp::Cas {
            key: key.to_vec(),
            expected_version,
            value: value.to_vec(),
        };
        cas_outcome(self.execute(key, Mode::Strong, op)?)
    }

    /// Deletes the key if its version is `expected_version`.
    ///
    /// # Errors
    /// When the request cannot be served before the timeout.
    pub fn cas_delete(
        &mut self,
        key: &[u8],
        expected_version: u64,
    ) -> Result<CasOutcome, ClientError> {
        let op = ClientOp::CasDelete {
            key: key.to_vec(),
            expected_version,
        };
        cas_outcome(self.execute(key, Mode::Strong, op)?)
    }

    /// Up to `limit` keys in `[start, end)` (empty `end`: to the end), across Regions.
    ///
    /// # Errors
    /// When a Region cannot be scanned before the timeout.
    pub fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: u32,
        mode: Mode,
    ) -> Result<Vec<KeyValue>, ClientError> {
        let mut items = Vec::new();
        let mut cursor = start.to_vec();
        while items.len() < limit as usize {
            let remaining = limit - items.len() as u32;
            let op = ClientOp::Scan {
                start: cursor.clone(),
                end: end.to_vec(),
                limit: remaining,
            };
            let region_end = self.region_for(&cursor)?.end_key.clone();
            match self.execute(&cursor, mode, op)? {
                Ok(ClientReply::Scan { items: found, more }) => {
                    items.extend(found);
                    let region_done = !more;
                    let past_end =
                        region_end.is_empty() || (!end.is_empty() && region_end.as_slice() >= end);
                    if region_done && past_end {
                        break;
                    }
                    if region_done {
                        cursor = region_end;
                    } else if let Some(last) = items.last() {
                        cursor = last.key.clone();
                        cursor.push(0);
                    }
                }
                other => return Err(unexpected(other)),
            }
        }
        Ok(items)
    }

    /// Up to `limit` keys starting with `prefix`.
    ///
    /// # Errors
    /// As `scan`.
    pub fn scan_prefix(
        &mut self,
        prefix: &[u8],
        limit: u32,
        mode: Mode,
    ) -> Result<Vec<KeyValue>, ClientError> {
        let end = crate::kv::state::prefix_successor(prefix).unwrap_or_default();
        self.scan(prefix, &end, limit, mode)
    }

    /// The status of the node at `addr` (or the first seed).
    ///
    /// # Errors
    /// When it does not answer.
    pub fn status(&mut self, addr: Option<&str>) -> Result<NodeStatus, ClientError> {
        let addr = addr.map_or_else(|| self.seeds[0].to_string(), str::to_string);
        match self.call(
            &addr,
            RegionId(0),
            RegionEpoch::default(),
            Mode::Raw,
            ClientOp::Status,
        )? {
            Ok(ClientReply::Status(status)) => Ok(status),
            other => Err(unexpected(other)),
        }
    }

    /// The placement driver's metadata, from whichever store hosts it.
    ///
    /// # Errors
    /// When no store answers as the driver.
    pub fn pd_status(&mut self) -> Result<PdStatus, ClientError> {
        match self.call_pd(RegionId(0), RegionEpoch::default(), ClientOp::PdStatus)? {
            ClientReply::Pd(status) => Ok(status),
            other => Err(unexpected(Ok(other))),
        }
    }

    /// Asks the placement driver to move `region`'s replica from store `from` (`NodeId(0)`:
    /// the driver picks) to store `to` (the operator's `tessera move`). Returns once the
    /// driver recorded the move durably; the Region's leader carries it out.
    ///
    /// # Errors
    /// When the driver refuses (unknown Region or store, a move already in progress).
    pub fn move_region(
        &mut self,
        region: RegionId,
        from: NodeId,
        to: NodeId,
    ) -> Result<(), ClientError> {
        let op = ClientOp::MoveRegion { from, to };
        match self.call_pd(region, RegionEpoch::default(), op)? {
            ClientReply::Ack => Ok(()),
            other => Err(unexpected(Ok(other))),
        }
    }

    /// Asks the placement driver to cancel the move of `region` (the operator's `tessera move
    /// REGION --cancel`). Returns the driver's account of what it did once that is durable.
    ///
    /// # Errors
    /// When the driver refuses (unknown Region, no move in progress).
    pub fn cancel_move(&mut self, region: RegionId) -> Result<String, ClientError> {
        match self.call_pd(region, RegionEpoch::default(), ClientOp::CancelMove)? {
            ClientReply::MoveStep { detail, .. } => Ok(detail),
            other => Err(unexpected(Ok(other))),
        }
    }

    /// Splits the Region holding `key` at `key` (the operator's `tessera split`): asks the
    /// placement driver for the new Region's id, then the Region's leader to split. Returns
    /// the two Regions.
    ///
    /// # Errors
    /// When the driver or the leader refuses (e.g. `key` is the Region's start already).
    pub fn split(&mut self, key: &[u8]) -> Result<Vec<RegionDescriptor>, ClientError> {
        let new_region_id = self.ask_split(key)?;
        self.split_as(key, new_region_id)
    }

    /// Asks the placement driver for the id of the Region that splitting `key`'s Region
    /// would create.
    ///
    /// # Errors
    /// When no store answers as the driver.
    pub fn ask_split(&mut self, key: &[u8]) -> Result<RegionId, ClientError> {
        let region = self.region_for(key)?.clone();
        match self.call_pd(region.region_id, region.epoch, ClientOp::AskSplit)? {
            ClientReply::SplitIds { new_region_id } => Ok(new_region_id),
            other => Err(unexpected(Ok(other))),
        }
    }

    /// Splits `key`'s Region at `key` into `new_region_id` (from `ask_split`). Retrying is
    /// safe: a split that applied already is answered again, never applied twice.
    ///
    /// # Errors
    /// When the leader refuses.
    pub fn split_as(
        &mut self,
        key: &[u8],
        new_region_id: RegionId,
    ) -> Result<Vec<RegionDescriptor>, ClientError> {
        let op = ClientOp::Split {
            key: key.to_vec(),
            new_region_id,
        };
        let result = self.execute(key, Mode::Strong, op)?;
        self.refresh_routing()?;
        match result {
            Ok(ClientReply::Regions { regions, .. }) => Ok(regions),
            other => Err(unexpected(other)),
        }
    }

    /// Sends a placement-driver request to each store's first core until one serves it.
    fn call_pd(
        &mut self,
        region: RegionId,
        epoch: RegionEpoch,
        op: ClientOp,
    ) -> Result<ClientReply, ClientError> {
        let mut addrs: Vec<String> = self.seeds.iter().map(|a| a.to_string()).collect();
        let mut stores: Vec<&StoreDescriptor> = self.stores.values().collect();
        stores.sort_by_key(|s| s.node_id);
        addrs.extend(
            stores
                .iter()
                .filter_map(|s| s.client_addrs.first().cloned()),
        );
        let mut last = String::from("no store known");
        for addr in addrs {
            match self.call(&addr, region, epoch, Mode::Raw, op.clone()) {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(error)) => last = error.to_string(),
                Err(error) => last = error.to_string(),
            }
        }
        Err(ClientError::Connection {
            addr: "the placement driver".into(),
            reason: last,
        })
    }

    fn region_for(&self, key: &[u8]) -> Result<&RegionDescriptor, ClientError> {
        self.regions
            .iter()
            .find(|r| {
                key >= r.start_key.as_slice()
                    && (r.end_key.is_empty() || key < r.end_key.as_slice())
            })
            .ok_or(ClientError::NoRegion {
                regions: self.regions.len(),
            })
    }

    /// The address of the core that owns `region` on `node`.
    fn address_of(&self, node: NodeId, region: RegionId, core_hint: Option<u32>) -> Option<String> {
        let store = self.stores.get(&node)?;
        let cores = store.client_addrs.len().max(1);
        let core = core_hint.map_or((region.0 % cores as u64) as usize, |c| c as usize);
        store
            .client_addrs
            .get(core.min(store.client_addrs.len().saturating_sub(1)))
            .cloned()
    }

    /// Sends `op` for `key`'s Region, following hints until it is served, refused for good,
    /// or out of time.
    fn execute(
        &mut self,
        key: &[u8],
        mode: Mode,
        op: ClientOp,
    ) -> Result<Result<ClientReply, WireError>, ClientError> {
        let started = Instant::now();
        let mut backoff = self.options.backoff_initial;
        let mut target: Option<NodeId> = None;
        let mut core_hint = None;
        let mut last = String::from("none");
        for attempt in 1..=self.options.attempts_max {
            if started.elapsed() > self.options.request_timeout {
                return Err(exhausted(attempt - 1, started, last));
            }
            let region = match self.region_for(key) {
                Ok(region) => region.clone(),
                Err(error) => {
                    // A hole in a table that learned part of a split: ask again shortly.
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(self.options.backoff_max);
                    self.refresh_routing()?;
                    last = error.to_string();
                    continue;
                }
            };
            let node = target
                .or(region.leader)
                .unwrap_or(region.peers[(attempt as usize) % region.peers.len()]);
            let Some(addr) = self.address_of(node, region.region_id, core_hint.take()) else {
                self.refresh_routing()?;
                continue;
            };
            let result = self.call(&addr, region.region_id, region.epoch, mode, op.clone());
            let retry = match result {
                Ok(Ok(reply)) => {
                    self.remember_leader(region.region_id, node);
                    return Ok(Ok(reply));
                }
                Ok(Err(WireError::NotLeader { leader, .. })) => {
                    target = leader.filter(|l| *l != node);
                    if target.is_none() {
                        std::thread::sleep(backoff);
                    }
                    "not leader".to_string()
                }
                Ok(Err(WireError::WrongCore { core })) => {
                    core_hint = Some(core.0);
                    target = Some(node);
                    "wrong core".to_string()
                }
                Ok(Err(
                    error @ (WireError::StaleEpoch { .. }
                    | WireError::KeyNotInRegion { .. }
                    | WireError::RegionNotFound { .. }),
                )) => {
                    let before = self.regions.clone();
                    self.refresh_routing()?;
                    if let WireError::StaleEpoch { regions } = &error {
                        merge_newer(&mut self.regions, regions);
                    }
                    if self.regions == before {
                        // The node we asked has not applied the change yet: give it time.
                        std::thread::sleep(backoff);
                    }
                    target = None;
                    error.to_string()
                }
                Ok(Err(WireError::ServerBusy)) => {
                    std::thread::sleep(backoff);
                    "server busy".to_string()
                }
                Ok(Err(WireError::OutcomeUnknown { message })) => {
                    if !is_retryable(&op) {
                        return Err(ClientError::OutcomeUnknown {
                            addr,
                            reason: format!("the node answered: {message}"),
                        });
                    }
                    // Sending it again is safe (a read, or a split that answers as before).
                    target = None;
                    format!("outcome unknown: {message}")
                }
                Ok(Err(error)) => return Ok(Err(error)),
                Err(error) => {
                    // The node may be down: try another replica after a pause.
                    self.connections.remove(&addr);
                    target = None;
                    self.forget_leader(region.region_id);
                    let sent = matches!(error, ClientError::Connection { .. });
                    if sent && !is_retryable(&op) {
                        return Err(ClientError::OutcomeUnknown {
                            addr,
                            reason: error.to_string(),
                        });
                    }
                    std::thread::sleep(backoff);
                    error.to_string()
                }
            };
            last = retry;
            backoff = (backoff * 2).min(self.options.backoff_max);
        }
        Err(exhausted(self.options.attempts_max, started, last))
    }

    fn remember_leader(&mut self, region: RegionId, leader: NodeId) {
        if let Some(r) = self.regions.iter_mut().find(|r| r.region_id == region) {
            r.leader = Some(leader);
        }
    }

    fn forget_leader(&mut self, region: RegionId) {
        if let Some(r) = self.regions.iter_mut().find(|r| r.region_id == region) {
            r.leader = None;
        }
    }

    /// One round trip to `addr`.
    fn call(
        &mut self,
        addr: &str,
        region_id: RegionId,
        epoch: RegionEpoch,
        mode: Mode,
        op: ClientOp,
    ) -> Result<Result<ClientReply, WireError>, ClientError> {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let request = ClientRequest {
            request_id,
            namespace: self.options.namespace.clone(),
            mode,
            region_id,
            epoch,
            op,
        };
        let timeout = self.options.request_timeout;
        let limits = self.limits.clone();
        let result = self
            .connection(addr)?
            .exchange(addr, &request, timeout, &limits);
        if result.is_err() {
            self.connections.remove(addr);
        }
        result
    }

    fn connection(&mut self, addr: &str) -> Result<&mut Connection, ClientError> {
        // A cached connection the node closed (it died or restarted since) would fail the
        // next request after it was sent, and a write's outcome would look unknown: open a
        // fresh one first, so such a request is certainly sent to a live process or not at all.
        if self
            .connections
            .get(addr)
            .is_some_and(|c| c.closed_by_peer())
        {
            self.connections.remove(addr);
        }
        if !self.connections.contains_key(addr) {
            let connection = Connection::open(addr, &self.limits)?;
            self.connections.insert(addr.to_string(), connection);
        }
        Ok(self.connections.get_mut(addr).expect("inserted above"))
    }
}

impl Connection {
    fn open(addr: &str, limits: &DecodeLimits) -> Result<Connection, ClientError> {
        let connect_error = |source| ClientError::Connect {
            addr: addr.to_string(),
            source,
        };
        let socket: SocketAddr = addr
            .to_socket_addrs()
            .map_err(connect_error)?
            .next()
            .ok_or_else(|| ClientError::Connection {
                addr: addr.to_string(),
                reason: "address resolves to nothing".into(),
            })?;
        let stream =
            TcpStream::connect_timeout(&socket, Duration::from_secs(2)).map_err(connect_error)?;
        stream.set_nodelay(true).ok();
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .ok();
        let decoder = FrameDecoder::new(limits.frame_bytes_max);
        Ok(Connection { stream, decoder })
    }

    /// True if the other end closed or reset the connection (a peek that does not block).
    fn closed_by_peer(&self) -> bool {
        if self.stream.set_nonblocking(true).is_err() {
            return true;
        }
        let mut byte = [0u8; 1];
        let closed = match self.stream.peek(&mut byte) {
            Ok(0) => true,
            Ok(_) => false, // an answer to an abandoned request, skipped later
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        };
        closed || self.stream.set_nonblocking(false).is_err()
    }

    /// Sends `request` and waits up to `timeout` for its answer (answers to abandoned
    /// requests are skipped). Any error leaves the connection unusable.
    fn exchange(
        &mut self,
        addr: &str,
        request: &ClientRequest,
        timeout: Duration,
        limits: &DecodeLimits,
    ) -> Result<Result<ClientReply, WireError>, ClientError> {
        let failed = |reason: String| ClientError::Connection {
            addr: addr.to_string(),
            reason,
        };
        // A reset (or a write into a connection a reset already broke) means the node closed
        // its socket with our request still unread in it: it was not processed. A node that
        // read the request and then died closes with FIN instead ("closed by the server"),
        // and the outcome is unknown. One request is in flight per connection, so no other.
        let unread = |e: std::io::Error| {
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ) {
                ClientError::Reset {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                }
            } else {
                failed(e.to_string())
            }
        };
        let frame = encode_frame(FrameType::ClientRequest, &encode_client_request(request));
        self.stream.write_all(&frame).map_err(unread)?;
        let deadline = Instant::now() + timeout;
        let mut buffer = [0u8; 64 * 1024];
        loop {
            if let Some(frame) = self
                .decoder
                .next_frame()
                .map_err(|e| failed(e.to_string()))?
            {
                let response = decode_client_response(&frame.payload, limits)
                    .map_err(|e| failed(e.to_string()))?;
                if response.request_id == request.request_id {
                    return Ok(response.result);
                }
                continue;
            }
            if Instant::now() > deadline {
                return Err(failed("timed out waiting for the answer".into()));
            }
            let read = match self.stream.read(&mut buffer) {
                Ok(0) => return Err(failed("closed by the server".into())),
                Ok(read) => read,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(unread(e)),
            };
            self.decoder
                .push(&buffer[..read])
                .map_err(|e| failed(e.to_string()))?;
        }
    }
}

/// One request on a fresh connection to `addr` (for the placement driver handshake and
/// tools that do not need routing).
///
/// # Errors
/// When `addr` cannot be reached or does not answer within `timeout`.
pub fn request_once(
    addr: &str,
    request: &ClientRequest,
    timeout: Duration,
) -> Result<Result<ClientReply, WireError>, ClientError> {
    let limits = DecodeLimits::default();
    Connection::open(addr, &limits)?.exchange(addr, request, timeout, &limits)
}

/// Takes descriptors newer than the routing table's (from a `StaleEpoch` answer): each
/// replaces its Region and every older Region it overlaps (which may leave a hole where a
/// split created a Region the answer did not name; the next refresh fills it).
fn merge_newer(table: &mut Vec<RegionDescriptor>, regions: &[RegionDescriptor]) {
    for newer in regions {
        let overlaps = |r: &RegionDescriptor| {
            (newer.end_key.is_empty() || r.start_key < newer.end_key)
                && (r.end_key.is_empty() || newer.start_key < r.end_key)
        };
        let replaced = |r: &RegionDescriptor| r.region_id == newer.region_id || overlaps(r);
        if !table
            .iter()
            .filter(|r| replaced(r))
            .all(|r| r.epoch.version <= newer.epoch.version)
        {
            continue;
        }
        table.retain(|r| !replaced(r));
        table.push(newer.clone());
    }
    table.sort_by(|a, b| a.start_key.cmp(&b.start_key));
}

/// True for operations that may be sent again after a lost answer: reads, and operations
/// the server makes idempotent (a repeated split answers as the first did). Puts, deletes,
/// compare-and-swaps and compare-and-deletes are not: sent twice they take effect twice.
fn is_retryable(op: &ClientOp) -> bool {
    !matches!(
        op,
        ClientOp::Put { .. }
            | ClientOp::Delete { .. }
            | ClientOp::Cas { .. }
            | ClientOp::CasDelete { .. }
    )
}

fn exhausted(attempts: u32, started: Instant, last: String) -> ClientError {
    ClientError::RetriesExhausted {
        attempts,
        elapsed_ms: started.elapsed().as_millis(),
        last,
    }
}

fn unexpected(reply: Result<ClientReply, WireError>) -> ClientError {
    match reply {
        Err(error) => ClientError::Server(error),
        Ok(other) => ClientError::Server(WireError::Internal {
            message: format!("unexpected reply {other:?}"),
        }),
    }
}

fn expect_written(reply: Result<ClientReply, WireError>) -> Result<u64, ClientError> {
    match reply {
        Ok(ClientReply::Written { version }) => Ok(version),
        other => Err(unexpected(other)),
    }
}

fn cas_outcome(reply: Result<ClientReply, WireError>) -> Result<CasOutcome, ClientError> {
    match reply {
        Ok(ClientReply::Written { version }) => Ok(CasOutcome::Done { version }),
        Err(WireError::VersionMismatch { current_version }) => {
            Ok(CasOutcome::Mismatch { current_version })
        }
        other => Err(unexpected(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(id: u64, start: &str, end: &str, version: u64) -> RegionDescriptor {
        RegionDescriptor {
            region_id: RegionId(id),
            start_key: start.as_bytes().to_vec(),
            end_key: end.as_bytes().to_vec(),
            epoch: RegionEpoch {
                version,
                conf_version: 1,
            },
            peers: vec![NodeId(1)],
            leader: None,
        }
    }

    #[test]
    fn a_newer_descriptor_replaces_what_it_overlaps_and_an_older_one_is_ignored() {
        let mut table = vec![region(1, "", "m", 1), region(2, "m", "", 1)];
        merge_newer(&mut table, &[region(2, "m", "t", 2)]);
        assert_eq!(table, vec![region(1, "", "m", 1), region(2, "m", "t", 2)]);
        merge_newer(&mut table, &[region(2, "m", "", 1)]);
        assert_eq!(
            table[1],
            region(2, "m", "t", 2),
            "an older descriptor changes nothing"
        );
        merge_newer(&mut table, &[region(4, "t", "", 2)]);
        assert_eq!(table.len(), 3);
    }
}

/// A write whose answer is lost, or that the node reports as of unknown outcome, is never
/// sent twice; reads are.
#[cfg(test)]
mod lost_answers {
    use super::*;
    use crate::fake_node::{Answer, FakeNode};

    fn options() -> ClientOptions {
        ClientOptions {
            request_timeout: Duration::from_millis(500),
            attempts_max: 5,
            backoff_initial: Duration::from_millis(1),
            backoff_max: Duration::from_millis(5),
            ..ClientOptions::default()
        }
    }

    #[test]
    fn a_write_whose_answer_was_lost_is_not_retried_and_reported_unknown() {
        let node = FakeNode::spawn(|_| Answer::CloseUnanswered);
        let mut client = Client::connect(&node.addr, options()).unwrap();
        let error = client.cas(b"k", 0, b"v").unwrap_err();
        assert!(
            matches!(error, ClientError::OutcomeUnknown { .. }),
            "{error}"
        );
        assert_eq!(node.requests(), 1, "the CAS was sent again");
        let error = client.put(b"k", b"v", Mode::Strong).unwrap_err();
        assert!(
            matches!(error, ClientError::OutcomeUnknown { .. }),
            "{error}"
        );
        assert_eq!(node.requests(), 2, "the put was sent again");
    }

    #[test]
    fn a_write_the_node_answers_outcome_unknown_is_not_retried_and_reported_unknown() {
        let node = FakeNode::spawn(|_| {
            Answer::Reply(Err(WireError::OutcomeUnknown {
                message: "compacted into a snapshot".into(),
            }))
        });
        let mut client = Client::connect(&node.addr, options()).unwrap();
        type Write = dyn Fn(&mut Client) -> Result<(), ClientError>;
        let writes: [&Write; 4] = [
            &|c| c.put(b"k", b"v", Mode::Raw).map(|_| ()),
            &|c| c.cas(b"k", 1, b"v").map(|_| ()),
            &|c| c.cas_delete(b"k", 1).map(|_| ()),
            &|c| c.delete(b"k", Mode::Strong),
        ];
        for (sent, write) in writes.into_iter().enumerate() {
            let error = write(&mut client).unwrap_err();
            let ClientError::OutcomeUnknown { addr, reason } = &error else {
                panic!("not OutcomeUnknown: {error:?}");
            };
            assert_eq!(addr, &node.addr);
            assert!(reason.contains("compacted into a snapshot"), "{error}");
            assert_eq!(node.requests(), sent as u32 + 1, "a write was sent again");
        }
    }

    #[test]
    fn a_write_after_the_node_closed_the_cached_connection_goes_out_on_a_fresh_one() {
        let node = FakeNode::spawn_closing_after_each_answer(|_| {
            Answer::Reply(Ok(ClientReply::Written { version: 1 }))
        });
        let mut client = Client::connect(&node.addr, options()).unwrap();
        for attempt in 1..=3 {
            // The server closed the connection after its last answer (as a restarted node
            // would); the client must notice before sending, not report the write unknown.
            wait_closed(&client, &node.addr);
            let version = client.put(b"k", b"v", Mode::Strong).unwrap();
            assert_eq!((version, node.requests()), (1, attempt));
        }
    }

    /// Waits until the client's cached connection to `addr` has seen the server's close.
    fn wait_closed(client: &Client, addr: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !client
            .connections
            .get(addr)
            .is_none_or(Connection::closed_by_peer)
        {
            assert!(Instant::now() < deadline, "the server never closed");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_read_whose_answer_was_lost_is_retried() {
        let node = FakeNode::spawn(|_| Answer::CloseUnanswered);
        let mut client = Client::connect(&node.addr, options()).unwrap();
        let error = client.get(b"k", Mode::Strong).unwrap_err();
        assert!(
            matches!(error, ClientError::RetriesExhausted { .. }),
            "{error}"
        );
        assert_eq!(node.requests(), 5, "one read per attempt");
    }
}
