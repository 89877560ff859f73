//! One core's event loop: the thin glue between sockets, the WAL and the Store.
//!
//! Each turn of the loop:
//! 1. waits for at least one event (or a WAL append to complete), then drains every event
//!    already queued (Raft batches, client requests, ticks) into the Store;
//! 2. while the Store has work: takes a round, sends what may leave at once, and queues
//!    every Region's entries and hard states as ONE WAL append (the WAL's group commit makes
//!    the appends queued meanwhile one write + one fdatasync);
//! 3. when the oldest round's append is durable: lets the Store apply it, answers the
//!    clients, and sends what waited for durability (rounds complete in order). A round that
//!    only moved commit indexes writes nothing (see `round.rs`): with nothing in flight it
//!    applies and answers at once, then sends its commit notices;
//! 4. answers the clients whose requests needed no round (errors, raw reads), and takes a Raft
//!    tick if one is due by the clock (`ticks`: a core that never idles still ticks on time);
//! 5. writes the periodic snapshots' files on glommio's blocking pool, one at a time, and
//!    carries a file's compaction mark into the next WAL batch once the file is durable
//!    (`snapshot_queue`): the core goes on serving while a file is written and fsynced.
//!
//! Steps 1 and 2 go on while appends are in flight (pipelining, see `CoreLoop::run`), so
//! requests, acknowledgements and ticks are not held up by a slow fdatasync.
//!
//! A WAL write or fsync failure stops the node: after a failed fsync the kernel may have
//! dropped the dirty pages, so retrying could acknowledge data that is not on disk.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use tessera_core::{Message, NodeId, RegionId};
use tessera_transport::client::{
    ClientError, ClientOp, ClientReply, ClientRequest, NodeStatus, RegionDescriptor,
    RegionStatus as WireRegionStatus,
};
use tessera_transport::net::{Members, PeerSender, TransportConfig};
use tessera_transport::{ClusterId, CoreId};
use tessera_wal::{LogBatch, Wal};

use crate::config::PeerDialAddr;
use crate::latency;
use crate::meta::DataMeta;
use crate::region::{owning_core, Region};
use crate::store::{Persisted, SnapshotTaken, Store, StoreReady, Token};

use super::clients::{encode_response, to_kv_request, to_wire_epoch, to_wire_result, ReplyTo};
use super::cross_core::{CrossCore, Links};
use super::pd_host::{PdAnswer, PdHost};
use super::round::{round_batch, Carried};
use super::snapshot_files;
use super::snapshot_queue::SnapshotQueue;
use super::ticks::TickClock;

mod handoff;
pub use handoff::HandOffs;

/// Events waiting for the core loop, at most this many (then senders back off).
pub const INBOX_EVENTS_MAX: usize = 65_536;

/// Rounds whose WAL batches may be in flight at once (see `CoreLoop::run`). Generous on
/// purpose: while the disk stalls, heartbeats and votes still leave in new rounds (a full
/// pipeline would silence the leader until followers elect another); the WAL's group commit
/// joins the queued batches, and the Store bounds the requests behind them.
pub const ROUNDS_IN_FLIGHT_MAX: usize = 256;

/// A round taken from the Store whose WAL batch is being made durable.
struct InFlight {
    ready: StoreReady,
    leaders: Vec<(RegionId, Option<NodeId>)>,
    /// The WAL append; `None` for a round that wrote nothing, which completes with the
    /// round before it.
    append: Option<glommio::task::JoinHandle<tessera_wal::Result<()>>>,
}

/// How a periodic snapshot's file write ended: how long it took and its size, or why it
/// failed.
type SnapshotOutcome = Result<(Duration, usize), String>;

/// A periodic snapshot's file being written on glommio's blocking pool (see
/// `snapshot_queue`).
struct SnapshotWrite {
    task: glommio::task::JoinHandle<SnapshotOutcome>,
    /// The same outcome, for when the core must wait for it on its own thread.
    done: Arc<(Mutex<Option<SnapshotOutcome>>, Condvar)>,
}

/// What woke the core loop.
enum Wake {
    Event(Option<Event>),
    Appended(Option<tessera_wal::Result<()>>),
    SnapshotWritten(Option<SnapshotOutcome>),
}

/// What the core loop reacts to.
pub enum Event {
    /// A tick may be due: the timer's wake-up for an idle core (`super::ticks`).
    Tick,
    Raft(Vec<(RegionId, Message)>),
    Client {
        reply_to: ReplyTo,
        request: ClientRequest,
    },
    CrossCore(CrossCore),
    /// A write of the placement driver's metadata finished (core 0 of the driver's node).
    PdWritten {
        version: u64,
        outcome: Result<(), String>,
    },
    /// A Region handed over by another core is durable here (or could not be made so).
    HandOffInstalled {
        from_core: usize,
        generation: u64,
        state: Box<crate::store::handoff::HandOffState>,
        taken_at: std::time::Instant,
        outcome: Result<(), String>,
    },
}

