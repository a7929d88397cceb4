# Shared by the e2e benches (run.sh, the waypoint benches, pgo.sh): messages, process
# samples, wrk's and h2load's reports and how busy the machine was. Sourced, not run.

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { printf '%s\n' "$*" >&2; }
die() { log "e2e/bench: $*"; exit 1; }

# Prints "<cpu ticks> <VmRSS KiB> <VmHWM KiB>" of a process.
sample() {
    local pid=$1 stat fields rss hwm
    stat=$(<"/proc/$pid/stat")
    # The command name (field 2) may hold spaces: count from after its ')'.
    read -r -a fields <<<"${stat##*) }"
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
    hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
    echo "$((fields[11] + fields[12])) $rss $hwm"
}

# waypoint_mesh_up <meshctl> [rx_threads]: brings up $MESHCTL_MESH from
# waypoint-topology.yaml with the waypoint of namespace wp, and, when
# [rx_threads] is 1, the links' receive work in kernel threads
# (rx_in_threads). The waypoint benches all measure this mesh.
waypoint_mesh_up() {
    local meshctl=$1 rx_threads=${2:-0}
    "$meshctl" up -f "$bench_dir/waypoint-topology.yaml" --name "$MESHCTL_MESH" >/dev/null
    "$meshctl" waypoint apply -n wp --enroll-namespace >/dev/null
    if ((rx_threads)); then rx_in_threads "$MESHCTL_MESH"; fi
}

# rx_in_threads <mesh>: the receive work of every veth in <mesh>'s
# namespaces done by the kernel's network threads (threaded NAPI), not by
# the process that writes. With both ends of each link on one host, a write
# runs the receiver's whole network stack (bridges, routing, TCP and the
# wake-up) inside the writer's system call, so every proxy pays for its
# peers' receive path: a quarter of the waypoint's CPU at 1,000 requests a
# second (perf, docs/performance.md). Between real nodes the receiving
# node's NIC does that work. NAPI on a veth needs GRO on the receiving end,
# and TCP segments from a sender with TSO on bypass it, so TSO goes off.
rx_in_threads() {
    local mesh=$1 ns dev
    command -v ethtool >/dev/null || die "missing ethtool: apt-get install -y ethtool"
    for ns in $(ip netns list | awk -v prefix="$mesh-" 'index($1, prefix) == 1 {print $1}'); do
        for dev in $(ip -netns "$ns" -o link show type veth | awk -F'[:@ ]+' '{print $2}'); do
            ip netns exec "$ns" ethtool -K "$dev" gro on tso off >/dev/null ||
                die "cannot turn GRO on and TSO off on $dev in $ns"
            echo 1 | ip netns exec "$ns" tee "/sys/class/net/$dev/threaded" >/dev/null ||
                die "cannot make $dev in $ns receive in a kernel thread (threaded NAPI)"
        done
    done
    rx_thread_pids >/dev/null || die "no napi/ kernel threads after turning threaded NAPI on"
}

# The pids of the kernel's network threads (threaded NAPI), one per line;
# fails when there are none.
rx_thread_pids() { ps -eo pid=,comm= | awk '$2 ~ /^napi\// {print $1; found = 1} END {exit !found}'; }

# The CPU ticks of all the kernel's network threads so far (0 without any).
rx_thread_ticks() {
    local pid ticks total=0
    for pid in $(rx_thread_pids); do
        read -r ticks _ _ <<<"$(sample "$pid")"
        total=$((total + ticks))
    done
    echo "$total"
}

# wrk-report.lua's line; a run with errors is reported, not hidden.
parse_wrk() {
    local json
    json=$(sed -n 's/^wrk-json: //p')
    [[ -n $json ]] || die "wrk printed no report (see wrk-report.lua)"
    jq '. + {per_s: (.requests / (.duration_us / 1e6))}
        | .errors_total = ([.errors[]] | add)' <<<"$json"
}

