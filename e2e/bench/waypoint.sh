#!/usr/bin/env bash
# HTTP/1.1 and HTTP/2 through a waypoint, against ztunnel only and against
# no mesh at all, in one run.
#
# Brings up e2e/bench/waypoint-topology.yaml with meshctl (namespaces
# `direct`, `mesh` and `wp`, each with a client on node-a and a server on
# node-b), deploys a waypoint for `wp` with `meshctl waypoint apply
# --enroll-namespace`, and runs wrk (HTTP/1.1, keep-alive) and h2load
# (HTTP/2 with prior knowledge, one stream at a time per connection) with 1
# and 16 connections against each path back to back, then HTTP/2 at a
# steady 1,000 requests a second (Istio's condition). Around each run it
# samples the waypoint process (CPU seconds, resident memory) and the CPU
# seconds of the clients' node's ztunnel. It prints requests per second,
# p50 and p99 per path, the waypoint's throughput as a share of the other
# two paths', what it adds at p50, its CPU seconds per 1,000 requests and
# its memory, next to the CPU per 1,000 requests of that ztunnel on the
# mesh path (one plain user-space hop, for reference) and the waypoint's
# CPU over that ztunnel's in the same waypoint run (the same requests
# cross both, so the ratio moves less with the VM's speed than either
# figure), and writes everything as JSON.
#
# Usage (root): e2e/bench/waypoint.sh
#   BENCH_DURATION=5   seconds per measurement (15 measurements)
#   BENCH_OUTPUT=target/e2e-waypoint-bench.json
#   BENCH_PROFILE=release, BENCH_BUILD=1, BENCH_MESH, MESHCTL_STATE_DIR: as run.sh
#   BENCH_WAYPOINT=<binary>  measure this waypoint (e2e/bench/pgo.sh's
#                      target/pgo/waypoint, say) with the rest of the build
#   BENCH_RX_THREADS=1 the links' receive work in the kernel's network
#                      threads, as a NIC's would be, not in the writing
#                      proxy's system calls (lib.sh, rx_in_threads; needs
#                      ethtool); their CPU is reported beside the waypoint's
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
duration=${BENCH_DURATION:-5}
output=${BENCH_OUTPUT:-$repo/target/e2e-waypoint-bench.json}
profile=${BENCH_PROFILE:-release}
mesh=${BENCH_MESH:-e2e-wp-bench-$$}
# shellcheck source=e2e/bench/lib.sh
source "$repo/e2e/bench/lib.sh"

[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces, capture): run it with sudo -E"
for tool in wrk h2load jq ip nft; do
    command -v "$tool" >/dev/null ||
        die "missing $tool: apt-get install -y wrk nghttp2-client jq iproute2 nftables"
done
[[ $duration =~ ^[1-9][0-9]*$ ]] || die "BENCH_DURATION=$duration: whole seconds, at least 1"
rx_threads=${BENCH_RX_THREADS:-0}
[[ $rx_threads == [01] ]] || die "BENCH_RX_THREADS=$rx_threads: 0 or 1"
case $profile in
    release) cargo_flags=(--release) bin=$repo/target/release ;;
    debug) cargo_flags=() bin=$repo/target/debug ;;
    *) die "BENCH_PROFILE=$profile: release or debug" ;;
esac
if [[ ${BENCH_BUILD:-1} != 0 ]]; then
    log "building ($profile)..."
    (cd "$repo" && cargo build "${cargo_flags[@]}" -p meshctl -p ztunnel -p istiod-lite \
        -p waypoint -p e2e --bins)
fi
meshctl=$bin/meshctl
[[ -x $meshctl ]] || die "$meshctl is not built: run without BENCH_BUILD=0"
waypoint_binary=$bin/waypoint
if [[ -n ${BENCH_WAYPOINT:-} ]]; then
    waypoint_binary=$(realpath "$BENCH_WAYPOINT")
    staged=$(mktemp -d /tmp/e2e-wp-bench-bin.XXXXXX)
    stage_bin "$bin" "$waypoint_binary" "$staged"
    bin=$staged meshctl=$staged/meshctl
fi

