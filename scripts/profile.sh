#!/usr/bin/env bash
# Instructions per request: slotproxy (and optionally other proxies) under callgrind, in front of
# a throw-away local 3-primary cluster. Run `scripts/profile.sh --help` for the options.
#
# Unlike scripts/bench.sh (wall-clock requests/s and CPU time, noisy on a shared machine), this
# counts user-space instructions (callgrind's Ir), which do not depend on what else the machine
# runs: the figure to compare before and after a change to the request path.
#
# Everything this script starts (redis-server, the proxies under valgrind, redis-benchmark) is
# recorded by PID and stopped on exit, including on failure and Ctrl-C. Only 127.0.0.1 is used.
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
# Read by scripts/lib/procs.sh. valgrind writes its last output file on exit: give it time.
# shellcheck disable=SC2034
LOG_TAG=profile STOP_GRACE_S=20
# shellcheck source=scripts/lib/procs.sh
source "$ROOT/scripts/lib/procs.sh"

usage() {
    cat <<'EOF'
Usage: scripts/profile.sh [OPTIONS]

Starts a local 3-primary Redis Cluster (3 redis-server processes, no replicas, on free ports in
32000-32999, data in a temporary directory), then runs slotproxy with one worker under
`valgrind --tool=callgrind` and prints the user-space instructions it executes per request
(Ir/request: callgrind's instruction count over all the proxy's threads, divided by the
requests of the run) for each workload. Peers given with --peer are measured the same way,
one after the other.

For each workload: one warm-up redis-benchmark run (a quarter of the requests), then
`callgrind_control --zero`, the measured run, `callgrind_control --dump`. The measured run
includes its 50 connections being accepted and redis-benchmark's CONFIG GET (a few dozen
commands' worth against tens of thousands of requests).

Workloads (50 clients, 64-byte values):
  get_p1     GET, -P 1                          -n 20000
  get_p16    GET, -P 16                         -n 200000
  set_p1     SET, -P 1                          -n 20000
  set_p16    SET, -P 16                         -n 200000
  mget10     MGET of 10 keys in 10 slots, -P 1  -n 10000
GET/SET use redis-benchmark's default key (`key:__rand_int__`, literal without -r).
Under callgrind a proxy serves roughly 10,000 (-P 1) to 35,000 (-P 16) requests/s: the
default (get_p1,get_p16) takes under half a minute per proxy, all five workloads about one.

Options:
  --proxy PATH        slotproxy binary to profile; without it the script runs
                      `cargo build --release` and uses ${CARGO_TARGET_DIR:-target}/release/slotproxy
                      (the release profile keeps debug info, so callgrind_annotate names functions)
  --no-slotproxy      profile only the peers
  --peer NAME=PATH    also profile another proxy, configured as scripts/bench.sh does (one
                      worker thread). Repeatable. Supported: predixy, redis-cluster-proxy, another
                      slotproxy build (e.g. slotproxy-base=PATH). The kind is taken from NAME or
                      from the binary's file name
  --workloads LIST    comma-separated, from get_p1,get_p16,set_p1,set_p16,mget10
                      (default: get_p1,get_p16)
  --quick             divide every -n by 10 (a quick check that the script works; connection
                      set-up then weighs on the figures)
  --keep DIR          keep the callgrind output of every measured run as
                      DIR/callgrind.TARGET.WORKLOAD.out (created if missing), for
                      `callgrind_annotate DIR/callgrind.slotproxy.get_p16.out`
  --run-timeout S     kill a single redis-benchmark run after S seconds (default 600)
  -h, --help          this help

Output: log lines on stderr; the Ir/request table (plain text and Markdown) on stdout. Exit
status 0 when every run succeeded, 1 if one failed (redis-benchmark error, e.g. an error reply
through a proxy, or a proxy that died) or on setup failure, 2 on a usage error.
EOF
}

# ------------------------------------------------------------------------------------------
# Options
# ------------------------------------------------------------------------------------------
PROXY_BIN=""
NO_SLOTPROXY=0
PEERS=()
WORKLOADS_OPT=get_p1,get_p16
QUICK=0
KEEP_DIR=""
RUN_TIMEOUT=600

