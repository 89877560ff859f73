#!/bin/bash
# CPU time per write of each node and of the generator in a 3-node concurrency-1 write run
# (docs/benchmarks.md, pass N). Reads utime + stime from /proc/PID/stat over the middle of
# the run, which costs the run nothing (perf's system-call counters slow it several times).
#
#   cargo build --release -p tessera-node -p tessera-bench
#   bash bench/scripts/cpu_per_write.sh [extra tessera-bench arguments, e.g. --node-config F]
#
# The window starts 6 s after the start (past the election and the 2 s warm-up) and lasts
# WINDOW_SECS (default 4) of the 12 s run.
set -euo pipefail
cd "$(dirname "$0")/../.."
bench=${CARGO_TARGET_DIR:-target}/release/tessera-bench
window=${WINDOW_SECS:-4}
out=$(mktemp)
trap 'rm -f "$out"' EXIT

"$bench" --spawn cluster3 --connections 1 --in-flight 1 --mix 0:100:0 --keys 10000 \
    --duration-secs 12 --warmup-secs 2 --json "$@" >"$out" 2>/dev/null &
run=$!
sleep 6

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
node_pid() { pgrep -f "tessera serve --node-id $1 " | head -1; }
pids=("$(node_pid 1)" "$(node_pid 2)" "$(node_pid 3)" "$(pgrep -x tessera-bench | head -1)")
names=("node 1" "node 2" "node 3" "generator")
before=()
for pid in "${pids[@]}"; do before+=("$(ticks "$pid")"); done
sleep "$window"
after=()
for pid in "${pids[@]}"; do after+=("$(ticks "$pid")"); done
wait "$run"

rate=$(python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['ops']['write']['ops_per_second']))" "$out")
hz=$(getconf CLK_TCK)
echo "writes/s over the run: $rate"
for i in "${!pids[@]}"; do
    python3 -c "
import sys
name, ticks, hz, window, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
cpu = ticks / hz / window
print(f'{name}: {cpu * 100:.0f} % of a CPU, {cpu / rate * 1e6:.0f} us of CPU per write')
" "${names[$i]}" "$((after[i] - before[i]))" "$hz" "$window" "$rate"
done
