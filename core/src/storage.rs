//! The stable log as the core sees it: a read-only `Storage` trait, and `MemStorage`, an
//! in-memory implementation for tests, the simulator and benchmarks.
//!
//! The core never writes to storage. The caller persists what a `Ready` hands it (entries, hard
//! state, snapshot) and then calls `advance`; from then on the core reads those entries back
//! through this trait. Entries not yet persisted live in the core's unstable log.
//!
//! Invariants of an implementation, relied on by the core:
//! 1. `first_index() >= 1` and `last_index() + 1 >= first_index()`.
//! 2. `term(first_index() - 1)` is answered (it is the snapshot's term), so the entry just
//!    before the stored range can still be matched.
//! 3. Entries in `[first_index(), last_index()]` have consecutive indexes.

use crate::error::StorageError;
use crate::types::{
    ConfState, Entry, HardState, LogIndex, Payload, Snapshot, SnapshotMetadata, Term,
};

/// The index of the snapshot a group is bootstrapped with: every founding member starts from
/// it, and a member added later (with an empty log) can only catch up through a snapshot.
pub const BOOTSTRAP_INDEX: LogIndex = LogIndex(5);

/// The term of the bootstrap snapshot.
pub const BOOTSTRAP_TERM: Term = Term(5);

/// Read access to what the caller has persisted for one group.
pub trait Storage {
    /// The persisted hard state and the membership as of the snapshot (`first_index() - 1`),
    /// read once when a core is created. The core replays the membership changes of the
    /// committed entries after the snapshot as they are applied again.
    ///
    /// # Errors
    /// `StorageError::Other` when the backing store fails.
    fn initial_state(&self) -> Result<(HardState, ConfState), StorageError>;

    /// Entries in `[low, high)`, at most `max_bytes` of them (but at least one if any exist).
    ///
    /// # Errors
    /// `Compacted` below the first index, `Unavailable` past the last.
    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StorageError>;

    /// The term of the entry at `index`, for `first_index() - 1 <= index <= last_index()`.
    ///
    /// # Errors
    /// `Compacted` or `Unavailable` outside that range.
    fn term(&self, index: LogIndex) -> Result<Term, StorageError>;

    /// The first index that `entries` can return (one past the snapshot).
    fn first_index(&self) -> LogIndex;

    /// The last persisted index (the snapshot's index when the log is empty).
    fn last_index(&self) -> LogIndex;

    /// The newest snapshot, for sending to a follower that needs compacted entries.
    ///
    /// # Errors
    /// `SnapshotTemporarilyUnavailable` when none can be given now; the core retries later.
    fn snapshot(&self) -> Result<Snapshot, StorageError>;
}

/// An in-memory `Storage`. The caller (tests, the simulator) mutates it with `append`,
/// `set_hard_state`, `apply_snapshot` and `compact`, mimicking a durable store.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    hard_state: HardState,
    snapshot: Snapshot,
    /// `entries[0]` has index `snapshot.metadata.index + 1`.
    entries: Vec<Entry>,
}

impl MemStorage {
    /// A freshly bootstrapped group member: an empty state machine, as a snapshot at
    /// [`BOOTSTRAP_INDEX`] in [`BOOTSTRAP_TERM`] with this membership.
    ///
    /// Members that join later start from `MemStorage::default()` (index 0, no membership):
    /// their log lacks what the bootstrap snapshot covers, so the leader must seed them with a
    /// snapshot, which also teaches them the membership.
    pub fn new_with_conf(conf_state: ConfState) -> MemStorage {
        let mut storage = MemStorage::default();
        storage.snapshot.metadata = SnapshotMetadata {
            index: BOOTSTRAP_INDEX,
            term: BOOTSTRAP_TERM,
            conf_state,
        };
        storage.hard_state = HardState {
            term: BOOTSTRAP_TERM,
            vote: None,
            commit: BOOTSTRAP_INDEX,
        };
        storage
    }

    fn offset(&self) -> LogIndex {
        self.snapshot.metadata.index
    }

