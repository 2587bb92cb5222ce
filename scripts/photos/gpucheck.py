#!/usr/bin/env python3
"""Helpers of scripts/photos/gpu-check.sh (the photos job on a GPU, against torchvision).

    gpucheck.py cuda-libs                      directories holding the CUDA 13 libraries of
                                               this Python's nvidia-* packages, ':'-joined
    gpucheck.py make-photos SRC OUT N [SEED]   N distinct photos made from those in SRC
    gpucheck.py golden OUT EXPECTED [OTHER]    check a photos job output against the
                                               reference (and against another output)
    gpucheck.py agree A B                      top-1 agreement of two photos job outputs
    gpucheck.py torch DIR MODEL BATCH WORKERS PRECISION [OUT]
                                               torchvision's mobilenet_v2 with the same
                                               weights in a DataLoader pipeline

Every photo made by make-photos is its own picture: a random crop of one of the source
photos, scaled to a random size a phone or a web upload would have, maybe mirrored, saved
as JPEG (mostly) or PNG at a random quality. The same SEED gives the same photos.
"""

import glob
import json
import os
import random
import sys
import time


def cuda_libs():
    """Directories under this interpreter's site-packages with libcublas & co."""
    import site

    roots = site.getsitepackages() + [site.getusersitepackages()]
    dirs = []
    for root in roots:
        for pattern in ("nvidia/*/lib", "nvidia/*/*/lib", "torch/lib"):
            for d in sorted(glob.glob(os.path.join(root, pattern))):
                if glob.glob(os.path.join(d, "lib*.so*")) and d not in dirs:
                    dirs.append(d)
    print(":".join(dirs))


def _make_one(args):
    src, out, seed = args
    from PIL import Image, ImageOps

    rng = random.Random(seed)
    with Image.open(src) as im:
        im = im.convert("RGB")
        w, h = im.size
        frac = rng.uniform(0.5, 1.0)
        cw, ch = max(16, int(w * frac)), max(16, int(h * frac))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        im = im.crop((x, y, x + cw, y + ch))
        side = rng.choice([480, 640, 800, 1024, 1280, 1600])
        scale = side / max(cw, ch)
        im = im.resize((max(1, round(cw * scale)), max(1, round(ch * scale))), Image.BICUBIC)
        if rng.random() < 0.5:
            im = ImageOps.mirror(im)
        if rng.random() < 0.1:
            im.save(out + ".png", optimize=False)
        else:
            im.save(out + ".jpg", quality=rng.randint(75, 95))


def make_photos(src, out, n, seed=1):
    from multiprocessing import Pool

    sources = sorted(
        p for p in glob.glob(os.path.join(src, "*")) if p.lower().endswith((".jpg", ".jpeg", ".png"))
    )
    if not sources:
        sys.exit(f"make-photos: no photos in {src}")
    os.makedirs(out, exist_ok=True)
    rng = random.Random(seed)
    jobs = []
    for i in range(n):
        s = rng.choice(sources)
        stem = os.path.splitext(os.path.basename(s))[0]
        jobs.append((s, os.path.join(out, f"p{i:06d}-{stem}"), rng.getrandbits(64)))
    with Pool() as pool:
        pool.map(_make_one, jobs, chunksize=16)
    total = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"make-photos: {n} photos from {len(sources)} sources, {total / 2**20:.0f} MiB")


def read_output(out):
    """{key: top5 list} of a photos job output directory (its part files)."""
    lines = {}
    for part in sorted(glob.glob(os.path.join(out, "part-*"))):
        with open(part) as f:
            for line in f:
                if line.startswith("{"):
                    rec = json.loads(line)
                    if "top5" in rec:
                        lines[rec["key"]] = rec["top5"]
    return lines


def max_score_diff(a, b):
    """Largest difference of a label's score between two top-5 lists (labels in both)."""
    sb = {t["label"]: t["score"] for t in b}
    return max((abs(t["score"] - sb[t["label"]]) for t in a if t["label"] in sb), default=0.0)


