//! The in-memory index: for every Region, where each stored entry lies on disk, its term,
//! the compaction mark and the latest hard state.
//!
//! The index is rebuilt by replaying records on recovery and updated by the group-commit
//! flusher after each fdatasync, through the same [`MemIndex::apply_record`], so the state
//! after a restart is the state before it by construction.
//!
//! Invariants of each [`RegionLog`] (checked by [`MemIndex::invariants`]):
//! 1. `entries[k]` has index `entries_start + k` (the deque is dense), and
//!    `entries_start == mark_index + 1` whenever entries are stored, except during a replay
//!    after a purged prefix (see [`RegionLog`]).
//! 2. Terms never decrease along `entries`, and the first entry's term is at least
//!    `mark_term`.
//!
//! Memory: about 32 bytes per stored entry; entry payloads stay on disk.

use std::collections::{HashMap, VecDeque};

use tessera_core::{HardState, LogIndex, RegionId, Term};

use crate::format::{EntryView, Item, SegmentSeq};
use crate::scan::RecordView;

/// Where one entry lies: its header's byte offset in a segment file and its encoded length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryLocation {
    pub segment: SegmentSeq,
    pub offset: u64,
    pub len: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EntryMeta {
    term: Term,
    location: EntryLocation,
}

/// What the WAL holds for one Region.
///
/// The compaction mark is always exact: the checkpoint at the start of every segment repeats
/// it, and every later Compact and InstallSnapshot record is replayed. The stored entries may
/// not be: after a purged prefix, replay only sees the entries written into the surviving
/// segments. Because an append at `j` drops every entry above `j`, the entries of a log were
/// written in index order, so the ones replay sees are always a suffix of the Region's log.
/// While replaying, that suffix may start past `mark + 1` (`entries_start > mark + 1`: a
/// hole whose entries were in purged segments); by the end of the replay a later compaction,
/// snapshot install or overwriting append must have closed the hole, else entries the Region
/// needs were lost (see [`MemIndex::finish_replay`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionLog {
    mark_index: LogIndex,
    mark_term: Term,
    /// The index of `entries[0]`: `mark_index + 1`, except during a replay after a purged
    /// prefix, when it may be higher (a hole).
    entries_start: LogIndex,
    entries: VecDeque<EntryMeta>,
    hard_state: Option<HardState>,
}

impl Default for RegionLog {
    fn default() -> RegionLog {
        RegionLog {
            mark_index: LogIndex(0),
            mark_term: Term(0),
            entries_start: LogIndex(1),
            entries: VecDeque::new(),
            hard_state: None,
        }
    }
}

impl RegionLog {
    /// One past the compaction mark: the first index entries can be read from.
    pub fn first_index(&self) -> LogIndex {
        self.mark_index.next()
    }

    /// The last stored index, or the compaction mark when no entries are stored.
    pub fn last_index(&self) -> LogIndex {
        if self.entries.is_empty() {
            return self.mark_index;
        }
        LogIndex(self.entries_start.0 + self.entries.len() as u64 - 1)
    }

    /// The compaction mark: entries up to it are covered by a snapshot.
    pub fn compaction_mark(&self) -> (LogIndex, Term) {
        (self.mark_index, self.mark_term)
    }

    /// The latest hard state, if one was ever written.
    pub fn hard_state(&self) -> Option<HardState> {
        self.hard_state
    }

