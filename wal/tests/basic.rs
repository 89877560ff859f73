//! Appends, reads, truncation on conflict, compaction, purge and reopen.

mod common;

use std::collections::BTreeMap;

use common::{assert_matches, entry, options, run, ModelLog};
use tessera_wal::{
    Entry, HardState, LogBatch, LogIndex, NodeId, RegionId, SegmentSeq, Term, Wal, WalError,
};

#[test]
fn appends_are_readable_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(dir.path());
    run(async move {
        let (wal, report) = Wal::open(options.clone()).await.unwrap();
        assert_eq!(report.records, 0);
        let mut model: BTreeMap<RegionId, ModelLog> = BTreeMap::new();
        for index in 1..=200u64 {
            let mut batch = LogBatch::new();
            for region in [RegionId(1), RegionId(2), RegionId(3)] {
                let entries = vec![entry(region, index, 1 + index / 50, 100)];
                batch.add_entries(region, &entries);
                let hard_state = HardState {
                    term: Term(1 + index / 50),
                    vote: None,
                    commit: LogIndex(index - 1),
                };
                batch.set_hard_state(region, hard_state);
                let log = model.entry(region).or_default();
                log.append(&entries);
                log.hard_state = Some(hard_state);
            }
            wal.append(batch).await.unwrap();
        }
        assert_matches(&wal, &model);
        assert!(wal.segments().len() > 1, "small segments must have rotated");
        wal.close().await.unwrap();
        let (wal, report) = Wal::open(options).await.unwrap();
        assert!(report.torn_tail.is_none());
        assert_matches(&wal, &model);
        wal.close().await.unwrap();
    });
}

#[test]
fn appending_over_a_conflicting_suffix_replaces_it_on_write_and_on_replay() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(dir.path());
    let region = RegionId(9);
    run(async move {
        let (wal, _) = Wal::open(options.clone()).await.unwrap();
        let mut batch = LogBatch::new();
        batch.add_entries(
            region,
            &(1..=10)
                .map(|i| entry(region, i, 1, 10))
                .collect::<Vec<_>>(),
        );
        wal.append(batch).await.unwrap();
        let mut batch = LogBatch::new();
        batch.add_entries(region, &[entry(region, 6, 2, 10), entry(region, 7, 2, 10)]);
        wal.append(batch).await.unwrap();
        assert_eq!(wal.last_index(region).unwrap(), LogIndex(7));
        assert_eq!(wal.term(region, LogIndex(6)).unwrap(), Term(2));
        assert_eq!(wal.term(region, LogIndex(5)).unwrap(), Term(1));
        assert!(matches!(
            wal.term(region, LogIndex(8)),
            Err(WalError::Unavailable { .. })
        ));
        wal.close().await.unwrap();
        let (wal, _) = Wal::open(options).await.unwrap();
        assert_eq!(wal.last_index(region).unwrap(), LogIndex(7));
        let entries = wal
            .entries(region, LogIndex(1), LogIndex(8), usize::MAX)
            .unwrap();
        assert_eq!(entries[5], entry(region, 6, 2, 10));
        assert_eq!(entries.len(), 7);
        wal.close().await.unwrap();
    });
}

