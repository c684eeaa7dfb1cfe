# Shared by scripts/dev-cluster.sh, scripts/soak.sh and scripts/bench.sh (sourced, not run):
# starting a local Redis Cluster of real nodes on 127.0.0.1 and waiting for it and the proxy.
#
# Sourcing it only defines functions and two variables. The helpers that wait print no message
# and never exit: a failure is a return code (and the port it concerns on stdout), and each
# script says it in its own words, since every script's output is part of its interface.
# shellcheck shell=bash

# The command-line client the helpers run; soak.sh sets it to valkey-cli for --backend valkey.
# Set here rather than taken from the environment, so a stray NODE_CLI changes nothing.
NODE_CLI=redis-cli
# Port -> PID of every node started by start_node.
declare -A NODE_PID=()

pid_alive() { kill -0 "$1" 2>/dev/null; }

# Whether something accepts connections on 127.0.0.1:$1.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Prints the first of the given node ports, or of their cluster bus ports (port + 10000), that is
# in use on 127.0.0.1; fails when all of them are free.
busy_node_port() { # port...
    local port p
    for port in "$@"; do
        for p in "$port" $((port + 10000)); do
            if port_in_use "$p"; then
                echo "$p"
                return 0
            fi
        done
    done
    return 1
}

node_cli() { # port args... (no cluster redirects)
    local port=$1
    shift
    "$NODE_CLI" -h 127.0.0.1 -p "$port" "$@"
}

cluster_field() { # port field (of CLUSTER INFO)
    node_cli "$1" cluster info 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"
}

node_answers() { [ "$(node_cli "$1" ping 2>/dev/null)" = PONG ]; }

cluster_state_ok() { [ "$(cluster_field "$1" cluster_state)" = ok ]; }

# Whether the proxy whose admin listener is on 127.0.0.1:$1 says it is ready to serve.
proxy_ready() { curl -fsS -o /dev/null "http://127.0.0.1:$1/readyz" 2>/dev/null; }

# Writes a cluster node's configuration to the file $1, in the node's own directory (which also
# holds its nodes.conf and log): port $2, cluster-node-timeout $3 ms, log file $4, then each
# further argument as a line of its own (what one script's nodes need beyond the others').
write_node_conf() { # file port node_timeout_ms logfile [line...]
    local file=$1 port=$2 timeout_ms=$3 logfile=$4 line
    shift 4
    {
        cat <<CONF
port $port
bind 127.0.0.1
protected-mode no
cluster-enabled yes
cluster-config-file nodes.conf
cluster-node-timeout $timeout_ms
cluster-allow-replica-migration no
save ""
appendonly no
CONF
        for line in "$@"; do echo "$line"; done
        cat <<CONF
daemonize no
logfile $logfile
dir ${file%/*}
CONF
    } >"$file"
}

# Starts the node on port $1 from its configuration file $2 in the background, with the command
# given after them (the server, or the server behind taskset); its stdout and stderr go to
# stdout.log beside the configuration, its PID to NODE_PID[port].
start_node() { # port conf command...
    local port=$1 conf=$2
    shift 2
    "$@" "$conf" >"${conf%/*}/stdout.log" 2>&1 &
    NODE_PID[$port]=$!
}

# Runs "$@" every $2 seconds until it succeeds (returns 0) or SECONDS reaches $1 (returns 1).
poll_until() { # deadline pause command...
    local deadline=$1 pause=$2
    shift 2
    until "$@"; do
        [ $SECONDS -lt "$deadline" ] || return 1
        sleep "$pause"
    done
}

# poll_until that also gives up (returns 2) as soon as process $1 has exited: nothing that
# process was to serve will answer any more.
poll_while_alive() { # pid deadline pause command...
    local pid=$1 deadline=$2 pause=$3
    shift 3
    until "$@"; do
        pid_alive "$pid" || return 2
        [ $SECONDS -lt "$deadline" ] || return 1
        sleep "$pause"
    done
}

# Waits until each node started by start_node on the given ports answers PING, allowing each
# $1 seconds. On failure prints the port and returns 2 if its process exited, 1 on time-out.
wait_nodes_answer() { # timeout_s port...
    local timeout_s=$1 port rc
    shift
    for port in "$@"; do
        poll_while_alive "${NODE_PID[$port]}" $((SECONDS + timeout_s)) 0.1 node_answers "$port" || {
            rc=$?
            echo "$port"
            return "$rc"
        }
    done
}

# Waits until `CHECK PORT` succeeds for each of the given ports in turn, polled every $2 seconds,
# all of them by the deadline $1 (in SECONDS). On time-out prints the port and fails.
wait_each_node() { # deadline pause check port...
    local deadline=$1 pause=$2 check=$3 port
    shift 3
    for port in "$@"; do
        poll_until "$deadline" "$pause" "$check" "$port" || {
            echo "$port"
            return 1
        }
    done
}

# `--cluster create` of the nodes on the given ports, one replica per primary, without asking.
create_cluster() { # port...
    "$NODE_CLI" --cluster create "${@/#/127.0.0.1:}" --cluster-replicas 1 --cluster-yes
}

# Sets PROXY_BIN to the slotproxy binary to run: the one given (soak.sh and bench.sh take it as
# --proxy), checked, or else the release build, built now with cargo (its output on stderr).
# Uses the sourcing script's log and die: both scripts word this step alike.
resolve_proxy_bin() {
    if [ -n "$PROXY_BIN" ]; then
        [ -x "$PROXY_BIN" ] || die "--proxy $PROXY_BIN is not an executable file"
    else
        log "+ cargo build --release"
        cargo build --release >&2
        PROXY_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/slotproxy"
        [ -x "$PROXY_BIN" ] || die "$PROXY_BIN was not built"
    fi
}
