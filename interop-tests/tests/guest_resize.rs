//! Online resize with the Linux kernel's initiators in a QEMU guest: ext4 on an iSCSI disk and
//! on an NVMe/TCP namespace (two volumes of one `tandem serve`), fio writing and verifying on
//! both, `tandem volume resize` of both volumes from the host while fio runs, then the guest
//! sees the new sizes without reconnecting, grows both filesystems online with `resize2fs`,
//! writes a file only the grown filesystems can hold, and `e2fsck` finds both clean.
//!
//! What the guest kernel (Debian bookworm's 6.1) does with each notice, as this test shows:
//!
//! - NVMe/TCP: the Namespace Attribute Changed AEN makes the kernel read the Changed Namespace
//!   List and rescan the namespace by itself (`nvme_scan_work`): the size changes with no help.
//! - iSCSI: the unit attention 2A/09 CAPACITY DATA HAS CHANGED reaches the SCSI midlayer on the
//!   next command (the kernel logs "Capacity data has changed" and retries the command), which
//!   only sends a uevent (`SDEV_UA=CAPACITY_DATA_HAS_CHANGED`) to user space: the kernel does
//!   not re-read the capacity itself (`scsi_evt_emit` rescans only for INQUIRY DATA HAS
//!   CHANGED). A host needs a udev rule to act on it (docs/operations.md gives one). The guest
//!   has no udev, so the test runs busybox `uevent` with a handler doing what that rule does
//!   (write 1 to the SCSI device's `rescan`): the rescan is triggered by the unit attention,
//!   through the uevent, and the handler records the size the kernel still had when the event
//!   came.

use std::process::Command;
use std::time::Instant;

use interop_tests::guest_test::{assert_guest, await_guest, one_guest_at_a_time, AbortOnPanic};
use interop_tests::nvme_guest::{dual_guest, DualSetup, DualTarget};
use interop_tests::ports::free_tcp_port;
use interop_tests::tandem::tandem_bin;
use interop_tests::Rendezvous;

const MIB: u64 = 1 << 20;
const OLD: u64 = 24 * MIB;
const NEW: u64 = 48 * MIB;

/// The busybox `uevent` handler standing in for the udev rule
/// `ACTION=="change", SUBSYSTEM=="scsi", ENV{SDEV_UA}=="CAPACITY_DATA_HAS_CHANGED",
/// ATTR{rescan}="1"`; it logs every SCSI unit-attention event with the size the disk had.
const ON_UEVENT: &str = r#"#!/bin/sh
[ -n "${SDEV_UA:-}" ] || exit 0
b=$(ls "/sys$DEVPATH/block" 2>/dev/null | head -1)
echo "$ACTION SDEV_UA=$SDEV_UA disk=$b size-before=$(cat /sys$DEVPATH/block/$b/size 2>/dev/null)" >> /tmp/uevents
if [ "$ACTION" = change ] && [ "$SDEV_UA" = CAPACITY_DATA_HAS_CHANGED ] && [ -e "/sys$DEVPATH/rescan" ]; then
    echo 1 > "/sys$DEVPATH/rescan"
    echo "rescanned $b: size-after=$(cat /sys$DEVPATH/block/$b/size 2>/dev/null)" >> /tmp/uevents
fi
"#;

const SCRIPT: &str = r#". /tandem/iscsi.sh
modprobe ext4 2>/dev/null
# The namespace head disk (nvmeXnY) with NSID $1, or nothing.
ns_disk() {
    for _b in /sys/block/nvme*n*; do
        _n=$(basename "$_b")
        case "$_n" in *c*) continue ;; esac
        [ "$(cat $_b/nsid 2>/dev/null)" = "$1" ] && echo "$_n" && return 0
    done
    return 0
}
# wait_size DISK SECTORS SECONDS: until /sys/block/DISK/size is SECTORS.
wait_size() {
    _i=0
    while [ "$(cat /sys/block/$1/size)" != "$2" ]; do
        sleep 0.2; _i=$((_i + 1))
        [ $_i -lt $(($3 * 5)) ] || return 1
    done
    echo "$1: $(cat /sys/block/$1/size) sectors after $((_i / 5)).$((_i % 5 * 2)) s"
}
# writer DIR: fio write + verify passes on DIR/fio.dat until /tmp/stop exists.
writer() {
    _n=0
    while [ ! -e /tmp/stop ]; do
        fio --name=w$_n --filename=$1/fio.dat --size=4M --rw=randwrite --bs=4k \
            --ioengine=libaio --direct=1 --iodepth=8 --verify=crc32c --do_verify=1 \
            --verify_fatal=1 --randseed=$((_n + 1)) --eta=never > $1.fio.out 2>&1 \
            || { echo "pass $_n failed" >> $1.failed; cat $1.fio.out; }
        _n=$((_n + 1))
        echo $_n > $1.passes
    done
}
passes() { cat $1.passes 2>/dev/null || echo 0; }

