#!/usr/bin/env bash
# Benchmark: the `sort` job (TeraSort layout: 100-byte records, 10-byte keys) against a plain
# in-memory sort and DuckDB, on the same input in the same run.
#
# Generates $SIZE (default 1GiB, 10^7 records) of `quern gen sort-records` once under
# $BENCH_DIR (default bench-data/), then times, median of $RUNS (default 3):
#   - plain:   jobs/examples/baseline.rs `sort`, 2 threads (each sorts half of the records'
#              keys in memory, the halves are merged while writing 1 MiB buffers);
#   - quern run --local, and a `quern local` cluster of 2 workers (submit to finished);
#   - DuckDB (PyPI `duckdb`, installed into $BENCH_DIR/duckdb-venv if missing), 2 threads:
#     COPY (SELECT ... ORDER BY the key) TO a file.
# Every output is checked against the plain program's (DuckDB's writes `\n` line ends, so it
# is compared without the `\r`s). Also prints the engine's bytes written per input byte, from
# its counters. Writes the table to $BENCH_DIR/sort.md and into docs/PERFORMANCE.md (between
# its sort markers). Not a test: it asserts nothing about time.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/quern/target}"
BENCH_DIR="${BENCH_DIR:-bench-data}"
SIZE="${SIZE:-1GiB}"
RUNS="${RUNS:-3}"
REDUCERS="${REDUCERS:-2}"
export QUERN_CONFIG=none

cargo build --release --bin quern >&2
cargo build --release -p quern-jobs --example baseline >&2
Q="$CARGO_TARGET_DIR/release/quern"
B="$CARGO_TARGET_DIR/release/examples/baseline"
D="$BENCH_DIR/sort"
mkdir -p "$D"
IN="$D/records.txt"
[ -f "$IN" ] || "$Q" gen sort-records --size "$SIZE" --seed 1 --out "$IN" >&2
rm -rf "$D/out" "$D/.quern"
mkdir -p "$D/out"

PY="${PYTHON:-python3}"
if ! "$PY" -c 'import duckdb' 2>/dev/null; then
  if [ ! -x "$D/duckdb-venv/bin/python" ]; then
    python3 -m venv "$D/duckdb-venv" >&2 && "$D/duckdb-venv/bin/pip" install -q duckdb >&2 || true
  fi
  PY="$D/duckdb-venv/bin/python"
fi
have_duckdb=no
"$PY" -c 'import duckdb' 2>/dev/null && have_duckdb=yes

. scripts/bench-lib.sh
start_cluster "$D" --workers 2

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { print b - a }'; }
cat "$IN" >/dev/null  # warm the page cache
bytes=$(stat -c %s "$IN")

# Timed from outside, start to exit, as the other runners are (the program's own clock leaves
# out its exit, where the kernel unmaps the input it read).
plain() { local t0; t0=$(now); "$B" sort "$IN" 2 "$D/out/plain.txt" >/dev/null; since "$t0"; }
local_run() { rm -rf "$D/out/local"; local t0; t0=$(now); "$Q" run --local sort --input "$IN" --output "$D/out/local" --reducers "$REDUCERS" >"$D/out/local.txt"; since "$t0"; }
cluster_run() { rm -rf "$D/out/cluster"; local t0; t0=$(now); "$Q" job submit sort --input "$IN" --output "$D/out/cluster" --reducers "$REDUCERS" >"$D/out/cluster.txt" 2>&1; since "$t0"; }
duck_run() {
  rm -f "$D/out/duck.txt"
  "$PY" - "$IN" "$D/out/duck.txt" <<'PYEOF'
import sys, time, duckdb
src, dst = sys.argv[1], sys.argv[2]
t0 = time.time()
con = duckdb.connect()
con.execute("SET threads = 2")
con.execute(f"""COPY (SELECT line FROM read_csv('{src}', columns = {{'line': 'VARCHAR'}},
    header = false, delim = '\x01', quote = '', escape = '', auto_detect = false)
    ORDER BY substr(line, 1, 10)) TO '{dst}' (HEADER false, QUOTE '', DELIMITER '\x01')""")
print(f"{time.time() - t0:.3f}")
PYEOF
}

tp=$(for i in $(seq "$RUNS"); do plain; done | median)
tl=$(for i in $(seq "$RUNS"); do local_run; done | median)
tc=$(for i in $(seq "$RUNS"); do cluster_run; done | median)
td=-
[ "$have_duckdb" = yes ] && td=$(for i in $(seq "$RUNS"); do duck_run; done | median)

same=yes
cmp -s "$D/out/plain.txt" <(cat "$D/out/local"/part-*) || { same=no; echo "warning: run --local output differs from plain" >&2; }
cmp -s "$D/out/plain.txt" <(cat "$D/out/cluster"/part-*) || { same=no; echo "warning: cluster output differs from plain" >&2; }
if [ "$have_duckdb" = yes ]; then
  cmp -s <(tr -d '\r' <"$D/out/plain.txt") <(tr -d '\r' <"$D/out/duck.txt") || { same=no; echo "warning: DuckDB output differs from plain" >&2; }
fi

# Bytes the engine wrote per input byte: map output (shuffle), spills, and the part files.
counter() { awk -v k="$1" '$1 == k { print $2 }' "$D/out/cluster.txt"; }
shuffle=$(counter map_output_materialized_bytes); spilled=$(counter spilled_bytes); output=$(counter output_bytes)
per() { awk -v a="${1:-0}" -v b="$bytes" 'BEGIN { printf "%.2f", a / b }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

table="$BENCH_DIR/sort.md"
{
  printf 'Machine: %s. Input %s MB (%s records), %s reducers, median of %s runs; outputs identical: %s.\n\n' \
    "$(machine)" "$((bytes / 1000000))" "$((bytes / 100))" "$REDUCERS" "$RUNS" "$same"
  printf '| runner | seconds | MB/s | × plain 2 threads |\n|---|---:|---:|---:|\n'
  for r in "plain, 2 threads:$tp" "quern run --local:$tl" "quern local, 2 workers:$tc" "DuckDB, 2 threads:$td"; do
    name="${r%%:*}"; secs="${r##*:}"
    if [ "$secs" = - ]; then printf '| %s | not run (no duckdb) | | |\n' "$name"; continue; fi
    printf '| %s | %.2f | %.0f | %s |\n' "$name" "$secs" "$(awk -v b="$bytes" -v s="$secs" 'BEGIN { print b / s / 1e6 }')" "$(ratio "$secs" "$tp")"
  done
  printf '\nThe cluster wrote, per input byte: %s in map output (the shuffle), %s in spills, %s in part files.\n' \
    "$(per "$shuffle")" "$(per "$spilled")" "$(per "$output")"
} >"$table"
cat "$table"

write_doc_table "$table" sort
