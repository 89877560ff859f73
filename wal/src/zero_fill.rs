//! Zero-filling the active segment's unwritten blocks in the background.
//!
//! Why: a preallocated block is an "unwritten" extent (ext4, XFS). The first write into one
//! converts the extent, a metadata change, so the fdatasync after it waits for a journal
//! commit (~4 ms on the reference VM, 30× a plain data flush). Spare segments are zero-filled
//! whole before they become active (`SpareSegment::prepare`); this module covers the active
//! segments that were not: the first segment of a fresh WAL, a segment reopened after a
//! restart that still has unwritten extents past the end of the log (asked with FIEMAP), and a
//! segment made when no spare was ready.
//!
//! How: one task writes zeros from the first unwritten block to the segment's end in
//! `CHUNK_BYTES` writes, as fast as the disk takes them, right after the segment becomes
//! active. Group commits meanwhile still pay journal commits (for the ~30-70 ms it takes to
//! zero 64 MiB on the reference disk), but the WAL is usable at once and afterwards no flush
//! converts an extent. Zeroing in one burst rather than a little ahead of the write position
//! at a time matters: every group commit whose fdatasync follows a conversion pays a journal
//! commit, so spreading the zeros out would spread the slow flushes over the segment's life.
//!
//! With `WalOptions::blocking_writes` a thread writes the zeros instead of a task, the same
//! way, through a plain descriptor of its own ([`ZeroFill::start_thread`]).
//!
//! Invariants (both hold under the state's lock, and across the zero write in flight):
//! 1. zeros go only to blocks at or above `written_end`, the end of the furthest block a
//!    record write was issued for;
//! 2. a record write that would reach the block range of the zero write in flight waits for
//!    it to complete first ([`ZeroFill::reserve`]).
//!
//! So zeros never overwrite a record, and a record is never overwritten by zeros.
//!
//! No fdatasync here: the next group commit's fdatasync makes the conversions durable, and a
//! crash before it leaves unwritten blocks, which read as zeros as well. It also keeps the
//! segment's fdatasync errors reported to the flusher and nobody else. A failed zero write
//! only stops the zero-filling (flushes then convert extents themselves, slowly but safely).

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

use glommio::io::{DmaBuffer, DmaFile};
use glommio::task::JoinHandle;

/// Bytes per zero write.
const CHUNK_BYTES: u64 = 1 << 20;

#[derive(Default)]
struct State {
    written_end: u64,
    /// Start of the zero write in flight.
    in_flight: Option<u64>,
    stop: bool,
    /// Record writes (on the executor) waiting for the zero write in flight.
    waiters: Vec<Waker>,
}

/// The state shared by the zero-fill and the record writes.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when a zero write completes, for a flusher waiting in a blocking
    /// [`ZeroFill::reserve`].
    completed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; a poisoned lock still holds consistent numbers.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next zero write's start, marked in flight; `None` when done or stopped.
    fn begin_write(&self, next: u64, end: u64) -> Option<u64> {
        let mut state = self.lock();
        let start = next.max(state.written_end);
        if state.stop || start >= end {
            return None;
        }
        state.in_flight = Some(start);
        Some(start)
    }

    /// The zero write at `start` completed with `written`: wakes the record writes waiting
    /// for it; returns whether to go on.
    fn end_write(
        &self,
        written: std::io::Result<usize>,
        start: u64,
        len: u64,
        path: &Path,
    ) -> bool {
        let waiters = {
            let mut state = self.lock();
            state.in_flight = None;
            std::mem::take(&mut state.waiters)
        };
        self.completed.notify_all();
        for waker in waiters {
            waker.wake();
        }
        match written {
            Ok(n) if n as u64 == len => true,
            Ok(n) => {
                tracing::warn!(path = %path.display(), start, len, n, "short zero-fill write; zero-filling stops");
                false
            }
            Err(error) => {
                tracing::warn!(%error, path = %path.display(), start, "zero-fill write failed; zero-filling stops");
                false
            }
        }
    }
}

