#!/usr/bin/env bash
# Benchmark: how far one coordinator goes, and what a small task costs.
#
# 1. `quern bench scheduler`: a real coordinator process pinned to one CPU, and 100, 1,000 and
#    5,000 simulated workers speaking the real gRPC protocol (register, heartbeat every
#    second, report tasks, stage reduce parts that the coordinator commits), running one job
#    of 100,000 maps. Prints heartbeat latency, assignments per second, coordinator CPU and
#    memory, journal bytes and syncs per task, plan time and answer sizes.
# 2. Small tasks: a 2-worker `quern local` runs `views` over a 20 MB log cut into 16 KiB
#    splits (1,221 maps), from submit to end: tasks per second through real executors.
#
# Not a test: it asserts nothing about time. Writes the tables to $BENCH_DIR/scheduler.md
# (default bench-data/); the figures go to docs/PERFORMANCE.md. Arguments go to
# `quern bench scheduler` (e.g. --workers 100,1000 --maps 20000 for a quick look).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/quern/target}"
BENCH_DIR="${BENCH_DIR:-bench-data}"
cargo build --release --bin quern >&2
Q="$CARGO_TARGET_DIR/release/quern"
mkdir -p "$BENCH_DIR"
OUT="$BENCH_DIR/scheduler.md"
# 5,000 simulated workers share 64 connections; the coordinator's own sockets stay few.
ulimit -n 65536 2>/dev/null || true

{
  echo "## One coordinator under simulated workers ($(date -u +%Y-%m-%d), $(nproc) CPUs)"
  echo
  "$Q" bench scheduler "$@"
} | tee "$OUT"

# Small tasks through a real cluster.
SMALL="$BENCH_DIR/small-tasks"
rm -rf "$SMALL"
mkdir -p "$SMALL"
"$Q" gen weblog --size 20MB --seed 1 --out "$SMALL/access.log" >/dev/null
"$Q" local --workers 2 --dir "$SMALL/.quern" >/dev/null 2>"$SMALL/cluster.log" &
CLUSTER=$!
trap 'kill -INT $CLUSTER 2>/dev/null; wait $CLUSTER 2>/dev/null; rm -rf "$SMALL"' EXIT
while [ ! -f "$SMALL/.quern/coordinator.addr" ]; do sleep 0.1; done
export QUERN_COORDINATOR="$(cat "$SMALL/.quern/coordinator.addr")"
# One warm-up job (executors started, binary cached), then the measured one.
"$Q" job submit views --input "$SMALL/access.log" --output "$SMALL/warm" --split-size 1MiB >/dev/null
start=$(date +%s.%N)
"$Q" job submit views --input "$SMALL/access.log" --output "$SMALL/out" --split-size 16KiB >/dev/null
end=$(date +%s.%N)
maps=$(( ($(stat -c %s "$SMALL/access.log") + 16383) / 16384 ))
slots=$(( 2 * $(nproc) ))
{
  echo
  echo "Small tasks: views over 20 MB in 16 KiB splits ($maps maps, 1 reduce), 2 workers:"
  awk -v s="$start" -v e="$end" -v m="$maps" -v k="$slots" \
    'BEGIN { printf "%.2f s, %.0f tasks/s (%.1f ms per task per slot, %d slots)\n", e - s, (m + 1) / (e - s), (e - s) * k * 1000 / (m + 1), k }'
} | tee -a "$OUT"
