#!/usr/bin/env bash
# Tandem beside SPDK (nvmf_tgt for NVMe/TCP, iscsi_tgt for iSCSI), measured with the same
# clients (SPDK's spdk_nvme_perf; libiscsi's iscsi-perf and qemu-img bench for iSCSI) and the
# same pinning: the target on one core, the client on another. Both targets keep their data
# in RAM (an SPDK Malloc bdev; Tandem with its data dir on /dev/shm). The targets run one at a
# time (SPDK's reactor busy-polls its core) and alternate, pass after pass, so both see the
# same machine; every figure and every ratio is printed, then the range of each ratio.
#
# Then Tandem alone with durable writes: 4 KiB random writes with FUA through the built-in
# initiator, the volume on tmpfs and on a real file system (BENCH_DISK_DIR), beside plain
# writes on tmpfs: what durability costs, in the same run.
#
# SPDK is built from source outside the repository (docs/benchmarks.md says how):
#   cargo build --release -p gateway
#   SPDK_DIR=/path/to/spdk scripts/bench-spdk.sh [seconds-per-run] [passes]
# Never part of the test command. Optional: BENCH_TARGET_CORE (0), BENCH_CLIENT_CORE (1),
# BENCH_DISK_DIR (/var/tmp), TANDEM_BIN (target/release/tandem).
set -euo pipefail

SECS=${1:-5}
PASSES=${2:-3}
BIN=${TANDEM_BIN:-target/release/tandem}
TCORE=${BENCH_TARGET_CORE:-0}
CCORE=${BENCH_CLIENT_CORE:-1}
DISK_DIR=${BENCH_DISK_DIR:-/var/tmp}

die() { echo "bench-spdk.sh: $*" >&2; exit 2; }

[ -n "${SPDK_DIR:-}" ] || die "SPDK_DIR is not set: point it at an SPDK source tree built with
  --with-shared (its build/bin holds nvmf_tgt, iscsi_tgt and spdk_nvme_perf); docs/benchmarks.md
  ('Tandem beside SPDK') gives the build."
for f in build/bin/nvmf_tgt build/bin/iscsi_tgt build/bin/spdk_nvme_perf scripts/rpc.py; do
    [ -e "$SPDK_DIR/$f" ] || die "$SPDK_DIR/$f is missing: SPDK_DIR is not a built SPDK tree"
done
[ -x "$BIN" ] || die "$BIN is missing: run cargo build --release -p gateway first"
for t in iscsi-perf qemu-img taskset python3; do
    command -v "$t" > /dev/null || die "$t is not installed (scripts/deps.sh installs it)"
done
export LD_LIBRARY_PATH="$SPDK_DIR/build/lib:$SPDK_DIR/isa-l/.libs:$SPDK_DIR/isa-l-crypto/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

NVME_PORT=${BENCH_NVME_PORT:-24420}
ISCSI_PORT=${BENCH_ISCSI_PORT:-23260}
NQN_TANDEM="nqn.2026-11.io.tandem:default"
NQN_SPDK="nqn.2016-06.io.spdk:bench"
SIZE_MIB=256
DIR=$(mktemp -d /dev/shm/tandem-spdk.XXXXXX)
PID=
cleanup() {
    if [ -n "$PID" ]; then kill -TERM "$PID" 2> /dev/null || true; wait "$PID" 2> /dev/null || true; fi
    rm -rf "$DIR" "${DISK_DATA:-}"
}
trap cleanup EXIT INT TERM

stop() {
    [ -n "$PID" ] || return 0
    kill -TERM "$PID" 2> /dev/null || true
    wait "$PID" 2> /dev/null || true
    PID=
}

wait_port() { # port, what, log
    for _ in $(seq 300); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 0.2)" 2> /dev/null; then
            return 0
        fi
        kill -0 "$PID" 2> /dev/null || { echo "$2 exited:" >&2; tail -20 "$3" >&2; exit 1; }
        sleep 0.1
    done
    echo "$2 did not listen on $1:" >&2; tail -20 "$3" >&2; exit 1
}

