//! Preparing the spare segment on a thread of its own, for `WalOptions::blocking_writes`.
//!
//! Why: glommio submits a DMA file's requests to io_uring and reaps their completions only in
//! its I/O poll, which the executor runs when it has no runnable task left or when its
//! preemption timer fires (500 ms, `crate::executor::PREEMPT_TIMER`). With ring writes the
//! flusher awaits every group commit, so the executor polls at least once per flush. With
//! blocking writes it never waits on the ring, and under a steady stream of appenders the
//! executor always has a task to run: a spare prepared through the ring
//! (`SpareSegment::prepare`) got its zeros submitted only when the rotation awaited it and the
//! executor went idle, so all 64 MiB were written then, on the flush path (rotations of
//! 70-90 ms; docs/benchmarks.md, session 7).
//!
//! How: [`SpareThread::start`] runs step 1 of `crate::segment`'s module docs with blocking
//! system calls on a thread named `tessera-wal-spare`, in the same order and with the same
//! crash safety (the `.tmp` name until the file is durable; a failed or stopped preparation
//! deletes its file, and `Wal::open` deletes what a crash left). Its zeros keep the same
//! [`Pace`], which the flusher advances after every group commit. The executor then opens the
//! descriptor for the records ([`SpareThread::finish`]), as soon as the flusher sees the
//! thread done, or at the latest when the rotation needs the spare.
//!
//! Why not glommio's `spawn_blocking`: the paced zeros keep a thread for half the life of a
//! segment, and the pool's threads also serve other blocking work (the node's snapshot files).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::error::{Result, WalError};
use crate::format::{self, SegmentSeq, SEGMENT_HEADER_LEN};
use crate::options::WRITE_ALIGNMENT_BYTES;
use crate::segment::{self, check_full_write, SpareSegment};
use crate::zero_fill::{AlignedBytes, Pace, PACED_CHUNK_BYTES};

/// The thread preparing one spare segment.
///
/// Dropping it unjoined (the executor went away) stops the thread after its write in flight;
/// it then deletes its file unless that was already prepared.
pub(crate) struct SpareThread {
    dir: PathBuf,
    seq: SegmentSeq,
    len: u64,
    pace: Arc<Pace>,
    handle: Option<JoinHandle<Result<()>>>,
}

impl SpareThread {
    /// Starts preparing segment `seq` of `len` bytes in `dir`, its zeros paced by `pace`.
    ///
    /// # Errors
    /// `Io` when the thread cannot be started.
    pub(crate) fn start(
        dir: &Path,
        seq: SegmentSeq,
        len: u64,
        pace: Arc<Pace>,
    ) -> Result<SpareThread> {
        let (thread_dir, thread_pace) = (dir.to_path_buf(), pace.clone());
        let handle = std::thread::Builder::new()
            .name("tessera-wal-spare".to_string())
            .spawn(move || prepare(&thread_dir, seq, len, &thread_pace))
            .map_err(|e| WalError::io("start spare thread", dir, e))?;
        Ok(SpareThread {
            dir: dir.to_path_buf(),
            seq,
            len,
            pace,
            handle: Some(handle),
        })
    }

    /// The segment it prepares.
    pub(crate) fn seq(&self) -> SegmentSeq {
        self.seq
    }

    /// Whether the thread is done (prepared, or failed).
    pub(crate) fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits for the thread (blocking the caller's thread until it is done, so a caller
    /// that cannot wait unpaces it first), then opens the prepared segment for its records.
    ///
    /// # Errors
    /// What the preparation failed with; `Io` when the thread panicked or the file cannot
    /// be opened.
    pub(crate) async fn finish(mut self, write_through: bool) -> Result<SpareSegment> {
        self.join()?;
        SpareSegment::open_prepared(&self.dir, self.seq, self.len, write_through).await
    }

    /// Stops the preparation after its write in flight and waits for the thread: the file is
    /// then deleted, unless it was prepared already (the caller deletes it then).
    pub(crate) fn stop(mut self) {
        self.pace.stop();
        if let Err(error) = self.join() {
            tracing::debug!(%error, "the spare WAL segment's preparation stopped");
        }
    }

    fn join(&mut self) -> Result<()> {
        let Some(handle) = self.handle.take() else {
            return Ok(());
        };
        handle.join().unwrap_or_else(|_| {
            Err(WalError::io(
                "prepare spare segment",
                segment::spare_path(&self.dir, self.seq),
                std::io::Error::other("the spare thread panicked"),
            ))
        })
    }
}

impl Drop for SpareThread {
    fn drop(&mut self) {
        if self.handle.is_some() {
            self.pace.stop();
        }
    }
}

/// Step 1 of `crate::segment`'s module docs with blocking system calls; on failure (or when
/// stopped) deletes the half-made file, under the name it has by then (only that one: a
/// thread left running by an executor that went away must not touch a file of the same name
/// that a WAL opened since has made).
fn prepare(dir: &Path, seq: SegmentSeq, len: u64, pace: &Pace) -> Result<()> {
    let tmp_path = segment::spare_path(dir, seq);
    let path = segment::segment_path(dir, seq);
    let renamed = write_file(&tmp_path, seq, len, pace).and_then(|()| {
        std::fs::rename(&tmp_path, &path).map_err(|e| WalError::io("rename segment", &tmp_path, e))
    });
    if let Err(error) = renamed {
        segment::remove_leftover(&tmp_path);
        return Err(error);
    }
    let synced = File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|e| WalError::io("fsync directory", dir, e));
    if synced.is_err() {
        segment::remove_leftover(&path);
    }
    synced
}

/// Creates `tmp_path`, preallocates `len` bytes, writes zeros over them as the pace allows,
/// then the segment header, and fdatasyncs; all `O_DIRECT`, like the ring's writes.
fn write_file(tmp_path: &Path, seq: SegmentSeq, len: u64, pace: &Pace) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT)
        .open(tmp_path)
        .map_err(|e| WalError::io("create segment", tmp_path, e))?;
    // SAFETY: fallocate on the descriptor just opened; mode 0 extends the file size.
    if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) } != 0 {
        let error = std::io::Error::last_os_error();
        return Err(WalError::io("preallocate segment", tmp_path, error));
    }
    let mut zeros = AlignedBytes::zeroed(PACED_CHUNK_BYTES as usize);
    let mut start = 0;
    while start < len {
        let chunk = (len - start).min(PACED_CHUNK_BYTES);
        if !pace.wait_for_blocking(start + chunk) {
            return Err(WalError::Closed);
        }
        write_all(&file, &zeros.bytes_mut()[..chunk as usize], start, tmp_path)?;
        start += chunk;
        pace.set_zeroed(start);
    }
    let header = &mut zeros.bytes_mut()[..WRITE_ALIGNMENT_BYTES as usize];
    header[..SEGMENT_HEADER_LEN].copy_from_slice(&format::encode_segment_header(seq));
    write_all(&file, header, 0, tmp_path)?;
    file.sync_data()
        .map_err(|e| WalError::io("fdatasync", tmp_path, e))
}

/// One `O_DIRECT` write; a short one is an error (see `check_full_write`).
fn write_all(file: &File, bytes: &[u8], offset: u64, path: &Path) -> Result<()> {
    let written = file
        .write_at(bytes, offset)
        .map_err(|e| WalError::io("zero-fill segment", path, e))?;
    check_full_write(written, bytes.len(), path)
}