/// Who waits for an answer: a connection on this core, or another core that forwarded the
/// request.
pub enum Origin {
    Local(ReplyTo),
    Remote {
        core: usize,
        token: u64,
        request_id: u64,
        hops: u8,
    },
}

/// The sending side of a core's event queue.
pub type Inbox = Rc<LocalSender<Event>>;

/// Creates a core's event queue.
pub fn inbox() -> (Inbox, LocalReceiver<Event>) {
    let (sender, receiver) = local_channel::new_bounded(INBOX_EVENTS_MAX);
    (Rc::new(sender), receiver)
}

/// Everything one core's loop owns.
pub struct CoreLoop {
    pub core: usize,
    pub cores: usize,
    pub meta: Rc<DataMeta>,
    pub store: Store,
    /// Shared with the append tasks of the rounds in flight.
    wal: Rc<Wal>,
    /// Rounds taken from the Store whose WAL batches are not durable yet, oldest first.
    in_flight: VecDeque<InFlight>,
    pub snapshot_dir: PathBuf,
    pub transport: Rc<TransportConfig>,
    pub shutdown: Arc<AtomicBool>,
    peers: HashMap<(NodeId, usize), PeerSender>,
    replies: HashMap<Token, Origin>,
    next_token: Token,
    /// Requests this core forwarded to their owning core, by forwarding token.
    forwarded: HashMap<u64, ReplyTo>,
    links: Links,
    /// Where to dial nodes whose peer address is overridden (`peer_dial_addrs`).
    peer_dial_addrs: Vec<PeerDialAddr>,
    /// Compaction marks and commit-only hard states waiting for the next WAL batch.
    carried: Carried,
    /// Periodic snapshots waiting for their files, written off this thread one at a time.
    snapshots: SnapshotQueue,
    snapshot_write: Option<SnapshotWrite>,
    /// The nodes the peer listener accepts; grows when a store joins the cluster.
    members: Option<Members>,
    /// The placement driver, on core 0 of the node that hosts it.
    pd: Option<PdHost<Origin>>,
    inbox: Inbox,
    /// Every Region of the node as this core knows it: its own from the Store, the other
    /// cores' from their `CrossCore::Regions` broadcasts, the first layout until then.
    routing: BTreeMap<RegionId, Region>,
    /// The leaders of the other cores' Regions, from their `CrossCore::Leaders` broadcasts
    /// (this core's own come from its Store).
    other_leaders: HashMap<RegionId, NodeId>,
    /// Regions moving between cores, and where every Region of the node lives.
    hand_offs: HandOffs,
    /// When the next Raft tick is due (see `super::ticks`).
    ticks: TickClock,
}

/// Why a core stopped.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error(
        "WAL append failed: {source}. The node stops rather than acknowledge anything that \
         may not be durable; fix the disk (free space if it is full) and restart the node: \
         recovery keeps every acknowledged write"
    )]
    Wal {
        core: usize,
        source: tessera_wal::WalError,
    },
    #[error(
        "writing a snapshot failed: {message}. The node stops; free space if the disk is \
         full and restart the node: the WAL still holds everything the snapshot covers"
    )]
    Snapshot { core: usize, message: String },
}

/// What a core loop is built from.
pub struct CoreParts {
    pub core: usize,
    pub meta: Rc<DataMeta>,
    pub store: Store,
    pub wal: Wal,
    pub snapshot_dir: PathBuf,
    pub transport: Rc<TransportConfig>,
    pub shutdown: Arc<AtomicBool>,
    pub links: Links,
    pub pd: Option<PdHost<Origin>>,
    pub inbox: Inbox,
    pub peer_dial_addrs: Vec<PeerDialAddr>,
    pub members: Option<Members>,
    pub hand_offs: HandOffs,
    pub ticks: TickClock,
}

impl CoreLoop {
    pub fn new(parts: CoreParts) -> CoreLoop {
        CoreLoop {
            core: parts.core,
            cores: parts.meta.cores,
            meta: parts.meta,
            store: parts.store,
            wal: Rc::new(parts.wal),
            in_flight: VecDeque::new(),
            snapshot_dir: parts.snapshot_dir,
            transport: parts.transport,
            shutdown: parts.shutdown,
            peers: HashMap::new(),
            replies: HashMap::new(),
            next_token: 1,
            forwarded: HashMap::new(),
            links: parts.links,
            peer_dial_addrs: parts.peer_dial_addrs,
            carried: Carried::default(),
            snapshots: SnapshotQueue::default(),
            snapshot_write: None,
            members: parts.members,
            pd: parts.pd,
            inbox: parts.inbox,
            routing: BTreeMap::new(),
            other_leaders: HashMap::new(),
            hand_offs: parts.hand_offs,
            ticks: parts.ticks,
        }
    }