#[test]
fn compaction_lets_old_segments_be_purged_and_recovery_starts_from_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(dir.path());
    let (a, b) = (RegionId(1), RegionId(2));
    run(async move {
        let (wal, _) = Wal::open(options.clone()).await.unwrap();
        let hard_state = HardState {
            term: Term(3),
            vote: Some(NodeId(2)),
            commit: LogIndex(1),
        };
        let mut batch = LogBatch::new();
        batch.set_hard_state(b, hard_state);
        batch.add_entries(b, &[entry(b, 1, 3, 10)]);
        wal.append(batch).await.unwrap();
        for index in 1..=600u64 {
            let mut batch = LogBatch::new();
            batch.add_entries(a, &[entry(a, index, 3, 500)]);
            wal.append(batch).await.unwrap();
        }
        let before = wal.segments();
        assert!(before.len() > 3);
        // Region b pins the first segment until it is compacted too.
        let mut batch = LogBatch::new();
        batch.compact_to(a, LogIndex(590), Term(3));
        wal.append(batch).await.unwrap();
        assert!(wal.purge().await.unwrap().is_empty());
        let mut batch = LogBatch::new();
        batch.compact_to(b, LogIndex(1), Term(3));
        wal.append(batch).await.unwrap();
        let purged = wal.purge().await.unwrap();
        assert!(!purged.is_empty());
        assert_eq!(wal.first_index(a).unwrap(), LogIndex(591));
        assert!(matches!(
            wal.entries(a, LogIndex(590), LogIndex(592), usize::MAX),
            Err(WalError::Compacted { .. })
        ));
        wal.close().await.unwrap();
        let (wal, report) = Wal::open(options).await.unwrap();
        assert_eq!(report.first_segment, purged.last().unwrap().next());
        assert_eq!(wal.hard_state(b).unwrap(), Some(hard_state));
        assert_eq!(wal.compaction_mark(b).unwrap(), (LogIndex(1), Term(3)));
        assert_eq!(wal.last_index(b).unwrap(), LogIndex(1));
        let entries = wal
            .entries(a, LogIndex(591), LogIndex(601), usize::MAX)
            .unwrap();
        assert_eq!(entries.len(), 10);
        assert_eq!(entries[9], entry(a, 600, 3, 500));
        wal.close().await.unwrap();
    });
}

/// Regression: a Region rewrote its log from below after a purge took the segment holding
/// its first entries, while another Region's snapshot install of a foreign term freed the
/// older segments. Recovery failed with "entries up to i0 are in purged segments but no
/// compaction mark covers them".
#[test]
fn recovery_after_an_overwrite_below_purged_entries_and_a_foreign_snapshot_install() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(dir.path());
    let (a, b) = (RegionId(1), RegionId(3));
    run(async move {
        let mut model: BTreeMap<RegionId, ModelLog> = BTreeMap::new();
        let (wal, _) = Wal::open(options.clone()).await.unwrap();
        // b's entries 1..5 go to segment 1; a fills a few segments after them.
        let b_entries = (1..=5).map(|i| entry(b, i, 1, 10)).collect();
        append_entries(&wal, &mut model, b, b_entries).await;
        for index in 1..=300u64 {
            append_entries(&wal, &mut model, a, vec![entry(a, index, 1, 500)]).await;
        }
        // b rewrites 3 (in a later segment), a installs a snapshot of a foreign term, then b
        // rewrites its whole log from 1: no Region needs segment 1 any more.
        append_entries(&wal, &mut model, b, vec![entry(b, 3, 1, 10)]).await;
        let mut batch = LogBatch::new();
        batch.install_snapshot(a, LogIndex(300), Term(2));
        let a_log = model.get_mut(&a).unwrap();
        a_log.install_snapshot(LogIndex(300), Term(2));
        wal.append(batch).await.unwrap();
        append_entries(&wal, &mut model, b, vec![entry(b, 1, 1, 10)]).await;
        let purged = wal.purge().await.unwrap();
        assert!(purged.contains(&SegmentSeq(1)), "{purged:?}");
        assert_matches(&wal, &model);
        wal.close().await.unwrap();
        let (wal, report) = Wal::open(options).await.unwrap();
        assert!(report.first_segment > SegmentSeq(1));
        assert_matches(&wal, &model);
        wal.close().await.unwrap();
    });
}

async fn append_entries(
    wal: &Wal,
    model: &mut BTreeMap<RegionId, ModelLog>,
    region: RegionId,
    entries: Vec<Entry>,
) {
    model.entry(region).or_default().append(&entries);
    let mut batch = LogBatch::new();
    batch.add_entries(region, &entries);
    wal.append(batch).await.unwrap();
}

