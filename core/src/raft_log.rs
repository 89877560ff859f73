//! `RaftLog`: the log as one node sees it — the caller's stable storage plus the entries (and
//! possibly a snapshot) the core holds until the caller reports them persisted.
//!
//! ```text
//!   storage (persisted)           unstable (in the core)
//!  [first ........ last_stable] [offset ........ last]
//!             applied <= applying <= min(committed, persisted)
//! ```
//!
//! Invariants (checked by `invariants`):
//! 1. `applied <= applying <= committed` and `applying <= persisted.max(snapshot index)`.
//! 2. `persisted <= last_index()`; entries above `persisted` may be lost by a crash.
//! 3. `committed <= last_index()`, and committed never decreases.
//! 4. Unstable entries have consecutive indexes starting at `unstable.offset`.

use crate::error::StorageError;
use crate::storage::Storage;
use crate::types::{Entry, LogIndex, Snapshot, Term};

/// At most this many entries are reserved up front when collecting a range of entries; a
/// range cut short by the byte budget should not reserve the whole range.
pub(crate) const ENTRIES_PREALLOCATED_MAX: u64 = 1024;

/// How many entries to reserve for the range `[low, high)`.
pub(crate) fn preallocation(low: LogIndex, high: LogIndex) -> usize {
    high.0.saturating_sub(low.0).min(ENTRIES_PREALLOCATED_MAX) as usize
}

/// Entries and a snapshot not yet persisted by the caller.
#[derive(Debug, Default)]
struct Unstable {
    snapshot: Option<Snapshot>,
    snapshot_handed_out: bool,
    /// Index of `entries[0]`.
    offset: LogIndex,
    entries: Vec<Entry>,
    /// The last index handed to the caller in a `Ready` (and not taken back by a truncation).
    handed_out: LogIndex,
}

/// The log of one group member. See the module docs for its invariants.
pub struct RaftLog<S: Storage> {
    storage: S,
    unstable: Unstable,
    committed: LogIndex,
    persisted: LogIndex,
    applying: LogIndex,
    applied: LogIndex,
}

impl<S: Storage> RaftLog<S> {
    /// A log over `storage`, starting at what it holds.
    pub fn new(storage: S) -> Result<RaftLog<S>, StorageError> {
        let (hard_state, _) = storage.initial_state()?;
        let first = storage.first_index();
        let last = storage.last_index();
        let snapshot_index = first.prev();
        let committed = hard_state.commit.max(snapshot_index).min(last);
        Ok(RaftLog {
            unstable: Unstable {
                offset: last.next(),
                handed_out: last,
                ..Unstable::default()
            },
            storage,
            committed,
            persisted: last,
            applying: snapshot_index,
            applied: snapshot_index,
        })
    }