tandem_up() { # data dir
    cat > "$DIR/tandem.toml" << TOML
data_dir = "$1"
[[volume]]
name = "default"
size = "${SIZE_MIB}MiB"
wal_size = "64MiB"
block_size = 512
[nvme]
discovery_listen = []
[[nvme.portal]]
listen = "127.0.0.1:$NVME_PORT"
[iscsi]
[[iscsi.portal]]
listen = "127.0.0.1:$ISCSI_PORT"
[[iscsi.target]]
iqn = "iqn.2026-11.io.tandem:bench"
[[iscsi.target.lun]]
id = 0
volume = "default"
[admin]
listen = "127.0.0.1:0"
TOML
    RUST_LOG=warn taskset -c "$TCORE" "$BIN" serve --config "$DIR/tandem.toml" > "$DIR/tandem.log" 2>&1 &
    PID=$!
    wait_port "$NVME_PORT" tandem "$DIR/tandem.log"
    wait_port "$ISCSI_PORT" tandem "$DIR/tandem.log"
}

rpc() { "$SPDK_DIR/scripts/rpc.py" -s "$DIR/spdk.sock" "$@" > /dev/null; }

spdk_up() { # app (nvmf_tgt | iscsi_tgt)
    rm -f "$DIR/spdk.sock"
    "$SPDK_DIR/build/bin/$1" -m "$((1 << TCORE))" --no-pci --no-huge -s 2048 --disable-cpumask-locks -r "$DIR/spdk.sock" \
        > "$DIR/spdk.log" 2>&1 &
    PID=$!
    for _ in $(seq 300); do
        [ -S "$DIR/spdk.sock" ] && rpc framework_wait_init 2> /dev/null && break
        kill -0 "$PID" 2> /dev/null || { echo "$1 exited:" >&2; tail -20 "$DIR/spdk.log" >&2; exit 1; }
        sleep 0.1
    done
    rpc bdev_malloc_create -b Malloc0 "$SIZE_MIB" 512
    if [ "$1" = nvmf_tgt ]; then
        rpc nvmf_create_transport -t TCP
        rpc nvmf_create_subsystem "$NQN_SPDK" -a -s SPDKBENCH0001
        rpc nvmf_subsystem_add_ns "$NQN_SPDK" Malloc0
        rpc nvmf_subsystem_add_listener "$NQN_SPDK" -t tcp -a 127.0.0.1 -s "$NVME_PORT"
        wait_port "$NVME_PORT" nvmf_tgt "$DIR/spdk.log"
    else
        rpc iscsi_create_portal_group 1 "127.0.0.1:$ISCSI_PORT"
        rpc iscsi_create_initiator_group 2 ANY 127.0.0.1/32
        rpc iscsi_create_target_node disk1 disk1_alias 'Malloc0:0' '1:2' 64 -d
        wait_port "$ISCSI_PORT" iscsi_tgt "$DIR/spdk.log"
    fi
}

nvme_perf() { # nqn, workload, io size -> IOPS (prints MB/s too, on stderr)
    local out
    out=$(timeout $((SECS + 30)) "$SPDK_DIR/build/bin/spdk_nvme_perf" --no-huge -s 512 \
        -r "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$NVME_PORT subnqn:$1" \
        -q 32 -o "$3" -w "$2" -t "$SECS" -c "$((1 << CCORE))" 2>&1) || { echo "$out" >&2; echo 0; return; }
    # "Total : IOPS MiB/s average min max"
    out=$(echo "$out" | awk '/^Total/ {for (i = 1; i <= NF; i++) if ($i ~ /^[0-9.]+$/) {print int($i); exit}}')
    echo "${out:-0}"
}

iscsi_url() { # target -> url
    if [ "$1" = tandem ]; then
        echo "iscsi://127.0.0.1:$ISCSI_PORT/iqn.2026-11.io.tandem:bench/0"
    else
        echo "iscsi://127.0.0.1:$ISCSI_PORT/iqn.2016-06.io.spdk:disk1/0"
    fi
}

iscsi_read() { # url -> IOPS
    timeout $((SECS + 30)) taskset -c "$CCORE" iscsi-perf -m 32 -b 8 -r -t "$SECS" "$1" 2>&1 |
        tr '\r' '\n' | grep -o 'iops average [0-9]*' | tail -1 | awk '{print $3}'
}

