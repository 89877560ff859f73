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
//! Invariants (the executor is single-threaded, so each holds between two awaits):
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

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
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
    waiters: Vec<Waker>,
}

/// The background zero-filling of one active segment.
///
/// Dropping it (the flusher stopped after a failed write) stops the task after its write in
/// flight.
pub(crate) struct ZeroFill {
    state: Rc<RefCell<State>>,
    task: Option<JoinHandle<()>>,
}

impl ZeroFill {
    /// Starts zeroing `[from, end)` of `file` (both multiples of the write alignment) on the
    /// current executor.
    pub(crate) fn start(file: Rc<DmaFile>, path: PathBuf, from: u64, end: u64) -> ZeroFill {
        let state = Rc::new(RefCell::new(State {
            written_end: from,
            ..State::default()
        }));
        let task = glommio::spawn_local(zero_blocks(file, path, state.clone(), end)).detach();
        ZeroFill {
            state,
            task: Some(task),
        }
    }

    /// Called before a record write that ends at `write_end` (aligned up): waits while the
    /// zero write in flight starts below it, then keeps zeros above it (invariants 1, 2).
    pub(crate) async fn reserve(&self, write_end: u64) {
        std::future::poll_fn(|cx| {
            let mut state = self.state.borrow_mut();
            if state.in_flight.is_some_and(|start| start < write_end) {
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
        self.state.borrow_mut().stop = true;
        if let Some(task) = self.task.take() {
            task.await;
        }
    }
}

impl Drop for ZeroFill {
    fn drop(&mut self) {
        self.state.borrow_mut().stop = true;
    }
}

async fn zero_blocks(file: Rc<DmaFile>, path: PathBuf, state: Rc<RefCell<State>>, end: u64) {
    let began = std::time::Instant::now();
    let mut next = 0u64;
    let mut zeroed = 0u64;
    let mut zeros = Zeros::default();
    loop {
        let start = {
            let state = state.borrow();
            if state.stop {
                break;
            }
            next.max(state.written_end)
        };
        if start >= end {
            break;
        }
        let len = (end - start).min(CHUNK_BYTES);
        let buffer = zeros.buffer(&file, len as usize);
        state.borrow_mut().in_flight = Some(start);
        let written = file.write_rc_at(buffer, start).await;
        {
            let mut state = state.borrow_mut();
            state.in_flight = None;
            for waker in state.waiters.drain(..) {
                waker.wake();
            }
        }
        match written {
            Ok(n) if n as u64 == len => {}
            Ok(n) => {
                tracing::warn!(path = %path.display(), start, len, n, "short zero-fill write; zero-filling stops");
                break;
            }
            Err(error) => {
                tracing::warn!(%error, path = %path.display(), start, "zero-fill write failed; zero-filling stops");
                break;
            }
        }
        zeroed += len;
        next = start + len;
    }
    tracing::debug!(path = %path.display(), zeroed, elapsed = ?began.elapsed(), "zero-filled the active segment");
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
pub(crate) struct Pace {
    used: Cell<u64>,
    /// Bytes of the spare zeroed so far (for flush traces).
    zeroed: Cell<u64>,
    unpaced: Cell<bool>,
    /// The zero-fill waiting for `allowed() >= .0`.
    waiter: RefCell<Option<(u64, Waker)>>,
}

impl Pace {
    pub(crate) fn new() -> Rc<Pace> {
        Rc::new(Pace {
            used: Cell::new(0),
            zeroed: Cell::new(0),
            unpaced: Cell::new(false),
            waiter: RefCell::new(None),
        })
    }

    fn allowed(&self) -> u64 {
        if self.unpaced.get() {
            u64::MAX
        } else {
            self.used.get().saturating_mul(PACE_RATIO)
        }
    }

    /// The active segment now has `used` bytes in use (header and records).
    pub(crate) fn set_used(&self, used: u64) {
        self.used.set(used);
        self.wake_if_allowed();
    }

    /// The zero-fill has written zeros up to `end`.
    pub(crate) fn set_zeroed(&self, end: u64) {
        self.zeroed.set(end);
    }

    /// Bytes zeroed so far.
    pub(crate) fn zeroed(&self) -> u64 {
        self.zeroed.get()
    }

    /// Lets the zero-fill run at disk speed from now on.
    pub(crate) fn unpace(&self) {
        self.unpaced.set(true);
        self.wake_if_allowed();
    }

    fn wake_if_allowed(&self) {
        let ready =
            matches!(&*self.waiter.borrow(), Some((needed, _)) if self.allowed() >= *needed);
        if ready {
            if let Some((_, waker)) = self.waiter.borrow_mut().take() {
                waker.wake();
            }
        }
    }

    /// Waits until zeros may be written up to `end`.
    pub(crate) async fn wait_for(&self, end: u64) {
        std::future::poll_fn(|cx| {
            if self.allowed() >= end {
                return Poll::Ready(());
            }
            *self.waiter.borrow_mut() = Some((end, cx.waker().clone()));
            Poll::Pending
        })
        .await;
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
}
