//! Crash consistency: a log damaged the way a crash (or a bad disk) damages it recovers to
//! exactly its longest valid prefix when the damage is a torn tail, and fails with an error
//! naming the segment and offset when the damage is anywhere else.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::{entry, options, run};
use tessera_wal::scan::{list_segments, SegmentReader, Step};
use tessera_wal::{LogBatch, LogIndex, RegionId, SegmentSeq, Wal, WalError};

const REGION: RegionId = RegionId(5);

/// Writes `count` appends of one entry each (so record k + 1 holds index k + 1 after the
/// checkpoint record) and returns the newest segment's path.
fn write_log(dir: &Path, count: u64, entry_len: usize) {
    let options = options(dir);
    run(async move {
        let (wal, _) = Wal::open(options).await.unwrap();
        for index in 1..=count {
            let mut batch = LogBatch::new();
            batch.add_entries(REGION, &[entry(REGION, index, 1, entry_len)]);
            wal.append(batch).await.unwrap();
        }
        wal.close().await.unwrap();
    });
}

/// The newest segment and the (offset, end) of each of its records.
fn newest_records(dir: &Path) -> (PathBuf, SegmentSeq, Vec<(u64, u64)>) {
    let segments = list_segments(dir).unwrap();
    let newest = segments.last().unwrap().clone();
    let reader = SegmentReader::open(&newest).unwrap();
    let mut records = Vec::new();
    let mut offset = reader.first_record_offset();
    while let Step::Record(record) = reader.step(offset) {
        records.push((offset, offset + record.len()));
        offset += record.len();
    }
    (newest.path, newest.seq, records)
}

fn copy_dir(from: &Path, to: &Path) {
    for dir_entry in std::fs::read_dir(from).unwrap() {
        let dir_entry = dir_entry.unwrap();
        std::fs::copy(dir_entry.path(), to.join(dir_entry.file_name())).unwrap();
    }
}

/// Opens the damaged copy: `Ok(last index)` or the error.
fn recover(dir: &Path) -> Result<(LogIndex, Option<tessera_wal::TornTail>), WalError> {
    let options = options(dir);
    run(async move {
        let (wal, report) = Wal::open(options).await?;
        let last = wal.last_index(REGION)?;
        let first = wal.first_index(REGION)?;
        let entries = wal.entries(REGION, first, last.next(), usize::MAX)?;
        for e in &entries {
            assert_eq!(
                *e,
                entry(REGION, e.index.0, 1, 40),
                "entry content survives"
            );
        }
        wal.close().await?;
        Ok((last, report.torn_tail))
    })
}

#[test]
fn truncating_the_newest_segment_anywhere_in_its_last_records_keeps_the_longest_valid_prefix() {
    let base = tempfile::tempdir().unwrap();
    write_log(base.path(), 30, 40);
    let (path, _, records) = newest_records(base.path());
    let name = path.file_name().unwrap().to_owned();
    let last_records = &records[records.len() - 3..];
    let first_index_in_newest = LogIndex(30 - (records.len() as u64 - 2));
    let (start, end) = (last_records[0].0, last_records[2].1);
    for cut in start..=end {
        for zero_instead_of_truncate in [false, true] {
            let copy = tempfile::tempdir().unwrap();
            copy_dir(base.path(), copy.path());
            let file = OpenOptions::new()
                .write(true)
                .open(copy.path().join(&name))
                .unwrap();
            if zero_instead_of_truncate {
                file.write_all_at(&vec![0u8; (end - cut) as usize], cut)
                    .unwrap();
            } else {
                file.set_len(cut).unwrap();
            }
            let complete = records
                .iter()
                .filter(|(_, record_end)| *record_end <= cut)
                .count();
            // Record 0 is the checkpoint; record k holds the k-th entry of this segment.
            let expected = LogIndex(first_index_in_newest.0 + complete as u64 - 2);
            let (last, torn) = recover(copy.path())
                .unwrap_or_else(|e| panic!("cut at {cut} (zero {zero_instead_of_truncate}): {e}"));
            assert_eq!(last, expected, "cut at {cut}");
            let at_boundary = records.iter().any(|(_, record_end)| *record_end == cut);
            assert_eq!(torn.is_some(), !at_boundary, "cut at {cut}");
            if let Some(torn) = torn {
                assert_eq!(torn.offset, records[complete].0, "cut at {cut}");
            }
        }
    }
}

