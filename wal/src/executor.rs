//! Building a glommio executor within this machine's locked-memory limit.
//!
//! glommio registers `io_memory` bytes of DMA buffers with io_uring, which counts against
//! `RLIMIT_MEMLOCK`. Its default (10 MiB) exceeds common limits (8 MiB here), and the failure
//! then surfaces as a panic deep inside glommio. This module checks the limit first and
//! returns an error that names it. Buffers beyond `io_memory` fall back to ordinary aligned
//! heap memory, so a small value costs little.
//!
//! It also sets glommio's preemption timer to five times its 100 ms default ([`PREEMPT_TIMER`]):
//! glommio 0.9 loses a wake-up when that timer fires between its I/O poll and its first
//! look at the task queues (the thread was descheduled that long, e.g. on an oversubscribed
//! machine): it takes "preempted before running anything" for "nothing to run" and parks
//! with a runnable task, until the next timer or I/O completion, which can be seconds away.
//! This was the "rare stall of one core under CPU oversubscription"; docs/reliability.md
//! has the experiment that shows it and this remedy.

use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};

use crate::error::{Result, WalError};

/// A good `io_memory` for one WAL executor: enough for a few in-flight group commits.
pub const IO_MEMORY_BYTES_DEFAULT: usize = 1 << 20;

/// glommio's preemption timer: how long a busy task queue runs before the executor turns to
/// another queue or to its next I/O poll (timers, io_uring completions such as the WAL's).
/// Longer than any time the OS keeps the thread off a CPU right after an I/O poll, or glommio
/// 0.9 may park with work to do (module docs); short enough that a queue kept busy by a
/// stream of socket reads (glommio reads ready sockets without its rings) still ticks twice
/// per default election timeout (10 ticks of 100 ms). A Tessera executor runs one queue.
pub const PREEMPT_TIMER: std::time::Duration = std::time::Duration::from_millis(500);

/// The soft `RLIMIT_MEMLOCK` in bytes, or `None` when unlimited.
pub fn memlock_limit_bytes() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a valid pointer.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    if rc != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(limit.rlim_cur)
}

/// Builds a `LocalExecutor` with `io_memory_bytes` of DMA memory.
///
/// # Errors
/// `Executor` when `io_memory_bytes` exceeds `RLIMIT_MEMLOCK` (checked first, so the error
/// names the limit) or glommio fails to start.
pub fn build_executor(
    name: &str,
    placement: Placement,
    io_memory_bytes: usize,
) -> Result<LocalExecutor> {
    build_executor_spinning(name, placement, io_memory_bytes, std::time::Duration::ZERO)
}

/// As [`build_executor`], but the executor busy-polls for `spin` before it parks, trading
/// CPU for wake-up latency (an executor that parks must be scheduled again when the
/// fdatasync completes, which costs milliseconds on a loaded machine).
///
/// # Errors
/// As [`build_executor`].
pub fn build_executor_spinning(
    name: &str,
    placement: Placement,
    io_memory_bytes: usize,
    spin: std::time::Duration,
) -> Result<LocalExecutor> {
    let limit = memlock_limit_bytes();
    if let Some(limit) = limit {
        if io_memory_bytes as u64 > limit {
            return Err(WalError::Executor(format!(
                "io_memory of {io_memory_bytes} bytes exceeds the locked-memory limit \
                 (RLIMIT_MEMLOCK, `ulimit -l`) of {limit} bytes; lower io_memory or raise the limit"
            )));
        }
    }
    LocalExecutorBuilder::new(placement)
        .name(name)
        .io_memory(io_memory_bytes)
        .spin_before_park(spin)
        .preempt_timer(PREEMPT_TIMER)
        .make()
        .map_err(|e| {
            WalError::Executor(format!(
                "{e} (io_memory {io_memory_bytes} bytes, RLIMIT_MEMLOCK {})",
                limit.map_or("unlimited".to_string(), |l| format!("{l} bytes"))
            ))
        })
}

/// Runs `future` to completion on a fresh unbound executor with small `io_memory`: for
/// tools and tests.
///
/// # Errors
/// As [`build_executor`].
pub fn run_local<T>(future: impl std::future::Future<Output = T>) -> Result<T> {
    let executor = build_executor("tessera-wal", Placement::Unbound, 512 << 10)?;
    Ok(executor.run(future))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The precondition of glommio 0.9's lost wake-up (module docs): a thread kept off the CPU
    /// longer than the preemption timer reads as preempted when it runs again. Held up for
    /// 300 ms (a blocking sleep stands in for the OS), a Tessera executor does not.
    #[test]
    fn a_thread_held_up_for_300_ms_does_not_read_as_preempted() {
        let preempted = run_local(async {
            // After this wake-up the executor has polled its rings and armed the timer anew.
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            std::thread::sleep(std::time::Duration::from_millis(300));
            glommio::executor().need_preempt()
        })
        .unwrap();
        assert!(!preempted, "a 300 ms hold-up read as preemption");
    }
}
