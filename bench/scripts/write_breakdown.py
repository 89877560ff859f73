#!/usr/bin/env python3
"""Breaks a write's latency down from the nodes' trace points (node/src/latency.rs).

Run a 3-node cluster at concurrency 1 with the trace points on, keeping the logs:

    tessera-bench --spawn cluster3 --connections 1 --in-flight 1 --mix 0:100:0 \\
        --duration-secs 5 --warmup-secs 1 \\
        --node-log-filter warn,tessera::latency=debug --node-log-dir /tmp/trace
    python3 bench/scripts/write_breakdown.py /tmp/trace

For every entry the leader proposed, it lines up the events of the leader and of each
follower by (Region, index) and prints the percentiles of each step (microseconds, from the
logs' wall-clock timestamps, which processes on one machine share). Only meaningful at
concurrency 1, where one write is in flight at a time (steps are matched by order within a
node's log).
"""

import re
import sys
from datetime import datetime

LINE = re.compile(r"^(\S+Z)\s+DEBUG\s+tessera::latency:\s+(\w+)\s*(.*)$")
FIELD = re.compile(r'(\w+)=("[^"]*"|\S+)')
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def parse(path):
    events = []
    with open(path, errors="replace") as f:
        for raw in f:
            match = LINE.match(ANSI.sub("", raw.rstrip("\n")))
            if not match:
                continue
            stamp, name, rest = match.groups()
            t = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp() * 1e6
            fields = {k: v.strip('"') for k, v in FIELD.findall(rest)}
            events.append((t, name, fields))
    return events


def first_after(events, start, predicate):
    """(position, time) of the first event at or after position `start` matching."""
    for i in range(start, len(events)):
        if predicate(events[i]):
            return i, events[i][0]
    return None, None


def last_before(events, end, predicate):
    for i in range(end, -1, -1):
        if predicate(events[i]):
            return i, events[i][0]
    return None, None


def is_(name, **want):
    def check(event):
        return event[1] == name and all(event[2].get(k) == str(v) for k, v in want.items())

    return check


def index_of(events):
    """(name, region, index) -> position of its first occurrence, for fast lookups."""
    out = {}
    for i, (_, name, fields) in enumerate(events):
        key = (name, fields.get("region"), fields.get("index"))
        out.setdefault(key, i)
    return out


def follower_steps(events, first, leader, region, index):
    """Steps on a follower for entry (region, index): received, durable, answered."""
    pos = first.get(("raft_in", region, index))
    while pos is not None and not (
        events[pos][2].get("kind") == "App" and events[pos][2].get("from") == leader
    ):
        pos, _ = first_after(
            events, pos + 1, is_("raft_in", region=region, index=index, kind="App", **{"from": leader})
        )
    if pos is None:
        return None
    _, frame_in = last_before(events, pos, is_("frame_in", **{"from": leader}))
    t_in = events[pos][0]
    issue_pos, t_issue = first_after(events, pos, is_("wal_issue", region=region, index=index))
    if issue_pos is None:
        return None
    done_pos, t_done = first_after(events, issue_pos, is_("wal_done"))
    flushed = wal_flushed(events, issue_pos, done_pos)
    resp_pos, t_resp = first_after(
        events, issue_pos, is_("raft_out", region=region, index=index, kind="AppResp")
    )
    if done_pos is None or resp_pos is None:
        return None
    _, t_wire = first_after(events, resp_pos, is_("frame_out", to=leader))
    return {
        "frame_in": frame_in,
        "raft_in": t_in,
        "wal_issue": t_issue,
        "wal_done": t_done,
        "resp_out": t_resp,
        "resp_wire": t_wire,
        "wal_flushed": flushed,
    }


def wal_flushed(events, issue_pos, done_pos):
    """The WAL's own `wal_flushed` fields between a `wal_issue` and its `wal_done` (queue
    wait and write, microseconds), or None (a log from before that trace point)."""
    if done_pos is None:
        return None
    pos, _ = first_after(events, issue_pos, is_("wal_flushed"))
    if pos is None or pos > done_pos:
        return None
    fields = events[pos][2]
    return int(fields["queued_us"]), int(fields["write_us"])