    /// The first layout, then this core's own Regions (told to the other cores).
    fn init_routing(&mut self) {
        let regions = self
            .meta
            .regions(std::path::Path::new("."))
            .unwrap_or_default();
        self.routing = regions.into_iter().map(|r| (r.id, r)).collect();
        let own: Vec<Region> = self.store.regions().cloned().collect();
        self.on_regions_changed(own);
    }

    /// Records Regions that changed on this core and tells the other cores.
    fn on_regions_changed(&mut self, regions: Vec<Region>) {
        if regions.is_empty() {
            return;
        }
        self.learn_regions(regions.clone());
        self.tell_other_cores(|| CrossCore::Regions(regions.clone()));
        let ids: Vec<RegionId> = regions.iter().map(|r| r.id).collect();
        self.tell_placement(&ids);
    }

    /// Tells the other cores which of this core's Regions changed leader.
    fn on_leaders_changed(&mut self, leaders: Vec<(RegionId, Option<NodeId>)>) {
        if !leaders.is_empty() {
            self.tell_other_cores(|| CrossCore::Leaders(leaders.clone()));
        }
    }

    /// Sends `message()` to every other core, for its routing table.
    fn tell_other_cores(&self, message: impl Fn() -> CrossCore) {
        for core in self.links.cores() {
            if !self.links.try_send(core, message()) {
                tracing::warn!(
                    core,
                    "cross-core channel full; its routing table lags until the next change"
                );
            }
        }
    }

    /// Takes newer descriptors into the routing table.
    fn learn_regions(&mut self, regions: Vec<Region>) {
        crate::region::keep_newest(&mut self.routing, regions);
    }

    /// Runs until shutdown is requested or the WAL fails.
    ///
    /// Rounds are pipelined: while a round's WAL batch is being written and synced, the loop
    /// keeps stepping events into the Store and takes further rounds (sending their appends
    /// and queueing their batches, which the WAL's group commit joins), up to
    /// `ROUNDS_IN_FLIGHT_MAX`. Rounds complete in order (`Store::on_persisted`, answers,
    /// messages that waited for durability) as their batches become durable. A round that
    /// may change which groups exist or who leads them (`StoreReady::is_barrier`) is
    /// completed before the next one is taken.
    ///
    /// # Errors
    /// `CoreError` when the WAL or a snapshot cannot be written.
    pub async fn run(mut self, events: LocalReceiver<Event>) -> Result<Wal, CoreError> {
        self.init_routing();
        // Entries the WAL holds as committed are applied before any request is taken (their
        // round writes nothing, so it completes at once): a raw read right after a restart
        // sees every write acknowledged before it.
        self.start_rounds()?;
        self.store.campaign_all();
        self.persist_pd();
        loop {
            self.start_rounds()?;
            match self.next_wake(&events).await {
                Wake::Event(Some(event)) => {
                    self.on_event(event);
                    while let Some(Some(event)) =
                        futures_lite::future::poll_once(events.recv()).await
                    {
                        self.on_event(event);
                    }
                }
                Wake::Event(None) => break,
                Wake::Appended(result) => self.on_appended(result)?,
                Wake::SnapshotWritten(outcome) => {
                    self.snapshot_write = None;
                    self.on_snapshot_written(outcome)?;
                    self.start_snapshot_write();
                }
            }
            // Every wake-up looks at the clock: the timer alone would be late on a core that
            // never runs out of work (see `super::ticks`).
            self.maybe_tick();
            if let Some(message) = self.hand_offs.failed.take() {
                return Err(CoreError::Snapshot {
                    core: self.core,
                    message: format!("a hand-off between cores: {message}"),
                });
            }
            self.answer_clients();
            if self.shutdown.load(Ordering::Relaxed) {
                break;
            }
        }
        while let Some(front) = self.in_flight.front_mut() {
            let result = match front.append.as_mut() {
                Some(append) => append.await,
                None => Some(Ok(())),
            };
            self.on_appended(result)?;
        }
        // A snapshot file being written gets its mark; queued ones are left (the WAL holds
        // what they cover).
        self.wait_for_snapshot_write()?;
        // Commit indexes of the last rounds were not written yet: a clean restart finds them.
        let carried = self.carried.take_batch();
        self.append_durably(carried).await?;
        let wal = Rc::try_unwrap(self.wal);
        Ok(wal.unwrap_or_else(|_| panic!("core {}: an append task outlived its round", self.core)))
    }