# h2load's summary (stdin) and its --log-file (one line per response:
# start, status, microseconds to the end of the response), as the same
# figures as parse_wrk. h2load prints no percentiles, so p50 and p99 come
# from the log by nearest rank: a latency some request really had. The
# log must be fresh: h2load appends to it. Its errors are h2load's failed
# (which counts non-2xx answers; `non_2xx` says how many of them),
# errored and timed-out requests.
parse_h2load() {
    local log_file=$1 report duration_s per_s requests p50 p99 mean
    local succeeded failed errored timeout non2xx
    report=$(cat)
    read -r duration_s per_s < <(sed -n \
        's/^finished in \([0-9.]*\)s, \([0-9.]*\) req\/s.*/\1 \2/p' <<<"$report")
    [[ -n ${per_s:-} ]] || die "h2load printed no summary: $report"
    read -r succeeded failed errored timeout < <(sed -n \
        's/^requests: .* \([0-9]*\) succeeded, \([0-9]*\) failed, \([0-9]*\) errored, \([0-9]*\) timeout.*/\1 \2 \3 \4/p' \
        <<<"$report")
    non2xx=$(sed -n 's/^status codes: .* \([0-9]*\) 3xx, \([0-9]*\) 4xx, \([0-9]*\) 5xx.*/\1 \2 \3/p' \
        <<<"$report" | awk '{print $1 + $2 + $3}')
    read -r requests p50 p99 mean < <(cut -f3 "$log_file" | sort -n | awk '
        { v[NR] = $1; sum += $1 }
        END {
            if (NR == 0) { print 0, 0, 0, 0; exit }
            r50 = int((NR * 50 + 99) / 100); r99 = int((NR * 99 + 99) / 100)
            print NR, v[r50], v[r99], sum / NR
        }')
    ((requests > 0)) || die "h2load logged no request: $report"
    jq -n --argjson requests "$requests" --argjson duration_s "$duration_s" \
        --argjson per_s "$per_s" --argjson p50 "$p50" --argjson p99 "$p99" \
        --argjson mean "$mean" --argjson succeeded "${succeeded:-0}" \
        --argjson failed "${failed:-0}" --argjson errored "${errored:-0}" \
        --argjson timeout "${timeout:-0}" --argjson status "${non2xx:-0}" '
        {requests: $requests, duration_us: ($duration_s * 1e6 | floor), per_s: $per_s,
         p50_us: $p50, p99_us: $p99, mean_us: $mean, succeeded: $succeeded,
         non_2xx: $status, errors: {failed: $failed, errored: $errored, timeout: $timeout}}
        | .errors_total = ([.errors[]] | add)'
}

# How busy the machine was just before the runs, in the report: on a
# shared 2-vCPU VM a neighbour's build halves the figures, and the JSON
# should say when that happened. Measured over one second from /proc/stat
# rather than by the load average, which still counts our own build a
# minute later.
cpu_busy_percent() {
    local first second total=0 idle
    read -r -a first </proc/stat
    sleep 1
    read -r -a second </proc/stat
    # Fields after "cpu": user nice system idle iowait irq softirq steal.
    for i in 1 2 3 4 5 6 7 8; do total=$((total + second[i] - first[i])); done
    idle=$((second[4] - first[4] + second[5] - first[5]))
    echo $((100 * (total - idle) / total))
}

# mesh_pid <state.json> <process name>: the pid meshctl recorded for one
# of the mesh's processes (`ztunnel/node-a`, `pod/wp/waypoint`).
mesh_pid() {
    jq -er --arg name "$2" '.processes[] | select(.name == $name) | .pid' "$1"
}

# stage_bin <build dir> <waypoint binary> <dir>: fills <dir> with the
# programs of <build dir> (meshctl, ztunnel, istiod-lite, the sample apps)
# and that waypoint. meshctl starts the programs beside itself, so this is
# how a mesh runs another waypoint binary (a PGO build, the other side of
# an A/B) without touching the build dir.
stage_bin() {
    local from=$1 waypoint=$2 dir=$3
    [[ -x $waypoint ]] || die "$waypoint is not an executable"
    mkdir -p "$dir"
    find "$from" -maxdepth 1 -type f -executable ! -name waypoint -exec cp {} "$dir/" \;
    cp "$waypoint" "$dir/waypoint"
}
