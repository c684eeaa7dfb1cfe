#!/usr/bin/env bash
# Throughput/latency benchmark: redis-benchmark directly against one Redis Cluster primary (the
# ceiling) and through slotproxy (and optionally other cluster proxies), on a throw-away local
# 3-primary + 3-replica cluster. Run `scripts/bench.sh --help` for the options.
#
# Layout (2 cores): slotproxy (one worker) and any peer proxy pinned to core 0; every
# redis-server and redis-benchmark pinned to core 1. Rounds are interleaved
# (for round: for workload: direct, slotproxy, peers...) so slow drifts of a shared machine hit
# every target alike; the tables show the median over the rounds.
#
# Everything this script starts (redis-server, proxies, redis-benchmark) is recorded by PID and
# stopped on exit, including on failure and Ctrl-C. Only 127.0.0.1 is used.
set -euo pipefail

CALLER_PWD=$PWD
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
# shellcheck source=scripts/lib/cluster.sh
source "$ROOT/scripts/lib/cluster.sh"
# shellcheck source=scripts/lib/ports.sh
source "$ROOT/scripts/lib/ports.sh"
# shellcheck source=scripts/lib/peers.sh
source "$ROOT/scripts/lib/peers.sh"
# shellcheck disable=SC2034  # read by scripts/lib/procs.sh
LOG_TAG=bench
# shellcheck source=scripts/lib/procs.sh
source "$ROOT/scripts/lib/procs.sh"

usage() {
    cat <<'EOF'
Usage: scripts/bench.sh [OPTIONS]

Starts a local 3-primary + 3-replica Redis Cluster (6 redis-server processes on free ports in
31000-31999, data in a temporary directory) and slotproxy with one worker, then runs
redis-benchmark directly against one primary and through slotproxy, interleaved, for several
rounds, and prints the medians (text and Markdown) and the raw per-round numbers.

Workloads (64-byte values, 50 clients unless said otherwise):
  set_p1     SET, -P 1                          -n 250000
  get_p1     GET, -P 1                          -n 250000
  set_p16    SET, -P 16                         -n 3000000
  get_p16    GET, -P 16                         -n 3000000
  set_p16_spread  SET, -P 16, over 100,000 keys  -n 3000000
  get_p16_spread  GET, -P 16, over 100,000 keys  -n 3000000
             (through a proxy: keys on every primary, so a pipeline's commands go to
             different nodes; direct: 100,000 keys sharing a hash tag owned by the direct
             primary)
  mget10     MGET of 10 keys                    -n 150000
             (through a proxy: 10 keys in 10 different slots; direct: 10 keys sharing a hash
             tag owned by the direct primary)
  get_c1000  GET, 1000 clients, -P 1            -n 250000
  scaling    GET, 100 clients, -P 16            -n 3000000  (only with --workers-scaling)
(sized for runs of ~2-5 s each on a 2-core machine; a default run takes ~4-5 minutes, more
with peers and --workers-scaling: redis-cluster-proxy alone adds ~3-10 minutes)
GET/SET use redis-benchmark's default key (`key:__rand_int__`, literal without -r); the direct
runs go to the primary that owns its slot.

Options:
  --rounds R          rounds (default 3)
  --quick             divide every -n by 10 (CPU µs/request gets coarse: 10 ms clock ticks)
  --proxy PATH        slotproxy binary to benchmark; without it the script runs
                      `cargo build --release` and uses ${CARGO_TARGET_DIR:-target}/release/slotproxy
  --peer NAME=PATH    also benchmark another proxy, the same way (pinned to the proxy core, one
                      thread). Repeatable. Supported: predixy (generated config with
                      WorkerThreads 1 and a ClusterServerPool of the 6 nodes) and
                      redis-cluster-proxy (--threads 1 --enable-cross-slot), and another
                      slotproxy build (--workers 1; e.g. slotproxy-base=PATH, for before/after
                      tables in one run). The kind is taken from NAME or from the binary's
                      file name
  --metrics-off       also run a second slotproxy with `metrics = false` (no recorder) the same
                      way, as target `slotproxy-nometrics`: what recording metrics costs
  --near-cache        also run a slotproxy with the near cache on for the benchmark's keys
                      (`[near_cache] prefixes = ["key:"]`), the same way, as target
                      `slotproxy-nearcache`, in the GET workloads: hits are answered from the
                      proxy's memory, so this one can pass the direct connection
  --workers-scaling   extra workload `scaling`: GET -P 16, 100 clients, through slotproxy with
                      --workers 1 (pinned) and with --workers 2 (unpinned); reports the ratio
  --workloads LIST    comma-separated subset of the workloads above (default: all)
  --markdown FILE     also write the Markdown tables to FILE
  --raw FILE          also write the raw per-round numbers (TSV) to FILE
  --proxy-cpu N       core for the proxies (default 0)
  --redis-cpu N       core for redis-server and redis-benchmark (default 1)
  --run-timeout S     kill a single redis-benchmark run after S seconds and count it failed
                      (default 300: room for a slow peer on a busy machine, e.g.
                      redis-cluster-proxy at -P 16 does ~50,000 req/s when the cores are
                      shared, a minute for 3,000,000 requests; still ends a run that hangs)
  --keep-tmp          keep the temporary directory (configs, logs, raw output) on success too
                      (it is always kept when the script fails)
  -h, --help          this help

Output: log lines on stderr; the tables on stdout. Exit status 0 when every run succeeded, 1 if
a run failed (redis-benchmark error, e.g. an error reply through a proxy) or on setup failure.
EOF
}

