//! `Wal`: one write-ahead log shared by all the Regions of one core.
//!
//! Writes are asynchronous and group-committed (see `group_commit`); reads are synchronous,
//! because the Raft core's `Storage` trait is: the in-memory index says where each entry
//! lies, and `entries` reads it with `pread` from the segment file. The segment was written
//! with O_DIRECT, which invalidates the page cache for the written range, so buffered reads
//! see what was written. Only durable entries are in the index: the Raft core keeps entries
//! it has not yet persisted in its own unstable log.
//!
//! Purging (numbered order, safe to crash anywhere):
//! 1. the segments older than the oldest segment any Region still needs (and older than the
//!    active one) are chosen; every segment after them starts with a checkpoint record, so
//!    they hold no hard state or compaction mark that is not repeated later;
//! 2. they are deleted oldest first, so the survivors stay consecutive;
//! 3. the directory is fsynced.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use glommio::task::JoinHandle;
use tessera_core::{Entry, HardState, LogIndex, RegionId, Term};

use crate::error::{Result, WalError};
use crate::format::{self, SegmentSeq, RECORD_HEADER_LEN};
use crate::group_commit::{self, FlushTiming, Queue, WalStats};
use crate::index::{EntryLocation, MemIndex, RegionLog};
use crate::io_poll;
use crate::log_batch::LogBatch;
use crate::options::WalOptions;
use crate::recovery::{self, Replayed};
use crate::scan::TornTail;
use crate::segment::{self, ActiveSegment, SpareSegment};
use crate::spare_thread::SpareThread;
use crate::zero_fill::Pace;

/// What `Wal::open` found on disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files read.
    pub segments_scanned: usize,
    /// The oldest and newest segment after opening (a new WAL has just segment 1).
    pub first_segment: SegmentSeq,
    pub last_segment: SegmentSeq,
    /// Valid records replayed.
    pub records: u64,
    /// Regions the WAL holds something for.
    pub regions: usize,
    /// The torn tail that was cut from the newest segment, if any.
    pub torn_tail: Option<TornTail>,
    /// Leftovers of an interrupted segment creation, deleted: temporary files, and a newest
    /// segment that was prepared but never started (see `scan::DirScan::unstarted`).
    pub removed_temp_files: Vec<PathBuf>,
}

/// Which segments exist, which one is written, and read handles.
#[derive(Default)]
pub(crate) struct Segments {
    live: BTreeSet<SegmentSeq>,
    active: SegmentSeq,
    read_files: HashMap<SegmentSeq, Rc<File>>,
}

/// The spare segment being prepared in the background.
enum SpareJob {
    /// A task on this executor, through glommio's ring; or one opening the file a
    /// [`SpareThread`] prepared.
    Task(JoinHandle<Result<SpareSegment>>),
    /// A thread with blocking system calls (`WalOptions::blocking_writes`, see
    /// `crate::spare_thread`).
    Thread(SpareThread),
}

/// State shared by the `Wal` handle and its flusher task (one executor, so `RefCell`).
pub(crate) struct Shared {
    pub(crate) options: WalOptions,
    pub(crate) index: RefCell<MemIndex>,
    pub(crate) queue: RefCell<Queue>,
    segments: RefCell<Segments>,
    /// The task preparing the next segment's file ahead of need (see `SpareSegment`), and
    /// the pace of its zero-fill.
    spare: RefCell<Option<(SpareJob, Arc<Pace>)>>,
}

impl Shared {
    /// Starts the next segment with a checkpoint of every Region's hard state and mark,
    /// written in front of the next record (see `ActiveSegment::start`). The caller purges
    /// (`purge`) once that write is durable, not before: until then the new segment has no
    /// checkpoint that would let recovery do without the older ones.
    pub(crate) async fn rotate(&self, segment: &mut ActiveSegment) -> Result<()> {
        let checkpoint = self.index.borrow().checkpoint_body();
        if checkpoint.len() > self.options.record_body_bytes_max() {
            return Err(WalError::InvalidOptions(format!(
                "segment_size_bytes {} is too small for a checkpoint of {} bytes ({} regions)",
                self.options.segment_size_bytes,
                checkpoint.len(),
                self.index.borrow().region_count()
            )));
        }
        let next = segment.seq().next();
        let spare = self.take_spare(next).await?;
        let created = ActiveSegment::start(spare, &checkpoint, &self.options)?;
        let finished = std::mem::replace(segment, created);
        if let Err(error) = finished.close().await {
            tracing::warn!(%error, "closing a full WAL segment failed");
        }
        {
            let mut segments = self.segments.borrow_mut();
            segments.live.insert(next);
            segments.active = next;
        }
        self.queue.borrow_mut().stats.segments_created += 1;
        Ok(())
    }

