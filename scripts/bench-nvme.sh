#!/bin/sh
# NVMe/TCP benchmark of Tandem on loopback, volume on tmpfs (/dev/shm), each figure printed
# beside the loopback TCP ceiling for the same message sizes and queue depth, then the
# in-capsule data size (IOCCSZ) against forced R2T for 4 KiB and 16 KiB random writes.
#
#   cargo build --release -p gateway && scripts/bench-nvme.sh [seconds-per-run]
set -eu
BIN=${TANDEM_BIN:-target/release/tandem}
SECS=${1:-5}
PORT=${NVME_BENCH_PORT:-14420}
DIR=$(mktemp -d /dev/shm/tandem-bench.XXXXXX)
PID=
cleanup() {
    if [ -n "$PID" ]; then kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

serve() { # $1: in-capsule bytes
    cat > "$DIR/cfg.toml" <<TOML
data_dir = "$DIR/data"
[[volume]]
name = "default"
size = "512MiB"
wal_size = "64MiB"
block_size = 512
[iscsi]
enabled = false
[nvme]
in_capsule_size = $1
discovery_listen = ["127.0.0.1:$((PORT + 1))"]
[[nvme.portal]]
listen = "127.0.0.1:$PORT"
TOML
    "$BIN" serve --config "$DIR/cfg.toml" > "$DIR/serve.out" 2> "$DIR/serve.err" &
    PID=$!
    for _ in $(seq 100); do
        grep -q "nvme connect" "$DIR/serve.out" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "tandem did not start:" >&2; cat "$DIR/serve.err" >&2; exit 1
}

stop() { kill -TERM "$PID"; wait "$PID" || true; PID=; }

bench() { "$BIN" bench nvme --addr "127.0.0.1:$PORT" --duration "$SECS" --qd 32 "$@"; }

echo "== QD 32, volume on tmpfs, in-capsule 16 KiB (default) =="
serve 16384
bench --op write --pattern seq --bs 131072 > /dev/null   # populate what the reads touch
bench --op read --pattern rand --bs 4096 --tcp-ceiling
bench --op write --pattern rand --bs 4096 --tcp-ceiling
bench --op read --pattern seq --bs 131072 --tcp-ceiling
bench --op write --pattern rand --bs 16384
stop

echo "== forced R2T (in_capsule_size = 0) =="
serve 0
bench --op write --pattern rand --bs 4096
bench --op write --pattern rand --bs 16384
stop
