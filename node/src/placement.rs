//! The placement driver's metadata, as a state machine without I/O: the stores, every Region
//! with its approximate size, leader and epoch, and the Region id allocator.
//!
//! It changes only through `on_heartbeat` (a store's view of its replicas), `ask_split`
//! (a new Region id), `add_store` (a store joining a running cluster) and the moves it
//! orders or cancels (`order_move`, `cancel_move`, and `balance.rs` when balancing is on;
//! with balancing on, a move whose target store went silent is cancelled). Each change bumps `version`; the host (core 0 of the node that runs the
//! driver, `server::core`) writes `encode()` to `pd.toml` durably whenever the version moved,
//! and answers `ask_split` only once the version that allocated the id is durable, so an id is
//! never handed out twice, not even across a restart.
//!
//! Invariants:
//! 1. `next_region_id` is above every Region id it knows and every id it handed out.
//! 2. A Region's record only moves forward: a report replaces it when its epoch is newer, or
//!    when the epoch is the same and the reporting store is the Region's leader.
//! 3. Ids for a split are congruent to the parent's id modulo the stores' core count, so the
//!    new Region is owned by the same core as its parent on every node (no data crosses
//!    cores on a split; balancing Regions across cores is a move, not a split).
//! 4. At most one move per Region is in progress; a move is kept (durably) until a report
//!    shows its target among the Region's peers and its source gone.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tessera_core::{NodeId, RegionId};
use tessera_transport::client::{
    PdStatus, RegionDescriptor, RegionEpoch as WireEpoch, RegionReport, StoreReport,
};
use tessera_transport::ClusterId;

use tessera_transport::client::{MoveOrder, StoreDescriptor};

use crate::meta::{DataMeta, RegionMeta, StoreMeta};
use crate::region::{Region, RegionEpoch};

/// A move in progress: the Region's replica on `from` goes to `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveRecord {
    pub region: u64,
    pub from: u64,
    pub to: u64,
    /// The move undoes a cancelled one (`cancel_move`); it cannot be cancelled itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback: bool,
}

/// What the driver answers a heartbeat with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeartbeatAnswer {
    /// Every move in progress (the store drives those of the Regions it leads).
    pub moves: Vec<MoveOrder>,
    /// The reporting store's replicas whose Region the driver knows at a newer membership
    /// without that store: the store destroys them.
    pub stale: Vec<RegionDescriptor>,
    pub stores: Vec<StoreDescriptor>,
}

/// One Region as the driver records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionRecord {
    #[serde(flatten)]
    pub meta: RegionMeta,
    /// The leader as last reported; 0 when unknown.
    pub leader: u64,
    pub approximate_bytes: u64,
    pub keys: u64,
}

/// The file `pd.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PdFile {
    cluster_id: u64,
    next_region_id: u64,
    stores: Vec<StoreMeta>,
    regions: Vec<RegionRecord>,
    #[serde(default)]
    moves: Vec<MoveRecord>,
}

/// A store's liveness as seen since the driver started (not persisted: it is about now).
#[derive(Clone, Debug, Default)]
struct Liveness {
    last_heartbeat_ms: Option<u64>,
    heartbeats: u64,
    /// The Regions the store reported a replica of in its last heartbeat (a removed one
    /// stays until the store destroys it).
    regions: std::collections::BTreeSet<u64>,
}

/// The placement driver's metadata. See the module docs.
#[derive(Clone, Debug)]
pub struct Placement {
    cluster_id: u64,
    next_region_id: u64,
    stores: BTreeMap<u64, StoreMeta>,
    liveness: BTreeMap<u64, Liveness>,
    regions: BTreeMap<u64, RegionRecord>,
    moves: BTreeMap<u64, MoveRecord>,
    version: u64,
    /// Balance Region counts across stores (`balance.rs`); not persisted (configuration).
    pub balance: bool,
    /// A store whose last heartbeat is older than this is not counted as alive.
    pub store_alive_ms: u64,
    /// Also balance leaders (with `balance`); not persisted (configuration).
    pub balance_leaders: bool,
}

