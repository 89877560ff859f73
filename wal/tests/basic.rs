//! Appends, reads, truncation on conflict, compaction, purge and reopen.

mod common;

use std::collections::BTreeMap;

use common::{assert_matches, entry, options, run, ModelLog};
use tessera_wal::{HardState, LogBatch, LogIndex, NodeId, RegionId, Term, Wal, WalError};

#[test]
fn appends_are_readable_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(dir.path());
    run(async move {
        let (wal, report) = Wal::open(options.clone()).await.unwrap();
        assert_eq!(report.records, 0);
        let mut model: BTreeMap<RegionId, ModelLog> = BTreeMap::new();
        for index in 1..=200u64 {
            let mut batch = LogBatch::new();
            for region in [RegionId(1), RegionId(2), RegionId(3)] {
                let entries = vec![entry(region, index, 1 + index / 50, 100)];
                batch.add_entries(region, &entries);
                let hard_state = HardState {
                    term: Term(1 + index / 50),
                    vote: None,
                    commit: LogIndex(index - 1),
                };
                batch.set_hard_state(region, hard_state);
                let log = model.entry(region).or_default();
                log.append(&entries);
                log.hard_state = Some(hard_state);
            }
            wal.append(batch).await.unwrap();
        }
        assert_matches(&wal, &model);
        assert!(wal.segments().len() > 1, "small segments must have rotated");
        wal.close().await.unwrap();
        let (wal, report) = Wal::open(options).await.unwrap();
        assert!(report.torn_tail.is_none());
        assert_matches(&wal, &model);
        wal.close().await.unwrap();
    });
}

#[test]
fn appending_over_a_conflicting_suffix_replaces_it_on_write_and_on_replay() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(dir.path());
    let region = RegionId(9);
    run(async move {
        let (wal, _) = Wal::open(options.clone()).await.unwrap();
        let mut batch = LogBatch::new();
        batch.add_entries(
            region,
            &(1..=10)
                .map(|i| entry(region, i, 1, 10))
                .collect::<Vec<_>>(),
        );
        wal.append(batch).await.unwrap();
        let mut batch = LogBatch::new();
        batch.add_entries(region, &[entry(region, 6, 2, 10), entry(region, 7, 2, 10)]);
        wal.append(batch).await.unwrap();
        assert_eq!(wal.last_index(region).unwrap(), LogIndex(7));
        assert_eq!(wal.term(region, LogIndex(6)).unwrap(), Term(2));
        assert_eq!(wal.term(region, LogIndex(5)).unwrap(), Term(1));
        assert!(matches!(
            wal.term(region, LogIndex(8)),
            Err(WalError::Unavailable { .. })
        ));
        wal.close().await.unwrap();
        let (wal, _) = Wal::open(options).await.unwrap();
        assert_eq!(wal.last_index(region).unwrap(), LogIndex(7));
        let entries = wal
            .entries(region, LogIndex(1), LogIndex(8), usize::MAX)
            .unwrap();
        assert_eq!(entries[5], entry(region, 6, 2, 10));
        assert_eq!(entries.len(), 7);
        wal.close().await.unwrap();
    });
}

#[test]
fn compaction_lets_old_segments_be_purged_and_recovery_starts_from_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(dir.path());
    let (a, b) = (RegionId(1), RegionId(2));
    run(async move {
        let (wal, _) = Wal::open(options.clone()).await.unwrap();
        let hard_state = HardState {
            term: Term(3),
            vote: Some(NodeId(2)),
            commit: LogIndex(1),
        };
        let mut batch = LogBatch::new();
        batch.set_hard_state(b, hard_state);
        batch.add_entries(b, &[entry(b, 1, 3, 10)]);
        wal.append(batch).await.unwrap();
        for index in 1..=600u64 {
            let mut batch = LogBatch::new();
            batch.add_entries(a, &[entry(a, index, 3, 500)]);
            wal.append(batch).await.unwrap();
        }
        let before = wal.segments();
        assert!(before.len() > 3);
        // Region b pins the first segment until it is compacted too.
        let mut batch = LogBatch::new();
        batch.compact_to(a, LogIndex(590), Term(3));
        wal.append(batch).await.unwrap();
        assert!(wal.purge().await.unwrap().is_empty());
        let mut batch = LogBatch::new();
        batch.compact_to(b, LogIndex(1), Term(3));
        wal.append(batch).await.unwrap();
        let purged = wal.purge().await.unwrap();
        assert!(!purged.is_empty());
        assert_eq!(wal.first_index(a).unwrap(), LogIndex(591));
        assert!(matches!(
            wal.entries(a, LogIndex(590), LogIndex(592), usize::MAX),
            Err(WalError::Compacted { .. })
        ));
        wal.close().await.unwrap();
        let (wal, report) = Wal::open(options).await.unwrap();
        assert_eq!(report.first_segment, purged.last().unwrap().next());
        assert_eq!(wal.hard_state(b).unwrap(), Some(hard_state));
        assert_eq!(wal.compaction_mark(b).unwrap(), (LogIndex(1), Term(3)));
        assert_eq!(wal.last_index(b).unwrap(), LogIndex(1));
        let entries = wal
            .entries(a, LogIndex(591), LogIndex(601), usize::MAX)
            .unwrap();
        assert_eq!(entries.len(), 10);
        assert_eq!(entries[9], entry(a, 600, 3, 500));
        wal.close().await.unwrap();
    });
}