if [[ -z ${MESHCTL_STATE_DIR:-} ]]; then
    MESHCTL_STATE_DIR=$(mktemp -d /tmp/e2e-wp-bench.XXXXXX)
    own_state_dir=1
fi
export MESHCTL_STATE_DIR MESHCTL_MESH=$mesh
work=$(mktemp -d /tmp/e2e-wp-bench-work.XXXXXX)
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    "$meshctl" down >/dev/null 2>&1 || true
    rm -rf "$work" "${staged:-}"
    if [[ -n ${own_state_dir:-} ]]; then rm -rf "$MESHCTL_STATE_DIR"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "bringing up mesh $mesh and the waypoint of wp..."
waypoint_mesh_up "$meshctl" "$rx_threads"
state=$MESHCTL_STATE_DIR/$mesh/state.json
waypoint_pid=$(mesh_pid "$state" pod/wp/waypoint)
# The clients' node's ztunnel: on the mesh path it is one user-space hop
# that reads and writes each request and each answer once, as the waypoint
# does, so its CPU per request is what any such hop costs on this machine.
ztunnel_pid=$(mesh_pid "$state" ztunnel/node-a)
clk_tck=$(getconf CLK_TCK)
# seconds <ticks>: CPU clock ticks as seconds, for jq.
seconds() { jq -n --argjson t "$1" --argjson hz "$clk_tck" '$t / $hz'; }

declare -A url=(
    [direct]=http://server.direct.pod:8080/
    [mesh]=http://server.mesh:8080/
    [wp]=http://server.wp:8080/
)
# Warm every path (HBONE connections, certificates, the waypoint's pool),
# and check that wp's requests really cross the waypoint.
for ns in direct mesh wp; do
    "$meshctl" exec "$ns/client" -- "$bin/traffic" http "${url[$ns]}" -n 20 >/dev/null
done
# The proxies write their log lines out at most 100 ms late.
waypoint_log=$MESHCTL_STATE_DIR/$mesh/logs/pod-wp-waypoint.log
sleep 0.3
grep -q 'dst.service=server.wp.svc' "$waypoint_log" ||
    die "wp's requests do not reach the waypoint: see its log"

# And over HTTP/2: the apps serve h2c on the same port, and the waypoint
# forwards each request in the client's version.
"$meshctl" exec wp/client -- h2load -n 20 -c 1 "${url[wp]}h2-warm-up" >/dev/null
sleep 0.3
grep -q 'protocol="HTTP/2".*path=/h2-warm-up' "$waypoint_log" ||
    die "wp's HTTP/2 requests do not reach the waypoint as HTTP/2: see its log"

