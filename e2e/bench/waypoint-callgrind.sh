#!/usr/bin/env bash
# The waypoint's user-space instructions per request, counted by callgrind:
# a figure that does not move with the VM's speed, which moves CPU seconds
# by 2x within a day (docs/performance.md). Use it to compare two builds of
# the waypoint on what their own code does; CPU seconds (waypoint.sh,
# waypoint-ab.sh) stay the measure of the bar, since they also count the
# kernel, which is half of the waypoint's time at a steady rate.
#
# It brings up the waypoint bench topology with <binary> running under
# `valgrind --tool=callgrind`, warms the path, zeroes the counters, sends
# HTTP/2 requests over 16 connections at about 100 a second (each request
# on its own wake-up, as at 1,000/s natively), dumps the counters and
# prints the instructions per request, the share of the access-log event,
# and the profile's path (for callgrind_annotate).
#
# Usage (root, release binaries built, apt-get install -y valgrind
# nghttp2-client jq):
#   e2e/bench/waypoint-callgrind.sh <label> <waypoint binary>
#   CALLGRIND_REQUESTS=1600 (default)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=e2e/bench/lib.sh
source "$repo/e2e/bench/lib.sh"
[[ $# -eq 2 ]] || die "usage: waypoint-callgrind.sh <label> <waypoint binary>"
label=$1 binary=$2
requests=${CALLGRIND_REQUESTS:-1600}
[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces): run it with sudo -E"
for tool in valgrind callgrind_control callgrind_annotate h2load jq; do
    command -v "$tool" >/dev/null || die "missing $tool: apt-get install -y valgrind nghttp2-client jq"
done
bin=$repo/target/release
[[ -x $bin/meshctl ]] || die "$bin/meshctl is not built: cargo build --release --workspace --bins"

# meshctl starts the waypoint beside itself: there, a script that runs
# the real binary under callgrind, with the same pid.
staged=$(mktemp -d /tmp/waypoint-callgrind-bin.XXXXXX)
stage_bin "$bin" "$binary" "$staged"
mv "$staged/waypoint" "$staged/waypoint.real"
out=$(mktemp -d /tmp/waypoint-callgrind.XXXXXX)
cat >"$staged/waypoint" <<EOF
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file=$out/callgrind.%p "\$0.real" "\$@"
EOF
chmod +x "$staged/waypoint"
bin=$staged
MESHCTL_STATE_DIR=$(mktemp -d /tmp/waypoint-callgrind-state.XXXXXX)
export MESHCTL_STATE_DIR MESHCTL_MESH=cg-$$
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    "$bin/meshctl" down >/dev/null 2>&1 || true
    rm -rf "$staged" "$MESHCTL_STATE_DIR"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

waypoint_mesh_up "$bin/meshctl"
state=$MESHCTL_STATE_DIR/$MESHCTL_MESH/state.json
waypoint=$(mesh_pid "$state" pod/wp/waypoint)
url=http://server.wp:8080/
# 16 connections, each 6 requests a second, started 1 ms apart.
paced=(-c 16 --rps 6 --rate 1 --rate-period 1ms -m 1)
"$bin/meshctl" exec wp/client -- h2load -n 300 "${paced[@]}" "${url}warm" >/dev/null
callgrind_control -z "$waypoint" >/dev/null
report=$("$bin/meshctl" exec wp/client -- h2load -n "$requests" "${paced[@]}" "$url")
grep -q "^requests: $requests total, $requests started, $requests done, $requests succeeded" <<<"$report" \
    || die "not every request succeeded: $(grep '^requests:' <<<"$report")"
callgrind_control -d "$label" "$waypoint" >/dev/null
profile=$(find "$out" -name "callgrind.$waypoint.*" | sort | tail -1)
[[ -n $profile ]] || die "callgrind wrote no profile in $out"

# Inclusive cost of a function, from callgrind_annotate's listing (awk
# reads to the end: an early exit would fail the pipe under pipefail).
inclusive() {
    callgrind_annotate --inclusive=yes --auto=no --threshold=100 "$profile" 2>/dev/null |
        awk -v f="$1" '!found && index($0, f " [") { gsub(",", "", $1); print $1; found = 1 }'
}
total=$(callgrind_annotate --auto=no --threshold=100 "$profile" 2>/dev/null |
    awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
log_event=$(inclusive "waypoint::proxy::access_log::RequestLog::complete")
echo "$label: $((total / requests)) instructions per request" \
    "(access-log event and metrics sample: $((${log_event:-0} / requests)))," \
    "$requests requests; profile $profile"
