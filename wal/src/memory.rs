//! The WAL without files: [`MemLog`] keeps segments as bytes in memory, in the record format
//! of `docs/wal-format.md`, and recovers from them through the same replay as [`Wal::open`]
//! (`recovery::replay_segments`: the same scan, torn-tail rule and index; and the same purge
//! rule). Deterministic simulations use it as
//! a simulated disk: they tear or drop the bytes a crash did not sync, then recover.
//!
//! [`LogRead`] is what recovery reads from a log, implemented by [`Wal`] and [`MemLog`], so
//! the node rebuilds its Regions through one code path from either.
//!
//! Appending follows the flusher (`group_commit`): when a record does not fit the active
//! segment, a new segment starts with a checkpoint of every Region's hard state and
//! compaction mark, and the segments no Region needs any more are purged.
//!
//! [`Wal`]: crate::Wal
//! [`Wal::open`]: crate::Wal::open

use std::collections::BTreeMap;

use tessera_core::{Entry, HardState, LogIndex, RegionId, Term};

use crate::error::{Result, WalError};
use crate::format::{self, RecordType, SegmentSeq, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::index::MemIndex;
use crate::log_batch::LogBatch;
use crate::recovery::{replay_segments, Replayed};
use crate::scan::{self, SegmentReader, TornTail};
use crate::wal::{check_range, pick_locations, purge_keep_from, read_term, region_log};

/// What recovery reads from a write-ahead log, file-backed ([`crate::Wal`]) or in memory
/// ([`MemLog`]). The methods mean what the `Wal` methods of the same names mean.
pub trait LogRead {
    /// One past the compaction mark of `region`.
    ///
    /// # Errors
    /// `UnknownRegion`.
    fn first_index(&self, region: RegionId) -> Result<LogIndex>;
    /// The last stored index of `region` (its compaction mark when no entries are stored).
    ///
    /// # Errors
    /// `UnknownRegion`.
    fn last_index(&self, region: RegionId) -> Result<LogIndex>;
    /// The term at `index`, for `first_index - 1 <= index <= last_index`.
    ///
    /// # Errors
    /// `UnknownRegion`, `Compacted`, `Unavailable`.
    fn term(&self, region: RegionId, index: LogIndex) -> Result<Term>;
    /// Entries in `[low, high)`, at most `max_bytes` of them (at least one).
    ///
    /// # Errors
    /// `UnknownRegion`, `Compacted`, `Unavailable`, `Io`, `Corruption`.
    fn entries(
        &self,
        region: RegionId,
        low: LogIndex,
        high: LogIndex,
        max_bytes: usize,
    ) -> Result<Vec<Entry>>;
    /// The latest hard state of `region`.
    ///
    /// # Errors
    /// `UnknownRegion`.
    fn hard_state(&self, region: RegionId) -> Result<Option<HardState>>;
}

/// Where [`MemLog::append`] put a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub segment: SegmentSeq,
    /// Byte offset of the record in its segment.
    pub offset: u64,
    /// Bytes of the record.
    pub len: u64,
    /// True if the record started a new segment (after a checkpoint record).
    pub rotated: bool,
}

/// A write-ahead log held in memory; see the module docs.
pub struct MemLog {
    segment_size_bytes: u64,
    /// Live segments, oldest first; the last is the active one. Each holds its header and
    /// records, without the zero padding a preallocated file has.
    segments: BTreeMap<SegmentSeq, SegmentReader>,
    index: MemIndex,
}

impl MemLog {
    /// An empty log: segment 1 holding an empty checkpoint, as [`crate::Wal::open`] creates
    /// in an empty directory.
    ///
    /// # Panics
    /// If `segment_size_bytes` cannot hold a header and a few records.
    pub fn create(segment_size_bytes: u64) -> MemLog {
        assert!(
            segment_size_bytes >= 4 * (SEGMENT_HEADER_LEN + RECORD_HEADER_LEN) as u64,
            "segment_size_bytes {segment_size_bytes} is too small"
        );
        let mut log = MemLog {
            segment_size_bytes,
            segments: BTreeMap::new(),
            index: MemIndex::new(),
        };
        log.start_segment(SegmentSeq(1));
        log
    }

    /// Recovers from `segments` (sequence number and bytes, as a crash left them) with the
    /// rules of [`crate::Wal::open`]: consecutive segments, a torn tail in the newest one is
    /// cut (here: truncated), damage elsewhere is `Corruption`, a newest segment without a
    /// valid record is dropped. No segments: an empty log.
    ///
    /// # Errors
    /// `MissingSegment`, `MisnamedSegment`, `Corruption`.
    pub fn recover(
        segment_size_bytes: u64,
        segments: Vec<(SegmentSeq, Vec<u8>)>,
    ) -> Result<(MemLog, Option<TornTail>)> {
        if segments.is_empty() {
            return Ok((MemLog::create(segment_size_bytes), None));
        }
        let seqs: Vec<SegmentSeq> = segments.iter().map(|(seq, _)| *seq).collect();
        scan::check_consecutive(std::path::Path::new(""), &seqs)?;
        let readers = segments
            .into_iter()
            .map(|(seq, bytes)| SegmentReader::from_bytes(seq, bytes))
            .collect::<Result<Vec<_>>>()?;
        let Replayed { index, scan } = replay_segments(seqs[0], readers.iter().map(Ok))?;
        let mut segments: BTreeMap<SegmentSeq, SegmentReader> =
            readers.into_iter().map(|r| (r.seq(), r)).collect();
        if let Some(unstarted) = &scan.unstarted {
            // Never started (its checkpoint was torn): dropped, as `Wal::open` deletes it.
            segments.remove(&unstarted.seq);
        }
        let Some((newest_seq, newest)) = segments.pop_last() else {
            return Ok((MemLog::create(segment_size_bytes), None));
        };
        let mut bytes = newest.into_owned_bytes().expect("in memory");
        bytes.truncate(scan.end_offset as usize);
        let newest = SegmentReader::from_bytes(newest_seq, bytes)?;
        segments.insert(newest.seq(), newest);
        let log = MemLog {
            segment_size_bytes,
            segments,
            index,
        };
        Ok((log, scan.torn_tail))
    }

