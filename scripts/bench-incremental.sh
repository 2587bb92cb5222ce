#!/usr/bin/env bash
# Benchmark: an hourly incremental run (`--from` the previous hour's output) against a full
# run over the whole growing log, on a `quern local` cluster of 2 workers.
#
# Generates an access log of $HISTORY (default 1GiB) and $NEW (default 50MiB) more once
# (under $BENCH_DIR/incremental, default bench-data/), writes the history's output with a
# full run, appends the new hour to the log, then times, for views, top-photos and
# endpoint-stats, $RUNS (default 3) full runs and $RUNS incremental runs over the grown log
# and takes the median of each. Every incremental output is checked to be byte-identical
# to the full run's (parts, state and manifest). Prints a table and writes it to
# $BENCH_DIR/incremental.md and into docs/PERFORMANCE.md (between its incremental markers).
# Not a test: it asserts nothing about time.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/quern/target}"
BENCH_DIR="${BENCH_DIR:-bench-data}"
HISTORY="${HISTORY:-1GiB}"
NEW="${NEW:-50MiB}"
RUNS="${RUNS:-3}"
REDUCERS="${REDUCERS:-2}"
export QUERN_CONFIG=none

cargo build --release --bin quern >&2
Q="$CARGO_TARGET_DIR/release/quern"
D="$BENCH_DIR/incremental"
mkdir -p "$D"
[ -f "$D/history.log" ] || "$Q" gen weblog --size "$HISTORY" --seed 1 --out "$D/history.log" >&2
[ -f "$D/new.log" ] || "$Q" gen weblog --size "$NEW" --seed 2 --out "$D/new.log" >&2
rm -rf "$D/logs" "$D/out" "$D/.quern"
mkdir -p "$D/logs" "$D/out"
cp "$D/history.log" "$D/logs/access.log"

. scripts/bench-lib.sh
start_cluster "$D" --workers 2

now() { date +%s.%N; }
submit() { "$Q" job submit "$@" --input "$D/logs" --reducers "$REDUCERS" >/dev/null 2>&1; }
timed() { local t0 t1; t0=$(now); submit "$@"; t1=$(now); awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'; }
same() { diff -r -q "$1" "$2" >/dev/null || { echo "error: $1 differs from $2" >&2; exit 1; }; }

jobs=(views top-photos endpoint-stats)
for job in "${jobs[@]}"; do
  submit "$job" --output "$D/out/$job-history"
done
cat "$D/new.log" >> "$D/logs/access.log"
cat "$D/logs/access.log" >/dev/null  # warm the page cache

hist_bytes=$(stat -c %s "$D/history.log")
new_bytes=$(stat -c %s "$D/new.log")
table="$D/incremental.md"
{
  printf 'Machine: %s. History %s MB, new %s MB, %s reducers, median of %s runs.\n\n' \
    "$(machine)" "$((hist_bytes / 1000000))" "$((new_bytes / 1000000))" "$REDUCERS" "$RUNS"
  printf '| job | full run (s) | incremental run (s) | full ÷ incremental | outputs identical |\n'
  printf '|---|---:|---:|---:|---|\n'
} >"$table"
for job in "${jobs[@]}"; do
  full=$(for i in $(seq "$RUNS"); do timed "$job" --output "$D/out/$job-full-$i"; done | median)
  inc=$(for i in $(seq "$RUNS"); do timed "$job" --output "$D/out/$job-inc-$i" --from "$D/out/$job-history"; done | median)
  for i in $(seq "$RUNS"); do
    same "$D/out/$job-inc-$i" "$D/out/$job-full-1"
    same "$D/out/$job-full-$i" "$D/out/$job-full-1"
  done
  printf '| %s | %.2f | %.2f | %.1f× | yes |\n' "$job" "$full" "$inc" "$(awk -v a="$full" -v b="$inc" 'BEGIN { print a / b }')" >>"$table"
done
cat "$table"

# Into docs/PERFORMANCE.md, between the markers.
write_doc_table "$table" incremental
