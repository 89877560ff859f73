//! `WalOptions`: every size and bound of one WAL, with defaults for production.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Result, WalError};
use crate::faults::FaultInjection;
use crate::format::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};

/// Alignment of every write (O_DIRECT needs the logical block size; 4 KiB covers all
/// current devices and matches the page size).
pub const WRITE_ALIGNMENT_BYTES: u64 = 4096;

/// How one WAL is laid out and how group commit is bounded.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// The directory holding the segment files (created if missing).
    pub dir: PathBuf,
    /// Size of every segment file, preallocated when the segment is created.
    pub segment_size_bytes: u64,
    /// Group commit stops adding appends to a write once it holds this many bytes (one
    /// append larger than this is still written, alone).
    pub batch_bytes_max: usize,
    /// How long the flusher waits for more appends before it writes. Zero writes as soon as
    /// the appends already runnable have been queued; coalescing then comes only from appends
    /// that arrive while a write is in flight, which is usually what you want.
    pub batch_wait_max: Duration,
    /// Appends queued but not yet written are bounded by this many bytes; further appends
    /// wait (back-pressure) until a write makes room.
    pub queue_bytes_max: usize,
    /// Injected disk faults, for tests (see [`crate::faults`]); none by default.
    pub faults: FaultInjection,
    /// Prepare the next segment in the background with zeros written over all of it (paced:
    /// complete when the active one is half full, see `crate::zero_fill::Pace`), so group
    /// commits overwrite initialized blocks and
    /// their fdatasync needs no journal commit (see `SpareSegment::prepare`); and zero-fill
    /// in the background an active segment that has unwritten blocks (the first one of a
    /// fresh WAL, one reopened after a restart, see `crate::zero_fill`). Costs one extra
    /// write of each segment, off the flush path.
    pub zero_fill_segments: bool,
    /// Open segment files `O_DSYNC`, so that a group commit is one write that is durable
    /// when it completes (the kernel adds the device flush or FUA) instead of a write and
    /// then an fdatasync: one submission and one completion less per batch. On by default;
    /// off gives write + fdatasync (what `wal-bench --write-through false` compares).
    pub write_through: bool,
    /// Write group commits (and fdatasync them, without `write_through`) with blocking system
    /// calls on the core's thread instead of submitting them to glommio's io_uring ring. The
    /// thread then waits in the kernel instead of parking and being woken by the completion,
    /// and the kernel finishes an `O_DSYNC` write in the writing thread rather than in a
    /// worker; but the core does nothing else until the write is durable. Off by default
    /// (the design's path); docs/benchmarks.md, pass L, has where it is faster.
    pub blocking_writes: bool,
    /// Keep the timings of this many latest group commits for
    /// [`crate::Wal::take_flush_timings`] (benchmarks); 0, the default, keeps none.
    pub flush_timings_max: usize,
}

impl WalOptions {
    /// Production defaults for a WAL in `dir`: 64 MiB segments, 1 MiB group commits.
    pub fn new(dir: impl Into<PathBuf>) -> WalOptions {
        WalOptions {
            dir: dir.into(),
            segment_size_bytes: 64 << 20,
            batch_bytes_max: 1 << 20,
            batch_wait_max: Duration::ZERO,
            queue_bytes_max: 16 << 20,
            faults: FaultInjection::none(),
            zero_fill_segments: true,
            write_through: true,
            blocking_writes: false,
            flush_timings_max: 0,
        }
    }

    /// The largest encoded batch one append may carry: half a segment's room, so a new
    /// segment always has space for its checkpoint record and the batch that started it.
    pub fn record_body_bytes_max(&self) -> usize {
        let room = self.segment_size_bytes as usize - SEGMENT_HEADER_LEN;
        (room / 2 - RECORD_HEADER_LEN).min(u32::MAX as usize)
    }

    /// Checks that the options can work.
    ///
    /// # Errors
    /// `InvalidOptions` naming the offending field.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: &str| Err(WalError::InvalidOptions(reason.to_string()));
        if self.segment_size_bytes < 4 * WRITE_ALIGNMENT_BYTES {
            return invalid("segment_size_bytes must be at least 16 KiB");
        }
        if !self
            .segment_size_bytes
            .is_multiple_of(WRITE_ALIGNMENT_BYTES)
        {
            return invalid("segment_size_bytes must be a multiple of 4 KiB");
        }
        if self.segment_size_bytes > u32::MAX as u64 {
            return invalid("segment_size_bytes must be below 4 GiB");
        }
        if self.batch_bytes_max == 0 {
            return invalid("batch_bytes_max must be positive");
        }
        if self.queue_bytes_max < self.batch_bytes_max {
            return invalid("queue_bytes_max must be at least batch_bytes_max");
        }
        Ok(())
    }
}
