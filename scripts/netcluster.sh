#!/usr/bin/env bash
# A Quern cluster across network namespaces: each namespace is a host with an address of its
# own on one virtual bridge, as machines on one switch. Needs root.
#
#   scripts/netcluster.sh up N DIR    N hosts: h0 runs the coordinator, h1..h(N-1) a worker
#                                     each; one more namespace is the client. Prints the
#                                     environment to reach the cluster (eval it).
#   scripts/netcluster.sh down DIR    stops every process, removes every namespace and link
#                                     that `up` made (also after a partial `up`).
#   scripts/netcluster.sh link DIR I up|down   brings host I's link up or down (the host sees
#                                     it: its own kernel fails what it sends at once).
#   scripts/netcluster.sh cut DIR I | mend DIR I   takes host I's cable off the switch, or
#                                     puts it back: the host keeps its link, and what it and
#                                     its peers send each other is lost on the way, silently,
#                                     as in a partition (TCP backs off as it would there).
#                                     Not while netem is on for host I.
#   scripts/netcluster.sh netem DIR I [delay Nms] [loss P%] | off   delay and loss on what
#                                     host I sends (as `tc netem` on its eth0), or none. The
#                                     kernels here have no sch_netem, so a user-space relay
#                                     (scripts/linkem.py) is put into the host's link.
#   scripts/netcluster.sh block DIR I J | unblock DIR I J   host I can (not) send to host J
#                                     (a blackhole route in I: a one-way partition).
#   scripts/netcluster.sh restart DIR I   kills host I's daemon (SIGKILL, as a power cut) and
#                                     starts it again from its unit, on the same state.
#
# Every daemon binds its host's address (nothing listens on loopback only) and the workers
# advertise it. With QN_SEAWEEDFS=1, storage is a SeaweedFS cluster across the same hosts:
# master and filer on h0, a volume server on each worker host, beside its worker, whose
# storage host it is (data-local maps are maps on the host holding their chunk). Addresses are private ones, used only inside the namespaces made here; the
# bridge itself has none, so nothing is routed to or from the rest of the machine. Names start
# with a per-cluster id (QN_ID, default random), so several clusters can exist at once.
# QUERN is the quern binary (default: the release build). QN_WORKER_ENV, lines of VAR=value,
# is added to every worker's environment (its executors inherit it), e.g.
# QUERN_SHORT_CIRCUIT_READS=0.
set -euo pipefail
cd "$(dirname "$0")/.."
QUERN="${QUERN:-${CARGO_TARGET_DIR:-/var/cache/quern/target}/release/quern}"

die() { echo "netcluster: $*" >&2; exit 1; }