    /// Waits for the next event, for the oldest round's WAL batch to be durable, or for the
    /// snapshot file being written.
    async fn next_wake(&mut self, events: &LocalReceiver<Event>) -> Wake {
        let append = self
            .in_flight
            .front_mut()
            .and_then(|round| round.append.as_mut());
        let snapshot = self.snapshot_write.as_mut().map(|write| &mut write.task);
        let appended = async move {
            match append {
                Some(append) => Wake::Appended(append.await),
                None => futures_lite::future::pending().await,
            }
        };
        let written = async move {
            match snapshot {
                Some(task) => Wake::SnapshotWritten(task.await),
                None => futures_lite::future::pending().await,
            }
        };
        let event = async { Wake::Event(events.recv().await) };
        futures_lite::future::or(appended, futures_lite::future::or(written, event)).await
    }

    /// Takes a Raft tick if one is due.
    fn maybe_tick(&mut self) {
        if self.ticks.take_due(std::time::Instant::now()) {
            self.store.on_tick();
            self.hand_offs_on_tick();
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Tick => self.maybe_tick(),
            Event::Raft(batch) => {
                latency::raft_in(&batch);
                self.route_raft(batch);
            }
            Event::Client { reply_to, request } => self.on_client(Origin::Local(reply_to), request),
            Event::CrossCore(CrossCore::Request {
                from_core,
                token,
                hops,
                request,
            }) => {
                let origin = Origin::Remote {
                    core: from_core,
                    token,
                    request_id: request.request_id,
                    hops,
                };
                self.on_client(origin, request);
            }
            Event::CrossCore(CrossCore::Reply { token, frame }) => {
                if let Some(reply_to) = self.forwarded.remove(&token) {
                    reply_to.send_frame(frame);
                }
            }
            Event::CrossCore(CrossCore::Regions(regions)) => {
                self.store.learn_other_core_regions(regions.clone());
                self.learn_regions(regions);
            }
            Event::CrossCore(CrossCore::Leaders(leaders)) => {
                for (region, leader) in leaders {
                    match leader {
                        Some(leader) => self.other_leaders.insert(region, leader),
                        None => self.other_leaders.remove(&region),
                    };
                }
            }
            Event::CrossCore(CrossCore::Raft(batch)) => self.on_forwarded_raft(batch),
            Event::CrossCore(CrossCore::Placement(placement)) => self.on_placement(placement),
            Event::CrossCore(CrossCore::MoveToCore { region, to }) => {
                self.on_move_to_core(region, to)
            }
            Event::CrossCore(CrossCore::HandOff {
                from_core,
                generation,
                state,
                taken_at,
            }) => self.on_hand_off(from_core, generation, state, taken_at),
            Event::CrossCore(CrossCore::HandOffDone { region, installed }) => {
                self.on_hand_off_done(region, installed)
            }
            Event::CrossCore(CrossCore::HandOffEnded { region }) => self.on_hand_off_ended(region),
            Event::HandOffInstalled {
                from_core,
                generation,
                state,
                taken_at,
                outcome,
            } => {
                let elapsed_us = taken_at.elapsed().as_micros() as u64;
                self.on_hand_off_installed(from_core, generation, &state, outcome, elapsed_us)
            }
            Event::PdWritten { version, outcome } => {
                let released = match self.pd.as_mut() {
                    Some(pd) => pd.on_written(version, outcome),
                    None => Vec::new(),
                };
                for (origin, result) in released {
                    self.reply(origin, result);
                }
                self.persist_pd();
            }
        }
    }

    /// A request for the placement driver: served here if this core hosts it.
    fn on_pd(&mut self, origin: Origin, request: ClientRequest) {
        let Some(pd) = self.pd.as_mut() else {
            let error = if self.core != 0 && super::pd_host::hosts_pd(&self.meta) {
                ClientError::WrongCore { core: CoreId(0) }
            } else {
                super::pd_host::not_here(&self.meta)
            };
            return self.reply(origin, Err(error));
        };
        match pd.on_request(request.region_id, &request.op) {
            Some(PdAnswer::Now(result)) => self.reply(origin, result),
            Some(PdAnswer::WhenDurable(result)) => pd.wait(origin, result),
            None => unreachable!("on_pd is called for driver requests only"),
        }
        self.persist_pd();
    }

