#!/usr/bin/env bash
# Benchmark: memory as input grows. Runs `views`, `top-photos`, `wordcount` and `sort` on a
# `quern local` cluster of 2 workers over 1, 2, 4 and 8 GB of input ($SIZES, in GiB) and
# records, for each run, the peak resident memory (VmHWM) of the worker daemons, of the
# executors (the processes that run the tasks) and of the `quern local` process (the
# coordinator), and the time.
#
# Inputs: 1 GiB of each kind is generated once under $BENCH_DIR (default bench-data/); an
# input of N GiB is a directory of N links to it, so the bytes read are real and distinct
# files, while the disk holds 1 GiB per kind. Memory is sampled every 250 ms from
# /proc/PID/status of every process of the cluster (VmHWM is the kernel's own high-water
# mark, so a peak between two samples is not missed while the process lives). Writes the table
# to $BENCH_DIR/memory.md and into docs/PERFORMANCE.md (between its memory markers). Not a
# test: it asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/quern/target}"
BENCH_DIR="${BENCH_DIR:-bench-data}"
SIZES="${SIZES:-1 2 4 8}"
REDUCERS="${REDUCERS:-2}"
export QUERN_CONFIG=none

cargo build --release --bin quern >&2
Q="$CARGO_TARGET_DIR/release/quern"
D="$BENCH_DIR/memory"
mkdir -p "$D"
declare -A SRC=([views]=weblog [top-photos]=weblog [wordcount]=words [sort]=sort-records)
. scripts/bench-lib.sh
gen_inputs "$D"
rm -rf "$D/out"

# Every process below the cluster's, with its role.
tree() {
  local pid=$1
  echo "$pid"
  for c in $(pgrep -P "$pid" || true); do tree "$c"; done
}
role() {
  local args
  args=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" || true)
  case "$args" in
    *" executor"*) echo executor ;;
    *" worker"*) echo worker ;;
    *" local"*) echo coordinator ;;
    *) echo other ;;
  esac
}
hwm() { awk '/VmHWM/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

table="$D/memory.md"
{
  printf 'Machine: %s. `quern local`, 2 workers of 2 slots, %s reducers, default settings (64 MiB splits, 128 MiB task memory). Peak resident memory in MiB.\n\n' \
    "$(machine)" "$REDUCERS"
  printf '| job | input | seconds | s per GiB | worker | executor | coordinator (`quern local`) |\n|---|---:|---:|---:|---:|---:|---:|\n'
} >"$table"

for job in views top-photos wordcount sort; do
  for n in $SIZES; do
    in="$D/in-${SRC[$job]}-$n"
    if [ ! -d "$in" ]; then
      mkdir -p "$in"
      for i in $(seq "$n"); do ln -f "$D/${SRC[$job]}.1g" "$in/part-$i.txt"; done
    fi
    out="$D/out/$job-$n"
    rm -rf "$out"
    # A fresh cluster for each run, so that each peak is that run's (the kernel's
    # high-water marks only grow while a process lives).
    start_cluster "$D" --workers 2
    t0=$(date +%s.%N)
    "$Q" job submit "$job" --input "$in" --output "$out" --reducers "$REDUCERS" >/dev/null 2>&1 &
    job_pid=$!
    declare -A peak=([worker]=0 [executor]=0 [coordinator]=0)
    while kill -0 "$job_pid" 2>/dev/null; do
      for p in $(tree "$CLUSTER"); do
        r=$(role "$p"); [ "$r" = other ] && continue
        m=$(hwm "$p"); [ "${m:-0}" -gt "${peak[$r]}" ] && peak[$r]=$m
      done
      sleep 0.25
    done
    wait "$job_pid"
    secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
    stop_cluster
    printf '| %s | %s GiB | %.1f | %.2f | %d | %d | %d |\n' "$job" "$n" "$secs" \
      "$(awk -v s="$secs" -v n="$n" 'BEGIN { print s / n }')" \
      $((peak[worker] / 1024)) $((peak[executor] / 1024)) $((peak[coordinator] / 1024)) | tee -a "$table"
    rm -rf "$out"
  done
done
cat "$table"

write_doc_table "$table" memory
