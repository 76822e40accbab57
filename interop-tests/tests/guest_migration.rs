//! One volume exported over iSCSI and NVMe/TCP at once, and a host moving from one protocol to
//! the other (docs/migration.md): the same bytes and the same filesystem over both, the same
//! identifiers, and the migration of a mounted filesystem under load with its downtime measured.
//!
//! The Linux kernel's initiators run in a QEMU guest (open-iscsi + `iscsi_tcp`, nvme-cli +
//! `nvme-tcp`); one guest at a time (see `guest_iscsi.rs` for why).

use std::time::Instant;

use interop_tests::guest_test::{assert_guest, one_guest_at_a_time, GUEST_TIMEOUT};
use interop_tests::nvme_guest::{dual_guest, DualSetup, DualTarget, VolumeIds};
use interop_tests::Rendezvous;

/// The filesystem UUID the scripts give mkfs: hosts mount by it, whatever the disk's name.
const FS_UUID: &str = "5e1f0c2a-7d3b-4c8e-9a61-2b4d6f8a0c13";

/// The script prelude: the shell libraries; `make_tree DIR` (the same files in any guest),
/// `manifest DIR` (SHA-256 of every file, relative paths) and `field TEXT NAME` (the value of
/// nvme-cli's `NAME : value` line).
fn script(body: &str) -> String {
    format!(
        r#". /tandem/iscsi.sh
modprobe ext4 2>/dev/null
field() {{ printf '%s\n' "$1" | sed -n "s/^$2 *: *//p" | head -1 | tr -d ' \t'; }}
manifest() {{ (cd "$1" && find . -type f | sort | xargs sha256sum); }}
make_tree() {{
    mkdir -p "$1/a/b" "$1/c" || fail "mkdir in $1"
    _n=0
    for _d in "$1" "$1/a" "$1/a/b" "$1/c"; do
        for _k in 1 2 3; do
            _n=$((_n + 1))
            dd if=/tandem/random.bin of="$_d/f$_k.bin" bs=4096 skip=$((_n * 37)) \
                count=$(( (_n * _n * 13) % 512 + 1 )) 2>/dev/null || fail "writing $_d/f$_k.bin"
        done
        head -c $((_n * 1000 + 7)) /tandem/random.bin > "$_d/odd.bin"
    done
}}
{body}"#
    )
}

/// A guest writes a filesystem over iSCSI; a second guest reads the same bytes and the same
/// files over NVMe/TCP.
#[test]
fn one_volume_same_bytes_over_iscsi_and_nvme() {
    let _one = one_guest_at_a_time();
    let started = Instant::now();
    let t = DualTarget::start(&DualSetup::default()).expect("start tandem");
    let rv = Rendezvous::start("start").expect("rendezvous");
    let first = dual_guest(&t, Some(rv.port()))
        .name("iscsi-writer")
        .env("FSUUID", FS_UUID)
        .timeout(GUEST_TIMEOUT)
        .script(script(
            r#"
discover
login
mkfs.ext4 -q -F -U "$FSUUID" "$DEV" || fail mkfs.ext4
mkdir -p /mnt
mount -t ext4 "$DEV" /mnt || fail mount
make_tree /mnt/tree
manifest /mnt/tree | tail -3
umount /mnt || fail umount
sum=$(sha256sum < "$DEV" | cut -d' ' -f1)
echo "sha256 of the whole disk over iSCSI: $sum"
logout
rv_send "sha-$sum"
"#,
        ))
        .run()
        .expect("guest run");
    assert_guest(&first, "iscsi-writer");
    let sum = rv
        .messages()
        .iter()
        .find_map(|m| m.strip_prefix("sha-").map(str::to_string))
        .expect("the first guest sent the disk's checksum");
    let second = dual_guest(&t, None)
        .name("nvme-reader")
        .env("FSUUID", FS_UUID)
        .env("EXPECT_SHA", &sum)
        .timeout(GUEST_TIMEOUT)
        .script(script(
            r#"
nvme_connect
sum=$(sha256sum < "$NDEV" | cut -d' ' -f1)
echo "sha256 of the whole disk over NVMe/TCP: $sum"
check "the whole disk reads the same over NVMe/TCP as over iSCSI" [ "$sum" = "$EXPECT_SHA" ]
check "the filesystem UUID is found on the NVMe namespace" [ "$(findfs UUID=$FSUUID)" = "$NDEV" ]
make_tree /tmp/ref
manifest /tmp/ref > /tmp/manifest
mkdir -p /mnt
mount -t ext4 "$NDEV" /mnt || fail "mount over NVMe/TCP"
(cd /mnt/tree && sha256sum -c /tmp/manifest) > /tmp/check.out 2>&1
rc=$?
tail -3 /tmp/check.out
check "every file written over iSCSI reads back over NVMe/TCP" [ $rc -eq 0 ]
check "no file more or less" [ "$(manifest /mnt/tree | cut -c67- | sort)" = "$(cut -c67- /tmp/manifest | sort)" ]
umount /mnt || fail umount
e2fsck -f -n "$NDEV"
check "e2fsck -f -n is clean" [ $? -eq 0 ]
nvme_disconnect
"#,
        ))
        .run()
        .expect("guest run");
    assert_guest(&second, "nvme-reader");
    println!(
        "one_volume_same_bytes_over_iscsi_and_nvme: {:?}",
        started.elapsed()
    );
}

