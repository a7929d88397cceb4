# Shared by the e2e benches (run.sh, waypoint.sh): messages, process
# samples, wrk's report and how busy the machine was. Sourced, not run.

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

# wrk-report.lua's line; a run with errors is reported, not hidden.
parse_wrk() {
    local json
    json=$(sed -n 's/^wrk-json: //p')
    [[ -n $json ]] || die "wrk printed no report (see wrk-report.lua)"
    jq '. + {per_s: (.requests / (.duration_us / 1e6))}
        | .errors_total = ([.errors[]] | add)' <<<"$json"
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