# ------------------------------------------------------------------------------------------
# Options
# ------------------------------------------------------------------------------------------
ROUNDS=3
QUICK=0
PROXY_BIN=""
PEERS=()
WORKERS_SCALING=0
METRICS_OFF=0
NEAR_CACHE=0
WORKLOADS_OPT=""
MARKDOWN_FILE=""
RAW_FILE=""
PROXY_CPU=0
REDIS_CPU=1
RUN_TIMEOUT=300
KEEP_TMP=0

die_usage() {
    echo "bench: $*" >&2
    echo "Try 'scripts/bench.sh --help'." >&2
    exit 2
}
need_arg() { [ $# -ge 2 ] && [ -n "$2" ] || die_usage "$1 needs a value"; }

while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --rounds) need_arg "$@"; ROUNDS=$2; shift 2 ;;
        --rounds=*) ROUNDS=${1#*=}; shift ;;
        --quick) QUICK=1; shift ;;
        --proxy) need_arg "$@"; PROXY_BIN=$2; shift 2 ;;
        --proxy=*) PROXY_BIN=${1#*=}; shift ;;
        --peer) need_arg "$@"; PEERS+=("$2"); shift 2 ;;
        --peer=*) PEERS+=("${1#*=}"); shift ;;
        --workers-scaling) WORKERS_SCALING=1; shift ;;
        --metrics-off) METRICS_OFF=1; shift ;;
        --near-cache) NEAR_CACHE=1; shift ;;
        --workloads) need_arg "$@"; WORKLOADS_OPT=$2; shift 2 ;;
        --workloads=*) WORKLOADS_OPT=${1#*=}; shift ;;
        --markdown) need_arg "$@"; MARKDOWN_FILE=$2; shift 2 ;;
        --markdown=*) MARKDOWN_FILE=${1#*=}; shift ;;
        --raw) need_arg "$@"; RAW_FILE=$2; shift 2 ;;
        --raw=*) RAW_FILE=${1#*=}; shift ;;
        --proxy-cpu) need_arg "$@"; PROXY_CPU=$2; shift 2 ;;
        --redis-cpu) need_arg "$@"; REDIS_CPU=$2; shift 2 ;;
        --run-timeout) need_arg "$@"; RUN_TIMEOUT=$2; shift 2 ;;
        --keep-tmp) KEEP_TMP=1; shift ;;
        *) die_usage "unknown option: $1" ;;
    esac
