//! Building a glommio executor within this machine's locked-memory limit.
//!
//! glommio registers `io_memory` bytes of DMA buffers with io_uring, which counts against
//! `RLIMIT_MEMLOCK`. Its default (10 MiB) exceeds common limits (8 MiB here), and the failure
//! then surfaces as a panic deep inside glommio. This module checks the limit first and
//! returns an error that names it. Buffers beyond `io_memory` fall back to ordinary aligned
//! heap memory, so a small value costs little.

use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};

use crate::error::{Result, WalError};

/// A good `io_memory` for one WAL executor: enough for a few in-flight group commits.
pub const IO_MEMORY_BYTES_DEFAULT: usize = 1 << 20;

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
