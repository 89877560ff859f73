//! The WAL batch of one driver round, built without I/O so that the glommio driver
//! (`core.rs`) and the deterministic simulation write exactly the same records.
//!
//! For a round's `StoreReady`, in this order:
//! 1. the compaction marks of snapshots this core took and wrote to files since the last
//!    batch (never before their files are durable);
//! 2. per Region: a snapshot received from the leader becomes an install mark (its file must
//!    be written before the batch, so the mark never points past a durable snapshot), then
//!    the Region's new entries, then its hard state.

use tessera_core::{LogIndex, RegionId, Term};
use tessera_wal::LogBatch;

use crate::store::{SnapshotTaken, StoreReady};

/// What one round persists: snapshot files first, then one WAL batch.
#[derive(Debug, Default)]
pub struct RoundBatch {
    /// Snapshots received from leaders: write these files before appending `batch`.
    pub received_snapshots: Vec<SnapshotTaken>,
    pub batch: LogBatch,
}

/// The round's batch; see the module docs. `compactions` are the marks of snapshots taken
/// and written since the last batch.
pub fn round_batch(
    ready: &StoreReady,
    compactions: impl IntoIterator<Item = (RegionId, LogIndex, Term)>,
) -> RoundBatch {
    let mut round = RoundBatch::default();
    for (region, index, term) in compactions {
        round.batch.compact_to(region, index, term);
    }
    for (region, group) in ready.groups() {
        if let Some(snapshot) = &group.snapshot {
            let meta = &snapshot.metadata;
            round.received_snapshots.push(SnapshotTaken {
                region: *region,
                index: meta.index,
                term: meta.term,
                conf_state: meta.conf_state.clone(),
                data: snapshot.data.to_vec(),
            });
            // The Region's log restarts after the leader's snapshot.
            round.batch.install_snapshot(*region, meta.index, meta.term);
        }
        round.batch.add_entries(*region, &group.entries);
        if let Some(hard_state) = group.hard_state {
            round.batch.set_hard_state(*region, hard_state);
        }
    }
    round
}
