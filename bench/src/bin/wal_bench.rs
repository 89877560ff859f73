//! `wal-bench`: durable appends per second and append-to-durable latency of the WAL's group
//! commit, next to the raw rate of one 4 KiB write + one fdatasync on the same disk.
//!
//! One glommio executor (one core). `--appenders` tasks each append one entry of
//! `--entry-bytes` to their own Region in a loop; every append returns only once durable.
//! The raw baseline writes 4 KiB blocks through a DMA file and fdatasyncs after each one.
//! Results are HDR histograms (p50/p99/p99.9/max), never a bare mean.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use glommio::io::OpenOptions;
use glommio::Placement;
use hdrhistogram::Histogram;
use tessera_wal::{Entry, EntryKind, LogBatch, LogIndex, RegionId, Term, Wal, WalOptions};

#[derive(Parser, Debug)]
#[command(about = "WAL group-commit benchmark")]
struct Args {
    /// Directory on the disk to measure (a temporary directory is made inside it).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Concurrent appenders, comma separated: one run per value.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    appenders: Vec<usize>,
    /// Payload bytes per entry.
    #[arg(long, default_value_t = 256)]
    entry_bytes: usize,
    /// Measured seconds per run (after one second of warm-up).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Busy-poll this many microseconds before the executor parks (0: park at once).
    #[arg(long, default_value_t = 0)]
    spin_us: u64,
    /// Raw 4 KiB write + fdatasync operations for the baseline.
    #[arg(long, default_value_t = 3000)]
    raw_syncs: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let spin = Duration::from_micros(args.spin_us);
    let executor = tessera_wal::executor::build_executor_spinning(
        "wal-bench",
        Placement::Fixed(0),
        2 << 20,
        spin,
    )
    .context("starting the executor")?;
    executor.run(async move { run(args).await })
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir_in(&args.dir).context("creating the benchmark directory")?;
    println!(
        "| appenders | raw syncs/s | raw p50 µs | appends/s | × raw | fsyncs/s | appends/fsync \
         | MB/s payload | p50 µs | p99 µs | p99.9 µs | max µs | p99 / raw p50 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, &appenders) in args.appenders.iter().enumerate() {
        // The raw baseline right before each run, so both see the same disk and load.
        // Overwriting blocks already written: fdatasync flushes data only, no extent
        // conversion, the fastest a single 4 KiB write + fdatasync gets (conservative).
        let raw = raw_fdatasync(&dir.path().join(format!("raw-{i}")), args.raw_syncs, true).await?;
        let raw_rate = args.raw_syncs as f64 / raw.elapsed.as_secs_f64();
        let raw_p50 = raw.latency.value_at_quantile(0.5);
        let wal_dir = dir.path().join(format!("wal-{i}"));
        let result = wal_run(&wal_dir, appenders, args.entry_bytes, args.seconds).await?;
        let seconds = result.elapsed.as_secs_f64();
        let appends_per_second = result.appends as f64 / seconds;
        let p99 = result.latency.value_at_quantile(0.99);
        println!(
            "| {appenders} | {raw_rate:.0} | {raw_p50} | {:.0} | {:.1} | {:.0} | {:.1} | {:.2} \
             | {} | {} | {} | {} | {:.2} |",
            appends_per_second,
            appends_per_second / raw_rate,
            result.flushes as f64 / seconds,
            result.appends as f64 / result.flushes.max(1) as f64,
            (result.appends * args.entry_bytes as u64) as f64 / seconds / 1e6,
            result.latency.value_at_quantile(0.5),
            p99,
            result.latency.value_at_quantile(0.999),
            result.latency.max(),
            p99 as f64 / raw_p50 as f64,
        );
    }
    Ok(())
}

struct RawResult {
    elapsed: Duration,
    latency: Histogram<u64>,
}