die_usage() {
    echo "profile: $*" >&2
    echo "Try 'scripts/profile.sh --help'." >&2
    exit 2
}
need_arg() { [ $# -ge 2 ] && [ -n "$2" ] || die_usage "$1 needs a value"; }

while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --proxy) need_arg "$@"; PROXY_BIN=$2; shift 2 ;;
        --proxy=*) PROXY_BIN=${1#*=}; shift ;;
        --no-slotproxy) NO_SLOTPROXY=1; shift ;;
        --peer) need_arg "$@"; PEERS+=("$2"); shift 2 ;;
        --peer=*) PEERS+=("${1#*=}"); shift ;;
        --workloads) need_arg "$@"; WORKLOADS_OPT=$2; shift 2 ;;
        --workloads=*) WORKLOADS_OPT=${1#*=}; shift ;;
        --quick) QUICK=1; shift ;;
        --keep) need_arg "$@"; KEEP_DIR=$2; shift 2 ;;
        --keep=*) KEEP_DIR=${1#*=}; shift ;;
        --run-timeout) need_arg "$@"; RUN_TIMEOUT=$2; shift 2 ;;
        --run-timeout=*) RUN_TIMEOUT=${1#*=}; shift ;;
        *) die_usage "unknown option: $1" ;;
    esac
done