discover
login
IDEV=$DEV; ISD=$SD
sid=$(iscsiadm -m session | sed -n 's/^tcp: \[\([0-9]*\)\].*/\1/p')
nvme connect -t tcp -a "$TANDEM_HOST" -s "$NVME_PORT" -n "$NQN" || fail "nvme connect"
i=0
while [ -z "$(ns_disk 2)" ] || [ -z "$(ns_disk 1)" ]; do
    sleep 0.1; i=$((i + 1)); [ $i -lt 200 ] || fail "namespaces 1 and 2 did not appear"
done
NS2=$(ns_disk 2); NS1=$(ns_disk 1); NDEV=/dev/$NS2
CTRL=$(basename $(ls -d /sys/class/nvme/nvme* | head -1))
echo "iSCSI disk $IDEV (session $sid), NVMe namespace 2 $NDEV, namespace 1 /dev/$NS1, controller $CTRL"
check "iSCSI disk has the old size" [ "$(cat /sys/block/$ISD/size)" -eq $((OLD / 512)) ]
check "NVMe namespace has the old size" [ "$(cat /sys/block/$NS2/size)" -eq $((OLD / 512)) ]
aen=$(nvme get-feature /dev/$CTRL -f 0xb 2>&1); echo "$aen"

for d in i n; do mkdir -p /mnt/$d; done
mkfs.ext4 -q -F "$IDEV" || fail "mkfs.ext4 on iSCSI"
mkfs.ext4 -q -F "$NDEV" || fail "mkfs.ext4 on NVMe"
mount -t ext4 "$IDEV" /mnt/i || fail "mount iSCSI"
mount -t ext4 "$NDEV" /mnt/n || fail "mount NVMe"
fs_before_i=$(df -k /mnt/i | awk 'NR==2 {print $2}')
fs_before_n=$(df -k /mnt/n | awk 'NR==2 {print $2}')
busybox uevent /tandem/on-uevent.sh & upid=$!
writer /mnt/i & wi=$!
writer /mnt/n & wn=$!
while [ "$(passes /mnt/i)" -lt 1 ] || [ "$(passes /mnt/n)" -lt 1 ]; do sleep 0.2; done
rv_send fio-running
rv_wait resized 120
check "NVMe: the namespace grows by itself (AEN, Changed Namespace List, rescan)" wait_size "$NS2" $((NEW / 512)) 30
check "NVMe: namespace 1 (the iSCSI volume seen over NVMe) grows too" wait_size "$NS1" $((NEW / 512)) 30
check "iSCSI: the disk grows after the unit attention's uevent" wait_size "$ISD" $((NEW / 512)) 30
echo "--- uevents (busybox uevent handler):"; cat /tmp/uevents
dmesg | grep -iE 'capacity|detected capacity change' | tail -10
check "iSCSI: the kernel got the unit attention" sh -c "dmesg | grep -q 'Capacity data has changed'"
check "iSCSI: it came as a uevent SDEV_UA=CAPACITY_DATA_HAS_CHANGED" grep -q "change SDEV_UA=CAPACITY_DATA_HAS_CHANGED disk=$ISD" /tmp/uevents
check "iSCSI: the rescan the uevent triggered gave the new size" grep -q "rescanned $ISD: size-after=$((NEW / 512))" /tmp/uevents
p_i=$(passes /mnt/i); p_n=$(passes /mnt/n)
resize2fs "$IDEV" || fail "resize2fs (online) on iSCSI"
resize2fs "$NDEV" || fail "resize2fs (online) on NVMe"
fs_after_i=$(df -k /mnt/i | awk 'NR==2 {print $2}')
fs_after_n=$(df -k /mnt/n | awk 'NR==2 {print $2}')
echo "ext4 sizes (KiB): iSCSI $fs_before_i -> $fs_after_i, NVMe $fs_before_n -> $fs_after_n"
# The added space, less at most 10 % for the new groups' metadata.
grown=$(( (NEW - OLD) / 1024 * 9 / 10 ))
check "iSCSI ext4 grew online" [ "$fs_after_i" -gt $((fs_before_i + grown)) ]
check "NVMe ext4 grew online" [ "$fs_after_n" -gt $((fs_before_n + grown)) ]
# fio goes on after the resize: at least one more pass on each.
i=0
while [ "$(passes /mnt/i)" -le "$p_i" ] || [ "$(passes /mnt/n)" -le "$p_n" ]; do
    sleep 0.2; i=$((i + 1)); [ $i -lt 600 ] || fail "fio made no progress after the resize"
