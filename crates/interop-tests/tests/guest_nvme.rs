//! The Linux kernel's NVMe/TCP host (`nvme-tcp` driven by nvme-cli in a QEMU guest) against a
//! real `tandem serve`: discovery, connect with and without digests, the identity a host builds
//! its multipath view from, a filesystem across connections, fio with verification, discard
//! reaching the volume's files, the keep-alive timer when the host vanishes, and a refused host.
//!
//! One guest runs at a time (see `guest_iscsi.rs` for why). The checks run in the guest scripts
//! (`check WHAT COMMAND` prints `ok: WHAT` or fails the script with `FAIL: WHAT`); the host
//! checks what only it can see (the volume's files, the daemon's log) and meets the guest
//! through a [`Rendezvous`].

use std::sync::{Mutex, MutexGuard};
use std::thread::ScopedJoinHandle;
use std::time::{Duration, Instant};

use interop_tests::nvme_guest::{
    dual_guest, DualSetup, DualTarget, VolumeIds, GUEST_HOSTNQN, TEST_NQN, TEST_SERIAL,
};
use interop_tests::{GuestOutcome, Rendezvous};

const MIB: u64 = 1 << 20;

/// Time limit of one guest run, boot included.
const GUEST_TIMEOUT: Duration = Duration::from_secs(240);

/// How long the host waits for a step of a guest in a rendezvous.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

static GUEST_LOCK: Mutex<()> = Mutex::new(());

/// Serialises the tests of this file: one QEMU guest at a time.
fn one_guest_at_a_time() -> MutexGuard<'static, ()> {
    GUEST_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn target(setup: DualSetup) -> DualTarget {
    DualTarget::start(&setup).expect("start tandem")
}

/// The script prelude: the shell libraries, and `field TEXT NAME`, the value of nvme-cli's
/// `NAME : value` line in TEXT with blanks removed.
fn script(body: &str) -> String {
    format!(
        r#". /tandem/iscsi.sh
modprobe ext4 2>/dev/null
field() {{ printf '%s\n' "$1" | sed -n "s/^$2 *: *//p" | head -1 | tr -d ' \t'; }}
manifest() {{ (cd "$1" && find . -type f | sort | xargs sha256sum); }}
{body}"#
    )
}

/// Fails the test unless the guest script exited with status 0 (its console is in the log).
fn assert_guest(out: &GuestOutcome, what: &str) {
    println!("{what}: guest run took {:?}", out.elapsed);
    out.assert_success();
}

/// Makes a guest waiting in `rv_wait` give up when the host side of its test panics.
struct AbortOnPanic<'a>(&'a Rendezvous);

impl Drop for AbortOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.abort();
        }
    }
}

/// Waits until the guest sent `msg`; panics when the guest ended first or [`STEP_TIMEOUT`] passed.
fn await_guest(rv: &Rendezvous, guest: &ScopedJoinHandle<'_, GuestOutcome>, msg: &str) {
    let deadline = Instant::now() + STEP_TIMEOUT;
    while !rv.wait_for(msg, Duration::from_millis(200)) {
        assert!(!guest.is_finished(), "the guest ended before saying {msg}");
        assert!(Instant::now() < deadline, "the guest never said {msg}");
    }
}

