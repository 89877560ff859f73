//! The WAL batch of one driver round, built without I/O so that the glommio driver
//! (`core.rs`) and the deterministic simulation write exactly the same records.
//!
//! For a round's `StoreReady`, in this order:
//! 1. the compaction marks of snapshots this core took and wrote to files since the last
//!    batch (never before their files are durable);
//! 2. hard states carried over from earlier rounds (see below), for Regions without a newer
//!    one in this round, then the removals of destroyed Regions (`Carried::removed`);
//! 3. per Region: a snapshot received from the leader becomes an install mark (its file must
//!    be written before the batch, so the mark never points past a durable snapshot), then
//!    the Region's new entries, then its hard state.
//!
//! A round in which no Region has anything that must be durable (no snapshot, no entries,
//! no new term or vote: at most commit indexes moved) and no compaction mark waits writes
//! nothing: its hard states are carried to the next batch that is written anyway. This
//! saves the leader an fdatasync between a quorum's acknowledgement and the client's answer,
//! and the followers one per commit they learn. It is safe because the commit index is
//! never promised to anyone: after a crash a node recovers a lower commit (never lower than
//! its snapshot) and learns the rest from the leader again, as Raft allows (commitIndex is
//! volatile state in the Raft paper).

use std::collections::{BTreeMap, BTreeSet};

use tessera_core::{HardState, LogIndex, RegionId, Term};
use tessera_wal::LogBatch;

use crate::store::{SnapshotTaken, StoreReady};

/// What one round persists: snapshot files first, then one WAL batch.
#[derive(Debug, Default)]
pub struct RoundBatch {
    /// Snapshots received from leaders: write these files before appending `batch`.
    pub received_snapshots: Vec<SnapshotTaken>,
    /// Empty when the round needs no write (then no fdatasync either).
    pub batch: LogBatch,
}

/// What waits, between rounds, for the next WAL batch. One per core.
#[derive(Debug, Default)]
pub struct Carried {
    /// Marks of snapshots taken and written to files since the last batch.
    compactions: Vec<(RegionId, LogIndex, Term)>,
    /// Hard states of rounds that wrote nothing (only commit indexes moved), newest per
    /// Region.
    hard_states: BTreeMap<RegionId, HardState>,
    /// Destroyed Regions (their tombstones are durable) whose removal the WAL has not
    /// recorded yet.
    removals: Vec<RegionId>,
}

impl Carried {
    /// A snapshot of `region` at `index`/`term` is durable in its file: its compaction mark
    /// goes in the next batch.
    pub fn compacted(&mut self, region: RegionId, index: LogIndex, term: Term) {
        self.compactions.push((region, index, term));
    }

    /// `region` was destroyed and its tombstone is durable: the next batch records its
    /// removal (last, after anything carried), so its WAL share can be purged.
    pub fn removed(&mut self, region: RegionId) {
        self.compactions.retain(|(r, _, _)| *r != region);
        self.hard_states.remove(&region);
        self.removals.push(region);
    }

    /// `region` arrives again (handed over by another core) before its removal was written:
    /// the removal must not follow the records of its new state.
    pub fn cancel_removal(&mut self, region: RegionId) {
        self.removals.retain(|r| *r != region);
    }

    /// Everything carried, as one batch (empty if nothing is): written at a clean shutdown
    /// so that a restart finds the newest commit indexes.
    pub fn take_batch(&mut self) -> LogBatch {
        let mut batch = LogBatch::new();
        self.drain_into(&mut batch, |_| true);
        batch
    }

    fn drain_into(&mut self, batch: &mut LogBatch, keep: impl Fn(RegionId) -> bool) {
        for (region, index, term) in self.compactions.drain(..) {
            batch.compact_to(region, index, term);
        }
        for (region, hard_state) in std::mem::take(&mut self.hard_states) {
            if keep(region) {
                batch.set_hard_state(region, hard_state);
            }
        }
        for region in self.removals.drain(..) {
            batch.remove_region(region);
        }
    }
}

/// The round's batch; see the module docs. `carried` gives the compaction marks and hard
/// states waiting from earlier rounds, and keeps this round's hard states if nothing is
/// written.
pub fn round_batch(ready: &StoreReady, carried: &mut Carried) -> RoundBatch {
    let mut round = RoundBatch::default();
    let groups = ready.groups();
    let sync = !carried.compactions.is_empty()
        || !carried.removals.is_empty()
        || (0..groups.len()).any(|i| ready.group_needs_sync(i));
    if !sync {
        for (region, group) in groups {
            if let Some(hard_state) = group.hard_state {
                carried.hard_states.insert(*region, hard_state);
            }
        }
        return round;
    }
    let newer: BTreeSet<RegionId> = if carried.hard_states.is_empty() {
        BTreeSet::new()
    } else {
        groups
            .iter()
            .filter(|(_, group)| group.hard_state.is_some())
            .map(|(region, _)| *region)
            .collect()
    };
    carried.drain_into(&mut round.batch, |region| !newer.contains(&region));
    for (region, group) in groups {
        if let Some(snapshot) = &group.snapshot {
            let meta = &snapshot.metadata;
            round.received_snapshots.push(SnapshotTaken {
                region: *region,
                index: meta.index,
                term: meta.term,
                conf_state: meta.conf_state.clone(),
                data: snapshot.data.clone(),
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