done
touch /tmp/stop
wait $wi; wait $wn
kill $upid 2>/dev/null
echo "fio passes: iSCSI $(passes /mnt/i), NVMe $(passes /mnt/n)"
check "every fio pass on iSCSI wrote and verified" [ ! -e /mnt/i.failed ]
check "every fio pass on NVMe wrote and verified" [ ! -e /mnt/n.failed ]
# A file the old filesystems could not hold (24 MiB), in the grown space.
for d in i n; do
    for k in 1 2 3; do cat /tandem/random.bin; done > /mnt/$d/big || fail "filling /mnt/$d"
done
sync
check "the 24 MiB files are whole and equal" sh -c "[ \$(wc -c < /mnt/i/big) -eq $((24 << 20)) ] && cmp -s /mnt/i/big /mnt/n/big"
check "no I/O error reached the block layer" sh -c "! dmesg | grep -qiE 'I/O error|critical medium error'"
check "the same iSCSI session (no reconnect)" [ "$(iscsiadm -m session | sed -n 's/^tcp: \[\([0-9]*\)\].*/\1/p')" = "$sid" ]
check "no iSCSI connection error" sh -c "! dmesg | grep -q 'detected conn error'"
check "the same NVMe controller, live (no reconnect)" [ "$(cat /sys/class/nvme/$CTRL/state)" = live ]
check "no NVMe reconnect" sh -c "! dmesg | grep -qE 'reconnect|Reconnecting'"
umount /mnt/i || fail "umount iSCSI"
umount /mnt/n || fail "umount NVMe"
e2fsck -fn "$IDEV" || fail "e2fsck on iSCSI"
echo "ok: e2fsck clean on iSCSI"
e2fsck -fn "$NDEV" || fail "e2fsck on NVMe"
echo "ok: e2fsck clean on NVMe"
nvme disconnect -n "$NQN" || fail "nvme disconnect"
logout
"#;

/// `tandem volume resize` against the daemon whose data directory is `data` (its admin token).
fn resize(admin: u16, data: &std::path::Path, volume: &str, size: u64) {
    let out = Command::new(tandem_bin())
        .args(["volume", "resize", volume, &size.to_string()])
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("run tandem volume resize");
    println!(
        "tandem volume resize {volume} {size}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "tandem volume resize {volume} failed");
}

#[test]
fn online_resize_under_fio_with_ext4_on_iscsi_and_nvme() {
    let _one = one_guest_at_a_time();
    let started = Instant::now();
    let admin = free_tcp_port().expect("free port");
    let t = DualTarget::start(&DualSetup {
        size: OLD,
        extra: format!(
            "[[volume]]\nname = \"nvol\"\nsize = {OLD}\nblock_size = 512\nwal_size = \"32MiB\"\n\
             [[nvme.subsystem.namespace]]\nnsid = 2\nvolume = \"nvol\"\n\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\n"
        ),
        ..DualSetup::default()
    })
    .expect("start tandem");
    let rv = Rendezvous::start("start").expect("rendezvous");
    let out = std::thread::scope(|s| {
        let builder = dual_guest(&t, Some(rv.port()));
        let guest = s.spawn(move || {
            builder
                .name("resize")
                .env("OLD", OLD.to_string())
                .env("NEW", NEW.to_string())
                .file("on-uevent.sh", ON_UEVENT, 0o755)
                .timeout(interop_tests::guest_test::GUEST_TIMEOUT)
                .script(SCRIPT)
                .run()
                .expect("guest run")
        });
        let _abort = AbortOnPanic(&rv);
        await_guest(&rv, &guest, "fio-running");
        let data = t.process.dir().join("data");
        resize(admin, &data, "vol", NEW);
        resize(admin, &data, "nvol", NEW);
        rv.set_state("resized");
        guest.join().expect("guest thread")
    });
    assert_guest(&out, "resize");
    println!(
        "online_resize_under_fio_with_ext4_on_iscsi_and_nvme: {:?}",
        started.elapsed()
    );
}
