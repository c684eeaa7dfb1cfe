# Shared by scripts/bench.sh and scripts/profile.sh (sourced, not run): logging and the
# bookkeeping of the processes a script starts, so that every one of them is stopped by PID on
# exit (never by name).
#
# The sourcing script sets LOG_TAG (the word in front of every log line) and may set
# STOP_GRACE_S (how long a process gets to exit after SIGTERM; valgrind needs longer to write
# its last output file).
# shellcheck shell=bash

LOG_TAG=${LOG_TAG:-script}
STOP_GRACE_S=${STOP_GRACE_S:-10}
STARTED_PIDS=() # every long-running process we started, in start order
declare -A PID_NAME=()
BENCH_PID="" # the redis-benchmark run in progress (its `timeout` wrapper)

log() { printf '[%s %s] %s\n' "$LOG_TAG" "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

# Records a background process we just started.
track() { # pid name
    STARTED_PIDS+=("$1")
    PID_NAME[$1]=$2
}

# Stops the given PIDs (all ours): SIGTERM to all, up to STOP_GRACE_S of grace, then SIGKILL;
# reaps them.
stop_pids() {
    local pid waited=0 alive
    [ $# -gt 0 ] || return 0
    for pid in "$@"; do
        pid_alive "$pid" && kill -TERM "$pid" 2>/dev/null || true
    done
    while :; do
        # A child that exited stays a zombie (kill -0 succeeds) until reaped: reap the dead.
        for pid in "$@"; do
            if [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ]; then
                wait "$pid" 2>/dev/null || true
            fi
        done
        alive=()
        for pid in "$@"; do pid_alive "$pid" && alive+=("$pid"); done
        [ ${#alive[@]} -gt 0 ] || break
        if [ "$waited" -ge $((STOP_GRACE_S * 10)) ]; then
            for pid in "${alive[@]}"; do
                log "pid $pid (${PID_NAME[$pid]:-?}) ignored SIGTERM for $STOP_GRACE_S s: SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
                wait "$pid" 2>/dev/null || true
            done
            break
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
}

# Stops one started process and forgets it.
stop_tracked() { # pid
    local kept=() p
    stop_pids "$1"
    for p in "${STARTED_PIDS[@]}"; do [ "$p" = "$1" ] || kept+=("$p"); done
    STARTED_PIDS=("${kept[@]+"${kept[@]}"}")
}

# Stops the redis-benchmark run in progress, then every started process, newest first (the
# proxies were started after the nodes they talk to).
stop_everything() {
    if [ -n "$BENCH_PID" ]; then
        stop_pids "$BENCH_PID"
        BENCH_PID=""
    fi
    if [ ${#STARTED_PIDS[@]} -gt 0 ]; then
        log "stopping ${#STARTED_PIDS[@]} processes (proxies, redis-server)"
        local reversed=() i
        for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do reversed+=("${STARTED_PIDS[$i]}"); done
        stop_pids "${reversed[@]}"
    fi
}