    /// After each group commit, with `used` bytes of the active segment in use: starts
    /// preparing segment `seq`'s file in the background, zero-filled, unless that is under way
    /// or `WalOptions::zero_fill_segments` is off, and lets its zero-fill run ahead in step
    /// with the active segment (see [`Pace`]: it is complete when the active segment is half
    /// full, and a short-lived WAL writes few zeros). With blocking writes the file is made on
    /// a thread (see `crate::spare_thread`), and opened here once that is done.
    pub(crate) fn pace_spare(&self, seq: SegmentSeq, used: u64) {
        if !self.options.zero_fill_segments {
            return;
        }
        let mut spare = self.spare.borrow_mut();
        if let Some((job, pace)) = spare.take() {
            pace.set_used(used);
            let job = match job {
                SpareJob::Thread(thread) if thread.is_finished() => {
                    let write_through = self.options.write_through;
                    SpareJob::Task(glommio::spawn_local(thread.finish(write_through)).detach())
                }
                job => job,
            };
            *spare = Some((job, pace));
            return;
        }
        let (dir, len) = (self.options.dir.clone(), self.options.segment_size_bytes);
        let write_through = self.options.write_through;
        let pace = Pace::new();
        pace.set_used(used);
        let job = if self.options.blocking_writes {
            match SpareThread::start(&dir, seq, len, pace.clone()) {
                Ok(thread) => SpareJob::Thread(thread),
                Err(error) => {
                    // The rotation makes the segment then, without zeros.
                    tracing::warn!(%error, "cannot prepare a spare WAL segment");
                    return;
                }
            }
        } else {
            let zero_fill = Some(pace.clone());
            SpareJob::Task(
                glommio::spawn_local(async move {
                    SpareSegment::prepare(&dir, seq, len, zero_fill, write_through).await
                })
                .detach(),
            )
        };
        *spare = Some((job, pace));
    }

    /// Bytes of the spare zeroed so far, `None` when no spare is being prepared.
    pub(crate) fn spare_zeroed_bytes(&self) -> Option<u64> {
        self.spare.borrow().as_ref().map(|(_, pace)| pace.zeroed())
    }

    /// The prepared file for segment `seq`: the spare when it is ready (waiting for it if
    /// it is still being zero-filled), else one made now without zero-filling.
    async fn take_spare(&self, seq: SegmentSeq) -> Result<SpareSegment> {
        let job = self.spare.borrow_mut().take();
        if let Some((job, pace)) = job {
            pace.unpace();
            let prepared = match job {
                SpareJob::Task(task) => task.await,
                SpareJob::Thread(thread) => Some(thread.finish(self.options.write_through).await),
            };
            match prepared {
                Some(Ok(spare)) if spare.seq() == seq => return Ok(spare),
                Some(Ok(_)) | None => {}
                Some(Err(error)) => {
                    tracing::warn!(%error, "preparing a spare WAL segment failed");
                }
            }
            // Whatever it left, under either name, held nothing (the one made now replaces
            // it anyway).
            remove_spare_files(&self.options.dir, seq)?;
        }
        let len = self.options.segment_size_bytes;
        SpareSegment::prepare(
            &self.options.dir,
            seq,
            len,
            None,
            self.options.write_through,
        )
        .await
    }

    /// Stops a spare still being prepared and deletes its file, under its temporary or (once
    /// prepared) its final name, then fsyncs the directory (the WAL is closing; a spare left
    /// behind by a crash is deleted by `Wal::open`).
    pub(crate) async fn drop_spare(&self) {
        let job = self.spare.borrow_mut().take();
        let Some((job, _)) = job else { return };
        let seq = match job {
            SpareJob::Task(task) => {
                task.cancel();
                match task.await {
                    Some(Ok(spare)) => spare.seq(),
                    _ => self.segments.borrow().active.next(),
                }
            }
            SpareJob::Thread(thread) => {
                let seq = thread.seq();
                thread.stop();
                seq
            }
        };
        let removed = async {
            if remove_spare_files(&self.options.dir, seq)? {
                segment::sync_dir(&self.options.dir).await?;
            }
            Ok::<(), WalError>(())
        };
        if let Err(error) = removed.await {
            tracing::warn!(%error, "deleting a spare WAL segment failed");
        }
    }