/// Who writes the zeros.
enum Worker {
    /// A task on the executor, through glommio's ring.
    Task(JoinHandle<()>),
    /// A thread with blocking writes, for `WalOptions::blocking_writes`: glommio polls its
    /// ring only when the executor runs out of tasks, which a core writing blocking under
    /// steady load never does (see `crate::spare_thread`), so a task's zeros would only go out
    /// when a record write waits for them.
    Thread(std::thread::JoinHandle<()>),
}

/// The background zero-filling of one active segment.
///
/// Dropping it (the flusher stopped after a failed write) stops the zero-fill after its
/// write in flight.
pub(crate) struct ZeroFill {
    shared: Arc<Shared>,
    worker: Option<Worker>,
}

impl ZeroFill {
    /// Starts zeroing `[from, end)` of `file` (both multiples of the write alignment) on the
    /// current executor.
    pub(crate) fn start(file: Rc<DmaFile>, path: PathBuf, from: u64, end: u64) -> ZeroFill {
        let shared = Shared::starting_at(from);
        let task = glommio::spawn_local(zero_blocks(file, path, shared.clone(), end)).detach();
        ZeroFill {
            shared,
            worker: Some(Worker::Task(task)),
        }
    }

    /// As [`ZeroFill::start`], but on a thread of its own writing through a plain `O_DIRECT`
    /// descriptor of `path` (the records' may be `O_DSYNC`), with blocking system calls.
    /// `None` (logged) when the file cannot be opened or the thread started: flushes then
    /// convert extents themselves, slowly but safely.
    pub(crate) fn start_thread(path: PathBuf, from: u64, end: u64) -> Option<ZeroFill> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path);
        let file = match file {
            Ok(file) => file,
            Err(error) => {
                tracing::warn!(%error, path = %path.display(), "cannot open the segment to zero-fill it");
                return None;
            }
        };
        let shared = Shared::starting_at(from);
        let thread_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("tessera-wal-zeros".to_string())
            .spawn(move || zero_blocks_blocking(&file, &path, &thread_shared, end));
        match spawned {
            Ok(handle) => Some(ZeroFill {
                shared,
                worker: Some(Worker::Thread(handle)),
            }),
            Err(error) => {
                tracing::warn!(%error, "cannot start the zero-fill thread");
                None
            }
        }
    }

    /// Called before a record write that ends at `write_end` (aligned up): waits while the
    /// zero write in flight starts below it, then keeps zeros above it (invariants 1, 2).
    /// With a zero-fill thread the wait blocks the caller's thread, whose record write is
    /// about to block it anyway.
    pub(crate) async fn reserve(&self, write_end: u64) {
        let below = |state: &State| state.in_flight.is_some_and(|start| start < write_end);
        if matches!(self.worker, Some(Worker::Thread(_))) {
            let state = self.shared.lock();
            let mut state = self
                .shared
                .completed
                .wait_while(state, |state| below(state))
                .unwrap_or_else(PoisonError::into_inner);
            state.written_end = state.written_end.max(write_end);
            return;
        }
        std::future::poll_fn(|cx| {
            let mut state = self.shared.lock();
            if below(&state) {
                state.waiters.push(cx.waker().clone());
                return Poll::Pending;
            }
            state.written_end = state.written_end.max(write_end);
            Poll::Ready(())
        })
        .await;
    }

    /// Stops after the zero write in flight, and waits for that.
    pub(crate) async fn stop(mut self) {
        self.shared.lock().stop = true;
        let panicked = match self.worker.take() {
            Some(Worker::Task(task)) => task.await.is_none(),
            Some(Worker::Thread(handle)) => handle.join().is_err(),
            None => false,
        };
        if panicked {
            tracing::warn!("the zero-fill stopped abnormally");
        }
    }
}

impl Drop for ZeroFill {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
    }
}

impl Shared {
    fn starting_at(from: u64) -> Arc<Shared> {
        let shared = Arc::new(Shared::default());
        shared.lock().written_end = from;
        shared
    }
}

async fn zero_blocks(file: Rc<DmaFile>, path: PathBuf, shared: Arc<Shared>, end: u64) {
    let began = std::time::Instant::now();
    let (mut next, mut zeroed) = (0u64, 0u64);
    let mut zeros = Zeros::default();
    while let Some(start) = shared.begin_write(next, end) {
        let len = (end - start).min(CHUNK_BYTES);
        let buffer = zeros.buffer(&file, len as usize);
        let written = file.write_rc_at(buffer, start).await.map_err(Into::into);
        if !shared.end_write(written, start, len, &path) {
            break;
        }
        zeroed += len;
        next = start + len;
    }
    tracing::debug!(path = %path.display(), zeroed, elapsed = ?began.elapsed(), "zero-filled the active segment");
}

