#!/usr/bin/env python3
"""Tessera's own time between the system calls on a 3-node concurrency-1 write's path.

Reads `perf script` output of syscall tracepoints recorded on one node's process and prints
each step's p50 and p90 in microseconds (docs/benchmarks.md, passes O and P). Cheaper than the
trace points of `write_breakdown.py` (one tracepoint per system call, no log line), so it shows
the node's own work between reading a message and writing the next one:

- leader: the client's request read -> the first append's `sendto`; the last acknowledgement
  read before the answer -> the answer's `sendto`;
- follower: the append read -> its WAL `pwrite` (blocking WAL writes, the default on parked
  cores); the `pwrite` returned -> the acknowledgement's `sendto`.

A leader's messages are told apart by socket: the client's connection is the descriptor most
answers (`sendto`s of under 100 bytes) go to and the one most requests (reads of 300-399 bytes)
come from, as with `tessera-bench`'s defaults (256-byte values, two Regions); a node may read
and write one connection through two descriptors. Any other read after the appends went out
is a follower's acknowledgement, whatever its size: a follower answering an append and a
commit notice in one frame sends 229 bytes, not 157, and a read may join frames (before
session 11 the script took only multiples of 157 bytes, so it missed the writes whose first
acknowledgement was such a frame). Appends are told apart from commit notices by size, 400
bytes or more. For a leader whose messages all have one size (`glommio-floor`'s, 300 bytes
each), give the client connection's descriptor as a third argument (the fd `perf script`
shows on the `sendto` that answers the client); every message on another socket then counts
as an append or an acknowledgement. A follower's append is a read of 400 bytes or more.

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
import collections
import re
import sys

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


ANSWER_BELOW = 100
REQUEST_SIZES = range(300, 400)
APPEND_FROM = 400


def client_fds(lines):
    """The client connection's descriptors, found by the most common fd of answers (`sendto`s
    under ANSWER_BELOW bytes) and of requests (reads of REQUEST_SIZES bytes); a node may read
    and write one connection through two descriptors."""
    answers, requests = collections.Counter(), collections.Counter()
    read_fd = None
    for line in lines:
        match = EVENT.search(line)
        if match is None:
            continue
        kind, name, rest = match.group(2), match.group(3), match.group(4)
        if name == "sendto" and kind == "enter":
            size = field(rest, "len")
            if size is not None and size < ANSWER_BELOW:
                answers[field(rest, "fd")] += 1
        elif name == "recvfrom" and kind == "enter":
            read_fd = field(rest, "fd")
        elif name == "recvfrom" and kind == "exit" and (returned(rest) or 0) in REQUEST_SIZES:
            requests[read_fd] += 1
    if not answers or not requests:
        return None
    return requests.most_common(1)[0][0], answers.most_common(1)[0][0]


def is_append(size, fd, answer_fd, sizes_known):
    if fd == answer_fd:
        return False
    return not sizes_known or (size is not None and size >= APPEND_FROM)


def windows(lines, role, request_fd=None, answer_fd=None, sizes_known=True):
    """Each step as (step, start, end), times in seconds as `perf script` prints them."""
    seen = {}
    read_fd = None
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
                if read_fd == request_fd:
                    seen["request"] = ts
                elif seen.get("appended"):
                    seen["ack"] = ts
            elif size >= APPEND_FROM:
                seen["append"] = ts
        elif name == "sendto" and kind == "enter":
            size = field(rest, "len")
            fd = field(rest, "fd")
            if role == "leader":
                if is_append(size, fd, answer_fd, sizes_known) and "request" in seen:
                    yield "request read -> first append sent", seen.pop("request"), ts
                    seen["appended"] = True
                elif fd == answer_fd and "ack" in seen:
                    yield "last ack read -> answer sent", seen.pop("ack"), ts
                    seen.pop("appended", None)
            elif "written" in seen:
                yield "pwrite returned -> ack sent", seen.pop("written"), ts
        elif name == "pwrite64" and role == "follower":
            if kind == "enter" and "append" in seen:
                yield "append read -> pwrite", seen.pop("append"), ts
            elif kind == "exit":
                seen["written"] = ts


def steps(lines, role, request_fd=None, answer_fd=None, sizes_known=True):
    gaps = {}
    for step, start, end in windows(lines, role, request_fd, answer_fd, sizes_known):
        gaps.setdefault(step, []).append((end - start) * 1e6)
    return gaps


def descriptors(lines, role, client_fd=None):
    """(request_fd, answer_fd, sizes_known): the given CLIENT_FD for both, or found by size."""
    if client_fd is not None:
        fd = int(client_fd, 0)
        return fd, fd, False
    if role != "leader":
        return None, None, True
    fds = client_fds(lines)
    if fds is None:
        sys.exit("no client request or answer found by size: give the client's fd")
    return fds[0], fds[1], True


def main():
    if len(sys.argv) not in (3, 4) or sys.argv[2] not in ("leader", "follower"):
        sys.exit("usage: syscall_steps.py PERF_SCRIPT_OUTPUT leader|follower [CLIENT_FD]")
    with open(sys.argv[1]) as source:
        lines = source.readlines()
    request_fd, answer_fd, sizes_known = descriptors(lines, sys.argv[2], *sys.argv[3:])
    gaps = steps(lines, sys.argv[2], request_fd, answer_fd, sizes_known)
    if not gaps:
        sys.exit("no step found: was the recording a 3-node concurrency-1 write with 256-byte "
                 "values, on the role given?")
    for step, values in gaps.items():
        values.sort()
        print("%-36s n=%6d  p50 %6.1f  p90 %6.1f" % (
            step, len(values), values[len(values) // 2], values[int(len(values) * 0.9)]))


if __name__ == "__main__":
    main()