    pub(crate) async fn purge(&self) -> Result<Vec<SegmentSeq>> {
        let doomed: Vec<SegmentSeq> = {
            let mut segments = self.segments.borrow_mut();
            let keep_from = purge_keep_from(&self.index.borrow(), segments.active);
            let doomed: Vec<SegmentSeq> = segments.live.range(..keep_from).copied().collect();
            for seq in &doomed {
                segments.live.remove(seq);
                segments.read_files.remove(seq);
            }
            doomed
        };
        for seq in &doomed {
            let path = segment::segment_path(&self.options.dir, *seq);
            std::fs::remove_file(&path).map_err(|e| WalError::io("delete segment", &path, e))?;
        }
        if !doomed.is_empty() {
            segment::sync_dir(&self.options.dir).await?;
            tracing::debug!(?doomed, "purged WAL segments");
        }
        Ok(doomed)
    }

    fn read_file(&self, seq: SegmentSeq) -> Result<Rc<File>> {
        let mut segments = self.segments.borrow_mut();
        if let Some(file) = segments.read_files.get(&seq) {
            return Ok(file.clone());
        }
        let path = segment::segment_path(&self.options.dir, seq);
        let file = Rc::new(File::open(&path).map_err(|e| WalError::io("open segment", &path, e))?);
        segments.read_files.insert(seq, file.clone());
        Ok(file)
    }
}

/// One core's write-ahead log. Create it inside a glommio executor with [`Wal::open`].
pub struct Wal {
    shared: Rc<Shared>,
    flusher: Option<JoinHandle<()>>,
}