impl Placement {
    /// The metadata of a cluster the driver has not recorded yet: its first layout.
    pub fn from_meta(meta: &DataMeta) -> Placement {
        let regions: BTreeMap<u64, RegionRecord> = meta
            .regions
            .iter()
            .map(|r| {
                let record = RegionRecord {
                    meta: r.clone(),
                    leader: 0,
                    approximate_bytes: 0,
                    keys: 0,
                };
                (r.id, record)
            })
            .collect();
        let next_region_id = regions.keys().max().map_or(1, |id| id + 1);
        Placement {
            cluster_id: meta.cluster_id,
            next_region_id,
            stores: meta.stores.iter().map(|s| (s.node_id, s.clone())).collect(),
            liveness: BTreeMap::new(),
            regions,
            moves: BTreeMap::new(),
            version: 1,
            balance: false,
            store_alive_ms: 10_000,
            balance_leaders: false,
        }
    }

    /// Reads what `encode` wrote.
    ///
    /// # Errors
    /// A sentence when the text is not a valid `pd.toml`.
    pub fn decode(text: &str) -> Result<Placement, String> {
        let file: PdFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let regions: BTreeMap<u64, RegionRecord> =
            file.regions.into_iter().map(|r| (r.meta.id, r)).collect();
        if let Some(id) = regions.keys().find(|id| **id >= file.next_region_id) {
            return Err(format!(
                "region {id} is not below next_region_id {}",
                file.next_region_id
            ));
        }
        Ok(Placement {
            cluster_id: file.cluster_id,
            next_region_id: file.next_region_id,
            stores: file.stores.into_iter().map(|s| (s.node_id, s)).collect(),
            liveness: BTreeMap::new(),
            regions,
            moves: file.moves.into_iter().map(|m| (m.region, m)).collect(),
            version: 1,
            balance: false,
            store_alive_ms: 10_000,
            balance_leaders: false,
        })
    }

    /// The persistent part, as the text of `pd.toml`.
    pub fn encode(&self) -> String {
        let file = PdFile {
            cluster_id: self.cluster_id,
            next_region_id: self.next_region_id,
            stores: self.stores.values().cloned().collect(),
            regions: self.regions.values().cloned().collect(),
            moves: self.moves.values().copied().collect(),
        };
        toml::to_string(&file).expect("placement metadata serializes")
    }

    /// Bumped by every change of the persistent part.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Records a store's heartbeat at `now_ms` (any monotonic clock in milliseconds) and
    /// answers it: moves in progress (finished ones are dropped first, and with balancing on
    /// a new one may be ordered), the reporter's stale replicas, the stores.
    ///
    /// # Errors
    /// When the store is not a member of the cluster.
    pub fn on_heartbeat(
        &mut self,
        node: NodeId,
        reports: &[RegionReport],
        now_ms: u64,
    ) -> Result<HeartbeatAnswer, String> {
        self.record_heartbeat(node, reports, now_ms)?;
        self.finish_moves();
        if self.balance {
            self.cancel_moves_to_silent_stores(now_ms);
            if let Some(order) = crate::balance::plan(self, now_ms, self.balance_leaders) {
                tracing::info!(?order, "placement driver balances a region");
                self.moves.insert(order.region, order);
                self.version += 1;
            }
        }
        let stale = reports
            .iter()
            .filter(|report| self.is_stale(node, report))
            .filter_map(|report| {
                let record = self.regions.get(&report.region.region_id.0)?;
                Some(report_of(record).region)
            })
            .collect();
        Ok(HeartbeatAnswer {
            moves: self.move_orders(),
            stale,
            stores: self.store_descriptors(),
        })
    }

    fn record_heartbeat(
        &mut self,
        node: NodeId,
        reports: &[RegionReport],
        now_ms: u64,
    ) -> Result<(), String> {
        if !self.stores.contains_key(&node.0) {
            return Err(format!("store {} is not a member of this cluster", node.0));
        }
        let liveness = self.liveness.entry(node.0).or_default();
        liveness.last_heartbeat_ms = Some(now_ms);
        liveness.heartbeats += 1;
        liveness.regions = reports.iter().map(|r| r.region.region_id.0).collect();
        let mut changed = false;
        for report in reports {
            changed |= self.record(node, report);
        }
        if changed {
            self.version += 1;
        }
        Ok(())
    }

