//! Group commit: appends queue up while a write is in flight and go out together in the next
//! record, one write and one fdatasync for all of them.
//!
//! One flusher task per WAL owns the active segment. Appenders never touch the file:
//!
//! ```text
//!  append ──► [queue: bounded by queue_bytes_max] ──► flusher: take ≤ batch_bytes_max
//!    ▲                                                   │ write + fdatasync (one record)
//!    └──── woken when durable_ticket ≥ its ticket ◄──────┘ apply to index, wake appenders
//! ```
//!
//! Each append gets a ticket (a sequence number). The flusher writes appends in ticket order,
//! so "durable up to ticket t" is one number. The index is updated by the flusher, not the
//! appender, so an appender whose future is dropped cannot leave the index behind the disk.
//!
//! After a failed write or fdatasync the flusher stops and every waiting and future append
//! fails with `WalError::Poisoned`: retrying an fdatasync after a failure can report success
//! for data the kernel already dropped, so the only safe reaction is to stop and recover.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::{Result, WalError};
use crate::format::{RecordType, SegmentSeq, RECORD_HEADER_LEN};
use crate::segment::{ActiveSegment, WriteTiming};
use crate::wal::Shared;

/// Where the time of one group commit went, recorded when
/// [`crate::WalOptions::flush_timings_max`] is set (see [`crate::Wal::take_flush_timings`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushTiming {
    /// Appends in the record.
    pub appends: usize,
    /// How long the oldest of them waited in the queue before the flusher took it: mostly
    /// the flush in flight when it arrived.
    pub queued: Duration,
    /// From the flusher finding work to taking the batch (`batch_wait_max`, or one yield to
    /// the executor's run queue).
    pub gather: Duration,
    /// Starting a new segment when the batch did not fit, and the purge after it; the new
    /// segment's checkpoint goes out in the batch's write (`write`), and a spare that was
    /// ready was renamed and its directory fsynced when prepared (one made now pays those
    /// here); zero otherwise.
    pub rotate: Duration,
    /// The record write's stages.
    pub write: WriteTiming,
    /// Indexing the record and waking its appenders.
    pub finish: Duration,
    /// Where the record went: segment and byte offset (a small offset is a flush right
    /// after a rotation).
    pub segment: SegmentSeq,
    pub offset: u64,
    /// Bytes written (whole blocks, with the rewritten partial block).
    pub bytes: usize,
    /// How far the spare's zero-fill had got when the flush began, `None` when no spare
    /// was being prepared (for traces of slow flushes).
    pub spare_zeroed_bytes: Option<u64>,
}

/// Counters of one WAL since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Appends that completed (durable).
    pub appends: u64,
    /// Group commits written: each is one write and one fdatasync.
    pub flushes: u64,
    /// Bytes handed to the disk, including block padding.
    pub bytes_written: u64,
    /// Segments created since open.
    pub segments_created: u64,
}

struct Pending {
    ticket: u64,
    body: Vec<u8>,
    queued_at: Instant,
}

/// The queue shared by appenders and the flusher.
#[derive(Default)]
pub(crate) struct Queue {
    pending: VecDeque<Pending>,
    pending_bytes: usize,
    next_ticket: u64,
    durable_ticket: u64,
    failure: Option<String>,
    closing: bool,
    done_waiters: BTreeMap<u64, Waker>,
    room_waiters: Vec<Waker>,
    flusher: Option<Waker>,
    pub(crate) stats: WalStats,
    /// The latest group commits' timings, at most `WalOptions::flush_timings_max`.
    pub(crate) flush_timings: VecDeque<FlushTiming>,
}

impl Queue {
    pub(crate) fn check_usable(&self) -> Result<()> {
        if let Some(reason) = &self.failure {
            return Err(WalError::Poisoned(reason.clone()));
        }
        if self.closing {
            return Err(WalError::Closed);
        }
        Ok(())
    }

    pub(crate) fn failure_reason(&self) -> Option<String> {
        self.failure.clone()
    }

    /// Marks the WAL closing and wakes the flusher so it drains and stops.
    pub(crate) fn close(&mut self) {
        self.closing = true;
        if let Some(waker) = self.flusher.take() {
            waker.wake();
        }
    }

