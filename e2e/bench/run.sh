#!/usr/bin/env bash
# Pod to pod, outside the mesh and through it, in one run.
#
# Brings up e2e/bench/topology.yaml with meshctl (two nodes; a client on
# node-a and a server on node-b in the plain namespace `direct` and again in
# the enrolled namespace `mesh`) and runs each measurement against `direct`
# and then `mesh`, back to back, so that every mesh figure has a baseline
# taken on the same machine seconds before:
#
# - iperf3 throughput, 1 and 4 streams;
# - HTTP request latency (p50, p99) and rate with wrk, 1 and 16 connections;
# - new connections per second: wrk sending `Connection: close`, so every
#   request is a connect, one HTTP exchange and a close.
#
# Around each run it samples both nodes' ztunnels: CPU seconds (utime +
# stime) and resident memory (before, after and the peak in between). It
# prints a table with mesh/direct ratios and writes everything as JSON.
#
# Usage (root; the mesh lives in network namespaces):
#   e2e/bench/run.sh
# Settings, from the environment:
#   BENCH_DURATION=5        seconds per measurement (10 measurements)
#   BENCH_OUTPUT=target/e2e-bench.json
#   BENCH_PROFILE=release   cargo profile of the binaries (release or debug)
#   BENCH_BUILD=1           0: use the binaries already built
#   BENCH_RATE_CONNECTIONS=1  concurrent connections of the connection-rate
#                           run (1: one after another, as ztunnel's bench)
#   BENCH_MESH=e2e-bench-<pid>  mesh name (unique, so runs do not collide)
#   MESHCTL_STATE_DIR       default: a fresh temporary directory
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
duration=${BENCH_DURATION:-5}
output=${BENCH_OUTPUT:-$repo/target/e2e-bench.json}
profile=${BENCH_PROFILE:-release}
rate_connections=${BENCH_RATE_CONNECTIONS:-1}
mesh=${BENCH_MESH:-e2e-bench-$$}
nodes=(node-a node-b)
# shellcheck source=e2e/bench/lib.sh
source "$repo/e2e/bench/lib.sh"


# --- checks: everything that can be missing, before anything is built ----

[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces, capture): run it with sudo -E"
missing=()
for tool in iperf3 wrk jq; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    # iperf3 and wrk are what the issue asks for; jq reads their JSON.
    die "missing ${missing[*]}: apt-get install -y ${missing[*]}"
fi
for tool in ip nft; do
    command -v "$tool" >/dev/null || die "missing $tool: apt-get install -y iproute2 nftables"
done
[[ $duration =~ ^[1-9][0-9]*$ ]] || die "BENCH_DURATION=$duration: whole seconds, at least 1"
case $profile in
    release) cargo_flags=(--release) bin=$repo/target/release ;;
    debug) cargo_flags=() bin=$repo/target/debug ;;
    *) die "BENCH_PROFILE=$profile: release or debug" ;;
esac

if [[ ${BENCH_BUILD:-1} != 0 ]]; then
    command -v cargo >/dev/null || die "missing cargo (a Rust toolchain, see README.md)"
    log "building ($profile)..."
    (cd "$repo" && cargo build "${cargo_flags[@]}" -p meshctl -p ztunnel -p istiod-lite -p e2e --bins)
fi
meshctl=$bin/meshctl
[[ -x $meshctl ]] || die "$meshctl is not built: run without BENCH_BUILD=0"

# A private state directory, unless the caller chose one: `meshctl down`
# without --mesh and other people's meshes never see ours.
if [[ -z ${MESHCTL_STATE_DIR:-} ]]; then
    MESHCTL_STATE_DIR=$(mktemp -d /tmp/e2e-bench.XXXXXX)
    own_state_dir=1
fi
export MESHCTL_STATE_DIR MESHCTL_MESH=$mesh
work=$(mktemp -d /tmp/e2e-bench-work.XXXXXX)

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    # Down even after a failed `up`: it removes whatever is left, and says
    # so when nothing is.
    "$meshctl" down >/dev/null 2>&1 || true
    rm -rf "$work"
    if [[ -n ${own_state_dir:-} ]]; then rm -rf "$MESHCTL_STATE_DIR"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the mesh ------------------------------------------------------------

log "bringing up mesh $mesh..."
"$meshctl" up -f "$repo/e2e/bench/topology.yaml" --name "$mesh" >/dev/null

state=$MESHCTL_STATE_DIR/$mesh/state.json
declare -A ztunnel_pid
for node in "${nodes[@]}"; do
    ztunnel_pid[$node]=$(mesh_pid "$state" "ztunnel/$node")
done
clk_tck=$(getconf CLK_TCK)