#[test]
fn discovery_connect_digests_and_identity() {
    let _one = one_guest_at_a_time();
    let started = Instant::now();
    let size = 96 * MIB;
    let block_size = 4096u64;
    let t = target(DualSetup {
        size,
        block_size: block_size as u32,
        ..DualSetup::default()
    });
    let ids = VolumeIds::from_uuid(&t.volume_uuid().expect("volume uuid"));
    println!("volume identifiers derived on the host: {ids:?}");
    let out = dual_guest(&t, None)
        .name("nvme-identity")
        .env("SERIAL", TEST_SERIAL)
        .env("NGUID", &ids.nguid_hex)
        .env("EUI64", &ids.eui64_hex)
        .env("UUIDD", &ids.uuid_dashed)
        .env("SIZE", size.to_string())
        .env("BS", block_size.to_string())
        .env("LBADS", block_size.trailing_zeros().to_string())
        .timeout(GUEST_TIMEOUT)
        .script(script(
            r#"
nvme_discover "$DISC_PORT"
nvme_discover "$NVME_PORT"
nvme_connect
DEV=$NDEV
ctrl=$(nvme id-ctrl /dev/$CTRL) || fail "nvme id-ctrl"
echo "$ctrl" | grep -E '^(sn|mn|cntlid|cmic|nn|anacap|anagrpmax|nanagrpid|kas|subnqn|ioccsz|iorcsz|sgls|mdts|oncs) '
check "id-ctrl subnqn is the subsystem" [ "$(field "$ctrl" subnqn)" = "$NQN" ]
check "id-ctrl serial is the configured one" [ "$(field "$ctrl" sn)" = "$SERIAL" ]
check "the kernel's serial" [ "$(tr -d ' ' < /sys/class/nvme/$CTRL/serial)" = "$SERIAL" ]
cntlid=$(field "$ctrl" cntlid)
check "id-ctrl cntlid ($cntlid) is the one the kernel got in Connect" [ $((cntlid)) -eq "$(cat /sys/class/nvme/$CTRL/cntlid)" ]
cmic=$(field "$ctrl" cmic)
check "CMIC bit 1 (several controllers)" [ $((cmic & 2)) -ne 0 ]
check "CMIC bit 3 (ANA reporting)" [ $((cmic & 8)) -ne 0 ]
check "KAS non-zero" [ $(($(field "$ctrl" kas))) -ne 0 ]
check "ANAGRPMAX >= 1" [ $(($(field "$ctrl" anagrpmax))) -ge 1 ]

ns=$(nvme id-ns "$NDEV") || fail "nvme id-ns"
echo "$ns" | grep -E '^(nsze|ncap|nmic|anagrpid|nguid|eui64|nlbaf|flbas) |in use'
nmic=$(field "$ns" nmic)
check "NMIC bit 0 (shared namespace)" [ $((nmic & 1)) -eq 1 ]
check "ANAGRPID 1" [ $(($(field "$ns" anagrpid))) -eq 1 ]
check "id-ns NGUID derived from the volume UUID" [ "$(field "$ns" nguid)" = "$NGUID" ]
check "id-ns EUI-64 derived from the volume UUID" [ "$(field "$ns" eui64)" = "$EUI64" ]
check "id-ns size in blocks" [ $(($(field "$ns" nsze))) -eq $((SIZE / BS)) ]
check "the LBA format in use has ${BS}-byte blocks" has "$(echo "$ns" | grep "in use")" "lbads:$LBADS "

descs=$(nvme ns-descs "$NDEV") || fail "nvme ns-descs"
echo "$descs"
check "ns-descs NGUID = id-ns NGUID" [ "$(field "$descs" nguid)" = "$NGUID" ]
check "ns-descs EUI-64 = id-ns EUI-64" [ "$(field "$descs" eui64)" = "$EUI64" ]
check "ns-descs UUID is the volume UUID" [ "$(field "$descs" uuid)" = "$UUIDD" ]
check "the kernel's wwid is the namespace UUID" [ "$(cat /sys/block/$NS/wwid)" = "uuid.$UUIDD" ]

ana=$(nvme ana-log /dev/$CTRL) || fail "nvme ana-log"
echo "$ana"
check "ANA log: one group" has "$ana" '^ngrps[^0-9]*1$'
check "ANA log: group 1" has "$ana" '^grpid[^0-9]*1$'
check "ANA log: group 1 optimized" has "$ana" '^state[^a-z]*optimized$'
check "ANA log: namespace 1 in it" has "$ana" 'nsid[^0-9]*1$'
path=$(ls -d /sys/block/${CTRL}c*n1 | head -1)
check "the kernel's ANA state of the path: optimized" [ "$(cat $path/ana_state)" = optimized ]
check "the kernel's ANA group of the path: 1" [ "$(cat $path/ana_grpid)" = 1 ]

ls=$(nvme list-subsys) || fail "nvme list-subsys"
echo "$ls"
check "list-subsys names the subsystem" has "$ls" "NQN=$NQN"
check "list-subsys shows the TCP path, live" has "$ls" "tcp traddr=$TANDEM_HOST,trsvcid=$NVME_PORT.* live"

check "capacity" [ "$(blockdev --getsize64 $NDEV)" -eq "$SIZE" ]
check "logical block size" [ "$(blockdev --getss $NDEV)" -eq "$BS" ]
dd if=/tandem/random.bin of=$NDEV bs=1M seek=4 oflag=direct 2>/dev/null || fail "dd write"
check "8 MiB written without digests read back" disk_is $((4 << 20)) $((8 << 20)) /tandem/random.bin
nvme_disconnect

nvme_connect -g -G
DEV=$NDEV
check "connected with header and data digests" [ -n "$CTRL" ]
check "data written before reads back with digests" disk_is $((4 << 20)) $((8 << 20)) /tandem/random.bin
dd if=/tandem/random.bin of=$NDEV bs=4k seek=$((32 * 256)) count=512 oflag=direct 2>/dev/null || fail "dd 4k writes"
dd if=/tandem/random.bin of=$NDEV bs=256k seek=$((48 * 4)) count=16 oflag=direct 2>/dev/null || fail "dd 256k writes"
check "4 KiB writes with digests read back" disk_is $((32 << 20)) $((2 << 20)) /tandem/random.bin
check "256 KiB writes with digests read back" disk_is $((48 << 20)) $((4 << 20)) /tandem/random.bin
check "no digest errors in the kernel log" sh -c "! dmesg | grep -i -E 'digest' | grep -i -E 'err|mismatch|fail|incorrect'"
nvme_disconnect
"#,
        ))
        .run()
        .expect("guest run");
    assert_guest(&out, "nvme-identity");
    println!(
        "discovery_connect_digests_and_identity: {:?}",
        started.elapsed()
    );
}