done

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
# Paths on the command line are relative to the caller's directory (the script cds to the repo).
abs_path() { case "$1" in /*) echo "$1" ;; *) echo "$CALLER_PWD/$1" ;; esac; }
[ -z "$PROXY_BIN" ] || PROXY_BIN=$(abs_path "$PROXY_BIN")
[ -z "$MARKDOWN_FILE" ] || MARKDOWN_FILE=$(abs_path "$MARKDOWN_FILE")
[ -z "$RAW_FILE" ] || RAW_FILE=$(abs_path "$RAW_FILE")
is_uint "$ROUNDS" && [ "$ROUNDS" -ge 1 ] || die_usage "--rounds must be a positive integer"
is_uint "$PROXY_CPU" || die_usage "--proxy-cpu must be a CPU number"
is_uint "$REDIS_CPU" || die_usage "--redis-cpu must be a CPU number"
is_uint "$RUN_TIMEOUT" && [ "$RUN_TIMEOUT" -ge 1 ] || die_usage "--run-timeout must be a positive integer"
[ "$PROXY_CPU" != "$REDIS_CPU" ] || die_usage "--proxy-cpu and --redis-cpu must differ"

ALL_WORKLOADS=(set_p1 get_p1 set_p16 get_p16 set_p16_spread get_p16_spread mget10 get_c1000)
WORKLOADS=()
if [ -n "$WORKLOADS_OPT" ]; then
    IFS=',' read -r -a requested <<<"$WORKLOADS_OPT"
    for w in "${requested[@]}"; do
        case " ${ALL_WORKLOADS[*]} scaling " in
            *" $w "*) ;;
            *) die_usage "unknown workload '$w' (known: ${ALL_WORKLOADS[*]} scaling)" ;;
        esac
        if [ "$w" = scaling ]; then WORKERS_SCALING=1; else WORKLOADS+=("$w"); fi
    done
else
    WORKLOADS=("${ALL_WORKLOADS[@]}")
fi
[ "$WORKERS_SCALING" = 1 ] && WORKLOADS+=(scaling)
[ ${#WORKLOADS[@]} -gt 0 ] || die_usage "no workload selected"

# Request counts: each run should take a few seconds.
DIV=1
[ "$QUICK" = 1 ] && DIV=10
N_P1=$((250000 / DIV))
N_P16=$((3000000 / DIV))
N_MGET=$((150000 / DIV))
N_C1000=$((250000 / DIV))

# Peers: NAME=PATH; kind from the name or the binary's file name.
PEER_NAMES=()
declare -A PEER_PATH=() PEER_KIND=()
for spec in "${PEERS[@]+"${PEERS[@]}"}"; do
    [[ $spec == *=* ]] || die_usage "--peer wants NAME=PATH, got '$spec'"
    name=${spec%%=*}
    path=$(abs_path "${spec#*=}")
    [[ $name =~ ^[A-Za-z0-9_.-]+$ ]] || die_usage "peer name '$name': use letters, digits, _ . -"
    case "$name" in direct | slotproxy | slotproxy-2w | slotproxy-nometrics | slotproxy-nearcache) die_usage "peer name '$name' is reserved" ;; esac
    [ -z "${PEER_PATH[$name]:-}" ] || die_usage "peer '$name' given twice"
    [ -x "$path" ] || die_usage "peer '$name': '$path' is not an executable file"
    kind=$(peer_kind "$name" "$path") || die_usage "peer '$name': unsupported proxy (supported: $PEER_KINDS_HELP)"
    PEER_NAMES+=("$name")
    PEER_PATH[$name]=$path
    PEER_KIND[$name]=$kind
done

# ------------------------------------------------------------------------------------------
# Cleanup (logging and process bookkeeping: scripts/lib/procs.sh)
# ------------------------------------------------------------------------------------------
TMP=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    set +e
    stop_everything
    if [ -n "$TMP" ] && [ -d "$TMP" ]; then
        if [ "$rc" -eq 0 ] && [ "$KEEP_TMP" = 0 ]; then
            rm -rf "$TMP"
        else
            log "configs, logs and raw output kept in $TMP"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ------------------------------------------------------------------------------------------
# Prerequisites
# ------------------------------------------------------------------------------------------
bash scripts/install-deps.sh >&2
for tool in redis-server redis-cli redis-benchmark taskset timeout python3 getconf; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found"
done
[ -f "$ROOT/scripts/bench_report.py" ] || die "scripts/bench_report.py is missing"
for cpu in "$PROXY_CPU" "$REDIS_CPU"; do
    taskset -c "$cpu" true 2>/dev/null || die "cannot pin to CPU $cpu (this machine has $(nproc) usable CPUs; see --proxy-cpu/--redis-cpu)"
done
CLK_TCK=$(getconf CLK_TCK)

# 1,000 clients: redis-benchmark, the proxies and redis-server each need > 1000 descriptors.
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ]; then ulimit -n 1048576 2>/dev/null || ulimit -n 65536 2>/dev/null || true; else ulimit -n "$hard"; fi
NOFILE=$(ulimit -n)
if [ "$NOFILE" != unlimited ] && [ "$NOFILE" -lt 2200 ]; then
    if [[ " ${WORKLOADS[*]} " == *" get_c1000 "* ]]; then
        log "WARNING: open files limit is $NOFILE (hard limit), too low for 1,000 clients: skipping get_c1000"
        kept=()
        for w in "${WORKLOADS[@]}"; do [ "$w" = get_c1000 ] || kept+=("$w"); done
        WORKLOADS=("${kept[@]}")
    fi
fi
log "open files limit: $NOFILE"

resolve_proxy_bin
log "slotproxy binary: $PROXY_BIN"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/slotproxy-bench.XXXXXX")
log "temporary directory: $TMP"

# ------------------------------------------------------------------------------------------
# Ports: free in 31000-31999 with port+10000 free too (the cluster bus port).
# ------------------------------------------------------------------------------------------
PORT_MIN=31000
PORT_MAX=31999
next_port() { pick_port "$PORT_MIN" "$PORT_MAX" || die "no free port pair in $PORT_MIN-$PORT_MAX"; } # sets PICKED
refresh_used_ports
NODE_PORTS=()
for i in 0 1 2 3 4 5; do
    next_port
    NODE_PORTS+=("$PICKED")
done
next_port; PROXY_PORT=$PICKED
next_port; PROXY_ADMIN_PORT=$PICKED
PROXY2_PORT=""
PROXY2_ADMIN_PORT=""
if [ "$WORKERS_SCALING" = 1 ]; then
    next_port; PROXY2_PORT=$PICKED
    next_port; PROXY2_ADMIN_PORT=$PICKED
fi
PROXY_NM_PORT=""
PROXY_NM_ADMIN_PORT=""
PROXY_NC_PORT=""
PROXY_NC_ADMIN_PORT=""
if [ "$NEAR_CACHE" = 1 ]; then
    next_port; PROXY_NC_PORT=$PICKED
    next_port; PROXY_NC_ADMIN_PORT=$PICKED
fi
if [ "$METRICS_OFF" = 1 ]; then
    next_port; PROXY_NM_PORT=$PICKED
    next_port; PROXY_NM_ADMIN_PORT=$PICKED
fi
declare -A PEER_PORT=() PEER_PID=()
for name in "${PEER_NAMES[@]+"${PEER_NAMES[@]}"}"; do
    next_port
    PEER_PORT[$name]=$PICKED
done
SEED=${NODE_PORTS[0]}

# ------------------------------------------------------------------------------------------
# Redis Cluster: 3 primaries + 3 replicas, pinned to REDIS_CPU
# ------------------------------------------------------------------------------------------
info_field() { # port field
    node_cli "$1" info replication 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"
}
# Whether node $1 knows the whole cluster (6 nodes) and has all 16384 slots served.
cluster_complete() {
    cluster_state_ok "$1" &&
        [ "$(cluster_field "$1" cluster_known_nodes)" = 6 ] &&
        [ "$(cluster_field "$1" cluster_slots_ok)" = 16384 ]
}
# Whether node $1 knows 3 replicas as such (gossip can lag behind the replicas' own role).
sees_3_replicas() { [ "$(node_cli "$1" cluster nodes 2>/dev/null | awk '$3 ~ /slave/' | wc -l)" = 3 ]; }
# Whether node $1, if it is a replica, has its link to its primary up.
replica_in_sync() { [ "$(info_field "$1" role)" != slave ] || [ "$(info_field "$1" master_link_status)" = up ]; }

log "starting 6 redis-server on ports ${NODE_PORTS[*]} (pinned to CPU $REDIS_CPU)"
for port in "${NODE_PORTS[@]}"; do
    dir="$TMP/node-$port"
    mkdir -p "$dir"
    write_node_conf "$dir/redis.conf" "$port" 15000 redis.log "maxclients 2000"
    start_node "$port" "$dir/redis.conf" taskset -c "$REDIS_CPU" redis-server
    track "${NODE_PID[$port]}" "redis-server:$port"
done

port=$(wait_nodes_answer 30 "${NODE_PORTS[@]}") || case $? in
    2) die "redis-server on $port exited (port taken?); see $TMP/node-$port/redis.log: $(tail -n 3 "$TMP/node-$port/redis.log" 2>/dev/null | tr '\n' ' ')" ;;
    *) die "redis-server on $port did not answer within 30 s" ;;
esac

log "+ redis-cli --cluster create ${NODE_PORTS[*]/#/127.0.0.1:} --cluster-replicas 1 --cluster-yes"
create_cluster "${NODE_PORTS[@]}" >"$TMP/cluster-create.log" 2>&1 ||
    die "redis-cli --cluster create failed: $(tail -n 5 "$TMP/cluster-create.log" | tr '\n' ' ')"

log "waiting for cluster_state:ok on every node and replicas in sync"
deadline=$((SECONDS + 60))
port=$(wait_each_node "$deadline" 0.2 cluster_complete "${NODE_PORTS[@]}") ||
    die "node $port: cluster not ok after 60 s; see $TMP/node-$port/redis.log"
port=$(wait_each_node "$deadline" 0.2 sees_3_replicas "${NODE_PORTS[@]}") ||
    die "node $port does not see 3 replicas after 60 s"
port=$(wait_each_node "$deadline" 0.2 replica_in_sync "${NODE_PORTS[@]}") ||
    die "replica $port not in sync after 60 s"

NODES_TXT=$(node_cli "$SEED" cluster nodes | tr -d '\r')
# Port of the primary owning slot $1, from `CLUSTER NODES`.
slot_owner() {
    awk -v s="$1" '
        $3 ~ /master/ {
            for (i = 9; i <= NF; i++) {
                if ($i ~ /^\[/) continue
                n = split($i, r, "-"); lo = r[1] + 0; hi = (n > 1 ? r[2] : r[1]) + 0
                if (s >= lo && s <= hi) { split($2, a, "@"); m = split(a[1], b, ":"); print b[m]; exit }
            }
        }' <<<"$NODES_TXT"
}
keyslot() { node_cli "$SEED" cluster keyslot "$1" | tr -d '\r'; }

PRIMARIES=$(awk '$3 ~ /master/ && NF >= 9 { split($2, a, "@"); m = split(a[1], b, ":"); printf "%s ", b[m] }' <<<"$NODES_TXT")
log "cluster ok; primaries: $PRIMARIES"

# redis-benchmark's GET/SET key: `key:__rand_int__` is substituted only with -r, so without -r
# every request uses the literal key `key:__rand_int__` (checked on redis-benchmark 7.0.15).
BENCH_KEY='key:__rand_int__'
BENCH_SLOT=$(keyslot "$BENCH_KEY")
DIRECT_PORT=$(slot_owner "$BENCH_SLOT")
[ -n "$DIRECT_PORT" ] || die "no owner found for slot $BENCH_SLOT"
log "GET/SET key '$BENCH_KEY' is in slot $BENCH_SLOT, owned by 127.0.0.1:$DIRECT_PORT: the direct target"

VALUE=$(printf 'x%.0s' $(seq 64))

# MGET through the proxies: 10 keys in 10 different slots.
PROXY_MGET_KEYS=()
declare -A seen_slot=()
mget_desc=""
for ((i = 1; i <= 200 && ${#PROXY_MGET_KEYS[@]} < 10; i++)); do
    k="bench:mget:$i"
    s=$(keyslot "$k")
    [ -z "${seen_slot[$s]:-}" ] || continue
    seen_slot[$s]=1
    PROXY_MGET_KEYS+=("$k")
    mget_desc+="$k(slot $s @$(slot_owner "$s")) "
done
[ ${#PROXY_MGET_KEYS[@]} -eq 10 ] || die "could not find 10 keys in different slots"
log "MGET keys through proxies: $mget_desc"

# MGET direct: 10 keys sharing a hash tag whose slot the direct primary owns.
DIRECT_TAG=""
for cand in bench bench1 bench2 bench3 bench4 bench5 bench6 bench7 bench8 bench9 bench10 bench11 \
    bench12 bench13 bench14 bench15 bench16 bench17 bench18 bench19 bench20; do
    if [ "$(slot_owner "$(keyslot "{$cand}")")" = "$DIRECT_PORT" ]; then
        DIRECT_TAG=$cand
        break
    fi
done
[ -n "$DIRECT_TAG" ] || die "no hash tag bench..bench20 is owned by $DIRECT_PORT"
DIRECT_MGET_KEYS=()
for i in 1 2 3 4 5 6 7 8 9 10; do DIRECT_MGET_KEYS+=("{$DIRECT_TAG}:$i"); done
log "MGET keys direct: {$DIRECT_TAG}:1..10 (slot $(keyslot "{$DIRECT_TAG}") @$DIRECT_PORT)"

# The spread workloads' keys: redis-benchmark puts a number below $SPREAD_KEYS in place of
# __rand_int__, so through a proxy they fall on every primary; direct, the hash tag keeps them
# on the direct primary.
SPREAD_KEYS=100000
spread_key() { # target -> key pattern
    if [ "$1" = direct ]; then echo "{$DIRECT_TAG}key:__rand_int__"; else echo "key:__rand_int__"; fi
}

# Pre-populate (cluster mode follows the redirects).
for k in "$BENCH_KEY" "${PROXY_MGET_KEYS[@]}" "${DIRECT_MGET_KEYS[@]}"; do
    out=$(redis-cli -c -h 127.0.0.1 -p "$SEED" set "$k" "$VALUE" | tr -d '\r')
    [ "$out" = OK ] || die "SET $k failed: $out"
done

# ------------------------------------------------------------------------------------------
# Proxies
# ------------------------------------------------------------------------------------------
PROXY_PID=""
PROXY2_PID=""

# Waits until a proxy on $1 (process $2, log $3) answers GET and MGET correctly.
wait_proxy_ready() { # port pid log name
    local port=$1 pid=$2 logf=$3 name=$4 deadline=$((SECONDS + 60)) got want
    want=$(printf '%s\n' "$VALUE")
    while :; do
        pid_alive "$pid" || die "$name exited during start-up; last log lines: $(tail -n 5 "$logf" 2>/dev/null | tr '\n' ' ')"
        got=$(node_cli "$port" get "$BENCH_KEY" 2>/dev/null | tr -d '\r' || true)
        [ "$got" = "$want" ] && break
        [ $SECONDS -lt $deadline ] || die "$name on $port not ready after 60 s (GET said '$got'); see $logf"
        sleep 0.2
    done
    want=$(for _ in "${PROXY_MGET_KEYS[@]}"; do echo "$VALUE"; done)
    got=$(node_cli "$port" mget "${PROXY_MGET_KEYS[@]}" 2>&1 | tr -d '\r' || true)
    [ "$got" = "$want" ] || die "$name: MGET of the 10 benchmark keys returned a wrong reply: $(head -c 300 <<<"$got")"
}

start_slotproxy() { # port admin_port workers pin(yes|no) name [config file] -> sets STARTED_PID
    local port=$1 admin=$2 workers=$3 pin=$4 name=$5 logf="$TMP/$5.log"
    local cmd=("$PROXY_BIN" --listen "127.0.0.1:$port" --upstream "redis://127.0.0.1:$SEED"
        --admin-listen "127.0.0.1:$admin" --workers "$workers")
    [ -z "${6:-}" ] || cmd+=(--config "$6")
    # NO_COLOR: plain log lines in the log file.
    if [ "$pin" = yes ]; then
        log "starting $name on 127.0.0.1:$port (--workers $workers, pinned to CPU $PROXY_CPU)"
        NO_COLOR=1 taskset -c "$PROXY_CPU" "${cmd[@]}" >"$logf" 2>&1 &
    else
        log "starting $name on 127.0.0.1:$port (--workers $workers, not pinned)"
        NO_COLOR=1 "${cmd[@]}" >"$logf" 2>&1 &
    fi
    STARTED_PID=$!
    track "$STARTED_PID" "$name"
    if command -v curl >/dev/null 2>&1; then
        poll_while_alive "$STARTED_PID" $((SECONDS + 60)) 0.1 proxy_ready "$admin" || case $? in
            2) die "$name exited during start-up: $(tail -n 5 "$logf" | tr '\n' ' ')" ;;
            *) die "$name: /readyz not 200 after 60 s; see $logf" ;;
        esac
    fi
    wait_proxy_ready "$port" "$STARTED_PID" "$logf" "$name"
}

start_slotproxy "$PROXY_PORT" "$PROXY_ADMIN_PORT" 1 yes slotproxy
PROXY_PID=$STARTED_PID
if [ "$WORKERS_SCALING" = 1 ]; then
    start_slotproxy "$PROXY2_PORT" "$PROXY2_ADMIN_PORT" 2 no slotproxy-2w
    PROXY2_PID=$STARTED_PID
fi
PROXY_NM_PID=""
if [ "$METRICS_OFF" = 1 ]; then
    printf 'metrics = false\n' >"$TMP/nometrics.toml"
    start_slotproxy "$PROXY_NM_PORT" "$PROXY_NM_ADMIN_PORT" 1 yes slotproxy-nometrics "$TMP/nometrics.toml"
    PROXY_NM_PID=$STARTED_PID
fi
PROXY_NC_PID=""
if [ "$NEAR_CACHE" = 1 ]; then
    printf '[near_cache]\nenabled = true\nprefixes = ["key:"]\n' >"$TMP/nearcache.toml"
    start_slotproxy "$PROXY_NC_PORT" "$PROXY_NC_ADMIN_PORT" 1 yes slotproxy-nearcache "$TMP/nearcache.toml"
    PROXY_NC_PID=$STARTED_PID
fi

start_peer() { # name
    local name=$1 path=${PEER_PATH[$1]} kind=${PEER_KIND[$1]} port=${PEER_PORT[$1]}
    local logf="$TMP/$name.log"
    # The command line (and predixy's configuration) come from scripts/lib/peers.sh, shared
    # with scripts/profile.sh: a benchmark and a profile measure the same set-up.
    peer_command "$kind" "$name" "$path" "$port" "$SEED" "$TMP/$name.conf" "${NODE_PORTS[@]}" ||
        die "peer $name: $PEER_ERR"
    case "$kind" in
        predixy) log "starting peer $name (predixy, WorkerThreads 1, pinned to CPU $PROXY_CPU) on 127.0.0.1:$port" ;;
        slotproxy) log "starting peer $name (slotproxy --workers 1, pinned to CPU $PROXY_CPU) on 127.0.0.1:$port" ;;
        rcp) log "starting peer $name (redis-cluster-proxy --threads 1, pinned to CPU $PROXY_CPU) on 127.0.0.1:$port" ;;
    esac
    # NO_COLOR: plain log lines from a slotproxy peer.
    NO_COLOR=1 taskset -c "$PROXY_CPU" "${PEER_CMD[@]}" >"$logf" 2>&1 &
    PEER_PID[$name]=$!
    track "$!" "$name"
    wait_proxy_ready "$port" "${PEER_PID[$name]}" "$logf" "$name"
}
for name in "${PEER_NAMES[@]+"${PEER_NAMES[@]}"}"; do start_peer "$name"; done

# ------------------------------------------------------------------------------------------
# Benchmark runs
# ------------------------------------------------------------------------------------------
RAW="$TMP/raw.tsv"
META="$TMP/meta.tsv"
printf 'round\tworkload\ttarget\trequests\trps\tavg_ms\tp50_ms\tp95_ms\tp99_ms\tmax_ms\tcpu_ticks\tcpu_us_per_req\trss_kb\tstatus\tdetail\tcpu_user_us_per_req\tcpu_sys_us_per_req\n' >"$RAW"

workload_title() {
    case "$1" in
        set_p1) echo "SET, 50 clients, -P 1, 64-byte values, n=$N_P1" ;;
        get_p1) echo "GET, 50 clients, -P 1, 64-byte values, n=$N_P1" ;;
        set_p16) echo "SET, 50 clients, -P 16, 64-byte values, n=$N_P16" ;;
        get_p16) echo "GET, 50 clients, -P 16, 64-byte values, n=$N_P16" ;;
        set_p16_spread) echo "SET over $SPREAD_KEYS keys (every primary through a proxy; one hash tag direct), 50 clients, -P 16, 64-byte values, n=$N_P16" ;;
        get_p16_spread) echo "GET over $SPREAD_KEYS keys (every primary through a proxy; one hash tag direct), 50 clients, -P 16, n=$N_P16" ;;
        mget10) echo "MGET of 10 keys (10 slots through a proxy; one hash tag direct), 50 clients, -P 1, n=$N_MGET" ;;
        get_c1000) echo "GET, 1000 clients, -P 1, 64-byte values, n=$N_C1000" ;;
        scaling) echo "Workers scaling: GET, 100 clients, -P 16, n=$N_P16, through slotproxy --workers 1 (pinned to CPU $PROXY_CPU) vs --workers 2 (not pinned)" ;;
    esac
}

workload_targets() { # workload -> TARGETS
    if [ "$1" = scaling ]; then
        TARGETS=(slotproxy slotproxy-2w)
    else
        TARGETS=(direct slotproxy "${PEER_NAMES[@]+"${PEER_NAMES[@]}"}")
        [ "$METRICS_OFF" = 0 ] || TARGETS+=(slotproxy-nometrics)
        case "$NEAR_CACHE:$1" in 1:get_p1 | 1:get_p16 | 1:get_c1000) TARGETS+=(slotproxy-nearcache) ;; esac
    fi
}

target_port() {
    case "$1" in
        direct) echo "$DIRECT_PORT" ;;
        slotproxy) echo "$PROXY_PORT" ;;
        slotproxy-2w) echo "$PROXY2_PORT" ;;
        slotproxy-nometrics) echo "$PROXY_NM_PORT" ;;
        slotproxy-nearcache) echo "$PROXY_NC_PORT" ;;
        *) echo "${PEER_PORT[$1]}" ;;
    esac
}
target_pid() {
    case "$1" in
        direct) echo "" ;;
        slotproxy) echo "$PROXY_PID" ;;
        slotproxy-2w) echo "$PROXY2_PID" ;;
        slotproxy-nometrics) echo "$PROXY_NM_PID" ;;
        slotproxy-nearcache) echo "$PROXY_NC_PID" ;;
        *) echo "${PEER_PID[$1]}" ;;
    esac
}

# redis-benchmark arguments for workload $1 against target $2 -> BARGS, NREQ
bench_args() {
    case "$1" in
        set_p1) NREQ=$N_P1; BARGS=(-t set -c 50 -P 1 -d 64) ;;
        get_p1) NREQ=$N_P1; BARGS=(-t get -c 50 -P 1 -d 64) ;;
        set_p16) NREQ=$N_P16; BARGS=(-t set -c 50 -P 16 -d 64) ;;
        get_p16) NREQ=$N_P16; BARGS=(-t get -c 50 -P 16 -d 64) ;;
        set_p16_spread) NREQ=$N_P16; BARGS=(-c 50 -P 16 -r "$SPREAD_KEYS" SET "$(spread_key "$2")" "$VALUE") ;;
        get_p16_spread) NREQ=$N_P16; BARGS=(-c 50 -P 16 -r "$SPREAD_KEYS" GET "$(spread_key "$2")") ;;
        get_c1000) NREQ=$N_C1000; BARGS=(-t get -c 1000 -P 1 -d 64) ;;
        scaling) NREQ=$N_P16; BARGS=(-t get -c 100 -P 16 -d 64) ;;
        mget10)
            NREQ=$N_MGET
            BARGS=(-c 50 -P 1)
            if [ "$2" = direct ]; then
                BARGS+=(MGET "${DIRECT_MGET_KEYS[@]}")
            else
                BARGS+=(MGET "${PROXY_MGET_KEYS[@]}")
            fi
            ;;
    esac
    BARGS=(-h 127.0.0.1 -p "$(target_port "$2")" -n "$NREQ" --csv "${BARGS[@]}")
}

cpu_ticks() { # pid -> "utime stime" (fields 14 and 15 of /proc/PID/stat), in clock ticks
    local s
    s=$(<"/proc/$1/stat") || return 1
    s=${s##*) }   # the command name (field 2) may contain spaces: cut after its ')'
    # shellcheck disable=SC2086
    set -- $s     # now $1 is field 3
    echo "${12} ${13}"
}
per_req_us() { awk -v t="$1" -v hz="$CLK_TCK" -v n="$NREQ" 'BEGIN { printf "%.3f", t * 1e6 / hz / n }'; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }

sanitize() { { tr '\t\r\n' '   ' | sed 's/  */ /g; s/^ //; s/ $//' | head -c 600; } || true; }

FAILED_RUNS=0
declare -A TARGET_DEAD=()
run_one() { # round workload target
    local round=$1 wl=$2 target=$3 pid port out err rc row status detail
    local rps="" avg="" p50="" p95="" p99="" max="" ticks="" cpu_us="" rss="" elapsed
    local user_us="" sys_us="" u0 s0 u1 s1
    pid=$(target_pid "$target")
    port=$(target_port "$target")
    bench_args "$wl" "$target"
    out="$TMP/run-$round-$wl-$target.csv"
    err="$TMP/run-$round-$wl-$target.err"
    if [ -n "$pid" ] && ! pid_alive "$pid"; then
        [ -n "${TARGET_DEAD[$target]:-}" ] || log "ERROR: $target (pid $pid) is not running any more; see $TMP/$target.log"
        TARGET_DEAD[$target]=1
        printf '%s\t%s\t%s\t%s\t\t\t\t\t\t\t\t\t\tfailed\t%s\t\t\n' "$round" "$wl" "$target" "$NREQ" "$target not running" >>"$RAW"
        FAILED_RUNS=$((FAILED_RUNS + 1))
        return 0
    fi
    [ -n "$pid" ] && read -r u0 s0 <<<"$(cpu_ticks "$pid")"
    local start_ns end_ns
    start_ns=$(date +%s%N)
    timeout -k 5 "$RUN_TIMEOUT" taskset -c "$REDIS_CPU" redis-benchmark "${BARGS[@]}" >"$out" 2>"$err" &
    BENCH_PID=$!
    rc=0
    wait "$BENCH_PID" || rc=$?
    BENCH_PID=""
    end_ns=$(date +%s%N)
    elapsed=$(((end_ns - start_ns) / 1000000))
    if [ -n "$pid" ] && pid_alive "$pid"; then
        read -r u1 s1 <<<"$(cpu_ticks "$pid")"
        ticks=$((u1 - u0 + s1 - s0))
        cpu_us=$(per_req_us "$ticks")
        user_us=$(per_req_us $((u1 - u0)))
        sys_us=$(per_req_us $((s1 - s0)))
        rss=$(rss_kb "$pid")
    fi
    # The data row: the last line starting with a quote that is not the header.
    row=$(grep '^"' "$out" | grep -v '^"test"' | tail -n 1 || true)
    status=ok
    detail=""
    if [ -n "$row" ]; then
        IFS=',' read -r _ rps avg _ p50 p95 p99 max <<<"$(tr -d '"' <<<"$row")"
    fi
    # Known harmless stderr noise: redis-benchmark's warning when a proxy refuses `CONFIG GET`
    # (it only reads the server's save/appendonly settings for its report). Anything else (e.g.
    # "Error from server: ...") is reported as a failure of the run.
    grep -v -x 'WARNING: Could not fetch server CONFIG' "$err" >"$err.unexpected" || true
    if [ "$rc" -ne 0 ] || [ -z "$row" ] || [ -s "$err.unexpected" ]; then
        status=failed
        if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
            detail="timed out after ${RUN_TIMEOUT}s; "
        fi
        detail+="exit $rc; stderr: $(sanitize <"$err.unexpected")"
        [ -n "$row" ] || detail+="; no CSV row"
        FAILED_RUNS=$((FAILED_RUNS + 1))
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$round" "$wl" "$target" "$NREQ" "$rps" "$avg" "$p50" "$p95" "$p99" "$max" \
        "$ticks" "$cpu_us" "$rss" "$status" "$detail" "$user_us" "$sys_us" >>"$RAW"
    local msg
    msg=$(printf 'round %d/%d %-9s %-13s %10s req/s  p50 %s  p99 %s ms' "$round" "$ROUNDS" "$wl" "$target" "${rps:-?}" "${p50:-?}" "${p99:-?}")
    [ -n "$cpu_us" ] && msg+=$(printf '  cpu %s us/req (user %s)  rss %s kB' "$cpu_us" "$user_us" "${rss:-?}")
    msg+=$(printf '  (%d.%01d s)' $((elapsed / 1000)) $(((elapsed % 1000) / 100)))
    log "$msg"
    if [ "$status" != ok ]; then
        log "ERROR: run failed: redis-benchmark ${BARGS[*]}"
        log "  $detail"
    fi
    sleep 0.2
}

{
    printf 'rounds\t%s\n' "$ROUNDS"
    printf 'quick\t%s\n' "$QUICK"
    printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
    printf 'cpu_model\t%s\n' "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    printf 'ncpu\t%s\n' "$(nproc)"
    printf 'kernel\t%s\n' "$(uname -r)"
    printf 'redis_version\t%s\n' "$(redis-server --version | sed -n 's/.* v=\([0-9][0-9.]*\).*/\1/p')"
    printf 'benchmark_version\t%s\n' "$(redis-benchmark --version | awk '{ print $2 }')"
    printf 'commit\t%s\n' "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo ' (+ local changes)')"
    printf 'proxy_bin\t%s\n' "$PROXY_BIN"
    printf 'proxy_cpu\t%s\n' "$PROXY_CPU"
    printf 'redis_cpu\t%s\n' "$REDIS_CPU"
    printf 'bench_key\t%s\n' "$BENCH_KEY"
    printf 'direct_port\t%s\n' "$DIRECT_PORT"
    printf 'mget_proxy_keys\t%s\n' "${PROXY_MGET_KEYS[*]}"
    printf 'mget_direct_keys\t{%s}:1..10\n' "$DIRECT_TAG"
    for w in "${WORKLOADS[@]}"; do printf 'workload\t%s\t%s\n' "$w" "$(workload_title "$w")"; done
    for name in "${PEER_NAMES[@]+"${PEER_NAMES[@]}"}"; do
        case "${PEER_KIND[$name]}" in
            predixy) printf 'peer\t%s\tpredixy (WorkerThreads 1)\n' "$name" ;;
            rcp) printf 'peer\t%s\tredis-cluster-proxy (--threads 1 --enable-cross-slot)\n' "$name" ;;
            slotproxy) printf 'peer\t%s\tslotproxy %s (--workers 1)\n' "$name" "${PEER_PATH[$name]}" ;;
        esac
    done
    [ "$METRICS_OFF" = 0 ] || printf 'peer\tslotproxy-nometrics\tslotproxy with metrics = false (no recorder)\n'
    [ "$NEAR_CACHE" = 0 ] || printf 'peer\tslotproxy-nearcache\tslotproxy with the near cache on for key: (GET workloads)\n'
} >"$META"

