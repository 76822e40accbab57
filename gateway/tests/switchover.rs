//! Role changes at run time between two real `tandem serve` processes (issue 12, roles):
//! planned switchover under a running NVMe/TCP writer and back, rapid role flips, a forced
//! promotion of an out-of-sync standby, and an old primary that comes back after a failover
//! and follows the promoted node once demoted.
//!
//! The writer behaves as a multipathing host: on a retryable error (an ANA status, a lost or
//! refused connection) it moves to the other node and goes on; any other error would have
//! reached a filesystem and fails the test.

mod repl_common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use repl_common::{block, connect, identify, pair, read_span, signal, writer, Model, Node, BS};

/// Runs the writer on both nodes in the background.
struct Writer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Model>,
}

impl Writer {
    fn start(rt: &tokio::runtime::Runtime, a: &Node, b: &Node) -> Writer {
        let seed: u64 = rand::random();
        println!("writer seed {seed}");
        let stop = Arc::new(AtomicBool::new(false));
        let task = rt.spawn(writer([a.nvme, b.nvme], seed, stop.clone()));
        Writer { stop, task }
    }

    fn finish(self, rt: &tokio::runtime::Runtime) -> Model {
        self.stop.store(true, Ordering::SeqCst);
        let m = rt.block_on(self.task).unwrap();
        assert!(
            m.fatal.is_empty(),
            "errors that reach a filesystem: {:?}",
            m.fatal
        );
        m
    }
}

/// Waits until the writer had `n` more flushes acknowledged by node `at`... seen through the
/// target's own flush counter (the writer's model is its own task's).
fn wait_flushes(node: &Node, more: u64) {
    let start = node.vol().engine.flushes;
    node.wait("taking flushes", Duration::from_secs(20), |v| {
        v.engine.flushes >= start + more
    });
}

/// Samples both nodes' status until stopped: which node served (optimized) under which epoch.
struct Watch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeMap<u64, Vec<usize>>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Watch {
    fn start(nodes: [std::net::SocketAddr; 2]) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(BTreeMap::<u64, Vec<usize>>::new()));
        let (s, m) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                for (i, a) in nodes.iter().enumerate() {
                    if let Ok(doc) = gateway::status::fetch(*a) {
                        let v = &doc.volumes[0];
                        if v.access_state == "optimized" {
                            let mut m = m.lock().unwrap();
                            let e = m.entry(v.epoch).or_default();
                            if !e.contains(&i) {
                                e.push(i);
                            }
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Watch { stop, seen, thread }
    }

    /// Every epoch in which a node served, and which nodes did.
    fn finish(self) -> BTreeMap<u64, Vec<usize>> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap();
        Arc::try_unwrap(self.seen).unwrap().into_inner().unwrap()
    }
}

/// Every acknowledged flush is on `primary`, and `other` (switched to afterwards, with no
/// writes in between) holds the same blocks.
fn check_final(rt: &tokio::runtime::Runtime, m: &Model, primary: &Node, other: &Node) {
    let on_primary = rt.block_on(read_span(primary.nvme));
    for (lba, hist) in &m.history {
        assert!(!hist.is_empty());
        m.check(*lba, &on_primary[*lba as usize]);
    }
    primary.switchover_to(other);
    let on_other = rt.block_on(read_span(other.nvme));
    for (lba, (a, b)) in on_primary.iter().zip(&on_other).enumerate() {
        assert_eq!(
            identify(a, lba as u64),
            identify(b, lba as u64),
            "block {lba} differs between the nodes"
        );
    }
}

