//! Moving a Region between the cores of a node (a hand-off), and the balancer that asks for
//! one when the cores' Region counts differ by more than one.
//!
//! A Region's core is where its durable state is: its default core (`owning_core`) unless
//! it was handed off (or created by a split of a Region that was). Every core keeps the
//! node's placement (Region → core, hand-off generation), told over `CrossCore::Placement`;
//! Raft messages and client requests that reach a core that does not host their Region are
//! passed to the core that does.
//!
//! A hand-off of Region R from core A to core B:
//! ```text
//!  A: Draining ──(R idle, no round in flight for R)──► take R out of the Store ──HandOff──► B
//!  B: 1. incoming file (full state) durable   2. `handoffs` line "R g" durable  [commit]
//!     3. snapshot file + WAL records durable  4. incoming file deleted  5. R serves on B
//!  B ──HandOffDone{installed}──► A: frees its copy (snapshot files, WAL share, old line)
//! ```
//! Client requests for R that reach A or B meanwhile are parked and passed on once R serves
//! again; Raft messages for R are dropped meanwhile (Raft resends them). If B refuses (it has
//! R already), A puts R back into its Store from the state it took: A's files were never
//! touched. A crash at any point is resolved at recovery by the `handoffs` lines: the highest
//! generation names the owner (see `handoff_files`), never by chance.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use tessera_core::{Message, RegionId};
use tessera_transport::client::{ClientError, ClientRequest};

use super::{CoreLoop, Event, Origin};
use crate::region::owning_core;
use crate::server::cross_core::CrossCore;
use crate::server::handoff_files::{self, Owners};
use crate::server::snapshot_files;
use crate::store::handoff::HandOffState;

/// A Region waiting to become idle for a hand-off is given up after this many ticks.
pub const DRAIN_TICKS_MAX: u64 = 200;
/// Client requests parked (over all Regions of a core) while their Region is in transit, at
/// most; more are refused with `ServerBusy` (the client retries).
pub const PARKED_REQUESTS_MAX: usize = 10_000;
/// A request passes through at most this many cores.
pub const HOPS_MAX: u8 = 3;

/// The test-only switch that aborts the process at one step of the first hand-off, to show
/// that recovery resolves a hand-off a crash interrupted: `incoming` (B wrote the incoming
/// file), `committed` (B wrote its `handoffs` line), `installed` (B's copy is durable and
/// serves, A's not freed yet), `done` (A heard B installed it, before freeing its copy).
pub const HANDOFF_CRASH_ENV: &str = "TESSERA_TEST_HANDOFF_CRASH";

/// A Region this core is handing to another.
enum Outgoing {
    /// Waiting until nothing waits on the Region here (since tick `since`).
    Draining { to: usize, since: u64 },
    /// Taken out of the Store and sent at `generation`; kept to take it back if the target
    /// refuses.
    Sent {
        to: usize,
        generation: u64,
        state: Box<HandOffState>,
    },
}

/// One core's hand-off state (a field of `CoreLoop`).
pub struct HandOffs {
    core_dir: PathBuf,
    /// Region → (core, generation) for every Region of the node this core knows of.
    placement: HashMap<RegionId, (usize, u64)>,
    /// This core's `handoffs` file.
    markers: BTreeMap<RegionId, u64>,
    outgoing: BTreeMap<RegionId, Outgoing>,
    /// Regions received and being made durable here, with their generation.
    incoming: BTreeMap<RegionId, u64>,
    parked: BTreeMap<RegionId, Vec<(Origin, ClientRequest)>>,
    parked_count: usize,
    ticks: u64,
    /// On core 0 with `core_balance`: check every this many ticks.
    balance_interval_ticks: Option<u64>,
    /// The hand-off the balancer asked for, and when.
    balancing: Option<(RegionId, u64)>,
    crash_at: Option<String>,
    /// A durable step failed: the core stops (see `CoreLoop::run`).
    pub failed: Option<String>,
}

