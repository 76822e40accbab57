//! ALUA and ANA across two real `tandem serve` nodes of one replicated volume (issue 13):
//! both nodes export one identity with distinct path identities, REPORT TARGET PORT GROUPS
//! on either node lists both nodes' groups with the states hosts must follow, one role change
//! moves ALUA and ANA together (UNIT ATTENTION 2A/06 on every I_T nexus, an ANA change AEN and
//! a new ANA log on every controller), and a path that cannot serve answers only with the
//! retryable codes (04/0A-0C, ANA 0x302 / 0x303), in flight at the change included.
//!
//! The hosts here are a raw iSCSI session per node (tests/raw_iscsi) and the Rust NVMe/TCP
//! initiator, so every byte of the answers is checked.

mod raw_iscsi;
mod repl_common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway::config::DEFAULT_IQN;
use gateway::status::VolumeStatus;
use nvme_initiator::{Controller, Data};
use proto_iscsi::pdu::Pdu;
use proto_nvmeof::Sqe;
use raw_iscsi::Raw;
use repl_common::{connect, pair_with, Node, Opts, BS};

/// ALUA asymmetric access state codes (SPC-4 table 173).
const AO: u8 = 0x0;
const STANDBY: u8 = 0x2;
const UNAVAILABLE: u8 = 0x3;
/// ANA states in the ANA log.
const ANA_OPTIMIZED: u8 = 1;
const ANA_INACCESSIBLE: u8 = 3;
/// AER completion dword 0 of an ANA change notice (notice, info 03h, log 0Ch).
const AEN_ANA_CHANGE: u32 = 0x000C_0302;

fn opts(path_group: u16) -> Opts {
    Opts {
        path_group,
        iscsi: true,
    }
}

/// A replicated pair serving iSCSI and NVMe/TCP: the primary in path group 1, the standby in
/// path group 2, each knowing the other's group and state.
fn two_nodes() -> (Node, Node) {
    let (p, s) = pair_with(10_000, opts(1), opts(2));
    settled(&p, "active_optimized", 2, "standby");
    settled(&s, "standby", 1, "active_optimized");
    (p, s)
}

/// Waits until `node` shows its own group in `local` and the peer's group `peer` in `state`.
fn settled(node: &Node, local: &str, peer: u16, state: &str) {
    node.wait(
        &format!("showing itself {local} and group {peer} {state}"),
        Duration::from_secs(30),
        |v: &VolumeStatus| {
            v.paths.as_ref().is_some_and(|p| {
                p.alua_state == local
                    && p.peer
                        .as_ref()
                        .is_some_and(|g| g.path_group == peer && g.alua_state == state)
            })
        },
    );
}

/// The outcome of one SCSI command: status, data-in, and (key, ASC, ASCQ) of its sense.
#[derive(Debug)]
struct Answer {
    status: u8,
    data: Vec<u8>,
    sense: Option<(u8, u8, u8)>,
}

impl Answer {
    fn sense_is(&self, key: u8, asc: u8, ascq: u8) -> bool {
        self.status == 2 && self.sense == Some((key, asc, ascq))
    }
}

/// A raw session and its next task tag.
struct Session {
    raw: Raw,
    itt: u32,
}

impl Session {
    async fn login(node: &Node, initiator: &str) -> Session {
        let addr = node.iscsi.expect("the node serves iSCSI");
        let raw = Raw::login(addr, DEFAULT_IQN, initiator, [0x40, 0, 0, 0, 0, 1]).await;
        Session { raw, itt: 1 }
    }

    /// Runs `cdb` (reading up to `read` bytes, writing `write`) and returns its answer.
    async fn run(&mut self, cdb: &[u8], read: u32, write: &[u8]) -> Answer {
        self.itt += 1;
        let itt = self.itt;
        let c = self.raw.command(itt, cdb, read, write, write.len() as u32);
        self.raw.send(&c).await;
        let mut data = Vec::new();
        loop {
            let pdu = tokio::time::timeout(Duration::from_secs(20), self.raw.recv())
                .await
                .expect("an answer within 20 s");
            match pdu {
                Some(Pdu::DataIn(d)) if d.itt == itt => {
                    data.extend_from_slice(&d.data);
                    if let Some(status) = d.status {
                        return Answer {
                            status,
                            data,
                            sense: None,
                        };
                    }
                }
                Some(Pdu::ScsiResponse(r)) if r.itt == itt => {
                    return Answer {
                        status: r.status,
                        data,
                        sense: fixed_sense(&r.data),
                    }
                }
                Some(_) => {}
                None => panic!("the connection closed waiting for task {itt}"),
            }
        }
    }

