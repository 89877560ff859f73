//! `LogBatch`: what one `Wal::append` makes durable, for any number of Regions.
//!
//! A batch is encoded as it is built, so appending it costs one copy into the write buffer
//! and nothing is held twice. Items apply in the order they were added, on write and on
//! recovery alike. For one Region in one batch the natural order is:
//!
//! 1. `install_snapshot` (a follower installing the leader's snapshot) or `compact_to`
//!    (log compaction after a local snapshot),
//! 2. `add_entries` (Raft's `Ready::entries`),
//! 3. `set_hard_state` (Raft's `Ready::hard_state`).
//!
//! Appending entries that start at index `i` replaces the Region's stored entries from `i` on
//! (Raft's truncation of a conflicting suffix). Entries must start no later than one past the
//! Region's last index and after its compaction mark; anything else is a programmer error and
//! the WAL asserts.

use tessera_core::{Entry, HardState, LogIndex, RegionId, Term};

use crate::format;

/// A batch of per-Region entries, hard states, compaction marks and removals.
#[derive(Clone, Debug, Default)]
pub struct LogBatch {
    body: Vec<u8>,
    item_count: usize,
    entry_count: usize,
}

impl LogBatch {
    /// An empty batch.
    pub fn new() -> LogBatch {
        LogBatch::default()
    }

    /// Appends `entries` to `region`'s log, replacing its entries from `entries[0].index` on.
    /// An empty slice adds nothing.
    ///
    /// # Panics
    /// If the entries' indexes are not consecutive or their terms decrease.
    pub fn add_entries(&mut self, region: RegionId, entries: &[Entry]) {
        if entries.is_empty() {
            return;
        }
        for pair in entries.windows(2) {
            assert!(
                pair[1].term >= pair[0].term,
                "region {region}: term decreases from {:?} to {:?} at {:?}",
                pair[0].term,
                pair[1].term,
                pair[1].index
            );
        }
        format::encode_entries(&mut self.body, region, entries);
        self.item_count += 1;
        self.entry_count += entries.len();
    }

    /// Sets `region`'s hard state.
    pub fn set_hard_state(&mut self, region: RegionId, hard_state: HardState) {
        format::encode_hard_state(&mut self.body, region, hard_state);
        self.item_count += 1;
    }

    /// Log compaction after a local snapshot: `region`'s entries up to `index` (whose term
    /// is `term`) are covered by it and dropped; later entries stay. A mark at or below the
    /// current one changes nothing.
    pub fn compact_to(&mut self, region: RegionId, index: LogIndex, term: Term) {
        format::encode_compact(&mut self.body, region, index, term);
        self.item_count += 1;
    }

    /// A follower installing the leader's snapshot at `index`/`term`: every stored entry of
    /// `region` is dropped (the log restarts after the snapshot). A snapshot at or below the
    /// current mark changes nothing.
    pub fn install_snapshot(&mut self, region: RegionId, index: LogIndex, term: Term) {
        format::encode_install_snapshot(&mut self.body, region, index, term);
        self.item_count += 1;
    }

    /// Drops everything the WAL holds for `region` (a replica moved away).
    pub fn remove_region(&mut self, region: RegionId) {
        format::encode_remove_region(&mut self.body, region);
        self.item_count += 1;
    }

    /// True if nothing was added.
    pub fn is_empty(&self) -> bool {
        self.item_count == 0
    }

    /// Number of items added.
    pub fn item_count(&self) -> usize {
        self.item_count
    }

    /// Number of entries added, over all Regions.
    pub fn entry_count(&self) -> usize {
        self.entry_count
    }

    /// Bytes the batch adds to a record body.
    pub fn encoded_len(&self) -> usize {
        self.body.len()
    }

    /// The encoded items, as they will appear in a record body (see `docs/wal-format.md`).
    pub fn encoded_items(&self) -> &[u8] {
        &self.body
    }

    /// Takes the encoded items.
    pub(crate) fn into_body(self) -> Vec<u8> {
        self.body
    }
}
