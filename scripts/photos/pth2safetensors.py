#!/usr/bin/env python3
"""Convert a PyTorch checkpoint in the legacy (pre-1.6, non-zip) pickle format to safetensors.

No PyTorch needed: the legacy format is a sequence of pickles (magic number, protocol version,
system info, the state dict, the list of storage keys) followed by each storage's raw bytes,
prefixed by its element count. The state dict's tensors are rebuilt by
torch._utils._rebuild_tensor_v2 from persistent storage references; this script resolves
those names to plain records instead of importing torch.

    pth2safetensors.py IN.pth OUT.safetensors [--skip-suffix num_batches_tracked]
"""

import argparse
import collections
import json
import os
import pickle
import struct
import sys

MAGIC = 0x1950A86A20F9469CFC6C
PROTOCOL = 1001

# storage class name -> (safetensors dtype, bytes per element)
STORAGES = {
    "FloatStorage": ("F32", 4),
    "DoubleStorage": ("F64", 8),
    "HalfStorage": ("F16", 2),
    "BFloat16Storage": ("BF16", 2),
    "LongStorage": ("I64", 8),
    "IntStorage": ("I32", 4),
    "ShortStorage": ("I16", 2),
    "CharStorage": ("I8", 1),
    "ByteStorage": ("U8", 1),
    "BoolStorage": ("BOOL", 1),
}


class StorageType:
    def __init__(self, name):
        if name not in STORAGES:
            raise ValueError(f"unsupported storage type torch.{name}")
        self.name = name


class TensorRef:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


def rebuild_tensor(storage, offset, size, stride, *_rest):
    return TensorRef(storage, offset, size, stride)


class Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return rebuild_tensor
        if module == "torch" and name.endswith("Storage"):
            return StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel[, view_metadata])
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, stype, key, _location, numel = pid[:5]
        return {"type": stype, "key": key, "numel": numel}


def contiguous_strides(size):
    strides, acc = [], 1
    for d in reversed(size):
        strides.append(acc)
        acc *= d
    return tuple(reversed(strides))


def load_legacy(path):
    with open(path, "rb") as f:
        if f.read(2) == b"PK":
            sys.exit(f"{path} is a zip-format checkpoint, not the legacy pickle format")
        f.seek(0)
        magic = pickle.load(f)
        if magic != MAGIC:
            sys.exit(f"{path}: not a legacy PyTorch checkpoint (bad magic number)")
        if pickle.load(f) != PROTOCOL:
            sys.exit(f"{path}: unsupported legacy protocol version")
        sys_info = pickle.load(f)
        if not sys_info.get("little_endian", True):
            sys.exit(f"{path}: big-endian checkpoints are not supported")
        state = Unpickler(f).load()
        keys = pickle.load(f)
        blobs = {}
        for key in keys:
            (numel,) = struct.unpack("<q", f.read(8))
            # Storage bytes follow directly; their element size comes from the tensors that
            # use them, so remember where they start and skip over them.
            blobs[key] = (numel, f.tell())
            esize = storage_elem_size(state, key)
            f.seek(numel * esize, 1)
        f.seek(0)
        data = f.read()
    return state, blobs, data


def storage_elem_size(state, key):
    for t in state.values():
        if isinstance(t, TensorRef) and t.storage["key"] == key:
            return STORAGES[t.storage["type"].name][1]
    raise ValueError(f"storage {key} is used by no tensor")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--skip-suffix", action="append", default=[],
                    help="leave out tensors whose name ends with this (repeatable)")
    args = ap.parse_args()

    state, blobs, data = load_legacy(args.input)
    if "state_dict" in state and not isinstance(state["state_dict"], TensorRef):
        state = state["state_dict"]
    header, chunks, at = {}, [], 0
    for name in sorted(state):
        t = state[name]
        if any(name.endswith(s) for s in args.skip_suffix):
            continue
        if not isinstance(t, TensorRef):
            sys.exit(f"entry {name} is not a tensor")
        if t.stride != contiguous_strides(t.size) and any(d > 1 for d in t.size):
            sys.exit(f"tensor {name} is not contiguous; not supported")
        dtype, esize = STORAGES[t.storage["type"].name]
        numel = 1
        for d in t.size:
            numel *= d
        start = blobs[t.storage["key"]][1] + t.offset * esize
        raw = data[start:start + numel * esize]
        if len(raw) != numel * esize:
            sys.exit(f"tensor {name}: storage too short (truncated file?)")
        header[name] = {"dtype": dtype, "shape": list(t.size), "data_offsets": [at, at + len(raw)]}
        chunks.append(raw)
        at += len(raw)
    header["__metadata__"] = {"format": "pt", "source": args.input.rsplit("/", 1)[-1]}
    hbytes = json.dumps(header, separators=(",", ":")).encode()
    hbytes += b" " * (-len(hbytes) % 8)
    with open(args.output + ".tmp", "wb") as out:
        out.write(struct.pack("<Q", len(hbytes)))
        out.write(hbytes)
        for c in chunks:
            out.write(c)
    os.replace(args.output + ".tmp", args.output)
    print(f"{args.output}: {len(chunks)} tensors, {at} bytes of data")


if __name__ == "__main__":
    main()