iscsi_write() { # url -> IOPS
    local count=$((SECS * 20000)) t
    t=$(taskset -c "$CCORE" qemu-img bench -f raw -w -d 32 -s 4096 -c "$count" "$1" 2>&1 |
        grep -o 'Run completed in [0-9.]*' | awk '{print $4}')
    python3 -c "print(int($count / $t))"
}

WORKLOADS=("nvme 4k randread" "nvme 4k randwrite" "nvme 128k seq read (MB/s)" "iscsi 4k randread (iscsi-perf)" "iscsi 4k write (qemu-img bench)")
declare -A FIG

measure() { # target pass
    local nqn
    if [ "$1" = tandem ]; then nqn=$NQN_TANDEM; tandem_up "$DIR/data"; else nqn=$NQN_SPDK; spdk_up nvmf_tgt; fi
    nvme_perf "$nqn" write 131072 > /dev/null # the reads read written data
    FIG["$1,0,$2"]=$(nvme_perf "$nqn" randread 4096)
    FIG["$1,1,$2"]=$(nvme_perf "$nqn" randwrite 4096)
    local seq
    seq=$(nvme_perf "$nqn" read 131072)
    FIG["$1,2,$2"]=$((${seq:-0} * 131072 / 1000000))
    if [ "$1" = spdk ]; then stop; spdk_up iscsi_tgt; fi
    local url
    url=$(iscsi_url "$1")
    FIG["$1,3,$2"]=$(iscsi_read "$url")
    FIG["$1,4,$2"]=$(iscsi_write "$url")
    stop
    rm -rf "$DIR/data"
}

ratio() { python3 -c "print(f'{$1 / $2:.2f}' if $2 else 'n/a')"; }

echo "Tandem beside SPDK: each target on core $TCORE, the client on core $CCORE, QD 32, ${SECS}s runs, RAM-backed ${SIZE_MIB} MiB volume"
echo "SPDK: $(cd "$SPDK_DIR" && git describe --tags 2> /dev/null || echo "$SPDK_DIR"); tandem: $("$BIN" --version 2> /dev/null || echo "$BIN")"
for p in $(seq "$PASSES"); do
    if [ $((p % 2)) = 1 ]; then measure spdk "$p"; measure tandem "$p"; else measure tandem "$p"; measure spdk "$p"; fi
done

printf '\n%-34s %6s %12s %12s %8s\n' "workload (IOPS unless said)" "pass" "SPDK" "Tandem" "ratio"
for w in "${!WORKLOADS[@]}"; do
    rs=()
    for p in $(seq "$PASSES"); do
        s=${FIG["spdk,$w,$p"]:-0}; t=${FIG["tandem,$w,$p"]:-0}; r=$(ratio "$t" "$s")
        rs+=("$r")
        printf '%-34s %6s %12s %12s %8s\n' "${WORKLOADS[$w]}" "$p" "$s" "$t" "$r"
    done
    printf '%-34s %6s %12s %12s %8s\n' "${WORKLOADS[$w]}" "range" "" "" "$(printf '%s\n' "${rs[@]}" | sort -n | sed -n '1p;$p' | paste -sd-)"
done

echo
echo "Durable writes (Tandem alone, 4 KiB random writes, QD 32, built-in initiator, ${SECS}s):"
DISK_DATA=$(mktemp -d "$DISK_DIR/tandem-spdk-disk.XXXXXX")
durable() { # data dir, label, extra bench args
    tandem_up "$1"
    local iops
    iops=$(taskset -c "$CCORE" "$BIN" bench nvme --addr "127.0.0.1:$NVME_PORT" --duration "$SECS" --qd 32 \
        --op write --pattern rand --bs 4096 "${@:3}" 2>&1 | grep -o '[0-9]* IOPS' | head -1 | awk '{print $1}')
    stop
    rm -rf "$1"
    printf '  %-44s %10s IOPS\n' "$2" "${iops:-?}"
}
durable "$DIR/data" "tmpfs, plain writes" 
durable "$DIR/data" "tmpfs, FUA writes" --fua
durable "$DISK_DATA/data" "file system ($DISK_DIR), FUA writes" --fua