# Paths on the command line are relative to the caller's directory (the script cds to the repo).
abs_path() { case "$1" in /*) echo "$1" ;; *) echo "$CALLER_PWD/$1" ;; esac; }
[ -z "$PROXY_BIN" ] || PROXY_BIN=$(abs_path "$PROXY_BIN")
[ -z "$KEEP_DIR" ] || KEEP_DIR=$(abs_path "$KEEP_DIR")
[[ $RUN_TIMEOUT =~ ^[0-9]+$ ]] && [ "$RUN_TIMEOUT" -ge 1 ] || die_usage "--run-timeout must be a positive integer"
[ "$NO_SLOTPROXY" = 0 ] || [ -z "$PROXY_BIN" ] || die_usage "--proxy and --no-slotproxy exclude each other"

ALL_WORKLOADS=(get_p1 get_p16 set_p1 set_p16 mget10)
WORKLOADS=()
IFS=',' read -r -a requested <<<"$WORKLOADS_OPT"
for w in "${requested[@]}"; do
    case " ${ALL_WORKLOADS[*]} " in
        *" $w "*) ;;
        *) die_usage "unknown workload '$w' (known: ${ALL_WORKLOADS[*]})" ;;
    esac
    case " ${WORKLOADS[*]+"${WORKLOADS[*]}"} " in *" $w "*) continue ;; esac
    WORKLOADS+=("$w")
done
[ ${#WORKLOADS[@]} -gt 0 ] || die_usage "no workload selected"

DIV=1
[ "$QUICK" = 1 ] && DIV=10
N_P1=$((20000 / DIV))
N_P16=$((200000 / DIV))
N_MGET=$((10000 / DIV))

# Targets: slotproxy first (unless --no-slotproxy), then the peers in the order given.
TARGETS=()
[ "$NO_SLOTPROXY" = 1 ] || TARGETS+=(slotproxy)
declare -A TARGET_PATH=() TARGET_KIND=()
for spec in "${PEERS[@]+"${PEERS[@]}"}"; do
    [[ $spec == *=* ]] || die_usage "--peer wants NAME=PATH, got '$spec'"
    name=${spec%%=*}
    path=$(abs_path "${spec#*=}")
    [[ $name =~ ^[A-Za-z0-9_.-]+$ ]] || die_usage "peer name '$name': use letters, digits, _ . -"
    [ "$name" != slotproxy ] || die_usage "peer name 'slotproxy' is reserved"
    [ -z "${TARGET_PATH[$name]:-}" ] || die_usage "peer '$name' given twice"
    [ -x "$path" ] || die_usage "peer '$name': '$path' is not an executable file"
    kind=$(peer_kind "$name" "$path") || die_usage "peer '$name': unsupported proxy (supported: $PEER_KINDS_HELP)"
    TARGETS+=("$name")
    TARGET_PATH[$name]=$path
    TARGET_KIND[$name]=$kind
done
[ ${#TARGETS[@]} -gt 0 ] || die_usage "nothing to profile (--no-slotproxy without --peer)"

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
        if [ "$rc" -eq 0 ]; then
            rm -rf "$TMP"
        else
            log "configs and logs kept in $TMP"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ------------------------------------------------------------------------------------------
# Prerequisites, ports, cluster
# ------------------------------------------------------------------------------------------
for tool in redis-server redis-cli redis-benchmark valgrind callgrind_control timeout; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found (valgrind: apt-get install valgrind)"
done
if [ "$NO_SLOTPROXY" = 0 ]; then
    resolve_proxy_bin
    log "slotproxy binary: $PROXY_BIN"
fi
if [ -n "$KEEP_DIR" ]; then
    mkdir -p "$KEEP_DIR" || die "cannot create --keep directory $KEEP_DIR"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/slotproxy-profile.XXXXXX")
log "temporary directory: $TMP"

PORT_MIN=32000
PORT_MAX=32999
refresh_used_ports
NODE_PORTS=()
for i in 0 1 2; do
    pick_port "$PORT_MIN" "$PORT_MAX" || die "no free port pair in $PORT_MIN-$PORT_MAX"
    NODE_PORTS+=("$PICKED")
done
pick_port "$PORT_MIN" "$PORT_MAX" || die "no free port pair in $PORT_MIN-$PORT_MAX"
PROXY_PORT=$PICKED
pick_port "$PORT_MIN" "$PORT_MAX" || die "no free port pair in $PORT_MIN-$PORT_MAX"
ADMIN_PORT=$PICKED
SEED=${NODE_PORTS[0]}

cluster_complete() {
    cluster_state_ok "$1" &&
        [ "$(cluster_field "$1" cluster_known_nodes)" = 3 ] &&
        [ "$(cluster_field "$1" cluster_slots_ok)" = 16384 ]
}

log "starting 3 redis-server on ports ${NODE_PORTS[*]}"
for port in "${NODE_PORTS[@]}"; do
    dir="$TMP/node-$port"
    mkdir -p "$dir"
    write_node_conf "$dir/redis.conf" "$port" 15000 redis.log
    start_node "$port" "$dir/redis.conf" redis-server
    track "${NODE_PID[$port]}" "redis-server:$port"
done
port=$(wait_nodes_answer 30 "${NODE_PORTS[@]}") || case $? in
    2) die "redis-server on $port exited (port taken?); see $TMP/node-$port/redis.log" ;;
    *) die "redis-server on $port did not answer within 30 s" ;;
esac
# No replicas: a profile needs primaries only (create_cluster makes one replica per primary).
"$NODE_CLI" --cluster create "${NODE_PORTS[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes \
    >"$TMP/cluster-create.log" 2>&1 ||
    die "redis-cli --cluster create failed: $(tail -n 5 "$TMP/cluster-create.log" | tr '\n' ' ')"
port=$(wait_each_node $((SECONDS + 60)) 0.2 cluster_complete "${NODE_PORTS[@]}") ||
    die "node $port: cluster not ok after 60 s; see $TMP/node-$port/redis.log"
log "cluster ok"

keyslot() { node_cli "$SEED" cluster keyslot "$1" | tr -d '\r'; }
BENCH_KEY='key:__rand_int__'
VALUE=$(printf 'x%.0s' $(seq 64))
# MGET: 10 keys in 10 different slots, as in scripts/bench.sh.
MGET_KEYS=()
declare -A seen_slot=()
for ((i = 1; i <= 200 && ${#MGET_KEYS[@]} < 10; i++)); do
    k="bench:mget:$i"
    s=$(keyslot "$k")
    [ -z "${seen_slot[$s]:-}" ] || continue
    seen_slot[$s]=1
    MGET_KEYS+=("$k")
done
[ ${#MGET_KEYS[@]} -eq 10 ] || die "could not find 10 keys in different slots"
# Sets the keys to the value the readiness check expects: again before each proxy, since the
# SET workloads overwrite the GET key with redis-benchmark's own value.
populate() {
    local k out
    for k in "$BENCH_KEY" "${MGET_KEYS[@]}"; do
        out=$(redis-cli -c -h 127.0.0.1 -p "$SEED" set "$k" "$VALUE" | tr -d '\r')
        [ "$out" = OK ] || die "SET $k failed: $out"
    done
}

# ------------------------------------------------------------------------------------------
# One proxy under callgrind
# ------------------------------------------------------------------------------------------
# Waits until the proxy on PROXY_PORT (process $1) answers GET and MGET correctly.
wait_proxy_ready() { # pid name log
    local pid=$1 name=$2 logf=$3 deadline=$((SECONDS + 180)) got want
    want=$VALUE
    while :; do
        pid_alive "$pid" || die "$name exited during start-up; last log lines: $(tail -n 5 "$logf" 2>/dev/null | tr '\n' ' ')"
        got=$(node_cli "$PROXY_PORT" get "$BENCH_KEY" 2>/dev/null | tr -d '\r' || true)
        [ "$got" = "$want" ] && break
        [ $SECONDS -lt $deadline ] || die "$name on $PROXY_PORT not ready after 180 s (GET said '$got'); see $logf"
        sleep 0.5
    done
    want=$(for _ in "${MGET_KEYS[@]}"; do echo "$VALUE"; done)
    got=$(node_cli "$PROXY_PORT" mget "${MGET_KEYS[@]}" 2>&1 | tr -d '\r' || true)
    [ "$got" = "$want" ] || die "$name: MGET of the 10 keys returned a wrong reply: $(head -c 300 <<<"$got")"
}

start_target() { # target -> sets TARGET_PID
    local t=$1 logf="$TMP/$1.log" cmd
    populate
    # Each target gets the same ports in turn (the previous one is stopped first).
    if [ "$t" = slotproxy ]; then
        cmd=("$PROXY_BIN" --listen "127.0.0.1:$PROXY_PORT" --upstream "redis://127.0.0.1:$SEED"
            --admin-listen "127.0.0.1:$ADMIN_PORT" --workers 1)
    else
        peer_command "${TARGET_KIND[$t]}" "$t" "${TARGET_PATH[$t]}" "$PROXY_PORT" "$SEED" \
            "$TMP/$t.conf" "${NODE_PORTS[@]}" || die "peer $t: $PEER_ERR"
        cmd=("${PEER_CMD[@]}")
    fi
    log "starting $t under callgrind on 127.0.0.1:$PROXY_PORT: ${cmd[*]}"
    # One output file per dump: $TMP/$t.cg.1, .2, ... (the last one, written at exit, is $t.cg).
    NO_COLOR=1 valgrind --tool=callgrind --callgrind-out-file="$TMP/$t.cg" "${cmd[@]}" >"$logf" 2>&1 &
    TARGET_PID=$!
    track "$TARGET_PID" "$t"
    if [ "$t" = slotproxy ] && command -v curl >/dev/null 2>&1; then
        poll_while_alive "$TARGET_PID" $((SECONDS + 180)) 0.5 proxy_ready "$ADMIN_PORT" || case $? in
            2) die "$t exited during start-up: $(tail -n 5 "$logf" | tr '\n' ' ')" ;;
            *) die "$t: /readyz not 200 after 180 s; see $logf" ;;
        esac
    fi
    wait_proxy_ready "$TARGET_PID" "$t" "$logf"
}

bench_args() { # workload n -> BARGS
    case "$1" in
        get_p1) BARGS=(-t get -P 1 -d 64) ;;
        get_p16) BARGS=(-t get -P 16 -d 64) ;;
        set_p1) BARGS=(-t set -P 1 -d 64) ;;
        set_p16) BARGS=(-t set -P 16 -d 64) ;;
        mget10) BARGS=(-P 1 MGET "${MGET_KEYS[@]}") ;;
    esac
    BARGS=(-h 127.0.0.1 -p "$PROXY_PORT" -c 50 -n "$2" --csv "${BARGS[@]}")
}
workload_n() {
    case "$1" in
        get_p1 | set_p1) echo "$N_P1" ;;
        get_p16 | set_p16) echo "$N_P16" ;;
        mget10) echo "$N_MGET" ;;
    esac
}

# Runs redis-benchmark for workload $1 with $2 requests; fails (after logging why) when it
# fails: exit status, no result row, or anything on stderr other than the warning that the
# proxy refused CONFIG GET (redis-benchmark only reads save/appendonly with it).
run_bench() { # workload n label
    local out="$TMP/run-$3.csv" err="$TMP/run-$3.err" rc=0 row
    bench_args "$1" "$2"
    timeout -k 5 "$RUN_TIMEOUT" redis-benchmark "${BARGS[@]}" >"$out" 2>"$err" &
    BENCH_PID=$!
    wait "$BENCH_PID" || rc=$?
    BENCH_PID=""
    row=$(grep '^"' "$out" | grep -v '^"test"' | tail -n 1 || true)
    grep -v -x 'WARNING: Could not fetch server CONFIG' "$err" >"$err.unexpected" || true
    if [ "$rc" -ne 0 ] || [ -z "$row" ] || [ -s "$err.unexpected" ]; then
        log "ERROR: $3 failed (exit $rc$([ "$rc" -ne 124 ] || echo ", timed out after ${RUN_TIMEOUT}s")$([ -n "$row" ] || echo ", no result row")): $(tr '\n' ' ' <"$err.unexpected" | head -c 400)"
        log "  redis-benchmark ${BARGS[*]}"
        return 1
    fi
    RUN_RPS=$(tr -d '"' <<<"$row" | cut -d, -f2)
}

# Asks callgrind in process $1 to act ($2: --zero or --dump) and checks it answered.
cg_control() { # pid action
    local out
    out=$(callgrind_control "$2" "$1" 2>&1) || true
    grep -q 'OK\.' <<<"$out" || {
        log "ERROR: callgrind_control $2 $1: $(tr '\n' ' ' <<<"$out")"
        return 1
    }
}

declare -A IR_PER_REQ=()
FAILED=0
profile_target() { # target
    local t=$1 wl n f ir label
    start_target "$t"
    for wl in "${WORKLOADS[@]}"; do
        n=$(workload_n "$wl")
        label="$t.$wl"
        if ! pid_alive "$TARGET_PID"; then
            log "ERROR: $t (pid $TARGET_PID) is not running any more; see $TMP/$t.log"
            FAILED=$((FAILED + 1))
            continue
        fi
        run_bench "$wl" $((n / 4)) "$label.warmup" || { FAILED=$((FAILED + 1)); continue; }
        cg_control "$TARGET_PID" --zero || { FAILED=$((FAILED + 1)); continue; }
        run_bench "$wl" "$n" "$label" || { FAILED=$((FAILED + 1)); continue; }
        rm -f "$TMP/$t.cg".*
        cg_control "$TARGET_PID" --dump || { FAILED=$((FAILED + 1)); continue; }
        f=""
        for _ in $(seq 100); do
            f=$(compgen -G "$TMP/$t.cg.*" | head -n 1 || true)
            [ -n "$f" ] && grep -q '^totals:' "$f" && break
            sleep 0.1
        done
        ir=""
        [ -z "$f" ] || ir=$(sed -n 's/^totals: *\([0-9][0-9]*\).*/\1/p' "$f" | head -n 1)
        if [ -z "$ir" ]; then
            log "ERROR: $label: no callgrind dump with a totals line in $TMP"
            FAILED=$((FAILED + 1))
            continue
        fi
        if [ -n "$KEEP_DIR" ]; then
            mv "$f" "$KEEP_DIR/callgrind.$label.out"
        else
            rm -f "$f"
        fi
        IR_PER_REQ[$label]=$((ir / n))
        log "$(printf '%-10s %-8s %8s Ir/request  (%s Ir / %s requests; %s req/s under callgrind)' "$t" "$wl" "${IR_PER_REQ[$label]}" "$ir" "$n" "${RUN_RPS%.*}")"
    done
    stop_tracked "$TARGET_PID"
    # The output valgrind writes at exit covers the time since the last dump: not a measurement.
    rm -f "$TMP/$t.cg"
}

