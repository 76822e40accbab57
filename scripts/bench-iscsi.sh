#!/usr/bin/env bash
# iSCSI benchmark: Tandem against Debian's tgt (userspace target), in one run, each serving a
# file of the same size on the same file system, measured with the same initiators:
#   - iscsi-perf (libiscsi): 4 KiB random reads, 32 in flight;
#   - qemu-img bench: 4 KiB writes, queue depth 32.
# Prints each figure and the ratio Tandem / tgt. A third target, `tandem bench iscsi-sink`, runs
# the same protocol core but stores nothing (writes discarded, reads return zeros): what the
# initiators reach against it is the ceiling for any target on this machine, and sink / tgt the
# largest ratio any target could show here.
# Environment: TANDEM_BENCH_DIR (default /var/tmp), BENCH_SECONDS (default 15), BENCH_SIZE_MB (1024).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for p in tgt libiscsi-bin qemu-utils qemu-block-extra; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
cargo build --release -p gateway -q

secs=${BENCH_SECONDS:-15}
size_mb=${BENCH_SIZE_MB:-1024}
dir=$(mktemp -d -p "${TANDEM_BENCH_DIR:-/var/tmp}" tandem-bench.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
tport=$(free_port); gport=$(free_port); sport=$(free_port)
tandem_pid=""; tgt_pid=""; sink_pid=""
cleanup() {
    [ -n "$tandem_pid" ] && kill "$tandem_pid" 2>/dev/null || true
    [ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null || true
    [ -n "$tgt_pid" ] && kill -9 "$tgt_pid" 2>/dev/null || true  # tgtd ignores SIGTERM while it has targets
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

cat > "$dir/tandem.toml" <<TOML
data_dir = "$dir/tandem-data"
[[volume]]
name = "bench"
size = "${size_mb}MiB"
block_size = 512
wal_size = "256MiB"
[iscsi]
[[iscsi.portal]]
listen = "127.0.0.1:$tport"
[[iscsi.target]]
iqn = "iqn.2026-11.io.tandem:bench"
[[iscsi.target.lun]]
id = 0
volume = "bench"
TOML
RUST_LOG=warn ./target/release/tandem serve -c "$dir/tandem.toml" > "$dir/tandem.log" 2>&1 &
tandem_pid=$!

./target/release/tandem bench iscsi-sink --listen "127.0.0.1:$sport" --size "${size_mb}MiB" > "$dir/sink.log" 2>&1 &
sink_pid=$!

truncate -s "${size_mb}M" "$dir/tgt.img"
ctl=$((RANDOM % 900 + 100))
tgtd -f -C "$ctl" --iscsi "portal=127.0.0.1:$gport" > "$dir/tgt.log" 2>&1 &
tgt_pid=$!
sleep 1
tgtadm -C "$ctl" --lld iscsi --op new --mode target --tid 1 -T iqn.2026-11.io.tandem:tgt
tgtadm -C "$ctl" --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$dir/tgt.img"
tgtadm -C "$ctl" --lld iscsi --op bind --mode target --tid 1 -I ALL

tandem_url="iscsi://127.0.0.1:$tport/iqn.2026-11.io.tandem:bench/0"
tgt_url="iscsi://127.0.0.1:$gport/iqn.2026-11.io.tandem:tgt/1"
sink_url="iscsi://127.0.0.1:$sport/iqn.2026-11.io.tandem:sink/0"

# The same random contents on both, so reads return real data.
head -c "$((size_mb << 20))" /dev/urandom > "$dir/fill.img"
qemu-img convert -n -f raw -O raw "$dir/fill.img" "$tandem_url"
qemu-img convert -n -f raw -O raw "$dir/fill.img" "$tgt_url"
rm -f "$dir/fill.img"

perf_read() { # url -> IOPS
    sync  # each run starts without another run's dirty pages being written back under it
    timeout $((secs + 20)) iscsi-perf -m 32 -b 8 -r -t "$secs" "$1" 2>&1 | tr '\r' '\n' | grep -o 'iops average [0-9]*' | tail -1 | awk '{print $3}'
}
bench_write() { # url -> IOPS
    local count=$((secs * 20000))
    sync
    local t
    t=$(qemu-img bench -f raw -w -d 32 -s 4096 -c "$count" "$1" 2>&1 | grep -o 'Run completed in [0-9.]*' | awk '{print $4}')
    python3 -c "print(int($count / $t))"
}

tr=$(perf_read "$tandem_url"); gr=$(perf_read "$tgt_url"); sr=$(perf_read "$sink_url")
tw=$(bench_write "$tandem_url"); gw=$(bench_write "$tgt_url"); sw=$(bench_write "$sink_url")
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
printf '%-44s %9s %9s %7s %13s %9s\n' "workload (${size_mb} MiB LUN, ${secs}s)" "tandem" "tgt" "ratio" "sink (ceiling)" "sink/tgt"
printf '%-44s %9s %9s %7s %13s %9s\n' "iscsi-perf 4 KiB random read, QD 32 (IOPS)" "$tr" "$gr" "$(ratio "$tr" "$gr")" "$sr" "$(ratio "$sr" "$gr")"
printf '%-44s %9s %9s %7s %13s %9s\n' "qemu-img bench 4 KiB write, QD 32 (IOPS)" "$tw" "$gw" "$(ratio "$tw" "$gw")" "$sw" "$(ratio "$sw" "$gw")"
