//! The active segment: the one file the WAL appends to, through a glommio DMA file.
//!
//! Writes go through io_uring with O_DIRECT, so every write covers whole 4 KiB blocks. The
//! partial last block (the "tail") is kept in memory; each write starts at the tail's block,
//! rewriting the tail's bytes unchanged, then the new record, then zeros to the block end.
//! One record is one write and one fdatasync.
//!
//! A new segment is born in two halves (numbered list = order of operations):
//! 1. prepared, ahead of need (the WAL does this in the background for the next segment
//!    while the current one is written, a "spare"; see [`SpareSegment::prepare`]): create
//!    `<name>.tmp`, preallocate `segment_size_bytes`, write zeros over all of it, write the
//!    segment header, fdatasync, rename to `<name>`, fsync the directory;
//! 2. started, when the active segment is full ([`ActiveSegment::start`]): its checkpoint
//!    record goes out in front of the first batch, in that batch's write (write-through, or
//!    write + fdatasync).
//!
//!
//! With `WalOptions::blocking_writes`, step 1 runs on a thread of its own with blocking system
//! calls instead, in the same order, and the executor then only opens the descriptor for the
//! records (see `crate::spare_thread` for why).
//!
//! So a rotation adds nothing to the flush path but a checkpoint record in the next write;
//! the rename and the directory fsync (a journal commit) happened earlier, off it. A segment with its final name
//! always has a valid header; one that holds no valid record (prepared but never started, or
//! whose checkpoint write a crash tore) can only be the newest, held nothing acknowledged, and
//! recovery deletes it (`crate::scan`). A crash before the rename leaves only a `.tmp` file,
//! which `Wal::open` deletes.
//!
//! A segment made without the zeros of step 1 (the first one of a fresh WAL, so that opening
//! stays fast; one made when no spare was ready) and a reopened one that FIEMAP shows still
//! has unwritten blocks past the end of the log are zero-filled in the background once
//! active (see `crate::zero_fill`).

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::io::{DmaBuffer, DmaFile, OpenOptions};

use crate::error::{Result, WalError};
use crate::faults::{FaultInjection, FaultOp};
use crate::format::{
    self, decode_body, RecordType, SegmentSeq, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use crate::options::{WalOptions, WRITE_ALIGNMENT_BYTES};
use crate::scan::RecordView;
use crate::zero_fill::{Pace, ZeroFill};

fn align_down(offset: u64) -> u64 {
    offset - offset % WRITE_ALIGNMENT_BYTES
}

fn align_up(offset: u64) -> u64 {
    align_down(offset + WRITE_ALIGNMENT_BYTES - 1)
}

fn io_error<T>(op: &'static str, path: &Path) -> impl FnOnce(glommio::GlommioError<T>) -> WalError {
    let path = path.to_path_buf();
    move |e| WalError::io(op, path, std::io::Error::from(e))
}

/// The path of segment `seq` in `dir`.
pub fn segment_path(dir: &Path, seq: SegmentSeq) -> PathBuf {
    dir.join(seq.file_name())
}

/// Fsyncs a directory, making file creations, renames and deletions in it durable.
///
/// # Errors
/// `Io` naming the directory.
pub async fn sync_dir(dir: &Path) -> Result<()> {
    // glommio 0.9 opens a directory at dirfd -1, where a relative path fails with EBADF (its
    // file opens resolve relative paths themselves): resolve against the current directory.
    let absolute = std::path::absolute(dir).map_err(|e| WalError::io("resolve path", dir, e))?;
    let dir = absolute.as_path();
    let handle = glommio::io::Directory::open(dir)
        .await
        .map_err(io_error("open directory", dir))?;
    handle
        .sync()
        .await
        .map_err(io_error("fsync directory", dir))?;
    handle
        .close()
        .await
        .map_err(io_error("close directory", dir))
}

/// A record that was just made durable, with the bytes it was written from.
pub struct WrittenRecord {
    buffer: Rc<DmaBuffer>,
    segment: SegmentSeq,
    /// File offset of the buffer's first byte.
    buffer_offset: u64,
    /// File offset of the record.
    record_offset: u64,
    record_type: RecordType,
    body_len: usize,
    /// Where the time went.
    pub timing: WriteTiming,
}

/// The stages of one record write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteTiming {
    /// Encoding the record into the write buffer (copy and CRC32C).
    pub build: Duration,
    /// Waiting for the background zero-fill's write in flight, if the record reaches it.
    pub zero_fill_wait: Duration,
    /// The write, submission to completion.
    pub write: Duration,
    /// The fdatasync, submission to completion.
    pub sync: Duration,
}

