#!/usr/bin/env bash
# The photos job on an NVIDIA GPU, checked and timed against torchvision, in one run.
#
#   bash scripts/photos/gpu-check.sh prepare   # on the build machine: fills target/gpu-carry
#   bash scripts/photos/gpu-check.sh [run]     # on the GPU machine (or any, see DEVICE)
#
# `prepare` builds quern and the plain candle loop with CUDA (scripts/photos/build-cuda.sh),
# strips and compresses them, and copies the model weights and the source photos (the
# golden photographs of scripts/photos/setup.sh) into $CARRY (default target/gpu-carry,
# under 64 MiB: what a GPU machine with no toolchain and no network is given).
#
# `run` needs no toolchain and no network. It finds a Python with torch and torchvision
# and points the loader at the CUDA 13 libraries of its nvidia-* packages (so none is
# carried), then:
#   1. golden: the job (`run --local`) on the 11 golden photos on $DEVICE in f32, f16 and
#      bf16, each checked against the NumPy reference (testdata/photos/expected.json: same
#      top-1, top-3 scores within 0.03) and against the CPU's output;
#   2. makes $PHOTOS distinct photos (random crops of the golden ones at 480-1600 pixels,
#      mostly JPEG) and packs them into shards of $SHARD;
#   3. times, from start to end with model loading included: the plain candle loop (decode
#      on $THREADS threads while the model runs), `quern run --local`, and a `quern local`
#      cluster (1 worker, $SLOTS slots sharing the threads), in f32, and the cluster in f16
#      and bf16; checks the cluster's output is byte-identical to run --local's; reports the
#      model's starved share, model_wait_ms / (model_wait_ms + model_busy_ms);
#   4. times torchvision's mobilenet_v2 with the same weights in a DataLoader with
#      $THREADS - 1 decode workers, same photos and batch, in f32 and f16, and compares its
#      top-1 labels with the job's;
#   5. top-1 agreement of f16 and bf16 with f32 over all the photos.
# The report and the logs go to $OUT when it is set, else to $WORK/logs.
# DEVICE=cpu runs the same steps on the CPU (what a machine without a GPU can check).
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
CARRY="${CARRY:-$ROOT/target/gpu-carry}"

