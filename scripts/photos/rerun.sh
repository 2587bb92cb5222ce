#!/usr/bin/env bash
# Re-inference with a result store, measured: what a re-run computes after new photos arrive,
# after some photos were edited, and after the model changed, with the job's own counters and
# times, each re-run's output checked byte for byte against a full run of the same input.
#
#   bash scripts/photos/rerun.sh    # writes the table into docs/PHOTOS.md
#
# The photos are the golden photographs of scripts/photos/setup.sh, each in $COPIES versions
# that differ in their bytes (a JPEG comment, or a PNG text chunk, numbered), so every one is
# decoded and run through the model as a photo of its own. Runs are `quern run photos` (one
# process, the oracle) on this machine's CPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
COPIES="${COPIES:-20}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export QUERN_PHOTOS_DIR="${QUERN_PHOTOS_DIR:-$CARGO_TARGET_DIR/photos}"
bash scripts/photos/setup.sh >/dev/null
cargo build --release --bin quern >/dev/null
Q="$CARGO_TARGET_DIR/release/quern"
source scripts/bench-lib.sh
MODEL="$QUERN_PHOTOS_DIR/mobilenet_v2.safetensors"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# make DIR FROM TO [TAG]: versions FROM..TO-1 of every golden photo into DIR.
make() {
  python3 - "$QUERN_PHOTOS_DIR/golden" "$@" <<'PYEOF'
import os, struct, sys, zlib
golden, out, lo, hi = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
tag = sys.argv[5] if len(sys.argv) > 5 else "copy"
os.makedirs(out, exist_ok=True)
for name in sorted(os.listdir(golden)):
    data = open(os.path.join(golden, name), "rb").read()
    stem, ext = name.rsplit(".", 1)
    for i in range(lo, hi):
        text = f"{tag} {i}".encode()
        if ext == "jpg":
            body = data[:2] + b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text + data[2:]
        else:  # a tEXt chunk after IHDR (8 + 25 bytes)
            chunk = b"tEXt" + b"Comment\0" + text
            body = data[:33] + struct.pack(">I", len(chunk) - 4) + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]
        open(os.path.join(out, f"{stem}-{i:03d}.{ext}"), "wb").write(body)
PYEOF
}

now() { date +%s.%N; }
# job NAME MODEL OUT STORE INPUTS...: runs the job; prints "reused computed seconds".
job() {
  local name=$1 model=$2 out=$3 store=$4 t0 inputs=()
  shift 4
  for i in "$@"; do inputs+=(--input "$i"); done
  t0=$(now)
  "$Q" run photos --param model="$model" ${store:+--param results="$store"} "${inputs[@]}" \
    --reducers 2 --output "$out" > "$WORK/$name.log" 2>&1 || { cat "$WORK/$name.log" >&2; exit 1; }
  local t; t=$(echo "$(now) - $t0" | bc)
  local reused computed
  reused=$(awk '$1 == "reused_photos" {print $2}' "$WORK/$name.log")
  computed=$(awk '$1 == "computed_photos" {print $2}' "$WORK/$name.log")
  printf '%s %s %.1f\n' "$reused" "$computed" "$t"
}
same() { diff -r "$1" "$2" >/dev/null && echo yes || echo NO; }

first=$((COPIES * 9 / 10))
make "$WORK/photos" 0 "$first"
make "$WORK/new-photos" "$first" "$COPIES"
"$Q" photos pack "$WORK/photos" --out "$WORK/shards" --shard-size 8MiB >/dev/null
n1=$(ls "$WORK/photos" | wc -l)
n2=$(ls "$WORK/new-photos" | wc -l)
STORE="$WORK/store"
TABLE="$WORK/table.md"
{
  echo "| run | photos | reused | computed | seconds | output = full run |"
  echo "|---|---:|---:|---:|---:|---|"
  read -r r c t < <(job first "$MODEL" "$WORK/out-1" "$STORE" "$WORK/shards")
  echo "| first run, with an empty store | $n1 | $r | $c | $t | |"
  # New photos arrive, in shards of their own.
  "$Q" photos pack "$WORK/new-photos" --out "$WORK/new-shards" --shard-size 8MiB >/dev/null
  read -r r c t < <(job new "$MODEL" "$WORK/out-2" "$STORE" "$WORK/shards" "$WORK/new-shards")
  read -r _ _ tf < <(job new-full "$MODEL" "$WORK/full-2" "" "$WORK/shards" "$WORK/new-shards")
  echo "| $n2 new photos arrived | $((n1 + n2)) | $r | $c | $t (full run: $tf) | $(same "$WORK/out-2" "$WORK/full-2") |"
  # The first copy of every golden photo is edited (other bytes) and the shards packed again.
  make "$WORK/photos" 0 1 edited
  rm -rf "$WORK/shards"
  "$Q" photos pack "$WORK/photos" --out "$WORK/shards" --shard-size 8MiB >/dev/null
  read -r r c t < <(job edit "$MODEL" "$WORK/out-3" "$STORE" "$WORK/shards" "$WORK/new-shards")
  read -r _ _ tf < <(job edit-full "$MODEL" "$WORK/full-3" "" "$WORK/shards" "$WORK/new-shards")
  echo "| 11 photos edited, shards packed again | $((n1 + n2)) | $r | $c | $t (full run: $tf) | $(same "$WORK/out-3" "$WORK/full-3") |"
  # A retrained model (one weight changed in its last bit).
  cp "$MODEL" "$WORK/model-v2.safetensors"
  python3 -c 'import sys; f = open(sys.argv[1], "r+b"); f.seek(-4, 2); b = f.read(1); f.seek(-4, 2); f.write(bytes([b[0] ^ 1]))' "$WORK/model-v2.safetensors"
  read -r r c t < <(job model "$WORK/model-v2.safetensors" "$WORK/out-4" "$STORE" "$WORK/shards" "$WORK/new-shards")
  read -r _ _ tf < <(job model-full "$WORK/model-v2.safetensors" "$WORK/full-4" "" "$WORK/shards" "$WORK/new-shards")
  echo "| the model changed | $((n1 + n2)) | $r | $c | $t (full run: $tf) | $(same "$WORK/out-4" "$WORK/full-4") |"
  read -r r c t < <(job again "$WORK/model-v2.safetensors" "$WORK/out-5" "$STORE" "$WORK/shards" "$WORK/new-shards")
  echo "| nothing changed | $((n1 + n2)) | $r | $c | $t | $(same "$WORK/out-5" "$WORK/full-4") |"
  echo
  echo "$(nproc) cores, CPU, $COPIES versions of each of the 11 golden photos, $(date -u +%Y-%m-%d)."
} > "$TABLE"
cat "$TABLE"
write_doc_table "$TABLE" rerun docs/PHOTOS.md
