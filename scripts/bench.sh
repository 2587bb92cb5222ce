#!/usr/bin/env bash
# Benchmark: Quern against a plain Rust program doing the same computation.
# (`bash scripts/bench.sh photos` benchmarks the photos job instead: scripts/bench-photos.sh.)
#
# Generates a ~1 GiB access log and ~1 GiB of words once (under $BENCH_DIR, default
# bench-data/), then times `views`, `top-photos` and `wordcount`:
#   - plain:   jobs/examples/baseline.rs, 1 and 2 threads (hash maps, no engine);
#   - local:   `quern run --local` (one process, sequential: the oracle);
#   - cluster: `quern local --workers 2`, from submit to finished.
# Each is timed from outside, from its start to its exit.
# Prints seconds, MB/s and the ratio to the plain 2-thread program, and writes them as a table
# into docs/PERFORMANCE.md (between its `latest` markers; $BENCH_DIR/latest.md too). Not a
# test: it asserts nothing about time.
set -euo pipefail
cd "$(dirname "$0")/.."
# `bench.sh photos`: the photos job against a plain decode-and-classify loop.
if [ "${1:-}" = photos ]; then exec bash scripts/bench-photos.sh; fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/quern/target}"
BENCH_DIR="${BENCH_DIR:-bench-data}"
SIZE="${SIZE:-1GiB}"
SLOTS="${SLOTS:-1}"
REDUCERS="${REDUCERS:-2}"
RUNS="${RUNS:-5}"

# One build of the whole workspace, without failpoints (as users build it; the tests add the
# `failpoints` feature, so switching between them rebuilds the crates it touches).
cargo build --release --workspace --bins --examples >&2
Q="$CARGO_TARGET_DIR/release/quern"
B="$CARGO_TARGET_DIR/release/examples/baseline"
mkdir -p "$BENCH_DIR"
. scripts/bench-lib.sh
gen_once weblog "$SIZE" "$BENCH_DIR/access.log"
gen_once words "$SIZE" "$BENCH_DIR/words.txt"
TABLE="$BENCH_DIR/latest.md"
{
  printf "Machine: %s. Inputs of %s (seed 1), %s reducers, %s slot(s) per worker; median of %s runs.\n\n" \
    "$(machine)" "$SIZE" "$REDUCERS" "$SLOTS" "$RUNS"
  echo "| job | runner | seconds | MB/s | × plain 2 threads |"
  echo "|---|---|---:|---:|---:|"
} >"$TABLE"

now() { date +%s.%N; }
OWN_CLOCK=
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / s / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

rm -rf "$BENCH_DIR/.quern" "$BENCH_DIR/out"
"$Q" local --workers 2 --slots "$SLOTS" --dir "$BENCH_DIR/.quern" >/dev/null 2>"$BENCH_DIR/cluster.log" &
CLUSTER=$!
trap 'kill -INT $CLUSTER 2>/dev/null || true; wait $CLUSTER 2>/dev/null || true' EXIT
while [ ! -f "$BENCH_DIR/.quern/coordinator.addr" ]; do sleep 0.1; done
export QUERN_COORDINATOR="$(cat "$BENCH_DIR/.quern/coordinator.addr")"

