//! Helpers shared by the WAL's integration tests: a small executor, entries, a model log.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use tessera_wal::{Entry, EntryKind, HardState, LogIndex, RegionId, Term, Wal, WalOptions};

/// Runs `future` on a fresh executor with little DMA memory (tests run in parallel threads).
pub fn run<T>(future: impl std::future::Future<Output = T>) -> T {
    tessera_wal::executor::run_local(future).expect("executor")
}

/// Small segments so tests rotate often.
pub fn options(dir: &Path) -> WalOptions {
    let mut options = WalOptions::new(dir);
    options.segment_size_bytes = 64 << 10;
    options.batch_bytes_max = 16 << 10;
    options.queue_bytes_max = 256 << 10;
    options
}

/// An entry whose payload encodes its region, index and term, so damage is visible.
pub fn entry(region: RegionId, index: u64, term: u64, len: usize) -> Entry {
    let mut data = format!("r{}-i{}-t{}:", region.0, index, term).into_bytes();
    data.resize(len.max(data.len()), b'x');
    Entry {
        term: Term(term),
        index: LogIndex(index),
        kind: EntryKind::Normal,
        data: data.into(),
    }
}

/// What a Region's log should hold: a model the WAL is compared against.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelLog {
    pub mark: (LogIndex, Term),
    pub entries: BTreeMap<u64, Entry>,
    pub hard_state: Option<HardState>,
}

impl ModelLog {
    pub fn last_index(&self) -> u64 {
        self.entries
            .keys()
            .next_back()
            .copied()
            .unwrap_or(self.mark.0 .0)
    }

    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        self.entries.split_off(&first.index.0);
        for e in entries {
            if e.index > self.mark.0 {
                self.entries.insert(e.index.0, e.clone());
            }
        }
    }

    pub fn compact(&mut self, index: LogIndex, term: Term) {
        if index <= self.mark.0 {
            return;
        }
        self.entries = self.entries.split_off(&(index.0 + 1));
        self.mark = (index, term);
    }

    pub fn install_snapshot(&mut self, index: LogIndex, term: Term) {
        if index <= self.mark.0 {
            return;
        }
        self.entries.clear();
        self.mark = (index, term);
    }
}

/// Asserts that the WAL holds exactly what the model says for every Region.
pub fn assert_matches(wal: &Wal, model: &BTreeMap<RegionId, ModelLog>) {
    wal.invariants();
    assert_eq!(wal.regions(), model.keys().copied().collect::<Vec<_>>());
    for (region, log) in model {
        assert_eq!(wal.compaction_mark(*region).unwrap(), log.mark, "{region}");
        assert_eq!(wal.hard_state(*region).unwrap(), log.hard_state, "{region}");
        assert_eq!(
            wal.last_index(*region).unwrap().0,
            log.last_index(),
            "{region}"
        );
        let first = wal.first_index(*region).unwrap();
        assert_eq!(first, log.mark.0.next(), "{region}");
        let stored = wal
            .entries(*region, first, LogIndex(log.last_index() + 1), usize::MAX)
            .unwrap();
        let expected: Vec<Entry> = log.entries.values().cloned().collect();
        assert_eq!(stored, expected, "{region}");
    }
}
