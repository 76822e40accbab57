//! Snapshots, their exports, rollback and clones with the Linux kernel's initiators in a QEMU
//! guest: ext4 on an iSCSI disk (volume `vol`) and on an NVMe/TCP namespace (volume `nvol`,
//! namespace 2) of one `tandem serve`.
//!
//! 1. The guest writes files on both filesystems, runs `sync` and records their checksums, then
//!    starts fio writing on both.
//! 2. Under that load the host takes a snapshot of each volume with `tandem snapshot create`,
//!    makes a read-only view (`tandem clone --read-only`) and a writable clone of each snapshot
//!    and exports them live: the iSCSI ones as LUNs 1 and 2 of the guest's target, the NVMe
//!    ones as namespaces 3 and 4 of its subsystem. A rollback while the guest is attached is
//!    refused.
//! 3. The guest rescans the iSCSI session (the NVMe namespaces appear by the AEN) and checks
//!    the read-only views: the kernel sees them read-only (`blockdev --getro` 1), a write
//!    through the block layer fails, and the target itself refuses one sent around the block
//!    layer (SG_IO WRITE(10): DATA PROTECT, WRITE PROTECTED; `nvme write`: Namespace Is Write
//!    Protected); MODE SENSE reports WP and Identify Namespace NSATTR 1. A view holds exactly
//!    what its writable clone holds before the clone is mounted.
//! 4. The writable clones mount (ext4 replays its journal: the snapshot was taken with the
//!    filesystems mounted and busy) with every file synced before the snapshot intact; a file
//!    written on a clone does not appear on its origin, whose files stay intact, and the view
//!    does not change either.
//! 5. The guest changes the origins (a file removed, one added), unmounts and detaches (the
//!    product refuses a rollback under attached hosts); the host rolls both volumes back; the
//!    guest attaches again and finds the snapshot's files (after journal replay) and not the
//!    later changes; `e2fsck -fn` finds the rolled-back filesystems and the clones clean.

use std::process::{Command, Output};
use std::time::Instant;

use interop_tests::guest_test::{assert_guest, await_guest, one_guest_at_a_time, AbortOnPanic};
use interop_tests::iscsi::TEST_IQN;
use interop_tests::nvme_guest::{dual_guest, DualSetup, DualTarget, TEST_NQN};
use interop_tests::ports::free_tcp_port;
use interop_tests::tandem::tandem_bin;
use interop_tests::Rendezvous;

