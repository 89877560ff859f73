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
/// convert, checked with FIEMAP where the file system reports extents), and closing deletes
/// a spare that was not used.
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
        // Once the active segment is half full, the next spare is prepared.
        let spare = path.join(format!("{}.tmp", active.next().file_name()));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::fs::metadata(&spare).map_or(true, |m| m.len() < options.segment_size_bytes) {
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
        wal.close().await.unwrap();
        let leftovers: Vec<_> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|name| name.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        let (wal, report) = Wal::open(options).await.unwrap();
        assert!(report.removed_temp_files.is_empty());
        assert_matches(&wal, &model);
        wal.close().await.unwrap();
    });
}

/// How many of the file's extents are preallocated but never written (FIEMAP), or `None`
/// when the file system does not report extents.
fn unwritten_extents(path: &std::path::Path) -> Option<usize> {
    use std::os::fd::AsRawFd;
    const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
    const FIEMAP_FLAG_SYNC: u32 = 1;
    const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x800;
    const EXTENTS_MAX: usize = 64;
    // struct fiemap (32 bytes) followed by struct fiemap_extent (56 bytes) each.
    let mut buffer = vec![0u64; (32 + 56 * EXTENTS_MAX) / 8];
    let header = buffer.as_mut_ptr() as *mut u8;
    let file = std::fs::File::open(path).unwrap();
    // SAFETY: the buffer is large enough for the header and EXTENTS_MAX extents, and
    // 8-byte aligned; the fields written are those of struct fiemap.
    let extents = unsafe {
        (header.add(8) as *mut u64).write(u64::MAX); // fm_length
        (header.add(16) as *mut u32).write(FIEMAP_FLAG_SYNC); // fm_flags
        (header.add(24) as *mut u32).write(EXTENTS_MAX as u32); // fm_extent_count
        if libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP, header) != 0 {
            return None;
        }
        (header.add(20) as *const u32).read() as usize // fm_mapped_extents
    };
    let unwritten = (0..extents)
        .filter(|k| {
            // SAFETY: extent k lies within the buffer; fe_flags is at offset 40 of it.
            let flags = unsafe { (header.add(32 + 56 * k + 40) as *const u32).read() };
            flags & FIEMAP_EXTENT_UNWRITTEN != 0
        })
        .count();
    Some(unwritten)
}