/// The next segment is prepared in the background as `<name>.tmp`, zero-filled so that group
/// commits overwrite initialized blocks (no unwritten extents left for the file system to
/// convert, checked with FIEMAP where the file system reports extents), then renamed to its
/// final name before it is needed (so a rotation does not rename); closing deletes a spare
/// that was not used.
#[test]
fn the_next_segment_is_prepared_zero_filled_and_a_spare_is_deleted_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(dir.path());
    let region = RegionId(1);
    let path = dir.path().to_path_buf();
    run(async move {
        let (wal, _) = Wal::open(options.clone()).await.unwrap();
        let mut model = BTreeMap::new();
        let mut index = 1;
        while wal.segments().len() < 2 {
            append_entries(&wal, &mut model, region, vec![entry(region, index, 1, 900)]).await;
            index += 1;
        }
        // The second segment was the spare: its blocks are all written.
        let active = *wal.segments().last().unwrap();
        let active_path = path.join(active.file_name());
        if let Some(unwritten) = unwritten_extents(&active_path) {
            assert_eq!(unwritten, 0, "{active_path:?} has unwritten extents");
        }
        // The next spare is prepared (its zeros paced by the active segment's progress) and
        // renamed to its final name while the active segment is still written.
        let spare = path.join(active.next().file_name());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !spare.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "no spare at {spare:?}"
            );
            if wal.segments().last() == Some(&active) {
                append_entries(&wal, &mut model, region, vec![entry(region, index, 1, 900)]).await;
                index += 1;
            } else {
                glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
        assert_eq!(
            wal.segments().last(),
            Some(&active),
            "the spare is not started yet"
        );
        if let Some(unwritten) = unwritten_extents(&spare) {
            assert_eq!(unwritten, 0, "{spare:?} has unwritten extents");
        }
        wal.close().await.unwrap();
        let leftovers: Vec<_> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|name| name.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        assert!(
            !spare.exists(),
            "the unused spare {spare:?} is deleted on close"
        );
        let (wal, report) = Wal::open(options).await.unwrap();
        assert!(report.removed_temp_files.is_empty());
        assert_matches(&wal, &model);
        wal.close().await.unwrap();
    });
}

/// How many of the file's extents are preallocated but never written (FIEMAP), or `None`
/// when the file system does not report extents.
fn unwritten_extents(path: &std::path::Path) -> Option<usize> {
    let file = std::fs::File::open(path).unwrap();
    tessera_wal::extents::unwritten_ranges(&file).map(|ranges| ranges.len())
}

/// Waits (with a deadline) until `path` has no unwritten extent; false when the file system
/// does not report extents.
async fn wait_until_fully_written(path: &std::path::Path) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match unwritten_extents(path) {
            None => return false,
            Some(0) => return true,
            Some(_) => {}
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path:?} still has unwritten extents"
        );
        glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// No group commit writes into unwritten extents once the background zero-fill is done, and
/// it never damages a record: the first segment of a fresh WAL (only preallocated when
/// created, so that opening stays fast) and a reopened segment that still has unwritten
/// blocks past the end of the log (here: written with zero-filling off) are zero-filled in
/// the background while appends go on; everything appended reads back, also after reopening.
#[test]
fn a_fresh_or_reopened_active_segment_is_zero_filled_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(dir.path());
    // Several zero writes (1 MiB each) and a partial one; no rotation in this test.
    options.segment_size_bytes = (3 << 20) + (64 << 10);
    options.batch_bytes_max = 64 << 10;
    let region = RegionId(1);
    let first = dir.path().join(SegmentSeq(1).file_name());
    run(async move {
        let mut model = BTreeMap::new();
        let mut index = 1;
        // Zero-filling off: the first segment keeps its unwritten extents.
        let mut off = options.clone();
        off.zero_fill_segments = false;
        let (wal, _) = Wal::open(off).await.unwrap();
        for _ in 0..20 {
            append_entries(
                &wal,
                &mut model,
                region,
                vec![entry(region, index, 1, 3000)],
            )
            .await;
            index += 1;
        }
        wal.close().await.unwrap();
        let Some(unwritten) = unwritten_extents(&first) else {
            return; // no FIEMAP on this file system: nothing to observe
        };
        if unwritten == 0 {
            return; // a file system without unwritten extents
        }
        // Reopened with zero-filling on: the blocks past the end are zeroed while appends go on.
        let (wal, _) = Wal::open(options.clone()).await.unwrap();
        let wal = std::rc::Rc::new(wal);
        let appenders: Vec<_> = (0..4u64)
            .map(|k| {
                let (region, wal) = (RegionId(10 + k), wal.clone());
                glommio::spawn_local(async move {
                    let mut appended = Vec::new();
                    for i in 1..=30 {
                        let entries = vec![entry(region, i, 1, 5000)];
                        let mut batch = LogBatch::new();
                        batch.add_entries(region, &entries);
                        wal.append(batch).await.unwrap();
                        appended.extend(entries);
                    }
                    (region, appended)
                })
            })
            .collect();
        for appender in appenders {
            let (region, appended) = appender.await;
            model.entry(region).or_default().append(&appended);
        }
        let wal = std::rc::Rc::into_inner(wal).unwrap();
        assert!(wait_until_fully_written(&first).await);
        assert_matches(&wal, &model);
        wal.close().await.unwrap();
        let (wal, _) = Wal::open(options.clone()).await.unwrap();
        assert_matches(&wal, &model);
        wal.close().await.unwrap();

        // A fresh WAL: its first segment is zero-filled in the background.
        let fresh = tempfile::tempdir().unwrap();
        let mut fresh_options = options.clone();
        fresh_options.dir = fresh.path().to_path_buf();
        let (wal, _) = Wal::open(fresh_options.clone()).await.unwrap();
        let mut fresh_model = BTreeMap::new();
        append_entries(
            &wal,
            &mut fresh_model,
            region,
            vec![entry(region, 1, 1, 100)],
        )
        .await;
        let fresh_first = fresh.path().join(SegmentSeq(1).file_name());
        assert!(wait_until_fully_written(&fresh_first).await);
        wal.close().await.unwrap();
        let (wal, _) = Wal::open(fresh_options).await.unwrap();
        assert_matches(&wal, &fresh_model);
        wal.close().await.unwrap();
    });
}

