#!/usr/bin/env bash
# Soak test (not run by CI): a mixed workload through slotproxy for a configurable time while
# the cluster behind it is resharded and failed over in a loop; checks that no acknowledged
# write is lost and that the proxy's RSS, open file descriptors and backend connections stay
# flat. Run `scripts/soak.sh --help` for the options.
#
#   scripts/soak.sh                       30 minutes against Redis (the issue's soak run)
#   scripts/soak.sh --minutes 4           a short run to try it out
#   scripts/soak.sh --backend valkey      the same against Valkey nodes
#
# What it does:
#   - starts 3 primaries + 3 replicas (redis-server or valkey-server) on 127.0.0.1, ports
#     BASE..BASE+5 (cluster bus BASE+10000..), data and logs under the output directory, creates
#     the cluster, and starts the release slotproxy in front (127.0.0.1:BASE+10, admin BASE+11);
#   - workload, the whole time, through the proxy: every 10 s a burst of redis-benchmark runs
#     (SET/GET/INCR/LPUSH/RPOP/MSET with random keys, SET/GET pipelined -P 16, MGET of 5 random
#     keys) sized for --rate requests/s on average, each run with fresh client connections;
#     redis-benchmark exits at the first error reply, so any error a client sees fails a run.
#     Plus a correctness checker (scripts/soak_helper.py checker) that pipelines RPUSH of a
#     sequence number to 16 lists, SET of a unique key and INCR of 8 counters, and at the end
#     reads everything back: acknowledged writes missing, duplicates, disorder, bad values;
#   - chaos, the whole time, one event after the other: reshard (redis-cli --cluster reshard
#     of --reshard-slots slots to the next primary in turn from the one with most slots),
#     failover (CLUSTER FAILOVER on a replica), reshard, failback (CLUSTER FAILOVER on the old
#     primary), next shard... Before each event the cluster must be settled: cluster_state:ok
#     and all 16384 slots ok on every node, no migrating/importing slot, every node agreeing on
#     slots and roles, replicas' links up, the proxy's /readyz 200. Each event is logged with
#     its time in events.tsv;
#   - every --interval seconds a row in samples.csv: proxy RSS (VmRSS), open fds, threads,
#     client and backend connections (/metrics), the proxy's TCP sockets to the nodes (/proc),
#     the nodes' CLIENT LIST entries for those sockets, the nodes' connected_clients, the
#     proxy's command/error/redirect counters, checker progress, events done;
#   - at the end: summary (duration, events, client errors, lost writes, first vs last window
#     vs max of RSS, fds and backend connections) and the verdict.
#
# Flat rule: for each series the mean over the last window (default the last 5 minutes) must
# not exceed the mean over the first window (default the 5 minutes after a 1-minute warm-up)
# by more than max(10 %, an absolute tolerance): 8 MiB for RSS, 8 fds, 4 backend connections.
# Runs too short for two windows split what follows the warm-up into two halves.
#
# Exit status: 0 when no acknowledged write was lost (nor duplicated, reordered or changed) and
# every series is flat; 1 otherwise or when the setup failed; 2 on a usage error. Client
# errors are reported (and fail the run with --strict-errors).
#
# Everything it starts (nodes, proxy, workload, checker, sampler) is recorded by PID and stopped
# on exit, Ctrl-C included; nothing else is touched. Only 127.0.0.1 is used.
set -euo pipefail

CALLER_PWD=$PWD
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
# shellcheck source=scripts/lib/cluster.sh
source "$ROOT/scripts/lib/cluster.sh"
HELPER="$ROOT/scripts/soak_helper.py"