    /// Invariant 2. True if the record changed.
    fn record(&mut self, reporter: NodeId, report: &RegionReport) -> bool {
        let region = &report.region;
        let id = region.region_id.0;
        if id >= self.next_region_id {
            // Created by a split whose id an earlier driver handed out: never hand it again.
            self.next_region_id = id + 1;
        }
        let reported_epoch = (region.epoch.version, region.epoch.conf_version);
        let accept = match self.regions.get(&id) {
            None => true,
            Some(known) => {
                let known_epoch = (known.meta.version, known.meta.conf_version);
                reported_epoch > known_epoch
                    || (reported_epoch == known_epoch && region.leader == Some(reporter))
            }
        };
        if !accept {
            return false;
        }
        let record = RegionRecord {
            meta: RegionMeta::from_region(&Region {
                id: region.region_id,
                start_key: region.start_key.clone(),
                end_key: region.end_key.clone(),
                epoch: RegionEpoch {
                    version: region.epoch.version,
                    conf_version: region.epoch.conf_version,
                },
                peers: region.peers.clone(),
            }),
            leader: region.leader.map_or(0, |l| l.0),
            approximate_bytes: report.approximate_bytes,
            keys: report.keys,
        };
        let changed = self.regions.get(&id) != Some(&record);
        self.regions.insert(id, record);
        changed
    }

    /// True if `node`'s replica in `report` was removed: the driver knows the Region at a
    /// newer membership without `node`.
    fn is_stale(&self, node: NodeId, report: &RegionReport) -> bool {
        self.regions
            .get(&report.region.region_id.0)
            .is_some_and(|record| {
                record.meta.conf_version > report.region.epoch.conf_version
                    && !record.meta.peers.contains(&node.0)
            })
    }

    /// Drops the moves whose Region shows the target as a peer and the source gone, and the
    /// leadership transfers (source = target) whose Region shows the target leading.
    fn finish_moves(&mut self) {
        let regions = &self.regions;
        let before = self.moves.len();
        self.moves.retain(|id, m| {
            regions.get(id).is_some_and(|record| {
                let peers = &record.meta.peers;
                if m.from == m.to {
                    return record.leader != m.to && peers.contains(&m.to);
                }
                !peers.contains(&m.to) || peers.contains(&m.from)
            })
        });
        if self.moves.len() != before {
            self.version += 1;
        }
    }

    /// The moves in progress.
    pub fn move_orders(&self) -> Vec<MoveOrder> {
        self.moves
            .values()
            .map(|m| MoveOrder {
                region_id: RegionId(m.region),
                from: NodeId(m.from),
                to: NodeId(m.to),
                rollback: m.rollback,
            })
            .collect()
    }

    /// The moves in progress, by Region.
    pub fn moves(&self) -> &BTreeMap<u64, MoveRecord> {
        &self.moves
    }

    /// Every store's descriptor.
    pub fn store_descriptors(&self) -> Vec<StoreDescriptor> {
        self.stores
            .values()
            .map(crate::server::pd::store_descriptor)
            .collect()
    }

    /// The stores, by node id.
    pub fn stores(&self) -> &BTreeMap<u64, StoreMeta> {
        &self.stores
    }

    /// The Regions, by id.
    pub fn regions(&self) -> &BTreeMap<u64, RegionRecord> {
        &self.regions
    }

    /// True if `node`'s last heartbeat reported a replica of `region`. A move must not target
    /// such a store: a stale replica there could acknowledge the re-add's entries and then
    /// apply its own old removal, and the leader would count on a log that is gone.
    pub fn holds_replica(&self, node: u64, region: u64) -> bool {
        self.liveness
            .get(&node)
            .is_some_and(|l| l.regions.contains(&region))
    }

    /// When `node` last sent a heartbeat (driver clock, ms), if it did since the start.
    pub fn last_heartbeat_ms(&self, node: u64) -> Option<u64> {
        self.liveness.get(&node).and_then(|l| l.last_heartbeat_ms)
    }