impl HandOffs {
    /// `placement` comes from recovery (`handoff_files::placement`); `markers` is this core's
    /// `handoffs` file as recovery left it.
    pub fn new(
        core_dir: PathBuf,
        placement: &Owners,
        markers: BTreeMap<RegionId, u64>,
        balance_interval_ticks: Option<u64>,
    ) -> HandOffs {
        let crash_at = std::env::var(HANDOFF_CRASH_ENV).ok();
        if let Some(step) = &crash_at {
            tracing::warn!(
                step,
                "{HANDOFF_CRASH_ENV} is set: the first hand-off crashes the node (test only)"
            );
        }
        HandOffs {
            core_dir,
            placement: placement.iter().map(|(r, p)| (*r, *p)).collect(),
            markers,
            outgoing: BTreeMap::new(),
            incoming: BTreeMap::new(),
            parked: BTreeMap::new(),
            parked_count: 0,
            ticks: 0,
            balance_interval_ticks,
            balancing: None,
            crash_at,
            failed: None,
        }
    }

    fn crash_point(&self, step: &str) {
        if self.crash_at.as_deref() == Some(step) {
            tracing::error!(step, "{HANDOFF_CRASH_ENV}: crashing mid-hand-off");
            std::process::abort();
        }
    }

    /// The generation of `region` as this core knows it (0: never handed off).
    fn generation(&self, region: RegionId) -> u64 {
        self.placement.get(&region).map_or(0, |(_, g)| *g)
    }

    /// Takes a placement if it is not older than the one known.
    fn learn(&mut self, region: RegionId, core: Option<usize>, generation: u64) {
        if self.generation(region) > generation {
            return;
        }
        match core {
            Some(core) => self.placement.insert(region, (core, generation)),
            None => self.placement.remove(&region),
        };
    }

    /// True while `region` is in transit from or to this core.
    fn in_transit(&self, region: RegionId) -> bool {
        self.incoming.contains_key(&region)
            || matches!(self.outgoing.get(&region), Some(Outgoing::Sent { .. }))
    }
}

impl CoreLoop {
    /// The core hosting `region` as far as this core knows: the placement, else the default.
    pub(super) fn core_of(&self, region: RegionId) -> usize {
        match self.hand_offs.placement.get(&region) {
            Some((core, _)) => *core,
            None => owning_core(region, self.cores),
        }
    }

    /// True if this core knows `region` on another core (placement or routing table).
    pub(super) fn known_elsewhere(&self, region: RegionId) -> bool {
        self.store.raft(region).is_none()
            && (self.hand_offs.placement.contains_key(&region)
                || self.routing.contains_key(&region))
    }

    /// Tells the other cores where `regions` (this core's) live, with their generations.
    pub(super) fn tell_placement(&mut self, regions: &[RegionId]) {
        let own: Vec<(RegionId, Option<usize>, u64)> = regions
            .iter()
            .map(|r| (*r, Some(self.core), self.hand_offs.generation(*r)))
            .collect();
        for (region, core, generation) in &own {
            self.hand_offs.learn(*region, *core, *generation);
        }
        if !own.is_empty() {
            self.tell_other_cores(|| CrossCore::Placement(own.clone()));
        }
    }

    /// A replica of this core was destroyed (removed from the Region): it leaves the
    /// placement, and its `handoffs` line goes, so a later re-add is not mistaken for it.
    pub(super) fn forget_destroyed(&mut self, region: RegionId) -> Result<(), String> {
        let generation = self.hand_offs.generation(region);
        self.hand_offs.learn(region, None, generation);
        self.tell_other_cores(|| CrossCore::Placement(vec![(region, None, generation)]));
        if self.hand_offs.markers.remove(&region).is_some() {
            handoff_files::write_markers(&self.hand_offs.core_dir, &self.hand_offs.markers)?;
        }
        Ok(())
    }

    /// Raft messages from another node: steps those of this core's Regions, passes on those
    /// of Regions another core hosts, drops those of a Region in transit (Raft resends).
    pub(super) fn route_raft(&mut self, batch: Vec<(RegionId, Message)>) {
        let mut local = Vec::with_capacity(batch.len());
        let mut others: BTreeMap<usize, Vec<(RegionId, Message)>> = BTreeMap::new();
        for (region, message) in batch {
            if self.store.raft(region).is_some() {
                local.push((region, message));
                continue;
            }
            if self.hand_offs.in_transit(region) {
                continue;
            }
            match self.core_of(region) {
                core if core == self.core => local.push((region, message)),
                core => others.entry(core).or_default().push((region, message)),
            }
        }
        for (core, messages) in others {
            if !self.links.try_send(core, CrossCore::Raft(messages)) {
                tracing::debug!(
                    core,
                    "cross-core channel full; dropping Raft messages (Raft resends)"
                );
            }
        }
        self.store.on_raft_messages(local);
    }