impl WrittenRecord {
    /// The segment the record went to.
    pub fn segment(&self) -> SegmentSeq {
        self.segment
    }

    /// File offset of the record.
    pub fn offset(&self) -> u64 {
        self.record_offset
    }

    /// Bytes written to the disk for this record (whole blocks).
    pub fn buffer_len(&self) -> usize {
        self.buffer.len()
    }

    /// The record, decoded from the written bytes.
    ///
    /// # Panics
    /// If the bytes this WAL encoded do not decode (a bug).
    pub fn view(&self) -> RecordView<'_> {
        let start = (self.record_offset - self.buffer_offset) as usize + RECORD_HEADER_LEN;
        let body = &self.buffer.as_bytes()[start..start + self.body_len];
        let items = decode_body(body).unwrap_or_else(|(at, reason)| {
            panic!(
                "segment {} offset {}: freshly encoded body does not decode at {at}: {reason}",
                self.segment, self.record_offset
            )
        });
        RecordView {
            offset: self.record_offset,
            record_type: self.record_type,
            body,
            items,
        }
    }
}

/// The file of the next segment, prepared ahead of need (step 1 of the module docs, the
/// zeros only when asked): under its final name, with a header and no record.
pub struct SpareSegment {
    seq: SegmentSeq,
    path: PathBuf,
    file: DmaFile,
    len: u64,
    zero_filled: bool,
    write_through: bool,
}

/// Open flags of a segment file: `O_DSYNC` when its group commits are write-through.
fn open_flags(write_through: bool) -> libc::c_int {
    if write_through {
        libc::O_DSYNC
    } else {
        0
    }
}

impl SpareSegment {
    /// Step 1 of the module docs for segment `seq`: creates `<name>.tmp`, preallocates `len`
    /// bytes, with `zero_fill` writes zeros over all of it (as fast as its [`Pace`] lets it),
    /// writes the segment header, fdatasyncs, renames it to `<name>` and fsyncs the directory.
    /// All of it through a plain descriptor; with `write_through`, the segment's records will
    /// go through a second descriptor opened `O_DSYNC`.
    ///
    /// Why zero-fill: preallocated blocks are "unwritten" extents (ext4, XFS). The first
    /// write into such a block converts the extent, a metadata change, so the fdatasync after
    /// it must wait for a journal commit, which costs several times a plain data flush and
    /// varies a lot. Writing the zeros ahead of need, off the flush path, makes every group
    /// commit an overwrite of initialized blocks: one data write and one device flush.
    ///
    /// Why a plain descriptor: with write-through, every zero write through an `O_DSYNC`
    /// descriptor would be a device flush (and a journal commit for its extent conversions)
    /// competing with the group commits of the active segment, and the spare would take so
    /// long that a rotation could wait for it. One fdatasync at the end does instead.
    ///
    /// # Errors
    /// `Io` for any failed step; the half-made file is then deleted (best effort: `Wal::open`
    /// deletes leftovers too), so a full disk is not made fuller by it.
    pub async fn prepare(
        dir: &Path,
        seq: SegmentSeq,
        len: u64,
        zero_fill: Option<Arc<Pace>>,
        write_through: bool,
    ) -> Result<SpareSegment> {
        let tmp_path = spare_path(dir, seq);
        let path = segment_path(dir, seq);
        let prepared = async {
            let file =
                prepare_file(&tmp_path, seq, len, zero_fill.as_deref(), write_through).await?;
            std::fs::rename(&tmp_path, &path)
                .map_err(|e| WalError::io("rename segment", &tmp_path, e))?;
            sync_dir(dir).await?;
            Ok(file)
        };
        match prepared.await {
            Ok(file) => Ok(SpareSegment {
                seq,
                path,
                file,
                len,
                zero_filled: zero_fill.is_some(),
                write_through,
            }),
            Err(error) => {
                remove_half_made(&tmp_path, &path);
                Err(error)
            }
        }
    }

