//! The Linux kernel's NVMe/TCP host (`nvme-tcp` driven by nvme-cli in a QEMU guest) against a
//! real `tandem serve`: discovery, connect with and without digests, the identity a host builds
//! its multipath view from, a filesystem across connections, fio with verification, discard
//! reaching the volume's files, the keep-alive timer when the host vanishes, and a refused host.
//!
//! One guest runs at a time (see `guest_iscsi.rs` for why). The checks run in the guest scripts
//! (`check WHAT COMMAND` prints `ok: WHAT` or fails the script with `FAIL: WHAT`); the host
//! checks what only it can see (the volume's files, the daemon's log) and meets the guest
//! through a [`Rendezvous`].

use std::time::{Duration, Instant};

use interop_tests::guest_test::{
    assert_guest, await_guest, one_guest_at_a_time, AbortOnPanic, GUEST_TIMEOUT, STEP_TIMEOUT,
};
use interop_tests::nvme_guest::{
    dual_guest, DualSetup, DualTarget, VolumeIds, TEST_NQN, TEST_SERIAL,
};
use interop_tests::packages::KernelSuite;
use interop_tests::Rendezvous;

const MIB: u64 = 1 << 20;

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

/// The extent file's allocation once it has not changed for 800 ms (the flusher copies the
/// log into the extent in the background), waiting at most 20 s.
fn settled_extent(t: &DualTarget) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = t.extent_allocated().expect("stat extent");
    let mut since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let v = t.extent_allocated().expect("stat extent");
        if v != last {
            (last, since) = (v, Instant::now());
        } else if since.elapsed() >= Duration::from_millis(800) || Instant::now() >= deadline {
            return v;
        }
    }
}

