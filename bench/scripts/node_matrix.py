#!/usr/bin/env python3
"""Runs the node benchmark matrix of docs/benchmarks.md with tessera-bench and prints the
Markdown tables: for a single node and a 3-node cluster on loopback, writes and strong reads
at concurrency 1, 16, 64 and 256, then one open-loop write run per topology at half the
best closed-loop write rate measured in the same pass.

    cargo build --release -p tessera-node -p tessera-bench
    python3 bench/scripts/node_matrix.py [--duration-secs 10] [--warmup-secs 2]
        [--topologies single,cluster3] [--node-config FILE] [--spawn-placement auto|os|leader-apart]
        [--out DIR]

Each row is one fresh cluster started by `tessera-bench --spawn`; every JSON summary is kept
in --out (default target/node-matrix) with the exact command in its "config.command".

The write rows at concurrency 1 are run --repeats times (default 5), spread between the other
rows of their topology: this VM's speed drifts by about 0.05 ms within the hour, so one
10-second run is one sample of that spread. Their row shows the run with the median p50 (every
figure of the row from that one run) and a line below the table lists every run's p50.
"""

import argparse
import json
import os
import subprocess
import sys

# (connections, in flight) for concurrency 1, 16, 64, 256.
SHAPES = [(1, 1), (16, 1), (16, 4), (16, 16)]
BENCH = os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "tessera-bench")


def run(args, topology, op, connections, in_flight, rate=None, repeat=None):
    mix = "100:0:0" if op == "strong read" else "0:100:0"
    command = [
        BENCH, "--spawn", topology,
        "--connections", str(connections), "--in-flight", str(in_flight),
        "--mix", mix, "--keys", "10000",
        "--duration-secs", str(args.duration_secs), "--warmup-secs", str(args.warmup_secs),
        "--json",
    ]
    if op == "strong read":
        command.append("--preload")
    if rate is not None:
        command += ["--rate", str(rate)]
    if args.node_config:
        command += ["--node-config", args.node_config]
    if args.spawn_placement:
        command += ["--spawn-placement", args.spawn_placement]
    print("running: " + " ".join(command), file=sys.stderr)
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    summary = json.loads(result.stdout)
    name = f"{topology}-{op.replace(' ', '-')}-{connections}x{in_flight}"
    if rate is not None:
        name += f"-rate{rate}"
    if repeat is not None:
        name += f"-run{repeat}"
    with open(os.path.join(args.out, name + ".json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def row(label, connections, in_flight, summary):
    kind = "all"
    latency = summary["ops"][kind]["latency"]
    errors = summary["errors"]
    error_count = sum(errors.values()) if isinstance(errors, dict) else errors
    config = summary["config"]
    cpu = config["cpu_percent_of_one_core"]
    nodes = "/".join(str(round(n)) for n in cpu["nodes"])
    return (
        f"| {label} | {connections * in_flight} ({connections}×{in_flight}) "
        f"| {round(summary['ops_per_second']):,} "
        f"| {latency['p50_ms']:.3f} | {latency['p99_ms']:.3f} | {latency['p99.9_ms']:.3f} "
        f"| {latency['max_ms']:.3f} | {error_count} | {config['load_average_1m_at_end']} "
        f"| {round(cpu['generator'])} / {nodes} |"
    )


HEADER = (
    "| {first} | concurrency (conn × in flight) | ops/s | p50 ms | p99 ms | p99.9 ms | max ms "
    "| errors | load avg | CPU % generator / nodes |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--|"
)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration-secs", type=int, default=10)
    parser.add_argument("--warmup-secs", type=int, default=2)
    parser.add_argument("--topologies", default="single,cluster3")
    parser.add_argument("--node-config")
    parser.add_argument("--spawn-placement", help="passed to tessera-bench (default: its own)")
    parser.add_argument("--out", default="target/node-matrix")
    parser.add_argument(
        "--repeats", type=int, default=5,
        help="runs of each topology's concurrency-1 write row, spread between its other rows")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    peaks = {}
    for topology in args.topologies.split(","):
        rows = [(op, shape) for op in ["write", "strong read"] for shape in SHAPES]
        repeated = ("write", SHAPES[0])
        # The first run of the repeated row in its place, the others after evenly spaced
        # later rows, the last after the topology's last row.
        others = len(rows) - 1
        extra = [round((i + 1) * others / (args.repeats - 1)) for i in range(args.repeats - 1)]
        schedule = []
        for position, key in enumerate(rows):
            schedule.append((key, 1 if key == repeated else None))
            for _ in range(extra.count(position)):
                schedule.append((repeated, 1 + sum(1 for s in schedule if s[0] == repeated)))
        results = {}
        placements = []
        for (op, (connections, in_flight)), repeat in schedule:
            summary = run(args, topology, op, connections, in_flight,
                          repeat=repeat if args.repeats > 1 else None)
            results.setdefault((op, (connections, in_flight)), []).append(summary)
            if op == "write":
                peaks[topology] = max(peaks.get(topology, 0), summary["ops_per_second"])
            placement = summary["config"].get("placement") or "the OS's"
            if placement not in placements:
                placements.append(placement)
        print(f"\n##### {topology}\n")
        print(HEADER.format(first="operation"))
        for op, (connections, in_flight) in rows:
            runs = results[(op, (connections, in_flight))]
            p50 = lambda s: s["ops"]["all"]["latency"]["p50_ms"]
            median = sorted(runs, key=p50)[len(runs) // 2]
            print(row(op, connections, in_flight, median), flush=True)
        runs = results[repeated]
        if len(runs) > 1:
            p50s = ", ".join(f"{s['ops']['all']['latency']['p50_ms']:.3f}" for s in runs)
            print(f"\nWrites at concurrency 1, the row is the median of {len(runs)} runs; "
                  f"p50 of each run in order (ms): {p50s}")
        print("\nNode placement: " + "; ".join(placements))
    print("\n##### Open loop at half the measured write peak\n")
    print(HEADER.format(first="setup, target rate"))
    for topology, peak in peaks.items():
        rate = int(peak / 2)
        summary = run(args, topology, "write", 16, 16, rate=rate)
        print(row(f"{topology} write, {rate}/s", 16, 16, summary), flush=True)


if __name__ == "__main__":
    main()
