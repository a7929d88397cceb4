#!/usr/bin/env bash
# One side of an A/B of two waypoint binaries: brings up the waypoint bench
# topology (e2e/bench/waypoint-topology.yaml) with <binary> as the waypoint,
# runs HTTP/2 through it three ways (1,000 requests/s over 16 connections,
# 1 connection and 16 connections as fast as they go) and prints, per run,
# the waypoint's CPU seconds per 1,000 requests, the same figure for both
# ztunnels (their binary is the same on both sides, so they show how fast
# the VM is at that moment), and the CPU ticks of each waypoint thread.
#
# The VM's speed drifts by tens of percent within an hour, so compare two
# binaries only by alternating them in one sitting:
#   for r in 1 2; do e2e/bench/waypoint-ab.sh old /tmp/old; e2e/bench/waypoint-ab.sh new /tmp/new; done
#
# Usage (root, release binaries built): e2e/bench/waypoint-ab.sh <label> <waypoint binary>
#   SPLIT=1  first hold 100 idle tunnels open on the client's ztunnel's
#            first HBONE connection to the waypoint, so that the measured
#            tunnels go over a second connection, which the waypoint
#            places on its other worker
#   RX_THREADS=1  the links' receive work in the kernel's network threads
#            (lib.sh, rx_in_threads; needs ethtool), and their CPU printed
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=e2e/bench/lib.sh
source "$repo/e2e/bench/lib.sh"
[[ $# -eq 2 ]] || die "usage: waypoint-ab.sh <label> <waypoint binary>"
label=$1 binary=$2
bin=$repo/target/release
[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces): run it with sudo -E"
[[ -x $binary ]] || die "$binary is not an executable"
for tool in h2load jq python3; do
    command -v "$tool" >/dev/null || die "missing $tool: apt-get install -y nghttp2-client jq python3"
done
[[ -x $bin/meshctl ]] || die "$bin/meshctl is not built: cargo build --release --workspace --bins"

# The mesh runs from a directory of its own with this waypoint in it.
staged=$(mktemp -d /tmp/waypoint-ab-bin.XXXXXX)
stage_bin "$bin" "$binary" "$staged"
bin=$staged
MESHCTL_STATE_DIR=$(mktemp -d /tmp/waypoint-ab-state.XXXXXX)
export MESHCTL_STATE_DIR MESHCTL_MESH=ab-$$
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [[ -n ${holder:-} ]]; then kill "$holder" 2>/dev/null || true; fi
    "$bin/meshctl" down >/dev/null 2>&1 || true
    rm -rf "$staged" "$MESHCTL_STATE_DIR"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

rx_threads=${RX_THREADS:-0}
[[ $rx_threads == [01] ]] || die "RX_THREADS=$rx_threads: 0 or 1"
waypoint_mesh_up "$bin/meshctl" "$rx_threads"
state=$MESHCTL_STATE_DIR/$MESHCTL_MESH/state.json
waypoint=$(mesh_pid "$state" pod/wp/waypoint)
ztunnel_a=$(mesh_pid "$state" ztunnel/node-a)
ztunnel_b=$(mesh_pid "$state" ztunnel/node-b)
url=http://server.wp:8080/
# Warm the path: certificates, HBONE connections, the waypoint's pool.
"$bin/meshctl" exec wp/client -- "$bin/traffic" http "$url" -n 20 >/dev/null
"$bin/meshctl" exec wp/client -- h2load -n 200 -c 1 "${url}warm" >/dev/null

if [[ -n ${SPLIT:-} ]]; then
    # ztunnel puts at most 100 tunnels on one HBONE connection.
    "$bin/meshctl" exec wp/client -- python3 -c "
import socket, time
held = [socket.create_connection(('server.wp', 8080)) for _ in range(100)]
time.sleep(120)" &
    holder=$!
    sleep 2
fi

# ticks <pid or pid/task/tid>: its CPU clock ticks (lib.sh's sample).
ticks() { local t _; read -r t _ <<<"$(sample "$1")"; echo "$t"; }
thread_ticks() { for task in "/proc/$waypoint/task/"*; do ticks "${task#/proc/}"; done; }
hz=$(getconf CLK_TCK)
per_1000() { jq -n --argjson t "$1" --argjson n "$2" --argjson hz "$hz" '1000 * $t / $hz / $n'; }

# measure <name> <h2load pacing...>
measure() {
    local name=$1 w0 a0 b0 rx0 threads0 out requests
    shift
    w0=$(ticks "$waypoint") a0=$(ticks "$ztunnel_a") b0=$(ticks "$ztunnel_b")
    threads0=$(thread_ticks) rx0=$(rx_thread_ticks)
    out=$("$bin/meshctl" exec wp/client -- h2load --threads 1 --max-concurrent-streams 1 "$@" "$url")
    local w=$(($(ticks "$waypoint") - w0)) a=$(($(ticks "$ztunnel_a") - a0))
    local b=$(($(ticks "$ztunnel_b") - b0)) rx=$(($(rx_thread_ticks) - rx0))
    local threads
    threads=$(paste -d' ' <(thread_ticks) <(echo "$threads0") | awk '{printf "%d ", $1 - $2}')
    requests=$(grep -oP 'requests: \d+ total, \d+ started, \K\d+(?= done)' <<<"$out") ||
        die "h2load printed no request count: $out"
    printf '%s %-7s %6s requests  waypoint %.3f  ztunnel A %.3f  ztunnel B %.3f  rx threads %.3f CPU s/1000  waypoint thread ticks: %s\n' \
        "$label" "$name" "$requests" "$(per_1000 "$w" "$requests")" "$(per_1000 "$a" "$requests")" \
        "$(per_1000 "$b" "$requests")" "$(per_1000 "$rx" "$requests")" "$threads"
}

measure 1000/s --clients 16 --rps 63 --rate 1 --rate-period 1ms --requests 5040
measure 1conn --clients 1 --duration 4
measure 16conn --clients 16 --duration 4