/// Waits (on the host) until the extent file's allocation satisfies `done`; panics otherwise.
fn expect_extent(t: &DualTarget, what: &str, done: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = t.extent_allocated().expect("stat extent");
        if done(v) {
            println!(
                "extent after {what}: {:.1} MiB allocated",
                v as f64 / MIB as f64
            );
            // Let the flusher settle before the next step measures from here.
            std::thread::sleep(Duration::from_millis(800));
            return t.extent_allocated().expect("stat extent");
        }
        assert!(
            Instant::now() < deadline,
            "extent allocation {v} bytes did not reach the expected value after {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ext4_across_connections_fio_verify_and_discard() {
    let _one = one_guest_at_a_time();
    let started = Instant::now();
    let t = target(DualSetup::default());
    let rv = Rendezvous::start("start").expect("rendezvous");
    let (out, sizes) = std::thread::scope(|s| {
        let builder = dual_guest(&t, Some(rv.port()));
        let guest = s.spawn(move || {
            builder
                .name("nvme-ext4")
                .timeout(GUEST_TIMEOUT)
                .script(script(
                    r#"
nvme_connect
DEV=$NDEV
mkfs.ext4 -q -F -E nodiscard "$NDEV" 64M || fail mkfs.ext4
mkdir -p /mnt
mount -t ext4 "$NDEV" /mnt || fail mount
mkdir -p /mnt/tree/a/b /mnt/tree/c
n=0
for d in /mnt/tree /mnt/tree/a /mnt/tree/a/b /mnt/tree/c; do
    for k in 1 2 3; do
        n=$((n + 1))
        dd if=/tandem/random.bin of="$d/f$k.bin" bs=4096 skip=$((n * 37)) count=$(( (n * n * 13) % 512 + 1 )) 2>/dev/null || fail "writing $d/f$k.bin"
    done
    head -c $((n * 1000 + 7)) /tandem/random.bin > "$d/odd.bin"
done
manifest /mnt/tree > /tmp/manifest
echo "wrote $(wc -l < /tmp/manifest) files, $(du -sk /mnt/tree | cut -f1) KiB"
umount /mnt || fail umount
nvme_disconnect
# A new association: nothing comes from the first one's page cache.
nvme_connect
DEV=$NDEV
mount -t ext4 "$NDEV" /mnt || fail "mount after reconnect"
(cd /mnt/tree && sha256sum -c /tmp/manifest) > /tmp/check.out 2>&1
rc=$?
tail -3 /tmp/check.out
check "every checksum matches after reconnecting" [ $rc -eq 0 ]
check "no file more or less" [ "$(manifest /mnt/tree | cut -c67- | sort)" = "$(cut -c67- /tmp/manifest | sort)" ]
umount /mnt || fail "umount 2"
e2fsck -f -n "$NDEV"
check "e2fsck -f -n is clean" [ $? -eq 0 ]

# fio: random writes of mixed sizes after the filesystem, each block read back and checked.
job="--name=randio --filename=$NDEV --ioengine=libaio --direct=1 --iodepth=16 --size=32M
     --offset=64M --rw=randwrite --bssplit=4k/40:16k/30:64k/20:256k/10 --verify=crc32c
     --verify_fatal=1 --randseed=4321 --eta=never"
fio $job --do_verify=1 > /tmp/fio1.out 2>&1
rc=$?
cat /tmp/fio1.out
check "fio random write + verify" [ $rc -eq 0 ]
check "fio read back to verify" has "$(cat /tmp/fio1.out)" 'READ: bw='
fio $job --verify_only > /tmp/fio2.out 2>&1
rc=$?
tail -5 /tmp/fio2.out
check "fio verify-only pass in a new process" [ $rc -eq 0 ]

# Discard: 16 MiB of data at 100 MiB, measured on the host, then deallocated.
check "the kernel sees DSM: discard_max_bytes > 0" [ "$(cat /sys/block/$NS/queue/discard_max_bytes)" -gt 0 ]
dd if=/tandem/random.bin of="$NDEV" bs=1M seek=100 oflag=direct conv=fsync 2>/dev/null || fail "dd at 100 MiB"
dd if=/tandem/random.bin of="$NDEV" bs=1M seek=108 oflag=direct conv=fsync 2>/dev/null || fail "dd at 108 MiB"
rv_send written
rv_wait measured-1
blkdiscard -o $((100 << 20)) -l $((16 << 20)) "$NDEV" || fail "blkdiscard of 16 MiB"
check "the discarded range reads as zeros" disk_is $((100 << 20)) $((16 << 20)) /dev/zero
fio $job --verify_only > /tmp/fio3.out 2>&1
check "the fio range next to it is intact" [ $? -eq 0 ]
rv_send discarded
rv_wait measured-2
nvme_disconnect
"#,
                ))
                .run()
                .expect("guest run")
        });
        let _abort = AbortOnPanic(&rv);
        await_guest(&rv, &guest, "written");
        let written = settled_extent(&t);
        println!(
            "extent after writing: {:.1} MiB",
            written as f64 / MIB as f64
        );
        rv.set_state("measured-1");
        await_guest(&rv, &guest, "discarded");
        let after = expect_extent(&t, "blkdiscard of 16 MiB", |v| v + 15 * MIB <= written);
        rv.set_state("measured-2");
        (guest.join().expect("guest thread"), [written, after])
    });
    println!(
        "extent allocation before / after the discard (MiB): {:?}",
        sizes.map(|v| v as f64 / MIB as f64)
    );
    assert_guest(&out, "nvme-ext4");
    println!(
        "ext4_across_connections_fio_verify_and_discard: {:?}",
        started.elapsed()
    );
}

/// Keep-alive timeout the guest asks for (seconds).
const KATO_SECS: u64 = 5;

/// How long after KATO the target may take to notice (timer granularity, a loaded host).
const KATO_MARGIN: Duration = Duration::from_secs(3);

/// The host vanishes without a word: the guest takes its network link down while connected
/// (its keep-alives stop; the TCP connection stays open on the target's side, as when a host
/// freezes or its network fails). The target must end the association within KATO plus a
/// margin. Observable: the daemon's "NVMe connection closed ... reason=keep-alive timeout
/// expired" line for the guest's admin queue (cntlid and qid 0), timed from the guest's last
/// message before the link went down; then a fresh connect from the Rust initiator reads the
/// data the guest wrote. With the link back, the kernel reconnects by itself and a write
/// queued during the outage completes.
#[test]
fn keep_alive_expiry_drops_a_vanished_host() {
    let _one = one_guest_at_a_time();
    let started = Instant::now();
    let t = target(DualSetup::default());
    let rv = Rendezvous::start("start").expect("rendezvous");
    let (out, noticed) = std::thread::scope(|s| {
        let builder = dual_guest(&t, Some(rv.port()));
        let guest = s.spawn(move || {
            builder
                .name("nvme-kato")
                .env("KATO", KATO_SECS.to_string())
                .timeout(GUEST_TIMEOUT)
                .script(script(
                    r#"
nvme_connect --keep-alive-tmo=$KATO --reconnect-delay=1 --ctrl-loss-tmo=120
DEV=$NDEV
dd if=/tandem/random.bin of="$NDEV" bs=1M count=4 oflag=direct conv=fsync 2>/dev/null || fail "first write"
rv_send "cntlid-$(cat /sys/class/nvme/$CTRL/cntlid)"
rv_send going-dark
ip link set eth0 down
# A write during the outage: the multipath head queues it while the path reconnects.
dd if=/tandem/random.bin of="$NDEV" bs=1M count=4 skip=4 seek=8 oflag=direct 2>/tmp/dd.err & wpid=$!
sleep $((KATO * 3))
ip link set eth0 up
ip route add default via "$TANDEM_HOST" 2>/dev/null
rv_wait checked 120
wait $wpid
rc=$?
cat /tmp/dd.err
check "the write queued during the outage completed after the reconnect" [ $rc -eq 0 ]
check "the controller is live again" [ "$(cat /sys/class/nvme/$CTRL/state)" = live ]
dmesg | grep -E 'nvme nvme[0-9]' | tail -8
check "the kernel saw the path fail and reconnected" sh -c "dmesg | grep -q 'Successfully reconnected'"
check "data written before the outage" disk_is 0 $((4 << 20)) /tandem/random.bin
head -c $((8 << 20)) /tandem/random.bin | tail -c $((4 << 20)) > /tmp/second
check "data written during the outage" disk_is $((8 << 20)) $((4 << 20)) /tmp/second
nvme_disconnect
"#,
                ))
                .run()
                .expect("guest run")
        });
        let _abort = AbortOnPanic(&rv);
        let deadline = Instant::now() + STEP_TIMEOUT;
        while !rv.wait_for("going-dark", Duration::from_millis(20)) {
            assert!(!guest.is_finished(), "the guest ended before going dark");
            assert!(Instant::now() < deadline, "the guest never went dark");
        }
        let dark = Instant::now();
        let cntlid: u16 = rv
            .messages()
            .iter()
            .find_map(|m| m.strip_prefix("cntlid-").and_then(|n| n.parse().ok()))
            .expect("the guest reported its cntlid");
        let needle =
            format!("cntlid=Some({cntlid}) qid=Some(0) reason=\"keep-alive timeout expired\"");
        let (at, line) = t
            .process
            .wait_for_log(Duration::from_secs(KATO_SECS) * 4, |l| l.contains(&needle))
            .unwrap_or_else(|| panic!("no log line with {needle}"));
        let noticed = at.saturating_duration_since(dark);
        println!("keep-alive expiry {noticed:?} after the guest went dark: {line}");
        assert!(
            t.process
                .wait_for_log(Duration::from_secs(2), |l| l
                    .contains(&format!("NVMe association ended cntlid={cntlid}")))
                .is_some(),
            "association {cntlid} did not end"
        );
        // A fresh host connects and reads what the vanished one wrote.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let first = rt.block_on(async {
            let addr = ([127, 0, 0, 1], t.nvme_port).into();
            let c = nvme_initiator::Controller::connect(addr, TEST_NQN, &Default::default())
                .await
                .expect("a fresh connect after the expiry");
            let data = c.read(0, 1, 0, 2048, 512).await.expect("read");
            c.shutdown().await.expect("shutdown");
            data
        });
        assert_eq!(
            &first[..],
            &interop_tests::iscsi_guest::random_file()[..1 << 20],
            "the first MiB the guest wrote, read by a fresh host"
        );
        rv.set_state("checked");
        (guest.join().expect("guest thread"), noticed)
    });
    assert_guest(&out, "nvme-kato");
    assert!(
        noticed <= Duration::from_secs(KATO_SECS) + KATO_MARGIN,
        "the target took {noticed:?} to drop a host with KATO {KATO_SECS} s"
    );
    // The host sends Keep Alive every KATO/2, so the timer runs out between KATO/2 and KATO
    // after the guest went dark; far sooner would not be this timer.
    assert!(
        noticed >= Duration::from_secs(1),
        "dropped after only {noticed:?}: not the keep-alive timer"
    );
    println!(
        "keep_alive_expiry_drops_a_vanished_host: {:?} (expiry noticed after {noticed:?})",
        started.elapsed()
    );
}