runs=$work/runs.jsonl
# load_run <measurement> <connections> <ns> [rps]: one wrk run (http_*) or h2load
# run (h2_*) from <ns>/client, with the waypoint's CPU and memory and the
# clients' ztunnel's CPU around it.
# [rps]: each connection's fixed request rate (h2load only); without it the
# connections send as fast as the answers come.
load_run() {
    local measurement=$1 connections=$2 ns=$3 rps=${4:-} threads=$(($2 < 2 ? 1 : 2))
    local ticks0 ticks1 rss1 hwm1 zt0 zt1 rx0 rx1 raw figures h2log=$work/h2load-$1-$3.log
    log "  $measurement, $ns"
    echo 5 >"/proc/$waypoint_pid/clear_refs"
    read -r ticks0 _ _ <<<"$(sample "$waypoint_pid")"
    read -r zt0 _ _ <<<"$(sample "$ztunnel_pid")"
    rx0=$(rx_thread_ticks)
    case $measurement in
        http_*)
            raw=$("$meshctl" exec "$ns/client" -- wrk --threads "$threads" \
                --connections "$connections" --duration "${duration}s" \
                --script "$repo/e2e/bench/wrk-report.lua" "${url[$ns]}")
            ;;
        h2_*)
            # -m 1: one request in flight per connection, as wrk has.
            local pace=(--duration "$duration")
            if [[ -n $rps ]]; then
                # At a fixed rate the connections are opened 1 ms apart, so
                # their requests arrive spread out rather than all 16 in
                # the same instant (-r excludes -D: a request count instead).
                threads=1
                pace=(--rps "$rps" --rate 1 --rate-period 1ms
                    --requests $((rps * connections * duration)))
            fi
            raw=$("$meshctl" exec "$ns/client" -- h2load --threads "$threads" \
                --clients "$connections" --max-concurrent-streams 1 "${pace[@]}" \
                --log-file "$h2log" "${url[$ns]}")
            ;;
    esac
    read -r ticks1 rss1 hwm1 <<<"$(sample "$waypoint_pid")"
    read -r zt1 _ _ <<<"$(sample "$ztunnel_pid")"
    rx1=$(rx_thread_ticks)
    case $measurement in
        http_*) figures=$(parse_wrk <<<"$raw") ;;
        h2_*) figures=$(parse_h2load "$h2log" <<<"$raw") ;;
    esac
    jq -nc --arg m "$measurement" --arg ns "$ns" --argjson f "$figures" \
        --argjson cpu "$(seconds $((ticks1 - ticks0)))" --argjson zt "$(seconds $((zt1 - zt0)))" \
        --argjson rss "$rss1" --argjson hwm "$hwm1" --argjson rx "$(seconds $((rx1 - rx0)))" \
        '{measurement: $m, path: $ns, figures: $f,
          waypoint: {cpu_seconds: $cpu, rss_kib_after: $rss, rss_kib_peak: $hwm},
          client_ztunnel: {cpu_seconds: $zt}, rx_threads: {cpu_seconds: $rx}}' >>"$runs"
}

idle_rss=$(sample "$waypoint_pid" | cut -d' ' -f2)
busy_before=$(cpu_busy_percent)
log "measuring, ${duration} s each (direct, mesh, wp)..."
for ns in direct mesh wp; do load_run http_1_connection 1 "$ns"; done
for ns in direct mesh wp; do load_run http_16_connections 16 "$ns"; done
for ns in direct mesh wp; do load_run h2_1_connection 1 "$ns"; done
for ns in direct mesh wp; do load_run h2_16_connections 16 "$ns"; done
# Istio's own condition for its waypoint's 0.25 vCPU: a steady 1,000
# requests a second, here over 16 connections (63 a second each), so the
# proxy sleeps between requests as it would in service, not saturated.
for ns in direct mesh wp; do load_run h2_1000_per_s 16 "$ns" 63; done

