//! `wal-bench`: durable appends per second and append-to-durable latency of the WAL's group
//! commit, next to the raw rate of one 4 KiB write + one fdatasync on the same disk.
//!
//! One glommio executor (one core). `--appenders` tasks each append one entry of
//! `--entry-bytes` to their own Region in a loop; every append returns only once durable.
//! The raw baseline is one 4 KiB O_DIRECT `pwrite` + one `fdatasync` as plain system calls
//! (see `raw_fdatasync`), into zero-filled blocks like the WAL's segments.
//! Results are HDR histograms (p50/p99/p99.9/max), never a bare mean.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
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
    /// Zero-fill segments ahead of need (`WalOptions::zero_fill_segments`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    zero_fill_segments: bool,
    /// Write-through group commits: segments opened `O_DSYNC`, one write per batch and no
    /// fdatasync (`WalOptions::write_through`); `false` gives write + fdatasync.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    write_through: bool,
    /// Group commits as blocking system calls on the core's thread instead of io_uring
    /// (`WalOptions::blocking_writes`).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    blocking_writes: bool,
    /// Seconds of appends before measuring (a fresh WAL's first segment is zero-filled in the
    /// background right after opening, which takes well under a second on the reference disk).
    #[arg(long, default_value_t = 2)]
    warmup_seconds: u64,
    /// Print this many of each run's slowest group commits, one line each (stages, batch,
    /// segment offset, spare progress).
    #[arg(long, default_value_t = 10)]
    slowest: usize,
    /// WAL segment size in bytes (`WalOptions::segment_size_bytes`); small segments rotate
    /// (and zero-fill spares) more often.
    #[arg(long)]
    segment_bytes: Option<u64>,
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
    let mut stage_rows = Vec::new();
    for (i, &appenders) in args.appenders.iter().enumerate() {
        // The raw baseline right before each run, so both see the same disk and load.
        let raw = raw_fdatasync(&dir.path().join(format!("raw-{i}")), args.raw_syncs)?;
        let raw_rate = args.raw_syncs as f64 / raw.elapsed.as_secs_f64();
        let raw_p50 = raw.latency.value_at_quantile(0.5);
        let wal_dir = dir.path().join(format!("wal-{i}"));
        let mut options = WalOptions::new(&wal_dir);
        options.zero_fill_segments = args.zero_fill_segments;
        options.write_through = args.write_through;
        options.blocking_writes = args.blocking_writes;
        if let Some(bytes) = args.segment_bytes {
            options.segment_size_bytes = bytes;
        }
        options.flush_timings_max = 1 << 16;
        let result = wal_run(options, appenders, &args).await?;
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
        stage_rows.push((appenders, raw_p50, result.stages));
    }
    for (appenders, raw_p50, stages) in &stage_rows {
        stages.print(*appenders, *raw_p50);
        stages.print_by_spare(
            args.segment_bytes
                .unwrap_or(WalOptions::new(".").segment_size_bytes),
        )?;
        stages.print_slowest(args.slowest);
    }
    Ok(())
}

/// Per-stage histograms of the measured group commits (`Wal::take_flush_timings`), µs.
struct Stages {
    rows: Vec<(&'static str, Histogram<u64>)>,
    /// Every measured flush, in order, with its total time.
    flushes: Vec<(Duration, tessera_wal::FlushTiming)>,
}

impl Stages {
    const NAMES: [&'static str; 9] = [
        "queued (oldest append)",
        "gather",
        "rotate (when it happened)",
        "build",
        "zero-fill wait",
        "write",
        "fdatasync",
        "finish",
        "flush total",
    ];

    fn new() -> anyhow::Result<Stages> {
        let mut rows = Vec::new();
        for name in Stages::NAMES {
            rows.push((name, Histogram::new_with_bounds(1, 60_000_000, 3)?));
        }
        Ok(Stages {
            rows,
            flushes: Vec::new(),
        })
    }

    fn record(&mut self, timing: &tessera_wal::FlushTiming) {
        let write = &timing.write;
        let total = timing.gather
            + timing.rotate
            + write.build
            + write.zero_fill_wait
            + write.write
            + write.sync
            + timing.finish;
        let values = [
            Some(timing.queued),
            Some(timing.gather),
            (!timing.rotate.is_zero()).then_some(timing.rotate),
            Some(write.build),
            Some(write.zero_fill_wait),
            Some(write.write),
            Some(write.sync),
            Some(timing.finish),
            Some(total),
        ];
        for ((_, histogram), value) in self.rows.iter_mut().zip(values) {
            if let Some(value) = value {
                histogram.saturating_record(value.as_micros().max(1) as u64);
            }
        }
        self.flushes.push((total, *timing));
    }

    /// Flush totals split by whether the spare segment was being zero-filled when the flush
    /// began (its zero writes share the disk, and each group commit's device flush), to tell
    /// how much of the tail the zero-fill makes.
    fn print_by_spare(&self, segment_bytes: u64) -> anyhow::Result<()> {
        let mut filling = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        let mut other = filling.clone();
        for (total, timing) in &self.flushes {
            let micros = total.as_micros().max(1) as u64;
            match timing.spare_zeroed_bytes {
                Some(zeroed) if zeroed < segment_bytes => filling.saturating_record(micros),
                _ => other.saturating_record(micros),
            }
        }
        println!();
        println!("| flush total, µs | flushes | p50 | p90 | p99 | p99.9 | max |");
        println!("|---|---|---|---|---|---|---|");
        for (name, histogram) in [
            ("while the spare is zero-filled", &filling),
            ("spare complete or none", &other),
        ] {
            print_histogram_row(name, histogram);
        }
        Ok(())
    }