up() {
  local n="$1" dir="$2"
  [ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
  [ "$n" -ge 2 ] || die "needs at least 2 hosts (a coordinator and a worker)"
  [ -x "$QUERN" ] || die "no quern binary at $QUERN"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  [ ! -e "$dir/netcluster.env" ] || die "$dir already holds a cluster; bring it down first"
  local id="${QN_ID:-qn$(printf %04x $((RANDOM)))}"
  local net="${QN_NET:-10.213.$((RANDOM % 200 + 20))}"
  # Written first, so that `down` cleans up after an `up` that failed halfway.
  printf 'ID=%s\nNET=%s\nN=%s\n' "$id" "$net" "$n" >"$dir/netcluster.env"
  ip link add "${id}br" type bridge
  ip link set "${id}br" up
  # Hosts 0..n-1, then the client as host n.
  local i
  for i in $(seq 0 "$n"); do
    local ns="${id}h$i"
    ip netns add "$ns"
    ip link add "${id}v$i" type veth peer name eth0 netns "$ns"
    ip link set "${id}v$i" master "${id}br" up
    ip -n "$ns" addr add "$net.$((i + 1))/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
  done
  local coord="$net.1:7070"
  # Tokens, as on real machines: one for the workers, one for the user.
  local storage_env=""
  if [ "${QN_SEAWEEDFS:-0}" = 1 ]; then
    start_seaweedfs "$dir" "$id" "$net" "$n"
    storage_env="QUERN_SEAWEEDFS_MASTER=$net.1:9333"
  fi
  mkdir -p "$dir/etc"
  "$QUERN" token create --tokens "$dir/etc/tokens.json" --role worker --name workers \
    >"$dir/worker.token" 2>/dev/null
  "$QUERN" token create --tokens "$dir/etc/tokens.json" --role admin --name netcluster \
    >"$dir/admin.token" 2>/dev/null
  # The daemons start from the systemd units in deploy/systemd as they are written: their
  # ExecStart line, with the install paths mapped into $dir and the settings in env files,
  # so the units and docs/DEPLOY.md cannot drift from what this cluster runs.
  cat >"$dir/etc/coordinator.env" <<EOF
QUERN_LISTEN=$coord
QUERN_HTTP=$net.1:7080
QUERN_COORDINATOR_FLAGS="--heartbeat-ms ${QN_HEARTBEAT_MS:-200} --worker-timeout-s ${QN_WORKER_TIMEOUT_S:-3}"
$storage_env
EOF
  run_unit "$dir" "${id}h0" quern-coordinator.service "$dir/etc/coordinator.env" "$dir/h0" coordinator
  for i in $(seq 1 $((n - 1))); do
    cat >"$dir/etc/worker-h$i.env" <<EOF
QUERN_COORDINATOR=http://$coord
QUERN_TOKEN=$(cat "$dir/worker.token")
QUERN_SHUFFLE_LISTEN=0.0.0.0:7071
QUERN_ADVERTISE_HOST=$net.$((i + 1))
QUERN_STORAGE_HOST=$([ -n "$storage_env" ] && echo "$net.$((i + 1)):8080" || echo "h$i")
QUERN_WORKER_FLAGS="--slots ${QN_SLOTS:-1}"
$storage_env
${QN_WORKER_ENV:-}
EOF
    chmod 600 "$dir/etc/worker-h$i.env"
    run_unit "$dir" "${id}h$i" quern-worker.service "$dir/etc/worker-h$i.env" "$dir/h$i" worker
  done
  # Ready when every worker has registered (over the bridge, from its own address).
  local tries=0
  until [ "$(cat "$dir"/h*/worker.log 2>/dev/null | grep -c 'registered with coordinator')" -ge $((n - 1)) ]; do
    tries=$((tries + 1))
    [ "$tries" -lt 150 ] || die "the cluster did not come up (logs in $dir/h*/)"
    sleep 0.2
  done
  if [ -n "$storage_env" ]; then
    echo "export QUERN_SEAWEEDFS_MASTER=$net.1:9333"
    echo "export QUERN_SEAWEEDFS_FILER=$net.1:8888"
  fi
  echo "export QUERN_NETNS=${id}h$n"
  echo "export QUERN_COORDINATOR=http://$coord"
  echo "export QUERN_TOKEN=$(cat "$dir/admin.token")"
}

# start_seaweedfs DIR ID NET N: master and filer on h0, a volume server on h1..h(N-1).
start_seaweedfs() {
  local dir="$1" id="$2" net="$3" n="$4" i weed
  weed="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/weed"
  [ -x "$weed" ] || weed="$(command -v weed)" || die "no weed binary (scripts/seaweedfs.sh installs it)"
  mkdir -p "$dir/h0/seaweedfs/master" "$dir/h0/seaweedfs/filer"
  ip netns exec "${id}h0" "$weed" master -ip="$net.1" -ip.bind="$net.1" -port=9333 \
    -mdir="$dir/h0/seaweedfs/master" -volumeSizeLimitMB=256 -defaultReplication=000 \
    >"$dir/h0/seaweedfs/master.log" 2>&1 &
  wait_up "${id}h0" "http://$net.1:9333/cluster/status"
  for i in $(seq 1 $((n - 1))); do
    mkdir -p "$dir/h$i/seaweedfs"
    ip netns exec "${id}h$i" "$weed" volume -ip="$net.$((i + 1))" -ip.bind="$net.$((i + 1))" \
      -port=8080 -dir="$dir/h$i/seaweedfs" -max=30 -mserver="$net.1:9333" \
      -dataCenter=dc1 -rack=rack1 >"$dir/h$i/seaweedfs.log" 2>&1 &
  done
  for i in $(seq 1 $((n - 1))); do wait_up "${id}h$i" "http://$net.$((i + 1)):8080/status"; done
  ip netns exec "${id}h0" "$weed" filer -ip="$net.1" -ip.bind="$net.1" -port=8888 \
    -master="$net.1:9333" -defaultStoreDir="$dir/h0/seaweedfs/filer" \
    >"$dir/h0/seaweedfs/filer.log" 2>&1 &
  wait_up "${id}h0" "http://$net.1:8888/"
}

# wait_up NS URL: waits until URL answers from namespace NS.
wait_up() {
  local _
  for _ in $(seq 1 150); do
    ip netns exec "$1" curl -sf -o /dev/null "$2" && return 0
    sleep 0.2
  done
  die "timed out waiting for $2"
}

# run_unit DIR NS UNIT ENVFILE HOSTDIR NAME: starts UNIT's ExecStart in namespace NS, with
# /usr/local/bin/quern, /var/lib/quern and /etc/quern mapped to $QUERN, HOSTDIR and DIR/etc,
# and the unit's variables from ENVFILE (expanded as systemd does for these simple values).
run_unit() {
  local dir="$1" ns="$2" unit="$3" envfile="$4" hostdir="$5" name="$6"
  local cmd
  cmd="$(sed -n 's/^ExecStart=//p' "deploy/systemd/$unit")"
  [ -n "$cmd" ] || die "no ExecStart in deploy/systemd/$unit"
  cmd="${cmd//\/usr\/local\/bin\/quern/$QUERN}"
  cmd="${cmd//\/var\/lib\/quern/$hostdir}"
  cmd="${cmd//\/etc\/quern/$dir/etc}"
  mkdir -p "$hostdir"
  ip netns exec "$ns" bash -c "set -a; . '$envfile'; set +a; exec $cmd" \
    >/dev/null 2>"$hostdir/$name.log" &
  echo $! >"$hostdir/pid"
  printf '%s %s %s %s\n' "$ns" "$unit" "$envfile" "$name" >"$hostdir/unit"
}

restart() {
  local dir="$1" i="$2" ns unit envfile name
  read -r ns unit envfile name <"$dir/h$i/unit"
  kill -9 "$(cat "$dir/h$i/pid")" 2>/dev/null || true
  while kill -0 "$(cat "$dir/h$i/pid")" 2>/dev/null; do sleep 0.05; done
  run_unit "$dir" "$ns" "$unit" "$envfile" "$dir/h$i" "$name-restarted"
}

down() {
  local dir="$1"
  [ -f "$dir/netcluster.env" ] || return 0
  # shellcheck disable=SC1091
  . "$dir/netcluster.env"
  local i ns
  for i in $(seq 0 "$N"); do
    ns="${ID}h$i"
    if [ -f "$dir/h$i/linkem.pid" ]; then
      kill -9 "$(cat "$dir/h$i/linkem.pid")" 2>/dev/null || true
      rm -f "$dir/h$i/linkem.pid"
    fi
    ip link del "${ID}w$i" 2>/dev/null || true
    if ip netns list | grep -qw "$ns"; then
      # Every process in the namespace, the daemons and anything they started.
      ip netns pids "$ns" | xargs -r kill -9 2>/dev/null || true
      ip netns del "$ns"
    fi
  done
  ip link del "${ID}br" 2>/dev/null || true
  rm -f "$dir/netcluster.env"
}

link() {
  local dir="$1" i="$2" state="$3"
  # shellcheck disable=SC1091
  . "$dir/netcluster.env"
  ip link set "${ID}v$i" "$state"
}

netem() {
  local dir="$1" i="$2"
  shift 2
  # shellcheck disable=SC1091
  . "$dir/netcluster.env"
  local v="${ID}v$i" w="${ID}w$i" x="${ID}x$i" pidfile="$dir/h$i/linkem.pid"
  # Any relay already there goes first; the host's veth goes back on the bridge.
  if [ -f "$pidfile" ]; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
    while kill -0 "$(cat "$pidfile")" 2>/dev/null; do sleep 0.05; done
    rm -f "$pidfile"
  fi
  ip link del "$w" 2>/dev/null || true
  ip link set "$v" master "${ID}br"
  [ "$1" != off ] || return 0
  local delay=0 loss=0
  while [ $# -gt 0 ]; do
    case "$1" in
      delay) delay="${2%ms}"; shift 2 ;;
      loss) loss="$(awk -v p="${2%\%}" 'BEGIN { print p / 100 }')"; shift 2 ;;
      *) die "netem: expected 'delay Nms' and/or 'loss P%', not '$1'" ;;
    esac
  done
  # host <-> $v | relay | $w <-> $x <-> bridge
  ip link set "$v" nomaster
  ip link add "$w" type veth peer name "$x"
  ip link set "$x" master "${ID}br" up
  ip link set "$w" up
  ip link set "$v" promisc on
  ip link set "$w" promisc on
  rm -f "$dir/h$i/linkem.stats"
  python3 scripts/linkem.py "$v" "$w" "$delay" "$loss" "$dir/h$i/linkem.stats" \
    </dev/null >/dev/null 2>"$dir/h$i/linkem.log" &
  echo $! >"$pidfile"
  # Ready when it has opened both ends (it writes its first figures then).
  local _
  for _ in $(seq 1 100); do
    [ -s "$dir/h$i/linkem.stats" ] && return 0
    sleep 0.05
  done
  die "the link relay did not start (see $dir/h$i/linkem.log)"
}

