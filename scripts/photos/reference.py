#!/usr/bin/env python3
"""Independent reference for the photos job: torchvision's MobileNetV2 forward pass in NumPy.

Preprocessing follows torchvision's ImageNet transform for this model, on Pillow: convert to
RGB, resize the short side to 256 (bilinear, antialiased, as torchvision's Resize does on PIL
images), center-crop 224, scale to [0, 1], normalise with the ImageNet mean and std. The
network reads the same safetensors file the engine loads, but shares no code with it: batch
norm is applied unfused, convolutions are written out with NumPy.

    reference.py MODEL.safetensors CLASSES.txt PHOTO... > expected.json
"""

import json
import struct
import sys

import numpy as np
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# (expansion t, output channels c, repeats n, first stride s), from the MobileNetV2 paper.
SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
            (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def load_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] != "F32":
            continue
        a, b = meta["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype="<f4").reshape(meta["shape"])
    return out


def preprocess(path):
    img = Image.open(path).convert("RGB")
    w, h = img.size
    if w <= h:
        nw, nh = 256, int(256 * h / w)
    else:
        nw, nh = int(256 * w / h), 256
    img = img.resize((nw, nh), Image.BILINEAR)
    top = int(round((nh - 224) / 2.0))
    left = int(round((nw - 224) / 2.0))
    img = img.crop((left, top, left + 224, top + 224))
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = (x - MEAN) / STD
    return x.transpose(2, 0, 1)  # CHW


def batchnorm(x, w, prefix):
    scale = w[prefix + ".weight"] / np.sqrt(w[prefix + ".running_var"] + 1e-5)
    shift = w[prefix + ".bias"] - w[prefix + ".running_mean"] * scale
    return x * scale[:, None, None] + shift[:, None, None]


def conv_full(x, k, stride):
    """Dense 3x3 convolution with padding 1: x is CHW, k is OIHW."""
    c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    ho, wo = (h - 1) // stride + 1, (wd - 1) // stride + 1
    cols = np.empty((c, 3, 3, ho, wo), dtype=np.float32)
    for i in range(3):
        for j in range(3):
            cols[:, i, j] = xp[:, i:i + stride * ho:stride, j:j + stride * wo:stride]
    return np.tensordot(k, cols, axes=([1, 2, 3], [0, 1, 2]))


def conv_depthwise(x, k, stride):
    """Depthwise 3x3 convolution with padding 1: k is C x 1 x 3 x 3."""
    c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    ho, wo = (h - 1) // stride + 1, (wd - 1) // stride + 1
    out = np.zeros((c, ho, wo), dtype=np.float32)
    for i in range(3):
        for j in range(3):
            out += k[:, 0, i, j][:, None, None] * xp[:, i:i + stride * ho:stride,
                                                      j:j + stride * wo:stride]
    return out


def conv_1x1(x, k):
    c, h, wd = x.shape
    return (k[:, :, 0, 0] @ x.reshape(c, h * wd)).reshape(-1, h, wd)


def relu6(x):
    return np.clip(x, 0.0, 6.0)


def forward(x, w):
    x = relu6(batchnorm(conv_full(x, w["features.0.0.weight"], 2), w, "features.0.1"))
    idx, inp = 1, 32
    for t, c, n, s in SETTINGS:
        for r in range(n):
            stride = s if r == 0 else 1
            p = f"features.{idx}.conv"
            y, layer = x, 0
            if t != 1:
                y = relu6(batchnorm(conv_1x1(y, w[f"{p}.0.0.weight"]), w, f"{p}.0.1"))
                layer = 1
            y = conv_depthwise(y, w[f"{p}.{layer}.0.weight"], stride)
            y = relu6(batchnorm(y, w, f"{p}.{layer}.1"))
            y = batchnorm(conv_1x1(y, w[f"{p}.{layer + 1}.weight"]), w, f"{p}.{layer + 2}")
            x = x + y if stride == 1 and inp == c else y
            inp = c
            idx += 1
    x = relu6(batchnorm(conv_1x1(x, w["features.18.0.weight"]), w, "features.18.1"))
    pooled = x.mean(axis=(1, 2))
    logits = w["classifier.1.weight"] @ pooled + w["classifier.1.bias"]
    z = np.exp(logits - logits.max())
    return z / z.sum()


def main():
    model, classes_path, photos = sys.argv[1], sys.argv[2], sys.argv[3:]
    w = load_safetensors(model)
    classes = open(classes_path).read().splitlines()
    result = {}
    for path in photos:
        probs = forward(preprocess(path), w)
        top = np.argsort(-probs)[:5]
        name = path.rsplit("/", 1)[-1]
        result[name] = [{"label": classes[i], "score": round(float(probs[i]), 4)} for i in top]
        print(f"{name}: {classes[top[0]]} {probs[top[0]]:.4f}", file=sys.stderr)
    json.dump(result, sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == "__main__":
    main()