    /// The `count` slowest flushes, slowest first: which flush (number in the run, segment
    /// and offset: a small offset is right after a rotation), how large its batch was, how far
    /// the spare's zero-fill had got, and where its time went (µs).
    fn print_slowest(&self, count: usize) {
        if count == 0 {
            return;
        }
        let mut order: Vec<usize> = (0..self.flushes.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(self.flushes[i].0));
        println!();
        println!("slowest flushes (µs; spare: MiB zeroed when the flush began)");
        println!();
        println!(
            "| # | total | rotate | zero-fill wait | write | fdatasync | finish | appends | bytes \
             | segment | offset | spare | previous flush total |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        let micros = |d: Duration| d.as_micros();
        for &i in order.iter().take(count) {
            let (total, t) = &self.flushes[i];
            let spare = t.spare_zeroed_bytes.map_or("-".to_string(), |b| {
                format!("{:.1}", b as f64 / (1 << 20) as f64)
            });
            let previous = i.checked_sub(1).map_or(0, |p| micros(self.flushes[p].0));
            println!(
                "| {i} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {spare} | {previous} |",
                micros(*total),
                micros(t.rotate),
                micros(t.write.zero_fill_wait),
                micros(t.write.write),
                micros(t.write.sync),
                micros(t.finish),
                t.appends,
                t.bytes,
                t.segment,
                t.offset,
            );
        }
    }

    fn print(&self, appenders: usize, raw_p50: u64) {
        println!();
        println!("{appenders} appenders: group commit stages, µs (raw fdatasync p50 {raw_p50} µs)");
        println!();
        println!("| stage | flushes | p50 | p90 | p99 | p99.9 | max |");
        println!("|---|---|---|---|---|---|---|");
        for (name, histogram) in &self.rows {
            print_histogram_row(name, histogram);
        }
    }
}

/// One table row: count, p50, p90, p99, p99.9, max.
fn print_histogram_row(name: &str, histogram: &Histogram<u64>) {
    println!(
        "| {name} | {} | {} | {} | {} | {} | {} |",
        histogram.len(),
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.9),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.max()
    );
}

struct RawResult {
    elapsed: Duration,
    latency: Histogram<u64>,
}

/// A 4 KiB-aligned 4 KiB buffer for O_DIRECT.
#[repr(C, align(4096))]
struct Block([u8; 4096]);

/// The raw baseline: `count` times one 4 KiB `pwrite` (O_DIRECT) then one `fdatasync`, as
/// plain blocking system calls on this thread, into a fresh block of a file whose blocks were
/// all written with zeros (and synced) first, like a zero-filled WAL segment.
///
/// Plain system calls rather than the executor's io_uring: io_uring runs an fdatasync on a
/// kernel worker thread that inherits this thread's CPU pinning, so a spinning executor
/// delays its own fdatasync until it parks or is preempted (about `--spin-us`), and a parked
/// one adds its wake-up. Neither is the disk; this measures the disk (and the file system's
/// data-only fdatasync) alone.
fn raw_fdatasync(path: &std::path::Path, count: usize) -> anyhow::Result<RawResult> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut block = Box::new(Block([0u8; 4096]));
    for i in 0..count {
        file.write_all_at(&block.0, i as u64 * 4096)
            .context("zero-filling the raw file")?;
    }
    file.sync_data().context("fdatasync")?;
    let mut latency = Histogram::<u64>::new(3)?;
    let start = Instant::now();
    for i in 0..count {
        block.0.fill(i as u8 | 1);
        let began = Instant::now();
        file.write_all_at(&block.0, i as u64 * 4096)
            .context("raw write")?;
        file.sync_data().context("fdatasync")?;
        latency.record(began.elapsed().as_micros() as u64)?;
    }
    let elapsed = start.elapsed();
    drop(file);
    std::fs::remove_file(path).context("deleting the raw file")?;
    Ok(RawResult { elapsed, latency })
}

struct WalResult {
    elapsed: Duration,
    appends: u64,
    flushes: u64,
    latency: Histogram<u64>,
    stages: Stages,
}

struct Shared {
    measuring: bool,
    stop: bool,
    appends: u64,
    latency: Histogram<u64>,
}

async fn wal_run(options: WalOptions, appenders: usize, args: &Args) -> anyhow::Result<WalResult> {
    let (entry_bytes, seconds) = (args.entry_bytes, args.seconds);
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
    glommio::timer::sleep(Duration::from_secs(args.warmup_seconds)).await;
    let flushes_before = wal.stats().flushes;
    wal.take_flush_timings();
    shared.borrow_mut().measuring = true;
    let start = Instant::now();
    let mut stages = Stages::new()?;
    let end = start + Duration::from_secs(seconds);
    // Drain the timings often enough that the WAL's bounded buffer never drops any.
    while Instant::now() < end {
        let left = end.saturating_duration_since(Instant::now());
        glommio::timer::sleep(left.min(Duration::from_millis(100))).await;
        for timing in wal.take_flush_timings() {
            stages.record(&timing);
        }
    }
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
        stages,
    })
}