    /// A spare that was prepared elsewhere (step 1 of the module docs done, the zeros
    /// written): opens the descriptor its records will be written through (`O_DSYNC` with
    /// `write_through`). See `crate::spare_thread`.
    ///
    /// # Errors
    /// `Io` when the file cannot be opened.
    pub(crate) async fn open_prepared(
        dir: &Path,
        seq: SegmentSeq,
        len: u64,
        write_through: bool,
    ) -> Result<SpareSegment> {
        let path = segment_path(dir, seq);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(open_flags(write_through))
            .dma_open(&path)
            .await
            .map_err(io_error("open segment", &path))?;
        Ok(SpareSegment {
            seq,
            path,
            file,
            len,
            zero_filled: true,
            write_through,
        })
    }

    /// The segment number it is prepared for.
    pub fn seq(&self) -> SegmentSeq {
        self.seq
    }
}

/// Deletes what a failed preparation left, under the temporary name or the final one.
fn remove_half_made(tmp_path: &Path, path: &Path) {
    remove_leftover(tmp_path);
    remove_leftover(path);
}

/// Deletes a half-made segment file if it exists (best effort: `Wal::open` deletes leftovers
/// too), so a full disk is not made fuller by it.
pub(crate) fn remove_leftover(path: &Path) {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(%e, path = %path.display(), "cannot delete a half-made segment");
        }
        _ => {}
    }
}

/// The temporary name of segment `seq` while it is prepared.
pub fn spare_path(dir: &Path, seq: SegmentSeq) -> PathBuf {
    dir.join(format!("{}.tmp", seq.file_name()))
}

/// Creates `tmp_path`, preallocates it, writes the zeros (if `zero_fill`) and the header, and
/// fdatasyncs, through a plain descriptor; returns the descriptor the segment's records will
/// be written through (`O_DSYNC` with `write_through`).
async fn prepare_file(
    tmp_path: &Path,
    seq: SegmentSeq,
    len: u64,
    zero_fill: Option<&Pace>,
    write_through: bool,
) -> Result<DmaFile> {
    let plain = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .dma_open(tmp_path)
        .await
        .map_err(io_error("create segment", tmp_path))?;
    plain
        .pre_allocate(len, false)
        .await
        .map_err(io_error("preallocate segment", tmp_path))?;
    if let Some(pace) = zero_fill {
        write_zeros(&plain, len, tmp_path, pace).await?;
    }
    let mut header = plain.alloc_dma_buffer(WRITE_ALIGNMENT_BYTES as usize);
    header.as_bytes_mut().fill(0);
    header.as_bytes_mut()[..SEGMENT_HEADER_LEN]
        .copy_from_slice(&format::encode_segment_header(seq));
    let written = plain
        .write_at(header, 0)
        .await
        .map_err(io_error("write segment header", tmp_path))?;
    check_full_write(written, WRITE_ALIGNMENT_BYTES as usize, tmp_path)?;
    plain
        .fdatasync()
        .await
        .map_err(io_error("fdatasync", tmp_path))?;
    if !write_through {
        return Ok(plain);
    }
    // Opened before the plain one is closed: the file always has a descriptor.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DSYNC)
        .dma_open(tmp_path)
        .await
        .map_err(io_error("open segment", tmp_path))?;
    plain
        .close()
        .await
        .map_err(io_error("close segment", tmp_path))?;
    Ok(file)
}

/// The segment being appended to.
pub struct ActiveSegment {
    seq: SegmentSeq,
    path: PathBuf,
    file: Rc<DmaFile>,
    len: u64,
    /// Zeros being written over the unwritten blocks ahead (see `crate::zero_fill`).
    zero_fill: Option<ZeroFill>,
    write_pos: u64,
    /// Bytes `[align_down(write_pos), write_pos)`, rewritten by the next write.
    tail: Vec<u8>,
    faults: FaultInjection,
    /// Record writes (and fdatasyncs) as blocking system calls on this thread instead of
    /// glommio's ring (`WalOptions::blocking_writes`), and its background zero-fill on a
    /// thread.
    blocking_writes: bool,
    /// Opened `O_DSYNC` (`WalOptions::write_through`): a record write is durable when it
    /// completes, so no fdatasync follows it.
    write_through: bool,
    /// The checkpoint body of a segment just started, written in front of its first record,
    /// in the same write (see [`ActiveSegment::start`]).
    pending_checkpoint: Option<Vec<u8>>,
}