def percentiles(values):
    values = sorted(values)
    if not values:
        return "-"
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]
    return f"{pick(0.5):8.0f} {pick(0.9):8.0f} {pick(0.99):8.0f}  n={len(values)}"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    directory = sys.argv[1]
    logs = {n: parse(f"{directory}/node-{n}.log") for n in (1, 2, 3)}
    firsts = {n: index_of(events) for n, events in logs.items()}
    steps = {}

    def add(name, value):
        if value is not None:
            steps.setdefault(name, []).append(value)

    for leader, events in logs.items():
        for pos, (t_prop, name, fields) in enumerate(events):
            if name != "proposed":
                continue
            region, index = fields["region"], fields["index"]
            _, t_client = last_before(events, pos, is_("client_in"))
            issue_pos, t_issue = first_after(events, pos, is_("wal_issue", region=region, index=index))
            if issue_pos is None:
                continue
            done_pos, t_done = first_after(events, issue_pos, is_("wal_done"))
            flushed = wal_flushed(events, issue_pos, done_pos)
            _, t_wire = first_after(events, issue_pos, is_("frame_out"))
            applied_pos, t_applied = first_after(
                events, pos, is_("applied", region=region, index=index)
            )
            if applied_pos is None or t_client is None:
                continue
            _, t_answer = first_after(events, applied_pos, is_("client_out"))
            acks = []
            for follower in logs:
                if follower == leader:
                    continue
                found = follower_steps(
                    logs[follower], firsts[follower], str(leader), region, index
                )
                if found is None:
                    continue
                t_ack = None
                if found["resp_wire"] is not None:
                    for t, name, fields in events[issue_pos:]:
                        if t >= found["resp_wire"] and name == "frame_in" and fields.get("from") == str(follower):
                            t_ack = t
                            break
                acks.append((t_ack, found))
            if not acks:
                continue
            acks.sort(key=lambda a: a[0] or float("inf"))
            t_ack, f = acks[0]
            add("leader: client_in -> proposed", t_prop - t_client)
            add("leader: proposed -> wal_issue", t_issue - t_prop)
            add("leader: WAL write+fdatasync", t_done - t_issue if t_done else None)
            add("leader:   of which queued for the flusher", flushed[0] if flushed else None)
            add("leader:   of which write submitted -> done", flushed[1] if flushed else None)
            add("leader: wal_issue -> append on the wire", t_wire - t_issue if t_wire else None)
            add("leader wal_issue -> follower frame_in", f["frame_in"] - t_issue if f["frame_in"] else None)
            add("net: leader wire -> follower frame_in", f["frame_in"] - t_wire if f["frame_in"] and t_wire else None)
            add("follower: frame_in -> raft_in (core loop)", f["raft_in"] - f["frame_in"] if f["frame_in"] else None)
            add("follower: raft_in -> wal_issue", f["wal_issue"] - f["raft_in"])
            add("follower: WAL write+fdatasync", f["wal_done"] - f["wal_issue"])
            add("follower:   of which queued for the flusher", f["wal_flushed"][0] if f["wal_flushed"] else None)
            add("follower:   of which write submitted -> done", f["wal_flushed"][1] if f["wal_flushed"] else None)
            add("follower: wal_done -> ack on the wire", f["resp_wire"] - f["wal_done"] if f["resp_wire"] else None)
            add("net: ack wire -> leader frame_in", t_ack - f["resp_wire"] if t_ack and f["resp_wire"] else None)
            add("leader: first ack frame_in -> applied", t_applied - t_ack if t_ack else None)
            add("leader: own WAL done -> applied", t_applied - t_done if t_done else None)
            add("leader: applied -> client_out", t_answer - t_applied if t_answer else None)
            add("leader: client_in -> client_out (server side)", t_answer - t_client if t_answer else None)
            add("ack before own WAL done (1 = yes)", 1 if t_ack and t_done and t_ack < t_done else 0)
    print(f"{'step (us)':48} {'p50':>8} {'p90':>8} {'p99':>8}")
    for name, values in steps.items():
        if name.startswith("ack before"):
            print(f"{name:48} {sum(values)}/{len(values)}")
        else:
            print(f"{name:48} {percentiles(values)}")


if __name__ == "__main__":
    main()