/// Open flags (from `/proc/self/fdinfo`) of this process's writable descriptors on segment
/// files in `dir`: on the spare being prepared (`<name>.tmp`) if `spare`, else on segments
/// with their final names.
fn segment_fd_flags(dir: &std::path::Path, spare: bool) -> Vec<u32> {
    let mut flags = Vec::new();
    for fd in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue;
        };
        let is_spare = target.extension().is_some_and(|e| e == "tmp");
        if target.parent() != Some(dir) || is_spare != spare {
            continue;
        }
        let name = fd.file_name();
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", name.to_string_lossy()))
            .unwrap_or_default();
        if let Some(line) = info.lines().find(|l| l.starts_with("flags:")) {
            let value = u32::from_str_radix(line["flags:".len()..].trim(), 8).unwrap();
            // Readers (recovery, reads of old entries) are not the write path.
            if value & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32 {
                flags.push(value);
            }
        }
    }
    flags
}

/// Group commits write through `O_DSYNC` descriptors exactly when `write_through` is set, also
/// in a segment that was a spare and after recovery reopens the segment; the spare's zero-fill
/// never does (each of its zero writes would otherwise be a device flush competing with the
/// group commits).
#[test]
fn write_through_segments_are_opened_o_dsync_and_plain_ones_are_not() {
    let dsync = libc::O_DSYNC as u32;
    for write_through in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().canonicalize().unwrap();
        let mut options = options(&path);
        options.write_through = write_through;
        let segment_bytes = options.segment_size_bytes;
        run(async move {
            let (wal, _) = Wal::open(options.clone()).await.unwrap();
            let mut model = BTreeMap::new();
            let mut index = 0;
            // Small appends until the spare's file is open: its zero-fill is paced behind the
            // active segment (twice its used bytes), so it is still under way.
            let mut spare = Vec::new();
            while spare.is_empty() && index < 100 {
                index += 1;
                let entries = vec![entry(RegionId(1), index, 1, 100)];
                append_entries(&wal, &mut model, RegionId(1), entries).await;
                spare = segment_fd_flags(&path, true);
            }
            assert!(!spare.is_empty(), "a spare is being prepared");
            assert!(
                spare.iter().all(|f| f & dsync == 0),
                "spare zero-fill flags {spare:?}"
            );
            let flags = segment_fd_flags(&path, false);
            assert!(!flags.is_empty(), "the active segment is open");
            assert!(
                flags.iter().all(|f| (f & dsync != 0) == write_through),
                "write_through {write_through}: flags {flags:?}"
            );
            // Past a rotation: the spare, now the active segment, writes through `O_DSYNC`
            // exactly when asked, and the next spare is zero-filled through a plain one.
            let mut written = 0;
            while wal.segments().len() < 2 {
                assert!(written < 4 * segment_bytes, "no rotation");
                index += 1;
                let entries = vec![entry(RegionId(1), index, 1, 1000)];
                append_entries(&wal, &mut model, RegionId(1), entries).await;
                written += 1000;
            }
            let flags = segment_fd_flags(&path, false);
            assert!(!flags.is_empty());
            assert!(flags.iter().all(|f| (f & dsync != 0) == write_through));
            let spare = segment_fd_flags(&path, true);
            assert!(
                spare.iter().all(|f| f & dsync == 0),
                "spare flags {spare:?}"
            );
            wal.close().await.unwrap();
            // Reopened (the path recovery takes) with the same flags, and nothing lost.
            let (wal, report) = Wal::open(options).await.unwrap();
            assert!(report.records > 0);
            assert_matches(&wal, &model);
            let flags = segment_fd_flags(&path, false);
            assert!(flags.iter().all(|f| (f & dsync != 0) == write_through));
            wal.close().await.unwrap();
        });
    }
}