fn zero_blocks_blocking(file: &std::fs::File, path: &Path, shared: &Shared, end: u64) {
    use std::os::unix::fs::FileExt;
    let began = std::time::Instant::now();
    let (mut next, mut zeroed) = (0u64, 0u64);
    let mut zeros = AlignedBytes::zeroed(CHUNK_BYTES as usize);
    while let Some(start) = shared.begin_write(next, end) {
        let len = (end - start).min(CHUNK_BYTES);
        let written = file.write_at(&zeros.bytes_mut()[..len as usize], start);
        if !shared.end_write(written, start, len, path) {
            break;
        }
        zeroed += len;
        next = start + len;
    }
    tracing::debug!(path = %path.display(), zeroed, elapsed = ?began.elapsed(), "zero-filled the active segment");
}

/// Zeroed bytes at a 4 KiB-aligned address, as `O_DIRECT` needs them, for blocking writes.
pub(crate) struct AlignedBytes {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBytes {
    pub(crate) fn zeroed(len: usize) -> AlignedBytes {
        let align = crate::options::WRITE_ALIGNMENT_BYTES as usize;
        let storage = vec![0u8; len + align];
        let start = storage.as_ptr().align_offset(align);
        AlignedBytes {
            storage,
            start,
            len,
        }
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// A zeroed DMA buffer kept for the next write of the same length: filling 1 MiB with zeros
/// for every write would cost the executor time the flusher needs.
#[derive(Default)]
pub(crate) struct Zeros(Option<Rc<DmaBuffer>>);

impl Zeros {
    /// A buffer of `len` zero bytes for `file`.
    pub(crate) fn buffer(&mut self, file: &DmaFile, len: usize) -> Rc<DmaBuffer> {
        match &self.0 {
            Some(buffer) if buffer.len() == len => buffer.clone(),
            _ => {
                let mut buffer = file.alloc_dma_buffer(len);
                buffer.as_bytes_mut().fill(0);
                let buffer = Rc::new(buffer);
                self.0 = Some(buffer.clone());
                buffer
            }
        }
    }
}

/// Bytes per zero write of a spare's paced zero-fill: small, so that each group commit's
/// device flush carries at most this many extra bytes of zeros.
pub(crate) const PACED_CHUNK_BYTES: u64 = 128 << 10;

/// A spare may be zeroed up to this many times the bytes used of the active segment: it is
/// complete when the active segment is half full.
const PACE_RATIO: u64 = 2;

/// How far the next segment's (the spare's) zero-fill may run: [`PACE_RATIO`] times the bytes
/// used of the active segment so far.
///
/// Why: unpaced, the zeros go out in one burst at disk speed (30-70 ms for 64 MiB on the
/// reference VM), and every group commit during the burst waits for its device flush to
/// write megabytes of zeros out of the disk's write-back cache along with its record: a few
/// per cent of all flushes several times slower, which is the p99. Paced, each group commit's
/// flush carries at most one small chunk of zeros. The rotation lifts the pace
/// ([`Pace::unpace`]) when it needs a spare that is not complete yet.
///
/// Shared between threads: the flusher advances it, and the zero-fill waits on it either as a
/// task on the same executor ([`Pace::wait_for`]) or, with blocking writes, on a thread of its
/// own ([`Pace::wait_for_blocking`], see `crate::spare_thread`).
pub(crate) struct Pace {
    state: Mutex<PaceState>,
    /// Signalled when a thread waiting in [`Pace::wait_for_blocking`] may go on.
    changed: Condvar,
}

#[derive(Default)]
struct PaceState {
    used: u64,
    /// Bytes of the spare zeroed so far (for flush traces).
    zeroed: u64,
    unpaced: bool,
    /// The zero-fill is to give up (the WAL is closing); see [`Pace::stop`].
    stopped: bool,
    /// The zero-fill task waiting for `allowed() >= .0`.
    waiter: Option<(u64, Waker)>,
    /// What a zero-fill thread waits for `allowed()` to reach, if one waits: it is signalled
    /// only then (or when stopped), not after every group commit.
    thread_waiting_for: Option<u64>,
}

impl PaceState {
    fn allowed(&self) -> u64 {
        if self.unpaced {
            u64::MAX
        } else {
            self.used.saturating_mul(PACE_RATIO)
        }
    }
}

impl Pace {
    pub(crate) fn new() -> Arc<Pace> {
        Arc::new(Pace {
            state: Mutex::new(PaceState::default()),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, PaceState> {
        // Nothing panics while holding it; a poisoned lock still holds consistent numbers.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The active segment now has `used` bytes in use (header and records).
    pub(crate) fn set_used(&self, used: u64) {
        self.update(|state| state.used = used);
    }

    /// The zero-fill has written zeros up to `end`.
    pub(crate) fn set_zeroed(&self, end: u64) {
        self.lock().zeroed = end;
    }

    /// Bytes zeroed so far.
    pub(crate) fn zeroed(&self) -> u64 {
        self.lock().zeroed
    }

    /// Lets the zero-fill run at disk speed from now on.
    pub(crate) fn unpace(&self) {
        self.update(|state| state.unpaced = true);
    }

    /// Makes [`Pace::wait_for_blocking`] return `false`, now and from now on.
    pub(crate) fn stop(&self) {
        self.update(|state| state.stopped = true);
    }

    /// Changes the state, then wakes the waiting task or thread if it may go on now.
    fn update(&self, change: impl FnOnce(&mut PaceState)) {
        let (waker, signal) = {
            let mut state = self.lock();
            change(&mut state);
            let allowed = state.allowed();
            let waker = match &state.waiter {
                Some((needed, _)) if allowed >= *needed => state.waiter.take().map(|(_, w)| w),
                _ => None,
            };
            let signal = state.stopped
                || state
                    .thread_waiting_for
                    .is_some_and(|needed| allowed >= needed);
            (waker, signal)
        };
        if signal {
            self.changed.notify_all();
        }
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Waits until zeros may be written up to `end`.
    pub(crate) async fn wait_for(&self, end: u64) {
        std::future::poll_fn(|cx| {
            let mut state = self.lock();
            if state.allowed() >= end {
                return Poll::Ready(());
            }
            state.waiter = Some((end, cx.waker().clone()));
            Poll::Pending
        })
        .await;
    }

    /// Blocks the calling thread until zeros may be written up to `end`: returns `true`, or
    /// `false` once [`Pace::stop`] was called.
    pub(crate) fn wait_for_blocking(&self, end: u64) -> bool {
        let mut state = self.lock();
        state.thread_waiting_for = Some(end);
        let mut state = self
            .changed
            .wait_while(state, |state| !state.stopped && state.allowed() < end)
            .unwrap_or_else(PoisonError::into_inner);
        state.thread_waiting_for = None;
        !state.stopped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `future` once with a no-op waker.
    fn ready<F: std::future::Future>(future: F) -> bool {
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(Waker::noop());
        future.as_mut().poll(&mut cx).is_ready()
    }

    #[test]
    fn a_paced_zero_fill_runs_twice_as_far_as_the_active_segment_until_unpaced() {
        let pace = Pace::new();
        assert!(ready(pace.wait_for(0)));
        assert!(!ready(pace.wait_for(1)));
        pace.set_used(40);
        assert!(ready(pace.wait_for(80)));
        assert!(!ready(pace.wait_for(81)));
        pace.unpace();
        assert!(ready(pace.wait_for(u64::MAX)));
    }

    #[test]
    fn a_thread_waiting_on_the_pace_goes_on_when_the_active_segment_grows_or_gives_up_when_stopped()
    {
        let pace = Pace::new();
        let wait = |end: u64| {
            let pace = pace.clone();
            std::thread::spawn(move || pace.wait_for_blocking(end))
        };
        let waiting = wait(100);
        pace.set_used(50);
        assert!(waiting.join().unwrap());
        let waiting = wait(101);
        pace.stop();
        assert!(!waiting.join().unwrap());
    }
}
