# Shared by scripts/bench.sh and scripts/profile.sh (sourced, not run): the other proxies they
# can measure next to slotproxy (`--peer NAME=PATH`), and the one way each is configured, so a
# benchmark and a profile of the same peer measure the same set-up.
#
# Every peer runs one worker thread in front of the cluster and listens on 127.0.0.1 only.
# Like the helpers in cluster.sh, these print no message and never exit: a refusal is a return
# code with the reason in PEER_ERR, and each script says it in its own words.
# shellcheck shell=bash
# shellcheck disable=SC2034  # PEER_CMD, PEER_ERR, PEER_KINDS_HELP are read by the sourcing script

# The peer's command line, set by peer_command (the caller puts taskset or valgrind in front).
PEER_CMD=()
# Why peer_command refused, when it did.
PEER_ERR=""

# Prints the kind of proxy the peer NAME=PATH is: predixy, rcp (redis-cluster-proxy) or
# slotproxy (another build, e.g. slotproxy-base=PATH for before/after figures), taken from the
# name or else from the binary's file name. Fails for anything else.
peer_kind() { # name path
    local probe
    for probe in "$1" "${2##*/}"; do
        case "$probe" in
            *redis-cluster-proxy* | *redis_cluster_proxy*) echo rcp; return 0 ;;
            *predixy*) echo predixy; return 0 ;;
            *slotproxy*) echo slotproxy; return 0 ;;
        esac
    done
    return 1
}

# The peer kinds peer_kind knows, for error messages.
PEER_KINDS_HELP="predixy, redis-cluster-proxy, slotproxy: another build, e.g. slotproxy-base=PATH for before/after tables"

# Writes predixy's configuration to $1: named $2, listening on 127.0.0.1:$3, one worker thread,
# the cluster's nodes (ports $4...) as seeds, reads from primaries only, quiet log.
write_predixy_conf() { # file name port node_port...
    local file=$1 name=$2 port=$3 p
    shift 3
    {
        echo "Name slotproxy-bench-$name"
        echo "Bind 127.0.0.1:$port"
        echo "WorkerThreads 1"
        echo "ClientTimeout 0"
        echo "LogVerbSample 0"
        echo "LogDebugSample 0"
        echo "LogInfoSample 0"
        echo "LogNoticeSample 1"
        echo "LogWarnSample 1"
        echo "LogErrorSample 1"
        echo "ClusterServerPool {"
        echo "    MasterReadPriority 100"
        echo "    StaticSlaveReadPriority 0"
        echo "    DynamicSlaveReadPriority 0"
        echo "    RefreshInterval 1"
        echo "    ServerFailureLimit 10"
        echo "    ServerRetryTimeout 1"
        echo "    Servers {"
        for p in "$@"; do echo "        + 127.0.0.1:$p"; done
        echo "    }"
        echo "}"
    } >"$file"
}

# Sets PEER_CMD to the command line that runs the peer of kind $1 (binary $3, named $2) on
# 127.0.0.1:$4 in front of the cluster seeded at 127.0.0.1:$5 whose nodes are on ports $7...;
# predixy's configuration goes to the file $6. Fails (PEER_ERR says why) for a
# redis-cluster-proxy that cannot be kept on 127.0.0.1 or cannot do cross-slot MGET.
peer_command() { # kind name path port seed_port conf_file node_port...
    local kind=$1 name=$2 path=$3 port=$4 seed=$5 conf=$6 help
    shift 6
    PEER_ERR=""
    case "$kind" in
        predixy)
            write_predixy_conf "$conf" "$name" "$port" "$@"
            PEER_CMD=("$path" "$conf")
            ;;
        slotproxy)
            PEER_CMD=("$path" --listen "127.0.0.1:$port" --upstream "redis://127.0.0.1:$seed"
                --admin-listen 127.0.0.1:0 --workers 1)
            ;;
        rcp)
            help=$("$path" --help 2>&1 || true)
            # Without --bind, old builds listen on every interface: refuse (127.0.0.1 only).
            if ! grep -q -- '--bind' <<<"$help"; then
                PEER_ERR="this redis-cluster-proxy has no --bind option; refusing to listen beyond 127.0.0.1"
                return 1
            fi
            if ! grep -q -- '--enable-cross-slot' <<<"$help"; then
                PEER_ERR="this redis-cluster-proxy has no --enable-cross-slot (needed for MGET across slots)"
                return 1
            fi
            PEER_CMD=("$path" --port "$port" --bind 127.0.0.1 --threads 1 --enable-cross-slot
                --maxclients 2048 --log-level warning)
            grep -q -- '--disable-colors' <<<"$help" && PEER_CMD+=(--disable-colors)
            PEER_CMD+=("127.0.0.1:$seed")
            ;;
        *)
            PEER_ERR="unknown peer kind '$kind'"
            return 1
            ;;
    esac
}
