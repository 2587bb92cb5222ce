#!/usr/bin/env bash
# Benchmark of the photos job on CPU: `bash scripts/bench.sh photos`.
#
# The photos are the real photographs of the scikit-image and scikit-learn wheels (the ones
# scripts/photos/setup.sh fetches), each copied $COPIES times (default 20: about 600 photos)
# under $BENCH_DIR/photos, then packed into shards of $SHARD (default 16MiB). Times:
#   - plain:   photos/examples/plain_loop.rs: decode a batch on $THREADS threads, then run
#              the model on it; the same model code, batch size and photos, no engine;
#   - local:   `quern run --local photos` (one process);
#   - cluster: `quern local --workers 1 --slots 1`, from submit to finished (one executor,
#              decoding on $THREADS threads while the model runs).
# Model loading is included in every figure. Prints seconds, photos/s and the ratio of the
# cluster's throughput to the plain loop's. Not a test. Figures go to docs/PERFORMANCE.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/quern/target}"
export QUERN_PHOTOS_DIR="${QUERN_PHOTOS_DIR:-$CARGO_TARGET_DIR/photos}"
BENCH_DIR="${BENCH_DIR:-bench-data}"
COPIES="${COPIES:-20}"
SHARD="${SHARD:-16MiB}"
BATCH="${BATCH:-32}"
THREADS="${THREADS:-$(nproc)}"

bash scripts/photos/setup.sh
cargo build --release -p quern -p quern-photos --bins --examples >&2
Q="$CARGO_TARGET_DIR/release/quern"
P="$CARGO_TARGET_DIR/release/examples/plain_loop"
MODEL="$QUERN_PHOTOS_DIR/mobilenet_v2.safetensors"

SRC="$BENCH_DIR/photos"
if [ ! -f "$SRC/.complete-$COPIES" ]; then
  rm -rf "$SRC" && mkdir -p "$SRC/orig"
  python3 - "$QUERN_PHOTOS_DIR/wheels" "$SRC/orig" <<'PY'
import sys, zipfile, glob, os
wheels, out = sys.argv[1:]
for whl in glob.glob(os.path.join(wheels, "scikit_*.whl")):
    with zipfile.ZipFile(whl) as z:
        for n in z.namelist():
            if (n.startswith("skimage/data/") or n.startswith("sklearn/datasets/images/")) and n.endswith((".png", ".jpg")):
                with open(os.path.join(out, os.path.basename(n)), "wb") as f:
                    f.write(z.read(n))
PY
  for f in "$SRC"/orig/*; do
    for i in $(seq -w 1 "$COPIES"); do cp "$f" "$SRC/c$i-$(basename "$f")"; done
  done
  rm -rf "$SRC/orig"
  touch "$SRC/.complete-$COPIES"
fi
n=$(ls "$SRC" | wc -l)
rm -rf "$BENCH_DIR/photo-shards" "$BENCH_DIR/out/photos-"*
"$Q" photos pack "$SRC" --out "$BENCH_DIR/photo-shards" --shard-size "$SHARD" >&2

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { print b - a }'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.1f", n / s }'; }
cat "$SRC"/* >/dev/null

plain=$("$P" "$SRC" "$MODEL" "$BATCH" "$THREADS" | awk '{print $4}')
t0=$(now)
"$Q" run --local photos --param model="$MODEL" --param batch="$BATCH" --param decode-threads="$THREADS" \
  --input "$BENCH_DIR/photo-shards" --output "$BENCH_DIR/out/photos-local" >/dev/null 2>&1
tl=$(since "$t0")

rm -rf "$BENCH_DIR/.quern-photos"
"$Q" local --workers 1 --slots 1 --dir "$BENCH_DIR/.quern-photos" --no-http >/dev/null 2>"$BENCH_DIR/photos-cluster.log" &
CLUSTER=$!
trap 'kill -INT $CLUSTER 2>/dev/null; wait $CLUSTER 2>/dev/null' EXIT
while [ ! -f "$BENCH_DIR/.quern-photos/coordinator.addr" ]; do sleep 0.1; done
export QUERN_COORDINATOR="$(cat "$BENCH_DIR/.quern-photos/coordinator.addr")"
t0=$(now)
summary=$("$Q" job submit photos --param model="$MODEL" --param batch="$BATCH" --param decode-threads="$THREADS" \
  --input "$BENCH_DIR/photo-shards" --output "$BENCH_DIR/out/photos-cluster" 2>&1)
tc=$(since "$t0")
cmp -s <(cat "$BENCH_DIR/out/photos-local"/part-*) <(cat "$BENCH_DIR/out/photos-cluster"/part-*) \
  || echo "warning: cluster output differs from local" >&2
wait_ms=$(echo "$summary" | awk '$1 == "model_wait_ms" {print $2}')
busy_ms=$(echo "$summary" | awk '$1 == "model_busy_ms" {print $2}')

printf "machine: %s, %s cores; %s photos, batch %s, %s decode threads\n" "$(uname -m)" "$(nproc)" "$n" "$BATCH" "$THREADS"
printf "%-28s %8s %9s %8s\n" runner seconds photos/s "x plain"
for r in "plain loop:$plain" "quern run --local:$tl" "quern local, 1 worker:$tc"; do
  name="${r%%:*}"; secs="${r##*:}"
  printf "%-28s %8.2f %9s %8s\n" "$name" "$secs" "$(rate "$n" "$secs")" "$(awk -v p="$plain" -v s="$secs" 'BEGIN { printf "%.2f", p / s }')"
done
printf "model waiting for decoded photos (cluster): %s%%\n" "$(awk -v w="$wait_ms" -v b="$busy_ms" 'BEGIN { printf "%.1f", 100 * w / (w + b) }')"