    fn push(&mut self, body: Vec<u8>) -> u64 {
        self.next_ticket += 1;
        self.pending_bytes += body.len();
        self.pending.push_back(Pending {
            ticket: self.next_ticket,
            body,
            queued_at: Instant::now(),
        });
        if let Some(waker) = self.flusher.take() {
            waker.wake();
        }
        self.next_ticket
    }

    /// Takes queued bodies for one record: at least one, then more while the total stays
    /// within `bytes_max`. Returns them, the last ticket taken and how long the first one
    /// waited.
    fn take(&mut self, bytes_max: usize) -> (Vec<Vec<u8>>, u64, Duration) {
        let queued = self
            .pending
            .front()
            .map_or(Duration::ZERO, |first| first.queued_at.elapsed());
        let mut bodies = Vec::new();
        let mut total = 0;
        let mut last_ticket = self.durable_ticket;
        while let Some(next) = self.pending.front() {
            if !bodies.is_empty() && total + next.body.len() > bytes_max {
                break;
            }
            let next = self.pending.pop_front().expect("front exists");
            total += next.body.len();
            last_ticket = next.ticket;
            bodies.push(next.body);
        }
        self.pending_bytes -= total;
        for waker in self.room_waiters.drain(..) {
            waker.wake();
        }
        (bodies, last_ticket, queued)
    }

    fn record_timing(&mut self, timing: FlushTiming, max: usize) {
        if max == 0 {
            return;
        }
        if self.flush_timings.len() == max {
            self.flush_timings.pop_front();
        }
        self.flush_timings.push_back(timing);
    }

    fn mark_durable(&mut self, ticket: u64, appends: usize) {
        assert!(ticket >= self.durable_ticket, "durable ticket went back");
        self.durable_ticket = ticket;
        self.stats.appends += appends as u64;
        let later = self.done_waiters.split_off(&(ticket + 1));
        for (_, waker) in std::mem::replace(&mut self.done_waiters, later) {
            waker.wake();
        }
    }

    fn fail(&mut self, reason: String) {
        self.failure = Some(reason);
        for (_, waker) in std::mem::take(&mut self.done_waiters) {
            waker.wake();
        }
        for waker in self.room_waiters.drain(..) {
            waker.wake();
        }
    }
}

/// Queues `body` once the queue has room, then waits until it is durable.
pub(crate) async fn append(
    queue: &RefCell<Queue>,
    body: Vec<u8>,
    queue_bytes_max: usize,
) -> Result<()> {
    let len = body.len();
    std::future::poll_fn(|cx: &mut Context<'_>| {
        let mut q = queue.borrow_mut();
        if let Err(e) = q.check_usable() {
            return Poll::Ready(Err(e));
        }
        if q.pending.is_empty() || q.pending_bytes + len <= queue_bytes_max {
            return Poll::Ready(Ok(()));
        }
        q.room_waiters.push(cx.waker().clone());
        Poll::Pending
    })
    .await?;
    let ticket = queue.borrow_mut().push(body);
    std::future::poll_fn(|cx: &mut Context<'_>| {
        let mut q = queue.borrow_mut();
        if q.durable_ticket >= ticket {
            return Poll::Ready(Ok(()));
        }
        if let Some(reason) = &q.failure {
            return Poll::Ready(Err(WalError::Poisoned(reason.clone())));
        }
        q.done_waiters.insert(ticket, cx.waker().clone());
        Poll::Pending
    })
    .await
}

