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
For a leader whose messages all have one size (`glommio-floor`'s, 300 bytes each), give the
client connection's descriptor as a third argument: messages are then told apart by socket
(the fd `perf script` shows on the `sendto` that answers the client).

    cargo build --release -p tessera-node -p tessera-bench
    target/release/tessera-bench --spawn cluster3 --connections 1 --in-flight 1 \\
        --mix 0:100:0 --keys 10000 --duration-secs 10 --warmup-secs 2 &
    sleep 5
    E='-e syscalls:sys_enter_recvfrom -e syscalls:sys_exit_recvfrom
       -e syscalls:sys_enter_sendto -e syscalls:sys_enter_pwrite64 -e syscalls:sys_exit_pwrite64'
    perf record -q $E -p "$(pgrep -f 'tessera serve --node-id 1 ')" -o /tmp/leader.data -- sleep 2
    perf script -i /tmp/leader.data > /tmp/leader.txt
    python3 bench/scripts/syscall_steps.py /tmp/leader.txt leader
    # the same with --node-id 2 and `follower`; for bare glommio's leader
    # (pgrep -f 'glommio-floor --role leader'): ... leader CLIENT_FD
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


def is_request(size, fd, client_fd):
    if client_fd is not None:
        return fd == client_fd
    return size >= 300 and size % ACK_BYTES != 0


def is_ack(size, fd, client_fd):
    if client_fd is not None:
        return fd != client_fd
    return size % ACK_BYTES == 0


def is_append(size, fd, client_fd):
    if client_fd is not None:
        return fd != client_fd
    return size is not None and size >= 400


def is_answer(size, fd, client_fd):
    if client_fd is not None:
        return fd == client_fd
    return size is not None and size < 100


def steps(lines, role, client_fd=None):
    gaps = {}
    seen = {}
    read_fd = None

    def add(step, seconds):
        gaps.setdefault(step, []).append(seconds * 1e6)

    for line in lines:
        match = EVENT.search(line)
        if match is None:
            continue
        ts, kind, name, rest = float(match.group(1)), match.group(2), match.group(3), match.group(4)
        if name == "recvfrom" and kind == "enter":
            read_fd = field(rest, "fd")
        elif name == "recvfrom" and kind == "exit":
            size = returned(rest)
            if size is None or size <= 0:
                continue
            if role == "leader":
                if is_request(size, read_fd, client_fd):
                    seen["request"] = ts
                elif is_ack(size, read_fd, client_fd) and seen.get("appended"):
                    seen["ack"] = ts
            elif size >= 400:
                seen["append"] = ts
        elif name == "sendto" and kind == "enter":
            size = field(rest, "len")
            fd = field(rest, "fd")
            if role == "leader":
                if is_append(size, fd, client_fd) and "request" in seen:
                    add("request read -> first append sent", ts - seen.pop("request"))
                    seen["appended"] = True
                elif is_answer(size, fd, client_fd) and "ack" in seen:
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
    if len(sys.argv) not in (3, 4) or sys.argv[2] not in ("leader", "follower"):
        sys.exit("usage: syscall_steps.py PERF_SCRIPT_OUTPUT leader|follower [CLIENT_FD]")
    client_fd = int(sys.argv[3], 0) if len(sys.argv) == 4 else None
    with open(sys.argv[1]) as lines:
        gaps = steps(lines, sys.argv[2], client_fd)
    if not gaps:
        sys.exit("no step found: was the recording a 3-node concurrency-1 write with 256-byte "
                 "values, on the role given?")
    for step, values in gaps.items():
        values.sort()
        print("%-36s n=%6d  p50 %6.1f  p90 %6.1f" % (
            step, len(values), values[len(values) // 2], values[int(len(values) * 0.9)]))


if __name__ == "__main__":
    main()
