//! Failover that hosts ride through (issue 13): two `tandem serve` nodes on the host replicate
//! one volume, and the Linux kernel's multipath layers in a QEMU guest follow the volume's
//! role across a planned switchover, a kill -9 of the primary with a promotion of the standby,
//! the old node's return (fenced, demoted, rebuilt) and a switch back, and the loss of the
//! primary's path (its listeners made silent, the process untouched) with a promotion. The
//! guest uses the host files shipped in `packaging/` as they are (docs/host-setup.md).
//!
//! One guest per protocol: dm-multipath over two iSCSI sessions (ALUA), native NVMe multipath
//! over two controllers (ANA). Under each change an ext4 filesystem on the multipath device
//! carries fio random writes (O_DSYNC, so every completed write is durable and replicated)
//! with verification; fio must see no I/O error and no verify failure, the filesystem's files
//! must read back and e2fsck must be clean at the end. The longest gap between two completed
//! I/Os under each change is the pause the host saw (printed; docs/benchmarks.md).

use std::time::{Duration, Instant};

use interop_tests::cluster::{cluster_guest, Cluster, ClusterSetup};
use interop_tests::guest_test::{assert_guest, await_guest, one_guest_at_a_time, AbortOnPanic};
use interop_tests::proxy::PathProxy;
use interop_tests::Rendezvous;

/// Time limit of one guest run: boot, set-up and four changes under load.
const RUN_TIMEOUT: Duration = Duration::from_secs(480);

/// The script prelude: the libraries, ext4, and `make_tree` / `manifest` to check the
/// filesystem's files at the end.
fn script(body: &str) -> String {
    format!(
        r#". /tandem/iscsi.sh
modprobe ext4 2>/dev/null
manifest() {{ (cd "$1" && find . -type f | sort | xargs sha256sum); }}
make_tree() {{
    mkdir -p "$1/a" || fail "mkdir in $1"
    for _k in 1 2 3 4 5 6; do
        dd if=/tandem/random.bin of="$1/a/f$_k.bin" bs=4096 skip=$((_k * 97)) count=$((_k * 61)) 2>/dev/null || fail "writing f$_k.bin"
    done
}}
fs_setup() {{
    mkfs.ext4 -q -F "$1" || fail "mkfs.ext4 on $1"
    mkdir -p /mnt
    mount -t ext4 "$1" /mnt || fail "mount $1"
    make_tree /mnt/tree
    manifest /mnt/tree > /tmp/manifest
    sync
}}
# mark NAME SKIP: a file of known bytes written durably now (its checksum kept in /tmp);
# marked NAME: it reads back the same from the disk (the page cache dropped first), whichever
# node serves now.
mark() {{
    dd if=/tandem/random.bin of=/mnt/$1 bs=4096 skip=$2 count=128 conv=fsync 2>/dev/null || fail "writing /mnt/$1"
    sha256sum < /mnt/$1 > /tmp/$1.sha
}}
marked() {{
    sync; echo 3 > /proc/sys/vm/drop_caches
    check "$1 reads back from the disk" [ "$(sha256sum < /mnt/$1 2>/dev/null)" = "$(cat /tmp/$1.sha)" ]
}}
fs_check() {{
    (cd /mnt/tree && sha256sum -c /tmp/manifest) > /tmp/check.out 2>&1 || {{ cat /tmp/check.out; fail "the files written before the changes read back different"; }}
    echo "ok: every file written before the changes reads back"
    umount /mnt || fail umount
    e2fsck -f -n "$1"
    check "e2fsck -f -n is clean" [ $? -eq 0 ]
}}
{body}"#
    )
}

/// How many rounds of the four changes each guest runs: `TANDEM_FAILOVER_ROUNDS` (default 1,
/// the README's run). More rounds reuse the guest and its filesystem, re-check every file
/// written so far after each round, and show that no acknowledged write is lost over many
/// failovers.
fn rounds() -> usize {
    match std::env::var("TANDEM_FAILOVER_ROUNDS") {
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => panic!("TANDEM_FAILOVER_ROUNDS must be a whole number >= 1, not {v:?}"),
        },
        Err(_) => 1,
    }
}