    /// Raft messages another core passed on: stepped unless their Region is in transit.
    pub(super) fn on_forwarded_raft(&mut self, mut batch: Vec<(RegionId, Message)>) {
        batch.retain(|(region, _)| !self.hand_offs.in_transit(*region));
        self.store.on_raft_messages(batch);
    }

    /// Parks a client request whose Region is in transit from or to this core; gives it back
    /// otherwise.
    pub(super) fn park(
        &mut self,
        origin: Origin,
        request: ClientRequest,
    ) -> Option<(Origin, ClientRequest)> {
        let region = request.region_id;
        if !self.hand_offs.in_transit(region) && !self.hand_offs.outgoing.contains_key(&region) {
            return Some((origin, request));
        }
        if self.hand_offs.parked_count >= PARKED_REQUESTS_MAX {
            self.reply(origin, Err(ClientError::ServerBusy));
            return None;
        }
        self.hand_offs.parked_count += 1;
        let parked = self.hand_offs.parked.entry(region).or_default();
        parked.push((origin, request));
        None
    }

    /// Serves (or passes on) the requests parked for `region`.
    fn unpark(&mut self, region: RegionId) {
        let parked = self.hand_offs.parked.remove(&region).unwrap_or_default();
        self.hand_offs.parked_count -= parked.len();
        for (origin, request) in parked {
            self.on_client(origin, request);
        }
    }

    /// One tick: gives up drains that take too long; on core 0, balances now and then.
    pub(super) fn hand_offs_on_tick(&mut self) {
        self.hand_offs.ticks += 1;
        let now = self.hand_offs.ticks;
        let stuck: Vec<RegionId> = self
            .hand_offs
            .outgoing
            .iter()
            .filter(|(_, o)| matches!(o, Outgoing::Draining { since, .. } if now - since > DRAIN_TICKS_MAX))
            .map(|(r, _)| *r)
            .collect();
        for region in stuck {
            tracing::warn!(
                region = region.0,
                "hand-off given up: the region did not become idle"
            );
            self.hand_offs.outgoing.remove(&region);
            self.unpark(region);
            self.hand_off_ended(region);
        }
        if let Some(interval) = self.hand_offs.balance_interval_ticks {
            if now.is_multiple_of(interval) {
                self.balance(now, interval);
            }
        }
    }

    /// The balancer (core 0): while no hand-off it asked for is under way, asks the core
    /// with the most Regions to hand its newest one (highest id) to the core with the fewest,
    /// when their counts differ by more than one.
    fn balance(&mut self, now: u64, interval: u64) {
        if let Some((_, since)) = self.hand_offs.balancing {
            if now - since <= 2 * DRAIN_TICKS_MAX + interval {
                return;
            }
            self.hand_offs.balancing = None;
        }
        let mut counts = vec![0usize; self.cores];
        let mut newest: Vec<Option<RegionId>> = vec![None; self.cores];
        // Every core tells its Regions' placement (at startup, and when they change).
        let placed: BTreeMap<RegionId, usize> = self
            .hand_offs
            .placement
            .iter()
            .map(|(region, (core, _))| (*region, *core))
            .collect();
        for (region, core) in placed {
            if core < self.cores {
                counts[core] += 1;
                newest[core] = Some(region);
            }
        }
        let (Some(most), Some(fewest)) = (
            (0..self.cores).max_by_key(|c| (counts[*c], *c)),
            (0..self.cores).min_by_key(|c| (counts[*c], *c)),
        ) else {
            return;
        };
        if counts[most] < counts[fewest] + 2 {
            return;
        }
        let Some(region) = newest[most] else { return };
        tracing::info!(
            region = region.0,
            from = most,
            to = fewest,
            ?counts,
            "balancing regions across cores"
        );
        self.hand_offs.balancing = Some((region, now));
        let order = CrossCore::MoveToCore { region, to: fewest };
        if most == self.core {
            self.on_move_to_core(region, fewest);
        } else if !self.links.try_send(most, order) {
            self.hand_offs.balancing = None;
        }
    }