    /// Adds a store joining the running cluster; a store that joined before with the same
    /// addresses is accepted again (it may have lost the answer). The caller answers only
    /// once `version()` is durable.
    ///
    /// # Errors
    /// When the node id is taken by a store with other addresses, or the core count differs.
    pub fn add_store(&mut self, store: StoreMeta) -> Result<(), String> {
        if let Some(known) = self.stores.get(&store.node_id) {
            if *known != store {
                return Err(format!(
                    "node id {} already joined with other addresses",
                    store.node_id
                ));
            }
            return Ok(());
        }
        if self.stores.values().any(|s| s.cores != store.cores) {
            return Err(format!(
                "every node of a cluster must run the same number of cores (store {} has {})",
                store.node_id, store.cores
            ));
        }
        tracing::info!(node = store.node_id, "store joined the running cluster");
        self.stores.insert(store.node_id, store);
        self.version += 1;
        Ok(())
    }

    /// Orders a move of `region`'s replica from `from` (`NodeId(0)`: the peer with the most
    /// Regions that is not the leader) to `to`.
    ///
    /// # Errors
    /// A sentence when the Region or a store is unknown, `to` holds the Region already,
    /// `from` does not, or a move of the Region is in progress.
    pub fn order_move(
        &mut self,
        region: RegionId,
        from: NodeId,
        to: NodeId,
    ) -> Result<MoveRecord, String> {
        let record = self
            .regions
            .get(&region.0)
            .ok_or_else(|| format!("region {} is unknown to the placement driver", region.0))?;
        if !self.stores.contains_key(&to.0) {
            return Err(format!("store {} is not a member of this cluster", to.0));
        }
        let peers = &record.meta.peers;
        if peers.contains(&to.0) {
            return Err(format!("region {} is on store {} already", region.0, to.0));
        }
        if self.holds_replica(to.0, region.0) {
            return Err(format!(
                "store {} still holds a replica of region {} (a removed one, being destroyed); \
                 try again after its next heartbeat",
                to.0, region.0
            ));
        }
        if let Some(current) = self.moves.get(&region.0) {
            return Err(format!(
                "region {} is being moved from store {} to store {} already",
                region.0, current.from, current.to
            ));
        }
        let from = if from.0 == 0 {
            let counts = crate::balance::region_counts(self);
            peers
                .iter()
                .copied()
                .filter(|p| *p != record.leader)
                .max_by_key(|p| (counts.get(p).copied().unwrap_or(0), *p))
                .ok_or_else(|| format!("region {} has no replica to move", region.0))?
        } else if peers.contains(&from.0) {
            from.0
        } else {
            return Err(format!(
                "region {} has no replica on store {}",
                region.0, from.0
            ));
        };
        let order = MoveRecord {
            region: region.0,
            from,
            to: to.0,
            rollback: false,
        };
        self.moves.insert(region.0, order);
        self.version += 1;
        Ok(order)
    }

    /// Cancels the move of `region`: a leadership transfer, or a move whose target is not a
    /// member yet, is dropped; a move whose target is a member already (a learner, or a
    /// voter not yet followed by the source's removal) is rolled back by the reverse move,
    /// which removes the target's replica and keeps the source's. Answers what it did; the
    /// caller answers once `version()` is durable.
    ///
    /// A move dropped while its leader is proposing the target's addition can still leave
    /// the target a learner: the leader removes a learner no move targets (see
    /// `server::heartbeat`), so the race ends in the same state.
    ///
    /// # Errors
    /// When no move of the Region is in progress.
    pub fn cancel_move(&mut self, region: RegionId) -> Result<String, String> {
        let order = *self
            .moves
            .get(&region.0)
            .ok_or_else(|| format!("no move of region {} is in progress", region.0))?;
        if order.rollback {
            return Err(format!(
                "the move of region {} is being rolled back already (store {} leaves it)",
                region.0, order.from
            ));
        }
        let target_joined = self
            .regions
            .get(&region.0)
            .is_some_and(|record| record.meta.peers.contains(&order.to));
        self.version += 1;
        if order.from == order.to {
            self.moves.remove(&region.0);
            return Ok(format!(
                "cancelled the leadership transfer of region {} to store {}",
                region.0, order.to
            ));
        }
        if !target_joined {
            self.moves.remove(&region.0);
            return Ok(format!(
                "cancelled the move of region {} from store {} to store {} before it began",
                region.0, order.from, order.to
            ));
        }
        let reverse = MoveRecord {
            region: region.0,
            from: order.to,
            to: order.from,
            rollback: true,
        };
        self.moves.insert(region.0, reverse);
        Ok(format!(
            "rolling back the move of region {}: store {} keeps its replica, the one on store \
             {} is removed",
            region.0, order.from, order.to
        ))
    }