impl Wal {
    /// Opens (or creates) the WAL in `options.dir`: replays every segment into the index,
    /// cuts a torn tail, and starts the flusher task on the current executor.
    ///
    /// # Errors
    /// `InvalidOptions`, `Io`, `MissingSegment`, `MisnamedSegment`, and `Corruption` for
    /// damage that is not a torn tail (see `scan`).
    pub async fn open(options: WalOptions) -> Result<(Wal, RecoveryReport)> {
        options.validate()?;
        if let Some(spec) = options.faults.spec() {
            tracing::warn!(?spec, dir = %options.dir.display(), "WAL FAULT INJECTION ARMED (test only)");
        }
        let dir = options.dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| WalError::io("create directory", &dir, e))?;
        // Before any DMA file here: writes on a device that cannot poll complete by
        // interrupt, so the executor may sleep while they are in flight.
        let ring = io_poll::prefer_interrupts(&dir).await?;
        tracing::debug!(?ring, dir = %dir.display(), "WAL DMA ring");
        let mut report = RecoveryReport {
            removed_temp_files: remove_temp_files(&dir)?,
            ..RecoveryReport::default()
        };
        let Replayed { index, scan } = recovery::replay(&dir)?;
        if let Some(unstarted) = &scan.unstarted {
            // Prepared ahead and never started (or its checkpoint write was torn): it held
            // nothing, and the segment before it is the newest (see `scan`).
            tracing::info!(path = %unstarted.path.display(), "deleting a WAL segment that was never started");
            std::fs::remove_file(&unstarted.path)
                .map_err(|e| WalError::io("delete segment", &unstarted.path, e))?;
            segment::sync_dir(&dir).await?;
            report.removed_temp_files.push(unstarted.path.clone());
        }
        let segment = match scan.segments.last() {
            None => {
                let seq = SegmentSeq(1);
                let checkpoint = index.checkpoint_body();
                ActiveSegment::create(seq, &checkpoint, &options).await?
            }
            Some(newest) => {
                let cut_end = scan
                    .torn_tail
                    .as_ref()
                    .map_or(scan.end_offset, |torn| torn.offset + torn.bytes);
                if let Some(torn) = &scan.torn_tail {
                    tracing::warn!(?torn, "cutting a torn tail off the newest WAL segment");
                }
                ActiveSegment::reopen(&newest.path, newest.seq, scan.end_offset, cut_end, &options)
                    .await?
            }
        };
        let mut live: BTreeSet<SegmentSeq> = scan.segments.iter().map(|s| s.seq).collect();
        live.insert(segment.seq());
        report.segments_scanned = scan.segments.len();
        report.first_segment = *live.first().expect("at least the active segment");
        report.last_segment = segment.seq();
        report.records = scan.records;
        report.regions = index.region_count();
        report.torn_tail = scan.torn_tail;
        let shared = Rc::new(Shared {
            options,
            index: RefCell::new(index),
            queue: RefCell::new(Queue::default()),
            segments: RefCell::new(Segments {
                live,
                active: segment.seq(),
                read_files: HashMap::new(),
            }),
            spare: RefCell::new(None),
        });
        let flusher =
            glommio::spawn_local(group_commit::run_flusher(shared.clone(), segment)).detach();
        Ok((
            Wal {
                shared,
                flusher: Some(flusher),
            },
            report,
        ))
    }

    /// Makes `batch` durable. Returns once its bytes are written and fdatasynced, together
    /// with whatever other appends were queued at the time (group commit), and the index
    /// shows them. An empty batch returns at once.
    ///
    /// # Errors
    /// `BatchTooLarge` for a batch over [`WalOptions::record_body_bytes_max`], `Poisoned`
    /// after a failed write, `Closed` after `close`.
    ///
    /// # Panics
    /// (In the flusher task) if the batch does not fit a Region's log: entries leaving a gap
    /// after the last index. That is a programmer error in the caller.
    pub async fn append(&self, batch: LogBatch) -> Result<()> {
        self.shared.queue.borrow().check_usable()?;
        if batch.is_empty() {
            return Ok(());
        }
        let limit = self.shared.options.record_body_bytes_max();
        if batch.encoded_len() > limit {
            return Err(WalError::BatchTooLarge {
                bytes: batch.encoded_len(),
                limit,
            });
        }
        let queue_bytes_max = self.shared.options.queue_bytes_max;
        group_commit::append(&self.shared.queue, batch.into_body(), queue_bytes_max).await
    }

    /// Deletes every segment no Region needs any more (see the module docs). The flusher
    /// also does this after starting each new segment; call it after compacting Regions to
    /// free space sooner. Returns the deleted segments.
    ///
    /// # Errors
    /// `Io` when a deletion or the directory fsync fails.
    pub async fn purge(&self) -> Result<Vec<SegmentSeq>> {
        self.shared.purge().await
    }

    /// Stops accepting appends, writes what is queued, and waits for the flusher to finish.
    ///
    /// # Errors
    /// `Poisoned` if an earlier write had failed.
    pub async fn close(mut self) -> Result<()> {
        self.shared.queue.borrow_mut().close();
        if let Some(flusher) = self.flusher.take() {
            flusher.await;
        }
        let queue = self.shared.queue.borrow();
        match &queue.failure_reason() {
            Some(reason) => Err(WalError::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }

    /// Entries of `region` in `[low, high)`, at most `max_bytes` of them by
    /// `Entry::size_bytes` but at least one if the range is not empty. Synchronous.
    ///
    /// # Errors
    /// `UnknownRegion`, `Compacted` if `low` is at or below the compaction mark,
    /// `Unavailable` if `high` is past one after the last index, `Io` or `Corruption` if the
    /// segment read fails or does not hold what the index says.
    pub fn entries(
        &self,
        region: RegionId,
        low: LogIndex,
        high: LogIndex,
        max_bytes: usize,
    ) -> Result<Vec<Entry>> {
        let locations = {
            let index = self.shared.index.borrow();
            let log = region_log(&index, region)?;
            check_range(region, log, low, high)?;
            pick_locations(log, low, high, max_bytes)
        };
        self.read_entries(&locations)
    }

    fn read_entries(&self, locations: &[(LogIndex, Term, EntryLocation)]) -> Result<Vec<Entry>> {
        let mut entries = Vec::with_capacity(locations.len());
        let mut start = 0;
        while start < locations.len() {
            let end = contiguous_run_end(locations, start);
            let first = locations[start].2;
            let last = locations[end - 1].2;
            let run_len = (last.offset + last.len as u64 - first.offset) as usize;
            let file = self.shared.read_file(first.segment)?;
            let mut bytes = vec![0u8; run_len];
            file.read_exact_at(&mut bytes, first.offset).map_err(|e| {
                WalError::io(
                    "read entries",
                    segment::segment_path(&self.shared.options.dir, first.segment),
                    e,
                )
            })?;
            for &(index, term, location) in &locations[start..end] {
                let at = (location.offset - first.offset) as usize;
                entries.push(decode_stored_entry(
                    &bytes[at..at + location.len as usize],
                    index,
                    term,
                    location,
                )?);
            }
            start = end;
        }
        Ok(entries)
    }

    /// The first index `entries` can return for `region` (one past its compaction mark).
    ///
    /// # Errors
    /// `UnknownRegion`.
    pub fn first_index(&self, region: RegionId) -> Result<LogIndex> {
        Ok(region_log(&self.shared.index.borrow(), region)?.first_index())
    }

    /// The last stored index of `region` (its compaction mark when no entries are stored).
    ///
    /// # Errors
    /// `UnknownRegion`.
    pub fn last_index(&self, region: RegionId) -> Result<LogIndex> {
        Ok(region_log(&self.shared.index.borrow(), region)?.last_index())
    }

    /// The term of `region`'s entry at `index`, for `first_index - 1 <= index <= last_index`.
    ///
    /// # Errors
    /// `UnknownRegion`, `Compacted` below the mark, `Unavailable` past the last index.
    pub fn term(&self, region: RegionId, index: LogIndex) -> Result<Term> {
        read_term(&self.shared.index.borrow(), region, index)
    }

    /// The latest hard state of `region`, `None` if it never had one.
    ///
    /// # Errors
    /// `UnknownRegion`.
    pub fn hard_state(&self, region: RegionId) -> Result<Option<HardState>> {
        Ok(region_log(&self.shared.index.borrow(), region)?.hard_state())
    }

    /// The compaction mark of `region`: entries up to it are covered by a snapshot.
    ///
    /// # Errors
    /// `UnknownRegion`.
    pub fn compaction_mark(&self, region: RegionId) -> Result<(LogIndex, Term)> {
        Ok(region_log(&self.shared.index.borrow(), region)?.compaction_mark())
    }

    /// Every Region the WAL holds something for, sorted.
    pub fn regions(&self) -> Vec<RegionId> {
        self.shared.index.borrow().regions()
    }

    /// The segments on disk, oldest first.
    pub fn segments(&self) -> Vec<SegmentSeq> {
        self.shared.segments.borrow().live.iter().copied().collect()
    }

    /// Counters since open.
    pub fn stats(&self) -> WalStats {
        self.shared.queue.borrow().stats
    }

    /// The timings of the group commits since the last call, oldest first, at most
    /// [`WalOptions::flush_timings_max`] (older ones are dropped); none when that is 0.
    pub fn take_flush_timings(&self) -> Vec<FlushTiming> {
        self.shared
            .queue
            .borrow_mut()
            .flush_timings
            .drain(..)
            .collect()
    }

    /// Checks the index invariants (for tests and the simulator).
    ///
    /// # Panics
    /// On a violated invariant.
    pub fn invariants(&self) {
        self.shared.index.borrow().invariants();
    }
}

impl Drop for Wal {
    /// Dropping without `close` still lets the flusher write what is queued and stop.
    fn drop(&mut self) {
        self.shared.queue.borrow_mut().close();
    }
}

impl crate::memory::LogRead for Wal {
    fn first_index(&self, region: RegionId) -> Result<LogIndex> {
        Wal::first_index(self, region)
    }

    fn last_index(&self, region: RegionId) -> Result<LogIndex> {
        Wal::last_index(self, region)
    }

    fn term(&self, region: RegionId, index: LogIndex) -> Result<Term> {
        Wal::term(self, region, index)
    }

    fn entries(
        &self,
        region: RegionId,
        low: LogIndex,
        high: LogIndex,
        max_bytes: usize,
    ) -> Result<Vec<Entry>> {
        Wal::entries(self, region, low, high, max_bytes)
    }

    fn hard_state(&self, region: RegionId) -> Result<Option<HardState>> {
        Wal::hard_state(self, region)
    }
}

/// The oldest segment to keep when purging: the oldest any Region needs, at most `active`.
pub(crate) fn purge_keep_from(index: &MemIndex, active: SegmentSeq) -> SegmentSeq {
    index
        .oldest_needed_segment()
        .map_or(active, |oldest| oldest.min(active))
}

pub(crate) fn region_log(index: &MemIndex, region: RegionId) -> Result<&RegionLog> {
    index.region(region).ok_or(WalError::UnknownRegion(region))
}

/// The term of `region`'s entry at `index` (see [`Wal::term`]).
pub(crate) fn read_term(index: &MemIndex, region: RegionId, at: LogIndex) -> Result<Term> {
    let log = region_log(index, region)?;
    if let Some(term) = log.term(at) {
        return Ok(term);
    }
    if at < log.first_index() {
        return Err(WalError::Compacted {
            region,
            requested: at,
            first: log.first_index(),
        });
    }
    Err(WalError::Unavailable {
        region,
        requested: at,
        last: log.last_index(),
    })
}

pub(crate) fn check_range(
    region: RegionId,
    log: &RegionLog,
    low: LogIndex,
    high: LogIndex,
) -> Result<()> {
    if low < log.first_index() {
        return Err(WalError::Compacted {
            region,
            requested: low,
            first: log.first_index(),
        });
    }
    if high > log.last_index().next() {
        return Err(WalError::Unavailable {
            region,
            requested: high.prev(),
            last: log.last_index(),
        });
    }
    Ok(())
}

/// The entries to read: from `low`, while under `max_bytes` (but at least one).
pub(crate) fn pick_locations(
    log: &RegionLog,
    low: LogIndex,
    high: LogIndex,
    max_bytes: usize,
) -> Vec<(LogIndex, Term, EntryLocation)> {
    let mut picked = Vec::new();
    let mut bytes = 0usize;
    let mut index = low;
    while index < high {
        let location = log.location(index).expect("checked range");
        let term = log.term(index).expect("checked range");
        // Entry::size_bytes is data + 24; the stored length is data + the entry header.
        bytes += location.len as usize - format::ENTRY_HEADER_LEN + 24;
        if !picked.is_empty() && bytes > max_bytes {
            break;
        }
        picked.push((index, term, location));
        index = index.next();
    }
    picked
}

/// One past the last location from `start` that directly follows its predecessor in the
/// same segment, so the run can be read with one `pread`.
fn contiguous_run_end(locations: &[(LogIndex, Term, EntryLocation)], start: usize) -> usize {
    const RUN_BYTES_MAX: u64 = 4 << 20;
    let first = locations[start].2;
    let mut end = start + 1;
    while end < locations.len() {
        let previous = locations[end - 1].2;
        let next = locations[end].2;
        let contiguous = next.segment == previous.segment
            && next.offset == previous.offset + previous.len as u64
            && next.offset + next.len as u64 - first.offset <= RUN_BYTES_MAX;
        if !contiguous {
            break;
        }
        end += 1;
    }
    end
}

pub(crate) fn decode_stored_entry(
    bytes: &[u8],
    index: LogIndex,
    term: Term,
    location: EntryLocation,
) -> Result<Entry> {
    let corrupt = |reason: String| WalError::corruption(location.segment, location.offset, reason);
    let (stored_term, kind, data) = format::decode_entry_at(bytes).map_err(corrupt)?;
    if stored_term != term || data.len() + format::ENTRY_HEADER_LEN != location.len as usize {
        return Err(corrupt(format!(
            "entry {index} on disk has term {stored_term} and {} bytes, the index expects \
             term {term} and {} bytes",
            data.len(),
            location.len as usize - format::ENTRY_HEADER_LEN
        )));
    }
    Ok(Entry {
        term,
        index,
        kind,
        data: data.into(),
    })
}

/// Deletes the file of spare segment `seq`, a prepared segment that was never started, under
/// its temporary name and its final one, if they exist. Returns whether there was a file
/// with the final name (then the caller fsyncs the directory).
///
/// The caller makes sure that segment `seq` was never started: it is the one after the
/// active segment.
fn remove_spare_files(dir: &std::path::Path, seq: SegmentSeq) -> Result<bool> {
    let mut final_removed = false;
    for (path, is_final) in [
        (segment::spare_path(dir, seq), false),
        (segment::segment_path(dir, seq), true),
    ] {
        match std::fs::remove_file(&path) {
            Ok(()) => final_removed |= is_final,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(WalError::io("delete spare segment", &path, e)),
        }
    }
    Ok(final_removed)
}

/// Deletes `*.tmp` files left by a segment creation that a crash interrupted.
fn remove_temp_files(dir: &std::path::Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let read_dir = std::fs::read_dir(dir).map_err(|e| WalError::io("read directory", dir, e))?;
    for dir_entry in read_dir {
        let dir_entry = dir_entry.map_err(|e| WalError::io("read directory", dir, e))?;
        let name = dir_entry.file_name();
        let is_temp = name
            .to_str()
            .and_then(|n| n.strip_suffix(".tmp"))
            .is_some_and(|n| SegmentSeq::from_file_name(n).is_some());
        if is_temp {
            let path = dir_entry.path();
            std::fs::remove_file(&path).map_err(|e| WalError::io("delete temp file", &path, e))?;
            removed.push(path);
        }
    }
    Ok(removed)
}

const _: () = assert!(RECORD_HEADER_LEN == 12);