    /// Starts writing the driver's metadata if it changed and no write is in flight. The
    /// write runs on glommio's blocking pool so the core keeps serving.
    fn persist_pd(&mut self) {
        let Some((version, dir, bytes)) = self.pd.as_mut().and_then(PdHost::next_write) else {
            return;
        };
        let inbox = self.inbox.clone();
        glommio::spawn_local(async move {
            let outcome = glommio::executor()
                .spawn_blocking(move || {
                    crate::meta::write_durably(&dir, super::pd_host::PD_FILE, &bytes)
                        .map_err(|e| e.to_string())
                })
                .await;
            if inbox
                .send(Event::PdWritten { version, outcome })
                .await
                .is_err()
            {
                tracing::debug!("core stopped before the driver's metadata write finished");
            }
        })
        .detach();
    }

    fn on_client(&mut self, origin: Origin, request: ClientRequest) {
        match request.op {
            ClientOp::Regions => return self.reply(origin, Ok(self.routing_table())),
            ClientOp::Status => return self.reply(origin, Ok(ClientReply::Status(self.status()))),
            ClientOp::Join { store } => return self.on_join(origin, store),
            ClientOp::StoreHeartbeat { .. }
            | ClientOp::AskSplit
            | ClientOp::PdStatus
            | ClientOp::MoveRegion { .. }
            | ClientOp::CancelMove => return self.on_pd(origin, request),
            ClientOp::LearnStores { stores } => {
                self.learn_stores(&stores);
                return self.reply(origin, Ok(ClientReply::Ack));
            }
            _ => {}
        }
        let Some((origin, request)) = self.park(origin, request) else {
            return;
        };
        let owner = self.core_of(request.region_id);
        if owner != self.core && self.known_elsewhere(request.region_id) {
            return self.forward(origin, owner, request);
        }
        match to_kv_request(&request) {
            Ok(kv_request) => {
                let token = self.next_token;
                self.next_token += 1;
                self.replies.insert(token, origin);
                self.store.on_request(token, kv_request);
            }
            Err(error) => self.reply(origin, Err(error)),
        }
    }

    /// A store asks to join: stores of the first layout get it again (they may have crashed
    /// before saving it); any other store is added to the running cluster by the placement
    /// driver and starts with no Regions.
    fn on_join(&mut self, origin: Origin, store: tessera_transport::client::StoreDescriptor) {
        let regions = match self.meta.regions(std::path::Path::new(".")) {
            Ok(regions) => regions,
            Err(error) => {
                let message = error.to_string();
                return self.reply(origin, Err(ClientError::Internal { message }));
            }
        };
        let in_layout = regions.iter().any(|r| r.peers.contains(&store.node_id));
        if in_layout {
            let answer = Ok(super::pd::joined_reply(&self.meta, &regions));
            return self.reply(origin, answer);
        }
        let op = ClientOp::Join { store };
        let request = ClientRequest {
            request_id: 0,
            namespace: String::new(),
            mode: tessera_transport::client::Mode::Raw,
            region_id: RegionId(0),
            epoch: tessera_transport::client::RegionEpoch::default(),
            op,
        };
        self.on_pd(origin, request);
    }

    /// Takes stores this core does not know yet: it may dial them and they may dial it.
    fn learn_stores(&mut self, stores: &[tessera_transport::client::StoreDescriptor]) {
        for descriptor in stores {
            let Ok(store) = super::pd::store_meta(descriptor) else {
                continue;
            };
            if self.meta.stores.iter().any(|s| s.node_id == store.node_id) {
                continue;
            }
            tracing::info!(
                core = self.core,
                node = store.node_id,
                "learned a new store"
            );
            if let Some(members) = &self.members {
                members.borrow_mut().push(NodeId(store.node_id));
            }
            Rc::make_mut(&mut self.meta).stores.push(store);
        }
    }

    /// Frees what destroyed replicas held: the tombstones are written durably first, then
    /// the snapshot files go and the WAL records the removal in the next batch (recovery
    /// skips a tombstoned Region at any point in between).
    fn free_destroyed(&mut self) -> Result<(), CoreError> {
        let destroyed = self.store.take_destroyed();
        if destroyed.is_empty() {
            return Ok(());
        }
        // No file or mark of a destroyed Region may land after its removal (rare: wait).
        self.wait_for_snapshot_write()?;
        let core = self.core;
        let snapshot_error = |message| CoreError::Snapshot { core, message };
        snapshot_files::write_tombstones(&self.snapshot_dir, self.store.tombstones())
            .map_err(snapshot_error)?;
        for tombstone in destroyed {
            snapshot_files::remove_region(&self.snapshot_dir, tombstone.region)
                .map_err(snapshot_error)?;
            self.snapshots.forget(tombstone.region);
            self.carried.removed(tombstone.region);
            self.forget_destroyed(tombstone.region)
                .map_err(snapshot_error)?;
        }
        Ok(())
    }

