#!/usr/bin/env bash
# Runs the whole fault suite (tests/fault_suite.rs): every scenario on `views` and `identity`
# with 3 seeds for the fault's moment and target, and a chaos loop of 20 runs, on real
# processes with failpoints compiled in. Writes target/faults/report.json and
# target/faults/report.txt; exits non-zero if any run failed.
#   bash scripts/faults.sh                  # the full suite (about 10 minutes on 2 cores)
#   QUERN_FAULTS=fast bash scripts/faults.sh  # the subset CI runs
#   QUERN_FAULTS_ONLY=coordinator bash scripts/faults.sh  # scenarios whose name matches
# Run as root for the disk-full scenario (it mounts a small tmpfs); otherwise it is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/quern/target}"
if ! mkdir -p "$CARGO_TARGET_DIR" 2>/dev/null || [ ! -w "$CARGO_TARGET_DIR" ]; then
  export CARGO_TARGET_DIR="$PWD/target"
fi
export QUERN_FAULTS="${QUERN_FAULTS:-full}"
status=0
cargo test --release --features failpoints --test fault_suite -- --nocapture || status=$?
echo
echo "report: target/faults/report.txt and target/faults/report.json"
exit "$status"