    /// TEST UNIT READY until it answers anything but a unit attention; returns that answer.
    async fn past_unit_attentions(&mut self) -> Answer {
        for _ in 0..16 {
            let a = self.run(&[0; 6], 0, &[]).await;
            if a.status != 2 || a.sense.is_none_or(|s| s.0 != 6) {
                return a;
            }
        }
        panic!("unit attentions never end");
    }

    /// REPORT TARGET PORT GROUPS, extended format: (group id, state, relative ports).
    async fn rtpg(&mut self) -> Vec<(u16, u8, Vec<u16>)> {
        let cdb = [0xA3, 0x20 | 0x0A, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0];
        let a = self.run(&cdb, 1024, &[]).await;
        assert_eq!(a.status, 0, "RTPG: {a:?}");
        let d = &a.data;
        assert_eq!(d[4] & 0x70, 0x10, "extended header");
        let mut out = Vec::new();
        let mut o = 8;
        while o + 8 <= d.len() {
            let n = usize::from(d[o + 7]);
            let ports = (0..n)
                .map(|i| u16::from_be_bytes([d[o + 10 + 4 * i], d[o + 11 + 4 * i]]))
                .collect();
            out.push((u16::from_be_bytes([d[o + 2], d[o + 3]]), d[o] & 0x0F, ports));
            o += 8 + 4 * n;
        }
        out
    }

    /// VPD page 0x83's designators: (association, type, value).
    async fn designators(&mut self) -> Vec<(u8, u8, Vec<u8>)> {
        let a = self
            .run(&[0x12, 0x01, 0x83, 0x01, 0x00, 0x00], 256, &[])
            .await;
        assert_eq!(a.status, 0);
        let d = &a.data;
        let mut out = Vec::new();
        let mut o = 4;
        while o + 4 <= d.len() {
            let len = usize::from(d[o + 3]);
            out.push((
                (d[o + 1] >> 4) & 3,
                d[o + 1] & 0x0F,
                d[o + 4..o + 4 + len].to_vec(),
            ));
            o += 4 + len;
        }
        out
    }

    async fn serial(&mut self) -> Vec<u8> {
        let a = self
            .run(&[0x12, 0x01, 0x80, 0x00, 0xFF, 0x00], 255, &[])
            .await;
        assert_eq!(a.status, 0);
        a.data[4..].to_vec()
    }

    async fn read(&mut self) -> Answer {
        self.run(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], BS, &[]).await
    }

    async fn write(&mut self, lba: u8) -> Answer {
        let cdb = [0x2A, 0, 0, 0, 0, lba, 0, 0, 1, 0];
        self.run(&cdb, 0, &[lba; BS as usize]).await
    }
}

/// (key, ASC, ASCQ) of fixed-format sense data behind its 2-byte length.
fn fixed_sense(data: &Bytes) -> Option<(u8, u8, u8)> {
    let s = data.get(2..)?;
    Some((s.get(2)? & 0x0F, *s.get(12)?, *s.get(13)?))
}

/// The group id and relative port of a session's path (VPD 0x83 types 5 and 4), and the LU's
/// NAA designator.
fn path_identity(d: &[(u8, u8, Vec<u8>)]) -> (u16, u16, Vec<u8>) {
    let find = |assoc: u8, kind: u8| {
        d.iter()
            .find(|x| x.0 == assoc && x.1 == kind)
            .map(|x| x.2.clone())
            .unwrap_or_else(|| panic!("no designator of type {kind}: {d:?}"))
    };
    let tpg = find(1, 5);
    let rel = find(1, 4);
    (
        u16::from_be_bytes([tpg[2], tpg[3]]),
        u16::from_be_bytes([rel[2], rel[3]]),
        find(0, 3),
    )
}

/// The state of the only ANA group (its id is the NSID, 1) as `c` reads it, and the log's
/// change count.
async fn ana(c: &Controller) -> (u8, u64) {
    let log = c.ana_log().await.unwrap();
    assert_eq!(log.groups.len(), 1, "{log:?}");
    assert_eq!(
        (log.groups[0].id, &log.groups[0].nsids[..]),
        (1, &[1u32][..])
    );
    (log.groups[0].state, log.change_count)
}

