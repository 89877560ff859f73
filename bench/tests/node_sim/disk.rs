//! A simulated disk for one core: its WAL as bytes in the real record format (a `MemLog`,
//! which rotates segments, writes checkpoints and purges as the file WAL does) and its
//! snapshot files.
//!
//! Durability model:
//! 1. `write` puts a record in the active segment, unsynced; `sync` makes it durable. A new
//!    segment is created durably (temporary file, fsync, rename, directory fsync), so a
//!    rotation moves the synced point to the start of the new segment's first batch record.
//! 2. A crash keeps what was synced, and of the unsynced tail either nothing, a random
//!    prefix (a torn write) or all of it (the write reached the platter before the crash).
//! 3. Snapshot files are written durably and atomically (temporary file and rename), so a
//!    crash leaves either the old file or the new one; the newest (highest index) wins, as
//!    in `snapshot_files::write`, which deletes the Region's older files (a periodic
//!    snapshot written in the background may land after a newer one received meanwhile).

use std::collections::BTreeMap;

use tessera_core::rng::SplitMix64;
use tessera_core::{LogIndex, RegionId, Term};
use tessera_node::server::bootstrap::SnapshotSource;
use tessera_node::server::snapshot_files::{self, SnapshotFile};
use tessera_node::store::{SnapshotTaken, Tombstone};
use tessera_wal::{LogBatch, MemLog, SegmentSeq};

/// Small segments, so runs rotate and purge often.
pub const SEGMENT_BYTES: u64 = 16 << 10;

/// What became of the unsynced tail at a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TailFate {
    Lost,
    Torn,
    Kept,
}

pub struct SimDisk {
    pub log: MemLog,
    /// The end of the durable log: (segment, length).
    synced: (SegmentSeq, u64),
    snapshots: BTreeMap<RegionId, (LogIndex, Term, Vec<u8>)>,
    /// The tombstones file (written durably, like a snapshot file).
    tombstones: BTreeMap<RegionId, u64>,
}

impl SimDisk {
    pub fn new() -> SimDisk {
        let log = MemLog::create(SEGMENT_BYTES);
        let synced = log.end();
        SimDisk {
            log,
            synced,
            snapshots: BTreeMap::new(),
            tombstones: BTreeMap::new(),
        }
    }

    /// A destroyed replica: its tombstone is written durably, then its snapshot file is
    /// deleted (the order of the node's driver).
    pub fn destroyed(&mut self, tombstone: Tombstone) {
        let known = self.tombstones.entry(tombstone.region).or_default();
        *known = (*known).max(tombstone.conf_version);
        self.snapshots.remove(&tombstone.region);
    }

    /// Writes `batch` as one record, not yet synced. Returns whether it rotated.
    pub fn write(&mut self, batch: &LogBatch) -> bool {
        let Some(appended) = self.log.append(batch) else {
            return false;
        };
        if appended.rotated {
            self.synced = (appended.segment, appended.offset);
        }
        appended.rotated
    }

    /// fdatasync succeeded.
    pub fn sync(&mut self) {
        self.synced = self.log.end();
    }

    /// Bytes written but not synced.
    pub fn unsynced_bytes(&self) -> u64 {
        let (seq, len) = self.log.end();
        assert_eq!(seq, self.synced.0, "unsynced bytes span a rotation");
        len - self.synced.1
    }

    /// A snapshot file, written durably (see the module docs).
    pub fn write_snapshot(&mut self, taken: &SnapshotTaken) {
        if self
            .snapshots
            .get(&taken.region)
            .is_some_and(|(index, _, _)| *index > taken.index)
        {
            return;
        }
        let bytes = snapshot_files::encode(&taken.conf_state, &taken.data);
        self.snapshots
            .insert(taken.region, (taken.index, taken.term, bytes));
    }

    /// A crash: what stays on disk. Returns the segments to recover from and the tail's fate.
    pub fn crash(&mut self, rng: &mut SplitMix64) -> (Vec<(SegmentSeq, Vec<u8>)>, TailFate) {
        let unsynced = self.unsynced_bytes();
        let fate = match (unsynced, rng.range(0, 3)) {
            (0, _) => TailFate::Kept,
            (_, 0) => TailFate::Lost,
            (_, 1) => TailFate::Torn,
            _ => TailFate::Kept,
        };
        let keep = match fate {
            TailFate::Lost => 0,
            TailFate::Torn => rng.range(0, unsynced),
            TailFate::Kept => unsynced,
        };
        let mut segments: Vec<(SegmentSeq, Vec<u8>)> = self
            .log
            .segments()
            .map(|(seq, bytes)| (seq, bytes.to_vec()))
            .collect();
        let (_, newest) = segments.last_mut().expect("a live segment");
        newest.truncate((self.synced.1 + keep) as usize);
        (segments, fate)
    }

    /// The disk after recovery replayed `log` (with a torn tail cut).
    pub fn recovered(&mut self, log: MemLog) {
        self.synced = log.end();
        self.log = log;
    }
}

/// Recovery reads the simulated snapshot files as it reads a snapshot directory.
impl SnapshotSource for SimDisk {
    fn regions(&self) -> Result<Vec<RegionId>, String> {
        Ok(self.snapshots.keys().copied().collect())
    }

    /// The newest snapshot of `region`, decoded as recovery decodes a file.
    fn newest(&self, region: RegionId) -> Result<Option<SnapshotFile>, String> {
        let Some((index, term, bytes)) = self.snapshots.get(&region) else {
            return Ok(None);
        };
        let path = format!("sim/{}-{}-{}.snap", region.0, index.0, term.0).into();
        snapshot_files::from_bytes(path, *index, *term, bytes).map(Some)
    }

    fn tombstones(&self) -> Result<Vec<Tombstone>, String> {
        Ok(self
            .tombstones
            .iter()
            .map(|(region, conf_version)| Tombstone {
                region: *region,
                conf_version: *conf_version,
            })
            .collect())
    }
}