    /// Cancels (`cancel_move`) each move whose target store has not sent a heartbeat within
    /// `store_alive_ms`, once the driver has run that long (so a restarted driver first hears
    /// from the stores): a Region must not wait with a member on a store that is gone.
    fn cancel_moves_to_silent_stores(&mut self, now_ms: u64) {
        if now_ms <= self.store_alive_ms {
            return;
        }
        let silent: Vec<u64> = self
            .moves
            .values()
            .filter(|m| m.from != m.to && !m.rollback)
            .filter(|m| {
                self.last_heartbeat_ms(m.to)
                    .is_none_or(|at| now_ms.saturating_sub(at) > self.store_alive_ms)
            })
            .map(|m| m.region)
            .collect();
        for region in silent {
            match self.cancel_move(RegionId(region)) {
                Ok(what) => tracing::warn!(region, %what, "the target of a move went silent"),
                Err(error) => tracing::warn!(region, %error, "cannot cancel a move"),
            }
        }
    }

    /// Forgets a store (tests of the balancer only).
    #[cfg(test)]
    pub fn remove_store_for_test(&mut self, node: u64) {
        self.stores.remove(&node);
    }

    /// Allocates the id of the Region that splitting `parent` creates (invariant 3: the same
    /// residue modulo `cores`). The caller answers only once `version()` is durable.
    ///
    /// # Errors
    /// When `parent` is unknown.
    pub fn ask_split(&mut self, parent: RegionId) -> Result<RegionId, String> {
        if !self.regions.contains_key(&parent.0) {
            return Err(format!(
                "region {} is unknown to the placement driver",
                parent.0
            ));
        }
        let cores = self
            .stores
            .values()
            .map(|s| s.cores)
            .max()
            .unwrap_or(1)
            .max(1) as u64;
        let mut id = self.next_region_id;
        while id % cores != parent.0 % cores {
            id += 1;
        }
        self.next_region_id = id + 1;
        self.version += 1;
        Ok(RegionId(id))
    }

    /// The metadata for `pd status`, ages measured at `now_ms`.
    pub fn status(&self, now_ms: u64) -> PdStatus {
        let stores = self
            .stores
            .values()
            .map(|store| {
                let liveness = self
                    .liveness
                    .get(&store.node_id)
                    .cloned()
                    .unwrap_or_default();
                StoreReport {
                    store: crate::server::pd::store_descriptor(store),
                    heartbeat_age_ms: liveness
                        .last_heartbeat_ms
                        .map(|at| now_ms.saturating_sub(at)),
                    heartbeats: liveness.heartbeats,
                }
            })
            .collect();
        let regions = self.regions.values().map(report_of).collect();
        PdStatus {
            cluster_id: ClusterId(self.cluster_id),
            next_region_id: self.next_region_id,
            stores,
            regions,
            moves: self.move_orders(),
        }
    }
}

