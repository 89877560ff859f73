//! `MemLog`, the in-memory WAL simulations use, writes the very bytes the file WAL writes
//! (segment by segment, checkpoints and purges included) and recovers from torn bytes as
//! `Wal::open` does.

mod common;

use common::{entry, options, run};
use tessera_core::rng::SplitMix64;
use tessera_wal::scan::list_segments;
use tessera_wal::{HardState, LogBatch, LogIndex, LogRead, MemLog, RegionId, Term, Wal};

const SEGMENT_BYTES: u64 = 64 << 10;

/// Appends, per Region, runs of entries with occasional conflicting suffixes, hard states and
/// compactions that let old segments be purged.
fn batches(seed: u64, count: usize) -> Vec<LogBatch> {
    let mut rng = SplitMix64::new(seed);
    let mut last = [0u64; 3];
    let mut term = [1u64; 3];
    let mut mark = [0u64; 3];
    let mut out = Vec::new();
    for _ in 0..count {
        let mut batch = LogBatch::new();
        for r in 0..3 {
            if rng.range(0, 3) == 0 {
                continue;
            }
            let region = RegionId(r as u64 + 1);
            if rng.range(0, 10) == 0 && last[r] > mark[r] + 1 {
                last[r] = rng.range(mark[r] + 1, last[r] + 1) - 1; // a conflicting suffix follows
                term[r] += 1;
            }
            let n = rng.range(1, 6);
            let entries: Vec<_> = (1..=n)
                .map(|k| entry(region, last[r] + k, term[r], rng.range(10, 400) as usize))
                .collect();
            last[r] += n;
            batch.add_entries(region, &entries);
            batch.set_hard_state(
                region,
                HardState {
                    term: Term(term[r]),
                    vote: None,
                    commit: LogIndex(last[r]),
                },
            );
            if rng.range(0, 8) == 0 && last[r] > mark[r] + 4 {
                mark[r] = last[r] - 2;
                let mut compact = LogBatch::new();
                compact.compact_to(region, LogIndex(mark[r]), Term(term[r]));
                out.push(std::mem::replace(&mut batch, compact));
            }
        }
        out.push(batch);
    }
    out
}

fn file_segments(dir: &std::path::Path) -> Vec<(tessera_wal::SegmentSeq, Vec<u8>)> {
    list_segments(dir)
        .unwrap()
        .into_iter()
        .map(|segment| (segment.seq, std::fs::read(&segment.path).unwrap()))
        .collect()
}

fn mem_segments(log: &MemLog) -> Vec<(tessera_wal::SegmentSeq, Vec<u8>)> {
    log.segments()
        .map(|(seq, bytes)| (seq, bytes.to_vec()))
        .collect()
}

fn assert_same_reads(wal: &Wal, log: &MemLog) {
    assert_eq!(wal.regions(), log.regions());
    for region in wal.regions() {
        let first = wal.first_index(region).unwrap();
        let last = wal.last_index(region).unwrap();
        assert_eq!(LogRead::first_index(log, region).unwrap(), first);
        assert_eq!(LogRead::last_index(log, region).unwrap(), last);
        assert_eq!(
            LogRead::hard_state(log, region).unwrap(),
            wal.hard_state(region).unwrap()
        );
        assert_eq!(
            LogRead::term(log, region, first.prev()).unwrap(),
            wal.term(region, first.prev()).unwrap()
        );
        assert_eq!(
            LogRead::entries(log, region, first, last.next(), usize::MAX).unwrap(),
            wal.entries(region, first, last.next(), usize::MAX).unwrap()
        );
    }
}

#[test]
fn the_memory_log_writes_the_bytes_the_file_wal_writes_and_recovers_the_same_way() {
    for seed in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let batches = batches(seed, 300);
        let mut log = MemLog::create(SEGMENT_BYTES);
        let mut rotations = 0;
        for batch in &batches {
            rotations += u32::from(log.append(batch).is_some_and(|a| a.rotated));
        }
        assert!(
            rotations >= 2,
            "seed {seed}: the batches must rotate segments"
        );
        let options = options(dir.path());
        assert_eq!(options.segment_size_bytes, SEGMENT_BYTES);
        let expected = mem_segments(&log);
        run(async {
            let (wal, _) = Wal::open(options.clone()).await.unwrap();
            for batch in batches {
                wal.append(batch).await.unwrap();
            }
            assert_same_reads(&wal, &log);
            wal.close().await.unwrap();
        });
        let on_disk = file_segments(dir.path());
        assert_eq!(on_disk.len(), expected.len(), "seed {seed}: live segments");
        assert!(
            on_disk.first().unwrap().0 > tessera_wal::SegmentSeq(1),
            "purged"
        );
        for ((seq, file), (mem_seq, mem)) in on_disk.iter().zip(&expected) {
            // Files are preallocated with zeros; the in-memory log holds no padding.
            assert_eq!(seq, mem_seq);
            assert!(
                file[..mem.len()] == mem[..] && file[mem.len()..].iter().all(|&b| b == 0),
                "seed {seed}: segment {seq} bytes differ"
            );
        }

        // Tear the last record at a random byte: both recover to the same log.
        let mut rng = SplitMix64::new(seed);
        let mut torn = expected.clone();
        let (newest_seq, newest) = torn.last_mut().unwrap();
        let (_, end) = log.end();
        let cut = end - rng.range(1, 60);
        newest.truncate(cut as usize);
        let path = dir.path().join(newest_seq.file_name());
        let mut file = std::fs::read(&path).unwrap();
        file[cut as usize..end as usize].fill(0);
        std::fs::write(&path, file).unwrap();
        let (recovered, torn_tail) = MemLog::recover(SEGMENT_BYTES, torn).unwrap();
        assert!(torn_tail.is_some(), "seed {seed}: the tear is reported");
        run(async {
            let (wal, report) = Wal::open(options).await.unwrap();
            assert_eq!(
                report.torn_tail.map(|t| t.offset),
                recovered_end(&recovered)
            );
            assert_same_reads(&wal, &recovered);
            wal.close().await.unwrap();
        });
    }
}

fn recovered_end(log: &MemLog) -> Option<u64> {
    Some(log.end().1)
}

#[test]
fn damage_before_the_last_record_is_corruption_not_a_torn_tail() {
    let mut log = MemLog::create(SEGMENT_BYTES);
    for batch in batches(7, 20) {
        log.append(&batch);
    }
    let mut segments = mem_segments(&log);
    let (_, newest) = segments.last_mut().unwrap();
    newest[100] ^= 0xff;
    let error = MemLog::recover(SEGMENT_BYTES, segments).err().unwrap();
    assert!(
        matches!(error, tessera_wal::WalError::Corruption { .. }),
        "{error}"
    );
}
