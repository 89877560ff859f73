#!/usr/bin/env python3
"""Runs the node benchmark matrix of docs/benchmarks.md with tessera-bench and prints the
Markdown tables: for a single node and a 3-node cluster on loopback, writes and strong reads
at concurrency 1, 16, 64 and 256, then one open-loop write run per topology at half the
best closed-loop write rate measured in the same pass.

    cargo build --release -p tessera-node -p tessera-bench
    python3 bench/scripts/node_matrix.py [--duration-secs 10] [--warmup-secs 2]
        [--topologies single,cluster3] [--node-config FILE] [--spawn-placement auto|os|leader-apart]
        [--out DIR] [--repeats N] [--floors | --no-floors]

Each row is one fresh cluster started by `tessera-bench --spawn`; every JSON summary is kept
in --out (default target/node-matrix) with the exact command in its "config.command".

The write rows at concurrency 1 are run --repeats times (default 5), spread between the other
rows of their topology: this VM's speed drifts by about 0.05 ms within the hour, so one
10-second run is one sample of that spread. Their row shows the run with the median p50 (every
figure of the row from that one run) and a line below the table lists every run's p50.

With --floors (the default when a C compiler is found), every 3-node concurrency-1 write run
is followed at once by the two floors of that write (docs/benchmarks.md, pass L): the same
four hops and three `O_DSYNC` writes with blocking system calls
(bench/scripts/write_path_floor.c) and on bare glommio (`glommio-floor`). A line below the
table gives each run's p50 beside the floors measured right after it and the ratio
to the blocking floor: what the machine itself allowed in that minute, as this VM's speed
drifts by tens of percent between hours and days.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys

# (connections, in flight) for concurrency 1, 16, 64, 256.
SHAPES = [(1, 1), (16, 1), (16, 4), (16, 16)]
RELEASE = os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release")
BENCH = os.path.join(RELEASE, "tessera-bench")
GLOMMIO_FLOOR = os.path.join(RELEASE, "glommio-floor")
C_FLOOR_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "write_path_floor.c")
FLOOR_ROUND_TRIPS = 10_000
FLOOR_P50 = re.compile(r"p50 (\d+)")


def build_c_floor(out):
    """Compiles write_path_floor.c into `out`; None when no C compiler is found."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        return None
    binary = os.path.join(out, "write_path_floor")
    subprocess.run([compiler, "-O2", "-o", binary, C_FLOOR_SOURCE], check=True)
    return binary


def floor_p50_ms(command):
    """Runs one floor program and returns its round trip's p50 in milliseconds."""
    print("running: " + " ".join(command), file=sys.stderr)
    result = subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    match = FLOOR_P50.search(result.stdout)
    if match is None:
        raise RuntimeError(f"no p50 in the output of {command[0]}: {result.stdout!r}")
    return int(match.group(1)) / 1000


def floors(args):
    """The blocking and the bare-glommio floor of a 3-node concurrency-1 write, now."""
    directory = args.floor_dir
    return (
        floor_p50_ms([args.c_floor, directory, str(args.floor_port), str(FLOOR_ROUND_TRIPS)]),
        floor_p50_ms([GLOMMIO_FLOOR, "--dir", directory, "--port", str(args.floor_port + 10),
                      "--round-trips", str(FLOOR_ROUND_TRIPS)]),
    )


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
    parser.add_argument(
        "--floors", action=argparse.BooleanOptionalAction, default=None,
        help="measure the write's floors after each 3-node concurrency-1 write run "
             "(default: when a C compiler is found)")
    parser.add_argument("--floor-dir", default="/tmp",
                        help="where the floors' files go (the data disk)")
    parser.add_argument("--floor-port", type=int, default=34100)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    wants_floors = args.floors is not False and "cluster3" in args.topologies.split(",")
    args.c_floor = build_c_floor(args.out) if wants_floors else None
    if args.floors and args.c_floor is None:
        sys.exit("--floors needs a C compiler (cc, gcc or clang) for write_path_floor.c")
    if args.c_floor is not None and not os.path.exists(GLOMMIO_FLOOR):
        sys.exit(f"{GLOMMIO_FLOOR} is missing: cargo build --release -p tessera-bench")
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
        floor_runs = []
        for (op, (connections, in_flight)), repeat in schedule:
            summary = run(args, topology, op, connections, in_flight,
                          repeat=repeat if args.repeats > 1 else None)
            results.setdefault((op, (connections, in_flight)), []).append(summary)
            if ((op, (connections, in_flight)) == repeated and topology == "cluster3"
                    and args.c_floor is not None):
                floor_runs.append((summary["ops"]["all"]["latency"]["p50_ms"], *floors(args)))
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
        if floor_runs:
            pairs = "; ".join(f"{p50:.3f} / {blocking:.3f} / {glommio:.3f} = {p50 / blocking:.2f}×"
                              for p50, blocking, glommio in floor_runs)
            ratios = sorted(p50 / blocking for p50, blocking, _ in floor_runs)
            print(f"\nWrites at concurrency 1 against their floors, measured right after each "
                  f"run (p50 ms: Tessera / blocking floor / bare glommio = Tessera over the "
                  f"blocking floor): {pairs}; median ratio {ratios[len(ratios) // 2]:.2f}×")
        print("\nNode placement: " + "; ".join(placements))
    print("\n##### Open loop at half the measured write peak\n")
    print(HEADER.format(first="setup, target rate"))
    for topology, peak in peaks.items():
        rate = int(peak / 2)
        summary = run(args, topology, "write", 16, 16, rate=rate)
        print(row(f"{topology} write, {rate}/s", 16, 16, summary), flush=True)


if __name__ == "__main__":
    main()