    /// Hands a request to the core that owns its Region. A request another core forwarded
    /// goes on with that core's token (the answer goes straight back to it), at most
    /// `HOPS_MAX` times: routing tables lag a hand-off only briefly.
    fn forward(&mut self, origin: Origin, owner: usize, request: ClientRequest) {
        let request_id = request.request_id;
        let (from_core, token, hops) = match origin {
            Origin::Local(reply_to) => {
                let token = self.next_token;
                self.next_token += 1;
                self.forwarded.insert(token, reply_to);
                (self.core, token, 0)
            }
            Origin::Remote {
                core, token, hops, ..
            } if hops < handoff::HOPS_MAX => (core, token, hops),
            origin => {
                let core = CoreId(owner as u32);
                return self.reply(origin, Err(ClientError::WrongCore { core }));
            }
        };
        let message = CrossCore::Request {
            from_core,
            token,
            hops: hops + 1,
            request,
        };
        if !self.links.try_send(owner, message) {
            let local = (from_core == self.core).then(|| self.forwarded.remove(&token));
            let origin = match local.flatten() {
                Some(reply_to) => Origin::Local(reply_to),
                None => Origin::Remote {
                    core: from_core,
                    token,
                    request_id,
                    hops,
                },
            };
            self.reply(origin, Err(ClientError::ServerBusy));
        }
    }

    /// Answers whoever waits for a request.
    fn reply(&mut self, origin: Origin, result: Result<ClientReply, ClientError>) {
        match origin {
            Origin::Local(reply_to) => reply_to.send(result),
            Origin::Remote {
                core,
                token,
                request_id,
                ..
            } => {
                let frame = encode_response(request_id, result);
                if !self.links.try_send(core, CrossCore::Reply { token, frame }) {
                    tracing::warn!(
                        core,
                        "cross-core reply channel full; the client will time out"
                    );
                }
            }
        }
    }

    /// Step 2 of the module docs: takes rounds from the Store while it has work and the
    /// pipeline has room (see `run`). A round that writes nothing completes at once when no
    /// other round is in flight, else with the round before it.
    fn start_rounds(&mut self) -> Result<(), CoreError> {
        self.free_destroyed()?;
        self.progress_hand_offs();
        while self.in_flight.len() < ROUNDS_IN_FLIGHT_MAX
            && !self.in_flight.iter().any(|round| round.ready.is_barrier())
        {
            let Some(mut ready) = self.store.ready() else {
                break;
            };
            let now = ready.messages_now();
            let leaders = ready
                .groups()
                .iter()
                .filter_map(|(region, group)| group.soft_state.map(|s| (*region, s.leader)))
                .collect();
            let batch = self.wal_batch(&ready)?;
            if batch.is_empty() && self.in_flight.is_empty() {
                // Answers first: such a round's messages are commit notices and heartbeats,
                // which can wait the moment it takes; a client should not.
                self.finish_round(ready, leaders)?;
                self.send_raft(now, "now");
                continue;
            }
            // A leader's appends leave while its own copy is written.
            self.send_raft(now, "now");
            let append = (!batch.is_empty()).then(|| {
                if latency::enabled() {
                    trace_wal_issue(&ready, &batch);
                }
                let wal = self.wal.clone();
                glommio::spawn_local(async move { wal.append(batch).await }).detach()
            });
            self.in_flight.push_back(InFlight {
                ready,
                leaders,
                append,
            });
        }
        Ok(())
    }

    /// The oldest round's WAL batch is durable (or its append failed): completes it and the
    /// rounds behind it that wrote nothing.
    fn on_appended(&mut self, result: Option<tessera_wal::Result<()>>) -> Result<(), CoreError> {
        let wal_error = |source| CoreError::Wal {
            core: self.core,
            source,
        };
        match result {
            Some(Ok(())) => {}
            Some(Err(source)) => return Err(wal_error(source)),
            None => return Err(wal_error(tessera_wal::WalError::Closed)),
        }
        tracing::debug!(target: latency::TARGET, "wal_done");
        let round = self.in_flight.pop_front().expect("a round was in flight");
        self.finish_round(round.ready, round.leaders)?;
        while self
            .in_flight
            .front()
            .is_some_and(|round| round.append.is_none())
        {
            let round = self.in_flight.pop_front().expect("checked");
            self.finish_round(round.ready, round.leaders)?;
        }
        Ok(())
    }