/// A host NQN not on the subsystem's allow-list: `nvme connect` fails at once with the
/// kernel's "not allowed" message (Connect status Invalid Host), not after the 60 s admin
/// timeout; the discovery log does not offer it the subsystem; the listed NQN connects.
#[test]
fn unlisted_host_is_refused_quickly() {
    let _one = one_guest_at_a_time();
    let started = Instant::now();
    let t = target(DualSetup::default());
    let wrong = "nqn.2014-08.org.nvmexpress:uuid:00000000-0bad-4bad-8bad-000000000bad";
    let out = dual_guest(&t, None)
        .name("nvme-refused")
        .env("WRONG", wrong)
        .timeout(GUEST_TIMEOUT)
        .script(script(
            r#"
echo "$WRONG" > /etc/nvme/hostnqn
t0=$(now)
out=$(nvme connect -t tcp -a "$TANDEM_HOST" -s "$NVME_PORT" -n "$NQN" 2>&1)
rc=$?
t1=$(now)
echo "$out"
echo "nvme connect exit status $rc after $(awk "BEGIN { print $t1 - $t0 }") s"
check "the connect of an unlisted host fails" [ $rc -ne 0 ]
check "and fails fast (under 10 s)" awk "BEGIN { exit !($t1 - $t0 < 10) }"
check "no controller is left" [ -z "$(nvme_ctrl)" ]
dmesg | grep -i -E 'nvme|fabrics' | tail -4
check "the kernel reports the host as not allowed (Connect Invalid Host)" sh -c "dmesg | grep -q 'is not allowed, hostnqn: $WRONG'"
disc=$(nvme discover -t tcp -a "$TANDEM_HOST" -s "$DISC_PORT" 2>&1)
echo "$disc"
check "the discovery log does not offer the subsystem to the unlisted host" sh -c "! echo \"\$0\" | grep -q \"subnqn: *$NQN\"" "$disc"
nvme_connect --hostnqn="$HOSTNQN"
check "the listed host NQN connects" [ -n "$CTRL" ]
nvme_disconnect
"#,
        ))
        .run()
        .expect("guest run");
    assert_guest(&out, "nvme-refused");
    assert!(
        t.process.log_lines().iter().any(|(_, l)| l
            .contains(&format!("subnqn={TEST_NQN} hostnqn={wrong}"))
            && l.contains("admission=Refused")),
        "the daemon logged no refused connect for {wrong}"
    );
    assert!(
        !t.process.log_lines().iter().any(|(_, l)| l
            .contains(&format!("subnqn={TEST_NQN} hostnqn={wrong}"))
            && l.contains("admission=Admin")),
        "the unlisted host was admitted"
    );
    println!("unlisted_host_is_refused_quickly: {:?}", started.elapsed());
}