/// The SCSI logical-unit designator (VPD 0x83, NAA 6) and serial (VPD 0x80) and the NVMe
/// namespace identifiers (Identify Namespace, CNS 03h list) name the volume alike: the NAA
/// designator is the NGUID byte for byte, the serial is the namespace UUID, and both follow
/// from the volume UUID in the superblock.
#[test]
fn same_identifiers_over_iscsi_and_nvme() {
    let _one = one_guest_at_a_time();
    let started = Instant::now();
    let t = DualTarget::start(&DualSetup::default()).expect("start tandem");
    let ids = VolumeIds::from_uuid(&t.volume_uuid().expect("volume uuid"));
    println!("volume identifiers derived on the host: {ids:?}");
    let out = dual_guest(&t, None)
        .name("identity")
        .env("NGUID", &ids.nguid_hex)
        .env("UUIDD", &ids.uuid_dashed)
        .timeout(GUEST_TIMEOUT)
        .script(script(
            r#"
discover
login
di=$(sg_vpd -p di "$DEV") || fail "sg_vpd -p di"
echo "$di"
naa=$(echo "$di" | grep -A1 'designator type: NAA' | grep -o '0x6[0-9a-f]\{31\}$') || fail "no NAA 6 designator"
naa=${naa#0x}
serial=$(sg_vpd -p sn "$DEV" | sed -n 's/.*Unit serial number: *//p')
scsi_wwid=$(cat /sys/block/$SD/device/wwid)
echo "SCSI: NAA $naa, serial $serial, wwid $scsi_wwid"
logout
nvme_connect
descs=$(nvme ns-descs "$NDEV") || fail "nvme ns-descs"
echo "$descs"
nguid=$(field "$descs" nguid)
uuid=$(field "$descs" uuid)
echo "NVMe: NGUID $nguid, UUID $uuid, wwid $(cat /sys/block/$NS/wwid)"
check "SCSI NAA designator = NVMe NGUID" [ "$naa" = "$nguid" ]
check "SCSI unit serial = NVMe namespace UUID" [ "$serial" = "$(echo $uuid | tr -d -)" ]
check "the NGUID follows from the volume UUID" [ "$nguid" = "$NGUID" ]
check "the namespace UUID is the volume UUID" [ "$uuid" = "$UUIDD" ]
check "id-ns agrees with the descriptor list" [ "$(field "$(nvme id-ns $NDEV)" nguid)" = "$nguid" ]
check "the kernel's SCSI wwid is the NAA designator" [ "$scsi_wwid" = "naa.$naa" ]
nvme_disconnect
"#,
        ))
        .run()
        .expect("guest run");
    assert_guest(&out, "identity");
    println!(
        "same_identifiers_over_iscsi_and_nvme: {:?}",
        started.elapsed()
    );
}

/// The migration of docs/migration.md in one guest: a filesystem mounted by UUID over iSCSI
/// under fio load; stop the load, unmount, log out, `nvme connect`, mount by UUID, verify,
/// resume the load. Downtime: from stopping the load to the first write the resumed load
/// completes over NVMe/TCP (the namespace's completed-writes counter moving).
#[test]
fn migrate_a_mounted_filesystem_under_load_from_iscsi_to_nvme() {
    let _one = one_guest_at_a_time();
    let started = Instant::now();
    let t = DualTarget::start(&DualSetup::default()).expect("start tandem");
    let out = dual_guest(&t, None)
        .name("migration")
        .env("FSUUID", FS_UUID)
        .timeout(GUEST_TIMEOUT)
        .script(script(
            r#"
load() {
    fio --name=load --directory=/mnt --filename=load.dat --size=24M --rw=randrw --bs=4k \
        --ioengine=libaio --direct=1 --iodepth=8 --time_based --runtime=600 --eta=never \
        > "$1" 2>&1 &
    LOAD=$!
}
# Writes completed by the block device $1 (field 5 of /sys/block/$1/stat).
writes() { awk '{ print $5 }' /sys/block/$1/stat; }
# running DEV: the load completes 200 more writes on DEV within 60 s (it starts slowly under
# emulation: fio lays out its file first).
running() {
    _w=$(writes $1); _i=0
    while [ "$(writes $1)" -le $((_w + 200)) ]; do
        kill -0 $LOAD 2>/dev/null || return 1
        _i=$((_i + 1)); [ $_i -lt 300 ] || return 1
        sleep 0.2
    done
}
stop_load() {
    kill -INT $LOAD
    wait $LOAD
    _rc=$?
    tail -12 "$1"
    # fio ends with status 128 when stopped by a signal; what matters is that it stopped
    # cleanly (its report printed) without an I/O error.
    [ $_rc -eq 0 ] || [ $_rc -eq 128 ] || fail "the load ended with status $_rc"
    grep -q 'Run status group' "$1" || fail "the load did not stop cleanly"
    grep -q 'err= 0' "$1" || fail "the load reported an error"
}

discover
login
mkfs.ext4 -q -F -U "$FSUUID" "$DEV" || fail mkfs.ext4
mkdir -p /mnt
mount UUID="$FSUUID" /mnt || fail "mount UUID=$FSUUID"
check "the filesystem UUID names the iSCSI disk" [ "$(findfs UUID=$FSUUID)" = "$DEV" ]
make_tree /mnt/tree
manifest /mnt/tree > /tmp/manifest
sync
load /tmp/load1.out
check "the load runs over iSCSI" running $SD
sleep 2

# The migration.
t0=$(now)
stop_load /tmp/load1.out
umount /mnt || fail umount
t1=$(now)
logout
t2=$(now)
nvme_connect
t3=$(now)
mount UUID="$FSUUID" /mnt || fail "mount UUID=$FSUUID over NVMe/TCP"
t4=$(now)
(cd /mnt/tree && sha256sum -c /tmp/manifest) > /tmp/check.out 2>&1 || { cat /tmp/check.out; fail "verify after the move"; }
t5=$(now)
# Linux 6.1 keeps no I/O statistics on the multipath head (nvmeXnY): count on the path.
NPATH=$(basename "$(ls -d /sys/block/${CTRL}c*n1 | head -1)")
w0=$(writes $NPATH)
load /tmp/load2.out
_i=0
while [ "$(writes $NPATH)" -le "$w0" ]; do
    kill -0 $LOAD 2>/dev/null || { cat /tmp/load2.out; fail "the resumed load died"; }
    _i=$((_i + 1))
    [ $_i -lt 3000 ] || fail "the resumed load wrote nothing within a minute"
    sleep 0.02
done
t6=$(now)
echo "MIGRATION-DOWNTIME $(awk "BEGIN { printf \"%.2f\", $t6 - $t0 }") s: stop load + unmount $(awk "BEGIN { print $t1 - $t0 }"), iSCSI logout $(awk "BEGIN { print $t2 - $t1 }"), nvme connect $(awk "BEGIN { print $t3 - $t2 }"), mount by UUID $(awk "BEGIN { print $t4 - $t3 }"), verify $(awk "BEGIN { print $t5 - $t4 }"), load running again $(awk "BEGIN { print $t6 - $t5 }")"

check "the filesystem UUID now names the NVMe namespace" [ "$(findfs UUID=$FSUUID)" = "$NDEV" ]
check "no SCSI disk is left" [ -z "$(session_disk)" ]
check "the load runs over NVMe/TCP" running $NPATH
sleep 2
stop_load /tmp/load2.out
umount /mnt || fail "umount 2"
e2fsck -f -n "$NDEV"
check "e2fsck -f -n is clean after the move" [ $? -eq 0 ]
nvme_disconnect
"#,
        ))
        .run()
        .expect("guest run");
    assert_guest(&out, "migration");
    let line = out
        .console
        .lines()
        .find_map(|l| l.split_once("MIGRATION-DOWNTIME ").map(|x| x.1))
        .expect("the guest printed the downtime");
    println!("==> iSCSI -> NVMe/TCP migration downtime (TCG guest): {line}");
    println!(
        "migrate_a_mounted_filesystem_under_load_from_iscsi_to_nvme: {:?}",
        started.elapsed()
    );
}
