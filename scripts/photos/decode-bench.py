#!/usr/bin/env python3
"""Pillow (libjpeg-turbo) decode-and-preprocess cost per photo, with and without JPEG
DCT-domain scaling (Image.draft), and what the scaling does to the model's scores.

    decode-bench.py MODEL.safetensors CLASSES.txt PHOTO...

Prints per photo: ms for a full decode + resize + crop, ms with DCT scaling, and for JPEGs
the largest change in the reference model's top-5 scores that the scaling causes.
"""

import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import reference  # noqa: E402


def prep(path, draft):
    img = Image.open(path)
    if draft and img.format == "JPEG":
        w, h = img.size
        scale = 256 / min(w, h)
        # Ask libjpeg for the smallest DCT scale that keeps the short side >= 256.
        img.draft("RGB", (int(w * scale) + 1, int(h * scale) + 1))
    img = img.convert("RGB")
    w, h = img.size
    nw, nh = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
    img = img.resize((nw, nh), Image.BILINEAR)
    top, left = int(round((nh - 224) / 2.0)), int(round((nw - 224) / 2.0))
    x = np.asarray(img.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255.0
    return ((x - reference.MEAN) / reference.STD).transpose(2, 0, 1)


def timed(path, draft, rounds=5):
    prep(path, draft)
    t = time.perf_counter()
    for _ in range(rounds):
        prep(path, draft)
    return (time.perf_counter() - t) * 1000 / rounds


def main():
    w = reference.load_safetensors(sys.argv[1])
    for path in sys.argv[3:]:
        full, scaled = timed(path, False), timed(path, True)
        delta = ""
        if path.lower().endswith(".jpg"):
            a, b = reference.forward(prep(path, False), w), reference.forward(prep(path, True), w)
            top = np.argsort(-a)[:5]
            delta = f"{np.abs(a[top] - b[top]).max():.4f}"
            if np.argmax(a) != np.argmax(b):
                delta += " (top-1 changes)"
        print(f"{path.rsplit('/', 1)[-1]}\t{full:.2f}\t{scaled:.2f}\t{delta}")


if __name__ == "__main__":
    main()
