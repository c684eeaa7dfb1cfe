#!/usr/bin/env bash
# Local playground: a 3-primary / 3-replica Redis Cluster on 127.0.0.1:7000..7005 with slotproxy
# in front of it on 127.0.0.1:6380 (admin HTTP on 127.0.0.1:9180).
#
#   scripts/dev-cluster.sh          build, start the nodes (create the cluster on first run),
#                                   run the proxy in the foreground; Ctrl-C stops everything
#   scripts/dev-cluster.sh stop     stop nodes/proxy left running by an earlier run
#
# Node data lives in ./.dev-cluster/<port>/ (config, log, nodes.conf). Data is not persisted
# (save "", no AOF), the cluster layout is: a second run restarts the same cluster.
# Try it:  redis-cli -p 6380 set foo bar && redis-cli -p 6380 get foo
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
# shellcheck source=scripts/lib/cluster.sh
source "$ROOT/scripts/lib/cluster.sh"
DATA="$ROOT/.dev-cluster"
# Overridable when these ports are taken: DEV_CLUSTER_BASE_PORT=7100 PROXY_PORT=6390 ADMIN_PORT=9190
BASE_PORT=${DEV_CLUSTER_BASE_PORT:-7000}
PORTS=()
for i in 0 1 2 3 4 5; do PORTS+=($((BASE_PORT + i))); done
PROXY_LISTEN=127.0.0.1:${PROXY_PORT:-6380}
ADMIN_LISTEN=127.0.0.1:${ADMIN_PORT:-9180}
START_TIMEOUT_S=60

log() { echo "dev-cluster: $*" >&2; }
die() { log "$*"; exit 1; }

# Stops the process whose PID is in file $1 if it is still the program named $2: SIGTERM, then
# SIGKILL after 10 s. Only PIDs this script recorded are touched.
stop_pidfile() {
    local file=$1 name=$2 pid
    [ -f "$file" ] || return 0
    pid=$(cat "$file")
    if [ -n "$pid" ] && pid_alive "$pid" && grep -qa "$name" "/proc/$pid/cmdline" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            pid_alive "$pid" || break
            sleep 0.1
        done
        if pid_alive "$pid"; then
            log "pid $pid ($name) ignored SIGTERM for 10 s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$file"
}

stop_all() {
    stop_pidfile "$DATA/proxy.pid" slotproxy
    for port in "${PORTS[@]}"; do
        stop_pidfile "$DATA/$port/node.pid" redis-server
    done
}

if [ "${1:-}" = "stop" ]; then
    stop_all
    log "stopped"
    exit 0
elif [ $# -gt 0 ]; then
    die "usage: $0 [stop]"
fi

# A node needs its port and its cluster bus port (port + 10000).
check_ports() {
    local p
    if p=$(busy_node_port "${PORTS[@]}"); then
        die "port $p on 127.0.0.1 is already in use (a cluster left running? try: $0 stop; or pick other ports with DEV_CLUSTER_BASE_PORT=...)"
    fi
    for p in "${PROXY_LISTEN##*:}" "${ADMIN_LISTEN##*:}"; do
        port_in_use "$p" && die "port $p on 127.0.0.1 is already in use (pick another with PROXY_PORT=... / ADMIN_PORT=...)"
    done
    return 0
}
check_ports

bash scripts/install-deps.sh
log "+ cargo build --release"
cargo build --release
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/slotproxy"
[ -x "$BIN" ] || die "$BIN was not built"
# Again: the build can take minutes, and someone may have taken a port meanwhile.
check_ports

cleanup() {
    trap - EXIT INT TERM
    log "stopping the proxy and the nodes"
    stop_all
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for port in "${PORTS[@]}"; do
    dir="$DATA/$port"
    mkdir -p "$dir"
    write_node_conf "$dir/redis.conf" "$port" 5000 redis.log \
        "cluster-require-full-coverage no" \
        "# The proxy reaches the nodes over loopback: DEBUG (which the suite and the tests use) is allowed from there only." \
        "enable-debug-command local"
    start_node "$port" "$dir/redis.conf" redis-server
    echo "${NODE_PID[$port]}" >"$dir/node.pid"
done

# Wait until each node answers PING.
port=$(wait_nodes_answer "$START_TIMEOUT_S" "${PORTS[@]}") || case $? in
    2) die "redis-server on $port exited; see $DATA/$port/redis.log and stdout.log" ;;
    *) die "redis-server on $port did not answer within ${START_TIMEOUT_S}s" ;;
esac

known=$(cluster_field "${PORTS[0]}" cluster_known_nodes)
assigned=$(cluster_field "${PORTS[0]}" cluster_slots_assigned)
if [ "$known" = "${#PORTS[@]}" ] && [ "$assigned" = 16384 ]; then
    log "cluster exists (from a previous run); nodes restarted"
else
    for port in "${PORTS[@]}"; do
        if [ "$(cluster_field "$port" cluster_known_nodes)" != 1 ] || [ "$(cluster_field "$port" cluster_slots_assigned)" != 0 ]; then
            die "node $port is in a half-created cluster; stop everything and delete $DATA to start over"
        fi
    done
    log "+ redis-cli --cluster create ... --cluster-replicas 1"
    create_cluster "${PORTS[@]}"
fi

log "waiting for cluster_state:ok on every node"
port=$(wait_each_node $((SECONDS + START_TIMEOUT_S)) 0.2 cluster_state_ok "${PORTS[@]}") ||
    die "node $port: cluster_state not ok after ${START_TIMEOUT_S}s; see $DATA/$port/redis.log"

log "cluster ok; starting slotproxy on $PROXY_LISTEN (admin http://$ADMIN_LISTEN), Ctrl-C stops everything"
log "connect from another terminal:  redis-cli -h ${PROXY_LISTEN%:*} -p ${PROXY_LISTEN##*:}   (metrics: curl -s http://$ADMIN_LISTEN/metrics)"
"$BIN" --listen "$PROXY_LISTEN" --upstream "redis://127.0.0.1:${PORTS[0]}" --admin-listen "$ADMIN_LISTEN" &
echo $! >"$DATA/proxy.pid"
# `wait` (unlike a foreground child) returns as soon as a trapped signal arrives.
set +e
wait "$(cat "$DATA/proxy.pid")"
status=$?
set -e
log "slotproxy exited with status $status"
exit "$status"