impl ActiveSegment {
    /// Creates segment `seq` in `options.dir` holding a checkpoint record with
    /// `checkpoint_body`, following the steps in the module docs without the zeros of step 1
    /// (then zero-filled in the background with `zero_fill_segments`).
    ///
    /// # Errors
    /// `Io` for any failed step.
    pub async fn create(
        seq: SegmentSeq,
        checkpoint_body: &[u8],
        options: &WalOptions,
    ) -> Result<ActiveSegment> {
        let (dir, len) = (&options.dir, options.segment_size_bytes);
        let spare = SpareSegment::prepare(dir, seq, len, None, options.write_through).await?;
        let mut segment = ActiveSegment::start(spare, checkpoint_body, options)?;
        segment.write_records(&[]).await?;
        Ok(segment)
    }

    /// Makes a prepared spare the active segment (step 2 of the module docs): its checkpoint
    /// record with `checkpoint_body` goes out in front of the next record, in the same write
    /// (so a rotation costs the group commit no extra write). A spare that was not zero-filled
    /// is zero-filled in the background with `zero_fill_segments`; faults and
    /// `blocking_writes` come from `options` too.
    ///
    /// A crash that tears that write leaves either a valid checkpoint and a torn batch (a
    /// torn tail) or no valid record at all (a never-started segment): both recover exactly.
    /// The caller purges older segments only once that write is durable: until then this
    /// segment holds no checkpoint that would let recovery do without them.
    ///
    /// # Errors
    /// `Io` (the injected preallocation fault: the preallocation itself may have happened
    /// earlier, in the background); the file, which holds nothing, is then deleted.
    pub fn start(
        spare: SpareSegment,
        checkpoint_body: &[u8],
        options: &WalOptions,
    ) -> Result<ActiveSegment> {
        if let Err(error) = options.faults.check(FaultOp::Preallocate, &spare.path) {
            // It holds nothing: a full disk is not made fuller by it (best effort: recovery
            // deletes a newest segment without a valid record too).
            if let Err(remove_error) = std::fs::remove_file(&spare.path) {
                tracing::warn!(%remove_error, path = %spare.path.display(), "cannot delete a segment that failed to start");
            }
            return Err(error);
        }
        let mut segment = ActiveSegment {
            seq: spare.seq,
            path: spare.path,
            file: Rc::new(spare.file),
            len: spare.len,
            zero_fill: None,
            write_pos: SEGMENT_HEADER_LEN as u64,
            tail: format::encode_segment_header(spare.seq).to_vec(),
            faults: options.faults.clone(),
            write_through: spare.write_through,
            blocking_writes: options.blocking_writes,
            pending_checkpoint: Some(checkpoint_body.to_vec()),
        };
        if options.zero_fill_segments && !spare.zero_filled {
            segment.start_zero_fill(align_up(segment.write_pos));
        }
        Ok(segment)
    }

    /// Starts zeroing `[from, len)` in the background: on a thread with blocking writes, else
    /// as a task on the executor.
    fn start_zero_fill(&mut self, from: u64) {
        if from >= self.len {
            return;
        }
        let path = self.path.clone();
        self.zero_fill = if self.blocking_writes {
            ZeroFill::start_thread(path, from, self.len)
        } else {
            Some(ZeroFill::start(self.file.clone(), path, from, self.len))
        };
    }

