//! `transport-bench`: Raft message round trips between two cores of two nodes over the real
//! transport on loopback: `PeerSender` (bounded queue, one frame per flush) and `serve_peers`
//! (verified read loops), each side on its own glommio executor pinned to its own CPU.
//!
//! Node 1 keeps `--window` Heartbeats in flight to node 2; node 2's handler answers each with a
//! HeartbeatResponse carrying the same `read_context`; node 1 records the round trip in an HDR
//! histogram and sends the next one. So a round trip is: queue, encode one batch, write,
//! read, verify, decode, hand to the handler, and the same back. Messages per second counts
//! both directions.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use glommio::Placement;
use hdrhistogram::Histogram;
use tessera_core::{LogIndex, Message, MessageBody, NodeId, RegionId, Term};
use tessera_transport::net::{bind, serve_peers, PeerSender, TransportConfig};
use tessera_transport::{ClusterId, CoreId};

#[derive(Parser, Debug)]
#[command(about = "Transport round trips between two cores on loopback")]
struct Args {
    /// Heartbeats in flight at once, comma separated: one run per value.
    #[arg(long, value_delimiter = ',', default_value = "1,64,1024")]
    window: Vec<usize>,
    /// Measured seconds per run (after half a second of warm-up).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Peer port of node 1; node 2 listens on the next one.
    #[arg(long, default_value_t = 27900)]
    port: u16,
    /// Busy-poll this many microseconds before an executor parks.
    #[arg(long, default_value_t = 0)]
    spin_us: u64,
}

const CLUSTER: ClusterId = ClusterId(7);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!("| window | round trips/s | messages/s | p50 µs | p99 µs | p99.9 µs | max µs |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (i, &window) in args.window.iter().enumerate() {
        // Fresh ports per run, so no connection outlives its run.
        let base = args.port + 2 * i as u16;
        let (a, b) = (addr(base), addr(base + 1));
        let stop = Arc::new(AtomicBool::new(false));
        let spin = Duration::from_micros(args.spin_us);
        let echo = {
            let stop = stop.clone();
            std::thread::spawn(move || run_echo(b, a, spin, stop))
        };
        let seconds = args.seconds;
        let result = std::thread::spawn(move || run_pinger(a, b, spin, window, seconds))
            .join()
            .expect("the pinger panicked");
        stop.store(true, Ordering::Relaxed);
        echo.join().expect("the echo side panicked")?;
        let (histogram, elapsed) = result?;
        let round_trips = histogram.len() as f64 / elapsed.as_secs_f64();
        println!(
            "| {window} | {round_trips:.0} | {:.0} | {} | {} | {} | {} |",
            round_trips * 2.0,
            histogram.value_at_quantile(0.5),
            histogram.value_at_quantile(0.99),
            histogram.value_at_quantile(0.999),
            histogram.max()
        );
    }
    Ok(())
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn heartbeat(from: u64, to: u64, body: MessageBody) -> Message {
    Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(1),
        body,
    }
}

/// Node 2 on CPU 1: answers every Heartbeat until `stop`.
fn run_echo(
    listen: SocketAddr,
    pinger: SocketAddr,
    spin: Duration,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let executor =
        tessera_wal::executor::build_executor_spinning("echo", Placement::Fixed(1), 1 << 20, spin)
            .context("starting the echo executor")?;
    executor.run(async move {
        let config = Rc::new(TransportConfig::new(CLUSTER, NodeId(2), CoreId(0)));
        let listener = bind(listen).context("binding the echo listener")?;
        let sender = Rc::new(PeerSender::spawn(
            config.clone(),
            NodeId(1),
            CoreId(0),
            pinger,
        ));
        let reply = sender.clone();
        let handler = Rc::new(move |_header, messages: Vec<(RegionId, Message)>| {
            for (region, message) in messages {
                if let MessageBody::Heartbeat { read_context, .. } = message.body {
                    let body = MessageBody::HeartbeatResponse { read_context };
                    let _ = reply.send(region, heartbeat(2, 1, body));
                }
            }
        });
        let server = glommio::spawn_local(serve_peers(listener, config, handler));
        while !stop.load(Ordering::Relaxed) {
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        drop(server);
        anyhow::Ok(())
    })
}

/// Shared by node 1's handler and its main task.
struct PingState {
    sent_at: HashMap<u64, Instant>,
    next_context: u64,
    measure_from: Instant,
    stop_at: Instant,
    histogram: Histogram<u64>,
}

/// Node 1 on CPU 0: keeps `window` Heartbeats in flight for `seconds`; returns round trips (µs).
fn run_pinger(
    listen: SocketAddr,
    echo: SocketAddr,
    spin: Duration,
    window: usize,
    seconds: f64,
) -> anyhow::Result<(Histogram<u64>, Duration)> {
    let executor =
        tessera_wal::executor::build_executor_spinning("ping", Placement::Fixed(0), 1 << 20, spin)
            .context("starting the pinger executor")?;
    executor.run(async move {
        let config = Rc::new(TransportConfig::new(CLUSTER, NodeId(1), CoreId(0)));
        let listener = bind(listen).context("binding the pinger listener")?;
        let sender = Rc::new(PeerSender::spawn(
            config.clone(),
            NodeId(2),
            CoreId(0),
            echo,
        ));
        let now = Instant::now();
        let state = Rc::new(RefCell::new(PingState {
            sent_at: HashMap::new(),
            next_context: 1,
            measure_from: now + Duration::from_millis(500),
            stop_at: now + Duration::from_millis(500) + Duration::from_secs_f64(seconds),
            histogram: Histogram::new(3).expect("valid significant digits"),
        }));
        let send_one = {
            let (state, sender) = (state.clone(), sender.clone());
            move || {
                let mut s = state.borrow_mut();
                let context = s.next_context;
                s.next_context += 1;
                s.sent_at.insert(context, Instant::now());
                let body = MessageBody::Heartbeat {
                    commit: LogIndex(0),
                    read_context: context,
                };
                sender
                    .send(RegionId(1), heartbeat(1, 2, body))
                    .expect("the window stays below the queue bound");
            }
        };
        let handler = {
            let (state, send_one) = (state.clone(), send_one.clone());
            Rc::new(move |_header, messages: Vec<(RegionId, Message)>| {
                for (_, message) in messages {
                    let MessageBody::HeartbeatResponse { read_context } = message.body else {
                        continue;
                    };
                    let now = Instant::now();
                    let more = {
                        let mut s = state.borrow_mut();
                        if let Some(sent) = s.sent_at.remove(&read_context) {
                            if sent >= s.measure_from {
                                let us = now.duration_since(sent).as_micros() as u64;
                                s.histogram.record(us).expect("auto-resizing histogram");
                            }
                        }
                        now < s.stop_at
                    };
                    if more {
                        send_one();
                    }
                }
            })
        };
        let server = glommio::spawn_local(serve_peers(listener, config, handler));
        while !sender.is_connected() {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        for _ in 0..window {
            send_one();
        }
        loop {
            glommio::timer::sleep(Duration::from_millis(5)).await;
            let s = state.borrow();
            if Instant::now() >= s.stop_at
                && (s.sent_at.is_empty() || Instant::now() > s.stop_at + Duration::from_secs(5))
            {
                break;
            }
        }
        drop(server);
        let s = state.borrow();
        let elapsed = s.stop_at.saturating_duration_since(s.measure_from);
        anyhow::Ok((s.histogram.clone(), elapsed))
    })
}
