#!/usr/bin/env bash
# Replication benchmark: the same NVMe/TCP workloads against one node and against a primary that
# replicates synchronously to a standby on loopback, in one run, printing every figure and the
# ratios. Two workloads: 4 KiB random writes at QD 32 with a Flush after every 32 writes of a
# slot (throughput), and 4 KiB FUA writes at QD 1 (latency of one durable write).
#
#   cargo build --release -p gateway && scripts/bench-repl.sh [SECONDS] [ROUNDS]
#
# Volumes live under $BENCH_DIR (default: a new directory in /var/tmp, a real file system, so
# the fdatasyncs are real). Everything listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
BIN=${TANDEM_BIN:-${CARGO_TARGET_DIR:-target}/release/tandem}
[ -x "$BIN" ] || { echo "bench-repl.sh: no $BIN; run cargo build --release -p gateway first" >&2; exit 1; }
command -v curl >/dev/null || { echo "bench-repl.sh: curl is needed" >&2; exit 1; }
BASE=${BENCH_DIR:-$(mktemp -d /var/tmp/tandem-bench-repl.XXXXXX)}
UUID=6f1c1f0e-8d3a-4a43-9a55-7d9a0b1f0c11
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${BENCH_DIR:-}" ] || rm -rf "$BASE"
}
trap cleanup EXIT

# node NAME NVME_PORT ADMIN_PORT [REPL_PORT ROLE PEER_PORT]: writes a config, starts a node.
node() {
    local name=$1 nvme=$2 admin=$3 dir="$BASE/$1"
    mkdir -p "$dir"
    {
        echo "data_dir = \"$dir/data\""
        if [ $# -gt 3 ]; then
            printf '[replication]\nlisten = "127.0.0.1:%s"\n' "$4"
        fi
        printf '[admin]\nlisten = "127.0.0.1:%s"\n[iscsi]\nenabled = false\n' "$admin"
        printf '[[volume]]\nname = "default"\nsize = "1GiB"\nwal_size = "128MiB"\n'
        if [ $# -gt 3 ]; then
            printf 'role = "%s"\npeer = "127.0.0.1:%s"\nuuid = "%s"\n' "$5" "$6" "$UUID"
        fi
    } >"$dir/tandem.toml"
    "$BIN" serve --config "$dir/tandem.toml" --nvme-listen "127.0.0.1:$nvme" \
        --nvme-discovery-listen "127.0.0.1:$((nvme + 1))" >"$dir/log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "bench-repl.sh: node $name did not become ready; its log:" >&2
    cat "$dir/log" >&2
    exit 1
}

# bench NVME_PORT ARGS...: prints "IOPS MEAN_US" of one run.
bench() {
    local port=$1
    shift
    "$BIN" bench nvme --addr "127.0.0.1:$port" --op write --duration "$SECS" "$@" |
        awk '/ IOPS /{for(i=1;i<=NF;i++){if($(i+1)=="IOPS")iops=$i; if($(i+1)=="us")lat=$i} print iops, lat}'
}

wait_in_sync() {
    for _ in $(seq 300); do
        curl -sf "http://127.0.0.1:$1/v1/volumes" | grep -q '"sync_state": *"in_sync"' && return 0
        sleep 0.1
    done
    echo "bench-repl.sh: the standby never got in sync" >&2
    exit 1
}

FLUSH=(--qd 32 --flush-every 32)
FUA=(--qd 1 --fua)

# Both set-ups run side by side (the idle one costs nothing measurable) and the workloads
# alternate between them, ROUNDS times: on a shared machine the load changes within seconds,
# so a ratio is only meaningful between runs made back to back. Every round's ratios are
# printed, then the median of each.
ROUNDS=${2:-1}
echo "starting one node, and a primary + standby (synchronous replication on loopback)"
node single 24420 29740
node standby 25420 29741 29751 standby 29750
node primary 26420 29742 29750 primary 29751
wait_in_sync 29742

median() { sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
printf '\n%-6s %-44s %12s %12s %8s\n' "round" "4 KiB writes" "single node" "replicated" "ratio"
FLUSH_RATIOS=() FUA_RATIOS=()
for round in $(seq "$ROUNDS"); do
    read -r s_iops _ < <(bench 24420 "${FLUSH[@]}")
    read -r r_iops _ < <(bench 26420 "${FLUSH[@]}")
    read -r _ s_fua < <(bench 24420 "${FUA[@]}")
    read -r _ r_fua < <(bench 26420 "${FUA[@]}")
    fr=$(echo "$r_iops / $s_iops" | bc -l)
    ur=$(echo "$r_fua / $s_fua" | bc -l)
    FLUSH_RATIOS+=("$fr") FUA_RATIOS+=("$ur")
    printf '%-6s %-44s %12.0f %12.0f %7.2fx\n' "$round" "write + flush every 32, QD 32 (IOPS)" \
        "$s_iops" "$r_iops" "$fr"
    printf '%-6s %-44s %12.1f %12.1f %7.2fx\n' "$round" "FUA write latency, QD 1 (mean us)" \
        "$s_fua" "$r_fua" "$ur"
done
if [ "$ROUNDS" -gt 1 ]; then
    printf '%-6s %-44s %12s %12s %7.2fx\n' "median" "write + flush every 32, QD 32" "" "" \
        "$(printf '%s\n' "${FLUSH_RATIOS[@]}" | median)"
    printf '%-6s %-44s %12s %12s %7.2fx\n' "median" "FUA write latency, QD 1" "" "" \
        "$(printf '%s\n' "${FUA_RATIOS[@]}" | median)"
fi
echo "targets: write + flush >= 0.60x single node; FUA latency <= 1.50x single node"