#[test]
fn a_recovered_log_with_a_cut_tail_accepts_appends_and_recovers_again() {
    let base = tempfile::tempdir().unwrap();
    write_log(base.path(), 20, 40);
    let (path, _, records) = newest_records(base.path());
    let (last_offset, last_end) = *records.last().unwrap();
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    // Tear the last record in the middle.
    file.write_all_at(
        &vec![0u8; ((last_end - last_offset) / 2) as usize],
        last_offset + 20,
    )
    .unwrap();
    let options = options(base.path());
    run(async move {
        let (wal, report) = Wal::open(options.clone()).await.unwrap();
        let torn = report.torn_tail.expect("torn tail reported");
        assert_eq!(torn.offset, last_offset);
        assert_eq!(wal.last_index(REGION).unwrap(), LogIndex(19));
        let mut batch = LogBatch::new();
        batch.add_entries(
            REGION,
            &[entry(REGION, 20, 1, 40), entry(REGION, 21, 1, 40)],
        );
        wal.append(batch).await.unwrap();
        wal.close().await.unwrap();
        let (wal, report) = Wal::open(options).await.unwrap();
        assert!(report.torn_tail.is_none());
        let entries = wal
            .entries(REGION, LogIndex(1), LogIndex(22), usize::MAX)
            .unwrap();
        assert_eq!(entries.len(), 21);
        assert_eq!(entries[20], entry(REGION, 21, 1, 40));
        wal.close().await.unwrap();
    });
}

fn flip_bit(path: &Path, offset: u64, bit: u8) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    byte[0] ^= 1 << bit;
    file.write_all_at(&byte, offset).unwrap();
}

#[test]
fn a_bit_flip_in_the_last_record_is_cut_as_a_torn_tail() {
    let base = tempfile::tempdir().unwrap();
    write_log(base.path(), 10, 40);
    let (path, _, records) = newest_records(base.path());
    let name = path.file_name().unwrap().to_owned();
    let (start, end) = *records.last().unwrap();
    for offset in start..end {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(base.path(), copy.path());
        flip_bit(&copy.path().join(&name), offset, (offset % 8) as u8);
        let (last, torn) = recover(copy.path()).unwrap_or_else(|e| panic!("flip at {offset}: {e}"));
        assert_eq!(last, LogIndex(9), "flip at {offset}");
        assert_eq!(torn.expect("torn tail").offset, start, "flip at {offset}");
    }
}

#[test]
fn a_bit_flip_in_an_earlier_record_is_an_error_naming_segment_and_offset() {
    let base = tempfile::tempdir().unwrap();
    write_log(base.path(), 10, 40);
    let (path, seq, records) = newest_records(base.path());
    let name = path.file_name().unwrap().to_owned();
    // Every byte of the second-to-last record, and the first byte of each earlier one.
    let (start, end) = records[records.len() - 2];
    let targets: Vec<(u64, u64)> = (start..end)
        .map(|offset| (start, offset))
        .chain(
            records[..records.len() - 2]
                .iter()
                .map(|(s, e)| (*s, (*s + 13).min(*e - 1))),
        )
        .collect();
    for (record_offset, offset) in targets {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(base.path(), copy.path());
        flip_bit(&copy.path().join(&name), offset, (offset % 8) as u8);
        match recover(copy.path()) {
            Err(WalError::Corruption {
                segment,
                offset: at,
                ..
            }) => {
                assert_eq!((segment, at), (seq, record_offset), "flip at {offset}");
            }
            other => panic!("flip at {offset}: expected corruption, got {other:?}"),
        }
    }
}

