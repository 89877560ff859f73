#!/usr/bin/env bash
# Runs every fuzz target for a bounded time, starting from the committed seeds.
#
#   bash fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]    (default: 60 s, every target)
#
# Installs the pinned cargo-fuzz into ~/.cache/tessera-tools (or $TESSERA_TOOLS_DIR) once and
# reuses it. New inputs the fuzzer finds go to fuzz/corpus/<target> (not committed); a crash
# stops the run with a non-zero exit and leaves the input in fuzz/artifacts/<target>/, with
# the command that replays it. See docs/reliability.md, "Fuzzing".
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(frame_decoder client_request wal_recovery)
fi

version=0.13.2
root=${TESSERA_TOOLS_DIR:-$HOME/.cache/tessera-tools}/cargo-fuzz-$version
if [ ! -x "$root/bin/cargo-fuzz" ]; then
    echo "== installing cargo-fuzz $version into $root"
    cargo install --locked --quiet cargo-fuzz --version "$version" --root "$root"
fi
export PATH="$root/bin:$PATH"
# cargo-fuzz passes nightly-only flags (-Zsanitizer=address and friends); the stable
# toolchain accepts them when told it is bootstrapping itself. Only this script sets it.
export RUSTC_BOOTSTRAP=1

# -O: optimised; -a: with debug assertions and overflow checks, like the tests.
echo "== cargo fuzz build (${targets[*]})"
start=$(date +%s)
for target in "${targets[@]}"; do
    cargo fuzz build -O -a "$target"
done
echo "== fuzz build took $(($(date +%s) - start)) s"

for target in "${targets[@]}"; do
    corpus=fuzz/corpus/$target
    mkdir -p "$corpus"
    echo "== fuzzing $target for $seconds s"
    # The first directory receives new inputs; the seeds are only read.
    cargo fuzz run -O -a "$target" "$corpus" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        2>&1 | grep -E "^(#[0-9]+ +DONE|Done|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==|SUMMARY|thread '|.*panicked|artifact_prefix|Test unit written|Reproduce)|INFO: (seed corpus|-max_len)" || true
    status=${PIPESTATUS[0]}
    if [ "$status" -ne 0 ]; then
        echo "fuzz target $target failed (exit $status); the input is in fuzz/artifacts/$target/"
        exit "$status"
    fi
done
echo "== fuzzing passed: ${targets[*]}, $seconds s each"
