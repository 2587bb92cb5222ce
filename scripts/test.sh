#!/usr/bin/env bash
# Runs Quern's whole test suite from a fresh clone: unit tests, property tests, and
# integration tests that start real clusters (coordinator and worker processes on loopback).
# Everything the tests need is built or installed here.
set -euo pipefail
cd "$(dirname "$0")/.."

# Reuse builds across clones on the same machine; fall back to ./target where that is not writable.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/quern/target}"
if ! mkdir -p "$CARGO_TARGET_DIR" 2>/dev/null || [ ! -w "$CARGO_TARGET_DIR" ]; then
  export CARGO_TARGET_DIR="$PWD/target"
fi

command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }

# Release profile: the integration tests move megabytes through real clusters, and one
# profile means dependencies are built once.
cargo test --release --workspace "$@"