printf "machine: %s\n" "$(machine)"
printf "%-11s %-22s %8s %8s %8s\n" job runner seconds MB/s "x plain2"
for job in views top-photos wordcount; do
  input="$BENCH_DIR/access.log"; [ "$job" = wordcount ] && input="$BENCH_DIR/words.txt"
  bytes=$(stat -c %s "$input")
  cat "$input" >/dev/null  # warm the page cache
  # Each runner $RUNS times, the median kept (runs on a shared VM vary by 20% and more).
  # Every runner is timed from outside, from its start to its exit, as the cluster is from
  # submit to return. The plain program also prints its own clock, which leaves out its exit,
  # where the kernel unmaps the input it read (0.03-0.05 s for 1 GiB): kept for the note
  # under the table.
  plain_runs() {
    for _ in $(seq "$RUNS"); do
      local t0 own; t0=$(now)
      own=$("$B" "$job" "$input" "$1" "$BENCH_DIR/plain.out")
      awk -v a="$t0" -v b="$(now)" -v own="$own" 'BEGIN { print b - a, own }'
    done
  }
  r1=$(plain_runs 1); r2=$(plain_runs 2)
  p1=$(awk '{print $1}' <<<"$r1" | median); p2=$(awk '{print $1}' <<<"$r2" | median)
  OWN_CLOCK="$OWN_CLOCK${OWN_CLOCK:+, }$job $(awk '{print $2}' <<<"$r1" | median) and $(awk '{print $2}' <<<"$r2" | median) s"
  tl=$(for _ in $(seq "$RUNS"); do
    rm -rf "$BENCH_DIR/out/$job-local"
    t0=$(now); "$Q" run --local "$job" --input "$input" --output "$BENCH_DIR/out/$job-local" --reducers "$REDUCERS" >/dev/null; t1=$(now)
    awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'
  done | median)
  tc=$(for _ in $(seq "$RUNS"); do
    rm -rf "$BENCH_DIR/out/$job-cluster"
    t0=$(now); "$Q" job submit "$job" --input "$input" --output "$BENCH_DIR/out/$job-cluster" --reducers "$REDUCERS" >/dev/null 2>&1; t1=$(now)
    awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'
  done | median)
  cmp -s <(cat "$BENCH_DIR/out/$job-local"/part-*) <(cat "$BENCH_DIR/out/$job-cluster"/part-*) || echo "warning: $job cluster output differs from local" >&2
  for r in "plain, 1 thread:$p1" "plain, 2 threads:$p2" "quern run --local:$tl" "quern local, 2 workers:$tc"; do
    name="${r%%:*}"; secs="${r##*:}"
    printf "%-11s %-22s %8.2f %8s %8s\n" "$job" "$name" "$secs" "$(mbps "$bytes" "$secs")" "$(ratio "$secs" "$p2")"
    printf "| %s | %s | %.2f | %s | %s |\n" "$job" "$name" "$secs" "$(mbps "$bytes" "$secs")" "$(ratio "$secs" "$p2")" >>"$TABLE"
  done
done