    /// Reopens segment `seq` for appending after recovery. The valid log ends at
    /// `end_offset`; bytes `[end_offset, cut_end)` are a torn tail to overwrite with zeros
    /// (pass `cut_end == end_offset` when there is none). Size, faults and flags come from
    /// `options`. With `zero_fill_segments`, unwritten blocks
    /// past the end (FIEMAP; all blocks past it where the file system does not tell) are
    /// zero-filled in the background.
    ///
    /// # Errors
    /// `Io` for a failed open, read or write.
    pub async fn reopen(
        path: &Path,
        seq: SegmentSeq,
        end_offset: u64,
        cut_end: u64,
        options: &WalOptions,
    ) -> Result<ActiveSegment> {
        let (len, faults) = (options.segment_size_bytes, &options.faults);
        let (zero_fill, write_through) = (options.zero_fill_segments, options.write_through);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(open_flags(write_through))
            .dma_open(path)
            .await
            .map_err(io_error("open segment", path))?;
        let file_len = file
            .file_size()
            .await
            .map_err(io_error("stat segment", path))?;
        // A segment cut short (by a crash of the file system, or by hand) is preallocated
        // again; a longer one (written with other options) is used as it is.
        let len = if file_len < len {
            faults.check(FaultOp::Preallocate, path)?;
            file.pre_allocate(len, false)
                .await
                .map_err(io_error("preallocate segment", path))?;
            len
        } else {
            align_down(file_len)
        };
        let tail_start = align_down(end_offset);
        let mut tail = vec![0u8; (end_offset - tail_start) as usize];
        // A plain pread: glommio's O_DIRECT read is not supported on every file system, and
        // this runs once per open.
        let reader =
            std::fs::File::open(path).map_err(|e| WalError::io("open segment", path, e))?;
        std::os::unix::fs::FileExt::read_exact_at(&reader, &mut tail, tail_start)
            .map_err(|e| WalError::io("read segment tail", path, e))?;
        let mut segment = ActiveSegment {
            seq,
            path: path.to_path_buf(),
            file: Rc::new(file),
            len,
            zero_fill: None,
            write_pos: end_offset,
            tail,
            faults: faults.clone(),
            write_through,
            blocking_writes: options.blocking_writes,
            pending_checkpoint: None,
        };
        if cut_end > end_offset {
            segment.zero_range(cut_end).await?;
        }
        if zero_fill {
            let from = align_up(cut_end.max(end_offset));
            let unwritten = crate::extents::unwritten_ranges(&reader);
            let first_unwritten = match unwritten {
                None => Some(from),
                Some(ranges) => ranges
                    .iter()
                    .find(|range| range.end > from)
                    .map(|range| align_down(range.start).max(from)),
            };
            if let Some(start) = first_unwritten {
                segment.start_zero_fill(start);
            }
        }
        Ok(segment)
    }

    /// Overwrites `[write_pos, cut_end)` with zeros (keeping the tail), then fdatasyncs.
    async fn zero_range(&mut self, cut_end: u64) -> Result<()> {
        const CHUNK_BYTES: u64 = 256 << 10;
        let mut start = align_down(self.write_pos);
        let end = align_up(cut_end).min(self.len);
        while start < end {
            let chunk = (end - start).min(CHUNK_BYTES);
            let mut buffer = self.file.alloc_dma_buffer(chunk as usize);
            buffer.as_bytes_mut().fill(0);
            if start == align_down(self.write_pos) {
                buffer.as_bytes_mut()[..self.tail.len()].copy_from_slice(&self.tail);
            }
            self.write_all(buffer, start, "zero torn tail").await?;
            start += chunk;
        }
        self.faults.check(FaultOp::Fdatasync, &self.path)?;
        self.file
            .fdatasync()
            .await
            .map_err(io_error("fdatasync", &self.path))
    }

    /// The segment's sequence number.
    pub fn seq(&self) -> SegmentSeq {
        self.seq
    }

    /// Bytes still free (after a pending checkpoint record).
    pub fn room(&self) -> u64 {
        let pending = self
            .pending_checkpoint
            .as_ref()
            .map_or(0, |body| (RECORD_HEADER_LEN + body.len()) as u64);
        self.len - self.write_pos - pending
    }

    /// Bytes in use: the header and the records.
    pub fn used(&self) -> u64 {
        self.write_pos
    }

