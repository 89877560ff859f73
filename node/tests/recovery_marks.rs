//! Regressions found by the whole-node simulation (`bench/tests/node_simulation.rs`, seed 77):
//! a crash after a received snapshot was written to its file but before the WAL record with
//! its install mark was synced. Recovery rebuilt the Region from the snapshot, but the WAL
//! still ended before it (the next entries left a gap: the WAL asserted and the node could
//! never restart) or still held the entries the snapshot replaced (the next recovery dropped
//! every entry logged after the snapshot, acknowledged ones included). Recovery now records
//! the install mark (`recovery_batch`) before the core serves.

use tessera_core::{
    Entry, EntryKind, HardState, LogIndex, NodeId, RegionId, Term, BOOTSTRAP_INDEX, BOOTSTRAP_TERM,
};
use tessera_node::kv::KvState;
use tessera_node::region::Region;
use tessera_node::server::bootstrap::{
    initial_layout, recover_store, recovery_batch, SnapshotSource,
};
use tessera_node::server::snapshot_files::{self, SnapshotFile};
use tessera_node::store::{Store, StoreConfig};
use tessera_wal::{LogBatch, LogRead, MemLog};

const SEGMENT_BYTES: u64 = 64 << 10;

fn region() -> Region {
    initial_layout(&[], &[NodeId(1), NodeId(2), NodeId(3)], 3).remove(0)
}

fn entries(from: u64, to: u64, term: u64) -> Vec<Entry> {
    (from..=to)
        .map(|index| Entry {
            term: Term(term),
            index: LogIndex(index),
            kind: EntryKind::Normal,
            data: Vec::new().into(),
        })
        .collect()
}

/// A WAL holding the bootstrap mark and entries `6..=last` of `term`.
fn wal_with_entries(last: u64, term: u64) -> MemLog {
    let region = region().id;
    let mut log = MemLog::create(SEGMENT_BYTES);
    let mut batch = LogBatch::new();
    batch.compact_to(region, BOOTSTRAP_INDEX, BOOTSTRAP_TERM);
    batch.add_entries(region, &entries(BOOTSTRAP_INDEX.0 + 1, last, term));
    batch.set_hard_state(
        region,
        HardState {
            term: Term(term),
            vote: None,
            commit: LogIndex(last),
        },
    );
    log.append(&batch);
    log
}

/// The snapshot file a follower wrote before its install mark was lost.
fn received_snapshot(index: u64, term: u64) -> SnapshotFile {
    let conf = tessera_core::ConfState::with_voters(region().peers.iter().copied());
    let bytes = snapshot_files::encode(&conf, &KvState::default().encode_snapshot());
    snapshot_files::from_bytes("received.snap".into(), LogIndex(index), Term(term), &bytes).unwrap()
}

/// The one snapshot file of the Region.
struct Snapshots<'a>(&'a SnapshotFile);

impl SnapshotSource for Snapshots<'_> {
    fn regions(&self) -> Result<Vec<RegionId>, String> {
        Ok(vec![region().id])
    }

    fn newest(&self, _: RegionId) -> Result<Option<SnapshotFile>, String> {
        Ok(Some(received_snapshot(self.0.index.0, self.0.term.0)))
    }
}

/// Recovers a Store from `log` and the snapshot, as a restarting core does, then records
/// what recovery found in the log.
fn restart(log: &mut MemLog, snapshot: &SnapshotFile) -> Store {
    let mut store = Store::new(StoreConfig::new(NodeId(1)));
    recover_store(&mut store, &[region()], 0, 1, &*log, &Snapshots(snapshot)).unwrap();
    log.append(&recovery_batch(&*log, &store));
    store
}

fn last_index(store: &Store) -> LogIndex {
    store.raft(region().id).unwrap().last_index()
}

#[test]
fn a_snapshot_past_the_end_of_the_wal_gets_its_install_mark_at_restart() {
    let mut log = wal_with_entries(70, 6);
    let snapshot = received_snapshot(73, 7);
    let store = restart(&mut log, &snapshot);
    assert_eq!(last_index(&store), LogIndex(73));
    assert_eq!(
        log.compaction_mark(region().id).unwrap(),
        (LogIndex(73), Term(7))
    );
    // The next entries follow the snapshot without a gap (before the fix: a WAL assertion).
    let mut batch = LogBatch::new();
    batch.add_entries(region().id, &entries(74, 76, 7));
    log.append(&batch);
    let store = restart(&mut log, &snapshot);
    assert_eq!(last_index(&store), LogIndex(76));
}

#[test]
fn entries_logged_after_a_snapshot_the_wal_did_not_continue_survive_the_next_restart() {
    // The WAL holds entries of an old term past the snapshot's index: they were replaced.
    let mut log = wal_with_entries(75, 6);
    let snapshot = received_snapshot(73, 7);
    let store = restart(&mut log, &snapshot);
    assert_eq!(
        last_index(&store),
        LogIndex(73),
        "replaced entries are dropped"
    );
    let mut batch = LogBatch::new();
    batch.add_entries(region().id, &entries(74, 78, 7));
    log.append(&batch);
    // Before the fix, the WAL's stale entry at 73 made recovery drop 74..=78 again.
    let store = restart(&mut log, &snapshot);
    assert_eq!(last_index(&store), LogIndex(78));
    assert_eq!(
        LogRead::entries(&log, region().id, LogIndex(74), LogIndex(79), usize::MAX)
            .unwrap()
            .len(),
        5
    );
}

#[test]
fn a_wal_that_continues_the_snapshot_needs_no_mark() {
    let log = wal_with_entries(75, 7);
    let store = {
        let mut store = Store::new(StoreConfig::new(NodeId(1)));
        let snapshot = received_snapshot(73, 7);
        recover_store(&mut store, &[region()], 0, 1, &log, &Snapshots(&snapshot)).unwrap();
        store
    };
    assert_eq!(last_index(&store), LogIndex(75));
    assert!(recovery_batch(&log, &store).is_empty());
    log.invariants();
}