    /// Starts handing `region` to core `to`, if this core hosts it and nothing is under way.
    pub(super) fn on_move_to_core(&mut self, region: RegionId, to: usize) {
        let hosted = self.store.regions().any(|r| r.id == region);
        if !hosted
            || to == self.core
            || to >= self.cores
            || self.hand_offs.outgoing.contains_key(&region)
        {
            return self.hand_off_ended(region);
        }
        tracing::info!(
            region = region.0,
            from = self.core,
            to,
            "hand-off to another core started"
        );
        let since = self.hand_offs.ticks;
        self.hand_offs
            .outgoing
            .insert(region, Outgoing::Draining { to, since });
    }

    /// Takes the draining Regions that became idle and no round in flight touches, and
    /// sends them (step 1 of the module docs).
    pub(super) fn progress_hand_offs(&mut self) {
        let ready: Vec<(RegionId, usize)> = self
            .hand_offs
            .outgoing
            .iter()
            .filter_map(|(region, o)| match o {
                Outgoing::Draining { to, .. } => Some((*region, *to)),
                Outgoing::Sent { .. } => None,
            })
            .filter(|(region, _)| self.store.is_idle(*region) && !self.in_flight_touches(*region))
            // A snapshot file of the Region being written in the background must land (and
            // its mark be carried) before the Region leaves: the next call takes it.
            .filter(|(region, _)| self.snapshots.writing().map(|m| m.region) != Some(*region))
            .collect();
        for (region, to) in ready {
            // The hand-off carries a snapshot at the applied index; a queued periodic one of
            // this core is not written (its entries stay in this core's WAL until then).
            self.snapshots.forget(region);
            let Some(state) = self.store.take_for_hand_off(region) else {
                continue;
            };
            let generation = self.hand_offs.generation(region) + 1;
            let message = CrossCore::HandOff {
                from_core: self.core,
                generation,
                state: Box::new(state.clone()),
                taken_at: std::time::Instant::now(),
            };
            if !self.links.try_send(to, message) {
                tracing::warn!(
                    region = region.0,
                    "cross-core channel full; hand-off given up"
                );
                self.take_back(region, &state);
                continue;
            }
            self.hand_offs.outgoing.insert(
                region,
                Outgoing::Sent {
                    to,
                    generation,
                    state: Box::new(state),
                },
            );
        }
    }

    /// Puts a Region this core took out for a hand-off back into its Store (its files were
    /// never touched).
    fn take_back(&mut self, region: RegionId, state: &HandOffState) {
        if let Err(message) = self.store.add_handed_off(state) {
            self.hand_offs.failed = Some(format!("taking back region {}: {message}", region.0));
        }
        self.hand_offs.outgoing.remove(&region);
        self.unpark(region);
        self.hand_off_ended(region);
    }

    fn in_flight_touches(&self, region: RegionId) -> bool {
        self.in_flight
            .iter()
            .any(|round| round.ready.groups().iter().any(|(r, _)| *r == region))
    }

    /// Steps 1–3 on the receiving core; step 3 runs in a task that reports with
    /// `Event::HandOffInstalled`.
    pub(super) fn on_hand_off(
        &mut self,
        from_core: usize,
        generation: u64,
        state: Box<HandOffState>,
        taken_at: std::time::Instant,
    ) {
        let region = state.region.id;
        if self.store.raft(region).is_some() || self.hand_offs.incoming.contains_key(&region) {
            tracing::warn!(
                region = region.0,
                "refusing a hand-off of a region this core has"
            );
            return self.refuse_hand_off(from_core, region);
        }
        let dir = self.hand_offs.core_dir.clone();
        if let Err(message) = handoff_files::write_incoming(&dir, generation, &state) {
            tracing::error!(
                region = region.0,
                message,
                "cannot write a received region; refusing it"
            );
            return self.refuse_hand_off(from_core, region);
        }
        self.hand_offs.crash_point("incoming");
        self.hand_offs.markers.insert(region, generation);
        if let Err(message) = handoff_files::write_markers(&dir, &self.hand_offs.markers) {
            // Whether the line is on disk is unknown: only a restart can tell (recovery).
            self.hand_offs.failed = Some(message);
            return;
        }
        self.hand_offs.crash_point("committed");
        self.hand_offs.incoming.insert(region, generation);
        self.carried.cancel_removal(region);
        let (wal, snapshot_dir, inbox) = (
            self.wal.clone(),
            self.snapshot_dir.clone(),
            self.inbox.clone(),
        );
        glommio::spawn_local(async move {
            let outcome = handoff_files::install(&wal, &snapshot_dir, &state).await;
            let event = Event::HandOffInstalled {
                from_core,
                generation,
                state,
                taken_at,
                outcome,
            };
            if inbox.send(event).await.is_err() {
                tracing::debug!("core stopped before a hand-off was installed");
            }
        })
        .detach();
    }

