#!/usr/bin/env bash
# Benchmark: scaling with cores. Runs `views`, `top-photos`, `wordcount` and `sort` over 1 GiB
# each on a `quern local` cluster with 1, 2, 4, 8 and 16 task slots ($SLOTS; as one worker
# with one slot, then 2 workers with half the slots each), median of $RUNS (default 3), and
# reports the speed-up over one slot. On this project's 2-core VM only the first two columns
# mean anything; the script is ready for a bigger machine. Writes $BENCH_DIR/scaling.md and
# the table in docs/PERFORMANCE.md.
# Not a test: it asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/quern/target}"
BENCH_DIR="${BENCH_DIR:-bench-data}"
SLOTS="${SLOTS:-1 2 4 8 16}"
RUNS="${RUNS:-3}"
REDUCERS="${REDUCERS:-}"
export QUERN_CONFIG=none

Q="${QUERN:-$CARGO_TARGET_DIR/release/quern}"
[ -x "$Q" ] || cargo build --release --bin quern >&2
D="$BENCH_DIR/scaling"
mkdir -p "$D"
declare -A SRC=([views]=weblog [top-photos]=weblog [wordcount]=words [sort]=sort-records)
. scripts/bench-lib.sh
gen_inputs "$D"

declare -A secs
for s in $SLOTS; do
  if [ "$s" -eq 1 ]; then workers=1; per=1; else workers=2; per=$((s / 2)); fi
  start_cluster "$D" --workers "$workers" --slots "$per"
  r="${REDUCERS:-$s}"
  for job in views top-photos wordcount sort; do
    in="$D/${SRC[$job]}.1g"
    cat "$in" >/dev/null
    secs[$job,$s]=$(for i in $(seq "$RUNS"); do
      rm -rf "$D/out"
      t0=$(date +%s.%N)
      "$Q" job submit "$job" --input "$in" --output "$D/out" --reducers "$r" >/dev/null 2>&1
      awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }'
    done | median)
    echo "$job with $s slots: ${secs[$job,$s]} s" >&2
  done
  stop_cluster
done
rm -rf "$D/out"

table="$BENCH_DIR/scaling.md"
{
  printf 'Machine: %s. 1 GiB per job, reducers = slots, median of %s runs; seconds (speed-up over 1 slot).\n\n' \
    "$(machine)" "$RUNS"
  printf '| job |'; for s in $SLOTS; do printf ' %s slots |' "$s"; done; printf '\n|---|'; for s in $SLOTS; do printf -- '---:|'; done; printf '\n'
  for job in views top-photos wordcount sort; do
    printf '| %s |' "$job"
    for s in $SLOTS; do
      printf ' %.2f (%.1f×) |' "${secs[$job,$s]}" "$(awk -v a="${secs[$job,1]:-${secs[$job,$s]}}" -v b="${secs[$job,$s]}" 'BEGIN { print a / b }')"
    done
    printf '\n'
  done
} >"$table"
cat "$table"
write_doc_table "$table" scaling