/// The host NQN of the DH-HMAC-CHAP guest test (it has secrets in `[[nvme.host]]`).
const AUTH_HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-a07c-4a07-8a07-0000000a07c0";

fn dhchap_secret(fill: u8, transform: Option<proto_nvmeof::auth::HashId>) -> String {
    proto_nvmeof::auth::DhchapSecret {
        transform,
        key: vec![fill; transform.map_or(32, |h| h.digest_len())],
    }
    .to_text()
}

/// NVMe in-band authentication with the kernel's host: nvme-cli and Tandem agree on the
/// `DHHC-1` secret format both ways (`nvme check-dhchap-key` accepts Tandem's secrets, Tandem's
/// parser accepts `nvme gen-dhchap-key`'s) and on the key transformation (libnvme's, for a
/// given secret, hash and NQN, equals Tandem's); the kernel's host (DH-HMAC-CHAP in
/// `nvme-auth`) connects with the right secret and does I/O, is refused with a wrong one and
/// without one, runs bidirectional authentication with the right controller secret and
/// refuses Tandem when it proves a wrong one; a host without a secret still connects.
/// Debian bookworm's 6.1 kernel is built without CONFIG_NVME_AUTH, so this guest boots
/// bookworm-backports' kernel ([`KernelSuite::Backports`], 6.12, with DH-HMAC-CHAP).
#[test]
fn dhchap_authentication_with_the_kernel_host() {
    use proto_nvmeof::auth::HashId;
    let _one = one_guest_at_a_time();
    let started = Instant::now();
    let secret = dhchap_secret(0x41, Some(HashId::Sha256));
    let ctrl = dhchap_secret(0x42, None);
    let t = target(DualSetup {
        allowed_hosts: vec![
            interop_tests::nvme_guest::GUEST_HOSTNQN.into(),
            AUTH_HOSTNQN.into(),
        ],
        extra: format!(
            "[[nvme.host]]\nnqn = \"{AUTH_HOSTNQN}\"\ndhchap_secret = \"{secret}\"\n\
             dhchap_ctrl_secret = \"{ctrl}\"\n"
        ),
        ..DualSetup::default()
    });
    let out = dual_guest(&t, None)
        .kernel(KernelSuite::Backports)
        .name("nvme-dhchap")
        .env("AUTH_HOSTNQN", AUTH_HOSTNQN)
        .env("SECRET", &secret)
        .env("WRONG_SECRET", dhchap_secret(0x43, Some(HashId::Sha256)))
        .env("CTRL_SECRET", &ctrl)
        .env("KAT_SECRET_HEX", hex::encode((0u8..32).collect::<Vec<u8>>()))
        .env("WRONG_CTRL_SECRET", dhchap_secret(0x44, None))
        .timeout(GUEST_TIMEOUT)
        .script(script(
            r#"
gen=$(nvme gen-dhchap-key --hmac=1 --nqn="$AUTH_HOSTNQN") || fail "nvme gen-dhchap-key"
echo "GENKEY $gen"
# A given secret with a hash and an NQN: libnvme transforms it as the specification says.
gen=$(nvme gen-dhchap-key --secret="$KAT_SECRET_HEX" --key-length=32 --hmac=1 --nqn="$AUTH_HOSTNQN") \
    || fail "nvme gen-dhchap-key --secret"
echo "GENKAT $gen"
check "nvme-cli accepts Tandem's host secret" nvme check-dhchap-key --key="$SECRET"
check "nvme-cli accepts Tandem's controller secret" nvme check-dhchap-key --key="$CTRL_SECRET"
# connect_as WHAT OPTIONS...: one nvme connect as the authenticating host; sets rc, took and
# kmsg (the kernel's messages during the connect).
connect_as() {
    _what=$1; shift
    dmesg -c >/dev/null
    _t0=$(now)
    _out=$(nvme connect -t tcp -a "$TANDEM_HOST" -s "$NVME_PORT" -n "$NQN" --hostnqn="$AUTH_HOSTNQN" "$@" 2>&1)
    rc=$?
    took=$(awk "BEGIN { print $(now) - $_t0 }")
    kmsg=$(dmesg)
    echo "$_out"
    echo "$_what: nvme connect exit status $rc after $took s"
}
refused() {
    connect_as "$@"
    check "$1: refused" [ $rc -ne 0 ]
    check "$1: refused fast (under 10 s)" awk "BEGIN { exit !($took < 10) }"
    check "$1: no controller is left" [ -z "$(nvme_ctrl)" ]
}
refused "no secret"
echo "guest kernel: $(uname -r)"
check "the guest kernel has DH-HMAC-CHAP (nvme-auth is loaded)" grep -q '^nvme_auth ' /proc/modules
connect_as "the right secret" --dhchap-secret="$SECRET"
check "the right secret connects" [ $rc -eq 0 ]
check "the kernel authenticated the admin queue" has "$kmsg" 'qid 0: authenticated'
wait_ns
dd if=/tandem/random.bin of=$NDEV bs=1M count=2 oflag=direct 2>/dev/null || fail "dd"
DEV=$NDEV
check "I/O on the authenticated controller" disk_is 0 $((2 << 20)) /tandem/random.bin
nvme_disconnect
refused "a wrong secret" --dhchap-secret="$WRONG_SECRET"
check "a wrong secret: Tandem rejected the host's response" has "$kmsg" 'authentication failed'
connect_as "bidirectional" --dhchap-secret="$SECRET" --dhchap-ctrl-secret="$CTRL_SECRET"
check "bidirectional authentication connects" [ $rc -eq 0 ]
check "bidirectional: the kernel verified Tandem's response" has "$kmsg" 'qid 0: controller authenticated'
wait_ns
nvme_disconnect
refused "a wrong controller secret" --dhchap-secret="$SECRET" --dhchap-ctrl-secret="$WRONG_CTRL_SECRET"
check "a wrong controller secret: the kernel rejected Tandem's response" has "$kmsg" 'controller authentication failed'
nvme_connect --hostnqn="$HOSTNQN"
check "a host without a secret still connects" [ -n "$CTRL" ]
nvme_disconnect
"#,
        ))
        .run()
        .expect("guest run");
    assert_guest(&out, "nvme-dhchap");
    let key = out
        .console
        .lines()
        .find_map(|l| l.split("GENKEY ").nth(1))
        .expect("the guest printed nvme gen-dhchap-key's key");
    let parsed = proto_nvmeof::auth::DhchapSecret::parse(key.trim())
        .unwrap_or_else(|e| panic!("nvme gen-dhchap-key's {key:?}: {e}"));
    assert_eq!(parsed.transform, Some(HashId::Sha256));
    let kat = out
        .console
        .lines()
        .find_map(|l| l.split("GENKAT ").nth(1))
        .expect("the guest printed the key made from the given secret");
    let kat = proto_nvmeof::auth::DhchapSecret::parse(kat.trim()).expect("GENKAT parses");
    let ours = proto_nvmeof::auth::DhchapSecret {
        transform: Some(HashId::Sha256),
        key: (0u8..32).collect(),
    };
    // libnvme (an independent implementation) transforms a given secret with the hash and
    // the NQN exactly as Tandem transforms a secret with that hash indicator.
    assert_eq!(
        hex::encode(&kat.key),
        hex::encode(ours.transformed(AUTH_HOSTNQN)),
        "nvme gen-dhchap-key's transformed key differs from Tandem's"
    );
    assert_ne!(kat.key, ours.key);
    println!(
        "dhchap_authentication_with_the_kernel_host: {:?}",
        started.elapsed()
    );
}
