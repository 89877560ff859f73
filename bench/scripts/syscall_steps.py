#!/usr/bin/env python3
"""Tessera's own time between the system calls on a 3-node concurrency-1 write's path.

Reads `perf script` output of syscall tracepoints recorded on one node's process and prints
each step's p50 and p90 in microseconds (docs/benchmarks.md, pass O). Cheaper than the trace
points of `write_breakdown.py` (one tracepoint per system call, no log line), so it shows the
node's own work between reading a message and writing the next one:

- leader: the client's request read -> the first append's `sendto`; the last acknowledgement
  read before the answer -> the answer's `sendto`;
- follower: the append read -> its WAL `pwrite` (blocking WAL writes, the default on parked
  cores); the `pwrite` returned -> the acknowledgement's `sendto`.

Messages are told apart by size, as they are with `tessera-bench`'s defaults (256-byte values,
two Regions): a Raft acknowledgement frame is 157 bytes (reads may join several), a client
request 300-400, an append 400 or more, an answer under 100. Other workloads need other sizes.

    cargo build --release -p tessera-node -p tessera-bench
    target/release/tessera-bench --spawn cluster3 --connections 1 --in-flight 1 \\
        --mix 0:100:0 --keys 10000 --duration-secs 10 --warmup-secs 2 &
    sleep 5
    E='-e syscalls:sys_enter_recvfrom -e syscalls:sys_exit_recvfrom
       -e syscalls:sys_enter_sendto -e syscalls:sys_enter_pwrite64 -e syscalls:sys_exit_pwrite64'
    perf record -q $E -p "$(pgrep -f 'tessera serve --node-id 1 ')" -o /tmp/leader.data -- sleep 2
    perf script -i /tmp/leader.data > /tmp/leader.txt
    python3 bench/scripts/syscall_steps.py /tmp/leader.txt leader
    # the same with --node-id 2 and `follower`
"""
import re
import sys

ACK_BYTES = 157
EVENT = re.compile(r"\s(\d+\.\d+):\s+syscalls:sys_(enter|exit)_(\w+): (.*)$")


def field(rest, names):
    match = re.search(r"(?:%s): (0x[0-9a-f]+|\d+)" % names, rest)
    return int(match.group(1), 0) if match else None


def returned(rest):
    match = re.match(r"\s*(0x[0-9a-f]+|-?\d+)", rest)
    if match is None:
        return None
    value = int(match.group(1), 0)
    return value - (1 << 64) if value >= 1 << 63 else value


def steps(lines, role):
    gaps = {}
    seen = {}

    def add(step, seconds):
        gaps.setdefault(step, []).append(seconds * 1e6)

    for line in lines:
        match = EVENT.search(line)
        if match is None:
            continue
        ts, kind, name, rest = float(match.group(1)), match.group(2), match.group(3), match.group(4)
        if name == "recvfrom" and kind == "exit":
            size = returned(rest)
            if size is None or size <= 0:
                continue
            if role == "leader":
                if size >= 300 and size % ACK_BYTES != 0:
                    seen["request"] = ts
                elif size % ACK_BYTES == 0 and seen.get("appended"):
                    seen["ack"] = ts
            elif size >= 400:
                seen["append"] = ts
        elif name == "sendto" and kind == "enter":
            size = field(rest, "len")
            if role == "leader":
                if size and size >= 400 and "request" in seen:
                    add("request read -> first append sent", ts - seen.pop("request"))
                    seen["appended"] = True
                elif size and size < 100 and "ack" in seen:
                    add("last ack read -> answer sent", ts - seen.pop("ack"))
                    seen.pop("appended", None)
            elif "written" in seen:
                add("pwrite returned -> ack sent", ts - seen.pop("written"))
        elif name == "pwrite64" and role == "follower":
            if kind == "enter" and "append" in seen:
                add("append read -> pwrite", ts - seen.pop("append"))
            elif kind == "exit":
                seen["written"] = ts
    return gaps


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in ("leader", "follower"):
        sys.exit("usage: syscall_steps.py PERF_SCRIPT_OUTPUT leader|follower")
    with open(sys.argv[1]) as lines:
        gaps = steps(lines, sys.argv[2])
    if not gaps:
        sys.exit("no step found: was the recording a 3-node concurrency-1 write with 256-byte "
                 "values, on the role given?")
    for step, values in gaps.items():
        values.sort()
        print("%-36s n=%6d  p50 %6.1f  p90 %6.1f" % (
            step, len(values), values[len(values) // 2], values[int(len(values) * 0.9)]))


if __name__ == "__main__":
    main()