/// Time limit of a guest running `rounds` rounds.
fn run_timeout(rounds: usize) -> Duration {
    RUN_TIMEOUT + ROUND_TIMEOUT * (rounds as u32 - 1)
}

/// Extra time limit of every round after the first.
const ROUND_TIMEOUT: Duration = Duration::from_secs(400);

/// The host's side of the rounds: before every round but the first, [`restore`]; then the
/// four changes ([`drive_round`]). Returns each round's role-change command times.
fn drive_rounds(
    c: &mut Cluster,
    rv: &Rendezvous,
    guest: &std::thread::ScopedJoinHandle<'_, interop_tests::GuestOutcome>,
    rounds: usize,
    path: impl Fn(&Cluster, usize) -> &PathProxy,
) -> Vec<[Duration; 3]> {
    let mut times = Vec::new();
    for r in 1..=rounds {
        if r > 1 {
            restore(c, rv, guest, r, &path);
        }
        times.push(drive_round(c, rv, guest, r, &path));
    }
    times
}

/// Back to the first round's start after a round ended with B fenced behind its cut path:
/// B's path healed, B demoted, rebuilt and in sync again (A primary). The guest says
/// `again-R` first and waits for `restored-R`.
fn restore(
    c: &mut Cluster,
    rv: &Rendezvous,
    guest: &std::thread::ScopedJoinHandle<'_, interop_tests::GuestOutcome>,
    r: usize,
    path: &impl Fn(&Cluster, usize) -> &PathProxy,
) {
    await_guest(rv, guest, &format!("again-{r}"));
    path(c, 1).heal();
    c.demote(1).expect("demote the fenced B");
    c.wait_in_sync(1, Duration::from_secs(120))
        .expect("B rebuilt and in sync");
    rv.set_state(&format!("restored-{r}"));
}

/// The host's side of the four changes of round `r`, in step with the guest: each starts once
/// the guest says `load-X-R` (its load is running) and ends with the state `done-X-R`; in (c)
/// the guest also says `paths-c-R` once its path to the rebuilt node is back, before the
/// switch back. Returns how long each role-change command took: (switchover, promote after
/// the kill, promote after the path loss).
fn drive_round(
    c: &mut Cluster,
    rv: &Rendezvous,
    guest: &std::thread::ScopedJoinHandle<'_, interop_tests::GuestOutcome>,
    r: usize,
    path: &impl Fn(&Cluster, usize) -> &PathProxy,
) -> [Duration; 3] {
    let step = |s: &str| format!("{s}-{r}");
    // (a) planned switchover A -> B.
    await_guest(rv, guest, &step("load-a"));
    let switchover = c.switchover(0, 1).expect("switchover A -> B");
    c.wait_in_sync(0, Duration::from_secs(30))
        .expect("A follows B");
    rv.set_state(&step("done-a"));

    // (b) kill -9 of the primary (B), promote the standby (A).
    await_guest(rv, guest, &step("load-b"));
    let t = Instant::now();
    c.kill(1).expect("kill B");
    let promote = c.promote(0).expect("promote A");
    println!(
        "[failover] round {r}: B killed, A promoted {:?} after the kill (the command took {promote:?})",
        t.elapsed()
    );
    rv.set_state(&step("done-b"));

    // (c) B back: fenced by A's newer epoch, demoted, rebuilt, then switched back to.
    await_guest(rv, guest, &step("load-c"));
    c.restart(1).expect("restart B");
    c.wait_status(1, "was fenced", Duration::from_secs(60), |v| {
        v["role"] == "stale"
    })
    .expect("B fenced");
    c.demote(1).expect("demote B");
    c.wait_in_sync(1, Duration::from_secs(120))
        .expect("B rebuilt and in sync");
    // The host's path to B must be back (a standby path) before the volume moves to it.
    rv.set_state(&step("rebuilt-c"));
    await_guest(rv, guest, &step("paths-c"));
    c.switchover(0, 1).expect("switchover A -> B");
    c.wait_in_sync(0, Duration::from_secs(30))
        .expect("A follows B");
    rv.set_state(&step("done-c"));

    // (d) the primary's (B's) path lost, the process running; promote A.
    await_guest(rv, guest, &step("load-d"));
    path(c, 1).cut();
    let promote_cut = c.promote(0).expect("promote A with B's path cut");
    c.wait_status(1, "was fenced", Duration::from_secs(60), |v| {
        v["role"] == "stale"
    })
    .expect("B fenced by A's epoch over the replication link");
    rv.set_state(&step("done-d"));
    [switchover, promote, promote_cut]
}