    /// The term at `index`, for `mark_index <= index <= last_index()`.
    pub fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.mark_index {
            return Some(self.mark_term);
        }
        self.slot(index).map(|k| self.entries[k].term)
    }

    /// Where the entry at `index` lies, if stored.
    pub fn location(&self, index: LogIndex) -> Option<EntryLocation> {
        self.slot(index).map(|k| self.entries[k].location)
    }

    /// The oldest segment holding a stored entry.
    pub fn oldest_segment(&self) -> Option<SegmentSeq> {
        self.entries.front().map(|meta| meta.location.segment)
    }

    /// True when entries above the mark are missing before the first stored one.
    fn has_hole(&self) -> bool {
        !self.entries.is_empty() && self.entries_start > self.mark_index.next()
    }

    fn slot(&self, index: LogIndex) -> Option<usize> {
        if index <= self.mark_index || index < self.entries_start {
            return None;
        }
        let k = (index.0 - self.entries_start.0) as usize;
        (k < self.entries.len()).then_some(k)
    }

    /// Stores `entries` (dense, ascending), dropping every stored entry at or above the
    /// first one; entries at or below the mark are ignored. `after_purge` tolerates a hole
    /// before them when nothing is stored (see the type docs).
    fn append(
        &mut self,
        entries: &[EntryView<'_>],
        segment: SegmentSeq,
        body_offset: u64,
        after_purge: bool,
    ) -> Result<(), String> {
        let live: Vec<&EntryView<'_>> = entries
            .iter()
            .filter(|view| view.index > self.mark_index)
            .collect();
        let Some(first) = live.first() else {
            return Ok(());
        };
        if first.index < self.entries_start || self.entries.is_empty() {
            // Overwrites everything stored (or nothing is stored): the log restarts here.
            // Below `entries_start` only during a replay with a hole: the append drops the
            // whole stored suffix.
            if first.index > self.mark_index.next() && !after_purge {
                return Err(format!(
                    "entries start at {} but the last index is {}: a gap",
                    first.index,
                    self.last_index()
                ));
            }
            self.entries.clear();
            self.entries_start = first.index;
        } else if first.index > self.last_index().next() {
            return Err(format!(
                "entries start at {} but the last index is {}: a gap",
                first.index,
                self.last_index()
            ));
        }
        let keep = (first.index.0 - self.entries_start.0) as usize;
        self.entries.truncate(keep);
        if let Some(previous) = self.entries.back() {
            if previous.term > first.term {
                return Err(format!("term decreases at {}", first.index));
            }
        }
        self.entries.extend(live.iter().map(|view| EntryMeta {
            term: view.term,
            location: EntryLocation {
                segment,
                offset: body_offset + view.body_offset as u64,
                len: view.encoded_len() as u32,
            },
        }));
        Ok(())
    }

    /// Log compaction: drops entries up to `index`, keeps later ones. A mark at or below
    /// the current one changes nothing.
    fn compact(&mut self, index: LogIndex, term: Term) {
        if index <= self.mark_index {
            return;
        }
        let covered = if index < self.entries_start {
            0
        } else {
            ((index.0 - self.entries_start.0 + 1) as usize).min(self.entries.len())
        };
        self.entries.drain(..covered);
        self.set_mark(index, term);
    }

    /// Snapshot installation: drops every entry and moves the mark to `index`, unless the
    /// mark is already there or past it.
    fn install_snapshot(&mut self, index: LogIndex, term: Term) {
        if index <= self.mark_index {
            return;
        }
        self.entries.clear();
        self.set_mark(index, term);
    }

    /// Moves the mark up, after the entries it covers were dropped.
    fn set_mark(&mut self, index: LogIndex, term: Term) {
        self.mark_index = index;
        self.mark_term = term;
        if self.entries.is_empty() || self.entries_start <= index {
            self.entries_start = index.next();
        }
    }
}

/// Every Region's [`RegionLog`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemIndex {
    regions: HashMap<RegionId, RegionLog>,
    /// True while replaying segments after a purged prefix (see `RegionLog::append`).
    replaying_after_purge: bool,
}

impl MemIndex {
    /// An empty index.
    pub fn new() -> MemIndex {
        MemIndex::default()
    }

    /// The Region's log, if the WAL holds anything for it.
    pub fn region(&self, region: RegionId) -> Option<&RegionLog> {
        self.regions.get(&region)
    }

    /// Every Region the WAL holds something for, sorted.
    pub fn regions(&self) -> Vec<RegionId> {
        let mut regions: Vec<RegionId> = self.regions.keys().copied().collect();
        regions.sort_unstable();
        regions
    }

    /// Number of Regions.
    pub fn region_count(&self) -> usize {
        self.regions.len()
    }

    /// Applies every item of a record read from `segment`.
    ///
    /// # Errors
    /// A sentence naming the Region when the items do not fit the log (a gap, a decreasing
    /// term). The writer asserts on it; recovery reports it as corruption.
    pub fn apply_record(
        &mut self,
        segment: SegmentSeq,
        record: &RecordView<'_>,
    ) -> Result<(), String> {
        for item in &record.items {
            self.apply_item(segment, record.body_offset(), item)
                .map_err(|reason| format!("region {}: {reason}", item.region()))?;
        }
        Ok(())
    }

