# Shared by scripts/bench.sh and scripts/profile.sh (sourced, not run): picking free loopback
# ports for a throw-away cluster and its proxies.
#
# A port is taken as free when nothing on this machine has it open (listening or connected, per
# /proc/net/tcp{,6}) and port + 10000 (a cluster node's bus port) is free too; every port handed
# out is remembered, so one script never gets the same port twice. Like the helpers in
# cluster.sh, these print no message and never exit: the caller words the failure.
# shellcheck shell=bash
# shellcheck disable=SC2034  # PICKED is read by the sourcing script

# Ports seen in use or already handed out (port -> 1).
declare -A USED_PORTS=()
# The port the last successful pick_port chose (a variable, not stdout: pick_port must run in
# the calling shell to remember what it handed out).
PICKED=""

# Adds every local TCP port currently open on this machine to USED_PORTS.
# awk reads the tables: bash's `read` takes a /proc file a byte at a time, and the kernel
# rebuilds the table for each read (seconds, up to a minute, on a busy machine).
refresh_used_ports() {
    local f hex files=()
    for f in /proc/net/tcp /proc/net/tcp6; do [ -r "$f" ] && files+=("$f"); done
    [ ${#files[@]} -gt 0 ] || return 0
    while read -r hex; do
        [[ $hex =~ ^[0-9A-Fa-f]+$ ]] || continue
        USED_PORTS[$((16#$hex))]=1
    done < <(awk 'FNR > 1 { n = split($2, a, ":"); print a[n] }' "${files[@]}")
}

# Sets PICKED to a random port in [$1, $2] that is free with its bus port (port + 10000), and
# marks both used. Fails after 5000 tries (the range is nearly full).
pick_port() { # min max
    local min=$1 max=$2 tries p
    for ((tries = 0; tries < 5000; tries++)); do
        p=$((min + RANDOM % (max - min + 1)))
        [ -z "${USED_PORTS[$p]:-}" ] && [ -z "${USED_PORTS[$((p + 10000))]:-}" ] || continue
        USED_PORTS[$p]=1
        USED_PORTS[$((p + 10000))]=1
        PICKED=$p
        return 0
    done
    return 1
}
