//! The placement driver's metadata, as a state machine without I/O: the stores, every Region
//! with its approximate size, leader and epoch, and the Region id allocator.
//!
//! It changes only through `on_heartbeat` (a store's view of its replicas) and `ask_split`
//! (a new Region id). Each change bumps `version`; the host (core 0 of the node that runs the
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

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tessera_core::{NodeId, RegionId};
use tessera_transport::client::{
    PdStatus, RegionDescriptor, RegionEpoch as WireEpoch, RegionReport, StoreReport,
};
use tessera_transport::ClusterId;

use crate::meta::{DataMeta, RegionMeta, StoreMeta};
use crate::region::{Region, RegionEpoch};

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
}

/// A store's liveness as seen since the driver started (not persisted: it is about now).
#[derive(Clone, Copy, Debug, Default)]
struct Liveness {
    last_heartbeat_ms: Option<u64>,
    heartbeats: u64,
}

/// The placement driver's metadata. See the module docs.
#[derive(Clone, Debug)]
pub struct Placement {
    cluster_id: u64,
    next_region_id: u64,
    stores: BTreeMap<u64, StoreMeta>,
    liveness: BTreeMap<u64, Liveness>,
    regions: BTreeMap<u64, RegionRecord>,
    version: u64,
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
            version: 1,
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
            version: 1,
        })
    }

    /// The persistent part, as the text of `pd.toml`.
    pub fn encode(&self) -> String {
        let file = PdFile {
            cluster_id: self.cluster_id,
            next_region_id: self.next_region_id,
            stores: self.stores.values().cloned().collect(),
            regions: self.regions.values().cloned().collect(),
        };
        toml::to_string(&file).expect("placement metadata serializes")
    }

    /// Bumped by every change of the persistent part.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Records a store's heartbeat at `now_ms` (any monotonic clock in milliseconds).
    ///
    /// # Errors
    /// When the store is not a member of the cluster.
    pub fn on_heartbeat(
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
                    .copied()
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
