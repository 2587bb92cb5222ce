#!/usr/bin/env bash
# Builds `quern` with the `cuda` feature (the photos model on NVIDIA GPUs) on a machine with no
# GPU and no system CUDA toolkit: the toolkit comes from NVIDIA's PyPI wheels (CUDA 13.0),
# and the driver library, which no wheel ships, is replaced at link time by a stub that
# defines the driver API's symbols (the real libcuda.so.1 of the GPU host is used at run
# time). Kernels are compiled for compute capability $CUDA_COMPUTE_CAP (default 90: H100).
#
#   bash scripts/photos/build-cuda.sh            # -> $QUERN_CUDA_TARGET_DIR/release/quern
#                                                #    and release/examples/plain_loop
#
# Environment: QUERN_CUDA_TOOLKIT (default target/cuda-toolkit), QUERN_CUDA_TARGET_DIR
# (default: target-cuda beside the CPU build's target directory, so neither build evicts
# the other), CUDA_COMPUTE_CAP.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
TK="${QUERN_CUDA_TOOLKIT:-$ROOT/target/cuda-toolkit}"
CPU_TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
export CARGO_TARGET_DIR="${QUERN_CUDA_TARGET_DIR:-${CPU_TARGET%/}-cuda}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CUDARC_CUDA_VERSION=13000
CUDA="$TK/nvidia/cu13"

if [ ! -x "$CUDA/bin/nvcc" ]; then
  echo "build-cuda: installing the CUDA 13.0 toolkit wheels into $TK" >&2
  python3 -m pip install --quiet --no-deps --target "$TK" \
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88 \
    nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35
fi

# The wheels ship versioned libraries only; the linker looks for the plain names.
for f in "$CUDA"/lib/lib*.so.*; do
  plain="${f%%.so.*}.so"
  [ -e "$plain" ] || ln -s "$(basename "$f")" "$plain"
done

# A stub libcuda.so.1 defining every driver API function cudarc declares.
mkdir -p "$CUDA/lib/stubs"
if [ ! -e "$CUDA/lib/stubs/libcuda.so" ]; then
  cargo fetch --quiet
  sys=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-"$(grep -A1 '^name = "cudarc"' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')"/src/driver/sys/mod.rs | head -1)
  grep -oE '^\s+(pub )?fn cu[A-Za-z0-9_]+\(' "$sys" | sed -E 's/.*fn (cu[A-Za-z0-9_]+)\(/\1/' | sort -u |
    awk '{ printf "int %s(void) { return 999; }\n", $1 }' > "$CUDA/lib/stubs/libcuda_stub.c"
  echo "build-cuda: stub driver library with $(wc -l < "$CUDA/lib/stubs/libcuda_stub.c") symbols" >&2
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CUDA/lib/stubs/libcuda.so" "$CUDA/lib/stubs/libcuda_stub.c"
fi

export CUDA_PATH="$CUDA" CUDA_ROOT="$CUDA" CUDA_HOME="$CUDA"
export PATH="$CUDA/bin:$PATH"
export LIBRARY_PATH="$CUDA/lib:$CUDA/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
nvcc --version | tail -2 >&2
cargo build --release --features cuda -p quern
# The plain candle loop (no engine), the GPU baseline of scripts/photos/gpu-check.sh.
cargo build --release --features cuda -p quern-photos --example plain_loop
bin="$CARGO_TARGET_DIR/release/quern"
echo "build-cuda: built $bin" >&2
# What the binary needs from the GPU host at run time: the driver, and the CUDA 13 libraries
# (from the same wheels, on LD_LIBRARY_PATH).
readelf -d "$bin" | grep NEEDED | grep -E 'cuda|cublas|curand|nvrtc' >&2 || true