# Closing first leaves a socket in TIME_WAIT for a minute; the connection
# rate run opens tens of thousands, and without reuse `connect()` searches
# ever longer for a free port (ztunnel's bench measured 3.9 ms per connect).
# Per pod, because the sysctl belongs to the network namespace, and in the
# servers too: through the mesh, ztunnel connects to the app from inside
# the server's pod.
for pod in direct/client direct/server mesh/client mesh/server; do
    "$meshctl" exec "$pod" -- sh -c 'echo 1 > /proc/sys/net/ipv4/tcp_tw_reuse'
done

# A few requests first, so that neither path's first run pays for things
# done once: the ztunnels' first HBONE connection and TLS handshake.
for ns in direct mesh; do
    "$meshctl" exec "$ns/client" -- "$bin/traffic" http "http://server.$ns.pod:8080/" -n 20 >/dev/null
done

# --- sampling the ztunnels -------------------------------------------------


declare -A before
ztunnels_before() {
    local node
    for node in "${nodes[@]}"; do
        # Resets the peak (VmHWM) to the current RSS, so that the peak read
        # afterwards is this run's own rather than the process's lifetime's.
        echo 5 >"/proc/${ztunnel_pid[$node]}/clear_refs"
        before[$node]=$(sample "${ztunnel_pid[$node]}")
    done
}

# Prints {"node-a": {cpu_seconds, rss_kib_before, rss_kib_after,
# rss_kib_peak}, ...} since ztunnels_before.
ztunnels_after() {
    local node ticks0 rss0 ticks1 rss1 hwm1
    for node in "${nodes[@]}"; do
        read -r ticks0 rss0 _ <<<"${before[$node]}"
        read -r ticks1 rss1 hwm1 <<<"$(sample "${ztunnel_pid[$node]}")"
        jq -n --arg node "$node" --argjson ticks $((ticks1 - ticks0)) --argjson hz "$clk_tck" \
            --argjson rss0 "$rss0" --argjson rss1 "$rss1" --argjson hwm "$hwm1" \
            '{($node): {cpu_seconds: ($ticks / $hz), rss_kib_before: $rss0,
                        rss_kib_after: $rss1, rss_kib_peak: $hwm}}'
    done | jq -s add
}

# --- the measurements ------------------------------------------------------

runs=$work/runs.jsonl

# measure <measurement> <ns> <parser> <client command...>: runs the command
# in <ns>/client between two ztunnel samples; <parser> turns its stdout
# into a JSON object of figures. Appends one line to $runs.
measure() {
    local measurement=$1 ns=$2 parser=$3 raw figures ztunnels
    shift 3
    log "  $measurement, $ns"
    ztunnels_before
    raw=$("$meshctl" exec "$ns/client" -- "$@")
    ztunnels=$(ztunnels_after)
    figures=$("$parser" <<<"$raw")
    jq -nc --arg m "$measurement" --arg ns "$ns" --argjson f "$figures" --argjson z "$ztunnels" \
        '{measurement: $m, path: $ns, figures: $f, ztunnels: $z}' >>"$runs"
    # Outside the mesh ztunnel must stay idle, through it both must work:
    # otherwise the comparison is not what it claims to be.
    if [[ $ns == mesh ]] && jq -e '[.[].cpu_seconds] | min == 0' <<<"$ztunnels" >/dev/null; then
        die "$measurement: a ztunnel used no CPU during the mesh run: is namespace mesh captured?"
    fi
}

parse_iperf3() {
    jq '{gbit_per_s: (.end.sum_received.bits_per_second / 1e9),
         retransmits: .end.sum_sent.retransmits}'
}


iperf3_run() { # <streams> <ns>
    local measurement=iperf3_$1_streams
    if (($1 == 1)); then measurement=iperf3_1_stream; fi
    measure "$measurement" "$2" parse_iperf3 \
        iperf3 --client "server.$2.pod" --port 5201 --time "$duration" --parallel "$1" --json
}

# wrk needs at least as many connections as threads; two threads for the
# 2-vCPU machines this runs on, one when there is one connection.
wrk_run() { # <measurement> <connections> <ns> [wrk flags...]
    local measurement=$1 connections=$2 ns=$3 threads=$(($2 < 2 ? 1 : 2))
    shift 3
    measure "$measurement" "$ns" parse_wrk \
        wrk --threads "$threads" --connections "$connections" --duration "${duration}s" \
        --script "$repo/e2e/bench/wrk-report.lua" "$@" "http://server.$ns.pod:8080/"
}

busy_before=$(cpu_busy_percent)
log "measuring, ${duration} s each (direct, then mesh)..."
for ns in direct mesh; do iperf3_run 1 "$ns"; done
for ns in direct mesh; do iperf3_run 4 "$ns"; done
for ns in direct mesh; do wrk_run http_1_connection 1 "$ns"; done
for ns in direct mesh; do wrk_run http_16_connections 16 "$ns"; done
for ns in direct mesh; do
    wrk_run new_connections "$rate_connections" "$ns" --header 'Connection: close'
done

# --- the report ------------------------------------------------------------

