#!/usr/bin/env bash
# Two network namespaces joined by a veth pair, standing in for two machines: chatflow's
# processes of one cluster (-n 2) run one in each and talk over the veth, not loopback.
#
# Usage: scripts/netns.sh up | down | status | exec a|b COMMAND...
#
#   chatflow-a has 10.231.0.1/30 on cf-a, chatflow-b has 10.231.0.2/30 on cf-b (addresses of
#   these namespaces only; nothing is routed beyond them). Needs root (or sudo) and iproute2
#   (`apt-get install -y iproute2` when `ip` is missing). `exec` runs COMMAND in a namespace
#   as the calling user's root, in the current directory.
set -euo pipefail
A=chatflow-a
B=chatflow-b
ADDR_A=10.231.0.1
ADDR_B=10.231.0.2

sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo

install() {
    if ! command -v ip >/dev/null 2>&1; then
        echo "netns.sh: installing iproute2 (apt-get)" >&2
        $sudo apt-get update -qq >&2 || true
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq iproute2 >&2
    fi
}

# (Outputs are read whole before matching: with pipefail, `ip … | grep -q` fails whenever grep
# stops reading before ip has written everything.)
exists() {
    local list
    list=$($sudo ip netns list 2>/dev/null || true)
    [[ " ${list//$'\n'/ } " == *" $1 "* ]]
}

# Whether interface $2 of namespace $1 is up (carrier on) with address $3.
link_ready() {
    local shown
    shown=$($sudo ip -n "$1" addr show "$2" 2>/dev/null || true)
    [[ "$shown" == *LOWER_UP* && "$shown" == *"inet $3/"* ]]
}

# Both namespaces there, each end of the pair up with its address.
ready() {
    exists "$A" && exists "$B" && link_ready "$A" cf-a "$ADDR_A" && link_ready "$B" cf-b "$ADDR_B"
}

up() {
    install
    if ready; then
        echo "netns.sh: $A ($ADDR_A) and $B ($ADDR_B) are up"
        return 0
    fi
    down >/dev/null 2>&1 || true
    $sudo ip netns add "$A"
    $sudo ip netns add "$B"
    $sudo ip link add cf-a netns "$A" type veth peer name cf-b netns "$B"
    $sudo ip -n "$A" addr add "$ADDR_A/30" dev cf-a
    $sudo ip -n "$B" addr add "$ADDR_B/30" dev cf-b
    for ns in "$A" "$B"; do
        $sudo ip -n "$ns" link set lo up
    done
    $sudo ip -n "$A" link set cf-a up
    $sudo ip -n "$B" link set cf-b up
    for _ in $(seq 1 50); do
        ready && { echo "netns.sh: $A ($ADDR_A) and $B ($ADDR_B) are up"; return 0; }
        sleep 0.1
    done
    echo "netns.sh: the veth pair between $A and $B did not come up" >&2
    exit 1
}

down() {
    for ns in "$A" "$B"; do
        exists "$ns" && $sudo ip netns del "$ns"
    done
    echo "netns.sh: namespaces removed"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) if ready; then echo "netns.sh: up"; else echo "netns.sh: down"; exit 1; fi ;;
    exec)
        [ $# -ge 3 ] || { echo "usage: scripts/netns.sh exec a|b COMMAND..." >&2; exit 2; }
        case "$2" in a) ns=$A ;; b) ns=$B ;; *) echo "netns.sh: namespace a or b, not $2" >&2; exit 2 ;; esac
        shift 2
        exec $sudo ip netns exec "$ns" "$@" ;;
    *) echo "usage: scripts/netns.sh up | down | status | exec a|b COMMAND..." >&2; exit 2 ;;
esac