    fn refuse_hand_off(&self, from_core: usize, region: RegionId) {
        let done = CrossCore::HandOffDone {
            region,
            installed: false,
        };
        let _ = self.links.try_send(from_core, done);
    }

    /// Steps 4 and 5 on the receiving core.
    pub(super) fn on_hand_off_installed(
        &mut self,
        from_core: usize,
        generation: u64,
        state: &HandOffState,
        outcome: Result<(), String>,
        paused_us: u64,
    ) {
        let region = state.region.id;
        let started = outcome
            .and_then(|()| {
                handoff_files::remove_incoming(&self.hand_offs.core_dir, region, generation)
            })
            .and_then(|()| self.store.add_handed_off(state));
        if let Err(message) = started {
            self.hand_offs.failed = Some(message);
            return;
        }
        self.hand_offs.crash_point("installed");
        self.hand_offs.incoming.remove(&region);
        self.hand_offs
            .placement
            .insert(region, (self.core, generation));
        tracing::info!(
            region = %state.region,
            from = from_core,
            generation,
            paused_us,
            "region handed over from another core"
        );
        self.on_regions_changed(vec![state.region.clone()]);
        let done = CrossCore::HandOffDone {
            region,
            installed: true,
        };
        if !self.links.try_send(from_core, done) {
            // The source then keeps its copy until it restarts, where recovery frees it.
            tracing::warn!(
                from_core,
                "cross-core channel full; the source frees its copy at restart"
            );
        }
        self.unpark(region);
    }

    /// The target's answer, on the source core.
    pub(super) fn on_hand_off_done(&mut self, region: RegionId, installed: bool) {
        let Some(Outgoing::Sent {
            to,
            generation,
            state,
        }) = self.hand_offs.outgoing.remove(&region)
        else {
            return;
        };
        if !installed {
            return self.take_back(region, &state);
        }
        self.hand_offs.crash_point("done");
        self.hand_offs.learn(region, Some(to), generation);
        if let Err(message) = snapshot_files::remove_region(&self.snapshot_dir, region) {
            self.hand_offs.failed = Some(message);
            return;
        }
        self.carried.removed(region);
        if self.hand_offs.markers.remove(&region).is_some() {
            if let Err(message) =
                handoff_files::write_markers(&self.hand_offs.core_dir, &self.hand_offs.markers)
            {
                self.hand_offs.failed = Some(message);
                return;
            }
        }
        self.unpark(region);
        self.hand_off_ended(region);
    }

    /// Tells the balancer (core 0) that the hand-off of `region` ended.
    fn hand_off_ended(&mut self, region: RegionId) {
        if self.core == 0 {
            self.on_hand_off_ended(region);
        } else {
            let _ = self.links.try_send(0, CrossCore::HandOffEnded { region });
        }
    }

    pub(super) fn on_hand_off_ended(&mut self, region: RegionId) {
        if self.hand_offs.balancing.is_some_and(|(r, _)| r == region) {
            self.hand_offs.balancing = None;
        }
    }

    pub(super) fn on_placement(&mut self, placement: Vec<(RegionId, Option<usize>, u64)>) {
        for (region, core, generation) in placement {
            if self.hand_offs.generation(region) > generation {
                continue;
            }
            self.hand_offs.learn(region, core, generation);
            let elsewhere = core.is_some_and(|c| c != self.core);
            if self.store.raft(region).is_none() || self.store.is_uninitialized(region) {
                self.store.set_elsewhere(region, elsewhere);
            }
        }
    }
}