/// Enables ANA change notices and leaves one Async Event Request outstanding, as Linux does.
async fn arm_aen(c: &Controller) -> tokio::task::JoinHandle<u32> {
    let mut sqe = Sqe::new(0x09, 0); // Set Features
    sqe.set_cdw(10, 0x0B); // Asynchronous Event Configuration
    sqe.set_cdw(11, 1 << 11); // ANA change notices
    c.admin.submit(sqe, Data::None).await.unwrap().ok().unwrap();
    let q = c.admin.clone();
    tokio::spawn(async move {
        let done = q.submit(Sqe::new(0x0C, 0), Data::None).await.unwrap();
        done.ok().unwrap().cqe.dw0()
    })
}

/// Whether an NVMe read through `c` is refused with ANA inaccessible (0x302), DNR clear.
async fn refused_inaccessible(c: &Controller) -> bool {
    match c.read(0, 1, 0, 1, BS).await {
        Err(nvme_initiator::Error::Status { status, .. }) => {
            status.sct() == 3 && status.sc() == 2 && !status.is_dnr()
        }
        other => panic!("expected ANA inaccessible, got {other:?}"),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn nvme_addr(n: &Node) -> SocketAddr {
    n.nvme
}

#[test]
fn both_nodes_show_one_identity_both_groups_and_refuse_io_on_the_standby() {
    let (p, s) = two_nodes();
    big_stack(move || rt().block_on(Box::pin(identity_and_refusals(&p, &s))));
}

/// Runs `f` on a thread with a large stack: the futures of these tests are large in debug
/// builds.
fn big_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

async fn identity_and_refusals(p: &Node, s: &Node) {
    {
        let mut a = Session::login(p, "iqn.2026-11.test:alua-a").await;
        let mut b = Session::login(s, "iqn.2026-11.test:alua-b").await;
        let _ = a.past_unit_attentions().await;
        let _ = b.past_unit_attentions().await;
        // One logical unit: the same NAA designator and serial on both nodes; distinct path
        // identities: this node's group, relative ports unique across the nodes.
        let (ga, ra, naa_a) = path_identity(&a.designators().await);
        let (gb, rb, naa_b) = path_identity(&b.designators().await);
        assert_eq!(naa_a, naa_b, "one LU designator on both nodes");
        assert_eq!(a.serial().await, b.serial().await, "one serial");
        assert_eq!((ga, ra), (1, 1), "path group 1 keeps the single node's ids");
        assert_eq!((gb, rb), (2, 257), "path group 2's port");
        // Both nodes list both groups with the same states.
        let want = vec![(1, AO, vec![1]), (2, STANDBY, vec![257])];
        let mut got_a = a.rtpg().await;
        let mut got_b = b.rtpg().await;
        got_a.sort();
        got_b.sort();
        assert_eq!(got_a, want, "RTPG on the primary");
        assert_eq!(got_b, want, "RTPG on the standby");
        // Media access on the standby: NOT READY 04/0B (standby), never an error that reaches
        // a filesystem.
        let _ = b.past_unit_attentions().await;
        let r = b.read().await;
        assert!(r.sense_is(2, 0x04, 0x0B), "read on the standby: {r:?}");
        let w = b.write(3).await;
        assert!(w.sense_is(2, 0x04, 0x0B), "write on the standby: {w:?}");
        let _ = a.past_unit_attentions().await;
        assert_eq!(a.write(3).await.status, 0, "the primary serves");

        // NVMe: one subsystem identity, disjoint controller ids, the namespace in ANA group 1
        // on both, optimized on the primary and inaccessible on the standby.
        let ca = connect(nvme_addr(p)).await.unwrap();
        let cb = connect(nvme_addr(s)).await.unwrap();
        assert!((1..=4095).contains(&ca.cntlid), "cntlid {}", ca.cntlid);
        assert!((4097..=8191).contains(&cb.cntlid), "cntlid {}", cb.cntlid);
        assert_eq!(ca.identify.serial, cb.identify.serial);
        let (na, nb) = (
            ca.identify_namespace(1).await.unwrap(),
            cb.identify_namespace(1).await.unwrap(),
        );
        assert_eq!((na.nguid, na.eui64), (nb.nguid, nb.eui64));
        assert_eq!((na.anagrpid, nb.anagrpid), (1, 1));
        assert_eq!(
            ca.ns_descriptors(1).await.unwrap(),
            cb.ns_descriptors(1).await.unwrap(),
            "NGUID, EUI-64 and UUID descriptors"
        );
        assert_eq!(ana(&ca).await.0, ANA_OPTIMIZED);
        assert_eq!(ana(&cb).await.0, ANA_INACCESSIBLE);
        assert!(refused_inaccessible(&cb).await);
        ca.write(0, 1, 0, Bytes::from(vec![7u8; BS as usize]), BS, false)
            .await
            .unwrap();

        // Status: role, epoch, ALUA and ANA state, groups, and the hosts on each node.
        for (node, cntlid, initiator) in [
            (p, ca.cntlid, "iqn.2026-11.test:alua-a"),
            (s, cb.cntlid, "iqn.2026-11.test:alua-b"),
        ] {
            let v = node.vol();
            let paths = v.paths.as_ref().unwrap();
            let ana_state = if node.iscsi == p.iscsi {
                "optimized"
            } else {
                "inaccessible"
            };
            assert_eq!(paths.ana_state, ana_state, "{v:?}");
            let h = &v.hosts.iscsi;
            assert_eq!(h.len(), 1, "{v:?}");
            assert_eq!(h[0].host, initiator);
            assert_eq!(h[0].portal, node.iscsi.map(|a| a.to_string()));
            assert_eq!(v.hosts.nvme.len(), 1, "{v:?}");
            assert_eq!(v.hosts.nvme[0].cntlid, Some(cntlid));
        }
    }
}

#[test]
fn a_switchover_moves_alua_and_ana_together_on_both_nodes() {
    let (p, s) = two_nodes();
    let rt = rt();
    let (mut a, mut b, ca, cb) = rt.block_on(async {
        let mut a = Session::login(&p, "iqn.2026-11.test:sw-a").await;
        let mut b = Session::login(&s, "iqn.2026-11.test:sw-b").await;
        let _ = a.past_unit_attentions().await;
        let _ = b.past_unit_attentions().await;
        let ca = connect(nvme_addr(&p)).await.unwrap();
        let cb = connect(nvme_addr(&s)).await.unwrap();
        (a, b, ca, cb)
    });
    let (count_a, count_b) = rt.block_on(async { (ana(&ca).await.1, ana(&cb).await.1) });
    let (aen_a, aen_b) = rt.block_on(async { (arm_aen(&ca).await, arm_aen(&cb).await) });

    // A writer on the primary's iSCSI path while the switchover runs: every command in flight
    // at the change completes GOOD or with a retryable answer (NOT READY 04/0A-0C, UNIT
    // ATTENTION 2A/06), never anything that would reach a filesystem.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let writer = rt.spawn(async move {
        let (mut good, mut refused) = (0u32, 0u32);
        let mut lba = 0u8;
        while !flag.load(std::sync::atomic::Ordering::SeqCst) {
            lba = lba.wrapping_add(1) % 64;
            let w = a.write(lba).await;
            let retryable =
                (2..=4).any(|q| w.sense_is(2, 0x04, 0x08 + q)) || w.sense_is(6, 0x2A, 0x06);
            match w.status {
                0 => good += 1,
                _ if retryable => refused += 1,
                _ => panic!("a write in flight at the switchover got {w:?}"),
            }
        }
        (a, good, refused)
    });
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    p.switchover_to(&s);
    println!("switchover took {:?}", t0.elapsed());
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut a, good, refused) = rt.block_on(writer).unwrap();
    println!("writes on the old primary: {good} good, {refused} refused with retryable codes");
    assert!(good > 0, "the writer ran before the switchover");
    assert!(refused > 0, "the old primary refused writes after it");

    settled(&s, "active_optimized", 1, "standby");
    settled(&p, "standby", 2, "active_optimized");
    rt.block_on(async {
        // Every I_T nexus: ASYMMETRIC ACCESS STATE CHANGED once (the old primary's writer
        // already took its own), then the new states.
        let ua = b.run(&[0; 6], 0, &[]).await;
        assert!(ua.sense_is(6, 0x2A, 0x06), "new primary's nexus: {ua:?}");
        assert_eq!(b.past_unit_attentions().await.status, 0);
        let t = a.past_unit_attentions().await;
        assert!(t.sense_is(2, 0x04, 0x0B), "old primary now standby: {t:?}");
        let want = vec![(1, STANDBY, vec![1]), (2, AO, vec![257])];
        let (mut ga, mut gb) = (a.rtpg().await, b.rtpg().await);
        ga.sort();
        gb.sort();
        assert_eq!(ga, want, "RTPG on the old primary");
        assert_eq!(gb, want, "RTPG on the new primary");
        assert!(b.write(9).await.status == 0, "the new primary serves");
        assert!(a.read().await.sense_is(2, 0x04, 0x0B));

        // NVMe: an ANA change AEN on each controller, a new change count and swapped states.
        for (aen, c, before, state) in [
            (aen_a, &ca, count_a, ANA_INACCESSIBLE),
            (aen_b, &cb, count_b, ANA_OPTIMIZED),
        ] {
            let dw0 = tokio::time::timeout(Duration::from_secs(10), aen)
                .await
                .expect("an ANA change AEN within 10 s")
                .unwrap();
            assert_eq!(dw0 & 0x00FF_FFFF, AEN_ANA_CHANGE);
            let (now, count) = ana(c).await;
            assert_eq!(now, state);
            assert!(count > before, "change count {before} -> {count}");
        }
        assert!(refused_inaccessible(&ca).await);
        cb.write(0, 1, 0, Bytes::from(vec![8u8; BS as usize]), BS, false)
            .await
            .unwrap();
    });
}

