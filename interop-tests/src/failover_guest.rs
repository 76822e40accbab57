//! The guest side of the failover tests: shell functions that set a guest up the way
//! docs/host-setup.md sets a host up (udev, multipathd with the shipped stanza, open-iscsi and
//! nvme-cli with the shipped settings), run a verified load whose completions are logged, and
//! read the path states the host's multipath layers show.

/// Shell functions for failover scripts, appended to `/tandem/iscsi.sh` by
/// [`crate::cluster::cluster_guest`] (they use the libraries' `fail`, `check` and `now`).
///
/// - `start_udev`: `systemd-udevd` (a link to `udevadm`), every device triggered and settled.
/// - `start_multipathd`: the shipped `tandem.conf` in `/etc/multipath/conf.d`, the guest's own
///   defaults (see [`MULTIPATH_DEFAULTS`]) and `multipathd` in the background.
/// - `iscsi_login_both`: the shipped iscsid settings, discovery and login at both nodes; sets
///   `SD_A` and `SD_B` (each node's SCSI disk) and, once multipathd made the map, `MAP`
///   (`/dev/dm-N`).
/// - `mpath_expect OPT OTHER STATE`: waits (60 s) until `multipath -ll` shows the path `OPT` in
///   the group in use with ALUA priority 50 and the path `OTHER` in checker state `STATE`
///   (`ghost`: a standby path; `faulty`: a failed or unavailable one).
/// - `nvme_connect_both`: the shipped udev rule and connect wrapper, a controller per node;
///   sets `CTRL_A`, `CTRL_B`, `NS` (the multipath head) and `NDEV`.
/// - `ana_expect OPT OTHER STATE`: waits (60 s) until the path through controller `OPT` is
///   optimized and the one through `OTHER` is in ANA state `STATE`, or has no live controller
///   when `STATE` is `down`.
/// - `load_start NAME FILE`, `load_stop NAME`: fio random writes with verify on `FILE`, each
///   completion logged; `load_start` returns once writes complete on the paths (`PATH_DEVS`,
///   set by the login and connect functions); `load_stop` stops it, fails on any I/O or verify error, and prints
///   `PAUSE NAME <ms>`, the longest gap between two completed I/Os, and `WRITES NAME <writes>
///   VERIFIED <reads>`, how many writes fio completed and how many it read back to verify.
pub const GUEST_FUNCTIONS: &str = r#"
start_udev() {
    ln -sf /bin/udevadm /run/systemd-udevd
    /run/systemd-udevd --daemon || fail "systemd-udevd"
    udevadm trigger --action=add
    udevadm settle -t 30
}
start_multipathd() {
    mkdir -p /etc/multipath/conf.d
    cp /tandem/host/tandem.conf /etc/multipath/conf.d/tandem.conf
    printf '%s\n' "$MULTIPATH_DEFAULTS" > /etc/multipath.conf
    multipathd -d -s > /tmp/multipathd.log 2>&1 &
    _i=0
    until multipathd show daemon >/dev/null 2>&1; do
        _i=$((_i + 1)); [ $_i -lt 100 ] || fail "multipathd did not start: $(cat /tmp/multipathd.log)"
        sleep 0.1
    done
}
# The SCSI disk (sdX) of the iSCSI session to port $1, or nothing.
sd_of_port() {
    for _s in /sys/class/iscsi_session/session*; do
        [ -e "$_s" ] || continue
        for _c in $_s/device/connection*/iscsi_connection/connection*; do
            [ "$(cat $_c/persistent_port 2>/dev/null)" = "$1" ] || continue
            for _b in $_s/device/target*/*:*:*:0/block/*; do
                [ -e "$_b" ] && basename "$_b" && return 0
            done
        done
    done
    return 0
}
iscsi_login_both() {
    cat /tandem/host/tandem-iscsid.conf >> /etc/iscsi/iscsid.conf
    for _p in $PORT_A $PORT_B; do
        iscsiadm -m discovery -t sendtargets -p "$TANDEM_HOST:$_p" || fail "discovery at $_p"
        iscsiadm -m node -T "$IQN" -p "$TANDEM_HOST:$_p" --login || fail "login at $_p"
    done
    _i=0
    while :; do
        SD_A=$(sd_of_port $PORT_A); SD_B=$(sd_of_port $PORT_B)
        [ -n "$SD_A" ] && [ -n "$SD_B" ] && break
        _i=$((_i + 1)); [ $_i -lt 200 ] || fail "no SCSI disk for both sessions"
        sleep 0.1
    done
    udevadm settle -t 30
    echo "paths: node A $SD_A, node B $SD_B"
    _i=0
    while :; do
        MAP=$(multipath -ll 2>/dev/null | awk '/TANDEM/ { print $2; exit }')
        [ -n "$MAP" ] && [ -b "/dev/$MAP" ] && break
        _i=$((_i + 1)); [ $_i -lt 300 ] || { multipath -v3 2>&1 | tail -40; cat /tmp/multipathd.log; fail "multipathd made no map"; }
        sleep 0.1
    done
    MAP=/dev/$MAP
    PATH_DEVS="$SD_A $SD_B"
    echo "map: $MAP"
}
# Lines "sdX PRIO GROUP-STATUS DM-STATE CHECKER-STATE" from multipath -ll (DM-STATE active or
# failed; CHECKER-STATE ready, ghost, faulty, ...).
mpath_paths() {
    multipath -ll 2>/dev/null | awk '
        /policy=/ { p = ""; s = ""; for (i = 1; i <= NF; i++) { if ($i ~ /^prio=/) p = substr($i, 6); if ($i ~ /^status=/) s = substr($i, 8) } }
        / sd[a-z]+ / { for (i = 1; i <= NF; i++) if ($i ~ /^sd[a-z]+$/) { d = $i; dm = $(i + 2); ck = $(i + 3) } print d, p, s, dm, ck }'
}
mpath_expect() {
    _i=0
    while :; do
        _v=$(mpath_paths)
        # The optimized path's group is the one in use ("active"), or, before any I/O chose
        # one, the first ("enabled"). A standby path is a ghost in a group not in use; a failed
        # path keeps its last priority, so it may share the optimized path's group.
        case $3 in
            ghost) _other="^$2 [0-9]* enabled active ghost\$" ;;
            *) _other="^$2 .* failed $3\$" ;;
        esac
        if printf '%s\n' "$_v" | grep -Eqx "$1 50 (active|enabled) active ready" \
            && printf '%s\n' "$_v" | grep -q "$_other"; then
            multipath -ll
            echo "ok: multipath shows $1 active/optimized, $2 $3"
            return 0
        fi
        _i=$((_i + 1))
        if [ $_i -ge 300 ]; then
            multipath -ll
            fail "multipath -ll never showed $1 active/optimized (prio 50) and $2 $3: $_v"
        fi
        sleep 0.2
    done
}
# The controller (nvmeX) connected to port $1 of $NQN, or nothing.
ctrl_of_port() {
    for _c in /sys/class/nvme/nvme*; do
        [ "$(cat $_c/subsysnqn 2>/dev/null)" = "$NQN" ] || continue
        case "$(cat $_c/address 2>/dev/null)" in *trsvcid=$1,*|*trsvcid=$1) basename $_c; return 0 ;; esac
    done
    return 0
}
nvme_connect_both() {
    mkdir -p /etc/udev/rules.d
    cp /tandem/host/71-tandem-nvme.rules /etc/udev/rules.d/
    udevadm control --reload
    for _p in $NVME_A $NVME_B; do
        /tandem/host/tandem-nvme-connect -t tcp -a "$TANDEM_HOST" -s "$_p" -n "$NQN" || fail "nvme connect to port $_p"
    done
    CTRL_A=$(ctrl_of_port $NVME_A); CTRL_B=$(ctrl_of_port $NVME_B)
    [ -n "$CTRL_A" ] && [ -n "$CTRL_B" ] || fail "no controller for both nodes"
    wait_ns
    udevadm settle -t 30
    PATH_DEVS=$(ns_paths)
    echo "controllers: node A $CTRL_A, node B $CTRL_B; namespace $NDEV"
}
# The path devices (nvmeXcYnZ) of the namespace head $NS (Linux 6.1 has no multipath/
# directory on the head: the paths are the hidden disks named after it).
ns_paths() {
    for _p in /sys/block/${NS%n*}c*n${NS##*n}; do [ -e "$_p" ] && basename $_p; done
}
# The ANA state of the path to namespace $NS through controller $1 ("down" when the
# controller is not live).
ana_of() {
    [ "$(cat /sys/class/nvme/$1/state 2>/dev/null)" = live ] || { echo down; return 0; }
    for _p in $(ns_paths); do
        [ "$(basename $(readlink -f /sys/block/$_p/device))" = "$1" ] && { cat /sys/block/$_p/ana_state; return 0; }
    done
    echo none
}
ana_expect() {
    _i=0
    while :; do
        _o=$(ana_of $1); _s=$(ana_of $2)
        if [ "$_o" = optimized ] && [ "$_s" = "$3" ]; then
            echo "ok: $1 optimized, $2 $3"
            return 0
        fi
        _i=$((_i + 1))
        if [ $_i -ge 300 ]; then
            nvme list-subsys /dev/$NS
            fail "the paths never became $1 optimized and $2 $3 (they are $_o and $_s)"
        fi
        sleep 0.2
    done
}
load_start() {
    fio --name=$1 --filename="$2" --size=16M --bs=4k --rw=randwrite --ioengine=libaio \
        --iodepth=4 --direct=1 --sync=dsync --verify=crc32c --verify_backlog=64 \
        --verify_fatal=1 --time_based --runtime=300 --write_lat_log=/tmp/lat-$1 \
        --log_avg_msec=0 --eta=never > /tmp/fio-$1.out 2>&1 &
    LOAD=$!
    # Running: 200 writes completed on the paths (fio writes its logs only at the end).
    _w0=$(path_writes); _i=0
    while [ "$(path_writes)" -lt $((_w0 + 200)) ]; do
        kill -0 $LOAD 2>/dev/null || { cat /tmp/fio-$1.out; fail "the load $1 died at the start"; }
        _i=$((_i + 1)); [ $_i -lt 600 ] || fail "the load $1 completed nothing within a minute"
        sleep 0.1
    done
}
# Writes completed on the block devices named in $PATH_DEVS (field 5 of their stat).
path_writes() {
    _n=0
    for _d in $PATH_DEVS; do _n=$((_n + $(awk '{ print $5 }' /sys/block/$_d/stat))); done
    echo $_n
}
load_stop() {
    if ! kill -0 $LOAD 2>/dev/null; then
        cat /tmp/fio-$1.out
        _err=$(grep -m1 'err=[ ]*[1-9]' /tmp/fio-$1.out)
        [ -z "$_err" ] || fail "the load $1 failed: $_err"
        fail "the load $1 ended before the host's change was over"
    fi
    # Completions on the new path for 3 s, then stop.
    sleep 3
    kill -INT $LOAD
    # fio stops once its I/O in flight completes: I/O queued with no usable path never does.
    _i=0
    while kill -0 $LOAD 2>/dev/null; do
        _i=$((_i + 1))
        [ $_i -lt 600 ] || { tail -20 /tmp/fio-$1.out; fail "the load $1 did not stop within 60 s: its I/O is stuck (no usable path)"; }
        sleep 0.1
    done
    wait $LOAD
    _rc=$?
    tail -20 /tmp/fio-$1.out
    if ! { [ $_rc -eq 0 ] || [ $_rc -eq 128 ] || [ $_rc -eq 130 ]; }; then
        head -40 /tmp/fio-$1.out
        fail "the load $1 ended with status $_rc: $(grep -m3 -i 'error\|verify\|bad' /tmp/fio-$1.out | tr '\n' ' ')"
    fi
    grep -q 'Run status group' /tmp/fio-$1.out || fail "the load $1 did not stop cleanly"
    grep -q 'err= 0' /tmp/fio-$1.out || fail "the load $1 reported an I/O error"
    ! grep -qi 'verify.*fail\|bad magic\|crc32c: verify' /tmp/fio-$1.out || fail "the load $1 failed verification"
    _pause=$(cut -d, -f1 /tmp/lat-$1_clat.1.log | sort -n | awk 'NR > 1 { g = $1 - p; if (g > m) m = g } { p = $1 } END { print m + 0 }')
    echo "PAUSE $1 $_pause"
    # fio's issued count: "total=READS,WRITES,..." (the reads are its verify reads).
    _n=$(grep -m1 -o 'issued rwts: total=[0-9]*,[0-9]*' /tmp/fio-$1.out | sed 's/.*total=//')
    echo "WRITES $1 ${_n#*,} VERIFIED ${_n%%,*}"
}
"#;

/// The guest's own multipath defaults (`/etc/multipath.conf`; the shipped stanza goes in
/// `conf.d`): check paths every second, so the priorities follow a role change within a second
/// or two, and make a map of every Tandem path at once (the guest lists no WWIDs).
pub const MULTIPATH_DEFAULTS: &str = "defaults {
    polling_interval 1
    find_multipaths greedy
    user_friendly_names no
}";