    /// Writes one record whose body is `bodies` concatenated, then fdatasyncs: one write, one
    /// fdatasync; or, write-through, one `O_DSYNC` write that is durable when it completes.
    ///
    /// # Errors
    /// `Io` for a failed or short write or a failed fdatasync. The caller must not retry:
    /// see `WalError::Poisoned`.
    ///
    /// # Panics
    /// If the record does not fit in the segment (the caller checks `room` first).
    pub async fn write_record(
        &mut self,
        record_type: RecordType,
        bodies: &[&[u8]],
    ) -> Result<WrittenRecord> {
        self.write_records(&[(record_type, bodies)]).await
    }

    /// Writes a pending checkpoint record (if any) and `records` with one write (and one
    /// fdatasync unless write-through); returns the last record written.
    ///
    /// # Panics
    /// If nothing is to be written, or it does not fit in the segment.
    async fn write_records(&mut self, records: &[(RecordType, &[&[u8]])]) -> Result<WrittenRecord> {
        let checkpoint = self.pending_checkpoint.take();
        let mut all: Vec<(RecordType, &[&[u8]])> = Vec::with_capacity(records.len() + 1);
        let checkpoint_bodies: [&[u8]; 1] = [checkpoint.as_deref().unwrap_or_default()];
        if checkpoint.is_some() {
            all.push((RecordType::Checkpoint, &checkpoint_bodies));
        }
        all.extend_from_slice(records);
        let lens: Vec<u64> = all
            .iter()
            .map(|(_, bodies)| {
                (RECORD_HEADER_LEN + bodies.iter().map(|b| b.len()).sum::<usize>()) as u64
            })
            .collect();
        let total: u64 = lens.iter().sum();
        assert!(
            !all.is_empty() && total <= self.len - self.write_pos,
            "segment {}: records of {total} bytes do not fit in {} bytes",
            self.seq,
            self.len - self.write_pos
        );
        let began = Instant::now();
        let buffer_offset = align_down(self.write_pos);
        let end = self.write_pos + total;
        let mut buffer = self
            .file
            .alloc_dma_buffer((align_up(end) - buffer_offset) as usize);
        let bytes = buffer.as_bytes_mut();
        let tail_len = self.tail.len();
        bytes[..tail_len].copy_from_slice(&self.tail);
        let mut record_offset = self.write_pos;
        for (&(record_type, bodies), &len) in all.iter().zip(&lens) {
            let at = (record_offset - buffer_offset) as usize;
            fill_record(
                &mut bytes[at..],
                self.seq,
                record_offset,
                record_type,
                bodies,
            );
            record_offset += len;
        }
        bytes[(end - buffer_offset) as usize..].fill(0);
        let last_offset = end - lens.last().expect("not empty");
        let (record_type, last_bodies) = all.last().expect("not empty");
        let (record_type, body_len) = (*record_type, last_bodies.iter().map(|b| b.len()).sum());
        let buffer = Rc::new(buffer);
        let built = Instant::now();
        if let Some(zero_fill) = &self.zero_fill {
            zero_fill.reserve(align_up(end)).await;
        }
        let reserved = Instant::now();
        self.write_all_rc(buffer.clone(), buffer_offset).await?;
        let written = Instant::now();
        // With write-through the write above was the sync (the injected fault then stands
        // for its failing).
        self.faults.check(FaultOp::Fdatasync, &self.path)?;
        if !self.write_through {
            if self.blocking_writes {
                // SAFETY: fdatasync on the segment's open descriptor.
                if unsafe { libc::fdatasync(self.file.as_raw_fd()) } != 0 {
                    let error = std::io::Error::last_os_error();
                    return Err(WalError::io("fdatasync", self.path.clone(), error));
                }
            } else {
                self.file
                    .fdatasync()
                    .await
                    .map_err(io_error("fdatasync", &self.path))?;
            }
        }
        let timing = WriteTiming {
            build: built - began,
            zero_fill_wait: reserved - built,
            write: written - reserved,
            sync: written.elapsed(),
        };
        let new_tail_start = (align_down(end) - buffer_offset) as usize;
        self.tail = buffer.as_bytes()[new_tail_start..(end - buffer_offset) as usize].to_vec();
        self.write_pos = end;
        Ok(WrittenRecord {
            buffer,
            segment: self.seq,
            buffer_offset,
            record_offset: last_offset,
            record_type,
            body_len,
            timing,
        })
    }

