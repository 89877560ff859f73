//! `glommio-floor`: `bench/scripts/write_path_floor.c` on glommio (docs/benchmarks.md,
//! pass L). The same 3-node concurrency-1 write with nothing of Tessera's on the path: a
//! blocking client sends 300 bytes to a leader, which sends them on to two followers and
//! writes its own 4 KiB block (a DMA file opened `O_DSYNC`, on glommio's main ring as the WAL
//! arranges it, in an executor built as a node's core is); each follower writes its block and
//! acknowledges; the leader answers once its write is done and one follower acknowledged.
//! What Tessera's write costs above this is its own; what this costs above the C floor is
//! the runtime's (its wake-ups and per-turn system calls).
//!
//! ```sh
//! cargo build --release -p tessera-bench --bin glommio-floor
//! target/release/glommio-floor --dir /tmp --port 34100 --round-trips 10000
//! target/release/glommio-floor --dir /tmp --port 34100 --round-trips 10000 --no-disk
//! ```

use std::cell::Cell;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::io::{DmaFile, OpenOptions};
use glommio::net::{TcpListener, TcpStream};
use glommio::Placement;

const MESSAGE: usize = 300;
const BLOCK: usize = 4096;
const FILE_BLOCKS: u64 = 256;

#[derive(Parser, Debug)]
#[command(
    name = "glommio-floor",
    about = "A 3-node concurrency-1 write on bare glommio"
)]
struct Args {
    /// Where the three 1 MiB files go (the data disk).
    #[arg(long, default_value = "/tmp")]
    dir: PathBuf,
    /// The leader's port; the followers use the next two.
    #[arg(long, default_value_t = 34100)]
    port: u16,
    /// Round trips; the first 10 % are warm-up.
    #[arg(long, default_value_t = 10_000)]
    round_trips: usize,
    /// No writes: the four hops alone.
    #[arg(long)]
    no_disk: bool,
    /// Internal: run as the leader or a follower (1 or 2).
    #[arg(long, hide = true)]
    role: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.role.as_deref() {
        Some("leader") => run_executor(leader(args.port, args.dir.clone(), !args.no_disk)),
        Some(follower) => {
            let index: u16 = follower.parse().context("--role")?;
            run_executor(follower_loop(
                args.port + index,
                args.dir.clone(),
                !args.no_disk,
            ))
        }
        None => client(&args),
    }
}

fn run_executor(
    task: impl std::future::Future<Output = anyhow::Result<()>> + 'static,
) -> anyhow::Result<()> {
    let executor = tessera_wal::executor::build_executor(
        "glommio-floor",
        Placement::Unbound,
        tessera_wal::executor::IO_MEMORY_BYTES_DEFAULT,
    )?;
    executor.run(task)
}

/// Starts the three processes, measures the round trips, stops them.
fn client(args: &Args) -> anyhow::Result<()> {
    let me = std::env::current_exe()?;
    let spawn = |role: &str| -> anyhow::Result<Child> {
        let mut command = Command::new(&me);
        command
            .arg("--role")
            .arg(role)
            .arg("--port")
            .arg(args.port.to_string())
            .arg("--dir")
            .arg(&args.dir);
        if args.no_disk {
            command.arg("--no-disk");
        }
        Ok(command.spawn()?)
    };
    let mut children = vec![spawn("1")?, spawn("2")?, spawn("leader")?];
    let result = measure(args);
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut latencies = result?;
    let warm = latencies.len() / 10;
    let mut kept = latencies.split_off(warm);
    kept.sort_unstable();
    let at = |q: f64| kept[((kept.len() as f64 * q) as usize).min(kept.len() - 1)];
    println!(
        "glommio-floor {}: {} round trips, p50 {} p90 {} p99 {} us",
        if args.no_disk { "nodisk" } else { "dsync" },
        kept.len(),
        at(0.5),
        at(0.9),
        at(0.99)
    );
    Ok(())
}

fn measure(args: &Args) -> anyhow::Result<Vec<u64>> {
    let started = Instant::now();
    let mut stream = loop {
        match std::net::TcpStream::connect(("127.0.0.1", args.port)) {
            Ok(stream) => break stream,
            Err(_) if started.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(error) => return Err(error).context("connecting to the leader"),
        }
    };
    stream.set_nodelay(true)?;
    let mut message = [1u8; MESSAGE];
    let mut latencies = Vec::with_capacity(args.round_trips.max(10));
    for _ in 0..args.round_trips.max(10) {
        let sent = Instant::now();
        stream.write_all(&message)?;
        stream.read_exact(&mut message)?;
        latencies.push(sent.elapsed().as_micros() as u64);
    }
    Ok(latencies)
}