    /// The persisted hard state.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Persists a hard state.
    pub fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    /// Appends entries, replacing any stored entries at or after the first new index.
    ///
    /// # Panics
    /// If the new entries would leave a gap or start inside the snapshot.
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        assert!(
            first.index > self.offset() && first.index.0 <= self.last_index().0 + 1,
            "append at {:?} leaves a gap or rewrites the snapshot (snapshot {:?}, last {:?})",
            first.index,
            self.offset(),
            self.last_index()
        );
        let keep = (first.index.0 - self.offset().0 - 1) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
    }

    /// Persists what a `Ready` hands out, in the documented order: snapshot, entries, hard
    /// state (step 3 of the calling order in `ready.rs`).
    pub fn persist_ready(&mut self, ready: &crate::ready::Ready) {
        if let Some(snapshot) = &ready.snapshot {
            self.apply_snapshot(snapshot.clone());
        }
        self.append(&ready.entries);
        if let Some(hard_state) = ready.hard_state {
            self.set_hard_state(hard_state);
        }
    }

    /// Replaces everything with a snapshot (a follower installing the leader's snapshot).
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) {
        self.hard_state.commit = self.hard_state.commit.max(snapshot.metadata.index);
        if self.hard_state.term < snapshot.metadata.term {
            self.hard_state.term = snapshot.metadata.term;
            self.hard_state.vote = None;
        }
        self.entries.clear();
        self.snapshot = snapshot;
    }

    /// Records a snapshot of the applied state at `index` (which must be stored or be the
    /// current snapshot index) and drops the entries it covers.
    ///
    /// # Panics
    /// If `index` is not in the stored log.
    pub fn create_snapshot(
        &mut self,
        index: LogIndex,
        conf_state: ConfState,
        data: impl Into<Payload>,
    ) {
        if index <= self.offset() {
            return;
        }
        let term = self
            .term(index)
            .expect("snapshot index must be in the stored log");
        self.compact_to(index);
        self.snapshot = Snapshot {
            metadata: SnapshotMetadata {
                index,
                term,
                conf_state,
            },
            data: data.into(),
        };
    }

    fn compact_to(&mut self, index: LogIndex) {
        let drop = ((index.0 - self.offset().0) as usize).min(self.entries.len());
        self.entries.drain(..drop);
    }

    /// Every stored entry (tests and checkers read the whole log).
    pub fn all_entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The current snapshot's metadata.
    pub fn snapshot_metadata(&self) -> &SnapshotMetadata {
        &self.snapshot.metadata
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<(HardState, ConfState), StorageError> {
        Ok((self.hard_state, self.snapshot.metadata.conf_state.clone()))
    }

    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        if low <= self.offset() {
            return Err(StorageError::Compacted {
                requested: low,
                first: self.first_index(),
            });
        }
        if high.0 > self.last_index().0 + 1 {
            return Err(StorageError::Unavailable {
                requested: high.prev(),
                last: self.last_index(),
            });
        }
        let start = (low.0 - self.offset().0 - 1) as usize;
        let end = (high.0 - self.offset().0 - 1) as usize;
        let mut out = Vec::with_capacity(crate::raft_log::preallocation(low, high));
        let mut bytes = 0;
        for entry in &self.entries[start..end] {
            bytes += entry.size_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
        }
        Ok(out)
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        if index == self.offset() {
            return Ok(self.snapshot.metadata.term);
        }
        if index < self.offset() {
            return Err(StorageError::Compacted {
                requested: index,
                first: self.first_index(),
            });
        }
        let position = (index.0 - self.offset().0 - 1) as usize;
        match self.entries.get(position) {
            Some(entry) => Ok(entry.term),
            None => Err(StorageError::Unavailable {
                requested: index,
                last: self.last_index(),
            }),
        }
    }

    fn first_index(&self) -> LogIndex {
        self.offset().next()
    }

    fn last_index(&self) -> LogIndex {
        LogIndex(self.offset().0 + self.entries.len() as u64)
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryKind;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            kind: EntryKind::Normal,
            data: vec![index as u8; 10].into(),
        }
    }

    #[test]
    fn append_replaces_a_conflicting_tail() {
        let mut storage = MemStorage::default();
        storage.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        storage.append(&[entry(2, 2)]);
        assert_eq!(storage.last_index(), LogIndex(2));
        assert_eq!(storage.term(LogIndex(2)), Ok(Term(2)));
    }

    #[test]
    fn compaction_keeps_the_boundary_term_and_refuses_older_reads() {
        let mut storage = MemStorage::default();
        storage.append(&[entry(1, 1), entry(2, 1), entry(3, 2)]);
        storage.create_snapshot(LogIndex(2), ConfState::default(), vec![]);
        assert_eq!(storage.first_index(), LogIndex(3));
        assert_eq!(storage.term(LogIndex(2)), Ok(Term(1)));
        assert!(matches!(
            storage.entries(LogIndex(2), LogIndex(4), usize::MAX),
            Err(StorageError::Compacted { .. })
        ));
        let got = storage
            .entries(LogIndex(3), LogIndex(4), usize::MAX)
            .unwrap();
        assert_eq!(got, vec![entry(3, 2)]);
    }

    #[test]
    fn byte_budget_returns_at_least_one_entry() {
        let mut storage = MemStorage::default();
        storage.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        let got = storage.entries(LogIndex(1), LogIndex(4), 1).unwrap();
        assert_eq!(got.len(), 1);
        let got = storage.entries(LogIndex(1), LogIndex(4), 68).unwrap();
        assert_eq!(got.len(), 2);
    }
}