def golden(out, expected_path, other=None):
    got = read_output(out)
    with open(expected_path) as f:
        expected = json.load(f)
    failures, worst = [], 0.0
    for name, want in expected.items():
        key = name.rsplit(".", 1)[0]
        top = got.get(key)
        if top is None:
            failures.append(f"{name}: no output line")
            continue
        if top[0]["label"] != want[0]["label"]:
            failures.append(f"{name}: top-1 {top[0]['label']}, reference {want[0]['label']}")
        scores = {t["label"]: t["score"] for t in top}
        for w in want[:3]:
            if w["label"] in scores:
                d = abs(scores[w["label"]] - w["score"])
                worst = max(worst, d)
                if d >= 0.03:
                    failures.append(f"{name}: {w['label']} {scores[w['label']]} vs {w['score']}")
    line = f"{len(expected)} golden photos, top-1 as the reference: {len(expected) - len(failures)}/{len(expected)}, largest top-3 score difference {worst:.4f}"
    if other:
        theirs = read_output(other)
        same = sum(1 for k, t in got.items() if k in theirs and theirs[k][0]["label"] == t[0]["label"])
        diff = max((max_score_diff(t, theirs[k]) for k, t in got.items() if k in theirs), default=0.0)
        line += f"; against {os.path.basename(other.rstrip('/'))}: top-1 {same}/{len(got)}, largest score difference {diff:.4f}"
    print(line)
    for f in failures:
        print("  FAIL " + f)
    sys.exit(1 if failures else 0)


def agree(a, b):
    la, lb = read_output(a), read_output(b)
    keys = sorted(set(la) & set(lb))
    same = sum(1 for k in keys if la[k][0]["label"] == lb[k][0]["label"])
    diff = max((max_score_diff(la[k], lb[k]) for k in keys), default=0.0)
    pct = 100.0 * same / max(1, len(keys))
    print(f"{same}/{len(keys)} top-1 agree ({pct:.2f}%), largest score difference {diff:.4f}"
          + ("" if len(keys) == len(la) == len(lb) else f" (keys: {len(la)} vs {len(lb)})"))


def read_safetensors(path):
    """A state dict from a safetensors file, with torch alone (no safetensors package)."""
    import torch

    dtypes = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64}
    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    base = 8 + n
    state = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[base + a:base + b]), dtype=dtypes[info["dtype"]])
        state[name] = t.reshape(info["shape"])
    return state


def torch_run(photos, model_path, batch, workers, precision, out=None):
    t0 = time.perf_counter()
    import torch
    import torchvision
    from PIL import Image
    from torchvision import transforms

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    model = torchvision.models.mobilenet_v2()
    missing, unexpected = model.load_state_dict(read_safetensors(model_path), strict=False)
    missing = [m for m in missing if not m.endswith("num_batches_tracked")]
    if missing or unexpected:
        sys.exit(f"torch: weights do not fit mobilenet_v2: missing {missing}, unexpected {unexpected}")
    model = model.eval().to(device)
    half = {"f32": None, "f16": torch.float16, "bf16": torch.bfloat16}[precision]
    if half is not None:
        model = model.to(half)
    classes = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    files = sorted(
        os.path.join(photos, f) for f in os.listdir(photos) if f.lower().endswith((".jpg", ".jpeg", ".png"))
    )
    tf = transforms.Compose([
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])

    class Photos(torch.utils.data.Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            with Image.open(files[i]) as im:
                return tf(im.convert("RGB")), i

    loader = torch.utils.data.DataLoader(
        Photos(), batch_size=batch, num_workers=workers, pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
    )
    wait = busy = 0.0
    tops = {}
    it = iter(loader)
    with torch.inference_mode():
        while True:
            t = time.perf_counter()
            try:
                x, idx = next(it)
            except StopIteration:
                break
            t1 = time.perf_counter()
            wait += t1 - t
            x = x.to(device, non_blocking=True)
            if half is not None:
                x = x.to(half)
            probs = torch.softmax(model(x).float(), dim=1)
            top = probs.topk(5, dim=1)
            values, indices = top.values.cpu(), top.indices.cpu()
            busy += time.perf_counter() - t1
            for i, v, c in zip(idx.tolist(), values.tolist(), indices.tolist()):
                key = os.path.splitext(os.path.relpath(files[i], photos))[0]
                tops[key] = [{"label": classes[k], "score": round(s, 4)} for k, s in zip(c, v)]
    secs = time.perf_counter() - t0
    print(f"{len(files)} photos in {secs:.2f} s ({len(files) / secs:.1f} photos/s), "
          f"model waited {100 * wait / max(wait + busy, 1e-9):.1f}%, device {device}, "
          f"torch {torch.__version__}, torchvision {torchvision.__version__}")
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "part-00000"), "w") as f:
            for k in sorted(tops):
                f.write(json.dumps({"key": k, "top5": tops[k]}) + "\n")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "cuda-libs":
        cuda_libs()
    elif cmd == "make-photos":
        make_photos(args[0], args[1], int(args[2]), int(args[3]) if len(args) > 3 else 1)
    elif cmd == "golden":
        golden(*args)
    elif cmd == "agree":
        agree(*args)
    elif cmd == "torch":
        torch_run(args[0], args[1], int(args[2]), int(args[3]), args[4], args[5] if len(args) > 5 else None)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
