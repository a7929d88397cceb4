#!/usr/bin/env bash
# A profile-guided (PGO) release build of the waypoint.
#
# At a steady 1,000 requests a second the waypoint's CPU goes to a long,
# branchy path (two TLS sessions, two HBONE connections, HTTP/2 or
# HTTP/1.1 both ways, routing, policy) run from cold caches after every
# wake-up, and no function in it stands out. Telling LLVM which branches
# and calls are hot lays that path out tight; on this machine it took a
# third off the waypoint's CPU per request (docs/performance.md, "A
# profile-guided build").
#
# Three steps: an instrumented build of the waypoint; a training run of it
# in the local mesh of the waypoint bench (e2e/bench/waypoint-topology.yaml
# with e2e/bench/pgo-training.yaml: a route with header and path rules and
# an L7 policy) under HTTP/1.1 and HTTP/2 load; and a build that uses the
# profile. Then the built binary serves requests in the same mesh once
# more, as a check. Only the waypoint is instrumented: meshctl, ztunnel,
# istiod-lite and the sample apps come from an ordinary build.
#
# Usage (root): e2e/bench/pgo.sh
#   PGO_HELPERS=target/release   the ordinary build of meshctl, ztunnel,
#                                istiod-lite and the e2e apps (CI uses
#                                target/debug); target/ is CARGO_TARGET_DIR
#                                when that is set
#   PGO_DURATION=5               seconds per training load (7 loads)
# Output: target/pgo/waypoint (measure it with
#   BENCH_WAYPOINT=target/pgo/waypoint e2e/bench/waypoint.sh)
# Needs llvm-profdata of the LLVM that rustc uses (rustc -vV), from
# Debian's llvm-<major> package.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=e2e/bench/lib.sh
source "$repo/e2e/bench/lib.sh"
target=${CARGO_TARGET_DIR:-$repo/target}
# cargo reads a relative CARGO_TARGET_DIR from where it runs; the builds
# below run in the repository.
[[ $target == /* ]] || target=$PWD/$target
helpers=${PGO_HELPERS:-$target/release}
[[ $helpers == /* ]] || helpers=$repo/$helpers
duration=${PGO_DURATION:-5}
train_dir=$target/pgo-train
out_dir=$target/pgo

[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces): run it with sudo -E"
[[ $duration =~ ^[1-9][0-9]*$ ]] || die "PGO_DURATION=$duration: whole seconds, at least 1"
for tool in wrk h2load jq curl; do
    command -v "$tool" >/dev/null ||
        die "missing $tool: apt-get install -y wrk nghttp2-client jq curl"
done
for program in meshctl ztunnel istiod-lite echo-http traffic; do
    [[ -x $helpers/$program ]] || die "$helpers/$program is not built:" \
        "cargo build --release -p meshctl -p ztunnel -p istiod-lite -p e2e --bins"
done

# The profile's format is LLVM's own: llvm-profdata must be of the same
# major version as the LLVM inside rustc.
rustc_info=$(rustc -vV)
llvm_major=$(sed -n 's/^LLVM version: \([0-9]*\)\..*/\1/p' <<<"$rustc_info")
[[ -n $llvm_major ]] || die "rustc -vV names no LLVM version"
profdata=
for candidate in "llvm-profdata-$llvm_major" llvm-profdata; do
    # (Not `| grep -q`: under pipefail its early exit can fail the test.)
    if command -v "$candidate" >/dev/null &&
        [[ $("$candidate" --version 2>/dev/null) == *"LLVM version $llvm_major."* ]]; then
        profdata=$candidate
        break
    fi
done
[[ -n $profdata ]] ||
    die "no llvm-profdata of LLVM $llvm_major (rustc's): apt-get install -y llvm-$llvm_major"
# With --target, RUSTFLAGS reach only the waypoint and its dependencies,
# not build scripts and proc macros, which would write profiles (and be
# optimised for nothing) as the build runs them.
host=$(sed -n 's/^host: //p' <<<"$rustc_info")

work=$(mktemp -d /tmp/pgo.XXXXXX)
export MESHCTL_STATE_DIR=$work/state MESHCTL_MESH=pgo-$$
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [[ -x $work/bin/meshctl ]]; then "$work/bin/meshctl" down >/dev/null 2>&1 || true; fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# up: the bench mesh, its waypoint and the training config, in force.
up() {
    local meshctl=$work/bin/meshctl
    waypoint_mesh_up "$meshctl"
    "$meshctl" apply -f "$repo/e2e/bench/pgo-training.yaml" >/dev/null
    # The echo server answers with the headers it got: the route's filter
    # shows once the route is in force.
    for _ in $(seq 50); do
        if "$meshctl" exec wp/client -- curl -s -H 'x-canary: 1' http://server.wp:8080/ |
            grep -qi 'x-route'; then
            return 0
        fi
        sleep 0.2
    done
    die "the training route is not in force after 10 s: see $MESHCTL_STATE_DIR/$MESHCTL_MESH/logs"
}

# wrk_load <connections> [wrk args...], h2load_load <h2load args...>:
# one training load from wp's client; a failed request stops the build.
url=http://server.wp:8080
wrk_load() {
    local connections=$1 report
    shift
    report=$("$work/bin/meshctl" exec wp/client -- wrk --threads 1 --connections "$connections" \
        --duration "${duration}s" --script "$repo/e2e/bench/wrk-report.lua" "$@" | parse_wrk)
    [[ $(jq .errors_total <<<"$report") == 0 ]] || die "training requests failed: $report"
}
h2load_load() {
    local log_file=$work/h2load.log report
    rm -f "$log_file"
    report=$("$work/bin/meshctl" exec wp/client -- h2load --threads 1 --max-concurrent-streams 1 \
        --log-file "$log_file" "$@" | parse_h2load "$log_file")
    [[ $(jq .errors_total <<<"$report") == 0 ]] || die "training requests failed: $report"
}

log "[1/4] instrumented build of the waypoint..."
profiles=$train_dir/profiles
(cd "$repo" && RUSTFLAGS="-Cprofile-generate=$profiles" CARGO_TARGET_DIR=$train_dir \
    cargo build --release --locked --target "$host" -p waypoint)

log "[2/4] training it in a local mesh ($((7 * duration)) s of load)..."
rm -rf "$profiles"
stage_bin "$helpers" "$train_dir/$host/release/waypoint" "$work/bin"
up
wrk_load 1 "$url/"
wrk_load 16 --header 'x-canary: 1' "$url/"
wrk_load 16 "$url/api/items?page=2"
h2load_load --clients 1 --duration "$duration" "$url/"
h2load_load --clients 16 --duration "$duration" --header 'x-canary: 1' "$url/api/items"
h2load_load --clients 16 --rps 63 --rate 1 --rate-period 1ms --requests $((63 * 16 * duration)) "$url/"
head -c 4096 /dev/urandom >"$work/body"
h2load_load --clients 4 --duration "$duration" --data "$work/body" "$url/upload"
# The waypoint writes its profile as it exits.
"$work/bin/meshctl" down >/dev/null
compgen -G "$profiles/*.profraw" >/dev/null ||
    die "the instrumented waypoint wrote no profile into $profiles: did it exit cleanly?"

log "[3/4] build with the profile..."
mkdir -p "$out_dir"
"$profdata" merge -o "$work/waypoint.profdata" "$profiles"/*.profraw
# Named by its content: cargo does not look into the file, and a new
# profile must make a new build.
digest=$(sha256sum "$work/waypoint.profdata" | cut -c1-16)
rm -f "$out_dir"/waypoint-*.profdata
merged=$out_dir/waypoint-$digest.profdata
mv "$work/waypoint.profdata" "$merged"
(cd "$repo" && RUSTFLAGS="-Cprofile-use=$merged" CARGO_TARGET_DIR=$out_dir \
    cargo build --release --locked --target "$host" -p waypoint)
cp "$out_dir/$host/release/waypoint" "$out_dir/waypoint"

log "[4/4] checking that it serves..."
# The helpers are staged already: only the waypoint changes.
cp "$out_dir/waypoint" "$work/bin/waypoint"
up
h2load_load --clients 4 --duration 2 "$url/api/check"
wrk_load 4 "$url/"
"$work/bin/meshctl" down >/dev/null
log "built $out_dir/waypoint with $merged"
log "measure it: BENCH_WAYPOINT=$out_dir/waypoint e2e/bench/waypoint.sh"