    fn apply_item(
        &mut self,
        segment: SegmentSeq,
        body_offset: u64,
        item: &Item<'_>,
    ) -> Result<(), String> {
        match item {
            Item::Entries { region, entries } => self.regions.entry(*region).or_default().append(
                entries,
                segment,
                body_offset,
                self.replaying_after_purge,
            ),
            Item::HardState { region, hard_state } => {
                self.regions.entry(*region).or_default().hard_state = Some(*hard_state);
                Ok(())
            }
            Item::Compact {
                region,
                index,
                term,
            } => {
                self.regions
                    .entry(*region)
                    .or_default()
                    .compact(*index, *term);
                Ok(())
            }
            Item::InstallSnapshot {
                region,
                index,
                term,
            } => {
                self.regions
                    .entry(*region)
                    .or_default()
                    .install_snapshot(*index, *term);
                Ok(())
            }
            Item::RemoveRegion { region } => {
                self.regions.remove(region);
                Ok(())
            }
        }
    }

    /// Starts a replay from segment `first`. Replaying after a purged prefix (`first` is not
    /// segment 1) tolerates a Region's entries starting past its last index (a hole, see
    /// [`RegionLog`]), as long as the hole is closed before [`MemIndex::finish_replay`].
    pub fn begin_replay(&mut self, first: SegmentSeq) {
        self.replaying_after_purge = first > SegmentSeq(1);
    }

    /// Ends a replay.
    ///
    /// # Errors
    /// A sentence naming a Region whose stored entries follow a hole (entries above its
    /// compaction mark that were in purged segments): entries the Region needs were lost.
    pub fn finish_replay(&mut self) -> Result<(), String> {
        self.replaying_after_purge = false;
        let mut holes: Vec<(RegionId, LogIndex, LogIndex)> = self
            .regions
            .iter()
            .filter(|(_, log)| log.has_hole())
            .map(|(region, log)| (*region, log.mark_index.next(), log.entries_start.prev()))
            .collect();
        holes.sort_unstable();
        match holes.first() {
            None => Ok(()),
            Some((region, low, high)) => Err(format!(
                "region {region}: entries {low} to {high} are in purged segments but no \
                 compaction mark covers them"
            )),
        }
    }

    /// The oldest segment any Region still needs entries from.
    pub fn oldest_needed_segment(&self) -> Option<SegmentSeq> {
        self.regions
            .values()
            .filter_map(RegionLog::oldest_segment)
            .min()
    }

    /// Encodes every Region's hard state and compaction mark as a checkpoint body.
    pub fn checkpoint_body(&self) -> Vec<u8> {
        let mut body = Vec::new();
        for region in self.regions() {
            let log = &self.regions[&region];
            // Always present, even at mark 0: it is what keeps an empty Region known.
            crate::format::encode_compact(&mut body, region, log.mark_index, log.mark_term);
            if let Some(hard_state) = log.hard_state {
                crate::format::encode_hard_state(&mut body, region, hard_state);
            }
        }
        body
    }