cable() {
  local dir="$1" i="$2" verb="$3"
  # shellcheck disable=SC1091
  . "$dir/netcluster.env"
  if [ "$verb" = cut ]; then
    ip link set "${ID}v$i" nomaster
  else
    ip link set "${ID}v$i" master "${ID}br"
  fi
}

block() {
  local dir="$1" i="$2" j="$3" verb="$4"
  # shellcheck disable=SC1091
  . "$dir/netcluster.env"
  ip -n "${ID}h$i" route "$verb" blackhole "$NET.$((j + 1))/32"
}

case "${1:-}" in
  up) up "${2:?N}" "${3:?DIR}" ;;
  down) down "${2:?DIR}" ;;
  link) link "${2:?DIR}" "${3:?I}" "${4:?up|down}" ;;
  cut | mend) cable "${2:?DIR}" "${3:?I}" "$1" ;;
  netem) netem "${2:?DIR}" "${3:?I}" "${@:4}" ;;
  block) block "${2:?DIR}" "${3:?I}" "${4:?J}" add ;;
  unblock) block "${2:?DIR}" "${3:?I}" "${4:?J}" del ;;
  restart) restart "${2:?DIR}" "${3:?I}" ;;
  *) die "usage: $0 up N DIR | down DIR | link DIR I up|down | cut|mend DIR I | netem DIR I ARGS|off | block|unblock DIR I J | restart DIR I" ;;
esac