/// `blocking_writes`: group commits are blocking system calls on the caller's thread, so
/// glommio's rings count none of them (through the ring they count one each), in both
/// durability modes; what they wrote reads back after a reopen, through the ring or not.
#[test]
fn blocking_writes_leave_the_rings_out_and_read_back_after_reopen() {
    for (write_through, blocking) in [(true, true), (false, true), (true, false)] {
        let dir = tempfile::tempdir().unwrap();
        let mut options = options(dir.path());
        options.segment_size_bytes = 1 << 20; // no rotation: no segment-file writes meanwhile
        options.zero_fill_segments = false;
        options.write_through = write_through;
        options.blocking_writes = blocking;
        let region = RegionId(7);
        let (ring_writes, options) = run(async move {
            let (wal, _) = Wal::open(options.clone()).await.unwrap();
            // glommio's I/O counters count from the previous call.
            let ring = || {
                let stats = glommio::executor().io_stats();
                stats.main_ring.file_writes().0 + stats.poll_ring.file_writes().0
            };
            ring();
            for index in 1..=20u64 {
                let mut batch = LogBatch::new();
                batch.add_entries(region, &[entry(region, index, 1, 300)]);
                wal.append(batch).await.unwrap();
            }
            let writes = ring();
            wal.close().await.unwrap();
            (writes, options)
        });
        let expected = if blocking { 0 } else { 20 };
        assert_eq!(
            ring_writes, expected,
            "write_through {write_through}, blocking {blocking}"
        );
        run(async move {
            let (wal, _) = Wal::open(options).await.unwrap();
            let stored = wal
                .entries(region, LogIndex(1), LogIndex(21), usize::MAX)
                .unwrap();
            let expected: Vec<_> = (1..=20).map(|i| entry(region, i, 1, 300)).collect();
            assert_eq!(stored, expected);
            wal.close().await.unwrap();
        });
    }
}