    async fn write_all(&self, buffer: DmaBuffer, offset: u64, op: &'static str) -> Result<()> {
        self.faults.check(FaultOp::Write, &self.path)?;
        let expected = buffer.len();
        let written = self
            .file
            .write_at(buffer, offset)
            .await
            .map_err(io_error(op, &self.path))?;
        check_full_write(written, expected, &self.path)
    }

    async fn write_all_rc(&self, buffer: Rc<DmaBuffer>, offset: u64) -> Result<()> {
        self.faults.check(FaultOp::Write, &self.path)?;
        let expected = buffer.len();
        if self.blocking_writes {
            let bytes = buffer.as_bytes();
            // SAFETY: `bytes` is valid for `expected` bytes for the call; the buffer is aligned
            // for O_DIRECT as glommio's own writes need it; the descriptor is the segment's.
            let written = unsafe {
                libc::pwrite(
                    self.file.as_raw_fd(),
                    bytes.as_ptr().cast(),
                    expected,
                    offset as libc::off_t,
                )
            };
            if written < 0 {
                let error = std::io::Error::last_os_error();
                return Err(WalError::io("write record", self.path.clone(), error));
            }
            return check_full_write(written as usize, expected, &self.path);
        }
        let written = self
            .file
            .write_rc_at(buffer, offset)
            .await
            .map_err(io_error("write record", &self.path))?;
        check_full_write(written, expected, &self.path)
    }

    /// Closes the file.
    ///
    /// # Errors
    /// `Io` if close fails.
    pub async fn close(mut self) -> Result<()> {
        if let Some(zero_fill) = self.zero_fill.take() {
            zero_fill.stop().await;
        }
        self.file
            .close_rc()
            .await
            .map(drop)
            .map_err(io_error("close segment", &self.path))
    }
}

/// Writes zeros over `[0, len)` of a preallocated file, paced by `pace` (the caller
/// fdatasyncs), so that later writes overwrite initialized blocks instead of converting
/// unwritten extents.
async fn write_zeros(file: &DmaFile, len: u64, path: &Path, pace: &Pace) -> Result<()> {
    let mut start = 0;
    let mut zeros = crate::zero_fill::Zeros::default();
    while start < len {
        let chunk = (len - start).min(crate::zero_fill::PACED_CHUNK_BYTES) as usize;
        pace.wait_for(start + chunk as u64).await;
        let written = file
            .write_rc_at(zeros.buffer(file, chunk), start)
            .await
            .map_err(io_error("zero-fill segment", path))?;
        check_full_write(written, chunk, path)?;
        start += chunk as u64;
        pace.set_zeroed(start);
    }
    Ok(())
}

/// A short O_DIRECT write (out of space, say) is treated as a failed write: the WAL is then
/// poisoned rather than retried, like a failed fdatasync.
pub(crate) fn check_full_write(written: usize, expected: usize, path: &Path) -> Result<()> {
    if written == expected {
        return Ok(());
    }
    Err(WalError::io(
        "write record",
        path,
        std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            format!("short write: {written} of {expected} bytes"),
        ),
    ))
}

/// Writes a record header and `bodies` into the start of `out`, with the checksum.
fn fill_record(
    out: &mut [u8],
    seq: SegmentSeq,
    offset: u64,
    record_type: RecordType,
    bodies: &[&[u8]],
) {
    let mut pos = RECORD_HEADER_LEN;
    for body in bodies {
        out[pos..pos + body.len()].copy_from_slice(body);
        pos += body.len();
    }
    let body_len = u32::try_from(pos - RECORD_HEADER_LEN).expect("record body exceeds u32::MAX");
    out[0..4].copy_from_slice(&body_len.to_le_bytes());
    out[4..8].fill(0);
    out[8] = record_type.code();
    out[9..12].fill(0);
    let crc = format::record_crc(
        seq,
        offset,
        &out[..RECORD_HEADER_LEN],
        &out[RECORD_HEADER_LEN..pos],
    );
    out[4..8].copy_from_slice(&crc.to_le_bytes());
}