# views with the log in SeaweedFS: a local SeaweedFS cluster of $SW_WORKERS volume servers
# (default 2, as many as the workers of the rows above), a Quern cluster of as many workers,
# each beside one volume server; the same cluster also runs views over the local file, in
# turns, so that the two differ only in where the input lies. SKIP_SEAWEEDFS=1 skips this.
SW_WORKERS="${SW_WORKERS:-2}"
if [ "${SKIP_SEAWEEDFS:-0}" != 1 ]; then
  kill -INT $CLUSTER 2>/dev/null; wait $CLUSTER 2>/dev/null || true
  SW="$BENCH_DIR/seaweedfs"
  # A fresh SeaweedFS each run (the log is uploaded again anyway): a master that remembers
  # volume servers of an earlier run with another count would assign chunks to missing ones.
  rm -rf "$SW"
  eval "$(SEAWEEDFS_VOLUMES="$SW_WORKERS" SEAWEEDFS_PORT_BASE="${SEAWEEDFS_PORT_BASE:-19700}" bash scripts/seaweedfs.sh start "$SW")"
  # (set -e holds in the trap too: the cluster may be gone already.)
  trap 'bash scripts/seaweedfs.sh stop "$SW"; kill -INT $CLUSTER 2>/dev/null || true; wait $CLUSTER 2>/dev/null || true' EXIT
  input="seaweedfs://$QUERN_SEAWEEDFS_FILER/bench/access.log"
  t0=$(now); QUERN_SEAWEEDFS_CHUNK_MB=64 "$Q" fs put "$BENCH_DIR/access.log" "$input" 2>/dev/null; t1=$(now)
  printf "(upload of the log to SeaweedFS: %.1f s)\n" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')"
  bytes=$(stat -c %s "$BENCH_DIR/access.log")
  tv=$(awk -F'|' '$2 == " views " && $3 == " quern local, 2 workers " {print $4}' "$TABLE")
  # Twice: chunks read from the volume files beside each worker (the default), then over
  # HTTP (QUERN_SHORT_CIRCUIT_READS=0, which the workers' executors inherit).
  for sc in 1 0; do
    rm -rf "$BENCH_DIR/.quern-sw"
    QUERN_SHORT_CIRCUIT_READS=$sc "$Q" local --workers "$SW_WORKERS" --slots 1 --storage-hosts "$QUERN_VOLUME_SERVERS" \
      --dir "$BENCH_DIR/.quern-sw" >/dev/null 2>"$BENCH_DIR/cluster-sw.log" &
    CLUSTER=$!
    while [ ! -f "$BENCH_DIR/.quern-sw/coordinator.addr" ]; do sleep 0.1; done
    export QUERN_COORDINATOR="$(cat "$BENCH_DIR/.quern-sw/coordinator.addr")"
    times=(); ltimes=()
    for _ in $(seq "$RUNS"); do
      if [ "$sc" = 1 ]; then
        # The same cluster on the local file, in turns with the SeaweedFS runs: the same job
        # on the same workers, only where its input lies differs.
        t2=$(now)
        "$Q" job submit views --input "$(realpath "$BENCH_DIR/access.log")" --output "$BENCH_DIR/out/views-local3" --reducers "$REDUCERS" --overwrite >/dev/null 2>&1
        t3=$(now)
        ltimes+=("$(awk -v a="$t2" -v b="$t3" 'BEGIN { print b - a }')")
        cmp -s <(cat "$BENCH_DIR/out/views-local"/part-*) <(cat "$BENCH_DIR/out/views-local3"/part-*) || echo "warning: 3-worker local-file output differs from local" >&2
      fi
      t2=$(now)
      out=$("$Q" job submit views --input "$input" --output "$BENCH_DIR/out/views-seaweedfs" --reducers "$REDUCERS" --overwrite 2>/dev/null)
      t3=$(now)
      times+=("$(awk -v a="$t2" -v b="$t3" 'BEGIN { print b - a }')")
      cmp -s <(cat "$BENCH_DIR/out/views-local"/part-*) <(cat "$BENCH_DIR/out/views-seaweedfs"/part-*) || echo "warning: seaweedfs output differs from local" >&2
    done
    kill -INT $CLUSTER 2>/dev/null; wait $CLUSTER 2>/dev/null || true
    ts=$(printf "%s\n" "${times[@]}" | median)
    if [ "$sc" = 1 ]; then
      t3w=$(printf "%s\n" "${ltimes[@]}" | median)
      printf "%-11s %-22s %8.2f %8s %8s   the SeaweedFS cluster's %s workers, input on the local file\n" views "local file, $SW_WORKERS workers" "$t3w" "$(mbps "$bytes" "$t3w")" "-" "$SW_WORKERS"
      printf "| views | input on the local file, the SeaweedFS run's %s workers | %.2f | %s | - |\n" "$SW_WORKERS" "$t3w" "$(mbps "$bytes" "$t3w")" >>"$TABLE"
    fi
    local_maps=$(awk '$1 == "data_local_maps" {print $2}' <<<"$out")
    remote_maps=$(awk '$1 == "remote_maps" {print $2}' <<<"$out")
    how="chunks read from the volume files"; [ "$sc" = 0 ] && how="chunks read over HTTP"
    printf "%-11s %-22s %8.2f %8s %8s   %s; data-local %s of %s maps\n" views "seaweedfs, $SW_WORKERS workers" "$ts" "$(mbps "$bytes" "$ts")" "-" "$how" "$local_maps" "$((local_maps + remote_maps))"
    printf "| views | input in SeaweedFS, %s workers, %s (%s× the same workers on the local file, %s× the 2 workers above; data-local maps: %s of %s) | %.2f | %s | - |\n" \
      "$SW_WORKERS" "$how" "$(ratio "$ts" "$t3w")" "$(ratio "$ts" "$tv")" "$local_maps" "$((local_maps + remote_maps))" "$ts" "$(mbps "$bytes" "$ts")" >>"$TABLE"
  done
fi
printf "\nThe plain program by its own clock (its exit left out), 1 and 2 threads: %s.\n" "$OWN_CLOCK" >>"$TABLE"
write_doc_table "$TABLE" latest
