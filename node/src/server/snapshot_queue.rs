//! The periodic snapshots a core took, waiting to be written to their files off the core's
//! thread, one at a time. Sans-I/O, so that the glommio driver (`core.rs`) and the
//! whole-node simulation follow the same rules:
//!
//! 1. `push` queues a snapshot the Store took every `snapshot_interval_entries` (a newer one
//!    of the same Region replaces a queued older one: only the newest is worth writing);
//! 2. `start` hands out the next one to write when none is being written;
//! 3. `written` is called when that file is durable (written, fsynced, renamed, directory
//!    fsynced): only then does its compaction mark go to `Carried`, i.e. into the next WAL
//!    batch, after which the WAL may purge what the mark covers.
//!
//! A crash anywhere in between leaves the previous snapshot file and the WAL from the
//! previous mark on: recovery replays them, exactly as before the snapshot was taken.
//!
//! Snapshots that must be durable before the next WAL batch (Regions created by a split,
//! snapshots seeding a learner, snapshots received from a leader) are not queued here; the
//! driver writes them on its thread and `forget`s the queued older ones of their Region. A
//! periodic file that lands after such a newer file of its Region is harmless:
//! `snapshot_files::write` removes only older files, recovery takes the newest, and a
//! compaction mark at or below the WAL's current mark changes nothing. Before it deletes a
//! destroyed Region's files the driver waits for the write in progress (`writing`), so that
//! no file and no mark of that Region lands after its removal.

use std::collections::VecDeque;

use tessera_core::{LogIndex, RegionId, Term};

use super::round::Carried;
use crate::store::SnapshotTaken;

/// Which snapshot a file holds (and its compaction mark covers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotMark {
    pub region: RegionId,
    pub index: LogIndex,
    pub term: Term,
}

/// Periodic snapshots waiting for their files, and the one being written.
#[derive(Debug, Default)]
pub struct SnapshotQueue {
    waiting: VecDeque<SnapshotTaken>,
    /// The snapshot whose file is being written.
    writing: Option<SnapshotMark>,
}

impl SnapshotQueue {
    /// Queues a snapshot the Store took; a queued older snapshot of its Region is dropped.
    pub fn push(&mut self, taken: SnapshotTaken) {
        if let Some(queued) = self.waiting.iter_mut().find(|q| q.region == taken.region) {
            if queued.index <= taken.index {
                *queued = taken;
            }
            return;
        }
        self.waiting.push_back(taken);
    }

    /// The next snapshot to write, if none is being written. The caller writes its file
    /// durably (off the core's thread) and then calls `written`.
    pub fn start(&mut self) -> Option<SnapshotTaken> {
        if self.writing.is_some() {
            return None;
        }
        let taken = self.waiting.pop_front()?;
        self.writing = Some(SnapshotMark {
            region: taken.region,
            index: taken.index,
            term: taken.term,
        });
        Some(taken)
    }

    /// The snapshot being written, if any.
    pub fn writing(&self) -> Option<SnapshotMark> {
        self.writing
    }

    /// The file of the snapshot being written is durable: its compaction mark goes in the
    /// next WAL batch. Returns that mark.
    ///
    /// # Panics
    /// If no snapshot was being written.
    pub fn written(&mut self, carried: &mut Carried) -> SnapshotMark {
        let mark = self.writing.take().expect("a snapshot was being written");
        carried.compacted(mark.region, mark.index, mark.term);
        mark
    }

    /// Drops the queued snapshots of `region`: it was destroyed, or a newer snapshot of it
    /// (received, or taken to seed a learner) was written on the core's thread. A write in
    /// progress is not affected: the caller waits for it where that matters.
    pub fn forget(&mut self, region: RegionId) {
        self.waiting.retain(|q| q.region != region);
    }

    /// Snapshots queued and not started.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use tessera_core::{ConfState, LogIndex, NodeId, Term};
    use tessera_wal::LogBatch;

    use super::*;

    fn taken(region: u64, index: u64) -> SnapshotTaken {
        SnapshotTaken {
            region: RegionId(region),
            index: LogIndex(index),
            term: Term(1),
            conf_state: ConfState::with_voters([NodeId(1)]),
            data: vec![index as u8].into(),
        }
    }

    /// The encoded items a batch taken now would carry.
    fn marks(carried: &mut Carried) -> Vec<u8> {
        carried.take_batch().encoded_items().to_vec()
    }

    #[test]
    fn the_mark_waits_until_the_file_is_written() {
        let mut queue = SnapshotQueue::default();
        let mut carried = Carried::default();
        queue.push(taken(1, 100));
        let started = queue.start().expect("one to write").index;
        assert_eq!(started, LogIndex(100));
        // A slow write: rounds go on, and their batches carry no mark.
        assert!(marks(&mut carried).is_empty(), "no mark before the file");
        assert!(queue.start().is_none(), "one write at a time");
        let done = queue.written(&mut carried);
        assert_eq!(done.index, LogIndex(100));
        let mut expected = LogBatch::new();
        expected.compact_to(RegionId(1), LogIndex(100), Term(1));
        assert_eq!(marks(&mut carried), expected.encoded_items());
    }

    #[test]
    fn a_failed_or_interrupted_write_never_carries_its_mark() {
        // The write fails (the node stops) or the node crashes while it runs: `written` is
        // never called, and nothing that reaches the WAL mentions the snapshot.
        let mut queue = SnapshotQueue::default();
        let mut carried = Carried::default();
        queue.push(taken(1, 100));
        queue.push(taken(2, 50));
        assert!(queue.start().is_some());
        assert!(marks(&mut carried).is_empty());
        drop(queue);
        assert!(marks(&mut carried).is_empty());
    }

    #[test]
    fn writes_go_one_at_a_time_in_order_and_only_the_newest_per_region_waits() {
        let mut queue = SnapshotQueue::default();
        let mut carried = Carried::default();
        queue.push(taken(1, 100));
        assert_eq!(queue.start().map(|t| t.index), Some(LogIndex(100)));
        queue.push(taken(2, 10));
        queue.push(taken(1, 200));
        queue.push(taken(1, 300));
        queue.push(taken(2, 5)); // older than the queued one: ignored
        assert_eq!(queue.waiting(), 2);
        let mut order = vec![queue.written(&mut carried)];
        while let Some(next) = queue.start().map(|t| (t.region, t.index)) {
            assert!(queue.start().is_none());
            let done = queue.written(&mut carried);
            assert_eq!((done.region, done.index), next);
            order.push(done);
        }
        let order: Vec<(u64, u64)> = order.iter().map(|t| (t.region.0, t.index.0)).collect();
        assert_eq!(order, vec![(1, 100), (2, 10), (1, 300)]);
        let mut expected = LogBatch::new();
        for (region, index) in order {
            expected.compact_to(RegionId(region), LogIndex(index), Term(1));
        }
        assert_eq!(marks(&mut carried), expected.encoded_items());
    }

    #[test]
    fn forgotten_regions_lose_their_queued_snapshots() {
        let mut queue = SnapshotQueue::default();
        let mut carried = Carried::default();
        queue.push(taken(1, 100));
        queue.push(taken(2, 10));
        queue.push(taken(3, 10));
        assert_eq!(queue.start().map(|t| t.region), Some(RegionId(1)));
        queue.forget(RegionId(2));
        queue.written(&mut carried);
        assert_eq!(queue.start().map(|t| t.region), Some(RegionId(3)));
        assert_eq!(queue.waiting(), 0);
    }
}