/// With blocking writes, appenders enough to keep the executor busy all the time, and small
/// segments: the spare segment is completely zero-filled before every rotation (what each
/// rotating group commit's `spare_zeroed_bytes` saw when it began), nothing is lost, and
/// closing leaves only the live segments. Regression: the spare's zeros went through glommio's
/// ring, which the executor polls only when it runs out of tasks, so none were written until
/// the rotation itself waited for them, on the flush path.
#[test]
fn with_blocking_writes_and_a_busy_executor_the_spare_is_complete_when_the_rotation_comes() {
    const APPENDERS: u64 = 64;
    const ROTATIONS: u64 = 4;
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(dir.path());
    options.segment_size_bytes = 1 << 20;
    options.blocking_writes = true;
    options.flush_timings_max = 1 << 16;
    let segment_bytes = options.segment_size_bytes;
    let path = dir.path().to_path_buf();
    run(async move {
        let (wal, _) = Wal::open(options.clone()).await.unwrap();
        let wal = std::rc::Rc::new(wal);
        let appenders: Vec<_> = (1..=APPENDERS)
            .map(|region| {
                let wal = wal.clone();
                glommio::spawn_local(async move {
                    let region = RegionId(region);
                    let mut index = 0;
                    while wal.stats().segments_created < ROTATIONS {
                        index += 1;
                        let mut batch = LogBatch::new();
                        batch.add_entries(region, &[entry(region, index, 1, 100)]);
                        wal.append(batch).await.unwrap();
                    }
                    index
                })
            })
            .collect();
        let mut last_indexes = Vec::new();
        for appender in appenders {
            last_indexes.push(appender.await);
        }
        let timings = wal.take_flush_timings();
        let rotating: Vec<_> = timings
            .windows(2)
            .filter(|pair| pair[1].segment != pair[0].segment)
            .map(|pair| (pair[1].segment, pair[1].spare_zeroed_bytes))
            .collect();
        assert!(rotating.len() as u64 >= ROTATIONS - 1, "{rotating:?}");
        for (segment, zeroed) in &rotating {
            assert_eq!(
                *zeroed,
                Some(segment_bytes),
                "the spare for segment {segment} was not zero-filled when the rotation came \
                 (every rotation: {rotating:?})"
            );
        }
        let live = wal.segments();
        std::rc::Rc::into_inner(wal).unwrap().close().await.unwrap();
        let mut files: Vec<_> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let live: Vec<_> = live.iter().map(|seq| seq.file_name()).collect();
        assert_eq!(files, live, "closing leaves the live segments only");
        let (wal, _) = Wal::open(options).await.unwrap();
        for (region, last) in (1..=APPENDERS).zip(last_indexes) {
            assert_eq!(wal.last_index(RegionId(region)).unwrap(), LogIndex(last));
        }
        wal.close().await.unwrap();
    });
}

/// With blocking writes and appenders enough to keep the executor busy all the time, the
/// first segment of a fresh WAL is zero-filled in the background well ahead of the log: it
/// has no unwritten extent left (FIEMAP) before the records fill a quarter of it. Regression:
/// its zeros went through glommio's ring, which the executor polls only when it runs out of
/// tasks, so they only went out when a record write waited for the one in flight, and stayed
/// one chunk ahead of the log.
#[test]
fn with_blocking_writes_and_a_busy_executor_the_first_segment_is_zero_filled_ahead_of_the_log() {
    const APPENDERS: u64 = 64;
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(dir.path());
    options.segment_size_bytes = 32 << 20;
    options.blocking_writes = true;
    let segment_bytes = options.segment_size_bytes;
    let first = dir.path().join(SegmentSeq(1).file_name());
    let bytes_when_zeroed = run(async move {
        let (wal, _) = Wal::open(options).await.unwrap();
        let wal = std::rc::Rc::new(wal);
        // Set by the first appender once the segment is fully written: how many bytes the
        // log had written then (`None` where the file system does not report extents).
        let zeroed_at: std::rc::Rc<std::cell::Cell<Option<Option<u64>>>> = Default::default();
        let appenders: Vec<_> = (1..=APPENDERS)
            .map(|region| {
                let (wal, zeroed_at, first) = (wal.clone(), zeroed_at.clone(), first.clone());
                glommio::spawn_local(async move {
                    let region = RegionId(region);
                    let mut index = 0;
                    while zeroed_at.get().is_none() && wal.stats().segments_created == 0 {
                        index += 1;
                        let mut batch = LogBatch::new();
                        batch.add_entries(region, &[entry(region, index, 1, 256)]);
                        wal.append(batch).await.unwrap();
                        if region.0 == 1 {
                            match unwritten_extents(&first) {
                                None => zeroed_at.set(Some(None)),
                                Some(0) => zeroed_at.set(Some(Some(wal.stats().bytes_written))),
                                Some(_) => {}
                            }
                        }
                    }
                })
            })
            .collect();
        for appender in appenders {
            appender.await;
        }
        std::rc::Rc::into_inner(wal).unwrap().close().await.unwrap();
        zeroed_at.get()
    });
    match bytes_when_zeroed {
        None => panic!("the log filled the first segment before it was zero-filled"),
        Some(None) => eprintln!("skipped: the file system does not report extents"),
        Some(Some(bytes)) => assert!(
            bytes < segment_bytes / 4,
            "the first segment was zero-filled only after {bytes} bytes of records"
        ),
    }
}