const MIB: u64 = 1 << 20;
const SIZE: u64 = 32 * MIB;

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
# The SCSI disk (sdX) of LUN $1 of the iSCSI session, or nothing.
lun_disk() {
    for _b in /sys/class/iscsi_session/session*/device/target*/*:*:*:$1/block/*; do
        [ -e "$_b" ] && basename "$_b" && return 0
    done
    return 0
}
# wait_for WHAT FUNCTION ARG: until FUNCTION ARG names a disk (20 s); prints it.
wait_for() {
    _i=0
    while [ -z "$($2 $3)" ]; do
        sleep 0.1; _i=$((_i + 1)); [ $_i -lt 200 ] || fail "$1 did not appear"
    done
    $2 $3
}
# same_disks A B: the two disks hold the same bytes (read with direct I/O).
same_disks() {
    dd if=/dev/$1 bs=1M iflag=direct 2>/dev/null > /tmp/a.img
    dd if=/dev/$2 bs=1M iflag=direct 2>/dev/null | cmp -s - /tmp/a.img
    _r=$?; rm -f /tmp/a.img; return $_r
}
# head_of DISK: its first 4 MiB (ext4's superblock, group descriptors, bitmaps, inode tables).
head_of() { dd if=/dev/$1 bs=1M count=4 iflag=direct 2>/dev/null; }
same_head() { head_of $1 | cmp -s - $2; }
head_differs() { ! same_head "$@"; }
stage() { echo "[$(cut -d' ' -f1 /proc/uptime) s] $*"; }
# writer DIR: fio random writes on DIR/fio.dat until /tmp/stop exists.
writer() {
    _n=0
    while [ ! -e /tmp/stop ]; do
        fio --name=w$_n --filename=$1/fio.dat --size=4M --rw=randwrite --bs=4k \
            --ioengine=libaio --direct=1 --iodepth=8 --randseed=$((_n + 1)) --eta=never \
            > $1.fio.out 2>&1 || { echo "pass $_n failed" >> $1.failed; cat $1.fio.out; }
        _n=$((_n + 1))
        echo $_n > $1.passes
    done
}
passes() { cat $1.passes 2>/dev/null || echo 0; }
attach() {
    login
    nvme connect -t tcp -a "$TANDEM_HOST" -s "$NVME_PORT" -n "$NQN" || fail "nvme connect"
    ISD=$(wait_for "LUN 0" lun_disk 0)
    NSD=$(wait_for "namespace 2" ns_disk 2)
}
detach() {
    nvme disconnect -n "$NQN" || fail "nvme disconnect"
    logout
}

t0=$(cut -d' ' -f1 /proc/uptime)
discover
attach
echo "origins: iSCSI /dev/$ISD (vol), NVMe /dev/$NSD (nvol)"
for d in i n ci cn; do mkdir -p /mnt/$d; done
mkfs.ext4 -q -F /dev/$ISD || fail "mkfs.ext4 on iSCSI"
mkfs.ext4 -q -F /dev/$NSD || fail "mkfs.ext4 on NVMe"
mount -t ext4 /dev/$ISD /mnt/i || fail "mount iSCSI"
mount -t ext4 /dev/$NSD /mnt/n || fail "mount NVMe"

# Files synced before the snapshot, and their checksums.
for d in i n; do
    head -c 1048576 /tandem/random.bin > /mnt/$d/f1
    cat /tandem/random.bin > /mnt/$d/f2
    tail -c 3145728 /tandem/random.bin > /mnt/$d/f3
    mkdir -p /mnt/$d/small
    k=0; while [ $k -lt 50 ]; do echo "$d file $k" > /mnt/$d/small/$k; k=$((k + 1)); done
done
sync
for d in i n; do (cd /mnt/$d && md5sum f1 f2 f3 small/*) > /tmp/sums.$d; done
echo "recorded $(wc -l < /tmp/sums.i) checksums per filesystem"
writer /mnt/i & wi=$!
writer /mnt/n & wn=$!
while [ "$(passes /mnt/i)" -lt 1 ] || [ "$(passes /mnt/n)" -lt 1 ]; do sleep 0.2; done
stage "fio running"
rv_send loaded
rv_wait exported 150
stage "exported"
p_i=$(passes /mnt/i); p_n=$(passes /mnt/n)
touch /tmp/stop
wait $wi; wait $wn
echo "fio passes (the snapshots were taken during them): iSCSI $(passes /mnt/i), NVMe $(passes /mnt/n); at the snapshot: $p_i, $p_n"
check "fio ran without errors" sh -c "[ ! -e /mnt/i.failed ] && [ ! -e /mnt/n.failed ]"

# The new exports: LUNs 1 (view) and 2 (clone) after a rescan; namespaces 3 and 4 by the AEN.
# The LUNs added to its target reach the session as a unit attention (3F/0E) on its next
# command (fio's, or this read's), which the kernel logs and retries.
dd if=/dev/$ISD of=/dev/null bs=4096 count=1 iflag=direct 2>/dev/null || fail "read of LUN 0"
check "iSCSI: the kernel was told the target's LUNs changed (3F/0E)" sh -c "dmesg | grep -q 'LUN assignments on this target have changed'"
iscsiadm -m session -R || fail "iSCSI rescan"
IRO=$(wait_for "LUN 1 (read-only view of vol)" lun_disk 1)
IRW=$(wait_for "LUN 2 (clone of vol)" lun_disk 2)
NRO=$(wait_for "namespace 3 (read-only view of nvol)" ns_disk 3)
NRW=$(wait_for "namespace 4 (clone of nvol)" ns_disk 4)
echo "views: iSCSI /dev/$IRO, NVMe /dev/$NRO; clones: iSCSI /dev/$IRW, NVMe /dev/$NRW"
head -c 4096 /dev/zero > /tmp/zero
for v in $IRO $NRO; do
    check "$v: the kernel sees it read-only (blockdev --getro)" [ "$(blockdev --getro /dev/$v)" = 1 ]
    check "$v: a write through the block layer fails" sh -c "! dd if=/tmp/zero of=/dev/$v bs=4096 count=1 oflag=direct 2>/dev/null"
done
for v in $IRW $NRW; do
    check "$v: the clone is writable (blockdev --getro)" [ "$(blockdev --getro /dev/$v)" = 0 ]
done
modes=$(sg_modes /dev/$IRO 2>&1); echo "$modes" | head -3
check "iSCSI view: MODE SENSE reports WP=1" has "$modes" "WP=1"
check "iSCSI clone: MODE SENSE reports WP=0" has "$(sg_modes /dev/$IRW 2>&1)" "WP=0"
# Read-only open (-R): the kernel would refuse to open the disk for writing; root may send
# any command through SG_IO on it, so the WRITE reaches the target.
sg_raw -R -s 512 -i /tmp/zero /dev/$IRO 2a 00 00 00 00 00 00 00 01 00 > /tmp/sgraw 2>&1; cat /tmp/sgraw
check "iSCSI view: the target answers a WRITE(10) DATA PROTECT" grep -qi "data protect" /tmp/sgraw
check "iSCSI view: ... WRITE PROTECTED (27/00)" grep -qi "write protected" /tmp/sgraw
nvme id-ns /dev/$NRO > /tmp/idns 2>&1
nsattr=$(awk -F: '/^nsattr/ {gsub(/[ \t]/, "", $2); print $2}' /tmp/idns)
echo "namespace 3 nsattr: $nsattr"
check "NVMe view: Identify Namespace NSATTR is 1 (write protected)" sh -c "[ '$nsattr' = 1 ] || [ '$nsattr' = 0x1 ]"
nvme write /dev/$NRO -s 0 -c 0 -z 512 -d /tmp/zero > /tmp/nvwrite 2>&1; echo "nvme write: $(cat /tmp/nvwrite)"
check "NVMe view: the target answers a Write Namespace Is Write Protected" grep -qi "write protected" /tmp/nvwrite

# A view holds what its clone holds (the same snapshot), before the clone is written.
stage "comparing the views with the clones"
check "iSCSI: the view and the clone hold the same snapshot" same_disks $IRO $IRW
rv_send iscsi-compared
check "NVMe: the view and the clone hold the same snapshot" same_disks $NRO $NRW
head_of $IRO > /tmp/view.i; head_of $NRO > /tmp/view.n
rv_send views-checked
stage "mounting the clones"

# The clones mount after journal replay with every synced file intact, and diverge.
mount -t ext4 /dev/$IRW /mnt/ci || fail "mount the iSCSI clone"
mount -t ext4 /dev/$NRW /mnt/cn || fail "mount the NVMe clone"
dmesg | grep -E "EXT4-fs \((sd|nvme)" | tail -8
check "iSCSI clone: every file synced before the snapshot is intact" sh -c "cd /mnt/ci && md5sum -c -s /tmp/sums.i"
check "NVMe clone: every file synced before the snapshot is intact" sh -c "cd /mnt/cn && md5sum -c -s /tmp/sums.n"
for c in ci cn; do
    echo "clone only" > /mnt/$c/clone-only; rm /mnt/$c/f3
done
sync
check "iSCSI: the clone's changes are not on its origin" sh -c "[ ! -e /mnt/i/clone-only ] && cd /mnt/i && md5sum -c -s /tmp/sums.i"
check "NVMe: the clone's changes are not on its origin" sh -c "[ ! -e /mnt/n/clone-only ] && cd /mnt/n && md5sum -c -s /tmp/sums.n"
check "iSCSI: the clone changed where ext4 keeps its metadata" head_differs $IRW /tmp/view.i
check "iSCSI: ... and the view did not" same_head $IRO /tmp/view.i
check "NVMe: the clone changed where ext4 keeps its metadata" head_differs $NRW /tmp/view.n
check "NVMe: ... and the view did not" same_head $NRO /tmp/view.n
umount /mnt/ci || fail "umount the iSCSI clone"
umount /mnt/cn || fail "umount the NVMe clone"
e2fsck -fn /dev/$IRW > /tmp/fsck 2>&1 || { cat /tmp/fsck; fail "e2fsck on the iSCSI clone"; }
e2fsck -fn /dev/$NRW > /tmp/fsck 2>&1 || { cat /tmp/fsck; fail "e2fsck on the NVMe clone"; }
echo "ok: e2fsck clean on both clones"

# The origins change after the snapshot; then the guest detaches for the rollback.
for d in i n; do
    rm /mnt/$d/f1; echo "after the snapshot" > /mnt/$d/after
done
sync
umount /mnt/i || fail "umount iSCSI"
umount /mnt/n || fail "umount NVMe"
detach
stage "detached"
rv_send detached
rv_wait rolled-back 120
attach
stage "attached again after the rollback"
mount -t ext4 /dev/$ISD /mnt/i || fail "mount the rolled-back iSCSI volume"
mount -t ext4 /dev/$NSD /mnt/n || fail "mount the rolled-back NVMe volume"
check "iSCSI: the rollback restores every file synced before the snapshot" sh -c "cd /mnt/i && md5sum -c -s /tmp/sums.i"
check "NVMe: the rollback restores every file synced before the snapshot" sh -c "cd /mnt/n && md5sum -c -s /tmp/sums.n"
check "the later changes are gone" sh -c "[ ! -e /mnt/i/after ] && [ ! -e /mnt/n/after ]"
umount /mnt/i || fail "umount iSCSI"
umount /mnt/n || fail "umount NVMe"
e2fsck -fn /dev/$ISD > /tmp/fsck 2>&1 || { cat /tmp/fsck; fail "e2fsck on the rolled-back iSCSI volume"; }
e2fsck -fn /dev/$NSD > /tmp/fsck 2>&1 || { cat /tmp/fsck; fail "e2fsck on the rolled-back NVMe volume"; }
echo "ok: e2fsck clean on both rolled-back volumes"
check "no I/O error reached a filesystem" sh -c "! dmesg | grep -qiE 'EXT4-fs error|I/O error.*(dev sd|dev nvme).*(ext4|journal)'"
detach
echo "guest script took $(awk -v t0=$t0 '{print $1 - t0}' /proc/uptime) s"
"#;

/// `tandem ARGS` against the daemon with admin port `admin` and data directory `data`.
fn tandem(admin: u16, data: &std::path::Path, args: &[&str]) -> Output {
    let out = Command::new(tandem_bin())
        .args(args)
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("run tandem");
    println!(
        "tandem {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    );
    out
}

fn ok(admin: u16, data: &std::path::Path, args: &[&str]) {
    assert!(
        tandem(admin, data, args).status.success(),
        "tandem {args:?} failed"
    );
}

#[test]
fn snapshot_under_load_exported_rolled_back_and_cloned_on_iscsi_and_nvme() {
    let _one = one_guest_at_a_time();
    let started = Instant::now();
    let admin = free_tcp_port().expect("free port");
    let t = DualTarget::start(&DualSetup {
        size: SIZE,
        extra: format!(
            "[[volume]]\nname = \"nvol\"\nsize = {SIZE}\nblock_size = 512\nwal_size = \"32MiB\"\n\
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
                .name("snapshot")
                // More steps than most guest tests: whole disks compared, four file systems.
                .timeout(std::time::Duration::from_secs(480))
                .script(SCRIPT)
                .run()
                .expect("guest run")
        });
        let _abort = AbortOnPanic(&rv);
        let data = t.process.dir().join("data");
        let data = data.as_path();
        await_guest(&rv, &guest, "loaded");
        let taken = Instant::now();
        ok(admin, data, &["snapshot", "create", "vol", "s1"]);
        ok(admin, data, &["snapshot", "create", "nvol", "s1"]);
        println!("both snapshots taken under fio in {:?}", taken.elapsed());
        let e = tandem(admin, data, &["snapshot", "rollback", "vol", "s1"]);
        let msg = String::from_utf8_lossy(&e.stderr);
        assert!(
            !e.status.success() && msg.contains("409") && msg.contains("attached"),
            "a rollback under an attached host is refused: {msg}"
        );
        for v in ["vol", "nvol"] {
            ok(
                admin,
                data,
                &["clone", v, "s1", &format!("{v}-ro"), "--read-only"],
            );
            ok(admin, data, &["clone", v, "s1", &format!("{v}-rw")]);
        }
        let exports: [(&str, &str, &str, &str); 4] = [
            ("vol-ro", "iscsi", TEST_IQN, "1"),
            ("vol-rw", "iscsi", TEST_IQN, "2"),
            ("nvol-ro", "nvme", TEST_NQN, "3"),
            ("nvol-rw", "nvme", TEST_NQN, "4"),
        ];
        for (v, p, target, id) in exports {
            ok(
                admin,
                data,
                &[
                    "export",
                    "add",
                    v,
                    "--protocol",
                    p,
                    "--target",
                    target,
                    "--id",
                    id,
                ],
            );
        }
        rv.set_state("exported");
        // Whole disks are compared: one step per protocol, each well within a step's time.
        await_guest(&rv, &guest, "iscsi-compared");
        await_guest(&rv, &guest, "views-checked");
        await_guest(&rv, &guest, "detached");
        let rolled = Instant::now();
        for v in ["vol", "nvol"] {
            // The target may take a moment to see the guest's sessions end.
            let deadline = Instant::now() + std::time::Duration::from_secs(15);
            while !tandem(admin, data, &["snapshot", "rollback", v, "s1"])
                .status
                .success()
            {
                assert!(Instant::now() < deadline, "rollback of {v} refused");
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
        }
        println!("both volumes rolled back in {:?}", rolled.elapsed());
        rv.set_state("rolled-back");
        guest.join().expect("guest thread")
    });
    assert_guest(&out, "snapshot");
    println!(
        "snapshot_under_load_exported_rolled_back_and_cloned_on_iscsi_and_nvme: {:?}",
        started.elapsed()
    );
}
