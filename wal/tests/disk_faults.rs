//! Disk faults through the real write path (`WalOptions::faults` makes the Nth write,
//! fdatasync or preallocation fail as a failing or full disk would):
//!
//! - after a failed fdatasync no append completes `Ok`, queued or later, and `close` reports
//!   the failure; a reopen finds every acknowledged append;
//! - a full disk, when a new segment is preallocated or a record is written, is refused the
//!   same way, leaves no half-made segment behind, and a reopen (space freed) finds every
//!   acknowledged append and accepts new ones.

mod common;

use std::path::Path;

use common::{entry, options, run};
use tessera_wal::{FaultInjection, LogBatch, LogIndex, RegionId, Wal, WalError, WalOptions};

const REGION: RegionId = RegionId(3);

fn batch(index: u64, len: usize) -> LogBatch {
    let mut batch = LogBatch::new();
    batch.add_entries(REGION, &[entry(REGION, index, 1, len)]);
    batch
}

fn faulty(dir: &Path, spec: &str) -> WalOptions {
    let mut options = options(dir);
    options.segment_size_bytes = 16 << 10;
    options.faults = FaultInjection::armed(spec.parse().unwrap());
    options
}

/// Appends one entry at a time until an append fails; returns how many were acknowledged
/// and the error. Then checks that later appends and `close` fail too.
fn append_until_refused(options: WalOptions, entry_len: usize) -> (u64, WalError) {
    run(async move {
        let (wal, _) = Wal::open(options).await.unwrap();
        let mut acked = 0;
        let error = loop {
            match wal.append(batch(acked + 1, entry_len)).await {
                Ok(()) => acked += 1,
                Err(error) => break error,
            }
            assert!(acked < 10_000, "the armed fault never fired");
        };
        for later in 0..3 {
            let refused = wal.append(batch(acked + 2 + later, entry_len)).await;
            assert!(
                matches!(refused, Err(WalError::Poisoned(_))),
                "an append after the failure returned {refused:?}"
            );
        }
        assert!(matches!(wal.close().await, Err(WalError::Poisoned(_))));
        (acked, error)
    })
}

/// Reopens without faults: every acknowledged entry is there, nothing half-made is left, and
/// the WAL takes appends again. Returns the last index found.
fn reopen_and_check(dir: &Path, acked: u64, entry_len: usize) -> u64 {
    let options = options(dir);
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "half-made segments left: {leftovers:?}"
    );
    run(async move {
        let (wal, report) = Wal::open(options).await.unwrap();
        assert!(report.removed_temp_files.is_empty());
        let last = wal.last_index(REGION).unwrap().0;
        assert!(
            last >= acked,
            "acknowledged up to {acked}, recovered up to {last}"
        );
        let stored = wal
            .entries(REGION, LogIndex(1), LogIndex(acked + 1), usize::MAX)
            .unwrap();
        let expected: Vec<_> = (1..=acked)
            .map(|i| entry(REGION, i, 1, entry_len))
            .collect();
        assert_eq!(stored, expected);
        wal.append(batch(last + 1, entry_len)).await.unwrap();
        wal.close().await.unwrap();
        last
    })
}

#[test]
fn a_failed_fdatasync_poisons_the_wal_and_no_append_completes_after_it() {
    let dir = tempfile::tempdir().unwrap();
    // fdatasync 1 makes the first segment; appends 1..=4 take 2..=5; the 6th fails.
    let (acked, error) = append_until_refused(faulty(dir.path(), "fdatasync:6:EIO"), 64);
    assert_eq!(acked, 4);
    let text = error.to_string();
    assert!(
        text.contains("fdatasync") && text.contains("Input/output error"),
        "{text}"
    );
    // The failed append's bytes were written before the fdatasync failed: they may or may
    // not be found, which is allowed for an append that was never acknowledged.
    let last = reopen_and_check(dir.path(), acked, 64);
    assert!(last <= acked + 1);
}

#[test]
fn appends_waiting_in_the_queue_fail_with_the_flush_that_failed() {
    let dir = tempfile::tempdir().unwrap();
    let options = faulty(dir.path(), "fdatasync:2:EIO");
    run(async move {
        let (wal, _) = Wal::open(options).await.unwrap();
        let wal = std::rc::Rc::new(wal);
        let tasks: Vec<_> = (1..=8)
            .map(|i| {
                let wal = wal.clone();
                glommio::spawn_local(async move {
                    let mut batch = LogBatch::new();
                    batch.add_entries(RegionId(100 + i), &[entry(RegionId(100 + i), 1, 1, 32)]);
                    wal.append(batch).await
                })
            })
            .collect();
        for task in tasks {
            let outcome = task.await;
            assert!(
                outcome.is_err(),
                "an append completed after a failed fdatasync"
            );
        }
    });
}

#[test]
fn a_full_disk_when_a_segment_is_preallocated_is_refused_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    // Preallocation 1 makes the first segment; the second is the first rotation.
    let (acked, error) = append_until_refused(faulty(dir.path(), "preallocate:2:ENOSPC"), 400);
    assert!(
        acked > 10,
        "the first segment holds more than {acked} appends"
    );
    let text = error.to_string();
    assert!(
        text.contains("preallocate") && text.contains("No space left on device"),
        "{text}"
    );
    // Nothing of the refused append reached a segment.
    assert_eq!(reopen_and_check(dir.path(), acked, 400), acked);
}

#[test]
fn a_full_disk_when_a_record_is_written_is_refused_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    // Write 1 makes the first segment; appends 1..=6 take 2..=7.
    let (acked, error) = append_until_refused(faulty(dir.path(), "write:8:ENOSPC"), 100);
    assert_eq!(acked, 6);
    assert!(
        error.to_string().contains("No space left on device"),
        "{error}"
    );
    assert_eq!(reopen_and_check(dir.path(), acked, 100), acked);
}

/// `blocking_writes`: an injected record write fault poisons the WAL as it does through the
/// ring, and a reopen finds every acknowledged append.
#[test]
fn with_blocking_writes_a_failed_write_poisons_the_wal_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = faulty(dir.path(), "write:5:EIO");
    options.blocking_writes = true;
    let (acked, error) = append_until_refused(options, 64);
    assert!(acked >= 1, "some appends complete before the fault");
    assert!(error.to_string().contains("Input/output error"), "{error}");
    reopen_and_check(dir.path(), acked, 64);
}