for t in "${TARGETS[@]}"; do profile_target "$t"; done

# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------
commas() { sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<<"$1"; }
# One table cell: the target's Ir/request for the workload, or FAILED.
ir_cell() { # target workload
    local v=${IR_PER_REQ[$1.$2]:-}
    if [ -n "$v" ]; then commas "$v"; else echo FAILED; fi
}
title() {
    case "$1" in
        get_p1) echo "GET -P 1" ;;
        get_p16) echo "GET -P 16" ;;
        set_p1) echo "SET -P 1" ;;
        set_p16) echo "SET -P 16" ;;
        mget10) echo "MGET 10 keys" ;;
    esac
}
{
    echo "User-space instructions per request (callgrind Ir, all threads of the proxy process),"
    echo "50 clients, 64-byte values, one worker; redis-benchmark $(redis-benchmark --version | awk '{ print $2 }'), $(valgrind --version);"
    [ -z "$PROXY_BIN" ] || echo "slotproxy: $PROXY_BIN (worktree at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown))"
    printf 'requests per measured run:'
    for wl in "${WORKLOADS[@]}"; do printf ' %s %s;' "$wl" "$(workload_n "$wl")"; done
    echo
    echo
    printf '%-22s' target
    for wl in "${WORKLOADS[@]}"; do printf '  %14s' "$(title "$wl")"; done
    echo
    for t in "${TARGETS[@]}"; do
        printf '%-22s' "$t"
        for wl in "${WORKLOADS[@]}"; do
            printf '  %14s' "$(ir_cell "$t" "$wl")"
        done
        echo
    done
    echo
    printf '| Ir/request |'
    for wl in "${WORKLOADS[@]}"; do printf ' %s |' "$(title "$wl")"; done
    echo
    printf '|---|'
    for _ in "${WORKLOADS[@]}"; do printf -- '---:|'; done
    echo
    for t in "${TARGETS[@]}"; do
        printf '| %s |' "$t"
        for wl in "${WORKLOADS[@]}"; do
            printf ' %s |' "$(ir_cell "$t" "$wl")"
        done
        echo
    done
}
[ -z "$KEEP_DIR" ] || log "callgrind output kept in $KEEP_DIR (callgrind_annotate $KEEP_DIR/callgrind.TARGET.WORKLOAD.out)"

if [ "$FAILED" -gt 0 ]; then
    log "$FAILED measurement(s) failed: see the errors above"
    exit 1
fi
log "done"