#[test]
fn a_standby_out_of_sync_is_shown_unavailable() {
    // A short replication timeout: the stopped standby is declared out of sync quickly.
    let (p, s) = pair_with(1000, opts(1), opts(2));
    settled(&p, "active_optimized", 2, "standby");
    settled(&s, "standby", 1, "active_optimized");
    let rt = rt();
    rt.block_on(async {
        let mut a = Session::login(&p, "iqn.2026-11.test:oos-a").await;
        let _ = a.past_unit_attentions().await;
        assert!(repl_common::signal(&s.child, "STOP"));
        // A flush makes the primary wait for the silent standby, then go on without it.
        let c = connect(nvme_addr(&p)).await.unwrap();
        c.write(0, 1, 0, Bytes::from(vec![1u8; BS as usize]), BS, true)
            .await
            .unwrap();
        settled(&p, "active_optimized", 2, "unavailable");
        let ua = a.run(&[0; 6], 0, &[]).await;
        assert!(ua.sense_is(6, 0x2A, 0x06), "{ua:?}");
        let mut g = a.rtpg().await;
        g.sort();
        assert_eq!(g, vec![(1, AO, vec![1]), (2, UNAVAILABLE, vec![257])]);
        assert!(repl_common::signal(&s.child, "CONT"));
        // It catches up and counts again.
        settled(&p, "active_optimized", 2, "standby");
        settled(&s, "standby", 1, "active_optimized");
    });
}