    /// Checks the invariants in the module docs.
    ///
    /// # Panics
    /// On the first violated invariant, naming the Region and index.
    pub fn invariants(&self) {
        for (region, log) in &self.regions {
            assert!(
                !log.has_hole() || self.replaying_after_purge,
                "region {region}: entries start at {} after the mark {}",
                log.entries_start,
                log.mark_index
            );
            assert!(
                log.entries_start > log.mark_index,
                "region {region}: entries start at {} at or below the mark {}",
                log.entries_start,
                log.mark_index
            );
            let mut previous = if log.has_hole() {
                Term(0)
            } else {
                log.mark_term
            };
            for (k, meta) in log.entries.iter().enumerate() {
                let index = log.entries_start.0 + k as u64;
                assert!(
                    meta.term >= previous,
                    "region {region}: term {:?} at index {index} below {previous:?}",
                    meta.term
                );
                previous = meta.term;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Replays of hand-made records, as `Wal::open` does after a purged prefix.

    use tessera_core::{Entry, EntryKind};

    use super::*;
    use crate::format::{decode_body, encode_compact, encode_entries, RecordType};

    const REGION: RegionId = RegionId(3);

    fn entries(first: u64, last: u64, term: u64) -> Vec<u8> {
        let entries: Vec<Entry> = (first..=last)
            .map(|index| Entry {
                term: Term(term),
                index: LogIndex(index),
                kind: EntryKind::Normal,
                data: b"x".to_vec().into(),
            })
            .collect();
        let mut body = Vec::new();
        encode_entries(&mut body, REGION, &entries);
        body
    }

    fn compact(index: u64, term: u64) -> Vec<u8> {
        let mut body = Vec::new();
        encode_compact(&mut body, REGION, LogIndex(index), Term(term));
        body
    }

    /// Replays `bodies` as consecutive records of one segment.
    fn replay(index: &mut MemIndex, segment: u64, bodies: &[Vec<u8>]) -> Result<(), String> {
        for (k, body) in bodies.iter().enumerate() {
            let record = RecordView {
                offset: 4096 * k as u64,
                record_type: RecordType::Batch,
                body,
                items: decode_body(body).unwrap(),
            };
            index.apply_record(SegmentSeq(segment), &record)?;
        }
        Ok(())
    }

    fn state(index: &MemIndex) -> (LogIndex, LogIndex, LogIndex) {
        let log = index.region(REGION).unwrap();
        (log.compaction_mark().0, log.first_index(), log.last_index())
    }

    /// The history behind the recovery bug of foreign-term installs + purge: entries 1..5
    /// lay in the purged segment 1; segment 2 holds a rewrite of 3 and then of 1.
    #[test]
    fn an_overwrite_below_a_purged_hole_closes_it() {
        let mut index = MemIndex::new();
        index.begin_replay(SegmentSeq(2));
        replay(&mut index, 2, &[compact(0, 0), entries(3, 3, 1)]).unwrap();
        assert_eq!(state(&index), (LogIndex(0), LogIndex(1), LogIndex(3)));
        assert!(index.region(REGION).unwrap().term(LogIndex(1)).is_none());
        replay(&mut index, 2, &[entries(1, 1, 1)]).unwrap();
        index.finish_replay().unwrap();
        index.invariants();
        assert_eq!(state(&index), (LogIndex(0), LogIndex(1), LogIndex(1)));
    }

    #[test]
    fn a_compaction_mark_over_a_purged_hole_closes_it() {
        let mut index = MemIndex::new();
        index.begin_replay(SegmentSeq(2));
        replay(&mut index, 2, &[compact(4, 1), entries(9, 12, 2)]).unwrap();
        // A mark below the hole's end leaves part of it open; one at its end closes it.
        replay(&mut index, 2, &[compact(6, 2)]).unwrap();
        assert!(index.region(REGION).unwrap().has_hole());
        replay(&mut index, 2, &[compact(10, 2)]).unwrap();
        index.finish_replay().unwrap();
        index.invariants();
        assert_eq!(state(&index), (LogIndex(10), LogIndex(11), LogIndex(12)));
    }

    #[test]
    fn a_purged_hole_nothing_covers_is_reported_with_its_range() {
        let mut index = MemIndex::new();
        index.begin_replay(SegmentSeq(2));
        replay(&mut index, 2, &[compact(4, 1), entries(9, 12, 2)]).unwrap();
        let reason = index.finish_replay().unwrap_err();
        assert!(reason.contains("region r3: entries i5 to i8"), "{reason}");
    }

    #[test]
    fn a_gap_without_a_purged_prefix_is_an_error() {
        let mut index = MemIndex::new();
        index.begin_replay(SegmentSeq(1));
        let reason = replay(&mut index, 1, &[entries(1, 2, 1), entries(5, 5, 1)]).unwrap_err();
        assert!(reason.contains("a gap"), "{reason}");
        let mut index = MemIndex::new();
        let reason = replay(&mut index, 1, &[entries(4, 4, 1)]).unwrap_err();
        assert!(reason.contains("a gap"), "{reason}");
    }
}