    /// Appends `batch` as one record (an empty batch writes nothing and returns `None`),
    /// starting a new segment first when it does not fit.
    ///
    /// # Panics
    /// If the batch does not fit a Region's log (a programmer error, as in the flusher), or
    /// is larger than half a segment.
    pub fn append(&mut self, batch: &LogBatch) -> Option<Appended> {
        if batch.is_empty() {
            return None;
        }
        let body = batch.encoded_items();
        let record_len = (RECORD_HEADER_LEN + body.len()) as u64;
        assert!(
            record_len <= (self.segment_size_bytes - SEGMENT_HEADER_LEN as u64) / 2,
            "a batch of {} bytes is too large for {}-byte segments",
            body.len(),
            self.segment_size_bytes
        );
        let rotated = record_len > self.room();
        if rotated {
            self.rotate();
        }
        let (segment, offset) = self.write_record(RecordType::Batch, body);
        Some(Appended {
            segment,
            offset,
            len: record_len,
            rotated,
        })
    }

    /// The live segments' bytes, oldest first (what a crash would leave, if all was synced).
    pub fn segments(&self) -> impl Iterator<Item = (SegmentSeq, &[u8])> {
        self.segments.iter().map(|(seq, r)| (*seq, r.bytes()))
    }

    /// The active segment and its length: where the next record goes.
    pub fn end(&self) -> (SegmentSeq, u64) {
        let (seq, reader) = self.segments.last_key_value().expect("a live segment");
        (*seq, reader.len())
    }

    /// The compaction mark of `region`.
    ///
    /// # Errors
    /// `UnknownRegion`.
    pub fn compaction_mark(&self, region: RegionId) -> Result<(LogIndex, Term)> {
        Ok(region_log(&self.index, region)?.compaction_mark())
    }

    /// Every Region the log holds something for, sorted.
    pub fn regions(&self) -> Vec<RegionId> {
        self.index.regions()
    }

    /// Checks the index invariants.
    ///
    /// # Panics
    /// On a violated invariant.
    pub fn invariants(&self) {
        self.index.invariants();
    }

    fn room(&self) -> u64 {
        self.segment_size_bytes - self.end().1
    }

    /// A new active segment holding a checkpoint, then the purge the flusher does.
    fn rotate(&mut self) {
        let next = self.end().0.next();
        self.start_segment(next);
        let keep_from = purge_keep_from(&self.index, next);
        self.segments = self.segments.split_off(&keep_from);
    }

    fn start_segment(&mut self, seq: SegmentSeq) {
        let header = format::encode_segment_header(seq).to_vec();
        let reader = SegmentReader::from_bytes(seq, header).expect("a fresh header is valid");
        self.segments.insert(seq, reader);
        let checkpoint = self.index.checkpoint_body();
        self.write_record(RecordType::Checkpoint, &checkpoint);
    }

    /// Writes one record at the end of the active segment and applies it to the index.
    fn write_record(&mut self, record_type: RecordType, body: &[u8]) -> (SegmentSeq, u64) {
        let (seq, reader) = self.segments.pop_last().expect("a live segment");
        let offset = reader.len();
        let mut bytes = reader.into_owned_bytes().expect("in memory");
        format::encode_record(&mut bytes, seq, offset, record_type, body);
        let reader = SegmentReader::from_bytes(seq, bytes).expect("header unchanged");
        let scan::Step::Record(view) = reader.step(offset) else {
            panic!("segment {seq} offset {offset}: a record just written does not read back");
        };
        if let Err(reason) = self.index.apply_record(seq, &view) {
            panic!("segment {seq} offset {offset}: a batch does not fit the log (programmer error): {reason}");
        }
        self.segments.insert(seq, reader);
        (seq, offset)
    }
}

impl LogRead for MemLog {
    fn first_index(&self, region: RegionId) -> Result<LogIndex> {
        Ok(region_log(&self.index, region)?.first_index())
    }

    fn last_index(&self, region: RegionId) -> Result<LogIndex> {
        Ok(region_log(&self.index, region)?.last_index())
    }

    fn term(&self, region: RegionId, index: LogIndex) -> Result<Term> {
        read_term(&self.index, region, index)
    }

    fn entries(
        &self,
        region: RegionId,
        low: LogIndex,
        high: LogIndex,
        max_bytes: usize,
    ) -> Result<Vec<Entry>> {
        let log = region_log(&self.index, region)?;
        check_range(region, log, low, high)?;
        pick_locations(log, low, high, max_bytes)
            .into_iter()
            .map(|(index, term, location)| {
                let segment = self.segments.get(&location.segment).ok_or_else(|| {
                    WalError::corruption(location.segment, location.offset, "segment purged")
                })?;
                let start = location.offset as usize;
                let bytes = segment
                    .bytes()
                    .get(start..start + location.len as usize)
                    .ok_or_else(|| {
                        WalError::corruption(location.segment, location.offset, "past the end")
                    })?;
                crate::wal::decode_stored_entry(bytes, index, term, location)
            })
            .collect()
    }

    fn hard_state(&self, region: RegionId) -> Result<Option<HardState>> {
        Ok(region_log(&self.index, region)?.hard_state())
    }
}