fn report_of(record: &RegionRecord) -> RegionReport {
    let meta = &record.meta;
    let region = meta.to_region().unwrap_or_else(|_| Region {
        id: RegionId(meta.id),
        start_key: Vec::new(),
        end_key: Vec::new(),
        epoch: RegionEpoch::default(),
        peers: Vec::new(),
    });
    RegionReport {
        region: RegionDescriptor {
            region_id: region.id,
            start_key: region.start_key,
            end_key: region.end_key,
            epoch: WireEpoch {
                version: region.epoch.version,
                conf_version: region.epoch.conf_version,
            },
            peers: region.peers,
            leader: (record.leader != 0).then_some(NodeId(record.leader)),
        },
        approximate_bytes: record.approximate_bytes,
        keys: record.keys,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::bootstrap::initial_layout;

    fn meta(cores: usize) -> DataMeta {
        let regions = initial_layout(&["m".into()], &[NodeId(1), NodeId(2)], 2);
        DataMeta {
            cluster_id: 9,
            node_id: 1,
            cores,
            stores: (1..=2)
                .map(|id| StoreMeta {
                    node_id: id,
                    host: "127.0.0.1".into(),
                    client_port: 7400 + 10 * id as u16,
                    peer_port: 7500 + 10 * id as u16,
                    cores,
                })
                .collect(),
            regions: regions.iter().map(RegionMeta::from_region).collect(),
            pd_node: 1,
        }
    }

    fn report(
        id: u64,
        start: &str,
        end: &str,
        version: u64,
        leader: u64,
        bytes: u64,
    ) -> RegionReport {
        RegionReport {
            region: RegionDescriptor {
                region_id: RegionId(id),
                start_key: start.as_bytes().to_vec(),
                end_key: end.as_bytes().to_vec(),
                epoch: WireEpoch {
                    version,
                    conf_version: 1,
                },
                peers: vec![NodeId(1), NodeId(2)],
                leader: (leader != 0).then_some(NodeId(leader)),
            },
            approximate_bytes: bytes,
            keys: bytes / 10,
        }
    }

    #[test]
    fn a_leaders_report_wins_at_the_same_epoch_and_a_newer_epoch_wins_always() {
        let mut pd = Placement::from_meta(&meta(2));
        pd.on_heartbeat(NodeId(2), &[report(1, "", "m", 1, 1, 500)], 10)
            .unwrap();
        assert_eq!(
            pd.status(10).regions[0].approximate_bytes,
            0,
            "a follower's view is not taken"
        );
        pd.on_heartbeat(NodeId(1), &[report(1, "", "m", 1, 1, 500)], 20)
            .unwrap();
        let status = pd.status(25);
        assert_eq!(status.regions[0].approximate_bytes, 500);
        assert_eq!(status.regions[0].region.leader, Some(NodeId(1)));
        assert_eq!(status.stores[0].heartbeat_age_ms, Some(5));
        assert_eq!(status.stores[1].heartbeats, 1);
        // After a split a follower may be first to tell: the newer epoch is taken from anyone.
        pd.on_heartbeat(
            NodeId(2),
            &[
                report(1, "", "g", 2, 0, 200),
                report(3, "g", "m", 2, 0, 300),
            ],
            30,
        )
        .unwrap();
        let status = pd.status(30);
        assert_eq!(status.regions.len(), 3);
        assert_eq!(status.regions[0].region.end_key, b"g");
        assert!(
            status.next_region_id > 3,
            "ids seen in reports are never handed out"
        );
        // An old report does not move the record back.
        pd.on_heartbeat(NodeId(1), &[report(1, "", "m", 1, 1, 900)], 40)
            .unwrap();
        assert_eq!(pd.status(40).regions[0].region.end_key, b"g");
        assert!(pd.on_heartbeat(NodeId(7), &[], 50).is_err());
    }

    #[test]
    fn split_ids_are_unique_and_stay_on_the_parents_core() {
        let mut pd = Placement::from_meta(&meta(2));
        let mut seen = std::collections::HashSet::new();
        for parent in [1u64, 2, 2, 1, 1] {
            let before = pd.version();
            let id = pd.ask_split(RegionId(parent)).unwrap();
            assert_eq!(id.0 % 2, parent % 2, "same core as the parent");
            assert!(id.0 > 2 && seen.insert(id), "fresh id {id:?}");
            assert!(pd.version() > before, "an allocation must be made durable");
        }
        assert!(pd.ask_split(RegionId(0)).is_err());
    }

    #[test]
    fn the_metadata_survives_encoding_and_a_damaged_file_is_refused() {
        let mut pd = Placement::from_meta(&meta(1));
        pd.on_heartbeat(NodeId(1), &[report(2, "m", "", 1, 1, 77)], 5)
            .unwrap();
        let id = pd.ask_split(RegionId(2)).unwrap();
        let text = pd.encode();
        let back = Placement::decode(&text).unwrap();
        assert_eq!(back.encode(), text);
        let status = back.status(0);
        assert_eq!(status.next_region_id, id.0 + 1);
        assert_eq!(status.regions[1].approximate_bytes, 77);
        assert_eq!(
            status.stores[0].heartbeat_age_ms, None,
            "liveness is not persisted"
        );
        let damaged = text.replace(
            &format!("next_region_id = {}", id.0 + 1),
            "next_region_id = 1",
        );
        assert!(Placement::decode(&damaged).is_err());
        assert!(Placement::decode("cluster_id = ").is_err());
    }
}