if [ "${1:-run}" = prepare ]; then
  set -e
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
  bash scripts/photos/setup.sh
  bash scripts/photos/build-cuda.sh
  CUDA_TARGET="${QUERN_CUDA_TARGET_DIR:-${CARGO_TARGET_DIR%/}-cuda}"
  PHOTOS_DIR="${QUERN_PHOTOS_DIR:-$CARGO_TARGET_DIR/photos}"
  rm -rf "$CARRY" && mkdir -p "$CARRY"
  for b in release/quern release/examples/plain_loop; do
    strip -o "$CARRY/$(basename "$b")" "$CUDA_TARGET/$b"
    xz -T0 -6 "$CARRY/$(basename "$b")"
  done
  cp "$PHOTOS_DIR/mobilenet_v2.safetensors" "$CARRY/"
  cp -r "$PHOTOS_DIR/golden" "$CARRY/golden"
  du -sh "$CARRY"/*
  size=$(du -sm "$CARRY" | cut -f1)
  [ "$size" -lt 60 ] || { echo "gpu-check: $CARRY is $size MiB, more than a GPU run may carry" >&2; exit 1; }
  echo "gpu-check: ready in $CARRY ($size MiB)"
  exit 0
fi

DEVICE="${DEVICE:-cuda}"
WORK="${WORK:-/tmp/quern-gpu-check}"
PHOTOS="${PHOTOS:-8000}"
SHARD="${SHARD:-64MiB}"
BATCH="${BATCH:-64}"
THREADS="${THREADS:-$(nproc)}"
SLOTS="${SLOTS:-2}"
STEP_TIMEOUT="${STEP_TIMEOUT:-150}"
# Half precision runs on a GPU only.
PRECISIONS="f32 f16 bf16"
[ "$DEVICE" = cpu ] && PRECISIONS=f32
# Logs and the report go straight to $OUT when it is set (what a GPU run brings back, even
# when it is cut short), else beside the work.
L="${OUT:-$WORK/logs}"
rm -rf "$WORK" && mkdir -p "$WORK/bin" "$L"
REPORT="$L/report.md"
: > "$REPORT"
say() { echo "$*" | tee -a "$REPORT"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }
counter() { awk -v c="$2" '$1 == c { print $2 }' "$1"; }
starved() {
  awk -v w="$(counter "$1" model_wait_ms)" -v b="$(counter "$1" model_busy_ms)" \
    'BEGIN { if (w + b > 0) printf "%.1f%%", 100 * w / (w + b); else print "-" }'
}

# Binaries: the carried CUDA build, or QUERN_BIN / PLAIN_BIN (a CPU build, for DEVICE=cpu).
unpack() {
  if [ -n "${2:-}" ]; then cp "$2" "$WORK/bin/$1"
  elif command -v xz >/dev/null; then xz -dc "$CARRY/$1.xz" > "$WORK/bin/$1"
  else python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$CARRY/$1.xz" "$WORK/bin/$1"
  fi
  chmod +x "$WORK/bin/$1"
}
unpack quern "${QUERN_BIN:-}"
unpack plain_loop "${PLAIN_BIN:-}"
Q="$WORK/bin/quern"
P="$WORK/bin/plain_loop"
MODEL="${MODEL:-$CARRY/mobilenet_v2.safetensors}"
GOLDEN="${GOLDEN:-$CARRY/golden}"

# A Python with torch and torchvision (the GPU image has one; its nvidia-* packages hold the
# CUDA 13 libraries the binaries link).
PY=""
for p in "${PYTHON:-}" python3 python /opt/conda/bin/python /usr/local/bin/python3 /usr/bin/python3 $(ls -d /opt/*/bin/python3 /root/*/bin/python3 /venv/bin/python3 2>/dev/null); do
  [ -n "$p" ] && command -v "$p" >/dev/null && "$p" -c 'import torch, torchvision' 2>/dev/null && { PY="$p"; break; }
done
if [ -z "$PY" ]; then
  for p in $(find / -xdev -maxdepth 5 -type f -name 'python3*' -path '*/bin/*' 2>/dev/null); do
    "$p" -c 'import torch, torchvision' 2>/dev/null && { PY="$p"; break; }
  done
fi
[ -n "$PY" ] || PY=python3
H="$PY $ROOT/scripts/photos/gpucheck.py"
export LD_LIBRARY_PATH="$($H cuda-libs)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The driver library, where the loader's default paths lack it.
if [ "$DEVICE" = cuda ] && ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1'; then
  d=$(find / -xdev -maxdepth 6 -name libcuda.so.1 -not -path '*/stubs/*' 2>/dev/null | head -1)
  [ -n "$d" ] && LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$(dirname "$d")"
fi

say "# Photos job GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
say ""
say "- machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
say "- GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo none)"
say "- python: $PY ($("$PY" -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__, "cuda", torch.version.cuda)' 2>/dev/null || echo 'no torch'))"
say "- device: $DEVICE; batch $BATCH; $THREADS decode threads; $PHOTOS photos"
missing=$(ldd "$Q" | grep 'not found' || true)
[ -z "$missing" ] || say "- MISSING LIBRARIES: $missing"
say ""

# 1. Golden photos on the device, three precisions, against the reference and the CPU.
say "## 1. Golden photos"
say ""
"$Q" photos pack "$GOLDEN" --out "$WORK/golden-shards" > "$L/pack-golden.log" 2>&1
gold() { # NAME DEVICE PRECISION
  timeout "$STEP_TIMEOUT" "$Q" run --local photos --param model="$MODEL" --param device="$2" --param precision="$3" \
    --param batch="$BATCH" --input "$WORK/golden-shards" --output "$WORK/golden-$1" > "$L/golden-$1.log" 2>&1
}
gold cpu cpu f32 || say "- CPU run failed: $(tail -3 "$L/golden-cpu.log")"
fails=0
for prec in $PRECISIONS; do
  if gold "$DEVICE-$prec" "$DEVICE" "$prec"; then
    res=$($H golden "$WORK/golden-$DEVICE-$prec" "$ROOT/testdata/photos/expected.json" "$WORK/golden-cpu" 2>&1) || fails=$((fails + 1))
    g=$(counter "$L/golden-$DEVICE-$prec.log" gpu_tasks)
    say "- $DEVICE $prec (GPU tasks: ${g:-0}): $res"
  else
    fails=$((fails + 1))
    say "- $DEVICE $prec: FAILED: $(grep -m1 -E '^error|Error' "$L/golden-$DEVICE-$prec.log")"
  fi
done
say ""

# 2. Photos to time.
t0=$(now)
$H make-photos "$GOLDEN" "$WORK/photos" "$PHOTOS" > "$L/make-photos.log" 2>&1 || say "make-photos failed: $(tail -3 "$L/make-photos.log")"
"$Q" photos pack "$WORK/photos" --out "$WORK/shards" --shard-size "$SHARD" > "$L/pack.log" 2>&1
n=$(ls "$WORK/photos" | wc -l)
cat "$WORK/photos"/* > /dev/null
say "## 2. Throughput"
say ""
say "$(cat "$L/make-photos.log"); $(tail -1 "$L/pack.log") (made in $(since "$t0") s)"
say ""
say "| runner | precision | seconds | photos/s | model starved |"
say "|---|---|---:|---:|---:|"
row() { say "| $1 | $2 | $3 | $(rate "$n" "$3") | $4 |"; }

plain() { # PRECISION
  local log="$L/plain-$1.log" t
  t0=$(now)
  if timeout "$STEP_TIMEOUT" "$P" "$WORK/photos" "$MODEL" "$BATCH" "$THREADS" "$DEVICE" "$1" > "$log" 2>&1; then
    t=$(since "$t0"); row "plain candle loop" "$1" "$t" "$(grep -oE 'waited [0-9.]+%' "$log" | cut -d' ' -f2)"
  else say "| plain candle loop | $1 | FAILED: $(tail -1 "$log") | | |"; fi
}
plain f32

t0=$(now)
if timeout "$STEP_TIMEOUT" "$Q" run --local photos --param model="$MODEL" --param device="$DEVICE" --param batch="$BATCH" \
  --param decode-threads="$THREADS" --input "$WORK/shards" --output "$WORK/out-local" > "$L/local.log" 2>&1; then
  row "quern run --local" f32 "$(since "$t0")" "$(starved "$L/local.log")"
else say "| quern run --local | f32 | FAILED: $(tail -1 "$L/local.log") | | |"; fi

"$Q" local --workers 1 --slots "$SLOTS" --dir "$WORK/cluster" --no-http > "$L/cluster-daemons.log" 2>&1 &
CLUSTER=$!
trap 'kill -INT $CLUSTER 2>/dev/null; wait $CLUSTER 2>/dev/null' EXIT
for _ in $(seq 300); do [ -f "$WORK/cluster/coordinator.addr" ] && break; sleep 0.1; done
export QUERN_COORDINATOR="$(cat "$WORK/cluster/coordinator.addr" 2>/dev/null)"
cluster() { # PRECISION
  local log="$L/cluster-$1.log"
  t0=$(now)
  if timeout "$STEP_TIMEOUT" "$Q" job submit photos --param model="$MODEL" --param device="$DEVICE" --param precision="$1" \
    --param batch="$BATCH" --param decode-threads=$((THREADS / SLOTS)) \
    --input "$WORK/shards" --output "$WORK/out-cluster-$1" > "$log" 2>&1; then
    row "quern local, 1 worker x $SLOTS slots" "$1" "$(since "$t0")" "$(starved "$log")"
  else say "| quern local, 1 worker x $SLOTS slots | $1 | FAILED: $(grep -m1 -E '^error|Error' "$log") | | |"; fi
}
cluster f32
same="differ"
[ -s "$WORK/out-local/part-00000" ] && cmp -s <(cat "$WORK/out-local"/part-*) <(cat "$WORK/out-cluster-f32"/part-* 2>/dev/null) && same="byte-identical"
for prec in $PRECISIONS; do [ "$prec" = f32 ] || cluster "$prec"; done

torch() { # PRECISION
  local log="$L/torch-$1.log"
  if timeout "$STEP_TIMEOUT" $H torch "$WORK/photos" "$MODEL" "$BATCH" $((THREADS - 1)) "$1" "$WORK/out-torch-$1" > "$log" 2>&1; then
    row "torchvision DataLoader, $((THREADS - 1)) workers" "$1" "$(grep -oE 'in [0-9.]+ s' "$log" | cut -d' ' -f2)" "$(grep -oE 'waited [0-9.]+%' "$log" | cut -d' ' -f2)"
  else say "| torchvision DataLoader | $1 | FAILED: $(tail -1 "$log") | | |"; fi
}
torch f32
torch f16
say ""
say "Seconds from start to end, model loading included (for the cluster: from job submit to"
say "its return). Cluster output against run --local: $same."
say ""

say "## 3. Agreement"
say ""
for prec in $PRECISIONS; do
  [ "$prec" = f32 ] || say "- $prec against f32 (quern): $($H agree "$WORK/out-cluster-$prec" "$WORK/out-cluster-f32" 2>&1 | tail -1)"
done
say "- torchvision f32 against quern f32: $($H agree "$WORK/out-torch-f32" "$WORK/out-cluster-f32" 2>&1 | tail -1)"
say "- torchvision f16 against torchvision f32: $($H agree "$WORK/out-torch-f16" "$WORK/out-torch-f32" 2>&1 | tail -1)"
say ""
say "Golden failures: $fails"
echo "gpu-check: report in $REPORT" >&2
cp "$L"/report.md "$WORK"/ 2>/dev/null || true
[ "$fails" -eq 0 ]