#[test]
fn after_a_failover_both_nodes_show_the_new_primary_optimized() {
    let (mut p, s) = two_nodes();
    // The primary dies: the standby keeps showing the last state it learned (never
    // unavailable from mere silence, which would stop hosts on a live primary).
    let _ = p.child.kill();
    let _ = p.child.wait();
    std::thread::sleep(Duration::from_millis(500));
    settled(&s, "standby", 1, "active_optimized");
    let out = s.cli(&["promote", "default"]);
    assert!(out.status.success(), "promote: {out:?}");
    // The promoted node shows the old primary by its own record of it: it needs a rebuild.
    settled(&s, "active_optimized", 1, "unavailable");
    // The old primary comes back with its old role, meets the newer epoch and is fenced; it
    // shows the new primary's group active/optimized, learned over the link.
    p.restart();
    settled(&p, "unavailable", 2, "active_optimized");
    big_stack(move || {
        rt().block_on(Box::pin(async move {
            let want = vec![(1, UNAVAILABLE, vec![1]), (2, AO, vec![257])];
            for node in [&p, &s] {
                let mut x = Session::login(node, "iqn.2026-11.test:failover").await;
                let _ = x.past_unit_attentions().await;
                let mut g = x.rtpg().await;
                g.sort();
                assert_eq!(
                    g,
                    want,
                    "RTPG on the node at {:?}: {:?}\n--- p:\n{}",
                    node.iscsi,
                    node.vol(),
                    p.log()
                );
            }
            let mut old = Session::login(&p, "iqn.2026-11.test:failover-2").await;
            let t = old.past_unit_attentions().await;
            assert!(t.sense_is(2, 0x04, 0x0C), "the fenced node: {t:?}");
            let c = connect(nvme_addr(&p)).await.unwrap();
            assert_eq!(ana(&c).await.0, ANA_INACCESSIBLE);
            assert!(refused_inaccessible(&c).await);
        }))
    });
}