/// The guest's side of the rounds: `$ROUNDS` times the four changes, `body` (with `$R` the
/// round), every round after the first waiting for the host's [`restore`] and then for
/// `restored` (the shell command that waits until the paths are as at the start), and every
/// round ending with a check of every file written so far. `final_check` runs at the end.
fn rounds_script(restored: &str, body: &str, final_check: &str) -> String {
    format!(
        r#"
R=1
while [ $R -le $ROUNDS ]; do
    echo "==> round $R of $ROUNDS"
    if [ $R -gt 1 ]; then
        rv_send again-$R
        rv_wait restored-$R 240
        {restored}
    fi
{body}
    # Everything written in every round so far reads back, whichever node serves now.
    _k=1
    while [ $_k -le $R ]; do
        marked during-b-$_k
        marked after-c-$_k
        _k=$((_k + 1))
    done
    (cd /mnt/tree && sha256sum -c /tmp/manifest) > /tmp/check.out 2>&1 || {{ cat /tmp/check.out; fail "round $R: the files written before the changes read back different"; }}
    echo "ROUND-OK $R"
    R=$((R + 1))
done
{final_check}
"#
    )
}

/// Pulls `PAUSE <name>-<round> <ms>` lines out of the console: (name, round, ms).
fn pauses(console: &str) -> Vec<(String, usize, u64)> {
    console
        .lines()
        .filter_map(|l| {
            let rest = l.split_once("PAUSE ")?.1;
            let (name, ms) = rest.split_once(' ')?;
            let (name, round) = name.rsplit_once('-')?;
            Some((
                name.to_string(),
                round.parse().ok()?,
                ms.trim().parse().ok()?,
            ))
        })
        .collect()
}

/// Sums the `WRITES <name> <writes> VERIFIED <reads>` lines: (writes, verify reads).
fn writes(console: &str) -> (u64, u64) {
    console
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_once("WRITES ")?.1.split_whitespace().collect();
            Some((
                f.get(1)?.parse::<u64>().ok()?,
                f.get(3)?.parse::<u64>().ok()?,
            ))
        })
        .fold((0, 0), |(w, v), (a, b)| (w + a, v + b))
}

/// Prints the pauses the guest measured and the role-change commands' times, per round and
/// as a summary (min/median/max over the rounds); fails the test when the guest printed no
/// pause for a change of some round.
fn report(proto: &str, console: &str, times: &[[Duration; 3]]) {
    let p = pauses(console);
    let get = |n: &str, r: usize| p.iter().find(|x| x.0 == n && x.1 == r).map(|x| x.2);
    let ms = |n: &str, r: usize| get(n, r).map_or("none".to_string(), |v| v.to_string());
    for (i, t) in times.iter().enumerate() {
        let r = i + 1;
        println!(
            "==> FAILOVER-PAUSE {proto} round {r}: switchover {} ms (command {:?}); kill -9 + promote {} ms (promote command {:?}); switch back after the rebuild {} ms; path loss + promote {} ms (promote command {:?})",
            ms("a", r), t[0], ms("b", r), t[1], ms("c", r), ms("d", r), t[2]
        );
        for n in ["a", "b", "c", "d"] {
            assert!(
                get(n, r).is_some(),
                "the guest printed no pause for change {n} of round {r}"
            );
        }
    }
    let (w, v) = writes(console);
    let rounds_ok = console.lines().filter(|l| l.contains("ROUND-OK ")).count();
    println!(
        "==> FAILOVER-ROUNDS {proto}: {rounds_ok} of {} rounds passed; {w} acknowledged (O_DSYNC) writes, {v} verified by reading back, 0 lost",
        times.len()
    );
    for n in ["a", "b", "c", "d"] {
        let mut v: Vec<u64> = (1..=times.len()).filter_map(|r| get(n, r)).collect();
        v.sort_unstable();
        if let (Some(min), Some(max)) = (v.first(), v.last()) {
            println!(
                "==> FAILOVER-PAUSE-SUMMARY {proto} {n}: min {min} ms, median {} ms, max {max} ms over {} rounds",
                v[v.len() / 2],
                v.len()
            );
        }
    }
}

