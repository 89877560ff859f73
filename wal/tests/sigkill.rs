//! A writer process killed with SIGKILL at random moments loses no acknowledged append.
//!
//! The parent re-runs this test binary as the child (`TESSERA_WAL_SIGKILL_CHILD` names the WAL
//! directory). The child opens the WAL, continues every Region's log after its recovered last
//! index, and prints `ack <region> <index> <term>` after each append returns (durable). The
//! parent kills it after a random number of acknowledgements plus a random delay, many
//! times, then recovers and checks every acknowledged entry is present and intact.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{entry, options, run};
use tessera_wal::{HardState, LogBatch, LogIndex, RegionId, Term, Wal};

const CHILD_ENV: &str = "TESSERA_WAL_SIGKILL_CHILD";
const GENERATION_ENV: &str = "TESSERA_WAL_SIGKILL_GENERATION";
const REGIONS: u64 = 8;
const ENTRY_LEN: usize = 200;

/// The child's body: appenders for `REGIONS` Regions until killed.
fn child_main(dir: &str, generation: u64) {
    let options = options(std::path::Path::new(dir));
    run(async move {
        let (wal, _) = Wal::open(options).await.expect("child recovers");
        let wal = std::rc::Rc::new(wal);
        let mut tasks = Vec::new();
        for region in 1..=REGIONS {
            let wal = wal.clone();
            tasks.push(glommio::spawn_local(async move {
                let region = RegionId(region);
                let mut next = wal.last_index(region).map_or(1, |last| last.0 + 1);
                loop {
                    let mut batch = LogBatch::new();
                    batch.add_entries(region, &[entry(region, next, generation, ENTRY_LEN)]);
                    let hard_state = HardState {
                        term: Term(generation),
                        vote: None,
                        commit: LogIndex(next - 1),
                    };
                    batch.set_hard_state(region, hard_state);
                    wal.append(batch).await.expect("append");
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {} {} {}", region.0, next, generation).unwrap();
                    out.flush().unwrap();
                    next += 1;
                }
            }));
        }
        for task in tasks {
            task.await;
        }
    });
}

#[test]
fn sigkill_child() {
    // Only does something when re-run by the parent test below.
    if let (Ok(dir), Ok(generation)) = (std::env::var(CHILD_ENV), std::env::var(GENERATION_ENV)) {
        child_main(&dir, generation.parse().unwrap());
    }
}

/// A tiny deterministic generator, so a failure can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

#[test]
fn every_acknowledged_append_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let seed = 0x9e37_79b9_7f4a_7c15u64 ^ std::process::id() as u64;
    let mut rng = Rng(seed);
    let mut acked: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for generation in 1..=25u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sigkill_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env(GENERATION_ENV, generation.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let wanted = 1 + rng.below(300);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = 0;
        while seen < wanted {
            assert!(
                Instant::now() < deadline,
                "seed {seed}: child made no progress"
            );
            let Some(line) = lines.next() else { break };
            if record_ack(&line.unwrap(), &mut acked) {
                seen += 1;
            }
        }
        std::thread::sleep(Duration::from_micros(rng.below(2000)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Acknowledgements already in the pipe were made before the kill.
        for line in lines {
            record_ack(&line.unwrap(), &mut acked);
        }
    }
    let options = options(dir.path());
    let total = acked.len();
    run(async move {
        let (wal, _) = Wal::open(options).await.unwrap();
        for (&(region, index), &term) in &acked {
            let region = RegionId(region);
            let stored = wal
                .entries(region, LogIndex(index), LogIndex(index + 1), usize::MAX)
                .unwrap_or_else(|e| panic!("seed {seed}: acked {region} {index}: {e}"));
            assert_eq!(
                stored,
                vec![entry(region, index, term, ENTRY_LEN)],
                "seed {seed}"
            );
        }
        wal.close().await.unwrap();
    });
    assert!(total > 12, "the children acknowledged appends");
}

fn record_ack(line: &str, acked: &mut BTreeMap<(u64, u64), u64>) -> bool {
    let Some(rest) = line.strip_prefix("ack ") else {
        return false;
    };
    let numbers: Vec<u64> = rest.split(' ').map(|n| n.parse().unwrap()).collect();
    acked.insert((numbers[0], numbers[1]), numbers[2]);
    true
}