    /// A round is durable: the Store applies it, clients are answered, and the messages that
    /// waited for durability leave. Clients are answered after every round, so an answer
    /// never waits for a later round's fdatasync.
    fn finish_round(
        &mut self,
        ready: StoreReady,
        leaders: Vec<(RegionId, Option<NodeId>)>,
    ) -> Result<(), CoreError> {
        let persisted: Persisted = self.store.on_persisted(ready);
        self.answer_clients();
        self.send_raft(persisted.messages, "persisted");
        for taken in &persisted.snapshots {
            self.write_snapshot(taken)?;
        }
        for taken in persisted.periodic_snapshots {
            self.snapshots.push(taken);
        }
        self.start_snapshot_write();
        let changed = self.store.take_changed_regions();
        self.on_regions_changed(changed);
        self.on_leaders_changed(leaders);
        self.free_destroyed()
    }

    async fn append_durably(&self, batch: LogBatch) -> Result<(), CoreError> {
        self.wal
            .append(batch)
            .await
            .map_err(|source| CoreError::Wal {
                core: self.core,
                source,
            })
    }

    /// The round's WAL batch (see `round`). Received snapshots are written to their files
    /// first, so that the install mark in this batch never points past a durable snapshot.
    fn wal_batch(&mut self, ready: &StoreReady) -> Result<LogBatch, CoreError> {
        let round = round_batch(ready, &mut self.carried);
        for taken in &round.received_snapshots {
            self.write_snapshot_file(taken)?;
            self.snapshots.forget(taken.region);
        }
        Ok(round.batch)
    }

    /// A snapshot this core took that must be durable before the next WAL batch (a split's
    /// new Region, a learner's seed): written on this thread, then its compaction mark goes
    /// in the next WAL batch (never before the file is durable).
    fn write_snapshot(&mut self, taken: &SnapshotTaken) -> Result<(), CoreError> {
        self.write_snapshot_file(taken)?;
        self.snapshots.forget(taken.region);
        self.carried
            .compacted(taken.region, taken.index, taken.term);
        Ok(())
    }

