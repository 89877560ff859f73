#!/usr/bin/env python3
"""Where a node's CPU goes inside one step of a 3-node concurrency-1 write.

Takes the steps of `syscall_steps.py` (the same syscall tracepoints, the same rules for
telling messages apart) and the `cpu-clock` samples recorded with them, and prints, for the
samples of the core's thread that fall inside the chosen step, the functions they were in:
leaf (self) and inclusive (anywhere on the stack), as shares of those samples
(docs/benchmarks.md, Node, pass P). Build with frame pointers so the stacks are whole, and
keep the sample period long: at a sample every 10 µs of CPU the node slowed to a third of its
rate and its followers began to batch, which changes the path measured.

    RUSTFLAGS="-C force-frame-pointers=yes" CARGO_TARGET_DIR=target-fp \\
        cargo build --release -p tessera-node -p tessera-bench
    B=target-fp/release
    $B/tessera-bench --spawn cluster3 --tessera-bin $B/tessera --connections 1 --in-flight 1 \\
        --mix 0:100:0 --keys 10000 --duration-secs 12 --warmup-secs 2 &
    sleep 5
    E='-e syscalls:sys_enter_recvfrom -e syscalls:sys_exit_recvfrom
       -e syscalls:sys_enter_sendto -e syscalls:sys_enter_pwrite64 -e syscalls:sys_exit_pwrite64'
    perf record -q -g -e cpu-clock -c 100000 $E -p "$(pgrep -f 'tessera serve --node-id 2 ')" \\
        -o /tmp/follower.data -- sleep 3
    perf script -i /tmp/follower.data > /tmp/follower.txt
    python3 bench/scripts/window_profile.py /tmp/follower.txt follower 'pwrite returned -> ack sent'

Steps: leader `'request read -> first append sent'`, `'last ack read -> answer sent'`;
follower `'append read -> pwrite'`, `'pwrite returned -> ack sent'`. The tracepoints' own
cost shows as `perf_swevent_event` and its callers; the shares count it, so read the others
against the samples outside it.
"""
import bisect
import collections
import re
import sys

import syscall_steps

SAMPLE = re.compile(r"^\s*\S+\s+(\d+)\s+(?:\[\d+\]\s+)?(\d+\.\d+):\s+\d+\s+cpu-clock:")
TRACEPOINT = re.compile(r"^\s*\S+\s+(\d+)\s+(?:\[\d+\]\s+)?\d+\.\d+:\s+syscalls:")
FRAME = re.compile(r"^\s+[0-9a-f]+\s+(.*?)(?:\+0x[0-9a-f]+)?\s+\(")


def samples(lines):
    """(time, thread, [function, ...] leaf first) of every cpu-clock sample."""
    current = None
    for line in lines:
        match = SAMPLE.match(line)
        if match or not line.strip() or TRACEPOINT.match(line):
            if current is not None:
                yield current
            current = (float(match.group(2)), int(match.group(1)), []) if match else None
            continue
        frame = FRAME.match(line)
        if current is not None and frame:
            current[2].append(frame.group(1))
    if current is not None:
        yield current


def syscall_thread(lines):
    counts = collections.Counter()
    for line in lines:
        match = TRACEPOINT.match(line)
        if match:
            counts[int(match.group(1))] += 1
    return counts.most_common(1)[0][0] if counts else None


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit("usage: window_profile.py PERF_SCRIPT_OUTPUT leader|follower STEP [CLIENT_FD]")
    path, role, step = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(path) as source:
        lines = source.readlines()
    request_fd, answer_fd, sizes_known = syscall_steps.descriptors(lines, role, *sys.argv[4:])
    spans = sorted((start, end) for name, start, end in
                   syscall_steps.windows(lines, role, request_fd, answer_fd, sizes_known)
                   if name == step)
    if not spans:
        sys.exit("no window of step %r found" % step)
    starts = [start for start, _ in spans]
    thread = syscall_thread(lines)
    leaf, inclusive, inside = collections.Counter(), collections.Counter(), 0
    for time, tid, stack in samples(lines):
        at = bisect.bisect_right(starts, time) - 1
        if tid != thread or at < 0 or time > spans[at][1] or not stack:
            continue
        inside += 1
        leaf[stack[0]] += 1
        for function in set(stack):
            inclusive[function] += 1
    mean_us = sum(end - start for start, end in spans) / len(spans) * 1e6
    print("%s: %d windows, mean %.1f µs; %d samples of thread %s inside them"
          % (step, len(spans), mean_us, inside, thread))
    if inside == 0:
        sys.exit("no cpu-clock sample inside the windows: was it recorded with -e cpu-clock -g?")
    for title, counter, top in (("leaf", leaf, 25), ("inclusive", inclusive, 60)):
        print("-- %s" % title)
        for function, count in counter.most_common(top):
            print("%5.1f%%  %s" % (100.0 * count / inside, function[:150]))


if __name__ == "__main__":
    main()