/// The flusher task: runs until the WAL closes (after draining the queue) or a write fails.
pub(crate) async fn run_flusher(shared: Rc<Shared>, mut segment: ActiveSegment) {
    loop {
        let has_work = std::future::poll_fn(|cx: &mut Context<'_>| {
            let mut q = shared.queue.borrow_mut();
            if !q.pending.is_empty() {
                return Poll::Ready(true);
            }
            if q.closing {
                return Poll::Ready(false);
            }
            q.flusher = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        if !has_work {
            break;
        }
        let woken = Instant::now();
        gather_delay(&shared).await;
        let bytes_max = shared
            .options
            .batch_bytes_max
            .min(shared.options.record_body_bytes_max());
        let (bodies, last_ticket, queued) = shared.queue.borrow_mut().take(bytes_max);
        let gather = woken.elapsed();
        let spare_zeroed_bytes = shared.spare_zeroed_bytes();
        match flush(&shared, &mut segment, &bodies).await {
            Ok(flushed) => {
                let mut queue = shared.queue.borrow_mut();
                queue.mark_durable(last_ticket, bodies.len());
                // The node's `wal_issue` → `wal_done` step split in two (the trace points of
                // node/src/latency.rs, same target): how long the oldest append waited for the
                // flusher to take it (on a leader: the peer sends of the same loop turn, which
                // run first), and the write (and fdatasync) from submission to completion.
                tracing::debug!(
                    target: "tessera::latency",
                    appends = bodies.len(),
                    queued_us = queued.as_micros() as u64,
                    write_us = (flushed.write.write + flushed.write.sync).as_micros() as u64,
                    "wal_flushed"
                );
                let timing = FlushTiming {
                    appends: bodies.len(),
                    queued,
                    gather,
                    rotate: flushed.rotate,
                    write: flushed.write,
                    finish: flushed.finish_began.elapsed(),
                    segment: flushed.segment,
                    offset: flushed.offset,
                    bytes: flushed.bytes,
                    spare_zeroed_bytes,
                };
                queue.record_timing(timing, shared.options.flush_timings_max);
            }
            Err(error) => {
                tracing::error!(%error, "WAL write failed; the WAL accepts no more appends");
                shared.queue.borrow_mut().fail(error.to_string());
                shared.drop_spare().await;
                return;
            }
        }
    }
    shared.drop_spare().await;
    if let Err(error) = segment.close().await {
        tracing::warn!(%error, "closing the active WAL segment failed");
    }
}

/// Lets appends that are already runnable join this write: wait `batch_wait_max` if set,
/// else yield once to the executor's run queue.
async fn gather_delay(shared: &Shared) {
    let wait = shared.options.batch_wait_max;
    let full = shared.queue.borrow().pending_bytes >= shared.options.batch_bytes_max;
    if full {
        return;
    }
    if wait.is_zero() {
        YieldNow(false).await;
    } else {
        glommio::timer::sleep(wait).await;
    }
}

/// What one flush did, for its [`FlushTiming`].
struct Flushed {
    rotate: Duration,
    write: WriteTiming,
    finish_began: Instant,
    segment: SegmentSeq,
    offset: u64,
    bytes: usize,
}

/// Writes one record (rotating first if it does not fit) and indexes it.
async fn flush(
    shared: &Shared,
    segment: &mut ActiveSegment,
    bodies: &[Vec<u8>],
) -> Result<Flushed> {
    let body_len: usize = bodies.iter().map(Vec::len).sum();
    let mut rotate = Duration::ZERO;
    let rotated = (RECORD_HEADER_LEN + body_len) as u64 > segment.room();
    if rotated {
        let began = Instant::now();
        shared.rotate(segment).await?;
        rotate = began.elapsed();
    }
    let slices: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
    // After a rotation this write carries the new segment's checkpoint too.
    let written = segment.write_record(RecordType::Batch, &slices).await?;
    if rotated {
        // Only now is the new segment's checkpoint durable (see `Shared::rotate`).
        let began = Instant::now();
        shared.purge().await?;
        rotate += began.elapsed();
    }
    let finish_began = Instant::now();
    shared.pace_spare(segment.seq().next(), segment.used());
    let view = written.view();
    if let Err(reason) = shared
        .index
        .borrow_mut()
        .apply_record(written.segment(), &view)
    {
        panic!(
            "segment {} offset {}: a batch does not fit the log (programmer error): {reason}",
            written.segment(),
            view.offset
        );
    }
    let mut q = shared.queue.borrow_mut();
    q.stats.flushes += 1;
    q.stats.bytes_written += written.buffer_len() as u64;
    Ok(Flushed {
        rotate,
        write: written.timing,
        finish_began,
        segment: written.segment(),
        offset: written.offset(),
        bytes: written.buffer_len(),
    })
}

/// Returns `Pending` once after waking itself: the task goes to the back of the run queue.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