/// dm-multipath over iSCSI sessions to both nodes, ALUA path groups following the role.
#[test]
fn dm_multipath_over_iscsi_rides_through_failovers() {
    let _one = one_guest_at_a_time();
    let started = Instant::now();
    let rounds = rounds();
    let mut c = Cluster::start(&ClusterSetup::default()).expect("start the two nodes");
    let rv = Rendezvous::start("start").expect("rendezvous");
    let setup = r#"
start_udev
start_multipathd
iscsi_login_both
multipath -ll
check "one map with an active/optimized group and a standby group" mpath_expect $SD_A $SD_B ghost
for _sd in $SD_A $SD_B; do
    _r=$(sg_rtpg -d /dev/$_sd) || fail "sg_rtpg on $_sd"
    echo "sg_rtpg on $_sd:"; echo "$_r"
    check "RTPG on $_sd lists both port groups" [ "$(echo "$_r" | grep -c 'target port group id')" -eq 2 ]
    check "RTPG on $_sd shows one group active/optimized" has "$_r" 'asymmetric access state : 0x00 (active/optimized)'
    check "RTPG on $_sd shows one group standby" has "$_r" 'asymmetric access state : 0x02 (standby)'
done
fs_setup $MAP
"#;
    let round = r#"
    load_start a-$R /mnt/fio.dat
    rv_send load-a-$R
    rv_wait done-a-$R
    load_stop a-$R
    mpath_expect $SD_B $SD_A ghost

    load_start b-$R /mnt/fio.dat
    rv_send load-b-$R
    rv_wait done-b-$R
    load_stop b-$R
    mpath_expect $SD_A $SD_B faulty
    # Written while B is down: B must have it once rebuilt.
    mark during-b-$R $((11 + 3 * R))

    load_start c-$R /mnt/fio.dat
    rv_send load-c-$R
    rv_wait rebuilt-c-$R 240
    mpath_expect $SD_A $SD_B ghost
    rv_send paths-c-$R
    rv_wait done-c-$R
    load_stop c-$R
    mpath_expect $SD_B $SD_A ghost
    marked during-b-$R
    mark after-c-$R $((23 + 3 * R))

    load_start d-$R /mnt/fio.dat
    rv_send load-d-$R
    rv_wait done-d-$R
    # The cut path is noticed by its silence (NOP-Out timeouts), then failed to multipath.
    load_stop d-$R
    mpath_expect $SD_A $SD_B faulty
"#;
    let g = cluster_guest(&c, rv.port())
        .name("failover-iscsi")
        .timeout(run_timeout(rounds))
        .env("ROUNDS", rounds.to_string())
        .script(script(&format!(
            "{setup}{}",
            rounds_script("mpath_expect $SD_A $SD_B ghost", round, "fs_check $MAP")
        )));
    let (out, times) = std::thread::scope(|s| {
        let guest = s.spawn(|| g.run().expect("guest run"));
        let _abort = AbortOnPanic(&rv);
        let times = drive_rounds(&mut c, &rv, &guest, rounds, |c, i| &c.nodes[i].iscsi_path);
        (guest.join().expect("guest thread"), times)
    });
    assert_guest(&out, "failover-iscsi");
    report("iSCSI + dm-multipath", &out.console, &times);
    println!(
        "dm_multipath_over_iscsi_rides_through_failovers: {:?}",
        started.elapsed()
    );
}

