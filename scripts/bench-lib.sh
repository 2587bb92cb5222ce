# Helpers shared by the benchmark scripts (sourced, not run). They expect $Q (the quern
# binary) to be set.

CLUSTER=

# start_cluster DIR [quern local flags...]: a fresh `quern local` with its state in DIR/.quern
# and its log in DIR/cluster.log; waits for its address and exports QUERN_COORDINATOR. A
# cluster that dies before it is up ends the script with its log.
start_cluster() {
  local dir="$1"
  shift
  rm -rf "$dir/.quern"
  "$Q" local "$@" --dir "$dir/.quern" >/dev/null 2>"$dir/cluster.log" &
  CLUSTER=$!
  while [ ! -f "$dir/.quern/coordinator.addr" ]; do
    if ! kill -0 "$CLUSTER" 2>/dev/null; then
      cat "$dir/cluster.log" >&2
      echo "the cluster did not start (log above)" >&2
      exit 1
    fi
    sleep 0.1
  done
  QUERN_COORDINATOR="$(cat "$dir/.quern/coordinator.addr")"
  export QUERN_COORDINATOR
}

# stop_cluster: stops the cluster start_cluster started, if any (also set as the EXIT trap).
stop_cluster() {
  [ -n "$CLUSTER" ] && { kill -INT "$CLUSTER" 2>/dev/null; wait "$CLUSTER" 2>/dev/null || true; }
  CLUSTER=
}
trap stop_cluster EXIT

# machine: what the figures were measured on, and when (`x86_64, 2 cores, 24 GiB; 2026-12-04`).
machine() {
  printf '%s, %s cores, %s; %s' "$(uname -m)" "$(nproc)" \
    "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)" "$(date -u +%Y-%m-%d)"
}

# median: the median of the numbers on stdin, one per line.
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# gen_once KIND SIZE FILE: `quern gen KIND --size SIZE --seed 1` into FILE, unless FILE holds
# it already: kept while its first 4 KiB are what the generator writes now (its output does not
# depend on the size asked for), so that a changed generator is not measured on old input.
gen_once() {
  local probe
  probe=$(mktemp)
  "$Q" gen "$1" --size 4KiB --seed 1 --out "$probe" >/dev/null 2>&1
  if ! [ -f "$3" ] || ! cmp -s -n "$(stat -c %s "$probe")" "$probe" "$3"; then
    "$Q" gen "$1" --size "$2" --seed 1 --out "$3" >&2
  fi
  rm -f "$probe"
}

# gen_inputs DIR: 1 GiB of each input kind (weblog, words, sort-records) as DIR/KIND.1g,
# generated once.
gen_inputs() {
  local kind
  for kind in weblog words sort-records; do gen_once "$kind" 1GiB "$1/$kind.1g"; done
}

# write_doc_table TABLE NAME [DOC]: puts the file TABLE into DOC (default docs/PERFORMANCE.md)
# between the markers <!-- NAME:begin --> and <!-- NAME:end -->.
write_doc_table() {
  local doc="${3:-docs/PERFORMANCE.md}"
  python3 - "$1" "$doc" "$2" <<'PYEOF2'
import sys
table, doc, name = open(sys.argv[1]).read().strip(), sys.argv[2], sys.argv[3]
text = open(doc).read()
begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
open(doc, "w").write(f"{head}{begin}\n{table}\n{end}{tail}")
PYEOF2
  echo "written to $doc" >&2
}