    /// Starts writing the next queued periodic snapshot on glommio's blocking pool, if none
    /// is being written; its mark is carried when the file is durable
    /// (`on_snapshot_written`).
    fn start_snapshot_write(&mut self) {
        if self.snapshot_write.is_some() {
            return;
        }
        let Some(taken) = self.snapshots.start() else {
            return;
        };
        let dir = self.snapshot_dir.clone();
        let done = Arc::new((Mutex::new(None), Condvar::new()));
        let signal = done.clone();
        let write = glommio::executor().spawn_blocking(move || {
            let started = Instant::now();
            let outcome = snapshot_files::write_taken(&dir, &taken)
                .map(|()| (started.elapsed(), taken.data.len()));
            let (slot, finished) = &*signal;
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome.clone());
            finished.notify_all();
            outcome
        });
        let task = glommio::spawn_local(write).detach();
        self.snapshot_write = Some(SnapshotWrite { task, done });
    }

    /// Blocks this thread until the snapshot file being written (if any) is durable, then
    /// carries its mark. For the rare moments that must not overlap a write (a Region's
    /// files deleted, shutdown).
    fn wait_for_snapshot_write(&mut self) -> Result<(), CoreError> {
        let Some(write) = self.snapshot_write.take() else {
            return Ok(());
        };
        let (slot, finished) = &*write.done;
        let mut outcome = slot.lock().unwrap_or_else(PoisonError::into_inner);
        while outcome.is_none() {
            outcome = finished
                .wait(outcome)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let outcome = outcome.take();
        self.on_snapshot_written(outcome)
    }

    /// The periodic snapshot file being written is durable (or its write failed, which
    /// stops the node): its compaction mark goes in the next WAL batch.
    fn on_snapshot_written(&mut self, outcome: Option<SnapshotOutcome>) -> Result<(), CoreError> {
        let snapshot_error = |message| CoreError::Snapshot {
            core: self.core,
            message,
        };
        let (elapsed, bytes) = match outcome {
            Some(Ok(done)) => done,
            Some(Err(message)) => return Err(snapshot_error(message)),
            None => return Err(snapshot_error("the snapshot write was cancelled".into())),
        };
        let mark = self.snapshots.written(&mut self.carried);
        tracing::debug!(
            target: latency::TARGET,
            region = mark.region.0,
            index = mark.index.0,
            bytes,
            elapsed_us = elapsed.as_micros() as u64,
            background = true,
            "snapshot_written"
        );
        Ok(())
    }

    fn write_snapshot_file(&self, taken: &SnapshotTaken) -> Result<(), CoreError> {
        let started = Instant::now();
        snapshot_files::write_taken(&self.snapshot_dir, taken).map_err(|message| {
            CoreError::Snapshot {
                core: self.core,
                message,
            }
        })?;
        tracing::debug!(
            target: latency::TARGET,
            region = taken.region.0,
            index = taken.index.0,
            bytes = taken.data.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "snapshot_written"
        );
        Ok(())
    }

    /// Queues Raft messages to the owning core of each destination node; `when` names the
    /// step for the latency trace.
    fn send_raft(&mut self, batches: tessera_core::multi::Batches, when: &'static str) {
        latency::raft_out(&batches, when);
        for (node, messages) in batches {
            for (region, message) in messages {
                let Some(sender) = self.peer_sender(node, region) else {
                    tracing::debug!(?node, "no address for node; dropping a message");
                    continue;
                };
                if let Err(error) = sender.send(region, message) {
                    tracing::debug!(?node, %error, "peer queue refused a message (Raft will resend)");
                }
            }
        }
    }

    fn peer_sender(&mut self, node: NodeId, region: RegionId) -> Option<&PeerSender> {
        let store = self.meta.stores.iter().find(|s| s.node_id == node.0)?;
        let core = owning_core(region, store.cores);
        if !self.peers.contains_key(&(node, core)) {
            let (host, port) = match self.peer_dial_addrs.iter().find(|d| d.node_id == node.0) {
                Some(dial) => (dial.host.as_str(), dial.peer_port),
                None => (store.host.as_str(), store.peer_port),
            };
            let addr = format!("{host}:{}", port as usize + core).parse().ok()?;
            let sender = PeerSender::spawn(self.transport.clone(), node, CoreId(core as u32), addr);
            self.peers.insert((node, core), sender);
        }
        self.peers.get(&(node, core))
    }

    fn answer_clients(&mut self) {
        let replies = self.store.take_replies();
        if replies.is_empty() {
            return;
        }
        for (token, result) in replies {
            let Some(origin) = self.replies.remove(&token) else {
                continue;
            };
            let meta = &self.meta;
            let wire = to_wire_result(
                result,
                |region| describe(region, None),
                |node, region| client_address(meta, node, region),
            );
            self.reply(origin, wire);
        }
    }

    fn routing_table(&self) -> ClientReply {
        let regions = self
            .routing
            .values()
            .map(|region| {
                let leader = match self.store.raft(region.id) {
                    Some(group) => group.leader(),
                    None => self.other_leaders.get(&region.id).copied(),
                };
                describe(region, leader)
            })
            .collect();
        let stores = self
            .meta
            .stores
            .iter()
            .map(super::pd::store_descriptor)
            .collect();
        ClientReply::Regions { regions, stores }
    }

    fn status(&self) -> NodeStatus {
        NodeStatus {
            node_id: self.store.node(),
            cluster_id: ClusterId(self.meta.cluster_id),
            cores: self.cores as u32,
            regions: self
                .store
                .status()
                .into_iter()
                .map(|s| WireRegionStatus {
                    region_id: s.region.id,
                    core: CoreId(self.core as u32),
                    leader: s.leader,
                    term: s.term,
                    commit_index: s.committed,
                    applied_index: s.applied,
                    region: Some(describe(&s.region, s.leader)),
                    approximate_bytes: s.approximate_bytes as u64,
                    keys: s.keys as u64,
                    learners: s.learners,
                })
                .collect(),
        }
    }
}

/// The `wal_issue` trace point: per Region, the last entry and the commit being persisted.
fn trace_wal_issue(ready: &StoreReady, batch: &LogBatch) {
    for (region, group) in ready.groups() {
        tracing::debug!(
            target: latency::TARGET,
            region = region.0,
            index = group.entries.last().map_or(0, |e| e.index.0),
            entries = group.entries.len(),
            commit = group.hard_state.map_or(0, |h| h.commit.0),
            bytes = batch.encoded_len(),
            "wal_issue"
        );
    }
}

fn describe(region: &Region, leader: Option<NodeId>) -> RegionDescriptor {
    RegionDescriptor {
        region_id: region.id,
        start_key: region.start_key.clone(),
        end_key: region.end_key.clone(),
        epoch: to_wire_epoch(region.epoch),
        peers: region.peers.clone(),
        leader,
    }
}

fn client_address(meta: &DataMeta, node: NodeId, region: RegionId) -> Option<String> {
    let store = meta.stores.iter().find(|s| s.node_id == node.0)?;
    let core = owning_core(region, store.cores);
    Some(format!(
        "{}:{}",
        store.host,
        store.client_port as usize + core
    ))
}