#[test]
fn damage_in_an_older_segment_is_an_error_even_at_its_end() {
    let base = tempfile::tempdir().unwrap();
    write_log(base.path(), 400, 300);
    let segments = list_segments(base.path()).unwrap();
    assert!(segments.len() >= 2);
    let older = &segments[segments.len() - 2];
    let reader = SegmentReader::open(older).unwrap();
    let mut offset = reader.first_record_offset();
    let mut last = offset;
    while let Step::Record(record) = reader.step(offset) {
        last = offset;
        offset += record.len();
    }
    flip_bit(&older.path, last + 20, 3);
    match recover(base.path()) {
        Err(WalError::Corruption {
            segment, offset, ..
        }) => {
            assert_eq!((segment, offset), (older.seq, last));
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn a_missing_middle_segment_is_an_error() {
    let base = tempfile::tempdir().unwrap();
    write_log(base.path(), 400, 300);
    let segments = list_segments(base.path()).unwrap();
    assert!(segments.len() >= 3);
    std::fs::remove_file(&segments[1].path).unwrap();
    match recover(base.path()) {
        Err(WalError::MissingSegment { expected, .. }) => assert_eq!(expected, segments[1].seq),
        other => panic!("expected a missing segment error, got {other:?}"),
    }
}

#[test]
fn a_renamed_segment_is_an_error() {
    let base = tempfile::tempdir().unwrap();
    write_log(base.path(), 400, 300);
    let segments = list_segments(base.path()).unwrap();
    let newest = segments.last().unwrap();
    std::fs::rename(
        &newest.path,
        base.path().join(newest.seq.next().file_name()),
    )
    .unwrap();
    std::fs::copy(&segments[0].path, &newest.path).unwrap();
    assert!(matches!(
        recover(base.path()),
        Err(WalError::MisnamedSegment { .. })
    ));
}

/// A crash while a spare was prepared ahead (renamed to its final name, header only) and
/// the segment before it was being written: that segment's torn tail is cut as the newest
/// one's, and the never-started segment, which held nothing, is deleted. The same when a
/// crash tore the spare's checkpoint write (its start): any cut of that write is dropped.
#[test]
fn a_newest_segment_never_started_is_deleted_and_the_torn_tail_before_it_is_cut() {
    let base = tempfile::tempdir().unwrap();
    write_log(base.path(), 20, 40);
    let (path, seq, records) = newest_records(base.path());
    let (last_offset, last_end) = *records.last().unwrap();
    // Tear the last record of the segment being written.
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[0u8; 10], last_end - 10).unwrap();
    // What a started segment's first block would hold: its header and a checkpoint. Take it
    // from a log whose newest segment is `seq + 1`, each cut a torn start.
    let started = tempfile::tempdir().unwrap();
    let mut segment_bytes = options(started.path()).segment_size_bytes;
    write_log(started.path(), 200, 900);
    let (started_path, started_seq, started_records) = newest_records(started.path());
    assert!(started_seq >= seq.next(), "the second log rotated");
    let started_bytes = std::fs::read(&started_path).unwrap();
    segment_bytes = segment_bytes.max(started_bytes.len() as u64);
    let (checkpoint_offset, checkpoint_end) = started_records[0];
    let header = tessera_wal::format::encode_segment_header(seq.next());
    let next_path = path.with_file_name(seq.next().file_name());
    let cuts = [checkpoint_offset, checkpoint_offset + 5, checkpoint_end - 1];
    for cut in cuts {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(base.path(), copy.path());
        let mut bytes = vec![0u8; segment_bytes as usize];
        bytes[..header.len()].copy_from_slice(&header);
        // A checkpoint torn at `cut` (written for another segment number: invalid here, as
        // a torn one is).
        let cut = cut as usize;
        bytes[checkpoint_offset as usize..cut]
            .copy_from_slice(&started_bytes[checkpoint_offset as usize..cut]);
        let next = copy.path().join(next_path.file_name().unwrap());
        std::fs::write(&next, &bytes).unwrap();
        let options = options(copy.path());
        run(async move {
            let (wal, report) = Wal::open(options.clone()).await.unwrap();
            let torn = report.torn_tail.expect("the torn tail before it is cut");
            assert_eq!((torn.segment, torn.offset), (seq, last_offset), "cut {cut}");
            assert_eq!(report.removed_temp_files, vec![next.clone()], "cut {cut}");
            assert!(!next.exists());
            assert_eq!(wal.segments().last(), Some(&seq));
            assert_eq!(wal.last_index(REGION).unwrap(), LogIndex(19));
            let mut batch = LogBatch::new();
            batch.add_entries(REGION, &[entry(REGION, 20, 1, 40)]);
            wal.append(batch).await.unwrap();
            wal.close().await.unwrap();
            let (wal, report) = Wal::open(options).await.unwrap();
            assert!(report.torn_tail.is_none() && report.removed_temp_files.is_empty());
            let entries = wal
                .entries(REGION, LogIndex(1), LogIndex(21), usize::MAX)
                .unwrap();
            assert_eq!(entries.len(), 20);
            wal.close().await.unwrap();
        });
    }
}

/// The rule that deletes a never-started newest segment applies only where nothing valid
/// follows: a damaged first record with a valid record after it is corruption, as anywhere
/// in the newest segment.
#[test]
fn a_newest_segment_with_a_damaged_checkpoint_and_valid_records_after_it_is_an_error() {
    let base = tempfile::tempdir().unwrap();
    write_log(base.path(), 200, 900);
    let (path, seq, records) = newest_records(base.path());
    assert!(
        seq > SegmentSeq(1) && records.len() > 2,
        "rotated, then written"
    );
    flip_bit(&path, records[0].0 + 14, 3);
    match recover(base.path()) {
        Err(WalError::Corruption {
            segment, offset, ..
        }) => {
            assert_eq!((segment, offset), (seq, records[0].0));
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}