#[test]
fn switchover_and_back_under_a_running_writer_loses_nothing() {
    let t0 = Instant::now();
    let (a, b) = pair(3000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let w = Writer::start(&rt, &a, &b);
    wait_flushes(&a, 20);
    // Refused, changing nothing, when the target is not the in-sync standby, or from a node
    // that is not the primary.
    for (from, to, why) in [
        (&a, a.admin.to_string(), "is not the in-sync standby"),
        (&a, "127.0.0.1:9".to_string(), "the target"),
        (&b, a.admin.to_string(), "starts on the serving primary"),
    ] {
        let out = from.cli(&["switchover", "default", "--to", &to]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(why),
            "{err}\n--- A:\n{}\n--- B:\n{}",
            a.log(),
            b.log()
        );
    }
    assert_eq!(a.vol().access_state, "optimized");
    let out = a.switchover_to(&b);
    assert!(out.contains("epoch 3"), "{out}");
    let (va, vb) = (a.vol(), b.vol());
    // The old primary stepped down under 2 and adopts 3 once the new primary connected.
    assert!(
        va.role == "standby" && (2..=3).contains(&va.epoch),
        "{va:?}"
    );
    assert_eq!((vb.role.as_str(), vb.epoch), ("primary", 3), "{vb:?}");
    // The writer moves to the new primary and goes on; the old one follows as its standby.
    wait_flushes(&b, 20);
    b.wait(
        "shipping to the old primary",
        Duration::from_secs(20),
        |v| {
            v.replication
                .as_ref()
                .is_some_and(|r| r.side == "primary" && r.connected)
        },
    );
    b.wait("the old primary in sync", Duration::from_secs(20), |v| {
        v.replication
            .as_ref()
            .is_some_and(|r| r.sync_state.is_some_and(|s| s.as_str() == "in_sync"))
    });
    assert_eq!(a.sync_state().as_deref(), Some("in_sync"));
    let out = b.switchover_to(&a);
    assert!(out.contains("epoch 5"), "{out}");
    wait_flushes(&a, 20);
    let m = w.finish(&rt);
    assert!(m.flushes_on[0] > 0 && m.flushes_on[1] > 0, "{m:?}");
    println!(
        "switchover: {} flushes acknowledged ({} on A, {} on B), {} retried errors",
        m.flushes,
        m.flushes_on[0],
        m.flushes_on[1],
        m.retried.len()
    );
    println!("retried: {:?}", m.retried);
    a.wait("in sync", Duration::from_secs(20), |v| {
        v.replication
            .as_ref()
            .is_some_and(|r| r.sync_state.is_some_and(|s| s.as_str() == "in_sync"))
    });
    check_final(&rt, &m, &a, &b);
    println!("took {:?}", t0.elapsed());
}

#[test]
fn rapid_role_flips_raise_the_epoch_and_never_two_primaries_in_one_epoch() {
    let (a, b) = pair(3000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let watch = Watch::start([a.admin, b.admin]);
    let w = Writer::start(&rt, &a, &b);
    wait_flushes(&a, 5);
    let nodes = [&a, &b];
    let mut epochs = vec![a.vol().epoch];
    for i in 0..6 {
        let (from, to) = (nodes[i % 2], nodes[(i + 1) % 2]);
        // A switchover needs an in-sync standby: the old primary catches up first.
        from.wait("in sync", Duration::from_secs(20), |v| {
            v.replication.as_ref().is_some_and(|r| {
                r.connected && r.sync_state.is_some_and(|s| s.as_str() == "in_sync")
            })
        });
        from.switchover_to(to);
        let v = to.vol();
        assert_eq!(v.role, "primary");
        epochs.push(v.epoch);
        wait_flushes(to, 3);
    }
    let m = w.finish(&rt);
    let served = watch.finish();
    println!(
        "epochs {epochs:?}; served {served:?}; {} flushes",
        m.flushes
    );
    assert!(
        epochs.windows(2).all(|w| w[0] < w[1]),
        "epochs must rise: {epochs:?}"
    );
    for (epoch, nodes) in &served {
        assert_eq!(
            nodes.len(),
            1,
            "two nodes served in epoch {epoch}: {served:?}"
        );
    }
    assert!(
        served.len() >= 7,
        "every primary was seen serving: {served:?}"
    );
    // Six flips end on A.
    check_final(&rt, &m, &a, &b);
}

#[test]
fn an_out_of_sync_standby_is_promoted_only_by_force_which_tells_the_loss_window() {
    let (primary, standby) = pair(1000);
    standby.wait("told in sync", Duration::from_secs(10), |v| {
        v.replication
            .as_ref()
            .is_some_and(|r| r.sync_state.is_some_and(|s| s.as_str() == "in_sync"))
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = connect(primary.nvme).await.unwrap();
        c.write(0, 1, 3, Bytes::from(block(1, 3)), BS, false)
            .await
            .unwrap();
        c.flush(0, 1).await.unwrap();
        // The standby stops; the primary declares it out of sync after the timeout and
        // acknowledges the flush without it (and says so on the link).
        assert!(signal(&standby.child, "STOP"));
        c.write(0, 1, 4, Bytes::from(block(2, 4)), BS, false)
            .await
            .unwrap();
        c.flush(0, 1).await.unwrap();
    });
    assert_eq!(primary.sync_state().as_deref(), Some("out_of_sync"));
    let mut primary = primary;
    primary.child.kill().unwrap();
    let _ = primary.child.wait();
    assert!(signal(&standby.child, "CONT"));
    standby.wait("out of sync", Duration::from_secs(10), |v| {
        v.replication
            .as_ref()
            .is_some_and(|r| r.sync_state.is_some_and(|s| s.as_str() == "out_of_sync"))
    });
    let metrics = gateway::status::get(standby.admin, "/metrics").unwrap();
    assert!(
        metrics.contains("tandem_volume_replication_in_sync{volume=\"default\"} 0"),
        "{metrics}"
    );
    let table = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["status", "--admin", &standby.admin.to_string()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("replication standby") && table.contains("state out_of_sync"),
        "{table}"
    );
    let out = standby.cli(&["promote", "default"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "promoted without --force");
    assert!(
        err.contains("out of sync") && err.contains("--force") && err.contains("LSN"),
        "{err}"
    );
    assert_eq!(standby.vol().role, "standby");
    let out = standby.cli(&["promote", "default", "--force"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("role primary epoch 2") && text.contains("forced") && text.contains("LSN"),
        "{text}"
    );
    println!("{text}");
    let v = standby.vol();
    assert_eq!(
        (v.role.as_str(), v.access_state.as_str()),
        ("primary", "optimized")
    );
}

#[test]
fn an_old_primary_back_after_a_failover_is_fenced_then_follows_once_demoted() {
    let (mut a, mut b) = pair(3000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = connect(a.nvme).await.unwrap();
        c.write(0, 1, 7, Bytes::from(block(1, 7)), BS, false)
            .await
            .unwrap();
        c.flush(0, 1).await.unwrap();
    });
    b.wait("told in sync", Duration::from_secs(10), |v| {
        v.replication
            .as_ref()
            .is_some_and(|r| r.sync_state.is_some_and(|s| s.as_str() == "in_sync"))
    });
    a.child.kill().unwrap();
    let out = b.cli(&["promote", "default"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The promoted node now ships (to a node that is down for now).
    b.wait("shipping", Duration::from_secs(10), |v| {
        v.replication.as_ref().is_some_and(|r| r.side == "primary")
    });
    a.restart();
    a.wait("fenced", Duration::from_secs(30), |v| {
        v.access_state == "unavailable" && v.epoch == 2 && v.role == "stale"
    });
    // A switchover to it is refused with a clear reason: it is no in-sync standby (checked
    // while it is stale, before anything can rebuild it).
    let out = b.cli(&["switchover", "default", "--to", &a.admin.to_string()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("in-sync standby"),
        "{err}"
    );
    assert_eq!(b.vol().access_state, "optimized");
    // Demoted, it follows under the promoted node's epoch (not a newer one, which would
    // fence the primary it is to follow). It may hold writes the new primary never had, so
    // it counts as out of sync until a full resync.
    let out = a.cli(&["demote", "default"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("role standby epoch 2"),
        "{text}"
    );
    let v = a.vol();
    assert_eq!(v.access_state, "standby");
    assert_eq!(
        v.replication
            .as_ref()
            .and_then(|r| r.sync_state.map(|s| s.as_str().to_string()))
            .as_deref(),
        Some("out_of_sync"),
        "{v:?}"
    );
    // The promoted node connects to it.
    b.wait(
        "connected to the old primary",
        Duration::from_secs(20),
        |v| {
            v.replication.as_ref().is_some_and(|r| {
                r.peer_node_id.as_deref() == Some(a.vol().replication.unwrap().node_id.as_str())
            })
        },
    );
    // The new primary serves on, unfenced.
    rt.block_on(async {
        let c = connect(b.nvme).await.unwrap();
        let got = c.read(0, 1, 7, 1, BS).await.unwrap();
        assert_eq!(identify(&got, 7), Ok(1));
        c.write(0, 1, 8, Bytes::from(block(2, 8)), BS, false)
            .await
            .unwrap();
        c.flush(0, 1).await.unwrap();
    });
    let v = b.vol();
    assert_eq!((v.role.as_str(), v.epoch), ("primary", 2));
    // The promoted node rebuilds it by a full resync while a host writes, and from then on it
    // follows in sync.
    let w = Writer::start(&rt, &b, &a);
    wait_flushes(&b, 5);
    let in_sync = |v: &gateway::status::VolumeStatus| {
        v.replication
            .as_ref()
            .is_some_and(|r| r.sync_state.is_some_and(|s| s.as_str() == "in_sync"))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (vb, va) = (b.vol(), a.vol());
        let rebuilt = vb
            .replication
            .as_ref()
            .is_some_and(|r| r.resyncs_completed >= 1);
        if rebuilt && in_sync(&vb) && in_sync(&va) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old primary was never rebuilt into sync:\n{vb:?}\n{va:?}\n--- new primary:\n{}\n--- old primary:\n{}",
            b.log(),
            a.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    wait_flushes(&b, 5);
    let m = w.finish(&rt);
    assert!(
        m.flushes_on[0] > 0 && m.flushes_on[1] == 0,
        "the writer was served by the new primary only: {:?} flushes, retried {:?}",
        m.flushes_on,
        m.retried
    );
    // One more flush covers whatever a write that failed left in the log; the standby is in
    // sync, so it has all of it durable once the flush returns.
    rt.block_on(async {
        let c = connect(b.nvme).await.unwrap();
        c.flush(0, 1).await.unwrap();
    });
    assert_eq!(b.sync_state().as_deref(), Some("in_sync"), "{}", b.log());
    let (primary, standby) = (b.image(false), a.image(true));
    for (lba, img) in [
        (7u64, &primary),
        (7, &standby),
        (8, &primary),
        (8, &standby),
    ] {
        if !m.history.contains_key(&lba) {
            let at = (lba * u64::from(BS)) as usize;
            let want = if lba == 7 { 1 } else { 2 };
            assert_eq!(identify(&img[at..at + BS as usize], lba), Ok(want));
        }
    }
    for img in [&primary, &standby] {
        for lba in m.history.keys() {
            let at = (*lba * u64::from(BS)) as usize;
            m.check(*lba, &img[at..at + BS as usize]);
        }
    }
    assert!(
        primary == standby,
        "the rebuilt old primary differs from the new primary"
    );
}

#[test]
fn a_node_restarted_after_a_switchover_keeps_its_persisted_role_and_follows_again() {
    let (mut a, b) = pair(3000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let write = |node: &Node, lba: u64, id: u64| {
        rt.block_on(async {
            let c = connect(node.nvme).await.unwrap();
            c.write(0, 1, lba, Bytes::from(block(id, lba)), BS, false)
                .await
                .unwrap();
            c.flush(0, 1).await.unwrap();
        })
    };
    // Some history first, so that the handover position is not the start of the log.
    for lba in 10..40 {
        write(&a, lba, lba);
    }
    a.switchover_to(&b);
    let in_sync = |v: &gateway::status::VolumeStatus| {
        v.replication
            .as_ref()
            .is_some_and(|r| r.connected && r.sync_state.is_some_and(|s| s.as_str() == "in_sync"))
    };
    b.wait("in sync", Duration::from_secs(20), in_sync);
    write(&b, 1, 1);
    // Its configuration still says primary; the persisted role (standby, under the new
    // primary's epoch 3, adopted from its handshake) wins.
    a.child.kill().unwrap();
    a.restart();
    let v = a.vol();
    assert_eq!((v.role.as_str(), v.epoch), ("standby", 3), "{v:?}");
    // It offers the position it recorded at the handover, so the new primary goes on
    // shipping from there (no full resync) and counts it in sync again.
    b.wait("in sync again", Duration::from_secs(20), in_sync);
    write(&b, 2, 2);
    a.wait("told in sync", Duration::from_secs(10), |v| {
        v.replication
            .as_ref()
            .is_some_and(|r| r.sync_state.is_some_and(|s| s.as_str() == "in_sync"))
    });
    b.switchover_to(&a);
    let blocks = rt.block_on(read_span(a.nvme));
    assert_eq!(identify(&blocks[1], 1), Ok(1));
    assert_eq!(identify(&blocks[2], 2), Ok(2));
    for lba in 10..40u64 {
        assert_eq!(identify(&blocks[lba as usize], lba), Ok(lba));
    }
    assert_eq!(a.vol().epoch, 5);
    assert!(!b.log().contains("full resync"), "{}", b.log());
}
