#!/usr/bin/env bash
# Reads the photos job's Parquet output with an independent reader (pyarrow, from PyPI, into
# a venv under target/ if missing) and checks every row against the job's JSON lines over the
# same photos: key, top5, error, meta, and the embeddings as f32, exactly.
#
#   bash scripts/photos/parquet-check.sh [PHOTOS_DIR]    # default: the golden photos
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/quern/target}"
PHOTOS_DIR="${QUERN_PHOTOS_DIR:-$CARGO_TARGET_DIR/photos}"
Q="${QUERN:-$CARGO_TARGET_DIR/release/quern}"
[ -x "$Q" ] || cargo build --release --bin quern >&2
VENV="${PARQUET_VENV:-$CARGO_TARGET_DIR/pyarrow-venv}"
if ! "$VENV/bin/python" -c 'import pyarrow, numpy' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet pyarrow numpy
fi
SRC="${1:-$PHOTOS_DIR/golden}"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
for output in parquet lines; do
  "$Q" run --local photos --param model="$PHOTOS_DIR/mobilenet_v2.safetensors" --param embeddings=true \
    --param output=$output --reducers 2 --input "$SRC" --output "$W/$output" > "$W/$output.log" 2>&1 ||
    { cat "$W/$output.log" >&2; exit 1; }
done
"$VENV/bin/python" - "$W" <<'PYEOF2'
import glob, json, sys
import numpy as np, pyarrow, pyarrow.parquet as pq
w = sys.argv[1]
rows = [r for f in sorted(glob.glob(f"{w}/parquet/part-*")) for r in pq.read_table(f).to_pylist()]
lines = [json.loads(l) for f in sorted(glob.glob(f"{w}/lines/part-*")) for l in open(f) if l.startswith("{")]
a, b = sorted(rows, key=lambda r: r["key"]), sorted(lines, key=lambda r: r["key"])
assert len(a) == len(b), (len(a), len(b))
for x, y in zip(a, b):
    assert x["key"] == y["key"], (x["key"], y["key"])
    assert x["top5"] == y.get("top5"), x["key"]
    assert x["error"] == y.get("error"), x["key"]
    assert (json.loads(x["meta"]) if x["meta"] is not None else None) == y.get("meta"), x["key"]
    if "embedding" in y:
        assert np.array_equal(np.float32(x["embedding"]), np.float32(y["embedding"])), x["key"]
    else:
        assert x["embedding"] is None, x["key"]
print(f"parquet-check: pyarrow {pyarrow.__version__} read {len(a)} rows, each equal to its JSON line")
PYEOF2
