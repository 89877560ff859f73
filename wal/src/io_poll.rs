//! Keeping glommio's polled ring for devices that can poll.
//!
//! glommio 0.9 sends a DMA file's reads and writes to its `IORING_SETUP_IOPOLL` ring when a
//! probe read through that ring succeeds, and on Linux 6.x it succeeds for any `O_DIRECT` file
//! on ext4 or xfs, whether or not the device has poll queues. On a device without them
//! (`/sys/block/*/queue/io_poll` is 0: virtio disks, most SATA and NVMe setups without
//! `poll_queues`) the write still completes by interrupt, but its completion is only reaped by
//! polling that ring, and glommio's executor may not sleep while a polled request is in
//! flight: it turns its loop, re-arming and cancelling timers, for the whole write and sync.
//! On a 3-node cluster sharing two CPUs that loop took 180 % of the CPUs at 600 writes/s and
//! starved the kernel worker that completes an `O_DSYNC` write on the interrupt CPU for a
//! scheduler slice (writes of 4 ms instead of 0.2; docs/benchmarks.md, pass I).
//!
//! glommio decides once per thread and device, by the first DMA file opened there, and takes
//! any probe failure other than `ENOTSUP` as "this device does not poll". [`prefer_interrupts`]
//! makes that first decision when the device does not poll: it opens a write-only DMA file,
//! whose probe read fails with `EBADF`. glommio logs that failure through the `log` crate at
//! error level, the only thing its reactor logs; a program that forwards `log` records should
//! add [`GLOMMIO_PROBE_LOG_DIRECTIVE`] to its filter (the `tessera` binary does).

use std::path::{Path, PathBuf};

use glommio::io::OpenOptions;

use crate::error::{Result, WalError};

/// A `tracing` filter directive that silences the error glommio logs for the probe
/// [`prefer_interrupts`] fails on purpose. Its target, glommio's reactor, logs nothing else.
pub const GLOMMIO_PROBE_LOG_DIRECTIVE: &str = "glommio::reactor=off";

/// The name of the scratch file [`prefer_interrupts`] creates and removes.
pub const PROBE_FILE_NAME: &str = "io-poll-probe.tmp";

/// Which of glommio's rings a DMA file in a directory uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaRing {
    /// The device has poll queues: glommio's own probe decides (polled ring when it works).
    Polled,
    /// The device completes by interrupt: the main ring, where the executor can sleep.
    Interrupt,
}

/// Whether the block device holding `dir` has poll queues (`queue/io_poll` is 1), from
/// sysfs. A partition's queue is its disk's. `None` when sysfs does not say (no block device,
/// e.g. tmpfs or an overlay, or no sysfs).
pub fn device_polls(dir: &Path) -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(dir).ok()?.dev();
    let node = std::fs::canonicalize(format!(
        "/sys/dev/block/{}:{}",
        libc::major(dev),
        libc::minor(dev)
    ))
    .ok()?;
    let candidates = [
        node.join("queue/io_poll"),
        node.parent()?.join("queue/io_poll"),
    ];
    candidates
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .map(|text| text.trim() == "1")
}

/// Before the first DMA file in `dir` is opened on this thread: unless the device polls,
/// make glommio use its main ring for this device on this thread (module docs). Leaves no
/// file behind. Returns the ring DMA files in `dir` will use.
///
/// # Errors
/// `Io` when the scratch file cannot be created or removed.
pub async fn prefer_interrupts(dir: &Path) -> Result<DmaRing> {
    if device_polls(dir) == Some(true) {
        return Ok(DmaRing::Polled);
    }
    let path: PathBuf = dir.join(PROBE_FILE_NAME);
    let opened = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .dma_open(&path)
        .await;
    let removed = std::fs::remove_file(&path);
    let file = opened.map_err(|e| WalError::io("create probe file", &path, e.into()))?;
    file.close()
        .await
        .map_err(|e| WalError::io("close probe file", &path, e.into()))?;
    removed.map_err(|e| WalError::io("remove probe file", &path, e))?;
    Ok(DmaRing::Interrupt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::run_local;

    /// Writes one aligned block through a DMA file in `dir` and returns how many file writes
    /// each of glommio's rings counted meanwhile (main, poll).
    async fn one_dma_write(dir: &Path) -> (u64, u64) {
        let before = glommio::executor().io_stats();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .dma_open(dir.join("data"))
            .await
            .unwrap();
        let mut buffer = file.alloc_dma_buffer(4096);
        buffer.as_bytes_mut().fill(7);
        file.write_at(buffer, 0).await.unwrap();
        file.close().await.unwrap();
        let after = glommio::executor().io_stats();
        (
            after.main_ring.file_writes().0 - before.main_ring.file_writes().0,
            after.poll_ring.file_writes().0 - before.poll_ring.file_writes().0,
        )
    }

    #[test]
    fn dma_writes_go_to_the_main_ring_unless_the_device_polls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let (ring, (main, polled)) = run_local(async move {
            let ring = prefer_interrupts(&path).await.unwrap();
            (ring, one_dma_write(&path).await)
        })
        .unwrap();
        assert!(!dir.path().join(PROBE_FILE_NAME).exists());
        match ring {
            DmaRing::Interrupt => assert_eq!((main, polled), (1, 0)),
            DmaRing::Polled => assert_eq!(main + polled, 1),
        }
        assert_eq!(
            ring == DmaRing::Polled,
            device_polls(dir.path()) == Some(true)
        );
    }

    /// The reason for the module: without the probe, a device that does not poll gets the
    /// polled ring anyway (glommio 0.9 on Linux 6.x). If glommio stops doing that, this test
    /// says so, and the probe can go.
    #[test]
    fn without_it_glommio_polls_an_ext4_or_xfs_device_that_cannot_poll() {
        let dir = tempfile::tempdir().unwrap();
        if device_polls(dir.path()) != Some(false) || !direct_io_file_system(dir.path()) {
            eprintln!("skipped: the temp directory is not on a non-polling ext4/xfs device");
            return;
        }
        let path = dir.path().to_path_buf();
        let (main, polled) = run_local(async move { one_dma_write(&path).await }).unwrap();
        assert_eq!((main, polled), (0, 1));
    }

    fn direct_io_file_system(dir: &Path) -> bool {
        const EXT4_SUPER_MAGIC: i64 = 0xEF53;
        const XFS_SUPER_MAGIC: i64 = 0x5846_5342;
        let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: statfs writes one `statfs` through a valid pointer; the path is NUL-ended.
        let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statfs(path.as_ptr(), &mut stat) };
        rc == 0 && matches!(stat.f_type as i64, EXT4_SUPER_MAGIC | XFS_SUPER_MAGIC)
    }
}
