//! The seed corpus of the `wal_recovery` fuzz target (`fuzz/seeds/wal_recovery`), made from
//! segment files a real WAL wrote, then damaged the ways recovery must tell apart: a torn
//! tail (cut off), a damaged record in an older segment or mid-way through the newest one,
//! and a missing first segment (all refused).
//!
//! This test checks that the committed seeds are exactly what the WAL writes today and that
//! recovery treats each as its name says. After a deliberate change of the WAL format,
//! regenerate them with `TESSERA_REGEN_FUZZ_SEEDS=1 cargo test -p tessera-wal --test
//! fuzz_seeds` and commit the result.
//!
//! Seed format (read by `fuzz/src/lib.rs`): `[first segment number - 1: u8]` then each
//! segment file's bytes, separated by `--tessera-segment--`. Each segment is cut after its
//! last record: the rest is the unused, preallocated part of the file (zeros).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{entry, run};
use tessera_wal::recovery::{replay, Replayed};
use tessera_wal::scan::{list_segments, SegmentReader, Step};
use tessera_wal::{
    HardState, LogBatch, LogIndex, RegionId, SegmentSeq, Term, Wal, WalError, WalOptions,
};

const SEPARATOR: &[u8] = b"--tessera-segment--";

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/wal_recovery")
}

/// Writes a log of three Regions over three 16 KiB segments: entries, hard states, a
/// compaction, a snapshot install and a removed Region.
fn write_log(dir: &Path) {
    let mut options = WalOptions::new(dir);
    options.segment_size_bytes = 16 << 10;
    run(async move {
        let (wal, _) = Wal::open(options).await.unwrap();
        let (a, b, c) = (RegionId(1), RegionId(2), RegionId(3));
        let (mut index, mut in_third) = (0, 0);
        while in_third < 5 {
            index += 1;
            if wal.segments().len() == 3 {
                in_third += 1;
            }
            let mut batch = LogBatch::new();
            batch.add_entries(a, &[entry(a, index, 1 + index / 40, 48)]);
            if index % 3 == 0 {
                batch.add_entries(b, &[entry(b, index / 3, 1, 24)]);
                batch.set_hard_state(
                    b,
                    HardState {
                        term: Term(1),
                        vote: None,
                        commit: LogIndex(index / 3),
                    },
                );
            }
            match index {
                20 => batch.install_snapshot(c, LogIndex(50), Term(2)),
                60 => batch.compact_to(a, LogIndex(30), Term(1)),
                90 => batch.remove_region(c),
                _ => {}
            }
            wal.append(batch).await.unwrap();
        }
        wal.close().await.unwrap();
    });
}

/// The segment files, cut after their last record (the rest is the unused, preallocated
/// zeros), oldest first.
fn segment_bytes(dir: &Path) -> Vec<Vec<u8>> {
    list_segments(dir)
        .unwrap()
        .iter()
        .map(|segment| {
            let mut bytes = std::fs::read(&segment.path).unwrap();
            let end = records(segment.seq, &bytes)
                .last()
                .map_or(bytes.len(), |(offset, len)| offset + len);
            bytes.truncate(end);
            bytes
        })
        .collect()
}

/// The (offset, length) of every record of a segment file's bytes.
fn records(seq: SegmentSeq, bytes: &[u8]) -> Vec<(usize, usize)> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(seq.file_name());
    std::fs::write(&path, bytes).unwrap();
    let reader = SegmentReader::open(&tessera_wal::scan::SegmentFile { seq, path }).unwrap();
    let mut found = Vec::new();
    let mut offset = reader.first_record_offset();
    while let Step::Record(record) = reader.step(offset) {
        found.push((offset as usize, record.len() as usize));
        offset += record.len();
    }
    found
}

fn input(first: u64, segments: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![(first - 1) as u8];
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(SEPARATOR);
        }
        out.extend_from_slice(segment);
    }
    out
}

/// Every seed by name, built from one real log.
fn seeds() -> BTreeMap<&'static str, (u64, Vec<Vec<u8>>)> {
    let scratch = tempfile::tempdir().unwrap();
    write_log(scratch.path());
    let segments = segment_bytes(scratch.path());
    assert_eq!(segments.len(), 3, "the log spans three segments");
    let newest_records = records(SegmentSeq(3), &segments[2]);
    let oldest_records = records(SegmentSeq(1), &segments[0]);
    assert!(newest_records.len() >= 3 && oldest_records.len() >= 3);

    let mut torn = segments.clone();
    let (last_offset, last_len) = *newest_records.last().unwrap();
    torn[2].truncate(last_offset + last_len / 2);

    let mut damaged_oldest = segments.clone();
    let (offset, len) = oldest_records[oldest_records.len() / 2];
    damaged_oldest[0][offset + len - 1] ^= 0x40;

    let mut damaged_newest = segments.clone();
    let (offset, len) = newest_records[1];
    damaged_newest[2][offset + len - 1] ^= 0x40;

    BTreeMap::from([
        ("log_three_segments", (1, segments.clone())),
        ("torn_tail", (1, torn)),
        ("damaged_record_in_older_segment", (1, damaged_oldest)),
        ("damaged_record_mid_newest_segment", (1, damaged_newest)),
        ("first_segment_missing", (2, segments[1..].to_vec())),
    ])
}

fn recover(first: u64, segments: &[Vec<u8>]) -> Result<Replayed, WalError> {
    let dir = tempfile::tempdir().unwrap();
    for (i, bytes) in segments.iter().enumerate() {
        let seq = SegmentSeq(first + i as u64);
        std::fs::write(dir.path().join(seq.file_name()), bytes).unwrap();
    }
    replay(dir.path())
}

#[test]
fn committed_seeds_are_real_segments_and_recover_as_named() {
    let seeds = seeds();
    let expected: BTreeMap<String, Vec<u8>> = seeds
        .iter()
        .map(|(name, (first, segments))| (name.to_string(), input(*first, segments)))
        .collect();
    let dir = seeds_dir();
    if std::env::var_os("TESSERA_REGEN_FUZZ_SEEDS").is_some() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &expected {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    let committed: BTreeMap<String, Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let entry = entry.unwrap();
            (
                entry.file_name().into_string().unwrap(),
                std::fs::read(entry.path()).unwrap(),
            )
        })
        .collect();
    assert!(
        committed == expected,
        "{} is stale; regenerate it with TESSERA_REGEN_FUZZ_SEEDS=1 cargo test -p tessera-wal \
         --test fuzz_seeds",
        dir.display()
    );

    let whole = recover(1, &seeds["log_three_segments"].1).unwrap();
    assert!(whole.scan.torn_tail.is_none());
    assert_eq!(whole.index.regions(), vec![RegionId(1), RegionId(2)]);
    let torn = recover(1, &seeds["torn_tail"].1).unwrap();
    assert_eq!(torn.scan.records + 1, whole.scan.records);
    assert!(torn.scan.torn_tail.is_some());
    for (name, segment) in [
        ("damaged_record_in_older_segment", SegmentSeq(1)),
        ("damaged_record_mid_newest_segment", SegmentSeq(3)),
        ("first_segment_missing", SegmentSeq(2)),
    ] {
        let (first, segments) = &seeds[name];
        match recover(*first, segments) {
            Err(WalError::Corruption { segment: at, .. }) => assert_eq!(at, segment, "{name}"),
            other => panic!("{name}: expected corruption in {segment}, got {other:?}"),
        }
    }
}
