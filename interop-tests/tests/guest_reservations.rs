//! One reservation state across protocols, seen from the Linux kernel: in one QEMU guest the
//! iSCSI initiator (`sg_persist` on the SCSI disk) and the NVMe/TCP host (`nvme resv-*` on the
//! namespace) reach the same volume as two different hosts. A SCSI Write Exclusive reservation
//! blocks the NVMe host's writes (not its reads) until it is released, and an NVMe Write
//! Exclusive reservation blocks the iSCSI initiator's writes the same way.

use std::time::Duration;

use interop_tests::iscsi::{IscsiTarget, TargetSetup};
use interop_tests::iscsi_guest::iscsi_guest;
use interop_tests::{free_tcp_port, wait_for_port, HOST_FROM_GUEST};

const NQN: &str = "nqn.2026-11.io.tandem:resv";
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:7a1c0de5-0000-4000-8000-000000000001";
const HOSTID: &str = "7a1c0de5-0000-4000-8000-000000000001";

#[test]
fn scsi_and_nvme_reservations_are_one_state() {
    let nvme_port = free_tcp_port().unwrap();
    let nvme_extra = format!(
        "[nvme]\ndiscovery_listen = []\n[[nvme.portal]]\nlisten = \"127.0.0.1:{nvme_port}\"\nadvertise = \"{HOST_FROM_GUEST}:{nvme_port}\"\n[[nvme.subsystem]]\nnqn = \"{NQN}\"\nallowed_hosts = [\"{HOSTNQN}\"]\n[[nvme.subsystem.namespace]]\nnsid = 1\nvolume = \"vol\"\n"
    );
    let t = IscsiTarget::start(&TargetSetup {
        advertise: Some(HOST_FROM_GUEST.into()),
        size: 64 << 20,
        target_extra: nvme_extra,
        ..TargetSetup::default()
    })
    .expect("start tandem");
    assert!(
        wait_for_port(([127, 0, 0, 1], nvme_port).into(), Duration::from_secs(30)),
        "the NVMe/TCP portal did not open"
    );
    let out = iscsi_guest(&t, None)
        .name("resv")
        .env("NVME_PORT", nvme_port.to_string())
        .env("NQN", NQN)
        .env("HOSTNQN", HOSTNQN)
        .env("HOSTID", HOSTID)
        .timeout(Duration::from_secs(240))
        .script(
            r#"
. /tandem/iscsi.sh
discover
login
echo "$HOSTNQN" > /etc/nvme/hostnqn
echo "$HOSTID" > /etc/nvme/hostid
nvme connect -t tcp -a "$TANDEM_HOST" -s "$NVME_PORT" -n "$NQN" --hostnqn="$HOSTNQN" --hostid="$HOSTID" || fail "nvme connect"
NS=""
for i in $(seq 1 100); do
    for n in /dev/nvme*n1; do [ -b "$n" ] && NS=$n; done
    [ -n "$NS" ] && break
    sleep 0.1
done
[ -n "$NS" ] || fail "no NVMe namespace appeared"
echo "SCSI disk $DEV, NVMe namespace $NS"

nvme_write() { dd if=/tandem/random.bin of="$NS" bs=4096 count=1 oflag=direct 2>/dev/null; }
nvme_read() { dd if="$NS" of=/dev/null bs=4096 count=1 iflag=direct 2>/dev/null; }
scsi_write() { dd if=/tandem/random.bin of="$DEV" bs=4096 count=1 oflag=direct 2>/dev/null; }
scsi_read() { dd if="$DEV" of=/dev/null bs=4096 count=1 iflag=direct 2>/dev/null; }

nvme_write && scsi_write || fail "writes without reservations"
echo "ok: both hosts write before any reservation"

# --- iSCSI holds Write Exclusive ---
sg_persist --out --register --param-sark=0x1111 "$DEV" || fail "sg_persist register"
sg_persist --out --reserve --param-rk=0x1111 --prout-type=1 "$DEV" || fail "sg_persist reserve WE"
rr=$(sg_persist --in --read-reservation "$DEV"); echo "$rr"
check "SCSI sees its own WE reservation" has "$rr" 'Key=0x1111'
if nvme_write; then fail "an unregistered NVMe host wrote under a SCSI Write Exclusive reservation"; fi
echo "ok: NVMe write refused under the SCSI reservation"
check "NVMe read allowed under Write Exclusive" nvme_read
rep=$(nvme resv-report "$NS" --eds -o json 2>&1); echo "$rep"
check "NVMe report shows the SCSI holder's key (0x1111 = 4369)" has "$rep" '4369'
check "SCSI holder still writes" scsi_write
sg_persist --out --release --param-rk=0x1111 --prout-type=1 "$DEV" || fail "sg_persist release"
check "NVMe write allowed after the SCSI release" nvme_write

# --- NVMe holds Write Exclusive ---
nvme resv-register "$NS" --nrkey=0x2222 --rrega=0 || fail "nvme resv-register"
nvme resv-acquire "$NS" --crkey=0x2222 --rtype=1 --racqa=0 || fail "nvme resv-acquire WE"
rr=$(sg_persist --in --read-reservation "$DEV"); echo "$rr"
check "SCSI sees the NVMe host's reservation (key 0x2222)" has "$rr" 'Key=0x2222'
if scsi_write; then fail "the iSCSI initiator wrote under an NVMe Write Exclusive reservation"; fi
echo "ok: SCSI write refused under the NVMe reservation"
check "SCSI read allowed under Write Exclusive" scsi_read
check "NVMe holder still writes" nvme_write
nvme resv-release "$NS" --crkey=0x2222 --rtype=1 --rrela=0 || fail "nvme resv-release"
check "SCSI write allowed after the NVMe release" scsi_write

nvme disconnect -n "$NQN" >/dev/null || fail "nvme disconnect"
logout
echo "reservations: all checks passed"
"#,
        )
        .run()
        .expect("guest run");
    out.assert_success();
    assert!(out.console.contains("reservations: all checks passed"));
}