/// One 4 KiB O_DIRECT write then one fdatasync, `count` times, into a preallocated file
/// whose blocks were all written once before (`overwrite`) or never.
async fn raw_fdatasync(
    path: &std::path::Path,
    count: usize,
    overwrite: bool,
) -> anyhow::Result<RawResult> {
    let file = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .dma_open(path)
        .await
        .map_err(std::io::Error::from)
        .with_context(|| format!("creating {}", path.display()))?;
    file.pre_allocate((count as u64 + 1) * 4096, false)
        .await
        .map_err(std::io::Error::from)?;
    if overwrite {
        for i in 0..count {
            let mut buffer = file.alloc_dma_buffer(4096);
            buffer.as_bytes_mut().fill(0);
            file.write_at(buffer, i as u64 * 4096)
                .await
                .map_err(std::io::Error::from)?;
        }
        file.fdatasync().await.map_err(std::io::Error::from)?;
    }
    let mut latency = Histogram::<u64>::new(3)?;
    let start = Instant::now();
    for i in 0..count {
        let began = Instant::now();
        let mut buffer = file.alloc_dma_buffer(4096);
        buffer.as_bytes_mut().fill(i as u8);
        file.write_at(buffer, i as u64 * 4096)
            .await
            .map_err(std::io::Error::from)?;
        file.fdatasync().await.map_err(std::io::Error::from)?;
        latency.record(began.elapsed().as_micros() as u64)?;
    }
    let elapsed = start.elapsed();
    file.close().await.map_err(std::io::Error::from)?;
    Ok(RawResult { elapsed, latency })
}

struct WalResult {
    elapsed: Duration,
    appends: u64,
    flushes: u64,
    latency: Histogram<u64>,
}

struct Shared {
    measuring: bool,
    stop: bool,
    appends: u64,
    latency: Histogram<u64>,
}

async fn wal_run(
    dir: &std::path::Path,
    appenders: usize,
    entry_bytes: usize,
    seconds: u64,
) -> anyhow::Result<WalResult> {
    let options = WalOptions::new(dir);
    let (wal, _) = Wal::open(options).await?;
    let wal = Rc::new(wal);
    let shared = Rc::new(RefCell::new(Shared {
        measuring: false,
        stop: false,
        appends: 0,
        latency: Histogram::new(3)?,
    }));
    let data: tessera_wal::Payload = vec![7u8; entry_bytes].into();
    let mut tasks = Vec::new();
    for task in 0..appenders {
        let (wal, shared, data) = (wal.clone(), shared.clone(), data.clone());
        tasks.push(glommio::spawn_local(async move {
            let region = RegionId(task as u64 + 1);
            let mut index = 1u64;
            while !shared.borrow().stop {
                let mut batch = LogBatch::new();
                let entry = Entry {
                    term: Term(1),
                    index: LogIndex(index),
                    kind: EntryKind::Normal,
                    data: data.clone(),
                };
                batch.add_entries(region, &[entry]);
                let began = Instant::now();
                wal.append(batch).await.expect("append");
                let mut state = shared.borrow_mut();
                if state.measuring {
                    state.appends += 1;
                    let micros = began.elapsed().as_micros() as u64;
                    state.latency.record(micros).expect("latency in range");
                }
                index += 1;
            }
        }));
    }
    glommio::timer::sleep(Duration::from_secs(1)).await;
    let flushes_before = wal.stats().flushes;
    shared.borrow_mut().measuring = true;
    let start = Instant::now();
    glommio::timer::sleep(Duration::from_secs(seconds)).await;
    let elapsed = start.elapsed();
    let flushes = wal.stats().flushes - flushes_before;
    {
        let mut state = shared.borrow_mut();
        state.measuring = false;
        state.stop = true;
    }
    for task in tasks {
        task.await;
    }
    let state = shared.borrow();
    Ok(WalResult {
        elapsed,
        appends: state.appends,
        flushes,
        latency: state.latency.clone(),
    })
}