usage() {
    cat <<'EOF'
Usage: scripts/soak.sh [OPTIONS]

  --minutes N         run time in minutes (default 30)
  --seconds N         run time in seconds instead (short debugging runs)
  --backend B         redis (redis-server, redis-cli, redis-benchmark) or valkey
                      (valkey-server, valkey-cli, valkey-benchmark); default redis
  --port-base P       nodes on 127.0.0.1:P..P+5 (bus P+10000..P+10005), proxy P+10, admin
                      P+11 (default 8700: outside the tests' 20000-55000, the dev cluster's
                      7000-7005/17000-17005/6380/9180 and bench.sh's 31000-41999)
  --out DIR           output directory (default: a new /tmp/slotproxy-soak.XXXXXX); it holds
                      samples.csv, events.tsv, workload.tsv, checker.json, summary.txt,
                      proxy.log, nodes/<port>/redis.log, chaos/*.log
  --interval S        seconds between samples (default 10)
  --warmup S          seconds left out before the first window (default 60)
  --window S          length of the first and last windows in seconds (default 300)
  --rate N            redis-benchmark requests per second, on average (default 2000)
  --keyspace N        random keys of the benchmark workload (default 1000000); as many SETs
                      fill the cluster before the run, so that each reshard has keys to move
                      (clients then meet slots in migration: ASK, TRYAGAIN)
  --checker-rate N    checker pipelines per second, 3 writes each (default 40)
  --reshard-slots N   slots moved by each reshard (default 300)
  --event-gap S       pause between two chaos events (default 15)
  --workers N         proxy worker threads (default 2)
  --proxy PATH        slotproxy binary (default: cargo build --release, target/release/slotproxy)
  --strict-errors     also fail when a client saw an error or a benchmark run failed
  -h, --help          this help
EOF
}

# ------------------------------------------------------------------------------------------
# Options
# ------------------------------------------------------------------------------------------
DURATION_S=$((30 * 60))
BACKEND=redis
PORT_BASE=8700
OUT=""
INTERVAL=10
WARMUP=60
WINDOW=300
RATE=2000
KEYSPACE=1000000
CHECKER_RATE=40
RESHARD_SLOTS=300
EVENT_GAP=15
WORKERS=2
PROXY_BIN=""
STRICT_ERRORS=0

die_usage() {
    echo "soak: $*" >&2
    echo "Try 'scripts/soak.sh --help'." >&2
    exit 2
}
need_arg() { if [ $# -lt 2 ] || [ -z "$2" ]; then die_usage "$1 needs a value"; fi; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
abs_path() { case "$1" in /*) echo "$1" ;; *) echo "$CALLER_PWD/$1" ;; esac; }

while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --minutes) need_arg "$@"; is_uint "$2" || die_usage "--minutes wants a whole number"; DURATION_S=$(($2 * 60)); shift 2 ;;
        --seconds) need_arg "$@"; is_uint "$2" || die_usage "--seconds wants a whole number"; DURATION_S=$2; shift 2 ;;
        --backend) need_arg "$@"; BACKEND=$2; shift 2 ;;
        --port-base) need_arg "$@"; PORT_BASE=$2; shift 2 ;;
        --out) need_arg "$@"; OUT=$(abs_path "$2"); shift 2 ;;
        --interval) need_arg "$@"; INTERVAL=$2; shift 2 ;;
        --warmup) need_arg "$@"; WARMUP=$2; shift 2 ;;
        --window) need_arg "$@"; WINDOW=$2; shift 2 ;;
        --rate) need_arg "$@"; RATE=$2; shift 2 ;;
        --keyspace) need_arg "$@"; KEYSPACE=$2; shift 2 ;;
        --checker-rate) need_arg "$@"; CHECKER_RATE=$2; shift 2 ;;
        --reshard-slots) need_arg "$@"; RESHARD_SLOTS=$2; shift 2 ;;
        --event-gap) need_arg "$@"; EVENT_GAP=$2; shift 2 ;;
        --workers) need_arg "$@"; WORKERS=$2; shift 2 ;;
        --proxy) need_arg "$@"; PROXY_BIN=$(abs_path "$2"); shift 2 ;;
        --strict-errors) STRICT_ERRORS=1; shift ;;
        *) die_usage "unknown option: $1" ;;
    esac
done
for pair in "port-base:$PORT_BASE" "interval:$INTERVAL" "warmup:$WARMUP" "window:$WINDOW" "rate:$RATE" "keyspace:$KEYSPACE" \
    "checker-rate:$CHECKER_RATE" "reshard-slots:$RESHARD_SLOTS" "event-gap:$EVENT_GAP" "workers:$WORKERS"; do
    is_uint "${pair#*:}" || die_usage "--${pair%%:*} wants a whole number"
done
[ "$DURATION_S" -ge 60 ] || die_usage "run for at least 60 seconds"
if [ "$INTERVAL" -lt 1 ] || [ "$RATE" -lt 100 ] || [ "$KEYSPACE" -lt 1 ] || [ "$CHECKER_RATE" -lt 1 ] || [ "$WORKERS" -lt 1 ]; then
    die_usage "--interval, --keyspace, --checker-rate and --workers must be >= 1, --rate >= 100"
fi
if [ "$RESHARD_SLOTS" -lt 1 ] || [ "$RESHARD_SLOTS" -gt 4000 ]; then die_usage "--reshard-slots must be in 1..4000"; fi
if [ "$PORT_BASE" -lt 1024 ] || [ "$PORT_BASE" -gt 55000 ]; then die_usage "--port-base must be in 1024..55000"; fi
case "$BACKEND" in
    redis) SERVER=redis-server; CLI=redis-cli; BENCH=redis-benchmark ;;
    valkey) SERVER=valkey-server; CLI=valkey-cli; BENCH=valkey-benchmark ;;
    *) die_usage "--backend must be redis or valkey" ;;
esac
NODE_CLI=$CLI

# ------------------------------------------------------------------------------------------
# Logging, process bookkeeping, cleanup
# ------------------------------------------------------------------------------------------
log() { printf '[soak %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

STARTED_PIDS=() # every process we started, in start order
declare -A PID_NAME=()
track() { # pid name
    STARTED_PIDS+=("$1")
    PID_NAME[$1]=$2
}

# shellcheck disable=SC2317  # stop_pids and cleanup run from the EXIT trap
# SIGTERM to the given PIDs (all ours), up to 15 s grace, then SIGKILL; reaps them.
stop_pids() {
    local pid alive waited=0
    [ $# -gt 0 ] || return 0
    for pid in "$@"; do
        if pid_alive "$pid"; then kill -TERM "$pid" 2>/dev/null || true; fi
    done
    while :; do
        alive=()
        for pid in "$@"; do
            if pid_alive "$pid" && ! grep -qs '^State:.*Z' "/proc/$pid/status"; then alive+=("$pid"); fi
        done
        [ ${#alive[@]} -gt 0 ] || break
        if [ "$waited" -ge 150 ]; then
            for pid in "${alive[@]}"; do
                log "pid $pid (${PID_NAME[$pid]:-?}) ignored SIGTERM for 15 s, sending SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
            done
            break
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}

RUN="" # control files (stop flags, the running benchmark's pid)
SUMMARY_DONE=0
# shellcheck disable=SC2317
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    set +e
    if [ -n "$RUN" ]; then
        touch "$RUN/stop-workload" "$RUN/stop-checker" "$RUN/stop-sampler"
        # The redis-benchmark run in progress (its `timeout` wrapper) and the reshard in progress.
        for f in "$RUN/bench.pid" "$RUN/chaos.pid"; do
            if [ -s "$f" ]; then
                local p
                p=$(cat "$f")
                if [ -n "${PID_NAME[$p]:-}" ] || grep -qas -e timeout -e "$CLI" "/proc/$p/cmdline"; then
                    stop_pids "$p"
                fi
            fi
        done
    fi
    if [ ${#STARTED_PIDS[@]} -gt 0 ]; then
        log "stopping ${#STARTED_PIDS[@]} processes we started"
        local reversed=() i
        for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do reversed+=("${STARTED_PIDS[$i]}"); done
        # Workload, checker and sampler first, then the proxy, then the nodes.
        local helpers=() proxy=() nodes=()
        for p in "${reversed[@]}"; do
            case "${PID_NAME[$p]}" in
                slotproxy) proxy+=("$p") ;;
                node:*) nodes+=("$p") ;;
                *) helpers+=("$p") ;;
            esac
        done
        stop_pids "${helpers[@]+"${helpers[@]}"}"
        stop_pids "${proxy[@]+"${proxy[@]}"}"
        stop_pids "${nodes[@]+"${nodes[@]}"}"
    fi
    if [ -n "$OUT" ] && [ "$SUMMARY_DONE" = 0 ]; then
        log "run did not finish; output so far in $OUT"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ------------------------------------------------------------------------------------------
# Prerequisites, ports, output directory
# ------------------------------------------------------------------------------------------
for tool in "$SERVER" "$CLI" "$BENCH"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        log "$tool not found: running scripts/install-deps.sh"
        bash scripts/install-deps.sh >&2
    fi
done
for tool in "$SERVER" "$CLI" "$BENCH" python3 timeout curl; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found"
done

NODE_PORTS=()
for i in 0 1 2 3 4 5; do NODE_PORTS+=($((PORT_BASE + i))); done
PROXY_PORT=$((PORT_BASE + 10))
ADMIN_PORT=$((PORT_BASE + 11))
if q=$(busy_node_port "${NODE_PORTS[@]}"); then
    die "port $q on 127.0.0.1 is in use (another soak run? pick other ports with --port-base)"
fi
for q in "$PROXY_PORT" "$ADMIN_PORT"; do
    port_in_use "$q" && die "port $q on 127.0.0.1 is in use (pick other ports with --port-base)"
done
PORTS_CSV=$(IFS=,; echo "${NODE_PORTS[*]}")

resolve_proxy_bin

if [ -z "$OUT" ]; then
    OUT=$(mktemp -d "${TMPDIR:-/tmp}/slotproxy-soak.XXXXXX")
else
    mkdir -p "$OUT"
    [ -z "$(ls -A "$OUT")" ] || die "--out $OUT is not empty"
fi
RUN="$OUT/run"
mkdir -p "$RUN" "$OUT/nodes" "$OUT/chaos" "$OUT/bench"
EVENTS="$OUT/events.tsv"
WORKLOAD="$OUT/workload.tsv"
printf 'time\tkind\tstatus\tseconds\tdetail\n' >"$EVENTS"
printf 'time\trun\trc\trequests\terror_lines\tdetail\n' >"$WORKLOAD"
{
    echo "started $(date -Is)"
    echo "backend $BACKEND ($("$SERVER" --version))"
    echo "proxy $PROXY_BIN (git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')), workers $WORKERS"
    echo "duration_s $DURATION_S interval $INTERVAL warmup $WARMUP window $WINDOW rate $RATE keyspace $KEYSPACE checker_rate $CHECKER_RATE reshard_slots $RESHARD_SLOTS event_gap $EVENT_GAP"
    echo "nodes ${NODE_PORTS[*]} proxy $PROXY_PORT admin $ADMIN_PORT"
} >"$OUT/run-info.txt"
log "output directory: $OUT"

# ------------------------------------------------------------------------------------------
# Cluster: 3 primaries + 3 replicas
# ------------------------------------------------------------------------------------------
log "starting 6 $SERVER on ports ${NODE_PORTS[*]}"
for port in "${NODE_PORTS[@]}"; do
    dir="$OUT/nodes/$port"
    mkdir -p "$dir"
    write_node_conf "$dir/node.conf" "$port" 5000 node.log "maxclients 2000"
    start_node "$port" "$dir/node.conf" "$SERVER"
    track "${NODE_PID[$port]}" "node:$port"
done
port=$(wait_nodes_answer 30 "${NODE_PORTS[@]}") || case $? in
    2) die "$SERVER on $port exited; see $OUT/nodes/$port/node.log" ;;
    *) die "$SERVER on $port did not answer within 30 s" ;;
esac
log "+ $CLI --cluster create ... --cluster-replicas 1"
create_cluster "${NODE_PORTS[@]}" >"$OUT/chaos/create.log" 2>&1 ||
    die "cluster create failed: $(tail -n 5 "$OUT/chaos/create.log" | tr '\n' ' ')"

settle() { # [--admin] -> 0 when settled within 180 s
    local extra=()
    [ "${1:-}" != --admin ] || extra=(--admin "127.0.0.1:$ADMIN_PORT")
    python3 "$HELPER" settle --ports "$PORTS_CSV" --timeout 180 "${extra[@]+"${extra[@]}"}"
}
log "waiting for the cluster to settle"
settle || die "the new cluster did not settle"

# ------------------------------------------------------------------------------------------
# Proxy
# ------------------------------------------------------------------------------------------
log "starting slotproxy on 127.0.0.1:$PROXY_PORT (admin 127.0.0.1:$ADMIN_PORT, --workers $WORKERS)"
NO_COLOR=1 "$PROXY_BIN" --listen "127.0.0.1:$PROXY_PORT" --upstream "redis://127.0.0.1:${NODE_PORTS[0]}" \
    --admin-listen "127.0.0.1:$ADMIN_PORT" --workers "$WORKERS" >"$OUT/proxy.log" 2>&1 &
PROXY_PID=$!
track "$PROXY_PID" slotproxy
poll_while_alive "$PROXY_PID" $((SECONDS + 60)) 0.2 proxy_ready "$ADMIN_PORT" || case $? in
    2) die "slotproxy exited: $(tail -n 5 "$OUT/proxy.log" | tr '\n' ' ')" ;;
    *) die "slotproxy /readyz not 200 after 60 s; see $OUT/proxy.log" ;;
esac
[ "$(node_cli "$PROXY_PORT" set soak:hello ok 2>&1)" = OK ] || die "SET through the proxy failed"
log "prefill: $KEYSPACE SETs of 64 bytes on random keys through the proxy"
"$BENCH" -h 127.0.0.1 -p "$PROXY_PORT" -n "$KEYSPACE" -r "$KEYSPACE" -c 8 -P 32 -d 64 -t set --csv \
    >"$OUT/bench/prefill.out" 2>&1 || die "prefill failed: $(tail -n 3 "$OUT/bench/prefill.out" | tr '\n' ' ')"

# ------------------------------------------------------------------------------------------
# Sampler, checker, workload
# ------------------------------------------------------------------------------------------
START_EPOCH=$(date +%s)
python3 "$HELPER" sampler --pid "$PROXY_PID" --admin "127.0.0.1:$ADMIN_PORT" --ports "$PORTS_CSV" \
    --csv "$OUT/samples.csv" --stop-file "$RUN/stop-sampler" --interval "$INTERVAL" \
    --start "$START_EPOCH" --events "$EVENTS" --checker-progress "$RUN/checker-progress.json" \
    2>"$OUT/sampler.log" &
SAMPLER_PID=$!
track "$SAMPLER_PID" sampler

python3 "$HELPER" checker --port "$PROXY_PORT" --stop-file "$RUN/stop-checker" \
    --result "$OUT/checker.json" --rate "$CHECKER_RATE" --progress "$RUN/checker-progress.json" \
    >"$OUT/checker.log" 2>&1 &
CHECKER_PID=$!
track "$CHECKER_PID" checker

# One redis-benchmark run through the proxy, recorded in workload.tsv.
bench_run() { # name requests args...
    local name=$1 n=$2 rc=0 errs detail
    shift 2
    local out="$OUT/bench/last-$name.out" err="$OUT/bench/last-$name.err"
    timeout 120 "$BENCH" -h 127.0.0.1 -p "$PROXY_PORT" -n "$n" --csv "$@" >"$out" 2>"$err" &
    echo $! >"$RUN/bench.pid"
    wait $! || rc=$?
    : >"$RUN/bench.pid"
    errs=$(grep -c -i 'error' "$err" || true)
    detail=$(head -c 300 "$err" | tr '\t\n\r' '   ')
    if [ "$rc" != 0 ] || [ "$errs" != 0 ]; then
        cp "$err" "$OUT/bench/failed-$(date +%H%M%S)-$name.err"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(date +%H:%M:%S)" "$name" "$rc" "$n" "$errs" "$detail" >>"$WORKLOAD"
}

# Every PERIOD seconds a burst worth RATE*PERIOD requests: half the mix of plain commands
# (6 tests), a third pipelined SET/GET, the rest MGET of 5 random keys (split by the proxy).
workload_loop() {
    local period=10 budget n_mix n_pipe n_mget started
    budget=$((RATE * period))
    n_mix=$((budget / 2 / 6))
    n_pipe=$((budget / 3 / 2))
    n_mget=$((budget - n_mix * 6 - n_pipe * 2))
    while [ ! -e "$RUN/stop-workload" ]; do
        started=$SECONDS
        bench_run mix "$n_mix" -c 8 -r "$KEYSPACE" -d 64 -t set,get,incr,lpush,rpop,mset
        [ ! -e "$RUN/stop-workload" ] || break
        bench_run pipelined "$n_pipe" -c 4 -P 16 -r "$KEYSPACE" -d 64 -t set,get
        [ ! -e "$RUN/stop-workload" ] || break
        bench_run mget "$n_mget" -c 4 -r "$KEYSPACE" \
            MGET key:__rand_int__ key:__rand_int__ key:__rand_int__ key:__rand_int__ key:__rand_int__
        while [ $((SECONDS - started)) -lt $period ] && [ ! -e "$RUN/stop-workload" ]; do sleep 0.5; done
    done
}
workload_loop &
WORKLOAD_PID=$!
track "$WORKLOAD_PID" workload

# ------------------------------------------------------------------------------------------
# Chaos loop
# ------------------------------------------------------------------------------------------
event() { # kind status seconds detail
    printf '%s\t%s\t%s\t%s\t%s\n' "$(date +%H:%M:%S)" "$1" "$2" "$3" "$4" >>"$EVENTS"
    log "event: $1 $2 (${3}s) $4"
}

# Topology as "id port role nslots primary_id" lines, from the first node that answers.
topo() {
    local port
    for port in "${NODE_PORTS[@]}"; do
        if python3 "$HELPER" topo --port "$port" 2>/dev/null; then return 0; fi
    done
    return 1
}

RESHARDS=0
do_reshard() {
    local t0=$SECONDS lines primaries dst src dst_port src_port rc=0 logf
    lines=$(topo) || { event reshard failed 0 "no topology"; return 0; }
    mapfile -t primaries < <(awk '$3 == "primary" && $4 > 0' <<<"$lines" | sort -k2,2n)
    [ ${#primaries[@]} -eq 3 ] || { event reshard failed 0 "${#primaries[@]} primaries with slots"; return 0; }
    read -r dst dst_port _ <<<"${primaries[$((RESHARDS % 3))]}"
    read -r src src_port _ < <(printf '%s\n' "${primaries[@]}" | awk -v d="$dst" '$1 != d' | sort -k4,4nr | head -n 1)
    RESHARDS=$((RESHARDS + 1))
    logf="$OUT/chaos/reshard-$RESHARDS.log"
    timeout 600 "$CLI" --cluster reshard "127.0.0.1:${NODE_PORTS[0]}" --cluster-from "$src" \
        --cluster-to "$dst" --cluster-slots "$RESHARD_SLOTS" --cluster-yes >"$logf" 2>&1 &
    echo $! >"$RUN/chaos.pid"
    wait $! || rc=$?
    : >"$RUN/chaos.pid"
    if [ "$rc" = 0 ]; then
        event reshard "done" $((SECONDS - t0)) "$RESHARD_SLOTS slots $src_port -> $dst_port"
    else
        event reshard failed $((SECONDS - t0)) "rc=$rc $src_port -> $dst_port: $(tail -n 3 "$logf" | tr '\n\t' '  ')"
    fi
}

do_failover() { # kind port: CLUSTER FAILOVER on the node at port (must be a replica)
    local kind=$1 port=$2 t0=$SECONDS role reply
    role=$(node_cli "$port" role 2>/dev/null | head -n 1 | tr -d '\r')
    if [ "$role" != slave ]; then
        event "$kind" skipped 0 "node $port is $role, not a replica"
        return 0
    fi
    reply=$(node_cli "$port" cluster failover 2>&1 | tr -d '\r')
    if [ "$reply" != OK ]; then
        event "$kind" failed 0 "node $port: CLUSTER FAILOVER said $reply"
        return 0
    fi
    while [ "$(node_cli "$port" role 2>/dev/null | head -n 1 | tr -d '\r')" != master ]; do
        if [ $((SECONDS - t0)) -ge 60 ]; then
            event "$kind" failed $((SECONDS - t0)) "node $port not promoted after 60 s"
            return 0
        fi
        sleep 0.2
    done
    event "$kind" "done" $((SECONDS - t0)) "node $port promoted"
}

# The original primaries, by port; failover k promotes the replica of shard k%3, the next
# failback gives that shard back to its original primary.
mapfile -t ORIG_PRIMARY_LINES < <(topo | awk '$3 == "primary" && $4 > 0' | sort -k2,2n)
[ ${#ORIG_PRIMARY_LINES[@]} -eq 3 ] || die "expected 3 primaries, topology says: $(topo | tr '\n' ';')"
replica_of() { # primary id -> port of its replica
    topo | awk -v m="$1" '$3 == "replica" && $5 == m { print $2; exit }'
}

DEADLINE=$((START_EPOCH + DURATION_S))
log "soak running for $((DURATION_S / 60)) min $((DURATION_S % 60)) s (until $(date -d "@$DEADLINE" +%H:%M:%S)); samples: $OUT/samples.csv"
step=0
failover_shard=0
failback_port=""
while [ "$(date +%s)" -lt "$DEADLINE" ]; do
    t0=$SECONDS
    if ! reason=$(settle --admin); then
        event settle timeout $((SECONDS - t0)) "$reason"
        continue
    fi
    [ "$(date +%s)" -lt "$DEADLINE" ] || break
    pid_alive "$PROXY_PID" || die "slotproxy exited; see $OUT/proxy.log"
    case $((step % 4)) in
        0 | 2) do_reshard ;;
        1)
            read -r shard_id shard_port _ <<<"${ORIG_PRIMARY_LINES[$((failover_shard % 3))]}"
            failover_shard=$((failover_shard + 1))
            rport=$(replica_of "$shard_id")
            if [ -n "$rport" ]; then
                do_failover failover "$rport"
                failback_port=$shard_port
            else
                event failover skipped 0 "no replica of $shard_port"
            fi
            ;;
        3)
            if [ -n "$failback_port" ]; then
                do_failover failback "$failback_port"
            fi
            failback_port=""
            ;;
    esac
    step=$((step + 1))
    for ((i = 0; i < EVENT_GAP * 2; i++)); do
        [ "$(date +%s)" -lt "$DEADLINE" ] || break
        sleep 0.5
    done
done

# ------------------------------------------------------------------------------------------
# Wind down: stop the workload, let the cluster settle, verify, last samples, summary
# ------------------------------------------------------------------------------------------
log "time is up: stopping the workload"
touch "$RUN/stop-workload"
wait "$WORKLOAD_PID" || true
settle --admin >/dev/null || log "WARNING: the cluster did not settle before verification"
log "stopping the checker; it reads every write back"
touch "$RUN/stop-checker"
wait "$CHECKER_PID" || log "WARNING: the checker exited with an error; see $OUT/checker.log"
touch "$RUN/stop-sampler"
wait "$SAMPLER_PID" || true
pid_alive "$PROXY_PID" || log "WARNING: slotproxy is no longer running"
echo "ended $(date -Is)" >>"$OUT/run-info.txt"

rc=0
strict=()
[ "$STRICT_ERRORS" = 0 ] || strict=(--strict-errors)
python3 "$HELPER" summary --dir "$OUT" --warmup "$WARMUP" --window "$WINDOW" --interval "$INTERVAL" \
    "${strict[@]+"${strict[@]}"}" >"$OUT/summary.txt" || rc=$?
SUMMARY_DONE=1
cat "$OUT/summary.txt"
echo "samples: $OUT/samples.csv   events: $EVENTS   proxy log: $OUT/proxy.log"
exit "$rc"
