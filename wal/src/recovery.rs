//! Rebuilding the index from a WAL directory: the read-only half of `Wal::open`.
//!
//! [`replay`] lists the segments, replays every valid record into a [`MemIndex`] under the
//! rules of [`crate::scan`], and checks that a purged prefix left no Region with a hole. It
//! reads through `memmap2` and writes nothing, so it runs without an executor: `Wal::open`
//! calls it before reopening the newest segment, and the `wal_recovery` fuzz target calls it
//! on directories of arbitrary bytes (it must return `Ok` or a typed error, never panic).

use std::borrow::Borrow;
use std::path::Path;

use crate::error::{Result, WalError};
use crate::format::SegmentSeq;
use crate::index::MemIndex;
use crate::scan::{self, DirScan, SegmentReader};

/// What a replay rebuilt.
#[derive(Debug)]
pub struct Replayed {
    /// Every Region's log as the segments describe it.
    pub index: MemIndex,
    /// The segments read, the end of the valid log, and any torn tail found.
    pub scan: DirScan,
}

/// Replays every segment of `dir` into a fresh index.
///
/// # Errors
/// `Io`, `MissingSegment`, `MisnamedSegment`, and `Corruption` for damage that is not a torn
/// tail or for records that do not fit a Region's log (see [`crate::scan`]).
pub fn replay(dir: &Path) -> Result<Replayed> {
    let segments = scan::list_segments(dir)?;
    let first = segments.first().map_or(SegmentSeq(1), |s| s.seq);
    replay_segments(first, segments.iter().map(SegmentReader::open))
}

/// [`replay`] over segments opened one by one (mapped files, or bytes in memory for
/// [`crate::MemLog`]), oldest first and consecutive; `first` is the oldest segment's number
/// (a purged prefix changes how a Region's first entries are read, see `index`).
///
/// # Errors
/// As [`replay`], and whatever opening a segment returns.
pub fn replay_segments<R: Borrow<SegmentReader>>(
    first: SegmentSeq,
    readers: impl ExactSizeIterator<Item = Result<R>>,
) -> Result<Replayed> {
    let mut index = MemIndex::new();
    index.begin_replay(first);
    let scan = scan::scan_segments(readers, |reader, record| {
        index
            .apply_record(reader.seq(), record)
            .map_err(|reason| WalError::corruption(reader.seq(), record.offset, reason))
    })?;
    index
        .finish_replay()
        .map_err(|reason| WalError::corruption(first, 0, reason))?;
    Ok(Replayed { index, scan })
}