/// A 1 MiB file of written blocks in a directory of its own under `dir`, opened `O_DSYNC` for
/// DMA overwrites on glommio's main ring (`tessera_wal::io_poll`), removed at once.
async fn wal_file(dir: &Path, name: &str) -> anyhow::Result<DmaFile> {
    let own = dir.join(format!("glommio-floor-{name}-{}", std::process::id()));
    std::fs::create_dir(&own).with_context(|| format!("creating {}", own.display()))?;
    tessera_wal::io_poll::prefer_interrupts(&own).await?;
    let path = own.join("wal");
    std::fs::write(&path, vec![0u8; BLOCK * FILE_BLOCKS as usize])?;
    std::fs::File::open(&path)?.sync_all()?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DSYNC)
        .dma_open(&path)
        .await
        .map_err(std::io::Error::from)?;
    std::fs::remove_file(&path)?;
    std::fs::remove_dir(&own)?;
    Ok(file)
}

async fn durable_write(file: Option<&DmaFile>, round: u64) -> anyhow::Result<()> {
    if let Some(file) = file {
        let mut buffer = file.alloc_dma_buffer(BLOCK);
        buffer.as_bytes_mut().fill(7);
        file.write_at(buffer, (round % FILE_BLOCKS) * BLOCK as u64)
            .await
            .map_err(std::io::Error::from)?;
    }
    Ok(())
}

async fn accept_one(port: u16) -> anyhow::Result<TcpStream> {
    let listener = TcpListener::bind(("127.0.0.1", port)).map_err(std::io::Error::from)?;
    let stream = listener.accept().await.map_err(std::io::Error::from)?;
    stream.set_nodelay(true).map_err(std::io::Error::from)?;
    Ok(stream)
}

async fn follower_loop(port: u16, dir: PathBuf, disk: bool) -> anyhow::Result<()> {
    let mut stream = accept_one(port).await?;
    let file = match disk {
        true => Some(wal_file(&dir, &format!("f{port}")).await?),
        false => None,
    };
    let mut message = [0u8; MESSAGE];
    for round in 0.. {
        if stream.read_exact(&mut message).await.is_err() {
            break;
        }
        durable_write(file.as_ref(), round).await?;
        stream.write_all(&message).await?;
    }
    Ok(())
}

async fn leader(port: u16, dir: PathBuf, disk: bool) -> anyhow::Result<()> {
    let mut followers = Vec::new();
    for index in 1..=2 {
        let started = Instant::now();
        let stream = loop {
            match TcpStream::connect(("127.0.0.1", port + index)).await {
                Ok(stream) => break stream,
                Err(_) if started.elapsed() < Duration::from_secs(10) => {
                    glommio::timer::sleep(Duration::from_millis(1)).await
                }
                Err(error) => {
                    return Err(std::io::Error::from(error)).context("connecting to a follower")
                }
            }
        };
        stream.set_nodelay(true).map_err(std::io::Error::from)?;
        followers.push(stream);
    }
    let mut client = accept_one(port).await?;
    let file = match disk {
        true => Some(wal_file(&dir, "leader").await?),
        false => None,
    };
    // The highest round any follower acknowledged, and a wake-up for each new one.
    let acknowledged = Rc::new(Cell::new(0u64));
    let acked = Rc::new(glommio::sync::Semaphore::new(0));
    let mut senders = Vec::new();
    for stream in followers {
        let (mut reader, writer) = futures_lite::io::split(stream);
        senders.push(writer);
        let (acknowledged, acked) = (acknowledged.clone(), acked.clone());
        glommio::spawn_local(async move {
            let mut ack = [0u8; MESSAGE];
            let mut rounds = 0u64;
            while reader.read_exact(&mut ack).await.is_ok() {
                rounds += 1;
                if rounds > acknowledged.get() {
                    acknowledged.set(rounds);
                    acked.signal(1);
                }
            }
        })
        .detach();
    }
    let mut message = [0u8; MESSAGE];
    for round in 1.. {
        if client.read_exact(&mut message).await.is_err() {
            break;
        }
        for sender in &mut senders {
            sender.write_all(&message).await?;
        }
        durable_write(file.as_ref(), round).await?;
        while acknowledged.get() < round {
            acked.acquire(1).await.map_err(std::io::Error::from)?;
        }
        client.write_all(&message).await?;
    }
    Ok(())
}