/// Native NVMe multipath over a controller per node, ANA states following the role.
#[test]
fn native_nvme_multipath_rides_through_failovers() {
    let _one = one_guest_at_a_time();
    let started = Instant::now();
    let rounds = rounds();
    let mut c = Cluster::start(&ClusterSetup::default()).expect("start the two nodes");
    let rv = Rendezvous::start("start").expect("rendezvous");
    let setup = r#"
start_udev
nvme_connect_both
_subsys=$(basename $(readlink -f /sys/block/$NS/device))
nvme list-subsys /dev/$NS
check "one namespace with two paths" [ "$(ns_paths | wc -l)" -eq 2 ]
check "the shipped udev rule set the I/O policy" [ "$(cat /sys/class/nvme-subsystem/$_subsys/iopolicy)" = round-robin ]
ana_expect $CTRL_A $CTRL_B inaccessible
_ls=$(nvme list-subsys /dev/$NS)
check "list-subsys shows an optimized path" has "$_ls" 'live optimized'
check "list-subsys shows an inaccessible path" has "$_ls" 'live inaccessible'
for _c in $CTRL_A $CTRL_B; do
    _l=$(nvme ana-log /dev/$_c) || fail "nvme ana-log on $_c"
    echo "ana-log on $_c:"; echo "$_l"
done
check "A's ANA log says optimized" has "$(nvme ana-log /dev/$CTRL_A)" 'optimized'
check "B's ANA log says inaccessible" has "$(nvme ana-log /dev/$CTRL_B)" 'inaccessible'
fs_setup $NDEV
"#;
    let round = r#"
    load_start a-$R /mnt/fio.dat
    rv_send load-a-$R
    rv_wait done-a-$R
    load_stop a-$R
    ana_expect $CTRL_B $CTRL_A inaccessible

    load_start b-$R /mnt/fio.dat
    rv_send load-b-$R
    rv_wait done-b-$R
    load_stop b-$R
    ana_expect $CTRL_A $CTRL_B down
    # Written while B is down: B must have it once rebuilt.
    mark during-b-$R $((11 + 3 * R))

    load_start c-$R /mnt/fio.dat
    rv_send load-c-$R
    rv_wait rebuilt-c-$R 240
    ana_expect $CTRL_A $CTRL_B inaccessible
    rv_send paths-c-$R
    rv_wait done-c-$R
    load_stop c-$R
    ana_expect $CTRL_B $CTRL_A inaccessible
    marked during-b-$R
    mark after-c-$R $((23 + 3 * R))

    load_start d-$R /mnt/fio.dat
    rv_send load-d-$R
    rv_wait done-d-$R
    load_stop d-$R
    ana_expect $CTRL_A $CTRL_B down
"#;
    let g = cluster_guest(&c, rv.port())
        .name("failover-nvme")
        .timeout(run_timeout(rounds))
        .env("ROUNDS", rounds.to_string())
        .script(script(&format!(
            "{setup}{}",
            rounds_script(
                "ana_expect $CTRL_A $CTRL_B inaccessible",
                round,
                "fs_check $NDEV"
            )
        )));
    let (out, times) = std::thread::scope(|s| {
        let guest = s.spawn(|| g.run().expect("guest run"));
        let _abort = AbortOnPanic(&rv);
        let times = drive_rounds(&mut c, &rv, &guest, rounds, |c, i| &c.nodes[i].nvme_path);
        (guest.join().expect("guest thread"), times)
    });
    assert_guest(&out, "failover-nvme");
    report("NVMe/TCP native multipath", &out.console, &times);
    println!(
        "native_nvme_multipath_rides_through_failovers: {:?}",
        started.elapsed()
    );
}
