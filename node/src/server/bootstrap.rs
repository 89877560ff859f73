//! Startup: the data directory's metadata (new cluster or existing one), the initial Region
//! layout handed out by the embedded placement driver, and each core's recovery of its
//! Regions from snapshots plus the WAL.

use std::path::{Path, PathBuf};

use tessera_core::{Entry, LogIndex, MemStorage, NodeId, RegionId, Snapshot, SnapshotMetadata};
use tessera_wal::{LogBatch, LogRead, Wal};

use crate::config::ConfigError;
use crate::config::NodeConfig;
use crate::kv::KvState;
use crate::meta::{DataMeta, MetaError, RegionMeta, StoreMeta};
use crate::region::{owning_core, validate_layout, Region, RegionEpoch};
use crate::server::snapshot_files::{self, SnapshotFile};
use crate::store::{Store, Tombstone};

/// Entries read back from the WAL per call during recovery.
const RECOVERY_READ_BYTES_MAX: usize = 8 << 20;

/// The embedded placement driver's first layout: Regions split at `split_keys`, ids from 1,
/// every Region on every store (up to `replicas` of them, lowest ids first).
pub fn initial_layout(split_keys: &[String], stores: &[NodeId], replicas: usize) -> Vec<Region> {
    let mut keys: Vec<Vec<u8>> = split_keys.iter().map(|k| k.as_bytes().to_vec()).collect();
    keys.sort();
    let mut peers: Vec<NodeId> = stores.to_vec();
    peers.sort();
    peers.truncate(replicas.max(1));
    let mut bounds = vec![Vec::new()];
    bounds.extend(keys);
    bounds.push(Vec::new());
    bounds
        .windows(2)
        .enumerate()
        .map(|(i, pair)| Region {
            id: RegionId(i as u64 + 1),
            start_key: pair[0].clone(),
            end_key: pair[1].clone(),
            epoch: RegionEpoch {
                version: 1,
                conf_version: 1,
            },
            peers: peers.clone(),
        })
        .collect()
}

/// A cluster id that is never 0 and unlikely to repeat.
pub fn new_cluster_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mixed =
        tessera_core::rng::SplitMix64::new(nanos ^ u64::from(std::process::id())).next_u64();
    // TOML integers are signed 64-bit: keep ids in 63 bits.
    (mixed & i64::MAX as u64).max(1)
}

/// Why the node cannot start from its data directory and config.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Pd(String),
}

