#!/usr/bin/env python3
"""Each node's work window by window, from its trace points (node/src/latency.rs), to find
where a stall of an open-loop run came from (pair it with `tessera-bench --timeline`).

    tessera-bench --spawn cluster3 --connections 16 --in-flight 16 --mix 0:100:0 \\
        --keys 10000 --duration-secs 10 --warmup-secs 2 --rate 21578 --timeline \\
        --node-log-filter warn,tessera::latency=debug --node-log-dir /tmp/trace
    python3 bench/scripts/node_timeline.py /tmp/trace [window_seconds, default 0.25]

Per node and window (from the first event of any node): entries proposed (leader) and the
p50/max of proposed -> applied for them (ms), WAL appends completed and the p50/max of
issued -> done (ms; an append's rounds are matched in order, as the core completes them),
the longest silence of the node's log (no trace event at all: the core thread did not run
or did nothing), and the snapshot files written in the window with their durations (`bg`:
written off the core's thread).
"""

import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from write_breakdown import parse  # noqa: E402  (the same trace-line parser)


def pct(values, q):
    if not values:
        return "      -"
    values = sorted(values)
    return f"{values[int(q * (len(values) - 1))] * 1e3:7.1f}"


def node_windows(events, t0, width):
    proposed = {}
    commit = defaultdict(list)
    wal = defaultdict(list)
    silence = defaultdict(float)
    snapshots = defaultdict(list)
    issued = []  # (time, bytes) of each append's first wal_issue line, oldest first
    last = None
    for t, name, f in events:
        window = int((t - t0) / width)
        if last is not None:
            silence[window] = max(silence[window], t - last)
        last = t
        if name == "proposed":
            proposed[(f.get("region"), f.get("index"))] = t
        elif name == "applied":
            start = proposed.pop((f.get("region"), f.get("index")), None)
            if start is not None:
                commit[int((start - t0) / width)].append(t - start)
        elif name == "wal_issue":
            # One line per Region of a round; the round's lines share the batch's size.
            same_round = issued and issued[-1][1] == f.get("bytes") and t - issued[-1][0] < 50e-6
            if not same_round:
                issued.append((t, f.get("bytes")))
        elif name == "wal_done" and issued:
            start, _ = issued.pop(0)
            wal[int((start - t0) / width)].append(t - start)
        elif name == "snapshot_written":
            tag = "bg" if f.get("background") == "true" else "core"
            snapshots[window].append(f"r{f.get('region')}@{f.get('index')} "
                                     f"{int(f.get('elapsed_us', 0)) / 1e3:.1f}ms {tag}")
    windows = sorted(set(commit) | set(wal) | set(silence))
    for w in windows:
        yield (w, commit.get(w, []), wal.get(w, []), silence[w], snapshots.get(w, []))


def main():
    directory = Path(sys.argv[1])
    width = float(sys.argv[2]) if len(sys.argv) > 2 else 0.25
    logs = sorted(directory.glob("node-*.log"))
    # parse() stamps events in microseconds; this script works in seconds.
    nodes = [(path.stem, [(t / 1e6, n, f) for t, n, f in parse(path)]) for path in logs]
    starts = [events[0][0] for _, events in nodes if events]
    if not starts:
        sys.exit(f"no trace events in {directory}")
    t0 = min(starts)
    for name, events in nodes:
        print(f"{name}:  window start s | proposed, proposed->applied p50/max ms | "
              f"WAL appends, issued->done p50/max ms | longest silence ms | snapshots")
        for w, commit, wal, silence, snaps in node_windows(events, t0, width):
            print(f"  {w * width:7.2f} | {len(commit):6d} {pct(commit, .5)} {pct(commit, 1)} | "
                  f"{len(wal):4d} {pct(wal, .5)} {pct(wal, 1)} | {silence * 1e3:7.1f} | "
                  f"{', '.join(snaps)}")


if __name__ == "__main__":
    main()