report=$(jq -s --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    --arg cpu "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)" \
    --argjson cpus "$(nproc)" --argjson busy "$busy_before" --argjson duration "$duration" \
    --arg profile "$profile" --arg waypoint "$waypoint_binary" --argjson idle "$idle_rss" \
    --argjson rx_threads "$rx_threads" '
    . as $runs
    | def run($m; $ns): $runs[] | select(.measurement == $m and .path == $ns);
    {
        date: $date,
        machine: {cpus: $cpus, cpu: $cpu, cpu_busy_percent_before: $busy},
        settings: {duration_s: $duration, profile: $profile, waypoint_binary: $waypoint,
                   rx_threads: ($rx_threads == 1)},
        waypoint_idle_rss_kib: $idle,
        summary: [("http_1_connection", "http_16_connections", "h2_1_connection",
                    "h2_16_connections", "h2_1000_per_s") as $m
            | run($m; "wp") as $wp
            | {measurement: $m,
               per_s: {direct: run($m; "direct").figures.per_s, mesh: run($m; "mesh").figures.per_s,
                       wp: $wp.figures.per_s},
               p50_us: {direct: run($m; "direct").figures.p50_us, mesh: run($m; "mesh").figures.p50_us,
                        wp: $wp.figures.p50_us},
               p99_us: {direct: run($m; "direct").figures.p99_us, mesh: run($m; "mesh").figures.p99_us,
                        wp: $wp.figures.p99_us},
               per_s_ratio: {wp_over_direct: ($wp.figures.per_s / run($m; "direct").figures.per_s),
                             wp_over_mesh: ($wp.figures.per_s / run($m; "mesh").figures.per_s)},
               added_p50_us_over_mesh: ($wp.figures.p50_us - run($m; "mesh").figures.p50_us),
               added_p50_us_over_direct: ($wp.figures.p50_us - run($m; "direct").figures.p50_us),
               waypoint_cpu_s_per_1000_requests: (1000 * $wp.waypoint.cpu_seconds / $wp.figures.requests),
               mesh_client_ztunnel_cpu_s_per_1000_requests:
                   (run($m; "mesh") as $me | 1000 * $me.client_ztunnel.cpu_seconds / $me.figures.requests),
               # The same requests, the same run: the ztunnel of the
               # clients is on the waypoint path too, so this ratio holds
               # still when the VM speeds up or slows down.
               waypoint_over_its_client_ztunnel:
                   (if $wp.client_ztunnel.cpu_seconds > 0
                    then $wp.waypoint.cpu_seconds / $wp.client_ztunnel.cpu_seconds else null end),
               # All the links of the path, every hop: 0 without BENCH_RX_THREADS.
               rx_threads_cpu_s_per_1000_requests:
                   (1000 * $wp.rx_threads.cpu_seconds / $wp.figures.requests),
               waypoint_rss_kib_peak: $wp.waypoint.rss_kib_peak}],
        runs: $runs
    }' "$runs")
mkdir -p "$(dirname "$output")"
printf '%s\n' "$report" >"$output"

printf '\n%s s per measurement, %s CPUs, %s%% busy just before the runs, waypoint %s%s\n' \
    "$duration" "$(nproc)" "$busy_before" "$waypoint_binary" \
    "$( ((rx_threads)) && echo ", receive work in the kernel's network threads")"
printf '\n%-21s %-8s %10s %10s %10s\n' measurement figure direct mesh waypoint
jq -r '.summary[] | . as $s | ("per_s", "p50_us", "p99_us") as $f
    | [$s.measurement, $f, $s[$f].direct, $s[$f].mesh, $s[$f].wp] | @tsv' <<<"$report" |
    while IFS=$'\t' read -r m f d me w; do
        printf '%-21s %-8s %10.0f %10.0f %10.0f\n' "$m" "$f" "$d" "$me" "$w"
    done
printf '\n%-21s %22s %22s\n' measurement "waypoint/direct req/s" "waypoint/mesh req/s"
jq -r '.summary[] | [.measurement, .per_s_ratio.wp_over_direct, .per_s_ratio.wp_over_mesh]
        | @tsv' <<<"$report" |
    while IFS=$'\t' read -r m rd rm; do printf '%-21s %22.2f %22.2f\n' "$m" "$rd" "$rm"; done
printf '\n%-21s %16s %16s %22s %14s %24s %20s %16s\n' measurement "added p50 (mesh)" \
    "added p50 (dir.)" "waypoint CPU s/1000 req" "waypoint peak" "mesh path: client's ztunnel" \
    "waypoint/its ztunnel" "rx threads, wp"
jq -r '.summary[] | [.measurement, .added_p50_us_over_mesh, .added_p50_us_over_direct,
        .waypoint_cpu_s_per_1000_requests, .waypoint_rss_kib_peak,
        .mesh_client_ztunnel_cpu_s_per_1000_requests,
        (.waypoint_over_its_client_ztunnel // "nan"), .rx_threads_cpu_s_per_1000_requests]
        | @tsv' <<<"$report" |
    while IFS=$'\t' read -r m am ad cpu peak zt ratio rx; do
        printf '%-21s %13.0f us %13.0f us %22.3f %10.1f MiB %24.3f %19.2fx %16.3f\n' "$m" "$am" \
            "$ad" "$cpu" "$(awk -v k="$peak" 'BEGIN {print k / 1024}')" "$zt" "$ratio" "$rx"
    done
printf '\nwaypoint idle: %.1f MiB\n' "$(awk -v k="$idle_rss" 'BEGIN {print k / 1024}')"
errors=$(jq '[.runs[] | .figures.errors_total // 0] | add' <<<"$report")
if ((errors)); then printf '\nwrk and h2load counted %s errors: see %s\n' "$errors" "$output"; fi
printf '\nJSON: %s\n' "$output"