/// Loads the metadata of `config.data_dir`, or creates it for a new single-node cluster.
///
/// # Errors
/// `MetaError` when the directory is damaged or was written for another node or core count.
pub fn load_or_create_meta(
    config: &NodeConfig,
    shutdown: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<Option<DataMeta>, BootstrapError> {
    if let Some(meta) = load_meta(config)? {
        return Ok(Some(meta));
    }
    if !config.join.is_empty() {
        return super::pd::join(config, shutdown).map_err(BootstrapError::Pd);
    }
    if config.replicas > 1 && config.initial_cluster.is_empty() {
        return super::pd::bootstrap(config, shutdown).map_err(BootstrapError::Pd);
    }
    create_meta(config).map(Some)
}

/// Reads and checks existing metadata; `None` for a fresh directory.
///
/// # Errors
/// As `load_or_create_meta`.
fn load_meta(config: &NodeConfig) -> Result<Option<DataMeta>, BootstrapError> {
    let dir = &config.data_dir;
    let cores = config.core_count();
    if let Some(meta) = DataMeta::load(dir)? {
        let mismatch = |what: String| MetaError::Mismatch {
            path: dir.clone(),
            what,
        };
        if meta.node_id != config.node_id {
            return Err(BootstrapError::Meta(mismatch(format!(
                "node {} (this is node {})",
                meta.node_id, config.node_id
            ))));
        }
        if meta.cores != cores {
            return Err(BootstrapError::Meta(mismatch(format!(
                "a node with {} cores (started with {cores}; pass --cores {})",
                meta.cores, meta.cores
            ))));
        }
        meta.regions(dir)?;
        return Ok(Some(meta));
    }
    Ok(None)
}

/// A new single-node cluster, or this node's part of a static `initial_cluster`.
fn create_meta(config: &NodeConfig) -> Result<DataMeta, BootstrapError> {
    let dir = &config.data_dir;
    let cores = config.core_count();
    let members = config.initial_members()?;
    let stores: Vec<StoreMeta> = if members.is_empty() {
        vec![StoreMeta {
            node_id: config.node_id,
            host: config.listen_host.to_string(),
            client_port: config.client_port,
            peer_port: config.peer_port,
            cores,
        }]
    } else {
        members
            .iter()
            .map(|m| StoreMeta {
                node_id: m.node_id,
                host: m.host.clone(),
                client_port: m.client_port,
                peer_port: m.peer_port,
                cores,
            })
            .collect()
    };
    let node_ids: Vec<NodeId> = stores.iter().map(|s| NodeId(s.node_id)).collect();
    let replicas = if members.is_empty() {
        1
    } else {
        config.replicas.max(members.len().min(3))
    };
    let regions = initial_layout(&config.initial_split_keys, &node_ids, replicas);
    validate_layout(&regions).map_err(|message| MetaError::Damaged {
        path: dir.join("meta.toml"),
        message,
    })?;
    // Every member of a static initial cluster derives the same id from the same list.
    let cluster_id = if members.is_empty() {
        new_cluster_id()
    } else {
        let mut list = config.initial_cluster.clone();
        list.sort();
        (crate::server::snapshot_files::checksum(list.join(",").as_bytes()) & i64::MAX as u64)
            .max(1)
    };
    let meta = DataMeta {
        cluster_id,
        node_id: config.node_id,
        cores,
        stores,
        regions: regions.iter().map(RegionMeta::from_region).collect(),
        // A single node hosts its own driver; a static cluster's is its lowest id.
        pd_node: 0,
    };
    meta.store(dir)?;
    tracing::info!(
        cluster_id = meta.cluster_id,
        regions = regions.len(),
        "bootstrapped a new cluster"
    );
    Ok(meta)
}

/// Where core `core` keeps its WAL and snapshots.
pub fn core_dir(data_dir: &Path, core: usize) -> PathBuf {
    data_dir.join(format!("core-{core}"))
}

/// What recovery found, for the startup log.
#[derive(Debug, Default)]
pub struct RecoverySummary {
    pub regions: usize,
    pub snapshots: usize,
    pub entries: usize,
}

/// Where recovery finds Region snapshots: the core's snapshot directory (a `Path`), or the
/// simulated disk of the deterministic simulation.
pub trait SnapshotSource {
    /// The Regions that have a snapshot.
    ///
    /// # Errors
    /// When the snapshots cannot be listed.
    fn regions(&self) -> Result<Vec<RegionId>, String>;
    /// The newest snapshot of `region`, if any.
    ///
    /// # Errors
    /// When it cannot be read or is damaged.
    fn newest(&self, region: RegionId) -> Result<Option<SnapshotFile>, String>;
    /// The tombstones of destroyed replicas (none by default: a source that never destroys).
    ///
    /// # Errors
    /// When they cannot be read.
    fn tombstones(&self) -> Result<Vec<Tombstone>, String> {
        Ok(Vec::new())
    }
}

impl SnapshotSource for Path {
    fn regions(&self) -> Result<Vec<RegionId>, String> {
        snapshot_files::regions(self)
    }

    fn newest(&self, region: RegionId) -> Result<Option<SnapshotFile>, String> {
        snapshot_files::newest(self, region)
    }

    fn tombstones(&self) -> Result<Vec<Tombstone>, String> {
        snapshot_files::read_tombstones(self)
    }
}

/// Rebuilds the Store of core `core`: each of its Regions from its newest snapshot (or the
/// bootstrap state) plus the WAL entries after it. The node passes its WAL and snapshot
/// directory; the deterministic simulation passes its in-memory log and snapshots, so both
/// recover through this code.
///
/// The Regions are those of the first layout (`regions`, from `meta.toml`) that this core
/// owns and that list this node among their peers, plus every Region with a snapshot in
/// `snapshots` (Regions created by splits start with one, and so does a replica a leader
/// seeded after a membership change). A node of a static cluster larger than `replicas`
/// creates no replica of a Region it is not a peer of: it would be an idle group nobody
/// talks to. A snapshot's envelope gives the Region's range and epoch as of the snapshot;
/// later splits replay from the WAL. A destroyed replica (a tombstone) is left out unless
/// a newer snapshot (at a higher conf version: it was added again) exists. A Region the
/// Store knows on another core of the node (`Store::set_elsewhere`: handed off, see
/// `core::handoff`) is left out too; the caller frees what this core still holds of it.
///
/// # Errors
/// A message naming the Region and what could not be read.
pub fn recover_store(
    store: &mut Store,
    regions: &[Region],
    core: usize,
    cores: usize,
    wal: &impl LogRead,
    snapshots: &(impl SnapshotSource + ?Sized),
) -> Result<RecoverySummary, String> {
    let mut summary = RecoverySummary::default();
    let node = store.node();
    let mut ids: Vec<RegionId> = regions
        .iter()
        .filter(|r| owning_core(r.id, cores) == core && r.peers.contains(&node))
        .map(|r| r.id)
        .collect();
    ids.extend(snapshots.regions()?);
    ids.sort_unstable();
    ids.dedup();
    ids.retain(|id| !store.is_elsewhere(*id));
    store.restore_tombstones(snapshots.tombstones()?);
    for id in ids {
        let known = regions.iter().find(|r| r.id == id);
        let snapshot = snapshots
            .newest(id)
            .map_err(|e| format!("region {}: {e}", id.0))?;
        if store.tombstones().contains_key(&id) && !added_again(store, id, snapshot.as_ref()) {
            tracing::info!(
                region = id.0,
                "not recovering a destroyed replica (tombstone)"
            );
            continue;
        }
        let (region, storage, kv, snapshot_found, entries) =
            recover_region(id, known, wal, snapshot)?;
        summary.regions += 1;
        summary.snapshots += usize::from(snapshot_found);
        summary.entries += entries;
        store
            .add_region(region.clone(), storage, kv)
            .map_err(|e| format!("{region}: {e}"))?;
    }
    Ok(summary)
}

/// True if `snapshot` of a tombstoned Region is newer than its tombstone.
fn added_again(store: &Store, region: RegionId, snapshot: Option<&SnapshotFile>) -> bool {
    snapshot
        .and_then(|file| {
            crate::split::decode_envelope_region(&file.data)
                .ok()
                .flatten()
        })
        .is_some_and(|described| {
            store
                .tombstones()
                .get(&region)
                .is_some_and(|dead| described.epoch.conf_version > *dead)
        })
}

/// Completes recovery in the WAL (see [`recovery_batch`]) before the core serves.
///
/// # Errors
/// When the WAL append fails.
pub async fn complete_recovery(wal: &Wal, store: &Store) -> Result<(), String> {
    let batch = recovery_batch(wal, store);
    if batch.is_empty() {
        return Ok(());
    }
    wal.append(batch)
        .await
        .map_err(|e| format!("recording the recovered state in the WAL: {e}"))
}

/// What the WAL must record after `recover_store` so that it agrees with the recovered
/// Store before new entries are appended (empty when it already does):
/// 1. a Region new to the WAL starts from the bootstrap snapshot (a compaction mark at
///    `BOOTSTRAP_INDEX`), so the WAL accepts its first entries;
/// 2. a Region whose newest snapshot the WAL does not continue — a crash came after the
///    snapshot received from a leader was written to its file but before the WAL record
///    holding its install mark was synced — gets that install mark now. Without it the WAL
///    would still end before the snapshot (the next entries would leave a gap), or would
///    still hold the replaced entries, and the next recovery would drop every entry logged
///    after the snapshot as not continuing it.
pub fn recovery_batch(wal: &impl LogRead, store: &Store) -> LogBatch {
    let mut batch = LogBatch::new();
    // 3. a destroyed replica whose removal the WAL has not recorded yet.
    for region in store.tombstones().keys() {
        if store.raft(*region).is_none() && wal.last_index(*region).is_ok() {
            batch.remove_region(*region);
        }
    }
    for region in store.regions() {
        if wal.last_index(region.id).is_err() {
            batch.compact_to(
                region.id,
                tessera_core::BOOTSTRAP_INDEX,
                tessera_core::BOOTSTRAP_TERM,
            );
            continue;
        }
        let raft = store
            .raft(region.id)
            .expect("a recovered Region has a group");
        let snapshot = raft.storage().snapshot_metadata();
        let continues = match wal.term(region.id, snapshot.index) {
            Ok(term) => term == snapshot.term,
            // The WAL's own mark is past the snapshot: nothing to record.
            Err(tessera_wal::WalError::Compacted { .. }) => true,
            Err(_) => false,
        };
        if !continues {
            batch.install_snapshot(region.id, snapshot.index, snapshot.term);
        }
    }
    batch
}

/// One Region: `known` is its first-layout entry, if it has one.
fn recover_region(
    id: RegionId,
    known: Option<&Region>,
    wal: &impl LogRead,
    snapshot: Option<SnapshotFile>,
) -> Result<(Region, MemStorage, KvState, bool, usize), String> {
    let snapshot_found = snapshot.is_some();
    let mut kv = KvState::default();
    let mut region = known.cloned();
    if let Some(file) = &snapshot {
        let (described, state) = crate::split::decode_envelope(&file.data)
            .map_err(|e| format!("region {}: snapshot {}: {e}", id.0, file.path.display()))?;
        kv = state;
        region = described.or(region);
    }
    let region = region.ok_or_else(|| {
        format!(
            "region {}: a snapshot file without its region's range",
            id.0
        )
    })?;
    let mut storage = Store::bootstrap_storage(&region);
    if let Some(file) = snapshot {
        storage.apply_snapshot(Snapshot {
            metadata: SnapshotMetadata {
                index: file.index,
                term: file.term,
                conf_state: file.conf_state,
            },
            data: file.data.into(),
        });
    }
    let after = storage_last(&storage);
    let after_term = {
        use tessera_core::Storage;
        storage.term(after).unwrap_or_default()
    };
    // A crash between writing a received snapshot and logging its installation leaves WAL
    // entries that may not continue the snapshot's history: keep them only if the WAL agrees
    // with the snapshot at its index (then Log Matching makes the rest consistent).
    let continues = wal
        .term(region.id, after)
        .map_or(true, |term| term == after_term);
    let entries = if continues {
        wal_entries_after(wal, region.id, after)?
    } else {
        tracing::warn!(
            region = region.id.0,
            index = after.0,
            "WAL does not continue the newest snapshot; its entries after it are dropped"
        );
        Vec::new()
    };
    storage.append(&entries);
    if let Ok(Some(mut hard_state)) = wal.hard_state(region.id) {
        // A term never lags the terms in its own log (see the crash case above).
        if hard_state.term < after_term {
            hard_state.term = after_term;
            hard_state.vote = None;
        }
        storage.set_hard_state(hard_state);
    }
    Ok((region, storage, kv, snapshot_found, entries.len()))
}

fn storage_last(storage: &MemStorage) -> LogIndex {
    use tessera_core::Storage;
    storage.last_index()
}

/// The Region's WAL entries after `after` (entries at or below it are covered already).
fn wal_entries_after(
    wal: &impl LogRead,
    region: RegionId,
    after: LogIndex,
) -> Result<Vec<Entry>, String> {
    let Ok(last) = wal.last_index(region) else {
        return Ok(Vec::new()); // nothing logged for this Region yet
    };
    let first = wal.first_index(region).map_err(|e| e.to_string())?;
    let mut low = first.max(after.next());
    if first > after.next() && last >= first {
        return Err(format!(
            "region {}: the WAL starts at index {first:?} but the newest snapshot ends at {after:?}; entries in between are missing",
            region.0
        ));
    }
    let mut entries = Vec::new();
    while low <= last {
        let chunk = wal
            .entries(region, low, last.next(), RECOVERY_READ_BYTES_MAX)
            .map_err(|e| format!("region {}: {e}", region.0))?;
        let Some(end) = chunk.last().map(|e| e.index) else {
            break;
        };
        entries.extend(chunk);
        low = end.next();
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_layout_is_two_regions_split_at_m() {
        let layout = initial_layout(&["m".to_string()], &[NodeId(1)], 1);
        assert_eq!(layout.len(), 2);
        assert_eq!(
            (layout[0].start_key.as_slice(), layout[0].end_key.as_slice()),
            (&b""[..], &b"m"[..])
        );
        assert_eq!(
            (layout[1].start_key.as_slice(), layout[1].end_key.as_slice()),
            (&b"m"[..], &b""[..])
        );
        validate_layout(&layout).unwrap();
    }

    #[test]
    fn replicas_pick_the_lowest_store_ids() {
        let layout = initial_layout(&[], &[NodeId(3), NodeId(1), NodeId(2), NodeId(4)], 3);
        assert_eq!(layout.len(), 1);
        assert_eq!(layout[0].peers, vec![NodeId(1), NodeId(2), NodeId(3)]);
    }
}
