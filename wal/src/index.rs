//! The in-memory index: for every Region, where each stored entry lies on disk, its term,
//! the compaction mark and the latest hard state.
//!
//! The index is rebuilt by replaying records on recovery and updated by the group-commit
//! flusher after each fdatasync, through the same [`MemIndex::apply_record`], so the state
//! after a restart is the state before it by construction.
//!
//! Invariants of each [`RegionLog`] (checked by [`MemIndex::invariants`]):
//! 1. `entries[k]` has index `mark_index + 1 + k` (the deque is dense and starts right after
//!    the compaction mark).
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
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegionLog {
    mark_index: LogIndex,
    mark_term: Term,
    entries: VecDeque<EntryMeta>,
    hard_state: Option<HardState>,
    /// Set while replaying after a purged prefix, between a Region's first entries (whose
    /// predecessors were purged) and the compaction mark that covers those predecessors.
    provisional: bool,
    /// While provisional: the highest compaction mark seen below the provisional mark. It
    /// becomes the real mark once replay re-supplies the entries right after it.
    floor: Option<(LogIndex, Term)>,
}

impl RegionLog {
    /// One past the compaction mark: the first index entries can be read from.
    pub fn first_index(&self) -> LogIndex {
        self.mark_index.next()
    }

    /// The last stored index, or the compaction mark when no entries are stored.
    pub fn last_index(&self) -> LogIndex {
        LogIndex(self.mark_index.0 + self.entries.len() as u64)
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

    fn slot(&self, index: LogIndex) -> Option<usize> {
        if index <= self.mark_index {
            return None;
        }
        let k = (index.0 - self.mark_index.0 - 1) as usize;
        (k < self.entries.len()).then_some(k)
    }

    fn append(
        &mut self,
        entries: &[EntryView<'_>],
        segment: SegmentSeq,
        body_offset: u64,
        after_purge: bool,
    ) -> Result<(), String> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let restart_provisional = self.provisional && first.index <= self.mark_index;
        if let Some((floor_index, floor_term)) = self.floor {
            if restart_provisional && first.index <= floor_index.next() {
                self.entries.clear();
                self.mark_index = floor_index;
                self.mark_term = floor_term;
                self.provisional = false;
                self.floor = None;
                return self.append(entries, segment, body_offset, after_purge);
            }
        }
        let starts_after_hole = first.index > self.last_index().next() && self.entries.is_empty();
        if restart_provisional || (after_purge && starts_after_hole) {
            // Replaying from a purged prefix: the entries before these were in purged
            // segments, so a mark covering them comes later in the replay (checked by
            // `MemIndex::finish_replay`). Until then the log starts here.
            self.entries.clear();
            self.mark_index = first.index.prev();
            self.mark_term = first.term;
            self.provisional = true;
        }
        let live: Vec<&EntryView<'_>> = entries
            .iter()
            .filter(|view| view.index > self.mark_index)
            .collect();
        let Some(first) = live.first() else {
            return Ok(());
        };
        if first.index > self.last_index().next() {
            return Err(format!(
                "entries start at {} but the last index is {}: a gap",
                first.index,
                self.last_index()
            ));
        }
        let keep = (first.index.0 - self.mark_index.0 - 1) as usize;
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

    /// Log compaction: drops entries up to `index`, keeps later ones.
    fn compact(&mut self, index: LogIndex, term: Term) {
        if self.provisional && index < self.mark_index {
            // The entries between `index` and the provisional mark must be rewritten later in
            // the replay (else their segment could not have been purged); remember the mark.
            if self.floor.is_none_or(|(floor, _)| floor < index) {
                self.floor = Some((index, term));
            }
            return;
        }
        if index < self.mark_index || (index == self.mark_index && !self.provisional) {
            return;
        }
        let covered = ((index.0 - self.mark_index.0) as usize).min(self.entries.len());
        self.entries.drain(..covered);
        self.mark_index = index;
        self.mark_term = term;
        self.provisional = false;
        self.floor = None;
    }

    /// Snapshot installation: drops every entry and moves the mark to `index`.
    fn install_snapshot(&mut self, index: LogIndex, term: Term) {
        if index <= self.mark_index && !self.provisional {
            return;
        }
        self.entries.clear();
        self.mark_index = index;
        self.mark_term = term;
        self.provisional = false;
        self.floor = None;
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
    /// segment 1) tolerates a Region's entries starting past its last index, as long as a
    /// compaction mark covering the hole arrives before [`MemIndex::finish_replay`].
    pub fn begin_replay(&mut self, first: SegmentSeq) {
        self.replaying_after_purge = first > SegmentSeq(1);
    }

    /// Ends a replay.
    ///
    /// # Errors
    /// A sentence naming a Region whose entries follow a purged hole that no compaction mark
    /// covers: entries the Region needs were lost.
    pub fn finish_replay(&mut self) -> Result<(), String> {
        self.replaying_after_purge = false;
        let mut uncovered: Vec<(RegionId, LogIndex)> = self
            .regions
            .iter()
            .filter(|(_, log)| log.provisional)
            .map(|(region, log)| (*region, log.mark_index))
            .collect();
        uncovered.sort_unstable();
        match uncovered.first() {
            None => Ok(()),
            Some((region, index)) => Err(format!(
                "region {region}: entries up to {index} are in purged segments but no \
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
            let mut previous = log.mark_term;
            for (k, meta) in log.entries.iter().enumerate() {
                let index = log.mark_index.0 + 1 + k as u64;
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