    pub fn storage(&self) -> &S {
        &self.storage
    }

    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.storage
    }

    pub fn committed(&self) -> LogIndex {
        self.committed
    }

    pub fn applied(&self) -> LogIndex {
        self.applied
    }

    pub fn persisted(&self) -> LogIndex {
        self.persisted
    }

    /// The index of the first entry still readable (one past the newest snapshot).
    pub fn first_index(&self) -> LogIndex {
        match &self.unstable.snapshot {
            Some(snapshot) => snapshot.metadata.index.next(),
            None => self.storage.first_index(),
        }
    }

    pub fn last_index(&self) -> LogIndex {
        if let Some(last) = self.unstable.entries.last() {
            return last.index;
        }
        if let Some(snapshot) = &self.unstable.snapshot {
            return snapshot.metadata.index;
        }
        self.storage.last_index()
    }

    /// The term of the entry at `index`.
    ///
    /// # Errors
    /// `Compacted` before `first_index() - 1`, `Unavailable` after `last_index()`.
    pub fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        let last = self.last_index();
        if index > last {
            return Err(StorageError::Unavailable {
                requested: index,
                last,
            });
        }
        if index >= self.unstable.offset && !self.unstable.entries.is_empty() {
            let position = (index.0 - self.unstable.offset.0) as usize;
            return Ok(self.unstable.entries[position].term);
        }
        if let Some(snapshot) = &self.unstable.snapshot {
            if index == snapshot.metadata.index {
                return Ok(snapshot.metadata.term);
            }
            return Err(StorageError::Compacted {
                requested: index,
                first: snapshot.metadata.index.next(),
            });
        }
        self.storage.term(index)
    }

    /// The term of the entry at `index`, or `Term(0)` if it is not in the log.
    pub fn term_or_zero(&self, index: LogIndex) -> Term {
        self.term(index).unwrap_or(Term(0))
    }

    pub fn last_term(&self) -> Term {
        self.term_or_zero(self.last_index())
    }

    /// True if the log holds an entry at `index` with `term` (index 0 always matches term 0).
    pub fn match_term(&self, index: LogIndex, term: Term) -> bool {
        self.term(index) == Ok(term)
    }

    /// True if a log ending at `(last_index, last_term)` is at least as up to date as this one
    /// (Raft §5.4.1: compare last terms, then lengths).
    pub fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        let my_term = self.last_term();
        last_term > my_term || (last_term == my_term && last_index >= self.last_index())
    }

    /// Entries in `[low, high)`, at most `max_bytes` (at least one).
    ///
    /// # Errors
    /// `Compacted` when `low` was compacted, `Unavailable` past the last index.
    pub fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        let last = self.last_index();
        if high.0 > last.0 + 1 {
            return Err(StorageError::Unavailable {
                requested: high.prev(),
                last,
            });
        }
        if low < self.first_index() {
            return Err(StorageError::Compacted {
                requested: low,
                first: self.first_index(),
            });
        }
        if low >= high {
            return Ok(Vec::new());
        }
        let split = self.unstable.offset.max(low);
        let mut out = if low < split {
            self.storage.entries(low, split.min(high), max_bytes)?
        } else {
            Vec::new()
        };
        if out.last().map_or(low, |e| e.index.next()) < split.min(high) {
            return Ok(out); // the storage part already hit the byte budget
        }
        // One allocation for the whole batch instead of one per doubling.
        out.reserve(preallocation(split, high));
        let mut bytes: usize = out.iter().map(Entry::size_bytes).sum();
        let mut index = split;
        while index < high {
            let entry = &self.unstable.entries[(index.0 - self.unstable.offset.0) as usize];
            bytes += entry.size_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
            index = index.next();
        }
        Ok(out)
    }

    /// The first index in `entries` whose term differs from this log's, or that is past the
    /// end of this log; `None` when every entry is already present.
    pub fn find_conflict(&self, entries: &[Entry]) -> Option<LogIndex> {
        entries
            .iter()
            .find(|entry| !self.match_term(entry.index, entry.term))
            .map(|entry| entry.index)
    }

    /// For rejected AppendEntries: the largest index `<= index` whose term is `<= term`, the
    /// place where the logs may agree (fast backtracking, one round trip per term).
    pub fn find_conflict_by_term(&self, index: LogIndex, term: Term) -> LogIndex {
        let mut index = index.min(self.last_index());
        loop {
            match self.term(index) {
                Ok(found) if found > term => index = index.prev(),
                _ => return index,
            }
        }
    }

    /// Appends entries after a conflict check (a follower handling AppendEntries). Returns the
    /// last index the follower now matches, or `None` if `(prev_index, prev_term)` is not in
    /// the log or the entries would rewrite committed entries.
    pub fn maybe_append(
        &mut self,
        prev_index: LogIndex,
        prev_term: Term,
        entries: &[Entry],
    ) -> Option<LogIndex> {
        if !self.match_term(prev_index, prev_term) {
            return None;
        }
        let last_new = LogIndex(prev_index.0 + entries.len() as u64);
        if let Some(conflict) = self.find_conflict(entries) {
            if conflict <= self.committed {
                // Only a broken or malicious leader rewrites committed entries.
                tracing::error!(?conflict, committed = ?self.committed, "refusing to rewrite committed entries");
                return None;
            }
            let start = (conflict.0 - prev_index.0 - 1) as usize;
            self.append(&entries[start..]);
        }
        Some(last_new)
    }

    /// Appends entries to the unstable log, replacing any entries at or after the first one's
    /// index. The caller guarantees there is no gap.
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        let first_index = first.index;
        assert!(
            first_index > self.committed && first_index.0 <= self.last_index().0 + 1,
            "append at {first_index:?} would rewrite committed {:?} or leave a gap after {:?}",
            self.committed,
            self.last_index()
        );
        let unstable = &mut self.unstable;
        if first_index <= unstable.offset {
            unstable.offset = first_index;
            unstable.entries.clear();
        } else {
            let keep = (first_index.0 - unstable.offset.0) as usize;
            unstable.entries.truncate(keep);
        }
        unstable.entries.extend_from_slice(entries);
        unstable.handed_out = unstable.handed_out.min(first_index.prev());
        self.persisted = self.persisted.min(first_index.prev());
    }

    /// Raises the commit index to `index` if that is higher. Never lowers it.
    ///
    /// # Panics
    /// If `index` is past the last index (the caller must check).
    pub fn commit_to(&mut self, index: LogIndex) {
        if index > self.committed {
            assert!(
                index <= self.last_index(),
                "commit {index:?} past last index {:?}",
                self.last_index()
            );
            self.committed = index;
        }
    }

    /// Replaces the log with a snapshot (a follower installing the leader's snapshot).
    pub fn restore(&mut self, snapshot: Snapshot) {
        let index = snapshot.metadata.index;
        self.committed = index;
        self.applying = index;
        self.persisted = self.persisted.min(index.prev());
        self.unstable = Unstable {
            snapshot: Some(snapshot),
            snapshot_handed_out: false,
            offset: index.next(),
            entries: Vec::new(),
            handed_out: index,
        };
    }

    /// True while a received snapshot is not yet persisted.
    pub fn has_pending_snapshot(&self) -> bool {
        self.unstable.snapshot.is_some()
    }

    /// The pending snapshot, if it was not handed out yet.
    pub fn take_unstable_snapshot(&mut self) -> Option<Snapshot> {
        if self.unstable.snapshot_handed_out {
            return None;
        }
        self.unstable.snapshot_handed_out = true;
        self.unstable.snapshot.clone()
    }

    /// True if there are unstable entries not yet handed to the caller.
    pub fn has_unstable_to_hand_out(&self) -> bool {
        self.last_index() > self.unstable.handed_out
            || (self.unstable.snapshot.is_some() && !self.unstable.snapshot_handed_out)
    }

    /// The unstable entries not yet handed out, marking them handed out.
    pub fn take_unstable_entries(&mut self) -> Vec<Entry> {
        let unstable = &mut self.unstable;
        let from = (unstable.handed_out.0 + 1).saturating_sub(unstable.offset.0) as usize;
        let out = unstable.entries.get(from..).unwrap_or(&[]).to_vec();
        if let Some(last) = unstable.entries.last() {
            unstable.handed_out = last.index;
        }
        out
    }

    /// The caller persisted everything up to `(index, term)`. Ignored if the log changed
    /// since (the entry at `index` no longer has `term`).
    pub fn on_persisted(&mut self, index: LogIndex, term: Term) {
        if !self.match_term(index, term) || index <= self.persisted {
            return;
        }
        self.persisted = index;
        let unstable = &mut self.unstable;
        if index >= unstable.offset {
            let drop = (index.0 - unstable.offset.0 + 1) as usize;
            unstable.entries.drain(..drop.min(unstable.entries.len()));
            unstable.offset = index.next();
        }
    }

    /// The caller persisted the snapshot at `index`.
    pub fn on_snapshot_persisted(&mut self, index: LogIndex) {
        let matches = self
            .unstable
            .snapshot
            .as_ref()
            .is_some_and(|s| s.metadata.index == index);
        if matches {
            self.unstable.snapshot = None;
            self.unstable.snapshot_handed_out = false;
            self.persisted = self.persisted.max(index);
        }
    }

    /// The index committed entries may be applied up to: committed and persisted locally.
    fn apply_limit(&self) -> LogIndex {
        self.committed.min(self.persisted)
    }

    /// True if committed, persisted entries wait to be handed out for applying.
    pub fn has_committed_to_hand_out(&self) -> bool {
        self.unstable.snapshot.is_none() && self.apply_limit() > self.applying
    }

    /// The next committed entries to apply (at most `max_bytes`), marking them handed out.
    pub fn take_committed_entries(&mut self, max_bytes: usize) -> Vec<Entry> {
        if !self.has_committed_to_hand_out() {
            return Vec::new();
        }
        let low = self.applying.next();
        let high = self.apply_limit().next();
        let entries = self.entries(low, high, max_bytes).unwrap_or_else(|error| {
            panic!("committed entries {low:?}..{high:?} unreadable: {error}")
        });
        if let Some(last) = entries.last() {
            self.applying = last.index;
        }
        entries
    }

    /// The index up to which entries were handed out for applying.
    pub fn applying(&self) -> LogIndex {
        self.applying
    }

    /// The caller applied everything up to `index`.
    pub fn on_applied(&mut self, index: LogIndex) {
        if index > self.applied {
            assert!(
                index <= self.applying,
                "applied {index:?} past what was handed out ({:?})",
                self.applying
            );
            self.applied = index;
        }
    }

    /// Checks the module invariants; used by tests and the simulator after every step.
    pub fn invariants(&self) -> Result<(), String> {
        let check = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_string()) };
        check(self.applied <= self.applying, "applied <= applying")?;
        check(self.applying <= self.committed, "applying <= committed")?;
        check(self.committed <= self.last_index(), "committed <= last")?;
        check(self.persisted <= self.last_index(), "persisted <= last")?;
        for (position, entry) in self.unstable.entries.iter().enumerate() {
            check(
                entry.index.0 == self.unstable.offset.0 + position as u64,
                "unstable indexes consecutive",
            )?;
        }
        Ok(())
    }
}