# Rows of the table: label, measurement, figure, how to print it. ASCII
# labels, because printf pads by bytes.
metrics=$(jq -n '[
    ["iperf3, 1 stream (Gbit/s)",        "iperf3_1_stream",     "gbit_per_s", "%.2f"],
    ["iperf3, 4 streams (Gbit/s)",       "iperf3_4_streams",    "gbit_per_s", "%.2f"],
    ["HTTP, 1 connection, p50 (us)",     "http_1_connection",   "p50_us",     "%.0f"],
    ["HTTP, 1 connection, p99 (us)",     "http_1_connection",   "p99_us",     "%.0f"],
    ["HTTP, 1 connection (req/s)",       "http_1_connection",   "per_s",      "%.0f"],
    ["HTTP, 16 connections, p50 (us)",   "http_16_connections", "p50_us",     "%.0f"],
    ["HTTP, 16 connections, p99 (us)",   "http_16_connections", "p99_us",     "%.0f"],
    ["HTTP, 16 connections (req/s)",     "http_16_connections", "per_s",      "%.0f"],
    ["new connections (/s)",             "new_connections",     "per_s",      "%.0f"]
] | map({metric: .[0], measurement: .[1], figure: .[2], format: .[3]})')

report=$(jq -s --argjson metrics "$metrics" \
    --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    --arg cpu "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)" \
    --argjson cpus "$(nproc)" --arg kernel "$(uname -r)" \
    --argjson busy_before "$busy_before" \
    --argjson duration "$duration" --arg profile "$profile" \
    --argjson rate_connections "$rate_connections" '
    . as $runs
    | def figure($m; $ns; $f): $runs[] | select(.measurement == $m and .path == $ns) | .figures[$f];
    {
        date: $date,
        machine: {cpus: $cpus, cpu: $cpu, kernel: $kernel,
                  cpu_busy_percent_before: $busy_before},
        settings: {duration_s: $duration, profile: $profile,
                   new_connections_concurrency: $rate_connections},
        metrics: [$metrics[] | . as $row
            | figure($row.measurement; "direct"; $row.figure) as $direct
            | figure($row.measurement; "mesh"; $row.figure) as $mesh
            | {metric, measurement, figure, direct: $direct, mesh: $mesh,
               ratio: (if $direct == 0 then null else $mesh / $direct end)}],
        runs: $runs
    }' "$runs")

mkdir -p "$(dirname "$output")"
printf '%s\n' "$report" >"$output"

# The table: figures, then what the ztunnels spent on each mesh run. Their
# direct runs are left out: ztunnel does nothing then (it is in the JSON).
printf '\n%s s per measurement, %s CPUs, %s%% busy just before the runs\n' \
    "$duration" "$(nproc)" "$busy_before"
printf '\n%-32s %12s %12s %12s\n' metric direct mesh mesh/direct
jq -r --argjson rows "$metrics" '.metrics as $figures | range($rows | length) as $i
        | [$rows[$i].metric, $rows[$i].format, $figures[$i].direct, $figures[$i].mesh,
           ($figures[$i].ratio // "nan")] | @tsv' <<<"$report" |
    while IFS=$'\t' read -r metric format direct mesh ratio; do
        # shellcheck disable=SC2059 # the format comes from the table above
        printf "%-32s %12s %12s %12.2f\n" "$metric" \
            "$(printf "$format" "$direct")" "$(printf "$format" "$mesh")" "$ratio"
    done
printf '\nztunnel during the mesh runs: CPU seconds; RSS MiB after (peak)\n'
printf '%-22s %10s %10s %18s %18s\n' measurement "cpu node-a" "cpu node-b" "rss node-a" "rss node-b"
jq -r '.runs[] | select(.path == "mesh") | [.measurement,
        .ztunnels["node-a"].cpu_seconds, .ztunnels["node-b"].cpu_seconds,
        .ztunnels["node-a"].rss_kib_after, .ztunnels["node-a"].rss_kib_peak,
        .ztunnels["node-b"].rss_kib_after, .ztunnels["node-b"].rss_kib_peak] | @tsv' <<<"$report" |
    while IFS=$'\t' read -r measurement cpu_a cpu_b rss_a peak_a rss_b peak_b; do
        printf '%-22s %10.2f %10.2f %18s %18s\n' "$measurement" "$cpu_a" "$cpu_b" \
            "$(awk -v r="$rss_a" -v p="$peak_a" 'BEGIN {printf "%.1f (%.1f)", r / 1024, p / 1024}')" \
            "$(awk -v r="$rss_b" -v p="$peak_b" 'BEGIN {printf "%.1f (%.1f)", r / 1024, p / 1024}')"
    done
errors=$(jq '[.runs[] | .figures.errors_total // 0] | add' <<<"$report")
if ((errors)); then
    printf '\nwrk counted %s errors: see "errors" in %s\n' "$errors" "$output"
fi
printf '\nJSON: %s\n' "$output"