total_runs=0
for wl in "${WORKLOADS[@]}"; do
    workload_targets "$wl"
    total_runs=$((total_runs + ${#TARGETS[@]}))
done
log "running $ROUNDS rounds x $total_runs runs (workloads: ${WORKLOADS[*]})"
for ((round = 1; round <= ROUNDS; round++)); do
    for wl in "${WORKLOADS[@]}"; do
        workload_targets "$wl"
        for target in "${TARGETS[@]}"; do
            run_one "$round" "$wl" "$target"
        done
    done
done

# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------
report_args=(--raw "$RAW" --meta "$META")
[ -n "$MARKDOWN_FILE" ] && report_args+=(--markdown "$MARKDOWN_FILE")
python3 "$ROOT/scripts/bench_report.py" "${report_args[@]}"
if [ -n "$RAW_FILE" ]; then
    cp "$RAW" "$RAW_FILE"
    log "raw numbers written to $RAW_FILE"
fi
[ -n "$MARKDOWN_FILE" ] && log "Markdown written to $MARKDOWN_FILE"

for name in slotproxy slotproxy-2w "${PEER_NAMES[@]+"${PEER_NAMES[@]}"}"; do
    f="$TMP/$name.log"
    [ -f "$f" ] || continue
    n=$(grep -ciE 'error|panic|warn' "$f" || true)
    [ "$n" = 0 ] || log "note: $name's log has $n warning/error lines (first: $(grep -iE 'error|panic|warn' "$f" | head -n 1 | sanitize))"
done

if [ "$FAILED_RUNS" -gt 0 ]; then
    log "$FAILED_RUNS run(s) failed: see the errors above"
    exit 1
fi
log "done"
